/* SPDX-License-Identifier: MIT */
/* Mutexes, conditions, wait groups and semaphores: exclusion and counts under
 * many coroutines, ownership, and plain threads meeting coroutines. */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define COROS 64

struct counter {
    weft_mutex m;
    weft_sem   s;
    weft_wg    wg;
    long       value;
    size_t     rounds;
    int        kind;      /* 0 mutex, 1 semaphore of one unit */
};

static void *bump(void *arg)
{
    struct counter *c = arg;
    for (size_t i = 0; i < c->rounds; i++) {
        if (c->kind == 0) {
            weft_mutex_lock(&c->m);
            long v = c->value;
            if (i % 7 == 0)
                weft_yield();      /* hold it across a switch now and then */
            c->value = v + 1;
            weft_mutex_unlock(&c->m);
        } else {
            weft_sem_acquire(&c->s);
            long v = c->value;
            if (i % 7 == 0)
                weft_yield();
            c->value = v + 1;
            weft_sem_release(&c->s);
        }
    }
    weft_wg_done(&c->wg);
    return NULL;
}

static void *count_with_many(void *arg)
{
    struct counter *c = arg;
    weft_wg_add(&c->wg, COROS);
    for (int i = 0; i < COROS; i++)
        if (weft_spawn(NULL, bump, c) != 0)
            return (void *)1;
    return (void *)(intptr_t)weft_wg_wait(&c->wg);
}

static void check_counter(int kind)
{
    for (size_t w = 0; w < SWEEP_N; w++) {
        struct counter c = { .m = WEFT_MUTEX_INIT, .wg = WEFT_WG_INIT, .kind = kind,
                             .rounds = scaled(2000) };
        cr_assert_eq(weft_sem_init(&c.s, 1), 0);
        cr_assert_eq((intptr_t)run_with(sweep_workers[w], count_with_many, &c), 0);
        cr_assert_eq(c.value, (long)(COROS * c.rounds), "%u workers: %ld", sweep_workers[w], c.value);
    }
}

Test(sync, a_mutex_keeps_a_counter_exact_under_many_coroutines) { check_counter(0); }
Test(sync, a_one_unit_semaphore_keeps_a_counter_exact_under_many_coroutines) { check_counter(1); }

static void *unlock_foreign(void *arg)
{
    return (void *)(intptr_t)weft_mutex_unlock(arg);
}

static void *non_owner(void *arg)
{
    weft_mutex *m = arg;
    int r = weft_mutex_lock(m);
    if (r) return (void *)(intptr_t)100;
    weft_task *t;
    weft_spawn(&t, unlock_foreign, m);
    void *res;
    weft_join(t, &res);
    if (weft_mutex_unlock(m) != 0) return (void *)(intptr_t)101;
    if (weft_mutex_unlock(m) != -EPERM) return (void *)(intptr_t)102;
    return res;
}

Test(sync, unlocking_a_mutex_one_does_not_hold_is_EPERM)
{
    for (size_t w = 0; w < SWEEP_N; w++) {
        weft_mutex m = WEFT_MUTEX_INIT;
        cr_assert_eq((intptr_t)run_with(sweep_workers[w], non_owner, &m), -EPERM);
    }
    weft_mutex m = WEFT_MUTEX_INIT;
    cr_assert_eq(weft_mutex_unlock(&m), -EPERM);
    cr_assert_eq(weft_mutex_trylock(&m), 0);
    cr_assert_eq(weft_mutex_trylock(&m), -EBUSY);
    cr_assert_eq(weft_mutex_lock(&m), -EDEADLK);
    cr_assert_eq(weft_mutex_unlock(&m), 0);
}

Test(sync, bad_arguments_are_EINVAL)
{
    cr_assert_eq(weft_mutex_lock(NULL), -EINVAL);
    cr_assert_eq(weft_mutex_trylock(NULL), -EINVAL);
    cr_assert_eq(weft_mutex_unlock(NULL), -EINVAL);
    cr_assert_eq(weft_cond_wait(NULL, NULL), -EINVAL);
    cr_assert_eq(weft_cond_signal(NULL), -EINVAL);
    cr_assert_eq(weft_cond_broadcast(NULL), -EINVAL);
    cr_assert_eq(weft_wg_add(NULL, 1), -EINVAL);
    cr_assert_eq(weft_wg_wait(NULL), -EINVAL);
    cr_assert_eq(weft_sem_init(NULL, 1), -EINVAL);
    cr_assert_eq(weft_sem_acquire(NULL), -EINVAL);
    cr_assert_eq(weft_sem_release(NULL), -EINVAL);
    weft_wg wg = WEFT_WG_INIT;
    cr_assert_eq(weft_wg_done(&wg), -EINVAL);
    cr_assert_eq(weft_wg_wait(&wg), 0);
}

/* A condition: a bounded queue of one slot, filled and emptied in turn. */
struct slot {
    weft_mutex m;
    weft_cond  full, empty;
    weft_wg    wg;
    bool       has;
    long       value, sum;
    size_t     n;
};

static void *put_all(void *arg)
{
    struct slot *s = arg;
    for (size_t i = 1; i <= s->n; i++) {
        weft_mutex_lock(&s->m);
        while (s->has)
            weft_cond_wait(&s->empty, &s->m);
        s->value = (long)i;
        s->has = true;
        weft_cond_signal(&s->full);
        weft_mutex_unlock(&s->m);
    }
    weft_wg_done(&s->wg);
    return NULL;
}

static void *take_all(void *arg)
{
    struct slot *s = arg;
    for (size_t i = 1; i <= s->n; i++) {
        weft_mutex_lock(&s->m);
        while (!s->has)
            weft_cond_wait(&s->full, &s->m);
        s->sum += s->value;
        s->has = false;
        weft_cond_broadcast(&s->empty);
        weft_mutex_unlock(&s->m);
    }
    weft_wg_done(&s->wg);
    return NULL;
}

static void *cond_pairs(void *arg)
{
    struct slot *s = arg;
    weft_wg_add(&s->wg, 8);
    for (int i = 0; i < 4; i++) {
        weft_spawn(NULL, put_all, s);
        weft_spawn(NULL, take_all, s);
    }
    weft_wg_wait(&s->wg);
    return NULL;
}

Test(sync, a_condition_hands_every_value_from_producers_to_consumers)
{
    for (size_t w = 0; w < SWEEP_N; w++) {
        struct slot s = { .m = WEFT_MUTEX_INIT, .full = WEFT_COND_INIT, .empty = WEFT_COND_INIT,
                          .wg = WEFT_WG_INIT, .n = scaled(5000) };
        run_with(sweep_workers[w], cond_pairs, &s);
        long per = (long)(s.n * (s.n + 1) / 2);
        cr_assert_eq(s.sum, 4 * per);
    }
}

/* Plain threads and coroutines contend on the same mutex. */
struct mixed {
    weft_mutex m;
    weft_wg    wg;
    long       value;
    size_t     rounds;
};

static void *mixed_bump(void *arg)
{
    struct mixed *x = arg;
    for (size_t i = 0; i < x->rounds; i++) {
        weft_mutex_lock(&x->m);
        x->value++;
        weft_mutex_unlock(&x->m);
    }
    weft_wg_done(&x->wg);
    return NULL;
}

Test(sync, plain_threads_and_coroutines_share_a_mutex_and_a_wait_group)
{
    for (size_t w = 0; w < SWEEP_N; w++) {
        struct mixed x = { .m = WEFT_MUTEX_INIT, .wg = WEFT_WG_INIT, .rounds = scaled(20000) };
        weft_rt *rt;
        cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = sweep_workers[w] }), 0);
        weft_wg_add(&x.wg, 12);
        for (int i = 0; i < 8; i++)
            cr_assert_eq(weft_spawn_on(rt, NULL, mixed_bump, &x), 0);
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
            pthread_create(&th[i], NULL, mixed_bump, &x);
        cr_assert_eq(weft_wg_wait(&x.wg), 0);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        cr_assert_eq(weft_rt_destroy(rt), 0);
        cr_assert_eq(x.value, (long)(12 * x.rounds));
    }
}

/* A semaphore of k units never lets more than k holders in at once. */
struct gate {
    weft_sem          s;
    weft_wg           wg;
    _Atomic int       inside, most;
};

static void *through_gate(void *arg)
{
    struct gate *g = arg;
    for (int i = 0; i < 200; i++) {
        weft_sem_acquire(&g->s);
        int now = atomic_fetch_add(&g->inside, 1) + 1;
        int m = atomic_load(&g->most);
        while (now > m && !atomic_compare_exchange_weak(&g->most, &m, now))
            ;
        weft_yield();
        atomic_fetch_sub(&g->inside, 1);
        weft_sem_release(&g->s);
    }
    weft_wg_done(&g->wg);
    return NULL;
}

static void *gate_run(void *arg)
{
    struct gate *g = arg;
    weft_wg_add(&g->wg, 32);
    for (int i = 0; i < 32; i++)
        weft_spawn(NULL, through_gate, g);
    weft_wg_wait(&g->wg);
    return NULL;
}

Test(sync, a_semaphore_admits_at_most_its_count)
{
    for (size_t w = 0; w < SWEEP_N; w++) {
        struct gate g = { .wg = WEFT_WG_INIT };
        weft_sem_init(&g.s, 3);
        run_with(sweep_workers[w], gate_run, &g);
        cr_assert_leq(atomic_load(&g.most), 3);
        cr_assert_geq(atomic_load(&g.most), 1);
    }
}

/*
 * No waiter starves: while coroutines on two workers take and drop a mutex
 * as fast as they can, barging past the woken waiters, another one still
 * gets its turns (starvation mode hands it the lock once it has waited long).
 */
struct hogs {
    weft_mutex  m;
    _Atomic int stop;
    long        counter;
};

static void *hog(void *arg)
{
    struct hogs *h = arg;
    uint64_t give_up = weft_now() + 20ull * 1000000000u;
    while (!atomic_load(&h->stop) && weft_now() < give_up) {
        weft_mutex_lock(&h->m);
        h->counter++;
        weft_mutex_unlock(&h->m);
    }
    return NULL;
}

static void *victim_among_hogs(void *arg)
{
    struct hogs *h = arg;
    weft_task *t[4];
    for (int i = 0; i < 4; i++)
        if (weft_spawn(&t[i], hog, h) != 0)
            return (void *)-1;
    intptr_t turns = 0;
    for (; turns < 1000; turns++) {
        weft_mutex_lock(&h->m);
        weft_mutex_unlock(&h->m);
    }
    bool hogs_still_ran = !atomic_exchange(&h->stop, 1);
    for (int i = 0; i < 4; i++)
        weft_join(t[i], NULL);
    return (void *)(hogs_still_ran ? turns : -2);
}

Test(sync, a_waiter_gets_its_turns_while_others_hog_the_mutex, .timeout = 60)
{
    if (RUNNING_ON_VALGRIND)
        cr_skip("Valgrind runs one thread at a time: the hogs would only take turns");
    struct hogs h = { .m = WEFT_MUTEX_INIT };
    cr_assert_eq((intptr_t)run_with(2, victim_among_hogs, &h), 1000,
                 "the victim got its turns only once the hogs gave up");
}

/* ---- an object freed as soon as its wait returns -------------------------------------- */

/* A wait group on the waiter's stack, a semaphore used as a completion, a
 * mutex inside a reference-counted object: the waiter frees the object the
 * moment its wait returns, while the waker may still be inside its call. The
 * waker must be done with the object before the waiter can return. Here the
 * freed memory is scribbled over at once; AddressSanitizer (CI's stage)
 * reports any touch after the free, and a plain build often crashes. */
enum freed_kind { FREED_WG, FREED_SEM, FREED_COND, FREED_MUTEX, FREED_KINDS };

struct freed_obj {
    weft_wg    wg;
    weft_sem   sem;
    weft_mutex m;
    weft_cond  c;
    _Atomic int flag;
    enum freed_kind kind;
};

static void *freed_waker(void *arg)
{
    struct freed_obj *o = arg;
    switch (o->kind) {
    case FREED_WG:
        weft_wg_done(&o->wg);
        break;
    case FREED_SEM:
        weft_sem_release(&o->sem);
        break;
    case FREED_COND:
        weft_mutex_lock(&o->m);
        atomic_store(&o->flag, 1);
        weft_mutex_unlock(&o->m);
        weft_cond_signal(&o->c);
        break;
    default:   /* the mutex: held while the waiter queues, then unlocked to it */
        weft_mutex_lock(&o->m);
        atomic_store(&o->flag, 1);
        weft_sleep(1000);
        weft_mutex_unlock(&o->m);
        break;
    }
    return NULL;
}

/* One round: 0, or the wait's error. */
static int wait_then_free(weft_rt *rt, enum freed_kind kind)
{
    struct freed_obj *o = malloc(sizeof *o);
    if (!o)
        return -ENOMEM;
    *o = (struct freed_obj){ .wg = WEFT_WG_INIT, .sem = WEFT_SEM_INIT(0), .m = WEFT_MUTEX_INIT,
                             .c = WEFT_COND_INIT, .kind = kind };
    int err = 0;
    if (kind == FREED_WG)
        weft_wg_add(&o->wg, 1);
    if (kind == FREED_COND)
        weft_mutex_lock(&o->m);
    if (weft_spawn_on(rt, NULL, freed_waker, o) != 0) {
        free(o);
        return -EAGAIN;
    }
    switch (kind) {
    case FREED_WG:
        err = weft_wg_wait(&o->wg);
        break;
    case FREED_SEM:
        err = weft_sem_acquire(&o->sem);
        break;
    case FREED_COND:
        while (!atomic_load(&o->flag) && !err)
            err = weft_cond_wait(&o->c, &o->m);
        weft_mutex_unlock(&o->m);
        break;
    default:
        while (!atomic_load(&o->flag))
            weft_yield();
        if ((err = weft_mutex_lock(&o->m)) == 0)
            weft_mutex_unlock(&o->m);
        break;
    }
    memset(o, 0x5a, sizeof *o);
    free(o);
    return err;
}

struct freed_run {
    weft_rt *rt;
    long     rounds;
};

static void *freed_rounds(void *arg)
{
    struct freed_run *r = arg;
    for (long i = 0; i < r->rounds; i++)
        for (int k = 0; k < FREED_KINDS; k++) {
            int err = wait_then_free(r->rt, (enum freed_kind)k);
            if (err)
                return (void *)(intptr_t)(k * 1000 - err);
        }
    return NULL;
}

Test(sync, an_object_freed_as_soon_as_its_wait_returns_is_not_touched_after)
{
    long rounds = RUNNING_ON_VALGRIND ? 200 : emulated() ? 1000 : 10000;
    weft_rt *rt;
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 2 }), 0);
    struct freed_run run = { .rt = rt, .rounds = rounds };
    /* The waiters: this plain thread, then two coroutines at once. */
    void *res = freed_rounds(&run);
    cr_assert_null(res, "a plain thread's wait (kind * 1000 - error) %ld", (long)(intptr_t)res);
    weft_task *t[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(weft_spawn_on(rt, &t[i], freed_rounds, &run), 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(weft_join(t[i], &res), 0);
        cr_assert_null(res, "a coroutine's wait (kind * 1000 - error) %ld", (long)(intptr_t)res);
    }
    cr_assert_eq(weft_rt_destroy(rt), 0);
}
