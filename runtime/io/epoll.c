/* SPDX-License-Identifier: MIT */
/*
 * The epoll backend: readiness of descriptors, for coroutines on workers that
 * have no io_uring (refused by the kernel or a seccomp filter, or WEFT_IO=epoll).
 *
 * Each such worker owns an epoll set, as a worker owns its ring: only it waits
 * on the set. It looks without blocking when it runs out of runnable tasks and
 * on the fairness tick (set_poll); parked with waiters on its set, it
 * sleeps in epoll_wait until its next timer, and a waker writes the eventfd
 * that sits in the set (set_sleep, set_kick). An event makes
 * its coroutine runnable on the worker that saw it, and no other thread runs
 * in between: no poller thread, no hand-over.
 *
 * A coroutine tries the system call first; on EAGAIN it calls
 * wait_fd(), which puts its waiter in line on the descriptor's list for
 * that direction in the runtime's descriptor table, and arms a one-shot
 * registration for the union of what the descriptor's waiters want, on the
 * set of the worker it runs on. A descriptor last armed on another worker's
 * set moves to this one, with the count of its waiters' places (a place is
 * one waiter on one list; a weft_poll for both directions takes two).
 *
 * Any number of coroutines may wait in each direction: several accepting on
 * one listening socket is the common server, and several threads may read
 * one descriptor under POSIX. Go serialises them before its pollDesc (which
 * holds one reader and one writer) with a per-descriptor lock; weft has no
 * such lock in front of the system call, so the lists are the queue. An event
 * wakes the oldest waiter of each direction it reports, one only: it would
 * be a thundering herd to wake every acceptor for one connection. Those left
 * waiting are armed again at once; the registration is level-triggered, so if
 * the one woken leaves something behind, the next epoll_wait reports it for
 * the next in line, and if it takes everything, the kernel reports nothing.
 * The level may also be reported again before the one woken has run (its
 * worker looks at the set between schedules, the monitor looks for a stalled
 * worker), and the next in line then finds nothing: it waits again in the
 * place it had, not at the end, so the line keeps its order.
 * Conditions that stay until the descriptor is closed wake every waiter they
 * concern: EPOLLERR and EPOLLHUP all of them, EPOLLRDHUP (the peer will send
 * no more) every reader.
 *
 * Why one-shot and re-armed at every wait (EPOLL_CTL_MOD), where Go keeps an
 * edge-triggered registration for the life of the descriptor: Go owns its
 * descriptors, and weft does not. A user may close(2) a descriptor and get its
 * number back for a new file; a registration we believed in would then never
 * report the new file. Re-arming costs a system call per wait, and a number
 * whose file is gone fails MOD with ENOENT, so the new file is simply added.
 *
 * Every use of a waiter by a worker reaping events happens under its entry's
 * lock, and a waiter is removed from its entry under that lock before its
 * frame can go: by the reaper when it claims it, by the waiter itself when its
 * deadline or cancellation claimed it first, by weft__epoll_forget()
 * (weft_close) with -EBADF. So the frame outlives every use made of it, and an
 * event that arrives for a waiter already gone finds an empty place.
 *
 * A descriptor closed with close(2) rather than weft_close() while a coroutine
 * waits on it leaves that coroutine waiting, as it would leave a thread
 * blocked in poll(2).
 */
#include "backend.h"
#include "fdtab.h"
#include "base/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define KICK_TAG   UINT64_MAX   /* epoll data of the eventfd */
#define PAGE_SLOTS 1024u        /* descriptors per page of the table */
#define TOP_PAGES  65536u       /* pages: descriptors below 2^26 */
#define EVENTS     64           /* reaped per epoll_wait */
#define WEFT__WAIT_READ  1      /* dirs of wait_fd */
#define WEFT__WAIT_WRITE 2

enum { RD, WR };   /* the directions: indexes of the lists below */

/* One coroutine waiting on a descriptor, in its frame (wait_fd):
 * on the read list, the write list, or both. The links are under the entry's
 * lock; `on` says which lists hold it, and is how a waiter that gives up
 * learns whether a waker has already taken it off. */
struct fd_wait {
    struct weft__waiter wt;
    struct fd_wait     *next[2], *prev[2];   /* on the entry's lists, by direction */
    uint64_t            place;   /* its place in line, kept across a wake that found nothing */
    bool                on[2];
};

/* A descriptor's waiters. The lists, `places` and `set` are under `lock`. */
struct fd_slot {
    pthread_mutex_t  lock;
    struct fd_wait  *head[2], *tail[2];   /* waiters by direction, by place */
    uint64_t         last_place;   /* the last place given out */
    unsigned         places;    /* waiters on the lists, one per list each; counted on
                                 * the set that holds the registration */
    unsigned         set;       /* 1 + the index of the worker whose set holds the
                                 * registration and counts these waiters; 0: none */
    bool             added;     /* registered there, unless the file was closed since */
    _Atomic bool     not_socket;   /* a hint for weft_read/weft_write; anyone */
};

struct weft__fdtab {
    _Atomic(struct fd_slot *) pages[TOP_PAGES];   /* made on first use, kept */
};

struct weft__epset {
    int              epfd;
    int              efd;        /* eventfd in the set: wakes the owner */
    _Atomic unsigned waiters;    /* places taken in entries registered here; raised only by
                                  * the owner's coroutines, lowered by anyone, under the
                                  * entry's lock */
};

/* ---- the descriptor table ------------------------------------------------------ */

/* w's set: the epoll backend's state for it (io/backend.h); NULL where it
 * could not be made. */
static inline struct weft__epset *ep_of(const struct weft__worker *w)
{
    return w->io_state;
}

static struct weft__fdtab *table(weft_rt *rt, bool make)
{
    struct weft__fdtab *t = atomic_load_explicit(&rt->fdtab, memory_order_acquire);   /* pairs with the CAS */
    if (t || !make)
        return t;
    struct weft__fdtab *mine = calloc(1, sizeof *mine);
    if (!mine)
        return NULL;
    if (atomic_compare_exchange_strong_explicit(&rt->fdtab, &t, mine, memory_order_acq_rel,
                                                memory_order_acquire))
        return mine;   /* published */
    free(mine);        /* another thread published first: t is its table */
    return t;
}

static void page_free(struct fd_slot *p)
{
    for (unsigned i = 0; i < PAGE_SLOTS; i++)
        pthread_mutex_destroy(&p[i].lock);
    free(p);
}

/* fd's entry, made if `make`. NULL: fd is out of range, or no memory. Any thread. */
static struct fd_slot *slot(weft_rt *rt, int fd, bool make)
{
    if (fd < 0 || (unsigned)fd / PAGE_SLOTS >= TOP_PAGES)
        return NULL;
    struct weft__fdtab *t = table(rt, make);
    if (!t)
        return NULL;
    _Atomic(struct fd_slot *) *pp = &t->pages[(unsigned)fd / PAGE_SLOTS];
    struct fd_slot *p = atomic_load_explicit(pp, memory_order_acquire);   /* pairs with the CAS */
    if (!p && make) {
        struct fd_slot *mine = calloc(PAGE_SLOTS, sizeof *mine);
        if (!mine)
            return NULL;
        for (unsigned i = 0; i < PAGE_SLOTS; i++)
            pthread_mutex_init(&mine[i].lock, NULL);
        if (atomic_compare_exchange_strong_explicit(pp, &p, mine, memory_order_acq_rel,
                                                    memory_order_acquire))
            p = mine;
        else
            page_free(mine);   /* p is the page another thread published */
    }
    return p ? &p[(unsigned)fd % PAGE_SLOTS] : NULL;
}

void weft__epoll_destroy(weft_rt *rt)
{
    struct weft__fdtab *t = atomic_load_explicit(&rt->fdtab, memory_order_acquire);
    if (!t)
        return;
    for (unsigned i = 0; i < TOP_PAGES; i++) {
        struct fd_slot *p = atomic_load_explicit(&t->pages[i], memory_order_relaxed);
        if (p)
            page_free(p);
    }
    free(t);
    atomic_store_explicit(&rt->fdtab, NULL, memory_order_relaxed);
}

static bool fd_not_socket(weft_rt *rt, int fd)
{
    struct fd_slot *s = slot(rt, fd, false);
    return s && atomic_load_explicit(&s->not_socket, memory_order_relaxed);
}

static void fd_mark_not_socket(weft_rt *rt, int fd)
{
    struct fd_slot *s = slot(rt, fd, true);
    if (s)   /* without memory the hint is lost, and recv is tried again next time */
        atomic_store_explicit(&s->not_socket, true, memory_order_relaxed);
}

/* ---- a worker's set -------------------------------------------------------------- */

static void set_destroy(void *state);

/* The backend's create: a worker's set, and the eventfd that kicks it. */
static int set_create(void **out, unsigned entries)
{
    struct weft__epset *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = KICK_TAG };
    if (s->epfd < 0 || s->efd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->efd, &ev) < 0) {
        int err = -errno;
        set_destroy(s);
        return err;
    }
    *out = s;
    return 0;
}

static void set_destroy(void *state)
{
    struct weft__epset *s = state;
    if (!s)
        return;
    if (s->epfd >= 0)
        weft__sys_close(s->epfd);
    if (s->efd >= 0)
        weft__sys_close(s->efd);
    free(s);
}

static struct weft__epset *set_of(weft_rt *rt, const struct fd_slot *s)
{
    return s->set ? (struct weft__epset *)rt->workers[s->set - 1]->io_state : NULL;
}

static uint32_t wanted(const struct fd_slot *s)
{
    return (s->head[RD] ? EPOLLIN | EPOLLRDHUP : 0) | (s->head[WR] ? EPOLLOUT : 0);
}

/* The one-shot registration of fd for what s's waiters want. */
static struct epoll_event oneshot(const struct fd_slot *s, int fd)
{
    return (struct epoll_event){ .events = wanted(s) | EPOLLONESHOT, .data.u64 = (uint64_t)fd };
}

/* Puts fw on s's list for direction d by its place: at the end if it is new
 * (place 0; it gets the next one), else ahead of everyone who came after it.
 * Holds s->lock. */
static void enlist(struct fd_slot *s, struct fd_wait *fw, int d)
{
    if (!fw->place)
        fw->place = ++s->last_place;
    struct fd_wait *after = s->tail[d];
    while (after && after->place > fw->place)
        after = after->prev[d];
    fw->prev[d] = after;
    fw->next[d] = after ? after->next[d] : s->head[d];
    if (fw->next[d])
        fw->next[d]->prev[d] = fw;
    else
        s->tail[d] = fw;
    if (after)
        after->next[d] = fw;
    else
        s->head[d] = fw;
    fw->on[d] = true;
    s->places++;
}

/* Takes fw off every list of s that holds it; returns the places it gave up
 * (0 if a waker took it off already). Holds s->lock. */
static unsigned drop(struct fd_slot *s, struct fd_wait *fw)
{
    unsigned n = 0;
    for (int d = RD; d <= WR; d++) {
        if (!fw->on[d])
            continue;
        if (fw->prev[d])
            fw->prev[d]->next[d] = fw->next[d];
        else
            s->head[d] = fw->next[d];
        if (fw->next[d])
            fw->next[d]->prev[d] = fw->prev[d];
        else
            s->tail[d] = fw->prev[d];
        fw->on[d] = false;
        n++;
    }
    weft__check(s->places >= n, "a descriptor's waiters outnumber its count of places");
    s->places -= n;
    return n;
}

static void uncount(struct weft__epset *set, unsigned places)
{
    if (set && places)
        atomic_fetch_sub_explicit(&set->waiters, places, memory_order_relaxed);
}

/*
 * Arms fd's one-shot registration on w's set for what s's waiters want, the
 * caller's `mine` places included, and counts them there; a registration on
 * another worker's set moves here with the places of its waiters. Holds
 * s->lock. Returns 0 or a negative errno, and then nothing has changed.
 */
static int arm(struct weft__worker *w, int fd, struct fd_slot *s, unsigned mine)
{
    unsigned me = w->index + 1;
    struct epoll_event ev = oneshot(s, fd);
    bool done = s->set == me && s->added && epoll_ctl(ep_of(w)->epfd, EPOLL_CTL_MOD, fd, &ev) == 0;
    if (!done && s->set == me && s->added && errno != ENOENT)
        return -errno;
    if (!done && epoll_ctl(ep_of(w)->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        if (errno == EPERM)
            return -EINVAL;   /* a regular file: never "would block" */
        if (errno != EEXIST || epoll_ctl(ep_of(w)->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
            return -errno;
    }
    unsigned others = s->places - mine;
    if (s->set != me) {
        struct weft__epset *from = set_of(w->rt, s);
        if (from && s->added)
            epoll_ctl(from->epfd, EPOLL_CTL_DEL, fd, NULL);   /* ENOENT: the file is gone; fine */
        uncount(from, others);
        atomic_fetch_add_explicit(&ep_of(w)->waiters, others, memory_order_relaxed);
        s->set = me;
    }
    s->added = true;
    atomic_fetch_add_explicit(&ep_of(w)->waiters, mine, memory_order_relaxed);
    return 0;
}

/* Suspends the calling coroutine, on its worker w, until fd is ready for one
 * of `dirs` (WEFT__WAIT_READ, WEFT__WAIT_WRITE, or both), behind the
 * coroutines already waiting on fd in that direction. *place is 0 on a
 * caller's first wait, and is kept for its next: a waiter woken for data that
 * another took before it ran waits again in the place it had, for the level
 * is reported again, to the next in line, whenever the set is looked at
 * before the one woken has run. Returns the epoll events seen, -EBADF
 * (weft_close() closed it), -EINVAL (fd cannot be polled), -ETIMEDOUT,
 * -ECANCELED, -ENOMEM, -EMFILE (fd beyond the table). */
static int wait_fd(struct weft__worker *w, int fd, int dirs, uint64_t *place)
{
    if (fd < 0)
        return -EBADF;
    if (!ep_of(w))
        return -ENOMEM;   /* this worker's set could not be made */
    struct fd_slot *s = slot(w->rt, fd, true);
    if (!s)
        return (unsigned)fd / PAGE_SLOTS >= TOP_PAGES ? -EMFILE : -ENOMEM;
    struct fd_wait fw = { .place = *place, .on = { false, false } };
    weft__waiter_init(&fw.wt);

    pthread_mutex_lock(&s->lock);
    if (dirs & WEFT__WAIT_READ)
        enlist(s, &fw, RD);
    if (dirs & WEFT__WAIT_WRITE)
        enlist(s, &fw, WR);
    int err = arm(w, fd, s, (dirs & WEFT__WAIT_READ ? 1u : 0u) + (dirs & WEFT__WAIT_WRITE ? 1u : 0u));
    if (err)
        drop(s, &fw);
    pthread_mutex_unlock(&s->lock);
    if (err)
        return err;
    *place = fw.place;

    weft__bump(&w->ctr.epoll_waits, 1);
    int32_t r = weft__wait(&fw.wt);
    if (r < 0) {
        /* A deadline, a cancellation or weft_close: withdraw, unless the
         * reaper or weft_close claimed us and withdrew us already. The
         * registration stays armed for the others; if none is left, its
         * event will find the lists empty. */
        pthread_mutex_lock(&s->lock);
        uncount(set_of(w->rt, s), drop(s, &fw));
        pthread_mutex_unlock(&s->lock);
    }
    return r;
}

/*
 * Wakes the waiters of s's list for direction d with `result`, oldest first:
 * every one if `all`, else the first whose claim is ours (one that its
 * deadline or cancellation claimed first is taken off and passed over). A
 * waiter leaves every list before it is woken, for once woken its frame may
 * go at any moment. Holds s->lock. Returns whether a task was made runnable.
 */
static bool wake_list(weft_rt *rt, struct fd_slot *s, int d, int32_t result, bool all)
{
    bool woke = false;
    struct fd_wait *fw;
    while ((fw = s->head[d])) {
        uncount(set_of(rt, s), drop(s, fw));
        if (weft__wake(&fw->wt, result)) {
            woke = true;
            if (!all)
                break;
        }
    }
    return woke;
}

void weft__epoll_forget(weft_rt *rt, int fd)
{
    struct fd_slot *s = slot(rt, fd, false);
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    struct weft__epset *set = set_of(rt, s);
    wake_list(rt, s, RD, -EBADF, true);
    wake_list(rt, s, WR, -EBADF, true);
    if (set && s->added)
        epoll_ctl(set->epfd, EPOLL_CTL_DEL, fd, NULL);
    s->set = 0;
    s->added = false;
    atomic_store_explicit(&s->not_socket, false, memory_order_relaxed);
    pthread_mutex_unlock(&s->lock);
}

/* ---- the owner: reaping and sleeping --------------------------------------------- */

/* Claims the waiters the events satisfy. The owner of the set they came from. */
static bool reap(struct weft__worker *w, const struct epoll_event *ev, int n)
{
    bool woke = false;
    for (int i = 0; i < n; i++) {
        if (ev[i].data.u64 == KICK_TAG) {
            uint64_t v;
            while (weft__sys_read(ep_of(w)->efd, &v, sizeof v) == -EINTR)
                ;
            continue;
        }
        int fd = (int)ev[i].data.u64;
        struct fd_slot *s = slot(w->rt, fd, false);
        if (!s)
            continue;
        uint32_t got = ev[i].events;
        bool fail = got & (EPOLLERR | EPOLLHUP);
        weft__bump(&w->ctr.epoll_events, 1);
        pthread_mutex_lock(&s->lock);
        if (got & (EPOLLIN | EPOLLRDHUP | EPOLLPRI) || fail)
            woke |= wake_list(w->rt, s, RD, (int32_t)got, fail || (got & EPOLLRDHUP));
        if (got & EPOLLOUT || fail)
            woke |= wake_list(w->rt, s, WR, (int32_t)got, fail);
        /* Arm it again for those still waiting, in either direction, if the
         * registration still lives on our set. */
        if (wanted(s) && s->set == w->index + 1) {
            struct epoll_event again = oneshot(s, fd);
            epoll_ctl(ep_of(w)->epfd, EPOLL_CTL_MOD, fd, &again);
        }
        pthread_mutex_unlock(&s->lock);
    }
    return woke;
}

static bool set_busy(struct weft__worker *w)
{
    /* Only our own coroutines raise it, so we see every rise. A worker
     * whose set could not be made has none, and no waiters. */
    struct weft__epset *s = ep_of(w);
    return s && atomic_load_explicit(&s->waiters, memory_order_relaxed) != 0;
}

/* The monitor, without the exclusion: whether events wait on the set (an
 * epoll descriptor is readable when its set has events ready). A hint. */
static bool set_pending(struct weft__worker *w)
{
    struct weft__epset *s = ep_of(w);
    struct pollfd p = { .fd = s ? s->epfd : -1, .events = POLLIN };
    return set_busy(w) && weft__sys_poll(&p, 1, 0) > 0;
}

static bool set_poll(struct weft__worker *w)
{
    if (!set_busy(w))
        return false;
    struct epoll_event ev[EVENTS];
    int n = weft__sys_epoll_wait(ep_of(w)->epfd, ev, EVENTS, 0);
    return n > 0 && reap(w, ev, n);
}

/* epoll_wait for at most `ns` nanoseconds: epoll_pwait2 where the kernel has it
 * (5.11), else rounded up to milliseconds. */
static int wait_ns(int epfd, struct epoll_event *ev, uint64_t ns)
{
#ifdef SYS_epoll_pwait2
    static _Atomic bool no_pwait2;
    /* Valgrind 3.19 does not know epoll_pwait2 and would say so at each call. */
    if (!weft__on_valgrind() && !atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u) };
        long n = syscall(SYS_epoll_pwait2, epfd, ev, EVENTS, &ts, NULL, (size_t)0);
        if (n >= 0 || errno != ENOSYS)
            return (int)n;
        atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
    }
#endif
    uint64_t ms = (ns + 999999u) / 1000000u;
    return weft__sys_epoll_wait(epfd, ev, EVENTS, ms > INT32_MAX ? INT32_MAX : (int)ms);
}

static bool set_sleep(struct weft__worker *w, uint64_t until)
{
    struct epoll_event ev[EVENTS];
    int n;
    if (until == UINT64_MAX) {
        n = weft__sys_epoll_wait(ep_of(w)->epfd, ev, EVENTS, -1);
    } else {
        uint64_t now = weft_now();
        n = wait_ns(ep_of(w)->epfd, ev, until > now ? until - now : 0);
    }
    return n > 0 && reap(w, ev, n);
}

static void set_kick(struct weft__worker *w)
{
    struct weft__epset *s = ep_of(w);
    uint64_t one = 1;
    while (weft__sys_write(s->efd, &one, sizeof one) == -EINTR)
        ;
}

/* ---- the calls (the backend's `call`) ---------------------------------------------- */

/* A pipe or terminal: made O_NONBLOCK, and left so. The flag is recorded as
 * weft's, not the owner's, before it is set (io/fdtab.c). */
static int make_nonblocking(int fd)
{
    int fl = weft__sys_fcntl(fd, F_GETFL, 0);
    if (fl < 0 || (fl & O_NONBLOCK))
        return fl < 0 ? fl : 0;
    weft__fd_weft_nonblock(fd, true);
    if ((fl = weft__sys_fcntl(fd, F_SETFL, fl | O_NONBLOCK)) < 0) {
        weft__fd_weft_nonblock(fd, false);
        return fl;
    }
    return 0;
}

/*
 * read, write, recv, send, accept, and readv, writev, recvmsg, sendmsg,
 * sendfile. Sockets are left as the caller made them: recv, send, recvmsg
 * and sendmsg take MSG_DONTWAIT; read and write on a socket are recv and
 * send with no flags, readv and writev recvmsg and sendmsg; accept4 and
 * sendfile set O_NONBLOCK (sendfile: on the descriptor written) for the one
 * call (weft__io_syscall_nowait). Other descriptors (pipes, terminals) are
 * switched to O_NONBLOCK. The descriptor table remembers which answered
 * ENOTSOCK, as a hint: a number reused for another kind of file costs one
 * system call, never a blocked worker.
 */
static ssize_t stream_io(struct weft__worker *w, const struct weft__io_op *a)
{
    struct msghdr m;   /* readv and writev on a socket, as recvmsg and sendmsg */
    bool as_socket = weft__io_is_stream(a) && !fd_not_socket(w->rt, a->fd);
    struct weft__io_op c = as_socket ? weft__io_as_socket(a, &m) : *a;
    int err;
    if (weft__io_has_msg_flags(&c))
        c.flags |= MSG_DONTWAIT;
    else if (!weft__io_needs_toggle(&c) && (err = make_nonblocking(c.fd)))
        return err;
    bool write = weft__io_writes(&c);
    uint64_t place = 0;
    for (;;) {
        ssize_t r = weft__io_needs_toggle(&c) ? weft__io_syscall_nowait(&c) : weft__io_syscall(&c);
        if (r == -ENOTSOCK && as_socket) {
            /* A pipe or a terminal: read(2), write(2), readv(2), writev(2),
             * made non-blocking. */
            fd_mark_not_socket(w->rt, c.fd);
            as_socket = false;
            c = *a;
            if ((err = make_nonblocking(c.fd)))
                return err;
            continue;
        }
        if (r == -EINTR)
            continue;
        if ((r != -EAGAIN && r != -EWOULDBLOCK) || weft__io_asks_not_to_wait(a))
            return r;
        err = wait_fd(w, c.fd, write ? WEFT__WAIT_WRITE : WEFT__WAIT_READ, &place);
        if (err < 0)
            return err;
        w = weft__worker_self();   /* the coroutine may have moved */
    }
}

/* connect: the attempt is started without blocking, the socket's flags given
 * back at once, and it goes on while we wait. */
static ssize_t connect_io(struct weft__worker *w, const struct weft__io_op *a)
{
    int r = (int)weft__io_syscall_nowait(a);
    if (r != -EINPROGRESS && r != -EALREADY && r != -EINTR)
        return r;
    uint64_t place = 0;
    r = wait_fd(w, a->fd, WEFT__WAIT_WRITE, &place);
    if (r < 0)
        return r;   /* the connection attempt goes on; the caller closes fd */
    return WEFT__IO_CONNECTED_LATER;
}

/* weft_poll, once io.c found fd not ready: waits on the set and looks again. */
static ssize_t poll_io(struct weft__worker *w, const struct weft__io_op *a)
{
    short events = (short)a->flags;
    uint64_t place = 0;
    for (;;) {
        int e = wait_fd(w, a->fd, (events & (POLLIN | POLLPRI) ? WEFT__WAIT_READ : 0) |
                                  (events & POLLOUT ? WEFT__WAIT_WRITE : 0), &place);
        if (e < 0)
            return e;
        w = weft__worker_self();   /* the coroutine may have moved */
        int r = weft__poll_now(a->fd, events);
        if (r)
            return r;
    }
}

/* pread, pwrite, open, fsync have no readiness: a helper thread makes them. */
struct file_call {
    const struct weft__io_op *op;
    ssize_t                   ret;   /* the result or a negative errno */
};

static void *file_run(void *arg)
{
    struct file_call *c = arg;
    while ((c->ret = weft__io_syscall(c->op)) == -EINTR)
        ;
    return NULL;
}

static ssize_t file_io(const struct weft__io_op *a)
{
    struct file_call c = { .op = a };
    int err = weft__offload_noted(file_run, &c, NULL);   /* shown as the file call io.c noted */
    return err ? err : c.ret;
}

static ssize_t set_call(struct weft__worker *w, const struct weft__io_op *a)
{
    switch (a->kind) {
    case WEFT__IO_CONNECT: return connect_io(w, a);
    case WEFT__IO_POLL:    return poll_io(w, a);
    case WEFT__IO_PREAD:
    case WEFT__IO_PWRITE:
    case WEFT__IO_OPEN:
    case WEFT__IO_FSYNC:   return file_io(a);
    default:               return stream_io(w, a);
    }
}

static int set_start(struct weft__worker *w)
{
    return 0;
}

const struct weft__backend weft__epoll = {
    .name    = "epoll",
    .create  = set_create,
    .start   = set_start,
    .destroy = set_destroy,
    .poll    = set_poll,
    .busy    = set_busy,
    .pending = set_pending,
    .sleep   = set_sleep,
    .kick    = set_kick,
    .call    = set_call,
};
