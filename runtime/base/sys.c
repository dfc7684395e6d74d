/* SPDX-License-Identifier: MIT */
/*
 * The raw system calls that are functions rather than inlines (base/sys.h):
 * fcntl, which tests/test_faults.c wraps at link time to make it fail, and
 * sched_yield, called from spin loops that must stay small.
 */
#include "sys.h"

int weft__sys_fcntl(int fd, int cmd, long arg)
{
    return (int)weft__sys_ret(syscall(SYS_fcntl, fd, cmd, arg));
}

int weft__sys_sched_yield(void)
{
    return (int)weft__sys_ret(syscall(SYS_sched_yield));
}
