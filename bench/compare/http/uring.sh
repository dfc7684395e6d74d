#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The HTTP example on one worker beside a hand-written io_uring server on one
# thread (uring.c), whose receives are made once per answer as weft's are, or
# armed once per connection (multishot, into provided buffers), and nginx
# with one worker process: what a multishot receive would save, measured with
# nothing of weft's around it, and how close to nginx's CPU per request an
# io_uring server can come on this machine at all.
#   bench/compare/http/uring.sh BUILD_DIR [ROUNDS]
# Each round runs the servers one after the other (the example with and
# without --own, the two hand-written ones, nginx), each started afresh,
# warmed for a second and loaded with `wrk -t1 -c100 -d4s`, and reads its CPU
# time (user and system, /proc/PID/stat; nginx's master and worker). Prints
# each run, then the medians of the CPU per request and of the per-round
# ratios to the one-shot server and to nginx. Needs wrk, curl, nginx and a C
# compiler with liburing (Debian: wrk, curl, nginx-light, liburing-dev).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/compare/http/lib.sh
. "$here/lib.sh"
build=${1:?usage: uring.sh BUILD_DIR [ROUNDS]}
rounds=${2:-8}
port=${AB_PORT:-8094}   # and the next four
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

# nginx, one worker process, on PORT; measured as one() measures, with its
# worker's ticks counted beside its master's.
nginx_on() {
    local port=$1 pid
    sed -e "s/^worker_processes .*/worker_processes 1;/" -e "s/127.0.0.1:8081/127.0.0.1:$port/" \
        "$here/nginx.conf" > "$tmp/nginx.conf"
    nginx -c "$tmp/nginx.conf" -p "$tmp" -g "pid $tmp/nginx.pid;" &
    pid=$!
    answered curl -s -o /dev/null "http://127.0.0.1:$port/" || { echo "uring.sh: nginx does not answer" >&2; exit 1; }
    NGINX_WORKERS=$(pgrep -P "$pid" | tr '\n' ' ') measure "$pid" "$port" > "$tmp/one"
    echo "nginx $(cat "$tmp/one")" | tee -a "$tmp/runs"
}

for i in $(seq "$rounds"); do
    echo "round $i of $rounds"
    # A port each: a server's ring may hold its port a moment after it exits.
    one weft "$port" "$build/examples/http_server" --workers 1
    one weft-own $((port + 3)) "$build/examples/http_server" --workers 1 --own
    one oneshot $((port + 1)) "$tmp/http_uring"
    one multishot $((port + 2)) "$tmp/http_uring" --multishot
    nginx_on $((port + 4))
done
for name in weft weft-own oneshot multishot nginx; do
    echo "$name: median $(awk -v n=$name '$1 == n {print $2}' "$tmp/runs" | median_min_max | awk '{print $1}') us of the server's CPU per request, $(awk -v n=$name '$1 == n {print $3}' "$tmp/runs" | median_min_max | awk '{print $1}') req/s"
done
for base in oneshot nginx; do
    for name in weft weft-own multishot oneshot; do
        [ "$name" = "$base" ] && continue
        echo "$name / $base: median of the per-round ratios of CPU per request $(
            awk -v n=$name -v b=$base '$1 == b {o[++i] = $2} $1 == n {m[++j] = $2} END {for (k = 1; k <= i; k++) printf "%.3f\n", m[k] / o[k]}' "$tmp/runs" |
            median_min_max | awk '{print $1 " (min " $2 ", max " $3 ")"}')"
    done
done
