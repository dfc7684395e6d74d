/* SPDX-License-Identifier: MIT */
/*
 * libweft-hook: the C library's blocking calls, made from coroutines, suspend
 * only the coroutine, and keep every POSIX corner of the call.
 *
 * This file calls nothing of the hook: it calls read, poll, sleep and the rest
 * by their libc names. It is built three times (hook/tests/CMakeLists.txt):
 * linked with libweft-hook.so, linked with libweft-hook.a, and linked with
 * neither and run with LD_PRELOAD=libweft-hook.so. Most tests run on one
 * worker: a call that blocked its thread would then stop every other
 * coroutine, and the test, which needs another coroutine to make progress,
 * would never end (ctest's TIMEOUT fails it: hook/tests/CMakeLists.txt; not
 * Criterion's, whose runner leaks under ASan when timed tests run side by
 * side).
 */
#include "../../tests/common.h"
#include "../../tests/dump_text.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>

#define MS 1000000ull

static pid_t tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* A writer coroutine: sleeps `delay_ms` (plain usleep: hooked), then writes
 * `msg` to fd. */
struct late {
    int         fd;
    const char *msg;
    unsigned    delay_ms;
};

static void *write_late(void *arg)
{
    struct late *l = arg;
    usleep(l->delay_ms * 1000u);
    ssize_t n = write(l->fd, l->msg, strlen(l->msg));
    return (void *)(intptr_t)n;
}

static void spawn_late(weft_task **t, struct late *l)
{
    cr_assert_eq(weft_spawn(t, write_late, l), 0);
}

static void join_ok(weft_task *t)
{
    void *r;
    cr_assert_eq(weft_join(t, &r), 0);
}

/* ---- blocking reads and writes suspend only the coroutine ---------------------- */

struct fds { int a, b; };

static void *read_pipe_waits(void *arg)
{
    struct fds *p = arg;
    weft_task *t;
    struct late l = { p->b, "hello", 20 };
    spawn_late(&t, &l);
    char buf[16] = { 0 };
    ssize_t n = read(p->a, buf, sizeof buf);   /* the writer runs on this same worker */
    cr_assert_eq(n, 5, "read returned %zd (errno %d)", n, errno);
    cr_assert_eq(strcmp(buf, "hello"), 0, "got \"%s\"", buf);
    join_ok(t);
    return NULL;
}

Test(hook, a_read_on_an_empty_pipe_suspends_only_its_coroutine)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, read_pipe_waits, &f);
        close(p[0]);
        close(p[1]);
    }
}

/* Made in main, before any runtime: the hook knows nothing of it beforehand. */
static int early_pipe[2] = { -1, -1 };

Test(hook, a_descriptor_made_before_the_runtime_is_covered)
{
    cr_assert_eq(pipe(early_pipe), 0);
    FOR_EACH_BACKEND(b) {
        struct fds f = { early_pipe[0], early_pipe[1] };
        run_with_io(1, b, read_pipe_waits, &f);
    }
    close(early_pipe[0]);
    close(early_pipe[1]);
}

static void *socket_pair_rw(void *arg)
{
    struct fds *s = arg;
    weft_task *t;
    struct late l = { s->b, "ping", 20 };
    spawn_late(&t, &l);
    char buf[8] = { 0 };
    cr_assert_eq(recv(s->a, buf, sizeof buf, 0), 4);
    cr_assert_eq(strcmp(buf, "ping"), 0, "got \"%s\"", buf);
    join_ok(t);
    /* readv, writev, recvmsg, sendmsg, recvfrom, sendto on the same pair. */
    l.msg = "vectors";
    spawn_late(&t, &l);
    char x[3], y[8] = { 0 };
    struct iovec iov[2] = { { x, sizeof x }, { y, sizeof y } };
    cr_assert_eq(readv(s->a, iov, 2), 7);
    cr_assert_eq(memcmp(x, "vec", 3), 0);
    cr_assert_eq(strcmp(y, "tors"), 0, "got \"%s\"", y);
    join_ok(t);
    struct iovec out[2] = { { "ab", 2 }, { "cd", 2 } };
    cr_assert_eq(writev(s->b, out, 2), 4);
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
    memset(y, 0, sizeof y);
    cr_assert_eq(recvmsg(s->a, &m, 0), 4);
    cr_assert_eq(memcmp(x, "abc", 3), 0);
    cr_assert_eq(strcmp(y, "d"), 0, "got \"%s\"", y);
    struct msghdr mo = { .msg_iov = out, .msg_iovlen = 2 };
    cr_assert_eq(sendmsg(s->b, &mo, 0), 4);
    char z[4];
    cr_assert_eq(recvfrom(s->a, z, sizeof z, MSG_WAITALL, NULL, NULL), 4);
    cr_assert_eq(sendto(s->b, "e", 1, 0, NULL, 0), 1);
    cr_assert_eq(read(s->a, z, 1), 1);
    cr_assert_eq(z[0], 'e');
    return NULL;
}

Test(hook, socket_calls_wait_in_their_coroutine_and_transfer_what_libc_would)
{
    FOR_EACH_BACKEND(b) {
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        struct fds f = { sv[0], sv[1] };
        run_with_io(1, b, socket_pair_rw, &f);
        close(sv[0]);
        close(sv[1]);
    }
}

/* A blocking write larger than the pipe writes all of it, as write(2) does,
 * while a reader coroutine on the same worker drains it. */
enum { BIG = 1 << 20 };

static void *drain(void *arg)
{
    struct fds *p = arg;
    size_t got = 0;
    char buf[4096];
    ssize_t n;
    while ((n = read(p->a, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            cr_assert_eq((unsigned char)buf[i], (unsigned char)((got + (size_t)i) * 7));
        got += (size_t)n;
    }
    return (void *)got;
}

static void *big_write(void *arg)
{
    struct fds *p = arg;
    unsigned char *buf = malloc(BIG);
    cr_assert(buf);
    for (size_t i = 0; i < BIG; i++)
        buf[i] = (unsigned char)(i * 7);
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, drain, p), 0);
    cr_assert_eq(write(p->b, buf, BIG), (ssize_t)BIG);
    close(p->b);
    void *got;
    cr_assert_eq(weft_join(t, &got), 0);
    cr_assert_eq((size_t)got, (size_t)BIG);
    free(buf);
    return NULL;
}

Test(hook, a_blocking_write_writes_everything)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, big_write, &f);
        close(p[0]);
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        f = (struct fds){ sv[0], sv[1] };
        run_with_io(1, b, big_write, &f);
        close(sv[0]);
    }
}

/* ---- the owner's O_NONBLOCK ---------------------------------------------------- */

static void *nonblocking_is_eagain(void *arg)
{
    struct fds *p = arg;
    char c;
    errno = 0;
    cr_assert_eq(read(p->a, &c, 1), -1);
    cr_assert_eq(errno, EAGAIN);
    errno = 0;
    cr_assert_eq(recv(p->b, &c, 1, 0), -1);
    cr_assert_eq(errno, EAGAIN);
    return NULL;
}

Test(hook, a_descriptor_its_owner_made_nonblocking_gives_eagain)
{
    FOR_EACH_BACKEND(b) {
        int p[2], sv[2];
        cr_assert_eq(pipe(p), 0);
        int fl = fcntl(p[0], F_GETFL);
        cr_assert_eq(fcntl(p[0], F_SETFL, fl | O_NONBLOCK), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        struct fds f = { p[0], sv[0] };
        run_with_io(1, b, nonblocking_is_eagain, &f);
        /* ioctl(FIONBIO) is the other way to ask for it. */
        cr_assert_eq(fcntl(p[0], F_SETFL, fl), 0);
        int on = 1;
        cr_assert_eq(ioctl(p[0], FIONBIO, &on), 0);
        run_with_io(1, b, nonblocking_is_eagain, &f);
        for (int i = 0; i < 2; i++) {
            close(p[i]);
            close(sv[i]);
        }
    }
}

/* On the epoll backend weft_read makes a pipe O_NONBLOCK: its owner never
 * sees that flag, and the hooked read still waits. */
static void *weft_flag_is_hidden(void *arg)
{
    struct fds *p = arg;
    char c;
    cr_assert_eq(weft_write(p->b, "x", 1), 1);
    cr_assert_eq(weft_read(p->a, &c, 1), 1);
    cr_assert_eq(fcntl(p->a, F_GETFL) & O_NONBLOCK, 0, "F_GETFL shows weft's O_NONBLOCK");
    weft_task *t;
    struct late l = { p->b, "y", 20 };
    spawn_late(&t, &l);
    cr_assert_eq(read(p->a, &c, 1), 1, "errno %d", errno);
    cr_assert_eq(c, 'y');
    join_ok(t);
    return NULL;
}

Test(hook, fgetfl_hides_the_nonblocking_flag_weft_set)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, weft_flag_is_hidden, &f);
        /* And a plain thread's read of it blocks, as its owner asked. */
        cr_assert_eq(fcntl(p[0], F_GETFL) & O_NONBLOCK, 0);
        cr_assert_eq(fcntl(p[1], F_GETFL) & O_NONBLOCK, 0);
        close(p[0]);
        close(p[1]);
    }
}

/* ---- SO_RCVTIMEO and SO_SNDTIMEO ------------------------------------------------ */

static void *timeouts(void *arg)
{
    struct fds *s = arg;
    struct timeval tv = { 0, 200000 };
    cr_assert_eq(setsockopt(s->a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    char c;
    uint64_t t0 = weft_now();
    errno = 0;
    cr_assert_eq(recv(s->a, &c, 1, 0), -1);
    cr_assert_eq(errno, EAGAIN);
    cr_assert_geq(weft_now() - t0, 150 * MS, "SO_RCVTIMEO ended the wait early");
    /* Fill the other way, then a blocking send meets SO_SNDTIMEO. */
    cr_assert_eq(setsockopt(s->b, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
    char buf[4096] = { 0 };
    while (send(s->b, buf, sizeof buf, MSG_DONTWAIT) > 0)
        ;
    errno = 0;
    cr_assert_eq(send(s->b, buf, sizeof buf, 0), -1);
    cr_assert_eq(errno, EAGAIN);
    return NULL;
}

Test(hook, so_rcvtimeo_and_so_sndtimeo_end_a_wait_with_eagain)
{
    FOR_EACH_BACKEND(b) {
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        struct fds f = { sv[0], sv[1] };
        run_with_io(1, b, timeouts, &f);
        close(sv[0]);
        close(sv[1]);
    }
}

/* ---- end of file, reset, closed descriptors ------------------------------------- */

static void *eof_and_badf(void *arg)
{
    struct fds *p = arg;
    char c;
    close(p->b);
    cr_assert_eq(read(p->a, &c, 1), 0);
    close(p->a);
    errno = 0;
    cr_assert_eq(read(p->a, &c, 1), -1);
    cr_assert_eq(errno, EBADF);
    return NULL;
}

Test(hook, end_of_file_reads_zero_and_a_closed_descriptor_is_ebadf)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, eof_and_badf, &f);
    }
}

static void *read_expect(void *arg)
{
    int *fd = arg;
    char c;
    errno = 0;
    ssize_t n = read(*fd, &c, 1);
    return (void *)(intptr_t)(n < 0 ? -errno : n);
}

static void *close_while_waiting(void *arg)
{
    struct fds *p = arg;
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, read_expect, &p->a), 0);
    usleep(50000);   /* the reader waits by now */
    cr_assert_eq(close(p->a), 0);
    void *r;
    cr_assert_eq(weft_join(t, &r), 0);
    cr_assert_eq((intptr_t)r, -EBADF);
    return NULL;
}

Test(hook, close_fails_the_coroutines_waiting_on_the_descriptor)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, close_while_waiting, &f);
        close(p[1]);
    }
}

/* A TCP peer that closes with SO_LINGER 0 resets the connection. */
static void *reset_by_peer(void *arg)
{
    (void)arg;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    cr_assert_eq(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(l, 4), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(c, (struct sockaddr *)&sa, sizeof sa), 0);
    int s = accept(l, NULL, NULL);
    cr_assert_geq(s, 0);
    struct linger lg = { 1, 0 };
    cr_assert_eq(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(s);
    char buf[4];
    errno = 0;
    cr_assert_eq(recv(c, buf, sizeof buf, 0), -1);
    cr_assert_eq(errno, ECONNRESET);
    close(c);
    close(l);
    return NULL;
}

Test(hook, a_reset_by_the_peer_is_econnreset)
{
    FOR_EACH_BACKEND(b)
        run_with_io(1, b, reset_by_peer, NULL);
}

/* ---- signals, deadlines, cancellation ------------------------------------------ */

static void on_usr1(int sig)
{
    (void)sig;
}

static void *signal_during_read(void *arg)
{
    struct fds *p = arg;
    weft_task *t;
    struct late l = { p->b, "s", 100 };
    spawn_late(&t, &l);
    kill(getpid(), SIGUSR1);   /* lands on some thread while the read waits */
    char c;
    cr_assert_eq(read(p->a, &c, 1), 1, "errno %d", errno);
    cr_assert_eq(c, 's');
    join_ok(t);
    return NULL;
}

Test(hook, a_signal_does_not_fail_a_waiting_call)
{
    struct sigaction sa = { .sa_handler = on_usr1 };   /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, NULL);
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, signal_during_read, &f);
        close(p[0]);
        close(p[1]);
    }
}

static void *deadline_applies(void *arg)
{
    struct fds *p = arg;
    char c;
    weft_deadline(weft_now() + 50 * MS);
    errno = 0;
    cr_assert_eq(read(p->a, &c, 1), -1);
    cr_assert_eq(errno, ETIMEDOUT);
    struct pollfd pf = { .fd = p->a, .events = POLLIN };
    errno = 0;
    cr_assert_eq(poll(&pf, 1, -1), -1);
    cr_assert_eq(errno, ETIMEDOUT);
    weft_deadline(0);
    return NULL;
}

Test(hook, the_coroutine_deadline_ends_a_hooked_wait)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, deadline_applies, &f);
        close(p[0]);
        close(p[1]);
    }
}

/* ---- sleeping and yielding -------------------------------------------------------- */

static atomic_int ticks;

static void *ticker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        atomic_fetch_add(&ticks, 1);
        sched_yield();
    }
    return NULL;
}

static void *sleeps_share_the_worker(void *arg)
{
    (void)arg;
    atomic_store(&ticks, 0);
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, ticker, NULL), 0);
    cr_assert_eq(usleep(30000), 0);
    cr_assert_eq(atomic_load(&ticks), 5, "the ticker did not run while we slept");
    join_ok(t);
    struct timespec ts = { 0, 20 * MS };
    cr_assert_eq(nanosleep(&ts, NULL), 0);
    cr_assert_eq(clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL), 0);
    cr_assert_eq(sleep(0), 0u);
    /* A deadline cuts a sleep short: EINTR and the time left. */
    weft_deadline(weft_now() + 20 * MS);
    struct timespec longer = { 5, 0 }, rem = { 0, 0 };
    errno = 0;
    cr_assert_eq(nanosleep(&longer, &rem), -1);
    cr_assert_eq(errno, EINTR);
    cr_assert(rem.tv_sec >= 4, "rem %ld s", (long)rem.tv_sec);
    weft_deadline(0);
    return NULL;
}

Test(hook, sleeps_and_sched_yield_let_other_coroutines_run)
{
    FOR_EACH_BACKEND(b)
        run_with_io(1, b, sleeps_share_the_worker, NULL);
}

/* ---- poll, select, epoll_wait ------------------------------------------------------ */

static void *polls(void *arg)
{
    (void)arg;
    int p1[2], p2[2];
    cr_assert_eq(pipe(p1), 0);
    cr_assert_eq(pipe(p2), 0);
    struct pollfd pf[3] = { { p1[0], POLLIN, 0 }, { -1, POLLIN, 0 }, { p2[0], POLLIN, 0 } };
    cr_assert_eq(poll(pf, 3, 30), 0, "nothing is ready");
    weft_task *t;
    struct late l = { p2[1], "z", 20 };
    spawn_late(&t, &l);
    cr_assert_eq(poll(pf, 3, -1), 1);
    cr_assert_eq(pf[0].revents, 0);
    cr_assert_eq(pf[2].revents, POLLIN);
    join_ok(t);
    char c;
    cr_assert_eq(read(p2[0], &c, 1), 1);

    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(p1[0], &rd);
    FD_SET(p2[0], &rd);
    l.fd = p1[1];
    spawn_late(&t, &l);
    int maxfd = p1[0] > p2[0] ? p1[0] : p2[0];
    cr_assert_eq(select(maxfd + 1, &rd, NULL, NULL, NULL), 1);
    cr_assert(FD_ISSET(p1[0], &rd));
    cr_assert(!FD_ISSET(p2[0], &rd));
    join_ok(t);
    cr_assert_eq(read(p1[0], &c, 1), 1);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = p2[0] };
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, p2[0], &ev), 0);
    struct epoll_event got[4];
    cr_assert_eq(epoll_wait(ep, got, 4, 30), 0);
    l.fd = p2[1];
    spawn_late(&t, &l);
    cr_assert_eq(epoll_wait(ep, got, 4, -1), 1);
    cr_assert_eq(got[0].data.fd, p2[0]);
    join_ok(t);
    close(ep);
    for (int i = 0; i < 2; i++) {
        close(p1[i]);
        close(p2[i]);
    }
    return NULL;
}

Test(hook, poll_select_and_epoll_wait_wait_in_their_coroutine)
{
    FOR_EACH_BACKEND(b)
        run_with_io(1, b, polls, NULL);
}

/* ---- accept and connect on blocking sockets ---------------------------------------- */

static void *serve_one(void *arg)
{
    int l = *(int *)arg;
    int s = accept(l, NULL, NULL);
    cr_assert_geq(s, 0, "accept: errno %d", errno);
    char buf[5];
    cr_assert_eq(recv(s, buf, sizeof buf, MSG_WAITALL), 5);
    cr_assert_eq(send(s, buf, sizeof buf, 0), 5);
    close(s);
    return NULL;
}

static void *accept_and_connect(void *arg)
{
    (void)arg;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    cr_assert_eq(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(l, 4), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, serve_one, &l), 0);
    usleep(20000);   /* the server waits in accept by now */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(c, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(write(c, "hello", 5), 5);
    char buf[6] = { 0 };
    cr_assert_eq(read(c, buf, 5), 5);
    cr_assert_eq(strcmp(buf, "hello"), 0, "got \"%s\"", buf);
    join_ok(t);
    close(c);
    close(l);
    return NULL;
}

Test(hook, accept_and_connect_on_blocking_sockets_wait_in_their_coroutine)
{
    FOR_EACH_BACKEND(b)
        run_with_io(1, b, accept_and_connect, NULL);
}

/* ---- name lookups --------------------------------------------------------------- */

static void *lookup_localhost(void *arg)
{
    (void)arg;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int r = getaddrinfo("localhost", "80", &hints, &res);
    cr_assert_eq(r, 0, "getaddrinfo: %s", gai_strerror(r));
    bool loopback = false;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET)
            loopback |= ((struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
        if (a->ai_family == AF_INET6)
            loopback |= IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr);
    }
    cr_assert(loopback, "localhost did not resolve to a loopback address");
    char host[NI_MAXHOST];
    cr_assert_eq(getnameinfo(res->ai_addr, res->ai_addrlen, host, sizeof host, NULL, 0, NI_NUMERICHOST), 0);
    freeaddrinfo(res);
    return NULL;
}

static void *many_lookups(void *arg)
{
    (void)arg;
    enum { N = 64 };
    weft_task *t[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(weft_spawn(&t[i], lookup_localhost, NULL), 0);
    for (int i = 0; i < N; i++)
        join_ok(t[i]);
    return NULL;
}

Test(hook, getaddrinfo_of_localhost_from_many_coroutines)
{
    run_with(2, many_lookups, NULL);
}

/* ---- outside a coroutine, and no migration inside a hooked call --------------------- */

Test(hook, outside_a_coroutine_each_call_is_the_c_library_s)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(write(p[1], "ab", 2), 2);
    char buf[2];
    cr_assert_eq(read(p[0], buf, 2), 2);
    struct pollfd pf = { p[0], POLLIN, 0 };
    cr_assert_eq(poll(&pf, 1, 10), 0);
    cr_assert_eq(usleep(1000), 0);
    cr_assert_eq(close(p[0]), 0);
    cr_assert_eq(close(p[1]), 0);
    errno = 0;
    cr_assert_eq(close(p[1]), -1);
    cr_assert_eq(errno, EBADF);
}

/* Each hooked call that waits, while other coroutines keep every worker busy:
 * the thread is the same after the call as before it. */
static atomic_bool stop_spinners;
/* Calls that resumed on another thread: usleep, read, poll, getaddrinfo. A
 * failed assertion on a worker could leave the others spinning; the test
 * body asserts on these instead. */
static _Atomic unsigned moved[4];

static void *spinner(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_spinners))
        weft_yield();
    return NULL;
}

static void *same_thread(void *arg)
{
    struct fds *p = arg;
    char c;
    /* Under ThreadSanitizer and Valgrind each switch costs microseconds and
     * the spinners keep every worker busy: fewer rounds check the same. */
    int rounds = WEFT_TEST_TSAN || RUNNING_ON_VALGRIND ? 3 : 20;
    for (int round = 0; round < rounds; round++) {
        pid_t before = tid();
        usleep(1000);
        moved[0] += tid() != before;
        struct late l = { p->b, "q", 1 };
        weft_task *t;
        spawn_late(&t, &l);
        before = tid();
        cr_assert_eq(read(p->a, &c, 1), 1);
        moved[1] += tid() != before;
        join_ok(t);
        spawn_late(&t, &l);
        struct pollfd pf = { p->a, POLLIN, 0 };
        before = tid();
        cr_assert_eq(poll(&pf, 1, -1), 1);
        moved[2] += tid() != before;
        cr_assert_eq(read(p->a, &c, 1), 1);
        join_ok(t);
        struct addrinfo *res;
        before = tid();
        cr_assert_eq(getaddrinfo("127.0.0.1", NULL, NULL, &res), 0);
        moved[3] += tid() != before;
        freeaddrinfo(res);
    }
    return NULL;
}

static void *pinned_calls(void *arg)
{
    atomic_store(&stop_spinners, false);
    int n = weft_workers() * 2;
    weft_task *s[16];
    for (int i = 0; i < n && i < 16; i++)
        cr_assert_eq(weft_spawn(&s[i], spinner, NULL), 0);
    weft_task *t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(weft_spawn(&t[i], same_thread, &((struct fds *)arg)[i]), 0);
    for (int i = 0; i < 4; i++)
        join_ok(t[i]);
    atomic_store(&stop_spinners, true);
    for (int i = 0; i < n && i < 16; i++)
        join_ok(s[i]);
    return NULL;
}

Test(hook, a_coroutine_resumes_on_its_thread_after_each_hooked_call)
{
    FOR_EACH_BACKEND(b) {
        struct fds f[4];
        for (int i = 0; i < 4; i++) {
            int p[2];
            cr_assert_eq(pipe(p), 0);
            f[i] = (struct fds){ p[0], p[1] };
        }
        for (int i = 0; i < 4; i++)
            atomic_store(&moved[i], 0);
        run_with_io(4, b, pinned_calls, f);
        cr_assert_eq(atomic_load(&moved[0]), 0, "on %s, usleep resumed on another thread", backend_name[b]);
        cr_assert_eq(atomic_load(&moved[1]), 0, "on %s, read resumed on another thread", backend_name[b]);
        cr_assert_eq(atomic_load(&moved[2]), 0, "on %s, poll resumed on another thread", backend_name[b]);
        cr_assert_eq(atomic_load(&moved[3]), 0, "on %s, getaddrinfo resumed on another thread",
                     backend_name[b]);
        for (int i = 0; i < 4; i++) {
            close(f[i].a);
            close(f[i].b);
        }
    }
}

/* ---- the dump's summary names the program's call, not the hook ------------------ */

static int dump_pipe[2];

static __attribute__((noinline)) void *blocked_in_read(void *arg)
{
    (void)arg;
    char c;
    ssize_t n = read(dump_pipe[0], &c, 1);
    return (void *)(intptr_t)n;
}

static __attribute__((noinline)) void *blocked_in_nanosleep(void *arg)
{
    (void)arg;
    struct timespec ts = { 60, 0 };   /* until it is cancelled */
    return (void *)(intptr_t)nanosleep(&ts, NULL);
}

/* Whether the summary at the top of a dump's text (before the first
 * coroutine's section) names `name`. */
static bool in_summary(const char *text, const char *name)
{
    const char *end = strstr(text, "\ncoroutine "), *at = strstr(text, name);
    return at && (!end || at < end);
}

static void *dump_the_blocked(void *arg)
{
    (void)arg;
    weft_task *r, *s;
    cr_assert_eq(weft_spawn(&r, blocked_in_read, NULL), 0);
    cr_assert_eq(weft_spawn(&s, blocked_in_nanosleep, NULL), 0);
    char *text = NULL;
    uint64_t until = weft_now() + 20000 * MS;
    do {   /* until both wait: their frames show */
        usleep(2000);
        free(text);
        text = dump_text();
    } while (!(in_summary(text, "blocked_in_read") && in_summary(text, "blocked_in_nanosleep")) &&
             !strstr(text, "__interceptor_read") && weft_now() < until);
    char *end = strstr(text, "\ncoroutine ");
    cr_assert_not_null(end, "%s", text);
    *end = '\0';   /* the summary alone */
    /* Under a sanitizer, a program linked with libweft-hook.so calls the
     * sanitizer's read first, which then calls the hook: its frame is the
     * one below weft's (hook/tests/CMakeLists.txt). */
    bool intercepted = WEFT_TEST_SANITIZED && strstr(text, "__interceptor_read");
    cr_assert(strstr(text, "blocked_in_read") || intercepted, "the summary does not name the reader:\n%s", text);
    cr_assert_not_null(strstr(text, "blocked_in_nanosleep"), "the summary does not name the sleeper:\n%s", text);
    free(text);
    cr_assert_eq(write(dump_pipe[1], "x", 1), 1);
    cr_assert_eq(weft_cancel(s), 0);
    join_ok(r);
    join_ok(s);
    return NULL;
}

Test(hook, the_dump_summary_names_the_programs_call_not_the_hook)
{
    cr_assert_eq(pipe(dump_pipe), 0);
    run_with_io(1, WEFT_IO_AUTO, dump_the_blocked, NULL);
    close(dump_pipe[0]);
    close(dump_pipe[1]);
}
