/* SPDX-License-Identifier: MIT */
/*
 * The stall report's backtrace: where a coroutine that holds its worker
 * (core/monitor.c) is stuck right now, so that the report points at the
 * blocking call or the long loop.
 *
 * Taking it. Only the stalled thread can see its own registers, so the
 * monitor asks it with a signal, the stall signal (weft_config.stall_signal,
 * WEFT_STALL_SIGNAL; SIGRTMAX-3 by default), sent to that one thread with
 * rt_tgsigqueueinfo and carrying the request's number. The handler does
 * nothing a handler may not: it checks that the request is for this thread
 * and still open, copies the interrupted registers from its ucontext_t and
 * the interrupted stack from the stack pointer up (process_vm_readv, which
 * cannot fault, and which the sanitizers see as a write of defined bytes),
 * notes the worker's schedule count, marks the request done and wakes the
 * monitor's futex. It takes no lock, allocates nothing, keeps errno. The
 * monitor waits for it at most WAIT_NS, then unwinds the copy with the
 * dump's unwinder (core/unwind.c: the registers as libunwind numbers them,
 * the accessors that read the copy) and names the frames as the dump does, outside the handler and outside the
 * exclusion of core/monitor.c: the unwind tables are found through
 * dl_iterate_phdr, which takes the loader's lock.
 *
 * The request. One at a time in the process (bt_lock; a report is rare and
 * each runtime reports at most one stall a second). req_state holds the
 * request's number times four plus its phase:
 *   1. the monitor, holding bt_lock, finds the phase IDLE or DONE, fills in
 *      req_worker, and stores (n, ASKED) with release;
 *   2. the handler loads req_state with acquire; only if it is (n, ASKED),
 *      n being the number its signal carries, and the thread is req_worker's,
 *      does it move it to (n, FILLING) by CAS, fill in the copy, store
 *      (n, DONE) with release and wake the futex;
 *   3. the monitor waits for (n, DONE) with acquire, then reads the copy. At
 *      its deadline it moves (n, ASKED) back to (n, IDLE) by CAS, so that a
 *      signal delivered later (the thread blocked it, or was in an
 *      uninterruptible sleep) finds its request closed and does nothing; if
 *      the CAS fails a handler is filling, and the monitor waits for it once
 *      more. The copy is static and is only ever written in the FILLING phase.
 * Whether the thread still runs the stalled coroutine when the signal
 * arrives is not certain: the coroutine may have switched out or ended
 * meanwhile. The handler copies whatever runs, and notes the schedule count;
 * a count other than the stall's says the frames are of something else, and
 * the report says so.
 *
 * Interrupted system calls. The handler is installed with SA_RESTART, so a
 * read(2), write(2), accept(2), wait or futex wait without a limit that the
 * signal interrupts restarts unseen, even as a raw syscall(2). Some calls
 * fail with EINTR after any handler, SA_RESTART or not (signal(7)): the
 * sleeps, poll, select, epoll_wait, io_uring_enter, sigtimedwait, System V
 * IPC, futex waits with a limit. A worker held by one of them is not
 * signalled: its thread's /proc/self/task/TID/syscall names the call and
 * gives its stack and instruction pointers, from which the stack, which does
 * not move while the thread sleeps, is unwound as far as those two registers
 * allow. A socket call with SO_RCVTIMEO or SO_SNDTIMEO also fails with EINTR
 * after a handler, and cannot be told apart from one without; a program that
 * cannot retry one turns the backtrace off (WEFT_STALL_SIGNAL=0). weft's own
 * calls retry after EINTR wherever a signal may reach them.
 *
 * The program's signals. weft uses the stall signal only if, when the first
 * runtime that reports stalls starts, the program has left it at its default
 * disposition and unblocked: a program that handles, ignores or blocks it
 * (to take it with sigwait) keeps it, and the report says that its backtrace
 * is missing and why. A handler the program installs later is not replaced;
 * the monitor sees it and sends nothing. The last runtime gives the old
 * disposition back unless the program changed it since.
 */
#include "dump.h"
#include "base/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define WAIT_NS      100000000u            /* the handler answers within this, or not at all */
#define MAX_FRAMES   WEFT__DUMP_FRAMES     /* frames shown, as weft_dump */
#define STACK_COPY   ((size_t)256 << 10)   /* bytes of stack copied above the stack pointer */
#define STACK_GUESS  ((size_t)16 << 10)    /* ... on a stack whose bounds weft does not know */

int weft__stall_signal_pick(int configured, uint64_t stall_ns, int dump_signal)
{
    if (configured < -1 || configured >= NSIG)
        return -EINVAL;
    int sig = configured == 0 ? SIGRTMAX - 3 : configured < 0 ? 0 : configured;
    const char *env = getenv("WEFT_STALL_SIGNAL");
    if (env && *env)
        sig = strcmp(env, "0") == 0 ? 0 : weft__signal_named(env) ? weft__signal_named(env) : -1;
    if (sig < 0 || sig == SIGKILL || sig == SIGSTOP || sig == SIGSEGV || sig == SIGBUS ||
        sig == SIGILL || sig == SIGFPE || (sig && sig == dump_signal))
        return -EINVAL;
    if (stall_ns == UINT64_MAX || !WEFT_HAVE_LIBUNWIND)
        return 0;
    return sig;
}

#if WEFT_HAVE_LIBUNWIND

enum { IDLE, ASKED, FILLING, DONE };   /* req_state's phase, its low two bits */

/* What the handler copied: written only in the FILLING phase, read by the
 * monitor once it saw DONE. */
struct snap {
    struct weft__image img;  /* registers, and the copied stack in snap_stack */
    uint32_t  tick;          /* the worker's schedules */
    uint32_t  in_user;
};

static pthread_mutex_t bt_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned bt_users;              /* runtimes with a stall signal; under bt_lock */
static int bt_sig;                     /* their signal; under bt_lock */
static const char *bt_refused;         /* why it is the program's, or NULL; under bt_lock */
static struct sigaction bt_old;        /* its disposition before; under bt_lock */

static _Atomic uint32_t req_state;     /* futex word: number * 4 + phase (above) */
static struct weft__worker *req_worker;   /* the request's; written in IDLE or DONE */
static struct snap snap;
static unsigned char snap_stack[STACK_COPY];

/* The top of the stack that sp is on: the running coroutine's, or the
 * worker thread's own; a guess where it is neither. The worker's thread. */
static uintptr_t stack_top(struct weft__worker *w, uintptr_t sp)
{
    weft_task *t = w->current;
    if (t && t->fiber && sp >= (uintptr_t)t->fiber->stack_lo && sp < (uintptr_t)t->fiber)
        return (uintptr_t)t->fiber;   /* a coroutine's stack ends at its fiber */
    uintptr_t lo = (uintptr_t)w->sched.stack_lo;
    if (sp >= lo && sp < lo + w->sched.stack_size)
        return lo + w->sched.stack_size;
    return sp + STACK_GUESS;
}

/* Fills snap from the interrupted context. The worker's thread, in the
 * handler, in the FILLING phase. */
static void capture(struct weft__worker *w, const ucontext_t *uc)
{
    weft__image_from_ucontext(&snap.img, uc);
    uintptr_t sp = (uintptr_t)snap.img.reg[WEFT__UNW_SP];
    size_t len = stack_top(w, sp) - sp;
    if (len > STACK_COPY)
        len = STACK_COPY;
    ssize_t n = weft__copy_some(snap_stack, sp, len);
    snap.img.buf = snap_stack;
    snap.img.lo = sp;
    snap.img.hi = sp + (n > 0 ? (size_t)n : 0);   /* a partial copy stops at an unmapped page */
    snap.tick = atomic_load_explicit(&w->tick, memory_order_relaxed);      /* its own thread */
    snap.in_user = atomic_load_explicit(&w->in_user, memory_order_relaxed);
}

static void on_stall_signal(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    int saved = errno;
    uint32_t want = ((uint32_t)si->si_value.sival_int << 2) | ASKED;
    if (si->si_code == SI_QUEUE &&
        atomic_load_explicit(&req_state, memory_order_acquire) == want &&   /* pairs with ask's release */
        weft__worker_self() == req_worker &&
        atomic_compare_exchange_strong_explicit(&req_state, &want, (want & ~3u) | FILLING,
                                                memory_order_acquire, memory_order_relaxed)) {
        capture(req_worker, uc);
        atomic_store_explicit(&req_state, (want & ~3u) | DONE, memory_order_release);   /* publishes snap */
        weft__futex_wake(&req_state, 1);
    }
    errno = saved;
}

int weft__stallbt_start(int sig)
{
    if (!sig)
        return 0;
    int err = 0;
    pthread_mutex_lock(&bt_lock);
    if (bt_users && bt_sig != sig) {
        err = -EBUSY;
    } else if (!bt_users) {
        /* The workers inherit the creating thread's mask: a signal blocked
         * here is one the program takes with sigwait. */
        sigset_t mask;
        pthread_sigmask(SIG_BLOCK, NULL, &mask);
        bt_refused = NULL;
        if (sigaction(sig, NULL, &bt_old) != 0)
            bt_refused = "it cannot be handled";
        else if ((bt_old.sa_flags & SA_SIGINFO) || bt_old.sa_handler != SIG_DFL)
            bt_refused = bt_old.sa_handler == SIG_IGN ? "the program ignores it"
                                                     : "the program handles it";
        else if (sigismember(&mask, sig) == 1)
            bt_refused = "the program blocks it";
        if (!bt_refused) {
            struct sigaction sa;
            memset(&sa, 0, sizeof(sa));
            sa.sa_sigaction = on_stall_signal;
            sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
            sigemptyset(&sa.sa_mask);
            if (sigaction(sig, &sa, NULL) != 0)
                bt_refused = "it cannot be handled";
        }
        bt_sig = sig;
    }
    if (!err)
        bt_users++;
    pthread_mutex_unlock(&bt_lock);
    return err;
}

void weft__stallbt_stop(int sig)
{
    if (!sig)
        return;
    pthread_mutex_lock(&bt_lock);
    if (--bt_users == 0) {
        struct sigaction cur;
        if (!bt_refused && sigaction(bt_sig, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
            cur.sa_sigaction == on_stall_signal)
            sigaction(bt_sig, &bt_old, NULL);   /* the program's disposition again */
        bt_sig = 0;
        bt_refused = NULL;
    }
    pthread_mutex_unlock(&bt_lock);
}

/* ---- the monitor's side ------------------------------------------------------------ */

/* Text appended to the report's buffer. */
struct out {
    char  *buf;
    size_t len, n;
};

__attribute__((format(printf, 2, 3)))
static void out_f(struct out *o, const char *fmt, ...)
{
    if (o->n + 1 >= o->len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(o->buf + o->n, o->len - o->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        o->n = (size_t)k < o->len - o->n ? o->n + (size_t)k : o->len - 1;
}

/* Waits, at most WAIT_NS, for the handler of an earlier request that is
 * still filling snap. Returns whether snap is free. Holds bt_lock. */
static bool snap_free(struct out *o)
{
    uint64_t until = weft_now() + WAIT_NS;
    uint32_t st = atomic_load_explicit(&req_state, memory_order_acquire);   /* pairs with the handler's release */
    while ((st & 3) == FILLING && weft_now() < until) {
        weft__futex_wait_until(&req_state, st, until);
        st = atomic_load_explicit(&req_state, memory_order_acquire);
    }
    if ((st & 3) == FILLING)
        out_f(o, "  (backtrace unavailable: an earlier one is still being taken)\n");
    return (st & 3) != FILLING;
}

/* Asks w's thread for its registers and stack; returns whether snap holds
 * them. Holds bt_lock; snap is free. */
static bool ask(struct weft__worker *w, int tid, struct out *o)
{
    uint64_t until = weft_now() + WAIT_NS;
    uint32_t st = atomic_load_explicit(&req_state, memory_order_relaxed);   /* only the handler of an open request writes it */
    uint32_t n = ((st >> 2) + 1) & (UINT32_MAX >> 3);   /* fits a positive int */
    req_worker = w;
    atomic_store_explicit(&req_state, n << 2 | ASKED, memory_order_release);   /* pairs with the handler's acquire */
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    si.si_signo = bt_sig;
    si.si_code = SI_QUEUE;
    si.si_pid = getpid();
    si.si_uid = getuid();
    si.si_value.sival_int = (int)n;
    if (syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, bt_sig, &si) != 0) {
        int err = errno;
        uint32_t asked = n << 2 | ASKED;
        atomic_compare_exchange_strong_explicit(&req_state, &asked, n << 2 | IDLE,
                                                memory_order_relaxed, memory_order_relaxed);
        out_f(o, "  (backtrace unavailable: signal %d could not be sent: %s)\n", bt_sig, strerror(err));
        return false;
    }
    for (int round = 0; round < 2; round++) {
        for (;;) {
            st = atomic_load_explicit(&req_state, memory_order_acquire);   /* pairs with the handler's release */
            if (st == (n << 2 | DONE))
                return true;
            if (weft_now() >= until)
                break;
            weft__futex_wait_until(&req_state, st, until);
        }
        uint32_t asked = n << 2 | ASKED;
        if (atomic_compare_exchange_strong_explicit(&req_state, &asked, n << 2 | IDLE,
                                                    memory_order_relaxed, memory_order_relaxed))
            break;   /* closed: a late signal finds nothing to do */
        until = weft_now() + WAIT_NS;   /* its handler is filling: once more */
    }
    if ((atomic_load_explicit(&req_state, memory_order_acquire) & 3) == FILLING) {
        out_f(o, "  (backtrace unavailable: worker %u's handler did not finish within %u ms)\n",
              w->index, (unsigned)(2 * WAIT_NS / 1000000u));
        return false;
    }
    out_f(o, "  (backtrace unavailable: worker %u did not take signal %d within %u ms: it blocks "
          "the signal, or sleeps where signals wait)\n", w->index, bt_sig, (unsigned)(WAIT_NS / 1000000u));
    return false;
}

/* The calls that fail with EINTR after a handler even under SA_RESTART
 * (signal(7)); a futex wait only with a limit. */
static const struct { long nr; const char *name; } never_restarted[] = {
#ifdef SYS_nanosleep
    { SYS_nanosleep, "nanosleep" },
#endif
    { SYS_clock_nanosleep, "clock_nanosleep" },
#ifdef SYS_poll
    { SYS_poll, "poll" },
#endif
    { SYS_ppoll, "ppoll" },
#ifdef SYS_select
    { SYS_select, "select" },
#endif
    { SYS_pselect6, "pselect6" },
#ifdef SYS_epoll_wait
    { SYS_epoll_wait, "epoll_wait" },
#endif
    { SYS_epoll_pwait, "epoll_pwait" },
#ifdef SYS_epoll_pwait2
    { SYS_epoll_pwait2, "epoll_pwait2" },
#endif
    { SYS_io_getevents, "io_getevents" },
#ifdef SYS_io_pgetevents
    { SYS_io_pgetevents, "io_pgetevents" },
#endif
#ifdef SYS_io_uring_enter
    { SYS_io_uring_enter, "io_uring_enter" },
#endif
    { SYS_rt_sigtimedwait, "rt_sigtimedwait" },
    { SYS_rt_sigsuspend, "rt_sigsuspend" },
#ifdef SYS_pause
    { SYS_pause, "pause" },
#endif
    { SYS_semtimedop, "semtimedop" },
#ifdef SYS_semop
    { SYS_semop, "semop" },
#endif
    { SYS_msgrcv, "msgrcv" },
    { SYS_msgsnd, "msgsnd" },
    { SYS_futex, "futex" },
};

/* /proc/self/task/TID/syscall into buf: "running", or the call's number,
 * its arguments, and the stack and instruction pointers. False if /proc
 * cannot say. */
static bool syscall_line(int tid, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
    int fd = weft__sys_open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return false;
    ssize_t k = weft__sys_read(fd, buf, len - 1);
    weft__sys_close(fd);
    buf[k > 0 ? k : 0] = '\0';
    return k > 0;
}

/*
 * Whether w's thread (tid) sleeps in a call that a signal would cut short:
 * then returns the call's name, and snap holds its stack and instruction
 * pointers and a copy of its stack, which stays still while it sleeps, or
 * nothing (snap.img.hi == snap.img.lo) if it woke while copied. NULL if it runs, or
 * sleeps in a call that restarts, or /proc cannot say. The monitor.
 */
static const char *sleeping_in(int tid)
{
    char before[256], after[256];
    long nr;
    unsigned long long a[8];   /* six arguments, sp, pc */
    if (!syscall_line(tid, before, sizeof(before)) ||
        sscanf(before, "%ld %llx %llx %llx %llx %llx %llx %llx %llx", &nr, &a[0], &a[1], &a[2],
               &a[3], &a[4], &a[5], &a[6], &a[7]) != 9)
        return NULL;   /* "running", or blocked outside a system call */
    const char *name = NULL;
    for (size_t i = 0; i < sizeof(never_restarted) / sizeof(never_restarted[0]); i++)
        if (never_restarted[i].nr == nr)
            name = never_restarted[i].name;
    if (!name || (nr == SYS_futex && !a[3]))   /* a futex wait without a limit restarts */
        return NULL;
    snap.img = (struct weft__image){ .buf = snap_stack, .lo = (uintptr_t)a[6], .hi = (uintptr_t)a[6] };
    snap.img.reg[WEFT__UNW_SP] = a[6];   /* the others unknown: taken without a signal */
    snap.img.reg[WEFT__UNW_PC] = a[7];
    snap.img.have[WEFT__UNW_SP] = snap.img.have[WEFT__UNW_PC] = true;
    ssize_t n = weft__copy_some(snap_stack, (uintptr_t)a[6], STACK_COPY);   /* partial at an unmapped page */
    if (n > 0 && syscall_line(tid, after, sizeof(after)) && strcmp(before, after) == 0)
        snap.img.hi += (size_t)n;
    return name;
}

/* ---- unwinding the copy ------------------------------------------------------------ */

/* Unwinds snap into pcs with a fresh address space (its caches would
 * outlive a dlclose); returns the number of frames, at least the first. */
static unsigned unwind(uintptr_t *pcs, unsigned max, unw_addr_space_t *asp)
{
    *asp = weft__unwind_space();
    unsigned n = 0;
    if (*asp && snap.img.hi != snap.img.lo)
        n = weft__unwind(*asp, &snap.img, pcs, max, 0);
    if (!n)
        pcs[0] = (uintptr_t)snap.img.reg[WEFT__UNW_PC];
    return n ? n : 1;
}

size_t weft__stallbt_write(struct weft__worker *w, uint32_t tick, char *buf, size_t len)
{
    struct out o = { .buf = buf, .len = len };
    if (!w->rt->stall_signal || !len)
        return 0;
    buf[0] = '\0';
    pthread_mutex_lock(&bt_lock);
    struct sigaction cur;
    int tid = atomic_load_explicit(&w->tid, memory_order_relaxed);   /* stored before it ran a coroutine */
    const char *sleep = NULL;
    bool have = false;
    if (bt_refused) {
        out_f(&o, "  (backtrace unavailable: signal %d is the program's, as %s; "
              "WEFT_STALL_SIGNAL picks another)\n", bt_sig, bt_refused);
    } else if (sigaction(bt_sig, NULL, &cur) != 0 || !(cur.sa_flags & SA_SIGINFO) ||
               cur.sa_sigaction != on_stall_signal) {
        out_f(&o, "  (backtrace unavailable: the program has taken signal %d since; "
              "WEFT_STALL_SIGNAL picks another)\n", bt_sig);
    } else if (!snap_free(&o)) {
        /* said why */
    } else if ((sleep = sleeping_in(tid))) {
        have = true;
    } else {
        have = ask(w, tid, &o);
    }
    if (have) {
        uintptr_t pcs[MAX_FRAMES];
        struct weft__symtab st = { .as = NULL };
        unsigned n = unwind(pcs, MAX_FRAMES, &st.as);
        if (sleep)
            out_f(&o, "  (in %s, which a signal would cut short: unwound without one, from the "
                  "stack and instruction pointers alone)\n", sleep);
        else if (snap.tick != tick)
            out_f(&o, "  (worker %u had switched coroutines when the signal came: "
                  "these frames are what it ran then)\n", w->index);
        else if (!snap.in_user)
            out_f(&o, "  (the stall was ending when the signal came: these frames are what "
                  "worker %u ran then)\n", w->index);
        for (unsigned i = 0; i < n; i++) {
            char name[320];
            weft__describe(&st, pcs[i], i > 0, name, sizeof(name));
            out_f(&o, "  #%-2u 0x%016lx %s\n", i, (unsigned long)pcs[i], name);
        }
        if (n == MAX_FRAMES)
            out_f(&o, "  ...\n");
        if (st.as)
            unw_destroy_addr_space(st.as);
    }
    pthread_mutex_unlock(&bt_lock);
    return o.n;
}

#else /* !WEFT_HAVE_LIBUNWIND: the stall signal is always 0, and no report has frames */

int weft__stallbt_start(int sig)
{
    (void)sig;
    return 0;
}

void weft__stallbt_stop(int sig)
{
    (void)sig;
}

size_t weft__stallbt_write(struct weft__worker *w, uint32_t tick, char *buf, size_t len)
{
    (void)w; (void)tick;
    int n = len ? snprintf(buf, len, "  (backtrace unavailable: weft was built without libunwind)\n") : 0;
    return n <= 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

#endif /* WEFT_HAVE_LIBUNWIND */
