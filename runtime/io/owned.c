/* SPDX-License-Identifier: MIT */
/*
 * Descriptors whose reading the program has handed to weft (weft_own): a
 * connected TCP socket read only through weft and closed only with
 * weft_close. Each has a record here, found by its number, that holds a queue
 * of the socket's bytes received and not yet read.
 *
 * Why: a one-shot receive costs a request, a submission and a completion for
 * every read, most of which find data the peer sent long before. A multishot
 * receive (io_uring; README says since which kernel) stays armed and completes once for each
 * arrival, into a buffer the ring provides; the ring's owner copies it into
 * the queue and gives the buffer back (io/uring.c). A read that finds bytes
 * queued is then a copy under a lock (weft-bench server, the HTTP example's
 * --own: docs/benchmarks.md).
 *
 * The protocol. Everything below is under the record's lock, which is never
 * held across a park, a submission or the monitor's exclusion.
 *   1. A reader takes what is queued. If nothing is, and no receive is armed,
 *      a coroutine on a backend that can arm one (its worker's `own_arm`)
 *      claims the arming (`armed` = its worker), drops the lock, arms, and
 *      takes the lock again to record the request's identity. Anyone else
 *      (a plain thread, a coroutine on epoll, a ring that refuses) reads the
 *      socket itself, claiming it (`reading`) for that: a coroutine on epoll
 *      reads a small read's worth ahead into the queue (read_ahead), any
 *      other read is the usual call (usual_read). One reader at a time reads
 *      the socket, and never while a receive is armed.
 *   2. A reader that finds nothing queued, and a receive armed or the socket
 *      claimed, waits on the record's list of readers, within its deadline
 *      and cancellation; so does a poll for POLLIN alone (weft__owned_poll).
 *   3. Each completion of the receive (weft__owned_received, on the ring's
 *      owner or the monitor) appends its bytes, or notes the end of the
 *      stream or the socket's error, and wakes every waiting reader to look
 *      again. The last completion (no IORING_CQE_F_MORE) disarms: a reader
 *      that finds nothing queued then arms anew (1).
 *   4. Past WEFT_OWN_QUEUE bytes queued the owner cancels the receive (3 then
 *      disarms it), so a reader that does not read holds back its peer by
 *      TCP's flow control, as a socket nobody reads does.
 *   5. weft_close (io/backend.c) takes the record out of the table and fails
 *      its waiting readers with -EBADF; the close protocol of io/uring.c
 *      cancels the armed receive, which is counted on its descriptor like any
 *      request, and the number stays taken until that is done.
 *   6. A poll that finds nothing queued, armed or claimed polls the socket
 *      itself, counted in `polling` meanwhile: no receive is armed and no
 *      read ahead starts then, since either would move what the poll waits
 *      for into the queue; reads are the usual calls (usual_read).
 * A record lives while the table, a reader in a call, or an armed receive
 * holds a reference: the last to let go frees it.
 */
#include "backend.h"
#include "owned.h"
#include "fdtab.h"   /* the hook's entry points */

#include "base/lock.h"
#include "base/sys.h"
#include "sync/sync.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define PAGE  4096u
#define PAGES 256u           /* numbers up to 2^20, as weft.h says */
#define STRIPES 64u          /* locks over the table's slots, by number */
#define QUEUE_MIN 4096u      /* a queue's first allocation */

/* A reader waiting for bytes: on its stack, on the record's list. */
struct reader {
    struct weft__wnode  node;     /* first; under the record's lock */
    struct weft__waiter w;
};

_Atomic bool weft__owned_some;

static _Atomic(struct weft__owned *) *_Atomic pages[PAGES];
static _Atomic uint32_t page_lock;            /* makes pages */
static _Atomic uint32_t stripe[STRIPES];     /* guards the slots and the references taken from them */

static _Atomic uint32_t *stripe_of(int fd)
{
    return &stripe[(unsigned)fd % STRIPES];
}

static void stop(struct weft__owned *o);

/* Drops a reference to o; the last frees it. Any thread, not holding o->lock. */
static void put(struct weft__owned *o)
{
    if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1) {   /* the last sees every write */
        free(o->q);
        free(o);
    }
}

/* The record of fd with a reference for the caller, or NULL. Any thread. */
static struct weft__owned *get(int fd)
{
    if ((unsigned)fd >= PAGE * PAGES)
        return NULL;
    _Atomic(struct weft__owned *) *page = atomic_load_explicit(&pages[fd / PAGE], memory_order_acquire);
    if (!page || !atomic_load_explicit(&page[fd % PAGE], memory_order_relaxed))
        return NULL;   /* the common case, without the lock */
    _Atomic uint32_t *l = stripe_of(fd);
    weft__ilock(l);
    struct weft__owned *o = atomic_load_explicit(&page[fd % PAGE], memory_order_relaxed);
    if (o)
        atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);   /* under the stripe, against close */
    weft__iunlock(l);
    return o;
}

/* Wakes every reader waiting on o to look again; returns whether there was
 * one. Holds o->lock. */
static bool wake_readers(struct weft__owned *o)
{
    bool any = false;
    while (o->readers._head) {
        struct reader *n = (struct reader *)o->readers._head;
        weft__wl_remove(&o->readers, &n->node);
        weft_task *t = n->w.task;   /* read before the claim: n may be gone after it */
        if (weft__claim(&n->w, 1)) {
            weft__wake_claimed(t, &n->w);   /* o is counted: its lock may be held here */
            any = true;
        }
    }
    return any;
}

int weft_own(int fd)
{
    if (fd < 0)
        return -EBADF;
    int v;
    socklen_t l = sizeof v;
    int e = weft__sys_getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l);
    if (e)
        return e;   /* -EBADF, -ENOTSOCK */
    if (v != SOCK_STREAM)
        return -EOPNOTSUPP;
    l = sizeof v;
    if ((e = weft__sys_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &l)) != 0)
        return e;
    if (v != AF_INET && v != AF_INET6)
        return -EOPNOTSUPP;
    l = sizeof v;
    if ((e = weft__sys_getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &l)) != 0)
        return e;
    if (v != IPPROTO_TCP)
        return -EOPNOTSUPP;
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    if ((e = weft__sys_getpeername(fd, (struct sockaddr *)&peer, &pl)) != 0)
        return e;   /* -ENOTCONN */
    if ((unsigned)fd >= PAGE * PAGES)
        return -EMFILE;
    if (weft__fork_handler_register() != 0)
        return -ENOMEM;   /* a child must be able to drop the records */

    _Atomic(struct weft__owned *) *page = atomic_load_explicit(&pages[fd / PAGE], memory_order_acquire);
    if (!page) {
        weft__ilock(&page_lock);
        page = atomic_load_explicit(&pages[fd / PAGE], memory_order_relaxed);
        if (!page && (page = calloc(PAGE, sizeof *page)) != NULL)
            atomic_store_explicit(&pages[fd / PAGE], page, memory_order_release);   /* pairs with get */
        weft__iunlock(&page_lock);
        if (!page)
            return -ENOMEM;
    }
    struct weft__owned *o = calloc(1, sizeof *o);
    if (!o)
        return -ENOMEM;
    atomic_init(&o->refs, 1);   /* the table's */
    o->fd = fd;
    _Atomic uint32_t *sl = stripe_of(fd);
    weft__ilock(sl);
    bool taken = atomic_load_explicit(&page[fd % PAGE], memory_order_relaxed) != NULL;
    if (!taken)
        atomic_store_explicit(&page[fd % PAGE], o, memory_order_release);   /* o's fields before it */
    weft__iunlock(sl);
    if (taken) {
        free(o);
        return -EALREADY;
    }
    atomic_store_explicit(&weft__owned_some, true, memory_order_relaxed);   /* see weft__owned_maybe */
    return 0;
}

struct weft__owned *weft__owned_close_begin(int fd)
{
    struct weft__owned *o = get(fd);
    if (!o)
        return NULL;
    weft__ilock(&o->lock);
    o->closed = true;   /* no reader arms again: each returns -EBADF */
    while (o->armed && !o->armed_id) {
        /* A reader is arming: once it has, its receive is counted on its
         * ring, which the close then counts too. own_arm never parks. */
        weft__iunlock(&o->lock);
        sched_yield();
        weft__ilock(&o->lock);
    }
    stop(o);   /* the close protocol cancels it as well; either is enough */
    wake_readers(o);
    weft__iunlock(&o->lock);
    return o;
}

void weft__owned_close_end(struct weft__owned *o, bool closed)
{
    if (!closed) {
        weft__ilock(&o->lock);
        o->closed = false;
        weft__iunlock(&o->lock);
        put(o);
        return;
    }
    _Atomic(struct weft__owned *) *page = atomic_load_explicit(&pages[o->fd / PAGE], memory_order_acquire);
    _Atomic uint32_t *sl = stripe_of(o->fd);
    weft__ilock(sl);
    struct weft__owned *mine = o;
    bool held = atomic_compare_exchange_strong_explicit(&page[o->fd % PAGE], &mine, NULL,
                                                        memory_order_relaxed, memory_order_relaxed);
    weft__iunlock(sl);
    if (held)
        put(o);   /* the table's; an armed receive keeps o until its last completion */
    put(o);       /* close_begin's */
}

bool weft__hook_fd_owned(int fd)
{
    struct weft__owned *o = get(fd);
    if (o)
        put(o);
    return o != NULL;
}

void weft__hook_fd_disown(int fd)
{
    struct weft__owned *o = weft__owned_close_begin(fd);
    if (o)
        weft__owned_close_end(o, true);
}

void weft__owned_fork_child(void)
{
    atomic_store_explicit(&page_lock, 0, memory_order_relaxed);   /* one thread here */
    for (unsigned i = 0; i < STRIPES; i++)
        atomic_store_explicit(&stripe[i], 0, memory_order_relaxed);
    for (unsigned p = 0; p < PAGES; p++) {
        _Atomic(struct weft__owned *) *page = atomic_load_explicit(&pages[p], memory_order_relaxed);
        for (unsigned i = 0; page && i < PAGE; i++) {
            struct weft__owned *o = atomic_exchange_explicit(&page[i], NULL, memory_order_relaxed);
            if (o) {
                /* The parent's threads, which held the other references,
                 * are not here: the record is the child's alone. */
                free(o->q);
                free(o);
            }
        }
    }
}

/* ---- what the ring's owner reports (io/uring.c) --------------------------------- */

/* Appends n bytes to o's queue. Holds o->lock. Returns false without memory. */
static bool append(struct weft__owned *o, const void *data, size_t n)
{
    if (o->head + o->len + n > o->cap) {
        if (o->len + n <= o->cap && o->head) {
            memmove(o->q, o->q + o->head, o->len);
        } else {
            size_t cap = o->cap ? o->cap : QUEUE_MIN;
            while (cap < o->len + n)
                cap *= 2;
            char *q = malloc(cap);
            if (!q)
                return false;
            if (o->len)
                memcpy(q, o->q + o->head, o->len);
            free(o->q);
            o->q = q;
            o->cap = cap;
        }
        o->head = 0;
    }
    memcpy(o->q + o->head + o->len, data, n);
    o->len += n;
    return true;
}

bool weft__owned_received(struct weft__owned *o, int32_t res, const void *data, bool more, bool *woke)
{
    weft__ilock(&o->lock);
    if (res > 0) {
        if (!append(o, data, (size_t)res) && !o->err)
            o->err = -ENOMEM;   /* those bytes are lost: the stream ends with the error */
    } else if (res == 0) {
        o->eof = true;
    } else if (res == -EAGAIN || res == -ENOMEM || res == -EINTR) {
        o->usual = true;   /* the ring's, not the socket's: reads go to the socket itself */
    } else if (res != -ENOBUFS && res != -ECANCELED && res != -EBADF && res != -EOPNOTSUPP && !o->err) {
        o->err = res;   /* the socket's own: -ECONNRESET, -ETIMEDOUT */
    }
    bool stop = false;
    if (!more) {
        o->armed = NULL;
        o->armed_id = 0;
        o->stopping = false;
    } else if (!o->stopping && (o->len >= WEFT_OWN_QUEUE || o->err)) {
        o->stopping = stop = true;
    }
    *woke = wake_readers(o);
    weft__iunlock(&o->lock);
    if (!more)
        put(o);   /* the receive's reference */
    return stop;
}

/* ---- the readers -------------------------------------------------------------- */

/*
 * Arms a receive for o on w's ring (step 1). Holds o->lock, which it drops
 * and takes again. Returns 0 (armed, or another's arm ended meanwhile: look
 * again) or the backend's negative errno (nothing armed: make the usual call).
 */
static int arm(struct weft__owned *o, struct weft__worker *w)
{
    o->armed = w;
    o->armed_id = 0;
    uint64_t seq = ++o->arm_seq;
    atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);   /* the receive's */
    weft__iunlock(&o->lock);
    uint64_t id = 0;
    int e = w->io->own_arm(w, o, &id);
    weft__ilock(&o->lock);
    if (e) {
        o->armed = NULL;
        atomic_fetch_sub_explicit(&o->refs, 1, memory_order_relaxed);   /* the caller holds another */
        wake_readers(o);   /* those who waited for this arm: to arm or make the usual call */
        return e;
    }
    if (o->arm_seq == seq && o->armed == w) {
        o->armed_id = id;
        if (o->closed)
            stop(o);   /* closed while we armed, perhaps before the close counted this ring */
        wake_readers(o);   /* a poll waiting to stop it can now name it */
    }
    return 0;
}

/* Asks the ring holding o's receive to cancel it (for a wait that needs the
 * socket's own readiness). Holds o->lock. */
static void stop(struct weft__owned *o)
{
    if (o->armed && o->armed_id && !o->stopping && weft__owned_stop(o->armed, o->armed_id) == 0)
        o->stopping = true;
}

/* Waits on o's readers (step 2). Holds o->lock, drops it while waiting and
 * takes it again. Returns 1 (look again) or the wait's negative result. */
static int32_t wait_readers(struct weft__owned *o)
{
    struct reader n;
    weft__waiter_init(&n.w);
    weft__waiter_why(&n.w, WEFT__WHY_READ, o->fd);
    weft__wl_push(&o->readers, &n.node, false);
    weft__iunlock(&o->lock);
    int32_t r = weft__wait(&n.w);
    weft__ilock(&o->lock);
    if (r < 0 && n.node.linked)
        weft__wl_remove(&o->readers, &n.node);
    return r;
}

/* Copies up to n queued bytes, from `skip` bytes into the queue, into iov
 * from `at` bytes into it. Holds o->lock. */
static void copy_out(const struct weft__owned *o, size_t skip, const struct iovec *iov, size_t iovcnt,
                     size_t at, size_t n)
{
    const char *src = o->q + o->head + skip;
    for (size_t i = 0; i < iovcnt && n; i++) {
        if (at >= iov[i].iov_len) {
            at -= iov[i].iov_len;
            continue;
        }
        size_t k = iov[i].iov_len - at < n ? iov[i].iov_len - at : n;
        memcpy((char *)iov[i].iov_base + at, src, k);
        src += k;
        n -= k;
        at = 0;
    }
}

/* Takes n bytes off o's queue; a drained queue larger than its first
 * allocation is given back. Holds o->lock. */
static void consume(struct weft__owned *o, size_t n)
{
    o->head += n;
    o->len -= n;
    if (!o->len) {
        o->head = 0;
        if (o->cap > QUEUE_MIN) {
            free(o->q);
            o->q = NULL;
            o->cap = 0;
        }
    }
}

/* The usual call of a, a read of o's socket itself, under the claim that
 * read_ahead takes: while one reader reads the socket, no other does, so a
 * reader's bytes never come after those another read ahead into the queue
 * and takes later (a reader's reads go forward in the stream, as on the
 * socket). Holds o->lock, which it drops for the call and takes again.
 * Returns the call's result. */
static ssize_t usual_read(struct weft__owned *o, const struct weft__io_op *a)
{
    o->reading = true;
    weft__iunlock(&o->lock);
    ssize_t r = weft__io_usual(a);
    weft__ilock(&o->lock);
    o->reading = false;
    wake_readers(o);
    return r;
}

/* Whether a reader on w (NULL: a plain thread) may arm o's receive. Holds
 * o->lock. */
static bool can_arm(const struct weft__owned *o, const struct weft__worker *w)
{
    return w && w->io->own_arm && !o->usual && !o->reading && !o->polling;
}

/* Whether a reader on w, which cannot arm a receive, may read the socket
 * into o's queue instead (read_ahead): a coroutine's plain read of fewer
 * bytes than the queue's first allocation, with no flag that would need the
 * socket itself. A larger read is short as often as the queue's would be, and
 * is not copied twice. Holds o->lock. */
static bool can_read_ahead(const struct weft__owned *o, const struct weft__worker *w,
                           const struct weft__io_op *a, size_t want)
{
    return w && !w->io->own_arm && !o->usual && !o->reading && !o->polling && want < QUEUE_MIN &&
           (!weft__io_has_msg_flags(a) || a->flags == 0) &&
           !(a->kind == WEFT__IO_RECVMSG && a->msg->msg_controllen);   /* ancillary data: the socket's */
}

/* Whether o has room for a read ahead: its queue's first allocation, made
 * here if it is not. Holds o->lock. */
static bool queue_ready(struct weft__owned *o)
{
    if (!o->q && (o->q = malloc(QUEUE_MIN)) != NULL)
        o->cap = QUEUE_MIN;
    return o->q != NULL;
}

/*
 * The epoll backend's read of a descriptor handed over whose queue is empty,
 * with no receive armed and the socket unclaimed (step 1): one recv of the
 * whole queue, more than the reader asked for, into the queue, by the
 * reading coroutine. The reader takes its bytes from there, and the reads
 * after it take the rest. Why: a read that gets all it asked for leaves the
 * backend unsure that the socket is empty, and the next read then calls recv
 * once more before it waits, to find nothing (io/epoll.c, emptied); a server
 * that reads exactly what its framing says is missing pays that call on
 * every request. A recv larger than what came is short, which tells the
 * backend that the socket is empty (`weft-bench server` with
 * WEFT_BENCH_OWN=1, docs/benchmarks.md). Holds o->lock, which it drops while
 * it reads and takes again. Returns the bytes queued, 0 at the end of the
 * stream, or the call's negative errno.
 */
static ssize_t read_ahead(struct weft__owned *o)
{
    /* Nobody else moves or frees the queue while `reading` is set: it is
     * empty, so no reader consumes from it, and no receive is armed to
     * append to it (can_arm). */
    o->reading = true;
    struct weft__io_op r = { .kind = WEFT__IO_RECV, .fd = o->fd, .buf = o->q, .len = o->cap };
    weft__iunlock(&o->lock);
    ssize_t n = weft__io_usual(&r);
    weft__ilock(&o->lock);
    o->reading = false;
    if (n > 0) {
        o->head = 0;
        o->len = (size_t)n;
    }
    wake_readers(o);   /* those who waited for this read: to take bytes or read themselves */
    return n;
}

ssize_t weft__owned_io(const struct weft__io_op *a, bool *usual)
{
    *usual = false;
    struct weft__owned *o = get(a->fd);
    int flags = weft__io_has_msg_flags(a) ? a->flags : 0;
    if (!o || (flags & (MSG_OOB | MSG_ERRQUEUE))) {
        if (o)
            put(o);
        *usual = true;   /* not handed over, or for the socket itself */
        return 0;
    }
    struct weft__worker *w = weft__io_coroutine();
    if (w && weft__io_cancelled(w)) {
        put(o);
        return -ECANCELED;
    }
    struct iovec one = { a->buf, a->len };
    const struct iovec *iov = &one;
    size_t iovcnt = 1;
    if (a->kind == WEFT__IO_READV) {
        iov = a->iov;
        iovcnt = (size_t)a->iovcnt;
    } else if (a->kind == WEFT__IO_RECVMSG) {
        iov = a->msg->msg_iov;
        iovcnt = a->msg->msg_iovlen;
    }
    size_t want = 0;
    for (size_t i = 0; i < iovcnt; i++)
        want += iov[i].iov_len;   /* the callers checked the sum */
    if (!want && (a->kind == WEFT__IO_READ || a->kind == WEFT__IO_READV)) {
        put(o);
        return 0;   /* read(2) of nothing returns at once; recv(2) of nothing waits for a byte */
    }
    bool peek = flags & MSG_PEEK, all = (flags & MSG_WAITALL) && !(flags & MSG_DONTWAIT);
    size_t got = 0;
    ssize_t r;
    weft__ilock(&o->lock);
    for (;;) {
        if (o->closed) {
            r = got && !peek ? (ssize_t)got : -EBADF;   /* what a MSG_WAITALL took is the caller's */
            break;
        }
        size_t k = o->len < want - got ? o->len : want - got;
        if (peek) {
            got = k;   /* from the front again, each time */
            if (!(flags & MSG_TRUNC))
                copy_out(o, 0, iov, iovcnt, 0, got);
        } else if (k) {
            if (!(flags & MSG_TRUNC))
                copy_out(o, 0, iov, iovcnt, got, k);
            consume(o, k);
            got += k;
        }
        if ((got == want && (want || o->len)) || (got && !all)) {
            r = (ssize_t)got;
            break;
        }
        if (o->err || o->eof) {
            r = got ? (ssize_t)got : o->err;   /* 0 at the end */
            if (!got && o->err) {
                o->err = 0;
                o->eof = true;   /* an error is reported once, then the end, as the socket does */
            }
            break;
        }
        if (!o->armed && !o->reading) {
            w = weft__io_coroutine();   /* a coroutine may have moved while it waited */
            /* MSG_DONTWAIT with nothing queued or armed: the socket has it
             * all, and arming would answer -EAGAIN where it has bytes. */
            int e = can_arm(o, w) && !(flags & MSG_DONTWAIT) ? arm(o, w) : -EOPNOTSUPP;
            if (!e || o->closed)
                continue;   /* armed, or another's arm ended; or closed while we armed */
            if (!got && can_read_ahead(o, w, a, want) && queue_ready(o)) {
                r = read_ahead(o);
                if (r > 0)
                    continue;   /* queued: take it */
                break;          /* the end, or the call's error */
            }
            if (!got) {
                /* Nothing queued, nothing armed: the socket has it all. */
                r = usual_read(o, a);
                weft__iunlock(&o->lock);
                put(o);
                return r;
            }
            r = (ssize_t)got;   /* a MSG_WAITALL that the queue began: the socket has the rest */
            *usual = !peek;
            break;
        }
        if (flags & MSG_DONTWAIT) {
            r = got ? (ssize_t)got : -EAGAIN;
            break;
        }
        int32_t res = wait_readers(o);
        if (res < 0) {
            r = got && !peek ? (ssize_t)got : res;
            break;
        }
    }
    weft__iunlock(&o->lock);
    put(o);
    if (r >= 0 && a->kind == WEFT__IO_RECVMSG) {
        a->msg->msg_namelen = 0;     /* a connected stream's, as recvmsg(2) */
        a->msg->msg_controllen = 0;  /* nothing comes through the queue but bytes */
        a->msg->msg_flags = 0;
    }
    return r;
}

int weft__owned_poll(int fd, short events, bool *usual, struct weft__owned **held)
{
    *usual = true;
    *held = NULL;
    if (!(events & POLLIN))
        return 0;
    struct weft__owned *o = get(fd);
    if (!o)
        return 0;
    *usual = false;
    struct weft__worker *w = weft__io_coroutine();
    if (w && weft__io_cancelled(w)) {
        put(o);
        return -ECANCELED;
    }
    short others = events & (POLLOUT | POLLPRI);
    int r;
    weft__ilock(&o->lock);
    for (;;) {
        if (o->closed) {
            r = -EBADF;
            break;
        }
        if (o->len || o->eof || o->err) {
            weft__iunlock(&o->lock);
            put(o);
            r = weft__poll_now(fd, (short)(events & ~POLLIN));   /* the hang-up and error bits too */
            return r < 0 ? r : (r | POLLIN);
        }
        if (others && o->armed) {
            /* Ready for the rest already? Else the receive must go, so that
             * the socket's own readiness says when data comes. */
            weft__iunlock(&o->lock);
            r = weft__poll_now(fd, others);
            weft__ilock(&o->lock);
            if (r)
                break;
            stop(o);
        } else if (o->reading && !others) {
            /* Another reader reads the socket: what it reads ahead comes
             * to the queue, where the socket's readiness would not show it
             * (step 2). Wait for its end, and look again. With POLLOUT or
             * POLLPRI too, the socket is asked (below): that read may last
             * as long as its peer is silent. */
        } else if (!o->armed) {
            w = weft__io_coroutine();   /* as in weft__owned_io */
            if (others || !can_arm(o, w) || arm(o, w) != 0) {
                if (o->closed)
                    continue;
                /* Nothing queued, armed or claimed: the socket's readiness
                 * is whole while no read ahead starts (step 6). */
                o->polling++;
                weft__iunlock(&o->lock);
                *usual = true;
                *held = o;   /* and its reference, until weft__owned_poll_done */
                return 0;
            }
            continue;
        }
        int32_t res = wait_readers(o);
        if (res < 0) {
            r = res;
            break;
        }
    }
    weft__iunlock(&o->lock);
    put(o);
    return r;
}

void weft__owned_poll_done(struct weft__owned *o)
{
    weft__ilock(&o->lock);
    o->polling--;
    weft__iunlock(&o->lock);
    put(o);
}

void weft__owned_dropped(struct weft__owned *o)
{
    weft__ilock(&o->lock);
    o->armed = NULL;
    o->armed_id = 0;
    o->stopping = false;
    wake_readers(o);   /* to arm anew where they can, or make the usual call */
    weft__iunlock(&o->lock);
    put(o);
}
