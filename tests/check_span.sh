#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: check_span.sh LIBWEFT.a SPAN.c
# weft_dump's summary tells weft's frames from the program's by the span of
# weft's code, which runtime/core/span.c takes from one function of each of
# weft's objects: it must name one of every object in the archive, and that
# one in plain code (not .text.unlikely or .text.startup, which the linker
# gathers apart from the rest, the program's own among them).
set -u
lib=$1 src=$2
anchors=$(grep -o '(uintptr_t)[A-Za-z_0-9]*' "$src" | sed 's/(uintptr_t)//' | sort -u)
[ -n "$anchors" ] || { echo "FAIL: no anchor found in $src"; exit 1; }
objdump -t "$lib" | awk -v list="$anchors" '
BEGIN { n = split(list, a, "\n"); for (i = 1; i <= n; i++) want[a[i]] = 1 }
/^[^ ]+\.o: +file format/ { obj = $1; sub(/:$/, "", obj); objs[obj] = 1; next }
NF >= 4 && ($NF in want) {
    sec = ""
    for (i = 2; i < NF && sec == ""; i++)   # the first field with a dot: flags have none
        if ($i ~ /^\./)
            sec = $i
    if (sec == ".text" || (sec ~ /^\.text\./ && sec !~ /^\.text\.(unlikely|startup|hot|exit)/))
        have[obj] = 1
}
END {
    bad = 0
    for (o in objs)
        if (!(o in have)) {
            print "FAIL: runtime/core/span.c names no function in plain code of " o
            bad = 1
        }
    if (length(objs) == 0) { print "FAIL: no object in the archive"; bad = 1 }
    exit bad
}'
