/* Stacks: their size, their guard, and many of them at once. */
#include "common.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static int recurse(volatile char *prev, int depth)
{
    volatile char frame[256];
    frame[0] = (char)depth;
    frame[1] = prev ? prev[0] : 0;
    if (depth == -1)   /* never: keeps the compiler from calling this infinite */
        return 0;
    return recurse(frame, depth + 1) + frame[1];
}

static void *overflow(void *arg)
{
    return (void *)(intptr_t)recurse(NULL, 0);
}

Test(stack, an_overflow_stops_the_program_with_a_message, .signal = SIGABRT)
{
    if (RUNNING_ON_VALGRIND)
        cr_skip("Valgrind reports the overflow itself");
    if (emulated())
        cr_skip("qemu-user installs no guard pages");
    weft_config cfg = { .workers = 2, .stack_size = 64 * 1024 };
    weft_main(&cfg, overflow, NULL, NULL);
}

static void *use_stack(void *arg)
{
    size_t n = (size_t)arg;
    volatile char *big = __builtin_alloca(n);
    memset((char *)big, 7, n);
    uintptr_t sum = 0;
    for (size_t i = 0; i < n; i += 4096)
        sum += big[i];
    return (void *)sum;
}

Test(stack, a_coroutine_can_use_the_stack_size_it_asked_for)
{
    weft_config cfg = { .workers = 2, .stack_size = 64 * 1024 };
    void *r;
    size_t use = 48 * 1024;
    cr_assert_eq(weft_main(&cfg, use_stack, (void *)use, &r), 0);
    cr_assert_eq((uintptr_t)r, 7 * (use / 4096));
}

static _Atomic int gate_open;
static _Atomic size_t waiting;

static void *wait_at_gate(void *arg)
{
    atomic_fetch_add(&waiting, 1);
    while (!atomic_load(&gate_open))
        weft_yield();
    return arg;
}

static void *crowd(void *arg)
{
    size_t n = (size_t)arg;
    weft_task **t = malloc(n * sizeof(*t));
    for (size_t i = 0; i < n; i++)
        if (weft_spawn(&t[i], wait_at_gate, (void *)1) != 0)
            return (void *)0;
    while (atomic_load(&waiting) < n)
        weft_yield();
    atomic_store(&gate_open, 1);   /* all n are alive and blocked now */
    uintptr_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        void *r;
        weft_join(t[i], &r);
        sum += (uintptr_t)r;
    }
    free(t);
    return (void *)sum;
}

Test(stack, holds_a_hundred_thousand_blocked_coroutines_at_once)
{
    size_t n = scaled(100000);
    weft_config cfg = { .workers = 2, .stack_size = 16 * 1024 };
    void *r;
    cr_assert_eq(weft_main(&cfg, crowd, (void *)n, &r), 0);
    cr_assert_eq((uintptr_t)r, n);
}
