/* SPDX-License-Identifier: MIT */
/*
 * skynet: a tree of tasks, fan-out 10, whose leaves return their numbers and
 * whose inner nodes sum their children's (the benchmark's usual shape; Go's
 * counterpart is bench/compare/go/skynet.go). weft: every node a coroutine
 * that spawns and joins its ten children; pthreads: every node a thread with
 * a 64 KiB stack, on a tree as large as threads manage. The sum is checked.
 */
#include "bench.h"

#include <weft.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct { long num, size; } sky_arg;

static void *skynet_weft(void *p)
{
    sky_arg *a = p;
    if (a->size == 1)
        return (void *)(intptr_t)a->num;
    sky_arg kids[10];
    weft_task *t[10];
    long sub = a->size / 10, sum = 0;
    for (int i = 0; i < 10; i++) {
        kids[i] = (sky_arg){ a->num + i * sub, sub };
        check(weft_spawn(&t[i], skynet_weft, &kids[i]), "weft_spawn");
    }
    for (int i = 0; i < 10; i++) {
        void *r;
        check(weft_join(t[i], &r), "weft_join");
        sum += (long)(intptr_t)r;
    }
    return (void *)(intptr_t)sum;
}

static pthread_attr_t sky_attr;

static void *skynet_pth(void *p)
{
    sky_arg *a = p;
    if (a->size == 1)
        return (void *)(intptr_t)a->num;
    sky_arg kids[10];
    pthread_t t[10];
    long sub = a->size / 10, sum = 0;
    for (int i = 0; i < 10; i++) {
        kids[i] = (sky_arg){ a->num + i * sub, sub };
        if (pthread_create(&t[i], &sky_attr, skynet_pth, &kids[i]) != 0) {
            fail("skynet: pthread_create (too many threads)");
            exit(1);
        }
    }
    for (int i = 0; i < 10; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (long)(intptr_t)r;
    }
    return (void *)(intptr_t)sum;
}

static void sum_check(const char *who, long leaves, void *res)
{
    long want = leaves * (leaves - 1) / 2;
    if ((long)(intptr_t)res != want)
        fail("skynet (%s) sum %ld, expected %ld", who, (long)(intptr_t)res, want);
}

/* One weft skynet of the given leaves on a runtime of `workers` (0: every
 * CPU); returns the whole run in ms, the runtime's start and end included. */
double skynet_weft_ms(unsigned workers, long leaves)
{
    weft_config cfg = { .workers = workers };
    sky_arg a = { 0, leaves };
    void *res;
    uint64_t t0 = now_ns();
    check(weft_main(&cfg, skynet_weft, &a, &res), "weft_main");
    double ms = (double)(now_ns() - t0) / 1e6;
    sum_check("weft", leaves, res);
    return ms;
}

static double skynet_pthreads_ms(long leaves)
{
    sky_arg b = { 0, leaves };
    pthread_t root;
    void *res;
    uint64_t t0 = now_ns();
    start_thread(&root, &sky_attr, skynet_pth, &b);
    pthread_join(root, &res);
    double ms = (double)(now_ns() - t0) / 1e6;
    sum_check("pthreads", leaves, res);
    return ms;
}

void bench_skynet(void)
{
    double w[RUNS_MAX], p[RUNS_MAX];
    pthread_attr_init(&sky_attr);
    pthread_attr_setstacksize(&sky_attr, 64 * 1024);
    for (int r = 0; r < opt.runs; r++) {
        progress_run(r + 1, opt.runs);
        progress_note("weft");
        w[r] = skynet_weft_ms(opt.workers, opt.skynet_weft);
        progress_note("pthreads");
        p[r] = skynet_pthreads_ms(opt.skynet_pth);
    }
    pthread_attr_destroy(&sky_attr);
    /* Per-leaf figures make the two sizes comparable. */
    double wl[RUNS_MAX], pl[RUNS_MAX];
    for (int r = 0; r < opt.runs; r++) {
        wl[r] = w[r] * 1e6 / (double)opt.skynet_weft;
        pl[r] = p[r] * 1e6 / (double)opt.skynet_pth;
    }
    static char d_total[320], d_leaf[160], m_total[96];
    char nw[32], np[32];
    grouped(nw, sizeof nw, opt.skynet_weft);
    grouped(np, sizeof np, opt.skynet_pth);
    snprintf(d_total, sizeof d_total,
             "the whole run; weft: %s leaf coroutines, fan-out 10, sum checked; pthreads: "
             "%s leaf threads, 64 KiB stacks, the most they manage; not the same size, so "
             "only the per-leaf row compares them", nw, np);
    snprintf(d_leaf, sizeof d_leaf,
             "the whole run over the leaves (weft: %s leaves; pthreads: %s leaves)", nw, np);
    snprintf(m_total, sizeof m_total, "whole run (%s leaves; pthreads %s)", nw, np);
    row *t = add_row("skynet", "skynet_total", m_total, "ms", FASTER, w, p, opt.runs);
    t->detail = d_total;
    t->in_table = 0;
    add_row("skynet", "skynet_per_leaf", "time per leaf of the tree", "ns/leaf", FASTER,
            wl, pl, opt.runs)->detail = d_leaf;
    chart_group("skynet.svg", "Skynet: a tree of tasks, fan-out 10", "skynet");
}
