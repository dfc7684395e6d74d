/* SPDX-License-Identifier: MIT */
/*
 * A small stand-in for the part of Criterion that weft's suites use.
 *
 * Why it exists: Criterion cannot run in two of the configurations CI tests.
 *   - Under ThreadSanitizer: Criterion's inheritable process arena is mapped
 *     where TSan's shadow memory must go, and the runner crashes before any
 *     test starts.
 *   - In the AArch64 build under qemu-user: Debian's arm64 Criterion is a
 *     shared library only (and cannot be installed beside the amd64 one),
 *     while qemu-user hangs in dynamically linked programs that start
 *     threads, so the suites there are linked statically, against this.
 *
 * What it does as Criterion does: each test runs in a child process of its
 * own (in a process group of its own); .signal names the signal a test must
 * die of; .disabled skips it; .timeout (seconds) kills the test's process
 * group once it has run that long, and the test fails with a message that
 * names the timeout; cr_skip() skips from inside a test. A failed assertion
 * prints the file and line, the expression, the message given to it, and,
 * for the comparisons (cr_assert_eq and the others), the value of each side,
 * each evaluated once.
 *
 * Of the command-line options it takes --filter (a glob on "suite/name") and
 * ignores the others. It leaves out parallel jobs, fixtures, parameterised
 * tests and the "new" assertion API.
 */
#ifndef WEFT_CRITERION_SHIM_H
#define WEFT_CRITERION_SHIM_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct shim_test {
    const char       *suite, *name;
    void            (*fn)(void);
    int               signal;     /* the signal the test must die of, or 0 */
    int               disabled;
    double            timeout;    /* seconds; 0: none */
    struct shim_test *next;
};

void shim_register(struct shim_test *t);

/* One side of a failed comparison, kept as its kind and its value. */
struct shim_value {
    enum { SHIM_SIGNED, SHIM_UNSIGNED, SHIM_FLOAT, SHIM_POINTER } kind;
    union {
        intmax_t    i;
        uintmax_t   u;
        double      f;
        const void *p;
    };
};

static inline struct shim_value shim_signed(intmax_t v) { return (struct shim_value){ .kind = SHIM_SIGNED, .i = v }; }
static inline struct shim_value shim_unsigned(uintmax_t v) { return (struct shim_value){ .kind = SHIM_UNSIGNED, .u = v }; }
static inline struct shim_value shim_float(double v) { return (struct shim_value){ .kind = SHIM_FLOAT, .f = v }; }
static inline struct shim_value shim_pointer(const volatile void *v) { return (struct shim_value){ .kind = SHIM_POINTER, .p = (const void *)v }; }

/* The value of x, by its type: integers of every width and sign, floating
 * point, and anything else (a pointer) as an address. */
#define SHIM_VALUE(x) _Generic((x),                                                  \
    _Bool: shim_unsigned, char: shim_signed, signed char: shim_signed,              \
    short: shim_signed, int: shim_signed, long: shim_signed, long long: shim_signed, \
    unsigned char: shim_unsigned, unsigned short: shim_unsigned,                     \
    unsigned int: shim_unsigned, unsigned long: shim_unsigned,                       \
    unsigned long long: shim_unsigned,                                               \
    float: shim_float, double: shim_float, long double: shim_float,                  \
    default: shim_pointer)(x)

/* The assertion reports; fmt is the message given to the assertion ("" for
 * none, hence no warning about an empty format), printf-style. Each ends the
 * test. */
#pragma GCC diagnostic ignored "-Wformat-zero-length"
_Noreturn void shim_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
_Noreturn void shim_fail_cmp(const char *file, int line, const char *a, const char *op, const char *b,
                             struct shim_value va, struct shim_value vb, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
_Noreturn void shim_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define Test(s_, n_, ...)                                                            \
    static void s_##_##n_##_impl(void);                                              \
    static struct shim_test s_##_##n_##_desc = {                                     \
        .suite = #s_, .name = #n_, .fn = s_##_##n_##_impl, __VA_ARGS__ };            \
    __attribute__((constructor)) static void s_##_##n_##_reg(void)                   \
    {                                                                                 \
        shim_register(&s_##_##n_##_desc);                                            \
    }                                                                                 \
    static void s_##_##n_##_impl(void)

/* The message arguments are Criterion's: an optional format string literal
 * and its arguments; "" before them makes an absent one the empty string. */
#define cr_assert(cond, ...) \
    do { if (!(cond)) shim_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__); } while (0)

/* Each side is evaluated once, into a variable of its own type, so that a
 * side with effects (a call) is not made twice to print it. A constant side
 * copied so loses the exemption from -Wsign-compare that the compiler grants
 * a non-negative constant; the builds on real Criterion keep that warning. */
#define SHIM_CMP(a, op, b, ...)                                                           \
    do {                                                                                  \
        __typeof__(a) shim_a_ = (a);                                                      \
        __typeof__(b) shim_b_ = (b);                                                      \
        _Pragma("GCC diagnostic push")                                                    \
        _Pragma("GCC diagnostic ignored \"-Wsign-compare\"")                              \
        if (!(shim_a_ op shim_b_))                                                        \
            shim_fail_cmp(__FILE__, __LINE__, #a, #op, #b, SHIM_VALUE(shim_a_),           \
                          SHIM_VALUE(shim_b_), "" __VA_ARGS__);                           \
        _Pragma("GCC diagnostic pop")                                                     \
    } while (0)

#define cr_assert_eq(a, b, ...)     SHIM_CMP(a, ==, b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...)    SHIM_CMP(a, !=, b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...)     SHIM_CMP(a, >, b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...)    SHIM_CMP(a, >=, b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...)     SHIM_CMP(a, <, b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...)    SHIM_CMP(a, <=, b, __VA_ARGS__)
#define cr_assert_null(p, ...)      SHIM_CMP(p, ==, NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...)  SHIM_CMP(p, !=, NULL, __VA_ARGS__)
#define cr_skip(...)                shim_skip("" __VA_ARGS__)
/* Criterion prints info logs only when asked to be verbose: the stand-in
 * never is, but checks and evaluates the arguments all the same. */
__attribute__((format(printf, 1, 2))) static inline void shim_log_info(const char *fmt, ...) { (void)fmt; }
#define cr_log_info(...)            shim_log_info(__VA_ARGS__)

#endif
