/* SPDX-License-Identifier: MIT */
/*
 * What the io_uring backend's two files share, and no other file uses:
 * io/uring.c keeps the rings and the requests in flight, io/uringops.c turns
 * each operation of the backend contract (io/backend.h) into its request.
 * Only built where liburing is.
 */
#ifndef WEFT_URING_H
#define WEFT_URING_H

#include "backend.h"

#include <liburing.h>

/* One request in flight: lives in the coroutine's frame until its completion
 * is reaped. Its identity on the ring is a slot of the ring's table, not its
 * address (see the top of this file). */
struct weft__ioreq {
    struct weft__waiter      wt;
    int32_t                  res;   /* the completion's result; written before the claim */
    uint64_t                 id;    /* its identity on the ring, while it has a deadline */
    size_t                   dl;    /* its place on the ring's deadlines (base/heap.h); 0: none */
};

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
