/* SPDX-License-Identifier: MIT */
/*
 * Channels and select, for coroutines and plain threads alike.
 *
 * A channel is a ring buffer of `cap` elements plus two lists of waiting
 * operations (senders, receivers), all under one small lock (chan_lock, below). At most
 * one of the lists is non-empty while the buffer is neither full nor empty,
 * as in Go.
 *
 * A waiting operation is a struct op_node on one list; a select puts one node
 * on the list of each of its channels, all sharing one struct op_wait, whose
 * weft__waiter decides which case wins: the first claim (weft__claim) wins and
 * the result names the case (R(case, closed)). A waker, under the channel's
 * lock,
 *   1. pops a node and claims its waiter; a failed claim (the waiter's
 *      deadline or cancellation, or another case of its select, got there
 *      first) means skip it and try the next;
 *   2. copies the element to or from the waiter's buffer;
 * and, once it has dropped the lock,
 *   3. stores op_wait.done (release) and makes the waiter runnable
 *      (weft__wake_claimed).
 * The claim must come before the copy, or two channels of one select could
 * both write into one buffer. A coroutine waiter stays parked until step 3,
 * so it never waits for the copy; a plain thread may see the claim early and
 * waits for done (acquire) before it trusts or reuses its buffer. Making the
 * waiter runnable after the unlock keeps wake-ups, which may enter the
 * kernel to rouse an idle worker, out of the critical section.
 *
 * A waiter that did not win through a node (a negative result, or the other
 * cases of its select) takes each channel's lock and unlinks the node if no
 * waker popped it. nwait counts nodes whose waiter may still touch the channel:
 * destroy refuses with -EBUSY while it is not zero.
 */
#include "sync.h"
#include "base/sys.h"
#include "base/rng.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

struct weft_chan {
    _Atomic uint32_t    lock;       /* chan_lock */
    bool                closed;     /* the rest under lock */
    size_t              elem_size;
    size_t              cap;
    size_t              head;       /* index of the oldest buffered element */
    size_t              count;      /* buffered elements */
    size_t              nwait;      /* linked or not yet released nodes */
    struct weft__wlist  sendq;      /* op_nodes of waiting senders */
    struct weft__wlist  recvq;      /* op_nodes of waiting receivers */
    unsigned char      *buf;        /* cap * elem_size bytes */
};

struct op_wait {
    struct weft__waiter w;
    _Atomic uint32_t    done;       /* set by the claimer once the copy is made */
};

struct op_node {
    struct weft__wnode  node;       /* first: links on sendq or recvq, under the lock */
    struct op_wait     *ow;
    void               *elem;
    uint32_t            idx;        /* the select case, 0 for send and recv */
    struct op_node     *woken;      /* claimed: on the claimer's list of nodes to
                                     * wake once it has dropped the lock */
};

_Static_assert(offsetof(struct op_node, node) == 0, "node must be first");

#define R(idx, closed) ((int32_t)(1 + ((uint32_t)(idx) << 1) + ((closed) ? 1u : 0u)))
#define R_IDX(r)       ((uint32_t)((r) - 1) >> 1)
#define R_CLOSED(r)    (((uint32_t)((r) - 1)) & 1u)
#define IDX_MAX        (1u << 29)

/*
 * The channel lock. It is held for a few loads and stores and one element's
 * copy, never across a park or a system call (wake-ups wait for the unlock),
 * so a thread that finds it held spins, and yields its time slice only if the
 * holder seems preempted. Nobody sleeps on it, so unlocking is a plain
 * release store: the futex lock of sync.h pays an atomic exchange on every
 * unlock to learn whether to wake a sleeper, and a channel hand-over takes
 * and drops two locks. crossbeam-channel's zero-capacity channel makes the
 * same choice.
 */
static WEFT__NOINLINE void chan_lock_slow(weft_chan *ch)
{
    for (unsigned spins = 0;; spins++) {
        uint32_t zero = 0;
        if (atomic_load_explicit(&ch->lock, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&ch->lock, &zero, 1,
                memory_order_acquire, memory_order_relaxed))     /* pairs with chan_unlock */
            return;
        if (spins < 128)
            weft__cpu_relax();
        else
            weft__sys_sched_yield();
    }
}

/* Any thread; never while holding a channel lock. */
static inline void chan_lock(weft_chan *ch)
{
    uint32_t zero = 0;
    if (WEFT__UNLIKELY(!atomic_compare_exchange_strong_explicit(&ch->lock, &zero, 1,
            memory_order_acquire, memory_order_relaxed)))        /* pairs with chan_unlock */
        chan_lock_slow(ch);
}

/* Only the holder. */
static inline void chan_unlock(weft_chan *ch)
{
    atomic_store_explicit(&ch->lock, 0, memory_order_release);  /* publishes the critical section */
}

/* Copies one element; the common sizes without a call. */
static inline void copy_elem(void *dst, const void *src, size_t n)
{
    switch (n) {
    case 1:  memcpy(dst, src, 1);  break;
    case 2:  memcpy(dst, src, 2);  break;
    case 4:  memcpy(dst, src, 4);  break;
    case 8:  memcpy(dst, src, 8);  break;
    case 16: memcpy(dst, src, 16); break;
    default: memcpy(dst, src, n);  break;
    }
}

/* The i-th buffered element, i < cap. */
static inline unsigned char *slot(weft_chan *ch, size_t i)
{
    size_t k = ch->head + i;   /* head < cap and i < cap: no overflow, one wrap at most */
    if (k >= ch->cap)
        k -= ch->cap;
    return ch->buf + k * ch->elem_size;
}

/* Pops the first node not of `self` whose waiter can be claimed with result
 * (closed or not) and puts it on *woken; NULL if none. Holds ch->lock. */
static struct op_node *claim(weft_chan *ch, struct weft__wlist *l,
                             const struct op_wait *self, bool closed,
                             struct op_node **woken)
{
    struct weft__wnode *p = l->_head;
    while (p) {
        struct op_node *n = (struct op_node *)p;
        p = p->next;
        if (n->ow == self)
            continue;          /* a select must not meet its own other case */
        weft__wl_remove(l, &n->node);
        if (weft__claim(&n->ow->w, R(n->idx, closed))) {
            ch->nwait--;       /* its waiter will not touch ch again */
            n->woken = *woken;
            *woken = n;
            return n;
        }
    }
    return NULL;
}

/* Step 3 for each node claimed: after the lock is dropped. */
static void wake_claimed(struct op_node *n)
{
    while (n) {
        struct op_node *next = n->woken;   /* read first: the node dies once its waiter runs */
        struct op_wait *ow = n->ow;
        weft_task *t = ow->w.task;
        atomic_store_explicit(&ow->done, 1, memory_order_release);  /* pairs with wait_done's acquire */
        weft__wake_claimed(t, &ow->w);
        n = next;
    }
}

/* Sends *elem if it can without waiting: 0, -EPIPE, -EAGAIN. A receiver it
 * hands the element to goes on *woken. Holds ch->lock. */
static int send_locked(weft_chan *ch, const void *elem, const struct op_wait *self,
                       struct op_node **woken)
{
    if (ch->closed)
        return -EPIPE;
    struct op_node *r = claim(ch, &ch->recvq, self, false, woken);
    if (r) {
        copy_elem(r->elem, elem, ch->elem_size);
        return 0;
    }
    if (ch->count < ch->cap) {
        copy_elem(slot(ch, ch->count), elem, ch->elem_size);
        ch->count++;
        return 0;
    }
    return -EAGAIN;
}

/* Receives into *elem if it can without waiting: 0, -EPIPE, -EAGAIN. A sender
 * it takes an element from goes on *woken. Holds ch->lock. */
static int recv_locked(weft_chan *ch, void *elem, const struct op_wait *self,
                       struct op_node **woken)
{
    if (ch->count) {
        copy_elem(elem, slot(ch, 0), ch->elem_size);
        if (++ch->head == ch->cap)
            ch->head = 0;
        ch->count--;
        struct op_node *s = claim(ch, &ch->sendq, self, false, woken);
        if (s) {               /* the buffer was full: the oldest sender moves in */
            copy_elem(slot(ch, ch->count), s->elem, ch->elem_size);
            ch->count++;
        }
        return 0;
    }
    struct op_node *s = claim(ch, &ch->sendq, self, false, woken);
    if (s) {
        copy_elem(elem, s->elem, ch->elem_size);
        return 0;
    }
    return ch->closed ? -EPIPE : -EAGAIN;
}

static int op_locked(weft_chan *ch, int op, void *elem, const struct op_wait *self,
                     struct op_node **woken)
{
    return op == WEFT_SEND ? send_locked(ch, elem, self, woken)
                           : recv_locked(ch, elem, self, woken);
}

/* After a positive claim by someone else: waits until they finished copying. */
static void wait_done(struct op_wait *ow)
{
    weft__await_flag(&ow->done);   /* pairs with wake_claimed's release */
}

/* Unlinks n (on ch, for op) if no waker popped it, and releases it. Any thread. */
static void release_node(weft_chan *ch, int op, struct op_node *n)
{
    chan_lock(ch);
    if (n->node.linked)
        weft__wl_remove(op == WEFT_SEND ? &ch->sendq : &ch->recvq, &n->node);
    ch->nwait--;
    chan_unlock(ch);
}

/* Whether an op could complete now, if the waiters found can be claimed.
 * Holds ch->lock. */
static bool ready_locked(weft_chan *ch, int op, const struct op_wait *self)
{
    if (ch->closed)
        return true;
    const struct weft__wlist *l;
    if (op == WEFT_SEND) {
        if (ch->count < ch->cap)
            return true;
        l = &ch->recvq;
    } else {
        if (ch->count)
            return true;
        l = &ch->sendq;
    }
    for (const struct weft__wnode *p = l->_head; p; p = p->next)
        if (((const struct op_node *)p)->ow != self)
            return true;
    return false;
}

int weft_chan_create(weft_chan **chp, size_t elem_size, size_t capacity)
{
    if (!chp || elem_size == 0 || elem_size > (1u << 30) ||
        (capacity && elem_size > SIZE_MAX / capacity))
        return -EINVAL;
    weft_chan *ch = calloc(1, sizeof *ch);
    if (!ch)
        return -ENOMEM;
    if (capacity && !(ch->buf = malloc(elem_size * capacity))) {
        free(ch);
        return -ENOMEM;
    }
    atomic_init(&ch->lock, 0);
    ch->elem_size = elem_size;
    ch->cap = capacity;
    *chp = ch;
    return 0;
}

/* One blocking operation: the one-case select, without its shuffling. */
static int chan_op(weft_chan *ch, int op, void *elem)
{
    if (!ch || !elem)
        return -EINVAL;
    struct op_node *woken = NULL;
    chan_lock(ch);
    int err = op_locked(ch, op, elem, NULL, &woken);
    if (err != -EAGAIN) {
        chan_unlock(ch);
        wake_claimed(woken);
        return err;
    }
    struct op_wait ow;
    struct op_node n = { .ow = &ow, .elem = elem, .idx = 0 };
    weft__waiter_init(&ow.w);
    weft__waiter_why(&ow.w, op == WEFT_SEND ? WEFT__WHY_CHAN_SEND : WEFT__WHY_CHAN_RECV, ch);
    atomic_init(&ow.done, 0);
    weft__wl_push(op == WEFT_SEND ? &ch->sendq : &ch->recvq, &n.node, false);
    ch->nwait++;
    chan_unlock(ch);
    int32_t r = weft__wait(&ow.w);
    if (r < 0) {
        release_node(ch, op, &n);
        return r;
    }
    wait_done(&ow);
    return R_CLOSED(r) ? -EPIPE : 0;
}

int weft_chan_send(weft_chan *ch, const void *elem)
{
    return chan_op(ch, WEFT_SEND, (void *)elem);
}

int weft_chan_recv(weft_chan *ch, void *elem)
{
    return chan_op(ch, WEFT_RECV, elem);
}

int weft_chan_try_send(weft_chan *ch, const void *elem)
{
    if (!ch || !elem)
        return -EINVAL;
    struct op_node *woken = NULL;
    chan_lock(ch);
    int err = send_locked(ch, elem, NULL, &woken);
    chan_unlock(ch);
    wake_claimed(woken);
    return err;
}

int weft_chan_try_recv(weft_chan *ch, void *elem)
{
    if (!ch || !elem)
        return -EINVAL;
    struct op_node *woken = NULL;
    chan_lock(ch);
    int err = recv_locked(ch, elem, NULL, &woken);
    chan_unlock(ch);
    wake_claimed(woken);
    return err;
}

int weft_chan_close(weft_chan *ch)
{
    if (!ch)
        return -EINVAL;
    chan_lock(ch);
    if (ch->closed) {
        chan_unlock(ch);
        return -EPIPE;
    }
    ch->closed = true;
    struct op_node *woken = NULL;
    while (claim(ch, &ch->recvq, NULL, true, &woken))
        ;
    while (claim(ch, &ch->sendq, NULL, true, &woken))
        ;
    chan_unlock(ch);
    wake_claimed(woken);
    return 0;
}

int weft_chan_destroy(weft_chan *ch)
{
    if (!ch)
        return -EINVAL;
    chan_lock(ch);
    bool busy = ch->nwait != 0;
    chan_unlock(ch);
    if (busy)
        return -EBUSY;
    free(ch->buf);
    free(ch);
    return 0;
}

/* ---- select ---------------------------------------------------------------------- */

static WEFT__TLS uint64_t rng_state;

/* A per-thread xorshift. Never inlined: see the migration note in weft.h. */
static WEFT__NOINLINE uint32_t rnd(void)
{
    if (!rng_state)
        rng_state = (uint64_t)(uintptr_t)&rng_state ^ weft_now() ^ 0x9e3779b97f4a7c15u;
    return weft__rng_next(&rng_state);
}

#define SEL_STACK 16

/* The number of cases with a channel, or -EINVAL for a malformed one (or none). */
static int select_check(const weft_sel *cases, size_t n)
{
    if (!cases || n == 0 || n >= IDX_MAX)
        return -EINVAL;
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        if (!cases[i].chan)
            continue;
        if ((cases[i].op != WEFT_SEND && cases[i].op != WEFT_RECV) || !cases[i].elem)
            return -EINVAL;
        live++;
    }
    return live ? (int)live : -EINVAL;
}

/* Fills order with a random permutation of the live cases, for fairness among
 * ready ones; returns how many. */
static size_t select_shuffle(const weft_sel *cases, size_t n, uint32_t *order)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (cases[i].chan) {
            size_t j = rnd() % (k + 1);
            order[k] = order[j];
            order[j] = (uint32_t)i;
            k++;
        }
    return k;
}

/* Pass 1: completes a ready case without registering anywhere. Returns its
 * index, or -EAGAIN when none was ready. */
static int select_ready(weft_sel *cases, const uint32_t *order, size_t k)
{
    for (size_t o = 0; o < k; o++) {
        weft_sel *c = &cases[order[o]];
        struct op_node *woken = NULL;
        chan_lock(c->chan);
        int err = op_locked(c->chan, c->op, c->elem, NULL, &woken);
        chan_unlock(c->chan);
        wake_claimed(woken);
        if (err != -EAGAIN) {
            if (err == -EPIPE)
                c->chan = NULL;
            return (int)order[o];
        }
    }
    return -EAGAIN;
}

/*
 * Pass 2: registers a node on each channel in turn and waits until one case
 * completes through its node. A case found ready on the way can only be
 * completed after claiming our own waiter, since an earlier node may have
 * been claimed meanwhile. Returns the index of the case that completed, the
 * wait's error (deadline or cancellation), or -EAGAIN when we claimed
 * ourselves for a case that was not ready after all: the caller starts again.
 */
static int select_wait(weft_sel *cases, const uint32_t *order, size_t k, struct op_node *nodes)
{
    struct op_wait ow;
    weft__waiter_init(&ow.w);
    weft__waiter_why(&ow.w, WEFT__WHY_SELECT, k);
    atomic_init(&ow.done, 0);
    size_t reg = 0;            /* order[0 .. reg) have a node */
    int self_idx = -1;         /* the case we completed ourselves */
    bool retry = false;        /* self-claimed, but the case was not ready after all */
    for (size_t o = 0; o < k; o++) {
        uint32_t i = order[o];
        weft_sel *c = &cases[i];
        weft_chan *ch = c->chan;
        chan_lock(ch);
        if (ready_locked(ch, c->op, &ow)) {
            struct op_node *woken = NULL;
            bool mine = weft__claim(&ow.w, R(i, 0));
            if (mine) {
                int err = op_locked(ch, c->op, c->elem, &ow, &woken);
                if (err == -EAGAIN) {
                    retry = true;
                } else {
                    self_idx = (int)i;
                    if (err == -EPIPE)
                        c->chan = NULL;
                }
            }
            chan_unlock(ch);
            wake_claimed(woken);
            if (mine)
                weft__wake_claimed(ow.w.task, &ow.w);   /* so that weft__wait returns at once */
            break;             /* claimed: by us, or by a case registered earlier */
        }
        /* Field by field: assigning a compound literal to an array element
         * compiles (gcc, x86-64) to a slow `rep stos`; the push sets node. */
        struct op_node *nd = &nodes[i];
        nd->ow = &ow;
        nd->elem = c->elem;
        nd->idx = i;
        nd->woken = NULL;
        weft__wl_push(c->op == WEFT_SEND ? &ch->sendq : &ch->recvq, &nd->node, false);
        ch->nwait++;
        chan_unlock(ch);
        reg++;
    }
    int32_t r = weft__wait(&ow.w);   /* returns at once if we claimed it ourselves */
    int won = -1;                    /* a case completed through its node */
    if (r > 0 && self_idx < 0 && !retry) {
        won = (int)R_IDX(r);
        wait_done(&ow);
    }
    for (size_t o = 0; o < reg; o++) {
        uint32_t i = order[o];
        if ((int)i != won)
            release_node(cases[i].chan, cases[i].op, &nodes[i]);
    }
    if (retry)
        return -EAGAIN;
    if (self_idx >= 0)
        return self_idx;
    if (won >= 0) {
        if (R_CLOSED(r))
            cases[won].chan = NULL;
        return won;
    }
    return r;                  /* deadline or cancellation */
}

int weft_select(weft_sel *cases, size_t n)
{
    int live = select_check(cases, n);
    if (live < 0)
        return live;
    uint32_t order_stack[SEL_STACK];
    struct op_node nodes_stack[SEL_STACK];
    uint32_t *order = order_stack;
    struct op_node *nodes = nodes_stack;
    if (n > SEL_STACK) {
        order = malloc(n * sizeof *order);
        nodes = malloc(n * sizeof *nodes);
        if (!order || !nodes) {
            free(order);
            free(nodes);
            return -ENOMEM;
        }
    }
    size_t k = select_shuffle(cases, n, order);
    int result;
    do {
        result = select_ready(cases, order, k);
        if (result == -EAGAIN)
            result = select_wait(cases, order, k, nodes);
    } while (result == -EAGAIN);
    if (order != order_stack) {
        free(order);
        free(nodes);
    }
    return result;
}
