/*
 * cat: copies files to standard output. Each file is read by its own
 * coroutine with weft_pread, all of them at once, while the main coroutine
 * writes the blocks out in order as they arrive over channels. On io_uring
 * each read is one request on the worker's ring; on epoll it runs on a
 * helper thread: either way no worker blocks on the disk.
 *
 *   cat FILE...
 */
#include <weft.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK (64 * 1024)

struct block {
    char   *data;       /* malloc'd, BLOCK bytes; NULL marks the end */
    ssize_t len;        /* bytes, or a negative errno */
};

struct reader {
    const char *path;
    weft_chan  *out;    /* blocks, in file order */
};

static void *read_file(void *arg)
{
    struct reader *r = arg;
    int fd = weft_open(r->path, O_RDONLY, 0);
    struct block b = { NULL, fd };
    if (fd >= 0) {
        for (off_t off = 0;; off += b.len) {
            b.data = malloc(BLOCK);
            b.len = b.data ? weft_pread(fd, b.data, BLOCK, off) : -ENOMEM;
            if (b.len <= 0) {
                free(b.data);
                b.data = NULL;
                break;
            }
            weft_chan_send(r->out, &b);
        }
        weft_close(fd);
    }
    weft_chan_send(r->out, &b);   /* the end, with the error if any */
    return NULL;
}

static void *cat(void *arg)
{
    char **paths = arg;
    int n = 0, status = 0;
    while (paths[n])
        n++;
    struct reader *readers = calloc((size_t)n, sizeof *readers);
    for (int i = 0; i < n; i++) {
        readers[i].path = paths[i];
        weft_chan_create(&readers[i].out, sizeof(struct block), 4);   /* read ahead 4 blocks */
        weft_spawn(NULL, read_file, &readers[i]);
    }
    for (int i = 0; i < n; i++) {
        struct block b;
        while (weft_chan_recv(readers[i].out, &b) == 0 && b.data) {
            for (ssize_t done = 0; done < b.len;) {
                ssize_t w = weft_write(STDOUT_FILENO, b.data + done, (size_t)(b.len - done));
                if (w < 0) {
                    fprintf(stderr, "cat: write: %s\n", strerror((int)-w));
                    exit(1);
                }
                done += w;
            }
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
    if (argc < 2) {
        fprintf(stderr, "usage: cat FILE...\n");
        return 2;
    }
    void *status;
    int err = weft_main(NULL, cat, argv + 1, &status);
    if (err) {
        fprintf(stderr, "cat: %s\n", strerror(-err));
        return 1;
    }
    return status != NULL;
}
