/* Timers: weft_sleep() suspends only its coroutine, and wakes it at or after
 * its deadline. Outcomes only: lateness is measured in bench/. */
#include "common.h"

#include <stdatomic.h>
#include <stdint.h>

struct sleeper {
    uint64_t ns;
    int      late_or_on_time;   /* 1 when it woke at or after its deadline */
};

static void *sleep_once(void *arg)
{
    struct sleeper *s = arg;
    uint64_t start = weft_now();
    int r = weft_sleep(s->ns);
    s->late_or_on_time = r == 0 && weft_now() - start >= s->ns;
    return NULL;
}

static void *many_sleepers(void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    struct sleeper *s = calloc(n, sizeof *s);
    weft_task **t = calloc(n, sizeof *t);
    if (!s || !t)
        return (void *)1;
    for (size_t i = 0; i < n; i++) {
        s[i].ns = 1000000u + (i % 97) * 100000u;   /* 1 to 10.6 ms, interleaved */
        if (weft_spawn(&t[i], sleep_once, &s[i]) != 0)
            return (void *)2;
    }
    uintptr_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        weft_join(t[i], NULL);
        bad += !s[i].late_or_on_time;
    }
    free(s);
    free(t);
    return (void *)bad;
}

Test(timer, ten_thousand_sleepers_each_wake_at_or_after_their_deadline)
{
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], many_sleepers, (void *)scaled(10000)), 0);
}

static void *zero_sleep(void *arg)
{
    return (void *)(intptr_t)weft_sleep(0);
}

Test(timer, sleeping_zero_nanoseconds_returns_zero)
{
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((intptr_t)run_with(sweep_workers[i], zero_sleep, NULL), 0);
}

Test(timer, a_plain_thread_sleeps_like_nanosleep)
{
    uint64_t start = weft_now();
    cr_assert_eq(weft_sleep(2000000), 0);
    cr_assert_geq(weft_now() - start, 2000000u);
}

/* A sleeper does not hold up its worker: with one worker, a coroutine that
 * counts while another sleeps finishes first. */
static _Atomic int order;

static void *counter(void *arg)
{
    int *seen = arg;
    *seen = atomic_fetch_add(&order, 1);
    return NULL;
}

static void *sleeper_first(void *arg)
{
    int *seen = arg;
    weft_sleep(20000000);
    *seen = atomic_fetch_add(&order, 1);
    return NULL;
}

static void *sleep_while_another_runs(void *arg)
{
    int a = -1, b = -1;
    weft_task *ta, *tb;
    atomic_store(&order, 0);
    weft_spawn(&ta, sleeper_first, &a);
    weft_spawn(&tb, counter, &b);
    weft_join(ta, NULL);
    weft_join(tb, NULL);
    return (void *)(uintptr_t)(b == 0 && a == 1);
}

Test(timer, a_sleeping_coroutine_leaves_its_worker_to_others)
{
    cr_assert_eq((uintptr_t)run_with(1, sleep_while_another_runs, NULL), 1);
}
