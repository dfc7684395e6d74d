/* SPDX-License-Identifier: MIT */
/*
 * Crowding (core/crowd.c): a runtime whose workers wait for a CPU counts
 * itself crowded, and then helps less between its workers. The tests start
 * spinning threads to crowd the machine, so the suite runs alone and its
 * tests one at a time (tests/CMakeLists.txt).
 */
#define _GNU_SOURCE
#include "common.h"
#include "scenes.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

/*
 * Crowding (core/crowd.c): while more threads want the CPUs than there are,
 * a runtime of several workers counts itself crowded (weft_stats.crowded,
 * crowded_ns). Plain threads spin, two per CPU, beside two coroutines that
 * compute (yielding every 100 us, so that no stall is reported): with the
 * default threshold the runtime must count itself crowded within five
 * seconds, and forget it within two once idle. With crowded_pct 100, with
 * WEFT_CROWDED_PCT=0 in the environment, or with one worker, it never does
 * (a third of a second of the same); the environment's 50 overrides the
 * field's 100. Above 100 is refused.
 */
struct spinners {
    pthread_t    th[128];   /* not allocated: a failed assertion leaves nothing to leak */
    int          n;
    _Atomic bool stop;
};

static void *spin_until_stopped(void *arg)
{
    struct spinners *s = arg;
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed))
        ;
    return NULL;
}

/* Starts `per_cpu` spinning threads per CPU. */
static void spinners_start(struct spinners *s, int per_cpu)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    s->n = (int)(cpus > 0 && cpus < 64 ? cpus : 64) * per_cpu;
    atomic_store(&s->stop, false);
    for (int i = 0; i < s->n; i++)
        cr_assert_eq(pthread_create(&s->th[i], NULL, spin_until_stopped, s), 0);
}

static void spinners_stop(struct spinners *s)
{
    atomic_store(&s->stop, true);
    for (int i = 0; i < s->n; i++)
        cr_assert_eq(pthread_join(s->th[i], NULL), 0);
}

struct computing {
    weft_rt  *rt;
    uint64_t  for_ns;          /* compute at most this long, */
    bool      until_crowded;   /* ... or until the runtime counts itself crowded */
    bool      seen;            /* weft_stats.crowded was seen 1, */
    uint64_t  crowded_ns;      /* ... and crowded_ns at the end */
};

static void *compute_yielding(void *arg)
{
    _Atomic bool *stop = arg;
    while (!atomic_load(stop)) {
        uint64_t until = weft_now() + 100000;
        while (weft_now() < until)
            ;
        weft_yield();
    }
    return NULL;
}

static void *compute_and_watch(void *arg)
{
    struct computing *c = arg;
    _Atomic bool stop = false;
    weft_task *t[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(weft_spawn(&t[i], compute_yielding, &stop), 0);
    uint64_t until = weft_now() + c->for_ns;
    weft_stats s;
    do {
        weft_sleep(1000000);
        cr_assert_eq(weft_stats_get(c->rt, &s), 0);
        c->seen |= s.crowded != 0;
    } while (!(c->until_crowded && c->seen) && weft_now() < until);
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(weft_join(t[i], NULL), 0);
    c->crowded_ns = s.crowded_ns;
    return NULL;
}

/* A coroutine of rt computes until rt counts itself crowded, or 5 s;
 * returns whether it did. */
static bool compute_until_crowded(weft_rt *rt)
{
    struct computing c = { .rt = rt, .for_ns = 5000000000u, .until_crowded = true };
    compute_and_watch(&c);
    return c.seen;
}

/* Two coroutines compute on a fresh runtime; returns whether it counted
 * itself crowded. Once they are done, the idle runtime must forget that it
 * was within 2 s, however busy the machine, since nothing it does says so. */
static bool crowded_while_computing(unsigned workers, unsigned crowded_pct, uint64_t for_ns, bool until_crowded)
{
    weft_config cfg = { .workers = workers, .crowded_pct = crowded_pct };
    struct computing c = { .for_ns = for_ns, .until_crowded = until_crowded };
    cr_assert_eq(weft_rt_create(&c.rt, &cfg), 0);
    weft_task *t;
    cr_assert_eq(weft_spawn_on(c.rt, &t, compute_and_watch, &c), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    weft_stats s;
    uint64_t until = weft_now() + 2000000000u;
    do {
        usleep(10000);
        cr_assert_eq(weft_stats_get(c.rt, &s), 0);
    } while (s.crowded && weft_now() < until);
    cr_assert_eq(s.crowded, 0, "an idle runtime still counts itself crowded after 2 s");
    cr_assert_eq(weft_rt_destroy(c.rt), 0);
    return c.seen || c.crowded_ns;
}

/* Whether this kernel counts each thread's time on a CPU and run delay:
 * the file is there and its first field, this thread's time so far, is not
 * zero (a kernel built without schedstats may print zeros). The yield makes
 * the kernel bring the figure up to date. */
static bool have_schedstat(void)
{
    sched_yield();
    return thread_cpu_ns((int)syscall(SYS_gettid)) > 0;
}

/* Skips a test where a runtime cannot be crowded on purpose (no schedstat;
 * Valgrind, which runs one thread at a time, so that the others sleep and
 * none waits for a CPU) or where random scheduling sends tasks to the global
 * queue, for `random_does`; then lets the default threshold decide. */
static void skip_unless_crowdable(const char *random_does)
{
    if (!have_schedstat())
        cr_skip("no schedstat here: a runtime is never crowded");
    if (RUNNING_ON_VALGRIND)
        cr_skip("Valgrind runs one thread at a time: the others sleep, none waits for a CPU");
    const char *shuffle = getenv("WEFT_SCHED_RANDOM");
    if (shuffle && *shuffle && strcmp(shuffle, "0") != 0)
        cr_skip("random scheduling sends %s to the global queue on purpose", random_does);
    unsetenv("WEFT_CROWDED_PCT");
}

Test(crowd, a_runtime_whose_workers_wait_for_a_cpu_counts_itself_crowded)
{
    weft_rt *rt = NULL;
    weft_config bad = { .crowded_pct = 101 };
    cr_assert_eq(weft_rt_create(&rt, &bad), -EINVAL);
    cr_assert_null(rt);
    if (!have_schedstat())
        cr_skip("no schedstat here: a runtime is never crowded");
    if (RUNNING_ON_VALGRIND)
        cr_skip("Valgrind runs one thread at a time: the others sleep, none waits for a CPU");
    unsetenv("WEFT_CROWDED_PCT");
    struct spinners sp;
    spinners_start(&sp, 2);
    bool seen = crowded_while_computing(2, 0, 5000000000u, true);
    bool never = crowded_while_computing(2, 100, 300000000u, false);
    bool one = crowded_while_computing(1, 0, 300000000u, false);
    setenv("WEFT_CROWDED_PCT", "0", 1);
    bool env_never = crowded_while_computing(2, 0, 300000000u, false);
    setenv("WEFT_CROWDED_PCT", "50", 1);
    bool env_seen = crowded_while_computing(2, 100, 5000000000u, true);
    unsetenv("WEFT_CROWDED_PCT");
    spinners_stop(&sp);
    cr_assert(seen, "two computing workers beside %d spinning threads never counted themselves crowded", sp.n);
    cr_assert(!never, "crowded_pct 100: crowded");
    cr_assert(!one, "one worker: crowded");
    cr_assert(!env_never, "WEFT_CROWDED_PCT=0: crowded");
    cr_assert(env_seen, "WEFT_CROWDED_PCT=50 over crowded_pct 100: never crowded");
}

/*
 * A crowded runtime's idle worker parks without searching: beside the same
 * spinning threads, a coroutine sleeps twenty times for 2 ms on a runtime
 * whose search lasts a second. Counting itself crowded (the default), its
 * workers park at most sleeps; told never to (crowded_pct 100), they search
 * through them, as an_idle_worker_searches_as_long_as_configured shows on
 * a quiet machine. Two workers, both backends.
 */
Test(crowd, a_crowded_runtime_parks_an_idle_worker_without_searching)
{
    if (!have_schedstat())
        cr_skip("no schedstat here: a runtime is never crowded");
    if (RUNNING_ON_VALGRIND)
        cr_skip("Valgrind turns the search off");
    unsetenv("WEFT_CROWDED_PCT");
    unsetenv("WEFT_IDLE_SPIN_US");
    struct spinners sp;
    spinners_start(&sp, 2);
    uint64_t crowded[BACKENDS_N] = { 0 }, searching[BACKENDS_N] = { 0 };
    size_t n = 0;
    FOR_EACH_BACKEND(b) {
        crowded[n] = parks_while_sleeping_crowded(b, 2, 1000000000u, 0);
        searching[n] = parks_while_sleeping_crowded(b, 2, 1000000000u, 100);
        n++;
    }
    spinners_stop(&sp);
    for (size_t i = 0; i < n; i++) {
        cr_assert_geq(crowded[i], 10, "%s, crowded: %llu parks in twenty sleeps", backend_name[sweep_backends[i]],
                      (unsigned long long)crowded[i]);
        cr_assert_lt(searching[i], 5, "%s, never crowded: %llu parks in twenty sleeps", backend_name[sweep_backends[i]],
                     (unsigned long long)searching[i]);
    }
}

/*
 * A crowded runtime hands woken IO to an idle worker only in large batches:
 * the share test's set-up (readers waiting on pipes on one worker, the other
 * idle, every pipe written at once, each woken reader computing a while)
 * beside spinning threads, one per CPU, on a runtime that has counted itself
 * crowded first. With 48 readers woken on one worker, each computing for
 * 100 us (still twice the age at which an uncrowded queue moves), the queue is
 * not moved where the idle worker steals, neither for its length nor for
 * its age: fewer than 12 steals from the writes to the last join (uncrowded,
 * about half of them are stolen). With 80, each computing for a
 * millisecond, the queue reaches 64 and goes: some are stolen (how many
 * depends on how soon the idle worker gets a CPU; none can be stolen
 * otherwise). A round proves nothing, and is tried again, if the runtime did
 * not count itself crowded from the writes to the last join (as every woken
 * reader sees it too: a window can say otherwise in between), if too few
 * readers waited on the spawner's worker, if the monitor took that
 * worker over (the kernel preempted it mid-reader: what the monitor moves
 * goes to the global queue, from which a worker takes in batches into its
 * deque, where the other steals), or, with 80, if the idle worker got no
 * CPU until fewer than three readers were left to begin
 * (share_other_had_a_cpu). Both backends, at most ten rounds of each
 * size; a machine so loaded that no round of ten counts skips the test
 * rather than fail it.
 */
Test(crowd, a_crowded_runtime_hands_woken_io_to_an_idle_worker_only_in_large_batches)
{
    skip_unless_crowdable("wake-ups");
    static const int sizes[] = { 48, 80 };
    struct spinners sp;
    spinners_start(&sp, 1);
    FOR_EACH_BACKEND(b) {
        for (int k = 0; k < 2; k++) {
            int n = sizes[k], counted = 0;
            for (int round = 0; round < 10 && !counted; round++) {
                static struct share_round r;
                memset(&r, 0, sizeof r);
                r.home = -1;
                r.n = n;
                r.prepare = compute_until_crowded;
                r.compute_ns = n < 64 ? 100000 : 0;
                weft_config cfg = { .workers = 2, .io_backend = b };
                cr_assert_eq(weft_rt_create(&r.crowd, &cfg), 0);
                weft_task *t;
                cr_assert_eq(weft_spawn_on(r.crowd, &t, share_spawner, &r), 0);
                cr_assert_eq(weft_join(t, NULL), 0);
                cr_assert_eq(weft_rt_destroy(r.crowd), 0);
                int home = atomic_load(&r.waited_home);
                if (!r.crowded || home < (n > 64 ? 64 : 17) || r.takeovers ||
                    (n > 64 && !share_other_had_a_cpu(&r, 3)))
                    continue;
                counted++;
                if (n < 64)
                    cr_assert_lt(r.steals, 12, "%s, %d readers woken on one worker of a crowded runtime: "
                                 "%llu stolen", backend_name[b], home, (unsigned long long)r.steals);
                else
                    cr_assert_gt(r.steals, 0, "%s, %d readers woken on one worker of a crowded runtime: "
                                 "none stolen", backend_name[b], home);
            }
            if (!counted) {
                spinners_stop(&sp);
                cr_skip("%s, %d readers: in no round of ten was the runtime crowded throughout, with "
                        "enough readers on one worker, no takeover and a CPU for the idle worker",
                        backend_name[b], n);
            }
        }
    }
    spinners_stop(&sp);
}

/*
 * A crowded runtime's idle worker looks for work once and sleeps: it makes
 * no rounds of pauses, and so none of the patient look-and-take by which an
 * uncrowded searcher takes a lone task from an owner that keeps its worker
 * (sched::a_lone_task_of_a_coroutine_that_never_blocks_is_taken_by_another_
 * worker); nor does that task keep it from sleeping. Beside spinning
 * threads, two per CPU, on a runtime that has counted itself crowded first,
 * a coroutine spawns one task and spins (sched_yield, no weft switch) until
 * it has run, twenty times. The task must never be stolen (weft_stats.steals:
 * the monitor's takeover moves it through the global queue instead, which is
 * not a steal), and the other worker's thread, meanwhile, must have used
 * less than a twenty-fifth of the rounds' time on a CPU: one that went
 * round between search and park until the takeover used a tenth or more,
 * sharing the CPUs with the spinners, and one that sleeps a few hundredths
 * (not under ThreadSanitizer, whose every wake-up and park costs as much). A round counts only if the runtime
 * was crowded at its start and its end and the spinning coroutine stayed on
 * its worker; a machine so loaded that fewer than five count skips the test.
 * Told never to count itself crowded (crowded_pct 100), the same runtime's
 * searcher steals some (else the machine lets the monitor win every round,
 * and the test has nothing to tell apart: it skips).
 */
struct lone_rounds {
    weft_rt           *rt;
    bool               until_crowded;   /* first compute until crowded */
    int                counted;         /* rounds crowded at both ends, owner in place */
    uint64_t           steals;          /* over the counted rounds, or all if never crowded */
    unsigned long long other_cpu_ns;    /* the other worker's CPU time in the counted rounds */
    uint64_t           wall_ns;         /* ... and the rounds' time */
};

static void *mark_ran(void *arg)
{
    atomic_store((_Atomic int *)arg, 1);
    return NULL;
}

static void *spawn_lone_tasks(void *arg)
{
    struct lone_rounds *l = arg;
    if (l->until_crowded && !compute_until_crowded(l->rt))
        return NULL;
    for (int round = 0; round < 20; round++) {
        weft_stats before, after;
        int home = weft_worker(), other;
        char name[32];
        snprintf(name, sizeof name, "weft-worker-%d", 1 - home);
        cr_assert_eq(threads_named(name, &other, 1), 1);
        cr_assert_eq(weft_stats_get(l->rt, &before), 0);
        unsigned long long cpu0 = thread_cpu_ns(other);
        uint64_t t0 = weft_now();
        _Atomic int ran = 0;
        weft_task *t;
        cr_assert_eq(weft_spawn(&t, mark_ran, &ran), 0);
        uint64_t until = t0 + 10000000000u;
        while (!atomic_load(&ran) && weft_now() < until)
            sched_yield();
        uint64_t t1 = weft_now();
        unsigned long long cpu1 = thread_cpu_ns(other);
        bool stayed = weft_worker() == home;
        cr_assert(atomic_load(&ran), "a lone task waited 10 s beside its spinning owner");
        cr_assert_eq(weft_join(t, NULL), 0);
        cr_assert_eq(weft_stats_get(l->rt, &after), 0);
        if (l->until_crowded && !(before.crowded && after.crowded && stayed))
            continue;
        l->counted++;
        l->steals += after.steals - before.steals;
        l->other_cpu_ns += cpu1 - cpu0;
        l->wall_ns += t1 - t0;
    }
    return NULL;
}

Test(crowd, a_crowded_runtime_leaves_a_lone_task_to_its_owner_or_the_monitor)
{
    skip_unless_crowdable("spawns");
    unsetenv("WEFT_IDLE_SPIN_US");
    struct spinners sp;
    spinners_start(&sp, 2);
    struct lone_rounds crowd = { .until_crowded = true }, never = { 0 };
    weft_config cfg = { .workers = 2 }, never_cfg = { .workers = 2, .crowded_pct = 100 };
    weft_task *t;
    cr_assert_eq(weft_rt_create(&crowd.rt, &cfg), 0);
    cr_assert_eq(weft_spawn_on(crowd.rt, &t, spawn_lone_tasks, &crowd), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert_eq(weft_rt_destroy(crowd.rt), 0);
    cr_assert_eq(weft_rt_create(&never.rt, &never_cfg), 0);
    cr_assert_eq(weft_spawn_on(never.rt, &t, spawn_lone_tasks, &never), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert_eq(weft_rt_destroy(never.rt), 0);
    spinners_stop(&sp);
    if (!never.steals)
        cr_skip("never crowded, no lone task of twenty was stolen: the monitor won every round");
    if (crowd.counted < 5)
        cr_skip("only %d rounds of twenty were crowded at both ends", crowd.counted);
    cr_assert_eq(crowd.steals, 0, "crowded: %llu of %d lone tasks were stolen",
                 (unsigned long long)crowd.steals, crowd.counted);
    if (WEFT_TEST_TSAN)
        return;   /* each wake-up and park is instrumented, and costs as much as the spin */
    cr_assert_lt(crowd.other_cpu_ns * 25, crowd.wall_ns,
                 "crowded: the idle worker ran %.2f ms on a CPU in %.2f ms of %d rounds",
                 crowd.other_cpu_ns / 1e6, crowd.wall_ns / 1e6, crowd.counted);
}
