/* SPDX-License-Identifier: MIT */
/*
 * A producer coroutine bakes five buns and puts each on an unbuffered
 * channel; two consumer coroutines take them as they come and eat them. The
 * channel is the hand-off: the producer's send returns only once a consumer has
 * taken the bun, and closing the channel tells the consumers the baking is over.
 *
 *   producer_consumer
 */
#define _GNU_SOURCE
#include <weft.h>

#include <stdio.h>

#include "cli.h"

#define BUNS 5

static weft_chan *counter;   /* buns on their way, one at a time */
static weft_wg    eaters = WEFT_WG_INIT;

static void *producer(void *arg)
{
    for (int bun = 1; bun <= BUNS; bun++) {
        printf("producer: baked bun %d\n", bun);
        weft_chan_send(counter, &bun);
    }
    printf("producer: that was the last one\n");
    weft_chan_close(counter);
    return NULL;
}

static void *consumer(void *arg)
{
    const char *name = arg;
    int bun;
    while (weft_chan_recv(counter, &bun) == 0) {
        printf("%s: eating bun %d\n", name, bun);
        weft_yield();   /* chewing: let the others move */
    }
    printf("%s: full\n", name);
    weft_wg_done(&eaters);
    return NULL;
}

static void *bakery(void *arg)
{
    int err = weft_chan_create(&counter, sizeof(int), 0);
    if (err)
        return (void *)(intptr_t)err;
    weft_wg_add(&eaters, 2);
    weft_spawn(NULL, consumer, "consumer A");
    weft_spawn(NULL, consumer, "consumer B");
    weft_spawn(NULL, producer, NULL);
    weft_wg_wait(&eaters);
    return (void *)(intptr_t)weft_chan_destroy(counter);
}

int main(int argc, char **argv)
{
    struct cli cli = CLI_INIT(argc, argv, "producer_consumer", "",
        "A producer coroutine hands five buns, one at a time, over an unbuffered\n"
        "channel to two consumer coroutines.\n");
    for (const char *arg; (arg = cli_next(&cli));)
        cli_unexpected(&cli, arg);
    void *result;
    int err = weft_main(NULL, bakery, NULL, &result);
    if (err || result) {
        fprintf(stderr, "producer_consumer: %d\n", err ? err : (int)(intptr_t)result);
        return 1;
    }
    return 0;
}
