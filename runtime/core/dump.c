/* SPDX-License-Identifier: MIT */
/*
 * weft_dump: a report of every coroutine of the process, taken while the
 * workers run: the walk over the coroutines and the text written; and the
 * names coroutines give themselves. Beside it: the unwinder (core/unwind.c),
 * names of code addresses (core/symbol.c), the dump signal (core/dumpsig.c)
 * and the part of a fatal message that names a coroutine (core/fatal.c).
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
 *     and a coroutine that was not switched out with its context saved when
 *     first copied, or that ran meanwhile (the fiber's seq, core.h), is shown
 *     without a backtrace rather than with a wrong one. Its saved stack
 *     pointer would not tell: a coroutine that parks again and again from
 *     one call saves the same one each time.
 *   - Backtraces are unwound from the copy (core/unwind.c), never from the
 *     live stack.
 * A coroutine running on a worker has no saved context to copy: its worker's
 * thread is asked for its registers and stack instead, by the stall signal
 * (core/stallbt.c), every worker of a runtime at once before one wait of at
 * most stallbt.c's WAIT_NS, and only while a coroutine's own code runs there. The frames
 * are marked as taken while it ran, and if the worker had moved on to
 * another coroutine by the time its handler ran (its schedule count or its
 * coroutine changed) the dump says that they may be what it ran next.
 * Without the stall signal (stall reports off, WEFT_STALL_SIGNAL=0, or the
 * program's own) the dump says why there are none. The coroutine calling
 * weft_dump is not asked: its frames are the caller's stack, unwound in
 * place from weft_dump down (unw_getcontext).
 * Nothing stops the workers: the only locks taken are the runtime list's
 * (shared) and each handle allocator's, for as long as it takes to copy the
 * list of its slabs.
 *
 * A dump lists the coroutines as they were when each was copied: one spawned
 * during the dump may be missing, and one that finished may still be listed.
 */
#include "dump.h"
#include "base/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    const char    *note;        /* a line above its frames, or NULL */
    const char    *no_bt;       /* why there is no backtrace, or NULL */
};

/* What the dump saw of one worker of a runtime: the coroutine it ran and,
 * where its thread gave them, that coroutine's frames. */
struct onworker {
    uintptr_t   task;           /* the task it ran (w->current), or 0 */
    uint32_t    tick;           /* its schedules, read before task */
    bool        user;           /* in a coroutine's own code (w->in_user), read after */
    unsigned    nframes;
    uintptr_t   pcs[WEFT__DUMP_FRAMES];
    const char *note;           /* for the entry: a line above the frames, or NULL */
    const char *no_bt;          /* for the entry: why there are no frames, or NULL */
    char        text[224];      /* where note or no_bt is made up */
};

/* The workers seen, one block per runtime, kept until the dump is written:
 * entries point into them. */
struct onworkers {
    struct onworkers *next;
    struct onworker   w[];
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
    uintptr_t     weft_lo, weft_hi;   /* weft's code (weft__code_span) */
    uintptr_t     hook_lo, hook_hi;   /* libweft-hook's (weft__hook_span), or 0 and 0 */
    uintptr_t     self;         /* the calling coroutine's handle, or 0 */
    struct onworkers *seen;     /* each runtime's workers, newest first */
    struct weft__symtab st;
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
        int err = weft__copy_in(dst, src, len);
        if (err != -ENOSYS && err != -EPERM)
            return err;
        d->direct = true;
    }
    memcpy(dst, (const void *)src, len);
    return 0;
}

#if WEFT_HAVE_LIBUNWIND
/* The saved stack pointer of a fiber, as arch/ctx.h keeps it. */
static uintptr_t saved_sp(const struct weft__fiber *f)
{
    return (uintptr_t)f->ctx.sp;
}

/* Unwinds img into e's frames, at the end of d->pcs (see unwind for from). */
static void unwind_into(struct dump *d, struct entry *e, struct weft__image *img, uintptr_t from)
{
    if (!reserve((void **)&d->pcs, &d->pcs_cap, d->npcs + WEFT__DUMP_FRAMES, sizeof(*d->pcs))) {
        d->err = -ENOMEM;
        e->no_bt = "backtrace unavailable: out of memory";
        return;
    }
    e->frame0 = d->npcs;
    e->nframes = weft__unwind(d->st.as, img, d->pcs + d->npcs, WEFT__DUMP_FRAMES, from);
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
    if (weft__copy_in(d->stack, sp, len)) {
        e->no_bt = "backtrace unavailable: its stack went away while copied";
        return;
    }
    struct weft__image img = { .lo = sp, .hi = sp + len, .buf = d->stack };
    if (!weft__image_regs(&img, &f->ctx)) {
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
    struct weft__image img;
    unw_getcontext(&uc);
    weft__image_from_ucontext(&img, (const ucontext_t *)&uc);
    unwind_into(d, e, &img, (uintptr_t)weft_dump);
#else
    (void)d;
    e->no_bt = "backtrace unavailable: weft was built without libunwind";
#endif
}

/*
 * Takes the frames of the coroutines running on rt's workers as on[] saw
 * them, from their threads (core/stallbt.c), into on[]: every worker asked at
 * once, one wait, then each unwound, all under the snapshots' lock. A worker
 * running the caller, or weft's own code, is not asked.
 */
static void running_frames(struct dump *d, const weft_rt *rt, struct onworker *on, unsigned nw)
{
    size_t nask = 0;
    for (unsigned i = 0; i < nw; i++) {
        if (!on[i].task || on[i].task == d->self)
            continue;
#if WEFT_HAVE_LIBUNWIND
        if (!on[i].user)
            on[i].no_bt = "backtrace unavailable: it was in weft's own code, whose stack changes as it is read";
        else if (!rt->stall_signal)
            on[i].no_bt = "backtrace unavailable: its thread gives them on the stall signal, and the "
                          "stall signal is off (weft_config.stall_signal -1, WEFT_STALL_SIGNAL=0, or "
                          "stall reports off)";
        else if (!d->st.as)
            on[i].no_bt = "backtrace unavailable: libunwind could not make an address space";
        else
            nask++;
#else
        on[i].no_bt = "backtrace unavailable: weft was built without libunwind";
#endif
    }
#if WEFT_HAVE_LIBUNWIND
    if (!nask)
        return;
    struct weft__ask *a = calloc(nask, sizeof(*a));
    unsigned *at = calloc(nask, sizeof(*at));
    if (!a || !at) {
        d->err = -ENOMEM;
        for (unsigned i = 0; i < nw; i++)
            if (on[i].task && !on[i].no_bt && on[i].task != d->self)
                on[i].no_bt = "backtrace unavailable: out of memory";
        free(a);
        free(at);
        return;
    }
    size_t k = 0;
    for (unsigned i = 0; i < nw; i++)
        if (on[i].task && !on[i].no_bt && on[i].task != d->self) {
            at[k] = i;
            a[k++].w = rt->workers[i];
        }
    if (!weft__snap_lock(rt, a[0].why, sizeof(a[0].why))) {
        for (k = 0; k < nask; k++) {
            snprintf(on[at[k]].text, sizeof(on[at[k]].text), "%s", a[0].why);
            on[at[k]].no_bt = on[at[k]].text;
        }
        free(a);
        free(at);
        return;
    }
    weft__snap_take(a, nask);
    for (k = 0; k < nask; k++) {
        struct onworker *o = &on[at[k]];
        struct weft__snap *s = a[k].snap;
        if (!s) {
            snprintf(o->text, sizeof(o->text), "%s", a[k].why);
            o->no_bt = o->text;
            continue;
        }
        o->nframes = weft__snap_unwind(d->st.as, s, o->pcs, WEFT__DUMP_FRAMES);
        bool moved = s->tick != o->tick || s->current != o->task;
        if (s->asleep)
            snprintf(o->text, sizeof(o->text), "frames taken while it ran, asleep in %s, which a "
                     "signal would cut short: unwound without one, from the stack and "
                     "instruction pointers alone%s", s->asleep,
                     moved ? "; the worker had moved on: they may be what it ran next" : "");
        else
            snprintf(o->text, sizeof(o->text), "frames taken while it ran, by its thread on the "
                     "stall signal%s", moved ? "; the worker had moved on when the signal came: "
                     "they may be what it ran next" : "");
        o->note = o->text;
    }
    weft__snap_unlock();
    free(a);
    free(at);
#else
    (void)rt;
    (void)nask;
#endif
}

/* Gives e, running on the worker seen as o, the frames its thread gave. */
static void take_running(struct dump *d, struct entry *e, const struct onworker *o)
{
    e->note = o->note;
    e->no_bt = o->no_bt;
    if (!o->nframes)
        return;
    if (!reserve((void **)&d->pcs, &d->pcs_cap, d->npcs + o->nframes, sizeof(*d->pcs))) {
        d->err = -ENOMEM;
        e->note = NULL;
        e->no_bt = "backtrace unavailable: out of memory";
        return;
    }
    e->frame0 = d->npcs;
    e->nframes = o->nframes;
    memcpy(d->pcs + d->npcs, o->pcs, o->nframes * sizeof(*d->pcs));
    d->npcs += o->nframes;
}

/* Adds the task whose handle was copied as t (at addr) to d, if it is alive. */
static void take_task(struct dump *d, const weft_rt *rt, const weft_task *t, uintptr_t addr,
                      const struct onworker *on, unsigned nworkers)
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
        if (on[i].task == addr)
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
    /* The park state is read again after the fiber, so that it belongs to
     * the switch whose context was copied (the fiber's seq, unchanged at the
     * last copy, says that no other came between). */
    uint32_t ps;
    if (copy_obj(d, &ps, addr + offsetof(weft_task, pstate), sizeof(ps)))
        return;
    if (e->worker >= 0) {
        e->state = ST_RUNNING;
        if (addr == d->self)
            take_own_backtrace(d, e);
        else
            take_running(d, e, &on[e->worker]);
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
                      (f.seq & 1) || f2.seq != f.seq || memcmp(&f2.ctx, &f.ctx, sizeof(f.ctx)) ||
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
    struct onworkers *seen = calloc(1, sizeof(*seen) + (nw ? nw : 1) * sizeof(seen->w[0]));
    struct weft__span *spans = NULL;
    unsigned char *raw = malloc(SLAB_CHUNK * WEFT__TASK_STRIDE);
    size_t nspans = 0;
    if (seen) {
        seen->next = d->seen;
        d->seen = seen;
    }
    if (seen && raw) {
        struct onworker *on = seen->w;
        for (unsigned i = 0; i < nw; i++) {
            struct weft__worker *w = rt->workers[i];
            weft_task *cur = NULL;
            on[i].tick = atomic_load_explicit(&w->tick, memory_order_relaxed);   /* before current:
                                                                         * a later switch changes it */
            if (!copy_obj(d, &cur, (uintptr_t)&w->current, sizeof(cur)))
                on[i].task = (uintptr_t)cur;
            on[i].user = atomic_load_explicit(&w->in_user, memory_order_acquire);   /* pairs with
                                                                         * owner_leave; orders tid's load */
        }
        running_frames(d, rt, on, nw);
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
    if (!seen || !raw || !spans) {
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
                take_task(d, rt, &t, at + i * WEFT__TASK_STRIDE, seen->w, nw);
            }
            at += k * WEFT__TASK_STRIDE;
        }
    }
    free(raw);
    free(spans);
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
    case WEFT__WHY_CHILD: {   /* what: waitpid's pid argument */
        long pid = (long)(intptr_t)e->what;
        if (pid > 0)
            snprintf(buf, len, "child process %ld", pid);
        else if (pid == -1)
            snprintf(buf, len, "child process, any");
        else if (pid == 0)
            snprintf(buf, len, "child process in the caller's group");
        else
            snprintf(buf, len, "child process in group %ld", -pid);
        return;
    }
    case WEFT__WHY_OFFLOAD:
        snprintf(buf, len, "offload %s", weft__sym_name(&d->st, e->what, false));
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
 * weft's code (core/span.c) or of libweft-hook's, whose interposers are
 * weft's way in for a program's read(2) or sleep(3). The name alone misses
 * weft's static functions (a public function often tail-calls one, leaving
 * no frame of its own). A program linked with a reordering of its own (LTO,
 * a symbol ordering file) may see a frame of weft's counted as its own: only
 * the summary's grouping suffers.
 */
static bool is_weft(struct dump *d, uintptr_t pc, bool ret)
{
    if ((pc >= d->weft_lo && pc <= d->weft_hi) || (d->hook_hi && pc >= d->hook_lo && pc <= d->hook_hi))
        return true;
    const char *sym = weft__sym_name(&d->st, pc, ret);
    return strncmp(sym, "weft_", 5) == 0 || strncmp(sym, "weft.", 5) == 0;
}

/* Where e waits or stopped, as its frames say: the innermost frame that is
 * not weft's, the one that called into weft. NULL without frames. */
static const char *site_of(struct dump *d, const struct entry *e)
{
    const uintptr_t *pc = d->pcs + e->frame0;
    for (unsigned i = 0; i < e->nframes; i++)
        if (!is_weft(d, pc[i], i > 0))
            return weft__sym_name(&d->st, pc[i], i > 0);
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

/* The name of pc and, where its source position is known, " at file.c:42"
 * after it, into buf. */
static const char *name_at(struct dump *d, uintptr_t pc, bool ret, char *buf, size_t len)
{
    const char *name = weft__sym_name(&d->st, pc, ret);
    const char *src = weft__sym_src(&d->st, pc, ret);
    snprintf(buf, len, "%s%s%s", name, src ? " at " : "", src ? src : "");
    return buf;
}

/* Names every address write_entry shows, then looks up their source
 * positions in one batch (core/srcline.c). */
static void name_all(struct dump *d)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct entry *e = &d->e[i];
        for (unsigned k = 0; k < e->nframes; k++)
            weft__sym_name(&d->st, d->pcs[e->frame0 + k], k > 0);
        weft__sym_name(&d->st, e->fn, false);
        if (e->spawn_pc)
            weft__sym_name(&d->st, e->spawn_pc, true);
    }
    weft__sym_lines(&d->st);
}

static void write_entry(struct dump *d, struct out *o, const struct entry *e, uint64_t now)
{
    char st[160], fn[400];
    state_text(d, e, st, sizeof(st), true);
    char age[48] = "";
    if (e->state == ST_WAITING && e->since)   /* its worker's clock may be a tick ahead of ours */
        snprintf(age, sizeof(age), ", %.2f s", now > e->since ? (double)(now - e->since) / 1e9 : 0.0);
    out_f(o, "\ncoroutine %llu", (unsigned long long)e->id);
    if (e->name[0])
        out_f(o, " \"%s\"", e->name);
    out_f(o, " [%s%s]:\n", st, age);
    if (e->note)
        out_f(o, "  (%s)\n", e->note);
    for (unsigned i = 0; i < e->nframes; i++) {
        uintptr_t pc = d->pcs[e->frame0 + i];
        out_f(o, "  #%-2u 0x%016lx %s\n", i, (unsigned long)pc, name_at(d, pc, i > 0, fn, sizeof(fn)));
    }
    if (e->no_bt)
        out_f(o, "  (%s)\n", e->no_bt);
    out_f(o, "  entry %s\n", name_at(d, e->fn, false, fn, sizeof(fn)));
    if (e->spawn_pc)
        out_f(o, "  created by %s\n", name_at(d, e->spawn_pc, true, fn, sizeof(fn)));
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
    d->st.as = weft__unwind_space();
#endif
    weft__code_span(&d->weft_lo, &d->weft_hi);
    weft__hook_span(&d->hook_lo, &d->hook_hi);
    struct weft__worker *w = weft__worker_self();
    d->self = (uintptr_t)(w ? w->current : NULL);
    uint64_t now = weft__coarse_now();
    weft__each_runtime(take_runtime, d);
    if (d->n > 1)   /* d->e is NULL when there is nothing */
        qsort(d->e, d->n, sizeof(*d->e), entry_cmp);
    name_all(d);

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
    weft__symtab_free(&d->st);
    while (d->seen) {
        struct onworkers *next = d->seen->next;
        free(d->seen);
        d->seen = next;
    }
    free(d->e);
    free(d->pcs);
    free(d->stack);
    free(d);
    free(o);
    errno = saved_errno;
    return err;
}
