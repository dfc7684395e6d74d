/*
 * Timers: weft_sleep().
 *
 * One binary min-heap per runtime, under one mutex, served by one timer thread
 * that sleeps on a condition variable until the earliest deadline and then
 * claims the due waiters with weft__wake(). The heap holds pointers to
 * struct weft__timer in the sleepers' frames; an entry leaves the heap (under
 * the lock) before its waiter is woken, so the frame is never touched after
 * its coroutine resumes.
 *
 * Rejected for now: per-worker heaps fired from the worker's park. They save
 * the thread hop, but removing a timer from another worker then needs either a
 * lock per heap or a message to its owner; one lock per runtime is simpler to
 * prove and sleeping is not a hot path in the core runtime. The timer thread
 * is started on the first sleep and joined by weft_rt_destroy().
 */
#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

struct weft__timers {
    pthread_mutex_t       lock;
    pthread_cond_t        cond;       /* signalled on a new earliest timer and on stop */
    struct weft__timer  **heap;       /* heap[1..n], under lock */
    size_t                n, cap;
    bool                  stop;       /* under lock */
    pthread_t             thread;
};

static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

static void heap_swap(struct weft__timers *ts, size_t a, size_t b)
{
    struct weft__timer *x = ts->heap[a];
    ts->heap[a] = ts->heap[b];
    ts->heap[b] = x;
    ts->heap[a]->idx = a;
    ts->heap[b]->idx = b;
}

static void heap_up(struct weft__timers *ts, size_t i)
{
    while (i > 1 && ts->heap[i / 2]->when > ts->heap[i]->when) {
        heap_swap(ts, i, i / 2);
        i /= 2;
    }
}

static void heap_down(struct weft__timers *ts, size_t i)
{
    for (;;) {
        size_t l = 2 * i, r = l + 1, m = i;
        if (l <= ts->n && ts->heap[l]->when < ts->heap[m]->when)
            m = l;
        if (r <= ts->n && ts->heap[r]->when < ts->heap[m]->when)
            m = r;
        if (m == i)
            return;
        heap_swap(ts, i, m);
        i = m;
    }
}

/* Holds ts->lock. */
static void heap_remove(struct weft__timers *ts, struct weft__timer *tm)
{
    size_t i = tm->idx;
    weft__check(i >= 1 && i <= ts->n && ts->heap[i] == tm, "a timer removed that is not armed");
    heap_swap(ts, i, ts->n);
    ts->n--;
    tm->idx = 0;
    if (i <= ts->n) {
        heap_up(ts, i);
        heap_down(ts, i);
    }
}

static void *timer_thread(void *arg)
{
    struct weft__timers *ts = arg;
    pthread_mutex_lock(&ts->lock);
    while (!ts->stop) {
        if (ts->n == 0) {
            pthread_cond_wait(&ts->cond, &ts->lock);
            continue;
        }
        uint64_t now = weft_now();
        struct weft__timer *tm = ts->heap[1];
        if (tm->when > now) {
            struct timespec abs = {
                .tv_sec = (time_t)(tm->when / 1000000000u),
                .tv_nsec = (long)(tm->when % 1000000000u),
            };
            pthread_cond_timedwait(&ts->cond, &ts->lock, &abs);
            continue;
        }
        heap_remove(ts, tm);
        /* Claimed while the lock is held: the frame is valid until the wake. */
        weft__wake(tm->wt, tm->result);
    }
    pthread_mutex_unlock(&ts->lock);
    return NULL;
}

static int timers_get(weft_rt *rt, struct weft__timers **out)
{
    struct weft__timers *ts = atomic_load_explicit(&rt->timers, memory_order_acquire);  /* pairs with the release below */
    if (ts) {
        *out = ts;
        return 0;
    }
    int err = 0;
    pthread_mutex_lock(&create_lock);
    ts = atomic_load_explicit(&rt->timers, memory_order_relaxed);   /* under create_lock */
    if (!ts) {
        ts = calloc(1, sizeof *ts);
        if (!ts) {
            err = -ENOMEM;
            goto out;
        }
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&ts->cond, &ca);
        pthread_condattr_destroy(&ca);
        pthread_mutex_init(&ts->lock, NULL);
        int e = pthread_create(&ts->thread, NULL, timer_thread, ts);
        if (e) {
            pthread_cond_destroy(&ts->cond);
            pthread_mutex_destroy(&ts->lock);
            free(ts);
            ts = NULL;
            err = -e;
            goto out;
        }
        atomic_store_explicit(&rt->timers, ts, memory_order_release);   /* publishes the initialised heap */
    }
out:
    pthread_mutex_unlock(&create_lock);
    *out = ts;
    return err;
}

void weft__timers_destroy(weft_rt *rt)
{
    struct weft__timers *ts = atomic_load_explicit(&rt->timers, memory_order_acquire);
    if (!ts)
        return;
    pthread_mutex_lock(&ts->lock);
    weft__check(ts->n == 0, "a timer still armed when its runtime was destroyed");
    ts->stop = true;
    pthread_cond_signal(&ts->cond);
    pthread_mutex_unlock(&ts->lock);
    pthread_join(ts->thread, NULL);
    pthread_cond_destroy(&ts->cond);
    pthread_mutex_destroy(&ts->lock);
    free(ts->heap);
    free(ts);
    atomic_store_explicit(&rt->timers, NULL, memory_order_relaxed);
}

static int plain_sleep(uint64_t when)
{
    struct timespec abs = {
        .tv_sec = (time_t)(when / 1000000000u),
        .tv_nsec = (long)(when % 1000000000u),
    };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL) == EINTR)
        ;
    return 0;
}

int weft__timer_arm(weft_rt *rt, struct weft__timer *tm)
{
    struct weft__timers *ts;
    int err = timers_get(rt, &ts);
    if (err)
        return err;
    pthread_mutex_lock(&ts->lock);
    if (ts->n + 1 >= ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 64;
        struct weft__timer **h = realloc(ts->heap, cap * sizeof *h);
        if (!h) {
            pthread_mutex_unlock(&ts->lock);
            return -ENOMEM;
        }
        ts->heap = h;
        ts->cap = cap;
    }
    ts->heap[++ts->n] = tm;
    tm->idx = ts->n;
    heap_up(ts, tm->idx);
    if (tm->idx == 1)
        pthread_cond_signal(&ts->cond);
    pthread_mutex_unlock(&ts->lock);
    return 0;
}

void weft__timer_disarm(weft_rt *rt, struct weft__timer *tm)
{
    struct weft__timers *ts = atomic_load_explicit(&rt->timers, memory_order_acquire);  /* set: tm was armed */
    pthread_mutex_lock(&ts->lock);
    if (tm->idx)
        heap_remove(ts, tm);
    pthread_mutex_unlock(&ts->lock);
}

/* Returns 0, -ETIMEDOUT (the caller's deadline came first), -ECANCELED, or
 * -ENOMEM / -EAGAIN when the timer could not be armed. */
int weft_sleep(uint64_t ns)
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
    struct weft__timer tm = { .when = when, .wt = &wt, .result = 1 };
    err = weft__timer_arm(rt, &tm);
    if (err)
        return err;
    int32_t r = weft__wait(&wt);
    if (r < 0)
        weft__timer_disarm(rt, &tm);
    return r < 0 ? r : 0;
}
