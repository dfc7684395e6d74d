/* SPDX-License-Identifier: MIT */
/*
 * The process-wide descriptor table: per descriptor number, whether the
 * O_NONBLOCK on its file is weft's, and a hint of its kind. What it is for,
 * and who may call what, is in hook/weft_private.h. It is not the epoll
 * backend's table (io/epoll.c), which is a runtime's, and holds its waiters.
 *
 * One byte per number, in pages of PAGE_SLOTS made on first use and kept for
 * the life of the process (a page a process touches it is likely to touch
 * again; freeing one would need every reader to hold a reference). The page
 * pointers live in a static array: zero pages of it are never committed.
 *
 * Ordering. The byte of a number is read and written with relaxed atomics and
 * changed by compare-and-swap, as it packs two fields. The one order that
 * matters is between weft's record and the kernel's flag: weft records its
 * O_NONBLOCK before it sets it (weft__fd_weft_nonblock), and a reader asks the
 * kernel (F_GETFL) before it reads the record; the system calls between them
 * order the two, so a reader that sees the flag sees the record.
 */
#include "fdtab.h"

#include "core/core.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define PAGE_SLOTS 4096u
#define TOP_PAGES  ((unsigned)WEFT__FD_MAX / PAGE_SLOTS)

#define WEFT_NB    0x01u   /* the O_NONBLOCK on the file is weft's */
#define KIND_SHIFT 1
#define KIND_MASK  0x0eu

static _Atomic(_Atomic uint8_t *) pages[TOP_PAGES];   /* made on first use, kept */

/* fd's byte, the page made if `make`. NULL: out of range, or no memory. */
static _Atomic uint8_t *entry(int fd, bool make)
{
    if (fd < 0 || fd >= WEFT__FD_MAX)
        return NULL;
    _Atomic(_Atomic uint8_t *) *pp = &pages[(unsigned)fd / PAGE_SLOTS];
    _Atomic uint8_t *p = atomic_load_explicit(pp, memory_order_acquire);   /* pairs with the CAS */
    if (!p && make) {
        _Atomic uint8_t *mine = calloc(PAGE_SLOTS, sizeof *mine);
        if (!mine)
            return NULL;   /* the record is dropped: the hint is relearnt */
        if (atomic_compare_exchange_strong_explicit(pp, &p, mine, memory_order_acq_rel,
                                                    memory_order_acquire))
            p = mine;      /* published */
        else
            free(mine);    /* another thread published p first */
    }
    return p ? &p[(unsigned)fd % PAGE_SLOTS] : NULL;
}

static uint8_t load(int fd)
{
    _Atomic uint8_t *e = entry(fd, false);
    return e ? atomic_load_explicit(e, memory_order_relaxed) : 0;
}

/* Replaces the bits of `mask` in fd's byte with `bits`. */
static void update(int fd, uint8_t mask, uint8_t bits)
{
    _Atomic uint8_t *e = entry(fd, bits != 0);
    if (!e)
        return;   /* nothing to clear, or no memory to record in */
    uint8_t old = atomic_load_explicit(e, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(e, &old, (uint8_t)((old & ~mask) | bits),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

int weft__hook_fd_kind(int fd)
{
    return (load(fd) & KIND_MASK) >> KIND_SHIFT;
}

void weft__hook_fd_set_kind(int fd, int kind)
{
    update(fd, KIND_MASK, (uint8_t)(((unsigned)kind << KIND_SHIFT) & KIND_MASK));
}

bool weft__hook_fd_weft_nonblock(int fd)
{
    return load(fd) & WEFT_NB;
}

void weft__fd_weft_nonblock(int fd, bool on)
{
    update(fd, WEFT_NB, on ? WEFT_NB : 0);
}

void weft__hook_fd_owner_nonblock(int fd)
{
    update(fd, WEFT_NB, 0);
}

void weft__hook_fd_forget(int fd)
{
    _Atomic uint8_t *e = entry(fd, false);
    if (e)
        atomic_store_explicit(e, 0, memory_order_relaxed);
}

void weft__hook_fd_copy(int from, int to)
{
    if (from == to)
        return;
    uint8_t v = load(from);
    if (v) {
        update(to, 0xffu, v);
    } else {
        weft__hook_fd_forget(to);
    }
}

static void count_one(weft_rt *rt, void *arg)
{
    (void)rt;
    *(bool *)arg = true;
}

bool weft__hook_runtimes(void)
{
    bool any = false;
    weft__each_runtime(count_one, &any);
    return any;
}
