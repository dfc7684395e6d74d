/*
 * Coroutine stacks.
 *
 * A slot is one coroutine's memory: a guard region at the bottom, the stack, and
 * the weft_task at the very top, so a coroutine that blocked after using little
 * stack has touched a single page:
 *
 *     lo                                                             hi
 *     | guard (PROT_NONE) | stack, grows down  <-------  | weft_task |
 *                         ^ fiber.stack_lo                ^ the task pointer
 *
 * Slots are carved from chunks of CHUNK_SLOTS, each one anonymous mapping made
 * with MAP_NORESERVE, so memory is committed only where a stack is touched.
 * Guards are installed with MADV_GUARD_INSTALL (Linux 6.13+), which adds no
 * mapping; adjacent chunks then merge and a million stacks take a handful of
 * VMAs, far below vm.max_map_count. Older kernels get mprotect(PROT_NONE), which
 * splits the mapping twice per slot and so caps a process near 32,000 stacks.
 *
 * Free slots go first to the freeing worker's private pool (no locking, still
 * hot in cache). Past POOL_MAX the worker hands half of its pool to the shared
 * warm list, where the other workers find them (tasks often finish on another
 * worker than the one that spawned them). The shared lists are arrays, not
 * lists threaded through the slots, so that cold slots stay untouched. Chunks
 * are unmapped when the runtime is destroyed.
 *
 * Giving memory back. WARM_MAX slots always stay warm. Beyond that, slots go
 * back to the kernel (MADV_DONTNEED, then the cold list) only once demand has
 * fallen: over each TRIM_EPOCH_NS the list records its low-water mark, and the
 * slots below it that exceed WARM_MAX sat unused for the whole epoch. Idle
 * workers give those back, a batch at a time, before they sleep (sched.c). The
 * earlier design gave back every slot past WARM_MAX as it was freed: under a
 * steady churn of coroutines that paid an madvise on every exit and a page
 * fault on every spawn (each tens of microseconds on a virtual machine), and
 * 100,000 sleepers woke hundreds of milliseconds late behind them.
 *
 * A stack overflow runs into the guard. The SIGSEGV handler, which runs on a
 * per-worker alternate signal stack, recognises a fault inside the current
 * coroutine's guard and aborts with a message naming the coroutine and its
 * stack size; any other fault goes to the handler that was there before.
 */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#define VALGRIND_STACK_REGISTER(lo, hi) 0u
#define VALGRIND_STACK_DEREGISTER(id) ((void)(id))
#endif

#if defined(WEFT__TSAN)
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define CHUNK_SLOTS 64u
#define POOL_MAX    64u
#define WARM_MAX    1024u     /* warm slots kept however long they go unused */
#define TRIM_EPOCH_NS 1000000000ull   /* unused this long past WARM_MAX: given back */
#define TRIM_BATCH  16u       /* slots given back between looks at the wake word */
#define GUARD_PAGES 4u        /* a frame larger than this skips the guard */
#define TASK_AREA   ((sizeof(struct weft_task) + 63u) & ~(size_t)63u)

struct chunk {
    struct chunk *next;
    void         *base;
    size_t        len;
};

struct weft__stacks {
    size_t          slot_size;    /* guard + stack + task, whole pages */
    size_t          configured;   /* weft_config.stack_size, for messages */
    size_t          guard_size;
    pthread_mutex_t lock;         /* guards everything below */
    struct slots {                /* an array of free slots */
        weft_task **at;
        size_t      n, cap;
    } warm, cold;                 /* warm: pages still there; cold: given back */
    struct chunk   *chunks;
    char           *bump, *bump_end;   /* uncarved part of the newest chunk */
    size_t          warm_low;     /* the fewest warm slots seen this epoch */
    size_t          trim_left;    /* found unused last epoch, not yet given back */
    _Atomic uint64_t trim_due;    /* end of the epoch; UINT64_MAX: none running.
                                   * Written under lock, read without. */
};

static _Atomic int guard_madvise = 1;   /* cleared once the kernel refuses it */

int weft__stacks_create(struct weft__stacks **out, size_t stack_size)
{
    size_t page_size = (size_t)sysconf(_SC_PAGESIZE);
    struct weft__stacks *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    size_t body = (stack_size + TASK_AREA + page_size - 1) & ~(page_size - 1);
    s->guard_size = GUARD_PAGES * page_size;
    s->slot_size = s->guard_size + body;
    s->configured = stack_size;
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
        munmap(c->base, c->len);
        free(c);
        c = next;
    }
    free(s->warm.at);
    free(s->cold.at);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static inline char *slot_base(const struct weft__stacks *s, weft_task *t)
{
    return (char *)t + TASK_AREA - s->slot_size;
}

/* Holds s->lock. Returns the base of a never-used slot, or NULL. */
static char *carve(struct weft__stacks *s)
{
    if (s->bump == s->bump_end) {
        struct chunk *c = malloc(sizeof(*c));
        if (!c)
            return NULL;
        c->len = s->slot_size * CHUNK_SLOTS;
        c->base = mmap(NULL, c->len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (c->base == MAP_FAILED) {
            free(c);
            return NULL;
        }
        c->next = s->chunks;
        s->chunks = c;
        s->bump = c->base;
        s->bump_end = (char *)c->base + c->len;
    }
    char *base = s->bump;
    s->bump += s->slot_size;
    return base;
}

static int install_guard(struct weft__stacks *s, char *base)
{
    if (atomic_load_explicit(&guard_madvise, memory_order_relaxed)) {
        if (madvise(base, s->guard_size, MADV_GUARD_INSTALL) == 0)
            return 0;
        if (errno != EINVAL)
            return -errno;
        atomic_store_explicit(&guard_madvise, 0, memory_order_relaxed);   /* kernel before 6.13 */
    }
    return mprotect(base, s->guard_size, PROT_NONE) == 0 ? 0 : -errno;
}

static void give_back(struct weft__stacks *s, weft_task *t)
{
    char *lo = slot_base(s, t) + s->guard_size;
    madvise(lo, s->slot_size - s->guard_size, MADV_DONTNEED);   /* advice: failure loses nothing */
}

static void task_reset(struct weft__stacks *s, weft_task *t)
{
    memset(t, 0, sizeof(*t));
    t->fiber.stack_lo = slot_base(s, t) + s->guard_size;
    t->fiber.stack_size = (size_t)((char *)t - (char *)t->fiber.stack_lo);
    if (RUNNING_ON_VALGRIND)
        t->vg_stack = VALGRIND_STACK_REGISTER(t->fiber.stack_lo, (char *)t);
#if defined(WEFT__TSAN)
    t->fiber.tsan = __tsan_create_fiber(0);
#endif
}

weft_task *weft__stack_get(struct weft__stacks *s, struct weft__pool *pool)
{
    weft_task *t;
    if (pool && pool->head) {
        t = pool->head;
        pool->head = t->next;
        pool->count--;
        task_reset(s, t);
        return t;
    }
    pthread_mutex_lock(&s->lock);
    if (s->warm.n || s->cold.n) {
        t = s->warm.n ? s->warm.at[--s->warm.n] : s->cold.at[--s->cold.n];
        if (s->warm.n < s->warm_low)
            s->warm_low = s->warm.n;
        pthread_mutex_unlock(&s->lock);
        task_reset(s, t);
        return t;
    }
    char *base = carve(s);
    pthread_mutex_unlock(&s->lock);
    if (!base)
        return NULL;
    if (install_guard(s, base) != 0) {
        /* The slot stays carved but unused: losing it is better than handing
         * out a stack without a guard. */
        return NULL;
    }
    t = (weft_task *)(base + s->slot_size - TASK_AREA);
    task_reset(s, t);
    return t;
}

/* Holds s->lock. False if the array cannot grow. */
static bool slots_push(struct slots *a, weft_task *t)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        weft_task **at = realloc(a->at, cap * sizeof(*at));
        if (!at)
            return false;
        a->at = at;
        a->cap = cap;
    }
    a->at[a->n++] = t;
    return true;
}

/* Holds s->lock. Starts watching the warm list's low-water mark if it holds
 * more than WARM_MAX, else stops. */
static void start_epoch(struct weft__stacks *s, uint64_t now)
{
    s->warm_low = s->warm.n;
    atomic_store_explicit(&s->trim_due, s->warm.n > WARM_MAX ? now + TRIM_EPOCH_NS : UINT64_MAX,
                          memory_order_relaxed);   /* a hint for idle workers; the lock orders the rest */
}

static void slot_retire(weft_task *t)
{
    if (RUNNING_ON_VALGRIND)
        VALGRIND_STACK_DEREGISTER(t->vg_stack);
#if defined(WEFT__TSAN)
    __tsan_destroy_fiber(t->fiber.tsan);
#endif
    atomic_store_explicit(&t->magic, WEFT__TASK_DEAD, memory_order_relaxed);   /* read by misuse checks */
}

void weft__stack_put(struct weft__stacks *s, struct weft__pool *pool, weft_task *t)
{
    slot_retire(t);
    if (pool && pool->count < POOL_MAX) {
        t->next = pool->head;
        pool->head = t;
        pool->count++;
        return;
    }
    /* Hand this slot and, from a worker, half of its pool to the shared list.
     * Tasks often finish on another worker than the one that spawned them, so
     * one pool overflows while another runs dry. A slot that cannot be listed
     * (no memory for the array) is simply not reused. */
    weft_task *list[POOL_MAX / 2 + 1];
    size_t n = 0;
    list[n++] = t;
    while (pool && n < POOL_MAX / 2 + 1) {
        weft_task *x = pool->head;
        pool->head = x->next;
        pool->count--;
        list[n++] = x;
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
    weft_task *batch[TRIM_BATCH];
    size_t k = 0;
    pthread_mutex_lock(&s->lock);
    if (now >= atomic_load_explicit(&s->trim_due, memory_order_relaxed)) {
        if (!s->trim_left)   /* the epoch just ended: what sat unused through it */
            s->trim_left = s->warm_low > WARM_MAX ? s->warm_low - WARM_MAX : 0;
        size_t excess = s->warm.n > WARM_MAX ? s->warm.n - WARM_MAX : 0;
        k = s->trim_left < excess ? s->trim_left : excess;
        if (k > TRIM_BATCH)
            k = TRIM_BATCH;
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
        slots_push(&s->cold, batch[i]);
    pthread_mutex_unlock(&s->lock);
    return k != 0;
}

void weft__pool_drain(struct weft__stacks *s, struct weft__pool *pool)
{
    pthread_mutex_lock(&s->lock);
    while (pool->head) {
        weft_task *t = pool->head;
        pool->head = t->next;
        slots_push(&s->warm, t);
    }
    pool->count = 0;
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
    if (t && addr < (char *)t->fiber.stack_lo &&
        addr >= (char *)t->fiber.stack_lo - t->rt->stacks->guard_size) {
        char msg[256];
        size_t n = 0;
        n += put_s(msg + n, "weft: stack overflow in coroutine 0x");
        n += fmt_u(msg + n, (uintptr_t)t, 16);
        n += put_s(msg + n, " (entry function 0x");
        n += fmt_u(msg + n, (uintptr_t)t->fn, 16);
        n += put_s(msg + n, ", stack size ");
        n += fmt_u(msg + n, t->rt->stacks->configured, 10);
        n += put_s(msg + n, " bytes); raise weft_config.stack_size\n");
        ssize_t rc = write(STDERR_FILENO, msg, n);
        (void)rc;
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
