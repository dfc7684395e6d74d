/* SPDX-License-Identifier: MIT */
/*
 * Source positions of code addresses for weft_dump, "file.c:42", from the
 * DWARF line tables of the program's objects, read with elfutils' libdw
 * (its libdwfl part). Optional: without libdw at configure time, or without
 * debug information for an object, a frame shows function+offset alone.
 *
 * One Dwfl serves the process: made at the first lookup and kept, so that
 * each object's line table is read once. It knows the objects mapped when it
 * was made (dwfl_linux_proc_report), and learns them again when an address
 * lies in none of them, for an object loaded since. libdwfl is not
 * thread-safe: lines_lock covers the Dwfl and everything libdwfl keeps in it.
 *
 * Where the lookups run. libdw reads a line table with arrays on the stack
 * larger than a small coroutine stack holds (weft_config.stack_size may be
 * WEFT_STACK_MIN), and weft_dump may be called from any coroutine. So they
 * run on a thread of their own, with a stack of known size, started for each
 * batch of addresses (a dump makes one batch) and joined. No signal handler
 * comes here: the dump signal's handler hands the dump to a thread
 * (core/dumpsig.c), and fatal messages (core/fatal.c), which may be written
 * from a handler or with a broken heap, show no source positions.
 *
 * The compilation unit that holds an address is found through the object's
 * .debug_aranges where it has them; clang emits none unless asked
 * (-gdwarf-aranges), and libdw then finds no unit, so the units are looked
 * through one by one (unit_line).
 *
 * Separate debug files are looked for by build ID in the system's debug
 * directory (dwfl_build_id_find_debuginfo), never asked of a debuginfod
 * server: a dump must not wait on the network.
 */
#include "dump.h"

#if WEFT_HAVE_LIBDW

#include <elfutils/libdwfl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

/* The line thread's stack: several times what libdw takes to read a line
 * table, which is far more than the lookups after it take. */
#define LINE_THREAD_STACK ((size_t)1 << 20)

static pthread_mutex_t lines_lock = PTHREAD_MUTEX_INITIALIZER;
static Dwfl *lines_dwfl;               /* under lines_lock: made at the first lookup, kept */
static char *debuginfo_path;           /* NULL: libdwfl's default directories */
static const Dwfl_Callbacks callbacks = {
    .find_elf = dwfl_linux_proc_find_elf,
    .find_debuginfo = dwfl_build_id_find_debuginfo,   /* local files only */
    .debuginfo_path = &debuginfo_path,
};
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* The line of pc in module m by a walk over its compilation units, for an
 * object without .debug_aranges. NULL if no unit holds pc. Under lines_lock. */
static Dwarf_Line *unit_line(Dwfl_Module *m, Dwarf_Addr pc)
{
    Dwarf_Addr bias;
    Dwarf *dw = dwfl_module_getdwarf(m, &bias);
    if (!dw)
        return NULL;
    Dwarf_Off off = 0, next;
    size_t hsize;
    while (dwarf_nextcu(dw, off, &next, &hsize, NULL, NULL, NULL) == 0) {
        Dwarf_Die cu;
        if (dwarf_offdie(dw, off + hsize, &cu) && dwarf_haspc(&cu, pc - bias) > 0)
            return dwarf_getsrc_die(&cu, pc - bias);
        off = next;
    }
    return NULL;
}

/* fork() waits for a lookup to end, so that the child's Dwfl is whole and
 * its lock free. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&lines_lock);
}

static void fork_done(void)
{
    pthread_mutex_unlock(&lines_lock);
}

static void atfork_register(void)
{
    pthread_atfork(fork_prepare, fork_done, fork_done);   /* without memory: no fork safety, nothing else lost */
}

struct batch {
    struct weft__srcpos *pos;
    size_t               n;
};

/* Tells dwfl the objects mapped now; modules it knew that are mapped still
 * are kept with what they read. False if libdwfl could not read the map.
 * The line thread, under lines_lock. */
static bool report(Dwfl *dwfl)
{
    dwfl_report_begin(dwfl);
    int err = dwfl_linux_proc_report(dwfl, getpid());
    return dwfl_report_end(dwfl, NULL, NULL) == 0 && err == 0;
}

/* The line thread: fills in b's positions, making the Dwfl if it is not
 * there yet. Runs while its starter holds lines_lock. */
static void *find_lines(void *arg)
{
    struct batch *b = arg;
    prctl(PR_SET_NAME, (unsigned long)"weft-lines", 0ul, 0ul, 0ul);
    if (!lines_dwfl) {
        Dwfl *dwfl = dwfl_begin(&callbacks);
        if (!dwfl)
            return NULL;
        if (!report(dwfl)) {
            dwfl_end(dwfl);
            return NULL;
        }
        lines_dwfl = dwfl;
    }
    bool reported = false;
    for (size_t i = 0; i < b->n; i++) {
        struct weft__srcpos *p = &b->pos[i];
        Dwfl_Module *m = dwfl_addrmodule(lines_dwfl, p->pc);
        if (!m && !reported) {
            reported = true;   /* once a batch: an address in no object costs one look at the map */
            report(lines_dwfl);
            m = dwfl_addrmodule(lines_dwfl, p->pc);
        }
        Dwfl_Line *l = m ? dwfl_module_getsrc(m, p->pc) : NULL;
        int line = 0;
        const char *file = l ? dwfl_lineinfo(l, NULL, &line, NULL, NULL, NULL) : NULL;
        Dwarf_Line *dl = !file && m ? unit_line(m, p->pc) : NULL;
        if (dl && dwarf_lineno(dl, &line) == 0)
            file = dwarf_linesrc(dl, NULL, NULL);
        if (file && line > 0) {
            snprintf(p->file, sizeof(p->file), "%s", weft__base_name(file));
            p->line = (unsigned)line;
        }
    }
    return NULL;
}

/* Runs find_lines for pos[0..n) on a line thread; leaves them unknown where
 * no thread can be started. */
static void find_lines_aside(struct weft__srcpos *pos, size_t n)
{
    pthread_once(&atfork_once, atfork_register);
    pthread_attr_t attr;
    if (pthread_attr_init(&attr))
        return;
    struct batch b = { .pos = pos, .n = n };
    sigset_t all, old;
    sigfillset(&all);
    pthread_mutex_lock(&lines_lock);
    pthread_t th;
    int err = pthread_attr_setstacksize(&attr, LINE_THREAD_STACK);
    if (!err) {
        pthread_sigmask(SIG_SETMASK, &all, &old);   /* the thread takes no signal meant for the program */
        err = pthread_create(&th, &attr, find_lines, &b);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (!err)
        pthread_join(th, NULL);
    pthread_mutex_unlock(&lines_lock);
    pthread_attr_destroy(&attr);
}

#endif /* WEFT_HAVE_LIBDW */

void weft__srcpos_find(struct weft__srcpos *pos, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pos[i].line = 0;
        pos[i].file[0] = '\0';
    }
#if WEFT_HAVE_LIBDW
    if (n)
        find_lines_aside(pos, n);
#endif
}
