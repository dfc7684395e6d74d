/* SPDX-License-Identifier: MIT */
/*
 * Timers: weft_sleep() and the deadlines of blocking calls.
 *
 * One 4-ary min-heap per runtime (base/heap.h), under one mutex, of deadlines
 * and pointers to struct weft__timer in the waiters' frames. There is no timer thread: the
 * workers fire due timers themselves (core/worker.c), so a woken sleeper lands on
 * the firing worker's own queue, with no hop through another thread and no
 * wait on the global queue. A worker fires timers
 *   - every TIMER_TICKS (8) schedules, so a busy worker's sleepers wake on
 *     time;
 *   - on every round of its search for work;
 *   - as the runtime's watcher: one parked worker at a time sleeps (on its
 *     futex or in its ring) only until the earliest deadline. A timer armed
 *     earlier than everything on the heap kicks the watcher, or, with none,
 *     wakes an idle worker to become one.
 * An entry leaves the heap (under the lock) before its waiter is claimed, so
 * the frame is never touched after its coroutine resumes.
 *
 * `next` mirrors the earliest deadline so that the scheduler can look without
 * the lock. It is written under the lock with seq_cst: an arm's store of a new
 * earliest deadline and a parking watcher's store of itself form a Dekker
 * pair with the loads each side makes after its fence (see core/search.c).
 *
 * Rejected: a timer thread (the design before this one). It costs a thread
 * hop per wake, its wake-ups wait on the global queue behind busy workers,
 * and on a machine with as many workers as cores it competes with them for
 * the CPU at the very moment a deadline is due. Also rejected for now: one
 * heap per worker. It would take the lock off the arm path, but another
 * worker's cancellation must then find the right heap, and an idle worker
 * must still be able to fire a busy worker's timers.
 */
#include "timer.h"

#include "base/heap.h"
#include "base/sys.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

struct weft__timers {
    pthread_mutex_t       lock;
    struct weft__heap     heap;       /* of the timers' `idx` (base/heap.h); under lock */
    _Atomic uint64_t      next;       /* the earliest deadline, or UINT64_MAX; stored under lock */
};

/* Holds ts->lock. */
static void publish_next(struct weft__timers *ts)
{
    atomic_store_explicit(&ts->next, weft__heap_next(&ts->heap),
                          memory_order_seq_cst);   /* pairs with the watcher's fence in core/search.c */
}

int weft__timers_create(struct weft__timers **out)
{
    struct weft__timers *ts = calloc(1, sizeof *ts);
    if (!ts)
        return -ENOMEM;
    pthread_mutex_init(&ts->lock, NULL);
    atomic_init(&ts->next, UINT64_MAX);
    *out = ts;
    return 0;
}

void weft__timers_destroy(struct weft__timers *ts)
{
    if (!ts)
        return;
    weft__check(ts->heap.n == 0, "a timer still armed when its runtime was destroyed");
    pthread_mutex_destroy(&ts->lock);
    weft__heap_free(&ts->heap);
    free(ts);
}

uint64_t weft__timers_next(const struct weft__timers *ts)
{
    return atomic_load_explicit(&ts->next, memory_order_seq_cst);
}

unsigned weft__timers_fire(struct weft__timers *ts, uint64_t now)
{
    unsigned fired = 0;
    if (weft__timers_next(ts) > now)
        return 0;
    pthread_mutex_lock(&ts->lock);
    /* Claimed under the lock, which disarm waits on, so a frame whose waiter
     * was claimed elsewhere is not touched once its coroutine could resume.
     * A frame whose claim is ours stays, its coroutine parked, until we make
     * it runnable after the unlock. Made runnable latest first: each goes to
     * this worker's runnext and pushes the one before down the deque, so the
     * earliest deadline runs first and the rest follow in order. */
    struct weft__timer *due = NULL;
    size_t *pos;
    while ((pos = weft__heap_due(&ts->heap, now))) {
        struct weft__timer *tm = weft__heap_item(pos, struct weft__timer, idx);
        weft__heap_remove(&ts->heap, pos);
        if (weft__claim(tm->wt, tm->result)) {
            tm->due_next = due;
            due = tm;
            fired++;
        }
    }
    publish_next(ts);
    pthread_mutex_unlock(&ts->lock);
    for (struct weft__timer *tm = due, *next; tm; tm = next) {
        next = tm->due_next;   /* before the wake: the frame goes with its coroutine */
        weft__wake_claimed(tm->wt->task, tm->wt);
    }
    return fired;
}

static int plain_sleep(uint64_t when)
{
    struct timespec abs = {
        .tv_sec = (time_t)(when / 1000000000u),
        .tv_nsec = (long)(when % 1000000000u),
    };
    while (weft__sys_clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL) == -EINTR)
        ;
    return 0;
}

int weft__timer_arm(weft_rt *rt, struct weft__timer *tm)
{
    struct weft__timers *ts = rt->timers;
    pthread_mutex_lock(&ts->lock);
    if (weft__heap_reserve(&ts->heap) != 0) {
        pthread_mutex_unlock(&ts->lock);
        return -ENOMEM;
    }
    weft__heap_push(&ts->heap, tm->when, &tm->idx);
    bool earliest = tm->idx == 1;
    if (earliest)
        publish_next(ts);
    pthread_mutex_unlock(&ts->lock);
    struct weft__worker *w = weft__worker_self();
    if (w && w->rt == rt)
        weft__bump(&w->ctr.timers_armed, 1);   /* for weft_stats_get */
    if (earliest)
        weft__timers_changed(rt);   /* core/search.c: a watcher may sleep past it */
    return 0;
}

void weft__timer_disarm(weft_rt *rt, struct weft__timer *tm)
{
    struct weft__timers *ts = rt->timers;
    pthread_mutex_lock(&ts->lock);
    if (tm->idx) {
        bool earliest = tm->idx == 1;
        weft__heap_remove(&ts->heap, &tm->idx);
        if (earliest)
            publish_next(ts);
    }
    pthread_mutex_unlock(&ts->lock);
}

/* Returns 0, -ETIMEDOUT (the caller's deadline came first), -ECANCELED, or
 * -ENOMEM when the timer could not be armed. */
int weft_sleep(uint64_t ns)
{
    return weft__sleep_why(ns, WEFT__WHY_SLEEP, 0);
}

int weft__sleep_why(uint64_t ns, enum weft__why why, uintptr_t what)
{
    uint64_t now = weft_now();
    uint64_t when = ns > UINT64_MAX - now ? UINT64_MAX : now + ns;
    struct weft__worker *w = weft__worker_self();
    if (!w || !w->current) {
        uint64_t deadline = weft__thread_deadline();
        if (deadline && deadline < when) {
            plain_sleep(deadline);
            return -ETIMEDOUT;
        }
        return plain_sleep(when);
    }

    int err = weft__interrupted();   /* the timer below could fire before the wait looks */
    if (err)
        return err;
    weft_rt *rt = w->rt;
    struct weft__waiter wt;
    weft__waiter_init(&wt);
    weft__waiter_why(&wt, why, what);
    struct weft__timer tm = { .when = when, .wt = &wt, .result = 1 };
    err = weft__timer_arm(rt, &tm);
    if (err)
        return err;
    int32_t r = weft__wait(&wt);
    if (r < 0)
        weft__timer_disarm(rt, &tm);
    return r < 0 ? r : 0;
}
