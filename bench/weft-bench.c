/* SPDX-License-Identifier: MIT */
/*
 * weft-bench: the same workloads run with weft coroutines and with plain
 * pthreads, side by side. This file is the driver: the options and sizes,
 * the list of workloads (list.h), running them, and the helpers every
 * workload uses. The report (table, CSV, charts, progress) is report.c; each
 * workload is its own file. Run `weft-bench --help` for the options.
 *
 * Method. Each figure is the median of --runs runs, with the least and the
 * greatest of those runs. Within one run the weft and the pthreads variants
 * run back to back, so both see the same state of the machine. Every
 * workload checks its own answers (skynet's sum, each joined task's result,
 * every channel message received once, the counter a lock protects, no
 * sleeper waking early, every reply of the server equal to its request, ...);
 * a wrong answer prints FAILED and makes the exit status 1. Timing never
 * decides the exit status.
 *
 * Output: the table on stdout; results.csv, one chart per workload and
 * overview.svg in the output folder, by default results/ beside this
 * program (so under the build folder, never in the source tree).
 */
#include "bench.h"

#include <weft.h>

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

struct bench_opt opt;

/* ---- helpers for the workloads --------------------------------------------- */

static int nfailures;

void fail(const char *fmt, ...)
{
    va_list ap;
    progress_clear();
    fprintf(stderr, "weft-bench: FAILED: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    nfailures++;
}

int failures(void) { return nfailures; }

void check(int rc, const char *what)
{
    if (rc < 0) {
        progress_clear();
        fprintf(stderr, "weft-bench: %s failed: %s\n", what, strerror(-rc));
        exit(1);
    }
}

void start_thread(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, attr, fn, arg);
    if (rc != 0) {
        progress_clear();
        fprintf(stderr, "weft-bench: pthread_create failed: %s\n", strerror(rc));
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

unsigned workers(void)
{
    return opt.workers ? opt.workers : (unsigned)ncpus();
}

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

long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > LONG_MAX ? LONG_MAX : (long)rl.rlim_cur;
}

const char *grouped(char *buf, size_t len, long n)
{
    char d[32];
    int k = snprintf(d, sizeof d, "%ld", n), o = 0;
    for (int i = 0; i < k && o + 2 < (int)len; i++) {
        if (i > 0 && d[i - 1] != '-' && (k - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = d[i];
    }
    buf[o] = '\0';
    return buf;
}

/* ---- the list of workloads -------------------------------------------------- */

static const struct {
    const char *name;
    const char *summary;
    void (*run)(void);
} workloads[] = {
#define WORKLOAD(name, summary) { #name, summary, bench_##name },
#include "list.h"
#undef WORKLOAD
};
enum { NWORKLOADS = sizeof workloads / sizeof workloads[0] };

/* ---- options ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: weft-bench [WORKLOAD...] [--quick|--full] [--runs N] [--workers N]\n"
        "                  [--out DIR] [--explain]\n"
        "       weft-bench scale [--quick|--full] [--runs N] [--out DIR] [--force]\n"
        "                  [--go DIR]\n"
        "\n"
        "Runs each workload with weft coroutines and with pthreads, prints a table of\n"
        "the medians and their ratios, and writes results.csv and SVG charts.\n"
        "WORKLOAD: all (the default) or any of the names --list prints.\n"
        "\n"
        "  --quick      small sizes, every workload in about a minute (the default)\n"
        "  --full       the careful sizes: 1,000,000 tasks for spawn, skynet and memory\n"
        "  --runs N     runs of each side per figure; default 3 with --quick, 7 with --full\n"
        "  --workers N  weft's workers; default: every CPU this process may use\n"
        "  --out DIR    where the CSV files and charts go; default: results/ beside\n"
        "               this program (--csv DIR is the same)\n"
        "  --explain    after the table, what each row measures, in full\n"
        "  --list       the workloads, one line each\n"
        "\n"
        "scale runs skynet, fork-join, channel throughput and the echo server at 1, 2,\n"
        "4, 8 and 16 workers, as many of those as there are CPUs, and writes scale.csv\n"
        "and scale.svg. bench/scale.sh builds everything and runs it in one command.\n"
        "  --force      every worker count up to 16, even above the CPUs\n"
        "  --go DIR     Go's skynet and chan programs, built in DIR, side by side\n");
}

static void bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "weft-bench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(weft-bench --help lists the options)\n");
    exit(2);
}

/* The value of an option that takes a whole number from lo to hi. */
static long number(const char *flag, const char *value, long lo, long hi)
{
    char *end;
    if (!value)
        bad_usage("%s needs a value", flag);
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < lo || v > hi) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s: '%%s' is not a whole number from %ld to %ld", flag, lo, hi);
        bad_usage(msg, value);
    }
    return v;
}

static void set_sizes(void)
{
    if (opt.full) {
        opt.spawn_weft = 1000000; opt.spawn_pth = 10000;
        opt.yield_iters = 5000000; opt.cond_iters = 200000; opt.futex_iters = 200000;
        opt.raw_iters = 20000000; opt.handoff_iters = 2000000;
        opt.skynet_weft = 1000000; opt.skynet_pth = 10000;
        opt.mem_weft = 1000000; opt.mem_pth = 10000;
        opt.scale_leaves = 4096; opt.scale_work = 100000;
        opt.chan_msgs = 2000000; opt.chan_sync_pth = 100000; opt.lock_iters = 20000;
        opt.serve_ns = 2000000000;
        opt.kv_requests = 500000;
        opt.timer_weft = 100000; opt.timer_pth = 1000;
        opt.mixed_waiters = 8000; opt.mixed_ns = 2000000000;
    } else {
        opt.spawn_weft = 20000; opt.spawn_pth = 2000;
        opt.yield_iters = 1000000; opt.cond_iters = 50000; opt.futex_iters = 50000;
        opt.raw_iters = 5000000; opt.handoff_iters = 500000;
        opt.skynet_weft = 100000; opt.skynet_pth = 1000;
        opt.mem_weft = 100000; opt.mem_pth = 2000;
        opt.scale_leaves = 512; opt.scale_work = 50000;
        opt.chan_msgs = 200000; opt.chan_sync_pth = 10000; opt.lock_iters = 5000;
        opt.serve_ns = 200000000;
        opt.kv_requests = 50000;
        opt.timer_weft = 20000; opt.timer_pth = 1000;
        opt.mixed_waiters = 2000; opt.mixed_ns = 500000000;
    }
}

/* results/ beside this program. */
static const char *default_dir(void)
{
    static char dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - sizeof "/results");
    if (n <= 0)
        return "results";
    dir[n] = '\0';
    char *slash = strrchr(dir, '/');
    strcpy(slash ? slash : dir, "/results");
    return dir;
}

/* mkdir -p */
static int make_dir(const char *path)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(p, 0777) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* The IO backend weft's runtimes get here when they ask for none. */
static const char *auto_backend(void)
{
    const char *env = getenv("WEFT_IO");
    if (env && !strcmp(env, "epoll"))
        return "epoll (WEFT_IO=epoll)";
    weft_rt *rt;
    weft_config cfg = { .workers = 1, .io_backend = WEFT_IO_URING };
    if (weft_rt_create(&rt, &cfg) != 0)
        return "epoll (io_uring refused here)";
    check(weft_rt_destroy(rt), "weft_rt_destroy");
    return "io_uring";
}

/* Reads the command line into opt and chosen[]; returns 1 for the scale
 * command. Exits with status 2 on a bad one, naming what is wrong. */
static int parse_args(int argc, char **argv, int *chosen)
{
    int any = 0, scale = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quick")) {
            opt.full = 0;
        } else if (!strcmp(a, "--full")) {
            opt.full = 1;
        } else if (!strcmp(a, "--runs")) {
            opt.runs = (int)number(a, v, 1, RUNS_MAX);
            i++;
        } else if (!strcmp(a, "--workers")) {
            opt.workers = (unsigned)number(a, v, 1, WEFT_WORKERS_MAX);
            i++;
        } else if (!strcmp(a, "--out") || !strcmp(a, "--csv") || !strcmp(a, "--go")) {
            if (!v || !*v)
                bad_usage("%s needs a folder", a);
            if (!strcmp(a, "--go"))
                opt.go_dir = v;
            else
                opt.dir = v;
            i++;
        } else if (!strcmp(a, "--force")) {
            opt.force = 1;
        } else if (!strcmp(a, "--explain")) {
            opt.explain = 1;
        } else if (!strcmp(a, "--list")) {
            for (int k = 0; k < NWORKLOADS; k++)
                printf("%-8s %s\n", workloads[k].name, workloads[k].summary);
            printf("%-8s %s\n", "scale", "skynet, fork-join, channels and the echo server "
                   "at 1, 2, 4, 8 and 16 workers");
            exit(0);
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (a[0] == '-') {
            bad_usage("unknown option %s", a);
        } else if (!strcmp(a, "scale")) {
            scale = 1;
        } else if (!strcmp(a, "all")) {
            for (int k = 0; k < NWORKLOADS; k++)
                chosen[k] = 1;
            any = 1;
        } else {
            int k = 0;
            while (k < NWORKLOADS && strcmp(a, workloads[k].name))
                k++;
            if (k == NWORKLOADS)
                bad_usage("unknown workload '%s' (weft-bench --list names them)", a);
            chosen[k] = any = 1;
        }
    }
    if (scale && any)
        bad_usage("%s runs alone: name no other workload with it", "scale");
    if (scale && opt.workers)
        bad_usage("%s chooses its own worker counts: --workers does not apply", "scale");
    if (!scale && (opt.force || opt.go_dir))
        bad_usage("%s apply to the scale command only", "--force and --go");
    if (!any)
        for (int k = 0; k < NWORKLOADS; k++)
            chosen[k] = 1;
    if (!opt.runs)
        opt.runs = opt.full ? 7 : 3;
    if (!opt.dir)
        opt.dir = default_dir();
    set_sizes();
    return scale;
}

static void print_header(int scale)
{
    char w[64] = "";
    if (!scale && opt.workers)
        snprintf(w, sizeof w, "weft on %u worker%s, ", opt.workers, opt.workers == 1 ? "" : "s");
    else if (!scale)
        snprintf(w, sizeof w, "weft on %d workers (one per CPU), ", ncpus());
    printf("weft-bench%s %s: %d CPUs; %sIO on %s; %d run%s per figure\n",
           scale ? " scale" : "", opt.full ? "--full" : "--quick", ncpus(), w, auto_backend(),
           opt.runs, opt.runs == 1 ? "" : "s");
    fflush(stdout);
}

/* Runs the chosen workloads in the list's order, then the report. */
static void run_workloads(const int *chosen)
{
    int count = 0, index = 0;
    for (int k = 0; k < NWORKLOADS; k++)
        count += chosen[k];
    for (int k = 0; k < NWORKLOADS; k++) {
        if (!chosen[k])
            continue;
        progress_step(++index, count, workloads[k].name, workloads[k].summary);
        workloads[k].run();
    }
    progress_clear();
    print_table();
    if (opt.explain)
        print_details();
    write_results_csv();
    chart_overview("overview.svg");
}

int main(int argc, char **argv)
{
    int chosen[NWORKLOADS] = { 0 };
    int scale = parse_args(argc, argv, chosen);
    int rc = make_dir(opt.dir);
    if (rc < 0) {
        fprintf(stderr, "weft-bench: cannot create %s: %s\n", opt.dir, strerror(-rc));
        return 1;
    }
    print_header(scale);
    uint64_t t0 = now_ns();
    if (scale)
        bench_scale();
    else
        run_workloads(chosen);
    printf("\nTook %.0f s.", (double)(now_ns() - t0) / 1e9);
    print_outputs();
    if (failures()) {
        fprintf(stderr, "weft-bench: %d check(s) failed; the figures above are not valid\n",
                failures());
        return 1;
    }
    return 0;
}
