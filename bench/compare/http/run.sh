#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The HTTP example against nginx and a thread-per-connection server, under the
# same wrk load on loopback:
#   bench/compare/http/run.sh BUILD_DIR [runs] [duration]
# Needs wrk, curl and nginx (Debian: wrk, curl, nginx-light). Checks first
# that each server answers GET / with the same body and keeps the connection,
# then prints one line per run and server, and the median requests per second
# of each with the lowest and highest run, and the medians of weft's per-round
# ratios to each of the others, of the rate and of the CPU per request. Beside
# each rate it prints the CPU time per request of the server's own processes
# (user and system, from /proc/PID/stat: what neighbours on a shared machine
# do not change) and that of the rest of the machine while wrk ran (all CPUs'
# busy time minus wrk's own, which adds the kernel's work done outside the
# server's threads, such as softirqs, when nothing else runs). HTTP_WORKERS=N
# runs weft and nginx with N workers each instead of one a CPU;
# WRK_CONNECTIONS=N sets wrk's connections (100); HTTP_WEFT_ARGS="--own"
# gives weft's server those arguments too.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/compare/http/lib.sh
. "$here/lib.sh"
build=${1:?usage: run.sh BUILD_DIR [runs] [duration]}
runs=${2:-3}
dur=${3:-5s}
conns=${WRK_CONNECTIONS:-100}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

cc -O2 -o "$tmp/http_threads" "$here/threads.c" -pthread
# HTTP_WORKERS=N: weft's workers and nginx's worker processes (default: one a
# CPU each); the thread-per-connection server has no such setting.
workers=${HTTP_WORKERS:-}
if [ -n "$workers" ] && ! [[ "$workers" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: HTTP_WORKERS must be a positive number, not \"$workers\"" >&2
    exit 2
fi
sed "s/^worker_processes .*/worker_processes ${workers:-auto};/" "$here/nginx.conf" > "$tmp/nginx.conf"
# shellcheck disable=SC2086
"$build/examples/http_server" --port 8080 ${workers:+--workers "$workers"} ${HTTP_WEFT_ARGS-} > /dev/null &
pid_weft=$!
"$tmp/http_threads" 8082 &
pid_threads=$!
nginx -c "$tmp/nginx.conf" -p "$tmp" -g "pid $tmp/nginx.pid;" &
pid_nginx=$!
sleep 1

# The same body from all three, each keeping the connection: curl reuses it
# for the second URL only if the first answer left it open.
for port in 8080 8081 8082; do
    out=$(curl -sv "http://127.0.0.1:$port/" "http://127.0.0.1:$port/" 2>&1)
    if [ "$(grep -c '^Hello from weft$' <<< "$out")" != 2 ] || ! grep -q 'Re-using existing connection' <<< "$out"; then
        echo "run.sh: the server on port $port does not answer GET / with the body on a kept connection" >&2
        exit 1
    fi
done

# Busy jiffies of all CPUs (user, nice, system, irq, softirq), and the CPU
# seconds of this shell's finished children.
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# (times runs in this shell, not in a $(...) subshell, which has no children.)
children_cpu() { times > "$tmp/times"; tail -n 1 "$tmp/times" | tr 'ms' '  ' | awk '{print $1 * 60 + $2 + $3 * 60 + $4}'; }
hz=$(getconf CLK_TCK)
# CPU ticks (user + system) of a server: the process and, for nginx, its
# worker processes.
server_ticks() {
    local pids=$1
    [ "$1" = "$pid_nginx" ] && pids="$pids $(pgrep -P "$1" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    proc_ticks $pids
}

for r in $(seq 1 "$runs"); do
    for s in weft:8080 nginx:8081 threads:8082; do
        name=${s%%:*}
        port=${s##*:}
        pid_var=pid_$name
        s0=$(server_ticks "${!pid_var}")
        children_cpu > "$tmp/c0"; b0=$(busy)
        out=$(wrk -t1 -c"$conns" -d"$dur" "http://127.0.0.1:$port/")
        b1=$(busy); children_cpu > "$tmp/c1"
        s1=$(server_ticks "${!pid_var}")
        c0=$(cat "$tmp/c0"); c1=$(cat "$tmp/c1")
        rps=$(wrk_rate <<< "$out")
        reqs=$(wrk_requests <<< "$out")
        cpu=$(awk -v b="$((b1 - b0))" -v hz="$hz" -v w="$c0" -v w1="$c1" -v n="$reqs" \
              'BEGIN {printf "%.1f", ((b / hz) - (w1 - w)) / n * 1e6}')
        own=$(awk -v t="$((s1 - s0))" -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz / n * 1e6}')
        echo "run $r $name $rps req/s, $own us of the server's CPU per request, $cpu us of all CPUs beside wrk's"
        echo "$rps" >> "$tmp/$name"
        echo "$cpu" >> "$tmp/$name.cpu"
        echo "$own" >> "$tmp/$name.own"
    done
done
for name in weft nginx threads; do
    read -r m lo hi < <(median_min_max < "$tmp/$name.own")
    printf "%-8s median %s us of its own CPU per request (min %s, max %s)\n" "$name" "$m" "$lo" "$hi"
    read -r m lo hi < <(median_min_max < "$tmp/$name.cpu")
    printf "%-8s median %s us of all CPUs per request beside wrk (min %s, max %s)\n" "$name" "$m" "$lo" "$hi"
done
for name in weft nginx threads; do
    read -r m lo hi < <(median_min_max < "$tmp/$name")
    printf "%-8s median %s req/s (min %s, max %s)\n" "$name" "$m" "$lo" "$hi"
done
# The servers of one round share that round's conditions, so the fair
# comparison is the ratio within each round; its median over the rounds.
for other in nginx threads; do
    read -r m lo hi < <(paste "$tmp/weft" "$tmp/$other" | awk '{print $1 / $2}' | median_min_max)
    printf "weft / %-7s median of the per-round ratios %.3fx (min %.3fx, max %.3fx)\n" "$other" "$m" "$lo" "$hi"
    read -r m lo hi < <(paste "$tmp/weft.own" "$tmp/$other.own" | awk '{print $1 / $2}' | median_min_max)
    printf "weft / %-7s own CPU per request, median of the per-round ratios %.3fx (min %.3fx, max %.3fx)\n" \
        "$other" "$m" "$lo" "$hi"
done
