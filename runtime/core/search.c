/* SPDX-License-Identifier: MIT */
/*
 * Looking for work: stealing, parking a worker and waking one, and the timer
 * watcher.
 *
 * When a worker has nothing, it searches (steals from random victims)
 * for a while, then parks. The search lasts up to SPIN_NS (shorter after
 * searches in vain: see budget_up), a few times what a futex
 * wake and the woken thread's return cost the two threads here: with a
 * shorter one, a coroutine that spawns and joins on one worker made the other
 * park between its spawns, and every spawn paid for a futex wake (`weft-bench
 * spawn`, 2 workers, one at a time). A search
 * that sees a busy owner (a lone spawn it leaves to that owner, or spawns
 * since its last look, see steal_any) starts its SPIN_NS again:
 * that owner is spawning and joining, and a parked searcher would only be
 * woken by its next spawn. It also looks less often, up to GAP_MAX_NS apart,
 * since every look takes cache lines that the owner is about to write.
 *
 * Parking a worker, without lost wake-ups. Counters are rt->nspinning
 * (workers searching) and rt->nidle (workers on the idle list). A worker
 * that finds no work:
 *   1. puts itself on the idle list and increments nidle (seq_cst);
 *   2. stops searching: decrements nspinning (seq_cst);
 *   3. full fence, then looks once more at every queue; if it sees work it takes
 *      itself off the idle list (or, if a waker already took it off, accepts
 *      that wake) and searches again;
 *   4. sleeps on its futex word until a waker sets it to GO (with IO in
 *      flight, in its ring or epoll set instead, which the waker then kicks
 *      through an eventfd; see park_worker). Meanwhile it may
 *      give memory back (stack.c) and, as the timer watcher, sleep only until
 *      the earliest deadline and fire the timers due (see watch() below);
 *      tasks those make runnable land on its own runnext, so it then takes
 *      itself off the idle list, as in step 3; so do completions and events
 *      of its own IO, which land on its IO queue (core/park.c, ready).
 * Whoever makes work runnable (wake_one):
 *   a. publishes the task (release);
 *   b. full fence;
 *   c. if nspinning == 0 and nidle > 0, CASes nspinning 0 -> 1 and pops a
 *      worker from the idle list, sets its futex word and wakes it; the woken
 *      worker starts out searching.
 * Either c sees the increment of step 1, and someone is woken, or step 3 comes
 * after a in the seq_cst order and the parking worker sees the task. Either c
 * sees a searcher, or that searcher's step 2 comes after, and its step 3 sees
 * the task. A searcher that finds work and was the last searcher calls
 * wake_one itself, so the chain of searchers does not end while work remains.
 */
#include "sched.h"

#include <pthread.h>

/* Wakes a parked worker whose wake word was just set: it sleeps on the word's
 * futex, or in its ring or epoll set. */
void weft__wake_worker(struct weft__worker *w)
{
    weft__fence();   /* the wake word's store before in_io's load: pairs with park_worker */
    if (atomic_load_explicit(&w->in_io, memory_order_seq_cst))
        weft__io_kick(w);
    else
        weft__futex_wake(&w->wake, 1);
}

/*
 * Steps a-c of the worker park protocol (see the top of this file): the caller
 * has just published a runnable task.
 */
void weft__wake_one(weft_rt *rt)
{
    weft__fence();                     /* b: pairs with the parker's step 3 */
    if (atomic_load_explicit(&rt->nspinning, memory_order_seq_cst) != 0 ||
        atomic_load_explicit(&rt->nidle, memory_order_seq_cst) == 0)
        return;
    unsigned zero = 0;
    if (!atomic_compare_exchange_strong_explicit(&rt->nspinning, &zero, 1,
            memory_order_seq_cst, memory_order_relaxed))
        return;                                                    /* someone else is searching */
    pthread_mutex_lock(&rt->idle_lock);
    struct weft__worker *w = rt->idle;
    if (w) {
        rt->idle = w->idle_next;
        atomic_fetch_sub_explicit(&rt->nidle, 1, memory_order_seq_cst);
    }
    pthread_mutex_unlock(&rt->idle_lock);
    if (!w) {
        atomic_fetch_sub_explicit(&rt->nspinning, 1, memory_order_seq_cst);
        return;
    }
    atomic_store_explicit(&w->wake, WEFT__WAKE_GO, memory_order_release);   /* the woken worker counts as searching */
    weft__wake_worker(w);
}

void weft__wake_parked(struct weft__worker *h)
{
    weft_rt *rt = h->rt;
    bool found = false;
    pthread_mutex_lock(&rt->idle_lock);
    for (struct weft__worker **p = &rt->idle; *p; p = &(*p)->idle_next) {
        if (*p == h) {
            *p = h->idle_next;
            atomic_fetch_sub_explicit(&rt->nidle, 1, memory_order_seq_cst);
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&rt->idle_lock);
    /* Not on the list under idle_lock: either it has not reached step 1 of
     * its next park, and that step's lock comes after ours, so its step 3
     * sees the caller's push; or it left the list itself (step 3 saw work),
     * or another waker took it off and is storing GO: either way it
     * searches, which starts with its inbox (pick_next). */
    if (!found)
        return;
    atomic_fetch_add_explicit(&rt->nspinning, 1, memory_order_seq_cst);   /* it starts out searching */
    atomic_store_explicit(&h->wake, WEFT__WAKE_GO, memory_order_release);
    weft__wake_worker(h);
}

/* ---- workers -------------------------------------------------------------------- */

/*
 * A searching worker steals from the global queue and other workers' deques,
 * never a victim's IO queue (core/park.c, ready) or runnext: a task just
 * woken by a running task is run by that worker as soon as the waker blocks,
 * as in message passing, and stealing it would put the two on different
 * cores, where every hand-over between them crosses the cache. Go's
 * runqsteal takes runnext only after a few microseconds' wait; weft leaves
 * it to its owner, or to the monitor once the owner has stalled
 * (core/sched.h says what that saves). Tokio's LIFO slot is not stolen
 * either (stealing it was tried in 1.51 and taken back for what it cost busy
 * servers); there, with no monitor, a task behind a long poll waits for it
 * without bound, here for the rescue threshold.
 *
 * A victim's lone deque task is taken only if the victim has not scheduled
 * anything since the thief saw it there, some microseconds before, in an
 * earlier round of its search. The same index is weak evidence: a coroutine
 * that spawns and joins puts a task at the same place on every round trip,
 * and a thief that took it would move the whole exchange to its core. The
 * victim's schedule count (its tick) tells whether it has moved on.
 */
enum steal_round { ROUND_PLAIN, ROUND_LOOK, ROUND_TAKE };

/* A thief's patience: in the LOOK round it notes `what` it sees at v, and
 * v's tick; in the TAKE round it may take only what it noted there then, and
 * only if v has scheduled nothing since. */
static bool seen_since_look(struct weft__sighting *s, enum steal_round round,
                            const struct weft__worker *v, uintptr_t what)
{
    if (round == ROUND_PLAIN)
        return false;
    uint32_t tick = tick_of(v);
    bool seen = round == ROUND_TAKE && s->victim == v && s->what == what && s->tick == tick;
    *s = (struct weft__sighting){ .victim = v, .what = what, .tick = tick };   /* for the next TAKE */
    return seen;
}

/*
 * A deque that holds a single task: its owner most likely spawned it and is
 * about to wait for it (spawn, then join), and runs it as soon as it blocks.
 * A thief takes it only if it sat there, at the same index and with no
 * schedule on its owner, since the LOOK round. A deque of two or more (a
 * fork-join node's children) is stolen from at once.
 */
static bool lone_task_waits(struct weft__worker *w, const struct weft__worker *v, enum steal_round round)
{
    size_t top = atomic_load_explicit(&v->dq.top, memory_order_relaxed);         /* a hint: the */
    size_t bottom = atomic_load_explicit(&v->dq.bottom, memory_order_relaxed);   /* steal decides */
    return bottom - top == 1 && !seen_since_look(&w->lone_seen, round, v, top);
}

/* A task, or NULL; *waiting: a busy owner was seen that will likely run its
 * own tasks: a victim's lone task was left for it, or another worker spawned
 * since the last look (its spawns are taken, or about to be, by itself: a
 * coroutine spawning and joining one at a time). */
static weft_task *steal_any(struct weft__worker *w, enum steal_round round, bool *waiting)
{
    weft_rt *rt = w->rt;
    weft_task *t = weft__gq_take(w);
    if (t)
        return t;
    unsigned n = rt->nworkers, start = rng_next(w) % n;
    uint64_t spawns = 0;
    for (unsigned i = 0; i < n; i++) {
        struct weft__worker *v = rt->workers[(start + i) % n];
        if (v == w)
            continue;
        spawns += atomic_load_explicit(&v->spawned, memory_order_relaxed);   /* a hint */
        if (lone_task_waits(w, v, round))
            *waiting = true;
        else if ((t = weft__deque_steal(&v->dq)))
            break;
    }
    if (t) {
        weft__bump(&w->ctr.steals, 1);
        return t;
    }
    if (spawns != w->spawns_seen) {
        w->spawns_seen = spawns;
        *waiting = true;
    }
    return NULL;
}

/* Step 3's look: whether the global queue or a deque holds tasks (not
 * runnext: its owner's, which runs). Crowded, a deque's lone task does not
 * count, as the search leaves it alone too: its owner runs it when it
 * blocks, or the monitor's takeover moves it and wakes a worker, and a
 * second task's push wakes one (push_local). Counted, it would end each park
 * at once, and the worker would go round between search and park, without a
 * pause, until the owner blocked. */
static bool work_visible(weft_rt *rt, bool lone_counts)
{
    if (atomic_load_explicit(&rt->gq_len, memory_order_seq_cst))
        return true;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        size_t n = weft__deque_len(&rt->workers[i]->dq);
        if (n > 1 || (n == 1 && lone_counts))
            return true;
    }
    return false;
}

static void stop_spinning(struct weft__worker *w)
{
    w->spinning = false;
    if (atomic_fetch_sub_explicit(&w->rt->nspinning, 1, memory_order_seq_cst) == 1)
        weft__wake_one(w->rt);   /* we were the last searcher: keep the chain going */
}

/* Takes w off the idle list and makes it a searcher again. Returns false if a
 * waker took it off first (and will set its wake word). */
static bool leave_idle(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    bool removed = false;
    pthread_mutex_lock(&rt->idle_lock);
    for (struct weft__worker **p = &rt->idle; *p; p = &(*p)->idle_next) {
        if (*p == w) {
            *p = w->idle_next;
            atomic_fetch_sub_explicit(&rt->nidle, 1, memory_order_seq_cst);
            removed = true;
            break;
        }
    }
    pthread_mutex_unlock(&rt->idle_lock);
    if (removed) {
        atomic_fetch_add_explicit(&rt->nspinning, 1, memory_order_seq_cst);
        w->spinning = true;
    }
    return removed;
}

/*
 * The timer watcher. A parked worker that sees timers armed, and no other
 * watcher, becomes the watcher and sleeps only until the earliest deadline.
 * Dekker pair with weft__timers_changed(): the watcher stores itself in
 * rt->watcher, fences, then reads the earliest deadline; an arm stores a new
 * earliest deadline, fences, then reads rt->watcher. So either the watcher's
 * sleep covers the new timer or the arm sees the watcher and kicks it (wake
 * word TIMERS: recompute). Returns the deadline to sleep until, UINT64_MAX for
 * none.
 */
static uint64_t watch(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    if (weft__timers_next(rt->timers) == UINT64_MAX)
        return UINT64_MAX;   /* an arm now finds no watcher and wakes an idle worker */
    struct weft__worker *cur = atomic_load_explicit(&rt->watcher, memory_order_seq_cst);
    if (cur != w) {
        if (cur || !atomic_compare_exchange_strong_explicit(&rt->watcher, &cur, w,
                       memory_order_seq_cst, memory_order_relaxed))
            return UINT64_MAX;   /* another parked worker watches */
    }
    weft__fence();   /* rt->watcher before next: pairs with weft__timers_changed() */
    return weft__timers_next(rt->timers);
}

/* Asks parked worker v to look at the earliest deadline again: true if the
 * caller must now wake it; false if v is being woken already. */
static bool mark_timers(struct weft__worker *v)
{
    uint32_t none = WEFT__WAKE_NONE;
    return atomic_compare_exchange_strong_explicit(&v->wake, &none, WEFT__WAKE_TIMERS,
                                                   memory_order_release, memory_order_relaxed);
}

/* w, off the idle list again, gives up watching. If timers are armed, another
 * parked worker takes over, so that a busy w does not hold back the sleepers. */
static void unwatch(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    struct weft__worker *me = w;
    if (atomic_load_explicit(&rt->watcher, memory_order_relaxed) != w ||
        !atomic_compare_exchange_strong_explicit(&rt->watcher, &me, NULL,
            memory_order_seq_cst, memory_order_relaxed))
        return;
    if (weft__timers_next(rt->timers) == UINT64_MAX ||
        atomic_load_explicit(&rt->nidle, memory_order_seq_cst) == 0)
        return;   /* nobody to hand over to: busy workers fire timers as they go */
    pthread_mutex_lock(&rt->idle_lock);
    struct weft__worker *next = rt->idle;
    bool kick = next && mark_timers(next);
    pthread_mutex_unlock(&rt->idle_lock);
    if (kick)
        weft__wake_worker(next);   /* workers outlive the runtime's idle list: safe unlocked */
}

void weft__timers_changed(weft_rt *rt)
{
    weft__fence();   /* the new earliest deadline before rt->watcher: pairs with watch() */
    struct weft__worker *v = atomic_load_explicit(&rt->watcher, memory_order_seq_cst);
    if (!v) {
        weft__wake_one(rt);   /* it will park again, and watch */
        return;
    }
    if (mark_timers(v))
        weft__wake_worker(v);
    /* Otherwise it is waking already and will look at the heap again. */
}

/* The search's patient rounds adapt to what they find, as an adaptive
 * mutex's spin does: a search that ends in sleep halves the next one's time,
 * and one that finds work in its patient rounds, or a sleep that a waker ends
 * within the full time (weft_config.idle_spin_ns), doubles it, from at least
 * SPIN_SEED_NS up to the full time. A server fed by
 * the network, whose workers' searches find nothing, then parks at once
 * rather than spin for work that only the kernel will bring (the HTTP
 * example's CPU per request, bench/compare/http/ab.sh); a coroutine
 * spawning and joining keeps a searcher on its heels (the renewal in
 * search()), and a timer due within the full time is waited for awake,
 * for its lateness (`weft-bench timers`). */
static uint64_t budget_up(const struct weft__worker *w)
{
    uint64_t full = w->rt->spin_ns, b = 2 * w->spin_budget;
    if (b < SPIN_SEED_NS)
        b = SPIN_SEED_NS;
    return b < full ? b : full;
}

/* How long the patient rounds of a search that starts them at `now` last:
 * w's budget, or until the earliest deadline and a round past it, if that
 * comes within the full time; crowded, none, or until a deadline that comes
 * within CROWDED_WAIT_NS. */
static uint64_t search_time(const struct weft__worker *w, uint64_t now)
{
    /* Crowded, the CPU it would spin on is wanted (core/crowd.c). */
    bool in_crowd = crowded(w->rt);
    uint64_t b = in_crowd ? 0 : w->spin_budget, horizon = in_crowd ? CROWDED_WAIT_NS : w->rt->spin_ns;
    uint64_t due = weft__timers_next(w->rt->timers);
    if (due != UINT64_MAX && due > now && due - now <= horizon && due - now + GAP_MIN_NS > b)
        b = due - now + GAP_MIN_NS;
    return b;
}

/* Steps 1-4 of the park protocol. Returns with w searching again. */
static void park_worker(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    /* Only the worker itself fills its yield queue (tasks pinned to it, made
     * runnable here), and pick_next, which found nothing, looked at it last:
     * step 3 has no need to, and nobody would run them while we sleep. */
    weft__check(!w->yq_head && !w->ioq_head, "a worker parked with tasks on its own yield or IO queue");
    pthread_mutex_lock(&rt->idle_lock);                            /* 1 */
    w->idle_next = rt->idle;
    rt->idle = w;
    atomic_fetch_add_explicit(&rt->nidle, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&rt->idle_lock);
    w->spinning = false;                                           /* 2 */
    atomic_fetch_sub_explicit(&rt->nspinning, 1, memory_order_seq_cst);
    weft__fence();                     /* 3 */
    uint64_t due = weft__timers_next(rt->timers);
    if ((work_visible(rt, !crowded(rt)) || atomic_load_explicit(&w->inbox, memory_order_seq_cst) ||
         (due != UINT64_MAX && due <= weft_now()) ||
         atomic_load_explicit(&rt->stopping, memory_order_seq_cst)) &&
        leave_idle(w)) {
        weft__monitor_nudge(rt);
        return;
    }
    /* Otherwise a waker took us off the list and counted us as searching; its
     * store to our wake word is on its way. */
    w->spin_budget /= 2;   /* the search was in vain: shorter next time */
    weft__bump(&w->ctr.sleeps, 1);
    uint64_t parked_at = weft_now();
    uint32_t v;
    while ((v = atomic_load_explicit(&w->wake, memory_order_acquire)) != WEFT__WAKE_GO) {   /* 4 */
        if (v == WEFT__WAKE_TIMERS)   /* a kick: the earliest deadline moved */
            atomic_compare_exchange_strong_explicit(&w->wake, &v, WEFT__WAKE_NONE,
                                                    memory_order_relaxed, memory_order_relaxed);
        uint64_t until = watch(w);
        if (until != UINT64_MAX && until <= weft_now()) {
            /* Due timers make tasks runnable here: leave the idle list
             * ourselves, unless a waker already did. */
            if (weft__timers_fire(rt->timers, weft_now()) && leave_idle(w)) {
                unwatch(w);
                weft__monitor_nudge(rt);
                return;
            }
            continue;
        }
        /* Idle time gives memory back, a batch at a time, between looks at
         * the wake word and the timers: the watcher may be the one trimming,
         * and a trim of 100,000 slots takes seconds. */
        if (weft__stacks_trim(rt->stacks, &w->wake))
            continue;
        uint64_t trim = weft__stacks_trim_due(rt->stacks);
        if (trim < until)
            until = trim;
        /* With IO in flight we sleep in the ring or the epoll set, to reap
         * it. Wakers then kick that instead of the futex: in_io is set, then
         * the wake word read, each side fenced, so either we see the wake or
         * the waker sees in_io. A completion or an event may make a task
         * runnable here: then we leave the idle list ourselves, unless a
         * waker already did. */
        if (weft__io_busy(w)) {
            atomic_store_explicit(&w->in_io, 1, memory_order_seq_cst);
            weft__fence();
            bool woke = false;
            if (atomic_load_explicit(&w->wake, memory_order_seq_cst) == WEFT__WAKE_NONE) {
                w->reaping = true;   /* as in pick_next's poll (core/worker.c) */
                woke = weft__io_sleep(w, until);
                w->reaping = false;
            }
            atomic_store_explicit(&w->in_io, 0, memory_order_relaxed);
            if (woke && leave_idle(w)) {
                unwatch(w);
                weft__monitor_nudge(rt);
                return;
            }
            continue;
        }
        weft__futex_wait_until(&w->wake, WEFT__WAKE_NONE, until);
    }
    atomic_store_explicit(&w->wake, WEFT__WAKE_NONE, memory_order_relaxed);
    weft__bump(&w->ctr.wakes, 1);
    if (weft_now() - parked_at < rt->spin_ns)
        w->spin_budget = budget_up(w);   /* a longer search would have met this wake */
    unwatch(w);
    w->spinning = true;
    weft__monitor_nudge(rt);
}

/* Whether the searchers (the caller among them) are no more than the
 * workers that are neither searching nor parked. A hint: counters only. */
static bool few_searchers(weft_rt *rt)
{
    unsigned searching = atomic_load_explicit(&rt->nspinning, memory_order_relaxed);
    unsigned idle = atomic_load_explicit(&rt->nidle, memory_order_relaxed);
    return 2 * searching + idle <= rt->nworkers;
}

static weft_task *search(struct weft__worker *w);

/* The idle loop's search, timed: the time a worker spends in it is its idle
 * time, so that the clock is read only on the idle path (weft_stats_busy).
 * Returns a task, or NULL when the runtime stops. */
weft_task *weft__find_work(struct weft__worker *w)
{
    uint64_t t0 = weft_now();
    atomic_store_explicit(&w->idle_since, t0, memory_order_relaxed);   /* a hint for readers */
    weft_task *t = search(w);
    w->clock = weft_now();
    weft__bump(&w->ctr.idle_ns, w->clock - t0);
    atomic_store_explicit(&w->idle_since, 0, memory_order_relaxed);
    return t;
}

static weft_task *search(struct weft__worker *w)
{
    weft_rt *rt = w->rt;
    for (;;) {
        if (!w->spinning) {
            w->spinning = true;
            atomic_fetch_add_explicit(&rt->nspinning, 1, memory_order_seq_cst);
        }
        uint64_t until = 0, gap = 0;
        for (unsigned round = 0;; round++) {
            fire_timers(w);
            /* Our own queues too: completions reaped while parked land there. */
            bool waiting = false;
            weft_task *t = weft__pick_next(w);
            if (!t)
                t = steal_any(w, round >= SPIN_ROUNDS - 1 ? ROUND_TAKE :
                                 round == SPIN_ROUNDS - 3 ? ROUND_LOOK : ROUND_PLAIN, &waiting);
            if (t) {
                if (until)   /* the patient rounds paid */
                    w->spin_budget = budget_up(w);
                stop_spinning(w);
                return t;
            }
            /* Crowded, one look and then sleep: the rounds of pauses, and
             * the patient look-and-take of a lone task they lead to, would
             * spin on a CPU that the workers with work are waiting for
             * (core/crowd.c; the HTTP example's CPU per request,
             * bench/compare/http/ab.sh). A timer due within CROWDED_WAIT_NS
             * is still waited for awake. */
            if (round == 0 && crowded(rt) && !search_time(w, weft_now()))
                break;
            if (round >= SPIN_ROUNDS - 1) {
                /* A busy owner renews the search: parking now would only
                 * make that owner's next spawn pay for a futex wake, about
                 * every SPIN_NS. But only while searchers are no more than
                 * the busy workers: sixteen workers must not keep fifteen
                 * cores spinning for one that spawns and joins; and not
                 * while the runtime is crowded, when the spinning would
                 * take that owner's CPU. */
                uint64_t now = weft_now();
                if (waiting && few_searchers(rt) && !crowded(rt))
                    until = now + rt->spin_ns;
                else if (!until)
                    until = now + search_time(w, now);
                if (now >= until || atomic_load_explicit(&rt->stopping, memory_order_relaxed))
                    break;   /* a long search (weft_config.idle_spin_ns) must not hold up weft_rt_destroy */
                /* And it spaces our looks out, up to GAP_MAX_NS apart. Each
                 * look pulls the owner's deque ends, runnext and tick into
                 * our cache, and its next CAS on them waits for the lines to
                 * come back: the owner spawning and joining one at a time
                 * slows down the more often we look (`weft-bench spawn`).
                 * Work queued meanwhile waits at most GAP_MAX_NS: the global
                 * queue ends the gap at once, the owner's deque is seen at
                 * the next look. GAP_MAX_NS stays below SPIN_NS, so a look
                 * that finds the owner gone quiet leaves one more before we
                 * park. */
                gap = !waiting ? 0 : !gap ? GAP_MIN_NS : gap * 2 < GAP_MAX_NS ? gap * 2 : GAP_MAX_NS;
                if (gap) {
                    while (weft_now() < now + gap &&
                           !atomic_load_explicit(&rt->gq_len, memory_order_relaxed))
                        for (unsigned i = 0; i < 16; i++)
                            weft__cpu_relax();
                    continue;
                }
            }
            for (unsigned i = 0; i < 32u << (round < SPIN_ROUNDS ? round : SPIN_ROUNDS - 1); i++)
                weft__cpu_relax();
        }
        if (atomic_load_explicit(&rt->stopping, memory_order_seq_cst)) {
            w->spinning = false;
            atomic_fetch_sub_explicit(&rt->nspinning, 1, memory_order_seq_cst);
            return NULL;
        }
        park_worker(w);
    }
}
