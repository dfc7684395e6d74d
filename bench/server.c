/*
 * weft-bench's network server workload: the same request/response server
 * written with weft coroutines and with a thread per connection, under the
 * same load from one client built on plain threads and epoll.
 */
#include "bench.h"

#include <weft.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * A loopback TCP server answers each 64-byte request with the same 64 bytes.
 * weft's server runs one coroutine per connection on weft_read/weft_write and
 * an accept loop on weft_accept, once on each IO backend (io_uring, epoll);
 * the pthreads server, the baseline of both, runs one thread per
 * connection (64 KiB stack) on blocking read/write. One client drives both:
 * serve_clients plain threads (half the CPUs, at least 2), each with its own
 * share of the C connections on its own epoll set, every connection in a
 * closed loop (send a request, wait for the whole reply, compare it byte for
 * byte, send the next). A client thread makes one read and one write per
 * round trip and spends most of its time waiting for replies: the client is
 * not what limits the rate.
 *
 * Every connection first makes one untimed round trip, so that every handler
 * on the server side exists before the clock starts. Then, for opt.serve_ns,
 * each round trip is counted and its latency, from the first byte written to
 * the last byte read, goes into a histogram. After the deadline each
 * connection finishes the request in flight and is closed with a reset
 * (SO_LINGER 0): no TIME_WAIT is left behind to use up local ports over many
 * runs, and the server sees the reset between two requests.
 */
enum { MSG = 64, SERVE_CLIENTS_MAX = 16, SERVE_STACK = 64 * 1024 };
#define SERVE_STALL_NS (10 * 1000000000ull)   /* no reply for this long: the server hangs */

/*
 * Latency histogram, log-linear: exact below 16 ns, then 16 buckets for each
 * power of two, so that a bucket spans at most 1/16 (6 %) of its values.
 */
enum { HIST_SUB = 16, HIST_BUCKETS = 61 * HIST_SUB };

static int hist_bucket(uint64_t v)
{
    if (v < HIST_SUB)
        return (int)v;
    int e = 63 - __builtin_clzll(v);      /* 4..63 */
    return (e - 3) * HIST_SUB + (int)((v >> (e - 4)) & (HIST_SUB - 1));
}

/* The middle of bucket i, in ns. */
static double hist_value(int i)
{
    if (i < HIST_SUB)
        return i;
    int e = i / HIST_SUB + 3, sub = i % HIST_SUB;
    double width = (double)(1ull << (e - 4));
    return (double)(HIST_SUB + sub) * width + width / 2;
}

/* The value below which a fraction p of the n samples of h lie, in ns. */
static double hist_percentile(const uint64_t *h, uint64_t n, double p)
{
    uint64_t want = (uint64_t)(p * (double)n), seen_so_far = 0;
    if ((double)want < p * (double)n)
        want++;
    if (want == 0)
        want = 1;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen_so_far += h[i];
        if (seen_so_far >= want)
            return hist_value(i);
    }
    return 0;
}

/* The server of the current run; one at a time. */
static struct {
    int         lfd;          /* the listening socket */
    atomic_int  stop;         /* set before the connection that wakes the accept loop */
    atomic_long accepted;     /* connections accepted, the waking one included */
    atomic_int  err;          /* the first error a handler met, as a negative errno */
    pthread_t  *threads;      /* pthreads server: one per connection; owned by its acceptor */
    long        nthreads, maxthreads;
} srv;

static void srv_error(int err)
{
    int none = 0;
    atomic_compare_exchange_strong(&srv.err, &none, err);
}

static const char *serve_name;   /* "weft (io_uring)", "pthreads", ..., for messages */

/* A failure that stops the run (the server hangs, a connection breaks). */
static void serve_die(const char *what, int err)
{
    fprintf(stderr, "\nweft-bench: FAILED: server (%s): %s%s%s\n", serve_name, what,
            err ? ": " : "", err ? strerror(err) : "");
    int e = atomic_load(&srv.err);
    if (e)
        fprintf(stderr, "weft-bench: the server reported: %s\n", strerror(-e));
    exit(1);
}

/* read and write for the threads' server, reporting as the weft calls do: a
 * negative errno. */
static ssize_t sys_read(int fd, void *buf, size_t len)
{
    ssize_t r;
    while ((r = read(fd, buf, len)) < 0 && errno == EINTR)
        ;
    return r < 0 ? -errno : r;
}

static ssize_t sys_write(int fd, const void *buf, size_t len)
{
    ssize_t r;
    while ((r = write(fd, buf, len)) < 0 && errno == EINTR)
        ;
    return r < 0 ? -errno : r;
}

typedef ssize_t (*read_fn)(int fd, void *buf, size_t len);
typedef ssize_t (*write_fn)(int fd, const void *buf, size_t len);

/* Reads one whole request: 1, or 0 when the client went away between two
 * requests (end of file or a reset), or a negative errno. */
static int read_request(int fd, unsigned char *buf, read_fn rd)
{
    size_t got = 0;
    while (got < MSG) {
        ssize_t r = rd(fd, buf + got, MSG - got);
        if (r > 0)
            got += (size_t)r;
        else if (got == 0 && (r == 0 || r == -ECONNRESET))
            return 0;
        else
            return r == 0 ? -EPROTO : (int)r;
    }
    return 1;
}

/* Writes one whole reply: 1, or a negative errno. */
static int write_reply(int fd, const unsigned char *buf, write_fn wr)
{
    for (size_t put = 0; put < MSG;) {
        ssize_t r = wr(fd, buf + put, MSG - put);
        if (r <= 0)
            return r == 0 ? -EIO : (int)r;
        put += (size_t)r;
    }
    return 1;
}

/* Answers requests on fd until the client goes, then closes fd. The same code
 * for both servers; only the calls differ. */
static void echo(int fd, read_fn rd, write_fn wr)
{
    unsigned char buf[MSG];
    int rc;
    while ((rc = read_request(fd, buf, rd)) == 1 && (rc = write_reply(fd, buf, wr)) == 1)
        ;
    if (rc < 0)
        srv_error(rc);
    close(fd);
}

static void *echo_weft(void *arg)
{
    echo((int)(intptr_t)arg, weft_read, weft_write);
    return NULL;
}

static void *echo_thread(void *arg)
{
    echo((int)(intptr_t)arg, sys_read, sys_write);
    return NULL;
}

/* accept4 for the threads' server, its error as a negative errno. */
static int accept_one(int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* A connection was accepted: 1 to serve it, 0 when it is the one that only
 * wakes the accept loop up to stop. */
static int admit(int fd)
{
    atomic_fetch_add_explicit(&srv.accepted, 1, memory_order_relaxed);   /* read after the join */
    if (atomic_load_explicit(&srv.stop, memory_order_acquire))           /* pairs with the store before the last connect */
        return 0;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 1;
}

static void *accept_weft(void *arg)
{
    for (;;) {
        int fd = weft_accept(srv.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -EINTR || fd == -ECONNABORTED)
            continue;
        if (fd < 0) {
            srv_error(fd);
            return NULL;
        }
        if (!admit(fd))
            return arg;
        int rc = weft_spawn(NULL, echo_weft, (void *)(intptr_t)fd);
        if (rc < 0) {
            srv_error(rc);
            close(fd);
        }
    }
}

static void *accept_threads(void *arg)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, SERVE_STACK);
    for (;;) {
        int fd = accept_one(srv.lfd);
        if (fd == -EINTR || fd == -ECONNABORTED)
            continue;
        if (fd < 0) {
            srv_error(fd);
            break;
        }
        if (!admit(fd))
            break;
        if (srv.nthreads == srv.maxthreads
            || pthread_create(&srv.threads[srv.nthreads], &attr, echo_thread,
                              (void *)(intptr_t)fd) != 0) {
            srv_error(-EAGAIN);
            close(fd);
            continue;
        }
        srv.nthreads++;
    }
    pthread_attr_destroy(&attr);
    return arg;
}

/* One client connection. */
typedef struct {
    int      fd;
    uint32_t id, seq;          /* connection and request number, both in the request */
    uint32_t sent, got;        /* bytes of the request written, of its reply read */
    int      want_out;         /* EPOLLOUT armed: the socket was full mid-request */
    uint64_t start;            /* when the request in flight was started */
    unsigned char req[MSG], rep[MSG];
} conn;

/* One client thread and its share of the connections. */
typedef struct {
    conn     *c;
    int       n;
    long      done;                  /* timed round trips */
    long      bad;                   /* replies that differed from their request */
    uint64_t  end;                   /* when its last timed reply arrived */
    uint64_t  hist[HIST_BUCKETS];    /* latency of the timed round trips */
} client;

static int serve_clients;           /* client threads */
static pthread_barrier_t serve_go;   /* the client threads and the main thread */

static void arm(int ep, conn *c, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = c };
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        serve_die("epoll_ctl in the client", errno);
}

/* Writes what is left of c's request; when the socket is full, waits for
 * EPOLLOUT as well. */
static void conn_send(int ep, conn *c)
{
    while (c->sent < MSG) {
        ssize_t r = write(c->fd, c->req + c->sent, MSG - c->sent);
        if (r > 0) {
            c->sent += (uint32_t)r;
        } else if (r < 0 && errno == EAGAIN) {
            if (!c->want_out)
                arm(ep, c, EPOLLIN | EPOLLOUT);
            c->want_out = 1;
            return;
        } else if (r == 0 || errno != EINTR) {
            serve_die("a request could not be sent", r < 0 ? errno : EIO);
        }
    }
    if (c->want_out)
        arm(ep, c, EPOLLIN);
    c->want_out = 0;
}

/* Starts c's next request: different bytes each time, so that a stale or
 * misrouted reply does not compare equal. */
static void conn_start(int ep, conn *c, uint64_t now)
{
    uint64_t x = (uint64_t)c->id << 32 | ++c->seq;
    for (int i = 0; i < MSG; i += 8) {
        x = work(x, 1);
        memcpy(c->req + i, &x, sizeof x);
    }
    c->sent = c->got = 0;
    c->start = now;
    conn_send(ep, c);
}

/*
 * Runs every connection of k in a closed loop until deadline, then lets each
 * finish the request in flight; a deadline of 0 makes one round trip each.
 * timed: count the round trips and record their latency.
 */
static void client_loop(client *k, int ep, uint64_t deadline, int timed)
{
    struct epoll_event ev[256];
    uint64_t now = now_ns(), last = now;
    int busy = k->n;
    for (int i = 0; i < k->n; i++)
        conn_start(ep, &k->c[i], now);
    while (busy > 0) {
        int m = epoll_wait(ep, ev, 256, 1000);
        if (m < 0 && errno != EINTR)
            serve_die("epoll_wait in the client", errno);
        now = now_ns();
        if (m <= 0) {
            if (now - last > SERVE_STALL_NS)
                serve_die("no reply for 10 s", 0);
            continue;
        }
        last = now;
        for (int i = 0; i < m; i++) {
            conn *c = ev[i].data.ptr;
            if (ev[i].events & EPOLLOUT)
                conn_send(ep, c);
            if (!(ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            ssize_t r = read(c->fd, c->rep + c->got, MSG - c->got);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0)
                serve_die("the server closed a connection", r < 0 ? errno : 0);
            c->got += (uint32_t)r;
            if (c->got < MSG)
                continue;
            now = now_ns();
            if (c->sent < MSG || memcmp(c->rep, c->req, MSG) != 0)
                k->bad++;
            if (timed) {
                k->hist[hist_bucket(now - c->start)]++;
                k->done++;
                k->end = now;
            }
            if (now < deadline)
                conn_start(ep, c, now);
            else
                busy--;
        }
    }
}

static void *client_thread(void *arg)
{
    client *k = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        serve_die("epoll_create1 in the client", errno);
    for (int i = 0; i < k->n; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &k->c[i] };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, k->c[i].fd, &ev) != 0)
            serve_die("epoll_ctl in the client", errno);
    }
    client_loop(k, ep, 0, 0);
    pthread_barrier_wait(&serve_go);
    client_loop(k, ep, now_ns() + opt.serve_ns, 1);
    for (int i = 0; i < k->n; i++)
        close(k->c[i].fd);
    close(ep);
    return NULL;
}

/* A blocking connection to addr, Nagle off, closed with a reset. */
static int dial(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    int one = 1;
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    return fd;
}

/* A listening socket on 127.0.0.1 and a port the kernel picks. */
static int listen_loopback(int nonblock, int backlog, struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    socklen_t len = sizeof *addr;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof *addr) != 0
        || listen(fd, backlog) != 0 || getsockname(fd, (struct sockaddr *)addr, &len) != 0)
        serve_die("a listening socket on 127.0.0.1", errno);
    return fd;
}

typedef struct { double rate, p50, p99; } serve_fig;   /* k req/s, us, us */

/* The weft server's IO backend for each kind of run; 0: the threads' server. */
static const struct {
    int backend;
    const char *name;     /* the row's label */
    const char *io;       /* the backend, in the row's text */
    const char *macro;    /* how the configuration names it */
    const char *id;       /* in the CSV's workload ids */
} kinds[] = {
    { WEFT_IO_URING, "weft (io_uring)", "io_uring", "WEFT_IO_URING", "uring" },
    { WEFT_IO_EPOLL, "weft (epoll)", "epoll", "WEFT_IO_EPOLL", "epoll" },
};
enum { NKINDS = sizeof kinds / sizeof kinds[0] };

/* One timed run against a server: weft's on the given IO backend, or with
 * backend 0 the threads' server. */
static serve_fig serve_once(int backend, int nconn)
{
    struct sockaddr_in addr;
    weft_rt *rt = NULL;
    weft_task *acceptor = NULL;
    pthread_t acceptor_thread, ct[SERVE_CLIENTS_MAX];
    int use_weft = backend != 0;
    serve_name = "pthreads";
    for (int i = 0; i < NKINDS; i++)
        if (kinds[i].backend == backend)
            serve_name = kinds[i].name;
    srv.lfd = listen_loopback(use_weft, nconn + 16, &addr);
    atomic_store(&srv.stop, 0);
    atomic_store(&srv.accepted, 0);
    atomic_store(&srv.err, 0);
    if (use_weft) {
        weft_config cfg = { .workers = opt.workers, .io_backend = backend };
        check(weft_rt_create(&rt, &cfg), "weft_rt_create");
        check(weft_spawn_on(rt, &acceptor, accept_weft, NULL), "weft_spawn_on");
    } else {
        srv.threads = calloc((size_t)nconn + 1, sizeof *srv.threads);
        srv.nthreads = 0;
        srv.maxthreads = nconn + 1;
        if (!srv.threads || pthread_create(&acceptor_thread, NULL, accept_threads, NULL) != 0)
            serve_die("starting the accept thread", ENOMEM);
    }

    conn *c = calloc((size_t)nconn, sizeof *c);
    client *k = calloc((size_t)serve_clients, sizeof *k);
    if (!c || !k)
        serve_die("client memory", ENOMEM);
    for (int i = 0; i < nconn; i++) {
        int fd = dial(&addr);
        if (fd < 0)
            serve_die("connect", -fd);
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
            serve_die("fcntl", errno);
        c[i].fd = fd;
        c[i].id = (uint32_t)i;
    }
    pthread_barrier_init(&serve_go, NULL, (unsigned)serve_clients + 1);
    for (int j = 0; j < serve_clients; j++) {
        int lo = nconn * j / serve_clients, hi = nconn * (j + 1) / serve_clients;
        k[j].c = c + lo;
        k[j].n = hi - lo;
        if (pthread_create(&ct[j], NULL, client_thread, &k[j]) != 0)
            serve_die("starting a client thread", EAGAIN);
    }
    pthread_barrier_wait(&serve_go);
    uint64_t t0 = now_ns();
    for (int j = 0; j < serve_clients; j++)
        pthread_join(ct[j], NULL);
    pthread_barrier_destroy(&serve_go);

    /* Stop: every client connection is closed; one more wakes the accept loop. */
    atomic_store_explicit(&srv.stop, 1, memory_order_release);   /* pairs with admit() */
    int wake = dial(&addr);
    if (wake < 0)
        serve_die("connect", -wake);
    if (use_weft) {
        check(weft_join(acceptor, NULL), "weft_join");
        check(weft_rt_destroy(rt), "weft_rt_destroy");   /* waits for every connection's coroutine */
    } else {
        pthread_join(acceptor_thread, NULL);
        for (long i = 0; i < srv.nthreads; i++)
            pthread_join(srv.threads[i], NULL);
        free(srv.threads);
    }
    close(wake);
    close(srv.lfd);

    long done = 0, bad = 0;
    uint64_t end = t0, hist[HIST_BUCKETS] = { 0 };
    for (int j = 0; j < serve_clients; j++) {
        done += k[j].done;
        bad += k[j].bad;
        if (k[j].end > end)
            end = k[j].end;
        for (int i = 0; i < HIST_BUCKETS; i++)
            hist[i] += k[j].hist[i];
    }
    free(k);
    free(c);
    char msg[200];
    if (bad) {
        snprintf(msg, sizeof msg, "server (%s, %d connections): %ld replies differed from "
                 "their request", serve_name, nconn, bad);
        fail(msg);
    }
    if (atomic_load(&srv.err)) {
        snprintf(msg, sizeof msg, "server (%s, %d connections): a handler failed: %s",
                 serve_name, nconn, strerror(-atomic_load(&srv.err)));
        fail(msg);
    }
    if (atomic_load(&srv.accepted) != nconn + 1) {
        snprintf(msg, sizeof msg, "server (%s): %ld connections accepted, expected %d",
                 serve_name, atomic_load(&srv.accepted), nconn + 1);
        fail(msg);
    }
    if (done == 0 || end == t0) {
        snprintf(msg, sizeof msg, "server (%s): no round trip completed", serve_name);
        fail(msg);
        return (serve_fig){ 0, 0, 0 };
    }
    return (serve_fig){ (double)done * 1e6 / (double)(end - t0),
                        hist_percentile(hist, (uint64_t)done, 0.50) / 1e3,
                        hist_percentile(hist, (uint64_t)done, 0.99) / 1e3 };
}

/* Raises the soft limit on descriptors to the hard one; returns the soft one. */
static long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > LONG_MAX ? LONG_MAX : (long)rl.rlim_cur;
}

/* 1 when a runtime on this IO backend can be created here; else says why not. */
static int backend_works(int backend, const char *name)
{
    weft_rt *rt;
    weft_config cfg = { .workers = 1, .io_backend = backend };
    int rc = weft_rt_create(&rt, &cfg);
    if (rc < 0) {
        printf("server rows for %s skipped: a runtime on it could not be created: %s\n",
               name, strerror(-rc));
        return 0;
    }
    check(weft_rt_destroy(rt), "weft_rt_destroy");
    return 1;
}

void bench_server(void)
{
    static const int sizes[] = { 100, 1000 };
    static char what[2][NKINDS][3][560];
    static char ids[2][NKINDS][3][40];
    int ok[NKINDS];
    long nofile = raise_nofile();
    serve_clients = ncpus() / 2;
    if (serve_clients < 2)
        serve_clients = 2;
    if (serve_clients > SERVE_CLIENTS_MAX)
        serve_clients = SERVE_CLIENTS_MAX;
    /* A reply written to a connection the client has reset gives EPIPE, not death. */
    signal(SIGPIPE, SIG_IGN);
    for (int b = 0; b < NKINDS; b++)
        ok[b] = backend_works(kinds[b].backend, kinds[b].name);
    for (int s = 0; s < 2; s++) {
        int n = sizes[s];
        long need = 2L * n + 64;
        if (nofile < need) {
            printf("server with %d connections skipped: it needs about %ld descriptors, "
                   "RLIMIT_NOFILE allows %ld\n", n, need, nofile);
            continue;
        }
        /* [kind][figure][run]; the threads' server runs once a run, the
         * baseline of every weft row of that run. */
        double w[NKINDS][3][64], p[3][64];
        char label[64];
        snprintf(label, sizeof label, "server, %d connections", n);
        for (int r = 0; r < opt.runs; r++) {
            progress(label, r + 1, opt.runs);
            for (int b = 0; b < NKINDS; b++) {
                if (!ok[b])
                    continue;
                serve_fig f = serve_once(kinds[b].backend, n);
                w[b][0][r] = f.rate;
                w[b][1][r] = f.p50;
                w[b][2][r] = f.p99;
            }
            serve_fig f = serve_once(0, n);
            p[0][r] = f.rate;
            p[1][r] = f.p50;
            p[2][r] = f.p99;
        }
        progress_done();
        for (int b = 0; b < NKINDS; b++) {
            if (!ok[b])
                continue;
            const char *backend = kinds[b].io;
            snprintf(what[s][b][0], sizeof what[s][b][0],
                     "Loopback TCP server, %d connections, weft on %s: throughput, higher is\n"
                     "  better (thousand 64-byte request/reply round trips per second, every\n"
                     "  reply checked; weft: a coroutine per connection on weft_read/weft_write,\n"
                     "  accept on weft_accept, .io_backend = %s; pthreads: a thread per\n"
                     "  connection, %d KiB stack, blocking read/write; the same client for both:\n"
                     "  %d threads on epoll, each connection in a closed loop for %.2f s)",
                     n, backend, kinds[b].macro, SERVE_STACK / 1024,
                     serve_clients, (double)opt.serve_ns / 1e9);
            snprintf(what[s][b][1], sizeof what[s][b][1],
                     "Loopback TCP server, %d connections, weft on %s: round-trip latency,\n"
                     "  median (p50) (as above, in the client from writing a request to reading\n"
                     "  its whole reply)", n, backend);
            snprintf(what[s][b][2], sizeof what[s][b][2],
                     "Loopback TCP server, %d connections, weft on %s: round-trip latency,\n"
                     "  99th percentile (p99)", n, backend);
            static const char *const fig[3] = { "rate", "p50", "p99" };
            for (int k = 0; k < 3; k++) {
                snprintf(ids[s][b][k], sizeof ids[s][b][k], "server_%d_%s_%s", n, fig[k],
                         kinds[b].id);
                row *rw = add_row(ids[s][b][k], what[s][b][k], k ? "us" : "k req/s", w[b][k],
                                  p[k], opt.runs);
                rw->label = kinds[b].name;
                rw->higher = k == 0;
            }
        }
    }
}
