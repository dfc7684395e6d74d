#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Usage: check_kv_server.sh KV_SERVER [EMULATOR]
#
# The key-value example against redis-cli, a client nobody here wrote, with
# every answer checked exactly:
#   - a redis-cli session of every command (tests/kv/session.txt), whose
#     answers must be tests/kv/session.expected byte for byte (a redis-server
#     gives the same answers, bar one command that this server does not have);
#   - TTL counts down from the expiry set; a key set with PX vanishes on time,
#     and DBSIZE no longer counts it;
#   - pipelined requests, arrays and inline commands mixed, in one write: the
#     answers in order, and QUIT closes the connection after its +OK;
#   - malformed requests and requests past the limits: an error reply, then
#     the server closes the connection, and goes on serving others;
#   - a request begun and never finished, and a client that never reads its
#     replies, are dropped at their deadlines;
#   - SIGTERM stops the server with status 0.
# On each IO backend this machine has (only the one WEFT_IO names, if set),
# on 1 and 4 workers. Exits 77 (skipped) without redis-cli (Debian:
# redis-tools). EMULATOR (qemu-aarch64 ...) runs the server.
set -u
server=$1
emu=${2:-}
if ! command -v redis-cli >/dev/null; then
    echo "redis-cli not found (Debian: apt-get install redis-tools): skipped"
    exit 77
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
pid=""
trap '[ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
passed=0 failed=0
limit=120
# The server's --timeout, in seconds: short, so that the checks of it wait
# little, but long enough for every request of the session to come in whole
# (the largest is 4 MiB), longer under an emulator.
if [ -n "$emu" ]; then deadline=6; else deadline=2; fi

pass() { passed=$((passed + 1)); }
fail() {
    echo "FAIL: $*"
    failed=$((failed + 1))
}

# start IO WORKERS: starts the server on a free port; sets pid and port.
start() {
    local log=$tmp/server-$1-$2.log i
    : >"$log"
    # --foreground: the signals go to the server alone (tests/check_examples.sh
    # says why).
    WEFT_IO=$1 timeout --foreground -k 10 $((5 * limit)) $emu "$server" --port 0 --workers "$2" \
        --timeout "$deadline" >"$log" 2>&1 &
    pid=$!
    port=""
    for ((i = 0; i < 600; i++)); do   # up to a minute
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log")
        [ -z "$port" ] || return 0
        sleep 0.1
    done
    fail "kv_server ($1, $2 workers): no 'listening on' line in its log: $(cat "$log")"
    return 1
}

cli() { timeout $limit redis-cli -p "$port" "$@"; }

# raw BYTES: writes BYTES (printf's format: \r, \n) on a connection of its
# own and prints all the server sends until it closes the connection.
raw() {
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return
    # shellcheck disable=SC2059
    printf -- "$1" >&3
    timeout $limit cat <&3
    exec 3<&- 3>&-
}

# expect_raw WHAT BYTES ANSWER: raw BYTES gives exactly ANSWER, then a close.
expect_raw() {
    # shellcheck disable=SC2059
    printf -- "$3" >"$tmp/want"
    raw "$2" >"$tmp/got"
    if cmp -s "$tmp/want" "$tmp/got"; then
        pass
    else
        fail "$what: $1: expected $(od -c "$tmp/want" | head -n 8), got $(od -c "$tmp/got" | head -n 8)"
    fi
}

check() {   # check IO WORKERS
    local io=$1 workers=$2 rc=0
    what="kv_server ($io, $workers workers)"
    start "$io" "$workers" || return

    # Every command, every answer.
    if cli --no-raw <"$here/kv/session.txt" >"$tmp/session.out" 2>&1 &&
       diff -u "$here/kv/session.expected" "$tmp/session.out" >"$tmp/session.diff"; then
        pass
    else
        fail "$what: the redis-cli session's answers differ:"
        cat "$tmp/session.diff"
    fi

    # TTL counts down from the expiry set (a generous margin for a loaded
    # machine); PX vanishes on time, and DBSIZE counts live keys only.
    local ttl
    ttl=$(cli SET ttl-key v EX 100 >/dev/null && cli TTL ttl-key)
    if [ -n "$ttl" ] && [ "$ttl" -ge 40 ] && [ "$ttl" -le 100 ]; then pass; else fail "$what: TTL after EX 100 is '$ttl'"; fi
    cli FLUSHALL >/dev/null
    if [ "$(cli SET stays v)" = OK ] && [ "$(cli SET goes v PX 200)" = OK ] &&
       [ "$(cli SET goes-too v EX 1)" = OK ]; then
        sleep 1.5
        local got
        got=$(cli --no-raw GET goes; cli --no-raw EXISTS goes-too; cli --no-raw TTL goes; cli --no-raw DBSIZE; cli --no-raw GET stays)
        local want
        want=$(printf '(nil)\n(integer) 0\n(integer) -2\n(integer) 1\n"v"')
        if [ "$got" = "$want" ]; then pass; else fail "$what: expired keys: expected '$want', got '$got'"; fi
    else
        fail "$what: SET with PX or EX failed"
    fi

    # Pipelined: arrays and inline commands in one write, answered in order;
    # an empty line gets no answer; QUIT answers, then closes, and the
    # request after it is not answered.
    expect_raw "pipelined requests" \
        '*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\np\r\n$1\r\n5\r\nINCR p\r\nGET p\r\nECHO "a b"\r\n\r\nmget p q\nQUIT\r\nPING\r\n' \
        '+PONG\r\n+OK\r\n:6\r\n$1\r\n6\r\n$3\r\na b\r\n*2\r\n$1\r\n6\r\n$-1\r\n+OK\r\n'

    # A request split across writes is answered once it is whole.
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf '*2\r\n$4\r\nECHO\r\n$5\r\nhe' >&3
    sleep 0.2
    printf 'llo\r\nQUIT\r\n' >&3
    if [ "$(timeout $limit cat <&3 | od -c)" = "$(printf '$5\r\nhello\r\n+OK\r\n' | od -c)" ]; then
        pass
    else
        fail "$what: a request split across two writes was not answered whole"
    fi
    exec 3<&- 3>&-

    # Malformed, and past the limits: an error, then a close.
    expect_raw "a negative bulk length" '*1\r\n$-5\r\n' '-ERR Protocol error: invalid bulk length\r\n'
    expect_raw "a multibulk length that is not a number" '*x\r\n' '-ERR Protocol error: invalid multibulk length\r\n'
    expect_raw "a bulk without its CRLF" '*1\r\n$3\r\nGETxx' '-ERR Protocol error: bulk data not followed by CRLF\r\n'
    expect_raw "an array of something else" '*1\r\n:1\r\n' '-ERR Protocol error: an argument that is not a bulk string\r\n'
    expect_raw "unbalanced quotes" 'ECHO "abc\r\n' '-ERR Protocol error: unbalanced quotes in request\r\n'
    expect_raw "too many arguments" '*5000\r\n' '-ERR Protocol error: more than 1024 arguments\r\n'
    expect_raw "too long an argument" '*2\r\n$4\r\nECHO\r\n$1048577\r\n' '-ERR Protocol error: an argument longer than 1 MiB\r\n'
    # Three arguments of 1 MiB and the header of a fourth: past 4 MiB in all.
    # Its body is not sent: the server reads all that was, so it closes
    # without a reset that could lose the error reply.
    {
        printf '*5\r\n$4\r\nECHO\r\n'
        for _ in 1 2 3; do
            printf '$1048576\r\n'
            head -c 1048576 /dev/zero | tr '\0' a
            printf '\r\n'
        done
        printf '$1048576\r\n'
    } >"$tmp/huge"
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    cat "$tmp/huge" >&3 2>/dev/null
    local got
    got=$(timeout $limit cat <&3)
    exec 3<&- 3>&-
    if [ "$got" = "$(printf -- '-ERR Protocol error: request longer than 4 MiB\r')" ]; then
        pass
    else
        fail "$what: a request past 4 MiB got '$got'"
    fi
    # The answers before a malformed request are sent, then the error.
    expect_raw "a good request, then a bad one" 'PING\r\n*1\r\n$-5\r\n' '+PONG\r\n-ERR Protocol error: invalid bulk length\r\n'
    # A request begun and never finished, and a client that asks for
    # megabytes and never reads: each is dropped at its deadline (the
    # --timeout given), not held for ever. Once per backend, as each takes
    # that long.
    # A connection still held would keep cat waiting until its time-out.
    if [ "$workers" -eq 1 ]; then
        head -c 1048576 /dev/zero | tr '\0' b >"$tmp/mib"
        cli -x SET mib <"$tmp/mib" >/dev/null
        exec 3<>"/dev/tcp/127.0.0.1/$port" 4<>"/dev/tcp/127.0.0.1/$port"
        printf '*2\r\n$3\r\nGET\r\n$3\r\nk' >&3
        for _ in $(seq 32); do printf 'GET mib\r\n'; done >&4
        # Dropped by now, so cat meets the end of each stream at once; a
        # server that ignored --timeout (ten seconds) would keep both open
        # past cat's own limit.
        sleep $((deadline + 2))
        local rc3=0 rc4=0
        timeout 5 cat <&3 >/dev/null 2>&1 || rc3=$?
        timeout 5 cat <&4 >/dev/null 2>&1 || rc4=$?
        exec 3<&- 3>&- 4<&- 4>&-
        if [ "$rc3" -ne 124 ]; then pass; else fail "$what: a request never finished kept its connection"; fi
        if [ "$rc4" -ne 124 ]; then pass; else fail "$what: a client that never reads kept its connection"; fi
    fi

    # After all that, the server still serves.
    if [ "$(cli PING)" = PONG ]; then pass; else fail "$what: no PONG after the malformed requests"; fi

    kill -TERM "$pid"
    wait "$pid" || rc=$?
    pid=""
    if [ "$rc" -eq 0 ]; then pass; else fail "$what: exited $rc on SIGTERM"; fi
}

if [ -n "${WEFT_IO:-}" ]; then
    backends=$WEFT_IO
elif WEFT_IO=uring timeout $limit $emu "$(dirname "$server")/hello" 1 >/dev/null 2>&1; then
    backends="uring epoll"
else
    echo "note: io_uring is refused here; checking epoll only"
    backends=epoll
fi
for io in $backends; do
    for workers in 1 4; do
        check "$io" "$workers"
    done
done

echo "kv_server: $passed passed, $failed failed"
[ $failed -eq 0 ]
