/* SPDX-License-Identifier: MIT */
/*
 * The io_uring backend's calls: each operation of the backend contract
 * (io/backend.h) as a request on the ring of the coroutine's worker, and
 * what the ring cannot do in one request: a descriptor in O_NONBLOCK mode
 * waits for readiness and tries again, a connect in progress waits for its
 * outcome. (sendfile, which the ring cannot make, is io.c's.) The rings themselves,
 * and what a request goes through once queued, are io/uring.c's.
 */
#include "backend.h"

#if WEFT_HAVE_URING

#include "uring.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

/* Tells Valgrind that the kernel wrote n bytes at buf. */
static void mark_read(void *buf, ssize_t n)
{
    if (n > 0)
        weft__vg_mark_defined(buf, (size_t)n);
}

/* As mark_read, for the n bytes the kernel spread over iov. */
static void mark_read_iov(const struct iovec *iov, size_t cnt, ssize_t n)
{
    for (size_t i = 0; i < cnt && n > 0; i++) {
        ssize_t part = iov[i].iov_len < (size_t)n ? (ssize_t)iov[i].iov_len : n;
        mark_read(iov[i].iov_base, part);
        n -= part;
    }
}

/* As mark_read, for what a recvmsg of n bytes wrote: the data, the
 * sender's address and the ancillary data. */
static void mark_read_msg(const struct msghdr *m, ssize_t n)
{
    mark_read_iov(m->msg_iov, m->msg_iovlen, n);
    if (m->msg_name)
        mark_read(m->msg_name, (ssize_t)m->msg_namelen);
    if (m->msg_control)
        mark_read(m->msg_control, (ssize_t)m->msg_controllen);
}

/* ---- the calls (the backend's `call`) ---------------------------------------------- */

/* A receive's flags for the ring, without MSG_WAITALL: the ring carries it
 * on after a part on a seqpacket socket too, where recv(2) gives one
 * message a call, and with MSG_PEEK would look at the first bytes again
 * and show them twice. A receive that waits for all gathers its parts in
 * io.c (gather_rest), as on the epoll backend. */
static int recv_flags(int flags)
{
    return flags & ~MSG_WAITALL;
}

/* One request on the ring of the coroutine's worker w. */
static ssize_t ring_once(struct weft__worker *w, const struct weft__io_op *a)
{
    struct io_uring_sqe *sqe = weft__ring_sqe(w);
    switch (a->kind) {
    case WEFT__IO_READ:    io_uring_prep_read(sqe, a->fd, a->buf, (unsigned)a->len, (uint64_t)-1); break;
    case WEFT__IO_WRITE:   io_uring_prep_write(sqe, a->fd, a->buf, (unsigned)a->len, (uint64_t)-1); break;
    case WEFT__IO_RECV:    io_uring_prep_recv(sqe, a->fd, a->buf, a->len, recv_flags(a->flags)); break;
    case WEFT__IO_SEND:    io_uring_prep_send(sqe, a->fd, a->buf, a->len, a->flags | MSG_NOSIGNAL); break;
    case WEFT__IO_ACCEPT:  io_uring_prep_accept(sqe, a->fd, a->addr, a->addrlen, a->flags); break;
    case WEFT__IO_CONNECT: io_uring_prep_connect(sqe, a->fd, a->addr, a->alen); break;
    case WEFT__IO_PREAD:   io_uring_prep_read(sqe, a->fd, a->buf, (unsigned)a->len, (uint64_t)a->off); break;
    case WEFT__IO_PWRITE:  io_uring_prep_write(sqe, a->fd, a->buf, (unsigned)a->len, (uint64_t)a->off); break;
    case WEFT__IO_OPEN:    io_uring_prep_openat(sqe, AT_FDCWD, a->path, a->flags, a->mode); break;
    case WEFT__IO_FSYNC:   io_uring_prep_fsync(sqe, a->fd, 0); break;
    case WEFT__IO_READV:   io_uring_prep_readv(sqe, a->fd, a->iov, (unsigned)a->iovcnt, (uint64_t)-1); break;
    case WEFT__IO_WRITEV:  io_uring_prep_writev(sqe, a->fd, a->iov, (unsigned)a->iovcnt, (uint64_t)-1); break;
    case WEFT__IO_RECVMSG: io_uring_prep_recvmsg(sqe, a->fd, a->msg, (unsigned)recv_flags(a->flags)); break;
    case WEFT__IO_SENDMSG: io_uring_prep_sendmsg(sqe, a->fd, a->msg, (unsigned)(a->flags | MSG_NOSIGNAL)); break;
    default:         io_uring_prep_poll_add(sqe, a->fd, (unsigned)a->flags); break;
    }
    struct weft__ioreq q;
    ssize_t r = weft__ring_call(w, sqe, &q);
    if (a->kind == WEFT__IO_READ || a->kind == WEFT__IO_RECV || a->kind == WEFT__IO_PREAD)
        mark_read(a->buf, r);
    else if (a->kind == WEFT__IO_READV)
        mark_read_iov(a->iov, (size_t)a->iovcnt, r);
    else if (a->kind == WEFT__IO_RECVMSG && r >= 0)
        mark_read_msg(a->msg, r);
    else if (a->kind == WEFT__IO_ACCEPT && r >= 0 && a->addrlen)
        mark_read(a->addr, *a->addrlen);
    return r;
}

static ssize_t ring_io(struct weft__worker *w, const struct weft__io_op *a)
{
    /* The ring takes at most UINT_MAX bytes a request; POSIX allows short IO. */
    struct weft__io_op c = *a;
    if (c.len > 0x7ffff000)
        c.len = 0x7ffff000;
    for (;;) {
        ssize_t r = ring_once(w, &c);
        if (r == -EINTR)
            continue;
        if (r != -EAGAIN || c.kind == WEFT__IO_POLL || weft__io_asks_not_to_wait(&c))
            return r;
        /* An O_NONBLOCK descriptor: wait until it is ready, then retry. */
        struct weft__io_op p = { .kind = WEFT__IO_POLL, .fd = c.fd,
                                 .flags = weft__io_writes(&c) ? POLLOUT : POLLIN };
        w = weft__worker_self();
        r = ring_once(w, &p);
        if (r < 0)
            return r;
        w = weft__worker_self();   /* the coroutine may have moved */
    }
}
ssize_t weft__ring_op(struct weft__worker *w, const struct weft__io_op *a)
{
    ssize_t r;
    switch (a->kind) {
    case WEFT__IO_CONNECT:
        r = ring_io(w, a);
        if (r != -EINPROGRESS && r != -EALREADY)
            return r;
        /* A non-blocking socket: the attempt goes on; wait for its outcome. */
        r = ring_io(w, &(struct weft__io_op){ .kind = WEFT__IO_POLL, .fd = a->fd, .flags = POLLOUT });
        return r < 0 ? r : WEFT__IO_CONNECTED_LATER;
    case WEFT__IO_PREAD:
    case WEFT__IO_PWRITE:
        /* The ring reads and writes a file without positions (a pipe, a
         * socket, a terminal) as a stream, whatever the offset, where
         * pread(2) refuses with ESPIPE; lseek refuses those files alike. */
        if (lseek(a->fd, 0, SEEK_CUR) < 0)
            return -errno;
        return ring_io(w, a);
    default:
        return ring_io(w, a);
    }
}

#endif /* WEFT_HAVE_URING */
