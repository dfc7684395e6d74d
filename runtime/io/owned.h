/* SPDX-License-Identifier: MIT */
/*
 * Descriptors handed to weft (weft_own): what io/owned.c shares with the
 * calls that read (io/io.c), weft_close (io/backend.c) and the backend that
 * arms their receives (io/uring.c). The protocol is at the top of owned.c.
 */
#ifndef WEFT_OWNED_H
#define WEFT_OWNED_H

#include "backend.h"
#include "sync/sync.h"

/* One descriptor handed over. Fields under `lock` but where said. */
struct weft__owned {
    _Atomic uint32_t     lock;       /* weft__ilock */
    _Atomic uint32_t     refs;       /* the table's, each reader's in a call, the armed receive's */
    int                  fd;         /* set once */
    bool                 closed;     /* weft_close took it out of the table */
    bool                 eof;        /* the stream ended (after the queued bytes) */
    bool                 stopping;   /* a cancel of the armed receive is on its way */
    bool                 usual;      /* the ring failed a receive for its own reasons: the usual calls
                                      * from now on (io/owned.c, weft__owned_received) */
    int32_t              err;        /* the socket's error, for the reader after the queued bytes */
    bool                 reading;    /* a reader reads the socket itself: a read ahead, or a
                                      * usual call of any thread (io/owned.c, step 1) */
    unsigned             polling;    /* polls of the socket itself under way: no receive armed
                                      * and no read ahead then (io/owned.c, step 6) */
    struct weft__worker *armed;      /* whose ring has the receive armed; NULL: none */
    uint64_t             armed_id;   /* its identity there; 0 until the arming reader records it */
    uint64_t             arm_seq;    /* counts the arms */
    char                *q;          /* the queue: len bytes from q + head, in cap */
    size_t               head, len, cap;
    struct weft__wlist   readers;    /* readers waiting (owned.c's struct reader), in the order they came */
    struct weft__ioreq   req;        /* the armed receive's place in its ring's table (io/uringown.c) */
};

/* Set once some descriptor has been handed over: until then the calls
 * that read look no further. */
extern _Atomic bool weft__owned_some;

static inline bool weft__owned_maybe(void)
{
    /* Relaxed: a read that misses the store reads a descriptor whose
     * weft_own() it is not ordered after, as it would race any other change
     * of another thread's; the caller of weft_own() sees its own store. */
    return atomic_load_explicit(&weft__owned_some, memory_order_relaxed);
}

/* A read (READ, RECV, READV, RECVMSG) of a descriptor handed over, served
 * from its queue, or read from the socket under the record's claim: returns
 * the call's result. *usual: fd is not handed over, or the flags are the
 * socket's own (MSG_OOB, MSG_ERRQUEUE): make the usual call; or, with a
 * positive result, a MSG_WAITALL that the queue began and no receive can go
 * on with: read the rest (which comes here again). Any thread. */
ssize_t weft__owned_io(const struct weft__io_op *a, bool *usual);
/* weft_poll of a descriptor handed over, for events with POLLIN: returns
 * the revents or a negative errno. *usual: poll the socket itself; then, if
 * *held is set, the record counts that poll, and weft__owned_poll_done(*held)
 * must follow it. Any thread. */
int weft__owned_poll(int fd, short events, bool *usual, struct weft__owned **held);
void weft__owned_poll_done(struct weft__owned *o);
/* weft_close of fd (io/backend.c), before it counts the rings that may
 * have requests on fd: _begin marks fd's record closed, so that its readers
 * get -EBADF and none arms a receive again, waits for an arm under way to be
 * counted on its ring, and asks the ring to cancel it; returns the record,
 * or NULL where fd is not handed over. _end: the close is done (the record
 * leaves the table), or failed having closed nothing (closed: false; the
 * record is open again). Any thread. */
struct weft__owned *weft__owned_close_begin(int fd);
void weft__owned_close_end(struct weft__owned *o, bool closed);
/* In a child of fork(): every record dropped. Only the fork handler. */
void weft__owned_fork_child(void);

/* The ring's owner (or the monitor for it): a completion of o's armed
 * receive, res bytes at data (or the end, or an error), and whether more
 * will come. Returns whether the receive should be cancelled (its queue is
 * full), and in *woke whether a reader became runnable. The last completion
 * drops the receive's reference to o. */
bool weft__owned_received(struct weft__owned *o, int32_t res, const void *data, bool more, bool *woke);
/* The ring holding o's receive is gone (weft_rt_destroy): o is disarmed,
 * and the receive's reference dropped. */
void weft__owned_dropped(struct weft__owned *o);

/* Any thread, holding o's lock: asks w's ring to cancel the receive id. */
static inline int weft__owned_stop(struct weft__worker *w, uint64_t id)
{
    return w->io->own_stop(w, id);
}

#endif /* WEFT_OWNED_H */
