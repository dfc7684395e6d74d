/* SPDX-License-Identifier: MIT */
/* weft_offload: a blocking call runs on a helper thread while the caller's
 * worker runs other coroutines, the helpers stay bounded, and a call that gives
 * up before its function started leaves nothing behind. */
#define _GNU_SOURCE   /* usleep */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#define MS 1000000ull

/* The most helper threads a runtime starts, as runtime/io/offload.c documents it:
 * four per worker, between 4 and 64. */
static unsigned helper_bound(unsigned workers)
{
    unsigned n = workers * 4;
    return n < 4 ? 4 : n > 64 ? 64 : n;
}

/* ---- results ---------------------------------------------------------------- */

static void *plus_one(void *arg)
{
    return (void *)((uintptr_t)arg + 1);
}

static void *offload_plus_one(void *arg)
{
    void *r = NULL;
    int err = weft_offload(plus_one, arg, &r);
    return err ? (void *)UINTPTR_MAX : r;
}

/* Returns the number of wrong results. */
static void *many_offloads(void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    weft_task **t = calloc(n, sizeof *t);
    if (!t)
        return (void *)UINTPTR_MAX;
    for (size_t i = 0; i < n; i++)
        if (weft_spawn(&t[i], offload_plus_one, (void *)(uintptr_t)(i * 3)) != 0)
            return (void *)UINTPTR_MAX;
    uintptr_t wrong = 0;
    for (size_t i = 0; i < n; i++) {
        void *r = NULL;
        weft_join(t[i], &r);
        wrong += (uintptr_t)r != i * 3 + 1;
    }
    free(t);
    return (void *)wrong;
}

Test(offload, each_of_many_concurrent_offloads_returns_its_own_result)
{
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], many_offloads, (void *)scaled(2000)), 0,
                     "with %u workers", sweep_workers[i]);
}

/* ---- the worker stays free ---------------------------------------------------- */

struct pipe_gate {
    int         fds[2];
    _Atomic int reading;   /* the offloaded read has started */
    _Atomic int returned;  /* weft_offload returned */
    int         err;       /* and its result */
};

/* Blocks its thread in read() until a byte arrives, and returns the byte. */
static void *read_one_byte(void *arg)
{
    struct pipe_gate *g = arg;
    atomic_store(&g->reading, 1);
    unsigned char c = 0;
    ssize_t n;
    do
        n = read(g->fds[0], &c, 1);
    while (n < 0 && errno == EINTR);
    return n == 1 ? (void *)(uintptr_t)c : NULL;
}

static void *offload_read(void *arg)
{
    struct pipe_gate *g = arg;
    void *r = NULL;
    g->err = weft_offload(read_one_byte, g, &r);
    atomic_store(&g->returned, 1);
    return r;
}

/* Runs on the same worker as offload_read: it gets to run only if the
 * offloaded read left the worker free. */
static void *write_once_reading(void *arg)
{
    struct pipe_gate *g = arg;
    while (!atomic_load(&g->reading) && !atomic_load(&g->returned))
        weft_sleep(MS / 10);
    /* The plain call: an empty pipe takes a byte without blocking, and the
     * test then depends on no IO backend. */
    return (void *)(intptr_t)write(g->fds[1], "k", 1);
}

static void *read_while_another_writes(void *arg)
{
    struct pipe_gate *g = arg;
    weft_task *reader, *writer;
    void *byte = NULL, *wrote = NULL;
    if (weft_spawn(&reader, offload_read, g) != 0 || weft_spawn(&writer, write_once_reading, g) != 0)
        return (void *)1;
    weft_join(reader, &byte);
    weft_join(writer, &wrote);
    return (void *)(uintptr_t)((intptr_t)wrote == 1 && (uintptr_t)byte == 'k' ? 0 : 2);
}

Test(offload, a_blocking_call_offloaded_leaves_its_only_worker_to_other_coroutines)
{
    struct pipe_gate g = { .err = -1 };
    cr_assert_eq(pipe(g.fds), 0);
    cr_assert_eq((uintptr_t)run_with(1, read_while_another_writes, &g), 0,
                 "the reader did not get the writer's byte");
    cr_assert_eq(g.err, 0);
    close(g.fds[0]);
    close(g.fds[1]);
}

/* ---- arguments and plain threads ------------------------------------------------ */

static void *offload_null(void *arg)
{
    void *r = (void *)0x5a;
    int err = weft_offload(NULL, NULL, &r);
    return (void *)(intptr_t)(err == -EINVAL && r == (void *)0x5a ? 0 : 1);
}

Test(offload, a_NULL_function_is_EINVAL_from_a_coroutine_and_from_a_plain_thread)
{
    cr_assert_eq(weft_offload(NULL, NULL, NULL), -EINVAL);
    for (size_t i = 0; i < SWEEP_N; i++)
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], offload_null, NULL), 0,
                     "with %u workers", sweep_workers[i]);
}

static void *my_thread(void *arg)
{
    *(pthread_t *)arg = pthread_self();
    return (void *)0x77;
}

Test(offload, from_a_plain_thread_the_function_runs_on_the_calling_thread)
{
    pthread_t ran_on;
    void *r = NULL;
    cr_assert_eq(weft_offload(my_thread, &ran_on, &r), 0);
    cr_assert(pthread_equal(ran_on, pthread_self()), "fn ran on another thread");
    cr_assert_eq((uintptr_t)r, 0x77);
    cr_assert_eq(weft_offload(my_thread, &ran_on, NULL), 0, "the result may be dropped");
}

/* A helper's thread says what it is (top -H, perf, gdb). */
static void *named_offload(void *arg)
{
    (void)arg;
    char comm[32] = "";
    FILE *f = fopen("/proc/thread-self/comm", "r");
    if (!f)
        return (void *)1;
    if (!fgets(comm, sizeof comm, f))
        comm[0] = 0;
    fclose(f);
    return (void *)(uintptr_t)(strcmp(comm, "weft-offload\n") == 0 ? 0 : 2);
}

static void *offload_named(void *arg)
{
    (void)arg;
    void *r = (void *)3;
    if (weft_offload(named_offload, NULL, &r) != 0)
        return (void *)4;
    return r;
}

Test(offload, the_helpers_threads_are_named_weft_offload)
{
    cr_assert_eq((uintptr_t)run_with(2, offload_named, NULL), 0);
}

/* ---- the bound ---------------------------------------------------------------- */

struct crowd {
    _Atomic unsigned running;   /* offloaded calls inside fn now */
    _Atomic unsigned most;      /* the highest `running` seen */
    _Atomic unsigned done;      /* offloads that returned 0 with the right result */
};

static void *nap(void *arg)
{
    struct crowd *c = arg;
    unsigned now = atomic_fetch_add(&c->running, 1) + 1;
    unsigned most = atomic_load(&c->most);
    while (now > most && !atomic_compare_exchange_weak(&c->most, &most, now))
        ;
    usleep(1000);
    atomic_fetch_sub(&c->running, 1);
    return arg;
}

static void *offload_nap(void *arg)
{
    struct crowd *c = arg;
    void *r = NULL;
    if (weft_offload(nap, c, &r) == 0 && r == c)
        atomic_fetch_add(&c->done, 1);
    return NULL;
}

struct crowd_run {
    struct crowd c;
    size_t       n;
};

static void *crowd_in(void *arg)
{
    struct crowd_run *cr = arg;
    weft_task **t = calloc(cr->n, sizeof *t);
    if (!t)
        return (void *)1;
    for (size_t i = 0; i < cr->n; i++)
        if (weft_spawn(&t[i], offload_nap, &cr->c) != 0)
            return (void *)2;
    for (size_t i = 0; i < cr->n; i++)
        weft_join(t[i], NULL);
    free(t);
    return NULL;
}

Test(offload, more_offloads_than_helpers_all_complete_and_the_helpers_stay_bounded)
{
    /* Above every bound even when instrumentation shrinks the count. */
    size_t n = scaled(300) < 80 ? 80 : scaled(300);
    for (size_t i = 0; i < SWEEP_N; i++) {
        unsigned workers = sweep_workers[i];
        struct crowd_run cr = { .n = n };
        cr_assert_eq((uintptr_t)run_with(workers, crowd_in, &cr), 0);
        cr_assert_eq(atomic_load(&cr.c.done), n, "with %u workers", workers);
        cr_assert_geq(atomic_load(&cr.c.most), 1u);
        cr_assert_leq(atomic_load(&cr.c.most), helper_bound(workers),
                      "%u calls ran at once with %u workers", atomic_load(&cr.c.most), workers);
    }
}

/* ---- deadlines and cancellation ------------------------------------------------- */

/* Offloaded calls that block at a gate until the test opens it: enough of
 * them to keep every helper busy, or the one call under test. */
struct jam {
    sem_t            gate;
    _Atomic unsigned started;    /* calls inside wait_at_gate */
    _Atomic unsigned broken;     /* blockers whose offload failed */
    unsigned         bound;      /* helper_bound() of the runtime */
    weft_task       *blockers[64];
    _Atomic int      ran;        /* the call that should never run did */
    _Atomic int      returned;   /* the call under test returned */
    int              result;     /* weft_offload's result in the call under test */
    void            *value;      /* and the value it returned */
    uint64_t         deadline;   /* the caller's, where the test sets one */
};

static void jam_open(struct jam *j, unsigned workers)
{
    *j = (struct jam){ .bound = helper_bound(workers), .result = 1 };
    cr_assert_eq(sem_init(&j->gate, 0, 0), 0);
}

static void *wait_at_gate(void *arg)
{
    struct jam *j = arg;
    atomic_fetch_add(&j->started, 1);
    while (sem_wait(&j->gate) != 0 && errno == EINTR)
        ;
    return (void *)42;
}

static void *offload_blocker(void *arg)
{
    struct jam *j = arg;
    void *r = NULL;
    if (weft_offload(wait_at_gate, j, &r) == 0 && (uintptr_t)r == 42)
        return NULL;
    atomic_fetch_add(&j->broken, 1);
    return (void *)1;
}

/* Returns 0 once every helper the runtime may start is inside wait_at_gate,
 * or -1 if a blocker failed. */
static int jam_pool(struct jam *j)
{
    for (unsigned i = 0; i < j->bound; i++)
        if (weft_spawn(&j->blockers[i], offload_blocker, j) != 0)
            return -1;
    while (atomic_load(&j->started) + atomic_load(&j->broken) < j->bound)
        weft_sleep(MS / 10);
    return atomic_load(&j->broken) ? -1 : 0;
}

/* Opens the gate; returns the number of blockers that failed. */
static uintptr_t unjam_pool(struct jam *j)
{
    for (unsigned i = 0; i < j->bound; i++)
        sem_post(&j->gate);
    uintptr_t failed = 0;
    for (unsigned i = 0; i < j->bound; i++) {
        void *r = NULL;
        weft_join(j->blockers[i], &r);
        failed += (uintptr_t)r;
    }
    return failed;
}

/* The call under test, when the pool is full: it must never run. */
static void *mark_ran(void *arg)
{
    struct jam *j = arg;
    atomic_store(&j->ran, 1);
    return NULL;
}

static void *offload_mark_ran(void *arg)
{
    struct jam *j = arg;
    j->result = weft_offload(mark_ran, j, NULL);
    return NULL;
}

static void *queued_past_deadline(void *arg)
{
    struct jam *j = arg;
    if (jam_pool(j) != 0)
        return (void *)1;
    uint64_t old = weft_deadline(weft_now() + 20 * MS);
    offload_mark_ran(j);
    weft_deadline(old);
    return (void *)unjam_pool(j);
}

Test(offload, a_queued_call_whose_deadline_passes_returns_ETIMEDOUT_and_its_function_never_runs)
{
    for (size_t i = 0; i < SWEEP_N; i++) {
        struct jam j;
        jam_open(&j, sweep_workers[i]);
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], queued_past_deadline, &j), 0);
        cr_assert_eq(j.result, -ETIMEDOUT, "with %u workers", sweep_workers[i]);
        /* The runtime and its helpers are gone: nothing can run it later. */
        cr_assert_eq(atomic_load(&j.ran), 0, "the abandoned function ran");
        sem_destroy(&j.gate);
    }
}

static void *queued_then_cancelled(void *arg)
{
    struct jam *j = arg;
    if (jam_pool(j) != 0)
        return (void *)1;
    weft_task *victim;
    if (weft_spawn(&victim, offload_mark_ran, j) != 0)
        return (void *)2;
    weft_sleep(2 * MS);   /* most likely queued by now; if not, it sees the cancel on arrival */
    weft_cancel(victim);
    weft_join(victim, NULL);
    return (void *)unjam_pool(j);
}

Test(offload, a_queued_call_whose_caller_is_cancelled_returns_ECANCELED_and_its_function_never_runs)
{
    for (size_t i = 0; i < SWEEP_N; i++) {
        struct jam j;
        jam_open(&j, sweep_workers[i]);
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], queued_then_cancelled, &j), 0);
        cr_assert_eq(j.result, -ECANCELED, "with %u workers", sweep_workers[i]);
        cr_assert_eq(atomic_load(&j.ran), 0, "the abandoned function ran");
        sem_destroy(&j.gate);
    }
}

/* The call under test, when the pool is idle: it starts and blocks at the gate. */
static void *offload_to_gate(void *arg)
{
    struct jam *j = arg;
    if (j->deadline)
        weft_deadline(j->deadline);
    j->result = weft_offload(wait_at_gate, j, &j->value);
    atomic_store(&j->returned, 1);
    return NULL;
}

/* Waits until the call under test is inside fn (true) or returned without
 * starting it (false). */
static bool started_or_returned(struct jam *j)
{
    for (;;) {
        if (atomic_load(&j->started))
            return true;
        if (atomic_load(&j->returned))
            return atomic_load(&j->started) != 0;
        weft_sleep(MS / 10);
    }
}

/*
 * fn must start before the deadline, and nothing but a margin makes it: a
 * loaded machine may start the helper later than any fixed margin. So a try
 * whose fn did not start in time must have failed cleanly (-ETIMEDOUT, fn never
 * ran), and the next try doubles the margin. Returns 0 once a started call
 * outlived its deadline and returned the result.
 */
static void *started_past_deadline(void *arg)
{
    struct jam *j = arg;
    for (uint64_t margin = 50 * MS; margin <= 6400 * MS; margin *= 2) {
        unsigned bound = j->bound;
        sem_destroy(&j->gate);
        *j = (struct jam){ .bound = bound, .result = 1 };
        sem_init(&j->gate, 0, 0);
        j->deadline = weft_now() + margin;
        weft_task *caller;
        if (weft_spawn(&caller, offload_to_gate, j) != 0)
            return (void *)1;
        if (!started_or_returned(j)) {
            weft_join(caller, NULL);
            if (j->result != -ETIMEDOUT || atomic_load(&j->started))
                return (void *)2;   /* neither started nor cleanly timed out */
            continue;
        }
        while (weft_now() <= j->deadline + MS)
            weft_sleep(MS);
        sem_post(&j->gate);
        weft_join(caller, NULL);
        return NULL;
    }
    return (void *)3;   /* never started within 6.4 s */
}

Test(offload, a_started_call_outlives_its_deadline_and_returns_the_result)
{
    for (size_t i = 0; i < SWEEP_N; i++) {
        struct jam j;
        jam_open(&j, sweep_workers[i]);
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], started_past_deadline, &j), 0);
        cr_assert_eq(j.result, 0, "with %u workers", sweep_workers[i]);
        cr_assert_eq((uintptr_t)j.value, 42);
        sem_destroy(&j.gate);
    }
}

static void *started_then_cancelled(void *arg)
{
    struct jam *j = arg;
    weft_task *caller;
    if (weft_spawn(&caller, offload_to_gate, j) != 0)
        return (void *)1;
    if (!started_or_returned(j)) {
        weft_join(caller, NULL);
        return (void *)2;
    }
    weft_cancel(caller);
    weft_sleep(2 * MS);   /* the cancellation has most likely claimed the first wait */
    sem_post(&j->gate);
    weft_join(caller, NULL);
    return NULL;
}

Test(offload, a_started_call_outlives_its_cancellation_and_returns_the_result)
{
    for (size_t i = 0; i < SWEEP_N; i++) {
        struct jam j;
        jam_open(&j, sweep_workers[i]);
        cr_assert_eq((uintptr_t)run_with(sweep_workers[i], started_then_cancelled, &j), 0);
        cr_assert_eq(j.result, 0, "with %u workers", sweep_workers[i]);
        cr_assert_eq((uintptr_t)j.value, 42);
        sem_destroy(&j.gate);
    }
}
