/*
 * Timers and sleeping (runtime/timer.c): what the scheduler needs to know.
 */
#ifndef WEFT_IO_H
#define WEFT_IO_H

#include "internal.h"

/* One pending timer. Lives in the sleeper's frame; on rt's heap while idx != 0. */
struct weft__timer {
    uint64_t             when;    /* weft_now() clock */
    struct weft__waiter *wt;      /* claimed with result 1 when due */
    size_t               idx;     /* 1-based heap position; 0 = not armed */
};

struct weft__timers;   /* a runtime's timer heap and its thread */

/* Stops and joins rt's timer thread, if one was started. weft_rt_destroy()
 * only, after every coroutine has finished. */
void weft__timers_destroy(weft_rt *rt);

struct weft__poller;   /* a runtime's epoll set and its thread */

/* Stops and joins rt's poller thread, if one was started. weft_rt_destroy()
 * only, after every coroutine has finished. */
void weft__poller_destroy(weft_rt *rt);

#endif /* WEFT_IO_H */
