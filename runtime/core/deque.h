/* SPDX-License-Identifier: MIT */
/*
 * A worker's run queue: a bounded Chase-Lev work-stealing deque.
 *
 * The owner pushes and takes at the bottom (LIFO: the task it made last runs
 * first, which keeps a fork-join tree depth-first and its stacks hot); thieves
 * steal at the top (FIFO: the oldest task, usually the root of the biggest
 * untouched subtree). The memory orders follow Lê, Pop, Cohen and Zappa
 * Nardelli, "Correct and Efficient Work-Stealing for Weak Memory Models"
 * (PPoPP 2013), for a fixed-size array, so no buffer is ever reclaimed. A full
 * deque refuses the push and the caller sends the task to the global queue.
 */
#ifndef WEFT_DEQUE_H
#define WEFT_DEQUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WEFT__DEQUE_SIZE 4096u   /* a power of two */

struct weft_task;

struct weft__deque {
    _Alignas(64) _Atomic size_t top;       /* next to steal; thieves CAS it */
    _Alignas(64) _Atomic size_t bottom;    /* next free slot; only the owner writes */
    _Atomic(struct weft_task *) slot[WEFT__DEQUE_SIZE];
    uint32_t due[WEFT__DEQUE_SIZE];        /* weft__deque_top_due; only the owner */
};

/* Only the owner. False if the deque is full. `due` is when, on the owner's
 * own clock (a counter that only grows, modulo 2^32), the task becomes due for
 * weft__deque_top_due. */
bool weft__deque_push(struct weft__deque *q, struct weft_task *t, uint32_t due);
/* Only the owner. NULL if empty. */
struct weft_task *weft__deque_take(struct weft__deque *q);
/* Only the owner, and only while no thread can steal (a runtime of one
 * worker): weft__deque_take without the fence that orders it against thieves. */
struct weft_task *weft__deque_take_alone(struct weft__deque *q);
/* Any thread, the owner too. NULL if empty or if it lost a race. */
struct weft_task *weft__deque_steal(struct weft__deque *q);
/* Only the owner. Takes up to max of the oldest tasks, at most half of those
 * queued, into out, oldest first; returns how many (0 if a thief interfered). */
size_t weft__deque_grab(struct weft__deque *q, struct weft_task **out, size_t max);
/* Any thread; hints only: how many tasks the deque holds, and whether none. */
size_t weft__deque_len(struct weft__deque *q);
bool weft__deque_empty(struct weft__deque *q);
/* Only the owner: whether the oldest task is due at `now`; false if the deque
 * looks empty. A thief may have taken that task meanwhile: then the answer is
 * about one already gone, which was due no later. */
bool weft__deque_top_due(struct weft__deque *q, uint32_t now);
/* Only the owner: whether t is the task at the bottom, the next a take
 * would return; a thief may still win it. */
static inline bool weft__deque_bottom_is(struct weft__deque *q, const struct weft_task *t)
{
    size_t top = atomic_load_explicit(&q->top, memory_order_relaxed);
    size_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);   /* only we write it */
    /* The slot below bottom is ours: not rewritten until we push past it. An
     * empty deque's slots hold stale pointers, and handles are reused. */
    return (ptrdiff_t)(b - top) > 0 &&
           atomic_load_explicit(&q->slot[(b - 1) & (WEFT__DEQUE_SIZE - 1)], memory_order_relaxed) == t;
}

#endif
