# SPDX-License-Identifier: MIT
# What run.sh and ab.sh share; sourced.

# CPU ticks (user + system) of the processes given, from /proc/PID/stat
# (what neighbours on a shared machine do not change). The fields are
# counted after the command name, which may hold spaces.
proc_ticks() {
    for p in "$@"; do sed 's/^.*) //' "/proc/$p/stat"; done | awk '{t += $12 + $13} END {print t}'
}

# answered CMD...: runs CMD until it succeeds, up to 50 times, 0.1 s apart
# (a server just started, until it answers).
answered() {
    for _ in $(seq 50); do
        "$@" > /dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# The median, lowest and highest of the numbers on standard input, one a
# line (of an even count, the lower middle one).
median_min_max() {
    sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)], a[1], a[NR]}'
}

# From wrk's report on standard input: the requests completed, and the rate.
wrk_requests() { awk '/ requests in / {print $1}'; }
wrk_rate() { awk '/Requests\/sec/ {print $2}'; }

# measure PID PORT: warms the server PID (a child of this shell) answering on
# PORT with a second of `wrk -t1 -c100`, loads it for 4 s, stops it, and
# prints "cpu_us_per_request requests_per_second" (its CPU, user and system,
# from /proc/PID/stat, over the 4 s, with that of the processes named in
# NGINX_WORKERS, if set).
measure() {
    local pid=$1 port=$2 s0 s1 out
    wrk -t1 -c100 -d1s "http://127.0.0.1:$port/" > /dev/null 2>&1
    # shellcheck disable=SC2086
    s0=$(proc_ticks "$pid" ${NGINX_WORKERS:-})
    out=$(wrk -t1 -c100 -d4s "http://127.0.0.1:$port/" 2>&1)
    # shellcheck disable=SC2086
    s1=$(proc_ticks "$pid" ${NGINX_WORKERS:-})
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    awk -v d=$((s1 - s0)) -v t="$(getconf CLK_TCK)" -v q="$(wrk_requests <<< "$out")" \
        -v r="$(wrk_rate <<< "$out")" 'BEGIN { printf "%.2f %s\n", d / t * 1e6 / q, r }'
}
