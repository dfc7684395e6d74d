/* SPDX-License-Identifier: MIT */
/* The context switch: what a coroutine's registers and FP state look like
 * across switches. */
#include "common.h"

#include <fenv.h>
#include <stdint.h>

struct fp_probe {
    int before, after;   /* rounding mode seen by the changer, before/after yielding */
    int other;           /* rounding mode seen by a coroutine that changed nothing */
};

static void *fp_other(void *arg)
{
    struct fp_probe *p = arg;
    p->other = fegetround();
    return NULL;
}

static void *fp_changer(void *arg)
{
    struct fp_probe *p = arg;
    fesetround(FE_UPWARD);
    p->before = fegetround();
    weft_task *t;
    weft_spawn(&t, fp_other, p);
    weft_join(t, NULL);   /* the other coroutine runs while we are switched out */
    for (int i = 0; i < 100; i++)
        weft_yield();
    p->after = fegetround();
    fesetround(FE_TONEAREST);
    return NULL;
}

Test(ctx, keeps_the_rounding_mode_of_each_coroutine_to_itself)
{
    for (size_t i = 0; i < SWEEP_N; i++) {
        struct fp_probe p = { -1, -1, -1 };
        run_with(sweep_workers[i], fp_changer, &p);
        cr_assert_eq(p.before, FE_UPWARD);
        cr_assert_eq(p.other, FE_TONEAREST, "a new coroutine inherited another's rounding mode");
        cr_assert_eq(p.after, FE_UPWARD, "the rounding mode was lost across switches");
    }
}

/* A frame the compiler lays out assuming the ABI's 16-byte alignment at entry:
 * vector spills and aligned locals depend on it. */
static __attribute__((noinline)) uintptr_t callee_misalignment(void)
{
    return (uintptr_t)__builtin_frame_address(0) % 16;
}

static void *alignment_probe(void *arg)
{
    _Alignas(16) volatile char buf[16];
    buf[0] = 1;
    return (void *)((uintptr_t)buf % 16 + callee_misalignment());
}

Test(ctx, enters_a_coroutine_with_the_stack_aligned_for_vector_code)
{
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], alignment_probe, NULL), 0);
}

/* Many live values across switches: the compiler keeps some of them in
 * callee-saved registers, which the switch must preserve. */
static uint64_t mix(uint64_t a, uint64_t b) { return a * 6364136223846793005ull + b; }

static uint64_t churn(bool yield)
{
    uint64_t a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8;
    double x = 1.5, y = 2.5, z = 3.5;
    for (int i = 0; i < 2000; i++) {
        a = mix(a, h); b = mix(b, a); c = mix(c, b); d = mix(d, c);
        e = mix(e, d); f = mix(f, e); g = mix(g, f); h = mix(h, g);
        x = x * 1.0000001 + (double)(a & 7); y = y * 0.9999999 + x; z = z + y * 1e-9;
        if (yield && i % 7 == 0)
            weft_yield();
    }
    return a ^ b ^ c ^ d ^ e ^ f ^ g ^ h ^ (uint64_t)x ^ (uint64_t)y ^ (uint64_t)z;
}

static void *churner(void *arg)
{
    return (void *)(uintptr_t)churn(true);
}

static void *churn_many(void *arg)
{
    weft_task *t[8];
    for (int i = 0; i < 8; i++)
        weft_spawn(&t[i], churner, NULL);
    uintptr_t bad = 0, expect = (uintptr_t)arg;
    for (int i = 0; i < 8; i++) {
        void *r;
        weft_join(t[i], &r);
        bad += (uintptr_t)r != expect;
    }
    return (void *)bad;
}

Test(ctx, preserves_callee_saved_registers_across_switches)
{
    uintptr_t expect = (uintptr_t)churn(false);
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], churn_many, (void *)expect), 0,
                     "coroutines computed a different result when switched");
}
