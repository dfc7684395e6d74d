/* SPDX-License-Identifier: MIT */
/*
 * The key-value example's RESP parser (examples/resp.c): whole requests,
 * requests cut at every byte, pipelined ones, inline commands with quotes,
 * and every kind of malformed or oversized input, each refused with its
 * error code and a reason.
 */
#include <criterion/criterion.h>

#include "examples/resp.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct resp_arg argv[RESP_ARGS_MAX];

/* Parses a copy of s[0, n) (the copy is exactly n bytes: a read past it is
 * an error under ASan and Valgrind). */
static ptrdiff_t parse_n(const char *s, size_t n, int *argc, const char **why)
{
    static char *copy;
    free(copy);
    copy = malloc(n ? n : 1);
    cr_assert_not_null(copy);
    memcpy(copy, s, n);
    *argc = -1;
    *why = NULL;
    return resp_parse(copy, n, argv, argc, why);
}

static ptrdiff_t parse(const char *s, int *argc, const char **why)
{
    return parse_n(s, strlen(s), argc, why);
}

static void assert_arg(int i, const char *want)
{
    cr_assert_eq(argv[i].n, strlen(want), "argument %d: %zu bytes, expected %zu", i, argv[i].n, strlen(want));
    cr_assert(memcmp(argv[i].p, want, argv[i].n) == 0, "argument %d is '%.*s', expected '%s'", i,
              (int)argv[i].n, argv[i].p, want);
}

/* s is refused with err and a reason that contains `reason`. */
static void assert_refused(const char *s, size_t n, int err, const char *reason)
{
    int argc;
    const char *why;
    ptrdiff_t r = parse_n(s, n, &argc, &why);
    cr_assert_eq(r, -err, "'%.*s': returned %td, expected %d", (int)(n > 60 ? 60 : n), s, r, -err);
    cr_assert_not_null(why);
    cr_assert(strstr(why, reason), "the reason '%s' does not say '%s'", why, reason);
}

Test(resp, an_array_of_bulk_strings_is_parsed_into_its_arguments)
{
    const char *req = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$12\r\nhello\r\nworld\r\n";
    int argc;
    const char *why;
    cr_assert_eq(parse(req, &argc, &why), (ptrdiff_t)strlen(req));
    cr_assert_eq(argc, 3);
    assert_arg(0, "SET");
    assert_arg(1, "key");
    assert_arg(2, "hello\r\nworld");   /* a bulk is taken by its length, CRLF and all */
}

Test(resp, an_empty_bulk_string_is_an_empty_argument)
{
    int argc;
    const char *why;
    cr_assert_eq(parse("*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", &argc, &why), 20);
    cr_assert_eq(argc, 2);
    assert_arg(1, "");
}

Test(resp, an_inline_command_is_split_into_words)
{
    int argc;
    const char *why;
    cr_assert_eq(parse("  SET\tkey   value\r\nGET", &argc, &why), 19);
    cr_assert_eq(argc, 3);
    assert_arg(0, "SET");
    assert_arg(1, "key");
    assert_arg(2, "value");
    /* A bare LF ends a line too. */
    cr_assert_eq(parse("PING\n", &argc, &why), 5);
    cr_assert_eq(argc, 1);
    assert_arg(0, "PING");
}

Test(resp, inline_quotes_and_escapes_are_read_as_redis_reads_them)
{
    int argc;
    const char *why;
    const char *req = "SET \"a b\" 'c\\'d' \"\\x41\\n\\\"\\\\\" x\"y z\"w\r\n";
    /* x"y z"w: a quote may open inside a word, but must close at its end */
    cr_assert_eq(parse(req, &argc, &why), -EPROTO);
    req = "SET \"a b\" 'c\\'d' \"\\x41\\n\\\"\\\\\" ''\r\n";
    cr_assert_eq(parse(req, &argc, &why), (ptrdiff_t)strlen(req), "%s", why ? why : "");
    cr_assert_eq(argc, 5);
    assert_arg(0, "SET");
    assert_arg(1, "a b");
    assert_arg(2, "c'd");
    assert_arg(3, "A\n\"\\");
    assert_arg(4, "");
}

Test(resp, empty_requests_have_no_arguments)
{
    int argc;
    const char *why;
    cr_assert_eq(parse("\r\n", &argc, &why), 2);
    cr_assert_eq(argc, 0);
    cr_assert_eq(parse("   \n", &argc, &why), 4);
    cr_assert_eq(argc, 0);
    cr_assert_eq(parse("*0\r\n", &argc, &why), 4);
    cr_assert_eq(argc, 0);
    cr_assert_eq(parse("*-1\r\n", &argc, &why), 5);   /* the null array */
    cr_assert_eq(argc, 0);
}

Test(resp, nothing_is_not_a_request_yet)
{
    int argc;
    const char *why;
    cr_assert_eq(parse_n("", 0, &argc, &why), 0);
}

/* Every request here, cut before its last byte anywhere, is "not all in
 * yet"; whole, it parses to the same arguments as when it came at once. */
Test(resp, a_request_cut_at_every_byte_is_not_all_in_until_its_last)
{
    static const char *const reqs[] = {
        "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n",
        "*1\r\n$0\r\n\r\n",
        "*2\r\n$4\r\nECHO\r\n$12\r\n0123456789\r\n\r\n",
        "*-1\r\n",
        "SET key \"quoted value\"\r\n",
        "GET key\n",
        "\r\n",
    };
    for (size_t k = 0; k < sizeof reqs / sizeof reqs[0]; k++) {
        const char *req = reqs[k];
        size_t len = strlen(req);
        int argc, whole_argc;
        const char *why;
        cr_assert_eq(parse(req, &whole_argc, &why), (ptrdiff_t)len, "request %zu whole", k);
        struct resp_arg want[8];
        char text[8][64];
        for (int i = 0; i < whole_argc; i++) {
            memcpy(text[i], argv[i].p, argv[i].n);
            want[i] = (struct resp_arg){ text[i], argv[i].n };
        }
        for (size_t cut = 0; cut < len; cut++)
            cr_assert_eq(parse_n(req, cut, &argc, &why), 0, "request %zu cut at %zu of %zu: %s", k,
                         cut, len, why ? why : "");
        /* Whole, followed by the start of the next: the same request. */
        char two[256];
        snprintf(two, sizeof two, "%s*2\r\n$3", req);
        cr_assert_eq(parse(two, &argc, &why), (ptrdiff_t)len, "request %zu, then more", k);
        cr_assert_eq(argc, whole_argc);
        for (int i = 0; i < argc; i++)
            cr_assert(argv[i].n == want[i].n && memcmp(argv[i].p, want[i].p, want[i].n) == 0,
                      "request %zu, argument %d", k, i);
    }
}

Test(resp, pipelined_requests_are_taken_one_at_a_time_in_order)
{
    const char *reqs = "*1\r\n$4\r\nPING\r\nINCR n\r\n*2\r\n$3\r\nGET\r\n$1\r\nn\r\n";
    size_t len = strlen(reqs), off = 0;
    static const char *const first[] = { "PING", "INCR", "GET" };
    char *buf = malloc(len);
    cr_assert_not_null(buf);
    memcpy(buf, reqs, len);
    for (int i = 0; i < 3; i++) {
        int argc;
        const char *why;
        ptrdiff_t r = resp_parse(buf + off, len - off, argv, &argc, &why);
        cr_assert_gt(r, 0, "request %d", i);
        assert_arg(0, first[i]);
        off += (size_t)r;
    }
    cr_assert_eq(off, len);
    free(buf);
}

Test(resp, negative_lengths_are_refused)
{
    assert_refused("*1\r\n$-1\r\n", 9, EPROTO, "invalid bulk length");
    assert_refused("*1\r\n$-5\r\n", 9, EPROTO, "invalid bulk length");
    assert_refused("*-2\r\n", 5, EPROTO, "invalid multibulk length");
}

Test(resp, lengths_that_are_not_numbers_are_refused)
{
    assert_refused("*x\r\n", 4, EPROTO, "invalid multibulk length");
    assert_refused("*\r\n", 3, EPROTO, "invalid multibulk length");
    assert_refused("*01\r\n", 5, EPROTO, "invalid multibulk length");
    assert_refused("*-0\r\n", 5, EPROTO, "invalid multibulk length");
    assert_refused("*1 \r\n", 5, EPROTO, "invalid multibulk length");
    assert_refused("*1\r\n$+3\r\nGET\r\n", 14, EPROTO, "invalid bulk length");
    assert_refused("*1\r\n$3x", 7, EPROTO, "invalid bulk length");
    /* Beyond long long, and a line too long for any number, CR or not. */
    assert_refused("*99999999999999999999\r\n", 23, EPROTO, "invalid multibulk length");
    assert_refused("*1\r\n$00000000000000000000000", 27, EPROTO, "invalid bulk length");
}

Test(resp, a_line_or_a_bulk_without_its_crlf_is_refused)
{
    assert_refused("*1\rx", 4, EPROTO, "invalid multibulk length");
    assert_refused("*1\n", 3, EPROTO, "invalid multibulk length");
    assert_refused("*1\r\n$3\rx", 8, EPROTO, "invalid bulk length");
    assert_refused("*1\r\n$3\r\nGETxx", 13, EPROTO, "not followed by CRLF");
    assert_refused("*1\r\n$3\r\nGET\rx", 13, EPROTO, "not followed by CRLF");
    /* The CR alone is not yet wrong. */
    int argc;
    const char *why;
    cr_assert_eq(parse("*1\r\n$3\r\nGET\r", &argc, &why), 0);
    cr_assert_eq(parse("*1\r", &argc, &why), 0);
}

Test(resp, an_array_of_anything_but_bulk_strings_is_refused)
{
    assert_refused("*1\r\n:1\r\n", 8, EPROTO, "not a bulk string");
    assert_refused("*2\r\n$1\r\na\r\n*1\r\n", 15, EPROTO, "not a bulk string");
}

Test(resp, unbalanced_quotes_are_refused)
{
    assert_refused("ECHO \"abc\r\n", 11, EPROTO, "unbalanced quotes");
    assert_refused("ECHO 'abc\n", 10, EPROTO, "unbalanced quotes");
    assert_refused("ECHO \"a\"b\n", 10, EPROTO, "unbalanced quotes");
}

Test(resp, requests_past_the_limits_are_refused)
{
    char line[64];
    /* Too many arguments: the count alone says so. */
    int n = snprintf(line, sizeof line, "*%d\r\n", RESP_ARGS_MAX + 1);
    assert_refused(line, (size_t)n, EMSGSIZE, "more than 1024 arguments");
    /* RESP_ARGS_MAX is fine. */
    int argc;
    const char *why;
    n = snprintf(line, sizeof line, "*%d\r\n", RESP_ARGS_MAX);
    cr_assert_eq(parse(line, &argc, &why), 0);
    /* Too long an argument: its length alone says so. */
    n = snprintf(line, sizeof line, "*1\r\n$%d\r\n", RESP_BULK_MAX + 1);
    assert_refused(line, (size_t)n, EMSGSIZE, "longer than 1 MiB");
    n = snprintf(line, sizeof line, "*1\r\n$%d\r\n", RESP_BULK_MAX);
    cr_assert_eq(parse(line, &argc, &why), 0);
    n = snprintf(line, sizeof line, "*1\r\n$%lld\r\n", LLONG_MAX);
    assert_refused(line, (size_t)n, EMSGSIZE, "longer than 1 MiB");
}

Test(resp, an_inline_line_past_its_limit_is_refused)
{
    char *buf = malloc(RESP_INLINE_MAX + 1);
    cr_assert_not_null(buf);
    memset(buf, 'a', RESP_INLINE_MAX + 1);
    int argc;
    const char *why;
    /* One byte short of the limit, without its LF: not all in yet. */
    cr_assert_eq(resp_parse(buf, RESP_INLINE_MAX - 1, argv, &argc, &why), 0);
    cr_assert_eq(resp_parse(buf, RESP_INLINE_MAX, argv, &argc, &why), -EMSGSIZE);
    cr_assert(strstr(why, "inline request longer than 64 KiB"));
    /* Too many words on one line. */
    size_t len = 2 * (RESP_ARGS_MAX + 1);
    for (size_t i = 0; i < len; i += 2) {
        buf[i] = 'a';
        buf[i + 1] = ' ';
    }
    buf[len - 1] = '\n';
    cr_assert_eq(resp_parse(buf, len, argv, &argc, &why), -EMSGSIZE);
    cr_assert(strstr(why, "more than 1024 arguments"));
    buf[len - 3] = '\n';   /* one word fewer: RESP_ARGS_MAX */
    cr_assert_eq(resp_parse(buf, len - 2, argv, &argc, &why), (ptrdiff_t)len - 2);
    cr_assert_eq(argc, RESP_ARGS_MAX);
    free(buf);
}

/* Four arguments, each just below the bulk limit, make a request past
 * RESP_REQUEST_MAX: refused at the header that passes it, before its bytes
 * have come; and a request not all in yet never reaches RESP_REQUEST_MAX. */
Test(resp, a_request_past_its_limit_is_refused_at_the_header_that_passes_it)
{
    size_t cap = RESP_REQUEST_MAX + 64, len = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    len += (size_t)snprintf(buf, cap, "*5\r\n$4\r\nECHO\r\n");
    for (int i = 0; i < 3; i++) {
        len += (size_t)snprintf(buf + len, cap - len, "$%d\r\n", RESP_BULK_MAX);
        memset(buf + len, 'v', RESP_BULK_MAX);
        len += RESP_BULK_MAX;
        memcpy(buf + len, "\r\n", 2);
        len += 2;
    }
    int argc;
    const char *why;
    cr_assert_eq(resp_parse(buf, len, argv, &argc, &why), 0);
    size_t head = len;
    len += (size_t)snprintf(buf + len, cap - len, "$%d\r\n", RESP_BULK_MAX);
    cr_assert_eq(resp_parse(buf, len, argv, &argc, &why), -EMSGSIZE);
    cr_assert(strstr(why, "request longer than 4 MiB"), "%s", why);
    /* A fourth argument that still fits is taken. */
    size_t room = RESP_REQUEST_MAX - head - 16;
    len = head + (size_t)snprintf(buf + head, cap - head, "$%zu\r\n", room);
    memset(buf + len, 'w', room);
    len += room;
    memcpy(buf + len, "\r\n", 2);
    len += 2;
    cr_assert_leq(len, (size_t)RESP_REQUEST_MAX);
    cr_assert_eq(resp_parse(buf, len, argv, &argc, &why), (ptrdiff_t)len);
    cr_assert_eq(argc, 5);
    cr_assert_eq(argv[4].n, room);
    free(buf);
}

Test(resp, numbers_are_read_as_redis_reads_them)
{
    static const struct { const char *s; int ok; long long v; } cases[] = {
        { "0", 1, 0 },
        { "42", 1, 42 },
        { "-7", 1, -7 },
        { "9223372036854775807", 1, LLONG_MAX },
        { "-9223372036854775808", 1, LLONG_MIN },
        { "9223372036854775808", 0, 0 },
        { "-9223372036854775809", 0, 0 },
        { "", 0, 0 },
        { "-", 0, 0 },
        { "-0", 0, 0 },
        { "007", 0, 0 },
        { "+1", 0, 0 },
        { " 1", 0, 0 },
        { "1 ", 0, 0 },
        { "1x", 0, 0 },
        { "123456789012345678901", 0, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long long v = 12345;
        bool ok = resp_ll(cases[i].s, strlen(cases[i].s), &v);
        cr_assert_eq(ok, (bool)cases[i].ok, "'%s'", cases[i].s);
        if (ok)
            cr_assert_eq(v, cases[i].v, "'%s' read as %lld", cases[i].s, v);
        else
            cr_assert_eq(v, 12345, "'%s' refused, yet the result was written", cases[i].s);
    }
}
