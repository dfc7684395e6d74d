/*
 * A TCP echo server: one coroutine per connection, each written as plain
 * blocking code. A connection that waits for its client suspends only its own
 * coroutine; the workers serve the others meanwhile. A client that says
 * nothing for ten seconds is dropped, through the coroutine's deadline.
 *
 *   echo_server [port]          (default 7777; stop with Ctrl-C)
 *   echo_server --self-test     serves 50 clients of its own, checks them, exits
 */
#include <weft.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define IDLE_NS  (10ull * 1000000000ull)
#define CLIENTS  50
#define MESSAGES 100

static void *serve_connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    for (;;) {
        weft_deadline(weft_now() + IDLE_NS);   /* each read gets ten seconds */
        ssize_t n = weft_recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            if (n == -ETIMEDOUT)
                fprintf(stderr, "echo_server: dropping an idle client\n");
            break;
        }
        weft_deadline(0);
        if (weft_send(fd, buf, (size_t)n, 0) != n)
            break;
    }
    weft_close(fd);
    return NULL;
}

/* Accepts `count` connections (0: forever), each served by its own coroutine. */
static void *accept_loop(int lfd, int count)
{
    for (int i = 0; count == 0 || i < count; i++) {
        int fd = weft_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, "echo_server: accept: %s\n", strerror(-fd));
            return (void *)1;
        }
        int err = weft_spawn(NULL, serve_connection, (void *)(intptr_t)fd);
        if (err) {
            fprintf(stderr, "echo_server: spawn: %s\n", strerror(-err));
            weft_close(fd);
        }
    }
    return NULL;
}

static int listen_on(uint16_t port, struct sockaddr_in *sa)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    *sa = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof *sa;
    if (bind(lfd, (struct sockaddr *)sa, sizeof *sa) < 0 || listen(lfd, 512) < 0 ||
        getsockname(lfd, (struct sockaddr *)sa, &len) < 0) {
        perror("echo_server: listen");
        exit(1);
    }
    return lfd;
}

/* ---- the self-test: clients are coroutines too -------------------------- */

static struct sockaddr_in server_addr;

static void *client(void *arg)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (weft_connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) != 0)
        return (void *)1;
    for (int i = 0; i < MESSAGES; i++) {
        char out[32], in[32];
        int n = snprintf(out, sizeof out, "client %d line %d", (int)(intptr_t)arg, i);
        if (weft_send(fd, out, (size_t)n, 0) != n ||
            weft_recv(fd, in, (size_t)n, MSG_WAITALL) != n || memcmp(in, out, (size_t)n) != 0)
            return (void *)1;
    }
    weft_close(fd);
    return NULL;
}

static void *accept_clients(void *arg)
{
    return accept_loop((int)(intptr_t)arg, CLIENTS);
}

static void *self_test(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    weft_task *acceptor, *clients[CLIENTS];
    weft_spawn(&acceptor, accept_clients, arg);
    for (int i = 0; i < CLIENTS; i++)
        weft_spawn(&clients[i], client, (void *)(intptr_t)i);
    int failed = 0;
    for (int i = 0; i < CLIENTS; i++) {
        void *r;
        weft_join(clients[i], &r);
        failed += r != NULL;
    }
    weft_join(acceptor, NULL);
    weft_close(lfd);
    printf("echo_server: %d clients x %d messages echoed, %d failed\n", CLIENTS, MESSAGES, failed);
    return (void *)(intptr_t)failed;
}

static void *serve_forever(void *arg)
{
    return accept_loop((int)(intptr_t)arg, 0);
}

int main(int argc, char **argv)
{
    bool test = argc > 1 && strcmp(argv[1], "--self-test") == 0;
    uint16_t port = test ? 0 : argc > 1 ? (uint16_t)atoi(argv[1]) : 7777;
    int lfd = listen_on(port, &server_addr);
    if (!test)
        printf("echo_server: listening on 127.0.0.1:%u\n", ntohs(server_addr.sin_port));
    void *result;
    int err = weft_main(NULL, test ? self_test : serve_forever, (void *)(intptr_t)lfd, &result);
    if (err) {
        fprintf(stderr, "echo_server: %s\n", strerror(-err));
        return 1;
    }
    return result != NULL;
}
