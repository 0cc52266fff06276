/* SPDX-License-Identifier: MIT */
/*
 * runtime/util.c - allocation, reports, invariant failures, the version.
 *
 * Allocation: every runtime-owned object comes from weft__alloc(). With
 * WEFT_USE_JEMALLOC (the default build) it uses jemalloc's mallocx/dallocx,
 * so the runtime's own records get jemalloc's thread caches; the sanitizer
 * builds use the libc allocator so ASan sees every object.
 *
 * Fault injection (WEFT_TEST_HOOKS builds): weft_test_fail_alloc_after(n)
 * makes the (n+1)-th following allocation fail and every later one too,
 * until weft_test_fail_alloc_after(-1) disarms it. Other builds compile the
 * hook out.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "weft.h"
#include "runtime/internal.h"
#include "runtime/test_hooks.h"

#ifdef WEFT_USE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#ifdef WEFT_TEST_HOOKS
static _Atomic long fail_countdown = -1; /* -1: off */
static _Atomic unsigned long alloc_points;

WEFT_API void weft_test_fail_alloc_after(long n)
{
	atomic_store(&fail_countdown, n);
}

WEFT_API unsigned long weft_test_alloc_count(void)
{
	return atomic_load(&alloc_points);
}

static bool alloc_should_fail(void)
{
	atomic_fetch_add_explicit(&alloc_points, 1, memory_order_relaxed);
	long c = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
	if (WEFT__LIKELY(c < 0))
		return false;
	if (c == 0)
		return true;
	/* Several threads may race here; any of them may take the last
	 * free allocation, which is fine for a test hook. */
	atomic_compare_exchange_strong(&fail_countdown, &c, c - 1);
	return false;
}
#else
static inline bool alloc_should_fail(void)
{
	return false;
}
#endif

void *weft__alloc(size_t size)
{
	if (alloc_should_fail())
		return NULL;
#ifdef WEFT_USE_JEMALLOC
	return mallocx(size ? size : 1, 0);
#else
	return malloc(size);
#endif
}

void *weft__calloc(size_t n, size_t size)
{
	size_t bytes;

	if (__builtin_mul_overflow(n, size, &bytes))
		return NULL;
	if (alloc_should_fail())
		return NULL;
#ifdef WEFT_USE_JEMALLOC
	return mallocx(bytes ? bytes : 1, MALLOCX_ZERO);
#else
	return calloc(n, size);
#endif
}

void *weft__alloc_aligned(size_t align, size_t size)
{
	if (alloc_should_fail())
		return NULL;
#ifdef WEFT_USE_JEMALLOC
	return mallocx(size ? size : 1, MALLOCX_ALIGN(align) | MALLOCX_ZERO);
#else
	void *p = NULL;
	if (posix_memalign(&p, align, size ? size : 1) != 0)
		return NULL;
	memset(p, 0, size);
	return p;
#endif
}

void weft__free(void *p)
{
	if (!p)
		return;
#ifdef WEFT_USE_JEMALLOC
	dallocx(p, 0);
#else
	free(p);
#endif
}

void *weft__map_huge(size_t len)
{
	size_t span = len + WEFT__HUGE_BYTES;
	char *m, *a;
	uintptr_t head;

	if (alloc_should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	/* Over-map by one huge page and trim to an aligned @len: an
	 * unaligned mapping could not hold a single huge page. */
	m = mmap(NULL, span, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	head = (uintptr_t)-(uintptr_t)m & (WEFT__HUGE_BYTES - 1);
	a = m + head;
	if (head)
		munmap(m, head);
	munmap(a + len, span - head - len);
	int saved = errno; /* EINVAL without THP: not the caller's concern */
	(void)madvise(a, len, MADV_HUGEPAGE);
	errno = saved;
	weft__populate(a, len);
	return a;
}

void weft__unmap_huge(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}

void weft__populate(void *p, size_t len)
{
	/* Relaxed: a hint, not a protocol; a thread that reads a stale 1
	 * makes one more call the kernel refuses. */
	static _Atomic int ok = 1;
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1);
	uintptr_t hi = ((uintptr_t)p + len) & ~(page - 1);
	int saved = errno;

	if (hi <= lo || !atomic_load_explicit(&ok, memory_order_relaxed))
		return;
	if (madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE) != 0 &&
	    errno != ENOMEM && errno != EAGAIN && errno != EINTR)
		atomic_store_explicit(&ok, 0, memory_order_relaxed);
	errno = saved;
}

void weft__bug(const char *file, int line, const char *what)
{
	fprintf(stderr, "weft: internal invariant broken at %s:%d: %s\n", file,
		line, what);
	fflush(stderr);
	abort();
}

void weft__report(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	memcpy(buf, "weft: ", 6);
	va_start(ap, fmt);
	n = vsnprintf(buf + 6, sizeof(buf) - 7, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	n += 6;
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	/* One write(2), so reports from several workers do not interleave. */
	ssize_t r = write(STDERR_FILENO, buf, (size_t)n);
	(void)r;
}

bool weft__debug_enabled(void)
{
	static _Atomic int cached = -1;
	int v = atomic_load_explicit(&cached, memory_order_relaxed);

	if (WEFT__LIKELY(v >= 0))
		return v;
#ifndef NDEBUG
	v = 1;
#else
	const char *e = getenv("WEFT_DEBUG");
	v = e && e[0] && strcmp(e, "0") != 0;
#endif
	atomic_store_explicit(&cached, v, memory_order_relaxed);
	return v;
}

WEFT_API unsigned weft_version(void)
{
	return WEFT_VERSION;
}
