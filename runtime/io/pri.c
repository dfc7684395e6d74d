/* SPDX-License-Identifier: MIT */
/*
 * A coroutine's wait for events that include POLLPRI. Neither a ring's poll
 * request nor the epoll backend's edge-triggered registration sees TCP urgent
 * data arrive: the socket's wake-up for it comes before it reports POLLPRI,
 * and neither looks again. A level-triggered epoll set looks at the socket
 * whenever it is asked, so the wait makes one of its own, with fd in it, and
 * waits for that set to become readable, as the hook's poll of several
 * descriptors does. A wait rare enough for its three system calls.
 *
 * weft_close(fd) fails the coroutines waiting on fd; the backends find
 * theirs, but these wait on their own sets. So each such wait is listed
 * here while it lasts, and weft__pri_close marks those on fd closed and
 * makes their sets readable: it adds to each an eventfd that is always
 * readable, made once.
 */
#include "backend.h"

#include "base/lock.h"
#include "base/sys.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

struct pri_wait {
    int               fd, ep;   /* the descriptor waited on; the set the wait made */
    _Atomic bool      closed;   /* set by weft__pri_close, under pri_lock */
    struct pri_wait  *next;     /* on pri_waits, under pri_lock */
};

static _Atomic uint32_t pri_lock;
static struct pri_wait *pri_waits;        /* under pri_lock */
static _Atomic unsigned pri_count;        /* how many are listed: weft_close asks it first */
static int pri_ready = -1;                /* the always-readable eventfd; under pri_lock */

/* Lists p; its set will be made readable at a weft_close of p->fd. Returns 0
 * or the negative errno of the eventfd's making. */
static int pri_list(struct pri_wait *p)
{
    int r = 0;
    weft__ilock(&pri_lock);
    if (pri_ready < 0) {
        pri_ready = eventfd(1, EFD_CLOEXEC);
        if (pri_ready < 0)
            r = -errno;
    }
    if (!r) {
        p->next = pri_waits;
        pri_waits = p;
        atomic_fetch_add_explicit(&pri_count, 1, memory_order_relaxed);   /* read under the lock, or as a hint */
    }
    weft__iunlock(&pri_lock);
    return r;
}

static void pri_unlist(struct pri_wait *p)
{
    weft__ilock(&pri_lock);
    for (struct pri_wait **q = &pri_waits; *q; q = &(*q)->next) {
        if (*q == p) {
            *q = p->next;
            break;
        }
    }
    atomic_fetch_sub_explicit(&pri_count, 1, memory_order_relaxed);
    weft__iunlock(&pri_lock);
}

void weft__pri_close(int fd)
{
    /* A wait listed after this look began after weft_close did, and finds
     * fd closed (or a new file under its number), as any wait would. */
    if (atomic_load_explicit(&pri_count, memory_order_relaxed) == 0)
        return;
    weft__ilock(&pri_lock);
    for (struct pri_wait *p = pri_waits; p; p = p->next) {
        if (p->fd != fd)
            continue;
        atomic_store_explicit(&p->closed, true, memory_order_release);   /* pairs with the waiter's load after its wake */
        struct epoll_event ev = { .events = EPOLLIN };
        (void)epoll_ctl(p->ep, EPOLL_CTL_ADD, pri_ready, &ev);   /* EEXIST: a close before */
    }
    weft__iunlock(&pri_lock);
}

void weft__pri_fork_child(void)
{
    /* The waits listed were other threads' coroutines, which the child has not. */
    atomic_store_explicit(&pri_lock, 0, memory_order_relaxed);
    pri_waits = NULL;
    atomic_store_explicit(&pri_count, 0, memory_order_relaxed);
}

int weft__pri_wait(int fd, short events, enum weft__why why, uintptr_t what)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return -errno;
    struct epoll_event ev = { .events = (uint32_t)(events & (POLLIN | POLLOUT | POLLPRI)) };   /* the same bits */
    int r = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
    if (r == -EPERM) {
        /* A file epoll cannot watch (a regular file) is ready at once for
         * what it is ever ready for (poll_now said no), and never for
         * POLLPRI: poll(2) would wait for ever, and so does this, until the
         * deadline or a cancellation. */
        weft__sys_close(ep);
        r = weft__sleep_why(UINT64_MAX, why != WEFT__WHY_NONE ? why : WEFT__WHY_POLL,
                            why != WEFT__WHY_NONE ? what : (uintptr_t)fd);
        return r ? r : -ETIMEDOUT;
    }
    struct pri_wait p = { .fd = fd, .ep = ep };
    if (!r)
        r = pri_list(&p);
    if (r) {
        weft__sys_close(ep);   /* nothing was asked of a backend about ep */
        return r;
    }
    struct weft__io_op set = { .kind = WEFT__IO_POLL, .fd = ep, .flags = POLLIN,
                               .why = why != WEFT__WHY_NONE ? why : WEFT__WHY_POLL,
                               .what = why != WEFT__WHY_NONE ? what : (uintptr_t)fd };
    for (;;) {
        if (atomic_load_explicit(&p.closed, memory_order_acquire)) {   /* pairs with weft__pri_close */
            r = -EBADF;   /* as the waits the backends hold */
            break;
        }
        r = weft__poll_now(fd, events);
        if (r)
            break;
        r = (int)weft__io_usual(&set);
        if (r < 0)
            break;
    }
    pri_unlist(&p);
    weft_close(ep);
    return r;
}
