#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: check_api_docs.sh LIBWEFT.so DOCS_API_DIR WEFT_H
#
# Keeps the API reference (docs/api) in step with the library:
#   - every function that LIBWEFT.so exports (but the private weft__ ones)
#     has a heading of its own in one of
#     DOCS_API_DIR/*.md: "### weft_name" or "### `weft_name`", at any level;
#   - every page there is linked from the index, DOCS_API_DIR/README.md;
#   - no such heading names a weft_ function or type that WEFT_H does not
#     declare, so the reference loses what the header loses.
# Pages are found by their name, *.md: a new page needs no change here.
# Exits 77 (a skip, for CTest) when nm is missing.
set -u
lib=$1 docs=$2 header=$3

if ! command -v nm >/dev/null 2>&1; then
    echo "SKIP: nm (binutils) is not installed; the API reference check needs it"
    exit 77
fi
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! nm -D --defined-only "$lib" >"$tmp/nm"; then
    echo "FAIL: cannot read the symbols of $lib"
    exit 1
fi
# weft__hook_* (version node WEFT_PRIVATE) are libweft-hook's, not the API.
awk '{ print $3 }' "$tmp/nm" | sed 's/@.*//' | grep '^weft_' | grep -v '^weft__' | sort -u >"$tmp/exported"
if [ ! -s "$tmp/exported" ]; then
    echo "FAIL: $lib exports no weft_ function"
    exit 1
fi

# The names that head a section, on every page.
: >"$tmp/headings"
npages=0
for page in "$docs"/*.md; do
    [ -f "$page" ] || continue
    npages=$((npages + 1))
    sed -n 's/^#\{1,6\}[[:space:]]\{1,\}`\{0,1\}\(weft_[A-Za-z0-9_]*\)`\{0,1\}[[:space:]]*$/\1/p' "$page" >>"$tmp/headings"
done
sort -u "$tmp/headings" -o "$tmp/headings"

missing=$(comm -23 "$tmp/exported" "$tmp/headings")
if [ -n "$missing" ]; then
    echo "FAIL: exported by $(basename "$lib") but documented under no heading in $docs/*.md:"
    printf '  %s\n' $missing
    echo "Give each a heading of its own ('### weft_name'); docs/api/README.md says how."
    fail=1
fi

# Every page is linked from the index.
index=$docs/README.md
if [ ! -f "$index" ]; then
    echo "FAIL: $index, the index of the reference, is missing"
    fail=1
else
    for page in "$docs"/*.md; do
        [ -f "$page" ] || continue
        name=$(basename "$page")
        [ "$name" = README.md ] && continue
        if ! grep -qF "]($name" "$index"; then
            echo "FAIL: $name is not linked from $index"
            fail=1
        fi
    done
fi

# Every heading names something the header declares.
while read -r name; do
    if ! grep -qw "$name" "$header"; then
        echo "FAIL: docs/api has a heading for $name, which $(basename "$header") does not declare"
        fail=1
    fi
done <"$tmp/headings"

[ $fail -eq 0 ] && echo "api docs: $(wc -l <"$tmp/exported") exported functions, each documented; $npages pages"
exit $fail
