#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: check_install.sh SOURCE_DIR BUILD_DIR CC CMAKE GENERATOR
#
# Installs weft as a user would and builds a small program against each
# install, the way the README says:
#   - the build under test, installed with its own libdir (lib by default);
#   - a library-only build configured with a Debian multiarch libdir
#     (lib/<cpu>-linux-gnu, which GNUInstallDirs picks for a /usr prefix on
#     Debian), kept in BUILD_DIR/check-install so that later runs rebuild
#     only what changed.
# Against each: `pkg-config --cflags --libs weft` (the shared library),
# `-static` with `pkg-config --static` (libweft.a and what it needs), and a
# CMake project with find_package(weft) linking weft::weft and
# weft::weft_static. Every program runs and checks its answer.
#
# Exits 77 (a skip, for CTest) when pkg-config is missing.
set -u
src=$1 build=$2 cc=$3 cmake=$4 gen=$5

if ! command -v pkg-config >/dev/null 2>&1; then
    echo "SKIP: pkg-config is not installed; the install check needs it"
    exit 77
fi

work=$build/check-install
mkdir -p "$work"
passed=0 failed=0
pass() { passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

# Runs a command quietly; on failure prints its output and returns non-zero.
quiet() {
    log=$work/last.log
    if "$@" >"$log" 2>&1; then return 0; fi
    cat "$log"
    return 1
}

cat >"$work/prog.c" <<'EOF'
/* Runs a coroutine through the installed weft and checks its answer. */
#include <weft.h>
#include <stdio.h>

static void *square(void *arg)
{
    uintptr_t x = (uintptr_t)arg;
    weft_yield();
    return (void *)(x * x);
}

int main(void)
{
    void *r;
    int err = weft_main(NULL, square, (void *)7, &r);
    if (err || (uintptr_t)r != 49) {
        fprintf(stderr, "weft_main: %d, result %lu\n", err, (unsigned long)(uintptr_t)r);
        return 1;
    }
    printf("ok %d.%d.%d\n", WEFT_VERSION_MAJOR, WEFT_VERSION_MINOR, WEFT_VERSION_PATCH);
    return 0;
}
EOF

mkdir -p "$work/consumer"
cat >"$work/consumer/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(weft_consumer C)
find_package(weft 0.1 REQUIRED)
add_executable(prog_shared ../prog.c)
target_link_libraries(prog_shared PRIVATE weft::weft)
add_executable(prog_static ../prog.c)
target_link_libraries(prog_static PRIVATE weft::weft_static)
EOF

# Whether the toolchain can link a fully static program at all (libc.a).
printf 'int main(void) { return 0; }\n' >"$work/empty.c"
static_ok=0
"$cc" -static "$work/empty.c" -o "$work/empty" >/dev/null 2>&1 && static_ok=1

# Whether exe names libweft.so among the libraries it needs.
needs_libweft() {
    readelf -d "$1" 2>/dev/null | grep 'NEEDED' | grep -q 'libweft'
}

# check_prefix NAME PREFIX LIBDIR: builds and runs the programs against it.
check_prefix() {
    name=$1 prefix=$2 libdir=$3
    pcdir=$prefix/$libdir/pkgconfig
    if [ ! -f "$pcdir/weft.pc" ]; then
        fail "$name: no weft.pc in $pcdir"
        return
    fi
    out=$work/$name
    mkdir -p "$out"

    # The shared library, through pkg-config.
    flags=$(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs weft)
    if quiet "$cc" "$work/prog.c" $flags -o "$out/pc_shared" &&
       quiet env LD_LIBRARY_PATH="$prefix/$libdir" "$out/pc_shared"; then
        if needs_libweft "$out/pc_shared"; then pass; else fail "$name: pc_shared is not linked to libweft.so"; fi
    else
        fail "$name: pkg-config --cflags --libs weft ($flags)"
    fi

    # The static library, through pkg-config --static.
    if [ $static_ok -eq 1 ]; then
        flags=$(PKG_CONFIG_PATH=$pcdir pkg-config --static --cflags --libs weft)
        if quiet "$cc" -static "$work/prog.c" $flags -o "$out/pc_static" && quiet "$out/pc_static"; then
            if needs_libweft "$out/pc_static"; then fail "$name: pc_static needs libweft.so"; else pass; fi
        else
            fail "$name: -static with pkg-config --static --cflags --libs weft ($flags)"
        fi
    else
        echo "SKIP: $name: -static (this toolchain cannot link a static program)"
    fi

    # A CMake project, with find_package(weft).
    rm -rf "$out/consumer"
    if quiet "$cmake" -S "$work/consumer" -B "$out/consumer" -G "$gen" \
             -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" &&
       quiet "$cmake" --build "$out/consumer"; then
        found=$(sed -n 's/^weft_DIR:PATH=//p' "$out/consumer/CMakeCache.txt")
        case $found in
            "$prefix"/*) ;;
            *) fail "$name: find_package(weft) found $found, not the install in $prefix" ;;
        esac
        if quiet "$out/consumer/prog_shared" && needs_libweft "$out/consumer/prog_shared"; then
            pass
        else
            fail "$name: find_package(weft) with weft::weft"
        fi
        if quiet "$out/consumer/prog_static" && ! needs_libweft "$out/consumer/prog_static"; then
            pass
        else
            fail "$name: find_package(weft) with weft::weft_static"
        fi
    else
        fail "$name: a CMake project with find_package(weft)"
    fi
}

# 1. The build under test, with its own libdir.
libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:[A-Z]*=//p' "$build/CMakeCache.txt")
rm -rf "$work/prefix-default"
if quiet "$cmake" --install "$build" --prefix "$work/prefix-default"; then
    check_prefix default "$work/prefix-default" "${libdir:-lib}"
else
    fail "cmake --install $build"
fi

# 2. A multiarch libdir, two levels below the prefix.
multiarch=lib/$(uname -m)-linux-gnu
if quiet "$cmake" -S "$src" -B "$work/build-multiarch" -G "$gen" -DCMAKE_C_COMPILER="$cc" \
         -DCMAKE_INSTALL_LIBDIR="$multiarch" -DWEFT_BUILD_TESTS=OFF \
         -DWEFT_BUILD_EXAMPLES=OFF -DWEFT_BUILD_BENCH=OFF &&
   quiet "$cmake" --build "$work/build-multiarch" -j 2; then
    rm -rf "$work/prefix-multiarch"
    if quiet "$cmake" --install "$work/build-multiarch" --prefix "$work/prefix-multiarch"; then
        check_prefix multiarch "$work/prefix-multiarch" "$multiarch"
    else
        fail "cmake --install with libdir $multiarch"
    fi
else
    fail "building weft with libdir $multiarch"
fi

echo "install: $passed passed, $failed failed"
[ $failed -eq 0 ]
