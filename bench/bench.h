/* SPDX-License-Identifier: MIT */
/*
 * What the parts of weft-bench share. Private to the bench program.
 *
 *   weft-bench.c   the driver: options and sizes, the list of workloads
 *                  (list.h), running them; the helpers every workload uses
 *   report.c       statistics, the result rows, the table, the CSV files,
 *                  the SVG charts and the progress line
 *   NAME.c         one workload each, entry point bench_NAME(); scale.c is
 *                  the `scale` command, which runs kernels of skynet.c,
 *                  scaling.c, chan.c and server.c at several worker counts
 *
 * A workload runs each side (weft, pthreads) opt.runs times, checks every
 * answer it gets (fail() on a wrong one; timing never decides the exit
 * status) and hands its per-run figures to add_row(). It reports what it is
 * doing through progress_run() and progress_note().
 */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- options and sizes (weft-bench.c) ------------------------------------- */

enum { RUNS_MAX = 64 };   /* per-run arrays are this long */

struct bench_opt {
    int         full;          /* --full: the careful sizes; else --quick */
    int         runs;          /* runs per figure, 1..RUNS_MAX */
    unsigned    workers;       /* weft's workers; 0 = every CPU this process may use */
    const char *dir;           /* where the CSV files and charts go */
    int         explain;       /* --explain: each row's full description after the table */
    int         force;         /* scale: every worker count, even above the CPUs */
    const char *go_dir;        /* scale: where the built Go programs are, or NULL */
    /* sizes, set from --quick / --full */
    long spawn_weft, spawn_pth;
    long yield_iters, cond_iters, futex_iters, raw_iters, handoff_iters;
    long skynet_weft, skynet_pth;
    long mem_weft, mem_pth;
    long scale_leaves, scale_work;
    long chan_msgs;            /* both, buffered; weft, unbuffered */
    long chan_sync_pth;        /* pthreads, unbuffered: a rendezvous costs far more */
    long lock_iters;           /* per task */
    uint64_t serve_ns;         /* timed part of one server run */
    long kv_requests;          /* kv: requests per redis-benchmark test */
    long timer_weft, timer_pth;/* sleepers */
    long mixed_waiters;        /* tasks blocked on a pipe each */
    uint64_t mixed_ns;         /* timed part of one mixed run */
};

extern struct bench_opt opt;

/* ---- the workloads (list.h) and the scale command (scale.c) --------------- */

#define WORKLOAD(name, summary) void bench_##name(void);
#include "list.h"
#undef WORKLOAD

void bench_scale(void);

/*
 * Kernels the scale command runs at several worker counts. Each checks its
 * own answer (fail() on a wrong one) and returns one figure.
 */
double skynet_weft_ms(unsigned workers, long leaves);        /* skynet.c */
void   forkjoin_prepare(void);                               /* scaling.c: the expected sum */
double forkjoin_weft_ms(unsigned workers);
double forkjoin_pthreads_ms(int threads);
double chan_weft_rate(unsigned workers, size_t cap, int pairs);   /* chan.c: M msg/s */
double chan_pthreads_rate(size_t cap, int pairs);

/* The servers of server.c: weft's on an IO backend (WEFT_IO_URING,
 * WEFT_IO_EPOLL), or one of the two baselines. */
enum { SERVE_THREADS = 0, SERVE_EPOLL_LOOP = -1 };
typedef struct { double rate, p50, p99; } serve_fig;   /* k req/s, us, us */
void      serve_setup(void);           /* once, before serve_once */
int       serve_backend_works(int backend);
serve_fig serve_once(int server, int nconn, unsigned workers);

/* ---- helpers (weft-bench.c) ----------------------------------------------- */

uint64_t now_ns(void);
/* The CPUs this process may run on. */
int ncpus(void);
/* weft's workers for a run: opt.workers, or every CPU. */
unsigned workers(void);
/* The compute kernel: n steps of integer mixing, seeded. */
uint64_t work(uint64_t seed, long n);

/* A wrong result: prints it and makes the exit status 1; the run goes on. */
void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int  failures(void);
/* Exits with a message when rc, a negative errno, says a call failed. */
void check(int rc, const char *what);
/* pthread_create, or exit: a workload cannot go on without its threads. */
void start_thread(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
/* Raises the soft limit on descriptors to the hard one; returns the soft one. */
long raise_nofile(void);
/* n with a comma between groups of three digits: 100000 as "100,000". */
const char *grouped(char *buf, size_t len, long n);

/* ---- statistics (report.c) ------------------------------------------------ */

/* The median of some runs and their least and greatest. */
typedef struct { double med, min, max; } figure;

/* The figure of n values (1..RUNS_MAX). The one median of weft-bench. */
figure summarize(const double *v, int n);
/* A figure made of its parts, for a figure derived from others. */
figure figure_of(double med, double min, double max);
/* Sorts n samples in place; then sample_at gives the one at fraction p
 * (0..1) of the way through them, by nearest rank below. */
void    sort_samples(int64_t *v, long n);
int64_t sample_at(const int64_t *sorted, long n, double p);

/* ---- result rows (report.c) ----------------------------------------------- */

/* How a row is read: lower is better (and the word for it), or higher. */
enum better { FASTER, LESS, LOWER, MORE };

typedef struct row {
    const char *group;     /* the workload it belongs to */
    const char *id;        /* its key in results.csv */
    const char *measure;   /* a few words for the table */
    const char *unit;
    enum better better;
    const char *detail;    /* what each side does, for results.csv and --explain */
    const char *label;     /* the weft side's name; NULL: "weft" */
    const char *other;     /* the other side's name; NULL: "pthreads" */
    figure weft, vs;
    int has_weft, has_vs;
    double run_ratio;      /* the median of the per-run ratios weft/vs; 0 if none */
    int in_table;          /* 0: results.csv and the charts only */
} row;

/*
 * Adds a row from n runs of each side; w or p NULL: that side has no figure.
 * The row is in the table; the caller may change its label, other, detail
 * and in_table through the pointer returned.
 */
row *add_row(const char *group, const char *id, const char *measure, const char *unit,
             enum better better, const double *w, const double *p, int n);
/* The same from figures already made (a speed-up is a ratio of medians). */
row *add_row_fig(const char *group, const char *id, const char *measure, const char *unit,
                 enum better better, const figure *w, const figure *p);
/* The rows so far, for a workload's own chart. */
row *rows_of(const char *group, int *n);
/* ratio of the row's medians as the table prints it: the winner and by how
 * much, e.g. "weft 2.05x less". */
const char *row_verdict(const row *r, char *buf, size_t len);

/* ---- output (report.c) ---------------------------------------------------- */

/* Opens name in opt.dir for writing, and remembers it for the closing lines. */
FILE *open_out(const char *name);
void  close_out(FILE *f);
void  print_table(void);
void  print_details(void);
void  write_results_csv(void);
/* The closing lines: which files were written, and where. */
void  print_outputs(void);
/* A line printed under the table: a part skipped here, and why. */
void  add_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- charts (report.c) ---------------------------------------------------- */

enum { COLOR_WEFT, COLOR_PTHREADS, COLOR_REF, COLOR_GO, COLOR_ALT, COLOR_IDEAL };

typedef struct {
    const char *label;
    figure fig;            /* the bar is fig.med; a whisker spans min..max */
    int color;
} bar;

enum { PANEL_BARS_MAX = 6 };
typedef struct {
    char  title[160];
    const char *unit;
    int   higher;          /* higher is better */
    int   n;
    bar   bars[PANEL_BARS_MAX];
} panel;

/* One chart of horizontal bar panels, each on its own scale. */
void chart_panels(const char *file, const char *title, const panel *p, int n);
/* A panel per row of group, weft's bar against the other side's. */
void chart_group(const char *file, const char *title, const char *group);
/* Every row of the table: by how much the winner wins, on a log scale. */
void chart_overview(const char *file);

enum { LINES_SERIES_MAX = 5, LINES_POINTS_MAX = 64 };
typedef struct {
    char  title[120];
    const char *ylabel;
    int   n;                                  /* points */
    int   x[LINES_POINTS_MAX];                /* worker counts */
    int   nseries;
    const char *label[LINES_SERIES_MAX];
    int   color[LINES_SERIES_MAX];
    int   dashed[LINES_SERIES_MAX];
    double y[LINES_SERIES_MAX][LINES_POINTS_MAX];   /* <= 0: no point */
} lines;

/* One chart of line panels side by side, two to a row. */
void chart_lines(const char *file, const char *title, const lines *l, int n);

/* ---- progress (report.c) -------------------------------------------------- */

/*
 * One line on stderr, rewritten in place when stderr is a terminal: the step,
 * the run, what the run is doing now and the time the step has taken. A log
 * (stderr not a terminal) gets one line per step only.
 */
void progress_step(int index, int count, const char *name, const char *summary);
void progress_run(int run, int runs);
/* What the run is doing now, shown at once: call it as a run moves from one
 * part to the next. */
void progress_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same for a count within a part (how many tasks have started): shown at
 * most every tenth of a second, so a loop may call it on every turn. */
void progress_tick(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void progress_clear(void);

#endif
