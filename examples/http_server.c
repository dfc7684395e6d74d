/*
 * A small HTTP/1.1 server: one coroutine per connection, keep-alive, and
 * GET / answered with a fixed body. Anything it cannot parse gets a 400 and
 * the connection is closed. A client gets ten seconds to send each request
 * (its coroutine's deadline), so slow and half-open clients cost one parked
 * coroutine for that long, and never a thread.
 *
 *   http_server [--port N] [--workers N] [--self-test]
 *
 * Binds 127.0.0.1 (default port 8080). --self-test serves requests of its own
 * (keep-alive, pipelined, malformed, and a client that stops talking) and
 * checks each answer.
 */
#define _GNU_SOURCE
#include <weft.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define REQUEST_NS (10ull * 1000000000ull)
#define BUF_SIZE   8192

static const char body[] = "Hello from weft\n";
static uint64_t request_ns = REQUEST_NS;

static const char bad_request[] =
    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
static const char not_found[] =
    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";

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

/* Whether the header block [start, end) asks to close the connection. */
static bool wants_close(const char *start, const char *end, bool http10)
{
    for (const char *p = start; p + 17 <= end; p++)
        if (strncasecmp(p, "connection: close", 17) == 0)
            return true;
    if (http10) {
        for (const char *p = start; p + 22 <= end; p++)
            if (strncasecmp(p, "connection: keep-alive", 22) == 0)
                return false;
        return true;
    }
    return false;
}

/* Handles every complete request in buf[0..*len). Returns false to close. */
static bool serve_requests(int fd, char *buf, size_t *len)
{
    for (;;) {
        char *end = memmem(buf, *len, "\r\n\r\n", 4);
        if (!end)
            return *len < BUF_SIZE;   /* a header block larger than the buffer: close */
        end += 4;
        char line[300], method[8], path[256], version[16];
        size_t ll = (size_t)((char *)memchr(buf, '\n', (size_t)(end - buf)) - buf);
        if (ll >= sizeof line)
            ll = sizeof line - 1;
        memcpy(line, buf, ll);   /* parse the request line alone, terminated */
        line[ll] = 0;
        if (sscanf(line, "%7s %255s %15s", method, path, version) != 3 ||
            strncmp(version, "HTTP/1.", 7) != 0 || memmem(buf, (size_t)(end - buf), "Content-Length", 14)) {
            send_all(fd, bad_request, sizeof bad_request - 1);   /* no request bodies here */
            return false;
        }
        bool close_after = wants_close(buf, end, strcmp(version, "HTTP/1.0") == 0);
        bool ok;
        if (strcmp(method, "GET") == 0 && strcmp(path, "/") == 0) {
            char head[160];
            int n = snprintf(head, sizeof head,
                             "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n",
                             sizeof body - 1, close_after ? "Connection: close\r\n" : "");
            char out[256];
            memcpy(out, head, (size_t)n);
            memcpy(out + n, body, sizeof body - 1);
            ok = send_all(fd, out, (size_t)n + sizeof body - 1);
        } else {
            ok = send_all(fd, not_found, sizeof not_found - 1);
        }
        size_t used = (size_t)(end - buf);
        memmove(buf, end, *len - used);
        *len -= used;
        if (!ok || close_after)
            return false;
    }
}

static void *connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char *buf = malloc(BUF_SIZE);
    size_t len = 0;
    while (buf) {
        weft_deadline(weft_now() + request_ns);   /* the time each request may take to arrive */
        ssize_t n = weft_recv(fd, buf + len, BUF_SIZE - len, 0);
        weft_deadline(0);
        if (n <= 0)
            break;   /* closed, reset, or too slow */
        len += (size_t)n;
        if (!serve_requests(fd, buf, &len))
            break;
    }
    free(buf);
    weft_close(fd);
    return NULL;
}

static void *accept_loop(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = weft_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd == -ECANCELED || fd == -EBADF)
            return NULL;
        if (fd < 0) {
            fprintf(stderr, "http_server: accept: %s\n", strerror(-fd));
            weft_sleep(10000000);   /* out of descriptors, say: back off, keep serving */
            continue;
        }
        if (weft_spawn(NULL, connection, (void *)(intptr_t)fd) != 0)
            weft_close(fd);
    }
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
    return weft_connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 ? fd : -1;
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
    weft_close(fd);

    fd = connect_to_server();
    exchange(fd, "GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n", sizeof out, out, sizeof out);
    CHECK(strncmp(out, "HTTP/1.1 404", 12) == 0, "404");
    weft_close(fd);

    /* Garbage: a 400, then the server closes. */
    fd = connect_to_server();
    exchange(fd, "BLAH\r\n\r\n", sizeof out, out, sizeof out);
    CHECK(strncmp(out, "HTTP/1.1 400", 12) == 0, "400 on garbage, then close");
    weft_close(fd);

    /* HTTP/1.0 closes after one answer. */
    fd = connect_to_server();
    exchange(fd, "GET / HTTP/1.0\r\n\r\n", sizeof out, out, sizeof out);
    CHECK(strstr(out, "Connection: close") && strstr(out, body), "HTTP/1.0");
    weft_close(fd);

    /* A client that sends half a request and stops: dropped at the deadline. */
    fd = connect_to_server();
    uint64_t t0 = weft_now();
    exchange(fd, "GET / HT", sizeof out, out, sizeof out);
    CHECK(out[0] == 0 && weft_now() - t0 >= request_ns, "a stalled client is dropped after its deadline");
    weft_close(fd);

    failed = NULL;
    printf("http_server: self-test passed\n");
out:
    weft_cancel(server);   /* ends its accept */
    weft_join(server, NULL);
    return failed;
}

int main(int argc, char **argv)
{
    weft_config cfg = { 0 };
    int port = 8080;
    bool test = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
            cfg.workers = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--self-test") == 0)
            test = true;
        else {
            fprintf(stderr, "usage: http_server [--port N] [--workers N] [--self-test]\n");
            return 2;
        }
    }
    if (test) {
        port = 0;
        request_ns = 200000000;   /* 200 ms, to keep the test short */
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    addr = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
        perror("http_server");
        return 1;
    }
    if (!test)
        printf("http_server: http://127.0.0.1:%u/\n", ntohs(addr.sin_port));
    void *result;
    int err = weft_main(&cfg, test ? self_test : accept_loop, (void *)(intptr_t)lfd, &result);
    if (err) {
        fprintf(stderr, "http_server: %s\n", strerror(-err));
        return 1;
    }
    return result != NULL;
}
