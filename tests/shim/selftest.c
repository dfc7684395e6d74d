/* SPDX-License-Identifier: MIT */
/*
 * The stand-in's own test: tests that pass, and tests that must fail in the
 * ways the stand-in reports (a comparison with both of its values, a
 * timeout). check_shim.sh runs it and reads what it printed.
 */
#define _GNU_SOURCE
#include "criterion/criterion.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int bump(int *n) { return ++*n; }

Test(shim, each_side_of_a_comparison_is_evaluated_once)
{
    int n = 0;
    cr_assert_eq(bump(&n), 1);
    cr_assert_eq(n, 1, "the side was evaluated %d times", n);
}

Test(shim, a_test_may_die_of_the_signal_it_names, .signal = SIGABRT)
{
    abort();
}

Test(shim, a_test_that_skips_is_not_a_failure)
{
    cr_skip("skipping on purpose");
}

Test(shim, must_fail_a_comparison_of_integers)
{
    int small = -3;
    long big = 40000000000L;
    cr_assert_eq(small, big, "the message, %s", "formatted");
}

Test(shim, must_fail_a_comparison_of_pointers)
{
    int x;
    int *p = &x;
    cr_assert_null(p);
}

/* Its child is in its process group: the timeout must end both. */
Test(shim, must_time_out, .timeout = 0.5)
{
    pid_t child = fork();
    if (child == 0) {
        for (;;)
            pause();
    }
    const char *file = getenv("SHIM_CHILD_PID_FILE");
    FILE *f = file ? fopen(file, "w") : NULL;
    if (f) {
        fprintf(f, "%d\n", (int)child);
        fclose(f);
    }
    for (;;)
        pause();
}
