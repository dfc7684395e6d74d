/* SPDX-License-Identifier: MIT */
/*
 * Scenes that the scheduler's suite and the crowding suite both stage: a
 * coroutine that sleeps twenty times, counting the workers' parks; readers
 * woken on one worker at once (the IO queue's share with an idle worker).
 * Included once per suite, after common.h.
 */
#ifndef WEFT_TEST_SCENES_H
#define WEFT_TEST_SCENES_H

#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>

/* The idle search: a coroutine sleeps twenty times for 2 ms on a fresh
 * runtime; returns the parks of the workers during a second such run. */
static void *sleep_twenty(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20; i++)
        weft_sleep(2000000);
    return NULL;
}

static uint64_t parks_while_sleeping_crowded(int backend, unsigned workers, uint64_t idle_spin_ns,
                                            unsigned crowded_pct)
{
    weft_rt *rt;
    weft_config cfg = { .workers = workers, .io_backend = backend, .idle_spin_ns = idle_spin_ns,
                        .crowded_pct = crowded_pct };
    cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
    weft_task *t;
    cr_assert_eq(weft_spawn_on(rt, &t, sleep_twenty, NULL), 0);
    cr_assert_eq(weft_join(t, NULL), 0);   /* the workers have started and searched by now */
    weft_stats before, after;
    cr_assert_eq(weft_stats_get(rt, &before), 0);
    cr_assert_eq(weft_spawn_on(rt, &t, sleep_twenty, NULL), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert_eq(weft_stats_get(rt, &after), 0);
    cr_assert_eq(weft_rt_destroy(rt), 0);
    return after.worker_parks - before.worker_parks;
}


/* The IO queue's share (sched::a_long_io_queue_is_shared_with_an_idle_worker
 * says how): a pinned spawner starts readers on its worker, waits until the
 * other worker has gone idle, and writes to every pipe at once. */
#define SHARE_READERS 48
#define SHARE_READERS_MAX 80

struct share_round {
    int         fds[SHARE_READERS_MAX][2];
    int         n;             /* readers; 0: SHARE_READERS */
    uint64_t    compute_ns;    /* each woken reader computes; 0: a millisecond */
    weft_rt    *crowd;         /* if set: the runtime; first, prepare(crowd) says whether it is */
    bool      (*prepare)(weft_rt *rt);   /* crowded, and `crowded` then says whether it */
    bool        crowded;       /* ... still was from the data's coming to the last join, */
    _Atomic bool lapsed;       /* ... or was seen not to be by a reader as it woke, */
    uint64_t    steals;        /* ... and its steals from the data's coming to the last join, */
    uint64_t    takeovers;     /* ... and the monitor's takeovers of a worker then */
    int         home;
    _Atomic int waiting;
    _Atomic int waited_home;   /* readers that waited on `home` */
    _Atomic int moved;         /* ... and ran on the other worker once woken */
    int         other_tid;     /* the other worker's thread */
    long long   other_runs;    /* ... its runs on a CPU (thread_runs) as the data came */
    _Atomic int started_home;  /* readers woken on `home` that began to compute there */
    _Atomic int other_ran;     /* 1 + how many had begun when one saw that the other
                                * worker had been on a CPU since the data came; 0: none saw */
};

/* Whether the other worker had a CPU while enough of the readers woken on
 * `home` were still to begin that it could take some: a machine whose
 * scheduler left it waiting for one through the round (a loaded machine
 * can, for tens of milliseconds) says nothing of weft. Where the thread or
 * its schedstat cannot be found, every round counts. */
static inline bool share_other_had_a_cpu(const struct share_round *r, int left)
{
    int k = atomic_load(&r->other_ran);
    return r->other_runs < 0 || (k > 0 && atomic_load(&r->waited_home) - k >= left);
}

struct share_reader {
    struct share_round *round;
    int                 i;
};

static void *share_read(void *arg)
{
    struct share_reader *rd = arg;
    struct share_round *r = rd->round;
    int before = weft_worker();
    atomic_fetch_add(&r->waiting, 1);
    char c;
    cr_assert_eq(weft_read(r->fds[rd->i][0], &c, 1), 1);
    if (before != r->home)
        return NULL;   /* the other worker's: it must stay free */
    atomic_fetch_add(&r->waited_home, 1);
    if (weft_worker() != r->home) {
        atomic_fetch_add(&r->moved, 1);
    } else {
        int k = atomic_fetch_add(&r->started_home, 1);
        if (!atomic_load(&r->other_ran) && r->other_runs >= 0 && thread_runs(r->other_tid) > r->other_runs)
            atomic_store(&r->other_ran, k + 1);
    }
    weft_stats s;
    if (r->crowd && weft_stats_get(r->crowd, &s) == 0 && !s.crowded)
        atomic_store(&r->lapsed, true);
    uint64_t until = weft_now() + (r->compute_ns ? r->compute_ns : 1000000);
    while (weft_now() < until)
        ;
    return NULL;
}

static void *share_spawner(void *arg)
{
    struct share_round *r = arg;
    struct share_reader rd[SHARE_READERS_MAX];
    weft_task *t[SHARE_READERS_MAX];
    int n = r->n ? r->n : SHARE_READERS;
    cr_assert_eq(weft_pin(), 0);
    r->home = weft_worker();
    if (r->crowd)
        r->crowded = r->prepare(r->crowd);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(pipe2(r->fds[i], O_CLOEXEC), 0);
        rd[i] = (struct share_reader){ r, i };
        cr_assert_eq(weft_spawn(&t[i], share_read, &rd[i]), 0);
        weft_yield();   /* it runs here first, most often: runnext */
    }
    while (atomic_load(&r->waiting) < n)
        weft_sleep(1000000);
    weft_sleep(20000000);   /* the other worker, with nothing to do, goes idle */
    char name[32];
    snprintf(name, sizeof name, "weft-worker-%d", 1 - r->home);
    r->other_runs = threads_named(name, &r->other_tid, 1) == 1 ? thread_runs(r->other_tid) : -1;
    weft_stats before, after;
    if (r->crowd) {
        cr_assert_eq(weft_stats_get(r->crowd, &before), 0);
        r->crowded = r->crowded && before.crowded;
    }
    for (int i = 0; i < n; i++)
        cr_assert_eq(write(r->fds[i][1], "x", 1), 1);
    for (int i = 0; i < n; i++)
        cr_assert_eq(weft_join(t[i], NULL), 0);
    if (r->crowd) {
        cr_assert_eq(weft_stats_get(r->crowd, &after), 0);
        r->crowded = r->crowded && after.crowded && !atomic_load(&r->lapsed);
        r->steals = after.steals - before.steals;
        r->takeovers = after.worker_takeovers - before.worker_takeovers;
    }
    for (int i = 0; i < n; i++) {
        cr_assert_eq(weft_close(r->fds[i][0]), 0);
        cr_assert_eq(weft_close(r->fds[i][1]), 0);
    }
    cr_assert_eq(weft_unpin(), 0);
    return NULL;
}

#endif
