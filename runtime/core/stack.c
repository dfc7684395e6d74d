/* SPDX-License-Identifier: MIT */
/*
 * Coroutine stacks.
 *
 * A slot is one coroutine's stack: a guard region at the bottom, then the stack,
 * which grows down from the slot's top. A slot is named by its top address.
 *
 *     base                                                              top
 *     | guard (PROT_NONE) | stack, grows down  <---------------- | fiber |
 *                         ^ fiber->stack_lo
 *
 * The fiber (saved registers, sanitizer state) of the task that holds the slot
 * sits above its stack, WEFT__FIBER_SPACE bytes, so that the handle need not
 * carry it; the slot is that much larger than the configured stack size.
 *
 * A task holds a slot only while it runs or is blocked: it takes one when it
 * first runs (weft__stack_bind) and hands it back as soon as it finishes
 * (weft__stack_unbind), before anyone has joined it. A million tasks spawned
 * before any runs thus share the few slots that finished tasks keep warm,
 * instead of touching a million fresh stacks. The task itself, its handle,
 * lives elsewhere (core/task.c).
 *
 * Promises. A spawn must fail at once, with -ENOMEM, when no stack could be
 * had for the task later; the scheduler cannot fail a task that is about to
 * run. So each spawn takes a promise: one of the slots that are free and
 * shared (the warm and cold lists, and the slots of the chunks mapped but
 * not yet carved), counted in `promised`, which never exceeds them.
 * Binding a task that comes with a promise either finds a slot in the worker's
 * private pool, and the promise passes to the worker's credit for its next
 * spawn, or spends the promise on a shared slot, which must then exist.
 * Workers take promises in batches (pool->credit), so a spawn usually touches
 * no shared state. Promises cost only address space: the chunks that back
 * them are mapped with MAP_NORESERVE and grow geometrically, so a million
 * spawns make about seventy mappings, which merge into a few VMAs.
 *
 * Slots are carved from those chunks as they are first bound. Guards are
 * installed then, with MADV_GUARD_INSTALL (Linux 6.13+), which adds no mapping;
 * adjacent chunks merge and a million stacks take a handful of VMAs, far below
 * vm.max_map_count. Older kernels get mprotect(PROT_NONE), which splits the
 * mapping twice per slot and so caps a process near 32,000 stacks; there the
 * guard is installed when the promise is made, since that is where it can
 * fail. MADV_GUARD_INSTALL fails only when the kernel cannot allocate a page
 * table, as touching the stack then would; binding stops the program then.
 *
 * Free slots go first to the freeing worker's private pool (no locking, still
 * hot in cache), linked through their top word. Past POOL_MAX the worker hands
 * half of its pool to the shared warm list, where the other workers find them
 * (tasks often finish on another worker than the one that spawned them). The
 * shared lists are arrays, not lists threaded through the slots, so that cold
 * slots stay untouched. Chunks are unmapped when the runtime is destroyed.
 *
 * Giving memory back. WARM_MAX slots always stay warm. Beyond that, slots go
 * back to the kernel (MADV_DONTNEED, then the cold list) only once demand has
 * fallen: over each TRIM_EPOCH_NS the list records its low-water mark, and the
 * slots below it that exceed WARM_MAX sat unused for the whole epoch. Idle
 * workers give those back, a batch at a time, before they sleep (core/search.c). The
 * earlier design gave back every slot past WARM_MAX as it was freed: under a
 * steady churn of coroutines that paid an madvise on every exit and a page
 * fault on every spawn, each dear on a virtual machine, and many sleepers
 * woke late behind them (`weft-bench timers`; figures in docs/benchmarks.md).
 *
 * A stack overflow runs into the guard. The SIGSEGV handler, which runs on a
 * per-worker alternate signal stack, recognises a fault inside the current
 * coroutine's guard and aborts with a message naming the coroutine and its
 * stack size; any other fault goes to the handler that was there before.
 *
 * The guard's size. A function moves the stack pointer down by its whole
 * frame at once, and a frame (or an alloca, or a VLA) larger than the guard
 * may be first written below it, on the stack of the coroutine in the next
 * slot down, with no fault at all. So the guard is WEFT_STACK_GUARD (weft.h),
 * 256 KiB, whatever the stack size: any one frame up to that size that
 * overflows lands in it. That is the default stack size, so a frame that a
 * default stack could hold is caught wherever it starts; it is four times the
 * 64 KiB buffers that C code likes to keep on the stack, and four times the
 * guard that GCC's -fstack-clash-protection assumes on AArch64 (a page on
 * x86-64). Code built with that flag touches every page of a large frame from
 * the top down, so its overflows stop at the guard's first page whatever the
 * size. What the guard costs:
 *   - address space: 256 GiB more for a million slots, 0.2% of the 128 TiB
 *     that 47-bit user space holds;
 *   - page tables, with MADV_GUARD_INSTALL: each guard page is a page-table
 *     entry, 1/512 of its size with 4 KiB pages, so 512 bytes a carved slot
 *     (a 1 MiB guard, the gap the kernel keeps below a main thread's stack,
 *     would cost 2 KiB, half again of the page a blocked coroutine costs);
 *   - with mprotect: nothing more, as the guard is one VMA whatever its size,
 *     and the count of VMAs, which vm.max_map_count caps, does not change;
 *   - under strict overcommit (vm.overcommit_memory=2, where MAP_NORESERVE is
 *     ignored), commit charge, as for the stacks themselves.
 * What it cannot do: a frame larger than the guard, in code built without
 * stack-clash protection, can still step over it.
 */
#include "core.h"
#include "base/sys.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(WEFT__TSAN)
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
#endif
#if defined(WEFT__ASAN)
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define CHUNK_MIN   64u       /* slots in the first chunk; each next one doubles */
#define CHUNK_MAX   16384u    /* ... up to this many (8 GiB of address space at 256 KiB) */
#define POOL_MAX    64u
#define PROMISE_BATCH 32u     /* promises a worker takes at a time */
#define WARM_MAX    1024u     /* warm slots kept however long they go unused */
#define TRIM_EPOCH_NS 1000000000ull   /* unused this long past WARM_MAX: given back */
#define TRIM_BATCH  16u       /* slots given back between looks at the wake word */

struct chunk {
    struct chunk *next;
    char         *base;
    size_t        len;
    char         *bump;           /* its part not carved yet starts here */
};

struct weft__stacks {
    size_t          slot_size;    /* guard + stack, whole pages */
    size_t          configured;   /* weft_config.stack_size, for messages */
    size_t          guard_size;   /* WEFT_STACK_GUARD, in whole pages */
    pthread_mutex_t lock;         /* guards everything below */
    struct slots {                /* an array of free slots, by their tops */
        char  **at;
        size_t  n, cap;
    } warm, cold;                 /* warm: pages still there; cold: given back,
                                   * or guarded and never touched */
    struct chunk   *chunks;       /* every mapping, newest first */
    struct chunk  **carvable;     /* those with slots not carved yet, a stack */
    size_t          ncarvable, carvable_cap;
    size_t          uncarved;     /* slots not carved yet, in all of them */
    size_t          chunk_slots;  /* the size of the next chunk */
    size_t          promised;     /* see the top of this file */
    size_t          warm_low;     /* the fewest warm slots seen this epoch */
    size_t          trim_left;    /* found unused last epoch, not yet given back */
    _Atomic uint64_t trim_due;    /* end of the epoch; UINT64_MAX: none running.
                                   * Written under lock, read without. */
};

/* Whether MADV_GUARD_INSTALL works here: probed once per process. */
static pthread_once_t guard_probe_once = PTHREAD_ONCE_INIT;
static bool guard_madvise;

static void guard_probe(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return;
    guard_madvise = madvise(p, page, MADV_GUARD_INSTALL) == 0;
    munmap(p, 2 * page);
}

int weft__stacks_create(struct weft__stacks **out, size_t stack_size)
{
    pthread_once(&guard_probe_once, guard_probe);
    size_t page_size = (size_t)sysconf(_SC_PAGESIZE);
    struct weft__stacks *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    size_t body = (stack_size + WEFT__FIBER_SPACE + page_size - 1) & ~(page_size - 1);
    s->guard_size = (WEFT_STACK_GUARD + page_size - 1) & ~(page_size - 1);
    s->slot_size = s->guard_size + body;
    s->configured = stack_size;
    s->chunk_slots = CHUNK_MIN;
    atomic_init(&s->trim_due, UINT64_MAX);
    pthread_mutex_init(&s->lock, NULL);
    *out = s;
    return 0;
}

void weft__stacks_destroy(struct weft__stacks *s)
{
    struct chunk *c = s->chunks;
    while (c) {
        struct chunk *next = c->next;
#if defined(WEFT__ASAN)
        /* A finished coroutine never returns through its last frames, so
         * their redzones stay poisoned in ASan's shadow; a mapping made
         * later at these addresses (a slab of task handles, say) would
         * inherit them, as this ASan clears no shadow on mmap. Only the
         * slots carved ever held frames. */
        __asan_unpoison_memory_region(c->base, (size_t)(c->bump - c->base));
#endif
        munmap(c->base, c->len);
        free(c);
        c = next;
    }
    free(s->warm.at);
    free(s->cold.at);
    free(s->carvable);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static inline char *slot_base(const struct weft__stacks *s, char *top)
{
    return top - s->slot_size;
}

/* The free-list link of a slot in a private pool: its top word. */
static inline char **pool_link(char *top)
{
    return (char **)top - 1;
}

/* Holds s->lock. Makes room for `extra` more; false if the array cannot grow. */
static bool slots_room(struct slots *a, size_t extra)
{
    if (a->n + extra <= a->cap)
        return true;
    size_t cap = a->cap ? a->cap : 256;
    while (cap < a->n + extra)
        cap *= 2;
    char **at = realloc(a->at, cap * sizeof(*at));
    if (!at)
        return false;
    a->at = at;
    a->cap = cap;
    return true;
}

/* Holds s->lock. False if the array cannot grow. */
static bool slots_push(struct slots *a, char *top)
{
    if (!slots_room(a, 1))
        return false;
    a->at[a->n++] = top;
    return true;
}

/* Holds s->lock. Free slots that a promise may count on: with mprotect
 * guards, only those already guarded. */
static size_t shared_free(const struct weft__stacks *s)
{
    size_t n = s->warm.n + s->cold.n;
    return guard_madvise ? n + s->uncarved : n;
}

/* Holds s->lock. Maps a chunk of at least `need` slots. False if it cannot. */
static bool map_chunk(struct weft__stacks *s, size_t need)
{
    if (s->ncarvable == s->carvable_cap) {
        size_t cap = s->carvable_cap ? s->carvable_cap * 2 : 16;
        struct chunk **at = realloc(s->carvable, cap * sizeof(*at));
        if (!at)
            return false;
        s->carvable = at;
        s->carvable_cap = cap;
    }
    struct chunk *c = malloc(sizeof(*c));
    if (!c)
        return false;
    size_t n = s->chunk_slots > need ? s->chunk_slots : need;
    for (;;) {
        c->len = s->slot_size * n;
        c->base = mmap(NULL, c->len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (c->base != MAP_FAILED)
            break;
        if (n == need) {   /* a smaller chunk may still fit */
            free(c);
            return false;
        }
        n = need;
    }
    if (s->chunk_slots < CHUNK_MAX)
        s->chunk_slots *= 2;
    c->bump = c->base;
    c->next = s->chunks;
    s->chunks = c;
    s->carvable[s->ncarvable++] = c;
    s->uncarved += n;
    return true;
}

/* Holds s->lock and s->uncarved > 0. The top of a slot never used, with no
 * guard yet. */
static char *carve(struct weft__stacks *s)
{
    struct chunk *c = s->carvable[s->ncarvable - 1];
    c->bump += s->slot_size;
    if (c->bump == c->base + c->len)
        s->ncarvable--;
    s->uncarved--;
    return c->bump;
}

uint64_t weft__stacks_held(struct weft__stacks *s)
{
    size_t carved = 0;
    pthread_mutex_lock(&s->lock);
    for (const struct chunk *c = s->chunks; c; c = c->next)
        carved += (size_t)(c->bump - c->base) / s->slot_size;
    size_t held = carved > s->cold.n ? carved - s->cold.n : 0;   /* cold: given back or never touched */
    uint64_t bytes = (uint64_t)held * (s->slot_size - s->guard_size);
    pthread_mutex_unlock(&s->lock);
    return bytes;
}

static int install_guard(struct weft__stacks *s, char *base)
{
    if (guard_madvise) {
        int err;
        do
            err = madvise(base, s->guard_size, MADV_GUARD_INSTALL) == 0 ? 0 : -errno;
        while (err == -EINTR || err == -EAGAIN);
        return err;
    }
    return mprotect(base, s->guard_size, PROT_NONE) == 0 ? 0 : -errno;
}

/* Holds s->lock. Makes the shared lists hold n slots more than are promised:
 * with MADV_GUARD_INSTALL by mapping address space; with mprotect, whose
 * guards can run out, by carving and guarding each slot now. */
static int make_room(struct weft__stacks *s, size_t n)
{
    while (shared_free(s) < s->promised + n) {
        size_t short_by = s->promised + n - shared_free(s);
        if (guard_madvise) {
            if (!map_chunk(s, short_by))
                return -ENOMEM;
            continue;
        }
        if (!s->uncarved && !map_chunk(s, short_by))
            return -ENOMEM;
        if (!slots_room(&s->cold, 1))
            return -ENOMEM;
        char *top = carve(s);
        if (install_guard(s, slot_base(s, top)) != 0)
            return -ENOMEM;   /* that slot stays carved but unused */
        slots_push(&s->cold, top);   /* cannot fail: room was made above */
    }
    return 0;
}

int weft__stack_promise(struct weft__stacks *s, struct weft__pool *pool)
{
    if (pool && pool->credit) {
        pool->credit--;
        return 0;
    }
    size_t n = pool ? PROMISE_BATCH : 1;
    pthread_mutex_lock(&s->lock);
    int err = make_room(s, n);
    if (err && n > 1)
        err = make_room(s, n = 1);
    if (!err)
        s->promised += n;
    pthread_mutex_unlock(&s->lock);
    if (!err && pool)
        pool->credit += (unsigned)n - 1;
    return err;
}

/* Holds s->lock. Spends a promise on a shared slot; *guard: it has none yet. */
static char *take_shared(struct weft__stacks *s, bool *guard)
{
    weft__check(s->promised > 0 && shared_free(s) >= s->promised, "a stack promise was broken");
    s->promised--;
    *guard = false;
    if (s->warm.n) {
        char *top = s->warm.at[--s->warm.n];
        if (s->warm.n < s->warm_low)
            s->warm_low = s->warm.n;
        return top;
    }
    if (s->cold.n)
        return s->cold.at[--s->cold.n];
    *guard = true;
    return carve(s);
}

void weft__stack_bind(struct weft__stacks *s, struct weft__pool *pool, weft_task *t)
{
    char *top = pool->head;
    if (top) {
        pool->head = *pool_link(top);
        pool->count--;
        if (++pool->credit > 2 * PROMISE_BATCH) {   /* the task's promise is ours now */
            pthread_mutex_lock(&s->lock);
            s->promised -= PROMISE_BATCH;
            pthread_mutex_unlock(&s->lock);
            pool->credit -= PROMISE_BATCH;
        }
    } else {
        bool guard;
        pthread_mutex_lock(&s->lock);
        top = take_shared(s, &guard);
        pthread_mutex_unlock(&s->lock);
        if (guard && install_guard(s, slot_base(s, top)) != 0)
            weft__panic(__FILE__, __LINE__, "the kernel could not install a stack guard page (out of memory)");
    }
    struct weft__fiber *f = (struct weft__fiber *)(top - WEFT__FIBER_SPACE);
    f->stack_lo = slot_base(s, top) + s->guard_size;
    f->stack_size = (size_t)((char *)f - (char *)f->stack_lo);
    f->asan_fake = NULL;
    f->why = WEFT__WHY_NONE;   /* the dump's notes: the slot's last holder left its own */
    f->name[0] = '\0';
    f->wait_from = 0;   /* seq is even: its last holder's exit left it so (core.h) */
    if (weft__on_valgrind())
        f->vg_stack = weft__vg_stack_register(f->stack_lo, (char *)f);
#if defined(WEFT__TSAN)
    f->tsan = __tsan_create_fiber(0);   /* TSan counts fibers as threads: only while bound */
#endif
    t->fiber = f;
}

static void give_back(struct weft__stacks *s, char *top)
{
    char *lo = slot_base(s, top) + s->guard_size;
    madvise(lo, s->slot_size - s->guard_size, MADV_DONTNEED);   /* advice: failure loses nothing */
}

/* Holds s->lock. Starts watching the warm list's low-water mark if it holds
 * more than WARM_MAX, else stops. */
static void start_epoch(struct weft__stacks *s, uint64_t now)
{
    s->warm_low = s->warm.n;
    atomic_store_explicit(&s->trim_due, s->warm.n > WARM_MAX ? now + TRIM_EPOCH_NS : UINT64_MAX,
                          memory_order_relaxed);   /* a hint for idle workers; the lock orders the rest */
}

void weft__stack_unbind(struct weft__stacks *s, struct weft__pool *pool, struct weft__fiber *f)
{
    char *top = (char *)f + WEFT__FIBER_SPACE;
    if (weft__on_valgrind())
        weft__vg_stack_deregister(f->vg_stack);
#if defined(WEFT__TSAN)
    __tsan_destroy_fiber(f->tsan);
#endif
    if (pool->count < POOL_MAX) {
        *pool_link(top) = pool->head;
        pool->head = top;
        pool->count++;
        return;
    }
    /* Hand this slot and half of the pool to the shared list. Tasks often
     * finish on another worker than the one that spawned them, so one pool
     * overflows while another runs dry. A slot that cannot be listed (no
     * memory for the array) is simply not reused. */
    char *list[POOL_MAX / 2 + 1];
    size_t n = 0;
    list[n++] = top;
    while (n < POOL_MAX / 2 + 1) {
        list[n++] = pool->head;
        pool->head = *pool_link(pool->head);
        pool->count--;
    }
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n; i++)
        slots_push(&s->warm, list[i]);
    if (s->warm.n > WARM_MAX && atomic_load_explicit(&s->trim_due, memory_order_relaxed) == UINT64_MAX)
        start_epoch(s, weft_now());
    pthread_mutex_unlock(&s->lock);
}

uint64_t weft__stacks_trim_due(struct weft__stacks *s)
{
    return atomic_load_explicit(&s->trim_due, memory_order_relaxed);
}

bool weft__stacks_trim(struct weft__stacks *s, _Atomic uint32_t *stop)
{
    uint64_t due = atomic_load_explicit(&s->trim_due, memory_order_relaxed);
    if (due == UINT64_MAX || atomic_load_explicit(stop, memory_order_relaxed))
        return false;
    uint64_t now = weft_now();
    if (now < due)
        return false;
    char *batch[TRIM_BATCH];
    size_t k = 0;
    pthread_mutex_lock(&s->lock);
    if (now >= atomic_load_explicit(&s->trim_due, memory_order_relaxed)) {
        if (!s->trim_left)   /* the epoch just ended: what sat unused through it */
            s->trim_left = s->warm_low > WARM_MAX ? s->warm_low - WARM_MAX : 0;
        size_t excess = s->warm.n > WARM_MAX ? s->warm.n - WARM_MAX : 0;
        k = s->trim_left < excess ? s->trim_left : excess;
        if (k > TRIM_BATCH)
            k = TRIM_BATCH;
        /* The batch is out of every list while it is given back: leave
         * enough listed for the promises, and room to list it again. */
        size_t unpromised = shared_free(s) - s->promised;
        if (k > unpromised)
            k = unpromised;
        if (!slots_room(&s->cold, k))
            k = 0;
        /* From the top: which k go back makes no difference to the memory
         * kept, and taking the bottom ones would move the whole array on
         * every batch, quadratic in a million slots. */
        s->warm.n -= k;
        memcpy(batch, s->warm.at + s->warm.n, k * sizeof *batch);
        s->trim_left = k ? s->trim_left - k : 0;
        if (!s->trim_left)
            start_epoch(s, now);
    }
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < k; i++)
        give_back(s, batch[i]);
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < k; i++)
        slots_push(&s->cold, batch[i]);   /* cannot fail: room was made above */
    pthread_mutex_unlock(&s->lock);
    return k != 0;
}

void weft__pool_drain(struct weft__stacks *s, struct weft__pool *pool)
{
    pthread_mutex_lock(&s->lock);
    while (pool->head) {
        char *top = pool->head;
        pool->head = *pool_link(top);
        slots_push(&s->warm, top);
    }
    pool->count = 0;
    s->promised -= pool->credit;
    pool->credit = 0;
    pthread_mutex_unlock(&s->lock);
}

/* ---- overflow detection ------------------------------------------------------ */

static struct sigaction old_segv;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static int guard_error;

static size_t fmt_u(char *p, uintptr_t v, unsigned base)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

static size_t put_s(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return n;
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    struct weft__worker *w = weft__worker_self();
    weft_task *t = w ? w->current : NULL;
    char *addr = si->si_addr;
    if (t && t->fiber && addr < (char *)t->fiber->stack_lo &&
        addr >= (char *)t->fiber->stack_lo - t->rt->stacks->guard_size) {
        char msg[256];
        size_t n = 0;
        n += put_s(msg + n, "weft: stack overflow in coroutine ");
        n += fmt_u(msg + n, t->id, 10);
        n += put_s(msg + n, " (stack size ");
        n += fmt_u(msg + n, t->rt->stacks->configured, 10);
        n += put_s(msg + n, " bytes); raise weft_config.stack_size\n");
        ssize_t rc = weft__sys_write(STDERR_FILENO, msg, n);
        (void)rc;
        /* Its name, entry, creator and frames: the overflowed stack is still
         * mapped above the guard, and this runs on the alternate stack. */
        weft__dump_current(STDERR_FILENO, uc);
        abort();
    }
    /* Not ours: let the previous disposition have it. */
    if (old_segv.sa_flags & SA_SIGINFO) {
        old_segv.sa_sigaction(sig, si, uc);
    } else if (old_segv.sa_handler == SIG_DFL || old_segv.sa_handler == SIG_IGN) {
        /* Re-raise with the default action by returning to the faulting
         * instruction with the old disposition in place. */
        sigaction(SIGSEGV, &old_segv, NULL);
    } else {
        old_segv.sa_handler(sig);
    }
}

static void guard_install_once(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &old_segv) != 0)
        guard_error = -errno;
}

/* Any thread. Installs the process-wide SIGSEGV handler once; it stays, since
 * other code may have chained to it since. */
int weft__guard_install(void)
{
    pthread_once(&guard_once, guard_install_once);
    return guard_error;
}

#define ALTSTACK_SIZE (64u * 1024u)

/* The calling worker thread. */
int weft__altstack_enter(void **mem)
{
    void *p = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    stack_t ss = { .ss_sp = p, .ss_size = ALTSTACK_SIZE, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL) != 0) {
        int err = -errno;
        munmap(p, ALTSTACK_SIZE);
        return err;
    }
    *mem = p;
    return 0;
}

void weft__altstack_leave(void *mem)
{
    stack_t ss = { .ss_flags = SS_DISABLE };
    sigaltstack(&ss, NULL);
    munmap(mem, ALTSTACK_SIZE);
}
