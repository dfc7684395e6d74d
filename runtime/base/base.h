/* SPDX-License-Identifier: MIT */
/*
 * The basics every file of the runtime shares, and nothing else: visibility,
 * the invariant check and the misuse report, the spin hint, the full fence,
 * the thread-local model, and the glue for the sanitizers and Valgrind. It
 * depends on nothing else in runtime/ (the layering rule: docs/design.md).
 */
#ifndef WEFT_BASE_H
#define WEFT_BASE_H

#include "weft.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WEFT__HIDDEN __attribute__((visibility("hidden")))
#define WEFT__NOINLINE __attribute__((noinline))
#define WEFT__COLD __attribute__((cold, noinline))
#define WEFT__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define WEFT__CACHELINE 64

/*
 * weft's thread-locals. The initial-exec model reads one at a fixed offset
 * from the thread pointer; the default for position-independent code, which
 * the shared library is, calls __tls_get_addr on every read instead, and the
 * current worker is read eight times per spawn and join, which costs a
 * tenth more instructions (callgrind on `weft-bench spawn`). The price
 * is a few dozen bytes of the static TLS block that glibc reserves for
 * libraries loaded with dlopen (tests/check_dlopen.c loads it so).
 */
#define WEFT__TLS _Thread_local __attribute__((tls_model("initial-exec")))

/*
 * Stops the program with a message naming the broken invariant. Kept in release
 * builds: each use is cheap and guards a state that would otherwise corrupt
 * memory silently.
 */
#define weft__check(cond, msg) \
    do { if (WEFT__UNLIKELY(!(cond))) weft__panic(__FILE__, __LINE__, msg); } while (0)
_Noreturn WEFT__COLD void weft__panic(const char *file, int line, const char *msg);
/* What weft__panic writes after its message, set by a layer above (the core
 * sets it to write the running coroutine's part of the dump, core/fatal.c);
 * NULL: nothing. Base calls nothing of the layers above directly. */
extern void (*_Atomic weft__panic_context)(int fd);

/* Misuse that debug builds turn into an abort, release builds into an error. */
#ifdef NDEBUG
#define weft__misuse(msg, err) (err)
#else
#define weft__misuse(msg, err) (weft__panic(__FILE__, __LINE__, msg), (err))
#endif

/* A spin-wait hint to the CPU. */
#if defined(__x86_64__)
#define weft__cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define weft__cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define weft__cpu_relax() ((void)0)
#endif

/* ---- sanitizer and Valgrind glue ------------------------------------------ */

#if defined(__SANITIZE_ADDRESS__)
#define WEFT__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT__ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define WEFT__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT__TSAN 1
#endif
#endif

/*
 * A full fence. ThreadSanitizer does not model fences (gcc warns, and TSan
 * would report the races they prevent), so TSan builds use a seq_cst
 * read-modify-write of one shared word instead: for the store-fence-load
 * (Dekker) pairs weft uses, the total order of those RMWs orders the pair the
 * same way, and TSan understands it.
 */
#if defined(WEFT__TSAN)
extern _Atomic unsigned weft__tsan_fence_word;
#define weft__fence() \
    ((void)atomic_fetch_add_explicit(&weft__tsan_fence_word, 0, memory_order_seq_cst))
#else
#define weft__fence() atomic_thread_fence(memory_order_seq_cst)
#endif

/*
 * Valgrind, in one place. Under it weft changes a few choices (the backend,
 * the search's spinning, how long a ring sleep may last) and registers its
 * stacks; without its headers the program never runs under it as far as weft
 * knows, and the requests are no-ops.
 */
#if __has_include(<valgrind/valgrind.h>) && __has_include(<valgrind/memcheck.h>)
#include <valgrind/valgrind.h>
#include <valgrind/memcheck.h>
#define weft__on_valgrind() ((bool)RUNNING_ON_VALGRIND)
#define weft__vg_stack_register(lo, hi) ((unsigned)VALGRIND_STACK_REGISTER(lo, hi))
#define weft__vg_stack_deregister(id) VALGRIND_STACK_DEREGISTER(id)
#define weft__vg_mark_defined(p, n) ((void)VALGRIND_MAKE_MEM_DEFINED(p, n))
#else
#define weft__on_valgrind() false
#define weft__vg_stack_register(lo, hi) ((void)(lo), (void)(hi), 0u)
#define weft__vg_stack_deregister(id) ((void)(id))
#define weft__vg_mark_defined(p, n) ((void)(p), (void)(n))
#endif
#endif /* WEFT_BASE_H */
