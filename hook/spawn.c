/* SPDX-License-Identifier: MIT */
/*
 * The hooked ways to start a program without fork(): posix_spawn,
 * posix_spawnp, system and popen, and pclose, which waits for one.
 *
 * In a coroutine each runs whole on weft_offload's helper threads, the
 * coroutine pinned and suspended meanwhile, for two reasons:
 *   - system() and pclose() wait for the program to end, which would hold
 *     the worker and every coroutine queued on it;
 *   - a child starts with its parent thread's signal mask, through exec, and
 *     worker threads block SIGPIPE (runtime/io/backend.c). A child that a
 *     coroutine forks gets it unblocked by weft's fork handler, but these
 *     calls run no fork handlers (glibc starts the child with
 *     clone(CLONE_VM | CLONE_VFORK)), so a program started from a worker
 *     would run with SIGPIPE blocked, and `yes | head` would see EPIPE and
 *     complain where it should end quietly. A helper thread has the mask the
 *     program gave its threads. Unblocking the signal on the worker around
 *     the call instead would let the ring's task work, which may write to a
 *     pipe whose reader has gone during the call, raise it there.
 * A caller that sets the child's mask itself (POSIX_SPAWN_SETSIGMASK) gets
 * that mask, as always. What the call sets on its thread, errno, is carried
 * back to the caller's.
 *
 * A call that weft_offload could not start (no helper thread, the
 * coroutine's deadline passed, cancelled) fails as the call fails when it
 * cannot make a process: posix_spawn and posix_spawnp return the error
 * (EAGAIN, ETIMEDOUT, ECANCELED), system() -1 (system(NULL) 0: no shell)
 * and popen() NULL with errno set. pclose() must close its stream, so
 * neither the coroutine's deadline nor its cancellation stops it: it runs
 * on a helper all the same, and on the worker only where no helper can be
 * had. Elsewhere than in a coroutine each is the C library's call.
 *
 * A program built before glibc 2.15 that calls the old posix_spawn
 * (posix_spawn@GLIBC_2.2.5) reaches these too, and gets the current one's
 * answer: an exec that fails is its error, not a child's exit status 127.
 *
 * system() and pclose() hold a helper of weft_offload's bounded pool for as
 * long as their program runs: more of them at once than the pool holds wait
 * their turn, as docs/api/io.md says of every offload.
 */
#include "hook.h"

#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>

const char hook_file_spawn = 0;   /* for weft__hook_anchor (hook.h) */

enum spawn_op { OP_POSIX_SPAWN, OP_POSIX_SPAWNP, OP_SYSTEM, OP_POPEN, OP_PCLOSE };

struct spawn {
    enum spawn_op                     op;
    pid_t                            *pid;
    const char                       *path;   /* or the file, or the command */
    const char                       *type;   /* popen's */
    const posix_spawn_file_actions_t *actions;
    const posix_spawnattr_t          *attr;
    char *const                      *argv;
    char *const                      *envp;
    FILE                             *stream;
    int                               ret;
    int                               err;   /* errno on the helper thread */
};

static void *spawn_run(void *arg)
{
    struct spawn *s = arg;
    const struct hook_real *f = real();
    switch (s->op) {
    case OP_POSIX_SPAWN:
        s->ret = f->posix_spawn(s->pid, s->path, s->actions, s->attr, s->argv, s->envp);
        break;
    case OP_POSIX_SPAWNP:
        s->ret = f->posix_spawnp(s->pid, s->path, s->actions, s->attr, s->argv, s->envp);
        break;
    case OP_SYSTEM:
        s->ret = f->system(s->path);
        break;
    case OP_POPEN:
        s->stream = f->popen(s->path, s->type);
        break;
    case OP_PCLOSE:
        s->ret = f->pclose(s->stream);
        break;
    }
    s->err = errno;
    return NULL;
}

/* Runs s on a helper thread. Returns 0, or weft_offload's negative errno:
 * s did not run. */
static int offload(struct spawn *s)
{
    int err = hook_offload(spawn_run, s);
    if (err == 0)
        errno = s->err;
    return err;
}

/* posix_spawn or posix_spawnp (op) in a coroutine: the error number. */
static int spawn_on_helper(enum spawn_op op, pid_t *pid, const char *path,
                           const posix_spawn_file_actions_t *actions, const posix_spawnattr_t *attr,
                           char *const argv[], char *const envp[])
{
    struct spawn s = { .op = op, .pid = pid, .path = path, .actions = actions, .attr = attr,
                       .argv = argv, .envp = envp };
    int err = offload(&s);
    return err ? -err : s.ret;
}

HOOK_API int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                         const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    if (!hook_on())
        return real()->posix_spawn(pid, path, actions, attr, argv, envp);
    return spawn_on_helper(OP_POSIX_SPAWN, pid, path, actions, attr, argv, envp);
}

HOOK_API int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    if (!hook_on())
        return real()->posix_spawnp(pid, file, actions, attr, argv, envp);
    return spawn_on_helper(OP_POSIX_SPAWNP, pid, file, actions, attr, argv, envp);
}

HOOK_API int system(const char *command)
{
    if (!hook_on())
        return real()->system(command);
    struct spawn s = { .op = OP_SYSTEM, .path = command };
    int err = offload(&s);
    if (err) {
        errno = -err;
        return command ? -1 : 0;   /* system(NULL): no shell could be had */
    }
    return s.ret;
}

HOOK_API FILE *popen(const char *command, const char *type)
{
    if (!hook_on())
        return real()->popen(command, type);
    struct spawn s = { .op = OP_POPEN, .path = command, .type = type };
    int err = offload(&s);
    if (err) {
        errno = -err;
        return NULL;
    }
    return s.stream;
}

HOOK_API int pclose(FILE *stream)
{
    if (!hook_on())
        return real()->pclose(stream);
    /* The stream must be closed, cancelled or not: on a helper while one
     * can be had, else here. */
    struct spawn s = { .op = OP_PCLOSE, .stream = stream };
    if (weft__hook_offload_whole(spawn_run, &s))
        return real()->pclose(stream);
    errno = s.err;
    return s.ret;
}
