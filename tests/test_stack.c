/* SPDX-License-Identifier: MIT */
/* Stacks: their size, their guard, and many of them at once. */
#define _GNU_SOURCE   /* usleep */
#include "common.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef WEFT_TEST_LIBUNWIND
#define WEFT_TEST_LIBUNWIND 1   /* tests/CMakeLists.txt says whether weft has it */
#endif

static void *overflow(void *arg)
{
    weft_set_name("deep-diver");
    return (void *)(intptr_t)recurse(NULL, 0);
}

static void overflow_body(const void *arg)
{
    weft_config cfg = { .workers = 2, .stack_size = 64 * 1024 };
    weft_main(&cfg, overflow, NULL, NULL);
}

/* The overflow runs in a child process, so that the test can read what it
 * printed and can still be skipped where no guard page exists. */
Test(stack, an_overflow_stops_the_program_with_a_message)
{
    if (RUNNING_ON_VALGRIND)
        cr_skip("Valgrind reports the overflow itself");
    if (emulated())
        cr_skip("qemu-user installs no guard pages");
    int status;
    char *msg = stderr_of_child(overflow_body, NULL, &status);
    cr_assert(WIFSIGNALED(status), "the overflowing program was not killed (status %#x)", status);
    cr_assert_eq(WTERMSIG(status), SIGABRT);
    cr_assert_not_null(strstr(msg, "stack overflow"), "no message about the overflow: \"%s\"", msg);
    cr_assert_not_null(strstr(msg, "stack size 65536 bytes"), "the message names another size: \"%s\"", msg);
    /* It names the coroutine, its entry, and shows its frames (core/fatal.c). */
    cr_assert_not_null(strstr(msg, "stack overflow in coroutine 1 "), "%s", msg);
    cr_assert_not_null(strstr(msg, "in coroutine 1 \"deep-diver\""), "the name is missing:\n%s", msg);
    cr_assert_not_null(strstr(msg, "  entry overflow ("), "the entry is not named:\n%s", msg);
#if WEFT_TEST_LIBUNWIND
    cr_assert_not_null(strstr(msg, " recurse+0x"), "no frame of the recursion:\n%s", msg);
#endif
    free(msg);
}

/*
 * A frame larger than the guard used to be written past it, onto the stack
 * of the coroutine in the next slot down, with no fault and no message. The
 * frames here move the stack pointer by their whole size at once and write
 * their lowest byte first, as code built without stack-clash protection does
 * (this file is compiled with -fno-stack-clash-protection). A neighbour
 * coroutine, in the slot right below the overflowing one, keeps a pattern at
 * the top of its stack. The overflow must end the program with weft's
 * message (SIGABRT), the pattern intact. These are death tests of their own
 * making, in a child process, rather than Criterion's .signal: those cannot
 * be skipped where no guard exists (Criterion counts the skip a failure).
 */
#define SMALL_STACK (64u * 1024u)
#define MARK_LEN    (32u * 1024u)

static struct {
    volatile unsigned char *mark;   /* the neighbour's pattern, on its stack */
    uintptr_t  neighbour_top;       /* the address of a local of each, near */
    uintptr_t  overflower_top;      /* the top of its stack */
    weft_chan *release;             /* closed to let the neighbour finish */
} ov;

static unsigned char mark_byte(size_t i)
{
    return (unsigned char)(i * 131 + 17);
}

/* 0 if the neighbour's pattern is intact, else 1 + the first byte changed. */
static size_t mark_damage(void)
{
    for (size_t i = 0; i < MARK_LEN; i++)
        if (ov.mark[i] != mark_byte(i))
            return i + 1;
    return 0;
}

static void *neighbour(void *arg)
{
    (void)arg;
    volatile unsigned char mark[MARK_LEN];
    for (size_t i = 0; i < MARK_LEN; i++)
        mark[i] = mark_byte(i);
    ov.neighbour_top = (uintptr_t)&mark[MARK_LEN - 1];
    ov.mark = mark;
    char c;
    weft_chan_recv(ov.release, &c);   /* parked here while the other overflows */
    return (void *)mark_damage();
}

/* The frame of the report: a large local array. */
static __attribute__((noinline)) void frame_of_90_kb(void)
{
    volatile char frame[90 * 1024];
    frame[0] = 1;                      /* its lowest byte, first */
    frame[sizeof frame - 1] = 1;
    __asm__ volatile("" : : "r"(frame) : "memory");   /* the whole array is laid out */
}

/* A frame of n bytes: a VLA. */
static __attribute__((noinline)) void frame_of(size_t n)
{
    volatile char frame[n];
    frame[0] = 1;
    frame[n - 1] = 1;
    __asm__ volatile("" : : "r"(frame) : "memory");
}

/* The largest frame the guard is meant to catch, WEFT_STACK_GUARD bytes, from
 * a stack used down to about 2 KiB above its end: its lowest byte falls a
 * few KiB above the guard's base, so any smaller guard would miss it. */
static __attribute__((noinline)) void frame_of_the_guards_size(void)
{
    size_t fill = SMALL_STACK - 2048;
    volatile char *used = __builtin_alloca(fill);
    used[0] = 1;
    frame_of(WEFT_STACK_GUARD);
    used[fill - 1] = 1;
}

static void *overflower(void *arg)
{
    void (*overflow_now)(void) = (void (*)(void))arg;
    volatile char here = 0;
    ov.overflower_top = (uintptr_t)&here;
    /* The test means the slot right below this one, at most one guard, one
     * stack and a page or two of fiber and slack away. */
    uintptr_t gap = ov.overflower_top - ov.neighbour_top;
    if (ov.overflower_top < ov.neighbour_top || gap > WEFT_STACK_GUARD + SMALL_STACK + 8192) {
        static const char why[] = "the overflowing coroutine's slot is not right above its neighbour's\n";
        ssize_t rc = write(STDERR_FILENO, why, sizeof why - 1);
        (void)rc;
        _exit(2);
    }
    overflow_now();
    return NULL;
}

static void *overflow_beside_a_neighbour(void *arg)
{
    if (weft_chan_create(&ov.release, 1, 0) != 0)
        return (void *)-1;
    weft_task *a, *b;
    weft_spawn(&a, neighbour, NULL);
    while (!ov.mark)
        weft_yield();                  /* one worker: the neighbour runs, then parks */
    weft_spawn(&b, overflower, arg);
    weft_join(b, NULL);                /* only if the overflow went unnoticed */
    weft_chan_close(ov.release);
    void *damage = NULL;
    weft_join(a, &damage);
    weft_chan_destroy(ov.release);
    return damage;
}

/* Says whether the neighbour's stack is intact: damage as mark_damage(). */
static void tell_neighbour(size_t damage)
{
    char out[128];
    int len = damage ? snprintf(out, sizeof out, "the neighbour's stack was overwritten at byte %zu\n", damage - 1)
                     : snprintf(out, sizeof out, "the neighbour's stack is intact\n");
    ssize_t rc = write(STDERR_FILENO, out, len > 0 ? (size_t)len : 0);
    (void)rc;
}

/* weft's handler wrote its message and called abort(); abort() goes on once
 * this returns. */
static void on_abort(int sig)
{
    (void)sig;
    tell_neighbour(mark_damage());   /* the neighbour is still parked: its stack is there */
}

/* The overflow runs in a child process, whose stderr the test reads: it must
 * die of SIGABRT, after weft's message, with the neighbour intact. */
/* The child's side: overflow_now beside a neighbour, then what it saw. */
static void overflow_beside_body(const void *arg)
{
    struct sigaction sa = { .sa_handler = on_abort };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGABRT, &sa, NULL);
    weft_config cfg = { .workers = 1, .stack_size = SMALL_STACK };
    void *damage = NULL;
    weft_main(&cfg, overflow_beside_a_neighbour, (void *)arg, &damage);
    static const char none[] = "no overflow was noticed; ";
    ssize_t rc = write(STDERR_FILENO, none, sizeof none - 1);
    (void)rc;
    tell_neighbour((size_t)damage);   /* as the neighbour saw it before it finished */
}

static void overflow_test(void (*overflow_now)(void))
{
    if (RUNNING_ON_VALGRIND)
        cr_skip("Valgrind reports the overflow itself");
    if (emulated())
        cr_skip("qemu-user installs no guard pages");
    int status;
    char *msg = stderr_of_child(overflow_beside_body, (const void *)overflow_now, &status);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
              "the overflowing program was not stopped by weft (status %#x): \"%s\"", status, msg);
    cr_assert_not_null(strstr(msg, "stack overflow"), "no message about the overflow: \"%s\"", msg);
    cr_assert_not_null(strstr(msg, "stack size 65536 bytes"), "the message names another size: \"%s\"", msg);
    cr_assert_not_null(strstr(msg, "the neighbour's stack is intact"), "\"%s\"", msg);
    free(msg);
}

Test(stack, a_90_KB_frame_on_a_64_KiB_stack_stops_with_the_overflow_message)
{
    overflow_test(frame_of_90_kb);
}

Test(stack, a_frame_as_large_as_the_guard_stops_with_the_overflow_message)
{
    overflow_test(frame_of_the_guards_size);
}

static void *use_stack(void *arg)
{
    size_t n = (size_t)arg;
    volatile char *big = __builtin_alloca(n);
    memset((char *)big, 7, n);
    uintptr_t sum = 0;
    for (size_t i = 0; i < n; i += 4096)
        sum += big[i];
    return (void *)sum;
}

Test(stack, a_coroutine_can_use_the_stack_size_it_asked_for)
{
    weft_config cfg = { .workers = 2, .stack_size = 64 * 1024 };
    void *r;
    size_t use = 48 * 1024;
    cr_assert_eq(weft_main(&cfg, use_stack, (void *)use, &r), 0);
    cr_assert_eq((uintptr_t)r, 7 * (use / 4096));
}

/* A chain: each coroutine spawns the next and parks in its join, so all n are
 * alive and parked when the last one runs, then they finish back up the chain. */
static _Atomic size_t alive, alive_at_the_end;

static void *chain_link(void *arg)
{
    size_t left = (size_t)arg;
    atomic_fetch_add(&alive, 1);
    uintptr_t length = 1;
    if (left > 1) {
        weft_task *t;
        void *r = NULL;
        if (weft_spawn(&t, chain_link, (void *)(left - 1)) != 0)
            return (void *)0;
        weft_join(t, &r);
        length += (uintptr_t)r;
    } else {
        atomic_store(&alive_at_the_end, atomic_load(&alive));
    }
    atomic_fetch_sub(&alive, 1);
    return (void *)length;
}

Test(stack, holds_a_hundred_thousand_blocked_coroutines_at_once)
{
    size_t n = scaled(100000);
    weft_config cfg = { .workers = 2, .stack_size = 16 * 1024 };
    void *r;
    cr_assert_eq(weft_main(&cfg, chain_link, (void *)n, &r), 0);
    cr_assert_eq((uintptr_t)r, n, "the chain broke");
    cr_assert_eq(atomic_load(&alive_at_the_end), n, "not all coroutines were alive at once");
    cr_assert_eq(atomic_load(&alive), 0);
}

/*
 * Memory goes back to the kernel once it sits unused. A burst of coroutines
 * each touches 32 KiB of stack and waits; once they have all finished and the
 * runtime idles, the slots beyond the warm pool are given back, and the
 * resident size falls by most of what they touched.
 */
enum { BURST = 3072, BURST_TOUCH = 32 * 1024 };

struct burst {
    weft_chan  *gate;      /* closed to let the coroutines finish */
    weft_wg     done;
    _Atomic int touched;
};

static size_t resident(void)
{
    size_t rss;
    proc_memory(NULL, &rss);
    return rss;
}

/*
 * A task holds a stack only from its first run to its end. A coroutine spawns
 * many tasks on its own worker before it joins any: none runs before the
 * first join, and then each takes the stack the previous one gave back. Were
 * each given its own stack at spawn, every one would touch a page of it.
 */
enum { QUEUED = 50000 };

static atomic_size_t queued_ran;

static void *count_run(void *arg)
{
    atomic_fetch_add(&queued_ran, 1);
    return arg;
}

struct queued {
    size_t grew;       /* resident growth over the spawns and joins, bytes */
    size_t joined;
};

static void *spawn_all_then_join(void *arg)
{
    struct queued *q = arg;
    weft_task **t = calloc(QUEUED, sizeof *t);
    cr_assert(t);
    size_t before = resident();
    for (size_t i = 0; i < QUEUED; i++)
        cr_assert_eq(weft_spawn(&t[i], count_run, (void *)i), 0);
    cr_assert_eq(atomic_load(&queued_ran), 0, "a task ran before its spawner blocked");
    for (size_t i = 0; i < QUEUED; i++) {
        void *r;
        q->joined += weft_join(t[i], &r) == 0 && (size_t)r == i;
    }
    q->grew = resident() - before;
    free(t);
    return NULL;
}

Test(stack, queued_tasks_share_the_stacks_of_finished_ones)
{
    if (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND)
        cr_skip("sanitizers and Valgrind keep memory of their own");
    if (emulated())
        cr_skip("qemu-user's resident size is the emulator's");
    struct queued q = { 0 };
    run_with(1, spawn_all_then_join, &q);
    cr_assert_eq(q.joined, QUEUED);
    cr_assert_eq(atomic_load(&queued_ran), QUEUED);
    /* A page each would be 4 KiB a task; a handle is a few hundred bytes. */
    cr_assert_lt(q.grew, (size_t)QUEUED * 1024, "resident size grew by %zu KiB for %d tasks",
                 q.grew / 1024, QUEUED);
}

static void *touch_and_wait(void *arg)
{
    struct burst *b = arg;
    volatile char frame[BURST_TOUCH];
    for (size_t i = 0; i < sizeof frame; i += 512)
        frame[i] = 1;
    __asm__ volatile("" : : "r"(frame) : "memory");   /* the address escapes: the whole array is laid out */
    atomic_fetch_add(&b->touched, 1);
    char c;
    weft_chan_recv(b->gate, &c);   /* -EPIPE once closed */
    weft_wg_done(&b->done);
    return NULL;
}

Test(stack, unused_stacks_beyond_the_warm_pool_go_back_to_the_kernel, .timeout = 60)
{
    if (WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND)
        cr_skip("sanitizers and Valgrind keep memory of their own");
    if (emulated())
        cr_skip("qemu-user's resident size is the emulator's");
    weft_config cfg = { .workers = 2 };
    weft_rt *rt;
    cr_assert_eq(weft_rt_create(&rt, &cfg), 0);
    struct burst b = { .done = WEFT_WG_INIT };
    cr_assert_eq(weft_chan_create(&b.gate, 1, 0), 0);
    cr_assert_eq(weft_wg_add(&b.done, BURST), 0);
    size_t before = resident();
    for (int i = 0; i < BURST; i++)
        cr_assert_eq(weft_spawn_on(rt, NULL, touch_and_wait, &b), 0);
    while (atomic_load(&b.touched) < BURST)
        usleep(1000);
    size_t peak = resident();
    cr_assert_geq(peak - before, (size_t)BURST * BURST_TOUCH / 2, "the burst touched %zu KiB only",
                  (peak - before) / 1024);
    cr_assert_eq(weft_chan_close(b.gate), 0);
    cr_assert_eq(weft_wg_wait(&b.done), 0);

    /* At most 1024 warm slots and two private pools stay; give back at
     * least half of what the rest touched. */
    size_t expect = (size_t)(BURST - 1024 - 2 * 64) * BURST_TOUCH / 2;
    size_t now = resident();
    for (int i = 0; i < 200 && now + expect > peak; i++) {
        usleep(50000);
        now = resident();
    }
    cr_assert_leq(now + expect, peak, "resident %zu KiB after the burst, %zu KiB at its peak",
                  now / 1024, peak / 1024);
    cr_assert_eq(weft_chan_destroy(b.gate), 0);
    cr_assert_eq(weft_rt_destroy(rt), 0);
}

/* Under AddressSanitizer: the stack memory of a destroyed runtime carries no
 * poisoned shadow into a later mapping at the same addresses. A finished
 * coroutine's last frames are never returned through, so their redzones stay
 * poisoned until weft clears them; memory mapped there afterwards would fail
 * its first write. In other builds the writes simply succeed. */
static void *note_frame(void *arg)
{
    volatile char here = 0;
    *(uintptr_t *)arg = (uintptr_t)&here;
    return NULL;
}

Test(stack, memory_a_destroyed_runtimes_stacks_held_is_clean_for_a_later_mapping)
{
    uintptr_t at = 0;
    run_with(1, note_frame, &at);   /* made, ran one coroutine, destroyed */
    size_t page = (size_t)sysconf(_SC_PAGESIZE), len = 4 * page;
    uintptr_t lo = (at & ~(uintptr_t)(page - 1)) - page;   /* the exit frames lie about `at` */
    void *p = mmap((void *)lo, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED)
        cr_skip("the stack's addresses were mapped again by something else");
    volatile char *bytes = p;
    for (size_t i = 0; i < len; i++)
        bytes[i] = 1;
    cr_assert_eq(bytes[len - 1], 1);
    munmap(p, len);
}
