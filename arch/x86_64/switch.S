/* SPDX-License-Identifier: MIT */
/*
 * x86-64 System V context switch.
 *
 * C sees `void weft__ctx_swap(weft__ctx *from, const weft__ctx *to)`, a static
 * inline wrapper in arch/ctx.h that does, in its caller's frame:
 *
 *         leaq    -128(%rsp), %rsp         step over the red zone
 *         leaq    1f(%rip), %rax           rdi = from, rsi = to
 *         jmp     weft__ctx_jump
 *   1:    endbr64                          where *from resumes
 *         leaq    128(%rsp), %rsp
 *
 * and declares every caller-saved register clobbered, as a call would. Nothing
 * here is reached by `call` and nothing returns with `ret`.
 *
 * A weft__ctx holds one word, the stack pointer of the switched-out context
 * (pinned by _Static_assert in arch/ctx.h). Everything else is saved on that
 * context's own stack, in a frame of 0x40 bytes that sp points at:
 *
 *   0x00 mxcsr   SSE rounding mode, exception masks, DAZ/FTZ (4 bytes)
 *   0x04 fpucw   x87 control word: precision and rounding (2 bytes)
 *   0x08 rbx
 *   0x10 rbp
 *   0x18 r12     a new context: the argument for its entry function
 *   0x20 r13     a new context: its entry function
 *   0x28 r14
 *   0x30 r15
 *   0x38 rip     where the context resumes (a new one: weft__ctx_entry)
 *
 * weft__ctx_init() writes such a frame at the top of a new stack.
 *
 * psABI rules relied on:
 *   - rbx, rbp, r12-r15, rsp, the MXCSR control bits and the x87 control word
 *     are callee-saved; every other register is clobbered by a call. The
 *     wrapper's asm declares exactly those clobbered, so the compiler has
 *     already saved whatever it needs of them, and this routine may use them.
 *   - rsp+8 is 16-aligned at a function's entry. weft__ctx_init() arranges for
 *     weft__ctx_entry to start with rsp 16-aligned so that entry() sees rsp+8
 *     aligned after the return address it pushes.
 *   - The red zone (128 bytes below rsp) belongs to the frame that contains
 *     the wrapper, which is a leaf to the compiler when the switch is its only
 *     "call", and may keep data there across it. The wrapper lowers rsp by
 *     128 first, so the frame here lands below the red zone.
 *
 * Pitfalls:
 *   - MXCSR's status flags travel with the control bits; that is harmless, as a
 *     coroutine only sees flags it raised itself.
 *   - Neither `call` nor `ret`. A `ret` predicts its target from the
 *     return-stack buffer, which is wrong whenever the two contexts switched
 *     from different call sites (a raw switch between two loops mispredicts
 *     every switch, `weft-bench switch`). Popping the return address and jumping instead
 *     leaves the buffer one entry off, and every later `ret` up the resumed
 *     chain mispredicts (`weft-bench switch`, yield). Entered by a direct
 *     `jmp` and left by an indirect one, the switch leaves the buffer as it
 *     found it, and the indirect-branch predictor learns the resume address,
 *     which inside the scheduler is one of a few labels (between two
 *     coroutines that yield to each other, always the same one).
 *   - The frame lives on the stack, addressed from rsp, not in weft__ctx: with
 *     the registers saved to and loaded from weft__ctx through rdi and rsi,
 *     as this switch did before, the raw switch was slower than this way and
 *     than Boost.Context's `fiber::resume`, which saves on the stack too, and
 *     its runs were bimodal, whether the contexts lay in .bss or at the top
 *     of their stacks (`weft-bench switch`; figures in docs/benchmarks.md).
 *   - ldmxcsr and fldcw run on every switch. Skipping them when the incoming
 *     value equals the one just saved (the usual case) made the raw switch
 *     slower, and weft_yield too (`weft-bench switch`). stmxcsr is the costly
 *     one of the four here.
 *   - CFI describes this routine as part of the frame it was jumped from, whose
 *     rsp is 128 above the wrapper's: CFA = rsp + 128, the "return address" in
 *     rax, then pushed, then the frame below it; after rsp is switched, the
 *     same rules describe the other stack's frame, and the address popped
 *     into rcx.
 *   - Shadow stacks (CET SHSTK) are not switched here, so this object claims
 *     IBT compatibility only, never SHSTK. With no call or ret, a shadow stack
 *     would not even see the switch; it would need switching all the same.
 */

#if defined(__x86_64__)

        .text

        .globl  weft__ctx_jump
        .hidden weft__ctx_jump
        .type   weft__ctx_jump, @function
        .p2align 4
weft__ctx_jump:
        .cfi_startproc
        .cfi_def_cfa_offset 128         /* the wrapper's frame, past its red zone */
        .cfi_register rip, rax          /* it resumes at rax */
        pushq   %rax                    /* where *from resumes, as `call` would */
        .cfi_adjust_cfa_offset 8
        .cfi_offset rip, -136
        subq    $0x38, %rsp             /* the rest of the frame */
        .cfi_adjust_cfa_offset 0x38
        stmxcsr 0x00(%rsp)              /* save SSE control */
        fnstcw  0x04(%rsp)              /* save x87 control */
        movq    %rbx, 0x08(%rsp)        /* save callee-saved integers */
        movq    %rbp, 0x10(%rsp)
        movq    %r12, 0x18(%rsp)
        movq    %r13, 0x20(%rsp)
        movq    %r14, 0x28(%rsp)
        movq    %r15, 0x30(%rsp)
        movq    %rsp, (%rdi)            /* from->sp: the frame */

        movq    (%rsi), %rsp            /* adopt the other stack and its frame: the
                                         * same CFI now describes *to's frame */
        ldmxcsr 0x00(%rsp)              /* restore SSE control */
        fldcw   0x04(%rsp)              /* restore x87 control */
        movq    0x08(%rsp), %rbx        /* restore callee-saved integers */
        movq    0x10(%rsp), %rbp
        movq    0x18(%rsp), %r12
        movq    0x20(%rsp), %r13
        movq    0x28(%rsp), %r14
        movq    0x30(%rsp), %r15
        addq    $0x38, %rsp
        .cfi_adjust_cfa_offset -0x38
        popq    %rcx                    /* where *to resumes */
        .cfi_adjust_cfa_offset -8
        .cfi_register rip, rcx
        jmp     *%rcx                   /* lands on an endbr64 */
        .cfi_endproc
        .size   weft__ctx_jump, .-weft__ctx_jump

/*
 * First code run by a new context: r12 = arg, r13 = entry, rsp 16-aligned,
 * rbp 0 (end of the frame-pointer chain). entry() never returns; if it did, the
 * `ud2` stops the program instead of running off into unrelated memory.
 * entry() is entered as `call` would enter it, with the trap's address pushed
 * as its return address, but by `jmp`: a `call` would push a return-stack
 * buffer entry that no `ret` ever pops, and the context switched to when the
 * coroutine ends would then mispredict every `ret` up its chain (spawning and
 * joining one task at a time on 2 workers is measurably slower with the
 * call: `weft-bench spawn`).
 */
        .globl  weft__ctx_entry
        .hidden weft__ctx_entry
        .type   weft__ctx_entry, @function
        .p2align 4
weft__ctx_entry:
        .cfi_startproc
        .cfi_undefined rip              /* unwinders stop here: outermost frame */
        endbr64                         /* IBT landing pad: reached by `jmp *` */
        movq    %r12, %rdi              /* entry(arg) */
        leaq    1f(%rip), %rax
        pushq   %rax                    /* its return address: the trap, as `call` would push */
        jmp     *%r13                   /* entry starts with endbr64, as for a call */
1:      ud2
        .cfi_endproc
        .size   weft__ctx_entry, .-weft__ctx_entry

/* GNU property note: this object is IBT-compatible: its one indirect-branch
 * target, weft__ctx_entry, starts with endbr64 (weft__ctx_jump is reached by a
 * direct jmp only, and the resume points in C start with endbr64, see
 * arch/ctx.h). Bit 0 = IBT; bit 1 (SHSTK) is not claimed. */
        .section .note.gnu.property, "a"
        .p2align 3
        .long   4                       /* n_namesz: "GNU\0" */
        .long   16                      /* n_descsz */
        .long   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .long   0xc0000002              /* GNU_PROPERTY_X86_FEATURE_1_AND */
        .long   4                       /* pr_datasz */
        .long   1                       /* GNU_PROPERTY_X86_FEATURE_1_IBT */
        .long   0                       /* pad to 8 */

#endif

        .section .note.GNU-stack, "", @progbits   /* no executable stack */
