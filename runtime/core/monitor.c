/* SPDX-License-Identifier: MIT */
/*
 * The monitor: one thread per runtime that notices a worker held by one
 * coroutine in code weft cannot see (a long computation, a blocking system
 * call that no weft call wraps), takes over what waits on that worker, and
 * reports the stall.
 *
 * Noticing. Each worker counts its schedules (worker->tick, bumped by every
 * pick_next) and says whether a coroutine's own code runs on it
 * (worker->in_user). Every TICK_NS, while some worker is not idle, the monitor
 * samples both; a worker whose tick has not moved, in user code throughout, for
 * RESCUE_NS is stalled. A runtime of one worker has nobody to hand a stalled
 * worker's tasks to, so its monitor only reports stalls, and looks only as
 * often as the report's threshold needs (report_tick): each wake-up costs CPU
 * that the one worker's threads share (bench/compare/http/threads.sh shows the
 * monitor's part). Go's sysmon retakes a P from a thread in a system call
 * much sooner; weft's threshold is longer because its rescue is heavier (a
 * membarrier) and a coroutine computing for a millisecond is ordinary. The rescue waits for RESCUE_BUSY_NS instead while no other
 * worker is parked or searching: then nobody would run the tasks it moves soon,
 * and they would lose their place. The global queue, where they go, is looked
 * at once in FAIRNESS_TICKS choices by busy workers, and otherwise only once
 * their own queues are empty, behind every task their own IO wakes meanwhile. A
 * worker the kernel preempted (more threads than cores, a client on the same
 * machine) looks stalled to the monitor as well: moved at RESCUE_NS, its
 * connections' requests waited in the global queue far longer than it was
 * preempted (`weft-bench server`, p99 at 1,000 connections). With every worker
 * idle the monitor sleeps on a futex until a worker leaves the idle list
 * (weft__monitor_nudge): an idle runtime costs no wake-ups (but one, to
 * forget that it was crowded: core/crowd.c).
 *
 * Exclusion. While it rescues a worker, the monitor works on state that only
 * the worker touches otherwise (its yield and IO queues, its ring's completion
 * queue and request table, its epoll set's events and sweep, whose list the
 * worker's coroutines may still push to meanwhile: io/epoll.c). An
 * asymmetric Dekker pair keeps the two apart without a locked instruction on
 * the worker's side, as the cancellation handshake of core/wait.c does:
 *   1. the worker, on its way from a coroutine's code into the scheduler or
 *      an IO call, stores in_user = 0, then (compiler barrier only) loads
 *      `rescue`; if it is set, it waits until it is clear
 *      (weft__owner_enter, weft__rescue_wait);
 *   2. the monitor stores rescue = 1, runs membarrier(PRIVATE_EXPEDITED),
 *      which executes a full barrier on every running thread of the process,
 *      then loads in_user; only if it is 1 (and tick still has not moved)
 *      does it go on, and it clears `rescue` (release) and wakes the worker's
 *      futex when done.
 * Either the monitor sees in_user = 0 and leaves the worker alone, or the
 * worker's load in step 1 comes after the monitor's store and it waits. The
 * worker's release store of in_user = 1 (weft__owner_leave, the last thing
 * before a coroutine's code runs) publishes its state to the monitor's
 * acquire load; the monitor's release of `rescue` publishes its changes back.
 * Where membarrier is missing, and under ThreadSanitizer, both sides use full
 * fences (core/wait.c chooses once).
 *
 * What moves. Tasks queued on the worker and not pinned to it go to the
 * global queue, and a worker is woken for them (weft__takeover,
 * core/queue.c): the deque at every look, as a thief takes it, without the
 * exclusion (the stalled coroutine may still spawn and wake); runnext, which
 * its owner takes without a locked instruction, under the exclusion, at the
 * first look of a stall and at every look that finds it filled since; the
 * IO queue and the yield queue once per stall, under it (during a stall the
 * worker's scheduler, which alone fills the IO and yield queues, does not
 * run: a yield is a schedule, and a task pinned to the worker that its
 * coroutine wakes goes to the inbox, core/park.c). The worker's IO: under
 * the exclusion the monitor calls the backend's `poll` as the worker would,
 * which submits what the worker's coroutines queued and reaps what is done;
 * their coroutines become runnable on the global queue and issue their next
 * requests on the workers they run on next. It looks again whenever the
 * backend says something waits (`pending`: the completion queue's tail or a
 * request's deadline due, io/uring.c, or the epoll descriptor's readiness or
 * a sweep of its set due, io/epoll.c).
 * Timers belong to the runtime, not to a worker, and any other worker fires
 * them.
 *
 * What stays. Coroutines pinned to the worker (weft_pin) wait for it: that is
 * what pinning promises. Completion work for a worker in an uninterruptible
 * sleep runs only when it wakes.
 *
 * Rings and task work. A request on a socket or pipe that waits completes by
 * task work run in the submitting thread. With IORING_SETUP_DEFER_TASKRUN
 * that work runs only when the submitter asks for events, so a stalled
 * worker's completions would never reach its completion queue, and its
 * companion SINGLE_ISSUER lets no other thread submit. The rings are
 * therefore set up with COOP_TASKRUN alone (io/uring.c): the kernel runs the
 * work at the submitter's next entry to or exit from the kernel, at the
 * latest at its next timer interrupt while it computes, and wakes it from an
 * interruptible sleep in a system call (which restarts, unseen by the
 * caller); the completion is then in the shared queue, where the monitor
 * reaps it. Requests the monitor submits have the monitor as their
 * submitter, and their task work interrupts its sleep the same way. The
 * alternative, keeping DEFER_TASKRUN and orphaning the stalled worker's
 * requests (their coroutines re-issue them elsewhere; the worker cancels
 * them when it comes back), was not taken: docs/design.md says why, and
 * docs/benchmarks.md what the flags cost.
 *
 * Report. A coroutine that has held its worker for stall_ns
 * (weft_config.stall_ns; WEFT_STALL_MS) gets one line on stderr naming its
 * entry function, its worker and how long, followed by its backtrace as it
 * is now (core/stallbt.c); at most one report every REPORT_GAP_NS per
 * runtime. The entry is read under the exclusion and symbolized after it:
 * dladdr takes the loader's lock, which the stalled coroutine may hold. The
 * backtrace is taken after it too, as it waits for the stalled thread.
 *
 * Crowding. While it looks, the monitor also reads how long the workers'
 * threads waited for a CPU (core/crowd.c), every tenth of its looks or so,
 * and says whether the runtime is crowded.
 */
#include "sched.h"
#include "dump.h"
#include "base/sys.h"

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The monitor looks this often while a worker is busy. A look costs the
 * workers' CPU on a crowded machine, but looking less often while every tick
 * moved made the echo server's tail slower where threads share CPUs, most
 * likely because each wake-up is also a point where the kernel may switch
 * threads (docs/benchmarks.md, "The monitor's ticks"). */
#define TICK_NS       1000000u
#define RESCUE_NS     2000000u      /* a worker held this long by one coroutine is taken over
                                     * while another worker is parked or searching, */
#define RESCUE_BUSY_NS 20000000u    /* ... and this long whatever the others do */
#define REPORT_GAP_NS 1000000000u   /* at most one stall line this often, per runtime */
#define REPORT_STEPS  32u           /* looks per stall threshold where only reports are made, */
#define REPORT_TICK_MAX_NS 20000000u   /* ... but at least one this often */

/* What the monitor last saw of one worker. The monitor's alone. */
struct seen {
    uint32_t tick;       /* the worker's schedules */
    uint64_t since;      /* when tick was first seen so, in user code */
    bool     reported;   /* this stall has had its line */
    bool     rescued;    /* its queues were taken over during this stall */
    bool     counted;    /* ... and weft_stats counted it */
};

struct weft__monitor {
    weft_rt          *rt;
    pthread_t         thread;
    uint64_t          stall_ns;      /* UINT64_MAX: no report */
    uint64_t          tick_ns;       /* between looks while a worker is busy */
    uint64_t          last_report;   /* the monitor's */
    _Atomic uint32_t  asleep;        /* futex word: 1 while it sleeps with every worker idle */
    _Atomic uint32_t  stop;          /* futex word: weft__monitor_stop */
    struct weft__crowd *crowd;       /* the workers' run delay (core/crowd.c); NULL: not read */
    struct seen       seen[];        /* one per worker */
};

void weft__rescue_wait(struct weft__worker *w)
{
    for (unsigned i = 0; i < 64; i++) {
        if (!atomic_load_explicit(&w->rescue, memory_order_acquire))   /* pairs with rescue()'s release */
            return;
        weft__cpu_relax();
    }
    while (atomic_load_explicit(&w->rescue, memory_order_acquire))
        weft__futex_wait(&w->rescue, 1);
}

/* The report of a stall: a line naming the entry by its symbol where dladdr
 * or the object's symbol table (a static function, a static program) finds
 * one, else by its address and the object it is in; then where the
 * worker is now (core/stallbt.c). tick: the worker's schedules during the
 * stall. */
static void report(struct weft__worker *w, uint32_t tick, weft_fn fn, uint64_t held)
{
    char name[160];
    Dl_info di;
    uintptr_t off;
    const char *obj;
    if (dladdr((void *)(uintptr_t)fn, &di) && di.dli_sname)
        snprintf(name, sizeof name, "%s", di.dli_sname);
    else if (weft__elf_name((uintptr_t)fn, true, name, sizeof name, &off, &obj) && !off)
        ;   /* a static function, or a static program */
    else if (dladdr((void *)(uintptr_t)fn, &di) && di.dli_fname)
        snprintf(name, sizeof name, "at %p (%s+%#lx)", (void *)(uintptr_t)fn, di.dli_fname,
                 (unsigned long)((uintptr_t)fn - (uintptr_t)di.dli_fbase));
    else
        snprintf(name, sizeof name, "at %p", (void *)(uintptr_t)fn);
    char text[16384];
    int n = snprintf(text, sizeof text,
                     "weft: coroutine %s has held worker %u for %llu ms without a switch "
                     "(a long computation, or a blocking call weft cannot see)\n",
                     name, w->index, (unsigned long long)(held / 1000000u));
    if (n <= 0)
        return;
    size_t len = (size_t)n < sizeof text ? (size_t)n : sizeof text - 1;
    len += weft__stallbt_write(w, tick, text + len, sizeof text - len);
    for (size_t done = 0; done < len; ) {   /* one write where stderr takes it whole */
        ssize_t rc = weft__sys_write(STDERR_FILENO, text + done, len - done);
        if (rc == -EINTR)
            continue;
        if (rc <= 0)
            break;
        done += (size_t)rc;
    }
}

/* Steps 2 of the exclusion, then the rescue and the report. */
static void rescue(struct weft__monitor *m, struct weft__worker *w, struct seen *s,
                   bool say, bool take, uint64_t now)
{
    atomic_store_explicit(&w->rescue, 1, memory_order_seq_cst);
    weft__heavy_barrier();
    bool still = atomic_load_explicit(&w->in_user, memory_order_acquire) &&   /* pairs with owner_leave */
                 atomic_load_explicit(&w->tick, memory_order_relaxed) == s->tick;
    weft_fn fn = NULL;
    if (still) {
        /* Relaxed: the exclusion orders it against weft__set_current. */
        weft_task *cur = __atomic_load_n(&w->current, __ATOMIC_RELAXED);
        if (say && cur)
            fn = cur->fn;   /* until it returns: its code runs now */
        if (take) {
            weft__takeover(w, true);
            weft__io_poll(w);
            s->rescued = true;
        }
    }
    atomic_store_explicit(&w->rescue, 0, memory_order_release);   /* publishes our changes */
    weft__futex_wake(&w->rescue, 1);
    if (fn) {
        s->reported = true;
        m->last_report = now;
        report(w, s->tick, fn, now - s->since);
    }
}

static void look(struct weft__monitor *m)
{
    weft_rt *rt = m->rt;
    uint64_t now = weft_now();
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct weft__worker *w = rt->workers[i];
        struct seen *s = &m->seen[i];
        uint32_t tick = atomic_load_explicit(&w->tick, memory_order_relaxed);   /* hints: rescue() */
        bool user = atomic_load_explicit(&w->in_user, memory_order_relaxed);    /* decides under the exclusion */
        if (tick != s->tick || !user) {
            *s = (struct seen){ .tick = tick, .since = now };
            continue;
        }
        uint64_t held = now - s->since;
        bool say = !s->reported && m->stall_ns != UINT64_MAX && held >= m->stall_ns &&
                   now - m->last_report >= REPORT_GAP_NS;
        /* The stalled coroutine may still spawn and wake tasks: the deque is
         * taken at every look, as a thief would, without the exclusion;
         * runnext with it, whenever it is filled. The IO and yield queues
         * once per stall, with it: during the stall nothing joins them (a
         * yield is a schedule, which ends the stall, and a pinned task the
         * stalled coroutine wakes goes to the inbox). IO as often as some
         * is done, or a sweep of the epoll set is due. */
        bool take = false;
        if (rt->nworkers > 1 && held >= RESCUE_NS &&
            (held >= RESCUE_BUSY_NS || free_workers(rt) != 0)) {
            if (!s->counted) {
                s->counted = true;
                weft__bump(&rt->takeovers, 1);   /* the monitor's alone */
            }
            weft__takeover(w, false);
            take = !s->rescued || weft__io_pending(w) ||
                   atomic_load_explicit(&w->runnext, memory_order_relaxed);   /* a hint: taken under the exclusion */
        }
        if (say || take)
            rescue(m, w, s, say, take, now);
    }
}

static void *monitor_main(void *arg)
{
    struct weft__monitor *m = arg;
    weft_rt *rt = m->rt;
    while (!atomic_load_explicit(&m->stop, memory_order_acquire)) {
        if (atomic_load_explicit(&rt->nidle, memory_order_relaxed) == rt->nworkers) {
            uint64_t until = m->crowd ? weft__crowd_rest(m->crowd, rt, weft_now()) : 0;
            /* Dekker pair with weft__monitor_nudge: asleep, then nidle; a
             * worker's nidle decrement, then asleep. */
            atomic_store_explicit(&m->asleep, 1, memory_order_seq_cst);
            weft__fence();
            if (atomic_load_explicit(&rt->nidle, memory_order_seq_cst) == rt->nworkers &&
                !atomic_load_explicit(&m->stop, memory_order_acquire)) {
                if (until)
                    weft__futex_wait_until(&m->asleep, 1, until);   /* then forgets crowding */
                else
                    weft__futex_wait(&m->asleep, 1);
            }
            atomic_store_explicit(&m->asleep, 0, memory_order_relaxed);
            continue;
        }
        weft__futex_wait_until(&m->stop, 0, weft_now() + m->tick_ns);
        look(m);
        if (m->crowd)
            weft__crowd_look(m->crowd, rt, weft_now());
    }
    return NULL;
}

void weft__monitor_nudge(weft_rt *rt)
{
    struct weft__monitor *m = atomic_load_explicit(&rt->monitor, memory_order_acquire);
    if (!m)
        return;
    weft__fence();   /* nidle's decrement before asleep: pairs with monitor_main */
    uint32_t one = 1;
    if (atomic_load_explicit(&m->asleep, memory_order_seq_cst) &&
        atomic_compare_exchange_strong_explicit(&m->asleep, &one, 0, memory_order_relaxed,
                                                memory_order_relaxed))
        weft__futex_wake(&m->asleep, 1);
}

/* How often the monitor of a runtime that cannot take a worker over looks:
 * a stall is reported at most two looks after its threshold (the first look
 * that sees it may come a look after it began, the one that finds it held
 * long enough a look after the threshold), so within a sixteenth of it, or
 * 2 ms where the looks are 1 ms apart. */
static uint64_t report_tick(uint64_t stall_ns)
{
    uint64_t t = stall_ns / REPORT_STEPS;
    return t < TICK_NS ? TICK_NS : t > REPORT_TICK_MAX_NS ? REPORT_TICK_MAX_NS : t;
}

int weft__monitor_start(weft_rt *rt, uint64_t stall_ns)
{
    if (rt->nworkers < 2 && stall_ns == UINT64_MAX)
        return 0;   /* nothing to take over, nothing to report */
    struct weft__monitor *m = calloc(1, sizeof *m + rt->nworkers * sizeof m->seen[0]);
    if (!m)
        return -ENOMEM;
    m->rt = rt;
    m->stall_ns = stall_ns;
    m->tick_ns = rt->nworkers > 1 ? TICK_NS : report_tick(stall_ns);
    m->crowd = rt->nworkers > 1 && rt->crowded_pct < 100 ? weft__crowd_new(rt) : NULL;
    uint64_t now = weft_now();
    for (unsigned i = 0; i < rt->nworkers; i++)
        m->seen[i].since = now;
    weft__heavy_barrier();   /* chooses and registers the barrier before either side needs it */
    /* Signals are for the program's threads, not this one. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&m->thread, NULL, monitor_main, m);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!err)
        pthread_setname_np(m->thread, "weft-monitor");   /* before weft_rt_create returns */
    if (err) {
        weft__crowd_free(m->crowd, rt->nworkers);
        free(m);
        return err == EAGAIN ? -EAGAIN : -err;
    }
    atomic_store_explicit(&rt->monitor, m, memory_order_release);   /* pairs with nudge */
    return 0;
}

void weft__monitor_stop(weft_rt *rt)
{
    struct weft__monitor *m = atomic_load_explicit(&rt->monitor, memory_order_acquire);
    if (!m)
        return;
    atomic_store_explicit(&m->stop, 1, memory_order_release);
    weft__futex_wake(&m->stop, 1);
    atomic_store_explicit(&m->asleep, 0, memory_order_relaxed);
    weft__futex_wake(&m->asleep, 1);
    pthread_join(m->thread, NULL);
    atomic_store_explicit(&rt->monitor, NULL, memory_order_relaxed);
    weft__crowd_free(m->crowd, rt->nworkers);
    free(m);
}
