/* SPDX-License-Identifier: MIT */
/*
 * Fault injection: every call weft makes that can fail for want of a
 * resource (memory, address space, a thread, a descriptor, a ring) is made to
 * fail, one call at a time, and each public call must then answer with its
 * documented negative errno, lose nothing, leak nothing, and leave the
 * runtime working.
 *
 * The mechanism costs the library nothing: this program is linked against
 * the static library with the linker's --wrap (tests/CMakeLists.txt), so
 * every reference that weft's objects make to malloc, mmap, pthread_create
 * and the rest resolves to the __wrap_ function here, which may fail the
 * call and otherwise calls the real one (__real_). Calls made inside libc
 * or other shared libraries are not affected; liburing is a shared library,
 * so its entry point that weft calls, io_uring_queue_init_params, stands for
 * io_uring_setup.
 *
 * While armed with a set of kinds and a number N (fault_begin), the wrappers
 * count the calls of those kinds made from any thread, and the Nth fails as
 * the kernel or libc would: allocation and mapping with ENOMEM, thread
 * creation with EAGAIN, descriptor creation (eventfd, epoll_create1,
 * F_DUPFD_CLOEXEC) with EMFILE, io_uring setup with -EMFILE, madvise,
 * mprotect and epoll_ctl with ENOMEM. A sweep (sweep()) runs a scenario for
 * N = 1, 2, ... until a run makes fewer than N calls, so each call site the
 * scenario reaches fails once; the scenario checks that the failure is
 * answered with the errno injected, and that the work it did before and
 * after is whole. The wrappers also count what weft holds (heap blocks and
 * mapped bytes, besides the descriptors and threads that /proc shows), and
 * each run must end holding what it held when it began: nothing leaked on
 * an error path. The Valgrind stage runs the same sweeps for definite
 * leaks and bad accesses.
 *
 * One call is left out of the sweeps: madvise(MADV_GUARD_INSTALL) when a
 * stack is first bound to a task. By design it cannot fail the spawn (the
 * task is already queued) and stops the program with a message instead; a
 * test of its own checks that message. The first such madvise, weft's probe
 * for the feature, is made to fail on purpose in the tests of the older
 * kernels' mprotect guards.
 *
 * The wrappers work the same under AddressSanitizer, ThreadSanitizer and
 * Valgrind: __real_malloc is the sanitizer's or Valgrind's malloc. They
 * cannot work in a statically linked program (the AArch64 build under
 * qemu-user): there libc's own objects are linked in too, so their calls
 * reach the wrappers (thread creation allocates, and glibc keeps a thread's
 * TLS array with its cached stack), and neither the counts nor the failures
 * would be weft's alone. The tests skip there, saying so.
 */
#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#ifndef WEFT_TEST_STATIC
#define WEFT_TEST_STATIC 0
#endif

/* Every test starts with this: see the top of the file. */
#define SKIP_IF_STATIC()                                                                \
    do {                                                                                \
        if (WEFT_TEST_STATIC)                                                           \
            cr_skip("linked statically: libc's own calls reach the wrappers too, and "  \
                    "neither the counts nor the failures would be weft's alone");       \
    } while (0)

/* ---- the wrappers ----------------------------------------------------------------- */

enum fault_kind {
    F_ALLOC     = 1u << 0,    /* malloc, calloc, realloc, aligned_alloc */
    F_MMAP      = 1u << 1,
    F_MADVISE   = 1u << 2,    /* every advice but MADV_GUARD_INSTALL */
    F_GUARD     = 1u << 3,    /* madvise(MADV_GUARD_INSTALL) */
    F_MPROTECT  = 1u << 4,
    F_THREAD    = 1u << 5,    /* pthread_create */
    F_EVENTFD   = 1u << 6,
    F_EPOLL     = 1u << 7,    /* epoll_create1 */
    F_EPOLL_CTL = 1u << 8,
    F_URING     = 1u << 9,    /* io_uring_queue_init_params */
    F_DUP       = 1u << 10,   /* fcntl(F_DUPFD_CLOEXEC) */
    F_SWEPT     = ~F_GUARD,   /* what the sweeps fail */
};

static _Atomic unsigned fault_kinds;   /* counted while armed; 0: disarmed */
static _Atomic long fault_at;          /* the counted call that fails, from 1 */
static _Atomic long fault_calls;       /* counted calls since fault_begin */
static _Atomic int fault_errno;        /* what the failed call gave, 0 if none failed */
static _Atomic unsigned fault_hit;     /* its kind */

static _Atomic long held_blocks;       /* heap blocks weft holds */
static _Atomic long held_bytes;        /* bytes weft holds mapped */

/* Whether this call is the one to fail; records err if so. Any thread. */
static bool fault(enum fault_kind kind, int err)
{
    if (!(atomic_load(&fault_kinds) & kind))
        return false;
    if (atomic_fetch_add(&fault_calls, 1) + 1 != atomic_load(&fault_at))
        return false;
    atomic_store(&fault_hit, kind);
    atomic_store(&fault_errno, err);
    return true;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
void __real_free(void *p);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __real_munmap(void *addr, size_t len);
int __real_madvise(void *addr, size_t len, int advice);
int __real_mprotect(void *addr, size_t len, int prot);
int __real_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
int __real_eventfd(unsigned int initval, int flags);
int __real_epoll_create1(int flags);
int __real_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int __real_fcntl(int fd, int cmd, ...);
int __real_weft__sys_fcntl(int fd, int cmd, long arg);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t align, size_t n);
void __wrap_free(void *p);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __wrap_munmap(void *addr, size_t len);
int __wrap_madvise(void *addr, size_t len, int advice);
int __wrap_mprotect(void *addr, size_t len, int prot);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
int __wrap_eventfd(unsigned int initval, int flags);
int __wrap_epoll_create1(int flags);
int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int __wrap_fcntl(int fd, int cmd, ...);
int __wrap_weft__sys_fcntl(int fd, int cmd, long arg);

static void *held(void *p)
{
    if (p)
        atomic_fetch_add(&held_blocks, 1);
    return p;
}

void *__wrap_malloc(size_t n)
{
    if (fault(F_ALLOC, ENOMEM)) {
        errno = ENOMEM;
        return NULL;
    }
    return held(__real_malloc(n));
}

void *__wrap_calloc(size_t k, size_t n)
{
    if (fault(F_ALLOC, ENOMEM)) {
        errno = ENOMEM;
        return NULL;
    }
    return held(__real_calloc(k, n));
}

void *__wrap_realloc(void *p, size_t n)
{
    if (fault(F_ALLOC, ENOMEM)) {
        errno = ENOMEM;
        return NULL;   /* p stays as it was */
    }
    void *q = __real_realloc(p, n);
    if (!p)
        held(q);
    return q;
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    if (fault(F_ALLOC, ENOMEM)) {
        errno = ENOMEM;
        return NULL;
    }
    return held(__real_aligned_alloc(align, n));
}

void __wrap_free(void *p)
{
    if (p)
        atomic_fetch_sub(&held_blocks, 1);
    __real_free(p);
}

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (fault(F_MMAP, ENOMEM)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    void *p = __real_mmap(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED)
        atomic_fetch_add(&held_bytes, (long)len);
    return p;
}

int __wrap_munmap(void *addr, size_t len)
{
    int r = __real_munmap(addr, len);
    if (r == 0)
        atomic_fetch_sub(&held_bytes, (long)len);
    return r;
}

int __wrap_madvise(void *addr, size_t len, int advice)
{
    if (fault(advice == MADV_GUARD_INSTALL ? F_GUARD : F_MADVISE, ENOMEM)) {
        errno = ENOMEM;
        return -1;
    }
    return __real_madvise(addr, len, advice);
}

int __wrap_mprotect(void *addr, size_t len, int prot)
{
    if (fault(F_MPROTECT, ENOMEM)) {
        errno = ENOMEM;
        return -1;
    }
    return __real_mprotect(addr, len, prot);
}

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    if (fault(F_THREAD, EAGAIN))
        return EAGAIN;
    return __real_pthread_create(t, attr, fn, arg);
}

int __wrap_eventfd(unsigned int initval, int flags)
{
    if (fault(F_EVENTFD, EMFILE)) {
        errno = EMFILE;
        return -1;
    }
    return __real_eventfd(initval, flags);
}

int __wrap_epoll_create1(int flags)
{
    if (fault(F_EPOLL, EMFILE)) {
        errno = EMFILE;
        return -1;
    }
    return __real_epoll_create1(flags);
}

int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    if (fault(F_EPOLL_CTL, ENOMEM)) {
        errno = ENOMEM;
        return -1;
    }
    return __real_epoll_ctl(epfd, op, fd, ev);
}

int __wrap_fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);   /* every command weft uses takes an int or none */
    va_end(ap);
    if ((cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && fault(F_DUP, EMFILE)) {
        errno = EMFILE;
        return -1;
    }
    return __real_fcntl(fd, cmd, arg);
}

/* weft's own fcntl calls go through its raw system-call wrapper (base/sys.h),
 * not libc's fcntl: the same faults, there. */
int __wrap_weft__sys_fcntl(int fd, int cmd, long arg)
{
    if ((cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && fault(F_DUP, EMFILE))
        return -EMFILE;
    return __real_weft__sys_fcntl(fd, cmd, arg);
}

#if WEFT_TEST_URING
struct io_uring;
struct io_uring_params;
int __real_io_uring_queue_init_params(unsigned entries, struct io_uring *ring, struct io_uring_params *p);
int __wrap_io_uring_queue_init_params(unsigned entries, struct io_uring *ring, struct io_uring_params *p);

int __wrap_io_uring_queue_init_params(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
    if (fault(F_URING, EMFILE))
        return -EMFILE;
    return __real_io_uring_queue_init_params(entries, ring, p);
}
#endif

/* Sets the wrappers up to fail the nth call they count, and stops them
 * counting until fault_count(). */
static void fault_reset(long n)
{
    atomic_store(&fault_kinds, 0);
    atomic_store(&fault_calls, 0);
    atomic_store(&fault_errno, 0);
    atomic_store(&fault_hit, 0);
    atomic_store(&fault_at, n);
}

/* Counts the calls of `kinds` from now on (0: none), where the count was. */
static void fault_count(unsigned kinds)
{
    atomic_store(&fault_kinds, kinds);
}

static const char *kind_name(unsigned kind)
{
    switch (kind) {
    case F_ALLOC:     return "allocation";
    case F_MMAP:      return "mmap";
    case F_MADVISE:   return "madvise";
    case F_GUARD:     return "madvise(MADV_GUARD_INSTALL)";
    case F_MPROTECT:  return "mprotect";
    case F_THREAD:    return "pthread_create";
    case F_EVENTFD:   return "eventfd";
    case F_EPOLL:     return "epoll_create1";
    case F_EPOLL_CTL: return "epoll_ctl";
    case F_URING:     return "io_uring_queue_init_params";
    case F_DUP:       return "fcntl(F_DUPFD_CLOEXEC)";
    default:          return "nothing";
    }
}

/* ---- what a run holds --------------------------------------------------------------- */

struct holding {
    long blocks, bytes;
    int  fds, threads;
};

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static int count_threads(void)
{
    int n = -1;
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static struct holding holding_now(void)
{
    return (struct holding){ atomic_load(&held_blocks), atomic_load(&held_bytes), count_fds(),
                             count_threads() };
}

/* Whether b holds what a held: no more threads, as a thread joined just
 * before a was taken may still have been leaving /proc then. */
static bool holding_same(struct holding a, struct holding b)
{
    return a.blocks == b.blocks && a.bytes == b.bytes && a.fds == b.fds && b.threads <= a.threads;
}

/* What is held now, once the threads joined a moment ago have left /proc. */
static struct holding holding_settled(struct holding want)
{
    struct holding h = holding_now();
    for (int i = 0; i < 200 && !holding_same(want, h); i++) {
        usleep(10000);
        h = holding_now();
    }
    return h;
}

/* ---- a run, and the sweep ---------------------------------------------------------- */

struct run {
    long          n;           /* the call that fails */
    unsigned      kinds;
    _Atomic bool  failed;
    char          why[512];    /* the first problem */
    void         *arg;
};

static void run_fail(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_fail(struct run *r, const char *fmt, ...)
{
    if (atomic_exchange(&r->failed, true))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
}

/* The windows in which a scenario's calls are counted and may fail; the
 * count goes on from one window to the next. */
static void fault_begin(struct run *r) { fault_count(r->kinds); }
static void fault_end(void) { fault_count(0); }

/* The errno the failed call gave, 0 if none failed yet. */
static int injected(void)
{
    return atomic_load(&fault_errno);
}

/* Whether result, from a call made while armed, is one it may give: its
 * success `ok`, or the failure injected. */
static bool answer_ok(long result, long ok)
{
    return result == ok || (injected() && result == -injected());
}

#define SWEEP_MAX 5000

/*
 * The worker counts the sweeps run on. Under ThreadSanitizer a coroutine's
 * first run costs milliseconds (each is a TSan fiber, as costly as a thread),
 * and Valgrind runs one thread at a time: there the sweeps run on 2 workers
 * only, where the error paths meet other threads, and spawn fewer (below).
 */
static const unsigned all_workers[] = { 1, 2, 4 };
static const unsigned two_workers[] = { 2 };

static bool slow_build(void)
{
    return WEFT_TEST_TSAN || RUNNING_ON_VALGRIND;
}

#define FOR_EACH_WORKERS(w)                                                             \
    for (size_t w##_i = 0, w##_n = slow_build() ? 1 : 3; w##_i < w##_n; w##_i++)         \
        for (unsigned w = slow_build() ? two_workers[w##_i] : all_workers[w##_i], w##_go = 1; \
             w##_go; w##_go = 0)

/* A pipe read through the epoll backend, which records the descriptor's kind
 * in the process's descriptor table. */
static void *touch_descriptor_table(void *arg)
{
    (void)arg;
    int p[2];
    char c = 0;
    if (pipe(p) != 0)
        return (void *)1;
    bool ok = weft_write(p[1], &c, 1) == 1 && weft_read(p[0], &c, 1) == 1;
    close(p[0]);
    close(p[1]);
    return ok ? NULL : (void *)1;
}

/*
 * Runs scenario(run) for n = 1, 2, ... with the nth call of `kinds` in the
 * scenario's window failing, until a run made fewer than n such calls: that
 * last run failed nothing and must have succeeded whole. Every run must end
 * holding what it held when it began.
 */
static void sweep(const char *what, unsigned kinds, void (*scenario)(struct run *), void *arg)
{
    /* What the process makes once, on first use, and keeps (the pages of the
     * descriptor table) is not a leak: one run that fails nothing makes it
     * before the sweep starts counting. */
    struct run warm = { .n = LONG_MAX, .kinds = kinds, .arg = arg };
    fault_reset(LONG_MAX);
    scenario(&warm);
    fault_count(0);
    cr_assert(!warm.failed, "%s, with no call failing: %s", what, warm.why);
    /* A run that falls back from io_uring to epoll meets the table too. */
    void *bad = NULL;
    weft_config epoll_one = { .workers = 1, .io_backend = WEFT_IO_EPOLL };
    cr_assert_eq(weft_main(&epoll_one, touch_descriptor_table, NULL, &bad), 0);
    cr_assert_null(bad, "a pipe through the epoll backend");
    long n;
    for (n = 1; n <= SWEEP_MAX; n++) {
        struct run r = { .n = n, .kinds = kinds, .arg = arg };
        struct holding before = holding_now();
        fault_reset(n);
        scenario(&r);
        fault_count(0);
        long calls = atomic_load(&fault_calls);
        unsigned hit = atomic_load(&fault_hit);
        int err = atomic_load(&fault_errno);
        cr_assert(!r.failed, "%s, call %ld failing (%s, errno %d): %s", what, n, kind_name(hit), err, r.why);
        struct holding after = holding_settled(before);
        cr_assert(holding_same(before, after),
                  "%s, call %ld failing (%s): held %ld blocks, %ld mapped bytes, %d descriptors, "
                  "%d threads before; %ld, %ld, %d, %d after",
                  what, n, kind_name(hit), before.blocks, before.bytes, before.fds, before.threads,
                  after.blocks, after.bytes, after.fds, after.threads);
        if (calls < n)
            break;   /* no call failed: every site has had its turn */
    }
    cr_assert_leq(n, SWEEP_MAX, "%s: the sweep did not end", what);
    cr_log_info("%s: %ld runs", what, n);
}

/* ---- checks that a runtime works ------------------------------------------------- */

static void *echo_arg(void *arg) { return arg; }

static void *offloaded(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return (void *)7;
}

struct pipe_read {
    int  fd;
    char c;
};

static void *read_one(void *arg)
{
    struct pipe_read *pr = arg;
    return (void *)(intptr_t)weft_read(pr->fd, &pr->c, 1);
}

/* In a coroutine: a spawn and join, a sleep, a pipe read that waits, one
 * that weft_close ends (on one worker), a channel, an offload. Returns NULL
 * if all worked, or what did not. */
static void *works(void *arg)
{
    weft_task *t;
    void *res;
    if (weft_spawn(&t, echo_arg, (void *)5) != 0 || weft_join(t, &res) != 0 || res != (void *)5)
        return "spawn and join";
    if (weft_sleep(100000) != 0)
        return "sleep";
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return "pipe(2)";
    struct pipe_read pr = { p[0], 0 };
    bool pipe_ok = weft_spawn(&t, read_one, &pr) == 0;
    if (pipe_ok) {
        pipe_ok = weft_sleep(1000000) == 0 && weft_write(p[1], "x", 1) == 1;
        pipe_ok = weft_join(t, &res) == 0 && (intptr_t)res == 1 && pr.c == 'x' && pipe_ok;
    }
    close(p[0]);
    close(p[1]);
    if (!pipe_ok)
        return "a pipe read that waits";
    if (weft_workers() == 1) {   /* the reader waits by the time the sleep ends */
        if (pipe2(p, O_CLOEXEC) != 0)
            return "pipe(2)";
        pr = (struct pipe_read){ p[0], 0 };
        pipe_ok = weft_spawn(&t, read_one, &pr) == 0;
        if (pipe_ok) {
            pipe_ok = weft_sleep(100000) == 0 && weft_close(p[0]) == 0;
            pipe_ok = weft_join(t, &res) == 0 && (intptr_t)res == -EBADF && pipe_ok;
        }
        close(p[1]);
        if (!pipe_ok)
            return "weft_close of a descriptor a coroutine waits on";
    }
    weft_chan *ch;
    int v = 3, w = 0;
    if (weft_chan_create(&ch, sizeof v, 1) != 0)
        return "channel create";
    bool chan_ok = weft_chan_send(ch, &v) == 0 && weft_chan_recv(ch, &w) == 0 && w == 3;
    weft_chan_destroy(ch);
    if (!chan_ok)
        return "channel";
    _Atomic int ran = 0;
    if (weft_offload(offloaded, &ran, &res) != 0 || res != (void *)7 || atomic_load(&ran) != 1)
        return "offload";
    return NULL;
}

/* A plain thread: rt runs a coroutine that uses the runtime's services. */
static const char *check_works(weft_rt *rt)
{
    weft_task *t;
    void *why = "spawn_on";
    if (weft_spawn_on(rt, &t, works, NULL) == 0 && weft_join(t, &why) != 0)
        why = "join";
    return why;
}

/* ---- runtime creation ----------------------------------------------------------- */

struct create_case {
    unsigned workers;
    int      backend;
};

static void create_scenario(struct run *r)
{
    const struct create_case *c = r->arg;
    weft_config cfg = { .workers = c->workers, .io_backend = c->backend, .stack_size = 64 * 1024 };
    weft_rt *rt = NULL;
    fault_begin(r);
    int err = weft_rt_create(&rt, &cfg);
    fault_end();
    if (err) {
        if (!injected())
            run_fail(r, "weft_rt_create failed with %d, and nothing was made to fail", err);
        else if (err != -injected())
            run_fail(r, "weft_rt_create failed with %d, not -%d", err, injected());
        return;
    }
    const char *why = check_works(rt);
    if (why)
        run_fail(r, "the runtime created does not work: %s", why);
    if ((err = weft_rt_destroy(rt)) != 0)
        run_fail(r, "weft_rt_destroy: %d", err);
}

/* Runs the probe for MADV_GUARD_INSTALL, and a first runtime's once-only
 * set-up, before the sweeps count anything. */
static void settle(void)
{
    weft_rt *rt;
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 1 }), 0);
    cr_assert_null(check_works(rt));
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

static void sweep_create(int backend)
{
    if (!backend_available(backend == WEFT_IO_AUTO ? WEFT_IO_EPOLL : backend))
        return;
    FOR_EACH_WORKERS(w) {
        struct create_case c = { w, backend };
        char what[96];
        snprintf(what, sizeof what, "weft_rt_create, %u workers, %s", c.workers, backend_name[backend]);
        sweep(what, F_SWEPT, create_scenario, &c);
    }
}

Test(faults, runtime_creation_on_io_uring_fails_cleanly_at_every_call)
{
    SKIP_IF_STATIC();
    settle();
    sweep_create(WEFT_IO_URING);
}

Test(faults, runtime_creation_on_epoll_fails_cleanly_at_every_call)
{
    SKIP_IF_STATIC();
    settle();
    sweep_create(WEFT_IO_EPOLL);
}

/* AUTO falls back to epoll where a ring cannot be made. */
Test(faults, runtime_creation_on_the_default_backend_fails_cleanly_at_every_call)
{
    SKIP_IF_STATIC();
    settle();
    sweep_create(WEFT_IO_AUTO);
}

/* ---- spawning -------------------------------------------------------------------- */

/* Past every cache: more handles than the first slab holds, more stacks than
 * the first chunks, and more handles freed than a worker's cache keeps.
 * Under ThreadSanitizer, past a worker's caches of handles and promises only. */
#define SPAWNS 700
#define SPAWNS_TSAN 40

static int spawns(void)
{
    return WEFT_TEST_TSAN ? SPAWNS_TSAN : SPAWNS;
}

struct spawn_case {
    unsigned   workers;
    int        spawns;       /* at most SPAWNS */
    bool       outside;      /* spawn from a plain thread with weft_spawn_on */
    weft_rt   *rt;
    weft_wg    gate;         /* the spawned tasks wait here, so that all live at once */
    _Atomic int ran;
    weft_task *tasks[SPAWNS];
    int        errs[SPAWNS];
};

static void *gated(void *arg)
{
    struct spawn_case *c = *(struct spawn_case **)arg;
    weft_wg_wait(&c->gate);
    atomic_fetch_add(&c->ran, 1);
    return arg;
}

/* Spawns SPAWNS gated tasks (the window armed), opens the gate and joins
 * them; every spawn either succeeds or fails with the error injected, and
 * every task spawned runs once and is joined with its result. */
static void spawn_all(struct run *r, struct spawn_case *c)
{
    static struct spawn_case *self[SPAWNS];   /* task i's argument is &self[i], which points at c */
    atomic_store(&c->ran, 0);
    c->gate = (weft_wg)WEFT_WG_INIT;
    weft_wg_add(&c->gate, 1);
    int spawned = 0;
    fault_begin(r);
    for (int i = 0; i < c->spawns; i++) {
        self[i] = c;
        c->errs[i] = c->outside ? weft_spawn_on(c->rt, &c->tasks[i], gated, &self[i])
                                : weft_spawn(&c->tasks[i], gated, &self[i]);
        if (c->errs[i] == 0)
            spawned++;
        else if (!answer_ok(c->errs[i], 0))
            run_fail(r, "spawn %d failed with %d, not -%d", i, c->errs[i], injected());
    }
    weft_wg_done(&c->gate);
    for (int i = 0; i < c->spawns; i++) {
        void *res = NULL;
        int err;
        if (c->errs[i] == 0 && ((err = weft_join(c->tasks[i], &res)) != 0 || res != &self[i]))
            run_fail(r, "the join of task %d gave %d, result %p", i, err, res);
    }
    fault_end();
    if (atomic_load(&c->ran) != spawned)
        run_fail(r, "%d tasks spawned, %d ran", spawned, atomic_load(&c->ran));
}

static void *spawn_inside(void *arg)
{
    struct run *r = arg;
    spawn_all(r, r->arg);
    return NULL;
}

static void spawn_scenario(struct run *r)
{
    struct spawn_case *c = r->arg;
    weft_config cfg = { .workers = c->workers, .stack_size = 16 * 1024 };
    int err = weft_rt_create(&c->rt, &cfg);
    if (err) {
        run_fail(r, "weft_rt_create: %d", err);
        return;
    }
    weft_task *t;
    if (c->outside)
        spawn_all(r, c);
    else if (weft_spawn_on(c->rt, &t, spawn_inside, r) != 0 || weft_join(t, NULL) != 0)
        run_fail(r, "the spawning coroutine could not be run");
    const char *why = check_works(c->rt);
    if (why)
        run_fail(r, "the runtime no longer works: %s", why);
    if ((err = weft_rt_destroy(c->rt)) != 0)
        run_fail(r, "weft_rt_destroy: %d", err);
}

static void sweep_spawn(bool outside, int count)
{
    static struct spawn_case c;
    FOR_EACH_WORKERS(w) {
        c.workers = w;
        c.spawns = count;
        c.outside = outside;
        char what[96];
        snprintf(what, sizeof what, "%s, %u workers", outside ? "weft_spawn_on from a plain thread"
                                                               : "weft_spawn from a coroutine", c.workers);
        sweep(what, F_SWEPT, spawn_scenario, &c);
    }
}

Test(faults, spawning_from_a_coroutine_fails_cleanly_at_every_call, .timeout = 600)
{
    SKIP_IF_STATIC();
    settle();
    sweep_spawn(false, spawns());
}

Test(faults, spawning_from_a_plain_thread_fails_cleanly_at_every_call, .timeout = 600)
{
    SKIP_IF_STATIC();
    settle();
    sweep_spawn(true, spawns());
}

/* Kernels before 6.13 have no MADV_GUARD_INSTALL: the probe fails, and each
 * stack's guard is an mprotect made when the spawn's promise is taken. Each
 * spawn then makes calls of its own, so fewer spawns: past the first chunk
 * of slots and a worker's batch of promises. */
#define SPAWNS_MPROTECT 100
_Static_assert(SPAWNS_TSAN < SPAWNS_MPROTECT && SPAWNS_MPROTECT < SPAWNS, "counts of spawns");
static void without_guard_madvise(void)
{
    fault_reset(1);
    fault_count(F_GUARD);
    weft_rt *rt;
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 1 }), 0);
    fault_count(0);
    cr_assert_eq(atomic_load(&fault_hit), F_GUARD, "the probe for MADV_GUARD_INSTALL was not the first guard");
    cr_assert_null(check_works(rt));
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

Test(faults, spawning_with_mprotect_guards_fails_cleanly_at_every_call, .timeout = 600)
{
    SKIP_IF_STATIC();
    without_guard_madvise();
    int count = spawns() < SPAWNS_MPROTECT ? spawns() : SPAWNS_MPROTECT;
    sweep_spawn(false, count);
    sweep_spawn(true, count);
}

/* Binding a stack to a task that is about to run cannot fail the spawn; a
 * guard the kernel cannot install then stops the program, saying why. */
static void *bind_one(void *arg)
{
    weft_task *t;
    fault_reset(1);
    fault_count(F_GUARD);
    if (weft_spawn(&t, echo_arg, NULL) == 0)
        weft_join(t, NULL);
    return NULL;
}

/* Whether this kernel installs guards with madvise (Linux 6.13 and later). */
static bool kernel_has_guard_madvise(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = __real_mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return false;
    bool ok = __real_madvise(p, page, MADV_GUARD_INSTALL) == 0;
    __real_munmap(p, 2 * page);
    return ok;
}

/* Run in a child process, whose message the test reads. */
Test(faults, a_stack_guard_the_kernel_cannot_install_stops_the_program)
{
    SKIP_IF_STATIC();
    if (RUNNING_ON_VALGRIND)
        cr_skip("the program is stopped holding all it had, which Valgrind reports as leaks");
    if (!kernel_has_guard_madvise())
        cr_skip("this kernel has no MADV_GUARD_INSTALL: guards are made when a spawn is promised a stack");
    settle();
    int out[2];
    cr_assert_eq(pipe(out), 0);
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        dup2(out[1], STDERR_FILENO);
        run_with(1, bind_one, NULL);
        _exit(0);   /* not reached: the bind stops the program */
    }
    close(out[1]);
    char msg[1024];
    size_t got = 0;
    ssize_t n;
    while (got + 1 < sizeof msg && (n = read(out[0], msg + got, sizeof msg - 1 - got)) > 0)
        got += (size_t)n;
    msg[got] = 0;
    close(out[0]);
    int status;
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "the child ended with status %#x", status);
    cr_assert(strstr(msg, "could not install a stack guard"), "it said: %s", msg);
}

/* ---- channels ---------------------------------------------------------------------- */

static void chan_scenario(struct run *r)
{
    size_t capacity = (size_t)(uintptr_t)r->arg;
    weft_chan *ch = NULL;
    fault_begin(r);
    int err = weft_chan_create(&ch, sizeof(uint64_t), capacity);
    fault_end();
    if (err) {
        if (!answer_ok(err, 0))
            run_fail(r, "weft_chan_create failed with %d, not -%d", err, injected());
        return;
    }
    uint64_t v = 42, w = 0;
    if (capacity && (weft_chan_try_send(ch, &v) != 0 || weft_chan_try_recv(ch, &w) != 0 || w != 42))
        run_fail(r, "the channel created does not carry an element");
    if ((err = weft_chan_destroy(ch)) != 0)
        run_fail(r, "weft_chan_destroy: %d", err);
}

Test(faults, channel_creation_fails_cleanly_at_every_call)
{
    SKIP_IF_STATIC();
    sweep("weft_chan_create, unbuffered", F_SWEPT, chan_scenario, (void *)(uintptr_t)0);
    sweep("weft_chan_create, buffered", F_SWEPT, chan_scenario, (void *)(uintptr_t)1000);
}

/* A select over more cases than fit on its stack allocates. */
#define SEL_CASES 40

static void *select_many(void *arg)
{
    struct run *r = arg;
    weft_chan *ch[SEL_CASES];
    weft_sel cases[SEL_CASES];
    uint64_t into[SEL_CASES], v = 9;
    int made = 0;
    for (; made < SEL_CASES; made++) {
        if (weft_chan_create(&ch[made], sizeof v, 1) != 0)
            break;
        cases[made] = (weft_sel){ .chan = ch[made], .op = WEFT_RECV, .elem = &into[made] };
    }
    if (made < SEL_CASES) {
        run_fail(r, "channels for the select");
    } else {
        weft_chan_send(ch[SEL_CASES - 1], &v);
        fault_begin(r);
        int got = weft_select(cases, SEL_CASES);
        fault_end();
        if (!answer_ok(got, SEL_CASES - 1))
            run_fail(r, "weft_select gave %d, not %d or -%d", got, SEL_CASES - 1, injected());
        if (got < 0 && (weft_chan_try_recv(ch[SEL_CASES - 1], &into[0]) != 0 || into[0] != v))
            run_fail(r, "a failed select took the element");
    }
    while (made--)
        weft_chan_destroy(ch[made]);
    return NULL;
}

static void select_scenario(struct run *r)
{
    run_with(1, select_many, r);
}

Test(faults, a_select_over_many_cases_fails_cleanly_at_every_call)
{
    SKIP_IF_STATIC();
    settle();
    sweep("weft_select over 40 cases", F_SWEPT, select_scenario, NULL);
}

/* ---- IO ---------------------------------------------------------------------------- */

struct io_case {
    unsigned workers;
    int      backend;
    struct run *r;
};

struct late_write {
    int      fd;
    uint64_t after_ns;
};

/* Writes a byte to fd after a while, from a coroutine; a sleep that fails
 * (the window is armed) writes at once, and a write that fails so is made
 * again, since the reader waits for the byte. */
static void *write_late(void *arg)
{
    struct late_write *lw = arg;
    weft_sleep(lw->after_ns);
    ssize_t w = weft_write(lw->fd, "y", 1);
    if (w < 0 && injected() && w == -injected())
        w = weft_write(lw->fd, "y", 1);
    return (void *)(intptr_t)w;
}

/* The first waits of a runtime: a read, a receive and a poll that must wait
 * (descriptor tables and pages, ring counters, epoll registrations), each
 * woken by a write from a coroutine that sleeps first (the timer heap). A
 * wait that fails must lose nothing: the byte is still there to read. */
static void first_waits(struct run *r, int kind)
{
    int fds[2];
    int made = kind == 1 ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) : pipe2(fds, O_CLOEXEC);
    if (made != 0) {
        run_fail(r, "descriptors: %s", strerror(errno));
        return;
    }
    struct late_write lw = { fds[1], 2000000 };
    weft_task *t;
    if (weft_spawn(&t, write_late, &lw) != 0) {
        run_fail(r, "the writer could not be spawned");
        close(fds[0]);
        close(fds[1]);
        return;
    }
    char c = 0;
    ssize_t got;
    const char *call = kind == 0 ? "weft_read" : kind == 1 ? "weft_recv" : "weft_poll";
    fault_begin(r);
    if (kind == 0)
        got = weft_read(fds[0], &c, 1);
    else if (kind == 1)
        got = weft_recv(fds[0], &c, 1, 0);
    else
        got = weft_poll(fds[0], POLLIN);
    void *wres = NULL;
    int joined = weft_join(t, &wres);
    fault_end();
    long want = kind == 2 ? POLLIN : 1;
    if (!answer_ok(got, want))
        run_fail(r, "%s gave %zd, not %ld or -%d", call, got, want, injected());
    if (joined != 0 || (intptr_t)wres != 1)
        run_fail(r, "the late write gave %ld", (long)(intptr_t)wres);
    if (kind == 2 || got < 0) {   /* the byte is still there */
        got = weft_read(fds[0], &c, 1);
        if (got != 1 || c != 'y')
            run_fail(r, "after %s the byte was %s", call, got == 1 ? "changed" : "lost");
    } else if (c != 'y') {
        run_fail(r, "%s read the wrong byte", call);
    }
    close(fds[0]);
    close(fds[1]);
}

/* A wait with a deadline on a descriptor that never becomes ready. */
static void deadline_wait(struct run *r)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        run_fail(r, "pipe: %s", strerror(errno));
        return;
    }
    char c;
    fault_begin(r);
    uint64_t old = weft_deadline(weft_now() + 2000000);
    ssize_t got = weft_read(fds[0], &c, 1);
    weft_deadline(old);
    int slept = weft_sleep(100000);
    fault_end();
    if (!answer_ok(got, -ETIMEDOUT))
        run_fail(r, "a read past its deadline gave %zd, not -ETIMEDOUT or -%d", got, injected());
    if (!answer_ok(slept, 0))
        run_fail(r, "weft_sleep gave %d, not 0 or -%d", slept, injected());
    close(fds[0]);
    close(fds[1]);
}

/* Offloads, several at once so that helpers are started while others run,
 * and a file read (a ring request, or an offload on epoll). An offload
 * that fails never ran its function. */
struct offload_one {
    struct run *r;
    _Atomic int ran;
    int         err;
};

static void *offload_one(void *arg)
{
    struct offload_one *o = arg;
    void *res = NULL;
    o->err = weft_offload(offloaded, &o->ran, &res);
    if (!answer_ok(o->err, 0))
        run_fail(o->r, "weft_offload gave %d, not 0 or -EAGAIN / -%d", o->err, injected());
    else if (o->err == 0 && (res != (void *)7 || atomic_load(&o->ran) != 1))
        run_fail(o->r, "an offload that succeeded ran its function %d times", atomic_load(&o->ran));
    else if (o->err != 0 && atomic_load(&o->ran) != 0)
        run_fail(o->r, "an offload that failed with %d ran its function", o->err);
    return NULL;
}

static void offloads(struct run *r)
{
    enum { N = 4 };
    struct offload_one o[N];
    weft_task *t[N];
    fault_begin(r);
    for (int i = 0; i < N; i++) {
        o[i] = (struct offload_one){ .r = r };
        if (weft_spawn(&t[i], offload_one, &o[i]) != 0)
            t[i] = NULL;
    }
    for (int i = 0; i < N; i++)
        if (t[i] && weft_join(t[i], NULL) != 0)
            run_fail(r, "join");
    int fd = memfd_create("weft-faults", MFD_CLOEXEC);   /* a regular file, in memory */
    if (fd < 0) {
        fault_end();
        run_fail(r, "memfd_create: %s", strerror(errno));
        return;
    }
    char buf[4] = { 0 };
    ssize_t w = write(fd, "abcd", 4);
    ssize_t got = weft_pread(fd, buf, 4, 0);
    fault_end();
    if (w != 4 || !answer_ok(got, 4) || (got == 4 && memcmp(buf, "abcd", 4) != 0))
        run_fail(r, "weft_pread gave %zd, not 4 or -%d", got, injected());
    close(fd);
}

/* A coroutine waiting to read a pipe, for weft_close and weft_cancel. */
struct waiting_reader {
    int         fd;
    _Atomic int done;
    ssize_t     got;
};

static void *wait_to_read(void *arg)
{
    struct waiting_reader *w = arg;
    char c;
    w->got = weft_read(w->fd, &c, 1);
    atomic_store(&w->done, 1);
    return NULL;
}

/* Whether the reader finished within a generous while. */
static bool reader_done(struct waiting_reader *w)
{
    for (int i = 0; i < 2000 && !atomic_load(&w->done); i++)
        weft_sleep(1000000);
    return atomic_load(&w->done);
}

/* weft_close of a descriptor a coroutine waits on: the waiter ends with
 * -EBADF. A close that could not fail the waiters must say so and leave
 * the descriptor open; a second close then succeeds. */
static void close_waited(struct run *r)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        run_fail(r, "pipe: %s", strerror(errno));
        return;
    }
    struct waiting_reader w = { .fd = fds[0] };
    weft_task *t;
    if (weft_spawn(&t, wait_to_read, &w) != 0) {
        run_fail(r, "the reader could not be spawned");
        close(fds[0]);
        close(fds[1]);
        return;
    }
    weft_sleep(100000);   /* the reader runs to its wait meanwhile */
    fault_begin(r);
    int err = weft_close(fds[0]);
    fault_end();
    if (!answer_ok(err, 0))
        run_fail(r, "weft_close gave %d, not 0 or -%d", err, injected());
    if (err && (err = weft_close(fds[0])) != 0)
        run_fail(r, "weft_close after a failed one gave %d", err);
    if (!reader_done(&w)) {
        close(fds[1]);   /* end its wait, to report it */
        fds[1] = -1;
        reader_done(&w);
        run_fail(r, "weft_close left its waiter waiting, until the pipe's write end was closed");
    } else if (w.got != -EBADF) {
        run_fail(r, "the waiter of a descriptor closed by weft_close got %zd, not -EBADF", w.got);
    }
    weft_join(t, NULL);
    if (fds[1] >= 0)
        close(fds[1]);
}

/* weft_cancel of a coroutine waiting to read: it ends with -ECANCELED. A
 * cancel that could not reach the wait says so, and a second one does. */
static void cancel_waiting(struct run *r)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        run_fail(r, "pipe: %s", strerror(errno));
        return;
    }
    struct waiting_reader w = { .fd = fds[0] };
    weft_task *t;
    if (weft_spawn(&t, wait_to_read, &w) != 0) {
        run_fail(r, "the reader could not be spawned");
        close(fds[0]);
        close(fds[1]);
        return;
    }
    weft_sleep(100000);   /* the reader runs to its wait meanwhile */
    fault_begin(r);
    int err = weft_cancel(t);
    fault_end();
    if (!answer_ok(err, 0))
        run_fail(r, "weft_cancel gave %d, not 0 or -%d", err, injected());
    if (err && (err = weft_cancel(t)) != 0)
        run_fail(r, "weft_cancel after a failed one gave %d", err);
    if (!reader_done(&w)) {
        weft_write(fds[1], "z", 1);   /* end its wait, to report it */
        reader_done(&w);
        run_fail(r, "weft_cancel left the coroutine waiting, until data came");
    } else if (w.got != -ECANCELED) {
        run_fail(r, "the cancelled reader got %zd, not -ECANCELED", w.got);
    }
    weft_join(t, NULL);
    close(fds[0]);
    close(fds[1]);
}

static void *io_all(void *arg)
{
    struct run *r = arg;
    first_waits(r, 0);
    first_waits(r, 1);
    first_waits(r, 2);
    deadline_wait(r);
    offloads(r);
    return NULL;
}

/* On a runtime of one worker: the reader has run to its wait by the time
 * the sleep of the coroutine that closes or cancels ends (nothing else can
 * run it), so the window holds the close or the cancel alone, and the read
 * happens before the close for ThreadSanitizer too. */
static void *close_and_cancel(void *arg)
{
    close_waited(arg);
    cancel_waiting(arg);
    return NULL;
}

static void io_scenario(struct run *r)
{
    struct io_case *c = r->arg;
    weft_config cfg = { .workers = c->workers, .io_backend = c->backend };
    weft_rt *rt;
    int err = weft_rt_create(&rt, &cfg);
    if (err) {
        run_fail(r, "weft_rt_create: %d", err);
        return;
    }
    weft_task *t;
    if (weft_spawn_on(rt, &t, io_all, r) != 0 || weft_join(t, NULL) != 0)
        run_fail(r, "the IO coroutine could not be run");
    const char *why = check_works(rt);
    if (why)
        run_fail(r, "the runtime no longer works: %s", why);
    if ((err = weft_rt_destroy(rt)) != 0)
        run_fail(r, "weft_rt_destroy: %d", err);
    weft_config one = { .workers = 1, .io_backend = c->backend };
    if ((err = weft_main(&one, close_and_cancel, r, NULL)) != 0)
        run_fail(r, "weft_main for weft_close and weft_cancel: %d", err);
}

Test(faults, first_waits_timers_and_offloads_fail_cleanly_at_every_call, .timeout = 600)
{
    SKIP_IF_STATIC();
    settle();
    FOR_EACH_BACKEND(b) FOR_EACH_WORKERS(w) {
        struct io_case c = { w, b, NULL };
        char what[96];
        snprintf(what, sizeof what, "IO, %u workers, %s", w, backend_name[b]);
        sweep(what, F_SWEPT, io_scenario, &c);
    }
}
