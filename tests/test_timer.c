/* SPDX-License-Identifier: MIT */
/* Timers: weft_sleep() suspends only its coroutine, and wakes it at or after
 * its deadline. Outcomes only: lateness is measured in bench/. */
#define _GNU_SOURCE   /* usleep */
#include "common.h"
#include "base/heap.h"
#include "base/rng.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <unistd.h>

struct sleeper {
    uint64_t ns;
    int      late_or_on_time;   /* 1 when it woke at or after its deadline */
};

static void *sleep_once(void *arg)
{
    struct sleeper *s = arg;
    uint64_t start = weft_now();
    int r = weft_sleep(s->ns);
    s->late_or_on_time = r == 0 && weft_now() - start >= s->ns;
    return NULL;
}

static void *many_sleepers(void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    struct sleeper *s = calloc(n, sizeof *s);
    weft_task **t = calloc(n, sizeof *t);
    if (!s || !t)
        return (void *)1;
    for (size_t i = 0; i < n; i++) {
        s[i].ns = 1000000u + (i % 97) * 100000u;   /* 1 to 10.6 ms, interleaved */
        if (weft_spawn(&t[i], sleep_once, &s[i]) != 0)
            return (void *)2;
    }
    uintptr_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        weft_join(t[i], NULL);
        bad += !s[i].late_or_on_time;
    }
    free(s);
    free(t);
    return (void *)bad;
}

Test(timer, ten_thousand_sleepers_each_wake_at_or_after_their_deadline)
{
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], many_sleepers, (void *)scaled(10000)), 0);
}

/* Sleepers cancelled while the others stay armed: the heap gives up timers
 * from its middle as well as its top, and a timer whose recorded position
 * were wrong would stop the program (weft__check in the heap). The others
 * each wake at or after their deadline, and the cancelled ones report
 * -ECANCELED unless their deadline came first. */
struct shuffled {
    uint64_t deadline;
    int      result;
    bool     on_time;
};

static void *sleep_until(void *arg)
{
    struct shuffled *o = arg;
    uint64_t now = weft_now();
    o->result = weft_sleep(o->deadline > now ? o->deadline - now : 0);
    o->on_time = weft_now() >= o->deadline;
    return NULL;
}

static void *cancel_some_sleepers(void *arg)
{
    (void)arg;
    size_t n = scaled(3000);
    struct shuffled *o = calloc(n, sizeof *o);
    weft_task **t = calloc(n, sizeof *t);
    cr_assert(o && t);
    uint64_t start = weft_now() + 50000000u;
    for (size_t i = 0; i < n; i++) {
        o[i].deadline = start + (i * 7919u % n) * 10000u;   /* distinct, shuffled, 10 us apart */
        cr_assert_eq(weft_spawn(&t[i], sleep_until, &o[i]), 0);
    }
    weft_sleep(1000000);   /* most of them armed */
    for (size_t i = 0; i < n; i += 3)
        cr_assert_eq(weft_cancel(t[i]), 0);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(weft_join(t[i], NULL), 0);
    for (size_t i = 0; i < n; i++) {
        if (i % 3 == 0)
            cr_assert(o[i].result == -ECANCELED || (o[i].result == 0 && o[i].on_time),
                      "cancelled sleeper %zu returned %d", i, o[i].result);
        else
            cr_assert(o[i].result == 0 && o[i].on_time, "sleeper %zu returned %d, %s", i,
                      o[i].result, o[i].on_time ? "on time" : "early");
    }
    free(o);
    free(t);
    return NULL;
}

Test(timer, cancelling_sleepers_from_the_middle_of_the_heap_leaves_the_others_on_time)
{
    for (size_t i = 0; i < SWEEP_N; i++)
        run_with(sweep_workers[i], cancel_some_sleepers, NULL);
}

static void *zero_sleep(void *arg)
{
    return (void *)(intptr_t)weft_sleep(0);
}

Test(timer, sleeping_zero_nanoseconds_returns_zero)
{
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((intptr_t)run_with(sweep_workers[i], zero_sleep, NULL), 0);
}

Test(timer, a_plain_thread_sleeps_like_nanosleep)
{
    uint64_t start = weft_now();
    cr_assert_eq(weft_sleep(2000000), 0);
    cr_assert_geq(weft_now() - start, 2000000u);
}

/* A sleeper does not hold up its worker: with one worker, a coroutine that
 * counts while another sleeps finishes first. */
static _Atomic int order;

static void *counter(void *arg)
{
    int *seen = arg;
    *seen = atomic_fetch_add(&order, 1);
    return NULL;
}

static void *sleeper_first(void *arg)
{
    int *seen = arg;
    weft_sleep(20000000);
    *seen = atomic_fetch_add(&order, 1);
    return NULL;
}

static void *sleep_while_another_runs(void *arg)
{
    int a = -1, b = -1;
    weft_task *ta, *tb;
    atomic_store(&order, 0);
    weft_spawn(&ta, sleeper_first, &a);
    weft_spawn(&tb, counter, &b);
    weft_join(ta, NULL);
    weft_join(tb, NULL);
    return (void *)(uintptr_t)(b == 0 && a == 1);
}

Test(timer, a_sleeping_coroutine_leaves_its_worker_to_others)
{
    cr_assert_eq((uintptr_t)run_with(1, sleep_while_another_runs, NULL), 1);
}

/*
 * Timers are fired by the workers themselves. A parked worker sleeps until
 * the earliest deadline; a timer armed earlier than that must wake it. Here a
 * coroutine sleeps for 30 s, the workers park, then another coroutine
 * sleeps 10 ms: its sleep must end while the first still sleeps. Were the
 * earlier timer missed, both would end together, 30 s later.
 */
struct early_late {
    _Atomic int long_done;
    int         long_result;
};

static void *sleep_long(void *arg)
{
    struct early_late *el = arg;
    el->long_result = weft_sleep(30ull * 1000000000u);
    atomic_store(&el->long_done, 1);
    return NULL;
}

static void *sleep_briefly(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)weft_sleep(10000000);
}

Test(timer, an_earlier_timer_wakes_a_worker_asleep_until_a_later_one, .timeout = 50)
{
    for (size_t i = 0; i < SWEEP_N; i++) {
        weft_config cfg = { .workers = sweep_workers[i] };
        weft_rt *rt;
        cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
        struct early_late el = { 0 };
        weft_task *long_one, *short_one;
        cr_assert_eq(weft_spawn_on(rt, &long_one, sleep_long, &el), 0);
        usleep(50000);   /* every worker parks: one of them until the long deadline */
        cr_assert_eq(weft_spawn_on(rt, &short_one, sleep_briefly, NULL), 0);
        void *r;
        cr_assert_eq(weft_join(short_one, &r), 0);
        cr_assert_eq((intptr_t)r, 0);
        cr_assert_eq(atomic_load(&el.long_done), 0,
                     "the short sleep ended only with the long one (%u workers)", sweep_workers[i]);
        cr_assert_eq(weft_cancel(long_one), 0);
        cr_assert_eq(weft_join(long_one, NULL), 0);
        cr_assert_eq(el.long_result, -ECANCELED);
        cr_assert_eq(weft_rt_destroy(rt), 0);
    }
}

/* A worker that never runs out of work still fires its timers: with one
 * worker, a coroutine that only yields waits for a sleeper to wake. */
struct busy_wait {
    _Atomic int woke;
    int         gave_up;
};

static void *sleep_then_flag(void *arg)
{
    struct busy_wait *b = arg;
    weft_sleep(5000000);
    atomic_store(&b->woke, 1);
    return NULL;
}

static void *yield_until_flag(void *arg)
{
    struct busy_wait *b = arg;
    weft_task *t;
    if (weft_spawn(&t, sleep_then_flag, b) != 0)
        return (void *)1;
    uint64_t give_up = weft_now() + 20ull * 1000000000u;
    while (!atomic_load(&b->woke)) {
        if (weft_now() > give_up) {
            b->gave_up = 1;
            break;
        }
        weft_yield();
    }
    weft_join(t, NULL);
    return NULL;
}

Test(timer, a_worker_that_never_idles_still_wakes_its_sleepers, .timeout = 50)
{
    for (size_t i = 0; i < SWEEP_N; i++) {
        struct busy_wait b = { 0 };
        cr_assert_null(run_with(sweep_workers[i], yield_until_flag, &b));
        cr_assert_eq(b.gave_up, 0, "the sleeper never woke while its worker stayed busy");
    }
}

/* A worker asleep in its io_uring, with a read in flight, still wakes for a
 * timer: here the sleeper is the one that will end the read. */
struct ring_timer {
    int fds[2];
    ssize_t got;
};

static void *read_one(void *arg)
{
    struct ring_timer *rt = arg;
    char c;
    rt->got = weft_read(rt->fds[0], &c, 1);
    return NULL;
}

static void *sleep_then_write(void *arg)
{
    struct ring_timer *rt = arg;
    weft_task *reader;
    if (weft_spawn(&reader, read_one, rt) != 0)
        return (void *)1;
    if (weft_sleep(10000000) != 0)
        return (void *)2;
    if (weft_write(rt->fds[1], "x", 1) != 1)
        return (void *)3;
    weft_join(reader, NULL);
    return NULL;
}

Test(timer, a_worker_waiting_on_io_wakes_for_a_timer, .timeout = 50)
{
    FOR_EACH_CONFIG(b, w, sweep_workers) {
        struct ring_timer rt = { .got = -1 };
        cr_assert_eq(pipe(rt.fds), 0);
        cr_assert_null(run_with_io(w, b, sleep_then_write, &rt), "on %s", backend_name[b]);
        cr_assert_eq(rt.got, 1, "on %s", backend_name[b]);
        close(rt.fds[0]);
        close(rt.fds[1]);
    }
}

/*
 * The heap of deadlines itself (base/heap.h), under the timers and each
 * ring's deadlines: through random pushes, removals from anywhere and takes
 * of the earliest, it gives back exactly the items it holds, earliest first,
 * and keeps each item's place.
 */
enum { HEAP_ITEMS = 1000 };

struct heap_item {
    uint64_t when;
    size_t   pos;   /* the heap's place for it; 0: not in it */
};

Test(timer, the_deadline_heap_gives_back_what_it_holds_earliest_first)
{
    static struct heap_item items[HEAP_ITEMS];
    struct weft__heap h = { 0 };
    uint64_t rng = 0x9e3779b97f4a7c15u;
    size_t held = 0;
    for (int round = 0; round < 20000; round++) {
        struct heap_item *it = &items[weft__rng_next(&rng) % HEAP_ITEMS];
        unsigned op = weft__rng_next(&rng) % 4;
        if (!it->pos && op < 2) {   /* push, with ties (when in 0..999) */
            cr_assert_eq(weft__heap_reserve(&h), 0);
            it->when = weft__rng_next(&rng) % 1000;
            weft__heap_push(&h, it->when, &it->pos);
            held++;
        } else if (it->pos && op == 2) {   /* remove from wherever it is */
            weft__heap_remove(&h, &it->pos);
            cr_assert_eq(it->pos, 0);
            held--;
        } else if (op == 3) {   /* take everything due at a random time */
            uint64_t now = weft__rng_next(&rng) % 1000, least = UINT64_MAX;
            for (size_t i = 0; i < HEAP_ITEMS; i++)
                if (items[i].pos && items[i].when < least)
                    least = items[i].when;
            cr_assert_eq(weft__heap_next(&h), least, "round %d: the heap's next is not the earliest", round);
            size_t *due;
            uint64_t last = 0;
            while ((due = weft__heap_due(&h, now))) {
                struct heap_item *d = weft__heap_item(due, struct heap_item, pos);
                cr_assert_leq(d->when, now);
                cr_assert_geq(d->when, last, "round %d: taken out of order", round);
                last = d->when;
                weft__heap_remove(&h, due);
                held--;
            }
            for (size_t i = 0; i < HEAP_ITEMS; i++)
                cr_assert(!items[i].pos || items[i].when > now, "round %d: an item due was left", round);
        }
        cr_assert_eq(h.n, held);
    }
    for (size_t i = 0; i < HEAP_ITEMS; i++)   /* every place names its item */
        if (items[i].pos)
            cr_assert_eq(h.a[items[i].pos - 1].pos, &items[i].pos);
    weft__heap_free(&h);
}

/*
 * The workers sleep without the kernel's timer slack, which would add its
 * default tens of microseconds to every wake-up a timer ends. Eight
 * coroutines compute on four workers, each reading its thread's slack as it
 * goes, until every worker has been seen (or 10 s): each worker's is 1 ns.
 * The calling thread keeps its own.
 */
struct slack {
    _Atomic int seen;   /* a bit per worker */
    long        slack[4];
};

static void *read_slack(void *arg)
{
    struct slack *s = arg;
    uint64_t until = weft_now() + 10000000000u;
    while (atomic_load(&s->seen) != 0xf && weft_now() < until) {
        int w = weft_worker();
        if (w >= 0 && w < 4 && !(atomic_load(&s->seen) & (1 << w))) {
            s->slack[w] = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
            atomic_fetch_or(&s->seen, 1 << w);
        }
        uint64_t busy = weft_now() + 50000;   /* busy, so that idle workers steal */
        while (weft_now() < busy)
            ;
        weft_yield();
    }
    return NULL;
}

static void *read_slack_everywhere(void *arg)
{
    weft_task *t[8];
    for (int i = 0; i < 8; i++)
        cr_assert_eq(weft_spawn(&t[i], read_slack, arg), 0);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(weft_join(t[i], NULL), 0);
    return NULL;
}

Test(timer, the_workers_sleep_without_timer_slack)
{
    struct slack s = { 0 };
    long mine = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    run_with(4, read_slack_everywhere, &s);
    cr_assert_eq(atomic_load(&s.seen), 0xf, "in 10 s, coroutines ran only on workers 0x%x", atomic_load(&s.seen));
    for (int w = 0; w < 4; w++)
        cr_assert_eq(s.slack[w], 1, "worker %d: timer slack %ld ns", w, s.slack[w]);
    cr_assert_eq(prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0), mine, "the calling thread's slack changed");
}
