#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds and runs the Go and Boost reference programs, if go and g++ with
# Boost.Context are installed. Not part of the CMake build or CI; weft does not
# depend on either. Usage: bench/compare/run.sh [RUNS]  (default 5 runs each)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-5}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

repeat() {  # repeat LABEL CMD...: runs CMD $runs times, prints each result line
    i=1
    while [ "$i" -le "$runs" ]; do "$@"; i=$((i + 1)); done
}

if command -v go >/dev/null 2>&1; then
    echo "== Go ($(go version | cut -d' ' -f3))"
    for p in pingpong spawn skynet chan; do
        GOCACHE="$out/gocache" go build -o "$out/$p" "$here/go/$p.go"
        repeat "$out/$p"
    done
else
    echo "== Go: not installed, skipped"
fi

if command -v g++ >/dev/null 2>&1 && [ -f /usr/include/boost/context/fiber.hpp ]; then
    echo "== Boost.Context"
    g++ -O2 -std=c++14 -o "$out/fiber" "$here/boost/fiber_pingpong.cpp" -lboost_context
    repeat "$out/fiber"
else
    echo "== Boost.Context: not installed, skipped"
fi
