/* SPDX-License-Identifier: MIT */
/*
 * A soak test, run outside CI by scripts/soak: for a given time, coroutines
 * pass numbered messages through channels (buffered, unbuffered, and a pair
 * read through weft_select), pipes and socket pairs, each call with a deadline
 * drawn at random or none, while a supervisor cancels producers and consumers
 * at random and starts new ones in their place. Every message carries its
 * flow and its sequence number; the consumers check each against the next they
 * expect. At the end the producers stop, the consumers drain what was sent,
 * and the program reports per flow what was sent, received, lost, duplicated
 * or out of order. It exits 0 only if nothing was lost or duplicated and
 * every call gave an answer its documentation allows.
 *
 *   soak SECONDS [--backend uring|epoll] [--workers N]
 *
 * A timed-out or cancelled call transfers nothing (weft.h), so a producer
 * retries the message the call was for, and a byte stream's partial record
 * stays in the flow's state for the next producer or consumer to finish.
 */
#define _GNU_SOURCE
#include <weft.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum kind { K_BUFFERED, K_UNBUFFERED, K_PIPE, K_SOCKET, K_SELECT };
static const char *const kind_name[] = { "buffered channel", "unbuffered channel", "pipe", "socket pair",
                                         "select" };

/* One message; on a byte stream, one record of this size. */
struct msg {
    uint32_t flow;
    uint32_t check;   /* flow ^ seq, folded: a torn record shows */
    uint64_t seq;
};

static uint32_t check_of(uint32_t flow, uint64_t seq)
{
    return flow * 2654435761u ^ (uint32_t)seq ^ (uint32_t)(seq >> 32);
}

#define FLOWS_PER_KIND 2
#define FLOWS (5 * FLOWS_PER_KIND)

/*
 * A flow: one producer, one consumer (a select consumer serves two flows).
 * Only the flow's current producer touches the send side and only its
 * current consumer the receive side; the supervisor replaces either only
 * after joining the one before, which orders the state between them.
 */
struct flow {
    unsigned    id;
    enum kind   kind;
    weft_chan  *ch;
    int         rd, wr;         /* pipe or socket pair */
    struct flow *partner;       /* K_SELECT: the other flow of the consumer */
    /* send side */
    uint64_t    next_send;      /* the next sequence number to send */
    struct msg  out;            /* on a stream: the record being written */
    size_t      out_off;        /* bytes of it written */
    bool        out_busy;
    weft_task  *producer;
    /* receive side */
    uint64_t    next_recv;
    unsigned char in[sizeof(struct msg)];
    size_t      in_off;         /* bytes of the record being read */
    bool        ended;          /* its channel closed and drained, or its stream at its end */
    weft_task  *consumer;       /* K_SELECT: held by the first of the two flows */
    /* tallies, receive side */
    uint64_t    received, lost, duplicated, torn;
    uint64_t    timeouts, cancels;
};

static struct flow flows[FLOWS];
static _Atomic int stopping;       /* producers stop; then the channels and the writing ends
                                    * are closed, and consumers drain them to their ends */
static _Atomic uint64_t bad_answers;
static char first_bad[256];
static _Atomic int first_bad_set;

static void bad(const char *fmt, long v, unsigned flow)
{
    atomic_fetch_add(&bad_answers, 1);
    if (!atomic_exchange(&first_bad_set, 1))
        snprintf(first_bad, sizeof first_bad, fmt, v, flow);
}

/* xorshift, one state per coroutine (on its stack) */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* A deadline drawn at random: none a third of the time, else 10 us to 2 ms. */
static uint64_t random_deadline(uint64_t *rng)
{
    uint64_t r = next_rand(rng);
    if (r % 3 == 0)
        return 0;
    return weft_now() + 10000 + (r >> 8) % 2000000;
}

/* Sends f->next_send once. Returns 0 when sent, or the call's error. */
static int send_one(struct flow *f, uint64_t *rng)
{
    if (f->kind == K_PIPE || f->kind == K_SOCKET) {
        if (!f->out_busy) {
            f->out = (struct msg){ f->id, check_of(f->id, f->next_send), f->next_send };
            f->out_off = 0;
            f->out_busy = true;
        }
        while (f->out_off < sizeof f->out) {
            weft_deadline(random_deadline(rng));
            const char *p = (const char *)&f->out + f->out_off;
            size_t n = sizeof f->out - f->out_off;
            ssize_t w = f->kind == K_PIPE ? weft_write(f->wr, p, n) : weft_send(f->wr, p, n, 0);
            weft_deadline(0);
            if (w < 0)
                return (int)w;
            f->out_off += (size_t)w;
        }
        f->out_busy = false;
        return 0;
    }
    struct msg m = { f->id, check_of(f->id, f->next_send), f->next_send };
    weft_deadline(random_deadline(rng));
    int r = weft_chan_send(f->ch, &m);
    weft_deadline(0);
    return r;
}

static void *producer(void *arg)
{
    struct flow *f = arg;
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)f->id << 32) ^ f->next_send;
    while (!atomic_load(&stopping)) {
        int r = send_one(f, &rng);
        if (r == 0) {
            f->next_send++;
        } else if (r == -ETIMEDOUT) {
            continue;   /* nothing was sent: the same message again */
        } else if (r == -ECANCELED) {
            return NULL;   /* the supervisor starts another */
        } else {
            bad("a producer's call gave %ld (flow %u)", r, f->id);
            return NULL;
        }
        if (next_rand(&rng) % 64 == 0)
            weft_yield();
    }
    /* Stopping: finish a record begun on a stream, so the reader sees it whole. */
    while (f->out_busy) {
        int r = send_one(f, &rng);
        if (r == 0)
            f->next_send++;
        else if (r != -ETIMEDOUT && r != -ECANCELED) {
            bad("a producer's last call gave %ld (flow %u)", r, f->id);
            return NULL;
        } else if (r == -ECANCELED)
            return NULL;
    }
    return NULL;
}

/* A message arrived on f: checks it against what f expects next. */
static void take(struct flow *f, const struct msg *m)
{
    if (m->flow != f->id || m->check != check_of(m->flow, m->seq)) {
        f->torn++;
        return;
    }
    f->received++;
    if (m->seq == f->next_recv) {
        f->next_recv++;
    } else if (m->seq > f->next_recv) {
        f->lost += m->seq - f->next_recv;
        f->next_recv = m->seq + 1;
    } else {
        f->duplicated++;
    }
}

/* Receives one message into f. Returns 0, or the call's error. */
static int recv_one(struct flow *f, uint64_t *rng)
{
    uint64_t deadline = random_deadline(rng);
    if (f->kind == K_PIPE || f->kind == K_SOCKET) {
        weft_deadline(deadline);
        size_t n = sizeof f->in - f->in_off;
        ssize_t r = f->kind == K_PIPE ? weft_read(f->rd, f->in + f->in_off, n)
                                      : weft_recv(f->rd, f->in + f->in_off, n, 0);
        weft_deadline(0);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -EPIPE;   /* the writing end is closed: only once stopping */
        f->in_off += (size_t)r;
        if (f->in_off == sizeof f->in) {
            struct msg m;
            memcpy(&m, f->in, sizeof m);
            f->in_off = 0;
            take(f, &m);
        }
        return 0;
    }
    struct msg m;
    int r;
    weft_deadline(deadline);
    if (f->kind == K_SELECT) {
        struct msg m2;
        struct flow *fl[2] = { f, f->partner };
        weft_sel cases[2] = { { f->ended ? NULL : f->ch, WEFT_RECV, &m },
                              { f->partner->ended ? NULL : f->partner->ch, WEFT_RECV, &m2 } };
        r = weft_select(cases, 2);
        weft_deadline(0);
        if (r < 0)
            return r;
        if (!cases[r].chan)
            fl[r]->ended = true;   /* closed and drained */
        else
            take(fl[r], r == 0 ? &m : &m2);
        return f->ended && f->partner->ended ? -EPIPE : 0;
    }
    r = weft_chan_recv(f->ch, &m);
    weft_deadline(0);
    if (r == 0)
        take(f, &m);
    return r;
}

static void *consumer(void *arg)
{
    struct flow *f = arg;
    uint64_t rng = 0x2545f4914f6cdd1dull ^ ((uint64_t)f->id << 40) ^ f->next_recv;
    for (;;) {
        int r = recv_one(f, &rng);
        if (r == 0)
            continue;
        if (r == -ETIMEDOUT) {
            f->timeouts++;
            continue;
        }
        if (r == -ECANCELED)
            return NULL;
        if (r == -EPIPE && atomic_load(&stopping)) {
            f->ended = true;
            return NULL;   /* closed and drained: the end */
        }
        bad("a consumer's call gave %ld (flow %u)", r, f->id);
        return NULL;
    }
}

static int make_flow(struct flow *f, unsigned id, enum kind kind)
{
    *f = (struct flow){ .id = id, .kind = kind, .rd = -1, .wr = -1 };
    int fds[2];
    switch (kind) {
    case K_BUFFERED:   return weft_chan_create(&f->ch, sizeof(struct msg), 8);
    case K_UNBUFFERED: return weft_chan_create(&f->ch, sizeof(struct msg), 0);
    case K_SELECT:     return weft_chan_create(&f->ch, sizeof(struct msg), (id & 1) ? 0 : 4);
    case K_PIPE:
        if (pipe2(fds, O_CLOEXEC) != 0)
            return -errno;
        break;
    case K_SOCKET:
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
            return -errno;
        break;
    }
    f->rd = fds[0];
    f->wr = fds[1];
    return 0;
}

/* The flow whose `consumer` serves f: a select pair's first. */
static struct flow *consumer_flow(struct flow *f)
{
    return f->kind == K_SELECT && f->partner < f ? f->partner : f;
}

static uint64_t run_seconds;

static void *supervise(void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < FLOWS; i++) {
        int err = make_flow(&flows[i], i, (enum kind)(i / FLOWS_PER_KIND));
        if (err) {
            fprintf(stderr, "soak: flow %u: %s\n", i, strerror(-err));
            return (void *)1;
        }
    }
    for (unsigned i = 0; i < FLOWS; i++)
        if (flows[i].kind == K_SELECT)
            flows[i].partner = &flows[i ^ 1];
    for (unsigned i = 0; i < FLOWS; i++) {
        weft_spawn(&flows[i].producer, producer, &flows[i]);
        if (consumer_flow(&flows[i]) == &flows[i])
            weft_spawn(&flows[i].consumer, consumer, &flows[i]);
    }

    uint64_t rng = 0x853c49e6748fea9bull, start = weft_now(), end = start + run_seconds * 1000000000ull;
    uint64_t next_report = start + 10000000000ull;
    uint64_t cancels = 0;
    while (weft_now() < end && !atomic_load(&bad_answers)) {
        weft_sleep(1000000 + next_rand(&rng) % 20000000);   /* 1 to 21 ms */
        struct flow *f = &flows[next_rand(&rng) % FLOWS];
        if (next_rand(&rng) & 1) {   /* a producer */
            weft_cancel(f->producer);
            weft_join(f->producer, NULL);
            weft_spawn(&f->producer, producer, f);
        } else {                     /* a consumer */
            struct flow *cf = consumer_flow(f);
            weft_cancel(cf->consumer);
            weft_join(cf->consumer, NULL);
            weft_spawn(&cf->consumer, consumer, cf);
        }
        f->cancels++;
        cancels++;
        if (weft_now() >= next_report) {
            uint64_t sent = 0;
            for (unsigned i = 0; i < FLOWS; i++)
                sent += flows[i].next_send;
            printf("soak: %3lu s, %lu messages sent, %lu cancellations\n",
                   (unsigned long)((weft_now() - start) / 1000000000u), (unsigned long)sent,
                   (unsigned long)cancels);
            fflush(stdout);
            next_report += 10000000000ull;
        }
    }
    atomic_store(&stopping, 1);
    for (unsigned i = 0; i < FLOWS; i++) {
        weft_join(flows[i].producer, NULL);
        /* Its last record is whole: the consumer reads to the end. */
        if (flows[i].ch)
            weft_chan_close(flows[i].ch);
        if (flows[i].wr >= 0) {
            weft_close(flows[i].wr);
            flows[i].wr = -1;
        }
    }
    /* The consumers drain what the producers sent, then end; whatever a
     * consumer did not receive by then is counted lost. */
    for (unsigned i = 0; i < FLOWS; i++)
        if (consumer_flow(&flows[i]) == &flows[i])
            weft_join(flows[i].consumer, NULL);
    for (unsigned i = 0; i < FLOWS; i++) {
        struct flow *f = &flows[i];
        if (f->next_recv < f->next_send)
            f->lost += f->next_send - f->next_recv;
        if (f->ch)
            weft_chan_destroy(f->ch);
        if (f->rd >= 0)
            close(f->rd);
        if (f->wr >= 0)
            close(f->wr);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    weft_config cfg = { 0 };
    const char *backend = "default";
    if (argc < 2 || (run_seconds = strtoull(argv[1], NULL, 10)) == 0) {
        fprintf(stderr, "usage: soak SECONDS [--backend uring|epoll] [--workers N]\n");
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
            backend = argv[++i];
            cfg.io_backend = strcmp(backend, "uring") == 0 ? WEFT_IO_URING
                           : strcmp(backend, "epoll") == 0 ? WEFT_IO_EPOLL : -1;
        } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            cfg.workers = (unsigned)strtoul(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: soak SECONDS [--backend uring|epoll] [--workers N]\n");
            return 2;
        }
    }
    printf("soak: %lu s on %s, %u workers (0: one per CPU), %d flows\n", (unsigned long)run_seconds, backend,
           cfg.workers, FLOWS);
    fflush(stdout);
    void *failed = NULL;
    int err = weft_main(&cfg, supervise, NULL, &failed);
    if (err || failed) {
        fprintf(stderr, "soak: the runtime failed: %s\n", err ? strerror(-err) : "setup");
        return 1;
    }
    uint64_t sent = 0, received = 0, lost = 0, duplicated = 0, torn = 0, timeouts = 0, cancels = 0;
    printf("%-4s %-20s %12s %12s %6s %6s %6s %10s %8s\n", "flow", "through", "sent", "received", "lost",
           "dup", "torn", "timeouts", "cancels");
    for (unsigned i = 0; i < FLOWS; i++) {
        struct flow *f = &flows[i];
        printf("%-4u %-20s %12lu %12lu %6lu %6lu %6lu %10lu %8lu\n", i, kind_name[f->kind],
               (unsigned long)f->next_send, (unsigned long)f->received, (unsigned long)f->lost,
               (unsigned long)f->duplicated, (unsigned long)f->torn, (unsigned long)f->timeouts,
               (unsigned long)f->cancels);
        sent += f->next_send;
        received += f->received;
        lost += f->lost;
        duplicated += f->duplicated;
        torn += f->torn;
        timeouts += f->timeouts;
        cancels += f->cancels;
    }
    printf("soak: %lu sent, %lu received, %lu lost, %lu duplicated, %lu torn, %lu receive timeouts, "
           "%lu cancellations, %lu calls with a wrong answer%s%s\n",
           (unsigned long)sent, (unsigned long)received, (unsigned long)lost, (unsigned long)duplicated,
           (unsigned long)torn, (unsigned long)timeouts, (unsigned long)cancels,
           (unsigned long)atomic_load(&bad_answers), atomic_load(&bad_answers) ? ": " : "",
           atomic_load(&bad_answers) ? first_bad : "");
    bool ok = lost == 0 && duplicated == 0 && torn == 0 && received == sent && !atomic_load(&bad_answers);
    printf("soak: %s\n", ok ? "passed" : "FAILED");
    return ok ? 0 : 1;
}
