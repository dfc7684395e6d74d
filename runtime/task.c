/*
 * The life of a task: spawn, join, detach, and weft_main.
 *
 * A task holds two references: its handle (dropped by join or detach) and its
 * running self (dropped by the context switched to after it finished, once its
 * stack is no longer in use). Whichever goes last frees the stack slot. Its
 * result travels through task->join: the finishing task stores the result,
 * swaps join to BUSY (acq_rel: publishes the result), wakes the joiner whose
 * waiter was there, and stores DONE. A joiner that finds BUSY or DONE, or whose
 * waiter the finisher claimed, has the result. Only a joiner whose deadline or
 * cancellation claimed its waiter first, and which then finds the task
 * finished, waits for DONE: until then the finisher may still try to claim
 * that waiter.
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>

/* w: the calling worker, if it runs a coroutine of rt; else NULL. */
static int spawn(weft_rt *rt, struct weft__worker *w, weft_task **out, weft_fn fn, void *arg)
{
    bool inside = w != NULL;
    /* A plain thread must not race weft_rt_destroy; once it has begun, only the
     * runtime's own coroutines may add tasks. */
    if (!inside && atomic_load_explicit(&rt->destroying, memory_order_acquire))
        return -EINVAL;
    weft_task *t = weft__stack_get(rt->stacks, inside ? &w->pool : NULL);
    if (!t)
        return -ENOMEM;
    weft__count_spawn(rt, w);
    t->rt = rt;
    t->fn = fn;
    t->arg = arg;
    atomic_store_explicit(&t->magic, WEFT__TASK_MAGIC, memory_order_relaxed);   /* published with t */
    atomic_init(&t->refs, out ? 2u : 1u);
    atomic_init(&t->flags, out ? 0u : WEFT__F_DETACHED);
    if (out)
        *out = t;
    weft__task_start(w, t);   /* t may run, finish and be freed from here on */
    return 0;
}

int weft_spawn_on(weft_rt *rt, weft_task **task, weft_fn fn, void *arg)
{
    if (!rt || !fn)
        return -EINVAL;
    struct weft__worker *w = weft__worker_self();
    return spawn(rt, w && w->current && w->rt == rt ? w : NULL, task, fn, arg);
}

int weft_spawn(weft_task **task, weft_fn fn, void *arg)
{
    if (!fn)
        return -EINVAL;
    struct weft__worker *w = weft__worker_self();
    if (!w || !w->current)
        return -EPERM;
    return spawn(w->rt, w, task, fn, arg);
}

/* Marks the handle used by join or detach; -EINVAL if it was already. */
static int claim_handle(weft_task *t, uint32_t how, const char *misuse)
{
    if (atomic_load_explicit(&t->magic, memory_order_relaxed) != WEFT__TASK_MAGIC)
        return weft__misuse(misuse, -EINVAL);
    /* Not a read-modify-write: two threads racing to join one task is a misuse
     * this check is not meant to arbitrate; a second join after the first is
     * what it catches, without a locked instruction on every join. */
    uint32_t f = atomic_load_explicit(&t->flags, memory_order_relaxed);
    if (f & (WEFT__F_JOINED | WEFT__F_DETACHED))
        return weft__misuse(misuse, -EINVAL);
    atomic_store_explicit(&t->flags, f | how, memory_order_relaxed);
    return 0;
}

int weft_join(weft_task *t, void **result)
{
    if (!t)
        return -EINVAL;
    if (t == weft_self())
        return -EDEADLK;
    int err = claim_handle(t, WEFT__F_JOINED,
                           "weft_join: the task was already joined or detached");
    if (err)
        return err;
    uintptr_t j = atomic_load_explicit(&t->join, memory_order_acquire);   /* pairs with the finisher's swap */
    if (j == WEFT__JOIN_NONE) {
        struct weft__waiter wt;
        weft__waiter_init(&wt);
        if (atomic_compare_exchange_strong_explicit(&t->join, &j, (uintptr_t)&wt,
                memory_order_acq_rel, memory_order_acquire)) {   /* publishes the waiter to the finisher */
            int32_t r = weft__wait(&wt);   /* a positive claim publishes the result */
            if (r < 0) {
                j = (uintptr_t)&wt;
                if (atomic_compare_exchange_strong_explicit(&t->join, &j, WEFT__JOIN_NONE,
                        memory_order_acquire, memory_order_acquire)) {
                    /* Withdrawn before the task finished: the handle stays joinable. */
                    atomic_fetch_and_explicit(&t->flags, ~WEFT__F_JOINED, memory_order_relaxed);
                    return r;
                }
                /* The task finished meanwhile, and its finisher may still be
                 * failing to claim our waiter: wait until it is done with it
                 * (a short window, and only on this path). The join succeeds. */
                for (unsigned spins = 0;
                     atomic_load_explicit(&t->join, memory_order_acquire) != WEFT__JOIN_DONE; spins++)
                    if (spins % 64 == 63)
                        sched_yield();
                    else
                        weft__cpu_relax();
            }
        }
        /* A failed CAS saw BUSY or DONE: the finisher's swap published the result. */
    }
    if (result)
        *result = t->result;
    weft__task_release(t);
    return 0;
}

int weft_detach(weft_task *t)
{
    if (!t)
        return -EINVAL;
    int err = claim_handle(t, WEFT__F_DETACHED,
                           "weft_detach: the task was already joined or detached");
    if (err)
        return err;
    weft__task_release(t);
    return 0;
}

int weft_main(const weft_config *cfg, weft_fn fn, void *arg, void **result)
{
    if (!fn)
        return -EINVAL;
    weft_rt *rt;
    int err = weft_rt_create(&rt, cfg);
    if (err)
        return err;
    weft_task *t;
    err = weft_spawn_on(rt, &t, fn, arg);
    if (!err)
        err = weft_join(t, result);
    int derr = weft_rt_destroy(rt);
    return err ? err : derr;
}
