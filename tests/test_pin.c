/* SPDX-License-Identifier: MIT */
/* Pinning: a pinned coroutine stays on its worker thread, whatever wakes it,
 * until it unpins; thieves never take it. */
#define _GNU_SOURCE
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const unsigned pin_workers[] = { 1, 2, 4 };

static pid_t tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

static void nap_ms(unsigned ms)
{
    struct timespec ts = { 0, (long)ms * 1000000 };
    nanosleep(&ts, NULL);
}

Test(pin, pin_and_unpin_outside_a_coroutine_are_refused)
{
    cr_assert_eq(weft_pin(), -EPERM);
    cr_assert_eq(weft_unpin(), -EPERM);
}

static void *unbalanced(void *arg)
{
    (void)arg;
    int a = weft_unpin();           /* no pin held */
    int b = weft_pin();
    int c = weft_pin();             /* nests */
    int d = weft_unpin();
    int e = weft_unpin();
    int f = weft_unpin();           /* one too many */
    return (void *)(intptr_t)(a == -EPERM && b == 0 && c == 0 && d == 0 && e == 0 && f == -EPERM);
}

Test(pin, unpin_without_a_pin_is_refused_and_pins_nest)
{
    for (size_t i = 0; i < sizeof pin_workers / sizeof *pin_workers; i++)
        cr_assert_eq((intptr_t)run_with(pin_workers[i], unbalanced, NULL), 1, "workers %u", pin_workers[i]);
}

/* Busy coroutines that wake each other around the pinned one, so that an
 * unpinned coroutine would move between workers at most of its wake-ups. */
struct churn {
    _Atomic bool stop;
    weft_chan   *ch;
};

static void *churner(void *arg)
{
    struct churn *c = arg;
    int v = 0;
    while (!atomic_load(&c->stop)) {
        if (weft_chan_try_send(c->ch, &v) != 0)
            weft_chan_try_recv(c->ch, &v);
        weft_yield();
    }
    return NULL;
}

struct plain_waker {
    weft_chan *ch;       /* sends one value on it */
    int        fd;       /* or writes one byte to it */
    unsigned   delay_ms;
};

static void *plain_wake(void *arg)
{
    struct plain_waker *p = arg;
    nap_ms(p->delay_ms);
    if (p->ch) {
        int v = 7;
        weft_chan_send(p->ch, &v);
    } else {
        char b = 'x';
        if (write(p->fd, &b, 1) != 1)
            abort();
    }
    return NULL;
}

static void *coro_send(void *arg)
{
    int v = 8;
    weft_chan_send(arg, &v);
    return NULL;
}

static void *coro_write(void *arg)
{
    weft_sleep(1000000);
    char b = 'y';
    return (void *)(intptr_t)(weft_write((int)(intptr_t)arg, &b, 1) == 1);
}

struct where {
    int   worker;
    pid_t tid;
    int   moves;      /* checks where either differed */
    int   checks;
};

static void check_here(struct where *w)
{
    w->checks++;
    if (weft_worker() != w->worker || tid() != w->tid)
        w->moves++;
}

/* The pinned coroutine: every kind of wait, each woken from elsewhere. */
static void *pinned_waits(void *arg)
{
    struct where *w = arg;
    if (weft_pin() != 0)
        return (void *)1;
    w->worker = weft_worker();
    w->tid = tid();

    for (int i = 0; i < 200; i++) {
        weft_yield();
        check_here(w);
    }
    for (int i = 0; i < 20; i++) {
        weft_sleep(200000);
        check_here(w);
    }
    weft_chan *ch;
    if (weft_chan_create(&ch, sizeof(int), 0) != 0)
        return (void *)2;
    for (int i = 0; i < 20; i++) {
        int v;
        weft_task *t;
        weft_spawn(&t, coro_send, ch);          /* a coroutine, often on another worker */
        weft_chan_recv(ch, &v);
        check_here(w);
        weft_join(t, NULL);

        pthread_t th;                           /* a plain thread */
        struct plain_waker pw = { .ch = ch, .delay_ms = 1 };
        pthread_create(&th, NULL, plain_wake, &pw);
        weft_chan_recv(ch, &v);
        check_here(w);
        pthread_join(th, NULL);
    }
    weft_chan_destroy(ch);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return (void *)3;
    for (int i = 0; i < 10; i++) {
        char b;
        pthread_t th;
        struct plain_waker pw = { .fd = sv[1], .delay_ms = 2 };
        pthread_create(&th, NULL, plain_wake, &pw);
        if (weft_read(sv[0], &b, 1) != 1)
            return (void *)4;
        check_here(w);
        pthread_join(th, NULL);

        weft_task *t;
        weft_spawn(&t, coro_write, (void *)(intptr_t)sv[1]);
        if (weft_recv(sv[0], &b, 1, 0) != 1)
            return (void *)5;
        check_here(w);
        weft_join(t, NULL);
    }
    close(sv[0]);
    close(sv[1]);

    /* Nested: still pinned after the inner unpin. */
    weft_pin();
    weft_unpin();
    for (int i = 0; i < 20; i++) {
        weft_sleep(100000);
        check_here(w);
    }
    return (void *)(intptr_t)(weft_unpin() == 0 ? 0 : 6);
}

struct pin_run {
    struct where w;
    intptr_t     status;
};

static void *pin_main(void *arg)
{
    struct pin_run *r = arg;
    struct churn c = { .stop = false };
    weft_chan_create(&c.ch, sizeof(int), 4);
    int n = 2 * weft_workers();
    weft_task *ch[8];
    for (int i = 0; i < n; i++)
        weft_spawn(&ch[i], churner, &c);
    weft_task *p;
    weft_spawn(&p, pinned_waits, &r->w);
    void *res;
    weft_join(p, &res);
    r->status = (intptr_t)res;
    atomic_store(&c.stop, true);
    for (int i = 0; i < n; i++)
        weft_join(ch[i], NULL);
    weft_chan_destroy(c.ch);
    return NULL;
}

Test(pin, a_pinned_coroutine_resumes_on_its_thread_after_every_kind_of_wait)
{
    FOR_EACH_CONFIG(b, w, pin_workers) {
        struct pin_run r = { .status = -1 };
        run_with_io(w, b, pin_main, &r);
        cr_assert_eq(r.status, 0, "%s, %u workers: step %ld failed", backend_name[b], w, (long)r.status);
        cr_assert_eq(r.w.checks, 300);
        cr_assert_eq(r.w.moves, 0, "%s, %u workers: moved %d times of %d", backend_name[b], w,
                     r.w.moves, r.w.checks);
    }
}

/*
 * A thief never takes a pinned coroutine, nor the monitor. The pinned one is
 * woken on its home worker by a coroutine that then computes for a while
 * without yielding: an unpinned one would sit on that worker's runnext, where
 * the monitor takes it once the waker has held the worker long enough.
 */
struct steal_run {
    weft_chan  *ch;
    _Atomic int home;
    int         moves;
    int         rounds;
};

static void *nothing(void *arg)
{
    return arg;
}

/* Spawns a task first, which wakes an idle worker (a wake-up alone would
 * not, its task being left to this worker); that worker then searches while
 * the receiver, woken, waits on this one. */
static void *wake_then_compute(void *arg)
{
    struct steal_run *s = arg;
    weft_task *other;
    weft_spawn(&other, nothing, NULL);
    int v = 1;
    weft_chan_send(s->ch, &v);
    uint64_t until = weft_now() + 10000000;   /* well past the monitor's rescue threshold and its look */
    while (weft_now() < until)
        ;
    weft_join(other, NULL);
    return NULL;
}

static void *pinned_receiver(void *arg)
{
    struct steal_run *s = arg;
    weft_pin();
    int home = weft_worker();
    pid_t me = tid();
    for (int i = 0; i < s->rounds; i++) {
        weft_task *t;
        weft_spawn(&t, wake_then_compute, s);
        int v;
        weft_chan_recv(s->ch, &v);
        if (weft_worker() != home || tid() != me)
            s->moves++;
        weft_join(t, NULL);
    }
    weft_unpin();
    return NULL;
}

static void *steal_main(void *arg)
{
    struct steal_run *s = arg;
    weft_chan_create(&s->ch, sizeof(int), 0);
    weft_task *t;
    weft_spawn(&t, pinned_receiver, s);
    weft_join(t, NULL);
    weft_chan_destroy(s->ch);
    return NULL;
}

Test(pin, thieves_never_take_a_pinned_coroutine)
{
    for (unsigned w = 2; w <= 4; w += 2) {
        struct steal_run s = { .rounds = 100 };
        run_with(w, steal_main, &s);
        cr_assert_eq(s.moves, 0, "%u workers: moved %d times in %d rounds", w, s.moves, s.rounds);
    }
}

/*
 * Unpinned again, a coroutine may move: it is not left pinned by mistake.
 * Each of the two workers has a waker pinned to it. The coroutine under test
 * asks the waker of the worker it runs on to wake it, and waits; that waker
 * wakes it onto its own worker, the coroutine's home, and then holds the
 * worker until the coroutine has run. An unpinned coroutine can then run
 * only on the other worker (a thief takes it, or the monitor's takeover of
 * the held worker); one left pinned would wait for its home, until the
 * waker gives up.
 */
enum { WAKE = 1, STOP = 2 };

struct move_run {
    weft_chan   *ch;            /* the coroutine under test waits here */
    weft_chan   *cmd[2];        /* each worker's waker takes WAKE or STOP here */
    _Atomic int  waker_on;      /* the worker the second waker pinned itself to, or -1 */
    _Atomic int  woken;         /* wake-ups sent so far */
    _Atomic int  ran;           /* wake-ups after which the coroutine ran */
    int          rounds, moves;
};

static void waker_loop(struct move_run *m, int worker)
{
    for (;;) {
        int c;
        if (weft_chan_recv(m->cmd[worker], &c) != 0 || c == STOP)
            return;
        int v = 1, mine = atomic_fetch_add(&m->woken, 1) + 1;
        weft_chan_send(m->ch, &v);
        /* Until the coroutine has run after this wake-up, not a later one:
         * it may start its next round before we look. A bound: a pinned
         * coroutine never runs elsewhere. */
        uint64_t until = weft_now() + 10000000000u;
        while (atomic_load(&m->ran) < mine && weft_now() < until)
            ;
    }
}

static void *second_waker(void *arg)
{
    struct move_run *m = arg;
    weft_pin();
    atomic_store(&m->waker_on, weft_worker());
    waker_loop(m, weft_worker());
    weft_unpin();
    return NULL;
}

static void *moving(void *arg)
{
    struct move_run *m = arg;
    weft_pin();
    weft_unpin();
    for (int i = 0; i < m->rounds; i++) {
        int home = weft_worker();
        int c = WAKE, v;
        weft_chan_send(m->cmd[home], &c);
        weft_chan_recv(m->ch, &v);
        atomic_fetch_add(&m->ran, 1);
        if (weft_worker() != home)
            m->moves++;
    }
    for (int w = 0; w < 2; w++) {
        int c = STOP;
        weft_chan_send(m->cmd[w], &c);
    }
    return NULL;
}

static void *moving_main(void *arg)
{
    struct move_run *m = arg;
    weft_chan_create(&m->ch, sizeof(int), 0);
    for (int w = 0; w < 2; w++)
        weft_chan_create(&m->cmd[w], sizeof(int), 4);
    /* The first waker is this coroutine, pinned where it runs; while it
     * holds its worker, the second can start only on the other one. */
    weft_pin();
    int here = weft_worker();
    atomic_store(&m->waker_on, -1);
    weft_task *second, *t;
    weft_spawn(&second, second_waker, m);
    uint64_t until = weft_now() + 10000000000u;
    while (atomic_load(&m->waker_on) < 0 && weft_now() < until)
        ;
    if (atomic_load(&m->waker_on) == 1 - here) {
        weft_spawn(&t, moving, m);
        waker_loop(m, here);
        weft_join(t, NULL);
    } else {
        int c = STOP;   /* never seen: the test then fails with no rounds */
        weft_chan_send(m->cmd[0], &c);
        weft_chan_send(m->cmd[1], &c);
    }
    weft_join(second, NULL);
    weft_unpin();
    for (int w = 0; w < 2; w++)
        weft_chan_destroy(m->cmd[w]);
    weft_chan_destroy(m->ch);
    return NULL;
}

Test(pin, an_unpinned_coroutine_moves_again)
{
    struct move_run m = { .rounds = 10 };
    run_with(2, moving_main, &m);
    cr_assert_gt(m.moves, 0, "never moved in %d rounds", m.rounds);
}

/*
 * Many pinned coroutines on several workers, each woken again and again while
 * its home worker has nothing else to do and parks, or is about to: by its
 * own ring or epoll set (a plain thread answers the byte it waits for, one
 * connection at a time, so that the workers keep going idle between), by a
 * plain thread (a channel, which queues it on its home worker's inbox) and by
 * an unpinned coroutine that may run on any worker. A wake-up lost on the
 * way, or a task queued where its parked worker never looks, hangs the run;
 * a watchdog turns that into a failure.
 */
#define IDLE_CONNS_MAX 32

struct idle_run {
    unsigned    conns, rounds, relays;
    int         sock[IDLE_CONNS_MAX][2];   /* [0] the pinned coroutine's, [1] the plain thread's */
    weft_chan  *wake[IDLE_CONNS_MAX];      /* each pinned coroutine's channel */
    weft_chan  *relay;                     /* conn indexes for the relays; -1 ends one */
    _Atomic int failed;                    /* a step that went wrong, 0 if none */
    _Atomic int moves;                     /* wake-ups that found a pinned coroutine elsewhere */
    _Atomic int woken;                     /* wake-ups seen by the pinned coroutines */
};

struct idle_conn {
    struct idle_run *run;
    unsigned         i;
};

static void idle_fail(struct idle_run *r, int step)
{
    int none = 0;
    atomic_compare_exchange_strong(&r->failed, &none, step);
}

static void *idle_pinned(void *arg)
{
    struct idle_conn *c = arg;
    struct idle_run *r = c->run;
    if (weft_pin() != 0) {
        idle_fail(r, 1);
        return NULL;
    }
    int worker = weft_worker();
    pid_t me = tid();
    for (unsigned k = 0; k < r->rounds; k++) {
        char b;
        if (weft_read(r->sock[c->i][0], &b, 1) != 1 || weft_write(r->sock[c->i][0], &b, 1) != 1) {
            idle_fail(r, 2);
            break;
        }
        int v;
        if (weft_chan_recv(r->wake[c->i], &v) != 0 || v != (int)k) {
            idle_fail(r, 3);
            break;
        }
        if (weft_worker() != worker || tid() != me)
            atomic_fetch_add(&r->moves, 1);
        atomic_fetch_add(&r->woken, 2);
    }
    weft_unpin();
    return NULL;
}

/* Unpinned: sends each pinned coroutine the round its plain thread asked for. */
static void *idle_relay(void *arg)
{
    struct idle_run *r = arg;
    int msg[2];
    while (weft_chan_recv(r->relay, msg) == 0 && msg[0] >= 0)
        if (weft_chan_send(r->wake[msg[0]], &msg[1]) != 0)
            idle_fail(r, 4);
    return NULL;
}

struct idle_client {
    struct idle_run *run;
    unsigned         first, step;   /* its connections: first, first + step, ... */
};

/* A plain thread: for each of its connections in turn, a byte to echo, then
 * the wake-up on the channel, from itself on even rounds and through a relay
 * on odd ones. */
static void *idle_client(void *arg)
{
    struct idle_client *k = arg;
    struct idle_run *r = k->run;
    for (unsigned round = 0; round < r->rounds && !atomic_load(&r->failed); round++) {
        for (unsigned i = k->first; i < r->conns; i += k->step) {
            char b = (char)round, back;
            if (write(r->sock[i][1], &b, 1) != 1 || read(r->sock[i][1], &back, 1) != 1 || back != b) {
                idle_fail(r, 5);
                return NULL;
            }
            int v = (int)round;
            if (round % 2 == 0) {
                if (weft_chan_send(r->wake[i], &v) != 0)
                    idle_fail(r, 6);
            } else {
                int msg[2] = { (int)i, v };
                if (weft_chan_send(r->relay, msg) != 0)
                    idle_fail(r, 7);
            }
        }
    }
    return NULL;
}

static void *idle_main(void *arg)
{
    struct idle_run *r = arg;
    struct idle_conn conn[IDLE_CONNS_MAX];
    weft_task *pinned[IDLE_CONNS_MAX], *relay[8];
    for (unsigned i = 0; i < r->conns; i++) {
        conn[i] = (struct idle_conn){ .run = r, .i = i };
        if (weft_spawn(&pinned[i], idle_pinned, &conn[i]) != 0)
            abort();
    }
    for (unsigned j = 0; j < r->relays; j++)
        if (weft_spawn(&relay[j], idle_relay, r) != 0)
            abort();
    enum { CLIENTS = 2 };
    pthread_t th[CLIENTS];
    struct idle_client k[CLIENTS];
    for (unsigned j = 0; j < CLIENTS; j++) {
        k[j] = (struct idle_client){ .run = r, .first = j, .step = CLIENTS };
        if (pthread_create(&th[j], NULL, idle_client, &k[j]) != 0)
            abort();
    }
    for (unsigned j = 0; j < CLIENTS; j++)
        pthread_join(th[j], NULL);
    for (unsigned j = 0; j < r->relays; j++) {
        int end[2] = { -1, 0 };
        weft_chan_send(r->relay, end);
    }
    for (unsigned j = 0; j < r->relays; j++)
        weft_join(relay[j], NULL);
    if (atomic_load(&r->failed))
        for (unsigned i = 0; i < r->conns; i++)
            shutdown(r->sock[i][1], SHUT_RDWR);   /* a pinned coroutine still waiting gives up */
    for (unsigned i = 0; i < r->conns; i++)
        weft_join(pinned[i], NULL);
    return NULL;
}

struct idle_cfg {
    struct idle_run *run;
    unsigned         workers;
    int              backend;
};

/* Runs fn(arg) on a thread of its own and waits at most limit_s seconds for
 * it: returns pthread_timedjoin_np's result (ETIMEDOUT for a hang, which
 * the caller turns into a failure), with fn's result in *res. */
static int run_watched(void *(*fn)(void *), void *arg, uint64_t limit_s, void **res)
{
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, fn, arg), 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)limit_s;
    return pthread_timedjoin_np(th, res, &until);
}

static void *idle_runtime(void *arg)
{
    struct idle_cfg *c = arg;
    weft_config cfg = { .workers = c->workers, .io_backend = c->backend };
    return (void *)(intptr_t)weft_main(&cfg, idle_main, c->run, NULL);
}

Test(pin, pinned_coroutines_woken_while_their_workers_park_never_hang, .timeout = 590)
{
    static const unsigned counts[] = { 2, 4 };
    bool slow = WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND;
    /* Generous: a healthy run takes a fraction of this even on a loaded
     * machine; a hang never ends. */
    uint64_t limit_s = slow ? 240 : 60;
    FOR_EACH_CONFIG(b, w, counts) {
        static struct idle_run r;
        memset(&r, 0, sizeof r);
        r.conns = slow ? 8 : IDLE_CONNS_MAX;
        r.rounds = slow ? 60 : 300;
        r.relays = w;
        for (unsigned i = 0; i < r.conns; i++) {
            cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, r.sock[i]), 0);
            cr_assert_eq(weft_chan_create(&r.wake[i], sizeof(int), 1), 0);
        }
        cr_assert_eq(weft_chan_create(&r.relay, 2 * sizeof(int), 4), 0);

        struct idle_cfg c = { .run = &r, .workers = w, .backend = b };
        void *res;
        int j = run_watched(idle_runtime, &c, limit_s, &res);
        cr_assert_eq(j, 0, "%s, %u workers: not done after %llu s, %d of %u wake-ups seen: "
                     "a pinned coroutine was never run again", backend_name[b], w,
                     (unsigned long long)limit_s, atomic_load(&r.woken), 2 * r.conns * r.rounds);
        cr_assert_eq((intptr_t)res, 0, "%s, %u workers: weft_main failed", backend_name[b], w);
        cr_assert_eq(atomic_load(&r.failed), 0, "%s, %u workers: step %d failed", backend_name[b], w,
                     atomic_load(&r.failed));
        cr_assert_eq(atomic_load(&r.woken), (int)(2 * r.conns * r.rounds), "%s, %u workers", backend_name[b], w);
        cr_assert_eq(atomic_load(&r.moves), 0, "%s, %u workers: moved %d times", backend_name[b], w,
                     atomic_load(&r.moves));
        for (unsigned i = 0; i < r.conns; i++) {
            close(r.sock[i][0]);
            close(r.sock[i][1]);
            weft_chan_destroy(r.wake[i]);
        }
        weft_chan_destroy(r.relay);
    }
}

/*
 * A coroutine that wakes coroutines pinned to its own worker while the
 * monitor takes that worker over. The waker closes, with weft_close, pipes
 * that pinned coroutines of its worker read, each just written to, while it
 * holds the worker past the monitor's rescue threshold. Closing wakes each
 * reader with the descriptor's lock held (on the epoll backend); the
 * monitor, rescuing the worker, reaps the same descriptors' events and takes
 * the same locks. Neither may wait for the other: a wake from a coroutine's
 * code must not wait for the monitor to finish. A deadlock hangs the run; a
 * watchdog turns that into a failure.
 */
#define CLOSE_PIPES_MAX 256

struct close_run {
    unsigned     pipes, rounds;
    int          home;                          /* the closer's worker */
    int          rd[CLOSE_PIPES_MAX], wr[CLOSE_PIPES_MAX];
    _Atomic int  waiting;                       /* readers about to read, this round */
    _Atomic int  pinned;                        /* readers pinned to the closer's worker, in all */
    _Atomic int  bad;                           /* readers that got neither the byte nor -EBADF */
    _Atomic int  rounds_done;
};

struct close_reader {
    struct close_run *run;
    unsigned          i;
};

static void *close_reader(void *arg)
{
    struct close_reader *c = arg;
    struct close_run *r = c->run;
    bool pinned = weft_worker() == r->home;
    if (pinned) {
        weft_pin();
        atomic_fetch_add(&r->pinned, 1);
    }
    atomic_fetch_add(&r->waiting, 1);
    char b;
    ssize_t n = weft_read(r->rd[c->i], &b, 1);
    if (n != 1 && n != -EBADF)
        atomic_fetch_add(&r->bad, 1);
    if (pinned)
        weft_unpin();
    return NULL;
}

static void spin_ns(uint64_t ns)
{
    uint64_t until = weft_now() + ns;
    while (weft_now() < until)
        ;
}

static void *closer(void *arg)
{
    struct close_run *r = arg;
    weft_pin();
    r->home = weft_worker();
    static struct close_reader cr[CLOSE_PIPES_MAX];
    weft_task *t[CLOSE_PIPES_MAX];
    for (unsigned k = 0; k < r->rounds; k++) {
        atomic_store(&r->waiting, 0);
        for (unsigned i = 0; i < r->pipes; i++) {
            int p[2];
            if (pipe2(p, O_CLOEXEC) != 0)
                return (void *)1;
            r->rd[i] = p[0];
            r->wr[i] = p[1];
            cr[i] = (struct close_reader){ r, i };
            if (weft_spawn(&t[i], close_reader, &cr[i]) != 0)
                return (void *)2;
            weft_yield();   /* it starts here, most often, and pins itself */
        }
        while (atomic_load(&r->waiting) < (int)r->pipes)
            weft_sleep(100000);
        weft_sleep(1000000);   /* into their reads */
        /* Held past the rescue threshold (2 ms), then the writes, which give
         * the monitor events to reap, and the closes, which wake the
         * readers; both overlap the monitor's looks (every millisecond). */
        spin_ns(3000000);
        for (unsigned i = 0; i < r->pipes; i++)
            if (write(r->wr[i], "x", 1) != 1)
                return (void *)3;
        for (unsigned i = 0; i < r->pipes; i++)
            if (weft_close(r->rd[i]) != 0)
                return (void *)4;
        for (unsigned i = 0; i < r->pipes; i++) {
            weft_join(t[i], NULL);
            close(r->wr[i]);
        }
        atomic_fetch_add(&r->rounds_done, 1);
    }
    weft_unpin();
    return NULL;
}

struct close_cfg {
    struct close_run *run;
    int               backend;
};

static void *close_runtime(void *arg)
{
    struct close_cfg *c = arg;
    weft_config cfg = { .workers = 2, .io_backend = c->backend };
    void *res = (void *)0xdead;
    int err = weft_main(&cfg, closer, c->run, &res);
    return err ? (void *)(intptr_t)err : res;
}

Test(pin, waking_pinned_coroutines_while_the_monitor_takes_their_worker_over_never_deadlocks, .timeout = 590)
{
    bool slow = WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND;
    uint64_t limit_s = slow ? 240 : 60;   /* a healthy run takes a few seconds at most */
    FOR_EACH_BACKEND(b) {
        static struct close_run r;
        memset(&r, 0, sizeof r);
        r.pipes = slow ? 32 : CLOSE_PIPES_MAX;
        r.rounds = slow ? 10 : 100;
        struct close_cfg c = { .run = &r, .backend = b };
        void *res;
        int j = run_watched(close_runtime, &c, limit_s, &res);
        cr_assert_eq(j, 0, "%s: not done after %llu s, in round %d of %u: the closer and the "
                     "monitor wait for each other", backend_name[b], (unsigned long long)limit_s,
                     atomic_load(&r.rounds_done) + 1, r.rounds);
        cr_assert_null(res, "%s: the closer failed (%p)", backend_name[b], res);
        cr_assert_eq(atomic_load(&r.bad), 0, "%s: %d reads got neither the byte nor -EBADF",
                     backend_name[b], atomic_load(&r.bad));
        /* Pinned readers are what the takeover must not deadlock on: the
         * test means something only if there were some in most rounds. How
         * many start on the closer's worker rather than the other is the
         * scheduler's choice, which a loaded machine moves. */
        cr_assert_gt(atomic_load(&r.pinned), (int)r.rounds,
                     "%s: only %d readers started on the closer's worker", backend_name[b],
                     atomic_load(&r.pinned));
    }
}
