/* SPDX-License-Identifier: MIT */
/*
 * A hand-written io_uring HTTP server for bench/compare/http/uring.sh: one
 * thread, one ring, the same answer to GET / as examples/http_server.c and
 * threads.c, keep-alive and pipelining, nothing of weft's around it. It
 * measures what a receive costs two ways:
 *
 *   http_uring [--port N] [--multishot]
 *
 * Without --multishot each connection has one receive in flight at a time,
 * made again once its answers are sent, as a coroutine's weft_recv makes it.
 * With it each connection has one multishot receive into a ring of provided
 * buffers, made again only when the kernel ends it (out of buffers), and
 * what comes while answers are sent waits in the connection's buffer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\n"
                            "Hello from weft\n";

enum { ACCEPT, RECV, SEND };
#define MAX_FD   65536
#define IN_SIZE  8192
#define OUT_MAX  64           /* answers written at once */
#define BUFS     4096         /* provided buffers (a power of two) */
#define BUF_SIZE 2048
#define BGID     1

struct conn {
    size_t len;                            /* bytes of requests in `in` */
    size_t out_len, out_sent;              /* the answers being sent */
    bool   sending, recv_armed, closing;
    char   in[IN_SIZE];
    char   out[OUT_MAX * (sizeof reply - 1)];
};

static struct io_uring ring;
static struct conn *conns[MAX_FD];
static bool multishot;
static struct io_uring_buf_ring *br;
static char *bufs;

static void die(const char *what, int err)
{
    fprintf(stderr, "http_uring: %s: %s\n", what, strerror(err));
    exit(1);
}

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (!sqe) {
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    if (!sqe)
        die("io_uring_get_sqe", EBUSY);
    return sqe;
}

static void queue(struct io_uring_sqe *sqe, int op, int fd)
{
    io_uring_sqe_set_data64(sqe, (uint64_t)fd << 8 | (uint64_t)op);
}

static void arm_recv(int fd)
{
    struct conn *c = conns[fd];
    struct io_uring_sqe *sqe = sqe_get();
    if (multishot) {
        io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BGID;
    } else {
        io_uring_prep_recv(sqe, fd, c->in + c->len, IN_SIZE - c->len, 0);
    }
    queue(sqe, RECV, fd);
    c->recv_armed = true;
}

static void send_out(int fd)
{
    struct conn *c = conns[fd];
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
    queue(sqe, SEND, fd);
    c->sending = true;
}

static void conn_close(int fd)
{
    struct conn *c = conns[fd];
    if (c->recv_armed || c->sending) {   /* wait for what is in flight to end */
        c->closing = true;
        return;
    }
    close(fd);
    free(c);
    conns[fd] = NULL;
}

/* Answers the whole requests in c->in, if no answer is being sent; then
 * receives again (oneshot) once nothing is left to send. */
static void serve(int fd)
{
    struct conn *c = conns[fd];
    if (c->sending)
        return;
    size_t n = 0;
    char *end;
    while (n < OUT_MAX && (end = memmem(c->in, c->len, "\r\n\r\n", 4))) {
        end += 4;
        c->len -= (size_t)(end - c->in);
        memmove(c->in, end, c->len);
        n++;
    }
    if (n) {
        for (size_t i = 0; i < n; i++)
            memcpy(c->out + i * (sizeof reply - 1), reply, sizeof reply - 1);
        c->out_len = n * (sizeof reply - 1);
        c->out_sent = 0;
        send_out(fd);
    } else if (c->len == IN_SIZE) {
        conn_close(fd);   /* a request larger than the buffer */
    } else if (!multishot && !c->recv_armed) {
        arm_recv(fd);
    }
}

static void on_recv(int fd, int res, unsigned flags)
{
    struct conn *c = conns[fd];
    bool more = multishot && (flags & IORING_CQE_F_MORE);
    if (!more)
        c->recv_armed = false;
    if (res > 0) {
        const char *data = c->in + c->len;
        if (multishot) {
            unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
            data = bufs + (size_t)bid * BUF_SIZE;
            size_t room = IN_SIZE - c->len, take = (size_t)res < room ? (size_t)res : room;
            memcpy(c->in + c->len, data, take);
            io_uring_buf_ring_add(br, bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                                  io_uring_buf_ring_mask(BUFS), 0);
            io_uring_buf_ring_advance(br, 1);
            res = (int)take;
        }
        c->len += (size_t)res;
    }
    if (c->closing || (res <= 0 && res != -ENOBUFS)) {
        conn_close(fd);
        return;
    }
    if (multishot && !c->recv_armed)
        arm_recv(fd);   /* ended for want of buffers */
    serve(fd);
}

static void on_send(int fd, int res)
{
    struct conn *c = conns[fd];
    c->sending = false;
    if (c->closing || res <= 0) {
        conn_close(fd);
        return;
    }
    c->out_sent += (size_t)res;
    if (c->out_sent < c->out_len)
        send_out(fd);
    else
        serve(fd);
}

static void on_accept(int lfd, int res, unsigned flags)
{
    if (!(flags & IORING_CQE_F_MORE)) {
        struct io_uring_sqe *sqe = sqe_get();
        io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
        queue(sqe, ACCEPT, lfd);
    }
    if (res < 0)
        return;
    if (res >= MAX_FD || !(conns[res] = calloc(1, sizeof *conns[res]))) {
        close(res);
        return;
    }
    int one = 1;
    setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    arm_recv(res);
}

int main(int argc, char **argv)
{
    int port = 8083;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--multishot"))
            multishot = true;
        else {
            fprintf(stderr, "usage: http_uring [--port N] [--multishot]\n");
            return 2;
        }
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    /* A server just killed may hold the port a moment longer: its ring, and
     * the accept in flight there, are torn down after it exits. */
    for (int tries = 0; bind(lfd, (struct sockaddr *)&a, sizeof a) != 0; tries++) {
        if (errno != EADDRINUSE || tries == 50)
            die("bind", errno);
        usleep(100000);
    }
    if (listen(lfd, 4096) != 0)
        die("listen", errno);
    struct io_uring_params p = { .flags = IORING_SETUP_COOP_TASKRUN };
    int err = io_uring_queue_init_params(4096, &ring, &p);
    if (err < 0)
        die("io_uring_queue_init_params", -err);
    if (multishot) {
        size_t len = BUFS * sizeof(struct io_uring_buf);
        br = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        bufs = malloc((size_t)BUFS * BUF_SIZE);
        if (br == MAP_FAILED || !bufs)
            die("buffer memory", ENOMEM);
        struct io_uring_buf_reg reg = { .ring_addr = (unsigned long)br, .ring_entries = BUFS, .bgid = BGID };
        if ((err = io_uring_register_buf_ring(&ring, &reg, 0)) < 0)
            die("io_uring_register_buf_ring", -err);
        io_uring_buf_ring_init(br);
        for (unsigned i = 0; i < BUFS; i++)
            io_uring_buf_ring_add(br, bufs + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                                  io_uring_buf_ring_mask(BUFS), (int)i);
        io_uring_buf_ring_advance(br, BUFS);
    }
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
    queue(sqe, ACCEPT, lfd);
    for (;;) {
        err = io_uring_submit_and_wait(&ring, 1);
        if (err < 0 && err != -EINTR)
            die("io_uring_submit_and_wait", -err);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            uint64_t d = io_uring_cqe_get_data64(cqe);
            int fd = (int)(d >> 8);
            switch (d & 0xff) {
            case ACCEPT: on_accept(fd, cqe->res, cqe->flags); break;
            case RECV:   on_recv(fd, cqe->res, cqe->flags); break;
            case SEND:   on_send(fd, cqe->res); break;
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}
