/* SPDX-License-Identifier: MIT */
/*
 * A worker: one kernel thread, its run loop, and the choice of the next task.
 *
 * Choosing the next task (pick_next): the handoff, then runnext, then the IO
 * queue (tasks this worker's own IO made runnable, core/park.c), then the
 * deque's bottom, then the yield queue, then the global queue. The handoff is
 * the joiner that a finishing task woke on its own worker, or the task that a
 * joiner took back from its own deque to wait for (weft__handoff_take): it
 * runs as soon as the current task is gone, so it is not published to
 * thieves, and making it runnable calls for no other worker. The joiner that
 * takes its task back knows that nobody else can start it, so it publishes
 * its waiter without a CAS. The environment variable
 * WEFT_SCHED_RANDOM=1 (read by weft_rt_create) randomises these choices and
 * sends half the wake-ups to the global queue, to shake out code that relies on
 * an order weft does not promise. Every 61st choice starts instead with the
 * global queue, the deque's top (its oldest task), the IO queue and the
 * yield queue, so a pair of tasks handing work to each other through runnext
 * or the deque's bottom can delay the others only for a bounded number of
 * turns. A task spawned and never run is taken from the top only once it
 * has waited FRESH_WAIT choices: starting it sooner starts the shallowest pending subtree
 * of a fork-join tree, and skynet, taking one every fairness tick, kept
 * over a hundred times more coroutines alive (`weft-bench skynet`), each a
 * stack touched for the first time. When a worker has nothing, it searches (core/search.c).
 *
 * Migration hazard. A coroutine may resume on another thread, so no address of
 * thread-local state may be kept across a switch. The compiler may compute a TLS
 * address once per function and keep it in a register across weft__ctx_swap,
 * as across any call; hence every access to the current worker goes through
 * weft__worker_self(), which is never inlined and is opaque to the optimiser.
 */
#include "sched.h"

#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static WEFT__TLS struct weft__worker *tls_worker;

WEFT__NOINLINE struct weft__worker *weft__worker_self(void)
{
    struct weft__worker *w = tls_worker;
    __asm__ volatile("" : "+r"(w));   /* opaque: calls are never merged or hoisted */
    return w;
}

void weft__worker_set_self(struct weft__worker *w)
{
    tls_worker = w;
}

static weft_task *yq_pop(struct weft__worker *w)
{
    weft_task *t = w->yq_head;
    if (!t)
        return NULL;
    w->yq_head = t->next;
    if (!w->yq_head)
        w->yq_tail = NULL;
    /* Other workers cannot see the yield queue. If some are idle, move the
     * rest where they can steal it. */
    if (w->yq_head && atomic_load_explicit(&w->rt->nidle, memory_order_relaxed) != 0) {
        weft_task *x = w->yq_head;
        w->yq_head = w->yq_tail = NULL;
        weft__spill(w, x);
    }
    return t;
}

/* The owner: the oldest task on w's IO queue, or NULL. A queue that has not
 * been empty for IOQ_WAIT_NS shows that w is behind: if another worker is
 * free, the rest of it goes where thieves look (core/park.c, ready), and w
 * still takes the oldest. The last task left has nobody to be handed to,
 * nor has any while every other worker runs tasks: no clock read then. While
 * the runtime is crowded (core/crowd.c), only its length moves it, here as in
 * ioq_push: a queue that grew long while every other worker was busy goes
 * once one is free. */
static weft_task *ioq_pop(struct weft__worker *w)
{
    weft_task *t = w->ioq_head;
    if (!t)
        return NULL;
    w->ioq_head = t->next;
    w->ioq_len--;
    if (!w->ioq_head)
        w->ioq_tail = NULL;
    else if (others_free(w) && (crowded(w->rt) ? w->ioq_len >= IOQ_MAX_CROWDED :
                                weft_now() - w->ioq_since >= IOQ_WAIT_NS))
        weft__spill(w, ioq_take_all(w));
    return t;
}

/* The owner: polls its own IO, so that what it makes runnable joins the IO
 * queue. Returns whether a task became runnable. */
static bool own_io_poll(struct weft__worker *w)
{
    w->reaping = true;
    bool woke = weft__io_poll(w);
    w->reaping = false;
    return woke;
}

/* The owner. Moves the tasks on w's inbox (pinned tasks made runnable by
 * other threads or by its coroutines' code, core/park.c) to its yield queue,
 * oldest first. */
static WEFT__NOINLINE void inbox_take(struct weft__worker *w)
{
    weft_task *t = atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire);   /* pairs with the push */
    weft_task *fifo = NULL;
    while (t) {
        weft_task *next = t->next;
        t->next = fifo;
        fifo = t;
        t = next;
    }
    while (fifo) {
        weft_task *next = fifo->next;
        yq_push(w, fifo);
        fifo = next;
    }
}

/* The owner. The next task to run on w, or NULL once w's own queues (the
 * handoff, runnext, the IO queue, the deque, the yield queue, the inbox) and
 * the global queue were found empty. */
weft_task *weft__pick_next(struct weft__worker *w)
{
    weft_task *t;
    /* Under WEFT_SCHED_RANDOM every other choice takes the fairness path, so
     * no code can come to rely on LIFO order or on runnext. */
    uint32_t tick = tick_of(w) + 1;
    atomic_store_explicit(&w->tick, tick, memory_order_relaxed);   /* searchers read it: a hint */
    if (WEFT__UNLIKELY(atomic_load_explicit(&w->inbox, memory_order_relaxed) != NULL))
        inbox_take(w);
    if ((t = w->handoff)) {   /* ready() left it only with a fairness tick still ahead */
        w->handoff = NULL;
        w->fair_left--;
        return t;
    }
    if (WEFT__UNLIKELY(--w->fair_left == 0 || (w->shuffle && (rng_next(w) & 1)))) {
        if (!w->fair_left)
            w->fair_left = FAIRNESS_TICKS;
        w->clock = weft__coarse_now();   /* for weft_dump's ages (core.h) */
        own_io_poll(w);           /* IO does not wait behind a long run of tasks */
        fire_timers(w);           /* nor do sleepers */
        if ((t = weft__gq_pop(w->rt)) ||
            ((w->shuffle || weft__deque_top_due(&w->dq, tick)) &&
             (t = weft__deque_steal(&w->dq))) ||
            (t = ioq_pop(w)) || (t = yq_pop(w)))
            return t;
    } else if (WEFT__UNLIKELY(tick % TIMER_TICKS == 0)) {
        /* The fairness tick alone is too rare for sleepers: FAIRNESS_TICKS
         * schedules that each start a coroutine on a fresh stack page
         * (a page fault each) delay them far past a timer's slack
         * (`weft-bench timers`). With timers armed,
         * this reads the clock once per TIMER_TICKS schedules. */
        fire_timers(w);
    }
    if ((t = runnext_take(w)))
        return t;
    if ((t = ioq_pop(w)) || (t = local_take(w)) || (t = yq_pop(w)) || (t = weft__gq_take(w)))
        return t;
    /* Out of work: submit what our coroutines queued and reap what is done.
     * What that makes runnable lands on the IO queue (with one worker, on
     * runnext or the deque), or, pinned here, on the yield queue. All are
     * looked at again: a NULL sends the caller to park (core/search.c), and
     * a parking worker's last look (step 3) sees only what other threads can
     * publish, never this worker's private queues. */
    if (own_io_poll(w) && ((t = runnext_take(w)) || (t = ioq_pop(w)) || (t = local_take(w)) ||
                           (t = yq_pop(w))))
        return t;
    return NULL;
}

void *weft__worker_main(void *arg)
{
    struct weft__worker *w = arg;
    tls_worker = w;
    atomic_store_explicit(&w->tid, (int)syscall(SYS_gettid), memory_order_relaxed);   /* read after in_user's acquire (core/stallbt.c) */
    /* A parked worker's timed sleep ends at the earliest timer: the kernel's
     * default timer slack would make every sleeper later by as much
     * (`weft-bench timers`). */
    prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul);
    w->clock = weft_now();
    atomic_store_explicit(&w->started, w->clock, memory_order_relaxed);   /* read by weft_stats_busy */
    weft__io_worker_start(w);   /* SIGPIPE blocked; its ring enabled, or epoll (io/backend.c) */
    if (weft__altstack_enter(&w->altstack) != 0)
        w->altstack = NULL;   /* overflows then show as a plain SIGSEGV */
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &w->sched.stack_lo, &w->sched.stack_size);
        pthread_attr_destroy(&attr);
    }
#if defined(WEFT__TSAN)
    w->sched.tsan = __tsan_get_current_fiber();
#endif
    for (;;) {
        weft_task *t = weft__pick_next(w);
        if (!t && !(t = weft__find_work(w)))
            break;
        weft__run(w, t);
    }
    weft__io_poll(w);   /* a weft_close's cancel still queued or unreaped */
    weft__pool_drain(w->rt->stacks, &w->pool);
    if (w->altstack)
        weft__altstack_leave(w->altstack);
    tls_worker = NULL;
    return NULL;
}
