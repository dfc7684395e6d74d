/*
 * A UDP echo server: datagrams, with weft_recvfrom and weft_sendto. A few
 * coroutines receive on one socket at once (each datagram goes to one of
 * them) and send each datagram back to its sender. SIGINT or SIGTERM stops
 * it: the receivers are cancelled and the runtime ends.
 *
 *   udp_echo [--port N] [--workers N] [--receivers N]   serve 127.0.0.1:N (default 7070)
 */
#define _GNU_SOURCE
#include <weft.h>

#include "cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define RECEIVERS_MAX 64

static void *receiver(void *arg)
{
    int fd = (int)(intptr_t)arg;
    for (;;) {
        char buf[65536];
        struct sockaddr_storage from;
        socklen_t flen = sizeof from;
        ssize_t n = weft_recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
        if (n == -ECANCELED || n == -EBADF)
            return NULL;
        if (n < 0) {
            fprintf(stderr, "udp_echo: recvfrom: %s\n", strerror((int)-n));
            continue;
        }
        ssize_t w = weft_sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen);
        if (w < 0)
            fprintf(stderr, "udp_echo: sendto: %s\n", strerror((int)-w));
    }
}

static unsigned receivers = 4;

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    weft_task *t[RECEIVERS_MAX];
    unsigned n = 0;
    for (; n < receivers; n++) {
        int err = weft_spawn(&t[n], receiver, arg);
        if (err) {
            fprintf(stderr, "udp_echo: spawn: %s\n", strerror(-err));
            break;
        }
    }
    int sig = cli_wait_for_stop();
    printf("udp_echo: %s, stopping\n", sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "stop");
    fflush(stdout);
    for (unsigned i = 0; i < n; i++) {
        weft_cancel(t[i]);   /* its weft_recvfrom returns -ECANCELED */
        weft_join(t[i], NULL);
    }
    weft_close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    struct cli cli = CLI_INIT(argc, argv, "udp_echo", "[--port N] [--workers N] [--receivers N]",
        "A UDP echo server on 127.0.0.1: every datagram is sent back to its sender.\n"
        "SIGINT or SIGTERM stops it.\n\n"
        "  --port N        the port, 0 to 65535 (default 7070; 0: any free one)\n"
        "  --workers N     worker threads, 1 to 1024 (default: one per CPU)\n"
        "  --receivers N   coroutines receiving on the socket, 1 to 64 (default 4)\n");
    weft_config cfg = { 0 };
    unsigned port = 7070;
    for (const char *arg; (arg = cli_next(&cli));) {
        if (strcmp(arg, "--port") == 0)
            port = (unsigned)cli_uint(&cli, arg, cli_value(&cli), 0, 65535);
        else if (strcmp(arg, "--workers") == 0)
            cfg.workers = (unsigned)cli_uint(&cli, arg, cli_value(&cli), 1, WEFT_WORKERS_MAX);
        else if (strcmp(arg, "--receivers") == 0)
            receivers = (unsigned)cli_uint(&cli, arg, cli_value(&cli), 1, RECEIVERS_MAX);
        else
            cli_unexpected(&cli, arg);
    }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        fprintf(stderr, "udp_echo: 127.0.0.1:%u: %s\n", port, strerror(errno));
        return 1;
    }
    cli_catch_stop_signals(&cli);
    printf("udp_echo: listening on 127.0.0.1:%u (udp)\n", ntohs(sa.sin_port));
    fflush(stdout);   /* a log file gets it now, not at exit */
    int err = weft_main(&cfg, serve, (void *)(intptr_t)fd, NULL);
    if (err) {
        fprintf(stderr, "udp_echo: %s\n", strerror(-err));
        return 1;
    }
    return 0;
}
