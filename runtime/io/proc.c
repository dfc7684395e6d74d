/* SPDX-License-Identifier: MIT */
/*
 * Signals and children: weft_sigwait and weft_waitpid, which wait for what
 * the kernel says through a descriptor made for the call (a signalfd, a
 * pidfd) where it can, and look again and again where it cannot. They wait
 * on a descriptor as weft_poll does (weft__poll_as, io/io.c).
 */
#include "backend.h"

#include "base/sys.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>

/* ---- signals --------------------------------------------------------------------- */

/* A signalfd's record as the siginfo_t that sigwaitinfo(2) fills. The
 * fields of siginfo_t overlap by kind, so which are written follows the
 * kernel's own choice of layout (siginfo_layout in kernel/signal.c): a code
 * the kernel gives a signal of its own (a fault, a child's change, a
 * readiness, a seccomp trap) picks the signal's layout; otherwise a timer,
 * a readiness (SI_SIGIO), a queued or other user code (below 0), or a kill. */
static void siginfo_from(siginfo_t *info, const struct signalfd_siginfo *s)
{
    memset(info, 0, sizeof *info);
    int sig = (int)s->ssi_signo, code = s->ssi_code;
    info->si_signo = sig;
    info->si_errno = s->ssi_errno;
    info->si_code = code;
    bool kernel_code = code > SI_USER && code < SI_KERNEL;   /* a code the kernel gives */
    if (kernel_code && (sig == SIGILL || sig == SIGFPE || sig == SIGSEGV || sig == SIGBUS || sig == SIGTRAP)) {
        info->si_addr = (void *)(uintptr_t)s->ssi_addr;
        info->si_addr_lsb = (short)s->ssi_addr_lsb;
    } else if (kernel_code && sig == SIGCHLD) {
        info->si_pid = (pid_t)s->ssi_pid;
        info->si_uid = (uid_t)s->ssi_uid;
        info->si_status = s->ssi_status;
        info->si_utime = (clock_t)s->ssi_utime;
        info->si_stime = (clock_t)s->ssi_stime;
    } else if (kernel_code && sig == SIGSYS) {
        info->si_call_addr = (void *)(uintptr_t)s->ssi_call_addr;
        info->si_syscall = s->ssi_syscall;
        info->si_arch = s->ssi_arch;
    } else if (kernel_code || code == SI_SIGIO) {
        info->si_band = (long)s->ssi_band;
        info->si_fd = s->ssi_fd;
    } else if (code == SI_TIMER) {
        info->si_timerid = (int)s->ssi_tid;
        info->si_overrun = (int)s->ssi_overrun;
        info->si_value.sival_ptr = (void *)(uintptr_t)s->ssi_ptr;
    } else {
        info->si_pid = (pid_t)s->ssi_pid;
        info->si_uid = (uid_t)s->ssi_uid;
        if (code < 0)   /* sigqueue, a message queue, AIO, tkill: the value, 0 where none was sent */
            info->si_value.sival_ptr = (void *)(uintptr_t)s->ssi_ptr;
    }
}

/* sigwaitinfo from a plain thread, within its deadline. */
static int plain_sigwait(const sigset_t *set, siginfo_t *info)
{
    uint64_t deadline = weft__thread_deadline();
    for (;;) {
        struct timespec ts, *tp = NULL;
        if (deadline) {
            uint64_t now = weft_now();
            uint64_t left = deadline > now ? deadline - now : 0;
            ts = (struct timespec){ .tv_sec = (time_t)(left / 1000000000u), .tv_nsec = (long)(left % 1000000000u) };
            tp = &ts;
        }
        int r = weft__sys_sigtimedwait(set, info, tp);
        if (r == -EAGAIN)
            return -ETIMEDOUT;
        if (r != -EINTR)
            return r;
    }
}

/*
 * A coroutine reads the signal from a signalfd of its own, made for the call
 * and read without blocking once the worker's backend reports it readable, as
 * any descriptor: the worker goes on running the other coroutines, and the
 * deadline, cancellation and both backends come with weft_poll. Rejected: a
 * helper thread in sigwaitinfo, which nothing could interrupt at the deadline;
 * one signalfd per runtime, whose single reader would have to hand signals to
 * the callers that want them, for a call a program makes rarely.
 */
/* The lowest signal in set, which weft_dump names as the one awaited. */
static int first_signal(const sigset_t *set)
{
    for (int s = 1; s < NSIG; s++)
        if (sigismember(set, s) == 1)
            return s;
    return 0;
}

int weft_sigwait(const sigset_t *set, siginfo_t *info)
{
    if (!set)
        return -EFAULT;
    sigset_t want = *set;
    sigdelset(&want, SIGKILL);
    sigdelset(&want, SIGSTOP);
    if (!first_signal(&want))   /* not sigisemptyset(), which glibc 2.36 gets wrong for real-time signals */
        return -EINVAL;   /* no signal it could ever return: a plain thread would wait for ever */
    siginfo_t scratch;
    if (!info)
        info = &scratch;
    struct weft__worker *w = weft__io_coroutine();
    if (!w)
        return plain_sigwait(&want, info);
    if (weft__io_cancelled(w))
        return -ECANCELED;
    int sfd = weft__sys_signalfd(-1, &want, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        return sfd;
    int r;
    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = weft__sys_read(sfd, &si, sizeof si);
        if (n == (ssize_t)sizeof si) {
            siginfo_from(info, &si);
            r = (int)si.ssi_signo;
            break;
        }
        if (n != -EAGAIN && n != -EINTR) {
            r = n < 0 ? (int)n : -EIO;
            break;
        }
        /* Not pending, or another thread took it first: wait for the next. */
        r = weft__poll_as(sfd, POLLIN, WEFT__WHY_SIGNAL, (uintptr_t)first_signal(&want));
        if (r < 0)
            break;
    }
    weft_close(sfd);
    return r;
}

/* ---- children -------------------------------------------------------------------- */

/* A waitpid with no descriptor to wait on looks again this often, the gap
 * doubling from the first to the last. */
#define CHILD_LOOK_FIRST_NS 1000000u
#define CHILD_LOOK_MAX_NS   16000000u

/*
 * A child given by its pid, for its exit alone (no WUNTRACED, WCONTINUED),
 * is awaited on a pidfd, which becomes readable when the child exits: through
 * weft_poll, so the worker runs the others meanwhile, and the deadline and
 * cancellation hold at any time. Any other wait (any child, a process group,
 * a stop or a continue, a kernel before 5.3 or a sandbox without pidfd_open)
 * has no descriptor to wait on, and neither has a wait whose pidfd_open
 * fails for want of a descriptor or memory: the coroutine looks with WNOHANG,
 * sleeping between looks, the gaps growing to CHILD_LOOK_MAX_NS, so that the
 * deadline and cancellation still hold at any time, at the price of noticing
 * the child up to that late. (A blocking waitpid on a helper thread would
 * notice at once but could not be ended; SIGCHLD is the program's, not
 * weft's.) A plain thread looks the same way within its deadline, and
 * without one makes the blocking waitpid.
 */
int weft_waitpid(pid_t pid, int *status, int options)
{
    struct weft__worker *w = weft__io_coroutine();
    if (w && weft__io_cancelled(w))
        return -ECANCELED;
    int r;
    while ((r = weft__sys_waitpid(pid, status, options | WNOHANG)) == -EINTR)
        ;
    if (r != 0 || (options & WNOHANG))
        return r;   /* reaped, failed (-ECHILD, -EINVAL), or asked not to wait */
    if (pid > 0 && !(options & (WUNTRACED | WCONTINUED))) {
        int pfd = weft__sys_pidfd_open(pid, 0);
        if (pfd >= 0) {
            for (;;) {
                r = weft__poll_as(pfd, POLLIN, WEFT__WHY_CHILD, (uintptr_t)pid);
                if (r >= 0) {
                    while ((r = weft__sys_waitpid(pid, status, options | WNOHANG)) == -EINTR)
                        ;
                }
                if (r != 0)
                    break;
            }
            weft_close(pfd);
            return r;
        }
        if (pfd == -ESRCH)
            return -ECHILD;   /* reaped meanwhile by another caller */
        /* No pidfd (an old kernel, a sandbox, no descriptor or memory left):
         * the looks below. */
    }
    if (!w && !weft__thread_deadline()) {
        while ((r = weft__sys_waitpid(pid, status, options)) == -EINTR)
            ;
        return r;
    }
    weft__wait_span_begin();   /* the looks are one wait to weft_dump */
    for (uint64_t gap = CHILD_LOOK_FIRST_NS;; gap = gap * 2 < CHILD_LOOK_MAX_NS ? gap * 2 : CHILD_LOOK_MAX_NS) {
        r = weft__sleep_why(gap, WEFT__WHY_CHILD, (uintptr_t)(intptr_t)pid);
        if (r)
            break;
        while ((r = weft__sys_waitpid(pid, status, options | WNOHANG)) == -EINTR)
            ;
        if (r != 0)
            break;
    }
    weft__wait_span_end();
    return r;
}
