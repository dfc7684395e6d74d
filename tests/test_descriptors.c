/* SPDX-License-Identifier: MIT */
/* The hostile descriptor suite: descriptors closed and their numbers given to
 * new files while requests on them are queued or in flight, huge and negative
 * descriptor numbers, writes to peers that have gone, positioned IO on pipes
 * and sockets, and deadlines that expire just as data arrives. Each runs on
 * both IO backends and on 1, 2 and 4 workers. */
#define _GNU_SOURCE
#include "common.h"
#include "dump_text.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define US 1000ull
#define MS 1000000ull

static const unsigned all_workers[] = { 1, 2, 4 };

static void set_nonblocking(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    cr_assert_geq(fl, 0);
    cr_assert_eq(fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK), 0);
}

/* Writes into the pipe or socket fd until it holds no more. */
static void fill(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    set_nonblocking(fd, true);
    static const char block[4096];
    while (write(fd, block, sizeof block) > 0)
        ;
    cr_assert_eq(errno, EAGAIN, "filling descriptor %d", fd);
    cr_assert_eq(fcntl(fd, F_SETFL, fl), 0);
}

/* ---- huge and negative numbers ---------------------------------------------- */

/* Beyond any table weft keeps, at its edges, and below zero. */
static const int bad_numbers[] = {
    5000000, 0x7fffffff, INT_MAX - 1, 1 << 20, (1 << 20) - 1, 4096, -1, -2, INT_MIN,
};
#define BAD_N (sizeof bad_numbers / sizeof bad_numbers[0])

static void every_call_on_bad_numbers(void)
{
    char c = 0;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(9),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    for (size_t i = 0; i < BAD_N; i++) {
        int fd = bad_numbers[i];
        cr_assert_eq(weft_read(fd, &c, 1), -EBADF, "weft_read(%d)", fd);
        cr_assert_eq(weft_write(fd, &c, 1), -EBADF, "weft_write(%d)", fd);
        cr_assert_eq(weft_recv(fd, &c, 1, 0), -EBADF, "weft_recv(%d)", fd);
        cr_assert_eq(weft_send(fd, &c, 1, 0), -EBADF, "weft_send(%d)", fd);
        cr_assert_eq(weft_poll(fd, POLLIN), -EBADF, "weft_poll(%d)", fd);
        cr_assert_eq(weft_pread(fd, &c, 1, 0), -EBADF, "weft_pread(%d)", fd);
        cr_assert_eq(weft_pwrite(fd, &c, 1, 0), -EBADF, "weft_pwrite(%d)", fd);
        cr_assert_eq(weft_fsync(fd), -EBADF, "weft_fsync(%d)", fd);
        cr_assert_eq(weft_accept(fd, NULL, NULL, 0), -EBADF, "weft_accept(%d)", fd);
        cr_assert_eq(weft_connect(fd, (struct sockaddr *)&sa, sizeof sa), -EBADF, "weft_connect(%d)", fd);
        cr_assert_eq(weft_close(fd), -EBADF, "weft_close(%d)", fd);
    }
}

static void *bad_numbers_in_a_coroutine(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < BAD_N; i++)   /* none of them may be open */
        cr_assert(bad_numbers[i] < 0 || fcntl(bad_numbers[i], F_GETFD) < 0, "%d is open", bad_numbers[i]);
    every_call_on_bad_numbers();
    /* And with a request of the runtime's in flight meanwhile. */
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    weft_deadline(weft_now() + 1 * MS);
    char c;
    cr_assert_eq(weft_read(p[0], &c, 1), -ETIMEDOUT);
    weft_deadline(0);
    every_call_on_bad_numbers();
    close(p[0]);
    close(p[1]);
    return (void *)1;
}

Test(descriptors, every_call_on_a_huge_or_negative_descriptor_gives_EBADF)
{
    FOR_EACH_CONFIG(b, w, all_workers)
        cr_assert_eq(run_with_io(w, b, bad_numbers_in_a_coroutine, NULL), (void *)1);
    /* A plain thread makes the plain system calls, which agree. */
    for (size_t i = 0; i < BAD_N; i++) {
        char c;
        cr_assert_eq(weft_read(bad_numbers[i], &c, 1), -EBADF);
        cr_assert_eq(weft_close(bad_numbers[i]), -EBADF);
    }
}

/* ---- a number closed and reused while a call on it waits ------------------------ */

/*
 * A coroutine, the victim, reads a pipe or writes a full one. Then its
 * descriptor is closed with weft_close and a new file is made at once, which
 * close(2) alone would give the same number. Whatever the victim's request
 * was doing, queued on its worker's ring or in flight, it must fail with
 * -EBADF, and the new file must not be touched: a pipe keeps the bytes written
 * into it, a memory file stays empty.
 *
 * On one worker the request is still queued, never submitted, when the close
 * comes: the victim parks with its entry queued and the closer runs next on
 * the same worker, which submits only when it runs out of work. The closer
 * is the coroutine itself, or a plain thread that it waits for without
 * letting its worker go. With more workers the victim may run on another
 * worker, whose ring submits at once: then the request is in flight.
 */
/* Returns once weft_dump shows a coroutine waiting in a read or write of fd:
 * its request is then queued or in flight, and counted, so a weft_close now
 * races with nothing. A pause alone is no proof on a loaded machine, where
 * the other worker may not have run the call yet. */
static void await_waiters(int fd, bool write, int n);

static void await_waiting(int fd, bool write)
{
    await_waiters(fd, write, 1);
}

/* The same, until n coroutines show so (a number closed and reused may have
 * a waiter on the old file and one on the new). */
static void await_waiters(int fd, bool write, int n)
{
    char key[48];
    snprintf(key, sizeof key, "[%s fd %d,", write ? "write" : "read", fd);
    bool slow = WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND || emulated();
    uint64_t until = weft_now() + (slow ? 60000 : 10000) * MS;
    for (;;) {
        bool last = weft_now() >= until;   /* before the dump, which may be slow itself */
        char *text = dump_text();
        int seen = 0;
        for (const char *at = strstr(text, key); at; at = strstr(at + 1, key))
            seen++;
        free(text);
        if (seen >= n)
            return;
        cr_assert(!last, "%d coroutines never waited with %s", n, key);
        weft_sleep(1 * MS);
    }
}

struct victim {
    int          fd;
    bool         write;
    _Atomic int  worker;   /* where it made its call; -1 before */
    _Atomic long result;
};

static void *victim_call(void *arg)
{
    struct victim *v = arg;
    char in[16];
    atomic_store(&v->worker, weft_worker());
    long r = v->write ? (long)weft_write(v->fd, "old", 3) : (long)weft_read(v->fd, in, sizeof in);
    atomic_store(&v->result, r);
    return NULL;
}

struct reopen {
    int  fd;          /* to close */
    bool write;       /* the new file is a memory file; else a pipe holding "new" */
    int  closed;      /* weft_close's result */
    int  fresh[2];    /* the new file: fresh[0] is made first */
};

static void close_and_reopen(struct reopen *o)
{
    o->closed = weft_close(o->fd);
    if (o->write) {
        o->fresh[0] = memfd_create("weft-descriptors", MFD_CLOEXEC);
        o->fresh[1] = -1;
        cr_assert_geq(o->fresh[0], 0);
    } else {
        cr_assert_eq(pipe2(o->fresh, O_CLOEXEC), 0);
        cr_assert_eq(write(o->fresh[1], "new", 3), 3);
    }
}

static void *close_and_reopen_thread(void *arg)
{
    close_and_reopen(arg);
    return NULL;
}

enum closer { BY_COROUTINE, BY_THREAD };

struct reuse_case {
    bool        write;
    enum closer by;
};

static void *close_under_a_call(void *arg)
{
    const struct reuse_case *rc = arg;
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    if (rc->write)
        fill(p[1]);
    struct victim v = { .fd = rc->write ? p[1] : p[0], .write = rc->write, .worker = -1, .result = 1 };
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, victim_call, &v), 0);
    while (atomic_load(&v.worker) < 0)
        weft_yield();
    await_waiting(v.fd, v.write);
    struct reopen o = { .fd = v.fd, .write = rc->write };
    if (rc->by == BY_COROUTINE) {
        close_and_reopen(&o);
    } else {
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, close_and_reopen_thread, &o), 0);
        cr_assert_eq(pthread_join(th, NULL), 0);   /* holds the worker meanwhile */
    }
    cr_assert_eq(o.closed, 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert_eq(atomic_load(&v.result), -EBADF, "the %s of the closed descriptor %d got %ld%s",
                 rc->write ? "write" : "read", v.fd, atomic_load(&v.result),
                 o.fresh[0] == v.fd ? " (its number went to the new file)" : "");
    if (rc->write) {
        struct stat st;
        cr_assert_eq(fstat(o.fresh[0], &st), 0);
        cr_assert_eq(st.st_size, 0, "the new file was written to");
        close(p[0]);
    } else {
        char got[8];
        set_nonblocking(o.fresh[0], true);
        cr_assert_eq(read(o.fresh[0], got, sizeof got), 3, "the new pipe was read from");
        cr_assert(memcmp(got, "new", 3) == 0);
        close(o.fresh[1]);
        close(p[1]);
    }
    close(o.fresh[0]);
    return (void *)1;
}

static void sweep_reuse(bool write, enum closer by)
{
    struct reuse_case rc = { .write = write, .by = by };
    FOR_EACH_CONFIG(b, w, all_workers)
        cr_assert_eq(run_with_io(w, b, close_under_a_call, &rc), (void *)1);
}

Test(descriptors, a_read_whose_descriptor_is_closed_fails_and_never_reads_the_file_given_its_number)
{
    sweep_reuse(false, BY_COROUTINE);
}

Test(descriptors, a_write_whose_descriptor_is_closed_fails_and_never_writes_the_file_given_its_number)
{
    sweep_reuse(true, BY_COROUTINE);
}

Test(descriptors, a_close_from_a_plain_thread_keeps_a_queued_read_off_the_file_given_its_number)
{
    sweep_reuse(false, BY_THREAD);
}

Test(descriptors, a_close_from_a_plain_thread_keeps_a_queued_write_off_the_file_given_its_number)
{
    sweep_reuse(true, BY_THREAD);
}

/* Closing a socket a coroutine waits on releases it: the peer sees the end
 * of the stream, and the number is free again soon after, whichever file
 * the backend kept in its place meanwhile. */
static void *close_a_waited_socket(void *arg)
{
    (void)arg;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct victim v = { .fd = sv[0], .worker = -1, .result = 1 };
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, victim_call, &v), 0);
    while (atomic_load(&v.worker) < 0)
        weft_yield();
    await_waiting(sv[0], false);
    cr_assert_eq(weft_close(sv[0]), 0);
    cr_assert_eq(weft_join(t, NULL), 0);
    cr_assert_eq(atomic_load(&v.result), -EBADF);
    struct pollfd pfd = { .fd = sv[1], .events = POLLIN };
    cr_assert_eq(poll(&pfd, 1, 10000), 1, "the peer never saw the close");
    char c;
    cr_assert_eq(recv(sv[1], &c, 1, MSG_DONTWAIT), 0, "the peer reads the end of the stream");
    uint64_t until = weft_now() + 10000 * MS;
    while (fcntl(sv[0], F_GETFD) >= 0 && weft_now() < until)
        weft_sleep(1 * MS);
    cr_assert_lt(fcntl(sv[0], F_GETFD), 0, "descriptor %d is still open", sv[0]);
    close(sv[1]);
    return (void *)1;
}

Test(descriptors, a_socket_closed_under_a_receiver_is_released_and_its_number_freed)
{
    FOR_EACH_CONFIG(b, w, all_workers)
        cr_assert_eq(run_with_io(w, b, close_a_waited_socket, NULL), (void *)1);
}

/* ---- deadlines that expire as data arrives ---------------------------------- */

/*
 * One coroutine alternates a receive with a 30 us deadline and one with none,
 * from the same call site (so the same stack address), on a socket into which
 * a plain thread trickles single bytes at about that pace. A deadline that
 * expires as its receive completes must never cut short the receive after
 * it: those have no deadline, nobody cancels or closes anything, and every
 * one of them must get data. At this pace the deadline meets the data often:
 * the rounds below are many times what it takes to see the fault where a
 * request's identity was its address.
 */
struct trickle {
    int          fd;
    _Atomic bool stop;
};

static void *trickler(void *arg)
{
    struct trickle *tr = arg;
    while (!atomic_load_explicit(&tr->stop, memory_order_relaxed)) {
        if (send(tr->fd, "x", 1, MSG_NOSIGNAL) != 1)
            break;
        uint64_t next = weft_now() + 25 * US;
        while (weft_now() < next)
            ;
    }
    return NULL;
}

struct alternation {
    size_t rounds;     /* at most */
    size_t least;      /* at least, however long they take */
    int    backend;
};

static void *alternate_deadlines(void *arg)
{
    const struct alternation *a = arg;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct trickle tr = { .fd = sv[1] };
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, trickler, &tr), 0);
    size_t failed = 0, timed_out = 0, bad_deadline = 0;
    ssize_t first = 0;
    char buf[256];
    /* On a loaded machine each round waits for the trickler to be run:
     * after the least rounds, a few seconds bound the test. */
    uint64_t enough = weft_now() + 3000 * MS;
    size_t done = 0;
    for (size_t i = 0; i < 2 * a->rounds && (i < 2 * a->least || weft_now() < enough); i++) {
        done = i / 2 + 1;
        bool bounded = !(i & 1);
        weft_deadline(bounded ? weft_now() + 30 * US : 0);
        ssize_t r = weft_recv(sv[0], buf, sizeof buf, 0);
        if (bounded) {
            timed_out += r == -ETIMEDOUT;
            bad_deadline += r <= 0 && r != -ETIMEDOUT;
        } else if (r <= 0) {
            if (!failed++)
                first = r;
        }
    }
    weft_deadline(0);
    atomic_store(&tr.stop, true);
    cr_assert_eq(pthread_join(th, NULL), 0);
    close(sv[0]);
    close(sv[1]);
    if (failed)   /* the count says how it failed, under the Criterion stand-in too */
        fprintf(stderr, "%s, %d workers: %zu of %zu receives without a deadline failed, the first "
                "with %zd (%zu of the others timed out)\n", backend_name[a->backend], weft_workers(),
                failed, done, first, timed_out);
    cr_assert_eq(failed, 0);
    cr_assert_eq(bad_deadline, 0, "%zu receives with a deadline failed otherwise", bad_deadline);
    return (void *)1;
}

Test(descriptors, a_deadline_that_expires_as_data_arrives_never_cuts_short_the_next_receive)
{
    FOR_EACH_CONFIG(b, w, all_workers) {
        struct alternation a = { .rounds = scaled(20000), .least = scaled(2000), .backend = b };
        cr_assert_eq(run_with_io(w, b, alternate_deadlines, &a), (void *)1);
    }
}

/* ---- writes to peers that have gone ----------------------------------------- */

/* Whether SIGPIPE is pending on the calling thread. */
static bool sigpipe_pending(void)
{
    sigset_t set;
    cr_assert_eq(sigpending(&set), 0);
    return sigismember(&set, SIGPIPE) == 1;
}

struct late_close {
    int fd;
};

static void *close_later(void *arg)
{
    struct late_close *l = arg;
    weft_sleep(5 * MS);   /* the writer is most likely waiting by now */
    close(l->fd);
    return NULL;
}

/* weft_write into fd, full, while a coroutine closes its reading end. */
static long write_while_reader_leaves(int fd, int reader)
{
    fill(fd);
    struct late_close l = { .fd = reader };
    weft_task *t;
    cr_assert_eq(weft_spawn(&t, close_later, &l), 0);
    static char big[1 << 16];
    long r = (long)weft_write(fd, big, sizeof big);
    cr_assert_eq(weft_join(t, NULL), 0);
    return r;
}

static void *write_to_vanished_peers(void *arg)
{
    (void)arg;
    int sv[2], p[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    close(sv[1]);
    cr_assert_eq(weft_write(sv[0], "x", 1), -EPIPE, "a socket whose peer is gone");
    cr_assert_eq(weft_send(sv[0], "x", 1, 0), -EPIPE);
    close(sv[0]);
    cr_assert(!sigpipe_pending(), "SIGPIPE left pending");

    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    close(p[0]);
    cr_assert_eq(weft_write(p[1], "x", 1), -EPIPE, "a pipe without a reader");
    close(p[1]);
    cr_assert(!sigpipe_pending(), "SIGPIPE left pending");

    /* The reader leaves while the writer waits for room. */
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    long r = write_while_reader_leaves(p[1], p[0]);
    cr_assert_eq(r, -EPIPE, "a pipe whose reader left during the write: %ld", r);
    close(p[1]);
    cr_assert(!sigpipe_pending(), "SIGPIPE left pending");

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    r = write_while_reader_leaves(sv[0], sv[1]);
    /* A peer that closes with unread data resets the connection. */
    cr_assert(r == -EPIPE || r == -ECONNRESET, "a socket whose peer left during the write: %ld", r);
    close(sv[0]);
    cr_assert(!sigpipe_pending(), "SIGPIPE left pending");
    return (void *)1;
}

Test(descriptors, writing_to_a_peer_that_has_gone_gives_EPIPE_and_raises_no_SIGPIPE)
{
    FOR_EACH_CONFIG(b, w, all_workers)
        cr_assert_eq(run_with_io(w, b, write_to_vanished_peers, NULL), (void *)1);
}

/* ---- positioned IO on descriptors without positions --------------------------- */

static void *positioned_io_on_streams(void *arg)
{
    (void)arg;
    int p[2], sv[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int m = memfd_create("weft-descriptors", MFD_CLOEXEC);
    cr_assert_geq(m, 0);
    char c = 0;
    /* A wait would be the defect: give up rather than hang. */
    weft_deadline(weft_now() + 5000 * MS);
    cr_assert_eq(weft_pread(p[0], &c, 1, 0), -ESPIPE, "pread of an empty pipe");
    cr_assert_eq(weft_pwrite(p[1], "x", 1, 0), -ESPIPE, "pwrite of a pipe");
    cr_assert_eq(write(p[1], "y", 1), 1);
    cr_assert_eq(weft_pread(p[0], &c, 1, 0), -ESPIPE, "pread of a pipe that holds data");
    cr_assert_eq(weft_pread(sv[0], &c, 1, 0), -ESPIPE, "pread of a socket");
    cr_assert_eq(weft_pwrite(sv[0], "x", 1, 0), -ESPIPE, "pwrite of a socket");
    /* As pread(2): a negative offset is refused first. */
    cr_assert_eq(weft_pread(m, &c, 1, -1), -EINVAL);
    cr_assert_eq(weft_pwrite(m, "x", 1, -1), -EINVAL);
    cr_assert_eq(weft_pread(p[0], &c, 1, -5), -EINVAL);
    cr_assert_eq(weft_pwrite(m, "z", 1, 3), 1);
    cr_assert_eq(weft_pread(m, &c, 1, 3), 1);
    cr_assert_eq(c, 'z');
    weft_deadline(0);
    /* Nothing was taken from the pipe or sent on the socket. */
    cr_assert_eq(read(p[0], &c, 1), 1);
    cr_assert_eq(c, 'y');
    cr_assert_eq(recv(sv[1], &c, 1, MSG_DONTWAIT), -1);
    cr_assert_eq(errno, EAGAIN);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
    close(m);
    return (void *)1;
}

Test(descriptors, pread_and_pwrite_on_a_pipe_or_socket_give_ESPIPE_at_once)
{
    FOR_EACH_CONFIG(b, w, all_workers)
        cr_assert_eq(run_with_io(w, b, positioned_io_on_streams, NULL), (void *)1);
    cr_assert_eq(positioned_io_on_streams(NULL), (void *)1);   /* the plain calls agree */
}

/* ---- the smallest rings ---------------------------------------------------------- */

/* Several coroutines at once fill a small ring many times over, with
 * deadlines and without. */
static void *pipe_rounds(void *arg)
{
    (void)arg;
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    for (int i = 0; i < 50; i++) {
        char c = 0;
        cr_assert_eq(weft_write(p[1], "r", 1), 1);
        if (i & 1)
            weft_deadline(weft_now() + 5000 * MS);
        cr_assert_eq(weft_read(p[0], &c, 1), 1);
        weft_deadline(0);
        cr_assert_eq(c, 'r');
    }
    char c;
    weft_deadline(weft_now() + 1 * MS);
    cr_assert_eq(weft_read(p[0], &c, 1), -ETIMEDOUT);
    weft_deadline(0);
    close(p[0]);
    close(p[1]);
    return (void *)1;
}

static void *io_on_a_small_ring(void *arg)
{
    weft_task *t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(weft_spawn(&t[i], pipe_rounds, arg), 0);
    void *r = pipe_rounds(arg);
    for (int i = 0; i < 4; i++) {
        void *ri;
        cr_assert_eq(weft_join(t[i], &ri), 0);
        cr_assert_eq(ri, (void *)1);
    }
    return r;
}

struct small_ring {
    weft_config cfg;
    int         err;
    void       *result;
};

static void *run_small_ring(void *arg)
{
    struct small_ring *s = arg;
    s->err = weft_main(&s->cfg, io_on_a_small_ring, NULL, &s->result);
    return NULL;
}

Test(descriptors, rings_of_one_two_and_three_entries_carry_every_request)
{
    static const unsigned entries[] = { 1, 2, 3 };
    FOR_EACH_CONFIG(b, w, all_workers) {
        for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
            struct small_ring s = {
                .cfg = { .workers = w, .io_backend = b, .ring_entries = entries[i] },
                .err = 1,
            };
            /* A ring that cannot take a request spins: give up rather than hang. */
            pthread_t th;
            cr_assert_eq(pthread_create(&th, NULL, run_small_ring, &s), 0);
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 60;
            int e = pthread_timedjoin_np(th, NULL, &until);
            cr_assert_eq(e, 0, "ring_entries %u on %s with %u workers: no progress in 60 s",
                         entries[i], backend_name[b], w);
            cr_assert_eq(s.err, 0, "ring_entries %u", entries[i]);
            cr_assert_eq(s.result, (void *)1);
        }
    }
}

/* ---- numbers closed with close(2) and reused, and whose flags are whose -------- */

/*
 * A coroutine waits to read a pipe; the pipe is closed with close(2), not
 * weft_close, and its number given to a socket, on which a second coroutine
 * waits. Data for the socket goes to the socket's reader; the pipe's reader
 * waits on, as a thread blocked in poll(2) on the old file would, until it is
 * cancelled.
 */
struct reused {
    int            pipe[2], sv[2];
    _Atomic long   old_result, new_result;
};

static void *read_old(void *arg)
{
    struct reused *r = arg;
    char c;
    atomic_store(&r->old_result, (long)weft_read(r->pipe[0], &c, 1));
    return NULL;
}

static void *read_new(void *arg)
{
    struct reused *r = arg;
    char buf[8];
    atomic_store(&r->new_result, (long)weft_read(r->sv[0], buf, sizeof buf));
    return NULL;
}

static void *close_with_close_and_reuse(void *arg)
{
    (void)arg;
    struct reused r = { .old_result = 1000, .new_result = 1000 };
    cr_assert_eq(pipe2(r.pipe, O_CLOEXEC), 0);
    weft_task *a, *b;
    cr_assert_eq(weft_spawn(&a, read_old, &r), 0);
    await_waiting(r.pipe[0], false);
    /* The dump names the wait as the call begins, before the backend has
     * looked at the file (an fstat) and parked: a close(2) then would race
     * that look, which ThreadSanitizer reports. Let the reader park. */
    weft_sleep((WEFT_TEST_SANITIZED || RUNNING_ON_VALGRIND ? 200 : 20) * MS);
    int number = r.pipe[0];
    cr_assert_eq(close(r.pipe[0]), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, r.sv), 0);
    cr_assert_eq(r.sv[0], number, "the lowest free number is reused");
    cr_assert_eq(weft_spawn(&b, read_new, &r), 0);
    await_waiters(r.sv[0], false, 2);
    cr_assert_eq(write(r.sv[1], "hello", 5), 5);
    uint64_t until = weft_now() + 10000 * MS;
    while (atomic_load(&r.new_result) == 1000 && weft_now() < until)
        weft_sleep(1 * MS);
    weft_sleep(30 * MS);   /* a wrong wake of the old reader would have come with it */
    cr_assert_eq(atomic_load(&r.new_result), 5, "the socket's reader got %ld", atomic_load(&r.new_result));
    cr_assert_eq(atomic_load(&r.old_result), 1000, "the closed pipe's reader returned %ld",
                 atomic_load(&r.old_result));
    cr_assert_eq(weft_cancel(a), 0);
    cr_assert_eq(weft_join(a, NULL), 0);
    cr_assert_eq(weft_join(b, NULL), 0);
    cr_assert_eq(atomic_load(&r.old_result), -ECANCELED);
    close(r.pipe[1]);
    close(r.sv[0]);
    close(r.sv[1]);
    return (void *)1;
}

Test(descriptors, a_reader_of_a_number_closed_with_close_waits_on_and_the_new_file_s_reader_gets_its_data)
{
    FOR_EACH_CONFIG(b, w, all_workers)
        cr_assert_eq(run_with_io(w, b, close_with_close_and_reuse, NULL), (void *)1);
}

/* The same where the number goes to a socket that weft_accept returns,
 * which weft knows to be new. */
struct accepted_reuse {
    struct reused r;
    int           listener, client;
    struct sockaddr_in addr;
};

static void *connect_and_send_later(void *arg)
{
    struct accepted_reuse *ar = arg;
    cr_assert_eq(weft_connect(ar->client, (struct sockaddr *)&ar->addr, sizeof ar->addr), 0);
    weft_sleep(20 * MS);   /* the accepted socket's reader waits by then, most likely */
    cr_assert_eq(weft_write(ar->client, "hello", 5), 5);
    return NULL;
}

static void *accept_into_a_closed_number(void *arg)
{
    (void)arg;
    struct accepted_reuse ar = { .r = { .old_result = 1000, .new_result = 1000 } };
    ar.addr = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof ar.addr;
    ar.listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(bind(ar.listener, (struct sockaddr *)&ar.addr, sizeof ar.addr), 0);
    cr_assert_eq(listen(ar.listener, 4), 0);
    cr_assert_eq(getsockname(ar.listener, (struct sockaddr *)&ar.addr, &alen), 0);
    ar.client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);   /* before the number is free */
    cr_assert_eq(pipe2(ar.r.pipe, O_CLOEXEC), 0);
    weft_task *a, *b, *k;
    cr_assert_eq(weft_spawn(&a, read_old, &ar.r), 0);
    await_waiting(ar.r.pipe[0], false);
    int number = ar.r.pipe[0];
    cr_assert_eq(close(ar.r.pipe[0]), 0);
    cr_assert_eq(weft_spawn(&k, connect_and_send_later, &ar), 0);
    ar.r.sv[0] = weft_accept(ar.listener, NULL, NULL, SOCK_CLOEXEC);
    ar.r.sv[1] = -1;
    cr_assert_eq(ar.r.sv[0], number, "the lowest free number is reused");
    cr_assert_eq(weft_spawn(&b, read_new, &ar.r), 0);
    cr_assert_eq(weft_join(b, NULL), 0);
    cr_assert_eq(atomic_load(&ar.r.new_result), 5, "the accepted socket's reader got %ld",
                 atomic_load(&ar.r.new_result));
    cr_assert_eq(atomic_load(&ar.r.old_result), 1000, "the closed pipe's reader returned %ld",
                 atomic_load(&ar.r.old_result));
    cr_assert_eq(weft_cancel(a), 0);
    cr_assert_eq(weft_join(a, NULL), 0);
    cr_assert_eq(weft_join(k, NULL), 0);
    close(ar.r.pipe[1]);
    close(ar.r.sv[0]);
    close(ar.client);
    close(ar.listener);
    return (void *)1;
}

Test(descriptors, a_reader_of_a_number_closed_with_close_waits_on_when_weft_accept_reuses_it)
{
    FOR_EACH_CONFIG(b, w, all_workers)
        cr_assert_eq(run_with_io(w, b, accept_into_a_closed_number, NULL), (void *)1);
}

/* A pipe read by a coroutine first (which the epoll backend makes
 * O_NONBLOCK), then by a plain thread: without a deadline it blocks until
 * data comes, with one it waits until then; never -EAGAIN. */
static int late_pipe[2];

static void *write_twice_later(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2; i++) {
        usleep(100000);
        if (write(late_pipe[1], "x", 1) != 1)
            return (void *)1;
    }
    return NULL;
}

static void *read_it_once(void *arg)
{
    (void)arg;
    char c;
    cr_assert_eq(weft_write(late_pipe[1], "a", 1), 1);
    cr_assert_eq(weft_read(late_pipe[0], &c, 1), 1);
    return (void *)1;
}

Test(descriptors, a_plain_thread_blocks_in_a_pipe_that_coroutines_read_before)
{
    FOR_EACH_BACKEND(b) {
        cr_assert_eq(pipe2(late_pipe, O_CLOEXEC), 0);
        cr_assert_eq(run_with_io(1, b, read_it_once, NULL), (void *)1);
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, write_twice_later, NULL), 0);
        char c;
        cr_assert_eq(weft_read(late_pipe[0], &c, 1), 1, "without a deadline");
        weft_deadline(weft_now() + 10000 * MS);
        cr_assert_eq(weft_read(late_pipe[0], &c, 1), 1, "with a deadline");
        weft_deadline(0);
        cr_assert_eq(pthread_join(t, NULL), 0);
        close(late_pipe[0]);
        close(late_pipe[1]);
    }
}

/* A number that was a pipe, closed with close(2) and given to a socket:
 * the socket keeps its flags. */
static void *socket_after_a_pipe(void *arg)
{
    (void)arg;
    int p[2], sv[2];
    char c;
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(write(p[1], "x", 1), 1);
    cr_assert_eq(weft_read(p[0], &c, 1), 1);
    int number = p[0];
    close(p[0]);
    close(p[1]);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    cr_assert(sv[0] == number || sv[1] == number, "the number was reused");
    int s = sv[0] == number ? sv[0] : sv[1], peer = s == sv[0] ? sv[1] : sv[0];
    cr_assert_eq(write(peer, "y", 1), 1);
    cr_assert_eq(weft_read(s, &c, 1), 1);
    cr_assert_eq(c, 'y');
    cr_assert_eq(fcntl(s, F_GETFL) & O_NONBLOCK, 0, "the socket was made O_NONBLOCK");
    close(sv[0]);
    close(sv[1]);
    return (void *)1;
}

Test(descriptors, a_socket_given_a_pipe_s_old_number_keeps_its_flags)
{
    FOR_EACH_CONFIG(b, w, all_workers)
        cr_assert_eq(run_with_io(w, b, socket_after_a_pipe, NULL), (void *)1);
}

/* A regular file read and written by coroutines keeps its flags: it never
 * waits, and its open file may be shared with other processes. */
static void *regular_file_flags(void *arg)
{
    (void)arg;
    char path[] = "/tmp/weft-descriptors-XXXXXX", c;
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    cr_assert_eq(weft_write(fd, "z", 1), 1);
    cr_assert_eq(lseek(fd, 0, SEEK_SET), 0);
    cr_assert_eq(weft_read(fd, &c, 1), 1);
    cr_assert_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0, "the regular file was made O_NONBLOCK");
    close(fd);
    return (void *)1;
}

Test(descriptors, a_regular_file_keeps_its_flags)
{
    FOR_EACH_BACKEND(b)
        cr_assert_eq(run_with_io(1, b, regular_file_flags, NULL), (void *)1);
}

/* A blocking TCP socket connected by weft_connect answers a second
 * weft_connect as connect(2) would: -EISCONN. */
static void *connect_twice(void *arg)
{
    (void)arg;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(l, 4), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)&a, &alen), 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(weft_connect(c, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(weft_connect(c, (struct sockaddr *)&a, sizeof a), -EISCONN);
    close(c);
    close(l);
    return (void *)1;
}

Test(descriptors, a_second_connect_of_a_connected_socket_gives_EISCONN)
{
    FOR_EACH_CONFIG(b, w, all_workers)
        cr_assert_eq(run_with_io(w, b, connect_twice, NULL), (void *)1);
}

/* An eventfd, an anonymous file of no type, waits in its coroutine: a read of
 * an empty one ends at its deadline, not in a worker blocked in read(2) (a
 * plain thread writes it after 30 s, which would end such a read with 8), and
 * a write that would overflow it likewise. */
static int efd;

static void *rescue_later(void *arg)
{
    (void)arg;
    sleep(30);   /* far past the reads' deadlines, even under Valgrind */
    uint64_t one = 1;
    return (void *)(intptr_t)write(efd, &one, sizeof one);
}

static void *eventfd_waits(void *arg)
{
    (void)arg;
    uint64_t v, almost = UINT64_MAX - 1;
    weft_deadline(weft_now() + 50 * MS);
    long r = (long)weft_read(efd, &v, sizeof v);
    weft_deadline(0);
    cr_assert_eq(r, -ETIMEDOUT, "a read of an empty eventfd gave %ld", r);
    cr_assert_eq(weft_write(efd, &almost, sizeof almost), 8);
    weft_deadline(weft_now() + 50 * MS);
    uint64_t one = 1;
    r = (long)weft_write(efd, &one, sizeof one);
    weft_deadline(0);
    cr_assert_eq(r, -ETIMEDOUT, "a write that would overflow an eventfd gave %ld", r);
    cr_assert_eq(weft_read(efd, &v, sizeof v), 8);
    return (void *)1;
}

Test(descriptors, an_eventfd_waits_in_its_coroutine)
{
    FOR_EACH_BACKEND(b) {
        efd = eventfd(0, EFD_CLOEXEC);
        cr_assert_geq(efd, 0);
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, rescue_later, NULL), 0);
        cr_assert_eq(run_with_io(1, b, eventfd_waits, NULL), (void *)1);
        pthread_cancel(t);   /* asleep: its write is not needed */
        pthread_join(t, NULL);
        close(efd);
    }
}
