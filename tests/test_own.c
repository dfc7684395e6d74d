/* SPDX-License-Identifier: MIT */
/*
 * weft_own: a connected TCP socket whose reading is handed to weft. Whatever
 * the backend, the worker count or the thread, a read of an owned socket
 * returns what it would have returned without the hand-over: the same bytes
 * in the same order, the flags as on the socket, 0 at the end, a reset once
 * and then 0, and the deadline, cancellation and weft_close rules of every
 * call. Where the kernel's own behaviour is the oracle (MSG_TRUNC, a reset,
 * urgent data, a zero-length read), the same case runs on a plain socket
 * first, so that a test whose expectation the kernel does not share fails
 * saying "a plain socket", not "an owned socket".
 */
#define _GNU_SOURCE
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#if WEFT_TEST_TSAN
/* Children of this threaded process go on (see test_fork.c). */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "die_after_fork=0";
}
#endif

static const unsigned own_workers[] = { 1, 2, 4 };
static const unsigned few_workers[] = { 1, 4 };

/* Long enough that the coroutines started are most likely waiting by then,
 * and that bytes sent have reached the socket (and, armed, its queue). */
#define SETTLE_NS (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND ? 200000000u : 20000000u)
#define SHORT_NS  (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND ? 300000000u : 50000000u)
/* A bound on waits that must end: a hang becomes a failure that says where. */
#define GUARD_NS  (60ull * 1000000000ull)

/* Messages of failures, each with its line and the values compared. */
static char why_buf[32][320];
static _Atomic unsigned why_next;

static __attribute__((format(printf, 1, 2))) char *why(const char *fmt, ...)
{
    char *b = why_buf[atomic_fetch_add(&why_next, 1) % 32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof why_buf[0], fmt, ap);
    va_end(ap);
    return b;
}

/* Each test body runs as a coroutine and returns NULL, or a message. */
#define FAIL_IF(cond) do { if (cond) return (void *)why("line %d: %s", __LINE__, #cond); } while (0)
#define EXPECT_EQ(got, want)                                                                \
    do {                                                                                    \
        long long got_ = (long long)(got), want_ = (long long)(want);                       \
        if (got_ != want_)                                                                  \
            return (void *)why("line %d: %s is %lld, expected %s (%lld)", __LINE__, #got,   \
                               got_, #want, want_);                                         \
    } while (0)
#define CHECK(call) do { const char *m_ = (call); if (m_) return (void *)m_; } while (0)

static int cur_backend;   /* the backend of the run in progress */

/* Runs fn(arg) on every backend and worker count given, all of them even
 * after one fails, and fails the test naming each one that did. Under a
 * sanitizer or Valgrind, whose stages look for what the memory and the
 * threads do rather than for what a worker count changes, each backend runs
 * the middle count alone: the suite's waits are ten times longer there. */
static void run_all_with(const unsigned *counts, size_t n, weft_fn fn, void *arg)
{
    char all[2048] = "";
    size_t len = 0;
    bool one = WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND;
    FOR_EACH_BACKEND(b) {
        for (size_t i = one ? n / 2 : 0; i < (one ? n / 2 + 1 : n); i++) {
            cur_backend = b;
            const char *msg = run_with_io(counts[i], b, fn, arg);
            if (msg && len < sizeof all)
                len += (size_t)snprintf(all + len, sizeof all - len, "\n  %s, %u workers: %s", backend_name[b],
                                        counts[i], msg);
        }
    }
    cr_assert(len == 0, "%s", all);
}
#define run_all(fn, arg) run_all_with(own_workers, SWEEP_N, fn, arg)

static uint64_t guard(void)
{
    return weft_deadline(weft_now() + GUARD_NS);
}

/* ---- pairs, patterns, helpers ------------------------------------------------- */

/* A connected loopback TCP pair of family (AF_INET or AF_INET6), Nagle off:
 * sv[0] accepted, sv[1] connected. 0, or -1 with nothing left open. */
static int tcp_pair_sized(int sv[2], int family, int buf);

static int tcp_pair_of(int sv[2], int family)
{
    return tcp_pair_sized(sv, family, 0);
}

/* The same, with rcv and snd (when not 0) as the accepted side's receive
 * buffer and the connecting side's send buffer, set before the connection. */
static int tcp_pair_bufs(int sv[2], int family, int rcv, int snd);

static int tcp_pair_sized(int sv[2], int family, int buf)
{
    return tcp_pair_bufs(sv, family, buf, buf);
}

static int tcp_pair_bufs(int sv[2], int family, int rcv, int snd)
{
    struct sockaddr_storage ss;
    socklen_t n;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        n = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        n = sizeof *a;
    }
    int lfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return -1;
    if (rcv)
        setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    if (bind(lfd, (struct sockaddr *)&ss, n) || listen(lfd, 1) || getsockname(lfd, (struct sockaddr *)&ss, &n)) {
        close(lfd);
        return -1;
    }
    sv[1] = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (snd && sv[1] >= 0)
        setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd);
    if (sv[1] < 0 || connect(sv[1], (struct sockaddr *)&ss, n) != 0) {
        if (sv[1] >= 0)
            close(sv[1]);
        close(lfd);
        return -1;
    }
    sv[0] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    close(lfd);
    if (sv[0] < 0) {
        close(sv[1]);
        return -1;
    }
    int one = 1;
    setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

static int plain_pair(int sv[2])
{
    return tcp_pair_of(sv, AF_INET);
}

/* A pair whose sv[0] is owned. */
static int owned_pair(int sv[2])
{
    if (plain_pair(sv) != 0)
        return -1;
    if (weft_own(sv[0]) != 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    return 0;
}

static void close_pair(int sv[2])
{
    weft_close(sv[0]);
    weft_close(sv[1]);
}

/* Byte i of every stream these tests send: no short period, so that a piece
 * lost, repeated or moved shows. */
static uint8_t pat(uint64_t i)
{
    uint32_t h = (uint32_t)(i >> 2) * 2654435761u;
    h ^= h >> 15;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    return (uint8_t)(h >> (8 * (i & 3)));
}

static void fill_pat(uint8_t *b, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b[i] = pat(off + i);
}

/* The first index of b that is not the pattern from off, or -1. */
static long long bad_pat(const uint8_t *b, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != pat(off + i))
            return (long long)i;
    return -1;
}

/* Sends all n bytes (weft_send, which waits for room in a coroutine). */
static ssize_t send_all(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = weft_send(fd, (const char *)buf + done, n - done, 0);
        if (r <= 0)
            return r < 0 ? r : -EIO;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

static ssize_t send_str(int fd, const char *s)
{
    return send_all(fd, s, strlen(s));
}

/* The peer sends one byte and fd reads it: on io_uring a coroutine's read of
 * an owned socket arms its receive, which stays armed after. */
static const char *arm(int fd, int peer)
{
    char c = 0;
    EXPECT_EQ(send_str(peer, "!"), 1);
    EXPECT_EQ(weft_read(fd, &c, 1), 1);
    EXPECT_EQ(c, '!');
    return NULL;
}

/* Reads exactly n bytes (or up to the end) into b with plain weft_recv. */
static ssize_t read_n(int fd, void *b, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = weft_recv(fd, (char *)b + got, n - got, 0);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Reads exactly n bytes (or up to the end) with weft_recv(flags), call after
 * call, whatever each call returns. */
static ssize_t read_all(int fd, void *b, size_t n, int flags)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = weft_recv(fd, (char *)b + got, n - got, flags);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Not an errno: what read_kind says when a call returned bytes but left
 * something of its own wrong. */
#define KIND_BAD_CONTROL  (-100001)   /* recvmsg: msg_controllen or msg_flags wrong */
#define KIND_BAD_ADDRLEN  (-100002)   /* recvfrom: *addrlen not 0 on a stream */

/* One read of up to len bytes into buf with the call kind % 5: weft_read,
 * weft_recv, weft_readv (scattered, a zero-length piece among them),
 * weft_recvmsg (two pieces, room for ancillary data that must stay unused),
 * weft_recvfrom with an address. */
static ssize_t read_kind(int fd, unsigned kind, uint8_t *buf, size_t len)
{
    switch (kind % 5) {
    case 0:
        return weft_read(fd, buf, len);
    case 1:
        return weft_recv(fd, buf, len, 0);
    case 2: {
        size_t a = len / 3;
        struct iovec iov[3] = { { buf, a }, { buf + a, 0 }, { buf + a, len - a } };
        return weft_readv(fd, iov, 3);
    }
    case 3: {
        size_t a = (len + 1) / 2;
        struct iovec iov[2] = { { buf, a }, { buf + a, len - a } };
        union { struct cmsghdr h; char b[64]; } ctl;
        memset(&ctl, 0x5a, sizeof ctl);
        struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b,
                            .msg_flags = 0x7fff };
        ssize_t r = weft_recvmsg(fd, &m, 0);
        if (r > 0 && (m.msg_controllen != 0 || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))))
            return KIND_BAD_CONTROL;
        return r;
    }
    default: {
        struct sockaddr_in6 from;
        memset(&from, 0x5a, sizeof from);
        socklen_t flen = sizeof from;
        ssize_t r = weft_recvfrom(fd, buf, len, 0, (struct sockaddr *)&from, &flen);
        if (r >= 0 && flen != 0)
            return KIND_BAD_ADDRLEN;
        return r;
    }
    }
}

static const char *const kind_name[] = { "weft_read", "weft_recv", "weft_readv", "weft_recvmsg", "weft_recvfrom" };

/* Sends total bytes of the pattern from 0 on fd in pieces of the sizes
 * given, in turn; then shuts its writing down if shut. */
struct writer {
    int             fd;
    uint64_t        total;
    const size_t   *sizes;
    size_t          nsizes;
    bool            shut;
};

static void *pattern_writer(void *arg)
{
    struct writer *w = arg;
    size_t max = 0;
    for (size_t i = 0; i < w->nsizes; i++)
        max = w->sizes[i] > max ? w->sizes[i] : max;
    uint8_t *b = malloc(max);
    if (!b)
        return (void *)"no memory for the writer";
    uint64_t off = 0;
    for (size_t k = 0; off < w->total; k++) {
        size_t n = w->sizes[k % w->nsizes];
        if (n > w->total - off)
            n = (size_t)(w->total - off);
        fill_pat(b, off, n);
        ssize_t r = send_all(w->fd, b, n);
        if (r != (ssize_t)n) {
            free(b);
            return why("the writer's send at %llu returned %zd", (unsigned long long)off, r);
        }
        off += n;
    }
    free(b);
    if (w->shut && shutdown(w->fd, SHUT_WR) != 0)
        return (void *)"shutdown failed";
    return NULL;
}

/* Waits until number fd is free (weft_close's placeholder released). */
static bool wait_free(int fd)
{
    for (int i = 0; i < 20000; i++) {
        if (fcntl(fd, F_GETFD) == -1 && errno == EBADF)
            return true;
        weft_sleep(1000000);
    }
    return false;
}

/* ---- what may be handed over -------------------------------------------------- */

static void *refusals(void *arg)
{
    (void)arg;
    EXPECT_EQ(weft_own(-1), -EBADF);
    EXPECT_EQ(weft_own(INT_MIN), -EBADF);
    /* A number nobody holds, and one that was just closed. */
    int high = 19000;
    while (high > 100 && fcntl(high, F_GETFD) != -1)
        high--;
    EXPECT_EQ(weft_own(high), -EBADF);
    int p[2];
    FAIL_IF(pipe2(p, O_CLOEXEC) != 0);
    EXPECT_EQ(weft_own(p[0]), -ENOTSOCK);
    EXPECT_EQ(weft_own(p[1]), -ENOTSOCK);
    close(p[1]);
    EXPECT_EQ(weft_own(p[1]), -EBADF);
    int file = open("/dev/null", O_RDONLY | O_CLOEXEC);
    FAIL_IF(file < 0);
    EXPECT_EQ(weft_own(file), -ENOTSOCK);
    close(file);
    /* Sockets that are not TCP streams, connected or not. */
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    FAIL_IF(udp < 0);
    EXPECT_EQ(weft_own(udp), -EOPNOTSUPP);
    struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(9) };
    FAIL_IF(connect(udp, (struct sockaddr *)&lo, sizeof lo) != 0);
    EXPECT_EQ(weft_own(udp), -EOPNOTSUPP);   /* connected, still not a stream */
    close(udp);
    int un[2];
    FAIL_IF(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, un) != 0);
    EXPECT_EQ(weft_own(un[0]), -EOPNOTSUPP);
    close(un[0]);
    close(un[1]);
    FAIL_IF(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, un) != 0);
    EXPECT_EQ(weft_own(un[0]), -EOPNOTSUPP);
    close(un[0]);
    close(un[1]);
    int lone_unix = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(weft_own(lone_unix), -EOPNOTSUPP);   /* unconnected, and not TCP: not TCP first */
    close(lone_unix);
    /* TCP sockets that are not connected: fresh, bound, listening. */
    int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FAIL_IF(t < 0);
    EXPECT_EQ(weft_own(t), -ENOTCONN);
    struct sockaddr_in any = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    FAIL_IF(bind(t, (struct sockaddr *)&any, sizeof any) != 0);
    EXPECT_EQ(weft_own(t), -ENOTCONN);
    FAIL_IF(listen(t, 4) != 0);
    EXPECT_EQ(weft_own(t), -ENOTCONN);
    /* A listener never is handed over; its accepted connection is. */
    socklen_t alen = sizeof any;
    FAIL_IF(getsockname(t, (struct sockaddr *)&any, &alen) != 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FAIL_IF(c < 0 || connect(c, (struct sockaddr *)&any, sizeof any) != 0);
    int a = accept4(t, NULL, NULL, SOCK_CLOEXEC);
    FAIL_IF(a < 0);
    EXPECT_EQ(weft_own(t), -ENOTCONN);   /* still a listener */
    EXPECT_EQ(weft_own(a), 0);
    EXPECT_EQ(weft_own(a), -EALREADY);
    EXPECT_EQ(weft_own(c), 0);           /* the connecting side is a connected TCP socket too */
    EXPECT_EQ(weft_own(c), -EALREADY);
    EXPECT_EQ(send_str(c, "ok"), 2);
    char got[4];
    EXPECT_EQ(read_n(a, got, 2), 2);
    FAIL_IF(memcmp(got, "ok", 2) != 0);
    weft_close(a);
    weft_close(c);
    weft_close(t);
    /* IPv6 TCP is TCP (where loopback IPv6 exists). */
    int six[2];
    if (tcp_pair_of(six, AF_INET6) == 0) {
        EXPECT_EQ(weft_own(six[0]), 0);
        EXPECT_EQ(send_str(six[1], "six"), 3);
        EXPECT_EQ(read_n(six[0], got, 3), 3);
        FAIL_IF(memcmp(got, "six", 3) != 0);
        close_pair(six);
    }
    /* Above weft's table: where the limit lets a number that high exist. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max > (1u << 20) + 2) {
        struct rlimit more = { .rlim_cur = (1u << 20) + 2, .rlim_max = rl.rlim_max };
        int s[2];
        if (setrlimit(RLIMIT_NOFILE, &more) == 0 && plain_pair(s) == 0) {
            int big = dup3(s[0], 1 << 20, O_CLOEXEC);
            int r = big >= 0 ? weft_own(big) : 0;
            if (big >= 0)
                close(big);
            close(s[0]);
            close(s[1]);
            setrlimit(RLIMIT_NOFILE, &rl);
            if (big >= 0)
                EXPECT_EQ(r, -EMFILE);
        }
    }
    return NULL;
}

Test(own, weft_own_refuses_what_is_not_a_connected_tcp_socket)
{
    run_all(refusals, NULL);
    const char *msg = refusals(NULL);   /* any thread */
    cr_assert_null(msg, "a plain thread: %s", msg ? msg : "");
}

/* weft_close ends the hand-over: the number, reused by a new connection,
 * can be owned again, and reads only the new connection's bytes. */
static void *owning_again(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    int a[2];
    FAIL_IF(owned_pair(a) != 0);
    EXPECT_EQ(weft_own(a[0]), -EALREADY);
    CHECK(arm(a[0], a[1]));
    EXPECT_EQ(send_str(a[1], "old bytes queued"), 16);
    char got[64];
    EXPECT_EQ(read_all(a[0], got, 3, MSG_WAITALL), 3);   /* the rest may sit in the queue */
    weft_sleep(SETTLE_NS);
    int num = a[0];
    EXPECT_EQ(weft_close(num), 0);
    int again = weft_own(num);   /* gone, or still the placeholder */
    if (again != -EBADF && again != -ENOTSOCK)
        return why("weft_own of a number just closed returned %d", again);
    FAIL_IF(!wait_free(num));
    int b[2];
    FAIL_IF(plain_pair(b) != 0);
    if (b[1] == num) {   /* the connecting side got it: it is the one owned */
        b[1] = b[0];
        b[0] = num;
    }
    if (b[0] != num) {
        FAIL_IF(fcntl(num, F_GETFD) != -1);   /* nobody took it meanwhile */
        FAIL_IF(dup3(b[0], num, O_CLOEXEC) != num);
        close(b[0]);
        b[0] = num;
    }
    EXPECT_EQ(weft_own(num), 0);
    (void)send(a[1], "more old", 8, MSG_NOSIGNAL);   /* to the closed connection: never seen */
    EXPECT_EQ(send_str(b[1], "new"), 3);
    memset(got, 0, sizeof got);
    ssize_t n = weft_recv(num, got, sizeof got, 0);
    if (n != 3 || memcmp(got, "new", 3) != 0)
        return why("the reused number read %zd bytes \"%.*s\", not \"new\"", n, n > 0 ? (int)n : 0, got);
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(weft_recv(num, got, sizeof got, MSG_DONTWAIT), -EAGAIN);
    EXPECT_EQ(weft_close(num), 0);
    close(a[1]);
    close(b[1]);
    weft_deadline(prev);
    return NULL;
}

Test(own, a_number_closed_with_weft_close_and_reused_can_be_owned_again_and_reads_only_its_own_bytes)
{
    run_all(owning_again, NULL);
}

/* ---- bytes ---------------------------------------------------------------------- */

#define MIXED_BYTES 300000u

static void *mixed_reads(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    int sv[2];
    FAIL_IF(owned_pair(sv) != 0);
    static const size_t wsizes[] = { 1, 3, 1000, 17, 8192, 50000, 4096, 4097 };
    struct writer w = { .fd = sv[1], .total = MIXED_BYTES, .sizes = wsizes, .nsizes = 8 };
    weft_task *t;
    FAIL_IF(weft_spawn(&t, pattern_writer, &w) != 0);
    static const size_t rsizes[] = { 1, 7, 13, 100, 4095, 4096, 4097, 1, 65536, 9000, 2 };
    uint8_t *buf = malloc(65536);
    FAIL_IF(!buf);
    uint64_t got = 0;
    for (unsigned k = 0; got < MIXED_BYTES; k++) {
        size_t len = rsizes[k % 11];
        ssize_t n = read_kind(sv[0], k, buf, len);
        if (n <= 0 || (size_t)n > len) {
            free(buf);
            return why("%s of %zu at byte %llu returned %zd", kind_name[k % 5], len, (unsigned long long)got, n);
        }
        long long bad = bad_pat(buf, got, (size_t)n);
        if (bad >= 0) {
            free(buf);
            return why("%s at byte %llu: byte %lld is not the one sent", kind_name[k % 5],
                       (unsigned long long)got, (long long)got + bad);
        }
        got += (size_t)n;
    }
    free(buf);
    void *r;
    FAIL_IF(weft_join(t, &r) != 0);
    if (r)
        return r;

    /* A short read: more room than data returns what is there, of each kind. */
    uint8_t b[128];
    for (unsigned k = 0; k < 5; k++) {
        EXPECT_EQ(send_str(sv[1], "12345"), 5);
        EXPECT_EQ(weft_poll(sv[0], POLLIN) & POLLIN, POLLIN);
        ssize_t n = read_kind(sv[0], k, b, sizeof b);
        if (n != 5 || memcmp(b, "12345", 5) != 0)
            return why("%s of 128 with 5 bytes there returned %zd", kind_name[k], n);
    }
    /* Bytes that came in separate pieces (separate arrivals, separate
     * buffers on io_uring) are gathered by one read, as by recv(2). */
    EXPECT_EQ(send_str(sv[1], "ab"), 2);
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(send_str(sv[1], "cd"), 2);
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(send_str(sv[1], "ef"), 2);
    weft_sleep(SETTLE_NS);
    ssize_t n = weft_recv(sv[0], b, sizeof b, 0);
    if (n != 6 || memcmp(b, "abcdef", 6) != 0)
        return why("a read after three arrivals returned %zd \"%.*s\", not \"abcdef\"", n, n > 0 ? (int)n : 0, b);
    /* And a read larger than one provided buffer gathers across buffers. */
    uint8_t *big = malloc(20000), *in = malloc(20000);
    FAIL_IF(!big || !in);
    fill_pat(big, 0, 20000);
    EXPECT_EQ(send_all(sv[1], big, 20000), 20000);
    weft_sleep(SETTLE_NS);
    n = weft_recv(sv[0], in, 20000, 0);
    long long bad = n > 0 ? bad_pat(in, 0, (size_t)n) : -1;
    free(big);
    free(in);
    if (n != 20000 || bad >= 0)
        return why("a read of 20000 queued bytes returned %zd (first wrong byte %lld)", n, bad);
    close_pair(sv);
    weft_deadline(prev);
    return NULL;
}

Test(own, every_read_call_gets_the_peer_s_bytes_in_order_at_any_buffer_size)
{
    run_all(mixed_reads, NULL);
}

/* Several megabytes, the reader taking small pieces and moving between
 * workers (it yields now and then; a new coroutine takes over each turn). */
struct turns {
    int      fd;
    uint64_t off;    /* next byte expected */
    uint64_t want;   /* this turn's bytes */
};

static void *reading_turn(void *arg)
{
    struct turns *t = arg;
    static const size_t sizes[] = { 1, 2, 100, 333, 1448, 4000, 9000, 4096, 12 };
    uint8_t *buf = malloc(9000);
    if (!buf)
        return (void *)"no memory";
    uint64_t end = t->off + t->want;
    for (unsigned k = 0; t->off < end; k++) {
        size_t len = sizes[k % 9];
        if (len > end - t->off)
            len = (size_t)(end - t->off);
        ssize_t n = k % 2 ? weft_read(t->fd, buf, len) : weft_recv(t->fd, buf, len, 0);
        if (n <= 0) {
            free(buf);
            return why("a read of %zu at byte %llu returned %zd", len, (unsigned long long)t->off, n);
        }
        long long bad = bad_pat(buf, t->off, (size_t)n);
        if (bad >= 0) {
            free(buf);
            return why("byte %llu is not the one sent", (unsigned long long)(t->off + (uint64_t)bad));
        }
        t->off += (uint64_t)n;
        if (k % 64 == 63)
            weft_yield();
    }
    free(buf);
    return NULL;
}

static void *megabytes(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    uint64_t total = RUNNING_ON_VALGRIND ? 256u << 10 : WEFT_TEST_SANITIZED ? 1u << 20 : 8u << 20;
    int sv[2];
    FAIL_IF(owned_pair(sv) != 0);
    static const size_t wsizes[] = { 65536, 1000, 200000, 7 };
    struct writer w = { .fd = sv[1], .total = total, .sizes = wsizes, .nsizes = 4, .shut = true };
    weft_task *wt;
    FAIL_IF(weft_spawn(&wt, pattern_writer, &w) != 0);
    struct turns tr = { .fd = sv[0] };
    uint64_t turn = total / 16 + 1;
    while (tr.off < total) {
        tr.want = turn < total - tr.off ? turn : total - tr.off;
        weft_task *t;
        FAIL_IF(weft_spawn(&t, reading_turn, &tr) != 0);
        void *r;
        FAIL_IF(weft_join(t, &r) != 0);
        if (r)
            return r;
    }
    char c;
    EXPECT_EQ(weft_read(sv[0], &c, 1), 0);   /* the writer shut down: the end */
    void *r;
    FAIL_IF(weft_join(wt, &r) != 0);
    if (r)
        return r;
    close_pair(sv);
    weft_deadline(prev);
    return NULL;
}

Test(own, megabytes_arrive_intact_through_small_reads_by_readers_on_any_worker)
{
    run_all(megabytes, NULL);
}

/* Nobody reads: a writer that does not wait meets -EAGAIN, as the queue is
 * bounded; then everything sent arrives intact, and more after it. */
static uint64_t filled[3][2][2][2];   /* [backend][small buffers][armed][plain, owned]: for the log */

static const char *fill_until_full(int peer, uint64_t *sent)
{
    uint8_t *b = malloc(65536);
    FAIL_IF(!b);
    uint64_t off = 0;
    const uint64_t cap = 64u << 20;
    int settles = 0;
    while (settles < 3) {
        if (off > cap) {
            free(b);
            return why("%llu bytes went into a socket nobody reads: the queue is not bounded",
                       (unsigned long long)off);
        }
        fill_pat(b, off, 65536);
        ssize_t r = weft_send(peer, b, 65536, MSG_DONTWAIT);
        if (r == -EAGAIN) {
            settles++;
            weft_sleep(SETTLE_NS);   /* a receive that still drains would make room */
            continue;
        }
        if (r <= 0) {
            free(b);
            return why("a send that must not wait returned %zd", r);
        }
        settles = 0;
        off += (uint64_t)r;
    }
    free(b);
    *sent = off;
    return NULL;
}

static void *backpressure(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    for (int small = 0; small < 2; small++)
    for (int armed = 0; armed < 2; armed++) {
        for (int own = 0; own < 2; own++) {
            int sv[2];
            FAIL_IF(tcp_pair_sized(sv, AF_INET, small ? 16384 : 0) != 0);
            if (own)
                EXPECT_EQ(weft_own(sv[0]), 0);
            if (armed)
                CHECK(arm(sv[0], sv[1]));
            uint64_t sent = 0;
            CHECK(fill_until_full(sv[1], &sent));
            filled[cur_backend][small][armed][own] = sent;
            /* With small socket buffers the queue's share shows: at most
             * WEFT_OWN_QUEUE beyond one receive (a generous one here). */
            if (own && small && sent > filled[cur_backend][small][armed][0] + WEFT_OWN_QUEUE + (256u << 10))
                return why("an owned socket nobody reads took %llu bytes, a plain one %llu: more than "
                           "WEFT_OWN_QUEUE and one receive beyond", (unsigned long long)sent,
                           (unsigned long long)filled[cur_backend][small][armed][0]);
            uint8_t *b = malloc(65536);
            FAIL_IF(!b);
            uint64_t got = 0;
            for (unsigned k = 0; got < sent; k++) {
                size_t len = k % 3 == 0 ? 1 : k % 3 == 1 ? 4096 : 65536;
                if (len > sent - got)
                    len = (size_t)(sent - got);
                ssize_t n = weft_read(sv[0], b, len);
                long long bad = n > 0 ? bad_pat(b, got, (size_t)n) : -1;
                if (n <= 0 || bad >= 0) {
                    free(b);
                    return why("%s%s socket: the read at byte %llu of %llu returned %zd (first wrong %lld)",
                               own ? "an owned" : "a plain", armed ? " armed" : "", (unsigned long long)got,
                               (unsigned long long)sent, n, bad);
                }
                got += (uint64_t)n;
            }
            /* Drained: nothing more, and the writer may go on. */
            EXPECT_EQ(weft_recv(sv[0], b, 16, MSG_DONTWAIT), -EAGAIN);
            fill_pat(b, sent, 3000);
            EXPECT_EQ(send_all(sv[1], b, 3000), 3000);
            EXPECT_EQ(read_n(sv[0], b, 3000), 3000);
            long long bad = bad_pat(b, sent, 3000);
            free(b);
            EXPECT_EQ(bad, -1);
            close_pair(sv);
        }
    }
    weft_deadline(prev);
    return NULL;
}

Test(own, a_writer_meets_flow_control_when_nobody_reads_and_nothing_is_lost)
{
    run_all(backpressure, NULL);
    for (int b = 1; b < 3; b++)
        for (int small = 0; small < 2; small++)
            cr_log_info("%s, %s buffers, bytes taken before -EAGAIN: plain %llu, owned %llu; after a read: "
                        "plain %llu, owned %llu", backend_name[b], small ? "small" : "default",
                        (unsigned long long)filled[b][small][0][0], (unsigned long long)filled[b][small][0][1],
                        (unsigned long long)filled[b][small][1][0], (unsigned long long)filled[b][small][1][1]);
}

/* ---- reading ahead on epoll ---------------------------------------------------- */

/* A small read of a socket handed over takes what the socket holds into the
 * queue, on either backend: on io_uring its receive does, on epoll the read
 * itself (io/owned.c, read_ahead), so that a read that gets all it asked for
 * is not followed by a recv that finds nothing. The rest then comes from
 * the queue, in order, through every read call; a read of the queue's first
 * allocation or more on epoll goes to the socket itself and leaves what it
 * did not ask for there. */
static void *small_reads_take_the_socket_s_bytes_ahead(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    int sv[2];
    FAIL_IF(tcp_pair_of(sv, AF_INET) != 0);
    EXPECT_EQ(weft_own(sv[0]), 0);
    enum { SENT = 3000, BIG = 10000 };
    uint8_t *out = malloc(BIG), *in = malloc(BIG);
    FAIL_IF(!out || !in);
    fill_pat(out, 0, SENT);
    EXPECT_EQ(send_all(sv[1], out, SENT), SENT);
    weft_sleep(SETTLE_NS);
    uint64_t got = 0;
    for (unsigned k = 0; got < SENT; k++) {
        size_t len = SENT - got < 64 ? (size_t)(SENT - got) : 64;
        ssize_t n = read_kind(sv[0], k, in, len);
        if (n != (ssize_t)len || bad_pat(in, got, (size_t)n) >= 0) {
            free(out);
            free(in);
            return why("%s of %zu at byte %llu returned %zd", kind_name[k % 5], len, (unsigned long long)got, n);
        }
        got += (uint64_t)n;
        int inq = -1;
        FAIL_IF(ioctl(sv[0], FIONREAD, &inq) != 0);
        if (inq != 0) {
            free(out);
            free(in);
            return why("after a read of %zu bytes, the socket still held %d of the %d sent", len, inq, SENT);
        }
    }
    EXPECT_EQ(weft_recv(sv[0], in, 1, MSG_DONTWAIT), -EAGAIN);
    /* A large read, with nothing queued. */
    fill_pat(out, SENT, BIG);
    EXPECT_EQ(send_all(sv[1], out, BIG), BIG);
    weft_sleep(SETTLE_NS);
    ssize_t n = weft_read(sv[0], in, 8192);
    int inq = -1;
    FAIL_IF(ioctl(sv[0], FIONREAD, &inq) != 0);
    free(out);
    if (n != 8192 || bad_pat(in, SENT, 8192) >= 0) {
        free(in);
        return why("a read of 8192 with %d bytes sent returned %zd", BIG, n);
    }
    if (cur_backend == WEFT_IO_EPOLL && inq != BIG - 8192) {
        free(in);
        return why("a read of 8192 on epoll left %d bytes in the socket, not %d", inq, BIG - 8192);
    }
    n = weft_read(sv[0], in, BIG);
    bool bad = n != BIG - 8192 || bad_pat(in, SENT + 8192, (size_t)n) >= 0;
    free(in);
    FAIL_IF(bad);
    close_pair(sv);
    weft_deadline(prev);
    return NULL;
}

Test(own, small_reads_take_the_socket_s_bytes_ahead_on_either_backend)
{
    run_all(small_reads_take_the_socket_s_bytes_ahead, NULL);
}

/* A weft_poll for POLLIN while another coroutine's read waits (on epoll, a
 * read ahead; on io_uring, its armed receive) sees the bytes that read
 * takes into the queue, though the socket itself then holds none. */
struct poll_behind {
    int         fd;
    _Atomic int polled;   /* revents, or a negative errno; 1 << 30 until then */
};

struct ten {
    int      fd;
    uint8_t *b;
};

static void *read_ten(void *arg)
{
    struct ten *t = arg;
    return (void *)(intptr_t)weft_read(t->fd, t->b, 10);
}

static void *poll_behind_a_read(void *arg)
{
    struct poll_behind *p = arg;
    weft_deadline(weft_now() + GUARD_NS / 10);   /* a poll that misses the bytes fails, not hangs */
    atomic_store(&p->polled, weft_poll(p->fd, POLLIN));
    return NULL;
}

static void *a_poll_behind_a_waiting_read(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    int sv[2];
    FAIL_IF(tcp_pair_of(sv, AF_INET) != 0);
    EXPECT_EQ(weft_own(sv[0]), 0);
    struct poll_behind p = { .fd = sv[0], .polled = 1 << 30 };
    weft_task *r, *q;
    uint8_t b[100];
    struct ten t = { sv[0], b };
    FAIL_IF(weft_spawn(&r, read_ten, &t) != 0);
    weft_sleep(SETTLE_NS);   /* its read waits */
    FAIL_IF(weft_spawn(&q, poll_behind_a_read, &p) != 0);
    weft_sleep(SETTLE_NS);   /* and so does the poll, behind it */
    uint8_t out[100];
    fill_pat(out, 0, 100);
    EXPECT_EQ(send_all(sv[1], out, 100), 100);
    void *rr;
    FAIL_IF(weft_join(r, &rr) != 0);
    EXPECT_EQ((intptr_t)rr, 10);
    FAIL_IF(weft_join(q, NULL) != 0);
    EXPECT_EQ(atomic_load(&p.polled), POLLIN);
    EXPECT_EQ(weft_read(sv[0], b, sizeof b), 90);
    FAIL_IF(bad_pat(b, 10, 90) >= 0);
    close_pair(sv);
    weft_deadline(prev);
    return NULL;
}

Test(own, a_poll_behind_a_waiting_read_sees_the_bytes_it_queues)
{
    run_all(a_poll_behind_a_waiting_read, NULL);
}

/* ... and a plain thread's weft_poll for POLLIN that polls the socket
 * itself (nothing queued, armed or being read) sees the bytes that come,
 * however a read that starts meanwhile takes them: no read ahead starts
 * while such a poll is under way, which would move the bytes it waits for
 * into the queue. Twenty rounds: the poll starts, then a coroutine's read of
 * 10 waits, then 100 bytes come. */
static void *a_plain_poll_before_a_read(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    int sv[2];
    FAIL_IF(tcp_pair_of(sv, AF_INET) != 0);
    EXPECT_EQ(weft_own(sv[0]), 0);
    uint8_t out[100], b[100];
    for (int round = 0; round < 20; round++) {
        struct poll_behind p = { .fd = sv[0], .polled = 1 << 30 };
        pthread_t th;
        FAIL_IF(pthread_create(&th, NULL, poll_behind_a_read, &p) != 0);
        weft_sleep(SETTLE_NS / 4);   /* the poll waits on the socket */
        weft_task *r;
        struct ten t = { sv[0], b };
        FAIL_IF(weft_spawn(&r, read_ten, &t) != 0);
        weft_sleep(SETTLE_NS / 4);   /* and the read, beside it */
        fill_pat(out, (uint64_t)round * 100, 100);
        EXPECT_EQ(send_all(sv[1], out, 100), 100);
        void *rr;
        FAIL_IF(weft_join(r, &rr) != 0);
        EXPECT_EQ((intptr_t)rr, 10);
        FAIL_IF(bad_pat(b, (uint64_t)round * 100, 10) >= 0);
        while (atomic_load(&p.polled) == 1 << 30)
            weft_sleep(1000000);
        FAIL_IF(pthread_join(th, NULL) != 0);
        if (atomic_load(&p.polled) != POLLIN)
            return why("round %d: a plain thread's poll returned %d with 90 bytes to read", round,
                       atomic_load(&p.polled));
        EXPECT_EQ(weft_read(sv[0], b, 90), 90);
        FAIL_IF(bad_pat(b, (uint64_t)round * 100 + 10, 90) >= 0);
    }
    close_pair(sv);
    weft_deadline(prev);
    return NULL;
}

Test(own, a_plain_thread_s_poll_sees_bytes_that_a_read_beside_it_leaves)
{
    run_all(a_plain_poll_before_a_read, NULL);
}

/* A poll for POLLIN and POLLOUT while another reader reads the socket and
 * waits, its peer silent, answers POLLOUT once room comes: it asks the
 * socket rather than wait for that read to end. The reader is a coroutine
 * (a read ahead on epoll, a receive on io_uring). */
static void *read_ten_within(void *arg)
{
    weft_deadline(weft_now() + GUARD_NS / 10);
    return read_ten(arg);
}

static void *drain_later(void *arg)
{
    int fd = *(int *)arg;
    char b[4096];
    weft_sleep(SETTLE_NS);
    while (recv(fd, b, sizeof b, MSG_DONTWAIT) > 0)
        ;
    return NULL;
}

static void *pollout_beside_a_waiting_read(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    int sv[2];
    FAIL_IF(tcp_pair_sized(sv, AF_INET, 16384) != 0);
    EXPECT_EQ(weft_own(sv[0]), 0);
    uint8_t b[10], junk[4096] = { 0 };
    while (send(sv[0], junk, sizeof junk, MSG_DONTWAIT) > 0)
        ;   /* no room: POLLOUT is not ready */
    struct ten t = { sv[0], b };
    weft_task *r, *d;
    FAIL_IF(weft_spawn(&r, read_ten_within, &t) != 0);
    weft_sleep(SETTLE_NS);   /* its read waits */
    FAIL_IF(weft_spawn(&d, drain_later, &sv[1]) != 0);
    uint64_t p2 = weft_deadline(weft_now() + GUARD_NS / 10);
    int p = weft_poll(sv[0], POLLIN | POLLOUT);
    weft_deadline(p2);
    FAIL_IF(weft_join(d, NULL) != 0);
    EXPECT_EQ(send_str(sv[1], "0123456789"), 10);
    void *rr;
    FAIL_IF(weft_join(r, &rr) != 0);
    EXPECT_EQ(p, POLLOUT);
    EXPECT_EQ((intptr_t)rr, 10);
    close_pair(sv);
    weft_deadline(prev);
    return NULL;
}

Test(own, a_poll_for_pollout_too_beside_a_waiting_read_answers_when_room_comes)
{
    run_all(pollout_beside_a_waiting_read, NULL);
}

/* Each reader's reads go forward in the stream, as on the socket, however
 * the readers of one socket mix calls that the queue serves with calls that
 * go to the socket itself (a read of 8 KiB, MSG_DONTWAIT, a plain thread's
 * read): a read of the socket must never take bytes beyond those that
 * another reader is taking into the queue at the same time, to be served to
 * the first reader later. The stream is 4-byte counters, so each read names
 * where it was in it. Three coroutines and a plain thread, 1 MiB. */
#define ORDER_WORDS (1u << 18)

struct order_read {
    int         fd;
    int         kind;      /* 0: 8192 and 64 alternately; 1: 64 and MSG_DONTWAIT 100 alternately */
    _Atomic int back;      /* reads that went back in the stream */
    long        seen;      /* the bytes this reader got */
};

/* Where in the stream of counters the n bytes at b lie; -1 if they are too
 * few to tell. */
static long counter_offset(const uint8_t *b, ssize_t n)
{
    for (int a = 0; a < 4 && a + 8 <= n; a++) {
        uint32_t w0 = (uint32_t)b[a] << 24 | (uint32_t)b[a + 1] << 16 | (uint32_t)b[a + 2] << 8 | b[a + 3];
        uint32_t w1 = (uint32_t)b[a + 4] << 24 | (uint32_t)b[a + 5] << 16 | (uint32_t)b[a + 6] << 8 | b[a + 7];
        if (w1 == w0 + 1)
            return (long)w0 * 4 - a;
    }
    return -1;
}

static void *order_reader(void *arg)
{
    struct order_read *o = arg;
    uint8_t *b = malloc(8192);
    long end = 0;
    for (unsigned k = 0; b; k++) {
        ssize_t n = o->kind == 0 ? weft_read(o->fd, b, k & 1 ? 64 : 8192)
                  : k & 1 ? weft_recv(o->fd, b, 100, MSG_DONTWAIT) : weft_read(o->fd, b, 64);
        if (n == -EAGAIN) {
            if (weft_worker() < 0)
                sched_yield();
            else
                weft_yield();
            continue;
        }
        if (n <= 0)
            break;
        o->seen += n;
        long off = counter_offset(b, n);
        if (off >= 0 && off < end)
            atomic_fetch_add(&o->back, 1);
        if (off >= 0 && off + n > end)
            end = off + n;
    }
    free(b);
    return NULL;
}

static void *order_peer(void *arg)
{
    int fd = *(int *)arg;
    uint8_t *s = malloc(ORDER_WORDS * 4);
    for (uint32_t i = 0; s && i < ORDER_WORDS; i++) {
        s[4 * i] = (uint8_t)(i >> 24);
        s[4 * i + 1] = (uint8_t)(i >> 16);
        s[4 * i + 2] = (uint8_t)(i >> 8);
        s[4 * i + 3] = (uint8_t)i;
    }
    unsigned r = 1;
    for (size_t off = 0; s && off < ORDER_WORDS * 4;) {
        r = r * 1103515245u + 12345u;
        size_t k = 300 + (r >> 16) % 5000;
        if (k > ORDER_WORDS * 4 - off)
            k = ORDER_WORDS * 4 - off;
        ssize_t w = write(fd, s + off, k);
        if (w <= 0)
            break;
        off += (size_t)w;
        if ((r >> 8) % 4 == 0)
            usleep(20);
    }
    shutdown(fd, SHUT_WR);
    free(s);
    return NULL;
}

static void *order_plain(void *arg)
{
    weft_deadline(weft_now() + GUARD_NS);
    return order_reader(arg);
}

static void *each_reader_goes_forward(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    int sv[2];
    FAIL_IF(tcp_pair_of(sv, AF_INET) != 0);
    EXPECT_EQ(weft_own(sv[0]), 0);
    struct order_read rd[4];
    for (int i = 0; i < 4; i++)
        rd[i] = (struct order_read){ .fd = sv[0], .kind = i & 1 };
    weft_task *t[3];
    for (int i = 0; i < 3; i++)
        FAIL_IF(weft_spawn(&t[i], order_reader, &rd[i]) != 0);
    pthread_t plain, peer;
    FAIL_IF(pthread_create(&plain, NULL, order_plain, &rd[3]) != 0);
    FAIL_IF(pthread_create(&peer, NULL, order_peer, &sv[1]) != 0);
    for (int i = 0; i < 3; i++)
        FAIL_IF(weft_join(t[i], NULL) != 0);
    /* The coroutines have ended, so no read of theirs holds the socket
     * that the plain thread waits for: joining it cannot hold a worker
     * that it needs. */
    FAIL_IF(pthread_join(plain, NULL) != 0);
    FAIL_IF(pthread_join(peer, NULL) != 0);
    long total = 0;
    for (int i = 0; i < 4; i++) {
        total += rd[i].seen;
        if (atomic_load(&rd[i].back))
            return why("reader %d (%s) went back in the stream %d times", i,
                       i == 3 ? "a plain thread" : "a coroutine", atomic_load(&rd[i].back));
    }
    EXPECT_EQ(total, (long)ORDER_WORDS * 4);
    close_pair(sv);
    weft_deadline(prev);
    return NULL;
}

Test(own, each_reader_s_reads_go_forward_in_the_stream_whatever_calls_the_readers_mix)
{
    run_all(each_reader_goes_forward, NULL);
}

/* ---- the first arm on a full socket ----------------------------------------- */

/* Whether this kernel limits a multishot receive's bytes (6.17): where it
 * does not, the owner's stop is the only bound, and how much the ring takes
 * first depends on how soon the worker reaps. */
static bool kernel_limits_receives(void)
{
    struct utsname u;
    unsigned major = 0, minor = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%u.%u", &major, &minor) != 2)
        return false;
    return major > 6 || (major == 6 && minor >= 17);
}

static int64_t first_taken[3];   /* [backend]: for the log */
#define SMALL_SEND 16384

/* The bytes the kernel holds between the pair's ends: in sv[0]'s receive
 * queue and in sv[1]'s send queue. */
static const char *bytes_between(int sv[2], uint64_t *n)
{
    int inq = -1, outq = -1;
    FAIL_IF(ioctl(sv[0], FIONREAD, &inq) != 0 || inq < 0);
    FAIL_IF(ioctl(sv[1], TIOCOUTQ, &outq) != 0 || outq < 0);
    *n = (uint64_t)inq + (uint64_t)outq;
    return NULL;
}

/* A socket that holds megabytes when its first read arms the receive: the
 * ring takes at most WEFT_OWN_QUEUE and one buffer of it, not every buffer
 * it has, and the rest stays in the socket for the reads that follow. */
static void *first_arm_on_a_full_socket(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    /* Most of what is sent waits in the receive queue, little in the
     * sender's, so that the count of both (which may count the bytes not
     * yet acknowledged twice) is near what the socket holds. */
    int sv[2];
    FAIL_IF(tcp_pair_bufs(sv, AF_INET, 4 << 20, SMALL_SEND) != 0);
    uint64_t sent = 0;
    CHECK(fill_until_full(sv[1], &sent));
    uint64_t before = 0, after = 0;
    CHECK(bytes_between(sv, &before));
    EXPECT_EQ(weft_own(sv[0]), 0);
    uint8_t *b = malloc(65536);
    FAIL_IF(!b);
    EXPECT_EQ(weft_read(sv[0], b, 1), 1);   /* arms, where a receive can be armed */
    EXPECT_EQ(b[0], pat(0));
    weft_sleep(SETTLE_NS);                  /* what the ring would take, it has taken */
    CHECK(bytes_between(sv, &after));
    int64_t taken = (int64_t)before - 1 - (int64_t)after;
    first_taken[cur_backend] = taken;
    if ((cur_backend == WEFT_IO_EPOLL || kernel_limits_receives()) &&
        taken > WEFT_OWN_QUEUE + 4096 + 2 * SMALL_SEND) {
        free(b);
        return why("a receive armed on a socket holding %llu bytes took %lld of them, more than "
                   "WEFT_OWN_QUEUE and one buffer", (unsigned long long)before, (long long)taken);
    }
    for (uint64_t got = 1; got < sent;) {
        size_t len = sent - got < 65536 ? (size_t)(sent - got) : 65536;
        ssize_t n = weft_read(sv[0], b, len);
        long long bad = n > 0 ? bad_pat(b, got, (size_t)n) : -1;
        if (n <= 0 || bad >= 0) {
            free(b);
            return why("the read at byte %llu of %llu returned %zd (first wrong %lld)", (unsigned long long)got,
                       (unsigned long long)sent, n, bad);
        }
        got += (uint64_t)n;
    }
    free(b);
    EXPECT_EQ(weft_recv(sv[0], (char[1]){ 0 }, 1, MSG_DONTWAIT), -EAGAIN);
    close_pair(sv);
    weft_deadline(prev);
    return NULL;
}

Test(own, a_receive_armed_on_a_full_socket_takes_at_most_WEFT_OWN_QUEUE_and_one_buffer_of_it)
{
    run_all(first_arm_on_a_full_socket, NULL);
    for (int b = 1; b < 3; b++)
        cr_log_info("%s: the first receive took %lld bytes%s", backend_name[b], (long long)first_taken[b],
                    b == WEFT_IO_URING && !kernel_limits_receives() ? " (no limit on this kernel)" : "");
}

/* ---- flags ---------------------------------------------------------------------- */

typedef const char *(*sock_case)(int fd, int peer);

static int case_round;            /* 0 on the plain socket, 1 on the owned one */
static ssize_t nonblock_plain;    /* what the plain socket's O_NONBLOCK read gave */

/* Runs c on a plain pair, then on a pair whose reading side is owned. */
static const char *plain_then_owned(sock_case c)
{
    for (int own = 0; own < 2; own++) {
        int sv[2];
        FAIL_IF((own ? owned_pair(sv) : plain_pair(sv)) != 0);
        case_round = own;
        const char *m = c(sv[0], sv[1]);
        close_pair(sv);
        if (m)
            return why("%s socket: %s", own ? "an owned" : "a plain", m);
    }
    return NULL;
}

static const char *peek_case(int fd, int peer)
{
    CHECK(arm(fd, peer));
    char b[64];
    EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_PEEK | MSG_DONTWAIT), -EAGAIN);
    EXPECT_EQ(send_str(peer, "hello "), 6);
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(send_str(peer, "world"), 5);   /* a second arrival */
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(weft_recv(fd, b, 5, MSG_PEEK), 5);
    FAIL_IF(memcmp(b, "hello", 5) != 0);
    memset(b, 0, sizeof b);
    EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_PEEK), 11);   /* across both arrivals */
    FAIL_IF(memcmp(b, "hello world", 11) != 0);
    memset(b, 0, sizeof b);
    EXPECT_EQ(weft_recvfrom(fd, b, 3, MSG_PEEK, NULL, NULL), 3);
    FAIL_IF(memcmp(b, "hel", 3) != 0);
    EXPECT_EQ(weft_read(fd, b, 3), 3);
    FAIL_IF(memcmp(b, "hel", 3) != 0);
    char x[4], y[8];
    struct iovec iov[2] = { { x, 4 }, { y, 8 } };
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
    EXPECT_EQ(weft_recvmsg(fd, &m, MSG_PEEK), 8);
    FAIL_IF(memcmp(x, "lo w", 4) != 0 || memcmp(y, "orld", 4) != 0);
    memset(b, 0, sizeof b);
    EXPECT_EQ(weft_recv(fd, b, sizeof b, 0), 8);
    FAIL_IF(memcmp(b, "lo world", 8) != 0);
    EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_PEEK | MSG_DONTWAIT), -EAGAIN);
    return NULL;
}

struct later {
    int         fd;
    const char *s[4];
};

/* Sends each string after a pause. */
static void *send_later(void *arg)
{
    struct later *l = arg;
    for (int i = 0; i < 4 && l->s[i]; i++) {
        weft_sleep(SETTLE_NS);
        if (strcmp(l->s[i], "SHUT") == 0) {
            if (shutdown(l->fd, SHUT_WR) != 0)
                return (void *)"shutdown failed";
        } else if (send_str(l->fd, l->s[i]) != (ssize_t)strlen(l->s[i])) {
            return (void *)"a later send failed";
        }
    }
    return NULL;
}

static const char *waitall_case(int fd, int peer)
{
    CHECK(arm(fd, peer));
    /* The bytes come in three sends, each after the reader waits. */
    struct later l = { .fd = peer, .s = { "abc", "defg", "hijklm" } };
    weft_task *t;
    FAIL_IF(weft_spawn(&t, send_later, &l) != 0);
    char b[32];
    memset(b, 0, sizeof b);
    EXPECT_EQ(weft_recv(fd, b, 10, MSG_WAITALL), 10);
    FAIL_IF(memcmp(b, "abcdefghij", 10) != 0);
    void *r;
    FAIL_IF(weft_join(t, &r) != 0 || r);
    /* The same with recvmsg, and then the end comes first. */
    l = (struct later){ .fd = peer, .s = { "no", "p", "SHUT" } };
    FAIL_IF(weft_spawn(&t, send_later, &l) != 0);
    char x[3], y[7];
    memset(y, 0, sizeof y);
    struct iovec iov[2] = { { x, 3 }, { y, 7 } };
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
    EXPECT_EQ(weft_recvmsg(fd, &m, MSG_WAITALL), 6);   /* klm, then nop, then the end */
    FAIL_IF(memcmp(x, "klm", 3) != 0 || memcmp(y, "nop", 3) != 0);
    FAIL_IF(weft_join(t, &r) != 0 || r);
    EXPECT_EQ(weft_recv(fd, b, 10, MSG_WAITALL), 0);
    EXPECT_EQ(weft_recv(fd, b, 10, MSG_WAITALL), 0);
    return NULL;
}

/* A deadline in the middle of a MSG_WAITALL loses nothing: the call returns
 * what it gathered, or -ETIMEDOUT with the bytes left for the next read. */
static const char *waitall_deadline_case(int fd, int peer)
{
    CHECK(arm(fd, peer));
    EXPECT_EQ(send_str(peer, "abc"), 3);
    char b[16];
    memset(b, 0, sizeof b);
    uint64_t prev = weft_deadline(weft_now() + SHORT_NS);
    ssize_t n = weft_recv(fd, b, 10, MSG_WAITALL);
    weft_deadline(prev);
    if (n == -ETIMEDOUT) {
        memset(b, 0, sizeof b);
        n = weft_recv(fd, b, 10, 0);
    }
    if (n != 3 || memcmp(b, "abc", 3) != 0)
        return why("MSG_WAITALL cut short by its deadline, then a read: %zd \"%.*s\", not \"abc\"", n,
                   n > 0 ? (int)n : 0, b);
    EXPECT_EQ(send_str(peer, "d"), 1);
    EXPECT_EQ(weft_recv(fd, b, 1, MSG_WAITALL), 1);
    EXPECT_EQ(b[0], 'd');
    return NULL;
}

static const char *dontwait_case(int fd, int peer)
{
    char b[16];
    struct iovec iov = { b, sizeof b };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    /* Before any read, and after one that armed a receive. */
    for (int armed = 0; armed < 2; armed++) {
        EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_DONTWAIT), -EAGAIN);
        EXPECT_EQ(weft_recvfrom(fd, b, sizeof b, MSG_DONTWAIT, NULL, NULL), -EAGAIN);
        EXPECT_EQ(weft_recvmsg(fd, &m, MSG_DONTWAIT), -EAGAIN);
        EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_DONTWAIT | MSG_WAITALL), -EAGAIN);
        if (!armed)
            CHECK(arm(fd, peer));
    }
    EXPECT_EQ(send_str(peer, "now"), 3);
    EXPECT_EQ(weft_poll(fd, POLLIN) & POLLIN, POLLIN);
    memset(b, 0, sizeof b);
    EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_DONTWAIT), 3);
    FAIL_IF(memcmp(b, "now", 3) != 0);
    EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_DONTWAIT), -EAGAIN);
    /* The owner's O_NONBLOCK: whatever a plain socket's read does with it
     * (bounded by a deadline), an owned one's does too. */
    int fl = fcntl(fd, F_GETFL);
    FAIL_IF(fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0);
    uint64_t prev = weft_deadline(weft_now() + SHORT_NS);
    ssize_t nb = weft_read(fd, b, sizeof b);
    weft_deadline(prev);
    if (case_round == 0)
        nonblock_plain = nb;
    else
        EXPECT_EQ(nb, nonblock_plain);
    EXPECT_EQ(send_str(peer, "nb"), 2);
    EXPECT_EQ(weft_poll(fd, POLLIN) & POLLIN, POLLIN);
    EXPECT_EQ(weft_read(fd, b, sizeof b), 2);
    FAIL_IF(fcntl(fd, F_SETFL, fl) != 0);
    return NULL;
}

/* MSG_TRUNC on TCP discards: that many bytes, none copied (tcp(7)). */
static const char *trunc_case(int fd, int peer)
{
    CHECK(arm(fd, peer));
    EXPECT_EQ(send_str(peer, "abcdefghij"), 10);
    weft_sleep(SETTLE_NS);
    char b[32], scratch[100];
    /* No buffer is needed; Valgrind, which does not know that, gets one. */
    char *none = RUNNING_ON_VALGRIND ? scratch : NULL;
    EXPECT_EQ(weft_recv(fd, none, 3, MSG_TRUNC), 3);   /* abc */
    memset(b, '#', sizeof b);
    EXPECT_EQ(weft_recv(fd, b, 3, MSG_TRUNC), 3);      /* def, not copied */
    EXPECT_EQ(b[0], '#');
    EXPECT_EQ(weft_recv(fd, b, 100, MSG_TRUNC | MSG_PEEK), 4);   /* counted, kept */
    memset(b, 0, sizeof b);
    EXPECT_EQ(weft_recv(fd, b, sizeof b, 0), 4);
    FAIL_IF(memcmp(b, "ghij", 4) != 0);
    EXPECT_EQ(weft_recv(fd, b, 100, MSG_TRUNC | MSG_DONTWAIT), -EAGAIN);
    /* A discard that waits, and one of more than is there. */
    struct later l = { .fd = peer, .s = { "0123456789" } };
    weft_task *t;
    FAIL_IF(weft_spawn(&t, send_later, &l) != 0);
    EXPECT_EQ(weft_recv(fd, none, 4, MSG_TRUNC | MSG_WAITALL), 4);
    void *r;
    FAIL_IF(weft_join(t, &r) != 0 || r);
    EXPECT_EQ(weft_recv(fd, none, 100, MSG_TRUNC), 6);
    EXPECT_EQ(weft_recv(fd, b, 100, MSG_DONTWAIT), -EAGAIN);
    return NULL;
}

/* A zero-length read with bytes there returns 0 at once and takes none;
 * with none there it is what recv(2) makes of it (the plain socket says). */
static const char *zero_case(int fd, int peer)
{
    CHECK(arm(fd, peer));
    char b[8];
    EXPECT_EQ(send_str(peer, "z"), 1);
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(weft_read(fd, b, 0), 0);
    EXPECT_EQ(weft_recv(fd, b, 0, 0), 0);
    struct iovec none = { b, 0 };
    EXPECT_EQ(weft_readv(fd, &none, 1), 0);
    EXPECT_EQ(weft_readv(fd, &none, 0), 0);
    EXPECT_EQ(weft_read(fd, b, sizeof b), 1);
    EXPECT_EQ(b[0], 'z');
    EXPECT_EQ(weft_recv(fd, b, 0, MSG_DONTWAIT), -EAGAIN);   /* recv(2) on empty TCP: EAGAIN */
    return NULL;
}

/* Urgent data goes to the socket itself; the stream around it is intact.
 * An armed receive (io_uring) reads ahead, and TCP drops an urgent byte a
 * reader has read past: there MSG_OOB may find it gone (-EINVAL), never in
 * the stream. With SO_OOBINLINE it is in the stream, in its place. */
static const char *oob_case(int fd, int peer)
{
    for (int inline_ = 0; inline_ < 2; inline_++) {
        int on = inline_;
        FAIL_IF(setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &on, sizeof on) != 0);
        CHECK(arm(fd, peer));
        EXPECT_EQ(send(peer, "ab", 2, MSG_NOSIGNAL), 2);
        EXPECT_EQ(send(peer, "c", 1, MSG_OOB | MSG_NOSIGNAL), 1);
        EXPECT_EQ(send(peer, "de", 2, MSG_NOSIGNAL), 2);
        weft_sleep(SETTLE_NS);
        char b[16] = "";
        ssize_t r = weft_recv(fd, b, 1, MSG_OOB);
        bool read_ahead = case_round == 1 && cur_backend == WEFT_IO_URING;
        if (inline_)
            EXPECT_EQ(r, -EINVAL);   /* in the stream, not out of it */
        else if (!(r == 1 && b[0] == 'c') && !(read_ahead && r == -EINVAL))
            return why("MSG_OOB returned %zd '%c'", r, r == 1 ? b[0] : '?');
        memset(b, 0, sizeof b);
        EXPECT_EQ(read_n(fd, b, inline_ ? 5 : 4), inline_ ? 5 : 4);
        if (strcmp(b, inline_ ? "abcde" : "abde") != 0)
            return why("%s the stream read \"%s\"", inline_ ? "SO_OOBINLINE:" : "", b);
        EXPECT_EQ(weft_recv(fd, b, 1, MSG_OOB), -EINVAL);   /* taken, or never out of band */
        EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_DONTWAIT), -EAGAIN);
    }
    return NULL;
}

static void *flag_cases(void *arg)
{
    static const sock_case cases[] = { peek_case, waitall_case, waitall_deadline_case, dontwait_case, trunc_case };
    static const char *const names[] = { "MSG_PEEK", "MSG_WAITALL", "MSG_WAITALL with a deadline",
                                         "MSG_DONTWAIT", "MSG_TRUNC" };
    size_t i = (size_t)(intptr_t)arg;
    uint64_t prev = guard();
    const char *m = plain_then_owned(cases[i]);
    weft_deadline(prev);
    return m ? why("%s: %s", names[i], m) : NULL;
}

Test(own, MSG_PEEK_returns_the_bytes_and_the_next_read_gets_them_again)
{
    run_all(flag_cases, (void *)(intptr_t)0);
}

Test(own, MSG_WAITALL_fills_the_buffer_across_arrivals_and_returns_less_only_at_the_end)
{
    run_all(flag_cases, (void *)(intptr_t)1);
}

Test(own, MSG_WAITALL_cut_short_by_its_deadline_loses_nothing)
{
    run_all(flag_cases, (void *)(intptr_t)2);
}

Test(own, MSG_DONTWAIT_and_O_NONBLOCK_give_EAGAIN_with_nothing_there_and_the_bytes_later)
{
    run_all(flag_cases, (void *)(intptr_t)3);
}

Test(own, MSG_TRUNC_discards_bytes_as_on_a_plain_tcp_socket)
{
    run_all(flag_cases, (void *)(intptr_t)4);
}

static const char *dontwait_first_case(int fd, int peer);
static const char *cancelled_poll_case(int fd, int peer);

/* One case of these, by index, on a plain socket and then an owned one. */
static void *odd_cases(void *arg)
{
    static const sock_case cases[] = { zero_case, oob_case, dontwait_first_case, cancelled_poll_case };
    uint64_t prev = guard();
    const char *m = plain_then_owned(cases[(size_t)(intptr_t)arg]);
    weft_deadline(prev);
    return (void *)m;
}

Test(own, a_zero_length_read_takes_nothing_as_on_a_plain_tcp_socket)
{
    run_all(odd_cases, (void *)0);
}

Test(own, urgent_data_goes_to_the_socket_or_stays_inline_and_the_stream_around_it_is_intact)
{
    run_all(odd_cases, (void *)1);
}

/* Bytes already in the socket when nothing is queued or armed: MSG_DONTWAIT
 * gets them at once, also after a poll for POLLIN and POLLOUT said so (a
 * read that armed a receive first would answer -EAGAIN). */
static const char *dontwait_first_case(int fd, int peer)
{
    char b[16] = "";
    EXPECT_EQ(send_str(peer, "abc"), 3);
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_DONTWAIT), 3);
    FAIL_IF(memcmp(b, "abc", 3) != 0);
    EXPECT_EQ(send_str(peer, "de"), 2);
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(weft_poll(fd, POLLIN | POLLOUT) & (POLLIN | POLLOUT), POLLIN | POLLOUT);
    EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_DONTWAIT), 2);
    FAIL_IF(memcmp(b, "de", 2) != 0);
    return NULL;
}

/* A cancelled coroutine's weft_poll gives -ECANCELED even with bytes
 * queued, as its reads do. */
static void *poll_cancelled(void *arg)
{
    int fd = *(int *)arg;
    weft_cancel(weft_self());
    char c;
    int p = weft_poll(fd, POLLIN);
    ssize_t r = weft_recv(fd, &c, 1, MSG_DONTWAIT);
    return (void *)(intptr_t)(p == -ECANCELED && r == -ECANCELED);
}

static const char *cancelled_poll_case(int fd, int peer)
{
    CHECK(arm(fd, peer));
    EXPECT_EQ(send_str(peer, "q"), 1);
    weft_sleep(SETTLE_NS);
    weft_task *t;
    void *ok = NULL;
    FAIL_IF(weft_spawn(&t, poll_cancelled, &fd) != 0);
    FAIL_IF(weft_join(t, &ok) != 0);
    FAIL_IF(!ok);
    char c = 0;
    EXPECT_EQ(weft_recv(fd, &c, 1, MSG_DONTWAIT), 1);   /* still there */
    EXPECT_EQ(c, 'q');
    return NULL;
}

Test(own, MSG_DONTWAIT_gets_bytes_already_in_the_socket_when_nothing_is_armed)
{
    run_all(odd_cases, (void *)2);
}

Test(own, a_cancelled_coroutine_s_poll_gives_ECANCELED_with_bytes_queued)
{
    run_all(odd_cases, (void *)3);
}

#if WEFT_TEST_URING_OVERRIDE
/* A kernel before 5.19 refuses the ring's provided buffers: here the
 * refusal is injected, slowed so that a second reader comes while the first
 * arms. Both must fall back to the usual calls and lose nothing. */
#include <dlfcn.h>
#include <liburing.h>

static _Atomic int refuse_buffers_us = -1;   /* -1: liburing's own call */

int io_uring_register_buf_ring(struct io_uring *ring, struct io_uring_buf_reg *reg, unsigned int flags)
{
    int us = atomic_load(&refuse_buffers_us);
    if (us < 0) {
        int (*real)(struct io_uring *, struct io_uring_buf_reg *, unsigned int);
        *(void **)&real = dlsym(RTLD_NEXT, "io_uring_register_buf_ring");
        return real ? real(ring, reg, flags) : -ENOSYS;
    }
    usleep((useconds_t)us);
    return -EINVAL;
}

static void *read_one(void *arg)
{
    int fd = *(int *)arg;
    char c = 0;
    ssize_t r = weft_read(fd, &c, 1);
    return (void *)(intptr_t)(r == 1 ? c : r < 0 ? r : -1000);
}

static void *refused(void *arg)
{
    (void)arg;
    int sv[2];
    FAIL_IF(owned_pair(sv) != 0);
    uint64_t prev = guard();
    atomic_store(&refuse_buffers_us, (int)(SETTLE_NS / 1000 * 5));
    weft_task *a, *b;
    FAIL_IF(weft_spawn(&a, read_one, &sv[0]) != 0);
    weft_sleep(SETTLE_NS);   /* a is arming, slowly */
    FAIL_IF(weft_spawn(&b, read_one, &sv[0]) != 0);
    weft_sleep(SETTLE_NS * 8);   /* the refusal is in, both wait in the socket itself */
    EXPECT_EQ(send_str(sv[1], "x"), 1);
    EXPECT_EQ(send_str(sv[1], "y"), 1);
    void *ra = NULL, *rb = NULL;
    FAIL_IF(weft_join(a, &ra) != 0);
    FAIL_IF(weft_join(b, &rb) != 0);
    intptr_t x = (intptr_t)ra, y = (intptr_t)rb;
    FAIL_IF(!((x == 'x' && y == 'y') || (x == 'y' && y == 'x')));
    /* The ring arms no more; the stream goes on through the usual calls. */
    static char big[100000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 13 + i / 97);
    static char back[sizeof big];
    EXPECT_EQ(send_all(sv[1], big, sizeof big), (ssize_t)sizeof big);
    EXPECT_EQ(read_n(sv[0], back, sizeof back), (ssize_t)sizeof back);
    FAIL_IF(memcmp(big, back, sizeof big) != 0);
    atomic_store(&refuse_buffers_us, -1);
    weft_deadline(prev);
    close_pair(sv);
    return NULL;
}

Test(own, readers_fall_back_to_the_usual_calls_where_the_ring_refuses_its_buffers)
{
    static const unsigned counts[] = { 2, 4 };
    run_all_with(counts, 2, refused, NULL);
}
#endif

/* ---- a runtime's end and a MSG_WAITALL the socket finishes ----------------------- */

/* A peer that sends the pattern in pieces until told to stop, then shuts
 * its side down. */
struct flow {
    int              fd, peer;
    _Atomic int      stop;
    size_t           sent, got;
    long long        bad;        /* the first byte out of the pattern, or -1 */
    size_t           limit;      /* the reader stops after this many */
};

static void *flow_send(void *arg)
{
    struct flow *f = arg;
    uint8_t b[1000];
    while (!atomic_load(&f->stop)) {
        fill_pat(b, f->sent, sizeof b);
        ssize_t r = send_all(f->peer, b, sizeof b);
        if (r != (ssize_t)sizeof b)
            break;
        f->sent += sizeof b;
        usleep(20);
    }
    shutdown(f->peer, SHUT_WR);
    return NULL;
}

static void *flow_read(void *arg)
{
    struct flow *f = arg;
    uint8_t b[3000];
    ssize_t r;
    while (f->got < f->limit && (r = weft_recv(f->fd, b, sizeof b, 0)) > 0) {
        for (ssize_t k = 0; k < r; k++) {
            if (b[k] != pat(f->got + (size_t)k) && f->bad < 0)
                f->bad = (long long)(f->got + (size_t)k);
        }
        f->got += (size_t)r;
    }
    return NULL;
}

/* The ring's last completions carry bytes the kernel took off the socket:
 * its destroy puts them in the queue, where a plain thread reads them. */
Test(own, bytes_a_destroyed_runtime_s_ring_had_received_are_read_after_it)
{
    if (!backend_available(WEFT_IO_URING))
        cr_skip("no io_uring here");
    for (int it = 0; it < (int)scaled(12); it++) {
        int sv[2];
        cr_assert_eq(owned_pair(sv), 0);
        struct flow f = { .fd = sv[0], .peer = sv[1], .bad = -1, .limit = 20000 };
        weft_rt *rt;
        weft_config cfg = { .workers = 1, .io_backend = WEFT_IO_URING };
        cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, flow_send, &f), 0);
        weft_task *t;
        cr_assert_eq(weft_spawn_on(rt, &t, flow_read, &f), 0);   /* arms, and leaves it armed */
        cr_assert_eq(weft_join(t, NULL), 0);
        usleep((useconds_t)(it % 4) * 1500);
        cr_assert_eq(weft_rt_destroy(rt), 0);   /* while bytes keep coming */
        usleep(2000);
        atomic_store(&f.stop, 1);
        pthread_join(th, NULL);
        f.limit = SIZE_MAX;
        flow_read(&f);   /* a plain thread reads the rest */
        cr_assert_eq(f.bad, -1, "round %d: byte %lld is not the stream's", it, f.bad);
        cr_assert_eq(f.got, f.sent, "round %d: %zu bytes read of %zu sent", it, f.got, f.sent);
        close_pair(sv);
    }
}

static void *read_one_byte(void *arg)
{
    char c;
    return (void *)(intptr_t)weft_recv(*(int *)arg, &c, 1, 0);
}

static void *send_bytes(void *arg)
{
    struct flow *f = arg;
    uint8_t *b = malloc(f->limit);
    if (!b)
        return NULL;
    fill_pat(b, 0, f->limit);
    f->sent = (size_t)send_all(f->peer, b, f->limit);
    free(b);
    return NULL;
}

/* A plain thread's MSG_WAITALL, where the queue holds the first bytes and
 * the receive stopped at the bound (or went with its runtime): the socket
 * gives the rest, and the call returns the whole buffer. */
Test(own, MSG_WAITALL_from_a_plain_thread_gets_the_queue_then_the_rest_from_the_socket)
{
    if (!backend_available(WEFT_IO_URING))
        cr_skip("no io_uring here");
    for (int destroy = 0; destroy < 2; destroy++) {
        int sv[2];
        cr_assert_eq(owned_pair(sv), 0);
        struct flow f = { .fd = sv[0], .peer = sv[1], .limit = 8u << 20 };
        weft_rt *rt;
        weft_config cfg = { .workers = 1, .io_backend = WEFT_IO_URING };
        cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, send_bytes, &f), 0);
        weft_task *t;
        void *one;
        cr_assert_eq(weft_spawn_on(rt, &t, read_one_byte, &sv[0]), 0);   /* arms */
        cr_assert_eq(weft_join(t, &one), 0);
        cr_assert_eq((intptr_t)one, 1);
        usleep(SHORT_NS / 1000 * 4);   /* the queue fills to its bound: the receive stops */
        if (destroy)
            cr_assert_eq(weft_rt_destroy(rt), 0);
        size_t want = 3u << 20;
        uint8_t *b = malloc(want);
        cr_assert_not_null(b);
        ssize_t r = weft_recv(sv[0], b, want, MSG_WAITALL);
        cr_assert_eq(r, (ssize_t)want, "%s: MSG_WAITALL gave %zd of %zu", destroy ? "destroyed" : "alive", r,
                     want);
        size_t bad = want;
        for (size_t i = 0; i < want && bad == want; i++)
            if (b[i] != pat(i + 1))
                bad = i;
        cr_assert_eq(bad, want, "byte %zu is not the stream's", bad);
        free(b);
        close_pair(sv);   /* the sender ends with a reset or a full write */
        pthread_join(th, NULL);
        if (!destroy)
            cr_assert_eq(weft_rt_destroy(rt), 0);
    }
}

/* ---- the end and errors ---------------------------------------------------------- */

/* The peer's shutdown or close: the bytes queued, then 0, and 0 again; a
 * reader waiting at that moment gets 0 too. how: 0 shutdown, 1 close. */
static const char *end_case(int fd, int peer, int how, bool waiting)
{
    CHECK(arm(fd, peer));
    char b[16];
    if (waiting) {
        struct later l = { .fd = peer, .s = { "tail", "SHUT" } };
        weft_task *t;
        FAIL_IF(weft_spawn(&t, send_later, &l) != 0);
        EXPECT_EQ(read_n(fd, b, 4), 4);
        EXPECT_EQ(weft_read(fd, b, sizeof b), 0);   /* waits for the end */
        void *r;
        FAIL_IF(weft_join(t, &r) != 0 || r);
    } else {
        EXPECT_EQ(send_str(peer, "tail"), 4);
        FAIL_IF((how ? close(peer) : shutdown(peer, SHUT_WR)) != 0);
        weft_sleep(SETTLE_NS);
        EXPECT_EQ(weft_poll(fd, POLLIN) & POLLIN, POLLIN);
        EXPECT_EQ(weft_recv(fd, b, 2, 0), 2);
        FAIL_IF(memcmp(b, "ta", 2) != 0);
        EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_WAITALL), 2);
        FAIL_IF(memcmp(b, "il", 2) != 0);
        EXPECT_EQ(weft_read(fd, b, sizeof b), 0);
    }
    EXPECT_EQ(weft_read(fd, b, sizeof b), 0);
    EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_DONTWAIT), 0);
    EXPECT_EQ(weft_recv(fd, b, sizeof b, MSG_PEEK), 0);
    EXPECT_EQ(weft_poll(fd, POLLIN) & POLLIN, POLLIN);
    return NULL;
}

static void *ends(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    for (int own = 0; own < 2; own++)
        for (int how = 0; how < 3; how++) {
            int sv[2];
            FAIL_IF((own ? owned_pair(sv) : plain_pair(sv)) != 0);
            const char *m = end_case(sv[0], sv[1], how == 1, how == 2);
            weft_close(sv[0]);
            if (how != 1)
                weft_close(sv[1]);
            if (m)
                return why("%s socket, %s: %s", own ? "an owned" : "a plain",
                           how == 0 ? "shutdown" : how == 1 ? "close" : "a reader waiting", m);
        }
    /* A connection whose peer sent and closed before it was handed over. */
    int sv[2];
    FAIL_IF(plain_pair(sv) != 0);
    EXPECT_EQ(send_str(sv[1], "gone"), 4);
    close(sv[1]);
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(weft_own(sv[0]), 0);
    char b[8];
    EXPECT_EQ(read_n(sv[0], b, sizeof b), 4);
    FAIL_IF(memcmp(b, "gone", 4) != 0);
    EXPECT_EQ(weft_read(sv[0], b, sizeof b), 0);
    weft_close(sv[0]);
    weft_deadline(prev);
    return NULL;
}

Test(own, the_peer_s_shutdown_or_close_gives_the_bytes_then_0_and_0_again)
{
    run_all(ends, NULL);
}

/* The peer resets (SO_LINGER {1, 0}, then close): the bytes that came
 * before, then -ECONNRESET once, then 0. The same steps on a plain socket
 * must give the same results. waiting: a reader waits when it comes. */
static const char *reset_case(int fd, int peer, bool waiting)
{
    CHECK(arm(fd, peer));
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    FAIL_IF(setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0);
    if (!waiting) {
        EXPECT_EQ(send_str(peer, "12345"), 5);
        weft_sleep(SETTLE_NS);
    }
    return NULL;
}

struct resetter {
    int fd;
};

static void *reset_later(void *arg)
{
    struct resetter *r = arg;
    weft_sleep(SETTLE_NS);
    close(r->fd);
    return NULL;
}

/* The results of reads of 2 bytes until two ends in a row, as a string:
 * "2 2 1 R 0 0" is two, two, one byte, -ECONNRESET, 0, 0. */
static const char *read_to_end(int fd, char *out, size_t cap)
{
    size_t len = 0;
    int zeros = 0;
    out[0] = 0;
    for (int i = 0; i < 16 && zeros < 2; i++) {
        char b[2];
        ssize_t n = weft_recv(fd, b, 2, 0);
        zeros = n == 0 ? zeros + 1 : 0;
        if (n == -ECONNRESET)
            len += (size_t)snprintf(out + len, cap - len, "%sR", len ? " " : "");
        else
            len += (size_t)snprintf(out + len, cap - len, "%s%zd", len ? " " : "", n);
        if (len >= cap)
            break;
    }
    return out;
}

static void *resets(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    char seq[2][2][64];   /* [waiting][plain, owned] */
    for (int waiting = 0; waiting < 2; waiting++)
        for (int own = 0; own < 2; own++) {
            int sv[2];
            FAIL_IF((own ? owned_pair(sv) : plain_pair(sv)) != 0);
            CHECK(reset_case(sv[0], sv[1], waiting));
            if (waiting) {
                struct resetter r = { .fd = sv[1] };
                weft_task *t;
                FAIL_IF(weft_spawn(&t, reset_later, &r) != 0);
                read_to_end(sv[0], seq[waiting][own], sizeof seq[0][0]);
                weft_join(t, NULL);
            } else {
                close(sv[1]);
                weft_sleep(SETTLE_NS);
                read_to_end(sv[0], seq[waiting][own], sizeof seq[0][0]);
            }
            weft_close(sv[0]);
        }
    /* What the kernel does, and what weft must do alike. */
    if (strcmp(seq[0][0], "2 2 1 R 0 0") != 0 || strcmp(seq[1][0], "R 0 0") != 0)
        return why("a plain socket's reset gave \"%s\" and, waiting, \"%s\": this kernel differs", seq[0][0],
                   seq[1][0]);
    if (strcmp(seq[0][1], seq[0][0]) != 0)
        return why("an owned socket's reset gave \"%s\", a plain one's \"%s\"", seq[0][1], seq[0][0]);
    if (strcmp(seq[1][1], seq[1][0]) != 0)
        return why("an owned socket's reset with a reader waiting gave \"%s\", a plain one's \"%s\"", seq[1][1],
                   seq[1][0]);
    weft_deadline(prev);
    return NULL;
}

Test(own, a_reset_gives_the_bytes_before_it_then_ECONNRESET_once_then_0)
{
    run_all(resets, NULL);
}

/* ---- waiting: deadlines, cancellation, weft_close, several readers ----------------- */

/* A read of each kind, and a poll, that times out on an owned socket; the
 * bytes sent after it are read whole. */
static void *timeouts(void *arg)
{
    (void)arg;
    int sv[2];
    FAIL_IF(owned_pair(sv) != 0);
    for (unsigned k = 0; k < 7; k++) {
        if (k == 2)
            CHECK(arm(sv[0], sv[1]));   /* before a receive is armed, and after */
        uint8_t b[16];
        uint64_t prev = weft_deadline(weft_now() + SHORT_NS);
        ssize_t r = k < 5 ? read_kind(sv[0], k, b, sizeof b)
                  : k == 5 ? weft_recv(sv[0], b, sizeof b, MSG_WAITALL)
                           : weft_poll(sv[0], POLLIN);
        weft_deadline(prev);
        if (r != -ETIMEDOUT)
            return why("%s with nothing to read returned %zd, not -ETIMEDOUT",
                       k < 5 ? kind_name[k] : k == 5 ? "MSG_WAITALL" : "weft_poll", r);
        /* Several in a row, as a server's idle connection sees. */
        for (int i = 0; i < 3; i++) {
            prev = weft_deadline(weft_now() + SHORT_NS / 10);
            r = weft_read(sv[0], b, sizeof b);
            weft_deadline(prev);
            EXPECT_EQ(r, -ETIMEDOUT);
        }
        EXPECT_EQ(send_str(sv[1], "late!"), 5);
        memset(b, 0, sizeof b);
        r = read_kind(sv[0], k, b, 5);
        if (r != 5 || memcmp(b, "late!", 5) != 0)
            return why("after a timeout, %s returned %zd \"%.*s\"", kind_name[k % 5], r, r > 0 ? (int)r : 0, b);
    }
    /* A deadline already passed, with bytes there: they are returned (or
     * the call times out and they stay). */
    EXPECT_EQ(send_str(sv[1], "there"), 5);
    weft_sleep(SETTLE_NS);
    uint64_t prev = weft_deadline(weft_now() - 1);
    char b[8] = "";
    ssize_t r = weft_read(sv[0], b, sizeof b);
    weft_deadline(prev);
    if (r == -ETIMEDOUT)
        r = weft_read(sv[0], b, sizeof b);
    if (r != 5 || memcmp(b, "there", 5) != 0)
        return why("with a past deadline, bytes there gave %zd", r);
    close_pair(sv);
    return NULL;
}

Test(own, a_read_that_times_out_loses_nothing)
{
    run_all(timeouts, NULL);
}

/* A MSG_WAITALL that has taken some bytes when weft_close() fails it
 * returns them, as its backend's recv does: they left the queue. */
struct part {
    int     fd;
    char    b[16];
    ssize_t r;
};

static void *waitall_part(void *arg)
{
    struct part *p = arg;
    p->r = weft_recv(p->fd, p->b, 10, MSG_WAITALL);
    return NULL;
}

static void *closed_midway(void *arg)
{
    (void)arg;
    int sv[2];
    FAIL_IF(owned_pair(sv) != 0);
    CHECK(arm(sv[0], sv[1]));
    struct part p = { .fd = sv[0], .r = -1 };
    weft_task *t;
    FAIL_IF(weft_spawn(&t, waitall_part, &p) != 0);
    EXPECT_EQ(send_str(sv[1], "abc"), 3);
    weft_sleep(SETTLE_NS);   /* the reader has the three and waits for seven more */
    EXPECT_EQ(weft_close(sv[0]), 0);
    FAIL_IF(weft_join(t, NULL) != 0);
    EXPECT_EQ(p.r, 3);
    FAIL_IF(memcmp(p.b, "abc", 3) != 0);
    close(sv[1]);
    return NULL;
}

Test(own, a_MSG_WAITALL_cut_short_by_weft_close_returns_the_bytes_it_took)
{
    run_all(closed_midway, NULL);
}

/* Deadlines that end just as bytes arrive: every byte is read once, in
 * order, whichever comes first each time. The writer is a plain thread. */
struct trickle {
    int      fd;
    unsigned n;
    unsigned pause_us;
};

static void *trickle_writer(void *arg)
{
    struct trickle *t = arg;
    for (unsigned i = 0; i < t->n; i++) {
        uint8_t c = pat(i);
        if (send(t->fd, &c, 1, MSG_NOSIGNAL) != 1)
            return (void *)"the trickling send failed";
        if (t->pause_us)
            usleep(t->pause_us);
    }
    return NULL;
}

static void *racing_deadlines(void *arg)
{
    (void)arg;
    int sv[2];
    FAIL_IF(owned_pair(sv) != 0);
    CHECK(arm(sv[0], sv[1]));
    struct trickle tr = { .fd = sv[1], .n = (unsigned)scaled(3000), .pause_us = 20 };
    if (tr.n < 100)
        tr.n = 100;
    pthread_t th;
    FAIL_IF(pthread_create(&th, NULL, trickle_writer, &tr) != 0);
    uint64_t got = 0, timeouts = 0, end = weft_now() + GUARD_NS;
    uint8_t b[64];
    for (unsigned k = 0; got < tr.n && weft_now() < end; k++) {
        uint64_t prev = weft_deadline(weft_now() + (k % 7) * 15000u);
        ssize_t n = (k & 1) ? weft_recv(sv[0], b, 1 + k % 64, 0) : read_kind(sv[0], k / 2, b, 1 + k % 64);
        weft_deadline(prev);
        if (n == -ETIMEDOUT) {
            timeouts++;
            continue;
        }
        if (n <= 0) {
            pthread_join(th, NULL);
            return why("a read at byte %llu returned %zd", (unsigned long long)got, n);
        }
        long long bad = bad_pat(b, got, (size_t)n);
        if (bad >= 0) {
            pthread_join(th, NULL);
            return why("byte %llu is not the one sent (a lost or repeated byte?)", (unsigned long long)got + (unsigned long long)bad);
        }
        got += (uint64_t)n;
    }
    void *r;
    pthread_join(th, &r);
    if (r)
        return r;
    EXPECT_EQ(got, tr.n);
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(weft_recv(sv[0], b, sizeof b, MSG_DONTWAIT), -EAGAIN);   /* and no byte twice */
    close_pair(sv);
    return NULL;
}

Test(own, deadlines_that_race_arriving_bytes_lose_and_repeat_none)
{
    run_all(racing_deadlines, NULL);
}

/* Cancelled readers: one waiting on an owned socket gets -ECANCELED and the
 * bytes that come after it go to the next reader; then readers cancelled
 * at random moments while bytes trickle in lose none. */
struct cancellee {
    int           fd;
    uint64_t      off;      /* the next byte expected, shared by the readers in turn */
    const char   *err;
    _Atomic bool  started;
};

static void *read_until_cancelled(void *arg)
{
    struct cancellee *c = arg;
    uint8_t b[64];
    atomic_store(&c->started, true);
    for (unsigned k = 0;; k++) {
        ssize_t n = read_kind(c->fd, k, b, 1 + k % 64);
        if (n == -ECANCELED)
            return (void *)(intptr_t)n;
        if (n <= 0) {
            c->err = why("a read at byte %llu returned %zd", (unsigned long long)c->off, n);
            return NULL;
        }
        long long bad = bad_pat(b, c->off, (size_t)n);
        if (bad >= 0) {
            c->err = why("byte %llu is not the one sent", (unsigned long long)(c->off + (uint64_t)bad));
            return NULL;
        }
        c->off += (uint64_t)n;
    }
}

static void *cancelling(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    int sv[2];
    FAIL_IF(owned_pair(sv) != 0);
    CHECK(arm(sv[0], sv[1]));
    /* One waiting reader, cancelled. */
    struct cancellee c = { .fd = sv[0] };
    weft_task *t;
    FAIL_IF(weft_spawn(&t, read_until_cancelled, &c) != 0);
    weft_sleep(SETTLE_NS);
    FAIL_IF(weft_cancel(t) != 0);
    void *r;
    FAIL_IF(weft_join(t, &r) != 0);
    if (c.err)
        return (void *)c.err;
    EXPECT_EQ((intptr_t)r, -ECANCELED);
    uint8_t b[8];
    fill_pat(b, 0, 8);
    EXPECT_EQ(send_all(sv[1], b, 8), 8);
    uint8_t in[8];
    EXPECT_EQ(read_n(sv[0], in, 8), 8);
    FAIL_IF(memcmp(in, b, 8) != 0);
    close_pair(sv);

    /* Readers cancelled at any moment while bytes trickle in. */
    FAIL_IF(owned_pair(sv) != 0);
    struct trickle tr = { .fd = sv[1], .n = (unsigned)scaled(2000), .pause_us = 30 };
    if (tr.n < 100)
        tr.n = 100;
    pthread_t th;
    FAIL_IF(pthread_create(&th, NULL, trickle_writer, &tr) != 0);
    c = (struct cancellee){ .fd = sv[0] };
    uint64_t end = weft_now() + GUARD_NS;
    unsigned rounds = 0;
    while (c.off < tr.n && !c.err && weft_now() < end) {
        atomic_store(&c.started, false);
        FAIL_IF(weft_spawn(&t, read_until_cancelled, &c) != 0);
        while (!atomic_load(&c.started))
            weft_yield();
        weft_sleep(((rounds++ % 5) + 1) * 50000u);
        weft_cancel(t);
        FAIL_IF(weft_join(t, &r) != 0);
    }
    pthread_join(th, &r);
    if (r)
        return r;
    if (c.err)
        return why("after %u cancelled readers: %s", rounds, c.err);
    EXPECT_EQ(c.off, tr.n);
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(weft_recv(sv[0], b, sizeof b, MSG_DONTWAIT), -EAGAIN);
    close_pair(sv);
    weft_deadline(prev);
    return NULL;
}

Test(own, a_cancelled_read_returns_ECANCELED_and_loses_nothing)
{
    run_all(cancelling, NULL);
}

/* weft_close fails every reader waiting on an owned socket with -EBADF,
 * whatever call each waits in; from a coroutine and from a plain thread.
 * The socket is released: its peer sees the end. */
struct waiter {
    int               fd;
    unsigned          kind;   /* 0..4 read_kind, 5 MSG_WAITALL, 6 MSG_PEEK, 7 weft_poll */
    _Atomic bool      started;
};

static void *wait_in_read(void *arg)
{
    struct waiter *w = arg;
    uint8_t b[32];
    atomic_store(&w->started, true);
    ssize_t r = w->kind < 5 ? read_kind(w->fd, w->kind, b, sizeof b)
              : w->kind == 5 ? weft_recv(w->fd, b, sizeof b, MSG_WAITALL)
              : w->kind == 6 ? weft_recv(w->fd, b, sizeof b, MSG_PEEK)
                             : weft_poll(w->fd, POLLIN);
    return (void *)(intptr_t)r;
}

static const char *peer_sees_end(int peer)
{
    uint64_t prev = weft_deadline(weft_now() + GUARD_NS / 4);
    int ready = weft_poll(peer, POLLIN);
    weft_deadline(prev);
    if (ready < 0)
        return why("the peer of a closed owned socket never saw its end: weft_poll returned %d", ready);
    char b[4];
    ssize_t r = recv(peer, b, sizeof b, MSG_DONTWAIT);
    if (r != 0 && !(r < 0 && errno == ECONNRESET))
        return why("the peer of a closed owned socket read %zd, not its end", r);
    return NULL;
}

static void *closing(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    for (int armed = 0; armed < 2; armed++) {
        int sv[2];
        FAIL_IF(owned_pair(sv) != 0);
        if (armed)
            CHECK(arm(sv[0], sv[1]));
        struct waiter w[8];
        weft_task *t[8];
        for (unsigned i = 0; i < 8; i++) {
            w[i] = (struct waiter){ .fd = sv[0], .kind = i };
            FAIL_IF(weft_spawn(&t[i], wait_in_read, &w[i]) != 0);
        }
        weft_sleep(SETTLE_NS);
        EXPECT_EQ(weft_close(sv[0]), 0);
        for (unsigned i = 0; i < 8; i++) {
            void *r;
            FAIL_IF(weft_join(t[i], &r) != 0);
            if ((intptr_t)r != -EBADF)
                return why("%sa reader waiting in kind %u got %ld, not -EBADF", armed ? "armed: " : "", i,
                           (long)(intptr_t)r);
        }
        CHECK(peer_sees_end(sv[1]));
        close(sv[1]);
    }
    weft_deadline(prev);
    return NULL;
}

Test(own, weft_close_fails_every_waiting_reader_with_EBADF_and_releases_the_socket)
{
    run_all(closing, NULL);
}

static weft_rt *rt_make(int backend, unsigned workers)
{
    weft_config cfg = { .workers = workers, .io_backend = backend };
    weft_rt *rt = NULL;
    cr_assert_eq(weft_rt_create(&rt, &cfg), 0, "%s, %u workers", backend_name[backend], workers);
    return rt;
}

static void *arm_in_coroutine(void *arg)
{
    int *sv = arg;
    return (void *)arm(sv[0], sv[1]);
}

Test(own, weft_close_from_a_plain_thread_fails_every_waiting_reader_with_EBADF)
{
    FOR_EACH_CONFIG(b, w, own_workers) {
        weft_rt *rt = rt_make(b, w);
        int sv[2];
        cr_assert_eq(owned_pair(sv), 0);
        weft_task *a;
        void *r;
        cr_assert_eq(weft_spawn_on(rt, &a, arm_in_coroutine, sv), 0);
        cr_assert_eq(weft_join(a, &r), 0);
        cr_assert_null(r, "%s", r ? (char *)r : "");
        struct waiter wt[8];
        weft_task *t[8];
        for (unsigned i = 0; i < 8; i++) {
            wt[i] = (struct waiter){ .fd = sv[0], .kind = i };
            cr_assert_eq(weft_spawn_on(rt, &t[i], wait_in_read, &wt[i]), 0);
        }
        for (unsigned i = 0; i < 8; i++)
            while (!atomic_load(&wt[i].started))
                usleep(1000);
        usleep(SETTLE_NS / 1000);
        cr_assert_eq(weft_close(sv[0]), 0);
        for (unsigned i = 0; i < 8; i++) {
            cr_assert_eq(weft_join(t[i], &r), 0);
            cr_assert_eq((intptr_t)r, -EBADF, "%s, %u workers: the reader waiting in kind %u", backend_name[b], w, i);
        }
        const char *m = peer_sees_end(sv[1]);
        cr_assert_null(m, "%s", m ? m : "");
        close(sv[1]);
        cr_assert_eq(weft_rt_destroy(rt), 0);
    }
}

/* Several coroutines read one owned socket at once: together they get every
 * byte exactly once (counted by value), and each of them the end. */
#define CONCURRENT_READERS 4

struct tally {
    int            fd;
    uint64_t       counts[256];
    const char    *err;
};

static void *tally_reader(void *arg)
{
    struct tally *t = arg;
    uint8_t b[700];
    for (unsigned k = 0;; k++) {
        ssize_t n = read_kind(t->fd, k, b, 1 + (k * 37) % sizeof b);
        if (n == 0)
            break;
        if (n < 0) {
            t->err = why("a concurrent %s returned %zd", kind_name[k % 5], n);
            return NULL;
        }
        for (ssize_t i = 0; i < n; i++)
            t->counts[b[i]]++;
        if (k % 16 == 15)
            weft_yield();
    }
    if (weft_read(t->fd, b, 1) != 0)   /* the end again */
        t->err = "a second read at the end did not return 0";
    return NULL;
}

static void *concurrent(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    uint64_t total = scaled(2u << 20);
    if (total < 50000)
        total = 50000;
    int sv[2];
    FAIL_IF(owned_pair(sv) != 0);
    struct tally *t = calloc(CONCURRENT_READERS, sizeof *t);
    FAIL_IF(!t);
    weft_task *rd[CONCURRENT_READERS];
    for (int i = 0; i < CONCURRENT_READERS; i++) {
        t[i].fd = sv[0];
        FAIL_IF(weft_spawn(&rd[i], tally_reader, &t[i]) != 0);
    }
    static const size_t wsizes[] = { 1, 5000, 64, 100000, 4096 };
    struct writer w = { .fd = sv[1], .total = total, .sizes = wsizes, .nsizes = 5, .shut = true };
    void *r = pattern_writer(&w);
    const char *err = r;
    for (int i = 0; i < CONCURRENT_READERS; i++) {
        weft_join(rd[i], NULL);
        err = err ? err : t[i].err;
    }
    uint64_t want[256] = { 0 };
    for (uint64_t i = 0; i < total; i++)
        want[pat(i)]++;
    uint64_t sum = 0;
    for (int v = 0; v < 256 && !err; v++) {
        uint64_t have = 0;
        for (int i = 0; i < CONCURRENT_READERS; i++)
            have += t[i].counts[v];
        sum += have;
        if (have != want[v])
            err = why("byte value %d was read %llu times, sent %llu times", v, (unsigned long long)have,
                      (unsigned long long)want[v]);
    }
    free(t);
    if (err)
        return (void *)err;
    EXPECT_EQ(sum, total);
    close_pair(sv);
    weft_deadline(prev);
    return NULL;
}

Test(own, readers_sharing_an_owned_socket_get_every_byte_exactly_once)
{
    run_all(concurrent, NULL);
}

/* ---- weft_poll ---------------------------------------------------------------------- */

struct poller {
    int fd;
};

static void *poll_in(void *arg)
{
    struct poller *p = arg;
    return (void *)(intptr_t)weft_poll(p->fd, POLLIN);
}

static void *polling(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    for (int armed = 0; armed < 2; armed++) {
        int sv[2];
        FAIL_IF(owned_pair(sv) != 0);
        if (armed)
            CHECK(arm(sv[0], sv[1]));
        /* Room to write, nothing to read: POLLOUT alone, at once. */
        uint64_t p2 = weft_deadline(weft_now() + GUARD_NS / 2);
        int r = weft_poll(sv[0], POLLIN | POLLOUT);
        weft_deadline(p2);
        EXPECT_EQ(r & (POLLIN | POLLOUT), POLLOUT);
        /* Nothing to read: the deadline. */
        p2 = weft_deadline(weft_now() + SHORT_NS);
        EXPECT_EQ(weft_poll(sv[0], POLLIN), -ETIMEDOUT);
        weft_deadline(p2);
        /* A waiting poll sees bytes arrive; they are then there without waiting. */
        struct poller pl = { .fd = sv[0] };
        weft_task *t;
        FAIL_IF(weft_spawn(&t, poll_in, &pl) != 0);
        weft_sleep(SETTLE_NS);
        EXPECT_EQ(send_str(sv[1], "abcdef"), 6);
        void *res;
        FAIL_IF(weft_join(t, &res) != 0);
        EXPECT_EQ((intptr_t)res & POLLIN, POLLIN);
        char b[8] = "";
        EXPECT_EQ(weft_recv(sv[0], b, 2, MSG_DONTWAIT), 2);
        FAIL_IF(memcmp(b, "ab", 2) != 0);
        /* What is left may sit in the queue only, not in the socket: poll
         * must see it there, from a coroutine, at once. */
        weft_sleep(SETTLE_NS);
        p2 = weft_deadline(weft_now() + SHORT_NS);
        r = weft_poll(sv[0], POLLIN);
        weft_deadline(p2);
        EXPECT_EQ(r & POLLIN, POLLIN);
        p2 = weft_deadline(weft_now() + SHORT_NS);
        r = weft_poll(sv[0], POLLIN | POLLOUT);
        weft_deadline(p2);
        EXPECT_EQ(r & (POLLIN | POLLOUT), POLLIN | POLLOUT);
        EXPECT_EQ(weft_recv(sv[0], b, sizeof b, MSG_DONTWAIT), 4);
        FAIL_IF(memcmp(b, "cdef", 4) != 0);
        /* Drained: no POLLIN any more. */
        p2 = weft_deadline(weft_now() + SHORT_NS);
        r = weft_poll(sv[0], POLLIN | POLLOUT);
        weft_deadline(p2);
        EXPECT_EQ(r & (POLLIN | POLLOUT), POLLOUT);
        /* And a poll after POLLIN|POLLOUT still sees the next bytes. */
        EXPECT_EQ(send_str(sv[1], "gh"), 2);
        EXPECT_EQ(weft_poll(sv[0], POLLIN) & POLLIN, POLLIN);
        EXPECT_EQ(weft_recv(sv[0], b, sizeof b, MSG_DONTWAIT | MSG_WAITALL), 2);
        close_pair(sv);
    }
    weft_deadline(prev);
    return NULL;
}

Test(own, weft_poll_sees_bytes_arrive_and_bytes_queued_and_times_out_without_them)
{
    run_all(polling, NULL);
}

/* ---- plain threads ---------------------------------------------------------------- */

/* A coroutine reads the start of the stream (arming a receive on io_uring)
 * and leaves the rest queued; then a plain thread reads on, in order, while
 * the runtime lives, within its deadline too. */
struct plain_read {
    int      sv[2];
    uint64_t off;
};

static void *coroutine_reads_start(void *arg)
{
    struct plain_read *p = arg;
    uint8_t b[100];
    fill_pat(b, 0, 100);
    EXPECT_EQ(send_all(p->sv[1], b, 100), 100);
    EXPECT_EQ(weft_read(p->sv[0], b, 10), 10);   /* the other 90 may go to the queue */
    EXPECT_EQ(bad_pat(b, 0, 10), -1);
    weft_sleep(SETTLE_NS);
    p->off = 10;
    return NULL;
}

static void *plain_thread_reads(void *arg)
{
    struct plain_read *p = arg;
    uint8_t *b = malloc(8192), *out = malloc(5000);
    FAIL_IF(!b || !out);
    uint64_t sent = 100;
    weft_deadline(weft_now() + GUARD_NS);
    for (unsigned k = 0; k < 300 || p->off < sent; k++) {
        if (k < 300) {
            size_t n = 1 + (k * 997) % 5000;
            fill_pat(out, sent, n);
            if (send(p->sv[1], out, n, MSG_NOSIGNAL) != (ssize_t)n) {
                free(b);
                free(out);
                return (void *)"a plain send failed";
            }
            sent += n;
        }
        /* Whatever is there now (the queue first, then the socket). */
        size_t len = 1 + (k * 131) % 8192;
        ssize_t n = read_kind(p->sv[0], k, b, len);
        long long bad = n > 0 ? bad_pat(b, p->off, (size_t)n) : -1;
        if (n <= 0 || bad >= 0) {
            free(b);
            free(out);
            return why("the plain thread's %s of %zu at byte %llu returned %zd (first wrong %lld)",
                       kind_name[k % 5], len, (unsigned long long)p->off, n, bad);
        }
        p->off += (uint64_t)n;
    }
    free(b);
    free(out);
    EXPECT_EQ(p->off, sent);
    /* Nothing there: the deadline. */
    uint8_t c;
    weft_deadline(weft_now() + SHORT_NS);
    ssize_t r = weft_read(p->sv[0], &c, 1);
    if (r != -ETIMEDOUT)
        return why("a plain thread's read with nothing there returned %zd, not -ETIMEDOUT", r);
    struct iovec iov = { &c, 1 };
    weft_deadline(weft_now() + SHORT_NS);
    EXPECT_EQ(weft_readv(p->sv[0], &iov, 1), -ETIMEDOUT);
    weft_deadline(weft_now() + SHORT_NS);
    EXPECT_EQ(weft_recv(p->sv[0], &c, 1, MSG_WAITALL), -ETIMEDOUT);
    weft_deadline(weft_now() + SHORT_NS);
    EXPECT_EQ(weft_poll(p->sv[0], POLLIN), -ETIMEDOUT);
    weft_deadline(weft_now() + GUARD_NS);
    uint8_t last = pat(p->off);
    EXPECT_EQ(send(p->sv[1], &last, 1, MSG_NOSIGNAL), 1);
    EXPECT_EQ(weft_poll(p->sv[0], POLLIN) & POLLIN, POLLIN);
    EXPECT_EQ(weft_read(p->sv[0], &c, 1), 1);
    EXPECT_EQ(c, last);
    weft_deadline(0);
    return NULL;
}

Test(own, a_plain_thread_reads_an_owned_socket_in_order_and_within_its_deadline)
{
    FOR_EACH_CONFIG(b, w, own_workers) {
        weft_rt *rt = rt_make(b, w);
        struct plain_read p = { .off = 0 };
        cr_assert_eq(owned_pair(p.sv), 0);
        weft_task *t;
        void *r;
        cr_assert_eq(weft_spawn_on(rt, &t, coroutine_reads_start, &p), 0);
        cr_assert_eq(weft_join(t, &r), 0);
        cr_assert_null(r, "%s, %u workers: %s", backend_name[b], w, r ? (char *)r : "");
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, plain_thread_reads, &p), 0);
        cr_assert_eq(pthread_join(th, &r), 0);
        cr_assert_null(r, "%s, %u workers: %s", backend_name[b], w, r ? (char *)r : "");
        cr_assert_eq(weft_rt_destroy(rt), 0);
        close_pair(p.sv);
    }
}

/* ---- runtimes and processes ------------------------------------------------------- */

/* A runtime whose coroutine read an owned socket goes (destroyed), or stays
 * while another runtime's coroutine reads on: the stream is intact either
 * way, across backends. */
struct relay {
    int      sv[2];
    uint64_t off;
    uint64_t sent;
};

static void *relay_send_and_read(void *arg)
{
    struct relay *p = arg;
    uint8_t b[3000];
    fill_pat(b, p->sent, sizeof b);
    EXPECT_EQ(send_all(p->sv[1], b, sizeof b), (ssize_t)sizeof b);
    p->sent += sizeof b;
    /* Read a part, leave the rest (queued on io_uring). */
    size_t want = 1000;
    ssize_t n = read_all(p->sv[0], b, want, MSG_WAITALL);
    if (n != (ssize_t)want || bad_pat(b, p->off, want) >= 0)
        return why("a relay read at byte %llu returned %zd", (unsigned long long)p->off, n);
    p->off += want;
    weft_sleep(SETTLE_NS);
    return NULL;
}

static void *relay_read_rest(void *arg)
{
    struct relay *p = arg;
    uint8_t b[4096];
    while (p->off < p->sent) {
        size_t len = sizeof b < p->sent - p->off ? sizeof b : (size_t)(p->sent - p->off);
        ssize_t n = weft_read(p->sv[0], b, len);
        long long bad = n > 0 ? bad_pat(b, p->off, (size_t)n) : -1;
        if (n <= 0 || bad >= 0)
            return why("the next runtime's read at byte %llu returned %zd (first wrong %lld)",
                       (unsigned long long)p->off, n, bad);
        p->off += (uint64_t)n;
    }
    EXPECT_EQ(weft_recv(p->sv[0], b, sizeof b, MSG_DONTWAIT), -EAGAIN);
    return NULL;
}

static void run_on(weft_rt *rt, weft_fn fn, void *arg, const char *what)
{
    weft_task *t;
    void *r;
    cr_assert_eq(weft_spawn_on(rt, &t, fn, arg), 0);
    cr_assert_eq(weft_join(t, &r), 0);
    cr_assert_null(r, "%s: %s", what, r ? (char *)r : "");
}

Test(own, the_stream_outlives_the_runtime_that_read_it_and_goes_on_in_the_next)
{
    FOR_EACH_BACKEND(b1) {
        FOR_EACH_BACKEND(b2) {
            for (size_t wi = 0; wi < 2; wi++) {
                unsigned w = few_workers[wi];
                char what[96];
                struct relay p = { .off = 0 };
                cr_assert_eq(owned_pair(p.sv), 0);
                /* The first runtime goes before the second reads. */
                weft_rt *rt1 = rt_make(b1, w);
                snprintf(what, sizeof what, "%s then %s, %u workers, destroyed", backend_name[b1], backend_name[b2], w);
                run_on(rt1, relay_send_and_read, &p, what);
                cr_assert_eq(weft_rt_destroy(rt1), 0);
                weft_rt *rt2 = rt_make(b2, w);
                run_on(rt2, relay_read_rest, &p, what);
                /* The second stays while a third reads, twice over. */
                snprintf(what, sizeof what, "%s then %s, %u workers, alive", backend_name[b2], backend_name[b1], w);
                run_on(rt2, relay_send_and_read, &p, what);
                weft_rt *rt3 = rt_make(b1, w);
                run_on(rt3, relay_read_rest, &p, what);
                run_on(rt3, relay_send_and_read, &p, what);
                run_on(rt2, relay_read_rest, &p, what);
                cr_assert_eq(weft_rt_destroy(rt3), 0);
                cr_assert_eq(weft_rt_destroy(rt2), 0);
                /* And the main thread, with no runtime left. */
                uint8_t tail[8];
                fill_pat(tail, p.sent, 8);
                cr_assert_eq(send(p.sv[1], tail, 8, MSG_NOSIGNAL), 8);
                uint8_t in[8];
                cr_assert_eq(read_n(p.sv[0], in, 8), 8, "%s", what);
                cr_assert_eq(memcmp(in, tail, 8), 0, "%s", what);
                close_pair(p.sv);
            }
        }
    }
}

/* fork(): the child does not inherit the hand-over; it reads the socket with
 * the usual calls and sees bytes sent after the fork; the parent's reading
 * goes on intact after the child has gone. */
static void child_reads(int fd, bool read)
{
    /* The hand-over is not inherited: the child may hand it over itself
     * (where it may allocate: see test_fork.c). */
    if (!WEFT_TEST_SANITIZED && weft_own(fd) != 0)
        _exit(10);
    if (!read)
        _exit(0);   /* the parent's receive may be armed: it would race the child */
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, 20000) != 1)
        _exit(11);
    char b[16] = "";
    ssize_t n = WEFT_TEST_SANITIZED ? recv(fd, b, 10, MSG_WAITALL) : weft_recv(fd, b, 10, MSG_WAITALL);
    if (n != 10)
        _exit(12);
    if (memcmp(b, "for-child!", 10) != 0)
        _exit(13);
    _exit(0);
}

struct forking {
    int sv[2];
    int backend;
};

static void *read_all_before_fork(void *arg)
{
    struct forking *f = arg;
    uint8_t b[100];
    fill_pat(b, 0, 100);
    EXPECT_EQ(send_all(f->sv[1], b, 100), 100);
    uint8_t in[100];
    EXPECT_EQ(read_all(f->sv[0], in, 100, MSG_WAITALL), 100);   /* nothing left queued */
    FAIL_IF(memcmp(in, b, 100) != 0);
    return NULL;
}

static void *read_after_fork(void *arg)
{
    struct forking *f = arg;
    char b[16] = "";
    EXPECT_EQ(read_all(f->sv[0], b, 11, MSG_WAITALL), 11);
    FAIL_IF(memcmp(b, "for-parent!", 11) != 0);
    weft_sleep(SETTLE_NS);
    EXPECT_EQ(weft_recv(f->sv[0], b, sizeof b, MSG_DONTWAIT), -EAGAIN);
    return NULL;
}

Test(own, a_child_of_fork_reads_with_the_usual_calls_and_the_parent_reads_on)
{
    FOR_EACH_CONFIG(b, w, few_workers) {
        for (int alive = 0; alive < 2; alive++) {
            char what[80];
            snprintf(what, sizeof what, "%s, %u workers, runtime %s at the fork", backend_name[b], w,
                     alive ? "alive" : "destroyed");
            struct forking f = { .backend = b };
            cr_assert_eq(owned_pair(f.sv), 0);
            weft_rt *rt = rt_make(b, w);
            run_on(rt, read_all_before_fork, &f, what);
            if (!alive) {
                cr_assert_eq(weft_rt_destroy(rt), 0);
                rt = NULL;
            }
            pid_t pid = fork();
            cr_assert_neq(pid, -1);
            if (pid == 0)
                child_reads(f.sv[0], !alive);
            int status;
            if (!alive)   /* nobody in the parent reads now: the child gets these */
                cr_assert_eq(send(f.sv[1], "for-child!", 10, MSG_NOSIGNAL), 10);
            cr_assert_eq(waitpid(pid, &status, 0), pid);
            cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "%s: the child failed at step %d", what, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            cr_assert_eq(send(f.sv[1], "for-parent!", 11, MSG_NOSIGNAL), 11);
            if (!rt)
                rt = rt_make(b, w);
            run_on(rt, read_after_fork, &f, what);
            cr_assert_eq(weft_rt_destroy(rt), 0);
            close_pair(f.sv);
        }
    }
}

/* A child that closes its copy of an owned socket with weft_close, and
 * hands over and reads with weft_read from its main thread: the parent's
 * runtime, its receive armed, reads on intact. */
static void *read_some_more(void *arg)
{
    struct relay *p = arg;
    return relay_send_and_read(p);
}

Test(own, a_child_closing_its_copy_of_an_owned_socket_leaves_the_parent_s_reading_intact)
{
    FOR_EACH_CONFIG(b, w, few_workers) {
        char what[64];
        snprintf(what, sizeof what, "%s, %u workers", backend_name[b], w);
        struct relay p = { .off = 0 };
        cr_assert_eq(owned_pair(p.sv), 0);
        weft_rt *rt = rt_make(b, w);
        run_on(rt, read_some_more, &p, what);   /* armed, bytes queued */
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            if (!WEFT_TEST_SANITIZED) {
                if (weft_own(p.sv[0]) != 0)
                    _exit(10);
                if (weft_close(p.sv[0]) != 0)
                    _exit(11);
            } else {
                close(p.sv[0]);
            }
            _exit(0);
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: the child failed at step %d", what,
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        run_on(rt, relay_read_rest, &p, what);
        run_on(rt, read_some_more, &p, what);
        run_on(rt, relay_read_rest, &p, what);
        cr_assert_eq(weft_rt_destroy(rt), 0);
        close_pair(p.sv);
    }
}

/* ---- numbers reused, many connections ---------------------------------------------- */

/* An owned socket is closed while its receive is armed and bytes pour in;
 * new sockets made at once (and a moment later) may get its number: they
 * never see its bytes, in either direction. */
struct pour {
    int           fd;
    _Atomic bool  stop;
};

static void *pour_old(void *arg)
{
    struct pour *p = arg;
    char b[1024];
    memset(b, 'O', sizeof b);
    while (!atomic_load(&p->stop)) {
        if (send(p->fd, b, sizeof b, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN)
            break;   /* the other side has gone */
        sched_yield();
    }
    return NULL;
}

static _Atomic unsigned reuses;   /* rounds where a new socket got the old number */

static void *reuse(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    unsigned rounds = (unsigned)scaled(40), reused = 0;
    if (rounds < 4)
        rounds = 4;
    for (unsigned i = 0; i < rounds; i++) {
        int a[2];
        FAIL_IF(owned_pair(a) != 0);
        CHECK(arm(a[0], a[1]));
        struct pour p = { .fd = a[1] };
        pthread_t th;
        FAIL_IF(pthread_create(&th, NULL, pour_old, &p) != 0);
        char b[512];
        EXPECT_EQ(read_all(a[0], b, sizeof b, MSG_WAITALL), (ssize_t)sizeof b);   /* bytes flowing */
        int old = a[0];
        EXPECT_EQ(weft_close(old), 0);
        if (i % 2)
            weft_sleep(1000000);   /* the placeholder most likely gone: the number is free */
        int c[2];
        FAIL_IF(plain_pair(c) != 0);
        reused += c[0] == old || c[1] == old;
        EXPECT_EQ(weft_own(c[0]), 0);
        EXPECT_EQ(weft_own(c[1]), 0);
        char msg0[300], msg1[300];
        memset(msg0, 'N', sizeof msg0);
        memset(msg1, 'M', sizeof msg1);
        EXPECT_EQ(send_all(c[1], msg0, sizeof msg0), (ssize_t)sizeof msg0);
        EXPECT_EQ(send_all(c[0], msg1, sizeof msg1), (ssize_t)sizeof msg1);
        char in[300];
        EXPECT_EQ(read_n(c[0], in, sizeof in), (ssize_t)sizeof in);
        FAIL_IF(memcmp(in, msg0, sizeof in) != 0);
        EXPECT_EQ(read_n(c[1], in, sizeof in), (ssize_t)sizeof in);
        FAIL_IF(memcmp(in, msg1, sizeof in) != 0);
        weft_sleep(1000000);
        EXPECT_EQ(weft_recv(c[0], in, sizeof in, MSG_DONTWAIT), -EAGAIN);
        EXPECT_EQ(weft_recv(c[1], in, sizeof in, MSG_DONTWAIT), -EAGAIN);
        atomic_store(&p.stop, true);
        pthread_join(th, NULL);
        close(a[1]);
        close_pair(c);
    }
    atomic_fetch_add(&reuses, reused);
    weft_deadline(prev);
    return NULL;
}

Test(own, a_socket_that_takes_a_closed_owned_socket_s_number_never_sees_its_bytes)
{
    run_all(reuse, NULL);
    cr_log_info("a new socket got the closed one's number in %u rounds", atomic_load(&reuses));
}

/* A server: one coroutine per connection, each owned (both ends), request
 * and response rounds, some pipelined. */
#define REQ 48
#define ROUNDS 12

struct conn {
    int          fd;
    unsigned     id;
    const char  *err;
};

static void make_req(uint8_t *b, unsigned id, unsigned round, unsigned k)
{
    for (unsigned i = 0; i < REQ; i++)
        b[i] = (uint8_t)(id * 131 + round * 17 + k * 7 + i);
}

static void *serve_conn(void *arg)
{
    struct conn *c = arg;
    if (weft_own(c->fd) != 0) {
        c->err = "the server could not own its connection";
        return NULL;
    }
    uint8_t b[REQ];
    for (;;) {
        ssize_t n = read_all(c->fd, b, REQ, MSG_WAITALL);
        if (n == 0)
            break;
        if (n != REQ) {
            c->err = why("the server's request read returned %zd", n);
            return NULL;
        }
        for (unsigned i = 0; i < REQ; i++)
            b[i] = (uint8_t)~b[i];
        if (send_all(c->fd, b, REQ) != REQ) {
            c->err = "the server's response failed";
            return NULL;
        }
    }
    weft_close(c->fd);
    return NULL;
}

static void *client_conn(void *arg)
{
    struct conn *c = arg;
    if (weft_own(c->fd) != 0) {
        c->err = "the client could not own its connection";
        return NULL;
    }
    uint8_t out[3 * REQ], in[3 * REQ];
    for (unsigned r = 0; r < ROUNDS; r++) {
        unsigned k = r % 3 == 2 ? 3 : 1;   /* every third round pipelines three */
        for (unsigned j = 0; j < k; j++)
            make_req(out + j * REQ, c->id, r, j);
        if (send_all(c->fd, out, k * REQ) != (ssize_t)(k * REQ)) {
            c->err = "the client's send failed";
            return NULL;
        }
        ssize_t n = read_n(c->fd, in, k * REQ);
        if (n != (ssize_t)(k * REQ)) {
            c->err = why("client %u round %u read %zd", c->id, r, n);
            return NULL;
        }
        for (unsigned i = 0; i < k * REQ; i++)
            if ((uint8_t)(in[i] ^ out[i]) != 0xff) {
                c->err = why("client %u round %u: byte %u is another's", c->id, r, i);
                return NULL;
            }
    }
    shutdown(c->fd, SHUT_WR);
    if (weft_read(c->fd, in, 1) != 0)
        c->err = "the client did not see the server's close";
    weft_close(c->fd);
    return NULL;
}

static void *server(void *arg)
{
    (void)arg;
    uint64_t prev = guard();
    unsigned n = (unsigned)scaled(200);
    if (n < 16)
        n = 16;
    struct conn *cs = calloc(2 * n, sizeof *cs);
    weft_task **ts = calloc(2 * n, sizeof *ts);
    FAIL_IF(!cs || !ts);
    for (unsigned i = 0; i < n; i++) {
        int sv[2];
        FAIL_IF(plain_pair(sv) != 0);
        cs[2 * i] = (struct conn){ .fd = sv[0], .id = i };
        cs[2 * i + 1] = (struct conn){ .fd = sv[1], .id = i };
    }
    for (unsigned i = 0; i < 2 * n; i++)
        FAIL_IF(weft_spawn(&ts[i], i % 2 ? client_conn : serve_conn, &cs[i]) != 0);
    const char *err = NULL;
    for (unsigned i = 0; i < 2 * n; i++) {
        weft_join(ts[i], NULL);
        err = err ? err : cs[i].err;
    }
    free(cs);
    free(ts);
    weft_deadline(prev);
    return (void *)err;
}

Test(own, a_server_serves_many_owned_connections_at_once)
{
    run_all(server, NULL);
}
