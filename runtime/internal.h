/* SPDX-License-Identifier: MIT */
/*
 * runtime/internal.h - helpers shared by every runtime and io source file.
 *
 * Nothing here is public. Names are weft__ / WEFT__ so one grep lists every
 * cross-file internal. Allocation of runtime objects goes through
 * weft__alloc()/weft__free() so that (a) jemalloc can be chosen at build
 * time and (b) the fault-injection hook of test builds sees every
 * allocation point (RELIABILITY.md 3.5).
 */
#ifndef WEFT_RUNTIME_INTERNAL_H
#define WEFT_RUNTIME_INTERNAL_H

#ifndef __cplusplus
/* C++ tests include this header for the helpers only; <stdatomic.h>'s
 * macros would break the C++ standard headers included after it. */
#include <stdatomic.h>
#endif
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT__LIKELY(x) __builtin_expect(!!(x), 1)
#define WEFT__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define WEFT__NOINLINE __attribute__((noinline))
#define WEFT__HIDDEN __attribute__((visibility("hidden")))
#define WEFT__CACHELINE 64
/*
 * The runtime's thread-locals use the initial-exec model: in libweft.so
 * the default (global-dynamic) model costs a call to __tls_get_addr on
 * every access, and weft__worker_current() runs several times per task
 * switch. The price: loading libweft.so late with dlopen() takes its few
 * bytes from glibc's static-TLS reserve (as jemalloc's do).
 */
#define WEFT__TLS_IE __attribute__((tls_model("initial-exec")))
#ifdef __cplusplus
#define WEFT__ALIGNED_CL alignas(WEFT__CACHELINE)
#else
#define WEFT__ALIGNED_CL _Alignas(WEFT__CACHELINE)
#endif

#define weft__container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define WEFT__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Sanitizer detection: gcc defines __SANITIZE_*__, clang has __has_feature. */
#if defined(__SANITIZE_ADDRESS__)
#define WEFT__ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define WEFT__TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(WEFT__ASAN)
#define WEFT__ASAN 1
#endif
#if __has_feature(thread_sanitizer) && !defined(WEFT__TSAN)
#define WEFT__TSAN 1
#endif
#endif

/*
 * WEFT__BUG_ON() - a broken internal invariant (never user misuse: that is an
 * error code). Names the invariant and aborts.
 */
void weft__bug(const char *file, int line, const char *what)
	__attribute__((noreturn, cold));
#define WEFT__BUG_ON(cond)                                      \
	do {                                                    \
		if (WEFT__UNLIKELY(cond))                       \
			weft__bug(__FILE__, __LINE__, #cond);   \
	} while (0)

/*
 * weft__report() - a misuse or diagnostic message on stderr, prefixed with
 * "weft: ". Used for misused void calls (API.md: reported in debug builds,
 * state unchanged in every build) and debug-mode reports.
 */
void weft__report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* True in debug builds or when WEFT_DEBUG=1 is set in the environment. */
bool weft__debug_enabled(void);

/*
 * Environment variables (env.c; README "Environment"). Unset or empty:
 * the default, silently. Malformed or out of range: the default, and one
 * weft__report() line naming the variable and what was expected.
 *
 * weft__parse_ulong() - @s as decimal digits only (no sign, blanks or
 * trailing bytes) into *@out if it lies in [@lo, @hi]. Return 0, -EINVAL
 * (not a number) or -ERANGE (overflow or out of range; *@out untouched).
 * weft__parse_switch() - "0" or "1": 0 or 1; anything else -EINVAL.
 * weft__env_ulong() - true and *@out set if $@name parses in [@lo, @hi].
 * weft__env_switch() - $@name as a switch, else @dflt.
 * weft__env_bad() - the report for a value the caller refuses itself.
 * Context: any thread; pure but for getenv() and the report.
 */
int weft__parse_ulong(const char *s, unsigned long long lo,
		      unsigned long long hi, unsigned long long *out);
int weft__parse_switch(const char *s);
bool weft__env_ulong(const char *name, unsigned long long lo,
		     unsigned long long hi, unsigned long long *out);
bool weft__env_switch(const char *name, bool dflt);
void weft__env_bad(const char *name, const char *value, const char *expected);

/*
 * Allocation of runtime-owned objects. Context: any thread. Return NULL on
 * failure (and with the test fault injector armed). weft__free(NULL) is a
 * no-op. weft__calloc() and weft__alloc_aligned() return zeroed memory.
 */
void *weft__alloc(size_t size);
void *weft__calloc(size_t n, size_t size);
void *weft__alloc_aligned(size_t align, size_t size);
void weft__free(void *p);

/*
 * weft__map_huge() - @len bytes (a multiple of WEFT__HUGE_BYTES) of zeroed,
 * populated memory aligned to WEFT__HUGE_BYTES and advised MADV_HUGEPAGE,
 * for memory a burst will fill anyway (task records, task.c). Where
 * transparent huge pages are off it is the same memory in 4 KiB pages.
 * Counts as an allocation for the test fault injector. Free with
 * weft__unmap_huge(). Context: any thread; syscalls.
 * Return: the memory, or NULL (errno set).
 */
#define WEFT__HUGE_BYTES ((size_t)2 << 20)
void *weft__map_huge(size_t len);
void weft__unmap_huge(void *p, size_t len);

/*
 * weft__populate() - fault in the whole pages inside [@p, @p + @len) for
 * writing, in one madvise(MADV_POPULATE_WRITE) instead of a page fault per
 * page at first touch (see runtime/stack.c, prefault_headers(), for what
 * that saves). Best effort: does nothing where the kernel refuses (before
 * Linux 5.14, or under a seccomp filter), and stops trying after the first
 * such refusal. Context: any thread; a syscall.
 */
void weft__populate(void *p, size_t len);

/* madvise advice of Linux 5.14 (the same value as glibc 2.36's header,
 * which older headers lack). */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/*
 * Syscall fault sites (runtime/fault.c, RELIABILITY 3.5). weft__fault(site)
 * returns the errno a test armed for this call of @site, or 0: the caller
 * then fails as the real call would have with it. Always 0, for free,
 * outside WEFT_TEST_HOOKS builds.
 */
enum weft__fault_site {
	WEFT__F_MMAP,		/* stack chunks */
	WEFT__F_MPROTECT,	/* guard pages, fallback */
	WEFT__F_MADVISE_GUARD,	/* guard pages, MADV_GUARD_INSTALL */
	WEFT__F_URING_SETUP,	/* a worker's ring */
	WEFT__F_URING_ENTER,	/* submit / reap */
	WEFT__F_URING_REGISTER, /* the provided-buffer ring */
	WEFT__F_URING_PROBE,	/* opcode probe: any errno = an opcode missing */
	WEFT__F_EVENTFD,	/* a worker's wake-up fd */
	WEFT__F_EPOLL_CREATE,	/* the epoll backend's set */
	WEFT__F_ACCEPT,		/* weft_accept */
	WEFT__F_SOCKET,		/* weft_socket and the helpers */
	WEFT__F_PTHREAD_CREATE, /* worker threads */
	WEFT__F_SIGNALFD,	/* weft_signal_wait */
	WEFT__F_SHORT_IO,	/* not a failure: caps a transfer (io/calls.c) */
	WEFT__F_REAP_K,		/* not a failure: CQEs reaped per tick */
	WEFT__F_CQE_SHUFFLE,	/* not a failure: a seed; CQE order per batch */
	WEFT__F_CQE_DELAY,	/* not a failure: reaps an op's CQE is held */
	WEFT__F_SQ_FULL,	/* no SQE for a cancel without reaping */
	WEFT__F_CANCEL_RES, /* not a failure: an ASYNC_CANCEL's res */
	WEFT__F_CANCEL_TARGET, /* not a failure: a cancelled op's res */
	WEFT__F_CANCEL_DELAY, /* not a failure: reaps a cancel's CQE is held */
	WEFT__F_CQE_STALE, /* not a failure: reaps until a CQE's replay */
	WEFT__F_NSITES
};

void weft__faults_init(void); /* reads WEFT_FAULTS once */
#ifdef WEFT_TEST_HOOKS
extern bool weft__faults_armed; /* __atomic builtins only */
int weft__fault_slow(enum weft__fault_site s);
static inline int weft__fault(enum weft__fault_site s)
{
	return __atomic_load_n(&weft__faults_armed, __ATOMIC_RELAXED) ?
		       weft__fault_slow(s) :
		       0;
}
#else
static inline int weft__fault(enum weft__fault_site s)
{
	(void)s;
	return 0;
}
#endif

/*
 * Chaos mode (runtime/chaos.c, WEFT_CHAOS): weft__chaos() at a protocol
 * point yields or spins now and then when armed. Nothing at all outside
 * WEFT_TEST_HOOKS builds.
 */
void weft__chaos_init(void); /* reads WEFT_CHAOS once */
#ifdef WEFT_TEST_HOOKS
extern bool weft__chaos_on; /* __atomic builtins only */
void weft__chaos_slow(void);
static inline void weft__chaos(void)
{
	if (__atomic_load_n(&weft__chaos_on, __ATOMIC_RELAXED))
		weft__chaos_slow();
}
#else
static inline void weft__chaos(void)
{
}
#endif

/* CPU pause hint for short spins. */
static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Intrusive doubly linked list (circular, with a head node). */
struct weft__list {
	struct weft__list *next, *prev;
};

static inline void weft__list_init(struct weft__list *h)
{
	h->next = h->prev = h;
}

static inline bool weft__list_empty(const struct weft__list *h)
{
	return h->next == h;
}

static inline void weft__list_add_tail(struct weft__list *h,
				       struct weft__list *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static inline void weft__list_del(struct weft__list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->next = n->prev = n;
}

#ifdef __cplusplus
}
#endif
#endif /* WEFT_RUNTIME_INTERNAL_H */
