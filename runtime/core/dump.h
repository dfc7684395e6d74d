/* SPDX-License-Identifier: MIT */
/*
 * What the files of the dump share, and no other file uses:
 *   - core/unwind.c: reading memory that may go away meanwhile, and unwinding
 *     a coroutine from its saved registers and a copy of its stack;
 *   - core/symbol.c: names of code addresses, cached for one dump;
 *   - core/srcline.c: their source positions, from DWARF line tables (libdw);
 *   - core/dump.c: weft_dump itself, the walk over the coroutines and the text;
 *   - core/fatal.c: the coroutine's part of a fatal message;
 *   - core/stallbt.c: what a worker's thread runs now, taken by that thread on
 *     the stall signal, for the stall report and for the dump's running
 *     coroutines.
 * Non-static names here are weft__, hidden like every internal name (core.h).
 */
#ifndef WEFT_DUMP_H
#define WEFT_DUMP_H

#include "core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <ucontext.h>

#if WEFT_HAVE_LIBUNWIND
#include <libunwind.h>
#endif

#define WEFT__DUMP_FRAMES 48u   /* frames kept per coroutine */

/* ---- copies and unwinding (core/unwind.c) ---------------------------------------- */

/*
 * Copies len bytes at src into dst, or fails with -EFAULT (some of it is not
 * mapped) or the error of process_vm_readv (-ENOSYS, -EPERM where a seccomp
 * filter refuses it). Never faults. Any thread; allocates nothing.
 */
int weft__copy_in(void *dst, uintptr_t src, size_t len);
/* As weft__copy_in, but a copy that stops at an unmapped page is not an
 * error: returns the bytes copied, or a negative errno. Async-signal-safe
 * (the caller keeps errno). */
ssize_t weft__copy_some(void *dst, uintptr_t src, size_t len);

#if WEFT_HAVE_LIBUNWIND
#if defined(__x86_64__)
#define WEFT__UNW_NREGS 17   /* UNW_X86_64_RAX .. UNW_X86_64_RIP */
#define WEFT__UNW_SP    UNW_X86_64_RSP
#define WEFT__UNW_PC    UNW_X86_64_RIP
#elif defined(__aarch64__)
#define WEFT__UNW_NREGS 33   /* x0 .. x30, sp, pc */
#define WEFT__UNW_SP    UNW_AARCH64_SP
#define WEFT__UNW_PC    UNW_AARCH64_PC
#endif

/* A switched-out coroutine as copied: its registers and its stack's top part. */
struct weft__image {
    uintptr_t      lo, hi;          /* the copied part of the stack: [lo, hi) */
    unsigned char *buf;
    uint64_t       reg[WEFT__UNW_NREGS];    /* libunwind's numbering */
    bool           have[WEFT__UNW_NREGS];
};

/* Fills img's registers from the context saved by the switch (arch/ctx.h);
 * img's stack copy must start at the saved stack pointer. False if the saved
 * frame lies outside the copy. */
bool weft__image_regs(struct weft__image *img, const weft__ctx *ctx);
/* Fills img from a ucontext_t, a signal's or the calling thread's own (on
 * Linux unw_getcontext fills one), with no stack copy: every read goes
 * through weft__copy_in. Allocates nothing, and may be called from a signal
 * handler (the stall signal's, core/stallbt.c). */
void weft__image_from_ucontext(struct weft__image *img, const ucontext_t *uc);
/* An address space that reads images through weft__copy_in and the copied
 * stack; NULL when libunwind cannot make one (no memory). Its cache is
 * global: one thread at a time uses it. */
unw_addr_space_t weft__unwind_space(void);
/* Unwinds img into pcs[]; returns the number of frames. from: where not 0,
 * the entry address of a function whose frame, if it is found among the
 * first max, becomes the first; the ones above it are dropped. */
unsigned weft__unwind(unw_addr_space_t as, struct weft__image *img, uintptr_t *pcs, unsigned max,
                      uintptr_t from);

/* ---- what a worker's thread runs now (core/stallbt.c) --------------------------------- */

/* A worker's thread as the handler of the stall signal copied it, or as /proc
 * showed it asleep. Each worker has one (w->bt_snap), made by the first asker
 * and freed with the worker; its handler writes it while a request is open,
 * the asker reads it once the request is done, both under the asker's lock. */
struct weft__snap {
    struct weft__image img;      /* img.buf: the copy, in the snapshot's own block */
    uint32_t           tick;     /* the worker's schedules when taken */
    bool               in_user;  /* a coroutine's own code ran (w->in_user) */
    uintptr_t          current;  /* the task it ran (w->current), or 0 */
    const char        *asleep;   /* taken without a signal: the call the thread slept in */
};

/* One worker to take a snapshot of (weft__snap_take). */
struct weft__ask {
    struct weft__worker *w;          /* in */
    struct weft__snap   *snap;       /* out: w's snapshot; NULL: why says why there is none */
    char                 why[192];   /* out: "backtrace unavailable: ..." */
    bool                 open;       /* weft__snap_take's own: its signal is on its way */
};

/* Takes the process's one lock over snapshots, which the asker holds from
 * its requests to the last frame unwound from them: a dump and a stall
 * report never read each other's. Returns true if the stall signal of rt
 * (rt->stall_signal, not 0) is weft's to send; else false, the lock not
 * held, and why says why not. Any thread but a worker's own handler. */
bool weft__snap_lock(const weft_rt *rt, char *why, size_t len);
void weft__snap_unlock(void);
/* Takes a snapshot of each a[i].w, all asked before any is waited for: from
 * /proc where its thread sleeps in a call a signal would cut short, else by
 * the stall signal, waited for at most WAIT_NS (core/stallbt.c) in all,
 * twice that where a handler is late. Never for the calling thread's own worker. Holds the
 * lock; the snapshots stay valid until it is released. */
void weft__snap_take(struct weft__ask *a, size_t n);
/* Unwinds a snapshot into pcs[0..max); returns the number of frames, at
 * least one (its instruction pointer). Holds the lock. */
unsigned weft__snap_unwind(unw_addr_space_t as, struct weft__snap *s, uintptr_t *pcs, unsigned max);
#endif /* WEFT_HAVE_LIBUNWIND */

/* ---- names of code addresses (core/symbol.c) ---------------------------------------- */

/*
 * Names of code addresses, "function+0xoff (object)", cached by address: the
 * coroutines of a program wait in a few places, and each name costs a search
 * of an object's symbol table. One dump's, used by one thread; zeroed to
 * start, weft__symtab_free to end.
 */
struct weft__symtab {
    struct weft__sym {
        uintptr_t pc;       /* the key: the address, with ret in its low bit */
        uintptr_t at;       /* the address named: for a return address, the byte before */
        char     *name;     /* NULL: a free place */
        char     *src;      /* "file.c:42", or NULL where unknown */
        bool      looked;   /* src was looked for (weft__sym_lines) */
    } *at;
    size_t n, cap;        /* cap: a power of two; open addressing */
#if WEFT_HAVE_LIBUNWIND
    unw_addr_space_t as;  /* for its get_proc_name; NULL: dladdr alone */
#endif
};

/* The part of path after its last slash; "?" for NULL. */
const char *weft__base_name(const char *path);

/* The function around `at` from the symbol table of the object that holds it,
 * read with open and mmap (core/fatal.c): static functions too, and in a
 * statically linked program, where dladdr knows no object, through the
 * loader's list of objects if may_lock (it takes the loader's lock, which a
 * signal handler may not). Its offset in *off, the object's name in *obj.
 * False if no symbol holds it. */
bool weft__elf_name(uintptr_t at, bool may_lock, char *name, size_t len, uintptr_t *off,
                    const char **obj);
/* Writes the name of pc into buf, without the cache. ret: pc is a return
 * address, so the call is the byte before it (a call can be the last
 * instruction of a function). Allocates where libunwind's lookup does. */
void weft__describe(struct weft__symtab *st, uintptr_t pc, bool ret, char *buf, size_t len);
/* "fn+0xoff (obj)", or "fn (obj)" at offset 0, into buf. */
void weft__name_at(char *buf, size_t len, const char *fn, uintptr_t off, const char *obj);
/* The name of pc, from st's cache; "?" when no memory is left for it. */
const char *weft__sym_name(struct weft__symtab *st, uintptr_t pc, bool ret);
/* The source position of pc, "file.c:42", if pc was named in st before a
 * weft__sym_lines that found it; else NULL. */
const char *weft__sym_src(struct weft__symtab *st, uintptr_t pc, bool ret);
/* Looks up the source positions of every address named in st so far, in one
 * batch (weft__srcpos_find). Not from a signal handler. */
void weft__sym_lines(struct weft__symtab *st);
void weft__symtab_free(struct weft__symtab *st);

/* ---- source positions (core/srcline.c) ------------------------------------------- */

struct weft__srcpos {
    uintptr_t pc;        /* in: a code address (for a call, the call's own) */
    unsigned  line;      /* out: its line, 0 where unknown */
    char      file[64];  /* out: its source file's base name; "" where unknown */
};

/* Fills in the source position of each of pos[0..n) that the DWARF line
 * tables of the program's objects give; the others are left unknown, as all
 * are without libdw. Any thread but a signal handler: it takes a lock, may
 * allocate, and does the lookups on a thread it starts and joins, so it
 * needs little of the caller's stack. */
void weft__srcpos_find(struct weft__srcpos *pos, size_t n);

/* The lowest and highest address of weft's code, from a function of each of
 * its files (core/span.c). */
void weft__code_span(uintptr_t *lo, uintptr_t *hi);
/* libweft-hook's code, where it is linked and has said where (core/span.c);
 * 0 and 0 otherwise. Any thread. */
void weft__hook_span(uintptr_t *lo, uintptr_t *hi);

#endif /* WEFT_DUMP_H */
