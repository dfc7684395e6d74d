/* SPDX-License-Identifier: MIT */
/*
 * Waiting: the one-shot waiter, deadlines and cancellation.
 *
 * Every blocking call in weft (join, sleep, locks, channels, descriptor
 * readiness) publishes a struct weft__waiter somewhere a waker will find it,
 * then calls weft__wait(). The waiter is claimed exactly once, by a CAS of its
 * state from 0 to the result: by the waker (a positive result), by a timer at
 * the caller's deadline (-ETIMEDOUT), or by weft_cancel() (-ECANCELED). Losers
 * of the claim do nothing, so the blocking call only has to take back what it
 * published (unlink itself from a wait list) when its result is negative.
 *
 * Cancellation reaches a parked coroutine through task->waiting, which holds
 * the waiter it is parked on. The canceller must not touch that waiter after
 * the coroutine has left the wait (the waiter lives in its frame). Bit 0 of
 * task->cancelled is the flag, set once; the bits above count the cancellers
 * in flight, each of which may be using the waiter it found:
 *   1. the coroutine stores its waiter in task->waiting, then reads
 *      task->cancelled; the flag set means it claims its own waiter with
 *      -ECANCELED;
 *   2. weft_cancel() sets the flag and counts itself in (one RMW), then reads
 *      task->waiting; it claims a waiter it finds, then counts itself out
 *      (release);
 *   3. the coroutine, once resumed, stores 0 to task->waiting, then reads
 *      task->cancelled, and waits (acquire) while the count is not zero.
 * Steps 1 and 2, and 3 and 2, are store-then-load pairs, one on each side, so
 * at least one side of each sees the other: no cancellation is lost between
 * the check and the park, and a canceller that the coroutine does not see
 * will not find its waiter either.
 * The coroutine's side runs on every wait and the canceller's rarely, so the
 * pairs use an asymmetric barrier (as liburcu's urcu-memb flavour does): the
 * coroutine orders its store and load with a compiler barrier only, and the
 * canceller calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) between its RMW
 * and its load, which runs a full barrier on every thread of the process that
 * is running. A coroutine interrupted between its store and its load has its
 * store visible to the canceller's load; one interrupted before its store
 * reads the flag afterwards; a thread that is not running has passed a full
 * barrier in the kernel's switch. Where membarrier is not available, or under
 * ThreadSanitizer, which does not model it, both sides use full fences
 * (heavy_side / light_side below). The mode is chosen once, before either side
 * first relies on it.
 *
 * A deadline arms a timer (core/timer.c) that claims the waiter with
 * -ETIMEDOUT. The worker that fires it claims under the heap lock and
 * disarming takes that lock, so a waiter claimed by someone else is never
 * touched once weft__wait returns; one the timer claimed stays parked until
 * the firing worker makes it runnable, its last touch.
 *
 * A plain thread has a deadline of its own (thread-local) and is never
 * cancelled; it sleeps on the waiter's state with a futex, with a timeout at
 * its deadline, and claims its waiter itself when that expires.
 */
#include "core.h"
#include "base/sys.h"
#include "timer.h"
#include "io/backend.h"

#include <errno.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/futex.h>

#include <pthread.h>
#include <linux/membarrier.h>

#define CANCEL_FLAG 1u   /* task->cancelled: weft_cancel() was called */
#define CANCEL_ONE  2u   /* task->cancelled: one canceller in flight */

/* How the two sides of the cancellation handshake are ordered (see above). */
enum { BARRIER_UNKNOWN, BARRIER_ASYMMETRIC, BARRIER_FENCES };
static _Atomic int barrier_mode;
/* 1 once the mode is ASYMMETRIC: for weft__owner_enter's light side, which
 * must not call pthread_once on every switch. While it reads 0 that side uses
 * a full fence, which is never weaker. */
_Atomic int weft__barrier_asym;
static pthread_once_t barrier_once = PTHREAD_ONCE_INIT;

static void barrier_choose(void)
{
    int mode = BARRIER_FENCES;
#if !defined(WEFT__TSAN)
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
        mode = BARRIER_ASYMMETRIC;
#endif
    atomic_store_explicit(&barrier_mode, mode, memory_order_release);  /* pthread_once orders it too */
    atomic_store_explicit(&weft__barrier_asym, mode == BARRIER_ASYMMETRIC, memory_order_relaxed);
}

/* The mode, chosen on first use by whichever side comes first. Any thread. */
static inline int barrier(void)
{
    int mode = atomic_load_explicit(&barrier_mode, memory_order_acquire);  /* pairs with barrier_choose */
    if (WEFT__UNLIKELY(mode == BARRIER_UNKNOWN)) {
        pthread_once(&barrier_once, barrier_choose);
        mode = atomic_load_explicit(&barrier_mode, memory_order_acquire);
    }
    return mode;
}

/* Between the coroutine's store and load, steps 1 and 3. */
static inline void light_side(int mode)
{
    if (mode == BARRIER_ASYMMETRIC)
        atomic_signal_fence(memory_order_seq_cst);   /* the canceller's membarrier does the rest */
    else
        weft__fence();
}

/* Between the canceller's RMW and its load, step 2. */
static void heavy_side(int mode)
{
    if (mode == BARRIER_ASYMMETRIC &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        return;
    weft__check(mode != BARRIER_ASYMMETRIC, "membarrier failed after it was registered");
    weft__fence();
}

void weft__light_barrier_slow(void)
{
    weft__fence();
}

void weft__heavy_barrier(void)
{
    heavy_side(barrier());
}

static WEFT__TLS uint64_t thread_deadline;   /* a plain thread's weft_deadline() */

void weft__waiter_init(struct weft__waiter *wt)
{
    struct weft__worker *w = weft__worker_self();
    wt->task = w ? w->current : NULL;
    atomic_init(&wt->state, 0);
}

void weft__await_flag(_Atomic uint32_t *flag)
{
    for (unsigned spins = 0; !atomic_load_explicit(flag, memory_order_acquire); spins++) {   /* pairs with
                                                                                             * the setter's release */
        if (spins < 1000)
            weft__cpu_relax();
        else
            weft__sys_sched_yield();   /* the setter's thread was preempted: let it run */
    }
}

void weft__wait_span_begin(void)
{
    struct weft__worker *w = weft__worker_self();
    if (w && w->current)
        w->current->fiber->wait_from = weft__coarse_now();   /* the clock of w->clock's ages */
}

void weft__wait_span_end(void)
{
    struct weft__worker *w = weft__worker_self();
    if (w && w->current)
        w->current->fiber->wait_from = 0;
}

bool weft__wake(struct weft__waiter *wt, int32_t result)
{
    weft_task *t = wt->task;   /* read first: a plain-thread waiter may return once claimed */
    if (!weft__claim(wt, result))
        return false;
    weft__wake_claimed(t, wt);
    return true;
}

/* Step 3: a canceller may still be using our waiter. */
static WEFT__NOINLINE void wait_cancellers(weft_task *t)
{
    unsigned spins = 0;
    while (atomic_load_explicit(&t->cancelled, memory_order_acquire) >= CANCEL_ONE) {  /* pairs with step 2's release */
        if (++spins < 1000)
            weft__cpu_relax();
        else
            weft__sys_sched_yield();     /* the canceller's thread was preempted: let it run */
    }
}

/* A coroutine parks until its waiter is claimed. */
static int32_t park_until_claimed(struct weft__waiter *wt)
{
    weft__park();
    uint32_t s = atomic_load_explicit(&wt->state, memory_order_acquire);  /* pairs with the claim */
    weft__check(s != 0, "a coroutine woke without its waiter being claimed");
    return (int32_t)s;
}

/* A plain thread sleeps until its waiter is claimed or `until` (0: never). */
static int32_t sleep_until_claimed(struct weft__waiter *wt, uint64_t until)
{
    uint32_t s;
    while ((s = atomic_load_explicit(&wt->state, memory_order_acquire)) == 0) {  /* pairs with the claim */
        if (!until) {
            weft__futex_wait(&wt->state, 0);
            continue;
        }
        if (weft_now() >= until) {
            uint32_t zero = 0;
            if (atomic_compare_exchange_strong_explicit(&wt->state, &zero, (uint32_t)-ETIMEDOUT,
                    memory_order_acquire, memory_order_acquire))  /* lost: the winner's result is in zero */
                return -ETIMEDOUT;
            return (int32_t)zero;
        }
        weft__futex_wait_until(&wt->state, 0, until);
    }
    return (int32_t)s;
}

int32_t weft__wait_nointr(struct weft__waiter *wt)
{
    return wt->task ? park_until_claimed(wt) : sleep_until_claimed(wt, 0);
}

int32_t weft__wait(struct weft__waiter *wt)
{
    weft_task *t = wt->task;
    if (!t)
        return sleep_until_claimed(wt, thread_deadline);

    int mode = barrier();
    atomic_store_explicit(&t->waiting, (uintptr_t)wt, memory_order_release);     /* step 1; pairs with step 2's load */
    light_side(mode);
    if (WEFT__UNLIKELY(atomic_load_explicit(&t->cancelled, memory_order_relaxed) & CANCEL_FLAG))
        weft__wake(wt, -ECANCELED);

    struct weft__timer tm = { .when = t->deadline, .wt = wt, .result = -ETIMEDOUT };
    bool armed = false;
    if (t->deadline) {
        if (t->deadline <= weft_now()) {
            weft__wake(wt, -ETIMEDOUT);
        } else {
            int err = weft__timer_arm(t->rt, &tm);
            if (err)
                weft__wake(wt, err);   /* no timer: fail the wait rather than ignore the deadline */
            else
                armed = true;
        }
    }

    int32_t r = park_until_claimed(wt);

    if (armed)
        weft__timer_disarm(t->rt, &tm);
    atomic_store_explicit(&t->waiting, 0, memory_order_relaxed);                 /* step 3 */
    light_side(mode);
    if (WEFT__UNLIKELY(atomic_load_explicit(&t->cancelled, memory_order_acquire) >= CANCEL_ONE))
        wait_cancellers(t);
    return r;
}

int weft__interrupted(void)
{
    struct weft__worker *w = weft__worker_self();
    weft_task *t = w ? w->current : NULL;
    if (t && atomic_load_explicit(&t->cancelled, memory_order_relaxed))
        return -ECANCELED;
    uint64_t d = t ? t->deadline : thread_deadline;
    return d && d <= weft_now() ? -ETIMEDOUT : 0;
}

uint64_t weft__thread_deadline(void)
{
    return thread_deadline;
}

uint64_t weft_deadline(uint64_t abs_ns)
{
    struct weft__worker *w = weft__worker_self();
    uint64_t *d = w && w->current ? &w->current->deadline : &thread_deadline;
    uint64_t old = *d;
    *d = abs_ns;
    return old;
}

int weft_cancel(weft_task *t)
{
    if (!t || atomic_load_explicit(&t->magic, memory_order_relaxed) != WEFT__TASK_MAGIC)
        return -EINVAL;
    if (weft__inherited(t->rt))
        return -ECHILD;   /* the parent's task: its ring and workers are not here */
    int mode = barrier();
    uint32_t c = atomic_load_explicit(&t->cancelled, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&t->cancelled, &c, (c | CANCEL_FLAG) + CANCEL_ONE,
               memory_order_seq_cst, memory_order_relaxed))     /* step 2 */
        ;
    heavy_side(mode);
    uintptr_t v = atomic_load_explicit(&t->waiting, memory_order_seq_cst);  /* pairs with step 1's release */
    if (v)
        weft__wake((struct weft__waiter *)v, -ECANCELED);
    atomic_fetch_sub_explicit(&t->cancelled, CANCEL_ONE, memory_order_release);  /* done with the waiter */
    return weft__io_cancel(t);   /* a request a backend keeps in flight (io/backend.c) */
}
