/* SPDX-License-Identifier: MIT */
/*
 * timers: how late sleepers wake. weft: many coroutines each in weft_sleep;
 * pthreads: threads in clock_nanosleep to an absolute deadline. Beside them,
 * the machine's own longest stall, to read the worst case against.
 */
#include "bench.h"

#include <weft.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * N sleepers each sleep one random duration of 10 to 100 ms, counted from the
 * moment the sleeper starts, and record how late they woke: the time read on
 * waking minus the deadline. A sleep must never end early, so a negative
 * lateness is a wrong answer. The percentiles are over every sleeper of a run.
 */
#define TIMER_MIN_NS  (10 * 1000000ull)
#define TIMER_SPAN_NS (90 * 1000000ull)
enum { TIMER_STACK = 64 * 1024 };

static int64_t *timer_late;     /* ns, one per sleeper; each written by its sleeper */
static atomic_long timer_early;  /* sleepers that woke before their deadline */
static weft_wg timer_wg = WEFT_WG_INIT;

/* Sleeper i's duration: the same for both sides within one run. */
static uint64_t timer_ns(long i, int run)
{
    return TIMER_MIN_NS + work((uint64_t)run << 32 | (uint64_t)i, 3) % (TIMER_SPAN_NS + 1);
}

static void timer_record(long i, uint64_t deadline, uint64_t woke)
{
    timer_late[i] = (int64_t)(woke - deadline);
    if (timer_late[i] < 0)
        atomic_fetch_add_explicit(&timer_early, 1, memory_order_relaxed);   /* read after the joins */
}

static int timer_run;   /* the run in progress, for timer_ns */

static void *timer_weft(void *arg)
{
    long i = (long)(intptr_t)arg;
    uint64_t d = timer_ns(i, timer_run);
    uint64_t deadline = weft_now() + d;
    check(weft_sleep(d), "weft_sleep");
    timer_record(i, deadline, weft_now());
    check(weft_wg_done(&timer_wg), "weft_wg_done");
    return NULL;
}

static void *timer_root(void *arg)
{
    (void)arg;
    check(weft_wg_add(&timer_wg, (int)opt.timer_weft), "weft_wg_add");
    for (long i = 0; i < opt.timer_weft; i++)
        check(weft_spawn(NULL, timer_weft, (void *)(intptr_t)i), "weft_spawn");
    check(weft_wg_wait(&timer_wg), "weft_wg_wait");
    return NULL;
}

static void *timer_thread(void *arg)
{
    long i = (long)(intptr_t)arg;
    uint64_t deadline = now_ns() + timer_ns(i, timer_run);
    struct timespec ts = { (time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u) };
    int rc;
    while ((rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)) == EINTR)
        ;
    if (rc != 0) {
        progress_clear();
        fprintf(stderr, "weft-bench: clock_nanosleep failed: %s\n", strerror(rc));
        exit(1);
    }
    timer_record(i, deadline, now_ns());
    return NULL;
}

/*
 * The machine's own stalls, to read the max row against: one thread per CPU
 * reads the clock in a loop and keeps the longest gap between two reads. Each
 * thread only spins, so a long gap is the machine's (a virtual CPU held back
 * by the host, an interrupt), not the scheduler's.
 */
enum { STALL_NS = 300 * 1000000 };

static void *stall_thread(void *arg)
{
    uint64_t last = now_ns(), end = last + STALL_NS, worst = 0, t;
    while ((t = now_ns()) < end) {
        if (t - last > worst)
            worst = t - last;
        last = t;
    }
    *(uint64_t *)arg = worst;
    return NULL;
}

/* The longest stall any CPU saw over STALL_NS, in us. */
static double machine_stall(void)
{
    pthread_t t[64];
    uint64_t worst[64], most = 0;
    int n = ncpus() < 64 ? ncpus() : 64;
    for (int i = 0; i < n; i++)
        start_thread(&t[i], NULL, stall_thread, &worst[i]);
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        if (worst[i] > most)
            most = worst[i];
    }
    return (double)most / 1e3;
}

/* Sorts the n lateness figures and stores p50, p99 and max in us; fails on
 * any sleeper that woke early. */
static void timer_summary(long n, const char *who, double *p50, double *p99, double *max)
{
    long early = atomic_load(&timer_early);
    if (early)
        fail("timers (%s): %ld of %ld sleepers woke before their deadline", who, early, n);
    sort_samples(timer_late, n);
    *p50 = (double)sample_at(timer_late, n, 0.50) / 1e3;
    *p99 = (double)sample_at(timer_late, n, 0.99) / 1e3;
    *max = (double)sample_at(timer_late, n, 1.00) / 1e3;
}

void bench_timers(void)
{
    double w50[RUNS_MAX], w99[RUNS_MAX], wmax[RUNS_MAX];
    double p50[RUNS_MAX], p99[RUNS_MAX], pmax[RUNS_MAX], stall[RUNS_MAX];
    weft_config cfg = { .workers = opt.workers };
    long n = opt.timer_weft > opt.timer_pth ? opt.timer_weft : opt.timer_pth;
    pthread_t *t = malloc((size_t)opt.timer_pth * sizeof *t);
    pthread_attr_t attr;
    timer_late = malloc((size_t)n * sizeof *timer_late);
    if (!t || !timer_late) {
        fprintf(stderr, "weft-bench: timers: out of memory\n");
        exit(1);
    }
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, TIMER_STACK);
    for (int r = 0; r < opt.runs; r++) {
        progress_run(r + 1, opt.runs);
        timer_run = r;
        progress_note("weft, %ld coroutines asleep", opt.timer_weft);
        atomic_store(&timer_early, 0);
        check(weft_main(&cfg, timer_root, NULL, NULL), "weft_main");
        timer_summary(opt.timer_weft, "weft", &w50[r], &w99[r], &wmax[r]);

        progress_note("pthreads, %ld threads asleep", opt.timer_pth);
        atomic_store(&timer_early, 0);
        for (long i = 0; i < opt.timer_pth; i++)
            start_thread(&t[i], &attr, timer_thread, (void *)(intptr_t)i);
        for (long i = 0; i < opt.timer_pth; i++)
            pthread_join(t[i], NULL);
        timer_summary(opt.timer_pth, "pthreads", &p50[r], &p99[r], &pmax[r]);
        progress_note("the machine's own stalls");
        stall[r] = machine_stall();
    }
    pthread_attr_destroy(&attr);
    free(t);
    free(timer_late);
    timer_late = NULL;
    static char detail[400], d_stall[240];
    char nw[32], np[32];
    grouped(nw, sizeof nw, opt.timer_weft);
    grouped(np, sizeof np, opt.timer_pth);
    snprintf(detail, sizeof detail,
             "how long after its deadline a sleeper wakes; weft: %s coroutines sleeping "
             "10-100 ms with weft_sleep; pthreads: %s threads, %d KiB stacks, clock_nanosleep "
             "to an absolute CLOCK_MONOTONIC deadline 10-100 ms ahead; each duration random, "
             "counted from the sleeper's start; a wake-up before the deadline fails the run",
             nw, np, TIMER_STACK / 1024);
    snprintf(d_stall, sizeof d_stall,
             "one thread per CPU reads the clock in a loop for %d ms, nothing else running; "
             "the longest gap between two reads: read the max rows against it",
             STALL_NS / 1000000);
    add_row("timers", "timer_late_p50", "lateness of a wake-up, median", "us", LOWER, w50, p50,
            opt.runs)->detail = detail;
    add_row("timers", "timer_late_p99", "lateness of a wake-up, p99", "us", LOWER, w99, p99,
            opt.runs)->detail = detail;
    add_row("timers", "timer_late_max", "lateness of a wake-up, worst", "us", LOWER, wmax, pmax,
            opt.runs)->detail = detail;
    row *m = add_row("timers", "machine_stall", "the machine's own longest stall", "us", LOWER,
                     NULL, stall, opt.runs);
    m->other = "machine";
    m->detail = d_stall;
    chart_group("timers.svg", "How late sleepers wake", "timers");
}
