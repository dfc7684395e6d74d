/* SPDX-License-Identifier: MIT */
/*
 * libweft-hook: the C library's blocking calls, made from coroutines, suspend
 * only the coroutine, and keep every POSIX corner of the call.
 *
 * This file calls nothing of the hook: it calls read, poll, sleep and the rest
 * by their libc names. It is built three times (hook/tests/CMakeLists.txt):
 * linked with libweft-hook.so, linked with libweft-hook.a, and linked with
 * neither and run with LD_PRELOAD=libweft-hook.so. Most tests run on one
 * worker: a call that blocked its thread would then stop every other
 * coroutine, and the test, which needs another coroutine to make progress,
 * would never end (ctest's TIMEOUT fails it: hook/tests/CMakeLists.txt; not
 * Criterion's, whose runner leaks under ASan when timed tests run side by
 * side).
 */
#include "../../tests/common.h"
#include "../../tests/dump_text.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>

#define MS 1000000ull

static pid_t tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* A writer coroutine: sleeps `delay_ms` (plain usleep: hooked), then writes
 * `msg` to fd. */
struct late {
    int         fd;
    const char *msg;
    unsigned    delay_ms;
};

static void *write_late(void *arg)
{
    struct late *l = arg;
    usleep(l->delay_ms * 1000u);
    ssize_t n = write(l->fd, l->msg, strlen(l->msg));
    return (void *)(intptr_t)n;
}

static void spawn_late(weft_task **t, struct late *l)
{
    cr_assert_eq(weft_spawn(t, write_late, l), 0);
}

static void join_ok(weft_task *t)
{
    void *r;
    cr_assert_eq(weft_join(t, &r), 0);
}

/* ---- blocking reads and writes suspend only the coroutine ---------------------- */

struct fds { int a, b; };

static void *read_pipe_waits(void *arg)
{
    struct fds *p = arg;
    weft_task *t;
    struct late l = { p->b, "hello", 20 };
    spawn_late(&t, &l);
    char buf[16] = { 0 };
    ssize_t n = read(p->a, buf, sizeof buf);   /* the writer runs on this same worker */
    cr_assert_eq(n, 5, "read returned %zd (errno %d)", n, errno);
    cr_assert_eq(strcmp(buf, "hello"), 0, "got \"%s\"", buf);
    join_ok(t);
    return NULL;
}

Test(hook, a_read_on_an_empty_pipe_suspends_only_its_coroutine)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, read_pipe_waits, &f);
        close(p[0]);
        close(p[1]);
    }
}

/* Made in main, before any runtime: the hook knows nothing of it beforehand. */
static int early_pipe[2] = { -1, -1 };

Test(hook, a_descriptor_made_before_the_runtime_is_covered)
{
    cr_assert_eq(pipe(early_pipe), 0);
    FOR_EACH_BACKEND(b) {
        struct fds f = { early_pipe[0], early_pipe[1] };
        run_with_io(1, b, read_pipe_waits, &f);
    }
    close(early_pipe[0]);
    close(early_pipe[1]);
}

static void *socket_pair_rw(void *arg)
{
    struct fds *s = arg;
    weft_task *t;
    struct late l = { s->b, "ping", 20 };
    spawn_late(&t, &l);
    char buf[8] = { 0 };
    cr_assert_eq(recv(s->a, buf, sizeof buf, 0), 4);
    cr_assert_eq(strcmp(buf, "ping"), 0, "got \"%s\"", buf);
    join_ok(t);
    /* readv, writev, recvmsg, sendmsg, recvfrom, sendto on the same pair. */
    l.msg = "vectors";
    spawn_late(&t, &l);
    char x[3], y[8] = { 0 };
    struct iovec iov[2] = { { x, sizeof x }, { y, sizeof y } };
    cr_assert_eq(readv(s->a, iov, 2), 7);
    cr_assert_eq(memcmp(x, "vec", 3), 0);
    cr_assert_eq(strcmp(y, "tors"), 0, "got \"%s\"", y);
    join_ok(t);
    struct iovec out[2] = { { "ab", 2 }, { "cd", 2 } };
    cr_assert_eq(writev(s->b, out, 2), 4);
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
    memset(y, 0, sizeof y);
    cr_assert_eq(recvmsg(s->a, &m, 0), 4);
    cr_assert_eq(memcmp(x, "abc", 3), 0);
    cr_assert_eq(strcmp(y, "d"), 0, "got \"%s\"", y);
    struct msghdr mo = { .msg_iov = out, .msg_iovlen = 2 };
    cr_assert_eq(sendmsg(s->b, &mo, 0), 4);
    char z[4];
    cr_assert_eq(recvfrom(s->a, z, sizeof z, MSG_WAITALL, NULL, NULL), 4);
    cr_assert_eq(sendto(s->b, "e", 1, 0, NULL, 0), 1);
    cr_assert_eq(read(s->a, z, 1), 1);
    cr_assert_eq(z[0], 'e');
    return NULL;
}

Test(hook, socket_calls_wait_in_their_coroutine_and_transfer_what_libc_would)
{
    FOR_EACH_BACKEND(b) {
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        struct fds f = { sv[0], sv[1] };
        run_with_io(1, b, socket_pair_rw, &f);
        close(sv[0]);
        close(sv[1]);
    }
}

/* A blocking write larger than the pipe writes all of it, as write(2) does,
 * while a reader coroutine on the same worker drains it. */
enum { BIG = 1 << 20 };

static void *drain(void *arg)
{
    struct fds *p = arg;
    size_t got = 0;
    char buf[4096];
    ssize_t n;
    while ((n = read(p->a, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            cr_assert_eq((unsigned char)buf[i], (unsigned char)((got + (size_t)i) * 7));
        got += (size_t)n;
    }
    return (void *)got;
}

static void *big_write(void *arg)
{
    struct fds *p = arg;
    unsigned char *buf = malloc(BIG);
    cr_assert(buf);
    for (size_t i = 0; i < BIG; i++)
        buf[i] = (unsigned char)(i * 7);
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, drain, p), 0);
    cr_assert_eq(write(p->b, buf, BIG), (ssize_t)BIG);
    close(p->b);
    void *got;
    cr_assert_eq(weft_join(t, &got), 0);
    cr_assert_eq((size_t)got, (size_t)BIG);
    free(buf);
    return NULL;
}

Test(hook, a_blocking_write_writes_everything)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, big_write, &f);
        close(p[0]);
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        f = (struct fds){ sv[0], sv[1] };
        run_with_io(1, b, big_write, &f);
        close(sv[0]);
    }
}

/* ---- what the kernel would give: MSG_WAITALL, MSG_PEEK, zero lengths ----------- */

/* The same calls made on a plain thread (the C library's) and in a
 * coroutine (the hook's) must give the same results: each scenario writes
 * what it got to `out`. */
typedef void scenario(char *out, size_t len);

static void *send_def_later(void *arg)
{
    usleep(50000);   /* a plain thread: the C library's sleep */
    cr_assert_eq(send((int)(intptr_t)arg, "def", 3, 0), 3);
    return NULL;
}

static void set_rcvtimeo(int fd)
{
    struct timeval tv = { 0, 200000 };   /* ends a wait the kernel would not make */
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
}

static void two_messages_waitall(int type, char *out, size_t len)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, type, 0, sv), 0);
    cr_assert_eq(send(sv[1], "ab", 2, 0), 2);
    cr_assert_eq(send(sv[1], "cd", 2, 0), 2);
    set_rcvtimeo(sv[0]);
    char b[16] = { 0 };
    ssize_t n = recv(sv[0], b, 10, MSG_WAITALL);
    snprintf(out, len, "n=%zd buf=%s", n, b);
    close(sv[0]);
    close(sv[1]);
}

static void dgram_waitall(char *out, size_t len)
{
    two_messages_waitall(SOCK_DGRAM, out, len);
}

static void seqpacket_waitall(char *out, size_t len)
{
    two_messages_waitall(SOCK_SEQPACKET, out, len);
}

static void udp_waitall(char *out, size_t len)
{
    int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;
    cr_assert_eq(bind(a, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(getsockname(a, (struct sockaddr *)&sa, &sl), 0);
    cr_assert_eq(sendto(b, "ab", 2, 0, (struct sockaddr *)&sa, sizeof sa), 2);
    cr_assert_eq(sendto(b, "cd", 2, 0, (struct sockaddr *)&sa, sizeof sa), 2);
    set_rcvtimeo(a);
    char buf[16] = { 0 };
    ssize_t n = recvfrom(a, buf, 10, MSG_WAITALL, NULL, NULL);
    snprintf(out, len, "n=%zd buf=%s", n, buf);
    close(a);
    close(b);
}

static void stream_peek_waitall(char *out, size_t len)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(send(sv[1], "abc", 3, 0), 3);
    set_rcvtimeo(sv[0]);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, send_def_later, (void *)(intptr_t)sv[1]), 0);
    char b[16] = { 0 }, c[16] = { 0 };
    ssize_t n = recv(sv[0], b, 6, MSG_PEEK | MSG_WAITALL);
    cr_assert_eq(pthread_join(th, NULL), 0);
    ssize_t m = recv(sv[0], c, sizeof c - 1, MSG_DONTWAIT);
    snprintf(out, len, "n=%zd buf=%s, then %zd=%s", n, b, m, c);
    close(sv[0]);
    close(sv[1]);
}

/* Sends `data` on fd with a duplicate of stdin attached. */
static void send_with_fd(int fd, const char *data)
{
    int pass = dup(0);
    char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
    struct iovec iov = { (void *)data, strlen(data) };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &pass, sizeof pass);
    cr_assert_eq(sendmsg(fd, &m, 0), (ssize_t)strlen(data));
    close(pass);
}

static void *send_def_with_fd_later(void *arg)
{
    usleep(50000);
    send_with_fd((int)(intptr_t)arg, "def");
    return NULL;
}

/* recvmsg(MSG_WAITALL) of 6 bytes sent as "abc" then "def", the descriptor
 * with the first part or the second: what comes, and whether the
 * descriptor comes with it (closed at once). */
static void waitall_with_fd(bool first, char *out, size_t len)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    if (first)
        send_with_fd(sv[1], "abc");
    else
        cr_assert_eq(send(sv[1], "abc", 3, 0), 3);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, first ? send_def_later : send_def_with_fd_later,
                                (void *)(intptr_t)sv[1]), 0);
    char b[16] = { 0 }, rc[64] = { 0 };
    struct iovec riov = { b, 6 };
    struct msghdr r = { .msg_iov = &riov, .msg_iovlen = 1, .msg_control = rc, .msg_controllen = sizeof rc };
    ssize_t n = recvmsg(sv[0], &r, MSG_WAITALL);
    cr_assert_eq(pthread_join(th, NULL), 0);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&r);
    bool rights = cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS;
    if (rights) {
        int got;
        memcpy(&got, CMSG_DATA(cm), sizeof got);
        close(got);
    }
    snprintf(out, len, "n=%zd buf=%s controllen=%zu rights=%d flags=%#x", n, b, (size_t)r.msg_controllen, rights,
             (unsigned)r.msg_flags);
    close(sv[0]);
    close(sv[1]);
}

static void waitall_fd_on_first_part(char *out, size_t len)
{
    waitall_with_fd(true, out, len);
}

static void waitall_fd_on_second_part(char *out, size_t len)
{
    waitall_with_fd(false, out, len);
}

static void zero_length_reads(char *out, size_t len)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    set_rcvtimeo(sv[0]);
    char b[1];
    errno = 0;
    ssize_t n = read(sv[0], b, 0);
    int e = errno;
    struct iovec none = { b, 0 };
    errno = 0;
    ssize_t v = readv(sv[0], &none, 1);
    snprintf(out, len, "read=%zd errno=%d readv=%zd errno=%d", n, e, v, errno);
    close(sv[0]);
    close(sv[1]);
}

struct scenarios {
    scenario   *const *fns;
    const char *const *names;
    size_t      n;
    char        (*out)[160];
};

static void *run_scenarios(void *arg)
{
    struct scenarios *sc = arg;
    for (size_t i = 0; i < sc->n; i++)
        sc->fns[i](sc->out[i], sizeof sc->out[i]);
    return NULL;
}

/* Runs each scenario on a plain thread, then in a coroutine on each
 * backend, and compares. */
static void same_as_a_plain_thread(scenario *const *fns, const char *const *names, size_t n)
{
    char libc[8][160], hooked[8][160];
    cr_assert_leq(n, 8u);
    struct scenarios plain = { fns, names, n, libc }, co = { fns, names, n, hooked };
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, run_scenarios, &plain), 0);
    cr_assert_eq(pthread_join(th, NULL), 0);
    FOR_EACH_BACKEND(b) {
        run_with_io(1, b, run_scenarios, &co);
        for (size_t i = 0; i < n; i++)
            cr_assert(strcmp(hooked[i], libc[i]) == 0, "%s on %s: the hook gave [%s], libc [%s]", names[i],
                      backend_name[b], hooked[i], libc[i]);
    }
}

Test(hook, msg_waitall_and_msg_peek_end_a_read_where_the_kernel_does)
{
    static scenario *const fns[] = { dgram_waitall, seqpacket_waitall, udp_waitall, stream_peek_waitall,
                                     waitall_fd_on_first_part, waitall_fd_on_second_part };
    static const char *const names[] = { "AF_UNIX datagram", "AF_UNIX seqpacket", "UDP",
                                         "AF_UNIX stream, MSG_PEEK", "SCM_RIGHTS on the first part",
                                         "SCM_RIGHTS on the second part" };
    same_as_a_plain_thread(fns, names, sizeof fns / sizeof fns[0]);
}

Test(hook, a_read_of_nothing_from_a_socket_returns_zero_at_once)
{
    static scenario *const fns[] = { zero_length_reads };
    static const char *const names[] = { "read and readv of 0 bytes from an empty socket" };
    same_as_a_plain_thread(fns, names, 1);
}

/* A plain thread that writes `len` bytes of `data` to fd unless stopped
 * within a second: a hooked call that wrongly held its worker then returns
 * the rescuer's bytes, and the test fails on them rather than hang. */
struct rescue {
    int         fd;
    const void *data;
    size_t      len;
    int         stop;   /* an eventfd */
    pthread_t   th;
};

static void *rescue_run(void *arg)
{
    struct rescue *r = arg;
    struct pollfd p = { r->stop, POLLIN, 0 };
    if (poll(&p, 1, 1000) == 0)
        cr_assert_eq(write(r->fd, r->data, r->len), (ssize_t)r->len);
    return NULL;
}

static void rescue_start(struct rescue *r, int fd, const void *data, size_t len)
{
    *r = (struct rescue){ .fd = fd, .data = data, .len = len, .stop = eventfd(0, EFD_CLOEXEC) };
    cr_assert_geq(r->stop, 0);
    cr_assert_eq(pthread_create(&r->th, NULL, rescue_run, r), 0);
}

static void rescue_end(struct rescue *r)
{
    uint64_t one = 1;
    cr_assert_eq(write(r->stop, &one, sizeof one), 8);
    cr_assert_eq(pthread_join(r->th, NULL), 0);
    close(r->stop);
}

/* glibc's fortified entries, which a program built with _FORTIFY_SOURCE
 * calls instead of read, recv, recvfrom, poll and ppoll. */
ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags, struct sockaddr *addr,
                       socklen_t *alen);
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask, size_t fdslen);

static void *fortified_calls(void *arg)
{
    static const char *const name[] = { "__read_chk", "__recv_chk", "__recvfrom_chk", "__poll_chk",
                                        "__ppoll_chk" };
    struct fds *s = arg;
    for (int call = 0; call < 5; call++) {
        weft_task *t;
        struct late l = { s->b, "c", 20 };
        spawn_late(&t, &l);
        struct rescue rs;
        rescue_start(&rs, s->b, "T", 1);
        char buf[8] = { 0 };
        struct pollfd pf = { s->a, POLLIN, 0 };
        struct timespec ts = { 5, 0 };
        ssize_t n;
        switch (call) {
        case 0:  n = __read_chk(s->a, buf, sizeof buf, sizeof buf); break;
        case 1:  n = __recv_chk(s->a, buf, sizeof buf, sizeof buf, 0); break;
        case 2:  n = __recvfrom_chk(s->a, buf, sizeof buf, sizeof buf, 0, NULL, NULL); break;
        case 3:  n = __poll_chk(&pf, 1, -1, sizeof pf); break;
        default: n = __ppoll_chk(&pf, 1, &ts, NULL, sizeof pf); break;
        }
        cr_assert_eq(n, 1, "%s returned %zd (errno %d)", name[call], n, errno);
        if (call >= 3)
            cr_assert_eq(read(s->a, buf, 1), 1);
        rescue_end(&rs);
        join_ok(t);
        cr_assert_eq(buf[0], 'c', "%s held the worker: the rescuer's byte came first", name[call]);
    }
    return NULL;
}

Test(hook, the_fortified_entries_suspend_only_their_coroutine)
{
    FOR_EACH_BACKEND(b) {
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        struct fds f = { sv[0], sv[1] };
        run_with_io(1, b, fortified_calls, &f);
        close(sv[0]);
        close(sv[1]);
    }
}

/* Two coroutines wait in read() on one blocking eventfd; each count comes
 * alone. Both are woken by the first, and the one that finds it taken must
 * wait again rather than block its worker in read(2). */
static int shared_efd;

static void *read_count(void *arg)
{
    (void)arg;
    uint64_t v = 0;
    ssize_t n = read(shared_efd, &v, sizeof v);
    return (void *)(intptr_t)(n == 8 ? (intptr_t)v : -1);
}

static void *two_readers_one_eventfd(void *arg)
{
    (void)arg;
    shared_efd = eventfd(0, EFD_CLOEXEC);
    cr_assert_geq(shared_efd, 0);
    static const uint64_t big = 1000;
    struct rescue rs;
    rescue_start(&rs, shared_efd, &big, sizeof big);
    weft_task *r[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(weft_spawn(&r[i], read_count, NULL), 0);
    usleep(20000);   /* both wait by now */
    uint64_t one = 1;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(write(shared_efd, &one, sizeof one), 8);
        usleep(20000);
    }
    void *got[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(weft_join(r[i], &got[i]), 0);
    rescue_end(&rs);
    for (int i = 0; i < 2; i++)
        cr_assert_eq((intptr_t)got[i], 1, "reader %d read %ld: a reader held the worker in read(2)", i,
                     (long)(intptr_t)got[i]);
    close(shared_efd);
    return NULL;
}

Test(hook, coroutines_sharing_a_blocking_eventfd_each_wait_for_their_count)
{
    FOR_EACH_BACKEND(b)
        run_with_io(1, b, two_readers_one_eventfd, NULL);
}

/* ---- the owner's O_NONBLOCK ---------------------------------------------------- */

static void *nonblocking_is_eagain(void *arg)
{
    struct fds *p = arg;
    char c;
    errno = 0;
    cr_assert_eq(read(p->a, &c, 1), -1);
    cr_assert_eq(errno, EAGAIN);
    errno = 0;
    cr_assert_eq(recv(p->b, &c, 1, 0), -1);
    cr_assert_eq(errno, EAGAIN);
    return NULL;
}

Test(hook, a_descriptor_its_owner_made_nonblocking_gives_eagain)
{
    FOR_EACH_BACKEND(b) {
        int p[2], sv[2];
        cr_assert_eq(pipe(p), 0);
        int fl = fcntl(p[0], F_GETFL);
        cr_assert_eq(fcntl(p[0], F_SETFL, fl | O_NONBLOCK), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        struct fds f = { p[0], sv[0] };
        run_with_io(1, b, nonblocking_is_eagain, &f);
        /* ioctl(FIONBIO) is the other way to ask for it. */
        cr_assert_eq(fcntl(p[0], F_SETFL, fl), 0);
        int on = 1;
        cr_assert_eq(ioctl(p[0], FIONBIO, &on), 0);
        run_with_io(1, b, nonblocking_is_eagain, &f);
        for (int i = 0; i < 2; i++) {
            close(p[i]);
            close(sv[i]);
        }
    }
}

/* On the epoll backend weft_read makes a pipe O_NONBLOCK: its owner never
 * sees that flag, and the hooked read still waits. */
static void *weft_flag_is_hidden(void *arg)
{
    struct fds *p = arg;
    char c;
    cr_assert_eq(weft_write(p->b, "x", 1), 1);
    cr_assert_eq(weft_read(p->a, &c, 1), 1);
    cr_assert_eq(fcntl(p->a, F_GETFL) & O_NONBLOCK, 0, "F_GETFL shows weft's O_NONBLOCK");
    weft_task *t;
    struct late l = { p->b, "y", 20 };
    spawn_late(&t, &l);
    cr_assert_eq(read(p->a, &c, 1), 1, "errno %d", errno);
    cr_assert_eq(c, 'y');
    join_ok(t);
    return NULL;
}

Test(hook, fgetfl_hides_the_nonblocking_flag_weft_set)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, weft_flag_is_hidden, &f);
        /* And a plain thread's read of it blocks, as its owner asked. */
        cr_assert_eq(fcntl(p[0], F_GETFL) & O_NONBLOCK, 0);
        cr_assert_eq(fcntl(p[1], F_GETFL) & O_NONBLOCK, 0);
        close(p[0]);
        close(p[1]);
    }
}

/* ---- SO_RCVTIMEO and SO_SNDTIMEO ------------------------------------------------ */

static void *timeouts(void *arg)
{
    struct fds *s = arg;
    struct timeval tv = { 0, 200000 };
    cr_assert_eq(setsockopt(s->a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    char c;
    uint64_t t0 = weft_now();
    errno = 0;
    cr_assert_eq(recv(s->a, &c, 1, 0), -1);
    cr_assert_eq(errno, EAGAIN);
    cr_assert_geq(weft_now() - t0, 150 * MS, "SO_RCVTIMEO ended the wait early");
    /* Fill the other way, then a blocking send meets SO_SNDTIMEO. */
    cr_assert_eq(setsockopt(s->b, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
    char buf[4096] = { 0 };
    while (send(s->b, buf, sizeof buf, MSG_DONTWAIT) > 0)
        ;
    errno = 0;
    cr_assert_eq(send(s->b, buf, sizeof buf, 0), -1);
    cr_assert_eq(errno, EAGAIN);
    return NULL;
}

Test(hook, so_rcvtimeo_and_so_sndtimeo_end_a_wait_with_eagain)
{
    FOR_EACH_BACKEND(b) {
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        struct fds f = { sv[0], sv[1] };
        run_with_io(1, b, timeouts, &f);
        close(sv[0]);
        close(sv[1]);
    }
}

/* ---- end of file, reset, closed descriptors ------------------------------------- */

static void *eof_and_badf(void *arg)
{
    struct fds *p = arg;
    char c;
    close(p->b);
    cr_assert_eq(read(p->a, &c, 1), 0);
    close(p->a);
    errno = 0;
    cr_assert_eq(read(p->a, &c, 1), -1);
    cr_assert_eq(errno, EBADF);
    return NULL;
}

Test(hook, end_of_file_reads_zero_and_a_closed_descriptor_is_ebadf)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, eof_and_badf, &f);
    }
}

static void *read_expect(void *arg)
{
    int *fd = arg;
    char c;
    errno = 0;
    ssize_t n = read(*fd, &c, 1);
    return (void *)(intptr_t)(n < 0 ? -errno : n);
}

static void *close_while_waiting(void *arg)
{
    struct fds *p = arg;
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, read_expect, &p->a), 0);
    usleep(50000);   /* the reader waits by now */
    cr_assert_eq(close(p->a), 0);
    void *r;
    cr_assert_eq(weft_join(t, &r), 0);
    cr_assert_eq((intptr_t)r, -EBADF);
    return NULL;
}

Test(hook, close_fails_the_coroutines_waiting_on_the_descriptor)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, close_while_waiting, &f);
        close(p[1]);
    }
}

/* A TCP peer that closes with SO_LINGER 0 resets the connection. */
static void *reset_by_peer(void *arg)
{
    (void)arg;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    cr_assert_eq(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(l, 4), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(c, (struct sockaddr *)&sa, sizeof sa), 0);
    int s = accept(l, NULL, NULL);
    cr_assert_geq(s, 0);
    struct linger lg = { 1, 0 };
    cr_assert_eq(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(s);
    char buf[4];
    errno = 0;
    cr_assert_eq(recv(c, buf, sizeof buf, 0), -1);
    cr_assert_eq(errno, ECONNRESET);
    close(c);
    close(l);
    return NULL;
}

Test(hook, a_reset_by_the_peer_is_econnreset)
{
    FOR_EACH_BACKEND(b)
        run_with_io(1, b, reset_by_peer, NULL);
}

/* ---- signals, deadlines, cancellation ------------------------------------------ */

static void on_usr1(int sig)
{
    (void)sig;
}

static void *signal_during_read(void *arg)
{
    struct fds *p = arg;
    weft_task *t;
    struct late l = { p->b, "s", 100 };
    spawn_late(&t, &l);
    kill(getpid(), SIGUSR1);   /* lands on some thread while the read waits */
    char c;
    cr_assert_eq(read(p->a, &c, 1), 1, "errno %d", errno);
    cr_assert_eq(c, 's');
    join_ok(t);
    return NULL;
}

Test(hook, a_signal_does_not_fail_a_waiting_call)
{
    struct sigaction sa = { .sa_handler = on_usr1 };   /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, NULL);
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, signal_during_read, &f);
        close(p[0]);
        close(p[1]);
    }
}

static void *deadline_applies(void *arg)
{
    struct fds *p = arg;
    char c;
    weft_deadline(weft_now() + 50 * MS);
    errno = 0;
    cr_assert_eq(read(p->a, &c, 1), -1);
    cr_assert_eq(errno, ETIMEDOUT);
    struct pollfd pf = { .fd = p->a, .events = POLLIN };
    errno = 0;
    cr_assert_eq(poll(&pf, 1, -1), -1);
    cr_assert_eq(errno, ETIMEDOUT);
    weft_deadline(0);
    return NULL;
}

Test(hook, the_coroutine_deadline_ends_a_hooked_wait)
{
    FOR_EACH_BACKEND(b) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        struct fds f = { p[0], p[1] };
        run_with_io(1, b, deadline_applies, &f);
        close(p[0]);
        close(p[1]);
    }
}

/* A plain thread's read of a pipe where weft set O_NONBLOCK (the epoll
 * backend's weft_read does) waits as a blocking read(2) does: a signal whose
 * handler has SA_RESTART does not end it, one whose handler has not fails
 * it with EINTR. */
static int restart_pipe[2];

static void *weft_reads_the_pipe(void *arg)
{
    (void)arg;
    char c;
    cr_assert_eq(weft_write(restart_pipe[1], "w", 1), 1);
    cr_assert_eq(weft_read(restart_pipe[0], &c, 1), 1);
    return NULL;
}

static void *plain_read(void *arg)
{
    (void)arg;
    char c;
    errno = 0;
    ssize_t n = read(restart_pipe[0], &c, 1);
    return (void *)(intptr_t)(n < 0 ? -errno : n);
}

Test(hook, a_plain_threads_read_is_restarted_after_an_sa_restart_handler)
{
    FOR_EACH_BACKEND(b) {
        cr_assert_eq(pipe(restart_pipe), 0);
        weft_config cfg = { .workers = 1, .io_backend = b };
        weft_rt *rt;
        cr_assert_eq(weft_rt_create(&rt, &cfg), 0);   /* alive beside the plain thread */
        weft_task *t;
        cr_assert_eq(weft_spawn_on(rt, &t, weft_reads_the_pipe, NULL), 0);
        cr_assert_eq(weft_join(t, NULL), 0);
        /* Valgrind shows a handler of its own without SA_RESTART (for
         * SIGRTMAX), so there any signal ends the wait: the first case is
         * left to the other builds. */
        for (int restart = RUNNING_ON_VALGRIND ? 0 : 1; restart >= 0; restart--) {
            struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = restart ? SA_RESTART : 0 };
            cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
            pthread_t th;
            cr_assert_eq(pthread_create(&th, NULL, plain_read, NULL), 0);
            usleep(50000);   /* the reader waits by now */
            cr_assert_eq(pthread_kill(th, SIGUSR1), 0);
            usleep(50000);
            if (restart)
                cr_assert_eq(write(restart_pipe[1], "r", 1), 1);
            void *r;
            cr_assert_eq(pthread_join(th, &r), 0);
            cr_assert_eq((intptr_t)r, restart ? 1 : -EINTR, "on %s, with%s SA_RESTART the read gave %ld",
                         backend_name[b], restart ? "" : "out", (long)(intptr_t)r);
        }
        cr_assert_eq(weft_rt_destroy(rt), 0);
        close(restart_pipe[0]);
        close(restart_pipe[1]);
    }
}

/* ---- sleeping and yielding -------------------------------------------------------- */

static atomic_int ticks;

static void *ticker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        atomic_fetch_add(&ticks, 1);
        sched_yield();
    }
    return NULL;
}

static void *sleeps_share_the_worker(void *arg)
{
    (void)arg;
    atomic_store(&ticks, 0);
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, ticker, NULL), 0);
    cr_assert_eq(usleep(30000), 0);
    cr_assert_eq(atomic_load(&ticks), 5, "the ticker did not run while we slept");
    join_ok(t);
    struct timespec ts = { 0, 20 * MS };
    cr_assert_eq(nanosleep(&ts, NULL), 0);
    cr_assert_eq(clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL), 0);
    cr_assert_eq(sleep(0), 0u);
    /* A deadline cuts a sleep short: EINTR and the time left. */
    weft_deadline(weft_now() + 20 * MS);
    struct timespec longer = { 5, 0 }, rem = { 0, 0 };
    errno = 0;
    cr_assert_eq(nanosleep(&longer, &rem), -1);
    cr_assert_eq(errno, EINTR);
    cr_assert(rem.tv_sec >= 4, "rem %ld s", (long)rem.tv_sec);
    weft_deadline(0);
    return NULL;
}

Test(hook, sleeps_and_sched_yield_let_other_coroutines_run)
{
    FOR_EACH_BACKEND(b)
        run_with_io(1, b, sleeps_share_the_worker, NULL);
}

/* ---- poll, select, epoll_wait ------------------------------------------------------ */

static void *polls(void *arg)
{
    (void)arg;
    int p1[2], p2[2];
    cr_assert_eq(pipe(p1), 0);
    cr_assert_eq(pipe(p2), 0);
    struct pollfd pf[3] = { { p1[0], POLLIN, 0 }, { -1, POLLIN, 0 }, { p2[0], POLLIN, 0 } };
    cr_assert_eq(poll(pf, 3, 30), 0, "nothing is ready");
    weft_task *t;
    struct late l = { p2[1], "z", 20 };
    spawn_late(&t, &l);
    cr_assert_eq(poll(pf, 3, -1), 1);
    cr_assert_eq(pf[0].revents, 0);
    cr_assert_eq(pf[2].revents, POLLIN);
    join_ok(t);
    char c;
    cr_assert_eq(read(p2[0], &c, 1), 1);

    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(p1[0], &rd);
    FD_SET(p2[0], &rd);
    l.fd = p1[1];
    spawn_late(&t, &l);
    int maxfd = p1[0] > p2[0] ? p1[0] : p2[0];
    cr_assert_eq(select(maxfd + 1, &rd, NULL, NULL, NULL), 1);
    cr_assert(FD_ISSET(p1[0], &rd));
    cr_assert(!FD_ISSET(p2[0], &rd));
    join_ok(t);
    cr_assert_eq(read(p1[0], &c, 1), 1);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = p2[0] };
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, p2[0], &ev), 0);
    struct epoll_event got[4];
    cr_assert_eq(epoll_wait(ep, got, 4, 30), 0);
    l.fd = p2[1];
    spawn_late(&t, &l);
    cr_assert_eq(epoll_wait(ep, got, 4, -1), 1);
    cr_assert_eq(got[0].data.fd, p2[0]);
    join_ok(t);
    close(ep);
    for (int i = 0; i < 2; i++) {
        close(p1[i]);
        close(p2[i]);
    }
    return NULL;
}

Test(hook, poll_select_and_epoll_wait_wait_in_their_coroutine)
{
    FOR_EACH_BACKEND(b)
        run_with_io(1, b, polls, NULL);
}

/* A socket whose connection was refused: poll gives it POLLERR and POLLHUP
 * for good, and select counts neither in exceptfds, so a select on it there
 * waits on, as the C library's does, for the pipe read beside it. */
static int refused_socket(void)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    cr_assert_eq(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    close(l);   /* nobody listens there */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    cr_assert_geq(s, 0);
    cr_assert_eq(connect(s, (struct sockaddr *)&sa, sizeof sa), -1);
    struct pollfd p = { s, POLLOUT, 0 };
    cr_assert_eq(poll(&p, 1, -1), 1);
    cr_assert(p.revents & (POLLERR | POLLHUP), "revents %#x", (unsigned)p.revents);
    return s;
}

static void *select_past_a_hang_up(void *arg)
{
    (void)arg;
    int s = refused_socket(), p[2];
    cr_assert_eq(pipe(p), 0);
    int maxfd = s > p[0] ? s : p[0];
    for (int timed = 0; timed < 2; timed++) {
        weft_task *t;
        struct late l = { p[1], "x", 20 };
        spawn_late(&t, &l);
        fd_set rd, ex;
        FD_ZERO(&rd);
        FD_ZERO(&ex);
        FD_SET(p[0], &rd);
        FD_SET(s, &ex);
        struct timeval tv = { 5, 0 };
        int r = select(maxfd + 1, &rd, NULL, &ex, timed ? &tv : NULL);
        cr_assert_eq(r, 1, "select with %s returned %d (errno %d)", timed ? "a timeout" : "no timeout", r, errno);
        cr_assert(FD_ISSET(p[0], &rd));
        cr_assert(!FD_ISSET(s, &ex));
        join_ok(t);
        char c;
        cr_assert_eq(read(p[0], &c, 1), 1);
    }
    close(s);
    close(p[0]);
    close(p[1]);
    return NULL;
}

Test(hook, select_waits_on_past_a_hang_up_in_exceptfds)
{
    FOR_EACH_BACKEND(b)
        run_with_io(1, b, select_past_a_hang_up, NULL);
}

/* ---- accept and connect on blocking sockets ---------------------------------------- */

static void *serve_one(void *arg)
{
    int l = *(int *)arg;
    int s = accept(l, NULL, NULL);
    cr_assert_geq(s, 0, "accept: errno %d", errno);
    char buf[5];
    cr_assert_eq(recv(s, buf, sizeof buf, MSG_WAITALL), 5);
    cr_assert_eq(send(s, buf, sizeof buf, 0), 5);
    close(s);
    return NULL;
}

static void *accept_and_connect(void *arg)
{
    (void)arg;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    cr_assert_eq(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(l, 4), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, serve_one, &l), 0);
    usleep(20000);   /* the server waits in accept by now */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(c, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(write(c, "hello", 5), 5);
    char buf[6] = { 0 };
    cr_assert_eq(read(c, buf, 5), 5);
    cr_assert_eq(strcmp(buf, "hello"), 0, "got \"%s\"", buf);
    join_ok(t);
    close(c);
    close(l);
    return NULL;
}

Test(hook, accept_and_connect_on_blocking_sockets_wait_in_their_coroutine)
{
    FOR_EACH_BACKEND(b)
        run_with_io(1, b, accept_and_connect, NULL);
}

/* ---- name lookups --------------------------------------------------------------- */

static void *lookup_localhost(void *arg)
{
    (void)arg;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int r = getaddrinfo("localhost", "80", &hints, &res);
    cr_assert_eq(r, 0, "getaddrinfo: %s", gai_strerror(r));
    bool loopback = false;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET)
            loopback |= ((struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
        if (a->ai_family == AF_INET6)
            loopback |= IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr);
    }
    cr_assert(loopback, "localhost did not resolve to a loopback address");
    char host[NI_MAXHOST];
    cr_assert_eq(getnameinfo(res->ai_addr, res->ai_addrlen, host, sizeof host, NULL, 0, NI_NUMERICHOST), 0);
    freeaddrinfo(res);
    return NULL;
}

static void *many_lookups(void *arg)
{
    (void)arg;
    enum { N = 64 };
    weft_task *t[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(weft_spawn(&t[i], lookup_localhost, NULL), 0);
    for (int i = 0; i < N; i++)
        join_ok(t[i]);
    return NULL;
}

Test(hook, getaddrinfo_of_localhost_from_many_coroutines)
{
    run_with(2, many_lookups, NULL);
}

/* ---- outside a coroutine, and no migration inside a hooked call --------------------- */

Test(hook, outside_a_coroutine_each_call_is_the_c_library_s)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(write(p[1], "ab", 2), 2);
    char buf[2];
    cr_assert_eq(read(p[0], buf, 2), 2);
    struct pollfd pf = { p[0], POLLIN, 0 };
    cr_assert_eq(poll(&pf, 1, 10), 0);
    cr_assert_eq(usleep(1000), 0);
    cr_assert_eq(close(p[0]), 0);
    cr_assert_eq(close(p[1]), 0);
    errno = 0;
    cr_assert_eq(close(p[1]), -1);
    cr_assert_eq(errno, EBADF);
}

/* Each hooked call that waits, while other coroutines keep every worker busy:
 * the thread is the same after the call as before it. */
static atomic_bool stop_spinners;
/* Calls that resumed on another thread: usleep, read, poll, getaddrinfo. A
 * failed assertion on a worker could leave the others spinning; the test
 * body asserts on these instead. */
static _Atomic unsigned moved[4];

static void *spinner(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_spinners))
        weft_yield();
    return NULL;
}

static void *same_thread(void *arg)
{
    struct fds *p = arg;
    char c;
    /* Under ThreadSanitizer and Valgrind each switch costs microseconds and
     * the spinners keep every worker busy: fewer rounds check the same. */
    int rounds = WEFT_TEST_TSAN || RUNNING_ON_VALGRIND ? 3 : 20;
    for (int round = 0; round < rounds; round++) {
        pid_t before = tid();
        usleep(1000);
        moved[0] += tid() != before;
        struct late l = { p->b, "q", 1 };
        weft_task *t;
        spawn_late(&t, &l);
        before = tid();
        cr_assert_eq(read(p->a, &c, 1), 1);
        moved[1] += tid() != before;
        join_ok(t);
        spawn_late(&t, &l);
        struct pollfd pf = { p->a, POLLIN, 0 };
        before = tid();
        cr_assert_eq(poll(&pf, 1, -1), 1);
        moved[2] += tid() != before;
        cr_assert_eq(read(p->a, &c, 1), 1);
        join_ok(t);
        struct addrinfo *res;
        before = tid();
        cr_assert_eq(getaddrinfo("127.0.0.1", NULL, NULL, &res), 0);
        moved[3] += tid() != before;
        freeaddrinfo(res);
    }
    return NULL;
}

static void *pinned_calls(void *arg)
{
    atomic_store(&stop_spinners, false);
    int n = weft_workers() * 2;
    weft_task *s[16];
    for (int i = 0; i < n && i < 16; i++)
        cr_assert_eq(weft_spawn(&s[i], spinner, NULL), 0);
    weft_task *t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(weft_spawn(&t[i], same_thread, &((struct fds *)arg)[i]), 0);
    for (int i = 0; i < 4; i++)
        join_ok(t[i]);
    atomic_store(&stop_spinners, true);
    for (int i = 0; i < n && i < 16; i++)
        join_ok(s[i]);
    return NULL;
}

Test(hook, a_coroutine_resumes_on_its_thread_after_each_hooked_call)
{
    FOR_EACH_BACKEND(b) {
        struct fds f[4];
        for (int i = 0; i < 4; i++) {
            int p[2];
            cr_assert_eq(pipe(p), 0);
            f[i] = (struct fds){ p[0], p[1] };
        }
        for (int i = 0; i < 4; i++)
            atomic_store(&moved[i], 0);
        run_with_io(4, b, pinned_calls, f);
        cr_assert_eq(atomic_load(&moved[0]), 0, "on %s, usleep resumed on another thread", backend_name[b]);
        cr_assert_eq(atomic_load(&moved[1]), 0, "on %s, read resumed on another thread", backend_name[b]);
        cr_assert_eq(atomic_load(&moved[2]), 0, "on %s, poll resumed on another thread", backend_name[b]);
        cr_assert_eq(atomic_load(&moved[3]), 0, "on %s, getaddrinfo resumed on another thread",
                     backend_name[b]);
        for (int i = 0; i < 4; i++) {
            close(f[i].a);
            close(f[i].b);
        }
    }
}

/* sched_yield lets the worker's other coroutines run, and idle workers take
 * what waits in its queue: the caller must still resume on its thread. */
static void *hog(void *arg)
{
    (void)arg;
    uint64_t until = weft_now() + 2 * MS;   /* holds its worker without a switch */
    while (weft_now() < until)
        ;
    return NULL;
}

static void *yield_among_hogs(void *arg)
{
    unsigned *moves = arg;
    for (int round = 0; round < 20; round++) {
        weft_task *h[4];
        for (int i = 0; i < 4; i++)
            cr_assert_eq(weft_spawn(&h[i], hog, NULL), 0);
        pid_t before = tid();
        sched_yield();
        *moves += tid() != before;
        for (int i = 0; i < 4; i++)
            join_ok(h[i]);
    }
    return NULL;
}

Test(hook, sched_yield_resumes_on_the_thread_it_left)
{
    FOR_EACH_BACKEND(b) {
        unsigned moves = 0;
        run_with_io(2, b, yield_among_hogs, &moves);
        cr_assert_eq(moves, 0u, "on %s, sched_yield resumed on another thread %u times", backend_name[b], moves);
    }
}

/* ---- the dump's summary names the program's call, not the hook ------------------ */

static int dump_pipe[2];

static __attribute__((noinline)) void *blocked_in_read(void *arg)
{
    (void)arg;
    char c;
    ssize_t n = read(dump_pipe[0], &c, 1);
    return (void *)(intptr_t)n;
}

static __attribute__((noinline)) void *blocked_in_nanosleep(void *arg)
{
    (void)arg;
    struct timespec ts = { 60, 0 };   /* until it is cancelled */
    return (void *)(intptr_t)nanosleep(&ts, NULL);
}

/* Whether the summary at the top of a dump's text (before the first
 * coroutine's section) names `name`. */
static bool in_summary(const char *text, const char *name)
{
    const char *end = strstr(text, "\ncoroutine "), *at = strstr(text, name);
    return at && (!end || at < end);
}

static void *dump_the_blocked(void *arg)
{
    (void)arg;
    weft_task *r, *s;
    cr_assert_eq(weft_spawn(&r, blocked_in_read, NULL), 0);
    cr_assert_eq(weft_spawn(&s, blocked_in_nanosleep, NULL), 0);
    char *text = NULL;
    uint64_t until = weft_now() + 20000 * MS;
    do {   /* until both wait: their frames show */
        usleep(2000);
        free(text);
        text = dump_text();
    } while (!(in_summary(text, "blocked_in_read") && in_summary(text, "blocked_in_nanosleep")) &&
             !strstr(text, "__interceptor_read") && weft_now() < until);
    char *end = strstr(text, "\ncoroutine ");
    cr_assert_not_null(end, "%s", text);
    *end = '\0';   /* the summary alone */
    /* Under a sanitizer, a program linked with libweft-hook.so calls the
     * sanitizer's read first, which then calls the hook: its frame is the
     * one below weft's (hook/tests/CMakeLists.txt). */
    bool intercepted = WEFT_TEST_SANITIZED && strstr(text, "__interceptor_read");
    cr_assert(strstr(text, "blocked_in_read") || intercepted, "the summary does not name the reader:\n%s", text);
    cr_assert_not_null(strstr(text, "blocked_in_nanosleep"), "the summary does not name the sleeper:\n%s", text);
    free(text);
    cr_assert_eq(write(dump_pipe[1], "x", 1), 1);
    cr_assert_eq(weft_cancel(s), 0);
    join_ok(r);
    join_ok(s);
    return NULL;
}

Test(hook, the_dump_summary_names_the_programs_call_not_the_hook)
{
    cr_assert_eq(pipe(dump_pipe), 0);
    run_with_io(1, WEFT_IO_AUTO, dump_the_blocked, NULL);
    close(dump_pipe[0]);
    close(dump_pipe[1]);
}

/* ---- descriptors handed to weft --------------------------------------------------- */

static void *read_one(void *arg)
{
    char c;
    return (void *)(intptr_t)recv(*(int *)arg, &c, 1, 0);
}

/* close(), and dup2() onto the number, end a hand-over (weft_own) as
 * weft_close() does, also from a plain thread with no runtime alive: the
 * next socket given the number is not handed over, and reads its own bytes,
 * not what the old one's queue held. */
Test(hook, close_and_dup2_end_a_hand_over_even_with_no_runtime)
{
    for (int how = 0; how < 2; how++) {
        int sv[2];
        tcp_pair(sv);
        cr_assert_eq(weft_own(sv[0]), 0);
        cr_assert_eq(send(sv[1], "Aold", 4, 0), 4);
        void *r = run_with_io(1, WEFT_IO_AUTO, read_one, &sv[0]);   /* on io_uring: arms, "old" queued */
        cr_assert_eq((intptr_t)r, 1);
        usleep(20000);
        int number = sv[0];
        if (how == 0) {
            cr_assert_eq(close(sv[0]), 0);
        } else {
            int spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
            cr_assert_geq(spare, 0);
            cr_assert_eq(dup2(spare, sv[0]), sv[0]);
            cr_assert_eq(close(sv[0]), 0);
            close(spare);
        }
        close(sv[1]);
        /* A new socket on the old number (the raw dup3, which the hook does
         * not see, so that only close or dup2 above could end it). */
        int nv[2];
        tcp_pair(nv);
        if (nv[1] == number) {   /* the peer took it: move the peer */
            int elsewhere = fcntl(nv[1], F_DUPFD_CLOEXEC, number + 1);
            cr_assert_geq(elsewhere, 0);
            close(nv[1]);
            nv[1] = elsewhere;
        }
        if (nv[0] != number) {
            cr_assert_eq(syscall(SYS_dup3, nv[0], number, O_CLOEXEC), number);
            close(nv[0]);
        }
        cr_assert_eq(weft_own(number), 0, "%s left the old hand-over", how ? "dup2" : "close");
        cr_assert_eq(send(nv[1], "NEW", 3, 0), 3);
        char buf[8] = { 0 };
        ssize_t got = recv(number, buf, 3, MSG_WAITALL);
        cr_assert_eq(got, 3, "%s: recv gave %zd (errno %d)", how ? "dup2" : "close", got, errno);
        cr_assert_eq(strcmp(buf, "NEW"), 0, "read \"%s\"", buf);
        close(number);
        close(nv[1]);
    }
}

/* ---- starting programs ------------------------------------------------------------- */

/* Whether SIGPIPE is blocked in the process whose /proc status line
 * "SigBlk:\t<hex>" is at the start of text; -1 if there is none. */
static int sigpipe_in(const char *text)
{
    const char *at = strstr(text, "SigBlk:");
    if (!at)
        return -1;
    unsigned long long mask = strtoull(at + strlen("SigBlk:"), NULL, 16);
    return (int)((mask >> (SIGPIPE - 1)) & 1);
}

/* Reads fd to its end into buf (NUL-terminated). */
static void read_to_end(int fd, char *buf, size_t size)
{
    size_t got = 0;
    ssize_t n;
    while (got + 1 < size && (n = read(fd, buf + got, size - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = '\0';
}

static char *const look_argv[] = { "grep", "^SigBlk:", "/proc/self/status", NULL };

/* Starts grep with posix_spawn (p: posix_spawnp) writing to a pipe; whether
 * SIGPIPE was blocked in it, or -1 (and why in the log). */
static int spawned_sigpipe(bool p)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    posix_spawn_file_actions_t fa;
    cr_assert_eq(posix_spawn_file_actions_init(&fa), 0);
    cr_assert_eq(posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO), 0);
    cr_assert_eq(posix_spawn_file_actions_addclose(&fa, fds[0]), 0);
    pid_t pid = -1;
    extern char **environ;
    int err = p ? posix_spawnp(&pid, "grep", &fa, NULL, look_argv, environ)
                : posix_spawn(&pid, "/bin/grep", &fa, NULL, look_argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    cr_assert_eq(err, 0, "posix_spawn%s: %d", p ? "p" : "", err);
    char out[256];
    read_to_end(fds[0], out, sizeof out);
    close(fds[0]);
    int status = -1;
    cr_assert_eq(weft_waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "grep: status %d", status);
    return sigpipe_in(out);
}

#define TICKS_STOP (-1000000)   /* stored by the test: the ticker stops */
#define TICKS_DONE (-2000000)   /* stored by the ticker as it ends */

/* Counts 10 ms sleeps of its own coroutine until the count is TICKS_STOP. */
static void *count_ticks(void *arg)
{
    _Atomic int *count = arg;
    while (atomic_load(count) >= 0) {
        usleep(10000);   /* hooked: a sleep of its coroutine */
        atomic_fetch_add(count, 1);
    }
    atomic_store(count, TICKS_DONE);
    return NULL;
}

/* Each way to start a program without fork, from a coroutine on one worker:
 * the program has the SIGPIPE mask the test's thread gave the runtime (arg:
 * 1 blocked, 0 not), and the worker runs its other coroutines meanwhile.
 * system() and popen() start a shell, whose own mask Debian's dash clears as
 * it starts, so only posix_spawn and posix_spawnp show the mask here. */
static void *start_programs(void *arg)
{
    int want = (int)(intptr_t)arg;
    cr_assert_eq(spawned_sigpipe(false), want, "posix_spawn: SIGPIPE blocked is not %d", want);
    cr_assert_eq(spawned_sigpipe(true), want, "posix_spawnp: SIGPIPE blocked is not %d", want);

    char path[] = "/tmp/weft-hook-spawn-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    char cmd[128], out[256];
    snprintf(cmd, sizeof cmd, "grep ^SigBlk: /proc/self/status > %s", path);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "system: status %d", st);
    read_to_end(fd, out, sizeof out);
    close(fd);
    unlink(path);
    cr_assert_neq(sigpipe_in(out), -1, "system: no line from grep:\n%s", out);

    FILE *f = popen("grep ^SigBlk: /proc/self/status", "r");
    cr_assert_not_null(f, "popen: errno %d", errno);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    st = pclose(f);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "pclose: status %d", st);
    cr_assert_neq(sigpipe_in(out), -1, "popen: no line from grep:\n%s", out);

    /* system() and pclose() wait for their program on a helper thread, not
     * on the worker: its other coroutine runs meanwhile (it never does while
     * the worker waits). */
    _Atomic int counted = 0;
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, count_ticks, &counted), 0);
    st = system("sleep 0.2");
    int during_system = atomic_exchange(&counted, 0);
    FILE *slow = popen("sleep 0.2", "r");
    cr_assert_not_null(slow, "popen: errno %d", errno);
    int slow_st = pclose(slow);
    int during_pclose = atomic_exchange(&counted, TICKS_STOP);
    join_ok(t);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "system: status %d", st);
    cr_assert(WIFEXITED(slow_st) && WEXITSTATUS(slow_st) == 0, "pclose: status %d", slow_st);
    cr_assert_gt(during_system, 0, "the worker ran nothing else during system()");
    cr_assert_gt(during_pclose, 0, "the worker ran nothing else during pclose()");

    /* Cancelled: no program starts, each call says why, and a pclose()
     * still closes its stream and gives the program's status. */
    FILE *open_one = popen("sleep 0.2; exit 3", "r");
    cr_assert_not_null(open_one);
    _Atomic int after_cancel = 0;
    cr_assert_eq(weft_spawn(&t, count_ticks, &after_cancel), 0);
    cr_assert_eq(weft_cancel(weft_self()), 0);
    errno = 0;
    cr_assert_eq(system("true"), -1);
    cr_assert_eq(errno, ECANCELED);
    cr_assert_null(popen("true", "r"));
    cr_assert_eq(errno, ECANCELED);
    pid_t pid;
    char *const true_argv[] = { "true", NULL };
    cr_assert_eq(posix_spawn(&pid, "/bin/true", NULL, NULL, true_argv, NULL), ECANCELED);
    cr_assert_eq(posix_spawnp(&pid, "true", NULL, NULL, true_argv, NULL), ECANCELED);
    atomic_store(&after_cancel, 0);
    st = pclose(open_one);
    int during_cancelled_pclose = atomic_exchange(&after_cancel, TICKS_STOP);
    while (atomic_load(&after_cancel) != TICKS_DONE)
        weft_yield();   /* cancelled, a join would not wait: one that need not still completes */
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3, "pclose in a cancelled coroutine: status %d", st);
    cr_assert_gt(during_cancelled_pclose, 0, "the worker ran nothing else during a cancelled pclose()");
    return NULL;
}

Test(hook, a_program_started_from_a_coroutine_has_the_program_s_sigpipe_mask_and_holds_no_worker)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    FOR_EACH_BACKEND(b) {
        cr_assert_eq(pthread_sigmask(SIG_UNBLOCK, &pipe_set, &old), 0);
        run_with_io(1, b, start_programs, (void *)(intptr_t)0);
        cr_assert_eq(pthread_sigmask(SIG_BLOCK, &pipe_set, NULL), 0);
        run_with_io(1, b, start_programs, (void *)(intptr_t)1);
        cr_assert_eq(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
    }
}
