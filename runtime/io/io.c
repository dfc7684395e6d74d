/* SPDX-License-Identifier: MIT */
/*
 * Descriptor and file IO: the public calls. Each builds its operation once
 * (struct weft__io_op, io/backend.h) and hands it on:
 *   - from a coroutine, to its worker's backend (io/uring.c, io/epoll.c),
 *     unless the coroutine has been cancelled;
 *   - from a plain thread, to the plain system call, unless the thread has
 *     set a deadline (weft_deadline) and the call would block: then it waits
 *     for readiness in poll(2), at most until the deadline, and makes the call
 *     without blocking (see plain_io).
 * A wait that the caller's deadline or cancellation ends returns -ETIMEDOUT or
 * -ECANCELED with nothing transferred (a MSG_WAITALL receive, the part it
 * gathered: gather_rest).
 */
#include "backend.h"
#include "fdtab.h"
#include "owned.h"

#include "base/lock.h"
#include "base/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

ssize_t weft__io_syscall(const struct weft__io_op *a)
{
    switch (a->kind) {
    case WEFT__IO_READ:    return weft__sys_read(a->fd, a->buf, a->len);
    case WEFT__IO_WRITE:   return weft__sys_write(a->fd, a->buf, a->len);
    case WEFT__IO_RECV:    return weft__sys_recv(a->fd, a->buf, a->len, a->flags);
    case WEFT__IO_SEND:    return weft__sys_send(a->fd, a->buf, a->len, a->flags | MSG_NOSIGNAL);
    case WEFT__IO_ACCEPT:  return weft__sys_accept4(a->fd, a->addr, a->addrlen, a->flags);
    case WEFT__IO_CONNECT: return weft__sys_connect(a->fd, a->addr, a->alen);
    case WEFT__IO_PREAD:   return weft__sys_pread(a->fd, a->buf, a->len, a->off);
    case WEFT__IO_PWRITE:  return weft__sys_pwrite(a->fd, a->buf, a->len, a->off);
    case WEFT__IO_OPEN:    return weft__sys_open(a->path, a->flags, a->mode);
    case WEFT__IO_FSYNC:   return weft__sys_fsync(a->fd);
    case WEFT__IO_READV:   return weft__sys_readv(a->fd, a->iov, a->iovcnt);
    case WEFT__IO_WRITEV:  return weft__sys_writev(a->fd, a->iov, a->iovcnt);
    case WEFT__IO_RECVMSG: return weft__sys_recvmsg(a->fd, a->msg, a->flags);
    case WEFT__IO_SENDMSG: return weft__sys_sendmsg(a->fd, a->msg, a->flags | MSG_NOSIGNAL);
    case WEFT__IO_SENDFILE: return weft__sys_sendfile(a->fd, a->in_fd, a->offp, a->len);
    default: {
        struct pollfd p = { .fd = a->fd, .events = (short)a->flags };
        int r = weft__sys_poll(&p, 1, -1);
        if (r < 0)
            return r;
        return p.revents & POLLNVAL ? -EBADF : p.revents;
    }
    }
}

/*
 * Sockets keep the flags their owner gave them. recv and send take
 * MSG_DONTWAIT, but accept4 and connect have no such flag: where the caller
 * left the socket blocking, it is made O_NONBLOCK for the one call and given
 * its flags back at once. The toggles of one descriptor are serialised by a
 * process-wide lock picked by its number, and every weft call that reads the
 * flags to decide reads them under it, so two calls toggling at once (two
 * coroutines accepting on one listener, in one runtime or two) cannot take
 * the other's O_NONBLOCK for the owner's and leave it set. What remains: a
 * thread that enters accept(2) or connect(2) itself on the same socket, or
 * reads its flags, within that window of three system calls sees O_NONBLOCK
 * (its accept fails with EAGAIN), and an F_SETFL of its own made in the
 * window is undone.
 */
#define TOGGLE_LOCKS 64u
static _Atomic uint32_t toggle_lock[TOGGLE_LOCKS];   /* weft__ilock words */

/* Takes fd's toggle lock and returns it. The fork handler makes the locks
 * anew in a child: a plain thread may take one in a process with no runtime,
 * so it registers the handler first (where pthread_atfork has no memory, the
 * child is left as it would be without weft's handler). */
static _Atomic uint32_t *toggle_lock_of(int fd)
{
    weft__fork_handler_register();
    return &toggle_lock[(unsigned)fd % TOGGLE_LOCKS];
}

static _Atomic uint32_t *toggle_lock_take(int fd)
{
    _Atomic uint32_t *l = toggle_lock_of(fd);
    weft__ilock(l);
    return l;
}

void weft__io_fork_child(void)
{
    for (unsigned i = 0; i < TOGGLE_LOCKS; i++)
        atomic_store_explicit(&toggle_lock[i], 0, memory_order_relaxed);   /* one thread here */
    weft__offload_fork_child();
    weft__owned_fork_child();
    weft__pri_fork_child();
}

/* Whether fd's O_NONBLOCK is the epoll backend's, set for its coroutines (a
 * pipe, io/epolltab.c), not its owner's. The record is by number, and one
 * made stale by a close(2) that weft did not see may name a socket now, which
 * weft never makes O_NONBLOCK: that is the owner's. */
static bool nonblock_is_weft_s(int fd)
{
    struct stat st;
    return weft__hook_fd_weft_nonblock(fd) && fstat(fd, &st) == 0 && !S_ISSOCK(st.st_mode);
}

/* fd's file status flags as its owner set them, or a negative errno. */
static int owner_flags(int fd)
{
    _Atomic uint32_t *l = toggle_lock_take(fd);
    int fl = weft__sys_fcntl(fd, F_GETFL, 0);
    weft__iunlock(l);
    if (fl >= 0 && (fl & O_NONBLOCK) && nonblock_is_weft_s(fd))
        fl &= ~O_NONBLOCK;
    return fl;
}

/* Sets O_NONBLOCK on fd for one call where its owner left it blocking;
 * *back gets the flags to give back after the call, or -1 for none. Holds
 * fd's toggle lock. Returns 0 or a negative errno. */
static int nonblock_for_call(int fd, int *back)
{
    *back = -1;
    int fl = weft__sys_fcntl(fd, F_GETFL, 0);
    if (fl < 0 || (fl & O_NONBLOCK))
        return fl < 0 ? fl : 0;
    int err = weft__sys_fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    if (!err)
        *back = fl;
    return err;
}

/* accept4, connect or sendfile (a->kind) without waiting, on descriptors
 * whose flags are left as they were (see toggle_lock): a->fd, and for
 * sendfile from a socket in_fd too, since the kernel's read of a socket
 * waits by the socket's own flag, not by the call's. Two locks are taken in
 * the order of their addresses. Returns the call's result or a negative
 * errno: -EAGAIN (accept: nothing pending; sendfile: no room, or nothing to
 * read), -EINPROGRESS (connect: the attempt goes on). */
ssize_t weft__io_syscall_nowait(const struct weft__io_op *a)
{
    struct stat st;
    int in = a->kind == WEFT__IO_SENDFILE && a->in_fd != a->fd && fstat(a->in_fd, &st) == 0 &&
             S_ISSOCK(st.st_mode) ? a->in_fd : -1;
    _Atomic uint32_t *l1 = toggle_lock_of(a->fd), *l2 = in >= 0 ? toggle_lock_of(in) : NULL;
    if (l2 == l1)
        l2 = NULL;
    weft__ilock(l2 && l2 < l1 ? l2 : l1);
    if (l2)
        weft__ilock(l2 < l1 ? l1 : l2);
    int back_out, back_in = -1;
    ssize_t r = nonblock_for_call(a->fd, &back_out);
    if (!r && in >= 0)
        r = nonblock_for_call(in, &back_in);
    if (!r)
        r = weft__io_syscall(a);
    /* Flags the kernel took a moment ago: giving them back fails only where
     * another thread closed the descriptor meanwhile, with nothing to give. */
    if (back_in >= 0)
        weft__sys_fcntl(in, F_SETFL, back_in);
    if (back_out >= 0)
        weft__sys_fcntl(a->fd, F_SETFL, back_out);
    if (l2)
        weft__iunlock(l2);
    weft__iunlock(l1);
    return r;
}

/* connect's outcome once fd is writable: 0 or the attempt's negative errno. */
static int connect_outcome(const struct weft__io_op *c)
{
    /* The kernel finishes an attempt begun without blocking at the socket's
     * next connect(2), which says how it ended (0, or the error, taken off
     * the socket), and which would otherwise answer the caller's next
     * weft_connect with 0 where a blocking socket gets -EISCONN: that call is
     * made now, without blocking. SO_ERROR answers where it cannot. */
    int r = (int)weft__io_syscall_nowait(c);
    if (r == 0 || r == -EISCONN)
        return 0;
    if (r != -EALREADY && r != -EINPROGRESS)
        return r;
    int soerr = 0;
    socklen_t n = sizeof soerr;
    int err = weft__sys_getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &n);
    return err < 0 ? err : -soerr;
}

/* ---- a plain thread ------------------------------------------------------------- */

/*
 * A plain thread with a deadline waits for fd to be ready for `events` in
 * poll(2), at most until the deadline (a readiness already there is seen
 * after it too). Returns the revents, -ETIMEDOUT, or a negative errno.
 */
static int plain_wait(int fd, short events, uint64_t deadline)
{
    struct pollfd p = { .fd = fd, .events = events };
    for (;;) {
        uint64_t now = weft_now();
        uint64_t ms = now < deadline ? (deadline - now + 999999u) / 1000000u : 0;   /* rounded up */
        int r = weft__sys_poll(&p, 1, ms > INT_MAX ? INT_MAX : (int)ms);
        if (r < 0 && r != -EINTR)
            return r;
        if (r > 0)
            return p.revents & POLLNVAL ? -EBADF : p.revents;
        if (r == 0 && weft_now() >= deadline)
            return -ETIMEDOUT;
    }
}

/*
 * A blocking call from a plain thread. Without a deadline, or on a
 * descriptor its owner made O_NONBLOCK, it is the plain system call. With
 * one, a call that would block waits in plain_wait and is then made without
 * blocking: recv, send, recvmsg and sendmsg (and read, write, readv and
 * writev on a socket, as those) with MSG_DONTWAIT, accept4 with the
 * descriptor's O_NONBLOCK set for the call (weft__io_syscall_nowait),
 * each retried on EAGAIN. read, write, readv and writev on another kind of
 * file (a pipe, a terminal) have no such flag, and its O_NONBLOCK would be
 * seen by every thread that shares it: they are made once poll(2) says the
 * file is ready, and a write is cut to PIPE_BUF bytes (a writev to its first
 * buffer that holds any, so cut), which a ready pipe takes without waiting.
 * A thread of the user that reads (writes) the same pipe at that moment can
 * still take what poll(2) saw, and hold the call past the deadline. A
 * receive with MSG_WAITALL returns what has come, and do_io gathers the
 * rest until the deadline, as a signal would end it.
 */
static ssize_t plain_io(const struct weft__io_op *a)
{
    ssize_t r;
    uint64_t deadline = weft__thread_deadline();
    int fl = deadline && !weft__io_asks_not_to_wait(a) ? owner_flags(a->fd) : 0;
    if (fl < 0)
        return fl;
    if (!deadline || weft__io_asks_not_to_wait(a) || (fl & O_NONBLOCK)) {
        /* A pipe that the epoll backend made O_NONBLOCK for its coroutines
         * blocks a thread without a deadline as its owner made it: a wait in
         * poll(2), then the call again, and a write goes on until it has
         * written everything, as a blocking write(2) does. */
        struct weft__io_op c = *a;
        size_t done = 0;
        for (;;) {
            r = weft__io_syscall(&c);
            if (r == -EINTR)
                continue;
            bool again = r == -EAGAIN || r == -EWOULDBLOCK;
            bool partial = c.kind == WEFT__IO_WRITE && r > 0 && (size_t)r < c.len;
            /* Whose the flag is, asked only where the answer matters (an
             * fstat where weft's record says weft's). */
            if ((again || partial) && !deadline && !weft__io_asks_not_to_wait(a) && nonblock_is_weft_s(a->fd)) {
                if (partial) {
                    done += (size_t)r;
                    c.buf = (char *)c.buf + r;
                    c.len -= (size_t)r;
                    continue;
                }
                int ready = plain_wait(a->fd, weft__io_writes(a) ? POLLOUT : POLLIN, UINT64_MAX);
                if (ready >= 0)
                    continue;
                r = ready;
            }
            return done ? (ssize_t)done + (r > 0 ? r : 0) : r;
        }
    }
    struct msghdr m;   /* readv and writev on a socket, as recvmsg and sendmsg */
    bool stream = weft__io_is_stream(a);
    bool out = weft__io_writes(a);
    bool sock = true;   /* read, write, readv, writev: until the file answers ENOTSOCK */
    struct weft__io_op c = stream ? weft__io_as_socket(a, &m) : *a;
    for (;;) {
        if (weft__io_needs_toggle(&c)) {
            r = weft__io_syscall_nowait(&c);
        } else if (sock) {
            c.flags |= MSG_DONTWAIT;
            r = weft__io_syscall(&c);
            if (r == -ENOTSOCK && stream) {
                c = *a;
                sock = false;
                continue;
            }
        } else {
            int ready = plain_wait(c.fd, out ? POLLOUT : POLLIN, deadline);
            if (ready < 0)
                return ready;
            struct stat st;
            if (out && c.len > PIPE_BUF && (fstat(c.fd, &st) < 0 || !S_ISREG(st.st_mode))) {
                if (c.kind == WEFT__IO_WRITEV) {
                    int i = 0;
                    while (c.iov[i].iov_len == 0)   /* len > 0: one holds some */
                        i++;
                    c.kind = WEFT__IO_WRITE;
                    c.buf = c.iov[i].iov_base;
                    c.len = c.iov[i].iov_len;
                }
                if (c.len > PIPE_BUF)
                    c.len = PIPE_BUF;
            }
            r = weft__io_syscall(&c);
        }
        if (r == -EINTR)
            continue;
        if (r != -EAGAIN && r != -EWOULDBLOCK)
            return r;
        if (!sock)
            continue;   /* the file was made O_NONBLOCK meanwhile: poll again */
        int ready = plain_wait(c.fd, out ? POLLOUT : POLLIN, deadline);
        if (ready < 0)
            return ready;
    }
}


int weft__poll_now(int fd, short events)
{
    struct pollfd pfd = { .fd = fd, .events = events };
    int r;
    while ((r = weft__sys_poll(&pfd, 1, 0)) == -EINTR)
        ;
    if (r < 0)
        return r;
    if (pfd.revents & POLLNVAL)
        return -EBADF;
    return r > 0 ? pfd.revents : 0;
}

/* ---- the public calls ------------------------------------------------------------ */

/* What weft_dump says a coroutine waiting in an operation of this kind waits for. */
static enum weft__why why_of(enum weft__io_kind kind)
{
    switch (kind) {
    case WEFT__IO_READ: case WEFT__IO_RECV: return WEFT__WHY_READ;
    case WEFT__IO_WRITE: case WEFT__IO_SEND: return WEFT__WHY_WRITE;
    case WEFT__IO_ACCEPT: return WEFT__WHY_ACCEPT;
    case WEFT__IO_CONNECT: return WEFT__WHY_CONNECT;
    case WEFT__IO_POLL: return WEFT__WHY_POLL;
    default: return WEFT__WHY_FILE;
    }
}

/* Hands a to the calling coroutine's backend, having noted for weft_dump what
 * its waits inside (one or several) are for. */
static ssize_t call(struct weft__worker *w, const struct weft__io_op *a)
{
    if (a->why != WEFT__WHY_NONE)
        weft__why_task(w->current, (enum weft__why)a->why, a->what);
    else
        weft__why_task(w->current, why_of(a->kind), (uintptr_t)a->fd);
    return w->io->call(w, a);
}

static ssize_t coroutine_call(struct weft__worker *w, const struct weft__io_op *a)
{
    return weft__io_cancelled(w) ? -ECANCELED : call(w, a);
}

static ssize_t iov_total(const struct iovec *iov, size_t iovcnt);

/* One call, without gathering: through a handed-over socket's queue, else
 * the usual call. A MSG_WAITALL that the queue began returns its part, and
 * gather_rest asks the socket for the rest. *kernels: the call was the
 * plain blocking system call, which gathers by itself. */
static ssize_t io_once(const struct weft__io_op *a, bool *kernels)
{
    *kernels = false;
    if (WEFT__UNLIKELY(weft__owned_maybe()) && !weft__io_writes(a)) {
        bool usual;
        ssize_t r = weft__owned_io(a, &usual);
        if (!usual || r > 0)
            return r;
    }
    /* A plain thread without a deadline makes the blocking call itself: the
     * kernel has gathered, and stopped where recv(2) stops (a signal,
     * SO_RCVTIMEO), which no further call may undo. */
    *kernels = !weft__io_coroutine() && !weft__thread_deadline();
    return weft__io_usual(a);
}

/* Whether a receive waits for all its buffers can hold, as recv(2) with
 * MSG_WAITALL does on a blocking socket: not with MSG_PEEK (each call
 * looks at the same first bytes), MSG_DONTWAIT (what has come), MSG_OOB or
 * MSG_ERRQUEUE. The socket's type is asked after a part (gather_rest). */
static bool waits_for_all(const struct weft__io_op *a)
{
    return (a->kind == WEFT__IO_RECV || a->kind == WEFT__IO_RECVMSG) &&
           (a->flags & (MSG_WAITALL | MSG_PEEK | MSG_DONTWAIT | MSG_OOB | MSG_ERRQUEUE)) == MSG_WAITALL;
}

/*
 * The rest of a MSG_WAITALL receive whose first call returned `got` bytes.
 * The calls below return what has come: the epoll backend's, the ring's
 * (given no MSG_WAITALL: uringops.c), a plain thread's that must not block
 * past its deadline, and a handed-over socket's queue. Further receives go
 * into the rest of the buffers until they are full, the end comes, an
 * error, the deadline or a cancellation; the call returns the whole count.
 * As recv(2) on a blocking socket: only on a stream socket (a datagram
 * or seqpacket socket gives one message a call), and not past a part that
 * carried control data, which ends the read where it came; a recvmsg's
 * control buffer (of `ctl` bytes) waits for the first part that has some.
 * An error the socket holds is left for the next call, as recv(2) leaves
 * it; one that comes while the rest is awaited ends the call with what it
 * gathered. (Entries on the socket's error queue, MSG_ZEROCOPY's say, also
 * show as POLLERR: they end the call early too.)
 */
static ssize_t gather_rest(const struct weft__io_op *a, size_t got, size_t ctl)
{
    struct msghdr *msg = a->kind == WEFT__IO_RECVMSG ? a->msg : NULL;
    size_t want = msg ? (size_t)iov_total(msg->msg_iov, msg->msg_iovlen) : a->len;
    int type = 0;
    socklen_t tl = sizeof type;
    if (got >= want || (msg && msg->msg_controllen) ||
        getsockopt(a->fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM)
        return (ssize_t)got;
    struct weft__io_op rest = *a;
    struct msghdr m;
    struct iovec *iov = NULL;
    if (msg) {
        iov = malloc(msg->msg_iovlen * sizeof *iov);
        if (!iov)
            return (ssize_t)got;   /* what came is the caller's; the rest stays in the socket */
        rest.msg = &m;
    }
    while (got < want) {
        int ready = weft__poll_now(a->fd, POLLIN);
        if (ready < 0 || (ready & POLLERR))
            break;
        if (msg) {
            size_t n = 0, skip = got;
            for (size_t i = 0; i < msg->msg_iovlen; i++) {
                struct iovec v = msg->msg_iov[i];
                size_t k = skip < v.iov_len ? skip : v.iov_len;
                skip -= k;
                if (v.iov_len > k)
                    iov[n++] = (struct iovec){ (char *)v.iov_base + k, v.iov_len - k };
            }
            m = (struct msghdr){ .msg_iov = iov, .msg_iovlen = n, .msg_control = msg->msg_control,
                                 .msg_controllen = ctl };
        } else {
            rest.buf = (char *)a->buf + got;
            rest.len = a->len - got;
        }
        bool kernels;
        ssize_t r = io_once(&rest, &kernels);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (kernels)
            break;
        if (msg && m.msg_controllen) {
            msg->msg_controllen = m.msg_controllen;
            msg->msg_flags |= m.msg_flags;
            break;
        }
    }
    free(iov);
    return (ssize_t)got;
}

/* One call: on the caller's backend from a coroutine, else as plain_io;
 * a MSG_WAITALL receive gathers until it has all. */
static ssize_t do_io(const struct weft__io_op *a)
{
    if (a->len > SSIZE_MAX)
        return -EINVAL;   /* no count could report it; and so on every path and backend */
    size_t ctl = a->kind == WEFT__IO_RECVMSG ? a->msg->msg_controllen : 0;
    bool kernels;
    ssize_t r = io_once(a, &kernels);
    return r > 0 && !kernels && waits_for_all(a) ? gather_rest(a, (size_t)r, ctl) : r;
}

ssize_t weft__io_usual(const struct weft__io_op *a)
{
    struct weft__worker *w = weft__io_coroutine();
    return w ? coroutine_call(w, a) : plain_io(a);
}

ssize_t weft_read(int fd, void *buf, size_t len)
{
    return do_io(&(struct weft__io_op){ .kind = WEFT__IO_READ, .fd = fd, .buf = buf, .len = len });
}

ssize_t weft_write(int fd, const void *buf, size_t len)
{
    ssize_t r = do_io(&(struct weft__io_op){ .kind = WEFT__IO_WRITE, .fd = fd, .buf = (void *)buf, .len = len });
    /* On the epoll backend the write(2) that failed ran here, just now, on
     * this worker (a ring's owner takes its own as it reaps). */
    if (WEFT__UNLIKELY(r == -EPIPE) && weft__io_coroutine())
        weft__sigpipe_take();
    return r;
}

ssize_t weft_recv(int fd, void *buf, size_t len, int flags)
{
    return do_io(&(struct weft__io_op){ .kind = WEFT__IO_RECV, .fd = fd, .buf = buf, .len = len,
                                        .flags = flags });
}

ssize_t weft_send(int fd, const void *buf, size_t len, int flags)
{
    return do_io(&(struct weft__io_op){ .kind = WEFT__IO_SEND, .fd = fd, .buf = (void *)buf, .len = len,
                                        .flags = flags });
}

int weft_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC))
        return -EINVAL;
    return (int)do_io(&(struct weft__io_op){ .kind = WEFT__IO_ACCEPT, .fd = fd, .addr = addr,
                                             .addrlen = addrlen, .flags = flags });
}

/* connect from a plain thread: where the owner left the socket blocking and
 * the thread has a deadline, the attempt runs without blocking and the thread
 * waits in poll(2) until the deadline. Returns as a backend's call does. */
static int plain_connect(const struct weft__io_op *c)
{
    uint64_t deadline = weft__thread_deadline();
    int fl = deadline ? owner_flags(c->fd) : 0;
    if (fl < 0)
        return fl;
    if (!deadline || (fl & O_NONBLOCK))
        return (int)weft__io_syscall(c);
    int r = (int)weft__io_syscall_nowait(c);
    if (r != -EINPROGRESS && r != -EALREADY)
        return r;
    r = plain_wait(c->fd, POLLOUT, deadline);
    return r < 0 ? r : WEFT__IO_CONNECTED_LATER;   /* -ETIMEDOUT: the attempt goes on */
}

int weft_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    struct weft__io_op c = { .kind = WEFT__IO_CONNECT, .fd = fd, .addr = (struct sockaddr *)addr,
                             .alen = addrlen };
    struct weft__worker *w = weft__io_coroutine();
    int r;
    if (!w)
        r = plain_connect(&c);
    else if (weft__io_cancelled(w))
        return -ECANCELED;
    else
        r = (int)call(w, &c);
    return r == WEFT__IO_CONNECTED_LATER ? connect_outcome(&c) : r;
}

static int poll_fd(const struct weft__io_op *op);

/* weft_poll, noted for weft_dump as a wait for why and what when why is not
 * WEFT__WHY_NONE. */
int weft__poll_as(int fd, short events, enum weft__why why, uintptr_t what)
{
    if (fd < 0)
        return -EBADF;   /* poll(2) would skip it and wait for nothing */
    if (!(events & (POLLIN | POLLOUT | POLLPRI)))
        return -EINVAL;   /* nothing that could ever become ready: a plain thread would wait for ever */
    struct weft__io_op p = { .kind = WEFT__IO_POLL, .fd = fd, .flags = events,
                             .why = why, .what = what };
    if (WEFT__UNLIKELY(weft__owned_maybe())) {
        bool usual;
        struct weft__owned *held = NULL;
        int r = weft__owned_poll(fd, events, &usual, &held);
        if (!usual)
            return r;
        if (held) {
            r = poll_fd(&p);
            weft__owned_poll_done(held);
            return r;
        }
    }
    return poll_fd(&p);
}

/* weft__poll_as of the descriptor itself. */
static int poll_fd(const struct weft__io_op *p)
{
    short events = (short)p->flags;
    struct weft__worker *w = weft__io_coroutine();
    if (!w) {
        uint64_t deadline = weft__thread_deadline();
        if (deadline)
            return plain_wait(p->fd, events, deadline);
        int r;
        while ((r = (int)weft__io_syscall(p)) == -EINTR)
            ;
        return r;
    }
    if (weft__io_cancelled(w))
        return -ECANCELED;
    int r = weft__poll_now(p->fd, events);
    if (r)
        return r;
    return events & POLLPRI ? weft__pri_wait(p->fd, events, (enum weft__why)p->why, p->what) : (int)call(w, p);
}

int weft_poll(int fd, short events)
{
    return weft__poll_as(fd, events, WEFT__WHY_NONE, 0);
}

/* pread, pwrite, open, fsync: calls without readiness. From a plain thread,
 * as weft_offload from one: the call fails if the deadline has passed before
 * it starts, and else runs to its end. */
static ssize_t file_io(const struct weft__io_op *a)
{
    if (a->len > SSIZE_MAX)
        return -EINVAL;   /* as do_io */
    struct weft__worker *w = weft__io_coroutine();
    if (w)
        return coroutine_call(w, a);
    uint64_t deadline = weft__thread_deadline();
    if (deadline && deadline <= weft_now())
        return -ETIMEDOUT;
    ssize_t r;
    while ((r = weft__io_syscall(a)) == -EINTR)
        ;
    return r;
}

ssize_t weft_pread(int fd, void *buf, size_t len, off_t offset)
{
    if (offset < 0)
        return -EINVAL;   /* as pread(2), before the descriptor is looked at; the ring reads -1 as "here" */
    return file_io(&(struct weft__io_op){ .kind = WEFT__IO_PREAD, .fd = fd, .buf = buf, .len = len,
                                          .off = offset });
}

ssize_t weft_pwrite(int fd, const void *buf, size_t len, off_t offset)
{
    if (offset < 0)
        return -EINVAL;
    return file_io(&(struct weft__io_op){ .kind = WEFT__IO_PWRITE, .fd = fd, .buf = (void *)buf,
                                          .len = len, .off = offset });
}

int weft_open(const char *path, int flags, mode_t mode)
{
    if (!path)
        return -EFAULT;
    return (int)file_io(&(struct weft__io_op){ .kind = WEFT__IO_OPEN, .path = path,
                                               .flags = flags | O_CLOEXEC, .mode = mode });
}

int weft_fsync(int fd)
{
    return (int)file_io(&(struct weft__io_op){ .kind = WEFT__IO_FSYNC, .fd = fd });
}

/* ---- vectored, datagram and ancillary IO, and sendfile ---------------------------- */

/* The sum of the lengths of iov[0..iovcnt), or -EINVAL (iovcnt below 0 or
 * above IOV_MAX, as readv(2); a sum above SSIZE_MAX, which no count could
 * report) or -EFAULT (iov NULL with buffers to use). */
static ssize_t iov_total(const struct iovec *iov, size_t iovcnt)
{
    if (iovcnt > IOV_MAX)
        return -EINVAL;
    if (iovcnt && !iov)
        return -EFAULT;
    size_t sum = 0;
    for (size_t i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > (size_t)SSIZE_MAX - sum)
            return -EINVAL;
        sum += iov[i].iov_len;
    }
    return (ssize_t)sum;
}

/* A coroutine's write that failed with -EPIPE raised SIGPIPE on its worker,
 * which blocks it (epoll: just now, on this thread; a ring's owner takes its
 * own as it reaps): take it back. */
static ssize_t took_sigpipe(ssize_t r)
{
    if (WEFT__UNLIKELY(r == -EPIPE) && weft__io_coroutine())
        weft__sigpipe_take();
    return r;
}

ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt)
{
    ssize_t total = iovcnt < 0 ? -EINVAL : iov_total(iov, (size_t)iovcnt);
    if (total < 0)
        return total;
    return do_io(&(struct weft__io_op){ .kind = WEFT__IO_READV, .fd = fd, .iov = iov, .iovcnt = iovcnt,
                                        .len = (size_t)total });
}

ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt)
{
    ssize_t total = iovcnt < 0 ? -EINVAL : iov_total(iov, (size_t)iovcnt);
    if (total < 0)
        return total;
    return took_sigpipe(do_io(&(struct weft__io_op){ .kind = WEFT__IO_WRITEV, .fd = fd, .iov = iov,
                                                     .iovcnt = iovcnt, .len = (size_t)total }));
}

/* msg's buffers checked as recvmsg(2) and sendmsg(2) would: 0, -EFAULT (msg
 * NULL), -EMSGSIZE (more than IOV_MAX buffers), -EINVAL (a sum above
 * SSIZE_MAX). */
static int msg_check(const struct msghdr *msg)
{
    if (!msg)
        return -EFAULT;
    if (msg->msg_iovlen > IOV_MAX)
        return -EMSGSIZE;
    ssize_t total = iov_total(msg->msg_iov, msg->msg_iovlen);
    return total < 0 ? (int)total : 0;
}

ssize_t weft_recvmsg(int fd, struct msghdr *msg, int flags)
{
    int err = msg_check(msg);
    if (err)
        return err;
    return do_io(&(struct weft__io_op){ .kind = WEFT__IO_RECVMSG, .fd = fd, .msg = msg, .flags = flags });
}

ssize_t weft_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    int err = msg_check(msg);
    if (err)
        return err;
    return do_io(&(struct weft__io_op){ .kind = WEFT__IO_SENDMSG, .fd = fd, .msg = (struct msghdr *)msg,
                                        .flags = flags });
}

/* recvfrom is recvmsg of one buffer: the ring has no recvfrom of its own. */
ssize_t weft_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *addrlen)
{
    if (addr && !addrlen)
        return -EFAULT;   /* before anything is received, where recvfrom(2) would lose the datagram */
    struct iovec v = { .iov_base = buf, .iov_len = len };
    struct msghdr m = { .msg_name = addr, .msg_namelen = addr ? *addrlen : 0, .msg_iov = &v, .msg_iovlen = 1 };
    ssize_t r = do_io(&(struct weft__io_op){ .kind = WEFT__IO_RECVMSG, .fd = fd, .msg = &m, .flags = flags,
                                             .len = len });
    if (r >= 0 && addr)
        *addrlen = m.msg_namelen;   /* the sender's full length, as recvfrom(2) */
    return r;
}

ssize_t weft_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr,
                    socklen_t addrlen)
{
    struct iovec v = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr m = { .msg_name = (void *)addr, .msg_namelen = addr ? addrlen : 0, .msg_iov = &v,
                        .msg_iovlen = 1 };
    return do_io(&(struct weft__io_op){ .kind = WEFT__IO_SENDMSG, .fd = fd, .msg = &m, .flags = flags,
                                        .len = len });
}

/* After sendfile gave EAGAIN: the descriptor it waits for, and the events
 * in *events: out_fd until it has room; where it has room, in_fd (a socket or
 * a pipe) until it has data. */
static int sendfile_blocker(const struct weft__io_op *a, short *events)
{
    struct pollfd p[2] = { { .fd = a->fd, .events = POLLOUT }, { .fd = a->in_fd, .events = POLLIN } };
    int r;
    while ((r = weft__sys_poll(p, 2, 0)) == -EINTR)
        ;
    if (r > 0 && p[0].revents && !p[1].revents) {
        *events = POLLIN;
        return a->in_fd;
    }
    *events = POLLOUT;   /* no room, or both ready: the kernel's reason is out of sight */
    return a->fd;
}

/*
 * sendfile has no flag that says "do not wait", and either side may hold it
 * up: out_fd with no room, or in_fd, where it is a socket or a pipe, with
 * nothing to give (a splice). From a coroutine, or a plain thread with a
 * deadline, it is made without waiting (weft__io_syscall_nowait: out_fd's
 * O_NONBLOCK for the call, under which the kernel's read of in_fd does not
 * wait either), and on EAGAIN the caller waits for whichever side held it up
 * (sendfile_blocker), in its backend or in poll(2), and tries again. A plain
 * thread with a deadline does not wait on a side its owner made O_NONBLOCK;
 * one without a deadline makes sendfile(2) as the owner's flags have it, and
 * waits only where the O_NONBLOCK is the epoll backend's (a pipe).
 */
static ssize_t sendfile_io(const struct weft__io_op *a)
{
    if (a->len > SSIZE_MAX)
        return -EINVAL;   /* as do_io */
    struct weft__worker *w = weft__io_coroutine();
    if (w && weft__io_cancelled(w))
        return -ECANCELED;
    uint64_t deadline = w ? 0 : weft__thread_deadline();
    bool as_owner = !w && !deadline;   /* sendfile(2) under the owner's flags */
    if (!w && deadline) {
        int fl = owner_flags(a->fd);
        if (fl < 0)
            return fl;
        as_owner = fl & O_NONBLOCK;
    }
    for (;;) {
        ssize_t r = as_owner ? weft__io_syscall(a) : weft__io_syscall_nowait(a);
        if (r == -EINTR)
            continue;
        if (r != -EAGAIN || (as_owner && (deadline || !nonblock_is_weft_s(a->fd))))
            return r;
        short events;
        int fd = sendfile_blocker(a, &events);
        if (!w && fd == a->in_fd) {
            int fl = owner_flags(fd);
            if (fl < 0 || (fl & O_NONBLOCK))
                return fl < 0 ? fl : -EAGAIN;   /* the owner's: sendfile(2) says EAGAIN */
        }
        int ready = w ? weft__poll_as(fd, events, WEFT__WHY_FILE, (uintptr_t)a->fd)
                      : plain_wait(fd, events, deadline ? deadline : UINT64_MAX);
        if (ready < 0)
            return ready;
        w = weft__io_coroutine();   /* the coroutine may have moved */
    }
}

ssize_t weft_sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    if (offset && *offset < 0)
        return -EINVAL;   /* as sendfile(2) */
    if (in_fd < 0)
        return -EBADF;
    return took_sigpipe(sendfile_io(&(struct weft__io_op){ .kind = WEFT__IO_SENDFILE, .fd = out_fd,
                                                           .in_fd = in_fd, .offp = offset, .len = count }));
}

int weft_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    weft__hook_fd_forget(fd);   /* the number's next file starts afresh (io/fdtab.c) */
    weft__pri_close(fd);        /* its waits for POLLPRI, on sets of their own (io/pri.c) */
    return weft__io_close(fd);   /* io/backend.c: every backend lets go of fd first */
}
