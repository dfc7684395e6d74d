/* SPDX-License-Identifier: MIT */
/*
 * mixed: the case weft is made for. Thousands of tasks wait on IO, each
 * blocked reading its own pipe, while one task per worker computes without
 * end. weft: the waiters are coroutines in weft_read and the computing tasks
 * coroutines that call weft_yield between chunks of work, as a cooperative
 * compute loop must so that the waiters on its worker get to run; pthreads:
 * a thread per waiter in a blocking read (64 KiB stacks) and a compute thread
 * per CPU, preempted by the kernel.
 *
 * A driver thread, outside both, writes a message into one pipe after another
 * at a steady pace, the pipe chosen from the message's number; the message
 * carries the time it was written. Its waiter wakes, reads it, records how
 * long the wake-up took and waits again. Two figures: the compute throughput
 * (chunks of work finished per second by all computing tasks together) and
 * the wake-up latency (from the write to the waiter reading the message).
 *
 * Checks: every message reaches the waiter of its own pipe, once; the waiters
 * together receive exactly what was sent; every computing task finished some
 * chunks.
 */
#include "bench.h"

#include <weft.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIXED_PERIOD_NS 200000u   /* one message every this often */
enum { MIXED_CHUNK = 20000,       /* steps of work() between two yields */
       MIXED_STACK = 64 * 1024,   /* the waiter threads' stacks */
       COMPUTE_MAX = 256 };

typedef struct { uint64_t seq, sent; } message;

/* The run in progress. */
static struct {
    int       *rfd, *wfd;          /* pipe i: read end, write end */
    long       n;                  /* waiters, one per pipe */
    int64_t   *lat;                /* ns, by message number; -1 until received */
    long       max_msgs;           /* room in lat */
    long       sent;               /* messages the driver wrote; the driver's */
    atomic_long received;          /* messages read by all waiters */
    atomic_long misrouted;         /* messages read from another pipe than theirs */
    atomic_long duplicated;        /* messages read twice */
    atomic_long ready;             /* waiters that have started */
    atomic_int  stop;              /* the computing tasks end */
    int         ncompute;
    struct {
        _Alignas(64) atomic_long chunks;   /* written by its task, read by the driver */
    } compute[COMPUTE_MAX];
    atomic_int on_worker[COMPUTE_MAX];     /* weft: 1 once worker i has run a chunk */
} mx;

static volatile uint64_t mixed_sink;   /* keeps the compute kernel's results alive */

/* The pipe that message seq goes to. */
static long pipe_of(uint64_t seq)
{
    return (long)(work(seq, 2) % (uint64_t)mx.n);
}

/* A waiter got message m from pipe i, at now. */
static void received(long i, const message *m, uint64_t now)
{
    if (m->seq >= (uint64_t)mx.max_msgs || pipe_of(m->seq) != i) {
        atomic_fetch_add_explicit(&mx.misrouted, 1, memory_order_relaxed);   /* read after the joins */
        return;
    }
    if (mx.lat[m->seq] != -1)
        atomic_fetch_add_explicit(&mx.duplicated, 1, memory_order_relaxed);
    mx.lat[m->seq] = (int64_t)(now - m->sent);
    atomic_fetch_add_explicit(&mx.received, 1, memory_order_relaxed);
}

/* Reads one whole message with rd; 1, 0 at end of file, or a negative errno. */
static int read_message(int fd, message *m, ssize_t (*rd)(int, void *, size_t))
{
    size_t got = 0;
    while (got < sizeof *m) {
        ssize_t r = rd(fd, (char *)m + got, sizeof *m - got);
        if (r == 0 && got == 0)
            return 0;
        if (r <= 0)
            return r == 0 ? -EPROTO : (int)r;
        got += (size_t)r;
    }
    return 1;
}

static ssize_t sys_read(int fd, void *buf, size_t len)
{
    ssize_t r;
    while ((r = read(fd, buf, len)) < 0 && errno == EINTR)
        ;
    return r < 0 ? -errno : r;
}

static void waiter(long i, ssize_t (*rd)(int, void *, size_t))
{
    message m;
    int rc;
    atomic_fetch_add_explicit(&mx.ready, 1, memory_order_relaxed);
    while ((rc = read_message(mx.rfd[i], &m, rd)) == 1)
        received(i, &m, now_ns());
    if (rc < 0)
        check(rc, "mixed: reading a pipe");
}

static void *waiter_weft(void *arg)
{
    waiter((long)(intptr_t)arg, weft_read);
    return NULL;
}

static void *waiter_thread(void *arg)
{
    waiter((long)(intptr_t)arg, sys_read);
    return NULL;
}

/* Chunks of work until stopped; weft's coroutines yield after each. */
static void compute(long k, int yield)
{
    uint64_t x = 0;
    for (uint64_t c = 0; !atomic_load_explicit(&mx.stop, memory_order_relaxed); c++) {
        x ^= work((uint64_t)k << 32 | c, MIXED_CHUNK);
        atomic_fetch_add_explicit(&mx.compute[k].chunks, 1, memory_order_relaxed);   /* a count the driver samples */
        if (yield) {
            int w = weft_worker();
            if (w >= 0 && w < COMPUTE_MAX && !atomic_load_explicit(&mx.on_worker[w], memory_order_relaxed))
                atomic_store_explicit(&mx.on_worker[w], 1, memory_order_relaxed);   /* read after the runtime ends */
            weft_yield();
        }
    }
    mixed_sink ^= x;
}

static void *compute_weft(void *arg)
{
    compute((long)(intptr_t)arg, 1);
    return NULL;
}

static void *compute_thread(void *arg)
{
    compute((long)(intptr_t)arg, 0);
    return NULL;
}

static long chunks_now(void)
{
    long sum = 0;
    for (int k = 0; k < mx.ncompute; k++)
        sum += atomic_load_explicit(&mx.compute[k].chunks, memory_order_relaxed);
    return sum;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = { (time_t)(t / 1000000000u), (long)(t % 1000000000u) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

typedef struct { double rate, p50, p99; } mixed_fig;   /* k chunks/s, us, us */

/*
 * The driver, on the calling thread, once the waiters of one side have been
 * started: waits until every waiter runs, starts the computing tasks, then
 * sends a message every MIXED_PERIOD_NS for opt.mixed_ns; then stops the
 * computing tasks and closes the pipes' write ends, which ends the waiters.
 */
static mixed_fig drive(const char *who, void (*start_compute)(void))
{
    while (atomic_load_explicit(&mx.ready, memory_order_relaxed) < mx.n) {
        progress_tick("%s, %ld of %ld waiters started", who,
                      atomic_load_explicit(&mx.ready, memory_order_relaxed), mx.n);
        usleep(1000);
    }
    start_compute();
    usleep(20000);   /* the last waiters reach their read, the computing tasks run */
    uint64_t t0 = now_ns(), next = t0, end = t0 + opt.mixed_ns;
    long c0 = chunks_now(), sent = 0;
    while (next < end && sent < mx.max_msgs) {
        sleep_until(next);
        message m = { (uint64_t)sent, now_ns() };
        if (write(mx.wfd[pipe_of(m.seq)], &m, sizeof m) != (ssize_t)sizeof m) {
            progress_clear();
            fprintf(stderr, "weft-bench: mixed: writing a pipe: %s\n", strerror(errno));
            exit(1);
        }
        sent++;
        next += MIXED_PERIOD_NS;
        progress_tick("%s, %ld waiters, %d computing: %ld messages sent", who, mx.n,
                      mx.ncompute, sent);
    }
    uint64_t t1 = now_ns();
    long c1 = chunks_now();
    atomic_store_explicit(&mx.stop, 1, memory_order_relaxed);
    for (long i = 0; i < mx.n; i++)
        close(mx.wfd[i]);
    progress_note("%s, waiting for %ld waiters to end", who, mx.n);
    mx.sent = sent;
    return (mixed_fig){ (double)(c1 - c0) * 1e6 / (double)(t1 - t0), 0, 0 };
}

/* After a side has ended: the checks, and the latency percentiles. */
static void summarize_side(const char *who, mixed_fig *f)
{
    long sent = mx.sent, got = atomic_load(&mx.received);
    if (got != sent || atomic_load(&mx.misrouted) || atomic_load(&mx.duplicated))
        fail("mixed (%s): %ld of %ld messages received, %ld from a wrong pipe, %ld twice",
             who, got, sent, atomic_load(&mx.misrouted), atomic_load(&mx.duplicated));
    for (int k = 0; k < mx.ncompute; k++)
        if (atomic_load(&mx.compute[k].chunks) == 0)
            fail("mixed (%s): computing task %d finished no chunk of work", who, k);
    if (sent == 0) {
        fail("mixed (%s): no message was sent", who);
        return;
    }
    sort_samples(mx.lat, sent);
    f->p50 = (double)sample_at(mx.lat, sent, 0.50) / 1e3;
    f->p99 = (double)sample_at(mx.lat, sent, 0.99) / 1e3;
}

/* Fresh pipes and counters for one side. */
static void side_begin(long max_msgs)
{
    for (long i = 0; i < mx.n; i++) {
        int fd[2];
        if (pipe2(fd, O_CLOEXEC) != 0) {
            progress_clear();
            fprintf(stderr, "weft-bench: mixed: pipe: %s\n", strerror(errno));
            exit(1);
        }
        mx.rfd[i] = fd[0];
        mx.wfd[i] = fd[1];
    }
    mx.max_msgs = max_msgs;
    mx.sent = 0;
    for (long s = 0; s < max_msgs; s++)
        mx.lat[s] = -1;
    atomic_store(&mx.received, 0);
    atomic_store(&mx.misrouted, 0);
    atomic_store(&mx.duplicated, 0);
    atomic_store(&mx.ready, 0);
    atomic_store(&mx.stop, 0);
    for (int k = 0; k < mx.ncompute; k++)
        atomic_store(&mx.compute[k].chunks, 0);
    for (int k = 0; k < COMPUTE_MAX; k++)
        atomic_store(&mx.on_worker[k], 0);
}

static void side_end(void)
{
    for (long i = 0; i < mx.n; i++)
        close(mx.rfd[i]);
}

static weft_rt *mixed_rt;
static int weft_used_min;   /* the fewest workers weft's computing coroutines ran on in a run */

static void start_compute_weft(void)
{
    for (int k = 0; k < mx.ncompute; k++)
        check(weft_spawn_on(mixed_rt, NULL, compute_weft, (void *)(intptr_t)k), "weft_spawn_on");
}

static pthread_t compute_threads[COMPUTE_MAX];

static void start_compute_threads(void)
{
    for (int k = 0; k < mx.ncompute; k++)
        start_thread(&compute_threads[k], NULL, compute_thread, (void *)(intptr_t)k);
}

static mixed_fig side_weft(long max_msgs)
{
    weft_rt *rt;
    weft_config cfg = { .workers = opt.workers };
    side_begin(max_msgs);
    check(weft_rt_create(&rt, &cfg), "weft_rt_create");
    mixed_rt = rt;
    for (long i = 0; i < mx.n; i++)
        check(weft_spawn_on(rt, NULL, waiter_weft, (void *)(intptr_t)i), "weft_spawn_on");
    mixed_fig f = drive("weft", start_compute_weft);
    check(weft_rt_destroy(rt), "weft_rt_destroy");   /* waits for every coroutine */
    int used = 0;
    for (int k = 0; k < COMPUTE_MAX; k++)
        used += atomic_load(&mx.on_worker[k]);
    if (used < weft_used_min)
        weft_used_min = used;
    side_end();
    summarize_side("weft", &f);
    return f;
}

static mixed_fig side_threads(long max_msgs)
{
    pthread_t *w = malloc((size_t)mx.n * sizeof *w);
    pthread_attr_t attr;
    if (!w) {
        fprintf(stderr, "weft-bench: mixed: out of memory\n");
        exit(1);
    }
    side_begin(max_msgs);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, MIXED_STACK);
    for (long i = 0; i < mx.n; i++)
        start_thread(&w[i], &attr, waiter_thread, (void *)(intptr_t)i);
    mixed_fig f = drive("pthreads", start_compute_threads);
    for (long i = 0; i < mx.n; i++)
        pthread_join(w[i], NULL);
    for (int k = 0; k < mx.ncompute; k++)
        pthread_join(compute_threads[k], NULL);
    pthread_attr_destroy(&attr);
    free(w);
    side_end();
    summarize_side("pthreads", &f);
    return f;
}

void bench_mixed(void)
{
    long nofile = raise_nofile();
    mx.n = opt.mixed_waiters;
    if (2 * mx.n + 256 > nofile) {
        mx.n = (nofile - 256) / 2;
        add_note("mixed: %ld waiters instead of %ld: RLIMIT_NOFILE allows %ld descriptors",
                 mx.n, opt.mixed_waiters, nofile);
    }
    if (mx.n < 1) {
        add_note("mixed: skipped: RLIMIT_NOFILE allows too few descriptors");
        return;
    }
    mx.ncompute = (int)workers();
    if (mx.ncompute > COMPUTE_MAX)
        mx.ncompute = COMPUTE_MAX;
    long max_msgs = (long)(opt.mixed_ns / MIXED_PERIOD_NS) + 1;
    mx.rfd = malloc((size_t)mx.n * sizeof *mx.rfd);
    mx.wfd = malloc((size_t)mx.n * sizeof *mx.wfd);
    mx.lat = malloc((size_t)max_msgs * sizeof *mx.lat);
    if (!mx.rfd || !mx.wfd || !mx.lat) {
        fprintf(stderr, "weft-bench: mixed: out of memory\n");
        exit(1);
    }
    weft_used_min = COMPUTE_MAX;
    double wr[RUNS_MAX], w50[RUNS_MAX], w99[RUNS_MAX], pr[RUNS_MAX], p50[RUNS_MAX], p99[RUNS_MAX];
    for (int r = 0; r < opt.runs; r++) {
        progress_run(r + 1, opt.runs);
        mixed_fig w = side_weft(max_msgs);
        mixed_fig p = side_threads(max_msgs);
        wr[r] = w.rate, w50[r] = w.p50, w99[r] = w.p99;
        pr[r] = p.rate, p50[r] = p.p50, p99[r] = p.p99;
    }
    free(mx.rfd);
    free(mx.wfd);
    free(mx.lat);

    static char detail[600], m_rate[64], m_p50[64], m_p99[64];
    char n[32];
    grouped(n, sizeof n, mx.n);
    snprintf(detail, sizeof detail,
             "%s tasks each blocked reading its own pipe while %d tasks compute; a driver "
             "thread writes a timestamped message into one pipe every %u us for %.2f s; "
             "weft: waiters in weft_read, computing coroutines calling weft_yield every %d "
             "steps of the compute kernel; pthreads: a thread per waiter in read(), %d KiB "
             "stacks, and %d compute threads; compute throughput in thousand chunks of %d "
             "steps per second, all computing tasks together; latency from the write to the "
             "waiter reading the message; every message checked to arrive once, at its own pipe",
             n, mx.ncompute, MIXED_PERIOD_NS / 1000, (double)opt.mixed_ns / 1e9, MIXED_CHUNK,
             MIXED_STACK / 1024, mx.ncompute, MIXED_CHUNK);
    snprintf(m_rate, sizeof m_rate, "compute beside %s IO waiters", n);
    snprintf(m_p50, sizeof m_p50, "IO wake-up beside compute, median");
    snprintf(m_p99, sizeof m_p99, "IO wake-up beside compute, p99");
    if (weft_used_min < mx.ncompute)
        add_note("mixed: in a run, weft's %d computing coroutines ran on only %d of its %d "
                 "workers", mx.ncompute, weft_used_min, mx.ncompute);
    add_row("mixed", "mixed_compute", m_rate, "k chunk/s", MORE, wr, pr, opt.runs)->detail = detail;
    add_row("mixed", "mixed_wakeup_p50", m_p50, "us", LOWER, w50, p50, opt.runs)->detail = detail;
    add_row("mixed", "mixed_wakeup_p99", m_p99, "us", LOWER, w99, p99, opt.runs)->detail = detail;
    chart_group("mixed.svg", "Thousands of tasks waiting on IO while others compute", "mixed");
}
