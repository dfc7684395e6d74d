/* SPDX-License-Identifier: MIT */
/*
 * The core's nouns and entry points: the task, the worker, the runtime, the
 * waiter, and what the rest of the runtime (io/, sync/) may call of the
 * scheduler, the stacks and the task handles. Nothing here is public:
 * non-static names are weft__ and are hidden from the shared library.
 */
#ifndef WEFT_CORE_H
#define WEFT_CORE_H

#include "base/base.h"
#include "base/futex.h"
#include "../arch/ctx.h"

#include <pthread.h>


/*
 * One execution context: a coroutine's, or a worker thread's own (the
 * scheduler context it returns to when it has nothing to run). A coroutine's
 * lives at the top of its stack slot, above the stack itself, only while the
 * task holds the slot (core/stack.c): the handle then stays small, and the
 * page it lives in is the stack's first, which the coroutine touches anyway.
 * The sanitizer fields exist in every build so that the layout does not
 * depend on flags.
 */
#define WEFT__NAME_SIZE 24   /* weft_set_name's limit, WEFT_NAME_MAX, plus the NUL */
_Static_assert(WEFT__NAME_SIZE == WEFT_NAME_MAX + 1, "a fiber holds WEFT_NAME_MAX characters and a NUL");

struct weft__fiber {
    weft__ctx ctx;          /* while not running: where its registers are saved (arch/) */
    void     *stack_lo;     /* lowest usable address, for ASan */
    size_t    stack_size;   /* usable bytes, from stack_lo up to the fiber */
    void     *asan_fake;    /* ASan's fake-stack handle while switched out */
    void     *tsan;         /* TSan's fiber */
    unsigned  vg_stack;     /* Valgrind's id for the stack, when under it */
    /* For weft_dump (core/dump.c): written only by the coroutine itself,
     * with plain stores, and read by the dump from copies (never in place),
     * so a torn read costs a wrong word in the dump, nothing else. */
    uint32_t  why;          /* enum weft__why of its current or last wait */
    uintptr_t what;         /* the channel, descriptor, task ... why names */
    uint64_t  since;        /* its worker's clock when it last parked */
    uint64_t  wait_from;    /* 0, or when a wait of several parks began (weft__wait_span):
                             * the park stores it as `since` */
    char      name[WEFT__NAME_SIZE];   /* weft_set_name(), NUL-terminated; "" for none */
    const void *spawn_pc;   /* where its task was spawned, moved here as it first runs */
    /* For weft_dump too: bumped as it runs again and as the fiber it
     * switched to runs (so the save is done), so even while its context
     * is saved and it is switched out, odd while it runs or is switching.
     * A dump that sees one even value across its copies copied a context
     * and stack nobody touched meanwhile. */
    uint32_t  seq;
    struct weft__fiber *came_from;   /* the fiber that last switched to this one */
};

/* The bytes a coroutine's fiber takes at the top of its stack slot. */
#define WEFT__FIBER_SPACE \
    ((sizeof(struct weft__fiber) + WEFT__CACHELINE - 1) & ~(size_t)(WEFT__CACHELINE - 1))

struct weft__worker;
struct weft__backend;
struct weft__snap;      /* what a worker's thread runs now (core/dump.h) */

/* What a searching worker saw at a victim in its last LOOK or TAKE round
 * (core/search.c): only compared, never dereferenced. */
struct weft__sighting {
    const struct weft__worker *victim;
    uintptr_t                  what;
    uint32_t                   tick;     /* the victim's schedules so far */
};
struct weft__fdtab;

/* ---- tasks ----------------------------------------------------------------- */

/* Values of weft_task.join besides a waiter pointer (core/task.c). */
#define WEFT__JOIN_NONE     ((uintptr_t)0)   /* running, and its handle is held */
#define WEFT__JOIN_DONE     ((uintptr_t)1)   /* finished: the handle's holder frees it */
#define WEFT__JOIN_BUSY     ((uintptr_t)2)   /* finished; the finisher is waking the joiner */
#define WEFT__JOIN_DETACHED ((uintptr_t)3)   /* running, no handle held: the finisher frees it */

/* weft_task.flags */
#define WEFT__F_JOINED   1u   /* weft_join() has been called */
#define WEFT__F_DETACHED 2u   /* weft_detach() has been called, or spawned detached */

/* weft_task.pstate: the park protocol, see core/park.c. */
#define WEFT__RUNNING  0u     /* running, runnable, or on its way to park */
#define WEFT__PARKED   1u     /* switched out and waiting for weft__unpark() */
#define WEFT__NOTIFIED 2u     /* unparked before it finished parking */

#define WEFT__TASK_MAGIC 0x7754534bu   /* "wTSK" */
#define WEFT__TASK_DEAD  0xdeadu

/*
 * A coroutine, and the handle its spawner holds. Handles are allocated in slabs
 * (core/task.c); the stack is bound to the task only from its first run to
 * its end (core/stack.c): fiber is NULL before its first run, and is never
 * read after its end.
 */
struct weft_task {
    struct weft__fiber *fiber;       /* at the top of its stack slot while it has one;
                                      * owned by whoever runs it */
    struct weft_task  *next;         /* on one list at a time: a worker's yield or IO queue,
                                      * the global queue's fallback list (no array could
                                      * be had), or the handle pool's list of free handles
                                      * that no magazine holds */
    weft_rt           *rt;
    union {
        weft_fn        fn;           /* until it returns */
        void          *result;       /* then: written before join becomes DONE */
    };
    void              *arg;
    _Atomic uintptr_t  join;         /* WEFT__JOIN_*, or the joiner's weft__waiter */
    _Atomic uint32_t   magic;        /* WEFT__TASK_MAGIC while the handle is valid; atomic
                                      * because misuse checks may read a freed handle */
    _Atomic uint32_t   pstate;       /* RUNNING, PARKED or NOTIFIED */
    _Atomic uint32_t   flags;        /* WEFT__F_* */
    _Atomic uint32_t   refs;         /* the handle (its holder, or the finisher once
                                      * detached) + cancel notes in flight (io/uring.c) */
    _Atomic uint32_t   cancelled;    /* bit 0 set once by weft_cancel(); above it, cancellers in flight (core/wait.c) */
    uint32_t           pins;         /* weft_pin() minus weft_unpin(); only the coroutine
                                      * writes it, wakers read it once it parked (core/park.c) */
    _Atomic uintptr_t  waiting;      /* the waiter it is parked on, for weft_cancel
                                      * (core/wait.c); 0 when not waiting */
    union {
        const void    *spawn_pc;     /* until it first runs: where weft_spawn or
                                      * weft_spawn_on was called; then in its fiber */
        uint64_t       deadline;     /* then: weft_deadline(); only the coroutine itself */
    };
    _Atomic uintptr_t  io_req;       /* its io_uring request in flight, 0 if none */
    _Atomic(struct weft__worker *) io_owner;   /* whose ring io_req is on (io/uring.c) */
    struct weft__worker *home;       /* while pins > 0: the worker it runs on; as pins */
    struct weft__keyvals *keys;      /* its weft_setspecific() values, NULL before the
                                      * first (core/key.c); only the coroutine */
    uint64_t           id;           /* unique in the process, from 1 (weft_dump) */
};
#if defined(__x86_64__)
_Static_assert(sizeof(struct weft_task) <= 2 * WEFT__CACHELINE, "a task is two cache lines on x86-64");
#endif

/*
 * One thing a coroutine or a plain thread waits for. The first weft__wake()
 * claims it and stores the result; every later one returns false. A coroutine
 * is parked exactly once per waiter and unparked only by the claimer, so a
 * claimed waiter can never leave a stray wake-up behind.
 */
struct weft__waiter {
    weft_task        *task;    /* the coroutine to unpark; NULL: a plain thread */
    _Atomic uint32_t  state;   /* 0 while waiting, then the result (never 0),
                                * as uint32_t so that a plain thread can futex on it */
};

/*
 * Why a coroutine waits, as weft_dump names it (core/dump.c). The blocking
 * call notes it in the coroutine's fiber (weft__why_task) before it waits, and
 * the park stores the time (core/park.c). The note stays after the wait: the
 * dump reads it only while the coroutine is parked, and every wait in weft is
 * noted (an IO call once, in io/io.c, for the waits its backend makes). Only
 * the coroutine itself writes these.
 */
enum weft__why {
    WEFT__WHY_NONE,
    WEFT__WHY_CHAN_SEND,     /* what: the channel */
    WEFT__WHY_CHAN_RECV,     /* what: the channel */
    WEFT__WHY_SELECT,        /* what: the number of cases */
    WEFT__WHY_MUTEX,         /* what: the mutex */
    WEFT__WHY_COND,          /* what: the condition variable */
    WEFT__WHY_WG,            /* what: the wait group */
    WEFT__WHY_SEM,           /* what: the semaphore */
    WEFT__WHY_JOIN,          /* what: the task joined */
    WEFT__WHY_SLEEP,         /* what: unused */
    WEFT__WHY_READ,          /* what: the descriptor, here and below */
    WEFT__WHY_WRITE,
    WEFT__WHY_ACCEPT,
    WEFT__WHY_CONNECT,
    WEFT__WHY_POLL,
    WEFT__WHY_FILE,          /* a file call (pread, pwrite, open, fsync, sendfile) */
    WEFT__WHY_OFFLOAD,       /* what: the function offloaded */
    WEFT__WHY_SIGNAL,        /* what: the signal number */
    WEFT__WHY_CHILD,         /* what: the process id */
    WEFT__WHY_COUNT
};

/* Notes why t, the calling coroutine, is about to wait; nothing for NULL (a
 * plain thread). */
static inline void weft__why_task(weft_task *t, enum weft__why why, uintptr_t what)
{
    if (t) {
        t->fiber->why = (uint32_t)why;
        t->fiber->what = what;
    }
}
/* The same for the coroutine that is to wait on wt. */
#define weft__waiter_why(wt, why, what) weft__why_task((wt)->task, (why), (uintptr_t)(what))
/* Returns once *flag is not 0 (acquire), spinning and then yielding the
 * thread: for a waiter whose waker has claimed it and has a store or two
 * left to make (sync/sync.c, sync/chan.c), whose thread may be preempted. */
void weft__await_flag(_Atomic uint32_t *flag);
/* The calling coroutine's parks from now until weft__wait_span_end are one
 * wait to weft_dump, its age counted from now (weft_waitpid's looks, each a
 * sleep); nothing for a plain thread. */
void weft__wait_span_begin(void);
void weft__wait_span_end(void);

/* weft_sleep, shown in the dump as waiting for `why` and `what` rather than
 * as a sleep. Any thread (a plain thread sleeps). */
int weft__sleep_why(uint64_t ns, enum weft__why why, uintptr_t what);

/* A clock for ages shown by weft_dump, in nanoseconds: CLOCK_MONOTONIC_COARSE,
 * which reads the kernel's last tick without the time-stamp counter; its
 * resolution (one kernel tick) is finer than any age worth reading in a dump. */
uint64_t weft__coarse_now(void);

void weft__waiter_init(struct weft__waiter *wt);
/* Waits until wt is claimed and returns the claim's result. weft__wait also
 * ends the wait, with -ETIMEDOUT or -ECANCELED, at the caller's deadline or
 * cancellation; the caller must then take back whatever it published about wt.
 * weft__wait_nointr ignores both: for waits that nobody may abandon. */
int32_t weft__wait(struct weft__waiter *wt);
int32_t weft__wait_nointr(struct weft__waiter *wt);
/* -ECANCELED or -ETIMEDOUT if the caller's next wait would end at once, else 0:
 * for waits whose waker is armed before weft__wait runs (weft_sleep). */
int weft__interrupted(void);
/* The calling plain thread's weft_deadline(), 0 for none. */
uint64_t weft__thread_deadline(void);
bool weft__wake(struct weft__waiter *wt, int32_t result);

/* ---- the scheduler (core/sched.h) ------------------------------------------- */

#include "deque.h"

struct weft__pool {          /* a worker's private cache of free stack slots */
    char     *head;          /* slots by their tops, linked through their top word */
    unsigned  count;
    unsigned  credit;        /* promises taken from the shared lists (core/stack.c) */
};

#define WEFT__TCACHE_MAX 64u
struct weft__tcache {        /* a worker's private cache of free task handles */
    unsigned   count;
    weft_task *slot[WEFT__TCACHE_MAX];   /* newest last */
};

/*
 * A worker's counters for weft_stats_get (core/stats.c). Only the worker
 * writes them, with weft__bump: a relaxed load and store, no locked
 * instruction, as cheap as a plain increment; readers load them relaxed and
 * sum, so a figure may be a moment old, never torn.
 */
struct weft__counters {
    _Atomic uint64_t steals;           /* tasks taken from another worker's deque */
    _Atomic uint64_t sleeps;           /* the worker parked, out of work */
    _Atomic uint64_t wakes;            /* ... and was woken */
    _Atomic uint64_t task_parks;       /* coroutines parked here */
    _Atomic uint64_t task_unparks;     /* coroutines of this runtime unparked by this worker */
    _Atomic uint64_t uring_submitted;
    _Atomic uint64_t uring_completed;
    _Atomic uint64_t epoll_waits;
    _Atomic uint64_t epoll_events;
    _Atomic uint64_t timers_armed;
    _Atomic uint64_t idle_ns;          /* time in the idle loop's search and sleep */
};

/* The owning worker adds n to one of its counters. */
static inline void weft__bump(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);   /* only the owner writes; readers sum relaxed */
}

/* What the context switched to does for the one switched from (core/park.c). */
enum weft__action { WEFT__ACT_NONE, WEFT__ACT_PARK, WEFT__ACT_EXIT };

/*
 * A worker: one kernel thread running coroutines. Fields without a note are
 * touched only by the worker's own thread.
 */
struct weft__worker {
    struct weft__fiber    sched;        /* the thread's own context: the idle loop */
    weft_rt              *rt;
    unsigned              index;
    weft_task            *current;      /* running coroutine; NULL in the idle loop. Only the
                                         * worker writes it (weft__set_current); the monitor
                                         * reads it under its exclusion (core/monitor.c) */
    enum weft__action     prev_action;  /* pending on the context switched to */
    weft_task            *prev;         /* PARK: the task switched away from */
    struct weft__fiber   *prev_fiber;   /* EXIT: the finished task's fiber */
    weft_task            *yq_head;      /* yielded tasks, FIFO, linked by next */
    weft_task            *yq_tail;
    weft_task            *ioq_head;     /* tasks its own IO made runnable, FIFO, linked by
                                         * next: private, as the yield queue (core/sched.h) */
    weft_task            *ioq_tail;
    unsigned              ioq_len;
    uint64_t              ioq_since;    /* weft_now() when the IO queue last stopped being empty
                                         * (core/worker.c, ioq_pop) */
    bool                  reaping;      /* in its own IO poll or sleep: what that makes
                                         * runnable joins the IO queue (core/park.c, ready) */
    bool                  prev_io;      /* prev was made runnable by that reap before it had
                                         * finished parking (core/park.c) */
    _Atomic uint32_t      tick;         /* schedules so far, for fairness checks; only the
                                         * worker writes it, searchers (core/search.c) and the
                                         * monitor (core/monitor.c) read it */
    _Atomic uint32_t      in_user;      /* 1 while a coroutine's own code runs here; only the
                                         * worker writes it, the monitor reads it (core/monitor.c) */
    _Atomic uint32_t      rescue;       /* futex word, 1 while the monitor works on this worker's
                                         * queues and IO; only the monitor writes it (core/monitor.c) */
    uint32_t              fair_left;    /* schedules until the next fairness tick */
    bool                  finishing;    /* the current task is waking its joiner, then exits */
    weft_task            *handoff;      /* the joiner the current task woke as it finished, or
                                         * the task it waits for: runs next, unseen by thieves */
    uint64_t              rng;          /* victim selection */
    bool                  spinning;     /* counted in rt->nspinning */
    struct weft__sighting lone_seen;    /* a victim's only deque task (its top index), as a
                                         * search last looked (core/search.c) */
    uint64_t              spawns_seen;  /* the other workers' spawns, summed, as a search last looked */
    uint64_t              spin_budget;  /* how long the next search's patient rounds last; the
                                           * worker's own (core/search.c) */
    uint64_t              id_next, id_end;   /* task ids this worker may hand out (task.c) */
    uint64_t              clock;        /* a coarse weft_now() for the ages weft_dump shows:
                                         * read at each fairness tick and as the worker leaves
                                         * its idle loop, not at every park, where even the
                                         * coarse clock would be a measurable part of the cost
                                         * (weft-bench spawn). A park takes it as its time, which
                                         * is thus early by up to FAIRNESS_TICKS schedules, or by
                                         * the run of one coroutine that never yields. */
    struct weft__counters ctr;          /* for weft_stats_get; only this worker writes */
    _Atomic uint64_t      started;      /* weft_now() when its thread began; only it writes */
    _Atomic uint64_t      idle_since;   /* weft_now() when its current search began, 0 while
                                         * it runs coroutines; only it writes, relaxed */
    bool                  shuffle;      /* WEFT_SCHED_RANDOM: randomise choices */
    struct weft__pool     pool;
    struct weft__tcache   tcache;
    const struct weft__backend *io;     /* its IO backend (io/backend.h); set before it starts */
    void                 *io_state;     /* that backend's state for this worker, opaque here */
    void                 *altstack;
    pthread_t             thread;
    _Atomic int           tid;          /* its kernel thread id, for the stall signal
                                         * (core/stallbt.c); stored once as it starts */
    _Atomic uint32_t      bt_req;       /* a request for what its thread runs now: number * 4
                                         * + phase (core/stallbt.c); the asker opens and closes
                                         * it, the thread's handler of the stall signal fills it */
    struct weft__snap    *bt_snap;      /* where that handler copies it; made by the first
                                         * asker, under its lock; freed with the worker */
    struct weft__worker  *idle_next;    /* on rt->idle; under rt->idle_lock */
    _Alignas(WEFT__CACHELINE)
    _Atomic(weft_task *)  runnext;      /* the task just woken here: the owner's, and the
                                         * monitor's while the owner stalls (core/sched.h) */
    _Atomic(weft_task *)  inbox;        /* pinned tasks made runnable by other threads or by its
                                         * coroutines' code, newest first, linked by next; any
                                         * thread pushes, the owner takes them all (core/park.c,
                                         * core/worker.c) */
    _Atomic uint32_t      wake;         /* futex word: WEFT__WAKE_* (core/sched.h, core/search.c) */
    _Atomic uint32_t      in_io;        /* parked in its ring or epoll set, not on the futex */
    _Atomic uint64_t      spawned;      /* tasks spawned on this worker; only it writes */
    _Atomic uint64_t      exited;       /* tasks that finished on this worker; only it writes */
    struct weft__deque    dq;           /* spawned and woken tasks; thieves steal */
};

struct weft_rt {
    unsigned               nworkers;
    uint64_t               spin_ns;             /* a search's patient rounds last this long (core/search.c) */
    struct weft__worker  **workers;
    struct weft__stacks   *stacks;
    struct weft__taskmem  *taskmem;
    unsigned               fork_gen;            /* weft__fork_gen when it was made (core/runtime.c) */

    /* The global queue: spawns from outside, deque overflow. */
    _Alignas(WEFT__CACHELINE)
    pthread_mutex_t        gq_lock;
    struct weft__gq_chunk *gq_first, *gq_last;  /* under gq_lock: arrays of tasks, oldest first */
    struct weft__gq_chunk *gq_spare;            /* under gq_lock: an emptied one, kept for reuse */
    weft_task             *gq_head, *gq_tail;   /* under gq_lock: after the arrays', the tasks
                                                 * no array could be had for, linked by next */
    _Atomic size_t         gq_len;              /* both; written under gq_lock; read as a hint */

    /* Parked workers; see the protocol in core/search.c. */
    _Alignas(WEFT__CACHELINE)
    pthread_mutex_t        idle_lock;
    struct weft__worker   *idle;                /* under idle_lock */
    _Atomic unsigned       nidle;               /* workers on the idle list */
    _Atomic unsigned       nspinning;           /* workers looking for work */

    /* Life of the runtime. */
    _Alignas(WEFT__CACHELINE)
    _Atomic uint64_t       spawned_outside;     /* tasks spawned by plain threads */
    _Atomic uint32_t       outside;             /* plain threads inside a spawn, and threads outside rt
                                                 * inside a wake-up of its task (core/task.c, park.c) */
    _Atomic uint64_t       unparks_outside;     /* tasks unparked by threads not its workers */
    _Atomic uint32_t       destroying;          /* weft_rt_destroy() has begun */
    _Atomic uint32_t       exit_seq;            /* futex word: bumped by exits while destroying */
    _Atomic uint32_t       stopping;            /* no task left: workers exit */
    _Atomic bool           crowded;             /* the workers wait for a CPU (core/crowd.c); a hint */
    unsigned               crowded_pct;         /* weft_config.crowded_pct; 100: never crowded */
    _Atomic uint64_t       crowded_ns;          /* the monitor's counters, for weft_stats: time */
    _Atomic uint64_t       takeovers;           /* counted crowded; stalls it took over */

    /* Timers (core/timer.c), fired by the workers; `watcher` is the parked
     * worker that sleeps only until the earliest deadline (core/search.c). */
    struct weft__timers   *timers;
    _Atomic(struct weft__worker *) watcher;
    /* Waiters by descriptor for the epoll backend (io/epoll.c):
     * made by the first wait. */
    _Atomic(struct weft__fdtab *) fdtab;
    /* Helper threads for weft_offload() (io/offload.c): started by the
     * first offload. */
    _Atomic(struct weft__offload *) offload;
    /* On the process's list of runtimes (core/runtime.c), under its lock. */
    weft_rt               *live_next;
    /* The thread that watches for stalled workers (core/monitor.c). */
    _Atomic(struct weft__monitor *) monitor;   /* NULL: none (one worker, no report) */
    int                    dump_signal;         /* weft_config.dump_signal in effect; 0: none */
    int                    stall_signal;        /* weft_config.stall_signal in effect; 0: none */
};

/*
 * fork(). Each runtime records the process's fork generation when it is
 * made; a child of fork() starts a new one (core/runtime.c), so a runtime of an
 * older generation was inherited from the parent: none of its threads exist
 * here, and weft never touches it again. Written only by that handler,
 * while the child has one thread; threads it starts later see the new value
 * through pthread_create.
 */
extern unsigned weft__fork_gen;
/* Whether rt was inherited from the parent of a fork(). Any thread. */
static inline bool weft__inherited(const weft_rt *rt)
{
    return WEFT__UNLIKELY(rt->fork_gen != weft__fork_gen);
}

/* Calls fn(rt, arg) for every runtime of the process that has not begun
 * its destruction's final stage, under a lock that keeps them alive meanwhile.
 * Any thread; fn must not create or destroy a runtime. */
void weft__each_runtime(void (*fn)(weft_rt *rt, void *arg), void *arg);

/*
 * The owner's side of the exclusion with the monitor (core/monitor.c). A
 * worker is "in user code" while a coroutine's own code runs on it; then the
 * monitor may take over its yield queue, its runnext and deque, and its IO.
 * Before the worker touches any of these again from a coroutine, it marks
 * itself back in the runtime and waits for a rescue under way to end:
 * weft__owner_enter. weft__owner_leave is the last thing before control
 * returns to a coroutine's code. Neither is a locked instruction: the
 * monitor's side runs membarrier (the asymmetric pair of core/wait.c).
 */
void weft__light_barrier_slow(void);   /* core/wait.c: the light side where it must be a fence */
extern _Atomic int weft__barrier_asym; /* core/wait.c: 1 once membarrier is the heavy side */
void weft__heavy_barrier(void);        /* core/wait.c: the monitor's side */
void weft__rescue_wait(struct weft__worker *w);   /* core/monitor.c */

static inline void weft__owner_enter(struct weft__worker *w)
{
    atomic_store_explicit(&w->in_user, 0, memory_order_relaxed);   /* ordered by the barrier below */
    if (atomic_load_explicit(&weft__barrier_asym, memory_order_relaxed))
        atomic_signal_fence(memory_order_seq_cst);   /* the monitor's membarrier does the rest */
    else
        weft__light_barrier_slow();
    if (WEFT__UNLIKELY(atomic_load_explicit(&w->rescue, memory_order_acquire)))   /* pairs with the
                                                                                     * monitor's release */
        weft__rescue_wait(w);
}

/* The worker w itself: its running coroutine is now t. A relaxed store,
 * a plain move: the monitor reads current (relaxed) only under the
 * exclusion above, whose Dekker pair orders the two, so the accesses need
 * no order of their own, only to be atomic. */
static inline void weft__set_current(struct weft__worker *w, weft_task *t)
{
    __atomic_store_n(&w->current, t, __ATOMIC_RELAXED);   /* ordered by owner_enter/owner_leave */
}

static inline void weft__owner_leave(struct weft__worker *w)
{
    atomic_store_explicit(&w->in_user, 1, memory_order_release);   /* publishes the worker's state to
                                                                    * the monitor's acquire */
}

/* core/monitor.c. _start: weft_rt_create, after the workers; returns 0 or a
 * negative errno. _stop: weft_rt_destroy, after the workers stopped; joins it.
 * _nudge: a worker that leaves the idle list, so that a monitor asleep while
 * every worker was idle looks again. */
int  weft__monitor_start(weft_rt *rt, uint64_t stall_ns);
void weft__monitor_stop(weft_rt *rt);
void weft__monitor_nudge(weft_rt *rt);
/* core/crowd.c, the monitor's: _new returns NULL without memory (then nothing
 * is read); _look reads the workers' run delay when it is time and sets
 * rt->crowded; _rest, when every worker is idle and the monitor is to sleep,
 * makes the next look start a new window, and returns when a crowded
 * runtime's answer runs out (0: none to keep), for _rest again then. */
struct weft__crowd;
struct weft__crowd *weft__crowd_new(weft_rt *rt);   /* once the workers have started */
void weft__crowd_free(struct weft__crowd *c, unsigned nworkers);
void weft__crowd_look(struct weft__crowd *c, weft_rt *rt, uint64_t now);
uint64_t weft__crowd_rest(struct weft__crowd *c, weft_rt *rt, uint64_t now);
/* core/queue.c. The monitor: moves w's queued tasks that are not pinned to it to
 * the global queue and wakes a worker for them. The deque is taken as thieves
 * take it, so w need not be excluded; `private`: runnext and the IO and yield
 * queues too, which need w excluded. Returns how many it moved. */
size_t weft__takeover(struct weft__worker *w, bool private);

/* The worker the calling thread is, or NULL. Never inlined: see core/worker.c. */
struct weft__worker *weft__worker_self(void);

/* Suspends the calling coroutine until weft__unpark(). Only a coroutine. */
void weft__park(void);
/* Makes a parked (or parking) coroutine runnable. Any thread, once per park. */
void weft__unpark(weft_task *t);

/*
 * weft__wake in two steps, for a waker that must claim a waiter before it
 * writes into the waiter's memory, and would rather make it runnable after
 * dropping its lock. weft__claim returns whether the claim was ours. The
 * claimer must then call weft__wake_claimed exactly once, with the waiter's
 * task read before the claim: a coroutine waiter stays parked until then,
 * a plain-thread waiter may return as soon as it sees the claim unless the
 * caller holds it back by other means (chan.c's op_wait.done).
 */
static inline bool weft__claim(struct weft__waiter *wt, int32_t result)
{
    uint32_t zero = 0;
    return atomic_compare_exchange_strong_explicit(&wt->state, &zero, (uint32_t)result,
            memory_order_acq_rel, memory_order_relaxed);         /* pairs with the waiter's acquire of state */
}

static inline void weft__wake_claimed(weft_task *t, struct weft__waiter *wt)
{
    if (t)
        weft__unpark(t);
    else
        weft__futex_wake(&wt->state, 1);   /* harmless if the waiter already left */
}
/* Queues t, a task never run, to start t->fn(t->arg). Any thread; w is
 * the calling worker if it belongs to t's runtime and runs a coroutine, else NULL. */
void weft__task_start(struct weft__worker *w, weft_task *t);
/* The running coroutine on w, about to wait for t: if t is queued at the
 * bottom of w's deque, takes it out to run as soon as the caller parks (the
 * handoff) and returns true. Until then nobody else can start t, let alone
 * finish it. False if t is elsewhere, or a thief took it first. */
bool weft__handoff_take(struct weft__worker *w, weft_task *t);
/* The same coroutine, after a wait that may not have parked: queues t again
 * if it is still waiting in the handoff. */
void weft__handoff_undo(weft_task *t);
/* Drops a reference to t: the handle's (see core/task.c) or a cancel
 * note's; the last frees the handle. Any thread; _at: the calling thread is
 * w (NULL: not a worker). */
void weft__task_release(weft_task *t);
void weft__task_release_at(weft_task *t, struct weft__worker *w);
/* Yield from a coroutine. */
void weft__yield_current(void);
/* Counts a task about to be started; w is the calling worker of rt, or NULL. */
void weft__count_spawn(weft_rt *rt, struct weft__worker *w);

/* ---- coroutine-local storage (core/key.c) ------------------------------------ */

struct weft__keyvals;   /* one coroutine's or plain thread's values */

/* Runs the destructors of the values in *kv, as pthread does at a thread's
 * exit, frees it and leaves *kv NULL. The coroutine whose values they are, as
 * it ends (core/park.c), or a plain thread as it exits. */
void weft__keys_end(struct weft__keyvals **kv);

/* ---- task handles (core/task.c) --------------------------------------------- */

struct weft__taskmem;   /* a runtime's handle allocator */

int  weft__taskmem_create(struct weft__taskmem **m);
void weft__taskmem_destroy(struct weft__taskmem *m);
/* A free handle, its fields unset, or NULL (out of memory). cache NULL: from
 * a plain thread. */
weft_task *weft__task_alloc(struct weft__taskmem *m, struct weft__tcache *cache);
/* Handles lie WEFT__TASK_STRIDE bytes apart, in spans of address space that
 * stay mapped until the allocator is destroyed. */
#define WEFT__TASK_STRIDE \
    ((sizeof(struct weft_task) + WEFT__CACHELINE - 1) & ~(size_t)(WEFT__CACHELINE - 1))
struct weft__span { uintptr_t lo, hi; };
/* Stores up to max of the spans that hold every handle ever handed out, and
 * returns how many there are. Any thread; takes m's lock for the copy. */
size_t weft__taskmem_spans(struct weft__taskmem *m, struct weft__span *out, size_t max);
void weft__task_free(struct weft__taskmem *m, struct weft__tcache *cache, weft_task *t);

/* ---- stacks (core/stack.c) ----------------------------------------------- */

struct weft__stacks;   /* a runtime's slot allocator */

int  weft__stacks_create(struct weft__stacks **s, size_t stack_size);
void weft__stacks_destroy(struct weft__stacks *s);
/* Promises a stack to a task about to be spawned, so that binding it later
 * cannot fail; -ENOMEM if none can be had. pool NULL: from a plain thread. */
int  weft__stack_promise(struct weft__stacks *s, struct weft__pool *pool);
/* The calling worker gives t, which holds a promise, a stack, and t->fiber
 * at its top. Before t first runs. */
void weft__stack_bind(struct weft__stacks *s, struct weft__pool *pool, weft_task *t);
/* Takes a finished task's stack back, once nothing runs on it; f was its
 * fiber (the task's handle may be gone by then). The calling worker. */
void weft__stack_unbind(struct weft__stacks *s, struct weft__pool *pool, struct weft__fiber *f);
/* A stopping worker hands its free slots and promises back. */
void weft__pool_drain(struct weft__stacks *s, struct weft__pool *pool);
/* Idle workers give memory back: when the current epoch ends (UINT64_MAX:
 * nothing to give back), and a batch of slots that sat unused through it.
 * trim returns whether it gave any back, so the caller may call again; it
 * gives up as soon as *stop is nonzero. Any thread. */
uint64_t weft__stacks_trim_due(struct weft__stacks *s);
/* Bytes of stack slots carved and not given back: in use, or free and warm.
 * Any thread. */
uint64_t weft__stacks_held(struct weft__stacks *s);
bool weft__stacks_trim(struct weft__stacks *s, _Atomic uint32_t *stop);
/* The overflow handler: installs it process-wide once, and the calling
 * thread's alternate signal stack. */
int  weft__guard_install(void);
int  weft__altstack_enter(void **mem);
void weft__altstack_leave(void *mem);

/* ---- the dump (core/fatal.c, core/dumpsig.c) --------------------------------- */

/* Writes the calling coroutine's part of the dump to fd: for fatal messages.
 * uc: the signal's ucontext_t when called from a handler, else NULL; from a
 * handler it allocates nothing, and names only exported functions. Nothing
 * outside a coroutine. */
void weft__dump_current(int fd, void *uc);
/* weft__dump_current(fd, NULL): what weft__panic prints (base/base.h). */
void weft__dump_current_fd(int fd);
/* Makes what a fatal message's backtrace needs, which a signal handler could
 * not: the first runtime calls it. Any thread. */
void weft__dump_prepare(void);
/* A signal's number from its number or name ("SIGQUIT", "QUIT", "3",
 * "SIGRTMIN+2", "RTMAX-3"), or 0 if it names none (core/dumpsig.c). */
int weft__signal_named(const char *s);
/* Whether weft may take sig for the dump or a stall report: a signal that
 * exists, can be caught, is not a fault the program may need, and is not one
 * the C library keeps for itself. */
bool weft__signal_usable(int sig);
/* The dump signal asked for: the configuration's, or WEFT_DUMP_SIGNAL's; 0
 * for none; -EINVAL for a bad one. */
int weft__dump_signal_pick(int configured);
/* A runtime starts and stops using sig (0: none): the first installs the
 * handler and its thread, the last restores the old disposition. start
 * returns 0, -EBUSY (another runtime uses another signal), or an error of
 * pthread_create or sigaction. */
int weft__dump_signal_start(int sig);
void weft__dump_signal_stop(int sig);
/* In a child of fork(): the runtimes that used the signal are the parent's,
 * and its thread is gone; the program's disposition again, and nobody uses
 * it. Only the fork handler (core/runtime.c). */
void weft__dump_signal_forget(void);

/* ---- the stall report's backtrace (core/stallbt.c) ------------------------------ */

/* The stall signal asked for: the configuration's (0: the default, -1:
 * none), or WEFT_STALL_SIGNAL's (0: none); 0 when stalls are not reported
 * (stall_ns UINT64_MAX) or weft has no libunwind; -EINVAL for a bad one or
 * the dump signal's. */
int weft__stall_signal_pick(int configured, uint64_t stall_ns, int dump_signal);
/* A runtime starts and stops using sig (0: none): the first installs the
 * handler, unless the program handles, ignores or blocks sig itself; the
 * last restores the old disposition. start returns 0 or -EBUSY (another
 * runtime uses another signal). */
int  weft__stallbt_start(int sig);
void weft__stallbt_stop(int sig);
/* In a child of fork(): the same for the stall signal, and its lock made
 * anew (the monitor or dump that held it is not in the child). Only the fork
 * handler. */
void weft__stallbt_forget(void);
/* In a child of fork(): the keys' lock made anew (core/key.c). Only the fork
 * handler. */
void weft__key_fork_child(void);
/* Registers the fork handler (core/runtime.c) if it is not yet: whatever
 * takes a process-wide lock of weft's calls it first, as a plain thread may
 * do so in a process that never made a runtime. Returns 0 or a negative
 * errno (-ENOMEM: pthread_atfork had no memory). */
int weft__fork_handler_register(void);
/* Appends to buf the backtrace of what worker w runs now, as lines the dump's
 * frames look like, or a line that says why there is none; tick: w's schedule
 * count during the stall, to tell whether it still is. Returns the length
 * written (buf stays NUL-terminated). Only a monitor, outside the exclusion
 * (it waits for the worker); rt->stall_signal 0 writes nothing, except in a
 * build without libunwind, which says so. */
size_t weft__stallbt_write(struct weft__worker *w, uint32_t tick, char *buf, size_t len);

#endif /* WEFT_CORE_H */
