/* SPDX-License-Identifier: MIT */
/*
 * runtime/ctx_x86_64.S - the stack switch for x86-64 SysV (see ctx.h).
 *
 * A suspended context is its stack pointer; the saved state sits on its
 * own stack, 64 bytes, lowest address first:
 *
 *	sp+0	MXCSR (4 bytes), x87 control word (2), padding (2)
 *	sp+8	r15
 *	sp+16	r14
 *	sp+24	r13		(made context: arg)
 *	sp+32	r12		(made context: entry)
 *	sp+40	rbx
 *	sp+48	rbp		(made context: 0, ends frame-pointer walks)
 *	sp+56	resume address	(made context: weft__ctx_trampoline)
 *
 * Only the callee-saved state of the SysV ABI is saved: the swap is an
 * ordinary call, so the compiler already keeps everything else out of
 * registers across it. MXCSR and the x87 control word are callee-saved
 * "control bits" in the ABI, so they belong to the context (fesetround()
 * in one fiber must not change another's rounding). The vector registers
 * are all caller-saved on SysV.
 *
 * Cost (measured: 2.5 GHz Xeon VM, -O2, 10M round trips, pinned): about
 * 4 ns a switch; ending with "ret" instead made it 14-20 ns. Two choices:
 *   - the swap ends with "pop %rcx; jmp *%rcx", not "ret": the CPU's
 *     return-stack predictor always guesses the caller of this very swap
 *     (the other context), so every "ret" mispredicted; the indirect
 *     branch predictor learns switch patterns. (Boost.Context does the
 *     same.) "notrack" keeps the jump legal under IBT, where the target, a
 *     return address, has no endbr64.
 *   - MXCSR and the CW are loaded only when their control bits differ
 *     from the suspending context's, so the common case pays a compare
 *     instead of LDMXCSR/FLDCW, which serialize on some cores (no
 *     difference measured on an idle machine here; one loaded run showed
 *     80+ ns with them). MXCSR status flags (bits 0-5) are caller-saved in
 *     the ABI and not compared.
 *
 * Alignment: a made context enters the trampoline with rsp % 16 == 0, so
 * its "call weft__ctx_start" gives the callee the ABI's rsp % 16 == 8.
 *
 * CET: every entry point starts with endbr64 (a NOP without IBT), so they
 * may be reached by an indirect branch (PLT, function pointer) when IBT is
 * enforced ("notrack jmp" needs the OS to allow NOTRACK, as the jump
 * tables gcc emits under -fcf-protection do). The object advertises IBT
 * but never SHSTK, whatever -fcf-protection says: each swap is a call that
 * returns on another stack, which a hardware shadow stack would (rightly)
 * refuse, so a program linking this file must not run with shadow stacks
 * (the linker drops SHSTK from the output when one input lacks it).
 * Supporting SHSTK needs a shadow stack per fiber (map_shadow_stack,
 * rstorssp); dropped for now.
 */
#if defined(__x86_64__)

	.text

/* Push the callee-saved registers and make room for the FP words. */
.macro SWAP_SAVE_REGS
	endbr64
	pushq	%rbp
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbp, 0
	pushq	%rbx
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbx, 0
	pushq	%r12
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r12, 0
	pushq	%r13
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r13, 0
	pushq	%r14
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r14, 0
	pushq	%r15
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r15, 0
	subq	$8, %rsp
	.cfi_adjust_cfa_offset 8
.endm

/*
 * With the suspending context's MXCSR in eax and x87 CW in dx, and its FP
 * words at (%rsp): publish the suspended stack, move to the resumed one,
 * load its FP words where their control bits differ, pop and jump.
 */
.macro SWAP_RESUME
	/* The suspended stack is complete: publish it, then leave it. */
	movq	%rsp, (%rdi)
	movq	%rsi, %rsp
	/* Same layout on the resumed stack, so the CFI above holds. */
	xorl	(%rsp), %eax
	testl	$0xffc0, %eax		/* MXCSR control bits differ? */
	jnz	3f
1:
	cmpw	4(%rsp), %dx
	jne	4f
2:
	.cfi_remember_state
	addq	$8, %rsp
	.cfi_adjust_cfa_offset -8
	popq	%r15
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r15
	popq	%r14
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r14
	popq	%r13
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r13
	popq	%r12
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r12
	popq	%rbx
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	popq	%rbp
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbp
	/* "pop; jmp", not "ret": see the header comment. */
	popq	%rcx
	.cfi_adjust_cfa_offset -8
	.cfi_register %rip, %rcx
	notrack jmp *%rcx

	/* Rare: the resumed context runs another rounding mode etc. */
	.cfi_restore_state
3:
	ldmxcsr	(%rsp)
	jmp	1b
4:
	fldcw	4(%rsp)
	jmp	2b
.endm

/* void weft__ctx_swap(void **save_sp, void *new_sp) */
	.globl	weft__ctx_swap
	.hidden	weft__ctx_swap
	.type	weft__ctx_swap, @function
	.p2align 4
weft__ctx_swap:
	.cfi_startproc
	SWAP_SAVE_REGS
	stmxcsr	(%rsp)
	fnstcw	4(%rsp)
	movl	(%rsp), %eax		/* our MXCSR and x87 CW, to compare */
	movzwl	4(%rsp), %edx
	SWAP_RESUME
	.cfi_endproc
	.size	weft__ctx_swap, .-weft__ctx_swap

/*
 * void weft__ctx_swap_known(void **save_sp, void *new_sp, uint64_t fp)
 * As weft__ctx_swap(), for a caller whose MXCSR and x87 CW are known to
 * be @fp (MXCSR in bits 0-31, CW in 32-47): they are stored, not read.
 * STMXCSR and FNSTCW cost ~8 ns together here, a third of a switch.
 */
	.globl	weft__ctx_swap_known
	.hidden	weft__ctx_swap_known
	.type	weft__ctx_swap_known, @function
	.p2align 4
weft__ctx_swap_known:
	.cfi_startproc
	SWAP_SAVE_REGS
	movq	%rdx, (%rsp)
	movl	%edx, %eax
	shrq	$32, %rdx		/* dx = CW */
	SWAP_RESUME
	.cfi_endproc
	.size	weft__ctx_swap_known, .-weft__ctx_swap_known

/*
 * The first swap to a made context "returns" here with r12 = entry,
 * r13 = arg and rsp % 16 == 0. The return address is undefined so that
 * unwinders and debuggers stop at this frame.
 */
	.globl	weft__ctx_trampoline
	.hidden	weft__ctx_trampoline
	.type	weft__ctx_trampoline, @function
	.p2align 4
weft__ctx_trampoline:
	.cfi_startproc
	.cfi_undefined %rip
	endbr64
	movq	%r12, %rdi
	movq	%r13, %rsi
	call	weft__ctx_start@PLT
	ud2			/* weft__ctx_start() never returns */
	.cfi_endproc
	.size	weft__ctx_trampoline, .-weft__ctx_trampoline

/* void *weft__ctx_init_stack(void *top, void (*entry)(void *), void *arg) */
	.globl	weft__ctx_init_stack
	.hidden	weft__ctx_init_stack
	.type	weft__ctx_init_stack, @function
	.p2align 4
weft__ctx_init_stack:
	.cfi_startproc
	endbr64
	movq	%rdi, %rax
	andq	$-16, %rax
	subq	$16, %rax		/* rsp at the trampoline; 16 zero */
	movq	$0, (%rax)		/* bytes above it for unwinders */
	movq	$0, 8(%rax)
	leaq	weft__ctx_trampoline(%rip), %rcx
	movq	%rcx, -8(%rax)		/* return address */
	movq	$0, -16(%rax)		/* rbp */
	movq	$0, -24(%rax)		/* rbx */
	movq	%rsi, -32(%rax)		/* r12 = entry */
	movq	%rdx, -40(%rax)		/* r13 = arg */
	movq	$0, -48(%rax)		/* r14 */
	movq	$0, -56(%rax)		/* r15 */
	movq	$0, -64(%rax)
	stmxcsr	-64(%rax)		/* inherit the caller's FP control */
	fnstcw	-60(%rax)
	subq	$64, %rax
	ret
	.cfi_endproc
	.size	weft__ctx_init_stack, .-weft__ctx_init_stack

/* GNU_PROPERTY_X86_FEATURE_1_AND = IBT only (see the header comment). */
#if defined(__CET__) && (__CET__ & 1)
	.pushsection .note.gnu.property, "a"
	.p2align 3
	.long	4			/* name size */
	.long	16			/* descriptor size */
	.long	5			/* NT_GNU_PROPERTY_TYPE_0 */
	.asciz	"GNU"
	.long	0xc0000002		/* GNU_PROPERTY_X86_FEATURE_1_AND */
	.long	4			/* pr_datasz */
	.long	1			/* GNU_PROPERTY_X86_FEATURE_1_IBT */
	.p2align 3
	.popsection
#endif

#endif /* __x86_64__ */

/* Not executable-stack, on every architecture (RELIABILITY H5). */
#if defined(__arm__)
	.section .note.GNU-stack,"",%progbits
#else
	.section .note.GNU-stack,"",@progbits
#endif
