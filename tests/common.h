/* Helpers shared by the test suites. */
#ifndef WEFT_TEST_COMMON_H
#define WEFT_TEST_COMMON_H

#include <criterion/criterion.h>
#include <weft.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WEFT_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define WEFT_TEST_SANITIZED 1
#endif
#endif
#ifndef WEFT_TEST_SANITIZED
#define WEFT_TEST_SANITIZED 0
#endif

#if defined(__SANITIZE_THREAD__)
#define WEFT_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT_TEST_TSAN 1
#endif
#endif
#ifndef WEFT_TEST_TSAN
#define WEFT_TEST_TSAN 0
#endif

/* Instrumented runs are 20-100 times slower, and ThreadSanitizer counts every
 * live coroutine as a thread (at most 8128): big counts shrink there. */
static inline size_t scaled(size_t n)
{
    if (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND) {
        size_t m = n / 100;
        return m ? m : 1;
    }
    return n;
}

/* Set by scripts/dev for runs under qemu-user, which accepts madvise() without
 * doing anything (so no guard pages) and ignores the guest's RLIMIT_AS. */
static inline bool emulated(void)
{
    return getenv("WEFT_TEST_EMULATED") != NULL;
}

/* The worker counts every scheduler test runs with. */
static const unsigned sweep_workers[] = { 1, 2, 4 };
#define SWEEP_N (sizeof(sweep_workers) / sizeof(sweep_workers[0]))

/* Runs fn(arg) as the first coroutine of a fresh runtime with `workers` workers
 * and returns its result; the runtime's own errors fail the test. */
static inline void *run_with(unsigned workers, weft_fn fn, void *arg)
{
    weft_config cfg = { .workers = workers };
    void *result = (void *)0xdead;
    int err = weft_main(&cfg, fn, arg, &result);
    cr_assert_eq(err, 0, "weft_main with %u workers failed: %d", workers, err);
    return result;
}

#endif
