/* SPDX-License-Identifier: MIT */
/* The runner of the Criterion stand-in: see criterion/criterion.h here. */
#define _GNU_SOURCE
#include "criterion/criterion.h"

#include <errno.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SKIPPED 77
#define TIMED_OUT_POLL_NS 10000000L   /* how often the runner looks at a running test */

static struct shim_test *tests, **tests_end = &tests;   /* in the order of the file */

void shim_register(struct shim_test *t)
{
    t->next = NULL;
    *tests_end = t;
    tests_end = &t->next;
}

static void print_value(const char *side, const char *expr, struct shim_value v)
{
    switch (v.kind) {
    case SHIM_SIGNED:   fprintf(stderr, "  %s: %s = %jd\n", side, expr, v.i); break;
    case SHIM_UNSIGNED: fprintf(stderr, "  %s: %s = %ju (%#jx)\n", side, expr, v.u, v.u); break;
    case SHIM_FLOAT:    fprintf(stderr, "  %s: %s = %g\n", side, expr, v.f); break;
    case SHIM_POINTER:  fprintf(stderr, "  %s: %s = %p\n", side, expr, v.p); break;
    }
}

static void print_message(const char *fmt, va_list ap)
{
    if (!*fmt)
        return;
    fputs("  ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void shim_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, expr);
    va_list ap;
    va_start(ap, fmt);
    print_message(fmt, ap);
    va_end(ap);
    fflush(stderr);
    _exit(1);
}

void shim_fail_cmp(const char *file, int line, const char *a, const char *op, const char *b,
                   struct shim_value va, struct shim_value vb, const char *fmt, ...)
{
    fprintf(stderr, "%s:%d: assertion failed: %s %s %s\n", file, line, a, op, b);
    print_value("left ", a, va);
    print_value("right", b, vb);
    va_list ap;
    va_start(ap, fmt);
    print_message(fmt, ap);
    va_end(ap);
    fflush(stderr);
    _exit(1);
}

void shim_skip(const char *fmt, ...)
{
    fputs("skipped: ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(SKIPPED);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Waits for the test's child; past t->timeout kills its process group, reaps
 * it, and returns 1 with *status its death. Returns 0 when it ended itself. */
static int wait_test(const struct shim_test *t, pid_t pid, int *status)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pid_t r = waitpid(pid, status, t->timeout > 0 ? WNOHANG : 0);
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR) {
            perror("shim: waitpid");
            exit(2);
        }
        if (t->timeout > 0 && seconds_since(&t0) >= t->timeout) {
            kill(-pid, SIGKILL);   /* the test and whatever it started */
            kill(pid, SIGKILL);
            while (waitpid(pid, status, 0) < 0 && errno == EINTR)
                ;
            return 1;
        }
        if (t->timeout > 0)
            nanosleep(&(struct timespec){ 0, TIMED_OUT_POLL_NS }, NULL);
    }
}

/* Criterion's --filter=PATTERN (or --filter PATTERN): a glob on "suite/name". */
static const char *filter_of(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--filter=", 9) == 0)
            return argv[i] + 9;
        if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc)
            return argv[i + 1];
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0, skipped = 0;
    pid_t runner = getpid();
    const char *filter = filter_of(argc, argv);
    for (struct shim_test *t = tests; t; t = t->next) {
        char full[512];
        snprintf(full, sizeof full, "%s/%s", t->suite, t->name);
        if (filter && fnmatch(filter, full, 0) != 0)
            continue;
        if (t->disabled) {
            skipped++;
            continue;
        }
        printf("[RUN ] %s::%s\n", t->suite, t->name);   /* as Criterion: a suite stopped
                                                         * from outside shows what ran */
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            perror("shim: fork");
            return 2;
        }
        if (pid == 0) {
            setpgid(0, 0);   /* so that a timeout kills what the test started too */
            prctl(PR_SET_PDEATHSIG, SIGKILL);   /* and a runner killed from outside kills the test */
            if (getppid() != runner)
                _exit(2);   /* the runner died before that */
            t->fn();
            fflush(NULL);
            _exit(0);
        }
        setpgid(pid, pid);   /* either side may run first; both ask the same */
        int status = 0;
        if (wait_test(t, pid, &status)) {
            printf("[FAIL] %s::%s: timed out: killed after its .timeout of %g s\n", t->suite,
                   t->name, t->timeout);
            failed++;
            continue;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == SKIPPED) {
            printf("[SKIP] %s::%s\n", t->suite, t->name);
            skipped++;
            continue;
        }
        int ok;
        if (t->signal)
            ok = WIFSIGNALED(status) && WTERMSIG(status) == t->signal;
        else
            ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (ok)
            printf("[PASS] %s::%s\n", t->suite, t->name);
        else if (WIFSIGNALED(status))
            printf("[FAIL] %s::%s: killed by signal %d (%s)\n", t->suite, t->name,
                   WTERMSIG(status), strsignal(WTERMSIG(status)));
        else if (t->signal)
            printf("[FAIL] %s::%s: exited with %d, not killed by signal %d\n", t->suite, t->name,
                   WEXITSTATUS(status), t->signal);
        else
            printf("[FAIL] %s::%s: exited with %d\n", t->suite, t->name, WEXITSTATUS(status));
        if (ok)
            passed++;
        else
            failed++;
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
