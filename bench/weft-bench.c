/*
 * weft-bench: the same workloads run with weft coroutines and with plain
 * pthreads, side by side.
 *
 *   weft-bench [all|spawn|switch|skynet|memory|scaling|chan|lock|timers|server]
 *              [--quick|--full] [--runs N] [--csv DIR] [--workers N]
 *
 * Method. Each figure is the median of --runs runs, shown with the spread
 * (min..max) of those runs. Within one run the weft and the pthreads variants
 * run back to back, and the weft/pthreads ratio is the median of the per-run
 * ratios, so slow drift of the machine cancels out. Memory figures come from
 * VmRSS in /proc/self/status, read in a child process forked for each run, so
 * that one run's pools cannot flatter the next.
 *
 * Every workload checks its own result (skynet's sum, each joined task's own
 * result, the token count, every channel message received exactly once, the
 * counter a lock protects, no sleeper waking before its deadline, every reply
 * of the server equal to its request); a
 * wrong answer prints a message and the program exits with status 1. Timing
 * never decides the exit status.
 *
 * Output: a table on stdout, results.csv, scaling.csv and memory.csv plus
 * scaling.svg and memory.svg (drawn here, no plotting tool needed) in the
 * --csv directory, default ./weft-bench-results.
 *
 * The raw-switch row calls weft__ctx_swap, which is internal to the runtime
 * (arch/ctx.h): it measures the assembly switch alone, under the scheduler.
 *
 * The network server workload, with its own client, is in server.c; bench.h
 * is what the workloads share with this driver.
 */
#include "bench.h"

#include <weft.h>
#include "ctx.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- options and sizes ---------------------------------------------------- */

struct bench_opt opt;

static int failures;

void fail(const char *what)
{
    fprintf(stderr, "\nweft-bench: FAILED: %s\n", what);
    failures++;
}

void check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "\nweft-bench: %s failed: %s\n", what, strerror(-rc));
        exit(1);
    }
}

uint64_t now_ns(void) { return weft_now(); }

int ncpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* A progress line on stderr, rewritten in place when stderr is a terminal. */
void progress(const char *what, int run, int runs)
{
    if (isatty(2))
        fprintf(stderr, "\r\033[K  running: %s, run %d of %d", what, run, runs);
    else if (run == 1)
        fprintf(stderr, "  running: %s (%d runs)\n", what, runs);
}

void progress_done(void)
{
    if (isatty(2))
        fprintf(stderr, "\r\033[K");
}

/* ---- statistics and the result table -------------------------------------- */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static figure summarize(const double *v, int n)
{
    double s[64];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_d);
    figure r = { n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, s[0], s[n - 1] };
    return r;
}

static row rows[64];
static int nrows;

row *add_row(const char *workload, const char *what, const char *unit,
             const double *w, const double *p, int n)
{
    if (nrows == (int)(sizeof rows / sizeof rows[0])) {
        fprintf(stderr, "weft-bench: more than %d rows; enlarge rows[]\n", nrows);
        exit(1);
    }
    row *r = &rows[nrows++];
    r->workload = workload;
    r->what = what;
    r->unit = unit;
    r->label = NULL;
    r->other = NULL;
    r->weft = summarize(w, n);
    r->has_pth = p != NULL;
    if (p) {
        double q[64];
        r->pth = summarize(p, n);
        for (int i = 0; i < n; i++)
            q[i] = w[i] / p[i];
        r->ratio = summarize(q, n);
    }
    return r;
}

static void fmt_stat(char *buf, size_t len, figure s)
{
    if (s.med >= 100)
        snprintf(buf, len, "%.0f (%.0f..%.0f)", s.med, s.min, s.max);
    else if (s.med >= 10)
        snprintf(buf, len, "%.1f (%.1f..%.1f)", s.med, s.min, s.max);
    else
        snprintf(buf, len, "%.2f (%.2f..%.2f)", s.med, s.min, s.max);
}

/* n with a comma between each group of three digits: 100000 as "100,000". */
static void grouped(char *buf, size_t len, long n)
{
    char d[32];
    int k = snprintf(d, sizeof d, "%ld", n), o = 0;
    for (int i = 0; i < k && o + 2 < (int)len; i++) {
        if (i > 0 && d[i - 1] != '-' && (k - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = d[i];
    }
    buf[o] = '\0';
}

static void print_table(void)
{
    int width = (int)strlen("pthreads");   /* the label column fits the longest label */
    for (int i = 0; i < nrows; i++) {
        if (rows[i].label && (int)strlen(rows[i].label) > width)
            width = (int)strlen(rows[i].label);
        if (rows[i].other && (int)strlen(rows[i].other) > width)
            width = (int)strlen(rows[i].other);
    }
    printf("\nweft vs pthreads: median of %d runs, (min..max) across runs; "
           "lower is better unless stated\n\n", opt.runs);
    for (int i = 0; i < nrows; i++) {
        row *r = &rows[i];
        char w[64], p[64];
        fmt_stat(w, sizeof w, r->weft);
        printf("%s\n", r->what);
        printf("    %-*s  %-28s %s\n", width, r->label ? r->label : "weft", w, r->unit);
        if (r->has_pth) {
            fmt_stat(p, sizeof p, r->pth);
            const char *other = r->other ? r->other : "pthreads";
            printf("    %-*s  %-28s %s\n", width, other, p, r->unit);
            const char *verb = r->higher ? "reaches" : "takes";
            const char *who = r->label ? r->label : "weft";
            if (r->ratio.med < 1)
                printf("    => %s %s %.3gx the %s figure (%.3gx less)\n",
                       who, verb, r->ratio.med, other, 1 / r->ratio.med);
            else
                printf("    => %s %s %.3gx the %s figure\n", who, verb, r->ratio.med, other);
        }
        printf("\n");
    }
}

static FILE *open_out(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", opt.dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "weft-bench: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    return f;
}

static void write_csv(void)
{
    FILE *f = open_out("results.csv");
    fprintf(f, "workload,measure,unit,weft_median,weft_min,weft_max,"
               "pthreads_median,pthreads_min,pthreads_max,ratio_weft_over_pthreads,runs\n");
    for (int i = 0; i < nrows; i++) {
        row *r = &rows[i];
        fprintf(f, "%s,\"%s\",%s,%.3f,%.3f,%.3f,", r->workload, r->what, r->unit,
                r->weft.med, r->weft.min, r->weft.max);
        if (r->has_pth)
            fprintf(f, "%.3f,%.3f,%.3f,%.4f,%d\n", r->pth.med, r->pth.min, r->pth.max,
                    r->ratio.med, opt.runs);
        else
            fprintf(f, ",,,,%d\n", opt.runs);
    }
    fclose(f);
}

/* ---- SVG charts ----------------------------------------------------------- */

static void svg_head(FILE *f, int w, int h, const char *title)
{
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
               "<text x=\"%d\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">%s</text>\n",
            w, h, w / 2, title);
}

/* A line chart: series[s][i] over x = 1..n; ymax sets the scale. */
static void svg_lines(const char *name, const char *title, const char *xlabel,
                      const char *ylabel, int n, int nseries, const double *series,
                      const char *const *labels, double ymax)
{
    static const char *colors[] = { "#1f77b4", "#d62728", "#888888", "#2ca02c" };
    const int W = 560, H = 360, L = 60, R = 150, T = 40, B = 50;
    const int pw = W - L - R, ph = H - T - B;
    FILE *f = open_out(name);
    svg_head(f, W, H, title);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n",
            L, T + ph, L + pw, T + ph);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n",
            L, T, L, T + ph);
    for (int k = 0; k <= 4; k++) {
        double v = ymax * k / 4;
        int y = T + ph - (int)(ph * k / 4);
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#eeeeee\"/>\n"
                   "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.2g</text>\n",
                L + 1, y, L + pw, y, L - 5, y + 4, v);
    }
    for (int i = 0; i < n; i++) {
        int x = L + (n == 1 ? pw / 2 : pw * i / (n - 1));
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n",
                x, T + ph + 16, i + 1);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
            L + pw / 2, H - 10, xlabel);
    fprintf(f, "<text transform=\"translate(15,%d) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
            T + ph / 2, ylabel);
    for (int s = 0; s < nseries; s++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
                colors[s % 4], s == nseries - 1 ? " stroke-dasharray=\"4 3\"" : "");
        for (int i = 0; i < n; i++) {
            int x = L + (n == 1 ? pw / 2 : pw * i / (n - 1));
            int y = T + ph - (int)(ph * series[s * n + i] / ymax);
            fprintf(f, "%d,%d ", x, y);
        }
        fprintf(f, "\"/>\n");
        for (int i = 0; i < n; i++) {
            int x = L + (n == 1 ? pw / 2 : pw * i / (n - 1));
            int y = T + ph - (int)(ph * series[s * n + i] / ymax);
            fprintf(f, "<circle cx=\"%d\" cy=\"%d\" r=\"3\" fill=\"%s\"/>\n", x, y, colors[s % 4]);
        }
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"3\" fill=\"%s\"/>"
                   "<text x=\"%d\" y=\"%d\">%s</text>\n",
                L + pw + 15, T + 10 + 20 * s, colors[s % 4], L + pw + 32, T + 15 + 20 * s,
                labels[s]);
    }
    fprintf(f, "</svg>\n");
    fclose(f);
}

/* A horizontal bar chart: one bar per value, labelled. */
static void svg_bars(const char *name, const char *title, const char *unit, int n,
                     const double *v, const char *const *labels)
{
    const int W = 640, L = 230, R = 110, T = 40, BH = 28;
    const int H = T + n * (BH + 10) + 20, pw = W - L - R;
    double vmax = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > vmax)
            vmax = v[i];
    if (vmax <= 0)
        vmax = 1;
    FILE *f = open_out(name);
    svg_head(f, W, H, title);
    for (int i = 0; i < n; i++) {
        int y = T + i * (BH + 10);
        int w = (int)(pw * v[i] / vmax);
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n"
                   "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"/>\n"
                   "<text x=\"%d\" y=\"%d\">%.1f %s</text>\n",
                L - 8, y + BH / 2 + 4, labels[i], L, y, w < 1 ? 1 : w, BH,
                i == 0 ? "#1f77b4" : "#d62728", L + w + 5, y + BH / 2 + 4, v[i], unit);
    }
    fprintf(f, "</svg>\n");
    fclose(f);
}

/* ---- plain-thread helpers ------------------------------------------------- */

static void *thread_nop(void *arg) { return arg; }

/* pthread_create, or exit: a workload cannot go on without its threads. */
static void start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc != 0) {
        fprintf(stderr, "\nweft-bench: pthread_create failed: %s\n", strerror(rc));
        exit(1);
    }
}

static int futex(atomic_int *addr, int op, int val)
{
    return (int)syscall(SYS_futex, (int *)addr, op, val, NULL, NULL, 0);
}

/* ---- spawn + join ---------------------------------------------------------- */

/* Returns its argument: the join's result proves that this very coroutine
 * ran, with no shared counter for the tasks to contend on (Go's counterpart
 * in bench/compare/go/spawn.go closes a channel of its own). */
static void *task_nop(void *arg)
{
    return arg;
}

/*
 * The least a fresh runtime's first round must do: write n task handles to
 * memory new to the process. HANDLE_BYTES is a handle's size on x86-64 and
 * AArch64 (two cache lines; runtime/internal.h pins it), and the mapping asks
 * for huge pages as the runtime's handle slabs do. On a virtual machine that
 * hands freed memory back to its host, pages freed a moment ago cost a tenth
 * of the others or less, and whoever maps first gets them; so spawn_root
 * writes one such mapping before its first round and one after, keeps both
 * until the round is over, and the figure is their mean.
 */
#define HANDLE_BYTES 128u

struct touched {
    void  *mem;
    size_t len;
};

/* ns per handle; *m: the mapping, to unmap once the round is over. */
static double first_touch(long n, struct touched *m)
{
    m->len = (size_t)n * HANDLE_BYTES;
    m->mem = mmap(NULL, m->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m->mem == MAP_FAILED) {
        m->mem = NULL;
        fail("spawn: mmap for the first-touch row");
        return 0;
    }
    madvise(m->mem, m->len, MADV_HUGEPAGE);   /* advice, as for the slabs */
    uint64_t t0 = now_ns();
    memset(m->mem, 1, m->len);
    return (double)(now_ns() - t0) / (double)n;
}

static void untouch(struct touched *m)
{
    if (m->mem)
        munmap(m->mem, m->len);
}

/* Spawns n trivial coroutines, then joins them all, twice in the same
 * runtime; arg: ns per task in each round, then first_touch's figure around
 * the first round. The first round's memory is new to the runtime, the second
 * reuses it. The handle array is touched before the clock starts: its page
 * faults are the benchmark's, not the spawns'. */
static void *spawn_root(void *arg)
{
    long n = opt.spawn_weft;
    weft_task **t = malloc((size_t)n * sizeof *t);
    if (!t)
        return NULL;
    memset(t, 0, (size_t)n * sizeof *t);
    double *out = arg;
    struct touched before, after;
    double touch = first_touch(n, &before);
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            touch += first_touch(n, &after);
            out[2] = touch / 2;
            untouch(&before);
            untouch(&after);
        }
        long wrong = 0;
        uint64_t t0 = now_ns();
        for (long i = 0; i < n; i++)
            check(weft_spawn(&t[i], task_nop, (void *)(i + 1)), "weft_spawn");
        for (long i = 0; i < n; i++) {
            void *r;
            check(weft_join(t[i], &r), "weft_join");
            wrong += r != (void *)(i + 1);
        }
        uint64_t t1 = now_ns();
        if (wrong)
            fail("spawn: a join did not return its own coroutine's result");
        out[round] = (double)(t1 - t0) / (double)n;
    }
    free(t);
    return NULL;
}

/* Spawns and joins n trivial coroutines one at a time; *arg: ns per task. */
static void *spawn_each(void *arg)
{
    long n = opt.spawn_weft, wrong = 0;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        weft_task *t;
        void *r;
        check(weft_spawn(&t, task_nop, (void *)(i + 1)), "weft_spawn");
        check(weft_join(t, &r), "weft_join");
        wrong += r != (void *)(i + 1);
    }
    uint64_t t1 = now_ns();
    if (wrong)
        fail("spawn: a join did not return its own coroutine's result");
    double *out = arg;
    *out = (double)(t1 - t0) / (double)n;
    return NULL;
}

/* pthread_create + pthread_join; `batch` threads at a time. */
static double spawn_pthreads(int batch)
{
    pthread_t t[100];
    long n = opt.spawn_pth;
    uint64_t t0 = now_ns();
    for (long done = 0; done < n; done += batch) {
        int k = 0;
        for (; k < batch && done + k < n; k++)
            if (pthread_create(&t[k], NULL, thread_nop, NULL) != 0) {
                fail("spawn: pthread_create");
                return 0;
            }
        for (int j = 0; j < k; j++)
            pthread_join(t[j], NULL);
    }
    return (double)(now_ns() - t0) / (double)n;
}

static void bench_spawn(void)
{
    double w[64], w2[64], p[64], w1[64], p1[64], touch[64];
    weft_config cfg = { .workers = opt.workers };
    for (int r = 0; r < opt.runs; r++) {
        progress("spawn + join", r + 1, opt.runs);
        double rounds[3] = { 0 };
        check(weft_main(&cfg, spawn_root, rounds, NULL), "weft_main");
        touch[r] = rounds[2];
        w[r] = rounds[0];
        w2[r] = rounds[1];
        p[r] = spawn_pthreads(100);
        check(weft_main(&cfg, spawn_each, &w1[r], NULL), "weft_main");
        p1[r] = spawn_pthreads(1);
    }
    progress_done();
    static char what[200], what1[200], what2[200];
    snprintf(what, sizeof what,
             "Start a task that does nothing and wait for it to finish (time per task;\n"
             "  weft: %ld coroutines spawned, then all joined; pthreads: %ld pthread_create+join, 100 at a time)",
             opt.spawn_weft, opt.spawn_pth);
    add_row("spawn_join", what, "ns/task", w, p, opt.runs);
    static char what3[300];
    snprintf(what3, sizeof what3,
             "The first round above against the least it must do: write %ld handles of\n"
             "  %u bytes to memory new to the process (memset; in each run, the mean of one\n"
             "  such write just before the round and one just after it)",
             opt.spawn_weft, HANDLE_BYTES);
    add_row("spawn_join_vs_first_touch", what3, "ns/task", w, touch, opt.runs)->other = "first touch";
    snprintf(what2, sizeof what2,
             "The same again in the same runtime, whose memory the first round left\n"
             "  (weft: %ld spawned, then all joined; pthreads as above)", opt.spawn_weft);
    add_row("spawn_join_again", what2, "ns/task", w2, p, opt.runs);
    snprintf(what1, sizeof what1,
             "The same one at a time: spawn, then join, %ld times (pthreads: %ld times)",
             opt.spawn_weft, opt.spawn_pth);
    add_row("spawn_join_each", what1, "ns/task", w1, p1, opt.runs);
}

/* ---- switch cost ------------------------------------------------------------ */

/* Raw: two contexts swap back and forth with the internal assembly routine. */
static weft__ctx raw_main, raw_other;
static long raw_left;

static void raw_entry(void *arg)
{
    (void)arg;
    for (;;)
        weft__ctx_swap(&raw_other, &raw_main);
}

static double raw_switch(void)
{
    size_t sz = 64 * 1024;
    char *stack = malloc(sz);
    weft__ctx_init(&raw_other, stack, stack + sz, raw_entry, NULL);
    long n = opt.raw_iters;
    uint64_t t0 = now_ns();
    for (raw_left = n; raw_left > 0; raw_left--)
        weft__ctx_swap(&raw_main, &raw_other);
    uint64_t t1 = now_ns();
    free(stack);
    return (double)(t1 - t0) / (2.0 * (double)n);
}

/* weft_yield between two coroutines on one worker. */
static atomic_long yields;

static void *yielder(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++) {
        atomic_fetch_add_explicit(&yields, 1, memory_order_relaxed);
        weft_yield();
    }
    return NULL;
}

static void *yield_root(void *arg)
{
    weft_task *a, *b;
    long n = opt.yield_iters;
    atomic_store(&yields, 0);
    uint64_t t0 = now_ns();
    check(weft_spawn(&a, yielder, (void *)(intptr_t)n), "weft_spawn");
    check(weft_spawn(&b, yielder, (void *)(intptr_t)n), "weft_spawn");
    check(weft_join(a, NULL), "weft_join");
    check(weft_join(b, NULL), "weft_join");
    uint64_t t1 = now_ns();
    if (atomic_load(&yields) != 2 * n)
        fail("switch: yield count");
    *(double *)arg = (double)(t1 - t0) / (2.0 * (double)n);
    return NULL;
}

/* pthreads: mutex + condvar ping-pong of a token. */
static struct {
    pthread_mutex_t m;
    pthread_cond_t  c;
    long turn;       /* even: thread A's turn, odd: B's */
    long n;
} pp = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };

static void *cond_player(void *arg)
{
    long me = (long)(intptr_t)arg;
    pthread_mutex_lock(&pp.m);
    while (pp.turn < 2 * pp.n) {
        while ((pp.turn & 1) != me && pp.turn < 2 * pp.n)
            pthread_cond_wait(&pp.c, &pp.m);
        if (pp.turn >= 2 * pp.n)
            break;
        pp.turn++;
        pthread_cond_signal(&pp.c);
    }
    pthread_mutex_unlock(&pp.m);
    return NULL;
}

static double cond_pingpong(void)
{
    pthread_t a, b;
    pp.turn = 0;
    pp.n = opt.cond_iters;
    uint64_t t0 = now_ns();
    pthread_create(&a, NULL, cond_player, (void *)0);
    pthread_create(&b, NULL, cond_player, (void *)1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    uint64_t t1 = now_ns();
    if (pp.turn != 2 * pp.n)
        fail("switch: condvar token count");
    return (double)(t1 - t0) / (2.0 * (double)pp.n);
}

/* pthreads: a futex word flips between 0 (A's turn) and 1 (B's turn). The
 * player whose turn it is counts the hand-over in ftoken, so a turn taken
 * twice or skipped shows in the final count. */
static atomic_int fword;
static long fiters;
static long ftoken;   /* written only by the player whose turn it is */

static void *futex_player(void *arg)
{
    int me = (int)(intptr_t)arg;
    for (long i = 0; i < fiters; i++) {
        int v;
        while ((v = atomic_load_explicit(&fword, memory_order_acquire)) != me)   /* pairs with the other's release */
            futex(&fword, FUTEX_WAIT_PRIVATE, v);
        ftoken++;
        atomic_store_explicit(&fword, !me, memory_order_release);   /* hands ftoken over */
        futex(&fword, FUTEX_WAKE_PRIVATE, 1);
    }
    return NULL;
}

static double futex_pingpong(void)
{
    pthread_t a, b;
    atomic_store(&fword, 0);
    fiters = opt.futex_iters;
    ftoken = 0;
    uint64_t t0 = now_ns();
    start_thread(&a, futex_player, (void *)0);
    start_thread(&b, futex_player, (void *)1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    uint64_t t1 = now_ns();
    if (ftoken != 2 * fiters || atomic_load(&fword) != 0)
        fail("switch: futex token count");
    return (double)(t1 - t0) / (2.0 * (double)fiters);
}

/* weft: a token goes out on one unbuffered channel and comes back, one higher,
 * on another; each leg is one hand-over from coroutine to coroutine. */
static weft_chan *ping, *pong;

static void *chan_echo(void *arg)
{
    long n = (long)(intptr_t)arg;
    uint64_t tok;
    for (long i = 0; i < n; i++) {
        check(weft_chan_recv(ping, &tok), "weft_chan_recv");
        tok++;
        check(weft_chan_send(pong, &tok), "weft_chan_send");
    }
    return NULL;
}

static void *handoff_root(void *arg)
{
    long n = opt.handoff_iters;
    uint64_t tok = 0;
    weft_task *t;
    check(weft_chan_create(&ping, sizeof tok, 0), "weft_chan_create");
    check(weft_chan_create(&pong, sizeof tok, 0), "weft_chan_create");
    check(weft_spawn(&t, chan_echo, (void *)(intptr_t)n), "weft_spawn");
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        tok++;
        check(weft_chan_send(ping, &tok), "weft_chan_send");
        check(weft_chan_recv(pong, &tok), "weft_chan_recv");
    }
    uint64_t t1 = now_ns();
    check(weft_join(t, NULL), "weft_join");
    check(weft_chan_destroy(ping), "weft_chan_destroy");
    check(weft_chan_destroy(pong), "weft_chan_destroy");
    if (tok != 2 * (uint64_t)n)
        fail("switch: channel token count");
    *(double *)arg = (double)(t1 - t0) / (2.0 * (double)n);
    return NULL;
}

static void bench_switch(void)
{
    double raw[64], y[64], ch[64], c[64], fx[64];
    weft_config one = { .workers = 1 };
    for (int r = 0; r < opt.runs; r++) {
        progress("switch cost", r + 1, opt.runs);
        raw[r] = raw_switch();
        check(weft_main(&one, yield_root, &y[r], NULL), "weft_main");
        check(weft_main(&one, handoff_root, &ch[r], NULL), "weft_main");
        c[r] = cond_pingpong();
        fx[r] = futex_pingpong();
    }
    progress_done();
    add_row("switch_yield_vs_condvar",
            "Hand a token between two tasks (time per hand-over;\n"
            "  weft: weft_yield between two coroutines on one worker; pthreads: mutex+condvar)",
            "ns/switch", y, c, opt.runs);
    add_row("switch_yield_vs_futex",
            "Hand a token between two tasks (time per hand-over;\n"
            "  weft: weft_yield on one worker; pthreads: a bare futex wait/wake ping-pong,\n"
            "  hand-overs counted and checked)",
            "ns/switch", y, fx, opt.runs);
    add_row("switch_chan_vs_futex",
            "Hand a token between two tasks through a channel (time per one-way hand-over;\n"
            "  weft: two coroutines on one worker, unbuffered weft_chan each way, token\n"
            "  checked; pthreads: a bare futex wait/wake ping-pong)",
            "ns/switch", ch, fx, opt.runs);
    add_row("switch_raw_vs_futex",
            "Raw context switch, no scheduler (time per switch;\n"
            "  weft: the internal weft__ctx_swap alone; pthreads: futex ping-pong)",
            "ns/switch", raw, fx, opt.runs);
}

/* ---- skynet ------------------------------------------------------------------ */

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

static void bench_skynet(void)
{
    double w[64], p[64];
    weft_config cfg = { .workers = opt.workers };
    pthread_attr_init(&sky_attr);
    pthread_attr_setstacksize(&sky_attr, 64 * 1024);
    for (int r = 0; r < opt.runs; r++) {
        progress("skynet", r + 1, opt.runs);
        sky_arg a = { 0, opt.skynet_weft };
        void *res;
        uint64_t t0 = now_ns();
        check(weft_main(&cfg, skynet_weft, &a, &res), "weft_main");
        w[r] = (double)(now_ns() - t0) / 1e6;
        long n = opt.skynet_weft;
        if ((long)(intptr_t)res != n * (n - 1) / 2) {
            char msg[128];
            snprintf(msg, sizeof msg, "skynet (weft) sum %ld, expected %ld",
                     (long)(intptr_t)res, n * (n - 1) / 2);
            fail(msg);
        }
        sky_arg b = { 0, opt.skynet_pth };
        pthread_t root;
        t0 = now_ns();
        pthread_create(&root, &sky_attr, skynet_pth, &b);
        pthread_join(root, &res);
        p[r] = (double)(now_ns() - t0) / 1e6;
        n = opt.skynet_pth;
        if ((long)(intptr_t)res != n * (n - 1) / 2) {
            char msg[128];
            snprintf(msg, sizeof msg, "skynet (pthreads) sum %ld, expected %ld",
                     (long)(intptr_t)res, n * (n - 1) / 2);
            fail(msg);
        }
    }
    progress_done();
    pthread_attr_destroy(&sky_attr);
    /* Per-leaf figures make the two sizes comparable. */
    double wl[64], pl[64];
    for (int r = 0; r < opt.runs; r++) {
        wl[r] = w[r] * 1e6 / (double)opt.skynet_weft;
        pl[r] = p[r] * 1e6 / (double)opt.skynet_pth;
    }
    static char what1[200], what2[200];
    snprintf(what1, sizeof what1,
             "Skynet, whole run (weft: %ld leaf coroutines, fan-out 10, sum checked;\n"
             "  pthreads: %ld leaf threads, the most they manage; not the same size, see next row)",
             opt.skynet_weft, opt.skynet_pth);
    snprintf(what2, sizeof what2,
             "Skynet, time per leaf (the sizes above made comparable)");
    add_row("skynet_total", what1, "ms", w, p, opt.runs);
    add_row("skynet_per_leaf", what2, "ns/leaf", wl, pl, opt.runs);
}

/* ---- memory per blocked task -------------------------------------------------- */

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* A chain: coroutine i spawns i+1 and joins it; the last yields until released. */
static atomic_long mem_alive;
static atomic_int  mem_release;

static void *mem_link(void *arg)
{
    long left = (long)(intptr_t)arg;
    atomic_fetch_add_explicit(&mem_alive, 1, memory_order_relaxed);
    if (left > 1) {
        weft_task *t;
        check(weft_spawn(&t, mem_link, (void *)(intptr_t)(left - 1)), "weft_spawn");
        check(weft_join(t, NULL), "weft_join");
    } else {
        while (!atomic_load_explicit(&mem_release, memory_order_acquire))
            weft_yield();
    }
    return NULL;
}

/* In a child: bytes of RSS per blocked coroutine, or -1. */
static double mem_weft_child(long n, long *fit)
{
    weft_rt *rt;
    weft_task *t;
    weft_config cfg = { .workers = opt.workers };
    check(weft_rt_create(&rt, &cfg), "weft_rt_create");
    long before = rss_kib();
    atomic_store(&mem_alive, 0);
    atomic_store(&mem_release, 0);
    check(weft_spawn_on(rt, &t, mem_link, (void *)(intptr_t)n), "weft_spawn_on");
    while (atomic_load(&mem_alive) < n)
        usleep(1000);
    usleep(10000);
    long after = rss_kib();
    *fit = atomic_load(&mem_alive);
    atomic_store_explicit(&mem_release, 1, memory_order_release);
    check(weft_join(t, NULL), "weft_join");
    weft_rt_destroy(rt);
    return (double)(after - before) * 1024.0 / (double)n;
}

static pthread_mutex_t gate_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  gate_c = PTHREAD_COND_INITIALIZER;
static int gate_open;

static void *thread_blocked(void *arg)
{
    pthread_mutex_lock(&gate_m);
    while (!gate_open)
        pthread_cond_wait(&gate_c, &gate_m);
    pthread_mutex_unlock(&gate_m);
    return arg;
}

/* In a child: bytes of RSS per blocked thread; *fit = how many could start. */
static double mem_threads_child(long n, size_t stack, long *fit)
{
    pthread_t *t = calloc((size_t)n, sizeof *t);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (stack)
        pthread_attr_setstacksize(&attr, stack);
    gate_open = 0;
    long before = rss_kib(), k = 0;
    for (; k < n; k++)
        if (pthread_create(&t[k], &attr, thread_blocked, NULL) != 0)
            break;
    usleep(10000);
    long after = rss_kib();
    pthread_mutex_lock(&gate_m);
    gate_open = 1;
    pthread_cond_broadcast(&gate_c);
    pthread_mutex_unlock(&gate_m);
    for (long i = 0; i < k; i++)
        pthread_join(t[i], NULL);
    free(t);
    *fit = k;
    return k ? (double)(after - before) * 1024.0 / (double)k : -1;
}

/* Runs one measurement in a forked child so each run starts from a fresh heap. */
static double in_child(int which, long n, long *fit)
{
    int fd[2];
    double res[2] = { -1, 0 };
    if (pipe(fd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        long k = 0;
        double v = which == 0 ? mem_weft_child(n, &k)
                 : mem_threads_child(n, which == 1 ? 0 : 64 * 1024, &k);
        double out[2] = { v, (double)k };
        if (write(fd[1], out, sizeof out) != sizeof out)
            _exit(2);
        _exit(failures ? 1 : 0);
    }
    close(fd[1]);
    if (read(fd[0], res, sizeof res) != sizeof res)
        res[0] = -1;
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail("memory: the measuring child failed");
    *fit = (long)res[1];
    return res[0];
}

static double mem_bytes[3];
static long   mem_fit[3];

static void bench_memory(void)
{
    double w[64], pd[64], p64[64];
    long fw = 0, fd = 0, f64 = 0;
    for (int r = 0; r < opt.runs; r++) {
        progress("memory per blocked task", r + 1, opt.runs);
        w[r] = in_child(0, opt.mem_weft, &fw) / 1024.0;
        pd[r] = in_child(1, opt.mem_pth, &fd) / 1024.0;
        p64[r] = in_child(2, opt.mem_pth, &f64) / 1024.0;
    }
    progress_done();
    if (fw != opt.mem_weft)
        fail("memory: not every coroutine blocked");
    static char what1[240], what2[240];
    snprintf(what1, sizeof what1,
             "Memory (RSS) per blocked task, default stacks (weft: %ld coroutines, each\n"
             "  blocked in weft_join, 256 KiB stack reserved; pthreads: %ld of %ld threads\n"
             "  started, each blocked on a condvar, 8 MiB stack reserved)",
             fw, fd, opt.mem_pth);
    snprintf(what2, sizeof what2,
             "Memory (RSS) per blocked task, pthreads with 64 KiB stacks (%ld of %ld started)",
             f64, opt.mem_pth);
    add_row("memory_default", what1, "KiB/task", w, pd, opt.runs);
    add_row("memory_64k", what2, "KiB/task", w, p64, opt.runs);
    mem_bytes[0] = summarize(w, opt.runs).med;
    mem_bytes[1] = summarize(pd, opt.runs).med;
    mem_bytes[2] = summarize(p64, opt.runs).med;
    mem_fit[0] = fw;
    mem_fit[1] = fd;
    mem_fit[2] = f64;

    FILE *f = open_out("memory.csv");
    fprintf(f, "kind,tasks_started,tasks_asked,rss_kib_per_task_median\n");
    fprintf(f, "weft coroutine (256 KiB stack),%ld,%ld,%.3f\n", fw, opt.mem_weft, mem_bytes[0]);
    fprintf(f, "pthread (default stack),%ld,%ld,%.3f\n", fd, opt.mem_pth, mem_bytes[1]);
    fprintf(f, "pthread (64 KiB stack),%ld,%ld,%.3f\n", f64, opt.mem_pth, mem_bytes[2]);
    fclose(f);
    static const char *const labels[] = { "weft coroutine", "pthread, default stack",
                                          "pthread, 64 KiB stack" };
    svg_bars("memory.svg", "RSS per blocked task (lower is better)", "KiB", 3, mem_bytes, labels);
}

/* ---- multicore scaling -------------------------------------------------------- */

/* The compute kernel: a fixed amount of integer mixing per leaf. */
uint64_t work(uint64_t seed, long n)
{
    uint64_t x = seed | 1;
    for (long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

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

static double fj_run_weft(unsigned workers)
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

static double fj_run_pth(int nthreads)
{
    pthread_t t[WEFT_WORKERS_MAX];
    range r[WEFT_WORKERS_MAX];
    long per = opt.scale_leaves / nthreads, lo = 0;
    uint64_t t0 = now_ns(), sum = 0;
    for (int i = 0; i < nthreads; i++) {
        long hi = i == nthreads - 1 ? opt.scale_leaves : lo + per;
        r[i] = (range){ lo, hi, 0 };
        lo = hi;
        pthread_create(&t[i], NULL, fj_thread, &r[i]);
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

static void bench_scaling(void)
{
    int maxw = opt.workers ? (int)opt.workers : ncpus();
    if (maxw > 64)
        maxw = 64;
    fj_expected = 0;
    for (long i = 0; i < opt.scale_leaves; i++)
        fj_expected += work((uint64_t)i, opt.scale_work);
    double tw[64][64], tp[64][64];
    for (int r = 0; r < opt.runs; r++) {
        progress("multicore scaling", r + 1, opt.runs);
        for (int w = 1; w <= maxw; w++) {
            tw[w - 1][r] = fj_run_weft((unsigned)w);
            tp[w - 1][r] = fj_run_pth(w);
        }
    }
    progress_done();
    double series[3][64];
    FILE *f = open_out("scaling.csv");
    fprintf(f, "workers,weft_ms_median,weft_ms_min,weft_ms_max,weft_speedup,"
               "pthreads_ms_median,pthreads_ms_min,pthreads_ms_max,pthreads_speedup\n");
    figure w1 = summarize(tw[0], opt.runs), p1 = summarize(tp[0], opt.runs);
    for (int w = 1; w <= maxw; w++) {
        figure sw = summarize(tw[w - 1], opt.runs), sp = summarize(tp[w - 1], opt.runs);
        series[0][w - 1] = w1.med / sw.med;
        series[1][w - 1] = p1.med / sp.med;
        series[2][w - 1] = w;
        fprintf(f, "%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f\n", w, sw.med, sw.min, sw.max,
                series[0][w - 1], sp.med, sp.min, sp.max, series[1][w - 1]);
        if (w > 1) {
            static char what[8][200];
            double sw_r[64], sp_r[64];
            for (int r = 0; r < opt.runs; r++) {
                sw_r[r] = tw[0][r] / tw[w - 1][r];
                sp_r[r] = tp[0][r] / tp[w - 1][r];
            }
            if (w - 2 < 8) {
                snprintf(what[w - 2], sizeof what[0],
                         "Fork-join compute speed-up from 1 to %d workers, higher is better\n"
                         "  (%ld leaves of pure arithmetic; weft: recursive spawn/join tree;\n"
                         "  pthreads: %d threads, each one static slice)",
                         w, opt.scale_leaves, w);
                add_row("scaling_speedup", what[w - 2], "x", sw_r, sp_r, opt.runs)->higher = 1;
            }
        }
    }
    fclose(f);
    static char what1[160];
    snprintf(what1, sizeof what1, "Fork-join compute on 1 worker / 1 thread (whole run)");
    add_row("scaling_1_worker", what1, "ms", tw[0], tp[0], opt.runs);
    (void)p1;
    double flat[3 * 64];
    for (int s = 0; s < 3; s++)
        for (int w = 0; w < maxw; w++)
            flat[s * maxw + w] = series[s][w];
    static const char *const labels[] = { "weft", "pthreads", "ideal" };
    double ymax = maxw;
    for (int w = 0; w < maxw; w++)
        for (int s = 0; s < 2; s++)
            if (series[s][w] > ymax)
                ymax = series[s][w];
    svg_lines("scaling.svg", "Fork-join speed-up over 1 worker (higher is better)",
              "workers (threads)", "speed-up", maxw, 3, flat, labels, ymax * 1.1);
}

/* ---- channel throughput -------------------------------------------------------- */

/*
 * P producers send the values 1..M between them and P consumers receive them
 * until the channel is closed and drained. The consumers' count, sum and sum of
 * squares must all match: a lost and a duplicated message would have to cancel
 * out in both sums to go unnoticed. The time includes starting and joining the
 * 2P tasks, which is small beside M messages.
 */
enum { CHAN_PAIRS = 4, CHAN_CAP = 128 };

static long chan_n;                  /* M of the current run */
static int  chan_pairs = CHAN_PAIRS;  /* P of the current run, at most CHAN_PAIRS */

static struct {
    _Atomic uint64_t n, sum, sq;   /* added by each consumer as it ends */
} seen;

static void seen_add(uint64_t n, uint64_t sum, uint64_t sq)
{
    atomic_fetch_add_explicit(&seen.n, n, memory_order_relaxed);   /* read after the joins */
    atomic_fetch_add_explicit(&seen.sum, sum, memory_order_relaxed);
    atomic_fetch_add_explicit(&seen.sq, sq, memory_order_relaxed);
}

static void seen_reset(void)
{
    atomic_store(&seen.n, 0);
    atomic_store(&seen.sum, 0);
    atomic_store(&seen.sq, 0);
}

/* Fails unless 1..chan_n each arrived exactly once. */
static void seen_check(const char *who)
{
    uint64_t m = (uint64_t)chan_n, sum = 0, sq = 0;
    for (uint64_t v = 1; v <= m; v++) {     /* the same wrap-around as the consumers' */
        sum += v;
        sq += v * v;
    }
    uint64_t n = atomic_load(&seen.n);
    if (n != m || atomic_load(&seen.sum) != sum || atomic_load(&seen.sq) != sq) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s: %llu messages received of %llu sent, or their sum is "
                 "wrong (lost or duplicated messages)", who, (unsigned long long)n,
                 (unsigned long long)m);
        fail(msg);
    }
}

/* Producer i's share of the values: lo+1 .. hi. */
static void share(long i, uint64_t *lo, uint64_t *hi)
{
    *lo = (uint64_t)(chan_n * i / chan_pairs);
    *hi = (uint64_t)(chan_n * (i + 1) / chan_pairs);
}

static weft_chan *chan_q;

static void *chan_producer(void *arg)
{
    uint64_t lo, hi;
    share((long)(intptr_t)arg, &lo, &hi);
    for (uint64_t v = lo + 1; v <= hi; v++)
        check(weft_chan_send(chan_q, &v), "weft_chan_send");
    return NULL;
}

static void *chan_consumer(void *arg)
{
    uint64_t v, n = 0, sum = 0, sq = 0;
    int rc;
    while ((rc = weft_chan_recv(chan_q, &v)) == 0) {
        n++;
        sum += v;
        sq += v * v;
    }
    if (rc != -EPIPE)
        check(rc, "weft_chan_recv");
    seen_add(n, sum, sq);
    return arg;
}

typedef struct {
    size_t cap;
    double rate;    /* out: million messages per second */
} chan_job;

static void *chan_root(void *arg)
{
    chan_job *job = arg;
    weft_task *prod[CHAN_PAIRS], *cons[CHAN_PAIRS];
    seen_reset();
    chan_n = opt.chan_msgs;
    check(weft_chan_create(&chan_q, sizeof(uint64_t), job->cap), "weft_chan_create");
    uint64_t t0 = now_ns();
    for (int i = 0; i < chan_pairs; i++)
        check(weft_spawn(&cons[i], chan_consumer, NULL), "weft_spawn");
    for (int i = 0; i < chan_pairs; i++)
        check(weft_spawn(&prod[i], chan_producer, (void *)(intptr_t)i), "weft_spawn");
    for (int i = 0; i < chan_pairs; i++)
        check(weft_join(prod[i], NULL), "weft_join");
    check(weft_chan_close(chan_q), "weft_chan_close");
    for (int i = 0; i < chan_pairs; i++)
        check(weft_join(cons[i], NULL), "weft_join");
    uint64_t t1 = now_ns();
    check(weft_chan_destroy(chan_q), "weft_chan_destroy");
    seen_check(job->cap ? "channel (weft, buffered)" : "channel (weft, unbuffered)");
    job->rate = (double)chan_n * 1e3 / (double)(t1 - t0);
    return NULL;
}

/*
 * The pthreads counterpart: a bounded FIFO of 8-byte values on one mutex and
 * two condition variables. cap 0 behaves as an unbuffered channel does: one
 * slot, and a send returns only once a receiver has taken its value. The
 * sender whose value sits in the slot waits on a third condition, taken, so
 * that a receiver wakes that one sender and not every sender there is.
 */
static struct {
    pthread_mutex_t m;
    pthread_cond_t  not_empty;   /* receivers wait here */
    pthread_cond_t  not_full;    /* senders wait here for a free slot */
    pthread_cond_t  taken;       /* cap 0: the one sender whose value is in the slot */
    uint64_t  slot[CHAN_CAP];
    size_t    cap, slots;        /* slots = cap, or 1 for cap 0 */
    size_t    head, count;       /* the rest under m */
    uint64_t  pushed, popped;    /* values ever put in, taken out */
    int       closed;
} bq = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
         PTHREAD_COND_INITIALIZER, { 0 }, 0, 0, 0, 0, 0, 0, 0 };

static void bq_send(uint64_t v)
{
    pthread_mutex_lock(&bq.m);
    while (bq.count == bq.slots)
        pthread_cond_wait(&bq.not_full, &bq.m);
    bq.slot[(bq.head + bq.count++) % bq.slots] = v;
    uint64_t ticket = ++bq.pushed;
    pthread_cond_signal(&bq.not_empty);
    if (bq.cap == 0)
        while (bq.popped < ticket)
            pthread_cond_wait(&bq.taken, &bq.m);
    pthread_mutex_unlock(&bq.m);
}

/* Returns 0 with a value, or -EPIPE once the queue is closed and empty. */
static int bq_recv(uint64_t *v)
{
    pthread_mutex_lock(&bq.m);
    while (bq.count == 0 && !bq.closed)
        pthread_cond_wait(&bq.not_empty, &bq.m);
    if (bq.count == 0) {
        pthread_mutex_unlock(&bq.m);
        return -EPIPE;
    }
    *v = bq.slot[bq.head];
    bq.head = (bq.head + 1) % bq.slots;
    bq.count--;
    bq.popped++;
    if (bq.cap == 0)
        pthread_cond_signal(&bq.taken);
    pthread_cond_signal(&bq.not_full);
    pthread_mutex_unlock(&bq.m);
    return 0;
}

static void bq_close(void)
{
    pthread_mutex_lock(&bq.m);
    bq.closed = 1;
    pthread_cond_broadcast(&bq.not_empty);
    pthread_mutex_unlock(&bq.m);
}

static void *bq_producer(void *arg)
{
    uint64_t lo, hi;
    share((long)(intptr_t)arg, &lo, &hi);
    for (uint64_t v = lo + 1; v <= hi; v++)
        bq_send(v);
    return NULL;
}

static void *bq_consumer(void *arg)
{
    uint64_t v, n = 0, sum = 0, sq = 0;
    while (bq_recv(&v) == 0) {
        n++;
        sum += v;
        sq += v * v;
    }
    seen_add(n, sum, sq);
    return arg;
}

/* Returns million messages per second. */
static double chan_pthreads(size_t cap)
{
    pthread_t prod[CHAN_PAIRS], cons[CHAN_PAIRS];
    seen_reset();
    chan_n = cap ? opt.chan_msgs : opt.chan_sync_pth;
    bq.cap = cap;
    bq.slots = cap ? cap : 1;
    bq.head = bq.count = 0;
    bq.pushed = bq.popped = 0;
    bq.closed = 0;
    uint64_t t0 = now_ns();
    for (int i = 0; i < chan_pairs; i++)
        start_thread(&cons[i], bq_consumer, NULL);
    for (int i = 0; i < chan_pairs; i++)
        start_thread(&prod[i], bq_producer, (void *)(intptr_t)i);
    for (int i = 0; i < chan_pairs; i++)
        pthread_join(prod[i], NULL);
    bq_close();
    for (int i = 0; i < chan_pairs; i++)
        pthread_join(cons[i], NULL);
    uint64_t t1 = now_ns();
    seen_check(cap ? "channel (pthreads, buffered)" : "channel (pthreads, unbuffered)");
    return (double)chan_n * 1e3 / (double)(t1 - t0);
}

static void bench_chan(void)
{
    double wb[64], pb[64], wu[64], pu[64], w1[64], p1[64];
    weft_config cfg = { .workers = opt.workers };
    for (int r = 0; r < opt.runs; r++) {
        progress("channel throughput", r + 1, opt.runs);
        chan_job jb = { CHAN_CAP, 0 }, ju = { 0, 0 }, j1 = { CHAN_CAP, 0 };
        chan_pairs = CHAN_PAIRS;
        check(weft_main(&cfg, chan_root, &jb, NULL), "weft_main");
        pb[r] = chan_pthreads(CHAN_CAP);
        check(weft_main(&cfg, chan_root, &ju, NULL), "weft_main");
        pu[r] = chan_pthreads(0);
        chan_pairs = 1;
        check(weft_main(&cfg, chan_root, &j1, NULL), "weft_main");
        p1[r] = chan_pthreads(CHAN_CAP);
        chan_pairs = CHAN_PAIRS;
        wb[r] = jb.rate;
        wu[r] = ju.rate;
        w1[r] = j1.rate;
    }
    progress_done();
    static char what1[320], what2[320];
    snprintf(what1, sizeof what1,
             "Channel throughput, buffered (capacity %d), higher is better (million 8-byte\n"
             "  messages per second; %d producers send %ld values, %d consumers receive each\n"
             "  exactly once, checked; weft: weft_chan between coroutines; pthreads: threads\n"
             "  on a bounded queue of %d, one mutex and two condvars)",
             CHAN_CAP, CHAN_PAIRS, opt.chan_msgs, CHAN_PAIRS, CHAN_CAP);
    snprintf(what2, sizeof what2,
             "Channel throughput, unbuffered, higher is better (as above, but a send returns\n"
             "  once a receiver has the value; weft: weft_chan of capacity 0, %ld values;\n"
             "  pthreads: the same queue with one slot, the sender waiting until its value\n"
             "  is taken, %ld values)",
             opt.chan_msgs, opt.chan_sync_pth);
    add_row("chan_buffered", what1, "M msg/s", wb, pb, opt.runs)->higher = 1;
    add_row("chan_unbuffered", what2, "M msg/s", wu, pu, opt.runs)->higher = 1;
    add_row("chan_buffered_1to1",
            "Channel throughput, buffered, one producer to one consumer, higher is better\n"
            "  (as the first channel row, with 1 producer and 1 consumer)",
            "M msg/s", w1, p1, opt.runs)->higher = 1;
}

/* ---- contended lock ------------------------------------------------------------ */

/*
 * K tasks each take one lock L times. Inside, a counter goes up and a few steps
 * of the scaling kernel run on shared state: the counter must end at K*L and
 * the state where K*L steps in a row leave it, so a lost update shows in both.
 */
enum { LOCK_TASKS = 64, LOCK_WORK = 16 };

static struct {
    weft_mutex      wm;
    pthread_mutex_t pm;
    long            count;   /* under wm or pm, whichever the run uses */
    uint64_t        state;   /* likewise */
} lk = { WEFT_MUTEX_INIT, PTHREAD_MUTEX_INITIALIZER, 0, 0 };

static uint64_t lock_expected;

static void *lock_task_weft(void *arg)
{
    for (long i = 0; i < opt.lock_iters; i++) {
        check(weft_mutex_lock(&lk.wm), "weft_mutex_lock");
        lk.count++;
        lk.state = work(lk.state, LOCK_WORK);
        check(weft_mutex_unlock(&lk.wm), "weft_mutex_unlock");
    }
    return arg;
}

static void *lock_task_pth(void *arg)
{
    for (long i = 0; i < opt.lock_iters; i++) {
        pthread_mutex_lock(&lk.pm);
        lk.count++;
        lk.state = work(lk.state, LOCK_WORK);
        pthread_mutex_unlock(&lk.pm);
    }
    return arg;
}

static void lock_check(const char *who)
{
    long want = LOCK_TASKS * opt.lock_iters;
    char msg[160];
    if (lk.count != want) {
        snprintf(msg, sizeof msg, "%s: counter %ld, expected %ld (the lock let two holders in)",
                 who, lk.count, want);
        fail(msg);
    } else if (lk.state != lock_expected) {
        snprintf(msg, sizeof msg, "%s: the state under the lock is wrong (the lock let two "
                 "holders in)", who);
        fail(msg);
    }
}

/* Stores million lock acquisitions per second in *(double *)arg. */
static void *lock_root(void *arg)
{
    weft_task *t[LOCK_TASKS];
    lk.count = 0;
    lk.state = 0;
    uint64_t t0 = now_ns();
    for (int i = 0; i < LOCK_TASKS; i++)
        check(weft_spawn(&t[i], lock_task_weft, NULL), "weft_spawn");
    for (int i = 0; i < LOCK_TASKS; i++)
        check(weft_join(t[i], NULL), "weft_join");
    uint64_t t1 = now_ns();
    lock_check("lock (weft)");
    *(double *)arg = (double)(LOCK_TASKS * opt.lock_iters) * 1e3 / (double)(t1 - t0);
    return NULL;
}

/* Returns million lock acquisitions per second. */
static double lock_pthreads(void)
{
    pthread_t t[LOCK_TASKS];
    lk.count = 0;
    lk.state = 0;
    uint64_t t0 = now_ns();
    for (int i = 0; i < LOCK_TASKS; i++)
        start_thread(&t[i], lock_task_pth, NULL);
    for (int i = 0; i < LOCK_TASKS; i++)
        pthread_join(t[i], NULL);
    uint64_t t1 = now_ns();
    lock_check("lock (pthreads)");
    return (double)(LOCK_TASKS * opt.lock_iters) * 1e3 / (double)(t1 - t0);
}

static void bench_lock(void)
{
    double w[64], p[64];
    weft_config cfg = { .workers = opt.workers };
    lock_expected = 0;
    for (long i = 0; i < LOCK_TASKS * opt.lock_iters; i++)
        lock_expected = work(lock_expected, LOCK_WORK);
    for (int r = 0; r < opt.runs; r++) {
        progress("contended lock", r + 1, opt.runs);
        check(weft_main(&cfg, lock_root, &w[r], NULL), "weft_main");
        p[r] = lock_pthreads();
    }
    progress_done();
    static char what[320];
    snprintf(what, sizeof what,
             "Contended lock throughput, higher is better (million lock+unlock per second;\n"
             "  %d tasks each lock one mutex %ld times around a counter and %d steps of\n"
             "  arithmetic, final count checked; weft: weft_mutex between coroutines;\n"
             "  pthreads: %d threads on a pthread_mutex_t)",
             LOCK_TASKS, opt.lock_iters, LOCK_WORK, LOCK_TASKS);
    add_row("lock_contended", what, "M locks/s", w, p, opt.runs)->higher = 1;
}

/* ---- timer lateness -------------------------------------------------------------- */

/*
 * N sleepers each sleep one random duration of 10 to 100 ms, counted from the
 * moment the sleeper starts, and record how late they woke: the time read on
 * waking minus the deadline. A sleep must never end early, so a negative
 * lateness is a wrong answer. The percentiles are over every sleeper of a run.
 */
#define TIMER_MIN_NS  (10 * 1000000ull)
#define TIMER_SPAN_NS (90 * 1000000ull)
enum { TIMER_STACK = 64 * 1024 };

static int64_t *timer_late;     /* ns, one per sleeper; each written by its sleeper */
static atomic_long timer_early;  /* sleepers that woke before their deadline */
static weft_wg timer_wg = WEFT_WG_INIT;

/* Sleeper i's duration: the same for both sides within one run. */
static uint64_t timer_ns(long i, int run)
{
    return TIMER_MIN_NS + work((uint64_t)run << 32 | (uint64_t)i, 3) % (TIMER_SPAN_NS + 1);
}

static void timer_record(long i, uint64_t deadline, uint64_t woke)
{
    timer_late[i] = (int64_t)(woke - deadline);
    if (timer_late[i] < 0)
        atomic_fetch_add_explicit(&timer_early, 1, memory_order_relaxed);   /* read after the joins */
}

static int timer_run;   /* the run in progress, for timer_ns */

static void *timer_weft(void *arg)
{
    long i = (long)(intptr_t)arg;
    uint64_t d = timer_ns(i, timer_run);
    uint64_t deadline = weft_now() + d;
    check(weft_sleep(d), "weft_sleep");
    timer_record(i, deadline, weft_now());
    check(weft_wg_done(&timer_wg), "weft_wg_done");
    return NULL;
}

static void *timer_root(void *arg)
{
    (void)arg;
    check(weft_wg_add(&timer_wg, (int)opt.timer_weft), "weft_wg_add");
    for (long i = 0; i < opt.timer_weft; i++)
        check(weft_spawn(NULL, timer_weft, (void *)(intptr_t)i), "weft_spawn");
    check(weft_wg_wait(&timer_wg), "weft_wg_wait");
    return NULL;
}

static void *timer_thread(void *arg)
{
    long i = (long)(intptr_t)arg;
    uint64_t deadline = now_ns() + timer_ns(i, timer_run);
    struct timespec ts = { (time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u) };
    int rc;
    while ((rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)) == EINTR)
        ;
    if (rc != 0) {
        fprintf(stderr, "\nweft-bench: clock_nanosleep failed: %s\n", strerror(rc));
        exit(1);
    }
    timer_record(i, deadline, now_ns());
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/*
 * The machine's own stalls, to read the max row against: one thread per CPU
 * reads the clock in a loop and keeps the longest gap between two reads. Each
 * thread only spins, so a long gap is the machine's (a virtual CPU held back
 * by the host, an interrupt), not the scheduler's.
 */
enum { STALL_NS = 300 * 1000000 };

static void *stall_thread(void *arg)
{
    uint64_t last = now_ns(), end = last + STALL_NS, worst = 0, t;
    while ((t = now_ns()) < end) {
        if (t - last > worst)
            worst = t - last;
        last = t;
    }
    *(uint64_t *)arg = worst;
    return NULL;
}

/* The longest stall any CPU saw over STALL_NS, in us. */
static double machine_stall(void)
{
    pthread_t t[64];
    uint64_t worst[64], most = 0;
    int n = ncpus() < 64 ? ncpus() : 64;
    for (int i = 0; i < n; i++)
        start_thread(&t[i], stall_thread, &worst[i]);
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        if (worst[i] > most)
            most = worst[i];
    }
    return (double)most / 1e3;
}

/* Sorts the n lateness figures and stores p50, p99 and max in us; fails on
 * any sleeper that woke early. */
static void timer_summary(long n, const char *who, double *p50, double *p99, double *max)
{
    long early = atomic_load(&timer_early);
    if (early) {
        char msg[160];
        snprintf(msg, sizeof msg, "timers (%s): %ld of %ld sleepers woke before their deadline",
                 who, early, n);
        fail(msg);
    }
    qsort(timer_late, (size_t)n, sizeof *timer_late, cmp_i64);
    *p50 = (double)timer_late[(n - 1) / 2] / 1e3;
    *p99 = (double)timer_late[(long)((double)(n - 1) * 0.99)] / 1e3;
    *max = (double)timer_late[n - 1] / 1e3;
}

static void bench_timers(void)
{
    double w50[64], w99[64], wmax[64], p50[64], p99[64], pmax[64], stall[64];
    weft_config cfg = { .workers = opt.workers };
    long n = opt.timer_weft > opt.timer_pth ? opt.timer_weft : opt.timer_pth;
    pthread_t *t = malloc((size_t)opt.timer_pth * sizeof *t);
    pthread_attr_t attr;
    timer_late = malloc((size_t)n * sizeof *timer_late);
    if (!t || !timer_late) {
        fprintf(stderr, "weft-bench: timers: out of memory\n");
        exit(1);
    }
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, TIMER_STACK);
    for (int r = 0; r < opt.runs; r++) {
        progress("timer lateness", r + 1, opt.runs);
        timer_run = r;
        atomic_store(&timer_early, 0);
        check(weft_main(&cfg, timer_root, NULL, NULL), "weft_main");
        timer_summary(opt.timer_weft, "weft", &w50[r], &w99[r], &wmax[r]);

        atomic_store(&timer_early, 0);
        for (long i = 0; i < opt.timer_pth; i++) {
            int rc = pthread_create(&t[i], &attr, timer_thread, (void *)(intptr_t)i);
            if (rc != 0) {
                fprintf(stderr, "\nweft-bench: pthread_create failed: %s\n", strerror(rc));
                exit(1);
            }
        }
        for (long i = 0; i < opt.timer_pth; i++)
            pthread_join(t[i], NULL);
        timer_summary(opt.timer_pth, "pthreads", &p50[r], &p99[r], &pmax[r]);
        stall[r] = machine_stall();
    }
    progress_done();
    pthread_attr_destroy(&attr);
    free(t);
    free(timer_late);
    timer_late = NULL;
    static char what[4][480];
    char nw[32], np[32];
    grouped(nw, sizeof nw, opt.timer_weft);
    grouped(np, sizeof np, opt.timer_pth);
    snprintf(what[0], sizeof what[0],
             "Timer lateness, median (p50): how long after its deadline a sleeper wakes\n"
             "  (weft: %s coroutines sleeping 10-100 ms with weft_sleep; pthreads: %s\n"
             "  threads, %d KiB stacks, clock_nanosleep to an absolute CLOCK_MONOTONIC\n"
             "  deadline 10-100 ms ahead; each duration random, counted from the sleeper's\n"
             "  start; a wake-up before the deadline fails the run)",
             nw, np, TIMER_STACK / 1024);
    snprintf(what[1], sizeof what[1],
             "Timer lateness, 99th percentile (p99) (as above: %s coroutines sleeping\n"
             "  10-100 ms against %s threads)", nw, np);
    snprintf(what[2], sizeof what[2],
             "Timer lateness, worst sleeper of a run (max) (as above: %s coroutines\n"
             "  against %s threads)", nw, np);
    add_row("timer_late_p50", what[0], "us", w50, p50, opt.runs);
    add_row("timer_late_p99", what[1], "us", w99, p99, opt.runs);
    snprintf(what[3], sizeof what[3],
             "The machine's own longest stall, to read the max row against: one thread\n"
             "  per CPU reads the clock in a loop for %d ms, nothing else running; the\n"
             "  longest gap between two reads", STALL_NS / 1000000);
    add_row("timer_late_max", what[2], "us", wmax, pmax, opt.runs);
    add_row("machine_stall", what[3], "us", stall, NULL, opt.runs)->label = "bare threads";
}

/* ---- main ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: weft-bench [WORKLOAD] [--quick|--full] [--runs N] [--csv DIR] [--workers N]\n"
        "workloads: all (default), spawn, switch, skynet, memory, scaling, chan, lock,\n"
        "           timers, server\n"
        "  --quick      small sizes, the whole `all` run in under a minute (default)\n"
        "  --full       the careful run: 1,000,000 tasks where the issue asks for them\n"
        "  --runs N     runs per figure (median and min..max shown); default 3 quick, 7 full\n"
        "  --csv DIR    where CSV and SVG files go; default ./weft-bench-results\n"
        "  --workers N  weft workers for spawn, skynet, memory, chan, lock, timers and\n"
        "               server, and the top of the scaling sweep; default: the CPUs\n"
        "               this process may use\n");
}

int main(int argc, char **argv)
{
    const char *which = "all";
    opt.dir = "weft-bench-results";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--quick"))
            opt.full = 0;
        else if (!strcmp(a, "--full"))
            opt.full = 1;
        else if (!strcmp(a, "--runs") && i + 1 < argc)
            opt.runs = atoi(argv[++i]);
        else if (!strcmp(a, "--csv") && i + 1 < argc)
            opt.dir = argv[++i];
        else if (!strcmp(a, "--workers") && i + 1 < argc)
            opt.workers = (unsigned)atoi(argv[++i]);
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (a[0] != '-')
            which = a;
        else {
            usage(stderr);
            return 2;
        }
    }
    if (opt.runs <= 0)
        opt.runs = opt.full ? 7 : 3;
    if (opt.runs > 64)
        opt.runs = 64;
    if (opt.full) {
        opt.spawn_weft = 1000000; opt.spawn_pth = 10000;
        opt.yield_iters = 5000000; opt.cond_iters = 200000; opt.futex_iters = 200000;
        opt.raw_iters = 20000000; opt.handoff_iters = 2000000;
        opt.skynet_weft = 1000000; opt.skynet_pth = 10000;
        opt.mem_weft = 1000000; opt.mem_pth = 10000;
        opt.scale_leaves = 4096; opt.scale_work = 100000;
        opt.chan_msgs = 2000000; opt.chan_sync_pth = 100000; opt.lock_iters = 20000;
        opt.serve_ns = 2000000000;
        opt.timer_weft = 100000; opt.timer_pth = 1000;
    } else {
        opt.spawn_weft = 20000; opt.spawn_pth = 2000;
        opt.yield_iters = 1000000; opt.cond_iters = 50000; opt.futex_iters = 50000;
        opt.raw_iters = 5000000; opt.handoff_iters = 500000;
        opt.skynet_weft = 100000; opt.skynet_pth = 1000;
        opt.mem_weft = 100000; opt.mem_pth = 2000;
        opt.scale_leaves = 512; opt.scale_work = 50000;
        opt.chan_msgs = 200000; opt.chan_sync_pth = 10000; opt.lock_iters = 5000;
        opt.serve_ns = 200000000;
        opt.timer_weft = 20000; opt.timer_pth = 1000;
    }
    /* memory forks: it runs first, while this process has no other threads. */
    static const struct { const char *name; void (*run)(void); } workloads[] = {
        { "memory", bench_memory }, { "spawn", bench_spawn }, { "switch", bench_switch },
        { "skynet", bench_skynet }, { "scaling", bench_scaling }, { "chan", bench_chan },
        { "lock", bench_lock }, { "timers", bench_timers }, { "server", bench_server },
    };
    enum { NWORKLOADS = sizeof workloads / sizeof workloads[0] };
    int all = !strcmp(which, "all"), known = all;
    for (int i = 0; i < NWORKLOADS; i++)
        known |= !strcmp(which, workloads[i].name);
    if (!known) {
        usage(stderr);
        return 2;
    }
    if (mkdir(opt.dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "weft-bench: cannot create %s: %s\n", opt.dir, strerror(errno));
        return 1;
    }
    printf("weft-bench %s: %d CPUs, %d runs per figure\n", opt.full ? "--full" : "--quick",
           ncpus(), opt.runs);
    fflush(stdout);
    uint64_t t0 = now_ns();
    for (int i = 0; i < NWORKLOADS; i++) {
        if (!all && strcmp(which, workloads[i].name))
            continue;
        uint64_t w0 = now_ns();
        workloads[i].run();
        fprintf(stderr, "  %s: %.1f s\n", workloads[i].name, (double)(now_ns() - w0) / 1e9);
    }
    print_table();
    write_csv();
    printf("CSV:    %s/results.csv", opt.dir);
    if (all || !strcmp(which, "memory"))
        printf(", %s/memory.csv", opt.dir);
    if (all || !strcmp(which, "scaling"))
        printf(", %s/scaling.csv", opt.dir);
    printf("\n");
    if (all || !strcmp(which, "memory"))
        printf("Chart:  %s/memory.svg (RSS per blocked task)\n", opt.dir);
    if (all || !strcmp(which, "scaling"))
        printf("Chart:  %s/scaling.svg (fork-join speed-up by workers)\n", opt.dir);
    printf("Total time %.1f s.\n", (double)(now_ns() - t0) / 1e9);
    if (failures) {
        fprintf(stderr, "weft-bench: %d check(s) failed; the figures above are not valid\n",
                failures);
        return 1;
    }
    return 0;
}
