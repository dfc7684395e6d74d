/* SPDX-License-Identifier: MIT */
/*
 * What sync/sync.c and sync/chan.c share: the doubly linked list of waiters
 * that each object keeps, guarded by the object's small lock (base/lock.h).
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include "core/core.h"
#include "base/lock.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

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
