/* SPDX-License-Identifier: MIT */
/*
 * Chase-Lev deque, see deque.h. The comments at each atomic name what it pairs
 * with; "the Dekker pair" is the owner's take (store bottom, then read top)
 * against a thief's steal (read top, then read bottom): the two seq_cst fences
 * guarantee that at least one of them sees the other, so the last element is
 * never handed out twice.
 */
#include "deque.h"
#include "core.h"

#define MASK (WEFT__DEQUE_SIZE - 1)

bool weft__deque_push(struct weft__deque *q, struct weft_task *t, uint32_t due)
{
    size_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);  /* only we write it */
    size_t top = atomic_load_explicit(&q->top, memory_order_acquire);   /* pairs with steal's CAS: the slot it read is free */
    if (b - top >= WEFT__DEQUE_SIZE)
        return false;
    atomic_store_explicit(&q->slot[b & MASK], t, memory_order_relaxed);
    q->due[b & MASK] = due;   /* the owner's alone: thieves never read it */
    atomic_store_explicit(&q->bottom, b + 1, memory_order_release);      /* publishes the slot and the task to thieves */
    return true;
}

struct weft_task *weft__deque_take(struct weft__deque *q)
{
    size_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
    size_t t = atomic_load_explicit(&q->top, memory_order_relaxed);
    if ((ptrdiff_t)(b - t) <= 0)
        return NULL;   /* cheap early out; top only grows, so empty stays empty for us */
    if (b - t == 1) {
        /* Seemingly the last element: take it from the top, as a thief
         * would, with no store to bottom and no fence. The CAS decides
         * against any thief; if it fails, top has passed t and the deque is
         * empty. A spawn followed by a join pays one locked instruction
         * here instead of two. */
        struct weft_task *x = atomic_load_explicit(&q->slot[t & MASK], memory_order_relaxed);
        return atomic_compare_exchange_strong_explicit(&q->top, &t, t + 1,
                   memory_order_seq_cst, memory_order_relaxed) ? x : NULL;
    }
    b -= 1;
    atomic_store_explicit(&q->bottom, b, memory_order_relaxed);
    weft__fence();                           /* the Dekker pair, owner side */
    t = atomic_load_explicit(&q->top, memory_order_relaxed);
    struct weft_task *x = NULL;
    if ((ptrdiff_t)(b - t) >= 0) {
        x = atomic_load_explicit(&q->slot[b & MASK], memory_order_relaxed);
        if (b == t) {
            /* The last element: race the thieves for it. */
            if (!atomic_compare_exchange_strong_explicit(&q->top, &t, t + 1,
                    memory_order_seq_cst, memory_order_relaxed))
                x = NULL;
            atomic_store_explicit(&q->bottom, b + 1, memory_order_relaxed);
        }
    } else {
        atomic_store_explicit(&q->bottom, b + 1, memory_order_relaxed);
    }
    return x;
}

struct weft_task *weft__deque_take_alone(struct weft__deque *q)
{
    size_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
    size_t t = atomic_load_explicit(&q->top, memory_order_relaxed);
    if (b == t)
        return NULL;
    atomic_store_explicit(&q->bottom, b - 1, memory_order_relaxed);
    return atomic_load_explicit(&q->slot[(b - 1) & MASK], memory_order_relaxed);
}

struct weft_task *weft__deque_steal(struct weft__deque *q)
{
    size_t t = atomic_load_explicit(&q->top, memory_order_acquire);
    weft__fence();                           /* the Dekker pair, thief side */
    size_t b = atomic_load_explicit(&q->bottom, memory_order_acquire);   /* pairs with push's release */
    if ((ptrdiff_t)(b - t) <= 0)
        return NULL;
    struct weft_task *x = atomic_load_explicit(&q->slot[t & MASK], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&q->top, &t, t + 1,
            memory_order_seq_cst, memory_order_relaxed))
        return NULL;                                                     /* another thief or the owner won it */
    return x;
}

size_t weft__deque_grab(struct weft__deque *q, struct weft_task **out, size_t max)
{
    size_t t = atomic_load_explicit(&q->top, memory_order_acquire);
    size_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);   /* only we write it */
    size_t n = (b - t) / 2;   /* never the bottom one: no race with a take */
    if (n > max)
        n = max;
    for (size_t i = 0; i < n; i++)
        out[i] = atomic_load_explicit(&q->slot[(t + i) & MASK], memory_order_relaxed);
    /* As a steal of n at once: a thief that read the same top loses its CAS,
     * and one that won first makes ours fail. */
    if (n && !atomic_compare_exchange_strong_explicit(&q->top, &t, t + n,
            memory_order_seq_cst, memory_order_relaxed))
        n = 0;
    return n;
}

size_t weft__deque_len(struct weft__deque *q)
{
    size_t t = atomic_load_explicit(&q->top, memory_order_relaxed);
    size_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
    return (ptrdiff_t)(b - t) > 0 ? b - t : 0;   /* an owner's take in flight may pass top */
}

bool weft__deque_empty(struct weft__deque *q)
{
    return weft__deque_len(q) == 0;
}

bool weft__deque_top_due(struct weft__deque *q, uint32_t now)
{
    size_t t = atomic_load_explicit(&q->top, memory_order_relaxed);
    size_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);   /* only we write it */
    if ((ptrdiff_t)(b - t) <= 0)
        return false;
    return (int32_t)(now - q->due[t & MASK]) >= 0;   /* a slot below bottom: not rewritten until we push past it */
}
