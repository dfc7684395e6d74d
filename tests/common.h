/* SPDX-License-Identifier: MIT */
/* Helpers shared by the test suites. */
#ifndef WEFT_TEST_COMMON_H
#define WEFT_TEST_COMMON_H

#include <criterion/criterion.h>
#include <weft.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WEFT_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define WEFT_TEST_SANITIZED 1
#endif
#endif
#ifndef WEFT_TEST_SANITIZED
#define WEFT_TEST_SANITIZED 0
#endif

#if defined(__SANITIZE_THREAD__)
#define WEFT_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT_TEST_TSAN 1
#endif
#endif
#ifndef WEFT_TEST_TSAN
#define WEFT_TEST_TSAN 0
#endif

/* Instrumented runs are 20-100 times slower, and ThreadSanitizer counts every
 * live coroutine as a thread (at most 8128): big counts shrink there. */
static inline size_t scaled(size_t n)
{
    if (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND) {
        size_t m = n / 100;
        return m ? m : 1;
    }
    return n;
}

/* Set by scripts/dev for runs under qemu-user, which accepts madvise() without
 * doing anything (so no guard pages) and ignores the guest's RLIMIT_AS. */
static inline bool emulated(void)
{
    return getenv("WEFT_TEST_EMULATED") != NULL;
}

/* The worker counts every scheduler test runs with. */
static const unsigned sweep_workers[] = { 1, 2, 4 };
#define SWEEP_N (sizeof(sweep_workers) / sizeof(sweep_workers[0]))

/* Runs fn(arg) as the first coroutine of a fresh runtime with `workers` workers
 * and returns its result; the runtime's own errors fail the test. */
static inline void *run_with(unsigned workers, weft_fn fn, void *arg)
{
    weft_config cfg = { .workers = workers };
    void *result = (void *)0xdead;
    int err = weft_main(&cfg, fn, arg, &result);
    cr_assert_eq(err, 0, "weft_main with %u workers failed: %d", workers, err);
    return result;
}

/* The IO backends IO suites run over (liburing's FOR_ALL_TEST_CONFIGS idea).
 * One the kernel refuses (io_uring under qemu-user) is skipped, and so is
 * io_uring under Valgrind. */
static const int sweep_backends[] = { WEFT_IO_URING, WEFT_IO_EPOLL };
#define BACKENDS_N (sizeof(sweep_backends) / sizeof(sweep_backends[0]))
static const char *const backend_name[] __attribute__((unused)) = { "auto", "io_uring", "epoll" };

static inline bool backend_available(int backend)
{
    /* Valgrind holds its lock across io_uring_enter: the runtime only polls
     * its rings there, a millisecond at a time, which is too slow to test. */
    if (backend == WEFT_IO_URING && RUNNING_ON_VALGRIND)
        return false;
    weft_config cfg = { .workers = 1, .io_backend = backend };
    weft_rt *rt;
    if (weft_rt_create(&rt, &cfg) != 0)
        return false;
    weft_rt_destroy(rt);
    return true;
}

/* Runs the statement after it once per available IO backend, named b. */
#define FOR_EACH_BACKEND(b)                                                        \
    for (size_t b##_i = 0; b##_i < BACKENDS_N; b##_i++)                             \
        for (int b = sweep_backends[b##_i], b##_go = backend_available(b); b##_go; b##_go = 0)

/* Runs the statement after it once per available IO backend, named b, and per
 * worker count of the array `counts`, named w (liburing's FOR_ALL_TEST_CONFIGS). */
#define FOR_EACH_CONFIG(b, w, counts)                                                  \
    FOR_EACH_BACKEND(b)                                                                \
        for (size_t w##_i = 0; w##_i < sizeof(counts) / sizeof((counts)[0]); w##_i++)  \
            for (unsigned w = (counts)[w##_i], w##_go = 1; w##_go; w##_go = 0)

/* run_with() on the given IO backend. */
static inline void *run_with_io(unsigned workers, int backend, weft_fn fn, void *arg)
{
    weft_config cfg = { .workers = workers, .io_backend = backend };
    void *result = (void *)0xdead;
    int err = weft_main(&cfg, fn, arg, &result);
    cr_assert_eq(err, 0, "weft_main with %u workers on %s failed: %d", workers,
                 backend_name[backend], err);
    return result;
}


/* A connected pair of TCP sockets on loopback, Nagle off on both; the
 * calling test fails if one cannot be made. */
static inline void tcp_pair(int sv[2])
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t n = sizeof sa;
    cr_assert_geq(lfd, 0);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(lfd, 1), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sa, &n), 0);
    sv[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(connect(sv[1], (struct sockaddr *)&sa, sizeof sa), 0);
    sv[0] = accept(lfd, NULL, NULL);
    cr_assert_geq(sv[0], 0);
    cr_assert_eq(fcntl(sv[0], F_SETFD, FD_CLOEXEC), 0);
    int one = 1;
    cr_assert_eq(setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), 0);
    cr_assert_eq(setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), 0);
    close(lfd);
}

/* A TCP listener on loopback whose accept queue is full, so that a connection
 * to it waits (the kernel drops its SYNs) until the listener accepts: for
 * connects that must time out. Its address goes to *sa; the connections that
 * fill it, at most `max`, to fill[] and their count to *nfill, for the caller
 * to close with the listener. Returns the listener, or -1. */
static inline int full_listener(struct sockaddr_in *sa, int fill[], int max, int *nfill)
{
    *nfill = 0;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    *sa = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof *sa;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)sa, sizeof *sa) || listen(lfd, 0) ||
        getsockname(lfd, (struct sockaddr *)sa, &len))
        return -1;
    while (*nfill < max) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            return -1;
        fill[(*nfill)++] = fd;
        if (connect(fd, (struct sockaddr *)sa, sizeof *sa) == 0)
            continue;
        if (errno != EINPROGRESS)
            return -1;
        /* On loopback a connection the queue takes is made at once. */
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        if (poll(&p, 1, 300) == 0)
            return lfd;   /* not taken: the queue is full */
    }
    return -1;
}

/* The process's size and resident size in bytes, from /proc/self/statm; 0 if
 * it cannot be read. */
static inline void proc_memory(size_t *size, size_t *resident)
{
    size_t pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%zu %zu", &pages, &rss) != 2)
            pages = rss = 0;
        fclose(f);
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (size)
        *size = pages * page;
    if (resident)
        *resident = rss * page;
}

/* The threads of this process named `name` (their comm): fills tids with up
 * to max of them and returns how many there are. */
static inline int threads_named(const char *name, int tids[], int max)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;   /* it ended meanwhile */
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = 0;
        fclose(f);
        if (strcmp(comm, name) == 0) {
            if (n < max)
                tids[n] = atoi(e->d_name);
            n++;
        }
    }
    if (d)
        closedir(d);
    return n;
}

/* The CPU time of this process's thread tid so far, in nanoseconds, from
 * /proc/self/task/TID/schedstat; 0 if it cannot be read. */
static inline unsigned long long thread_cpu_ns(int tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
    FILE *f = fopen(path, "r");
    unsigned long long ns = 0;
    if (f) {
        if (fscanf(f, "%llu", &ns) != 1)
            ns = 0;
        fclose(f);
    }
    return ns;
}

/* The times this process's thread tid has been put on a CPU so far (the
 * third field of its schedstat); -1 if it cannot be read. Unlike the run
 * delay, which the kernel adds only once a waiting thread runs, it tells at
 * once whether a thread woken meanwhile has run yet. */
static inline long long thread_runs(int tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
    FILE *f = fopen(path, "r");
    unsigned long long ran, waited, runs;
    long long n = -1;
    if (f) {
        if (fscanf(f, "%llu %llu %llu", &ran, &waited, &runs) == 3)
            n = (long long)runs;
        fclose(f);
    }
    return n;
}

/* The times this process's thread tid gave up its CPU of its own accord (its
 * sleeps) so far, from /proc/self/task/TID/status; -1 if it cannot be read. */
static inline long thread_sleeps(int tid)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    FILE *f = fopen(path, "r");
    long n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

/* Recurses until the stack overflows: 256 bytes a frame, each a frame of its
 * own (noinline; the addition after the call keeps it from being a loop). */
static __attribute__((unused, noinline)) int recurse(volatile char *prev, int depth)
{
    volatile char frame[256];
    frame[0] = (char)depth;
    frame[1] = prev ? prev[0] : 0;
    if (depth == -1)   /* never: keeps the compiler from calling this infinite */
        return 0;
    return recurse(frame, depth + 1) + frame[1];
}

/* Runs body(arg) in a child process whose stderr is a pipe. Returns what the
 * child wrote there, to free(), and its wait status in *status. */
static inline char *stderr_of_child(void (*body)(const void *), const void *arg, int *status)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        body(arg);
        _exit(0);
    }
    close(fds[1]);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    ssize_t got;
    while (len < cap - 1 && (got = read(fds[0], buf + len, cap - 1 - len)) > 0)
        len += (size_t)got;
    buf[len] = '\0';
    close(fds[0]);
    cr_assert_eq(waitpid(pid, status, 0), pid);
    return buf;
}

#endif
