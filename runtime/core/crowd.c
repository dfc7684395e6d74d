/* SPDX-License-Identifier: MIT */
/*
 * Crowding: whether the workers wait for a CPU. While it watches, the monitor
 * (core/monitor.c) reads each worker's thread's time on a CPU and its run
 * delay, the time it spent runnable but not running (the first two fields of
 * /proc/self/task/TID/schedstat), every CROWD_EVERY_NS. Of the time the
 * workers wanted a CPU in that window, the share they spent waiting for one
 * sets rt->crowded above weft_config.crowded_pct and clears it below half
 * that. A window in which the workers hardly wanted a CPU (mostly parked)
 * says nothing, and a window starts afresh after the monitor has slept with
 * every worker idle; an answer that no window has confirmed for
 * CROWD_KEEP_NS is dropped (a runtime is not crowded on old evidence).
 *
 * A crowded runtime helps less between its workers: a worker that found
 * nothing does not spin looking for more before it parks (core/search.c),
 * and a worker's IO queue moves to its deque only when it is long, not when
 * it is old (core/worker.c, sched.h). Both kinds of help pay where the
 * helper gets a core of its own; on a machine with more runnable threads
 * than cores (a server beside its load generator, a container given fewer
 * CPUs than it sees), they spend the CPU that the thread which makes the
 * work needs, as an adaptive mutex stops spinning when the lock's owner is
 * not on a CPU (`bench/compare/http/ab.sh`, docs/benchmarks.md).
 *
 * The files are opened as the runtime is made (weft_rt_create), so that its
 * descriptors appear then and not at some later moment of the program's.
 * Where /proc is missing, schedstat is not built or no descriptor is left,
 * nothing is read and the runtime is never crowded.
 */
#include "core.h"
#include "base/sys.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#define CROWD_EVERY_NS 10000000u    /* how often the figures are read */
#define CROWD_QUIET    10u          /* a window whose wanted time is below 1/this of one
                                     * worker's wall time says nothing */
#define CROWD_KEEP_NS  200000000u   /* how long an answer holds without a window that says */

struct weft__crowd {
    uint64_t at;       /* when the figures were last read, or tried; 0: never */
    uint64_t said;     /* when a window last said crowded or not */
    bool     base;     /* ran and waited below are a window's start */
    uint64_t ran;      /* the workers' time on a CPU then, summed */
    uint64_t waited;   /* ... and their run delay */
    int      fd[];     /* each worker's schedstat, opened with the runtime; -1: none */
};

/* Opens worker i's schedstat, once its thread has said who it is. */
static int open_schedstat(weft_rt *rt, unsigned i)
{
    int tid;
    while (!(tid = atomic_load_explicit(&rt->workers[i]->tid, memory_order_relaxed)))
        sched_yield();   /* its first step (core/worker.c) */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
    int fd = weft__sys_open(path, O_RDONLY | O_CLOEXEC, 0);
    return fd >= 0 ? fd : -1;
}

struct weft__crowd *weft__crowd_new(weft_rt *rt)
{
    struct weft__crowd *c = calloc(1, sizeof *c + rt->nworkers * sizeof c->fd[0]);
    if (c)
        for (unsigned i = 0; i < rt->nworkers; i++)
            c->fd[i] = open_schedstat(rt, i);
    return c;
}

void weft__crowd_free(struct weft__crowd *c, unsigned nworkers)
{
    if (!c)
        return;
    for (unsigned i = 0; i < nworkers; i++)
        if (c->fd[i] >= 0)
            weft__sys_close(c->fd[i]);
    free(c);
}

/* Worker i's time on a CPU and run delay, in nanoseconds; false where there
 * are none (no /proc, no schedstat, no descriptor to read it with). */
static bool read_worker(struct weft__crowd *c, unsigned i, uint64_t *ran, uint64_t *waited)
{
    if (c->fd[i] < 0)
        return false;
    char buf[96];
    ssize_t n = weft__sys_pread(c->fd[i], buf, sizeof buf - 1, 0);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    unsigned long long r, w;
    if (sscanf(buf, "%llu %llu", &r, &w) != 2)
        return false;
    *ran = r;
    *waited = w;
    return true;
}

/* Sets rt->crowded to `is` (a hint: relaxed). */
static void set(weft_rt *rt, bool is)
{
    if (atomic_load_explicit(&rt->crowded, memory_order_relaxed) != is)
        atomic_store_explicit(&rt->crowded, is, memory_order_relaxed);
}

/* Whether rt is still crowded once an answer that no window has confirmed
 * for CROWD_KEEP_NS is dropped. */
static bool keep(struct weft__crowd *c, weft_rt *rt, uint64_t now)
{
    if (!atomic_load_explicit(&rt->crowded, memory_order_relaxed))
        return false;
    if (now - c->said < CROWD_KEEP_NS)
        return true;
    set(rt, false);
    return false;
}

uint64_t weft__crowd_rest(struct weft__crowd *c, weft_rt *rt, uint64_t now)
{
    c->base = false;
    return keep(c, rt, now) ? c->said + CROWD_KEEP_NS : 0;
}

/* The workers' times on a CPU and run delays, summed; false if a worker has none. */
static bool read_all(struct weft__crowd *c, weft_rt *rt, uint64_t *ran, uint64_t *waited)
{
    *ran = *waited = 0;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        uint64_t r, w;
        if (!read_worker(c, i, &r, &w))
            return false;
        *ran += r;
        *waited += w;
    }
    return true;
}

void weft__crowd_look(struct weft__crowd *c, weft_rt *rt, uint64_t now)
{
    if (c->at && now - c->at < CROWD_EVERY_NS)
        return;
    bool was = atomic_load_explicit(&rt->crowded, memory_order_relaxed);
    uint64_t window = now - c->at, ran, waited;
    if (was && c->base)
        weft__bump(&rt->crowded_ns, window);   /* the monitor's alone */
    c->at = now;
    bool base = c->base;
    c->base = read_all(c, rt, &ran, &waited);
    if (base && c->base && ran >= c->ran && waited >= c->waited) {
        uint64_t r = ran - c->ran, w = waited - c->waited;
        if ((r + w) * CROWD_QUIET >= window) {
            unsigned pct = was ? rt->crowded_pct / 2 : rt->crowded_pct;
            set(rt, w * 100 > (r + w) * pct);
            c->said = now;
        }
    }
    c->ran = ran;
    c->waited = waited;
    keep(c, rt, now);
}
