/* SPDX-License-Identifier: MIT */
/*
 * memory: what a blocked task costs in memory. weft: N coroutines in a
 * chain, each blocked in weft_join of the next, default stacks (256 KiB
 * reserved); pthreads: threads blocked on a condition variable, with the
 * default stack and with 64 KiB stacks.
 *
 * Two measures, read from /proc/self/status before the tasks start and once
 * all of them are blocked, divided by the number of tasks:
 *   - VmRSS, the memory resident: only the pages a task has touched. A
 *     thread that blocks at once touches the same few pages (its descriptor
 *     and TLS at the top of its stack, a page of frames) whatever stack it
 *     reserved, so its RSS does not depend on the stack size, and the
 *     64 KiB-stack threads measure the same as the default ones. Where
 *     transparent huge pages back stacks (THP "always") they differ.
 *   - VmSize, the address space reserved: there the stack size shows. It
 *     bounds how many tasks fit (address space, overcommit, map counts).
 * Each measurement runs in a freshly forked child, so that one run's pools
 * cannot flatter the next.
 */
#include "bench.h"

#include <weft.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The kinds of task measured; each in its own child. */
enum { KIND_WEFT, KIND_PTH_DEFAULT, KIND_PTH_64K, NKINDS };
#define STACK_64K (64 * 1024)

/* What a child measured, per task, in KiB; fit: the tasks that started. */
typedef struct { double rss, vm; long fit; } mem_fig;

/* VmRSS and VmSize of this process, in KiB. */
static void vm_now(long *rss, long *size)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    *rss = *size = -1;
    while (f && fgets(line, sizeof line, f)) {
        sscanf(line, "VmRSS: %ld kB", rss);
        sscanf(line, "VmSize: %ld kB", size);
    }
    if (f)
        fclose(f);
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

/* In a child: n coroutines blocked. */
static mem_fig mem_weft_child(long n)
{
    weft_rt *rt;
    weft_task *t;
    weft_config cfg = { .workers = opt.workers };
    long rss0, vm0, rss1, vm1, alive;
    check(weft_rt_create(&rt, &cfg), "weft_rt_create");
    vm_now(&rss0, &vm0);
    atomic_store(&mem_alive, 0);
    atomic_store(&mem_release, 0);
    check(weft_spawn_on(rt, &t, mem_link, (void *)(intptr_t)n), "weft_spawn_on");
    char total[32], now[32];
    grouped(total, sizeof total, n);
    while ((alive = atomic_load(&mem_alive)) < n) {
        progress_tick("weft, %s of %s coroutines blocked", grouped(now, sizeof now, alive), total);
        usleep(1000);
    }
    usleep(10000);
    vm_now(&rss1, &vm1);
    mem_fig r = { (double)(rss1 - rss0) / (double)n, (double)(vm1 - vm0) / (double)n,
                  atomic_load(&mem_alive) };
    atomic_store_explicit(&mem_release, 1, memory_order_release);
    progress_note("weft, unwinding the chain");
    check(weft_join(t, NULL), "weft_join");
    weft_rt_destroy(rt);
    return r;
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

/* In a child: up to n threads blocked; stack 0: the default. */
static mem_fig mem_threads_child(long n, size_t stack, const char *who)
{
    pthread_t *t = calloc((size_t)n, sizeof *t);
    pthread_attr_t attr;
    long rss0, vm0, rss1, vm1, k = 0;
    if (!t) {
        fail("memory: no memory for %ld thread ids", n);
        return (mem_fig){ -1, -1, 0 };
    }
    pthread_attr_init(&attr);
    if (stack)
        pthread_attr_setstacksize(&attr, stack);
    gate_open = 0;
    vm_now(&rss0, &vm0);
    char total[32], now[32];
    grouped(total, sizeof total, n);
    for (; k < n; k++) {
        progress_tick("%s, %s of %s threads blocked", who, grouped(now, sizeof now, k), total);
        if (pthread_create(&t[k], &attr, thread_blocked, NULL) != 0)
            break;
    }
    usleep(10000);
    vm_now(&rss1, &vm1);
    progress_note("%s, releasing the threads", who);
    pthread_mutex_lock(&gate_m);
    gate_open = 1;
    pthread_cond_broadcast(&gate_c);
    pthread_mutex_unlock(&gate_m);
    for (long i = 0; i < k; i++)
        pthread_join(t[i], NULL);
    free(t);
    pthread_attr_destroy(&attr);
    if (!k)
        return (mem_fig){ -1, -1, 0 };
    return (mem_fig){ (double)(rss1 - rss0) / (double)k, (double)(vm1 - vm0) / (double)k, k };
}

static const char *kind_name[NKINDS] = {
    [KIND_WEFT] = "weft", [KIND_PTH_DEFAULT] = "pthreads, default stack",
    [KIND_PTH_64K] = "pthreads, 64 KiB stack",
};

/* Runs one measurement in a forked child so each run starts from a fresh heap. */
static mem_fig in_child(int kind, long n)
{
    int fd[2];
    mem_fig res = { -1, -1, 0 };
    if (pipe(fd) != 0) {
        fail("memory: pipe for the measuring child");
        return res;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        mem_fig v = kind == KIND_WEFT ? mem_weft_child(n)
                  : mem_threads_child(n, kind == KIND_PTH_64K ? STACK_64K : 0, kind_name[kind]);
        if (write(fd[1], &v, sizeof v) != (ssize_t)sizeof v)
            _exit(2);
        _exit(failures() ? 1 : 0);
    }
    close(fd[1]);
    if (pid < 0 || read(fd[0], &res, sizeof res) != (ssize_t)sizeof res)
        res = (mem_fig){ -1, -1, 0 };
    close(fd[0]);
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail("memory: the measuring child (%s) failed", kind_name[kind]);
    return res;
}

/* The default stack of a new thread, in KiB. */
static long default_stack_kib(void)
{
    pthread_attr_t a;
    size_t sz = 0;
    if (pthread_getattr_default_np(&a) == 0) {
        pthread_attr_getstacksize(&a, &sz);
        pthread_attr_destroy(&a);
    }
    return (long)(sz / 1024);
}

void bench_memory(void)
{
    double rss[NKINDS][RUNS_MAX], vm[NKINDS][RUNS_MAX];
    long fit[NKINDS] = { 0 };
    const long asked[NKINDS] = { opt.mem_weft, opt.mem_pth, opt.mem_pth };
    for (int r = 0; r < opt.runs; r++) {
        progress_run(r + 1, opt.runs);
        for (int k = 0; k < NKINDS; k++) {
            progress_note("%s", kind_name[k]);
            mem_fig m = in_child(k, asked[k]);
            rss[k][r] = m.rss;
            vm[k][r] = m.vm;
            fit[k] = m.fit;
        }
    }
    if (fit[KIND_WEFT] != opt.mem_weft)
        fail("memory: %ld of %ld coroutines blocked", fit[KIND_WEFT], opt.mem_weft);

    static char d_rss[480], d_vm[300], d_vm64[200], d_rss64[240];
    char nw[32], nd[32], n64[32], np[32];
    long stack = default_stack_kib();
    grouped(nw, sizeof nw, fit[KIND_WEFT]);
    grouped(nd, sizeof nd, fit[KIND_PTH_DEFAULT]);
    grouped(n64, sizeof n64, fit[KIND_PTH_64K]);
    grouped(np, sizeof np, opt.mem_pth);
    snprintf(d_rss, sizeof d_rss,
             "VmRSS per blocked task; weft: %s coroutines, each blocked in weft_join, "
             "256 KiB stack reserved; pthreads: %s of %s threads started, each blocked on a "
             "condvar, default stack (%ld KiB here); RSS counts touched pages only, so "
             "64 KiB stacks give the same (row memory_rss_64k)", nw, nd, np, stack);
    snprintf(d_rss64, sizeof d_rss64,
             "as memory_rss, with the threads on 64 KiB stacks (%s of %s started): the same "
             "pages are touched, so the same RSS unless huge pages back the stacks",
             n64, np);
    snprintf(d_vm, sizeof d_vm,
             "VmSize (address space reserved) per blocked task, the same tasks as "
             "memory_rss; weft: stack slots reserved in chunks; pthreads: the default "
             "stack (%ld KiB here) and a guard page each", stack);
    snprintf(d_vm64, sizeof d_vm64,
             "as memory_reserved, with the threads on 64 KiB stacks (%s of %s started)",
             n64, np);
    add_row("memory", "memory_rss", "RSS per blocked task", "KiB", LESS,
            rss[KIND_WEFT], rss[KIND_PTH_DEFAULT], opt.runs)->detail = d_rss;
    row *r64 = add_row("memory", "memory_rss_64k", "RSS, threads on 64 KiB stacks", "KiB", LESS,
                       rss[KIND_WEFT], rss[KIND_PTH_64K], opt.runs);
    r64->detail = d_rss64;
    r64->in_table = 0;
    add_row("memory", "memory_reserved", "address space per blocked task", "KiB", LESS,
            vm[KIND_WEFT], vm[KIND_PTH_DEFAULT], opt.runs)->detail = d_vm;
    add_row("memory", "memory_reserved_64k", "address space, threads on 64 KiB stacks", "KiB",
            LESS, vm[KIND_WEFT], vm[KIND_PTH_64K], opt.runs)->detail = d_vm64;

    FILE *f = open_out("memory.csv");
    fprintf(f, "kind,tasks_started,tasks_asked,rss_kib_per_task_median,"
               "address_space_kib_per_task_median\n");
    panel p[2] = {
        { .title = "Resident memory (RSS) per blocked task", .unit = "KiB" },
        { .title = "Address space reserved per blocked task", .unit = "KiB" },
    };
    static char labels[NKINDS][48];
    for (int k = 0; k < NKINDS; k++) {
        figure fr = summarize(rss[k], opt.runs), fv = summarize(vm[k], opt.runs);
        if (k == KIND_PTH_DEFAULT)
            snprintf(labels[k], sizeof labels[k], "pthreads, %ld KiB stack", stack);
        else
            snprintf(labels[k], sizeof labels[k], "%s", kind_name[k]);
        fprintf(f, "\"%s\",%ld,%ld,%.3f,%.3f\n", labels[k], fit[k], asked[k], fr.med, fv.med);
        int color = k == KIND_WEFT ? COLOR_WEFT : k == KIND_PTH_DEFAULT ? COLOR_PTHREADS : COLOR_ALT;
        p[0].bars[p[0].n++] = (bar){ labels[k], fr, color };
        p[1].bars[p[1].n++] = (bar){ labels[k], fv, color };
    }
    close_out(f);
    chart_panels("memory.svg", "Memory per blocked task", p, 2);
}
