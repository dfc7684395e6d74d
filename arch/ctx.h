/* SPDX-License-Identifier: MIT */
/*
 * The machine context of a coroutine and the one routine that switches between
 * two of them. This is the one place that picks the architecture: each
 * arch/<cpu>/switch.S implements the switch for the layout below.
 *
 *   void weft__ctx_swap(weft__ctx *from, const weft__ctx *to);
 *       Saves the callee-saved state of the caller into *from and resumes *to.
 *       Returns when something later swaps back to *from. On x86-64 it is a
 *       static inline wrapper that jumps into weft__ctx_jump (switch.S); on
 *       AArch64 it is switch.S's routine itself.
 *
 *   weft__ctx_entry
 *       Not callable: where a new context first resumes. It calls entry(arg)
 *       with the registers that weft__ctx_init() prepared, and traps if entry
 *       ever returns. Unwinders stop there (CFI marks the return address
 *       undefined).
 */
#ifndef WEFT_ARCH_CTX_H
#define WEFT_ARCH_CTX_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__)

/* The saved stack pointer; the frame it points at is laid out in
 * arch/x86_64/switch.S, and WEFT__CTX_FRAME_* below mirror it. */
typedef struct weft__ctx {
    void *sp;          /* 0x00: the switched-out context's frame, on its own stack */
} weft__ctx;

_Static_assert(offsetof(weft__ctx, sp) == 0x00, "switch.S expects sp at 0x00");
_Static_assert(sizeof(weft__ctx) == 0x08, "weft__ctx is one word on x86-64");

enum {   /* the frame, in 8-byte words from sp */
    WEFT__CTX_FRAME_FPCTL,   /* 0x00: mxcsr (low 4 bytes), x87 control word (next 2) */
    WEFT__CTX_FRAME_RBX,     /* 0x08 */
    WEFT__CTX_FRAME_RBP,     /* 0x10 */
    WEFT__CTX_FRAME_R12,     /* 0x18: a new context's entry argument */
    WEFT__CTX_FRAME_R13,     /* 0x20: a new context's entry function */
    WEFT__CTX_FRAME_R14,     /* 0x28 */
    WEFT__CTX_FRAME_R15,     /* 0x30 */
    WEFT__CTX_FRAME_RIP,     /* 0x38: where it resumes */
    WEFT__CTX_FRAME_WORDS,
};
_Static_assert(WEFT__CTX_FRAME_RIP * 8 == 0x38 && WEFT__CTX_FRAME_WORDS * 8 == 0x40,
               "switch.S's frame is 0x40 bytes, the resume address last");

void weft__ctx_jump(void);    /* switch.S; reached only by the jmp below */

/*
 * The switch is entered by `jmp` and resumes by an indirect `jmp`, never by
 * call/ret: a `ret` into another context's call site is predicted from the
 * return-stack buffer, which is wrong whenever the two contexts switched from
 * different sites, and popping the return address without `ret` leaves that
 * buffer one entry off for every later `ret` of the caller. With neither, the
 * buffer stays balanced and the indirect-branch predictor learns where each
 * switch resumes. The body is out of line in switch.S; this wrapper only steps
 * over the red zone, takes the resume address (label 1, an IBT landing pad)
 * and jumps into weft__ctx_jump, which pushes it where `call` would have. It
 * is the one piece of the switch written as asm in a header: the alternative,
 * a call, is what costs.
 *
 * To the compiler the asm is a call that may run anything: the clobbers are the
 * SysV caller-saved set, so it keeps nothing there across a switch.
 *   - rdi and rsi carry from and to and come back garbage ("+D", "+S"); rax
 *     carries the resume address; rcx, rdx, r8-r11 are scratch in other code.
 *   - xmm0-xmm15: naming the xmm register clobbers the whole ymm/zmm register
 *     (gcc and clang model each as one register), upper halves included.
 *     zmm16-31 and k0-k7 exist only when the compiler targets AVX-512, and gcc
 *     rejects their names otherwise; without AVX-512F it never allocates them.
 *   - The x87 stack st(0)-st(7) and its MMX aliases mm0-mm7, and the status
 *     word: the ABI has the x87 stack empty at a call, so nothing may live there.
 *   - "cc" for the flags; "memory" because the other context reads and writes
 *     anything. DF is clear on both sides of a call and the switch keeps it.
 *   - rbx, rbp, r12-r15 and rsp are saved and restored by switch.S, and are
 *     not named: the compiler keeps values in them across the switch as across
 *     a call, and rbp could not be named anyway when it is the frame pointer.
 * The red zone (128 bytes below rsp) may hold the caller's data across the
 * asm, as the function may be a leaf to the compiler: the wrapper moves rsp
 * below it before anything is pushed, and back after the resume. The switch
 * point thus takes 128 + 64 bytes of stack, against 8 + 64 for a call.
 */
#if defined(__APX_F__)
#error "weft__ctx_swap does not name the APX registers r16-r31 as clobbered yet"
#endif
#if defined(__AVX512F__)
#define WEFT__CTX_AVX512_CLOBBERS                                                \
    "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23",    \
    "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31",    \
    "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7",
#else
#define WEFT__CTX_AVX512_CLOBBERS
#endif

static inline __attribute__((always_inline))
void weft__ctx_swap(weft__ctx *from, const weft__ctx *to)
{
    __asm__ volatile(
        "leaq   -128(%%rsp), %%rsp\n\t" /* step over the red zone */
        "leaq   1f(%%rip), %%rax\n\t"   /* where *from will resume */
        "jmp    weft__ctx_jump\n"
        "1:\n\t"
        "endbr64\n\t"                   /* IBT landing pad for the resuming jmp */
        "leaq   128(%%rsp), %%rsp"
        : "+D"(from), "+S"(to)
        :
        : "rax", "rcx", "rdx", "r8", "r9", "r10", "r11",
          "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
          "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
          WEFT__CTX_AVX512_CLOBBERS
          "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)",
          "mm0", "mm1", "mm2", "mm3", "mm4", "mm5", "mm6", "mm7", "fpsr",
          "cc", "memory");
}

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

void weft__ctx_swap(weft__ctx *from, const weft__ctx *to);

#else
#error "weft supports x86-64 and AArch64 only"
#endif

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
    /* A frame as a switched-out context leaves it, at the top of the stack.
     * The swap restores it, pops its last word and jumps there, to
     * weft__ctx_entry, which then runs with rsp = top, 16-aligned, so the
     * return address it pushes leaves rsp+8 aligned at entry(), as the SysV
     * ABI wants. Word by word: a compound literal compiles (gcc) to a `rep
     * stos`, which takes several times as long as plain stores here
     * (`weft-bench spawn`). */
    uint64_t *f = (uint64_t *)top - WEFT__CTX_FRAME_WORDS;
    f[WEFT__CTX_FRAME_FPCTL] = (uint64_t)0x037f << 32 |   /* x87: extended precision, */
                               0x1f80;                    /* SSE: round to nearest, all masked */
    f[WEFT__CTX_FRAME_RBX] = 0;
    f[WEFT__CTX_FRAME_RBP] = 0;                           /* ends the frame-pointer chain */
    f[WEFT__CTX_FRAME_R12] = (uint64_t)(uintptr_t)arg;
    f[WEFT__CTX_FRAME_R13] = (uint64_t)(uintptr_t)entry;
    f[WEFT__CTX_FRAME_R14] = 0;
    f[WEFT__CTX_FRAME_R15] = 0;
    f[WEFT__CTX_FRAME_RIP] = (uint64_t)(uintptr_t)weft__ctx_entry;
    ctx->sp = f;
#else
    *ctx = (weft__ctx){
        .lr = (uint64_t)(uintptr_t)weft__ctx_entry, .sp = (void *)top, .fpcr = 0,
    };
    ctx->x19_x28[0] = (uint64_t)(uintptr_t)arg;
    ctx->x19_x28[1] = (uint64_t)(uintptr_t)entry;
#endif
}

#endif /* WEFT_ARCH_CTX_H */
