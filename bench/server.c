/* SPDX-License-Identifier: MIT */
/*
 * server: a loopback TCP echo server, the same request/response server
 * written with weft coroutines, as a hand-written epoll loop per core and with
 * a thread per connection, under the same load from one client built on plain
 * threads and epoll. scale.c runs serve_once at several worker counts.
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
#include <stdbool.h>
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
 *
 * WEFT_BENCH_OWN=1 has weft's handlers hand their connection to weft
 * (weft_own) first: `bench/ab.sh build-rel 10 "" "WEFT_BENCH_OWN=1" server`.
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

/* WEFT_BENCH_OWN=1: weft's handlers hand their connection to weft
 * (weft_own) before they serve it, for bench/ab.sh to compare. */
static bool own_conns;

static void srv_error(int err)
{
    int none = 0;
    atomic_compare_exchange_strong(&srv.err, &none, err);
}

static const char *serve_name;   /* "weft (io_uring)", "pthreads", ..., for messages */

/* A failure that stops the run (the server hangs, a connection breaks). */
static void serve_die(const char *what, int err)
{
    progress_clear();
    fprintf(stderr, "weft-bench: FAILED: server (%s): %s%s%s\n", serve_name, what,
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

/* Answers requests on fd until the client goes. The same code for both
 * servers; only the calls differ. */
static void echo(int fd, read_fn rd, write_fn wr)
{
    unsigned char buf[MSG];
    int rc;
    while ((rc = read_request(fd, buf, rd)) == 1 && (rc = write_reply(fd, buf, wr)) == 1)
        ;
    if (rc < 0)
        srv_error(rc);
}

static void *echo_weft(void *arg)
{
    int fd = (int)(intptr_t)arg;
    if (own_conns) {
        int rc = weft_own(fd);
        if (rc < 0)
            srv_error(rc);
    }
    echo(fd, weft_read, weft_write);
    weft_close(fd);   /* the only close an owned descriptor may have */
    return NULL;
}

static void *echo_thread(void *arg)
{
    int fd = (int)(intptr_t)arg;
    echo(fd, sys_read, sys_write);
    close(fd);
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

static unsigned serve_workers;   /* weft's workers in the current run; 0: every CPU */

/* The epoll loop server's threads: as many as weft's workers. */
static int eloop_count(void)
{
    return serve_workers ? (int)serve_workers : ncpus();
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
    for (int i = 0; i < el.n; i++) {
        if (pthread_create(&el.loop[i].thread, NULL, eloop_run, &el.loop[i]) != 0)
            serve_die("starting an epoll loop thread", EAGAIN);
        pthread_setname_np(el.loop[i].thread, "bench-eloop");
    }
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

/* The weft server's IO backend for each kind of run. */
static const struct {
    int backend;
    const char *name;     /* the server's name in messages, rows and charts */
    const char *io;       /* the backend's */
} kinds[] = {
    { WEFT_IO_URING, "weft (io_uring)", "io_uring" },
    { WEFT_IO_EPOLL, "weft (epoll)", "epoll" },
};
enum { NKINDS = sizeof kinds / sizeof kinds[0] };

/* One timed run against a server: weft's on the IO backend server names, or
 * the SERVE_EPOLL_LOOP or SERVE_THREADS baseline; weft and the epoll loop on
 * `workers` threads (0: every CPU). After serve_setup. */
serve_fig serve_once(int server, int nconn, unsigned workers)
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
    serve_workers = workers;
    srv.lfd = listen_loopback(server != SERVE_THREADS, nconn + 16, &addr);
    atomic_store(&srv.stop, 0);
    atomic_store(&srv.accepted, 0);
    atomic_store(&srv.err, 0);
    if (use_weft) {
        weft_config cfg = { .workers = workers, .io_backend = server };
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
        pthread_setname_np(ct[j], "bench-client");
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
    if (bad)
        fail("server (%s, %d connections): %ld replies differed from their request",
             serve_name, nconn, bad);
    if (atomic_load(&srv.err))
        fail("server (%s, %d connections): a handler failed: %s", serve_name, nconn,
             strerror(-atomic_load(&srv.err)));
    if (atomic_load(&srv.accepted) != nconn + 1)
        fail("server (%s): %ld connections accepted, expected %d", serve_name,
             atomic_load(&srv.accepted), nconn + 1);
    if (done == 0 || end == t0) {
        fail("server (%s): no round trip completed", serve_name);
        return (serve_fig){ 0, 0, 0 };
    }
    return (serve_fig){ (double)done * 1e6 / (double)(end - t0),
                        hist_percentile(hist, (uint64_t)done, 0.50) / 1e3,
                        hist_percentile(hist, (uint64_t)done, 0.99) / 1e3 };
}

void serve_setup(void)
{
    serve_clients = ncpus() / 2;
    if (serve_clients < 2)
        serve_clients = 2;
    if (serve_clients > SERVE_CLIENTS_MAX)
        serve_clients = SERVE_CLIENTS_MAX;
    /* A reply written to a connection the client has reset gives EPIPE, not death. */
    signal(SIGPIPE, SIG_IGN);
    const char *own = getenv("WEFT_BENCH_OWN");
    own_conns = own && strcmp(own, "1") == 0;
}

/* 1 when a runtime on this IO backend can be created here. */
int serve_backend_works(int backend)
{
    weft_rt *rt;
    weft_config cfg = { .workers = 1, .io_backend = backend };
    if (weft_rt_create(&rt, &cfg) < 0)
        return 0;
    check(weft_rt_destroy(rt), "weft_rt_destroy");
    return 1;
}

enum { SIZES = 2, FIGS = 3 };
static const int sizes[SIZES] = { 100, 1000 };

/* [size][server][figure][run]: weft on each of kinds, then the epoll loop
 * (NKINDS), then pthreads (NKINDS + 1). */
static double fig[SIZES][NKINDS + 2][FIGS][RUNS_MAX];
static const char *const server_label[NKINDS + 2] = {
    "weft (io_uring)", "weft (epoll)", "epoll loop", "pthreads",
};
static const int server_color[NKINDS + 2] = { COLOR_WEFT, COLOR_ALT, COLOR_REF, COLOR_PTHREADS };

static void server_detail(char *buf, size_t len)
{
    snprintf(buf, len,
             "thousand 64-byte request/reply round trips per second and their latency in "
             "the client, every reply checked; weft: a coroutine per connection on "
             "weft_read/weft_write, accept on weft_accept, on the IO backend named; "
             "pthreads: a thread per connection, %d KiB stack, blocking read/write; epoll "
             "loop: %d threads, as many as weft's workers, each a level-triggered epoll "
             "loop over its share of the connections; the same client for all: %d threads "
             "on epoll, each connection in a closed loop for %.2f s",
             SERVE_STACK / 1024, eloop_count(), serve_clients, (double)opt.serve_ns / 1e9);
}

/* The rows of one size: weft on each backend against pthreads (throughput,
 * p50, p99), then against the epoll loop; the loop against pthreads goes to
 * the CSV only, as it is not weft. */
static void server_rows(int s, const int *ok)
{
    static char measure[SIZES][NKINDS + 1][FIGS][2][64], ids[SIZES][NKINDS + 1][FIGS][2][48];
    static char detail[600];
    static const char *const fig_id[FIGS] = { "rate", "p50", "p99" };
    static const char *const fig_name[FIGS] = { "", ", p50", ", p99" };
    static const char *const io_id[NKINDS + 1] = { "uring", "epoll", "eloop" };
    static const char *const io_name[NKINDS + 1] = { "io_uring", "epoll", "the epoll loop" };
    char conns[32];
    server_detail(detail, sizeof detail);
    grouped(conns, sizeof conns, sizes[s]);
    for (int vs = 0; vs < 2; vs++)
        for (int b = 0; b <= NKINDS; b++) {
            if ((b < NKINDS && !ok[b]) || (vs && b == NKINDS))
                continue;
            for (int k = 0; k < FIGS; k++) {
                char *m = measure[s][b][k][vs], *id = ids[s][b][k][vs];
                if (vs)
                    snprintf(m, 64, "%s conns, %s vs epoll loop%s", conns, io_name[b], fig_name[k]);
                else
                    snprintf(m, 64, "%s conns on %s%s", conns, io_name[b], fig_name[k]);
                snprintf(id, 48, "server_%d_%s_%s%s", sizes[s], fig_id[k], io_id[b],
                         vs ? "_vs_eloop" : "");
                row *r = add_row("server", id, m, k ? "us" : "k req/s", k ? LOWER : MORE,
                                 fig[s][b][k], fig[s][vs ? NKINDS : NKINDS + 1][k], opt.runs);
                r->detail = detail;
                r->label = server_label[b];
                if (vs)
                    r->other = "epoll loop";
                r->in_table = b < NKINDS && k != 1;
            }
        }
}

/* server-throughput.svg and server-latency.svg: every server side by side. */
static void server_charts(const int *ok, const int *done)
{
    panel rate[SIZES], lat[SIZES * 2];
    int nr = 0, nl = 0;
    for (int s = 0; s < SIZES; s++) {
        if (!done[s])
            continue;
        panel *pr = &rate[nr++];
        *pr = (panel){ .unit = "k req/s", .higher = 1 };
        snprintf(pr->title, sizeof pr->title, "%d connections: throughput", sizes[s]);
        for (int k = 1; k < FIGS; k++) {
            panel *pl = &lat[nl++];
            *pl = (panel){ .unit = "us" };
            snprintf(pl->title, sizeof pl->title, "%d connections: round-trip latency, %s",
                     sizes[s], k == 1 ? "median" : "99th percentile");
        }
        for (int b = 0; b < NKINDS + 2; b++) {
            if (b < NKINDS && !ok[b])
                continue;
            pr->bars[pr->n++] = (bar){ server_label[b], summarize(fig[s][b][0], opt.runs),
                                       server_color[b] };
            for (int k = 1; k < FIGS; k++) {
                panel *pl = &lat[nl - 2 + k - 1];
                pl->bars[pl->n++] = (bar){ server_label[b], summarize(fig[s][b][k], opt.runs),
                                           server_color[b] };
            }
        }
    }
    if (nr) {
        chart_panels("server-throughput.svg", "Loopback echo server: throughput", rate, nr);
        chart_panels("server-latency.svg", "Loopback echo server: latency", lat, nl);
    }
}

void bench_server(void)
{
    int ok[NKINDS], done[SIZES] = { 0 };
    long nofile = raise_nofile();
    serve_setup();
    for (int b = 0; b < NKINDS; b++)
        if (!(ok[b] = serve_backend_works(kinds[b].backend)))
            add_note("server: no rows for weft on %s: a runtime on it could not be created here",
                     kinds[b].io);
    for (int s = 0; s < SIZES; s++) {
        int n = sizes[s];
        long need = 2L * n + 64;
        if (nofile < need) {
            add_note("server: %d connections skipped: they need about %ld descriptors, "
                     "RLIMIT_NOFILE allows %ld", n, need, nofile);
            continue;
        }
        for (int r = 0; r < opt.runs; r++) {
            progress_run(r + 1, opt.runs);
            for (int b = 0; b < NKINDS + 2; b++) {
                if (b < NKINDS && !ok[b])
                    continue;
                int server = b < NKINDS ? kinds[b].backend
                           : b == NKINDS ? SERVE_EPOLL_LOOP : SERVE_THREADS;
                progress_note("%d connections, %s", n, server_label[b]);
                serve_fig f = serve_once(server, n, opt.workers);
                fig[s][b][0][r] = f.rate;
                fig[s][b][1][r] = f.p50;
                fig[s][b][2][r] = f.p99;
            }
        }
        done[s] = 1;
        server_rows(s, ok);
    }
    server_charts(ok, done);
}
