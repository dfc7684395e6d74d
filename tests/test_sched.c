/* SPDX-License-Identifier: MIT */
/* The scheduler: spawning, joining, stealing, parking, migrating. */
#define _GNU_SOURCE
#include "common.h"
#include "scenes.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void *identity(void *arg) { return arg; }

static void *spawn_and_sum(void *arg)
{
    size_t n = (size_t)arg;
    weft_task **t = malloc(n * sizeof(*t));
    for (size_t i = 0; i < n; i++)
        if (weft_spawn(&t[i], identity, (void *)(i + 1)) != 0)
            return (void *)0;
    uintptr_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        void *r;
        weft_join(t[i], &r);
        sum += (uintptr_t)r;
    }
    free(t);
    return (void *)sum;
}

/* More tasks than a worker's deque holds (4,096), also under the sanitizers:
 * the overflow to the global queue and back runs in batches, with thieves
 * taking from the same deque. ThreadSanitizer sets up a thread's state for
 * each coroutine, the bulk of this test's time there: fewer, still enough
 * for the deque to overflow many batches over. */
Test(sched, joins_every_coroutine_with_the_value_it_returned)
{
    size_t n = WEFT_TEST_TSAN ? 6000 : 12500;
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], spawn_and_sum, (void *)n), n * (n + 1) / 2);
}

/* A tree of fan-out 5 and depth 5: each node spawns its children and sums them. */
static void *tree(void *arg)
{
    uintptr_t depth = (uintptr_t)arg;
    if (depth == 0)
        return (void *)1;
    weft_task *t[5];
    for (int i = 0; i < 5; i++)
        weft_spawn(&t[i], tree, (void *)(depth - 1));
    uintptr_t sum = 0;
    for (int i = 0; i < 5; i++) {
        void *r;
        weft_join(t[i], &r);
        sum += (uintptr_t)r;
    }
    return (void *)sum;
}

Test(sched, runs_nested_spawns_to_completion)
{
    uintptr_t depth = WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND ? 3 : 5, leaves = 1;
    for (uintptr_t d = 0; d < depth; d++)
        leaves *= 5;
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], tree, (void *)depth), leaves);
}

struct outside {
    weft_rt *rt;
    size_t   n;
    uintptr_t sum;
    int      err;
};

static void *outside_thread(void *arg)
{
    struct outside *o = arg;
    for (size_t i = 0; i < o->n; i++) {
        weft_task *t;
        void *r;
        int err = weft_spawn_on(o->rt, &t, identity, (void *)(i + 1));
        if (!err)
            err = weft_join(t, &r);   /* blocks this plain thread */
        if (err) {
            o->err = err;
            return NULL;
        }
        o->sum += (uintptr_t)r;
    }
    return NULL;
}

Test(sched, accepts_spawns_and_joins_from_several_plain_threads_at_once)
{
    for (size_t w = 0; w < SWEEP_N; w++) {
        weft_rt *rt;
        weft_config cfg = { .workers = sweep_workers[w] };
        cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
        struct outside o[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            o[i] = (struct outside){ rt, scaled(2000), 0, 0 };
            pthread_create(&th[i], NULL, outside_thread, &o[i]);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            cr_assert_eq(o[i].err, 0);
            cr_assert_eq(o[i].sum, o[i].n * (o[i].n + 1) / 2);
        }
        cr_assert_eq(weft_rt_destroy(rt), 0);
    }
}

static _Atomic size_t detached_done;

static void *detached_leaf(void *arg)
{
    for (int i = 0; i < 3; i++)
        weft_yield();
    atomic_fetch_add(&detached_done, 1);
    return NULL;
}

static void *detached_spawner(void *arg)
{
    size_t n = (size_t)arg;
    for (size_t i = 0; i < n; i++) {
        weft_task *t;
        if (i % 2) {
            weft_spawn(NULL, detached_leaf, NULL);
        } else {
            weft_spawn(&t, detached_leaf, NULL);
            weft_detach(t);
        }
    }
    return NULL;
}

Test(sched, destroy_waits_for_every_detached_coroutine)
{
    size_t n = scaled(2000);
    for (size_t w = 0; w < SWEEP_N; w++) {
        weft_rt *rt;
        weft_config cfg = { .workers = sweep_workers[w] };
        atomic_store(&detached_done, 0);
        cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(weft_spawn_on(rt, NULL, detached_spawner, (void *)n), 0);
        cr_assert_eq(weft_rt_destroy(rt), 0);
        cr_assert_eq(atomic_load(&detached_done), 4 * n);
    }
}

/* Thousands of short park/unpark cycles across workers: parents park in join
 * while children finish on whichever worker stole them. */
static void *child_of_child(void *arg) { return (void *)((uintptr_t)arg + 1); }

static void *parent(void *arg)
{
    weft_task *t;
    void *r;
    weft_spawn(&t, child_of_child, arg);
    weft_join(t, &r);
    return r;
}

static void *park_storm(void *arg)
{
    size_t rounds = (size_t)arg;
    uintptr_t bad = 0;
    for (size_t r = 0; r < rounds; r++) {
        weft_task *t[50];
        for (uintptr_t i = 0; i < 50; i++)
            weft_spawn(&t[i], parent, (void *)i);
        for (uintptr_t i = 0; i < 50; i++) {
            void *v;
            weft_join(t[i], &v);
            bad += (uintptr_t)v != i + 1;
        }
    }
    return (void *)bad;
}

Test(sched, survives_a_storm_of_short_park_and_wake_cycles)
{
    for (int repeat = 0; repeat < 3; repeat++)
        for (size_t i = 0; i < SWEEP_N; i++)
            cr_assert_eq((uintptr_t)run_with(sweep_workers[i], park_storm, (void *)scaled(200)), 0);
}

/*
 * Migration: after every resumption a coroutine records which worker it is on
 * and which kernel thread runs it. A worker is one thread, so the pairing must
 * never change; a stale worker pointer cached across a switch would break it.
 */
#define MAX_WORKERS 8
static _Atomic long tid_of_worker[MAX_WORKERS];
static _Atomic size_t migrations, mismatches;

static void *hop(void *arg) { return arg; }

/* Records where the caller runs now; returns its worker. */
static int note_worker(int last)
{
    int w = weft_worker();
    long tid = syscall(SYS_gettid);
    long expected = 0;
    if (!atomic_compare_exchange_strong(&tid_of_worker[w], &expected, tid) && expected != tid)
        atomic_fetch_add(&mismatches, 1);
    if (w != last)
        atomic_fetch_add(&migrations, 1);
    return w;
}

static void *wanderer(void *arg)
{
    size_t iters = (size_t)arg;
    int last = weft_worker();
    for (size_t i = 0; i < iters; i++) {
        if (i % 4 == 0) {
            weft_task *t;
            weft_spawn(&t, hop, NULL);   /* a thief that runs it wakes us on its own worker */
            weft_join(t, NULL);
        } else {
            weft_yield();
        }
        last = note_worker(last);
        if (i > iters / 4 && atomic_load(&migrations) >= 100)
            break;
    }
    return NULL;
}

/*
 * The wanderers migrate only when a worker runs dry and steals, which a busy
 * machine may never let happen. The prober makes a migration certain once a
 * thief runs at all: it spawns a child and keeps its own worker busy until the
 * child has started (so the child runs elsewhere), then parks in join; the
 * child holds on until the join has begun, so that its return wakes the
 * prober on the child's worker.
 */
struct probe {
    _Atomic int started, joining;
};

static void spin_ns(uint64_t ns)
{
    uint64_t end = weft_now() + ns;
    while (weft_now() < end)
        ;
}

static void *probe_child(void *arg)
{
    struct probe *p = arg;
    atomic_store(&p->started, 1);
    uint64_t give_up = weft_now() + 2000000;
    while (!atomic_load(&p->joining) && weft_now() < give_up)
        ;
    spin_ns(100000);   /* the prober parks meanwhile */
    return NULL;
}

#define MIGRATION_PATIENCE_NS (10 * 1000000000ull)

static void *prober(void *arg)
{
    (void)arg;
    if (weft_workers() < 2 || RUNNING_ON_VALGRIND)
        return NULL;   /* Valgrind runs one thread at a time: no thief runs alongside */
    uint64_t give_up = weft_now() + MIGRATION_PATIENCE_NS;
    int last = weft_worker();
    while (atomic_load(&migrations) == 0 && weft_now() < give_up) {
        struct probe p = { 0 };
        weft_task *t;
        weft_spawn(&t, probe_child, &p);
        uint64_t wait_until = weft_now() + 2000000;
        while (!atomic_load(&p.started) && weft_now() < wait_until)
            ;
        atomic_store(&p.joining, 1);
        weft_join(t, NULL);
        last = note_worker(last);
    }
    return NULL;
}

static void *wanderers(void *arg)
{
    weft_task *t[7];
    for (int i = 0; i < 6; i++)
        weft_spawn(&t[i], wanderer, arg);
    weft_spawn(&t[6], prober, NULL);
    for (int i = 0; i < 7; i++)
        weft_join(t[i], NULL);
    return NULL;
}

Test(sched, keeps_each_worker_on_one_thread_while_coroutines_migrate)
{
    for (size_t i = 0; i < SWEEP_N; i++) {
        for (int k = 0; k < MAX_WORKERS; k++)
            atomic_store(&tid_of_worker[k], 0);
        atomic_store(&migrations, 0);
        atomic_store(&mismatches, 0);
        run_with(sweep_workers[i], wanderers, (void *)scaled(20000));
        cr_assert_eq(atomic_load(&mismatches), 0, "a coroutine saw a stale worker after a switch");
        /* Valgrind runs one thread at a time, so a thief may never get to
         * steal; everywhere else the prober makes migration certain. */
        if (sweep_workers[i] > 1 && !RUNNING_ON_VALGRIND)
            cr_assert_gt(atomic_load(&migrations), 0, "no coroutine ever moved between workers");
    }
}

/* Each thread a runtime starts says what it is (top -H, perf, gdb): a
 * coroutine runs on the thread named after its worker, the monitor has a
 * name of its own, and none is left once the runtime is destroyed. */
static void *check_own_name(void *arg)
{
    (void)arg;
    char want[16], comm[32] = "";
    snprintf(want, sizeof want, "weft-worker-%d", weft_worker());
    FILE *f = fopen("/proc/thread-self/comm", "r");
    cr_assert(f);
    cr_assert(fgets(comm, sizeof comm, f));
    fclose(f);
    comm[strcspn(comm, "\n")] = 0;
    cr_assert(strcmp(comm, want) == 0, "a coroutine of %s ran on %s", want, comm);
    return NULL;
}

Test(sched, names_its_threads_after_what_they_do)
{
    weft_rt *rt;
    weft_config cfg = { .workers = 3 };
    cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "weft-worker-%d", i);
        int tid;
        cr_assert_eq(threads_named(name, &tid, 1), 1, "threads named %s", name);
    }
    int tid;
    cr_assert_eq(threads_named("weft-worker-3", &tid, 1), 0);
    cr_assert_eq(threads_named("weft-monitor", &tid, 1), 1);
    weft_task *t[12];
    for (int i = 0; i < 12; i++)
        cr_assert_eq(weft_spawn_on(rt, &t[i], check_own_name, NULL), 0);
    for (int i = 0; i < 12; i++)
        cr_assert_eq(weft_join(t[i], NULL), 0);
    cr_assert_eq(weft_rt_destroy(rt), 0);
    /* A joined thread may still be listed for a moment as it leaves. */
    uint64_t until = weft_now() + 2000000000u;
    while ((threads_named("weft-worker-0", &tid, 1) || threads_named("weft-monitor", &tid, 1)) &&
           weft_now() < until)
        usleep(1000);
    cr_assert_eq(threads_named("weft-worker-0", &tid, 1), 0);
    cr_assert_eq(threads_named("weft-monitor", &tid, 1), 0);
}

struct yield_log {
    char   order[64];
    size_t n;
};

static void *yielder(void *arg)
{
    struct yield_log *log = ((struct yield_log **)arg)[0];
    char me = (char)(uintptr_t)((void **)arg)[1];
    for (int i = 0; i < 8; i++) {
        log->order[log->n++] = me;
        weft_yield();
    }
    return NULL;
}

static void *two_yielders(void *arg)
{
    void *a[2] = { arg, (void *)'a' }, *b[2] = { arg, (void *)'b' };
    weft_task *ta, *tb;
    weft_spawn(&ta, yielder, a);
    weft_spawn(&tb, yielder, b);
    weft_join(ta, NULL);
    weft_join(tb, NULL);
    return NULL;
}

Test(sched, lets_other_coroutines_run_when_one_yields)
{
    struct yield_log log = { .n = 0 };
    run_with(1, two_yielders, &log);
    cr_assert_eq(log.n, 16);
    /* Both made progress before either finished: the first coroutine to run
     * must not have run all its 8 turns in a row. */
    size_t run = 1;
    while (run < log.n && log.order[run] == log.order[0])
        run++;
    cr_assert_lt(run, 8, "one coroutine kept the worker through all its yields");
}

static void *in_runtime(void *arg)
{
    return spawn_and_sum(arg);
}

static void *runtime_thread(void *arg)
{
    weft_config cfg = { .workers = 2 };
    void *r = NULL;
    if (weft_main(&cfg, in_runtime, arg, &r) != 0)
        return NULL;
    return r;
}

/*
 * Disabled under ThreadSanitizer because of a bug in the runtime: the first
 * weft__stacks_create() of the process fills the statics page_size and
 * guard_bytes (runtime/core/stack.c) without synchronisation, so two threads
 * creating their first runtimes at once race on them; a runtime can then see
 * page_size set but guard_bytes still 0, and get stacks without a guard page.
 */
Test(sched, runs_several_runtimes_in_one_process_at_once)
{
    pthread_t th[3];
    size_t n = scaled(3000);
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, runtime_thread, (void *)n);
    for (int i = 0; i < 3; i++) {
        void *r;
        pthread_join(th[i], &r);
        cr_assert_eq((uintptr_t)r, n * (n + 1) / 2);
    }
}

/*
 * No task waits forever in a deque. A chain of coroutines, each spawning the
 * next and ending, keeps a newer task at its worker's deque bottom at every
 * choice, so the owner's LIFO order alone would never reach an older task at
 * the top. On one worker nobody steals it: the fairness tick must take it.
 */
struct chain {
    _Atomic int  older_ran;
    _Atomic long links;
    long         limit;
};

static void *chain_link(void *arg)
{
    struct chain *c = arg;
    if (!atomic_load(&c->older_ran) && atomic_fetch_add(&c->links, 1) < c->limit)
        weft_spawn(NULL, chain_link, c);
    return NULL;
}

static void *older_task(void *arg)
{
    struct chain *c = arg;
    atomic_store(&c->older_ran, 1);
    return NULL;
}

static void *chain_over_an_older_task(void *arg)
{
    struct chain *c = arg;
    weft_task *older;
    if (weft_spawn(&older, older_task, c) != 0 || weft_spawn(NULL, chain_link, c) != 0)
        return (void *)1;
    weft_join(older, NULL);
    return NULL;
}

/*
 * A task woken while its worker's deque overflows with fresh spawns stays
 * near the front. The overflow moves the deque's oldest tasks to the global
 * queue, behind every spawn already there; a woken task among them would run
 * only once all of those had. One worker: the spawner wakes two waiters (the
 * first lands in the deque, the second in runnext), with 10,000 fresh tasks
 * before and 5,000 after, so that the first waiter is among the oldest when
 * the deque overflows again.
 */
enum { FRESH_BEFORE = 10000, FRESH_AFTER = 5000 };

struct woken {
    weft_chan    *ch[2];
    atomic_long   fresh_ran;
    atomic_long   ran_before_first;   /* fresh tasks run when the first waiter ran */
};

static void *count_fresh(void *arg)
{
    struct woken *k = arg;
    atomic_fetch_add(&k->fresh_ran, 1);
    return NULL;
}

static void *wait_for_wake(void *arg)
{
    struct woken *k = ((void **)arg)[0];
    uintptr_t i = (uintptr_t)((void **)arg)[1];
    char c;
    cr_assert_eq(weft_chan_recv(k->ch[i], &c), 0);
    if (i == 0)
        atomic_store(&k->ran_before_first, atomic_load(&k->fresh_ran));
    return NULL;
}

static void *wake_amid_spawns(void *arg)
{
    struct woken *k = arg;
    void *args[2][2] = { { k, (void *)0 }, { k, (void *)1 } };
    weft_task *waiter[2];
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(weft_chan_create(&k->ch[i], 1, 0), 0);
        cr_assert_eq(weft_spawn(&waiter[i], wait_for_wake, args[i]), 0);
    }
    weft_yield();   /* both run and wait */
    weft_task **fresh = calloc(FRESH_BEFORE + FRESH_AFTER, sizeof *fresh);
    cr_assert(fresh);
    for (int i = 0; i < FRESH_BEFORE; i++)
        cr_assert_eq(weft_spawn(&fresh[i], count_fresh, k), 0);
    char c = 1;
    for (int i = 0; i < 2; i++)
        cr_assert_eq(weft_chan_send(k->ch[i], &c), 0);   /* a waiter is there: no wait */
    for (int i = FRESH_BEFORE; i < FRESH_BEFORE + FRESH_AFTER; i++)
        cr_assert_eq(weft_spawn(&fresh[i], count_fresh, k), 0);
    for (int i = 0; i < FRESH_BEFORE + FRESH_AFTER; i++)
        cr_assert_eq(weft_join(fresh[i], NULL), 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(weft_join(waiter[i], NULL), 0);
        cr_assert_eq(weft_chan_destroy(k->ch[i]), 0);
    }
    free(fresh);
    return NULL;
}

Test(sched, a_woken_task_does_not_wait_behind_fresh_spawns)
{
    const char *shuffle = getenv("WEFT_SCHED_RANDOM");
    if (shuffle && *shuffle && strcmp(shuffle, "0") != 0)
        cr_skip("random scheduling sends wake-ups to the global queue on purpose");
    struct woken k = { 0 };
    cr_assert_null(run_with(1, wake_amid_spawns, &k));
    cr_assert_lt(atomic_load(&k.ran_before_first), FRESH_BEFORE,
                 "the first waiter ran after %ld fresh tasks", atomic_load(&k.ran_before_first));
}

Test(sched, an_older_task_runs_while_newer_ones_keep_coming, .timeout = 120)
{
    if (RUNNING_ON_VALGRIND || WEFT_TEST_SANITIZED)
        cr_skip("a million spawns take minutes under Valgrind and the sanitizers");
    struct chain c = { .limit = 50 * 1000 * 1000 };
    cr_assert_null(run_with(1, chain_over_an_older_task, &c));
    cr_assert_eq(atomic_load(&c.older_ran), 1);
    cr_assert_lt(atomic_load(&c.links), c.limit, "the older task ran only once the chain ended");
}

/*
 * A finishing task hands the joiner it wakes straight to its worker, ahead
 * of everything queued there. A chain of joins unwinding is then a run of
 * such handoffs, and it must still yield to the fairness tick: here a task
 * woken just before the chain unwinds (it lands in runnext, then lower in
 * the deque) runs while the chain is still unwinding, not after.
 */
enum { UNWIND_DEPTH = 1000 };

struct unwind {
    weft_chan   *go;
    _Atomic long unwound;        /* chain links that have returned */
    _Atomic long seen_by_woken;  /* unwound, when the woken task ran */
};

static void *woken_before_unwinding(void *arg)
{
    struct unwind *u = arg;
    char c;
    weft_chan_recv(u->go, &c);
    atomic_store(&u->seen_by_woken, atomic_load(&u->unwound));
    return NULL;
}

struct link { struct unwind *u; long left; };

static void *chain_down(void *arg)
{
    struct link *l = arg;
    if (l->left == 0) {
        char c = 1;
        weft_chan_send(l->u->go, &c);   /* wakes the waiter onto this worker */
        return NULL;
    }
    struct link next = { l->u, l->left - 1 };
    weft_task *t;
    if (weft_spawn(&t, chain_down, &next) != 0)
        return (void *)1;
    void *r = NULL;
    weft_join(t, &r);
    atomic_fetch_add(&l->u->unwound, 1);
    return r;
}

static void *unwind_beside_a_woken_task(void *arg)
{
    struct unwind *u = arg;
    weft_task *woken, *chain;
    struct link top = { u, UNWIND_DEPTH };
    if (weft_chan_create(&u->go, 1, 0) != 0 ||
        weft_spawn(&woken, woken_before_unwinding, u) != 0)
        return (void *)1;
    weft_yield();   /* the waiter blocks in its receive */
    if (weft_spawn(&chain, chain_down, &top) != 0)
        return (void *)1;
    void *r = NULL;
    weft_join(chain, &r);
    weft_join(woken, NULL);
    weft_chan_destroy(u->go);
    return r;
}

Test(sched, a_chain_of_joins_unwinding_lets_a_woken_task_run)
{
    struct unwind u = { 0 };
    atomic_store(&u.seen_by_woken, -1);
    cr_assert_null(run_with(1, unwind_beside_a_woken_task, &u));
    cr_assert_eq(atomic_load(&u.unwound), UNWIND_DEPTH);
    cr_assert_geq(atomic_load(&u.seen_by_woken), 0, "the woken task never ran");
    cr_assert_lt(atomic_load(&u.seen_by_woken), UNWIND_DEPTH - 100,
                 "the woken task ran only after %ld of %d links had returned",
                 atomic_load(&u.seen_by_woken), UNWIND_DEPTH);
}

/* A coroutine that spawns one task and then never blocks: the task sits
 * alone in its worker's deque, which thieves leave to its owner for a few
 * microseconds (a spawn is usually followed by a join), but not for longer:
 * another worker must take it, or the spinning spawner would wait forever.
 * (A crowded runtime leaves it to the monitor's takeover instead:
 * crowd::a_crowded_runtime_leaves_a_lone_task_to_its_owner_or_the_monitor.) */
static void *raise_flag(void *arg)
{
    atomic_store((_Atomic int *)arg, 1);
    return NULL;
}

static void *spawn_one_then_spin(void *arg)
{
    (void)arg;
    for (int round = 0; round < 50; round++) {
        _Atomic int flag = 0;
        weft_task *t;
        cr_assert_eq(weft_spawn(&t, raise_flag, &flag), 0);
        while (!atomic_load(&flag))
            sched_yield();   /* the thread's, not weft_yield: only another worker can run
                              * the task; Valgrind's lock would let a bare spin starve it */
        cr_assert_eq(weft_join(t, NULL), 0);
    }
    return NULL;
}

Test(sched, a_lone_task_of_a_coroutine_that_never_blocks_is_taken_by_another_worker, .timeout = 60)
{
    run_with(2, spawn_one_then_spin, NULL);
    run_with(4, spawn_one_then_spin, NULL);
}

/*
 * A task woken by a coroutine that then never blocks: it sits on the
 * waker's runnext, which no thief takes (a woken task is its waker's to
 * run), so the monitor must take it once the waker has held its worker for
 * the rescue threshold, and another worker runs it. Five rounds; the waker
 * spins until the woken task has run, or gives up after 10 s.
 */
struct woken_by_spinner {
    weft_chan  *ch;
    _Atomic int ran;
    int         missed;   /* rounds in which the woken task did not run */
};

static void *receive_then_flag(void *arg)
{
    struct woken_by_spinner *s = arg;
    int v;
    cr_assert_eq(weft_chan_recv(s->ch, &v), 0);
    atomic_store(&s->ran, 1);
    return NULL;
}

static void *wake_then_spin(void *arg)
{
    struct woken_by_spinner *s = arg;
    for (int round = 0; round < 5; round++) {
        atomic_store(&s->ran, 0);
        weft_task *t;
        cr_assert_eq(weft_spawn(&t, receive_then_flag, s), 0);
        int v = round;
        while (weft_chan_try_send(s->ch, &v) == -EAGAIN)
            weft_sleep(100000);   /* until the receiver waits: the send then wakes it */
        uint64_t until = weft_now() + 10000000000u;
        while (!atomic_load(&s->ran) && weft_now() < until)
            sched_yield();   /* the thread's, not weft_yield, which would run the task here */
        s->missed += !atomic_load(&s->ran);
        cr_assert_eq(weft_join(t, NULL), 0);
    }
    return NULL;
}

Test(sched, a_task_woken_by_a_coroutine_that_never_blocks_is_run_by_another_worker, .timeout = 120)
{
    for (unsigned w = 2; w <= 4; w += 2) {
        struct woken_by_spinner s = { 0 };
        cr_assert_eq(weft_chan_create(&s.ch, sizeof(int), 0), 0);
        run_with(w, wake_then_spin, &s);
        cr_assert_eq(s.missed, 0, "%u workers: the woken task waited for its waker in %d of 5 rounds",
                     w, s.missed);
        cr_assert_eq(weft_chan_destroy(s.ch), 0);
    }
}

/*
 * The idle search lasts weft_config.idle_spin_ns. A coroutine sleeps twenty
 * times for 2 ms: with the search off, a worker parks at every sleep; with a
 * search of a second, no worker runs out of it, and none parks in between
 * (the search fires the timers it meets). On both backends and 1, 2 and 4
 * workers. Valgrind turns the search off whatever the configuration says.
 * The environment overrides the field, and a value that is not digits alone
 * is ignored; past its bound, the field is refused. However loaded the
 * machine that runs the test, the runtime never counts itself crowded
 * (crowded_pct 100: tests/test_crowd.c covers that).
 */
static uint64_t parks_while_sleeping(int backend, unsigned workers, uint64_t idle_spin_ns)
{
    return parks_while_sleeping_crowded(backend, workers, idle_spin_ns, 100);
}

Test(sched, an_idle_worker_searches_as_long_as_configured)
{
    static const unsigned counts[] = { 1, 2, 4 };
    unsetenv("WEFT_IDLE_SPIN_US");
    FOR_EACH_BACKEND(b) {
        for (size_t i = 0; i < sizeof counts / sizeof *counts; i++) {
            unsigned w = counts[i];
            uint64_t none = parks_while_sleeping(b, w, UINT64_MAX);
            cr_assert_geq(none, 20, "%s, %u workers: with no search, %llu parks in twenty sleeps",
                          backend_name[b], w, (unsigned long long)none);
            if (RUNNING_ON_VALGRIND)
                continue;
            uint64_t long_search = parks_while_sleeping(b, w, 1000000000u);
            cr_assert_lt(long_search, 5, "%s, %u workers: with a search of a second, %llu parks",
                         backend_name[b], w, (unsigned long long)long_search);
        }
    }
    if (!RUNNING_ON_VALGRIND) {
        setenv("WEFT_IDLE_SPIN_US", "0", 1);   /* the environment turns it off */
        uint64_t env_none = parks_while_sleeping(WEFT_IO_AUTO, 2, 1000000000u);
        cr_assert_geq(env_none, 20, "WEFT_IDLE_SPIN_US=0: %llu parks", (unsigned long long)env_none);
        setenv("WEFT_IDLE_SPIN_US", "1000000", 1);   /* and turns it on */
        uint64_t env_long = parks_while_sleeping(WEFT_IO_AUTO, 2, UINT64_MAX);
        cr_assert_lt(env_long, 5, "WEFT_IDLE_SPIN_US=1000000: %llu parks", (unsigned long long)env_long);
        static const char *const ignored[] = { "-5", "+0", " 0", "0x10", "5us", "" };
        for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++) {
            setenv("WEFT_IDLE_SPIN_US", ignored[i], 1);   /* the field's second-long search stays */
            uint64_t parks = parks_while_sleeping(WEFT_IO_AUTO, 2, 1000000000u);
            cr_assert_lt(parks, 5, "WEFT_IDLE_SPIN_US=\"%s\": %llu parks", ignored[i], (unsigned long long)parks);
        }
        unsetenv("WEFT_IDLE_SPIN_US");
    }
    /* Searching workers see the runtime stop: destroy does not wait out
     * their second. */
    weft_rt *rt = NULL;
    weft_config searching = { .workers = 4, .idle_spin_ns = 1000000000u };
    cr_assert_eq(weft_rt_create(&rt, &searching), 0);
    weft_task *t;
    cr_assert_eq(weft_spawn_on(rt, &t, sleep_twenty, NULL), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    uint64_t t0 = weft_now();
    cr_assert_eq(weft_rt_destroy(rt), 0);
    cr_assert_lt(weft_now() - t0, 500000000u, "destroy took %llu ms beside searching workers",
                 (unsigned long long)((weft_now() - t0) / 1000000u));
    rt = NULL;
    weft_config bad = { .workers = 1, .idle_spin_ns = 1000000001u };
    cr_assert_eq(weft_rt_create(&rt, &bad), -EINVAL);
    cr_assert_null(rt);
    bad.idle_spin_ns = UINT64_MAX - 1;
    cr_assert_eq(weft_rt_create(&rt, &bad), -EINVAL);
    cr_assert_null(rt);
}

/*
 * Coroutines that one reap of a worker's IO makes runnable wait on that
 * worker's private IO queue, not where thieves look (core/park.c, ready).
 * If the first of them then never blocks, the monitor must move the rest
 * once it has held its worker for the rescue threshold, and other workers
 * run them. Eight readers wait on pipes; the test's thread writes to all
 * eight; the first reader to wake spins (sched_yield, never a weft switch)
 * until the seven others have read, or gives up after 10 s. Five rounds on
 * each backend, 2 and 4 workers.
 *
 * Closed with close(2) rather than weft_close, each round's pipes get the
 * numbers of the round before, which the epoll backend still believes
 * registered: a reader's wait then needs no epoll_ctl, gets no event (the
 * kernel dropped the registration), and only a sweep of the set it was
 * registered on ends it. On a stalled worker the monitor must make that
 * sweep (io/epoll.c, set_pending).
 */
/* The test's thread: rt's waiting coroutines as stats count them now. */
static uint64_t waiting_now(weft_rt *rt)
{
    weft_stats s;
    cr_assert_eq(weft_stats_get(rt, &s), 0);
    return s.waiting;
}

/* The test's thread: until rt counts `waiting` coroutines waiting, or 10 s. */
static void await_waiting_count(weft_rt *rt, uint64_t waiting)
{
    uint64_t until = weft_now() + 10000000000u;
    do
        usleep(1000);
    while (waiting_now(rt) < waiting && weft_now() < until);
}

#define IOQ_READERS 8

struct ioq_round {
    int         fds[IOQ_READERS][2];
    _Atomic int spinner;   /* taken by the first reader to wake */
    _Atomic int read;      /* readers other than the spinner that have read */
    int         missed;    /* the spinner gave up waiting for them */
};

struct ioq_reader {
    struct ioq_round *round;
    int               fd;
};

static void *ioq_read(void *arg)
{
    struct ioq_reader *rd = arg;
    struct ioq_round *r = rd->round;
    char c;
    cr_assert_eq(weft_read(rd->fd, &c, 1), 1);
    if (atomic_exchange(&r->spinner, 1) == 0) {
        uint64_t until = weft_now() + 10000000000u;
        while (atomic_load(&r->read) < IOQ_READERS - 1 && weft_now() < until)
            sched_yield();
        r->missed = atomic_load(&r->read) < IOQ_READERS - 1;
    } else {
        atomic_fetch_add(&r->read, 1);
    }
    return NULL;
}

static void readers_behind_a_spinner(int (*close_fn)(int), const char *how)
{
    static const unsigned counts[] = { 2, 4 };
    FOR_EACH_CONFIG(b, w, counts) {
        weft_rt *rt;
        weft_config cfg = { .workers = w, .io_backend = b, .stall_ns = 60000000000u };
        cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
        for (int round = 0; round < 5; round++) {
            struct ioq_round r = { 0 };
            struct ioq_reader rd[IOQ_READERS];
            weft_task *t[IOQ_READERS];
            uint64_t before = waiting_now(rt);
            for (int i = 0; i < IOQ_READERS; i++) {
                cr_assert_eq(pipe(r.fds[i]), 0);
                rd[i] = (struct ioq_reader){ .round = &r, .fd = r.fds[i][0] };
                cr_assert_eq(weft_spawn_on(rt, &t[i], ioq_read, &rd[i]), 0);
            }
            /* Until all eight wait in their reads, so that one write each
             * finds them parked. */
            await_waiting_count(rt, before + IOQ_READERS);
            for (int i = 0; i < IOQ_READERS; i++)
                cr_assert_eq(write(r.fds[i][1], "x", 1), 1);
            for (int i = 0; i < IOQ_READERS; i++) {
                cr_assert_eq(weft_join(t[i], NULL), 0);
                cr_assert_eq(close_fn(r.fds[i][0]), 0);
                cr_assert_eq(close_fn(r.fds[i][1]), 0);
            }
            cr_assert_eq(r.missed, 0, "%s, %u workers, round %d, pipes closed with %s: the readers "
                         "woken beside a coroutine that never blocks waited for it",
                         backend_name[b], w, round, how);
        }
        cr_assert_eq(weft_rt_destroy(rt), 0);
    }
}

Test(sched, coroutines_woken_by_one_reap_behind_one_that_never_blocks_run_elsewhere, .timeout = 240)
{
    readers_behind_a_spinner(weft_close, "weft_close");
}

Test(sched, waits_on_numbers_reused_after_close_behind_a_stalled_worker_end, .timeout = 240)
{
    readers_behind_a_spinner(close, "close(2)");
}


/*
 * The IO queue is private, and runnext comes before it: a pair of coroutines
 * handing messages back and forth through runnext would keep a reader its
 * worker's IO woke waiting for as long as they go on, but for the fairness
 * tick, which looks at the IO queue every 61 choices. A reader waits on a
 * pipe; a pair starts a ping-pong, and once it runs on the reader's worker
 * the test's thread writes to the pipe; the pair goes on until the reader
 * has read, or for 10 s, and the reader must have read while the pair still
 * ran. A round where the pair settles on the other worker proves nothing
 * and is tried again, up to 40 rounds, until five have shared a worker.
 * Both backends, 2 workers. No .timeout: with one, Criterion 2.4.1's runner
 * leaked 48 bytes (LeakSanitizer) whenever this test ran beside
 * a_lone_task_of_a_coroutine_that_never_blocks_is_taken_by_another_worker.
 */
struct pair_and_reader {
    weft_chan  *ch;
    int         fds[2];
    _Atomic int reader_worker;
    _Atomic int pair_worker;   /* -1 until the pinger has run */
    _Atomic int read;
    _Atomic int stop;          /* the test's thread: end the pair now */
    int         read_late;     /* the pinger ran out of time before the read */
};

static void *pipe_reader(void *arg)
{
    struct pair_and_reader *p = arg;
    char c;
    atomic_store(&p->reader_worker, weft_worker());
    cr_assert_eq(weft_read(p->fds[0], &c, 1), 1);
    atomic_store(&p->read, 1);
    return NULL;
}

static void *pinger(void *arg)
{
    struct pair_and_reader *p = arg;
    uint64_t until = weft_now() + 10000000000u;
    int v = 1;
    while (!atomic_load(&p->read) && !atomic_load(&p->stop) && weft_now() < until) {
        cr_assert_eq(weft_chan_send(p->ch, &v), 0);
        atomic_store(&p->pair_worker, weft_worker());
    }
    p->read_late = !atomic_load(&p->read) && !atomic_load(&p->stop);
    v = 0;
    cr_assert_eq(weft_chan_send(p->ch, &v), 0);
    return NULL;
}

static void *ponger(void *arg)
{
    struct pair_and_reader *p = arg;
    int v;
    do
        cr_assert_eq(weft_chan_recv(p->ch, &v), 0);
    while (v);
    return NULL;
}

Test(sched, a_coroutine_woken_by_io_is_not_held_up_by_a_pair_passing_messages)
{
    FOR_EACH_BACKEND(b) {
        weft_rt *rt;
        weft_config cfg = { .workers = 2, .io_backend = b };
        cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
        int shared = 0;
        for (int round = 0; round < 40 && shared < 5; round++) {
            struct pair_and_reader p = { .pair_worker = -1, .reader_worker = -1 };
            cr_assert_eq(weft_chan_create(&p.ch, sizeof(int), 0), 0);
            cr_assert_eq(pipe(p.fds), 0);
            uint64_t before = waiting_now(rt);
            weft_task *r, *a, *z;
            cr_assert_eq(weft_spawn_on(rt, &r, pipe_reader, &p), 0);
            await_waiting_count(rt, before + 1);   /* the reader waits in its read */
            cr_assert_eq(weft_spawn_on(rt, &z, ponger, &p), 0);
            cr_assert_eq(weft_spawn_on(rt, &a, pinger, &p), 0);
            usleep(20000);   /* the pair settles on one worker */
            bool same = atomic_load(&p.pair_worker) == atomic_load(&p.reader_worker);
            if (!same)
                atomic_store(&p.stop, 1);
            cr_assert_eq(write(p.fds[1], "x", 1), 1);
            cr_assert_eq(weft_join(r, NULL), 0);
            cr_assert_eq(weft_join(a, NULL), 0);
            cr_assert_eq(weft_join(z, NULL), 0);
            cr_assert_eq(weft_close(p.fds[0]), 0);
            cr_assert_eq(weft_close(p.fds[1]), 0);
            cr_assert_eq(weft_chan_destroy(p.ch), 0);
            if (!same)
                continue;
            shared++;
            cr_assert_eq(p.read_late, 0, "%s, round %d: the reader woke only after the pair on "
                         "its worker had passed messages for 10 s", backend_name[b], round);
        }
        cr_assert_geq(shared, 1, "%s: in 40 rounds the pair never ran on the reader's worker",
                      backend_name[b]);
        cr_assert_eq(weft_rt_destroy(rt), 0);
    }
}

/*
 * While every worker is busy, a worker's IO queue stays whole, however long
 * (core/park.c, ready); once another worker is idle, a long queue must go
 * where that worker can take from it. A coroutine pinned to one worker
 * spawns readers there, each waiting on a pipe, and waits until the other
 * worker has had time to go idle; then it writes to every pipe at once. One
 * reap makes them all runnable on their worker's IO queue; each then
 * computes for a millisecond without a switch (less than the monitor's
 * rescue threshold, so that only the spill can move them). Some of those
 * that waited on that worker must run on the other. A reader that a thief
 * took before it waited, and so waited on the other worker, returns at once:
 * that worker must stay free. A round proves nothing, and is tried again,
 * with 16 or fewer readers on the spawner's worker, or if the other worker's
 * thread got no CPU from the kernel until fewer than three of them were left
 * to begin (share_other_had_a_cpu: woken, it has waited for one through a
 * whole round beside other tests on two cores). Both backends,
 * 2 workers, three rounds that count, at most twenty.
 */
Test(sched, a_long_io_queue_is_shared_with_an_idle_worker)
{
    FOR_EACH_BACKEND(b) {
        int counted = 0;
        for (int round = 0; round < 20 && counted < 3; round++) {
            struct share_round r = { .home = -1 };
            weft_config cfg = { .workers = 2, .io_backend = b, .crowded_pct = 100 };   /* spills by age too */
            cr_assert_eq(weft_main(&cfg, share_spawner, &r, NULL), 0);
            int home = atomic_load(&r.waited_home), moved = atomic_load(&r.moved);
            if (home < 17 || !share_other_had_a_cpu(&r, 3))
                continue;
            counted++;
            cr_assert_gt(moved, 0, "%s, round %d: none of the %d readers woken on one worker ran "
                         "on the idle one", backend_name[b], round, home);
        }
        cr_assert_gt(counted, 0, "%s: in no round did 17 readers wait on the spawner's worker "
                     "and the other worker get a CPU while 3 of them were still to begin",
                     backend_name[b]);
    }
}

/*
 * ... and while every other worker runs tasks, the IO queue stays whole and
 * runs in the order its IO finished, however long it grows (core/park.c,
 * ready): spilled onto the deque, whose owner runs the newest task first,
 * the first tasks woken would run last. One worker is held by a pinned
 * coroutine that never switches; on the other, 64 readers wait on one pipe,
 * in turn, and the test's thread closes its write end: one reap (the worker
 * sleeps in its IO, parked, and must not count itself as free) wakes them
 * all, in the order they waited. They must run in that order. The epoll
 * backend, whose wake order is the order of the waits; the rule is the
 * scheduler's, the same on both.
 */
#define ORDER_READERS 64

struct order_run {
    int         fds[2];
    _Atomic int hog_worker, stop, waiting, next;
    int         spawner_worker;
    int         waited_on[ORDER_READERS], ran_on[ORDER_READERS], ran_as[ORDER_READERS];
};

static void *order_hog(void *arg)
{
    struct order_run *r = arg;
    cr_assert_eq(weft_pin(), 0);
    atomic_store(&r->hog_worker, weft_worker());
    while (!atomic_load(&r->stop))
        ;
    cr_assert_eq(weft_unpin(), 0);
    return NULL;
}

struct order_reader {
    struct order_run *run;
    int               i;
};

static void *order_read(void *arg)
{
    struct order_reader *rd = arg;
    struct order_run *r = rd->run;
    r->waited_on[rd->i] = weft_worker();
    atomic_fetch_add(&r->waiting, 1);
    char c;
    cr_assert_eq(weft_read(r->fds[0], &c, 1), 0);
    r->ran_as[rd->i] = atomic_fetch_add(&r->next, 1);
    r->ran_on[rd->i] = weft_worker();
    return NULL;
}

static void *order_spawner(void *arg)
{
    struct order_run *r = arg;
    struct order_reader rd[ORDER_READERS];
    weft_task *t[ORDER_READERS];
    cr_assert_eq(weft_pin(), 0);
    r->spawner_worker = weft_worker();
    for (int i = 0; i < ORDER_READERS; i++) {
        rd[i] = (struct order_reader){ r, i };
        cr_assert_eq(weft_spawn(&t[i], order_read, &rd[i]), 0);
        weft_yield();   /* it waits before the next one starts */
    }
    for (int i = 0; i < ORDER_READERS; i++)
        cr_assert_eq(weft_join(t[i], NULL), 0);
    cr_assert_eq(weft_unpin(), 0);
    return NULL;
}

Test(sched, a_long_io_queue_runs_in_the_order_its_io_finished_while_the_other_workers_are_busy)
{
    const char *shuffle = getenv("WEFT_SCHED_RANDOM");
    if (shuffle && *shuffle && strcmp(shuffle, "0") != 0)
        cr_skip("random scheduling sends wake-ups to the global queue on purpose");
    if (!backend_available(WEFT_IO_EPOLL))
        cr_skip("no epoll backend");
    for (int round = 0; round < 3; round++) {
        static struct order_run r;
        memset(&r, 0, sizeof r);
        r.hog_worker = -1;
        cr_assert_eq(pipe2(r.fds, O_CLOEXEC), 0);
        weft_config cfg = { .workers = 2, .io_backend = WEFT_IO_EPOLL, .stall_ns = UINT64_MAX };
        weft_rt *rt;
        cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
        weft_task *hog, *spawner;
        cr_assert_eq(weft_spawn_on(rt, &hog, order_hog, &r), 0);
        while (atomic_load(&r.hog_worker) < 0)
            usleep(1000);
        cr_assert_eq(weft_spawn_on(rt, &spawner, order_spawner, &r), 0);
        await_waiting_count(rt, ORDER_READERS + 1);   /* the readers in their reads, the spawner joining */
        usleep(20000);   /* their worker, with nothing else to do, asleep in its IO */
        cr_assert_eq(close(r.fds[1]), 0);
        cr_assert_eq(weft_join(spawner, NULL), 0);
        atomic_store(&r.stop, 1);
        cr_assert_eq(weft_join(hog, NULL), 0);
        cr_assert_eq(weft_rt_destroy(rt), 0);
        cr_assert_eq(close(r.fds[0]), 0);
        cr_assert_neq(r.spawner_worker, r.hog_worker, "round %d: the spawner ran beside the hog", round);
        int prev = -1, kept = 0;
        for (int i = 0; i < ORDER_READERS; i++) {
            if (r.waited_on[i] != r.spawner_worker || r.ran_on[i] != r.spawner_worker)
                continue;   /* stolen before it waited: not on this queue */
            cr_assert_gt(r.ran_as[i], prev, "round %d: reader %d, woken after %d others, ran as "
                         "number %d, before one woken earlier", round, i, kept, r.ran_as[i]);
            prev = r.ran_as[i];
            kept++;
        }
        cr_assert_geq(kept, ORDER_READERS / 2, "round %d: only %d readers waited and ran on the "
                      "spawner's worker", round, kept);
    }
}
