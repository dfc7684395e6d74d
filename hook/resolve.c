/* SPDX-License-Identifier: MIT */
/*
 * The hooked name lookups: getaddrinfo, getnameinfo, gethostbyname and
 * gethostbyname_r.
 *
 * glibc's resolver makes its own socket, poll and recvmsg calls inside the C
 * library, where no interposition sees them, and reads files (hosts,
 * resolv.conf, nsswitch modules) that may be slow; so in a coroutine each
 * lookup runs whole on weft_offload's helper threads, the coroutine pinned
 * and suspended meanwhile. What the lookup sets on its thread, errno for
 * EAI_SYSTEM and h_errno, is carried back to the caller's. A lookup that
 * weft_offload could not start (no helper thread, the coroutine's deadline
 * passed, cancelled) fails as the resolver fails when it cannot work:
 * EAI_SYSTEM with errno set (getaddrinfo, getnameinfo), TRY_AGAIN
 * (gethostbyname, gethostbyname_r, which returns the errno value).
 * Once a lookup has started the call waits for it to end.
 *
 * gethostbyname returns the C library's one static result, as from a thread:
 * not safe to call from two coroutines (or threads) at once; use
 * gethostbyname_r or getaddrinfo.
 */
#include "hook.h"

const char hook_file_resolve = 0;   /* for weft__hook_anchor (hook.h) */

struct lookup {
    int                     op;   /* 0 getaddrinfo, 1 getnameinfo, 2 gethostbyname, 3 _r */
    const char             *node, *service;
    const struct addrinfo  *hints;
    struct addrinfo       **res;
    const struct sockaddr  *sa;
    socklen_t               salen;
    char                   *host, *serv, *buf;
    socklen_t               hostlen, servlen;
    size_t                  buflen;
    int                     flags;
    struct hostent         *he, **result;
    int                    *herr;
    int                     ret;        /* the function's int result */
    struct hostent         *ret_he;     /* gethostbyname's */
    int                     err, h_err; /* errno and h_errno on the helper thread */
};

static void *lookup_run(void *arg)
{
    struct lookup *l = arg;
    const struct hook_real *f = real();
    switch (l->op) {
    case 0:
        l->ret = f->getaddrinfo(l->node, l->service, l->hints, l->res);
        break;
    case 1:
        l->ret = f->getnameinfo(l->sa, l->salen, l->host, l->hostlen, l->serv, l->servlen, l->flags);
        break;
    case 2:
        l->ret_he = f->gethostbyname(l->node);
        break;
    default:
        l->ret = f->gethostbyname_r(l->node, l->he, l->buf, l->buflen, l->result, l->herr);
        break;
    }
    l->err = errno;
    l->h_err = h_errno;
    return NULL;
}

/* Runs l on a helper thread. Returns 0, or weft_offload's negative errno: the
 * lookup did not run. */
static int offload(struct lookup *l)
{
    int err = hook_offload(lookup_run, l);
    if (err == 0) {
        errno = l->err;
        h_errno = l->h_err;
    }
    return err;
}

HOOK_API int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                         struct addrinfo **res)
{
    if (!hook_on())
        return real()->getaddrinfo(node, service, hints, res);
    struct lookup l = { .op = 0, .node = node, .service = service, .hints = hints, .res = res };
    int err = offload(&l);
    if (err) {
        errno = -err;
        return EAI_SYSTEM;
    }
    return l.ret;
}

HOOK_API int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                         char *serv, socklen_t servlen, int flags)
{
    if (!hook_on())
        return real()->getnameinfo(sa, salen, host, hostlen, serv, servlen, flags);
    struct lookup l = { .op = 1, .sa = sa, .salen = salen, .host = host, .hostlen = hostlen,
                        .serv = serv, .servlen = servlen, .flags = flags };
    int err = offload(&l);
    if (err) {
        errno = -err;
        return EAI_SYSTEM;
    }
    return l.ret;
}

HOOK_API struct hostent *gethostbyname(const char *name)
{
    if (!hook_on())
        return real()->gethostbyname(name);
    struct lookup l = { .op = 2, .node = name };
    if (offload(&l)) {
        h_errno = TRY_AGAIN;
        return NULL;
    }
    return l.ret_he;
}

HOOK_API int gethostbyname_r(const char *name, struct hostent *he, char *buf, size_t buflen,
                             struct hostent **result, int *herr)
{
    if (!hook_on())
        return real()->gethostbyname_r(name, he, buf, buflen, result, herr);
    struct lookup l = { .op = 3, .node = name, .he = he, .buf = buf, .buflen = buflen,
                        .result = result, .herr = herr };
    int err = offload(&l);
    if (err) {
        if (result)
            *result = NULL;
        if (herr)
            *herr = TRY_AGAIN;
        return -err;
    }
    return l.ret;
}
