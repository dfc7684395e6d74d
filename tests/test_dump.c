/* SPDX-License-Identifier: MIT */
/* Seeing inside a running weft: weft_dump, weft_set_name, the dump signal,
 * fatal messages that name the coroutine, and weft_stats_get. */
#define _GNU_SOURCE   /* memfd_create; fileno in dump_text.h */
#include "common.h"
#include "dump_text.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

/* Whether weft was built with libunwind: backtraces, and names of static
 * functions, need it (tests/CMakeLists.txt). */
#ifndef WEFT_TEST_LIBUNWIND
#define WEFT_TEST_LIBUNWIND 1
#endif
/* Whether frames can show file:line: weft built with libdw, and this file
 * with debug information (tests/CMakeLists.txt). */
#ifndef WEFT_TEST_SRCLINES
#define WEFT_TEST_SRCLINES 0
#endif

/* ---- reading a dump ------------------------------------------------------------ */

/* The start of the first line of text that holds key; NULL if none does. */
static const char *line_with(const char *text, const char *key)
{
    const char *at = strstr(text, key);
    while (at && at > text && at[-1] != '\n')
        at--;
    return at;
}

/* The section of the dump about the coroutine named `name`: from its
 * "coroutine N \"name\"" line to the next blank line, as a new string; NULL
 * if there is none. */
static char *section_named(const char *text, const char *name)
{
    char key[64];
    snprintf(key, sizeof(key), " \"%s\" [", name);
    const char *at = line_with(text, key);
    if (!at)
        return NULL;
    const char *end = strstr(at, "\n\n");
    size_t len = end ? (size_t)(end - at) : strlen(at);
    return strndup(at, len);
}

/* Whether the section's frames list `inner` and, further down, `outer`. */
static __attribute__((unused)) bool frames_in_order(const char *sec, const char *inner, const char *outer)
{
    const char *a = strstr(sec, inner);
    return a && strstr(a + strlen(inner), outer) != NULL;
}

static uint64_t now_ms(void)
{
    return weft_now() / 1000000u;
}

/* ---- one coroutine waiting for each reason ----------------------------------- */

enum kind {
    K_CHAN_SEND, K_CHAN_RECV, K_SELECT, K_MUTEX, K_COND, K_WG, K_SEM, K_JOIN, K_SLEEP,
    K_READ, K_WRITE, K_ACCEPT, K_CONNECT, K_POLL, K_OFFLOAD, K_SIGNAL, K_CHILD, K_CHILD_STOP,
    K_COUNT
};

/* The name each waiter gives itself, and what the dump must say it waits for. */
static const struct { const char *name, *state; } kinds[K_COUNT] = {
    [K_CHAN_SEND] = { "w-chan-send", "[chan send 0x" },
    [K_CHAN_RECV] = { "w-chan-recv", "[chan receive 0x" },
    [K_SELECT]    = { "w-select", "[select, 2 cases" },
    [K_MUTEX]     = { "w-mutex", "[mutex 0x" },
    [K_COND]      = { "w-cond", "[condition 0x" },
    [K_WG]        = { "w-wg", "[wait group 0x" },
    [K_SEM]       = { "w-sem", "[semaphore 0x" },
    [K_JOIN]      = { "w-join", "[join coroutine " },
    [K_SLEEP]     = { "w-sleep", "[sleep" },
    [K_READ]      = { "w-read", "[read fd " },
    [K_WRITE]     = { "w-write", "[write fd " },
    [K_ACCEPT]    = { "w-accept", "[accept fd " },
    [K_CONNECT]   = { "w-connect", "[connect fd " },
    [K_POLL]      = { "w-poll", "[poll fd " },
    [K_OFFLOAD]   = { "w-offload", "[offload " },
    [K_SIGNAL]    = { "w-signal", "[signal 12" },   /* SIGUSR2 */
    [K_CHILD]     = { "w-child", "[child process " },
    /* Waited for a stop as well: looks with sleeps between them, which is
     * every weft_waitpid's path where pidfd_open is missing (Valgrind). */
    [K_CHILD_STOP] = { "w-child-stop", "[child process " },
};

struct world {
    weft_chan *ch_send, *ch_recv, *ch_sel;
    weft_mutex mu, cond_mu;
    weft_cond  cond;
    weft_wg    wg;
    weft_sem   sem;
    weft_task *join_target;
    int        read_pipe[2], write_pipe[2], poll_pipe[2];
    int        listener, connector;
    struct sockaddr_in full_addr;
    int        full_lfd, fill[8], nfill;
    _Atomic int offload_release;
    pid_t      child;          /* waits in pause() until the test kills it */
    pid_t      stopper;        /* the same, awaited with WUNTRACED */
    sigset_t   usr2;           /* awaited and never sent */
};

struct waiter_arg {
    struct world *w;
    enum kind     kind;
};

/* Each kind blocks in a function of its own, called from the entry function,
 * so that the dump must show a frame below the entry. noinline keeps them
 * frames in an -O2 build; the volatile keeps them from being tail calls. */
#define BLOCKER(fn, body) \
    static __attribute__((noinline)) int fn(struct world *w) { volatile int r = (body); return r; }

static void *offloaded(void *arg)
{
    struct world *w = arg;
    while (!atomic_load(&w->offload_release))
        usleep(1000);
    return NULL;
}

static void *join_target_fn(void *arg)
{
    struct world *w = arg;
    int v;
    weft_set_name("w-join-target");
    return (void *)(intptr_t)weft_chan_recv(w->ch_recv, &v);
}

BLOCKER(block_chan_send, weft_chan_send(w->ch_send, &(int){ 1 }))
BLOCKER(block_chan_recv, weft_chan_recv(w->ch_recv, &(int){ 0 }))
BLOCKER(block_select, weft_select((weft_sel[]){ { w->ch_sel, WEFT_RECV, &(int){ 0 } },
                                                { w->ch_sel, WEFT_RECV, &(int){ 0 } } }, 2))
BLOCKER(block_mutex, weft_mutex_lock(&w->mu))
BLOCKER(block_cond, (weft_mutex_lock(&w->cond_mu), weft_cond_wait(&w->cond, &w->cond_mu)))
BLOCKER(block_wg, weft_wg_wait(&w->wg))
BLOCKER(block_sem, weft_sem_acquire(&w->sem))
BLOCKER(block_join, weft_join(w->join_target, NULL))
BLOCKER(block_sleep, weft_sleep(3600ull * 1000000000u))
BLOCKER(block_read, (int)weft_read(w->read_pipe[0], &(char){ 0 }, 1))
BLOCKER(block_write, (int)weft_write(w->write_pipe[1], "x", 1))
BLOCKER(block_accept, weft_accept(w->listener, NULL, NULL, 0))
BLOCKER(block_connect, weft_connect(w->connector, (struct sockaddr *)&w->full_addr, sizeof(w->full_addr)))
BLOCKER(block_poll, weft_poll(w->poll_pipe[0], POLLIN))
BLOCKER(block_offload, weft_offload(offloaded, w, NULL))
BLOCKER(block_signal, weft_sigwait(&w->usr2, NULL))
BLOCKER(block_child, weft_waitpid(w->child, NULL, 0))
BLOCKER(block_child_stop, weft_waitpid(w->stopper, NULL, WUNTRACED))

static const char *const blocker_name[K_COUNT] = {
    "block_chan_send", "block_chan_recv", "block_select", "block_mutex", "block_cond",
    "block_wg", "block_sem", "block_join", "block_sleep", "block_read", "block_write",
    "block_accept", "block_connect", "block_poll", "block_offload", "block_signal",
    "block_child", "block_child_stop",
};

static void *waiter_entry(void *arg)
{
    struct waiter_arg *a = arg;
    int err = weft_set_name(kinds[a->kind].name);
    if (err)
        return (void *)(intptr_t)err;
    int (*const fns[K_COUNT])(struct world *) = {
        block_chan_send, block_chan_recv, block_select, block_mutex, block_cond, block_wg,
        block_sem, block_join, block_sleep, block_read, block_write, block_accept,
        block_connect, block_poll, block_offload, block_signal, block_child, block_child_stop,
    };
    volatile int r = fns[a->kind](a->w);
    return (void *)(intptr_t)r;
}

/* A child that waits in pause() until killed. */
static pid_t idle_child(void)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* gone with the test, even one that fails */
        for (;;)
            pause();
    }
    return pid;
}

static void world_open(struct world *w)
{
    memset(w, 0, sizeof(*w));
    sigemptyset(&w->usr2);
    sigaddset(&w->usr2, SIGUSR2);
    w->child = idle_child();
    w->stopper = idle_child();
    cr_assert_eq(weft_chan_create(&w->ch_send, sizeof(int), 0), 0);
    cr_assert_eq(weft_chan_create(&w->ch_recv, sizeof(int), 0), 0);
    cr_assert_eq(weft_chan_create(&w->ch_sel, sizeof(int), 0), 0);
    w->mu = (weft_mutex)WEFT_MUTEX_INIT;
    w->cond_mu = (weft_mutex)WEFT_MUTEX_INIT;
    w->cond = (weft_cond)WEFT_COND_INIT;
    w->wg = (weft_wg)WEFT_WG_INIT;
    cr_assert_eq(weft_wg_add(&w->wg, 1), 0);
    cr_assert_eq(weft_sem_init(&w->sem, 0), 0);
    cr_assert_eq(pipe(w->read_pipe), 0);
    cr_assert_eq(pipe(w->write_pipe), 0);
    cr_assert_eq(pipe(w->poll_pipe), 0);
    /* A full pipe: the writer waits. */
    int fl = fcntl(w->write_pipe[1], F_GETFL);
    fcntl(w->write_pipe[1], F_SETFL, fl | O_NONBLOCK);
    char junk[4096] = { 0 };
    while (write(w->write_pipe[1], junk, sizeof(junk)) > 0)
        ;
    fcntl(w->write_pipe[1], F_SETFL, fl);
    w->listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert_eq(bind(w->listener, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(w->listener, 4), 0);
    w->full_lfd = full_listener(&w->full_addr, w->fill, 8, &w->nfill);
    cr_assert_geq(w->full_lfd, 0, "no listener with a full queue could be made");
    w->connector = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(w->connector, 0);
}

static void world_close(struct world *w)
{
    weft_chan_destroy(w->ch_send);
    weft_chan_destroy(w->ch_recv);
    weft_chan_destroy(w->ch_sel);
    int fds[] = { w->read_pipe[0], w->read_pipe[1], w->write_pipe[0], w->write_pipe[1],
                  w->poll_pipe[0], w->poll_pipe[1], w->listener, w->connector, w->full_lfd };
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
    for (int i = 0; i < w->nfill; i++)
        close(w->fill[i]);
    kill(w->child, SIGKILL);
    waitpid(w->child, NULL, 0);   /* -ECHILD where the waiter's helper reaped it */
    kill(w->stopper, SIGKILL);
    waitpid(w->stopper, NULL, 0);
}

/* Takes dumps until every waiter shows with its reason and its frames, or a
 * deadline. The text of the last dump, to free(). */
static char *dump_when_all_wait(void)
{
    uint64_t deadline = now_ms() + 60000;
    for (;;) {
        char *text = dump_text();
        bool all = true;
        for (int k = 0; k < K_COUNT && all; k++) {
            char *sec = section_named(text, kinds[k].name);
            /* One whose wait is made of looks may run while it is copied. */
            all = sec && strstr(sec, kinds[k].state) && !strstr(sec, "it ran while it was copied");
            free(sec);
        }
        if (all || now_ms() > deadline)
            return text;
        free(text);
        weft_sleep(10 * 1000000u);
    }
}

static void *every_reason(void *arg)
{
    struct world w;
    world_open(&w);
    cr_assert_eq(weft_mutex_lock(&w.mu), 0);   /* held: the mutex waiter waits */
    cr_assert_eq(weft_spawn(&w.join_target, join_target_fn, &w), 0);
    struct waiter_arg args[K_COUNT];
    weft_task *t[K_COUNT];
    for (int k = 0; k < K_COUNT; k++) {
        args[k] = (struct waiter_arg){ .w = &w, .kind = (enum kind)k };
        cr_assert_eq(weft_spawn(&t[k], waiter_entry, &args[k]), 0);
    }
    char *text = dump_when_all_wait();
    for (int k = 0; k < K_COUNT; k++) {
        char *sec = section_named(text, kinds[k].name);
        cr_assert_not_null(sec, "the dump does not list \"%s\":\n%s", kinds[k].name, text);
        cr_assert_not_null(strstr(sec, kinds[k].state), "\"%s\" does not wait for %s:\n%s",
                           kinds[k].name, kinds[k].state, sec);
#if WEFT_TEST_LIBUNWIND
        cr_assert(frames_in_order(sec, blocker_name[k], "waiter_entry"),
                  "no frame of %s below the entry function:\n%s", blocker_name[k], sec);
        cr_assert_not_null(strstr(sec, "  entry waiter_entry"), "the entry is not named:\n%s", sec);
        cr_assert_not_null(strstr(sec, "  created by every_reason"), "the creator is not named:\n%s", sec);
#else
        cr_assert_not_null(strstr(sec, "weft was built without libunwind"), "%s", sec);
#endif
        free(sec);
    }
    /* The child waited for is named by its pid. */
    char want[64];
    const struct { enum kind k; pid_t pid; } children[] = { { K_CHILD, w.child }, { K_CHILD_STOP, w.stopper } };
    for (size_t i = 0; i < sizeof(children) / sizeof(children[0]); i++) {
        char *sec = section_named(text, kinds[children[i].k].name);
        snprintf(want, sizeof(want), "[child process %ld, ", (long)children[i].pid);
        cr_assert_not_null(strstr(sec, want), "\"%s\" does not wait for %s:\n%s",
                           kinds[children[i].k].name, want, sec);
        free(sec);
    }
    /* The summary groups them by where they wait: one line per blocker. */
    const char *summary_end = strstr(text, "\ncoroutine ");
    cr_assert_not_null(summary_end);
    for (int k = 0; k < K_COUNT && WEFT_TEST_LIBUNWIND; k++) {
        const char *line = strstr(text, blocker_name[k]);
        cr_assert(line && line < summary_end, "the summary has no line for %s:\n%s", blocker_name[k], text);
    }
    free(text);

    /* Everyone leaves by cancellation; the offload's function by its flag. */
    atomic_store(&w.offload_release, 1);
    for (int k = 0; k < K_COUNT; k++)
        cr_assert_eq(weft_cancel(t[k]), 0);
    kill(w.child, SIGKILL);
    kill(w.stopper, SIGKILL);
    for (int k = 0; k < K_COUNT; k++)
        cr_assert_eq(weft_join(t[k], NULL), 0);
    /* Its joiner withdrew: the handle is still ours to join. */
    cr_assert_eq(weft_cancel(w.join_target), 0);
    cr_assert_eq(weft_join(w.join_target, NULL), 0);
    cr_assert_eq(weft_mutex_unlock(&w.mu), 0);
    world_close(&w);
    return NULL;
}

Test(dump, names_each_wait_reason_the_name_and_a_frame_below_the_entry)
{
    FOR_EACH_BACKEND(b)
        run_with_io(2, b, every_reason, NULL);
}

/* ---- the age of a wait made of many looks --------------------------------------- */

/* A waitpid for a stop has no descriptor to wait on and looks again and
 * again, sleeping between looks: its age is the whole wait's. */
static void *wait_for_a_stop(void *arg)
{
    weft_set_name("w-looks");
    int status;
    return (void *)(intptr_t)weft_waitpid(*(pid_t *)arg, &status, WUNTRACED);
}

static void *age_of_looks(void *arg)
{
    pid_t child = idle_child();
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, wait_for_a_stop, &child), 0);
    weft_sleep(400 * 1000000u);
    double age = -1;
    for (int tries = 0; tries < 100 && age < 0; tries++) {   /* between two looks it is runnable */
        char *text = dump_text();
        char *sec = section_named(text, "w-looks");
        char want[64];
        snprintf(want, sizeof(want), "[child process %ld, ", (long)child);
        const char *at = sec ? strstr(sec, want) : NULL;
        if (at)
            age = strtod(at + strlen(want), NULL);
        free(sec);
        free(text);
        if (age < 0)
            weft_sleep(1000000u);
    }
    cr_assert_eq(weft_cancel(t), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    cr_assert_geq(age, 0, "the dump never showed the wait");
    cr_assert_geq(age, 0.3, "a wait of 0.4 s shows an age of %.2f s", age);
    return NULL;
}

Test(dump, the_age_of_a_wait_made_of_many_looks_counts_from_its_start)
{
    FOR_EACH_BACKEND(b)
        run_with_io(1, b, age_of_looks, NULL);
}

/* ---- a coroutine that parks again at the same place ------------------------------- */

/* A coroutine that sleeps again and again from one call parks each time with
 * the same saved stack pointer, so a dump that copied its context, then its
 * stack, then its context again, cannot tell by the stack pointer that it
 * ran in between: its frames must still be its own, or none. */
struct again {
    _Atomic int stop;
    _Atomic unsigned long parks;
};

static __attribute__((noinline)) void sleep_once_more(struct again *a)
{
    weft_sleep(1000u);   /* 1 us: it is back and parked again within the dump's copies */
    atomic_fetch_add_explicit(&a->parks, 1, memory_order_relaxed);
    __asm__ volatile("" ::: "memory");   /* not a tail call: this frame stays */
}

static void *again_entry(void *arg)
{
    struct again *a = arg;
    weft_set_name("w-again");
    while (!atomic_load_explicit(&a->stop, memory_order_relaxed))
        sleep_once_more(a);
    return NULL;
}

static void *dump_one_that_parks_again(void *arg)
{
    (void)arg;
    struct again a = { .stop = 0 };
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, again_entry, &a), 0);
    while (atomic_load(&a.parks) == 0)
        weft_sleep(1000000u);
    unsigned dumps = RUNNING_ON_VALGRIND ? 20 : 400, with_frames = 0;
    for (unsigned i = 0; i < dumps; i++) {
        char *text = dump_text();
        char *sec = section_named(text, "w-again");
        cr_assert_not_null(sec, "the dump does not list it:\n%s", text);
        /* Only the copies of it switched out are in question: running, its
         * frames come from its thread, wherever it is in its loop. */
        if (!strstr(sec, "backtrace unavailable") && !strstr(sec, "[running on worker")) {
#if WEFT_TEST_LIBUNWIND
            cr_assert(frames_in_order(sec, "sleep_once_more", "again_entry"),
                      "dump %u shows frames that are not its own:\n%s", i, sec);
#endif
            with_frames++;
        }
        free(sec);
        free(text);
        weft_yield();
    }
    atomic_store(&a.stop, 1);
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert_gt(atomic_load(&a.parks), 0);
    cr_log_info("%u of %u dumps showed its frames", with_frames, dumps);
    return NULL;
}

Test(dump, a_coroutine_parking_again_at_the_same_place_shows_its_own_frames_or_none, .timeout = 600)
{
    FOR_EACH_BACKEND(b)
        run_with_io(2, b, dump_one_that_parks_again, NULL);
}

/* ---- a file call --------------------------------------------------------------- */

static void *open_fifo(void *arg)
{
    int err = weft_set_name("w-file");
    if (err)
        return (void *)(intptr_t)err;
    int fd = weft_open(arg, O_RDONLY, 0);   /* waits for a writer */
    if (fd >= 0)
        close(fd);
    return (void *)(intptr_t)fd;
}

static void *file_call_waits(void *arg)
{
    char dir[] = "/tmp/weft-test-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[sizeof(dir) + 8];
    snprintf(path, sizeof(path), "%s/fifo", dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, open_fifo, path), 0);
    uint64_t deadline = now_ms() + 60000;
    char *text, *sec;
    for (;;) {
        text = dump_text();
        sec = section_named(text, "w-file");
        if ((sec && strstr(sec, "[file call")) || now_ms() > deadline)
            break;
        free(sec);
        free(text);
        weft_sleep(10 * 1000000u);
    }
    cr_assert_not_null(sec, "the dump does not list \"w-file\":\n%s", text);
    cr_assert_not_null(strstr(sec, "[file call"), "\"w-file\" does not wait for a file call:\n%s", sec);
    free(sec);
    free(text);
    /* A reader and writer in one: the open above goes on. */
    int fd = open(path, O_RDWR | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    void *r;
    cr_assert_eq(weft_join(t, &r), 0);
    cr_assert_geq((intptr_t)r, 0, "the waiting open failed: %d", (int)(intptr_t)r);
    close(fd);
    unlink(path);
    rmdir(dir);
    return NULL;
}

/* On epoll a helper thread makes pread, pwrite, open and fsync, and the dump
 * names the file call, not the helper's function. (On a ring the kernel opens
 * a FIFO without waiting for a writer, so this wait is epoll's alone.) */
Test(dump, names_a_file_call_made_by_a_helper_thread)
{
    if (backend_available(WEFT_IO_EPOLL))
        run_with_io(1, WEFT_IO_EPOLL, file_call_waits, NULL);
}

/* ---- consistency while coroutines migrate ---------------------------------- */

struct churn {
    weft_chan  *park;          /* the steady ones wait here */
    _Atomic int stop;
    _Atomic unsigned dumps;
};

static void *short_lived(void *arg)
{
    for (int i = 0; i < 3; i++)
        weft_yield();
    return NULL;
}

static void *mover(void *arg)
{
    struct churn *c = arg;
    while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
        weft_yield();
        weft_task *t;
        if (weft_spawn(&t, short_lived, NULL) == 0)
            weft_join(t, NULL);
        if ((uintptr_t)&t & 1)
            weft_sleep(1000);
    }
    return NULL;
}

static void *steady(void *arg)
{
    struct churn *c = arg;
    weft_set_name("steady");
    int v;
    return (void *)(intptr_t)weft_chan_recv(c->park, &v);
}

static int cmp_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Checks one dump: the header's count is the number of coroutines listed,
 * and the summary's counts add up to it; no id twice; `nsteady` coroutines
 * named "steady" that wait on the channel. */
static void check_dump(const char *text, size_t nsteady)
{
    size_t header = 0;
    cr_assert_eq(sscanf(text, "weft: 1 runtime, %zu coroutine", &header), 1, "a bad header: %.200s", text);
    size_t listed = 0, steady_seen = 0, summed = 0;
    uint64_t *ids = calloc(header + 1, sizeof(*ids));
    cr_assert_not_null(ids);
    const char *sum = strstr(text, "    count  state");
    cr_assert_not_null(sum, "no summary:\n%.400s", text);
    for (const char *p = strchr(sum, '\n') + 1; *p == ' '; p = strchr(p, '\n') + 1) {
        size_t n;
        if (sscanf(p, " %zu", &n) == 1)
            summed += n;
    }
    for (const char *p = text; (p = strstr(p, "\ncoroutine ")); p++) {
        /* strtoull, not sscanf, which measures the whole rest of the text
         * at every call. */
        char *end;
        unsigned long long id = strtoull(p + strlen("\ncoroutine "), &end, 10);
        cr_assert(end > p + strlen("\ncoroutine "), "no id: %.40s", p);
        cr_assert_lt(listed, header + 1, "more coroutines listed than the header says");
        ids[listed++] = id;
        const char *eol = strchr(p + 1, '\n');
        if (strncmp(strchr(p, '['), "[chan receive", 13) == 0 && eol &&
            memmem(p, (size_t)(eol - p), "\"steady\"", 8))
            steady_seen++;
    }
    /* Sorted, a coroutine listed twice sits beside itself. */
    qsort(ids, listed, sizeof(*ids), cmp_id);
    for (size_t i = 1; i < listed; i++)
        cr_assert_neq(ids[i], ids[i - 1], "coroutine %llu listed twice", (unsigned long long)ids[i]);
    free(ids);
    cr_assert_eq(listed, header, "the header says %zu, the dump lists %zu", header, listed);
    cr_assert_eq(summed, header, "the summary counts %zu, the header %zu", summed, header);
    cr_assert_eq(steady_seen, nsteady, "%zu of the %zu steady coroutines listed as waiting",
                 steady_seen, nsteady);
}

struct churn_run {
    struct churn *c;
    size_t        nsteady;
    unsigned      rounds;
};

/* A plain thread dumps while the coroutines move. */
static void *dumper_thread(void *arg)
{
    struct churn_run *r = arg;
    for (unsigned i = 0; i < r->rounds; i++) {
        char *text = dump_text();
        check_dump(text, r->nsteady);
        free(text);
        atomic_fetch_add(&r->c->dumps, 1);
    }
    return NULL;
}

static void *churn_main(void *arg)
{
    struct churn c = { .stop = 0 };
    cr_assert_eq(weft_chan_create(&c.park, sizeof(int), 0), 0);
    size_t nsteady = scaled(500), nmovers = scaled(3000);
    if (nmovers < 8)
        nmovers = 8;
    weft_task **steadies = calloc(nsteady, sizeof(*steadies));
    weft_task **movers = calloc(nmovers, sizeof(*movers));
    cr_assert(steadies && movers);
    for (size_t i = 0; i < nsteady; i++)
        cr_assert_eq(weft_spawn(&steadies[i], steady, &c), 0);
    /* All steady ones parked before the churn, so that every dump finds them. */
    uint64_t deadline = now_ms() + 60000;
    for (;;) {
        char *text = dump_text();
        size_t seen = 0;
        for (const char *p = text; (p = strstr(p, "\"steady\" [chan receive")); p++)
            seen++;
        free(text);
        if (seen == nsteady)
            break;
        cr_assert_lt(now_ms(), deadline, "only %zu of %zu steady coroutines parked", seen, nsteady);
        weft_sleep(10 * 1000000u);
    }
    for (size_t i = 0; i < nmovers; i++)
        cr_assert_eq(weft_spawn(&movers[i], mover, &c), 0);
    struct churn_run r = { .c = &c, .nsteady = nsteady, .rounds = RUNNING_ON_VALGRIND ? 3 : 10 };
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, dumper_thread, &r), 0);
    /* And a coroutine dumps too, while its worker's others wait. */
    for (unsigned i = 0; i < r.rounds / 2; i++) {
        char *text = dump_text();
        check_dump(text, nsteady);
        free(text);
    }
    pthread_join(th, NULL);
    atomic_store(&c.stop, 1);
    for (size_t i = 0; i < nmovers; i++)
        cr_assert_eq(weft_join(movers[i], NULL), 0);
    cr_assert_eq(weft_chan_close(c.park), 0);
    for (size_t i = 0; i < nsteady; i++)
        cr_assert_eq(weft_join(steadies[i], NULL), 0);
    cr_assert_eq(weft_chan_destroy(c.park), 0);
    cr_assert_eq(atomic_load(&c.dumps), r.rounds);
    free(steadies);
    free(movers);
    return NULL;
}

Test(dump, stays_consistent_while_thousands_of_coroutines_migrate, .timeout = 600)
{
    const unsigned workers[] = { 2, 4 };
    for (size_t i = 0; i < 2; i++)
        run_with(workers[i], churn_main, NULL);
}

/* ---- source positions ------------------------------------------------------------ */

/* The line of park_at_marker's wait, set as it waits; atomic, since the
 * dumping coroutine, on another worker, reads it. */
static _Atomic int marker_line;

/* Parks on ch in a frame of its own, recording the line of the call. */
static __attribute__((noinline)) int park_at_marker(weft_chan *ch)
{
    int v;
    atomic_store(&marker_line, __LINE__ + 1);
    volatile int r = weft_chan_recv(ch, &v);
    return r;
}

static void *marked_entry(void *arg)
{
    weft_set_name("marked");
    volatile int r = park_at_marker(arg);
    return (void *)(intptr_t)r;
}

/* The line of sec that shows the frame of fn; NULL if there is none. */
static __attribute__((unused)) char *frame_line(const char *sec, const char *fn)
{
    char key[64];
    snprintf(key, sizeof(key), " %s+0x", fn);
    const char *at = line_with(sec, key);
    return at ? strndup(at, strcspn(at, "\n")) : NULL;
}

static void *dump_of_marked(void *arg)
{
    weft_chan *ch;
    cr_assert_eq(weft_chan_create(&ch, sizeof(int), 0), 0);
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, marked_entry, ch), 0);
    char *text = NULL, *sec = NULL;
    uint64_t deadline = now_ms() + 60000;
    for (;;) {
        text = dump_text();
        sec = section_named(text, "marked");
        if (sec && strstr(sec, "[chan receive"))
            break;
        cr_assert_lt(now_ms(), deadline, "the marked coroutine never waited:\n%s", text);
        free(sec);
        free(text);
        weft_sleep(10 * 1000000u);
    }
#if WEFT_TEST_LIBUNWIND
    char *frame = frame_line(sec, "park_at_marker");
    cr_assert_not_null(frame, "no frame of park_at_marker:\n%s", sec);
    char want[64];
    snprintf(want, sizeof(want), " at test_dump.c:%d", atomic_load(&marker_line));
#if WEFT_TEST_SRCLINES
    size_t flen = strlen(frame), wlen = strlen(want);
    cr_assert(flen > wlen && strcmp(frame + flen - wlen, want) == 0,
              "the frame does not end with \"%s\": \"%s\"\n%s", want, frame, sec);
    char *entry = strstr(sec, "  entry marked_entry (");
    cr_assert_not_null(entry, "the entry is not named:\n%s", sec);
    cr_assert(strncmp(entry + strcspn(entry, ")"), ") at test_dump.c:", 17) == 0,
              "the entry has no source position:\n%s", sec);
#else
    /* No debug information or no libdw: function+offset alone. */
    cr_assert_null(strstr(frame, " at "), "a source position without one to read: \"%s\"", frame);
#endif
    free(frame);
#endif
    free(sec);
    free(text);
    cr_assert_eq(weft_chan_close(ch), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert_eq(weft_chan_destroy(ch), 0);
    return NULL;
}

Test(dump, a_frame_shows_its_file_and_line_where_debug_information_allows)
{
    run_with(2, dump_of_marked, NULL);
}

/* A dump from a coroutine with a small stack: the line tables are read on a
 * stack of weft's own, not the caller's. */
Test(dump, source_positions_need_little_of_the_callers_stack)
{
    weft_config cfg = { .workers = 1, .stack_size = 64 * 1024 };
    weft_rt *rt;
    cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
    weft_task *t;
    cr_assert_eq(weft_spawn_on(rt, &t, dump_of_marked, NULL), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

/* ---- frames of running coroutines ------------------------------------------------ */

/* A coroutine that spins, without a switch, in a frame of its own. */
struct spinner {
    atomic_int spinning;   /* set once it spins in busy_in_marker_for_dump */
    atomic_int stop;       /* set to end it */
};

static __attribute__((noinline)) void busy_in_marker_for_dump(struct spinner *s)
{
    atomic_store(&s->spinning, 1);
    uint64_t end = weft_now() + 300 * (uint64_t)1000000000u;   /* never a hang, whatever fails */
    for (unsigned long i = 0; !atomic_load_explicit(&s->stop, memory_order_relaxed); i++)
        if (i % (1ul << 20) == 0 && weft_now() > end)
            break;
}

static void *spinner_entry(void *arg)
{
    weft_set_name("spinner");
    busy_in_marker_for_dump(arg);
    return NULL;
}

/* Whether sec shows a frame of fn: a line "  #N 0x... fn+0x..". */
static bool shows_frame(const char *sec, const char *fn)
{
    char key[96];
    snprintf(key, sizeof(key), " %s+0x", fn);
    for (const char *p = sec; (p = strstr(p, key)); p++) {
        const char *line = p;
        while (line > sec && line[-1] != '\n')
            line--;
        if (strncmp(line, "  #", 3) == 0)
            return true;
    }
    return false;
}

/* The dump, until the spinner's section is one of it running and, where
 * want_frames, names the marker (a signal may come while it is between two
 * frames: then the next dump does), or the deadline passes. Returns the
 * last section, to free. */
static char *spinner_section(bool want_frames, char **textp)
{
    uint64_t deadline = now_ms() + (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND ? 60000 : 20000);
    for (;;) {
        char *text = dump_text();
        char *sec = section_named(text, "spinner");
        bool running = sec && strstr(sec, "[running on worker ");
        if ((running && (!want_frames || shows_frame(sec, "busy_in_marker_for_dump"))) ||
            now_ms() > deadline) {
            *textp = text;
            return sec;
        }
        free(sec);
        free(text);
        usleep(20000);
    }
}

/* Frames of a running coroutine are taken only where the stall signal's
 * handler can run them, and ThreadSanitizer holds a signal back until the
 * thread calls into its runtime, whose frames libunwind cannot follow: there
 * the entry shows frames or says why it has none (as tests/test_stall.c). */
static void check_spinner(const char *sec, const char *text)
{
    cr_assert_not_null(sec, "no spinner in the dump:\n%s", text);
    cr_assert_not_null(strstr(sec, "[running on worker "), "the spinner is not running:\n%s", text);
    if (!WEFT_TEST_LIBUNWIND) {
        cr_assert_not_null(strstr(sec, "(backtrace unavailable: weft was built without libunwind)"), "%s", sec);
    } else if (WEFT_TEST_TSAN) {
        cr_assert(strstr(sec, "\n  #0 ") || strstr(sec, "\n  (backtrace unavailable: "), "%s", sec);
    } else {
        cr_assert(shows_frame(sec, "busy_in_marker_for_dump"), "no frame of the marker:\n%s", sec);
        cr_assert(frames_in_order(sec, "busy_in_marker_for_dump", "spinner_entry"), "%s", sec);
        cr_assert_not_null(strstr(sec, "\n  (frames taken while it ran"), "the frames are not marked:\n%s", sec);
    }
}

enum spin_mode {
    SPIN_OTHER_THREAD,   /* a thread outside the runtime dumps */
    SPIN_COROUTINE,      /* a coroutine beside the spinner dumps */
    SPIN_NO_SIGNAL,      /* WEFT_STALL_SIGNAL=0 */
    SPIN_NO_STALLS,      /* stall reports off */
    SPIN_PROGRAMS,       /* the program handles the stall signal itself */
};

struct spin_run {
    enum spin_mode  mode;
    struct spinner  s;
    char           *sec, *text;   /* the spinner's section of the dump, and the dump */
    char           *own;          /* SPIN_COROUTINE: the dumping coroutine's section */
    atomic_int      done;
};

static void *dump_from_thread(void *arg)
{
    struct spin_run *r = arg;
    r->sec = spinner_section(r->mode <= SPIN_COROUTINE, &r->text);
    atomic_store(&r->done, 1);
    return NULL;
}

static __attribute__((noinline)) char *dump_from_a_coroutine(struct spin_run *r)
{
    r->sec = spinner_section(true, &r->text);
    volatile int keep = 0;   /* not a tail call: this frame stays */
    return keep ? NULL : r->text;
}

static void *spin_main(void *arg)
{
    struct spin_run *r = arg;
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, spinner_entry, &r->s), 0);
    while (!atomic_load(&r->s.spinning))
        weft_sleep(1000000u);
    if (r->mode == SPIN_COROUTINE) {
        weft_set_name("dumper");
        dump_from_a_coroutine(r);
        r->own = section_named(r->text, "dumper");
    } else {
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, dump_from_thread, r), 0);
        while (!atomic_load(&r->done))
            weft_sleep(5000000u);
        pthread_join(th, NULL);
    }
    atomic_store(&r->s.stop, 1);
    cr_assert_eq(weft_join(t, NULL), 0);
    return NULL;
}

static void on_stall_signal_mine(int sig)
{
}

/* A 2-worker runtime on backend whose spinner is dumped as mode says. */
static void spin_and_dump(struct spin_run *r, enum spin_mode mode, int backend)
{
    *r = (struct spin_run){ .mode = mode };
    /* Stalls are reported (the signal is installed) but not within the test. */
    weft_config cfg = { .workers = 2, .io_backend = backend, .stall_ns = 600 * (uint64_t)1000000000u };
    if (mode == SPIN_NO_SIGNAL)
        setenv("WEFT_STALL_SIGNAL", "0", 1);
    if (mode == SPIN_NO_STALLS)
        cfg.stall_ns = UINT64_MAX;
    struct sigaction mine = { .sa_handler = on_stall_signal_mine }, old;
    sigemptyset(&mine.sa_mask);
    if (mode == SPIN_PROGRAMS)
        cr_assert_eq(sigaction(SIGRTMAX - 3, &mine, &old), 0);
    cr_assert_eq(weft_main(&cfg, spin_main, r, NULL), 0, "on %s", backend_name[backend]);
    if (mode == SPIN_PROGRAMS)
        sigaction(SIGRTMAX - 3, &old, NULL);
    unsetenv("WEFT_STALL_SIGNAL");
}

static void spin_free(struct spin_run *r)
{
    free(r->sec);
    free(r->text);
    free(r->own);
}

Test(dump, a_running_coroutine_shows_the_frames_its_thread_gives, .timeout = 600)
{
    FOR_EACH_BACKEND(b) {
        struct spin_run r;
        spin_and_dump(&r, SPIN_OTHER_THREAD, b);
        check_spinner(r.sec, r.text);
        spin_free(&r);
    }
}

Test(dump, a_coroutine_dumping_shows_its_own_frames_and_those_running_beside_it, .timeout = 600)
{
    FOR_EACH_BACKEND(b) {
        struct spin_run r;
        spin_and_dump(&r, SPIN_COROUTINE, b);
        check_spinner(r.sec, r.text);
        cr_assert_not_null(r.own, "no dumper in the dump:\n%s", r.text);
        cr_assert_not_null(strstr(r.own, "[running on worker "), "%s", r.own);
#if WEFT_TEST_LIBUNWIND
        /* Its own stack, taken directly: never a signal to its own thread. */
        cr_assert(frames_in_order(r.own, "dump_from_a_coroutine", "spin_main"), "%s", r.own);
        cr_assert_null(strstr(r.own, "(frames taken while it ran"), "%s", r.own);
#endif
        spin_free(&r);
    }
}

Test(dump, without_the_stall_signal_a_running_coroutine_says_why_it_has_no_frames, .timeout = 600)
{
    static const struct { enum spin_mode mode; const char *why; } cases[] = {
        { SPIN_NO_SIGNAL, "the stall signal is off (" },
        { SPIN_NO_STALLS, "the stall signal is off (" },
        { SPIN_PROGRAMS, "is the program's, as the program handles it" },
    };
    FOR_EACH_BACKEND(b) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            struct spin_run r;
            spin_and_dump(&r, cases[i].mode, b);
            cr_assert_not_null(r.sec, "no spinner in the dump:\n%s", r.text);
            cr_assert_not_null(strstr(r.sec, "[running on worker "), "%s", r.text);
            cr_assert_null(strstr(r.sec, "\n  #0 "), "frames without the signal:\n%s", r.sec);
            if (WEFT_TEST_LIBUNWIND)
                cr_assert_not_null(strstr(r.sec, cases[i].why), "%s: not said why:\n%s", backend_name[b], r.sec);
            else
                cr_assert_not_null(strstr(r.sec, "weft was built without libunwind"), "%s", r.sec);
            spin_free(&r);
        }
    }
}

/* ---- errors, names -------------------------------------------------------------- */

/* Nothing to list, with no runtime and with one of no coroutines: a header
 * that says so (and under UBSan, no sort of an empty list's NULL). */
Test(dump, with_no_coroutine_anywhere_says_so)
{
    char *text = dump_text();
    cr_assert(strncmp(text, "weft: 0 runtimes, 0 coroutines", 30) == 0, "%s", text);
    free(text);
    weft_rt *rt;
    cr_assert_eq(weft_rt_create(&rt, &(weft_config){ .workers = 1 }), 0);
    text = dump_text();
    cr_assert(strncmp(text, "weft: 1 runtime, 0 coroutines", 29) == 0, "%s", text);
    free(text);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

Test(dump, refuses_a_bad_descriptor)
{
    cr_assert_eq(weft_dump(-1), -EBADF);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    close(fds[0]);
    close(fds[1]);
    cr_assert_eq(weft_dump(fds[1]), -EBADF);   /* closed: write(2) says so */
}

static void *name_checks(void *arg)
{
    cr_assert_eq(weft_set_name(NULL), -EINVAL);
    char longest[WEFT_NAME_MAX + 2];
    memset(longest, 'n', sizeof(longest));
    longest[WEFT_NAME_MAX] = '\0';
    cr_assert_eq(weft_set_name(longest), 0);
    char *text = dump_text();
    char *sec = section_named(text, longest);
    cr_assert_not_null(sec, "the longest name is not in the dump:\n%s", text);
    free(sec);
    free(text);
    longest[WEFT_NAME_MAX] = 'n';
    longest[WEFT_NAME_MAX + 1] = '\0';
    cr_assert_eq(weft_set_name(longest), -ENAMETOOLONG);
    longest[WEFT_NAME_MAX] = '\0';
    text = dump_text();
    sec = section_named(text, longest);
    cr_assert_not_null(sec, "a refused name changed the old one:\n%s", text);
    free(sec);
    free(text);
    cr_assert_eq(weft_set_name(""), 0);
    text = dump_text();
    cr_assert_null(strstr(text, longest), "an empty name left the old one:\n%s", text);
    free(text);
    return NULL;
}

Test(dump, set_name_copies_a_short_name_and_refuses_a_long_one)
{
    cr_assert_eq(weft_set_name("main"), -EPERM);
    run_with(1, name_checks, NULL);
}

/* ---- the dump signal ----------------------------------------------------------- */

static void *wait_for_signal_dump(void *arg)
{
    weft_set_name("signalled");
    weft_chan *ch = arg;
    int v;
    return (void *)(intptr_t)weft_chan_recv(ch, &v);
}

struct signal_case { int sig; const char *env; };

/* A runtime with the dump signal (the configuration's or the environment's),
 * a named coroutine waiting, then the signal raised; the program goes on. */
static void signal_dump_body(const void *arg)
{
    const struct signal_case *c = arg;
    if (c->env)
        setenv("WEFT_DUMP_SIGNAL", c->env, 1);
    weft_config cfg = { .workers = 2, .dump_signal = c->sig };
    weft_rt *rt;
    if (weft_rt_create(&rt, &cfg))
        _exit(2);
    weft_chan *ch;
    weft_task *t;
    if (weft_chan_create(&ch, sizeof(int), 0) || weft_spawn_on(rt, &t, wait_for_signal_dump, ch))
        _exit(3);
    usleep(100000);
    raise(c->env ? SIGUSR2 : c->sig);
    /* The dump is written by weft's thread; the program goes on. */
    usleep(RUNNING_ON_VALGRIND ? 3000000 : 500000);
    weft_chan_close(ch);
    weft_join(t, NULL);
    weft_chan_destroy(ch);
    weft_rt_destroy(rt);
    fprintf(stderr, "child: went on\n");
}

static char *signal_dump_in_child(int sig, const char *env)
{
    int status;
    char *buf = stderr_of_child(signal_dump_body, &(struct signal_case){ sig, env }, &status);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed (status %#x): %s", status, buf);
    return buf;
}

Test(dump, the_dump_signal_writes_the_dump_to_stderr_and_goes_on)
{
    char *out = signal_dump_in_child(SIGUSR1, NULL);
    cr_assert_not_null(strstr(out, "\"signalled\" [chan receive"), "no dump on stderr:\n%s", out);
    cr_assert_not_null(strstr(out, "child: went on"), "the program did not go on:\n%s", out);
    free(out);
    out = signal_dump_in_child(0, "SIGUSR2");   /* the environment names it */
    cr_assert_not_null(strstr(out, "\"signalled\" [chan receive"), "no dump on stderr:\n%s", out);
    free(out);
}

static void on_usr1(int sig)
{
}

Test(dump, the_dump_signal_is_checked_shared_and_given_back)
{
    weft_rt *rt, *rt2;
    weft_config bad = { .workers = 1, .dump_signal = SIGKILL };
    cr_assert_eq(weft_rt_create(&rt, &bad), -EINVAL);
    bad.dump_signal = 65;
    cr_assert_eq(weft_rt_create(&rt, &bad), -EINVAL);
    bad.dump_signal = SIGSEGV;   /* the stack guard's */
    cr_assert_eq(weft_rt_create(&rt, &bad), -EINVAL);
    bad.dump_signal = 32;   /* the C library's own */
    cr_assert_eq(weft_rt_create(&rt, &bad), -EINVAL);
    setenv("WEFT_DUMP_SIGNAL", "NOSUCHSIGNAL", 1);
    weft_config none = { .workers = 1 };
    cr_assert_eq(weft_rt_create(&rt, &none), -EINVAL);
    /* 0 in the environment: no dump signal, even where the configuration names one. */
    setenv("WEFT_DUMP_SIGNAL", "0", 1);
    weft_config usr1 = { .workers = 1, .dump_signal = SIGUSR1 };
    struct sigaction before, during;
    cr_assert_eq(sigaction(SIGUSR1, NULL, &before), 0);
    cr_assert_eq(weft_rt_create(&rt, &usr1), 0);
    cr_assert_eq(sigaction(SIGUSR1, NULL, &during), 0);
    cr_assert_eq(weft_rt_destroy(rt), 0);
    cr_assert_eq((void *)during.sa_handler, (void *)before.sa_handler, "WEFT_DUMP_SIGNAL=0 took a signal");
    unsetenv("WEFT_DUMP_SIGNAL");

    /* The program's own disposition comes back when the last runtime goes. */
    struct sigaction mine = { .sa_handler = on_usr1 }, now;
    sigemptyset(&mine.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &mine, NULL), 0);
    weft_config c1 = { .workers = 1, .dump_signal = SIGUSR1 };
    weft_config c2 = { .workers = 1, .dump_signal = SIGUSR2 };
    cr_assert_eq(weft_rt_create(&rt, &c1), 0);
    cr_assert_eq(sigaction(SIGUSR1, NULL, &now), 0);
    cr_assert_neq((void *)now.sa_handler, (void *)on_usr1, "the dump signal was not taken");
    cr_assert_eq(weft_rt_create(&rt2, &c2), -EBUSY);   /* one dump signal per process */
    cr_assert_eq(weft_rt_create(&rt2, &c1), 0);
    cr_assert_eq(weft_rt_destroy(rt), 0);
    cr_assert_eq(sigaction(SIGUSR1, NULL, &now), 0);
    cr_assert_neq((void *)now.sa_handler, (void *)on_usr1, "given back while a runtime still uses it");
    cr_assert_eq(weft_rt_destroy(rt2), 0);
    cr_assert_eq(sigaction(SIGUSR1, NULL, &now), 0);
    cr_assert_eq((void *)now.sa_handler, (void *)on_usr1, "the old disposition did not come back");
    signal(SIGUSR1, SIG_DFL);
}

/* ---- fatal messages ---------------------------------------------------------- */

/* What weft__panic prints after its message: the running coroutine's part of
 * the dump. Called here directly, as no broken invariant can be caused on
 * purpose. */
void weft__dump_current(int fd, void *uc);

static __attribute__((noinline)) int report_from_below(int fd)
{
    weft__dump_current(fd, NULL);
    volatile int r = 0;
    return r;
}

static void *fatal_reporter(void *arg)
{
    weft_set_name("doomed");
    return (void *)(intptr_t)report_from_below(*(int *)arg);
}

Test(dump, a_fatal_message_names_the_running_coroutine_and_its_frames)
{
    int fd = memfd_create("weft-fatal", MFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    run_with(2, fatal_reporter, &fd);
    char msg[8192] = { 0 };
    cr_assert_gt(pread(fd, msg, sizeof(msg) - 1, 0), 0);
    close(fd);
    cr_assert_not_null(strstr(msg, "weft: in coroutine 1 \"doomed\" [running on worker "), "%s", msg);
#if WEFT_TEST_LIBUNWIND
    cr_assert(frames_in_order(msg, "report_from_below", "fatal_reporter"), "no frames:\n%s", msg);
    cr_assert_not_null(strstr(msg, "  entry fatal_reporter"), "%s", msg);
#endif
}

/* ---- statistics ------------------------------------------------------------------ */

struct stats_run {
    weft_rt   *rt;
    weft_chan *ch;
    int        pipe[2];
};

static void *parked(void *arg)
{
    int v;
    return (void *)(intptr_t)weft_chan_recv(arg, &v);
}

static void *reader(void *arg)
{
    char c;
    return (void *)(intptr_t)weft_read(*(int *)arg, &c, 1);
}

static void *spin_a_while(void *arg)
{
    uint64_t until = weft_now() + 20 * 1000000u;
    while (weft_now() < until)
        ;
    return NULL;
}

static void stats_on(int backend, unsigned workers)
{
    weft_config cfg = { .workers = workers, .io_backend = backend };
    weft_rt *rt;
    cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
    weft_chan *ch;
    cr_assert_eq(weft_chan_create(&ch, sizeof(int), 0), 0);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    size_t n = 40;
    weft_task *t[41];
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(weft_spawn_on(rt, &t[i], parked, ch), 0);
    cr_assert_eq(weft_spawn_on(rt, &t[n], reader, &p[0]), 0);
    weft_task *sp;
    cr_assert_eq(weft_spawn_on(rt, &sp, spin_a_while, NULL), 0);
    cr_assert_eq(weft_join(sp, NULL), 0);
    weft_stats s;
    uint64_t deadline = now_ms() + 60000;
    do {
        cr_assert_eq(weft_stats_get(rt, &s), 0);
        usleep(1000);
    } while ((s.waiting < n + 1 || s.running || s.alive != n + 1) && now_ms() < deadline);   /* the
        joined spinner's exit is counted as its worker leaves it, maybe after the join */
    cr_assert_eq(s.alive, n + 1, "alive: %llu", (unsigned long long)s.alive);
    cr_assert_eq(s.waiting, n + 1, "waiting: %llu", (unsigned long long)s.waiting);
    cr_assert_eq(s.running + s.runnable, 0);
    cr_assert_eq(s.spawned, n + 2);
    cr_assert_eq(s.finished, 1);
    cr_assert_eq(s.workers, workers);
    cr_assert_gt(s.stack_committed, 0);
    cr_assert_geq(s.busy_ns, 20 * 1000000u, "busy %llu ns after 20 ms of spinning", (unsigned long long)s.busy_ns);
    if (backend == WEFT_IO_URING)
        cr_assert_gt(s.uring_submitted, 0);
    else
        cr_assert_gt(s.epoll_waits, 0);
    uint64_t busy[WEFT_WORKERS_MAX + 1];
    cr_assert_eq(weft_stats_busy(rt, busy, workers + 1), (int)workers);
    uint64_t sum = 0;
    for (unsigned i = 0; i < workers; i++)
        sum += busy[i];
    cr_assert_geq(sum, 20 * 1000000u);
    cr_assert_eq(weft_stats_busy(rt, NULL, 0), (int)workers);
    cr_assert_eq(weft_stats_busy(rt, NULL, 1), -EINVAL);

    cr_assert_eq(write(p[1], "x", 1), 1);
    weft_chan_close(ch);
    for (size_t i = 0; i <= n; i++)
        cr_assert_eq(weft_join(t[i], NULL), 0);
    /* A finished task is counted as its worker switches away from it, and a
     * completion just after its coroutine is woken (by the worker, or by the
     * monitor reaping a stalled worker's ring): either may come just after
     * the joiner returns. */
    deadline = now_ms() + 60000;
    do {
        cr_assert_eq(weft_stats_get(rt, &s), 0);
        usleep(1000);
    } while ((s.alive || (backend == WEFT_IO_URING && s.uring_completed != s.uring_submitted)) &&
             now_ms() < deadline);
    cr_assert_eq(s.alive, 0);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.finished, n + 2);
    if (backend == WEFT_IO_URING)
        cr_assert_eq(s.uring_completed, s.uring_submitted);
    else
        cr_assert_gt(s.epoll_events, 0);
    weft_chan_destroy(ch);
    close(p[0]);
    close(p[1]);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

Test(dump, stats_count_coroutines_by_state_and_the_work_done)
{
    weft_stats s;
    cr_assert_eq(weft_stats_get(NULL, &s), -EINVAL);
    FOR_EACH_BACKEND(b)
        for (size_t i = 0; i < SWEEP_N; i++)
            stats_on(b, sweep_workers[i]);
}

static void *sleeps(void *arg)
{
    for (int i = 0; i < 5; i++)
        weft_sleep(1000);
    return NULL;
}

Test(dump, stats_count_timers_and_refuse_bad_arguments)
{
    weft_rt *rt;
    weft_config cfg = { .workers = 2 };
    cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
    cr_assert_eq(weft_stats_get(rt, NULL), -EINVAL);
    cr_assert_eq(weft_stats_busy(NULL, NULL, 0), -EINVAL);
    weft_task *t;
    cr_assert_eq(weft_spawn_on(rt, &t, sleeps, NULL), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    weft_stats s;
    cr_assert_eq(weft_stats_get(rt, &s), 0);
    cr_assert_eq(s.timers_armed, 5);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}
