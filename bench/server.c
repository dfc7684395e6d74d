/*
 * weft-bench's network server workload: the same request/response server
 * written with weft coroutines, as a hand-written epoll loop per core and with
 * a thread per connection, under the same load from one client built on plain
 * threads and epoll.
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
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * A loopback TCP server answers each 64-byte request with the same 64 bytes.
 * weft's server runs one coroutine per connection on weft_read/weft_write and
 * an accept loop on weft_accept, once on each IO backend (io_uring, epoll).
 * Two baselines: the epoll loop server, one thread per weft worker each
 * running its own epoll loop over non-blocking sockets (see "The epoll loop
 * server" below), and the pthreads server, one thread per connection (64 KiB
 * stack) on blocking read/write. One client drives them all:
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
        if (!admit(fd)) {
            close(fd);
            return arg;
        }
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
        if (!admit(fd)) {
            close(fd);
            break;
        }
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

/*
 * The epoll loop server: what a careful C programmer writes without a
 * runtime, in the shape of nginx's and memcached's workers. One thread per
 * weft worker of the run, each running its own epoll loop over its own share
 * of the connections to completion: no thread touches another's connections,
 * so the request path has no lock, no queue and no handoff.
 *
 * Level-triggered, one read per readiness. A 64-byte request arrives whole in
 * one read nearly always, so a round trip costs one read, one write and a
 * share of one epoll_wait, and the interest set changes only when a reply
 * does not fit the socket. Edge-triggered would need a second read per event,
 * to see EAGAIN before waiting again (or an EPOLL_CTL_MOD per request with
 * EPOLLONESHOT): one more system call per round trip, for nothing here.
 *
 * One listening socket, accepted on by loop 0, which deals the connections
 * out round-robin straight into the loops' epoll sets (epoll_ctl may be
 * called from any thread). Every loop gets the same share, every run.
 * SO_REUSEPORT listeners, one per loop, would split the connections by a hash
 * of their ports instead: with 100 connections on 2 loops one loop typically
 * carries 5 more than the other, a different number each run, which makes the
 * baseline noisier and no faster. Accepting is untimed here (every connection
 * makes a round trip before the clock starts), so serialising it on loop 0
 * costs the baseline nothing.
 *
 * Stopping: the connection that wakes the accept loop up makes loop 0 stop
 * dealing and write an eventfd that is in every loop's set; each loop then
 * runs until it has closed every connection dealt to it, as weft_rt_destroy
 * waits for every coroutine and the pthreads server joins every thread.
 */

/* One connection of the epoll loop server: its request read into buf, then
 * the reply written from it. Owned by the loop it was dealt to. */
typedef struct {
    int      fd;
    uint32_t got, put;      /* bytes of the request read, of its reply written */
    int      want_out;      /* interest is EPOLLOUT: the socket was full mid-reply */
    unsigned char buf[MSG];
} econn;

/* One loop: a thread and its epoll set. */
typedef struct {
    int       ep;
    pthread_t thread;
    long      dealt;        /* connections dealt to it; the dealer writes it, the
                             * loop reads it once it sees el.dealt_all */
    long      closed;       /* of those, closed; the loop's own */
} eloop;

/* The epoll loop server of the current run. */
static struct {
    eloop     *loop;
    int        n;           /* loops: as many as the run's weft workers */
    int        next;        /* the loop the next connection goes to; loop 0's */
    int        stopfd;      /* an eventfd in every loop's set, written once dealing is over */
    atomic_int dealt_all;   /* set before stopfd is written */
} el;

/* Their addresses mark the two events that are not connections. */
static const char el_listen_mark, el_stop_mark;

static int eloop_count(void)
{
    return opt.workers ? (int)opt.workers : ncpus();
}

static void econn_close(eloop *l, econn *c)
{
    close(c->fd);   /* also takes it out of the epoll set */
    free(c);
    l->closed++;
}

/* Sets the interest of c, a connection of l. Only l's thread. */
static void econn_want(eloop *l, econn *c, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = c };
    if (epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        serve_die("epoll_ctl in the epoll loop server", errno);
}

/*
 * Moves c on after an event: reads what there is of its request; once the
 * request is whole, writes its reply, waiting for EPOLLOUT if the socket is
 * full. Closes c when the client has gone between two requests, or on an
 * error, which it reports as the other servers do. Only l's thread.
 */
static void econn_serve(eloop *l, econn *c)
{
    if (c->got < MSG) {
        ssize_t r = read(c->fd, c->buf + c->got, MSG - c->got);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (r <= 0) {
            int err = r == 0 ? 0 : errno;
            if (c->got > 0 || (err && err != ECONNRESET))
                srv_error(err ? -err : -EPROTO);
            econn_close(l, c);
            return;
        }
        c->got += (uint32_t)r;
        if (c->got < MSG)
            return;
    }
    while (c->put < MSG) {
        ssize_t r = write(c->fd, c->buf + c->put, MSG - c->put);
        if (r > 0) {
            c->put += (uint32_t)r;
        } else if (r < 0 && errno == EAGAIN) {
            if (!c->want_out)
                econn_want(l, c, EPOLLOUT);
            c->want_out = 1;
            return;
        } else if (r == 0 || errno != EINTR) {
            srv_error(r == 0 ? -EIO : -errno);
            econn_close(l, c);
            return;
        }
    }
    c->got = c->put = 0;
    if (c->want_out)
        econn_want(l, c, EPOLLIN);
    c->want_out = 0;
}

/* Ends dealing: no more connections will be dealt to any loop. Only loop 0. */
static void eloop_end_dealing(void)
{
    epoll_ctl(el.loop[0].ep, EPOLL_CTL_DEL, srv.lfd, NULL);
    atomic_store_explicit(&el.dealt_all, 1, memory_order_release);   /* publishes every loop's dealt; pairs with eloop_run */
    uint64_t one = 1;
    if (write(el.stopfd, &one, sizeof one) != (ssize_t)sizeof one)
        serve_die("writing the epoll loops' eventfd", errno);
}

/* Accepts every pending connection and deals each to the next loop. Only loop 0. */
static void eloop_accept(void)
{
    for (;;) {
        int fd = accept4(srv.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && errno == EAGAIN)
            return;
        if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
            continue;
        if (fd < 0) {
            srv_error(-errno);
            eloop_end_dealing();
            return;
        }
        if (!admit(fd)) {
            close(fd);
            eloop_end_dealing();
            return;
        }
        eloop *l = &el.loop[el.next];
        el.next = (el.next + 1) % el.n;
        econn *c = calloc(1, sizeof *c);
        if (!c) {
            srv_error(-ENOMEM);
            close(fd);
            continue;
        }
        c->fd = fd;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            srv_error(-errno);
            close(fd);
            free(c);
            continue;
        }
        l->dealt++;
    }
}

static void *eloop_run(void *arg)
{
    eloop *l = arg;
    struct epoll_event ev[256];
    int stopping = 0;
    while (!stopping || l->closed < l->dealt) {
        int m = epoll_wait(l->ep, ev, 256, -1);
        if (m < 0 && errno == EINTR)
            continue;
        if (m < 0)
            serve_die("epoll_wait in the epoll loop server", errno);
        for (int i = 0; i < m; i++) {
            void *p = ev[i].data.ptr;
            if (p == &el_listen_mark) {
                eloop_accept();
            } else if (p == &el_stop_mark) {
                if (atomic_load_explicit(&el.dealt_all, memory_order_acquire)) {   /* pairs with eloop_end_dealing */
                    stopping = 1;
                    epoll_ctl(l->ep, EPOLL_CTL_DEL, el.stopfd, NULL);
                }
            } else {
                econn_serve(l, p);
            }
        }
    }
    return NULL;
}

static void eloop_add(int ep, int fd, const void *mark)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = (void *)mark };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        serve_die("epoll_ctl in the epoll loop server", errno);
}

/* Starts the loops on srv.lfd, a non-blocking listening socket. */
static void eloop_start(void)
{
    el.n = eloop_count();
    el.next = 0;
    atomic_store(&el.dealt_all, 0);
    el.loop = calloc((size_t)el.n, sizeof *el.loop);
    el.stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!el.loop || el.stopfd < 0)
        serve_die("starting the epoll loops", el.loop ? errno : ENOMEM);
    for (int i = 0; i < el.n; i++) {
        el.loop[i].ep = epoll_create1(EPOLL_CLOEXEC);
        if (el.loop[i].ep < 0)
            serve_die("epoll_create1 in the epoll loop server", errno);
        eloop_add(el.loop[i].ep, el.stopfd, &el_stop_mark);
    }
    eloop_add(el.loop[0].ep, srv.lfd, &el_listen_mark);
    for (int i = 0; i < el.n; i++)
        if (pthread_create(&el.loop[i].thread, NULL, eloop_run, &el.loop[i]) != 0)
            serve_die("starting an epoll loop thread", EAGAIN);
}

/* Waits for every loop to finish (the waking connection has been made). */
static void eloop_stop(void)
{
    for (int i = 0; i < el.n; i++) {
        pthread_join(el.loop[i].thread, NULL);
        close(el.loop[i].ep);
    }
    close(el.stopfd);
    free(el.loop);
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

/* serve_once's server argument for the two baselines; weft's servers are
 * named by their IO backend, WEFT_IO_URING or WEFT_IO_EPOLL. */
enum { SERVE_THREADS = 0, SERVE_EPOLL_LOOP = -1 };

/* The weft server's IO backend for each kind of run. */
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

/* One timed run against a server: weft's on the IO backend server names, or
 * the SERVE_EPOLL_LOOP or SERVE_THREADS baseline. */
static serve_fig serve_once(int server, int nconn)
{
    struct sockaddr_in addr;
    weft_rt *rt = NULL;
    weft_task *acceptor = NULL;
    pthread_t acceptor_thread, ct[SERVE_CLIENTS_MAX];
    int use_weft = server > 0;
    serve_name = server == SERVE_EPOLL_LOOP ? "epoll loop" : "pthreads";
    for (int i = 0; i < NKINDS; i++)
        if (kinds[i].backend == server)
            serve_name = kinds[i].name;
    srv.lfd = listen_loopback(server != SERVE_THREADS, nconn + 16, &addr);
    atomic_store(&srv.stop, 0);
    atomic_store(&srv.accepted, 0);
    atomic_store(&srv.err, 0);
    if (use_weft) {
        weft_config cfg = { .workers = opt.workers, .io_backend = server };
        check(weft_rt_create(&rt, &cfg), "weft_rt_create");
        check(weft_spawn_on(rt, &acceptor, accept_weft, NULL), "weft_spawn_on");
    } else if (server == SERVE_EPOLL_LOOP) {
        eloop_start();
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
    } else if (server == SERVE_EPOLL_LOOP) {
        eloop_stop();
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

/* The median of the n values of v, and their least and greatest. */
static double median(const double *v, int n, double *min, double *max)
{
    double s[64];
    for (int i = 0; i < n; i++) {       /* insertion sort: n is a handful of runs */
        int j = i;
        for (; j > 0 && s[j - 1] > v[i]; j--)
            s[j] = s[j - 1];
        s[j] = v[i];
    }
    *min = s[0];
    *max = s[n - 1];
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* "1.9x pthreads", or "0.557x pthreads (1.8x less)": the median of the
 * per-run ratios a[r] / b[r]. A ratio within rounding of 1 gets no "less". */
static void fmt_ratio(char *buf, size_t len, const double *a, const double *b, int n,
                      const char *whom)
{
    double q[64], lo, hi;
    for (int r = 0; r < n; r++)
        q[r] = a[r] / b[r];
    double m = median(q, n, &lo, &hi);
    if (1 / m >= 1.005)
        snprintf(buf, len, "%.3gx %s (%.3gx less)", m, whom, 1 / m);
    else
        snprintf(buf, len, "%.3gx %s", m, whom);
}

/*
 * Every server's throughput at n connections side by side, in the manner of
 * the table's rows: median (min..max) over the runs, each ratio the median of
 * the per-run ratios. rate[i][run]: weft on kinds[i] (where ok[i]), then the
 * epoll loop, then pthreads. The table takes two sides a row, so this is
 * printed as the workload ends, just above the table.
 */
static void print_side_by_side(int n, double (*rate)[64], const int *ok)
{
    const double *loop = rate[NKINDS], *pth = rate[NKINDS + 1];
    const char *names[NKINDS + 2];
    for (int i = 0; i < NKINDS; i++)
        names[i] = kinds[i].name;
    names[NKINDS] = "epoll loop";
    names[NKINDS + 1] = "pthreads";
    printf("\nLoopback TCP server, %d connections, every server side by side: throughput,\n"
           "  higher is better (k req/s as in the server rows of the table; median of %d\n"
           "  runs, (min..max) across runs; a ratio is the median of the per-run ratios)\n",
           n, opt.runs);
    for (int i = 0; i < NKINDS + 2; i++) {
        if (i < NKINDS && !ok[i])
            continue;
        double lo, hi, m = median(rate[i], opt.runs, &lo, &hi);
        char fig[64];
        snprintf(fig, sizeof fig, "%.1f (%.1f..%.1f)", m, lo, hi);
        printf("    %-15s  %-28s k req/s\n", names[i], fig);
    }
    for (int i = 0; i <= NKINDS; i++) {
        if (i < NKINDS && !ok[i])
            continue;
        char vs_eloop[64] = "", vs_pth[64];
        if (i < NKINDS) {
            fmt_ratio(vs_eloop, sizeof vs_eloop - 2, rate[i], loop, opt.runs, "the epoll loop");
            strcat(vs_eloop, ", ");
        }
        fmt_ratio(vs_pth, sizeof vs_pth, rate[i], pth, opt.runs, "pthreads");
        printf("    => %s reaches %s%s\n", names[i], vs_eloop, vs_pth);
    }
    fflush(stdout);
}

void bench_server(void)
{
    static const int sizes[] = { 100, 1000 };
    /* [size][server][figure]: weft's kinds, then the epoll loop (NKINDS) */
    static char what[2][NKINDS + 1][3][560];
    static char ids[2][NKINDS + 1][3][40];
    static const char *const fig[3] = { "rate", "p50", "p99" };
    /* [size][server][run]: throughput, for the side-by-side rows; weft's
     * kinds, then the epoll loop, then pthreads */
    static double rate[2][NKINDS + 2][64];
    int ok[NKINDS], done[2] = { 0, 0 };
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
        /* [server][figure][run]: weft's kinds, then the epoll loop; the
         * threads' server runs once a run, the baseline of every other row of
         * that run. */
        double w[NKINDS + 1][3][64], p[3][64];
        char label[64];
        snprintf(label, sizeof label, "server, %d connections", n);
        for (int r = 0; r < opt.runs; r++) {
            progress(label, r + 1, opt.runs);
            for (int b = 0; b <= NKINDS; b++) {
                if (b < NKINDS && !ok[b])
                    continue;
                serve_fig f = serve_once(b < NKINDS ? kinds[b].backend : SERVE_EPOLL_LOOP, n);
                w[b][0][r] = f.rate;
                w[b][1][r] = f.p50;
                w[b][2][r] = f.p99;
                rate[s][b][r] = f.rate;
            }
            serve_fig f = serve_once(SERVE_THREADS, n);
            p[0][r] = f.rate;
            p[1][r] = f.p50;
            p[2][r] = f.p99;
            rate[s][NKINDS + 1][r] = f.rate;
        }
        progress_done();
        done[s] = 1;
        for (int b = 0; b < NKINDS; b++) {
            if (!ok[b])
                continue;
            const char *backend = kinds[b].io;
            snprintf(what[s][b][0], sizeof what[s][b][0],
                     "Loopback TCP server, %d connections, weft on %s: throughput, higher is\n"
                     "  better (thousand 64-byte request/reply round trips per second, every\n"
                     "  reply checked; weft: a coroutine per connection on weft_read/weft_write,\n"
                     "  accept on weft_accept, .io_backend = %s; pthreads: a thread per\n"
                     "  connection, %d KiB stack, blocking read/write; the same client for all\n"
                     "  servers: %d threads on epoll, each connection in a closed loop for %.2f s)",
                     n, backend, kinds[b].macro, SERVE_STACK / 1024,
                     serve_clients, (double)opt.serve_ns / 1e9);
            snprintf(what[s][b][1], sizeof what[s][b][1],
                     "Loopback TCP server, %d connections, weft on %s: round-trip latency,\n"
                     "  median (p50) (as above, in the client from writing a request to reading\n"
                     "  its whole reply)", n, backend);
            snprintf(what[s][b][2], sizeof what[s][b][2],
                     "Loopback TCP server, %d connections, weft on %s: round-trip latency,\n"
                     "  99th percentile (p99)", n, backend);
        }
        snprintf(what[s][NKINDS][0], sizeof what[s][NKINDS][0],
                 "Loopback TCP server, %d connections, epoll loop: throughput, higher is\n"
                 "  better (thousand 64-byte request/reply round trips per second, every\n"
                 "  reply checked; epoll loop: %d threads, as many as weft's workers, each a\n"
                 "  level-triggered epoll loop over its share of the connections on\n"
                 "  non-blocking read/write; pthreads and the client as for weft)",
                 n, eloop_count());
        snprintf(what[s][NKINDS][1], sizeof what[s][NKINDS][1],
                 "Loopback TCP server, %d connections, epoll loop: round-trip latency,\n"
                 "  median (p50)", n);
        snprintf(what[s][NKINDS][2], sizeof what[s][NKINDS][2],
                 "Loopback TCP server, %d connections, epoll loop: round-trip latency,\n"
                 "  99th percentile (p99)", n);
        for (int b = 0; b <= NKINDS; b++) {
            if (b < NKINDS && !ok[b])
                continue;
            for (int k = 0; k < 3; k++) {
                snprintf(ids[s][b][k], sizeof ids[s][b][k], "server_%d_%s_%s", n, fig[k],
                         b < NKINDS ? kinds[b].id : "eloop");
                row *rw = add_row(ids[s][b][k], what[s][b][k], k ? "us" : "k req/s", w[b][k],
                                  p[k], opt.runs);
                rw->label = b < NKINDS ? kinds[b].name : "epoll loop";
                rw->higher = k == 0;
            }
        }
    }
    for (int s = 0; s < 2; s++)
        if (done[s])
            print_side_by_side(sizes[s], rate[s], ok);
}
