/*
 * The epoll backend: readiness of descriptors, for coroutines on workers that
 * have no io_uring (refused by the kernel or a seccomp filter, or WEFT_IO=epoll).
 *
 * One epoll set per runtime, served by one poller thread. A coroutine tries the
 * system call on a non-blocking descriptor; on EAGAIN it calls
 * weft__epoll_wait_fd(), which records its waiter in the runtime's descriptor
 * table (one reader and one writer per descriptor, as Go's pollDesc; a
 * weft_poll for both directions takes both places with one waiter) and arms a
 * one-shot registration for the union of what the descriptor's waiters want.
 * The poller claims the waiters the event satisfies, with the events as the
 * claim's result, and re-arms for the others.
 *
 * Every use of a waiter by the poller happens under the table lock, and a
 * waiter is removed from the table under that lock before its frame can go:
 * by the poller when it claims it, by the waiter itself when its deadline or
 * cancellation claimed it first, by weft__epoll_forget() (weft_close) with
 * -EBADF. So the frame outlives every use the poller makes of it, and an event
 * that arrives for a waiter already gone finds an empty slot.
 *
 * A descriptor closed with close(2) rather than weft_close() while a coroutine
 * waits on it leaves that coroutine waiting, as it would leave a thread
 * blocked in poll(2).
 */
#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define STOP_TAG UINT64_MAX   /* epoll data of the stop eventfd */

struct fd_waiters {
    struct weft__waiter *rd, *wr;   /* under the table lock */
    bool                 added;     /* registered with the epoll set */
};

struct weft__poller {
    int                epfd;
    int                stopfd;      /* eventfd that stops the poller thread */
    pthread_t          thread;
    pthread_mutex_t    lock;        /* guards the table */
    struct fd_waiters *fds;         /* indexed by descriptor */
    size_t             nfds;
};

static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

static uint32_t wanted(const struct fd_waiters *e)
{
    return (e->rd ? EPOLLIN | EPOLLRDHUP : 0) | (e->wr ? EPOLLOUT : 0);
}

/* Arms fd's one-shot registration for what its waiters want. Holds p->lock. */
static int rearm(struct weft__poller *p, int fd, struct fd_waiters *e)
{
    struct epoll_event ev = { .events = wanted(e) | EPOLLONESHOT, .data.u64 = (uint64_t)fd };
    if (e->added && epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        return 0;
    if (e->added && errno != ENOENT)
        return -errno;
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return errno == EPERM ? -EINVAL : -errno;   /* EPERM: a regular file; never "would block" */
    e->added = true;
    return 0;
}

/* Takes wt out of whichever places of e it holds. Holds the table lock. */
static void drop(struct fd_waiters *e, const struct weft__waiter *wt)
{
    if (e->rd == wt)
        e->rd = NULL;
    if (e->wr == wt)
        e->wr = NULL;
}

/* Claims wt with `result` and takes it out of e. Holds the table lock. */
static void wake_slot(struct fd_waiters *e, struct weft__waiter *wt, int32_t result)
{
    weft__wake(wt, result);
    drop(e, wt);
}

static void *poller_thread(void *arg)
{
    struct weft__poller *p = arg;
    struct epoll_event ev[64];
    for (;;) {
        int n = epoll_wait(p->epfd, ev, 64, -1);
        pthread_mutex_lock(&p->lock);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == STOP_TAG) {
                pthread_mutex_unlock(&p->lock);
                return NULL;
            }
            int fd = (int)ev[i].data.u64;
            uint32_t got = ev[i].events;
            if ((size_t)fd >= p->nfds)
                continue;
            struct fd_waiters *e = &p->fds[fd];
            uint32_t fail = EPOLLERR | EPOLLHUP;
            if (e->rd && (got & (EPOLLIN | EPOLLRDHUP | EPOLLPRI | fail)))
                wake_slot(e, e->rd, (int32_t)got);
            if (e->wr && (got & (EPOLLOUT | fail)))
                wake_slot(e, e->wr, (int32_t)got);
            if (wanted(e))
                rearm(p, fd, e);   /* the one-shot fired for the other side only */
        }
        pthread_mutex_unlock(&p->lock);
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
        pthread_mutex_init(&p->lock, NULL);
        p->epfd = epoll_create1(EPOLL_CLOEXEC);
        p->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        struct epoll_event ev = { .events = EPOLLIN, .data.u64 = STOP_TAG };
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
    pthread_mutex_destroy(&p->lock);
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
    pthread_mutex_destroy(&p->lock);
    free(p->fds);
    free(p);
    atomic_store_explicit(&rt->poller, NULL, memory_order_relaxed);
}

/* Makes room for fd in the table. Holds p->lock. */
static int table_reserve(struct weft__poller *p, int fd)
{
    if ((size_t)fd < p->nfds)
        return 0;
    size_t n = p->nfds ? p->nfds : 64;
    while (n <= (size_t)fd)
        n *= 2;
    struct fd_waiters *t = realloc(p->fds, n * sizeof *t);
    if (!t)
        return -ENOMEM;
    for (size_t i = p->nfds; i < n; i++)
        t[i] = (struct fd_waiters){ 0 };
    p->fds = t;
    p->nfds = n;
    return 0;
}

int weft__epoll_wait_fd(weft_rt *rt, int fd, int dirs)
{
    if (fd < 0)
        return -EBADF;
    struct weft__poller *p;
    int err = poller_get(rt, &p);
    if (err)
        return err;
    struct weft__waiter wt;
    weft__waiter_init(&wt);

    pthread_mutex_lock(&p->lock);
    err = table_reserve(p, fd);
    struct fd_waiters *e = err ? NULL : &p->fds[fd];
    if (e && (((dirs & WEFT__WAIT_READ) && e->rd) || ((dirs & WEFT__WAIT_WRITE) && e->wr)))
        err = -EBUSY;   /* one coroutine already waits for this direction */
    if (e && !err) {
        if (dirs & WEFT__WAIT_READ)
            e->rd = &wt;
        if (dirs & WEFT__WAIT_WRITE)
            e->wr = &wt;
        err = rearm(p, fd, e);
        if (err)
            drop(e, &wt);
    }
    pthread_mutex_unlock(&p->lock);
    if (err)
        return err;

    int32_t r = weft__wait(&wt);
    if (r < 0) {
        pthread_mutex_lock(&p->lock);
        e = &p->fds[fd];   /* the table may have moved */
        if (e->rd == &wt || e->wr == &wt) {   /* not claimed by the poller or weft_close: withdraw */
            drop(e, &wt);
            if (wanted(e))
                rearm(p, fd, e);
        }
        pthread_mutex_unlock(&p->lock);
    }
    return r;
}

void weft__epoll_forget(weft_rt *rt, int fd)
{
    struct weft__poller *p = atomic_load_explicit(&rt->poller, memory_order_acquire);  /* pairs with poller_get */
    if (!p || fd < 0)
        return;
    pthread_mutex_lock(&p->lock);
    if ((size_t)fd < p->nfds) {
        struct fd_waiters *e = &p->fds[fd];
        if (e->rd)
            wake_slot(e, e->rd, -EBADF);
        if (e->wr)
            wake_slot(e, e->wr, -EBADF);
        if (e->added)
            epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
        *e = (struct fd_waiters){ 0 };
    }
    pthread_mutex_unlock(&p->lock);
}
