// SPDX-License-Identifier: MIT
// tests/sync_stress_test.cc - the synchronisation primitives under load
// (ctest label "stress"), each run with 2 and 4 workers (4 oversubscribes
// a 2-core machine on purpose: the OS preempts workers in the middle of
// protocols). Every case checks exact invariants, never "it did not crash":
//  - RELIABILITY B11/C11: 8 producers and 8 consumers move 1,000,000
//    items through capacity-1..4 queues while consumers are cancelled and
//    respawned at random: every item delivered exactly once (ledger) and
//    the sum/xor checksums match;
//  - a mutex-protected counter incremented 10,000,000 times by 64 tasks;
//  - a semaphore whose holders never exceed its permits (tracked with an
//    atomic), with random cancellation, and whose count is conserved;
//  - a bounded buffer built from a mutex and two conditions (ledger);
//  - RELIABILITY C10: event sets from a foreign thread racing
//    cancellations of the waiters: each waiter ends exactly once.
// WEFT_TEST_SCALE divides the sizes (10 under sanitizers). A watchdog
// aborts with a message when a case makes no progress for 120 s.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "tests/harness.h"

using weft_test::scaled;

extern "C" {
size_t weft__event_nwaiters(weft_event *e);
}

namespace
{

using weft_test::go;
using weft_test::let_others_run;
using weft_test::race;

// Fails the process loudly if `progress` does not move for `limit`.
class Watchdog
{
public:
	Watchdog(const char *what, std::atomic<long> &progress,
		 std::chrono::seconds limit = std::chrono::seconds(120))
	    : what_(what), progress_(progress), limit_(limit), th_([this] {
		      run();
	      })
	{
	}
	~Watchdog()
	{
		{
			std::lock_guard<std::mutex> g(m_);
			stop_ = true;
		}
		cv_.notify_all();
		th_.join();
	}

private:
	void run()
	{
		long last = progress_.load();
		auto since = std::chrono::steady_clock::now();
		std::unique_lock<std::mutex> g(m_);
		while (!cv_.wait_for(g, std::chrono::seconds(1), [this] {
			return stop_;
		})) {
			long now = progress_.load();
			auto t = std::chrono::steady_clock::now();
			if (now != last) {
				last = now;
				since = t;
			} else if (t - since > limit_) {
				fprintf(stderr,
					"watchdog: '%s' made no progress for "
					"%lld s (progress %ld)\n",
					what_, (long long)limit_.count(), now);
				abort();
			}
		}
	}
	const char *what_;
	std::atomic<long> &progress_;
	std::chrono::seconds limit_;
	std::mutex m_;
	std::condition_variable cv_;
	bool stop_ = false;
	std::thread th_;
};

class SyncStress : public testing::TestWithParam<unsigned>
{
};

} // namespace

// ---------------------------------------------------------------- queue

TEST_P(SyncStress, QueueFanInFanOutWithConsumerCancellation)
{
	const unsigned workers = GetParam();
	const int nprod = 8, ncons = 8;
	const uint64_t total = scaled(1000000);
	std::atomic<long> progress{ 0 };
	Watchdog wd("queue fan-in/fan-out", progress);
	uint64_t done_items = 0;
	long cancels = 0;

	for (size_t cap = 1; cap <= 4; cap++) {
		const uint64_t per = std::max<uint64_t>(1, total / 4 / nprod);
		const uint64_t n = per * nprod;
		std::vector<std::atomic<uint8_t>> ledger(n);
		std::atomic<uint64_t> sum{ 0 }, xr{ 0 }, got{ 0 };
		weft_queue *q = weft_queue_new(cap);
		ASSERT_NE(nullptr, q);
		WEFT_TEST_RUN(workers, [&] {
			auto consumer = [&] {
				for (;;) {
					void *p;
					int r = weft_queue_get(q, &p);
					if (r == -EPIPE || r == -ECANCELED)
						return 0;
					if (r)
						return r;
					uint64_t id =
						(uint64_t)(uintptr_t)p - 1;
					if (id >= n)
						return -ERANGE;
					ledger[id]++;
					sum += id;
					xr ^= id * 0x9E3779B97F4A7C15ull;
					got++;
					progress++;
				}
			};
			std::atomic<int> prod_done{ 0 };
			std::vector<weft_task *> prods, cons;
			for (int p = 0; p < nprod; p++)
				prods.push_back(go([&, p] {
					for (uint64_t k = 0; k < per; k++) {
						uint64_t id =
							(uint64_t)p * per + k;
						int r = weft_queue_put(
							q,
							(void *)(uintptr_t)(id +
									    1));
						if (r)
							return r;
					}
					prod_done++;
					return 0;
				}));
			for (int c = 0; c < ncons; c++)
				cons.push_back(go(consumer));
			// Chaos: cancel and respawn consumers while items flow.
			std::mt19937 rng(1234 + (unsigned)cap);
			while (prod_done < nprod) {
				int i = (int)(rng() % ncons);
				weft_cancel(cons[i]);
				EXPECT_EQ(0, weft_join(cons[i]));
				cons[i] = go(consumer);
				cancels++;
				if (rng() % 8 == 0)
					weft_sleep(WEFT_USEC(rng() % 50));
			}
			for (auto p : prods)
				EXPECT_EQ(0, weft_join(p));
			weft_queue_close(q);
			for (auto c : cons)
				EXPECT_EQ(0, weft_join(c));
		});
		EXPECT_EQ(0u, weft_queue_len(q));
		weft_queue_free(q);
		ASSERT_EQ(n, got.load()) << "capacity " << cap;
		uint64_t want_sum = 0, want_xr = 0;
		for (uint64_t i = 0; i < n; i++) {
			ASSERT_EQ(1, ledger[i].load())
				<< "item " << i << ", capacity " << cap;
			want_sum += i;
			want_xr ^= i * 0x9E3779B97F4A7C15ull;
		}
		EXPECT_EQ(want_sum, sum.load());
		EXPECT_EQ(want_xr, xr.load());
		done_items += n;
	}
	printf("%u workers: %llu items, %ld consumer cancellations\n", workers,
	       (unsigned long long)done_items, cancels);
}

// ---------------------------------------------------------------- mutex

TEST_P(SyncStress, MutexCounter)
{
	const unsigned workers = GetParam();
	const int ntasks = 64;
	const long per = (long)scaled(10000000) / ntasks;
	weft_mutex m{};
	long counter = 0; // protected by m
	std::atomic<long> progress{ 0 };
	Watchdog wd("mutex counter", progress);
	WEFT_TEST_RUN(workers, [&] {
		std::vector<weft_task *> ts;
		for (int i = 0; i < ntasks; i++)
			ts.push_back(go([&, i] {
				for (long k = 0; k < per; k++) {
					if (weft_mutex_lock(&m))
						return -1;
					counter++;
					if ((k + i) % 1024 == 0)
						let_others_run(); // holding it
					weft_mutex_unlock(&m);
					if (k % 256 == 0)
						progress++;
				}
				return 0;
			}));
		for (auto t : ts)
			EXPECT_EQ(0, weft_join(t));
	});
	EXPECT_EQ(ntasks * per, counter);
}

// ---------------------------------------------------------------- semaphore

TEST_P(SyncStress, SemaphoreNeverExceedsPermits)
{
	const unsigned workers = GetParam();
	const unsigned permits = 4;
	const int ntasks = 32;
	const long per = (long)scaled(2000000) / ntasks;
	weft_sem s{};
	ASSERT_EQ(0, weft_sem_init(&s, permits));
	std::atomic<int> holders{ 0 }, max_holders{ 0 };
	std::atomic<long> progress{ 0 }, cancelled{ 0 };
	Watchdog wd("semaphore", progress);
	WEFT_TEST_RUN(workers, [&] {
		std::atomic<long> left{ per * ntasks };
		auto body = [&] {
			while (left.fetch_sub(1) > 0) {
				int r = weft_sem_acquire(&s);
				if (r == -ECANCELED) {
					left++;
					cancelled++;
					return 0;
				}
				if (r)
					return r;
				int h = ++holders;
				int mx = max_holders.load();
				while (h > mx &&
				       !max_holders.compare_exchange_weak(mx,
									  h))
					;
				if (h > (int)permits)
					return -1000;
				if (progress++ % 16 == 0)
					let_others_run();
				--holders;
				weft_sem_release(&s);
			}
			return 0;
		};
		std::vector<weft_task *> ts;
		for (int i = 0; i < ntasks; i++)
			ts.push_back(go(body));
		std::mt19937 rng(5);
		while (left.load() > 0) {
			int i = (int)(rng() % ntasks);
			weft_cancel(ts[i]);
			EXPECT_EQ(0, weft_join(ts[i]));
			ts[i] = go(body);
			weft_sleep(WEFT_USEC(rng() % 50));
		}
		for (auto t : ts)
			EXPECT_EQ(0, weft_join(t));
	});
	EXPECT_LE(max_holders.load(), (int)permits);
	EXPECT_EQ(0, holders.load());
	for (unsigned i = 0; i < permits; i++)
		EXPECT_EQ(0, weft_sem_try_acquire(&s)) << "permit leaked";
	EXPECT_EQ(-EAGAIN, weft_sem_try_acquire(&s)) << "permit duplicated";
	printf("%u workers: max holders %d, %ld waits cancelled\n", workers,
	       max_holders.load(), cancelled.load());
}

// ---------------------------------------------------------------- condition

TEST_P(SyncStress, BoundedBufferWithMutexAndConditions)
{
	const unsigned workers = GetParam();
	const int nprod = 6, ncons = 6, cap = 3;
	const uint64_t per = scaled(300000) / nprod + 1;
	const uint64_t n = per * nprod;
	weft_mutex m{};
	weft_cond not_full{}, not_empty{};
	uint64_t buf[cap];
	int head = 0, count = 0, prod_left = nprod; // under m
	std::vector<std::atomic<uint8_t>> ledger(n);
	std::atomic<long> progress{ 0 };
	Watchdog wd("bounded buffer", progress);
	WEFT_TEST_RUN(workers, [&] {
		std::vector<weft_task *> ts;
		for (int p = 0; p < nprod; p++)
			ts.push_back(go([&, p] {
				for (uint64_t k = 0; k < per; k++) {
					weft_mutex_lock(&m);
					while (count == cap)
						if (weft_cond_wait(&not_full,
								   &m))
							return -1;
					buf[(head + count) % cap] = p * per + k;
					count++;
					weft_mutex_unlock(&m);
					weft_cond_signal(&not_empty);
				}
				weft_mutex_lock(&m);
				prod_left--;
				weft_mutex_unlock(&m);
				weft_cond_broadcast(&not_empty);
				return 0;
			}));
		for (int c = 0; c < ncons; c++)
			ts.push_back(go([&] {
				for (;;) {
					weft_mutex_lock(&m);
					while (count == 0 && prod_left > 0)
						if (weft_cond_wait(&not_empty,
								   &m))
							return -1;
					if (count == 0) {
						weft_mutex_unlock(&m);
						return 0;
					}
					uint64_t id = buf[head];
					head = (head + 1) % cap;
					count--;
					weft_mutex_unlock(&m);
					weft_cond_signal(&not_full);
					ledger[id]++;
					progress++;
				}
			}));
		for (auto t : ts)
			EXPECT_EQ(0, weft_join(t));
	});
	for (uint64_t i = 0; i < n; i++)
		ASSERT_EQ(1, ledger[i].load()) << "item " << i;
}

// ---------------------------------------------------------------- event

TEST_P(SyncStress, EventSetRacingCancellation)
{
	const unsigned workers = GetParam();
	const int rounds = (int)scaled(3000), nwait = 6;
	std::atomic<long> progress{ 0 };
	Watchdog wd("event set vs cancel", progress);
	long zero = 0, canc = 0;
	WEFT_TEST_RUN(workers, [&] {
		std::mt19937 rng(77);
		for (int r = 0; r < rounds; r++) {
			weft_event e{};
			std::vector<weft_task *> ts;
			for (int i = 0; i < nwait; i++)
				ts.push_back(go([&] {
					return weft_event_wait(&e);
				}));
			while (weft__event_nwaiters(&e) < (size_t)nwait / 2)
				weft_sleep(WEFT_USEC(10));
			std::vector<bool> was_cancelled(nwait);
			race(
				[&] {
					for (int i = 0; i < nwait; i += 2) {
						weft_cancel(ts[i]);
						was_cancelled[i] = true;
					}
				},
				[&] {
					weft_event_set(&e);
				},
				(int)(rng() % 4000) - 2000);
			for (int i = 0; i < nwait; i++) {
				int st = weft_join(ts[i]);
				if (was_cancelled[i]) {
					EXPECT_TRUE(st == 0 || st == -ECANCELED)
						<< st;
					(st == 0 ? zero : canc)++;
				} else {
					EXPECT_EQ(0, st);
				}
			}
			EXPECT_EQ(0u, weft__event_nwaiters(&e));
			progress++;
		}
	});
	printf("%u workers: cancelled waiters: set won %ld, cancel won %ld\n",
	       workers, zero, canc);
}

INSTANTIATE_TEST_SUITE_P(Workers, SyncStress, testing::Values(2u, 4u),
			 [](const testing::TestParamInfo<unsigned> &i) {
				 return std::to_string(i.param) + "workers";
			 });
