/* SPDX-License-Identifier: MIT */
/*
 * The scheduler's private header: what core/worker.c, queue.c, park.c,
 * search.c and runtime.c share, and no other file includes. The scheduler is
 * M:N and work-stealing.
 *
 * Nouns
 * Nouns
 *   runtime  (weft_rt)   a set of workers and the tasks they share. Several
 *                        runtimes may live in one process; they share nothing.
 *   worker               one kernel thread. It runs one task at a time, and has
 *                        its own context (the idle loop) to return to when it
 *                        has nothing to run.
 *   task     (weft_task) a coroutine: a handle and a saved context, and a
 *                        stack from its first run to its end.
 *   queues               per worker: `runnext`, one slot for the task this
 *                        worker woke last; `dq`, a Chase-Lev deque of spawned and
 *                        woken tasks (owner LIFO, thieves FIFO); `yq`, a private
 *                        FIFO of tasks that yielded. Per runtime: the global
 *                        queue for spawns from plain threads and deque overflow.
 *                        Overflow goes there in batches of the deque's oldest
 *                        tasks, and a worker that takes from it moves a fair
 *                        share to its deque, each batch under one lock (Go's
 *                        runqputslow and globrunqget).
 *
 * Where each part lives: worker.c, a worker's run loop and the choice of the
 * next task; queue.c, the global queue; park.c, switching, and parking and
 * waking a task, and pinned tasks; search.c, stealing, parking a worker and
 * the timer watcher; runtime.c, the life of a runtime; monitor.c, the thread
 * that takes a stalled worker's queues and IO over (the worker's side of its
 * exclusion is weft__owner_enter and weft__owner_leave, core.h).
 *
 * Designs rejected
 *   - A FIFO local queue (Go, Tokio): a fork-join tree then unfolds breadth
 *     first, so skynet keeps most of its million coroutines alive at once, each
 *     with a stack touched for the first time. The LIFO deque keeps the tree
 *     depth first and reuses a handful of hot stacks.
 *   - Putting yielded tasks on the deque: its owner takes LIFO, so a task that
 *     yields would get itself back. They go to the private yield queue instead;
 *     it is spilled to the deque when idle workers could take them.
 *   - A global run queue with a lock: every switch would contend on it.
 *   - Switching through the idle loop on every block: twice the switches.
 */
#ifndef WEFT_SCHED_H
#define WEFT_SCHED_H

#include "core.h"
#include "timer.h"
#include "base/rng.h"
#include "io/backend.h"

#if defined(WEFT__ASAN)
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
#endif
#if defined(WEFT__TSAN)
void *__tsan_get_current_fiber(void);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

/* A worker's wake word (futex). */
enum {
    WEFT__WAKE_NONE,     /* asleep, or about to be */
    WEFT__WAKE_GO,       /* taken off the idle list: search for work */
    WEFT__WAKE_TIMERS,   /* still idle: look at the earliest deadline again */
};

#define FAIRNESS_TICKS 61u      /* as Go: a prime, so it does not beat with user loops */
#define TIMER_TICKS    8u       /* a busy worker fires due timers this often */
#define FRESH_WAIT     (1u << 20)   /* schedules a spawned task waits before a fairness tick takes it */
#define GQ_BATCH       64u      /* tasks moved to or from the global queue under one lock */
#define SPIN_ROUNDS    4u       /* search rounds of growing pauses; the last one steals patiently */
#define SPIN_NS        30000u   /* then more such rounds, for this long, before a worker parks
                                 * (the default of weft_config.idle_spin_ns) */
#define SPIN_SEED_NS   2000u    /* the least a search's time doubles to (core/search.c, budget_up) */
#define IDLE_SPIN_MAX_NS 1000000000u   /* weft_config.idle_spin_ns's upper bound */
#define GAP_MIN_NS     2000u    /* a search that leaves tasks to a busy owner looks again after */
#define GAP_MAX_NS     16000u   /* ... this, doubling up to this (below SPIN_NS, see find_work) */
#define STALL_NS_DEFAULT 500000000u   /* weft_config.stall_ns (core/monitor.c) */
#define IOQ_MAX        16u      /* while another worker is free, an IO queue goes where thieves
                                 * look at this length, */
#define IOQ_WAIT_NS    50000u   /* ... or once it has not been empty for this long: see ready()
                                 * in core/park.c */
#define IOQ_MAX_CROWDED 64u     /* ... and only at this length, never for its age, while the
                                 * runtime is crowded (core/crowd.c) */
#define CROWDED_PCT    20u      /* the default of weft_config.crowded_pct */
#define CROWDED_WAIT_NS 10000u  /* crowded, a worker waits awake for a timer due within this,
                                 * about what parking and a timed wake-up cost (core/search.c) */

/* ---- context switching ----------------------------------------------------- */

/* For weft_dump (core/dump.c), first thing in a fiber that runs again (or
 * for the first time): the fiber that switched to it has saved its context,
 * and this one's is no longer valid. Counted before its code writes to its
 * stack again, as far as the compiler is concerned. An x86 processor keeps
 * stores in order for the dump's copies too; on Arm another core may see a
 * store of the next few instructions first, a window far shorter than a
 * dump's copy of a whole stack. The scheduler's own fiber counts too, and
 * no one reads it. */
static inline void weft__fiber_resumed(struct weft__fiber *f)
{
    f->seq++;
    f->came_from->seq++;
    atomic_signal_fence(memory_order_seq_cst);
}

/* from_exits: the context switched from will never run again. */
static inline void fiber_switch(struct weft__fiber *from, struct weft__fiber *to, bool from_exits)
{
#if defined(WEFT__ASAN)
    __sanitizer_start_switch_fiber(from_exits ? NULL : &from->asan_fake, to->stack_lo, to->stack_size);
#else
    (void)from_exits;
#endif
#if defined(WEFT__TSAN)
    __tsan_switch_to_fiber(to->tsan, 0);
#endif
    to->came_from = from;
    weft__ctx_swap(&from->ctx, &to->ctx);
    weft__fiber_resumed(from);
#if defined(WEFT__ASAN)
    __sanitizer_finish_switch_fiber(from->asan_fake, NULL, NULL);
#endif
}

/* ---- the queues of a worker ---------------------------------------------------- */

/* w's schedules so far; only w writes them. */
static inline uint32_t tick_of(const struct weft__worker *w)
{
    return atomic_load_explicit(&w->tick, memory_order_relaxed);
}

/* A task that never ran has no stack yet (it gets one in fiber_of). */
static inline bool never_ran(const weft_task *t)
{
    return !t->fiber;
}

/* When t becomes due for the fairness tick on w's clock: a task that never
 * ran FRESH_WAIT schedules later than one that has. */
static inline uint32_t due_of(const struct weft__worker *w, const weft_task *t)
{
    return never_ran(t) ? tick_of(w) + FRESH_WAIT : tick_of(w);
}

/* queue.c: the owner, whose deque refused t. */
void weft__overflow(struct weft__worker *w, weft_task *t);

/* The owner. Queues t at the bottom of w's deque, or overflows. */
static void local_put(struct weft__worker *w, weft_task *t)
{
    if (!weft__deque_push(&w->dq, t, due_of(w, t)))
        weft__overflow(w, t);
}

/* queue.c: the global queue. Any thread, except _take: the owner w. */
void weft__gq_push(weft_rt *rt, weft_task *t);
weft_task *weft__gq_take(struct weft__worker *w);
weft_task *weft__gq_pop(weft_rt *rt);
/* Frees the queue's arrays. weft_rt_create's failure or weft_rt_destroy. */
void weft__gq_destroy(weft_rt *rt);

/* search.c: steps a-c of the worker park protocol, for a caller that has
 * just published a runnable task. Any thread. */
void weft__wake_one(weft_rt *rt);
/* search.c: wakes a parked worker whose wake word was just set. Any thread. */
void weft__wake_worker(struct weft__worker *w);
/* search.c: if h is on the idle list, takes it off and wakes it, searching
 * (a pinned task waits on its inbox, core/park.c). Any thread. */
void weft__wake_parked(struct weft__worker *h);
/* search.c: the idle loop's search. Returns a task, or NULL when the runtime
 * stops. The worker w itself. */
weft_task *weft__find_work(struct weft__worker *w);

/* The owner. Queues t on w and wakes a worker that could steal it. */
static inline void push_local(struct weft__worker *w, weft_task *t)
{
    local_put(w, t);
    if (w->rt->nworkers > 1)
        weft__wake_one(w->rt);
}

/* queue.c: the owner. Moves the tasks of the list x (linked by next) to its
 * deque in order, oldest first, where thieves look, those pinned to w to its
 * yield queue, and wakes a worker to take some. */
void weft__spill(struct weft__worker *w, weft_task *x);

/* The owner, or the monitor under its exclusion: empties w's IO queue and
 * returns its list. */
static inline weft_task *ioq_take_all(struct weft__worker *w)
{
    weft_task *x = w->ioq_head;
    w->ioq_head = w->ioq_tail = NULL;
    w->ioq_len = 0;
    return x;
}

/* Any thread: the workers parked or searching, which could take tasks put
 * where thieves look, or on the global queue, soon. A hint: the counters,
 * read relaxed. */
static inline unsigned free_workers(weft_rt *rt)
{
    return atomic_load_explicit(&rt->nidle, memory_order_relaxed) +
           atomic_load_explicit(&rt->nspinning, memory_order_relaxed);
}

/* The owner: whether a worker other than w is free. w itself is counted once
 * while it searches (w->spinning) or sleeps in its IO (w->in_io, set only
 * there: parked, it is in rt->nidle, or in rt->nspinning once a waker took
 * it off the idle list). */
static inline bool others_free(const struct weft__worker *w)
{
    bool self = w->spinning || atomic_load_explicit(&w->in_io, memory_order_relaxed);   /* its own */
    return free_workers(w->rt) > (unsigned)self;
}

/* Whether rt's workers wait for a CPU (core/crowd.c): a hint. */
static inline bool crowded(const weft_rt *rt)
{
    return atomic_load_explicit(&rt->crowded, memory_order_relaxed);
}

/* The owner, for a task that its own IO made runnable: appends t to w's
 * private IO queue, which spills when it is long and another worker is free
 * (core/park.c, ready). */
static inline void ioq_push(struct weft__worker *w, weft_task *t)
{
    t->next = NULL;
    if (w->ioq_tail) {
        w->ioq_tail->next = t;
    } else {
        w->ioq_head = t;
        w->ioq_since = weft_now();
    }
    w->ioq_tail = t;
    if (++w->ioq_len >= IOQ_MAX && others_free(w) &&
        (w->ioq_len >= IOQ_MAX_CROWDED || !crowded(w->rt)))
        weft__spill(w, ioq_take_all(w));
}

/* The owner: appends t to w's private yield queue. */
static inline void yq_push(struct weft__worker *w, weft_task *t)
{
    t->next = NULL;
    if (w->yq_tail)
        w->yq_tail->next = t;
    else
        w->yq_head = t;
    w->yq_tail = t;
}

/* The owner: w's pseudo-random choices (victims, WEFT_SCHED_RANDOM). */
static inline uint32_t rng_next(struct weft__worker *w)
{
    return weft__rng_next(&w->rng);
}

/*
 * The owner; the take out of a coroutine's code (after weft__owner_enter,
 * as in pick_next). Takes or replaces w's runnext. No thief takes it: the
 * task a worker woke last is that worker's to run, as soon as the waker
 * blocks (a message handed over stays on its core), and a stalled owner's
 * is taken by the monitor under its exclusion (core/monitor.c), which holds
 * only while the owner runs a coroutine's code, never while it schedules.
 * So the owner
 * takes it with a plain load and store, without a locked instruction on
 * every hand-over (`weft-bench switch`, the ping-pong on every worker). A
 * coroutine may still fill the slot during the monitor's takeover, so a put
 * over a full slot is an exchange.
 */
static inline weft_task *runnext_take(struct weft__worker *w)
{
    weft_task *t = atomic_load_explicit(&w->runnext, memory_order_relaxed);
    if (t)
        atomic_store_explicit(&w->runnext, NULL, memory_order_relaxed);   /* nobody else takes it now */
    return t;
}

static inline weft_task *runnext_put(struct weft__worker *w, weft_task *t)
{
    if (w->rt->nworkers == 1) {
        weft_task *old = atomic_load_explicit(&w->runnext, memory_order_relaxed);
        atomic_store_explicit(&w->runnext, t, memory_order_relaxed);      /* no takeover with one worker */
        return old;
    }
    weft_task *old = atomic_load_explicit(&w->runnext, memory_order_relaxed);
    if (!old) {
        /* The monitor only empties a full slot, so an empty one stays empty
         * until we fill it: a plain store does, without a locked instruction. */
        atomic_store_explicit(&w->runnext, t, memory_order_release);   /* publishes t to the monitor */
        return NULL;
    }
    return atomic_exchange_explicit(&w->runnext, t, memory_order_acq_rel);   /* publishes t to the monitor */
}

/* The owner. The bottom of w's deque; without thieves, without a fence. */
static inline weft_task *local_take(struct weft__worker *w)
{
    return w->rt->nworkers == 1 ? weft__deque_take_alone(&w->dq) : weft__deque_take(&w->dq);
}

/* A worker of its runtime. Claims the due timers; their tasks become runnable
 * here. Returns whether there were any. */
static inline bool fire_timers(struct weft__worker *w)
{
    struct weft__timers *ts = w->rt->timers;
    /* The clock is read only when timers are armed; fire looks at the
     * earliest deadline itself before it takes the lock. */
    return weft__timers_next(ts) != UINT64_MAX && weft__timers_fire(ts, weft_now()) != 0;
}

/* worker.c: the owner. The next task to run on w, or NULL. */
weft_task *weft__pick_next(struct weft__worker *w);
/* worker.c: a worker thread's body, arg its struct weft__worker (pthread_create). */
void *weft__worker_main(void *arg);
/* worker.c: makes w the calling thread's worker (NULL: none). */
void weft__worker_set_self(struct weft__worker *w);
/* park.c: the idle loop of w runs t until t parks, yields or exits. */
void weft__run(struct weft__worker *w, weft_task *t);

/* The owner. Whether w's handoff can take a task: it is empty, and the
 * fairness tick is not next (a handoff counts as a schedule, see pick_next). */
static inline bool handoff_open(const struct weft__worker *w)
{
    return !w->handoff && w->fair_left > 1;
}

#endif /* WEFT_SCHED_H */
