/* A coroutine that holds its worker in a call weft cannot see (a raw system
 * call, a long computation) holds up nobody else: what was queued on, woken
 * on, or waiting for IO on that worker runs elsewhere within milliseconds;
 * only coroutines pinned there wait. The stall is reported on stderr. */
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

enum scenario { QUEUED, WOKEN, TIMER, SOCKET, ACCEPT, NSCENARIOS };
static const char *const scenario_name[] = { "queued", "woken", "timer", "socket", "accept" };
enum stall_kind { SPIN, SYSCALL };

struct run {
    enum scenario   sc;
    enum stall_kind kind;
    bool            other_busy;   /* the other worker runs a coroutine that yields */

    _Atomic int     z_worker;     /* the yielding coroutine's worker, -1 before */
    _Atomic bool    stop;         /* ends the yielding coroutine */
    int             home;         /* the stalling worker */
    bool            valid;        /* the victim was on the stalling worker */

    /* The victim. */
    _Atomic int     v_worker;     /* where it waited */
    _Atomic bool    v_waiting;    /* about to wait */
    _Atomic uint64_t v_done;      /* when it ran again */
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
    if (r->other_busy) {
        /* Off the yielding coroutine's worker: a timer's wake-up lands on
         * whichever worker fires it. */
        for (int i = 0; i < 200 && weft_worker() == atomic_load(&r->z_worker); i++)
            weft_sleep(1000000);
        if (weft_worker() == atomic_load(&r->z_worker))
            return NULL;
    }
    weft_pin();   /* the stall is on this worker, whatever it waits for meanwhile */
    r->home = weft_worker();
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
    } else if (r->sc == TIMER) {
        r->v_due = weft_now() + 18000000;   /* at most this; the sleep began before */
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
    weft_task *z = NULL, *g;
    if (r->other_busy) {
        weft_spawn(&z, yielder, r);
        while (atomic_load(&r->z_worker) < 0)
            weft_yield();
    }
    weft_spawn(&g, staller, r);
    weft_join(g, NULL);
    atomic_store(&r->stop, true);
    if (z)
        weft_join(z, NULL);
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

struct report_run {
    struct capture *cap;
    uint64_t        spin_ns;      /* each stall */
    unsigned        stalls;       /* this many in a row */
    uint64_t        seen_after;   /* the first line came this long into the first stall */
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
    weft_config cfg = { .workers = 2, .stall_ns = stall_ns };
    cr_assert_eq(weft_main(&cfg, report_main, rr, NULL), 0);
}

Test(stall, a_long_stall_is_reported_once_on_stderr_with_its_coroutine_worker_and_duration)
{
    skip_on_valgrind();
    struct capture cap;
    struct report_run rr = { .cap = &cap, .spin_ns = SLOW ? 3000000000u : 1500000000u, .stalls = 1 };
    capture_start(&cap);
    report_run(&rr, 200000000u);
    capture_end(&cap);
    fprintf(stderr, "%s", cap.buf);
    cr_assert_neq(rr.seen_after, 0, "no report during the stall; stderr: %s", cap.buf);
    cr_assert_lt(rr.seen_after, (SLOW ? 2000000000u : 1000000000u), "reported %.1f ms into the stall",
                 MS(rr.seen_after));
    cr_assert_eq(count_lines(cap.buf, "weft_test_stalling_entry"), 1, "stderr: %s", cap.buf);
    const char *line = strstr(cap.buf, "weft_test_stalling_entry");
    const char *bol = line;
    while (bol > cap.buf && bol[-1] != '\n')
        bol--;
    cr_assert(strstr(bol, "worker ") && strstr(bol, " ms"), "the line names a worker and a duration: %s", bol);
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
    size_t n = count_lines(cap.buf, "weft_test_stalling_entry");
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
    cr_assert_eq(count_lines(cap.buf, "weft_test_stalling_entry"), 0, "stderr: %s", cap.buf);
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
    cr_assert_eq(count_lines(cap.buf, "weft_test_stalling_entry"), 1, "stderr: %s", cap.buf);
}
