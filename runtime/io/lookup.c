/* SPDX-License-Identifier: MIT */
/*
 * Name lookup: weft_getaddrinfo runs getaddrinfo(3), which blocks on files
 * and on the network, on a helper thread (weft_offload), so that only the
 * caller waits.
 */
#include "weft.h"

#include <errno.h>
#include <netdb.h>
#include <stddef.h>

/* The negative errno values weft_getaddrinfo returns are told from the EAI_
 * codes by value: none of them is an EAI_ code (EAI_ codes are negative on
 * glibc and musl, and -ENOMEM is glibc's EAI_OVERFLOW, so no other errno may
 * be returned: an offload without memory or threads is EAI_MEMORY, EAI_AGAIN). */
_Static_assert(-ETIMEDOUT != EAI_BADFLAGS && -ETIMEDOUT != EAI_NONAME && -ETIMEDOUT != EAI_AGAIN &&
               -ETIMEDOUT != EAI_FAIL && -ETIMEDOUT != EAI_FAMILY && -ETIMEDOUT != EAI_SOCKTYPE &&
               -ETIMEDOUT != EAI_SERVICE && -ETIMEDOUT != EAI_MEMORY && -ETIMEDOUT != EAI_SYSTEM &&
               -ETIMEDOUT != EAI_OVERFLOW, "-ETIMEDOUT is an EAI_ code");
_Static_assert(-ECANCELED != EAI_BADFLAGS && -ECANCELED != EAI_NONAME && -ECANCELED != EAI_AGAIN &&
               -ECANCELED != EAI_FAIL && -ECANCELED != EAI_FAMILY && -ECANCELED != EAI_SOCKTYPE &&
               -ECANCELED != EAI_SERVICE && -ECANCELED != EAI_MEMORY && -ECANCELED != EAI_SYSTEM &&
               -ECANCELED != EAI_OVERFLOW, "-ECANCELED is an EAI_ code");
_Static_assert(-EFAULT != EAI_BADFLAGS && -EFAULT != EAI_NONAME && -EFAULT != EAI_AGAIN &&
               -EFAULT != EAI_FAIL && -EFAULT != EAI_FAMILY && -EFAULT != EAI_SOCKTYPE &&
               -EFAULT != EAI_SERVICE && -EFAULT != EAI_MEMORY && -EFAULT != EAI_SYSTEM &&
               -EFAULT != EAI_OVERFLOW, "-EFAULT is an EAI_ code");

struct lookup {
    const char             *node, *service;
    const struct addrinfo  *hints;
    struct addrinfo       **res;
    int                     ret;
};

static void *lookup_run(void *arg)
{
    struct lookup *l = arg;
    l->ret = getaddrinfo(l->node, l->service, l->hints, l->res);
    return NULL;
}

int weft_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                     struct addrinfo **res)
{
    if (!res)
        return -EFAULT;
    struct lookup l = { .node = node, .service = service, .hints = hints, .res = res };
    int err = weft_offload(lookup_run, &l, NULL);
    switch (err) {
    case 0:          return l.ret;
    case -ENOMEM:    return EAI_MEMORY;
    case -EAGAIN:    return EAI_AGAIN;
    default:         return err;   /* -ETIMEDOUT, -ECANCELED */
    }
}
