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
 * -ECANCELED with nothing transferred.
 */
#include "backend.h"
#include "fdtab.h"

#include "base/lock.h"
#include "base/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* The calling coroutine's worker, or NULL from a plain thread. */
static struct weft__worker *in_coroutine(void)
{
    struct weft__worker *w = weft__worker_self();
    return w && w->current ? w : NULL;
}

/*
 * Whether the coroutine on w has been cancelled. Its IO calls then fail with
 * -ECANCELED at once, also those that could complete without waiting: the
 * backends need not look again before they make a system call.
 */
static bool cancelled(const struct weft__worker *w)
{
    return atomic_load_explicit(&w->current->cancelled, memory_order_relaxed) != 0;   /* set once, never cleared */
}

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

static _Atomic uint32_t *toggle_lock_of(int fd)
{
    return &toggle_lock[(unsigned)fd % TOGGLE_LOCKS];
}

/* fd's file status flags as its owner set them, or a negative errno. */
static int owner_flags(int fd)
{
    _Atomic uint32_t *l = toggle_lock_of(fd);
    weft__ilock(l);
    int fl = weft__sys_fcntl(fd, F_GETFL, 0);
    weft__iunlock(l);
    return fl;
}

/* accept4 or connect (a->kind) without waiting, on a socket whose flags are
 * left as they were (see toggle_lock). Returns the call's result or a
 * negative errno: -EAGAIN (accept: nothing pending), -EINPROGRESS (connect:
 * the attempt goes on). */
ssize_t weft__io_syscall_nowait(const struct weft__io_op *a)
{
    _Atomic uint32_t *l = toggle_lock_of(a->fd);
    weft__ilock(l);
    ssize_t r;
    int fl = weft__sys_fcntl(a->fd, F_GETFL, 0);
    bool toggle = fl >= 0 && !(fl & O_NONBLOCK);
    int err = fl < 0 ? fl : toggle ? weft__sys_fcntl(a->fd, F_SETFL, fl | O_NONBLOCK) : 0;
    if (err < 0) {
        r = err;
    } else {
        r = weft__io_syscall(a);
        /* Flags the kernel took a moment ago: this fails only where another
         * thread closed fd meanwhile, and then there is nothing to restore. */
        if (toggle)
            weft__sys_fcntl(a->fd, F_SETFL, fl);
    }
    weft__iunlock(l);
    return r;
}

/* connect's outcome once fd is writable: 0 or the attempt's negative errno. */
static int connect_outcome(int fd)
{
    int soerr = 0;
    socklen_t n = sizeof soerr;
    int err = weft__sys_getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &n);
    if (err < 0)
        return err;
    return -soerr;
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
 * blocking: recv and send (and read and write on a socket) with MSG_DONTWAIT,
 * accept4 with the listener's O_NONBLOCK set for the call (once_nowait), each
 * retried on EAGAIN. Read and write on another kind of file (a pipe, a
 * terminal) have no such flag, and its O_NONBLOCK would be seen by every
 * thread that shares it: they are made once poll(2) says the file is ready,
 * and a write is cut to PIPE_BUF bytes, which a ready pipe takes without
 * waiting. A thread of the user that reads (writes) the same pipe at that
 * moment can still take what poll(2) saw, and hold the call past the
 * deadline. recv with MSG_WAITALL gathers until the deadline and then returns
 * what it has, as a signal would end it.
 */
static ssize_t plain_io(const struct weft__io_op *a)
{
    ssize_t r;
    uint64_t deadline = weft__thread_deadline();
    int fl = deadline && !weft__io_asks_not_to_wait(a) ? owner_flags(a->fd) : 0;
    if (fl < 0)
        return fl;
    if (!deadline || weft__io_asks_not_to_wait(a) || (fl & O_NONBLOCK)) {
        while ((r = weft__io_syscall(a)) == -EINTR)
            ;
        return r;
    }
    struct weft__io_op c = *a;
    bool out = c.kind == WEFT__IO_WRITE || c.kind == WEFT__IO_SEND;
    bool sock = true;   /* read and write: until the file answers ENOTSOCK */
    if (c.kind == WEFT__IO_READ || c.kind == WEFT__IO_WRITE)
        c.kind = out ? WEFT__IO_SEND : WEFT__IO_RECV;
    bool waitall = c.kind == WEFT__IO_RECV && (c.flags & MSG_WAITALL);
    if (waitall)
        c.flags &= ~MSG_WAITALL;
    size_t done = 0;   /* gathered so far, with MSG_WAITALL */
    for (;;) {
        if (c.kind == WEFT__IO_ACCEPT) {
            r = weft__io_syscall_nowait(&c);
        } else if (sock) {
            c.flags |= MSG_DONTWAIT;
            r = weft__io_syscall(&c);
            if (r == -ENOTSOCK && (a->kind == WEFT__IO_READ || a->kind == WEFT__IO_WRITE)) {
                c = *a;
                sock = false;
                continue;
            }
        } else {
            int ready = plain_wait(c.fd, out ? POLLOUT : POLLIN, deadline);
            if (ready < 0)
                return ready;
            struct stat st;
            if (out && c.len > PIPE_BUF && (fstat(c.fd, &st) < 0 || !S_ISREG(st.st_mode)))
                c.len = PIPE_BUF;
            r = weft__io_syscall(&c);
        }
        if (r == -EINTR)
            continue;
        if (waitall && r > 0 && done + (size_t)r < a->len) {
            done += (size_t)r;
            c.buf = (char *)a->buf + done;
            c.len = a->len - done;
            continue;
        }
        if (r != -EAGAIN && r != -EWOULDBLOCK) {
            if (done)   /* MSG_WAITALL: what it gathered, whatever ended it */
                return r > 0 ? r + (ssize_t)done : (ssize_t)done;
            return r;
        }
        if (!sock)
            continue;   /* the file was made O_NONBLOCK meanwhile: poll again */
        int ready = plain_wait(c.fd, out ? POLLOUT : POLLIN, deadline);
        if (ready < 0)
            return done ? (ssize_t)done : ready;
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

/* One call: on the caller's backend from a coroutine, else as plain_io. */
static ssize_t do_io(const struct weft__io_op *a)
{
    if (a->len > SSIZE_MAX)
        return -EINVAL;   /* no count could report it; and so on every path and backend */
    struct weft__worker *w = in_coroutine();
    if (!w)
        return plain_io(a);
    if (cancelled(w))
        return -ECANCELED;
    return w->io->call(w, a);
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
    if (WEFT__UNLIKELY(r == -EPIPE) && in_coroutine())
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
    struct weft__worker *w = in_coroutine();
    int r;
    if (!w)
        r = plain_connect(&c);
    else if (cancelled(w))
        return -ECANCELED;
    else
        r = (int)w->io->call(w, &c);
    return r == WEFT__IO_CONNECTED_LATER ? connect_outcome(fd) : r;
}

int weft_poll(int fd, short events)
{
    if (fd < 0)
        return -EBADF;   /* poll(2) would skip it and wait for nothing */
    if (!(events & (POLLIN | POLLOUT | POLLPRI)))
        return -EINVAL;   /* nothing that could ever become ready: a plain thread would wait for ever */
    struct weft__io_op p = { .kind = WEFT__IO_POLL, .fd = fd, .flags = events };
    struct weft__worker *w = in_coroutine();
    if (!w) {
        uint64_t deadline = weft__thread_deadline();
        if (deadline)
            return plain_wait(fd, events, deadline);
        int r;
        while ((r = (int)weft__io_syscall(&p)) == -EINTR)
            ;
        return r;
    }
    if (cancelled(w))
        return -ECANCELED;
    int r = weft__poll_now(fd, events);
    return r ? r : (int)w->io->call(w, &p);
}

/* pread, pwrite, open, fsync: calls without readiness. From a plain thread,
 * as weft_offload from one: the call fails if the deadline has passed before
 * it starts, and else runs to its end. */
static ssize_t file_io(const struct weft__io_op *a)
{
    if (a->len > SSIZE_MAX)
        return -EINVAL;   /* as do_io */
    struct weft__worker *w = in_coroutine();
    if (w)
        return cancelled(w) ? -ECANCELED : w->io->call(w, a);
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

int weft_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    weft__hook_fd_forget(fd);   /* the number's next file starts afresh (io/fdtab.c) */
    return weft__io_close(fd);   /* io/backend.c: every backend lets go of fd first */
}
