/* SPDX-License-Identifier: MIT */
/* A recursive fork-join sum over an array, on 1 worker and then on every CPU,
 * to show the multicore speed-up. The sum is computed first by a plain loop,
 * printed as the expected one, and each run's sum is checked against it.
 *
 *   fork_join_sum [ELEMENTS]     1 to 268435456 (default 16777216)
 */
#define _GNU_SOURCE
#include <weft.h>

#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

#define LEAF 4096

struct range {
    const uint32_t *v;
    size_t          n;
};

/* Deliberately compute-bound: a few rounds of mixing per element. */
static uint64_t leaf_sum(const uint32_t *v, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t x = v[i];
        for (int r = 0; r < 8; r++)
            x = x * 6364136223846793005ull + 1442695040888963407ull;
        s += x >> 40;
    }
    return s;
}

static void *sum(void *arg)
{
    struct range *r = arg;
    if (r->n <= LEAF)
        return (void *)(uintptr_t)leaf_sum(r->v, r->n);
    struct range left = { r->v, r->n / 2 }, right = { r->v + r->n / 2, r->n - r->n / 2 };
    weft_task *t;
    if (weft_spawn(&t, sum, &left) != 0)
        abort();
    uintptr_t b = (uintptr_t)sum(&right);
    void *a;
    weft_join(t, &a);
    return (void *)((uintptr_t)a + b);
}

/* Runs the sum on `workers` workers (0: one per CPU); returns milliseconds. */
static double timed(unsigned workers, struct range *r, uint64_t *out)
{
    weft_config cfg = { .workers = workers };
    void *res;
    uint64_t t0 = weft_now();
    int err = weft_main(&cfg, sum, r, &res);
    if (err) {
        fprintf(stderr, "fork_join_sum: %s\n", strerror(-err));
        exit(1);
    }
    *out = (uintptr_t)res;
    return (double)(weft_now() - t0) / 1e6;
}

int main(int argc, char **argv)
{
    struct cli cli = CLI_INIT(argc, argv, "fork_join_sum", "[ELEMENTS]",
        "Sums ELEMENTS numbers (1 to 268435456, default 16777216) by recursive\n"
        "fork-join, on 1 worker and then on every CPU, and checks each sum.\n");
    size_t n = (size_t)1 << 24;
    int operands = 0;
    for (const char *arg; (arg = cli_next(&cli));) {
        if (cli_is_option(&cli, arg) || operands++ > 0)
            cli_unexpected(&cli, arg);
        n = (size_t)cli_uint(&cli, "ELEMENTS", arg, 1, (size_t)1 << 28);
    }
    uint32_t *v = malloc(n * sizeof(*v));
    if (!v) {
        fprintf(stderr, "fork_join_sum: no memory for %zu elements\n", n);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = (uint32_t)(i * 2654435761u);
    struct range r = { v, n };
    uint64_t s1, sn, expect = leaf_sum(v, n);
    printf("expected:                sum %llu\n", (unsigned long long)expect);
    double t1 = timed(1, &r, &s1);
    printf("1 worker:   %8.1f ms  sum %llu\n", t1, (unsigned long long)s1);
    double tn = timed(0, &r, &sn);
    printf("all CPUs:   %8.1f ms  sum %llu  speed-up %.2fx\n", tn, (unsigned long long)sn, t1 / tn);
    free(v);
    if (s1 != expect || sn != expect) {
        fprintf(stderr, "fork_join_sum: a sum differs from the expected one\n");
        return 1;
    }
    return 0;
}
