#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Where the HTTP example's CPU goes, thread by thread, under the same wrk
# load as ab.sh:
#   bench/compare/http/threads.sh BUILD_DIR ["ENV"]
# Starts the server, warms it for a second, runs `wrk -t1 -c100 -d4s`, and
# prints for each of the server's threads (by name: weft-worker-N,
# weft-monitor, ...) the CPU it used, the time it waited for a CPU, and its
# voluntary context switches (sleeps it woke from) during those 4 s, from
# /proc/PID/task/TID/schedstat and status. HTTP_WORKERS=N runs the server
# with N workers, as run.sh does. Needs wrk.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/compare/http/lib.sh
. "$here/lib.sh"
build=${1:?usage: threads.sh BUILD_DIR ["ENV"]}
env_=${2-}
port=${AB_PORT:-8091}
server="$build/examples/http_server"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

# shellcheck disable=SC2086
env $env_ "$server" --port "$port" ${HTTP_WORKERS:+--workers "$HTTP_WORKERS"} > /dev/null 2>&1 &
pid=$!
answered curl -s -o /dev/null "http://127.0.0.1:$port/" || true
wrk -t1 -c100 -d1s "http://127.0.0.1:$port/" > /dev/null 2>&1

snap() {   # snap FILE: "tid cpu_ns wait_ns voluntary name" per thread, by tid
    for t in /proc/"$pid"/task/*; do
        printf '%s %s %s %s\n' "${t##*/}" "$(awk '{print $1, $2}' "$t/schedstat")" \
            "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")" "$(cat "$t/comm")"
    done | sort -k1,1 > "$1"
}
snap "$tmp/before"
out=$(wrk -t1 -c100 -d4s "http://127.0.0.1:$port/" 2>&1)
snap "$tmp/after"
echo "$(awk '/Requests\/sec/ {print $2}' <<< "$out") requests/s; per thread over the 4 s:"
printf '%-16s %10s %10s %12s\n' thread "CPU ms" "wait ms" "wake-ups"
join -o 1.2,1.3,1.4,2.2,2.3,2.4,2.5 "$tmp/before" "$tmp/after" | awk '{
    printf "%-16s %10.1f %10.1f %12d\n", $7, ($4 - $1) / 1e6, ($5 - $2) / 1e6, $6 - $3
}'
