/* SPDX-License-Identifier: MIT */
/*
 * What a worker's thread runs right now, taken from that thread: for the
 * stall report's backtrace, where a coroutine that holds its worker
 * (core/monitor.c) is stuck, so that the report points at the blocking call
 * or the long loop; and for weft_dump, the frames of the coroutines running
 * as it is taken (core/dump.c).
 *
 * Taking it. Only the thread itself can see its own registers, so the asker
 * (the monitor, or the thread taking a dump) sends it a signal, the stall
 * signal (weft_config.stall_signal, WEFT_STALL_SIGNAL; SIGRTMAX-3 by
 * default), to that one thread with rt_tgsigqueueinfo, carrying the
 * request's number. The handler does nothing a handler may not: it checks
 * that its worker has that request open, copies the interrupted registers
 * from its ucontext_t and the interrupted stack from the stack pointer up
 * (process_vm_readv, which cannot fault, and which the sanitizers see as a
 * write of defined bytes) into its worker's snapshot, notes the worker's
 * schedule count and the coroutine it runs, marks the request done and wakes
 * the asker's futex. It takes no lock, allocates nothing, keeps errno. The
 * asker waits for it at most WAIT_NS, then unwinds the copy with the dump's
 * unwinder (core/unwind.c: the registers as libunwind numbers them, the
 * accessors that read the copy) and names the frames as the dump does,
 * outside the handler and, for the monitor, outside the exclusion of
 * core/monitor.c: the unwind tables are found through dl_iterate_phdr, which
 * takes the loader's lock.
 *
 * The requests. One asker at a time in the process: bt_lock is held from the
 * first request to the last frame unwound, so that a dump and a stall report
 * never share a snapshot half-read (a report is rare, each runtime reports
 * at most one stall a second, and a dump waits WAIT_NS at most). Each worker
 * has its own request word, w->bt_req, the request's number times four plus
 * its phase, and its own snapshot, w->bt_snap, which only its handler (or the
 * asker, while no request is open) writes; so a dump asks every worker at
 * once and waits once for them all:
 *   1. the asker, holding bt_lock, finds w's phase IDLE or DONE (it waits for
 *      a FILLING one to end), and stores (n, ASKED) with release;
 *   2. the handler loads w->bt_req with acquire; only if it is (n, ASKED), n
 *      being the number its signal carries and w the thread's own worker, does
 *      it move it to (n, FILLING) by CAS, fill in the snapshot, store
 *      (n, DONE) with release, then bump bt_filled with release and wake it;
 *   3. the asker waits on bt_filled for (n, DONE) with acquire, then reads
 *      the snapshot. At its deadline it moves (n, ASKED) back to (n, IDLE) by
 *      CAS, so that a signal delivered later (the thread blocked it, or was in
 *      an uninterruptible sleep) finds its request closed and does nothing;
 *      if the CAS fails a handler is filling, and the asker waits for it once
 *      more. A snapshot is freed only with its worker, whose thread has ended:
 *      a handler late past both waits still writes into memory of its own.
 * Whether the thread still runs the coroutine asked about when the signal
 * arrives is not certain: the coroutine may have switched out or ended
 * meanwhile. The handler copies whatever runs, and notes the schedule count
 * and the coroutine; a count other than the one the asker saw says the frames
 * are of something else, and the report or the dump says so.
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
 * (to take it with sigwait) keeps it, and the report and the dump say that
 * their backtraces are missing and why. A handler the program installs later
 * is not replaced; the asker sees it and sends nothing. The last runtime gives the old
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
#if defined(__x86_64__)
#define RED_ZONE     ((size_t)128)         /* bytes below the stack pointer a signal leaves alone */
#else
#define RED_ZONE     ((size_t)0)
#endif

int weft__stall_signal_pick(int configured, uint64_t stall_ns, int dump_signal)
{
    if (configured < -1 || configured >= NSIG)
        return -EINVAL;
    int sig = configured == 0 ? SIGRTMAX - 3 : configured < 0 ? 0 : configured;
    const char *env = getenv("WEFT_STALL_SIGNAL");
    if (env && *env) {
        int named = weft__signal_named(env);
        sig = strcmp(env, "0") == 0 ? 0 : named ? named : -1;
    }
    if ((sig && !weft__signal_usable(sig)) || (sig && sig == dump_signal))
        return -EINVAL;
    if (stall_ns == UINT64_MAX || !WEFT_HAVE_LIBUNWIND)
        return 0;
    return sig;
}

#if WEFT_HAVE_LIBUNWIND

enum { IDLE, ASKED, FILLING, DONE };   /* a request's phase: the low two bits of w->bt_req */

static pthread_mutex_t bt_lock = PTHREAD_MUTEX_INITIALIZER;   /* the one asker; see above */
static unsigned bt_users;              /* runtimes with a stall signal; under bt_lock */
static int bt_sig;                     /* their signal; under bt_lock */
static const char *bt_refused;         /* why it is the program's, or NULL; under bt_lock */
static struct sigaction bt_old;        /* its disposition before; under bt_lock */
static uint32_t bt_number;             /* the last request's number; under bt_lock */
static _Atomic uint32_t bt_filled;     /* futex word: bumped by each handler that filled a
                                        * snapshot, which the asker waits on */

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

/*
 * Copies the stack at sp into img: up to above bytes from sp up, and the red
 * zone below it, which the kernel leaves alone when it builds a signal's
 * frame. The red zone matters to an interrupted epilogue: its registers are
 * popped, the call-frame information still names their saved copies just
 * below sp, and the thread, running on once the handler returns, writes over
 * them before the asker unwinds. A red zone that cannot be read (a guard page
 * below) is left out.
 */
static void copy_stack(struct weft__image *img, uintptr_t sp, size_t above)
{
    if (above > STACK_COPY)
        above = STACK_COPY;
    img->lo = img->hi = sp;
    ssize_t n = -1;
    if (RED_ZONE && sp >= RED_ZONE)
        n = weft__copy_some(img->buf, sp - RED_ZONE, RED_ZONE + above);
    if (n >= (ssize_t)RED_ZONE)
        img->lo = sp - RED_ZONE;
    else
        n = weft__copy_some(img->buf, sp, above);
    img->hi = img->lo + (n > 0 ? (size_t)n : 0);   /* a partial copy stops at an unmapped page */
}

/* Fills s from the interrupted context. The worker's thread, in the
 * handler, in the FILLING phase. */
static void capture(struct weft__worker *w, struct weft__snap *s, const ucontext_t *uc)
{
    unsigned char *buf = s->img.buf;
    weft__image_from_ucontext(&s->img, uc);
    uintptr_t sp = (uintptr_t)s->img.reg[WEFT__UNW_SP];
    s->img.buf = buf;
    copy_stack(&s->img, sp, stack_top(w, sp) - sp);
    s->tick = atomic_load_explicit(&w->tick, memory_order_relaxed);      /* its own thread */
    s->in_user = atomic_load_explicit(&w->in_user, memory_order_relaxed);
    s->current = (uintptr_t)w->current;
    s->asleep = NULL;
}

static void on_stall_signal(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    int saved = errno;
    struct weft__worker *w = weft__worker_self();
    uint32_t want = ((uint32_t)si->si_value.sival_int << 2) | ASKED;
    if (si->si_code == SI_QUEUE && w &&
        atomic_load_explicit(&w->bt_req, memory_order_acquire) == want &&   /* pairs with send_signal's release */
        atomic_compare_exchange_strong_explicit(&w->bt_req, &want, (want & ~3u) | FILLING,
                                                memory_order_acquire, memory_order_relaxed)) {
        capture(w, w->bt_snap, uc);
        atomic_store_explicit(&w->bt_req, (want & ~3u) | DONE, memory_order_release);   /* publishes the snapshot */
        atomic_fetch_add_explicit(&bt_filled, 1, memory_order_release);   /* after DONE: an asker that saw
                                                                          * the old count sees DONE */
        weft__futex_wake(&bt_filled, 1);
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
        bt_sig = sig;   /* before the handler: a child forked in between gives it back */
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
            /* On the worker's alternate stack: a coroutine may be near
             * the end of its own. Not under Valgrind, whose memcheck then
             * loses track of which bytes of the interrupted coroutine's
             * stack are addressable and reports the next context switch
             * there as invalid accesses (test_dump's migration test under
             * scripts/dev valgrind shows it); delivered on the
             * coroutine's stack, the frame is Valgrind's own, and the
             * handler needs little more. */
            sa.sa_flags = SA_SIGINFO | SA_RESTART | (weft__on_valgrind() ? 0 : SA_ONSTACK);
            sigemptyset(&sa.sa_mask);
            if (sigaction(sig, &sa, NULL) != 0)
                bt_refused = "it cannot be handled";
        }
    }
    if (!err)
        bt_users++;
    pthread_mutex_unlock(&bt_lock);
    return err;
}

/* The last user is gone: the program's disposition again, if ours is still
 * in place (a refused signal never had ours). Holds bt_lock, or is the fork
 * handler. */
static void bt_release(void)
{
    struct sigaction cur;
    if (sigaction(bt_sig, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
        cur.sa_sigaction == on_stall_signal)
        sigaction(bt_sig, &bt_old, NULL);
    bt_sig = 0;
    bt_refused = NULL;
}

void weft__stallbt_stop(int sig)
{
    if (!sig)
        return;
    pthread_mutex_lock(&bt_lock);
    if (--bt_users == 0)
        bt_release();
    pthread_mutex_unlock(&bt_lock);
}

void weft__stallbt_forget(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    bt_lock = fresh;
    if (bt_sig)
        bt_release();
    bt_users = 0;
}

/* ---- what a worker's thread runs, from /proc ---------------------------------------- */

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
 * then w's snapshot holds the call's name, the stack and instruction
 * pointers and a copy of the stack, which stays still while it sleeps, or
 * no copy (img.hi == img.lo) if it woke while copied. False if it runs, or
 * sleeps in a call that restarts, or /proc cannot say. Holds bt_lock; w's
 * snapshot is free.
 */
static bool sleeping_in(struct weft__worker *w, int tid)
{
    char before[256], after[256];
    long nr;
    unsigned long long a[8];   /* six arguments, sp, pc */
    if (!syscall_line(tid, before, sizeof(before)) ||
        sscanf(before, "%ld %llx %llx %llx %llx %llx %llx %llx %llx", &nr, &a[0], &a[1], &a[2],
               &a[3], &a[4], &a[5], &a[6], &a[7]) != 9)
        return false;   /* "running", or blocked outside a system call */
    const char *name = NULL;
    for (size_t i = 0; i < sizeof(never_restarted) / sizeof(never_restarted[0]); i++)
        if (never_restarted[i].nr == nr)
            name = never_restarted[i].name;
    if (!name || (nr == SYS_futex && !a[3]))   /* a futex wait without a limit restarts */
        return false;
    struct weft__snap *s = w->bt_snap;
    s->img = (struct weft__image){ .buf = s->img.buf };
    s->img.reg[WEFT__UNW_SP] = a[6];   /* the others unknown: taken without a signal */
    s->img.reg[WEFT__UNW_PC] = a[7];
    s->img.have[WEFT__UNW_SP] = s->img.have[WEFT__UNW_PC] = true;
    s->tick = atomic_load_explicit(&w->tick, memory_order_relaxed);   /* still while it sleeps */
    s->in_user = atomic_load_explicit(&w->in_user, memory_order_relaxed);
    weft_task *cur = NULL;
    s->current = weft__copy_in(&cur, (uintptr_t)&w->current, sizeof(cur)) ? 0 : (uintptr_t)cur;
    s->asleep = name;
    copy_stack(&s->img, (uintptr_t)a[6], STACK_COPY);
    if (!syscall_line(tid, after, sizeof(after)) || strcmp(before, after) != 0)
        s->img.lo = s->img.hi = (uintptr_t)a[6];   /* it woke meanwhile: no copy */
    return true;
}

/* ---- asking ------------------------------------------------------------------------ */

bool weft__snap_lock(const weft_rt *rt, char *why, size_t len)
{
    (void)rt;   /* all runtimes with a stall signal share bt_sig */
    pthread_mutex_lock(&bt_lock);
    struct sigaction cur;
    if (bt_refused)
        snprintf(why, len, "backtrace unavailable: signal %d is the program's, as %s; "
                 "WEFT_STALL_SIGNAL picks another", bt_sig, bt_refused);
    else if (sigaction(bt_sig, NULL, &cur) != 0 || !(cur.sa_flags & SA_SIGINFO) ||
             cur.sa_sigaction != on_stall_signal)
        snprintf(why, len, "backtrace unavailable: the program has taken signal %d since; "
                 "WEFT_STALL_SIGNAL picks another", bt_sig);
    else
        return true;
    pthread_mutex_unlock(&bt_lock);
    return false;
}

void weft__snap_unlock(void)
{
    pthread_mutex_unlock(&bt_lock);
}

/* A worker's snapshot and its stack copy, in one block; NULL without memory. */
static struct weft__snap *snap_new(void)
{
    struct weft__snap *s = calloc(1, sizeof(*s) + RED_ZONE + STACK_COPY);
    if (s)
        s->img.buf = (unsigned char *)(s + 1);
    return s;
}

/* Waits, until `until`, for the handler of an earlier request to w that is
 * still filling w's snapshot. Returns whether it is free. Holds bt_lock. */
static bool snap_free(struct weft__worker *w, uint64_t until)
{
    for (;;) {
        uint32_t seen = atomic_load_explicit(&bt_filled, memory_order_acquire);   /* pairs with the handler's */
        if ((atomic_load_explicit(&w->bt_req, memory_order_acquire) & 3) != FILLING)   /* likewise */
            return true;
        if (weft_now() >= until)
            return false;
        weft__futex_wait_until(&bt_filled, seen, until);
    }
}

/* Opens request n to w and sends the signal to its thread (tid). Returns
 * whether it went; else why says why not. Holds bt_lock; w's snapshot is free. */
static bool send_signal(struct weft__worker *w, int tid, uint32_t n, char *why, size_t len)
{
    atomic_store_explicit(&w->bt_req, n << 2 | ASKED, memory_order_release);   /* publishes w->bt_snap to
                                                                               * the handler's acquire */
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    si.si_signo = bt_sig;
    si.si_code = SI_QUEUE;
    si.si_pid = getpid();
    si.si_uid = getuid();
    si.si_value.sival_int = (int)n;
    if (syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, bt_sig, &si) == 0)
        return true;
    int err = errno;
    uint32_t asked = n << 2 | ASKED;
    atomic_compare_exchange_strong_explicit(&w->bt_req, &asked, n << 2 | IDLE,
                                            memory_order_relaxed, memory_order_relaxed);
    snprintf(why, len, "backtrace unavailable: signal %d could not be sent: %s", bt_sig, strerror(err));
    return false;
}

/* Moves each open request of a[0..n) that its handler filled to a[i].snap;
 * returns whether any is still open. */
static bool collect(struct weft__ask *a, size_t n, uint32_t num)
{
    bool open = false;
    for (size_t i = 0; i < n; i++) {
        if (!a[i].open)
            continue;
        if (atomic_load_explicit(&a[i].w->bt_req, memory_order_acquire) == (num << 2 | DONE)) {   /* pairs
                                                                          * with the handler's release */
            a[i].open = false;
            a[i].snap = a[i].w->bt_snap;
        } else {
            open = true;
        }
    }
    return open;
}

/* Waits until `until` for the open requests of a[0..n). Holds bt_lock. */
static void wait_filled(struct weft__ask *a, size_t n, uint32_t num, uint64_t until)
{
    for (;;) {
        uint32_t seen = atomic_load_explicit(&bt_filled, memory_order_acquire);   /* pairs with the handler's */
        if (!collect(a, n, num) || weft_now() >= until)
            return;
        weft__futex_wait_until(&bt_filled, seen, until);
    }
}

void weft__snap_take(struct weft__ask *a, size_t n)
{
    uint32_t num = bt_number = (bt_number + 1) & (UINT32_MAX >> 3);   /* fits a positive int */
    uint64_t until = weft_now() + WAIT_NS;
    for (size_t i = 0; i < n; i++) {
        struct weft__worker *w = a[i].w;
        a[i].snap = NULL;
        a[i].open = false;
        a[i].why[0] = '\0';
        if (!w->bt_snap && !(w->bt_snap = snap_new())) {
            snprintf(a[i].why, sizeof(a[i].why), "backtrace unavailable: out of memory");
            continue;
        }
        if (!snap_free(w, until)) {
            snprintf(a[i].why, sizeof(a[i].why), "backtrace unavailable: an earlier one is still being taken");
            continue;
        }
        int tid = atomic_load_explicit(&w->tid, memory_order_relaxed);   /* stored before it ran a coroutine */
        if (sleeping_in(w, tid))
            a[i].snap = w->bt_snap;
        else
            a[i].open = send_signal(w, tid, num, a[i].why, sizeof(a[i].why));
    }
    /* Every request is out: one wait for them all. At the deadline each
     * request still open is moved back from ASKED to IDLE, so that a signal
     * delivered later (the thread blocked it, or was in an uninterruptible
     * sleep) finds it closed and does nothing; where that fails a handler is
     * filling, and it is waited for once more. */
    for (int round = 0; round < 2; round++) {
        wait_filled(a, n, num, until);
        bool filling = false;
        for (size_t i = 0; i < n; i++) {
            uint32_t asked = num << 2 | ASKED;
            if (!a[i].open)
                continue;
            if (atomic_compare_exchange_strong_explicit(&a[i].w->bt_req, &asked, num << 2 | IDLE,
                                                        memory_order_relaxed, memory_order_relaxed)) {
                a[i].open = false;
                snprintf(a[i].why, sizeof(a[i].why), "backtrace unavailable: worker %u did not take "
                         "signal %d within %u ms: it blocks the signal, or sleeps where signals wait",
                         a[i].w->index, bt_sig, (unsigned)(WAIT_NS / 1000000u));
            } else {
                filling = true;
            }
        }
        if (!filling)
            break;
        until = weft_now() + WAIT_NS;
    }
    for (size_t i = 0; i < n; i++) {
        if (!a[i].open)
            continue;
        a[i].open = false;   /* its handler finishes later, into w's own snapshot */
        snprintf(a[i].why, sizeof(a[i].why), "backtrace unavailable: worker %u's handler did not "
                 "finish within %u ms", a[i].w->index, (unsigned)(2 * WAIT_NS / 1000000u));
    }
}

/* ---- unwinding the copy, and the stall report ------------------------------------- */

unsigned weft__snap_unwind(unw_addr_space_t as, struct weft__snap *s, uintptr_t *pcs, unsigned max)
{
    unsigned n = 0;
    if (as && s->img.hi != s->img.lo)
        n = weft__unwind(as, &s->img, pcs, max, 0);
    if (!n)
        pcs[0] = (uintptr_t)s->img.reg[WEFT__UNW_PC];
    return n ? n : 1;
}

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

size_t weft__stallbt_write(struct weft__worker *w, uint32_t tick, char *buf, size_t len)
{
    struct out o = { .buf = buf, .len = len };
    if (!w->rt->stall_signal || !len)
        return 0;
    buf[0] = '\0';
    struct weft__ask a = { .w = w };
    if (!weft__snap_lock(w->rt, a.why, sizeof(a.why))) {
        out_f(&o, "  (%s)\n", a.why);
        return o.n;
    }
    weft__snap_take(&a, 1);
    struct weft__snap *s = a.snap;
    if (s) {
        uintptr_t pcs[MAX_FRAMES];
        /* A fresh address space: its caches would outlive a dlclose. */
        struct weft__symtab st = { .as = weft__unwind_space() };
        unsigned n = weft__snap_unwind(st.as, s, pcs, MAX_FRAMES);
        if (s->asleep)
            out_f(&o, "  (in %s, which a signal would cut short: unwound without one, from the "
                  "stack and instruction pointers alone)\n", s->asleep);
        else if (s->tick != tick)
            out_f(&o, "  (worker %u had switched coroutines when the signal came: "
                  "these frames are what it ran then)\n", w->index);
        else if (!s->in_user)
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
    } else {
        out_f(&o, "  (%s)\n", a.why);
    }
    weft__snap_unlock();
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

void weft__stallbt_forget(void)
{
}

size_t weft__stallbt_write(struct weft__worker *w, uint32_t tick, char *buf, size_t len)
{
    (void)w; (void)tick;
    int n = len ? snprintf(buf, len, "  (backtrace unavailable: weft was built without libunwind)\n") : 0;
    return n <= 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

#endif /* WEFT_HAVE_LIBUNWIND */
