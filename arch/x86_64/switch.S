/*
 * x86-64 System V context switch.
 *
 *   void weft__ctx_swap(weft__ctx *from, const weft__ctx *to);
 *                                 rdi               rsi
 *
 * Saved state (offsets into weft__ctx, pinned by _Static_assert in arch/ctx.h):
 *
 *   0x00 rsp     stack pointer; points at the return address pushed by `call`
 *   0x08 rbx
 *   0x10 rbp
 *   0x18 r12     a new context: the argument for its entry function
 *   0x20 r13     a new context: its entry function
 *   0x28 r14
 *   0x30 r15
 *   0x38 mxcsr   SSE rounding mode, exception masks, DAZ/FTZ (4 bytes)
 *   0x3c fpucw   x87 control word: precision and rounding (2 bytes)
 *
 * psABI rules relied on:
 *   - rbx, rbp, r12-r15, rsp, the MXCSR control bits and the x87 control word
 *     are callee-saved; every other register is clobbered by a call, so the
 *     caller of this function has already saved whatever it needs of them.
 *   - The return address stays on the stack: the swap saves rsp pointing at it
 *     and resumes with `ret`. No register is needed to carry it.
 *   - rsp+8 is 16-aligned at a function's entry. weft__ctx_init() arranges for
 *     weft__ctx_entry to start with rsp 16-aligned so that its `call` honours it.
 *   - The red zone (128 bytes below rsp) belongs to the caller's frame, which is
 *     suspended while another context runs on another stack: nothing here
 *     writes below rsp.
 *
 * Pitfalls:
 *   - MXCSR's status flags travel with the control bits; that is harmless, as a
 *     coroutine only sees flags it raised itself.
 *   - Resuming with `ret` is predicted right when both contexts switched from
 *     the same call site, as inside the scheduler (yield, park), and wrong
 *     otherwise. `pop` + `notrack jmp` would suit two unrelated call sites
 *     (a raw switch measured 5.4 ns instead of 12.4 ns), but it leaves the
 *     return-stack buffer one entry off, and every later `ret` up the caller's
 *     chain mispredicts: weft_yield went from about 16 ns to 22 ns. The
 *     scheduler's path wins; `ret` stays.
 *   - Shadow stacks (CET SHSTK) are not switched here, so this object claims IBT
 *     compatibility only, never SHSTK.
 */

#if defined(__x86_64__)

        .text

        .globl  weft__ctx_swap
        .hidden weft__ctx_swap
        .type   weft__ctx_swap, @function
        .p2align 4
weft__ctx_swap:
        .cfi_startproc
        endbr64                         /* IBT landing pad: reached by `call` */
        movq    %rsp, 0x00(%rdi)        /* save rsp (-> our return address) */
        movq    %rbx, 0x08(%rdi)        /* save callee-saved integers */
        movq    %rbp, 0x10(%rdi)
        movq    %r12, 0x18(%rdi)
        movq    %r13, 0x20(%rdi)
        movq    %r14, 0x28(%rdi)
        movq    %r15, 0x30(%rdi)
        stmxcsr 0x38(%rdi)              /* save SSE control */
        fnstcw  0x3c(%rdi)              /* save x87 control */

        movq    0x00(%rsi), %rsp        /* adopt the other stack */
        movq    0x08(%rsi), %rbx        /* restore callee-saved integers */
        movq    0x10(%rsi), %rbp
        movq    0x18(%rsi), %r12
        movq    0x20(%rsi), %r13
        movq    0x28(%rsi), %r14
        movq    0x30(%rsi), %r15
        ldmxcsr 0x38(%rsi)              /* restore SSE control */
        fldcw   0x3c(%rsi)              /* restore x87 control */
        ret                             /* resume where *to last called us */
        .cfi_endproc
        .size   weft__ctx_swap, .-weft__ctx_swap

/*
 * First code run by a new context: r12 = arg, r13 = entry, rsp 16-aligned,
 * rbp 0 (end of the frame-pointer chain). entry() never returns; if it did, the
 * `ud2` stops the program instead of running off into unrelated memory.
 */
        .globl  weft__ctx_entry
        .hidden weft__ctx_entry
        .type   weft__ctx_entry, @function
        .p2align 4
weft__ctx_entry:
        .cfi_startproc
        .cfi_undefined rip              /* unwinders stop here: outermost frame */
        endbr64
        movq    %r12, %rdi              /* entry(arg) */
        call    *%r13
        ud2
        .cfi_endproc
        .size   weft__ctx_entry, .-weft__ctx_entry

/* GNU property note: this object is IBT-compatible (every indirect branch
 * target starts with endbr64). Bit 0 = IBT; bit 1 (SHSTK) is not claimed. */
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
