/*
 * What the workloads of weft-bench share with its driver (weft-bench.c): the
 * options and sizes, the result table, progress lines and the checks. Private
 * to the bench program.
 */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stdint.h>

struct bench_opt {
    int      full;
    int      runs;
    unsigned workers;           /* 0 = all CPUs */
    const char *dir;
    /* sizes, set from --quick / --full */
    long spawn_weft, spawn_pth;
    long yield_iters, cond_iters, futex_iters, raw_iters, handoff_iters;
    long skynet_weft, skynet_pth;
    long mem_weft, mem_pth;
    long scale_leaves, scale_work;
    long chan_msgs;             /* both, buffered; weft, unbuffered */
    long chan_sync_pth;         /* pthreads, unbuffered: a rendezvous costs far more */
    long lock_iters;            /* per task */
    uint64_t serve_ns;          /* timed part of one server run */
    long timer_weft, timer_pth; /* sleepers */
};

extern struct bench_opt opt;

typedef struct { double med, min, max; } figure;

typedef struct {
    const char *workload;  /* short id for the CSV */
    const char *what;      /* what was measured, for people */
    const char *unit;
    const char *label;       /* the weft side's name in the table; NULL: "weft" */
    const char *other;       /* the other side's; NULL: "pthreads" (the CSV's columns keep that name) */
    figure weft, pth;
    int  has_pth;
    int  higher;             /* higher is better: a rate, a speed-up */
    figure ratio;            /* weft / pthreads, median of per-run ratios */
} row;

/* Adds a table and CSV row from n runs of each side (p NULL: weft only).
 * Returns the new row, so that a caller can mark it: add_row(...)->higher = 1. */
row *add_row(const char *workload, const char *what, const char *unit,
             const double *w, const double *p, int n);

/* A wrong result: prints it and makes the exit status 1; the run goes on. */
void fail(const char *what);
/* Exits with a message when rc, a negative errno, says a call failed. */
void check(int rc, const char *what);

uint64_t now_ns(void);
int ncpus(void);
/* A progress line on stderr, rewritten in place when stderr is a terminal. */
void progress(const char *what, int run, int runs);
void progress_done(void);

/* The compute kernel: a fixed amount of integer mixing. */
uint64_t work(uint64_t seed, long n);

/* The workloads outside weft-bench.c. */
void bench_server(void);          /* server.c */

#endif
