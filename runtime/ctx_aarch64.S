/* SPDX-License-Identifier: MIT */
/*
 * runtime/ctx_aarch64.S - the stack switch for AArch64 (AAPCS64; see ctx.h).
 *
 * A suspended context is its stack pointer; the saved state sits on its
 * own stack, 176 bytes (a multiple of 16, as sp must stay), lowest first:
 *
 *	sp+0	x19, x20	(made context: entry, arg)
 *	sp+16	x21, x22
 *	sp+32	x23, x24
 *	sp+48	x25, x26
 *	sp+64	x27, x28
 *	sp+80	x29, x30	(made context: 0, weft__ctx_trampoline)
 *	sp+96	d8 .. d15	(the low halves of v8-v15 are callee-saved)
 *	sp+160	FPCR, padding
 *
 * Only the AAPCS64 callee-saved state is kept: the swap is an ordinary
 * call. x18 (platform register) is left alone. FPCR holds the rounding
 * mode and FZ/DN, which are per context like MXCSR on x86-64; writing it
 * can be slow on some cores, so it is written only when it differs.
 *
 * A made context enters the trampoline with sp 16-aligned and x29 = 0,
 * which ends frame-record walks; the trampoline marks x30 undefined for
 * CFI unwinders.
 *
 * The swap returns with "ret" although the return predictor then guesses
 * wrong (x86-64 uses "pop; jmp" for that reason): a "br x30" would need a
 * BTI landing pad at every return address. Untested on hardware here;
 * assembled with aarch64-linux-gnu-gcc 12 and run under qemu-aarch64.
 *
 * BTI: entry points start with "hint #34" (bti c; a NOP on cores without
 * BTI). The trampoline is reached by "ret", which BTI does not check. The
 * BTI property note is emitted when the compiler builds with BTI
 * (-mbranch-protection); PAC is not advertised: the swap moves x30 between
 * stacks without signing it, which pac-ret code never sees anyway (each
 * function signs and checks its own x30 on its own stack).
 */
#if defined(__aarch64__)

	.text

/* void weft__ctx_swap(void **save_sp, void *new_sp) */
	.globl	weft__ctx_swap
	.hidden	weft__ctx_swap
	.type	weft__ctx_swap, %function
	.p2align 4
weft__ctx_swap:
	.cfi_startproc
	hint	#34			/* bti c */
	sub	sp, sp, #176
	.cfi_def_cfa_offset 176
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	.cfi_offset x19, -176
	.cfi_offset x20, -168
	.cfi_offset x21, -160
	.cfi_offset x22, -152
	.cfi_offset x23, -144
	.cfi_offset x24, -136
	.cfi_offset x25, -128
	.cfi_offset x26, -120
	.cfi_offset x27, -112
	.cfi_offset x28, -104
	.cfi_offset x29, -96
	.cfi_offset x30, -88
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	mrs	x9, fpcr
	str	x9, [sp, #160]
	/* The suspended stack is complete: publish it, then leave it. */
	mov	x10, sp
	str	x10, [x0]
	mov	sp, x1
	/* Same layout on the resumed stack, so the CFI above holds. */
	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	ldr	x10, [sp, #160]
	cmp	x9, x10
	b.eq	1f
	msr	fpcr, x10
1:
	add	sp, sp, #176
	.cfi_def_cfa_offset 0
	.cfi_restore x19
	.cfi_restore x20
	.cfi_restore x21
	.cfi_restore x22
	.cfi_restore x23
	.cfi_restore x24
	.cfi_restore x25
	.cfi_restore x26
	.cfi_restore x27
	.cfi_restore x28
	.cfi_restore x29
	.cfi_restore x30
	ret
	.cfi_endproc
	.size	weft__ctx_swap, .-weft__ctx_swap

/*
 * The first swap to a made context "returns" here with x19 = entry,
 * x20 = arg and sp 16-aligned.
 */
	.globl	weft__ctx_trampoline
	.hidden	weft__ctx_trampoline
	.type	weft__ctx_trampoline, %function
	.p2align 4
weft__ctx_trampoline:
	.cfi_startproc
	.cfi_undefined x30
	hint	#34			/* bti c */
	mov	x0, x19
	mov	x1, x20
	bl	weft__ctx_start
	brk	#1			/* weft__ctx_start() never returns */
	.cfi_endproc
	.size	weft__ctx_trampoline, .-weft__ctx_trampoline

/* void *weft__ctx_init_stack(void *top, void (*entry)(void *), void *arg) */
	.globl	weft__ctx_init_stack
	.hidden	weft__ctx_init_stack
	.type	weft__ctx_init_stack, %function
	.p2align 4
weft__ctx_init_stack:
	.cfi_startproc
	hint	#34			/* bti c */
	and	x0, x0, #~15
	sub	x0, x0, #16		/* sp at the trampoline; 16 zero */
	stp	xzr, xzr, [x0]		/* bytes above it for unwinders */
	sub	x0, x0, #176
	stp	x1, x2, [x0, #0]	/* x19 = entry, x20 = arg */
	stp	xzr, xzr, [x0, #16]
	stp	xzr, xzr, [x0, #32]
	stp	xzr, xzr, [x0, #48]
	stp	xzr, xzr, [x0, #64]
	adrp	x9, weft__ctx_trampoline
	add	x9, x9, :lo12:weft__ctx_trampoline
	stp	xzr, x9, [x0, #80]	/* x29 = 0, x30 = trampoline */
	stp	xzr, xzr, [x0, #96]
	stp	xzr, xzr, [x0, #112]
	stp	xzr, xzr, [x0, #128]
	stp	xzr, xzr, [x0, #144]
	mrs	x9, fpcr		/* inherit the caller's FP control */
	stp	x9, xzr, [x0, #160]
	ret
	.cfi_endproc
	.size	weft__ctx_init_stack, .-weft__ctx_init_stack

/* GNU_PROPERTY_AARCH64_FEATURE_1_AND = BTI, when built for BTI. */
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
	.pushsection .note.gnu.property, "a"
	.p2align 3
	.long	4			/* name size */
	.long	16			/* descriptor size */
	.long	5			/* NT_GNU_PROPERTY_TYPE_0 */
	.asciz	"GNU"
	.long	0xc0000000		/* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
	.long	4			/* pr_datasz */
	.long	1			/* GNU_PROPERTY_AARCH64_FEATURE_1_BTI */
	.p2align 3
	.popsection
#endif

#endif /* __aarch64__ */

/* Not executable-stack, on every architecture (RELIABILITY H5). */
	.section .note.GNU-stack,"",%progbits
