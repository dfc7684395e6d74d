/*
 * The machine context of a coroutine and the one routine that switches between
 * two of them. This is the one place that picks the architecture: each
 * arch/<cpu>/switch.S implements the same two symbols for the layout below.
 *
 *   void weft__ctx_swap(weft__ctx *from, const weft__ctx *to);
 *       Saves the callee-saved state of the caller into *from and resumes *to.
 *       Returns when something later swaps back to *from.
 *
 *   weft__ctx_entry
 *       Not callable: the first "return address" of a new context. It calls
 *       entry(arg) with the registers that weft__ctx_init() prepared, and traps
 *       if entry ever returns. Unwinders stop there (CFI marks the return
 *       address undefined).
 */
#ifndef WEFT_ARCH_CTX_H
#define WEFT_ARCH_CTX_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__)

/* Offsets are pinned below and mirrored in arch/x86_64/switch.S. */
typedef struct weft__ctx {
    void    *rsp;      /* 0x00: points at the return address */
    uint64_t rbx;      /* 0x08 */
    uint64_t rbp;      /* 0x10 */
    uint64_t r12;      /* 0x18: a new context's entry argument */
    uint64_t r13;      /* 0x20: a new context's entry function */
    uint64_t r14;      /* 0x28 */
    uint64_t r15;      /* 0x30 */
    uint32_t mxcsr;    /* 0x38: SSE control and status */
    uint16_t fpucw;    /* 0x3c: x87 control word */
    uint16_t pad;
} weft__ctx;

_Static_assert(offsetof(weft__ctx, rsp) == 0x00, "switch.S expects rsp at 0x00");
_Static_assert(offsetof(weft__ctx, rbx) == 0x08, "switch.S expects rbx at 0x08");
_Static_assert(offsetof(weft__ctx, rbp) == 0x10, "switch.S expects rbp at 0x10");
_Static_assert(offsetof(weft__ctx, r12) == 0x18, "switch.S expects r12 at 0x18");
_Static_assert(offsetof(weft__ctx, r13) == 0x20, "switch.S expects r13 at 0x20");
_Static_assert(offsetof(weft__ctx, r14) == 0x28, "switch.S expects r14 at 0x28");
_Static_assert(offsetof(weft__ctx, r15) == 0x30, "switch.S expects r15 at 0x30");
_Static_assert(offsetof(weft__ctx, mxcsr) == 0x38, "switch.S expects mxcsr at 0x38");
_Static_assert(offsetof(weft__ctx, fpucw) == 0x3c, "switch.S expects the x87 cw at 0x3c");
_Static_assert(sizeof(weft__ctx) == 0x40, "weft__ctx is 64 bytes on x86-64");

#elif defined(__aarch64__)

/* Offsets are pinned below and mirrored in arch/aarch64/switch.S. */
typedef struct weft__ctx {
    uint64_t x19_x28[10];  /* 0x00..0x48: x19 = entry argument, x20 = entry function */
    uint64_t fp;           /* 0x50: x29 */
    uint64_t lr;           /* 0x58: x30, where the swap returns to */
    void    *sp;           /* 0x60 */
    uint64_t fpcr;         /* 0x68 */
    uint64_t d8_d15[8];    /* 0x70..0xa8: low halves of v8..v15 */
} weft__ctx;

_Static_assert(offsetof(weft__ctx, x19_x28) == 0x00, "switch.S expects x19 at 0x00");
_Static_assert(offsetof(weft__ctx, fp) == 0x50, "switch.S expects x29 at 0x50");
_Static_assert(offsetof(weft__ctx, lr) == 0x58, "switch.S expects x30 at 0x58");
_Static_assert(offsetof(weft__ctx, sp) == 0x60, "switch.S expects sp at 0x60");
_Static_assert(offsetof(weft__ctx, fpcr) == 0x68, "switch.S expects fpcr at 0x68");
_Static_assert(offsetof(weft__ctx, d8_d15) == 0x70, "switch.S expects d8 at 0x70");
_Static_assert(sizeof(weft__ctx) == 0xb0, "weft__ctx is 176 bytes on AArch64");

#else
#error "weft supports x86-64 and AArch64 only"
#endif

void weft__ctx_swap(weft__ctx *from, const weft__ctx *to);
void weft__ctx_entry(void);

/*
 * Prepares ctx so that the first weft__ctx_swap() to it calls entry(arg) on the
 * stack [lo, hi), with the stack aligned as the ABI requires at a function
 * entry, frame pointer zero, and the default floating-point control state
 * (round to nearest, exceptions masked).
 */
static inline void weft__ctx_init(weft__ctx *ctx, void *lo, void *hi,
                                  void (*entry)(void *), void *arg)
{
    uintptr_t top = (uintptr_t)hi & ~(uintptr_t)15;
    (void)lo;
#if defined(__x86_64__)
    /* weft__ctx_entry is reached by the swap's `ret`, which pops this slot; it
     * then runs with rsp 16-aligned, so its `call` leaves rsp+8 aligned at
     * entry(), as the SysV ABI wants. */
    void **sp = (void **)top;
    *--sp = (void *)weft__ctx_entry;
    *ctx = (weft__ctx){
        .rsp = sp, .r12 = (uint64_t)(uintptr_t)arg,
        .r13 = (uint64_t)(uintptr_t)entry, .mxcsr = 0x1f80, .fpucw = 0x037f,
    };
#else
    *ctx = (weft__ctx){
        .lr = (uint64_t)(uintptr_t)weft__ctx_entry, .sp = (void *)top, .fpcr = 0,
    };
    ctx->x19_x28[0] = (uint64_t)(uintptr_t)arg;
    ctx->x19_x28[1] = (uint64_t)(uintptr_t)entry;
#endif
}

#endif /* WEFT_ARCH_CTX_H */
