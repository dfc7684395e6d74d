/* SPDX-License-Identifier: MIT */
/* A 4-ary min-heap of deadlines: base/heap.h. */
#include "heap.h"
#include "base.h"

#include <errno.h>
#include <stdlib.h>

/* Puts e at index i. */
static void place(struct weft__heap *h, size_t i, struct weft__heap_entry e)
{
    h->a[i] = e;
    *e.pos = i + 1;
}

/* Places e at i or above it, moving down the parents later than it. */
static void sift_up(struct weft__heap *h, size_t i, struct weft__heap_entry e)
{
    while (i > 0) {
        size_t parent = (i - 1) / 4;
        if (h->a[parent].when <= e.when)
            break;
        place(h, i, h->a[parent]);
        i = parent;
    }
    place(h, i, e);
}

/* Places e at i or below it, moving up the earliest child while it is
 * earlier than e. */
static void sift_down(struct weft__heap *h, size_t i, struct weft__heap_entry e)
{
    for (;;) {
        size_t first = 4 * i + 1;
        if (first >= h->n)
            break;
        size_t end = first + 4 < h->n ? first + 4 : h->n, m = first;
        for (size_t c = first + 1; c < end; c++)
            if (h->a[c].when < h->a[m].when)
                m = c;
        if (h->a[m].when >= e.when)
            break;
        place(h, i, h->a[m]);
        i = m;
    }
    place(h, i, e);
}

int weft__heap_reserve(struct weft__heap *h)
{
    if (h->n < h->cap)
        return 0;
    size_t cap = h->cap ? h->cap * 2 : 64;
    struct weft__heap_entry *a = realloc(h->a, cap * sizeof *a);
    if (!a)
        return -ENOMEM;
    h->a = a;
    h->cap = cap;
    return 0;
}

void weft__heap_push(struct weft__heap *h, uint64_t when, size_t *pos)
{
    weft__check(h->n < h->cap, "a deadline pushed on a heap with no room reserved");
    sift_up(h, h->n++, (struct weft__heap_entry){ .when = when, .pos = pos });
}

void weft__heap_remove(struct weft__heap *h, size_t *pos)
{
    size_t i = *pos - 1;
    weft__check(*pos >= 1 && i < h->n && h->a[i].pos == pos, "a deadline removed that is not on its heap");
    *pos = 0;
    struct weft__heap_entry last = h->a[--h->n];
    if (i == h->n)
        return;   /* it was the last */
    if (i > 0 && h->a[(i - 1) / 4].when > last.when)
        sift_up(h, i, last);
    else
        sift_down(h, i, last);
}

void weft__heap_free(struct weft__heap *h)
{
    free(h->a);
    *h = (struct weft__heap){ 0 };
}
