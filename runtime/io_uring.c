/*
 * The io_uring backend: one ring per worker.
 *
 * A coroutine fills a submission queue entry on the ring of the worker it runs
 * on and parks (weft__ring_call). Submissions are batched: the worker submits
 * what its coroutines queued, and reaps completions, in weft__ring_poll(),
 * which the scheduler calls when it runs out of runnable tasks and every
 * FAIRNESS_TICKS schedules, so IO never waits behind a long run of
 * compute-bound coroutines. Each completion claims the request's waiter, and
 * the coroutine becomes runnable on the reaping worker (whence it may be
 * stolen).
 *
 * Rings are created by weft_rt_create with IORING_SETUP_R_DISABLED and enabled
 * by the worker thread itself, so that IORING_SETUP_SINGLE_ISSUER names the
 * worker; DEFER_TASKRUN then runs completion work only when the worker asks
 * for events, never by interrupting it. Older kernels get COOP_TASKRUN, or no
 * flags.
 *
 * A parked worker with requests in flight sleeps in io_uring_enter, waiting
 * for a completion; then its ring holds a read of the worker's eventfd, which
 * wakers write after setting the worker's wake word (sched.c, step c of the
 * park protocol). A parked worker with nothing in flight sleeps on its futex,
 * which is cheaper to wake.
 *
 * Request memory. A request (struct weft__ioreq) lives in the coroutine's
 * frame, and its address is the entry's user_data. The coroutine waits with
 * weft__wait_nointr: nothing but the completion can end the wait, so the frame
 * outlives the kernel's last use of it.
 *   - A deadline is a linked timeout (IORING_OP_LINK_TIMEOUT, absolute, on the
 *     CLOCK_MONOTONIC clock of weft_now). The kernel copies its timespec at
 *     submission and its completion carries the IGNORE tag, so it needs no
 *     memory of ours. A request cut short by it completes with -ECANCELED,
 *     which is reported as -ETIMEDOUT.
 *   - Cancellation. Only the ring's owner may submit to it, so weft_cancel()
 *     queues a note on the owner's inbox and writes its eventfd; the owner
 *     submits IORING_OP_ASYNC_CANCEL for the request. The note holds a
 *     reference to the task's handle, but the task may have finished since,
 *     and another task may have a request at the same address on the stack
 *     it gave back: so the owner cancels only if the task's io_req still
 *     names the request. That request cannot complete meanwhile, as only the
 *     owner reaps it; a request of the same task at the same address later is
 *     one that cancellation, being sticky, wants cancelled anyway.
 *   - Closing. A request holds its own reference to the file, so close(2)
 *     alone would leave a coroutine waiting on a closed descriptor forever.
 *     Each ring counts, per descriptor, its requests in flight (written by
 *     the owner alone, read by anyone). weft_close() asks each ring that has
 *     some on the descriptor to cancel them all (IORING_ASYNC_CANCEL_FD, which
 *     matches the file, not the number), through the same inbox, and closes
 *     the descriptor at once; the rings cancel through a duplicate that the
 *     last of them closes, so a new file given the same number meanwhile is
 *     never touched. A request cut short so reports -EBADF.
 */
#include "io.h"

#if WEFT_HAVE_URING

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <liburing.h>

#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#else
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#define RUNNING_ON_VALGRIND 0
#endif

#define TAG_IGNORE ((uint64_t)0)   /* link timeouts and cancel requests */
#define TAG_WAKE   ((uint64_t)1)   /* the eventfd read */
#define TAG_CLOSE  ((uint64_t)2)   /* or'ed into a close_ref's address: its cancel */

/* Descriptors below FD_PAGES * FD_PAGE have their requests counted. */
#define FD_PAGE  4096u
#define FD_PAGES 256u

struct close_ref {             /* one weft_close() on several rings */
    _Atomic unsigned left;     /* rings that have not finished cancelling */
    int              fd;       /* a duplicate of the closed descriptor */
};

struct cancel_note {
    struct cancel_note *next;
    weft_task          *task;       /* holds a reference; NULL for a close */
    uint64_t            user_data;  /* the request to cancel */
    struct close_ref   *close;      /* or: every request on this file */
};

struct weft__ring {
    struct io_uring     ring;
    int                 efd;          /* written by wakers */
    uint64_t            efd_buf;      /* the eventfd read's target */
    bool                efd_armed;    /* a read of efd is queued */
    unsigned            queued;       /* entries not yet submitted; the owner */
    unsigned            inflight;     /* requests whose completion is not reaped; the owner */
    pthread_mutex_t     inbox_lock;
    struct cancel_note *inbox;        /* under inbox_lock */
    _Atomic uint32_t    inbox_len;    /* a hint, so the owner looks only when needed */
    /* Requests in flight per descriptor, in pages made on first use. Only the
     * owner writes; weft_close() reads. `uncounted`: a page could not be made. */
    _Atomic(_Atomic uint32_t *) waits[FD_PAGES];
    _Atomic bool        uncounted;
};

static void close_ref_done(struct close_ref *c)
{
    if (atomic_fetch_sub_explicit(&c->left, 1, memory_order_acq_rel) == 1) {
        close(c->fd);
        free(c);
    }
}

/* The owner: n more (or fewer) requests in flight on fd. */
static void count_waits(struct weft__ring *r, int fd, int n)
{
    if (fd < 0)
        return;
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

/* Any thread: whether r may have requests in flight on fd. */
static bool waits_on(struct weft__ring *r, int fd)
{
    if ((unsigned)fd >= FD_PAGE * FD_PAGES || atomic_load_explicit(&r->uncounted, memory_order_relaxed))
        return true;
    _Atomic uint32_t *page = atomic_load_explicit(&r->waits[fd / FD_PAGE], memory_order_acquire);
    return page && atomic_load_explicit(&page[fd % FD_PAGE], memory_order_relaxed) != 0;
}

int weft__ring_create(struct weft__ring **out, unsigned entries)
{
    struct weft__ring *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    static const unsigned flag_sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        0,
    };
    int err = -EINVAL;
    for (size_t i = 0; i < sizeof flag_sets / sizeof flag_sets[0]; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = flag_sets[i] | IORING_SETUP_R_DISABLED;
        err = io_uring_queue_init_params(entries, &r->ring, &p);
        if (err != -EINVAL)
            break;   /* -EINVAL: flags this kernel does not know; anything else is final */
    }
    if (!err && (err = io_uring_ring_dontfork(&r->ring)) != 0)
        io_uring_queue_exit(&r->ring);   /* a child of fork() must not map the rings (sched.c, fork) */
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
    *out = r;
    return 0;
}

void weft__ring_destroy(struct weft__ring *r)
{
    if (!r)
        return;
    for (struct cancel_note *n = r->inbox, *next; n; n = next) {
        next = n->next;
        if (n->close)
            close_ref_done(n->close);
        else
            weft__task_release(n->task);
        free(n);
    }
    for (unsigned i = 0; i < FD_PAGES; i++)
        free((void *)atomic_load_explicit(&r->waits[i], memory_order_relaxed));
    io_uring_queue_exit(&r->ring);
    close(r->efd);
    pthread_mutex_destroy(&r->inbox_lock);
    free(r);
}

int weft__ring_enable(struct weft__ring *r)
{
    /* The system call itself: Debian's liburing 2.3 declares
     * io_uring_enable_rings() but does not export it. */
    long e = syscall(__NR_io_uring_register, r->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    return e < 0 ? -errno : 0;
}

/* An empty entry, submitting what is queued if the queue is full. The owner. */
/* An entry to fill, with room for `room` - 1 more after it (submitting what
 * is queued to make room). */
static struct io_uring_sqe *get_sqe_room(struct weft__ring *r, unsigned room)
{
    while (io_uring_sq_space_left(&r->ring) < room) {
        if (io_uring_submit(&r->ring) >= 0)
            r->queued = 0;
    }
    r->queued++;
    return io_uring_get_sqe(&r->ring);
}

static struct io_uring_sqe *get_sqe(struct weft__ring *r)
{
    return get_sqe_room(r, 1);
}

static void arm_wake_read(struct weft__ring *r)
{
    if (r->efd_armed)
        return;
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_read(sqe, r->efd, &r->efd_buf, sizeof r->efd_buf, 0);
    io_uring_sqe_set_data64(sqe, TAG_WAKE);
    r->efd_armed = true;
}

/* Queues async cancels for the notes in the inbox. The owner. */
static void take_inbox(struct weft__ring *r)
{
    pthread_mutex_lock(&r->inbox_lock);
    struct cancel_note *n = r->inbox;
    r->inbox = NULL;
    atomic_store_explicit(&r->inbox_len, 0, memory_order_relaxed);   /* under inbox_lock */
    pthread_mutex_unlock(&r->inbox_lock);
    while (n) {
        struct cancel_note *next = n->next;
        if (n->close) {
            /* Its completion, reaped like a request's, releases the duplicate. */
            struct io_uring_sqe *sqe = get_sqe(r);
            io_uring_prep_cancel_fd(sqe, n->close->fd, IORING_ASYNC_CANCEL_ALL);
            io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)n->close | TAG_CLOSE);
            r->inflight++;
            free(n);
            n = next;
            continue;
        }
        if (atomic_load_explicit(&n->task->io_req, memory_order_relaxed) == n->user_data) {
            struct io_uring_sqe *sqe = get_sqe(r);
            io_uring_prep_cancel64(sqe, n->user_data, 0);
            io_uring_sqe_set_data64(sqe, TAG_IGNORE);
        }
        weft__task_release(n->task);
        free(n);
        n = next;
    }
}

/* Claims the waiters of the completions in the queue. The owner. */
static bool reap(struct weft__ring *r)
{
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
        if (tag & TAG_CLOSE) {
            close_ref_done((struct close_ref *)(uintptr_t)(tag & ~TAG_CLOSE));
            continue;
        }
        struct weft__ioreq *q = (struct weft__ioreq *)(uintptr_t)tag;
        q->res = cqe->res;
        count_waits(r, q->fd, -1);
        weft__wake(&q->wt, 1);   /* the coroutine becomes runnable here */
        woke = true;
    }
    io_uring_cq_advance(&r->ring, seen);
    return woke;
}

/*
 * Whether completions wait in the kernel for us to enter it: deferred task
 * work (DEFER_TASKRUN runs it only when we ask for events) or an overflowed
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

bool weft__ring_poll(struct weft__worker *w)
{
    struct weft__ring *r = w->ring;
    if (WEFT__UNLIKELY(atomic_load_explicit(&r->inbox_len, memory_order_relaxed)))
        take_inbox(r);
    if (!r->queued && !r->inflight)
        return false;
    if (r->queued || (!io_uring_cq_ready(&r->ring) && kernel_has_completions(r))) {
        if (io_uring_submit_and_get_events(&r->ring) >= 0)
            r->queued = 0;
    }
    return reap(r);
}

bool weft__ring_busy(struct weft__worker *w)
{
    struct weft__ring *r = w->ring;
    return r->inflight || r->queued || atomic_load_explicit(&r->inbox_len, memory_order_relaxed);
}

bool weft__ring_sleep(struct weft__worker *w, uint64_t until)
{
    struct weft__ring *r = w->ring;
    if (atomic_load_explicit(&r->inbox_len, memory_order_relaxed))
        take_inbox(r);
    arm_wake_read(r);
    /* Valgrind (3.19) keeps its one big lock across io_uring_enter, so a
     * worker asleep in it would stop every other thread, the one that would
     * wake it included: there it sleeps a millisecond at a time. */
    uint64_t limit = RUNNING_ON_VALGRIND ? 1000000u : UINT64_MAX;
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
    return reap(r);
}

void weft__ring_kick(struct weft__ring *r)
{
    uint64_t one = 1;
    while (write(r->efd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

/* Any thread: hands n to r's owner, waking it if it sleeps. */
static void post_note(struct weft__ring *r, struct cancel_note *n)
{
    pthread_mutex_lock(&r->inbox_lock);
    n->next = r->inbox;
    r->inbox = n;
    atomic_store_explicit(&r->inbox_len, 1, memory_order_relaxed);   /* under inbox_lock */
    pthread_mutex_unlock(&r->inbox_lock);
    weft__ring_kick(r);   /* a sleeping owner wakes; a busy one sees the hint */
}

struct io_uring_sqe *weft__ring_sqe(struct weft__worker *w)
{
    /* Room for the request and its linked timeout, so that taking the second
     * entry never submits the first alone, cut from its link. */
    return get_sqe_room(w->ring, 2);
}

int32_t weft__ring_call(struct weft__worker *w, struct io_uring_sqe *sqe, struct weft__ioreq *q)
{
    struct weft__ring *r = w->ring;
    weft_task *t = w->current;
    q->wt = (struct weft__waiter){ .task = t };
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)q);
    q->fd = sqe->flags & IOSQE_FIXED_FILE ? -1 : sqe->fd;
    count_waits(r, q->fd, 1);

    /* Published before the cancelled flag is read; weft_cancel sets the flag
     * before it reads these (a store-load pair on each side, seq_cst). */
    atomic_store_explicit(&t->io_owner, w, memory_order_relaxed);
    atomic_store_explicit(&t->io_req, (uintptr_t)q, memory_order_seq_cst);
    bool cancelled = atomic_load_explicit(&t->cancelled, memory_order_seq_cst);
    if (cancelled) {
        io_uring_prep_nop(sqe);   /* already queued: turn it into nothing */
        io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)q);
    } else if (t->deadline) {
        /* In q, which lives until the completion is reaped: the kernel reads
         * it whenever the batch is submitted. */
        q->ts = (struct __kernel_timespec){
            .tv_sec = (long long)(t->deadline / 1000000000u),
            .tv_nsec = (long long)(t->deadline % 1000000000u),
        };
        sqe->flags |= IOSQE_IO_LINK;
        struct io_uring_sqe *lt = get_sqe(r);   /* weft__ring_sqe left room: never submits */
        io_uring_prep_link_timeout(lt, &q->ts, IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(lt, TAG_IGNORE);
    }
    r->inflight++;
    weft__wait_nointr(&q->wt);
    atomic_store_explicit(&t->io_req, 0, memory_order_relaxed);
    if (cancelled)
        return -ECANCELED;
    if (q->res != -ECANCELED)
        return q->res;
    /* Cut short: by weft_cancel, by the linked timeout at the deadline, or
     * by weft_close of its descriptor. */
    if (atomic_load_explicit(&t->cancelled, memory_order_relaxed))
        return -ECANCELED;
    return t->deadline && weft_now() >= t->deadline ? -ETIMEDOUT : -EBADF;
}

void weft__ring_close_fd(weft_rt *rt, int fd)
{
    struct close_ref *c = NULL;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct weft__ring *r = rt->workers[i]->ring;
        if (!r || !waits_on(r, fd))
            continue;
        if (!c) {
            c = malloc(sizeof *c);
            int dup = c ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
            if (dup < 0) {
                free(c);
                return;   /* no memory or no descriptor left: the waiters stay until their IO ends */
            }
            c->fd = dup;
            atomic_init(&c->left, 1);   /* ours, dropped below */
        }
        struct cancel_note *note = malloc(sizeof *note);
        if (!note)
            continue;   /* that ring's waiters stay until their IO ends */
        *note = (struct cancel_note){ .close = c };
        atomic_fetch_add_explicit(&c->left, 1, memory_order_relaxed);   /* before the owner can see it */
        post_note(r, note);
    }
    if (c)
        close_ref_done(c);
}

int weft__ring_cancel(weft_task *t)
{
    uintptr_t req = atomic_load_explicit(&t->io_req, memory_order_seq_cst);   /* after the flag: see weft__ring_call */
    if (!req)
        return 0;
    struct weft__worker *owner = atomic_load_explicit(&t->io_owner, memory_order_relaxed);
    struct cancel_note *n = malloc(sizeof *n);
    if (!n)
        return -ENOMEM;
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);   /* the caller holds the handle */
    *n = (struct cancel_note){ .task = t, .user_data = req };
    post_note(owner->ring, n);
    return 0;
}

void weft__ring_mark_read(void *buf, ssize_t n)
{
    if (n > 0)
        VALGRIND_MAKE_MEM_DEFINED(buf, (size_t)n);
}

#endif /* WEFT_HAVE_URING */
