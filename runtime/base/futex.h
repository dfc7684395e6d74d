/* SPDX-License-Identifier: MIT */
/*
 * The futex, the one way weft puts a kernel thread to sleep on a word: a
 * parked worker, a plain thread waiting for a coroutine, the wait-list lock,
 * weft_rt_destroy waiting for the last exit. Private futexes: weft never
 * shares these words with another process.
 */
#ifndef WEFT_FUTEX_H
#define WEFT_FUTEX_H

#include "base.h"

/* Sleeps while *addr == val, until a weft__futex_wake, a signal, a spurious
 * wake-up, or `until` (weft_now() clock, absolute; UINT64_MAX: no limit).
 * The caller looks at the word again in every case. Any thread. */
void weft__futex_wait_until(_Atomic uint32_t *addr, uint32_t val, uint64_t until);

/* As weft__futex_wait_until with no limit. */
static inline void weft__futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    weft__futex_wait_until(addr, val, UINT64_MAX);
}

/* Wakes up to n sleepers on addr. Any thread. */
void weft__futex_wake(_Atomic uint32_t *addr, int n);

#endif /* WEFT_FUTEX_H */
