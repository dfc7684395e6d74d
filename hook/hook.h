/* SPDX-License-Identifier: MIT */
/*
 * libweft-hook's internals: the table of the C library's own functions, and
 * what the interposers of each file share.
 *
 * The interposers (hook/io.c, fd.c, sleep.c, poll.c, resolve.c, spawn.c) define the
 * C library's names, read, write, poll, sleep, getaddrinfo and the rest, so
 * that code which calls them, unmodified and unaware of weft, suspends only
 * its coroutine where it would have blocked its thread. Each interposer is
 * a libc function and keeps libc's contract: it returns -1 (or the function's
 * own failure value) and sets errno. The helpers behind them follow weft's
 * rule instead and return a negative errno; only the interposer sets errno.
 *
 * Outside a coroutine (a plain thread, a worker between coroutines, a helper
 * thread of weft_offload, a child of fork) every interposer is the C
 * library's call, with two exceptions that concern the file rather than the
 * thread: fcntl(F_GETFL) and ioctl(FIONBIO) hide and keep the O_NONBLOCK
 * that weft set on a pipe or terminal (hook/fd.c), and close() of a
 * descriptor while a runtime is alive is weft_close(), which fails the
 * coroutines waiting on it.
 *
 * No migration inside a hooked call. A coroutine that suspends in a hooked
 * call is pinned to its worker for the call (weft_pin/weft_unpin), so it
 * resumes on the thread it left. Code written for threads keeps the
 * addresses of thread-locals across a call it believes cannot move it:
 * errno, which the compiler may cache, OpenSSL's error queue, an
 * allocator's per-thread cache, a library's "current context". Go can let
 * its goroutines move because no Go code takes such an address; C code
 * does, and the hook's whole point is to run C code unchanged. The cost: a
 * pinned coroutine woken while its worker runs something else waits for
 * that worker rather than run at once on an idle one, and its worker cannot
 * hand it to a thief. Calls made directly to weft (weft_read, ...) are not
 * pinned and migrate freely.
 */
#ifndef WEFT_HOOK_H
#define WEFT_HOOK_H

#include "weft_private.h"

#include <weft.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#define HOOK_API __attribute__((visibility("default")))

/* One per file of interposers, defined there: weft__hook_anchor (real.c)
 * names these, so that a link with libweft-hook.a takes every file. The C
 * library's names would not do: a sanitizer's runtime, linked before the
 * archive, defines them too, and the linker then takes nothing from the
 * archive for them. */
extern const char hook_file_io, hook_file_fd, hook_file_sleep, hook_file_poll, hook_file_resolve,
    hook_file_spawn;

/*
 * The C library's own functions, looked up with dlsym(RTLD_NEXT) once, by a
 * constructor that runs when the hook is loaded (or, for an interposer
 * called before it, by that call). Every entry is set once the table is
 * made; a name the C library lacks stops the program with a message.
 */
struct hook_real {
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*readv)(int, const struct iovec *, int);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*pread)(int, void *, size_t, off_t);
    ssize_t (*pwrite)(int, const void *, size_t, off_t);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*recvmsg)(int, struct msghdr *, int);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*socket)(int, int, int);
    int (*socketpair)(int, int, int, int[2]);
    int (*pipe)(int[2]);
    int (*pipe2)(int[2], int);
    int (*poll)(struct pollfd *, nfds_t, int);
    int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
    int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
    int (*epoll_wait)(int, struct epoll_event *, int, int);
    int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
    unsigned (*sleep)(unsigned);
    int (*usleep)(useconds_t);
    int (*nanosleep)(const struct timespec *, struct timespec *);
    int (*clock_nanosleep)(clockid_t, int, const struct timespec *, struct timespec *);
    int (*sched_yield)(void);
    int (*close)(int);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*fcntl)(int, int, ...);
    int (*ioctl)(int, unsigned long, ...);
    int (*open)(const char *, int, ...);
    int (*openat)(int, const char *, int, ...);
    int (*fsync)(int);
    int (*fdatasync)(int);
    int (*getaddrinfo)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
    int (*getnameinfo)(const struct sockaddr *, socklen_t, char *, socklen_t, char *, socklen_t, int);
    struct hostent *(*gethostbyname)(const char *);
    int (*gethostbyname_r)(const char *, struct hostent *, char *, size_t, struct hostent **, int *);
    int (*posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                       char *const[], char *const[]);
    int (*posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                        char *const[], char *const[]);
    int (*system)(const char *);
    FILE *(*popen)(const char *, const char *);
    int (*pclose)(FILE *);
};

/* The table, made before the first interposer returns. hook/real.c. */
extern struct hook_real hook_real_fns;
void hook_real_init(void);

static inline const struct hook_real *real(void)
{
    if (__builtin_expect(!hook_real_fns.read, 0))
        hook_real_init();
    return &hook_real_fns;
}

/* Whether the caller is a coroutine: the hooked calls then cooperate. */
static inline bool hook_on(void)
{
    return weft_self() != NULL;
}

/* Sets errno from a negative errno and returns -1; returns r itself when it
 * is not negative. For the interposers' return statements. */
static inline long hook_ret(long r)
{
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

/*
 * A hooked call's wait: the coroutine is pinned for the call (see above),
 * and its deadline narrowed to `timeout_ns` from now (0: no timeout of its
 * own, as for a socket without SO_RCVTIMEO), restored when the wait ends.
 * hook_wait_end() returns the call's result r, but where r is -ETIMEDOUT
 * and the call's own timeout, not the caller's weft deadline, ended the
 * wait, -own_err (EAGAIN for SO_RCVTIMEO, as the kernel gives it). A
 * coroutine only.
 */
struct hook_wait {
    uint64_t saved;   /* the coroutine's deadline before the call */
    uint64_t own;     /* the call's own, absolute; 0 = none */
    bool     pinned;  /* weft_pin() returned 0 */
};
void hook_wait_begin(struct hook_wait *hw, uint64_t timeout_ns);
long hook_wait_end(struct hook_wait *hw, long r, int own_err);

/* Runs fn(arg) whole on weft_offload's helper threads, the coroutine pinned
 * and suspended meanwhile (hook/resolve.c, spawn.c). Returns 0, or
 * weft_offload's negative errno: fn did not run. A coroutine only. */
int hook_offload(weft_fn fn, void *arg);

/* glibc's fortified entries (hook/io.c, poll.c), which its headers declare
 * only to a program built with _FORTIFY_SOURCE, and its report of an
 * overflow they find. */
ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags, struct sockaddr *addr,
                       socklen_t *alen);
ssize_t __pread_chk(int fd, void *buf, size_t len, off_t off, size_t buflen);
ssize_t __pread64_chk(int fd, void *buf, size_t len, off_t off, size_t buflen);
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask, size_t fdslen);
void __chk_fail(void) __attribute__((noreturn));

/* ---- shared by the files ---- */

/* fd's kind hint (weft_private.h), learnt with fstat on first use. */
int hook_fd_kind(int fd);
/* Whether fd's file is O_NONBLOCK by its owner's wish, from the file status
 * flags `fl` (fcntl F_GETFL) and the table. */
bool hook_owner_nonblock(int fd, int fl);
/* A socket's SO_RCVTIMEO (dir 0) or SO_SNDTIMEO (dir 1) in ns, 0 if none. */
uint64_t hook_sock_timeout(int fd, int dir);
/* The hooked poll, in a coroutine, waiting at most timeout_ns (UINT64_MAX:
 * no limit). Returns poll's count or a negative errno. hook/poll.c. */
int hook_poll_wait(struct pollfd *fds, nfds_t n, uint64_t timeout_ns);

#endif /* WEFT_HOOK_H */
