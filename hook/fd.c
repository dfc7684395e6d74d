/* SPDX-License-Identifier: MIT */
/*
 * The hooked descriptor management: close, dup, dup2, dup3, fcntl, ioctl,
 * socket, socketpair, pipe, pipe2, open, openat, fsync and fdatasync.
 *
 * Their part in the hook is the descriptor table (weft_private.h): a call
 * that makes a descriptor (socket, socketpair, pipe, pipe2, open, openat,
 * accept, dup, F_DUPFD) forgets what was known of its number, a duplicate
 * takes its original's record, and close forgets it. The owner's view of
 * O_NONBLOCK is kept apart from weft's, from any thread:
 *   - fcntl(F_GETFL) hides the O_NONBLOCK weft set (and only it);
 *   - fcntl(F_SETFL) and ioctl(FIONBIO) with O_NONBLOCK make it the owner's;
 *     without it, on a file where weft set it, they keep weft's flag in the
 *     kernel, and the hooked calls block as the owner asked (hook/io.c).
 *
 * close(): while a runtime is alive, or for a descriptor handed to weft
 * (weft_own), weft_close(), which first fails every coroutine waiting on the
 * descriptor with EBADF, as a close with threads blocked on it cannot, and
 * ends the hand-over; otherwise the C library's close. dup2 and dup3 onto a
 * number handed to weft end its hand-over first. It returns 0 where
 * close(2) reported EINTR (the descriptor is released all the same, and a
 * retry could close another thread's new one).
 *
 * open, openat, fsync and fdatasync have no readiness: in a coroutine they run
 * whole on weft_offload, so that a slow disk or a FIFO waiting for its other
 * end holds a helper thread rather than the worker (fsync is weft_fsync,
 * which is a request on the worker's ring where there is one). open keeps
 * its flags as given: weft_open, which adds O_CLOEXEC, is not used.
 */
#include "hook.h"

#include <fcntl.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <unistd.h>

const char hook_file_fd = 0;   /* for weft__hook_anchor (hook.h) */

HOOK_API int close(int fd)
{
    weft__hook_fd_forget(fd);
    if (!hook_on() && !weft__hook_runtimes() && !weft__hook_fd_owned(fd))
        return real()->close(fd);
    return (int)hook_ret(weft_close(fd));
}

HOOK_API int dup(int fd)
{
    int r = real()->dup(fd);
    if (r >= 0)
        weft__hook_fd_copy(fd, r);
    return r;
}

HOOK_API int dup2(int fd, int to)
{
    if (fd != to)
        weft__hook_fd_disown(to);   /* its file is closed by the call */
    int r = real()->dup2(fd, to);
    if (r >= 0)
        weft__hook_fd_copy(fd, r);
    return r;
}

HOOK_API int dup3(int fd, int to, int flags)
{
    if (fd != to)
        weft__hook_fd_disown(to);   /* as dup2 */
    int r = real()->dup3(fd, to, flags);
    if (r >= 0)
        weft__hook_fd_copy(fd, r);
    return r;
}

/* fcntl's third argument, an int or a pointer by the command, read as the
 * C library reads it: one machine word. */
static int fcntl_word(int fd, int cmd, unsigned long arg)
{
    const struct hook_real *f = real();
    int r;
    switch (cmd) {
    case F_GETFL:
        r = f->fcntl(fd, cmd);
        if (r >= 0 && (r & O_NONBLOCK) && weft__hook_fd_weft_nonblock(fd))
            r &= ~O_NONBLOCK;
        return r;
    case F_SETFL:
        if (arg & O_NONBLOCK) {
            weft__hook_fd_owner_nonblock(fd);
        } else if (weft__hook_fd_weft_nonblock(fd)) {
            arg |= O_NONBLOCK;   /* weft's stays in the kernel; the owner's view is blocking */
        }
        return f->fcntl(fd, cmd, (int)arg);
    case F_DUPFD:
    case F_DUPFD_CLOEXEC:
        r = f->fcntl(fd, cmd, (int)arg);
        if (r >= 0)
            weft__hook_fd_copy(fd, r);
        return r;
    default:
        return f->fcntl(fd, cmd, arg);
    }
}

HOOK_API int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    return fcntl_word(fd, cmd, arg);
}

/* Where off_t has 64 bits already, the headers name fcntl fcntl64 under
 * _FILE_OFFSET_BITS=64 (glibc 2.28 and later); it is the same call. */
HOOK_API int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    return fcntl_word(fd, cmd, arg);
}

HOOK_API int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (req == FIONBIO && arg) {
        if (*(const int *)arg) {
            weft__hook_fd_owner_nonblock(fd);
        } else if (weft__hook_fd_weft_nonblock(fd)) {
            /* The owner asks for blocking: that is their view already, and
             * weft's flag stays. The call still checks the descriptor. */
            return real()->fcntl(fd, F_GETFL) < 0 ? -1 : 0;
        }
    }
    return real()->ioctl(fd, req, arg);
}

/* ---- calls that make descriptors ---------------------------------------------- */

HOOK_API int socket(int domain, int type, int proto)
{
    int r = real()->socket(domain, type, proto);
    if (r >= 0) {
        weft__hook_fd_forget(r);
        weft__hook_fd_set_kind(r, WEFT__FD_SOCKET);
    }
    return r;
}

HOOK_API int socketpair(int domain, int type, int proto, int sv[2])
{
    int r = real()->socketpair(domain, type, proto, sv);
    if (r == 0) {
        for (int i = 0; i < 2; i++) {
            weft__hook_fd_forget(sv[i]);
            weft__hook_fd_set_kind(sv[i], WEFT__FD_SOCKET);
        }
    }
    return r;
}

static void new_pipe(const int p[2])
{
    for (int i = 0; i < 2; i++) {
        weft__hook_fd_forget(p[i]);
        weft__hook_fd_set_kind(p[i], WEFT__FD_PIPE);
    }
}

HOOK_API int pipe(int p[2])
{
    int r = real()->pipe(p);
    if (r == 0)
        new_pipe(p);
    return r;
}

HOOK_API int pipe2(int p[2], int flags)
{
    int r = real()->pipe2(p, flags);
    if (r == 0)
        new_pipe(p);
    return r;
}

/* ---- calls without readiness: on a helper thread in a coroutine --------------- */

struct file_call {
    int         op;      /* 0 openat, 1 fsync, 2 fdatasync */
    int         dirfd;
    const char *path;
    int         flags;
    mode_t      mode;
    int         ret;     /* the result, or a negative errno */
};

static void *file_call_run(void *arg)
{
    struct file_call *c = arg;
    const struct hook_real *f = real();
    int r;
    switch (c->op) {
    case 0:  r = f->openat(c->dirfd, c->path, c->flags, c->mode); break;
    case 1:  r = f->fsync(c->dirfd); break;
    default: r = f->fdatasync(c->dirfd); break;
    }
    c->ret = r < 0 ? -errno : r;
    return NULL;
}

/* Runs c on a helper thread, the coroutine pinned meanwhile. Returns its
 * result or weft_offload's negative errno (it did not run). */
static int offloaded(struct file_call *c)
{
    struct hook_wait hw;
    hook_wait_begin(&hw, 0);
    int err = (int)hook_wait_end(&hw, weft_offload(file_call_run, c, NULL), ETIMEDOUT);
    return err < 0 ? err : c->ret;
}

/* O_CREAT and O_TMPFILE take a mode; without them there is no third argument. */
static bool takes_mode(int flags)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

static int open_at(int dirfd, const char *path, int flags, mode_t mode)
{
    int r;
    if (!hook_on()) {
        r = real()->openat(dirfd, path, flags, mode);
    } else {
        struct file_call c = { .op = 0, .dirfd = dirfd, .path = path, .flags = flags, .mode = mode };
        r = (int)hook_ret(offloaded(&c));
    }
    if (r >= 0)
        weft__hook_fd_forget(r);
    return r;
}

HOOK_API int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (takes_mode(flags)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    return open_at(AT_FDCWD, path, flags, mode);
}

HOOK_API int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (takes_mode(flags)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    return open_at(dirfd, path, flags, mode);
}

/* open64 and openat64: the names the headers use under _FILE_OFFSET_BITS=64;
 * where off_t has 64 bits, as on every target weft supports, they are open
 * and openat. */
_Static_assert(sizeof(off_t) == 8, "open64 is open only where off_t has 64 bits");
HOOK_API int open64(const char *path, int flags, ...) __attribute__((alias("open")));
HOOK_API int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

HOOK_API int fsync(int fd)
{
    if (!hook_on())
        return real()->fsync(fd);
    struct hook_wait hw;
    hook_wait_begin(&hw, 0);
    return (int)hook_ret(hook_wait_end(&hw, weft_fsync(fd), ETIMEDOUT));
}

HOOK_API int fdatasync(int fd)
{
    if (!hook_on())
        return real()->fdatasync(fd);
    return (int)hook_ret(offloaded(&(struct file_call){ .op = 2, .dirfd = fd }));
}
