/* SPDX-License-Identifier: MIT */
/*
 * A key-value server that speaks enough of redis's protocol (RESP2) for
 * redis-cli and redis-benchmark: PING, ECHO, GET, SET (EX, PX, NX, XX,
 * KEEPTTL), DEL, EXISTS, INCR, INCRBY, DECR, DECRBY, MGET, MSET, EXPIRE, TTL,
 * DBSIZE, FLUSHALL, QUIT and CONFIG GET. Requests come as arrays of bulk
 * strings or as inline commands (resp.c parses both).
 *
 * One coroutine per connection, written as plain blocking code on
 * weft_recv and weft_send. Every request already received is answered
 * before the next receive, the replies gathered in one buffer and sent
 * together: a client that pipelines gets one send per batch, not one per
 * reply. A malformed request gets "-ERR Protocol error: ..." and the
 * connection is closed, as redis does.
 *
 * The keys live in one map shared by every worker, cut into SHARDS shards by
 * the keys' hash, each a chained hash table under its own weft_mutex, so
 * that workers serving different keys seldom meet on a lock. A lock is held
 * only for the map operation and a copy: never across a send or a receive.
 *
 * A key with an expiry vanishes on time: a command that meets it after its
 * time treats it as absent and frees it; a sweeping coroutine frees the
 * others a few buckets at a time, so that memory comes back without a long
 * hold on any lock; and DBSIZE counts only live keys.
 *
 * What a client can make the server hold is bounded: a request by the
 * parser's limits (resp.h), a request that is not all in yet by ten seconds
 * (--timeout), and replies by as long to take them (the send's deadline),
 * after which the connection is dropped. A client idle between requests is
 * kept, as redis keeps it.
 *
 * SIGINT or SIGTERM stops it: the accept loop and the sweeper are cancelled,
 * every open connection is shut down, and the runtime ends once every
 * coroutine has returned.
 *
 *   kv_server [--port N] [--workers N] [--timeout S]   serve 127.0.0.1:N (default 6379)
 */
#define _GNU_SOURCE
#include <weft.h>

#include "cli.h"
#include "resp.h"

#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define SHARD_BITS   6
#define SHARDS       (1u << SHARD_BITS)
#define BUCKETS_MIN  16                    /* a shard's table never has fewer */
#define SWEEP_NS     (100ull * 1000000)    /* how often the sweeper runs */
#define SWEEP_BUCKETS 256                  /* buckets of a shard looked at per run */
#define IN_START     (16 * 1024)           /* a connection's receive buffer, at first */
#define OUT_START    (16 * 1024)           /* its reply buffer, at first */
#define OUT_FLUSH    (64 * 1024)           /* replies gathered past this are sent */

/* How long a request begun has to come in whole, and a batch of replies to
 * be taken (--timeout); set before the runtime starts. */
static uint64_t timeout_ns = 10ull * 1000000000;

/* ---- the map -------------------------------------------------------------- */

/* A key and its value, in one allocation. */
struct entry {
    struct entry *next;      /* the next in its bucket's chain */
    uint64_t      hash;
    uint64_t      expires;   /* the weft_now() time it vanishes at; 0: never */
    uint32_t      klen, vlen;
    char          data[];    /* the key, then the value */
};

struct shard {
    weft_mutex     lock;       /* guards every field below and the entries */
    struct entry **buckets;    /* mask + 1 chains */
    size_t         mask;
    size_t         count;      /* entries, expired ones not yet freed included */
    size_t         expiring;   /* entries with an expiry */
    size_t         cursor;     /* the next bucket the sweeper looks at */
};

static struct shard shards[SHARDS];

/* A shard's lock is taken only by coroutines that have no deadline and are
 * never cancelled, so it cannot fail. */
static struct shard *shard_lock(uint64_t hash)
{
    struct shard *sh = &shards[hash >> (64 - SHARD_BITS)];
    int err = weft_mutex_lock(&sh->lock);
    if (err) {
        fprintf(stderr, "kv_server: a shard's lock failed (%s), which cannot happen\n", strerror(-err));
        abort();
    }
    return sh;
}

static void shard_unlock(struct shard *sh)
{
    weft_mutex_unlock(&sh->lock);
}

/* FNV-1a, then a finalizer that spreads it over all 64 bits: the top bits
 * pick the shard, the bottom ones the bucket. */
static uint64_t hash_key(const struct resp_arg *key)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < key->n; i++)
        h = (h ^ (unsigned char)key->p[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static bool shard_init(struct shard *sh)
{
    sh->lock = (weft_mutex)WEFT_MUTEX_INIT;
    sh->buckets = calloc(BUCKETS_MIN, sizeof *sh->buckets);
    sh->mask = BUCKETS_MIN - 1;
    sh->count = sh->expiring = sh->cursor = 0;
    return sh->buckets != NULL;
}

/* Frees every entry; the table shrinks back to its least size when it can.
 * Holds sh->lock, or no coroutine runs. */
static void shard_clear(struct shard *sh)
{
    for (size_t b = 0; b <= sh->mask; b++)
        for (struct entry *e = sh->buckets[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    struct entry **small = sh->mask + 1 > BUCKETS_MIN ? calloc(BUCKETS_MIN, sizeof *small) : NULL;
    if (small) {
        free(sh->buckets);
        sh->buckets = small;
        sh->mask = BUCKETS_MIN - 1;
    } else {
        memset(sh->buckets, 0, (sh->mask + 1) * sizeof *sh->buckets);
    }
    sh->count = sh->expiring = sh->cursor = 0;
}

static bool expired(const struct entry *e, uint64_t now)
{
    return e->expires != 0 && e->expires <= now;
}

/* The link that points to key's entry in sh, or the null link at the end of
 * its chain. Holds sh->lock. */
static struct entry **slot_of(struct shard *sh, uint64_t hash, const struct resp_arg *key)
{
    struct entry **slot = &sh->buckets[hash & sh->mask];
    for (struct entry *e; (e = *slot); slot = &e->next)
        if (e->hash == hash && e->klen == key->n && memcmp(e->data, key->p, key->n) == 0)
            break;
    return slot;
}

/* Takes the entry *slot out of its chain and frees it. Holds sh->lock. */
static void unlink_entry(struct shard *sh, struct entry **slot)
{
    struct entry *e = *slot;
    *slot = e->next;
    sh->count--;
    sh->expiring -= e->expires != 0;
    free(e);
}

/* key's live entry, or NULL; one found expired is freed. Holds sh->lock. */
static struct entry *lookup(struct shard *sh, uint64_t hash, const struct resp_arg *key, uint64_t now)
{
    struct entry **slot = slot_of(sh, hash, key);
    if (*slot && expired(*slot, now)) {
        unlink_entry(sh, slot);
        return NULL;
    }
    return *slot;
}

static void set_expiry(struct shard *sh, struct entry *e, uint64_t expires)
{
    sh->expiring += (expires != 0) - (e->expires != 0);
    e->expires = expires;
}

/* Doubles the table once it holds more entries than buckets. A table that
 * cannot grow (no memory) keeps working with longer chains. Holds sh->lock. */
static void maybe_grow(struct shard *sh)
{
    if (sh->count <= sh->mask + 1)
        return;
    size_t mask = sh->mask * 2 + 1;
    struct entry **buckets = calloc(mask + 1, sizeof *buckets);
    if (!buckets)
        return;
    for (size_t b = 0; b <= sh->mask; b++)
        for (struct entry *e = sh->buckets[b], *next; e; e = next) {
            next = e->next;
            e->next = buckets[e->hash & mask];
            buckets[e->hash & mask] = e;
        }
    free(sh->buckets);
    sh->buckets = buckets;
    sh->mask = mask;
}

/* Sets key to value[0, vlen) with the expiry given (0: none). Returns the
 * entry, or NULL with nothing changed when there is no memory. Holds
 * sh->lock. */
static struct entry *store(struct shard *sh, uint64_t hash, const struct resp_arg *key,
                           const char *value, size_t vlen, uint64_t expires)
{
    struct entry **slot = slot_of(sh, hash, key), *old = *slot;
    if (old && old->vlen == vlen) {   /* the same size: overwrite in place */
        memcpy(old->data + old->klen, value, vlen);
        set_expiry(sh, old, expires);
        return old;
    }
    struct entry *e = malloc(sizeof *e + key->n + vlen);
    if (!e)
        return NULL;
    *e = (struct entry){ .hash = hash, .expires = expires, .klen = (uint32_t)key->n,
                         .vlen = (uint32_t)vlen };
    memcpy(e->data, key->p, key->n);
    memcpy(e->data + key->n, value, vlen);
    if (old) {
        e->next = old->next;
        sh->expiring -= old->expires != 0;
        free(old);
    } else {
        e->next = NULL;
        sh->count++;
    }
    *slot = e;
    sh->expiring += expires != 0;
    if (!old)
        maybe_grow(sh);
    return e;
}

/* Frees the expired entries of `buckets` buckets from the sweeper's cursor
 * on (all of them if buckets is SIZE_MAX). Holds sh->lock. */
static void sweep(struct shard *sh, uint64_t now, size_t buckets)
{
    for (size_t i = 0; i <= sh->mask && i < buckets && sh->expiring; i++) {
        struct entry **slot = &sh->buckets[sh->cursor++ & sh->mask];
        while (*slot) {
            if (expired(*slot, now))
                unlink_entry(sh, slot);
            else
                slot = &(*slot)->next;
        }
    }
}

/* A coroutine: every SWEEP_NS, a few buckets of each shard that holds keys
 * with an expiry. Ends when cancelled. */
static void *sweeper(void *arg)
{
    while (weft_sleep(SWEEP_NS) == 0) {
        for (unsigned s = 0; s < SHARDS; s++) {
            if (weft_mutex_lock(&shards[s].lock) != 0)
                return NULL;   /* cancelled */
            sweep(&shards[s], weft_now(), SWEEP_BUCKETS);
            shard_unlock(&shards[s]);
        }
    }
    return NULL;
}

/* ---- replies -------------------------------------------------------------- */

/* A connection: its buffers and how it goes on. Owned by its coroutine. */
struct conn {
    struct cli_conn link;        /* on the list a stop walks */
    char           *in;          /* requests received, [0, in_len) */
    size_t          in_len, in_cap;
    char           *out;         /* replies not yet sent, [0, out_len) */
    size_t          out_len, out_cap;
    bool            quit;        /* close once the replies are sent */
    bool            broken;      /* close now: a send failed, or no memory */
};

/* Room for n more bytes of replies; false (and the connection broken) if
 * there is no memory for them. */
static bool out_reserve(struct conn *c, size_t n)
{
    if (c->out_cap - c->out_len >= n)
        return true;
    size_t cap = c->out_cap;
    while (cap - c->out_len < n)
        cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p) {
        c->broken = true;
        return false;
    }
    c->out = p;
    c->out_cap = cap;
    return true;
}

static void out_put(struct conn *c, const void *p, size_t n)
{
    if (out_reserve(c, n)) {
        memcpy(c->out + c->out_len, p, n);
        c->out_len += n;
    }
}

#define REPLY(c, lit) out_put((c), lit, sizeof lit - 1)

/* "<prefix><n>\r\n": an integer, or the header of a bulk string or array. */
static void reply_number(struct conn *c, char prefix, long long n)
{
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%c%lld\r\n", prefix, n);
    out_put(c, buf, (size_t)len);
}

static void reply_bulk(struct conn *c, const char *p, size_t n)
{
    reply_number(c, '$', (long long)n);
    if (out_reserve(c, n + 2)) {
        memcpy(c->out + c->out_len, p, n);
        memcpy(c->out + c->out_len + n, "\r\n", 2);
        c->out_len += n + 2;
    }
}

/* An error reply, "-" and the text (line ends in it become spaces). */
static void reply_error(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_error(struct conn *c, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + 1, sizeof buf - 3, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof buf - 4)
        n = (int)sizeof buf - 4;
    buf[0] = '-';
    for (int i = 1; i <= n; i++)
        if (buf[i] == '\r' || buf[i] == '\n')
            buf[i] = ' ';
    memcpy(buf + 1 + n, "\r\n", 2);
    out_put(c, buf, (size_t)n + 3);
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = weft_send(fd, p, n, 0);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Sends the replies gathered, within timeout_ns: a client that does not take
 * them by then is dropped, so it cannot hold the buffer for ever. */
static void flush(struct conn *c)
{
    if (c->out_len == 0 || c->broken)
        return;
    weft_deadline(weft_now() + timeout_ns);
    c->broken = !send_all(c->link.fd, c->out, c->out_len);
    weft_deadline(0);
    c->out_len = 0;
    if (c->out_cap > OUT_FLUSH) {   /* a large reply is over: give its memory back */
        char *p = realloc(c->out, OUT_START);
        if (p) {
            c->out = p;
            c->out_cap = OUT_START;
        }
    }
}

/* ---- commands ------------------------------------------------------------- */

static bool arg_is(const struct resp_arg *a, const char *lit)
{
    return a->n == strlen(lit) && strncasecmp(a->p, lit, a->n) == 0;
}

static void reply_not_integer(struct conn *c)
{
    REPLY(c, "-ERR value is not an integer or out of range\r\n");
}

/* An expiry `amount` units of `unit_ns` from now, as a weft_now() time, in
 * *expires; false if it is not a number, not above zero, or too far. */
static bool expiry_of(struct conn *c, const struct resp_arg *amount, uint64_t unit_ns, const char *cmd,
                      uint64_t *expires)
{
    long long v;
    if (!resp_ll(amount->p, amount->n, &v)) {
        reply_not_integer(c);
        return false;
    }
    uint64_t now = weft_now();
    if (v <= 0 || (uint64_t)v > (INT64_MAX - now) / unit_ns) {
        reply_error(c, "ERR invalid expire time in '%s' command", cmd);
        return false;
    }
    *expires = now + (uint64_t)v * unit_ns;
    return true;
}

static void cmd_ping(struct conn *c, struct resp_arg *argv, int argc)
{
    if (argc > 2)
        REPLY(c, "-ERR wrong number of arguments for 'ping' command\r\n");
    else if (argc == 2)
        reply_bulk(c, argv[1].p, argv[1].n);
    else
        REPLY(c, "+PONG\r\n");
}

static void cmd_echo(struct conn *c, struct resp_arg *argv, int argc)
{
    reply_bulk(c, argv[1].p, argv[1].n);
}

static void cmd_get(struct conn *c, struct resp_arg *argv, int argc)
{
    uint64_t h = hash_key(&argv[1]);
    struct shard *sh = shard_lock(h);
    struct entry *e = lookup(sh, h, &argv[1], weft_now());
    if (e)
        reply_bulk(c, e->data + e->klen, e->vlen);   /* copied under the lock */
    else
        REPLY(c, "$-1\r\n");
    shard_unlock(sh);
}

/* SET key value [NX | XX] [EX seconds | PX milliseconds | KEEPTTL] */
static void cmd_set(struct conn *c, struct resp_arg *argv, int argc)
{
    bool nx = false, xx = false, keepttl = false;
    const struct resp_arg *ex = NULL, *px = NULL;
    for (int i = 3; i < argc; i++) {
        bool has_value = i + 1 < argc;
        if (arg_is(&argv[i], "nx") && !xx)
            nx = true;
        else if (arg_is(&argv[i], "xx") && !nx)
            xx = true;
        else if (arg_is(&argv[i], "keepttl") && !ex && !px)
            keepttl = true;
        else if (arg_is(&argv[i], "ex") && has_value && !px && !keepttl)
            ex = &argv[++i];
        else if (arg_is(&argv[i], "px") && has_value && !ex && !keepttl)
            px = &argv[++i];
        else {
            REPLY(c, "-ERR syntax error\r\n");
            return;
        }
    }
    uint64_t expires = 0;
    if ((ex && !expiry_of(c, ex, 1000000000ull, "set", &expires)) ||
        (px && !expiry_of(c, px, 1000000ull, "set", &expires)))
        return;
    uint64_t h = hash_key(&argv[1]);
    struct shard *sh = shard_lock(h);
    struct entry *e = lookup(sh, h, &argv[1], weft_now());
    if ((nx && e) || (xx && !e)) {
        shard_unlock(sh);
        REPLY(c, "$-1\r\n");
        return;
    }
    if (keepttl && e)
        expires = e->expires;
    e = store(sh, h, &argv[1], argv[2].p, argv[2].n, expires);
    shard_unlock(sh);
    if (e)
        REPLY(c, "+OK\r\n");
    else
        REPLY(c, "-ERR out of memory\r\n");
}

/* DEL and EXISTS: how many of the keys named are there (a key named twice
 * counts twice for EXISTS, once for DEL, which has removed it by then). */
static void count_keys(struct conn *c, struct resp_arg *argv, int argc, bool remove)
{
    long long n = 0;
    for (int i = 1; i < argc; i++) {
        uint64_t h = hash_key(&argv[i]);
        struct shard *sh = shard_lock(h);
        if (lookup(sh, h, &argv[i], weft_now())) {
            n++;
            if (remove)
                unlink_entry(sh, slot_of(sh, h, &argv[i]));
        }
        shard_unlock(sh);
    }
    reply_number(c, ':', n);
}

static void cmd_del(struct conn *c, struct resp_arg *argv, int argc) { count_keys(c, argv, argc, true); }
static void cmd_exists(struct conn *c, struct resp_arg *argv, int argc) { count_keys(c, argv, argc, false); }

/* INCR and the like: the value as a number, plus by; the expiry is kept. */
static void incr_by(struct conn *c, const struct resp_arg *key, long long by)
{
    uint64_t h = hash_key(key);
    struct shard *sh = shard_lock(h);
    struct entry *e = lookup(sh, h, key, weft_now());
    long long v = 0;
    if (e && !resp_ll(e->data + e->klen, e->vlen, &v)) {
        shard_unlock(sh);
        reply_not_integer(c);
        return;
    }
    if ((by > 0 && v > LLONG_MAX - by) || (by < 0 && v < LLONG_MIN - by)) {
        shard_unlock(sh);
        REPLY(c, "-ERR increment or decrement would overflow\r\n");
        return;
    }
    v += by;
    char text[24];
    int n = snprintf(text, sizeof text, "%lld", v);
    e = store(sh, h, key, text, (size_t)n, e ? e->expires : 0);
    shard_unlock(sh);
    if (e)
        reply_number(c, ':', v);
    else
        REPLY(c, "-ERR out of memory\r\n");
}

static void cmd_incr(struct conn *c, struct resp_arg *argv, int argc) { incr_by(c, &argv[1], 1); }
static void cmd_decr(struct conn *c, struct resp_arg *argv, int argc) { incr_by(c, &argv[1], -1); }

static void incr_by_arg(struct conn *c, struct resp_arg *argv, bool negate)
{
    long long by;
    if (!resp_ll(argv[2].p, argv[2].n, &by) || (negate && by == LLONG_MIN)) {
        reply_not_integer(c);
        return;
    }
    incr_by(c, &argv[1], negate ? -by : by);
}

static void cmd_incrby(struct conn *c, struct resp_arg *argv, int argc) { incr_by_arg(c, argv, false); }
static void cmd_decrby(struct conn *c, struct resp_arg *argv, int argc) { incr_by_arg(c, argv, true); }

/*
 * Each key on its own, under its own shard's lock, and the replies sent as
 * they outgrow OUT_FLUSH, so that memory stays bounded however many large
 * values are asked for. So, unlike redis's, an MGET is not atomic: it may see
 * some of the keys of an MSET that runs at the same time and not others.
 */
static void cmd_mget(struct conn *c, struct resp_arg *argv, int argc)
{
    reply_number(c, '*', argc - 1);
    for (int i = 1; i < argc; i++) {
        cmd_get(c, argv + i - 1, 2);
        if (c->out_len >= OUT_FLUSH)
            flush(c);
    }
}

/* MSET key value [key value ...]: atomic, as in redis. The shards of all the
 * keys are locked together, in their order, so two MSETs cannot deadlock. */
static void cmd_mset(struct conn *c, struct resp_arg *argv, int argc)
{
    if (argc % 2 == 0) {
        REPLY(c, "-ERR wrong number of arguments for 'mset' command\r\n");
        return;
    }
    uint64_t locked = 0;
    for (int i = 1; i < argc; i += 2)
        locked |= 1ull << (hash_key(&argv[i]) >> (64 - SHARD_BITS));
    for (unsigned s = 0; s < SHARDS; s++)
        if (locked >> s & 1)
            shard_lock((uint64_t)s << (64 - SHARD_BITS));
    bool ok = true;
    for (int i = 1; i < argc; i += 2) {
        uint64_t h = hash_key(&argv[i]);
        ok &= store(&shards[h >> (64 - SHARD_BITS)], h, &argv[i], argv[i + 1].p, argv[i + 1].n, 0) != NULL;
    }
    for (unsigned s = 0; s < SHARDS; s++)
        if (locked >> s & 1)
            shard_unlock(&shards[s]);
    if (ok)
        REPLY(c, "+OK\r\n");
    else
        REPLY(c, "-ERR out of memory\r\n");
}

/* EXPIRE key seconds: 1 if the key is there (a time not above zero deletes
 * it), 0 if not. */
static void cmd_expire(struct conn *c, struct resp_arg *argv, int argc)
{
    if (argc > 3) {
        reply_error(c, "ERR unsupported option '%.*s'", (int)(argv[3].n > 64 ? 64 : argv[3].n),
                    argv[3].p);
        return;
    }
    long long seconds;
    uint64_t expires = 0;
    if (!resp_ll(argv[2].p, argv[2].n, &seconds)) {
        reply_not_integer(c);
        return;
    }
    if (seconds > 0 && !expiry_of(c, &argv[2], 1000000000ull, "expire", &expires))
        return;
    uint64_t h = hash_key(&argv[1]);
    struct shard *sh = shard_lock(h);
    struct entry *e = lookup(sh, h, &argv[1], weft_now());
    if (e && seconds <= 0)
        unlink_entry(sh, slot_of(sh, h, &argv[1]));
    else if (e)
        set_expiry(sh, e, expires);
    shard_unlock(sh);
    reply_number(c, ':', e != NULL);
}

/* TTL key: the seconds left, rounded; -1 without an expiry, -2 if absent. */
static void cmd_ttl(struct conn *c, struct resp_arg *argv, int argc)
{
    uint64_t h = hash_key(&argv[1]), now = weft_now();
    struct shard *sh = shard_lock(h);
    struct entry *e = lookup(sh, h, &argv[1], now);
    long long ttl = !e ? -2 : !e->expires ? -1 : (long long)((e->expires - now + 500000000) / 1000000000);
    shard_unlock(sh);
    reply_number(c, ':', ttl);
}

/* The live keys: the expired ones of every shard that has keys with an
 * expiry are freed first, so the count is exact. */
static void cmd_dbsize(struct conn *c, struct resp_arg *argv, int argc)
{
    long long n = 0;
    for (unsigned s = 0; s < SHARDS; s++) {
        struct shard *sh = shard_lock((uint64_t)s << (64 - SHARD_BITS));
        sweep(sh, weft_now(), SIZE_MAX);
        n += (long long)sh->count;
        shard_unlock(sh);
    }
    reply_number(c, ':', n);
}

static void cmd_flushall(struct conn *c, struct resp_arg *argv, int argc)
{
    if (argc > 2 || (argc == 2 && !arg_is(&argv[1], "async") && !arg_is(&argv[1], "sync"))) {
        REPLY(c, "-ERR syntax error\r\n");
        return;
    }
    for (unsigned s = 0; s < SHARDS; s++) {
        struct shard *sh = shard_lock((uint64_t)s << (64 - SHARD_BITS));
        shard_clear(sh);
        shard_unlock(sh);
    }
    REPLY(c, "+OK\r\n");
}

static void cmd_quit(struct conn *c, struct resp_arg *argv, int argc)
{
    REPLY(c, "+OK\r\n");
    c->quit = true;
}

/*
 * CONFIG GET pattern...: the parameters that match a glob pattern, as pairs
 * of name and value. redis-benchmark asks for save and appendonly before it
 * starts; the values are those of a redis that keeps nothing on disk, as
 * this server keeps nothing.
 */
static void cmd_config(struct conn *c, struct resp_arg *argv, int argc)
{
    static const char *const params[][2] = { { "save", "" }, { "appendonly", "no" } };
    enum { NPARAMS = sizeof params / sizeof params[0] };
    if (!arg_is(&argv[1], "get")) {
        reply_error(c, "ERR unknown subcommand '%.*s'. Try CONFIG HELP.",
                    (int)(argv[1].n > 64 ? 64 : argv[1].n), argv[1].p);
        return;
    }
    if (argc < 3) {
        REPLY(c, "-ERR wrong number of arguments for 'config|get' command\r\n");
        return;
    }
    bool match[NPARAMS] = { false };
    int n = 0;
    for (int i = 2; i < argc; i++) {
        char pattern[128];
        if (argv[i].n >= sizeof pattern)
            continue;   /* no parameter name is that long */
        memcpy(pattern, argv[i].p, argv[i].n);
        pattern[argv[i].n] = '\0';
        for (int k = 0; k < NPARAMS; k++)
            if (!match[k] && fnmatch(pattern, params[k][0], FNM_CASEFOLD) == 0) {
                match[k] = true;
                n++;
            }
    }
    reply_number(c, '*', 2 * n);
    for (int k = 0; k < NPARAMS; k++)
        if (match[k]) {
            reply_bulk(c, params[k][0], strlen(params[k][0]));
            reply_bulk(c, params[k][1], strlen(params[k][1]));
        }
}

static const struct command {
    const char *name;
    int         arity;   /* as redis counts: n exactly n arguments, -n at least n */
    void      (*run)(struct conn *c, struct resp_arg *argv, int argc);
} commands[] = {   /* the commonest first: they are looked for in this order */
    { "get", 2, cmd_get },         { "set", -3, cmd_set },       { "ping", -1, cmd_ping },
    { "incr", 2, cmd_incr },       { "mget", -2, cmd_mget },     { "mset", -3, cmd_mset },
    { "del", -2, cmd_del },        { "exists", -2, cmd_exists }, { "decr", 2, cmd_decr },
    { "incrby", 3, cmd_incrby },   { "decrby", 3, cmd_decrby },  { "expire", -3, cmd_expire },
    { "ttl", 2, cmd_ttl },         { "echo", 2, cmd_echo },      { "dbsize", 1, cmd_dbsize },
    { "flushall", -1, cmd_flushall }, { "config", -2, cmd_config }, { "quit", -1, cmd_quit },
};

/* Appends to buf[*len, cap) the text of a, at most max bytes, line ends as
 * spaces. */
static void add_shown(char *buf, size_t *len, size_t cap, const struct resp_arg *a, size_t max)
{
    for (size_t i = 0; i < a->n && i < max && *len + 1 < cap; i++)
        buf[(*len)++] = a->p[i] == '\r' || a->p[i] == '\n' ? ' ' : a->p[i];
    buf[*len] = '\0';
}

static void reply_unknown(struct conn *c, struct resp_arg *argv, int argc)
{
    char name[130], args[140];
    size_t nlen = 0, alen = 0;
    add_shown(name, &nlen, sizeof name, &argv[0], 128);
    args[0] = '\0';
    for (int i = 1; i < argc && alen < 128; i++) {   /* as redis: the first 128 bytes or so */
        add_shown(args, &alen, sizeof args, &(struct resp_arg){ "'", 1 }, 1);
        add_shown(args, &alen, sizeof args, &argv[i], 128 - alen);
        add_shown(args, &alen, sizeof args, &(struct resp_arg){ "' ", 2 }, 2);
    }
    reply_error(c, "ERR unknown command '%s', with args beginning with: %s", name, args);
}

static void execute(struct conn *c, struct resp_arg *argv, int argc)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const struct command *cmd = &commands[i];
        if (!arg_is(&argv[0], cmd->name))
            continue;
        if (cmd->arity > 0 ? argc != cmd->arity : argc < -cmd->arity)
            reply_error(c, "ERR wrong number of arguments for '%s' command", cmd->name);
        else
            cmd->run(c, argv, argc);
        return;
    }
    reply_unknown(c, argv, argc);
}

/* ---- connections ---------------------------------------------------------- */

/*
 * Answers every whole request in c->in, in order, and sends the replies,
 * together unless they outgrow OUT_FLUSH. Returns how many bytes of c->in it
 * took. A malformed request gets its error and ends the connection.
 */
static size_t serve_requests(struct conn *c, struct resp_arg *argv)
{
    size_t off = 0;
    while (off < c->in_len && !c->quit && !c->broken) {
        int argc = 0;
        const char *why = NULL;
        ptrdiff_t n = resp_parse(c->in + off, c->in_len - off, argv, &argc, &why);
        if (n == 0)
            break;   /* the rest is still on its way */
        if (n < 0) {
            reply_error(c, "ERR %s", why);
            c->quit = true;
            break;
        }
        off += (size_t)n;
        if (argc > 0)
            execute(c, argv, argc);
        if (c->out_len >= OUT_FLUSH)
            flush(c);
    }
    flush(c);
    return off;
}

/* Room to receive into: the buffer doubles while a request is not all in,
 * up to RESP_REQUEST_MAX, which the parser never lets a request pass. */
static bool in_reserve(struct conn *c)
{
    if (c->in_len < c->in_cap)
        return true;
    size_t cap = c->in_cap * 2 < RESP_REQUEST_MAX ? c->in_cap * 2 : RESP_REQUEST_MAX;
    char *p = cap > c->in_cap ? realloc(c->in, cap) : NULL;
    if (!p)
        return false;
    c->in = p;
    c->in_cap = cap;
    return true;
}

static void *connection(void *arg)
{
    struct conn c = { .in_cap = IN_START, .out_cap = OUT_START };
    if (!cli_conn_open(&c.link, (int)(intptr_t)arg))
        return NULL;
    int one = 1;
    setsockopt(c.link.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c.in = malloc(c.in_cap);
    c.out = malloc(c.out_cap);
    /* The arguments of one request: committed only as far as requests use it. */
    struct resp_arg argv[RESP_ARGS_MAX];
    uint64_t due = 0;   /* when the request begun must be in whole */
    while (c.in && c.out && in_reserve(&c)) {
        weft_deadline(c.in_len ? due : 0);
        ssize_t n = weft_recv(c.link.fd, c.in + c.in_len, c.in_cap - c.in_len, 0);
        weft_deadline(0);
        if (n <= 0)
            break;   /* closed, reset, shut down at a stop, or too slow */
        bool began = c.in_len == 0;
        c.in_len += (size_t)n;
        size_t used = serve_requests(&c, argv);
        if (c.quit || c.broken)
            break;
        c.in_len -= used;
        memmove(c.in, c.in + used, c.in_len);
        if (c.in_len && (began || used))
            due = weft_now() + timeout_ns;
        if (!c.in_len && c.in_cap > IN_START) {   /* a large request is over */
            char *p = realloc(c.in, IN_START);
            if (p) {
                c.in = p;
                c.in_cap = IN_START;
            }
        }
    }
    free(c.in);
    free(c.out);
    cli_conn_close(&c.link);
    return NULL;
}

static void *accept_loop(void *arg)
{
    cli_accept_loop("kv_server", (int)(intptr_t)arg, connection, 0);
    return NULL;
}

/* ---- serving until SIGINT or SIGTERM ------------------------------------ */

static void *serve(void *arg)
{
    weft_task *sweeping;
    int err = weft_spawn(&sweeping, sweeper, NULL);
    if (err) {
        fprintf(stderr, "kv_server: spawn: %s\n", strerror(-err));
        return (void *)1;
    }
    err = cli_serve_until_stop("kv_server", (int)(intptr_t)arg, accept_loop);
    weft_cancel(sweeping);   /* its sleep, or its lock, returns -ECANCELED */
    weft_join(sweeping, NULL);
    return err ? (void *)1 : NULL;   /* weft_main returns once the connections' coroutines have */
}

int main(int argc, char **argv)
{
    struct cli cli = CLI_INIT(argc, argv, "kv_server", "[--port N] [--workers N] [--timeout S]",
        "A key-value server on 127.0.0.1 that speaks redis's protocol (RESP2), enough\n"
        "for redis-cli and redis-benchmark: PING ECHO GET SET DEL EXISTS INCR INCRBY\n"
        "DECR DECRBY MGET MSET EXPIRE TTL DBSIZE FLUSHALL QUIT CONFIG GET. One\n"
        "coroutine per connection; the keys in one map shared by every worker.\n"
        "SIGINT or SIGTERM stops it.\n\n"
        "  --port N      the port, 0 to 65535 (default 6379; 0: any free one)\n"
        "  --workers N   worker threads, 1 to 1024 (default: one per CPU)\n"
        "  --timeout S   seconds a request begun has to come in whole, and replies\n"
        "                to be taken, before the connection is dropped; 1 to 3600\n"
        "                (default 10)\n");
    weft_config cfg = { 0 };
    unsigned port = 6379;
    for (const char *arg; (arg = cli_next(&cli));) {
        if (strcmp(arg, "--port") == 0)
            port = (unsigned)cli_uint(&cli, arg, cli_value(&cli), 0, 65535);
        else if (strcmp(arg, "--workers") == 0)
            cfg.workers = (unsigned)cli_uint(&cli, arg, cli_value(&cli), 1, WEFT_WORKERS_MAX);
        else if (strcmp(arg, "--timeout") == 0)
            timeout_ns = cli_uint(&cli, arg, cli_value(&cli), 1, 3600) * 1000000000ull;
        else
            cli_unexpected(&cli, arg);
    }
    for (unsigned s = 0; s < SHARDS; s++)
        if (!shard_init(&shards[s])) {
            fprintf(stderr, "kv_server: no memory for the map\n");
            return 1;
        }
    struct sockaddr_in addr;
    int lfd = cli_listen_loopback(&cli, port, 511, &addr);
    cli_catch_stop_signals(&cli);
    printf("kv_server: listening on 127.0.0.1:%u\n", ntohs(addr.sin_port));
    fflush(stdout);   /* a log file gets it now, not at exit */
    void *result;
    int err = weft_main(&cfg, serve, (void *)(intptr_t)lfd, &result);
    for (unsigned s = 0; s < SHARDS; s++) {   /* no coroutine runs now */
        shard_clear(&shards[s]);
        free(shards[s].buckets);
    }
    if (err) {
        fprintf(stderr, "kv_server: %s\n", strerror(-err));
        return 1;
    }
    return result != NULL;
}
