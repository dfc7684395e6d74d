/* SPDX-License-Identifier: MIT */
/*
 * scale: how weft keeps up as workers are added, for a machine with many
 * cores. At 1, 2, 4, 8 and 16 workers (those up to the CPUs present, and the
 * CPU count itself when it falls between; every one with --force), each run:
 *
 *   skynet      weft's skynet (skynet.c), and Go's (bench/compare/go/skynet.go)
 *               with GOMAXPROCS = workers when --go names the built programs;
 *               million leaves per second
 *   fork-join   the speed-up over 1 worker (scaling.c), weft against as many
 *               pthreads
 *   channels    buffered, 4 producers to 4 consumers (chan.c): weft on N
 *               workers, pthreads confined to N CPUs, Go with GOMAXPROCS = N
 *   echo        the loopback echo server of server.c, 100 connections: weft
 *               on each IO backend and the hand-written epoll loop, N threads
 *
 * Output: the table, scale.csv (a line per workload, worker count and side)
 * and scale.svg (a panel per workload). bench/scale.sh builds weft-bench and
 * the Go programs and runs this in one command.
 */
#include "bench.h"

#include <weft.h>

#include <errno.h>
#include <sched.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum { LEVELS_MAX = 8, SCALE_CONNS = 100, SCALE_PAIRS = 4, SCALE_CAP = 128 };

/* The sides of each workload, in scale.csv, the table and the chart. */
enum { SKY_WEFT, SKY_GO, SKY_SIDES };
enum { FJ_WEFT, FJ_PTH, FJ_SIDES };
enum { CH_WEFT, CH_PTH, CH_GO, CH_SIDES };
enum { EC_URING, EC_EPOLL, EC_LOOP, EC_SIDES };

/* [level][side][run] */
static double sky[LEVELS_MAX][SKY_SIDES][RUNS_MAX];
static double fj[LEVELS_MAX][FJ_SIDES][RUNS_MAX];      /* ms */
static double ch[LEVELS_MAX][CH_SIDES][RUNS_MAX];
static double ec[LEVELS_MAX][EC_SIDES][RUNS_MAX];

static int level[LEVELS_MAX], nlevels;

/* The worker counts to visit. */
static void choose_levels(void)
{
    static const int want[] = { 1, 2, 4, 8, 16 };
    int cpus = ncpus();
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (opt.force || want[i] <= cpus)
            level[nlevels++] = want[i];
    if (!opt.force && cpus < 16 && level[nlevels - 1] < cpus)
        level[nlevels++] = cpus;
}

/*
 * Runs the Go program `name` of opt.go_dir with GOMAXPROCS=procs and the
 * arguments given, and returns the one number it prints; -1 (and a failure)
 * when it exits with an error or prints no number.
 */
static double run_go(const char *name, int procs, char *const args[])
{
    enum { ARGS_MAX = 16 };
    char path[4096], env_procs[32], out[256];
    char *argv[ARGS_MAX + 2];
    int n = 0, fd[2];
    snprintf(path, sizeof path, "%s/%s", opt.go_dir, name);
    argv[n++] = path;
    for (int i = 0; args[i] && i < ARGS_MAX; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    snprintf(env_procs, sizeof env_procs, "GOMAXPROCS=%d", procs);
    char *env[] = { env_procs, NULL };
    if (pipe(fd) != 0) {
        fail("scale: pipe for %s", name);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    pid_t pid;
    int rc = posix_spawn(&pid, path, &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    if (rc != 0) {
        close(fd[0]);
        fail("scale: cannot run %s: %s", path, strerror(rc));
        return -1;
    }
    size_t got = 0;
    ssize_t r;
    while (got < sizeof out - 1 && (r = read(fd[0], out + got, sizeof out - 1 - got)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        got += (size_t)r;
    }
    out[got] = '\0';
    close(fd[0]);
    int st;
    double v;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0
        || sscanf(out, "%lf", &v) != 1) {
        fail("scale: %s (GOMAXPROCS=%d) failed or printed no figure: %s", name, procs, out);
        return -1;
    }
    return v;
}

/* Confines the calling thread, and the threads it starts, to its first n
 * CPUs; *saved keeps the mask to put back. */
static void confine(int n, cpu_set_t *saved)
{
    cpu_set_t set;
    sched_getaffinity(0, sizeof *saved, saved);
    CPU_ZERO(&set);
    for (int c = 0, k = 0; c < CPU_SETSIZE && k < n; c++)
        if (CPU_ISSET(c, saved)) {
            CPU_SET(c, &set);
            k++;
        }
    sched_setaffinity(0, sizeof set, &set);
}

static void run_level(int li, int run, const int *backend_ok)
{
    int n = level[li];
    char leaves[32], msgs[32], pairs[16], cap[16];
    snprintf(leaves, sizeof leaves, "%ld", opt.skynet_weft);
    snprintf(msgs, sizeof msgs, "%ld", opt.chan_msgs);
    snprintf(pairs, sizeof pairs, "%d", SCALE_PAIRS);
    snprintf(cap, sizeof cap, "%d", SCALE_CAP);

    progress_note("%d workers: skynet, weft", n);
    double ms = skynet_weft_ms((unsigned)n, opt.skynet_weft);
    sky[li][SKY_WEFT][run] = (double)opt.skynet_weft / ms / 1e3;
    if (opt.go_dir) {
        progress_note("%d workers: skynet, Go", n);
        char *args[] = { "-leaves", leaves, "-raw", NULL };
        ms = run_go("skynet", n, args);
        sky[li][SKY_GO][run] = ms > 0 ? (double)opt.skynet_weft / ms / 1e3 : 0;
    }

    progress_note("%d workers: fork-join, weft", n);
    fj[li][FJ_WEFT][run] = forkjoin_weft_ms((unsigned)n);
    progress_note("%d workers: fork-join, pthreads", n);
    fj[li][FJ_PTH][run] = forkjoin_pthreads_ms(n);

    progress_note("%d workers: channels, weft", n);
    ch[li][CH_WEFT][run] = chan_weft_rate((unsigned)n, SCALE_CAP, SCALE_PAIRS);
    progress_note("%d workers: channels, pthreads on %d CPU%s", n, n, n == 1 ? "" : "s");
    cpu_set_t saved;
    confine(n, &saved);
    ch[li][CH_PTH][run] = chan_pthreads_rate(SCALE_CAP, SCALE_PAIRS);
    sched_setaffinity(0, sizeof saved, &saved);
    if (opt.go_dir) {
        progress_note("%d workers: channels, Go", n);
        char *args[] = { "-msgs", msgs, "-pairs", pairs, "-cap", cap, "-raw", NULL };
        ch[li][CH_GO][run] = run_go("chan", n, args);
    }

    static const int server[EC_SIDES] = { WEFT_IO_URING, WEFT_IO_EPOLL, SERVE_EPOLL_LOOP };
    static const char *const name[EC_SIDES] = { "weft (io_uring)", "weft (epoll)", "epoll loop" };
    for (int s = 0; s < EC_SIDES; s++) {
        if (s < EC_LOOP && !backend_ok[s])
            continue;
        progress_note("%d workers: echo server, %s", n, name[s]);
        ec[li][s][run] = serve_once(server[s], SCALE_CONNS, (unsigned)n).rate;
    }
}

static void csv_line(FILE *f, const char *workload, int workers, const char *side,
                     const char *unit, const double *v)
{
    figure x = summarize(v, opt.runs);
    fprintf(f, "%s,%d,%s,%s,%.6g,%.6g,%.6g,%d\n", workload, workers, side, unit, x.med, x.min,
            x.max, opt.runs);
}

/* The speed-up from the first level to level li: the ratio of the medians,
 * spanning the per-run speed-ups. */
static figure fj_speedup(int li, int side)
{
    double s[RUNS_MAX];
    for (int r = 0; r < opt.runs; r++)
        s[r] = fj[0][side][r] / fj[li][side][r];
    figure per_run = summarize(s, opt.runs);
    return figure_of(summarize(fj[0][side], opt.runs).med / summarize(fj[li][side], opt.runs).med,
                     per_run.min, per_run.max);
}

/* The rows of the table, one workload after another, each over the worker
 * counts: skynet against Go, fork-join and channels against pthreads, then
 * channels against Go and the echo server against the epoll loop. */
enum { ROW_SKYNET, ROW_FORKJOIN, ROW_CHAN, ROW_CHAN_GO, ROW_ECHO_URING, ROW_ECHO_EPOLL, ROW_KINDS };

static void scale_row(int kind, int li, const int *backend_ok)
{
    static char m[ROW_KINDS][LEVELS_MAX][64], id[ROW_KINDS][LEVELS_MAX][40];
    char *mk = m[kind][li], *ik = id[kind][li];
    int n = level[li];
    const char *w = n == 1 ? "worker" : "workers";
    row *r;
    switch (kind) {
    case ROW_SKYNET:
        snprintf(mk, 64, "skynet, %d %s", n, w);
        snprintf(ik, 40, "scale_skynet_%d", n);
        r = add_row("scale", ik, mk, "M leaf/s", MORE, sky[li][SKY_WEFT],
                    opt.go_dir ? sky[li][SKY_GO] : NULL, opt.runs);
        r->other = "Go";
        break;
    case ROW_FORKJOIN: {
        if (li == 0)
            break;
        figure uw = fj_speedup(li, FJ_WEFT), up = fj_speedup(li, FJ_PTH);
        snprintf(mk, 64, "fork-join speed-up, %d to %d workers", level[0], n);
        snprintf(ik, 40, "scale_forkjoin_%d", n);
        add_row_fig("scale", ik, mk, "x", MORE, &uw, &up);
        break;
    }
    case ROW_CHAN:
    case ROW_CHAN_GO:
        if (kind == ROW_CHAN_GO && !opt.go_dir)
            break;
        snprintf(mk, 64, "channels %d to %d, %d %s%s", SCALE_PAIRS, SCALE_PAIRS, n, w,
                 kind == ROW_CHAN_GO ? ", vs Go" : "");
        snprintf(ik, 40, "scale_chan%s_%d", kind == ROW_CHAN_GO ? "_go" : "", n);
        r = add_row("scale", ik, mk, "M msg/s", MORE, ch[li][CH_WEFT],
                    ch[li][kind == ROW_CHAN_GO ? CH_GO : CH_PTH], opt.runs);
        if (kind == ROW_CHAN_GO)
            r->other = "Go";
        break;
    case ROW_ECHO_URING:
    case ROW_ECHO_EPOLL: {
        int s = kind == ROW_ECHO_URING ? EC_URING : EC_EPOLL;
        if (!backend_ok[s])
            break;
        snprintf(mk, 64, "echo, %d %s, %s vs epoll loop", n, w,
                 s == EC_URING ? "io_uring" : "epoll");
        snprintf(ik, 40, "scale_echo_%s_%d", s == EC_URING ? "uring" : "epoll", n);
        r = add_row("scale", ik, mk, "k req/s", MORE, ec[li][s], ec[li][EC_LOOP], opt.runs);
        r->label = s == EC_URING ? "weft (io_uring)" : "weft (epoll)";
        r->other = "epoll loop";
        break;
    }
    }
}

static void scale_rows(const int *backend_ok)
{
    for (int kind = 0; kind < ROW_KINDS; kind++)
        for (int li = 0; li < nlevels; li++)
            scale_row(kind, li, backend_ok);
}

static void scale_outputs(const int *backend_ok)
{
    FILE *f = open_out("scale.csv");
    fprintf(f, "workload,workers,side,unit,median,min,max,runs\n");
    static lines l[4] = {
        { .title = "skynet", .ylabel = "million leaves per second", .nseries = 2,
          .label = { "weft", "Go" }, .color = { COLOR_WEFT, COLOR_GO } },
        { .title = "fork-join speed-up over 1 worker", .ylabel = "speed-up", .nseries = 3,
          .label = { "weft", "pthreads", "ideal" },
          .color = { COLOR_WEFT, COLOR_PTHREADS, COLOR_IDEAL }, .dashed = { 0, 0, 1 } },
        { .title = "channels, 4 producers to 4 consumers", .ylabel = "million messages per second",
          .nseries = 3, .label = { "weft", "pthreads", "Go" },
          .color = { COLOR_WEFT, COLOR_PTHREADS, COLOR_GO } },
        { .title = "echo server, 100 connections", .ylabel = "thousand requests per second",
          .nseries = 3, .label = { "weft (io_uring)", "weft (epoll)", "epoll loop" },
          .color = { COLOR_WEFT, COLOR_ALT, COLOR_REF } },
    };
    if (!opt.go_dir) {
        l[0].nseries = 1;   /* Go's series are the last */
        l[2].nseries = 2;
    }
    for (int li = 0; li < nlevels; li++) {
        int n = level[li];
        for (int i = 0; i < 4; i++) {
            l[i].x[li] = n;
            l[i].n = nlevels;
        }
        csv_line(f, "skynet", n, "weft", "M leaves/s", sky[li][SKY_WEFT]);
        l[0].y[0][li] = summarize(sky[li][SKY_WEFT], opt.runs).med;
        if (opt.go_dir) {
            csv_line(f, "skynet", n, "go", "M leaves/s", sky[li][SKY_GO]);
            l[0].y[1][li] = summarize(sky[li][SKY_GO], opt.runs).med;
        }
        csv_line(f, "forkjoin", n, "weft", "ms", fj[li][FJ_WEFT]);
        csv_line(f, "forkjoin", n, "pthreads", "ms", fj[li][FJ_PTH]);
        for (int side = 0; side < FJ_SIDES; side++) {
            figure u = fj_speedup(li, side);
            fprintf(f, "forkjoin_speedup,%d,%s,x,%.4g,%.4g,%.4g,%d\n", n,
                    side == FJ_WEFT ? "weft" : "pthreads", u.med, u.min, u.max, opt.runs);
            l[1].y[side][li] = u.med;
        }
        l[1].y[2][li] = (double)n / level[0];
        csv_line(f, "chan", n, "weft", "M msg/s", ch[li][CH_WEFT]);
        csv_line(f, "chan", n, "pthreads", "M msg/s", ch[li][CH_PTH]);
        l[2].y[0][li] = summarize(ch[li][CH_WEFT], opt.runs).med;
        l[2].y[1][li] = summarize(ch[li][CH_PTH], opt.runs).med;
        if (opt.go_dir) {
            csv_line(f, "chan", n, "go", "M msg/s", ch[li][CH_GO]);
            l[2].y[2][li] = summarize(ch[li][CH_GO], opt.runs).med;
        }
        static const char *const side[EC_SIDES] = { "weft_io_uring", "weft_epoll", "epoll_loop" };
        for (int s = 0; s < EC_SIDES; s++) {
            if (s < EC_LOOP && !backend_ok[s])
                continue;
            csv_line(f, "echo", n, side[s], "k req/s", ec[li][s]);
            l[3].y[s][li] = summarize(ec[li][s], opt.runs).med;
        }
    }
    close_out(f);
    chart_lines("scale.svg", "weft as workers are added", l, 4);
}

void bench_scale(void)
{
    int backend_ok[2];
    choose_levels();
    if (opt.go_dir) {
        char path[4096];
        for (int i = 0; i < 2; i++) {
            snprintf(path, sizeof path, "%s/%s", opt.go_dir, i ? "chan" : "skynet");
            if (access(path, X_OK) != 0) {
                fprintf(stderr, "weft-bench: --go %s: no program %s there (bench/scale.sh "
                        "builds them)\n", opt.go_dir, i ? "chan" : "skynet");
                exit(2);
            }
        }
    }
    raise_nofile();
    serve_setup();
    backend_ok[EC_URING] = serve_backend_works(WEFT_IO_URING);
    backend_ok[EC_EPOLL] = serve_backend_works(WEFT_IO_EPOLL);
    if (!backend_ok[EC_URING])
        add_note("scale: no io_uring rows: a runtime on io_uring could not be created here");
    if (!opt.go_dir)
        add_note("scale: no Go figures: go is not installed, or --go was not given");
    if (opt.force && level[nlevels - 1] > ncpus())
        add_note("scale: --force: counts above the %d CPUs here measure oversubscription",
                 ncpus());
    printf("scale: %d to %d workers (", level[0], level[nlevels - 1]);
    for (int i = 0; i < nlevels; i++)
        printf("%s%d", i ? ", " : "", level[i]);
    printf(")%s\n", opt.go_dir ? ", Go side by side" : "");
    fflush(stdout);
    progress_step(1, 1, "scale", "the sweep over worker counts");
    progress_note("the fork-join checksum");
    forkjoin_prepare();
    for (int r = 0; r < opt.runs; r++)
        for (int li = 0; li < nlevels; li++) {
            progress_run(r + 1, opt.runs);
            run_level(li, r, backend_ok);
        }
    progress_clear();
    scale_rows(backend_ok);
    print_table();
    scale_outputs(backend_ok);
}
