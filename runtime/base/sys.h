/* SPDX-License-Identifier: MIT */
/*
 * Raw system calls, for every libc function that a libc interposition
 * library (a hook that makes blocking calls of the program cooperative) would
 * replace: read, write, send, poll, close and the rest. weft uses these and
 * never the libc names, so that in a process where such a hook is linked
 * (shared, static or LD_PRELOAD) weft's own calls reach the kernel and never
 * recurse into the hook, which calls weft.
 *
 * Each makes its system call through syscall(2), which no hook replaces, and
 * returns the result or a negative errno (errno is left as syscall(2) set
 * it; callers read only the return value). Calls a hook does not replace
 * (epoll_create1, epoll_ctl, eventfd, mmap, futex, ...) stay libc calls.
 * fcntl is a function of sys.c rather than an inline, so that the fault
 * injection of tests/test_faults.c can wrap it at link time; sched_yield
 * too, so that the spin loops that call it stay small, and the epoll wait
 * in nanoseconds, whose fallback is more than an inline should be.
 */
#ifndef WEFT_SYS_H
#define WEFT_SYS_H

#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* A system call's result, or its negative errno. */
static inline long weft__sys_ret(long r)
{
    return r < 0 ? -errno : r;
}

static inline ssize_t weft__sys_read(int fd, void *buf, size_t len)
{
    return weft__sys_ret(syscall(SYS_read, fd, buf, len));
}

static inline ssize_t weft__sys_write(int fd, const void *buf, size_t len)
{
    return weft__sys_ret(syscall(SYS_write, fd, buf, len));
}

static inline ssize_t weft__sys_readv(int fd, const struct iovec *iov, int n)
{
    return weft__sys_ret(syscall(SYS_readv, fd, iov, n));
}

static inline ssize_t weft__sys_writev(int fd, const struct iovec *iov, int n)
{
    return weft__sys_ret(syscall(SYS_writev, fd, iov, n));
}

static inline ssize_t weft__sys_pread(int fd, void *buf, size_t len, off_t off)
{
    return weft__sys_ret(syscall(SYS_pread64, fd, buf, len, off));
}

static inline ssize_t weft__sys_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    return weft__sys_ret(syscall(SYS_pwrite64, fd, buf, len, off));
}

static inline ssize_t weft__sys_recvfrom(int fd, void *buf, size_t len, int flags,
                                         struct sockaddr *addr, socklen_t *alen)
{
    return weft__sys_ret(syscall(SYS_recvfrom, fd, buf, len, flags, addr, alen));
}

static inline ssize_t weft__sys_sendto(int fd, const void *buf, size_t len, int flags,
                                       const struct sockaddr *addr, socklen_t alen)
{
    return weft__sys_ret(syscall(SYS_sendto, fd, buf, len, flags, addr, alen));
}

static inline ssize_t weft__sys_recv(int fd, void *buf, size_t len, int flags)
{
    return weft__sys_recvfrom(fd, buf, len, flags, NULL, NULL);
}

static inline ssize_t weft__sys_send(int fd, const void *buf, size_t len, int flags)
{
    return weft__sys_sendto(fd, buf, len, flags, NULL, 0);
}

static inline ssize_t weft__sys_recvmsg(int fd, struct msghdr *msg, int flags)
{
    return weft__sys_ret(syscall(SYS_recvmsg, fd, msg, flags));
}

static inline ssize_t weft__sys_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return weft__sys_ret(syscall(SYS_sendmsg, fd, msg, flags));
}

static inline int weft__sys_accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
    return (int)weft__sys_ret(syscall(SYS_accept4, fd, addr, alen, flags));
}

static inline int weft__sys_connect(int fd, const struct sockaddr *addr, socklen_t alen)
{
    return (int)weft__sys_ret(syscall(SYS_connect, fd, addr, alen));
}

static inline int weft__sys_socket(int domain, int type, int protocol)
{
    return (int)weft__sys_ret(syscall(SYS_socket, domain, type, protocol));
}

static inline int weft__sys_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    return (int)weft__sys_ret(syscall(SYS_getsockopt, fd, level, name, val, len));
}

static inline int weft__sys_getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    return (int)weft__sys_ret(syscall(SYS_getpeername, fd, addr, len));
}

static inline int weft__sys_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    return (int)weft__sys_ret(syscall(SYS_setsockopt, fd, level, name, val, len));
}

static inline ssize_t weft__sys_sendfile(int out_fd, int in_fd, off_t *off, size_t count)
{
    return weft__sys_ret(syscall(SYS_sendfile, out_fd, in_fd, off, count));
}

/* signalfd4: a descriptor that reads the signals of `set` pending on the
 * reading thread or its process. */
static inline int weft__sys_signalfd(int fd, const sigset_t *set, int flags)
{
    return (int)weft__sys_ret(syscall(SYS_signalfd4, fd, set, (size_t)_NSIG / 8, flags));
}

/* sigtimedwait; ts NULL: no limit. */
static inline int weft__sys_sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *ts)
{
    return (int)weft__sys_ret(syscall(SYS_rt_sigtimedwait, set, info, ts, (size_t)_NSIG / 8));
}

/* wait4 with no resource usage: waitpid(2). */
static inline int weft__sys_waitpid(pid_t pid, int *status, int options)
{
    return (int)weft__sys_ret(syscall(SYS_wait4, pid, status, options, NULL));
}

/* pidfd_open (Linux 5.3): a descriptor that becomes readable when pid exits.
 * The number is the same on every architecture of the unified table. */
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
static inline int weft__sys_pidfd_open(pid_t pid, unsigned flags)
{
    return (int)weft__sys_ret(syscall(SYS_pidfd_open, pid, flags));
}

/* poll(2) with a timeout in milliseconds (-1: none), as ppoll: AArch64 has
 * no poll system call. */
static inline int weft__sys_poll(struct pollfd *fds, nfds_t n, int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
    return (int)weft__sys_ret(syscall(SYS_ppoll, fds, n, ms < 0 ? NULL : &ts, NULL, (size_t)_NSIG / 8));
}

static inline int weft__sys_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts,
                                  const sigset_t *mask)
{
    return (int)weft__sys_ret(syscall(SYS_ppoll, fds, n, ts, mask, (size_t)_NSIG / 8));
}

/* epoll_wait as epoll_pwait with no mask: AArch64 has no epoll_wait. */
static inline int weft__sys_epoll_wait(int epfd, struct epoll_event *ev, int n, int ms)
{
    return (int)weft__sys_ret(syscall(SYS_epoll_pwait, epfd, ev, n, ms, NULL, (size_t)_NSIG / 8));
}

/* epoll_wait for at most `ns` nanoseconds: epoll_pwait2 where the kernel has
 * it (5.11), else rounded up to milliseconds. */
int weft__sys_epoll_wait_ns(int epfd, struct epoll_event *ev, int n, uint64_t ns);

static inline int weft__sys_open(const char *path, int flags, mode_t mode)
{
    return (int)weft__sys_ret(syscall(SYS_openat, AT_FDCWD, path, flags, mode));
}

static inline int weft__sys_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    return (int)weft__sys_ret(syscall(SYS_openat, dirfd, path, flags, mode));
}

static inline int weft__sys_close(int fd)
{
    return (int)weft__sys_ret(syscall(SYS_close, fd));
}

static inline int weft__sys_dup(int fd)
{
    return (int)weft__sys_ret(syscall(SYS_dup, fd));
}

static inline int weft__sys_dup3(int fd, int to, int flags)
{
    return (int)weft__sys_ret(syscall(SYS_dup3, fd, to, flags));
}

static inline int weft__sys_pipe2(int fds[2], int flags)
{
    return (int)weft__sys_ret(syscall(SYS_pipe2, fds, flags));
}

static inline int weft__sys_fsync(int fd)
{
    return (int)weft__sys_ret(syscall(SYS_fsync, fd));
}

static inline int weft__sys_fdatasync(int fd)
{
    return (int)weft__sys_ret(syscall(SYS_fdatasync, fd));
}

static inline int weft__sys_ioctl(int fd, unsigned long req, void *arg)
{
    return (int)weft__sys_ret(syscall(SYS_ioctl, fd, req, arg));
}

/* sys.c: out of line, as its callers are spin loops on a rare path that
 * the compiler should still inline into their hot callers. */
int weft__sys_sched_yield(void);

static inline int weft__sys_clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
                                            struct timespec *rem)
{
    return (int)weft__sys_ret(syscall(SYS_clock_nanosleep, clock, flags, req, rem));
}

static inline int weft__sys_nanosleep(const struct timespec *req, struct timespec *rem)
{
    return weft__sys_clock_nanosleep(CLOCK_REALTIME, 0, req, rem);
}

/* fcntl with an int argument or none (every command weft uses). sys.c. */
int weft__sys_fcntl(int fd, int cmd, long arg);

#endif /* WEFT_SYS_H */
