#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the stand-in's self-test (selftest.c) and checks what it reports: the
# two values of a failed comparison and its message, a timeout that names
# itself and ends the test's whole process group, and the totals.
# Usage: check_shim.sh [EMULATOR...] SELFTEST_PROGRAM
set -u
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
SHIM_CHILD_PID_FILE=$dir/child "$@" >"$dir/out" 2>&1
rc=$?
cat "$dir/out"
fail() { echo "check_shim: $*" >&2; exit 1; }
[ "$rc" -eq 1 ] || fail "the runner exited with $rc, not 1"
expect() { grep -qF -- "$1" "$dir/out" || fail "missing from the output: $1"; }
expect "[RUN ] shim::each_side_of_a_comparison_is_evaluated_once"
expect "[PASS] shim::each_side_of_a_comparison_is_evaluated_once"
expect "[PASS] shim::a_test_may_die_of_the_signal_it_names"
expect "[SKIP] shim::a_test_that_skips_is_not_a_failure"
expect "assertion failed: small == big"
expect "left : small = -3"
expect "right: big = 40000000000"
expect "the message, formatted"
expect "assertion failed: p == NULL"
expect "[FAIL] shim::must_fail_a_comparison_of_pointers"
expect "[FAIL] shim::must_time_out: timed out: killed after its .timeout of 0.5 s"
expect "2 passed, 3 failed, 1 skipped"
[ -s "$dir/child" ] || fail "the timed-out test did not record its child"
child=$(cat "$dir/child")
sleep 0.2
state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$child/status" 2>/dev/null || true)
if [ -n "$state" ] && [ "$state" != Z ]; then
    kill -9 "$child"
    fail "the timed-out test's child $child outlived the timeout"
fi
echo "check_shim: passed"
