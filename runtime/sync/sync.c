/* SPDX-License-Identifier: MIT */
/*
 * Mutexes, condition variables, wait groups and semaphores for coroutines and
 * plain threads alike.
 *
 * Each object keeps its waiters on a list guarded by a small lock (sync.h). A
 * waiter is a struct weft__waiter on the waiting side's stack; it is claimed
 * (weft__claim) only by someone holding the list's lock, who pops it first. A
 * claim can fail: the waiter's deadline or cancellation claimed it with a
 * negative result. The waker then skips it and tries the next, and the waiter,
 * seeing the negative result, takes the lock and unlinks itself if no waker
 * popped it. So a waiter that gives up has consumed nothing (no lock hand-off,
 * no semaphore unit).
 *
 * A waiter that returns may free the object at once (a wait group on the
 * waiter's stack, a reference-counted object's mutex), while its waker still
 * holds the object's lock. So the waker makes the waiters it claimed runnable
 * only after it has dropped the lock (wake_claimed), and touches the object no
 * more: a coroutine waiter stays parked until then, and a plain-thread waiter
 * that sees its claim early waits for the node's `done` (as chan.c's waiters
 * do).
 *
 * The mutex. _state holds LOCKED and WAITERS. Lock is a CAS 0 -> LOCKED, then a
 * short spin, then the slow path under the list lock, which sets WAITERS and
 * queues the caller. Unlock is a CAS LOCKED -> 0; with WAITERS set it takes the
 * list lock and, unless a waiter it woke earlier has not yet tried again
 * (WOKEN, as Go's mutexWoken: waking more would only add contenders and
 * context switches), either
 *   - wakes the first waiter to compete again for the lock (normal mode: a
 *     running locker may overtake it, which keeps throughput high), or,
 *   - if that waiter has waited more than WEFT__STARVE_NS, hands it the lock
 *     directly, never clearing LOCKED (Go's starvation mode).
 * A woken waiter that loses the race requeues at the front, keeping its
 * original arrival time, so its wait is bounded.
 * The owner is recorded (the weft_task *, or a per-thread token for a plain
 * thread) so that unlock by anyone else fails with -EPERM.
 */
#include "sync.h"

#include <errno.h>
#include <limits.h>

#define WEFT__STARVE_NS 1000000u

#define M_LOCKED  1u
#define M_WAITERS 2u
#define M_WOKEN   4u   /* a waiter was woken to compete and has not tried yet */

/* weft__waiter results. */
#define R_RETRY   1   /* the mutex was released: try again */
#define R_HANDOFF 2   /* the mutex is now yours */
#define R_WOKEN   1

struct sync_node {
    struct weft__wnode  node;     /* first: list links, under the object's lock */
    struct weft__waiter w;
    uint64_t            since;    /* mutex: when the waiter first queued */
    struct sync_node   *woken;    /* next on its waker's list of claimed nodes */
    _Atomic uint32_t    done;     /* set by its waker, which touches the object no more */
};

/* The nodes a waker claimed under the object's lock, in claim order. */
struct claimed {
    struct sync_node *head, **tail;
};
#define CLAIMED(c) { .head = NULL, .tail = &(c).head }

_Static_assert(offsetof(struct sync_node, node) == 0, "node must be first");

static WEFT__TLS char thread_token;

/* The caller's identity as a mutex owner. Never inlined: a coroutine may move
 * between threads, and a plain thread's token is its thread-local address. */
static WEFT__NOINLINE uintptr_t owner_token(void)
{
    weft_task *t = weft_self();
    return t ? (uintptr_t)t : (uintptr_t)&thread_token;
}

static inline _Atomic uint32_t *A32(uint32_t *p) { return (_Atomic uint32_t *)p; }
static inline _Atomic uintptr_t *AUP(uintptr_t *p) { return (_Atomic uintptr_t *)p; }

/* Makes n ready to queue: waiter_init's part of it. */
static void node_init(struct sync_node *n)
{
    weft__waiter_init(&n->w);
    atomic_init(&n->done, 0);
}

/* Claims n with result, which a waker popped off its list, and adds it to c.
 * Holds the list's lock. False if n's deadline or cancellation claimed it. */
static bool claim(struct sync_node *n, int32_t result, struct claimed *c)
{
    if (!weft__claim(&n->w, result))
        return false;
    n->woken = NULL;
    *c->tail = n;
    c->tail = &n->woken;
    return true;
}

/* Pops waiters until one can be claimed with result; returns it (on c) or
 * NULL. Holds the list's lock. */
static struct sync_node *claim_first(struct weft__wlist *l, int32_t result, struct claimed *c)
{
    while (l->_head) {
        struct sync_node *n = (struct sync_node *)l->_head;
        weft__wl_remove(l, &n->node);
        if (claim(n, result, c))
            return n;
        /* claimed by its deadline or cancellation: it unlinks nothing, we did */
    }
    return NULL;
}

/* After the object's lock is dropped: makes the waiters claimed on c
 * runnable, in the order they were claimed. */
static void wake_claimed(struct claimed *c)
{
    for (struct sync_node *n = c->head, *next; n; n = next) {
        next = n->woken;              /* read first: the node dies once its waiter returns */
        weft_task *t = n->w.task;
        atomic_store_explicit(&n->done, 1, memory_order_release);   /* pairs with wait_done */
        weft__wake_claimed(t, &n->w);
    }
}

/* The waiter, after a claim by a waker: returns once the waker is done with
 * the object. At once for a coroutine, which stays parked until then. */
static void wait_done(struct sync_node *n)
{
    weft__await_flag(&n->done);   /* pairs with wake_claimed's release */
}

/* After a negative weft__wait: leaves the list if no waker popped us. */
static void leave(_Atomic uint32_t *lock, struct weft__wlist *l, struct sync_node *n)
{
    weft__ilock(lock);
    if (n->node.linked)
        weft__wl_remove(l, &n->node);
    weft__iunlock(lock);
}

/* ---- mutex ------------------------------------------------------------------ */

/* Any thread. Returns 0 or -EBUSY. */
int weft_mutex_trylock(weft_mutex *m)
{
    if (!m)
        return -EINVAL;
    uint32_t s = atomic_load_explicit(A32(&m->_state), memory_order_relaxed);
    while (!(s & M_LOCKED)) {
        if (atomic_compare_exchange_weak_explicit(A32(&m->_state), &s, s | M_LOCKED,
                memory_order_acquire, memory_order_relaxed)) {   /* pairs with unlock's release */
            atomic_store_explicit(AUP(&m->_owner), owner_token(), memory_order_relaxed);  /* read only by owner checks */
            return 0;
        }
    }
    return -EBUSY;
}

/* Any thread. Returns 0, -EINVAL, -EDEADLK, or the wait's negative result. */
int weft_mutex_lock(weft_mutex *m)
{
    if (!m)
        return -EINVAL;
    uintptr_t me = owner_token();
    uint32_t zero = 0;
    if (atomic_compare_exchange_strong_explicit(A32(&m->_state), &zero, M_LOCKED,
            memory_order_acquire, memory_order_relaxed)) {       /* pairs with unlock's release */
        atomic_store_explicit(AUP(&m->_owner), me, memory_order_relaxed);  /* read only by owner checks */
        return 0;
    }
    if (atomic_load_explicit(AUP(&m->_owner), memory_order_relaxed) == me)  /* only we could have stored it */
        return -EDEADLK;
    for (int i = 0; i < 64; i++) {
        weft__cpu_relax();
        if (weft_mutex_trylock(m) == 0)
            return 0;
    }
    struct sync_node n;
    n.since = 0;
    bool requeue = false;
    for (;;) {
        weft__ilock(A32(&m->_lock));
        if (requeue)   /* we were the woken one: unlock may wake another now */
            atomic_fetch_and_explicit(A32(&m->_state), ~M_WOKEN, memory_order_relaxed);  /* under the list lock */
        uint32_t s = atomic_load_explicit(A32(&m->_state), memory_order_relaxed);
        for (;;) {
            if (!(s & M_LOCKED)) {
                if (atomic_compare_exchange_weak_explicit(A32(&m->_state), &s, s | M_LOCKED,
                        memory_order_acquire, memory_order_relaxed)) {  /* pairs with unlock's release */
                    weft__iunlock(A32(&m->_lock));
                    atomic_store_explicit(AUP(&m->_owner), me, memory_order_relaxed);  /* owner checks only */
                    return 0;
                }
            } else if ((s & M_WAITERS) ||
                       atomic_compare_exchange_weak_explicit(A32(&m->_state), &s, s | M_WAITERS,
                           memory_order_relaxed, memory_order_relaxed)) {  /* the list lock orders it with unlock */
                break;
            }
        }
        if (!n.since)
            n.since = weft_now();
        node_init(&n);
        weft__waiter_why(&n.w, WEFT__WHY_MUTEX, m);
        weft__wl_push(&m->_wait, &n.node, requeue);
        weft__iunlock(A32(&m->_lock));
        int32_t r = weft__wait(&n.w);
        if (r > 0)
            wait_done(&n);
        if (r == R_HANDOFF) {
            atomic_store_explicit(AUP(&m->_owner), me, memory_order_relaxed);  /* owner checks only */
            return 0;
        }
        if (r < 0) {
            leave(A32(&m->_lock), &m->_wait, &n);
            return r;
        }
        weft__check(r == R_RETRY, "a mutex waiter woke with an unknown result");
        requeue = true;
    }
}

/* The owner only. Returns 0, -EINVAL, -EPERM. */
int weft_mutex_unlock(weft_mutex *m)
{
    if (!m)
        return -EINVAL;
    if (atomic_load_explicit(AUP(&m->_owner), memory_order_relaxed) != owner_token() ||  /* ours only if we stored it */
        !(atomic_load_explicit(A32(&m->_state), memory_order_relaxed) & M_LOCKED))
        return -EPERM;
    atomic_store_explicit(AUP(&m->_owner), 0, memory_order_relaxed);  /* before the release below */
    uint32_t s = M_LOCKED;
    if (atomic_compare_exchange_strong_explicit(A32(&m->_state), &s, 0,
            memory_order_release, memory_order_relaxed))        /* publishes the critical section */
        return 0;
    struct claimed c = CLAIMED(c);
    weft__ilock(A32(&m->_lock));
    /* LOCKED stays set until a waiter is claimed: a waiter that is handed the
     * lock must never find it taken. The woken one, or the new owner's unlock,
     * waits for the list lock, so the stores below come first. */
    uint64_t now = 0;
    for (;;) {
        uint32_t st = atomic_load_explicit(A32(&m->_state), memory_order_relaxed);
        if (st & M_WOKEN) {
            /* A woken waiter is on its way to try again: waking another would
             * only add a contender and a context switch. */
            atomic_store_explicit(A32(&m->_state), st & ~M_LOCKED, memory_order_release);  /* publishes the critical section */
            break;
        }
        struct sync_node *n = (struct sync_node *)m->_wait._head;
        if (!n) {
            atomic_store_explicit(A32(&m->_state), 0, memory_order_release);  /* publishes the critical section */
            break;
        }
        if (!now)
            now = weft_now();
        weft__wl_remove(&m->_wait, &n->node);
        uint32_t waiters = m->_wait._head ? M_WAITERS : 0;
        if (now - n->since > WEFT__STARVE_NS) {
            if (claim(n, R_HANDOFF, &c)) {   /* acq_rel claim publishes the section to the new owner */
                atomic_store_explicit(A32(&m->_state), M_LOCKED | waiters, memory_order_relaxed);  /* under the list lock */
                break;
            }
        } else if (claim(n, R_RETRY, &c)) {
            atomic_store_explicit(A32(&m->_state), waiters | M_WOKEN, memory_order_release);  /* publishes the critical section */
            break;
        }
        /* that waiter gave up (deadline or cancellation): try the next */
    }
    weft__iunlock(A32(&m->_lock));
    wake_claimed(&c);
    return 0;
}

/* ---- condition variable ------------------------------------------------------ */

/* The holder of m. Returns 0, -EINVAL, -EPERM, or the wait's negative result. */
int weft_cond_wait(weft_cond *c, weft_mutex *m)
{
    if (!c || !m)
        return -EINVAL;
    if (atomic_load_explicit(AUP(&m->_owner), memory_order_relaxed) != owner_token())  /* ours only if we stored it */
        return -EPERM;
    struct sync_node n;
    node_init(&n);
    weft__waiter_why(&n.w, WEFT__WHY_COND, c);
    weft__ilock(A32(&c->_lock));
    weft__wl_push(&c->_wait, &n.node, false);
    weft__iunlock(A32(&c->_lock));
    weft_mutex_unlock(m);
    int32_t r = weft__wait(&n.w);
    if (r < 0)
        leave(A32(&c->_lock), &c->_wait, &n);
    else
        wait_done(&n);
    /* A deadline that has passed fails every lock at once: keep trying, as
     * the caller must get m back. */
    while (weft_mutex_lock(m) < 0)
        weft_yield();
    return r < 0 ? r : 0;
}

/* Any thread. Returns 0 or -EINVAL. */
int weft_cond_signal(weft_cond *c)
{
    if (!c)
        return -EINVAL;
    struct claimed woken = CLAIMED(woken);
    weft__ilock(A32(&c->_lock));
    claim_first(&c->_wait, R_WOKEN, &woken);
    weft__iunlock(A32(&c->_lock));
    wake_claimed(&woken);
    return 0;
}

/* Any thread. Returns 0 or -EINVAL. */
int weft_cond_broadcast(weft_cond *c)
{
    if (!c)
        return -EINVAL;
    struct claimed woken = CLAIMED(woken);
    weft__ilock(A32(&c->_lock));
    while (claim_first(&c->_wait, R_WOKEN, &woken))
        ;
    weft__iunlock(A32(&c->_lock));
    wake_claimed(&woken);
    return 0;
}

/* ---- wait group ---------------------------------------------------------------- */

/* Any thread. Returns 0 or -EINVAL (count would leave 0 .. INT32_MAX). */
int weft_wg_add(weft_wg *wg, int n)
{
    if (!wg)
        return -EINVAL;
    struct claimed woken = CLAIMED(woken);
    weft__ilock(A32(&wg->_lock));
    int64_t c = (int64_t)wg->_count + n;
    if (c < 0 || c > INT32_MAX) {
        weft__iunlock(A32(&wg->_lock));
        return -EINVAL;
    }
    wg->_count = (int32_t)c;
    if (c == 0)
        while (claim_first(&wg->_wait, R_WOKEN, &woken))
            ;
    weft__iunlock(A32(&wg->_lock));
    wake_claimed(&woken);
    return 0;
}

int weft_wg_done(weft_wg *wg)
{
    return weft_wg_add(wg, -1);
}

/* Any thread. Returns 0, -EINVAL, or the wait's negative result. */
int weft_wg_wait(weft_wg *wg)
{
    if (!wg)
        return -EINVAL;
    struct sync_node n;
    weft__ilock(A32(&wg->_lock));
    if (wg->_count == 0) {
        weft__iunlock(A32(&wg->_lock));
        return 0;
    }
    node_init(&n);
    weft__waiter_why(&n.w, WEFT__WHY_WG, wg);
    weft__wl_push(&wg->_wait, &n.node, false);
    weft__iunlock(A32(&wg->_lock));
    int32_t r = weft__wait(&n.w);
    if (r < 0) {
        leave(A32(&wg->_lock), &wg->_wait, &n);
        return r;
    }
    wait_done(&n);
    return 0;
}

/* ---- semaphore ------------------------------------------------------------------ */

/* Only while nobody uses s. Returns 0 or -EINVAL. */
int weft_sem_init(weft_sem *s, unsigned value)
{
    if (!s)
        return -EINVAL;
    *s = (weft_sem)WEFT_SEM_INIT(value);
    return 0;
}

/* Any thread. A release hands its unit straight to the first waiter. Returns
 * 0, -EINVAL, or the wait's negative result (no unit taken). */
int weft_sem_acquire(weft_sem *s)
{
    if (!s)
        return -EINVAL;
    struct sync_node n;
    weft__ilock(A32(&s->_lock));
    if (s->_count > 0) {
        s->_count--;
        weft__iunlock(A32(&s->_lock));
        return 0;
    }
    node_init(&n);
    weft__waiter_why(&n.w, WEFT__WHY_SEM, s);
    weft__wl_push(&s->_wait, &n.node, false);
    weft__iunlock(A32(&s->_lock));
    int32_t r = weft__wait(&n.w);
    if (r < 0) {
        leave(A32(&s->_lock), &s->_wait, &n);
        return r;
    }
    wait_done(&n);
    return 0;
}

/* Any thread. Returns 0, -EINVAL, -EOVERFLOW. */
int weft_sem_release(weft_sem *s)
{
    if (!s)
        return -EINVAL;
    int err = 0;
    struct claimed woken = CLAIMED(woken);
    weft__ilock(A32(&s->_lock));
    if (!claim_first(&s->_wait, R_WOKEN, &woken)) {
        if (s->_count == UINT32_MAX)
            err = -EOVERFLOW;
        else
            s->_count++;
    }
    weft__iunlock(A32(&s->_lock));
    wake_claimed(&woken);
    return err;
}
