#!/bin/sh
# SPDX-License-Identifier: MIT
# The scaling benchmark in one command, for a machine with many cores:
# builds weft-bench (release) and, when go is installed, Go's skynet and
# chan programs (bench/compare/go), then runs `weft-bench scale`: skynet,
# fork-join speed-up, channel throughput and the echo server at 1, 2, 4, 8
# and 16 workers, as many of those as there are CPUs. It writes scale.csv and
# scale.svg under the build folder; the last line says where.
#
#   bench/scale.sh [--quick|--full] [--runs N] [--force] [--out DIR]
#
# The options are weft-bench scale's (weft-bench --help); the default is
# --full. WEFT_BUILD names the build folder (default: build).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${WEFT_BUILD:-$root/build}
jobs=$(nproc 2>/dev/null || echo 2)

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target weft-bench -j "$jobs" >/dev/null

go_args=
if command -v go >/dev/null 2>&1; then
    gobin=$build/bench/go
    mkdir -p "$gobin"
    for p in skynet chan; do
        GOCACHE="$gobin/cache" go build -o "$gobin/$p" "$root/bench/compare/go/$p.go"
    done
    go_args="--go $gobin"
else
    echo "go is not installed: weft and pthreads only" >&2
fi

size=--full
for a in "$@"; do
    case $a in --quick | --full) size= ;; esac
done
# shellcheck disable=SC2086
exec "$build/bench/weft-bench" scale $size $go_args "$@"
