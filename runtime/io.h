/*
 * Timers and sleeping (runtime/timer.c): what the scheduler needs to know.
 */
#ifndef WEFT_IO_H
#define WEFT_IO_H

#include "internal.h"

#if WEFT_HAVE_URING
#include <linux/time_types.h>   /* struct __kernel_timespec */
#endif

/* One pending timer. Lives in the waiter's frame; on rt's heap while idx != 0. */
struct weft__timer {
    uint64_t             when;    /* weft_now() clock */
    struct weft__waiter *wt;      /* claimed with `result` when due */
    int32_t              result;  /* nonzero */
    size_t               idx;     /* 1-based heap position; 0 = not armed; under the heap lock */
    struct weft__timer  *due_next; /* claimed and due, for the firing worker only */
};

struct weft__timers;   /* a runtime's timer heap */

/* Arms tm on rt's heap. A coroutine of rt. Returns 0 or -ENOMEM. */
int weft__timer_arm(weft_rt *rt, struct weft__timer *tm);
/* Takes tm off the heap if it has not fired. After it returns no worker
 * touches tm or its waiter any more. Whoever armed it. */
void weft__timer_disarm(weft_rt *rt, struct weft__timer *tm);

/* weft_rt_create() and weft_rt_destroy(), the latter once every coroutine has
 * finished. */
int weft__timers_create(struct weft__timers **ts);
void weft__timers_destroy(struct weft__timers *ts);
/* The earliest deadline armed, or UINT64_MAX. Any thread; no lock. */
uint64_t weft__timers_next(const struct weft__timers *ts);
/* Claims every timer due at `now`. A worker of the heap's runtime: the woken
 * tasks become runnable on it. Returns how many it claimed. */
unsigned weft__timers_fire(struct weft__timers *ts, uint64_t now);
/* sched.c: the earliest deadline just moved earlier. The arming worker. */
void weft__timers_changed(weft_rt *rt);

/* ---- the epoll backend (runtime/io_epoll.c) ---- */

struct weft__epset;   /* a worker's epoll set */
struct weft__fdtab;   /* a runtime's waiters by descriptor */

/* weft_rt_create() or the worker itself, before it runs a coroutine; and
 * weft_rt_destroy(). Returns 0 or a negative errno. */
int  weft__epset_create(struct weft__epset **s);
void weft__epset_destroy(struct weft__epset *s);
/* Frees rt's descriptor table. weft_rt_destroy() only, after the workers. */
void weft__epoll_destroy(weft_rt *rt);

/* Suspends the calling coroutine, on its worker w, until fd is ready for one
 * of `dirs` (WEFT__WAIT_READ, WEFT__WAIT_WRITE, or both), behind the
 * coroutines already waiting on fd in that direction. Returns the epoll
 * events seen, -EBADF (weft_close() closed it), -EINVAL (fd cannot be
 * polled), -ETIMEDOUT, -ECANCELED, -ENOMEM, -EMFILE (fd beyond the table). */
int weft__epoll_wait_fd(struct weft__worker *w, int fd, int dirs);
#define WEFT__WAIT_READ  1   /* dirs of weft__epoll_wait_fd */
#define WEFT__WAIT_WRITE 2
/* Fails every coroutine waiting on fd with -EBADF and drops fd from its set:
 * before fd is closed. Any thread. */
void weft__epoll_forget(weft_rt *rt, int fd);
/* A hint, any thread: fd answered ENOTSOCK to recv or send. */
bool weft__fd_not_socket(weft_rt *rt, int fd);
void weft__fd_mark_not_socket(weft_rt *rt, int fd);

/* The owner of w->ep, as the weft__ring_* calls below: reaps events without
 * waiting; whether coroutines wait on the set; sleeps until an event, a
 * weft__epoll_kick() or `until`. The first and third return whether a task
 * was made runnable. */
bool weft__epoll_poll(struct weft__worker *w);
bool weft__epoll_busy(struct weft__worker *w);
bool weft__epoll_sleep(struct weft__worker *w, uint64_t until);
/* Any thread: wakes the owner from weft__epoll_sleep. */
void weft__epoll_kick(struct weft__epset *s);

struct weft__offload;   /* a runtime's helper threads for weft_offload() */

/* Stops and joins rt's helper threads, if any were started. weft_rt_destroy()
 * only, after every coroutine has finished. */
void weft__offload_destroy(weft_rt *rt);

/* ---- the io_uring backend (runtime/io_uring.c) ---- */

/* One request in flight: lives in the coroutine's frame until its completion
 * is reaped. Its identity on the ring is a slot of the ring's table, not its
 * address (runtime/io_uring.c). */
struct weft__ioreq {
    struct weft__waiter wt;
    int32_t             res;   /* the completion's result; written before the claim */
#if WEFT_HAVE_URING
    struct __kernel_timespec ts;   /* the linked timeout's deadline, read at submission */
#endif
};

#if WEFT_HAVE_URING
struct io_uring_sqe;
/* Creates a disabled ring of `entries`, at least 2 (weft_rt_create). Returns
 * 0 or a negative errno: the kernel's, or open()'s for the tombstone that
 * weft_close() needs (see weft__ring_close_end). */
int  weft__ring_create(struct weft__ring **r, unsigned entries);
void weft__ring_destroy(struct weft__ring *r);
/* Enables the ring on its worker's thread. */
int  weft__ring_enable(struct weft__ring *r);
/* The owner: submits what is queued, reaps completions. Returns whether a
 * task was made runnable. */
bool weft__ring_poll(struct weft__worker *w);
/* The owner: whether requests are queued or in flight, or cancellations wait. */
bool weft__ring_busy(struct weft__worker *w);
/* The owner, parked: waits for a completion or weft__ring_kick(), or until
 * `until` (weft_now() clock; UINT64_MAX: no limit). Returns whether a task was
 * made runnable. */
bool weft__ring_sleep(struct weft__worker *w, uint64_t until);
/* Any thread: wakes the owner from weft__ring_sleep. */
void weft__ring_kick(struct weft__ring *r);
/* A coroutine on w: an entry to fill, then weft__ring_call() at once. */
struct io_uring_sqe *weft__ring_sqe(struct weft__worker *w);
/* Submits the filled entry (with the caller's deadline as a linked timeout)
 * and waits for its completion. Returns its result, -EBADF (weft_close cut
 * it short), -ETIMEDOUT, -ECANCELED, -ENOMEM (no slot for it: nothing was
 * submitted). */
int32_t weft__ring_call(struct weft__worker *w, struct io_uring_sqe *sqe, struct weft__ioreq *q);
/* weft_cancel(): asks the owner of t's request in flight to cancel it. */
int  weft__ring_cancel(weft_task *t);
/*
 * weft_close() of fd, in the steps of the protocol in runtime/io_uring.c; any
 * thread. _count: how many of rt's rings may have requests on fd, summed
 * over every runtime by the caller. _new: a close of fd for that many rings;
 * returns 0, -EBADF (fd is not open) or -ENOMEM, having changed nothing.
 * _post: hands a note to each of rt's rings that may still have requests on
 * fd, for every runtime. _end: holds fd's number with the tombstone until
 * the rings have finished, or closes it at once if none was handed a note,
 * and drops the caller's hold on c. Returns 0 or close(2)'s negative errno.
 */
struct weft__ring_close;
unsigned weft__ring_close_count(weft_rt *rt, int fd);
int  weft__ring_close_new(struct weft__ring_close **c, int fd, unsigned rings);
void weft__ring_close_post(weft_rt *rt, struct weft__ring_close *c);
int  weft__ring_close_end(struct weft__ring_close *c);
/* Tells Valgrind that the kernel wrote n bytes at buf. */
void weft__ring_mark_read(void *buf, ssize_t n);
#endif

/* SIGPIPE on worker threads (runtime/io.c). _block: a worker, before it runs
 * a coroutine; a write to a pipe or socket whose reader has gone then leaves
 * SIGPIPE pending on the writing thread instead of ending the process.
 * _take: a worker whose write(2), or whose ring's write, just failed with
 * EPIPE: takes back the SIGPIPE pending on it, if any. */
void weft__sigpipe_block(void);
void weft__sigpipe_take(void);

/* ---- what the scheduler asks of a worker's backend: its ring, else its set ---- */

/* The owner: submits and reaps without waiting. Whether a task became runnable. */
static inline bool weft__io_poll(struct weft__worker *w)
{
#if WEFT_HAVE_URING
    if (w->ring)
        return weft__ring_poll(w);
#endif
    return w->ep && weft__epoll_poll(w);
}

/* The owner: whether it must sleep in the backend to see its IO finish. */
static inline bool weft__io_busy(struct weft__worker *w)
{
#if WEFT_HAVE_URING
    if (w->ring)
        return weft__ring_busy(w);
#endif
    return w->ep && weft__epoll_busy(w);
}

/* The owner, parked, busy: as weft__ring_sleep. */
static inline bool weft__io_sleep(struct weft__worker *w, uint64_t until)
{
#if WEFT_HAVE_URING
    if (w->ring)
        return weft__ring_sleep(w, until);
#endif
    return weft__epoll_sleep(w, until);
}

/* The monitor, without the exclusion: whether w's backend holds completions
 * or events that nobody has reaped (a hint). Holding w excluded, it calls
 * weft__io_poll(w) as w would: the tasks it makes runnable go to the global
 * queue (monitor.c). */
#if WEFT_HAVE_URING
bool weft__ring_pending(struct weft__worker *w);
#endif
bool weft__epoll_pending(struct weft__worker *w);

static inline bool weft__io_pending(struct weft__worker *w)
{
#if WEFT_HAVE_URING
    if (w->ring)
        return weft__ring_pending(w);
#endif
    return w->ep && weft__epoll_pending(w);
}

/* Any thread: wakes w from weft__io_sleep. */
static inline void weft__io_kick(struct weft__worker *w)
{
#if WEFT_HAVE_URING
    if (w->ring) {
        weft__ring_kick(w->ring);
        return;
    }
#endif
    weft__epoll_kick(w->ep);
}

#endif /* WEFT_IO_H */
