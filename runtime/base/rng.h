/* SPDX-License-Identifier: MIT */
/*
 * xorshift64 (Marsaglia), the one pseudo-random generator of the runtime: a
 * searching worker's choice of victim, WEFT_SCHED_RANDOM's coin, a select's
 * order of cases. Fast and small; nothing here needs more than that.
 */
#ifndef WEFT_RNG_H
#define WEFT_RNG_H

#include "base.h"

/* Advances *state (never 0) and returns 32 random bits. Only the state's owner. */
static inline uint32_t weft__rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return (uint32_t)(x >> 32);
}

#endif /* WEFT_RNG_H */
