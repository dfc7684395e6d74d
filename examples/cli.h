/* SPDX-License-Identifier: MIT */
/*
 * What makes the examples behave like command-line tools: --help prints the
 * usage line and exits 0; an unknown option, a stray argument or a malformed
 * value is named on standard error with the usage line, and the program exits
 * 2; and a server stops cleanly on SIGINT or SIGTERM.
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

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

#endif /* WEFT_EXAMPLES_CLI_H */
