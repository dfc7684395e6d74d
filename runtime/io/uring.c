/* SPDX-License-Identifier: MIT */
/*
 * The io_uring backend: one ring per worker. This file keeps the rings, the
 * requests in flight and weft_close()'s protocol; io/uringops.c turns each
 * operation into its request, and io/uringown.c arms the receives of
 * descriptors handed to weft (io/uring.h: what the three share).
 *
 * A coroutine fills a submission queue entry on the ring of the worker it runs
 * on and parks (weft__ring_call). Submissions are batched: the worker submits
 * what its coroutines queued, and reaps completions, in ring_poll(),
 * which the scheduler calls when it runs out of runnable tasks and every
 * FAIRNESS_TICKS schedules, so IO never waits behind a long run of
 * compute-bound coroutines. Each completion claims the request's waiter, and
 * the coroutine becomes runnable on the reaping worker (whence it may be
 * stolen).
 *
 * Rings are created by weft_rt_create with IORING_SETUP_R_DISABLED and enabled
 * by the worker thread itself. They use COOP_TASKRUN: the kernel runs a
 * completion's task work at the worker's next transition between user and
 * kernel mode (at the latest its next timer interrupt), without an IPI, and
 * wakes it from an interruptible sleep. Not DEFER_TASKRUN, which would run
 * that work only when the worker asks for events, and not SINGLE_ISSUER
 * (which DEFER_TASKRUN requires): a worker that stalls in code weft cannot
 * see would then hold its completions, and only it could submit what its
 * coroutines queued. With COOP_TASKRUN the completions reach the shared
 * queue, and the monitor, holding the stalled worker excluded, submits and
 * reaps on its ring as the worker would (core/monitor.c). Older kernels
 * get no flags.
 *
 * The ring's state that "the owner" touches below (its request table, its
 * counts, its queues' heads) is the worker's, or the monitor's while it holds
 * that worker excluded: never both at once.
 *
 * A parked worker with requests in flight sleeps in io_uring_enter, waiting
 * for a completion; then its ring holds a read of the worker's eventfd, which
 * wakers write after setting the worker's wake word (core/search.c, step c of the
 * park protocol). A parked worker with nothing in flight sleeps on its futex,
 * which is cheaper to wake. A handed-over descriptor's receive stays in
 * flight while the descriptor is read at all, so a worker whose ring has one
 * always sleeps in the ring: its wakers write the eventfd.
 *
 * Request memory. A request (struct weft__ioreq) lives in the coroutine's
 * frame. The coroutine waits with weft__wait_nointr: nothing but the
 * completion can end the wait, so the frame outlives the kernel's last use
 * of it.
 *
 * Request identity. The entry's user_data is not the request's address: a
 * coroutine that loops places each request at the same address, and a
 * cancel names its request by user_data. A cancel queued for a request (by
 * its deadline or weft_cancel) may reach the kernel after the request
 * completed, and after we reaped the completion and the coroutine queued its
 * next request at the same address, which would then be cancelled for
 * nothing. So each ring keeps a table of its requests in flight, owned by
 * the ring's owner alone; a request's identity is its slot in the low 32
 * bits and the slot's generation, bumped each time the slot is taken and
 * never 0, in the high ones. An identity therefore never equals a tag
 * (below), and repeats only after 2^32 uses of one slot, while a stale one
 * lives only until its cancel is submitted. The table grows by doubling;
 * slots are found by index, so they may move.
 *   - Deadlines. A request made with a deadline goes on its ring's heap of
 *     deadlines (base/heap.h), which only the owner touches, and leaves it
 *     when its completion is reaped. The owner looks at the heap's earliest
 *     deadline whenever it polls the ring, and sleeps in the ring no longer
 *     than until it; a request whose deadline has passed gets an
 *     IORING_OP_ASYNC_CANCEL for its identity. A request cut short by it
 *     completes with -ECANCELED, which is reported as -ETIMEDOUT once the
 *     deadline has passed; one that completed first keeps its result. While
 *     the owner stalls, the monitor polls for it (`pending` says when a
 *     deadline is due). Rejected: a linked timeout
 *     (IORING_OP_LINK_TIMEOUT) with each request, which needs no look of
 *     ours but arms and cancels a kernel timer under a lock that disables
 *     interrupts, twice per request; almost every deadline is far off when
 *     its request completes (bench/compare/http/ab.sh, docs/benchmarks.md).
 *   - Cancellation. Only the ring's owner submits to it, so weft_cancel()
 *     queues a note with the request's identity on the owner's inbox and
 *     writes its eventfd; the owner submits IORING_OP_ASYNC_CANCEL for that
 *     identity if the task's io_req still holds it. That request cannot
 *     complete meanwhile, as only the owner reaps it.
 *   - A -ECANCELED that none of these explains is passed on as it is, never
 *     turned into another error.
 *
 * Closing. An entry names its descriptor by number, and the kernel looks the
 * number up only when it issues the entry, at submission: an entry still
 * queued when weft_close() returns would reach whatever file is given the
 * number next. A request in flight holds its own reference to the file
 * instead, so close(2) alone would leave its coroutine waiting on a closed
 * descriptor. Each ring counts, per descriptor, its requests queued or in
 * flight (written by the owner alone, read by anyone), and weft_close() of a
 * descriptor that some ring may have requests on goes as follows:
 *   1. It counts those rings and makes one close with a note for each
 *      (weft__ring_close_new); without memory it fails, closing nothing, and
 *      a descriptor that is not open gives -EBADF.
 *   2. It posts the notes to the rings' inboxes (weft__ring_close_post). The
 *      close holds a reference for the closer and one for each note.
 *   3. It puts a tombstone in the descriptor's place (weft__ring_close_end):
 *      dup3() of one process-wide O_PATH descriptor onto the number. That
 *      drops the table's reference to the file at once, so the file is
 *      released once the requests in flight are cancelled, while the number
 *      stays taken. The kernel refuses an O_PATH file to every request
 *      (fget() skips them), so an entry still queued fails with -EBADF. Then
 *      it drops its reference.
 *   4. Each ring's owner, taking its note, marks its requests on the number
 *      as closed, queues an ASYNC_CANCEL for each by identity, and a NOP
 *      tagged CLOSE after them. Entries are consumed in order, so when the
 *      NOP completes everything queued before it has been issued and has
 *      looked its file up: the ring drops its reference. A request cut short
 *      after it was marked reports -EBADF.
 *   5. Whoever drops the last reference closes the number.
 * The number is thus free again only after step 4 on every ring: at the
 * owners' next look at their inboxes, a few microseconds later unless a
 * coroutine computes for long without yielding. A descriptor no ring waits on
 * is closed with close(2) at once. A call on the descriptor that is still
 * being made while weft_close() runs, not yet counted, races with it as a
 * read(2) races with close(2) in another thread.
 *
 * SIGPIPE. A write to a pipe or socket whose reader has gone raises SIGPIPE
 * on the thread that makes it: here the ring's owner, which issues entries
 * at submission and finishes them in its task work (io-wq threads block
 * every signal). Workers block SIGPIPE (io/backend.c), so the signal
 * stays pending on the owner, and reaping a -EPIPE takes it back there.
 */
#include "backend.h"
#include "base/heap.h"
#include "base/sys.h"

#if WEFT_HAVE_URING

#include "uring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The file put in place of a descriptor weft_close() closed while rings
 * still have requests on it: opened once, by the first ring, never closed. */
static _Atomic int tombstone = -1;

/* One weft_close() of a descriptor some rings have requests on: step 1 of
 * the protocol above makes it, step 5 frees it. */
struct weft__ring_close {
    _Atomic unsigned   left;      /* the closer, and each ring that has a note and has not finished */
    int                fd;        /* the number closed; set before any note is posted */
    bool               held;      /* the tombstone holds fd: the last reference closes it; set by
                                   * the closer before it drops its reference */
    unsigned           notes;     /* note[] has this many */
    unsigned           posted;    /* of them posted; only the closer */
    struct weft__ring_note note[];    /* one for each ring */
};

/* w's ring, or NULL where w is on another backend. */
static inline struct weft__ring *ring_of_any(const struct weft__worker *w)
{
    return w->io == &weft__uring ? w->io_state : NULL;
}

/* Drops a reference to c; the last closes the number. Any thread. */
static void close_ref_done(struct weft__ring_close *c)
{
    if (atomic_fetch_sub_explicit(&c->left, 1, memory_order_acq_rel) == 1) {   /* the last sees every write to c */
        if (c->held)
            weft__sys_close(c->fd);
        free(c);
    }
}

/* The owner: n more (or fewer) requests on fd. */
void weft__ring_count_waits(struct weft__ring *r, int fd, int n)
{
    if ((unsigned)fd >= FD_PAGE * FD_PAGES)
        return;   /* none, or beyond the pages: waits_on answers yes for those */
    _Atomic uint32_t *page = atomic_load_explicit(&r->waits[fd / FD_PAGE], memory_order_relaxed);
    if (!page) {
        page = calloc(FD_PAGE, sizeof *page);
        if (!page) {
            atomic_store_explicit(&r->uncounted, true, memory_order_relaxed);
            return;
        }
        atomic_store_explicit(&r->waits[fd / FD_PAGE], page, memory_order_release);   /* pairs with waits_on */
    }
    _Atomic uint32_t *c = &page[fd % FD_PAGE];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + (uint32_t)n,
                          memory_order_relaxed);   /* the owner alone writes it */
}

/* Any thread: whether r may have requests queued or in flight on fd. */
static bool waits_on(struct weft__ring *r, int fd)
{
    if ((unsigned)fd >= FD_PAGE * FD_PAGES || atomic_load_explicit(&r->uncounted, memory_order_relaxed))
        return true;
    _Atomic uint32_t *page = atomic_load_explicit(&r->waits[fd / FD_PAGE], memory_order_acquire);
    return page && atomic_load_explicit(&page[fd % FD_PAGE], memory_order_relaxed) != 0;
}

/* The owner: a free slot for q, on fd, and its identity; 0 without memory. */
uint64_t weft__ring_take_slot(struct weft__ring *r, struct weft__ioreq *q, int fd)
{
    if (!r->free1) {
        uint32_t n = r->nslots ? r->nslots * 2 : 64;
        struct weft__ring_slot *grown = n > r->nslots ? realloc(r->slots, n * sizeof *grown) : NULL;
        if (!grown)
            return 0;
        for (uint32_t i = r->nslots; i < n; i++)
            grown[i] = (struct weft__ring_slot){ .next1 = i + 1 < n ? i + 2 : 0, .fd = -1 };
        r->free1 = r->nslots + 1;
        r->slots = grown;
        r->nslots = n;
    }
    struct weft__ring_slot *s = &r->slots[r->free1 - 1];
    r->free1 = s->next1;
    if (++s->gen == 0)
        s->gen = 1;
    s->q = q;
    s->fd = fd;
    s->closed = false;
    s->own = false;
    s->capped = false;
    return weft__ring_identity(r, s);
}

struct weft__ring_slot *weft__ring_slot_find(struct weft__ring *r, uint64_t id)
{
    uint32_t i = (uint32_t)id;
    return i < r->nslots && r->slots[i].q && r->slots[i].gen == (uint32_t)(id >> 32) ? &r->slots[i] : NULL;
}

/* The owner: the slot of the request a completion names. */
static struct weft__ring_slot *slot_of(struct weft__ring *r, uint64_t id)
{
    struct weft__ring_slot *s = weft__ring_slot_find(r, id);
    weft__check(s != NULL, "an io_uring completion names no request in flight on its ring");
    return s;
}

void weft__ring_put_slot(struct weft__ring *r, struct weft__ring_slot *s)
{
    s->q = NULL;
    s->fd = -1;
    s->next1 = r->free1;
    r->free1 = (uint32_t)(s - r->slots) + 1;
}

/* Opens the tombstone if no ring has yet. Returns 0 or a negative errno. */
static int tombstone_open(void)
{
    if (atomic_load_explicit(&tombstone, memory_order_acquire) >= 0)   /* pairs with the exchange */
        return 0;
    int fd = weft__sys_open("/", O_PATH | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    int none = -1;
    if (!atomic_compare_exchange_strong_explicit(&tombstone, &none, fd, memory_order_acq_rel,
                                                 memory_order_acquire))
        weft__sys_close(fd);   /* another ring's came first */
    return 0;
}

static int ring_create(void **out, unsigned entries)
{
    int err = tombstone_open();   /* now, not when weft_close() needs it and descriptors may have run out */
    if (err)
        return err;
    struct weft__ring *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    static const unsigned flag_sets[] = {
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        0,
    };
    err = -EINVAL;
    for (size_t i = 0; i < sizeof flag_sets / sizeof flag_sets[0]; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = flag_sets[i] | IORING_SETUP_R_DISABLED;
        err = io_uring_queue_init_params(entries, &r->ring, &p);
        if (err != -EINVAL)
            break;   /* -EINVAL: flags this kernel does not know; anything else is final */
    }
    if (!err && !(r->ring.features & IORING_FEAT_EXT_ARG)) {
        /* Before 5.11 liburing makes a timed wait with a timeout request of
         * its own, which stays armed after a wait that ends sooner; a parked
         * worker waits timed whenever a request with a deadline is in
         * flight. Such a kernel gets the epoll backend. */
        io_uring_queue_exit(&r->ring);
        err = -EINVAL;
    }
    if (!err && (err = io_uring_ring_dontfork(&r->ring)) != 0)
        io_uring_queue_exit(&r->ring);   /* a child of fork() must not map the rings (core/runtime.c, fork) */
    if (err) {
        free(r);
        return err;
    }
    r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->efd < 0) {
        err = -errno;
        io_uring_queue_exit(&r->ring);
        free(r);
        return err;
    }
    pthread_mutex_init(&r->inbox_lock, NULL);
    atomic_init(&r->due, UINT64_MAX);
    *out = r;
    return 0;
}

static void ring_destroy(void *state)
{
    struct weft__ring *r = state;
    if (!r)
        return;
    /* Gone with the ring, entries still queued never look their numbers up:
     * the closes waiting for this ring are done with it. */
    weft__ring_own_drain(r);
    io_uring_queue_exit(&r->ring);
    /* First: until a record is disarmed, a stop of its receive may still be
     * posted to the inbox, which is emptied below. */
    weft__ring_own_destroy(r);
    for (struct weft__ring_note *n = r->inbox, *next; n; n = next) {
        next = n->next;
        if (n->close) {
            close_ref_done(n->close);   /* the note is the close's */
        } else {
            if (n->task)
                weft__task_release(n->task);
            free(n);
        }
    }
    for (struct weft__ring_note *n = r->closing, *next; n; n = next) {
        next = n->next;
        close_ref_done(n->close);
    }
    for (unsigned i = 0; i < FD_PAGES; i++)
        free((void *)atomic_load_explicit(&r->waits[i], memory_order_relaxed));
    free(r->slots);
    weft__heap_free(&r->deadlines);
    weft__sys_close(r->efd);
    pthread_mutex_destroy(&r->inbox_lock);
    free(r);
}

/* Enables w's ring on w's thread, which becomes its only submitter. */
static int ring_start(struct weft__worker *w)
{
    struct weft__ring *r = weft__ring_of(w);
    /* The system call itself: Debian's liburing 2.3 declares
     * io_uring_enable_rings() but does not export it. */
    long e = syscall(__NR_io_uring_register, r->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    return e < 0 ? -errno : 0;
}

/* An entry to fill, with room for `room` - 1 more after it (submitting what
 * is queued to make room). The owner. */
static struct io_uring_sqe *get_sqe_room(struct weft__ring *r, unsigned room)
{
    while (io_uring_sq_space_left(&r->ring) < room) {
        if (io_uring_submit(&r->ring) >= 0)
            r->queued = 0;
    }
    r->queued++;
    return io_uring_get_sqe(&r->ring);
}

struct io_uring_sqe *weft__ring_get_sqe(struct weft__ring *r)
{
    return get_sqe_room(r, 1);
}

void weft__ring_cancel_id(struct weft__ring *r, uint64_t id)
{
    struct io_uring_sqe *sqe = weft__ring_get_sqe(r);
    io_uring_prep_cancel64(sqe, id, 0);
    io_uring_sqe_set_data64(sqe, TAG_IGNORE);
}

static void arm_wake_read(struct weft__ring *r)
{
    if (r->efd_armed)
        return;
    struct io_uring_sqe *sqe = weft__ring_get_sqe(r);
    io_uring_prep_read(sqe, r->efd, &r->efd_buf, sizeof r->efd_buf, 0);
    io_uring_sqe_set_data64(sqe, TAG_WAKE);
    r->efd_armed = true;
}

/* Step 4 of the close protocol for the note n. The owner. */
static void cancel_closed(struct weft__ring *r, struct weft__ring_note *n)
{
    int fd = n->close->fd;
    for (uint32_t i = 0; i < r->nslots; i++) {
        struct weft__ring_slot *s = &r->slots[i];
        if (!s->q || s->fd != fd || s->closed)
            continue;
        s->closed = true;
        weft__ring_cancel_id(r, weft__ring_identity(r, s));
    }
    struct io_uring_sqe *sqe = weft__ring_get_sqe(r);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, TAG_CLOSE);
    r->inflight++;
    n->next = NULL;
    if (r->closing_tail)
        r->closing_tail->next = n;
    else
        r->closing = n;
    r->closing_tail = n;
}

/* A close's NOP completed. Whichever it was, every entry queued before the
 * oldest close's NOP has been issued, so that close is done here. The owner. */
static void close_finished(struct weft__ring *r)
{
    struct weft__ring_note *n = r->closing;
    weft__check(n != NULL, "a close's NOP completed on a ring with no close pending");
    r->closing = n->next;
    if (!r->closing)
        r->closing_tail = NULL;
    close_ref_done(n->close);   /* may free n, which is the close's */
}

/* Queues the cancels the notes in the inbox ask for. The owner. */
static void take_inbox(struct weft__ring *r)
{
    pthread_mutex_lock(&r->inbox_lock);
    struct weft__ring_note *n = r->inbox;
    r->inbox = NULL;
    atomic_store_explicit(&r->inbox_len, 0, memory_order_relaxed);   /* under inbox_lock */
    pthread_mutex_unlock(&r->inbox_lock);
    while (n) {
        struct weft__ring_note *next = n->next;
        if (n->close) {
            cancel_closed(r, n);
            n = next;
            continue;
        }
        if (!n->task) {   /* a stop of a handed-over descriptor's receive */
            weft__ring_own_stop_note(r, n->user_data);
            free(n);
            n = next;
            continue;
        }
        /* Identities are unique: a task whose io_req still holds this one
         * still waits for that very request. */
        if (atomic_load_explicit(&n->task->io_req, memory_order_relaxed) == n->user_data)
            weft__ring_cancel_id(r, n->user_data);
        weft__task_release(n->task);
        free(n);
        n = next;
    }
}

/* ---- deadlines: the comment at the top ------------------------------------------ */

static void publish_due(struct weft__ring *r)
{
    atomic_store_explicit(&r->due, weft__heap_next(&r->deadlines),
                          memory_order_relaxed);   /* a hint for the monitor */
}

/* At q's completion. The earliest deadline changes only when q had it. */
static void drop_deadline(struct weft__ring *r, struct weft__ioreq *q)
{
    bool earliest = q->dl == 1;
    weft__heap_remove(&r->deadlines, &q->dl);
    if (earliest)
        publish_due(r);
}

/* Queues a cancel for each request whose deadline has passed. The owner. */
static void cancel_due(struct weft__ring *r)
{
    if (!r->deadlines.n)
        return;
    uint64_t now = weft_now();
    bool fired = false;
    size_t *dl;
    while ((dl = weft__heap_due(&r->deadlines, now))) {
        struct weft__ioreq *q = weft__heap_item(dl, struct weft__ioreq, dl);
        weft__heap_remove(&r->deadlines, dl);
        /* q lives until its completion is reaped, which is not before we return. */
        weft__ring_cancel_id(r, q->id);
        fired = true;
    }
    if (fired)
        publish_due(r);
}

/* Claims the waiters of the completions in the queue. The owner, w. */
static bool reap(struct weft__worker *w)
{
    struct weft__ring *r = weft__ring_of(w);
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    bool woke = false;
    io_uring_for_each_cqe(&r->ring, head, cqe) {
        seen++;
        uint64_t tag = io_uring_cqe_get_data64(cqe);
        if (tag == TAG_IGNORE)
            continue;
        if (tag == TAG_WAKE) {
            r->efd_armed = false;
            continue;
        }
        r->inflight--;
        if (tag == TAG_CLOSE) {
            close_finished(r);
            continue;
        }
        struct weft__ring_slot *s = slot_of(r, tag);
        if (WEFT__UNLIKELY(s->own)) {
            woke |= weft__ring_own_received(r, s, cqe);
            continue;
        }
        struct weft__ioreq *q = s->q;
        int32_t res = cqe->res;
        if (res == -ECANCELED && s->closed)
            res = -EBADF;
        else if (WEFT__UNLIKELY(res == -EPIPE))
            weft__sigpipe_take();   /* raised on this thread, which issued the write */
        q->res = res;
        if (q->dl)
            drop_deadline(r, q);
        weft__ring_count_waits(r, s->fd, -1);
        weft__ring_put_slot(r, s);
        weft__wake(&q->wt, 1);   /* the coroutine becomes runnable here */
        weft__bump(&w->ctr.uring_completed, 1);
        woke = true;
    }
    io_uring_cq_advance(&r->ring, seen);
    return woke;
}

/*
 * Whether completions wait in the kernel for us to enter it: task work not
 * yet run (COOP_TASKRUN runs it at our next transition) or an overflowed
 * completion queue. With TASKRUN_FLAG the kernel says so in the SQ ring's
 * flags, and a worker that polls often (every search round, every fairness
 * tick) need not make a system call to learn that nothing is there. A flag
 * set just after we look is seen at the next poll, and sleeping always
 * enters the kernel.
 */
static bool kernel_has_completions(const struct weft__ring *r)
{
    return !(r->ring.flags & IORING_SETUP_TASKRUN_FLAG) ||
           (IO_URING_READ_ONCE(*r->ring.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW));
}

static bool ring_poll(struct weft__worker *w)
{
    struct weft__ring *r = weft__ring_of(w);
    if (WEFT__UNLIKELY(atomic_load_explicit(&r->inbox_len, memory_order_relaxed)))
        take_inbox(r);
    if (!r->queued && !r->inflight)
        return false;
    cancel_due(r);
    if (r->queued || (!io_uring_cq_ready(&r->ring) && kernel_has_completions(r))) {
        if (io_uring_submit_and_get_events(&r->ring) >= 0)
            r->queued = 0;
    }
    return reap(w);
}

/* The monitor, without the exclusion: whether completions wait in the
 * shared queue. A hint. */
static bool ring_pending(struct weft__worker *w)
{
    struct weft__ring *r = weft__ring_of(w);
    return IO_URING_READ_ONCE(*r->ring.cq.ktail) != IO_URING_READ_ONCE(*r->ring.cq.khead) ||
           atomic_load_explicit(&r->due, memory_order_relaxed) <= weft_now();
}

static bool ring_busy(struct weft__worker *w)
{
    struct weft__ring *r = weft__ring_of(w);
    return r->inflight || r->queued || atomic_load_explicit(&r->inbox_len, memory_order_relaxed);
}

static bool ring_sleep(struct weft__worker *w, uint64_t until)
{
    struct weft__ring *r = weft__ring_of(w);
    if (atomic_load_explicit(&r->inbox_len, memory_order_relaxed))
        take_inbox(r);
    cancel_due(r);
    arm_wake_read(r);
    /* Valgrind (3.19) keeps its one big lock across io_uring_enter, so a
     * worker asleep in it would stop every other thread, the one that would
     * wake it included: there it sleeps a millisecond at a time. */
    uint64_t limit = weft__on_valgrind() ? 1000000u : UINT64_MAX;
    if (weft__heap_next(&r->deadlines) < until)
        until = weft__heap_next(&r->deadlines);
    if (until != UINT64_MAX) {
        uint64_t now = weft_now();
        uint64_t left = until > now ? until - now : 0;
        if (left < limit)
            limit = left;
    }
    int e;
    if (limit == UINT64_MAX) {
        e = io_uring_submit_and_wait(&r->ring, 1);
    } else {
        struct __kernel_timespec ts = {
            .tv_sec = (long long)(limit / 1000000000u),
            .tv_nsec = (long long)(limit % 1000000000u),
        };
        struct io_uring_cqe *cqe;
        e = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts, NULL);
    }
    if (e >= 0 || e == -ETIME)
        r->queued = 0;   /* submitted, whether or not a completion came */
    return reap(w);
}

/* Any thread: wakes r's owner from ring_sleep. */
static void kick(struct weft__ring *r)
{
    uint64_t one = 1;
    while (weft__sys_write(r->efd, &one, sizeof one) == -EINTR)
        ;
}

static void ring_kick(struct weft__worker *w)
{
    kick(weft__ring_of(w));
}

/* Any thread: hands n to r's owner, waking it if it sleeps. */
void weft__ring_post_note(struct weft__ring *r, struct weft__ring_note *n)
{
    pthread_mutex_lock(&r->inbox_lock);
    n->next = r->inbox;
    r->inbox = n;
    atomic_store_explicit(&r->inbox_len, 1, memory_order_relaxed);   /* under inbox_lock */
    pthread_mutex_unlock(&r->inbox_lock);
    kick(r);   /* a sleeping owner wakes; a busy one sees the hint */
}

struct io_uring_sqe *weft__ring_sqe(struct weft__worker *w)
{
    /* The ring is the monitor's while it rescues this worker: wait for it
     * to finish, and keep it off until the request is queued
     * (weft__ring_call). */
    weft__owner_enter(w);
    return weft__ring_get_sqe(weft__ring_of(w));
}

int32_t weft__ring_call(struct weft__worker *w, struct io_uring_sqe *sqe, struct weft__ioreq *q)
{
    struct weft__ring *r = weft__ring_of(w);
    weft_task *t = w->current;
    int fd = sqe->flags & IOSQE_FIXED_FILE ? -1 : sqe->fd;
    uint64_t id = 0;
    q->dl = 0;
    if (WEFT__UNLIKELY((t->deadline && weft__heap_reserve(&r->deadlines) != 0) ||
                       !(id = weft__ring_take_slot(r, q, fd)))) {
        io_uring_prep_nop(sqe);   /* already queued: turn it into nothing */
        io_uring_sqe_set_data64(sqe, TAG_IGNORE);
        weft__owner_leave(w);
        return -ENOMEM;
    }
    q->wt = (struct weft__waiter){ .task = t };
    io_uring_sqe_set_data64(sqe, id);
    weft__bump(&w->ctr.uring_submitted, 1);
    weft__ring_count_waits(r, fd, 1);

    /* Published before the cancelled flag is read; weft_cancel sets the flag
     * before it reads these (a store-load pair on each side, seq_cst). */
    atomic_store_explicit(&t->io_owner, w, memory_order_relaxed);
    atomic_store_explicit(&t->io_req, (uintptr_t)id, memory_order_seq_cst);
    bool cancelled = atomic_load_explicit(&t->cancelled, memory_order_seq_cst);
    if (cancelled) {
        io_uring_prep_nop(sqe);   /* already queued: turn it into nothing */
        io_uring_sqe_set_data64(sqe, id);
    } else if (t->deadline) {
        q->id = id;
        weft__heap_push(&r->deadlines, t->deadline, &q->dl);   /* room reserved above */
        if (q->dl == 1)
            publish_due(r);
    }
    r->inflight++;
    weft__wait_nointr(&q->wt);   /* parks: back in user code, wherever it resumes */
    atomic_store_explicit(&t->io_req, 0, memory_order_relaxed);
    if (cancelled)
        return -ECANCELED;
    if (q->res != -ECANCELED || atomic_load_explicit(&t->cancelled, memory_order_relaxed))
        return q->res;
    return t->deadline && weft_now() >= t->deadline ? -ETIMEDOUT : -ECANCELED;
}

/* ---- weft_close(): the protocol in the comment at the top ---------------------- */

unsigned weft__ring_close_count(weft_rt *rt, int fd)
{
    unsigned n = 0;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct weft__ring *r = ring_of_any(rt->workers[i]);
        n += r && waits_on(r, fd);
    }
    return n;
}

int weft__ring_close_new(struct weft__ring_close **out, int fd, unsigned rings)
{
    int e = weft__sys_fcntl(fd, F_GETFD, 0);
    if (e < 0)
        return e;   /* not open: nothing to close, and no number to hold */
    struct weft__ring_close *c = calloc(1, sizeof *c + rings * sizeof c->note[0]);
    if (!c)
        return -ENOMEM;
    atomic_init(&c->left, 1);   /* the closer's, dropped by weft__ring_close_end */
    c->fd = fd;
    c->notes = rings;
    *out = c;
    return 0;
}

void weft__ring_close_post(weft_rt *rt, struct weft__ring_close *c)
{
    for (unsigned i = 0; i < rt->nworkers && c->posted < c->notes; i++) {
        struct weft__ring *r = ring_of_any(rt->workers[i]);
        if (!r || !waits_on(r, c->fd))
            continue;   /* a ring counted by weft__ring_close_count whose requests ended since */
        struct weft__ring_note *n = &c->note[c->posted++];
        n->close = c;
        atomic_fetch_add_explicit(&c->left, 1, memory_order_relaxed);   /* post_note's lock publishes it */
        weft__ring_post_note(r, n);
    }
}

int weft__ring_close_end(struct weft__ring_close *c)
{
    int err = 0;
    int tomb = atomic_load_explicit(&tombstone, memory_order_acquire);   /* opened before any ring */
    c->held = c->posted && weft__sys_dup3(tomb, c->fd, O_CLOEXEC) == c->fd;   /* before our reference goes */
    if (!c->held) {
        /* No ring waits on it any more, or (the tombstone closed behind our
         * back) the number cannot be held: close it now. The rings still
         * cancel their requests on it. */
        err = weft__sys_close(c->fd);
        if (err == -EINTR)
            err = 0;
    }
    /* With the tombstone in place, the file's flush ran in dup3(), which
     * does not report its error, where close(2) would have (only file
     * systems like NFS report write-back errors there). */
    close_ref_done(c);
    return err;
}

int weft__ring_cancel(weft_task *t)
{
    uintptr_t req = atomic_load_explicit(&t->io_req, memory_order_seq_cst);   /* after the flag: see ring_call */
    if (!req)
        return 0;
    struct weft__worker *owner = atomic_load_explicit(&t->io_owner, memory_order_relaxed);
    struct weft__ring_note *n = malloc(sizeof *n);
    if (!n)
        return -ENOMEM;
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);   /* the caller holds the handle */
    *n = (struct weft__ring_note){ .task = t, .user_data = req };
    weft__ring_post_note(weft__ring_of(owner), n);
    return 0;
}

const struct weft__backend weft__uring = {
    .name    = "io_uring",
    .create  = ring_create,
    .start   = ring_start,
    .destroy = ring_destroy,
    .poll    = ring_poll,
    .busy    = ring_busy,
    .pending = ring_pending,
    .sleep   = ring_sleep,
    .kick    = ring_kick,
    .call    = weft__ring_op,
    .own_arm = weft__ring_own_arm,
    .own_stop = weft__ring_own_stop,
};

#endif /* WEFT_HAVE_URING */
