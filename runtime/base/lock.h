/* SPDX-License-Identifier: MIT */
/*
 * The small lock that guards each object's wait lists (sync/), and a few
 * other short critical sections (io/io.c's flag toggles). It is a
 * three-state futex lock (Drepper, "Futexes Are Tricky"): 0 free, 1 held,
 * 2 held with sleepers. It is held only for a few loads and stores and never
 * across a park, so a coroutine that finds it held spins a little and then
 * blocks its worker thread for that short while: parking the coroutine would
 * cost more than the wait. It lives in base/ because both io/ and sync/ use
 * it, and neither may depend on the other.
 */
#ifndef WEFT_LOCK_H
#define WEFT_LOCK_H

#include "base.h"
#include "futex.h"

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

#endif /* WEFT_LOCK_H */
