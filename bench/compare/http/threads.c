/* SPDX-License-Identifier: MIT */
/*
 * The pthreads baseline for examples/http_server.c: the same answers, one
 * kernel thread per connection, blocking calls. Only GET / with keep-alive is
 * served; it exists to be measured with wrk next to the weft server.
 *
 *   http_threads [port]     (default 8082)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\n"
                            "Hello from weft\n";

static void *connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[8192];
    size_t len = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + len, sizeof buf - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        char *end;
        while ((end = memmem(buf, len, "\r\n\r\n", 4))) {
            if (send(fd, reply, sizeof reply - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof reply - 1))
                goto out;
            end += 4;
            memmove(buf, end, len - (size_t)(end - buf));
            len -= (size_t)(end - buf);
        }
        if (len == sizeof buf)
            break;
    }
out:
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 8082;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
        perror("http_threads");
        return 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_t t;
        if (pthread_create(&t, &attr, connection, (void *)(intptr_t)fd) != 0)
            close(fd);
    }
}
