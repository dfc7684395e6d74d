/* SPDX-License-Identifier: MIT */
/*
 * The hooked sleeps and yield: sleep, usleep, nanosleep, clock_nanosleep and
 * sched_yield.
 *
 * In a coroutine a sleep is weft_sleep(): the coroutine waits on its
 * runtime's timers and its worker runs others. The coroutine's weft deadline
 * and cancellation end it early, and then it reports what an interrupted
 * sleep reports: EINTR and the time left (nanosleep, clock_nanosleep), -1
 * and EINTR (usleep), the seconds left (sleep). A signal does not end it:
 * the worker thread is not asleep in the kernel, and a handler runs on it
 * between coroutines, so a hooked sleep behaves as if every handler had
 * SA_RESTART. Where the timer cannot be armed (no memory), the C library's
 * sleep runs and holds the worker, rather than fail a call that cannot fail.
 *
 * clock_nanosleep sleeps on CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME
 * and CLOCK_TAI, relative or absolute (TIMER_ABSTIME: the time to go is
 * measured on that clock when the call is made, so a later step of the
 * realtime clock does not move the wake-up). Other clocks (CPU-time clocks)
 * are the C library's call.
 *
 * sched_yield in a coroutine is weft_yield(): the other runnable coroutines
 * of its worker run first, and the caller resumes on that worker. It never
 * fails.
 */
#include "hook.h"

#include <limits.h>
#include <sched.h>

const char hook_file_sleep = 0;   /* for weft__hook_anchor (hook.h) */

#define NS 1000000000ull

/* Sleeps ns in a coroutine. Returns 0, -EINTR with the time left in *left
 * (deadline or cancellation; else *left is 0), or -ENOMEM. */
static int coroutine_sleep(uint64_t ns, uint64_t *left)
{
    struct hook_wait hw;
    hook_wait_begin(&hw, 0);
    *left = 0;
    uint64_t until = weft_now() + ns;
    int r = (int)hook_wait_end(&hw, weft_sleep(ns), ETIMEDOUT);
    if (r == -ETIMEDOUT || r == -ECANCELED) {
        uint64_t now = weft_now();
        *left = until > now ? until - now : 0;
        return -EINTR;
    }
    return r;
}

static bool valid(const struct timespec *ts)
{
    return ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < (long)NS;
}

static uint64_t to_ns(const struct timespec *ts)
{
    if ((uint64_t)ts->tv_sec >= UINT64_MAX / NS - 1)
        return UINT64_MAX / 2;   /* for ever, as far as anyone waits */
    return (uint64_t)ts->tv_sec * NS + (uint64_t)ts->tv_nsec;
}

static void to_ts(uint64_t ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ns / NS);
    ts->tv_nsec = (long)(ns % NS);
}

HOOK_API int nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (!hook_on() || !req || !valid(req))
        return real()->nanosleep(req, rem);   /* and EFAULT or EINVAL, as libc says */
    uint64_t left;
    int r = coroutine_sleep(to_ns(req), &left);
    if (r == -ENOMEM)
        return real()->nanosleep(req, rem);
    if (r == -EINTR && rem)
        to_ts(left, rem);
    return (int)hook_ret(r);
}

HOOK_API int clock_nanosleep(clockid_t clk, int flags, const struct timespec *req, struct timespec *rem)
{
    bool known = clk == CLOCK_MONOTONIC || clk == CLOCK_REALTIME || clk == CLOCK_BOOTTIME || clk == CLOCK_TAI;
    if (!hook_on() || !known || !req || !valid(req))
        return real()->clock_nanosleep(clk, flags, req, rem);
    uint64_t ns = to_ns(req);
    if (flags & TIMER_ABSTIME) {
        struct timespec now;
        clock_gettime(clk, &now);
        uint64_t n = to_ns(&now);
        ns = ns > n ? ns - n : 0;
    }
    uint64_t left;
    int r = coroutine_sleep(ns, &left);
    if (r == -ENOMEM)
        return real()->clock_nanosleep(clk, flags, req, rem);
    if (r == -EINTR && rem && !(flags & TIMER_ABSTIME))
        to_ts(left, rem);
    return -r;   /* clock_nanosleep returns the error number itself */
}

HOOK_API int usleep(useconds_t us)
{
    if (!hook_on())
        return real()->usleep(us);
    uint64_t left;
    int r = coroutine_sleep((uint64_t)us * 1000u, &left);
    if (r == -ENOMEM)
        return real()->usleep(us);
    return (int)hook_ret(r);
}

HOOK_API unsigned sleep(unsigned s)
{
    if (!hook_on())
        return real()->sleep(s);
    uint64_t left;
    int r = coroutine_sleep((uint64_t)s * NS, &left);
    if (r == -ENOMEM)
        return real()->sleep(s);
    return r == -EINTR ? (unsigned)((left + NS - 1) / NS) : 0;
}

HOOK_API int sched_yield(void)
{
    if (!hook_on())
        return real()->sched_yield();
    /* Pinned, as every hooked call that may suspend (hook.h): the caller
     * may hold a thread-local's address across it. */
    bool pinned = weft_pin() == 0;
    weft_yield();
    if (pinned)
        weft_unpin();
    return 0;
}
