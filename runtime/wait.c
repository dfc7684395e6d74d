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
 * the coroutine has left the wait (the waiter lives in its frame), so the
 * field is a small lock-free handshake:
 *   1. the coroutine stores its waiter (seq_cst), then reads task->cancelled
 *      (seq_cst); set means it claims its own waiter with -ECANCELED;
 *   2. weft_cancel() sets task->cancelled (seq_cst), then reads task->waiting
 *      (seq_cst); it CASes a waiter it finds to BUSY, claims it, and stores 0;
 *   3. the coroutine, once resumed, CASes its waiter back to 0, waiting while
 *      it finds BUSY: a canceller is still using the waiter.
 * Steps 1 and 2 are a store-then-load pair on each side, so at least one side
 * sees the other: no cancellation is lost between the check and the park.
 *
 * A deadline arms a timer (runtime/timer.c) that claims the waiter with
 * -ETIMEDOUT. The timer thread claims under its heap lock and disarming takes
 * that lock, so the waiter is never touched once weft__wait returns.
 *
 * A plain thread has a deadline of its own (thread-local) and is never
 * cancelled; it sleeps on the waiter's state with a futex, with a timeout at
 * its deadline, and claims its waiter itself when that expires.
 */
#include "internal.h"
#include "io.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/futex.h>

#define WAITING_BUSY ((uintptr_t)1)   /* task->waiting: a canceller holds the waiter */

static _Thread_local uint64_t thread_deadline;   /* a plain thread's weft_deadline() */

void weft__waiter_init(struct weft__waiter *wt)
{
    struct weft__worker *w = weft__worker_self();
    wt->task = w ? w->current : NULL;
    atomic_init(&wt->state, 0);
}

bool weft__wake(struct weft__waiter *wt, int32_t result)
{
    weft_task *t = wt->task;   /* read first: a plain-thread waiter may return once claimed */
    uint32_t zero = 0;
    if (!atomic_compare_exchange_strong_explicit(&wt->state, &zero, (uint32_t)result,
            memory_order_acq_rel, memory_order_relaxed))         /* the claim; publishes what the waker wrote */
        return false;
    if (t)
        weft__unpark(t);
    else
        weft__futex_wake(&wt->state, 1);   /* harmless if the waiter already left */
    return true;
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
        struct timespec abs = {
            .tv_sec = (time_t)(until / 1000000000u),
            .tv_nsec = (long)(until % 1000000000u),
        };
        syscall(SYS_futex, (uint32_t *)&wt->state, FUTEX_WAIT_BITSET_PRIVATE, 0, &abs, NULL,
                FUTEX_BITSET_MATCH_ANY);   /* absolute, CLOCK_MONOTONIC */
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

    atomic_store_explicit(&t->waiting, (uintptr_t)wt, memory_order_seq_cst);      /* step 1 */
    if (WEFT__UNLIKELY(atomic_load_explicit(&t->cancelled, memory_order_seq_cst)))
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
    uintptr_t expected = (uintptr_t)wt;                                            /* step 3 */
    while (!atomic_compare_exchange_weak_explicit(&t->waiting, &expected, 0,
               memory_order_acquire, memory_order_acquire)) {   /* pairs with the canceller's release of 0 */
        if (expected == 0)
            break;                     /* a canceller finished with the waiter */
        expected = (uintptr_t)wt;
        weft__cpu_relax();
    }
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
    atomic_store_explicit(&t->cancelled, 1, memory_order_seq_cst);                /* step 2 */
    uintptr_t v = atomic_load_explicit(&t->waiting, memory_order_seq_cst);
    if (v > WAITING_BUSY &&
        atomic_compare_exchange_strong_explicit(&t->waiting, &v, WAITING_BUSY,
            memory_order_acquire, memory_order_relaxed)) {      /* the waiter is ours until the store below */
        weft__wake((struct weft__waiter *)v, -ECANCELED);
        atomic_store_explicit(&t->waiting, 0, memory_order_release);  /* hands the waiter back */
    }
#if WEFT_HAVE_URING
    return weft__ring_cancel(t);   /* a request on a ring: its owner cancels it */
#else
    return 0;
#endif
}
