/* SPDX-License-Identifier: MIT */
/*
 * kv: the key-value example (examples/kv_server.c, a coroutine per
 * connection on weft, a map shared by every worker) against redis-server
 * (one event loop), both driven by redis-benchmark, a client neither of them
 * ships with.
 *
 * Each server runs as its own process on 127.0.0.1 for the whole workload:
 * kv_server on weft's default workers (or --workers), kv_server again on one
 * worker, the one core redis-server's event loop has (unless the default is
 * one already), and redis-server with no persistence. Each run drives them
 * all, in turn, the first one rotating from run to run, so that each meets
 * the machine's changes in every position (evenly when the runs are a
 * multiple of the servers): for each of
 * "no pipelining" and "-P 16", one redis-benchmark of GET and SET with 50
 * connections and opt.kv_requests requests each, whose requests per second
 * it reports. redis-benchmark must exit 0 and report both tests, and after
 * the runs each server must hold a value of the size the SETs stored; the
 * kv_server must stop with status 0 on SIGTERM.
 *
 * Skipped, with a note under the table, where redis-server or
 * redis-benchmark is missing (Debian: redis-server, redis-tools) or
 * kv_server was not built.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BENCH_CONNS   50
#define PIPELINE      16
#define KV_WAIT_NS    (120ull * 1000000000)   /* for a program to say what it must */

enum { KV = 0, KV1 = 1, REDIS = 2, SERVERS = 3 };
enum { SET = 0, GET = 1, TESTS = 2 };
enum { PLAIN = 0, PIPELINED = 1, MODES = 2 };

static const char *const server_name[SERVERS] = { "kv_server", "kv_server on 1 worker", "redis-server" };

/* [server][mode][test][run]: thousand requests per second. */
static double rps[SERVERS][MODES][TESTS][RUNS_MAX];

/* name's path in PATH into buf, or 0 if it is not there. */
static int find_program(const char *name, char *buf, size_t len)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n && snprintf(buf, len, "%.*s/%s", (int)n, path, name) < (int)len && access(buf, X_OK) == 0)
            return 1;
        path += n + (path[n] == ':');
    }
    return 0;
}

/* Starts argv[0] with its standard output on a pipe (*out, the read end),
 * or on /dev/null if out is NULL, and its standard error on /dev/null unless
 * keep_stderr. Returns its pid, or -1 (and fail()). */
static pid_t spawn(char *const argv[], int *out, int keep_stderr)
{
    int p[2] = { -1, -1 };
    if (out && pipe2(p, O_CLOEXEC) != 0) {
        fail("kv: pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(out ? p[1] : null, 1);
        if (!keep_stderr)
            dup2(null, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    if (out)
        close(p[1]);
    if (pid < 0) {
        if (out)
            close(p[0]);
        fail("kv: fork: %s", strerror(errno));
        return -1;
    }
    if (out)
        *out = p[0];
    return pid;
}

/* Reads fd into buf (cap bytes, NUL included) until end of file, or only
 * its first line if line, for at most KV_WAIT_NS. Returns the length, or -1
 * on a time-out. */
static ssize_t read_all(int fd, char *buf, size_t cap, int line)
{
    size_t len = 0;
    uint64_t until = now_ns() + KV_WAIT_NS;
    buf[0] = '\0';
    while (len + 1 < cap && !(line && memchr(buf, '\n', len))) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        uint64_t now = now_ns();
        if (now >= until || poll(&pfd, 1, (int)((until - now) / 1000000 + 1)) == 0)
            return -1;
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
    }
    return (ssize_t)len;
}

/* Sends req on a fresh connection to port and reads the answer into buf. */
static int ask(int port, const char *req, char *buf, size_t cap)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    buf[0] = '\0';
    if (fd < 0)
        return -1;
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
             write(fd, req, strlen(req)) == (ssize_t)strlen(req);
    if (ok) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        ssize_t n = poll(&pfd, 1, 10000) == 1 ? read(fd, buf, cap - 1) : -1;
        buf[n > 0 ? n : 0] = '\0';
        ok = n > 0;
    }
    close(fd);
    return ok ? 0 : -1;
}

/* A port no one listens on now, from the kernel. */
static int free_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

struct server {
    pid_t pid;
    int   port;
    int   out;    /* the read end of its standard output, or -1; kept open
                   * while it runs, so that what it prints cannot fail */
};

/* kv_server on n workers and a port of its choosing, read from its
 * listening line. */
static int start_kv(const char *path, unsigned workers_n, struct server *s)
{
    char nworkers[16], line[256];
    snprintf(nworkers, sizeof nworkers, "%u", workers_n);
    char *argv[] = { (char *)path, "--port", "0", "--workers", nworkers, NULL };
    s->pid = spawn(argv, &s->out, 1);
    if (s->pid < 0)
        return -1;
    ssize_t n = read_all(s->out, line, sizeof line, 1);
    const char *at = n > 0 ? strstr(line, "listening on 127.0.0.1:") : NULL;
    s->port = at ? atoi(at + strlen("listening on 127.0.0.1:")) : 0;
    if (s->port <= 0) {
        fail("kv: kv_server printed no listening line: '%s'", line);
        return -1;
    }
    return 0;
}

/* redis-server on a free port, without persistence; ready once it answers. */
static int start_redis(const char *path, struct server *s)
{
    char port[16], answer[64];
    s->port = free_port();
    snprintf(port, sizeof port, "%d", s->port);
    char *argv[] = { (char *)path, "--port", port, "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--daemonize", "no", NULL };
    s->pid = spawn(argv, NULL, 0);
    if (s->pid < 0)
        return -1;
    for (uint64_t until = now_ns() + KV_WAIT_NS; now_ns() < until; usleep(20000))
        if (ask(s->port, "PING\r\n", answer, sizeof answer) == 0 && strcmp(answer, "+PONG\r\n") == 0)
            return 0;
    fail("kv: redis-server did not answer PING on port %d", s->port);
    return -1;
}

/* Stops s with SIGTERM; returns its exit status, or -1 if it did not exit. */
static int stop(struct server *s)
{
    int status, rc = -1;
    if (s->pid <= 0)
        return 0;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 1000 && rc < 0; i++) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid)
            rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        else
            usleep(10000);
    }
    if (rc < 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &status, 0);
    }
    if (s->out >= 0)
        close(s->out);
    return rc;
}

/*
 * One redis-benchmark of SET and GET against port; their requests per
 * second, in thousands, into set and get. --csv prints a header, then one
 * line per test: "SET","85106.38",... Returns 0, or -1 (and fail()) if it
 * did not exit 0 or did not report both tests.
 */
static int run_benchmark(const char *path, int port, int pipeline, double *set, double *get)
{
    char p[16], n[24], c[16], pl[16], out[4096];
    snprintf(p, sizeof p, "%d", port);
    snprintf(n, sizeof n, "%ld", opt.kv_requests);
    snprintf(c, sizeof c, "%d", BENCH_CONNS);
    snprintf(pl, sizeof pl, "%d", pipeline);
    char *argv[] = { (char *)path, "-h", "127.0.0.1", "-p", p, "-t", "set,get", "-c", c,
                     "-n", n, "-P", pl, "--csv", NULL };
    int fd, status;
    pid_t pid = spawn(argv, &fd, 0);
    if (pid < 0)
        return -1;
    ssize_t len = read_all(fd, out, sizeof out, 0);
    close(fd);
    if (len < 0)
        kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    *set = *get = 0;
    for (char *line = out; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, "\"SET\",\"", 7) == 0)
            *set = atof(line + 7) / 1e3;
        else if (strncmp(line, "\"GET\",\"", 7) == 0)
            *get = atof(line + 7) / 1e3;
    }
    if (len < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || *set <= 0 || *get <= 0) {
        fail("kv: redis-benchmark against port %d (-P %d) %s; it printed: %.200s", port, pipeline,
             len < 0 ? "did not finish in time" : "failed or did not report SET and GET", out);
        return -1;
    }
    return 0;
}

void bench_kv(void)
{
    char kv[PATH_MAX], redis[PATH_MAX], bench[PATH_MAX];
#ifdef WEFT_KV_SERVER
    snprintf(kv, sizeof kv, "%s", WEFT_KV_SERVER);
#else
    kv[0] = '\0';
#endif
    if (!kv[0] || access(kv, X_OK) != 0) {
        add_note("kv: skipped: the kv_server example was not built (WEFT_BUILD_EXAMPLES=ON builds it)");
        return;
    }
    if (!find_program("redis-server", redis, sizeof redis) ||
        !find_program("redis-benchmark", bench, sizeof bench)) {
        add_note("kv: skipped: redis-server or redis-benchmark is not installed "
                 "(Debian: apt-get install redis-server redis-tools)");
        return;
    }
    signal(SIGPIPE, SIG_IGN);
    struct server srv[SERVERS] = { { -1, 0, -1 }, { -1, 0, -1 }, { -1, 0, -1 } };
    int one = workers() > 1;   /* the one-worker kv_server differs from the default */
    int order[SERVERS], n = 0;
    for (int s = 0; s < SERVERS; s++)
        if (s != KV1 || one)
            order[n++] = s;
    if (start_kv(kv, workers(), &srv[KV]) != 0 || (one && start_kv(kv, 1, &srv[KV1]) != 0) ||
        start_redis(redis, &srv[REDIS]) != 0) {
        for (int s = 0; s < SERVERS; s++)
            stop(&srv[s]);
        return;
    }
    int ok = 1;
    for (int r = 0; r < opt.runs && ok; r++) {
        progress_run(r + 1, opt.runs);
        for (int k = 0; k < n && ok; k++) {
            int s = order[(r + k) % n];   /* who goes first rotates */
            for (int m = 0; m < MODES && ok; m++) {
                int pipeline = m == PIPELINED ? PIPELINE : 1;
                progress_note("%s, GET and SET, %d connections, -P %d", server_name[s], BENCH_CONNS, pipeline);
                ok = run_benchmark(bench, srv[s].port, pipeline, &rps[s][m][SET][r],
                                   &rps[s][m][GET][r]) == 0;
            }
        }
    }
    /* redis-benchmark's SETs stored a value of 3 bytes (its -d) under
     * key:__rand_int__. */
    char answer[64];
    for (int k = 0; k < n && ok; k++) {
        int s = order[k];
        if (ask(srv[s].port, "GET key:__rand_int__\r\n", answer, sizeof answer) != 0 ||
            strlen(answer) != 9 || strncmp(answer, "$3\r\n", 4) != 0 || strcmp(answer + 7, "\r\n") != 0) {
            fail("kv: %s holds '%s' under the benchmark's key, not 3 bytes", server_name[s], answer);
            ok = 0;
        }
    }
    for (int s = KV; s <= KV1; s++) {
        int status = stop(&srv[s]);
        if (status != 0)
            fail("kv: %s exited %d on SIGTERM", server_name[s], status);
    }
    stop(&srv[REDIS]);
    if (!ok)
        return;

    static const char *const ids[2][MODES][TESTS] = {
        { { "kv_set_rps", "kv_get_rps" }, { "kv_set_rps_p16", "kv_get_rps_p16" } },
        { { "kv1_set_rps", "kv1_get_rps" }, { "kv1_set_rps_p16", "kv1_get_rps_p16" } } };
    static const char *const measures[2][MODES][TESTS] = {
        { { "SET, 50 conns", "GET, 50 conns" }, { "SET, 50 conns, -P 16", "GET, 50 conns, -P 16" } },
        { { "SET, 50 conns, 1 worker", "GET, 50 conns, 1 worker" },
          { "SET, 50 conns, -P 16, 1 worker", "GET, 50 conns, -P 16, 1 worker" } } };
    static char detail[2][400];
    for (int k = 0; k <= (one ? 1 : 0); k++) {
        snprintf(detail[k], sizeof detail[k],
                 "thousand requests per second that redis-benchmark reports, %d connections, %ld "
                 "requests per test, without pipelining and with -P %d; kv_server: the example, a "
                 "coroutine per connection on %u weft worker%s and a sharded map%s; redis-server: "
                 "its one event loop, no persistence; the servers take turns within each run",
                 BENCH_CONNS, opt.kv_requests, PIPELINE, k ? 1 : workers(), k || workers() == 1 ? "" : "s",
                 k ? ", as many cores as redis-server uses" : "");
        for (int m = 0; m < MODES; m++)
            for (int t = 0; t < TESTS; t++) {
                row *rw = add_row("kv", ids[k][m][t], measures[k][m][t], "k req/s", MORE,
                                  rps[k ? KV1 : KV][m][t], rps[REDIS][m][t], opt.runs);
                rw->label = "kv_server";
                rw->other = "redis-server";
                rw->detail = detail[k];
            }
    }
    chart_group("kv.svg", "Key-value server under redis-benchmark: kv_server (weft) and redis-server", "kv");
}
