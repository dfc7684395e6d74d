/* SPDX-License-Identifier: MIT */
/*
 * What the two readiness suites (test_readiness.c, test_readiness_more.c)
 * share: each test body runs as a coroutine of a runtime made for it, on a
 * backend and a worker count, and returns NULL or a message.
 */
#pragma once

#include "common.h"

static const unsigned counts[] = { 1, 2, 4 };

/* Long enough that the coroutines started are most likely waiting by then. */
#define SETTLE_NS (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND ? 200000000u : 20000000u)

#define FAIL_IF(cond) do { if (cond) return (void *)(#cond); } while (0)

struct run {
    weft_rt *rt;
    int      backend;
    unsigned workers;
    int      n;   /* the body's own parameter */
};

static inline void run_one(int backend, unsigned workers, int n, weft_fn fn)
{
    weft_config cfg = { .workers = workers, .io_backend = backend };
    struct run r = { .backend = backend, .workers = workers, .n = n };
    cr_assert_eq(weft_rt_create(&r.rt, &cfg), 0);
    weft_task *t;
    void *msg = NULL;
    cr_assert_eq(weft_spawn_on(r.rt, &t, fn, &r), 0);
    cr_assert_eq(weft_join(t, &msg), 0);
    cr_assert_eq(weft_rt_destroy(r.rt), 0);
    cr_assert_null(msg, "%s, %u workers, %d: %s", backend_name[backend], workers, n,
                   msg ? (char *)msg : "");
}

/* run_one on both backends and 1, 2 and 4 workers. */
static inline void run_all(int n, weft_fn fn)
{
    FOR_EACH_CONFIG(b, w, counts)
        run_one(b, w, n, fn);
}

static inline uint64_t epoll_waits(weft_rt *rt)
{
    weft_stats st;
    cr_assert_eq(weft_stats_get(rt, &st), 0);
    return st.epoll_waits;
}
