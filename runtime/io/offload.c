/* SPDX-License-Identifier: MIT */
/*
 * Offloading blocking calls: weft_offload().
 *
 * Some calls block their thread and have no non-blocking form weft could wait
 * on (getaddrinfo, a library doing its own IO). weft_offload() runs such a
 * call on a helper thread and parks only the calling coroutine meanwhile.
 *
 * The nouns. One pool per runtime, started by the first offload and joined by
 * weft_rt_destroy(): a FIFO queue of jobs and at most `max` helper threads,
 * under one mutex. A job lives in the caller's frame. Its state goes QUEUED
 * (on the queue) -> RUNNING (a helper popped it and runs fn) -> DONE (the
 * helper stored the result), each step under the mutex. A helper is started
 * when a job is queued that would find no idle helper (the queued jobs
 * outnumber the idle helpers); idle helpers sleep on a condition variable.
 *
 * The frame protocol. The caller may stop waiting early (its deadline or
 * cancellation claims its waiter), and must not leave while a helper can still
 * touch its frame:
 *   1. the caller, under the mutex, queues the job with job.waiter = &w1 and
 *      then waits on w1 with weft__wait();
 *   2. a helper, under the mutex, pops the job and sets RUNNING; it runs fn
 *      without the mutex, on copies of fn and arg; then, under the mutex, it
 *      stores the result, sets DONE and claims job.waiter with 1. That claim
 *      fails if the caller's deadline or cancellation claimed it first;
 *   3. a caller woken with 1 returns: the helper's last access to the frame
 *      was that claim, and the claim publishes the result;
 *   4. a caller whose wait ended with a negative result takes the mutex and
 *      looks at the state. QUEUED: it unlinks the job (fn never runs) and
 *      returns the error. RUNNING: it points job.waiter at a fresh waiter w2
 *      and waits on it with weft__wait_nointr(): fn has started, so the call
 *      waits for it, and step 2's claim now lands on w2. DONE: the helper has
 *      finished with the frame (its failed claim was made under the mutex we
 *      now hold), so the caller returns the result.
 * A helper touches a job only under the mutex (fn runs on copies of fn and
 * arg), so in step 4 the mutex alone orders the caller's departure after the
 * helper's last access to its frame.
 *
 * Rejected: one thread per call (a burst of offloads would start unbounded
 * threads, and thread creation costs more than most offloaded calls); handing
 * the worker's queue to a spare thread while the worker blocks in the call, as
 * Go does for system calls (it needs the scheduler to hand off and take back
 * its queues, for a path that is rare in weft's users). A helper is a plain
 * thread: weft's calls made inside fn behave as from a plain thread.
 */
#include "backend.h"
#include "fdtab.h"   /* the hook's entry points */

#include <errno.h>
#include <stdlib.h>
#include <sys/prctl.h>

/*
 * The most helper threads a runtime starts: four per worker, between 4 and 64.
 * Offloaded calls mostly wait (on a DNS server, a disk), so several per worker
 * can overlap usefully; past a few dozen, more threads add memory and kernel
 * scheduling load rather than throughput, and a burst of callers queues instead.
 * At least 4 so that one-worker runtimes can still overlap a few calls.
 */
#define HELPERS_PER_WORKER 4u
#define HELPERS_MIN        4u
#define HELPERS_MAX        64u

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

/* One offloaded call, in the caller's frame. Every field but fn and arg is
 * under the pool's lock once the job is queued. */
struct job {
    weft_fn              fn;
    void                *arg;
    void                *result;   /* written before DONE */
    enum job_state       state;
    struct weft__waiter *waiter;   /* claimed with 1 by the helper at DONE */
    struct job          *next;     /* on the queue while QUEUED */
};

struct weft__offload {
    pthread_mutex_t lock;
    pthread_cond_t  cond;        /* idle helpers wait here for a job or for stop */
    struct job     *head;        /* queued jobs, FIFO, linked by next; under lock */
    struct job     *tail;
    unsigned        nqueued;     /* jobs on the queue; under lock */
    unsigned        nidle;       /* helpers waiting on cond, woken or not; under lock */
    unsigned        nthreads;    /* helpers started, the first of threads[]; under lock */
    unsigned        max;         /* bound on nthreads; fixed at creation */
    bool            stop;        /* weft_rt_destroy() began; under lock */
    const weft_rt  *rt;          /* whose pool it is; fixed at creation */
    pthread_t       threads[];   /* [max] */
};

/* On a helper thread: the runtime whose pool it serves. */
static WEFT__TLS const weft_rt *helper_of;

bool weft__offload_is_helper_of(const weft_rt *rt)
{
    return helper_of == rt;
}

static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;   /* made anew in a child of fork() */

void weft__offload_fork_child(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    create_lock = fresh;
}

static void *helper_thread(void *arg)
{
    struct weft__offload *p = (struct weft__offload *)((uintptr_t)arg & ~(uintptr_t)1);
    if ((uintptr_t)arg & 1)
        weft__sigpipe_unblock();   /* its creator's, a worker's; not the program's */
    prctl(PR_SET_NAME, (unsigned long)"weft-offload", 0ul, 0ul, 0ul);
    helper_of = p->rt;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stop) {
            p->nidle++;
            pthread_cond_wait(&p->cond, &p->lock);
            p->nidle--;
        }
        struct job *j = p->head;
        if (!j)
            break;   /* stopping, and nothing is queued */
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        p->nqueued--;
        weft__check(j->state == JOB_QUEUED, "a helper popped a job that was not queued");
        j->state = JOB_RUNNING;
        weft_fn fn = j->fn;
        void *fn_arg = j->arg;
        pthread_mutex_unlock(&p->lock);

        void *result = fn(fn_arg);

        pthread_mutex_lock(&p->lock);
        j->result = result;
        j->state = JOB_DONE;
        /* Under the lock: a caller that stopped waiting looks at the state
         * under it, so it cannot leave before this claim is over. The claim
         * fails if its deadline or cancellation came first: nothing to do. */
        weft__wake(j->waiter, 1);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static unsigned helpers_max(const weft_rt *rt)
{
    unsigned n = rt->nworkers > HELPERS_MAX / HELPERS_PER_WORKER
        ? HELPERS_MAX : rt->nworkers * HELPERS_PER_WORKER;
    return n < HELPERS_MIN ? HELPERS_MIN : n;
}

/* rt's pool, created on first use. Any thread. Returns 0 or -ENOMEM; no
 * helper is started here. */
static int pool_get(weft_rt *rt, struct weft__offload **out)
{
    struct weft__offload *p = atomic_load_explicit(&rt->offload, memory_order_acquire);  /* pairs with the release below */
    if (p) {
        *out = p;
        return 0;
    }
    int err = 0;
    pthread_mutex_lock(&create_lock);
    p = atomic_load_explicit(&rt->offload, memory_order_relaxed);   /* under create_lock */
    if (!p) {
        unsigned max = helpers_max(rt);
        p = calloc(1, sizeof *p + max * sizeof p->threads[0]);
        if (!p) {
            err = -ENOMEM;
        } else {
            pthread_mutex_init(&p->lock, NULL);
            pthread_cond_init(&p->cond, NULL);
            p->max = max;
            p->rt = rt;
            atomic_store_explicit(&rt->offload, p, memory_order_release);   /* publishes the initialised pool */
        }
    }
    pthread_mutex_unlock(&create_lock);
    *out = p;
    return err;
}

/* Queues j and makes sure a helper will take it. Holds p->lock. Returns 0, or
 * -EAGAIN with j not queued when no helper exists and none could be started.
 * A helper is started while holding the lock: at most p->max times in the
 * pool's life, and it keeps the thread count and threads[] simple. */
static int enqueue(struct weft__offload *p, struct job *j)
{
    if (p->nqueued >= p->nidle && p->nthreads < p->max) {   /* j would find no idle helper */
        /* The helper inherits its creator's signal mask: a worker's blocks
         * SIGPIPE for weft's writes, which the helper, a plain thread for
         * fn, must not keep (bit 0 of its argument says to unblock it). */
        void *arg = (void *)((uintptr_t)p | (weft__sigpipe_is_ours() ? 1u : 0u));
        if (pthread_create(&p->threads[p->nthreads], NULL, helper_thread, arg) == 0)
            p->nthreads++;
        else if (p->nthreads == 0)
            return -EAGAIN;
        /* else a running helper takes j when it is free */
    }
    j->next = NULL;
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    p->nqueued++;
    if (p->nidle)
        pthread_cond_signal(&p->cond);
    return 0;
}

/* Takes a job that is still queued off the queue. Holds p->lock. A walk from
 * the head: only callers that stop waiting early come here. */
static void unlink_job(struct weft__offload *p, struct job *j)
{
    struct job **pp = &p->head, *prev = NULL;
    while (*pp != j) {
        weft__check(*pp != NULL, "a queued job is missing from the offload queue");
        prev = *pp;
        pp = &prev->next;
    }
    *pp = j->next;
    if (p->tail == j)
        p->tail = prev;
    p->nqueued--;
}

/* fn run on the calling plain thread, which may block itself, unless its
 * deadline has passed before fn could start. Returns 0 or -ETIMEDOUT. */
static int offload_plain(weft_fn fn, void *arg, void **result)
{
    uint64_t deadline = weft__thread_deadline();
    if (deadline && deadline <= weft_now())
        return -ETIMEDOUT;
    void *r = fn(arg);
    if (result)
        *result = r;
    return 0;
}

/* fn run on a helper thread while the coroutine on w waits, under the reason
 * for weft_dump that the coroutine noted last (weft__why_task). Only that
 * coroutine; returns as weft_offload. `whole`: neither its deadline nor its
 * cancellation ends the call. */
static int offload_coroutine(struct weft__worker *w, weft_fn fn, void *arg, void **result, bool whole)
{
    /* A deadline already past, or a cancellation already made, ends the
     * call before fn could start: queued first, a helper might start it
     * before the wait below looks. */
    int err = whole ? 0 : weft__interrupted();
    if (err)
        return err;
    struct weft__offload *p;
    err = pool_get(w->rt, &p);
    if (err)
        return err;
    struct weft__waiter w1;
    weft__waiter_init(&w1);
    struct job j = { .fn = fn, .arg = arg, .state = JOB_QUEUED, .waiter = &w1 };
    pthread_mutex_lock(&p->lock);                                   /* step 1 */
    err = enqueue(p, &j);
    pthread_mutex_unlock(&p->lock);
    if (err)
        return err;

    int32_t r = whole ? weft__wait_nointr(&w1) : weft__wait(&w1);
    if (r < 0) {                                                    /* step 4 */
        pthread_mutex_lock(&p->lock);
        switch (j.state) {
        case JOB_QUEUED:
            unlink_job(p, &j);
            pthread_mutex_unlock(&p->lock);
            return r;
        case JOB_RUNNING: {
            struct weft__waiter w2;
            weft__waiter_init(&w2);   /* the coroutine's note still holds */
            j.waiter = &w2;
            pthread_mutex_unlock(&p->lock);
            r = weft__wait_nointr(&w2);
            break;
        }
        case JOB_DONE:
            pthread_mutex_unlock(&p->lock);
            r = 1;
            break;
        }
    }
    /* Step 3: the helper's claim (or the mutex, after step 4) publishes the
     * result, and the helper no longer touches j. */
    weft__check(r == 1 && j.state == JOB_DONE, "an offloaded call returned before its job was done");
    if (result)
        *result = j.result;
    return 0;
}

/* Any thread. Returns 0, -EINVAL (fn NULL), -ENOMEM, -EAGAIN (no helper could
 * be started), -ETIMEDOUT or -ECANCELED (before fn started: it never runs). */
int weft_offload(weft_fn fn, void *arg, void **result)
{
    if (!fn)
        return -EINVAL;
    struct weft__worker *w = weft__worker_self();
    if (!w || !w->current)
        return offload_plain(fn, arg, result);
    weft__why_task(w->current, WEFT__WHY_OFFLOAD, (uintptr_t)fn);
    return offload_coroutine(w, fn, arg, result, false);
}

/* For libweft-hook (hook/weft_private.h): a call that must run whatever the
 * caller's deadline or cancellation, as pclose(), which must close its
 * stream. Returns 0, -ENOMEM or -EAGAIN (fn did not run). */
int weft__hook_offload_whole(weft_fn fn, void *arg)
{
    struct weft__worker *w = weft__worker_self();
    if (!w || !w->current) {
        fn(arg);
        return 0;
    }
    weft__why_task(w->current, WEFT__WHY_OFFLOAD, (uintptr_t)fn);
    return offload_coroutine(w, fn, arg, NULL, true);
}

/* Any thread; fn not NULL. Returns as weft_offload. */
int weft__offload_noted(weft_fn fn, void *arg, void **result)
{
    struct weft__worker *w = weft__worker_self();
    if (!w || !w->current)
        return offload_plain(fn, arg, result);
    return offload_coroutine(w, fn, arg, result, false);
}

/* Stops and joins rt's helpers, if any were started. weft_rt_destroy() only,
 * after every coroutine has finished: no job can be queued or running. */
void weft__offload_destroy(weft_rt *rt)
{
    struct weft__offload *p = atomic_load_explicit(&rt->offload, memory_order_acquire);
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    weft__check(p->head == NULL, "an offloaded job still queued when its runtime was destroyed");
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    unsigned n = p->nthreads;
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
    atomic_store_explicit(&rt->offload, NULL, memory_order_relaxed);
}
