/* SPDX-License-Identifier: MIT */
/*
 * libweft-hook with real, unmodified libraries: the blocking hiredis client
 * against a redis-server, and libcurl's easy API against an HTTP server,
 * each started by the test on loopback and stopped at its end. The
 * libraries are Debian's builds, which know nothing of weft: every
 * connect, poll, read and write they make goes through the hook.
 *
 * A test whose server program is missing is skipped, with its name.
 */
#include "../../tests/common.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#define NS 1000000000ull

/* A free TCP port on loopback, as the kernel picks one. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
              getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static bool have_program(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

/* Waits until something accepts on the port, at most 20 s. */
static bool wait_listening(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    for (int i = 0; i < 2000; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
        close(fd);
        if (r == 0)
            return true;
        usleep(10000);
    }
    return false;
}

/* ---- hiredis against redis-server --------------------------------------------- */

static int redis_port;
enum { CLIENTS = 200, PAIRS = 10 };
static atomic_int replies_right;

static void *redis_client(void *arg)
{
    int id = (int)(intptr_t)arg;
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    cr_assert(c && !c->err, "redisConnect: %s", c ? c->errstr : "no memory");
    /* A server-side wait: nothing is ever pushed to this list. */
    redisReply *r = redisCommand(c, "BLPOP weft:empty:%d 1", id);
    cr_assert(r, "BLPOP: %s", c->errstr);
    cr_assert(r->type == REDIS_REPLY_NIL || (r->type == REDIS_REPLY_ARRAY && r->elements == 0),
              "BLPOP gave reply type %d", r->type);
    freeReplyObject(r);
    for (int i = 0; i < PAIRS; i++) {
        char val[64];
        snprintf(val, sizeof val, "value-%d-%d", id, i);
        r = redisCommand(c, "SET weft:key:%d:%d %s", id, i, val);
        cr_assert(r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0, "SET failed");
        freeReplyObject(r);
        r = redisCommand(c, "GET weft:key:%d:%d", id, i);
        cr_assert(r && r->type == REDIS_REPLY_STRING, "GET failed");
        cr_assert_eq(strcmp(r->str, val), 0, "GET gave %s, not %s", r->str, val);
        freeReplyObject(r);
        atomic_fetch_add(&replies_right, 1);
    }
    redisFree(c);
    return NULL;
}

static void *redis_clients(void *arg)
{
    int n = *(int *)arg;
    weft_task **t = calloc((size_t)n, sizeof *t);
    cr_assert(t);
    for (int i = 0; i < n; i++)
        cr_assert_eq(weft_spawn(&t[i], redis_client, (void *)(intptr_t)i), 0);
    for (int i = 0; i < n; i++)
        cr_assert_eq(weft_join(t[i], NULL), 0);
    free(t);
    return NULL;
}

Test(hook_libs, hiredis_clients_wait_in_blpop_together_and_every_reply_is_right)
{
    if (!have_program("redis-server"))
        cr_skip("redis-server is not installed");
    redis_port = free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", redis_port);
    pid_t test = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* The server goes with the test, even one killed at its timeout. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != test)
            _exit(127);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDOUT_FILENO);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
               "--maxclients", "1000", (char *)NULL);
        _exit(127);
    }
    cr_assert(wait_listening(redis_port), "redis-server did not start on port %d", redis_port);
    int n = (int)scaled(CLIENTS);
    atomic_store(&replies_right, 0);
    uint64_t t0 = weft_now();
    weft_config cfg = { .workers = 2 };
    int err = weft_main(&cfg, redis_clients, &n, NULL);
    uint64_t took = weft_now() - t0;
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    cr_assert_eq(err, 0);
    cr_assert_eq(atomic_load(&replies_right), n * PAIRS);
    /* Every client waited 1 s in BLPOP; waited one after another that
     * would be n seconds. Together they take about one, however slow the
     * machine: the bound is a tenth of the sum. */
    cr_assert_lt(took, (uint64_t)n * NS / 10 + 2 * NS, "the waits took %.1f s for %d clients",
                 (double)took / 1e9, n);
}

/* ---- libcurl against a small HTTP server -------------------------------------- */

/* A server of plain threads (outside any coroutine, so the hook is libc for
 * it) answering each GET, after a pause, with a body that names the path. */
#define HTTP_PAUSE_US 200000u
static int http_listener;
static atomic_bool http_stop;

static void *http_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char req[2048];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, req + got, sizeof req - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        req[got] = 0;
        char *end = strstr(req, "\r\n\r\n");
        if (!end)
            continue;
        usleep(HTTP_PAUSE_US);   /* a slow backend: clients wait together or in turn */
        char path[256] = "";
        sscanf(req, "GET %255s", path);
        char body[512], head[256];
        int blen = snprintf(body, sizeof body, "weft body for %s\n", path);
        int hlen = snprintf(head, sizeof head,
                            "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n", blen);
        if (write(fd, head, (size_t)hlen) != hlen || write(fd, body, (size_t)blen) != blen)
            break;
        size_t used = (size_t)(end + 4 - req);
        memmove(req, req + used, got - used);
        got -= used;
    }
    close(fd);
    return NULL;
}

static void *http_server(void *arg)
{
    (void)arg;
    while (!atomic_load(&http_stop)) {
        int fd = accept4(http_listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &a, http_conn, (void *)(intptr_t)fd) != 0)
            close(fd);
        pthread_attr_destroy(&a);
    }
    return NULL;
}

struct body { char buf[512]; size_t len; };

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    size_t len = size * n;
    if (b->len + len >= sizeof b->buf)
        return 0;
    memcpy(b->buf + b->len, p, len);
    b->len += len;
    b->buf[b->len] = 0;
    return len;
}

static int http_port;
static atomic_int bodies_right;

static void *curl_client(void *arg)
{
    int id = (int)(intptr_t)arg;
    CURL *c = curl_easy_init();
    cr_assert(c);
    for (int i = 0; i < 5; i++) {
        char url[128], want[128];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/c%d/r%d", http_port, id, i);
        snprintf(want, sizeof want, "weft body for /c%d/r%d\n", id, i);
        struct body b = { .len = 0 };
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
        CURLcode rc = curl_easy_perform(c);
        cr_assert_eq(rc, CURLE_OK, "curl: %s", curl_easy_strerror(rc));
        cr_assert_eq(strcmp(b.buf, want), 0, "got %s", b.buf);
        atomic_fetch_add(&bodies_right, 1);
    }
    curl_easy_cleanup(c);
    return NULL;
}

static void *curl_clients(void *arg)
{
    int n = *(int *)arg;
    weft_task **t = calloc((size_t)n, sizeof *t);
    cr_assert(t);
    for (int i = 0; i < n; i++)
        cr_assert_eq(weft_spawn(&t[i], curl_client, (void *)(intptr_t)i), 0);
    for (int i = 0; i < n; i++)
        cr_assert_eq(weft_join(t[i], NULL), 0);
    free(t);
    return NULL;
}

Test(hook_libs, libcurl_easy_fetches_from_many_coroutines_at_once)
{
    cr_assert_eq(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    http_listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    cr_assert_eq(bind(http_listener, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(http_listener, 256), 0);
    cr_assert_eq(getsockname(http_listener, (struct sockaddr *)&sa, &len), 0);
    http_port = ntohs(sa.sin_port);
    atomic_store(&http_stop, false);
    pthread_t srv;
    cr_assert_eq(pthread_create(&srv, NULL, http_server, NULL), 0);
    int n = (int)scaled(100);
    if (n < 4)
        n = 4;
    atomic_store(&bodies_right, 0);
    weft_config cfg = { .workers = 2 };
    uint64_t t0 = weft_now();
    int err = weft_main(&cfg, curl_clients, &n, NULL);
    uint64_t took = weft_now() - t0;
    atomic_store(&http_stop, true);
    int wake = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    connect(wake, (struct sockaddr *)&sa, sizeof sa);   /* the server's accept returns */
    pthread_join(srv, NULL);
    close(wake);
    close(http_listener);
    curl_global_cleanup();
    cr_assert_eq(err, 0);
    cr_assert_eq(atomic_load(&bodies_right), n * 5);
    /* Each client waits 5 pauses; in turn, two at a time, that would be
     * n * 5 / 2 pauses. */
    uint64_t in_turn = (uint64_t)n * 5 / 2 * HTTP_PAUSE_US * 1000u;
    cr_assert_lt(took, in_turn / 4 + 5 * NS, "%d clients took %.1f s", n, (double)took / 1e9);
}
