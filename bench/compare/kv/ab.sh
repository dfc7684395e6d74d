#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The kv_server example under two environments, alternated run by run, under
# the same redis-benchmark load on loopback:
#   bench/compare/kv/ab.sh BUILD_DIR RUNS "ENV_A" "ENV_B"
# for example  ab.sh build-rel 8 "WEFT_CROWDED_PCT=100" ""
# Each run starts the server afresh, warms it with 50,000 SETs and GETs, then
# runs `redis-benchmark -t set,get -n 300000 -c 50` and reads the server's CPU
# time (user and system, /proc/PID/stat) before and after. Prints each run,
# and the medians of CPU per request and of the two rates for each side, with
# the median of the per-run ratios B/A (of an even count, the lower middle
# one). KV_PIPELINE=16, say, pipelines the requests. Needs redis-benchmark
# and redis-cli (Debian: redis-tools). With AB_BUILD_B=DIR, side B runs DIR's
# server instead: two builds under the same environment, alternated.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/compare/http/lib.sh
. "$here/../http/lib.sh"
usage='usage: ab.sh BUILD_DIR RUNS "ENV_A" "ENV_B"'
build=${1:?$usage}
runs=${2:?$usage}
env_a=${3-}
env_b=${4-}
port=${AB_PORT:-7391}
pipeline=${KV_PIPELINE:-1}
server="$build/examples/kv_server"
server_b="${AB_BUILD_B:-$build}/examples/kv_server"
tck=$(getconf CLK_TCK)
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

one() {   # one ENV SERVER: prints "cpu_us_per_request set_rate get_rate"
    # shellcheck disable=SC2086
    env $1 "$2" --port "$port" > /dev/null 2>&1 &
    local pid=$! s0 s1 rates
    answered redis-cli -p "$port" ping || true
    redis-benchmark -p "$port" -t set,get -n 50000 -c 50 -P "$pipeline" -q > /dev/null 2>&1
    s0=$(proc_ticks "$pid")
    rates=$(redis-benchmark -p "$port" -t set,get -n 300000 -c 50 -P "$pipeline" -q 2>/dev/null |
            tr '\r' '\n' | awk '/requests per second/ {printf "%s ", $2}')
    s1=$(proc_ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    awk -v d=$((s1 - s0)) -v t="$tck" -v r="$rates" 'BEGIN { printf "%.2f %s\n", d / t * 1e6 / 600000, r }'
}

median() { median_min_max | awk '{print $1}'; }

for i in $(seq "$runs"); do
    read -r ca sa ga < <(one "$env_a" "$server")
    read -r cb sb gb < <(one "$env_b" "$server_b")
    echo "run $i  A: $ca us/request, SET $sa GET $ga req/s   B: $cb us/request, SET $sb GET $gb req/s"
    echo "$ca $sa $ga $cb $sb $gb" >> "$tmp/runs"
done
echo "A (${env_a:-no change}): median $(awk '{print $1}' "$tmp/runs" | median) us of the server's CPU per request, SET $(awk '{print $2}' "$tmp/runs" | median), GET $(awk '{print $3}' "$tmp/runs" | median) req/s"
echo "B (${env_b:-no change}${AB_BUILD_B:+, $AB_BUILD_B}): median $(awk '{print $4}' "$tmp/runs" | median) us of the server's CPU per request, SET $(awk '{print $5}' "$tmp/runs" | median), GET $(awk '{print $6}' "$tmp/runs" | median) req/s"
echo "B/A: median of the per-run ratios of CPU per request $(awk '{printf "%.3f\n", $4 / $1}' "$tmp/runs" | median), of the SET rate $(awk '{printf "%.3f\n", $5 / $2}' "$tmp/runs" | median), of the GET rate $(awk '{printf "%.3f\n", $6 / $3}' "$tmp/runs" | median)"
