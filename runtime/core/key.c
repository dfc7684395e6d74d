/* SPDX-License-Identifier: MIT */
/*
 * Coroutine-local storage: weft_key_create, weft_setspecific and their kin,
 * pthread's thread-specific data for coroutines.
 *
 * Keys. A process-wide table of WEFT_KEYS_MAX slots; each has a sequence
 * number, odd while a key holds the slot, bumped by every create and delete,
 * and the key's destructor. A weft_key is its slot in the low KEY_BITS bits
 * and the low bits of the sequence number above them, so a deleted key
 * matches no key made after it in its slot until the slot has been used 2^21
 * times more (a 32-bit handle can tell no more apart, and using a deleted key
 * is the caller's error). A value is stored with its key's whole sequence
 * number, 64 bits that never wrap, so a value a deleted key left behind never
 * shows through a key made later.
 *
 * Values. Each holder (a coroutine, or a plain thread) has a struct
 * weft__keyvals, made by its first weft_setspecific(): an array of blocks of
 * BLOCK values, each block made when its first value is set, so a holder
 * that uses a key or two costs one small allocation and a block. A
 * coroutine's lives in its task (task->keys), so it follows the coroutine
 * from worker to worker, and only the coroutine touches it; a plain thread's
 * is thread-local, and one pthread key, made on first use, runs its
 * destructors when the thread exits. A worker thread's own context runs no
 * user code, so it never holds values.
 *
 * Destructors run as POSIX says of a thread's: when the coroutine returns
 * from its function (core/park.c, before its result is published to a joiner),
 * each value that is not NULL is set to NULL and its key's destructor called
 * with it; while a round calls any destructor, another round follows, up to
 * PTHREAD_DESTRUCTOR_ITERATIONS; what is left after the last is dropped.
 */
#include "core.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#define KEY_BITS 10u
_Static_assert(WEFT_KEYS_MAX == 1u << KEY_BITS, "a key's slot takes KEY_BITS bits");
#define BLOCK    32u
#define NBLOCKS  (WEFT_KEYS_MAX / BLOCK)

struct key_slot {
    _Atomic uint64_t seq;                 /* odd while a key holds the slot; written under keys_lock */
    _Atomic(void (*)(void *)) destructor; /* the holding key's; written under keys_lock */
};

static struct key_slot keys[WEFT_KEYS_MAX];
static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;   /* made anew in a child of fork() */

struct block {
    uint64_t seq[BLOCK];    /* the sequence number of the key that set val[i] */
    void    *val[BLOCK];
};

struct weft__keyvals {
    struct block *block[NBLOCKS];   /* NULL until a value in it is set */
};

/* A plain thread's values, and the pthread key that destroys them at its exit. */
static WEFT__TLS struct weft__keyvals *thread_vals;
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;
static int thread_key_error;

static void thread_exit(void *kv)
{
    (void)kv;   /* the same as thread_vals, which the destructors may refill */
    weft__keys_end(&thread_vals);
}

static void thread_key_make(void)
{
    thread_key_error = pthread_key_create(&thread_key, thread_exit);
}

static inline unsigned slot_of(weft_key key) { return key & (WEFT_KEYS_MAX - 1); }
#define KEY_SEQ_MASK (UINT32_MAX >> KEY_BITS)   /* the sequence number's bits a key holds */

/* The whole sequence number of key's slot where key names the key that
 * holds it now, else 0. */
static inline uint64_t key_seq(weft_key key)
{
    uint32_t low = key >> KEY_BITS;
    uint64_t seq = atomic_load_explicit(&keys[slot_of(key)].seq, memory_order_relaxed);   /* a hint:
                    * a key must not be deleted while it is used, so no order is needed */
    return (low & 1) && (seq & KEY_SEQ_MASK) == low ? seq : 0;
}

/* The caller's values: the running coroutine's, else the plain thread's. */
static struct weft__keyvals **holder(bool *plain)
{
    struct weft__worker *w = weft__worker_self();
    if (w && w->current) {
        *plain = false;
        return &w->current->keys;
    }
    *plain = true;
    return &thread_vals;
}

void weft__key_fork_child(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    keys_lock = fresh;
}

int weft_key_create(weft_key *key, void (*destructor)(void *))
{
    if (!key)
        return -EINVAL;
    int err = weft__fork_handler_register();
    if (err)
        return err;
    pthread_mutex_lock(&keys_lock);
    for (unsigned i = 0; i < WEFT_KEYS_MAX; i++) {
        uint64_t seq = atomic_load_explicit(&keys[i].seq, memory_order_relaxed);
        if (seq & 1)
            continue;
        seq++;
        atomic_store_explicit(&keys[i].destructor, destructor, memory_order_relaxed);
        atomic_store_explicit(&keys[i].seq, seq, memory_order_release);   /* the key is handed out after */
        pthread_mutex_unlock(&keys_lock);
        *key = (weft_key)((seq & KEY_SEQ_MASK) << KEY_BITS | i);
        return 0;
    }
    pthread_mutex_unlock(&keys_lock);
    return -EAGAIN;
}

int weft_key_delete(weft_key key)
{
    pthread_mutex_lock(&keys_lock);
    uint64_t seq = key_seq(key);
    if (!seq) {
        pthread_mutex_unlock(&keys_lock);
        return -EINVAL;
    }
    struct key_slot *k = &keys[slot_of(key)];
    atomic_store_explicit(&k->destructor, NULL, memory_order_relaxed);
    atomic_store_explicit(&k->seq, seq + 1, memory_order_release);
    pthread_mutex_unlock(&keys_lock);
    return 0;
}

int weft_setspecific(weft_key key, const void *value)
{
    uint64_t seq = key_seq(key);
    if (!seq)
        return -EINVAL;
    bool plain;
    struct weft__keyvals **h = holder(&plain);
    struct weft__keyvals *kv = *h;
    unsigned slot = slot_of(key);
    if (!kv) {
        if (!value)
            return 0;   /* NULL already */
        if (plain) {
            pthread_once(&thread_key_once, thread_key_make);
            if (thread_key_error)
                return -thread_key_error;
        }
        if (!(kv = calloc(1, sizeof(*kv))))
            return -ENOMEM;
        if (plain && pthread_setspecific(thread_key, kv) != 0) {
            free(kv);
            return -ENOMEM;
        }
        *h = kv;
    }
    struct block *b = kv->block[slot / BLOCK];
    if (!b) {
        if (!value)
            return 0;
        if (!(b = calloc(1, sizeof(*b))))
            return -ENOMEM;
        kv->block[slot / BLOCK] = b;
    }
    b->seq[slot % BLOCK] = seq;
    b->val[slot % BLOCK] = (void *)value;
    return 0;
}

void *weft_getspecific(weft_key key)
{
    uint64_t seq = key_seq(key);
    if (!seq)
        return NULL;
    bool plain;
    struct weft__keyvals *kv = *holder(&plain);
    if (!kv)
        return NULL;
    unsigned slot = slot_of(key);
    struct block *b = kv->block[slot / BLOCK];
    if (!b || b->seq[slot % BLOCK] != seq)
        return NULL;
    return b->val[slot % BLOCK];
}

void weft__keys_end(struct weft__keyvals **h)
{
    for (unsigned round = 0; round < PTHREAD_DESTRUCTOR_ITERATIONS && *h; round++) {
        bool called = false;
        for (unsigned i = 0; i < NBLOCKS; i++) {
            struct block *b = (*h)->block[i];
            for (unsigned j = 0; b && j < BLOCK; j++) {
                void *v = b->val[j];
                if (!v)
                    continue;
                b->val[j] = NULL;
                struct key_slot *k = &keys[i * BLOCK + j];
                void (*destructor)(void *) = NULL;
                if (atomic_load_explicit(&k->seq, memory_order_acquire) == b->seq[j])
                    destructor = atomic_load_explicit(&k->destructor, memory_order_relaxed);
                if (destructor) {
                    destructor(v);   /* may set values again, in *h */
                    called = true;
                }
            }
        }
        if (!called)
            break;
    }
    struct weft__keyvals *kv = *h;
    if (!kv)
        return;
    *h = NULL;
    for (unsigned i = 0; i < NBLOCKS; i++)
        free(kv->block[i]);
    free(kv);
}
