/* SPDX-License-Identifier: MIT */
/*
 * The one place that chooses a worker's IO backend, and that knows more than
 * one backend: what the configuration and WEFT_IO ask for, the fallback to
 * epoll where the kernel refuses a ring (at creation for the whole runtime,
 * at a worker's start for that worker), Valgrind, and the calls that concern
 * every backend at once (weft_close, weft_cancel, a runtime's end). The
 * contract itself is io/backend.h.
 */
#include "backend.h"
#include "owned.h"
#include "base/sys.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- SIGPIPE on workers ------------------------------------------------------- */

/*
 * A write to a pipe whose reader has gone raises SIGPIPE on the writing
 * thread, and so does a write(2) (not a send with MSG_NOSIGNAL) to a socket
 * whose peer has gone. weft_send() passes MSG_NOSIGNAL, but no flag exists
 * for pipes, and a ring issues its writes as writes: so worker threads block
 * SIGPIPE, the signal stays pending on the thread that wrote, and the -EPIPE
 * that comes with it is the whole answer. The thread that wrote takes the
 * signal back: weft_write() on the epoll backend, the ring's owner as it
 * reaps a -EPIPE (io-wq threads block every signal themselves). A plain
 * thread's weft_write() is the plain write(2), with its signal.
 */
static sigset_t sigpipe_set(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    return set;
}

/* Whether this thread is a worker that blocked SIGPIPE itself, where the
 * thread that made its runtime had left it unblocked. */
static WEFT__TLS bool sigpipe_ours;

static void sigpipe_block(void)
{
    sigset_t set = sigpipe_set(), old;
    if (pthread_sigmask(SIG_BLOCK, &set, &old) == 0)
        sigpipe_ours = !sigismember(&old, SIGPIPE);
}

bool weft__sigpipe_is_ours(void)
{
    return sigpipe_ours;
}

void weft__sigpipe_unblock(void)
{
    sigset_t set = sigpipe_set();
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* A child forked by a worker (a coroutine that forks, to exec a program)
 * would otherwise start, and exec, with SIGPIPE blocked: a program it runs
 * would see EPIPE where it expects to die of the signal, as `yes | head`
 * does. The child's pending signals are empty, so none is lost. */
void weft__sigpipe_fork_child(void)
{
    if (!sigpipe_ours)
        return;
    sigpipe_ours = false;
    weft__sigpipe_unblock();
}

void weft__sigpipe_take(void)
{
    int saved = errno;   /* a coroutine's errno lives on this thread too */
    sigset_t set = sigpipe_set();
    struct timespec none = { 0, 0 };
    while (sigtimedwait(&set, NULL, &none) < 0 && errno == EINTR)
        ;
    errno = saved;
}

/* ---- choosing --------------------------------------------------------------------- */

int weft__io_choose(int configured)
{
#if WEFT_HAVE_URING
    if (configured != WEFT_IO_AUTO)
        return configured;
    const char *env = getenv("WEFT_IO");
    if (env && strcmp(env, "epoll") == 0)
        return WEFT_IO_EPOLL;
    if (env && strcmp(env, "uring") == 0)
        return WEFT_IO_URING;
    /* Valgrind holds its one lock across io_uring_enter, so every thread
     * stops while one worker sleeps in its ring. */
    if (weft__on_valgrind())
        return WEFT_IO_EPOLL;
    return WEFT_IO_AUTO;
#else
    return configured == WEFT_IO_URING ? -ENOSYS : WEFT_IO_EPOLL;
#endif
}

/* Gives w `b`, with a fresh state. */
static int give(struct weft__worker *w, const struct weft__backend *b, unsigned entries)
{
    int err = b->create(&w->io_state, entries);
    if (err)
        return err;
    w->io = b;
    return 0;
}

void weft__io_worker_destroy(struct weft__worker *w)
{
    if (w->io)
        w->io->destroy(w->io_state);
    w->io = NULL;
    w->io_state = NULL;
}

int weft__io_workers_create(weft_rt *rt, int backend, unsigned entries)
{
    int err;
#if WEFT_HAVE_URING
    for (unsigned i = 0; i < rt->nworkers && backend != WEFT_IO_EPOLL; i++) {
        if ((err = give(rt->workers[i], &weft__uring, entries)) == 0)
            continue;
        if (backend == WEFT_IO_URING)
            return err;
        backend = WEFT_IO_EPOLL;   /* refused here: every worker uses epoll */
        for (unsigned k = 0; k < i; k++)
            weft__io_worker_destroy(rt->workers[k]);
    }
#endif
    for (unsigned i = 0; i < rt->nworkers; i++)
        if (!rt->workers[i]->io && (err = give(rt->workers[i], &weft__epoll, entries)))
            return err;
    return 0;
}

void weft__io_worker_start(struct weft__worker *w)
{
    sigpipe_block();   /* a write to a reader that has gone gives -EPIPE alone */
    if (w->io->start(w) == 0)
        return;
    weft__io_worker_destroy(w);   /* this worker's coroutines use epoll */
    w->io = &weft__epoll;
    if (weft__epoll.create(&w->io_state, 0) != 0)   /* leaves the state NULL */
        fprintf(stderr, "weft: worker %u has neither an io_uring nor an epoll set; "
                        "its coroutines' waits for IO fail with -ENOMEM\n", w->index);
}

void weft__io_rt_destroy(weft_rt *rt)
{
    weft__epoll_destroy(rt);
    weft__offload_destroy(rt);
}

int weft__io_cancel(weft_task *t)
{
#if WEFT_HAVE_URING
    return weft__ring_cancel(t);   /* a request on a ring: its owner cancels it */
#else
    (void)t;
    return 0;
#endif
}

/* ---- weft_close ---------------------------------------------------------------- */

struct closing {
    int                      fd;
    unsigned                 rings;   /* rings that may have requests on fd */
    struct weft__ring_close *ring;    /* their part of the close, if any */
};

#if WEFT_HAVE_URING
static void count_rings(weft_rt *rt, void *arg)
{
    struct closing *c = arg;
    c->rings += weft__ring_close_count(rt, c->fd);
}
#endif

/* Fails the coroutines of rt waiting on the descriptor with -EBADF: on the
 * epoll backend at once, on io_uring through the notes of the close. */
static void forget_fd(weft_rt *rt, void *arg)
{
    struct closing *c = arg;
    weft__epoll_forget(rt, c->fd);
#if WEFT_HAVE_URING
    if (c->ring)
        weft__ring_close_post(rt, c->ring);
#endif
}

/*
 * A descriptor that rings may have requests on, queued or in flight, keeps
 * its number under a tombstone until they have let go of it, so that no
 * request reaches a new file given the number (io/uring.c); any
 * other is closed with close(2) at once.
 */
int weft__io_close(int fd)
{
    struct closing c = { .fd = fd };
    /* Handed over: first no reader may arm a receive any more, so that the
     * rings counted below are all that may have requests on fd. */
    struct weft__owned *o = weft__owned_close_begin(fd);
#if WEFT_HAVE_URING
    weft__each_runtime(count_rings, &c);
    int err = c.rings ? weft__ring_close_new(&c.ring, fd, c.rings) : 0;
    if (err) {
        if (o)
            weft__owned_close_end(o, err != -ENOMEM);   /* -EBADF: the number was not open */
        return err;
    }
#endif
    weft__each_runtime(forget_fd, &c);   /* coroutines waiting on fd, in any runtime, get -EBADF */
    if (o)
        weft__owned_close_end(o, true);
#if WEFT_HAVE_URING
    if (c.ring)
        return weft__ring_close_end(c.ring);
#endif
    /* close(2) releases the descriptor even when it reports EINTR: never retry. */
    int r = weft__sys_close(fd);
    return r < 0 && r != -EINTR ? r : 0;
}
