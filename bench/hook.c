/* SPDX-License-Identifier: MIT */
/*
 * weft-bench-hook: what libweft-hook costs. A plain read or write made in a
 * coroutine, which the hook turns into weft_read or weft_write, against the
 * weft call itself; and a loopback echo server whose coroutines call read and
 * write (through the hook) against the same server on weft_read and
 * weft_write.
 *
 * A program of its own rather than a workload of weft-bench: the hook works
 * by defining read, write, close and the rest in the executable (it is linked
 * as libweft-hook.a), so in weft-bench it would sit under every baseline's
 * plain calls too (the pthreads and epoll loop servers, the client).
 *
 * ping-pong: two coroutines on one worker pass one byte back and forth over
 * a pair of pipes, or a socketpair, ROUNDS times; each round trip is two
 * writes and two reads, two of which wait. ns per call = time / (4 * rounds).
 *
 * echo: CONNS loopback TCP connections, each served by a coroutine (a weft
 * accept loop spawns them), driven by CLIENTS plain threads, each owning a
 * share of the connections and keeping one 64-byte request in flight on
 * each in turn (blocking write, then read of the whole reply, checked byte for
 * byte). Plain threads' calls are the C library's in both variants (the hook
 * passes them straight through), so only the server side differs.
 *
 * Every figure is the median of RUNS runs, the variants alternated within
 * each run. Every answer is checked; a wrong one prints FAILED and makes the
 * exit status 1. Timing never decides it.
 *
 * Usage: weft-bench-hook [--runs N] [--workers N]
 */
#include <weft.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

enum { ROUNDS = 200000, MSG = 64, CONNS = 100, CLIENTS = 4, RUNS_MAX = 31 };
#define ECHO_NS 1000000000ull   /* timed part of one echo run */

static int runs = 5;
static unsigned workers;   /* echo's weft workers; 0: every CPU */
static int failed;

_Noreturn static void die(const char *what, int err)
{
    fprintf(stderr, "weft-bench-hook: FAILED: %s: %s\n", what, strerror(err));
    exit(1);
}

static void wrong(const char *what)
{
    fprintf(stderr, "weft-bench-hook: FAILED: %s\n", what);
    failed = 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* ---- ping-pong ---------------------------------------------------------------- */

/* Each variant's read and write, as the weft calls report: a negative errno. */
static ssize_t libc_read(int fd, void *buf, size_t len)
{
    ssize_t r = read(fd, buf, len);   /* libweft-hook's read */
    return r < 0 ? -errno : r;
}

static ssize_t libc_write(int fd, const void *buf, size_t len)
{
    ssize_t r = write(fd, buf, len);   /* libweft-hook's write */
    return r < 0 ? -errno : r;
}

struct pingpong {
    int     in, out;   /* this side reads in, writes out */
    ssize_t (*rd)(int, void *, size_t);
    ssize_t (*wr)(int, const void *, size_t);
    bool    first;     /* writes first */
    long    bad;
};

static void *pp_side(void *arg)
{
    struct pingpong *p = arg;
    unsigned char c = 0;
    for (long i = 0; i < ROUNDS; i++) {
        if (p->first && p->wr(p->out, &c, 1) != 1)
            p->bad++;
        unsigned char got;
        if (p->rd(p->in, &got, 1) != 1 || got != c)
            p->bad++;
        if (!p->first && p->wr(p->out, &got, 1) != 1)
            p->bad++;
        c++;
    }
    return NULL;
}

struct pp_run { int a[2], b[2]; bool hooked; double ns_per_call; long bad; };

static void *pp_main(void *arg)
{
    struct pp_run *r = arg;
    ssize_t (*rd)(int, void *, size_t) = r->hooked ? libc_read : weft_read;
    ssize_t (*wr)(int, const void *, size_t) = r->hooked ? libc_write : weft_write;
    struct pingpong x = { r->a[0], r->b[1], rd, wr, true, 0 };
    struct pingpong y = { r->b[0], r->a[1], rd, wr, false, 0 };
    weft_task *tx, *ty;
    uint64_t t0 = weft_now();
    if (weft_spawn(&tx, pp_side, &x) || weft_spawn(&ty, pp_side, &y))
        die("weft_spawn", EAGAIN);
    weft_join(tx, NULL);
    weft_join(ty, NULL);
    r->ns_per_call = (double)(weft_now() - t0) / (4.0 * ROUNDS);
    r->bad = x.bad + y.bad;
    return NULL;
}

/* One run of one variant: on `backend`, over pipes or a socketpair. */
static double pingpong(int backend, bool sockets, bool hooked)
{
    struct pp_run r = { .hooked = hooked };
    if (sockets) {
        /* One socket each: x reads and writes a[0] (= b[1]), y a[1] (= b[0]). */
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, r.a) != 0)
            die("socketpair", errno);
        r.b[0] = r.a[1];
        r.b[1] = r.a[0];
    } else if (pipe2(r.a, O_CLOEXEC) != 0 || pipe2(r.b, O_CLOEXEC) != 0) {
        die("pipe2", errno);
    }
    weft_config cfg = { .workers = 1, .io_backend = backend };
    int err = weft_main(&cfg, pp_main, &r, NULL);
    if (err)
        die("weft_main", -err);
    if (r.bad)
        wrong("ping-pong: a byte was lost or changed");
    close(r.a[0]);
    close(r.a[1]);
    if (!sockets) {
        close(r.b[0]);
        close(r.b[1]);
    }
    return r.ns_per_call;
}

/* ---- echo --------------------------------------------------------------------- */

static struct {
    int        lfd;
    bool       hooked;
    atomic_int stop;
    atomic_int err;
} srv;

static ssize_t io_full(int fd, unsigned char *buf, bool out)
{
    for (size_t done = 0; done < MSG;) {
        ssize_t r = srv.hooked ? (out ? libc_write(fd, buf + done, MSG - done)
                                      : libc_read(fd, buf + done, MSG - done))
                               : (out ? weft_write(fd, buf + done, MSG - done)
                                      : weft_read(fd, buf + done, MSG - done));
        if (r <= 0)
            return r == 0 && !done && !out ? 0 : r == 0 ? -EPROTO : r;
        done += (size_t)r;
    }
    return 1;
}

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned char buf[MSG];
    ssize_t r;
    while ((r = io_full(fd, buf, false)) == 1 && (r = io_full(fd, buf, true)) == 1)
        ;
    if (r < 0 && r != -ECONNRESET)
        atomic_store(&srv.err, (int)r);
    if (srv.hooked)
        close(fd);
    else
        weft_close(fd);
    return NULL;
}

static void *echo_accept(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = srv.hooked ? accept4(srv.lfd, NULL, NULL, SOCK_CLOEXEC)
                            : weft_accept(srv.lfd, NULL, NULL, SOCK_CLOEXEC);
        if (srv.hooked && fd < 0)
            fd = -errno;
        if (fd == -EINTR || fd == -ECONNABORTED)
            continue;
        if (fd < 0) {
            atomic_store(&srv.err, fd);
            return NULL;
        }
        if (atomic_load(&srv.stop)) {
            close(fd);
            return NULL;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (weft_spawn(NULL, echo_conn, (void *)(intptr_t)fd) != 0)
            close(fd);
    }
}

struct client { int fd[CONNS]; int n; long done; long bad; uint64_t deadline; };

static void *client_main(void *arg)
{
    struct client *k = arg;
    unsigned char req[MSG], rep[MSG];
    for (uint32_t seq = 0; weft_now() < k->deadline; seq++) {
        for (int i = 0; i < k->n; i++) {
            memset(req, (int)(seq + (uint32_t)i), sizeof req);
            memcpy(req, &seq, sizeof seq);
            if (write(k->fd[i], req, MSG) != MSG) {
                k->bad++;
                continue;
            }
            size_t got = 0;
            while (got < MSG) {
                ssize_t r = read(k->fd[i], rep + got, MSG - got);
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    die("echo: no reply for 10 s, the server hangs", ETIMEDOUT);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            if (got != MSG || memcmp(req, rep, MSG) != 0)
                k->bad++;
            else
                k->done++;
        }
    }
    return NULL;
}

static int dial(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof *sa) != 0)
        die("connect", errno);
    int one = 1;
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    struct timeval stall = { .tv_sec = 10 };   /* a reply this late: the server hangs */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &stall, sizeof stall);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    return fd;
}

/* One run: thousand round trips per second. */
static double echo(int backend, bool hooked)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    srv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (srv.lfd < 0 || bind(srv.lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(srv.lfd, CONNS + 16) != 0 || getsockname(srv.lfd, (struct sockaddr *)&sa, &len) != 0)
        die("a listening socket on 127.0.0.1", errno);
    srv.hooked = hooked;
    atomic_store(&srv.stop, 0);
    atomic_store(&srv.err, 0);
    weft_rt *rt;
    weft_task *acceptor;
    weft_config cfg = { .workers = workers, .io_backend = backend };
    int err = weft_rt_create(&rt, &cfg);
    if (err || (err = weft_spawn_on(rt, &acceptor, echo_accept, NULL)))
        die("weft_rt_create", -err);

    static struct client k[CLIENTS];
    memset(k, 0, sizeof k);
    for (int i = 0; i < CONNS; i++) {
        struct client *c = &k[i % CLIENTS];
        c->fd[c->n++] = dial(&sa);
    }
    pthread_t t[CLIENTS];
    uint64_t t0 = weft_now();
    for (int j = 0; j < CLIENTS; j++) {
        k[j].deadline = t0 + ECHO_NS;
        if (pthread_create(&t[j], NULL, client_main, &k[j]) != 0)
            die("pthread_create", EAGAIN);
    }
    long done = 0, bad = 0;
    for (int j = 0; j < CLIENTS; j++) {
        pthread_join(t[j], NULL);
        done += k[j].done;
        bad += k[j].bad;
    }
    uint64_t took = weft_now() - t0;
    for (int j = 0; j < CLIENTS; j++)
        for (int i = 0; i < k[j].n; i++)
            close(k[j].fd[i]);
    atomic_store(&srv.stop, 1);
    close(dial(&sa));   /* wakes the accept loop */
    weft_join(acceptor, NULL);
    if ((err = weft_rt_destroy(rt)))
        die("weft_rt_destroy", -err);
    close(srv.lfd);
    if (bad)
        wrong("echo: a reply differed from its request");
    if (atomic_load(&srv.err))
        wrong("echo: a handler failed");
    return (double)done * 1e6 / (double)took;
}

/* ---- the driver --------------------------------------------------------------- */

static bool backend_works(int backend)
{
    weft_rt *rt;
    weft_config cfg = { .workers = 1, .io_backend = backend };
    if (weft_rt_create(&rt, &cfg) < 0)
        return false;
    weft_rt_destroy(rt);
    return true;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc) {
            runs = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
            workers = (unsigned)atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: weft-bench-hook [--runs N] [--workers N]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > RUNS_MAX) {
        fprintf(stderr, "weft-bench-hook: --runs takes 1 to %d\n", RUNS_MAX);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    static const struct { int id; const char *name; } backends[] = {
        { WEFT_IO_URING, "io_uring" }, { WEFT_IO_EPOLL, "epoll" },
    };
    printf("libweft-hook against the weft calls it becomes; median of %d runs\n", runs);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("%-10s %-28s %14s %14s %8s\n", "backend", "measure", "through hook", "weft call",
           "ratio");
    for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++) {
        if (!backend_works(backends[b].id)) {
            printf("%-10s (a runtime on it cannot be created here)\n", backends[b].name);
            continue;
        }
        for (int sockets = 0; sockets < 2; sockets++) {
            double hk[RUNS_MAX], wf[RUNS_MAX];
            for (int r = 0; r < runs; r++) {
                hk[r] = pingpong(backends[b].id, sockets, true);
                wf[r] = pingpong(backends[b].id, sockets, false);
            }
            double h = median(hk, runs), w = median(wf, runs);
            printf("%-10s %-28s %11.0f ns %11.0f ns %8.2f\n", backends[b].name,
                   sockets ? "socketpair ping-pong, /call" : "pipe ping-pong, /call", h, w, h / w);
        }
        double hk[RUNS_MAX], wf[RUNS_MAX];
        for (int r = 0; r < runs; r++) {
            hk[r] = echo(backends[b].id, true);
            wf[r] = echo(backends[b].id, false);
        }
        double h = median(hk, runs), w = median(wf, runs);
        printf("%-10s %-28s %8.1f k/s %8.1f k/s %8.2f\n", backends[b].name,
               "echo, 100 conns, round trips", h, w, h / w);
        fflush(stdout);
    }
    return failed;
}
