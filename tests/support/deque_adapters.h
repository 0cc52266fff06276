// SPDX-License-Identifier: MIT
//
// tests/support/deque_adapters.h - C++ adapters so one test body runs on
// libweft's deque (runtime/deque.h, WEFT__DEQUE_CAP slots) and on the 4-slot
// copy (tests/support/deque_small.h). Each adapter has the same static
// functions, named after the C calls, plus kCap and steal_max().
//
// Include the standard and gtest headers first (see deque_small.h).

#ifndef WEFT_TESTS_SUPPORT_DEQUE_ADAPTERS_H
#define WEFT_TESTS_SUPPORT_DEQUE_ADAPTERS_H

#include <cstddef>
#include <new>

#include "runtime/deque.h"
#include "tests/support/deque_small.h"

struct BigDeque {
	using D = struct weft__deque;
	static constexpr size_t kCap = WEFT__DEQUE_CAP;
	static size_t steal_max()
	{
		return WEFT__DEQUE_STEAL_MAX;
	}
	static D *make()
	{
		D *d = new D;
		weft__deque_init(d);
		return d;
	}
	static void destroy(D *d)
	{
		delete d;
	}
	static bool push(D *d, void *x)
	{
		return weft__deque_push(d, x);
	}
	static void *take(D *d)
	{
		return weft__deque_take(d);
	}
	static bool take_if_bottom(D *d, void *item)
	{
		return weft__deque_take_if_bottom(d, item);
	}
	static int steal(D *d, void **out)
	{
		return weft__deque_steal(d, out);
	}
	static size_t len(const D *d)
	{
		return weft__deque_len(d);
	}
	static size_t steal_half(D *v, D *t, void **first)
	{
		return weft__deque_steal_half(v, t, first);
	}
	static size_t take_top(D *d, void **out, size_t max)
	{
		return weft__deque_take_top(d, out, max);
	}
};

struct SmallDeque {
	using D = struct weft__deque_small;
	static constexpr size_t kCap = WEFT__DEQUE_SMALL_CAP;
	static size_t steal_max()
	{
		return weft__deque_small_steal_max();
	}
	static D *make()
	{
		D *d = weft__deque_small_new();
		if (!d)
			throw std::bad_alloc();
		return d;
	}
	static void destroy(D *d)
	{
		weft__deque_small_free(d);
	}
	static bool push(D *d, void *x)
	{
		return weft__deque_small_push(d, x);
	}
	static void *take(D *d)
	{
		return weft__deque_small_take(d);
	}
	static bool take_if_bottom(D *d, void *item)
	{
		return weft__deque_small_take_if_bottom(d, item);
	}
	static int steal(D *d, void **out)
	{
		return weft__deque_small_steal(d, out);
	}
	static size_t len(const D *d)
	{
		return weft__deque_small_len(d);
	}
	static size_t steal_half(D *v, D *t, void **first)
	{
		return weft__deque_small_steal_half(v, t, first);
	}
	static size_t take_top(D *d, void **out, size_t max)
	{
		return weft__deque_small_take_top(d, out, max);
	}
};

// ceil(n / 2), at most steal_max(), at most room + 1: what
// weft__deque_steal_half() promises for a victim of n items (n > 0) and a
// thief with room free slots, when nothing else runs.
template <class Q>
size_t expected_steal_half(size_t n, size_t room)
{
	size_t want = (n + 1) / 2;
	if (want > Q::steal_max())
		want = Q::steal_max();
	if (want > room + 1)
		want = room + 1;
	return n == 0 ? 0 : want;
}

#endif // WEFT_TESTS_SUPPORT_DEQUE_ADAPTERS_H
