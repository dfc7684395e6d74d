/* SPDX-License-Identifier: MIT */
/*
 * The life of a task: spawn, join, detach, weft_main, and the memory of handles.
 *
 * Who frees a handle is settled by task->join alone, with one locked
 * instruction on each side, not by counting the handle and the running task
 * as two references (that cost the finisher a second one):
 *   - join leaves NONE for its waiter, with a CAS; the finisher, done, CASes
 *     NONE to DONE, or a waiter to BUSY, wakes that joiner, and stores DONE;
 *   - detach CASes NONE to DETACHED; a finisher that finds DETACHED frees the
 *     handle itself, and a detach that finds the task finished frees it;
 *   - a finisher never reads its handle after DONE: the context switched to
 *     gives its stack back from the fiber it kept (core/park.c).
 * So the handle's holder frees it once it sees DONE. A joiner that finds BUSY
 * was woken, or withdrew (deadline or cancellation) just as the finisher
 * claimed its waiter; DONE then is the finisher's next store. The result is
 * published by the finisher's CAS (release) and read after DONE. Besides the
 * handle, only a cancel note in flight holds a reference (io/uring.c), and
 * the last of them frees it.
 */
#include "core.h"
#include "base/sys.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/*
 * Handles. A task's handle outlives its stack (until joined), and a program
 * may spawn a million tasks before it joins any, so handles are small objects
 * of their own, carved from slabs that grow geometrically. Slabs of 2 MiB and
 * more ask for transparent huge pages: a million handles then fault in a
 * hundred-odd huge pages instead of 60,000 small ones, each of which costs tens
 * of microseconds on a virtual machine. Each worker keeps a private cache of
 * free handles, an array; past its size, its older half and the handle
 * freed go to the shared pool in one *magazine*, a small array allocated for
 * the purpose, and an empty cache takes a whole magazine back. Neither walks
 * a list linked through the free handles: a million handles freed by a
 * million joins are cold, and a refill that followed their links would miss
 * the cache once per handle, one miss after another, under the lock. Handles
 * freed by plain threads, and any that no magazine could be allocated for,
 * go on such a list all the same; it is the rare path.
 * Handles are reused, never unmapped before the runtime is destroyed, so a
 * misuse check may always read a stale handle's magic. The memory a runtime
 * keeps is its peak of tasks alive at once times TASK_STRIDE, as Go keeps its
 * goroutine descriptors.
 */
#define MAG_SIZE    (WEFT__TCACHE_MAX / 2 + 1)   /* a flush: half a cache and the handle freed */
#define SLAB_MIN    ((size_t)64 << 10)
#define SLAB_MAX    ((size_t)32 << 20)
#define SLAB_HUGE   ((size_t)2 << 20)
#define TASK_STRIDE WEFT__TASK_STRIDE

struct slab {                /* at the start of each mapping */
    struct slab *next;
    size_t       len;
};

struct magazine {
    struct magazine *next;
    unsigned         n;
    weft_task       *t[MAG_SIZE];
};

struct weft__taskmem {
    pthread_mutex_t  lock;   /* guards everything below */
    struct magazine *mags;   /* full magazines of free handles */
    weft_task       *free;   /* other free handles, linked by next */
    char           *bump, *end;
    size_t          slab_len;    /* of the next slab */
    struct slab    *slabs;
};

int weft__taskmem_create(struct weft__taskmem **out)
{
    struct weft__taskmem *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    pthread_mutex_init(&m->lock, NULL);
    m->slab_len = SLAB_MIN;
    *out = m;
    return 0;
}

void weft__taskmem_destroy(struct weft__taskmem *m)
{
    if (!m)
        return;
    for (struct slab *s = m->slabs, *next; s; s = next) {
        next = s->next;
        munmap(s, s->len);
    }
    for (struct magazine *g = m->mags, *next; g; g = next) {
        next = g->next;
        free(g);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Holds m->lock. A never-used handle, or NULL. */
static weft_task *carve(struct weft__taskmem *m)
{
    if ((size_t)(m->end - m->bump) < TASK_STRIDE) {
        struct slab *s = mmap(NULL, m->slab_len, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (s == MAP_FAILED)
            return NULL;
        if (m->slab_len >= SLAB_HUGE)
            madvise(s, m->slab_len, MADV_HUGEPAGE);   /* advice: failure costs only speed */
        s->len = m->slab_len;
        s->next = m->slabs;
        m->slabs = s;
        m->bump = (char *)s + TASK_STRIDE;   /* the header takes the first stride */
        m->end = (char *)s + s->len;
        if (m->slab_len < SLAB_MAX)
            m->slab_len *= 2;
    }
    weft_task *t = (weft_task *)m->bump;
    m->bump += TASK_STRIDE;
    return t;
}

size_t weft__taskmem_spans(struct weft__taskmem *m, struct weft__span *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&m->lock);
    for (struct slab *s = m->slabs; s; s = s->next, n++) {
        if (n >= max)
            continue;   /* counted only */
        uintptr_t lo = (uintptr_t)s + TASK_STRIDE;   /* the header takes the first stride */
        /* The newest slab is carved up to bump; older ones were left with
         * less than a stride uncarved, never used. */
        uintptr_t hi = s == m->slabs ? (uintptr_t)m->bump : (uintptr_t)s + s->len;
        out[n] = (struct weft__span){ .lo = lo, .hi = hi };
    }
    pthread_mutex_unlock(&m->lock);
    return n;
}

/* Holds m->lock. A free handle, or NULL: a listed one, one from the top
 * magazine, or a new one. */
static weft_task *take(struct weft__taskmem *m)
{
    weft_task *t = m->free;
    if (t) {
        m->free = t->next;
    } else if (m->mags) {
        struct magazine *g = m->mags;
        t = g->t[--g->n];
        if (!g->n) {
            m->mags = g->next;
            free(g);
        }
    } else {
        t = carve(m);
    }
    return t;
}

weft_task *weft__task_alloc(struct weft__taskmem *m, struct weft__tcache *cache)
{
    weft_task *t = NULL;
    if (!cache) {
        pthread_mutex_lock(&m->lock);
        t = take(m);
        pthread_mutex_unlock(&m->lock);
    } else {
        if (!cache->count) {   /* a whole magazine, or handles one by one, under one lock */
            struct magazine *g = NULL;
            pthread_mutex_lock(&m->lock);
            if (!m->free && (g = m->mags))
                m->mags = g->next;
            else
                for (weft_task *x; cache->count < WEFT__TCACHE_MAX / 2 && (x = take(m)); )
                    cache->slot[cache->count++] = x;
            pthread_mutex_unlock(&m->lock);
            if (g) {
                memcpy(cache->slot, g->t, g->n * sizeof(*g->t));
                cache->count = g->n;
                free(g);
            }
        }
        if (cache->count)
            t = cache->slot[--cache->count];
    }
    return t;
}

void weft__task_free(struct weft__taskmem *m, struct weft__tcache *cache, weft_task *t)
{
    atomic_store_explicit(&t->magic, WEFT__TASK_DEAD, memory_order_relaxed);   /* read by misuse checks */
    if (cache && cache->count < WEFT__TCACHE_MAX) {
        cache->slot[cache->count++] = t;
        return;
    }
    /* From a worker: this one and the older half of its cache go to the
     * shared pool in a magazine; the newer half stays, warm. */
    struct magazine *g = cache ? malloc(sizeof(*g)) : NULL;
    if (g) {
        g->n = 0;
        g->t[g->n++] = t;
        for (unsigned i = 0; i < WEFT__TCACHE_MAX / 2; i++)
            g->t[g->n++] = cache->slot[i];
        memmove(cache->slot, cache->slot + WEFT__TCACHE_MAX / 2, (WEFT__TCACHE_MAX / 2) * sizeof(*cache->slot));
        cache->count -= WEFT__TCACHE_MAX / 2;
    }
    pthread_mutex_lock(&m->lock);
    if (g) {
        g->next = m->mags;
        m->mags = g;
    } else {   /* a plain thread's, or no memory for a magazine */
        t->next = m->free;
        m->free = t;
    }
    pthread_mutex_unlock(&m->lock);
}

void weft__task_release_at(weft_task *t, struct weft__worker *w)
{
    /* Alone with its last reference, the caller frees it without a locked
     * instruction: only a holder of the handle may add a reference
     * (weft__ring_cancel), and the handle's reference is the caller's. */
    if (atomic_load_explicit(&t->refs, memory_order_acquire) != 1 &&   /* pairs with the other releases */
        atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    weft__task_free(t->rt->taskmem, w && w->rt == t->rt ? &w->tcache : NULL, t);
}

/* The handle's holder, once the task has finished: waits until its finisher
 * is done with the handle, which it marks by storing DONE last. The wait is
 * short: only a joiner that was woken, or that withdrew while the finisher
 * woke it, can see BUSY, and DONE is the finisher's next store. */
static void wait_done(weft_task *t)
{
    for (unsigned spins = 0;
         atomic_load_explicit(&t->join, memory_order_acquire) != WEFT__JOIN_DONE; spins++)   /* pairs with the finisher's store */
        if (spins % 64 == 63)
            weft__sys_sched_yield();   /* the finisher's thread was preempted in between */
        else
            weft__cpu_relax();
}

void weft__task_release(weft_task *t)
{
    weft__task_release_at(t, weft__worker_self());
}

/*
 * Writes every field of a handle about to be spawned, one store each. Zeroing
 * it first, with memset or a compound literal, compiles (gcc, x86-64) to a
 * `rep stos`, several times as slow as plain stores for the 128 bytes
 * (`weft-bench spawn`). The size is pinned so that a new field
 * cannot be left out of this list unnoticed.
 */
_Static_assert(sizeof(struct weft_task) == 16 * sizeof(void *) && sizeof(void *) == 8,
               "task_init writes every field of weft_task: a new one needs its line there");
static void task_init(weft_task *t, weft_rt *rt, weft_fn fn, void *arg, bool detached,
                      uint64_t id, const void *spawn_pc)
{
    t->fiber = NULL;
    t->next = NULL;
    t->rt = rt;
    t->fn = fn;
    t->arg = arg;
    atomic_init(&t->join, detached ? WEFT__JOIN_DETACHED : WEFT__JOIN_NONE);
    atomic_store_explicit(&t->magic, WEFT__TASK_MAGIC, memory_order_relaxed);   /* published with t */
    atomic_init(&t->pstate, WEFT__RUNNING);
    atomic_init(&t->flags, detached ? WEFT__F_DETACHED : 0u);
    atomic_init(&t->refs, 1u);   /* the handle: the caller's, or the finisher's if detached */
    atomic_init(&t->cancelled, 0u);
    atomic_init(&t->waiting, 0);
    t->spawn_pc = spawn_pc;   /* the deadline, 0, once it runs (core/park.c) */
    atomic_init(&t->io_req, 0);
    atomic_init(&t->io_owner, NULL);
    t->pins = 0;
    t->home = NULL;
    t->keys = NULL;
    t->id = id;
}

/*
 * Task ids, for weft_dump: unique in the process and increasing on each
 * worker. Workers take them from the shared counter in batches, so that
 * spawning on several workers does not make every core write one cache line;
 * plain threads take one at a time. Relaxed: only uniqueness matters.
 */
#define ID_BATCH 1024u
static _Atomic uint64_t next_id = 1;

static uint64_t new_id(struct weft__worker *w)
{
    if (!w)
        return atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
    if (w->id_next == w->id_end) {
        w->id_next = atomic_fetch_add_explicit(&next_id, ID_BATCH, memory_order_relaxed);
        w->id_end = w->id_next + ID_BATCH;
    }
    return w->id_next++;
}

/* w: the calling worker, if it runs a coroutine of rt; else NULL. pc: where
 * the program called weft_spawn or weft_spawn_on. */
static int spawn(weft_rt *rt, struct weft__worker *w, weft_task **out, weft_fn fn, void *arg,
                 const void *pc)
{
    bool inside = w != NULL;
    /* Once weft_rt_destroy has begun, only the runtime's own coroutines may
     * add tasks. A plain thread says it is spawning before it looks, and
     * destroy looks after it says it has begun: a Dekker pair (seq_cst), so
     * either the spawn sees `destroying`, or destroy waits for the spawn to
     * end, counted. */
    if (!inside) {
        atomic_fetch_add_explicit(&rt->outside, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&rt->destroying, memory_order_seq_cst)) {
            atomic_fetch_sub_explicit(&rt->outside, 1, memory_order_release);
            return -EINVAL;
        }
    }
    int err = 0;
    weft_task *t = weft__task_alloc(rt->taskmem, inside ? &w->tcache : NULL);
    if (!t) {
        err = -ENOMEM;
    } else if ((err = weft__stack_promise(rt->stacks, inside ? &w->pool : NULL)) != 0) {
        weft__task_free(rt->taskmem, inside ? &w->tcache : NULL, t);
    } else {
        weft__count_spawn(rt, w);
        task_init(t, rt, fn, arg, !out, new_id(w), pc);
        if (out)
            *out = t;
        weft__task_start(w, t);   /* t may run, finish and be freed from here on */
    }
    if (!inside)
        atomic_fetch_sub_explicit(&rt->outside, 1, memory_order_release);   /* destroy may
                                                                                     * free rt now */
    return err;
}

static int spawn_on(weft_rt *rt, weft_task **task, weft_fn fn, void *arg, const void *pc)
{
    if (!rt || !fn)
        return -EINVAL;
    if (weft__inherited(rt))
        return -ECHILD;
    struct weft__worker *w = weft__worker_self();
    return spawn(rt, w && w->current && w->rt == rt ? w : NULL, task, fn, arg, pc);
}

int weft_spawn_on(weft_rt *rt, weft_task **task, weft_fn fn, void *arg)
{
    return spawn_on(rt, task, fn, arg, __builtin_return_address(0));
}

int weft_spawn(weft_task **task, weft_fn fn, void *arg)
{
    if (!fn)
        return -EINVAL;
    struct weft__worker *w = weft__worker_self();
    if (!w || !w->current)
        return -EPERM;
    return spawn(w->rt, w, task, fn, arg, __builtin_return_address(0));
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
    if (weft__inherited(t->rt))
        return -ECHILD;   /* the parent's: it never finishes here */
    struct weft__worker *w = weft__worker_self();   /* no switch before the wait: */
    weft_task *self = w ? w->current : NULL;         /* still ours there */
    if (t == self)
        return -EDEADLK;
    int err = claim_handle(t, WEFT__F_JOINED,
                           "weft_join: the task was already joined or detached");
    if (err)
        return err;
    /* The waiter lives as long as the call, not in the block that publishes
     * it: a joiner whose deadline or cancellation won the claim, and whose
     * withdrawal found BUSY, leaves that block while the finisher may still
     * be reading its waiter and failing to claim it. wait_done(), below,
     * is what waits for the finisher to be done with it. */
    struct weft__waiter wt;
    uintptr_t j = atomic_load_explicit(&t->join, memory_order_acquire);   /* pairs with the finisher's CAS */
    if (j == WEFT__JOIN_NONE) {
        wt = (struct weft__waiter){ .task = self };
        weft__waiter_why(&wt, WEFT__WHY_JOIN, t);
        /* A task still queued here, typically just spawned, is taken out to
         * run next on this worker: it cannot start before we park, so a
         * plain store publishes the waiter (to our own thread). */
        bool ours = self && weft__handoff_take(w, t);
        if (ours)
            atomic_store_explicit(&t->join, (uintptr_t)&wt, memory_order_relaxed);
        if (ours || atomic_compare_exchange_strong_explicit(&t->join, &j, (uintptr_t)&wt,
                memory_order_acq_rel, memory_order_acquire)) {   /* publishes the waiter to the finisher */
            int32_t r = weft__wait(&wt);   /* a positive claim publishes the result */
            if (r < 0) {
                j = (uintptr_t)&wt;
                bool withdrawn = atomic_compare_exchange_strong_explicit(&t->join, &j, WEFT__JOIN_NONE,
                                     memory_order_acquire, memory_order_acquire);
                if (ours)
                    weft__handoff_undo(t);   /* not parked: t never ran, and others may run it now */
                if (withdrawn) {
                    /* Withdrawn before the task finished: the handle stays joinable. */
                    atomic_fetch_and_explicit(&t->flags, ~WEFT__F_JOINED, memory_order_relaxed);
                    return r;
                }
                /* The task finished meanwhile, and its finisher may still be
                 * failing to claim our waiter; wait_done waits until it is
                 * done with it, and wt lives until then. The join succeeds. */
            }
        }
        /* A failed CAS saw BUSY or DONE: the finisher's CAS published the result. */
    }
    wait_done(t);
    if (result)
        *result = t->result;
    weft__task_release(t);
    return 0;
}

int weft_detach(weft_task *t)
{
    if (!t)
        return -EINVAL;
    if (weft__inherited(t->rt))
        return -ECHILD;
    int err = claim_handle(t, WEFT__F_DETACHED,
                           "weft_detach: the task was already joined or detached");
    if (err)
        return err;
    uintptr_t j = WEFT__JOIN_NONE;
    if (atomic_compare_exchange_strong_explicit(&t->join, &j, WEFT__JOIN_DETACHED,
            memory_order_release, memory_order_acquire))   /* pairs with the finisher's load */
        return 0;   /* still running: its finisher frees the handle */
    wait_done(t);   /* finished: ours to free */
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
    err = spawn_on(rt, &t, fn, arg, __builtin_return_address(0));
    if (!err)
        err = weft_join(t, result);
    int derr = weft_rt_destroy(rt);
    return err ? err : derr;
}
