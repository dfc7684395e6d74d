/* SPDX-License-Identifier: MIT */
/*
 * The io_uring backend's part of descriptors handed over (io/owned.c).
 *
 * A handed-over descriptor's receive is one multishot IORING_OP_RECV with
 * IOSQE_BUFFER_SELECT, on a slot of the ring's table like any request, so
 * weft_close's protocol cancels it and holds the number until it has, and
 * weft_rt_destroy finds it. Each completion names one of the ring's provided
 * buffers, which the owner copies into the record's queue and gives back to
 * the kernel at once: the buffers are the ring's, shared by all its
 * receives, and a reader that does not read must not hold them. Where the
 * kernel refuses provided buffers or multishot receive (the first
 * completion's -EINVAL; README's table says since which releases), the ring arms no more and its
 * readers make the usual calls.
 *
 * Each receive is armed with a byte limit of WEFT_OWN_QUEUE (the entry's
 * optlen, where the kernel takes it: docs/api/io.md says since which
 * release): a socket that holds much when its receive is armed would
 * otherwise fill the ring's buffers inside the kernel before the owner reaps
 * one completion and stops it, and queue them all. Past the limit the
 * receive ends by itself, and the next read that drains the queue arms it
 * again. A kernel without the limit fails such a receive with -EINVAL; the
 * ring then arms without it, and the owner's stop (io/owned.c) is the only
 * bound.
 */
#include "backend.h"
#include "base/sys.h"

#if WEFT_HAVE_URING

#include "owned.h"
#include "uring.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

/* Makes and registers r's provided buffers. The owner. */
static int bufs_make(struct weft__ring *r)
{
    size_t size = OWN_BUFS * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED)
        return -ENOMEM;
    char *mem = malloc((size_t)OWN_BUFS * OWN_BUF_SIZE);
    struct io_uring_buf_reg reg = { .ring_addr = (uintptr_t)br, .ring_entries = OWN_BUFS, .bgid = OWN_BGID };
    int e = mem ? io_uring_register_buf_ring(&r->ring, &reg, 0) : -ENOMEM;
    if (e) {
        free(mem);
        munmap(br, size);
        return e;
    }
    r->bufs = br;
    r->buf_mem = mem;
    io_uring_buf_ring_init(r->bufs);
    for (unsigned i = 0; i < OWN_BUFS; i++)
        io_uring_buf_ring_add(r->bufs, mem + (size_t)i * OWN_BUF_SIZE, OWN_BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(OWN_BUFS), (int)i);
    io_uring_buf_ring_advance(r->bufs, OWN_BUFS);
    return 0;
}

int weft__ring_own_arm(struct weft__worker *w, struct weft__owned *o, uint64_t *id)
{
    struct weft__ring *r = weft__ring_of(w);
    weft__owner_enter(w);   /* as weft__ring_sqe: the ring may be the monitor's */
    int e = r->own_refused ? -EOPNOTSUPP : 0;
    if (!e && !r->bufs && (e = bufs_make(r)) != 0 && e != -ENOMEM) {
        r->own_refused = true;
        e = -EOPNOTSUPP;
    }
    uint64_t i = 0;
    if (!e && !(i = weft__ring_take_slot(r, &o->req, o->fd)))
        e = -ENOMEM;
    if (!e) {
        struct weft__ring_slot *s = &r->slots[(uint32_t)i];
        s->own = true;
        s->capped = !r->own_uncapped;
        struct io_uring_sqe *sqe = weft__ring_get_sqe(r);
        io_uring_prep_recv_multishot(sqe, o->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = OWN_BGID;
        if (s->capped)
            sqe->file_index = WEFT_OWN_QUEUE;   /* the kernel's optlen: older headers lack the name */
        io_uring_sqe_set_data64(sqe, i);
        weft__ring_count_waits(r, o->fd, 1);
        r->inflight++;
        *id = i;
    }
    weft__owner_leave(w);
    return e;
}

int weft__ring_own_stop(struct weft__worker *w, uint64_t id)
{
    struct weft__ring_note *n = malloc(sizeof *n);
    if (!n)
        return -ENOMEM;
    *n = (struct weft__ring_note){ .user_data = id };   /* no task, no close: a stop */
    weft__ring_post_note(weft__ring_of(w), n);
    return 0;
}

bool weft__ring_own_received(struct weft__ring *r, struct weft__ring_slot *s, const struct io_uring_cqe *cqe)
{
    struct weft__owned *o = weft__heap_item(s->q, struct weft__owned, req);
    uint64_t id = weft__ring_identity(r, s);
    bool more = cqe->flags & IORING_CQE_F_MORE;
    int32_t res = cqe->res;
    char *data = NULL;
    unsigned short bid = 0;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        bid = (unsigned short)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        data = r->buf_mem + (size_t)bid * OWN_BUF_SIZE;
    }
    if (res == -ECANCELED && s->closed) {
        res = -EBADF;
    } else if (res == -EINVAL && s->capped) {
        r->own_uncapped = true;   /* no byte limit here: its readers arm again without one */
        res = -ENOBUFS;
    } else if (res == -EINVAL) {
        r->own_refused = true;   /* no multishot receive here */
        res = -EOPNOTSUPP;
    }
    if (more) {
        r->inflight++;   /* reap counted it done */
    } else {
        weft__ring_count_waits(r, s->fd, -1);
        weft__ring_put_slot(r, s);
    }
    bool woke;
    bool stop = weft__owned_received(o, res, data, more, &woke);   /* may free o when not more */
    if (data) {
        io_uring_buf_ring_add(r->bufs, data, OWN_BUF_SIZE, bid, io_uring_buf_ring_mask(OWN_BUFS), 0);
        io_uring_buf_ring_advance(r->bufs, 1);
    }
    if (stop)
        weft__ring_cancel_id(r, id);
    return woke;
}

void weft__ring_own_stop_note(struct weft__ring *r, uint64_t id)
{
    struct weft__ring_slot *s = weft__ring_slot_find(r, id);
    if (s && s->own)
        weft__ring_cancel_id(r, id);
}

/*
 * ring_destroy, before the ring goes: the bytes the kernel took off the
 * sockets for receives still armed, in completions not yet reaped, reach
 * their queues. The workers have stopped, and the kernel cancelled their
 * requests as their threads exited; a cancel is queued for each receive all
 * the same, and the wait for their last completions is bounded, as a kernel
 * that ends none must not hang the destroy.
 */
void weft__ring_own_drain(struct weft__ring *r)
{
    unsigned live = 0;
    for (uint32_t i = 0; i < r->nslots; i++) {
        if (r->slots[i].q && r->slots[i].own) {
            weft__ring_cancel_id(r, weft__ring_identity(r, &r->slots[i]));
            live++;
        }
    }
    uint64_t until = weft_now() + 1000000000u;
    while (live && weft_now() < until) {
        struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 10000000 };
        struct io_uring_cqe *cqe;
        int e = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts, NULL);
        if (e < 0 && e != -ETIME && e != -EINTR)
            break;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&r->ring, head, cqe) {
            seen++;
            uint64_t tag = io_uring_cqe_get_data64(cqe);
            struct weft__ring_slot *s = tag >> 32 ? weft__ring_slot_find(r, tag) : NULL;
            if (!s || !s->own)
                continue;   /* nothing else is in flight at a runtime's end */
            if (!(cqe->flags & IORING_CQE_F_MORE))
                live--;
            weft__ring_own_received(r, s, cqe);
        }
        io_uring_cq_advance(&r->ring, seen);
    }
}

void weft__ring_own_destroy(struct weft__ring *r)
{
    for (uint32_t i = 0; i < r->nslots; i++) {
        if (r->slots[i].q && r->slots[i].own)
            weft__owned_dropped(weft__heap_item(r->slots[i].q, struct weft__owned, req));
    }
    if (r->bufs)
        munmap(r->bufs, OWN_BUFS * sizeof(struct io_uring_buf));
    free(r->buf_mem);
}

#endif /* WEFT_HAVE_URING */
