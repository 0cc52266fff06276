/* SPDX-License-Identifier: MIT */
/*
 * runtime/stack.h - fiber stacks (chunks, guards, caches) and the
 * stack-overflow reporter. Theory of operation: runtime/stack.c.
 */
#ifndef WEFT_RUNTIME_STACK_H
#define WEFT_RUNTIME_STACK_H

#include "internal.h"

#include <pthread.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Default usable size of a fiber stack before sanitizer scaling. */
#define WEFT__STACK_DEFAULT_SIZE ((size_t)256 << 10)
/* Smallest usable size handed out: requests below are rounded up. */
#define WEFT__STACK_MIN_SIZE ((size_t)16 << 10)
/* Largest usable size accepted (after scaling): larger is -EINVAL. */
#define WEFT__STACK_MAX_SIZE ((size_t)1 << 30)
/* Default stacks carved from one chunk mapping. */
#define WEFT__STACK_CHUNK_SLOTS 16u
/* Stacks a worker's cache keeps without any syscall or lock. */
#define WEFT__STACK_CACHE_MAX 64u
/* Stacks moved between a cache and the pool under one lock. */
#define WEFT__STACK_BATCH 32u
/* Free stacks the pool keeps with their pages however long they wait. */
#define WEFT__STACK_POOL_WARM 256u
/* A free stack beyond those has its pages dropped once it has waited this
 * long in the pool (runtime/stack.c, "Caching, and why"). */
#define WEFT__STACK_DECAY_NS ((uint64_t)2000000000)

/*
 * Instrumented code uses 2-3x the stack (redzones, no frame merging), so
 * sanitizer builds scale every requested size (RELIABILITY G4). ASan and
 * TSan also own SIGSEGV: their deadly-signal handler is in place before
 * main (so the disposition is never SIG_DFL) and prints its own
 * "stack-overflow" report, naming no task. The reporter stays off there,
 * by this stub rather than by the SIG_DFL check, so it is deterministic.
 */
#if defined(WEFT__ASAN) || defined(WEFT__TSAN)
#define WEFT__STACK_SCALE 4u
static inline bool weft__overflow_reporter_enabled(void)
{
	return false;
}
#else
#define WEFT__STACK_SCALE 1u
static inline bool weft__overflow_reporter_enabled(void)
{
	return true;
}
#endif

/*
 * struct weft__stack.flags: WEFT__STACK_CHUNK, a slot of a chunk (cached,
 * never unmapped alone); WEFT__STACK_SINGLE, its own mapping (larger than
 * the default; unmapped when put back); WEFT__STACK_GUARDED, on slot 0 of
 * a chunk only: every slot's guard was installed with the chunk
 * (stack.c guard_batch()).
 */
#define WEFT__STACK_CHUNK 0x1u
#define WEFT__STACK_SINGLE 0x2u
#define WEFT__STACK_GUARDED 0x4u

/*
 * struct weft__stack - one stack. Lives at the TOP of its own mapping (the
 * last bytes of the slot), so a stack needs no heap memory; the usable
 * stack is [lo, lo + size) and ends right below this header. The guard is
 * [lo - weft__stack_guard_size(), lo).
 * Immutable after carving except @next, which belongs to whoever holds the
 * stack while it is free (a cache's owner, or the pool under its lock).
 */
struct weft__stack {
	void *lo; /* lowest usable byte (just above the guard) */
	size_t size; /* usable bytes below this header */
	/* the whole mapping incl. the guard; for chunk stacks, the chunk */
	void *map_base;
	size_t map_size;
	struct weft__stack *next; /* free-list link while cached */
	struct weft__stack *prev; /* the pool's warm list only */
	uint64_t freed_ns; /* when it entered the pool (coarse clock) */
	/* slot 0 of a chunk only: the pool's next chunk (pool lock) */
	struct weft__stack *chunk_next;
	unsigned flags; /* WEFT__STACK_CHUNK or _SINGLE, maybe _GUARDED */
};

/*
 * struct weft__stack_cache - a worker's private free stacks (LIFO, warm
 * first). Owner only, no lock. Zero-initialise it; give it back with
 * weft__stack_cache_flush() before the worker goes away.
 */
struct weft__stack_cache {
	struct weft__stack *head;
	unsigned count; /* <= WEFT__STACK_CACHE_MAX */
};

/*
 * struct weft__stack_pool - the global source of stacks, shared by all
 * workers. Everything but the constants is protected by @lock.
 */
struct weft__stack_pool {
	pthread_mutex_t lock;
	/* Free stacks whose pages are kept, newest first (next/prev). */
	struct weft__stack *warm_head;
	struct weft__stack *warm_tail;
	/* Free stacks whose pages were dropped (next). */
	struct weft__stack *cold_head;
	unsigned nr_warm;
	unsigned nr_free; /* warm + cold */
	/* When the oldest warm stack beyond the first WEFT__STACK_POOL_WARM
	 * is due to be released (UINT64_MAX: none is): written under @lock,
	 * read without it by idle workers (__atomic, relaxed). */
	uint64_t trim_due_ns;
	uint64_t decay_ns; /* WEFT__STACK_DECAY_NS; tests shorten it */
	struct weft__stack *chunks; /* slot 0 of each chunk, chunk_next */
	unsigned chunk_slots; /* slots per chunk (constant after init) */
	size_t default_size; /* usable bytes of a default stack (const) */
	size_t slot_size; /* guard + usable + header (constant) */
	/* counters (under @lock, except nr_single: __atomic relaxed) */
	unsigned long nr_chunks; /* chunk mappings made */
	unsigned long nr_carved; /* default stacks carved so far */
	unsigned long nr_released; /* stacks whose pages were dropped */
	unsigned long nr_single; /* individual stacks alive */
	/* A default stack could not be had (weft__stack_get() failed with
	 * ENOMEM) and none has come back or been carved since: spawns check
	 * it (weft__stack_pool_failing()). __atomic, relaxed. */
	bool failing;
};

/**
 * weft__stack_pool_init() - Prepare an empty pool (maps nothing yet).
 * @p: the pool.
 * @default_size: usable bytes of a default stack; 0 means 256 KiB. Raised
 *                to WEFT__STACK_MIN_SIZE, scaled by WEFT__STACK_SCALE,
 *                then rounded up so the slot is whole pages.
 *
 * Context: any thread, before any other use of @p.
 * Return: 0; -EINVAL if the size overflows or exceeds WEFT__STACK_MAX_SIZE
 * after scaling; -ENOMEM if the lock cannot be created.
 */
int weft__stack_pool_init(struct weft__stack_pool *p, size_t default_size);

/**
 * weft__stack_pool_destroy() - Unmap every chunk.
 * @p: a pool whose stacks have all been put back and whose caches have
 *     all been flushed (a stack still out is a BUG).
 *
 * Context: any thread, once nothing else uses @p.
 */
void weft__stack_pool_destroy(struct weft__stack_pool *p);

/**
 * weft__stack_get() - Take a stack of at least @size usable bytes.
 * @p: the pool.
 * @c: the calling worker's cache.
 * @size: 0 for the default; any size up to the default gets a default
 *        stack; larger sizes (scaled like the default) get their own
 *        mapping.
 *
 * Order: @c (no syscall, no lock), then a batch from @p's free list into
 * @c, then a new chunk, whose other slots go to @c (mapped and set up
 * without @p's lock). Only the header page at the top of each stack is
 * touched; the rest commits lazily as the stack grows.
 *
 * Context: the owner of @c; never suspends (may take @p's lock, mmap).
 * Return: the stack; NULL with errno ENOMEM (no memory or too many guard
 * mappings: vm.max_map_count) or EINVAL (size too large).
 */
struct weft__stack *weft__stack_get(struct weft__stack_pool *p,
				    struct weft__stack_cache *c, size_t size);

/**
 * weft__stack_put() - Give back a stack that nothing runs on any more.
 * @p: the pool it came from.
 * @c: the calling worker's cache (need not be the one it came from).
 * @s: the stack; its contents are garbage from now on.
 *
 * Context: the owner of @c, after the final switch away from @s completed.
 */
void weft__stack_put(struct weft__stack_pool *p, struct weft__stack_cache *c,
		     struct weft__stack *s);

/**
 * weft__stack_cache_flush() - Give every stack of @c to the pool.
 * Context: the owner of @c (or anyone once the owner is gone).
 */
void weft__stack_cache_flush(struct weft__stack_pool *p,
			     struct weft__stack_cache *c);

/**
 * weft__stack_pool_trim() - Drop the pages of free stacks that are due.
 * @p: the pool.
 * @now_ns: CLOCK_MONOTONIC(_COARSE) now.
 *
 * Releases (MADV_DONTNEED) the warm stacks beyond the first
 * WEFT__STACK_POOL_WARM that have been free for @p->decay_ns or more,
 * oldest first. The pool does this itself whenever stacks are given back;
 * an idle worker calls it at weft__stack_pool_trim_due() so that memory
 * comes back after a burst even if no task ever ends again.
 *
 * Context: any thread; never suspends (takes @p's lock, madvise()).
 * Return: when the next trim is due, UINT64_MAX if none is.
 */
uint64_t weft__stack_pool_trim(struct weft__stack_pool *p, uint64_t now_ns);

/*
 * Has getting a default stack failed for want of memory or mappings, with
 * no stack given back or carved since? A racy peek (no lock): spawns look
 * before making a task that could not start (task.c).
 */
static inline bool weft__stack_pool_failing(struct weft__stack_pool *p)
{
	return __atomic_load_n(&p->failing, __ATOMIC_RELAXED);
}

/* A racy count of the pool's free stacks (no lock). */
static inline unsigned weft__stack_pool_nfree(struct weft__stack_pool *p)
{
	return __atomic_load_n(&p->nr_free, __ATOMIC_RELAXED);
}

/* When weft__stack_pool_trim() has work next (a racy peek, no lock). */
static inline uint64_t weft__stack_pool_trim_due(struct weft__stack_pool *p)
{
	return __atomic_load_n(&p->trim_due_ns, __ATOMIC_RELAXED);
}

/**
 * weft__stack_in_guard() - Is @addr inside @s's guard page(s)?
 * Context: any; async-signal-safe (reads @s only).
 */
bool weft__stack_in_guard(const struct weft__stack *s, const void *addr);

/**
 * weft__stack_guard_size() - Bytes of the guard below every stack: one
 * page. Context: any; async-signal-safe.
 */
size_t weft__stack_guard_size(void);

/* ---- overflow reporter --------------------------------------------------- */

/*
 * struct weft__overflow_info - what the current thread runs, for the
 * SIGSEGV handler. Owned by the worker; must stay valid (and unchanged)
 * while it is the thread's current record.
 */
struct weft__overflow_info {
	const struct weft__stack *stack; /* the running task's stack */
	const char *task_name; /* NUL-terminated, or NULL */
};

/**
 * weft__overflow_handler_install() - Report fiber stack overflows.
 *
 * Installs a SIGSEGV and a SIGBUS handler (SA_ONSTACK) for each of the two
 * whose disposition is SIG_DFL; a signal with any other disposition is
 * left to its owner. A fault in the current task's guard prints
 * "weft: stack overflow in task '<name>' (<N>-byte stack)" and aborts;
 * any other fault restores the previous disposition and returns, so the
 * fault repeats and crashes as it would have (a signal sent by kill(), or
 * forced by the kernel, SI_KERNEL, is re-raised). Idempotent. A no-op in
 * ASan and TSan builds (the sanitizer owns SIGSEGV).
 *
 * Context: any thread; each worker also needs weft__altstack_setup().
 * Return: 0 or -errno from sigaction().
 */
int weft__overflow_handler_install(void);

/**
 * weft__stack_guard_probe() - Decide how guards are made (MADV_GUARD_INSTALL
 * that really faults, else mprotect) on a scratch page, once per process.
 *
 * weft_runtime_new() calls it before any worker starts: the check that a
 * guard faults writes from it into a pipe, which would otherwise be made
 * by whichever worker installs the first guard (its alternate stack's)
 * while tasks already run, and show up in their count of open fds; and
 * two workers would probe at once. A no-op once decided.
 *
 * Context: any thread; may sleep (syscalls).
 */
void weft__stack_guard_probe(void);

/**
 * weft__altstack_setup() - Give the calling thread an alternate signal
 * stack (64 KiB or more, with a guard page), so the overflow handler does
 * not run on the overflowed stack.
 * @out: set to the handle for weft__altstack_teardown(); NULL when the
 *       thread already had an alternate stack, which is kept (ASan gives
 *       every thread one).
 *
 * Context: the thread itself, typically at worker start.
 * Return: 0, -ENOMEM, or -errno from sigaltstack().
 */
int weft__altstack_setup(void **out);

/**
 * weft__altstack_teardown() - Undo weft__altstack_setup() (@p may be NULL).
 * Context: the same thread, not while running on the alternate stack.
 */
void weft__altstack_teardown(void *p);

/**
 * weft__overflow_set_current() - Set the calling thread's running record.
 * @info: the task about to run (its stack and name), or NULL when the
 *        thread runs on its own (scheduler) stack.
 *
 * Context: the worker thread, on its scheduler stack, before each switch
 * into a task and (NULL) after the switch back.
 */
void weft__overflow_set_current(const struct weft__overflow_info *info);

/**
 * weft__copy_out() - memcpy() into a buffer the user passed, that gives
 * -EFAULT instead of a crash when @dst is bad (a recv served from runtime
 * memory must answer as the syscall would).
 *
 * Where the overflow handler is installed (not under sanitizers, not when
 * the program owns SIGSEGV/SIGBUS), a fault inside [@dst, @dst + @n)
 * jumps back here; elsewhere this is a plain memcpy(). Bytes before the
 * fault may have been written.
 *
 * Context: any thread; async-signal-unsafe; may be called under a
 * spinlock (no lock is taken, nothing is allocated).
 * Return: 0, or -EFAULT.
 */
int weft__copy_out(void *dst, const void *src, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_RUNTIME_STACK_H */
