// SPDX-License-Identifier: MIT
// tests/structured_stress_test.cc - groups, gather and wait_any under
// racing wake sources, across workers, with invariants:
//  - a wait never returns while a task it covers still runs (every child
//    counts itself out before returning; the count is 0 at return);
//  - every status is delivered exactly as the task returned it;
//  - the group lists exactly the real failures;
//  - the result is one the contract allows for what happened.
// Label "stress" (ctest -L stress); WEFT_TEST_SCALE divides the rounds.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "tests/harness.h"

using weft_test::scaled;

namespace
{

using weft_test::go;
using weft_test::shield;

int gspawn(weft_group *g, std::function<int()> f)
{
	auto *p = new weft_test::Fn{ std::move(f) };
	int r = weft_group_spawn(g, weft_test::run_fn, p);
	if (r)
		delete p;
	return r;
}

// What a child does, chosen at random.
int child_body(unsigned what, unsigned us)
{
	switch (what % 5) {
	case 0:
		return 0;
	case 1:
		return weft_sleep(WEFT_USEC(us)) == 0 ? 1 : -ECANCELED;
	case 2:
		weft_sleep(WEFT_USEC(us));
		return -EIO; // fails whether cancelled or not
	case 3:
		return weft_sleep(WEFT_SEC(30)); // only cancellation ends it
	default:
		for (unsigned i = 0; i < us % 20; i++)
			if (weft_yield())
				return -ECANCELED;
		return 2;
	}
}

} // namespace

TEST(StructuredStress, GroupsUnderCancelFailureAndWaiterCancel)
{
	WEFT_TEST_RUN(2, [] {
		std::mt19937 rng(12345);
		const int rounds = (int)scaled(3000);
		for (int round = 0; round < rounds; round++) {
			std::atomic<int> running{ 0 }, failures{ 0 };
			std::atomic<int> spawned{ 0 };
			unsigned n = 1 + rng() % 24;
			unsigned mode = rng() % 4; // 0 none, 1 foreign cancel,
						   // 2 waiter cancel, 3 scope
			unsigned delay = rng() % 300;
			std::vector<unsigned> what(n), us(n);
			for (unsigned i = 0; i < n; i++) {
				what[i] = rng();
				us[i] = rng() % 400;
			}
			// Modes 0 and 2 without a "forever" child would finish
			// anyway; with one they need the cancel to end.
			if (mode == 0)
				for (auto &w : what)
					if (w % 5 == 3)
						w++;
			weft_group *g = weft_group_new();
			ASSERT_NE(nullptr, g);
			int result = 0;
			weft_task *waiter = go([&] {
				for (unsigned i = 0; i < n; i++) {
					unsigned wh = what[i], u = us[i];
					running++;
					int r = gspawn(g, [&, wh, u] {
						int st = child_body(wh, u);
						if (st < 0 && st != -ECANCELED)
							failures++;
						// a sibling spawned from a child
						if (wh % 7 == 0) {
							running++;
							if (gspawn(g, [&] {
								    running--;
								    return 0;
							    }) == 0)
								spawned++;
							else
								running--;
						}
						running--;
						return st;
					});
					if (r == 0) {
						spawned++;
					} else {
						running--;
						EXPECT_EQ(-ECANCELED, r);
					}
				}
				weft_scope s;
				weft_scope_enter(&s, mode == 3 ? WEFT_USEC(delay) :
								 WEFT_FOREVER);
				result = weft_group_wait(g);
				EXPECT_EQ(0, running.load())
					<< "group_wait returned while a child ran";
				weft_scope_exit(&s);
				return 0;
			});
			ASSERT_NE(nullptr, waiter);
			std::thread th;
			if (mode == 1)
				th = std::thread([g, delay] {
					std::this_thread::sleep_for(
						std::chrono::microseconds(delay));
					weft_group_cancel(g);
				});
			if (mode == 2) {
				weft_sleep(WEFT_USEC(delay));
				weft_cancel(waiter);
			}
			weft_join(waiter);
			if (th.joinable())
				th.join();
			int nf = failures.load();
			EXPECT_EQ((size_t)nf, weft_group_errors(g, nullptr, 0));
			if (nf == 0 && mode != 2 && mode != 3) {
				EXPECT_EQ(0, result);
			}
			if (mode == 0 || mode == 1) {
				EXPECT_TRUE(result == 0 || result == -EIO)
					<< result;
			}
			if (mode == 2) { // the cancel may come after the wait
				EXPECT_TRUE(result == -ECANCELED ||
					    result == -EIO || result == 0)
					<< result;
			}
			if (mode == 3) {
				EXPECT_TRUE(result == -ETIMEDOUT ||
					    result == -EIO || result == 0)
					<< result;
			}
			if (nf > 0 && result != -EIO) {
				EXPECT_TRUE(mode >= 2) << result;
			}
			weft_group_free(g);
		}
	});
}

TEST(StructuredStress, GatherDeliversEveryStatusAndNeverAbandons)
{
	WEFT_TEST_RUN(2, [] {
		std::mt19937 rng(777);
		const int rounds = (int)scaled(3000);
		for (int round = 0; round < rounds; round++) {
			unsigned n = 1 + rng() % 32;
			unsigned flags = (rng() & 1) ? WEFT_CANCEL_ON_ERROR : 0;
			bool cancel_caller = rng() % 3 == 0;
			unsigned delay = rng() % 300;
			std::vector<unsigned> what(n), us(n);
			for (unsigned i = 0; i < n; i++) {
				what[i] = rng();
				us[i] = rng() % 400;
				// Only a cancellation ends a "forever" child.
				if (!cancel_caller && what[i] % 5 == 3)
					what[i]++;
			}
			std::vector<int> returned(n, 12345), st(n, 54321);
			std::atomic<int> running{ 0 };
			int result = 0;
			weft_task *caller = go([&] {
				std::vector<weft_task *> ts(n);
				for (unsigned i = 0; i < n; i++) {
					running++;
					ts[i] = go([&, i] {
						int r = child_body(what[i], us[i]);
						returned[i] = r;
						running--;
						return r;
					});
				}
				result = weft_gather(ts.data(), n, st.data(),
						     flags);
				EXPECT_EQ(0, running.load());
				return 0;
			});
			if (cancel_caller) {
				weft_sleep(WEFT_USEC(delay));
				weft_cancel(caller);
			}
			weft_join(caller);
			int first = 0;
			for (unsigned i = 0; i < n; i++) {
				ASSERT_EQ(returned[i], st[i]) << i;
				if (!first && st[i] < 0 && st[i] != -ECANCELED)
					first = st[i];
			}
			if (!cancel_caller && flags) {
				EXPECT_EQ(first ? -EIO : 0, result);
			} else if (!cancel_caller) {
				EXPECT_EQ(first, result);
			} else {
				EXPECT_TRUE(result == -ECANCELED ||
					    result == first ||
					    (flags && result == -EIO))
					<< result;
			}
		}
	});
}

// wait_any racing its three wake sources: a finishing task, its own
// timeout, and the caller's cancellation. A returned index is a finished
// task; nothing hangs; handles stay owned and join afterwards.
TEST(StructuredStress, WaitAnyRacingFinishTimeoutAndCancel)
{
	WEFT_TEST_RUN(2, [] {
		std::mt19937 rng(4242);
		const int rounds = (int)scaled(10000);
		for (int round = 0; round < rounds; round++) {
			unsigned n = 1 + rng() % 4;
			unsigned fin = rng() % 200, to = rng() % 200,
				 cn = rng() % 200;
			std::vector<weft_task *> ts(n);
			std::vector<std::atomic<bool>> done(n);
			for (unsigned i = 0; i < n; i++) {
				done[i] = false;
				ts[i] = go([&, i, fin] {
					weft_sleep(WEFT_USEC(fin + 50 * i));
					done[i] = true;
					return (int)i;
				});
			}
			int r = 0;
			weft_task *w = go([&] {
				r = weft_wait_any(ts.data(), n, WEFT_USEC(to));
				return 0;
			});
			weft_sleep(WEFT_USEC(cn));
			weft_cancel(w);
			EXPECT_EQ(0, weft_join(w));
			if (r >= 0) {
				ASSERT_LT((unsigned)r, n);
				EXPECT_TRUE(done[(size_t)r].load());
			} else {
				EXPECT_TRUE(r == -ETIMEDOUT || r == -ECANCELED)
					<< r;
			}
			for (unsigned i = 0; i < n; i++)
				EXPECT_EQ((int)i, weft_join(ts[i]));
		}
	});
}
