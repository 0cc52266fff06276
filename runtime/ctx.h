/* SPDX-License-Identifier: MIT */
/*
 * runtime/ctx.h - execution contexts: the stack switch and its tool hooks.
 *
 * A context is a saved stack pointer. Everything else a suspended context
 * needs (callee-saved registers, the floating-point control state, the
 * return address) sits on its own stack, pushed by weft__ctx_swap() in
 * ctx_<arch>.S. The C side adds only what the tools must be told when the
 * stack changes under them:
 *
 *   ASan   __sanitizer_start_switch_fiber() before the swap names the
 *          destination stack; __sanitizer_finish_switch_fiber() after it,
 *          on the destination, restores that stack's fake stack. A fresh
 *          context does the "after" half in weft__ctx_start().
 *   TSan   each made context has a TSan fiber; __tsan_switch_to_fiber(to, 0)
 *          right before the swap (flag 0: the switch is a happens-before
 *          edge, as a hand-off of the CPU is).
 *   valgrind (WEFT_VALGRIND) every made stack is registered so memcheck
 *          does not take the switch for a wild stack-pointer change.
 *
 * The switch protocol, for the side that suspends:
 *   1. tool "before" hooks name @to (its stack bounds, its TSan fiber);
 *   2. weft__ctx_swap() saves the registers on the current stack and the
 *      stack pointer in @from->sp, loads @to->sp and returns on @to;
 *   3. when someone later switches back to @from, the swap "returns" and
 *      the ASan "after" hook runs on @from's stack again.
 * A finished context makes its last switch with weft__ctx_switch_final():
 * ASan frees its fake stack and unpoisons what its frames left behind, and
 * nothing may resume it. Another context then calls weft__ctx_destroy().
 *
 * Ownership: a context is not synchronised. Exactly one thread may switch
 * to a given context at a time, and only after the switch that saved it
 * has completed (its sp is written by the swap itself, last thing before
 * the stack change). The scheduler above guarantees that (fiber states).
 *
 * Floating point: MXCSR and the x87 control word (aarch64: FPCR) are part
 * of a context, so fesetround() in one fiber does not leak into another. A
 * made context starts with the control state of whoever called
 * weft__ctx_make(), as a new thread inherits its creator's.
 *
 * Dropped: ucontext (swapcontext makes a sigprocmask syscall each time) and
 * a separate "first switch" entry in assembly (the trampoline plus the
 * first swap cost nothing extra and keep one code path).
 *
 * The #ifdef blocks of this file are the only conditional code of the
 * mechanism: each hook has a no-op stub, so ctx.c and callers never test a
 * build flag.
 */
#ifndef WEFT_RUNTIME_CTX_H
#define WEFT_RUNTIME_CTX_H

#include "internal.h"

#if defined(WEFT__ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(WEFT__TSAN)
#include <sanitizer/tsan_interface.h>
#endif
#if defined(WEFT_VALGRIND)
#include <valgrind/valgrind.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT__CTX_INLINE static inline __attribute__((always_inline))

/*
 * struct weft__ctx - one execution context (a fiber or a thread's own).
 * Written by the context's owner (the code switching away from it or
 * preparing it); read by the one thread that switches to it next.
 */
struct weft__ctx {
	/* saved stack pointer while switched out; written by the swap only */
	void *sp;
	/* a thread context: its FP control words (weft__ctx_fp_read()), the
	 * same whenever it switches away (weft__ctx_switch_from_thread()) */
	uint64_t fp;
	/* sanitizer / valgrind bookkeeping: */
	/* the stack this context runs on; NULL/0 for a thread's own stack
	 * (ASan builds fill in the thread's bounds: ASan needs them) */
	const void *stack_lo;
	size_t stack_size;
	void *asan_fake_stack; /* ASan: fake-stack save slot while out */
	/* TSan: the fiber object (for weft__ctx_init_thread(), the thread's
	 * own, which belongs to TSan) */
	void *tsan_fiber;
	unsigned valgrind_id; /* valgrind stack id (WEFT_VALGRIND) */
};

/**
 * weft__ctx_init_thread() - Describe the calling thread's own context.
 * @c: storage for the context; fully overwritten.
 *
 * A worker's scheduler context: it runs on the thread's stack, so there is
 * nothing to prepare; the first switch away from it fills @c->sp. Its FP
 * control words are read now (@c->fp). It needs no weft__ctx_destroy().
 *
 * Context: the thread @c describes (the one that will switch away from it).
 */
void weft__ctx_init_thread(struct weft__ctx *c);

/**
 * weft__ctx_make() - Prepare a context that starts @entry(@arg) on a stack.
 * @c: storage for the context; fully overwritten (a reused context must
 *     have been weft__ctx_destroy()ed).
 * @stack_lo: lowest usable byte of the stack.
 * @size: usable bytes; the top, @stack_lo + @size, is where the first
 *        frame goes (aligned down to 16 bytes).
 * @entry: run at the first switch to @c; must never return (it ends with
 *         weft__ctx_switch_final()). Returning is a BUG.
 * @arg: passed to @entry.
 *
 * Writes the first frame at the top of the stack (touches its top page
 * only), captures the caller's floating-point control state for @entry,
 * creates the TSan fiber and registers the stack with valgrind.
 *
 * Context: any thread; the stack must not be in use.
 */
void weft__ctx_make(struct weft__ctx *c, void *stack_lo, size_t size,
		    void (*entry)(void *), void *arg);

/**
 * weft__ctx_swap() - The raw switch (assembly): no tool hooks.
 * @save_sp: where to store the current stack pointer.
 * @new_sp: a stack pointer saved by weft__ctx_swap() or made by
 *          weft__ctx_init_stack().
 *
 * Saves the callee-saved registers and the FP control state on the
 * current stack, stores the stack pointer in *@save_sp, then restores
 * the same from @new_sp. Returns when someone swaps back to *@save_sp.
 * Use weft__ctx_switch() instead, unless tools are known to be absent.
 */
void weft__ctx_swap(void **save_sp, void *new_sp);

/*
 * weft__ctx_fp_read() - The calling thread's FP control words as the swap
 * saves them: x86-64 MXCSR in bits 0-31 and the x87 control word in
 * 32-47; 0 where the swap needs no hint (aarch64 reads FPCR, ~1 cycle).
 */
WEFT__CTX_INLINE uint64_t weft__ctx_fp_read(void)
{
#if defined(__x86_64__)
	uint32_t mxcsr;
	uint16_t cw;

	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
	__asm__ volatile("fnstcw %0" : "=m"(cw));
	return mxcsr | (uint64_t)cw << 32;
#else
	return 0;
#endif
}

#if defined(__x86_64__)
/*
 * weft__ctx_swap_known() - (assembly) weft__ctx_swap() for a caller whose
 * FP control words are known to be @fp (as weft__ctx_fp_read() gives):
 * they are stored instead of read, which saves STMXCSR and FNSTCW (~8 ns
 * together on the machine measured, a third of a switch).
 */
void weft__ctx_swap_known(void **save_sp, void *new_sp, uint64_t fp);
#else
WEFT__CTX_INLINE void weft__ctx_swap_known(void **save_sp, void *new_sp,
					   uint64_t fp)
{
	(void)fp;
	weft__ctx_swap(save_sp, new_sp);
}
#endif

/*
 * weft__ctx_init_stack() - (assembly) write the first frame below @top so
 * that the first weft__ctx_swap() to the returned stack pointer enters
 * weft__ctx_start(@entry, @arg) through the trampoline with the ABI stack
 * alignment. Used by weft__ctx_make() only.
 */
void *weft__ctx_init_stack(void *top, void (*entry)(void *), void *arg);

/*
 * weft__ctx_start() - (ctx.c) the first C code of every made context,
 * called by the assembly trampoline: completes the tool side of the first
 * switch, then runs @entry(@arg). Never returns.
 */
void weft__ctx_start(void (*entry)(void *), void *arg)
	__attribute__((noreturn));

/*
 * weft__ctx_thread_stack() - (ctx.c) bounds of the calling thread's own
 * stack, via pthread_getattr_np(). Used by the ASan hook only; *@lo and *@size
 * are NULL/0 when unknown.
 */
void weft__ctx_thread_stack(const void **lo, size_t *size);

/* ---- ASan hooks -------------------------------------------------------- */
#if defined(WEFT__ASAN)
WEFT__CTX_INLINE void weft__ctx_asan_init_thread(struct weft__ctx *c)
{
	weft__ctx_thread_stack(&c->stack_lo, &c->stack_size);
}
/* Before the swap: ASan will run on @to's stack; stash our fake stack. */
WEFT__CTX_INLINE void weft__ctx_asan_before(struct weft__ctx *from,
					    const struct weft__ctx *to)
{
	__sanitizer_start_switch_fiber(&from->asan_fake_stack, to->stack_lo,
				       to->stack_size);
}
/* Before the last swap of a finished context: its frames never return, so
 * unpoison them (the stack will be reused) and free its fake stack (NULL
 * save slot). */
WEFT__CTX_INLINE void weft__ctx_asan_before_final(const struct weft__ctx *to)
{
	__asan_handle_no_return();
	__sanitizer_start_switch_fiber(NULL, to->stack_lo, to->stack_size);
}
/* After the swap, on the resumed stack; @fake_stack NULL on a first run. */
WEFT__CTX_INLINE void weft__ctx_asan_after(void *fake_stack)
{
	__sanitizer_finish_switch_fiber(fake_stack, NULL, NULL);
}
#else
WEFT__CTX_INLINE void weft__ctx_asan_init_thread(struct weft__ctx *c)
{
	(void)c;
}
WEFT__CTX_INLINE void weft__ctx_asan_before(struct weft__ctx *from,
					    const struct weft__ctx *to)
{
	(void)from;
	(void)to;
}
WEFT__CTX_INLINE void weft__ctx_asan_before_final(const struct weft__ctx *to)
{
	(void)to;
}
WEFT__CTX_INLINE void weft__ctx_asan_after(void *fake_stack)
{
	(void)fake_stack;
}
#endif

/* ---- TSan hooks -------------------------------------------------------- */
#if defined(WEFT__TSAN)
WEFT__CTX_INLINE void weft__ctx_tsan_init_thread(struct weft__ctx *c)
{
	c->tsan_fiber = __tsan_get_current_fiber();
}
WEFT__CTX_INLINE void weft__ctx_tsan_make(struct weft__ctx *c)
{
	c->tsan_fiber = __tsan_create_fiber(0);
}
/* Immediately before the swap, in the function that swaps. */
WEFT__CTX_INLINE void weft__ctx_tsan_before(const struct weft__ctx *to)
{
	__tsan_switch_to_fiber(to->tsan_fiber, 0);
}
/* A thread's own fiber (stack_lo NULL in TSan builds) belongs to TSan. */
WEFT__CTX_INLINE void weft__ctx_tsan_destroy(struct weft__ctx *c)
{
	if (c->stack_lo && c->tsan_fiber)
		__tsan_destroy_fiber(c->tsan_fiber);
	c->tsan_fiber = NULL;
}
#else
WEFT__CTX_INLINE void weft__ctx_tsan_init_thread(struct weft__ctx *c)
{
	(void)c;
}
WEFT__CTX_INLINE void weft__ctx_tsan_make(struct weft__ctx *c)
{
	(void)c;
}
WEFT__CTX_INLINE void weft__ctx_tsan_before(const struct weft__ctx *to)
{
	(void)to;
}
WEFT__CTX_INLINE void weft__ctx_tsan_destroy(struct weft__ctx *c)
{
	(void)c;
}
#endif

/* ---- valgrind hooks (WEFT_VALGRIND builds) ----------------------------- */
#if defined(WEFT_VALGRIND)
WEFT__CTX_INLINE void weft__ctx_valgrind_make(struct weft__ctx *c)
{
	c->valgrind_id = VALGRIND_STACK_REGISTER(
		c->stack_lo, (const char *)c->stack_lo + c->stack_size);
}
/* Thread contexts (stack_lo NULL) were never registered. */
WEFT__CTX_INLINE void weft__ctx_valgrind_destroy(struct weft__ctx *c)
{
	if (c->stack_lo)
		VALGRIND_STACK_DEREGISTER(c->valgrind_id);
	c->valgrind_id = 0;
}
#else
WEFT__CTX_INLINE void weft__ctx_valgrind_make(struct weft__ctx *c)
{
	(void)c;
}
WEFT__CTX_INLINE void weft__ctx_valgrind_destroy(struct weft__ctx *c)
{
	(void)c;
}
#endif

/**
 * weft__ctx_switch() - Suspend the current context into @from, resume @to.
 * @from: the context now running (its sp and fake stack are saved here).
 * @to: a context made by weft__ctx_make() and not yet run, or one saved by
 *      an earlier switch; never @from.
 *
 * Returns when some thread switches back to @from (possibly another thread
 * than the one that called: a fiber may migrate between workers). Always
 * inline so the TSan fiber switch and the swap happen in the same frame
 * (tsan_interface.h: "immediately before switch to fiber").
 *
 * Context: the thread running @from.
 */
WEFT__CTX_INLINE void weft__ctx_switch(struct weft__ctx *from,
				       struct weft__ctx *to)
{
	weft__ctx_asan_before(from, to);
	weft__ctx_tsan_before(to);
	weft__ctx_swap(&from->sp, to->sp);
	weft__ctx_asan_after(from->asan_fake_stack);
}

/**
 * weft__ctx_switch_from_thread() - weft__ctx_switch() from a thread context.
 * @from: made by weft__ctx_init_thread() on this thread, whose code never
 *        changes the FP control state (a worker's scheduler: runtime code
 *        only), so @from->fp still holds it and need not be read.
 * @to: as for weft__ctx_switch().
 *
 * The FP state of @to is restored exactly as by weft__ctx_switch(); a
 * debug build checks that @from's state did not change.
 *
 * Context: the thread @from describes.
 */
WEFT__CTX_INLINE void weft__ctx_switch_from_thread(struct weft__ctx *from,
						   struct weft__ctx *to)
{
#ifndef NDEBUG
	/* Control bits only: MXCSR's status flags (0-5) are the last
	 * task's, caller-saved, and never compared by the swap. */
	WEFT__BUG_ON(((weft__ctx_fp_read() ^ from->fp) &
		      ~(uint64_t)0x3f) != 0);
#endif
	weft__ctx_asan_before(from, to);
	weft__ctx_tsan_before(to);
	weft__ctx_swap_known(&from->sp, to->sp, from->fp);
	weft__ctx_asan_after(from->asan_fake_stack);
}

/**
 * weft__ctx_switch_final() - The last switch of a finished context.
 * @from: the running context; it is never resumed (its saved sp is
 *        garbage). Its stack may be reused once this switch has completed,
 *        i.e. from code running on @to or later.
 * @to: as for weft__ctx_switch().
 *
 * ASan: frees @from's fake stack and unpoisons its leftover frames;
 * valgrind: nothing (deregistration is weft__ctx_destroy()).
 *
 * Context: the thread running @from.
 */
void weft__ctx_switch_final(struct weft__ctx *from, struct weft__ctx *to)
	__attribute__((noreturn));

/**
 * weft__ctx_destroy() - Release a made context's tool state.
 * @c: a context made by weft__ctx_make() that has made its final switch
 *     or never ran. A thread context needs no destroy (a no-op on one).
 *
 * Frees the TSan fiber and deregisters the valgrind stack. Must not run on
 * @c itself: call it from the context @c switched to, or later.
 *
 * Context: any thread, after @c's final switch has completed.
 */
void weft__ctx_destroy(struct weft__ctx *c);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_RUNTIME_CTX_H */
