/* SPDX-License-Identifier: MIT */
/*
 * Hostile use of the public API: arguments at and past every limit (sizes
 * near SIZE_MAX, lengths over INT_MAX, negative and huge descriptors, NULL
 * where the header says it is refused, bad flags, deadlines in the past and
 * at UINT64_MAX), each answered with its documented negative errno and
 * nothing lost; and a signal storm, a thread signalling the process
 * thousands of times a second while coroutines move data, sleep, pass
 * messages and offload, in which every transfer stays byte-exact and no
 * call returns -EINTR. Both IO backends, 1, 2 and 4 workers.
 *
 * Descriptors closed and reused under waiting coroutines are the subject
 * of test_descriptors.c, fork of test_fork.c.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A huge allocation must come back NULL, as from libc, for the channel
 * tests: the sanitizers' allocators otherwise stop the program instead. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "allocator_may_return_null=1"; }

/* What went wrong first, from any thread; the test asserts on it. */
struct verdict {
    _Atomic bool failed;
    char         why[512];
};

static void verdict_fail(struct verdict *v, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void verdict_fail(struct verdict *v, int line, const char *fmt, ...)
{
    if (atomic_exchange(&v->failed, true))
        return;
    int n = snprintf(v->why, sizeof v->why, "line %d: ", line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->why + n, sizeof v->why - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Checks that `got` is `want`: both are long, printed when they differ. */
#define EXPECT_EQ(v, got, want, what)                                                   \
    do {                                                                                \
        long got_ = (long)(got), want_ = (long)(want);                                  \
        if (got_ != want_)                                                              \
            verdict_fail((v), __LINE__, "%s: got %ld, want %ld", (what), got_, want_);  \
    } while (0)

#define VERDICT(v) cr_assert(!(v).failed, "%s", (v).why)

/* Values the compiler cannot see through, so that it does not warn about
 * the sizes these tests pass on purpose. */
static volatile size_t size_max = SIZE_MAX;
static volatile size_t over_int_max = (size_t)INT_MAX + 1;

static const unsigned workers_124[] = { 1, 2, 4 };

/* ---- runtime configurations ------------------------------------------------------ */

Test(hostile, runtime_configurations_past_the_limits_are_refused)
{
    const weft_config bad[] = {
        { .workers = WEFT_WORKERS_MAX + 1 },
        { .workers = UINT_MAX },
        { .workers = 1, .stack_size = 1 },
        { .workers = 1, .stack_size = WEFT_STACK_MIN - 1 },
        { .workers = 1, .stack_size = ((size_t)1 << 30) + 1 },
        { .workers = 1, .stack_size = SIZE_MAX },
        { .workers = 1, .io_backend = -1 },
        { .workers = 1, .io_backend = WEFT_IO_EPOLL + 1 },
        { .workers = 1, .io_backend = INT_MIN },
        { .workers = 1, .io_backend = INT_MAX },
        { .workers = 1, .ring_entries = 32769 },
        { .workers = 1, .ring_entries = UINT_MAX },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        weft_rt *rt = (weft_rt *)&bad[i];   /* must be left as it was */
        cr_assert_eq(weft_rt_create(&rt, &bad[i]), -EINVAL, "configuration %zu", i);
        cr_assert_eq(rt, (weft_rt *)&bad[i], "configuration %zu wrote the runtime pointer", i);
    }
}

/* Uses `bytes` of the coroutine's stack, a page at a time. */
static void *use_stack(void *arg)
{
    size_t bytes = (size_t)(uintptr_t)arg;
    volatile char *deep = __builtin_alloca(bytes);
    for (size_t i = 0; i < bytes; i += 4096)
        deep[i] = (char)i;
    deep[bytes - 1] = 1;
    return (void *)(uintptr_t)(deep[0] + deep[bytes - 1]);
}

static void run_config(weft_config cfg, size_t stack_use, const char *what)
{
    weft_rt *rt;
    int err = weft_rt_create(&rt, &cfg);
    cr_assert_eq(err, 0, "%s: weft_rt_create gave %d", what, err);
    weft_task *t;
    void *r = NULL;
    cr_assert_eq(weft_spawn_on(rt, &t, use_stack, (void *)(uintptr_t)stack_use), 0, "%s", what);
    cr_assert_eq(weft_join(t, &r), 0, "%s", what);
    cr_assert_eq((uintptr_t)r, 1, "%s", what);
    cr_assert_eq(weft_rt_destroy(rt), 0, "%s", what);
}

Test(hostile, runtime_configurations_at_the_limits_work)
{
    FOR_EACH_BACKEND(b) {
        /* The smallest stack, half of it used (a sanitizer's frames are larger). */
        run_config((weft_config){ .workers = 1, .io_backend = b, .stack_size = WEFT_STACK_MIN },
                   WEFT_STACK_MIN / 2, "the smallest stack");
        /* The largest: 1 GiB of address space per stack, a few MiB used. */
        run_config((weft_config){ .workers = 2, .io_backend = b, .stack_size = (size_t)1 << 30 },
                   (size_t)4 << 20, "the largest stack");
        run_config((weft_config){ .workers = 1, .io_backend = b, .ring_entries = 32768 },
                   4096, "the deepest ring");
    }
}

/* A runtime of WEFT_WORKERS_MAX workers starts, or says which resource ran
 * out; started, its coroutines run on all of them. */
struct many {
    _Atomic unsigned seen_max;   /* the highest worker index seen */
    _Atomic int      bad;        /* weft_workers() gave another count */
};

static void *note_worker(void *arg)
{
    struct many *m = arg;
    int w = weft_worker();
    if (weft_workers() != (int)WEFT_WORKERS_MAX || w < 0 || w >= (int)WEFT_WORKERS_MAX)
        atomic_store(&m->bad, 1);
    unsigned seen = atomic_load(&m->seen_max);
    while ((unsigned)w > seen && !atomic_compare_exchange_weak(&m->seen_max, &seen, (unsigned)w))
        ;
    weft_sleep(1000000);   /* so that the spawns spread over the workers */
    return NULL;
}

Test(hostile, a_runtime_of_the_most_workers_runs_or_says_what_ran_out, .timeout = 300)
{
    if (RUNNING_ON_VALGRIND)
        cr_skip("Valgrind runs at most 500 threads, one at a time");
    if (WEFT_TEST_TSAN)
        cr_skip("a thousand threads and their coroutines take ThreadSanitizer minutes");
    struct rlimit fds;
    if (getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur < fds.rlim_max) {
        fds.rlim_cur = fds.rlim_max;   /* two descriptors a worker, or more */
        setrlimit(RLIMIT_NOFILE, &fds);
    }
    FOR_EACH_BACKEND(b) {
        weft_rt *rt;
        weft_config cfg = { .workers = WEFT_WORKERS_MAX, .io_backend = b, .stack_size = WEFT_STACK_MIN };
        int err = weft_rt_create(&rt, &cfg);
        if (err) {
            cr_assert(err == -EAGAIN || err == -EMFILE || err == -ENFILE || err == -ENOMEM,
                      "%s: %u workers: %d", backend_name[b], WEFT_WORKERS_MAX, err);
            continue;
        }
        struct many m = { 0 };
        enum { N = 4 * WEFT_WORKERS_MAX };
        static weft_task *t[N];
        for (int i = 0; i < N; i++)
            cr_assert_eq(weft_spawn_on(rt, &t[i], note_worker, &m), 0);
        for (int i = 0; i < N; i++)
            cr_assert_eq(weft_join(t[i], NULL), 0);
        cr_assert_eq(atomic_load(&m.bad), 0, "a coroutine saw the wrong worker count or index");
        cr_assert_gt(atomic_load(&m.seen_max), 0u, "every coroutine ran on worker 0");
        cr_assert_eq(weft_rt_destroy(rt), 0);
    }
}

/* ---- channels and select ------------------------------------------------------------ */

Test(hostile, channels_of_impossible_sizes_are_refused)
{
    weft_chan *ch = (weft_chan *)&ch;
    weft_chan *const untouched = ch;
    cr_assert_eq(weft_chan_create(NULL, 8, 1), -EINVAL);
    cr_assert_eq(weft_chan_create(&ch, 0, 1), -EINVAL);
    cr_assert_eq(weft_chan_create(&ch, ((size_t)1 << 30) + 1, 0), -EINVAL);
    cr_assert_eq(weft_chan_create(&ch, size_max, 0), -EINVAL);
    cr_assert_eq(weft_chan_create(&ch, 8, size_max / 8 + 1), -EINVAL, "elem_size * capacity overflows");
    cr_assert_eq(weft_chan_create(&ch, 2, size_max), -EINVAL, "elem_size * capacity overflows");
    cr_assert_eq(weft_chan_create(&ch, 1, (size_t)1 << 62), -ENOMEM, "2^62 bytes cannot be had");
    cr_assert_eq(ch, untouched, "a refused create wrote the channel pointer");

    /* At the limits: the largest element, unbuffered; then one carried. */
    cr_assert_eq(weft_chan_create(&ch, (size_t)1 << 30, 0), 0);
    cr_assert_eq(weft_chan_destroy(ch), 0);
    uint64_t v = 5, w = 0;
    cr_assert_eq(weft_chan_create(&ch, sizeof v, 1), 0);
    cr_assert_eq(weft_chan_try_send(ch, NULL), -EINVAL);
    cr_assert_eq(weft_chan_send(ch, NULL), -EINVAL);
    cr_assert_eq(weft_chan_try_send(ch, &v), 0);
    cr_assert_eq(weft_chan_try_recv(ch, NULL), -EINVAL);
    cr_assert_eq(weft_chan_recv(ch, NULL), -EINVAL);
    cr_assert_eq(weft_chan_try_recv(ch, &w), 0, "a refused receive took the element");
    cr_assert_eq(w, 5);
    cr_assert_eq(weft_chan_destroy(ch), 0);

    cr_assert_eq(weft_chan_send(NULL, &v), -EINVAL);
    cr_assert_eq(weft_chan_recv(NULL, &v), -EINVAL);
    cr_assert_eq(weft_chan_try_send(NULL, &v), -EINVAL);
    cr_assert_eq(weft_chan_try_recv(NULL, &v), -EINVAL);
    cr_assert_eq(weft_chan_close(NULL), -EINVAL);
    cr_assert_eq(weft_chan_destroy(NULL), -EINVAL);
}

Test(hostile, selects_of_impossible_shapes_are_refused_and_take_nothing)
{
    weft_chan *ch;
    uint64_t v = 9, into = 0;
    cr_assert_eq(weft_chan_create(&ch, sizeof v, 1), 0);
    cr_assert_eq(weft_chan_try_send(ch, &v), 0);
    weft_sel ok = { ch, WEFT_RECV, &into };
    weft_sel cases[3] = { ok, ok, ok };
    cr_assert_eq(weft_select(NULL, 1), -EINVAL);
    cr_assert_eq(weft_select(cases, 0), -EINVAL);
    cr_assert_eq(weft_select(cases, size_max), -EINVAL);
    cases[1].op = 0;
    cr_assert_eq(weft_select(cases, 3), -EINVAL, "op 0");
    cases[1].op = WEFT_RECV + 1;
    cr_assert_eq(weft_select(cases, 3), -EINVAL, "op 3");
    cases[1].op = -1;
    cr_assert_eq(weft_select(cases, 3), -EINVAL, "op -1");
    cases[1] = ok;
    cases[2].elem = NULL;
    cr_assert_eq(weft_select(cases, 3), -EINVAL, "a NULL element");
    weft_sel none[2] = { { NULL, WEFT_RECV, &into }, { NULL, 12345, NULL } };
    cr_assert_eq(weft_select(none, 2), -EINVAL, "no channel at all");
    cr_assert_eq(weft_chan_try_recv(ch, &into), 0, "a refused select took the element");
    cr_assert_eq(into, 9);
    cr_assert_eq(weft_chan_destroy(ch), 0);
}

/* ---- synchronization ------------------------------------------------------------------ */

Test(hostile, locks_and_counters_refuse_null_and_overflow)
{
    cr_assert_eq(weft_mutex_lock(NULL), -EINVAL);
    cr_assert_eq(weft_mutex_trylock(NULL), -EINVAL);
    cr_assert_eq(weft_mutex_unlock(NULL), -EINVAL);
    weft_mutex m = WEFT_MUTEX_INIT;
    cr_assert_eq(weft_cond_wait(NULL, &m), -EINVAL);
    weft_cond c = WEFT_COND_INIT;
    cr_assert_eq(weft_cond_wait(&c, NULL), -EINVAL);
    cr_assert_eq(weft_cond_wait(&c, &m), -EPERM, "waiting with a mutex not held");
    cr_assert_eq(weft_cond_signal(NULL), -EINVAL);
    cr_assert_eq(weft_cond_broadcast(NULL), -EINVAL);

    weft_wg wg = WEFT_WG_INIT;
    cr_assert_eq(weft_wg_add(NULL, 1), -EINVAL);
    cr_assert_eq(weft_wg_wait(NULL), -EINVAL);
    cr_assert_eq(weft_wg_done(&wg), -EINVAL, "below zero");
    cr_assert_eq(weft_wg_add(&wg, INT_MIN), -EINVAL, "below zero");
    cr_assert_eq(weft_wg_add(&wg, INT_MAX), 0);
    cr_assert_eq(weft_wg_add(&wg, 1), -EINVAL, "past INT32_MAX");
    cr_assert_eq(weft_wg_add(&wg, INT_MAX), -EINVAL, "past INT32_MAX");
    cr_assert_eq(weft_wg_add(&wg, -INT_MAX), 0, "the refused adds changed the count");
    cr_assert_eq(weft_wg_wait(&wg), 0);

    weft_sem s;
    cr_assert_eq(weft_sem_init(NULL, 1), -EINVAL);
    cr_assert_eq(weft_sem_acquire(NULL), -EINVAL);
    cr_assert_eq(weft_sem_release(NULL), -EINVAL);
    cr_assert_eq(weft_sem_init(&s, UINT32_MAX), 0);
    cr_assert_eq(weft_sem_release(&s), -EOVERFLOW);
    cr_assert_eq(weft_sem_acquire(&s), 0, "the refused release changed the count");
    cr_assert_eq(weft_sem_release(&s), 0);

    cr_assert_eq(weft_cancel(NULL), -EINVAL);
    cr_assert_eq(weft_offload(NULL, NULL, NULL), -EINVAL);
}

/* ---- deadlines in the past and at UINT64_MAX --------------------------------------- */

static void *wait_forever(void *arg)
{
    weft_wg *wg = arg;
    return (void *)(intptr_t)weft_wg_wait(wg);
}

static void *count_call(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return NULL;
}

struct late {
    int         fd;           /* written a byte, after a while */
    weft_chan  *ch;           /* sent an element */
    weft_mutex *m;            /* unlocked */
    weft_sem   *s;            /* released */
    weft_wg    *wg;           /* done */
};

static void *provide_late(void *arg)
{
    struct late *l = arg;
    weft_sleep(2000000);
    uint64_t v = 77;
    if (l->fd >= 0)
        weft_write(l->fd, "d", 1);
    if (l->ch)
        weft_chan_send(l->ch, &v);
    if (l->m)
        weft_mutex_unlock(l->m);
    if (l->s)
        weft_sem_release(l->s);
    if (l->wg)
        weft_wg_done(l->wg);
    return NULL;
}

/* Locks m with the given deadline, and unlocks it if it got it. */
struct locker {
    weft_mutex *m;
    uint64_t    deadline;
    int         got;
};

static void *lock_by_deadline(void *arg)
{
    struct locker *k = arg;
    weft_deadline(k->deadline);
    k->got = weft_mutex_lock(k->m);
    weft_deadline(0);
    if (k->got == 0)
        weft_mutex_unlock(k->m);
    return NULL;
}

/* Every blocking call with a deadline already past returns -ETIMEDOUT and
 * changes nothing: the objects work as before once the deadline is gone. */
static void *past_deadlines(void *arg)
{
    struct verdict *v = arg;
    int p[2], sv[2], lfd;
    if (pipe2(p, O_CLOEXEC) || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) ||
        (lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        verdict_fail(v, __LINE__, "descriptors: %s", strerror(errno));
        return NULL;
    }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t salen = sizeof sa;
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 4) ||
        getsockname(lfd, (struct sockaddr *)&sa, &salen))
        verdict_fail(v, __LINE__, "listening socket: %s", strerror(errno));
    weft_chan *ch, *unbuf;
    weft_chan_create(&ch, sizeof(uint64_t), 1);
    weft_chan_create(&unbuf, sizeof(uint64_t), 0);
    weft_mutex m = WEFT_MUTEX_INIT;
    weft_sem s = WEFT_SEM_INIT(0);
    weft_wg wg = WEFT_WG_INIT;
    weft_wg_add(&wg, 1);
    weft_task *blocked;
    weft_spawn(&blocked, wait_forever, &wg);
    weft_mutex_lock(&m);   /* held by us: children try it */
    _Atomic int ran = 0;
    char c;
    uint64_t x = 1;
    weft_sel sel[2] = { { ch, WEFT_RECV, &x }, { unbuf, WEFT_SEND, &x } };

    for (int round = 0; round < 2; round++) {
        /* 1: long past; then the current time itself, already gone on the next look */
        uint64_t past = round == 0 ? 1 : weft_now();
        uint64_t before = weft_deadline(past);
        EXPECT_EQ(v, weft_sleep(1000000000), -ETIMEDOUT, "sleep");
        EXPECT_EQ(v, weft_read(p[0], &c, 1), -ETIMEDOUT, "read of an empty pipe");
        EXPECT_EQ(v, weft_recv(sv[0], &c, 1, 0), -ETIMEDOUT, "recv of an empty socket");
        EXPECT_EQ(v, weft_poll(p[0], POLLIN), -ETIMEDOUT, "poll of an empty pipe");
        EXPECT_EQ(v, weft_accept(lfd, NULL, NULL, SOCK_CLOEXEC), -ETIMEDOUT, "accept with no client");
        EXPECT_EQ(v, weft_chan_recv(ch, &x), -ETIMEDOUT, "receive from an empty channel");
        EXPECT_EQ(v, weft_chan_send(unbuf, &x), -ETIMEDOUT, "send with no receiver");
        EXPECT_EQ(v, weft_select(sel, 2), -ETIMEDOUT, "select with nothing ready");
        EXPECT_EQ(v, weft_sem_acquire(&s), -ETIMEDOUT, "acquire of an empty semaphore");
        EXPECT_EQ(v, weft_wg_wait(&wg), -ETIMEDOUT, "wait group not done");
        EXPECT_EQ(v, weft_join(blocked, NULL), -ETIMEDOUT, "join of a task that waits");
        EXPECT_EQ(v, weft_offload(count_call, &ran, NULL), -ETIMEDOUT, "offload");
        EXPECT_EQ(v, weft_deadline(before), past, "weft_deadline returns the one it replaces");
        struct locker k = { &m, past, 1 };
        weft_task *lk;
        weft_spawn(&lk, lock_by_deadline, &k);
        weft_join(lk, NULL);
        EXPECT_EQ(v, k.got, -ETIMEDOUT, "lock of a held mutex");
    }
    /* Again and again: a helper must never get to start the function. */
    uint64_t before = weft_deadline(1);
    for (int i = 0; i < 100; i++)
        EXPECT_EQ(v, weft_offload(count_call, &ran, NULL), -ETIMEDOUT, "offload");
    weft_deadline(before);
    EXPECT_EQ(v, atomic_load(&ran), 0, "an offload past its deadline ran its function");

    /* Nothing was lost or left half-done: each works now. */
    struct late l = { .fd = p[1], .ch = ch, .m = NULL, .s = &s, .wg = &wg };
    weft_task *t;
    weft_spawn(&t, provide_late, &l);
    EXPECT_EQ(v, weft_read(p[0], &c, 1), 1, "read after the deadlines");
    EXPECT_EQ(v, weft_chan_recv(ch, &x), 0, "receive after the deadlines");
    EXPECT_EQ(v, x, 77, "the element received");
    EXPECT_EQ(v, weft_sem_acquire(&s), 0, "acquire after the deadlines");
    EXPECT_EQ(v, weft_wg_wait(&wg), 0, "wait group after the deadlines");
    void *res = (void *)1;
    EXPECT_EQ(v, weft_join(blocked, &res), 0, "join after the deadlines");
    EXPECT_EQ(v, (intptr_t)res, 0, "the joined task's wait");
    EXPECT_EQ(v, weft_join(t, NULL), 0, "join");
    EXPECT_EQ(v, weft_mutex_unlock(&m), 0, "the mutex is still ours");
    weft_chan_destroy(ch);
    weft_chan_destroy(unbuf);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
    close(lfd);
    return NULL;
}

Test(hostile, a_deadline_in_the_past_times_every_blocking_call_out_and_loses_nothing)
{
    FOR_EACH_CONFIG(b, w, workers_124) {
        struct verdict v = { 0 };
        run_with_io(w, b, past_deadlines, &v);
        cr_assert(!v.failed, "%s, %u workers: %s", backend_name[b], w, v.why);
    }
}

/* A deadline of UINT64_MAX is as good as none: each call waits for what it
 * waits for; and a sleep of UINT64_MAX ends at the deadline, not never. */
static void *far_deadlines(void *arg)
{
    struct verdict *v = arg;
    int p[2];
    if (pipe2(p, O_CLOEXEC)) {
        verdict_fail(v, __LINE__, "pipe: %s", strerror(errno));
        return NULL;
    }
    weft_chan *ch;
    weft_chan_create(&ch, sizeof(uint64_t), 0);
    weft_mutex m = WEFT_MUTEX_INIT;
    weft_sem s = WEFT_SEM_INIT(0);
    weft_wg wg = WEFT_WG_INIT;
    weft_wg_add(&wg, 1);
    char c = 0;
    uint64_t x = 0;
    weft_deadline(UINT64_MAX);
    EXPECT_EQ(v, weft_sleep(0), 0, "a sleep of 0");
    EXPECT_EQ(v, weft_sleep(1000), 0, "a short sleep");
    struct late l = { .fd = p[1], .ch = ch, .s = &s, .wg = &wg };
    struct locker k = { &m, UINT64_MAX, 1 };
    weft_task *t, *lk;
    EXPECT_EQ(v, weft_mutex_lock(&m), 0, "lock");
    weft_spawn(&lk, lock_by_deadline, &k);
    weft_spawn(&t, provide_late, &l);
    weft_sleep(1000000);
    EXPECT_EQ(v, weft_mutex_unlock(&m), 0, "unlock");
    EXPECT_EQ(v, weft_join(lk, NULL), 0, "join of the locker");
    EXPECT_EQ(v, k.got, 0, "lock, waiting for the holder");
    EXPECT_EQ(v, weft_read(p[0], &c, 1), 1, "read");
    EXPECT_EQ(v, weft_chan_recv(ch, &x), 0, "receive");
    EXPECT_EQ(v, weft_sem_acquire(&s), 0, "acquire");
    EXPECT_EQ(v, weft_wg_wait(&wg), 0, "wait group");
    EXPECT_EQ(v, weft_join(t, NULL), 0, "join");
    _Atomic int ran = 0;
    EXPECT_EQ(v, weft_offload(count_call, &ran, NULL), 0, "offload");
    EXPECT_EQ(v, atomic_load(&ran), 1, "the offloaded call ran");
    EXPECT_EQ(v, weft_deadline(weft_now() + 5000000), UINT64_MAX, "weft_deadline returns UINT64_MAX");
    EXPECT_EQ(v, weft_sleep(UINT64_MAX), -ETIMEDOUT, "a sleep of UINT64_MAX ends at the deadline");
    weft_deadline(0);
    weft_chan_destroy(ch);
    close(p[0]);
    close(p[1]);
    return NULL;
}

Test(hostile, a_deadline_at_uint64_max_is_no_deadline)
{
    FOR_EACH_CONFIG(b, w, workers_124) {
        struct verdict v = { 0 };
        run_with_io(w, b, far_deadlines, &v);
        cr_assert(!v.failed, "%s, %u workers: %s", backend_name[b], w, v.why);
    }
}

/* A cancelled coroutine's IO fails at once with -ECANCELED on both backends,
 * also a call that could complete without waiting, and moves nothing. */
static void *cancelled_io(void *arg)
{
    struct verdict *v = arg;
    int p[2], sv[2];
    if (pipe2(p, O_CLOEXEC) || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        verdict_fail(v, __LINE__, "descriptors: %s", strerror(errno));
        return NULL;
    }
    int f = memfd_create("weft-hostile", MFD_CLOEXEC);
    if (write(p[1], "r", 1) != 1 || send(sv[1], "s", 1, 0) != 1 || pwrite(f, "f", 1, 0) != 1)
        verdict_fail(v, __LINE__, "the bytes to be left alone: %s", strerror(errno));
    char c = 0, two[2];
    EXPECT_EQ(v, weft_cancel(weft_self()), 0, "weft_cancel of itself");
    EXPECT_EQ(v, weft_read(p[0], &c, 1), -ECANCELED, "read with a byte ready");
    EXPECT_EQ(v, weft_write(p[1], "w", 1), -ECANCELED, "write with room");
    EXPECT_EQ(v, weft_recv(sv[0], &c, 1, 0), -ECANCELED, "recv with a byte ready");
    EXPECT_EQ(v, weft_send(sv[0], "w", 1, 0), -ECANCELED, "send with room");
    EXPECT_EQ(v, weft_poll(p[0], POLLIN), -ECANCELED, "poll of a ready pipe");
    EXPECT_EQ(v, weft_pread(f, &c, 1, 0), -ECANCELED, "pread");
    EXPECT_EQ(v, weft_pwrite(f, "w", 1, 0), -ECANCELED, "pwrite");
    EXPECT_EQ(v, weft_fsync(f), -ECANCELED, "fsync");
    EXPECT_EQ(v, weft_sleep(0), -ECANCELED, "sleep");
    /* Nothing moved: each byte is where it was, and nothing was added. */
    EXPECT_EQ(v, read(p[0], &c, 1), 1, "the pipe's byte");
    EXPECT_EQ(v, c, 'r', "the pipe's byte");
    EXPECT_EQ(v, recv(sv[0], &c, 1, MSG_DONTWAIT), 1, "the socket's byte");
    EXPECT_EQ(v, c, 's', "the socket's byte");
    EXPECT_EQ(v, recv(sv[1], &c, 1, MSG_DONTWAIT), -1, "a cancelled send sent nothing");
    EXPECT_EQ(v, pread(f, two, 2, 0), 1, "a cancelled pwrite wrote nothing");
    close(f);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
    return NULL;
}

Test(hostile, a_cancelled_coroutines_io_fails_at_once_on_both_backends)
{
    FOR_EACH_CONFIG(b, w, workers_124) {
        struct verdict v = { 0 };
        run_with_io(w, b, cancelled_io, &v);
        cr_assert(!v.failed, "%s, %u workers: %s", backend_name[b], w, v.why);
    }
}

/* ---- descriptors, lengths, buffers and flags -------------------------------------------- */

static const int bad_fds[] = { -1, -2, INT_MIN, INT_MAX, 5000000, 0x7ffffff0 };

/* Every descriptor call on a descriptor that is not open, or cannot be. */
static void *bad_descriptors(void *arg)
{
    struct verdict *v = arg;
    char buf[16] = { 0 };
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    for (size_t i = 0; i < sizeof bad_fds / sizeof bad_fds[0]; i++) {
        int fd = bad_fds[i];
        char what[64];
#define BAD(call)                                              \
    do {                                                       \
        snprintf(what, sizeof what, "%s on %d", #call, fd);    \
        EXPECT_EQ(v, call, -EBADF, what);                      \
    } while (0)
        BAD(weft_read(fd, buf, sizeof buf));
        BAD(weft_write(fd, buf, sizeof buf));
        BAD(weft_recv(fd, buf, sizeof buf, 0));
        BAD(weft_send(fd, buf, sizeof buf, 0));
        BAD(weft_poll(fd, POLLIN));
        BAD(weft_poll(fd, POLLOUT));
        BAD(weft_accept(fd, NULL, NULL, 0));
        BAD(weft_connect(fd, (struct sockaddr *)&sa, sizeof sa));
        BAD(weft_pread(fd, buf, sizeof buf, 0));
        BAD(weft_pwrite(fd, buf, sizeof buf, 0));
        BAD(weft_fsync(fd));
        BAD(weft_close(fd));
#undef BAD
    }
    return NULL;
}

Test(hostile, negative_and_huge_descriptors_are_bad_descriptors)
{
    struct verdict v = { 0 };
    bad_descriptors(&v);   /* from a plain thread */
    cr_assert(!v.failed, "from a plain thread: %s", v.why);
    FOR_EACH_CONFIG(b, w, workers_124) {
        run_with_io(w, b, bad_descriptors, &v);
        cr_assert(!v.failed, "%s, %u workers: %s", backend_name[b], w, v.why);
    }
}

/* Lengths beyond what one call can report, NULL buffers, bad offsets and
 * flags: the same answer from a plain thread and on each backend, and the
 * data still there afterwards. */
static void *bad_lengths(void *arg)
{
    struct verdict *v = arg;
    int p[2], sv[2];
    if (pipe2(p, O_CLOEXEC) || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        verdict_fail(v, __LINE__, "descriptors: %s", strerror(errno));
        return NULL;
    }
    char buf[16] = { 0 };
    /* Valgrind checks a call's whole buffer against its length, which the
     * next calls overstate on purpose, or point at NULL: it reports each;
     * and qemu-user answers -EFAULT for a buffer not all mapped. */
    bool lie = !RUNNING_ON_VALGRIND && !emulated();
    /* Over INT_MAX: a short transfer of what there is, as POSIX allows. The
     * kernel refuses a range that runs past the top of user memory, where a
     * thread's stack may lie: the buffer is static, far below it. */
    static char low[16];
    if (lie) {
        EXPECT_EQ(v, weft_write(p[1], "abc", 3), 3, "write");
        EXPECT_EQ(v, weft_read(p[0], low, over_int_max), 3, "read of INT_MAX + 1 bytes");
        EXPECT_EQ(v, weft_send(sv[0], "abc", 3, 0), 3, "send");
        EXPECT_EQ(v, weft_recv(sv[1], low, over_int_max, 0), 3, "recv of INT_MAX + 1 bytes");
    }
    /* Past SSIZE_MAX: no count could say how much moved. */
    EXPECT_EQ(v, weft_write(p[1], "abc", 3), 3, "write");
    EXPECT_EQ(v, weft_read(p[0], buf, size_max), -EINVAL, "read of SIZE_MAX bytes");
    EXPECT_EQ(v, weft_write(p[1], buf, size_max), -EINVAL, "write of SIZE_MAX bytes");
    EXPECT_EQ(v, weft_recv(sv[1], buf, size_max, 0), -EINVAL, "recv of SIZE_MAX bytes");
    EXPECT_EQ(v, weft_send(sv[0], buf, size_max, 0), -EINVAL, "send of SIZE_MAX bytes");
    /* NULL buffers: the kernel's -EFAULT, the byte not taken. */
    if (lie) {
        EXPECT_EQ(v, weft_read(p[0], NULL, 1), -EFAULT, "read into NULL");
        EXPECT_EQ(v, weft_write(p[1], NULL, 1), -EFAULT, "write from NULL");
    }
    memset(buf, 0, sizeof buf);
    EXPECT_EQ(v, weft_read(p[0], buf, sizeof buf), 3, "read after the refused calls");
    EXPECT_EQ(v, memcmp(buf, "abc", 3), 0, "the bytes after the refused calls");

    /* Files: a negative offset, a huge length, a descriptor that cannot seek. */
    int f = memfd_create("weft-hostile", MFD_CLOEXEC);
    EXPECT_EQ(v, weft_pwrite(f, "xyz", 3, 0), 3, "pwrite");
    EXPECT_EQ(v, weft_pread(f, buf, 3, -1), -EINVAL, "pread at offset -1");
    EXPECT_EQ(v, weft_pread(f, buf, 3, INT64_MIN), -EINVAL, "pread at INT64_MIN");
    EXPECT_EQ(v, weft_pwrite(f, "q", 1, -1), -EINVAL, "pwrite at offset -1");
    EXPECT_EQ(v, weft_pread(f, buf, size_max, 0), -EINVAL, "pread of SIZE_MAX bytes");
    EXPECT_EQ(v, weft_pread(f, buf, 3, 0), 3, "pread after the refused calls");
    weft_write(p[1], "p", 1);   /* a backend that read pipes would take it, not wait */
    EXPECT_EQ(v, weft_pread(p[0], buf, 1, 0), -ESPIPE, "pread of a pipe");
    close(f);

    /* Flags and addresses. */
    EXPECT_EQ(v, weft_accept(sv[0], NULL, NULL, -1), -EINVAL, "accept with every flag bit");
    EXPECT_EQ(v, weft_accept(sv[0], NULL, NULL, O_APPEND), -EINVAL, "accept with a bad flag");
    EXPECT_EQ(v, weft_poll(p[0], 0), -EINVAL, "poll for nothing");
    EXPECT_EQ(v, weft_open(NULL, O_RDONLY, 0), -EFAULT, "open of NULL");
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lie)
        EXPECT_EQ(v, weft_connect(s, NULL, sizeof(struct sockaddr_in)), -EFAULT, "connect to NULL");
    struct sockaddr_in sa = { .sin_family = AF_INET };
    EXPECT_EQ(v, weft_connect(s, (struct sockaddr *)&sa, 0), -EINVAL, "connect with a zero length");
    close(s);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
    return NULL;
}

Test(hostile, impossible_lengths_buffers_offsets_and_flags_are_refused_alike)
{
    struct verdict v = { 0 };
    bad_lengths(&v);
    cr_assert(!v.failed, "from a plain thread: %s", v.why);
    FOR_EACH_CONFIG(b, w, workers_124) {
        run_with_io(w, b, bad_lengths, &v);
        cr_assert(!v.failed, "%s, %u workers: %s", backend_name[b], w, v.why);
    }
}

/* ---- a signal storm ------------------------------------------------------------------- */

/*
 * A plain thread signals the process thousands of times a second with a
 * signal whose handler does nothing, installed with SA_RESTART or without.
 * The thread that creates the runtime and the storm block the signal once
 * the workers have started, so the kernel delivers it to the workers and
 * to the offload helpers, interrupting whatever system call they sleep in.
 * Meanwhile coroutines move data through a pipe and a socket pair, sleep,
 * pass numbered messages through channels, take a mutex in turns, wait out
 * deadlines and offload calls: every byte and message must arrive in order,
 * every call must give its normal answer, and none may give -EINTR.
 */
#define STORM_MIN_NS     200000000ull    /* the work goes on at least this long */
#define STORM_MIN_CAUGHT 50              /* ... and until this many signals were taken */
#define STORM_MAX_NS     20000000000ull  /* but no longer than this */
#define STORM_SIGNAL SIGWINCH   /* ignored by default: harmless if one arrives late */

static _Atomic long storm_caught;

static void storm_handler(int sig)
{
    (void)sig;
    atomic_fetch_add_explicit(&storm_caught, 1, memory_order_relaxed);
}

struct storm {
    _Atomic int  stop;
    _Atomic long sent;
};

static void *storm_thread(void *arg)
{
    struct storm *s = arg;
    struct timespec gap = { 0, 100000 };   /* up to 10,000 a second */
    while (!atomic_load(&s->stop)) {
        kill(getpid(), STORM_SIGNAL);
        atomic_fetch_add(&s->sent, 1);
        nanosleep(&gap, NULL);
    }
    return NULL;
}

struct storm_work {
    struct verdict *v;
    size_t          bytes;      /* through the pipe, and through the socket pair */
    int             messages;   /* through each channel */
    int             sleeps;
};

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 131 + (i >> 9) * 7 + 3);
}

/*
 * One side of a transfer. A side that fails cancels the other, which would
 * otherwise wait for ever for data that will not come or room that will not
 * be made; the first failure is the one reported.
 */
struct side {
    struct storm_work      *w;
    _Atomic(weft_task *)    peer;   /* set once both sides are spawned */
};

static void side_failed(struct side *s)
{
    weft_task *peer;
    while (!(peer = atomic_load(&s->peer)))
        weft_yield();
    weft_cancel(peer);
}

struct stream {
    struct side side;
    int         fd;
    bool        socket;
};

/* Writes the pattern in pieces of changing sizes, each call checked. */
static void *stream_out(void *arg)
{
    struct stream *s = arg;
    struct storm_work *w = s->side.w;
    unsigned char chunk[8192];   /* the coroutine's own: a write may wait, and others run */
    size_t done = 0, piece = 1;
    while (done < w->bytes) {
        size_t n = piece < w->bytes - done ? piece : w->bytes - done;
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern(done + i);
        size_t off = 0;
        while (off < n) {
            ssize_t r = s->socket ? weft_send(s->fd, chunk + off, n - off, 0)
                                  : weft_write(s->fd, chunk + off, n - off);
            if (r <= 0) {
                verdict_fail(w->v, __LINE__, "%s gave %zd after %zu bytes", s->socket ? "send" : "write",
                             r, done + off);
                side_failed(&s->side);
                return NULL;
            }
            off += (size_t)r;
        }
        done += n;
        piece = piece * 3 % 8191 + 1;
    }
    return NULL;
}

/* Reads it back in pieces of other sizes and checks every byte. */
static void *stream_in(void *arg)
{
    struct stream *s = arg;
    struct storm_work *w = s->side.w;
    unsigned char buf[5000];
    size_t done = 0, piece = 7;
    while (done < w->bytes) {
        ssize_t r = s->socket ? weft_recv(s->fd, buf, piece, 0) : weft_read(s->fd, buf, piece);
        if (r <= 0) {
            verdict_fail(w->v, __LINE__, "%s gave %zd after %zu bytes", s->socket ? "recv" : "read", r, done);
            side_failed(&s->side);
            return NULL;
        }
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != pattern(done + (size_t)i)) {
                verdict_fail(w->v, __LINE__, "%s: byte %zu is wrong", s->socket ? "socket" : "pipe",
                             done + (size_t)i);
                side_failed(&s->side);
                return NULL;
            }
        done += (size_t)r;
        piece = piece * 5 % 4999 + 1;
    }
    return NULL;
}

static void *sleeper(void *arg)
{
    struct storm_work *w = arg;
    for (int i = 0; i < w->sleeps; i++) {
        int r = weft_sleep(50000);
        if (r != 0) {
            verdict_fail(w->v, __LINE__, "sleep %d gave %d", i, r);
            return NULL;
        }
    }
    return NULL;
}

struct line {
    struct side side;
    weft_chan  *ch;
};

static void *produce(void *arg)
{
    struct line *l = arg;
    struct storm_work *w = l->side.w;
    for (uint64_t i = 0; i < (uint64_t)w->messages; i++) {
        int r = weft_chan_send(l->ch, &i);
        if (r != 0) {
            verdict_fail(w->v, __LINE__, "send of message %lu gave %d", (unsigned long)i, r);
            break;
        }
    }
    weft_chan_close(l->ch);   /* the consumer sees the end either way */
    return NULL;
}

static void *consume(void *arg)
{
    struct line *l = arg;
    struct storm_work *w = l->side.w;
    uint64_t got, want = 0;
    int r;
    while ((r = weft_chan_recv(l->ch, &got)) == 0) {
        if (got != want) {
            verdict_fail(w->v, __LINE__, "message %lu arrived as %lu", (unsigned long)want, (unsigned long)got);
            side_failed(&l->side);
            return NULL;
        }
        want++;
    }
    if (r != -EPIPE || want != (uint64_t)w->messages) {
        verdict_fail(w->v, __LINE__, "receive gave %d after %lu of %d messages", r, (unsigned long)want,
                     w->messages);
        side_failed(&l->side);
    }
    return NULL;
}

struct counter {
    struct storm_work *w;
    weft_mutex         m;
    long               n;   /* under m */
};

#define LOCK_ROUNDS 500

static void *count_locked(void *arg)
{
    struct counter *c = arg;
    for (int i = 0; i < LOCK_ROUNDS; i++) {
        int r = weft_mutex_lock(&c->m);
        if (r != 0) {
            verdict_fail(c->w->v, __LINE__, "lock gave %d", r);
            return NULL;
        }
        long n = c->n;
        if (i % 16 == 0)
            weft_yield();   /* hold it across a switch now and then */
        c->n = n + 1;
        weft_mutex_unlock(&c->m);
    }
    return NULL;
}

/* Deadlines that pass while a signal may arrive: -ETIMEDOUT, never -EINTR. */
static void *time_out(void *arg)
{
    struct storm_work *w = arg;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        verdict_fail(w->v, __LINE__, "socketpair: %s", strerror(errno));
        return NULL;
    }
    char c;
    for (int i = 0; i < 20; i++) {
        weft_deadline(weft_now() + 1000000);
        ssize_t r = weft_recv(sv[0], &c, 1, 0);
        weft_deadline(0);
        if (r != -ETIMEDOUT) {
            verdict_fail(w->v, __LINE__, "a receive past its deadline gave %zd", r);
            break;
        }
    }
    close(sv[0]);
    close(sv[1]);
    return NULL;
}

/* An offloaded call that sleeps in the kernel, as blocking calls do. */
static void *nap_and_add(void *arg)
{
    struct timespec t = { 0, 20000 };
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
    return (void *)((uintptr_t)arg + 1);
}

static void *offloader(void *arg)
{
    struct storm_work *w = arg;
    for (uintptr_t i = 0; i < 200; i++) {
        void *res = NULL;
        int r = weft_offload(nap_and_add, (void *)i, &res);
        if (r != 0 || (uintptr_t)res != i + 1) {
            verdict_fail(w->v, __LINE__, "offload %lu gave %d, result %lu", (unsigned long)i, r,
                         (unsigned long)(uintptr_t)res);
            return NULL;
        }
    }
    return NULL;
}

static void *storm_all(void *arg)
{
    struct storm_work *w = arg;
    int p[2], sv[2];
    if (pipe2(p, O_CLOEXEC) || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        verdict_fail(w->v, __LINE__, "descriptors: %s", strerror(errno));
        return NULL;
    }
    weft_chan *buffered, *unbuffered;
    weft_chan_create(&buffered, sizeof(uint64_t), 16);
    weft_chan_create(&unbuffered, sizeof(uint64_t), 0);
    struct stream po = { { w, NULL }, p[1], false }, pi = { { w, NULL }, p[0], false };
    struct stream so = { { w, NULL }, sv[0], true }, si = { { w, NULL }, sv[1], true };
    struct line pb = { { w, NULL }, buffered }, cb = { { w, NULL }, buffered };
    struct line pu = { { w, NULL }, unbuffered }, cu = { { w, NULL }, unbuffered };
    struct counter c = { .w = w, .m = WEFT_MUTEX_INIT };
    struct side *pairs[][2] = { { &po.side, &pi.side }, { &so.side, &si.side }, { &pb.side, &cb.side },
                                { &pu.side, &cu.side } };
    weft_task *t[14];
    int n = 0;
    weft_spawn(&t[n++], stream_out, &po);
    weft_spawn(&t[n++], stream_in, &pi);
    weft_spawn(&t[n++], stream_out, &so);
    weft_spawn(&t[n++], stream_in, &si);
    weft_spawn(&t[n++], produce, &pb);
    weft_spawn(&t[n++], consume, &cb);
    weft_spawn(&t[n++], produce, &pu);
    weft_spawn(&t[n++], consume, &cu);
    for (int i = 0; i < 4; i++) {   /* each side may now cancel the other */
        atomic_store(&pairs[i][0]->peer, t[2 * i + 1]);
        atomic_store(&pairs[i][1]->peer, t[2 * i]);
    }
    weft_spawn(&t[n++], sleeper, w);
    for (int i = 0; i < 3; i++)
        weft_spawn(&t[n++], count_locked, &c);
    weft_spawn(&t[n++], time_out, w);
    weft_spawn(&t[n++], offloader, w);
    for (int i = 0; i < n; i++)
        weft_join(t[i], NULL);
    if (c.n != 3 * LOCK_ROUNDS)
        verdict_fail(w->v, __LINE__, "the counter under the mutex is %ld, not %d", c.n, 3 * LOCK_ROUNDS);
    weft_chan_destroy(buffered);
    weft_chan_destroy(unbuffered);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
    return NULL;
}

static void storm_run(int backend, unsigned workers, bool restart)
{
    struct sigaction sa = { .sa_handler = storm_handler, .sa_flags = restart ? SA_RESTART : 0 }, old;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(STORM_SIGNAL, &sa, &old), 0);
    weft_rt *rt;
    weft_config cfg = { .workers = workers, .io_backend = backend };
    cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
    /* From here on this thread, and the storm it starts, do not take the
     * signal: the workers and helpers, started before, do. */
    sigset_t set, prev;
    sigemptyset(&set);
    sigaddset(&set, STORM_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &set, &prev);
    struct storm s = { 0 };
    pthread_t storm;
    cr_assert_eq(pthread_create(&storm, NULL, storm_thread, &s), 0);

    /* Rounds of the work, each checked whole, until the storm has lasted a
     * while and been felt: a signal sent while one is pending merges with
     * it, so on a loaded machine far fewer arrive than are sent. */
    struct verdict v = { 0 };
    struct storm_work w = { &v, scaled(8u << 20) + 4096, (int)scaled(50000) + 100, (int)scaled(4000) + 20 };
    long caught_before = atomic_load(&storm_caught), caught = 0;
    uint64_t t0 = weft_now(), elapsed = 0;
    int rounds = 0;
    do {
        weft_task *t;
        cr_assert_eq(weft_spawn_on(rt, &t, storm_all, &w), 0);
        cr_assert_eq(weft_join(t, NULL), 0);
        rounds++;
        caught = atomic_load(&storm_caught) - caught_before;
        elapsed = weft_now() - t0;
    } while (!v.failed && (elapsed < STORM_MIN_NS || caught < STORM_MIN_CAUGHT) && elapsed < STORM_MAX_NS);
    atomic_store(&s.stop, 1);
    pthread_join(storm, NULL);
    cr_assert_eq(weft_rt_destroy(rt), 0);
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    sigaction(STORM_SIGNAL, &old, NULL);
    cr_log_info("%s, %u workers, %s: %ld signals caught in %.2f s, %d rounds", backend_name[backend],
                workers, restart ? "SA_RESTART" : "no SA_RESTART", caught, (double)elapsed / 1e9, rounds);
    cr_assert(!v.failed, "%s, %u workers, %s: %s", backend_name[backend], workers,
              restart ? "SA_RESTART" : "no SA_RESTART", v.why);
    cr_assert_geq(caught, STORM_MIN_CAUGHT, "%s, %u workers: %ld signals sent, %ld caught in %.2f s: no storm",
                  backend_name[backend], workers, atomic_load(&s.sent), caught, (double)elapsed / 1e9);
}

Test(hostile, a_signal_storm_loses_nothing_and_interrupts_no_call_with_sa_restart, .timeout = 300)
{
    FOR_EACH_CONFIG(b, w, workers_124)
        storm_run(b, w, true);
}

Test(hostile, a_signal_storm_loses_nothing_and_interrupts_no_call_without_sa_restart, .timeout = 300)
{
    FOR_EACH_CONFIG(b, w, workers_124)
        storm_run(b, w, false);
}
