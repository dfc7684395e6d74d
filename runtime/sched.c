/*
 * The M:N work-stealing scheduler.
 *
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
 * Choosing the next task (pick_next): the handoff, then runnext, then the
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
 * global queue, the deque's top (its oldest task) and the yield queue, so a
 * pair of tasks handing work to each other through runnext or the deque's
 * bottom can delay the others only for a bounded number of turns. A task
 * spawned and never run is taken from the top only once it has waited
 * FRESH_WAIT choices: starting it sooner starts the shallowest pending subtree
 * of a fork-join tree, and skynet, taking one every 61st choice, kept 9,000
 * coroutines alive instead of about 70, each a stack touched for the first
 * time. When a worker has nothing, it searches (steals from random victims)
 * for a while, then parks. The search lasts SPIN_NS, a few times what a futex
 * wake and the woken thread's return cost the two threads here: with a
 * shorter one, a coroutine that spawns and joins on one worker made the other
 * park between its spawns, and every spawn paid for a futex wake (2 workers,
 * one at a time: 190 ns a task with 9 us of search, 160 with 30 us). A search
 * that sees a busy owner (a lone spawn or a runnext it leaves to that owner,
 * or spawns since its last look, see steal_any) starts its SPIN_NS again:
 * that owner is spawning and joining, and a parked searcher would only be
 * woken by its next spawn. It also looks less often, up to GAP_MAX_NS apart,
 * since every look takes cache lines that the owner is about to write.
 *
 * Switching is direct, task to task: a task that blocks picks its successor and
 * swaps straight to it, with no trip through the idle loop. What must happen
 * only once the old context is fully saved (publishing a parked task, freeing a
 * finished one) is left in worker->prev / prev_action and done by the context
 * switched to, first thing (after_switch).
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
 * Parking a worker, without lost wake-ups. Counters are rt->nspinning
 * (workers searching) and rt->nidle (workers on the idle list). A worker
 * that finds no work:
 *   1. puts itself on the idle list and increments nidle (seq_cst);
 *   2. stops searching: decrements nspinning (seq_cst);
 *   3. full fence, then looks once more at every queue; if it sees work it takes
 *      itself off the idle list (or, if a waker already took it off, accepts
 *      that wake) and searches again;
 *   4. sleeps on its futex word until a waker sets it to GO (with IO in
 *      flight, in its ring or epoll set instead, which the waker then kicks
 *      through an eventfd; see park_worker). Meanwhile it may
 *      give memory back (stack.c) and, as the timer watcher, sleep only until
 *      the earliest deadline and fire the timers due (see watch() below);
 *      tasks those make runnable land on its own runnext, so it then takes
 *      itself off the idle list, as in step 3.
 * Whoever makes work runnable (wake_one):
 *   a. publishes the task (release);
 *   b. full fence;
 *   c. if nspinning == 0 and nidle > 0, CASes nspinning 0 -> 1 and pops a
 *      worker from the idle list, sets its futex word and wakes it; the woken
 *      worker starts out searching.
 * Either c sees the increment of step 1, and someone is woken, or step 3 comes
 * after a in the seq_cst order and the parking worker sees the task. Either c
 * sees a searcher, or that searcher's step 2 comes after, and its step 3 sees
 * the task. A searcher that finds work and was the last searcher calls
 * wake_one itself, so the chain of searchers does not end while work remains.
 *
 * Migration hazard. A coroutine may resume on another thread, so no address of
 * thread-local state may be kept across a switch. The compiler may compute a TLS
 * address once per function and keep it in a register across weft__ctx_swap,
 * as across any call; hence every access to the current worker goes through
 * weft__worker_self(), which is never inlined and is opaque to the optimiser.
 */
#include "internal.h"
#include "io.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

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
#define SPIN_NS        30000u   /* then more such rounds, for this long, before a worker parks */
#define GAP_MIN_NS     2000u    /* a search that leaves tasks to a busy owner looks again after */
#define GAP_MAX_NS     16000u   /* ... this, doubling up to this (below SPIN_NS, see find_work) */
#define STALL_NS_DEFAULT 500000000u   /* weft_config.stall_ns */

static WEFT__TLS struct weft__worker *tls_worker;

#if defined(WEFT__TSAN)
_Atomic unsigned weft__tsan_fence_word;
#endif

WEFT__NOINLINE struct weft__worker *weft__worker_self(void)
{
    struct weft__worker *w = tls_worker;
    __asm__ volatile("" : "+r"(w));   /* opaque: calls are never merged or hoisted */
    return w;
}

_Noreturn WEFT__COLD void weft__panic(const char *file, int line, const char *msg)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "weft: %s (%s:%d)\n", msg, file, line);
    if (n > 0) {
        ssize_t rc = write(STDERR_FILENO, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
        (void)rc;
    }
    abort();
}

void weft__futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

void weft__futex_wait_until(_Atomic uint32_t *addr, uint32_t val, uint64_t until)
{
    if (until == UINT64_MAX) {
        weft__futex_wait(addr, val);
        return;
    }
    struct timespec abs = {
        .tv_sec = (time_t)(until / 1000000000u),
        .tv_nsec = (long)(until % 1000000000u),
    };
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET_PRIVATE, val, &abs, NULL,
            FUTEX_BITSET_MATCH_ANY);   /* absolute, CLOCK_MONOTONIC */
}

void weft__futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}


/* ---- context switching ----------------------------------------------------- */

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
    weft__ctx_swap(&from->ctx, &to->ctx);
#if defined(WEFT__ASAN)
    __sanitizer_finish_switch_fiber(from->asan_fake, NULL, NULL);
#endif
}

/* ---- queues ---------------------------------------------------------------- */

static void wake_one(weft_rt *rt);

/*
 * The global queue is a list of arrays of task pointers (4 KiB each), not a
 * list linked through the tasks: a worker that spawns a million tasks sends
 * most of them here, and taking a batch from a list of tasks would miss the
 * cache once per task, one miss after another, under the lock. Arrays of a
 * fixed size are never copied, and the lock is never held across more than
 * one allocation. Only when no array can be had (no memory) do tasks wait on
 * a list behind them, since a push must not fail.
 */
#define GQ_CHUNK ((4096 - 2 * sizeof(void *)) / sizeof(weft_task *))

struct weft__gq_chunk {
    struct weft__gq_chunk *next;
    uint32_t               head, tail;   /* tasks[head..tail) are queued */
    weft_task             *tasks[GQ_CHUNK];
};

/* Holds gq_lock. The array to append to, with room; NULL if none can be had. */
static struct weft__gq_chunk *gq_tail_chunk(weft_rt *rt)
{
    struct weft__gq_chunk *c = rt->gq_last;
    if (c && c->tail < GQ_CHUNK)
        return c;
    if ((c = rt->gq_spare))
        rt->gq_spare = NULL;
    else if (!(c = malloc(sizeof(*c))))
        return NULL;
    c->next = NULL;
    c->head = c->tail = 0;
    if (rt->gq_last)
        rt->gq_last->next = c;
    else
        rt->gq_first = c;
    rt->gq_last = c;
    return c;
}

/* Appends n tasks, oldest first. */
static void global_push_batch(weft_rt *rt, weft_task *const *batch, size_t n)
{
    struct weft__gq_chunk *c;
    pthread_mutex_lock(&rt->gq_lock);
    for (size_t i = 0; i < n; i++) {
        if (!rt->gq_head && (c = gq_tail_chunk(rt))) {
            c->tasks[c->tail++] = batch[i];
            continue;
        }
        batch[i]->next = NULL;   /* behind the arrays, in order */
        if (rt->gq_tail)
            rt->gq_tail->next = batch[i];
        else
            rt->gq_head = batch[i];
        rt->gq_tail = batch[i];
    }
    atomic_store_explicit(&rt->gq_len, atomic_load_explicit(&rt->gq_len, memory_order_relaxed) + n,
                          memory_order_relaxed);   /* a hint; the lock orders the queue */
    pthread_mutex_unlock(&rt->gq_lock);
}

static void global_push(weft_rt *rt, weft_task *t)
{
    global_push_batch(rt, &t, 1);
}

/* Holds gq_lock. Takes up to n of the oldest tasks into batch; returns how many. */
static size_t gq_take(weft_rt *rt, weft_task **batch, size_t n)
{
    size_t k = 0;
    struct weft__gq_chunk *c;
    while (k < n && (c = rt->gq_first)) {
        while (k < n && c->head < c->tail)
            batch[k++] = c->tasks[c->head++];
        if (c->head < c->tail)
            break;
        if (c == rt->gq_last) {   /* emptied: append to it afresh */
            c->head = c->tail = 0;
            break;
        }
        rt->gq_first = c->next;
        if (rt->gq_spare)
            free(c);
        else
            rt->gq_spare = c;
    }
    for (; k < n && rt->gq_head; k++) {
        batch[k] = rt->gq_head;
        rt->gq_head = batch[k]->next;
    }
    if (!rt->gq_head)
        rt->gq_tail = NULL;
    atomic_store_explicit(&rt->gq_len, atomic_load_explicit(&rt->gq_len, memory_order_relaxed) - k,
                          memory_order_relaxed);
    return k;
}

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

static void overflow(struct weft__worker *w, weft_task *t);

/* The owner. Queues t at the bottom of w's deque, or overflows. */
static void local_put(struct weft__worker *w, weft_task *t)
{
    if (!weft__deque_push(&w->dq, t, due_of(w, t)))
        overflow(w, t);
}

/* The owner, whose deque refused t. A batch of
 * the deque's oldest tasks goes to the global queue, under one lock, so a
 * worker that spawns far more than its deque holds pays the lock once per
 * batch. Only tasks that never ran go there: a task woken by a timer, say,
 * must not wait behind a hundred thousand fresh spawns. Those of the batch
 * that ran before go back to the deque's bottom, and t takes the room made. */
static void overflow(struct weft__worker *w, weft_task *t)
{
    weft_task *batch[GQ_BATCH];
    size_t n = weft__deque_grab(&w->dq, batch, GQ_BATCH), fresh = 0;
    for (size_t i = 0; i < n; i++) {
        if (!never_ran(batch[i]))
            weft__deque_push(&w->dq, batch[i], tick_of(w));   /* cannot fail: the grab made room */
        else
            batch[fresh++] = batch[i];
    }
    if (fresh)
        global_push_batch(w->rt, batch, fresh);
    if (!weft__deque_push(&w->dq, t, due_of(w, t)))
        global_push(w->rt, t);   /* no room made: a thief raced the grab, or none was fresh */
}

/* The owner. Takes the global queue's oldest task and moves up to a fair
 * share of the next ones to w's deque, under the same lock. */
static weft_task *global_take(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    if (atomic_load_explicit(&rt->gq_len, memory_order_relaxed) == 0)
        return NULL;
    weft_task *batch[GQ_BATCH];
    pthread_mutex_lock(&rt->gq_lock);
    size_t want = atomic_load_explicit(&rt->gq_len, memory_order_relaxed) / rt->nworkers + 1;
    size_t n = gq_take(rt, batch, want < GQ_BATCH ? want : GQ_BATCH);
    pthread_mutex_unlock(&rt->gq_lock);
    if (n == 0)
        return NULL;
    /* Newest first, so that the owner's LIFO takes them oldest first. */
    for (size_t i = n - 1; i > 0; i--)
        if (!weft__deque_push(&w->dq, batch[i], tick_of(w)))
            global_push(rt, batch[i]);
    if (n > 2 && rt->nworkers > 1)
        wake_one(rt);
    return batch[0];
}

static weft_task *global_pop(weft_rt *rt)
{
    if (atomic_load_explicit(&rt->gq_len, memory_order_relaxed) == 0)
        return NULL;
    weft_task *t = NULL;
    pthread_mutex_lock(&rt->gq_lock);
    gq_take(rt, &t, 1);
    pthread_mutex_unlock(&rt->gq_lock);
    return t;
}

/* Wakes a parked worker whose wake word was just set: it sleeps on the word's
 * futex, or in its ring or epoll set. */
static void wake_worker(struct weft__worker *w)
{
    weft__fence();   /* the wake word's store before in_io's load: pairs with park_worker */
    if (atomic_load_explicit(&w->in_io, memory_order_seq_cst))
        weft__io_kick(w);
    else
        weft__futex_wake(&w->wake, 1);
}

/*
 * Steps a-c of the worker park protocol (see the top of this file): the caller
 * has just published a runnable task.
 */
static void wake_one(weft_rt *rt)
{
    weft__fence();                     /* b: pairs with the parker's step 3 */
    if (atomic_load_explicit(&rt->nspinning, memory_order_seq_cst) != 0 ||
        atomic_load_explicit(&rt->nidle, memory_order_seq_cst) == 0)
        return;
    unsigned zero = 0;
    if (!atomic_compare_exchange_strong_explicit(&rt->nspinning, &zero, 1,
            memory_order_seq_cst, memory_order_relaxed))
        return;                                                    /* someone else is searching */
    pthread_mutex_lock(&rt->idle_lock);
    struct weft__worker *w = rt->idle;
    if (w) {
        rt->idle = w->idle_next;
        atomic_fetch_sub_explicit(&rt->nidle, 1, memory_order_seq_cst);
    }
    pthread_mutex_unlock(&rt->idle_lock);
    if (!w) {
        atomic_fetch_sub_explicit(&rt->nspinning, 1, memory_order_seq_cst);
        return;
    }
    atomic_store_explicit(&w->wake, WEFT__WAKE_GO, memory_order_release);   /* the woken worker counts as searching */
    wake_worker(w);
}

/* The owner. Queues t on w and wakes a worker that could steal it. */
static void push_local(struct weft__worker *w, weft_task *t)
{
    local_put(w, t);
    if (w->rt->nworkers > 1)
        wake_one(w->rt);
}

static void yq_push(struct weft__worker *w, weft_task *t)
{
    t->next = NULL;
    if (w->yq_tail)
        w->yq_tail->next = t;
    else
        w->yq_head = t;
    w->yq_tail = t;
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
        while (x) {
            weft_task *next = x->next;
            if (x->pins)
                yq_push(w, x);   /* pinned here: never where thieves look */
            else
                local_put(w, x);
            x = next;
        }
        wake_one(w->rt);
    }
    return t;
}


static uint32_t rng_next(struct weft__worker *w)
{
    uint64_t x = w->rng;   /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w->rng = x;
    return (uint32_t)(x >> 32);
}

/*
 * The owner. Takes or replaces w's runnext. Thieves take it with a CAS, so
 * the owner must take or replace a task there with an exchange; with one
 * worker there are no thieves, the slot is the owner's alone, and a plain
 * load and store do.
 */
static inline weft_task *runnext_take(struct weft__worker *w)
{
    weft_task *t = atomic_load_explicit(&w->runnext, memory_order_relaxed);
    if (!t)
        return NULL;
    if (w->rt->nworkers == 1) {
        atomic_store_explicit(&w->runnext, NULL, memory_order_relaxed);   /* no thieves */
        return t;
    }
    return atomic_exchange_explicit(&w->runnext, NULL, memory_order_acquire);   /* pairs with runnext_put */
}

static inline weft_task *runnext_put(struct weft__worker *w, weft_task *t)
{
    if (w->rt->nworkers == 1) {
        weft_task *old = atomic_load_explicit(&w->runnext, memory_order_relaxed);
        atomic_store_explicit(&w->runnext, t, memory_order_relaxed);      /* no thieves */
        return old;
    }
    weft_task *old = atomic_load_explicit(&w->runnext, memory_order_relaxed);
    if (!old) {
        /* Thieves only empty a full slot, so an empty one stays empty until
         * we fill it: a plain store does, without a locked instruction. */
        atomic_store_explicit(&w->runnext, t, memory_order_release);   /* publishes t to thieves */
        return NULL;
    }
    return atomic_exchange_explicit(&w->runnext, t, memory_order_acq_rel);   /* publishes t to thieves */
}

/* The owner. The bottom of w's deque; without thieves, without a fence. */
static inline weft_task *local_take(struct weft__worker *w)
{
    return w->rt->nworkers == 1 ? weft__deque_take_alone(&w->dq) : weft__deque_take(&w->dq);
}

/* A worker of its runtime. Claims the due timers; their tasks become runnable
 * here. Returns whether there were any. */
static bool fire_timers(struct weft__worker *w)
{
    struct weft__timers *ts = w->rt->timers;
    /* The clock is read only when timers are armed; fire looks at the
     * earliest deadline itself before it takes the lock. */
    return weft__timers_next(ts) != UINT64_MAX && weft__timers_fire(ts, weft_now()) != 0;
}

/* The owner. Whether w's handoff can take a task: it is empty, and the
 * fairness tick is not next (a handoff counts as a schedule, see pick_next). */
static inline bool handoff_open(const struct weft__worker *w)
{
    return !w->handoff && w->fair_left > 1;
}

/*
 * Pinned tasks (weft_pin). A pinned task runs only on its home worker, and is
 * never put where thieves look (runnext, the deque, the global queue). Made
 * runnable by its home worker, it joins the yield queue, which is private; by
 * any other thread, it is pushed on the home worker's inbox, a lock-free
 * stack (any thread pushes, the owner takes the whole stack with one
 * exchange), and the home worker is woken if it is parked:
 *   1. the waker pushes the task (seq_cst CAS), full fence, and reads nidle;
 *      if some worker is idle, it takes the home worker off the idle list if
 *      it is there, and wakes it as wake_one wakes a worker;
 *   2. a parking worker, in step 3 of the park protocol (after its own fence),
 *      looks at its inbox too.
 * Either the waker sees the worker on the idle list, or the worker's step 3
 * comes after the push and sees it. A worker that is not parked looks at its
 * inbox at every schedule: one load of a line that wakers write anyway.
 * With one worker pinning changes nothing, and is not looked at.
 */

/* The owner. Moves the tasks on w's inbox to its yield queue, oldest first. */
static WEFT__NOINLINE void inbox_take(struct weft__worker *w)
{
    weft_task *t = atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire);   /* pairs with inbox_push */
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

/* Any thread but h's: queues t, pinned to h, on h's inbox and wakes h if it
 * is parked (steps 1 above). */
static void inbox_push(struct weft__worker *h, weft_task *t)
{
    weft_rt *rt = h->rt;
    weft_task *head = atomic_load_explicit(&h->inbox, memory_order_relaxed);
    do
        t->next = head;
    while (!atomic_compare_exchange_weak_explicit(&h->inbox, &head, t,
               memory_order_seq_cst, memory_order_relaxed));   /* publishes t; pairs with inbox_take */
    weft__fence();   /* the push before nidle: pairs with park_worker's step 3 */
    if (atomic_load_explicit(&rt->nidle, memory_order_seq_cst) == 0)
        return;
    bool found = false;
    pthread_mutex_lock(&rt->idle_lock);
    for (struct weft__worker **p = &rt->idle; *p; p = &(*p)->idle_next) {
        if (*p == h) {
            *p = h->idle_next;
            atomic_fetch_sub_explicit(&rt->nidle, 1, memory_order_seq_cst);
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&rt->idle_lock);
    if (!found)
        return;   /* running, searching, or being woken: it looks at its inbox */
    atomic_fetch_add_explicit(&rt->nspinning, 1, memory_order_seq_cst);   /* it starts out searching */
    atomic_store_explicit(&h->wake, WEFT__WAKE_GO, memory_order_release);
    wake_worker(h);
}

/* Any thread. Makes t, pinned, runnable on its home worker; w is the calling
 * worker of t's runtime, or NULL. */
static WEFT__NOINLINE void ready_pinned(struct weft__worker *w, weft_task *t)
{
    struct weft__worker *h = t->home;
    if (w == h) {
        /* The yield queue is the monitor's while it rescues this worker. */
        bool user = atomic_load_explicit(&w->in_user, memory_order_relaxed);
        if (user)
            weft__owner_enter(w);
        if (w->finishing && handoff_open(w))
            w->handoff = t;   /* private too */
        else
            yq_push(w, t);
        if (user)
            weft__owner_leave(w);
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

/* The owner. The next task to run on w, or NULL. */
static weft_task *pick_next(struct weft__worker *w)
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
        weft__io_poll(w);         /* IO does not wait behind a long run of tasks */
        fire_timers(w);           /* nor do sleepers */
        if ((t = global_pop(w->rt)) ||
            ((w->shuffle || weft__deque_top_due(&w->dq, tick)) &&
             (t = weft__deque_steal(&w->dq))) ||
            (t = yq_pop(w)))
            return t;
    } else if (WEFT__UNLIKELY(tick % TIMER_TICKS == 0)) {
        /* The fairness tick alone is too rare for sleepers: 61 schedules
         * that each start a coroutine on a fresh stack page take over a
         * millisecond where a page fault costs 20 us. With timers armed,
         * this reads the clock once per TIMER_TICKS schedules. */
        fire_timers(w);
    }
    if ((t = runnext_take(w)))
        return t;
    if ((t = local_take(w)) || (t = yq_pop(w)) || (t = global_take(w)))
        return t;
    /* Out of work: submit what our coroutines queued and reap what is done. */
    if (weft__io_poll(w) && ((t = runnext_take(w)) || (t = local_take(w))))
        return t;
    return NULL;
}


/* Any thread. Makes t runnable: on the calling worker's handoff or runnext if
 * it belongs to t's runtime, else on the global queue. */
static void ready(weft_task *t)
{
    weft_rt *rt = t->rt;
    struct weft__worker *w = weft__worker_self();
    if (WEFT__UNLIKELY(t->pins) && rt->nworkers > 1) {
        ready_pinned(w && w->rt == rt ? w : NULL, t);
        return;
    }
    if (w && w->rt == rt && !(w->shuffle && (rng_next(w) & 1))) {
        if (w->finishing && handoff_open(w)) {
            w->handoff = t;
            return;
        }
        weft_task *old = runnext_put(w, t);
        if (old)
            local_put(w, old);
        if (rt->nworkers > 1)
            wake_one(rt);
    } else {
        if (weft__inherited(rt))
            return;   /* a task of the parent of a fork(): it never runs here */
        global_push(rt, t);
        wake_one(rt);
    }
}

/* Moves batch[0..*n) to the global queue and empties it. */
static void takeover_flush(weft_rt *rt, weft_task **batch, size_t *n)
{
    if (*n)
        global_push_batch(rt, batch, *n);
    *n = 0;
}

size_t weft__takeover(struct weft__worker *w, bool private)
{
    weft_rt *rt = w->rt;
    weft_task *batch[GQ_BATCH];
    size_t n = 0, moved = 0;
    /* The yield queue, in order; tasks pinned here stay. */
    weft_task *x = private ? w->yq_head : NULL;
    if (private)
        w->yq_head = w->yq_tail = NULL;
    while (x) {
        weft_task *next = x->next;
        if (x->pins) {
            yq_push(w, x);
        } else {
            batch[n++] = x;
            moved++;
            if (n == GQ_BATCH)
                takeover_flush(rt, batch, &n);
        }
        x = next;
    }
    /* runnext and the deque, as a thief takes them. */
    weft_task *r = atomic_load_explicit(&w->runnext, memory_order_relaxed);
    if (r && atomic_compare_exchange_strong_explicit(&w->runnext, &r, NULL,
                                                     memory_order_acquire, memory_order_relaxed)) {
        batch[n++] = r;
        moved++;
        if (n == GQ_BATCH)
            takeover_flush(rt, batch, &n);
    }
    while (!weft__deque_empty(&w->dq)) {
        weft_task *t = weft__deque_steal(&w->dq);
        if (!t)
            continue;   /* lost a race with a thief */
        batch[n++] = t;
        moved++;
        if (n == GQ_BATCH)
            takeover_flush(rt, batch, &n);
    }
    takeover_flush(rt, batch, &n);
    if (moved)
        wake_one(rt);   /* a searcher that finds work wakes the next (find_work) */
    return moved;
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
            if (prev->pins && w->rt->nworkers > 1)
                yq_push(w, prev);                                /* pinned here: private */
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
    weft_task *next = pick_next(w);
    w->current = next;
    fiber_switch(from, next ? fiber_of(w, next) : &w->sched, act == WEFT__ACT_EXIT);
}

/* The current task parks. Returns when it is resumed. */
static void switch_away(struct weft__worker *w, weft_task *self)
{
    w->prev = self;
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
    weft__owner_enter(w);
    weft_task *next = pick_next(w);
    if (!next) {
        weft__owner_leave(w);
        return;                                                  /* nothing else to run here */
    }
    yq_push(w, self);                                            /* private: safe before the switch */
    w->current = next;
    fiber_switch(self->fiber, fiber_of(w, next), false);
    struct weft__worker *now = weft__worker_self();
    after_switch(now);
    weft__owner_leave(now);
}

/* ---- tasks ---------------------------------------------------------------------- */

static void task_entry(void *arg)
{
    weft_task *t = arg;
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
        global_push(t->rt, t);
        wake_one(t->rt);
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

/* ---- workers -------------------------------------------------------------------- */

/*
 * A searching worker steals from the global queue and other workers' deques.
 * A victim's runnext it takes only if the victim has not scheduled anything
 * since the thief saw that task there, some microseconds before, in an earlier
 * round of its search: a task just woken by a running task is usually run by
 * that worker as soon as the waker blocks, as in message passing, and stealing
 * it puts the two on different cores, where every hand-over between them
 * crosses the cache. Go's runqsteal waits 3 us, then takes runnext only if it
 * still holds the same task, for the same reason. The same task is weak
 * evidence here: a coroutine that spawns and joins, or plays ping-pong, puts
 * the same handle there again on every round trip (handles are reused at
 * once), and a thief that took it would move the whole exchange to its core.
 * The victim's schedule count (its tick) tells whether it has moved on.
 */
enum steal_round { ROUND_PLAIN, ROUND_LOOK, ROUND_TAKE };

/* A thief's patience: in the LOOK round it notes `what` it sees at v, and
 * v's tick; in the TAKE round it may take only what it noted there then, and
 * only if v has scheduled nothing since. */
static bool seen_since_look(struct weft__sighting *s, enum steal_round round,
                            const struct weft__worker *v, uintptr_t what)
{
    if (round == ROUND_PLAIN)
        return false;
    uint32_t tick = tick_of(v);
    bool seen = round == ROUND_TAKE && s->victim == v && s->what == what && s->tick == tick;
    *s = (struct weft__sighting){ .victim = v, .what = what, .tick = tick };   /* for the next TAKE */
    return seen;
}

/*
 * A deque that holds a single task is treated as runnext is: its owner most
 * likely spawned it and is about to wait for it (spawn, then join), and runs
 * it as soon as it blocks. A thief takes it only if it sat there, at the same
 * index and with no schedule on its owner, since the LOOK round. A deque of
 * two or more (a fork-join node's children) is stolen from at once.
 */
static bool lone_task_waits(struct weft__worker *w, const struct weft__worker *v, enum steal_round round)
{
    size_t top = atomic_load_explicit(&v->dq.top, memory_order_relaxed);         /* a hint: the */
    size_t bottom = atomic_load_explicit(&v->dq.bottom, memory_order_relaxed);   /* steal decides */
    return bottom - top == 1 && !seen_since_look(&w->lone_seen, round, v, top);
}

/* A task, or NULL; *waiting: a busy owner was seen that will likely run its
 * own tasks: a victim's lone task or runnext was left for it, or another
 * worker spawned since the last look (its spawns are taken, or about to be,
 * by itself: a coroutine spawning and joining one at a time). */
static weft_task *steal_any(struct weft__worker *w, enum steal_round round, bool *waiting)
{
    weft_rt *rt = w->rt;
    weft_task *t = global_take(w);
    if (t)
        return t;
    unsigned n = rt->nworkers, start = rng_next(w) % n;
    uint64_t spawns = 0;
    for (unsigned i = 0; i < n; i++) {
        struct weft__worker *v = rt->workers[(start + i) % n];
        if (v == w)
            continue;
        spawns += atomic_load_explicit(&v->spawned, memory_order_relaxed);   /* a hint */
        if (lone_task_waits(w, v, round))
            *waiting = true;
        else if ((t = weft__deque_steal(&v->dq)))
            return t;
        if (round == ROUND_PLAIN)
            continue;   /* runnext is looked at only in the LOOK and TAKE rounds */
        weft_task *x = atomic_load_explicit(&v->runnext, memory_order_relaxed);
        if (!x)
            continue;
        if (seen_since_look(&w->rn_seen, round, v, (uintptr_t)x) &&
            atomic_compare_exchange_strong_explicit(&v->runnext, &x, NULL,
                                                    memory_order_acquire, memory_order_relaxed))
            return x;
        *waiting = true;
    }
    if (spawns != w->spawns_seen) {
        w->spawns_seen = spawns;
        *waiting = true;
    }
    return NULL;
}

static bool work_visible(weft_rt *rt)
{
    if (atomic_load_explicit(&rt->gq_len, memory_order_seq_cst))
        return true;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct weft__worker *v = rt->workers[i];
        if (!weft__deque_empty(&v->dq) || atomic_load_explicit(&v->runnext, memory_order_seq_cst))
            return true;
    }
    return false;
}

static void stop_spinning(struct weft__worker *w)
{
    w->spinning = false;
    if (atomic_fetch_sub_explicit(&w->rt->nspinning, 1, memory_order_seq_cst) == 1)
        wake_one(w->rt);   /* we were the last searcher: keep the chain going */
}

/* Takes w off the idle list and makes it a searcher again. Returns false if a
 * waker took it off first (and will set its wake word). */
static bool leave_idle(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    bool removed = false;
    pthread_mutex_lock(&rt->idle_lock);
    for (struct weft__worker **p = &rt->idle; *p; p = &(*p)->idle_next) {
        if (*p == w) {
            *p = w->idle_next;
            atomic_fetch_sub_explicit(&rt->nidle, 1, memory_order_seq_cst);
            removed = true;
            break;
        }
    }
    pthread_mutex_unlock(&rt->idle_lock);
    if (removed) {
        atomic_fetch_add_explicit(&rt->nspinning, 1, memory_order_seq_cst);
        w->spinning = true;
    }
    return removed;
}

/*
 * The timer watcher. A parked worker that sees timers armed, and no other
 * watcher, becomes the watcher and sleeps only until the earliest deadline.
 * Dekker pair with weft__timers_changed(): the watcher stores itself in
 * rt->watcher, fences, then reads the earliest deadline; an arm stores a new
 * earliest deadline, fences, then reads rt->watcher. So either the watcher's
 * sleep covers the new timer or the arm sees the watcher and kicks it (wake
 * word TIMERS: recompute). Returns the deadline to sleep until, UINT64_MAX for
 * none.
 */
static uint64_t watch(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    if (weft__timers_next(rt->timers) == UINT64_MAX)
        return UINT64_MAX;   /* an arm now finds no watcher and wakes an idle worker */
    struct weft__worker *cur = atomic_load_explicit(&rt->watcher, memory_order_seq_cst);
    if (cur != w) {
        if (cur || !atomic_compare_exchange_strong_explicit(&rt->watcher, &cur, w,
                       memory_order_seq_cst, memory_order_relaxed))
            return UINT64_MAX;   /* another parked worker watches */
    }
    weft__fence();   /* rt->watcher before next: pairs with weft__timers_changed() */
    return weft__timers_next(rt->timers);
}

/* Asks parked worker v to look at the earliest deadline again: true if the
 * caller must now wake it; false if v is being woken already. */
static bool mark_timers(struct weft__worker *v)
{
    uint32_t none = WEFT__WAKE_NONE;
    return atomic_compare_exchange_strong_explicit(&v->wake, &none, WEFT__WAKE_TIMERS,
                                                   memory_order_release, memory_order_relaxed);
}

/* w, off the idle list again, gives up watching. If timers are armed, another
 * parked worker takes over, so that a busy w does not hold back the sleepers. */
static void unwatch(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    struct weft__worker *me = w;
    if (atomic_load_explicit(&rt->watcher, memory_order_relaxed) != w ||
        !atomic_compare_exchange_strong_explicit(&rt->watcher, &me, NULL,
            memory_order_seq_cst, memory_order_relaxed))
        return;
    if (weft__timers_next(rt->timers) == UINT64_MAX ||
        atomic_load_explicit(&rt->nidle, memory_order_seq_cst) == 0)
        return;   /* nobody to hand over to: busy workers fire timers as they go */
    pthread_mutex_lock(&rt->idle_lock);
    struct weft__worker *next = rt->idle;
    bool kick = next && mark_timers(next);
    pthread_mutex_unlock(&rt->idle_lock);
    if (kick)
        wake_worker(next);   /* workers outlive the runtime's idle list: safe unlocked */
}

void weft__timers_changed(weft_rt *rt)
{
    weft__fence();   /* the new earliest deadline before rt->watcher: pairs with watch() */
    struct weft__worker *v = atomic_load_explicit(&rt->watcher, memory_order_seq_cst);
    if (!v) {
        wake_one(rt);   /* it will park again, and watch */
        return;
    }
    if (mark_timers(v))
        wake_worker(v);
    /* Otherwise it is waking already and will look at the heap again. */
}

/* Steps 1-4 of the park protocol. Returns with w searching again. */
static void park_worker(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    pthread_mutex_lock(&rt->idle_lock);                            /* 1 */
    w->idle_next = rt->idle;
    rt->idle = w;
    atomic_fetch_add_explicit(&rt->nidle, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&rt->idle_lock);
    w->spinning = false;                                           /* 2 */
    atomic_fetch_sub_explicit(&rt->nspinning, 1, memory_order_seq_cst);
    weft__fence();                     /* 3 */
    uint64_t due = weft__timers_next(rt->timers);
    if ((work_visible(rt) || atomic_load_explicit(&w->inbox, memory_order_seq_cst) || (due != UINT64_MAX && due <= weft_now()) ||
         atomic_load_explicit(&rt->stopping, memory_order_seq_cst)) &&
        leave_idle(w)) {
        weft__monitor_nudge(rt);
        return;
    }
    /* Otherwise a waker took us off the list and counted us as searching; its
     * store to our wake word is on its way. */
    uint32_t v;
    while ((v = atomic_load_explicit(&w->wake, memory_order_acquire)) != WEFT__WAKE_GO) {   /* 4 */
        if (v == WEFT__WAKE_TIMERS)   /* a kick: the earliest deadline moved */
            atomic_compare_exchange_strong_explicit(&w->wake, &v, WEFT__WAKE_NONE,
                                                    memory_order_relaxed, memory_order_relaxed);
        uint64_t until = watch(w);
        if (until != UINT64_MAX && until <= weft_now()) {
            /* Due timers make tasks runnable here: leave the idle list
             * ourselves, unless a waker already did. */
            if (weft__timers_fire(rt->timers, weft_now()) && leave_idle(w)) {
                unwatch(w);
                weft__monitor_nudge(rt);
                return;
            }
            continue;
        }
        /* Idle time gives memory back, a batch at a time, between looks at
         * the wake word and the timers: the watcher may be the one trimming,
         * and a trim of 100,000 slots takes seconds. */
        if (weft__stacks_trim(rt->stacks, &w->wake))
            continue;
        uint64_t trim = weft__stacks_trim_due(rt->stacks);
        if (trim < until)
            until = trim;
        /* With IO in flight we sleep in the ring or the epoll set, to reap
         * it. Wakers then kick that instead of the futex: in_io is set, then
         * the wake word read, each side fenced, so either we see the wake or
         * the waker sees in_io. A completion or an event may make a task
         * runnable here: then we leave the idle list ourselves, unless a
         * waker already did. */
        if (weft__io_busy(w)) {
            atomic_store_explicit(&w->in_io, 1, memory_order_seq_cst);
            weft__fence();
            bool woke = false;
            if (atomic_load_explicit(&w->wake, memory_order_seq_cst) == WEFT__WAKE_NONE)
                woke = weft__io_sleep(w, until);
            atomic_store_explicit(&w->in_io, 0, memory_order_relaxed);
            if (woke && leave_idle(w)) {
                unwatch(w);
                weft__monitor_nudge(rt);
                return;
            }
            continue;
        }
        weft__futex_wait_until(&w->wake, WEFT__WAKE_NONE, until);
    }
    atomic_store_explicit(&w->wake, WEFT__WAKE_NONE, memory_order_relaxed);
    unwatch(w);
    w->spinning = true;
    weft__monitor_nudge(rt);
}

/* Whether the searchers (the caller among them) are no more than the
 * workers that are neither searching nor parked. A hint: counters only. */
static bool few_searchers(weft_rt *rt)
{
    unsigned searching = atomic_load_explicit(&rt->nspinning, memory_order_relaxed);
    unsigned idle = atomic_load_explicit(&rt->nidle, memory_order_relaxed);
    return 2 * searching + idle <= rt->nworkers;
}

/* The idle loop's search. Returns a task, or NULL when the runtime stops. */
static weft_task *find_work(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    for (;;) {
        if (!w->spinning) {
            w->spinning = true;
            atomic_fetch_add_explicit(&rt->nspinning, 1, memory_order_seq_cst);
        }
        uint64_t until = 0, gap = 0;
        for (unsigned round = 0;; round++) {
            fire_timers(w);
            /* Our own queues too: completions reaped while parked land there. */
            bool waiting = false;
            weft_task *t = pick_next(w);
            if (!t)
                t = steal_any(w, round >= SPIN_ROUNDS - 1 ? ROUND_TAKE :
                                 round == SPIN_ROUNDS - 3 ? ROUND_LOOK : ROUND_PLAIN, &waiting);
            if (t) {
                stop_spinning(w);
                return t;
            }
            if (round >= SPIN_ROUNDS - 1) {
                /* A busy owner renews the search: parking now would only
                 * make that owner's next spawn pay for a futex wake, about
                 * every SPIN_NS. But only while searchers are no more than
                 * the busy workers: sixteen workers must not keep fifteen
                 * cores spinning for one that spawns and joins. */
                uint64_t now = weft_now();
                if (!until || (waiting && few_searchers(rt)))
                    until = now + rt->spin_ns;
                if (now >= until)
                    break;
                /* And it spaces our looks out, up to GAP_MAX_NS apart. Each
                 * look pulls the owner's deque ends, runnext and tick into
                 * our cache, and its next CAS on them waits for the lines to
                 * come back: one at a time on 2 workers, looks every 5 us
                 * cost it 107 ns a task, every 16 us 95 ns, 1 worker 90.
                 * Work queued meanwhile waits at most GAP_MAX_NS: the global
                 * queue ends the gap at once, the owner's deque is seen at
                 * the next look. GAP_MAX_NS stays below SPIN_NS, so a look
                 * that finds the owner gone quiet leaves one more before we
                 * park. */
                gap = !waiting ? 0 : !gap ? GAP_MIN_NS : gap * 2 < GAP_MAX_NS ? gap * 2 : GAP_MAX_NS;
                if (gap) {
                    while (weft_now() < now + gap &&
                           !atomic_load_explicit(&rt->gq_len, memory_order_relaxed))
                        for (unsigned i = 0; i < 16; i++)
                            weft__cpu_relax();
                    continue;
                }
            }
            for (unsigned i = 0; i < 32u << (round < SPIN_ROUNDS ? round : SPIN_ROUNDS - 1); i++)
                weft__cpu_relax();
        }
        if (atomic_load_explicit(&rt->stopping, memory_order_seq_cst)) {
            w->spinning = false;
            atomic_fetch_sub_explicit(&rt->nspinning, 1, memory_order_seq_cst);
            return NULL;
        }
        park_worker(w);
    }
}

static void run(struct weft__worker *w, weft_task *t)
{
    w->current = t;
    fiber_switch(&w->sched, fiber_of(w, t), false);
    after_switch(weft__worker_self());
}

static void *worker_main(void *arg)
{
    struct weft__worker *w = arg;
    tls_worker = w;
    weft__sigpipe_block();   /* a write to a reader that has gone gives -EPIPE alone (io.c) */
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
#if WEFT_HAVE_URING
    if (w->ring && weft__ring_enable(w->ring) != 0) {
        weft__ring_destroy(w->ring);   /* this worker's coroutines use epoll */
        w->ring = NULL;
        if (weft__epset_create(&w->ep) != 0)   /* leaves ep NULL */
            fprintf(stderr, "weft: worker %u has neither an io_uring nor an epoll set; "
                            "its coroutines' waits for IO fail with -ENOMEM\n", w->index);
    }
#endif
    for (;;) {
        weft_task *t = pick_next(w);
        if (!t && !(t = find_work(w)))
            break;
        run(w, t);
    }
    weft__io_poll(w);   /* a weft_close's cancel still queued or unreaped */
    weft__pool_drain(w->rt->stacks, &w->pool);
    if (w->altstack)
        weft__altstack_leave(w->altstack);
    tls_worker = NULL;
    return NULL;
}

/* ---- the runtime ------------------------------------------------------------------ */

static void stop_workers(weft_rt *rt, unsigned started)
{
    atomic_store_explicit(&rt->stopping, 1, memory_order_seq_cst);
    pthread_mutex_lock(&rt->idle_lock);
    struct weft__worker *w = rt->idle;
    rt->idle = NULL;
    while (w) {
        struct weft__worker *next = w->idle_next;
        atomic_fetch_sub_explicit(&rt->nidle, 1, memory_order_seq_cst);
        atomic_fetch_add_explicit(&rt->nspinning, 1, memory_order_seq_cst);
        atomic_store_explicit(&w->wake, WEFT__WAKE_GO, memory_order_release);
        wake_worker(w);
        w = next;
    }
    pthread_mutex_unlock(&rt->idle_lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(rt->workers[i]->thread, NULL);
}

/* The process's runtimes, for calls that concern every one of them
 * (weft_close from any thread). Statically initialised: nothing runs before
 * weft_rt_create. */
static pthread_rwlock_t live_lock = PTHREAD_RWLOCK_INITIALIZER;
static weft_rt *live;   /* linked by live_next, under live_lock */

void weft__each_runtime(void (*fn)(weft_rt *rt, void *arg), void *arg)
{
    pthread_rwlock_rdlock(&live_lock);
    for (weft_rt *rt = live; rt; rt = rt->live_next)
        fn(rt, arg);
    pthread_rwlock_unlock(&live_lock);
}

static void live_add(weft_rt *rt)
{
    pthread_rwlock_wrlock(&live_lock);
    rt->live_next = live;
    live = rt;
    pthread_rwlock_unlock(&live_lock);
}

/* Once it returns, no weft__each_runtime() call is still using rt. */
static void live_remove(weft_rt *rt)
{
    pthread_rwlock_wrlock(&live_lock);
    for (weft_rt **p = &live; *p; p = &(*p)->live_next) {
        if (*p == rt) {
            *p = rt->live_next;
            break;
        }
    }
    pthread_rwlock_unlock(&live_lock);
}

/* ---- fork ------------------------------------------------------------------------ */

/*
 * A child of fork() has one thread, a copy of the one that forked, which may
 * be a worker running a coroutine on its stack; the runtimes are copies whose
 * workers do not exist. Their rings' memory is not mapped in the child
 * (io_uring.c asks MADV_DONTFORK), and their epoll sets and eventfds are open
 * file descriptions shared with the parent, where a child's epoll_ctl or read
 * would take the parent's events. So the child must never touch them, and
 * the handler below makes sure weft does not:
 *   1. a new fork generation: every runtime made before is inherited
 *      (weft__inherited), and calls on it or on its tasks return -ECHILD;
 *      a wake-up of one of its tasks (a channel or lock shared in memory
 *      with the parent's coroutines) is dropped in ready();
 *   2. the forking thread is no worker any more: weft's calls act as from a
 *      plain thread (plain system calls, futex waits), and a coroutine that
 *      returns there stops the child (task_entry), since nothing could run
 *      after it;
 *   3. the list of runtimes is emptied, so weft_close visits none of the
 *      parent's, and its lock made anew: a thread that held it at the fork
 *      does not exist here to release it.
 * No prepare or parent handler is needed: the child keeps nothing of the
 * list, so it need not be consistent at the fork, and the parent goes on as
 * if nothing happened. weft_rt_create makes fresh runtimes in the child. A
 * child made without these handlers (vfork, posix_spawn, _Fork, clone) may
 * only exec or _exit, as POSIX says of a child of a threaded process anyway.
 */
unsigned weft__fork_gen;

static void fork_child(void)
{
    weft__fork_gen++;                                       /* 1 */
    tls_worker = NULL;                                      /* 2 */
    live = NULL;                                            /* 3 */
    pthread_rwlock_t fresh = PTHREAD_RWLOCK_INITIALIZER;
    live_lock = fresh;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_error;

static void atfork_register(void)
{
    atfork_error = -pthread_atfork(NULL, NULL, fork_child);
}

static void rt_free(weft_rt *rt)
{
    for (unsigned i = 0; i < rt->nworkers; i++) {
#if WEFT_HAVE_URING
        weft__ring_destroy(rt->workers[i]->ring);
#endif
        weft__epset_destroy(rt->workers[i]->ep);
        free(rt->workers[i]);
    }
    free(rt->workers);
    if (rt->stacks)
        weft__stacks_destroy(rt->stacks);
    weft__taskmem_destroy(rt->taskmem);
    weft__timers_destroy(rt->timers);
    for (struct weft__gq_chunk *c = rt->gq_first, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(rt->gq_spare);
    pthread_mutex_destroy(&rt->gq_lock);
    pthread_mutex_destroy(&rt->idle_lock);
    free(rt);
}

/* The backend asked for: the configuration's, or WEFT_IO when that says AUTO.
 * Without io_uring support built in, always epoll. */
static int io_backend(int configured)
{
#if WEFT_HAVE_URING
    if (configured != WEFT_IO_AUTO)
        return configured;
    const char *env = getenv("WEFT_IO");
    if (env && strcmp(env, "epoll") == 0)
        return WEFT_IO_EPOLL;
    if (env && strcmp(env, "uring") == 0)
        return WEFT_IO_URING;
    /* Valgrind holds its one lock across io_uring_enter, so every thread
     * stops while one worker sleeps in its ring. */
    if (RUNNING_ON_VALGRIND)
        return WEFT_IO_EPOLL;
    return WEFT_IO_AUTO;
#else
    return configured == WEFT_IO_URING ? -1 : WEFT_IO_EPOLL;
#endif
}

static unsigned default_workers(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int weft_rt_create(weft_rt **out, const weft_config *cfg)
{
    if (!out)
        return -EINVAL;
    weft_config c = cfg ? *cfg : (weft_config){ 0 };
    if (c.workers > WEFT_WORKERS_MAX)
        return -EINVAL;
    if (c.stack_size && (c.stack_size < WEFT_STACK_MIN || c.stack_size > ((size_t)1 << 30)))
        return -EINVAL;
    if (!c.workers)
        c.workers = default_workers();
    if (c.workers > WEFT_WORKERS_MAX)
        c.workers = WEFT_WORKERS_MAX;
    if (!c.stack_size)
        c.stack_size = WEFT_STACK_DEFAULT;
    if (c.io_backend < WEFT_IO_AUTO || c.io_backend > WEFT_IO_EPOLL || c.ring_entries > 32768)
        return -EINVAL;
    if (!c.ring_entries)
        c.ring_entries = 256;
    int backend = io_backend(c.io_backend);
    if (backend < 0)
        return -ENOSYS;   /* built without io_uring */
    int err = weft__guard_install();
    if (err)
        return err;
    pthread_once(&atfork_once, atfork_register);   /* registered once weft is in use */
    if (atfork_error)
        return atfork_error;
    /* The stall report's threshold: WEFT_STALL_MS, else the configuration's. */
    uint64_t stall_ns = c.stall_ns ? c.stall_ns : STALL_NS_DEFAULT;
    const char *stall_ms = getenv("WEFT_STALL_MS");
    if (stall_ms && *stall_ms) {
        char *end;
        unsigned long long ms = strtoull(stall_ms, &end, 10);
        if (*end == 0)
            stall_ns = ms == 0 ? UINT64_MAX : ms > UINT64_MAX / 1000000u ? UINT64_MAX - 1 : ms * 1000000u;
    }
    /* A debugging aid, read here since weft runs nothing before this call. */
    const char *shuffle = getenv("WEFT_SCHED_RANDOM");
    bool random_sched = shuffle && *shuffle && strcmp(shuffle, "0") != 0;

    weft_rt *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return -ENOMEM;
    rt->fork_gen = weft__fork_gen;
    pthread_mutex_init(&rt->gq_lock, NULL);
    pthread_mutex_init(&rt->idle_lock, NULL);
    /* Valgrind runs one thread at a time: a spinning searcher only holds
     * back the worker it waits for. */
    rt->spin_ns = RUNNING_ON_VALGRIND ? 0 : SPIN_NS;
    rt->workers = calloc(c.workers, sizeof(*rt->workers));
    if (!rt->workers || weft__stacks_create(&rt->stacks, c.stack_size) ||
        weft__taskmem_create(&rt->taskmem) ||
        weft__timers_create(&rt->timers)) {
        rt_free(rt);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < c.workers; i++) {
        struct weft__worker *w = aligned_alloc(WEFT__CACHELINE,
            (sizeof(*w) + WEFT__CACHELINE - 1) & ~(size_t)(WEFT__CACHELINE - 1));
        if (!w) {
            rt_free(rt);
            return -ENOMEM;
        }
        memset(w, 0, sizeof(*w));
        w->rt = rt;
        w->index = i;
        w->rng = 0x9e3779b97f4a7c15ull * (i + 1) ^ (uint64_t)(uintptr_t)rt;
        w->shuffle = random_sched;
        w->fair_left = FAIRNESS_TICKS;
        rt->workers[rt->nworkers++] = w;
#if WEFT_HAVE_URING
        if (backend != WEFT_IO_EPOLL && (err = weft__ring_create(&w->ring, c.ring_entries))) {
            if (backend == WEFT_IO_URING) {
                rt_free(rt);
                return err;
            }
            backend = WEFT_IO_EPOLL;   /* refused here: every worker uses epoll */
            for (unsigned k = 0; k < i; k++) {
                weft__ring_destroy(rt->workers[k]->ring);
                rt->workers[k]->ring = NULL;
            }
        }
#endif
    }
    for (unsigned i = 0; i < rt->nworkers; i++) {
        if (!rt->workers[i]->ring && (err = weft__epset_create(&rt->workers[i]->ep))) {
            rt_free(rt);
            return err;
        }
    }
    for (unsigned i = 0; i < rt->nworkers; i++) {
        err = pthread_create(&rt->workers[i]->thread, NULL, worker_main, rt->workers[i]);
        if (err) {
            stop_workers(rt, i);
            rt_free(rt);
            return err == EAGAIN ? -EAGAIN : -err;
        }
    }
    if ((err = weft__monitor_start(rt, stall_ns))) {
        stop_workers(rt, rt->nworkers);
        rt_free(rt);
        return err;
    }
    live_add(rt);
    *out = rt;
    return 0;
}

void weft__count_spawn(weft_rt *rt, struct weft__worker *w)
{
    if (w)
        atomic_store_explicit(&w->spawned, atomic_load_explicit(&w->spawned, memory_order_relaxed) + 1,
                              memory_order_release);             /* pairs with live_tasks() */
    else
        atomic_fetch_add_explicit(&rt->spawned_outside, 1, memory_order_release);
}

/*
 * Tasks spawned and not finished. Each worker counts its own spawns and exits
 * with plain stores (no shared counter for every core to bounce). The exits are
 * read first: a task's spawn happens before its exit, so every exit counted here
 * has its spawn counted too, and 0 means that every task that was ever spawned
 * has finished. Only a live task can spawn another, so 0 stays 0.
 */
static uint64_t live_tasks(weft_rt *rt)
{
    uint64_t exited = 0, spawned = 0;
    for (unsigned i = 0; i < rt->nworkers; i++)
        exited += atomic_load_explicit(&rt->workers[i]->exited, memory_order_seq_cst);
    spawned = atomic_load_explicit(&rt->spawned_outside, memory_order_seq_cst);
    for (unsigned i = 0; i < rt->nworkers; i++)
        spawned += atomic_load_explicit(&rt->workers[i]->spawned, memory_order_seq_cst);
    return spawned - exited;
}

int weft_rt_destroy(weft_rt *rt)
{
    if (!rt)
        return -EINVAL;
    if (weft__inherited(rt))
        return -ECHILD;   /* the parent's: its workers are not here to stop */
    struct weft__worker *w = weft__worker_self();
    if (w && w->rt == rt)
        return -EDEADLK;
    atomic_store_explicit(&rt->destroying, 1, memory_order_seq_cst);
    /* Exits that see `destroying` bump exit_seq and wake us; one that raced
     * with the store above may not, so the wait also times out and rechecks. */
    for (;;) {
        uint32_t seq = atomic_load_explicit(&rt->exit_seq, memory_order_acquire);
        if (live_tasks(rt) == 0)
            break;
        struct timespec ms = { 0, 1000000 };
        syscall(SYS_futex, (uint32_t *)&rt->exit_seq, FUTEX_WAIT_PRIVATE, seq, &ms, NULL, 0);
    }
    live_remove(rt);   /* no coroutine is left to wait on a descriptor */
    stop_workers(rt, rt->nworkers);
    weft__monitor_stop(rt);   /* after the workers, which nudge it as they park */
    weft__epoll_destroy(rt);    /* runtime/io_epoll.c */
    weft__offload_destroy(rt);  /* runtime/offload.c */
    rt_free(rt);
    return 0;
}

/* ---- small public calls ---------------------------------------------------------- */

weft_task *weft_self(void)
{
    struct weft__worker *w = weft__worker_self();
    return w ? w->current : NULL;
}

int weft_worker(void)
{
    struct weft__worker *w = weft__worker_self();
    return w && w->current ? (int)w->index : -EPERM;
}

int weft_workers(void)
{
    struct weft__worker *w = weft__worker_self();
    return w && w->current ? (int)w->rt->nworkers : -EPERM;
}

void weft_yield(void)
{
    struct weft__worker *w = weft__worker_self();
    if (w && w->current)
        weft__yield_current();
    else
        sched_yield();
}

uint64_t weft_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
