/* SPDX-License-Identifier: MIT */
/* weft_dump's text, for the suites that read it (POSIX: fileno). */
#pragma once

#include "common.h"

/* The dump weft_dump() writes now, as a NUL-terminated string to free(). */
static inline char *dump_text(void)
{
    /* tmpfile, not memfd_create: ThreadSanitizer does not see a memory
     * file's number made, and takes its reuse of a number that the
     * monitor's stall report has just closed for a race. */
    FILE *f = tmpfile();
    cr_assert_not_null(f, "tmpfile failed: %d", errno);
    int fd = fileno(f);
    int err = weft_dump(fd);
    cr_assert_eq(err, 0, "weft_dump failed: %d", err);
    off_t len = lseek(fd, 0, SEEK_END);
    cr_assert_geq(len, 0);
    char *text = malloc((size_t)len + 1);
    cr_assert_not_null(text);
    rewind(f);   /* weft_dump wrote past stdio: nothing of it is buffered */
    cr_assert_eq(fread(text, 1, (size_t)len, f), (size_t)len);
    text[len] = '\0';
    fclose(f);
    return text;
}
