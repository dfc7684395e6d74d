/* SPDX-License-Identifier: MIT */
/*
 * weft: an embeddable green-thread runtime.
 *
 * Coroutines ("tasks") run on a small set of kernel threads ("workers", one per
 * CPU by default) and move between them by work stealing. This is the one public
 * header; everything it declares is named weft_ / WEFT_.
 *
 * Errors: every function that can fail returns a negative errno value (-EINVAL,
 * -ENOMEM, ...) and never sets errno. A coroutine can migrate between kernel
 * threads, so errno would be the wrong channel anyway.
 *
 * Where a call may be made from:
 *   - "any thread": a coroutine of any runtime, or a plain thread;
 *   - "a coroutine": only from inside a weft coroutine; elsewhere it fails with
 *     -EPERM (or, for calls that cannot fail, does what the comment says).
 *
 * Thread-locals and migration. A coroutine that blocks (join, yield, IO, locks,
 * channels) may resume on a different worker thread. Consequences:
 *   - the address of a _Thread_local variable, errno included, may change across
 *     any weft call that can suspend; do not keep a pointer to one across such a
 *     call, and expect the compiler to have cached such addresses within one
 *     function (read them again after the call, through a non-inlined function);
 *   - pthread_self(), gettid() and sched_getcpu() describe the worker, not the
 *     coroutine;
 *   - never hold a pthread mutex across a suspending call: it may be released
 *     from another thread.
 *
 * fork(). Whatever a child of fork() does, the parent's runtimes go on
 * unharmed: their rings are not mapped in the child, and weft in the child
 * never touches their epoll sets, eventfds or queues. In the child:
 *   - the thread that called fork() is a plain thread, also when it was a
 *     coroutine (it goes on running on the coroutine's stack, of the
 *     runtime's stack size): weft_self() is NULL, weft_spawn() is -EPERM, and
 *     the IO, timer, offload and sync calls are the plain system calls or
 *     block the thread; the coroutine's deadline and cancellation stay behind;
 *   - the runtimes and task handles of the parent are dead: weft_spawn_on,
 *     weft_join, weft_detach, weft_cancel and weft_rt_destroy on them return
 *     -ECHILD, and their memory stays until the child exits or execs;
 *   - weft_rt_create() and weft_main() make fresh runtimes that work, with
 *     any dump and stall signals (the parent's runtimes use theirs no more);
 *   - a coroutine that forked ends the child with _exit() or exec*() (fork
 *     and exec works from a coroutine); were it to return, the child stops
 *     with a message, as nothing of its runtime could run after it;
 *   - locks, channels and the like are the child's copies: it may use those
 *     it made itself, but one that a coroutine of the parent waits on or
 *     holds means nothing there (wake-ups of the parent's tasks are dropped).
 * These rules hold for fork() and for any child that runs pthread_atfork
 * handlers; a child made without them (vfork, posix_spawn, _Fork, clone)
 * may only exec or _exit.
 */
#ifndef WEFT_H
#define WEFT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct addrinfo;   /* <netdb.h>, for weft_getaddrinfo */

#if defined(__GNUC__)
#define WEFT_API __attribute__((visibility("default")))
#else
#define WEFT_API
#endif

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

/* The smallest stack a coroutine may ask for, and the default. */
#define WEFT_STACK_MIN     (16u * 1024u)
#define WEFT_STACK_DEFAULT (256u * 1024u)
/*
 * Below each coroutine's stack lies a guard this large, never committed: it
 * costs address space and page-table entries. An overflow that lands in it
 * stops the program with a message naming the coroutine. A function's frame
 * (or alloca, or VLA) of up to this size lands in it when it overflows; a
 * larger one may be written past it, onto another coroutine's stack, unless
 * the code was built with -fstack-clash-protection, which touches every page
 * of a large frame in turn, so that every overflow meets the guard's first
 * page.
 */
#define WEFT_STACK_GUARD   (256u * 1024u)
/* The most workers one runtime may have. */
#define WEFT_WORKERS_MAX   1024u

typedef struct weft_rt   weft_rt;     /* a runtime: its workers and queues */
typedef struct weft_task weft_task;   /* a coroutine handle, valid until joined or detached */
typedef void *(*weft_fn)(void *arg);

typedef struct weft_config {
    unsigned workers;     /* kernel threads; 0 = the CPUs in the process affinity mask */
    size_t   stack_size;  /* usable stack per coroutine; 0 = 256 KiB, committed only as touched */
    int      io_backend;  /* WEFT_IO_AUTO (0), WEFT_IO_URING or WEFT_IO_EPOLL; see below */
    unsigned ring_entries;/* io_uring submission queue depth per worker; 0 = 256; above
                           * 32768 is -EINVAL */
    uint64_t stall_ns;    /* a coroutine that holds its worker this long without a switch
                           * is reported on stderr (one line, rate-limited); 0 = the default
                           * (docs/api/core.md), UINT64_MAX = never. WEFT_STALL_MS in the environment
                           * overrides it (in milliseconds; 0 = never) */
    int      dump_signal; /* a signal that writes weft_dump() to stderr and goes on;
                           * 0 = none. The environment variable WEFT_DUMP_SIGNAL (a
                           * number, or a name such as SIGQUIT or QUIT; 0 = none)
                           * overrides it. Above 64, SIGKILL, SIGSTOP, SIGSEGV, SIGBUS,
                           * SIGILL, SIGFPE, or one the C library keeps for itself (32
                           * and 33 with glibc): -EINVAL */
    int      stall_signal;/* the signal that takes a stalled coroutine's backtrace for the
                           * stall report, and a running coroutine's for weft_dump();
                           * 0 = SIGRTMAX-3, -1 = none (no such backtraces). Used only while stalls are reported, and only if
                           * the program neither handles, ignores nor blocks it. The
                           * environment variable WEFT_STALL_SIGNAL overrides it (a number,
                           * or a name such as SIGUSR2 or SIGRTMIN+4; 0 = none). The same
                           * signal as dump_signal, or one dump_signal refuses: -EINVAL */
    uint64_t idle_spin_ns;/* how long a worker that runs out of work keeps looking for more
                           * (stealing) before it sleeps, at most: a search that ends in
                           * sleep halves the next one's time, and one that finds work, or
                           * a sleep that a wake-up ends within this time, doubles it back
                           * up to this; a timer due within this time is waited for awake;
                           * 0 = the default (docs/api/core.md),
                           * UINT64_MAX = not at all: one look at every queue, then sleep.
                           * Shorter spends less CPU where work arrives as IO, at the price
                           * of a wake-up where it comes in bursts. The environment variable
                           * WEFT_IDLE_SPIN_US overrides it (microseconds; 0 = not at all).
                           * Above 1 s, UINT64_MAX aside: -EINVAL */
    unsigned crowded_pct; /* with several workers, the runtime counts itself crowded while its
                           * workers spend more than this percent of the time they want a CPU
                           * waiting for one (more runnable threads than cores: a server beside
                           * its load generator, a container given fewer CPUs than it sees),
                           * and no longer once they spend less than half of it. Crowded, an
                           * idle worker parks without the search above (a timer about to fall
                           * due aside), and woken IO is handed to idle workers only in large
                           * batches: the CPU that help would spend is wanted by the threads
                           * that make the work. Read every 10 ms from /proc, through a
                           * descriptor per worker that weft_rt_create opens (never crowded
                           * where schedstat is missing); weft_stats says when. 0 = the
                           * default (docs/api/core.md), 100 = never. The environment
                           * variable WEFT_CROWDED_PCT overrides it (0 or 100 and above =
                           * never). Above 100: -EINVAL */
    /* later fields are appended; a zeroed field always means the default */
} weft_config;

/*
 * IO backends. AUTO uses io_uring where the kernel allows it (one ring per
 * worker) and falls back to epoll where it is refused (seccomp filters,
 * qemu-user, io_uring_disabled); the environment variable WEFT_IO=uring|epoll
 * overrides AUTO. Asking for WEFT_IO_URING where io_uring is refused makes
 * weft_rt_create fail with the kernel's error (-ENOSYS, -EPERM, ...).
 */
#define WEFT_IO_AUTO  0
#define WEFT_IO_URING 1
#define WEFT_IO_EPOLL 2

/*
 * Creates a runtime and starts its workers. cfg NULL means every default.
 * Any thread. Returns 0, -EINVAL (rt NULL, workers above WEFT_WORKERS_MAX, stack
 * below WEFT_STACK_MIN or above 1 GiB, a bad dump or stall signal), -EBUSY
 * (another runtime has another dump signal, or another stall signal), -ENOMEM
 * or -EAGAIN (no threads left).
 */
WEFT_API int weft_rt_create(weft_rt **rt, const weft_config *cfg);

/*
 * Waits until every coroutine of rt has finished, detached ones too, then stops
 * and joins the workers and frees everything. Handles of finished but unjoined
 * tasks die with it. A plain thread (or a coroutine of another runtime). A
 * plain thread's weft_spawn_on that began before it is either refused with
 * -EINVAL or waited for. Returns 0, -EINVAL (rt NULL), -EDEADLK (called from
 * one of rt's coroutines, or from a function one of them offloaded, on rt's
 * helper thread), -ECHILD (rt belongs to the parent of a fork()).
 */
WEFT_API int weft_rt_destroy(weft_rt *rt);

/*
 * Starts fn(arg) as a new coroutine of rt. Any thread. If task is not NULL it
 * receives a handle that must be joined or detached; NULL means detached.
 * Returns 0, -EINVAL (rt or fn NULL, rt being destroyed), -ENOMEM (no stack),
 * -ECHILD (rt belongs to the parent of a fork(), see above).
 */
WEFT_API int weft_spawn_on(weft_rt *rt, weft_task **task, weft_fn fn, void *arg);

/*
 * Starts fn(arg) as a new coroutine of the caller's runtime. A coroutine.
 * task NULL means detached. Returns 0, -EINVAL (fn NULL), -EPERM (not called
 * from a coroutine), -ENOMEM.
 */
WEFT_API int weft_spawn(weft_task **task, weft_fn fn, void *arg);

/*
 * Waits for task to finish, stores its return value in *result (if result is not
 * NULL) and releases the handle. From a coroutine it suspends only that
 * coroutine; from a plain thread it blocks the thread. Returns 0, -EINVAL (task
 * NULL, already joined or detached: detected while the handle's memory has not
 * been reused, and debug builds abort instead), -EDEADLK (a task joining itself),
 * -ECHILD (a task of the parent of a fork()), -ETIMEDOUT (the caller's deadline
 * came first) or -ECANCELED (the caller was cancelled): after these two the
 * task goes on and its handle may be joined again or detached.
 */
WEFT_API int weft_join(weft_task *task, void **result);

/* Releases the handle: the task frees itself when it finishes. Any thread.
 * Returns 0, -EINVAL (NULL, already joined or detached) or -ECHILD (a task of
 * the parent of a fork()). */
WEFT_API int weft_detach(weft_task *task);

/* Lets the other runnable coroutines of this worker run first. From a plain
 * thread: sched_yield(). */
WEFT_API void weft_yield(void);

/* The calling coroutine, or NULL outside a coroutine. */
WEFT_API weft_task *weft_self(void);

/* The index (0 .. workers-1) of the worker running the caller, or -EPERM outside
 * a coroutine. The answer is stale as soon as the coroutine suspends. */
WEFT_API int weft_worker(void);

/* The number of workers of the caller's runtime, or -EPERM outside a coroutine. */
WEFT_API int weft_workers(void);

/*
 * Pinning. A pinned coroutine runs only on the worker thread it was on when it
 * pinned itself: whatever wakes it, it resumes there, and no other worker
 * takes it, so thread-local addresses it kept across a wait stay its own
 * thread's (as Go's LockOSThread). Pins nest: weft_unpin() undoes one
 * weft_pin(), and the coroutine is free to move again when none is left. A
 * pinned coroutine waits for its worker even while that worker is stalled by
 * another coroutine (a blocking call weft cannot see). Neither call is a
 * locked instruction or a system call.
 * Both return 0, or -EPERM outside a coroutine; weft_unpin() returns -EPERM
 * also when the caller holds no pin (as weft_mutex_unlock() does for a mutex
 * the caller does not hold).
 */
WEFT_API int weft_pin(void);
WEFT_API int weft_unpin(void);

/*
 * Coroutine-local storage, as pthread's keys are thread-local. A key names one
 * value per coroutine, and one per plain thread; each starts as NULL. A
 * coroutine's values follow it from worker to worker. When a coroutine ends
 * (returns from its function), the destructor of each key whose value is not
 * NULL is called with that value, the value being set to NULL first; while
 * destructors set values again, this repeats, up to
 * PTHREAD_DESTRUCTOR_ITERATIONS rounds. A plain thread's values are destroyed
 * so when it exits. Deleting a key calls no destructor; a key made later
 * never sees a deleted key's values.
 */
typedef unsigned weft_key;
#define WEFT_KEYS_MAX 1024   /* keys that may exist at once in a process */

/* Makes a key; destructor may be NULL. Any thread. Returns 0, -EINVAL (key
 * NULL), -EAGAIN (WEFT_KEYS_MAX keys exist already), -ENOMEM (no memory to
 * register weft's fork handler, which makes the keys' lock anew in a child). */
WEFT_API int weft_key_create(weft_key *key, void (*destructor)(void *));
/* Deletes key; every value of it is forgotten, and its destructor is not
 * called. Any thread, once nobody uses the key. Returns 0 or -EINVAL (not a
 * key, or deleted already). */
WEFT_API int weft_key_delete(weft_key key);
/* Sets the caller's value of key: the calling coroutine's, or the calling
 * plain thread's. Returns 0, -EINVAL (not a key), -ENOMEM (the first value
 * set in a block of 32 keys needs memory: nothing was changed). */
WEFT_API int weft_setspecific(weft_key key, const void *value);
/* The caller's value of key; NULL if it set none, or key is not a key. */
WEFT_API void *weft_getspecific(weft_key key);

/*
 * Creates a runtime, runs fn(arg) as its first coroutine, joins it, stores its
 * result, and destroys the runtime. A plain thread. Returns 0 or the error of
 * the step that failed.
 */
WEFT_API int weft_main(const weft_config *cfg, weft_fn fn, void *arg, void **result);

/* CLOCK_MONOTONIC in nanoseconds. Any thread. */
WEFT_API uint64_t weft_now(void);

/* ---- non-blocking IO, timers, deadlines, cancellation (runtime/io*.c) ---- */

/*
 * Suspends the calling coroutine for at least ns nanoseconds; its worker runs
 * others meanwhile. From a plain thread it sleeps the thread. Returns 0,
 * -ETIMEDOUT (the caller's deadline came first), -ECANCELED, or -ENOMEM (no
 * memory to arm the timer).
 */
WEFT_API int weft_sleep(uint64_t ns);

/*
 * Reading and writing descriptors (pipes, sockets, terminals) without blocking
 * the worker: a call that would block suspends only the calling coroutine until
 * the descriptor is ready. Sockets keep the flags they have; on the epoll
 * backend a pipe or terminal is switched to O_NONBLOCK at its first call and
 * left so. From a plain thread each behaves like the plain system call, but
 * waits no longer than the thread's deadline (see weft_deadline()). Each
 * returns what the system call returns, or a negative errno; errno is never
 * set. Writing to a pipe or socket whose reader has gone gives -EPIPE and
 * never SIGPIPE: weft_send() adds MSG_NOSIGNAL, and worker threads block
 * SIGPIPE, taking back the one a failed write leaves pending (so a
 * coroutine's own write(2) to such a pipe also fails with EPIPE rather than
 * end the process; a plain thread's weft_write() is write(2), signal
 * included). weft_recv() and weft_send() with MSG_DONTWAIT return -EAGAIN
 * rather than wait; MSG_WAITALL waits for all of len on a stream socket,
 * as on a blocking socket, on both backends (docs/api/io.md, weft_recv:
 * the end, an error, the deadline or a cancellation returns what came).
 * weft_poll() waits until one of events (POLLIN, POLLOUT,
 * or both) is ready and returns the revents; events that hold none of
 * POLLIN, POLLOUT and POLLPRI give -EINVAL. A length above SSIZE_MAX, whose
 * count no return value could hold, gives -EINVAL (also to weft_pread and
 * weft_pwrite); one above what the kernel moves in one call is a short
 * transfer. Any number of coroutines may
 * wait on one descriptor in each direction (several accepting on one
 * listening socket, for instance): each returns when its own call can be
 * made, and weft_close() fails them all. On the epoll backend those waiting
 * in one direction are served in the order they came, one per readiness; an
 * error or a hang-up on the descriptor wakes them all.
 */
WEFT_API ssize_t weft_read(int fd, void *buf, size_t len);
WEFT_API ssize_t weft_write(int fd, const void *buf, size_t len);
WEFT_API ssize_t weft_recv(int fd, void *buf, size_t len, int flags);
WEFT_API ssize_t weft_send(int fd, const void *buf, size_t len, int flags);
WEFT_API int weft_poll(int fd, short events);

/*
 * Sockets and files. weft_accept() takes accept4()'s flags (SOCK_NONBLOCK,
 * SOCK_CLOEXEC) and, like weft_connect(), suspends only the caller. A
 * weft_connect() that is interrupted by the deadline or cancellation leaves
 * the attempt going on: close the socket. Both leave the socket's flags as
 * they were. On the epoll backend, and from a plain thread with a deadline,
 * where they must not wait in the system call, a blocking socket is made
 * O_NONBLOCK for that one call and its flags restored at once; another
 * thread that calls accept(2) or connect(2) itself on the same socket, or
 * reads its flags, at that instant sees O_NONBLOCK (its accept may fail with
 * EAGAIN). weft_open() always adds O_CLOEXEC.
 * weft_close() first fails every coroutine waiting on fd with -EBADF, in
 * every runtime of the process and on either backend, then closes it; it may
 * be called from any thread. Close with it, not close(2), a descriptor that
 * coroutines may be waiting on. No request made on fd before weft_close()
 * reaches another file later given the same number: on io_uring, where
 * requests may still be queued or in flight, the number is held by a
 * placeholder (an O_PATH descriptor, on which every call fails with -EBADF)
 * until the rings have cancelled them, a few microseconds later unless a
 * worker is busy with a coroutine that does not yield; a socket is fully
 * released (its peer sees the close) at that point too. So a new descriptor
 * may not get the lowest free number at once, and closing the number again
 * meanwhile is a double close. A call on fd made concurrently with
 * weft_close() races with it, as with threads. weft_close() returns 0,
 * -EBADF, close(2)'s error, or -ENOMEM (nothing was closed).
 * weft_pread() and weft_pwrite() give -EINVAL for a negative offset and
 * -ESPIPE for a descriptor without positions (a pipe, socket or terminal),
 * as pread(2) does, on either backend.
 * Where the kernel offers no asynchronous form, a call runs on a helper thread
 * (weft_offload) rather than block the worker. From a plain thread each is the
 * plain system call, within the thread's deadline (see weft_deadline()).
 */
WEFT_API ssize_t weft_pread(int fd, void *buf, size_t len, off_t offset);
WEFT_API ssize_t weft_pwrite(int fd, const void *buf, size_t len, off_t offset);
WEFT_API int weft_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
WEFT_API int weft_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
WEFT_API int weft_open(const char *path, int flags, mode_t mode);
WEFT_API int weft_close(int fd);
WEFT_API int weft_fsync(int fd);

/*
 * Vectored, datagram and ancillary IO, as readv(2), writev(2), recvfrom(2),
 * sendto(2), recvmsg(2) and sendmsg(2), under the rules of weft_read() and
 * weft_send() above: a call that would block suspends only the calling
 * coroutine, on either backend, within its deadline and cancellation; from a
 * plain thread, the plain call within the thread's deadline. The send side
 * adds MSG_NOSIGNAL, and weft_writev() to a pipe whose reader has gone gives
 * -EPIPE without SIGPIPE, as weft_write(). weft_readv() and weft_writev() give
 * -EINVAL for an iovcnt below 0 or above IOV_MAX, or buffers whose lengths
 * add up to more than SSIZE_MAX; -EFAULT for iov NULL with iovcnt above 0.
 * weft_recvmsg() and weft_sendmsg() give -EFAULT for msg NULL, -EMSGSIZE for
 * more than IOV_MAX buffers, -EINVAL for lengths above SSIZE_MAX. Ancillary
 * data (SCM_RIGHTS, SCM_CREDENTIALS) passes as with the system calls.
 * weft_recvfrom() with addr and no addrlen gives -EFAULT before receiving
 * anything, and sets *addrlen to the sender's address length (0 on a
 * connected stream socket). Datagrams keep their boundaries: a buffer too
 * small for one gets its first part, the rest is dropped, as recvfrom(2).
 */
WEFT_API ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt);
WEFT_API ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt);
WEFT_API ssize_t weft_recvfrom(int fd, void *buf, size_t len, int flags,
                               struct sockaddr *addr, socklen_t *addrlen);
WEFT_API ssize_t weft_sendto(int fd, const void *buf, size_t len, int flags,
                             const struct sockaddr *addr, socklen_t addrlen);
WEFT_API ssize_t weft_recvmsg(int fd, struct msghdr *msg, int flags);
WEFT_API ssize_t weft_sendmsg(int fd, const struct msghdr *msg, int flags);

/*
 * Hands the reading of fd, a connected TCP socket, to weft: from now on the
 * program reads it only through weft's calls (weft_read, weft_readv,
 * weft_recv, weft_recvfrom, weft_recvmsg, weft_poll) and closes it only with
 * weft_close() (which ends the hand-over; so does libweft-hook's close()).
 * Writing is unchanged. What a read returns is what it would have returned
 * without the hand-over: the same bytes in the same order, MSG_PEEK,
 * MSG_WAITALL, MSG_DONTWAIT and MSG_TRUNC as on the socket, 0 at the end, the
 * socket's error (-ECONNRESET) once and then 0, and the deadline,
 * cancellation and weft_close() rules of every call.
 * Why: on io_uring a coroutine's read of such a socket arms one multishot
 * receive on its worker's ring, which stays armed across reads and fills a
 * queue of the socket's bytes from buffers the ring provides, so a request
 * that finds data queued costs no system call and no submission
 * (docs/benchmarks.md, the HTTP example's --own). Past WEFT_OWN_QUEUE bytes
 * queued the receive is stopped until a read drains the queue, and the peer
 * meets TCP's flow control as it would with a reader that does not read. Each
 * receive is armed to take about WEFT_OWN_QUEUE bytes, at most one of the
 * ring's buffers more, where the kernel takes such a limit (docs/api/io.md
 * says since which release); under an older kernel, what the ring received
 * before the stop took effect is queued too (at most all its provided
 * buffers, where the worker was busy meanwhile). Each ring
 * makes its buffers at its first such receive and keeps them until
 * weft_rt_destroy() (sizes: docs/api/io.md); a drained queue gives its
 * memory back. On the epoll
 * backend a coroutine's small read with nothing queued reads ahead instead:
 * one recv of as much as the queue's first allocation holds (docs/api/io.md
 * says how much), so that a read that gets all it asked for is not followed
 * by one that finds nothing; larger reads and reads with flags are the usual
 * calls. On io_uring under a kernel without multishot receive reads are the
 * usual calls. Every read is served first from whatever the queue holds, and
 * one reader at a time reads the socket itself: a read meanwhile waits for
 * it (MSG_DONTWAIT gives -EAGAIN), as a read waits while a receive is armed,
 * so a plain thread's read may wait for a coroutine's to be run.
 * weft_recvmsg() served from the queue gets no ancillary data (msg_controllen
 * 0; on epoll one with room for it reads the socket itself); MSG_OOB
 * and MSG_ERRQUEUE go to the socket itself, but an urgent byte that an armed
 * receive or a read ahead has read past is gone, as for any reader that
 * reads past the mark (-EINVAL): set SO_OOBINLINE to have it in the stream.
 * A child of fork() does not inherit the hand-over: its reads are the usual
 * calls, and the bytes queued before the fork stay with the parent.
 * Returns 0, -EBADF (not open), -ENOTSOCK, -EOPNOTSUPP (not a TCP stream
 * socket), -ENOTCONN (not connected), -EALREADY (handed over already),
 * -EMFILE (a descriptor number at or above 2^20), -ENOMEM. Any thread.
 */
#define WEFT_OWN_QUEUE 65536
WEFT_API int weft_own(int fd);

/*
 * Sends up to count bytes of in_fd (a file, or a socket) to out_fd (a socket
 * or a pipe), as sendfile(2): from *offset, moved on by what was sent, or
 * from in_fd's own offset when offset is NULL. Waits, suspending only the
 * caller, while out_fd has no room or a socket in_fd has nothing to give; on
 * either backend sendfile(2) itself is made without waiting (out_fd, and a
 * socket in_fd, O_NONBLOCK for that one call, as weft_accept() does on the
 * epoll backend) and a file in_fd is read on the worker, from the page cache
 * or the disk. Returns the bytes sent, which may be fewer than count (loop for the
 * rest), 0 at in_fd's end, or a negative errno: -EINVAL (offset below 0,
 * count above SSIZE_MAX, files sendfile(2) cannot join), -EBADF, -EPIPE
 * (without SIGPIPE in a coroutine), -ETIMEDOUT, -ECANCELED.
 */
WEFT_API ssize_t weft_sendfile(int out_fd, int in_fd, off_t *offset, size_t count);

/*
 * Waits for one of the signals of set, as sigwaitinfo(2), and returns its
 * number, with its siginfo in *info when info is not NULL. The signals must
 * be blocked (pthread_sigmask) in every thread of the process, the workers
 * and offload helpers included, before they are raised: block them before
 * the runtime is created and its threads inherit the mask. A signal not
 * blocked everywhere may run its action instead. In a coroutine the signal
 * is read from a signalfd of the call's own, waited on by the worker's
 * backend like any descriptor, so the worker runs the other coroutines
 * meanwhile; signals raised for the whole process are seen, and those raised
 * for one thread only where that thread is the reader. From a plain thread it
 * is sigtimedwait(2) within the thread's deadline. Returns the signal number,
 * or -EFAULT (set NULL), -EINVAL (set holds no signal but SIGKILL and
 * SIGSTOP), -EMFILE, -ETIMEDOUT, -ECANCELED. Declared where <signal.h>
 * defines siginfo_t: POSIX.1b and later (_POSIX_C_SOURCE 199309L, which
 * the C library's default and _GNU_SOURCE give; not a strict -std=c11).
 */
#if defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 199309L
WEFT_API int weft_sigwait(const sigset_t *set, siginfo_t *info);
#endif

/*
 * Waits for a child to change state, as waitpid(2), and returns its pid (0
 * with WNOHANG and no child ready). A child named by its pid (pid > 0),
 * awaited for its exit (options without WUNTRACED and WCONTINUED), is waited
 * on through a pidfd (docs/api/io.md says which Linux) that the worker's backend watches: only the
 * caller is suspended, and its deadline and cancellation end the wait at any
 * time, leaving the child to a later call. Any other wait (pid -1: any child,
 * 0 or below -1: a process group; WUNTRACED or WCONTINUED; a kernel or
 * sandbox without pidfd_open, or no descriptor left for one) has no
 * descriptor to wait on: it looks with WNOHANG, sleeping between looks (1 ms
 * at first, doubling up to 16 ms), so the deadline and cancellation still end
 * it at any time and the child is noticed at most one gap late. From a plain
 * thread the looks are made within its deadline; without one, it is
 * waitpid(2). Returns the pid, 0, or a negative errno: -ECHILD, -EINVAL (bad
 * options), -ETIMEDOUT, -ECANCELED, or waitpid(2)'s own (-ESRCH for a pid
 * no process group could have).
 */
WEFT_API int weft_waitpid(pid_t pid, int *status, int options);

/*
 * getaddrinfo(3) on a helper thread (weft_offload), suspending only the
 * caller. Returns 0 with the list in *res (free it with freeaddrinfo), or
 * getaddrinfo's EAI_ code (EAI_NONAME for a name that does not exist;
 * EAI_MEMORY and EAI_AGAIN also where the helper thread could not be had), or
 * exactly one of three negative errno values: -EFAULT (res NULL),
 * -ETIMEDOUT and -ECANCELED (the deadline or cancellation came before the
 * lookup started; once started, a lookup runs to its end, bounded by the
 * resolver's own timeouts). The two kinds are told apart by value: EAI_ codes
 * are negative too (on glibc and musl), and weft checks at build time that
 * none of them equals these three; compare with the named constants, never
 * by sign. With EAI_SYSTEM the cause is in the helper thread's errno, which
 * is lost. From a plain thread it is getaddrinfo(3) itself, or -ETIMEDOUT
 * if the thread's deadline has passed.
 */
WEFT_API int weft_getaddrinfo(const char *node, const char *service,
                              const struct addrinfo *hints, struct addrinfo **res);

/*
 * Deadlines and cancellation. weft_deadline(t) sets the calling coroutine's
 * deadline (absolute, weft_now() clock; 0 = none) for every blocking call it
 * makes from then on, and returns the previous one so that scopes nest. A call
 * still waiting at the deadline returns -ETIMEDOUT. The workers keep the
 * deadlines: each looks at those of its waits whenever it looks for work (at
 * least every few dozen switches) and sleeps no longer than the earliest. So
 * while a coroutine holds its worker without switching (a long computation, a
 * raw blocking system call), IO that completes after the deadline of a call
 * waiting on that worker may be returned before the deadline is seen; either
 * way nothing is lost.
 *
 * From a plain thread it sets that thread's deadline, which every blocking
 * call of weft honours:
 *   - weft_sleep, weft_join, and the locks, conditions, wait groups,
 *     semaphores, channels and select, as in a coroutine;
 *   - weft_read, weft_write, weft_recv, weft_send, weft_accept, weft_connect
 *     and weft_poll wait for readiness in poll(2) until the deadline, then
 *     return -ETIMEDOUT (weft_connect leaves its attempt going on; a receive
 *     with MSG_WAITALL returns what it has gathered, if anything). A send
 *     or write that finds room for part of its buffer sends that part and
 *     returns its length, as on a non-blocking socket. On a
 *     descriptor its owner made O_NONBLOCK they never wait, as the system
 *     calls. On a pipe or terminal, which has no per-call way not to wait,
 *     the call is made once poll(2) says it is ready: weft_write then writes
 *     at most PIPE_BUF bytes, and another thread that reads (writes) the same
 *     pipe at that moment can hold the call past the deadline;
 *   - weft_offload, weft_open, weft_pread, weft_pwrite and weft_fsync have no
 *     readiness to wait for: they return -ETIMEDOUT if the deadline has passed
 *     when they are called, and otherwise run to their end.
 *
 * weft_cancel(task) makes the task's pending and future blocking calls return
 * -ECANCELED, also when it waits on another worker: its sleeps, descriptor and
 * file calls and offloads at once, on either backend; its locks, channels,
 * joins, wait groups and semaphores when they would wait (one that can
 * complete at once still does). It cannot be undone. Any thread, on a task
 * handle that has not been joined or detached. Returns 0, -EINVAL, -ECHILD
 * (a task of the parent of a fork()), or -ENOMEM when the task's io_uring
 * request in flight could not be reached for want of memory: its later calls
 * are cancelled all the same, and calling again reaches that request.
 */
WEFT_API uint64_t weft_deadline(uint64_t abs_ns);
WEFT_API int weft_cancel(weft_task *task);

/*
 * Runs fn(arg) on one of a bounded pool of helper threads and suspends the
 * calling coroutine until it returns; for blocking calls weft cannot make
 * asynchronous (getaddrinfo, a library doing its own IO). result, when not
 * NULL, receives fn's return value. A call whose deadline passes or which is
 * cancelled before fn has started returns -ETIMEDOUT or -ECANCELED and fn never
 * runs; once fn has started the call waits for it. From a plain thread, fn runs
 * on the calling thread. Returns 0, -EINVAL (fn NULL), -EAGAIN (no helper
 * thread could be started), -ETIMEDOUT, -ECANCELED.
 */
WEFT_API int weft_offload(weft_fn fn, void *arg, void **result);

/* ---- synchronization and channels (runtime/sync/) ---- */

/*
 * Locks, conditions, wait groups, semaphores and channels that suspend only the
 * waiting coroutine. Every call may be made from any thread: a plain thread that
 * must wait blocks on a futex, and coroutines and plain threads may wait on the
 * same object. The types are plain structs, usable as static or embedded
 * values; their fields are private and their sizes fixed. A blocking call that
 * the caller's deadline or cancellation interrupts returns -ETIMEDOUT or
 * -ECANCELED and leaves the object as if it had not been called.
 */

struct weft__wnode;
struct weft__wlist { struct weft__wnode *_head, *_tail; };   /* waiters, private */

/*
 * A mutual-exclusion lock. A waiter suspends; a waiter that has waited longer
 * than a millisecond is handed the lock directly at the next unlock, so no
 * waiter starves. Owned by the coroutine (or plain thread) that locked it.
 */
typedef struct weft_mutex {
    uint32_t           _state;   /* locked and has-waiters bits */
    uint32_t           _lock;    /* guards _wait */
    uintptr_t          _owner;   /* the owner's token, 0 when free */
    struct weft__wlist _wait;
} weft_mutex;
#define WEFT_MUTEX_INIT { 0, 0, 0, { 0, 0 } }

/* Locks m, waiting as long as it takes. Returns 0, -EINVAL (m NULL),
 * -EDEADLK (the caller holds it), -ETIMEDOUT, -ECANCELED. */
WEFT_API int weft_mutex_lock(weft_mutex *m);
/* Locks m if it is free. Returns 0, -EINVAL, -EBUSY. */
WEFT_API int weft_mutex_trylock(weft_mutex *m);
/* Unlocks m. Returns 0, -EINVAL, -EPERM (the caller does not hold it). */
WEFT_API int weft_mutex_unlock(weft_mutex *m);

/* A condition variable, used with a weft_mutex. */
typedef struct weft_cond {
    uint32_t           _lock;    /* guards _wait */
    uint32_t           _pad;
    struct weft__wlist _wait;
} weft_cond;
#define WEFT_COND_INIT { 0, 0, { 0, 0 } }

/* Unlocks m, waits for a signal, and locks m again (also when it fails).
 * Spurious wake-ups do not happen, but callers should loop on their predicate.
 * Returns 0, -EINVAL (NULL), -EPERM (m not held), -ETIMEDOUT, -ECANCELED. */
WEFT_API int weft_cond_wait(weft_cond *c, weft_mutex *m);
/* Wakes one waiter, or all. Return 0 or -EINVAL. */
WEFT_API int weft_cond_signal(weft_cond *c);
WEFT_API int weft_cond_broadcast(weft_cond *c);

/* A wait group: a counter that weft_wg_wait waits to see at zero. */
typedef struct weft_wg {
    uint32_t           _lock;    /* guards _count and _wait */
    int32_t            _count;
    struct weft__wlist _wait;
} weft_wg;
#define WEFT_WG_INIT { 0, 0, { 0, 0 } }

/* Adds n (may be negative) to the counter; at zero every waiter is released.
 * Returns 0, -EINVAL (NULL, or the counter would go below zero or overflow). */
WEFT_API int weft_wg_add(weft_wg *wg, int n);
/* weft_wg_add(wg, -1). */
WEFT_API int weft_wg_done(weft_wg *wg);
/* Waits until the counter is zero. Returns 0, -EINVAL, -ETIMEDOUT, -ECANCELED. */
WEFT_API int weft_wg_wait(weft_wg *wg);

/* A counting semaphore. Units go to waiters in arrival order. */
typedef struct weft_sem {
    uint32_t           _lock;    /* guards _count and _wait */
    uint32_t           _count;
    struct weft__wlist _wait;
} weft_sem;
#define WEFT_SEM_INIT(value) { 0, (value), { 0, 0 } }

/* Sets the count; only while nobody uses s. Returns 0 or -EINVAL. */
WEFT_API int weft_sem_init(weft_sem *s, unsigned value);
/* Takes one unit, waiting for one. Returns 0, -EINVAL, -ETIMEDOUT, -ECANCELED. */
WEFT_API int weft_sem_acquire(weft_sem *s);
/* Gives one unit back. Returns 0, -EINVAL, -EOVERFLOW. */
WEFT_API int weft_sem_release(weft_sem *s);

/*
 * Channels, with Go's semantics: an unbuffered channel (capacity 0) completes a
 * send only when a receiver takes the element; a buffered one keeps FIFO order.
 * Elements are copied in and out, elem_size bytes each.
 */
typedef struct weft_chan weft_chan;

/* Returns 0, -EINVAL (ch NULL, elem_size 0 or too large), -ENOMEM. */
WEFT_API int weft_chan_create(weft_chan **ch, size_t elem_size, size_t capacity);
/* Sends a copy of *elem. Returns 0, -EINVAL, -EPIPE (closed, before or while
 * waiting: the element was not sent), -ETIMEDOUT, -ECANCELED. */
WEFT_API int weft_chan_send(weft_chan *ch, const void *elem);
/* Receives into *elem. Returns 0, -EINVAL, -EPIPE (closed and drained),
 * -ETIMEDOUT, -ECANCELED. */
WEFT_API int weft_chan_recv(weft_chan *ch, void *elem);
/* As send and recv, but -EAGAIN where they would wait. */
WEFT_API int weft_chan_try_send(weft_chan *ch, const void *elem);
WEFT_API int weft_chan_try_recv(weft_chan *ch, void *elem);
/* Closes ch and wakes every waiter. Returns 0, -EINVAL, -EPIPE (closed already). */
WEFT_API int weft_chan_close(weft_chan *ch);
/* Frees ch. Returns 0, -EINVAL, -EBUSY (someone waits on it: nothing freed). */
WEFT_API int weft_chan_destroy(weft_chan *ch);

#define WEFT_SEND 1
#define WEFT_RECV 2
typedef struct weft_sel {
    weft_chan *chan;   /* NULL: the case is ignored */
    int        op;     /* WEFT_SEND or WEFT_RECV */
    void      *elem;   /* what to send, or where to receive */
} weft_sel;

/*
 * Completes exactly one of the n cases: chosen at random among those ready, or
 * the first to become ready. A case on a closed channel is ready: its send
 * fails, its receive fails once drained, and that case completes with its
 * chan set to NULL, so that a loop selecting again ignores it (Go's idiom of
 * setting a closed channel to nil). Returns the case's index, or -EINVAL
 * (cases NULL, a bad op, no channel at all), -ENOMEM (more than 16 cases,
 * and no memory for their bookkeeping: no case completed), -ETIMEDOUT,
 * -ECANCELED.
 */
WEFT_API int weft_select(weft_sel *cases, size_t n);

/* ---- seeing inside: the dump, names, statistics (docs/debugging.md) ---- */

/* The longest name weft_set_name() keeps, in bytes, without the NUL. */
#define WEFT_NAME_MAX 23

/*
 * Names the calling coroutine for weft_dump() and the gdb helper; the name is
 * copied. "" removes it. A coroutine. Returns 0, -EINVAL (name NULL),
 * -ENAMETOOLONG (longer than WEFT_NAME_MAX: the old name stays), -EPERM
 * (not a coroutine).
 */
WEFT_API int weft_set_name(const char *name);

/*
 * Writes a report of every coroutine of every runtime in the process to fd:
 * a summary of how many wait where, then each coroutine with its id, name or
 * entry function, where it was spawned, its state (running on a worker,
 * runnable, or waiting, for what and for how long) and its backtrace. The
 * workers go on meanwhile; each coroutine is copied as it is seen, so one
 * that moves or ends during the dump shows as it was, or not at all. A
 * coroutine running on another worker gets its frames from that worker's
 * thread, by the stall signal (weft_config.stall_signal), waited for a bounded
 * time for all workers together (docs/debugging.md); without that signal it
 * has none.
 * Backtraces need libunwind at build time (docs/debugging.md). Any thread,
 * not a signal handler (see weft_config.dump_signal). Returns 0, -EBADF
 * (fd not open), -ENOMEM, or the error of write(2).
 */
WEFT_API int weft_dump(int fd);

/* Counters of a runtime, summed over its workers by weft_stats_get(). */
typedef struct weft_stats {
    uint64_t alive;            /* coroutines spawned and not finished */
    uint64_t running;          /* of those, running on a worker now */
    uint64_t runnable;         /* ... queued to run */
    uint64_t waiting;          /* ... parked until something happens */
    uint64_t spawned;          /* since the runtime was made */
    uint64_t finished;
    uint64_t steals;           /* tasks taken from another worker's queue */
    uint64_t worker_parks;     /* times a worker found nothing to do and slept */
    uint64_t worker_wakes;     /* times a sleeping worker was woken for work */
    uint64_t uring_submitted;  /* io_uring requests submitted */
    uint64_t uring_completed;  /* io_uring completions reaped */
    uint64_t epoll_waits;      /* descriptor waits registered with epoll */
    uint64_t epoll_events;     /* readiness events reaped from epoll */
    uint64_t timers_armed;     /* deadlines and sleeps that armed a timer */
    uint64_t stack_committed;  /* bytes of coroutine stacks the runtime holds */
    uint64_t busy_ns;          /* time the workers spent running coroutines, summed */
    unsigned workers;
    unsigned crowded;          /* 1 while the runtime counts itself crowded (weft_config.crowded_pct) */
    uint64_t crowded_ns;       /* the time it has, summed */
    uint64_t worker_takeovers; /* times the monitor found a worker held by one coroutine and moved
                                * what waited on it to the other workers (docs/design.md) */
} weft_stats;

/*
 * Fills *out with rt's counters. Each is read without stopping the workers,
 * so the figures are a moment's, not one instant's: alive, running, runnable
 * and waiting may disagree by a few. Any thread. Returns 0, -EINVAL (rt or
 * out NULL), -ECHILD (rt belongs to the parent of a fork()).
 */
WEFT_API int weft_stats_get(weft_rt *rt, weft_stats *out);

/*
 * Stores the busy time of rt's workers 0 .. n-1 (nanoseconds spent running
 * coroutines) in busy_ns[]; n may be smaller or larger than the number of
 * workers. Any thread. Returns the number of workers, -EINVAL (rt NULL, or
 * busy_ns NULL with n above 0), -ECHILD.
 */
WEFT_API int weft_stats_busy(weft_rt *rt, uint64_t *busy_ns, unsigned n);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_H */
