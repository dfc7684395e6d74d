/* Stacks: their size, their guard, and many of them at once. */
#include "common.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int recurse(volatile char *prev, int depth)
{
    volatile char frame[256];
    frame[0] = (char)depth;
    frame[1] = prev ? prev[0] : 0;
    if (depth == -1)   /* never: keeps the compiler from calling this infinite */
        return 0;
    return recurse(frame, depth + 1) + frame[1];
}

static void *overflow(void *arg)
{
    return (void *)(intptr_t)recurse(NULL, 0);
}

/* The overflow runs in a child process, so that the test can read what it
 * printed and can still be skipped where no guard page exists. */
Test(stack, an_overflow_stops_the_program_with_a_message)
{
    if (RUNNING_ON_VALGRIND)
        cr_skip("Valgrind reports the overflow itself");
    if (emulated())
        cr_skip("qemu-user installs no guard pages");
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        weft_config cfg = { .workers = 2, .stack_size = 64 * 1024 };
        weft_main(&cfg, overflow, NULL, NULL);
        _exit(0);
    }
    close(fds[1]);
    char msg[1024] = { 0 };
    size_t len = 0;
    ssize_t got;
    while (len < sizeof(msg) - 1 && (got = read(fds[0], msg + len, sizeof(msg) - 1 - len)) > 0)
        len += (size_t)got;
    close(fds[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status), "the overflowing program was not killed (status %#x)", status);
    cr_assert_eq(WTERMSIG(status), SIGABRT);
    cr_assert_not_null(strstr(msg, "stack overflow"), "no message about the overflow: \"%s\"", msg);
    cr_assert_not_null(strstr(msg, "stack size 65536 bytes"), "the message names another size: \"%s\"", msg);
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
