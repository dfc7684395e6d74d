/* SPDX-License-Identifier: MIT */
/*
 * The table of the C library's own functions, behind the interposers, and
 * what the interposers of every file share: the wait of a hooked call, the
 * kind hint, the owner's O_NONBLOCK and a socket's timeouts.
 *
 * The table is made by a constructor when the hook is loaded, before main and
 * before any thread of the program; an interposer called earlier, from
 * another library's constructor, makes it itself (the lookups are idempotent,
 * so two threads doing so at once store the same values). dlsym(RTLD_NEXT)
 * finds the next definition after this object in the lookup order: the C
 * library's, whether the hook is a shared library linked or preloaded, or an
 * archive linked into the executable. A program linked with -static has no
 * dynamic linker and no RTLD_NEXT: the hook does not support it, and says so.
 *
 * dlsym may allocate (its error string): none of the names it is asked for
 * here is an allocator, and none of the interposers is called by dlsym, so
 * the lookups cannot recurse.
 */
#include "hook.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct hook_real hook_real_fns;

static void *lookup(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        /* A raw write: stdio and write() are the interposers, whose table
         * this is. */
        static const char msg[] = "libweft-hook: a function of the C library was not found "
                                  "(a program linked with -static cannot use the hook)\n";
        syscall(SYS_write, STDERR_FILENO, msg, sizeof msg - 1);
        abort();
    }
    return f;
}

#define GET(name) (f.name = (__typeof__(f.name))lookup(#name))

static void code_span_give(void);

__attribute__((constructor)) void hook_real_init(void)
{
    struct hook_real f;
    GET(read);
    GET(write);
    GET(readv);
    GET(writev);
    GET(pread);
    GET(pwrite);
    GET(recv);
    GET(send);
    GET(recvfrom);
    GET(sendto);
    GET(recvmsg);
    GET(sendmsg);
    GET(accept);
    GET(accept4);
    GET(connect);
    GET(socket);
    GET(socketpair);
    GET(pipe);
    GET(pipe2);
    GET(poll);
    GET(ppoll);
    GET(select);
    GET(epoll_wait);
    GET(epoll_pwait);
    GET(sleep);
    GET(usleep);
    GET(nanosleep);
    GET(clock_nanosleep);
    GET(sched_yield);
    GET(close);
    GET(dup);
    GET(dup2);
    GET(dup3);
    GET(fcntl);
    GET(ioctl);
    GET(open);
    GET(openat);
    GET(fsync);
    GET(fdatasync);
    GET(getaddrinfo);
    GET(getnameinfo);
    GET(gethostbyname);
    GET(gethostbyname_r);
    GET(posix_spawn);
    GET(posix_spawnp);
    GET(system);
    GET(popen);
    GET(pclose);
    /* `read` last, published after the rest: real() tests it. */
    ssize_t (*rd)(int, void *, size_t) = f.read;
    f.read = NULL;
    hook_real_fns = f;
    __atomic_store_n(&hook_real_fns.read, rd, __ATOMIC_RELEASE);   /* pairs with real()'s test */
    code_span_give();
}

/* ---- where the hook's code lies ------------------------------------------------ */

/*
 * weft_dump's summary counts a frame of the hook's as weft's, so that it names
 * the program's call of read or sleep, not the hook's wait below it
 * (weft__hook_code_span). Loaded as libweft-hook.so, the hook's code is its
 * object's executable segment. Linked from libweft-hook.a, its files lie
 * together among the program's code, from the lowest to the highest of a
 * function of each: the program's own link binds an interposer's name to the
 * hook's definition (a sanitizer's runtime, which defines the same names,
 * comes after the executable). Not the constructor, which the compiler puts
 * with every object's start-up code, apart from the rest.
 */
static void code_span_give(void)
{
    uintptr_t lo, hi;
    int shared = weft__hook_code_segment((uintptr_t)hook_wait_begin, &lo, &hi);
    if (shared < 0)
        return;
    if (!shared) {
        const uintptr_t fns[] = {   /* real.c, poll.c, io.c, fd.c, sleep.c, resolve.c */
            (uintptr_t)hook_wait_begin, (uintptr_t)hook_poll_wait, (uintptr_t)read,
            (uintptr_t)close, (uintptr_t)nanosleep, (uintptr_t)getaddrinfo,
        };
        lo = UINTPTR_MAX;
        hi = 0;
        for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
            lo = fns[i] < lo ? fns[i] : lo;
            hi = fns[i] > hi ? fns[i] : hi;
        }
    }
    weft__hook_code_span(lo, hi);
}

/* ---- a hooked call's wait ----------------------------------------------------- */

void hook_wait_begin(struct hook_wait *hw, uint64_t timeout_ns)
{
    hw->pinned = weft_pin() == 0;
    hw->own = timeout_ns ? weft_now() + timeout_ns : 0;
    hw->saved = weft_deadline(0);
    uint64_t d = hw->saved;
    if (hw->own && (!d || hw->own < d))
        d = hw->own;
    weft_deadline(d);
}

long hook_wait_end(struct hook_wait *hw, long r, int own_err)
{
    weft_deadline(hw->saved);
    if (hw->pinned)
        weft_unpin();
    if (r == -ETIMEDOUT && hw->own && (!hw->saved || hw->own < hw->saved))
        return -own_err;
    return r;
}

/* ---- what the files share --------------------------------------------------- */

int hook_fd_kind(int fd)
{
    int k = weft__hook_fd_kind(fd);
    if (k != WEFT__FD_UNKNOWN)
        return k;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return WEFT__FD_UNKNOWN;   /* a bad descriptor: the call itself will say so */
    if (S_ISSOCK(st.st_mode))
        k = WEFT__FD_SOCKET;
    else if (S_ISFIFO(st.st_mode))
        k = WEFT__FD_PIPE;
    else if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))
        k = WEFT__FD_FILE;
    else
        k = WEFT__FD_OTHER;
    weft__hook_fd_set_kind(fd, k);
    return k;
}

bool hook_owner_nonblock(int fd, int fl)
{
    return (fl & O_NONBLOCK) && !weft__hook_fd_weft_nonblock(fd);
}

int hook_offload(weft_fn fn, void *arg)
{
    struct hook_wait hw;
    hook_wait_begin(&hw, 0);   /* no timeout of its own: the wait pins the coroutine */
    return (int)hook_wait_end(&hw, weft_offload(fn, arg, NULL), 0);
}

/*
 * Asked of the kernel at each wait rather than recorded at setsockopt: the
 * kernel's value is the one libc's call would have used, also for a socket
 * made before the hook was loaded, inherited, or given its timeout through a
 * duplicate; and the question costs one system call on the path that is
 * about to wait anyway.
 */
uint64_t hook_sock_timeout(int fd, int dir)
{
    struct timeval tv;
    socklen_t len = sizeof tv;
    if (getsockopt(fd, SOL_SOCKET, dir ? SO_SNDTIMEO : SO_RCVTIMEO, &tv, &len) < 0)
        return 0;   /* not a socket: no timeout */
    return (uint64_t)tv.tv_sec * 1000000000u + (uint64_t)tv.tv_usec * 1000u;
}

/*
 * One name that reaches every file of the hook: a program that links
 * libweft-hook.a asks for it (-u weft__hook_anchor, in weft-hook.pc and the
 * CMake target), and the linker then takes every interposer from the
 * archive, not only those the program itself calls.
 */
HOOK_API const void *const weft__hook_anchor[] = {
    &hook_file_io, &hook_file_fd, &hook_file_sleep, &hook_file_poll, &hook_file_resolve, &hook_file_spawn,
};
