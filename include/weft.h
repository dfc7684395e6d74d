/*
 * weft: an embeddable green-thread runtime.
 *
 * Coroutines ("tasks") run on a small set of kernel threads ("workers", one per
 * CPU by default) and move between them by work stealing. This is the one public
 * header; everything it declares is named weft_ / WEFT_.
 *
 * Errors: every function that can fail returns a negative errno value (-EINVAL,
 * -ENOMEM, ...) and never sets errno. A coroutine can migrate between kernel
 * threads, so errno would be the wrong channel anyway.
 *
 * Where a call may be made from:
 *   - "any thread": a coroutine of any runtime, or a plain thread;
 *   - "a coroutine": only from inside a weft coroutine; elsewhere it fails with
 *     -EPERM (or, for calls that cannot fail, does what the comment says).
 *
 * Thread-locals and migration. A coroutine that blocks (join, yield, and later
 * IO and locks) may resume on a different worker thread. Consequences:
 *   - the address of a _Thread_local variable, errno included, may change across
 *     any weft call that can suspend; do not keep a pointer to one across such a
 *     call, and expect the compiler to have cached such addresses within one
 *     function (read them again after the call, through a non-inlined function);
 *   - pthread_self(), gettid() and sched_getcpu() describe the worker, not the
 *     coroutine;
 *   - never hold a pthread mutex across a suspending call: it may be released
 *     from another thread.
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define WEFT_API __attribute__((visibility("default")))
#else
#define WEFT_API
#endif

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

/* The smallest stack a coroutine may ask for, and the default. */
#define WEFT_STACK_MIN     (16u * 1024u)
#define WEFT_STACK_DEFAULT (256u * 1024u)
/* The most workers one runtime may have. */
#define WEFT_WORKERS_MAX   1024u

typedef struct weft_rt   weft_rt;     /* a runtime: its workers and queues */
typedef struct weft_task weft_task;   /* a coroutine handle, valid until joined or detached */
typedef void *(*weft_fn)(void *arg);

typedef struct weft_config {
    unsigned workers;     /* kernel threads; 0 = the CPUs in the process affinity mask */
    size_t   stack_size;  /* usable stack per coroutine; 0 = 256 KiB, committed only as touched */
    /* later fields are appended; a zeroed field always means the default */
} weft_config;

/*
 * Creates a runtime and starts its workers. cfg NULL means every default.
 * Any thread. Returns 0, -EINVAL (rt NULL, workers above WEFT_WORKERS_MAX, stack
 * below WEFT_STACK_MIN or above 1 GiB), -ENOMEM or -EAGAIN (no threads left).
 */
WEFT_API int weft_rt_create(weft_rt **rt, const weft_config *cfg);

/*
 * Waits until every coroutine of rt has finished, detached ones too, then stops
 * and joins the workers and frees everything. Handles of finished but unjoined
 * tasks die with it. A plain thread (or a coroutine of another runtime).
 * Returns 0, -EINVAL (rt NULL), -EDEADLK (called from one of rt's coroutines).
 */
WEFT_API int weft_rt_destroy(weft_rt *rt);

/*
 * Starts fn(arg) as a new coroutine of rt. Any thread. If task is not NULL it
 * receives a handle that must be joined or detached; NULL means detached.
 * Returns 0, -EINVAL (rt or fn NULL, rt being destroyed), -ENOMEM (no stack).
 */
WEFT_API int weft_spawn_on(weft_rt *rt, weft_task **task, weft_fn fn, void *arg);

/*
 * Starts fn(arg) as a new coroutine of the caller's runtime. A coroutine.
 * task NULL means detached. Returns 0, -EINVAL (fn NULL), -EPERM (not called
 * from a coroutine), -ENOMEM.
 */
WEFT_API int weft_spawn(weft_task **task, weft_fn fn, void *arg);

/*
 * Waits for task to finish, stores its return value in *result (if result is not
 * NULL) and releases the handle. From a coroutine it suspends only that
 * coroutine; from a plain thread it blocks the thread. Returns 0, -EINVAL (task
 * NULL, already joined or detached: detected while the handle's memory has not
 * been reused, and debug builds abort instead), -EDEADLK (a task joining itself).
 */
WEFT_API int weft_join(weft_task *task, void **result);

/* Releases the handle: the task frees itself when it finishes. Any thread.
 * Returns 0 or -EINVAL (NULL, already joined or detached). */
WEFT_API int weft_detach(weft_task *task);

/* Lets the other runnable coroutines of this worker run first. From a plain
 * thread: sched_yield(). */
WEFT_API void weft_yield(void);

/* The calling coroutine, or NULL outside a coroutine. */
WEFT_API weft_task *weft_self(void);

/* The index (0 .. workers-1) of the worker running the caller, or -EPERM outside
 * a coroutine. The answer is stale as soon as the coroutine suspends. */
WEFT_API int weft_worker(void);

/* The number of workers of the caller's runtime, or -EPERM outside a coroutine. */
WEFT_API int weft_workers(void);

/*
 * Creates a runtime, runs fn(arg) as its first coroutine, joins it, stores its
 * result, and destroys the runtime. A plain thread. Returns 0 or the error of
 * the step that failed.
 */
WEFT_API int weft_main(const weft_config *cfg, weft_fn fn, void *arg, void **result);

/* CLOCK_MONOTONIC in nanoseconds. Any thread. */
WEFT_API uint64_t weft_now(void);

/* ---- non-blocking IO, timers, deadlines, cancellation (runtime/io*.c) ---- */

/* ---- synchronization and channels (runtime/sync.c, runtime/chan.c) ---- */

#ifdef __cplusplus
}
#endif

#endif /* WEFT_H */
