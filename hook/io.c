/* SPDX-License-Identifier: MIT */
/*
 * The hooked data transfers: read, write, readv, writev, pread, pwrite, recv,
 * send, recvfrom, sendto, recvmsg, sendmsg, accept, accept4 and connect.
 *
 * In a coroutine a transfer goes by the kind of its file (hook_fd_kind):
 *   - a socket or a pipe is tried without waiting, whatever its flags: a
 *     socket with MSG_DONTWAIT, a pipe with preadv2/pwritev2(RWF_NOWAIT). No
 *     flag of the file is changed, so another thread or process sharing it
 *     sees what its owner set. Only when the try would block does the call
 *     ask whether the owner made the file O_NONBLOCK (fcntl F_GETFL, less
 *     weft's own, see weft_private.h): then EAGAIN is the answer, as libc
 *     gives it; else the coroutine waits for readiness in weft_poll(), within
 *     the socket's SO_RCVTIMEO or SO_SNDTIMEO, and tries again. A blocking
 *     write goes on until all of it is written, as write(2) on a blocking
 *     pipe or stream socket does; a read with MSG_WAITALL until all is read,
 *     where the kernel's would go on (gathers()); a timeout or an error
 *     after part of it returns that part's length, as the kernel does.
 *   - a regular file or block device never "would block": read, write, pread
 *     and pwrite become weft_read, weft_write, weft_pread and weft_pwrite
 *     (a request on the worker's ring, or weft_offload on the epoll backend);
 *     readv and writev are the plain calls.
 *   - anything else (a terminal, a character device, an eventfd, a pipe on a
 *     kernel without RWF_NOWAIT for pipes) has no per-call way not to wait:
 *     unless its owner made it O_NONBLOCK, the coroutine waits for readiness
 *     in weft_poll() and then makes the call without waiting (after_ready),
 *     or waits again if another coroutine took what was ready. Another
 *     thread taking it between the look and a plain call on a file without
 *     RWF_NOWAIT can still make that call block its worker, as in weft's
 *     own calls from a plain thread (weft.h).
 *   - accept, accept4 and connect on a socket the owner left blocking are
 *     weft_accept and weft_connect, within SO_RCVTIMEO (accept) or
 *     SO_SNDTIMEO (connect, which then fails with EINPROGRESS, as Linux's).
 * A wait that the coroutine's weft deadline or cancellation ends fails with
 * ETIMEDOUT or ECANCELED, with nothing transferred, or returns the part
 * transferred before it.
 *
 * From a plain thread each is the C library's call; on a file where weft set
 * O_NONBLOCK (and its owner did not) a call that meets EAGAIN waits in
 * poll(2) and tries again, so that the owner's blocking semantics hold,
 * SA_RESTART's included (restarts()).
 *
 * SIGPIPE: a write to a pipe or socket whose reader has gone fails with
 * EPIPE; on a worker, which blocks SIGPIPE (weft.h), the signal it leaves
 * pending is taken back, as weft_write() does.
 */
#include "hook.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char hook_file_io = 0;   /* for weft__hook_anchor (hook.h) */

enum op { OP_READ, OP_WRITE, OP_READV, OP_WRITEV, OP_RECVFROM, OP_SENDTO, OP_RECVMSG, OP_SENDMSG };

/* One transfer, as the caller asked for it; the hook advances its buffers
 * as parts of it are done. */
struct xfer {
    enum op          op;
    int              fd;
    int              flags;     /* the socket calls' flags */
    void            *buf;       /* READ, WRITE, RECVFROM, SENDTO */
    size_t           len;
    struct sockaddr *addr;      /* RECVFROM: where the sender goes; SENDTO: the target */
    socklen_t       *addrlen;   /* RECVFROM */
    socklen_t        alen;      /* SENDTO */
    struct msghdr    msg;       /* READV, WRITEV (only the vector), RECVMSG, SENDMSG */
    struct msghdr   *umsg;      /* RECVMSG: the caller's, for what the kernel returns */
    struct iovec     small[8];  /* the vector, once copied to be advanced */
    struct iovec    *heap;      /* a longer copy */
    bool             copied;
};

static bool is_out(enum op op)
{
    return op == OP_WRITE || op == OP_WRITEV || op == OP_SENDTO || op == OP_SENDMSG;
}

static bool is_vector(enum op op)
{
    return op == OP_READV || op == OP_WRITEV || op == OP_RECVMSG || op == OP_SENDMSG;
}

static bool is_sockcall(enum op op)
{
    return op >= OP_RECVFROM;
}

/* The bytes the caller asked for; what a blocking call would transfer. */
static size_t total_of(const struct xfer *x)
{
    if (!is_vector(x->op))
        return x->len;
    size_t t = 0;
    for (size_t i = 0; i < (size_t)x->msg.msg_iovlen; i++)
        t += x->msg.msg_iov[i].iov_len;
    return t;
}

/* Moves x past n bytes done. Returns 0 or -ENOMEM (the vector could not be
 * copied: the caller returns what it has). */
static int advance(struct xfer *x, size_t n)
{
    if (!is_vector(x->op)) {
        x->buf = (char *)x->buf + n;
        x->len -= n;
        return 0;
    }
    if (!x->copied) {
        size_t cnt = (size_t)x->msg.msg_iovlen;
        struct iovec *v = x->small;
        if (cnt > sizeof x->small / sizeof x->small[0]) {
            x->heap = malloc(cnt * sizeof *v);
            if (!x->heap)
                return -ENOMEM;
            v = x->heap;
        }
        memcpy(v, x->msg.msg_iov, cnt * sizeof *v);
        x->msg.msg_iov = v;
        x->copied = true;
    }
    while (n && x->msg.msg_iovlen) {
        struct iovec *v = x->msg.msg_iov;
        if (n < v->iov_len) {
            v->iov_base = (char *)v->iov_base + n;
            v->iov_len -= n;
            return 0;
        }
        n -= v->iov_len;
        x->msg.msg_iov++;
        x->msg.msg_iovlen--;
    }
    return 0;
}

/* The plain call, which may wait: for files that have no other way. */
static ssize_t plain(struct xfer *x)
{
    const struct hook_real *f = real();
    ssize_t r;
    switch (x->op) {
    case OP_READ:     r = f->read(x->fd, x->buf, x->len); break;
    case OP_WRITE:    r = f->write(x->fd, x->buf, x->len); break;
    case OP_READV:    r = f->readv(x->fd, x->msg.msg_iov, (int)x->msg.msg_iovlen); break;
    case OP_WRITEV:   r = f->writev(x->fd, x->msg.msg_iov, (int)x->msg.msg_iovlen); break;
    case OP_RECVFROM: r = f->recvfrom(x->fd, x->buf, x->len, x->flags, x->addr, x->addrlen); break;
    case OP_SENDTO:   r = f->sendto(x->fd, x->buf, x->len, x->flags, x->addr, x->alen); break;
    case OP_RECVMSG:  r = f->recvmsg(x->fd, &x->msg, x->flags); break;
    default:          r = f->sendmsg(x->fd, &x->msg, x->flags); break;
    }
    return r < 0 ? -errno : r;
}

/* One try that does not wait, on a socket or a pipe (`sock`). Returns the
 * count or a negative errno. */
static ssize_t try_nowait(struct xfer *x, bool sock)
{
    const struct hook_real *f = real();
    int fl = x->flags | MSG_DONTWAIT;
    ssize_t r;
    struct iovec one = { x->buf, x->len };
    /* read(2) of nothing from a socket returns 0 at once, where a recv of
     * nothing waits for data on some (AF_UNIX): the plain call cannot wait. */
    if (sock && (x->op == OP_READ || x->op == OP_READV) && total_of(x) == 0)
        return plain(x);
    switch (x->op) {
    case OP_READ:
        r = sock ? f->recv(x->fd, x->buf, x->len, MSG_DONTWAIT)
                 : preadv2(x->fd, &one, 1, -1, RWF_NOWAIT);
        break;
    case OP_WRITE:
        r = sock ? f->send(x->fd, x->buf, x->len, MSG_DONTWAIT)
                 : pwritev2(x->fd, &one, 1, -1, RWF_NOWAIT);
        break;
    case OP_READV:
        r = sock ? f->recvmsg(x->fd, &x->msg, MSG_DONTWAIT)
                 : preadv2(x->fd, x->msg.msg_iov, (int)x->msg.msg_iovlen, -1, RWF_NOWAIT);
        break;
    case OP_WRITEV:
        r = sock ? f->sendmsg(x->fd, &x->msg, MSG_DONTWAIT)
                 : pwritev2(x->fd, x->msg.msg_iov, (int)x->msg.msg_iovlen, -1, RWF_NOWAIT);
        break;
    case OP_RECVFROM:
        r = f->recvfrom(x->fd, x->buf, x->len, fl, x->addr, x->addrlen);
        break;
    case OP_SENDTO:
        r = f->sendto(x->fd, x->buf, x->len, fl, x->addr, x->alen);
        break;
    case OP_RECVMSG:
        r = f->recvmsg(x->fd, &x->msg, fl);
        break;
    default:
        r = f->sendmsg(x->fd, &x->msg, fl);
        break;
    }
    return r < 0 ? -errno : r;
}

/* A worker blocks SIGPIPE: a write that met EPIPE left it pending here. */
static void take_sigpipe(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    struct timespec none = { 0, 0 };
    while (sigtimedwait(&set, NULL, &none) < 0 && errno == EINTR)
        ;
}

/*
 * Whether the blocking read or write that a plain thread's wait in poll(2)
 * stands for would have gone on after the signal that ended the wait: poll
 * is never restarted, a read is when the handler that ran has SA_RESTART.
 * Which signal came is not known, so the call goes on when every handler
 * the thread could have run has SA_RESTART. A fault signal (SIGSEGV, ...)
 * comes from the thread's own instruction, never during a wait, and a
 * sanitizer's or weft's handler of one says nothing of the program's.
 */
static bool restarts(void)
{
    sigset_t blocked;
    pthread_sigmask(SIG_BLOCK, NULL, &blocked);
    for (int s = 1; s < NSIG; s++) {
        struct sigaction sa;
        if (s == SIGSEGV || s == SIGBUS || s == SIGILL || s == SIGFPE || s == SIGTRAP ||
            sigismember(&blocked, s) == 1 || sigaction(s, NULL, &sa) < 0)
            continue;
        bool handled = (sa.sa_flags & SA_SIGINFO) || (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN);
        if (handled && !(sa.sa_flags & SA_RESTART))
            return false;
    }
    return true;
}

/* Waits for fd in the direction of x: weft_poll in a coroutine, poll(2) in
 * a plain thread. Returns 0 or a negative errno. */
static int wait_ready(const struct xfer *x, bool coroutine)
{
    short ev = is_out(x->op) ? POLLOUT : POLLIN;
    if (coroutine) {
        int r = weft_poll(x->fd, ev);
        return r < 0 ? r : 0;
    }
    struct pollfd p = { .fd = x->fd, .events = ev };
    int r;
    while ((r = real()->poll(&p, 1, -1)) < 0) {
        int err = errno;   /* restarts() asks sigaction, which may set errno */
        if (err != EINTR || !restarts())
            return -err;
    }
    return (p.revents & POLLNVAL) ? -EBADF : 0;
}

/*
 * The call on a file that has no per-call way not to wait, once it was
 * found ready. Readiness is shared: another coroutine woken by the same
 * event may have taken what was there, and the call must then not wait in
 * the kernel, where it would hold the worker. RWF_NOWAIT says so where the
 * file honours it (an eventfd); elsewhere a look with poll(2) just before
 * the plain call, with no suspension between the two, keeps the worker's
 * other coroutines from taking it in between. The file's flags are not
 * touched. Returns the count, -EAGAIN to wait again, or a negative errno.
 */
static ssize_t after_ready(struct xfer *x)
{
    struct iovec one = { x->buf, x->len };
    const struct iovec *v = is_vector(x->op) ? x->msg.msg_iov : &one;
    int cnt = is_vector(x->op) ? (int)x->msg.msg_iovlen : 1;
    ssize_t r = is_out(x->op) ? pwritev2(x->fd, v, cnt, -1, RWF_NOWAIT) : preadv2(x->fd, v, cnt, -1, RWF_NOWAIT);
    if (r >= 0 || errno != EOPNOTSUPP)
        return r < 0 ? -errno : r;
    struct pollfd p = { .fd = x->fd, .events = is_out(x->op) ? POLLOUT : POLLIN };
    if (real()->poll(&p, 1, 0) == 0)
        return -EAGAIN;
    return plain(x);
}

/*
 * Whether a read with MSG_WAITALL goes on after a part, as the kernel's
 * does: only on a stream socket (on a datagram or seqpacket socket the flag
 * changes nothing: one message a call), never with MSG_PEEK (each call
 * looks at the same bytes again), and not after a part that carried
 * control data, which the kernel hands over with the bytes it came with
 * (descriptors passed over AF_UNIX end the read there) and which a later
 * part's would overwrite. `stream` caches the socket's type: -1 unknown.
 */
static bool gathers(const struct xfer *x, int *stream)
{
    if ((x->flags & MSG_PEEK) || (x->op == OP_RECVMSG && x->msg.msg_controllen))
        return false;
    if (*stream < 0) {
        int type;
        socklen_t len = sizeof type;
        *stream = getsockopt(x->fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
    }
    return *stream;
}

/*
 * The transfer on a socket or pipe (`sock` says which call to try), or,
 * with `poll_first`, on a file that has no per-call way not to wait. In a
 * coroutine or, for a file where O_NONBLOCK is weft's, in a plain thread.
 * Returns the count or a negative errno.
 */
static ssize_t run(struct xfer *x, bool sock, bool poll_first, bool coroutine)
{
    bool out = is_out(x->op);
    bool caller_nowait = is_sockcall(x->op) && (x->flags & MSG_DONTWAIT);
    bool waitall = !out && is_sockcall(x->op) && (x->flags & MSG_WAITALL);
    size_t total = total_of(x);
    size_t done = 0;
    int owner_nb = -1;   /* the owner's O_NONBLOCK, asked when first needed */
    int stream = -1;     /* for gathers() */
    bool waiting = false;
    struct hook_wait hw;
    ssize_t r;

    if (poll_first) {
        int fl = real()->fcntl(x->fd, F_GETFL);
        if (fl < 0)
            return -errno;
        owner_nb = hook_owner_nonblock(x->fd, fl);
        if (owner_nb || caller_nowait)
            return plain(x);
    }
    for (;;) {
        if (poll_first) {
            if (!waiting && coroutine) {
                hook_wait_begin(&hw, 0);
                waiting = true;
            }
            r = wait_ready(x, coroutine);
            if (r == 0)
                r = after_ready(x);
        } else {
            r = try_nowait(x, sock);
        }
        if (r > 0) {
            done += (size_t)r;
            if (done >= total || (!out && !(waitall && gathers(x, &stream))) || advance(x, (size_t)r) < 0)
                break;
            if (x->op == OP_RECVMSG) {   /* the next part's name and control go where the caller said */
                x->msg.msg_namelen = x->umsg->msg_namelen;
                x->msg.msg_controllen = x->umsg->msg_controllen;
                x->msg.msg_flags = 0;
            }
            r = -EAGAIN;   /* a part: go on as if the rest would block */
        } else if (r == 0) {
            break;   /* end of file, or a zero-length request */
        } else if (r != -EAGAIN) {
            break;
        }
        if (caller_nowait)
            break;
        if (owner_nb < 0) {
            int fl = real()->fcntl(x->fd, F_GETFL);
            if (fl < 0) {
                r = -errno;
                break;
            }
            owner_nb = hook_owner_nonblock(x->fd, fl);
        }
        if (owner_nb)
            break;
        if (!poll_first) {
            if (!waiting && coroutine) {
                hook_wait_begin(&hw, sock ? hook_sock_timeout(x->fd, out) : 0);
                waiting = true;
            }
            int e = wait_ready(x, coroutine);
            if (e < 0) {
                r = e;
                break;
            }
        }
    }
    if (waiting)
        r = hook_wait_end(&hw, r, EAGAIN);
    free(x->heap);
    if (x->umsg) {
        x->umsg->msg_namelen = x->msg.msg_namelen;
        x->umsg->msg_controllen = x->msg.msg_controllen;
        x->umsg->msg_flags = x->msg.msg_flags;
    }
    if (r == -EPIPE && out && coroutine)
        take_sigpipe();
    if (done)
        return (ssize_t)done;   /* what was done before the end, whatever ended it */
    return r;
}

/* A transfer from a coroutine: by the kind of the file. The socket calls
 * go the socket's way whatever the hint: on anything else the kernel
 * answers ENOTSOCK. */
static ssize_t in_coroutine(struct xfer *x)
{
    for (;;) {
        int kind = is_sockcall(x->op) ? WEFT__FD_SOCKET : hook_fd_kind(x->fd);
        ssize_t r;
        switch (kind) {
        case WEFT__FD_SOCKET:
        case WEFT__FD_PIPE:
            r = run(x, kind == WEFT__FD_SOCKET, false, true);
            if ((r == -ENOTSOCK && !is_sockcall(x->op)) || (r == -EOPNOTSUPP && kind == WEFT__FD_PIPE)) {
                /* A stale hint, or a kernel without RWF_NOWAIT on pipes. */
                weft__hook_fd_set_kind(x->fd, r == -EOPNOTSUPP ? WEFT__FD_OTHER : WEFT__FD_UNKNOWN);
                if (r == -ENOTSOCK)
                    hook_fd_kind(x->fd);
                continue;
            }
            return r;
        case WEFT__FD_FILE:
            if (x->op == OP_READ || x->op == OP_WRITE) {
                struct hook_wait hw;
                hook_wait_begin(&hw, 0);
                r = x->op == OP_READ ? weft_read(x->fd, x->buf, x->len) : weft_write(x->fd, x->buf, x->len);
                return hook_wait_end(&hw, r, ETIMEDOUT);
            }
            return plain(x);
        case WEFT__FD_OTHER:
            return run(x, false, true, true);
        default:
            return plain(x);   /* fstat failed: the call reports why */
        }
    }
}

/* A transfer from a plain thread: the C library's call, but blocking where
 * the O_NONBLOCK on the file is weft's only. */
static ssize_t in_thread(struct xfer *x)
{
    if (weft__hook_fd_weft_nonblock(x->fd))
        return run(x, false, true, false);
    return plain(x);
}

static ssize_t transfer(struct xfer *x)
{
    return hook_on() ? in_coroutine(x) : in_thread(x);
}

/* ---- the interposers --------------------------------------------------------- */

HOOK_API ssize_t read(int fd, void *buf, size_t len)
{
    if (!hook_on() && !weft__hook_fd_weft_nonblock(fd))
        return real()->read(fd, buf, len);
    return hook_ret(transfer(&(struct xfer){ .op = OP_READ, .fd = fd, .buf = buf, .len = len }));
}

HOOK_API ssize_t write(int fd, const void *buf, size_t len)
{
    if (!hook_on() && !weft__hook_fd_weft_nonblock(fd))
        return real()->write(fd, buf, len);
    return hook_ret(transfer(&(struct xfer){ .op = OP_WRITE, .fd = fd, .buf = (void *)buf, .len = len }));
}

HOOK_API ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    if (!hook_on() && !weft__hook_fd_weft_nonblock(fd))
        return real()->readv(fd, iov, cnt);
    if (cnt < 0 || cnt > IOV_MAX)
        return hook_ret(-EINVAL);
    return hook_ret(transfer(&(struct xfer){ .op = OP_READV, .fd = fd,
                                             .msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt } }));
}

HOOK_API ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (!hook_on() && !weft__hook_fd_weft_nonblock(fd))
        return real()->writev(fd, iov, cnt);
    if (cnt < 0 || cnt > IOV_MAX)
        return hook_ret(-EINVAL);
    return hook_ret(transfer(&(struct xfer){ .op = OP_WRITEV, .fd = fd,
                                             .msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt } }));
}

HOOK_API ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    if (!hook_on())
        return real()->recv(fd, buf, len, flags);
    return hook_ret(transfer(&(struct xfer){ .op = OP_RECVFROM, .fd = fd, .buf = buf, .len = len,
                                             .flags = flags }));
}

HOOK_API ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    if (!hook_on())
        return real()->send(fd, buf, len, flags);
    return hook_ret(transfer(&(struct xfer){ .op = OP_SENDTO, .fd = fd, .buf = (void *)buf, .len = len,
                                             .flags = flags }));
}

HOOK_API ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *alen)
{
    if (!hook_on())
        return real()->recvfrom(fd, buf, len, flags, addr, alen);
    return hook_ret(transfer(&(struct xfer){ .op = OP_RECVFROM, .fd = fd, .buf = buf, .len = len,
                                             .flags = flags, .addr = addr, .addrlen = alen }));
}

HOOK_API ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr,
                        socklen_t alen)
{
    if (!hook_on())
        return real()->sendto(fd, buf, len, flags, addr, alen);
    return hook_ret(transfer(&(struct xfer){ .op = OP_SENDTO, .fd = fd, .buf = (void *)buf, .len = len,
                                             .flags = flags, .addr = (struct sockaddr *)addr, .alen = alen }));
}

HOOK_API ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    if (!hook_on() || !msg)
        return real()->recvmsg(fd, msg, flags);
    return hook_ret(transfer(&(struct xfer){ .op = OP_RECVMSG, .fd = fd, .flags = flags, .msg = *msg,
                                             .umsg = msg }));
}

HOOK_API ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (!hook_on() || !msg)
        return real()->sendmsg(fd, msg, flags);
    return hook_ret(transfer(&(struct xfer){ .op = OP_SENDMSG, .fd = fd, .flags = flags, .msg = *msg }));
}

HOOK_API ssize_t pread(int fd, void *buf, size_t len, off_t off)
{
    if (!hook_on() || hook_fd_kind(fd) != WEFT__FD_FILE)
        return real()->pread(fd, buf, len, off);
    struct hook_wait hw;
    hook_wait_begin(&hw, 0);
    return hook_ret(hook_wait_end(&hw, weft_pread(fd, buf, len, off), ETIMEDOUT));
}

HOOK_API ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    if (!hook_on() || hook_fd_kind(fd) != WEFT__FD_FILE)
        return real()->pwrite(fd, buf, len, off);
    struct hook_wait hw;
    hook_wait_begin(&hw, 0);
    return hook_ret(hook_wait_end(&hw, weft_pwrite(fd, buf, len, off), ETIMEDOUT));
}

/*
 * The fortified entries that glibc's headers call instead of read, recv,
 * recvfrom and pread when a program is built with _FORTIFY_SOURCE and the
 * compiler knows the size of the buffer (Debian builds its packages so).
 * Each checks the length against that size as glibc's does, and then is the
 * hooked call; without them such a program's calls would bypass the hook.
 */
HOOK_API ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
    if (len > buflen)
        __chk_fail();
    return read(fd, buf, len);
}

HOOK_API ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
    if (len > buflen)
        __chk_fail();
    return recv(fd, buf, len, flags);
}

HOOK_API ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags, struct sockaddr *addr,
                                socklen_t *alen)
{
    if (len > buflen)
        __chk_fail();
    return recvfrom(fd, buf, len, flags, addr, alen);
}

HOOK_API ssize_t __pread_chk(int fd, void *buf, size_t len, off_t off, size_t buflen)
{
    if (len > buflen)
        __chk_fail();
    return pread(fd, buf, len, off);
}

/* pread64 and pwrite64 are the same functions where off_t has 64 bits. */
HOOK_API ssize_t pread64(int fd, void *buf, size_t len, off_t off) __attribute__((alias("pread")));
HOOK_API ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) __attribute__((alias("pwrite")));
HOOK_API ssize_t __pread64_chk(int fd, void *buf, size_t len, off_t off, size_t buflen)
    __attribute__((alias("__pread_chk")));

/* ---- accept and connect ------------------------------------------------------ */

/* Whether fd's owner made it O_NONBLOCK; a negative errno for a bad fd. */
static int owner_nonblock(int fd)
{
    int fl = real()->fcntl(fd, F_GETFL);
    return fl < 0 ? -errno : hook_owner_nonblock(fd, fl);
}

static int accept_in_coroutine(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
    int nb = owner_nonblock(fd);
    int r;
    if (nb < 0)
        return nb;
    if (nb) {
        r = real()->accept4(fd, addr, alen, flags);
        r = r < 0 ? -errno : r;
    } else {
        struct hook_wait hw;
        hook_wait_begin(&hw, hook_sock_timeout(fd, 0));
        r = (int)hook_wait_end(&hw, weft_accept(fd, addr, alen, flags), EAGAIN);
    }
    if (r >= 0) {
        weft__hook_fd_forget(r);
        weft__hook_fd_set_kind(r, WEFT__FD_SOCKET);
    }
    return r;
}

HOOK_API int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
    if (!hook_on()) {
        int r = real()->accept4(fd, addr, alen, flags);
        if (r >= 0)
            weft__hook_fd_forget(r);
        return r;
    }
    return (int)hook_ret(accept_in_coroutine(fd, addr, alen, flags));
}

HOOK_API int accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
    if (!hook_on()) {
        int r = real()->accept(fd, addr, alen);
        if (r >= 0)
            weft__hook_fd_forget(r);
        return r;
    }
    return (int)hook_ret(accept_in_coroutine(fd, addr, alen, 0));
}

HOOK_API int connect(int fd, const struct sockaddr *addr, socklen_t alen)
{
    if (!hook_on())
        return real()->connect(fd, addr, alen);
    int nb = owner_nonblock(fd);
    if (nb < 0)
        return (int)hook_ret(nb);
    if (nb)
        return real()->connect(fd, addr, alen);
    struct hook_wait hw;
    hook_wait_begin(&hw, hook_sock_timeout(fd, 1));
    int r = weft_connect(fd, addr, alen);
    /* Linux's connect fails with EINPROGRESS at SO_SNDTIMEO; the attempt goes on. */
    return (int)hook_ret(hook_wait_end(&hw, r, EINPROGRESS));
}
