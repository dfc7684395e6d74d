/* SPDX-License-Identifier: MIT */
/*
 * The life of a runtime: weft_rt_create and weft_rt_destroy, the process's
 * list of runtimes, fork(), and the small public calls about the caller.
 */
#include "sched.h"
#include "base/sys.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void stop_workers(weft_rt *rt, unsigned started)
{
    atomic_store_explicit(&rt->stopping, 1, memory_order_seq_cst);
    pthread_mutex_lock(&rt->idle_lock);
    struct weft__worker *w = rt->idle;
    rt->idle = NULL;
    while (w) {
        struct weft__worker *next = w->idle_next;
        atomic_fetch_sub_explicit(&rt->nidle, 1, memory_order_seq_cst);
        atomic_fetch_add_explicit(&rt->nspinning, 1, memory_order_seq_cst);
        atomic_store_explicit(&w->wake, WEFT__WAKE_GO, memory_order_release);
        weft__wake_worker(w);
        w = next;
    }
    pthread_mutex_unlock(&rt->idle_lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(rt->workers[i]->thread, NULL);
}

/* The process's runtimes, for calls that concern every one of them
 * (weft_close from any thread). Statically initialised: nothing runs before
 * weft_rt_create. */
static pthread_rwlock_t live_lock = PTHREAD_RWLOCK_INITIALIZER;
static weft_rt *live;   /* linked by live_next, under live_lock */

void weft__each_runtime(void (*fn)(weft_rt *rt, void *arg), void *arg)
{
    pthread_rwlock_rdlock(&live_lock);
    for (weft_rt *rt = live; rt; rt = rt->live_next)
        fn(rt, arg);
    pthread_rwlock_unlock(&live_lock);
}

static void live_add(weft_rt *rt)
{
    pthread_rwlock_wrlock(&live_lock);
    rt->live_next = live;
    live = rt;
    pthread_rwlock_unlock(&live_lock);
}

/* Once it returns, no weft__each_runtime() call is still using rt. */
static void live_remove(weft_rt *rt)
{
    pthread_rwlock_wrlock(&live_lock);
    for (weft_rt **p = &live; *p; p = &(*p)->live_next) {
        if (*p == rt) {
            *p = rt->live_next;
            break;
        }
    }
    pthread_rwlock_unlock(&live_lock);
}

/* ---- fork ------------------------------------------------------------------------ */

/*
 * A child of fork() has one thread, a copy of the one that forked, which may
 * be a worker running a coroutine on its stack; the runtimes are copies whose
 * workers do not exist. Their rings' memory is not mapped in the child
 * (io_uring.c asks MADV_DONTFORK), and their epoll sets and eventfds are open
 * file descriptions shared with the parent, where a child's epoll_ctl or read
 * would take the parent's events. So the child must never touch them, and
 * the handler below makes sure weft does not:
 *   1. a new fork generation: every runtime made before is inherited
 *      (weft__inherited), and calls on it or on its tasks return -ECHILD;
 *      a wake-up of one of its tasks (a channel or lock shared in memory
 *      with the parent's coroutines) is dropped in ready();
 *   2. the forking thread is no worker any more: weft's calls act as from a
 *      plain thread (plain system calls, futex waits), and a coroutine that
 *      returns there stops the child (task_entry), since nothing could run
 *      after it;
 *   3. the list of runtimes is emptied, so weft_close visits none of the
 *      parent's, and its lock made anew: a thread that held it at the fork
 *      does not exist here to release it;
 *   4. the dump and stall signals are nobody's, their handlers the
 *      program's again, and the stall report's lock (held by a monitor or a
 *      dump while it takes backtraces) made anew: a runtime the child makes
 *      installs them afresh, with any signal;
 *   5. the other process-wide locks made anew, for the same reason as the
 *      list's: the keys' (weft_key_create, weft_key_delete), the offload
 *      pools' creation lock, and the locks that serialise a descriptor's
 *      O_NONBLOCK toggles (io/io.c), which another thread's accept or
 *      connect holds across three system calls;
 *   6. SIGPIPE unblocked, where a worker forked and had blocked it (workers
 *      block it, io/backend.c), so that a program the child execs starts
 *      with the signal mask the program gave its threads (an offload
 *      helper, which a worker starts, unblocks it when it starts,
 *      io/offload.c). posix_spawn and system(), which run no fork handlers,
 *      start theirs with the calling thread's mask: a coroutine that spawns
 *      so gives the new program SIGPIPE blocked unless it passes a mask
 *      (POSIX_SPAWN_SETSIGMASK), or libweft-hook runs the call on a helper
 *      thread (hook/spawn.c).
 * No prepare or parent handler is needed: the child keeps nothing of the
 * list or the signals' users, so they need not be consistent at the fork
 * (a signal's handler is given back only where it is still weft's), and the
 * parent goes on as if nothing happened. weft_rt_create makes fresh runtimes
 * in the child. A child made without these handlers (vfork, posix_spawn,
 * _Fork, clone) may only exec or _exit, as POSIX says of a child of a
 * threaded process anyway.
 */
unsigned weft__fork_gen;

static void fork_child(void)
{
    weft__fork_gen++;                                       /* 1 */
    weft__worker_set_self(NULL);                            /* 2 */
    live = NULL;                                            /* 3 */
    pthread_rwlock_t fresh = PTHREAD_RWLOCK_INITIALIZER;
    live_lock = fresh;
    weft__dump_signal_forget();                             /* 4 */
    weft__stallbt_forget();
    weft__key_fork_child();                                 /* 5 */
    weft__io_fork_child();
    weft__sigpipe_fork_child();                             /* 6 */
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_error;

static void atfork_register(void)
{
    atfork_error = -pthread_atfork(NULL, NULL, fork_child);
}

/* Registered once weft is in use: by the first runtime, or by the first
 * call that takes a process-wide lock without one. */
int weft__fork_handler_register(void)
{
    pthread_once(&atfork_once, atfork_register);
    return atfork_error;
}

static void rt_free(weft_rt *rt)
{
    for (unsigned i = 0; i < rt->nworkers; i++) {
        weft__io_worker_destroy(rt->workers[i]);
        free(rt->workers[i]->bt_snap);   /* its thread has ended: no handler writes it */
        free(rt->workers[i]);
    }
    free(rt->workers);
    if (rt->stacks)
        weft__stacks_destroy(rt->stacks);
    weft__taskmem_destroy(rt->taskmem);
    weft__timers_destroy(rt->timers);
    weft__gq_destroy(rt);
    pthread_mutex_destroy(&rt->gq_lock);
    pthread_mutex_destroy(&rt->idle_lock);
    free(rt);
}

static unsigned default_workers(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* The environment variable `name`, a decimal count of `unit` nanoseconds,
 * into *ns; a count past `max` gives max. False, *ns untouched, where it is
 * unset or not digits alone (a sign, a space, a suffix): such a value is
 * ignored, not read as far as it goes. */
static bool env_ns(const char *name, uint64_t unit, uint64_t max, uint64_t *ns)
{
    const char *s = getenv(name);
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end;
    unsigned long long n = strtoull(s, &end, 10);   /* ULLONG_MAX past its range: clamped below */
    if (*end)
        return false;
    *ns = n > max / unit ? max : n * unit;
    return true;
}

/* weft_rt_create's first step: checks cfg and fills in its defaults in *c.
 * Returns 0 or -EINVAL, having changed nothing else. */
static int config_check(weft_config *c, const weft_config *cfg)
{
    *c = cfg ? *cfg : (weft_config){ 0 };
    if (c->workers > WEFT_WORKERS_MAX)
        return -EINVAL;
    if (c->stack_size && (c->stack_size < WEFT_STACK_MIN || c->stack_size > ((size_t)1 << 30)))
        return -EINVAL;
    if (!c->workers)
        c->workers = default_workers();
    if (c->workers > WEFT_WORKERS_MAX)
        c->workers = WEFT_WORKERS_MAX;
    if (!c->stack_size)
        c->stack_size = WEFT_STACK_DEFAULT;
    if (c->io_backend < WEFT_IO_AUTO || c->io_backend > WEFT_IO_EPOLL || c->ring_entries > 32768)
        return -EINVAL;
    if (!c->ring_entries)
        c->ring_entries = 256;
    /* The stall report's threshold: WEFT_STALL_MS (milliseconds, 0: never),
     * else the configuration's. UINT64_MAX means never. */
    if (!c->stall_ns)
        c->stall_ns = STALL_NS_DEFAULT;
    uint64_t ns;
    if (env_ns("WEFT_STALL_MS", 1000000u, UINT64_MAX - 1, &ns))
        c->stall_ns = ns ? ns : UINT64_MAX;
    /* The idle search: WEFT_IDLE_SPIN_US (microseconds, 0: none, at most a
     * second), else the configuration's. From here on 0 means none. */
    if (c->idle_spin_ns > IDLE_SPIN_MAX_NS && c->idle_spin_ns != UINT64_MAX)
        return -EINVAL;
    c->idle_spin_ns = c->idle_spin_ns == UINT64_MAX ? 0 : c->idle_spin_ns ? c->idle_spin_ns : SPIN_NS;
    if (env_ns("WEFT_IDLE_SPIN_US", 1000u, IDLE_SPIN_MAX_NS, &ns))
        c->idle_spin_ns = ns;
    /* Crowding: WEFT_CROWDED_PCT (0 or 100 and above: never), else the
     * configuration's. From here on 100 means never. */
    if (c->crowded_pct > 100)
        return -EINVAL;
    if (!c->crowded_pct)
        c->crowded_pct = CROWDED_PCT;
    if (env_ns("WEFT_CROWDED_PCT", 1u, 100u, &ns))
        c->crowded_pct = ns ? (unsigned)ns : 100u;
    return 0;
}

/* The process-wide setup the first runtime needs: the stack overflow
 * handler and the fork handler. Returns 0 or a negative errno. */
static int process_setup(void)
{
    /* weft__panic (base/) prints the running coroutine's part of the dump. */
    atomic_store_explicit(&weft__panic_context, weft__dump_current_fd, memory_order_relaxed);   /* read only by a panic */
    weft__dump_prepare();
    int err = weft__guard_install();
    if (err)
        return err;
    return weft__fork_handler_register();
}

/* A runtime with its queues, stacks, handles, timers and workers, none of
 * them started yet; NULL for want of memory. */
static weft_rt *rt_alloc(const weft_config *c)
{
    /* A debugging aid, read here since weft runs nothing before this call. */
    const char *shuffle = getenv("WEFT_SCHED_RANDOM");
    bool random_sched = shuffle && *shuffle && strcmp(shuffle, "0") != 0;

    weft_rt *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return NULL;
    rt->fork_gen = weft__fork_gen;
    pthread_mutex_init(&rt->gq_lock, NULL);
    pthread_mutex_init(&rt->idle_lock, NULL);
    /* Valgrind runs one thread at a time: a spinning searcher only holds
     * back the worker it waits for. */
    rt->spin_ns = weft__on_valgrind() ? 0 : c->idle_spin_ns;
    rt->crowded_pct = c->crowded_pct;
    rt->workers = calloc(c->workers, sizeof(*rt->workers));
    if (!rt->workers || weft__stacks_create(&rt->stacks, c->stack_size) ||
        weft__taskmem_create(&rt->taskmem) ||
        weft__timers_create(&rt->timers)) {
        rt_free(rt);
        return NULL;
    }
    for (unsigned i = 0; i < c->workers; i++) {
        struct weft__worker *w = aligned_alloc(WEFT__CACHELINE,
            (sizeof(*w) + WEFT__CACHELINE - 1) & ~(size_t)(WEFT__CACHELINE - 1));
        if (!w) {
            rt_free(rt);
            return NULL;
        }
        memset(w, 0, sizeof(*w));
        w->rt = rt;
        w->index = i;
        w->rng = 0x9e3779b97f4a7c15ull * (i + 1) ^ (uint64_t)(uintptr_t)rt;
        w->shuffle = random_sched;
        w->fair_left = FAIRNESS_TICKS;
        w->spin_budget = rt->spin_ns;
        rt->workers[rt->nworkers++] = w;
    }
    return rt;
}

/* Starts rt's worker threads. Returns 0, or a negative errno once the
 * threads it started have stopped again. */
static int workers_start(weft_rt *rt)
{
    for (unsigned i = 0; i < rt->nworkers; i++) {
        int err = pthread_create(&rt->workers[i]->thread, NULL, weft__worker_main, rt->workers[i]);
        if (err) {
            stop_workers(rt, i);
            return err == EAGAIN ? -EAGAIN : -err;
        }
        /* What top -H, perf and gdb show, cut to what the kernel keeps
         * (TASK_COMM_LEN, the NUL among it); set here, not by the thread,
         * so that it is there when weft_rt_create returns. */
        char name[32];
        snprintf(name, sizeof name, "weft-worker-%u", i);
        name[15] = '\0';
        pthread_setname_np(rt->workers[i]->thread, name);
    }
    return 0;
}

int weft_rt_create(weft_rt **out, const weft_config *cfg)
{
    if (!out)
        return -EINVAL;
    weft_config c;
    int err = config_check(&c, cfg);
    if (err)
        return err;
    int backend = weft__io_choose(c.io_backend);
    if (backend < 0)
        return backend;   /* -ENOSYS: built without io_uring */
    int dump_signal = weft__dump_signal_pick(c.dump_signal);
    if (dump_signal < 0)
        return dump_signal;
    int stall_signal = weft__stall_signal_pick(c.stall_signal, c.stall_ns, dump_signal);
    if (stall_signal < 0)
        return stall_signal;
    if ((err = process_setup()) || (err = weft__stallbt_start(stall_signal)))
        return err;
    weft_rt *rt = rt_alloc(&c);
    if (!rt) {
        weft__stallbt_stop(stall_signal);
        return -ENOMEM;
    }
    rt->stall_signal = stall_signal;   /* before the monitor, which reads it */
    if ((err = weft__io_workers_create(rt, backend, c.ring_entries)) ||
        (err = workers_start(rt))) {
        rt_free(rt);
        weft__stallbt_stop(stall_signal);
        return err;
    }
    if ((err = weft__monitor_start(rt, c.stall_ns))) {
        stop_workers(rt, rt->nworkers);
        rt_free(rt);
        weft__stallbt_stop(stall_signal);
        return err;
    }
    live_add(rt);
    if ((err = weft__dump_signal_start(dump_signal))) {
        weft_rt_destroy(rt);   /* no task yet: at once */
        return err;
    }
    rt->dump_signal = dump_signal;
    *out = rt;
    return 0;
}

void weft__count_spawn(weft_rt *rt, struct weft__worker *w)
{
    if (w)
        atomic_store_explicit(&w->spawned, atomic_load_explicit(&w->spawned, memory_order_relaxed) + 1,
                              memory_order_release);             /* pairs with live_tasks() */
    else
        atomic_fetch_add_explicit(&rt->spawned_outside, 1, memory_order_release);
}

/*
 * Tasks spawned and not finished. Each worker counts its own spawns and exits
 * with plain stores (no shared counter for every core to bounce). The exits are
 * read first: a task's spawn happens before its exit, so every exit counted here
 * has its spawn counted too, and 0 means that every task that was ever spawned
 * has finished. Only a live task can spawn another, so 0 stays 0.
 */
static uint64_t live_tasks(weft_rt *rt)
{
    uint64_t exited = 0, spawned = 0;
    for (unsigned i = 0; i < rt->nworkers; i++)
        exited += atomic_load_explicit(&rt->workers[i]->exited, memory_order_seq_cst);
    spawned = atomic_load_explicit(&rt->spawned_outside, memory_order_seq_cst);
    for (unsigned i = 0; i < rt->nworkers; i++)
        spawned += atomic_load_explicit(&rt->workers[i]->spawned, memory_order_seq_cst);
    return spawned - exited;
}

int weft_rt_destroy(weft_rt *rt)
{
    if (!rt)
        return -EINVAL;
    if (weft__inherited(rt))
        return -ECHILD;   /* the parent's: its workers are not here to stop */
    struct weft__worker *w = weft__worker_self();
    if ((w && w->rt == rt) || weft__offload_is_helper_of(rt))
        return -EDEADLK;   /* it would wait for itself */
    atomic_store_explicit(&rt->destroying, 1, memory_order_seq_cst);
    /* Exits that see `destroying` bump exit_seq and wake us; one that raced
     * with the store above may not, so the wait also times out and rechecks.
     * A plain thread's spawn that saw no `destroying`, and a waker from
     * outside rt, are waited for (core/task.c, park.c): `outside` is read
     * before the count of tasks and again after it. A waker that queued the
     * last task before its exit was counted made its increment before that
     * exit, so the second read sees it (or its decrement, after which it is
     * done with rt); a spawn counted is published by its decrement. */
    for (;;) {
        uint32_t seq = atomic_load_explicit(&rt->exit_seq, memory_order_acquire);
        if (atomic_load_explicit(&rt->outside, memory_order_seq_cst) == 0 && live_tasks(rt) == 0 &&
            atomic_load_explicit(&rt->outside, memory_order_seq_cst) == 0)
            break;
        weft__futex_wait_until(&rt->exit_seq, seq, weft_now() + 1000000u);
    }
    live_remove(rt);   /* no coroutine is left to wait on a descriptor */
    stop_workers(rt, rt->nworkers);
    weft__dump_signal_stop(rt->dump_signal);
    weft__monitor_stop(rt);    /* after the workers, which nudge it as they park */
    weft__stallbt_stop(rt->stall_signal);   /* no report is under way */
    weft__io_rt_destroy(rt);   /* descriptor table, helper threads (io/backend.c) */
    rt_free(rt);
    return 0;
}

/* ---- small public calls ---------------------------------------------------------- */

weft_task *weft_self(void)
{
    struct weft__worker *w = weft__worker_self();
    return w ? w->current : NULL;
}

int weft_worker(void)
{
    struct weft__worker *w = weft__worker_self();
    return w && w->current ? (int)w->index : -EPERM;
}

int weft_workers(void)
{
    struct weft__worker *w = weft__worker_self();
    return w && w->current ? (int)w->rt->nworkers : -EPERM;
}

void weft_yield(void)
{
    struct weft__worker *w = weft__worker_self();
    if (w && w->current)
        weft__yield_current();
    else
        weft__sys_sched_yield();
}
