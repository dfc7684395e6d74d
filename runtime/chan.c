/*
 * Channels and select, for coroutines and plain threads alike.
 *
 * A channel is a ring buffer of `cap` elements plus two lists of waiting
 * operations (senders, receivers), all under one small lock (sync.h). At most
 * one of the lists is non-empty while the buffer is neither full nor empty,
 * as in Go.
 *
 * A waiting operation is a struct op_node on one list; a select puts one node
 * on the list of each of its channels, all sharing one struct op_wait, whose
 * weft__waiter decides which case wins: the first weft__wake claims it and the
 * result names the case (R(case, closed)). A waker, under the channel's lock,
 *   1. pops a node and claims its waiter; a failed claim (the waiter's
 *      deadline or cancellation, or another case of its select, got there
 *      first) means skip it and try the next;
 *   2. copies the element to or from the waiter's buffer;
 *   3. stores op_wait.done (release).
 * The waiter, woken, waits for done (acquire) before it trusts or reuses its
 * buffer: the claim must come before the copy, or two channels of one select
 * could both write into it. The window is a memcpy under a lock, so the waiter
 * spins.
 *
 * A waiter that did not win through a node (a negative result, or the other
 * cases of its select) takes each channel's lock and unlinks the node if no
 * waker popped it. nwait counts nodes whose waiter may still touch the channel:
 * destroy refuses with -EBUSY while it is not zero.
 */
#include "sync.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

struct weft_chan {
    _Atomic uint32_t    lock;
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
};

_Static_assert(offsetof(struct op_node, node) == 0, "node must be first");

#define R(idx, closed) ((int32_t)(1 + ((uint32_t)(idx) << 1) + ((closed) ? 1u : 0u)))
#define R_IDX(r)       ((uint32_t)((r) - 1) >> 1)
#define R_CLOSED(r)    (((uint32_t)((r) - 1)) & 1u)
#define IDX_MAX        (1u << 29)

static inline unsigned char *slot(weft_chan *ch, size_t i)
{
    return ch->buf + ((ch->head + i) % ch->cap) * ch->elem_size;
}

/* Pops the first node not of `self` whose waiter can be claimed with result
 * (closed or not); NULL if none. Holds ch->lock. */
static struct op_node *claim(weft_chan *ch, struct weft__wlist *l,
                             const struct op_wait *self, bool closed)
{
    struct weft__wnode *p = l->_head;
    while (p) {
        struct op_node *n = (struct op_node *)p;
        p = p->next;
        if (n->ow == self)
            continue;          /* a select must not meet its own other case */
        weft__wl_remove(l, &n->node);
        if (weft__wake(&n->ow->w, R(n->idx, closed))) {
            ch->nwait--;       /* its waiter will not touch ch again */
            return n;
        }
    }
    return NULL;
}

static inline void done(struct op_node *n)
{
    atomic_store_explicit(&n->ow->done, 1, memory_order_release);  /* pairs with wait_done's acquire */
}

/* Sends *elem if it can without waiting: 0, -EPIPE, -EAGAIN. Holds ch->lock. */
static int send_locked(weft_chan *ch, const void *elem, const struct op_wait *self)
{
    if (ch->closed)
        return -EPIPE;
    struct op_node *r = claim(ch, &ch->recvq, self, false);
    if (r) {
        memcpy(r->elem, elem, ch->elem_size);
        done(r);
        return 0;
    }
    if (ch->count < ch->cap) {
        memcpy(slot(ch, ch->count), elem, ch->elem_size);
        ch->count++;
        return 0;
    }
    return -EAGAIN;
}

/* Receives into *elem if it can without waiting: 0, -EPIPE, -EAGAIN. Holds
 * ch->lock. */
static int recv_locked(weft_chan *ch, void *elem, const struct op_wait *self)
{
    if (ch->count) {
        memcpy(elem, slot(ch, 0), ch->elem_size);
        ch->head = (ch->head + 1) % ch->cap;
        ch->count--;
        struct op_node *s = claim(ch, &ch->sendq, self, false);
        if (s) {               /* the buffer was full: the oldest sender moves in */
            memcpy(slot(ch, ch->count), s->elem, ch->elem_size);
            ch->count++;
            done(s);
        }
        return 0;
    }
    struct op_node *s = claim(ch, &ch->sendq, self, false);
    if (s) {
        memcpy(elem, s->elem, ch->elem_size);
        done(s);
        return 0;
    }
    return ch->closed ? -EPIPE : -EAGAIN;
}

static int op_locked(weft_chan *ch, int op, void *elem, const struct op_wait *self)
{
    return op == WEFT_SEND ? send_locked(ch, elem, self) : recv_locked(ch, elem, self);
}

/* After a positive claim by someone else: waits until they finished copying. */
static void wait_done(struct op_wait *ow)
{
    unsigned spins = 0;
    while (!atomic_load_explicit(&ow->done, memory_order_acquire)) {  /* pairs with done() */
        if (++spins < 1000)
            weft__cpu_relax();
        else
            sched_yield();     /* the claimer's thread was preempted: let it run */
    }
}

/* Unlinks n (on ch, for op) if no waker popped it, and releases it. Any thread. */
static void release_node(weft_chan *ch, int op, struct op_node *n)
{
    weft__ilock(&ch->lock);
    if (n->node.linked)
        weft__wl_remove(op == WEFT_SEND ? &ch->sendq : &ch->recvq, &n->node);
    ch->nwait--;
    weft__iunlock(&ch->lock);
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
    weft__ilock(&ch->lock);
    int err = op_locked(ch, op, elem, NULL);
    if (err != -EAGAIN) {
        weft__iunlock(&ch->lock);
        return err;
    }
    struct op_wait ow;
    struct op_node n = { .ow = &ow, .elem = elem, .idx = 0 };
    weft__waiter_init(&ow.w);
    atomic_init(&ow.done, 0);
    weft__wl_push(op == WEFT_SEND ? &ch->sendq : &ch->recvq, &n.node, false);
    ch->nwait++;
    weft__iunlock(&ch->lock);
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
    weft__ilock(&ch->lock);
    int err = send_locked(ch, elem, NULL);
    weft__iunlock(&ch->lock);
    return err;
}

int weft_chan_try_recv(weft_chan *ch, void *elem)
{
    if (!ch || !elem)
        return -EINVAL;
    weft__ilock(&ch->lock);
    int err = recv_locked(ch, elem, NULL);
    weft__iunlock(&ch->lock);
    return err;
}

int weft_chan_close(weft_chan *ch)
{
    if (!ch)
        return -EINVAL;
    weft__ilock(&ch->lock);
    if (ch->closed) {
        weft__iunlock(&ch->lock);
        return -EPIPE;
    }
    ch->closed = true;
    struct op_node *n;
    while ((n = claim(ch, &ch->recvq, NULL, true)))
        done(n);
    while ((n = claim(ch, &ch->sendq, NULL, true)))
        done(n);
    weft__iunlock(&ch->lock);
    return 0;
}

int weft_chan_destroy(weft_chan *ch)
{
    if (!ch)
        return -EINVAL;
    weft__ilock(&ch->lock);
    bool busy = ch->nwait != 0;
    weft__iunlock(&ch->lock);
    if (busy)
        return -EBUSY;
    free(ch->buf);
    free(ch);
    return 0;
}

/* ---- select ---------------------------------------------------------------------- */

static _Thread_local uint64_t rng_state;

/* A per-thread xorshift. Never inlined: see the migration note in weft.h. */
static WEFT__NOINLINE uint32_t rnd(void)
{
    uint64_t x = rng_state;
    if (!x)
        x = (uint64_t)(uintptr_t)&rng_state ^ weft_now() ^ 0x9e3779b97f4a7c15u;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return (uint32_t)(x >> 32);
}

#define SEL_STACK 16

int weft_select(weft_sel *cases, size_t n)
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
    if (!live)
        return -EINVAL;

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
    /* A random permutation of the live cases: fairness among ready ones. */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (cases[i].chan) {
            size_t j = rnd() % (k + 1);
            order[k] = order[j];
            order[j] = (uint32_t)i;
            k++;
        }

    int result;
again:
    result = -EAGAIN;
    /* Pass 1: complete a ready case without registering anywhere. */
    for (size_t o = 0; o < k && result == -EAGAIN; o++) {
        weft_sel *c = &cases[order[o]];
        weft__ilock(&c->chan->lock);
        int err = op_locked(c->chan, c->op, c->elem, NULL);
        weft__iunlock(&c->chan->lock);
        if (err != -EAGAIN) {
            if (err == -EPIPE)
                c->chan = NULL;
            result = (int)order[o];
        }
    }
    if (result != -EAGAIN)
        goto out;

    /* Pass 2: register on each channel in turn. A case found ready on the
     * way can only be completed after claiming our own waiter, since an
     * earlier node may have been claimed meanwhile. */
    struct op_wait ow;
    weft__waiter_init(&ow.w);
    atomic_init(&ow.done, 0);
    size_t reg = 0;            /* order[0 .. reg) have a node */
    int self_idx = -1;         /* the case we completed ourselves */
    bool retry = false;        /* self-claimed, but the case was not ready after all */
    for (size_t o = 0; o < k; o++) {
        uint32_t i = order[o];
        weft_sel *c = &cases[i];
        weft_chan *ch = c->chan;
        weft__ilock(&ch->lock);
        if (ready_locked(ch, c->op, &ow)) {
            if (weft__wake(&ow.w, R(i, 0))) {
                int err = op_locked(ch, c->op, c->elem, &ow);
                if (err == -EAGAIN) {
                    retry = true;
                } else {
                    self_idx = (int)i;
                    if (err == -EPIPE)
                        c->chan = NULL;
                }
            }
            weft__iunlock(&ch->lock);
            break;             /* claimed: by us, or by a case registered earlier */
        }
        nodes[i] = (struct op_node){ .ow = &ow, .elem = c->elem, .idx = i };
        weft__wl_push(c->op == WEFT_SEND ? &ch->sendq : &ch->recvq, &nodes[i].node, false);
        ch->nwait++;
        weft__iunlock(&ch->lock);
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
        goto again;
    if (self_idx >= 0) {
        result = self_idx;
    } else if (won >= 0) {
        if (R_CLOSED(r))
            cases[won].chan = NULL;
        result = won;
    } else {
        result = r;            /* deadline or cancellation */
    }
out:
    if (order != order_stack) {
        free(order);
        free(nodes);
    }
    return result;
}
