/*
 * A small stand-in for the part of Criterion that weft's suites use, for where
 * Criterion cannot run: under ThreadSanitizer (Criterion's inheritable arena
 * clashes with TSan's memory layout and it crashes before any test), and in the
 * AArch64 build under qemu-user, where dynamically linked programs that start
 * threads hang and Debian's arm64 Criterion is shared-only, so the suites are
 * linked statically. Each test runs in a child process, as under Criterion;
 * .signal and cr_skip behave the same. Assertion messages beyond the compared
 * expressions are not printed.
 */
#ifndef WEFT_CRITERION_SHIM_H
#define WEFT_CRITERION_SHIM_H

#include <stdio.h>
#include <stdlib.h>

struct shim_test {
    const char       *suite, *name;
    void            (*fn)(void);
    int               signal;     /* the signal the test must die of, or 0 */
    int               disabled;
    double            timeout;
    struct shim_test *next;
};

void shim_register(struct shim_test *t);
_Noreturn void shim_fail(const char *file, int line, const char *what);
_Noreturn void shim_skip(const char *why);

#define Test(s_, n_, ...)                                                            \
    static void s_##_##n_##_impl(void);                                              \
    static struct shim_test s_##_##n_##_desc = {                                     \
        .suite = #s_, .name = #n_, .fn = s_##_##n_##_impl, __VA_ARGS__ };            \
    __attribute__((constructor)) static void s_##_##n_##_reg(void)                   \
    {                                                                                 \
        shim_register(&s_##_##n_##_desc);                                            \
    }                                                                                 \
    static void s_##_##n_##_impl(void)

#define SHIM_CHECK(cond, what) \
    do { if (!(cond)) shim_fail(__FILE__, __LINE__, what); } while (0)
#define cr_assert(cond, ...)        SHIM_CHECK((cond), #cond)
#define cr_assert_eq(a, b, ...)     SHIM_CHECK((a) == (b), #a " == " #b)
#define cr_assert_neq(a, b, ...)    SHIM_CHECK((a) != (b), #a " != " #b)
#define cr_assert_gt(a, b, ...)     SHIM_CHECK((a) > (b), #a " > " #b)
#define cr_assert_geq(a, b, ...)    SHIM_CHECK((a) >= (b), #a " >= " #b)
#define cr_assert_lt(a, b, ...)     SHIM_CHECK((a) < (b), #a " < " #b)
#define cr_assert_leq(a, b, ...)    SHIM_CHECK((a) <= (b), #a " <= " #b)
#define cr_assert_null(p, ...)      SHIM_CHECK((p) == NULL, #p " == NULL")
#define cr_assert_not_null(p, ...)  SHIM_CHECK((p) != NULL, #p " != NULL")
#define cr_skip(...)                shim_skip(#__VA_ARGS__)
#define cr_log_info(...)            ((void)0)

#endif
