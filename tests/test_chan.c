/* SPDX-License-Identifier: MIT */
/* Channels and select: delivery exactly once and in order, close and destroy
 * while others wait, plain threads meeting coroutines, and fair selection. */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRODUCERS 8
#define CONSUMERS 8

/* A message names its producer and its place in that producer's sequence. */
struct msg { uint32_t producer; uint32_t seq; };

struct mpmc {
    weft_chan  *ch;
    weft_wg     producers_done, consumers_done;
    size_t      per_producer;
    _Atomic uint32_t next_id;
    uint8_t    *seen[PRODUCERS];     /* seen[p][seq]: delivered how many times */
    _Atomic int bad_order;
};

static void *produce(void *arg)
{
    struct mpmc *x = arg;
    uint32_t p = atomic_fetch_add(&x->next_id, 1);
    for (uint32_t s = 0; s < x->per_producer; s++) {
        struct msg m = { p, s };
        if (weft_chan_send(x->ch, &m) != 0)
            atomic_store(&x->bad_order, 1);
    }
    weft_wg_done(&x->producers_done);
    return NULL;
}

static void *consume(void *arg)
{
    struct mpmc *x = arg;
    int64_t last[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++)
        last[i] = -1;
    struct msg m;
    while (weft_chan_recv(x->ch, &m) == 0) {
        if (m.producer >= PRODUCERS || (int64_t)m.seq <= last[m.producer]) {
            atomic_store(&x->bad_order, 1);   /* one consumer must see each producer in order */
            continue;
        }
        last[m.producer] = m.seq;
        x->seen[m.producer][m.seq]++;
    }
    weft_wg_done(&x->consumers_done);
    return NULL;
}

static void *closer(void *arg)
{
    struct mpmc *x = arg;
    weft_wg_wait(&x->producers_done);
    weft_chan_close(x->ch);
    return NULL;
}

static void *mpmc_run(void *arg)
{
    struct mpmc *x = arg;
    weft_wg_add(&x->producers_done, PRODUCERS);
    weft_wg_add(&x->consumers_done, CONSUMERS);
    for (int i = 0; i < CONSUMERS; i++)
        weft_spawn(NULL, consume, x);
    for (int i = 0; i < PRODUCERS; i++)
        weft_spawn(NULL, produce, x);
    weft_spawn(NULL, closer, x);
    weft_wg_wait(&x->consumers_done);
    return NULL;
}

static void check_mpmc(size_t capacity)
{
    size_t total = (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND) ? 20000 : 1000000;
    for (size_t w = 0; w < SWEEP_N; w++) {
        struct mpmc x = { .producers_done = WEFT_WG_INIT, .consumers_done = WEFT_WG_INIT,
                          .per_producer = total / PRODUCERS };
        cr_assert_eq(weft_chan_create(&x.ch, sizeof(struct msg), capacity), 0);
        for (int p = 0; p < PRODUCERS; p++)
            x.seen[p] = calloc(x.per_producer, 1);
        run_with(sweep_workers[w], mpmc_run, &x);
        cr_assert_eq(atomic_load(&x.bad_order), 0, "%u workers: out of order", sweep_workers[w]);
        for (int p = 0; p < PRODUCERS; p++) {
            for (size_t s = 0; s < x.per_producer; s++)
                cr_assert_eq(x.seen[p][s], 1, "producer %d message %zu delivered %d times",
                             p, s, x.seen[p][s]);
            free(x.seen[p]);
        }
        cr_assert_eq(weft_chan_destroy(x.ch), 0);
    }
}

Test(chan, eight_producers_eight_consumers_buffered_deliver_each_message_once_in_order)
{
    check_mpmc(64);
}

Test(chan, eight_producers_eight_consumers_unbuffered_deliver_each_message_once_in_order)
{
    check_mpmc(0);
}

/* Plain threads and coroutines on one channel, in both directions. */
struct mixed {
    weft_chan  *ch;
    size_t      n;
    _Atomic long sum;
    weft_wg     wg;
};

static void *mixed_send(void *arg)
{
    struct mixed *x = arg;
    for (size_t i = 1; i <= x->n; i++) {
        long v = (long)i;
        weft_chan_send(x->ch, &v);
    }
    weft_wg_done(&x->wg);
    return NULL;
}

static void *mixed_recv(void *arg)
{
    struct mixed *x = arg;
    long v, s = 0;
    for (size_t i = 0; i < x->n; i++)
        if (weft_chan_recv(x->ch, &v) == 0)
            s += v;
    atomic_fetch_add(&x->sum, s);
    weft_wg_done(&x->wg);
    return NULL;
}

Test(chan, plain_threads_and_coroutines_send_and_receive_on_one_channel)
{
    for (size_t w = 0; w < SWEEP_N; w++)
        for (size_t cap = 0; cap <= 4; cap += 4) {
            struct mixed x = { .n = scaled(20000), .wg = WEFT_WG_INIT };
            cr_assert_eq(weft_chan_create(&x.ch, sizeof(long), cap), 0);
            weft_rt *rt;
            cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = sweep_workers[w] }), 0);
            weft_wg_add(&x.wg, 8);
            pthread_t th[4];
            /* two plain senders, two plain receivers, and as many coroutines */
            pthread_create(&th[0], NULL, mixed_send, &x);
            pthread_create(&th[1], NULL, mixed_recv, &x);
            pthread_create(&th[2], NULL, mixed_send, &x);
            pthread_create(&th[3], NULL, mixed_recv, &x);
            for (int i = 0; i < 2; i++) {
                weft_spawn_on(rt, NULL, mixed_send, &x);
                weft_spawn_on(rt, NULL, mixed_recv, &x);
            }
            cr_assert_eq(weft_wg_wait(&x.wg), 0);
            for (int i = 0; i < 4; i++)
                pthread_join(th[i], NULL);
            cr_assert_eq(weft_rt_destroy(rt), 0);
            long per = (long)(x.n * (x.n + 1) / 2);
            cr_assert_eq(atomic_load(&x.sum), 4 * per);
            cr_assert_eq(weft_chan_destroy(x.ch), 0);
        }
}

/* Close wakes blocked senders (-EPIPE) and receivers (-EPIPE once drained);
 * destroy refuses while they wait. */
struct blocked {
    weft_chan   *ch;
    _Atomic int  epipe, other;
};

static void *blocked_send(void *arg)
{
    struct blocked *b = arg;
    int v = 1;
    int r = weft_chan_send(b->ch, &v);
    atomic_fetch_add(r == -EPIPE ? &b->epipe : &b->other, 1);
    return NULL;
}

static void *blocked_recv(void *arg)
{
    struct blocked *b = arg;
    int v;
    int r = weft_chan_recv(b->ch, &v);
    atomic_fetch_add(r == -EPIPE ? &b->epipe : &b->other, 1);
    return NULL;
}

static void *close_while_blocked(void *arg)
{
    struct blocked *b = arg;
    weft_task *t[8];
    for (int i = 0; i < 4; i++)
        weft_spawn(&t[i], blocked_recv, b);
    /* Let them block. Whether or not each did, close fails it with -EPIPE. */
    for (int i = 0; i < 2000; i++)
        weft_yield();
    if (weft_chan_destroy(b->ch) != -EBUSY)
        atomic_fetch_add(&b->other, 1000);
    weft_chan_close(b->ch);
    for (int i = 0; i < 4; i++)
        weft_join(t[i], NULL);

    weft_chan *s;
    weft_chan_create(&s, sizeof(int), 0);
    b->ch = s;
    for (int i = 4; i < 8; i++)
        weft_spawn(&t[i], blocked_send, b);
    for (int i = 0; i < 2000; i++)
        weft_yield();
    if (weft_chan_destroy(s) != -EBUSY)
        atomic_fetch_add(&b->other, 1000);
    weft_chan_close(s);
    for (int i = 4; i < 8; i++)
        weft_join(t[i], NULL);
    int v = 0;
    if (weft_chan_close(s) != -EPIPE || weft_chan_send(s, &v) != -EPIPE ||
        weft_chan_recv(s, &v) != -EPIPE || weft_chan_destroy(s) != 0)
        atomic_fetch_add(&b->other, 100);
    return NULL;
}

Test(chan, close_wakes_blocked_senders_and_receivers_and_destroy_waits_for_them)
{
    for (size_t w = 0; w < SWEEP_N; w++) {
        struct blocked b = { 0 };
        weft_chan *ch;
        cr_assert_eq(weft_chan_create(&ch, sizeof(int), 0), 0);
        b.ch = ch;
        run_with(sweep_workers[w], close_while_blocked, &b);
        cr_assert_eq(atomic_load(&b.epipe), 8);
        cr_assert_eq(atomic_load(&b.other), 0);
        cr_assert_eq(weft_chan_destroy(ch), 0);
    }
}

Test(chan, a_closed_buffered_channel_still_yields_what_it_holds)
{
    weft_chan *ch;
    cr_assert_eq(weft_chan_create(&ch, sizeof(int), 4), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(weft_chan_try_send(ch, &i), 0);
    int v = 9;
    cr_assert_eq(weft_chan_try_send(ch, &v), -EAGAIN);
    cr_assert_eq(weft_chan_close(ch), 0);
    cr_assert_eq(weft_chan_try_send(ch, &v), -EPIPE);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(weft_chan_recv(ch, &v), 0);
        cr_assert_eq(v, i);
    }
    cr_assert_eq(weft_chan_recv(ch, &v), -EPIPE);
    cr_assert_eq(weft_chan_destroy(ch), 0);

    cr_assert_eq(weft_chan_create(&ch, sizeof(int), 0), 0);
    cr_assert_eq(weft_chan_try_send(ch, &v), -EAGAIN);
    cr_assert_eq(weft_chan_try_recv(ch, &v), -EAGAIN);
    cr_assert_eq(weft_chan_destroy(ch), 0);
}

/* The ring wraps many times, each element size taking its own copy path. */
Test(chan, a_small_buffer_keeps_order_across_many_wraps_for_every_element_size)
{
    static const size_t sizes[] = { 1, 2, 4, 8, 16, 3, 24 };
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
        size_t size = sizes[z];
        weft_chan *ch;
        cr_assert_eq(weft_chan_create(&ch, size, 3), 0);
        unsigned char in[24], out[24];
        unsigned next_in = 0, next_out = 0;
        for (unsigned round = 0; round < 100; round++) {
            unsigned fill = 1 + round % 3;     /* 1, 2 or 3 in, then as many out */
            for (unsigned k = 0; k < fill; k++, next_in++) {
                memset(in, (int)(next_in & 0xff), size);
                cr_assert_eq(weft_chan_try_send(ch, in), 0);
            }
            if (fill == 3)
                cr_assert_eq(weft_chan_try_send(ch, in), -EAGAIN, "a full buffer takes no more");
            for (unsigned k = 0; k < fill; k++, next_out++) {
                cr_assert_eq(weft_chan_try_recv(ch, out), 0);
                for (size_t b = 0; b < size; b++)
                    cr_assert_eq(out[b], next_out & 0xff, "size %zu, element %u, byte %zu",
                                 size, next_out, b);
            }
            cr_assert_eq(weft_chan_try_recv(ch, out), -EAGAIN, "an empty buffer gives nothing");
        }
        cr_assert_eq(weft_chan_destroy(ch), 0);
    }
}

/* Close while senders and receivers, coroutines and plain threads, are
 * blocked or arriving: every send that returned 0 was received exactly once,
 * every other returned -EPIPE, and nobody is left waiting. */
struct close_race {
    weft_chan        *ch;
    _Atomic long      sent_ok, sent_sum, recv_sum, received, bad;
    weft_wg           wg;
};

static void *close_race_send(void *arg)
{
    struct close_race *x = arg;
    for (long v = 1;; v++) {
        int rc = weft_chan_send(x->ch, &v);
        if (rc == -EPIPE)
            break;
        if (rc != 0) {
            atomic_fetch_add(&x->bad, 1);
            break;
        }
        atomic_fetch_add(&x->sent_ok, 1);
        atomic_fetch_add(&x->sent_sum, v);
    }
    weft_wg_done(&x->wg);
    return NULL;
}

static void *close_race_recv(void *arg)
{
    struct close_race *x = arg;
    long v;
    int rc;
    while ((rc = weft_chan_recv(x->ch, &v)) == 0) {
        atomic_fetch_add(&x->received, 1);
        atomic_fetch_add(&x->recv_sum, v);
    }
    if (rc != -EPIPE)
        atomic_fetch_add(&x->bad, 1);
    weft_wg_done(&x->wg);
    return NULL;
}

static void *close_race_thread(void *arg)
{
    return ((uintptr_t)arg & 1) ? close_race_send((void *)((uintptr_t)arg & ~(uintptr_t)1))
                                : close_race_recv(arg);
}

static void *close_race_run(void *arg)
{
    struct close_race *x = arg;
    pthread_t th[2];
    weft_wg_add(&x->wg, 8);
    for (int i = 0; i < 3; i++) {
        weft_spawn(NULL, close_race_send, x);
        weft_spawn(NULL, close_race_recv, x);
    }
    cr_assert_eq(pthread_create(&th[0], NULL, close_race_thread, (void *)((uintptr_t)x | 1)), 0);
    cr_assert_eq(pthread_create(&th[1], NULL, close_race_thread, x), 0);
    weft_sleep(200000);   /* 0.2 ms of traffic */
    cr_assert_eq(weft_chan_close(x->ch), 0);
    weft_wg_wait(&x->wg);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    return NULL;
}

Test(chan, close_racing_senders_and_receivers_loses_and_duplicates_nothing)
{
    for (size_t w = 0; w < SWEEP_N; w++)
        for (size_t cap = 0; cap <= 5; cap += 5)
            for (int round = 0; round < 10; round++) {
                struct close_race x = { .wg = WEFT_WG_INIT };
                cr_assert_eq(weft_chan_create(&x.ch, sizeof(long), cap), 0);
                run_with(sweep_workers[w], close_race_run, &x);
                cr_assert_eq(atomic_load(&x.bad), 0, "a call failed with neither 0 nor -EPIPE");
                cr_assert_eq(atomic_load(&x.sent_ok), atomic_load(&x.received),
                             "%u workers, capacity %zu: sends and receipts differ",
                             sweep_workers[w], cap);
                cr_assert_eq(atomic_load(&x.sent_sum), atomic_load(&x.recv_sum));
                cr_assert_eq(weft_chan_destroy(x.ch), 0, "a waiter was left on the channel");
            }
}

Test(chan, bad_arguments_are_EINVAL)
{
    weft_chan *ch;
    int v = 0;
    cr_assert_eq(weft_chan_create(NULL, 4, 0), -EINVAL);
    cr_assert_eq(weft_chan_create(&ch, 0, 0), -EINVAL);
    cr_assert_eq(weft_chan_send(NULL, &v), -EINVAL);
    cr_assert_eq(weft_chan_recv(NULL, &v), -EINVAL);
    cr_assert_eq(weft_chan_try_send(NULL, &v), -EINVAL);
    cr_assert_eq(weft_chan_try_recv(NULL, &v), -EINVAL);
    cr_assert_eq(weft_chan_close(NULL), -EINVAL);
    cr_assert_eq(weft_chan_destroy(NULL), -EINVAL);
    cr_assert_eq(weft_select(NULL, 1), -EINVAL);
    cr_assert_eq(weft_chan_create(&ch, sizeof v, 1), 0);
    cr_assert_eq(weft_chan_send(ch, NULL), -EINVAL);
    weft_sel bad[1] = { { ch, 7, &v } };
    cr_assert_eq(weft_select(bad, 1), -EINVAL);
    weft_sel none[1] = { { NULL, WEFT_RECV, &v } };
    cr_assert_eq(weft_select(none, 1), -EINVAL);
    cr_assert_eq(weft_chan_destroy(ch), 0);
}

/* Two channels that are always ready: each chosen about half the time. */
Test(chan, select_chooses_fairly_among_ready_cases)
{
    weft_chan *a, *b;
    cr_assert_eq(weft_chan_create(&a, sizeof(int), 1), 0);
    cr_assert_eq(weft_chan_create(&b, sizeof(int), 1), 0);
    int one = 1, got;
    weft_chan_send(a, &one);
    weft_chan_send(b, &one);
    int count[2] = { 0, 0 };
    for (int i = 0; i < 10000; i++) {
        weft_sel cases[2] = { { a, WEFT_RECV, &got }, { b, WEFT_RECV, &got } };
        int r = weft_select(cases, 2);
        cr_assert(r == 0 || r == 1, "select returned %d", r);
        count[r]++;
        weft_chan_send(r == 0 ? a : b, &one);   /* ready again */
    }
    cr_assert_geq(count[0], 4000, "case 0 chosen %d times", count[0]);
    cr_assert_leq(count[0], 6000, "case 0 chosen %d times", count[0]);
    weft_chan_destroy(a);
    weft_chan_destroy(b);
}

/* Select waits on several channels; a sender on any of them completes it,
 * exactly once, whichever kind of thread sends. */
struct fan {
    weft_chan *in[3];
    size_t     n;
    long       sum;
    int        closed;
};

static void *fan_send(void *arg)
{
    weft_chan *ch = arg;
    for (long v = 1; v <= 1000; v++)
        weft_chan_send(ch, &v);
    weft_chan_close(ch);
    return NULL;
}

static void *fan_in(void *arg)
{
    struct fan *f = arg;
    weft_task *t[3];
    for (int i = 0; i < 3; i++)
        weft_spawn(&t[i], fan_send, f->in[i]);
    weft_sel cases[3];
    long v[3];
    for (int i = 0; i < 3; i++)
        cases[i] = (weft_sel){ f->in[i], WEFT_RECV, &v[i] };
    while (f->closed < 3) {
        int r = weft_select(cases, 3);
        if (r < 0)
            return (void *)1;
        if (!cases[r].chan)
            f->closed++;
        else
            f->sum += v[r];
    }
    for (int i = 0; i < 3; i++)
        weft_join(t[i], NULL);
    return NULL;
}

Test(chan, select_receives_from_several_senders_until_all_close)
{
    for (size_t w = 0; w < SWEEP_N; w++)
        for (size_t cap = 0; cap <= 2; cap += 2) {
            struct fan f = { 0 };
            for (int i = 0; i < 3; i++)
                cr_assert_eq(weft_chan_create(&f.in[i], sizeof(long), cap), 0);
            cr_assert_null(run_with(sweep_workers[w], fan_in, &f));
            cr_assert_eq(f.sum, 3L * 1000 * 1001 / 2);
            for (int i = 0; i < 3; i++)
                cr_assert_eq(weft_chan_destroy(f.in[i]), 0);
        }
}

/* Select with a send and a receive case: both partners are selects too. */
struct pingpong {
    weft_chan *a, *b;
    long       got_a, got_b;
    size_t     n;
};

static void *sel_sender(void *arg)
{
    struct pingpong *p = arg;
    long v = 1, sink;
    for (size_t i = 0; i < p->n; i++) {
        weft_sel cases[2] = { { p->a, WEFT_SEND, &v }, { p->b, WEFT_RECV, &sink } };
        int r = weft_select(cases, 2);
        if (r == 1)
            p->got_b += sink;
    }
    return NULL;
}

static void *sel_pair(void *arg)
{
    struct pingpong *p = arg;
    weft_task *t;
    weft_spawn(&t, sel_sender, p);
    long v = 2, sink;
    for (size_t i = 0; i < p->n; i++) {
        weft_sel cases[2] = { { p->b, WEFT_SEND, &v }, { p->a, WEFT_RECV, &sink } };
        int r = weft_select(cases, 2);
        if (r == 1)
            p->got_a += sink;
    }
    weft_join(t, NULL);
    return NULL;
}

Test(chan, two_selects_meet_on_unbuffered_channels)
{
    for (size_t w = 0; w < SWEEP_N; w++) {
        struct pingpong p = { .n = scaled(20000) };
        cr_assert_eq(weft_chan_create(&p.a, sizeof(long), 0), 0);
        cr_assert_eq(weft_chan_create(&p.b, sizeof(long), 0), 0);
        run_with(sweep_workers[w], sel_pair, &p);
        /* every round pairs one send with one receive: n rounds in all */
        cr_assert_eq(p.got_a + p.got_b / 2, (long)p.n);
        weft_chan_destroy(p.a);
        weft_chan_destroy(p.b);
    }
}
