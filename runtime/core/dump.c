/* SPDX-License-Identifier: MIT */
/*
 * weft_dump: a report of every coroutine of the process, taken while the
 * workers run; the names coroutines give themselves; the signal that asks for
 * a dump; and the part of a fatal message that names a coroutine.
 *
 * What the dump reads, and why it cannot crash:
 *   - The registry is the task handles themselves. Handles are carved from
 *     slabs that stay mapped until their runtime is destroyed (core/task.c),
 *     and a runtime is not destroyed while weft__each_runtime holds it, so
 *     walking the slabs finds every task alive without a list to keep at
 *     spawn and exit: spawning pays nothing for the dump. A handle in use
 *     carries WEFT__TASK_MAGIC; free and never-used ones do not.
 *   - Everything that a coroutine or a worker writes while the dump runs
 *     (handles, fibers, stacks, workers' current task) is read with
 *     process_vm_readv into a private copy, never in place: a read of memory
 *     given back meanwhile fails with EFAULT instead of faulting, and the
 *     reads are copies taken by the kernel, outside the program's memory
 *     model, so they race with nothing the sanitizers see. Each coroutine is
 *     copied once, its handle, then its fiber, then its stack from the saved
 *     stack pointer up; the handle and fiber are copied again after the stack,
 *     and a coroutine that ran meanwhile (its saved stack pointer or its park
 *     state changed) is shown without a backtrace rather than with a wrong one.
 *   - Backtraces are unwound from the copy by libunwind in an address space of
 *     our own (unw_create_addr_space): its memory accessor serves the copied
 *     stack and reads anything else (the unwind tables of the program's
 *     objects) with process_vm_readv too; the registers are those the context
 *     switch saved (arch/ctx.h). The unwind tables are found as for a local
 *     unwind, by reusing the local address space's find_proc_info, which walks
 *     the loaded objects with dl_iterate_phdr. DWARF call-frame information is
 *     what it follows, so code built with -O2 and without frame pointers
 *     unwinds; it stops at weft__ctx_entry, whose CFI marks the end.
 * Nothing stops the workers: the only locks taken are the runtime list's
 * (shared) and each handle allocator's, for as long as it takes to copy the
 * list of its slabs.
 *
 * A dump lists the coroutines as they were when each was copied: one spawned
 * during the dump may be missing, and one that finished may still be listed.
 */
#include "core.h"
#include "base/sys.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <time.h>
#include <unistd.h>

#if WEFT_HAVE_LIBUNWIND
#include <libunwind.h>
#endif

#define MAX_FRAMES   48u               /* frames kept per coroutine */
#define STACK_COPY   ((size_t)256 << 10)   /* bytes of stack copied above the saved sp */
#define SLAB_CHUNK   256u              /* handles copied per system call */

uint64_t weft__coarse_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int weft_set_name(const char *name)
{
    if (!name)
        return -EINVAL;
    size_t n = strnlen(name, WEFT__NAME_SIZE);
    if (n > WEFT_NAME_MAX)
        return -ENAMETOOLONG;
    struct weft__worker *w = weft__worker_self();
    if (!w || !w->current)
        return -EPERM;
    memcpy(w->current->fiber->name, name, n + 1);
    return 0;
}

/* ---- copies ------------------------------------------------------------------- */

/*
 * Copies len bytes at src into dst, or fails with -EFAULT (some of it is not
 * mapped) or the error of process_vm_readv (-ENOSYS, -EPERM where a seccomp
 * filter refuses it). Never faults.
 */
static int copy_in(void *dst, uintptr_t src, size_t len)
{
    struct iovec local = { .iov_base = dst, .iov_len = len };
    struct iovec remote = { .iov_base = (void *)src, .iov_len = len };
    ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    if (n == (ssize_t)len)
        return 0;
    return n < 0 ? -errno : -EFAULT;
}

/* ---- symbols ------------------------------------------------------------------ */

/*
 * Names of code addresses, "function+0xoff (object)", cached by address: the
 * coroutines of a program wait in a few places, and each name costs a search
 * of an object's symbol table.
 */
struct symtab {
    struct sym { uintptr_t pc; char *name; } *at;
    size_t n, cap;        /* cap: a power of two; open addressing */
#if WEFT_HAVE_LIBUNWIND
    unw_addr_space_t as;  /* for its get_proc_name; NULL without libunwind */
#endif
};

static const char *base_name(const char *path)
{
    const char *slash = path ? strrchr(path, '/') : NULL;
    return slash ? slash + 1 : path ? path : "?";
}

/* Writes the name of pc into buf. ret: pc is a return address, so the call
 * is the byte before it (a call can be the last instruction of a function). */
static void describe(struct symtab *st, uintptr_t pc, bool ret, char *buf, size_t len)
{
    uintptr_t at = ret && pc ? pc - 1 : pc;
    Dl_info info;
    bool have_obj = dladdr((void *)at, &info) != 0;
    const char *obj = have_obj ? base_name(info.dli_fname) : "?";
#if WEFT_HAVE_LIBUNWIND
    if (st->as) {
        char fn[256];
        unw_word_t off;
        unw_accessors_t *a = unw_get_accessors(st->as);
        if (a->get_proc_name && a->get_proc_name(st->as, at, fn, sizeof(fn), &off, NULL) == 0) {
            off += at != pc;
            if (off)
                snprintf(buf, len, "%s+0x%lx (%s)", fn, (unsigned long)off, obj);
            else
                snprintf(buf, len, "%s (%s)", fn, obj);
            return;
        }
    }
#endif
    if (have_obj && info.dli_sname) {
        snprintf(buf, len, "%s+0x%lx (%s)", info.dli_sname,
                 (unsigned long)(pc - (uintptr_t)info.dli_saddr), obj);
    } else if (have_obj) {
        snprintf(buf, len, "?? (%s+0x%lx)", obj,   /* for addr2line -e OBJECT */
                 (unsigned long)(pc - (uintptr_t)info.dli_fbase));
    } else {
        snprintf(buf, len, "0x%lx", (unsigned long)pc);
    }
}

/* The name of pc, from the cache; "?" when no memory is left for it. */
static const char *sym_name(struct symtab *st, uintptr_t pc, bool ret)
{
    uintptr_t key = pc ^ (uintptr_t)ret;   /* a return address and an entry point differ */
    if (st->n * 2 >= st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 256;
        struct sym *at = calloc(cap, sizeof(*at));
        if (!at)
            return "?";
        for (size_t i = 0; i < st->cap; i++) {
            if (!st->at[i].name)
                continue;
            size_t h = (st->at[i].pc * 0x9e3779b97f4a7c15ull) >> 20 & (cap - 1);
            while (at[h].name)
                h = (h + 1) & (cap - 1);
            at[h] = st->at[i];
        }
        free(st->at);
        st->at = at;
        st->cap = cap;
    }
    size_t h = (key * 0x9e3779b97f4a7c15ull) >> 20 & (st->cap - 1);
    for (; st->at[h].name; h = (h + 1) & (st->cap - 1))
        if (st->at[h].pc == key)
            return st->at[h].name;
    char buf[320];
    describe(st, pc, ret, buf, sizeof(buf));
    char *name = strdup(buf);
    if (!name)
        return "?";
    st->at[h] = (struct sym){ .pc = key, .name = name };
    st->n++;
    return name;
}

static void symtab_free(struct symtab *st)
{
    for (size_t i = 0; i < st->cap; i++)
        free(st->at[i].name);
    free(st->at);
}

/* ---- unwinding from a copy ------------------------------------------------------ */

#if WEFT_HAVE_LIBUNWIND
#if defined(__x86_64__)
#define NREGS 17   /* UNW_X86_64_RAX .. UNW_X86_64_RIP */
#elif defined(__aarch64__)
#define NREGS 33   /* x0 .. x30, sp, pc */
#endif

/* A switched-out coroutine as copied: its registers and its stack's top part. */
struct image {
    uintptr_t      lo, hi;          /* the copied part of the stack: [lo, hi) */
    unsigned char *buf;
    uint64_t       reg[NREGS];      /* libunwind's numbering */
    bool           have[NREGS];
};

/* Fills img's registers from the context saved by the switch (arch/ctx.h);
 * img's stack copy must start at the saved stack pointer. False if the saved
 * frame lies outside the copy. */
static bool image_regs(struct image *img, const weft__ctx *ctx)
{
#if defined(__x86_64__)
    uintptr_t sp = (uintptr_t)ctx->sp;
    if (sp != img->lo || img->hi - img->lo < WEFT__CTX_FRAME_WORDS * 8)
        return false;
    uint64_t f[WEFT__CTX_FRAME_WORDS];
    memcpy(f, img->buf, sizeof(f));
    static const struct { int reg, word; } map[] = {
        { UNW_X86_64_RBX, WEFT__CTX_FRAME_RBX }, { UNW_X86_64_RBP, WEFT__CTX_FRAME_RBP },
        { UNW_X86_64_R12, WEFT__CTX_FRAME_R12 }, { UNW_X86_64_R13, WEFT__CTX_FRAME_R13 },
        { UNW_X86_64_R14, WEFT__CTX_FRAME_R14 }, { UNW_X86_64_R15, WEFT__CTX_FRAME_R15 },
        { UNW_X86_64_RIP, WEFT__CTX_FRAME_RIP },
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        img->reg[map[i].reg] = f[map[i].word];
        img->have[map[i].reg] = true;
    }
    /* The switch resumes in its caller's frame at the resume label, where
     * the compiler's CFI expects rsp as it was before the switch: above the
     * frame popped, and above the red zone the wrapper stepped over. */
    img->reg[UNW_X86_64_RSP] = sp + WEFT__CTX_FRAME_WORDS * 8 + 128;
    img->have[UNW_X86_64_RSP] = true;
    return true;
#elif defined(__aarch64__)
    /* The registers are in the context itself; the swap returns to lr. */
    if ((uintptr_t)ctx->sp != img->lo)
        return false;
    for (int i = 0; i < 10; i++) {
        img->reg[UNW_AARCH64_X19 + i] = ctx->x19_x28[i];
        img->have[UNW_AARCH64_X19 + i] = true;
    }
    img->reg[UNW_AARCH64_X29] = ctx->fp;
    img->reg[UNW_AARCH64_X30] = ctx->lr;
    img->reg[UNW_AARCH64_SP] = (uint64_t)(uintptr_t)ctx->sp;
    img->reg[UNW_AARCH64_PC] = ctx->lr;
    img->have[UNW_AARCH64_X29] = img->have[UNW_AARCH64_X30] = true;
    img->have[UNW_AARCH64_SP] = img->have[UNW_AARCH64_PC] = true;
    return true;
#endif
}

/*
 * Fills img from a ucontext_t, a signal's or the calling thread's own (on
 * Linux unw_getcontext fills one), with no stack copy: every read goes
 * through copy_in. Unwinding the live stack this way rather than with
 * libunwind's local unwinder spares its check of each address, a write(2) of
 * the word to a pipe, which Valgrind reports as a write of uninitialised
 * bytes, and which allocates nothing either way.
 */
static void image_from_ucontext(struct image *img, const ucontext_t *uc)
{
    *img = (struct image){ .lo = 0, .hi = 0 };
#if defined(__x86_64__)
    static const struct { int reg, greg; } map[] = {
        { UNW_X86_64_RAX, REG_RAX }, { UNW_X86_64_RDX, REG_RDX }, { UNW_X86_64_RCX, REG_RCX },
        { UNW_X86_64_RBX, REG_RBX }, { UNW_X86_64_RSI, REG_RSI }, { UNW_X86_64_RDI, REG_RDI },
        { UNW_X86_64_RBP, REG_RBP }, { UNW_X86_64_RSP, REG_RSP }, { UNW_X86_64_R8, REG_R8 },
        { UNW_X86_64_R9, REG_R9 }, { UNW_X86_64_R10, REG_R10 }, { UNW_X86_64_R11, REG_R11 },
        { UNW_X86_64_R12, REG_R12 }, { UNW_X86_64_R13, REG_R13 }, { UNW_X86_64_R14, REG_R14 },
        { UNW_X86_64_R15, REG_R15 }, { UNW_X86_64_RIP, REG_RIP },
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        img->reg[map[i].reg] = (uint64_t)uc->uc_mcontext.gregs[map[i].greg];
        img->have[map[i].reg] = true;
    }
#elif defined(__aarch64__)
    for (int i = 0; i < 31; i++) {
        img->reg[UNW_AARCH64_X0 + i] = uc->uc_mcontext.regs[i];
        img->have[UNW_AARCH64_X0 + i] = true;
    }
    img->reg[UNW_AARCH64_SP] = uc->uc_mcontext.sp;
    img->reg[UNW_AARCH64_PC] = uc->uc_mcontext.pc;
    img->have[UNW_AARCH64_SP] = img->have[UNW_AARCH64_PC] = true;
#endif
}

static int acc_mem(unw_addr_space_t as, unw_word_t addr, unw_word_t *val, int write, void *arg)
{
    const struct image *img = arg;
    if (write)
        return -UNW_EREADONLYREG;
    if (img && addr >= img->lo && addr + sizeof(*val) <= img->hi && addr + sizeof(*val) > addr) {
        memcpy(val, img->buf + (addr - img->lo), sizeof(*val));
        return 0;
    }
    return copy_in(val, (uintptr_t)addr, sizeof(*val)) ? -UNW_EINVAL : 0;
}

static int acc_reg(unw_addr_space_t as, unw_regnum_t reg, unw_word_t *val, int write, void *arg)
{
    const struct image *img = arg;
    if (write || !img || reg < 0 || reg >= NREGS)
        return -UNW_EBADREG;
    *val = img->have[reg] ? img->reg[reg] : 0;   /* caller-saved: dead at a switch */
    return 0;
}

static int acc_fpreg(unw_addr_space_t as, unw_regnum_t reg, unw_fpreg_t *val, int write, void *arg)
{
    return -UNW_EBADREG;
}

static int acc_resume(unw_addr_space_t as, unw_cursor_t *c, void *arg)
{
    return -UNW_EINVAL;   /* only looked at, never resumed */
}

/* An address space that reads through the accessors above; NULL when
 * libunwind cannot make one (no memory). */
static unw_addr_space_t as_create(void)
{
    unw_accessors_t *local = unw_get_accessors(unw_local_addr_space);
    unw_accessors_t acc = {
        .find_proc_info = local->find_proc_info,
        .put_unwind_info = local->put_unwind_info,
        .get_dyn_info_list_addr = local->get_dyn_info_list_addr,
        .access_mem = acc_mem,
        .access_reg = acc_reg,
        .access_fpreg = acc_fpreg,
        .resume = acc_resume,
        .get_proc_name = local->get_proc_name,
    };
    unw_addr_space_t as = unw_create_addr_space(&acc, 0);
    if (as)
        unw_set_caching_policy(as, UNW_CACHE_GLOBAL);   /* this dump's thread only */
    return as;
}

/* Unwinds img into pcs[]; returns the number of frames. from: where not
 * 0, the entry address of a function whose frame, if it is found among the
 * first max, becomes the first; the ones above it are dropped. */
static unsigned unwind(unw_addr_space_t as, struct image *img, uintptr_t *pcs, unsigned max,
                       uintptr_t from)
{
    unw_cursor_t c;
    if (unw_init_remote(&c, as, img) < 0)
        return 0;
    unsigned n = 0, first = 0;
    bool found = false;
    while (n < max) {
        unw_word_t ip;
        unw_proc_info_t pi;
        if (unw_get_reg(&c, UNW_REG_IP, &ip) < 0 || !ip)
            break;
        if (from && !found && unw_get_proc_info(&c, &pi) == 0 && pi.start_ip == (unw_word_t)from) {
            found = true;
            first = n;
        }
        pcs[n++] = (uintptr_t)ip;
        if (unw_step(&c) <= 0)
            break;
    }
    memmove(pcs, pcs + first, (n - first) * sizeof(*pcs));
    return n - first;
}
#endif /* WEFT_HAVE_LIBUNWIND */

/* ---- taking the dump ----------------------------------------------------------- */

enum state { ST_RUNNING, ST_RUNNABLE, ST_NEW, ST_WAITING };

/* One coroutine, as copied. */
struct entry {
    const weft_rt *rt;
    uintptr_t      addr;        /* its handle */
    uint64_t       id;
    uintptr_t      fn;
    uintptr_t      spawn_pc;
    enum state     state;
    int            worker;      /* ST_RUNNING: which */
    uint32_t       why;
    uintptr_t      what;
    uint64_t       join_id;     /* WEFT__WHY_JOIN: the id of the task joined, 0 if unknown */
    uint64_t       since;
    char           name[WEFT__NAME_SIZE];
    size_t         frame0;      /* its frames: pcs[frame0 .. frame0 + nframes) */
    unsigned       nframes;
    const char    *no_bt;       /* why there is no backtrace, or NULL */
};

struct dump {
    struct entry *e;
    size_t        n, cap;
    uintptr_t    *pcs;
    size_t        npcs, pcs_cap;
    unsigned      runtimes;
    unsigned char *stack;       /* STACK_COPY bytes */
    int           err;          /* the first -ENOMEM */
    bool          direct;       /* process_vm_readv refused: handles read in place, no stacks */
    uintptr_t     weft_lo, weft_hi;   /* weft's code, as weft_span() finds it */
    uintptr_t     self;         /* the calling coroutine's handle, or 0 */
    struct symtab st;
};

static bool reserve(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return true;
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need)
        cap2 *= 2;
    void *q = realloc(*p, cap2 * size);
    if (!q)
        return false;
    *p = q;
    *cap = cap2;
    return true;
}

/* Copies a handle or a fiber: with process_vm_readv, or in place where that
 * is refused (handles and fibers stay mapped while their runtime lives). */
static int copy_obj(struct dump *d, void *dst, uintptr_t src, size_t len)
{
    if (!d->direct) {
        int err = copy_in(dst, src, len);
        if (err != -ENOSYS && err != -EPERM)
            return err;
        d->direct = true;
    }
    memcpy(dst, (const void *)src, len);
    return 0;
}

/* The saved stack pointer of a fiber, as arch/ctx.h keeps it. */
static uintptr_t saved_sp(const struct weft__fiber *f)
{
    return (uintptr_t)f->ctx.sp;
}

#if WEFT_HAVE_LIBUNWIND
/* Unwinds img into e's frames, at the end of d->pcs (see unwind for from). */
static void unwind_into(struct dump *d, struct entry *e, struct image *img, uintptr_t from)
{
    if (!reserve((void **)&d->pcs, &d->pcs_cap, d->npcs + MAX_FRAMES, sizeof(*d->pcs))) {
        d->err = -ENOMEM;
        e->no_bt = "backtrace unavailable: out of memory";
        return;
    }
    e->frame0 = d->npcs;
    e->nframes = unwind(d->st.as, img, d->pcs + d->npcs, MAX_FRAMES, from);
    d->npcs += e->nframes;
}
#endif

/* Copies the stack of a switched-out coroutine whose fiber was copied as f
 * (at fiber_addr) and unwinds it into d->pcs. Sets e->no_bt if it cannot. */
static void take_backtrace(struct dump *d, struct entry *e, const struct weft__fiber *f, uintptr_t fiber_addr)
{
#if WEFT_HAVE_LIBUNWIND
    if (d->direct) {
        e->no_bt = "backtrace unavailable: process_vm_readv is refused here";
        return;
    }
    if (!d->st.as) {
        e->no_bt = "backtrace unavailable: libunwind could not make an address space";
        return;
    }
    uintptr_t sp = saved_sp(f);
    if (sp < (uintptr_t)f->stack_lo || sp >= fiber_addr) {
        e->no_bt = "backtrace unavailable: it was switching when copied";
        return;
    }
    size_t len = fiber_addr - sp < STACK_COPY ? fiber_addr - sp : STACK_COPY;
    if (copy_in(d->stack, sp, len)) {
        e->no_bt = "backtrace unavailable: its stack went away while copied";
        return;
    }
    struct image img = { .lo = sp, .hi = sp + len, .buf = d->stack };
    if (!image_regs(&img, &f->ctx)) {
        e->no_bt = "backtrace unavailable: its saved context is not on its stack";
        return;
    }
    unwind_into(d, e, &img, 0);
#else
    (void)d; (void)f; (void)fiber_addr;
    e->no_bt = "backtrace unavailable: weft was built without libunwind";
#endif
}

/* Whether a worker of rt runs the task at addr now: a runnable task seen
 * switched out may have been picked up since, its saved context then stale. */
static bool runs_now(struct dump *d, const weft_rt *rt, uintptr_t addr)
{
    for (unsigned i = 0; i < rt->nworkers; i++) {
        weft_task *cur = NULL;
        if (!copy_obj(d, &cur, (uintptr_t)&rt->workers[i]->current, sizeof(cur)) &&
            (uintptr_t)cur == addr)
            return true;
    }
    return false;
}

/* The calling coroutine's own frames, from weft_dump's down: it is the one
 * running the dump, and the dump's insides are no news. */
static WEFT__NOINLINE void take_own_backtrace(struct dump *d, struct entry *e)
{
#if WEFT_HAVE_LIBUNWIND
    if (!d->st.as) {
        e->no_bt = "backtrace unavailable: libunwind could not make an address space";
        return;
    }
    unw_context_t uc;
    struct image img;
    unw_getcontext(&uc);
    image_from_ucontext(&img, (const ucontext_t *)&uc);
    unwind_into(d, e, &img, (uintptr_t)weft_dump);
#else
    (void)d;
    e->no_bt = "backtrace unavailable: weft was built without libunwind";
#endif
}

/* Adds the task whose handle was copied as t (at addr) to d, if it is alive. */
static void take_task(struct dump *d, const weft_rt *rt, const weft_task *t, uintptr_t addr,
                      const uintptr_t *current, unsigned nworkers)
{
    if (atomic_load_explicit(&t->magic, memory_order_relaxed) != WEFT__TASK_MAGIC)
        return;   /* free, or never used (the copy is ours: relaxed loads of it race with nothing) */
    uintptr_t j = atomic_load_explicit(&t->join, memory_order_relaxed);
    if (j == WEFT__JOIN_DONE || j == WEFT__JOIN_BUSY)
        return;   /* finished, not yet joined */
    if (!reserve((void **)&d->e, &d->cap, d->n + 1, sizeof(*d->e))) {
        d->err = -ENOMEM;
        return;
    }
    struct entry *e = &d->e[d->n];
    *e = (struct entry){
        .rt = rt, .addr = addr, .id = t->id, .fn = (uintptr_t)t->fn,
        .spawn_pc = (uintptr_t)t->spawn_pc, .worker = -1,
    };
    for (unsigned i = 0; i < nworkers; i++)
        if (current[i] == addr)
            e->worker = (int)i;
    if (!t->fiber) {
        e->state = ST_NEW;
        d->n++;
        return;
    }
    struct weft__fiber f;
    if (copy_obj(d, &f, (uintptr_t)t->fiber, sizeof(f)))
        return;   /* its stack slot went away: it finished */
    e->spawn_pc = (uintptr_t)f.spawn_pc;   /* moved from the handle as it first ran */
    memcpy(e->name, f.name, sizeof(e->name));
    e->name[sizeof(e->name) - 1] = '\0';
    uint32_t ps = atomic_load_explicit(&t->pstate, memory_order_relaxed);
    if (e->worker >= 0) {
        e->state = ST_RUNNING;
        if (addr == d->self)
            take_own_backtrace(d, e);
        else
            e->no_bt = "running: its stack changes as it is read";
        d->n++;
        return;
    }
    e->state = ps == WEFT__PARKED ? ST_WAITING : ST_RUNNABLE;
    if (e->state == ST_WAITING) {
        e->why = f.why < WEFT__WHY_COUNT ? f.why : WEFT__WHY_NONE;
        e->what = f.what;
        e->since = f.since;
        if (e->why == WEFT__WHY_JOIN) {
            weft_task joined;
            if (!copy_obj(d, &joined, e->what, sizeof(joined)) &&
                atomic_load_explicit(&joined.magic, memory_order_relaxed) == WEFT__TASK_MAGIC)
                e->join_id = joined.id;
        }
    }
    take_backtrace(d, e, &f, (uintptr_t)t->fiber);
    /* Again, after the stack: a coroutine that ran meanwhile left a stack
     * that need not match the registers copied first. */
    weft_task t2;
    struct weft__fiber f2;
    if (!e->no_bt && (copy_obj(d, &t2, addr, sizeof(t2)) || t2.fiber != t->fiber ||
                      copy_obj(d, &f2, (uintptr_t)t->fiber, sizeof(f2)) ||
                      saved_sp(&f2) != saved_sp(&f) ||
                      atomic_load_explicit(&t2.pstate, memory_order_relaxed) != ps ||
                      (e->state == ST_RUNNABLE && runs_now(d, rt, addr)))) {
        d->npcs = e->frame0;
        e->nframes = 0;
        e->no_bt = "backtrace unavailable: it ran while it was copied";
    }
    d->n++;
}

static void take_runtime(weft_rt *rt, void *arg)
{
    struct dump *d = arg;
    if (weft__inherited(rt))
        return;   /* the parent's, after fork(): nothing of it runs here */
    d->runtimes++;
    unsigned nw = rt->nworkers;
    uintptr_t *current = calloc(nw ? nw : 1, sizeof(*current));
    struct weft__span *spans = NULL;
    unsigned char *raw = malloc(SLAB_CHUNK * WEFT__TASK_STRIDE);
    size_t nspans = 0;
    if (current && raw) {
        for (unsigned i = 0; i < nw; i++) {
            weft_task *cur = NULL;
            if (!copy_obj(d, &cur, (uintptr_t)&rt->workers[i]->current, sizeof(cur)))
                current[i] = (uintptr_t)cur;
        }
        size_t want = 16;
        for (;;) {
            spans = calloc(want, sizeof(*spans));
            if (!spans)
                break;
            nspans = weft__taskmem_spans(rt->taskmem, spans, want);
            if (nspans <= want)
                break;
            free(spans);
            want = nspans;
        }
    }
    if (!current || !raw || !spans) {
        d->err = -ENOMEM;
        nspans = 0;
    }
    for (size_t s = 0; s < nspans; s++) {
        for (uintptr_t at = spans[s].lo; at + WEFT__TASK_STRIDE <= spans[s].hi; ) {
            size_t k = (spans[s].hi - at) / WEFT__TASK_STRIDE;
            if (k > SLAB_CHUNK)
                k = SLAB_CHUNK;
            /* One copy for the chunk: slabs stay mapped, so it fails only
             * where process_vm_readv is refused, and copy_obj then reads in place. */
            if (copy_obj(d, raw, at, k * WEFT__TASK_STRIDE))
                memset(raw, 0, k * WEFT__TASK_STRIDE);
            for (size_t i = 0; i < k; i++) {
                weft_task t;
                memcpy(&t, raw + i * WEFT__TASK_STRIDE, sizeof(t));
                take_task(d, rt, &t, at + i * WEFT__TASK_STRIDE, current, nw);
            }
            at += k * WEFT__TASK_STRIDE;
        }
    }
    free(raw);
    free(spans);
    free(current);
}

/* ---- writing it ---------------------------------------------------------------- */

static const char *const why_names[WEFT__WHY_COUNT] = {
    [WEFT__WHY_NONE] = "waiting",
    [WEFT__WHY_CHAN_SEND] = "chan send",
    [WEFT__WHY_CHAN_RECV] = "chan receive",
    [WEFT__WHY_SELECT] = "select",
    [WEFT__WHY_MUTEX] = "mutex",
    [WEFT__WHY_COND] = "condition",
    [WEFT__WHY_WG] = "wait group",
    [WEFT__WHY_SEM] = "semaphore",
    [WEFT__WHY_JOIN] = "join",
    [WEFT__WHY_SLEEP] = "sleep",
    [WEFT__WHY_READ] = "read",
    [WEFT__WHY_WRITE] = "write",
    [WEFT__WHY_ACCEPT] = "accept",
    [WEFT__WHY_CONNECT] = "connect",
    [WEFT__WHY_POLL] = "poll",
    [WEFT__WHY_FILE] = "file call",
    [WEFT__WHY_OFFLOAD] = "offload",
    [WEFT__WHY_SIGNAL] = "signal",
    [WEFT__WHY_CHILD] = "child process",
};

/* Output through a buffer; the first error of write(2) sticks. */
struct out {
    int    fd;
    int    err;
    size_t n;
    char   buf[8192];
};

static void out_flush(struct out *o)
{
    for (size_t done = 0; done < o->n && !o->err; ) {
        ssize_t w = weft__sys_write(o->fd, o->buf + done, o->n - done);
        if (w == -EINTR)
            continue;
        if (w <= 0)
            o->err = w < 0 ? (int)w : -EIO;
        else
            done += (size_t)w;
    }
    o->n = 0;
}

__attribute__((format(printf, 2, 3)))
static void out_f(struct out *o, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    if (o->n + len > sizeof(o->buf))
        out_flush(o);
    memcpy(o->buf + o->n, line, len);
    o->n += len;
}

/* The state of e in words: "chan receive 0x...", "runnable", ... */
static void state_text(struct dump *d, const struct entry *e, char *buf, size_t len, bool detail)
{
    switch (e->state) {
    case ST_RUNNING:
        snprintf(buf, len, "running on worker %d", e->worker);
        return;
    case ST_RUNNABLE:
        snprintf(buf, len, "runnable");
        return;
    case ST_NEW:
        snprintf(buf, len, "runnable, not started");
        return;
    case ST_WAITING:
        break;
    }
    const char *w = why_names[e->why];
    if (!detail) {
        snprintf(buf, len, "%s", w);
        return;
    }
    switch (e->why) {
    case WEFT__WHY_READ: case WEFT__WHY_WRITE: case WEFT__WHY_ACCEPT:
    case WEFT__WHY_CONNECT: case WEFT__WHY_POLL: case WEFT__WHY_FILE:
        snprintf(buf, len, "%s fd %ld", w, (long)(intptr_t)e->what);
        return;
    case WEFT__WHY_JOIN:
        if (e->join_id)
            snprintf(buf, len, "join coroutine %llu", (unsigned long long)e->join_id);
        else
            snprintf(buf, len, "join");
        return;
    case WEFT__WHY_SELECT:
        snprintf(buf, len, "select, %lu cases", (unsigned long)e->what);
        return;
    case WEFT__WHY_SIGNAL:
        snprintf(buf, len, "signal %ld", (long)e->what);
        return;
    case WEFT__WHY_CHILD:
        snprintf(buf, len, "child process %ld", (long)e->what);
        return;
    case WEFT__WHY_OFFLOAD:
        snprintf(buf, len, "offload %s", sym_name(&d->st, e->what, false));
        return;
    case WEFT__WHY_SLEEP: case WEFT__WHY_NONE:
        snprintf(buf, len, "%s", w);
        return;
    default:
        snprintf(buf, len, "%s 0x%lx", w, (unsigned long)e->what);
        return;
    }
}

/*
 * Whether a frame is weft's own: named weft_..., or lying within the span of
 * weft's code. The name alone misses weft's static functions (a public
 * function often tail-calls one, leaving no frame of its own), so the span is
 * taken from the addresses of functions of each of weft's files: whether
 * weft is a shared library or linked into the program from libweft.a, its
 * objects' code lies together. A program linked with a reordering of its own
 * (LTO, a symbol ordering file) may see a frame of weft's counted as its own:
 * only the summary's grouping suffers.
 */
static void weft_span(uintptr_t *lo, uintptr_t *hi)
{
    const uintptr_t fns[] = {
        (uintptr_t)weft_dump, (uintptr_t)weft_spawn, (uintptr_t)weft_join,
        (uintptr_t)weft_chan_recv, (uintptr_t)weft_select, (uintptr_t)weft_mutex_lock,
        (uintptr_t)weft_sem_acquire, (uintptr_t)weft_read, (uintptr_t)weft_close,
        (uintptr_t)weft_sleep, (uintptr_t)weft_offload, (uintptr_t)weft_yield,
        (uintptr_t)weft_rt_create, (uintptr_t)weft_deadline, (uintptr_t)weft_cancel,
        (uintptr_t)weft__ctx_entry, (uintptr_t)weft__wait, (uintptr_t)weft__deque_steal,
        (uintptr_t)weft__stack_bind,
    };
    *lo = UINTPTR_MAX;
    *hi = 0;
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
        if (fns[i] < *lo)
            *lo = fns[i];
        if (fns[i] > *hi)
            *hi = fns[i];
    }
}

static bool is_weft(struct dump *d, uintptr_t pc, bool ret)
{
    if (pc >= d->weft_lo && pc <= d->weft_hi)
        return true;
    const char *sym = sym_name(&d->st, pc, ret);
    return strncmp(sym, "weft_", 5) == 0 || strncmp(sym, "weft.", 5) == 0;
}

/* Where e waits or stopped, as its frames say: the innermost frame that is
 * not weft's, the one that called into weft. NULL without frames. */
static const char *site_of(struct dump *d, const struct entry *e)
{
    const uintptr_t *pc = d->pcs + e->frame0;
    for (unsigned i = 0; i < e->nframes; i++)
        if (!is_weft(d, pc[i], i > 0))
            return sym_name(&d->st, pc[i], i > 0);
    return NULL;
}

struct group { const char *state; const char *site; size_t count; char buf[96]; };

static int group_cmp(const void *a, const void *b)
{
    const struct group *x = a, *y = b;
    return x->count != y->count ? (x->count < y->count ? 1 : -1) : strcmp(x->buf, y->buf);
}

static void write_summary(struct dump *d, struct out *o, size_t from, size_t to)
{
    struct group *g = calloc(to - from ? to - from : 1, sizeof(*g));
    if (!g) {
        d->err = -ENOMEM;
        return;
    }
    size_t ng = 0;
    for (size_t i = from; i < to; i++) {
        struct group k = { .site = site_of(d, &d->e[i]) };
        state_text(d, &d->e[i], k.buf, sizeof(k.buf), false);
        if (!k.site)
            k.site = "";
        size_t j = 0;
        while (j < ng && (strcmp(g[j].buf, k.buf) || strcmp(g[j].site, k.site)))
            j++;
        if (j == ng)
            g[ng++] = k;
        g[j].count++;
    }
    qsort(g, ng, sizeof(*g), group_cmp);
    for (size_t j = 0; j < ng; j++)
        out_f(o, "  %7zu  %-24s %s\n", g[j].count, g[j].buf, g[j].site);
    free(g);
}

static void write_entry(struct dump *d, struct out *o, const struct entry *e, uint64_t now)
{
    char st[160];
    state_text(d, e, st, sizeof(st), true);
    char age[48] = "";
    if (e->state == ST_WAITING && e->since && now >= e->since)
        snprintf(age, sizeof(age), ", %.2f s", (double)(now - e->since) / 1e9);
    out_f(o, "\ncoroutine %llu", (unsigned long long)e->id);
    if (e->name[0])
        out_f(o, " \"%s\"", e->name);
    out_f(o, " [%s%s]:\n", st, age);
    for (unsigned i = 0; i < e->nframes; i++) {
        uintptr_t pc = d->pcs[e->frame0 + i];
        out_f(o, "  #%-2u 0x%016lx %s\n", i, (unsigned long)pc, sym_name(&d->st, pc, i > 0));
    }
    if (e->no_bt)
        out_f(o, "  (%s)\n", e->no_bt);
    out_f(o, "  entry %s\n", sym_name(&d->st, e->fn, false));
    if (e->spawn_pc)
        out_f(o, "  created by %s\n", sym_name(&d->st, e->spawn_pc, true));
}

static int entry_cmp(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->rt != y->rt)
        return (uintptr_t)x->rt < (uintptr_t)y->rt ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int weft_dump(int fd)
{
    int saved_errno = errno;
    if (fd < 0 || weft__sys_fcntl(fd, F_GETFL, 0) < 0) {   /* before anything opens a descriptor of its own */
        errno = saved_errno;
        return -EBADF;
    }
    struct dump *d = calloc(1, sizeof(*d));
    struct out *o = malloc(sizeof(*o));
    if (d)
        d->stack = malloc(STACK_COPY);
    if (!d || !o || !d->stack) {
        if (d)
            free(d->stack);
        free(d);
        free(o);
        return -ENOMEM;
    }
    o->fd = fd;
    o->err = 0;
    o->n = 0;
#if WEFT_HAVE_LIBUNWIND
    d->st.as = as_create();
#endif
    weft_span(&d->weft_lo, &d->weft_hi);
    struct weft__worker *w = weft__worker_self();
    d->self = (uintptr_t)(w ? w->current : NULL);
    uint64_t now = weft__coarse_now();
    weft__each_runtime(take_runtime, d);
    qsort(d->e, d->n, sizeof(*d->e), entry_cmp);

    out_f(o, "weft: %u runtime%s, %zu coroutine%s\n", d->runtimes, d->runtimes == 1 ? "" : "s",
          d->n, d->n == 1 ? "" : "s");
    for (size_t i = 0; i < d->n; ) {
        size_t end = i;
        while (end < d->n && d->e[end].rt == d->e[i].rt)
            end++;
        out_f(o, "\nruntime %p: %zu coroutine%s\n", (const void *)d->e[i].rt, end - i, end - i == 1 ? "" : "s");
        out_f(o, "  %7s  %-24s %s\n", "count", "state", "where");
        write_summary(d, o, i, end);
        for (size_t k = i; k < end; k++)
            write_entry(d, o, &d->e[k], now);
        i = end;
    }
    if (d->err)
        out_f(o, "\n(weft: the dump is incomplete: out of memory)\n");
    out_flush(o);
    int err = o->err ? o->err : d->err;
#if WEFT_HAVE_LIBUNWIND
    if (d->st.as)
        unw_destroy_addr_space(d->st.as);
#endif
    symtab_free(&d->st);
    free(d->e);
    free(d->pcs);
    free(d->stack);
    free(d);
    free(o);
    errno = saved_errno;
    return err;
}

/* ---- fatal messages -------------------------------------------------------------- */

/* A line into fd at once, from a buffer on the stack: no allocation. */
__attribute__((format(printf, 2, 3)))
static void say(int fd, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    ssize_t rc = weft__sys_write(fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    (void)rc;
}

/*
 * The function around pc from the symbol table (.symtab) of the object file
 * at path, loaded at base, with nothing but open, mmap, munmap and close:
 * all async-signal-safe. False if the file has none or no function holds pc.
 */
static bool elf_symbol(const char *path, uintptr_t base, uintptr_t pc, char *name, size_t len,
                       uintptr_t *off)
{
    int fd = weft__sys_open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct stat sb;
    void *map = fstat(fd, &sb) == 0 && sb.st_size > (off_t)sizeof(ElfW(Ehdr))
                    ? mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    weft__sys_close(fd);
    if (map == MAP_FAILED)
        return false;
    size_t size = (size_t)sb.st_size;
    const unsigned char *f = map;
    const ElfW(Ehdr) *eh = map;
    bool found = false;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_shentsize == sizeof(ElfW(Shdr)) &&
        eh->e_shoff < size && eh->e_shnum <= (size - eh->e_shoff) / sizeof(ElfW(Shdr))) {
        const ElfW(Shdr) *sh = (const ElfW(Shdr) *)(f + eh->e_shoff);
        uintptr_t at = eh->e_type == ET_DYN ? pc - base : pc;   /* a PIE or a library: relative */
        for (unsigned i = 0; i < eh->e_shnum && !found; i++) {
            if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum ||
                sh[i].sh_offset > size || sh[i].sh_size > size - sh[i].sh_offset)
                continue;
            const ElfW(Shdr) *strs = &sh[sh[i].sh_link];
            if (strs->sh_offset > size || strs->sh_size > size - strs->sh_offset)
                continue;
            const ElfW(Sym) *sym = (const ElfW(Sym) *)(f + sh[i].sh_offset);
            size_t n = sh[i].sh_size / sizeof(*sym);
            for (size_t k = 0; k < n; k++) {
                if (ELF64_ST_TYPE(sym[k].st_info) != STT_FUNC || sym[k].st_name >= strs->sh_size ||
                    at < sym[k].st_value || at - sym[k].st_value >= sym[k].st_size)
                    continue;
                const char *s = (const char *)(f + strs->sh_offset + sym[k].st_name);
                size_t slen = strnlen(s, strs->sh_size - sym[k].st_name);
                if (slen >= len)
                    slen = len - 1;
                memcpy(name, s, slen);
                name[slen] = '\0';
                *off = at - sym[k].st_value;
                found = true;
                break;
            }
        }
    }
    munmap(map, size);
    return found;
}

/*
 * The name of pc without a cache, for fatal messages. In a signal handler
 * (in_signal) libunwind's symbol lookup is not used, as it allocates and the
 * fault may have struck inside malloc, whose lock a second malloc would wait
 * on for ever: there elf_symbol reads the object's symbol table instead.
 */
static void name_now(uintptr_t pc, bool ret, bool in_signal, char *buf, size_t len)
{
    struct symtab st = { 0 };
#if WEFT_HAVE_LIBUNWIND
    if (!in_signal)
        st.as = unw_local_addr_space;
#endif
    if (in_signal && pc) {
        uintptr_t at = ret ? pc - 1 : pc, off;
        Dl_info info;
        char fn[256];
        if (dladdr((void *)at, &info) && info.dli_fname &&
            (elf_symbol(info.dli_fname, (uintptr_t)info.dli_fbase, at, fn, sizeof(fn), &off) ||
             elf_symbol("/proc/self/exe", (uintptr_t)info.dli_fbase, at, fn, sizeof(fn), &off))) {
            off += at != pc;
            if (off)
                snprintf(buf, len, "%s+0x%lx (%s)", fn, (unsigned long)off, base_name(info.dli_fname));
            else
                snprintf(buf, len, "%s (%s)", fn, base_name(info.dli_fname));
            return;
        }
    }
    describe(&st, pc, ret, buf, len);
}

#if WEFT_HAVE_LIBUNWIND
/* The address space of fatal messages: made before any can be needed, as a
 * signal handler may not allocate one. */
static _Atomic(unw_addr_space_t) fatal_as;
static pthread_once_t fatal_once = PTHREAD_ONCE_INIT;

static void fatal_as_make(void)
{
    atomic_store_explicit(&fatal_as, as_create(), memory_order_release);   /* pairs with weft__dump_current */
}
#endif

void weft__dump_prepare(void)
{
#if WEFT_HAVE_LIBUNWIND
    pthread_once(&fatal_once, fatal_as_make);
#endif
}

void weft__dump_current(int fd, void *uc)
{
    struct weft__worker *w = weft__worker_self();
    weft_task *t = w ? w->current : NULL;
    if (!t)
        return;
    char entry[320], site[320];
    name_now((uintptr_t)t->fn, false, uc != NULL, entry, sizeof(entry));
    name_now((uintptr_t)t->spawn_pc, true, uc != NULL, site, sizeof(site));
    const char *name = t->fiber ? t->fiber->name : "";
    say(fd, "weft: in coroutine %llu%s%s%s [running on worker %u]:\n", (unsigned long long)t->id,
        name[0] ? " \"" : "", name, name[0] ? "\"" : "", w->index);
#if WEFT_HAVE_LIBUNWIND
    unw_addr_space_t as = atomic_load_explicit(&fatal_as, memory_order_acquire);   /* pairs with weft__dump_prepare */
    unw_context_t here;
    struct image img;
    if (!uc)
        unw_getcontext(&here);
    image_from_ucontext(&img, uc ? (const ucontext_t *)uc : (const ucontext_t *)&here);
    uintptr_t pcs[MAX_FRAMES];
    unsigned n = as ? unwind(as, &img, pcs, MAX_FRAMES, 0) : 0;
    for (unsigned i = 0; i < n; i++) {
        char fn[320];
        name_now(pcs[i], i > 0, uc != NULL, fn, sizeof(fn));
        say(fd, "  #%-2u 0x%016lx %s\n", i, (unsigned long)pcs[i], fn);
    }
    if (n == MAX_FRAMES)
        say(fd, "  ...\n");
    if (!as)
        say(fd, "  (backtrace unavailable: libunwind could not make an address space)\n");
#else
    (void)uc;
    say(fd, "  (backtrace unavailable: weft was built without libunwind)\n");
#endif
    say(fd, "  entry %s\n  created by %s\n", entry, site);
}

void weft__dump_current_fd(int fd)
{
    weft__dump_current(fd, NULL);
}
