/* SPDX-License-Identifier: MIT */
/* Many coroutines: each greets, yields once, and returns its number; the
 * first coroutine adds them up and checks the sum.
 *
 *   hello [COUNT]      COUNT coroutines, 1 to 10000000 (default 100000)
 */
#define _GNU_SOURCE
#include <weft.h>

#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static void *greet(void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    if (i < 3)
        printf("hello from coroutine %lu on worker %d\n", (unsigned long)i, weft_worker());
    weft_yield();
    return (void *)i;
}

static void *run(void *arg)
{
    size_t n = *(size_t *)arg;
    weft_task **tasks = malloc(n * sizeof(*tasks));
    if (!tasks)
        return (void *)1;
    for (size_t i = 0; i < n; i++) {
        int err = weft_spawn(&tasks[i], greet, (void *)(uintptr_t)i);
        if (err) {
            fprintf(stderr, "hello: spawn: %s\n", strerror(-err));
            exit(1);
        }
    }
    uint64_t sum = 0, expected = (uint64_t)n * (n - 1) / 2;
    for (size_t i = 0; i < n; i++) {
        void *r;
        weft_join(tasks[i], &r);
        sum += (uintptr_t)r;
    }
    free(tasks);
    printf("%zu coroutines on %d workers, sum of their numbers %llu (expected %llu)\n",
           n, weft_workers(), (unsigned long long)sum, (unsigned long long)expected);
    return (void *)(uintptr_t)(sum != expected);
}

int main(int argc, char **argv)
{
    struct cli cli = CLI_INIT(argc, argv, "hello", "[COUNT]",
        "Starts COUNT coroutines (1 to 10000000, default 100000) on every CPU;\n"
        "each greets, yields once and returns its number, and the sum is checked.\n");
    size_t n = 100000;
    int operands = 0;
    for (const char *arg; (arg = cli_next(&cli));) {
        if (cli_is_option(&cli, arg) || operands++ > 0)
            cli_unexpected(&cli, arg);
        n = (size_t)cli_uint(&cli, "COUNT", arg, 1, 10000000);
    }
    void *wrong;
    int err = weft_main(NULL, run, &n, &wrong);
    if (err) {
        fprintf(stderr, "hello: %s\n", strerror(-err));
        return 1;
    }
    return wrong != NULL;
}
