#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# weft-bench under two environments, alternated run by run:
#   bench/ab.sh BUILD_DIR ROUNDS "ENV_A" "ENV_B" [WORKLOAD...] [-- WEFT_BENCH_ARGS...]
# for example  bench/ab.sh build-rel 10 "WEFT_CROWDED_PCT=100" "" server
# Each round runs `weft-bench WORKLOAD... --runs 3` once under A, then once
# under B. Prints, for every row, the median of weft's figure under A and
# under B and the median of the per-round ratios B/A (of an even count, the
# lower middle one), beside the median of the row's reference figure. With
# AB_BUILD_B=DIR, side B runs DIR's weft-bench instead: two builds (a commit
# and the one before it) under the same environment, alternated.
set -euo pipefail
usage='usage: bench/ab.sh BUILD_DIR ROUNDS "ENV_A" "ENV_B" [WORKLOAD...] [-- WEFT_BENCH_ARGS...]'
build=${1:?$usage}
rounds=${2:?$usage}
env_a=${3?$usage}
env_b=${4?$usage}
shift 4
workloads=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    workloads+=("$1")
    shift
done
[ "${1-}" = "--" ] && shift
extra=("$@")
[ ${#extra[@]} -gt 0 ] || extra=(--runs 3)
bench_a="$build/bench/weft-bench"
bench_b="${AB_BUILD_B:-$build}/bench/weft-bench"
for b in "$bench_a" "$bench_b"; do
    [ -x "$b" ] || { echo "no $b: build with -DWEFT_BUILD_BENCH=ON" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# one SIDE ENV BENCH: appends "SIDE|ROW|WEFT|REFERENCE" for each row of the table.
one() {
    # shellcheck disable=SC2086
    env $2 "$3" "${workloads[@]}" "${extra[@]}" --out "$tmp/out" 2>/dev/null |
        awk -v side="$1" '
            /^[a-z]+  +[^ ]/ {
                n = split($0, f, /  +/)
                if (n < 5) next
                w = f[4]; r = f[5]; gsub(",", "", w); gsub(",", "", r)
                if (w !~ /^[0-9.]+$/ || r !~ /^[0-9.]+$/) next
                print side "|" f[1] " " f[2] "|" w "|" r
            }' >> "$tmp/rows"
}

for i in $(seq "$rounds"); do
    one A "$env_a" "$bench_a"
    one B "$env_b" "$bench_b"
    echo "round $i of $rounds done" >&2
done
python3 - "$tmp/rows" "${env_a:-no change}" "${env_b:-no change}${AB_BUILD_B:+, $AB_BUILD_B}" <<'PY'
import collections, sys
def median(v):
    v = sorted(v)
    return v[(len(v) - 1) // 2]
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    side, row, w, r = line.rstrip("\n").split("|")
    d = rows.setdefault(row, {"A": [], "B": [], "ref": []})
    d[side].append(float(w))
    d["ref"].append(float(r))
print(f"A: {sys.argv[2]}    B: {sys.argv[3]}")
print(f"{'row':58s} {'A':>10s} {'B':>10s} {'B/A':>7s} {'reference':>10s}")
for row, d in rows.items():
    ratios = [b / a for a, b in zip(d["A"], d["B"]) if a > 0]
    if not ratios:
        continue
    print(f"{row:58s} {median(d['A']):10.4g} {median(d['B']):10.4g} {median(ratios):7.3f} {median(d['ref']):10.4g}")
PY
