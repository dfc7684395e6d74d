/* SPDX-License-Identifier: MIT */
/*
 * switch: hand a token between two tasks, the cost of one hand-over. weft:
 * weft_yield between two coroutines on one worker, and a token sent back and
 * forth on two unbuffered channels; pthreads: a mutex+condvar ping-pong and a
 * bare futex ping-pong. Also the raw context switch, the internal
 * weft__ctx_swap between two contexts with no scheduler at all (arch/ctx.h),
 * which is why this target sees arch/.
 */
#include "bench.h"

#include <weft.h>
#include "ctx.h"

#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static int futex(atomic_int *addr, int op, int val)
{
    return (int)syscall(SYS_futex, (int *)addr, op, val, NULL, NULL, 0);
}

/* Raw: two contexts swap back and forth with the internal assembly routine. */
static weft__ctx raw_main, raw_other;
static long raw_left;

static void raw_entry(void *arg)
{
    (void)arg;
    for (;;)
        weft__ctx_swap(&raw_other, &raw_main);
}

static double raw_switch(void)
{
    size_t sz = 64 * 1024;
    char *stack = malloc(sz);
    weft__ctx_init(&raw_other, stack, stack + sz, raw_entry, NULL);
    long n = opt.raw_iters;
    uint64_t t0 = now_ns();
    for (raw_left = n; raw_left > 0; raw_left--)
        weft__ctx_swap(&raw_main, &raw_other);
    uint64_t t1 = now_ns();
    free(stack);
    return (double)(t1 - t0) / (2.0 * (double)n);
}

/* weft_yield between two coroutines on one worker. */
static atomic_long yields;

static void *yielder(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++) {
        atomic_fetch_add_explicit(&yields, 1, memory_order_relaxed);
        weft_yield();
    }
    return NULL;
}

static void *yield_root(void *arg)
{
    weft_task *a, *b;
    long n = opt.yield_iters;
    atomic_store(&yields, 0);
    uint64_t t0 = now_ns();
    check(weft_spawn(&a, yielder, (void *)(intptr_t)n), "weft_spawn");
    check(weft_spawn(&b, yielder, (void *)(intptr_t)n), "weft_spawn");
    check(weft_join(a, NULL), "weft_join");
    check(weft_join(b, NULL), "weft_join");
    uint64_t t1 = now_ns();
    if (atomic_load(&yields) != 2 * n)
        fail("switch: yield count");
    *(double *)arg = (double)(t1 - t0) / (2.0 * (double)n);
    return NULL;
}

/* pthreads: mutex + condvar ping-pong of a token. */
static struct {
    pthread_mutex_t m;
    pthread_cond_t  c;
    long turn;       /* even: thread A's turn, odd: B's */
    long n;
} pp = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };

static void *cond_player(void *arg)
{
    long me = (long)(intptr_t)arg;
    pthread_mutex_lock(&pp.m);
    while (pp.turn < 2 * pp.n) {
        while ((pp.turn & 1) != me && pp.turn < 2 * pp.n)
            pthread_cond_wait(&pp.c, &pp.m);
        if (pp.turn >= 2 * pp.n)
            break;
        pp.turn++;
        pthread_cond_signal(&pp.c);
    }
    pthread_mutex_unlock(&pp.m);
    return NULL;
}

static double cond_pingpong(void)
{
    pthread_t a, b;
    pp.turn = 0;
    pp.n = opt.cond_iters;
    uint64_t t0 = now_ns();
    start_thread(&a, NULL, cond_player, (void *)0);
    start_thread(&b, NULL, cond_player, (void *)1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    uint64_t t1 = now_ns();
    if (pp.turn != 2 * pp.n)
        fail("switch: condvar token count");
    return (double)(t1 - t0) / (2.0 * (double)pp.n);
}

/* pthreads: a futex word flips between 0 (A's turn) and 1 (B's turn). The
 * player whose turn it is counts the hand-over in ftoken, so a turn taken
 * twice or skipped shows in the final count. */
static atomic_int fword;
static long fiters;
static long ftoken;   /* written only by the player whose turn it is */

static void *futex_player(void *arg)
{
    int me = (int)(intptr_t)arg;
    for (long i = 0; i < fiters; i++) {
        int v;
        while ((v = atomic_load_explicit(&fword, memory_order_acquire)) != me)   /* pairs with the other's release */
            futex(&fword, FUTEX_WAIT_PRIVATE, v);
        ftoken++;
        atomic_store_explicit(&fword, !me, memory_order_release);   /* hands ftoken over */
        futex(&fword, FUTEX_WAKE_PRIVATE, 1);
    }
    return NULL;
}

static double futex_pingpong(void)
{
    pthread_t a, b;
    atomic_store(&fword, 0);
    fiters = opt.futex_iters;
    ftoken = 0;
    uint64_t t0 = now_ns();
    start_thread(&a, NULL, futex_player, (void *)0);
    start_thread(&b, NULL, futex_player, (void *)1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    uint64_t t1 = now_ns();
    if (ftoken != 2 * fiters || atomic_load(&fword) != 0)
        fail("switch: futex token count");
    return (double)(t1 - t0) / (2.0 * (double)fiters);
}

/* weft: a token goes out on one unbuffered channel and comes back, one higher,
 * on another; each leg is one hand-over from coroutine to coroutine. */
static weft_chan *ping, *pong;

static void *chan_echo(void *arg)
{
    long n = (long)(intptr_t)arg;
    uint64_t tok;
    for (long i = 0; i < n; i++) {
        check(weft_chan_recv(ping, &tok), "weft_chan_recv");
        tok++;
        check(weft_chan_send(pong, &tok), "weft_chan_send");
    }
    return NULL;
}

static void *handoff_root(void *arg)
{
    long n = opt.handoff_iters;
    uint64_t tok = 0;
    weft_task *t;
    check(weft_chan_create(&ping, sizeof tok, 0), "weft_chan_create");
    check(weft_chan_create(&pong, sizeof tok, 0), "weft_chan_create");
    check(weft_spawn(&t, chan_echo, (void *)(intptr_t)n), "weft_spawn");
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        tok++;
        check(weft_chan_send(ping, &tok), "weft_chan_send");
        check(weft_chan_recv(pong, &tok), "weft_chan_recv");
    }
    uint64_t t1 = now_ns();
    check(weft_join(t, NULL), "weft_join");
    check(weft_chan_destroy(ping), "weft_chan_destroy");
    check(weft_chan_destroy(pong), "weft_chan_destroy");
    if (tok != 2 * (uint64_t)n)
        fail("switch: channel token count");
    *(double *)arg = (double)(t1 - t0) / (2.0 * (double)n);
    return NULL;
}

void bench_switch(void)
{
    double raw[RUNS_MAX], y[RUNS_MAX], ch[RUNS_MAX], chw[RUNS_MAX], c[RUNS_MAX], fx[RUNS_MAX];
    weft_config one = { .workers = 1 }, every = { .workers = workers() };
    for (int r = 0; r < opt.runs; r++) {
        progress_run(r + 1, opt.runs);
        progress_note("raw context switch");
        raw[r] = raw_switch();
        progress_note("weft_yield");
        check(weft_main(&one, yield_root, &y[r], NULL), "weft_main");
        progress_note("weft_chan ping-pong");
        check(weft_main(&one, handoff_root, &ch[r], NULL), "weft_main");
        progress_note("weft_chan ping-pong, every worker");
        check(weft_main(&every, handoff_root, &chw[r], NULL), "weft_main");
        progress_note("pthreads, mutex+condvar ping-pong");
        c[r] = cond_pingpong();
        progress_note("pthreads, futex ping-pong");
        fx[r] = futex_pingpong();
    }
    add_row("switch", "switch_yield_vs_condvar", "weft_yield vs mutex+condvar", "ns", FASTER,
            y, c, opt.runs)->detail =
        "time per hand-over of a token between two tasks; weft: weft_yield between two "
        "coroutines on one worker; pthreads: mutex+condvar ping-pong";
    add_row("switch", "switch_yield_vs_futex", "weft_yield vs futex ping-pong", "ns", FASTER,
            y, fx, opt.runs)->detail =
        "time per hand-over; weft: weft_yield on one worker; pthreads: a bare futex "
        "wait/wake ping-pong, hand-overs counted and checked";
    add_row("switch", "switch_chan_vs_futex", "channel hand-over vs futex ping-pong", "ns",
            FASTER, ch, fx, opt.runs)->detail =
        "time per one-way hand-over; weft: two coroutines on one worker, an unbuffered "
        "weft_chan each way, token checked; pthreads: a bare futex wait/wake ping-pong";
    add_row("switch", "switch_chan_workers_vs_futex", "the same on every worker vs futex ping-pong",
            "ns", FASTER, chw, fx, opt.runs)->detail =
        "time per one-way hand-over; weft: the channel ping-pong above on a runtime with "
        "--workers (default: every CPU), where the pair should stay on one worker; "
        "pthreads: a bare futex wait/wake ping-pong";
    add_row("switch", "switch_raw_vs_futex", "raw context switch vs futex ping-pong", "ns",
            FASTER, raw, fx, opt.runs)->detail =
        "time per switch; weft: the internal weft__ctx_swap alone, no scheduler; "
        "pthreads: futex ping-pong";
    chart_group("switch.svg", "Hand a token between two tasks (time per hand-over)", "switch");
}
