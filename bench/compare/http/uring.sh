#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The HTTP example on one worker beside a hand-written io_uring server on one
# thread (uring.c), whose receives are made once per answer as weft's are, or
# armed once per connection (multishot, into provided buffers): what a
# multishot receive would save, measured with nothing of weft's around it.
#   bench/compare/http/uring.sh BUILD_DIR [ROUNDS]
# Each round runs the three servers one after the other, each started afresh,
# warmed for a second and loaded with `wrk -t1 -c100 -d4s`, and reads its CPU
# time (user and system, /proc/PID/stat). Prints each run, then the medians
# of the CPU per request and of the per-round ratios to the one-shot server.
# Needs wrk, curl and a C compiler with liburing (Debian: liburing-dev).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/compare/http/lib.sh
. "$here/lib.sh"
build=${1:?usage: uring.sh BUILD_DIR [ROUNDS]}
rounds=${2:-8}
port=${AB_PORT:-8094}   # and the next two
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/http_uring" "$here/uring.c" -luring

one() {   # one NAME PORT COMMAND...: appends "NAME cpu_us_per_request requests_per_second"
    local name=$1 port=$2 pid
    shift 2
    "$@" --port "$port" > /dev/null 2>&1 &
    pid=$!
    answered curl -s -o /dev/null "http://127.0.0.1:$port/" || { echo "uring.sh: $name does not answer" >&2; exit 1; }
    measure "$pid" "$port" > "$tmp/one"   # in this shell, whose child the server is
    echo "$name $(cat "$tmp/one")" | tee -a "$tmp/runs"
}

for i in $(seq "$rounds"); do
    echo "round $i of $rounds"
    # A port each: a server's ring may hold its port a moment after it exits.
    one weft "$port" "$build/examples/http_server" --workers 1
    one oneshot $((port + 1)) "$tmp/http_uring"
    one multishot $((port + 2)) "$tmp/http_uring" --multishot
done
for name in weft oneshot multishot; do
    echo "$name: median $(awk -v n=$name '$1 == n {print $2}' "$tmp/runs" | median_min_max | awk '{print $1}') us of the server's CPU per request, $(awk -v n=$name '$1 == n {print $3}' "$tmp/runs" | median_min_max | awk '{print $1}') req/s"
done
for name in weft multishot; do
    echo "$name / oneshot: median of the per-round ratios of CPU per request $(
        awk -v n=$name '$1 == "oneshot" {o[++i] = $2} $1 == n {m[++j] = $2} END {for (k = 1; k <= i; k++) printf "%.3f\n", m[k] / o[k]}' "$tmp/runs" |
        median_min_max | awk '{print $1 " (min " $2 ", max " $3 ")"}')"
done
