/* SPDX-License-Identifier: MIT */
/*
 * The request-head parser of the HTTP example (http_server.c), in a unit of
 * its own so that the fuzz target (tests/fuzz/fuzz_http.c) runs the very code
 * the server runs. It reads no more than it is given, allocates nothing and
 * copies nothing: the request it fills points into the caller's buffer.
 */
#ifndef HTTP_PARSE_H
#define HTTP_PARSE_H

#include <stddef.h>

/* How the connection goes on after the answer. */
enum http_persist { HTTP_KEEP_ALIVE, HTTP_KEEP_ALIVE_10, HTTP_CLOSE };

/* A request head, parsed in place: method and target point into the buffer
 * parsed, each at least one byte long. */
struct http_request {
    const char       *method, *target;
    size_t            method_len, target_len;
    enum http_persist persist;   /* HTTP/1.1 keeps the connection unless told to
                                  * close, HTTP/1.0 only if told to keep it
                                  * (HTTP_KEEP_ALIVE_10: say so in the answer) */
};

/*
 * Parses the request head at the start of [p, end):
 *   METHOD SP TARGET SP HTTP/1.x CRLF, then NAME ":" VALUE CRLF for each
 *   header, then an empty line.
 * Returns the length of the head (rq filled), 0 if it is not all in yet, or -1
 * if it is malformed or announces a body (Content-Length or Transfer-Encoding:
 * the server takes none). Reads only bytes of [p, end).
 */
ptrdiff_t http_parse_request(const char *p, const char *end, struct http_request *rq);

#endif
