/* Descriptor IO: a coroutine waiting on a pipe or socket suspends only
 * itself, and the calls report failures as negative errno values. */
#include "common.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const unsigned io_workers[] = { 1, 2 };
#define IO_N (sizeof(io_workers) / sizeof(io_workers[0]))

struct pingpong {
    int    in, out;      /* this side reads in and writes out */
    size_t rounds;
    bool   starts;
};

static void *player(void *arg)
{
    struct pingpong *p = arg;
    uint32_t v = 0;
    for (size_t i = 0; i < p->rounds; i++) {
        if (p->starts && weft_write(p->out, &v, sizeof v) != (ssize_t)sizeof v)
            return (void *)1;
        if (weft_read(p->in, &v, sizeof v) != (ssize_t)sizeof v)
            return (void *)2;
        v++;
        if (!p->starts && weft_write(p->out, &v, sizeof v) != (ssize_t)sizeof v)
            return (void *)1;
    }
    return (void *)(uintptr_t)v;
}

static void *pipe_pingpong(void *arg)
{
    size_t rounds = (size_t)(uintptr_t)arg;
    int ab[2], ba[2];
    if (pipe(ab) || pipe(ba))
        return (void *)100;
    struct pingpong a = { .in = ba[0], .out = ab[1], .rounds = rounds, .starts = true };
    struct pingpong b = { .in = ab[0], .out = ba[1], .rounds = rounds, .starts = false };
    weft_task *ta, *tb;
    weft_spawn(&tb, player, &b);
    weft_spawn(&ta, player, &a);
    void *ra, *rb;
    weft_join(ta, &ra);
    weft_join(tb, &rb);
    close(ab[0]);
    close(ba[0]);
    close(ba[1]);
    return ra;
}

Test(io, pipe_ping_pong_between_coroutines_keeps_every_message)
{
    for (size_t i = 0; i < IO_N; i++) {
        size_t n = scaled(2000);
        uintptr_t v = (uintptr_t)run_with(io_workers[i], pipe_pingpong, (void *)n);
        cr_assert_geq(v, n, "final counter %lu after %zu rounds", (unsigned long)v, n);
    }
}

struct xfer {
    int    fd;
    size_t bytes;
};

static void *sender(void *arg)
{
    struct xfer *x = arg;
    char buf[4096];
    size_t sent = 0;
    while (sent < x->bytes) {
        size_t n = x->bytes - sent < sizeof buf ? x->bytes - sent : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)((sent + i) & 0xff);
        ssize_t r = weft_send(x->fd, buf, n, 0);
        if (r <= 0)
            return (void *)1;
        sent += (size_t)r;
    }
    shutdown(x->fd, SHUT_WR);
    return NULL;
}

static void *receiver(void *arg)
{
    struct xfer *x = arg;
    char buf[3000];
    size_t got = 0;
    for (;;) {
        ssize_t r = weft_recv(x->fd, buf, sizeof buf, 0);
        if (r < 0)
            return (void *)1;
        if (r == 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != (char)((got + (size_t)i) & 0xff))
                return (void *)2;
        got += (size_t)r;
    }
    return (void *)(uintptr_t)(got == x->bytes ? 0 : 3);
}

static void *socketpair_transfer(void *arg)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return (void *)100;
    struct xfer s = { sv[0], (size_t)(uintptr_t)arg }, r = { sv[1], (size_t)(uintptr_t)arg };
    weft_task *ts, *tr;
    void *rs, *rr;
    weft_spawn(&tr, receiver, &r);
    weft_spawn(&ts, sender, &s);
    weft_join(ts, &rs);
    weft_join(tr, &rr);
    close(sv[0]);
    close(sv[1]);
    return (void *)((uintptr_t)rs | (uintptr_t)rr << 4);
}

Test(io, a_socketpair_carries_megabytes_in_order)
{
    for (size_t i = 0; i < IO_N; i++)
        cr_assert_eq((uintptr_t)run_with(io_workers[i], socketpair_transfer, (void *)(uintptr_t)(4u << 20)), 0);
}

static void *bad_fds(void *arg)
{
    char c = 0;
    uintptr_t bad = 0;
    bad |= (weft_read(-1, &c, 1) != -EBADF) << 0;
    bad |= (weft_write(-1, &c, 1) != -EBADF) << 1;
    bad |= (weft_recv(-1, &c, 1, 0) != -EBADF) << 2;
    bad |= (weft_send(-1, &c, 1, 0) != -EBADF) << 3;
    bad |= (weft_poll(-1, 1) != -EBADF) << 4;
    return (void *)bad;
}

Test(io, bad_descriptors_give_ebadf)
{
    for (size_t i = 0; i < IO_N; i++)
        cr_assert_eq((uintptr_t)run_with(io_workers[i], bad_fds, NULL), 0);
    cr_assert_eq(weft_read(-1, NULL, 0), -EBADF);
}

static void *send_to_closed_peer(void *arg)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return (void *)100;
    close(sv[1]);
    char c = 'x';
    ssize_t r = weft_send(sv[0], &c, 1, 0);
    close(sv[0]);
    return (void *)(uintptr_t)(r == -EPIPE || r == -ECONNRESET ? 0 : 1);
}

Test(io, sending_to_a_closed_peer_fails_without_sigpipe)
{
    for (size_t i = 0; i < IO_N; i++)
        cr_assert_eq((uintptr_t)run_with(io_workers[i], send_to_closed_peer, NULL), 0);
}

static void *compute(void *arg)
{
    _Atomic int *done = arg;
    uint64_t x = 0;
    while (!atomic_load(done)) {
        x += 1;
        weft_yield();
    }
    return (void *)(uintptr_t)(x > 0);
}

static void *io_beside_compute(void *arg)
{
    _Atomic int done = 0;
    weft_task *c;
    weft_spawn(&c, compute, &done);
    void *r = pipe_pingpong((void *)(uintptr_t)100);
    atomic_store(&done, 1);
    void *cr;
    weft_join(c, &cr);
    return (void *)(uintptr_t)((uintptr_t)r >= 100 && cr == (void *)1);
}

Test(io, a_coroutine_does_io_while_another_on_its_worker_computes)
{
    cr_assert_eq((uintptr_t)run_with(1, io_beside_compute, NULL), 1);
}
