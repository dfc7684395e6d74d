/* SPDX-License-Identifier: MIT */
/* A coroutine that holds its worker in a call weft cannot see (a raw system
 * call, a long computation) holds up nobody else: what was queued on, woken
 * on, or waiting for IO on that worker runs elsewhere within milliseconds
 * (the monitor takes the worker over at 2 ms while another worker is free,
 * at 20 ms while every other one runs tasks); only coroutines pinned there
 * wait. The stall is reported on stderr. */
#define _GNU_SOURCE
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SLOW (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND)
/* A stall lasts this long unless the victims are all done sooner... */
#define STALL_NS ((uint64_t)(SLOW ? 4000 : 2500) * 1000000u)
/* ... and each victim must have run within this of being able to. */
#define BOUND_NS ((uint64_t)(SLOW ? 1500 : 500) * 1000000u)
#define MS(ns) ((double)(ns) / 1e6)

enum scenario { QUEUED, WOKEN, TIMER, SOCKET, ACCEPT, DEADLINE, NSCENARIOS };
static const char *const scenario_name[] = { "queued", "woken", "timer", "socket", "accept", "deadline" };
enum stall_kind { SPIN, SYSCALL };

struct run {
    enum scenario   sc;
    enum stall_kind kind;
    bool            other_busy;   /* the other worker runs a coroutine that yields */

    _Atomic int     z_worker;     /* the yielding coroutine's worker, -1 before */
    weft_task      *z;            /* the yielding coroutine, spawned by the staller */
    _Atomic bool    stop;         /* ends the yielding coroutine */
    int             home;         /* the stalling worker */
    bool            valid;        /* the victim was on the stalling worker */

    /* The victim. */
    _Atomic int     v_worker;     /* where it waited */
    _Atomic bool    v_waiting;    /* about to wait */
    _Atomic uint64_t v_done;      /* when it ran again */
    ssize_t         v_res;        /* DEADLINE: what its read returned */
    uint64_t        v_due;        /* when it could have run */
    weft_chan      *ch;
    int             sv[2];        /* SOCKET: socketpair */
    int             lfd;          /* ACCEPT: listener */
    struct sockaddr_in addr;
    uint64_t        rtt_max;      /* ACCEPT: the slowest round trip */
    int             rtt_fail;

    /* The pinned bystander (WOKEN): must wait for the stall. */
    _Atomic int     p_worker;
    _Atomic bool    p_waiting;
    _Atomic uint64_t p_done;
    weft_chan      *pch;

    /* The stall. */
    int             pipefd[2];    /* SYSCALL: the staller reads [0] */
    _Atomic uint64_t stall_start, stall_end;
    _Atomic bool    release;      /* SPIN: ends the stall */
    pthread_t       ctl;
};

static void *yielder(void *arg)
{
    struct run *r = arg;
    atomic_store(&r->z_worker, weft_worker());
    while (!atomic_load(&r->stop)) {
        atomic_store(&r->z_worker, weft_worker());
        weft_yield();
    }
    return NULL;
}

static void *victim(void *arg)
{
    struct run *r = arg;
    atomic_store(&r->v_worker, weft_worker());
    atomic_store(&r->v_waiting, true);
    switch (r->sc) {
    case QUEUED:
        weft_yield();
        break;
    case WOKEN: {
        int v;
        weft_chan_recv(r->ch, &v);
        break;
    }
    case TIMER:
        weft_sleep(20000000);
        break;
    case SOCKET: {
        char b;
        if (weft_recv(r->sv[0], &b, 1, 0) != 1)
            return (void *)1;
        break;
    }
    case DEADLINE: {
        /* A read nobody answers, whose deadline passes during the stall. */
        char b;
        weft_deadline(weft_now() + 20000000);
        r->v_res = weft_recv(r->sv[0], &b, 1, 0);
        weft_deadline(0);
        break;
    }
    case ACCEPT:
        for (int i = 0; i < 3; i++) {
            int c = weft_accept(r->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0)
                return (void *)2;
            char b;
            if (weft_recv(c, &b, 1, 0) != 1 || weft_send(c, &b, 1, MSG_NOSIGNAL) != 1)
                return (void *)3;
            weft_close(c);
        }
        break;
    default:
        break;
    }
    atomic_store(&r->v_done, weft_now());
    return NULL;
}

static void *pinned_bystander(void *arg)
{
    struct run *r = arg;
    weft_pin();
    atomic_store(&r->p_worker, weft_worker());
    atomic_store(&r->p_waiting, true);
    int v;
    weft_chan_recv(r->pch, &v);
    atomic_store(&r->p_done, weft_now());
    weft_unpin();
    return NULL;
}

static void nap_ms(unsigned ms)
{
    struct timespec ts = { 0, (long)ms * 1000000 };
    nanosleep(&ts, NULL);
}

/* A client round trip through the accept loop; returns its time, or 0. */
static uint64_t round_trip(struct run *r)
{
    uint64_t t0 = weft_now();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&r->addr, sizeof r->addr) != 0)
        return 0;
    char b = 'q';
    struct pollfd p = { .fd = fd, .events = POLLIN };
    uint64_t rtt = 0;
    if (write(fd, &b, 1) == 1 && poll(&p, 1, (int)(STALL_NS / 1000000)) == 1 && read(fd, &b, 1) == 1)
        rtt = weft_now() - t0;
    close(fd);
    return rtt;
}

/* The controller, a plain thread: drives the IO scenarios, then ends the
 * stall once the victim ran, or at STALL_NS. */
static void *controller(void *arg)
{
    struct run *r = arg;
    while (!atomic_load(&r->stall_start))
        nap_ms(1);
    nap_ms(50);   /* the stall is well under way, past any rescue threshold */
    if (r->sc == SOCKET) {
        r->v_due = weft_now();
        char b = 's';
        if (write(r->sv[1], &b, 1) != 1)
            abort();
    } else if (r->sc == ACCEPT) {
        r->v_due = weft_now();
        for (int i = 0; i < 3; i++) {
            uint64_t rtt = round_trip(r);
            if (!rtt)
                r->rtt_fail++;
            if (rtt > r->rtt_max)
                r->rtt_max = rtt;
        }
    }
    uint64_t end = atomic_load(&r->stall_start) + STALL_NS;
    while (!atomic_load(&r->v_done) && weft_now() < end)
        nap_ms(1);
    while (weft_now() < atomic_load(&r->stall_start) + 200000000u)
        nap_ms(1);   /* long enough to see the pinned bystander wait */
    if (r->kind == SYSCALL) {
        char b = 'e';
        if (write(r->pipefd[1], &b, 1) != 1)
            abort();
    } else {
        atomic_store(&r->release, true);
    }
    return NULL;
}

static void stall_here(struct run *r)
{
    atomic_store(&r->stall_start, weft_now());
    if (r->kind == SYSCALL) {
        char b;
        /* A raw system call: nothing weft can see or hook. */
        syscall(SYS_read, r->pipefd[0], &b, 1);
    } else {
        uint64_t end = weft_now() + STALL_NS;
        while (!atomic_load(&r->release) && weft_now() < end)
            ;
    }
    atomic_store(&r->stall_end, weft_now());
}

/* Waits, cooperatively, until *flag is set, then a little more so that its
 * setter has parked. */
static void await_flag(_Atomic bool *flag)
{
    for (int i = 0; i < 10000 && !atomic_load(flag); i++)
        weft_yield();
    weft_sleep(2000000);
}

static void *staller(void *arg)
{
    struct run *r = arg;
    weft_pin();   /* the stall is on this worker, whatever it waits for meanwhile */
    r->home = weft_worker();
    if (r->other_busy) {
        /* The yielding coroutine goes on this worker's deque, where the
         * other worker, idle, takes it (or the monitor moves it, this worker
         * being held): wait for that without switching, so that this worker
         * never runs it. */
        weft_spawn(&r->z, yielder, r);
        uint64_t until = weft_now() + STALL_NS;
        while (atomic_load(&r->z_worker) < 0 && weft_now() < until)
            ;
        if (atomic_load(&r->z_worker) < 0 || atomic_load(&r->z_worker) == r->home)
            return NULL;
    }
    weft_task *v, *p = NULL;
    switch (r->sc) {
    case QUEUED:
        /* The victim runs here and yields behind us: it waits in this
         * worker's queue while we stall. */
        weft_spawn(&v, victim, r);
        for (int i = 0; i < 1000 && !atomic_load(&r->v_waiting); i++)
            weft_yield();
        break;
    case WOKEN:
        weft_spawn(&v, victim, r);
        weft_spawn(&p, pinned_bystander, r);
        await_flag(&r->v_waiting);
        await_flag(&r->p_waiting);
        break;
    case TIMER:
        weft_spawn(&v, victim, r);
        await_flag(&r->v_waiting);
        break;
    case SOCKET:
    case ACCEPT:
    case DEADLINE:
        weft_spawn(&v, victim, r);
        /* Here the victim's wait is submitted to this worker's ring, or
         * added to its epoll set, before we stall. */
        await_flag(&r->v_waiting);
        break;
    default:
        return NULL;
    }
    int vw = atomic_load(&r->v_worker);
    r->valid = r->sc == WOKEN || r->sc == TIMER || vw == r->home;
    if (p && atomic_load(&r->p_worker) != r->home)
        r->valid = false;   /* the bystander must be pinned here */
    if (!r->valid) {
        /* Let the victim finish without a stall. */
        if (r->sc == QUEUED) {
            weft_join(v, NULL);
        } else if (r->sc == WOKEN) {
            int x = 0;
            weft_chan_send(r->ch, &x);
            weft_chan_send(r->pch, &x);
            weft_join(v, NULL);
            weft_join(p, NULL);
        } else {
            weft_cancel(v);
            weft_join(v, NULL);
        }
        return NULL;
    }
    pthread_create(&r->ctl, NULL, controller, r);
    if (r->sc == WOKEN) {
        int x = 1;
        r->v_due = weft_now();
        weft_chan_send(r->ch, &x);    /* the victim becomes runnable here */
        weft_chan_send(r->pch, &x);   /* and so does the pinned bystander */
    } else if (r->sc == QUEUED) {
        r->v_due = weft_now();
    } else if (r->sc == TIMER || r->sc == DEADLINE) {
        r->v_due = weft_now() + 18000000;   /* at most this; the sleep or read began before */
    }
    stall_here(r);
    pthread_join(r->ctl, NULL);
    weft_join(v, NULL);
    if (p)
        weft_join(p, NULL);
    return NULL;
}

static void *stall_main(void *arg)
{
    struct run *r = arg;
    weft_task *g;
    weft_spawn(&g, staller, r);
    weft_join(g, NULL);
    atomic_store(&r->stop, true);
    if (r->z)
        weft_join(r->z, NULL);
    return NULL;
}

static void run_scenario(int backend, enum scenario sc, enum stall_kind kind, bool other_busy)
{
    int tries = 0;
    for (;;) {
        struct run r = { .sc = sc, .kind = kind, .other_busy = other_busy,
                         .z_worker = -1, .v_worker = -1, .p_worker = -1,
                         .sv = { -1, -1 }, .lfd = -1, .pipefd = { -1, -1 } };
        cr_assert_eq(pipe(r.pipefd), 0);
        cr_assert_eq(weft_chan_create(&r.ch, sizeof(int), 1), 0);
        cr_assert_eq(weft_chan_create(&r.pch, sizeof(int), 1), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, r.sv), 0);
        r.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        r.addr = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof r.addr;
        cr_assert(r.lfd >= 0 && bind(r.lfd, (struct sockaddr *)&r.addr, sizeof r.addr) == 0 &&
                  listen(r.lfd, 16) == 0 && getsockname(r.lfd, (struct sockaddr *)&r.addr, &len) == 0);

        run_with_io(2, backend, stall_main, &r);

        close(r.pipefd[0]);
        close(r.pipefd[1]);
        close(r.sv[0]);
        close(r.sv[1]);
        close(r.lfd);
        weft_chan_destroy(r.ch);
        weft_chan_destroy(r.pch);
        if (!r.valid) {
            cr_assert_lt(++tries, 50, "%s on %s: the victim never waited on the stalling worker",
                         scenario_name[sc], backend_name[backend]);
            continue;
        }
        const char *what = kind == SYSCALL ? "a raw read" : "a busy loop";
        uint64_t start = atomic_load(&r.stall_start), end = atomic_load(&r.stall_end);
        uint64_t done = atomic_load(&r.v_done);
        cr_assert(done, "%s on %s, %s, other worker %s: the victim never ran", scenario_name[sc],
                  backend_name[backend], what, other_busy ? "busy" : "idle");
        uint64_t due = r.v_due > start ? r.v_due : start;
        cr_assert_lt(done, due + BOUND_NS,
                     "%s on %s, %s, other worker %s: the victim ran %.1f ms after it could, "
                     "the stall lasted %.1f ms", scenario_name[sc], backend_name[backend], what,
                     other_busy ? "busy" : "idle", MS(done - due), MS(end - start));
        if (sc == DEADLINE)
            cr_assert_eq(r.v_res, -ETIMEDOUT, "deadline on %s: the read returned %zd", backend_name[backend], r.v_res);
        if (sc == ACCEPT) {
            cr_assert_eq(r.rtt_fail, 0, "accept on %s: a round trip failed", backend_name[backend]);
            cr_assert_lt(r.rtt_max, BOUND_NS, "accept on %s: a round trip took %.1f ms",
                         backend_name[backend], MS(r.rtt_max));
        }
        if (sc == WOKEN) {
            /* Pinned to the stalled worker: it waits for the stall to end. */
            cr_assert_geq(atomic_load(&r.p_done), end, "the pinned bystander ran during the stall, %.1f ms after it began (the stall lasted %.1f ms; home %d, bystander on %d)", MS(atomic_load(&r.p_done) - start), MS(end - start), r.home, atomic_load(&r.p_worker));
        }
        return;
    }
}

/* Valgrind runs one thread at a time, and its default lock is not fair: the
 * stalled thread's loop can keep taking it back, and the monitor and the
 * other worker then wait on Valgrind, not on the runtime (waits of seconds
 * were seen there, for the takeover and for the report; never outside it). */
static void skip_on_valgrind(void)
{
    if (RUNNING_ON_VALGRIND)
        cr_skip("Valgrind runs one thread at a time: the monitor and the other workers cannot run during a stall");
}

static void sweep(enum scenario sc)
{
    skip_on_valgrind();
    FOR_EACH_BACKEND(b) {
        run_scenario(b, sc, SPIN, true);
        run_scenario(b, sc, SYSCALL, true);
        run_scenario(b, sc, SPIN, false);
        run_scenario(b, sc, SYSCALL, false);
    }
}

Test(stall, coroutines_queued_on_a_stalled_worker_run_elsewhere)   { sweep(QUEUED); }
Test(stall, a_coroutine_woken_on_a_stalled_worker_runs_elsewhere)  { sweep(WOKEN); }
Test(stall, a_sleeper_is_woken_while_its_worker_is_stalled)        { sweep(TIMER); }
Test(stall, socket_io_waiting_on_a_stalled_worker_completes)       { sweep(SOCKET); }
Test(stall, an_accept_loop_on_a_stalled_worker_keeps_answering)    { sweep(ACCEPT); }
Test(stall, a_read_whose_deadline_passes_while_its_worker_is_stalled_times_out) { sweep(DEADLINE); }

/* ---- the stall report ---------------------------------------------------- */

/* stderr, captured into a buffer by a thread. */
struct capture {
    int       saved;
    int       pipefd[2];
    pthread_t reader;
    pthread_mutex_t lock;
    char      buf[65536];   /* under lock while the reader runs */
    size_t    len;
};

static void *capture_reader(void *arg)
{
    struct capture *c = arg;
    char chunk[4096];
    for (;;) {
        ssize_t n = read(c->pipefd[0], chunk, sizeof chunk);
        if (n <= 0)
            break;
        pthread_mutex_lock(&c->lock);
        size_t room = sizeof c->buf - 1 - c->len;
        size_t k = (size_t)n < room ? (size_t)n : room;
        memcpy(c->buf + c->len, chunk, k);
        c->len += k;
        c->buf[c->len] = 0;
        pthread_mutex_unlock(&c->lock);
    }
    return NULL;
}

/* Whether the captured text holds needle so far. Any thread. */
static bool capture_has(struct capture *c, const char *needle)
{
    pthread_mutex_lock(&c->lock);
    bool has = strstr(c->buf, needle) != NULL;
    pthread_mutex_unlock(&c->lock);
    return has;
}

static void capture_start(struct capture *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    fflush(stderr);
    cr_assert_eq(pipe(c->pipefd), 0);
    c->saved = dup(STDERR_FILENO);
    dup2(c->pipefd[1], STDERR_FILENO);
    close(c->pipefd[1]);
    pthread_create(&c->reader, NULL, capture_reader, c);
}

static void capture_end(struct capture *c)
{
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);   /* the pipe's last write end goes: the reader sees EOF */
    close(c->saved);
    pthread_join(c->reader, NULL);
    close(c->pipefd[0]);
    pthread_mutex_destroy(&c->lock);
}

static size_t count_lines(const char *buf, const char *needle)
{
    size_t n = 0;
    for (const char *p = buf; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* The start of a report's first line for the stalling entry below; its
 * frames name the entry too. */
#define REPORT_LINE "weft: coroutine weft_test_stalling_entry "

struct report_run {
    struct capture *cap;
    uint64_t        spin_ns;      /* each stall */
    unsigned        stalls;       /* this many in a row */
    uint64_t        seen_after;   /* the first line came this long into the first stall */
    unsigned        workers;      /* 0: two */
};

/* The stalling coroutine's entry, which the report names. */
__attribute__((noinline)) void *weft_test_stalling_entry(void *arg)
{
    struct report_run *rr = arg;
    uint64_t start = weft_now();
    while (weft_now() < start + rr->spin_ns) {
        if (!rr->seen_after && capture_has(rr->cap, "weft_test_stalling_entry"))
            rr->seen_after = weft_now() - start;
    }
    return NULL;
}

static void *report_main(void *arg)
{
    struct report_run *rr = arg;
    for (unsigned i = 0; i < rr->stalls; i++) {
        weft_task *t;
        weft_spawn(&t, weft_test_stalling_entry, rr);
        weft_join(t, NULL);
    }
    return NULL;
}

static void report_run(struct report_run *rr, uint64_t stall_ns)
{
    weft_config cfg = { .workers = rr->workers ? rr->workers : 2, .stall_ns = stall_ns };
    cr_assert_eq(weft_main(&cfg, report_main, rr, NULL), 0);
}

Test(stall, a_long_stall_is_reported_once_on_stderr_with_its_coroutine_worker_and_duration)
{
    skip_on_valgrind();
    struct capture cap;
    /* The stall lasts far past the threshold, so that a report taken late on
     * a busy machine (its backtrace waits for a signal, and the first lookup
     * of source lines reads debug information) still comes during it. */
    struct report_run rr = { .cap = &cap, .spin_ns = SLOW ? 6000000000u : 3000000000u, .stalls = 1 };
    capture_start(&cap);
    report_run(&rr, 200000000u);
    capture_end(&cap);
    fprintf(stderr, "%s", cap.buf);
    cr_assert_neq(rr.seen_after, 0, "no report during the stall; stderr: %s", cap.buf);
    cr_assert_eq(count_lines(cap.buf, REPORT_LINE), 1, "stderr: %s", cap.buf);
    const char *line = strstr(cap.buf, REPORT_LINE);
    const char *bol = line;
    while (bol > cap.buf && bol[-1] != '\n')
        bol--;
    cr_assert(strstr(bol, "worker ") && strstr(bol, " ms"), "the line names a worker and a duration: %s", bol);
}

/* One worker: nothing to take over, and the monitor looks only as often as
 * the report needs (a sixteenth of the threshold at most late). */
Test(stall, a_runtime_of_one_worker_reports_a_stall_and_not_before_its_threshold)
{
    skip_on_valgrind();
    struct capture cap;
    struct report_run rr = { .cap = &cap, .spin_ns = SLOW ? 3000000000u : 1500000000u,
                             .stalls = 1, .workers = 1 };
    capture_start(&cap);
    report_run(&rr, 320000000u);
    capture_end(&cap);
    fprintf(stderr, "%s", cap.buf);
    cr_assert_neq(rr.seen_after, 0, "no report during the stall; stderr: %s", cap.buf);
    cr_assert_geq(rr.seen_after, 320000000u, "reported %.1f ms into the stall", MS(rr.seen_after));
    cr_assert_eq(count_lines(cap.buf, REPORT_LINE), 1, "stderr: %s", cap.buf);
}

struct looks {
    uint64_t busy_ns;   /* how long the worker is kept busy */
    long     sleeps;    /* the monitor's, meanwhile */
};

/* Keeps its worker busy with yields for l->busy_ns and counts the monitor's
 * sleeps meanwhile: one a look. */
static void *count_looks(void *arg)
{
    struct looks *l = arg;
    int tid;
    cr_assert_eq(threads_named("weft-monitor", &tid, 1), 1, "one thread is named weft-monitor");
    long before = thread_sleeps(tid);
    uint64_t end = weft_now() + l->busy_ns;
    while (weft_now() < end)
        weft_yield();
    long after = thread_sleeps(tid);
    cr_assert(before >= 0 && after >= 0, "the monitor's switches can be read");
    l->sleeps = after - before;
    return NULL;
}

/* The looks of a one-worker runtime's monitor while its worker is busy for
 * busy_ns. */
static long monitor_looks(uint64_t busy_ns)
{
    struct looks l = { .busy_ns = busy_ns };
    weft_config cfg = { .workers = 1 };   /* the default threshold: 500 ms */
    cr_assert_eq(weft_main(&cfg, count_looks, &l, NULL), 0);
    return l.sleeps;
}

Test(stall, the_monitor_of_one_worker_looks_as_often_as_its_report_needs)
{
    /* 400 ms busy: about 26 looks, a thirty-second of a 500 ms threshold
     * apart; a look a millisecond, as on two workers, would be 400. */
    long one = monitor_looks(400000000u);
    cr_assert_leq(one, 60, "%ld looks in 400 ms on one worker", one);
    cr_assert_geq(one, 5, "%ld looks in 400 ms on one worker: does it look at all?", one);
}

Test(stall, reports_are_rate_limited)
{
    skip_on_valgrind();
    struct capture cap;
    struct report_run rr = { .cap = &cap, .spin_ns = 250000000u, .stalls = 6 };
    capture_start(&cap);
    uint64_t t0 = weft_now();
    report_run(&rr, 50000000u);
    uint64_t took = weft_now() - t0;
    capture_end(&cap);
    fprintf(stderr, "%s", cap.buf);
    size_t n = count_lines(cap.buf, REPORT_LINE);
    cr_assert_geq(n, 1, "stderr: %s", cap.buf);
    cr_assert_leq(n, (size_t)(took / 1000000000u) + 1, "%zu lines in %.1f ms: %s", n, MS(took), cap.buf);
}

Test(stall, weft_stall_ms_zero_turns_the_report_off)
{
    struct capture cap;
    struct report_run rr = { .cap = &cap, .spin_ns = 600000000u, .stalls = 1 };
    setenv("WEFT_STALL_MS", "0", 1);
    capture_start(&cap);
    report_run(&rr, 50000000u);
    capture_end(&cap);
    unsetenv("WEFT_STALL_MS");
    cr_assert_eq(count_lines(cap.buf, REPORT_LINE), 0, "stderr: %s", cap.buf);
    cr_assert(!strstr(cap.buf, "  #"), "frames with the report off: %s", cap.buf);
}

Test(stall, weft_stall_ms_overrides_the_configuration)
{
    skip_on_valgrind();
    struct capture cap;
    struct report_run rr = { .cap = &cap, .spin_ns = SLOW ? 3000000000u : 1000000000u, .stalls = 1 };
    setenv("WEFT_STALL_MS", "100", 1);
    capture_start(&cap);
    report_run(&rr, 3600000000000u);   /* an hour */
    capture_end(&cap);
    unsetenv("WEFT_STALL_MS");
    cr_assert_eq(count_lines(cap.buf, REPORT_LINE), 1, "stderr: %s", cap.buf);
}

/* A value that is not digits alone is ignored, not read as far as it goes:
 * "-1" would otherwise wrap to the largest count, and turn the report off. */
Test(stall, a_malformed_weft_stall_ms_is_ignored)
{
    skip_on_valgrind();
    static const char *const bad[] = { "-1", " 100000", "100000ms" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct capture cap;
        struct report_run rr = { .cap = &cap, .spin_ns = SLOW ? 3000000000u : 1000000000u, .stalls = 1 };
        setenv("WEFT_STALL_MS", bad[i], 1);
        capture_start(&cap);
        report_run(&rr, 100000000u);
        capture_end(&cap);
        unsetenv("WEFT_STALL_MS");
        cr_assert_eq(count_lines(cap.buf, REPORT_LINE), 1, "WEFT_STALL_MS=\"%s\": stderr: %s", bad[i], cap.buf);
    }
}

/* ---- the stall report's backtrace ---------------------------------------- */

/* Whether weft was built with libunwind, which the frames need
 * (tests/CMakeLists.txt); without it the report says so instead. */
#ifndef WEFT_TEST_LIBUNWIND
#define WEFT_TEST_LIBUNWIND 1
#endif
#define NO_LIBUNWIND_LINE "\n  (backtrace unavailable: weft was built without libunwind)\n"

enum bt_kind { BT_SPIN, BT_READ, BT_SLEEP, BT_EPILOGUE };

struct bt_run {
    struct capture *cap;
    enum bt_kind    kind;
    const char     *marker;      /* the function it stalls in, which the frames must name */
    int             pipefd[2];   /* BT_READ: the stalled coroutine reads [0] */
    long            ret;         /* what the blocking call returned */
    int             err;         /* and its errno */
    uint64_t        stalled_ns;  /* how long it stalled */
    bool            handled;     /* a report appeared while it stalled */
    pthread_t       ctl;
};

/* How long a stall lasts at most: until the report names the marker. */
#define BT_LIMIT_NS ((uint64_t)(SLOW ? 6000 : 3000) * 1000000u)

/* Whether the frames of the report name fn: a line "  #N 0x... fn+0x.." */
static bool frames_name(const char *buf, const char *fn)
{
    for (const char *p = buf; (p = strstr(p, "\n  #")); p++) {
        const char *eol = strchr(p + 1, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char line[512];
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
        const char *at = strstr(line, fn);
        if (at && (at[strlen(fn)] == '+' || at[strlen(fn)] == ' '))
            return true;
    }
    return false;
}

__attribute__((noinline)) void stall_here_in_a_busy_loop(struct bt_run *b)
{
    uint64_t start = weft_now();
    while (weft_now() < start + BT_LIMIT_NS && !capture_has(b->cap, "stall_here_in_a_busy_loop"))
        ;
    b->stalled_ns = weft_now() - start;
}

__attribute__((noinline)) void stall_here_in_a_raw_read(struct bt_run *b)
{
    char c;
    uint64_t start = weft_now();
    /* A raw system call, which no hook sees: the report's signal must not
     * end it (SA_RESTART), and it must still read the byte. */
    b->ret = syscall(SYS_read, b->pipefd[0], &c, 1);
    b->err = errno;
    b->stalled_ns = weft_now() - start;
}

__attribute__((noinline)) void stall_here_in_a_sleep(struct bt_run *b)
{
    struct timespec ts = { .tv_sec = (time_t)(BT_LIMIT_NS / 3 / 1000000000u),
                           .tv_nsec = (long)(BT_LIMIT_NS / 3 % 1000000000u) };
    uint64_t start = weft_now();
    /* A sleep fails with EINTR after any signal handler, SA_RESTART or not:
     * the report must not cut it short. */
    b->ret = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
    b->stalled_ns = weft_now() - start;
}

#if defined(__x86_64__)
/*
 * An interrupted epilogue, made to last. weft_test_epilogue_spin spins, a
 * round at a time, in two halves, each the state of an epilogue that has
 * popped rbp: the call-frame information names a saved copy below the stack
 * pointer (as GCC's epilogues leave it), a different one in each half, and
 * each half writes 0 over the other's copy. Its caller keeps a frame pointer,
 * so that the unwinder needs that copy to go on. A copy of the stack from the
 * stack pointer up, unwound once the thread has run on into the other half,
 * finds 0 there and stops in the caller.
 */
void weft_test_epilogue_frame(unsigned long rounds);
__asm__(
    "    .pushsection .text\n"
    "    .globl weft_test_epilogue_spin\n"
    "    .type weft_test_epilogue_spin, @function\n"
    "weft_test_epilogue_spin:\n"
    "    .cfi_startproc\n"
    "1:  mov %rbp, -8(%rsp)\n"
    "    .cfi_offset %rbp, -16\n"
    "    movq $0, -16(%rsp)\n"
    "    mov $100, %ecx\n"
    "2:  pause\n"
    "    dec %ecx\n"
    "    jnz 2b\n"
    "    mov %rbp, -16(%rsp)\n"
    "    .cfi_offset %rbp, -24\n"
    "    movq $0, -8(%rsp)\n"
    "    mov $100, %ecx\n"
    "3:  pause\n"
    "    dec %ecx\n"
    "    jnz 3b\n"
    "    dec %rdi\n"
    "    jnz 1b\n"
    "    ret\n"
    "    .cfi_endproc\n"
    "    .size weft_test_epilogue_spin, .-weft_test_epilogue_spin\n"
    "    .globl weft_test_epilogue_frame\n"
    "    .type weft_test_epilogue_frame, @function\n"
    "weft_test_epilogue_frame:\n"
    "    .cfi_startproc\n"
    "    push %rbp\n"
    "    .cfi_def_cfa_offset 16\n"
    "    .cfi_offset %rbp, -16\n"
    "    mov %rsp, %rbp\n"
    "    .cfi_def_cfa_register %rbp\n"
    "    call weft_test_epilogue_spin\n"
    "    pop %rbp\n"
    "    .cfi_def_cfa %rsp, 8\n"
    "    ret\n"
    "    .cfi_endproc\n"
    "    .size weft_test_epilogue_frame, .-weft_test_epilogue_frame\n"
    "    .popsection\n");

__attribute__((noinline)) void stall_here_in_an_epilogue(struct bt_run *b)
{
    uint64_t start = weft_now();
    while (weft_now() < start + BT_LIMIT_NS && !capture_has(b->cap, "stall_here_in_an_epilogue"))
        weft_test_epilogue_frame(10000);   /* almost all the time is spent in there */
    b->stalled_ns = weft_now() - start;
}
#endif

/* BT_READ: writes the byte once the report names the marker, or at the
 * limit. */
static void *bt_writer(void *arg)
{
    struct bt_run *b = arg;
    uint64_t end = weft_now() + BT_LIMIT_NS;
    while (weft_now() < end && !capture_has(b->cap, b->marker))
        nap_ms(5);
    char c = 'x';
    if (write(b->pipefd[1], &c, 1) != 1)
        abort();
    return NULL;
}

__attribute__((noinline)) void *weft_test_bt_entry(void *arg)
{
    struct bt_run *b = arg;
    switch (b->kind) {
    case BT_SPIN:
        stall_here_in_a_busy_loop(b);
        break;
    case BT_READ:
        stall_here_in_a_raw_read(b);
        break;
    case BT_SLEEP:
        stall_here_in_a_sleep(b);
        break;
    case BT_EPILOGUE:
#if defined(__x86_64__)
        stall_here_in_an_epilogue(b);
#endif
        break;
    }
    b->handled = capture_has(b->cap, "weft: coroutine ");   /* its name needs a symbol table that dladdr reads */
    return NULL;
}

static void *bt_main(void *arg)
{
    weft_task *t;
    weft_spawn(&t, weft_test_bt_entry, arg);
    weft_join(t, NULL);
    return NULL;
}

/* ThreadSanitizer holds a signal back until the thread calls into its
 * runtime: a raw read never does, and a loop that does is then interrupted
 * inside ThreadSanitizer's code, whose frames libunwind cannot follow. There
 * the report must still come, and say what it has. */
static bool frames_or_reason(const char *buf)
{
    return strstr(buf, "\n  #0 ") || strstr(buf, "\n  (backtrace unavailable: ");
}

/* Runs one stall of kind on backend with a 100 ms threshold; cap holds stderr. */
static void bt_stall(struct bt_run *b, struct capture *cap, enum bt_kind kind, int backend)
{
    static const char *const markers[] = { "stall_here_in_a_busy_loop", "stall_here_in_a_raw_read",
                                           "stall_here_in_a_sleep", "stall_here_in_an_epilogue" };
    *b = (struct bt_run){ .cap = cap, .kind = kind, .marker = markers[kind], .pipefd = { -1, -1 } };
    weft_config cfg = { .workers = 2, .stall_ns = 100000000u, .io_backend = backend };
    capture_start(cap);
    if (kind == BT_READ) {
        cr_assert_eq(pipe(b->pipefd), 0);
        cr_assert_eq(pthread_create(&b->ctl, NULL, bt_writer, b), 0);
    }
    cr_assert_eq(weft_main(&cfg, bt_main, b, NULL), 0);
    capture_end(cap);
    fprintf(stderr, "%s", cap->buf);
    if (kind == BT_READ) {
        pthread_join(b->ctl, NULL);
        close(b->pipefd[0]);
        close(b->pipefd[1]);
    }
}

Test(stall, the_report_shows_where_a_busy_loop_is_stuck)
{
    skip_on_valgrind();
    FOR_EACH_BACKEND(be) {
        struct capture cap;
        struct bt_run b;
        bt_stall(&b, &cap, BT_SPIN, be);
        cr_assert(b.handled, "%s: no report; stderr: %s", backend_name[be], cap.buf);
        if (!WEFT_TEST_LIBUNWIND)
            cr_assert(strstr(cap.buf, NO_LIBUNWIND_LINE), "%s: stderr: %s", backend_name[be], cap.buf);
        else if (WEFT_TEST_TSAN)
            cr_assert(frames_or_reason(cap.buf), "%s: stderr: %s", backend_name[be], cap.buf);
        else
            cr_assert(frames_name(cap.buf, "stall_here_in_a_busy_loop") &&
                      frames_name(cap.buf, "weft_test_bt_entry"),
                      "%s: the frames name neither the loop nor its caller; stderr: %s", backend_name[be], cap.buf);
        cr_assert_eq(count_lines(cap.buf, "weft: coroutine"), 1, "%s: stderr: %s", backend_name[be], cap.buf);
    }
}

/* The frames of a coroutine interrupted in an epilogue go on to its callers:
 * the registers the epilogue popped are read from the copy the handler took
 * of the red zone, not from the stack the coroutine has written over since.
 * Four stalls a backend: a copy from the stack pointer up fails whenever the
 * spinner has moved to the other half by the time the monitor unwinds. */
Test(stall, the_report_unwinds_an_epilogue_the_coroutine_has_left)
{
#if !defined(__x86_64__)
    cr_skip("the stall is made in x86-64 assembly");
#else
    skip_on_valgrind();
    if (!WEFT_TEST_LIBUNWIND || WEFT_TEST_TSAN)
        cr_skip("needs libunwind, and the signal where it lands (ThreadSanitizer defers it)");
    FOR_EACH_BACKEND(be) {
        for (int i = 0; i < 4; i++) {
            struct capture cap;
            struct bt_run b;
            bt_stall(&b, &cap, BT_EPILOGUE, be);
            cr_assert(frames_name(cap.buf, "stall_here_in_an_epilogue") &&
                          frames_name(cap.buf, "weft_test_bt_entry"),
                      "%s: the frames stop short of the callers; stderr: %s", backend_name[be], cap.buf);
            cr_assert_eq(count_lines(cap.buf, "weft: coroutine"), 1, "%s: stderr: %s", backend_name[be], cap.buf);
        }
    }
#endif
}

Test(stall, the_report_shows_a_raw_read_and_the_read_goes_on_unharmed)
{
    skip_on_valgrind();
    FOR_EACH_BACKEND(be) {
        struct capture cap;
        struct bt_run b;
        bt_stall(&b, &cap, BT_READ, be);
        cr_assert(b.handled, "%s: no report; stderr: %s", backend_name[be], cap.buf);
        cr_assert_eq(b.ret, 1, "%s: the raw read returned %ld (errno %d) after the report's signal",
                     backend_name[be], b.ret, b.err);
        if (!WEFT_TEST_LIBUNWIND)
            cr_assert(strstr(cap.buf, NO_LIBUNWIND_LINE), "%s: stderr: %s", backend_name[be], cap.buf);
        else if (WEFT_TEST_TSAN)
            cr_assert(frames_or_reason(cap.buf), "%s: stderr: %s", backend_name[be], cap.buf);
        else
            cr_assert(frames_name(cap.buf, "stall_here_in_a_raw_read") && frames_name(cap.buf, "syscall"),
                      "%s: the frames name neither the read nor its caller; stderr: %s", backend_name[be], cap.buf);
    }
}

Test(stall, the_report_does_not_cut_a_plain_sleep_short)
{
    skip_on_valgrind();
    FOR_EACH_BACKEND(be) {
        struct capture cap;
        struct bt_run b;
        bt_stall(&b, &cap, BT_SLEEP, be);
        cr_assert(b.handled, "%s: no report; stderr: %s", backend_name[be], cap.buf);
        cr_assert_eq(b.ret, 0, "%s: clock_nanosleep returned %ld after %.1f ms", backend_name[be],
                     b.ret, MS(b.stalled_ns));
        if (!WEFT_TEST_LIBUNWIND)
            continue;   /* no frames, and no signal that could cut it short */
        cr_assert(strstr(cap.buf, "in clock_nanosleep, which a signal would cut short") &&
                  frames_name(cap.buf, "stall_here_in_a_sleep"),
                  "%s: the frames do not show the sleep; stderr: %s", backend_name[be], cap.buf);
    }
}

static _Atomic int program_handler_calls;

static void program_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)si; (void)uc;
    atomic_fetch_add(&program_handler_calls, 1);
}

static void *disposition_main(void *arg)
{
    struct sigaction *now = arg;
    sigaction(SIGRTMAX - 3, NULL, now);
    return NULL;
}

/* The disposition of the default stall signal inside a runtime. */
static struct sigaction disposition_inside(uint64_t stall_ns)
{
    struct sigaction now;
    weft_config cfg = { .workers = 2, .stall_ns = stall_ns };
    cr_assert_eq(weft_main(&cfg, disposition_main, &now, NULL), 0);
    return now;
}

Test(stall, the_stall_signal_is_taken_only_while_stalls_are_reported)
{
    if (!WEFT_TEST_LIBUNWIND)
        cr_skip("weft was built without libunwind: the report takes no backtrace, and no signal");
    struct sigaction before, inside, after;
    sigaction(SIGRTMAX - 3, NULL, &before);
    cr_assert_eq(before.sa_handler, SIG_DFL);
    inside = disposition_inside(200000000u);
    cr_assert(inside.sa_flags & SA_SIGINFO, "the stall signal has no handler while stalls are reported");
    cr_assert(inside.sa_flags & SA_RESTART, "the stall signal's handler would interrupt system calls");
    sigaction(SIGRTMAX - 3, NULL, &after);
    cr_assert_eq(after.sa_handler, SIG_DFL, "the stall signal's disposition was not given back");
    setenv("WEFT_STALL_MS", "0", 1);
    inside = disposition_inside(200000000u);
    unsetenv("WEFT_STALL_MS");
    cr_assert(!(inside.sa_flags & SA_SIGINFO) && inside.sa_handler == SIG_DFL,
              "the stall signal is taken with the report off");
    setenv("WEFT_STALL_SIGNAL", "0", 1);
    inside = disposition_inside(200000000u);
    unsetenv("WEFT_STALL_SIGNAL");
    cr_assert(!(inside.sa_flags & SA_SIGINFO) && inside.sa_handler == SIG_DFL,
              "the stall signal is taken with WEFT_STALL_SIGNAL=0");
    setenv("WEFT_STALL_SIGNAL", "SIGRTMIN+4", 1);
    cr_assert_eq(weft_main(&(weft_config){ .workers = 2, .stall_ns = 200000000u }, disposition_main,
                           &inside, NULL), 0);
    sigaction(SIGRTMIN + 4, NULL, &after);
    unsetenv("WEFT_STALL_SIGNAL");
    cr_assert_eq(after.sa_handler, SIG_DFL);
    setenv("WEFT_STALL_SIGNAL", "SIGNOSUCH", 1);
    weft_rt *rt;
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 2 }), -EINVAL);
    unsetenv("WEFT_STALL_SIGNAL");
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 2, .stall_signal = SIGSEGV }), -EINVAL);
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 2, .stall_signal = 33 }), -EINVAL);   /* glibc's */
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 2, .stall_signal = SIGUSR1,
                                                     .dump_signal = SIGUSR1 }), -EINVAL);
}

Test(stall, a_program_that_handles_the_stall_signal_keeps_it)
{
    skip_on_valgrind();
    if (!WEFT_TEST_LIBUNWIND)
        cr_skip("weft was built without libunwind: the report takes no backtrace, and no signal");
    struct sigaction sa = { .sa_sigaction = program_handler, .sa_flags = SA_SIGINFO | SA_RESTART }, now;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGRTMAX - 3, &sa, NULL), 0);
    struct capture cap;
    struct bt_run b;
    bt_stall(&b, &cap, BT_SPIN, WEFT_IO_AUTO);
    sigaction(SIGRTMAX - 3, NULL, &now);
    signal(SIGRTMAX - 3, SIG_DFL);
    cr_assert(b.handled, "no report; stderr: %s", cap.buf);
    cr_assert(strstr(cap.buf, "is the program's, as the program handles it"), "stderr: %s", cap.buf);
    cr_assert_eq(atomic_load(&program_handler_calls), 0, "the program's handler was called");
    cr_assert(now.sa_sigaction == program_handler, "the program's handler was replaced");
}

Test(stall, weft_stall_signal_zero_keeps_the_line_without_a_backtrace)
{
    skip_on_valgrind();
    struct capture cap;
    struct bt_run b;
    setenv("WEFT_STALL_SIGNAL", "0", 1);
    bt_stall(&b, &cap, BT_SPIN, WEFT_IO_AUTO);
    unsetenv("WEFT_STALL_SIGNAL");
    cr_assert_eq(count_lines(cap.buf, "weft: coroutine "), 1, "stderr: %s", cap.buf);
    cr_assert(!strstr(cap.buf, "\n  #"), "stderr: %s", cap.buf);
    cr_assert(!WEFT_TEST_LIBUNWIND || !strstr(cap.buf, "backtrace"), "stderr: %s", cap.buf);
}
