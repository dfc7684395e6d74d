/* SPDX-License-Identifier: MIT */
/*
 * The futex calls (base/futex.h). A wait with a limit uses
 * FUTEX_WAIT_BITSET, whose timeout is absolute on CLOCK_MONOTONIC, the clock
 * of weft_now(): a wait that a signal interrupts and the caller restarts does
 * not stretch its limit.
 */
#include "futex.h"

#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>

void weft__futex_wait_until(_Atomic uint32_t *addr, uint32_t val, uint64_t until)
{
    if (until == UINT64_MAX) {
        syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
        return;
    }
    struct timespec abs = {
        .tv_sec = (time_t)(until / 1000000000u),
        .tv_nsec = (long)(until % 1000000000u),
    };
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET_PRIVATE, val, &abs, NULL,
            FUTEX_BITSET_MATCH_ANY);   /* absolute, CLOCK_MONOTONIC */
}

void weft__futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}
