/* SPDX-License-Identifier: MIT */
/*
 * The epoll backend's descriptor table (io/epolltab.c): an entry per
 * descriptor number, made on first use and kept until the runtime goes, with
 * the coroutines waiting on it and what is known of its readiness. Used by
 * io/epoll.c only.
 */
#ifndef WEFT_EPOLL_H
#define WEFT_EPOLL_H

#include "backend.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define PAGE_SLOTS 1024u        /* descriptors per page of the table */
#define TOP_PAGES  65536u       /* pages: descriptors below 2^26 */

enum { RD, WR };   /* the directions: indexes of the lists below */

/* One coroutine waiting on a descriptor, in its frame (wait_fd):
 * on the read list, the write list, or both. The links are under the entry's
 * lock; `on` says which lists hold it, and is how a waiter that gives up
 * learns whether a waker has already taken it off. */
struct weft__fd_wait {
    struct weft__waiter wt;
    struct weft__fd_wait     *next[2], *prev[2];   /* on the entry's lists, by direction */
    uint64_t            place;   /* its place in line, kept across a wake that found nothing */
    bool                on[2];
    bool                verified;   /* its file is the registered one: the wait's own epoll_ctl
                                     * or a check since said so (under the entry's lock) */
};

/* The state of a descriptor's socket type, for the drained mark. */
enum { KIND_UNKNOWN, KIND_STREAM, KIND_OTHER };

/* A descriptor's waiters and its registration. The lists, `places`, `set`,
 * `added`, `checked`, `queued` and `mark` are under `lock`. */
struct weft__fd_slot {
    pthread_mutex_t  lock;
    struct weft__fd_wait  *head[2], *tail[2];   /* waiters by direction, by place */
    uint64_t         last_place;   /* the last place given out */
    unsigned         places;    /* waiters on the lists, one per list; counted on `set` */
    unsigned         set;       /* 1 + the index of the worker whose set holds it; 0: none */
    bool             added;     /* registered there, unless the file was closed since */
    int              fd;        /* its number; set when its page is made */
    unsigned         queued;    /* 1 + the index of the worker whose sweep list holds it; 0: none */
    struct weft__fd_slot  *next_queued;   /* on that list; written by its pusher (epoll.c,
                                           * sweep_push), read by the sweep that takes it */
    uint64_t         mark;      /* edges() when it was queued or last swept */
    uint64_t         round;     /* that worker's sweeps when it was queued */
    uint64_t         checked;   /* when the registration was last made or checked */
    /* Per direction: twice the edges seen, plus 1 while drained since the
     * last. Raised by reapers under `lock`; the drained bit also set by a
     * reader without it (compare-exchange against the count it saw). */
    _Atomic uint64_t edge[2];
    _Atomic bool     lined[2];     /* a list holds waiters: a hint for pass_on */
    _Atomic bool     not_socket;   /* a hint for weft_read/weft_write; anyone */
    _Atomic uint8_t  kind;         /* KIND_*: a hint for the drained mark; anyone */
    _Atomic bool     ended;        /* the end of the stream, or an error, was reaped: a read
                                    * returns at once from then on (epoll.c, emptied) */
};

struct weft__fdtab {
    _Atomic(struct weft__fd_slot *) pages[TOP_PAGES];   /* made on first use, kept */
};

/* fd's entry, made if `make`. NULL: fd is out of range, or no memory. Any thread. */
struct weft__fd_slot *weft__epoll_slot(weft_rt *rt, int fd, bool make);

/* fd answered ENOTSOCK: its entry says so, a hint (io/epolltab.c). */
void weft__epoll_not_socket(weft_rt *rt, int fd);
/* Readies fd, not a socket as far as the hint says, for a call that must not
 * block: 0, 1 (a socket after all: the caller takes a socket's way), or a
 * negative errno (io/epolltab.c). */
int weft__epoll_nonblocking(weft_rt *rt, int fd);

#endif /* WEFT_EPOLL_H */
