/* SPDX-License-Identifier: MIT */
/*
 * The dump signal (weft_config.dump_signal, WEFT_DUMP_SIGNAL): a signal that
 * writes weft_dump to stderr and goes on; core/dump.c takes and writes the
 * dump itself.
 */
#include "core.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

/* ---- the dump signal -------------------------------------------------------------- */

/*
 * A signal handler may not take locks or allocate, and a dump does both, so
 * the handler only bumps a word and wakes a thread of ours, which writes the
 * dump to stderr. The thread lives while some runtime has a dump signal; all
 * such runtimes share the one signal, since a dump covers every runtime.
 * sig_word: +2 for each signal; odd tells the thread to end.
 */
static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned sig_users;             /* runtimes with the dump signal; under sig_lock */
static int sig_num;                    /* the signal; under sig_lock */
static struct sigaction sig_old;       /* its disposition before; under sig_lock */
static pthread_t sig_thread;           /* under sig_lock */
static _Atomic uint32_t sig_word;

static void on_dump_signal(int sig)
{
    int saved = errno;
    atomic_fetch_add_explicit(&sig_word, 2, memory_order_release);   /* pairs with the thread's acquire */
    weft__futex_wake(&sig_word, 1);
    errno = saved;
}

static void *dump_thread(void *arg)
{
    uint32_t served = (uint32_t)(uintptr_t)arg;
    prctl(PR_SET_NAME, (unsigned long)"weft-dump", 0ul, 0ul, 0ul);
    for (;;) {
        uint32_t v = atomic_load_explicit(&sig_word, memory_order_acquire);   /* pairs with the handler */
        if ((v & ~1u) != served) {   /* a signal not yet served, even if told to end */
            served = v & ~1u;
            weft_dump(STDERR_FILENO);
            continue;
        }
        if (v & 1)
            return NULL;
        weft__futex_wait(&sig_word, v);
    }
}

int weft__signal_named(const char *s)
{
    if (*s >= '0' && *s <= '9') {
        char *end;
        long n = strtol(s, &end, 10);
        return *end || n <= 0 || n >= NSIG ? 0 : (int)n;
    }
    if (strncmp(s, "SIG", 3) == 0)
        s += 3;
    /* Real-time signals by their place: RTMIN+n, RTMAX-n (sigabbrev_np
     * names none of them). */
    bool min = strncmp(s, "RTMIN", 5) == 0, max = strncmp(s, "RTMAX", 5) == 0;
    if (min || max) {
        long n = 0;
        if (s[5]) {
            char *end;
            if (s[5] != (min ? '+' : '-') || s[6] < '0' || s[6] > '9')
                return 0;
            n = strtol(s + 6, &end, 10);
            if (*end || n > SIGRTMAX - SIGRTMIN)
                return 0;
        }
        return min ? SIGRTMIN + (int)n : SIGRTMAX - (int)n;
    }
    for (int n = 1; n < NSIG; n++) {
        const char *abbrev = sigabbrev_np(n);
        if (abbrev && strcmp(abbrev, s) == 0)
            return n;
    }
    return 0;
}

bool weft__signal_usable(int sig)
{
    return sig > 0 && sig < NSIG && sig != SIGKILL && sig != SIGSTOP && sig != SIGSEGV &&
           sig != SIGBUS && sig != SIGILL && sig != SIGFPE &&
           (sig < 32 || sig >= SIGRTMIN);   /* 32 and 33 are the C library's own (glibc) */
}

int weft__dump_signal_pick(int configured)
{
    const char *env = getenv("WEFT_DUMP_SIGNAL");
    int sig = configured;
    if (env && *env) {
        int named = weft__signal_named(env);
        sig = strcmp(env, "0") == 0 ? 0 : named ? named : -1;
    }
    if (sig && !weft__signal_usable(sig))
        return -EINVAL;
    return sig;
}

int weft__dump_signal_start(int sig)
{
    if (!sig)
        return 0;
    int err = 0;
    pthread_mutex_lock(&sig_lock);
    if (sig_users && sig_num != sig) {
        err = -EBUSY;
    } else if (!sig_users) {
        uint32_t v = atomic_load_explicit(&sig_word, memory_order_relaxed) & ~1u;
        atomic_store_explicit(&sig_word, v, memory_order_relaxed);   /* before the thread exists */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);   /* the thread takes no signal */
        err = -pthread_create(&sig_thread, NULL, dump_thread, (void *)(uintptr_t)v);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_dump_signal;
        sa.sa_flags = SA_RESTART | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sig_num = sig;   /* before the handler: a child forked in between gives it back */
        if (!err && sigaction(sig, &sa, &sig_old) != 0) {
            err = -errno;
            atomic_fetch_add_explicit(&sig_word, 1, memory_order_release);   /* the thread ends */
            weft__futex_wake(&sig_word, 1);
            pthread_join(sig_thread, NULL);
        }
        if (err)
            sig_num = 0;
    }
    if (!err)
        sig_users++;
    pthread_mutex_unlock(&sig_lock);
    return err;
}

void weft__dump_signal_forget(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    sig_lock = fresh;
    struct sigaction cur;
    if (sig_num && sigaction(sig_num, NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) &&
        cur.sa_handler == on_dump_signal)
        sigaction(sig_num, &sig_old, NULL);   /* ours, and nothing here would serve it */
    sig_users = 0;
    sig_num = 0;
}

void weft__dump_signal_stop(int sig)
{
    if (!sig)
        return;
    pthread_mutex_lock(&sig_lock);
    if (--sig_users == 0) {
        sigaction(sig_num, &sig_old, NULL);   /* the program's disposition again */
        atomic_fetch_add_explicit(&sig_word, 1, memory_order_release);   /* odd: the thread ends */
        weft__futex_wake(&sig_word, 1);
        pthread_join(sig_thread, NULL);
        sig_num = 0;
    }
    pthread_mutex_unlock(&sig_lock);
}
