// SPDX-License-Identifier: MIT
//
// tests/fuzz/timer_fuzz.cc - libFuzzer target for the per-worker timers
// (runtime/timer.c: the hierarchical wheel in front of the pairing heap),
// model-based (RELIABILITY 3.6, item 3).
//
// The input is decoded into operations on one heap and a pool of 64
// timers: insert (with a deadline in the past, near, at every wheel level's
// scale, or never), remove, re-insert a linked timer (remove + insert, as a
// rescheduled deadline does), advance the clock and fire everything due,
// pop one, and the min / next_deadline queries. A std::map ordered by
// (deadline, insertion) is the reference: every popped timer must be the
// model's first, never early, nothing due may be left behind, and the
// counts must agree. The clock only moves forward, as CLOCK_MONOTONIC does.
//
// Byte format: the first byte picks the starting clock; then each op is one
// byte (op = b & 7, timer = b >> 2 ... see decode), deadlines and advances
// read two more bytes: a scale selector and a mantissa.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <utility>

extern "C" {
#include "runtime/timer.h"
}

#define FUZZ_NAME "timer_fuzz"
#include "tests/fuzz/fuzz_check.h"

namespace
{

constexpr size_t kTimers = 64;

struct Reader {
	const uint8_t *p;
	size_t n, i = 0;
	uint8_t next()
	{
		return i < n ? p[i++] : 0;
	}
	bool done() const
	{
		return i >= n;
	}
};

uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a + b < a ? UINT64_MAX : a + b;
}

// A span of time: the scale byte picks ns, us, ms, one wheel tick's
// neighbourhood, or each wheel level's range (64^k ms), so every level and
// its boundaries get exercised.
uint64_t span(Reader &r)
{
	uint8_t scale = r.next(), m = r.next();
	uint64_t v = m;

	switch (scale % 12) {
	case 0:
		return v; // ns
	case 1:
		return v * 1000; // us
	case 2:
		return v * 1000000; // ms
	case 3: // around a power of two ns, +/- m
		return (UINT64_C(1) << (scale >> 2 & 31)) + v - 128;
	default: { // wheel levels: 64^k ms scale, k = 0..7
		unsigned k = scale % 12 - 4;
		uint64_t unit = UINT64_C(1) << 20; // ~1 ms tick, a guess
		for (unsigned j = 0; j < k; j++)
			unit *= 64;
		return v * unit / 16 + (scale >> 4);
	}
	}
}

using Key = std::pair<uint64_t, uint64_t>; // deadline, insertion order

struct Model {
	weft__timer_heap h;
	weft__timer t[kTimers];
	bool linked[kTimers] = {};
	Key key[kTimers];
	std::map<Key, size_t> order;
	uint64_t next_order = 0, now = 0;

	Model()
	{
		weft__timer_heap_init(&h);
		for (auto &x : t)
			weft__timer_init(&x);
	}

	size_t index(const weft__timer *p, size_t step)
	{
		CHECK(p >= t && p < t + kTimers, step);
		return (size_t)(p - t);
	}

	void insert(size_t i, uint64_t deadline)
	{
		weft__timer_insert(&h, &t[i], deadline);
		linked[i] = true;
		key[i] = Key(deadline, next_order++);
		order.emplace(key[i], i);
	}

	void remove(size_t i)
	{
		weft__timer_remove(&h, &t[i]);
		linked[i] = false;
		order.erase(key[i]);
	}

	// One pop at now: the model's first if it is due, else nothing.
	bool pop(size_t step)
	{
		weft__timer *p = weft__timer_pop_expired(&h, now);
		if (order.empty() || order.begin()->first.first > now) {
			CHECK(p == nullptr, step);
			return false;
		}
		CHECK(p != nullptr, step);
		size_t i = index(p, step);
		CHECK(i == order.begin()->second, step);
		CHECK(p->deadline_ns <= now, step); // never early
		CHECK(!weft__timer_linked(p), step);
		order.erase(order.begin());
		linked[i] = false;
		return true;
	}

	void check(size_t step)
	{
		CHECK(h.count == order.size(), step);
		for (size_t i = 0; i < kTimers; i++)
			CHECK(weft__timer_linked(&t[i]) == linked[i], step);
	}
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Reader r{ data, size };
	Model m;
	size_t step = 0;

	// starting clock: 0 (the virtual clock), a typical uptime, or late
	switch (r.next() % 4) {
	case 0:
		m.now = 0;
		break;
	case 1:
		m.now = UINT64_C(123456789012345);
		break;
	case 2:
		m.now = (UINT64_C(1) << 20) * 64 - 1; // a wheel boundary - 1
		break;
	case 3:
		m.now = UINT64_C(1) << 62;
		break;
	}

	while (!r.done()) {
		uint8_t b = r.next();
		size_t i = (b >> 3) % kTimers;

		step++;
		switch (b & 7) {
		case 0:
		case 1: // arm an unlinked timer (a linked one: re-arm)
		case 2: {
			uint64_t d;
			uint8_t how = r.next();
			if (how % 8 == 0)
				d = UINT64_MAX; // never
			else if (how % 8 == 1) {
				uint64_t back = span(r); // in the past
				d = m.now - (m.now < back ? m.now : back);
			} else
				d = sat_add(m.now, span(r));
			if (m.linked[i])
				m.remove(i);
			m.insert(i, d);
			break;
		}
		case 3: // disarm
			if (m.linked[i])
				m.remove(i);
			break;
		case 4: { // time passes; fire everything due
			m.now = sat_add(m.now, span(r));
			while (m.pop(step))
				;
			break;
		}
		case 5: // fire one at the current time
			m.pop(step);
			break;
		case 6: { // queries
			weft__timer *p = weft__timer_min(&m.h);
			if (m.order.empty()) {
				CHECK(p == nullptr, step);
			} else {
				CHECK(p != nullptr, step);
				CHECK(m.index(p, step) ==
					      m.order.begin()->second,
				      step);
			}
			uint64_t nd = weft__timer_next_deadline(&m.h);
			CHECK(nd == (m.order.empty() ?
					     UINT64_MAX :
					     m.order.begin()->first.first),
			      step);
			break;
		}
		case 7: // a small step of time, one pop at a time
			m.now = sat_add(m.now, b >> 3);
			while (m.pop(step))
				;
			break;
		}
		m.check(step);
	}

	// the end of time: everything left fires, in order
	m.now = UINT64_MAX;
	while (m.pop(step))
		;
	CHECK(m.order.empty(), step);
	m.check(step);
	return 0;
}
