/* SPDX-License-Identifier: MIT */
/*
 * The span of weft's code, for weft_dump's summary (core/dump.c). As
 * libweft.so, the library's executable segment. Linked into the program from
 * libweft.a, the lowest and highest address of one function of each of
 * weft's files: the objects lie together, but in the order the linker takes
 * them (an archive's members as they are pulled in), so every file has its
 * anchor here: a frame of a static function of a file left out (fiber_switch, out
 * of line without optimisation) would count as the program's, and the
 * summary would name it for every waiting coroutine. A file added to the
 * library adds its anchor here (tests/check_span.sh checks). No anchor is
 * cold (WEFT__COLD): the linker gathers the cold code of every object, the
 * program's too, apart from the rest.
 */
#include "dump.h"
#include "sched.h"
#include "base/heap.h"
#include "base/sys.h"
#include "io/backend.h"
#include "io/epoll.h"
#include "io/fdtab.h"   /* and the hook's entry points */
#if WEFT_HAVE_URING
#include "io/uring.h"
#endif

#include <link.h>

/* The executable segment that holds `at`, and whether it is the program's
 * own (listed first, unnamed) rather than a shared library's. */
struct segment {
    uintptr_t at, lo, hi;
    bool      program;
};

static int find_segment(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct segment *sg = arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && sg->at >= lo && sg->at - lo < ph->p_memsz) {
            sg->lo = lo;
            sg->hi = lo + ph->p_memsz - 1;
            sg->program = !info->dlpi_name || !info->dlpi_name[0];
            return 1;
        }
    }
    return 0;
}

int weft__hook_code_segment(uintptr_t at, uintptr_t *lo, uintptr_t *hi)
{
    struct segment sg = { .at = at };
    if (!dl_iterate_phdr(find_segment, &sg))
        return -1;
    *lo = sg.lo;
    *hi = sg.hi;
    return !sg.program;
}

void weft__code_span(uintptr_t *lo, uintptr_t *hi)
{
    /* As libweft.so, weft's code is the library's executable segment, and
     * the anchors below could mislead: a program built without PIE that
     * takes a public function's address makes that its own PLT entry's. */
    if (weft__hook_code_segment((uintptr_t)weft__code_span, lo, hi) == 1)
        return;
    const uintptr_t fns[] = {
        (uintptr_t)weft__ctx_entry,                                       /* arch/.../switch.S */
        (uintptr_t)weft_now, (uintptr_t)weft__heap_remove,             /* base/ */
        (uintptr_t)weft__futex_wait_until, (uintptr_t)weft__sys_epoll_wait_ns,
        (uintptr_t)weft__crowd_look, (uintptr_t)weft__deque_steal,        /* core/ */
        (uintptr_t)weft_dump, (uintptr_t)weft__dump_signal_pick,
        (uintptr_t)weft__dump_current, (uintptr_t)weft_key_create,
        (uintptr_t)weft__monitor_nudge, (uintptr_t)weft__park, (uintptr_t)weft__takeover,
        (uintptr_t)weft_rt_create, (uintptr_t)weft__find_work, (uintptr_t)weft__srcpos_find,
        (uintptr_t)weft__stack_bind, (uintptr_t)weft__stallbt_write, (uintptr_t)weft_stats_get,
        (uintptr_t)weft__sym_name, (uintptr_t)weft__code_span, (uintptr_t)weft_spawn,
        (uintptr_t)weft__timer_arm, (uintptr_t)weft__copy_in, (uintptr_t)weft__wait,
        (uintptr_t)weft__pick_next,
        (uintptr_t)weft__io_cancel, (uintptr_t)weft_read, (uintptr_t)weft__epoll_forget,  /* io/ */
        (uintptr_t)weft__epoll_slot, (uintptr_t)weft_offload, (uintptr_t)weft__fd_weft_nonblock,
        (uintptr_t)weft_sigwait, (uintptr_t)weft_own, (uintptr_t)weft_getaddrinfo,
        (uintptr_t)weft__pri_wait,
#if WEFT_HAVE_URING
        (uintptr_t)weft__ring_call, (uintptr_t)weft__ring_op, (uintptr_t)weft__ring_own_arm,
#endif
        (uintptr_t)weft_mutex_lock, (uintptr_t)weft_chan_recv,            /* sync/ */
    };
    *lo = UINTPTR_MAX;
    *hi = 0;
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
        if (fns[i] < *lo)
            *lo = fns[i];
        if (fns[i] > *hi)
            *hi = fns[i];
    }
}

/* libweft-hook's code, which its constructor gives (hook/real.c); 0 and 0
 * while it has not. hi is stored first and lo read first: a dump that reads
 * during the store sees no span rather than half of one. */
static _Atomic uintptr_t hook_lo, hook_hi;

void weft__hook_code_span(uintptr_t lo, uintptr_t hi)
{
    if (lo > hi)
        return;
    atomic_store_explicit(&hook_hi, hi, memory_order_relaxed);
    atomic_store_explicit(&hook_lo, lo, memory_order_release);   /* pairs with weft__hook_span */
}

void weft__hook_span(uintptr_t *lo, uintptr_t *hi)
{
    *lo = atomic_load_explicit(&hook_lo, memory_order_acquire);
    *hi = *lo ? atomic_load_explicit(&hook_hi, memory_order_relaxed) : 0;
}
