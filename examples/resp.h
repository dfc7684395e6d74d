/* SPDX-License-Identifier: MIT */
/*
 * The request parser of the key-value example (kv_server.c): RESP2, the
 * protocol of redis, in a unit of its own so that the unit test
 * (tests/test_resp.c) and the fuzz target (tests/fuzz/fuzz_resp.c) run the
 * very code the server runs.
 *
 * A request is either an array of bulk strings, as client libraries send it,
 *
 *     *2\r\n$3\r\nGET\r\n$3\r\nkey\r\n
 *
 * or an inline command, one line of words as a person types it in telnet:
 *
 *     GET key\r\n         (the \r is optional; "..." and '...' quote a word)
 *
 * The parser reads no more than it is given and allocates nothing: the
 * arguments it returns point into the caller's buffer. It bounds everything
 * a client could make the server hold (RESP_ARGS_MAX, RESP_BULK_MAX,
 * RESP_INLINE_MAX, RESP_REQUEST_MAX), so a connection's buffer never needs to
 * grow past RESP_REQUEST_MAX to hold a request that is not all in yet.
 */
#ifndef RESP_H
#define RESP_H

#include <stdbool.h>
#include <stddef.h>

#define RESP_ARGS_MAX    1024               /* arguments in one request */
#define RESP_BULK_MAX    (1024 * 1024)      /* bytes in one argument */
#define RESP_INLINE_MAX  (64 * 1024)        /* bytes in one inline command line */
#define RESP_REQUEST_MAX (4 * 1024 * 1024)  /* bytes in one request, whole */

/* One argument: n bytes at p, inside the buffer parsed. */
struct resp_arg {
    char  *p;
    size_t n;
};

/*
 * Parses the request at the start of buf[0, len). Any thread; touches only
 * buf[0, len) and argv[0, RESP_ARGS_MAX).
 *
 * Returns the request's length in bytes (> 0), with *argc and argv[] set; 0 if
 * it is not all in yet (then len < RESP_REQUEST_MAX); or, with *why set to the
 * error's text (for a "-ERR <why>" reply, after which the connection is
 * closed, as redis does):
 *   -EPROTO    malformed: a length that is not a number, a negative bulk
 *              length, a line not ended by CRLF, a bulk not followed by
 *              CRLF, an element that is not a bulk string, unbalanced quotes;
 *   -EMSGSIZE  past a limit: more than RESP_ARGS_MAX arguments, a bulk longer
 *              than RESP_BULK_MAX, an inline line longer than
 *              RESP_INLINE_MAX, a request longer than RESP_REQUEST_MAX.
 * An empty request (an empty inline line, "*0" or the null array "*-1") has
 * *argc 0 and gets no reply.
 *
 * An inline command's quoted words are unescaped in place, so buf may be
 * changed within the request returned; nothing is changed otherwise.
 */
ptrdiff_t resp_parse(char *buf, size_t len, struct resp_arg *argv, int *argc, const char **why);

/* Whether p[0, n) is a decimal number as redis reads one (an optional '-',
 * digits without a leading zero, "0" alone but not "-0", within long long);
 * if so, *v receives it. Any thread. */
bool resp_ll(const char *p, size_t n, long long *v);

#endif
