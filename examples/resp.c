/* SPDX-License-Identifier: MIT */
/*
 * RESP2 requests, parsed in place: the arrays of bulk strings that client
 * libraries send, and the inline commands people type (resp.h says what
 * comes back). The parser is restartable only in the simplest way: a request
 * not all in yet returns 0 and is parsed again from its start once more
 * bytes have come. That costs little, as a bulk string's bytes are skipped by
 * their length, never scanned, and the lines scanned are short and bounded.
 */
#include "resp.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>

/* The longest number line: "-9223372036854775808" and its CR. */
#define NUMBER_LINE_MAX 21

static ptrdiff_t fail(const char **why, int err, const char *text)
{
    *why = text;
    return -err;
}

/* A request not all in yet. It may still come whole only if it is shorter
 * than RESP_REQUEST_MAX, which the checks on each length make sure of for a
 * request that would complete; this one catches a line cut at the limit. */
static ptrdiff_t incomplete(size_t len, const char **why)
{
    if (len >= RESP_REQUEST_MAX)
        return fail(why, EMSGSIZE, "Protocol error: request longer than 4 MiB");
    return 0;
}

bool resp_ll(const char *p, size_t n, long long *v)
{
    if (n == 0 || n > NUMBER_LINE_MAX - 1)
        return false;
    bool neg = p[0] == '-';
    const char *d = p + neg, *end = p + n;
    if (d == end || (*d == '0' && (end - d > 1 || neg)))
        return false;   /* no digits, a leading zero, or "-0" */
    unsigned long long acc = 0, limit = (unsigned long long)LLONG_MAX + neg;
    for (; d < end; d++) {
        if (*d < '0' || *d > '9')
            return false;
        unsigned digit = (unsigned)(*d - '0');
        if (acc > (limit - digit) / 10)
            return false;
        acc = acc * 10 + digit;
    }
    *v = neg ? (long long)(0 - acc) : (long long)acc;
    return true;
}

/*
 * Reads the number on the line at p, which ends with CRLF (resp_ll says what
 * a number is). Returns 1 with *v and *next (the byte after the LF), 0 if the
 * line is not all in yet, or -1 if it is malformed: a byte that cannot belong
 * to a number (found at once, before the line is all in), a CR without its
 * LF, a line too long to hold one, a number beyond long long. Reads only
 * [p, end).
 */
static int line_number(const char *p, const char *end, long long *v, const char **next)
{
    const char *q = p;
    for (;; q++) {
        if (q == end)
            return 0;
        if (*q == '\r')
            break;
        if (q - p >= NUMBER_LINE_MAX - 1)
            return -1;
        if (!((*q >= '0' && *q <= '9') || (q == p && *q == '-')))
            return -1;
    }
    if (q + 1 == end)
        return 0;
    if (q[1] != '\n' || !resp_ll(p, (size_t)(q - p), v))
        return -1;
    *next = q + 2;
    return 1;
}

static ptrdiff_t parse_array(char *buf, size_t len, struct resp_arg *argv, int *argc,
                             const char **why)
{
    const char *end = buf + len, *p;
    long long count;
    int r = line_number(buf + 1, end, &count, &p);
    if (r < 0 || (r > 0 && count < -1))
        return fail(why, EPROTO, "Protocol error: invalid multibulk length");
    if (r == 0)
        return incomplete(len, why);
    if (count > RESP_ARGS_MAX)
        return fail(why, EMSGSIZE, "Protocol error: more than 1024 arguments");
    for (long long i = 0; i < count; i++) {
        if (p == end)
            return incomplete(len, why);
        if (*p != '$')
            return fail(why, EPROTO, "Protocol error: an argument that is not a bulk string");
        long long n;
        const char *data;
        r = line_number(p + 1, end, &n, &data);
        if (r < 0 || (r > 0 && n < 0))
            return fail(why, EPROTO, "Protocol error: invalid bulk length");
        if (r == 0)
            return incomplete(len, why);
        if (n > RESP_BULK_MAX)
            return fail(why, EMSGSIZE, "Protocol error: an argument longer than 1 MiB");
        if ((size_t)(data - buf) + (size_t)n + 2 > RESP_REQUEST_MAX)
            return fail(why, EMSGSIZE, "Protocol error: request longer than 4 MiB");
        size_t have = (size_t)(end - data);
        if ((have > (size_t)n && data[n] != '\r') || (have > (size_t)n + 1 && data[n + 1] != '\n'))
            return fail(why, EPROTO, "Protocol error: bulk data not followed by CRLF");
        if (have < (size_t)n + 2)
            return incomplete(len, why);
        argv[i] = (struct resp_arg){ (char *)data, (size_t)n };
        p = data + n + 2;
    }
    *argc = count < 0 ? 0 : (int)count;
    return p - buf;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Splits the line [p, end) into words, as redis-cli and redis do: blanks
 * separate them; "..." quotes with the escapes \xHH \n \r \t \b \a (and \c for
 * any other c), '...' with \' only; a closing quote must end its word. Each
 * word is unescaped in place (it never grows). Returns the number of words,
 * or -1 on unbalanced quotes, -2 on too many words.
 */
static int split_words(char *p, const char *end, struct resp_arg *argv)
{
    int n = 0;
    for (;;) {
        while (p < end && is_space(*p))
            p++;
        if (p == end)
            return n;
        if (n == RESP_ARGS_MAX)
            return -2;
        char *w = p, *start = p;
        char quote = 0;
        for (;;) {
            if (p == end) {
                if (quote)
                    return -1;
                break;
            }
            char c = *p++;
            if (!quote) {
                if (is_space(c))
                    break;
                if (c == '"' || c == '\'')
                    quote = c;
                else
                    *w++ = c;
            } else if (c == quote) {
                if (p < end && !is_space(*p))
                    return -1;   /* "a"b: a closing quote must end the word */
                quote = 0;
            } else if (c == '\\' && p < end && quote == '"') {
                char e = *p++;
                int hi, lo;
                if (e == 'x' && end - p >= 2 && (hi = hex_digit(p[0])) >= 0 && (lo = hex_digit(p[1])) >= 0) {
                    *w++ = (char)(hi * 16 + lo);
                    p += 2;
                } else {
                    *w++ = e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t'
                         : e == 'b' ? '\b' : e == 'a' ? '\a' : e;
                }
            } else if (c == '\\' && p < end && quote == '\'' && *p == '\'') {
                *w++ = *p++;
            } else {
                *w++ = c;
            }
        }
        argv[n++] = (struct resp_arg){ start, (size_t)(w - start) };
    }
}

static ptrdiff_t parse_inline(char *buf, size_t len, struct resp_arg *argv, int *argc,
                              const char **why)
{
    char *nl = memchr(buf, '\n', len < RESP_INLINE_MAX ? len : RESP_INLINE_MAX);
    if (!nl) {
        if (len >= RESP_INLINE_MAX)
            return fail(why, EMSGSIZE, "Protocol error: an inline request longer than 64 KiB");
        return 0;
    }
    char *end = nl > buf && nl[-1] == '\r' ? nl - 1 : nl;
    int n = split_words(buf, end, argv);
    if (n == -1)
        return fail(why, EPROTO, "Protocol error: unbalanced quotes in request");
    if (n == -2)
        return fail(why, EMSGSIZE, "Protocol error: more than 1024 arguments");
    *argc = n;
    return nl + 1 - buf;
}

ptrdiff_t resp_parse(char *buf, size_t len, struct resp_arg *argv, int *argc, const char **why)
{
    if (len == 0)
        return 0;
    return buf[0] == '*' ? parse_array(buf, len, argv, argc, why)
                         : parse_inline(buf, len, argv, argc, why);
}
