/*
 * What runtime/sync.c and runtime/chan.c share: the small lock that guards each
 * object's wait lists, and the doubly linked list of waiters.
 *
 * The lock is a three-state futex lock (Drepper, "Futexes Are Tricky"): 0 free,
 * 1 held, 2 held with sleepers. It is held only for a few loads and stores and
 * never across a park, so a coroutine that finds it held spins a little and
 * then blocks its worker thread for that short while: parking the coroutine
 * would cost more than the wait.
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include "internal.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Takes the wait-list lock. Any thread; never while holding it already. */
static inline void weft__ilock(_Atomic uint32_t *l)
{
    uint32_t c = 0;
    if (atomic_compare_exchange_strong_explicit(l, &c, 1,
            memory_order_acquire, memory_order_relaxed))         /* pairs with weft__iunlock's exchange */
        return;
    for (int i = 0; i < 100; i++) {
        weft__cpu_relax();
        c = 0;
        if (atomic_load_explicit(l, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(l, &c, 1,
                memory_order_acquire, memory_order_relaxed))     /* pairs with weft__iunlock's exchange */
            return;
    }
    while (atomic_exchange_explicit(l, 2, memory_order_acquire) != 0)  /* pairs with weft__iunlock */
        weft__futex_wait(l, 2);
}

/* Releases the wait-list lock. Only its holder. */
static inline void weft__iunlock(_Atomic uint32_t *l)
{
    if (atomic_exchange_explicit(l, 0, memory_order_release) == 2)  /* publishes the critical section */
        weft__futex_wake(l, 1);
}

/*
 * weft__wake in two steps, for a waker that must claim a waiter before it
 * writes into the waiter's memory, and would rather make it runnable after
 * dropping its lock. weft__claim returns whether the claim was ours. The
 * claimer must then call weft__wake_claimed exactly once, with the waiter's
 * task read before the claim: a coroutine waiter stays parked until then,
 * a plain-thread waiter may return as soon as it sees the claim unless the
 * caller holds it back by other means (chan.c's op_wait.done).
 */
static inline bool weft__claim(struct weft__waiter *wt, int32_t result)
{
    uint32_t zero = 0;
    return atomic_compare_exchange_strong_explicit(&wt->state, &zero, (uint32_t)result,
            memory_order_acq_rel, memory_order_relaxed);         /* pairs with the waiter's acquire of state */
}

static inline void weft__wake_claimed(weft_task *t, struct weft__waiter *wt)
{
    if (t)
        weft__unpark(t);
    else
        weft__futex_wake(&wt->state, 1);   /* harmless if the waiter already left */
}

/* A waiter on one object's list. Fields other than the waiter are guarded by
 * that object's lock. */
struct weft__wnode {
    struct weft__wnode *next, *prev;
    bool                linked;   /* on the list: a waker has not popped it */
};

/* Appends n (front: prepends). Holds the list's lock. */
static inline void weft__wl_push(struct weft__wlist *l, struct weft__wnode *n, bool front)
{
    n->linked = true;
    if (front) {
        n->prev = NULL;
        n->next = l->_head;
        if (l->_head) l->_head->prev = n; else l->_tail = n;
        l->_head = n;
    } else {
        n->next = NULL;
        n->prev = l->_tail;
        if (l->_tail) l->_tail->next = n; else l->_head = n;
        l->_tail = n;
    }
}

/* Unlinks n, which is on l. Holds the list's lock. */
static inline void weft__wl_remove(struct weft__wlist *l, struct weft__wnode *n)
{
    weft__check(n->linked, "unlinking a waiter that is on no list");
    if (n->prev) n->prev->next = n->next; else l->_head = n->next;
    if (n->next) n->next->prev = n->prev; else l->_tail = n->prev;
    n->next = n->prev = NULL;
    n->linked = false;
}

#endif /* WEFT_SYNC_H */
