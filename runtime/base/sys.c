/* SPDX-License-Identifier: MIT */
/*
 * The raw system calls that are functions rather than inlines (base/sys.h):
 * fcntl, which tests/test_faults.c wraps at link time to make it fail,
 * sched_yield, called from spin loops that must stay small, and the epoll
 * wait with a timeout in nanoseconds, which has a fallback.
 */
#include "sys.h"

#include <stdatomic.h>
#include <time.h>

int weft__sys_fcntl(int fd, int cmd, long arg)
{
    return (int)weft__sys_ret(syscall(SYS_fcntl, fd, cmd, arg));
}

int weft__sys_sched_yield(void)
{
    return (int)weft__sys_ret(syscall(SYS_sched_yield));
}

int weft__sys_epoll_wait_ns(int epfd, struct epoll_event *ev, int n, uint64_t ns)
{
#ifdef SYS_epoll_pwait2
    static _Atomic bool no_pwait2;   /* relaxed: a hint; a second ENOSYS costs nothing */
    /* Valgrind 3.19 does not know epoll_pwait2 and would say so at each call. */
    if (!weft__on_valgrind() && !atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u) };
        int r = (int)weft__sys_ret(syscall(SYS_epoll_pwait2, epfd, ev, n, &ts, NULL, (size_t)_NSIG / 8));
        /* ENOSYS, or a seccomp filter's EPERM for a call it does not know:
         * epoll_wait from now on (which reports a real error too). */
        if (r >= 0 || r == -EINTR)
            return r;
        atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
    }
#endif
    uint64_t ms = (ns + 999999u) / 1000000u;
    return weft__sys_epoll_wait(epfd, ev, n, ms > INT32_MAX ? INT32_MAX : (int)ms);
}
