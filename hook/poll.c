/* SPDX-License-Identifier: MIT */
/*
 * The hooked waits for readiness: poll, ppoll, select, epoll_wait and
 * epoll_pwait.
 *
 * In a coroutine, a wait with a timeout of zero is the C library's call. Any
 * other first looks without waiting (the call with a zero timeout); if
 * nothing is ready, the coroutine waits in weft_poll() and looks again, until
 * something is ready or the time is up:
 *   - one descriptor: weft_poll() on it;
 *   - several: weft_poll() on an epoll set made for the call, holding each
 *     descriptor for what the caller asked (level-triggered), which is
 *     readable when any of them is ready. The set costs a few system calls,
 *     paid only by a call that waits. A descriptor epoll refuses (a regular
 *     file, always ready) was reported by the first look already;
 *   - epoll_wait on the caller's own epoll set: weft_poll() on that set.
 * What the call returns always comes from the kernel's own poll or
 * epoll_wait, made without waiting after the wait: the revents, the events
 * and POLLNVAL for a closed descriptor are exactly the C library's. select
 * waits on past what poll reports and select does not (wait_fds).
 *
 * The timeout ends the wait with 0 (nothing ready); the coroutine's weft
 * deadline and cancellation end it with ETIMEDOUT and ECANCELED. A signal
 * does not (see hook/sleep.c). ppoll and epoll_pwait apply their signal mask
 * to the first look only: a coroutine's wait is not in the kernel, and its
 * worker's mask is the worker's.
 */
#include "hook.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

const char hook_file_poll = 0;   /* for weft__hook_anchor (hook.h) */

static short weft_events(short ev)
{
    return ev & (POLLIN | POLLOUT | POLLPRI);
}

/* The sets of select that a descriptor asked for `ev` and found `re` goes
 * in (bit 0 readfds, 1 writefds, 2 exceptfds), as Linux's select counts:
 * a hang-up or an error is readable, an error writable, and exceptfds is
 * urgent data alone. */
static unsigned select_sets(short ev, short re)
{
    return ((ev & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR)) ? 1u : 0u) |
           ((ev & POLLOUT) && (re & (POLLOUT | POLLERR)) ? 2u : 0u) | ((ev & POLLPRI) && (re & POLLPRI) ? 4u : 0u);
}

/* Whether a look found something select reports: a set to mark, or a
 * closed descriptor (EBADF). */
static bool select_found(const struct pollfd *fds, nfds_t n)
{
    for (nfds_t i = 0; i < n; i++)
        if ((fds[i].revents & POLLNVAL) || select_sets(fds[i].events, fds[i].revents))
            return true;
    return false;
}

/* An epoll set holding fds for what each asks, with `et` (EPOLLET or 0).
 * Returns it, or a negative errno. */
static int make_set(const struct pollfd *fds, nfds_t n, uint32_t et)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return -errno;
    weft__hook_fd_forget(ep);
    for (nfds_t i = 0; i < n; i++) {
        if (fds[i].fd < 0)
            continue;
        uint32_t ev = (fds[i].events & POLLIN ? EPOLLIN : 0) | (fds[i].events & POLLOUT ? EPOLLOUT : 0) |
                      (fds[i].events & POLLPRI ? EPOLLPRI : 0) |
                      (fds[i].events & POLLRDHUP ? EPOLLRDHUP : 0);
        struct epoll_event e = { .events = ev | et, .data.fd = fds[i].fd };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i].fd, &e) == 0)
            continue;
        if (errno == EEXIST) {   /* the same descriptor twice: wait for both */
            /* Read back is impossible; ask for everything of the union. */
            e.events = EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLRDHUP | et;
            epoll_ctl(ep, EPOLL_CTL_MOD, fds[i].fd, &e);
        }
        /* EPERM (a regular file) is always ready; EBADF was POLLNVAL at the
         * first look. Neither needs the set. */
    }
    return ep;
}

/*
 * hook_poll_wait, or with `sel` select's wait, which poll's own answer does
 * not always end: a hang-up or an error on a descriptor in exceptfds alone
 * is something for poll and nothing for select, which waits on. Such a
 * descriptor stays ready for epoll too, so select's set is edge-triggered
 * and emptied after each wake-up: it wakes the coroutine again only when
 * something happens to one of the descriptors, and each look after a
 * wake-up sees all that is ready.
 */
static int wait_fds(struct pollfd *fds, nfds_t n, uint64_t timeout_ns, bool sel)
{
    const struct hook_real *f = real();
    int r = f->poll(fds, n, 0);
    if (r < 0 || (r > 0 && (!sel || select_found(fds, n))))
        return r < 0 ? -errno : r;
    nfds_t live = 0, one = 0;
    for (nfds_t i = 0; i < n; i++) {
        if (fds[i].fd >= 0) {
            live++;
            one = i;
        }
    }
    struct hook_wait hw;
    hook_wait_begin(&hw, timeout_ns == UINT64_MAX ? 0 : timeout_ns ? timeout_ns : 1);
    int ep = -1;
    int wait_fd = -1;
    short wait_ev = POLLIN;
    if (live == 1 && weft_events(fds[one].events) && !sel) {
        wait_fd = fds[one].fd;
        wait_ev = weft_events(fds[one].events);
    } else if (live > 0) {
        ep = make_set(fds, n, sel ? EPOLLET : 0);
        if (ep < 0) {
            r = ep;
            goto out;
        }
        wait_fd = ep;
    }
    for (;;) {
        int e = wait_fd >= 0 ? weft_poll(wait_fd, wait_ev) : weft_sleep(UINT64_MAX / 2);
        if (sel && ep >= 0) {
            struct epoll_event seen[64];
            f->epoll_wait(ep, seen, 64, 0);   /* what is left wakes the next wait at once */
        }
        r = f->poll(fds, n, 0);
        if (r < 0 || (r > 0 && (!sel || select_found(fds, n)))) {
            r = r < 0 ? -errno : r;
            break;
        }
        if (e < 0 && e != -EBADF) {   /* -EBADF: a descriptor closed; the look said what */
            r = e;
            break;
        }
    }
out:
    if (ep >= 0)
        weft_close(ep);   /* a ring may hold requests on it: never close(2) alone */
    r = (int)hook_wait_end(&hw, r, 0);   /* the call's own time is up: 0, nothing ready */
    return r;
}

int hook_poll_wait(struct pollfd *fds, nfds_t n, uint64_t timeout_ns)
{
    return wait_fds(fds, n, timeout_ns, false);
}

HOOK_API int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    if (!hook_on() || timeout == 0)
        return real()->poll(fds, n, timeout);
    uint64_t ns = timeout < 0 ? UINT64_MAX : (uint64_t)timeout * 1000000u;
    return (int)hook_ret(hook_poll_wait(fds, n, ns));
}

/* Called instead of poll and ppoll by a program built with _FORTIFY_SOURCE
 * (see __read_chk in hook/io.c): the array must hold n entries. */
HOOK_API int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        __chk_fail();
    return poll(fds, n, timeout);
}

static uint64_t ts_ns(const struct timespec *ts)
{
    if (!ts)
        return UINT64_MAX;
    if (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000)
        return 0;   /* the first look reports EINVAL */
    if ((uint64_t)ts->tv_sec > UINT64_MAX / 4000000000u)
        return UINT64_MAX;
    return (uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec;
}

HOOK_API int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
    uint64_t ns = ts_ns(ts);
    if (!hook_on() || ns == 0)
        return real()->ppoll(fds, n, ts, mask);
    /* The first look, under the caller's mask: a signal it lets in ends it. */
    struct timespec zero = { 0, 0 };
    int r = real()->ppoll(fds, n, &zero, mask);
    if (r != 0)
        return r;
    return (int)hook_ret(hook_poll_wait(fds, n, ns));
}

HOOK_API int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask,
                         size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        __chk_fail();
    return ppoll(fds, n, ts, mask);
}

/* select on hook_poll_wait: the sets become pollfds and back. */
static int select_wait(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, uint64_t ns)
{
    struct pollfd small[64], *p = small;
    int n = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short ev = (rd && FD_ISSET(fd, rd) ? POLLIN : 0) | (wr && FD_ISSET(fd, wr) ? POLLOUT : 0) |
                   (ex && FD_ISSET(fd, ex) ? POLLPRI : 0);
        if (!ev)
            continue;
        if (n == 64 && p == small) {
            p = malloc(FD_SETSIZE * sizeof *p);
            if (!p)
                return -ENOMEM;
            memcpy(p, small, sizeof small);
        }
        p[n++] = (struct pollfd){ .fd = fd, .events = ev };
    }
    int r = wait_fds(p, (nfds_t)n, ns, true);
    bool found = r > 0;   /* else the revents are a look's that found nothing to report */
    if (found) {
        r = 0;
        for (int i = 0; i < n && r >= 0; i++) {
            short re = p[i].revents;
            if (re & POLLNVAL)
                r = -EBADF;
        }
    }
    if (r >= 0) {
        if (rd)
            FD_ZERO(rd);
        if (wr)
            FD_ZERO(wr);
        if (ex)
            FD_ZERO(ex);
        for (int i = 0; i < n && found; i++) {
            unsigned sets = select_sets(p[i].events, p[i].revents);
            if (sets & 1u)
                FD_SET(p[i].fd, rd);
            if (sets & 2u)
                FD_SET(p[i].fd, wr);
            if (sets & 4u)
                FD_SET(p[i].fd, ex);
            r += (int)__builtin_popcount(sets);
        }
    }
    if (p != small)
        free(p);
    return r;
}

HOOK_API int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
    if (!hook_on() || (tv && tv->tv_sec == 0 && tv->tv_usec == 0) || nfds < 0 || nfds > FD_SETSIZE ||
        (tv && (tv->tv_sec < 0 || tv->tv_usec < 0)))
        return real()->select(nfds, rd, wr, ex, tv);   /* and its EINVAL */
    uint64_t ns = UINT64_MAX;
    if (tv)
        ns = (uint64_t)tv->tv_sec * 1000000000u + (uint64_t)tv->tv_usec * 1000u;
    uint64_t start = weft_now();
    int r = select_wait(nfds, rd, wr, ex, ns);
    if (tv) {
        /* Linux's select leaves the time not slept in *tv. */
        uint64_t spent = weft_now() - start, left = spent < ns ? ns - spent : 0;
        tv->tv_sec = (time_t)(left / 1000000000u);
        tv->tv_usec = (suseconds_t)(left % 1000000000u / 1000u);
    }
    return (int)hook_ret(r);
}

/* epoll_wait on weft_poll of the caller's set. */
static int epoll_wait_hooked(int ep, struct epoll_event *ev, int max, int timeout, const sigset_t *mask)
{
    const struct hook_real *f = real();
    int r = f->epoll_pwait(ep, ev, max, 0, mask);
    if (r != 0)
        return r < 0 ? -errno : r;
    struct hook_wait hw;
    hook_wait_begin(&hw, timeout < 0 ? 0 : (uint64_t)timeout * 1000000u);
    for (;;) {
        int e = weft_poll(ep, POLLIN);
        r = f->epoll_wait(ep, ev, max, 0);
        if (r != 0) {
            r = r < 0 ? -errno : r;
            break;
        }
        if (e < 0) {
            r = e;
            break;
        }
    }
    return (int)hook_wait_end(&hw, r, 0);
}

HOOK_API int epoll_wait(int ep, struct epoll_event *ev, int max, int timeout)
{
    if (!hook_on() || timeout == 0)
        return real()->epoll_wait(ep, ev, max, timeout);
    return (int)hook_ret(epoll_wait_hooked(ep, ev, max, timeout, NULL));
}

HOOK_API int epoll_pwait(int ep, struct epoll_event *ev, int max, int timeout, const sigset_t *mask)
{
    if (!hook_on() || timeout == 0)
        return real()->epoll_pwait(ep, ev, max, timeout, mask);
    return (int)hook_ret(epoll_wait_hooked(ep, ev, max, timeout, mask));
}
