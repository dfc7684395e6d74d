/* SPDX-License-Identifier: MIT */
/* A task's handle: what it names, what join and detach hand back, and where
 * they may be called from. */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void *who_am_i(void *arg) { return weft_self(); }

static void *self_matches_the_spawners_handle(void *arg)
{
    weft_task *t;
    void *seen = NULL;
    if (weft_spawn(&t, who_am_i, NULL) != 0)
        return (void *)1;
    weft_task *handle = t;
    weft_join(t, &seen);
    return (void *)(uintptr_t)(seen != handle);
}

Test(task, self_is_the_handle_its_spawner_received)
{
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], self_matches_the_spawners_handle, NULL), 0);
}

static void *report_workers(void *arg)
{
    int *out = arg;
    out[0] = weft_workers();
    out[1] = weft_worker();
    return NULL;
}

Test(task, knows_how_many_workers_it_has_and_which_one_runs_it)
{
    for (size_t i = 0; i < SWEEP_N; i++) {
        int out[2] = { -1, -1 };
        run_with(sweep_workers[i], report_workers, out);
        cr_assert_eq(out[0], (int)sweep_workers[i]);
        cr_assert_geq(out[1], 0);
        cr_assert_lt(out[1], (int)sweep_workers[i]);
    }
}

static void *double_it(void *arg) { return (void *)((uintptr_t)arg * 2); }

Test(task, join_from_a_plain_thread_returns_the_value_the_coroutine_returned)
{
    for (size_t w = 0; w < SWEEP_N; w++) {
        weft_rt *rt;
        cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = sweep_workers[w] }), 0);
        weft_task *t[16];
        for (uintptr_t i = 0; i < 16; i++)
            cr_assert_eq(weft_spawn_on(rt, &t[i], double_it, (void *)i), 0);
        for (uintptr_t i = 0; i < 16; i++) {
            void *r = NULL;
            cr_assert_eq(weft_join(t[i], &r), 0);
            cr_assert_eq((uintptr_t)r, 2 * i);
        }
        cr_assert_eq(weft_rt_destroy(rt), 0);
    }
}

static _Atomic int finished;

static void *finish(void *arg)
{
    atomic_fetch_add(&finished, 1);
    return NULL;
}

static void *detach_after_it_finished(void *arg)
{
    weft_task *t;
    if (weft_spawn(&t, finish, NULL) != 0)
        return (void *)-1;
    while (atomic_load(&finished) == 0)
        weft_yield();
    return (void *)(intptr_t)weft_detach(t);   /* it may have finished already */
}

Test(task, detaching_a_finished_task_releases_it)
{
    for (size_t i = 0; i < SWEEP_N; i++) {
        atomic_store(&finished, 0);
        cr_assert_eq((intptr_t)run_with(sweep_workers[i], detach_after_it_finished, NULL), 0);
        cr_assert_eq(atomic_load(&finished), 1);
    }
}

static void *joined_later(void *arg)
{
    weft_task *t;
    if (weft_spawn(&t, double_it, (void *)21) != 0)
        return NULL;
    for (int i = 0; i < 50; i++)   /* give it every chance to finish first */
        weft_yield();
    void *r = NULL;
    weft_join(t, &r);
    return r;
}

Test(task, join_after_the_task_finished_still_returns_its_value)
{
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], joined_later, NULL), 42);
}

/* Handles spawned by a plain thread and freed by a coroutine's joins go
 * through the workers' caches and the shared pool; the plain thread's next
 * spawns must find them there rather than grow the runtime's memory. */
#define REUSE_N 600   /* well above what the workers' caches hold: 64 each */

struct reuse {
    weft_task *t[REUSE_N];
    size_t     bad;   /* joins that failed or returned the wrong value */
};

static void *join_all(void *arg)
{
    struct reuse *r = arg;
    for (uintptr_t i = 0; i < REUSE_N; i++) {
        void *v = NULL;
        if (weft_join(r->t[i], &v) != 0 || (uintptr_t)v != 2 * i)
            r->bad++;
    }
    return NULL;
}

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(weft_task *const *)a, y = (uintptr_t)*(weft_task *const *)b;
    return (x > y) - (x < y);
}

Test(task, handles_freed_by_coroutines_serve_the_spawns_of_plain_threads)
{
    static struct reuse r;
    static weft_task *seen[REUSE_N];
    for (size_t w = 0; w < SWEEP_N; w++) {
        weft_rt *rt;
        cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = sweep_workers[w] }), 0);
        for (int round = 0; round < 2; round++) {
            r.bad = 0;
            for (uintptr_t i = 0; i < REUSE_N; i++)
                cr_assert_eq(weft_spawn_on(rt, &r.t[i], double_it, (void *)i), 0);
            size_t fresh = 0;
            for (size_t i = 0; i < REUSE_N && round > 0; i++)
                fresh += !bsearch(&r.t[i], seen, REUSE_N, sizeof(*seen), by_address);
            weft_task *j;
            cr_assert_eq(weft_spawn_on(rt, &j, join_all, &r), 0);
            cr_assert_eq(weft_join(j, NULL), 0);
            cr_assert_eq(r.bad, 0);
            if (round == 0) {
                memcpy(seen, r.t, sizeof(seen));
                qsort(seen, REUSE_N, sizeof(*seen), by_address);
            } else {
                /* Only the few that the workers' own caches still hold may be new. */
                cr_assert_leq(fresh, 64 * (size_t)sweep_workers[w] + 1,
                              "%zu of %d handles were new in round %d", fresh, REUSE_N, round);
            }
        }
        cr_assert_eq(weft_rt_destroy(rt), 0);
    }
}

/* Who frees a handle is settled between its holder (a join or a detach) and
 * the task finishing, perhaps on another worker at that very moment. A handle
 * freed twice would be handed to two later spawns at once, and one of them
 * would return the other's value; one never freed would leak (Valgrind). */
#define RACE_N 300

static _Atomic size_t race_ran;

static void *busy_double(void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    for (volatile unsigned k = 0; k < (i % 7) * 40; k++)   /* finish at varied moments */
        ;
    atomic_fetch_add(&race_ran, 1);
    return (void *)(2 * i);
}

static void *race_the_finish(void *arg)
{
    static weft_task *t[RACE_N];
    size_t bad = 0;
    for (uintptr_t i = 0; i < RACE_N; i++)
        if (weft_spawn(&t[i], busy_double, (void *)i) != 0)
            return (void *)-1;
    for (uintptr_t i = 0; i < RACE_N; i++) {
        if (i % 5 == 0)
            weft_yield();   /* let some finish before their handle is let go */
        void *r = NULL;
        if (i % 3 == 2)
            bad += weft_join(t[i], &r) != 0 || (uintptr_t)r != 2 * i;
        else
            bad += weft_detach(t[i]) != 0;
    }
    /* The next wave reuses the handles freed by the first. */
    for (uintptr_t i = 0; i < RACE_N; i++)
        if (weft_spawn(&t[i], busy_double, (void *)i) != 0)
            return (void *)-1;
    for (uintptr_t i = 0; i < RACE_N; i++) {
        void *r = NULL;
        bad += weft_join(t[i], &r) != 0 || (uintptr_t)r != 2 * i;
    }
    return (void *)bad;
}

Test(task, detaching_or_joining_as_the_task_finishes_frees_each_handle_once)
{
    for (size_t i = 0; i < SWEEP_N; i++) {
        atomic_store(&race_ran, 0);
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], race_the_finish, NULL), 0,
                     "joins or detaches failed, or returned another task's value (%u workers)",
                     sweep_workers[i]);
        cr_assert_eq(atomic_load(&race_ran), 2 * RACE_N);   /* destroy waited for the detached */
    }
}

static void *main_result(void *arg) { return (void *)((uintptr_t)arg + 1); }

Test(task, weft_main_hands_back_the_first_coroutines_result)
{
    void *r = NULL;
    cr_assert_eq(weft_main(NULL, main_result, (void *)41, &r), 0);
    cr_assert_eq((uintptr_t)r, 42);
}

/*
 * A join whose deadline expires just as its task finishes. The finisher
 * claims the joiner's waiter (in the joiner's frame) after it has taken the
 * handle; a joiner whose deadline won the claim must keep that waiter alive
 * until the finisher is done with it, not only until it learns the task has
 * finished. Each round moves the task's end towards the point where the two
 * outcomes meet: earlier after a join that timed out, later after one that
 * did not (a staircase, which finds that point on any machine and under any
 * instrumentation), so that many rounds land the two together;
 * AddressSanitizer then reports a waiter used after its scope. The joiner is
 * a coroutine, then a plain thread. Either outcome is right: 0 and the
 * result, or -ETIMEDOUT with the handle still joinable.
 */
#define JOIN_EDGE_ROUNDS 4000
#define JOIN_EDGE_STEP   1500   /* ns the task's end moves per round */

struct join_edge {
    int64_t offset;             /* the task ends this long after the deadline */
    size_t  timed_out, joined;  /* the outcomes seen, for the message */
    size_t  bad;                /* joins that failed otherwise, or returned another value */
};

static void *finish_at(void *arg)
{
    uint64_t when = (uint64_t)(uintptr_t)arg;
    while (weft_now() < when)
        ;
    return arg;
}

/* One round: spawned on rt (a plain thread) or on the caller's runtime. */
static void join_at_the_edge(weft_rt *rt, struct join_edge *e)
{
    /* Enough for the joiner to park before its deadline. */
    uint64_t lead = RUNNING_ON_VALGRIND || WEFT_TEST_SANITIZED ? 200000 : 50000;
    uint64_t deadline = weft_now() + lead;
    uint64_t end = (uint64_t)((int64_t)deadline + e->offset);
    weft_task *t;
    int err = rt ? weft_spawn_on(rt, &t, finish_at, (void *)(uintptr_t)end)
                 : weft_spawn(&t, finish_at, (void *)(uintptr_t)end);
    if (err) {
        e->bad++;
        return;
    }
    void *r = NULL;
    uint64_t before = weft_deadline(deadline);
    int got = weft_join(t, &r);
    weft_deadline(before);
    if (got == -ETIMEDOUT) {
        e->timed_out++;
        if (e->offset > -(int64_t)lead / 2)
            e->offset -= JOIN_EDGE_STEP;
        got = weft_join(t, &r);   /* the handle stays joinable */
    } else {
        e->joined++;
        if (e->offset < (int64_t)lead)
            e->offset += JOIN_EDGE_STEP;
    }
    e->bad += got != 0 || (uintptr_t)r != (uintptr_t)end;
}

static void *coroutine_joins_at_the_edge(void *arg)
{
    struct join_edge *e = arg;
    for (size_t i = 0; i < JOIN_EDGE_ROUNDS; i++)
        join_at_the_edge(NULL, e);
    return NULL;
}

Test(task, a_join_whose_deadline_expires_as_the_task_finishes_keeps_its_waiter_alive)
{
    FOR_EACH_BACKEND(b) {
        struct join_edge e = { 0 };
        run_with_io(2, b, coroutine_joins_at_the_edge, &e);
        cr_assert_eq(e.bad, 0, "%zu of %d joins by a coroutine failed on %s (%zu timed out, %zu joined)",
                     e.bad, JOIN_EDGE_ROUNDS, backend_name[b], e.timed_out, e.joined);

        e = (struct join_edge){ 0 };
        weft_rt *rt;
        cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 2, .io_backend = b }), 0);
        for (size_t i = 0; i < JOIN_EDGE_ROUNDS; i++)
            join_at_the_edge(rt, &e);
        cr_assert_eq(weft_rt_destroy(rt), 0);
        cr_assert_eq(e.bad, 0, "%zu of %d joins by a plain thread failed on %s (%zu timed out, %zu joined)",
                     e.bad, JOIN_EDGE_ROUNDS, backend_name[b], e.timed_out, e.joined);
    }
}
