/* SPDX-License-Identifier: MIT */
/*
 * The entry points libweft exports for libweft-hook, and for nothing else.
 *
 * They are not weft's API: include/weft.h does not declare them, the API
 * reference does not list them, and they may change with any release. They
 * sit under their own version node, WEFT_PRIVATE (runtime/weft.map), so that
 * a libweft-hook built against another libweft fails to load rather than
 * misbehave. libweft defines them in runtime/io/fdtab.c (the code span in
 * runtime/core/span.c).
 *
 * The descriptor table. Descriptors belong to the process, not to a runtime,
 * so the table is process-wide, indexed by descriptor number, and made on
 * first use. Per number it keeps:
 *   - whether weft itself set O_NONBLOCK on the file (the epoll backend does,
 *     for a pipe or terminal that a weft call reads or writes): the hook's
 *     fcntl(F_GETFL) hides that flag, and the hook treats a descriptor
 *     whose only O_NONBLOCK is weft's as the blocking one its owner made;
 *   - a hint of the file's kind, learnt with fstat() at first use, so that
 *     each call goes the right way at once. A hint can be stale (a number
 *     closed where the hook does not see it and reused), and every path
 *     that uses it falls back on its own when the kernel disagrees, so a
 *     stale hint costs a system call, never a wrong answer.
 * Numbers at or beyond WEFT__FD_MAX have no entry: they read as "unknown",
 * with weft's O_NONBLOCK unset, and records for them are dropped.
 *
 * Every function may be called from any thread, never fails, and sets no
 * errno.
 */
#ifndef WEFT_PRIVATE_H
#define WEFT_PRIVATE_H

#include <weft.h>

#include <stdbool.h>
#include <stdint.h>

#define WEFT__FD_MAX (1 << 26)   /* numbers the table covers */

/* The kinds of file the hint tells apart. */
enum weft__fd_kind {
    WEFT__FD_UNKNOWN = 0,   /* not learnt yet */
    WEFT__FD_SOCKET,
    WEFT__FD_PIPE,          /* a pipe or FIFO */
    WEFT__FD_FILE,          /* a regular file or block device: never "would block" */
    WEFT__FD_OTHER,         /* a terminal, character device, eventfd, epoll set, ... */
};

/* fd's kind hint, and setting it. */
WEFT_API int  weft__hook_fd_kind(int fd);
WEFT_API void weft__hook_fd_set_kind(int fd, int kind);

/* Whether the O_NONBLOCK on fd's file is weft's, not its owner's. */
WEFT_API bool weft__hook_fd_weft_nonblock(int fd);

/* The owner set O_NONBLOCK on fd's file themselves: it is theirs from now on. */
WEFT_API void weft__hook_fd_owner_nonblock(int fd);

/* fd was closed, or is a new descriptor: forget everything about its number. */
WEFT_API void weft__hook_fd_forget(int fd);

/* to is a duplicate of from (dup, dup2, dup3, F_DUPFD): it shares from's file,
 * so it takes from's record. */
WEFT_API void weft__hook_fd_copy(int from, int to);

/* Whether any runtime of this process is alive (created, not yet destroyed). */
WEFT_API bool weft__hook_runtimes(void);

/* Whether fd is handed to weft (weft_own), and, for a number about to be
 * replaced by dup2 or dup3, the hand-over ended as weft_close() ends it.
 * Defined in runtime/io/owned.c. */
WEFT_API bool weft__hook_fd_owned(int fd);
WEFT_API void weft__hook_fd_disown(int fd);

/* fn(arg) on a helper thread of weft_offload's pool, the calling coroutine
 * suspended until it returns, which neither its deadline nor its
 * cancellation ends; from any other thread, fn(arg) in place. Returns 0,
 * -ENOMEM or -EAGAIN (no helper could be had: fn did not run). Defined in
 * runtime/io/offload.c. */
WEFT_API int weft__hook_offload_whole(weft_fn fn, void *arg);

/* The hook's code lies within [lo, hi]: weft_dump's summary counts a frame
 * there as weft's, and names the program's call below it. Defined in
 * runtime/core/span.c. */
WEFT_API void weft__hook_code_span(uintptr_t lo, uintptr_t hi);

/* The executable segment that holds the code address `at`, in *lo and *hi:
 * returns 1 where it is a shared library's, 0 where it is the program's own
 * (which holds the program's code too), -1 where no object holds `at`.
 * Defined in runtime/core/span.c. */
WEFT_API int weft__hook_code_segment(uintptr_t at, uintptr_t *lo, uintptr_t *hi);

#endif /* WEFT_PRIVATE_H */
