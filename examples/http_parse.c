/* SPDX-License-Identifier: MIT */
/* The HTTP example's request-head parser: see http_parse.h. */
#include "http_parse.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* Whether [p, p + n) is lit, ignoring case (header names and tokens). */
static bool is(const char *p, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(p, lit, n) == 0;
}

/* Reads the comma-separated options of a Connection header, [p, end). */
static void connection_options(const char *p, const char *end, bool *close, bool *keep_alive)
{
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *token = p;
        while (p < end && *p != ' ' && *p != '\t' && *p != ',')
            p++;
        if (is(token, (size_t)(p - token), "close"))
            *close = true;
        else if (is(token, (size_t)(p - token), "keep-alive"))
            *keep_alive = true;
    }
}

/* Finds the CRLF that ends the line at p. Returns its CR, NULL if the line is
 * not all in yet, or end if the line holds a CR without its LF. */
static const char *line_end(const char *p, const char *end)
{
    const char *cr = memchr(p, '\r', (size_t)(end - p));
    if (!cr || cr + 1 == end)
        return NULL;
    return cr[1] == '\n' ? cr : end;
}

ptrdiff_t http_parse_request(const char *p, const char *end, struct http_request *rq)
{
    const char *start = p;
    const char *eol = line_end(p, end);
    if (!eol || eol == end)
        return eol ? -1 : 0;
    const char *sp = memchr(p, ' ', (size_t)(eol - p));
    if (!sp || sp == p)
        return -1;
    rq->method = p;
    rq->method_len = (size_t)(sp - p);
    rq->target = sp + 1;
    sp = memchr(rq->target, ' ', (size_t)(eol - rq->target));
    if (!sp || sp == rq->target)
        return -1;
    rq->target_len = (size_t)(sp - rq->target);
    const char *version = sp + 1;
    if (eol - version != 8 || memcmp(version, "HTTP/1.", 7) != 0 || (version[7] != '0' && version[7] != '1'))
        return -1;

    bool close = false, keep_alive = false;
    for (p = eol + 2; ; p = eol + 2) {
        eol = line_end(p, end);
        if (!eol || eol == end)
            return eol ? -1 : 0;
        if (eol == p)
            break;   /* the empty line: the head is complete */
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p || *p == ' ' || *p == '\t')
            return -1;   /* no colon, an empty name, or an obsolete folded line */
        size_t name_len = (size_t)(colon - p);
        if (is(p, name_len, "content-length") || is(p, name_len, "transfer-encoding"))
            return -1;
        if (is(p, name_len, "connection"))
            connection_options(colon + 1, eol, &close, &keep_alive);
    }
    if (version[7] == '0')
        rq->persist = keep_alive && !close ? HTTP_KEEP_ALIVE_10 : HTTP_CLOSE;
    else
        rq->persist = close ? HTTP_CLOSE : HTTP_KEEP_ALIVE;
    return eol + 2 - start;
}
