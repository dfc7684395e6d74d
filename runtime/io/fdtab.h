/* SPDX-License-Identifier: MIT */
/*
 * The process-wide descriptor table (runtime/io/fdtab.c): what libweft itself
 * records in it. libweft-hook reads and writes it through the private entry
 * points of hook/weft_private.h.
 */
#ifndef WEFT_FDTAB_H
#define WEFT_FDTAB_H

#include "../../hook/weft_private.h"

#include "base/base.h"

/*
 * weft is about to set O_NONBLOCK on fd's file (on), or failed to and
 * takes the record back (off). Any thread. Recorded before the flag is set,
 * so that whoever sees the flag through fcntl(F_GETFL) and then reads the
 * table sees it is weft's.
 */
WEFT__HIDDEN void weft__fd_weft_nonblock(int fd, bool on);

#endif /* WEFT_FDTAB_H */
