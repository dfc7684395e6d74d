#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The HTTP example under two environments, alternated run by run, under the
# same wrk load on loopback:
#   bench/compare/http/ab.sh BUILD_DIR RUNS "ENV_A" "ENV_B"
# for example  ab.sh build-rel 10 "" "WEFT_IDLE_SPIN_US=0"
# With AB_BUILD_B=DIR, side B runs DIR's server instead: two builds (a commit
# and the one before it) under the same environment, alternated; with
# AB_ARGS_B="--workers 1", say, side B's server gets those arguments too;
# AB_ARGS="--workers 1" gives both sides' servers those arguments (AB_ARGS_B,
# where set, replaces them on side B).
# Each run starts the server afresh, warms it for a second, then runs
# `wrk -t1 -c100 -d4s` and reads the server's CPU time (user and system,
# /proc/PID/stat) before and after. Prints each run, the medians of CPU per
# request and requests per second for each side, and the median of the
# per-run ratios B/A (of an even count, the lower middle one). Needs wrk.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/compare/http/lib.sh
. "$here/lib.sh"
build=${1:?usage: ab.sh BUILD_DIR RUNS "ENV_A" "ENV_B"}
runs=${2:?usage: ab.sh BUILD_DIR RUNS "ENV_A" "ENV_B"}
env_a=${3-}
env_b=${4-}
port=${AB_PORT:-8090}
server="$build/examples/http_server"
server_b="${AB_BUILD_B:-$build}/examples/http_server"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

one() {   # one ENV SERVER [ARGS]: prints "cpu_us_per_request requests_per_second"
    # shellcheck disable=SC2086
    env $1 "$2" --port "$port" ${3-} > /dev/null 2>&1 &
    local pid=$!
    answered curl -s -o /dev/null "http://127.0.0.1:$port/" || true
    measure "$pid" "$port"
}

median() { median_min_max | awk '{print $1}'; }

for i in $(seq "$runs"); do
    read -r ca ra < <(one "$env_a" "$server" "${AB_ARGS-}")
    read -r cb rb < <(one "$env_b" "$server_b" "${AB_ARGS_B-${AB_ARGS-}}")
    echo "run $i  A: $ca us/request, $ra req/s   B: $cb us/request, $rb req/s"
    echo "$ca $ra $cb $rb" >> "$tmp/runs"
done
echo "A (${env_a:-no change}${AB_ARGS:+, $AB_ARGS}): median $(awk '{print $1}' "$tmp/runs" | median) us of the server's CPU per request, $(awk '{print $2}' "$tmp/runs" | median) req/s"
args_b=${AB_ARGS_B-${AB_ARGS-}}
echo "B (${env_b:-no change}${AB_BUILD_B:+, $AB_BUILD_B}${args_b:+, $args_b}): median $(awk '{print $3}' "$tmp/runs" | median) us of the server's CPU per request, $(awk '{print $4}' "$tmp/runs" | median) req/s"
echo "B/A: median of the per-run ratios of CPU per request $(awk '{printf "%.3f\n", $3 / $1}' "$tmp/runs" | median)"
