/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the key-value example's RESP parser (examples/resp.c).
 *
 * Besides what AddressSanitizer and UBSan catch (a read past the input, which
 * is copied to a buffer of exactly its size), it checks what the parser
 * promises, for every input:
 *   - the result is a length within the input, 0, -EPROTO or -EMSGSIZE, with
 *     a reason exactly when it is an error, and 0 only below
 *     RESP_REQUEST_MAX; the same input parses the same way;
 *   - an accepted request has at most RESP_ARGS_MAX arguments, each inside
 *     the request and at most RESP_BULK_MAX long;
 *   - an accepted array is the arguments written back as RESP, byte for
 *     byte (the parser takes only the canonical form of each length); an
 *     accepted inline command, its words written back quoted with every
 *     byte escaped, parses to the same words;
 *   - the answer depends only on the request: the request alone parses the
 *     same, and cut short it is "not all in yet" (0); an input that was not
 *     all in yet stays so cut short, and one malformed was not accepted
 *     shorter.
 */
#include "fuzz.h"
#include "resp.h"

#include <errno.h>
#include <string.h>

static struct resp_arg argv[RESP_ARGS_MAX], again[RESP_ARGS_MAX];

/* Parses a fresh copy of data[0, n), exactly n bytes long; the arguments go
 * to args and are copied into *text (freed by the caller), so that they
 * outlive the copy. */
static ptrdiff_t parse(const uint8_t *data, size_t n, struct resp_arg *args, int *argc, char **text)
{
    char *buf = malloc(n ? n : 1);
    fuzz_check(buf != NULL, "memory for the copy");
    memcpy(buf, data, n);
    const char *why = NULL;
    *argc = -1;
    ptrdiff_t r = resp_parse(buf, n, args, argc, &why);
    fuzz_check(r <= (ptrdiff_t)n, "the result is within the input");
    fuzz_check(r >= 0 || r == -EPROTO || r == -EMSGSIZE, "an error is -EPROTO or -EMSGSIZE");
    fuzz_check((r < 0) == (why != NULL), "a reason comes with an error, and only with one");
    fuzz_check(r != 0 || n < RESP_REQUEST_MAX, "a request not all in yet is below RESP_REQUEST_MAX");
    *text = NULL;
    if (r > 0) {
        fuzz_check(*argc >= 0 && *argc <= RESP_ARGS_MAX, "at most RESP_ARGS_MAX arguments");
        size_t total = 0;
        for (int i = 0; i < *argc; i++) {
            fuzz_check(args[i].p >= buf && args[i].n <= RESP_BULK_MAX &&
                       args[i].p + args[i].n <= buf + r, "each argument lies inside the request");
            total += args[i].n;
        }
        *text = malloc(total ? total : 1);
        fuzz_check(*text != NULL, "memory for the arguments");
        for (int i = 0, off = 0; i < *argc; off += (int)args[i].n, i++) {
            memcpy(*text + off, args[i].p, args[i].n);
            args[i].p = *text + off;
        }
    }
    free(buf);
    return r;
}

static int same_args(const struct resp_arg *a, int na, const struct resp_arg *b, int nb)
{
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++)
        if (a[i].n != b[i].n || memcmp(a[i].p, b[i].p, a[i].n) != 0)
            return 0;
    return 1;
}

/* An accepted array is its arguments written back as RESP. */
static void check_array(const uint8_t *data, ptrdiff_t n, int argc)
{
    if (argc == 0 && n == 5 && memcmp(data, "*-1\r\n", 5) == 0)
        return;   /* the null array */
    /* Room for any arguments written back: a header each, at most 32 bytes. */
    size_t cap = (size_t)n + 32 * ((size_t)argc + 1), len = 0;
    char *out = malloc(cap);
    fuzz_check(out != NULL, "memory for the request written back");
    len += (size_t)snprintf(out, cap, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        len += (size_t)snprintf(out + len, cap - len, "$%zu\r\n", argv[i].n);
        memcpy(out + len, argv[i].p, argv[i].n);
        memcpy(out + len + argv[i].n, "\r\n", 2);
        len += argv[i].n + 2;
    }
    fuzz_check(len == (size_t)n && memcmp(out, data, len) == 0,
               "an accepted array is its arguments written back");
    free(out);
}

/* An accepted inline command's words, quoted back, parse to the same words. */
static void check_inline(int argc)
{
    size_t len = 0, cap = 1;
    for (int i = 0; i < argc; i++)
        cap += 3 + 4 * argv[i].n;
    if (cap > RESP_INLINE_MAX)
        return;   /* quoted, it would be past the limit */
    char *out = malloc(cap);
    fuzz_check(out != NULL, "memory for the words quoted back");
    for (int i = 0; i < argc; i++) {
        out[len++] = '"';
        for (size_t k = 0; k < argv[i].n; k++)
            len += (size_t)snprintf(out + len, cap - len, "\\x%02x", (unsigned char)argv[i].p[k]);
        out[len++] = '"';
        out[len++] = ' ';
    }
    out[len++] = '\n';
    int n2;
    char *text;
    ptrdiff_t r = parse((const uint8_t *)out, len, again, &n2, &text);
    fuzz_check(r == (ptrdiff_t)len && same_args(argv, argc, again, n2),
               "an inline command's words, quoted back, parse the same");
    free(text);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int argc, argc2;
    char *text, *text2;
    ptrdiff_t n = parse(data, size, argv, &argc, &text);
    ptrdiff_t n2 = parse(data, size, again, &argc2, &text2);
    fuzz_check(n2 == n && (n <= 0 || same_args(argv, argc, again, argc2)),
               "the same input parses the same way");
    free(text2);
    if (n > 0) {
        if (data[0] == '*')
            check_array(data, n, argc);
        else
            check_inline(argc);
        n2 = parse(data, (size_t)n, again, &argc2, &text2);
        fuzz_check(n2 == n && same_args(argv, argc, again, argc2), "the request alone parses the same");
        free(text2);
        fuzz_check(parse(data, (size_t)n - 1, again, &argc2, &text2) == 0,
                   "a request cut by one byte is not all in yet");
        fuzz_check(parse(data, (size_t)n / 2, again, &argc2, &text2) == 0,
                   "half a request is not all in yet");
    } else if (size > 0) {
        ptrdiff_t cut = parse(data, size - 1, again, &argc2, &text2);
        free(text2);
        if (n == 0)
            fuzz_check(cut == 0, "an input not all in yet stays so when cut short");
        else
            fuzz_check(cut <= 0, "a malformed input was not accepted when shorter");
    }
    free(text);
    return 0;
}
