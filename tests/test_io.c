/* SPDX-License-Identifier: MIT */
/* Descriptor IO: a coroutine waiting on a pipe or socket suspends only
 * itself, and the calls report failures as negative errno values. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const unsigned io_workers[] = { 1, 2 };
#define IO_N (sizeof(io_workers) / sizeof(io_workers[0]))

/* How long a test sleeps so that the coroutines it started most likely wait
 * by then: longer where instrumentation slows them, on a busy machine. */
#define SETTLE_NS (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND ? 200000000u : 20000000u)

struct pingpong {
    int    in, out;      /* this side reads in and writes out */
    size_t rounds;
    bool   starts;
};

static void *player(void *arg)
{
    struct pingpong *p = arg;
    uint32_t v = 0;
    for (size_t i = 0; i < p->rounds; i++) {
        if (p->starts && weft_write(p->out, &v, sizeof v) != (ssize_t)sizeof v)
            return (void *)1;
        if (weft_read(p->in, &v, sizeof v) != (ssize_t)sizeof v)
            return (void *)2;
        v++;
        if (!p->starts && weft_write(p->out, &v, sizeof v) != (ssize_t)sizeof v)
            return (void *)1;
    }
    return (void *)(uintptr_t)v;
}

static void *pipe_pingpong(void *arg)
{
    size_t rounds = (size_t)(uintptr_t)arg;
    int ab[2], ba[2];
    if (pipe(ab) || pipe(ba))
        return (void *)100;
    struct pingpong a = { .in = ba[0], .out = ab[1], .rounds = rounds, .starts = true };
    struct pingpong b = { .in = ab[0], .out = ba[1], .rounds = rounds, .starts = false };
    weft_task *ta, *tb;
    weft_spawn(&tb, player, &b);
    weft_spawn(&ta, player, &a);
    void *ra, *rb;
    weft_join(ta, &ra);
    weft_join(tb, &rb);
    close(ab[0]);
    close(ba[0]);
    close(ba[1]);
    return ra;
}

Test(io, pipe_ping_pong_between_coroutines_keeps_every_message)
{
    FOR_EACH_BACKEND(b) {
        for (size_t i = 0; i < IO_N; i++) {
            size_t n = scaled(2000);
            uintptr_t v = (uintptr_t)run_with_io(io_workers[i], b, pipe_pingpong, (void *)n);
            cr_assert_geq(v, n, "final counter %lu after %zu rounds", (unsigned long)v, n);
        }
    }
}

struct xfer {
    int    fd;
    size_t bytes;
};

static void *sender(void *arg)
{
    struct xfer *x = arg;
    char buf[4096];
    size_t sent = 0;
    while (sent < x->bytes) {
        size_t n = x->bytes - sent < sizeof buf ? x->bytes - sent : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)((sent + i) & 0xff);
        ssize_t r = weft_send(x->fd, buf, n, 0);
        if (r <= 0)
            return (void *)1;
        sent += (size_t)r;
    }
    shutdown(x->fd, SHUT_WR);
    return NULL;
}

static void *receiver(void *arg)
{
    struct xfer *x = arg;
    char buf[3000];
    size_t got = 0;
    for (;;) {
        ssize_t r = weft_recv(x->fd, buf, sizeof buf, 0);
        if (r < 0)
            return (void *)1;
        if (r == 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != (char)((got + (size_t)i) & 0xff))
                return (void *)2;
        got += (size_t)r;
    }
    return (void *)(uintptr_t)(got == x->bytes ? 0 : 3);
}

static void *socketpair_transfer(void *arg)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return (void *)100;
    struct xfer s = { sv[0], (size_t)(uintptr_t)arg }, r = { sv[1], (size_t)(uintptr_t)arg };
    weft_task *ts, *tr;
    void *rs, *rr;
    weft_spawn(&tr, receiver, &r);
    weft_spawn(&ts, sender, &s);
    weft_join(ts, &rs);
    weft_join(tr, &rr);
    close(sv[0]);
    close(sv[1]);
    return (void *)((uintptr_t)rs | (uintptr_t)rr << 4);
}

Test(io, a_socketpair_carries_megabytes_in_order)
{
    FOR_EACH_CONFIG(b, w, io_workers)
        cr_assert_eq((uintptr_t)run_with_io(w, b, socketpair_transfer, (void *)(uintptr_t)(4u << 20)), 0);
}

static void *bad_fds(void *arg)
{
    char c = 0;
    uintptr_t bad = 0;
    bad |= (weft_read(-1, &c, 1) != -EBADF) << 0;
    bad |= (weft_write(-1, &c, 1) != -EBADF) << 1;
    bad |= (weft_recv(-1, &c, 1, 0) != -EBADF) << 2;
    bad |= (weft_send(-1, &c, 1, 0) != -EBADF) << 3;
    bad |= (weft_poll(-1, 1) != -EBADF) << 4;
    return (void *)bad;
}

Test(io, bad_descriptors_give_ebadf)
{
    FOR_EACH_BACKEND(b) {
        for (size_t i = 0; i < IO_N; i++)
            cr_assert_eq((uintptr_t)run_with_io(io_workers[i], b, bad_fds, NULL), 0);
        cr_assert_eq(weft_read(-1, NULL, 0), -EBADF);
    }
}

static void *send_to_closed_peer(void *arg)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return (void *)100;
    close(sv[1]);
    char c = 'x';
    ssize_t r = weft_send(sv[0], &c, 1, 0);
    close(sv[0]);
    return (void *)(uintptr_t)(r == -EPIPE || r == -ECONNRESET ? 0 : 1);
}

Test(io, sending_to_a_closed_peer_fails_without_sigpipe)
{
    FOR_EACH_CONFIG(b, w, io_workers)
        cr_assert_eq((uintptr_t)run_with_io(w, b, send_to_closed_peer, NULL), 0);
}

static void *compute(void *arg)
{
    _Atomic int *done = arg;
    uint64_t x = 0;
    while (!atomic_load(done)) {
        x += 1;
        weft_yield();
    }
    return (void *)(uintptr_t)(x > 0);
}

static void *io_beside_compute(void *arg)
{
    _Atomic int done = 0;
    weft_task *c;
    weft_spawn(&c, compute, &done);
    void *r = pipe_pingpong((void *)(uintptr_t)100);
    atomic_store(&done, 1);
    void *cr;
    weft_join(c, &cr);
    return (void *)(uintptr_t)((uintptr_t)r >= 100 && cr == (void *)1);
}

Test(io, a_coroutine_does_io_while_another_on_its_worker_computes)
{
    FOR_EACH_BACKEND(b) {
        cr_assert_eq((uintptr_t)run_with_io(1, b, io_beside_compute, NULL), 1);
    }
}

/* ---- files ------------------------------------------------------------------ */

static void *file_round_trip(void *arg)
{
    (void)arg;
    char path[] = "/tmp/weft-test-XXXXXX";
    int tmp = mkstemp(path);
    if (tmp < 0)
        return (void *)100;
    close(tmp);
    int fd = weft_open(path, O_RDWR | O_TRUNC, 0600);
    unlink(path);
    cr_assert_geq(fd, 0, "weft_open: %d", fd);
    cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "weft_open adds O_CLOEXEC");
    static char block[3][4096];
    for (int i = 0; i < 3; i++) {
        memset(block[i], 'a' + i, sizeof block[i]);
        cr_assert_eq(weft_pwrite(fd, block[i], sizeof block[i], (off_t)i * 4096), 4096);
    }
    cr_assert_eq(weft_fsync(fd), 0);
    char back[4096];
    for (int i = 2; i >= 0; i--) {
        cr_assert_eq(weft_pread(fd, back, sizeof back, (off_t)i * 4096), 4096);
        cr_assert(memcmp(back, block[i], sizeof back) == 0, "block %d came back different", i);
    }
    cr_assert_eq(weft_pread(fd, back, sizeof back, 3 * 4096), 0, "reading at the end gives 0");
    cr_assert_eq(weft_close(fd), 0);
    cr_assert_eq(weft_pread(fd, back, 1, 0), -EBADF);
    cr_assert_eq(weft_fsync(fd), -EBADF);
    cr_assert_eq(weft_open("/nonexistent/weft", O_RDONLY, 0), -ENOENT);
    cr_assert_eq(weft_open(NULL, O_RDONLY, 0), -EFAULT);
    return NULL;
}

Test(io, files_written_with_pwrite_read_back_with_pread)
{
    FOR_EACH_BACKEND(b) {
        run_with_io(1, b, file_round_trip, NULL);
        run_with_io(2, b, file_round_trip, NULL);
    }
    file_round_trip(NULL);   /* a plain thread: the plain system calls */
}

/* ---- accept and connect ----------------------------------------------------- */

#define CLIENTS 16

static void *echo_one(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[256];
    ssize_t n;
    while ((n = weft_recv(fd, buf, sizeof buf, 0)) > 0)
        if (weft_send(fd, buf, (size_t)n, 0) != n)
            break;
    weft_close(fd);
    return NULL;
}

static void *serve(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (int i = 0; i < CLIENTS; i++) {
        int c = weft_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            return (void *)(intptr_t)c;
        weft_spawn(NULL, echo_one, (void *)(intptr_t)c);
    }
    return NULL;
}

static void *client(void *arg)
{
    struct sockaddr_in *sa = arg;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (weft_connect(fd, (struct sockaddr *)sa, sizeof *sa) != 0)
        return (void *)1;
    uint32_t sum = 0;
    for (uint32_t i = 0; i < 100; i++) {
        uint32_t v = i, back = 0;
        if (weft_send(fd, &v, sizeof v, 0) != sizeof v || weft_recv(fd, &back, sizeof back, MSG_WAITALL) != sizeof back)
            return (void *)2;
        sum += back;
    }
    weft_close(fd);
    return (void *)(uintptr_t)(sum == 4950 ? 0 : 3);
}

static void *accept_and_connect(void *arg)
{
    (void)arg;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(lfd, 64), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
    weft_task *srv, *cl[CLIENTS];
    weft_spawn(&srv, serve, (void *)(intptr_t)lfd);
    for (int i = 0; i < CLIENTS; i++)
        weft_spawn(&cl[i], client, &sa);
    for (int i = 0; i < CLIENTS; i++) {
        void *r;
        weft_join(cl[i], &r);
        cr_assert_eq((uintptr_t)r, 0, "client %d failed at step %lu", i, (unsigned long)(uintptr_t)r);
    }
    void *r;
    weft_join(srv, &r);
    cr_assert_eq((intptr_t)r, 0, "accept failed: %ld", (long)(intptr_t)r);
    weft_close(lfd);

    /* Nobody listens here any more. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(weft_connect(fd, (struct sockaddr *)&sa, sizeof sa), -ECONNREFUSED);
    weft_close(fd);
    cr_assert_eq(weft_accept(-1, NULL, NULL, 0), -EBADF);
    cr_assert_eq(weft_accept(0, NULL, NULL, 12345), -EINVAL);
    return NULL;
}

Test(io, an_echo_server_accepts_and_serves_clients_that_connect)
{
    FOR_EACH_CONFIG(b, w, io_workers)
        run_with_io(w, b, accept_and_connect, NULL);
}

/* ---- one reader and one writer at once ------------------------------------- */

struct duplex {
    int    fd;
    size_t bytes;
};

static void *duplex_writer(void *arg)
{
    struct duplex *d = arg;
    char buf[4096];
    memset(buf, 'w', sizeof buf);
    size_t sent = 0;
    while (sent < d->bytes) {
        ssize_t n = weft_write(d->fd, buf, sizeof buf < d->bytes - sent ? sizeof buf : d->bytes - sent);
        if (n <= 0)
            return (void *)1;
        sent += (size_t)n;
    }
    return NULL;
}

static void *duplex_reader(void *arg)
{
    struct duplex *d = arg;
    char buf[4096];
    size_t got = 0;
    while (got < d->bytes) {
        ssize_t n = weft_read(d->fd, buf, sizeof buf);
        if (n <= 0)
            return (void *)1;
        got += (size_t)n;
    }
    return NULL;
}

static void *both_directions(void *arg)
{
    (void)arg;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    size_t bytes = 2u << 20;
    /* On each end a reader and a writer wait at once; both ends write far
     * more than the socket buffers hold. */
    struct duplex d[2] = { { sv[0], bytes }, { sv[1], bytes } };
    weft_task *t[4];
    weft_spawn(&t[0], duplex_writer, &d[0]);
    weft_spawn(&t[1], duplex_reader, &d[0]);
    weft_spawn(&t[2], duplex_writer, &d[1]);
    weft_spawn(&t[3], duplex_reader, &d[1]);
    uintptr_t bad = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        weft_join(t[i], &r);
        bad |= (uintptr_t)r << i;
    }
    weft_close(sv[0]);
    weft_close(sv[1]);
    return (void *)bad;
}

Test(io, a_reader_and_a_writer_wait_on_one_socket_at_once)
{
    FOR_EACH_CONFIG(b, w, io_workers)
        cr_assert_eq((uintptr_t)run_with_io(w, b, both_directions, NULL), 0);
}

/* weft_poll for both directions returns when either comes: here the socket
 * has nothing to read and a full send buffer, and becomes writable once the
 * peer drains it. */
struct both_ways {
    int         fd;
    _Atomic int revents;   /* read by the test while the poller may run elsewhere */
};

static void *poll_both_ways(void *arg)
{
    struct both_ways *bw = arg;
    uint64_t before = weft_deadline(weft_now() + 5000000000ull);   /* a hang fails, not stalls */
    atomic_store(&bw->revents, weft_poll(bw->fd, POLLIN | POLLOUT));
    weft_deadline(before);
    return NULL;
}

static void *poll_for_either_direction(void *arg)
{
    (void)arg;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK), 0);
    char chunk[4096] = { 0 };
    while (write(sv[0], chunk, sizeof chunk) > 0)
        ;
    cr_assert_eq(errno, EAGAIN, "the send buffer filled up");
    struct both_ways bw = { .fd = sv[0] };
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, poll_both_ways, &bw), 0);
    weft_sleep(20000000);   /* let it wait; it must not have returned */
    int early = atomic_load(&bw.revents);
    cr_assert_eq(early, 0, "weft_poll returned %d with nothing ready", early);
    ssize_t n;
    while ((n = weft_recv(sv[1], chunk, sizeof chunk, MSG_DONTWAIT)) > 0)
        ;
    cr_assert_eq(weft_join(t, NULL), 0);
    int revents = atomic_load(&bw.revents);
    cr_assert(revents > 0 && (revents & POLLOUT), "revents %d", revents);
    weft_close(sv[0]);
    weft_close(sv[1]);
    return NULL;
}

Test(io, polling_for_either_direction_wakes_on_the_one_that_comes, .timeout = 30)
{
    FOR_EACH_CONFIG(b, w, io_workers)
        run_with_io(w, b, poll_for_either_direction, NULL);
}

/* MSG_DONTWAIT asks for -EAGAIN, not a wait, on every backend. */
static void *dontwait_does_not_wait(void *arg)
{
    (void)arg;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    char c;
    cr_assert_eq(weft_recv(sv[0], &c, 1, MSG_DONTWAIT), -EAGAIN, "nothing to receive");
    char chunk[4096] = { 0 };
    ssize_t n;
    size_t sent = 0;
    while ((n = weft_send(sv[0], chunk, sizeof chunk, MSG_DONTWAIT)) > 0)
        sent += (size_t)n;
    cr_assert_eq(n, -EAGAIN, "a full socket");
    cr_assert_gt(sent, 0);
    cr_assert_eq(weft_send(sv[1], "x", 1, 0), 1);
    cr_assert_eq(weft_recv(sv[0], &c, 1, MSG_DONTWAIT), 1, "something to receive");
    weft_close(sv[0]);
    weft_close(sv[1]);
    return NULL;
}

Test(io, msg_dontwait_returns_eagain_instead_of_waiting, .timeout = 30)
{
    FOR_EACH_CONFIG(b, w, io_workers)
        run_with_io(w, b, dontwait_does_not_wait, NULL);
}

/* Runs fn in a coroutine on each backend and worker count, then in this
 * plain thread (the system calls themselves) and in it with a deadline
 * (weft's waits in poll(2)). */
static void in_every_caller(weft_fn fn)
{
    FOR_EACH_CONFIG(b, w, io_workers)
        run_with_io(w, b, fn, NULL);
    fn(NULL);
    uint64_t prev = weft_deadline(weft_now() + 10ull * 1000000000u);
    fn(NULL);
    weft_deadline(prev);
}

/* ---- a peek that asks for all --------------------------------------------------- */

/* The peer's second half comes a moment after the first. */
static void *send_second_half(void *arg)
{
    weft_sleep(30 * 1000000u);
    return (void *)(intptr_t)weft_send(*(int *)arg, "0123456789", 10, 0);
}

/* MSG_PEEK with MSG_WAITALL, by recv and recvmsg: what it shows is the
 * stream's first bytes, each once (at least the first half, which is there
 * when it is called), and the reads after it get the whole stream. */
static void peek_waitall_once(bool msg)
{
    int sv[2];
    tcp_pair(sv);
    cr_assert_eq(weft_send(sv[1], "abcdefghij", 10, 0), 10);
    weft_task *t = NULL;
    pthread_t th;
    bool co = weft_self() != NULL;
    if (co)
        cr_assert_eq(weft_spawn(&t, send_second_half, &sv[1]), 0);
    else
        cr_assert_eq(pthread_create(&th, NULL, send_second_half, &sv[1]), 0);
    char b[21] = { 0 };
    ssize_t n;
    if (msg) {
        struct iovec iov = { b, 20 };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
        n = weft_recvmsg(sv[0], &m, MSG_PEEK | MSG_WAITALL);
    } else {
        n = weft_recv(sv[0], b, 20, MSG_PEEK | MSG_WAITALL);
    }
    void *sent;
    if (co)
        cr_assert_eq(weft_join(t, &sent), 0);
    else
        cr_assert_eq(pthread_join(th, &sent), 0);
    cr_assert_eq((intptr_t)sent, 10);
    cr_assert(n >= 10 && n <= 20, "the peek gave %zd", n);
    cr_assert(memcmp(b, "abcdefghij0123456789", (size_t)n) == 0,
              "%s with MSG_PEEK | MSG_WAITALL showed \"%.20s\" (%zd bytes)", msg ? "weft_recvmsg" : "weft_recv", b, n);
    char all[21] = { 0 };
    cr_assert_eq(weft_recv(sv[0], all, 20, MSG_WAITALL), 20);
    cr_assert(strcmp(all, "abcdefghij0123456789") == 0, "then: \"%s\"", all);
    close(sv[0]);
    close(sv[1]);
}

static void *peek_waitall(void *arg)
{
    (void)arg;
    peek_waitall_once(false);
    peek_waitall_once(true);
    return NULL;
}

Test(io, a_peek_with_MSG_WAITALL_shows_each_byte_once)
{
    in_every_caller(peek_waitall);
}

/* ---- a receive that asks for all ----------------------------------------------- */

static const char trickled[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
enum { TRICKLE_SENDS = 6, TRICKLE_EACH = 7, TRICKLE_ALL = TRICKLE_SENDS * TRICKLE_EACH };

/* The peer's bytes in sends of 7, a moment apart, so that the reader waits
 * between them. */
static void *trickle(void *arg)
{
    int fd = *(int *)arg;
    for (int i = 0; i < TRICKLE_SENDS; i++) {
        weft_sleep(5 * 1000000u);
        if (weft_send(fd, trickled + TRICKLE_EACH * i, TRICKLE_EACH, 0) != TRICKLE_EACH)
            return (void *)1;
    }
    return NULL;
}

/* Starts fn(arg) beside the caller: a coroutine beside a coroutine, else a
 * thread; join_beside waits for it and returns its result. */
struct beside {
    weft_task *t;
    pthread_t  th;
};

static void start_beside(struct beside *b, weft_fn fn, void *arg)
{
    if (weft_self())
        cr_assert_eq(weft_spawn(&b->t, fn, arg), 0);
    else
        cr_assert_eq(pthread_create(&b->th, NULL, fn, arg), 0);
}

static void *join_beside(struct beside *b)
{
    void *r;
    if (weft_self())
        cr_assert_eq(weft_join(b->t, &r), 0);
    else
        cr_assert_eq(pthread_join(b->th, &r), 0);
    return r;
}

/* A stream's bytes that come in six parts fill a MSG_WAITALL receive, by
 * recv, by recvmsg into two buffers with room for control data (which the
 * ring's receive did not gather), and by recvfrom. */
static void waitall_gathers_once(int how)
{
    static const char *const names[] = { "weft_recv", "weft_recvmsg", "weft_recvfrom" };
    int sv[2];
    tcp_pair(sv);
    struct beside peer;
    start_beside(&peer, trickle, &sv[1]);
    char b[TRICKLE_ALL + 1] = { 0 };
    ssize_t n;
    if (how == 0) {
        n = weft_recv(sv[0], b, TRICKLE_ALL, MSG_WAITALL);
    } else if (how == 1) {
        char ctl[64];
        struct iovec iov[2] = { { b, 10 }, { b + 10, TRICKLE_ALL - 10 } };
        struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2, .msg_control = ctl, .msg_controllen = sizeof ctl };
        n = weft_recvmsg(sv[0], &m, MSG_WAITALL);
        cr_assert_eq(m.msg_controllen, 0, "control data on a TCP stream: %zu bytes", (size_t)m.msg_controllen);
    } else {
        n = weft_recvfrom(sv[0], b, TRICKLE_ALL, MSG_WAITALL, NULL, NULL);
    }
    cr_assert_null(join_beside(&peer));
    cr_assert_eq(n, TRICKLE_ALL, "%s with MSG_WAITALL of %d bytes sent in %d parts returned %zd",
                 names[how], TRICKLE_ALL, TRICKLE_SENDS, n);
    cr_assert(memcmp(b, trickled, TRICKLE_ALL) == 0, "%s gathered \"%s\"", names[how], b);
    close(sv[0]);
    close(sv[1]);
}

/* On a datagram or seqpacket socket MSG_WAITALL changes nothing: one
 * message a call, as recv(2). */
static void waitall_takes_one_message(int type)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, type, 0, sv), 0);
    cr_assert_eq(send(sv[1], "ab", 2, 0), 2);
    cr_assert_eq(send(sv[1], "cd", 2, 0), 2);
    char b[8] = { 0 };
    cr_assert_eq(weft_recv(sv[0], b, sizeof b, MSG_WAITALL), 2, "a %s message of 2 bytes: \"%s\"",
                 type == SOCK_DGRAM ? "datagram" : "seqpacket", b);
    struct iovec iov = { b + 2, 6 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    cr_assert_eq(weft_recvmsg(sv[0], &m, MSG_WAITALL), 2);
    cr_assert(memcmp(b, "abcd", 4) == 0, "the messages read \"%s\"", b);
    close(sv[0]);
    close(sv[1]);
}

/* A descriptor passed with the first part ends the read there, as the
 * kernel hands control data over with the bytes it came with; the next
 * read takes the rest. */
static void waitall_stops_at_control_data(void)
{
    int sv[2], p[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(pipe(p), 0);
    union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } out, in;
    memset(&out, 0, sizeof out);
    struct iovec iov = { "ab", 2 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = out.b, .msg_controllen = sizeof out.b };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &p[0], sizeof(int));
    cr_assert_eq(sendmsg(sv[1], &m, 0), 2);
    cr_assert_eq(send(sv[1], "cd", 2, 0), 2);
    char b[5] = { 0 };
    iov = (struct iovec){ b, 4 };
    m = (struct msghdr){ .msg_iov = &iov, .msg_iovlen = 1, .msg_control = in.b, .msg_controllen = sizeof in.b };
    cr_assert_eq(weft_recvmsg(sv[0], &m, MSG_WAITALL), 2, "the part with a descriptor, then \"%s\"", b);
    c = CMSG_FIRSTHDR(&m);
    cr_assert(c && c->cmsg_type == SCM_RIGHTS, "the descriptor passed with the bytes came with them");
    int got;
    memcpy(&got, CMSG_DATA(c), sizeof got);
    close(got);
    cr_assert_eq(weft_recv(sv[0], b + 2, 2, MSG_WAITALL), 2);
    cr_assert(strcmp(b, "abcd") == 0, "the stream read \"%s\"", b);
    close(sv[0]);
    close(sv[1]);
    close(p[0]);
    close(p[1]);
}

static void *waitall_cases(void *arg)
{
    (void)arg;
    for (int how = 0; how < 3; how++)
        waitall_gathers_once(how);
    waitall_takes_one_message(SOCK_DGRAM);
    waitall_takes_one_message(SOCK_SEQPACKET);
    waitall_stops_at_control_data();
    return NULL;
}

Test(io, MSG_WAITALL_on_a_stream_gathers_every_part_on_either_backend_and_from_a_plain_thread)
{
    in_every_caller(waitall_cases);
}

/* The peer's bytes, then its reset: a MSG_WAITALL receive returns the
 * bytes, and the next call the reset, as recv(2) does. */
static void *waitall_then_reset(void *arg)
{
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    cr_assert_eq(send(sv[1], "abc", 3, 0), 3);
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    cr_assert_eq(setsockopt(sv[1], SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(sv[1]);
    struct pollfd pfd = { .fd = sv[0], .events = POLLIN };
    cr_assert_eq(poll(&pfd, 1, 5000), 1);
    cr_assert(pfd.revents & POLLERR, "the reset has come: revents %#x", pfd.revents);
    char b[10];
    cr_assert_eq(weft_recv(sv[0], b, sizeof b, MSG_WAITALL), 3);
    ssize_t r = weft_recv(sv[0], b, sizeof b, MSG_WAITALL);
    cr_assert_eq(r, -ECONNRESET, "after the bytes, the reset: %zd", r);
    cr_assert_eq(weft_recv(sv[0], b, sizeof b, MSG_WAITALL), 0);
    close(sv[0]);
    return NULL;
}

Test(io, MSG_WAITALL_leaves_an_error_that_follows_its_bytes_for_the_next_call)
{
    in_every_caller(waitall_then_reset);
}

/* ---- many coroutines waiting on one descriptor ------------------------------ */

/*
 * Any number of coroutines may wait to read, and to write, one descriptor, on
 * either backend. Records are 4 bytes: a pipe writes them whole (below
 * PIPE_BUF) and a reader that takes 4 bytes at a time never splits one; a
 * datagram socket carries one a message. Each waiter sets a deadline far
 * beyond the test's needs, so that a lost wake-up fails instead of hanging.
 */
enum { CROWD_READERS = 8, CROWD_WRITERS = 4, CROWD_EACH = 150 };
#define CROWD_RECORDS (CROWD_READERS * CROWD_EACH)
#define LONG_WAIT (30ull * 1000000000u)

struct crowd_io {
    int         rfd, wfd;
    bool        sock;            /* weft_recv/weft_send, else weft_read/weft_write */
    _Atomic int seen[CROWD_RECORDS];
    _Atomic int next_writer;
};

static void *crowd_writer(void *arg)
{
    struct crowd_io *c = arg;
    uint32_t id = (uint32_t)atomic_fetch_add(&c->next_writer, 1);
    weft_deadline(weft_now() + LONG_WAIT);
    for (uint32_t i = id; i < CROWD_RECORDS; i += CROWD_WRITERS) {
        ssize_t n = c->sock ? weft_send(c->wfd, &i, sizeof i, 0) : weft_write(c->wfd, &i, sizeof i);
        if (n != (ssize_t)sizeof i)
            return (void *)(intptr_t)(n < 0 ? n : -1000);
    }
    return NULL;
}

static void *crowd_reader(void *arg)
{
    struct crowd_io *c = arg;
    weft_deadline(weft_now() + LONG_WAIT);
    for (int k = 0; k < CROWD_EACH; k++) {
        uint32_t v = UINT32_MAX;
        ssize_t n = c->sock ? weft_recv(c->rfd, &v, sizeof v, 0) : weft_read(c->rfd, &v, sizeof v);
        if (n != (ssize_t)sizeof v || v >= CROWD_RECORDS)
            return (void *)(intptr_t)(n < 0 ? n : -1000);
        atomic_fetch_add(&c->seen[v], 1);
    }
    return NULL;
}

/* Starts n coroutines running waiter(arg), lets them wait, then m running
 * waker(arg), and joins them all: each must return NULL, or the negative
 * errno it met. */
static void wait_then_wake(weft_fn waiter, int n, weft_fn waker, int m, void *arg)
{
    weft_task *t[64];
    cr_assert_leq(n + m, 64);
    for (int i = 0; i < n + m; i++) {
        if (i == n)
            weft_sleep(5000000);   /* most waiters wait by now */
        cr_assert_eq(weft_spawn(&t[i], i < n ? waiter : waker, arg), 0);
    }
    for (int i = n + m - 1; i >= 0; i--) {   /* the wakers first */
        void *r;
        cr_assert_eq(weft_join(t[i], &r), 0);
        cr_assert_eq((intptr_t)r, 0, "%s %d failed: %ld", i < n ? "waiter" : "waker", i, (long)(intptr_t)r);
    }
}

static void *crowd_on_one_descriptor(void *arg)
{
    bool sock = arg != NULL;
    static struct crowd_io c;   /* large; one test at a time runs this */
    memset(&c, 0, sizeof c);
    int fds[2];
    if (sock) {
        cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds), 0);
    } else {
        cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
        fcntl(fds[1], F_SETPIPE_SZ, 4096);   /* the writers wait too; a bigger pipe only waits less */
    }
    c.rfd = fds[0];
    c.wfd = fds[1];
    c.sock = sock;
    wait_then_wake(crowd_reader, CROWD_READERS, crowd_writer, CROWD_WRITERS, &c);
    for (int i = 0; i < CROWD_RECORDS; i++)
        cr_assert_eq(atomic_load(&c.seen[i]), 1, "record %d was read %d times", i, atomic_load(&c.seen[i]));
    weft_close(fds[0]);
    weft_close(fds[1]);
    return NULL;
}

Test(io, many_coroutines_reading_and_writing_one_pipe_each_get_their_share)
{
    FOR_EACH_CONFIG(b, w, sweep_workers)
        run_with_io(w, b, crowd_on_one_descriptor, NULL);
}

Test(io, many_coroutines_receiving_and_sending_on_one_socket_each_get_their_share)
{
    FOR_EACH_CONFIG(b, w, sweep_workers)
        run_with_io(w, b, crowd_on_one_descriptor, (void *)1);
}

/* Several coroutines accept on one listening socket, the common server: each
 * gets a connection of its own. */
enum { ACCEPTORS = 8 };

struct acceptors {
    int                lfd;
    struct sockaddr_in sa;
    _Atomic int        got[ACCEPTORS];   /* how often each client's id arrived */
};

static void *accept_one(void *arg)
{
    struct acceptors *a = arg;
    weft_deadline(weft_now() + LONG_WAIT);
    int c = weft_accept(a->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return (void *)(intptr_t)c;
    uint32_t id = UINT32_MAX;
    ssize_t n = weft_recv(c, &id, sizeof id, MSG_WAITALL);
    weft_close(c);
    if (n != (ssize_t)sizeof id || id >= ACCEPTORS)
        return (void *)(intptr_t)(n < 0 ? n : -1000);
    atomic_fetch_add(&a->got[id], 1);
    return NULL;
}

static void *connect_one(void *arg)
{
    struct acceptors *a = arg;
    static _Atomic uint32_t next_id;
    uint32_t id = atomic_fetch_add(&next_id, 1) % ACCEPTORS;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int r = weft_connect(fd, (struct sockaddr *)&a->sa, sizeof a->sa);
    if (r == 0 && weft_send(fd, &id, sizeof id, 0) != (ssize_t)sizeof id)
        r = -1000;
    weft_close(fd);
    return (void *)(intptr_t)r;
}

static void *many_acceptors(void *arg)
{
    (void)arg;
    static struct acceptors a;
    memset(&a, 0, sizeof a);
    a.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sa = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a.sa;
    cr_assert_eq(bind(a.lfd, (struct sockaddr *)&a.sa, sizeof a.sa), 0);
    cr_assert_eq(listen(a.lfd, 64), 0);
    cr_assert_eq(getsockname(a.lfd, (struct sockaddr *)&a.sa, &len), 0);
    wait_then_wake(accept_one, ACCEPTORS, connect_one, ACCEPTORS, &a);
    for (int i = 0; i < ACCEPTORS; i++)
        cr_assert_eq(atomic_load(&a.got[i]), 1, "client %d's connection was accepted %d times",
                     i, atomic_load(&a.got[i]));
    weft_close(a.lfd);
    return NULL;
}

Test(io, many_coroutines_accepting_on_one_listener_each_get_a_connection)
{
    FOR_EACH_CONFIG(b, w, sweep_workers)
        run_with_io(w, b, many_acceptors, NULL);
}

/* weft_close fails every coroutine waiting on the descriptor, in each
 * direction and both at once, and those polling for POLLPRI too (which wait
 * on an epoll set of their own). The socket has nothing to read and a full
 * send buffer. */
enum { CLOSE_EACH = 4, WAYS = 4 };

struct waiting_one {
    int          fd;
    int          how;   /* 0 recv, 1 send, 2 poll for both, 3 poll for POLLIN and POLLPRI */
    _Atomic int  started;
    _Atomic long result;
};

static void *wait_one_way(void *arg)
{
    struct waiting_one *o = arg;
    char buf[4096] = { 0 };
    weft_deadline(weft_now() + LONG_WAIT);
    atomic_store(&o->started, 1);
    long r;
    if (o->how == 0)
        r = (long)weft_recv(o->fd, buf, sizeof buf, 0);
    else if (o->how == 1)
        r = (long)weft_send(o->fd, buf, sizeof buf, 0);
    else if (o->how == 2)
        r = weft_poll(o->fd, POLLIN | POLLOUT);
    else
        r = weft_poll(o->fd, POLLIN | POLLPRI);
    atomic_store(&o->result, r);
    return NULL;
}

static void *close_under_a_crowd(void *arg)
{
    (void)arg;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char chunk[4096] = { 0 };
    while (send(sv[0], chunk, sizeof chunk, MSG_DONTWAIT) > 0)
        ;
    struct waiting_one o[WAYS * CLOSE_EACH];
    weft_task *t[WAYS * CLOSE_EACH];
    for (int i = 0; i < WAYS * CLOSE_EACH; i++) {
        o[i] = (struct waiting_one){ .fd = sv[0], .how = i % WAYS, .result = 1 };
        cr_assert_eq(weft_spawn(&t[i], wait_one_way, &o[i]), 0);
    }
    for (int i = 0; i < WAYS * CLOSE_EACH; i++)
        while (!atomic_load(&o[i].started))
            weft_yield();
    weft_sleep(SETTLE_NS);   /* most likely all waiting by now; see close_under_waiters */
    for (int i = 0; i < WAYS * CLOSE_EACH; i++)
        cr_assert_eq(atomic_load(&o[i].result), 1, "waiter %d returned %ld before the close",
                     i, atomic_load(&o[i].result));
    cr_assert_eq(weft_close(sv[0]), 0);
    for (int i = 0; i < WAYS * CLOSE_EACH; i++) {
        cr_assert_eq(weft_join(t[i], NULL), 0);
        cr_assert_eq(atomic_load(&o[i].result), -EBADF, "waiter %d (%s) got %ld", i,
                     (const char *[]){ "recv", "send", "poll", "poll for POLLPRI" }[o[i].how], atomic_load(&o[i].result));
    }
    close(sv[1]);
    return NULL;
}

Test(io, weft_close_fails_every_coroutine_waiting_on_the_descriptor_in_either_direction)
{
    FOR_EACH_CONFIG(b, w, sweep_workers)
        run_with_io(w, b, close_under_a_crowd, NULL);
}

/* Waiters that give up, at a deadline or by cancellation, leave the others
 * waiting, and each of those still gets a record. */
enum { QUITTERS = 6 };

struct quitter {
    int          fd;
    uint64_t     deadline;
    _Atomic int  started;
    _Atomic long result;
    uint32_t     record;
};

static void *read_a_record(void *arg)
{
    struct quitter *q = arg;
    weft_deadline(q->deadline);
    atomic_store(&q->started, 1);
    atomic_store(&q->result, (long)weft_read(q->fd, &q->record, sizeof q->record));
    return NULL;
}

static void *some_waiters_give_up(void *arg)
{
    (void)arg;
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    struct quitter q[QUITTERS];
    weft_task *t[QUITTERS];
    const int timed = 1, cancelled = 3;   /* in the middle of the line, most likely */
    for (int i = 0; i < QUITTERS; i++) {
        q[i] = (struct quitter){ .fd = p[0], .result = 1, .record = UINT32_MAX,
                                 .deadline = weft_now() + (i == timed ? 30000000 : LONG_WAIT) };
        cr_assert_eq(weft_spawn(&t[i], read_a_record, &q[i]), 0);
        while (!atomic_load(&q[i].started))
            weft_yield();
    }
    cr_assert_eq(weft_join(t[timed], NULL), 0);
    cr_assert_eq(atomic_load(&q[timed].result), -ETIMEDOUT);
    cr_assert_eq(weft_cancel(t[cancelled]), 0);
    cr_assert_eq(weft_join(t[cancelled], NULL), 0);
    cr_assert_eq(atomic_load(&q[cancelled].result), -ECANCELED);
    for (int i = 0; i < QUITTERS; i++)
        cr_assert_eq(atomic_load(&q[i].result), i == timed ? -ETIMEDOUT : i == cancelled ? -ECANCELED : 1,
                     "waiter %d returned %ld early", i, atomic_load(&q[i].result));
    for (uint32_t v = 0; v < QUITTERS - 2; v++)
        cr_assert_eq(weft_write(p[1], &v, sizeof v), (ssize_t)sizeof v);
    unsigned got = 0;
    for (int i = 0; i < QUITTERS; i++) {
        if (i == timed || i == cancelled)
            continue;
        cr_assert_eq(weft_join(t[i], NULL), 0);
        cr_assert_eq(atomic_load(&q[i].result), (long)sizeof(uint32_t), "waiter %d got %ld", i,
                     atomic_load(&q[i].result));
        cr_assert_lt(q[i].record, QUITTERS - 2);
        got |= 1u << q[i].record;
    }
    cr_assert_eq(got, (1u << (QUITTERS - 2)) - 1, "the records went to the waiters left, one each");
    weft_close(p[0]);
    weft_close(p[1]);
    return NULL;
}

Test(io, waiters_that_give_up_leave_the_others_waiting_on_the_descriptor)
{
    FOR_EACH_CONFIG(b, w, sweep_workers)
        run_with_io(w, b, some_waiters_give_up, NULL);
}

/* On epoll the waiters of one direction are served in the order they came.
 * One worker: nothing runs between a reader taking its ticket and waiting. */
enum { IN_LINE = 8 };

struct line {
    int         fd;
    _Atomic int tickets, served;
    uint32_t    got[IN_LINE];   /* by ticket */
};

static void *wait_in_line(void *arg)
{
    struct line *l = arg;
    int ticket = atomic_fetch_add(&l->tickets, 1);
    weft_deadline(weft_now() + LONG_WAIT);
    uint32_t v = UINT32_MAX;
    if (weft_read(l->fd, &v, sizeof v) != (ssize_t)sizeof v)
        return (void *)1;
    l->got[ticket] = v;
    atomic_fetch_add(&l->served, 1);
    return NULL;
}

/* A reader woken for data that another took before it ran waits again in
 * the place it had, ahead of those who came after it. Two coroutines take
 * turns to yield, so that their worker looks at the set only on its fairness
 * tick, where it wakes the first reader and then resumes one of the two
 * before that reader: that one takes the record back. The reader finds
 * nothing and waits again. */
struct grab {
    weft_rt     *rt;
    int          fd;
    uint64_t     seen;   /* epoll events reaped before the record was written */
    _Atomic bool taken;
};

static uint64_t epoll_events(weft_rt *rt)
{
    weft_stats st;
    cr_assert_eq(weft_stats_get(rt, &st), 0);
    return st.epoll_events;
}

static void *grab_once_woken(void *arg)
{
    struct grab *g = arg;
    while (!atomic_load(&g->taken)) {
        if (epoll_events(g->rt) != g->seen && !atomic_exchange(&g->taken, true)) {
            uint32_t v;
            cr_assert_eq(read(g->fd, &v, sizeof v), (ssize_t)sizeof v,
                         "the woken reader ran before the record was taken back");
            break;
        }
        weft_yield();
    }
    return NULL;
}

/* The line of readers; with arg (their runtime), the first reader is first
 * woken for a record taken back before it runs. */
static void *served_in_order(void *arg)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    struct line l = { .fd = p[0] };
    weft_task *t[IN_LINE];
    for (int i = 0; i < IN_LINE; i++)
        cr_assert_eq(weft_spawn(&t[i], wait_in_line, &l), 0);
    while (atomic_load(&l.tickets) < IN_LINE)
        weft_yield();
    if (arg) {
        uint32_t v = UINT32_MAX;
        struct grab g = { .rt = arg, .fd = p[0], .seen = epoll_events(arg) };
        weft_task *other;
        cr_assert_eq(weft_spawn(&other, grab_once_woken, &g), 0);
        cr_assert_eq(weft_write(p[1], &v, sizeof v), (ssize_t)sizeof v);
        grab_once_woken(&g);
        cr_assert_eq(weft_join(other, NULL), 0);
    }
    /* One record at a time, each once the last was taken: each wakes the
     * reader at the head of the line. */
    for (uint32_t v = 0; v < IN_LINE; v++) {
        cr_assert_eq(weft_write(p[1], &v, sizeof v), (ssize_t)sizeof v);
        uint64_t give_up = weft_now() + LONG_WAIT;
        while (atomic_load(&l.served) == (int)v && weft_now() < give_up)
            weft_sleep(1000000);
        cr_assert_eq(atomic_load(&l.served), (int)v + 1, "record %u was never taken", v);
    }
    for (int i = 0; i < IN_LINE; i++) {
        void *r;
        cr_assert_eq(weft_join(t[i], &r), 0);
        cr_assert_null(r);
    }
    for (uint32_t i = 0; i < IN_LINE; i++)
        cr_assert_eq(l.got[i], i, "the reader that came %u-th got record %u", i, l.got[i]);
    weft_close(p[0]);
    weft_close(p[1]);
    return NULL;
}

Test(io, on_epoll_the_readers_of_a_descriptor_are_served_in_the_order_they_came)
{
    run_with_io(1, WEFT_IO_EPOLL, served_in_order, NULL);
}

Test(io, on_epoll_a_reader_woken_for_data_another_took_keeps_its_place)
{
    const char *random_order = getenv("WEFT_SCHED_RANDOM");
    if (random_order && *random_order && strcmp(random_order, "0") != 0)
        cr_skip("the order of runnable coroutines is what this test relies on");
    weft_config cfg = { .workers = 1, .io_backend = WEFT_IO_EPOLL };
    weft_rt *rt;
    cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
    weft_task *t;
    cr_assert_eq(weft_spawn_on(rt, &t, served_in_order, rt), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

/* weft_close ends the wait of a coroutine blocked on the descriptor, on every
 * backend: a read of a pipe and a recv on a socket both return -EBADF. Either
 * order of the close and the wait gives -EBADF; the sleep makes it likely that
 * the coroutines are already waiting, on io_uring with a request in flight
 * that holds the file open. It is long enough for sanitizer builds too, on a
 * busy machine: a reader that first tries its call while the descriptor is
 * being closed is a race on the descriptor that ThreadSanitizer rightly
 * reports. */
struct blocked {
    int          fd;
    bool         sock;
    _Atomic int  started;
    _Atomic long result;
};

static void *wait_on_fd(void *arg)
{
    struct blocked *b = arg;
    char c;
    atomic_store(&b->started, 1);
    atomic_store(&b->result, b->sock ? (long)weft_recv(b->fd, &c, 1, 0) : (long)weft_read(b->fd, &c, 1));
    return NULL;
}

static void *close_under_waiters(void *arg)
{
    (void)arg;
    int p[2], sv[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct blocked a = { .fd = p[0], .result = 1 }, b = { .fd = sv[0], .sock = true, .result = 1 };
    weft_task *ta, *tb;
    cr_assert_eq(weft_spawn(&ta, wait_on_fd, &a), 0);
    cr_assert_eq(weft_spawn(&tb, wait_on_fd, &b), 0);
    while (!atomic_load(&a.started) || !atomic_load(&b.started))
        weft_yield();
    weft_sleep(SETTLE_NS);
    cr_assert_eq(weft_close(p[0]), 0);
    cr_assert_eq(weft_close(sv[0]), 0);
    cr_assert_eq(weft_join(ta, NULL), 0);
    cr_assert_eq(weft_join(tb, NULL), 0);
    cr_assert_eq(atomic_load(&a.result), -EBADF, "a pipe reader got %ld", atomic_load(&a.result));
    cr_assert_eq(atomic_load(&b.result), -EBADF, "a socket receiver got %ld", atomic_load(&b.result));
    close(p[1]);
    close(sv[1]);
    return NULL;
}

Test(io, weft_close_fails_the_coroutines_waiting_on_the_descriptor)
{
    FOR_EACH_CONFIG(b, w, io_workers)
        run_with_io(w, b, close_under_waiters, NULL);
}

/* The same from a plain thread, which belongs to no runtime: weft_close
 * finds the waiters in every runtime of the process. */
Test(io, weft_close_from_a_plain_thread_fails_the_coroutines_waiting_on_the_descriptor, .timeout = 60)
{
    FOR_EACH_CONFIG(b, w, io_workers) {
        weft_rt *rt;
        weft_config cfg = { .workers = w, .io_backend = b };
        cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
        int p[2], sv[2];
        cr_assert_eq(pipe(p), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        struct blocked a = { .fd = p[0], .result = 1 }, s = { .fd = sv[0], .sock = true, .result = 1 };
        weft_task *ta, *ts;
        cr_assert_eq(weft_spawn_on(rt, &ta, wait_on_fd, &a), 0);
        cr_assert_eq(weft_spawn_on(rt, &ts, wait_on_fd, &s), 0);
        while (!atomic_load(&a.started) || !atomic_load(&s.started))
            usleep(1000);
        usleep(SETTLE_NS / 1000);   /* as above: most likely waiting by now */
        cr_assert_eq(weft_close(p[0]), 0);
        cr_assert_eq(weft_close(sv[0]), 0);
        cr_assert_eq(weft_join(ta, NULL), 0);
        cr_assert_eq(weft_join(ts, NULL), 0);
        cr_assert_eq(atomic_load(&a.result), -EBADF, "a pipe reader got %ld", atomic_load(&a.result));
        cr_assert_eq(atomic_load(&s.result), -EBADF, "a socket receiver got %ld", atomic_load(&s.result));
        close(p[1]);
        close(sv[1]);
        cr_assert_eq(weft_rt_destroy(rt), 0);
    }
}

/* And from a coroutine of another runtime. */
static void *close_fd(void *arg)
{
    return (void *)(intptr_t)weft_close((int)(intptr_t)arg);
}

Test(io, weft_close_from_another_runtime_fails_the_coroutines_waiting_on_the_descriptor, .timeout = 60)
{
    FOR_EACH_BACKEND(b) {
        weft_rt *rt, *other;
        weft_config cfg = { .workers = 2, .io_backend = b };
        cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
        cr_assert_eq(weft_rt_create(&other, &cfg), 0);
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct blocked a = { .fd = p[0], .result = 1 };
        weft_task *ta, *tc;
        cr_assert_eq(weft_spawn_on(rt, &ta, wait_on_fd, &a), 0);
        while (!atomic_load(&a.started))
            usleep(1000);
        usleep(SETTLE_NS / 1000);   /* as above: most likely waiting by now */
        cr_assert_eq(weft_spawn_on(other, &tc, close_fd, (void *)(intptr_t)p[0]), 0);
        void *closed;
        cr_assert_eq(weft_join(tc, &closed), 0);
        cr_assert_eq((intptr_t)closed, 0);
        cr_assert_eq(weft_join(ta, NULL), 0);
        cr_assert_eq(atomic_load(&a.result), -EBADF, "the reader got %ld", atomic_load(&a.result));
        close(p[1]);
        cr_assert_eq(weft_rt_destroy(other), 0);
        cr_assert_eq(weft_rt_destroy(rt), 0);
    }
}

/* A descriptor closed with close(2), not weft_close, and its number given to
 * a new file: a wait on the new file must see it, and not a registration
 * left from the old one. The new file is a pipe where the old one was a
 * socket, then a socket again; once the old file lives on under a duplicate. */
struct late_write {
    int  fd;
    bool done;
};

static void *write_later(void *arg)
{
    struct late_write *l = arg;
    weft_sleep(1000000);   /* the reader is most likely waiting by now */
    l->done = weft_write(l->fd, "x", 1) == 1;
    return NULL;
}

/* Reads one byte from fd while a coroutine writes it into peer a little later. */
static void read_one_written_later(int fd, int peer)
{
    struct late_write l = { .fd = peer };
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, write_later, &l), 0);
    char c = 0;
    cr_assert_eq(weft_read(fd, &c, 1), 1, "the read of descriptor %d", fd);
    cr_assert_eq(c, 'x');
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert(l.done);
}

static void *reuse_numbers(void *arg)
{
    (void)arg;
    for (int round = 0; round < 3; round++) {
        int sv[2], p[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        read_one_written_later(sv[0], sv[1]);
        int number = sv[0];
        int keep = round == 1 ? dup(sv[0]) : -1;   /* the old file stays open */
        close(sv[0]);
        close(sv[1]);
        cr_assert_eq(pipe(p), 0);
        cr_assert_eq(p[0], number, "the lowest free number is reused");
        read_one_written_later(p[0], p[1]);
        close(p[0]);
        close(p[1]);
        if (keep >= 0)
            close(keep);
    }
    return NULL;
}

Test(io, a_number_closed_with_close_and_given_to_a_new_file_is_waited_on_afresh)
{
    FOR_EACH_CONFIG(b, w, io_workers)
        run_with_io(w, b, reuse_numbers, NULL);
}

/* weft_read and weft_write wait for a socket without making it non-blocking:
 * plain threads that share it still block in it. */
static void *socket_stays_blocking(void *arg)
{
    (void)arg;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    read_one_written_later(sv[0], sv[1]);
    cr_assert_eq(fcntl(sv[0], F_GETFL) & O_NONBLOCK, 0);
    cr_assert_eq(fcntl(sv[1], F_GETFL) & O_NONBLOCK, 0);
    close(sv[0]);
    close(sv[1]);
    return NULL;
}

Test(io, a_socket_read_and_written_by_coroutines_stays_blocking)
{
    FOR_EACH_CONFIG(b, w, io_workers)
        run_with_io(w, b, socket_stays_blocking, NULL);
}

/* weft_accept and weft_connect leave the sockets' flags as the caller set
 * them, blocking or not, whether the call succeeds, is refused or times out;
 * and the caller's own blocking calls on them then block as they should. */
struct plain_call {
    int     fd;
    bool    accept;   /* accept(2), else recv(2) of one byte */
    ssize_t result;   /* the call's result, or -errno */
};

static void *plain_blocking_call(void *arg)
{
    struct plain_call *c = arg;
    char b;
    ssize_t r = c->accept ? accept4(c->fd, NULL, NULL, SOCK_CLOEXEC) : recv(c->fd, &b, 1, 0);
    c->result = r < 0 ? -errno : r;
    return NULL;
}

static void *accept_into(void *arg)
{
    int *fd = arg;
    return (void *)(intptr_t)weft_accept(*fd, NULL, NULL, SOCK_CLOEXEC);
}

static int tcp_socket(bool nonblocking)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    cr_assert_geq(fd, 0);
    return fd;
}

static void flags_kept(bool nb)
{
    const char *how __attribute__((unused)) = nb ? "a non-blocking" : "a blocking";   /* in messages */
    int lfd = tcp_socket(nb);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(lfd, 16), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
    int lflags = fcntl(lfd, F_GETFL);

    /* A connection made: the acceptor waits first, most likely. */
    int cfd = tcp_socket(nb), cflags = fcntl(cfd, F_GETFL);
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, accept_into, &lfd), 0);
    weft_sleep(2000000);
    cr_assert_eq(weft_connect(cfd, (struct sockaddr *)&sa, sizeof sa), 0);
    void *r;
    cr_assert_eq(weft_join(t, &r), 0);
    int afd = (int)(intptr_t)r;
    cr_assert_geq(afd, 0, "weft_accept on %s listener: %d", how, afd);
    cr_assert_eq(fcntl(lfd, F_GETFL), lflags, "weft_accept changed %s listener's flags", how);
    cr_assert_eq(fcntl(cfd, F_GETFL), cflags, "weft_connect changed %s socket's flags", how);
    cr_assert_eq(fcntl(afd, F_GETFL) & O_NONBLOCK, 0, "the accepted socket was asked blocking");

    /* The caller's own blocking recv(2) waits for the byte sent later, and
     * so does its own blocking accept(2) for a connection made later. */
    if (!nb) {
        struct plain_call rc = { .fd = cfd }, ac = { .fd = lfd, .accept = true };
        pthread_t th[2];
        cr_assert_eq(pthread_create(&th[0], NULL, plain_blocking_call, &rc), 0);
        cr_assert_eq(pthread_create(&th[1], NULL, plain_blocking_call, &ac), 0);
        weft_sleep(20000000);   /* most likely blocked by now */
        cr_assert_eq(weft_send(afd, "x", 1, 0), 1);
        int late = tcp_socket(false);
        cr_assert_eq(weft_connect(late, (struct sockaddr *)&sa, sizeof sa), 0);
        pthread_join(th[0], NULL);
        pthread_join(th[1], NULL);
        cr_assert_eq(rc.result, 1, "the caller's recv(2) got %zd", rc.result);
        cr_assert_geq(ac.result, 0, "the caller's accept(2) got %zd", ac.result);
        close((int)ac.result);
        weft_close(late);
    }
    weft_close(afd);
    weft_close(cfd);
    weft_close(lfd);

    /* Refused: nobody listens at that address any more. */
    cfd = tcp_socket(nb);
    cflags = fcntl(cfd, F_GETFL);
    cr_assert_eq(weft_connect(cfd, (struct sockaddr *)&sa, sizeof sa), -ECONNREFUSED);
    cr_assert_eq(fcntl(cfd, F_GETFL), cflags, "a refused weft_connect changed %s socket's flags", how);
    weft_close(cfd);

    /* Timed out: a listener whose queue is full drops the connection's SYNs. */
    int fill[16], nfill;
    lfd = full_listener(&sa, fill, 16, &nfill);
    cr_assert_geq(lfd, 0, "no listener with a full queue could be made");
    cfd = tcp_socket(nb);
    cflags = fcntl(cfd, F_GETFL);
    uint64_t before = weft_deadline(weft_now() + 50000000);
    int got = weft_connect(cfd, (struct sockaddr *)&sa, sizeof sa);
    weft_deadline(before);
    cr_assert_eq(got, -ETIMEDOUT);
    cr_assert_eq(fcntl(cfd, F_GETFL), cflags, "a timed-out weft_connect changed %s socket's flags", how);
    weft_close(cfd);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    weft_close(lfd);
}

static void *sockets_keep_their_flags(void *arg)
{
    (void)arg;
    flags_kept(false);
    flags_kept(true);
    return NULL;
}

Test(io, accept_and_connect_leave_the_sockets_flags_as_the_caller_set_them)
{
    FOR_EACH_CONFIG(b, w, sweep_workers)
        run_with_io(w, b, sockets_keep_their_flags, NULL);
}

/* Many connections at once on four workers: each pair of coroutines moves
 * between workers as they are woken and stolen, so a descriptor is waited on
 * from one worker, then from another, and on epoll its registration moves
 * between the workers' sets while other descriptors are armed beside it.
 * Every message comes back whole and in order. */
enum { ECHO_PAIRS = 48, ECHO_ROUNDS = 150 };

static void *echo_side(void *arg)
{
    int fd = (int)(intptr_t)arg;
    uint32_t v;
    for (;;) {
        ssize_t n = weft_read(fd, &v, sizeof v);
        if (n == 0)
            return NULL;   /* the client closed */
        if (n != (ssize_t)sizeof v || weft_write(fd, &v, sizeof v) != (ssize_t)sizeof v)
            return (void *)1;
    }
}

static void *client_side(void *arg)
{
    int fd = (int)(intptr_t)arg;
    for (uint32_t i = 0; i < ECHO_ROUNDS; i++) {
        uint32_t v = i * 2654435761u, back = 0;
        if (weft_write(fd, &v, sizeof v) != (ssize_t)sizeof v ||
            weft_read(fd, &back, sizeof back) != (ssize_t)sizeof back || back != v)
            return (void *)1;
        if (i % 16 == 0)
            weft_yield();   /* let the others run, and thieves move us */
    }
    return NULL;
}

static void *many_pairs(void *arg)
{
    (void)arg;
    int sv[ECHO_PAIRS][2];
    weft_task *echo[ECHO_PAIRS], *client[ECHO_PAIRS];
    for (int i = 0; i < ECHO_PAIRS; i++) {
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]), 0);
        cr_assert_eq(weft_spawn(&echo[i], echo_side, (void *)(intptr_t)sv[i][0]), 0);
        cr_assert_eq(weft_spawn(&client[i], client_side, (void *)(intptr_t)sv[i][1]), 0);
    }
    for (int i = 0; i < ECHO_PAIRS; i++) {
        void *r;
        cr_assert_eq(weft_join(client[i], &r), 0);
        cr_assert_null(r, "client %d saw a wrong echo", i);
        cr_assert_eq(weft_close(sv[i][1]), 0);
        cr_assert_eq(weft_join(echo[i], &r), 0);
        cr_assert_null(r, "echo %d failed", i);
        cr_assert_eq(weft_close(sv[i][0]), 0);
    }
    return NULL;
}

Test(io, many_connections_on_four_workers_each_echo_every_message_in_order)
{
    static const unsigned four[] = { 4 };
    FOR_EACH_CONFIG(b, w, four)
        run_with_io(w, b, many_pairs, NULL);
}

Test(io, a_backend_that_does_not_exist_is_EINVAL)
{
    weft_rt *rt;
    weft_config cfg = { .workers = 1, .io_backend = 7 };
    cr_assert_eq(weft_rt_create(&rt, &cfg), -EINVAL);
    cfg = (weft_config){ .workers = 1, .ring_entries = 1u << 20 };
    cr_assert_eq(weft_rt_create(&rt, &cfg), -EINVAL);
}

/* From a plain thread without a deadline the call is recv(2) itself: its
 * SO_RCVTIMEO ends a MSG_WAITALL with what came, and no further call goes
 * on gathering while the peer trickles bytes (one each 40 ms here, ten). */
static void *trickle_slowly(void *arg)
{
    int fd = *(int *)arg;
    for (int i = 0; i < 10; i++) {
        usleep(40000);
        if (send(fd, "x", 1, 0) != 1)
            return (void *)1;
    }
    return NULL;
}

Test(io, a_plain_thread_s_MSG_WAITALL_ends_at_its_SO_RCVTIMEO_as_recv_does)
{
    int sv[2];
    tcp_pair(sv);
    struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
    cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, trickle_slowly, &sv[1]), 0);
    char b[10];
    ssize_t n = weft_recv(sv[0], b, sizeof b, MSG_WAITALL);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert((n > 0 && n < 10) || n == -EAGAIN, "recv(2) stops at its timeout with what came; weft_recv returned %zd", n);
    close(sv[0]);
    close(sv[1]);
}
