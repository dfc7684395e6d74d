#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: check_backtrace.sh GDB HELLO
# Stops inside a coroutine and checks that the backtrace ends cleanly at the
# coroutine's entry, with no "Backtrace stopped" complaint.
set -u
out=$("$1" -batch -nx -ex 'set debuginfod enabled off' -ex 'break greet' -ex 'run 4' -ex 'bt' --args "$2" 4 2>&1)
last=$(printf '%s\n' "$out" | grep '^#' | tail -n 1)
# gdb prints the symbol as weft__ctx_entry, or as weft.ctx_entry for objects
# from clang's assembler.
case $last in
    *weft__ctx_entry* | *weft.ctx_entry*) ;;
    *) printf 'FAIL: the last frame is not weft__ctx_entry:\n%s\n' "$out"; exit 1 ;;
esac
if printf '%s\n' "$out" | grep -qi 'backtrace stopped\|corrupt stack'; then
    printf 'FAIL: the unwinder complained:\n%s\n' "$out"
    exit 1
fi
printf '%s\n' "$out" | grep '^#'
echo "gdb backtrace: 1 passed, 0 failed"
