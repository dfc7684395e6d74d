/* SPDX-License-Identifier: MIT */
/*
 * chan: channel throughput. weft: weft_chan between coroutines, buffered
 * (capacity 128) and unbuffered; pthreads: threads on a bounded queue of one
 * mutex and condition variables, with 128 slots and as a rendezvous.
 * scale.c runs chan_weft_rate and chan_pthreads_rate at several worker counts.
 */
#include "bench.h"

#include <weft.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/*
 * P producers send the values 1..M between them and P consumers receive them
 * until the channel is closed and drained. The consumers' count, sum and sum of
 * squares must all match: a lost and a duplicated message would have to cancel
 * out in both sums to go unnoticed. The time includes starting and joining the
 * 2P tasks, which is small beside M messages.
 */
enum { CHAN_PAIRS = 4, CHAN_PAIRS_MAX = 16, CHAN_CAP = 128 };

static long chan_n;                  /* M of the current run */
static int  chan_pairs = CHAN_PAIRS;  /* P of the current run, at most CHAN_PAIRS_MAX */

static struct {
    _Atomic uint64_t n, sum, sq;   /* added by each consumer as it ends */
} seen;

static void seen_add(uint64_t n, uint64_t sum, uint64_t sq)
{
    atomic_fetch_add_explicit(&seen.n, n, memory_order_relaxed);   /* read after the joins */
    atomic_fetch_add_explicit(&seen.sum, sum, memory_order_relaxed);
    atomic_fetch_add_explicit(&seen.sq, sq, memory_order_relaxed);
}

static void seen_reset(void)
{
    atomic_store(&seen.n, 0);
    atomic_store(&seen.sum, 0);
    atomic_store(&seen.sq, 0);
}

/* Fails unless 1..chan_n each arrived exactly once. */
static void seen_check(const char *who)
{
    uint64_t m = (uint64_t)chan_n, sum = 0, sq = 0;
    for (uint64_t v = 1; v <= m; v++) {     /* the same wrap-around as the consumers' */
        sum += v;
        sq += v * v;
    }
    uint64_t n = atomic_load(&seen.n);
    if (n != m || atomic_load(&seen.sum) != sum || atomic_load(&seen.sq) != sq) {
        fail("%s: %llu messages received of %llu sent, or their sum is wrong (lost or "
             "duplicated messages)", who, (unsigned long long)n, (unsigned long long)m);
    }
}

/* Producer i's share of the values: lo+1 .. hi. */
static void share(long i, uint64_t *lo, uint64_t *hi)
{
    *lo = (uint64_t)(chan_n * i / chan_pairs);
    *hi = (uint64_t)(chan_n * (i + 1) / chan_pairs);
}

static weft_chan *chan_q;

static void *chan_producer(void *arg)
{
    uint64_t lo, hi;
    share((long)(intptr_t)arg, &lo, &hi);
    for (uint64_t v = lo + 1; v <= hi; v++)
        check(weft_chan_send(chan_q, &v), "weft_chan_send");
    return NULL;
}

static void *chan_consumer(void *arg)
{
    uint64_t v, n = 0, sum = 0, sq = 0;
    int rc;
    while ((rc = weft_chan_recv(chan_q, &v)) == 0) {
        n++;
        sum += v;
        sq += v * v;
    }
    if (rc != -EPIPE)
        check(rc, "weft_chan_recv");
    seen_add(n, sum, sq);
    return arg;
}

typedef struct {
    size_t cap;
    double rate;    /* out: million messages per second */
} chan_job;

static void *chan_root(void *arg)
{
    chan_job *job = arg;
    weft_task *prod[CHAN_PAIRS_MAX], *cons[CHAN_PAIRS_MAX];
    seen_reset();
    chan_n = opt.chan_msgs;
    check(weft_chan_create(&chan_q, sizeof(uint64_t), job->cap), "weft_chan_create");
    uint64_t t0 = now_ns();
    for (int i = 0; i < chan_pairs; i++)
        check(weft_spawn(&cons[i], chan_consumer, NULL), "weft_spawn");
    for (int i = 0; i < chan_pairs; i++)
        check(weft_spawn(&prod[i], chan_producer, (void *)(intptr_t)i), "weft_spawn");
    for (int i = 0; i < chan_pairs; i++)
        check(weft_join(prod[i], NULL), "weft_join");
    check(weft_chan_close(chan_q), "weft_chan_close");
    for (int i = 0; i < chan_pairs; i++)
        check(weft_join(cons[i], NULL), "weft_join");
    uint64_t t1 = now_ns();
    check(weft_chan_destroy(chan_q), "weft_chan_destroy");
    seen_check(job->cap ? "channel (weft, buffered)" : "channel (weft, unbuffered)");
    job->rate = (double)chan_n * 1e3 / (double)(t1 - t0);
    return NULL;
}

/*
 * The pthreads counterpart: a bounded FIFO of 8-byte values on one mutex and
 * two condition variables. cap 0 behaves as an unbuffered channel does: one
 * slot, and a send returns only once a receiver has taken its value. The
 * sender whose value sits in the slot waits on a third condition, taken, so
 * that a receiver wakes that one sender and not every sender there is.
 */
static struct {
    pthread_mutex_t m;
    pthread_cond_t  not_empty;   /* receivers wait here */
    pthread_cond_t  not_full;    /* senders wait here for a free slot */
    pthread_cond_t  taken;       /* cap 0: the one sender whose value is in the slot */
    uint64_t  slot[CHAN_CAP];
    size_t    cap, slots;        /* slots = cap, or 1 for cap 0 */
    size_t    head, count;       /* the rest under m */
    uint64_t  pushed, popped;    /* values ever put in, taken out */
    int       closed;
} bq = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
         PTHREAD_COND_INITIALIZER, { 0 }, 0, 0, 0, 0, 0, 0, 0 };

static void bq_send(uint64_t v)
{
    pthread_mutex_lock(&bq.m);
    while (bq.count == bq.slots)
        pthread_cond_wait(&bq.not_full, &bq.m);
    bq.slot[(bq.head + bq.count++) % bq.slots] = v;
    uint64_t ticket = ++bq.pushed;
    pthread_cond_signal(&bq.not_empty);
    if (bq.cap == 0)
        while (bq.popped < ticket)
            pthread_cond_wait(&bq.taken, &bq.m);
    pthread_mutex_unlock(&bq.m);
}

/* Returns 0 with a value, or -EPIPE once the queue is closed and empty. */
static int bq_recv(uint64_t *v)
{
    pthread_mutex_lock(&bq.m);
    while (bq.count == 0 && !bq.closed)
        pthread_cond_wait(&bq.not_empty, &bq.m);
    if (bq.count == 0) {
        pthread_mutex_unlock(&bq.m);
        return -EPIPE;
    }
    *v = bq.slot[bq.head];
    bq.head = (bq.head + 1) % bq.slots;
    bq.count--;
    bq.popped++;
    if (bq.cap == 0)
        pthread_cond_signal(&bq.taken);
    pthread_cond_signal(&bq.not_full);
    pthread_mutex_unlock(&bq.m);
    return 0;
}

static void bq_close(void)
{
    pthread_mutex_lock(&bq.m);
    bq.closed = 1;
    pthread_cond_broadcast(&bq.not_empty);
    pthread_mutex_unlock(&bq.m);
}

static void *bq_producer(void *arg)
{
    uint64_t lo, hi;
    share((long)(intptr_t)arg, &lo, &hi);
    for (uint64_t v = lo + 1; v <= hi; v++)
        bq_send(v);
    return NULL;
}

static void *bq_consumer(void *arg)
{
    uint64_t v, n = 0, sum = 0, sq = 0;
    while (bq_recv(&v) == 0) {
        n++;
        sum += v;
        sq += v * v;
    }
    seen_add(n, sum, sq);
    return arg;
}

/* Returns million messages per second. */
static double chan_pthreads(size_t cap)
{
    pthread_t prod[CHAN_PAIRS_MAX], cons[CHAN_PAIRS_MAX];
    seen_reset();
    chan_n = cap ? opt.chan_msgs : opt.chan_sync_pth;
    bq.cap = cap;
    bq.slots = cap ? cap : 1;
    bq.head = bq.count = 0;
    bq.pushed = bq.popped = 0;
    bq.closed = 0;
    uint64_t t0 = now_ns();
    for (int i = 0; i < chan_pairs; i++)
        start_thread(&cons[i], NULL, bq_consumer, NULL);
    for (int i = 0; i < chan_pairs; i++)
        start_thread(&prod[i], NULL, bq_producer, (void *)(intptr_t)i);
    for (int i = 0; i < chan_pairs; i++)
        pthread_join(prod[i], NULL);
    bq_close();
    for (int i = 0; i < chan_pairs; i++)
        pthread_join(cons[i], NULL);
    uint64_t t1 = now_ns();
    seen_check(cap ? "channel (pthreads, buffered)" : "channel (pthreads, unbuffered)");
    return (double)chan_n * 1e3 / (double)(t1 - t0);
}

/* weft's rate on a runtime of `workers` (0: every CPU), with `pairs`
 * producers and as many consumers, in million messages per second. */
double chan_weft_rate(unsigned workers, size_t cap, int pairs)
{
    weft_config cfg = { .workers = workers };
    chan_job job = { cap, 0 };
    chan_pairs = pairs;
    check(weft_main(&cfg, chan_root, &job, NULL), "weft_main");
    chan_pairs = CHAN_PAIRS;
    return job.rate;
}

double chan_pthreads_rate(size_t cap, int pairs)
{
    chan_pairs = pairs;
    double rate = chan_pthreads(cap);
    chan_pairs = CHAN_PAIRS;
    return rate;
}

void bench_chan(void)
{
    double wb[RUNS_MAX], pb[RUNS_MAX], wu[RUNS_MAX], pu[RUNS_MAX], w1[RUNS_MAX], p1[RUNS_MAX];
    for (int r = 0; r < opt.runs; r++) {
        progress_run(r + 1, opt.runs);
        progress_note("weft, buffered, %d to %d", CHAN_PAIRS, CHAN_PAIRS);
        wb[r] = chan_weft_rate(opt.workers, CHAN_CAP, CHAN_PAIRS);
        progress_note("pthreads, buffered, %d to %d", CHAN_PAIRS, CHAN_PAIRS);
        pb[r] = chan_pthreads_rate(CHAN_CAP, CHAN_PAIRS);
        progress_note("weft, unbuffered");
        wu[r] = chan_weft_rate(opt.workers, 0, CHAN_PAIRS);
        progress_note("pthreads, unbuffered");
        pu[r] = chan_pthreads_rate(0, CHAN_PAIRS);
        progress_note("weft, buffered, 1 to 1");
        w1[r] = chan_weft_rate(opt.workers, CHAN_CAP, 1);
        progress_note("pthreads, buffered, 1 to 1");
        p1[r] = chan_pthreads_rate(CHAN_CAP, 1);
    }
    static char d_buf[360], d_unbuf[300], d_one[80], m_buf[64], m_unbuf[64];
    snprintf(d_buf, sizeof d_buf,
             "million 8-byte messages per second; %d producers send %ld values, %d consumers "
             "receive each exactly once, checked; weft: weft_chan of capacity %d between "
             "coroutines; pthreads: threads on a bounded queue of %d, one mutex and two condvars",
             CHAN_PAIRS, opt.chan_msgs, CHAN_PAIRS, CHAN_CAP, CHAN_CAP);
    snprintf(d_unbuf, sizeof d_unbuf,
             "as chan_buffered, but a send returns once a receiver has the value; weft: "
             "weft_chan of capacity 0, %ld values; pthreads: the same queue with one slot, the "
             "sender waiting until its value is taken, %ld values",
             opt.chan_msgs, opt.chan_sync_pth);
    snprintf(d_one, sizeof d_one, "as chan_buffered, with 1 producer and 1 consumer");
    snprintf(m_buf, sizeof m_buf, "buffered (%d), %d to %d tasks", CHAN_CAP, CHAN_PAIRS,
             CHAN_PAIRS);
    snprintf(m_unbuf, sizeof m_unbuf, "unbuffered, %d to %d tasks", CHAN_PAIRS, CHAN_PAIRS);
    add_row("chan", "chan_buffered", m_buf, "M msg/s", MORE, wb, pb, opt.runs)->detail = d_buf;
    add_row("chan", "chan_unbuffered", m_unbuf, "M msg/s", MORE, wu, pu, opt.runs)->detail =
        d_unbuf;
    add_row("chan", "chan_buffered_1to1", "buffered, 1 producer to 1 consumer", "M msg/s",
            MORE, w1, p1, opt.runs)->detail = d_one;
    chart_group("chan.svg", "Channel throughput", "chan");
}
