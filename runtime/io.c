/*
 * Descriptor IO: weft_read, weft_write, weft_recv, weft_send, weft_poll.
 *
 * One epoll set per runtime, served by one poller thread. A coroutine tries the
 * system call on a non-blocking descriptor; on EAGAIN it registers one-shot
 * interest (EPOLLONESHOT, so each registration reports once) with a pointer to
 * a request in its own frame, and parks. The poller claims the request's waiter
 * and the coroutine retries. The coroutine does not leave before that claim,
 * and a one-shot registration reports at most once, so the frame outlives every
 * use the poller makes of it.
 *
 * Limitation: epoll holds one registration per descriptor, so one descriptor
 * has at most one waiting coroutine at a time. A descriptor closed while a
 * coroutine waits on it leaves that coroutine waiting.
 */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

struct weft__poller {
    int       epfd;
    int       stopfd;     /* eventfd: registered with data.ptr NULL */
    pthread_t thread;
};

struct pollreq {
    struct weft__waiter wt;
    _Atomic uint32_t    revents;   /* stored release by the poller before the wake */
    _Atomic uint32_t    armed;     /* release before epoll_ctl; gives the poller's reads
                                    * an edge that ThreadSanitizer can see */
};

static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

static void *poller_thread(void *arg)
{
    struct weft__poller *p = arg;
    struct epoll_event ev[64];
    for (;;) {
        int n = epoll_wait(p->epfd, ev, 64, -1);
        for (int i = 0; i < n; i++) {
            struct pollreq *r = ev[i].data.ptr;
            if (!r)
                return NULL;
            weft__check(atomic_load_explicit(&r->armed, memory_order_acquire) == 1,  /* pairs with arm() */
                        "a readiness event for a request that was not armed");
            atomic_store_explicit(&r->revents, ev[i].events, memory_order_relaxed);  /* published by the wake */
            weft__wake(&r->wt, 1);
        }
    }
}

static int poller_get(weft_rt *rt, struct weft__poller **out)
{
    struct weft__poller *p = atomic_load_explicit(&rt->poller, memory_order_acquire);  /* pairs with the release below */
    if (p) {
        *out = p;
        return 0;
    }
    int err = 0;
    pthread_mutex_lock(&create_lock);
    p = atomic_load_explicit(&rt->poller, memory_order_relaxed);   /* under create_lock */
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p) {
            err = -ENOMEM;
            goto out;
        }
        p->epfd = epoll_create1(EPOLL_CLOEXEC);
        p->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
        if (p->epfd < 0 || p->stopfd < 0 || epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->stopfd, &ev) < 0) {
            err = -errno;
            goto fail;
        }
        int e = pthread_create(&p->thread, NULL, poller_thread, p);
        if (e) {
            err = -e;
            goto fail;
        }
        atomic_store_explicit(&rt->poller, p, memory_order_release);   /* publishes the set */
    }
    goto out;
fail:
    if (p->epfd >= 0)
        close(p->epfd);
    if (p->stopfd >= 0)
        close(p->stopfd);
    free(p);
    p = NULL;
out:
    pthread_mutex_unlock(&create_lock);
    *out = p;
    return err;
}

void weft__poller_destroy(weft_rt *rt)
{
    struct weft__poller *p = atomic_load_explicit(&rt->poller, memory_order_acquire);
    if (!p)
        return;
    uint64_t one = 1;
    while (write(p->stopfd, &one, sizeof one) < 0 && errno == EINTR)
        ;
    pthread_join(p->thread, NULL);
    close(p->epfd);
    close(p->stopfd);
    free(p);
    atomic_store_explicit(&rt->poller, NULL, memory_order_relaxed);
}

/* The calling coroutine's worker, or NULL from a plain thread. */
static struct weft__worker *in_coroutine(void)
{
    struct weft__worker *w = weft__worker_self();
    return w && w->current ? w : NULL;
}

/* Suspends the calling coroutine until fd reports one of events. Returns the
 * events seen, or a negative errno. */
static int wait_fd(struct weft__worker *w, int fd, uint32_t events)
{
    struct weft__poller *p;
    int err = poller_get(w->rt, &p);
    if (err)
        return err;
    struct pollreq r;
    weft__waiter_init(&r.wt);
    atomic_init(&r.revents, 0);
    atomic_store_explicit(&r.armed, 1, memory_order_release);   /* pairs with the poller's acquire */
    struct epoll_event ev = { .events = events | EPOLLONESHOT, .data.ptr = &r };
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) < 0) {
        if (errno != ENOENT)
            return -errno;
        if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            return errno == EPERM ? -EINVAL : -errno;
    }
    weft__wait(&r.wt);
    return (int)atomic_load_explicit(&r.revents, memory_order_relaxed);
}

static int make_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

enum op { OP_READ, OP_WRITE, OP_RECV, OP_SEND };

static ssize_t once(enum op op, int fd, void *buf, size_t len, int flags)
{
    ssize_t r;
    switch (op) {
    case OP_READ:  r = read(fd, buf, len); break;
    case OP_WRITE: r = write(fd, buf, len); break;
    case OP_RECV:  r = recv(fd, buf, len, flags); break;
    default:       r = send(fd, buf, len, flags | MSG_NOSIGNAL); break;
    }
    return r < 0 ? -errno : r;
}

static ssize_t do_io(enum op op, int fd, void *buf, size_t len, int flags)
{
    struct weft__worker *w = in_coroutine();
    if (!w) {
        ssize_t r;
        while ((r = once(op, fd, buf, len, flags)) == -EINTR)
            ;
        return r;
    }
    int err = make_nonblocking(fd);
    if (err)
        return err;
    uint32_t events = op == OP_READ || op == OP_RECV ? EPOLLIN : EPOLLOUT;
    for (;;) {
        ssize_t r = once(op, fd, buf, len, flags);
        if (r != -EAGAIN && r != -EWOULDBLOCK && r != -EINTR)
            return r;
        if (r == -EINTR)
            continue;
        int e = wait_fd(w, fd, events);
        if (e < 0)
            return e;
    }
}

ssize_t weft_read(int fd, void *buf, size_t len)
{
    return do_io(OP_READ, fd, buf, len, 0);
}

ssize_t weft_write(int fd, const void *buf, size_t len)
{
    return do_io(OP_WRITE, fd, (void *)buf, len, 0);
}

ssize_t weft_recv(int fd, void *buf, size_t len, int flags)
{
    return do_io(OP_RECV, fd, buf, len, flags);
}

ssize_t weft_send(int fd, const void *buf, size_t len, int flags)
{
    return do_io(OP_SEND, fd, (void *)buf, len, flags);
}

int weft_poll(int fd, short events)
{
    struct pollfd pfd = { .fd = fd, .events = events };
    int r;
    while ((r = poll(&pfd, 1, in_coroutine() ? 0 : -1)) < 0 && errno == EINTR)
        ;
    if (r < 0)
        return -errno;
    if (pfd.revents & POLLNVAL)
        return -EBADF;
    if (r > 0)
        return pfd.revents;
    struct weft__worker *w = in_coroutine();
    uint32_t ev = (events & POLLIN ? EPOLLIN : 0) | (events & POLLOUT ? EPOLLOUT : 0) |
                  (events & POLLPRI ? EPOLLPRI : 0);
    int e = wait_fd(w, fd, ev);
    if (e < 0)
        return e;
    pfd.revents = 0;
    while ((r = poll(&pfd, 1, 0)) < 0 && errno == EINTR)
        ;
    return r < 0 ? -errno : pfd.revents;
}
