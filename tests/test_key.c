/* SPDX-License-Identifier: MIT */
/* Coroutine-local storage: each coroutine has its own value of a key, which
 * follows it between workers; destructors run when it ends, as pthread's run
 * when a thread ends; a plain thread has values of its own. */
#define _GNU_SOURCE
#include "common.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

static const unsigned key_workers[] = { 1, 2, 4 };
#define KEY_WORKERS_N (sizeof key_workers / sizeof *key_workers)

Test(key, bad_keys_and_arguments_are_refused)
{
    cr_assert_eq(weft_key_create(NULL, NULL), -EINVAL);
    weft_key k;
    cr_assert_eq(weft_key_create(&k, NULL), 0);
    cr_assert_eq(weft_key_delete(k), 0);
    cr_assert_eq(weft_key_delete(k), -EINVAL, "deleted twice");
    cr_assert_eq(weft_setspecific(k, "x"), -EINVAL, "a deleted key");
    cr_assert_null(weft_getspecific(k));
    cr_assert_eq(weft_setspecific((weft_key)0x7fffffffu, "x"), -EINVAL, "a key never made");
    cr_assert_null(weft_getspecific((weft_key)0x7fffffffu));
    cr_assert_eq(weft_key_delete((weft_key)0x7fffffffu), -EINVAL);
}

Test(key, keys_run_out_with_eagain_and_come_back_when_deleted)
{
    static weft_key keys[WEFT_KEYS_MAX + 1];
    int n = 0, err;
    while ((err = weft_key_create(&keys[n], NULL)) == 0 && n < WEFT_KEYS_MAX)
        n++;
    cr_assert_eq(err, -EAGAIN, "key %d: %d", n, err);
    cr_assert_eq(n, WEFT_KEYS_MAX);
    cr_assert_eq(weft_key_delete(keys[n / 2]), 0);
    weft_key again;
    cr_assert_eq(weft_key_create(&again, NULL), 0);
    cr_assert_eq(weft_key_create(&keys[WEFT_KEYS_MAX], NULL), -EAGAIN);
    keys[n / 2] = again;
    for (int i = 0; i < n; i++)
        cr_assert_eq(weft_key_delete(keys[i]), 0);
}

/* A key deleted and made again starts with no value anywhere, even where the
 * old key had one. */
static void *reuse(void *arg)
{
    (void)arg;
    weft_key a, b;
    weft_key_create(&a, NULL);
    weft_setspecific(a, "old");
    weft_key_delete(a);
    weft_key_create(&b, NULL);
    void *v = weft_getspecific(b);
    weft_key_delete(b);
    return v;
}

Test(key, a_remade_key_starts_empty)
{
    cr_assert_null(run_with(1, reuse, NULL));
    weft_key a, b;
    weft_key_create(&a, NULL);
    weft_setspecific(a, "old");
    weft_key_delete(a);
    weft_key_create(&b, NULL);
    cr_assert_null(weft_getspecific(b));
    weft_key_delete(b);
}

struct per_coro {
    weft_key key;
    weft_key spare;          /* set by nobody: NULL everywhere */
    _Atomic int wrong;
    _Atomic int moved;
};

static void *own_value(void *arg)
{
    struct per_coro *p = arg;
    char mine;
    if (weft_getspecific(p->key) != NULL)
        atomic_fetch_add(&p->wrong, 1);
    weft_setspecific(p->key, &mine);
    int start = weft_worker();
    bool moved = false;
    /* On until it has run on another worker too (with a generous limit, for
     * a loaded machine where one worker may do everything for a while). */
    uint64_t limit = weft_now() + 5000000000u;
    for (int i = 0; i < 200 || (weft_workers() > 1 && !moved && weft_now() < limit); i++) {
        if (i % 3 == 0)
            weft_sleep(10000);
        else
            weft_yield();
        if (weft_worker() != start) {
            atomic_fetch_add(&p->moved, 1);
            moved = true;
        }
        if (weft_getspecific(p->key) != &mine || weft_getspecific(p->spare) != NULL)
            atomic_fetch_add(&p->wrong, 1);
    }
    return NULL;
}

static void *many_owners(void *arg)
{
    weft_task *t[64];
    size_t n = scaled(6400) < 64 ? scaled(6400) : 64;
    if (n < 8)
        n = 8;
    for (size_t i = 0; i < n; i++)
        weft_spawn(&t[i], own_value, arg);
    for (size_t i = 0; i < n; i++)
        weft_join(t[i], NULL);
    return NULL;
}

Test(key, each_coroutine_keeps_its_own_value_across_workers)
{
    for (size_t i = 0; i < KEY_WORKERS_N; i++) {
        struct per_coro p = { 0 };
        cr_assert_eq(weft_key_create(&p.key, NULL), 0);
        cr_assert_eq(weft_key_create(&p.spare, NULL), 0);
        weft_setspecific(p.key, "the plain thread's");
        run_with(key_workers[i], many_owners, &p);
        cr_assert_eq(atomic_load(&p.wrong), 0, "%u workers", key_workers[i]);
        if (key_workers[i] > 1)
            cr_assert_gt(atomic_load(&p.moved), 0, "%u workers: no coroutine ever moved", key_workers[i]);
        cr_assert(strcmp(weft_getspecific(p.key), "the plain thread's") == 0);
        weft_key_delete(p.key);
        weft_key_delete(p.spare);
    }
}

/* Destructors: called with the value, for non-NULL values only, again while
 * destructors set values, up to PTHREAD_DESTRUCTOR_ITERATIONS rounds. */
struct dtor_log {
    weft_key     once, again, forever, unset;
    _Atomic int  once_calls, again_calls, forever_calls, unset_calls;
    _Atomic int  bad_value;
};
static struct dtor_log *log_;

static void dtor_once(void *v)
{
    if (v != &log_->once)
        atomic_fetch_add(&log_->bad_value, 1);
    atomic_fetch_add(&log_->once_calls, 1);
}

static void dtor_again(void *v)
{
    (void)v;
    if (atomic_fetch_add(&log_->again_calls, 1) == 0)
        weft_setspecific(log_->again, &log_->again);   /* one more round */
}

static void dtor_forever(void *v)
{
    atomic_fetch_add(&log_->forever_calls, 1);
    weft_setspecific(log_->forever, v);
}

static void dtor_unset(void *v)
{
    (void)v;
    atomic_fetch_add(&log_->unset_calls, 1);
}

static void *set_all(void *arg)
{
    (void)arg;
    weft_setspecific(log_->once, &log_->once);
    weft_setspecific(log_->again, &log_->again);
    weft_setspecific(log_->forever, &log_->forever);
    weft_setspecific(log_->unset, &log_->unset);
    weft_yield();
    weft_setspecific(log_->unset, NULL);
    return NULL;
}

Test(key, destructors_run_when_a_coroutine_ends_for_as_many_rounds_as_pthreads)
{
    for (size_t i = 0; i < KEY_WORKERS_N; i++) {
        struct dtor_log l = { 0 };
        log_ = &l;
        cr_assert_eq(weft_key_create(&l.once, dtor_once), 0);
        cr_assert_eq(weft_key_create(&l.again, dtor_again), 0);
        cr_assert_eq(weft_key_create(&l.forever, dtor_forever), 0);
        cr_assert_eq(weft_key_create(&l.unset, dtor_unset), 0);
        run_with(key_workers[i], set_all, NULL);
        cr_assert_eq(atomic_load(&l.once_calls), 1);
        cr_assert_eq(atomic_load(&l.bad_value), 0);
        cr_assert_eq(atomic_load(&l.again_calls), 2);
        cr_assert_eq(atomic_load(&l.forever_calls), PTHREAD_DESTRUCTOR_ITERATIONS);
        cr_assert_eq(atomic_load(&l.unset_calls), 0, "a NULL value has no destructor call");
        weft_key_delete(l.once);
        weft_key_delete(l.again);
        weft_key_delete(l.forever);
        weft_key_delete(l.unset);
    }
}

/* A plain thread has its own values, and their destructors run when it exits. */
static _Atomic int thread_dtor_calls;
static void count_dtor(void *v)
{
    (void)v;
    atomic_fetch_add(&thread_dtor_calls, 1);
}

struct thread_vals {
    weft_key key;
    void    *seen_before;
    void    *seen_after;
};

static void *plain_thread(void *arg)
{
    struct thread_vals *tv = arg;
    tv->seen_before = weft_getspecific(tv->key);
    weft_setspecific(tv->key, tv);
    tv->seen_after = weft_getspecific(tv->key);
    return NULL;
}

Test(key, a_plain_thread_has_its_own_values_and_destructors)
{
    struct thread_vals tv = { 0 };
    cr_assert_eq(weft_key_create(&tv.key, count_dtor), 0);
    weft_setspecific(tv.key, "main");
    pthread_t th;
    pthread_create(&th, NULL, plain_thread, &tv);
    pthread_join(th, NULL);
    cr_assert_null(tv.seen_before);
    cr_assert_eq(tv.seen_after, &tv);
    cr_assert_eq(atomic_load(&thread_dtor_calls), 1);
    cr_assert(strcmp(weft_getspecific(tv.key), "main") == 0);
    weft_setspecific(tv.key, NULL);
    weft_key_delete(tv.key);
}

/* A destructor of a deleted key is not called (as with pthread keys). */
static void *set_then_delete(void *arg)
{
    weft_key *k = arg;
    weft_setspecific(*k, k);
    weft_key_delete(*k);
    return NULL;
}

Test(key, a_deleted_keys_destructor_is_not_called)
{
    atomic_store(&thread_dtor_calls, 0);
    weft_key k;
    weft_key_create(&k, count_dtor);
    run_with(2, set_then_delete, &k);
    cr_assert_eq(atomic_load(&thread_dtor_calls), 0);
}

/* A value left by a deleted key, and the keys made in its slot after it: a
 * key's handle holds 22 bits of its slot's sequence number, which come round
 * again after 2^21 keys, and the value must not show through then either. */
static int stale_marker;
static _Atomic int stale_dtor_calls;

static void stale_dtor(void *v)
{
    if (v == &stale_marker)
        atomic_fetch_add(&stale_dtor_calls, 1);
}

static void *outlive_the_handles(void *arg)
{
    weft_key old, k = 0;
    if (weft_key_create(&old, NULL) != 0 || weft_setspecific(old, &stale_marker) != 0 ||
        weft_key_delete(old) != 0)
        return (void *)1;
    long seen_again = 0;
    for (long i = 0; i < (1L << 21) + 4; i++) {
        if (weft_key_create(&k, stale_dtor) != 0)
            return (void *)2;
        if (weft_getspecific(k) != NULL)
            return (void *)3;
        seen_again += k == old;
        if (i < (1L << 21) + 3 && weft_key_delete(k) != 0)
            return (void *)4;
    }
    *(long *)arg = seen_again;
    return NULL;   /* k lives on: the thread's exit calls its destructor for what is set */
}

Test(key, a_value_left_by_a_deleted_key_never_shows_through_a_later_key)
{
    pthread_t t;
    long seen_again = -1;
    void *res;
    cr_assert_eq(pthread_create(&t, NULL, outlive_the_handles, &seen_again), 0);
    cr_assert_eq(pthread_join(t, &res), 0);
    cr_assert_null(res, "step %ld failed", (long)(intptr_t)res);
    cr_assert_eq(atomic_load(&stale_dtor_calls), 0, "a later key's destructor got the deleted key's value");
    cr_assert_geq(seen_again, 1, "no later key had the deleted key's handle: the test missed the wrap");
}
