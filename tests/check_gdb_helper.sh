#!/bin/sh
# Usage: check_gdb_helper.sh GDB_TARGET WEFT_PY
# The gdb helper (share/weft/gdb/weft.py) on a live process (gdb -p) and on a
# core file of it: `info weft` lists the two waiting coroutines with their
# names and wait reasons, and `weft bt N` unwinds each down to a frame below
# its entry function and ends at weft__ctx_entry.
#
# The core file is the kernel's, from SIGABRT with `ulimit -c unlimited`, where
# kernel.core_pattern writes a file; where it pipes to a handler (systemd-
# coredump, apport), gdb's gcore writes one instead. gcore reads memory a
# megabyte at a time and loses a whole megabyte where it meets a guard region
# installed with MADV_GUARD_INSTALL (Linux 6.13 and later), which weft uses for
# its stack guards: such a core lacks the coroutines' stacks, and that part of
# the check is skipped, saying so. Exits 77 (a skip) when gdb is missing.
set -u
target=$1 helper=$2
gdb=$(command -v gdb) || { echo "SKIP: gdb is not installed"; exit 77; }
tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail=0

# Starts the target in $tmp with cores allowed; sets pid once it is ready.
start() {
    (cd "$tmp" && ulimit -c unlimited 2>/dev/null; exec "$target") >"$tmp/out" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        grep -q '^ready' "$tmp/out" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "FAIL: the target did not get ready:"; cat "$tmp/out"
    exit 1
}

gdb_run() {   # gdb_run ARGS...: the helper's commands, output to stdout
    "$gdb" -batch -nx -ex 'set debuginfod enabled off' -ex 'set pagination off' \
        -ex "source $helper" -ex 'info weft' -ex 'weft bt 1' -ex 'weft bt 2' "$@" 2>&1
}

# check WHAT OUTPUT: what both the live process and the core must show
check() {
    what=$1 out=$2
    for want in '"gdb-receiver"' '"gdb-sleeper"' 'chan receive 0x' 'sleep' \
                '2 coroutines' 'created by main' \
                'in gdb_wait_on_channel' 'in gdb_receiver' 'in gdb_nap' 'in gdb_sleeper'; do
        if ! printf '%s\n' "$out" | grep -qF -- "$want"; then
            echo "FAIL ($what): no \"$want\" in:"; printf '%s\n' "$out"; fail=1; return
        fi
    done
    # Each backtrace ends at weft__ctx_entry, a frame below the entry function.
    n=$(printf '%s\n' "$out" | grep -c 'in weft__ctx_entry\|in weft\.ctx_entry')
    if [ "$n" -ne 2 ]; then
        echo "FAIL ($what): $n backtraces end at weft__ctx_entry, not 2:"; printf '%s\n' "$out"; fail=1; return
    fi
    if printf '%s\n' "$out" | grep -q 'Python Exception\|Traceback\|Backtrace stopped'; then
        echo "FAIL ($what): the helper or the unwinder complained:"; printf '%s\n' "$out"; fail=1; return
    fi
    echo "ok: $what"
}

start
live=$(gdb_run -p "$pid")
check "live process" "$live"

# A core file: the kernel's where it writes files, else gcore's.
pattern=$(cat /proc/sys/kernel/core_pattern 2>/dev/null || echo '|')
core=
case $pattern in
'|'*) ;;
*)
    # A relative pattern writes into the target's directory, $tmp, where
    # nothing else is named so; an absolute one into its own directory, where
    # the new core is the file that was not there before.
    dir=$tmp
    case $pattern in */*) dir=$(dirname "$pattern") ;; esac
    case $dir in *%*) dir= ;; esac
    [ -n "$dir" ] && ls "$dir" >"$tmp/before" 2>/dev/null
    kill -ABRT "$pid"
    wait "$pid" 2>/dev/null
    pid=
    if [ -n "$dir" ]; then
        ls "$dir" 2>/dev/null | while read -r f; do
            case $f in *core*) grep -qxF -- "$f" "$tmp/before" || echo "$dir/$f" ;; esac
        done >"$tmp/new"
        core=$(head -n 1 "$tmp/new")
    fi
    ;;
esac
how="kernel core file"
if [ -z "$core" ]; then
    how="gcore core file"
    [ -z "$pid" ] && start
    "$gdb" -batch -nx -p "$pid" -ex "generate-core-file $tmp/gcore" >/dev/null 2>&1
    core=$tmp/gcore
    if [ ! -s "$core" ]; then
        echo "FAIL: no core file could be made (core_pattern: $pattern)"; exit 1
    fi
fi
dead=$(gdb_run "$target" "$core")
# gcore and guard regions (see the top): Linux 6.13 and later.
guards=no
case $(uname -r) in
[7-9].* | [1-9][0-9].* | 6.1[3-9]* | 6.[2-9][0-9]*) guards=yes ;;
esac
if [ "$how" = "gcore core file" ] && [ "$guards" = yes ]; then
    echo "skipped: a $how on Linux $(uname -r), which has guard regions, lacks weft's memory (see the top of this script)"
else
    check "$how" "$dead"
fi
[ "$how" = "kernel core file" ] && rm -f "$core"

if [ "$fail" -eq 0 ]; then
    echo "gdb helper: passed"
fi
exit "$fail"
