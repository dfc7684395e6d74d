/* The runner of the Criterion stand-in: see criterion/criterion.h here. */
#include "criterion/criterion.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SKIPPED 77

static struct shim_test *tests;

void shim_register(struct shim_test *t)
{
    t->next = tests;
    tests = t;
}

void shim_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, what);
    fflush(stderr);
    _exit(1);
}

void shim_skip(const char *why)
{
    fprintf(stderr, "skipped: %s\n", why);
    fflush(stderr);
    _exit(SKIPPED);
}

int main(void)
{
    int passed = 0, failed = 0, skipped = 0;
    for (struct shim_test *t = tests; t; t = t->next) {
        if (t->disabled) {
            skipped++;
            continue;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            t->fn();
            fflush(NULL);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        int ok;
        if (WIFEXITED(status) && WEXITSTATUS(status) == SKIPPED) {
            printf("[SKIP] %s::%s\n", t->suite, t->name);
            skipped++;
            continue;
        }
        if (t->signal)
            ok = WIFSIGNALED(status) && WTERMSIG(status) == t->signal;
        else
            ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        printf("[%s] %s::%s\n", ok ? "PASS" : "FAIL", t->suite, t->name);
        if (ok)
            passed++;
        else
            failed++;
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
