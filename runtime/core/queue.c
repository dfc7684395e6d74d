/* SPDX-License-Identifier: MIT */
/*
 * The global queue: a runtime's tasks that no worker's deque holds, spawned
 * from plain threads or overflowed from a deque. Overflow goes there in
 * batches of the deque's oldest tasks, and a worker that takes from it moves
 * a fair share to its deque, each batch under one lock (Go's runqputslow and
 * globrunqget).
 *
The global queue is a list of arrays of task pointers (4 KiB each), not a
 * list linked through the tasks: a worker that spawns a million tasks sends
 * most of them here, and taking a batch from a list of tasks would miss the
 * cache once per task, one miss after another, under the lock. Arrays of a
 * fixed size are never copied, and the lock is never held across more than
 * one allocation. Only when no array can be had (no memory) do tasks wait on
 * a list behind them, since a push must not fail.
 */
#include "sched.h"

#include <stdlib.h>

#define GQ_CHUNK ((4096 - 2 * sizeof(void *)) / sizeof(weft_task *))

struct weft__gq_chunk {
    struct weft__gq_chunk *next;
    uint32_t               head, tail;   /* tasks[head..tail) are queued */
    weft_task             *tasks[GQ_CHUNK];
};

/* Holds gq_lock. The array to append to, with room; NULL if none can be had. */
static struct weft__gq_chunk *gq_tail_chunk(weft_rt *rt)
{
    struct weft__gq_chunk *c = rt->gq_last;
    if (c && c->tail < GQ_CHUNK)
        return c;
    if ((c = rt->gq_spare))
        rt->gq_spare = NULL;
    else if (!(c = malloc(sizeof(*c))))
        return NULL;
    c->next = NULL;
    c->head = c->tail = 0;
    if (rt->gq_last)
        rt->gq_last->next = c;
    else
        rt->gq_first = c;
    rt->gq_last = c;
    return c;
}

/* Appends n tasks, oldest first. */
static void global_push_batch(weft_rt *rt, weft_task *const *batch, size_t n)
{
    struct weft__gq_chunk *c;
    pthread_mutex_lock(&rt->gq_lock);
    for (size_t i = 0; i < n; i++) {
        if (!rt->gq_head && (c = gq_tail_chunk(rt))) {
            c->tasks[c->tail++] = batch[i];
            continue;
        }
        batch[i]->next = NULL;   /* behind the arrays, in order */
        if (rt->gq_tail)
            rt->gq_tail->next = batch[i];
        else
            rt->gq_head = batch[i];
        rt->gq_tail = batch[i];
    }
    atomic_store_explicit(&rt->gq_len, atomic_load_explicit(&rt->gq_len, memory_order_relaxed) + n,
                          memory_order_relaxed);   /* a hint; the lock orders the queue */
    pthread_mutex_unlock(&rt->gq_lock);
}

/* What a takeover gathers for the global queue, GQ_BATCH at a time. */
struct takeover {
    weft_rt   *rt;
    weft_task *batch[GQ_BATCH];
    size_t     n, moved;
};

/* Moves the batch to the global queue and empties it. */
static void takeover_flush(struct takeover *k)
{
    if (k->n)
        global_push_batch(k->rt, k->batch, k->n);
    k->n = 0;
}

static void takeover_add(struct takeover *k, weft_task *t)
{
    k->batch[k->n++] = t;
    k->moved++;
    if (k->n == GQ_BATCH)
        takeover_flush(k);
}

/* The tasks of the list x, in order; those pinned to w go back to its yield
 * queue. */
static void takeover_list(struct takeover *k, struct weft__worker *w, weft_task *x)
{
    while (x) {
        weft_task *next = x->next;
        if (x->pins)
            yq_push(w, x);
        else
            takeover_add(k, x);
        x = next;
    }
}

size_t weft__takeover(struct weft__worker *w, bool private)
{
    struct takeover k = { .rt = w->rt };
    if (private) {
        takeover_list(&k, w, ioq_take_all(w));   /* never a pinned task (core/park.c, ready) */
        weft_task *x = w->yq_head;
        w->yq_head = w->yq_tail = NULL;
        takeover_list(&k, w, x);
    }
    /* runnext under the exclusion, where its owner does not take it; with a
     * CAS, since the stalled coroutine may still put a task there. */
    weft_task *r = private ? atomic_load_explicit(&w->runnext, memory_order_relaxed) : NULL;
    if (r && atomic_compare_exchange_strong_explicit(&w->runnext, &r, NULL,
                                                     memory_order_acquire, memory_order_relaxed))   /* pairs with runnext_put */
        takeover_add(&k, r);
    while (!weft__deque_empty(&w->dq)) {   /* as a thief takes it */
        weft_task *t = weft__deque_steal(&w->dq);
        if (t)
            takeover_add(&k, t);   /* else it lost a race with a thief */
    }
    takeover_flush(&k);
    if (k.moved)
        weft__wake_one(k.rt);   /* a searcher that finds work wakes the next (core/search.c) */
    return k.moved;
}

void weft__gq_push(weft_rt *rt, weft_task *t)
{
    global_push_batch(rt, &t, 1);
}

/* Holds gq_lock. Takes up to n of the oldest tasks into batch; returns how many. */
static size_t gq_take(weft_rt *rt, weft_task **batch, size_t n)
{
    size_t k = 0;
    struct weft__gq_chunk *c;
    while (k < n && (c = rt->gq_first)) {
        while (k < n && c->head < c->tail)
            batch[k++] = c->tasks[c->head++];
        if (c->head < c->tail)
            break;
        if (c == rt->gq_last) {   /* emptied: append to it afresh */
            c->head = c->tail = 0;
            break;
        }
        rt->gq_first = c->next;
        if (rt->gq_spare)
            free(c);
        else
            rt->gq_spare = c;
    }
    for (; k < n && rt->gq_head; k++) {
        batch[k] = rt->gq_head;
        rt->gq_head = batch[k]->next;
    }
    if (!rt->gq_head)
        rt->gq_tail = NULL;
    atomic_store_explicit(&rt->gq_len, atomic_load_explicit(&rt->gq_len, memory_order_relaxed) - k,
                          memory_order_relaxed);
    return k;
}

/* The owner, whose deque refused t. A batch of
 * the deque's oldest tasks goes to the global queue, under one lock, so a
 * worker that spawns far more than its deque holds pays the lock once per
 * batch. Only tasks that never ran go there: a task woken by a timer, say,
 * must not wait behind a hundred thousand fresh spawns. Those of the batch
 * that ran before go back to the deque's bottom, and t takes the room made. */
void weft__overflow(struct weft__worker *w, weft_task *t)
{
    weft_task *batch[GQ_BATCH];
    size_t n = weft__deque_grab(&w->dq, batch, GQ_BATCH), fresh = 0;
    for (size_t i = 0; i < n; i++) {
        if (!never_ran(batch[i]))
            weft__deque_push(&w->dq, batch[i], tick_of(w));   /* cannot fail: the grab made room */
        else
            batch[fresh++] = batch[i];
    }
    if (fresh)
        global_push_batch(w->rt, batch, fresh);
    if (!weft__deque_push(&w->dq, t, due_of(w, t)))
        weft__gq_push(w->rt, t);   /* no room made: a thief raced the grab, or none was fresh */
}

void weft__spill(struct weft__worker *w, weft_task *x)
{
    while (x) {
        weft_task *next = x->next;
        if (x->pins)
            yq_push(w, x);   /* pinned here: never where thieves look */
        else
            local_put(w, x);
        x = next;
    }
    weft__wake_one(w->rt);
}

/* The owner. Takes the global queue's oldest task and moves up to a fair
 * share of the next ones to w's deque, under the same lock. */
weft_task *weft__gq_take(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    if (atomic_load_explicit(&rt->gq_len, memory_order_relaxed) == 0)
        return NULL;
    weft_task *batch[GQ_BATCH];
    pthread_mutex_lock(&rt->gq_lock);
    size_t want = atomic_load_explicit(&rt->gq_len, memory_order_relaxed) / rt->nworkers + 1;
    size_t n = gq_take(rt, batch, want < GQ_BATCH ? want : GQ_BATCH);
    pthread_mutex_unlock(&rt->gq_lock);
    if (n == 0)
        return NULL;
    /* Newest first, so that the owner's LIFO takes them oldest first. */
    for (size_t i = n - 1; i > 0; i--)
        if (!weft__deque_push(&w->dq, batch[i], tick_of(w)))
            weft__gq_push(rt, batch[i]);
    if (n > 2 && rt->nworkers > 1)
        weft__wake_one(rt);
    return batch[0];
}

weft_task *weft__gq_pop(weft_rt *rt)
{
    if (atomic_load_explicit(&rt->gq_len, memory_order_relaxed) == 0)
        return NULL;
    weft_task *t = NULL;
    pthread_mutex_lock(&rt->gq_lock);
    gq_take(rt, &t, 1);
    pthread_mutex_unlock(&rt->gq_lock);
    return t;
}

void weft__gq_destroy(weft_rt *rt)
{
    for (struct weft__gq_chunk *c = rt->gq_first, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(rt->gq_spare);
}
