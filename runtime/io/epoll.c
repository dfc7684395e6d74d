/* SPDX-License-Identifier: MIT */
/*
 * The epoll backend: readiness of descriptors, for coroutines on workers that
 * have no io_uring (refused by the kernel or a seccomp filter, or WEFT_IO=epoll).
 *
 * Each such worker owns an epoll set, as a worker owns its ring: only it waits
 * on the set. It looks without blocking when it runs out of runnable tasks and
 * on the fairness tick (set_poll); parked with waiters, it sleeps in
 * epoll_wait until its next timer, and a waker writes the eventfd in the set
 * (set_sleep, set_kick). An event makes its coroutine runnable on the worker
 * that saw it: no poller thread, no hand-over.
 *
 * A descriptor is registered edge-triggered, for both directions, on the set
 * of the worker whose coroutine first waits on it, and stays there until
 * weft_close(), as Go's netpoller keeps it: a wait on the same worker costs no
 * system call. A wait from another worker moves it there, with the count of
 * its waiters' places (one waiter on one list; weft_poll for both takes two).
 * Edges are counted per direction, and a direction is marked drained when a
 * call finds nothing (EAGAIN) or a read of a stream socket gets less than it
 * asked for (the kernel copies all it has; Tokio reads the same sign): a call
 * on a drained direction waits for the next edge without trying the call. A
 * caller notes the count before it looks and waits only if no edge came
 * since, under the entry's lock, which the reaper holds too.
 *
 * Any number of coroutines may wait in each direction (several acceptors of
 * one listener; Go instead serialises them before its pollDesc with a lock
 * per descriptor, which weft does not have). An edge wakes the oldest waiter
 * of each direction it reports, not all: a thundering herd of acceptors for
 * one connection. An edge comes once, so the one woken passes it on to the
 * next in line when its call finds something (pass_on); a waiter woken for
 * nothing waits again in the place it had. EPOLLERR and EPOLLHUP wake every
 * waiter, EPOLLRDHUP every reader.
 *
 * weft does not own descriptors: a number closed with close(2) and reused
 * for a new file keeps a registration the kernel has dropped, and the
 * drained mark is a sign, not a proof; either could leave a waiter waiting
 * for an edge that never comes. So a wait that needed no epoll_ctl is
 * checked (sweep) if it outlives a sweep of its worker (SWEEP_NS) with no
 * edge: an EPOLL_CTL_MOD, which also reports a level already there; ENOENT
 * means a new file (part_from_old_file: waiters proved to wait on the old
 * one are left waiting on it, the others woken to try again and register
 * the new one). A descriptor seeing edges is checked once a second
 * (CHECK_NS). Accepted sockets are known new (renew), and so are connecting
 * ones, whose waiters may be on the same socket. While a worker is stalled, the
 * monitor sweeps for it under its exclusion (set_pending, set_poll); the
 * stalled worker's coroutines may still add to the list meanwhile, so the
 * list is a lock-free stack (queue, sweep).
 *
 * A waiter is used by a reaper only under its entry's lock, and leaves its
 * entry under that lock before its frame can go (claimed by the reaper, by
 * its deadline or cancellation, or by weft__epoll_forget with -EBADF), or
 * leaves it to wait on a file closed since (part_from_old_file).
 * A descriptor closed with close(2) rather than weft_close() while a coroutine
 * waits on it leaves that coroutine waiting, as it would leave a thread
 * blocked in poll(2).
 */
#include "epoll.h"
#include "fdtab.h"
#include "base/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define KICK_TAG   UINT64_MAX   /* epoll data of the eventfd */
#define EVENTS     64           /* reaped per epoll_wait */
#define SWEEP_NS   5000000u     /* how often a worker checks the waits it began without a call */
#define CHECK_NS   1000000000u  /* a registration seeing edges is still checked this often */
#define REGISTERED (EPOLLIN | EPOLLRDHUP | EPOLLOUT | EPOLLET)
#define WEFT__WAIT_READ  1      /* dirs of wait_fd */
#define WEFT__WAIT_WRITE 2
#define WEFT__WAIT_NARROW 4     /* ... the caller looked for less than readability (POLLPRI
                                 * alone, MSG_ERRQUEUE, MSG_OOB): it marks nothing drained */

struct weft__epset {
    int              epfd;
    int              efd;        /* eventfd in the set: wakes the owner */
    _Atomic unsigned waiters;    /* places taken in entries registered here; raised only by the
                                  * owner's coroutines, lowered by anyone, under the entry's lock */
    /* Entries whose waits needed no epoll_ctl: a lock-free stack. The
     * owner's coroutines push (queue); a sweep, the owner's or the monitor's
     * under its exclusion, takes the whole stack and pushes back what it
     * keeps (sweep). */
    _Atomic(struct weft__fd_slot *) sweep;
    _Atomic uint64_t next_sweep; /* when to look at them; relaxed, a hint to the monitor */
    _Atomic uint64_t sweeps;     /* sweeps made; relaxed, read by queue */
};

/* w's set: the epoll backend's state for it (io/backend.h); NULL where it
 * could not be made. */
static inline struct weft__epset *ep_of(const struct weft__worker *w)
{
    return w->io_state;
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

static struct weft__epset *set_of(weft_rt *rt, const struct weft__fd_slot *s)
{
    return s->set ? (struct weft__epset *)rt->workers[s->set - 1]->io_state : NULL;
}

/* ---- edges and the drained mark ----------------------------------------------------- */

/* The count and mark of direction d, read before a look at the descriptor.
 * Relaxed: the entry's lock, which the reaper holds to raise it and wait_fd
 * to compare it, orders the edges against the waits. */
static uint64_t edge_seen(const struct weft__fd_slot *s, int d)
{
    return atomic_load_explicit(&s->edge[d], memory_order_relaxed);
}

static uint64_t edges(const struct weft__fd_slot *s)   /* of both directions, marks left out */
{
    return (edge_seen(s, RD) >> 1) + (edge_seen(s, WR) >> 1);
}

/* An edge for direction d: counted, and d no longer drained. Holds s->lock;
 * a reader marking d drained may race with it, and loses. */
static void edge_came(struct weft__fd_slot *s, int d)
{
    uint64_t e = edge_seen(s, d);
    while (!atomic_compare_exchange_weak_explicit(&s->edge[d], &e, (e + 2) & ~(uint64_t)1,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* Marks d drained, unless an edge came since the caller read `seen`. Any thread. */
static void mark_drained(struct weft__fd_slot *s, int d, uint64_t seen)
{
    if (!(seen & 1))
        atomic_compare_exchange_strong_explicit(&s->edge[d], &seen, seen | 1,
                                                memory_order_relaxed, memory_order_relaxed);
}

/* Whether a read of c's that returned r > 0 bytes emptied the socket: a
 * recv (read on a socket is one) of a stream socket that got less than it
 * asked for, with no flag that stops short of the end. The socket's type is
 * asked once per descriptor (kept until weft_close or a new file is seen).
 * Not once the end of the stream or an error has been reaped: the read that
 * takes the last bytes is short, but the next returns at once (0, or the
 * error), and no edge comes after the one already taken, so a wait for it
 * would last until the sweep's check. */
static bool emptied(struct weft__fd_slot *s, const struct weft__io_op *c, ssize_t r)
{
    if (c->kind != WEFT__IO_RECV || r <= 0 || (size_t)r >= c->len ||
        (c->flags & (MSG_PEEK | MSG_OOB | MSG_WAITALL | MSG_TRUNC | MSG_ERRQUEUE)) ||
        atomic_load_explicit(&s->ended, memory_order_acquire))
        return false;
    uint8_t kind = atomic_load_explicit(&s->kind, memory_order_relaxed);
    if (kind == KIND_UNKNOWN) {
        /* TCP, or a Unix stream (protocol 0); SCTP's one-to-one sockets are
         * SOCK_STREAM too, but read a message at a time. */
        int type = 0, proto = -1;
        socklen_t n = sizeof type, pn = sizeof proto;
        kind = weft__sys_getsockopt(c->fd, SOL_SOCKET, SO_TYPE, &type, &n) == 0 && type == SOCK_STREAM &&
               weft__sys_getsockopt(c->fd, SOL_SOCKET, SO_PROTOCOL, &proto, &pn) == 0 &&
               (proto == IPPROTO_TCP || proto == 0) ? KIND_STREAM : KIND_OTHER;
        atomic_store_explicit(&s->kind, kind, memory_order_relaxed);
    }
    return kind == KIND_STREAM;
}

/* ---- the lists of waiters --------------------------------------------------------- */

/* Puts fw on s's list for direction d by its place: at the end if it is new
 * (place 0; it gets the next one), else ahead of everyone who came after it.
 * Holds s->lock. */
static void enlist(struct weft__fd_slot *s, struct weft__fd_wait *fw, int d)
{
    if (!fw->place)
        fw->place = ++s->last_place;
    struct weft__fd_wait *after = s->tail[d];
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
    atomic_store_explicit(&s->lined[d], true, memory_order_relaxed);
}

/* Takes fw off every list of s that holds it; returns the places it gave up
 * (0 if a waker took it off already). Holds s->lock. */
static unsigned drop(struct weft__fd_slot *s, struct weft__fd_wait *fw)
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
        atomic_store_explicit(&s->lined[d], s->head[d] != NULL, memory_order_relaxed);
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
 * Wakes the waiters of s's list for direction d with `result`, oldest first:
 * every one if `all`, else the first whose claim is ours (one that its
 * deadline or cancellation claimed first is taken off and passed over). A
 * waiter leaves every list before it is woken, for once woken its frame may
 * go at any moment. Holds s->lock. Returns whether a task was made runnable.
 */
static bool wake_list(weft_rt *rt, struct weft__fd_slot *s, int d, int32_t result, bool all)
{
    bool woke = false;
    struct weft__fd_wait *fw;
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

/* The caller was woken for an edge of direction d and its call then found
 * something there (or an error): the edge came once, so the next in line is
 * woken to look too. The count read without the lock cannot miss a waiter
 * that needs it: one that was in line when the edge came is seen through the
 * reaper's lock and the wake that ran us; one that came after it had found
 * the direction empty since that edge, or found the edge and did not wait. */
static void pass_on(weft_rt *rt, struct weft__fd_slot *s, int d)
{
    if (!atomic_load_explicit(&s->lined[d], memory_order_relaxed))
        return;
    pthread_mutex_lock(&s->lock);
    wake_list(rt, s, d, d == RD ? EPOLLIN : EPOLLOUT, false);
    pthread_mutex_unlock(&s->lock);
}

/* ---- registration ------------------------------------------------------------------ */

/* What was learnt of the file s's number named (is it a socket, a stream):
 * wrong for another file. Holds s->lock. */
static void forget_hints(struct weft__fd_slot *s)
{
    atomic_store_explicit(&s->not_socket, false, memory_order_relaxed);
    atomic_store_explicit(&s->kind, KIND_UNKNOWN, memory_order_relaxed);
    atomic_store_explicit(&s->ended, false, memory_order_relaxed);
}

/*
 * s's number names another file than the one registered for it (closed with
 * close(2) and reused): the old file's hints go. A waiter whose file was the
 * registered one (`verified`), or any if `all_old` (the new file was just
 * made here), waits on a file closed since, as a thread in poll(2) would:
 * off the lists, for its deadline or cancellation, where no edge of the new
 * file reaches it. The others may have begun on the new file: woken to try
 * again. `keep`, the caller's own wait or NULL, stays. Holds s->lock.
 * Returns whether a task was made runnable.
 */
static bool part_from_old_file(weft_rt *rt, struct weft__fd_slot *s, const struct weft__fd_wait *keep,
                               bool all_old)
{
    forget_hints(s);
    bool woke = false;
    for (int d = RD; d <= WR; d++) {
        struct weft__fd_wait *fw, *next;
        for (fw = s->head[d]; fw; fw = next) {
            next = fw->next[d];
            if (fw == keep)
                continue;
            uncount(set_of(rt, s), drop(s, fw));
            if (!fw->verified && !all_old)
                woke |= weft__wake(&fw->wt, d == RD ? EPOLLIN : EPOLLOUT);
        }
    }
    return woke;
}

/*
 * Makes sure fd is registered on w's set, where the caller's `mine` places are
 * counted; a registration on another worker's set moves here with the places
 * of its waiters. Holds s->lock. Returns 1 if that took no system call (the
 * registration was believed in, and the caller's wait is to be checked), 0 if
 * it was made, moved or checked now, or a negative errno, and then nothing
 * has changed. Sets *replaced when a system call found that the number names
 * another file than the one registered (the caller parts the waiters).
 */
static int arm(struct weft__worker *w, int fd, struct weft__fd_slot *s, unsigned mine, bool *replaced)
{
    unsigned me = w->index + 1;
    struct weft__epset *here = ep_of(w);
    struct epoll_event ev = { .events = REGISTERED, .data.u64 = (uint64_t)fd };
    bool mine_already = s->set == me && s->added;
    if (mine_already && (!s->queued || s->queued == me)) {
        atomic_fetch_add_explicit(&here->waiters, mine, memory_order_relaxed);
        return 1;
    }
    /* Here, but on another worker's sweep list (its own to change): check it now. */
    bool done = mine_already && epoll_ctl(here->epfd, EPOLL_CTL_MOD, fd, &ev) == 0;
    if (!done && mine_already && errno != ENOENT)
        return errno == EPERM ? -EINVAL : -errno;
    if (!done && mine_already)
        *replaced = true;   /* ENOENT: the number names another file */
    if (!done && epoll_ctl(here->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        if (errno == EPERM)
            return -EINVAL;   /* a regular file: never "would block" */
        if (errno != EEXIST || epoll_ctl(here->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
            return -errno;
    }
    unsigned others = s->places - mine;
    if (s->set != me) {
        struct weft__epset *from = set_of(w->rt, s);
        /* Even if not `added` (renew): ENOENT, the file is gone, is fine.
         * Where it was believed registered there, ENOENT says the number
         * names another file now. */
        if (from && epoll_ctl(from->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 && errno == ENOENT && s->added)
            *replaced = true;
        uncount(from, others);
        atomic_fetch_add_explicit(&here->waiters, others, memory_order_relaxed);
        s->set = me;
    }
    s->added = true;
    s->checked = weft_now();
    atomic_fetch_add_explicit(&here->waiters, mine, memory_order_relaxed);
    return 0;
}

/* Pushes s on set's sweep list. Holds s->lock, or is the sweep that took s
 * off the list (s->queued, set meanwhile, keeps everyone else from pushing
 * it). Returns whether the list was empty. */
static bool sweep_push(struct weft__epset *set, struct weft__fd_slot *s)
{
    struct weft__fd_slot *head = atomic_load_explicit(&set->sweep, memory_order_relaxed);
    do
        s->next_queued = head;
    while (!atomic_compare_exchange_weak_explicit(&set->sweep, &head, s, memory_order_release,
                                                  memory_order_relaxed));   /* pairs with sweep's exchange */
    return !head;
}

/* Puts s on w's sweep list, unless a list holds it: a wait on it began
 * without a system call. Holds s->lock; on w. */
static void queue(struct weft__worker *w, struct weft__fd_slot *s)
{
    struct weft__epset *set = ep_of(w);
    if (s->queued)
        return;
    s->queued = w->index + 1;
    s->round = atomic_load_explicit(&set->sweeps, memory_order_relaxed);
    s->mark = edges(s);
    if (sweep_push(set, s))
        atomic_store_explicit(&set->next_sweep, weft_now() + SWEEP_NS, memory_order_relaxed);
}

/* Suspends the calling coroutine, on its worker w, until fd is ready for one
 * of `dirs` (WEFT__WAIT_READ, WEFT__WAIT_WRITE, or both), behind the
 * coroutines already waiting on fd in that direction, unless an edge came in
 * one of them since the caller read `seen` (edge_seen, before its look at
 * fd). *place is 0 on a caller's first wait, and is kept for its next: a
 * waiter woken for data that another took before it ran waits again in the
 * place it had. Returns the epoll events seen (0: look again), -EBADF
 * (weft_close() closed it), -EINVAL (fd cannot be polled), -ETIMEDOUT,
 * -ECANCELED, -ENOMEM, -EMFILE (fd beyond the table). */
static int wait_fd(struct weft__worker *w, int fd, int dirs, uint64_t *place, const uint64_t seen[2])
{
    if (fd < 0)
        return -EBADF;
    if (!ep_of(w))
        return -ENOMEM;   /* this worker's set could not be made */
    struct weft__fd_slot *s = weft__epoll_slot(w->rt, fd, true);
    if (!s)
        return (unsigned)fd / PAGE_SLOTS >= TOP_PAGES ? -EMFILE : -ENOMEM;
    struct weft__fd_wait fw = { .place = *place, .on = { false, false } };
    weft__waiter_init(&fw.wt);
    bool want[2] = { dirs & WEFT__WAIT_READ, dirs & WEFT__WAIT_WRITE };

    pthread_mutex_lock(&s->lock);
    for (int d = RD; d <= WR; d++) {
        if (want[d] && edge_seen(s, d) != seen[d]) {
            pthread_mutex_unlock(&s->lock);
            return 0;
        }
    }
    for (int d = RD; d <= WR; d++)
        if (want[d])
            enlist(s, &fw, d);
    bool replaced = false;
    int armed = arm(w, fd, s, (unsigned)want[RD] + (unsigned)want[WR], &replaced);
    if (armed < 0) {
        drop(s, &fw);
        pthread_mutex_unlock(&s->lock);
        return armed;
    }
    if (replaced)
        part_from_old_file(w->rt, s, &fw, false);
    for (int d = RD; d <= WR && !(dirs & WEFT__WAIT_NARROW); d++)
        if (want[d])
            atomic_store_explicit(&s->edge[d], seen[d] | 1, memory_order_relaxed);   /* drained */
    fw.verified = armed == 0;
    if (armed == 1)
        queue(w, s);
    pthread_mutex_unlock(&s->lock);
    *place = fw.place;

    weft__bump(&w->ctr.epoll_waits, 1);
    int32_t r = weft__wait(&fw.wt);
    if (r < 0) {
        /* A deadline, a cancellation or weft_close: withdraw, unless the
         * reaper or weft_close claimed us and withdrew us already. */
        pthread_mutex_lock(&s->lock);
        uncount(set_of(w->rt, s), drop(s, &fw));
        pthread_mutex_unlock(&s->lock);
    }
    return r;
}

/* s's number names a new file, or may: nothing is known of it, and its
 * registration, if any, is another file's. Holds s->lock. */
static void unknown(struct weft__fd_slot *s)
{
    s->added = false;
    edge_came(s, RD);
    edge_came(s, WR);
    forget_hints(s);
}

/* fd is a new file, accepted or being connected: a number closed with close(2)
 * and reused would otherwise wait for a check first. Returns fd's entry, or
 * NULL if it has none yet. */
static struct weft__fd_slot *renew(weft_rt *rt, int fd, bool accepted)
{
    struct weft__fd_slot *s = weft__epoll_slot(rt, fd, false);
    if (!s)
        return NULL;
    pthread_mutex_lock(&s->lock);
    unknown(s);
    if (accepted)   /* whoever waits on the number waits on another file */
        part_from_old_file(rt, s, NULL, true);
    pthread_mutex_unlock(&s->lock);
    return s;
}

void weft__epoll_forget(weft_rt *rt, int fd)
{
    struct weft__fd_slot *s = weft__epoll_slot(rt, fd, false);
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    struct weft__epset *set = set_of(rt, s);
    wake_list(rt, s, RD, -EBADF, true);
    wake_list(rt, s, WR, -EBADF, true);
    if (set && s->added)
        epoll_ctl(set->epfd, EPOLL_CTL_DEL, fd, NULL);
    s->set = 0;
    unknown(s);
    pthread_mutex_unlock(&s->lock);
}

/* ---- the owner: reaping, sweeping and sleeping ------------------------------------ */

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
        struct weft__fd_slot *s = weft__epoll_slot(w->rt, fd, false);
        if (!s)
            continue;
        uint32_t got = ev[i].events;
        bool fail = got & (EPOLLERR | EPOLLHUP);
        bool in = got & (EPOLLIN | EPOLLRDHUP | EPOLLPRI), out = got & EPOLLOUT;
        weft__bump(&w->ctr.epoll_events, 1);
        pthread_mutex_lock(&s->lock);
        if (fail || (got & EPOLLRDHUP))
            atomic_store_explicit(&s->ended, true, memory_order_release);   /* before the edge's count */
        if (in || fail) {
            edge_came(s, RD);
            woke |= wake_list(w->rt, s, RD, (int32_t)got, fail || (got & EPOLLRDHUP));
        }
        if (out || fail) {
            edge_came(s, WR);
            woke |= wake_list(w->rt, s, WR, (int32_t)got, fail);
        }
        pthread_mutex_unlock(&s->lock);
    }
    return woke;
}

/* Checks s's registration with an EPOLL_CTL_MOD, which also reports a level
 * the waiters missed. Success proves the listed waiters' file; a new file
 * under the number (or none) fails it (part_from_old_file), any other error
 * wakes everyone to look again. Holds s->lock. Returns whether a task was
 * made runnable. */
static bool check(weft_rt *rt, struct weft__fd_slot *s, uint64_t now)
{
    struct weft__epset *set = set_of(rt, s);
    struct epoll_event ev = { .events = REGISTERED, .data.u64 = (uint64_t)s->fd };
    if (epoll_ctl(set->epfd, EPOLL_CTL_MOD, s->fd, &ev) == 0) {
        s->checked = now;
        for (int d = RD; d <= WR; d++)
            for (struct weft__fd_wait *fw = s->head[d]; fw; fw = fw->next[d])
                fw->verified = true;
        return false;
    }
    bool other_file = errno == ENOENT || errno == EBADF;
    unknown(s);
    if (other_file)
        return part_from_old_file(rt, s, NULL, false);
    bool woke = wake_list(rt, s, RD, EPOLLIN, true);   /* whatever it is: everyone looks again */
    return wake_list(rt, s, WR, EPOLLOUT, true) || woke;
}

/*
 * The owner's look at its sweep list (queue), or the monitor's for a stalled
 * owner, under its exclusion: never both at once. An entry nobody waits on is
 * dropped; one with no edge since it was queued before the last sweep is
 * checked (no wait younger than SWEEP_NS costs a check), one seeing edges
 * kept, and checked once its last check is CHECK_NS old. One registered on
 * another worker's set now is checked or dropped, never kept: that worker
 * queues it on its own list. Returns whether a task was made runnable. The
 * monitor may wait for an entry's lock, as in reap: a coroutine that holds
 * one never waits for the monitor (core/park.c, ready_pinned).
 */
static bool sweep(struct weft__worker *w, uint64_t now)
{
    bool woke = false;
    struct weft__epset *set = ep_of(w);
    uint64_t round = atomic_load_explicit(&set->sweeps, memory_order_relaxed);
    struct weft__fd_slot *s = atomic_exchange_explicit(&set->sweep, NULL, memory_order_acquire), *next;
    for (; s; s = next) {   /* taken whole: a queued entry is on no other list, nobody else pushes it */
        next = s->next_queued;
        pthread_mutex_lock(&s->lock);
        bool quiet = edges(s) == s->mark;
        bool keep = false;
        if (s->places && s->added && s->set) {
            if (quiet ? s->round != round : now - s->checked >= CHECK_NS)
                woke |= check(w->rt, s, now);
            else
                keep = s->set == w->index + 1;
        }
        if (keep) {
            if (!quiet) {
                s->mark = edges(s);
                s->round = round + 1;
            }
            sweep_push(set, s);
        } else {
            s->queued = 0;
        }
        pthread_mutex_unlock(&s->lock);
    }
    atomic_store_explicit(&set->sweeps, round + 1, memory_order_relaxed);
    atomic_store_explicit(&set->next_sweep, now + SWEEP_NS, memory_order_relaxed);
    return woke;
}

/* Sweeps if it is time. The owner, or the monitor under its exclusion.
 * Returns whether a task was made runnable. */
static bool sweep_due(struct weft__worker *w)
{
    struct weft__epset *set = ep_of(w);
    if (!set || !atomic_load_explicit(&set->sweep, memory_order_relaxed))
        return false;
    uint64_t now = weft_now();
    return now >= atomic_load_explicit(&set->next_sweep, memory_order_relaxed) && sweep(w, now);
}

/* Whether coroutines wait on the set. Only our own coroutines raise the
 * count, so we see every rise. A worker whose set could not be made has none,
 * and no waiters. Any thread. */
static bool set_waited_on(struct weft__worker *w)
{
    struct weft__epset *s = ep_of(w);
    return s && atomic_load_explicit(&s->waiters, memory_order_relaxed) != 0;
}

/* The owner: whether it must sleep in the set, for its waiters or a sweep. */
static bool set_busy(struct weft__worker *w)
{
    struct weft__epset *s = ep_of(w);
    return set_waited_on(w) || (s && atomic_load_explicit(&s->sweep, memory_order_relaxed));
}

/* The monitor, without the exclusion: whether events wait on the set (an
 * epoll descriptor is readable when its set has events ready), or a sweep is
 * due: a wait on a descriptor closed with close(2) and reused gets no event,
 * and only a sweep ends it. A hint. */
static bool set_pending(struct weft__worker *w)
{
    struct weft__epset *s = ep_of(w);
    if (set_waited_on(w) && atomic_load_explicit(&s->sweep, memory_order_relaxed) &&
        weft_now() >= atomic_load_explicit(&s->next_sweep, memory_order_relaxed))
        return true;   /* entries nobody waits on can wait for their owner */
    struct pollfd p = { .fd = s ? s->epfd : -1, .events = POLLIN };
    return set_waited_on(w) && weft__sys_poll(&p, 1, 0) > 0;
}

static bool set_poll(struct weft__worker *w)
{
    /* The owner's sweep, or the monitor's under its exclusion for a stalled
     * owner (core/monitor.c): no other thread polls a set. */
    struct weft__worker *self = weft__worker_self();
    bool woke = (self == w || !self) && sweep_due(w);
    if (!set_waited_on(w))
        return woke;
    struct epoll_event ev[EVENTS];
    int n = weft__sys_epoll_wait(ep_of(w)->epfd, ev, EVENTS, 0);
    return (n > 0 && reap(w, ev, n)) || woke;
}

static bool set_sleep(struct weft__worker *w, uint64_t until)
{
    struct epoll_event ev[EVENTS];
    struct weft__epset *set = ep_of(w);
    int n;
    if (sweep_due(w))
        return true;
    uint64_t next = atomic_load_explicit(&set->next_sweep, memory_order_relaxed);
    if (atomic_load_explicit(&set->sweep, memory_order_relaxed) && next < until)
        until = next;
    if (until == UINT64_MAX) {
        n = weft__sys_epoll_wait(ep_of(w)->epfd, ev, EVENTS, -1);
    } else {
        uint64_t now = weft_now();
        n = weft__sys_epoll_wait_ns(ep_of(w)->epfd, ev, EVENTS, until > now ? until - now : 0);
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

/*
 * read, write, recv, send, accept, readv, writev, recvmsg, sendmsg.
 * Sockets are left as the caller made them: read, write, readv and writev on
 * a socket are recv, send, recvmsg and sendmsg, which take MSG_DONTWAIT;
 * accept4 sets O_NONBLOCK for the one call
 * (weft__io_syscall_nowait). Pipes and terminals are switched to O_NONBLOCK
 * (weft__epoll_nonblocking). Which answered ENOTSOCK is kept as a hint: a number
 * reused for another kind of file costs a system call or two, never a
 * blocked worker or a socket's flags.
 */
static ssize_t stream_io(struct weft__worker *w, const struct weft__io_op *a)
{
    if (weft__io_is_stream(a) && !a->len)
        return weft__io_syscall(a);   /* no bytes: 0 at once, where recv(2) would say EAGAIN */
    struct msghdr m;   /* readv and writev on a socket, as recvmsg and sendmsg */
    struct weft__fd_slot *s = weft__epoll_slot(w->rt, a->fd, false);   /* NULL: never waited on */
    bool as_socket = weft__io_is_stream(a) && !(s && atomic_load_explicit(&s->not_socket, memory_order_relaxed));
    struct weft__io_op c = as_socket ? weft__io_as_socket(a, &m) : *a;
    int err;
    if (!weft__io_has_msg_flags(&c) && !weft__io_needs_toggle(&c) && (err = weft__epoll_nonblocking(w->rt, c.fd))) {
        if (err < 0)
            return err;
        if (weft__io_is_stream(a)) {   /* a socket after all */
            as_socket = true;
            c = weft__io_as_socket(a, &m);
        }
    }
    if (weft__io_has_msg_flags(&c))
        c.flags |= MSG_DONTWAIT;
    int d = weft__io_writes(&c) ? WR : RD;
    bool may_wait = !weft__io_asks_not_to_wait(a), waited = false;
    bool narrow = weft__io_has_msg_flags(&c) && (c.flags & (MSG_ERRQUEUE | MSG_OOB));
    uint64_t place = 0, seen[2] = { 0, 0 };
    for (;;) {
        seen[d] = s ? edge_seen(s, d) : 0;   /* no entry: not known drained */
        ssize_t r;
        if ((seen[d] & 1) && may_wait && !narrow)
            r = -EAGAIN;   /* drained, and no edge since: wait for one without a call */
        else
            r = weft__io_needs_toggle(&c) ? weft__io_syscall_nowait(&c) : weft__io_syscall(&c);
        if (r == -ENOTSOCK && as_socket) {
            /* A pipe or a terminal: read(2), write(2), readv(2), writev(2),
             * made non-blocking. */
            weft__epoll_not_socket(w->rt, c.fd);
            as_socket = false;
            c = *a;
            if ((err = weft__epoll_nonblocking(w->rt, c.fd)) < 0)
                return err;
            if (err) {   /* a socket again: its number was reused meanwhile */
                as_socket = true;
                c = weft__io_as_socket(a, &m);
                c.flags |= MSG_DONTWAIT;
            }
            continue;
        }
        if (r == -EINTR)
            continue;
        if ((r != -EAGAIN && r != -EWOULDBLOCK) || !may_wait) {
            if (s && emptied(s, &c, r))
                mark_drained(s, d, seen[d]);
            if (s && waited)
                pass_on(w->rt, s, d);
            if (c.kind == WEFT__IO_ACCEPT && r >= 0)
                renew(w->rt, (int)r, true);
            return r;
        }
        if (s && waited && narrow)
            pass_on(w->rt, s, d);   /* the edge was for data we did not look for */
        err = wait_fd(w, c.fd, (d == WR ? WEFT__WAIT_WRITE : WEFT__WAIT_READ) | (narrow ? WEFT__WAIT_NARROW : 0),
                      &place, seen);
        if (err < 0)
            return err;
        waited = err > 0;   /* 0: an edge came before the wait, taken by nobody */
        w = weft__worker_self();   /* the coroutine may have moved */
        if (!s)
            s = weft__epoll_slot(w->rt, c.fd, false);   /* the wait made it */
    }
}

/* connect: the attempt is started without blocking, the socket's flags given
 * back at once, and it goes on while we wait. */
static ssize_t connect_io(struct weft__worker *w, const struct weft__io_op *a)
{
    struct weft__fd_slot *s = renew(w->rt, a->fd, false);
    uint64_t seen[2] = { 0, s ? edge_seen(s, WR) : 0 };
    int r = (int)weft__io_syscall_nowait(a);
    if (r != -EINPROGRESS && r != -EALREADY && r != -EINTR)
        return r;
    uint64_t place = 0;
    r = wait_fd(w, a->fd, WEFT__WAIT_WRITE, &place, seen);
    if (r < 0)
        return r;   /* the connection attempt goes on; the caller closes fd */
    if (!s)
        s = weft__epoll_slot(w->rt, a->fd, false);   /* the wait made it */
    if (r > 0 && s)
        pass_on(w->rt, s, WR);   /* a writer may wait behind us for the same edge */
    return WEFT__IO_CONNECTED_LATER;
}

/* weft_poll, once io.c found fd not ready: looks again after noting the
 * edges (one may have come since io.c looked), then waits on the set. */
static ssize_t poll_io(struct weft__worker *w, const struct weft__io_op *a)
{
    short events = (short)a->flags;
    int dirs = (events & (POLLIN | POLLPRI) ? WEFT__WAIT_READ : 0) | (events & POLLOUT ? WEFT__WAIT_WRITE : 0);
    bool narrow = (events & POLLPRI) && !(events & POLLIN);
    uint64_t place = 0;
    bool waited = false;
    for (;;) {
        struct weft__fd_slot *s = weft__epoll_slot(w->rt, a->fd, false);
        uint64_t seen[2] = { s ? edge_seen(s, RD) : 0, s ? edge_seen(s, WR) : 0 };
        int r = weft__poll_now(a->fd, events);
        /* What we saw stays for the others in line to see too, and an edge
         * for what we did not look for is theirs. */
        for (int d = RD; s && waited && (r || narrow) && d <= WR; d++)
            if (dirs & (d == RD ? WEFT__WAIT_READ : WEFT__WAIT_WRITE))
                pass_on(w->rt, s, d);
        if (r)
            return r;
        int e = wait_fd(w, a->fd, dirs | (narrow ? WEFT__WAIT_NARROW : 0), &place, seen);
        if (e < 0)
            return e;
        waited = e > 0;
        w = weft__worker_self();   /* the coroutine may have moved */
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
