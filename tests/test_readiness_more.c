/* SPDX-License-Identifier: MIT */
/* Readiness kept across calls on the epoll backend, beyond the read side that
 * test_readiness.c covers: writers on a full socket, several acceptors of one
 * listener, a writer behind a connect in progress, MSG_DONTWAIT on a drained
 * socket, weft_close of a descriptor whose waiter is on a sweep list, a
 * registration moved between workers, and fork() with waits outstanding.
 * Each runs on both backends, where the io_uring one is the reference, on 1,
 * 2 and 4 workers where more than one worker makes a difference (the connect
 * tests on 1 and 2, see there). A lost
 * wake-up shows as -ETIMEDOUT at a generous deadline, never as a hang. */
#define _GNU_SOURCE
#include "readiness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const unsigned several[] = { 2, 4 };

/* Far longer than any wait these tests expect: a call still waiting then
 * has missed its wake-up. */
#define GIVE_UP_NS (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND ? 60000000000u : 10000000000u)

/* Waits, without a system call of weft's, until fd is readable: plain poll(2)
 * with a timeout, so that data sent is there before a test looks. */
static bool arrived(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, 10000) == 1;
}

/* Yields until *flag is set, then lets the coroutine that set it reach its
 * wait. */
static void await_flag(_Atomic bool *flag)
{
    while (!atomic_load(flag))
        weft_yield();
    weft_sleep(SETTLE_NS);
}

/* ---- where a coroutine runs ------------------------------------------------------- */

/* fn(arg) in a coroutine pinned to a worker other than `avoid` (any worker
 * if avoid is -1). */
struct placed {
    weft_fn     fn;
    void       *arg;
    int         avoid;
    int         worker;        /* where it ran */
    _Atomic int state;         /* 0: not yet; 1: placed, running fn; 2: on `avoid`, gave up */
};

static void *placed_entry(void *arg)
{
    struct placed *p = arg;
    weft_pin();
    p->worker = weft_worker();
    if (p->worker == p->avoid) {
        weft_unpin();
        atomic_store(&p->state, 2);
        return NULL;
    }
    atomic_store(&p->state, 1);
    return p->fn(p->arg);
}

/* Spawns p's coroutine until one lands on a worker other than p->avoid. After
 * every other spawn the caller spins a while without yielding, so that its
 * own worker cannot take the new coroutine and another worker steals it;
 * after the others it yields at once, and its own worker most likely runs
 * it. Returns 0, or -EAGAIN if none got elsewhere. */
#define SPIN_NS (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND ? 50000000u : 2000000u)

static int spawn_placed(weft_task **t, struct placed *p)
{
    for (int tries = 0; tries < 1000; tries++) {
        atomic_store(&p->state, 0);
        int e = weft_spawn(t, placed_entry, p);
        if (e != 0)
            return e;
        uint64_t spin_until = weft_now() + (tries % 2 ? 0 : SPIN_NS);
        while (!atomic_load(&p->state) && weft_now() < spin_until)
            ;
        while (!atomic_load(&p->state))
            weft_yield();
        if (atomic_load(&p->state) == 1)
            return 0;
        weft_join(*t, NULL);
    }
    return -EAGAIN;
}

/* ---- 1. the write side ------------------------------------------------------------ */

/* A small send buffer: many rounds of a full socket for few bytes (a Unix
 * stream socket's buffer holds what its peer has not read yet). */
#define SMALL_BUF 4096
#define WRITE_LEN (RUNNING_ON_VALGRIND ? 32768u : 262144u)   /* per writer */

struct writer {
    int            fd;
    char           byte;
    size_t         wrote;
    ssize_t        err;
    _Atomic bool   started;
};

/* Writes WRITE_LEN bytes of w->byte in pieces of various sizes, each piece
 * written whole (the calls looped until it is). */
static void *write_all(void *arg)
{
    struct writer *w = arg;
    char buf[3000];
    memset(buf, w->byte, sizeof buf);
    weft_deadline(weft_now() + GIVE_UP_NS);
    atomic_store(&w->started, true);
    size_t piece = 1;
    while (w->wrote < WRITE_LEN) {
        size_t len = piece < WRITE_LEN - w->wrote ? piece : WRITE_LEN - w->wrote;
        for (size_t off = 0; off < len;) {
            ssize_t r = weft_write(w->fd, buf, len - off);
            if (r <= 0) {
                w->err = r ? r : -EIO;
                return NULL;
            }
            off += (size_t)r;
            w->wrote += (size_t)r;
        }
        piece = piece * 7 % sizeof buf + 1;
    }
    return NULL;
}

/* n writers fill a Unix stream socket with a small send buffer until their writes find it
 * full (its write side drained) and wait; then the peer reads it all. Every
 * writer finishes, and every byte of each arrives. */
static void *writers_on_a_full_socket(void *arg)
{
    struct run *run = arg;
    int n = run->n, sv[2];
    FAIL_IF(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0);
    int small = SMALL_BUF;
    FAIL_IF(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) != 0);
    struct writer w[4];
    weft_task *t[4];
    for (int i = 0; i < n; i++) {
        w[i] = (struct writer){ .fd = sv[0], .byte = (char)('a' + i) };
        FAIL_IF(weft_spawn(&t[i], write_all, &w[i]) != 0);
    }
    for (int i = 0; i < n; i++)
        await_flag(&w[i].started);
    /* Full soon: nobody reads. */
    struct pollfd p = { .fd = sv[0], .events = POLLOUT };
    for (int i = 0; i < 10000 && poll(&p, 1, 0) != 0; i++)
        weft_sleep(1000000);
    FAIL_IF(poll(&p, 1, 0) != 0);

    size_t got[4] = { 0 }, total = 0;
    char buf[5000];
    weft_deadline(weft_now() + GIVE_UP_NS);
    while (total < (size_t)n * WRITE_LEN) {
        ssize_t r = weft_read(sv[1], buf, sizeof buf);
        FAIL_IF(r <= 0);   /* -ETIMEDOUT: a writer was left waiting with room to write */
        for (ssize_t k = 0; k < r; k++) {
            unsigned i = (unsigned)(buf[k] - 'a');
            FAIL_IF(i >= (unsigned)n);
            got[i]++;
        }
        total += (size_t)r;
    }
    weft_deadline(0);
    for (int i = 0; i < n; i++) {
        FAIL_IF(weft_join(t[i], NULL) != 0);
        FAIL_IF(w[i].err != 0);
        FAIL_IF(w[i].wrote != WRITE_LEN);
        FAIL_IF(got[i] != WRITE_LEN);
    }
    weft_close(sv[0]);
    weft_close(sv[1]);
    return NULL;
}

Test(readiness_more, a_writer_on_a_full_socket_finishes_once_the_peer_reads)
{
    run_all(1, writers_on_a_full_socket);
}

Test(readiness_more, two_writers_on_a_full_socket_both_finish)
{
    run_all(2, writers_on_a_full_socket);
}

Test(readiness_more, four_writers_on_a_full_socket_all_finish)
{
    run_all(4, writers_on_a_full_socket);
}

/* ---- 2. several acceptors --------------------------------------------------------- */

#define ACCEPTORS 4
#define BURSTS    4

struct acceptors {
    int          lfd;
    _Atomic int  waiting;
};

/* Accepts one connection; returns 0, or the error. */
static void *accept_one(void *arg)
{
    struct acceptors *a = arg;
    weft_deadline(weft_now() + GIVE_UP_NS);
    atomic_fetch_add(&a->waiting, 1);
    int fd = weft_accept(a->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return (void *)(intptr_t)fd;
    weft_close(fd);
    return NULL;
}

/* Four coroutines wait in weft_accept on one listener, each for one
 * connection; four connections arrive at once, made by plain connect(2) with
 * no yield between them, so that on one worker they make one edge. The
 * acceptor it wakes takes one and must pass the edge on: the others made
 * their system call before they waited, so the periodic check does not look
 * at them, and without the hand-over they wait until their deadline. */
static void *acceptors_of_a_burst(void *arg)
{
    (void)arg;
    struct acceptors a = { .lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) };
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    FAIL_IF(a.lfd < 0);
    FAIL_IF(bind(a.lfd, (struct sockaddr *)&sa, sizeof sa) != 0);
    FAIL_IF(listen(a.lfd, ACCEPTORS) != 0);
    FAIL_IF(getsockname(a.lfd, (struct sockaddr *)&sa, &len) != 0);
    for (int burst = 0; burst < BURSTS; burst++) {
        weft_task *t[ACCEPTORS];
        atomic_store(&a.waiting, 0);
        for (int i = 0; i < ACCEPTORS; i++)
            FAIL_IF(weft_spawn(&t[i], accept_one, &a) != 0);
        while (atomic_load(&a.waiting) < ACCEPTORS)
            weft_yield();
        weft_sleep(SETTLE_NS);   /* each is in its wait */
        int c[ACCEPTORS];
        for (int i = 0; i < ACCEPTORS; i++) {
            c[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            FAIL_IF(c[i] < 0);
            FAIL_IF(connect(c[i], (struct sockaddr *)&sa, sizeof sa) != 0);
        }
        for (int i = 0; i < ACCEPTORS; i++) {
            void *r;
            FAIL_IF(weft_join(t[i], &r) != 0);
            FAIL_IF(r != NULL);   /* -ETIMEDOUT: an acceptor missed its connection */
        }
        for (int i = 0; i < ACCEPTORS; i++)
            close(c[i]);
    }
    FAIL_IF(weft_close(a.lfd) != 0);
    return NULL;
}

Test(readiness_more, several_acceptors_take_every_connection_of_a_burst)
{
    run_all(0, acceptors_of_a_burst);
}

/* ---- 3. a writer behind a connect in progress ------------------------------------- */

struct connecting {
    int           fd;
    struct sockaddr_in sa;
    bool          by_poll;   /* the one behind waits in weft_poll(POLLOUT), else weft_write */
    _Atomic bool  started;
    intptr_t      result;
};

static void *connect_it(void *arg)
{
    struct connecting *c = arg;
    weft_deadline(weft_now() + GIVE_UP_NS);
    atomic_store(&c->started, true);
    return (void *)(intptr_t)weft_connect(c->fd, (struct sockaddr *)&c->sa, sizeof c->sa);
}

static void *write_behind(void *arg)
{
    struct connecting *c = arg;
    weft_deadline(weft_now() + GIVE_UP_NS);
    atomic_store(&c->started, true);
    c->result = c->by_poll ? weft_poll(c->fd, POLLOUT) : weft_write(c->fd, "x", 1);
    return NULL;
}

/* A connect to a listener whose queue is full stays in progress until the
 * listener accepts; a writer (or a poll for POLLOUT) on the same socket waits
 * behind it, on another worker where there are several. The connect is the
 * runtime's first wait on a descriptor. Both complete once the listener
 * accepts. */
static void *writer_behind_a_connect(void *arg)
{
    struct run *run = arg;
    struct connecting con = { .by_poll = run->n }, wr = { .by_poll = run->n };
    int fill[8], nfill;
    int lfd = full_listener(&con.sa, fill, 8, &nfill);
    FAIL_IF(lfd < 0);
    con.fd = wr.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FAIL_IF(con.fd < 0);

    weft_task *ct, *wt;
    struct placed cp = { .fn = connect_it, .arg = &con, .avoid = -1 };
    FAIL_IF(spawn_placed(&ct, &cp) != 0);
    await_flag(&con.started);
    struct placed wp = { .fn = write_behind, .arg = &wr, .avoid = run->workers > 1 ? cp.worker : -1 };
    FAIL_IF(spawn_placed(&wt, &wp) != 0);
    await_flag(&wr.started);

    /* Room in the queue: the connect's next SYN gets in. The last of the
     * fillers, not taken either, goes first, so as not to take the room. */
    close(fill[--nfill]);
    int a0 = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    FAIL_IF(a0 < 0);
    void *r;
    FAIL_IF(weft_join(ct, &r) != 0);
    FAIL_IF((intptr_t)r != 0);
    FAIL_IF(weft_join(wt, NULL) != 0);
    if (wr.by_poll)
        FAIL_IF(wr.result < 0 || !(wr.result & POLLOUT));   /* -ETIMEDOUT: the edge stopped at the connect */
    else
        FAIL_IF(wr.result != 1);   /* -ETIMEDOUT: the edge stopped at the connect */
    close(a0);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    weft_close(con.fd);
    close(lfd);
    return NULL;
}

/* Each run waits about a second for the kernel to send its SYN again: one
 * worker and two (the writer on the other worker) cover both cases, and four
 * would add nothing but the wait. */
static const unsigned connect_counts[] = { 1, 2 };

Test(readiness_more, a_writer_behind_a_connect_in_progress_completes, .timeout = 120)
{
    FOR_EACH_CONFIG(b, w, connect_counts)
        run_one(b, w, 0, writer_behind_a_connect);
}

Test(readiness_more, a_poll_for_pollout_behind_a_connect_in_progress_completes, .timeout = 120)
{
    FOR_EACH_CONFIG(b, w, connect_counts)
        run_one(b, w, 1, writer_behind_a_connect);
}

/* ---- 4. MSG_DONTWAIT on a drained socket ------------------------------------------ */

/* A poll of sv[0] that waits until a deadline a millisecond away (so the
 * backend knows sv[0], whatever the timing), then a short read of two bytes:
 * sv[0] is known drained. */
static const char *drain(int sv[2])
{
    char buf[64];
    uint64_t before = weft_deadline(weft_now() + 1000000);
    int r = weft_poll(sv[0], POLLIN);
    weft_deadline(before);
    if (r != -ETIMEDOUT)
        return "the poll found data";
    if (write(sv[1], "ab", 2) != 2 || !arrived(sv[0]))
        return "the write";
    if (weft_read(sv[0], buf, sizeof buf) != 2)
        return "the short read";
    return NULL;
}

/* With MSG_DONTWAIT a call on a drained socket is made: -EAGAIN at once when
 * nothing came, the data when some did, before any edge was taken. */
static void *dontwait_on_drained(void *arg)
{
    struct run *run = arg;
    int sv[2];
    if (run->n)
        tcp_pair(sv);
    else
        FAIL_IF(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0);
    const char *err = drain(sv);
    if (err)
        return (void *)err;
    char buf[64];
    uint64_t waits = epoll_waits(run->rt);
    weft_deadline(weft_now() + GIVE_UP_NS);
    FAIL_IF(weft_recv(sv[0], buf, sizeof buf, MSG_DONTWAIT) != -EAGAIN);
    FAIL_IF(write(sv[1], "cd", 2) != 2 || !arrived(sv[0]));
    FAIL_IF(weft_recv(sv[0], buf, sizeof buf, MSG_DONTWAIT) != 2);   /* -EAGAIN: the mark was believed */
    FAIL_IF(memcmp(buf, "cd", 2) != 0);
    FAIL_IF(write(sv[1], "ef", 2) != 2 || !arrived(sv[0]));
    struct iovec iov = { buf, sizeof buf };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    FAIL_IF(weft_recvmsg(sv[0], &m, MSG_DONTWAIT) != 2);
    FAIL_IF(memcmp(buf, "ef", 2) != 0);
    FAIL_IF(weft_recvmsg(sv[0], &m, MSG_DONTWAIT) != -EAGAIN);
    FAIL_IF(write(sv[1], "g", 1) != 1 || !arrived(sv[0]));
    FAIL_IF(weft_recvfrom(sv[0], buf, sizeof buf, MSG_DONTWAIT, NULL, NULL) != 1);
    FAIL_IF(buf[0] != 'g');
    weft_deadline(0);
    FAIL_IF(epoll_waits(run->rt) != waits);   /* none of them waited */
    weft_close(sv[0]);
    weft_close(sv[1]);
    return NULL;
}

Test(readiness_more, msg_dontwait_on_a_drained_unix_stream_makes_the_call)
{
    run_all(0, dontwait_on_drained);
}

Test(readiness_more, msg_dontwait_on_a_drained_tcp_socket_makes_the_call)
{
    run_all(1, dontwait_on_drained);
}

/* ---- 5. weft_close of a descriptor a waiter on a sweep list waits on -------------- */

struct closed_under {
    int          sv[2];
    _Atomic bool waiting;
    ssize_t      read_result, write_result;
};

/* Pinned, so that its waits are on the worker that registered the socket:
 * drains sv[0], then waits to read it without a system call (a wait on the
 * sweep list). */
static void *wait_drained(void *arg)
{
    struct closed_under *c = arg;
    weft_pin();
    weft_deadline(weft_now() + GIVE_UP_NS);
    const char *err = drain(c->sv);
    if (err)
        return (void *)err;
    char buf[64];
    atomic_store(&c->waiting, true);
    c->read_result = weft_read(c->sv[0], buf, sizeof buf);
    return NULL;
}

/* A writer on the same socket, its send buffer full. */
static void *wait_full(void *arg)
{
    struct closed_under *c = arg;
    weft_deadline(weft_now() + GIVE_UP_NS);
    char buf[4096];
    memset(buf, 'w', sizeof buf);
    ssize_t r;
    while ((r = weft_send(c->sv[0], buf, sizeof buf, MSG_DONTWAIT)) > 0)
        ;
    if (r != -EAGAIN) {
        c->write_result = r;
        return NULL;
    }
    c->write_result = weft_write(c->sv[0], buf, sizeof buf);
    return NULL;
}

static void *write_later(void *arg)
{
    int fd = (int)(intptr_t)arg;
    weft_sleep(2000000);
    return (void *)(intptr_t)weft_write(fd, "late", 4);
}

/* weft_close fails both waiters with -EBADF (docs/api/io.md, weft_close),
 * nothing of theirs is used after they return, and a new socket given the
 * number works at once: a read of data already there makes no wait, and a
 * read that waits gets what comes. */
static void *close_under_a_swept_wait(void *arg)
{
    struct run *run = arg;
    struct closed_under c = { .read_result = 1, .write_result = 1 };
    tcp_pair(c.sv);
    int small = SMALL_BUF;
    FAIL_IF(setsockopt(c.sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) != 0);
    FAIL_IF(setsockopt(c.sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small) != 0);
    weft_task *rt, *wt;
    FAIL_IF(weft_spawn(&rt, wait_drained, &c) != 0);
    await_flag(&c.waiting);
    weft_sleep(SETTLE_NS);   /* outlives a sweep or two: checked, and kept on the list */
    FAIL_IF(weft_spawn(&wt, wait_full, &c) != 0);
    weft_sleep(SETTLE_NS);
    int old = c.sv[0];
    FAIL_IF(weft_close(old) != 0);
    void *msg;
    FAIL_IF(weft_join(rt, &msg) != 0);
    if (msg)
        return msg;
    FAIL_IF(weft_join(wt, NULL) != 0);
    FAIL_IF(c.read_result != -EBADF);
    FAIL_IF(c.write_result != -EBADF);

    /* The number again, for a Unix stream pair. On io_uring it may be held a
     * moment by a placeholder (weft_close): try until it is free. */
    int nv[2] = { -1, -1 }, tries = 0;
    while (nv[0] != old) {
        FAIL_IF(++tries > 1000);
        if (nv[0] >= 0) {
            close(nv[0]);
            close(nv[1]);
            weft_sleep(1000000);
        }
        FAIL_IF(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, nv) != 0);
        if (nv[1] == old) {
            nv[1] = nv[0];
            nv[0] = old;
        }
    }
    char buf[64];
    FAIL_IF(write(nv[1], "new", 3) != 3);
    uint64_t waits = epoll_waits(run->rt);
    weft_deadline(weft_now() + GIVE_UP_NS);
    FAIL_IF(weft_read(nv[0], buf, sizeof buf) != 3);
    FAIL_IF(epoll_waits(run->rt) != waits);   /* read at once */
    FAIL_IF(memcmp(buf, "new", 3) != 0);
    weft_task *lt;
    FAIL_IF(weft_spawn(&lt, write_later, (void *)(intptr_t)nv[1]) != 0);
    FAIL_IF(weft_read(nv[0], buf, sizeof buf) != 4);   /* -ETIMEDOUT: the old registration was believed */
    FAIL_IF(memcmp(buf, "late", 4) != 0);
    FAIL_IF(weft_join(lt, &msg) != 0 || (intptr_t)msg != 4);
    weft_deadline(0);
    weft_close(nv[0]);
    weft_close(nv[1]);
    weft_close(c.sv[1]);
    return NULL;
}

Test(readiness_more, weft_close_fails_a_swept_waiter_and_the_number_works_again)
{
    run_all(0, close_under_a_swept_wait);
}

/* ---- 6. a waiter on another worker's registration --------------------------------- */

struct moved {
    int          fd;
    char         got;
    ssize_t      result;
    _Atomic bool waiting;
    bool         poll;   /* weft_poll(POLLIN) then the read, else the read */
};

static void *read_here(void *arg)
{
    struct moved *m = arg;
    weft_deadline(weft_now() + GIVE_UP_NS);
    atomic_store(&m->waiting, true);
    if (m->poll) {
        int r = weft_poll(m->fd, POLLIN);
        if (r < 0 || !(r & POLLIN)) {
            m->result = r < 0 ? r : -EIO;
            return NULL;
        }
    }
    m->result = weft_read(m->fd, &m->got, 1);
    return NULL;
}

/* Rounds of: a coroutine pinned to one worker waits to read a socket, then one
 * pinned to another worker waits too (the registration moves to its set, with
 * the first one's place); two bytes come in one write; each reader gets one.
 * The workers swap roles each round, so the registration moves back and forth. */
static void *waiter_on_another_workers_set(void *arg)
{
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    int last = -1;
    for (int round = 0; round < 6; round++) {
        struct moved a = { .fd = sv[0], .poll = round % 3 == 2 }, b = { .fd = sv[0], .poll = round % 2 };
        struct placed pa = { .fn = read_here, .arg = &a, .avoid = last };
        weft_task *ta, *tb;
        FAIL_IF(spawn_placed(&ta, &pa) != 0);
        await_flag(&a.waiting);
        struct placed pb = { .fn = read_here, .arg = &b, .avoid = pa.worker };
        FAIL_IF(spawn_placed(&tb, &pb) != 0);
        await_flag(&b.waiting);
        last = pa.worker;
        FAIL_IF(write(sv[1], "xy", 2) != 2);
        FAIL_IF(weft_join(ta, NULL) != 0);
        FAIL_IF(weft_join(tb, NULL) != 0);
        FAIL_IF(a.result != 1);   /* -ETIMEDOUT: the wake-up went to the old set */
        FAIL_IF(b.result != 1);
        FAIL_IF(a.got == b.got || (a.got != 'x' && a.got != 'y') || (b.got != 'x' && b.got != 'y'));
    }
    weft_close(sv[0]);
    weft_close(sv[1]);
    return NULL;
}

Test(readiness_more, waiters_on_a_registration_moved_between_workers_complete)
{
    FOR_EACH_CONFIG(b, w, several)
        run_one(b, w, 0, waiter_on_another_workers_set);
}

/* ---- 7. fork with waits on sweep lists -------------------------------------------- */

/* See test_fork.c: the sanitizers and qemu-user cannot follow a child of a
 * threaded process that starts threads. */
static bool child_threads_work(void)
{
    return !WEFT_TEST_SANITIZED && !emulated();
}

/* The child: echoes what comes on fd (the parent's socket, inherited) from a
 * runtime of its own, then waits for the end of the stream. */
static void *child_echo(void *arg)
{
    int fd = (int)(intptr_t)arg;
    weft_deadline(weft_now() + GIVE_UP_NS);
    char buf[64];
    ssize_t n = weft_read(fd, buf, sizeof buf);
    if (n <= 0)
        return (void *)(intptr_t)(n ? n : -EIO);
    for (ssize_t off = 0; off < n;) {
        ssize_t m = weft_write(fd, buf + off, (size_t)(n - off));
        if (m <= 0)
            return (void *)(intptr_t)(m ? m : -EIO);
        off += m;
    }
    n = weft_read(fd, buf, sizeof buf);
    return (void *)(intptr_t)(n == 0 ? 0 : n < 0 ? n : -EIO);
}

struct forked {
    int          mine[2];    /* the parent's: its reader waits on mine[0] */
    int          child[2];   /* child[0] to the child, child[1] the parent's end */
    _Atomic bool waiting;
    ssize_t      result;
    char         got[4];
};

static void *parent_reader(void *arg)
{
    struct forked *f = arg;
    weft_pin();
    weft_deadline(weft_now() + GIVE_UP_NS);
    const char *err = drain(f->mine);
    if (err)
        return (void *)err;
    atomic_store(&f->waiting, true);
    f->result = weft_read(f->mine[0], f->got, sizeof f->got);
    return NULL;
}

/* A coroutine waits (drained, on a sweep list) on one socket, and the child
 * socket was waited on in the parent too; then fork(). The child runs its own
 * runtime on the inherited socket; the parent talks to it and completes its
 * own wait. */
static void *fork_with_waits(void *arg)
{
    struct run *run = arg;
    struct forked f = { .result = 0 };
    tcp_pair(f.mine);
    tcp_pair(f.child);
    /* The parent knows child[0] too, drained, its registration kept. */
    const char *err = drain(f.child);
    if (err)
        return (void *)err;
    weft_task *t;
    FAIL_IF(weft_spawn(&t, parent_reader, &f) != 0);
    await_flag(&f.waiting);
    weft_sleep(SETTLE_NS);

    pid_t pid = fork();
    if (pid == 0) {
        weft_config cfg = { .workers = run->workers, .io_backend = run->backend };
        void *res = (void *)-1;
        int r = weft_main(&cfg, child_echo, (void *)(intptr_t)f.child[0], &res);
        _exit(r == 0 && res == NULL ? 0 : 1);
    }
    FAIL_IF(pid < 0);
    FAIL_IF(weft_close(f.child[0]) != 0);   /* the child's now */
    weft_deadline(weft_now() + GIVE_UP_NS);
    char buf[8];
    FAIL_IF(weft_write(f.child[1], "hey", 3) != 3);
    size_t got = 0;
    while (got < 3) {
        ssize_t n = weft_read(f.child[1], buf + got, sizeof buf - got);
        FAIL_IF(n <= 0);
        got += (size_t)n;
    }
    FAIL_IF(memcmp(buf, "hey", 3) != 0);
    FAIL_IF(shutdown(f.child[1], SHUT_WR) != 0);
    FAIL_IF(weft_write(f.mine[1], "done", 4) != 4);
    FAIL_IF(weft_join(t, NULL) != 0);
    FAIL_IF(f.result != 4 || memcmp(f.got, "done", 4) != 0);
    int status = 0;
    uint64_t give_up = weft_now() + GIVE_UP_NS;
    for (;;) {   /* reaped without blocking the worker; killed at the deadline */
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (weft_now() > give_up) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return "the child hung";
        }
        weft_sleep(1000000);
    }
    weft_deadline(0);
    FAIL_IF(!WIFEXITED(status) || WEXITSTATUS(status) != 0);
    weft_close(f.child[1]);
    weft_close(f.mine[0]);
    weft_close(f.mine[1]);
    return NULL;
}

Test(readiness_more, a_fork_with_waits_outstanding_leaves_both_sides_working)
{
    if (!child_threads_work())
        cr_skip("the sanitizers and qemu-user cannot follow a child of a threaded process that starts threads");
    run_all(0, fork_with_waits);
}
