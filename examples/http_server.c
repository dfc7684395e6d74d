/* SPDX-License-Identifier: MIT */
/*
 * A small HTTP/1.1 server: one coroutine per connection, keep-alive,
 * pipelining, and GET / answered with a fixed body. Anything it cannot parse
 * gets a 400 and the connection is closed. A client gets ten seconds to send
 * each request, counted from the connection or from the answer to the one
 * before, and ten seconds to take the answers to what it sent (its
 * coroutine's deadline), so slow, trickling, half-open and never-reading
 * clients cost one parked coroutine for that long, and never a thread.
 *
 * A request costs no allocation and no copy: it is parsed where it was
 * received, its answer is a constant built at compile time, and the answers
 * to requests that arrived together (pipelined) leave in one send.
 *
 * SIGINT or SIGTERM stops it: the accept loop is cancelled, every open
 * connection is shut down, and the runtime ends once every coroutine has
 * returned.
 *
 * With --root DIR it serves the files under DIR instead (GET and HEAD, "/"
 * being index.html), each body sent with weft_sendfile, so its bytes go from
 * the page cache to the socket without a copy through the server. A target is
 * taken literally (no %-decoding); one with a "." or ".." segment is refused
 * with 403, and the file is opened with openat2's RESOLVE_BENEATH, so no
 * symbolic link leads out of DIR either (403); where openat2 is missing
 * (Linux before 5.6, qemu-user), no symbolic link is followed at all. A
 * missing file is 404, a directory or other non-regular file 403.
 *
 * With --own each connection's reading is handed to weft (weft_own): on
 * io_uring a multishot receive fills a queue that the reads take from.
 *
 *   http_server [--port N] [--workers N] [--root DIR] [--own]   serve 127.0.0.1:N (default 8080)
 *   http_server --self-test                serve requests of its own (keep-alive,
 *                                          pipelined, malformed, and clients that
 *                                          stop, trickle or never read), check
 *                                          each answer, exit
 */
#define _GNU_SOURCE
#include <weft.h>

#include "cli.h"
#include "http_parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define REQUEST_NS (10ull * 1000000000ull)
#define IN_SIZE    8192   /* the largest request head taken, and the receive buffer */
#define OUT_SIZE   4096   /* answers gathered for one send */

#define BODY "Hello from weft\n"
_Static_assert(sizeof BODY - 1 == 16, "the Content-Length below is the length of BODY");

static const char body[] = BODY;
static uint64_t request_ns = REQUEST_NS;
/* --own: each connection is handed to weft (weft_own). Set before the
 * runtime starts. */
static bool own_input;

/* --root: the directory served, or -1. Atomic, sequentially consistent: the
 * self-test sets it while coroutines serving its earlier connections may
 * still read it, and a new connection's coroutine sees the store through the
 * kernel's socket, an order ThreadSanitizer cannot see. */
static _Atomic int root_fd = -1;

struct text {
    const char *p;
    size_t      n;
};
#define TEXT(s) { s, sizeof s - 1 }

#define OK(connection) \
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n" connection "\r\n" BODY
#define NOT_FOUND(connection) "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n" connection "\r\n"

/* Every answer, whole, by [found][enum http_persist]: an HTTP/1.1 client
 * keeps the connection unless told otherwise, an HTTP/1.0 client only if told
 * so. */
static const struct text answers[2][3] = {
    { TEXT(NOT_FOUND("")), TEXT(NOT_FOUND("Connection: keep-alive\r\n")),
      TEXT(NOT_FOUND("Connection: close\r\n")) },
    { TEXT(OK("")), TEXT(OK("Connection: keep-alive\r\n")), TEXT(OK("Connection: close\r\n")) },
};
static const struct text bad_request =
    TEXT("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");

static bool send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = weft_send(fd, p, n, 0);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static const char *const persist_header[3] = { "", "Connection: keep-alive\r\n", "Connection: close\r\n" };

/* Opens path under root_fd one segment at a time, following no symbolic
 * link: where openat2 is missing. Returns a descriptor, or -1 with errno. */
static int open_segments(char *path, int flags)
{
    int dir = root_fd;
    for (char *seg = path;;) {
        char *slash = strchr(seg, '/');
        if (slash)
            *slash = 0;
        int fd = openat(dir, seg, slash ? O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC : flags | O_NOFOLLOW);
        int err = errno;
        if (dir != root_fd)
            close(dir);
        if (fd < 0 || !slash) {
            errno = err == ELOOP ? EACCES : err;   /* a symbolic link: refused */
            return fd;
        }
        dir = fd;
        seg = slash + 1;
    }
}

/* Opens the file that target names under root_fd: its descriptor, or an HTTP
 * status (403, 404) as a negative number. The target is taken literally; a
 * "." or ".." segment is refused, and RESOLVE_BENEATH keeps symbolic links
 * inside the root. openat2 is a blocking call made on the worker: a
 * directory lookup, brief next to the transfer that follows. */
static int open_target(const char *target, size_t n)
{
    char path[1024];
    size_t q = 0;
    while (q < n && target[q] != '?' && target[q] != '#')
        q++;   /* the query is not part of the path */
    if (q == 0 || target[0] != '/' || q >= sizeof path - 16 || memchr(target, 0, q))
        return -404;
    memcpy(path, target + 1, q - 1);
    path[q - 1] = 0;
    if (q == 1 || path[q - 2] == '/')
        strcat(path, "index.html");
    for (const char *seg = path; *seg;) {
        size_t len = strcspn(seg, "/");
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.') || len == 0)
            return -403;   /* ".", "..", or "//" */
        seg += len + (seg[len] == '/');
    }
    struct open_how how = { .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    int fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS)
        fd = open_segments(path, (int)how.flags);
    if (fd < 0)
        return errno == ENOENT || errno == ENOTDIR ? -404 : -403;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -403;
    }
    return fd;
}

/* Answers a GET or HEAD under --root: the head, then (GET) the file with
 * weft_sendfile. Returns whether the connection may go on. */
static bool serve_file(int fd, const struct http_request *rq, bool head_only)
{
    char h[256];
    int file = open_target(rq->target, rq->target_len);
    if (file < 0) {
        int n = snprintf(h, sizeof h, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n%s\r\n", -file,
                         file == -403 ? "Forbidden" : "Not Found", persist_header[rq->persist]);
        return send_all(fd, h, (size_t)n);
    }
    struct stat st;
    bool ok = fstat(file, &st) == 0;
    if (ok) {
        int n = snprintf(h, sizeof h,
                         "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         "Content-Length: %lld\r\n%s\r\n",
                         (long long)st.st_size, persist_header[rq->persist]);
        ok = send_all(fd, h, (size_t)n);
    }
    off_t off = 0;
    while (ok && !head_only && off < st.st_size) {
        ssize_t w = weft_sendfile(fd, file, &off, (size_t)(st.st_size - off));
        ok = w > 0;   /* 0: the file shrank; the length sent is wrong now: close */
    }
    close(file);
    return ok;
}

/*
 * Answers every complete request in in[0, *len), in one send unless the
 * answers outgrow out, and moves what is left of an incomplete one to the
 * front of in. Returns how many requests it answered, or -1 when the
 * connection is to be closed.
 */
static int serve_requests(int fd, char *in, size_t *len, char *out)
{
    const char *p = in, *end = in + *len;
    size_t out_len = 0;
    int served = 0;
    bool keep = true;
    while (keep && p < end) {
        struct http_request rq;
        ptrdiff_t head = http_parse_request(p, end, &rq);
        if (head == 0)
            break;   /* the rest is still on its way */
        const struct text *answer = &bad_request;
        keep = false;
        if (head > 0 && root_fd >= 0) {
            bool get = rq.method_len == 3 && memcmp(rq.method, "GET", 3) == 0;
            bool head_only = rq.method_len == 4 && memcmp(rq.method, "HEAD", 4) == 0;
            p += head;
            if ((out_len && !send_all(fd, out, out_len)) || !(get || head_only) ||
                !serve_file(fd, &rq, head_only))
                return -1;   /* another method: this server serves files only */
            out_len = 0;
            served++;
            keep = rq.persist != HTTP_CLOSE;
            continue;
        }
        if (head > 0) {
            bool found = rq.method_len == 3 && memcmp(rq.method, "GET", 3) == 0 &&
                         rq.target_len == 1 && rq.target[0] == '/';
            answer = &answers[found][rq.persist];
            keep = rq.persist != HTTP_CLOSE;
            p += head;
        }
        if (out_len + answer->n > OUT_SIZE) {
            if (!send_all(fd, out, out_len))
                return -1;
            out_len = 0;
        }
        memcpy(out + out_len, answer->p, answer->n);
        out_len += answer->n;
        served++;
    }
    if (keep && p == in && *len == IN_SIZE) {   /* a head larger than the buffer */
        memcpy(out + out_len, bad_request.p, bad_request.n);
        out_len += bad_request.n;
        keep = false;
    }
    if ((out_len && !send_all(fd, out, out_len)) || !keep)
        return -1;
    *len = (size_t)(end - p);
    memmove(in, p, *len);
    return served;
}

static void *connection(void *arg)
{
    struct cli_conn c;
    if (!cli_conn_open(&c, (int)(intptr_t)arg))
        return NULL;
    int fd = c.fd, one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (own_input)
        weft_own(fd);   /* an error leaves the usual reads, which serve as well */
    /* A coroutine's stack is committed as it is touched, so the buffers cost
     * the pages that requests fill, and nothing is allocated per connection. */
    char in[IN_SIZE], out[OUT_SIZE];
    size_t len = 0;
    uint64_t due = weft_now() + request_ns;   /* when the next request must be in */
    for (;;) {
        weft_deadline(due);
        ssize_t n = weft_recv(fd, in + len, IN_SIZE - len, 0);
        if (n <= 0)
            break;   /* closed, reset, or too slow */
        len += (size_t)n;
        /* The answers must be taken as a request must be sent, within the
         * deadline: a client that sends and never reads would otherwise
         * hold its coroutine in a send for ever. */
        weft_deadline(weft_now() + request_ns);
        int served = serve_requests(fd, in, &len, out);
        if (served < 0)
            break;   /* done, malformed, or a reader too slow */
        if (served > 0)
            due = weft_now() + request_ns;
    }
    weft_deadline(0);
    cli_conn_close(&c);
    return NULL;
}

static void *accept_loop(void *arg)
{
    cli_accept_loop("http_server", (int)(intptr_t)arg, connection, 0);
    return NULL;
}

/* ---- the self-test --------------------------------------------------------- */

static struct sockaddr_in addr;

/* Sends req and reads until the peer closes or `want` bytes came; returns the reply. */
static char *exchange(int fd, const char *req, size_t want, char *out, size_t cap)
{
    if (req && !send_all(fd, req, strlen(req)))
        return NULL;
    size_t got = 0;
    while (got < want && got + 1 < cap) {
        ssize_t n = weft_recv(fd, out + got, cap - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    out[got] = 0;
    return out;
}

static int connect_to_server(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && weft_connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        weft_close(fd);
        fd = -1;
    }
    return fd;
}

/* One request on a connection of its own; the reply, read until the server
 * closes (empty if it could not be sent). */
static char *ask_once(const char *req, char *out, size_t cap)
{
    out[0] = 0;
    int fd = connect_to_server();
    if (fd >= 0) {
        exchange(fd, req, cap, out, cap);
        weft_close(fd);
    }
    return out;
}

#define CHECK(cond, what) \
    do { if (!(cond)) { fprintf(stderr, "http_server self-test: %s\n", what); goto out; } } while (0)

static void *self_test(void *arg)
{
    weft_task *server;
    weft_spawn(&server, accept_loop, arg);
    void *failed = (void *)1;
    char out[4096];
    size_t one = strlen("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\n") + 16;

    int fd = connect_to_server();
    CHECK(fd >= 0, "connect");
    for (int i = 0; i < 3; i++) {   /* keep-alive: three requests on one connection */
        exchange(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", one, out, sizeof out);
        CHECK(strncmp(out, "HTTP/1.1 200 OK", 15) == 0 && strstr(out, body), "keep-alive GET");
    }
    /* Two pipelined requests in one write. */
    exchange(fd, "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", 2 * one, out, sizeof out);
    CHECK(strstr(strstr(out, body) + 1, body), "pipelined GETs");
    /* Pipelined, the second asks to close: two answers, then the server closes. */
    exchange(fd, "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
             sizeof out, out, sizeof out);
    CHECK(strstr(out, "Connection: close") && !strstr(strstr(strstr(out, body) + 1, body) + 1, body),
          "a pipelined request that asks to close is the last answered");
    weft_close(fd);

    ask_once("GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n", out, sizeof out);
    CHECK(strncmp(out, "HTTP/1.1 404", 12) == 0, "404");

    /* Garbage: a 400, then the server closes. */
    ask_once("BLAH\r\n\r\n", out, sizeof out);
    CHECK(strncmp(out, "HTTP/1.1 400", 12) == 0, "400 on garbage, then close");

    /* A request with a body: this server takes none. */
    ask_once("POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi", out, sizeof out);
    CHECK(strncmp(out, "HTTP/1.1 400", 12) == 0, "400 on a request with a body");

    /* HTTP/1.0 closes after one answer, unless it asks to keep the connection. */
    ask_once("GET / HTTP/1.0\r\n\r\n", out, sizeof out);
    CHECK(strstr(out, "Connection: close") && strstr(out, body), "HTTP/1.0");
    fd = connect_to_server();
    size_t kept = one + strlen("Connection: keep-alive\r\n");
    for (int i = 0; i < 2; i++) {
        exchange(fd, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", kept, out, sizeof out);
        CHECK(strstr(out, "Connection: keep-alive") && strstr(out, body), "HTTP/1.0 with keep-alive");
    }
    weft_close(fd);

    /* A client that sends half a request and stops: dropped at the deadline. */
    fd = connect_to_server();
    uint64_t t0 = weft_now();
    exchange(fd, "GET / HT", sizeof out, out, sizeof out);
    CHECK(out[0] == 0 && weft_now() - t0 >= request_ns, "a stalled client is dropped after its deadline");
    weft_close(fd);

    /* A client that trickles a request a byte at a time: the deadline is the
     * request's, not each read's, so it is dropped before it is done. */
    fd = connect_to_server();
    static const char trickle[] = "GET / HTTP/1.1\r\nX: y\r\n";
    int sent = 0;
    while (sent < 16 && send_all(fd, &trickle[sent], 1)) {
        weft_sleep(request_ns / 4);
        sent++;
    }
    exchange(fd, NULL, sizeof out, out, sizeof out);
    CHECK(sent < 16 && out[0] == 0, "a trickling client is dropped at its request's deadline");
    weft_close(fd);

    /* A client that pipelines requests and never reads the answers: once
     * they fill the buffers between it and the server, the server's send
     * waits, and the server drops the client when that send's deadline
     * passes; the client's own sends then fail. It gives up long after. */
    fd = connect_to_server();
    CHECK(fd >= 0, "connect");
    int small = 4096;   /* its answers back up sooner */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    static const char get[] = "GET / HTTP/1.1\r\n\r\n";
    static char flood[(64 * 1024 / (sizeof get - 1)) * (sizeof get - 1)];   /* whole requests */
    for (size_t i = 0; i < sizeof flood; i += sizeof get - 1)
        memcpy(flood + i, get, sizeof get - 1);
    uint64_t before = weft_deadline(weft_now() + 100 * request_ns);
    size_t off = 0, total = 0;
    ssize_t w;
    while (total < ((size_t)256 << 20) && (w = weft_send(fd, flood + off, sizeof flood - off, 0)) > 0) {
        off = (off + (size_t)w) % sizeof flood;   /* the stream stays whole requests */
        total += (size_t)w;
    }
    weft_deadline(before);
    CHECK(w == -ECONNRESET || w == -EPIPE, "a client that never reads is dropped at its send's deadline");
    weft_close(fd);

    /* --root: files, sent with weft_sendfile. */
    char dir[] = "/tmp/weft-http-XXXXXX";
    CHECK(mkdtemp(dir), "a directory to serve");
    char path[256];
    static char big[300000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    snprintf(path, sizeof path, "%s/big.txt", dir);
    FILE *f = fopen(path, "w");
    CHECK(f && fwrite(big, 1, sizeof big, f) == sizeof big && fclose(f) == 0, "a file to serve");
    snprintf(path, sizeof path, "%s/index.html", dir);
    f = fopen(path, "w");
    CHECK(f && fputs("<p>hi</p>", f) >= 0 && fclose(f) == 0, "an index");
    snprintf(path, sizeof path, "%s/sub", dir);
    CHECK(mkdir(path, 0700) == 0, "a subdirectory");
    snprintf(path, sizeof path, "%s/out", dir);
    CHECK(symlink("/etc/passwd", path) == 0, "a link out of the root");
    root_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    CHECK(root_fd >= 0, "open the root");
    static char reply[400000];
    /* Each on a connection of its own, read until the server closes it. */
    ask_once("GET /big.txt HTTP/1.1\r\nConnection: close\r\n\r\n", reply, sizeof reply);
    char *at = strstr(reply, "\r\n\r\n");
    CHECK(strncmp(reply, "HTTP/1.1 200 OK", 15) == 0 && strstr(reply, "Content-Length: 300000\r\n") && at &&
          strlen(at + 4) == sizeof big && memcmp(at + 4, big, sizeof big) == 0, "a file sent whole with sendfile");
    ask_once("HEAD /big.txt HTTP/1.1\r\nConnection: close\r\n\r\n", reply, sizeof reply);
    at = strstr(reply, "\r\n\r\n");
    CHECK(strstr(reply, "Content-Length: 300000\r\n") && at && at[4] == 0,
          "HEAD: the head alone, with the file's length");
    ask_once("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", reply, sizeof reply);
    CHECK(strstr(reply, "Content-Length: 9\r\n") && strstr(reply, "\r\n\r\n<p>hi</p>"), "/ is index.html");
    static const char *const refused[][2] = {
        { "GET /../etc/passwd HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 403" },
        { "GET /sub/../big.txt HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 403" },
        { "GET /out HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 403" },
        { "GET /sub HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 403" },
        { "GET /missing HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 404" },
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        ask_once(refused[i][0], out, sizeof out);
        CHECK(strncmp(out, refused[i][1], 12) == 0 && strstr(out, "Content-Length: 0"), refused[i][0]);
    }
    close(root_fd);
    root_fd = -1;
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    CHECK(system(path) == 0, "remove the directory served");

    failed = NULL;
    printf("http_server: self-test passed\n");
out:
    weft_cancel(server);   /* ends its accept */
    weft_join(server, NULL);
    return failed;
}

/* ---- serving until SIGINT or SIGTERM ------------------------------------ */

static void *serve(void *arg)
{
    return cli_serve_until_stop("http_server", (int)(intptr_t)arg, accept_loop) ? (void *)1 : NULL;
}

int main(int argc, char **argv)
{
    struct cli cli = CLI_INIT(argc, argv, "http_server", "[--port N] [--workers N] [--root DIR] [--own] [--self-test]",
        "A small HTTP/1.1 server on 127.0.0.1, one coroutine per connection: GET /\n"
        "answered with a fixed body, keep-alive and pipelining; a client gets ten\n"
        "seconds to send each request and to take the answers. SIGINT or SIGTERM\n"
        "stops it.\n\n"
        "  --port N      the port, 0 to 65535 (default 8080; 0: any free one)\n"
        "  --workers N   worker threads, 1 to 1024 (default: one per CPU)\n"
        "  --root DIR    serve the files under DIR (GET, HEAD; / is index.html),\n"
        "                sent with weft_sendfile, instead of the fixed body\n"
        "  --own         hand each connection's reading to weft (weft_own)\n"
        "  --self-test   serve well-behaved, malformed and stalling clients of its\n"
        "                own, check every answer, and exit\n");
    weft_config cfg = { 0 };
    unsigned port = 8080;
    bool test = false;
    const char *root = NULL;
    for (const char *arg; (arg = cli_next(&cli));) {
        if (strcmp(arg, "--port") == 0)
            port = (unsigned)cli_uint(&cli, arg, cli_value(&cli), 0, 65535);
        else if (strcmp(arg, "--workers") == 0)
            cfg.workers = (unsigned)cli_uint(&cli, arg, cli_value(&cli), 1, WEFT_WORKERS_MAX);
        else if (strcmp(arg, "--self-test") == 0)
            test = true;
        else if (strcmp(arg, "--root") == 0)
            root = cli_value(&cli);
        else if (strcmp(arg, "--own") == 0)
            own_input = true;
        else
            cli_unexpected(&cli, arg);
    }
    if (root && !test) {
        int dir = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0) {
            fprintf(stderr, "http_server: %s: %s\n", root, strerror(errno));
            return 1;
        }
        root_fd = dir;
    }
    if (test)
        request_ns = 200000000;   /* 200 ms, to keep the test short */
    int lfd = cli_listen_loopback(&cli, test ? 0 : port, 4096, &addr);
    if (!test) {
        cli_catch_stop_signals(&cli);
        printf("http_server: listening on 127.0.0.1:%u (http://127.0.0.1:%u/)\n",
               ntohs(addr.sin_port), ntohs(addr.sin_port));
        fflush(stdout);   /* a log file gets it now, not at exit */
    }
    void *result;
    int err = weft_main(&cfg, test ? self_test : serve, (void *)(intptr_t)lfd, &result);
    if (err) {
        fprintf(stderr, "http_server: %s\n", strerror(-err));
        return 1;
    }
    return result != NULL;
}
