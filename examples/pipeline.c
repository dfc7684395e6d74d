/* SPDX-License-Identifier: MIT */
/*
 * A three-stage pipeline over buffered channels, on every core:
 *   generate 1..N  ->  square (one coroutine per worker)  ->  sum
 * The squaring stage fans out over the workers and fans back in to one
 * summer; closing each channel once its writers are done ends the next stage.
 * The total is checked against the closed form N(N+1)(2N+1)/6.
 *
 *   pipeline
 */
#define _GNU_SOURCE
#include <weft.h>

#include <inttypes.h>
#include <stdio.h>

#include "cli.h"

#define N 1000000u

static weft_chan *numbers, *squares;
static weft_wg    squarers = WEFT_WG_INIT;

static void *generate(void *arg)
{
    for (uint64_t i = 1; i <= N; i++)
        weft_chan_send(numbers, &i);
    weft_chan_close(numbers);
    return NULL;
}

static void *square(void *arg)
{
    uint64_t x;
    while (weft_chan_recv(numbers, &x) == 0) {
        uint64_t y = x * x;
        weft_chan_send(squares, &y);
    }
    weft_wg_done(&squarers);
    return NULL;
}

/* Closes squares once every squarer has finished. */
static void *close_squares(void *arg)
{
    weft_wg_wait(&squarers);
    weft_chan_close(squares);
    return NULL;
}

static void *run(void *arg)
{
    uint64_t *total = arg;
    int workers = weft_workers();
    if (weft_chan_create(&numbers, sizeof(uint64_t), 256) ||
        weft_chan_create(&squares, sizeof(uint64_t), 256))
        return (void *)1;
    weft_wg_add(&squarers, workers);
    for (int i = 0; i < workers; i++)
        weft_spawn(NULL, square, NULL);
    weft_spawn(NULL, generate, NULL);
    weft_spawn(NULL, close_squares, NULL);
    uint64_t y;
    while (weft_chan_recv(squares, &y) == 0)
        *total += y;
    weft_chan_destroy(numbers);
    weft_chan_destroy(squares);
    return NULL;
}

int main(int argc, char **argv)
{
    struct cli cli = CLI_INIT(argc, argv, "pipeline", "",
        "Squares 1..1000000 in a three-stage pipeline over buffered channels, with\n"
        "one squaring coroutine per worker, and checks the sum of the squares.\n");
    for (const char *arg; (arg = cli_next(&cli));)
        cli_unexpected(&cli, arg);
    uint64_t total = 0;
    void *result;
    int err = weft_main(NULL, run, &total, &result);
    uint64_t want = (uint64_t)N * (N + 1) * (2 * (uint64_t)N + 1) / 6;
    printf("sum of squares 1..%u = %" PRIu64 " (expected %" PRIu64 ")\n", N, total, want);
    if (err || result || total != want) {
        fprintf(stderr, "pipeline: wrong result\n");
        return 1;
    }
    return 0;
}
