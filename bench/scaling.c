/* SPDX-License-Identifier: MIT */
/*
 * scaling: a compute-bound fork-join job on 1, 2, ... N workers, and its
 * speed-up over 1 worker. weft: a recursive spawn/join tree over the leaves;
 * pthreads: as many threads, each one static slice of the leaves. Every leaf
 * runs the same fixed amount of integer mixing (work()); the checksum of all
 * leaves is compared with one computed beforehand.
 *
 * A speed-up is the median time on 1 worker over the median time on N: the
 * ratio of the medians, as in the table, the CSV and the chart alike.
 */
#include "bench.h"

#include <weft.h>

#include <pthread.h>
#include <stdlib.h>

typedef struct { long lo, hi; uint64_t sum; } range;

static void *fj_weft(void *p)
{
    range *r = p;
    if (r->hi - r->lo == 1) {
        r->sum = work((uint64_t)r->lo, opt.scale_work);
        return NULL;
    }
    long mid = r->lo + (r->hi - r->lo) / 2;
    range a = { r->lo, mid, 0 }, b = { mid, r->hi, 0 };
    weft_task *t;
    check(weft_spawn(&t, fj_weft, &a), "weft_spawn");
    fj_weft(&b);
    check(weft_join(t, NULL), "weft_join");
    r->sum = a.sum + b.sum;
    return NULL;
}

static void *fj_thread(void *p)
{
    range *r = p;
    r->sum = 0;
    for (long i = r->lo; i < r->hi; i++)
        r->sum += work((uint64_t)i, opt.scale_work);
    return NULL;
}

static uint64_t fj_expected;

void forkjoin_prepare(void)
{
    fj_expected = 0;
    for (long i = 0; i < opt.scale_leaves; i++)
        fj_expected += work((uint64_t)i, opt.scale_work);
}

double forkjoin_weft_ms(unsigned workers)
{
    weft_config cfg = { .workers = workers };
    range r = { 0, opt.scale_leaves, 0 };
    uint64_t t0 = now_ns();
    check(weft_main(&cfg, fj_weft, &r, NULL), "weft_main");
    double ms = (double)(now_ns() - t0) / 1e6;
    if (r.sum != fj_expected)
        fail("scaling: weft fork-join sum is wrong");
    return ms;
}

double forkjoin_pthreads_ms(int nthreads)
{
    pthread_t t[WEFT_WORKERS_MAX];
    range r[WEFT_WORKERS_MAX];
    long per = opt.scale_leaves / nthreads, lo = 0;
    uint64_t t0 = now_ns(), sum = 0;
    for (int i = 0; i < nthreads; i++) {
        long hi = i == nthreads - 1 ? opt.scale_leaves : lo + per;
        r[i] = (range){ lo, hi, 0 };
        lo = hi;
        start_thread(&t[i], NULL, fj_thread, &r[i]);
    }
    for (int i = 0; i < nthreads; i++) {
        pthread_join(t[i], NULL);
        sum += r[i].sum;
    }
    double ms = (double)(now_ns() - t0) / 1e6;
    if (sum != fj_expected)
        fail("scaling: pthreads sum is wrong");
    return ms;
}

/* The speed-up from t1 (runs on 1 worker) to tn (runs on N): the ratio of
 * the medians, spanning the per-run speed-ups. */
static figure speedup(const double *t1, const double *tn, int runs)
{
    double s[RUNS_MAX];
    for (int r = 0; r < runs; r++)
        s[r] = t1[r] / tn[r];
    figure per_run = summarize(s, runs);
    return figure_of(summarize(t1, runs).med / summarize(tn, runs).med, per_run.min,
                     per_run.max);
}

enum { SCALING_MAX = 64 };

void bench_scaling(void)
{
    int maxw = opt.workers ? (int)opt.workers : ncpus();
    if (maxw > SCALING_MAX)
        maxw = SCALING_MAX;
    progress_note("the expected checksum");
    forkjoin_prepare();
    static double tw[SCALING_MAX][RUNS_MAX], tp[SCALING_MAX][RUNS_MAX];
    for (int r = 0; r < opt.runs; r++) {
        progress_run(r + 1, opt.runs);
        for (int w = 1; w <= maxw; w++) {
            progress_note("weft, %d worker%s", w, w == 1 ? "" : "s");
            tw[w - 1][r] = forkjoin_weft_ms((unsigned)w);
            progress_note("pthreads, %d thread%s", w, w == 1 ? "" : "s");
            tp[w - 1][r] = forkjoin_pthreads_ms(w);
        }
    }
    static lines l = { .title = "Fork-join speed-up over 1 worker", .ylabel = "speed-up",
                       .nseries = 3, .label = { "weft", "pthreads", "ideal" },
                       .color = { COLOR_WEFT, COLOR_PTHREADS, COLOR_IDEAL },
                       .dashed = { 0, 0, 1 } };
    static char measure[SCALING_MAX][64], ids[SCALING_MAX][32];
    static char d_speed[240], d_one[200];
    snprintf(d_speed, sizeof d_speed,
             "%ld leaves of pure arithmetic; weft: a recursive spawn/join tree; pthreads: "
             "as many threads as workers, each one static slice; the median time on 1 "
             "worker over the median time on N", opt.scale_leaves);
    snprintf(d_one, sizeof d_one,
             "the whole fork-join job on 1 worker (weft) or 1 thread (pthreads), %ld leaves",
             opt.scale_leaves);
    FILE *f = open_out("scaling.csv");
    fprintf(f, "workers,weft_ms_median,weft_ms_min,weft_ms_max,weft_speedup,"
               "pthreads_ms_median,pthreads_ms_min,pthreads_ms_max,pthreads_speedup\n");
    l.n = maxw;
    for (int w = 1; w <= maxw; w++) {
        figure sw = summarize(tw[w - 1], opt.runs), sp = summarize(tp[w - 1], opt.runs);
        figure uw = speedup(tw[0], tw[w - 1], opt.runs), up = speedup(tp[0], tp[w - 1], opt.runs);
        l.x[w - 1] = w;
        l.y[0][w - 1] = uw.med;
        l.y[1][w - 1] = up.med;
        l.y[2][w - 1] = w;
        fprintf(f, "%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f\n", w, sw.med, sw.min, sw.max,
                uw.med, sp.med, sp.min, sp.max, up.med);
        if (w == 1)
            continue;
        snprintf(measure[w - 1], sizeof measure[0], "fork-join speed-up, 1 to %d workers", w);
        snprintf(ids[w - 1], sizeof ids[0], "scaling_speedup_%d", w);
        row *r = add_row_fig("scaling", ids[w - 1], measure[w - 1], "x", MORE, &uw, &up);
        r->detail = d_speed;
        r->in_table = w == maxw;
    }
    close_out(f);
    add_row("scaling", "scaling_1_worker", "fork-join on 1 worker", "ms", FASTER, tw[0], tp[0],
            opt.runs)->detail = d_one;
    chart_lines("scaling.svg", "Fork-join compute", &l, 1);
}
