/* SPDX-License-Identifier: MIT */
/*
 * What the files of the dump share, and no other file uses:
 *   - core/unwind.c: reading memory that may go away meanwhile, and unwinding
 *     a coroutine from its saved registers and a copy of its stack;
 *   - core/symbol.c: names of code addresses, cached for one dump;
 *   - core/srcline.c: their source positions, from DWARF line tables (libdw);
 *   - core/dump.c: weft_dump itself, the walk over the coroutines and the text;
 *   - core/fatal.c: the coroutine's part of a fatal message;
 *   - core/stallbt.c: the stall report's backtrace, unwound and named as here.
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
/* Writes the name of pc into buf, without the cache. ret: pc is a return
 * address, so the call is the byte before it (a call can be the last
 * instruction of a function). Allocates where libunwind's lookup does. */
void weft__describe(struct weft__symtab *st, uintptr_t pc, bool ret, char *buf, size_t len);
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

#endif /* WEFT_DUMP_H */
