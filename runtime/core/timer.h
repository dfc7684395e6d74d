/* SPDX-License-Identifier: MIT */
/*
 * Timers (core/timer.c): a runtime's heap of deadlines, fired by its workers.
 * What the waits (core/wait.c, weft_sleep) and the scheduler need of it.
 */
#ifndef WEFT_TIMER_H
#define WEFT_TIMER_H

#include "core.h"

/* One pending timer. Lives in the waiter's frame; on rt's heap while idx != 0. */
struct weft__timer {
    uint64_t             when;    /* weft_now() clock */
    struct weft__waiter *wt;      /* claimed with `result` when due */
    int32_t              result;  /* nonzero */
    size_t               idx;     /* 1-based heap position; 0 = not armed; under the heap lock */
    struct weft__timer  *due_next; /* claimed and due, for the firing worker only */
};

struct weft__timers;   /* a runtime's timer heap */

/* Arms tm on rt's heap. A coroutine of rt. Returns 0 or -ENOMEM. */
int weft__timer_arm(weft_rt *rt, struct weft__timer *tm);
/* Takes tm off the heap if it has not fired. After it returns no worker
 * touches tm or its waiter any more. Whoever armed it. */
void weft__timer_disarm(weft_rt *rt, struct weft__timer *tm);

/* weft_rt_create() and weft_rt_destroy(), the latter once every coroutine has
 * finished. */
int weft__timers_create(struct weft__timers **ts);
void weft__timers_destroy(struct weft__timers *ts);
/* The earliest deadline armed, or UINT64_MAX. Any thread; no lock. */
uint64_t weft__timers_next(const struct weft__timers *ts);
/* Claims every timer due at `now`. A worker of the heap's runtime: the woken
 * tasks become runnable on it. Returns how many it claimed. */
unsigned weft__timers_fire(struct weft__timers *ts, uint64_t now);
/* core/search.c: the earliest deadline just moved earlier. The arming worker. */
void weft__timers_changed(weft_rt *rt);

#endif /* WEFT_TIMER_H */
