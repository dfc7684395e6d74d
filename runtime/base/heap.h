/* SPDX-License-Identifier: MIT */
/*
 * A 4-ary min-heap of deadlines (base/heap.c), for the runtime's timers
 * (core/timer.c) and a ring's deadlines (io/uring.c). No lock: its owner
 * says who may touch it.
 *
 * An item lives elsewhere (in a waiter's frame) and keeps its 1-based place
 * in the heap, 0 while it is not there, in a size_t of its own; the heap
 * holds the address of that place beside the item's deadline, so that
 * sifting compares within the array and writes to an item only its new
 * place. Its owner finds the item from the place's address (weft__heap_item).
 */
#ifndef WEFT_HEAP_H
#define WEFT_HEAP_H

#include <stddef.h>
#include <stdint.h>

struct weft__heap_entry {
    uint64_t when;
    size_t  *pos;   /* the item's place: 1 + its index here */
};

struct weft__heap {
    struct weft__heap_entry *a;   /* a[0..n-1], a[0] the earliest */
    size_t                   n, cap;
};

/* Room for one more push. Returns 0 or -ENOMEM. */
int weft__heap_reserve(struct weft__heap *h);
/* Adds the item whose place is *pos, due at `when`; room was reserved. */
void weft__heap_push(struct weft__heap *h, uint64_t when, size_t *pos);
/* Takes out the item whose place is *pos, which is in h; sets *pos to 0. */
void weft__heap_remove(struct weft__heap *h, size_t *pos);
void weft__heap_free(struct weft__heap *h);

/* The item of type `type` whose place, its field `member`, is at pos. */
#define weft__heap_item(pos, type, member) ((type *)((char *)(pos) - offsetof(type, member)))

/* The earliest deadline, or UINT64_MAX when h is empty. */
static inline uint64_t weft__heap_next(const struct weft__heap *h)
{
    return h->n ? h->a[0].when : UINT64_MAX;
}

/* The place of the earliest item, if it is due at `now`; else NULL. */
static inline size_t *weft__heap_due(const struct weft__heap *h, uint64_t now)
{
    return h->n && h->a[0].when <= now ? h->a[0].pos : NULL;
}

#endif /* WEFT_HEAP_H */
