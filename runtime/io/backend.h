/* SPDX-License-Identifier: MIT */
/*
 * The IO backend contract: the one seam between weft and the kernel's ways of
 * waiting for IO, in the manner of Go's netpoll.go, which lists what every
 * poller must define.
 *
 * A backend serves the coroutines of one worker. Each worker carries one
 * backend (w->io, a table of the entries below) and that backend's state for
 * it (w->io_state, opaque to everyone else). Two backends exist:
 *   uring.c   one io_uring per worker: each call is a request on the ring;
 *   epoll.c   one epoll set per worker: each call is tried without blocking
 *             and waits for readiness on the set; calls on files that have
 *             no readiness (open, fsync, pread, pwrite) run on a helper
 *             thread (offload.c).
 * backend.c is the one place that chooses (weft_config.io_backend, WEFT_IO,
 * Valgrind, the fallback to epoll where the kernel refuses a ring) and the one
 * place outside the backends that knows more than one of them. No other file
 * asks which backend a worker has.
 *
 * An IO call is an operation (struct weft__io_op), built once by its public
 * function in io.c and handed to the worker's backend through `call`. Adding
 * a call means: its kind below, its public function in io.c (and its case in
 * weft__io_syscall, the plain system call), and its case in each backend's
 * `call`.
 */
#ifndef WEFT_BACKEND_H
#define WEFT_BACKEND_H

#include "core/core.h"

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

/* What an operation does: the system call it stands for. */
enum weft__io_kind {
    WEFT__IO_READ,       /* fd, buf, len */
    WEFT__IO_WRITE,      /* fd, buf, len */
    WEFT__IO_RECV,       /* fd, buf, len, flags */
    WEFT__IO_SEND,       /* fd, buf, len, flags */
    WEFT__IO_ACCEPT,     /* fd, addr, addrlen, flags (accept4's) */
    WEFT__IO_CONNECT,    /* fd, addr, alen */
    WEFT__IO_PREAD,      /* fd, buf, len, off */
    WEFT__IO_PWRITE,     /* fd, buf, len, off */
    WEFT__IO_OPEN,       /* path, flags, mode */
    WEFT__IO_FSYNC,      /* fd */
    WEFT__IO_POLL,       /* fd, flags: poll(2) events */
    WEFT__IO_READV,      /* fd, iov, iovcnt; len: the sum of the lengths */
    WEFT__IO_WRITEV,     /* fd, iov, iovcnt; len: the sum of the lengths */
    WEFT__IO_RECVMSG,    /* fd, msg, flags (also weft_recvfrom) */
    WEFT__IO_SENDMSG,    /* fd, msg, flags (also weft_sendto) */
    WEFT__IO_SENDFILE,   /* fd (out), in_fd, offp, len; made by io.c alone, never a backend's call */
};

struct weft__owned;   /* a descriptor handed over (io/owned.h) */

/* One request in flight on a backend that keeps requests (io/uring.c):
 * lives in the coroutine's frame until its completion is reaped, or in a
 * handed-over descriptor's record (io/owned.h). Its identity on the ring is
 * a slot of the ring's table, not its address (see the top of io/uring.c). */
struct weft__ioreq {
    struct weft__waiter      wt;
    int32_t                  res;   /* the completion's result; written before the claim */
    uint64_t                 id;    /* its identity on the ring, while it has a deadline */
    size_t                   dl;    /* its place on the ring's deadlines (base/heap.h); 0: none */
};

/* One IO call, in the caller's frame for the whole call. */
struct weft__io_op {
    enum weft__io_kind kind;
    int              fd;
    void            *buf;
    size_t           len;
    int              flags;
    struct sockaddr *addr;      /* accept, connect */
    socklen_t       *addrlen;   /* accept */
    socklen_t        alen;      /* connect */
    off_t            off;       /* pread, pwrite */
    const char      *path;      /* open */
    mode_t           mode;      /* open */
    const struct iovec *iov;    /* readv, writev */
    int              iovcnt;    /* readv, writev */
    struct msghdr   *msg;       /* recvmsg, sendmsg */
    int              in_fd;     /* sendfile: the file read */
    off_t           *offp;      /* sendfile: where to read, moved on; NULL: in_fd's offset */
    unsigned         why;       /* for weft_dump: enum weft__why, where the kind alone does
                                 * not say it (a poll that awaits a signal or a child) */
    uintptr_t        what;      /* and what it names then */
};

/* What `call` returns for WEFT__IO_CONNECT when the attempt went on and it
 * waited until the socket became writable: the caller reads the outcome. */
#define WEFT__IO_CONNECTED_LATER 1

/*
 * What a backend provides. "The owner" is the worker's own thread, in its idle
 * loop or between coroutines; "a coroutine" is one running on that worker.
 */
struct weft__backend {
    const char *name;
    /* weft_rt_create (backend.c): makes a worker's state. entries: the ring
     * size asked for. Returns 0 or a negative errno. */
    int  (*create)(void **state, unsigned entries);
    /* The owner, once, before it runs a coroutine. Returns 0 or a negative
     * errno, and then backend.c gives the worker another backend. */
    int  (*start)(struct weft__worker *w);
    /* weft_rt_destroy or a failed create, after the worker has stopped. */
    void (*destroy)(void *state);
    /* The owner: submits and reaps without waiting. Returns whether a task
     * became runnable. */
    bool (*poll)(struct weft__worker *w);
    /* The owner: whether it must sleep in the backend (not on its futex) to
     * see its coroutines' IO finish. */
    bool (*busy)(struct weft__worker *w);
    /* The monitor (core/monitor.c), without excluding the owner: whether
     * completions or events wait that nobody has reaped, or other work of
     * the owner's is due (the epoll set's sweep). A hint: the monitor then
     * excludes the owner and calls `poll` as the owner would, and the tasks
     * that makes runnable go to the global queue. */
    bool (*pending)(struct weft__worker *w);
    /* The owner, parked and busy: waits for IO, a kick, or `until`
     * (weft_now() clock; UINT64_MAX: no limit). Returns whether a task became
     * runnable. */
    bool (*sleep)(struct weft__worker *w, uint64_t until);
    /* Any thread: wakes the owner from `sleep`. */
    void (*kick)(struct weft__worker *w);
    /* A coroutine, not cancelled (io.c looked): performs op as its blocking
     * system call would, suspending the coroutine while it waits. Returns the
     * call's result or a negative errno, -ETIMEDOUT and -ECANCELED for the
     * caller's deadline and cancellation; for WEFT__IO_CONNECT, also
     * WEFT__IO_CONNECTED_LATER; for WEFT__IO_POLL, the revents. */
    ssize_t (*call)(struct weft__worker *w, const struct weft__io_op *op);
    /* A coroutine on w, for a descriptor handed over (io/owned.c): arms a
     * receive that fills o's queue, and sets *id to its identity. Returns 0
     * or a negative errno (nothing armed). NULL where the backend has none. */
    int  (*own_arm)(struct weft__worker *w, struct weft__owned *o, uint64_t *id);
    /* Any thread: asks w's owner to cancel the receive id that own_arm
     * armed. Returns 0 or -ENOMEM. */
    int  (*own_stop)(struct weft__worker *w, uint64_t id);
};

extern const struct weft__backend weft__uring;   /* uring.c, where built */
extern const struct weft__backend weft__epoll;   /* epoll.c */

/* ---- what the scheduler calls (core/) ---------------------------------------- */

static inline bool weft__io_poll(struct weft__worker *w)
{
    return w->io->poll(w);
}

static inline bool weft__io_busy(struct weft__worker *w)
{
    return w->io->busy(w);
}

static inline bool weft__io_pending(struct weft__worker *w)
{
    return w->io->pending(w);
}

static inline bool weft__io_sleep(struct weft__worker *w, uint64_t until)
{
    return w->io->sleep(w, until);
}

static inline void weft__io_kick(struct weft__worker *w)
{
    w->io->kick(w);
}

/* ---- backend.c: the choice, and what concerns every backend -------------------- */

/* weft_rt_create: the backend asked for, from the configuration's io_backend
 * and WEFT_IO. Returns a WEFT_IO_* value or -ENOSYS (io_uring asked for, and
 * not built in). */
int  weft__io_choose(int configured);
/* weft_rt_create: gives every worker of rt its backend and state, falling
 * back to epoll for all of them where a ring is refused and `backend` is not
 * WEFT_IO_URING. Returns 0 or a negative errno; rt's workers are then freed
 * by weft__io_worker_destroy as usual. */
int  weft__io_workers_create(weft_rt *rt, int backend, unsigned entries);
/* The owner, first thing on its thread: blocks SIGPIPE and starts its
 * backend, or falls back to epoll where the ring cannot be enabled. */
void weft__io_worker_start(struct weft__worker *w);
/* Frees w's backend state, if any. rt_free. */
void weft__io_worker_destroy(struct weft__worker *w);
/* weft_rt_destroy, after the workers have stopped: rt's descriptor table
 * and helper threads. */
void weft__io_rt_destroy(weft_rt *rt);
/* In a child of fork(): the process-wide locks of this layer (the flag
 * toggles' and the offload pools' creation lock) made anew, since a thread
 * that held one at the fork is not there to release it. Only the fork
 * handler (core/runtime.c). */
void weft__io_fork_child(void);
/* In a child of fork(): SIGPIPE unblocked again where the forking thread was
 * a worker that blocked it (io/backend.c). Only the fork handler. */
void weft__sigpipe_fork_child(void);
/* Whether the calling thread is a worker that blocked SIGPIPE itself, and
 * SIGPIPE unblocked on the calling thread: for a thread a worker starts
 * (an offload helper), which inherits the worker's mask. */
bool weft__sigpipe_is_ours(void);
void weft__sigpipe_unblock(void);
/* weft_cancel, after it has claimed t's waiter: a request of t that a
 * backend keeps in flight is cancelled too. Returns 0 or -ENOMEM. */
int  weft__io_cancel(weft_task *t);
/* weft_close's part below the public call: fails the coroutines waiting on
 * fd in every runtime with -EBADF, and closes fd. Returns 0 or a negative
 * errno. Any thread. */
int  weft__io_close(int fd);
/* The owner whose write(2), or whose ring's write, just failed with EPIPE:
 * takes back the SIGPIPE pending on its thread, if any. */
void weft__sigpipe_take(void);

/* ---- io.c: what the backends share --------------------------------------------- */

/* The calling coroutine's worker, or NULL from a plain thread. */
static inline struct weft__worker *weft__io_coroutine(void)
{
    struct weft__worker *w = weft__worker_self();
    return w && w->current ? w : NULL;
}

/*
 * Whether the coroutine on w has been cancelled. Its IO calls then fail with
 * -ECANCELED at once, also those that could complete without waiting: the
 * backends need not look again before they make a system call.
 */
static inline bool weft__io_cancelled(const struct weft__worker *w)
{
    return atomic_load_explicit(&w->current->cancelled, memory_order_relaxed) != 0;   /* set once, never cleared */
}

/* weft_poll, noted for weft_dump as a wait for why and what where why is
 * not WEFT__WHY_NONE (io/io.c): for the waits of io/proc.c. */
int weft__poll_as(int fd, short events, enum weft__why why, uintptr_t what);

/* The usual call of op, past the queue of a descriptor handed over: a
 * coroutine's on its backend, a plain thread's as io/io.c makes it
 * (io/owned.c reads the socket through it, under its claim; io/pri.c waits
 * on its set). Any thread. */
ssize_t weft__io_usual(const struct weft__io_op *a);

/* A coroutine's wait for fd's events where they include POLLPRI, on an
 * epoll set of its own (io/pri.c): the revents, or a negative errno
 * (-EBADF at a weft_close of fd, -ETIMEDOUT, -ECANCELED). Only a coroutine.
 * weft__pri_close(fd), from weft_close before fd is closed, ends those on
 * fd; weft__pri_fork_child forgets them all in a child of fork(). Any
 * thread. */
int weft__pri_wait(int fd, short events, enum weft__why why, uintptr_t what);
void weft__pri_close(int fd);
void weft__pri_fork_child(void);

/* The plain system call for op, once; EINTR is not retried. Returns its
 * result or a negative errno. SEND and SENDMSG add MSG_NOSIGNAL. */
ssize_t weft__io_syscall(const struct weft__io_op *op);
/* accept4, connect or sendfile without blocking, on a descriptor whose
 * flags are left as its owner set them (the toggle in io.c; for sendfile,
 * the descriptor written). -EAGAIN: nothing pending, or no room;
 * -EINPROGRESS: the attempt goes on. */
ssize_t weft__io_syscall_nowait(const struct weft__io_op *op);

/* Whether fd is ready for `events` (poll(2) flags) now: its revents, 0 if
 * not, -EBADF (not open) or another negative errno. Never waits. */
int weft__poll_now(int fd, short events);

/* Whether op is one of the socket calls that take MSG_ flags. */
static inline bool weft__io_has_msg_flags(const struct weft__io_op *op)
{
    return op->kind == WEFT__IO_RECV || op->kind == WEFT__IO_SEND ||
           op->kind == WEFT__IO_RECVMSG || op->kind == WEFT__IO_SENDMSG;
}

/* recv, send, recvmsg and sendmsg with MSG_DONTWAIT want -EAGAIN back, not
 * a wait. */
static inline bool weft__io_asks_not_to_wait(const struct weft__io_op *op)
{
    return weft__io_has_msg_flags(op) && (op->flags & MSG_DONTWAIT);
}

/* read, write, readv, writev: the calls that take any kind of descriptor. */
static inline bool weft__io_is_stream(const struct weft__io_op *op)
{
    return op->kind == WEFT__IO_READ || op->kind == WEFT__IO_WRITE ||
           op->kind == WEFT__IO_READV || op->kind == WEFT__IO_WRITEV;
}

/* A stream call (weft__io_is_stream) on a socket, as the socket call that
 * takes MSG_ flags: read and write as recv and send, readv and writev as
 * recvmsg and sendmsg, whose header is *m (the caller's, living as long as
 * the result). */
static inline struct weft__io_op weft__io_as_socket(const struct weft__io_op *op, struct msghdr *m)
{
    struct weft__io_op c = *op;
    c.flags = 0;
    switch (op->kind) {
    case WEFT__IO_READ:  c.kind = WEFT__IO_RECV; break;
    case WEFT__IO_WRITE: c.kind = WEFT__IO_SEND; break;
    default:
        *m = (struct msghdr){ .msg_iov = (struct iovec *)op->iov, .msg_iovlen = (size_t)op->iovcnt };
        c.kind = op->kind == WEFT__IO_READV ? WEFT__IO_RECVMSG : WEFT__IO_SENDMSG;
        c.msg = m;
        break;
    }
    return c;
}

/* Whether op waits for its descriptor to take data, rather than give it. */
static inline bool weft__io_writes(const struct weft__io_op *op)
{
    return op->kind == WEFT__IO_WRITE || op->kind == WEFT__IO_SEND ||
           op->kind == WEFT__IO_CONNECT || op->kind == WEFT__IO_PWRITE ||
           op->kind == WEFT__IO_WRITEV || op->kind == WEFT__IO_SENDMSG;
}

/* Whether op, made without waiting, needs its descriptor's O_NONBLOCK set
 * for the call (weft__io_syscall_nowait): accept4, which has no flag that
 * says so per call (sendfile, the other, never reaches a backend: io.c). */
static inline bool weft__io_needs_toggle(const struct weft__io_op *op)
{
    return op->kind == WEFT__IO_ACCEPT;
}

/* ---- offload.c: helper threads for weft's own blocking calls ----------------------- */

/* weft_offload for a call of weft's own (epoll's file calls, weft_waitpid)
 * that has noted for weft_dump what its caller waits for (weft__why_task):
 * the wait shows as that reason rather than as an offload of fn. Any thread;
 * fn not NULL. Returns as weft_offload. */
int weft__offload_noted(weft_fn fn, void *arg, void **result);
/* Whether the calling thread is one of rt's helpers (weft_rt_destroy there
 * would wait for itself). */
bool weft__offload_is_helper_of(const weft_rt *rt);
/* In a child of fork(): the pools' creation lock made anew (weft__io_fork_child). */
void weft__offload_fork_child(void);

/* ---- what backend.c alone calls of each backend --------------------------------- */

struct weft__offload;   /* a runtime's helper threads for weft_offload() */
/* offload.c: stops and joins rt's helper threads, if any were started. */
void weft__offload_destroy(weft_rt *rt);

/* epoll.c: fails every coroutine of rt waiting on fd with -EBADF and drops
 * fd from its set, before fd is closed; and frees rt's descriptor table
 * (weft_rt_destroy, after the workers). Any thread. */
void weft__epoll_forget(weft_rt *rt, int fd);
void weft__epoll_destroy(weft_rt *rt);

/*
 * uring.c: weft_close() of fd, in the steps of the protocol there; any
 * thread. _count: how many of rt's rings may have requests on fd, summed
 * over every runtime by the caller. _new: a close of fd for that many rings;
 * returns 0, -EBADF (fd is not open) or -ENOMEM, having changed nothing.
 * _post: hands a note to each of rt's rings that may still have requests on
 * fd, for every runtime. _end: holds fd's number with the tombstone until
 * the rings have finished, or closes it at once if none was handed a note,
 * and drops the caller's hold on c. Returns 0 or close(2)'s negative errno.
 * _cancel: weft_cancel() asks the owner of t's request in flight to cancel it.
 */
struct weft__ring_close;
unsigned weft__ring_close_count(weft_rt *rt, int fd);
int  weft__ring_close_new(struct weft__ring_close **c, int fd, unsigned rings);
void weft__ring_close_post(weft_rt *rt, struct weft__ring_close *c);
int  weft__ring_close_end(struct weft__ring_close *c);
int  weft__ring_cancel(weft_task *t);

#endif /* WEFT_BACKEND_H */
