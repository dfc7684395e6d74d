/* SPDX-License-Identifier: MIT */
/*
 * The epoll backend's descriptor table (io/epoll.h): pages of entries made on
 * first use, published with a compare-exchange, and freed with the runtime.
 */
#include "epoll.h"

#include <stdlib.h>

static struct weft__fdtab *table(weft_rt *rt, bool make)
{
    struct weft__fdtab *t = atomic_load_explicit(&rt->fdtab, memory_order_acquire);   /* pairs with the CAS */
    if (t || !make)
        return t;
    struct weft__fdtab *mine = calloc(1, sizeof *mine);
    if (!mine)
        return NULL;
    if (atomic_compare_exchange_strong_explicit(&rt->fdtab, &t, mine, memory_order_acq_rel,
                                                memory_order_acquire))
        return mine;   /* published */
    free(mine);        /* another thread published first: t is its table */
    return t;
}

static void page_free(struct weft__fd_slot *p)
{
    for (unsigned i = 0; i < PAGE_SLOTS; i++)
        pthread_mutex_destroy(&p[i].lock);
    free(p);
}

/* fd's entry, made if `make`. NULL: fd is out of range, or no memory. Any thread. */
struct weft__fd_slot *weft__epoll_slot(weft_rt *rt, int fd, bool make)
{
    if (fd < 0 || (unsigned)fd / PAGE_SLOTS >= TOP_PAGES)
        return NULL;
    struct weft__fdtab *t = table(rt, make);
    if (!t)
        return NULL;
    _Atomic(struct weft__fd_slot *) *pp = &t->pages[(unsigned)fd / PAGE_SLOTS];
    struct weft__fd_slot *p = atomic_load_explicit(pp, memory_order_acquire);   /* pairs with the CAS */
    if (!p && make) {
        struct weft__fd_slot *mine = calloc(PAGE_SLOTS, sizeof *mine);
        if (!mine)
            return NULL;
        for (unsigned i = 0; i < PAGE_SLOTS; i++) {
            pthread_mutex_init(&mine[i].lock, NULL);
            mine[i].fd = (int)((unsigned)fd / PAGE_SLOTS * PAGE_SLOTS + i);
        }
        if (atomic_compare_exchange_strong_explicit(pp, &p, mine, memory_order_acq_rel,
                                                    memory_order_acquire))
            p = mine;
        else
            page_free(mine);   /* p is the page another thread published */
    }
    return p ? &p[(unsigned)fd % PAGE_SLOTS] : NULL;
}

void weft__epoll_destroy(weft_rt *rt)
{
    struct weft__fdtab *t = atomic_load_explicit(&rt->fdtab, memory_order_acquire);
    if (!t)
        return;
    for (unsigned i = 0; i < TOP_PAGES; i++) {
        struct weft__fd_slot *p = atomic_load_explicit(&t->pages[i], memory_order_relaxed);
        if (p)
            page_free(p);
    }
    free(t);
    atomic_store_explicit(&rt->fdtab, NULL, memory_order_relaxed);
}
