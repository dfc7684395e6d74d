/* SPDX-License-Identifier: MIT */
/*
 * fork() from a coroutine. A coroutine forks while others of its runtime
 * serve echo traffic over loopback TCP. Whatever the child does, the parent's
 * echoes stay byte-exact and its runtime finishes cleanly. In the child the
 * thread that forked is a plain thread: weft's IO, timer and sync calls are
 * the plain calls, a fresh runtime works, the parent's runtime and task
 * handles give -ECHILD, and a coroutine that returns there stops the child
 * with a message. Every case runs on both backends, on 1, 2 and 4 workers,
 * several times over (under Valgrind, once on 2 workers).
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#if WEFT_TEST_TSAN
/* A child of a threaded process that starts threads of its own (a fresh
 * runtime) is what this suite tests; ThreadSanitizer stops such a child by
 * default. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "die_after_fork=0";
}
#endif

/*
 * Whether a child of this threaded process can allocate and start threads (a
 * runtime of its own), which weft promises. The tools cannot follow:
 * AddressSanitizer (GCC 12's) takes none of its allocator's locks across a
 * fork, so one that a parent thread held stays held in the child, and
 * whatever allocates there may block for good; ThreadSanitizer keeps the
 * parent's threads in its registry and stops a child whose new thread gets
 * the id of one of them; qemu-user trips its own assertions when a forked
 * child starts a thread.
 */
static bool child_can_allocate(void)
{
    return !WEFT_TEST_SANITIZED;
}

static bool child_threads_work(void)
{
    return child_can_allocate() && !emulated();
}

enum child_does {
    CHILD_EXITS,          /* _exit(0) at once */
    CHILD_EXECS,          /* execs /bin/true */
    CHILD_PLAIN_CALLS,    /* weft's calls, as from a plain thread */
    CHILD_FRESH_RUNTIME,  /* runs coroutines in a runtime of its own */
    CHILD_INHERITED,      /* calls on the parent's runtime and task handles */
    CHILD_RETURNS,        /* the forking coroutine returns */
};

#define CLIENTS       4
#define MSG_MAX       3000
/* Each client's echoes before the fork and after the child has been reaped,
 * fewer under Valgrind, where one echo between threads takes a good part of
 * a second; and the runs per configuration (one under Valgrind, see sweep). */
#define ROUNDS_BEFORE (RUNNING_ON_VALGRIND ? 5u : 20u)
#define ROUNDS_AFTER  (RUNNING_ON_VALGRIND ? 10u : 40u)
#define REPEATS       3

/* Instrumented runs are slow: waits that end a hung run are generous. */
#define DEADLINE_NS   (120ull * 1000000000ull)

struct client_result {
    int      step;      /* 0: every echo came back intact; else where it failed */
    long     err;
    unsigned round;
};

/* One run. A static, so that the child (and Valgrind in it) still finds
 * everything the parent's threads held. */
static struct scene {
    enum child_does      child;
    int                  backend;
    unsigned             workers;
    weft_rt             *rt;
    struct sockaddr_in   addr;
    int                  listener;
    weft_wg              warmed;          /* clients that finished their first rounds */
    _Atomic int          reaped;          /* the child's status is in */
    weft_task           *clients[CLIENTS];
    _Atomic int          client_fds[CLIENTS];
    struct client_result results[CLIENTS];
    weft_chan           *gate;            /* a coroutine of the parent waits on it */
    /* what the forker saw */
    long                 fork_err;
    int                  status;
    bool                 child_hung;
    char                 report[512];
} S;

static uint32_t mix(uint32_t a, uint32_t b)
{
    uint32_t h = a * 0x9e3779b1u ^ (b + 0x7f4a7c15u);
    h ^= h >> 15;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    return h;
}

/* ---- the parent's echo traffic -------------------------------------------- */

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    weft_deadline(weft_now() + DEADLINE_NS);
    char buf[4096];
    long err = 0;
    for (;;) {
        ssize_t n = weft_recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            err = n;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t m = weft_send(fd, buf + off, (size_t)(n - off), 0);
            if (m <= 0) {
                err = m ? m : -EPIPE;
                goto out;
            }
            off += m;
        }
    }
out:
    weft_close(fd);
    return (void *)err;
}

static void *server(void *arg)
{
    (void)arg;
    weft_deadline(weft_now() + DEADLINE_NS);
    weft_task *conns[CLIENTS];
    int n = 0;
    long err = 0;
    for (; n < CLIENTS; n++) {
        int fd = weft_accept(S.listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            err = fd;
            break;
        }
        if (weft_spawn(&conns[n], echo_conn, (void *)(intptr_t)fd) != 0) {
            weft_close(fd);
            err = -ENOMEM;
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        void *r;
        weft_join(conns[i], &r);
        if ((long)(intptr_t)r && !err)
            err = (long)(intptr_t)r;
    }
    return (void *)err;
}

/* One echo: a message of a length and pattern of its own, sent whole and
 * read back whole. Returns 0 or the failing step. */
static int echo_once(int fd, unsigned id, unsigned round, long *err)
{
    unsigned char out[MSG_MAX], in[MSG_MAX];
    uint32_t h = mix(id, round);
    size_t len = 1 + h % MSG_MAX;
    for (size_t k = 0; k < len; k++)
        out[k] = (unsigned char)(h + k * 7);
    for (size_t off = 0; off < len;) {
        ssize_t m = weft_send(fd, out + off, len - off, 0);
        if (m <= 0) {
            *err = m;
            return 2;
        }
        off += (size_t)m;
    }
    for (size_t off = 0; off < len;) {
        ssize_t m = weft_recv(fd, in + off, len - off, 0);
        if (m <= 0) {
            *err = m;
            return 3;
        }
        off += (size_t)m;
    }
    for (size_t k = 0; k < len; k++) {
        if (in[k] != (unsigned char)(h + k * 7)) {
            *err = (long)k;
            return 4;
        }
    }
    return 0;
}

static void *client(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    struct client_result *res = &S.results[id];
    weft_deadline(weft_now() + DEADLINE_NS);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    long err = weft_connect(fd, (struct sockaddr *)&S.addr, sizeof S.addr);
    if (err) {
        res->step = 1;
        res->err = err;
        weft_wg_done(&S.warmed);
        weft_close(fd);
        return NULL;
    }
    atomic_store(&S.client_fds[id], fd);
    unsigned after = 0;
    for (unsigned round = 0;; round++) {
        int step = echo_once(fd, id, round, &err);
        if (round + 1 == ROUNDS_BEFORE || (step && round < ROUNDS_BEFORE))
            weft_wg_done(&S.warmed);
        if (step) {
            res->step = step;
            res->err = err;
            res->round = round;
            break;
        }
        if (round + 1 >= ROUNDS_BEFORE && atomic_load(&S.reaped) && ++after >= ROUNDS_AFTER)
            break;
    }
    weft_close(fd);
    return NULL;
}

/* Waits on the gate until the forker closes it: the child's sends on its copy
 * of the gate must not reach it. */
static void *gatekeeper(void *arg)
{
    (void)arg;
    weft_deadline(weft_now() + DEADLINE_NS);
    int v = 0;
    int r = weft_chan_recv(S.gate, &v);
    return (void *)(intptr_t)(r ? r : v);
}

/* ---- the child ---------------------------------------------------------------- */

static char child_note[256];

/* Records the first failure of the child's checks. */
static bool check(bool ok, const char *what, long got)
{
    if (!ok && !child_note[0])
        snprintf(child_note, sizeof child_note, "%s (got %ld)", what, got);
    return ok;
}

static void *add_one(void *arg)
{
    return (void *)((uintptr_t)arg + 1);
}

/* Whether an io_uring's memory is mapped in this process. Allocates
 * nothing (see child_can_allocate). */
static bool rings_mapped(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    static const char name[] = "io_uring";
    char buf[4096 + sizeof name];
    size_t keep = 0;   /* the end of the last read, which a name may straddle */
    bool found = false;
    ssize_t n;
    while (!found && (n = read(fd, buf + keep, sizeof buf - 1 - keep)) > 0) {
        size_t len = keep + (size_t)n;
        buf[len] = 0;
        found = strstr(buf, name) != NULL;
        keep = len < sizeof name - 1 ? len : sizeof name - 1;
        memmove(buf, buf + len - keep, keep);
    }
    close(fd);
    return found;
}

static void plain_calls(void)
{
    check(!rings_mapped(), "the parent's rings are not mapped in the child", 1);
    check(weft_self() == NULL, "weft_self() is NULL in the child", 0);
    long r = weft_worker();
    check(r == -EPERM, "weft_worker() is -EPERM", r);
    weft_task *t;
    r = weft_spawn(&t, add_one, NULL);
    check(r == -EPERM, "weft_spawn() is -EPERM", r);

    int p[2];
    if (!check(pipe(p) == 0, "pipe", errno))
        return;
    r = weft_write(p[1], "fork", 4);
    check(r == 4, "weft_write on the child's pipe", r);
    char buf[8] = { 0 };
    r = weft_read(p[0], buf, sizeof buf);
    check(r == 4 && memcmp(buf, "fork", 4) == 0, "weft_read on the child's pipe", r);
    r = weft_poll(p[1], POLLOUT);
    check(r >= 0 && (r & POLLOUT), "weft_poll on the child's pipe", r);

    uint64_t t0 = weft_now();
    r = weft_sleep(2000000);
    check(r == 0, "weft_sleep", r);
    check(weft_now() - t0 >= 2000000, "weft_sleep slept", (long)(weft_now() - t0));

    void *res = NULL;
    r = weft_offload(add_one, (void *)41, &res);
    check(r == 0 && (uintptr_t)res == 42, "weft_offload runs the call", r);

    weft_mutex m = WEFT_MUTEX_INIT;
    r = weft_mutex_lock(&m);
    check(r == 0, "weft_mutex_lock", r);
    r = weft_mutex_unlock(&m);
    check(r == 0, "weft_mutex_unlock", r);
    if (child_can_allocate()) {
        weft_chan *ch;
        r = weft_chan_create(&ch, sizeof(int), 1);
        if (check(r == 0, "weft_chan_create", r)) {
            int v = 7, w = 0;
            r = weft_chan_send(ch, &v);
            check(r == 0, "weft_chan_send", r);
            r = weft_chan_recv(ch, &w);
            check(r == 0 && w == 7, "weft_chan_recv", r);
            r = weft_chan_destroy(ch);
            check(r == 0, "weft_chan_destroy", r);
        }
    }

    /* A descriptor the parent's coroutines wait on: the child's weft_close
     * closes its own copy and nothing of the parent's. */
    int fd = atomic_load(&S.client_fds[0]);
    r = weft_close(fd);
    check(r == 0, "weft_close on an inherited socket", r);
    r = weft_close(p[0]);
    check(r == 0, "weft_close on the child's pipe", r);
    r = weft_close(p[1]);
    check(r == 0, "weft_close on the child's pipe", r);
}

/* Two coroutines of the child's own runtime bounce a counter over pipes. */
struct bounce {
    int in, out;
    int rounds;
    bool starts;
};

static void *bouncer(void *arg)
{
    struct bounce *b = arg;
    uint32_t v = 0;
    for (int i = 0; i < b->rounds; i++) {
        if (b->starts && weft_write(b->out, &v, sizeof v) != (ssize_t)sizeof v)
            return (void *)1;
        if (weft_read(b->in, &v, sizeof v) != (ssize_t)sizeof v)
            return (void *)2;
        v++;
        if (!b->starts && weft_write(b->out, &v, sizeof v) != (ssize_t)sizeof v)
            return (void *)3;
        if (i % 16 == 0 && weft_sleep(1000) != 0)
            return (void *)4;
    }
    return (void *)(uintptr_t)v;
}

static void *fan_out(void *arg)
{
    (void)arg;
    weft_task *t[64];
    for (uintptr_t i = 0; i < 64; i++)
        if (weft_spawn(&t[i], add_one, (void *)i) != 0)
            return (void *)0;
    uintptr_t sum = 0;
    for (int i = 0; i < 64; i++) {
        void *r = NULL;
        weft_join(t[i], &r);
        sum += (uintptr_t)r;
    }
    return (void *)sum;
}

static void fresh_runtime(void)
{
    weft_config cfg = { .workers = S.workers, .io_backend = S.backend };
    weft_rt *rt;
    long r = weft_rt_create(&rt, &cfg);
    if (!check(r == 0, "weft_rt_create in the child", r))
        return;
    int ab[2], ba[2];
    if (!check(pipe(ab) == 0 && pipe(ba) == 0, "pipe", errno))
        return;
    struct bounce a = { .in = ba[0], .out = ab[1], .rounds = 200, .starts = true };
    struct bounce b = { .in = ab[0], .out = ba[1], .rounds = 200, .starts = false };
    weft_task *ta, *tb, *tf;
    check(weft_spawn_on(rt, &tb, bouncer, &b) == 0, "weft_spawn_on the child's runtime", 0);
    check(weft_spawn_on(rt, &ta, bouncer, &a) == 0, "weft_spawn_on the child's runtime", 0);
    check(weft_spawn_on(rt, &tf, fan_out, NULL) == 0, "weft_spawn_on the child's runtime", 0);
    void *ra = NULL, *rb = NULL, *rf = NULL;
    r = weft_join(ta, &ra);
    check(r == 0 && (uintptr_t)ra >= 200, "a coroutine of the child's runtime did its IO", (long)(uintptr_t)ra);
    r = weft_join(tb, &rb);
    check(r == 0 && (uintptr_t)rb >= 200, "a coroutine of the child's runtime did its IO", (long)(uintptr_t)rb);
    r = weft_join(tf, &rf);
    check(r == 0 && (uintptr_t)rf == 64 * 65 / 2, "the child's runtime spawned and joined", (long)(uintptr_t)rf);
    r = weft_rt_destroy(rt);
    check(r == 0, "weft_rt_destroy of the child's runtime", r);
    close(ab[0]);
    close(ab[1]);
    close(ba[0]);
    close(ba[1]);

    void *res = NULL;
    r = weft_main(&cfg, fan_out, NULL, &res);
    check(r == 0 && (uintptr_t)res == 64 * 65 / 2, "weft_main in the child", r);
}

/* A coroutine of the child's own runtime, handed an inherited handle. */
static void *join_inherited(void *arg)
{
    return (void *)(intptr_t)weft_join(arg, NULL);
}

static void inherited_handles(void)
{
    weft_task *t = S.clients[0];
    long r = weft_spawn_on(S.rt, NULL, add_one, NULL);
    check(r == -ECHILD, "weft_spawn_on the parent's runtime is -ECHILD", r);
    r = weft_join(t, NULL);
    check(r == -ECHILD, "weft_join of the parent's task is -ECHILD", r);
    r = weft_cancel(t);
    check(r == -ECHILD, "weft_cancel of the parent's task is -ECHILD", r);
    r = weft_detach(t);
    check(r == -ECHILD, "weft_detach of the parent's task is -ECHILD", r);
    r = weft_rt_destroy(S.rt);
    check(r == -ECHILD, "weft_rt_destroy of the parent's runtime is -ECHILD", r);
    /* The gate's receiver is the parent's coroutine: the hand-over happens
     * in the child's copy, and the wake-up goes nowhere. */
    int v = 1;
    r = weft_chan_try_send(S.gate, &v);
    check(r == 0 || r == -EAGAIN, "weft_chan_try_send to a channel the parent's coroutine waits on", r);

    if (!child_threads_work())
        return;
    weft_config cfg = { .workers = S.workers, .io_backend = S.backend };
    void *res = NULL;
    r = weft_main(&cfg, join_inherited, t, &res);
    check(r == 0 && (intptr_t)res == -ECHILD,
          "weft_join of the parent's task from the child's own coroutine is -ECHILD", (long)(intptr_t)res);
}

/* The forking coroutine, in the child. Returns only for CHILD_RETURNS. */
static void child_main(int report)
{
    switch (S.child) {
    case CHILD_EXITS:
        _exit(0);
    case CHILD_EXECS:
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    case CHILD_PLAIN_CALLS:
        plain_calls();
        break;
    case CHILD_FRESH_RUNTIME:
        fresh_runtime();
        break;
    case CHILD_INHERITED:
        inherited_handles();
        break;
    case CHILD_RETURNS:
        dup2(report, STDERR_FILENO);
        return;
    }
    const char *note = child_note[0] ? child_note : "ok";
    ssize_t rc = write(report, note, strlen(note));
    (void)rc;
    _exit(child_note[0] ? 1 : 0);
}

/* ---- the forking coroutine, in the parent ------------------------------------ */

static void *wait_blocking(void *arg)
{
    pid_t pid = *(pid_t *)arg;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return (void *)(intptr_t)status;
}

/* Reaps the child without blocking the worker; kills it at the deadline. */
static int reap(pid_t pid, uint64_t deadline)
{
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (weft_now() > deadline) {
            S.child_hung = true;
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return status;
        }
        weft_sleep(1000000);
    }
}

static void *forker(void *arg)
{
    (void)arg;
    weft_wg_wait(&S.warmed);
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        S.fork_err = -errno;
        atomic_store(&S.reaped, 1);
        weft_chan_close(S.gate);
        return NULL;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(report[0]);
        child_main(report[1]);
        return NULL;   /* CHILD_RETURNS: what a careless child does */
    }
    close(report[1]);
    if (pid < 0) {
        S.fork_err = -errno;
        close(report[0]);
        atomic_store(&S.reaped, 1);
        weft_chan_close(S.gate);
        return NULL;
    }
    /* The report ends when the child exits or execs. */
    uint64_t deadline = weft_now() + DEADLINE_NS;
    uint64_t old = weft_deadline(deadline);
    size_t len = 0;
    ssize_t n;
    while (len < sizeof S.report - 1 &&
           (n = weft_read(report[0], S.report + len, sizeof S.report - 1 - len)) > 0)
        len += (size_t)n;
    weft_deadline(old);
    weft_close(report[0]);
    if (S.child == CHILD_EXECS) {
        /* Nothing of a program exec'd can hang here: a helper thread waits. */
        void *status = NULL;
        int err = weft_offload(wait_blocking, &pid, &status);
        S.status = err ? -1 : (int)(intptr_t)status;
    } else {
        S.status = reap(pid, deadline);
    }
    atomic_store(&S.reaped, 1);
    weft_chan_close(S.gate);
    return NULL;
}

/* ---- one run -------------------------------------------------------------------- */

static void run_once(enum child_does child, int backend, unsigned workers)
{
    memset(&S, 0, sizeof S);
    S.child = child;
    S.backend = backend;
    S.workers = workers;
    S.warmed = (weft_wg)WEFT_WG_INIT;
    for (int i = 0; i < CLIENTS; i++)
        atomic_init(&S.client_fds[i], -1);

    S.listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(S.listener, 0);
    S.addr = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof S.addr;
    cr_assert_eq(bind(S.listener, (struct sockaddr *)&S.addr, sizeof S.addr), 0);
    cr_assert_eq(listen(S.listener, 64), 0);
    cr_assert_eq(getsockname(S.listener, (struct sockaddr *)&S.addr, &alen), 0);

    weft_config cfg = { .workers = workers, .io_backend = backend };
    cr_assert_eq(weft_rt_create(&S.rt, &cfg), 0);
    cr_assert_eq(weft_wg_add(&S.warmed, CLIENTS), 0);
    cr_assert_eq(weft_chan_create(&S.gate, sizeof(int), 0), 0);
    weft_task *srv, *fk, *gk;
    cr_assert_eq(weft_spawn_on(S.rt, &gk, gatekeeper, NULL), 0);
    cr_assert_eq(weft_spawn_on(S.rt, &srv, server, NULL), 0);
    for (uintptr_t i = 0; i < CLIENTS; i++)
        cr_assert_eq(weft_spawn_on(S.rt, &S.clients[i], client, (void *)i), 0);
    cr_assert_eq(weft_spawn_on(S.rt, &fk, forker, NULL), 0);

    cr_assert_eq(weft_join(fk, NULL), 0);
    for (int i = 0; i < CLIENTS; i++)
        cr_assert_eq(weft_join(S.clients[i], NULL), 0);
    void *serr = NULL, *gate = NULL;
    cr_assert_eq(weft_join(srv, &serr), 0);
    cr_assert_eq(weft_join(gk, &gate), 0);
    cr_assert_eq(weft_rt_destroy(S.rt), 0, "the parent's runtime did not finish cleanly");
    cr_assert_eq(weft_chan_destroy(S.gate), 0);
    close(S.listener);

    const char *what = backend_name[backend];
    (void)what;   /* the Criterion stand-in prints no messages */
    cr_assert_eq(S.fork_err, 0, "fork failed: %ld", S.fork_err);
    cr_assert(!S.child_hung, "%s, %u workers: the child hung (report \"%s\")", what, workers, S.report);
    for (int i = 0; i < CLIENTS; i++)
        cr_assert_eq(S.results[i].step, 0,
                     "%s, %u workers: the parent's client %d failed at step %d of round %u (%ld)",
                     what, workers, i, S.results[i].step, S.results[i].round, S.results[i].err);
    cr_assert_eq((long)(intptr_t)serr, 0, "%s, %u workers: the parent's echo server failed: %ld",
                 what, workers, (long)(intptr_t)serr);
    cr_assert_eq((long)(intptr_t)gate, -EPIPE, "%s, %u workers: the parent's channel wait ended with %ld",
                 what, workers, (long)(intptr_t)gate);
    if (child == CHILD_RETURNS) {
        cr_assert(WIFSIGNALED(S.status) && WTERMSIG(S.status) == SIGABRT,
                  "%s, %u workers: a child whose coroutine returned was not stopped (status %#x)",
                  what, workers, S.status);
        cr_assert_not_null(strstr(S.report, "fork"), "%s, %u workers: no message about fork: \"%s\"",
                           what, workers, S.report);
        return;
    }
    cr_assert(WIFEXITED(S.status), "%s, %u workers: the child died (status %#x, report \"%s\")",
              what, workers, S.status, S.report);
    cr_assert_eq(WEXITSTATUS(S.status), 0, "%s, %u workers: the child failed: \"%s\"", what, workers,
                 S.report);
    if (child != CHILD_EXITS && child != CHILD_EXECS)
        cr_assert(strcmp(S.report, "ok") == 0, "%s, %u workers: the child reports \"%s\"", what, workers,
                  S.report);
}

/* Under Valgrind each child's leak search at its exit takes seconds (it
 * scans the stacks it inherited), so there the sweep keeps two workers, a
 * coroutine forking while another worker runs; the other stages of CI sweep
 * every count. */
static void sweep(enum child_does child)
{
    if (RUNNING_ON_VALGRIND) {
        FOR_EACH_BACKEND(b)
            run_once(child, b, 2);
        return;
    }
    FOR_EACH_CONFIG(b, w, sweep_workers)
        for (int i = 0; i < REPEATS; i++)
            run_once(child, b, w);
}

Test(fork, a_child_that_exits_at_once_leaves_the_parent_unharmed, .timeout = 600)
{
    sweep(CHILD_EXITS);
}

Test(fork, a_coroutine_can_fork_and_exec, .timeout = 600)
{
    sweep(CHILD_EXECS);
}

Test(fork, in_the_child_io_timer_and_sync_calls_are_plain_calls, .timeout = 600)
{
    sweep(CHILD_PLAIN_CALLS);
}

Test(fork, the_child_can_run_coroutines_in_a_fresh_runtime, .timeout = 600)
{
    if (!child_threads_work())
        cr_skip("the sanitizers and qemu-user cannot follow a child of a threaded process that starts threads");
    sweep(CHILD_FRESH_RUNTIME);
}

Test(fork, the_parents_runtime_and_task_handles_give_ECHILD_in_the_child, .timeout = 600)
{
    sweep(CHILD_INHERITED);
}

Test(fork, a_coroutine_that_returns_in_the_child_stops_it_with_a_message, .timeout = 600)
{
    sweep(CHILD_RETURNS);
}

/* ---- the dump and stall signals across fork -------------------------------------- */

#define MILLI 1000000u

static void *nothing(void *arg)
{
    return arg;
}

/* In a child: runtimes with the default stall signal, then with other stall
 * and dump signals than the parent's, each running a coroutine. 0 if all
 * went, else the step that failed; a hang ends at the alarm. */
static int child_makes_runtimes(void)
{
    alarm(20);
    const weft_config cfgs[] = {
        { .workers = 1, .stall_ns = 50 * MILLI },
        { .workers = 2, .stall_ns = 50 * MILLI, .stall_signal = SIGUSR2, .dump_signal = SIGWINCH },
    };
    for (int i = 0; i < 2; i++) {
        weft_rt *rt;
        weft_task *t;
        if (weft_rt_create(&rt, &cfgs[i]) != 0)
            return 10 + i;
        if (weft_spawn_on(rt, &t, nothing, NULL) != 0 || weft_join(t, NULL) != 0)
            return 20 + i;
        if (weft_rt_destroy(rt) != 0)
            return 30 + i;
    }
    return 0;
}

static _Atomic int stalling;

/* Stalls its worker for 400 ms with the stall signal blocked, so that the
 * report waits its whole time for the backtrace, holding the report's lock. */
static void *stall_unreachable(void *arg)
{
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMAX - 3);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    atomic_store(&stalling, 1);
    uint64_t end = weft_now() + 400 * MILLI;
    while (weft_now() < end)
        ;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return arg;
}

Test(fork, a_child_forked_while_a_stall_report_takes_a_backtrace_makes_runtimes)
{
    if (!child_threads_work() || RUNNING_ON_VALGRIND)
        cr_skip("a child here cannot start threads, or (Valgrind) the monitor cannot run during a stall");
    weft_rt *rt;
    weft_task *t;
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 1, .stall_ns = 50 * MILLI }), 0);
    atomic_store(&stalling, 0);
    cr_assert_eq(weft_spawn_on(rt, &t, stall_unreachable, NULL), 0);
    while (!atomic_load(&stalling))
        usleep(1000);
    /* The report comes at 50 ms and waits up to 100 ms for the signal: forks
     * across that time, so that one falls in it even if the monitor is late. */
    pid_t pids[6];
    for (int i = 0; i < 6; i++) {
        usleep(25000);
        pids[i] = fork();
        cr_assert_neq(pids[i], -1);
        if (pids[i] == 0)
            _exit(child_makes_runtimes());
    }
    for (int i = 0; i < 6; i++) {
        int status;
        cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
        cr_assert(WIFEXITED(status), "child %d did not exit (status %#x: %s)", i, status,
                  WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM ? "it hung" : "killed");
        cr_assert_eq(WEXITSTATUS(status), 0, "child %d failed at step %d", i, WEXITSTATUS(status));
    }
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

/* The child: a runtime with the parent's dump signal, whose dump the signal
 * writes, then runtimes with other signals. */
static void dump_in_child(const void *arg)
{
    (void)arg;
    alarm(20);
    weft_rt *rt;
    weft_task *t;
    if (weft_rt_create(&rt, &(weft_config){ .workers = 1, .dump_signal = SIGUSR1 }) != 0)
        _exit(40);
    if (weft_spawn_on(rt, &t, nothing, NULL) != 0 || weft_join(t, NULL) != 0)
        _exit(41);
    raise(SIGUSR1);
    usleep(300000);   /* the dump thread writes it meanwhile */
    if (weft_rt_destroy(rt) != 0)
        _exit(42);
    _exit(child_makes_runtimes());
}

Test(fork, a_child_uses_any_dump_and_stall_signal_whatever_the_parent_used)
{
    if (!child_threads_work())
        cr_skip("a child here cannot start threads");
    weft_rt *rt;
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 2, .dump_signal = SIGUSR1 }), 0);
    int status;
    char *err = stderr_of_child(dump_in_child, NULL, &status);
    cr_assert_eq(weft_rt_destroy(rt), 0);
    cr_assert(WIFEXITED(status), "the child did not exit (status %#x); stderr: %s", status, err);
    cr_assert_eq(WEXITSTATUS(status), 0, "the child failed at step %d; stderr: %s", WEXITSTATUS(status), err);
    cr_assert_not_null(strstr(err, "weft: 1 runtime"), "the child's dump signal wrote no dump: %s", err);
    free(err);
}

/* ---- weft's own locks across fork -------------------------------------------------- */

static _Atomic bool lockers_stop;

/* Creates and deletes keys until told to stop: holds the keys' lock most of
 * its time. */
static void *key_churn(void *arg)
{
    while (!atomic_load_explicit(&lockers_stop, memory_order_relaxed)) {
        weft_key k;
        if (weft_key_create(&k, NULL) == 0)
            weft_key_delete(k);
    }
    return arg;
}

/* Connects the UDP socket *arg, a blocking one, again and again with a
 * deadline, so that each connect goes through the flag toggle and holds its
 * lock across three system calls. */
static void *connect_churn(void *arg)
{
    int fd = *(int *)arg;
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    weft_deadline(weft_now() + 600 * 1000 * MILLI);
    while (!atomic_load_explicit(&lockers_stop, memory_order_relaxed))
        weft_connect(fd, (struct sockaddr *)&to, sizeof to);
    return arg;
}

/* The child: the calls whose locks the parent's threads held. 0, or the step
 * that failed; a hang ends at the alarm. */
static int child_takes_the_locks(int udp)
{
    alarm(20);
    weft_key k;
    if (weft_key_create(&k, NULL) != 0 || weft_key_delete(k) != 0)
        return 1;
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    weft_deadline(weft_now() + 10 * 1000 * MILLI);
    if (weft_connect(udp, (struct sockaddr *)&to, sizeof to) != 0)
        return 2;
    return 0;
}

Test(fork, a_child_forked_while_other_threads_hold_weft_s_locks_takes_them)
{
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(udp, 0);
    atomic_store(&lockers_stop, false);
    pthread_t keys, conn;
    cr_assert_eq(pthread_create(&keys, NULL, key_churn, NULL), 0);
    cr_assert_eq(pthread_create(&conn, NULL, connect_churn, &udp), 0);
    usleep(20000);
    /* Each forks while each lock is held most of the time: twenty children
     * leave no room for luck. */
    pid_t pids[20];
    for (int i = 0; i < 20; i++) {
        pids[i] = fork();
        cr_assert_neq(pids[i], -1);
        if (pids[i] == 0)
            _exit(child_takes_the_locks(udp));
        usleep(2000);
    }
    atomic_store(&lockers_stop, true);
    pthread_join(keys, NULL);
    pthread_join(conn, NULL);
    close(udp);
    for (int i = 0; i < 20; i++) {
        int status;
        cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
        cr_assert(WIFEXITED(status), "child %d did not exit (status %#x: %s)", i, status,
                  WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM ? "it hung" : "killed");
        cr_assert_eq(WEXITSTATUS(status), 0, "child %d failed at step %d", i, WEXITSTATUS(status));
    }
}

/* ---- the signal mask a child inherits ------------------------------------------------ */

/* Forks from a coroutine; the child exits 1 if SIGPIPE is blocked in it. */
static void *fork_and_look_at_sigpipe(void *arg)
{
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t cur;
        pthread_sigmask(SIG_BLOCK, NULL, &cur);
        _exit(sigismember(&cur, SIGPIPE) ? 1 : 0);
    }
    int status = -1;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return (void *)(intptr_t)-1;
    return (void *)(intptr_t)WEXITSTATUS(status);
}

/* The same from a function given to weft_offload, on a helper thread that a
 * worker started. */
static void *fork_from_a_helper(void *arg)
{
    void *blocked = (void *)(intptr_t)-2;
    int err = weft_offload(fork_and_look_at_sigpipe, arg, &blocked);
    return err ? (void *)(intptr_t)err : blocked;
}

/* Workers block SIGPIPE for their own writes; a program exec'd from a
 * coroutine, or from a function it offloads, must not start with it blocked,
 * unless the program blocked it itself. */
Test(fork, a_child_of_a_coroutine_has_the_program_s_sigpipe_mask)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    FOR_EACH_BACKEND(b) {
        cr_assert_eq(pthread_sigmask(SIG_UNBLOCK, &pipe_set, &old), 0);
        void *blocked = run_with_io(2, b, fork_and_look_at_sigpipe, NULL);
        cr_assert_eq((intptr_t)blocked, 0, "%s: the child starts with SIGPIPE blocked (%ld)", backend_name[b],
                     (long)(intptr_t)blocked);
        blocked = run_with_io(2, b, fork_from_a_helper, NULL);
        cr_assert_eq((intptr_t)blocked, 0, "%s: a helper's child starts with SIGPIPE blocked (%ld)",
                     backend_name[b], (long)(intptr_t)blocked);
        cr_assert_eq(pthread_sigmask(SIG_BLOCK, &pipe_set, NULL), 0);
        blocked = run_with_io(2, b, fork_and_look_at_sigpipe, NULL);
        cr_assert_eq((intptr_t)blocked, 1, "%s: the program's own block was lost in the child", backend_name[b]);
        cr_assert_eq(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
    }
}
