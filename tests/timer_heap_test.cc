// SPDX-License-Identifier: MIT
//
// tests/timer_heap_test.cc - the per-worker timer heap and the time helpers
// (runtime/timer.c), tested directly: no runtime needed.
//
// What is checked: pop order is exactly (deadline, insertion) order, ties
// FIFO at 10^6 (RELIABILITY E7); never early; removal of root, leaf, middle
// and only node; a 10^6+ op randomized model against a sorted std::map;
// 10^6-node shapes (one long sibling list, one 10^6-deep chain) removed in
// random order without recursion; deadline overflow (E2), timespec
// extremes (E3), ms rounding never early. WEFT_TEST_SCALE (a divisor,
// default 1) shrinks the big counts, never to 0; WEFT_SEED moves the seeds.

extern "C" {
#include "../runtime/timer.h"
}

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <random>
#include <utility>
#include <vector>

namespace
{

// WEFT_TEST_SCALE divides the big counts (10 under sanitizers); never to 0.
size_t Scaled(size_t n)
{
	const char *s = getenv("WEFT_TEST_SCALE");
	unsigned long long d = s ? strtoull(s, nullptr, 10) : 1;
	if (d == 0)
		d = 1;
	size_t r = n / static_cast<size_t>(d);
	return r ? r : 1;
}

// WEFT_SEED, if set, replaces the fixed seeds; each randomized test prints
// the seed it used when it fails.
uint64_t Seed(uint64_t k)
{
	const char *s = getenv("WEFT_SEED");
	return (s ? strtoull(s, nullptr, 0) : 20240601) + k;
}

bool KeyBefore(const weft__timer *a, const weft__timer *b)
{
	if (a->deadline_ns != b->deadline_ns)
		return a->deadline_ns < b->deadline_ns;
	return a->order < b->order;
}

// Walks the whole heap without recursion and checks every link: first
// child's prev is the parent, a later sibling's prev is the previous
// sibling, every child's key is after its parent's, and the node count.
// The wheel in front of the heap (timer.c): every slot's list is doubly
// linked from the slot head, its occupied bit matches, and every timer is
// in the slot its tick gives relative to wheel_now. Return: the count.
size_t CheckWheel(const weft__timer_heap *h)
{
	size_t seen = 0;
	for (unsigned s = 0; s < WEFT__WHEEL_LEVELS * WEFT__WHEEL_SLOTS; s++) {
		unsigned level = s / WEFT__WHEEL_SLOTS;
		bool bit = (h->occupied[level] >> (s % WEFT__WHEEL_SLOTS)) & 1;
		EXPECT_EQ(bit, h->slot[s] != nullptr) << "slot " << s;
		const weft__timer *prev = nullptr;
		for (const weft__timer *n = h->slot[s]; n; n = n->next) {
			seen++;
			EXPECT_TRUE(n->in_wheel);
			EXPECT_EQ(n->wslot, s);
			EXPECT_TRUE(weft__timer_linked(n));
			if (prev) {
				EXPECT_EQ(n->prev, prev);
			}
			uint64_t tick = n->deadline_ns >> 20;
			EXPECT_GT(tick, h->wheel_now);
			unsigned l = (unsigned)(63 - __builtin_clzll(
							     tick ^ h->wheel_now)) /
				     6;
			EXPECT_EQ(l, level) << "tick " << tick;
			EXPECT_EQ((tick >> (6 * l)) & 63, s % WEFT__WHEEL_SLOTS);
			prev = n;
		}
	}
	EXPECT_EQ(seen, h->wheel_count);
	return seen;
}

void CheckHeap(const weft__timer_heap *h)
{
	size_t in_wheel = CheckWheel(h);
	if (!h->root) {
		ASSERT_EQ(h->count, in_wheel);
		return;
	}
	ASSERT_NE(h->root->prev, nullptr);
	ASSERT_EQ(h->root->next, nullptr);
	size_t seen = in_wheel;
	std::vector<const weft__timer *> todo{ h->root };
	while (!todo.empty()) {
		const weft__timer *n = todo.back();
		todo.pop_back();
		seen++;
		ASSERT_TRUE(weft__timer_linked(n));
		ASSERT_FALSE(n->in_wheel);
		const weft__timer *prev = n;
		for (const weft__timer *c = n->child; c; c = c->next) {
			ASSERT_EQ(c->prev, prev);
			ASSERT_TRUE(KeyBefore(n, c));
			todo.push_back(c);
			prev = c;
		}
	}
	ASSERT_EQ(seen, h->count);
}

// Pops everything and checks it against the expected pointers.
void ExpectPopOrder(weft__timer_heap *h, const std::vector<weft__timer *> &want)
{
	for (size_t i = 0; i < want.size(); i++) {
		weft__timer *t = weft__timer_pop_expired(h, UINT64_MAX);
		ASSERT_EQ(t, want[i]) << "at " << i;
		ASSERT_FALSE(weft__timer_linked(t));
	}
	ASSERT_EQ(weft__timer_pop_expired(h, UINT64_MAX), nullptr);
	ASSERT_EQ(h->count, 0u);
}

// The expected pop order of a set of nodes: sorted by (deadline, order).
std::vector<weft__timer *> Sorted(std::vector<weft__timer *> v)
{
	std::sort(v.begin(), v.end(), KeyBefore);
	return v;
}

} // namespace

TEST(TimerHeap, Empty)
{
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	EXPECT_EQ(weft__timer_min(&h), nullptr);
	EXPECT_EQ(weft__timer_next_deadline(&h), UINT64_MAX);
	EXPECT_EQ(weft__timer_pop_expired(&h, 0), nullptr);
	EXPECT_EQ(weft__timer_pop_expired(&h, UINT64_MAX), nullptr);
	EXPECT_EQ(h.count, 0u);

	weft__timer t;
	weft__timer_init(&t);
	EXPECT_FALSE(weft__timer_linked(&t));
}

TEST(TimerHeap, InsertPopOrder)
{
	const uint64_t seed = Seed(1);
	SCOPED_TRACE(testing::Message() << "WEFT_SEED-derived seed " << seed);
	std::mt19937_64 rng(seed);
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	std::vector<weft__timer> t(1000);
	std::vector<weft__timer *> all;
	for (auto &x : t) {
		weft__timer_init(&x);
		weft__timer_insert(&h, &x, rng() % 100); // many ties
		ASSERT_TRUE(weft__timer_linked(&x));
		all.push_back(&x);
	}
	EXPECT_EQ(h.count, t.size());
	CheckHeap(&h);
	std::vector<weft__timer *> want = Sorted(all);
	EXPECT_EQ(weft__timer_min(&h), want[0]);
	EXPECT_EQ(weft__timer_next_deadline(&h), want[0]->deadline_ns);
	ExpectPopOrder(&h, want);
}

TEST(TimerHeap, RootIsLinked)
{
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	weft__timer a, b;
	weft__timer_init(&a);
	weft__timer_init(&b);
	weft__timer_insert(&h, &a, 10);
	EXPECT_EQ(weft__timer_min(&h), &a);
	EXPECT_TRUE(weft__timer_linked(&a));
	weft__timer_insert(&h, &b, 5); // b becomes the root
	EXPECT_EQ(weft__timer_min(&h), &b);
	EXPECT_TRUE(weft__timer_linked(&a));
	EXPECT_TRUE(weft__timer_linked(&b));
	ExpectPopOrder(&h, { &b, &a });
}

// RELIABILITY E7: 10^6 timers with one deadline fire in insertion order.
TEST(TimerHeap, MillionEqualDeadlinesFireFifo)
{
	const size_t n = Scaled(1000000);
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	std::vector<weft__timer> t(n);
	for (auto &x : t) {
		weft__timer_init(&x);
		weft__timer_insert(&h, &x, 42);
	}
	EXPECT_EQ(weft__timer_pop_expired(&h, 41), nullptr);
	for (size_t i = 0; i < n; i++) {
		weft__timer *got = weft__timer_pop_expired(&h, 42);
		ASSERT_EQ(got, &t[i]) << "at " << i;
		ASSERT_EQ(h.count, n - i - 1);
	}
	EXPECT_EQ(weft__timer_min(&h), nullptr);
}

// Three interleaved deadlines: grouped by deadline, FIFO inside each group,
// also after a mass cancel of every other timer.
TEST(TimerHeap, TiesFifoAcrossInterleavedDeadlinesAndCancels)
{
	const size_t n = Scaled(300000);
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	std::vector<weft__timer> t(n);
	for (size_t i = 0; i < n; i++) {
		weft__timer_init(&t[i]);
		weft__timer_insert(&h, &t[i], 1000 - (i % 3));
	}
	weft__timer_pop_expired(&h, 0); // nothing due; structure unchanged
	for (size_t i = 0; i < n; i += 2)
		weft__timer_remove(&h, &t[i]);
	CheckHeap(&h);
	std::vector<weft__timer *> want;
	for (size_t d = 998; d <= 1000; d++)
		for (size_t i = 1; i < n; i += 2)
			if (1000 - (i % 3) == d)
				want.push_back(&t[i]);
	ExpectPopOrder(&h, want);
}

TEST(TimerHeap, NeverEarly)
{
	const uint64_t seed = Seed(2);
	SCOPED_TRACE(testing::Message() << "WEFT_SEED-derived seed " << seed);
	std::mt19937_64 rng(seed);
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	const size_t n = Scaled(100000);
	std::vector<weft__timer> t(n);
	for (auto &x : t) {
		weft__timer_init(&x);
		weft__timer_insert(&h, &x, rng() % 1000000000);
	}
	uint64_t now = 0;
	const weft__timer *last = nullptr;
	size_t popped = 0;
	while (popped < n) {
		now += rng() % 20000;
		weft__timer *x;
		while ((x = weft__timer_pop_expired(&h, now))) {
			ASSERT_LE(x->deadline_ns, now);
			if (last) {
				ASSERT_TRUE(KeyBefore(last, x));
			}
			last = x;
			popped++;
		}
		ASSERT_GT(weft__timer_next_deadline(&h), now);
	}

	// The boundary itself: due at deadline, not one ns before.
	weft__timer a;
	weft__timer_init(&a);
	weft__timer_insert(&h, &a, 5000);
	EXPECT_EQ(weft__timer_pop_expired(&h, 4999), nullptr);
	EXPECT_EQ(weft__timer_pop_expired(&h, 5000), &a);

	// A deadline already passed is due at once.
	weft__timer_insert(&h, &a, 10);
	EXPECT_EQ(weft__timer_pop_expired(&h, 5000), &a);

	// UINT64_MAX is only due at UINT64_MAX, and reads as "nothing to wait".
	weft__timer_insert(&h, &a, UINT64_MAX);
	EXPECT_EQ(weft__timer_next_deadline(&h), UINT64_MAX);
	EXPECT_EQ(weft__timer_pop_expired(&h, UINT64_MAX - 1), nullptr);
	EXPECT_EQ(weft__timer_pop_expired(&h, UINT64_MAX), &a);
}

TEST(TimerHeap, RemoveOnlyNode)
{
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	weft__timer a;
	weft__timer_init(&a);
	weft__timer_insert(&h, &a, 7);
	weft__timer_remove(&h, &a);
	EXPECT_FALSE(weft__timer_linked(&a));
	EXPECT_EQ(h.count, 0u);
	EXPECT_EQ(weft__timer_min(&h), nullptr);
	EXPECT_EQ(weft__timer_next_deadline(&h), UINT64_MAX);
	EXPECT_EQ(weft__timer_pop_expired(&h, UINT64_MAX), nullptr);
}

TEST(TimerHeap, RemoveRoot)
{
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	std::vector<weft__timer> t(10);
	std::vector<weft__timer *> all;
	for (size_t i = 0; i < t.size(); i++) {
		weft__timer_init(&t[i]);
		weft__timer_insert(&h, &t[i], (i * 7) % 10);
		all.push_back(&t[i]);
	}
	std::vector<weft__timer *> want = Sorted(all);
	ASSERT_EQ(weft__timer_min(&h), want[0]);
	weft__timer_remove(&h, want[0]);
	EXPECT_FALSE(weft__timer_linked(want[0]));
	EXPECT_EQ(weft__timer_min(&h), want[1]);
	EXPECT_EQ(h.count, 9u);
	CheckHeap(&h);
	want.erase(want.begin());
	ExpectPopOrder(&h, want);
}

// Increasing deadlines: the root gets every other node as a childless child.
TEST(TimerHeap, RemoveLeaves)
{
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	std::vector<weft__timer> t(10);
	for (size_t i = 0; i < t.size(); i++) {
		weft__timer_init(&t[i]);
		weft__timer_insert(&h, &t[i], 100 + i);
	}
	// children are newest first: t[9] is the first child, t[1] the last
	ASSERT_EQ(h.root, &t[0]);
	ASSERT_EQ(t[0].child, &t[9]);
	ASSERT_EQ(t[5].child, nullptr);
	weft__timer_remove(&h, &t[9]); // first child
	CheckHeap(&h);
	weft__timer_remove(&h, &t[1]); // last child
	CheckHeap(&h);
	weft__timer_remove(&h, &t[5]); // middle of the sibling list
	CheckHeap(&h);
	EXPECT_EQ(h.count, 7u);
	ExpectPopOrder(&h, { &t[0], &t[2], &t[3], &t[4], &t[6], &t[7], &t[8] });
}

// A node with both a parent and children: exists after the first pop has
// paired the root's children.
TEST(TimerHeap, RemoveMiddleNode)
{
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	std::vector<weft__timer> t(64);
	std::vector<weft__timer *> all;
	for (size_t i = 0; i < t.size(); i++) {
		weft__timer_init(&t[i]);
		weft__timer_insert(&h, &t[i], (i * 37) % 64);
		all.push_back(&t[i]);
	}
	std::vector<weft__timer *> want = Sorted(all);
	ASSERT_EQ(weft__timer_pop_expired(&h, UINT64_MAX), want[0]);
	want.erase(want.begin());
	CheckHeap(&h);

	size_t removed = 0;
	for (int round = 0; round < 5; round++) {
		weft__timer *mid = nullptr;
		for (auto *x : want)
			if (x != h.root && x->child) {
				mid = x;
				break;
			}
		ASSERT_NE(mid, nullptr) << "no middle node in round " << round;
		weft__timer_remove(&h, mid);
		EXPECT_FALSE(weft__timer_linked(mid));
		removed++;
		CheckHeap(&h);
		want.erase(std::find(want.begin(), want.end(), mid));
		ASSERT_EQ(weft__timer_min(&h), want[0]);
	}
	EXPECT_EQ(h.count, 63 - removed);
	ExpectPopOrder(&h, want);
}

TEST(TimerHeap, RemoveThenReinsertSameNode)
{
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	weft__timer a, b, c;
	weft__timer_init(&a);
	weft__timer_init(&b);
	weft__timer_init(&c);
	weft__timer_insert(&h, &a, 50);
	weft__timer_insert(&h, &b, 50);
	weft__timer_insert(&h, &c, 50);

	// Re-armed with the same deadline: goes behind the existing ties.
	weft__timer_remove(&h, &a);
	EXPECT_FALSE(weft__timer_linked(&a));
	weft__timer_insert(&h, &a, 50);
	EXPECT_TRUE(weft__timer_linked(&a));
	EXPECT_EQ(h.count, 3u);
	CheckHeap(&h);
	ExpectPopOrder(&h, { &b, &c, &a });

	// Re-armed earlier: fires first. Re-armed later: fires last.
	weft__timer_insert(&h, &a, 50);
	weft__timer_insert(&h, &b, 60);
	weft__timer_insert(&h, &c, 70);
	weft__timer_remove(&h, &c);
	weft__timer_insert(&h, &c, 10);
	weft__timer_remove(&h, &a);
	weft__timer_insert(&h, &a, 80);
	CheckHeap(&h);
	ExpectPopOrder(&h, { &c, &b, &a });
}

// Misuse inside the runtime is a broken invariant: WEFT__BUG_ON aborts.
TEST(TimerHeapDeathTest, InsertLinkedOrRemoveUnlinkedAborts)
{
	GTEST_FLAG_SET(death_test_style, "threadsafe");
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	weft__timer a;
	weft__timer_init(&a);
	EXPECT_DEATH(weft__timer_remove(&h, &a), "");
	weft__timer_insert(&h, &a, 1);
	EXPECT_DEATH(weft__timer_insert(&h, &a, 2), "");

	// The root of another heap is not "in" this one.
	weft__timer_heap other;
	weft__timer_heap_init(&other);
	weft__timer b;
	weft__timer_init(&b);
	weft__timer_insert(&other, &b, 1);
	EXPECT_DEATH(weft__timer_remove(&h, &b), "");
	weft__timer_remove(&other, &b);
	weft__timer_remove(&h, &a);
}

// Randomized model: insert, remove a random linked timer, and fire due
// timers while virtual time advances, against a std::map keyed by
// (deadline, test-side insertion sequence). Every step checks count, min and
// next deadline; every popped timer must be exactly the map's first entry.
namespace
{

struct Model {
	std::vector<weft__timer> t;
	std::vector<std::pair<uint64_t, uint64_t>> key; // per node, when linked
	std::vector<size_t> linked, unlinked; // node indexes
	std::vector<size_t> pos; // index into linked/unlinked
	std::map<std::pair<uint64_t, uint64_t>, size_t> ref;
	weft__timer_heap h;
	uint64_t seq = 0, now = 0, ops = 0;
	size_t max_live = 0, max_wheel = 0;
	std::mt19937_64 rng;

	Model(size_t n, uint64_t seed) : t(n), key(n), pos(n), rng(seed)
	{
		weft__timer_heap_init(&h);
		for (size_t i = 0; i < n; i++) {
			weft__timer_init(&t[i]);
			pos[i] = unlinked.size();
			unlinked.push_back(i);
		}
	}

	static void Move(std::vector<size_t> &from, std::vector<size_t> &to,
			 std::vector<size_t> &pos, size_t i)
	{
		size_t last = from.back();
		from[pos[i]] = last;
		pos[last] = pos[i];
		from.pop_back();
		pos[i] = to.size();
		to.push_back(i);
	}

	size_t Index(const weft__timer *x) const
	{
		return static_cast<size_t>(x - t.data());
	}

	uint64_t PickDeadline()
	{
		uint64_t r = rng() % 100;
		if (r < 30)
			return now + rng() % 100; // dense: many ties
		if (r < 60)
			return now + rng() % 1000000;
		if (r < 70)
			// in the past
			return now - std::min<uint64_t>(now, rng() % 1000);
		if (r < 80)
			return 123456789; // fixed: ties, past or future
		if (r < 88)
			return rng(); // anywhere in 64 bits
		if (r < 93)
			return UINT64_MAX;
		return weft__deadline_after(now, rng() >> (rng() % 64));
	}

	void Insert()
	{
		size_t i = unlinked[rng() % unlinked.size()];
		uint64_t d = PickDeadline();
		weft__timer_insert(&h, &t[i], d);
		key[i] = { d, seq++ };
		ref.emplace(key[i], i);
		Move(unlinked, linked, pos, i);
		max_live = std::max(max_live, linked.size());
		max_wheel = std::max(max_wheel, h.wheel_count);
	}

	void Remove()
	{
		size_t i = linked[rng() % linked.size()];
		weft__timer_remove(&h, &t[i]);
		ASSERT_FALSE(weft__timer_linked(&t[i]));
		ASSERT_EQ(ref.erase(key[i]), 1u);
		Move(linked, unlinked, pos, i);
	}

	void Fire()
	{
		uint64_t r = rng() % 100;
		uint64_t step = r < 90 ? rng() % 200000 : rng() % 100000000;
		now = weft__deadline_after(now, step);
		if (now == UINT64_MAX)
			now = UINT64_MAX - 1; // keep "forever" timers pending
		for (;;) {
			weft__timer *x = weft__timer_pop_expired(&h, now);
			auto first = ref.begin();
			if (first == ref.end() || first->first.first > now) {
				ASSERT_EQ(x, nullptr);
				break;
			}
			ASSERT_NE(x, nullptr);
			ASSERT_EQ(Index(x), first->second);
			ASSERT_LE(x->deadline_ns, now);
			ASSERT_FALSE(weft__timer_linked(x));
			ref.erase(first);
			Move(linked, unlinked, pos, Index(x));
			ops++;
		}
	}

	void CheckTop()
	{
		ASSERT_EQ(h.count, ref.size());
		if (ref.empty()) {
			ASSERT_EQ(weft__timer_min(&h), nullptr);
			ASSERT_EQ(weft__timer_next_deadline(&h), UINT64_MAX);
		} else {
			ASSERT_EQ(Index(weft__timer_min(&h)),
				  ref.begin()->second);
			ASSERT_EQ(weft__timer_next_deadline(&h),
				  ref.begin()->first.first);
		}
	}

	void Run(uint64_t nr_ops, uint64_t check_every)
	{
		// Phases with their own mix, so the heap both fills the pool
		// and drains to empty: {insert, remove} percentages, rest fire.
		// The first phase fills the pool without firing anything.
		static const unsigned mix[][2] = { { 90, 10 },
						   { 85, 5 },
						   { 45, 30 },
						   { 10, 60 },
						   { 5, 15 } };
		const size_t nr_mix = sizeof(mix) / sizeof(mix[0]);
		uint64_t step = 0, phase_left = 2 * t.size();
		unsigned p_ins = mix[0][0], p_rem = mix[0][1];
		while (ops < nr_ops) {
			if (phase_left-- == 0) {
				size_t k = rng() % nr_mix;
				p_ins = mix[k][0];
				p_rem = mix[k][1];
				phase_left = rng() % (2 * t.size() + 100);
			}
			uint64_t r = rng() % 100;
			if (linked.empty() || (r < p_ins && !unlinked.empty()))
				Insert();
			else if (r < p_ins + p_rem)
				Remove();
			else
				Fire();
			if (HasFatalFailure())
				return;
			ops++;
			CheckTop();
			if (HasFatalFailure())
				return;
			if (++step % check_every == 0) {
				CheckHeap(&h);
				if (HasFatalFailure())
					return;
			}
		}
		// Drain: everything left fires in the model's order.
		while (!ref.empty()) {
			weft__timer *x =
				weft__timer_pop_expired(&h, UINT64_MAX);
			ASSERT_NE(x, nullptr);
			ASSERT_EQ(Index(x), ref.begin()->second);
			ref.erase(ref.begin());
		}
		ASSERT_EQ(weft__timer_pop_expired(&h, UINT64_MAX), nullptr);
		ASSERT_EQ(h.count, 0u);
		// The far timers went through the wheel, not just the heap.
		EXPECT_GT(max_wheel, 0u);
	}

	static bool HasFatalFailure()
	{
		return ::testing::Test::HasFatalFailure();
	}
};

} // namespace

TEST(TimerHeap, RandomizedModelSmall)
{
	// 16 nodes: the heap keeps filling up and emptying out.
	const uint64_t seed = Seed(3);
	SCOPED_TRACE(testing::Message() << "WEFT_SEED-derived seed " << seed);
	Model m(16, seed);
	m.Run(Scaled(400000), 1);
	EXPECT_EQ(m.max_live, 16u);
}

TEST(TimerHeap, RandomizedModelMedium)
{
	const uint64_t seed = Seed(4);
	SCOPED_TRACE(testing::Message() << "WEFT_SEED-derived seed " << seed);
	Model m(2000, seed);
	const size_t nr_ops = Scaled(600000);
	m.Run(nr_ops, 5000);
	// the heap really filled up, not just churned near empty
	EXPECT_GE(m.max_live, std::min<size_t>(2000, nr_ops / 4));
}

TEST(TimerHeap, RandomizedModelLarge)
{
	const uint64_t seed = Seed(5);
	SCOPED_TRACE(testing::Message() << "WEFT_SEED-derived seed " << seed);
	Model m(200000, seed);
	const size_t nr_ops = Scaled(1000000);
	m.Run(nr_ops, Scaled(250000));
	EXPECT_GE(m.max_live, std::min<size_t>(200000, nr_ops / 4));
}

// 10^6 random deadlines, one pop to build structure, then every node
// removed in random order.
TEST(TimerHeap, MillionRemovedInRandomOrder)
{
	const size_t n = Scaled(1000000);
	const uint64_t seed = Seed(6);
	SCOPED_TRACE(testing::Message() << "WEFT_SEED-derived seed " << seed);
	std::mt19937_64 rng(seed);
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	std::vector<weft__timer> t(n + 1);
	std::vector<weft__timer *> order;
	for (auto &x : t) {
		weft__timer_init(&x);
		weft__timer_insert(&h, &x, rng() % 1000000);
		order.push_back(&x);
	}
	weft__timer *first = weft__timer_pop_expired(&h, UINT64_MAX);
	ASSERT_NE(first, nullptr);
	order.erase(std::find(order.begin(), order.end(), first));
	CheckHeap(&h);
	std::shuffle(order.begin(), order.end(), rng);
	for (size_t i = 0; i < order.size(); i++) {
		weft__timer_remove(&h, order[i]);
		ASSERT_FALSE(weft__timer_linked(order[i]));
		ASSERT_EQ(h.count, n - i - 1);
		if (i % 200000 == 0) {
			CheckHeap(&h);
			// the min is the smallest of the nodes still linked
			std::vector<weft__timer *> rest(order.begin() + i + 1,
							order.end());
			if (!rest.empty()) {
				ASSERT_EQ(weft__timer_min(&h),
					  *std::min_element(rest.begin(),
							    rest.end(),
							    KeyBefore));
			}
		}
	}
	EXPECT_EQ(weft__timer_min(&h), nullptr);
}

// Shapes that would blow a recursive implementation: a root with 10^6
// children (increasing deadlines) and a 10^6-deep chain (decreasing).
TEST(TimerHeap, MillionSiblingsPopWithoutRecursion)
{
	const size_t n = Scaled(1000000);
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	std::vector<weft__timer> t(n);
	for (size_t i = 0; i < n; i++) {
		weft__timer_init(&t[i]);
		weft__timer_insert(&h, &t[i], i);
	}
	for (size_t i = 0; i < n; i++)
		ASSERT_EQ(weft__timer_pop_expired(&h, UINT64_MAX), &t[i]);
	EXPECT_EQ(h.count, 0u);
}

TEST(TimerHeap, MillionDeepChainRemovedInRandomOrder)
{
	const size_t n = Scaled(1000000);
	const uint64_t seed = Seed(7);
	SCOPED_TRACE(testing::Message() << "WEFT_SEED-derived seed " << seed);
	std::mt19937_64 rng(seed);
	weft__timer_heap h;
	weft__timer_heap_init(&h);
	std::vector<weft__timer> t(n);
	for (size_t i = 0; i < n; i++) {
		weft__timer_init(&t[i]);
		// decreasing: each new node becomes the root
		weft__timer_insert(&h, &t[i], n - i);
	}
	ASSERT_EQ(h.root, &t[n - 1]);
	CheckHeap(&h);
	std::vector<weft__timer *> order;
	for (auto &x : t)
		order.push_back(&x);
	std::shuffle(order.begin(), order.end(), rng);
	for (size_t i = 0; i < n / 2; i++)
		weft__timer_remove(&h, order[i]);
	CheckHeap(&h);
	std::vector<weft__timer *> rest = Sorted(
		std::vector<weft__timer *>(order.begin() + n / 2, order.end()));
	ExpectPopOrder(&h, rest);
}

TEST(TimeHelpers, ClockNowIsMonotonic)
{
	uint64_t a = weft__clock_now();
	struct timespec ts;
	ASSERT_EQ(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
	uint64_t b = weft__clock_now();
	uint64_t mid = static_cast<uint64_t>(ts.tv_sec) * 1000000000u +
		       static_cast<uint64_t>(ts.tv_nsec);
	EXPECT_GT(a, 0u);
	EXPECT_LE(a, mid);
	EXPECT_LE(mid, b);
	EXPECT_NE(b, UINT64_MAX);
}

// RELIABILITY E2: never wraps into "already expired".
TEST(TimeHelpers, DeadlineAfterSaturates)
{
	const uint64_t max = UINT64_MAX;
	EXPECT_EQ(weft__deadline_after(0, 0), 0u);
	EXPECT_EQ(weft__deadline_after(5, 10), 15u);
	EXPECT_EQ(weft__deadline_after(1000, max), max);
	EXPECT_EQ(weft__deadline_after(0, max), max);
	// a caller's "-5" means forever, whatever now is
	EXPECT_EQ(weft__deadline_after(1000, (uint64_t)-5), max);
	EXPECT_EQ(weft__deadline_after(0, (uint64_t)-5), max);
	EXPECT_EQ(weft__deadline_after(4, (uint64_t)-5), max);
	EXPECT_EQ(weft__deadline_after(max - 1, (uint64_t)-5), max);
	// 2^63 and above are "negative"; 2^63 - 1 is a (long) real timeout
	EXPECT_EQ(weft__deadline_after(0, (uint64_t)INT64_MAX + 1), max);
	EXPECT_EQ(weft__deadline_after(0, (uint64_t)INT64_MAX),
		  (uint64_t)INT64_MAX);
	EXPECT_EQ(weft__deadline_after(1000, (uint64_t)INT64_MAX),
		  (uint64_t)INT64_MAX + 1000);
	// UINT64_MAX - 1 as a timeout
	EXPECT_EQ(weft__deadline_after(0, max - 1), max);
	EXPECT_EQ(weft__deadline_after(7, max - 1), max);
	// now near the top
	EXPECT_EQ(weft__deadline_after(max - 1, 0), max - 1);
	EXPECT_EQ(weft__deadline_after(max - 1, 1), max);
	EXPECT_EQ(weft__deadline_after(max - 1, 2), max);
	EXPECT_EQ(weft__deadline_after(max - 10, 5), max - 5);
	EXPECT_EQ(weft__deadline_after(max - 10, 10), max);
	EXPECT_EQ(weft__deadline_after(max - 10, 11), max);
	EXPECT_EQ(weft__deadline_after(max, 0), max);
	EXPECT_EQ(weft__deadline_after(max, 1), max);
	// never below now
	const uint64_t seed = Seed(8);
	SCOPED_TRACE(testing::Message() << "WEFT_SEED-derived seed " << seed);
	std::mt19937_64 rng(seed);
	for (int i = 0; i < 100000; i++) {
		uint64_t now = rng() >> (rng() % 64);
		uint64_t to = rng() >> (rng() % 64);
		ASSERT_GE(weft__deadline_after(now, to), now);
	}
}

// RELIABILITY E3: tv_sec never negative, never past time_t.
TEST(TimeHelpers, NsToTimespecExtremes)
{
	struct timespec ts;
	weft__ns_to_timespec(0, &ts);
	EXPECT_EQ(ts.tv_sec, 0);
	EXPECT_EQ(ts.tv_nsec, 0);
	weft__ns_to_timespec(999999999, &ts);
	EXPECT_EQ(ts.tv_sec, 0);
	EXPECT_EQ(ts.tv_nsec, 999999999);
	weft__ns_to_timespec(1000000000, &ts);
	EXPECT_EQ(ts.tv_sec, 1);
	EXPECT_EQ(ts.tv_nsec, 0);
	weft__ns_to_timespec(1500000001, &ts);
	EXPECT_EQ(ts.tv_sec, 1);
	EXPECT_EQ(ts.tv_nsec, 500000001);

	const uint64_t extremes[] = {
		UINT64_MAX,	     UINT64_MAX - 1,
		(uint64_t)INT64_MAX, (uint64_t)INT64_MAX + 1,
		(uint64_t)-5,	     (uint64_t)INT32_MAX * 1000000000u,
	};
	for (uint64_t ns : extremes) {
		weft__ns_to_timespec(ns, &ts);
		EXPECT_GE(ts.tv_sec, 0) << ns;
		EXPECT_GE(ts.tv_nsec, 0) << ns;
		EXPECT_LT(ts.tv_nsec, 1000000000) << ns;
		if (sizeof(time_t) >= 8) {
			EXPECT_EQ(static_cast<uint64_t>(ts.tv_sec),
				  ns / 1000000000u)
				<< ns;
			EXPECT_EQ(static_cast<uint64_t>(ts.tv_nsec),
				  ns % 1000000000u)
				<< ns;
		}
	}
	weft__ns_to_timespec(UINT64_MAX, &ts);
	if (sizeof(time_t) >= 8) {
		EXPECT_EQ(ts.tv_sec, 18446744073);
		EXPECT_EQ(ts.tv_nsec, 709551615);
	}
}

// Rounded up: a poll-style wait never ends before the deadline.
TEST(TimeHelpers, TimeoutMsUntilNeverEarly)
{
	const uint64_t now = 5000000000u;
	EXPECT_EQ(weft__timeout_ms_until(UINT64_MAX, now), -1);
	EXPECT_EQ(weft__timeout_ms_until(UINT64_MAX, 0), -1);
	EXPECT_EQ(weft__timeout_ms_until(now, now), 0);
	EXPECT_EQ(weft__timeout_ms_until(now - 1, now), 0);
	EXPECT_EQ(weft__timeout_ms_until(0, now), 0);
	EXPECT_EQ(weft__timeout_ms_until(now + 1, now), 1);
	EXPECT_EQ(weft__timeout_ms_until(now + 999999, now), 1);
	EXPECT_EQ(weft__timeout_ms_until(now + 1000000, now), 1);
	EXPECT_EQ(weft__timeout_ms_until(now + 1000001, now), 2);
	EXPECT_EQ(weft__timeout_ms_until(now + 2000000, now), 2);
	// INT_MAX ms exactly, one ns more, and far beyond: clamped
	const uint64_t int_max_ms = (uint64_t)INT_MAX * 1000000u;
	EXPECT_EQ(weft__timeout_ms_until(now + int_max_ms, now), INT_MAX);
	EXPECT_EQ(weft__timeout_ms_until(now + int_max_ms + 1, now), INT_MAX);
	EXPECT_EQ(weft__timeout_ms_until(UINT64_MAX - 1, 0), INT_MAX);
	EXPECT_EQ(weft__timeout_ms_until(UINT64_MAX - 1, UINT64_MAX - 2), 1);
	const uint64_t seed = Seed(9);
	SCOPED_TRACE(testing::Message() << "WEFT_SEED-derived seed " << seed);
	std::mt19937_64 rng(seed);
	for (int i = 0; i < 100000; i++) {
		uint64_t d = rng() % 10000000000u;
		int64_t ms = weft__timeout_ms_until(now + d + 1, now);
		ASSERT_GE(static_cast<uint64_t>(ms) * 1000000u, d + 1);
		ASSERT_LT(static_cast<uint64_t>(ms - 1) * 1000000u, d + 1);
	}
}
