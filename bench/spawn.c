/* SPDX-License-Identifier: MIT */
/*
 * spawn: start a task that does nothing and wait for it to finish. weft
 * spawns N coroutines and then joins them all, in a fresh runtime and then
 * again in the same one (its memory reused), and spawns and joins them one at
 * a time; pthreads does pthread_create + pthread_join 100 at a time and one at
 * a time. Beside the fresh round, the least that round must do: write N task
 * handles to memory new to the process.
 */
#include "bench.h"

#include <weft.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void *thread_nop(void *arg) { return arg; }

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
 * AArch64 (two cache lines; runtime/core/core.h pins it), and the mapping asks
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

static void spawn_rows(const double *w, const double *w2, const double *w1,
                             const double *p, const double *p1, const double *touch)
{
    static char d_all[240], d_touch[300], d_again[200], d_each[160];
    snprintf(d_all, sizeof d_all,
             "weft: %ld coroutines spawned from a coroutine, then all joined, each join "
             "checking its task's result, in a fresh runtime; pthreads: %ld "
             "pthread_create+join, 100 at a time", opt.spawn_weft, opt.spawn_pth);
    snprintf(d_again, sizeof d_again,
             "the same again in the same runtime, whose memory the first round left "
             "(weft: %ld spawned, then all joined; pthreads as above)", opt.spawn_weft);
    snprintf(d_each, sizeof d_each,
             "spawn, then join, %ld times (pthreads: %ld times)", opt.spawn_weft, opt.spawn_pth);
    snprintf(d_touch, sizeof d_touch,
             "the fresh round against the least it must do: write %ld handles of %u bytes "
             "to memory new to the process (memset; in each run, the mean of one such "
             "write just before the round and one just after it)", opt.spawn_weft, HANDLE_BYTES);
    add_row("spawn", "spawn_join", "all spawned, then joined; new runtime", "ns/task",
            FASTER, w, p, opt.runs)->detail = d_all;
    add_row("spawn", "spawn_join_again", "the same again, memory reused", "ns/task",
            FASTER, w2, p, opt.runs)->detail = d_again;
    add_row("spawn", "spawn_join_each", "one at a time: spawn, then join", "ns/task",
            FASTER, w1, p1, opt.runs)->detail = d_each;
    row *r = add_row("spawn", "spawn_join_vs_first_touch",
                     "new runtime vs first touch of the memory", "ns/task", FASTER, w, touch,
                     opt.runs);
    r->other = "first touch";
    r->detail = d_touch;
}

void bench_spawn(void)
{
    double w[RUNS_MAX], w2[RUNS_MAX], p[RUNS_MAX], w1[RUNS_MAX], p1[RUNS_MAX], touch[RUNS_MAX];
    weft_config cfg = { .workers = opt.workers };
    for (int r = 0; r < opt.runs; r++) {
        progress_run(r + 1, opt.runs);
        progress_note("weft, all spawned then joined");
        double rounds[3] = { 0 };
        check(weft_main(&cfg, spawn_root, rounds, NULL), "weft_main");
        touch[r] = rounds[2];
        w[r] = rounds[0];
        w2[r] = rounds[1];
        progress_note("pthreads, 100 at a time");
        p[r] = spawn_pthreads(100);
        progress_note("weft, one at a time");
        check(weft_main(&cfg, spawn_each, &w1[r], NULL), "weft_main");
        progress_note("pthreads, one at a time");
        p1[r] = spawn_pthreads(1);
    }
    spawn_rows(w, w2, w1, p, p1, touch);
    chart_group("spawn.svg", "Start a task that does nothing and wait for it", "spawn");
}
