/* SPDX-License-Identifier: MIT */
/* Deadlines and cancellation: every blocking call gives up with -ETIMEDOUT at
 * the caller's deadline, or -ECANCELED once the caller was cancelled, and
 * leaves the object it waited on as if it had not been called. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS 1000000ull

/* The blocking calls, each made where nothing will ever complete it. */
enum call { C_SLEEP, C_JOIN, C_MUTEX, C_COND, C_WG, C_SEM, C_SEND, C_RECV, C_SELECT,
            C_READ, C_POLL, C_OFFLOAD_QUEUED, C_COUNT };

static const char *const call_name[C_COUNT] __attribute__((unused)) = {  /* in messages */
    "sleep", "join", "mutex_lock", "cond_wait", "wg_wait", "sem_acquire", "chan_send",
    "chan_recv", "select", "read", "poll", "offload",
};

struct scene {
    weft_mutex  held;        /* locked by the scene's owner throughout */
    weft_mutex  own;         /* for cond_wait */
    weft_cond   cond;
    weft_wg     wg;          /* count 1 throughout */
    weft_sem    zero;        /* no units */
    weft_sem    release;     /* lets `forever` finish */
    weft_chan  *ch, *ch_r;   /* unbuffered: nobody receives from ch, nobody sends to ch_r */
    weft_chan  *ch2, *ch3;   /* unbuffered, for select */
    int         pipe[2];     /* nothing is ever written */
    int         quiet[2];    /* nothing is ever written either: for weft_poll */
    weft_task  *forever;     /* runs until `release` */
};

static void *wait_for_release(void *arg)
{
    struct scene *s = arg;
    weft_sem_acquire(&s->release);
    return (void *)7;
}

static void scene_open(struct scene *s)
{
    *s = (struct scene){ .held = WEFT_MUTEX_INIT, .own = WEFT_MUTEX_INIT, .cond = WEFT_COND_INIT,
                         .wg = WEFT_WG_INIT };
    cr_assert_eq(weft_mutex_lock(&s->held), 0);
    cr_assert_eq(weft_wg_add(&s->wg, 1), 0);
    weft_sem_init(&s->zero, 0);
    weft_sem_init(&s->release, 0);
    cr_assert_eq(weft_chan_create(&s->ch, sizeof(int), 0), 0);
    cr_assert_eq(weft_chan_create(&s->ch_r, sizeof(int), 0), 0);
    cr_assert_eq(weft_chan_create(&s->ch2, sizeof(int), 0), 0);
    cr_assert_eq(weft_chan_create(&s->ch3, sizeof(int), 0), 0);
    cr_assert_eq(pipe(s->pipe), 0);
    cr_assert_eq(pipe(s->quiet), 0);
    cr_assert_eq(weft_spawn(&s->forever, wait_for_release, s), 0);
}

/* Checks that the interrupted calls left each object as it was, then frees. */
static void scene_close(struct scene *s)
{
    int v = 1;
    cr_assert_eq(weft_chan_try_recv(s->ch, &v), -EAGAIN, "an abandoned send was delivered");
    cr_assert_eq(weft_chan_try_send(s->ch_r, &v), -EAGAIN, "an abandoned receiver is still queued");
    cr_assert_eq(weft_chan_try_send(s->ch2, &v), -EAGAIN, "an abandoned select is still queued");
    cr_assert_eq(weft_chan_try_recv(s->ch3, &v), -EAGAIN, "an abandoned select still offers its send");
    cr_assert_eq(weft_sem_release(&s->zero), 0);
    cr_assert_eq(weft_sem_acquire(&s->zero), 0, "an abandoned acquire took the unit");
    cr_assert_eq(weft_mutex_unlock(&s->held), 0);
    cr_assert_eq(weft_mutex_trylock(&s->held), 0, "an abandoned lock left the mutex taken");
    cr_assert_eq(weft_mutex_unlock(&s->held), 0);
    cr_assert_eq(weft_wg_done(&s->wg), 0);
    cr_assert_eq(weft_wg_wait(&s->wg), 0);
    /* The pipe still works for the next reader: nothing stale is registered. */
    cr_assert_eq(weft_write(s->pipe[1], "x", 1), 1);
    char c;
    cr_assert_eq(weft_read(s->pipe[0], &c, 1), 1);
    cr_assert_eq(weft_sem_release(&s->release), 0);
    void *r;
    cr_assert_eq(weft_join(s->forever, &r), 0, "an abandoned join consumed the handle");
    cr_assert_eq((uintptr_t)r, 7);
    cr_assert_eq(weft_chan_destroy(s->ch), 0);
    cr_assert_eq(weft_chan_destroy(s->ch_r), 0);
    cr_assert_eq(weft_chan_destroy(s->ch2), 0);
    cr_assert_eq(weft_chan_destroy(s->ch3), 0);
    weft_close(s->pipe[0]);
    weft_close(s->pipe[1]);
    cr_assert_eq(weft_poll(s->quiet[1], POLLOUT) & POLLOUT, POLLOUT);
    weft_close(s->quiet[0]);
    weft_close(s->quiet[1]);
}

static void *sleep_long(void *arg)
{
    (void)arg;
    sleep(2);   /* a blocking function that occupies a helper thread */
    return NULL;
}

static int block_in(struct scene *s, enum call c)
{
    int v = 1;
    char buf[4];
    switch (c) {
    case C_SLEEP:  return weft_sleep(60ull * 1000 * MS);
    case C_JOIN:   return weft_join(s->forever, NULL);
    case C_MUTEX:  return weft_mutex_lock(&s->held);
    case C_COND: {
        weft_mutex_lock(&s->own);
        int r = weft_cond_wait(&s->cond, &s->own);
        int u = weft_mutex_unlock(&s->own);   /* cond_wait returns with it held */
        return u ? 1000 : r;
    }
    case C_WG:     return weft_wg_wait(&s->wg);
    case C_SEM:    return weft_sem_acquire(&s->zero);
    case C_SEND:   return weft_chan_send(s->ch, &v);
    case C_RECV:   return weft_chan_recv(s->ch_r, &v);
    case C_SELECT: {
        weft_sel cases[2] = { { s->ch2, WEFT_RECV, &v }, { s->ch3, WEFT_SEND, &v } };
        return weft_select(cases, 2);
    }
    case C_READ:   return (int)weft_read(s->pipe[0], buf, sizeof buf);
    case C_POLL:   return weft_poll(s->quiet[0], POLLIN);
    default:       return weft_offload(sleep_long, NULL, NULL);
    }
}

/* ---- deadlines ------------------------------------------------------------- */

struct timed {
    struct scene *s;
    enum call     c;
    int           result;
    uint64_t      deadline, returned;
};

static void *block_until_deadline(void *arg)
{
    struct timed *t = arg;
    t->deadline = weft_now() + 20 * MS;
    weft_deadline(t->deadline);
    t->result = block_in(t->s, t->c);
    t->returned = weft_now();
    weft_deadline(0);
    return NULL;
}

static void *every_call_times_out(void *arg)
{
    (void)arg;
    struct scene s;
    scene_open(&s);
    struct timed t[C_COUNT];
    weft_task *h[C_COUNT];
    for (int c = 0; c < C_COUNT; c++) {
        if (c == C_OFFLOAD_QUEUED)
            continue;   /* needs a full pool: its own test */
        t[c] = (struct timed){ .s = &s, .c = c };
        cr_assert_eq(weft_spawn(&h[c], block_until_deadline, &t[c]), 0);
    }
    for (int c = 0; c < C_COUNT; c++) {
        if (c == C_OFFLOAD_QUEUED)
            continue;
        weft_join(h[c], NULL);
        cr_assert_eq(t[c].result, -ETIMEDOUT, "%s returned %d", call_name[c], t[c].result);
        cr_assert_geq(t[c].returned, t[c].deadline, "%s gave up before its deadline", call_name[c]);
    }
    scene_close(&s);
    return NULL;
}

Test(deadline, every_blocking_call_returns_ETIMEDOUT_at_the_deadline_and_takes_nothing)
{
    FOR_EACH_CONFIG(b, w, sweep_workers)
        run_with_io(w, b, every_call_times_out, NULL);
}

static void *nested(void *arg)
{
    (void)arg;
    uint64_t outer = weft_now() + 1000 * MS;
    cr_assert_eq(weft_deadline(outer), 0);
    uint64_t inner = weft_now() + 5 * MS;
    cr_assert_eq(weft_deadline(inner), outer, "the previous deadline comes back");
    cr_assert_eq(weft_sleep(500 * MS), -ETIMEDOUT);
    cr_assert_eq(weft_deadline(outer), inner);
    cr_assert_eq(weft_sleep(MS), 0, "the outer deadline is far away");
    cr_assert_eq(weft_deadline(0), outer);
    return NULL;
}

Test(deadline, deadlines_nest_and_restore)
{
    FOR_EACH_BACKEND(b) {
        run_with_io(1, b, nested, NULL);
    }
}

static void *past_deadline(void *arg)
{
    (void)arg;
    weft_mutex m = WEFT_MUTEX_INIT;
    weft_deadline(1);   /* long past */
    cr_assert_eq(weft_mutex_lock(&m), 0, "a call that need not wait ignores the deadline");
    cr_assert_eq(weft_mutex_unlock(&m), 0);
    weft_sem s;
    weft_sem_init(&s, 0);
    cr_assert_eq(weft_sem_acquire(&s), -ETIMEDOUT);
    weft_deadline(0);
    return NULL;
}

Test(deadline, a_deadline_in_the_past_fails_only_calls_that_must_wait)
{
    run_with(2, past_deadline, NULL);
}

/* A join of a task still queued on the joiner's worker takes that task out
 * of the deque to run as soon as the joiner parks. A join that gives up
 * before parking must put it back where other workers can take it. */
static _Atomic int queued_ran;
static _Atomic int occupier;   /* 0: not started, 1: holds its worker, 2: told to end */

static void *mark_ran(void *arg)
{
    atomic_store(&queued_ran, 1);
    return arg;
}

/* Holds a worker without a weft_yield, which would let it run other tasks.
 * The waits here use sched_yield, which gives the thread's CPU away only:
 * Valgrind runs one thread at a time. */
static void *occupy_a_worker(void *arg)
{
    atomic_store(&occupier, 1);
    while (atomic_load(&occupier) != 2)
        sched_yield();
    return arg;
}

static bool wait_for(_Atomic int *v, int want)
{
    uint64_t give_up = weft_now() + 20000 * MS;
    while (atomic_load(v) != want && weft_now() < give_up)
        sched_yield();
    return atomic_load(v) == want;
}

static void *join_gives_up_before_parking(void *arg)
{
    (void)arg;
    weft_task *x, *t;
    cr_assert_eq(weft_spawn(&x, occupy_a_worker, NULL), 0);
    cr_assert(wait_for(&occupier, 1), "the other worker never took the occupier");
    /* The other worker is busy and we do not switch: t stays queued here. */
    cr_assert_eq(weft_spawn(&t, mark_ran, (void *)7), 0);
    weft_deadline(1);   /* long past */
    cr_assert_eq(weft_join(t, NULL), -ETIMEDOUT);
    weft_deadline(0);
    atomic_store(&occupier, 2);
    /* We still do not switch: only the other worker can run t now. */
    cr_assert(wait_for(&queued_ran, 1), "the task never ran on the other worker");
    void *r = NULL;
    cr_assert_eq(weft_join(t, &r), 0, "the handle stays joinable");
    cr_assert_eq((uintptr_t)r, 7);
    cr_assert_eq(weft_join(x, NULL), 0);
    return NULL;
}

Test(deadline, a_join_that_times_out_before_its_task_ran_leaves_it_to_other_workers)
{
    atomic_store(&queued_ran, 0);
    atomic_store(&occupier, 0);
    run_with(2, join_gives_up_before_parking, NULL);
}

static void *plain_thread_waits(void *arg)
{
    weft_sem *s = arg;
    uint64_t d = weft_now() + 10 * MS;
    weft_deadline(d);
    intptr_t r = weft_sem_acquire(s);
    if (weft_now() < d)
        r = 1000;   /* gave up early */
    weft_deadline(0);
    return (void *)r;
}

Test(deadline, a_plain_thread_has_its_own_deadline)
{
    weft_sem s;
    weft_sem_init(&s, 0);
    pthread_t th;
    void *r;
    cr_assert_eq(pthread_create(&th, NULL, plain_thread_waits, &s), 0);
    pthread_join(th, &r);
    cr_assert_eq((intptr_t)r, -ETIMEDOUT);
    cr_assert_eq(weft_sem_release(&s), 0);
    cr_assert_eq(weft_sem_acquire(&s), 0, "the timed-out thread took no unit");
}

/*
 * A plain thread's deadline ends its IO too. Each call is made on a blocking
 * descriptor where nothing will ever complete it, on a thread of its own; a
 * call that ignored the deadline would block that thread for good, so the
 * test gives up on it after many seconds and fails.
 */
enum plain_io { P_POLL, P_READ, P_WRITE, P_RECV, P_SEND, P_ACCEPT, P_CONNECT, P_RECV_WAITALL, P_COUNT };

static const char *const plain_io_name[P_COUNT] __attribute__((unused)) = {
    "poll", "read", "write to a full pipe", "recv", "send to a full socket", "accept",
    "connect to a full listener", "recv with MSG_WAITALL",
};

struct plain_io_call {
    enum plain_io       c;
    int                 fd;
    struct sockaddr_in *sa;         /* connect */
    long                result;
    uint64_t            deadline, returned;
    _Atomic int         done;
};

static void *plain_io_until_deadline(void *arg)
{
    struct plain_io_call *p = arg;
    char buf[4096] = { 0 };
    p->deadline = weft_now() + 50 * MS;
    weft_deadline(p->deadline);
    switch (p->c) {
    case P_POLL:    p->result = weft_poll(p->fd, POLLIN); break;
    case P_READ:    p->result = (long)weft_read(p->fd, buf, sizeof buf); break;
    case P_WRITE:   p->result = (long)weft_write(p->fd, buf, sizeof buf); break;
    case P_RECV:    p->result = (long)weft_recv(p->fd, buf, sizeof buf, 0); break;
    case P_SEND:    p->result = (long)weft_send(p->fd, buf, sizeof buf, 0); break;
    case P_ACCEPT:  p->result = weft_accept(p->fd, NULL, NULL, SOCK_CLOEXEC); break;
    case P_CONNECT: p->result = weft_connect(p->fd, (struct sockaddr *)p->sa, sizeof *p->sa); break;
    default:        p->result = (long)weft_recv(p->fd, buf, 4, MSG_WAITALL); break;
    }
    p->returned = weft_now();
    weft_deadline(0);
    atomic_store(&p->done, 1);
    return NULL;
}

/* Fills fd's buffer (a pipe's or a socket's), leaving it blocking. */
static void fill_up(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    cr_assert_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
    char chunk[4096] = { 0 };
    while (write(fd, chunk, sizeof chunk) > 0)
        ;
    while (write(fd, chunk, 1) > 0)   /* a pipe's last page, byte by byte */
        ;
    cr_assert_eq(fcntl(fd, F_SETFL, fl), 0);
}

Test(deadline, a_plain_threads_deadline_ends_its_descriptor_io)
{
    int p[2], full[2], sv[2], sfull[2], wa[2], fill[16], nfill;
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(full, O_CLOEXEC), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sfull), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, wa), 0);
    fill_up(full[1]);
    fill_up(sfull[0]);
    cr_assert_eq(write(wa[1], "ab", 2), 2);   /* half of what MSG_WAITALL asks for */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in any = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert_eq(bind(lfd, (struct sockaddr *)&any, sizeof any), 0);
    cr_assert_eq(listen(lfd, 4), 0);
    struct sockaddr_in sa;
    int busy = full_listener(&sa, fill, 16, &nfill);
    cr_assert_geq(busy, 0, "no listener with a full queue could be made");
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    int fds[P_COUNT] = { p[0], p[0], full[1], sv[0], sfull[0], lfd, cfd, wa[0] };
    static struct plain_io_call call[P_COUNT];
    pthread_t th[P_COUNT];
    for (int c = 0; c < P_COUNT; c++) {
        call[c] = (struct plain_io_call){ .c = c, .fd = fds[c], .sa = &sa };
        cr_assert_eq(pthread_create(&th[c], NULL, plain_io_until_deadline, &call[c]), 0);
    }
    for (int c = 0; c < P_COUNT; c++) {
        uint64_t give_up = weft_now() + 20000 * MS;
        while (!atomic_load(&call[c].done) && weft_now() < give_up)
            usleep(1000);
        cr_assert(atomic_load(&call[c].done), "%s from a plain thread ignored its deadline",
                  plain_io_name[c]);
        pthread_join(th[c], NULL);
        long want = c == P_RECV_WAITALL ? 2 : -ETIMEDOUT;
        cr_assert_eq(call[c].result, want, "%s returned %ld", plain_io_name[c], call[c].result);
        cr_assert_geq(call[c].returned, call[c].deadline, "%s gave up before its deadline",
                      plain_io_name[c]);
        cr_assert_eq(fcntl(fds[c], F_GETFL) & O_NONBLOCK, 0, "%s left its descriptor non-blocking",
                     plain_io_name[c]);
    }
    int all[] = { p[0], p[1], full[0], full[1], sv[0], sv[1], sfull[0], sfull[1], wa[0], wa[1],
                  lfd, busy, cfd };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        close(all[i]);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
}

/* Past the deadline, a plain thread's call that need not wait is made. */
Test(deadline, a_plain_threads_call_that_need_not_wait_ignores_a_passed_deadline)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    weft_deadline(1);   /* long past */
    char c = 0;
    cr_assert_eq(weft_write(p[1], "x", 1), 1);
    cr_assert_eq(weft_poll(p[0], POLLIN) & POLLIN, POLLIN);
    cr_assert_eq(weft_read(p[0], &c, 1), 1);
    cr_assert_eq(c, 'x');
    weft_deadline(0);
    close(p[0]);
    close(p[1]);
}

/* Calls with no readiness to wait for, from a plain thread, fail once its
 * deadline has passed, as weft_offload does, and otherwise run. */
Test(deadline, a_plain_threads_file_calls_fail_once_its_deadline_has_passed)
{
    int fd = memfd_create("weft-deadline", MFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    char c = 'x';
    weft_deadline(1);   /* long past */
    cr_assert_eq(weft_pwrite(fd, &c, 1, 0), -ETIMEDOUT);
    cr_assert_eq(weft_pread(fd, &c, 1, 0), -ETIMEDOUT);
    cr_assert_eq(weft_fsync(fd), -ETIMEDOUT);
    cr_assert_eq(weft_open("/dev/null", O_RDONLY, 0), -ETIMEDOUT);
    weft_deadline(weft_now() + 60000 * MS);
    cr_assert_eq(weft_pwrite(fd, &c, 1, 0), 1);
    cr_assert_eq(weft_pread(fd, &c, 1, 0), 1);
    cr_assert_eq(weft_fsync(fd), 0);
    int nul = weft_open("/dev/null", O_RDONLY, 0);
    cr_assert_geq(nul, 0);
    weft_deadline(0);
    close(nul);
    close(fd);
}

/* ---- cancellation -------------------------------------------------------------- */

struct victim {
    struct scene *s;
    enum call     c;
    int           result;
};

static void *block_until_cancelled(void *arg)
{
    struct victim *v = arg;
    v->result = block_in(v->s, v->c);
    return NULL;
}

static void *cancel_from_plain_thread(void *arg)
{
    usleep(2000);
    return (void *)(intptr_t)weft_cancel(arg);
}

static void *every_call_is_cancelled(void *arg)
{
    bool from_thread = arg != NULL;
    struct scene s;
    scene_open(&s);
    struct victim v[C_COUNT];
    weft_task *h[C_COUNT];
    for (int c = 0; c < C_COUNT; c++) {
        if (c == C_OFFLOAD_QUEUED)
            continue;
        v[c] = (struct victim){ .s = &s, .c = c };
        cr_assert_eq(weft_spawn(&h[c], block_until_cancelled, &v[c]), 0);
    }
    weft_sleep(2 * MS);   /* most are parked by now; the rest see it on arrival */
    for (int c = 0; c < C_COUNT; c++) {
        if (c == C_OFFLOAD_QUEUED)
            continue;
        if (from_thread) {
            pthread_t th;
            void *r;
            cr_assert_eq(pthread_create(&th, NULL, cancel_from_plain_thread, h[c]), 0);
            pthread_join(th, &r);
            cr_assert_eq((intptr_t)r, 0);
        } else {
            cr_assert_eq(weft_cancel(h[c]), 0);
        }
    }
    for (int c = 0; c < C_COUNT; c++) {
        if (c == C_OFFLOAD_QUEUED)
            continue;
        weft_join(h[c], NULL);
        cr_assert_eq(v[c].result, -ECANCELED, "%s returned %d", call_name[c], v[c].result);
    }
    scene_close(&s);
    return NULL;
}

Test(cancel, every_blocking_call_returns_ECANCELED_and_takes_nothing)
{
    FOR_EACH_CONFIG(b, w, sweep_workers)
        run_with_io(w, b, every_call_is_cancelled, NULL);
}

Test(cancel, a_plain_thread_can_cancel_a_coroutine)
{
    FOR_EACH_BACKEND(b) {
        run_with_io(2, b, every_call_is_cancelled, (void *)1);
    }
}

static void *cancel_myself(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_cancel(weft_self()), 0);
    cr_assert_eq(weft_sleep(MS), -ECANCELED, "cancellation applies to later calls too");
    cr_assert_eq(weft_sleep(MS), -ECANCELED, "and it stays");
    weft_mutex m = WEFT_MUTEX_INIT;
    cr_assert_eq(weft_mutex_lock(&m), 0, "a call that need not wait still succeeds");
    return (void *)(intptr_t)weft_mutex_unlock(&m);
}

Test(cancel, cancellation_is_sticky_and_fails_only_calls_that_must_wait)
{
    FOR_EACH_BACKEND(b) {
        cr_assert_eq(run_with_io(1, b, cancel_myself, NULL), NULL);
    }
}

Test(cancel, a_null_task_is_EINVAL)
{
    cr_assert_eq(weft_cancel(NULL), -EINVAL);
}

/* Cancellation racing completion: whichever wins, nothing is lost. */
struct race {
    weft_chan   *ch;
    _Atomic int  sent_ok, received;
};

static void *racing_sender(void *arg)
{
    struct race *r = arg;
    int v = 1;
    if (weft_chan_send(r->ch, &v) == 0)
        atomic_fetch_add(&r->sent_ok, 1);
    return NULL;
}

static void *race_cancel_against_receive(void *arg)
{
    size_t rounds = (size_t)arg;
    struct race r = { 0 };
    cr_assert_eq(weft_chan_create(&r.ch, sizeof(int), 0), 0);
    for (size_t i = 0; i < rounds; i++) {
        weft_task *t;
        weft_spawn(&t, racing_sender, &r);
        if (i % 2)
            weft_yield();
        weft_cancel(t);
        int v;
        if (weft_chan_try_recv(r.ch, &v) == 0)
            atomic_fetch_add(&r.received, 1);
        weft_join(t, NULL);
    }
    cr_assert_eq(atomic_load(&r.sent_ok), atomic_load(&r.received),
                 "a send reported success for an element nobody received");
    weft_chan_destroy(r.ch);
    return NULL;
}

Test(cancel, a_send_cancelled_as_it_completes_is_delivered_exactly_when_it_says_so)
{
    for (size_t i = 0; i < SWEEP_N; i++)
        run_with(sweep_workers[i], race_cancel_against_receive, (void *)scaled(20000));
}

/* Several cancellers at once, racing a wake-up: each may be using the waiter
 * it found when the coroutine resumes, and the coroutine must not leave its
 * wait (its waiter's frame) until they are done with it. */
struct many {
    weft_chan        *ch;
    weft_task        *target;
    _Atomic int       go, sent_ok, received, cancelled;
};

static void *cancel_storm(void *arg)
{
    struct many *m = arg;
    while (!atomic_load(&m->go))
        ;
    for (int i = 0; i < 3; i++)
        weft_cancel(m->target);
    return NULL;
}

static void *receive_until_cancelled(void *arg)
{
    struct many *m = arg;
    int v, rc;
    while ((rc = weft_chan_recv(m->ch, &v)) == 0)
        atomic_fetch_add(&m->received, 1);
    cr_assert_eq(rc, -ECANCELED);
    atomic_fetch_add(&m->cancelled, 1);
    return NULL;
}

static void *send_one(void *arg)
{
    struct many *m = arg;
    int v = 1;
    while (!atomic_load(&m->go))
        weft_yield();
    if (weft_chan_send(m->ch, &v) == 0)
        atomic_fetch_add(&m->sent_ok, 1);
    return NULL;
}

static void *race_cancellers_against_wake(void *arg)
{
    size_t rounds = (size_t)arg;
    for (size_t i = 0; i < rounds; i++) {
        struct many m = { 0 };
        cr_assert_eq(weft_chan_create(&m.ch, sizeof(int), 0), 0);
        cr_assert_eq(weft_spawn(&m.target, receive_until_cancelled, &m), 0);
        weft_task *s;
        cr_assert_eq(weft_spawn(&s, send_one, &m), 0);
        weft_yield();
        pthread_t th[2];
        for (int k = 0; k < 2; k++)
            cr_assert_eq(pthread_create(&th[k], NULL, cancel_storm, &m), 0);
        atomic_store(&m.go, 1);
        for (int k = 0; k < 2; k++)
            pthread_join(th[k], NULL);
        weft_cancel(s);    /* a sender nobody received from gives up */
        cr_assert_eq(weft_join(m.target, NULL), 0);
        cr_assert_eq(weft_join(s, NULL), 0);
        cr_assert_eq(atomic_load(&m.cancelled), 1);
        cr_assert_eq(atomic_load(&m.sent_ok), atomic_load(&m.received),
                     "a send reported success for an element nobody received");
        cr_assert_eq(weft_chan_destroy(m.ch), 0, "a cancelled waiter was left on the channel");
    }
    return NULL;
}

Test(cancel, several_cancellers_racing_a_wake_up_leave_the_waiter_and_the_channel_intact)
{
    for (size_t i = 0; i < SWEEP_N; i++)
        run_with(sweep_workers[i], race_cancellers_against_wake, (void *)scaled(300));
}

/*
 * Many reads with deadlines on a tiny ring: the submission queue fills, and
 * each read must still go in, its deadline kept, and the cancels that the
 * deadlines send must find room too. A read whose deadline was dropped would
 * wait for data that never comes.
 */
enum { CROWD = 16 };

struct crowd {
    int         fds[CROWD][2];   /* a pipe each */
    _Atomic int next;
    _Atomic int timed_out;
};

static void *read_with_deadline(void *arg)
{
    struct crowd *c = arg;
    int fd = c->fds[atomic_fetch_add(&c->next, 1)][0];
    char b;
    weft_deadline(weft_now() + 50 * MS);
    if (weft_read(fd, &b, 1) == -ETIMEDOUT)
        atomic_fetch_add(&c->timed_out, 1);
    return NULL;
}

static void *read_without_deadline(void *arg)
{
    char b;
    return (void *)(intptr_t)weft_read(*(int *)arg, &b, 1);
}

static void *crowd_reads(void *arg)
{
    struct crowd *c = arg;
    /* First a read with no deadline, one entry, so that the pairs that follow
     * straddle the end of the queue. */
    int plain[2];
    weft_task *first, *t[CROWD];
    if (pipe(plain) != 0 || weft_spawn(&first, read_without_deadline, &plain[0]) != 0)
        return (void *)1;
    for (int i = 0; i < CROWD; i++)
        if (weft_spawn(&t[i], read_with_deadline, c) != 0)
            return (void *)1;
    for (int i = 0; i < CROWD; i++)
        weft_join(t[i], NULL);
    void *r;
    if (weft_write(plain[1], "x", 1) != 1 || weft_join(first, &r) != 0 || (intptr_t)r != 1)
        return (void *)2;
    close(plain[0]);
    close(plain[1]);
    return NULL;
}

Test(deadline, reads_on_a_full_ring_keep_their_deadlines, .timeout = 30)
{
    FOR_EACH_BACKEND(b) {
        struct crowd c = { .next = 0 };
        for (int i = 0; i < CROWD; i++)
            cr_assert_eq(pipe(c.fds[i]), 0);
        weft_config cfg = { .workers = 1, .io_backend = b, .ring_entries = 2 };
        void *r = (void *)1;
        cr_assert_eq(weft_main(&cfg, crowd_reads, &c, &r), 0);
        cr_assert_null(r);
        cr_assert_eq(atomic_load(&c.timed_out), CROWD, "on %s", backend_name[b]);
        for (int i = 0; i < CROWD; i++) {
            close(c.fds[i][0]);
            close(c.fds[i][1]);
        }
    }
}

/*
 * Many reads with deadlines on one worker (one ring, one epoll set), in no
 * order, and among them reads with far deadlines that data completes first,
 * which leave the middle of the ring's heap of deadlines: each read that
 * times out does so at its own deadline, never before it, and each that is
 * fed gets its byte.
 */
enum { SPREAD = 48 };
#define SPREAD_LATE_NS ((uint64_t)((WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND) ? 5000 : 2000) * MS)

struct spread {
    int              fds[SPREAD][2];
    uint64_t         deadline[SPREAD];
    _Atomic int      parked;
    _Atomic int      next;         /* the next reader's index */
    ssize_t          got[SPREAD];
    uint64_t         back[SPREAD];   /* when each read returned */
    char             byte[SPREAD];
};

static bool fed(int i)
{
    return i % 3 == 0;
}

static void *spread_reader(void *arg)
{
    struct spread *m = arg;
    int i = atomic_fetch_add(&m->next, 1);
    weft_deadline(m->deadline[i]);
    atomic_fetch_add(&m->parked, 1);
    m->got[i] = weft_read(m->fds[i][0], &m->byte[i], 1);
    m->back[i] = weft_now();
    weft_deadline(0);
    return NULL;
}

static void *spread_deadlines(void *arg)
{
    struct spread *m = arg;
    uint64_t start = weft_now();
    for (int i = 0; i < SPREAD; i++)   /* 10 to 54 ms, scrambled; the fed ones 60 s */
        m->deadline[i] = start + (fed(i) ? 60000 * MS : (10 + (uint64_t)(i * 7 % 12) * 4) * MS);
    weft_task *t[SPREAD];
    for (int i = 0; i < SPREAD; i++)
        cr_assert_eq(weft_spawn(&t[i], spread_reader, m), 0);
    while (atomic_load(&m->parked) < SPREAD)
        weft_yield();
    weft_sleep(2 * MS);   /* the last reader has made its request */
    for (int i = 0; i < SPREAD; i++)
        if (fed(i))
            cr_assert_eq(weft_write(m->fds[i][1], "f", 1), 1);
    for (int i = 0; i < SPREAD; i++)
        cr_assert_eq(weft_join(t[i], NULL), 0);
    return NULL;
}

Test(deadline, many_reads_on_one_worker_each_end_at_their_own_deadline)
{
    FOR_EACH_BACKEND(b) {
        struct spread m = { .parked = 0, .next = 0 };
        for (int i = 0; i < SPREAD; i++)
            cr_assert_eq(pipe2(m.fds[i], O_CLOEXEC), 0);
        run_with_io(1, b, spread_deadlines, &m);
        for (int i = 0; i < SPREAD; i++) {
            if (fed(i)) {
                cr_assert_eq(m.got[i], 1, "%s: fed read %d returned %zd", backend_name[b], i, m.got[i]);
                cr_assert_eq(m.byte[i], 'f');
            } else {
                cr_assert_eq(m.got[i], -ETIMEDOUT, "%s: read %d returned %zd", backend_name[b], i, m.got[i]);
                cr_assert_geq(m.back[i], m.deadline[i], "%s: read %d timed out %.3f ms early",
                              backend_name[b], i, (double)(m.deadline[i] - m.back[i]) / 1e6);
                cr_assert_lt(m.back[i], m.deadline[i] + SPREAD_LATE_NS, "%s: read %d timed out %.1f ms late",
                             backend_name[b], i, (double)(m.back[i] - m.deadline[i]) / 1e6);
            }
            close(m.fds[i][0]);
            close(m.fds[i][1]);
        }
    }
}

/*
 * A writer sends numbered bytes a millisecond apart while a reader reads each
 * with a deadline a millisecond away, so deadlines pass as data arrives:
 * every read gives the next byte or -ETIMEDOUT, and no byte is lost,
 * repeated or reordered. Through a pipe and a socket pair (read and recv).
 */
enum { TRICKLE = 150 };

struct trickle {
    int         fd[2];
    bool        socket;
    int         timeouts;
    int         rounds;
};

static void *trickle_writer(void *arg)
{
    struct trickle *t = arg;
    for (int i = 0; i < TRICKLE; i++) {
        unsigned char b = (unsigned char)i;
        if (write(t->fd[1], &b, 1) != 1)
            return (void *)1;
        nanosleep(&(struct timespec){ 0, (long)(MS + (uint64_t)(i % 5) * 100000) }, NULL);
    }
    return NULL;
}

static void *trickle_reader(void *arg)
{
    struct trickle *t = arg;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, trickle_writer, t), 0);
    int next = 0;
    while (next < TRICKLE && t->rounds < 100 * TRICKLE) {
        t->rounds++;
        unsigned char b;
        weft_deadline(weft_now() + MS);
        ssize_t r = t->socket ? weft_recv(t->fd[0], &b, 1, 0) : weft_read(t->fd[0], &b, 1);
        weft_deadline(0);
        if (r == -ETIMEDOUT) {
            t->timeouts++;
            continue;
        }
        cr_assert_eq(r, 1, "round %d: %zd", t->rounds, r);
        cr_assert_eq(b, (unsigned char)next, "byte %d arrived as %u", next, b);
        next++;
    }
    void *wr;
    pthread_join(th, &wr);
    cr_assert_null(wr);
    cr_assert_eq(next, TRICKLE, "%d bytes of %d after %d rounds", next, TRICKLE, t->rounds);
    return NULL;
}

Test(deadline, deadlines_that_pass_as_data_arrives_lose_no_byte)
{
    FOR_EACH_CONFIG(b, w, sweep_workers) {
        for (int s = 0; s < 2; s++) {
            struct trickle t = { .socket = s };
            cr_assert_eq(s ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, t.fd) : pipe2(t.fd, O_CLOEXEC), 0);
            run_with_io(w, b, trickle_reader, &t);
            close(t.fd[0]);
            close(t.fd[1]);
        }
    }
}

/*
 * A read whose deadline passes while another coroutine holds the only worker
 * in a raw system call, and whose byte arrives after the deadline but before
 * the worker comes back: the read returns the byte or -ETIMEDOUT, and then
 * the byte is still in the pipe. Nothing is lost either way.
 */
struct held {
    int      p[2];
    ssize_t  got;
    char     byte;
    _Atomic bool reading;
};

static void *held_reader(void *arg)
{
    struct held *h = arg;
    weft_deadline(weft_now() + 10 * MS);
    atomic_store(&h->reading, true);
    h->got = weft_read(h->p[0], &h->byte, 1);
    weft_deadline(0);
    return NULL;
}

static void *late_writer(void *arg)
{
    struct held *h = arg;
    nanosleep(&(struct timespec){ 0, 30 * MS }, NULL);
    return (void *)(intptr_t)write(h->p[1], "L", 1);
}

static void *read_while_held(void *arg)
{
    struct held *h = arg;
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, held_reader, h), 0);
    while (!atomic_load(&h->reading))
        weft_yield();
    weft_yield();   /* the reader's request is made */
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, late_writer, h), 0);
    usleep(60 * MS / 1000);   /* holds the worker past the deadline and the write */
    void *w;
    pthread_join(th, &w);
    cr_assert_eq((intptr_t)w, 1);
    cr_assert_eq(weft_join(t, NULL), 0);
    return NULL;
}

Test(deadline, a_deadline_passing_while_the_worker_is_held_loses_no_byte)
{
    FOR_EACH_BACKEND(b) {
        for (int round = 0; round < 3; round++) {
            struct held h = { .reading = false };
            cr_assert_eq(pipe2(h.p, O_CLOEXEC), 0);
            run_with_io(1, b, read_while_held, &h);
            cr_assert_eq(fcntl(h.p[0], F_SETFL, O_NONBLOCK), 0);   /* what is left, without waiting */
            char c = 0;
            if (h.got == 1) {
                cr_assert_eq(h.byte, 'L');
                cr_assert_eq(read(h.p[0], &c, 1), -1, "%s: a second byte appeared", backend_name[b]);
            } else {
                cr_assert_eq(h.got, -ETIMEDOUT, "%s: the read returned %zd", backend_name[b], h.got);
                cr_assert_eq(read(h.p[0], &c, 1), 1, "%s: the byte that came late was lost", backend_name[b]);
                cr_assert_eq(c, 'L');
            }
            close(h.p[0]);
            close(h.p[1]);
        }
    }
}
