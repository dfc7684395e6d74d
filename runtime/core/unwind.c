/* SPDX-License-Identifier: MIT */
/*
 * Unwinding a coroutine's backtrace from its saved context, for weft_dump and
 * for fatal messages (core/dump.h).
 *
 * Backtraces are unwound by libunwind in an address space of our own
 * (unw_create_addr_space): its memory accessor serves the copied stack of a
 * switched-out coroutine and reads anything else (the unwind tables of the
 * program's objects) with process_vm_readv, so a read of memory given back
 * meanwhile fails with EFAULT instead of faulting. The registers are those
 * the context switch saved (arch/ctx.h), or a ucontext_t's. The unwind tables
 * are found as for a local unwind, by reusing the local address space's
 * find_proc_info, which walks the loaded objects with dl_iterate_phdr. DWARF
 * call-frame information is what it follows, so code built with -O2 and
 * without frame pointers unwinds; it stops at weft__ctx_entry, whose CFI marks
 * the end. The stall report's backtrace (core/stallbt.c) fills an image from
 * a signal's ucontext_t and unwinds it with the same accessors. Without
 * libunwind only the copies are built.
 */
#include "dump.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

ssize_t weft__copy_some(void *dst, uintptr_t src, size_t len)
{
    struct iovec local = { .iov_base = dst, .iov_len = len };
    struct iovec remote = { .iov_base = (void *)src, .iov_len = len };
    ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    return n < 0 ? -errno : n;
}

int weft__copy_in(void *dst, uintptr_t src, size_t len)
{
    ssize_t n = weft__copy_some(dst, src, len);
    if (n == (ssize_t)len)
        return 0;
    return n < 0 ? (int)n : -EFAULT;
}

#if WEFT_HAVE_LIBUNWIND

bool weft__image_regs(struct weft__image *img, const weft__ctx *ctx)
{
#if defined(__x86_64__)
    uintptr_t sp = (uintptr_t)ctx->sp;
    if (sp != img->lo || img->hi - img->lo < WEFT__CTX_FRAME_WORDS * 8)
        return false;
    uint64_t f[WEFT__CTX_FRAME_WORDS];
    memcpy(f, img->buf, sizeof(f));
    static const struct { int reg, word; } map[] = {
        { UNW_X86_64_RBX, WEFT__CTX_FRAME_RBX }, { UNW_X86_64_RBP, WEFT__CTX_FRAME_RBP },
        { UNW_X86_64_R12, WEFT__CTX_FRAME_R12 }, { UNW_X86_64_R13, WEFT__CTX_FRAME_R13 },
        { UNW_X86_64_R14, WEFT__CTX_FRAME_R14 }, { UNW_X86_64_R15, WEFT__CTX_FRAME_R15 },
        { UNW_X86_64_RIP, WEFT__CTX_FRAME_RIP },
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        img->reg[map[i].reg] = f[map[i].word];
        img->have[map[i].reg] = true;
    }
    /* The switch resumes in its caller's frame at the resume label, where
     * the compiler's CFI expects rsp as it was before the switch: above the
     * frame popped, and above the red zone the wrapper stepped over. */
    img->reg[UNW_X86_64_RSP] = sp + WEFT__CTX_FRAME_WORDS * 8 + 128;
    img->have[UNW_X86_64_RSP] = true;
    return true;
#elif defined(__aarch64__)
    /* The registers are in the context itself; the swap returns to lr. */
    if ((uintptr_t)ctx->sp != img->lo)
        return false;
    for (int i = 0; i < 10; i++) {
        img->reg[UNW_AARCH64_X19 + i] = ctx->x19_x28[i];
        img->have[UNW_AARCH64_X19 + i] = true;
    }
    img->reg[UNW_AARCH64_X29] = ctx->fp;
    img->reg[UNW_AARCH64_X30] = ctx->lr;
    img->reg[UNW_AARCH64_SP] = (uint64_t)(uintptr_t)ctx->sp;
    img->reg[UNW_AARCH64_PC] = ctx->lr;
    img->have[UNW_AARCH64_X29] = img->have[UNW_AARCH64_X30] = true;
    img->have[UNW_AARCH64_SP] = img->have[UNW_AARCH64_PC] = true;
    return true;
#endif
}

/*
 * Unwinding the live stack this way rather than with libunwind's local
 * unwinder spares its check of each address, a write(2) of the word to a
 * pipe, which Valgrind reports as a write of uninitialised bytes, and which
 * allocates nothing either way.
 */
void weft__image_from_ucontext(struct weft__image *img, const ucontext_t *uc)
{
    *img = (struct weft__image){ .lo = 0, .hi = 0 };
#if defined(__x86_64__)
    static const struct { int reg, greg; } map[] = {
        { UNW_X86_64_RAX, REG_RAX }, { UNW_X86_64_RDX, REG_RDX }, { UNW_X86_64_RCX, REG_RCX },
        { UNW_X86_64_RBX, REG_RBX }, { UNW_X86_64_RSI, REG_RSI }, { UNW_X86_64_RDI, REG_RDI },
        { UNW_X86_64_RBP, REG_RBP }, { UNW_X86_64_RSP, REG_RSP }, { UNW_X86_64_R8, REG_R8 },
        { UNW_X86_64_R9, REG_R9 }, { UNW_X86_64_R10, REG_R10 }, { UNW_X86_64_R11, REG_R11 },
        { UNW_X86_64_R12, REG_R12 }, { UNW_X86_64_R13, REG_R13 }, { UNW_X86_64_R14, REG_R14 },
        { UNW_X86_64_R15, REG_R15 }, { UNW_X86_64_RIP, REG_RIP },
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        img->reg[map[i].reg] = (uint64_t)uc->uc_mcontext.gregs[map[i].greg];
        img->have[map[i].reg] = true;
    }
#elif defined(__aarch64__)
    for (int i = 0; i < 31; i++) {
        img->reg[UNW_AARCH64_X0 + i] = uc->uc_mcontext.regs[i];
        img->have[UNW_AARCH64_X0 + i] = true;
    }
    img->reg[UNW_AARCH64_SP] = uc->uc_mcontext.sp;
    img->reg[UNW_AARCH64_PC] = uc->uc_mcontext.pc;
    img->have[UNW_AARCH64_SP] = img->have[UNW_AARCH64_PC] = true;
#endif
}

static int acc_mem(unw_addr_space_t as, unw_word_t addr, unw_word_t *val, int write, void *arg)
{
    const struct weft__image *img = arg;
    if (write)
        return -UNW_EREADONLYREG;
    if (img && addr >= img->lo && addr + sizeof(*val) <= img->hi && addr + sizeof(*val) > addr) {
        memcpy(val, img->buf + (addr - img->lo), sizeof(*val));
        return 0;
    }
    return weft__copy_in(val, (uintptr_t)addr, sizeof(*val)) ? -UNW_EINVAL : 0;
}

static int acc_reg(unw_addr_space_t as, unw_regnum_t reg, unw_word_t *val, int write, void *arg)
{
    const struct weft__image *img = arg;
    if (write || !img || reg < 0 || reg >= WEFT__UNW_NREGS)
        return -UNW_EBADREG;
    *val = img->have[reg] ? img->reg[reg] : 0;   /* caller-saved: dead at a switch */
    return 0;
}

static int acc_fpreg(unw_addr_space_t as, unw_regnum_t reg, unw_fpreg_t *val, int write, void *arg)
{
    return -UNW_EBADREG;
}

static int acc_resume(unw_addr_space_t as, unw_cursor_t *c, void *arg)
{
    return -UNW_EINVAL;   /* only looked at, never resumed */
}

unw_addr_space_t weft__unwind_space(void)
{
    unw_accessors_t *local = unw_get_accessors(unw_local_addr_space);
    unw_accessors_t acc = {
        .find_proc_info = local->find_proc_info,
        .put_unwind_info = local->put_unwind_info,
        .get_dyn_info_list_addr = local->get_dyn_info_list_addr,
        .access_mem = acc_mem,
        .access_reg = acc_reg,
        .access_fpreg = acc_fpreg,
        .resume = acc_resume,
        .get_proc_name = local->get_proc_name,
    };
    unw_addr_space_t as = unw_create_addr_space(&acc, 0);
    if (as)
        unw_set_caching_policy(as, UNW_CACHE_GLOBAL);   /* one thread at a time (dump.h) */
    return as;
}

unsigned weft__unwind(unw_addr_space_t as, struct weft__image *img, uintptr_t *pcs, unsigned max,
                      uintptr_t from)
{
    unw_cursor_t c;
    if (unw_init_remote(&c, as, img) < 0)
        return 0;
    unsigned n = 0, first = 0;
    bool found = false;
    while (n < max) {
        unw_word_t ip;
        unw_proc_info_t pi;
        if (unw_get_reg(&c, UNW_REG_IP, &ip) < 0 || !ip)
            break;
        if (from && !found && unw_get_proc_info(&c, &pi) == 0 && pi.start_ip == (unw_word_t)from) {
            found = true;
            first = n;
        }
        pcs[n++] = (uintptr_t)ip;
        if (unw_step(&c) <= 0)
            break;
    }
    memmove(pcs, pcs + first, (n - first) * sizeof(*pcs));
    return n - first;
}
#endif /* WEFT_HAVE_LIBUNWIND */
