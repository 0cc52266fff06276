// SPDX-License-Identifier: MIT
//
// tests/deque_stress_test.cc - the Chase-Lev deque under load (label
// "stress"): one owner pushes and takes while 3 thieves steal one at a time
// and by halves, from the owner and from each other. When a push fails the
// owner spills half of its deque with weft__deque_take_top() into a
// mutex-protected "global" vector, as a worker spills to the injection
// queue (RELIABILITY C6-C8).
//
// Invariants: pushed == taken + stolen + overflowed; every pushed item is
// seen exactly once (ledger) with its contents intact; nothing is seen that
// was not pushed; every deque ends empty. Runs on libweft's deque and on
// the 4-slot copy (tests/support/deque_small.c), where the ring wraps and
// overflows every few operations.
//
// Bounded by items and by time: min(N, 10 s); WEFT_TEST_SCALE (a divisor,
// default 1, never to 0) shrinks both. A watchdog fails the run with the
// counters if nothing is consumed for 10 s.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

// After the standard headers: see tests/support/deque_small.h.
#include "runtime/deque.h"
#include "tests/support/deque_adapters.h"

namespace
{

using Clock = std::chrono::steady_clock;

long test_scale()
{
	const char *s = getenv("WEFT_TEST_SCALE");
	long k = s ? atol(s) : 1;

	return k < 1 ? 1 : k;
}

size_t scaled(size_t n)
{
	n /= (size_t)test_scale();
	return n ? n : 1;
}

struct Item {
	uint64_t id;
	uint64_t check;
};

uint64_t check_of(uint64_t id)
{
	return id * 0x9e3779b97f4a7c15ull + 1;
}

constexpr int kThieves = 3;

// One cache line per thread: what it consumed, by path.
struct alignas(64) Counters {
	std::atomic<uint64_t> consumed{ 0 }; // watchdog progress
	std::atomic<uint64_t> steals{ 0 }, steal_halves{ 0 }, half_items{ 0 };
	std::atomic<uint64_t> aborts{ 0 }, own_takes{ 0 }, cross_steals{ 0 };
};

template <class Q>
class Stress
{
public:
	Stress(size_t n, Clock::duration limit)
	    : n_(n), limit_(limit), items_(n),
	      seen_(new std::atomic<uint8_t>[n])
	{
		for (size_t i = 0; i < n_; i++)
			seen_[i].store(0, std::memory_order_relaxed);
		owner_ = Q::make();
		for (auto &d : mine_)
			d = Q::make();
	}
	~Stress()
	{
		Q::destroy(owner_);
		for (auto *d : mine_)
			Q::destroy(d);
	}

	void run()
	{
		std::vector<std::thread> threads;

		threads.emplace_back([this] {
			owner();
		});
		for (int i = 0; i < kThieves; i++)
			threads.emplace_back([this, i] {
				thief(i);
			});
		watchdog();
		for (auto &t : threads)
			t.join();
		check();
	}

private:
	void consume(void *p, Counters &c)
	{
		Item *it = static_cast<Item *>(p);

		if (it->id >= n_ || it->check != check_of(it->id))
			corrupt_.fetch_add(1, std::memory_order_relaxed);
		else
			seen_[it->id].fetch_add(1, std::memory_order_relaxed);
		c.consumed.fetch_add(1, std::memory_order_relaxed);
	}

	void owner()
	{
		Counters &c = owner_counters_;
		std::mt19937_64 rng(1);
		std::vector<void *> spill(Q::kCap);
		const auto deadline = Clock::now() + limit_;
		size_t i;

		for (i = 0; i < n_; i++) {
			if (i % 256 == 0 && Clock::now() >= deadline)
				break;
			items_[i].id = i;
			items_[i].check = check_of(i);
			while (!Q::push(owner_, &items_[i])) {
				// Full: spill the oldest half, as a worker
				// does to the injection queue.
				size_t k = Q::take_top(owner_, spill.data(),
						       Q::kCap / 2);
				std::lock_guard<std::mutex> g(global_lock_);
				global_.insert(global_.end(), spill.begin(),
					       spill.begin() + (long)k);
				spills_++;
			}
			// Bursts of pushes, then a few takes, so the deque
			// is sometimes full and sometimes nearly empty. In
			// slow phases the owner "works" between pushes and
			// the thieves catch up: take and steal meet at the
			// last items; in fast phases it overflows.
			uint64_t r = rng();
			if ((i >> 14) % 3 == 2) {
				for (unsigned w = (unsigned)(r >> 32) % 128;
				     w > 0; w--)
					weft__cpu_relax();
			}
			if (r % 8 == 0) {
				for (unsigned t = (unsigned)(r >> 8) % 6; t > 0;
				     t--) {
					void *x = Q::take(owner_);
					if (!x)
						break;
					consume(x, c);
					taken_++;
				}
			}
		}
		pushed_ = i;
		for (void *x; (x = Q::take(owner_)) != nullptr; taken_++)
			consume(x, c);
		// The owner pushes nothing after this.
		done_.store(true, std::memory_order_release);
	}

	void thief(int me)
	{
		Counters &c = thief_counters_[me];
		auto *mine = mine_[me];
		std::mt19937_64 rng(100 + me);
		uint64_t idle = 0;
		void *x = nullptr;

		for (;;) {
			uint64_t r = rng();
			bool got = false;

			switch (r % 8) {
			case 0:
			case 1:
			case 2:
			case 3: {
				int s = Q::steal(owner_, &x);
				if (s == WEFT__STEAL_OK) {
					consume(x, c);
					c.steals.fetch_add(
						1, std::memory_order_relaxed);
					got = true;
				} else if (s == WEFT__STEAL_ABORT) {
					c.aborts.fetch_add(
						1, std::memory_order_relaxed);
				}
				break;
			}
			case 4:
			case 5: {
				size_t k = Q::steal_half(owner_, mine, &x);
				if (k) {
					consume(x, c);
					c.steal_halves.fetch_add(
						1, std::memory_order_relaxed);
					c.half_items.fetch_add(
						k, std::memory_order_relaxed);
					got = true;
				}
				break;
			}
			case 6: {
				// Another thief's deque: what it got by halves.
				int v = (me + 1 +
					 (int)((r >> 8) % (kThieves - 1))) %
					kThieves;
				if (Q::steal(mine_[v], &x) == WEFT__STEAL_OK) {
					consume(x, c);
					c.cross_steals.fetch_add(
						1, std::memory_order_relaxed);
					got = true;
				}
				break;
			}
			default:
				x = Q::take(mine);
				if (x) {
					consume(x, c);
					c.own_takes.fetch_add(
						1, std::memory_order_relaxed);
					got = true;
				}
				break;
			}
			if (got) {
				idle = 0;
				continue;
			}
			// done_ is stored after the owner's last take found
			// its deque empty. Leave some of our own deque for
			// the others; at the end take what is left.
			if (done_.load(std::memory_order_acquire) &&
			    Q::len(owner_) == 0 && Q::len(mine) == 0)
				break;
			if (++idle % 32 == 0)
				std::this_thread::yield();
		}
		while ((x = Q::take(mine)) != nullptr) {
			consume(x, c);
			c.own_takes.fetch_add(1, std::memory_order_relaxed);
		}
		thieves_done_.fetch_add(1, std::memory_order_release);
	}

	uint64_t progress() const
	{
		uint64_t p = owner_counters_.consumed.load();
		for (auto &c : thief_counters_)
			p += c.consumed.load();
		return p;
	}

	void watchdog()
	{
		uint64_t last = progress();
		auto last_change = Clock::now();

		while (thieves_done_.load(std::memory_order_acquire) <
			       kThieves ||
		       !done_.load(std::memory_order_acquire)) {
			std::this_thread::sleep_for(
				std::chrono::milliseconds(20));
			uint64_t p = progress();
			if (p != last) {
				last = p;
				last_change = Clock::now();
			} else if (Clock::now() - last_change >
				   std::chrono::seconds(10)) {
				fprintf(stderr,
					"deque stress: no progress for 10 s: "
					"consumed %llu, owner len %zu, done %d, "
					"thieves done %d\n",
					(unsigned long long)p, Q::len(owner_),
					(int)done_.load(),
					thieves_done_.load());
				for (int i = 0; i < kThieves; i++)
					fprintf(stderr, "  thief %d len %zu\n",
						i, Q::len(mine_[i]));
				std::abort();
			}
		}
	}

	void check()
	{
		uint64_t stolen = 0, steals = 0, halves = 0, half_items = 0;
		uint64_t aborts = 0, own = 0, cross = 0;

		for (auto &c : thief_counters_) {
			stolen += c.consumed.load();
			steals += c.steals.load();
			halves += c.steal_halves.load();
			half_items += c.half_items.load();
			aborts += c.aborts.load();
			own += c.own_takes.load();
			cross += c.cross_steals.load();
		}
		// Every global item counts once, via the ledger too.
		Counters sink;
		for (void *x : global_)
			consume(x, sink);
		const uint64_t overflowed = global_.size();

		size_t missing = 0, dup = 0, phantom = 0;
		for (size_t i = 0; i < n_; i++) {
			uint8_t s = seen_[i].load(std::memory_order_relaxed);
			if (i < pushed_) {
				missing += s == 0;
				dup += s > 1;
			} else {
				phantom += s != 0;
			}
		}
		EXPECT_EQ(corrupt_.load(), 0u);
		EXPECT_EQ(missing, 0u);
		EXPECT_EQ(dup, 0u);
		EXPECT_EQ(phantom, 0u);
		EXPECT_EQ(pushed_, taken_ + stolen + overflowed);
		EXPECT_EQ(Q::len(owner_), 0u);
		for (auto *d : mine_)
			EXPECT_EQ(Q::len(d), 0u);
		EXPECT_GT(pushed_, 0u);

		printf("cap %zu: pushed %zu (of %zu) = taken %zu + stolen %llu "
		       "+ overflowed %llu (%zu spills)\n",
		       Q::kCap, pushed_, n_, taken_, (unsigned long long)stolen,
		       (unsigned long long)overflowed, spills_);
		printf("  thieves: %llu steals, %llu steal_halves moving %llu, "
		       "%llu takes of their own, %llu from each other, "
		       "%llu aborts\n",
		       (unsigned long long)steals, (unsigned long long)halves,
		       (unsigned long long)half_items, (unsigned long long)own,
		       (unsigned long long)cross, (unsigned long long)aborts);
	}

	const size_t n_;
	const Clock::duration limit_;
	std::vector<Item> items_;
	std::unique_ptr<std::atomic<uint8_t>[]> seen_;
	std::atomic<size_t> corrupt_{ 0 };
	typename Q::D *owner_;
	typename Q::D *mine_[kThieves];
	std::atomic<bool> done_{ false };
	std::atomic<int> thieves_done_{ 0 };
	// Written by the owner thread, read after join.
	size_t pushed_ = 0, taken_ = 0, spills_ = 0;
	std::mutex global_lock_;
	std::vector<void *> global_;
	Counters owner_counters_;
	Counters thief_counters_[kThieves];
};

Clock::duration time_limit()
{
	auto ms = std::max<long>(1000, 10000 / test_scale());
	return std::chrono::milliseconds(ms);
}

TEST(DequeStress, OwnerThreeThievesOverflowCap256)
{
	Stress<BigDeque> s(scaled(4000000), time_limit());
	s.run();
}

TEST(DequeStress, OwnerThreeThievesOverflowCap4)
{
	Stress<SmallDeque> s(scaled(4000000), time_limit());
	s.run();
}

} // namespace
