/* SPDX-License-Identifier: MIT */
/*
 * cat: copies files, or standard input, to standard output. Each input is
 * read by its own coroutine, all of them at once, while the first coroutine
 * writes the blocks out in order as they arrive over channels. A file is read
 * with weft_pread: on io_uring each read is one request on the worker's ring,
 * on epoll it runs on a helper thread; either way no worker blocks on the
 * disk. Standard input is read with weft_read, which suspends only its
 * coroutine while a pipe or a terminal has nothing to give.
 *
 *   cat [FILE]...      "-", or no FILE at all, is standard input
 */
#define _GNU_SOURCE
#include <weft.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define BLOCK (64 * 1024)

struct block {
    char   *data;       /* malloc'd, BLOCK bytes; NULL marks the end */
    ssize_t len;        /* bytes, or a negative errno */
};

struct reader {
    const char *path;   /* NULL: standard input */
    weft_chan  *out;    /* blocks, in order; NULL: nothing to read */
};

/* On the epoll backend weft switches a pipe or a terminal to O_NONBLOCK at
 * its first use and leaves it so. A terminal is shared with the shell, so
 * cat puts the flags of its standard input and output back as it exits. */
static int stdin_flags = -1, stdout_flags = -1;

static void restore_flags(void)
{
    if (stdin_flags >= 0)
        fcntl(STDIN_FILENO, F_SETFL, stdin_flags);
    if (stdout_flags >= 0)
        fcntl(STDOUT_FILENO, F_SETFL, stdout_flags);
}

static void *read_input(void *arg)
{
    struct reader *r = arg;
    int fd = r->path ? weft_open(r->path, O_RDONLY, 0) : STDIN_FILENO;
    struct block b = { NULL, fd };
    if (fd >= 0) {
        for (off_t off = 0;; off += b.len) {
            b.data = malloc(BLOCK);
            if (!b.data)
                b.len = -ENOMEM;
            else if (r->path)
                b.len = weft_pread(fd, b.data, BLOCK, off);
            else
                b.len = weft_read(fd, b.data, BLOCK);
            if (b.len <= 0) {
                free(b.data);
                b.data = NULL;
                break;
            }
            weft_chan_send(r->out, &b);
        }
        if (r->path)
            weft_close(fd);
    }
    weft_chan_send(r->out, &b);   /* the end, with the error if any */
    return NULL;
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = weft_write(STDOUT_FILENO, p, n);
        if (w < 0) {
            fprintf(stderr, "cat: write: %s\n", strerror((int)-w));
            exit(1);
        }
        p += w;
        n -= (size_t)w;
    }
}

/* paths: NULL-terminated. Returns non-NULL if an input could not be read. */
static void *cat(void *arg)
{
    const char **paths = arg;
    int n = 0, status = 0;
    while (paths[n])
        n++;
    struct reader *readers = calloc((size_t)n, sizeof *readers);
    if (!readers) {
        fprintf(stderr, "cat: %s\n", strerror(ENOMEM));
        return (void *)1;
    }
    bool stdin_taken = false;
    for (int i = 0; i < n; i++) {
        bool dash = strcmp(paths[i], "-") == 0;
        if (dash && stdin_taken)
            continue;   /* the first "-" reads standard input to its end */
        stdin_taken |= dash;
        readers[i].path = dash ? NULL : paths[i];
        int err = weft_chan_create(&readers[i].out, sizeof(struct block), 4);   /* read ahead 4 blocks */
        if (!err)
            err = weft_spawn(NULL, read_input, &readers[i]);
        if (err) {
            fprintf(stderr, "cat: %s: %s\n", paths[i], strerror(-err));
            exit(1);
        }
    }
    for (int i = 0; i < n; i++) {
        if (!readers[i].out)
            continue;
        struct block b;
        while (weft_chan_recv(readers[i].out, &b) == 0 && b.data) {
            write_all(b.data, (size_t)b.len);
            free(b.data);
        }
        if (b.len < 0) {
            fprintf(stderr, "cat: %s: %s\n", paths[i], strerror((int)-b.len));
            status = 1;
        }
        weft_chan_destroy(readers[i].out);
    }
    free(readers);
    return (void *)(intptr_t)status;
}

int main(int argc, char **argv)
{
    struct cli cli = CLI_INIT(argc, argv, "cat", "[FILE]...",
        "Copies each FILE to standard output, in order, reading them all at once.\n"
        "\"-\", or no FILE at all, is standard input.\n");
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    int n = 0;
    if (!paths)
        return 1;
    for (const char *arg; (arg = cli_next(&cli));) {
        if (cli_is_option(&cli, arg))
            cli_unexpected(&cli, arg);
        paths[n++] = arg;
    }
    if (n == 0)
        paths[n++] = "-";
    stdin_flags = fcntl(STDIN_FILENO, F_GETFL);
    stdout_flags = fcntl(STDOUT_FILENO, F_GETFL);
    atexit(restore_flags);
    void *status;
    int err = weft_main(NULL, cat, (void *)paths, &status);
    free(paths);
    if (err) {
        fprintf(stderr, "cat: %s\n", strerror(-err));
        return 1;
    }
    return status != NULL;
}
