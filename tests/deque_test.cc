// SPDX-License-Identifier: MIT
//
// tests/deque_test.cc - the Chase-Lev deque (runtime/deque.c), tested
// directly: no runtime needed. Every case runs on libweft's deque
// (WEFT__DEQUE_CAP slots) and on the 4-slot copy from
// tests/support/deque_small.c, where wrap-around and "full" come every few
// operations.
//
// What is checked: empty take/steal; LIFO take and FIFO steal order; push
// fails at exactly CAP and stores nothing; indices wrap the ring thousands
// of times; take_top order and counts; steal_half counts (ceil(n/2), the
// WEFT__DEQUE_STEAL_MAX bound, a full thief stops it at one); len; a
// seeded single-threaded model check against std::deque; and two small
// threaded cases with an exactly-once ledger: owner + 2 thieves over 200k
// items (RELIABILITY C8), and the race for the last item, take vs steal
// (C6). WEFT_TEST_SCALE (a divisor, default 1) shrinks the counts, never
// to 0; WEFT_SEED replays the model check.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

// After the standard headers: see tests/support/deque_small.h.
#include "runtime/deque.h"
#include "tests/support/deque_adapters.h"

namespace
{

size_t scaled(size_t n)
{
	const char *s = getenv("WEFT_TEST_SCALE");
	long k = s ? atol(s) : 1;

	if (k < 1)
		k = 1;
	n /= (size_t)k;
	return n ? n : 1;
}

uint64_t test_seed()
{
	const char *s = getenv("WEFT_SEED");

	return s ? strtoull(s, nullptr, 0) : 20130223;
}

// Single-threaded cases use small integers as items: never dereferenced.
void *P(uintptr_t id)
{
	return reinterpret_cast<void *>(id);
}

uintptr_t I(void *p)
{
	return reinterpret_cast<uintptr_t>(p);
}

template <class Q>
struct Owned {
	typename Q::D *d = Q::make();
	Owned() = default;
	Owned(const Owned &) = delete;
	Owned &operator=(const Owned &) = delete;
	~Owned()
	{
		Q::destroy(d);
	}
};

template <class Q>
class Deque : public ::testing::Test
{
};

class CapName
{
public:
	template <class Q>
	static std::string GetName(int)
	{
		return "Cap" + std::to_string(Q::kCap);
	}
};

using Impls = ::testing::Types<BigDeque, SmallDeque>;
TYPED_TEST_SUITE(Deque, Impls, CapName);

TYPED_TEST(Deque, EmptyTakeAndStealFindNothing)
{
	using Q = TypeParam;
	Owned<Q> a, b;
	void *out = P(77);
	void *buf[4];

	EXPECT_EQ(Q::take(a.d), nullptr);
	EXPECT_EQ(Q::steal(a.d, &out), WEFT__STEAL_EMPTY);
	EXPECT_EQ(out, P(77)) << "steal wrote *out without an item";
	EXPECT_EQ(Q::steal_half(a.d, b.d, &out), 0u);
	EXPECT_EQ(out, P(77));
	EXPECT_EQ(Q::take_top(a.d, buf, 4), 0u);
	EXPECT_EQ(Q::len(a.d), 0u);
	// An empty take must leave the deque usable (bottom restored).
	ASSERT_TRUE(Q::push(a.d, P(1)));
	EXPECT_EQ(Q::len(a.d), 1u);
	EXPECT_EQ(Q::take(a.d), P(1));
	EXPECT_EQ(Q::take(a.d), nullptr);
	EXPECT_EQ(Q::len(a.d), 0u);
}

TYPED_TEST(Deque, TakeIsLifo)
{
	using Q = TypeParam;
	Owned<Q> a;

	for (uintptr_t i = 1; i <= Q::kCap; i++)
		ASSERT_TRUE(Q::push(a.d, P(i)));
	for (uintptr_t i = Q::kCap; i >= 1; i--)
		ASSERT_EQ(I(Q::take(a.d)), i);
	EXPECT_EQ(Q::take(a.d), nullptr);
}

TYPED_TEST(Deque, StealIsFifo)
{
	using Q = TypeParam;
	Owned<Q> a;
	void *out = nullptr;

	for (uintptr_t i = 1; i <= Q::kCap; i++)
		ASSERT_TRUE(Q::push(a.d, P(i)));
	for (uintptr_t i = 1; i <= Q::kCap; i++) {
		ASSERT_EQ(Q::steal(a.d, &out), WEFT__STEAL_OK);
		ASSERT_EQ(I(out), i);
	}
	EXPECT_EQ(Q::steal(a.d, &out), WEFT__STEAL_EMPTY);
	EXPECT_EQ(Q::take(a.d), nullptr);
}

TYPED_TEST(Deque, PushFailsAtExactlyCapAndStoresNothing)
{
	using Q = TypeParam;
	Owned<Q> a;
	void *out = nullptr;

	for (uintptr_t i = 1; i <= Q::kCap; i++)
		ASSERT_TRUE(Q::push(a.d, P(i))) << "push " << i;
	EXPECT_EQ(Q::len(a.d), Q::kCap);
	EXPECT_FALSE(Q::push(a.d, P(1000)));
	EXPECT_FALSE(Q::push(a.d, P(1001)));
	EXPECT_EQ(Q::len(a.d), Q::kCap);
	// A steal frees the oldest slot: one push fits, into the reused slot.
	ASSERT_EQ(Q::steal(a.d, &out), WEFT__STEAL_OK);
	EXPECT_EQ(out, P(1));
	EXPECT_TRUE(Q::push(a.d, P(Q::kCap + 1)));
	EXPECT_FALSE(Q::push(a.d, P(1002)));
	// Contents: 2 .. CAP+1, nothing from the failed pushes.
	for (uintptr_t i = Q::kCap + 1; i >= 2; i--)
		ASSERT_EQ(I(Q::take(a.d)), i);
	EXPECT_EQ(Q::take(a.d), nullptr);
}

TYPED_TEST(Deque, IndicesWrapTheRingManyTimes)
{
	using Q = TypeParam;
	Owned<Q> a;
	std::deque<uintptr_t> model;
	uintptr_t next = 1;
	size_t advanced = 0; // items that left by the top: top's advance
	void *out = nullptr;
	const size_t target = 64 * Q::kCap + 7;

	// Each round fills to k, steals s from the top (moving the ring's
	// window by s), takes t from the bottom; k, s, t cycle through
	// every combination so each slot sees every role.
	for (size_t round = 0; advanced < target; round++) {
		size_t k = 1 + round % Q::kCap;
		size_t s = 1 + (round / Q::kCap) % k;
		size_t t = (round / 3) % (k - s + 1);

		while (model.size() < k) {
			ASSERT_TRUE(Q::push(a.d, P(next)));
			model.push_back(next++);
		}
		for (size_t i = 0; i < s; i++) {
			ASSERT_EQ(Q::steal(a.d, &out), WEFT__STEAL_OK);
			ASSERT_EQ(I(out), model.front());
			model.pop_front();
			advanced++;
		}
		for (size_t i = 0; i < t; i++) {
			ASSERT_EQ(I(Q::take(a.d)), model.back());
			model.pop_back();
		}
		ASSERT_EQ(Q::len(a.d), model.size());
	}
	while (!model.empty()) {
		ASSERT_EQ(I(Q::take(a.d)), model.back());
		model.pop_back();
	}
	EXPECT_EQ(Q::take(a.d), nullptr);
	if constexpr (std::is_same<Q, BigDeque>::value) {
		// top and bottom are both well past the ring's size.
		EXPECT_GE(a.d->top.load(), (int64_t)target);
		EXPECT_EQ(a.d->top.load(), a.d->bottom.load());
	}
}

// take_if_bottom() takes the newest item only when it is the one named,
// and never an item a thief already took, even when the ring has wrapped
// and the bottom's slot still holds that item.
TYPED_TEST(Deque, TakeIfBottomTakesOnlyTheNamedNewestItem)
{
	using Q = TypeParam;
	Owned<Q> a;
	void *out = nullptr;

	EXPECT_FALSE(Q::take_if_bottom(a.d, P(1))); // empty
	ASSERT_TRUE(Q::push(a.d, P(1)));
	ASSERT_TRUE(Q::push(a.d, P(2)));
	ASSERT_TRUE(Q::push(a.d, P(3)));
	EXPECT_FALSE(Q::take_if_bottom(a.d, P(2)));
	EXPECT_FALSE(Q::take_if_bottom(a.d, P(1)));
	EXPECT_EQ(Q::len(a.d), 3u);
	EXPECT_TRUE(Q::take_if_bottom(a.d, P(3)));
	EXPECT_EQ(Q::len(a.d), 2u);
	EXPECT_FALSE(Q::take_if_bottom(a.d, P(3))); // gone
	EXPECT_EQ(Q::take(a.d), P(2));
	EXPECT_EQ(Q::steal(a.d, &out), WEFT__STEAL_OK);
	EXPECT_EQ(out, P(1));

	// Around the ring: the last item is stolen, its slot still holds it.
	for (uintptr_t round = 0; round < 3 * Q::kCap; round++) {
		uintptr_t id = 100 + round;
		ASSERT_TRUE(Q::push(a.d, P(id)));
		if (round % 2) {
			ASSERT_EQ(Q::steal(a.d, &out), WEFT__STEAL_OK);
			ASSERT_EQ(out, P(id));
			EXPECT_FALSE(Q::take_if_bottom(a.d, P(id))) << round;
		} else {
			EXPECT_TRUE(Q::take_if_bottom(a.d, P(id))) << round;
		}
		ASSERT_EQ(Q::len(a.d), 0u) << round;
		ASSERT_EQ(Q::take(a.d), nullptr) << round;
	}
	// A full ring whose items were all stolen.
	for (uintptr_t i = 0; i < Q::kCap; i++)
		ASSERT_TRUE(Q::push(a.d, P(500 + i)));
	for (uintptr_t i = 0; i < Q::kCap; i++)
		ASSERT_EQ(Q::steal(a.d, &out), WEFT__STEAL_OK);
	EXPECT_FALSE(Q::take_if_bottom(a.d, P(500 + Q::kCap - 1)));
	ASSERT_TRUE(Q::push(a.d, P(9)));
	EXPECT_EQ(Q::take(a.d), P(9));
	EXPECT_EQ(Q::take(a.d), nullptr);
}

TYPED_TEST(Deque, TakeTopRemovesOldestFirstUpToMax)
{
	using Q = TypeParam;
	Owned<Q> a;
	std::vector<void *> out(Q::kCap + 2, nullptr);
	const size_t n = Q::kCap;

	for (uintptr_t i = 1; i <= n; i++)
		ASSERT_TRUE(Q::push(a.d, P(i)));
	EXPECT_EQ(Q::take_top(a.d, out.data(), 0), 0u);
	EXPECT_EQ(Q::len(a.d), n);
	ASSERT_EQ(Q::take_top(a.d, out.data(), n / 2), n / 2);
	for (size_t i = 0; i < n / 2; i++)
		EXPECT_EQ(I(out[i]), i + 1);
	EXPECT_EQ(Q::len(a.d), n - n / 2);
	// The freed slots take new items; the rest keeps its order.
	for (uintptr_t i = n + 1; i <= n + n / 2; i++)
		ASSERT_TRUE(Q::push(a.d, P(i)));
	EXPECT_FALSE(Q::push(a.d, P(999)));
	// max beyond the length: everything, oldest first.
	ASSERT_EQ(Q::take_top(a.d, out.data(), n + 2), n);
	for (size_t i = 0; i < n; i++)
		EXPECT_EQ(I(out[i]), n / 2 + 1 + i);
	EXPECT_EQ(Q::take_top(a.d, out.data(), n), 0u);
	EXPECT_EQ(Q::take(a.d), nullptr);

	// Mixed with take and steal at the other end.
	for (uintptr_t i = 1; i <= 4 && i <= n; i++)
		ASSERT_TRUE(Q::push(a.d, P(i)));
	ASSERT_EQ(Q::take_top(a.d, out.data(), 1), 1u);
	EXPECT_EQ(out[0], P(1));
	if (n >= 4) {
		void *x = nullptr;
		EXPECT_EQ(Q::take(a.d), P(4));
		ASSERT_EQ(Q::steal(a.d, &x), WEFT__STEAL_OK);
		EXPECT_EQ(x, P(2));
		EXPECT_EQ(Q::len(a.d), 1u);
		EXPECT_EQ(Q::take(a.d), P(3));
	}
	EXPECT_EQ(Q::take(a.d), nullptr);
}

// Fills victim with n items 1..n and thief with m items 1001..; checks one
// steal_half against expected_steal_half() and every item's place after.
template <class Q>
void check_steal_half(size_t n, size_t m)
{
	Owned<Q> v, t;
	void *first = P(0xdead);
	void *x = nullptr;

	for (uintptr_t i = 1; i <= n; i++)
		ASSERT_TRUE(Q::push(v.d, P(i)));
	for (uintptr_t i = 0; i < m; i++)
		ASSERT_TRUE(Q::push(t.d, P(1001 + i)));
	size_t want = expected_steal_half<Q>(n, Q::kCap - m);
	size_t got = Q::steal_half(v.d, t.d, &first);

	ASSERT_EQ(got, want) << "n=" << n << " thief had " << m;
	if (got == 0) {
		EXPECT_EQ(first, P(0xdead));
		return;
	}
	EXPECT_EQ(first, P(1));
	EXPECT_EQ(Q::len(v.d), n - got);
	EXPECT_EQ(Q::len(t.d), m + got - 1);
	// Thief: its own items, then victim's 2 .. got, in order.
	for (uintptr_t i = 0; i < m; i++) {
		ASSERT_EQ(Q::steal(t.d, &x), WEFT__STEAL_OK);
		ASSERT_EQ(x, P(1001 + i));
	}
	for (uintptr_t i = 2; i <= got; i++) {
		ASSERT_EQ(Q::steal(t.d, &x), WEFT__STEAL_OK);
		ASSERT_EQ(x, P(i));
	}
	EXPECT_EQ(Q::steal(t.d, &x), WEFT__STEAL_EMPTY);
	// Victim keeps got+1 .. n.
	for (uintptr_t i = got + 1; i <= n; i++) {
		ASSERT_EQ(Q::steal(v.d, &x), WEFT__STEAL_OK);
		ASSERT_EQ(x, P(i));
	}
	EXPECT_EQ(Q::steal(v.d, &x), WEFT__STEAL_EMPTY);
}

TYPED_TEST(Deque, StealHalfTakesCeilHalf)
{
	using Q = TypeParam;

	for (size_t n = 0; n <= Q::kCap; n++) {
		check_steal_half<Q>(n, 0);
		if (::testing::Test::HasFatalFailure())
			return;
		if (n > 0 && n <= 2 * Q::steal_max()) {
			EXPECT_EQ(expected_steal_half<Q>(n, Q::kCap),
				  (n + 1) / 2);
		}
	}
}

TYPED_TEST(Deque, StealHalfHonoursStealMax)
{
	using Q = TypeParam;

	ASSERT_GE(Q::steal_max(), 1u);
	ASSERT_LE(Q::steal_max(), Q::kCap / 2);
	// A full victim: half would be kCap / 2; the bound may cut it.
	check_steal_half<Q>(Q::kCap, 0);
	if (Q::steal_max() < Q::kCap / 2) {
		EXPECT_EQ(expected_steal_half<Q>(Q::kCap, Q::kCap),
			  Q::steal_max());
	}
}

TYPED_TEST(Deque, StealHalfStopsWhenThiefIsFull)
{
	using Q = TypeParam;

	// Thief full: only *first. Thief with 1, 2 free slots: 2, 3 items.
	check_steal_half<Q>(Q::kCap, Q::kCap);
	check_steal_half<Q>(Q::kCap, Q::kCap - 1);
	check_steal_half<Q>(Q::kCap, Q::kCap - 2);
	EXPECT_EQ(expected_steal_half<Q>(Q::kCap, 0 + 0), 1u);
}

TYPED_TEST(Deque, LenTracksContents)
{
	using Q = TypeParam;
	Owned<Q> a, b;
	void *x = nullptr;
	void *out[2];

	EXPECT_EQ(Q::len(a.d), 0u);
	for (uintptr_t i = 1; i <= Q::kCap; i++) {
		ASSERT_TRUE(Q::push(a.d, P(i)));
		EXPECT_EQ(Q::len(a.d), i);
	}
	ASSERT_NE(Q::take(a.d), nullptr);
	EXPECT_EQ(Q::len(a.d), Q::kCap - 1);
	ASSERT_EQ(Q::steal(a.d, &x), WEFT__STEAL_OK);
	EXPECT_EQ(Q::len(a.d), Q::kCap - 2);
	size_t got = Q::steal_half(a.d, b.d, &x);
	EXPECT_EQ(Q::len(a.d), Q::kCap - 2 - got);
	EXPECT_EQ(Q::len(b.d), got - 1);
	size_t left = Q::len(a.d);
	EXPECT_EQ(Q::take_top(a.d, out, 2), std::min<size_t>(2, left));
	EXPECT_EQ(Q::len(a.d), left - std::min<size_t>(2, left));
}

// Two deques against two std::deque models: every call's result and both
// lengths are checked after every operation.
TYPED_TEST(Deque, MatchesStdDequeModel)
{
	using Q = TypeParam;
	Owned<Q> dq[2];
	std::deque<uintptr_t> model[2];
	uint64_t seed = test_seed();
	std::mt19937_64 rng(seed);
	uintptr_t next = 1;
	std::vector<void *> out(Q::kCap + 1);
	const size_t ops = scaled(400000);

	SCOPED_TRACE("WEFT_SEED=" + std::to_string(seed));
	for (size_t op = 0; op < ops; op++) {
		int a = (int)(rng() & 1), b = 1 - a;
		auto *d = dq[a].d;
		auto &m = model[a];
		// The push weight drifts, so the deques spend time both
		// near empty and near full.
		unsigned push_weight = 2 + (unsigned)((op >> 10) % 5);
		unsigned pick = (unsigned)(rng() % (push_weight + 6));
		void *x = nullptr;

		if (pick < push_weight) {
			bool fits = m.size() < Q::kCap;
			ASSERT_EQ(Q::push(d, P(next)), fits) << "op " << op;
			if (fits)
				m.push_back(next);
			next++;
		} else if (pick < push_weight + 2) {
			x = Q::take(d);
			if (m.empty()) {
				ASSERT_EQ(x, nullptr) << "op " << op;
			} else {
				ASSERT_EQ(I(x), m.back()) << "op " << op;
				m.pop_back();
			}
		} else if (pick < push_weight + 4) {
			int r = Q::steal(d, &x);
			if (m.empty()) {
				ASSERT_EQ(r, WEFT__STEAL_EMPTY) << "op " << op;
			} else {
				ASSERT_EQ(r, WEFT__STEAL_OK) << "op " << op;
				ASSERT_EQ(I(x), m.front()) << "op " << op;
				m.pop_front();
			}
		} else if (pick < push_weight + 5) {
			size_t want = expected_steal_half<Q>(
				m.size(), Q::kCap - model[b].size());
			size_t got = Q::steal_half(d, dq[b].d, &x);
			ASSERT_EQ(got, want) << "op " << op;
			if (got) {
				ASSERT_EQ(I(x), m.front()) << "op " << op;
				m.pop_front();
				for (size_t i = 1; i < got; i++) {
					model[b].push_back(m.front());
					m.pop_front();
				}
			}
		} else {
			size_t max = (size_t)(rng() % (Q::kCap + 2));
			size_t want = std::min(max, m.size());
			ASSERT_EQ(Q::take_top(d, out.data(), max), want)
				<< "op " << op;
			for (size_t i = 0; i < want; i++) {
				ASSERT_EQ(I(out[i]), m.front()) << "op " << op;
				m.pop_front();
			}
		}
		ASSERT_EQ(Q::len(dq[0].d), model[0].size()) << "op " << op;
		ASSERT_EQ(Q::len(dq[1].d), model[1].size()) << "op " << op;
	}
}

// Threaded cases: items point at Item records whose plain fields the
// producer writes before the push and the consumer reads after; under TSan
// that checks the deque's happens-before edge, not just the ledger.
struct Item {
	uint64_t id;
	uint64_t check;
};

uint64_t check_of(uint64_t id)
{
	return id * 0x9e3779b97f4a7c15ull + 1;
}

struct Ledger {
	explicit Ledger(size_t size)
	    : n(size), seen(new std::atomic<uint8_t>[size])
	{
		for (size_t i = 0; i < n; i++)
			seen[i].store(0, std::memory_order_relaxed);
	}
	void consume(void *p)
	{
		Item *it = static_cast<Item *>(p);
		if (it->id >= n || it->check != check_of(it->id)) {
			corrupt.fetch_add(1, std::memory_order_relaxed);
			return;
		}
		seen[it->id].fetch_add(1, std::memory_order_relaxed);
	}
	// Counts of ids seen 0 times and more than once, among the first n.
	void tally(size_t upto, size_t *missing, size_t *dup) const
	{
		*missing = *dup = 0;
		for (size_t i = 0; i < upto; i++) {
			uint8_t s = seen[i].load(std::memory_order_relaxed);
			*missing += s == 0;
			*dup += s > 1;
		}
	}
	size_t n;
	std::unique_ptr<std::atomic<uint8_t>[]> seen;
	std::atomic<size_t> corrupt{ 0 };
};

// RELIABILITY C8: an owner pushing and taking, 2 thieves stealing one at a
// time and by halves. Sum == N, no duplicate, nothing corrupt.
TYPED_TEST(Deque, OwnerAndTwoThievesTakeEachItemOnce)
{
	using Q = TypeParam;
	const size_t n = scaled(200000);
	std::vector<Item> items(n);
	Ledger ledger(n);
	Owned<Q> owner;
	std::atomic<bool> done{ false };
	std::atomic<size_t> stolen{ 0 };
	size_t taken = 0;

	auto thief = [&](unsigned seed) {
		Owned<Q> mine;
		std::mt19937 rng(seed);
		size_t count = 0, idle = 0;
		void *x = nullptr;

		for (;;) {
			if (rng() % 4 == 0) {
				size_t got = Q::steal_half(owner.d, mine.d, &x);
				if (got) {
					ledger.consume(x);
					count++;
					while ((x = Q::take(mine.d)) !=
					       nullptr) {
						ledger.consume(x);
						count++;
					}
					idle = 0;
					continue;
				}
			} else if (Q::steal(owner.d, &x) == WEFT__STEAL_OK) {
				ledger.consume(x);
				count++;
				idle = 0;
				continue;
			}
			// done is stored after the owner's last take saw the
			// deque empty; it pushes nothing after that.
			if (done.load(std::memory_order_acquire) &&
			    Q::len(owner.d) == 0)
				break;
			if (++idle % 64 == 0)
				std::this_thread::yield();
		}
		EXPECT_EQ(Q::len(mine.d), 0u);
		stolen.fetch_add(count);
	};
	std::thread t1(thief, 1), t2(thief, 2);
	std::mt19937 rng(3);

	for (size_t i = 0; i < n; i++) {
		items[i].id = i;
		items[i].check = check_of(i);
		while (!Q::push(owner.d, &items[i])) {
			void *x = Q::take(owner.d);
			if (x) {
				ledger.consume(x);
				taken++;
			}
		}
		uint32_t r = rng();
		if (r % 3 == 0) {
			void *x = Q::take(owner.d);
			if (x) {
				ledger.consume(x);
				taken++;
			}
		} else if (r % 3 == 1 && (r & 8)) {
			// The joiner's take of the child it just pushed.
			if (Q::take_if_bottom(owner.d, &items[i])) {
				ledger.consume(&items[i]);
				taken++;
			}
		} else if (r % 3 == 1 && i > 0) {
			// Not the newest (items[i] is, or the deque is empty):
			// must leave the deque alone.
			EXPECT_FALSE(Q::take_if_bottom(owner.d, &items[i - 1]))
				<< i;
		}
		// Some "work" between pushes, and the CPU now and then (2
		// cores, 3 threads), so the thieves keep up and meet the
		// owner near the bottom, not only far behind it.
		for (unsigned w = (r >> 8) % 16; w > 0; w--)
			weft__cpu_relax();
		if (i % 512 == 0)
			std::this_thread::yield();
	}
	for (void *x; (x = Q::take(owner.d)) != nullptr; taken++)
		ledger.consume(x);
	done.store(true, std::memory_order_release);
	t1.join();
	t2.join();

	size_t missing, dup;
	ledger.tally(n, &missing, &dup);
	EXPECT_EQ(ledger.corrupt.load(), 0u);
	EXPECT_EQ(missing, 0u);
	EXPECT_EQ(dup, 0u);
	EXPECT_EQ(taken + stolen.load(), n);
	EXPECT_EQ(Q::len(owner.d), 0u);
	printf("owner took %zu, thieves stole %zu\n", taken, stolen.load());
}

// The case that forbids one CAS per steal_half batch (see steal_half() in
// deque.c): the owner keeps only a few items and takes at the bottom, CAS
// free, while 2 thieves steal by halves, so each batch reaches the items
// the owner is taking.
TYPED_TEST(Deque, StealHalfRacesOwnerTakesNearBottom)
{
	using Q = TypeParam;
	const size_t n = scaled(200000);
	std::vector<Item> items(n);
	Ledger ledger(n);
	Owned<Q> owner;
	std::atomic<bool> done{ false };
	std::atomic<size_t> stolen{ 0 };
	size_t taken = 0;

	auto thief = [&]() {
		Owned<Q> mine;
		size_t count = 0, idle = 0;
		void *x = nullptr;

		for (;;) {
			if (Q::steal_half(owner.d, mine.d, &x)) {
				ledger.consume(x);
				count++;
				while ((x = Q::take(mine.d)) != nullptr) {
					ledger.consume(x);
					count++;
				}
				continue;
			}
			if (done.load(std::memory_order_acquire) &&
			    Q::len(owner.d) == 0)
				break;
			if (++idle % 64 == 0)
				std::this_thread::yield();
		}
		stolen.fetch_add(count);
	};
	std::thread t1(thief), t2(thief);
	std::mt19937 rng(11);

	for (size_t i = 0; i < n; i++) {
		items[i].id = i;
		items[i].check = check_of(i);
		while (!Q::push(owner.d, &items[i])) {
			void *x = Q::take(owner.d);
			if (x) {
				ledger.consume(x);
				taken++;
			}
		}
		// Keep 1 .. 4 items: take down to a random small length.
		size_t keep = 1 + rng() % 4;
		while (Q::len(owner.d) > keep) {
			void *x = Q::take(owner.d);
			if (!x)
				break;
			ledger.consume(x);
			taken++;
		}
		if (i % 512 == 0)
			std::this_thread::yield();
	}
	for (void *x; (x = Q::take(owner.d)) != nullptr; taken++)
		ledger.consume(x);
	done.store(true, std::memory_order_release);
	t1.join();
	t2.join();

	size_t missing, dup;
	ledger.tally(n, &missing, &dup);
	EXPECT_EQ(ledger.corrupt.load(), 0u);
	EXPECT_EQ(missing, 0u);
	EXPECT_EQ(dup, 0u);
	EXPECT_EQ(taken + stolen.load(), n);
	printf("owner took %zu, thieves stole %zu by halves\n", taken,
	       stolen.load());
}

// RELIABILITY C6: the owner pushes one item and takes it while 2 thieves
// try to steal it. Each round exactly one of them gets it.
TYPED_TEST(Deque, LastItemGoesToExactlyOne)
{
	using Q = TypeParam;
	const size_t rounds = scaled(20000);
	std::vector<Item> items(rounds + 1);
	Ledger ledger(rounds + 1);
	Owned<Q> owner;
	std::atomic<size_t> round{ 0 };
	std::atomic<size_t> armed{ 0 }; // thieves that saw the round
	std::atomic<size_t> acks{ 0 }; // thieves done with the round
	std::atomic<size_t> thief_wins{ 0 };
	std::atomic<bool> stop{ false };
	size_t owner_wins = 0;

	auto thief = [&]() {
		size_t seen = 0;
		unsigned spins = 0;
		void *x = nullptr;

		for (;;) {
			size_t r = round.load(std::memory_order_acquire);
			if (r == seen) {
				if (stop.load(std::memory_order_acquire))
					return;
				if (++spins % 128 == 0)
					std::this_thread::yield();
				continue;
			}
			seen = r;
			armed.fetch_add(1, std::memory_order_relaxed);
			// One item: an ABORT means someone else won it.
			if (Q::steal(owner.d, &x) == WEFT__STEAL_OK) {
				ledger.consume(x);
				thief_wins.fetch_add(1);
			}
			acks.fetch_add(1, std::memory_order_release);
		}
	};
	std::thread t1(thief), t2(thief);
	std::mt19937 rng(5);

	for (size_t r = 1; r <= rounds; r++) {
		items[r].id = r;
		items[r].check = check_of(r);
		if (!Q::push(owner.d, &items[r])) {
			ADD_FAILURE() << "push failed, round " << r;
			break;
		}
		round.store(r, std::memory_order_release);
		// Half the rounds race at once, half only once a thief is
		// on its way (bounded: a thief may be descheduled), after a
		// varying head start: both sides win often, and some
		// rounds are decided by the CAS.
		unsigned mode = (unsigned)rng();
		for (unsigned i = 0; (mode & 1) && i < 20000; i++) {
			if (armed.load(std::memory_order_relaxed) >= 2 * r - 1)
				break;
			weft__cpu_relax();
		}
		for (unsigned i = (mode >> 1) % 64; i > 0; i--)
			weft__cpu_relax();
		// Every other round the owner takes as a joiner would, only
		// if the bottom is the item it pushed: the same race.
		void *x = (mode & 4) ? (Q::take_if_bottom(owner.d, &items[r]) ?
						&items[r] :
						nullptr) :
				       Q::take(owner.d);
		if (x) {
			ledger.consume(x);
			owner_wins++;
		}
		unsigned spins = 0;
		while (acks.load(std::memory_order_acquire) < 2 * r)
			if (++spins % 128 == 0)
				std::this_thread::yield();
		// Not ASSERT: the thieves must still be stopped and joined.
		if (Q::len(owner.d) != 0 || ledger.seen[r].load() != 1) {
			ADD_FAILURE() << "round " << r << ": len "
				      << Q::len(owner.d) << ", item seen "
				      << (int)ledger.seen[r].load() << " times";
			break;
		}
	}
	stop.store(true, std::memory_order_release);
	t1.join();
	t2.join();

	size_t missing, dup;
	ledger.tally(rounds + 1, &missing, &dup);
	EXPECT_EQ(ledger.corrupt.load(), 0u);
	EXPECT_EQ(missing, 1u); // id 0 is never used
	EXPECT_EQ(dup, 0u);
	EXPECT_EQ(owner_wins + thief_wins.load(), rounds);
	printf("last item: owner won %zu, thieves won %zu of %zu rounds\n",
	       owner_wins, thief_wins.load(), rounds);
}

// Pushing NULL would be read as "empty" by take: a bug, caught at once.
TEST(DequeDeathTest, PushNullIsABug)
{
	GTEST_FLAG_SET(death_test_style, "threadsafe");
	Owned<BigDeque> a;
	EXPECT_DEATH(BigDeque::push(a.d, nullptr), "");
}

} // namespace
