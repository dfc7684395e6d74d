/* SPDX-License-Identifier: MIT */
/*
 * weft_stats_get: a runtime's counters, summed over its workers.
 *
 * Each worker counts what it does in its own struct weft__counters
 * (core.h) with plain relaxed stores, so counting costs no locked
 * instruction and no shared cache line; a reader loads each relaxed and sums.
 * The sums are thus a moment's, not one instant's: the derived figures
 * (running, runnable, waiting) are clamped so that they never exceed alive.
 */
#include "core.h"

#include <errno.h>
#include <string.h>

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)   /* a counter; see above */

/* The time w has spent out of its idle loop until now: its life less its
 * idle time, the search under way included. */
static uint64_t busy_of(const struct weft__worker *w, uint64_t now)
{
    uint64_t started = LOAD(w->started), since = LOAD(w->idle_since);
    uint64_t idle = LOAD(w->ctr.idle_ns);
    if (!started || now < started)
        return 0;
    if (since && now > since)
        idle += now - since;
    uint64_t life = now - started;
    return life > idle ? life - idle : 0;
}

int weft_stats_get(weft_rt *rt, weft_stats *out)
{
    if (!rt || !out)
        return -EINVAL;
    if (weft__inherited(rt))
        return -ECHILD;
    weft_stats s;
    memset(&s, 0, sizeof(s));
    uint64_t spawned = LOAD(rt->spawned_outside), parks = 0;
    uint64_t unparks = LOAD(rt->unparks_outside);
    /* Finished before spawned: every exit counted has its spawn counted too
     * (a task's spawn happens before its exit), so alive never underflows. */
    for (unsigned i = 0; i < rt->nworkers; i++)
        s.finished += atomic_load_explicit(&rt->workers[i]->exited, memory_order_acquire);   /* pairs with the exit's release */
    for (unsigned i = 0; i < rt->nworkers; i++) {
        const struct weft__worker *w = rt->workers[i];
        const struct weft__counters *c = &w->ctr;
        spawned += atomic_load_explicit(&w->spawned, memory_order_acquire);   /* pairs with weft__count_spawn */
        s.steals += LOAD(c->steals);
        s.worker_parks += LOAD(c->sleeps);
        s.worker_wakes += LOAD(c->wakes);
        s.uring_submitted += LOAD(c->uring_submitted);
        s.uring_completed += LOAD(c->uring_completed);
        s.epoll_waits += LOAD(c->epoll_waits);
        s.epoll_events += LOAD(c->epoll_events);
        s.timers_armed += LOAD(c->timers_armed);
        parks += LOAD(c->task_parks);
        unparks += LOAD(c->task_unparks);
    }
    s.spawned = spawned;
    s.alive = spawned - s.finished;
    s.waiting = parks > unparks ? parks - unparks : 0;
    if (s.waiting > s.alive)
        s.waiting = s.alive;
    /* Running: the workers out of their idle loop, each running a coroutine. */
    uint64_t now = weft_now();
    for (unsigned i = 0; i < rt->nworkers; i++) {
        uint64_t busy = busy_of(rt->workers[i], now);
        s.busy_ns += busy;
        if (LOAD(rt->workers[i]->started) && !LOAD(rt->workers[i]->idle_since))
            s.running++;
    }
    if (s.running > s.alive - s.waiting)
        s.running = s.alive - s.waiting;
    s.runnable = s.alive - s.waiting - s.running;
    s.stack_committed = weft__stacks_held(rt->stacks);
    s.workers = rt->nworkers;
    s.crowded = LOAD(rt->crowded);
    s.crowded_ns = LOAD(rt->crowded_ns);
    s.worker_takeovers = LOAD(rt->takeovers);
    *out = s;
    return 0;
}

int weft_stats_busy(weft_rt *rt, uint64_t *busy_ns, unsigned n)
{
    if (!rt || (!busy_ns && n))
        return -EINVAL;
    if (weft__inherited(rt))
        return -ECHILD;
    uint64_t now = weft_now();
    for (unsigned i = 0; i < n && i < rt->nworkers; i++)
        busy_ns[i] = busy_of(rt->workers[i], now);
    return (int)rt->nworkers;
}
