/* SPDX-License-Identifier: MIT */
/*
 * lock: a contended lock. K tasks each take one lock L times; inside, a
 * counter goes up and a few steps of the compute kernel run on shared state.
 * weft: weft_mutex between coroutines; pthreads: threads on a
 * pthread_mutex_t. The counter must end at K*L and the state where K*L steps
 * in a row leave it, so a lost update shows in both.
 */
#include "bench.h"

#include <weft.h>

#include <pthread.h>
#include <stdint.h>

enum { LOCK_TASKS = 64, LOCK_WORK = 16 };

static struct {
    weft_mutex      wm;
    pthread_mutex_t pm;
    long            count;   /* under wm or pm, whichever the run uses */
    uint64_t        state;   /* likewise */
} lk = { WEFT_MUTEX_INIT, PTHREAD_MUTEX_INITIALIZER, 0, 0 };

static uint64_t lock_expected;

static void *lock_task_weft(void *arg)
{
    for (long i = 0; i < opt.lock_iters; i++) {
        check(weft_mutex_lock(&lk.wm), "weft_mutex_lock");
        lk.count++;
        lk.state = work(lk.state, LOCK_WORK);
        check(weft_mutex_unlock(&lk.wm), "weft_mutex_unlock");
    }
    return arg;
}

static void *lock_task_pth(void *arg)
{
    for (long i = 0; i < opt.lock_iters; i++) {
        pthread_mutex_lock(&lk.pm);
        lk.count++;
        lk.state = work(lk.state, LOCK_WORK);
        pthread_mutex_unlock(&lk.pm);
    }
    return arg;
}

static void lock_check(const char *who)
{
    long want = LOCK_TASKS * opt.lock_iters;
    if (lk.count != want)
        fail("%s: counter %ld, expected %ld (the lock let two holders in)", who, lk.count, want);
    else if (lk.state != lock_expected)
        fail("%s: the state under the lock is wrong (the lock let two holders in)", who);
}

/* Stores million lock acquisitions per second in *(double *)arg. */
static void *lock_root(void *arg)
{
    weft_task *t[LOCK_TASKS];
    lk.count = 0;
    lk.state = 0;
    uint64_t t0 = now_ns();
    for (int i = 0; i < LOCK_TASKS; i++)
        check(weft_spawn(&t[i], lock_task_weft, NULL), "weft_spawn");
    for (int i = 0; i < LOCK_TASKS; i++)
        check(weft_join(t[i], NULL), "weft_join");
    uint64_t t1 = now_ns();
    lock_check("lock (weft)");
    *(double *)arg = (double)(LOCK_TASKS * opt.lock_iters) * 1e3 / (double)(t1 - t0);
    return NULL;
}

/* Returns million lock acquisitions per second. */
static double lock_pthreads(void)
{
    pthread_t t[LOCK_TASKS];
    lk.count = 0;
    lk.state = 0;
    uint64_t t0 = now_ns();
    for (int i = 0; i < LOCK_TASKS; i++)
        start_thread(&t[i], NULL, lock_task_pth, NULL);
    for (int i = 0; i < LOCK_TASKS; i++)
        pthread_join(t[i], NULL);
    uint64_t t1 = now_ns();
    lock_check("lock (pthreads)");
    return (double)(LOCK_TASKS * opt.lock_iters) * 1e3 / (double)(t1 - t0);
}

void bench_lock(void)
{
    double w[RUNS_MAX], p[RUNS_MAX];
    weft_config cfg = { .workers = opt.workers };
    lock_expected = 0;
    for (long i = 0; i < LOCK_TASKS * opt.lock_iters; i++)
        lock_expected = work(lock_expected, LOCK_WORK);
    for (int r = 0; r < opt.runs; r++) {
        progress_run(r + 1, opt.runs);
        progress_note("weft");
        check(weft_main(&cfg, lock_root, &w[r], NULL), "weft_main");
        progress_note("pthreads");
        p[r] = lock_pthreads();
    }
    static char detail[300], measure[64];
    snprintf(detail, sizeof detail,
             "million lock+unlock per second; %d tasks each lock one mutex %ld times around "
             "a counter and %d steps of arithmetic, final count checked; weft: weft_mutex "
             "between coroutines; pthreads: %d threads on a pthread_mutex_t",
             LOCK_TASKS, opt.lock_iters, LOCK_WORK, LOCK_TASKS);
    snprintf(measure, sizeof measure, "%d tasks on one mutex", LOCK_TASKS);
    add_row("lock", "lock_contended", measure, "M lock/s", MORE, w, p, opt.runs)->detail = detail;
    chart_group("lock.svg", "A contended lock", "lock");
}
