/* SPDX-License-Identifier: MIT */
/*
 * The epoll backend's descriptor table (io/epoll.h): pages of entries made on
 * first use, published with a compare-exchange, and freed with the runtime;
 * and the hints about the file a number names, which its calls use.
 */
#include "epoll.h"
#include "fdtab.h"
#include "base/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

static struct weft__fdtab *table(weft_rt *rt, bool make)
{
    struct weft__fdtab *t = atomic_load_explicit(&rt->fdtab, memory_order_acquire);   /* pairs with the CAS */
    if (t || !make)
        return t;
    struct weft__fdtab *mine = calloc(1, sizeof *mine);
    if (!mine)
        return NULL;
    if (atomic_compare_exchange_strong_explicit(&rt->fdtab, &t, mine, memory_order_acq_rel,
                                                memory_order_acquire))
        return mine;   /* published */
    free(mine);        /* another thread published first: t is its table */
    return t;
}

static void page_free(struct weft__fd_slot *p)
{
    for (unsigned i = 0; i < PAGE_SLOTS; i++)
        pthread_mutex_destroy(&p[i].lock);
    free(p);
}

/* fd's entry, made if `make`. NULL: fd is out of range, or no memory. Any thread. */
struct weft__fd_slot *weft__epoll_slot(weft_rt *rt, int fd, bool make)
{
    if (fd < 0 || (unsigned)fd / PAGE_SLOTS >= TOP_PAGES)
        return NULL;
    struct weft__fdtab *t = table(rt, make);
    if (!t)
        return NULL;
    _Atomic(struct weft__fd_slot *) *pp = &t->pages[(unsigned)fd / PAGE_SLOTS];
    struct weft__fd_slot *p = atomic_load_explicit(pp, memory_order_acquire);   /* pairs with the CAS */
    if (!p && make) {
        struct weft__fd_slot *mine = calloc(PAGE_SLOTS, sizeof *mine);
        if (!mine)
            return NULL;
        for (unsigned i = 0; i < PAGE_SLOTS; i++) {
            pthread_mutex_init(&mine[i].lock, NULL);
            mine[i].fd = (int)((unsigned)fd / PAGE_SLOTS * PAGE_SLOTS + i);
        }
        if (atomic_compare_exchange_strong_explicit(pp, &p, mine, memory_order_acq_rel,
                                                    memory_order_acquire))
            p = mine;
        else
            page_free(mine);   /* p is the page another thread published */
    }
    return p ? &p[(unsigned)fd % PAGE_SLOTS] : NULL;
}

void weft__epoll_destroy(weft_rt *rt)
{
    struct weft__fdtab *t = atomic_load_explicit(&rt->fdtab, memory_order_acquire);
    if (!t)
        return;
    for (unsigned i = 0; i < TOP_PAGES; i++) {
        struct weft__fd_slot *p = atomic_load_explicit(&t->pages[i], memory_order_relaxed);
        if (p)
            page_free(p);
    }
    free(t);
    atomic_store_explicit(&rt->fdtab, NULL, memory_order_relaxed);
}

/* ---- the file a number names --------------------------------------------------- */

/* fd answered ENOTSOCK: a hint kept until weft_close or a new file is seen. */
void weft__epoll_not_socket(weft_rt *rt, int fd)
{
    struct weft__fd_slot *s = weft__epoll_slot(rt, fd, true);
    if (s)   /* without memory the hint is lost, and recv is tried again next time */
        atomic_store_explicit(&s->not_socket, true, memory_order_relaxed);
}

/*
 * Readies fd, not a socket as far as its entry's hint says, for a call that
 * must not block: a pipe, terminal, character device, eventfd or the like is
 * switched to O_NONBLOCK (once; the flag stays, recorded as weft's, not the
 * owner's, before it is set: io/fdtab.c); a regular file, block device or
 * directory never waits and is left as it is. A socket behind a stale hint
 * (its number closed with close(2) and reused) keeps its flags too: the hint
 * is dropped and 1 returned, for the caller to take a socket's way. Else 0,
 * or a negative errno.
 */
int weft__epoll_nonblocking(weft_rt *rt, int fd)
{
    int fl = weft__sys_fcntl(fd, F_GETFL, 0);
    if (fl < 0 || (fl & O_NONBLOCK))
        return fl < 0 ? fl : 0;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISSOCK(st.st_mode)) {
        struct weft__fd_slot *s = weft__epoll_slot(rt, fd, false);
        if (s)
            atomic_store_explicit(&s->not_socket, false, memory_order_relaxed);
        return 1;
    }
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISDIR(st.st_mode))
        return 0;   /* never waits (an eventfd or other anonymous file, of no type, may) */
    weft__fd_weft_nonblock(fd, true);
    if ((fl = weft__sys_fcntl(fd, F_SETFL, fl | O_NONBLOCK)) < 0) {
        weft__fd_weft_nonblock(fd, false);
        return fl;
    }
    return 0;
}
