// SPDX-License-Identifier: MIT
//
// tests/fuzz/deque_fuzz.cc - libFuzzer target for the Chase-Lev deque
// (runtime/deque.c), model-based (RELIABILITY 3.6, item 1).
//
// The input is decoded into a single-threaded sequence of operations on two
// deques, A and B (each the other's thief): push (one or a burst), take,
// steal, steal_half (either direction), take_top (the owner's spill) and
// len. The same sequence runs on libweft's deque (WEFT__DEQUE_CAP slots)
// and on the 4-slot copy (tests/support/deque_small.c), where wrap-around
// and "full" come every few operations. A std::deque per deque is the
// reference: every call's result must be what the model says (LIFO take,
// FIFO steal, push fails exactly at capacity and stores nothing,
// steal_half's count rule from runtime/deque.h), and at the end both are
// drained, so every item comes out exactly once.
//
// Byte format: each op is one byte, op = b & 7, side = (b >> 3) & 1 (A or
// B), arg = b >> 4; push bursts and take_top read one more byte.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <vector>

// After the standard headers: see tests/support/deque_small.h.
#include "tests/support/deque_adapters.h"

#define FUZZ_NAME "deque_fuzz"
#include "tests/fuzz/fuzz_check.h"

namespace
{

void *P(uintptr_t id)
{
	return reinterpret_cast<void *>(id);
}

uintptr_t I(void *p)
{
	return reinterpret_cast<uintptr_t>(p);
}

template <class Q>
struct Side {
	typename Q::D *d = Q::make();
	std::deque<uintptr_t> m;
	Side() = default;
	Side(const Side &) = delete;
	Side &operator=(const Side &) = delete;
	~Side()
	{
		Q::destroy(d);
	}
};

template <class Q>
void push_one(Side<Q> &s, uintptr_t &next, size_t step)
{
	uintptr_t id = next++;
	bool ok = Q::push(s.d, P(id));

	if (s.m.size() == Q::kCap) {
		CHECK(!ok, step);
		// the runtime's answer to a full deque: spill half, push again
		std::vector<void *> out(Q::kCap / 2);
		size_t n = Q::take_top(s.d, out.data(), out.size());
		CHECK(n == Q::kCap / 2, step);
		for (size_t i = 0; i < n; i++) {
			CHECK(I(out[i]) == s.m.front(), step);
			s.m.pop_front();
		}
		ok = Q::push(s.d, P(id));
	}
	CHECK(ok, step);
	s.m.push_back(id);
}

template <class Q>
void steal_half(Side<Q> &v, Side<Q> &t, size_t step)
{
	size_t room = Q::kCap - t.m.size();
	size_t want = (v.m.size() + 1) / 2;
	void *first = P(0);

	if (want > Q::steal_max())
		want = Q::steal_max();
	if (want > room + 1)
		want = room + 1;
	size_t got = Q::steal_half(v.d, t.d, &first);
	CHECK(got == want, step);
	if (got == 0) {
		CHECK(first == P(0), step);
		return;
	}
	CHECK(I(first) == v.m.front(), step);
	v.m.pop_front();
	for (size_t i = 1; i < got; i++) {
		t.m.push_back(v.m.front());
		v.m.pop_front();
	}
}

template <class Q>
void run(const uint8_t *data, size_t size)
{
	Side<Q> sides[2];
	uintptr_t next = 1;
	size_t i = 0, step = 0;

	while (i < size) {
		uint8_t b = data[i++];
		unsigned op = b & 7, arg = b >> 4;
		Side<Q> &s = sides[(b >> 3) & 1];
		Side<Q> &o = sides[((b >> 3) & 1) ^ 1];

		step++;
		switch (op) {
		case 0:
		case 1:
			push_one(s, next, step);
			break;
		case 2: { // a burst: up to 255 * 8 pushes, enough to fill 1024
			size_t n = (i < size ? data[i++] : arg) * (size_t)8 + 1;
			for (size_t k = 0; k < n; k++)
				push_one(s, next, step);
			break;
		}
		case 3: {
			void *x = Q::take(s.d);
			if (s.m.empty()) {
				CHECK(x == nullptr, step);
			} else {
				CHECK(I(x) == s.m.back(), step);
				s.m.pop_back();
			}
			break;
		}
		case 4: {
			void *x = P(0);
			int r = Q::steal(s.d, &x);
			if (s.m.empty()) {
				CHECK(r == WEFT__STEAL_EMPTY, step);
				CHECK(x == P(0), step);
			} else {
				// one thread: no race to lose
				CHECK(r == WEFT__STEAL_OK, step);
				CHECK(I(x) == s.m.front(), step);
				s.m.pop_front();
			}
			break;
		}
		case 5: // o steals half of s, o is the thief
			steal_half(s, o, step);
			break;
		case 6: {
			size_t max =
				(i < size ? data[i++] : arg) % (Q::kCap + 2);
			std::vector<void *> out(max + 1, P(0));
			size_t n = Q::take_top(s.d, out.data(), max);
			size_t want = s.m.size() < max ? s.m.size() : max;
			CHECK(n == want, step);
			for (size_t k = 0; k < n; k++) {
				CHECK(I(out[k]) == s.m.front(), step);
				s.m.pop_front();
			}
			CHECK(out[n] == P(0), step);
			break;
		}
		case 7:
			CHECK(Q::len(s.d) == s.m.size(), step);
			break;
		}
		CHECK(Q::len(s.d) == s.m.size(), step);
		CHECK(Q::len(o.d) == o.m.size(), step);
	}

	// drain: everything pushed comes out exactly once, in model order
	std::vector<bool> seen(next, false);
	for (auto &s : sides) {
		while (!s.m.empty()) {
			void *x = Q::take(s.d);
			CHECK(x != nullptr && I(x) == s.m.back(), step);
			CHECK(!seen[I(x)], step);
			seen[I(x)] = true;
			s.m.pop_back();
		}
		CHECK(Q::take(s.d) == nullptr, step);
		void *x = P(0);
		CHECK(Q::steal(s.d, &x) == WEFT__STEAL_EMPTY, step);
		CHECK(Q::len(s.d) == 0, step);
	}
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run<SmallDeque>(data, size);
	run<BigDeque>(data, size);
	return 0;
}
