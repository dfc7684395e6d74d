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
 */
#include "sched.h"

#include <limits.h>

/* Any thread. Makes t runnable: on the calling worker's handoff or runnext if
 * it belongs to t's runtime, else on the global queue. */
static void ready(weft_task *t)
{
    weft_rt *rt = t->rt;
    struct weft__worker *w = weft__worker_self();
    if (w && w->rt == rt && !(w->shuffle && (rng_next(w) & 1))) {
        if (w->finishing && handoff_open(w)) {
            w->handoff = t;
            return;
        }
        weft_task *old = runnext_put(w, t);
        if (old)
            local_put(w, old);
        if (rt->nworkers > 1)
            weft__wake_one(rt);
    } else {
        if (weft__inherited(rt))
            return;   /* a task of the parent of a fork(): it never runs here */
        weft__gq_push(rt, t);
        weft__wake_one(rt);
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
            push_local(w, prev);                                 /* woken while it parked */
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
    w->current = next;
    fiber_switch(from, next ? fiber_of(w, next) : &w->sched, act == WEFT__ACT_EXIT);
}

/* The current task parks. Returns when it is resumed. */
static void switch_away(struct weft__worker *w, weft_task *self)
{
    w->prev = self;
    switch_from(w, self->fiber, WEFT__ACT_PARK);
    after_switch(weft__worker_self());
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
    if (atomic_load_explicit(&self->pstate, memory_order_relaxed) == WEFT__NOTIFIED) {
        uint32_t s = WEFT__NOTIFIED;
        if (atomic_compare_exchange_strong_explicit(&self->pstate, &s, WEFT__RUNNING,
                memory_order_acquire, memory_order_relaxed))
            return;                                              /* unparked before it parked */
    }
    switch_away(w, self);
}

void weft__unpark(weft_task *t)
{
    uint32_t s = atomic_load_explicit(&t->pstate, memory_order_acquire);   /* pairs with step 2 */
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
                    memory_order_release, memory_order_acquire))
                return;                                          /* step 2's CAS will fail and queue it */
        } else {
            weft__panic(__FILE__, __LINE__, "a task was unparked twice for one park");
        }
    }
}

void weft__yield_current(void)
{
    struct weft__worker *w = weft__worker_self();
    weft_task *self = w->current;
    weft_task *next = weft__pick_next(w);
    if (!next)
        return;                                                  /* nothing else to run here */
    yq_push(w, self);                                            /* private: safe before the switch */
    w->current = next;
    fiber_switch(self->fiber, fiber_of(w, next), false);
    after_switch(weft__worker_self());
}

/* ---- tasks ---------------------------------------------------------------------- */

static void task_entry(void *arg)
{
    weft_task *t = arg;
#if defined(WEFT__ASAN)
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    after_switch(weft__worker_self());
    t->result = t->fn(t->arg);
    struct weft__worker *w = weft__worker_self();
    weft__check(w, "a coroutine returned in the child of a fork(), where its runtime does not exist; "
                   "the child must end with _exit() or exec (weft.h, fork)");
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
    w->current = t;
    fiber_switch(&w->sched, fiber_of(w, t), false);
    after_switch(weft__worker_self());
}
