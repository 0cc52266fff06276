/* SPDX-License-Identifier: MIT */
/*
 * runtime/stack.c - mmap'd fiber stacks, guard pages, per-worker stack
 * caches, and the stack-overflow reporter.
 *
 * Guarantees
 *   - Every stack has an inaccessible guard page right below its lowest
 *     usable byte, so running off the end faults instead of corrupting a
 *     neighbour, and the fault is reported with the task's name.
 *   - A stack costs no heap memory and, until it is used, one resident page
 *     (its header page at the top); the rest commits as the stack grows.
 *   - A million default stacks need about 62,500 mmap calls, not a million,
 *     and (with MADV_GUARD_INSTALL) about as many VMAs.
 *
 * Layout. A default stack is a slot of a chunk: one mapping of
 * WEFT__STACK_CHUNK_SLOTS slots (PROT_READ|WRITE, MAP_NORESERVE|MAP_STACK,
 * MADV_NOHUGEPAGE so touching one page never commits 2 MiB). A slot is
 *
 *	[guard page][usable stack ...........][struct weft__stack]
 *	^slot        ^lo               lo+size^ ^ last 64 bytes of the slot
 *
 * so the stack grows down from right below its own header, and the guard
 * of slot i+1 sits right above the header page of slot i. A chunk is
 * mapped when a worker finds its cache and the pool empty; that worker
 * sets up every slot (guard installed, header written) outside the pool's
 * lock and keeps them all (new_chunk()). A chunk's slot 0 header links the
 * chunk into the pool's chunk list, which is how
 * weft__stack_pool_destroy() finds every mapping. Stacks larger
 * than the default get their own mapping with the same layout (flag
 * WEFT__STACK_SINGLE) and are unmapped when put back: they are rare, and
 * caching them would pin large address ranges per size. Requests up to
 * the default size get a default stack (unused bytes cost no memory).
 *
 * Guards. madvise(MADV_GUARD_INSTALL) (Linux 6.13+) marks the guard in
 * the page tables without splitting the VMA, so guards do not count
 * against vm.max_map_count. Once it is known to work, a new chunk gets
 * all its slots' guards in one process_madvise() (guard_batch()). On
 * older kernels it fails with EINVAL (and
 * under qemu-user it "succeeds" doing nothing: the first guard is probed),
 * and from then on every guard is mprotect(PROT_NONE): each stack then costs
 * two VMAs and vm.max_map_count (65530 by default) caps live stacks near
 * 32k; when mprotect fails with ENOMEM we say so once, naming the sysctl,
 * and weft__stack_get() fails with ENOMEM.
 *
 * Guard size and big frames (RELIABILITY G2): the guard is one page. A
 * frame larger than a page (char buf[64 << 10], a large alloca or VLA)
 * could step over it into the slot below and silently overwrite another
 * fiber's live frames. The build uses -fstack-clash-protection, with which
 * gcc and clang probe every page of a large frame in order as they
 * allocate it, so the first probe past the usable stack always lands in
 * the guard, however big the frame. Code built without it (user code,
 * libraries) is covered only for frames under a page; a larger guard
 * would narrow that gap but never close it, and is left out.
 *
 * Caching, and why. Stacks are recycled at three levels:
 *   1. a worker's cache (LIFO, up to WEFT__STACK_CACHE_MAX = 64): get and
 *      put cost a few loads and stores, no lock, no syscall; the most
 *      recently used stack, whose top pages are still in cache and
 *      resident, is reused first;
 *   2. the pool's free list (one mutex): a cache that overflows keeps its
 *      WEFT__STACK_BATCH = 32 most recent stacks and moves the older ones
 *      in one locked splice; an empty cache takes up to 32 at once, so the
 *      lock is taken once per ~32 stacks in a spawn or exit burst;
 *   3. fresh chunks (mmap once per 16 stacks, with every slot's header
 *      page faulted in by one call: prefault_headers()), set up without
 *      the lock and handed whole to the worker that needed one.
 * Memory is given back at level 2, by age (as jemalloc's decay): stacks
 * given to the pool go to the head of its warm list, stamped with the
 * coarse clock; get() takes the newest (its pages are the most likely to
 * be resident and cached). Beyond the first WEFT__STACK_POOL_WARM = 256,
 * a warm stack that has waited WEFT__STACK_DECAY_NS = 2 s has everything
 * below its header page dropped with MADV_DONTNEED (the header page
 * stays: it holds the free-list link) and moves to the cold list, used
 * only when no warm stack is left. Trims run when stacks come back, at
 * most 32 per call and outside the lock, and from idle workers at the
 * time weft__stack_pool_trim_due() gives (worker.c park()), so memory
 * comes back within seconds of a burst even if the program goes idle.
 * Why age and not a count: touching a page that was dropped costs a page
 * fault (10-20 us under some hypervisors, where every first touch of a
 * page exits to the host), and dropping one costs an madvise() and a TLB
 * shootdown of the other workers. A program whose tasks come and go by
 * the hundred thousand (a million sleepers, a connection storm) used to
 * pay both for nearly every task once more than 256 stacks were free;
 * now a stack freed in a burst is reused warm by the next task, and only
 * memory left unused for seconds is returned. The address space is kept
 * (re-faulting zero pages is cheap; an munmap/mmap pair per stack would
 * also drop the guard). Dropped: trimming inside each cache (a syscall on
 * the hot path of every worker).
 *
 * Overflow reporting. Each worker thread has an alternate signal stack
 * (weft__altstack_setup()), and a process-wide SIGSEGV/SIGBUS handler
 * (weft__overflow_handler_install(), SA_ONSTACK) checks the fault address
 * against the guard of the task the thread runs, which the worker
 * publishes in a thread-local record before each switch
 * (weft__overflow_set_current()). A match prints the task's name with
 * write(2) only and aborts; anything else puts the previous disposition
 * back and returns, so the fault repeats and is handled as if we had not
 * been there. A signal that does not repeat is raised again first: one
 * sent by kill(), or a SIGSEGV the kernel forces (SI_KERNEL) for another
 * reason than a #GP. Returning from that one alone lost the signal,
 * skipped the crash and left SIGSEGV at SIG_DFL for good. The kernel
 * forces one when it cannot write the frame of another signal's handler
 * (a handler without SA_ONSTACK interrupting a task near the end of its
 * stack): when the interrupted stack pointer is within a signal frame of
 * the guard, that is reported as the task's overflow, with a line saying
 * why (frame_did_not_fit()). We install only over SIG_DFL: a program
 * with its own handler keeps it. ASan and TSan builds install nothing:
 * the sanitizer owns SIGSEGV and reports the overflow itself.
 *
 * Locking: only the pool's mutex; caches belong to their worker. The
 * handler takes no lock and reads only its thread's record.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MAP_STACK, MAP_NORESERVE, MADV_NOHUGEPAGE */
#endif
#include "stack.h"
#include "test_hooks.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <time.h>
#include <unistd.h>

/* Linux 6.13 (mm/madvise.c); glibc 2.36 headers predate it. */
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

/* Bytes at the top of each slot for struct weft__stack. */
#define HDR_BYTES                                             \
	((sizeof(struct weft__stack) + WEFT__CACHELINE - 1) & \
	 ~(size_t)(WEFT__CACHELINE - 1))
/* Chunks stay below this many bytes; bigger default stacks: fewer slots. */
#define CHUNK_MAX_BYTES ((size_t)64 << 20)
/* Alternate signal stack: at least this much usable. */
#define ALTSTACK_MIN ((size_t)64 << 10)

enum guard_mode {
	GUARD_UNKNOWN = 0, /* try MADV_GUARD_INSTALL, then check it works */
	GUARD_MADVISE = 1, /* MADV_GUARD_INSTALL works */
	GUARD_MPROTECT = 2, /* it failed with EINVAL, or was ignored */
};

static size_t page_bytes; /* set once by page_size(); __atomic relaxed */
static int guard_mode; /* enum guard_mode; __atomic relaxed */
static int max_map_reported; /* one message only; __atomic */

static size_t page_size(void)
{
	size_t sz = __atomic_load_n(&page_bytes, __ATOMIC_RELAXED);

	if (WEFT__UNLIKELY(sz == 0)) {
		long v = sysconf(_SC_PAGESIZE);

		sz = v > 0 ? (size_t)v : 4096;
		__atomic_store_n(&page_bytes, sz, __ATOMIC_RELAXED);
	}
	return sz;
}

size_t weft__stack_guard_size(void)
{
	return page_size();
}

bool weft__stack_in_guard(const struct weft__stack *s, const void *addr)
{
	uintptr_t a = (uintptr_t)addr, lo = (uintptr_t)s->lo;

	return a < lo && lo - a <= weft__stack_guard_size();
}

/*
 * Does the guard just installed at @addr fault? Some emulators accept any
 * madvise() advice and ignore it (qemu-user 7.2 does), which would leave
 * every stack unguarded. Writing a byte from it into a pipe makes the
 * kernel (or the emulator) read it: EFAULT instead of a signal. If no pipe
 * can be made, trust the kernel. Runs once per process.
 */
static bool guard_works(void *addr)
{
	int fds[2];
	ssize_t n;

	if (pipe2(fds, O_CLOEXEC) != 0)
		return true;
	n = write(fds[1], addr, 1);
	close(fds[0]);
	close(fds[1]);
	return n != 1;
}

/* Make [addr, addr + len) inaccessible. Return 0 or -errno. */
static int install_guard(void *addr, size_t len)
{
	int mode = __atomic_load_n(&guard_mode, __ATOMIC_RELAXED);

	if (mode != GUARD_MPROTECT) {
		int fault = weft__fault(WEFT__F_MADVISE_GUARD);

		if (fault)
			errno = fault;
		if (!fault && madvise(addr, len, MADV_GUARD_INSTALL) == 0) {
			if (mode == GUARD_MADVISE)
				return 0;
			mode = guard_works(addr) ? GUARD_MADVISE :
						   GUARD_MPROTECT;
			__atomic_store_n(&guard_mode, mode, __ATOMIC_RELAXED);
			if (mode == GUARD_MADVISE)
				return 0;
		} else if (errno == EINVAL) {
			/* kernel before 6.13 (or a VMA it refuses) */
			__atomic_store_n(&guard_mode, GUARD_MPROTECT,
					 __ATOMIC_RELAXED);
		} else {
			return -errno;
		}
	}
	int fault = weft__fault(WEFT__F_MPROTECT);

	if (fault)
		errno = fault;
	else if (mprotect(addr, len, PROT_NONE) == 0)
		return 0;
	if (errno == ENOMEM &&
	    !__atomic_exchange_n(&max_map_reported, 1, __ATOMIC_RELAXED))
		weft__report("cannot add a stack guard page: the process hit "
			     "the kernel's limit on memory mappings "
			     "(sysctl vm.max_map_count; each stack uses two "
			     "on kernels before 6.13); raise it or run fewer "
			     "tasks at once");
	return -ENOMEM;
}

void weft__stack_guard_probe(void)
{
	size_t pg = page_size();
	void *m;

	if (__atomic_load_n(&guard_mode, __ATOMIC_RELAXED) != GUARD_UNKNOWN)
		return;
	m = mmap(NULL, pg, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return; /* the first real guard decides, as before */
	(void)install_guard(m, pg);
	munmap(m, pg);
}

static void *map_stack_memory(size_t len)
{
	int fault = weft__fault(WEFT__F_MMAP);

	if (fault) {
		errno = fault;
		return NULL;
	}
	void *base = mmap(
		NULL, len, PROT_READ | PROT_WRITE,
		MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);

	if (base == MAP_FAILED)
		return NULL;
	/* Best effort: fails with EINVAL without THP support. */
	(void)madvise(base, len, MADV_NOHUGEPAGE);
	return base;
}

/*
 * Fault in the header page of each of the @n slots of a new chunk at once.
 * Each fresh stack's first touch (its header, then its first frames, in
 * that same top page) would otherwise be a page fault of its own, and a
 * fault is dear under a hypervisor: on this project's VMs a first touch
 * costs ~10 us, MADV_POPULATE_WRITE of a page ~2 us, and one
 * process_madvise() of 16 pages ~0.8 us per page (the later first access
 * still pays the hypervisor's own page-table fill, ~5 us). A million
 * sleepers carve a million stacks. Best effort: the pages are faulted on
 * use as before if the kernel refuses (process_madvise() with
 * MADV_POPULATE_WRITE needs Linux 6.x, the madvise 5.14; a seccomp filter
 * may deny either). Only the header page: the rest of a slot stays
 * uncommitted until used. @pidfd: self_pidfd()'s. Context: any thread;
 * may sleep (syscalls).
 */
static void prefault_headers(int pidfd, char *base, size_t slot_size,
			     unsigned n)
{
	/* Relaxed, as weft__populate()'s flag: a hint only. */
	static _Atomic int batch_ok = 1;
	struct iovec iov[WEFT__STACK_CHUNK_SLOTS];
	size_t page = page_size();
	unsigned i;

	if (n > WEFT__STACK_CHUNK_SLOTS)
		n = WEFT__STACK_CHUNK_SLOTS;
	for (i = 0; i < n; i++) {
		iov[i].iov_base = base + (size_t)(i + 1) * slot_size - page;
		iov[i].iov_len = page;
	}
	int saved = errno; /* a spawn that succeeds leaves errno alone */

	if (atomic_load_explicit(&batch_ok, memory_order_relaxed)) {
		long r = -1;
		int e = pidfd < 0 ? -pidfd : 0;

		if (pidfd >= 0) {
			r = syscall(SYS_process_madvise, pidfd, iov, (size_t)n,
				    MADV_POPULATE_WRITE, 0u);
			e = errno;
			if (r < 0 && e != ENOMEM && e != EAGAIN)
				atomic_store_explicit(&batch_ok, 0,
						      memory_order_relaxed);
		} else if (e != EMFILE && e != ENFILE && e != ENOMEM) {
			atomic_store_explicit(&batch_ok, 0,
					      memory_order_relaxed);
		}
		if (r == (long)(n * page) || (r < 0 && e == ENOMEM)) {
			errno = saved;
			return;
		}
	}
	for (i = 0; i < n; i++)
		weft__populate(iov[i].iov_base, page);
	errno = saved;
}

/*
 * A pidfd of our own process for process_madvise(), or -errno. Opened per
 * new chunk and closed at once: a cached one would name the parent after
 * a fork (it is close-on-exec, and held only for the chunk's calls).
 */
static int self_pidfd(void)
{
	int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);

	return fd >= 0 ? fd : -errno;
}

/*
 * Install the guard of each of the @n slots of a new chunk in one
 * process_madvise(MADV_GUARD_INSTALL) instead of one madvise() per slot
 * as each is carved: a million sleepers carve a million stacks, and the
 * per-slot syscall was ~10% of that workload's CPU. Only once
 * MADV_GUARD_INSTALL is known to work (install_guard() probes it on the
 * first stack) and only if every guard went in: otherwise each slot
 * installs its own as before (installing a guard twice is harmless).
 * process_madvise() accepts any advice for the caller's own process from
 * Linux 6.13, the same release as MADV_GUARD_INSTALL. Return: true if all
 * @n guards are in. Context: any thread; may sleep (a syscall).
 */
static bool guard_batch(int pidfd, char *base, size_t slot_size, unsigned n)
{
	/* Relaxed, as prefault_headers()'s flag: a hint only. */
	static _Atomic int batch_ok = 1;
	struct iovec iov[WEFT__STACK_CHUNK_SLOTS];
	size_t guard = weft__stack_guard_size();
	int saved = errno;
	long r;

	if (pidfd < 0 || n > WEFT__STACK_CHUNK_SLOTS ||
	    __atomic_load_n(&guard_mode, __ATOMIC_RELAXED) != GUARD_MADVISE ||
	    !atomic_load_explicit(&batch_ok, memory_order_relaxed))
		return false;
	/* An injected guard failure must reach install_guard(). */
	if (weft__fault(WEFT__F_MADVISE_GUARD))
		return false;
	for (unsigned i = 0; i < n; i++) {
		iov[i].iov_base = base + (size_t)i * slot_size;
		iov[i].iov_len = guard;
	}
	r = syscall(SYS_process_madvise, pidfd, iov, (size_t)n,
		    MADV_GUARD_INSTALL, 0u);
	if (r < 0 && errno != ENOMEM && errno != EAGAIN)
		atomic_store_explicit(&batch_ok, 0, memory_order_relaxed);
	errno = saved;
	return r == (long)(n * guard);
}

/*
 * Usable bytes for a request of @size (0: @dflt): raised to the minimum,
 * scaled, then grown so that guard + usable + header is whole pages.
 * Stores the slot size in *@slot. Return 0 or -EINVAL.
 */
static int size_slot(size_t size, size_t *usable, size_t *slot)
{
	size_t page = page_size(), u, total;

	if (size < WEFT__STACK_MIN_SIZE)
		size = WEFT__STACK_MIN_SIZE;
	if (size > WEFT__STACK_MAX_SIZE)
		return -EINVAL;
	/* The sanitizer scale may push a valid size past the maximum: clamp
	 * (the caller asked for at most WEFT__STACK_MAX_SIZE usable bytes). */
	if (__builtin_mul_overflow(size, (size_t)WEFT__STACK_SCALE, &u) ||
	    u > WEFT__STACK_MAX_SIZE)
		u = WEFT__STACK_MAX_SIZE;
	if (__builtin_add_overflow(u, HDR_BYTES + page - 1, &total))
		return -EINVAL;
	total &= ~(page - 1);
	if (__builtin_add_overflow(total, weft__stack_guard_size(), slot))
		return -EINVAL;
	*usable = total - HDR_BYTES;
	return 0;
}

/*
 * Write the header of the stack occupying [slot, slot + slot_size) after
 * installing its guard (unless @guarded: guard_batch() did). Touches the
 * slot's top page only.
 */
static struct weft__stack *init_slot(char *slot, size_t slot_size,
				     void *map_base, size_t map_size,
				     unsigned flags, bool guarded, int *err)
{
	size_t guard = weft__stack_guard_size();
	struct weft__stack *s;

	*err = guarded ? 0 : install_guard(slot, guard);
	if (*err < 0)
		return NULL;
	s = (struct weft__stack *)(void *)(slot + slot_size - HDR_BYTES);
	s->lo = slot + guard;
	s->size = (size_t)((char *)s - (char *)s->lo);
	s->map_base = map_base;
	s->map_size = map_size;
	s->next = NULL;
	s->prev = NULL;
	s->freed_ns = 0;
	s->chunk_next = NULL;
	s->flags = flags;
	return s;
}

int weft__stack_pool_init(struct weft__stack_pool *p, size_t default_size)
{
	size_t usable, slot, n;
	int ret;

	memset(p, 0, sizeof(*p));
	if (default_size == 0)
		default_size = WEFT__STACK_DEFAULT_SIZE;
	ret = size_slot(default_size, &usable, &slot);
	if (ret < 0)
		return ret;
	n = CHUNK_MAX_BYTES / slot;
	if (n > WEFT__STACK_CHUNK_SLOTS)
		n = WEFT__STACK_CHUNK_SLOTS;
	if (n == 0)
		n = 1;
	p->default_size = usable;
	p->slot_size = slot;
	p->trim_due_ns = UINT64_MAX;
	p->decay_ns = WEFT__STACK_DECAY_NS;
	p->chunk_slots = (unsigned)n;
	ret = pthread_mutex_init(&p->lock, NULL);
	return ret ? -ENOMEM : 0;
}

void weft__stack_pool_destroy(struct weft__stack_pool *p)
{
	struct weft__stack *chunk, *next;

	WEFT__BUG_ON(p->nr_free != p->nr_carved);
	WEFT__BUG_ON(__atomic_load_n(&p->nr_single, __ATOMIC_RELAXED) != 0);
	for (chunk = p->chunks; chunk; chunk = next) {
		next = chunk->chunk_next;
		munmap(chunk->map_base, chunk->map_size);
	}
	pthread_mutex_destroy(&p->lock);
	memset(p, 0, sizeof(*p));
}

#ifdef WEFT_TEST_HOOKS
static void (*_Atomic chunk_hook)(void);

WEFT_API void weft_test_stack_chunk_hook(void (*fn)(void))
{
	atomic_store(&chunk_hook, fn);
}

static void chunk_hook_call(void)
{
	void (*fn)(void) = atomic_load(&chunk_hook);

	if (fn)
		fn();
}
#else
static inline void chunk_hook_call(void)
{
}
#endif

/*
 * Map a new chunk and set up every one of its slots, without the pool's
 * lock: mapping it, faulting in its header pages and installing its guards
 * take syscalls and, under a hypervisor, tens of microseconds a page (a
 * chunk of 16 took ~250 us on this project's VM), and a worker that held
 * the lock meanwhile stalled every other worker that needed the pool. The
 * lock is taken once, only to link the chunk into the pool's list. All the
 * slots go to the caller (its cache keeps the rest), so a burst of fresh
 * stacks takes the lock twice per chunk (this and the empty pool's look in
 * weft__stack_get()), not once per stack.
 *
 * If a guard cannot be installed (mprotect() at vm.max_map_count), the
 * slots set up so far are kept and the rest of the mapping is unmapped
 * (shrinking a mapping from its end needs no new VMA), so nothing is
 * reserved that no stack will use. Return: the slots as a list linked by
 * ->next, their number in *@n; NULL with *@err set if not even slot 0
 * could be set up (the chunk is then unmapped).
 * Context: any thread; may sleep (syscalls). p->lock not held.
 */
static struct weft__stack *new_chunk(struct weft__stack_pool *p, unsigned *n,
				     int *err)
{
	size_t map_size = p->slot_size * p->chunk_slots; /* < 64 MiB + slot */
	struct weft__stack *head, *last, *s;
	unsigned flags = WEFT__STACK_CHUNK, k;
	bool batched;
	char *base;
	int pidfd;

	base = (char *)map_stack_memory(map_size);
	if (!base) {
		*err = -ENOMEM;
		return NULL;
	}
	pidfd = self_pidfd();
	prefault_headers(pidfd, base, p->slot_size, p->chunk_slots);
	batched = guard_batch(pidfd, base, p->slot_size, p->chunk_slots);
	if (pidfd >= 0)
		close(pidfd);
	if (batched)
		flags |= WEFT__STACK_GUARDED;
	head = init_slot(base, p->slot_size, base, map_size, flags, batched,
			 err);
	if (!head) {
		munmap(base, map_size);
		return NULL;
	}
	last = head;
	for (k = 1; k < p->chunk_slots; k++) {
		int e;

		s = init_slot(base + (size_t)k * p->slot_size, p->slot_size,
			      base, map_size, WEFT__STACK_CHUNK, batched, &e);
		if (!s)
			break;
		last->next = s;
		last = s;
	}
	chunk_hook_call();
	if (k < p->chunk_slots) {
		size_t keep = (size_t)k * p->slot_size;

		munmap(base + keep, map_size - keep);
		/* what weft__stack_pool_destroy() unmaps */
		head->map_size = keep;
	}
	pthread_mutex_lock(&p->lock);
	head->chunk_next = p->chunks;
	p->chunks = head;
	p->nr_chunks++;
	p->nr_carved += k;
	pthread_mutex_unlock(&p->lock);
	*n = k;
	return head;
}

static struct weft__stack *get_single(struct weft__stack_pool *p, size_t slot)
{
	struct weft__stack *s;
	char *base;
	int err;

	base = (char *)map_stack_memory(slot);
	if (!base) {
		errno = ENOMEM;
		return NULL;
	}
	s = init_slot(base, slot, base, slot, WEFT__STACK_SINGLE, false, &err);
	if (!s) {
		munmap(base, slot);
		errno = -err;
		return NULL;
	}
	__atomic_fetch_add(&p->nr_single, 1, __ATOMIC_RELAXED);
	return s;
}

static struct weft__stack *take_batch_locked(struct weft__stack_pool *p,
					     unsigned *n);

struct weft__stack *weft__stack_get(struct weft__stack_pool *p,
				    struct weft__stack_cache *c, size_t size)
{
	struct weft__stack *s;
	size_t usable = p->default_size, slot = p->slot_size;
	unsigned n = 0;
	int err = 0;

	if (size != 0) {
		err = size_slot(size, &usable, &slot);
		if (err < 0) {
			errno = -err;
			return NULL;
		}
		if (usable > p->default_size)
			return get_single(p, slot);
	}

	s = c->head;
	if (WEFT__LIKELY(s)) {
		c->head = s->next;
		c->count--;
		s->next = NULL;
		return s;
	}

	pthread_mutex_lock(&p->lock);
	s = take_batch_locked(p, &n);
	pthread_mutex_unlock(&p->lock);
	if (!s)
		s = new_chunk(p, &n, &err);

	if (!s) {
		if (err == -ENOMEM)
			__atomic_store_n(&p->failing, true, __ATOMIC_RELAXED);
		errno = -err;
		return NULL;
	}
	if (WEFT__UNLIKELY(__atomic_load_n(&p->failing, __ATOMIC_RELAXED)))
		__atomic_store_n(&p->failing, false, __ATOMIC_RELAXED);
	if (n > 1) {
		c->head = s->next;
		c->count = n - 1;
	}
	s->next = NULL;
	return s;
}

/* Drop the pages of a free stack below its header page. */
static void release_pages(struct weft__stack *s)
{
	uintptr_t top = (uintptr_t)s & ~(uintptr_t)(page_size() - 1);

	(void)madvise(s->lo, top - (uintptr_t)s->lo, MADV_DONTNEED);
}

static uint64_t coarse_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Context: p->lock held. */
static void update_trim_due_locked(struct weft__stack_pool *p)
{
	uint64_t due = UINT64_MAX;

	if (p->nr_warm > WEFT__STACK_POOL_WARM) {
		uint64_t t = p->warm_tail->freed_ns;
		due = t > UINT64_MAX - p->decay_ns ? UINT64_MAX - 1 :
						     t + p->decay_ns;
	}
	__atomic_store_n(&p->trim_due_ns, due, __ATOMIC_RELAXED);
}

/* Append @s to the ->next list [*head, *last]. */
static void list_append(struct weft__stack **head, struct weft__stack **last,
			struct weft__stack *s)
{
	s->next = NULL;
	if (*last)
		(*last)->next = s;
	else
		*head = s;
	*last = s;
}

/*
 * Up to WEFT__STACK_BATCH free stacks, warm (newest) first, then cold, as
 * a list linked by ->next. Stores their number in *@n (0: pool empty,
 * NULL returned). Context: p->lock held.
 */
static struct weft__stack *take_batch_locked(struct weft__stack_pool *p,
					     unsigned *n)
{
	struct weft__stack *head = NULL, *last = NULL, *s;
	unsigned k = 0;

	while (k < WEFT__STACK_BATCH && (s = p->warm_head)) {
		p->warm_head = s->next;
		if (p->warm_head)
			p->warm_head->prev = NULL;
		else
			p->warm_tail = NULL;
		p->nr_warm--;
		s->prev = NULL;
		list_append(&head, &last, s);
		k++;
	}
	while (k < WEFT__STACK_BATCH && (s = p->cold_head)) {
		p->cold_head = s->next;
		list_append(&head, &last, s);
		k++;
	}
	if (k) {
		__atomic_store_n(&p->nr_free, p->nr_free - k, __ATOMIC_RELAXED);
		update_trim_due_locked(p);
	}
	*n = k;
	return head;
}

#define TRIM_MAX 32u /* stacks released per trim call */

/*
 * Release the due warm stacks (weft__stack_pool_trim()). Context: p->lock
 * held on entry and on return; dropped around the madvise() calls.
 */
static void trim_locked(struct weft__stack_pool *p, uint64_t now,
			unsigned max)
{
	struct weft__stack *batch[TRIM_MAX];
	unsigned n = 0;

	if (max > TRIM_MAX)
		max = TRIM_MAX;
	while (n < max && p->nr_warm > WEFT__STACK_POOL_WARM) {
		struct weft__stack *s = p->warm_tail;
		if (s->freed_ns > now || now - s->freed_ns < p->decay_ns)
			break;
		p->warm_tail = s->prev;
		if (p->warm_tail)
			p->warm_tail->next = NULL;
		else
			p->warm_head = NULL;
		p->nr_warm--;
		s->prev = s->next = NULL;
		batch[n++] = s;
	}
	if (!n) {
		update_trim_due_locked(p);
		return;
	}
	/* Out of the lists and not counted warm: invisible to get() while
	 * the lock is dropped, and nr_free still counts them. */
	update_trim_due_locked(p);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < n; i++)
		release_pages(batch[i]);
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < n; i++) {
		batch[i]->next = p->cold_head;
		p->cold_head = batch[i];
	}
	p->nr_released += n;
}

/* trim_locked() until nothing is due or @max stacks were released. */
static void trim_many_locked(struct weft__stack_pool *p, uint64_t now,
			     unsigned max)
{
	unsigned long before;

	do {
		before = p->nr_released;
		trim_locked(p, now, max);
		max -= (unsigned)(p->nr_released - before);
	} while (max && p->nr_released != before);
}

uint64_t weft__stack_pool_trim(struct weft__stack_pool *p, uint64_t now_ns)
{
	uint64_t due;

	if (now_ns < weft__stack_pool_trim_due(p))
		return weft__stack_pool_trim_due(p);
	pthread_mutex_lock(&p->lock);
	trim_many_locked(p, now_ns, 8 * TRIM_MAX);
	due = p->trim_due_ns;
	pthread_mutex_unlock(&p->lock);
	return due;
}

/*
 * Give the @n stacks of @list to the pool: they become its newest warm
 * stacks. Then release whatever the decay rule says is due.
 */
static void give_to_pool(struct weft__stack_pool *p, struct weft__stack *list,
			 unsigned n)
{
	struct weft__stack *s, *next;
	uint64_t now;

	if (n == 0)
		return;
	now = coarse_now();
	pthread_mutex_lock(&p->lock);
	for (s = list; s; s = next) {
		next = s->next;
		s->freed_ns = now;
		s->prev = NULL;
		s->next = p->warm_head;
		if (p->warm_head)
			p->warm_head->prev = s;
		else
			p->warm_tail = s;
		p->warm_head = s;
	}
	p->nr_warm += n;
	__atomic_store_n(&p->nr_free, p->nr_free + n, __ATOMIC_RELAXED);
	__atomic_store_n(&p->failing, false, __ATOMIC_RELAXED);
	/* As many as came in (at least TRIM_MAX): the trim keeps pace with
	 * the returns while a put costs bounded time. */
	trim_many_locked(p, now, n > TRIM_MAX ? n : TRIM_MAX);
	pthread_mutex_unlock(&p->lock);
}

void weft__stack_put(struct weft__stack_pool *p, struct weft__stack_cache *c,
		     struct weft__stack *s)
{
	struct weft__stack *keep_last, *rest;
	unsigned i;

	if (s->flags & WEFT__STACK_SINGLE) {
		void *base = s->map_base; /* s lives inside the mapping */
		size_t len = s->map_size;

		munmap(base, len);
		__atomic_fetch_sub(&p->nr_single, 1, __ATOMIC_RELAXED);
		return;
	}
	s->next = c->head;
	c->head = s;
	if (WEFT__LIKELY(++c->count <= WEFT__STACK_CACHE_MAX))
		return;
	/* Full: keep the WEFT__STACK_BATCH most recent, pool the rest. */
	keep_last = c->head;
	for (i = 1; i < WEFT__STACK_BATCH; i++)
		keep_last = keep_last->next;
	rest = keep_last->next;
	keep_last->next = NULL;
	give_to_pool(p, rest, c->count - WEFT__STACK_BATCH);
	c->count = WEFT__STACK_BATCH;
}

void weft__stack_cache_flush(struct weft__stack_pool *p,
			     struct weft__stack_cache *c)
{
	give_to_pool(p, c->head, c->count);
	c->head = NULL;
	c->count = 0;
}

/* ---- overflow reporter --------------------------------------------------- */

/*
 * Initial-exec: the handler must not trigger a lazy TLS allocation. (So
 * libweft.so uses static TLS: loading it late with dlopen() relies on
 * glibc's small static-TLS reserve, which one pointer fits easily.)
 */
static __thread const struct weft__overflow_info *cur_info WEFT__TLS_IE;

/* Index 0: SIGSEGV, 1: SIGBUS: what we replaced. Written under
 * install_lock before our handler is installed; read by the handler. */
static struct sigaction old_action[2];
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;

/* weft__copy_out(): set while the thread copies into [lo, hi). Orders:
 * copy_guarded is relaxed (set once under install_lock, before any task
 * runs; a copy that reads it stale just does a plain memcpy). The
 * thread-locals are written and read by one thread, its handler included
 * (a fault is delivered to the faulting thread; the copy never suspends,
 * so it never changes threads), hence compiler-only signal fences: the
 * range before copy_env, copy_env before the memcpy, the memcpy before
 * clearing copy_env. */
static _Atomic bool copy_guarded; /* our handler owns both signals */
static __thread sigjmp_buf *copy_env WEFT__TLS_IE;
static __thread uintptr_t copy_lo WEFT__TLS_IE, copy_hi WEFT__TLS_IE;

int weft__copy_out(void *dst, const void *src, size_t n)
{
	sigjmp_buf env;
	sigset_t faults;

	if (!n)
		return 0;
	if (!atomic_load_explicit(&copy_guarded, memory_order_relaxed)) {
		memcpy(dst, src, n);
		return 0;
	}
	/* No mask saved (a syscall); a fault leaves its signal blocked, so
	 * unblock it on the way out. */
	if (sigsetjmp(env, 0)) {
		sigemptyset(&faults);
		sigaddset(&faults, SIGSEGV);
		sigaddset(&faults, SIGBUS);
		pthread_sigmask(SIG_UNBLOCK, &faults, NULL);
		return -EFAULT;
	}
	copy_lo = (uintptr_t)dst;
	copy_hi = (uintptr_t)dst + n;
	atomic_signal_fence(memory_order_seq_cst);
	copy_env = &env;
	atomic_signal_fence(memory_order_seq_cst);
	memcpy(dst, src, n);
	atomic_signal_fence(memory_order_seq_cst);
	copy_env = NULL;
	return 0;
}

void weft__overflow_set_current(const struct weft__overflow_info *info)
{
	cur_info = info;
}

static size_t put_str(char *buf, size_t at, size_t cap, const char *str,
		      size_t max)
{
	for (size_t i = 0; str[i] && i < max && at < cap; i++)
		buf[at++] = str[i];
	return at;
}

static size_t put_uint(char *buf, size_t at, size_t cap, size_t v)
{
	char digits[24];
	size_t n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n && at < cap)
		buf[at++] = digits[--n];
	return at;
}

/*
 * Async-signal-safe: write(2), sigaction(2), sigprocmask(2), abort(3).
 * @why: NULL, or a line of explanation printed after the report.
 */
__attribute__((noreturn)) static void
report_overflow(const struct weft__overflow_info *info, const char *why)
{
	char buf[512];
	size_t n = 0, cap = sizeof(buf);
	/* NULL: no task record at hand; "": an unnamed task (as the dumps
	 * show it). */
	const char *name = !info->task_name   ? "?" :
			   info->task_name[0] ? info->task_name :
						"<unnamed>";
	struct sigaction dfl;
	sigset_t abrt;

	n = put_str(buf, n, cap, "weft: stack overflow in task '", cap);
	n = put_str(buf, n, cap, name, 64);
	n = put_str(buf, n, cap, "' (", cap);
	n = put_uint(buf, n, cap, info->stack->size);
	n = put_str(buf, n, cap, "-byte stack)\n", cap);
	if (why)
		n = put_str(buf, n, cap, why, cap);
	for (size_t done = 0; done < n;) {
		ssize_t w = write(STDERR_FILENO, buf + done, n - done);

		if (w > 0)
			done += (size_t)w;
		else if (w < 0 && errno != EINTR)
			break;
	}
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	sigaction(SIGABRT, &dfl, NULL);
	sigemptyset(&abrt);
	sigaddset(&abrt, SIGABRT);
	sigprocmask(SIG_UNBLOCK, &abrt, NULL);
	abort();
}

/*
 * The interrupted stack pointer of a signal's context, or 0 where we do
 * not know where the port keeps it.
 */
static uintptr_t interrupted_sp(const void *uctx)
{
	const ucontext_t *uc = uctx;

	if (!uc)
		return 0;
#if defined(__x86_64__)
	return (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
	return (uintptr_t)uc->uc_mcontext.sp;
#else
	return 0;
#endif
}

/*
 * The most a signal frame can need below the interrupted stack pointer:
 * the kernel's own figure for this CPU (AT_MINSIGSTKSZ, with the xsave
 * area), the x86-64 red zone and some alignment. Read when the handler
 * is installed: the handler calls nothing that is not async-signal-safe.
 */
static size_t sigframe_room;

static void sigframe_room_init(void)
{
	unsigned long frame = getauxval(AT_MINSIGSTKSZ); /* 0: unknown */

	if (frame == 0 || frame > ((size_t)64 << 10))
		frame = 4096;
	sigframe_room = (size_t)frame + 128 + 256;
}

/*
 * Did the kernel fail to write a signal frame on the task's stack? When a
 * handler without SA_ONSTACK interrupts a task near the end of its stack,
 * the frame runs into the guard, the handler never runs, and the kernel
 * forces a SIGSEGV (SI_KERNEL, no address) instead. The fault is ours
 * when the interrupted stack pointer leaves less than a frame above the
 * guard (or is already in it: a large frame not yet probed). A #GP (also
 * SI_KERNEL) with the stack pointer that close to the guard is reported
 * as an overflow too: the signal cannot tell the two apart, and a task
 * that deep is one call away from overflowing.
 */
static bool frame_did_not_fit(const struct weft__overflow_info *info,
			      const siginfo_t *si, const void *uctx)
{
	uintptr_t sp = interrupted_sp(uctx), lo, guard;

	if (si->si_code != SI_KERNEL || !info || !info->stack || !sp)
		return false;
	lo = (uintptr_t)info->stack->lo;
	guard = weft__stack_guard_size();
	return sp >= lo - guard && sp < lo + sigframe_room;
}

static void overflow_handler(int sig, siginfo_t *si, void *uctx)
{
	const struct weft__overflow_info *info = cur_info;
	int i = sig == SIGBUS;
	int saved_errno = errno;

	/* A fault of weft__copy_out() in the user's buffer: -EFAULT. */
	if (si->si_code > 0 && copy_env &&
	    (uintptr_t)si->si_addr - copy_lo < copy_hi - copy_lo) {
		sigjmp_buf *env = copy_env;
		copy_env = NULL;
		errno = saved_errno;
		siglongjmp(*env, 1);
	}
	/* si_code > 0: raised by the kernel for a fault, not by kill(). */
	if (si->si_code > 0 && info && info->stack &&
	    weft__stack_in_guard(info->stack, si->si_addr))
		report_overflow(info, NULL);
	if (sig == SIGSEGV && frame_did_not_fit(info, si, uctx))
		report_overflow(info,
				"weft: a signal arrived with too little stack "
				"left for its handler's frame; a handler that "
				"can interrupt a task needs SA_ONSTACK\n");
	/* Not ours: as if we had never been installed. Sent by kill() or
	 * forced by the kernel (SI_KERNEL: also a #GP, which would repeat,
	 * but a signal frame that could not be written does not), nothing
	 * repeats it: raise it again. */
	sigaction(sig, &old_action[i], NULL);
	if (si->si_code <= 0 || si->si_code == SI_KERNEL)
		raise(sig); /* pending until we return */
	errno = saved_errno;
}

int weft__overflow_handler_install(void)
{
	static const int sigs[2] = { SIGSEGV, SIGBUS };
	struct sigaction cur, act;
	int ret = 0, owned = 0;

	if (!weft__overflow_reporter_enabled())
		return 0;
	(void)page_size(); /* the handler must never call sysconf() */
	memset(&act, 0, sizeof(act));
	act.sa_sigaction = overflow_handler;
	act.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&act.sa_mask);

	pthread_mutex_lock(&install_lock);
	sigframe_room_init(); /* before the handler can run */
	for (int i = 0; i < 2; i++) {
		if (sigaction(sigs[i], NULL, &cur) != 0) {
			ret = -errno;
			break;
		}
		if ((cur.sa_flags & SA_SIGINFO) &&
		    cur.sa_sigaction == overflow_handler) {
			owned++;
			continue; /* already ours */
		}
		if ((cur.sa_flags & SA_SIGINFO) || cur.sa_handler != SIG_DFL)
			continue; /* the program's own: leave it alone */
		old_action[i] = cur;
		if (sigaction(sigs[i], &act, NULL) != 0) {
			ret = -errno;
			break;
		}
		owned++;
	}
	if (owned == 2)
		atomic_store_explicit(&copy_guarded, true,
				      memory_order_relaxed);
	pthread_mutex_unlock(&install_lock);
	return ret;
}

static size_t altstack_bytes(void)
{
	size_t page = page_size(), sz = ALTSTACK_MIN;
	long sys = (long)SIGSTKSZ; /* sysconf(_SC_SIGSTKSZ) on glibc 2.34+ */

	if (sys > 0 && (size_t)sys * 4 > sz)
		sz = (size_t)sys * 4;
	return (sz + page - 1) & ~(page - 1);
}

int weft__altstack_setup(void **out)
{
	size_t guard = weft__stack_guard_size(), sz = altstack_bytes();
	stack_t cur, ss;
	char *base;
	int ret;

	*out = NULL;
	if (sigaltstack(NULL, &cur) != 0)
		return -errno;
	if (!(cur.ss_flags & SS_DISABLE))
		return 0; /* the thread has one (ASan gives every thread one) */
	base = (char *)map_stack_memory(guard + sz);
	if (!base)
		return -ENOMEM;
	ret = install_guard(base, guard);
	if (ret < 0)
		goto out_unmap;
	memset(&ss, 0, sizeof(ss));
	ss.ss_sp = base + guard;
	ss.ss_size = sz;
	if (sigaltstack(&ss, NULL) != 0) {
		ret = -errno;
		goto out_unmap;
	}
	*out = base;
	return 0;

out_unmap:
	munmap(base, guard + sz);
	return ret;
}

void weft__altstack_teardown(void *p)
{
	size_t guard = weft__stack_guard_size(), sz = altstack_bytes();
	stack_t cur, off;

	if (!p)
		return;
	if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE) &&
	    cur.ss_sp == (char *)p + guard) {
		memset(&off, 0, sizeof(off));
		off.ss_flags = SS_DISABLE;
		sigaltstack(&off, NULL);
	}
	munmap(p, guard + sz);
}
