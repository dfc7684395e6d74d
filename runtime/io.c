/*
 * Descriptor and file IO: the public calls, and the choice of backend.
 *
 * From a plain thread each call is the plain system call, unless the thread
 * has set a deadline (weft_deadline) and the call would block: then it waits
 * for readiness in poll(2), at most until the deadline, and makes the call
 * without blocking (see plain_io). From a coroutine on
 * a worker with an io_uring (runtime/io_uring.c), each call is one request on
 * that ring; a request that meets a descriptor the caller made O_NONBLOCK and
 * reports -EAGAIN waits for readiness with a poll request and is retried.
 * From a coroutine on a worker without one (the epoll backend):
 *   - the call is tried without blocking (MSG_DONTWAIT on a socket; a pipe or
 *     a terminal is switched to O_NONBLOCK), and if it would block the
 *     coroutine waits for readiness on its worker's epoll set
 *     (runtime/io_epoll.c) and tries again;
 *   - calls that always block on a regular file and have no readiness (open,
 *     fsync, pread, pwrite) run through weft_offload() on a helper thread.
 * A wait that the caller's deadline or cancellation ends returns -ETIMEDOUT or
 * -ECANCELED with nothing transferred.
 */
#include "io.h"

#include "fdtab.h"
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if WEFT_HAVE_URING
#include <liburing.h>
#endif

/* The calling coroutine's worker, or NULL from a plain thread. */
static struct weft__worker *in_coroutine(void)
{
    struct weft__worker *w = weft__worker_self();
    return w && w->current ? w : NULL;
}

/* A pipe or terminal for the epoll backend: made O_NONBLOCK, and left so. */
static int make_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if (fl & O_NONBLOCK)
        return 0;
    weft__fd_weft_nonblock(fd, true);   /* the flag is weft's, not the owner's (runtime/fdtab.c) */
    if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        int err = -errno;
        weft__fd_weft_nonblock(fd, false);
        return err;
    }
    return 0;
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
    int fl = fcntl(fd, F_GETFL);
    weft__iunlock(l);
    return fl < 0 ? -errno : fl;
}

enum op { OP_READ, OP_WRITE, OP_RECV, OP_SEND, OP_ACCEPT, OP_CONNECT, OP_PREAD, OP_PWRITE,
          OP_OPEN, OP_FSYNC, OP_POLL };

struct io_args {
    enum op          op;
    int              fd;
    void            *buf;
    size_t           len;
    int              flags;
    struct sockaddr *addr;      /* accept, connect */
    socklen_t       *addrlen;   /* accept */
    socklen_t        alen;      /* connect */
    off_t            off;       /* pread, pwrite */
    const char      *path;      /* open */
    mode_t           mode;      /* open */
};

/* recv and send with MSG_DONTWAIT want -EAGAIN back, not a wait. */
static bool asks_not_to_wait(const struct io_args *a)
{
    return (a->op == OP_RECV || a->op == OP_SEND) && (a->flags & MSG_DONTWAIT);
}

#if WEFT_HAVE_URING
/* One request on the ring of the coroutine's worker w. */
static ssize_t ring_once(struct weft__worker *w, const struct io_args *a)
{
    struct io_uring_sqe *sqe = weft__ring_sqe(w);
    switch (a->op) {
    case OP_READ:    io_uring_prep_read(sqe, a->fd, a->buf, (unsigned)a->len, (uint64_t)-1); break;
    case OP_WRITE:   io_uring_prep_write(sqe, a->fd, a->buf, (unsigned)a->len, (uint64_t)-1); break;
    case OP_RECV:    io_uring_prep_recv(sqe, a->fd, a->buf, a->len, a->flags); break;
    case OP_SEND:    io_uring_prep_send(sqe, a->fd, a->buf, a->len, a->flags | MSG_NOSIGNAL); break;
    case OP_ACCEPT:  io_uring_prep_accept(sqe, a->fd, a->addr, a->addrlen, a->flags); break;
    case OP_CONNECT: io_uring_prep_connect(sqe, a->fd, a->addr, a->alen); break;
    case OP_PREAD:   io_uring_prep_read(sqe, a->fd, a->buf, (unsigned)a->len, (uint64_t)a->off); break;
    case OP_PWRITE:  io_uring_prep_write(sqe, a->fd, a->buf, (unsigned)a->len, (uint64_t)a->off); break;
    case OP_OPEN:    io_uring_prep_openat(sqe, AT_FDCWD, a->path, a->flags, a->mode); break;
    case OP_FSYNC:   io_uring_prep_fsync(sqe, a->fd, 0); break;
    default:         io_uring_prep_poll_add(sqe, a->fd, (unsigned)a->flags); break;
    }
    struct weft__ioreq q;
    ssize_t r = weft__ring_call(w, sqe, &q);
    if (a->op == OP_READ || a->op == OP_RECV || a->op == OP_PREAD)
        weft__ring_mark_read(a->buf, r);
    else if (a->op == OP_ACCEPT && r >= 0 && a->addrlen)
        weft__ring_mark_read(a->addr, *a->addrlen);
    return r;
}

static ssize_t ring_io(struct weft__worker *w, const struct io_args *a)
{
    /* The ring takes at most UINT_MAX bytes a request; POSIX allows short IO. */
    struct io_args c = *a;
    if (c.len > 0x7ffff000)
        c.len = 0x7ffff000;
    for (;;) {
        ssize_t r = ring_once(w, &c);
        if (r == -EINTR)
            continue;
        if (r != -EAGAIN || c.op == OP_POLL || asks_not_to_wait(&c))
            return r;
        /* An O_NONBLOCK descriptor: wait until it is ready, then retry. */
        bool out = c.op == OP_WRITE || c.op == OP_SEND || c.op == OP_CONNECT || c.op == OP_PWRITE;
        struct io_args p = { .op = OP_POLL, .fd = c.fd, .flags = out ? POLLOUT : POLLIN };
        w = weft__worker_self();
        r = ring_once(w, &p);
        if (r < 0)
            return r;
        w = weft__worker_self();   /* the coroutine may have moved */
    }
}
#endif

static ssize_t once(const struct io_args *a)
{
    ssize_t r;
    switch (a->op) {
    case OP_READ:    r = read(a->fd, a->buf, a->len); break;
    case OP_WRITE:   r = write(a->fd, a->buf, a->len); break;
    case OP_RECV:    r = recv(a->fd, a->buf, a->len, a->flags); break;
    case OP_SEND:    r = send(a->fd, a->buf, a->len, a->flags | MSG_NOSIGNAL); break;
    case OP_CONNECT: r = connect(a->fd, a->addr, a->alen); break;
    default:         r = accept4(a->fd, a->addr, a->addrlen, a->flags); break;
    }
    return r < 0 ? -errno : r;
}

/* accept4 or connect (a->op) without waiting, on a socket whose flags are
 * left as they were (see toggle_lock). Returns the call's result or a
 * negative errno: -EAGAIN (accept: nothing pending), -EINPROGRESS (connect:
 * the attempt goes on). */
static ssize_t once_nowait(const struct io_args *a)
{
    _Atomic uint32_t *l = toggle_lock_of(a->fd);
    weft__ilock(l);
    ssize_t r;
    int fl = fcntl(a->fd, F_GETFL);
    bool toggle = fl >= 0 && !(fl & O_NONBLOCK);
    if (fl < 0 || (toggle && fcntl(a->fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
        r = -errno;
    } else {
        r = once(a);
        /* Flags the kernel took a moment ago: this fails only where another
         * thread closed fd meanwhile, and then there is nothing to restore. */
        if (toggle)
            fcntl(a->fd, F_SETFL, fl);
    }
    weft__iunlock(l);
    return r;
}

/* connect's outcome once fd is writable: 0 or the attempt's negative errno. */
static int connect_outcome(int fd)
{
    int soerr = 0;
    socklen_t n = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &n) < 0)
        return -errno;
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
        int r = poll(&p, 1, ms > INT_MAX ? INT_MAX : (int)ms);
        if (r < 0 && errno != EINTR)
            return -errno;
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
static ssize_t plain_io(const struct io_args *a)
{
    ssize_t r;
    uint64_t deadline = weft__thread_deadline();
    int fl = deadline && !asks_not_to_wait(a) ? owner_flags(a->fd) : 0;
    if (fl < 0)
        return fl;
    if (!deadline || asks_not_to_wait(a) || (fl & O_NONBLOCK)) {
        while ((r = once(a)) == -EINTR)
            ;
        return r;
    }
    struct io_args c = *a;
    bool out = c.op == OP_WRITE || c.op == OP_SEND;
    bool sock = true;   /* read and write: until the file answers ENOTSOCK */
    if (c.op == OP_READ || c.op == OP_WRITE)
        c.op = out ? OP_SEND : OP_RECV;
    bool waitall = c.op == OP_RECV && (c.flags & MSG_WAITALL);
    if (waitall)
        c.flags &= ~MSG_WAITALL;
    size_t done = 0;   /* gathered so far, with MSG_WAITALL */
    for (;;) {
        if (c.op == OP_ACCEPT) {
            r = once_nowait(&c);
        } else if (sock) {
            c.flags |= MSG_DONTWAIT;
            r = once(&c);
            if (r == -ENOTSOCK && (a->op == OP_READ || a->op == OP_WRITE)) {
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
            r = once(&c);
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

/*
 * The epoll backend. Sockets are left as the caller made them: recv and send
 * take MSG_DONTWAIT, read and write on a socket are recv and send with no
 * flags, and accept4 sets O_NONBLOCK for the one call (once_nowait). Other
 * descriptors (pipes, terminals) are switched to O_NONBLOCK. The descriptor
 * table remembers which answered ENOTSOCK, as a hint: a number reused for
 * another kind of file costs one system call, never a blocked worker.
 */
static ssize_t epoll_io(struct weft__worker *w, const struct io_args *a)
{
    struct io_args c = *a;
    bool as_socket = (c.op == OP_READ || c.op == OP_WRITE) && !weft__fd_not_socket(w->rt, c.fd);
    if (as_socket)
        c.op = c.op == OP_READ ? OP_RECV : OP_SEND;
    int err;
    if (c.op == OP_RECV || c.op == OP_SEND)
        c.flags |= MSG_DONTWAIT;
    else if (c.op != OP_ACCEPT && (err = make_nonblocking(c.fd)))
        return err;
    bool write = c.op == OP_WRITE || c.op == OP_SEND;
    for (;;) {
        ssize_t r = c.op == OP_ACCEPT ? once_nowait(&c) : once(&c);
        if (r == -ENOTSOCK && as_socket) {
            /* A pipe or a terminal: read(2) and write(2), made non-blocking. */
            weft__fd_mark_not_socket(w->rt, c.fd);
            as_socket = false;
            c = *a;
            if ((err = make_nonblocking(c.fd)))
                return err;
            continue;
        }
        if (r == -EINTR)
            continue;
        if ((r != -EAGAIN && r != -EWOULDBLOCK) || asks_not_to_wait(a))
            return r;
        err = weft__epoll_wait_fd(w, c.fd, write ? WEFT__WAIT_WRITE : WEFT__WAIT_READ);
        if (err < 0)
            return err;
        w = weft__worker_self();   /* the coroutine may have moved */
    }
}

static ssize_t do_io(const struct io_args *a)
{
    struct weft__worker *w = in_coroutine();
    if (!w)
        return plain_io(a);
#if WEFT_HAVE_URING
    if (w->ring)
        return ring_io(w, a);
#endif
    return epoll_io(w, a);
}

ssize_t weft_read(int fd, void *buf, size_t len)
{
    return do_io(&(struct io_args){ .op = OP_READ, .fd = fd, .buf = buf, .len = len });
}

ssize_t weft_write(int fd, const void *buf, size_t len)
{
    ssize_t r = do_io(&(struct io_args){ .op = OP_WRITE, .fd = fd, .buf = (void *)buf, .len = len });
    /* On the epoll backend the write(2) that failed ran here, just now, on
     * this worker (a ring's owner takes its own as it reaps). */
    if (WEFT__UNLIKELY(r == -EPIPE) && in_coroutine())
        weft__sigpipe_take();
    return r;
}

ssize_t weft_recv(int fd, void *buf, size_t len, int flags)
{
    return do_io(&(struct io_args){ .op = OP_RECV, .fd = fd, .buf = buf, .len = len, .flags = flags });
}

ssize_t weft_send(int fd, const void *buf, size_t len, int flags)
{
    return do_io(&(struct io_args){ .op = OP_SEND, .fd = fd, .buf = (void *)buf, .len = len,
                                    .flags = flags });
}

int weft_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC))
        return -EINVAL;
    return (int)do_io(&(struct io_args){ .op = OP_ACCEPT, .fd = fd, .addr = addr,
                                         .addrlen = addrlen, .flags = flags });
}

int weft_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    struct io_args c = { .op = OP_CONNECT, .fd = fd, .addr = (struct sockaddr *)addr, .alen = addrlen };
    struct weft__worker *w = in_coroutine();
    if (!w) {
        /* The attempt runs without blocking and the thread waits in poll(2)
         * until the deadline, where the owner left the socket blocking. */
        uint64_t deadline = weft__thread_deadline();
        int fl = deadline ? owner_flags(fd) : 0;
        if (fl < 0)
            return fl;
        if (!deadline || (fl & O_NONBLOCK))
            return (int)once(&c);
        int r = (int)once_nowait(&c);
        if (r != -EINPROGRESS && r != -EALREADY)
            return r;
        r = plain_wait(fd, POLLOUT, deadline);
        return r < 0 ? r : connect_outcome(fd);   /* -ETIMEDOUT: the attempt goes on */
    }
#if WEFT_HAVE_URING
    if (w->ring) {
        ssize_t r = ring_io(w, &(struct io_args){ .op = OP_CONNECT, .fd = fd,
                                                  .addr = (struct sockaddr *)addr, .alen = addrlen });
        if (r != -EINPROGRESS && r != -EALREADY)
            return (int)r;
        /* A non-blocking socket: the attempt goes on; wait for its outcome. */
        r = ring_io(w, &(struct io_args){ .op = OP_POLL, .fd = fd, .flags = POLLOUT });
        return r < 0 ? (int)r : connect_outcome(fd);
    }
#endif
    /* The epoll backend: the attempt is started without blocking, the
     * socket's flags given back at once, and it goes on while we wait. */
    int r = (int)once_nowait(&c);
    if (r != -EINPROGRESS && r != -EALREADY && r != -EINTR)
        return r;
    r = weft__epoll_wait_fd(w, fd, WEFT__WAIT_WRITE);
    if (r < 0)
        return r;   /* the connection attempt goes on; the caller closes fd */
    return connect_outcome(fd);
}

int weft_poll(int fd, short events)
{
    if (fd < 0)
        return -EBADF;   /* poll(2) would skip it and wait for nothing */
    struct weft__worker *w = in_coroutine();
    if (!w) {
        uint64_t deadline = weft__thread_deadline();
        if (deadline)
            return plain_wait(fd, events, deadline);
        struct pollfd pfd = { .fd = fd, .events = events };
        int r;
        while ((r = poll(&pfd, 1, -1)) < 0 && errno == EINTR)
            ;
        return r < 0 ? -errno : pfd.revents & POLLNVAL ? -EBADF : pfd.revents;
    }
    struct pollfd pfd = { .fd = fd, .events = events };
    for (;;) {
        int r;
        while ((r = poll(&pfd, 1, 0)) < 0 && errno == EINTR)
            ;
        if (r < 0)
            return -errno;
        if (pfd.revents & POLLNVAL)
            return -EBADF;
        if (r > 0)
            return pfd.revents;
        if (!(events & (POLLIN | POLLOUT | POLLPRI)))
            return -EINVAL;   /* nothing that could ever become ready */
#if WEFT_HAVE_URING
        if (w->ring) {
            ssize_t rv = ring_io(w, &(struct io_args){ .op = OP_POLL, .fd = fd, .flags = events });
            return (int)rv;
        }
#endif
        int e = weft__epoll_wait_fd(w, fd, (events & (POLLIN | POLLPRI) ? WEFT__WAIT_READ : 0) |
                                                   (events & POLLOUT ? WEFT__WAIT_WRITE : 0));
        if (e < 0)
            return e;
        w = weft__worker_self();
    }
}

/* ---- calls without readiness: a helper thread in a coroutine ---------------- */

struct file_call {
    enum op     op;        /* OP_OPEN, OP_FSYNC, OP_PREAD or OP_PWRITE */
    int         fd;
    const char *path;
    int         flags;
    mode_t      mode;
    void       *buf;
    size_t      len;
    off_t       off;
    ssize_t     ret;       /* the result or a negative errno */
};

static void *file_call_run(void *arg)
{
    struct file_call *c = arg;
    ssize_t r;
    do {
        switch (c->op) {
        case OP_OPEN:  r = open(c->path, c->flags, c->mode); break;
        case OP_FSYNC: r = fsync(c->fd); break;
        case OP_PREAD: r = pread(c->fd, c->buf, c->len, c->off); break;
        default:       r = pwrite(c->fd, c->buf, c->len, c->off); break;
        }
    } while (r < 0 && errno == EINTR);
    c->ret = r < 0 ? -errno : r;
    return NULL;
}

static ssize_t file_call(struct file_call *c)
{
    struct weft__worker *w = in_coroutine();
    if (!w) {
        /* No readiness to wait on: as weft_offload from a plain thread, the
         * call fails if the deadline has passed before it starts, and else
         * runs to its end. */
        uint64_t deadline = weft__thread_deadline();
        if (deadline && deadline <= weft_now())
            return -ETIMEDOUT;
        file_call_run(c);
        return c->ret;
    }
#if WEFT_HAVE_URING
    if (w->ring) {
        /* The ring reads and writes a file without positions (a pipe, a
         * socket, a terminal) as a stream, whatever the offset, where
         * pread(2) refuses with ESPIPE; lseek refuses those files alike. */
        if ((c->op == OP_PREAD || c->op == OP_PWRITE) && lseek(c->fd, 0, SEEK_CUR) < 0)
            return -errno;
        return ring_io(w, &(struct io_args){ .op = c->op, .fd = c->fd, .buf = c->buf,
                                             .len = c->len, .off = c->off, .path = c->path,
                                             .flags = c->flags, .mode = c->mode });
    }
#endif
    int err = weft_offload(file_call_run, c, NULL);
    return err ? err : c->ret;
}

ssize_t weft_pread(int fd, void *buf, size_t len, off_t offset)
{
    if (offset < 0)
        return -EINVAL;   /* as pread(2), before the descriptor is looked at; the ring reads -1 as "here" */
    return file_call(&(struct file_call){ .op = OP_PREAD, .fd = fd, .buf = buf, .len = len, .off = offset });
}

ssize_t weft_pwrite(int fd, const void *buf, size_t len, off_t offset)
{
    if (offset < 0)
        return -EINVAL;
    return file_call(&(struct file_call){ .op = OP_PWRITE, .fd = fd, .buf = (void *)buf, .len = len,
                                          .off = offset });
}

int weft_open(const char *path, int flags, mode_t mode)
{
    if (!path)
        return -EFAULT;
    return (int)file_call(&(struct file_call){ .op = OP_OPEN, .path = path, .flags = flags | O_CLOEXEC,
                                               .mode = mode });
}

int weft_fsync(int fd)
{
    return (int)file_call(&(struct file_call){ .op = OP_FSYNC, .fd = fd });
}

struct closing {
    int                      fd;
    unsigned                 rings;   /* rings that may have requests on fd */
    struct weft__ring_close *ring;    /* their part of the close, if any */
};

#if WEFT_HAVE_URING
static void count_rings(weft_rt *rt, void *arg)
{
    struct closing *c = arg;
    c->rings += weft__ring_close_count(rt, c->fd);
}
#endif

/* Fails the coroutines of rt waiting on the descriptor with -EBADF: on the
 * epoll backend at once, on io_uring through the notes of the close. */
static void forget_fd(weft_rt *rt, void *arg)
{
    struct closing *c = arg;
    weft__epoll_forget(rt, c->fd);
#if WEFT_HAVE_URING
    if (c->ring)
        weft__ring_close_post(rt, c->ring);
#endif
}

/*
 * A descriptor that rings may have requests on, queued or in flight, keeps
 * its number under a tombstone until they have let go of it, so that no
 * request reaches a new file given the number (runtime/io_uring.c); any
 * other is closed with close(2) at once.
 */
int weft_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    weft__hook_fd_forget(fd);   /* the number's next file starts afresh (runtime/fdtab.c) */
    struct closing c = { .fd = fd };
#if WEFT_HAVE_URING
    weft__each_runtime(count_rings, &c);
    int err = c.rings ? weft__ring_close_new(&c.ring, fd, c.rings) : 0;
    if (err)
        return err;
#endif
    weft__each_runtime(forget_fd, &c);   /* coroutines waiting on fd, in any runtime, get -EBADF */
#if WEFT_HAVE_URING
    if (c.ring)
        return weft__ring_close_end(c.ring);
#endif
    /* close(2) releases the descriptor even when it reports EINTR: never retry. */
    return close(fd) < 0 && errno != EINTR ? -errno : 0;
}

/* ---- SIGPIPE on workers ------------------------------------------------------- */

/*
 * A write to a pipe whose reader has gone raises SIGPIPE on the writing
 * thread, and so does a write(2) (not a send with MSG_NOSIGNAL) to a socket
 * whose peer has gone. weft_send() passes MSG_NOSIGNAL, but no flag exists
 * for pipes, and a ring issues its writes as writes: so worker threads block
 * SIGPIPE, the signal stays pending on the thread that wrote, and the -EPIPE
 * that comes with it is the whole answer. The thread that wrote takes the
 * signal back: weft_write() on the epoll backend, the ring's owner as it
 * reaps a -EPIPE (io-wq threads block every signal themselves). A plain
 * thread's weft_write() is the plain write(2), with its signal.
 */
static sigset_t sigpipe_set(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    return set;
}

void weft__sigpipe_block(void)
{
    sigset_t set = sigpipe_set();
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

void weft__sigpipe_take(void)
{
    int saved = errno;   /* a coroutine's errno lives on this thread too */
    sigset_t set = sigpipe_set();
    struct timespec none = { 0, 0 };
    while (sigtimedwait(&set, NULL, &none) < 0 && errno == EINTR)
        ;
    errno = saved;
}
