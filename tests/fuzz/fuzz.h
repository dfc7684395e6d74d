/* SPDX-License-Identifier: MIT */
/*
 * What every fuzz target here defines: libFuzzer's entry point. A target
 * returns 0 for every input; a broken invariant aborts (fuzz_check), and
 * libFuzzer, or replay.c outside fuzzing builds, reports the input.
 */
#ifndef WEFT_FUZZ_H
#define WEFT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stops with a message naming the invariant; kept in every build type. */
#define fuzz_check(cond, what)                                                        \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: invariant broken: %s (%s)\n", __FILE__, __LINE__, \
                    what, #cond);                                                     \
            abort();                                                                  \
        }                                                                             \
    } while (0)

#endif
