/* SPDX-License-Identifier: MIT */
/*
 * Switching, and parking and waking a task.
 *
 * Switching is direct, task to task: a task that blocks picks its successor and
 * swaps straight to it, with no trip through the idle loop. What must happen
 * only once the old context is fully saved (publishing a parked task, freeing a
 * finished one) is left in worker->prev / prev_action and done by the context
 * switched to, first thing (after_switch).
 *
 * Parking a task (weft__park / weft__unpark) uses task->pstate:
 *   1. The task sets nothing: it is RUNNING. It records itself in
 *      worker->prev with PARK and swaps to its successor.
 *   2. The successor, first thing, CASes pstate RUNNING -> PARKED (acq_rel).
 *      Only now can a waker see PARKED, so the context is never resumed
 *      before it was saved.
 *   3. A waker that sees PARKED (acquire) stores RUNNING, a plain store as
 *      nobody else writes pstate then, and queues the task; if the task has
 *      not finished step 2, it CASes RUNNING -> NOTIFIED instead; step 2's CAS
 *      then fails and the successor queues the task itself. A park that finds
 *      NOTIFIED on entry consumes it and returns at once.
 *   Every park is matched by exactly one unpark (weft__waiter makes sure).
 *
 * Pinned tasks (weft_pin). A pinned task runs only on its home worker, and is
 * never put where another thread may take it (runnext, which the monitor
 * takes over, the deque, the global queue). Made runnable by its home
 * worker's scheduler, it joins the yield queue, which is private (so the
 * worker looks at it again before it parks, core/worker.c); by a coroutine's
 * code, on that worker or any other, or by any other thread, it is pushed on
 * the home worker's inbox, a lock-free stack (any thread pushes, the owner
 * takes the whole stack with one exchange at every schedule, core/worker.c),
 * and the home worker, if another, is woken if it is parked:
 *   1. the waker pushes the task (seq_cst CAS), full fence, and reads nidle;
 *      if some worker is idle, it takes the home worker off the idle list if
 *      it is there, and wakes it as wake_one wakes a worker (core/search.c);
 *   2. a parking worker, in step 3 of the worker park protocol (after its
 *      own fence), looks at its inbox too.
 * Either the waker sees the worker on the idle list, or the worker's step 3
 * comes after the push and sees it. With one worker pinning changes nothing,
 * and is not looked at. The count is written only by the coroutine itself,
 * so weft_pin and weft_unpin are plain stores; a waker reads it once the task
 * has parked (step 2 above publishes it).
 *
 * The monitor's exclusion (core/monitor.c). Every way from a coroutine's code
 * into the scheduler (park, yield, exit) starts with weft__owner_enter, and
 * every way back into a coroutine's code ends with weft__owner_leave. Nothing
 * else in a coroutine's code waits for the monitor but the submission of an
 * io_uring request (io/uring.c), which holds no lock meanwhile.
 */
#include "sched.h"

#include <errno.h>
#include <limits.h>

/* Any thread: queues t, pinned to h, on h's inbox (step 1 of the pinned
 * tasks' protocol above). Returns with t published. */
static void inbox_add(struct weft__worker *h, weft_task *t)
{
    weft_task *head = atomic_load_explicit(&h->inbox, memory_order_relaxed);
    do
        t->next = head;
    while (!atomic_compare_exchange_weak_explicit(&h->inbox, &head, t,
               memory_order_seq_cst, memory_order_relaxed));   /* publishes t; pairs with inbox_take */
}

/* Any thread but h's: queues t, pinned to h, on h's inbox and wakes h if it
 * is parked. */
static void inbox_push(struct weft__worker *h, weft_task *t)
{
    inbox_add(h, t);
    weft__fence();   /* the push before nidle: pairs with park_worker's step 3 */
    if (atomic_load_explicit(&h->rt->nidle, memory_order_seq_cst) != 0)
        weft__wake_parked(h);
}

/* Any thread. Makes t, pinned, runnable on its home worker; w is the calling
 * worker of t's runtime, or NULL.
 *
 * On the home worker itself, from its scheduler, t joins the yield queue (or
 * the handoff), both private. From a coroutine's code there, it joins the
 * inbox instead, which the worker takes at its next schedule: the yield queue
 * is the monitor's while it takes this worker over, and waiting for the
 * monitor here could deadlock, as the caller may hold a lock that the
 * monitor's look at this worker's IO takes (a descriptor's, as weft_close
 * wakes the descriptor's waiters). */
static WEFT__NOINLINE void ready_pinned(struct weft__worker *w, weft_task *t)
{
    struct weft__worker *h = t->home;
    if (w == h) {
        if (atomic_load_explicit(&w->in_user, memory_order_relaxed))
            inbox_add(h, t);   /* the worker runs: no wake */
        else if (w->finishing && handoff_open(w))
            w->handoff = t;
        else
            yq_push(w, t);
        return;
    }
    if (weft__inherited(t->rt))
        return;   /* a task of the parent of a fork(): it never runs here */
    inbox_push(h, t);
}

int weft_pin(void)
{
    struct weft__worker *w = weft__worker_self();
    if (!w || !w->current)
        return -EPERM;
    weft_task *self = w->current;
    if (self->pins++ == 0)
        self->home = w;
    return 0;
}

int weft_unpin(void)
{
    struct weft__worker *w = weft__worker_self();
    if (!w || !w->current || !w->current->pins)
        return -EPERM;
    w->current->pins--;
    return 0;
}

/* Any thread. Makes t runnable: on its home worker if pinned; else, if the
 * caller is a worker of t's runtime, on its IO queue when its own IO poll
 * made t runnable, or its handoff or runnext; else on the global queue.
 *
 * The IO queue (with two workers or more): what one poll of a worker's ring or
 * epoll set makes runnable stays with that worker, in the order the IO
 * finished, unseen by thieves and waking nobody, since the worker is about to
 * run it. Those coroutines' next requests then go to the same ring: a server's
 * connections stay where their IO is while that worker keeps up, rather than
 * spread over every ring, each sleeping and woken in turn
 * (bench/compare/http/ab.sh). While another worker is parked or searching, the
 * queue goes onto the deque, where thieves look, and a parked worker is woken,
 * once it holds IOQ_MAX tasks or has not been empty for IOQ_WAIT_NS when the
 * worker next takes from it (ioq_pop in core/worker.c): then the worker is
 * behind. While every other worker runs tasks, nobody would take it soon, and
 * the deque's owner takes the newest task first: spilled there, the tasks a
 * burst of IO left behind would wait behind every later burst, where the queue
 * runs them in the order their IO finished (`weft-bench server`, p99 at 1,000
 * connections). While the runtime is crowded (core/crowd.c), it goes only
 * once it holds IOQ_MAX_CROWDED. Every FAIRNESS_TICKS choices look at it, so
 * runnext's pairs cannot hold it up. Behind a coroutine that never blocks, the monitor takes
 * the queue (core/monitor.c).
 *
 * A task put on runnext wakes an idle worker only if the caller's worker
 * has other work besides (the task runnext held before, or its deque): a lone
 * runnext is run by its own worker as soon as the caller blocks, as in
 * message passing, where a worker woken for it would only take the pair
 * apart or search in vain. No thief takes runnext (core/sched.h); if the
 * caller runs on instead, the monitor takes the task once the caller has
 * held its worker for the rescue threshold (core/monitor.c). `weft-bench
 * switch` measures the pair on the default runtime. */
static void ready(weft_task *t)
{
    weft_rt *rt = t->rt;
    struct weft__worker *w = weft__worker_self();
    if (WEFT__UNLIKELY(t->pins) && rt->nworkers > 1) {
        ready_pinned(w && w->rt == rt ? w : NULL, t);
        return;
    }
    if (w && w->rt == rt && !(w->shuffle && (rng_next(w) & 1))) {
        if (w->reaping && rt->nworkers > 1) {
            ioq_push(w, t);
            return;
        }
        if (w->finishing && handoff_open(w)) {
            w->handoff = t;
            return;
        }
        weft_task *old = runnext_put(w, t);
        if (old)
            local_put(w, old);
        if (rt->nworkers > 1 && !weft__deque_empty(&w->dq))
            weft__wake_one(rt);
    } else {
        if (weft__inherited(rt))
            return;   /* a task of the parent of a fork(): it never runs here */
        /* From outside rt (a plain thread, another runtime's coroutine), t
         * may run, finish and let weft_rt_destroy free rt as soon as it is
         * queued, while wake_one still reads rt: destroy waits until no such
         * waker is inside (core/runtime.c). */
        atomic_fetch_add_explicit(&rt->outside, 1, memory_order_seq_cst);
        weft__gq_push(rt, t);
        weft__wake_one(rt);
        atomic_fetch_sub_explicit(&rt->outside, 1, memory_order_release);   /* destroy may free rt now */
    }
}

/* ---- after a switch ----------------------------------------------------------- */

static void after_switch(struct weft__worker *w)
{
    enum weft__action act = w->prev_action;
    if (act == WEFT__ACT_NONE)
        return;
    w->prev_action = WEFT__ACT_NONE;
    if (act == WEFT__ACT_PARK) {
        weft_task *prev = w->prev;
        uint32_t s = WEFT__RUNNING;
        if (!atomic_compare_exchange_strong_explicit(&prev->pstate, &s, WEFT__PARKED,
                memory_order_acq_rel, memory_order_acquire)) {   /* step 2: publishes the saved context */
            weft__check(s == WEFT__NOTIFIED, "a parking task was in an impossible state");
            atomic_store_explicit(&prev->pstate, WEFT__RUNNING, memory_order_relaxed);
            bool io = w->prev_io;
            w->prev_io = false;
            if (prev->pins && w->rt->nworkers > 1)
                yq_push(w, prev);                                /* pinned here: private */
            else if (io)
                ioq_push(w, prev);                               /* by our own IO, as it parked */
            else
                push_local(w, prev);                             /* woken while it parked */
        }
    } else {
        /* The finished task's handle may be freed by now: only its stack. */
        weft_rt *rt = w->rt;
        weft__stack_unbind(rt->stacks, &w->pool, w->prev_fiber);   /* nothing runs on it now */
        atomic_store_explicit(&w->exited, atomic_load_explicit(&w->exited, memory_order_relaxed) + 1,
                              memory_order_release);             /* pairs with live_tasks() */
        if (WEFT__UNLIKELY(atomic_load_explicit(&rt->destroying, memory_order_relaxed))) {
            atomic_fetch_add_explicit(&rt->exit_seq, 1, memory_order_release);
            weft__futex_wake(&rt->exit_seq, INT_MAX);            /* weft_rt_destroy rechecks */
        }
    }
}

static void task_entry(void *arg);

/* The context to switch to for running t; a task that never ran gets its
 * stack here. */
static inline struct weft__fiber *fiber_of(struct weft__worker *w, weft_task *t)
{
    if (never_ran(t)) {
        weft__stack_bind(w->rt->stacks, &w->pool, t);
        t->fiber->spawn_pc = t->spawn_pc;   /* the union's other half is the deadline now */
        t->deadline = 0;
        weft__ctx_init(&t->fiber->ctx, t->fiber->stack_lo,
                       (char *)t->fiber->stack_lo + t->fiber->stack_size, task_entry, t);
    }
    return t->fiber;
}

/* Leaves `from`, the current task's fiber, for the next runnable task or the
 * idle loop; `act` is done by the context switched to (after_switch). */
static inline void switch_from(struct weft__worker *w, struct weft__fiber *from, enum weft__action act)
{
    w->prev_action = act;
    weft_task *next = weft__pick_next(w);
    weft__set_current(w, next);
    fiber_switch(from, next ? fiber_of(w, next) : &w->sched, act == WEFT__ACT_EXIT);
}

/* The current task parks. Returns when it is resumed. */
static void switch_away(struct weft__worker *w, weft_task *self)
{
    w->prev = self;
    /* For weft_dump's ages (core.h): a wait of several parks counts from its start. */
    self->fiber->since = self->fiber->wait_from ? self->fiber->wait_from : w->clock;
    switch_from(w, self->fiber, WEFT__ACT_PARK);
    struct weft__worker *now = weft__worker_self();
    after_switch(now);
    weft__owner_leave(now);
}

/* The current task, finished, leaves its stack (f) for good. Its handle may
 * be freed already: nothing here reads it. */
static _Noreturn void exit_to_next(struct weft__worker *w, struct weft__fiber *f)
{
    w->prev_fiber = f;
    switch_from(w, f, WEFT__ACT_EXIT);
    weft__panic(__FILE__, __LINE__, "a finished coroutine was resumed");
}

void weft__park(void)
{
    struct weft__worker *w = weft__worker_self();
    weft__check(w && w->current, "weft__park outside a coroutine");
    weft_task *self = w->current;
    /* For weft_stats_get: every park is counted here, and its one unpark in
     * weft__unpark, whichever way each goes; the difference is the tasks
     * waiting. Counting here rather than where the park completes keeps
     * after_switch as small as it was: it is inlined into every switch. */
    weft__bump(&w->ctr.task_parks, 1);
    if (atomic_load_explicit(&self->pstate, memory_order_relaxed) == WEFT__NOTIFIED) {
        uint32_t s = WEFT__NOTIFIED;
        if (atomic_compare_exchange_strong_explicit(&self->pstate, &s, WEFT__RUNNING,
                memory_order_acquire, memory_order_relaxed)) {
            weft__owner_leave(w);
            return;                                              /* unparked before it parked */
        }
    }
    weft__owner_enter(w);
    switch_away(w, self);
}

/* Counts an unpark of a task of rt, by the calling thread's worker w (or NULL),
 * for weft_stats_get. */
static void count_unpark(weft_rt *rt, struct weft__worker *w)
{
    if (w && w->rt == rt)
        weft__bump(&w->ctr.task_unparks, 1);
    else
        atomic_fetch_add_explicit(&rt->unparks_outside, 1, memory_order_relaxed);   /* a counter */
}

void weft__unpark(weft_task *t)
{
    weft_rt *rt = t->rt;   /* read before t may run, finish and be reused */
    struct weft__worker *w = weft__worker_self();
    uint32_t s = atomic_load_explicit(&t->pstate, memory_order_acquire);   /* pairs with step 2 */
    /* Counted first: once t is handed its wake, it may finish and let
     * weft_rt_destroy free rt under a caller from outside rt. */
    count_unpark(rt, w);
    for (;;) {
        if (s == WEFT__PARKED) {
            /* Step 3. Nobody else writes pstate now: the parker is done with
             * it, and there is one unpark per park. A plain store does;
             * ready() publishes it with the task. */
            atomic_store_explicit(&t->pstate, WEFT__RUNNING, memory_order_relaxed);
            ready(t);
            return;
        } else if (s == WEFT__RUNNING) {
            if (atomic_compare_exchange_weak_explicit(&t->pstate, &s, WEFT__NOTIFIED,
                    memory_order_release, memory_order_acquire)) {
                /* Our own IO, reaped as t parks on this worker (a request
                 * that completed as pick_next submitted it): as ready()
                 * would, after_switch queues it on the IO queue. */
                if (w && w->reaping && w->prev == t && w->prev_action == WEFT__ACT_PARK &&
                    rt->nworkers > 1)
                    w->prev_io = true;
                return;                                          /* step 2's CAS will fail and queue it */
            }
        } else {
            weft__panic(__FILE__, __LINE__, "a task was unparked twice for one park");
        }
    }
}

void weft__yield_current(void)
{
    struct weft__worker *w = weft__worker_self();
    weft_task *self = w->current;
    weft__owner_enter(w);
    weft_task *next = weft__pick_next(w);
    if (!next) {
        weft__owner_leave(w);
        return;                                                  /* nothing else to run here */
    }
    yq_push(w, self);                                            /* private: safe before the switch */
    weft__set_current(w, next);
    fiber_switch(self->fiber, fiber_of(w, next), false);
    struct weft__worker *now = weft__worker_self();
    after_switch(now);
    weft__owner_leave(now);
}

/* ---- tasks ---------------------------------------------------------------------- */

static void task_entry(void *arg)
{
    weft_task *t = arg;
    weft__fiber_resumed(t->fiber);
#if defined(WEFT__ASAN)
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    struct weft__worker *start = weft__worker_self();
    after_switch(start);
    weft__owner_leave(start);
    void *result = t->fn(t->arg);
    if (t->keys)
        weft__keys_end(&t->keys);   /* its destructors run as part of it */
    struct weft__worker *w = weft__worker_self();
    weft__check(w, "a coroutine returned in the child of a fork(), where its runtime does not exist; "
                   "the child must end with _exit() or exec (weft.h, fork)");
    /* Out of user code: the monitor reads fn, which result overwrites, and
     * waking the joiner may use the yield queue or the handoff. */
    weft__owner_enter(w);
    t->result = result;
    struct weft__fiber *f = t->fiber;   /* once DONE is stored, the handle is the joiner's */
    uintptr_t j = atomic_load_explicit(&t->join, memory_order_acquire);   /* pairs with detach's CAS */
    for (;;) {
        if (j == WEFT__JOIN_DETACHED) {
            weft__task_release_at(t, w);   /* nobody holds the handle: ours to free */
            break;
        }
        if (j == WEFT__JOIN_NONE) {
            if (atomic_compare_exchange_weak_explicit(&t->join, &j, WEFT__JOIN_DONE,
                    memory_order_acq_rel, memory_order_acquire))   /* publishes result; pairs with join and detach */
                break;
            continue;
        }
        /* A joiner waits. BUSY keeps its waiter (in its frame) ours until it
         * is woken: a joiner that withdraws meanwhile waits for DONE. */
        if (atomic_compare_exchange_weak_explicit(&t->join, &j, WEFT__JOIN_BUSY,
                memory_order_acq_rel, memory_order_acquire)) {   /* publishes result; pairs with the joiner's CAS */
            w->finishing = true;   /* a joiner parked here becomes the handoff */
            weft__wake((struct weft__waiter *)j, 1);
            w->finishing = false;
            atomic_store_explicit(&t->join, WEFT__JOIN_DONE, memory_order_release);   /* the handle is the joiner's */
            break;
        }
    }
    exit_to_next(w, f);
}

void weft__task_start(struct weft__worker *w, weft_task *t)
{
    if (w) {
        push_local(w, t);
    } else {
        weft__gq_push(t->rt, t);
        weft__wake_one(t->rt);
    }
}

bool weft__handoff_take(struct weft__worker *w, weft_task *t)
{
    if (w->rt != t->rt || !handoff_open(w) || (w->shuffle && (rng_next(w) & 1)) ||
        !weft__deque_bottom_is(&w->dq, t))
        return false;
    weft_task *x = local_take(w);
    weft__check(!x || x == t, "the deque's bottom changed under its owner");
    if (!x)
        return false;   /* a thief won it */
    w->handoff = t;
    return true;
}

void weft__handoff_undo(weft_task *t)
{
    struct weft__worker *w = weft__worker_self();
    if (w->handoff != t)
        return;   /* the caller parked, and t ran */
    w->handoff = NULL;
    push_local(w, t);
}

void weft__run(struct weft__worker *w, weft_task *t)
{
    weft__set_current(w, t);
    fiber_switch(&w->sched, fiber_of(w, t), false);
    after_switch(weft__worker_self());
}
