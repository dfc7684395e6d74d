/* SPDX-License-Identifier: MIT */
/* Bad input and misuse: each gets a clear negative errno, and the runtime goes
 * on working afterwards. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void *nothing(void *arg) { return arg; }

Test(errors, create_rejects_a_null_runtime_pointer)
{
    cr_assert_eq(weft_rt_create(NULL, NULL), -EINVAL);
}

Test(errors, create_rejects_a_stack_below_the_minimum)
{
    weft_rt *rt = NULL;
    weft_config cfg = { .workers = 1, .stack_size = WEFT_STACK_MIN - 1 };
    cr_assert_eq(weft_rt_create(&rt, &cfg), -EINVAL);
    cr_assert_null(rt);
}

Test(errors, create_rejects_too_many_workers)
{
    weft_rt *rt = NULL;
    weft_config cfg = { .workers = WEFT_WORKERS_MAX + 1 };
    cr_assert_eq(weft_rt_create(&rt, &cfg), -EINVAL);
}

Test(errors, spawn_on_rejects_a_null_runtime_or_function)
{
    weft_rt *rt;
    weft_task *t;
    cr_assert_eq(weft_spawn_on(NULL, &t, nothing, NULL), -EINVAL);
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 1 }), 0);
    cr_assert_eq(weft_spawn_on(rt, &t, NULL, NULL), -EINVAL);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

Test(errors, spawn_outside_a_coroutine_is_not_permitted)
{
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, nothing, NULL), -EPERM);
}

Test(errors, calls_that_need_a_coroutine_say_so_outside_one)
{
    cr_assert_eq(weft_worker(), -EPERM);
    cr_assert_eq(weft_workers(), -EPERM);
    cr_assert_null(weft_self());
    cr_assert_eq(weft_join(NULL, NULL), -EINVAL);
    cr_assert_eq(weft_detach(NULL), -EINVAL);
    cr_assert_eq(weft_rt_destroy(NULL), -EINVAL);
    cr_assert_eq(weft_main(NULL, NULL, NULL, NULL), -EINVAL);
}

static void *misuse_inside(void *arg)
{
    int *res = arg;
    weft_task *t;
    res[0] = weft_spawn(&t, NULL, NULL);            /* -EINVAL */
    res[1] = weft_join(weft_self(), NULL);          /* -EDEADLK */
    return NULL;
}

Test(errors, a_coroutine_cannot_spawn_null_or_join_itself)
{
    int res[2] = { 1, 1 };
    run_with(2, misuse_inside, res);
    cr_assert_eq(res[0], -EINVAL);
    cr_assert_eq(res[1], -EDEADLK);
}

static void *destroy_own(void *arg)
{
    return (void *)(intptr_t)weft_rt_destroy((weft_rt *)arg);
}

Test(errors, destroying_a_runtime_from_its_own_coroutine_is_a_deadlock)
{
    weft_rt *rt;
    weft_task *t;
    void *r;
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 2 }), 0);
    cr_assert_eq(weft_spawn_on(rt, &t, destroy_own, rt), 0);
    cr_assert_eq(weft_join(t, &r), 0);
    cr_assert_eq((intptr_t)r, -EDEADLK);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

static void *destroy_from_helper(void *arg)
{
    return (void *)(intptr_t)weft_rt_destroy((weft_rt *)arg);
}

static void *offload_destroy(void *arg)
{
    void *r = NULL;
    int err = weft_offload(destroy_from_helper, arg, &r);
    return (void *)(intptr_t)(err ? err : (intptr_t)r);
}

/* A helper thread of the runtime runs the caller's function: destroying the
 * runtime there would wait for the helper itself. */
Test(errors, destroying_a_runtime_from_its_own_offload_helper_is_a_deadlock)
{
    weft_rt *rt;
    weft_task *t;
    void *r;
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 1 }), 0);
    cr_assert_eq(weft_spawn_on(rt, &t, offload_destroy, rt), 0);
    cr_assert_eq(weft_join(t, &r), 0);
    cr_assert_eq((intptr_t)r, -EDEADLK);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

/* Plain threads spawn on a runtime while weft_rt_destroy waits for its last
 * task: each spawn either runs its task, counted by the wait, or gets
 * -EINVAL once the destroy has begun. The spawners stop before that task
 * ends, so none can call with the runtime freed. */
struct spawner {
    weft_rt     *rt;
    weft_sem     hold;
    _Atomic bool stop;
    _Atomic long ran, refused, spawned;
    _Atomic int  ended, unexpected;   /* spawners gone; an error other than -EINVAL */
};

static void *count_run(void *arg)
{
    atomic_fetch_add(&((struct spawner *)arg)->ran, 1);
    return NULL;
}

static void *hold_the_runtime(void *arg)
{
    weft_sem_acquire(&((struct spawner *)arg)->hold);
    return NULL;
}

static void *spawn_on_and_on(void *arg)
{
    struct spawner *s = arg;
    while (!atomic_load(&s->stop)) {
        int err = weft_spawn_on(s->rt, NULL, count_run, s);
        if (err == 0)
            atomic_fetch_add(&s->spawned, 1);
        else if (err == -EINVAL)
            atomic_fetch_add(&s->refused, 1);
        else {
            atomic_store(&s->unexpected, err);
            break;
        }
    }
    atomic_fetch_add(&s->ended, 1);
    return NULL;
}

static void *destroy_it(void *arg)
{
    return (void *)(intptr_t)weft_rt_destroy(((struct spawner *)arg)->rt);
}

Test(errors, a_plain_thread_s_spawn_during_destroy_is_refused_or_runs)
{
    struct spawner s = { .hold = WEFT_SEM_INIT(0) };
    cr_assert_eq(weft_rt_create(&s.rt, &(weft_config){ .workers = 2 }), 0);
    cr_assert_eq(weft_spawn_on(s.rt, NULL, hold_the_runtime, &s), 0);
    pthread_t th[2], destroyer;
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, spawn_on_and_on, &s), 0);
    while (atomic_load(&s.spawned) < 1 && atomic_load(&s.ended) < 2)
        usleep(1000);
    cr_assert_eq(pthread_create(&destroyer, NULL, destroy_it, &s), 0);
    while (atomic_load(&s.refused) < 100 && atomic_load(&s.ended) < 2)
        usleep(1000);
    atomic_store(&s.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(weft_sem_release(&s.hold), 0);
    void *r;
    cr_assert_eq(pthread_join(destroyer, &r), 0);
    cr_assert_eq((intptr_t)r, 0);
    cr_assert_eq(atomic_load(&s.unexpected), 0, "a spawn failed with %d", atomic_load(&s.unexpected));
    cr_assert_gt(atomic_load(&s.refused), 0, "no spawn met the destroy");
    cr_assert_eq(atomic_load(&s.ran), atomic_load(&s.spawned), "a spawned task never ran");
}

#ifdef WEFT_TEST_NDEBUG
Test(errors, a_second_join_is_refused)
{
    weft_rt *rt;
    weft_task *t;
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 1 }), 0);
    cr_assert_eq(weft_spawn_on(rt, &t, nothing, NULL), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert_eq(weft_join(t, NULL), -EINVAL);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

static void *block_until(void *arg)
{
    while (!__atomic_load_n((int *)arg, __ATOMIC_ACQUIRE))
        weft_yield();
    return NULL;
}

Test(errors, joining_a_detached_task_is_refused)
{
    weft_rt *rt;
    weft_task *t;
    int release = 0;
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 1 }), 0);
    cr_assert_eq(weft_spawn_on(rt, &t, block_until, &release), 0);
    cr_assert_eq(weft_detach(t), 0);
    cr_assert_eq(weft_join(t, NULL), -EINVAL);    /* still running: its handle is checked */
    cr_assert_eq(weft_detach(t), -EINVAL);
    __atomic_store_n(&release, 1, __ATOMIC_RELEASE);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}
#else
Test(errors, a_second_join_aborts_in_debug_builds, .signal = SIGABRT)
{
    weft_rt *rt;
    weft_task *t;
    weft_rt_create(&rt, &(weft_config){ .workers = 1 });
    weft_spawn_on(rt, &t, nothing, NULL);
    weft_join(t, NULL);
    weft_join(t, NULL);
}
#endif

/* Memory exhaustion: with the address space capped, spawning fails with
 * -ENOMEM (or -EAGAIN), nothing already running is lost, and once tasks finish
 * spawning works again. */
struct exhaust {
    int    first_error;
    size_t spawned;
    int    after;
    size_t joined;
};

static size_t vm_size(void)
{
    size_t size;
    proc_memory(&size, NULL);
    return size;
}

static void *exhaust(void *arg)
{
    struct exhaust *e = arg;
    size_t cap = 100000;
    weft_task **t = malloc(cap * sizeof(*t));
    struct rlimit rl = { vm_size() + (64u << 20), RLIM_INFINITY };
    setrlimit(RLIMIT_AS, &rl);
    int err = 0;
    while (e->spawned < cap && (err = weft_spawn(&t[e->spawned], nothing, NULL)) == 0)
        e->spawned++;
    e->first_error = err;
    for (size_t i = 0; i < e->spawned; i++)
        e->joined += weft_join(t[i], NULL) == 0;
    weft_task *again;
    e->after = weft_spawn(&again, nothing, NULL);
    if (e->after == 0)
        weft_join(again, NULL);
    free(t);
    return NULL;
}

Test(errors, running_out_of_memory_fails_the_spawn_and_loses_nothing)
{
    if (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND)
        cr_skip("sanitizers and Valgrind reserve address space of their own");
    if (emulated())
        cr_skip("qemu-user ignores RLIMIT_AS");
    struct exhaust e = { 0 };
    run_with(1, exhaust, &e);
    cr_assert(e.first_error == -ENOMEM || e.first_error == -EAGAIN, "spawn failed with %d", e.first_error);
    cr_assert_gt(e.spawned, 0);
    cr_assert_eq(e.joined, e.spawned, "a task spawned before the failure was lost");
    cr_assert_eq(e.after, 0, "the runtime did not recover once memory was free");
}
