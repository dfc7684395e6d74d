#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Usage: check_examples.sh EXAMPLES_DIR [EMULATOR]
#
# The examples behave like command-line tools:
#   - --help prints the usage line on standard output and exits 0;
#   - an unknown option, a stray argument or a malformed value is named on
#     standard error, and the exit status is 2;
#   - hello and fork_join_sum print the sum they expect beside the one they
#     got, and the two agree;
#   - cat copies standard input for "-" or no argument, in order among files,
#     and leaves the flags of its standard input as it found them;
#   - each server's (echo_server, http_server, kv_server) "listening on" line
#     reaches a log file while it runs, and SIGTERM or SIGINT stops it with
#     status 0, also with a client connected, whose connection is then closed.
# The behaviour is checked on each IO backend this machine has (only the one
# WEFT_IO names, if it is set) and the server on 1, 2 and 4 workers.
# EMULATOR (qemu-aarch64 ..., for a cross-build) runs each program.
set -u
dir=$1
emu=${2:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

pass() { passed=$((passed + 1)); }
fail() {
    echo "FAIL: $*"
    failed=$((failed + 1))
}

# A program that should have ended long before is stopped after this long.
limit=120

# run PROGRAM ARGS...: runs an example; stdout to $tmp/out, stderr to $tmp/err.
run() {
    local prog=$1
    shift
    # shellcheck disable=SC2086
    timeout $limit $emu "$dir/$prog" "$@" >"$tmp/out" 2>"$tmp/err"
}

# expect_status WANT DESCRIPTION PROGRAM ARGS...
expect_status() {
    local want=$1 what=$2 rc=0
    shift 2
    run "$@" </dev/null || rc=$?
    if [ "$rc" -ne "$want" ]; then
        fail "$what: '$*' exited $rc, expected $want; stderr: $(cat "$tmp/err")"
        return 1
    fi
}

# rejects PROGRAM ARGS... -- WORD...: exits 2 and stderr names each WORD.
rejects() {
    local args=() words=()
    while [ "$1" != "--" ]; do
        args+=("$1")
        shift
    done
    shift
    words=("$@")
    expect_status 2 "a bad argument" "${args[@]}" || return
    for w in "${words[@]}"; do
        if ! grep -qF -- "$w" "$tmp/err"; then
            fail "'${args[*]}' does not name '$w' in its message: $(cat "$tmp/err")"
            return
        fi
    done
    pass
}

# ---- options: --help, unknown options, malformed values -------------------
for ex in hello fork_join_sum producer_consumer pipeline cat echo_server http_server kv_server udp_echo; do
    if expect_status 0 "--help" "$ex" --help; then
        if head -n 1 "$tmp/out" | grep -q "^usage: $ex" && [ ! -s "$tmp/err" ]; then
            pass
        else
            fail "$ex --help printed no usage line: $(cat "$tmp/out" "$tmp/err")"
        fi
    fi
    rejects "$ex" --no-such-option -- --no-such-option
done
rejects hello -5 -- -5
rejects hello abc -- abc
rejects hello 0 -- 0
rejects hello 3 4 -- 4
rejects fork_join_sum 1x -- 1x
rejects producer_consumer extra -- extra
rejects pipeline extra -- extra
rejects echo_server 99999 -- 99999
rejects echo_server abc -- abc
rejects echo_server --port abc -- --port abc
rejects echo_server --port 99999 -- --port 99999
rejects echo_server --port -- --port
rejects echo_server --workers 5000 -- --workers 5000
rejects echo_server --workers 0 -- --workers 0
for ex in http_server kv_server udp_echo; do
    rejects $ex 99999 -- 99999
    rejects $ex --port abc -- --port abc
    rejects $ex --port 99999 -- --port 99999
    rejects $ex --port -- --port
    rejects $ex --workers 5000 -- --workers 5000
    rejects $ex --workers x -- --workers x
done
rejects kv_server --timeout 0 -- --timeout 0
rejects kv_server --timeout 3601 -- --timeout 3601
rejects kv_server --timeout -- --timeout

# ---- behaviour, per backend -------------------------------------------------
if [ -n "${WEFT_IO:-}" ]; then
    backends=$WEFT_IO
else
    backends=epoll
    if WEFT_IO=uring run hello 1; then
        backends="uring epoll"
    else
        echo "note: io_uring is refused here ($(cat "$tmp/err")); checking epoll only"
    fi
fi

# A file of several 64 KiB blocks, and a small one.
seq 1 60000 >"$tmp/big"
printf 'first file\n' >"$tmp/small"

# check_server PROGRAM IO WORKERS SIGNAL: the server logs its address,
# answers a request (request_of, answer_of), and stops with status 0 on the
# signal while a client is connected.
request_of() {
    case $1 in
    echo_server) printf 'ping\n' ;;
    http_server) printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' ;;
    kv_server) printf 'PING\r\n' ;;
    esac
}
answer_of() {   # the first line of the answer, without its CR
    case $1 in
    echo_server) echo ping ;;
    http_server) echo "HTTP/1.1 200 OK" ;;
    kv_server) echo "+PONG" ;;
    esac
}
check_server() {
    local prog=$1 io=$2 workers=$3 sig=$4 port="" rc=0 i
    local what="$prog ($io, $workers workers)"
    # A log of its own, made before the server starts, so that no line from
    # an earlier run is taken for this one's. timeout passes the signal on,
    # and stops a server that does not stop. --foreground: to the server
    # alone. Otherwise timeout also signals its process group and sends it
    # SIGCONT, which reaches LeakSanitizer's tracer as the server exits and
    # cancels the stop of a thread it is attaching to: the tracer then waits
    # forever (about one run in a hundred under load, with ASan).
    local log=$tmp/$prog-$io-$workers-$sig.log
    : >"$log"
    WEFT_IO=$io timeout --foreground -k 10 $((3 * limit)) $emu "$dir/$prog" --port 0 --workers "$workers" \
        >"$log" 2>&1 &
    local pid=$!
    for ((i = 0; i < 600; i++)); do   # up to a minute
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log")
        [ -z "$port" ] || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        fail "$what: no 'listening on' line in its log: $(cat "$log")"
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        return
    fi
    local reply=""
    if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
        request_of "$prog" >&3
        read -r -t $limit reply <&3
        reply=${reply%$'\r'}
    fi
    [ "$reply" = "$(answer_of "$prog")" ] ||
        fail "$what: answered '$reply', not '$(answer_of "$prog")'"
    kill -"$sig" "$pid"
    wait "$pid" || rc=$?
    local rest="unread"
    if [ -n "$reply" ]; then
        # The server closed the connection: the read meets the end once the
        # rest of the answer is read.
        rest=$(timeout $limit cat <&3 >/dev/null && echo closed)
    fi
    exec 3<&- 3>&-
    if [ "$rc" -ne 0 ]; then
        fail "$what: exited $rc on SIG$sig; log: $(cat "$log")"
    elif [ "$rest" != closed ]; then
        fail "$what: the client's connection was not closed at the stop"
    elif grep -q "dropping an idle client" "$log"; then
        fail "$what: the connection was left to its idle deadline, not closed at the stop"
    elif ! grep -q "stopping" "$log"; then
        fail "$what: no 'stopping' line in its log: $(cat "$log")"
    else
        pass
    fi
}

# check_udp IO WORKERS SIGNAL: udp_echo logs its address, echoes a datagram
# (bash's /dev/udp: a connected UDP socket), and stops with status 0 on the
# signal.
check_udp() {
    local io=$1 workers=$2 sig=$3 port="" rc=0 i reply=""
    local what="udp_echo ($io, $workers workers)"
    local log=$tmp/udp_echo-$io-$workers-$sig.log
    : >"$log"
    WEFT_IO=$io timeout --foreground -k 10 $((3 * limit)) $emu "$dir/udp_echo" --port 0 --workers "$workers" \
        >"$log" 2>&1 &
    local pid=$!
    for ((i = 0; i < 600; i++)); do
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log")
        [ -z "$port" ] || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        fail "$what: no 'listening on' line in its log: $(cat "$log")"
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        return
    fi
    if exec 3<>"/dev/udp/127.0.0.1/$port"; then
        printf 'ping\n' >&3
        # head reads with a large buffer: a read(2) takes a whole datagram,
        # where bash's read would take its first byte and drop the rest.
        reply=$(timeout $limit head -c 5 <&3)
        exec 3<&- 3>&-
    fi
    [ "$reply" = ping ] || fail "$what: echoed '$reply', not 'ping'"
    kill -"$sig" "$pid"
    wait "$pid" || rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "$what: exited $rc on SIG$sig; log: $(cat "$log")"
    elif ! grep -q "stopping" "$log"; then
        fail "$what: no 'stopping' line in its log: $(cat "$log")"
    else
        pass
    fi
}

for io in $backends; do
    export WEFT_IO=$io

    if run hello 1000 && grep -q 'sum of their numbers 499500 (expected 499500)' "$tmp/out"; then
        pass
    else
        fail "hello 1000 ($io): $(cat "$tmp/out" "$tmp/err")"
    fi

    if run fork_join_sum 300000; then
        expected=$(sed -n 's/^expected: *sum \([0-9][0-9]*\)$/\1/p' "$tmp/out")
        sums=$(grep -v '^expected' "$tmp/out" | sed -n 's/.* sum \([0-9][0-9]*\).*/\1/p')
        if [ -n "$expected" ] && [ "$(echo "$sums" | wc -l)" -eq 2 ] &&
           ! echo "$sums" | grep -qvx "$expected"; then
            pass
        else
            fail "fork_join_sum ($io): the sums ($sums) are not the expected one ($expected): $(cat "$tmp/out")"
        fi
    else
        fail "fork_join_sum 300000 ($io) exited non-zero: $(cat "$tmp/out" "$tmp/err")"
    fi

    for ex in producer_consumer pipeline; do
        if run "$ex"; then pass; else fail "$ex ($io) exited non-zero: $(cat "$tmp/err")"; fi
    done

    # cat: standard input with no argument and with "-", between files, and a
    # missing file named in the message.
    if timeout $limit $emu "$dir/cat" <"$tmp/big" >"$tmp/out" 2>"$tmp/err" && cmp -s "$tmp/big" "$tmp/out"; then
        pass
    else
        fail "cat ($io) with no argument does not copy standard input: $(cat "$tmp/err")"
    fi
    if seq 1 60000 | timeout $limit $emu "$dir/cat" - >"$tmp/out" 2>"$tmp/err" && cmp -s "$tmp/big" "$tmp/out"; then
        pass
    else
        fail "cat - ($io) does not copy a pipe on standard input: $(cat "$tmp/err")"
    fi
    command cat "$tmp/small" "$tmp/big" "$tmp/small" >"$tmp/want"
    if timeout $limit $emu "$dir/cat" "$tmp/small" - "$tmp/small" <"$tmp/big" >"$tmp/out" 2>"$tmp/err" &&
       cmp -s "$tmp/want" "$tmp/out"; then
        pass
    else
        fail "cat FILE - FILE ($io) does not keep the order: $(cat "$tmp/err")"
    fi
    # A terminal on standard input is the shell's too: cat leaves its flags
    # as it found them (the epoll backend makes it O_NONBLOCK while in use).
    flags=$( (timeout $limit $emu "$dir/cat" >/dev/null 2>&1
              awk '/^flags/ { print $2 }' "/proc/$BASHPID/fdinfo/0") < <(printf 'x\n'))
    if [ -n "$flags" ] && (((8#$flags & 8#4000) == 0)); then
        pass
    else
        fail "cat ($io) left its standard input O_NONBLOCK (flags $flags)"
    fi
    rc=0
    run cat "$tmp/small" "$tmp/missing" </dev/null || rc=$?
    if [ "$rc" -eq 1 ] && grep -qF "$tmp/missing" "$tmp/err" && cmp -s "$tmp/small" "$tmp/out"; then
        pass
    else
        fail "cat ($io) with a missing file: exit $rc, stderr: $(cat "$tmp/err")"
    fi

    for prog in echo_server http_server kv_server; do
        for workers in 1 2 4; do
            check_server "$prog" "$io" "$workers" TERM
        done
        check_server "$prog" "$io" 2 INT
    done
    for workers in 1 2 4; do
        check_udp "$io" "$workers" TERM
    done
    check_udp "$io" 2 INT
done

echo "examples: $passed passed, $failed failed"
[ $failed -eq 0 ]
