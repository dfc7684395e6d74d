/* SPDX-License-Identifier: MIT */
/* Readiness kept across calls on the epoll backend: a descriptor stays
 * registered, edge-triggered, from its first wait until weft_close, and a
 * call on a direction known drained waits for the next edge without trying
 * the system call (io/epoll.c). These tests prove what that must never cost:
 * data left readable, a reader of several left waiting, a new file under a
 * reused number missed. Each runs on both backends, where the io_uring one
 * is the reference, on 1, 2 and 4 workers. */
#define _GNU_SOURCE
#include "readiness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Far longer than any wait these tests expect: a call still waiting then
 * has missed its data. */
#define GIVE_UP_NS 10000000000u

/* Writes `len` bytes of buf to fd a little later, from a coroutine of its own. */
struct later {
    int         fd;
    const char *buf;
    size_t      len;
};

static void *write_later(void *arg)
{
    struct later *l = arg;
    weft_sleep(1000000);
    return (void *)(intptr_t)weft_write(l->fd, l->buf, l->len);
}

/* A first read of fd that has to wait, so that fd is registered and known to
 * the backend: what the tests below build on. */
static const char *first_wait(int fd, int peer)
{
    struct later l = { .fd = peer, .buf = "0", .len = 1 };
    weft_task *t;
    void *wrote;
    char c = 0;
    if (weft_spawn(&t, write_later, &l) != 0)
        return "spawn";
    ssize_t r = weft_read(fd, &c, 1);
    if (weft_join(t, &wrote) != 0 || (intptr_t)wrote != 1)
        return "the first write";
    return r == 1 && c == '0' ? NULL : "the first read";
}

/* ---- a short read is a sign of an empty socket only for streams ---------------- */

/* A datagram shorter than the buffer says nothing of the next one: three
 * queued datagrams are read one after the other, none waits. */
static void *datagrams_after_a_short_read(void *arg)
{
    struct run *run = arg;
    int sv[2];
    FAIL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) != 0);
    const char *err = first_wait(sv[0], sv[1]);
    if (err)
        return (void *)err;
    for (char c = 'a'; c <= 'c'; c++)
        FAIL_IF(send(sv[1], &c, 1, 0) != 1);
    uint64_t waits = epoll_waits(run->rt);
    weft_deadline(weft_now() + GIVE_UP_NS);
    for (char c = 'a'; c <= 'c'; c++) {
        char buf[64] = { 0 };
        FAIL_IF(weft_read(sv[0], buf, sizeof buf) != 1);
        FAIL_IF(buf[0] != c);
    }
    weft_deadline(0);
    FAIL_IF(epoll_waits(run->rt) != waits);   /* none of the three waited */
    weft_close(sv[0]);
    weft_close(sv[1]);
    return NULL;
}

Test(readiness, a_datagram_shorter_than_the_buffer_leaves_the_next_readable)
{
    run_all(0, datagrams_after_a_short_read);
}

/* A TCP read stops short at urgent data with the rest of the stream behind
 * it: a short read of a stream socket that leaves something, and no edge
 * comes after it. The rest still comes, from the check of the wait that saw
 * no edge. One worker: while everything arrives, a wait on a pipe keeps the
 * worker looking at its set, so the arrivals' edges are taken before the
 * reads, not left to wake the second one. */
static void *stream_stopped_at_urgent_data(void *arg)
{
    (void)arg;
    int sv[2], p[2];
    tcp_pair(sv);
    FAIL_IF(pipe2(p, O_CLOEXEC) != 0);
    const char *err = first_wait(sv[0], sv[1]);
    if (err)
        return (void *)err;
    FAIL_IF(send(sv[1], "ab", 2, 0) != 2);
    FAIL_IF(send(sv[1], "c", 1, MSG_OOB) != 1);
    FAIL_IF(send(sv[1], "de", 2, 0) != 2);
    char buf[64] = { 0 };
    weft_deadline(weft_now() + SETTLE_NS);
    FAIL_IF(weft_read(p[0], buf, 1) != -ETIMEDOUT);   /* all of it is in sv[0]'s queue */
    weft_deadline(weft_now() + GIVE_UP_NS);
    ssize_t got = 0;
    while (got < 4) {   /* "ab" then "de", the urgent byte taken out */
        ssize_t r = weft_read(sv[0], buf + got, sizeof buf - (size_t)got);
        FAIL_IF(r <= 0);
        got += r;
    }
    weft_deadline(0);
    FAIL_IF(got != 4 || memcmp(buf, "abde", 4) != 0);
    weft_close(sv[0]);
    weft_close(sv[1]);
    weft_close(p[0]);
    weft_close(p[1]);
    return NULL;
}

Test(readiness, a_stream_read_stopped_at_urgent_data_gets_the_rest)
{
    FOR_EACH_BACKEND(b)
        run_one(b, 1, 0, stream_stopped_at_urgent_data);
}

/* The peer's last bytes and the end of its stream, both reaped before the
 * read: the read that takes the bytes is short, and yet the socket is not
 * one to wait on, since a read at the end returns 0 at once and no edge
 * comes after it. The read after must return 0 without a wait (weft_stats'
 * epoll_waits; the wait would last until its check). One worker, the edges
 * taken while a wait on a pipe keeps the worker in its set, as above. */
static void *the_end_after_a_short_read(void *arg)
{
    struct run *run = arg;
    int sv[2], p[2];
    tcp_pair(sv);
    FAIL_IF(pipe2(p, O_CLOEXEC) != 0);
    const char *err = first_wait(sv[0], sv[1]);
    if (err)
        return (void *)err;
    FAIL_IF(send(sv[1], "abc", 3, 0) != 3);
    FAIL_IF(shutdown(sv[1], SHUT_WR) != 0);
    char buf[64];
    weft_deadline(weft_now() + SETTLE_NS);
    FAIL_IF(weft_read(p[0], buf, 1) != -ETIMEDOUT);   /* the bytes and the end are in sv[0] */
    weft_deadline(weft_now() + GIVE_UP_NS);
    FAIL_IF(weft_read(sv[0], buf, sizeof buf) != 3);
    uint64_t waits = epoll_waits(run->rt);
    FAIL_IF(weft_read(sv[0], buf, sizeof buf) != 0);
    FAIL_IF(weft_recv(sv[0], buf, sizeof buf, 0) != 0);   /* and again */
    weft_deadline(0);
    FAIL_IF(epoll_waits(run->rt) != waits);
    weft_close(sv[0]);
    weft_close(sv[1]);
    weft_close(p[0]);
    weft_close(p[1]);
    return NULL;
}

Test(readiness, the_end_of_a_stream_after_a_short_read_is_read_without_a_wait)
{
    FOR_EACH_BACKEND(b)
        run_one(b, 1, 0, the_end_after_a_short_read);
}

/* ---- one edge, several waiters ---------------------------------------------------- */

enum { READERS = 4 };

struct reader {
    int          fd;
    char         got;
    _Atomic bool waiting;
};

static void *read_one(void *arg)
{
    struct reader *r = arg;
    weft_deadline(weft_now() + GIVE_UP_NS);
    atomic_store(&r->waiting, true);
    return (void *)(intptr_t)weft_read(r->fd, &r->got, 1);
}

/* One write of four bytes makes one edge; four readers of one byte each
 * wait on the socket, and each gets its byte. */
static void *one_edge_for_several_readers(void *arg)
{
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    const char *err = first_wait(sv[0], sv[1]);
    if (err)
        return (void *)err;
    struct reader r[READERS];
    weft_task *t[READERS];
    for (int i = 0; i < READERS; i++) {
        r[i] = (struct reader){ .fd = sv[0] };
        FAIL_IF(weft_spawn(&t[i], read_one, &r[i]) != 0);
    }
    for (int i = 0; i < READERS; i++)
        while (!atomic_load(&r[i].waiting))
            weft_yield();
    weft_sleep(SETTLE_NS);
    FAIL_IF(weft_write(sv[1], "wxyz", READERS) != READERS);
    unsigned seen = 0;
    for (int i = 0; i < READERS; i++) {
        void *n;
        FAIL_IF(weft_join(t[i], &n) != 0);
        FAIL_IF((intptr_t)n != 1);   /* -ETIMEDOUT: a reader missed the edge */
        FAIL_IF(r[i].got < 'w' || r[i].got > 'z');
        seen |= 1u << (r[i].got - 'w');
    }
    FAIL_IF(seen != (1u << READERS) - 1);
    weft_close(sv[0]);
    weft_close(sv[1]);
    return NULL;
}

Test(readiness, one_edge_reaches_every_reader_waiting_on_a_socket)
{
    run_all(0, one_edge_for_several_readers);
}

/* A wait for less than readability (weft_poll for POLLPRI alone) ahead of a
 * reader: the edge of ordinary data wakes the poller first, which finds
 * nothing it looks for and passes the edge on to the reader. */
struct prio_poll {
    int          fd;
    _Atomic bool waiting;
};

static void *poll_prio(void *arg)
{
    struct prio_poll *pp = arg;
    weft_deadline(weft_now() + 2 * GIVE_UP_NS);   /* a failing test still ends */
    atomic_store(&pp->waiting, true);
    return (void *)(intptr_t)weft_poll(pp->fd, POLLPRI);   /* -ECANCELED at the end */
}

static void *a_reader_behind_a_narrower_wait(void *arg)
{
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    const char *err = first_wait(sv[0], sv[1]);
    if (err)
        return (void *)err;
    struct prio_poll pp = { .fd = sv[0] };
    weft_task *poller, *reader;
    FAIL_IF(weft_spawn(&poller, poll_prio, &pp) != 0);
    while (!atomic_load(&pp.waiting))
        weft_yield();
    weft_sleep(SETTLE_NS);   /* the poller waits first */
    struct reader r = { .fd = sv[0] };
    FAIL_IF(weft_spawn(&reader, read_one, &r) != 0);
    while (!atomic_load(&r.waiting))
        weft_yield();
    weft_sleep(SETTLE_NS);
    FAIL_IF(weft_write(sv[1], "x", 1) != 1);
    void *n;
    FAIL_IF(weft_join(reader, &n) != 0);
    FAIL_IF((intptr_t)n != 1 || r.got != 'x');   /* -ETIMEDOUT: the edge stopped at the poller */
    FAIL_IF(weft_cancel(poller) != 0);
    FAIL_IF(weft_join(poller, &n) != 0);
    FAIL_IF((intptr_t)n != -ECANCELED);
    weft_close(sv[0]);
    weft_close(sv[1]);
    return NULL;
}

Test(readiness, a_reader_behind_a_poll_for_urgent_data_gets_its_data)
{
    run_all(0, a_reader_behind_a_narrower_wait);
}

/* Urgent data that arrives while a coroutine polls for it wakes the poll:
 * the socket says POLLPRI only after its wake-up for it, which a ring's poll
 * request or an edge-triggered set would take for nothing. */
struct urgent_later {
    int fd;
};

static void *send_urgent_later(void *arg)
{
    struct urgent_later *u = arg;
    weft_sleep(SETTLE_NS);
    return send(u->fd, "!", 1, MSG_OOB) == 1 ? NULL : (void *)"the urgent send failed";
}

static void *urgent_data_wakes_a_poll(void *arg)
{
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    struct urgent_later u = { .fd = sv[1] };
    weft_task *t;
    FAIL_IF(weft_spawn(&t, send_urgent_later, &u) != 0);
    weft_deadline(weft_now() + GIVE_UP_NS);
    int r = weft_poll(sv[0], POLLPRI);
    weft_deadline(0);
    void *sent;
    FAIL_IF(weft_join(t, &sent) != 0 || sent != NULL);
    FAIL_IF(r == -ETIMEDOUT);   /* the poll never saw the urgent byte */
    FAIL_IF(r < 0 || !(r & POLLPRI));
    char c;
    FAIL_IF(weft_recv(sv[0], &c, 1, MSG_OOB) != 1 || c != '!');
    /* A deadline still ends such a wait, and a closed descriptor is -EBADF. */
    weft_deadline(weft_now() + SETTLE_NS);
    FAIL_IF(weft_poll(sv[0], POLLPRI) != -ETIMEDOUT);
    weft_deadline(0);
    weft_close(sv[0]);
    weft_close(sv[1]);
    FAIL_IF(weft_poll(sv[0], POLLPRI | POLLIN) != -EBADF);
    /* A file no epoll set can watch never has urgent data: the wait lasts
     * until the deadline, as poll(2)'s does. */
    int file = memfd_create("weft-pri", MFD_CLOEXEC);
    FAIL_IF(file < 0);
    weft_deadline(weft_now() + SETTLE_NS);
    r = weft_poll(file, POLLPRI);
    weft_deadline(0);
    close(file);
    FAIL_IF(r != -ETIMEDOUT);
    return NULL;
}

Test(readiness, urgent_data_wakes_a_poll_for_it)
{
    run_all(0, urgent_data_wakes_a_poll);
}

/* ---- numbers reused ----------------------------------------------------------------- */

/* Reads a TCP socket to its end (a short read: known drained), closes it
 * with weft_close or close(2), and makes a socket pair whose nv[0] gets its
 * number; the peer of the old socket goes to *old_peer. NULL or a message. */
static const char *drained_then_reused(bool by_weft_close, int nv[2], int *old_peer)
{
    int sv[2];
    char buf[64];
    tcp_pair(sv);
    *old_peer = sv[1];
    const char *err = first_wait(sv[0], sv[1]);
    if (err)
        return err;
    if (weft_write(sv[1], "ab", 2) != 2)
        return "the write of the old socket";
    weft_sleep(SETTLE_NS);
    if (weft_read(sv[0], buf, sizeof buf) != 2)
        return "the read of the old socket";
    if (by_weft_close ? weft_close(sv[0]) != 0 : close(sv[0]) != 0)
        return "the close";
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, nv) != 0)
        return "socketpair";
    if (nv[1] == sv[0]) {   /* it took the other end: swap them */
        nv[1] = nv[0];
        nv[0] = sv[0];
    }
    return nv[0] == sv[0] ? NULL : "the lowest free number was not reused";
}

/* After weft_close the number's new file, with data already queued, is read
 * at once (not after a wait for an edge that came before it was reused). */
static void *reused_after_weft_close(void *arg)
{
    struct run *run = arg;
    int nv[2], old_peer;
    char buf[64];
    const char *err = drained_then_reused(true, nv, &old_peer);
    if (err)
        return (void *)err;
    FAIL_IF(write(nv[1], "new", 3) != 3);
    uint64_t waits = epoll_waits(run->rt);
    weft_deadline(weft_now() + GIVE_UP_NS);
    FAIL_IF(weft_read(nv[0], buf, sizeof buf) != 3);
    weft_deadline(0);
    FAIL_IF(memcmp(buf, "new", 3) != 0);
    FAIL_IF(epoll_waits(run->rt) != waits);   /* read at once */
    weft_close(old_peer);
    weft_close(nv[0]);
    weft_close(nv[1]);
    return NULL;
}

Test(readiness, a_number_reused_after_weft_close_is_not_known_drained)
{
    run_all(0, reused_after_weft_close);
}

/* The same with close(2): the backend cannot know, and its check of the wait
 * finds the new file. The wait, if any, ends with the data. */
static void *reused_after_close(void *arg)
{
    (void)arg;
    int nv[2], old_peer;
    char buf[64];
    const char *err = drained_then_reused(false, nv, &old_peer);
    if (err)
        return (void *)err;
    struct later l = { .fd = nv[1], .buf = "late", .len = 4 };
    weft_task *t;
    FAIL_IF(weft_spawn(&t, write_later, &l) != 0);
    weft_deadline(weft_now() + GIVE_UP_NS);
    FAIL_IF(weft_read(nv[0], buf, sizeof buf) != 4);
    weft_deadline(0);
    FAIL_IF(memcmp(buf, "late", 4) != 0);
    FAIL_IF(weft_join(t, NULL) != 0);
    weft_close(old_peer);
    weft_close(nv[0]);
    weft_close(nv[1]);
    return NULL;
}

Test(readiness, a_number_reused_after_close_is_found_by_the_check)
{
    run_all(0, reused_after_close);
}

/* ---- no bytes ------------------------------------------------------------------- */

/* A read or write of no bytes returns 0 at once, as read(2) does, on an empty
 * socket, a pipe and a socket known drained alike: none of them waits. */
static void *no_bytes(void *arg)
{
    (void)arg;
    int sv[2], p[2];
    tcp_pair(sv);
    FAIL_IF(pipe2(p, O_CLOEXEC) != 0);
    const char *err = first_wait(sv[0], sv[1]);   /* sv[0]: known, and drained */
    if (err)
        return (void *)err;
    weft_deadline(weft_now() + GIVE_UP_NS);
    char c;
    struct iovec none = { &c, 0 };
    for (int i = 0; i < 2; i++) {
        int fd = i ? p[0] : sv[0];
        FAIL_IF(weft_read(fd, &c, 0) != 0);
        FAIL_IF(weft_readv(fd, &none, 1) != 0);
        FAIL_IF(weft_readv(fd, NULL, 0) != 0);
    }
    FAIL_IF(weft_write(sv[0], &c, 0) != 0);
    FAIL_IF(weft_writev(p[1], &none, 1) != 0);
    weft_deadline(0);
    weft_close(sv[0]);
    weft_close(sv[1]);
    weft_close(p[0]);
    weft_close(p[1]);
    return NULL;
}

Test(readiness, a_call_for_no_bytes_returns_0_at_once)
{
    run_all(0, no_bytes);
}
