/* SPDX-License-Identifier: MIT */
/*
 * A TCP echo server: one coroutine per connection, each written as plain
 * blocking code. A connection that waits for its client suspends only its own
 * coroutine; the workers serve the others meanwhile. A client that says
 * nothing for ten seconds is dropped, through the coroutine's deadline.
 *
 * SIGINT or SIGTERM stops it: the accept loop is cancelled, every open
 * connection is shut down, so that its coroutine's receive returns, and the
 * runtime ends once every coroutine has returned.
 *
 *   echo_server [--port N] [--workers N]   serve 127.0.0.1:N (default 7777)
 *   echo_server --self-test                serve 50 clients of its own, check them, exit
 */
#define _GNU_SOURCE
#include <weft.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cli.h"

#define IDLE_NS  (10ull * 1000000000ull)
#define CLIENTS  50
#define MESSAGES 100

static void *serve_connection(void *arg)
{
    struct cli_conn c;
    if (!cli_conn_open(&c, (int)(intptr_t)arg))
        return NULL;
    char buf[4096];
    for (;;) {
        weft_deadline(weft_now() + IDLE_NS);   /* each read gets ten seconds */
        ssize_t n = weft_recv(c.fd, buf, sizeof buf, 0);
        weft_deadline(0);
        if (n <= 0) {
            if (n == -ETIMEDOUT)
                fprintf(stderr, "echo_server: dropping an idle client\n");
            break;
        }
        if (weft_send(c.fd, buf, (size_t)n, 0) != n)
            break;
    }
    cli_conn_close(&c);
    return NULL;
}

/* ---- serving until SIGINT or SIGTERM ------------------------------------ */

static void *accept_forever(void *arg)
{
    cli_accept_loop("echo_server", (int)(intptr_t)arg, serve_connection, 0);
    return NULL;
}

static void *serve(void *arg)
{
    return cli_serve_until_stop("echo_server", (int)(intptr_t)arg, accept_forever) ? (void *)1 : NULL;
}

/* ---- the self-test: clients are coroutines too -------------------------- */

static struct sockaddr_in server_addr;

static void *client(void *arg)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return (void *)1;
    void *failed = (void *)1;
    if (weft_connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) != 0)
        goto out;
    for (int i = 0; i < MESSAGES; i++) {
        char out[32], in[32];
        int n = snprintf(out, sizeof out, "client %d line %d", (int)(intptr_t)arg, i);
        if (weft_send(fd, out, (size_t)n, 0) != n ||
            weft_recv(fd, in, (size_t)n, MSG_WAITALL) != n || memcmp(in, out, (size_t)n) != 0)
            goto out;
    }
    failed = NULL;
out:
    weft_close(fd);
    return failed;
}

static void *accept_clients(void *arg)
{
    cli_accept_loop("echo_server", (int)(intptr_t)arg, serve_connection, CLIENTS);
    return NULL;
}

static void *self_test(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    weft_task *acceptor, *clients[CLIENTS];
    int err = weft_spawn(&acceptor, accept_clients, arg);
    for (int i = 0; i < CLIENTS && !err; i++)
        err = weft_spawn(&clients[i], client, (void *)(intptr_t)i);
    if (err) {
        fprintf(stderr, "echo_server: spawn: %s\n", strerror(-err));
        exit(1);
    }
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

int main(int argc, char **argv)
{
    struct cli cli = CLI_INIT(argc, argv, "echo_server", "[--port N] [--workers N] [--self-test]",
        "A TCP echo server on 127.0.0.1, one coroutine per connection; a client\n"
        "idle for ten seconds is dropped. SIGINT or SIGTERM stops it.\n\n"
        "  --port N      the port, 0 to 65535 (default 7777; 0: any free one)\n"
        "  --workers N   worker threads, 1 to 1024 (default: one per CPU)\n"
        "  --self-test   serve 50 clients of its own, check every echo, and exit\n");
    weft_config cfg = { 0 };
    unsigned port = 7777;
    bool test = false;
    for (const char *arg; (arg = cli_next(&cli));) {
        if (strcmp(arg, "--port") == 0)
            port = (unsigned)cli_uint(&cli, arg, cli_value(&cli), 0, 65535);
        else if (strcmp(arg, "--workers") == 0)
            cfg.workers = (unsigned)cli_uint(&cli, arg, cli_value(&cli), 1, WEFT_WORKERS_MAX);
        else if (strcmp(arg, "--self-test") == 0)
            test = true;
        else
            cli_unexpected(&cli, arg);
    }
    int lfd = cli_listen_loopback(&cli, test ? 0 : port, 512, &server_addr);
    if (!test) {
        cli_catch_stop_signals(&cli);
        printf("echo_server: listening on 127.0.0.1:%u\n", ntohs(server_addr.sin_port));
        fflush(stdout);   /* a log file gets it now, not at exit */
    }
    void *result;
    int err = weft_main(&cfg, test ? self_test : serve, (void *)(intptr_t)lfd, &result);
    if (err) {
        fprintf(stderr, "echo_server: %s\n", strerror(-err));
        return 1;
    }
    return result != NULL;
}
