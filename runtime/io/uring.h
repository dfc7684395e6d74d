/* SPDX-License-Identifier: MIT */
/*
 * What the io_uring backend's files share, and no other file uses:
 * io/uring.c keeps the rings and the requests in flight, io/uringops.c turns
 * each operation of the backend contract (io/backend.h) into its request,
 * io/uringown.c arms the receives of descriptors handed over (io/owned.c).
 * Only built where liburing is.
 */
#ifndef WEFT_URING_H
#define WEFT_URING_H

#include "backend.h"
#include "base/heap.h"

#include <liburing.h>

/* user_data of entries that are not requests; a request's identity (slot and
 * generation: the top of io/uring.c) is at least 1 << 32. */
#define TAG_IGNORE ((uint64_t)0)   /* cancel requests */
#define TAG_WAKE   ((uint64_t)1)   /* the eventfd read */
#define TAG_CLOSE  ((uint64_t)2)   /* a close's NOP: the oldest close on `closing` is done */
_Static_assert(sizeof(uintptr_t) >= sizeof(uint64_t), "weft_task.io_req holds an identity");

/* Descriptors below FD_PAGES * FD_PAGE have their requests counted; a ring
 * may have requests on any other. */
#define FD_PAGE  4096u
#define FD_PAGES 256u

/* The provided buffers of a ring's receives for descriptors handed over:
 * their group, count and size (io/uringown.c). */
#define OWN_BGID     0
#define OWN_BUFS     256u
#define OWN_BUF_SIZE 4096u

struct weft__ring_close;

struct weft__ring_note {
    struct weft__ring_note  *next;      /* on an inbox; then, for a close, on `closing` */
    weft_task               *task;      /* holds a reference; NULL for a close or a stop */
    uint64_t                user_data;  /* the identity of the request to cancel */
    struct weft__ring_close *close;     /* or: every request on this descriptor */
};

/* A request in flight, in the owner's table. */
struct weft__ring_slot {
    struct weft__ioreq *q;      /* NULL while free */
    uint32_t           gen;     /* bumped each time the slot is taken; the identity's high half */
    uint32_t           next1;   /* while free: the next free slot + 1, or 0 */
    int                fd;      /* the descriptor it names, counted in waits; -1: none */
    bool               closed;  /* a weft_close() cancelled it: -ECANCELED reads -EBADF */
    bool               own;     /* a handed-over descriptor's receive: q is its record's req */
    bool               capped;  /* that receive was armed with a byte limit (io/uringown.c) */
};

struct weft__ring {
    struct io_uring        ring;
    int                    efd;        /* written by wakers */
    uint64_t               efd_buf;    /* the eventfd read's target */
    bool                   efd_armed;  /* a read of efd is queued */
    unsigned               queued;     /* entries not yet submitted; the owner */
    unsigned               inflight;   /* requests and close NOPs whose completion is not reaped; the owner */
    struct weft__ring_slot *slots;     /* requests in flight by identity; the owner */
    uint32_t               nslots;
    uint32_t               free1;      /* the first free slot + 1, or 0; the owner */
    struct weft__heap      deadlines;  /* of requests in flight with a deadline: their `dl`; the owner */
    _Atomic uint64_t       due;        /* the earliest of them, or UINT64_MAX: for `pending` */
    struct weft__ring_note *closing;   /* closes whose NOP is queued, oldest first; the owner */
    struct weft__ring_note *closing_tail;
    pthread_mutex_t        inbox_lock;
    struct weft__ring_note *inbox;     /* under inbox_lock */
    _Atomic uint32_t       inbox_len;  /* a hint, so the owner looks only when needed */
    /* Requests queued or in flight per descriptor, in pages made on first
     * use. Only the owner writes; weft_close() reads. `uncounted`: a page
     * could not be made. */
    _Atomic(_Atomic uint32_t *) waits[FD_PAGES];
    _Atomic bool                uncounted;
    /* Buffers the kernel fills for the receives of descriptors handed
     * over (io/owned.c), made at the first; the owner. */
    struct io_uring_buf_ring *bufs;
    char                     *buf_mem;
    bool                     own_refused;  /* this kernel has no provided buffers or multishot receive */
    bool                     own_uncapped; /* nor a byte limit on one (an older kernel) */
};

/* w's ring: this backend's state for w (io/backend.h). Only for a worker on
 * this backend. */
static inline struct weft__ring *weft__ring_of(const struct weft__worker *w)
{
    return w->io_state;
}

static inline uint64_t weft__ring_identity(const struct weft__ring *r, const struct weft__ring_slot *s)
{
    return (uint64_t)s->gen << 32 | (uint64_t)(s - r->slots);
}

/* What io/uringown.c uses of io/uring.c's ring; the owner but where said.
 * _slot_find: the slot of the request id, or NULL where it has completed.
 * _cancel_id: queues a cancel of the request id, whose completion is ignored. */
struct io_uring_sqe *weft__ring_get_sqe(struct weft__ring *r);
struct weft__ring_slot *weft__ring_slot_find(struct weft__ring *r, uint64_t id);
void weft__ring_cancel_id(struct weft__ring *r, uint64_t id);
void weft__ring_count_waits(struct weft__ring *r, int fd, int n);
uint64_t weft__ring_take_slot(struct weft__ring *r, struct weft__ioreq *q, int fd);
void weft__ring_put_slot(struct weft__ring *r, struct weft__ring_slot *s);
/* Any thread: hands n to r's owner, waking it if it sleeps. */
void weft__ring_post_note(struct weft__ring *r, struct weft__ring_note *n);

/* io/uringown.c: the receives of descriptors handed over (io/owned.c).
 * _arm and _stop: the backend's own_arm and own_stop. _received: reap, for
 * a completion of the receive in s; returns whether a reader became
 * runnable. _stop_note: the owner, for a stop note
 * found in its inbox. _drain: ring_destroy, before the ring goes: reaps the
 * receives' last completions into their queues. _destroy: ring_destroy,
 * after the ring is gone. */
int  weft__ring_own_arm(struct weft__worker *w, struct weft__owned *o, uint64_t *id);
int  weft__ring_own_stop(struct weft__worker *w, uint64_t id);
bool weft__ring_own_received(struct weft__ring *r, struct weft__ring_slot *s, const struct io_uring_cqe *cqe);
void weft__ring_own_stop_note(struct weft__ring *r, uint64_t id);
void weft__ring_own_drain(struct weft__ring *r);
void weft__ring_own_destroy(struct weft__ring *r);

/* A coroutine on w: an entry to fill, then weft__ring_call() at once. */
struct io_uring_sqe *weft__ring_sqe(struct weft__worker *w);

/*
 * The request gets a slot and its identity, is counted on its descriptor,
 * and waits for its completion, which the reaping worker turns into -EBADF where a
 * weft_close() cut it short. Of the -ECANCELED that remain, those of a
 * cancelled task are -ECANCELED and those past the caller's deadline, which
 * the ring cancelled at that deadline, -ETIMEDOUT; any other is the kernel's own,
 * passed on as it is.
 */
int32_t weft__ring_call(struct weft__worker *w, struct io_uring_sqe *sqe, struct weft__ioreq *q);

/* The backend's `call` (io/backend.h): a coroutine on w. */
ssize_t weft__ring_op(struct weft__worker *w, const struct weft__io_op *a);

#endif /* WEFT_URING_H */
