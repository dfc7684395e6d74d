#!/usr/bin/env bash
# The HTTP example against nginx and a thread-per-connection server, under the
# same wrk load on loopback: bench/compare/http/run.sh BUILD_DIR [runs] [duration]
# Needs wrk and nginx (Debian: wrk, nginx-light). Prints one line per run and
# server, then the median requests per second of each.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:?usage: run.sh BUILD_DIR [runs] [duration]}
runs=${2:-3}
dur=${3:-5s}
conns=${WRK_CONNECTIONS:-100}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

cc -O2 -o "$tmp/http_threads" "$here/threads.c" -pthread
"$build/examples/http_server" --port 8080 > /dev/null &
"$tmp/http_threads" 8082 &
nginx -c "$here/nginx.conf" -p "$tmp" -g "pid $tmp/nginx.pid;" &
sleep 1

for r in $(seq 1 "$runs"); do
    for s in weft:8080 nginx:8081 threads:8082; do
        name=${s%%:*}
        port=${s##*:}
        rps=$(wrk -t1 -c"$conns" -d"$dur" "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
        echo "run $r $name $rps"
        echo "$rps" >> "$tmp/$name"
    done
done
for name in weft nginx threads; do
    printf '%-8s median %s req/s\n' "$name" "$(sort -n "$tmp/$name" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
done
