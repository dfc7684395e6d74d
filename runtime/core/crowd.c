/* SPDX-License-Identifier: MIT */
/*
 * Crowding: whether the workers wait for a CPU. While it watches, the monitor
 * (core/monitor.c) reads each worker's thread's time on a CPU and its run
 * delay, the time it spent runnable but not running (the first two fields of
 * /proc/self/task/TID/schedstat), every CROWD_EVERY_NS. Of the time the
 * workers wanted a CPU in that window, the share they spent waiting for one
 * sets rt->crowded above weft_config.crowded_pct and clears it below half
 * that. A window in which the workers hardly wanted a CPU (mostly parked)
 * says nothing and changes nothing, and a window starts afresh after the
 * monitor has slept with every worker idle.
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
 * Where /proc is missing or schedstat is not built, nothing is read and the
 * runtime is never crowded.
 */
#include "core.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CROWD_EVERY_NS 10000000u   /* how often the figures are read */
#define CROWD_QUIET    10u         /* a window whose wanted time is below 1/this of one
                                    * worker's wall time says nothing */

struct weft__crowd {
    uint64_t at;       /* when the figures were last read; 0: never, or start afresh */
    uint64_t ran;      /* the workers' time on a CPU then, summed */
    uint64_t waited;   /* ... and their run delay */
    int      fd[];     /* each worker's schedstat; -1: not open yet; -2: none */
};

struct weft__crowd *weft__crowd_new(unsigned nworkers)
{
    struct weft__crowd *c = calloc(1, sizeof *c + nworkers * sizeof c->fd[0]);
    if (c)
        for (unsigned i = 0; i < nworkers; i++)
            c->fd[i] = -1;
    return c;
}

void weft__crowd_free(struct weft__crowd *c, unsigned nworkers)
{
    if (!c)
        return;
    for (unsigned i = 0; i < nworkers; i++)
        if (c->fd[i] >= 0)
            close(c->fd[i]);
    free(c);
}

/* Worker i's time on a CPU and run delay, in nanoseconds. Returns false
 * where there are none (not started yet, or no schedstat). */
static bool read_worker(struct weft__crowd *c, weft_rt *rt, unsigned i, uint64_t *ran, uint64_t *waited)
{
    if (c->fd[i] == -1) {
        int tid = atomic_load_explicit(&rt->workers[i]->tid, memory_order_relaxed);
        if (!tid)
            return false;
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
        c->fd[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (c->fd[i] < 0)
            c->fd[i] = -2;
    }
    if (c->fd[i] < 0)
        return false;
    char buf[96];
    ssize_t n = pread(c->fd[i], buf, sizeof buf - 1, 0);
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

void weft__crowd_rest(struct weft__crowd *c)
{
    c->at = 0;
}

void weft__crowd_look(struct weft__crowd *c, weft_rt *rt, uint64_t now)
{
    if (c->at && now - c->at < CROWD_EVERY_NS)
        return;
    uint64_t ran = 0, waited = 0;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        uint64_t r, w;
        if (!read_worker(c, rt, i, &r, &w)) {
            c->at = 0;   /* a worker without figures: start afresh */
            return;
        }
        ran += r;
        waited += w;
    }
    if (c->at && ran >= c->ran && waited >= c->waited) {
        uint64_t window = now - c->at, r = ran - c->ran, w = waited - c->waited;
        if ((r + w) * CROWD_QUIET >= window) {
            bool was = atomic_load_explicit(&rt->crowded, memory_order_relaxed);
            uint64_t pct = was ? rt->crowded_pct / 2 : rt->crowded_pct;
            bool is = w * 100 > (r + w) * pct;
            if (is != was)
                atomic_store_explicit(&rt->crowded, is, memory_order_relaxed);   /* a hint */
            if (is)
                atomic_fetch_add_explicit(&rt->crowded_ns, window, memory_order_relaxed);   /* a counter */
        }
    }
    c->at = now;
    c->ran = ran;
    c->waited = waited;
}
