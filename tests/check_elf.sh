#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: check_elf.sh LIBWEFT.so EXECUTABLE ARCH SWITCH_OBJECT
# Checks what the linker and the assembler were asked to promise.
set -u
lib=$1 exe=$2 arch=$3 obj=$4
fail=0
stack=$(readelf -lW "$exe" | awk '/GNU_STACK/ {print $7}')
if [ "$stack" != "RW" ]; then
    echo "FAIL: $exe has GNU_STACK flags '$stack', expected RW (no executable stack)"
    fail=1
fi
others=$(nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//' | grep -v '^weft_' | grep -v '^WEFT_0$' | grep -v '^WEFT_PRIVATE$')
if [ -n "$others" ]; then
    echo "FAIL: $lib exports names outside weft_*: $others"
    fail=1
fi
if nm -D --undefined-only "$lib" | grep -q '__tls_get_addr'; then
    echo "FAIL: $lib reads its thread-locals through __tls_get_addr (see WEFT__TLS in runtime/base/base.h)"
    fail=1
fi
case $arch in
    x86_64)  want="IBT" ;;
    aarch64) want="BTI" ;;
esac
if ! readelf -n "$obj" | grep -q "$want"; then
    echo "FAIL: $obj has no $want property note"
    fail=1
fi
if readelf -n "$obj" | grep -q "SHSTK"; then
    echo "FAIL: $obj claims shadow-stack compatibility, which the switch does not provide"
    fail=1
fi
[ $fail -eq 0 ] && echo "elf properties: 1 passed, 0 failed"
exit $fail
