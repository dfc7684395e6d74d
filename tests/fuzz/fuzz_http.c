/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the HTTP example's request-head parser (examples/http_parse.c).
 *
 * Besides what AddressSanitizer and UBSan catch (a read past the input, which
 * is copied to a buffer of exactly its size), it checks what the parser
 * promises, for every input:
 *   - the result is -1, 0, or a length within the input;
 *   - a head it accepts ends with the empty line, its method and target are
 *     inside it, non-empty, free of spaces and line ends, in their places on
 *     the request line, which ends with HTTP/1.0 or HTTP/1.1; no header line
 *     announces a body; the persistence is one of the three;
 *   - the answer depends only on the head: the head alone parses to the same
 *     request, and a head cut short is "not all in yet" (0); an input cut
 *     short that was "not all in yet" stays so, and one malformed cut short
 *     was not accepted whole.
 */
#include "fuzz.h"
#include "http_parse.h"

#include <string.h>
#include <strings.h>

static ptrdiff_t parse(const char *buf, size_t n, struct http_request *rq)
{
    memset(rq, 0, sizeof *rq);
    return http_parse_request(buf, buf + n, rq);
}

/* Whether the line [line, eol) starts with lit, ignoring case. */
static int starts_with(const char *line, const char *eol, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(eol - line) >= n && strncasecmp(line, lit, n) == 0;
}

static void check_accepted(const char *buf, ptrdiff_t n, const struct http_request *rq)
{
    const char *end = buf + n;
    fuzz_check(n >= 4 && memcmp(end - 4, "\r\n\r\n", 4) == 0, "an accepted head ends with an empty line");
    fuzz_check(rq->method == buf && rq->method_len >= 1, "the method starts the head");
    fuzz_check(rq->target == rq->method + rq->method_len + 1 && rq->target[-1] == ' ',
               "the target follows the method and one space");
    fuzz_check(rq->target_len >= 1 && rq->target + rq->target_len + 11 <= end,
               "the target and the version are inside the head");
    fuzz_check(!memchr(rq->method, ' ', rq->method_len) && !memchr(rq->method, '\r', rq->method_len) &&
               !memchr(rq->target, ' ', rq->target_len) && !memchr(rq->target, '\r', rq->target_len),
               "method and target hold no space or line end");
    const char *version = rq->target + rq->target_len;
    fuzz_check(memcmp(version, " HTTP/1.", 8) == 0 && (version[8] == '0' || version[8] == '1') &&
               version[9] == '\r' && version[10] == '\n', "the request line ends with the version");
    fuzz_check(rq->persist == HTTP_KEEP_ALIVE || rq->persist == HTTP_KEEP_ALIVE_10 ||
               rq->persist == HTTP_CLOSE, "the persistence is one of the three");
    fuzz_check(version[8] == '0' || rq->persist != HTTP_KEEP_ALIVE_10,
               "only HTTP/1.0 is told that its connection is kept");
    /* Header lines: none announces a body. */
    for (const char *line = version + 11; line < end - 2;) {
        const char *eol = memchr(line, '\r', (size_t)(end - line));
        fuzz_check(eol && eol[1] == '\n', "every header line ends with CRLF");
        fuzz_check(!starts_with(line, eol, "content-length:") && !starts_with(line, eol, "transfer-encoding:"),
                   "no header announces a body");
        line = eol + 2;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);   /* exactly the input: ASan sees any read past it */
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    struct http_request rq, again;
    ptrdiff_t n = parse(buf, size, &rq);
    fuzz_check(n >= -1 && n <= (ptrdiff_t)size, "the result is -1, 0, or a length within the input");
    fuzz_check(parse(buf, size, &again) == n && memcmp(&rq, &again, sizeof rq) == 0,
               "the same input parses the same way");
    if (n > 0) {
        check_accepted(buf, n, &rq);
        fuzz_check(parse(buf, (size_t)n, &again) == n && memcmp(&rq, &again, sizeof rq) == 0,
                   "the head alone parses to the same request");
        fuzz_check(parse(buf, (size_t)n - 1, &again) == 0, "a head cut by one byte is not all in yet");
        fuzz_check(parse(buf, (size_t)n / 2, &again) == 0, "half a head is not all in yet");
    } else if (size > 0) {
        ptrdiff_t cut = parse(buf, size - 1, &again);
        if (n == 0)
            fuzz_check(cut == 0, "an input not all in yet stays so when cut short");
        else
            fuzz_check(cut <= 0, "a malformed input was not accepted when shorter");
    }
    free(buf);
    return 0;
}
