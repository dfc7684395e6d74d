/* SPDX-License-Identifier: MIT */
/*
 * What makes the examples behave like command-line tools: --help prints the
 * usage line and exits 0; an unknown option, a stray argument or a malformed
 * value is named on standard error with the usage line, and the program exits
 * 2; and a server stops cleanly on SIGINT or SIGTERM, shutting its open
 * connections down.
 *
 * A program reads its arguments in one loop:
 *
 *     struct cli cli = CLI_INIT(argc, argv, "echo_server", "[--port N]",
 *                               "A TCP echo server.\n");
 *     for (const char *arg; (arg = cli_next(&cli));) {
 *         if (strcmp(arg, "--port") == 0)
 *             port = cli_uint(&cli, arg, cli_value(&cli), 0, 65535);
 *         else
 *             cli_unexpected(&cli, arg);
 *     }
 *
 * Everything here is static inline, for a header shared by one-file programs.
 * It needs POSIX and GNU declarations (sigaction, pipe2): a program defines
 * _GNU_SOURCE before its first #include.
 */
#ifndef WEFT_EXAMPLES_CLI_H
#define WEFT_EXAMPLES_CLI_H

#include <weft.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct cli {
    int         argc;
    char      **argv;
    const char *name;       /* the program, at the start of each message */
    const char *usage;      /* its arguments, for the usage line */
    const char *about;      /* what --help prints after the usage line */
    int         next;       /* the index of the next argument to read */
    bool        no_options; /* after "--": every argument is an operand */
};

#define CLI_INIT(argc, argv, name, usage, about) { (argc), (argv), (name), (usage), (about), 1, false }

/* Names the problem (printf-style) on stderr with the usage line; exits 2. */
static inline _Noreturn void cli_fail(const struct cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", c->name);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s%s%s\nTry '%s --help' for more.\n",
            c->name, *c->usage ? " " : "", c->usage, c->name);
    exit(2);
}

/* Whether arg is an option: it starts with '-', is not "-" alone (standard
 * input, by convention), and no "--" came before it. */
static inline bool cli_is_option(const struct cli *c, const char *arg)
{
    return !c->no_options && arg[0] == '-' && arg[1] != '\0';
}

/* The next argument, or NULL when none is left. Answers --help (and -h)
 * itself, and takes "--" as the end of the options. */
static inline const char *cli_next(struct cli *c)
{
    while (c->next < c->argc) {
        const char *arg = c->argv[c->next++];
        if (!cli_is_option(c, arg))
            return arg;
        if (strcmp(arg, "--") == 0) {
            c->no_options = true;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            printf("usage: %s%s%s\n\n%s", c->name, *c->usage ? " " : "", c->usage, c->about);
            exit(0);
        }
        return arg;
    }
    return NULL;
}

/* The value of the option just read ("--port 80"): the next argument. Fails
 * if there is none. */
static inline const char *cli_value(struct cli *c)
{
    const char *option = c->argv[c->next - 1];
    if (c->next >= c->argc)
        cli_fail(c, "%s needs a value", option);
    return c->argv[c->next++];
}

/* text as a decimal number in [min, max]; fails naming `what` (the option or
 * the operand) and the text otherwise. No sign, no spaces, no suffix. */
static inline unsigned long long cli_uint(const struct cli *c, const char *what, const char *text,
                                          unsigned long long min, unsigned long long max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end != '\0')
        cli_fail(c, "%s: '%s' is not a number", what, text);
    if (errno == ERANGE || v < min || v > max)
        cli_fail(c, "%s: %s is out of range (%llu to %llu)", what, text, min, max);
    return v;
}

/* Fails on an argument the program does not take, naming it. */
static inline _Noreturn void cli_unexpected(const struct cli *c, const char *arg)
{
    if (cli_is_option(c, arg))
        cli_fail(c, "unknown option '%s'", arg);
    cli_fail(c, "unexpected argument '%s'", arg);
}

/* A listening TCP socket on 127.0.0.1:port (0: any free port); *sa receives
 * the address it got. The main thread. Exits 1, naming the address and the
 * error, if it cannot listen. */
static inline int cli_listen_loopback(const struct cli *c, unsigned port, int backlog,
                                      struct sockaddr_in *sa)
{
    *sa = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof *sa;
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(lfd, (struct sockaddr *)sa, sizeof *sa) < 0 || listen(lfd, backlog) < 0 ||
        getsockname(lfd, (struct sockaddr *)sa, &len) < 0) {
        fprintf(stderr, "%s: 127.0.0.1:%u: %s\n", c->name, port, strerror(errno));
        exit(1);
    }
    return lfd;
}

/* ---- stopping on SIGINT and SIGTERM ---------------------------------------
 *
 * SIGINT and SIGTERM are blocked in every thread (the runtime's workers
 * inherit the mask of the thread that starts them), and one plain thread
 * takes them with sigwait() and writes the signal's number to a pipe, which a
 * coroutine reads with weft_read(). That coroutine does the stopping, with the
 * whole API at hand: typically it cancels the accept loop and ends the open
 * connections. No signal handler runs, so nothing is limited to what a
 * handler may do, and no system call of the runtime is interrupted.
 */

/* The pipe: [0] read by cli_wait_for_stop(), [1] written by the thread. */
static inline int *cli_stop_pipe(void)
{
    static int fds[2] = { -1, -1 };
    return fds;
}

static inline void *cli_stop_thread(void *arg)
{
    const sigset_t *set = arg;
    int sig;
    while (sigwait(set, &sig) == 0) {
        unsigned char b = (unsigned char)sig;
        ssize_t n = write(cli_stop_pipe()[1], &b, 1);   /* full: a stop is pending already */
        (void)n;
    }
    return NULL;
}

/* Makes SIGINT and SIGTERM ask for a stop instead of ending the process.
 * The main thread, before the runtime starts. Exits 1 if it cannot. */
static inline void cli_catch_stop_signals(const struct cli *c)
{
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_t thread;
    /* Non-blocking: the thread never waits for a reader; weft_read waits anyway. */
    int err = pipe2(cli_stop_pipe(), O_CLOEXEC | O_NONBLOCK) != 0 ? errno
                                                                 : pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (!err)
        err = pthread_create(&thread, NULL, cli_stop_thread, &set);
    if (err) {
        fprintf(stderr, "%s: cannot catch SIGINT and SIGTERM: %s\n", c->name, strerror(err));
        exit(1);
    }
    pthread_detach(thread);
}

/* A coroutine: suspends until SIGINT or SIGTERM arrives (only this coroutine
 * waits; its worker runs the others). Returns the signal's number, or a
 * negative errno if the wait failed (cancelled, say). */
static inline int cli_wait_for_stop(void)
{
    unsigned char sig;
    ssize_t n = weft_read(cli_stop_pipe()[0], &sig, 1);
    return n == 1 ? sig : n < 0 ? (int)n : -EIO;
}

/* ---- the open connections of a server --------------------------------------
 *
 * A server puts each connection on one list while a coroutine serves it, so
 * that a stop can shut them all down: each coroutine's receive then returns 0
 * (and a send in progress fails), and it ends by itself, closing its
 * descriptor. Connections that open after the stop are refused.
 */

/* One connection: on the list from cli_conn_open to cli_conn_close. */
struct cli_conn {
    int              fd;
    struct cli_conn *prev, *next;   /* on the list; guarded by its lock */
};

struct cli_conn_list {
    weft_mutex       lock;
    struct cli_conn *head;       /* the open connections */
    bool             stopping;   /* no connection may open */
};

static inline struct cli_conn_list *cli_conns(void)
{
    static struct cli_conn_list list = { WEFT_MUTEX_INIT, NULL, false };
    return &list;
}

/* Puts c, serving fd, on the list. Returns false, leaving it off and fd
 * closed, once the server stops. A coroutine. */
static inline bool cli_conn_open(struct cli_conn *c, int fd)
{
    struct cli_conn_list *l = cli_conns();
    c->fd = fd;
    weft_mutex_lock(&l->lock);
    bool open = !l->stopping;
    if (open) {
        c->prev = NULL;
        c->next = l->head;
        if (l->head)
            l->head->prev = c;
        l->head = c;
    }
    weft_mutex_unlock(&l->lock);
    if (!open)
        weft_close(fd);
    return open;
}

/* Takes c off the list and closes its descriptor. A coroutine. */
static inline void cli_conn_close(struct cli_conn *c)
{
    struct cli_conn_list *l = cli_conns();
    weft_mutex_lock(&l->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    weft_mutex_unlock(&l->lock);
    weft_close(c->fd);
}

/* Shuts every open connection down and refuses new ones. The descriptors
 * stay their coroutines' to close. A coroutine. */
static inline void cli_conn_stop_all(void)
{
    struct cli_conn_list *l = cli_conns();
    weft_mutex_lock(&l->lock);
    l->stopping = true;
    for (struct cli_conn *c = l->head; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    weft_mutex_unlock(&l->lock);
}

/* ---- accepting, and serving until SIGINT or SIGTERM ------------------------ */

/* Accepts connections on lfd, each served by fn((void *)(intptr_t)fd) in a
 * coroutine of its own: `count` of them, or 0 for as many as come until the
 * accept is cancelled or lfd closed. A failed accept (out of descriptors,
 * say) is logged under `name` and the loop backs off and goes on. A
 * coroutine. */
static inline void cli_accept_loop(const char *name, int lfd, weft_fn fn, int count)
{
    for (int i = 0; count == 0 || i < count; i++) {
        int fd = weft_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd == -ECANCELED || fd == -EBADF)
            return;
        if (fd < 0) {
            fprintf(stderr, "%s: accept: %s\n", name, strerror(-fd));
            weft_sleep(10000000);
            continue;
        }
        int err = weft_spawn(NULL, fn, (void *)(intptr_t)fd);
        if (err) {
            fprintf(stderr, "%s: spawn: %s\n", name, strerror(-err));
            weft_close(fd);
        }
    }
}

/* Runs acceptor((void *)(intptr_t)lfd) as a coroutine until SIGINT or
 * SIGTERM (cli_catch_stop_signals first), then says so on stdout as
 * "NAME: SIGTERM, stopping", cancels the acceptor, closes lfd, and shuts
 * every open connection down (cli_conn_stop_all): the runtime ends once the
 * connections' coroutines have returned. A coroutine. Returns 0, or the
 * negative errno of the spawn that failed. */
static inline int cli_serve_until_stop(const char *name, int lfd, weft_fn acceptor)
{
    weft_task *task;
    int err = weft_spawn(&task, acceptor, (void *)(intptr_t)lfd);
    if (err) {
        fprintf(stderr, "%s: spawn: %s\n", name, strerror(-err));
        return err;
    }
    int sig = cli_wait_for_stop();
    printf("%s: %s, stopping\n", name, sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "stop");
    fflush(stdout);
    weft_cancel(task);   /* its accept returns -ECANCELED */
    weft_join(task, NULL);
    weft_close(lfd);
    cli_conn_stop_all();
    return 0;
}

#endif /* WEFT_EXAMPLES_CLI_H */
