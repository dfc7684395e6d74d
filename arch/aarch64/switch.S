/* SPDX-License-Identifier: MIT */
/*
 * AArch64 (AAPCS64) context switch.
 *
 *   void weft__ctx_swap(weft__ctx *from, const weft__ctx *to);
 *                                 x0                x1
 *
 * Saved state (offsets into weft__ctx, pinned by _Static_assert in arch/ctx.h):
 *
 *   0x00 x19  x20    a new context: x19 = entry argument, x20 = entry function
 *   0x10 x21  x22
 *   0x20 x23  x24
 *   0x30 x25  x26
 *   0x40 x27  x28
 *   0x50 x29  x30    frame pointer, link register (where the swap returns)
 *   0x60 sp   fpcr   stack pointer, floating-point control (rounding, FZ, DN)
 *   0x70 d8   d9     low 64 bits of v8-v15: the only callee-saved FP state
 *   0x80 d10  d11
 *   0x90 d12  d13
 *   0xa0 d14  d15
 *
 * AAPCS64 rules relied on:
 *   - x19-x29, sp and d8-d15 are callee-saved; x30 holds our return address;
 *     FPCR is preserved across calls; everything else is caller-saved.
 *   - sp is 16-aligned at all times; weft__ctx_init() sets a 16-aligned top.
 *   - There is no red zone on AArch64 Linux.
 *
 * Pitfalls:
 *   - `msr fpcr` can be slow on some cores, so it is written only when the
 *     value changes.
 *   - The saved lr is never signed (no PAC): a new context's first lr is
 *     weft__ctx_entry, written by C, which has no signature to authenticate.
 *   - `ret` is not subject to BTI, so returning into weft__ctx_entry needs no
 *     landing pad; weft__ctx_swap itself is called directly or through a
 *     pointer, so it starts with `bti c`.
 *   - x18 is the platform register and is left alone.
 *   - This swap is still entered by `bl` and left by `ret`, so, as the x86-64
 *     one used to, it mispredicts its `ret` whenever the two contexts switched
 *     from different call sites (not in the scheduler, where they share one).
 *     The x86-64 cure, a `jmp` in from an inline-asm wrapper and an indirect
 *     jump out, is not copied here: the asm would have to declare all of
 *     v8-v15 clobbered, as only their low halves are callee-saved and a clobber
 *     cannot name half a register, plus the SVE z/p registers when the
 *     compiler targets SVE; and no AArch64 machine is at hand to measure
 *     whether it pays (qemu says nothing about branch prediction).
 */

#if defined(__aarch64__)

        .text

        .globl  weft__ctx_swap
        .hidden weft__ctx_swap
        .type   weft__ctx_swap, %function
        .p2align 4
weft__ctx_swap:
        .cfi_startproc
        hint    #34                     /* bti c: landing pad for calls */
        stp     x19, x20, [x0, #0x00]   /* save callee-saved integers */
        stp     x21, x22, [x0, #0x10]
        stp     x23, x24, [x0, #0x20]
        stp     x25, x26, [x0, #0x30]
        stp     x27, x28, [x0, #0x40]
        stp     x29, x30, [x0, #0x50]   /* fp and the return address */
        mov     x2, sp
        mrs     x3, fpcr
        stp     x2, x3, [x0, #0x60]     /* sp and fpcr */
        stp     d8, d9, [x0, #0x70]     /* save callee-saved FP halves */
        stp     d10, d11, [x0, #0x80]
        stp     d12, d13, [x0, #0x90]
        stp     d14, d15, [x0, #0xa0]

        ldp     x19, x20, [x1, #0x00]   /* restore callee-saved integers */
        ldp     x21, x22, [x1, #0x10]
        ldp     x23, x24, [x1, #0x20]
        ldp     x25, x26, [x1, #0x30]
        ldp     x27, x28, [x1, #0x40]
        ldp     x29, x30, [x1, #0x50]   /* fp and where to resume */
        ldp     x2, x4, [x1, #0x60]     /* sp and fpcr */
        mov     sp, x2                  /* adopt the other stack */
        ldp     d8, d9, [x1, #0x70]     /* restore callee-saved FP halves */
        ldp     d10, d11, [x1, #0x80]
        ldp     d12, d13, [x1, #0x90]
        ldp     d14, d15, [x1, #0xa0]
        cmp     x3, x4                  /* x3 still holds our own fpcr */
        b.eq    1f
        msr     fpcr, x4                /* restore fp control only if it differs */
1:      ret                             /* to x30 */
        .cfi_endproc
        .size   weft__ctx_swap, .-weft__ctx_swap

/*
 * First code run by a new context: x19 = arg, x20 = entry, sp 16-aligned,
 * x29 = 0 (end of the frame chain). entry() never returns; `brk` traps if it did.
 * entry() is entered with lr at the trap, as `blr` would leave it, but by
 * `br`: a `blr` would push a return-predictor entry that no `ret` ever pops
 * (the x86-64 switch measured that cost). The branch goes through x16, which
 * a `bti c` landing pad, the one at entry()'s start, accepts from `br`.
 */
        .globl  weft__ctx_entry
        .hidden weft__ctx_entry
        .type   weft__ctx_entry, %function
        .p2align 4
weft__ctx_entry:
        .cfi_startproc
        .cfi_undefined x30              /* unwinders stop here: outermost frame */
        hint    #36                     /* bti j: harmless; reached by `ret` only */
        mov     x0, x19                 /* entry(arg) */
        adr     x30, 1f                 /* its return address: the trap, as `blr` would set */
        mov     x16, x20
        br      x16
1:      brk     #0x3e8
        .cfi_endproc
        .size   weft__ctx_entry, .-weft__ctx_entry

/* GNU property note: BTI compatible (bit 0). PAC (bit 1) is not claimed. */
        .section .note.gnu.property, "a"
        .p2align 3
        .long   4                       /* n_namesz: "GNU\0" */
        .long   16                      /* n_descsz */
        .long   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .long   0xc0000000              /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
        .long   4                       /* pr_datasz */
        .long   1                       /* GNU_PROPERTY_AARCH64_FEATURE_1_BTI */
        .long   0                       /* pad to 8 */

#endif

        .section .note.GNU-stack, "", %progbits   /* no executable stack */
