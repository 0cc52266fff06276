// SPDX-License-Identifier: MIT
// tests/group_test.cc - waiting on many tasks (weft_gather, weft_wait_for,
// weft_wait_any) and task groups: API.md "Gather, wait_for, first
// completed" and "Task groups", including the seeds' common failure cases
// (a child that ignores -ECANCELED once cannot hang its group; gather never
// returns while a task still runs).
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
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

int ret_arg(void *a)
{
	return (int)(intptr_t)a;
}

int sleep_forever(void *)
{
	return weft_sleep(WEFT_FOREVER);
}

bool finished_soon(weft_task *t)
{
	// weft_wait_any() with a bound: the test's hang guard.
	return weft_wait_any(&t, 1, WEFT_SEC(30)) == 0;
}

} // namespace

// ---------------------------------------------------------------- gather

TEST(Gather, StatusesInOrderAndFirstFailureInIndexOrder)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *ts[5];
		int st[5];
		const int want[5] = { 0, -ECANCELED, -EIO, 3, -EPIPE };
		for (int i = 0; i < 5; i++)
			ts[i] = weft_spawn(ret_arg, (void *)(intptr_t)want[i]);
		EXPECT_EQ(-EIO, weft_gather(ts, 5, st, 0));
		for (int i = 0; i < 5; i++)
			EXPECT_EQ(want[i], st[i]) << i;
	});
}

TEST(Gather, AllSucceedOrCancelledIsZero)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *ts[3] = {
			weft_spawn(ret_arg, (void *)0),
			weft_spawn(ret_arg, (void *)(intptr_t)-ECANCELED),
			weft_spawn(ret_arg, (void *)0),
		};
		EXPECT_EQ(0, weft_gather(ts, 3, nullptr, 0));
		EXPECT_EQ(0, weft_gather(nullptr, 0, nullptr, 0));
	});
}

TEST(Gather, BadHandlesReleaseNothing)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *a = weft_spawn(ret_arg, (void *)1);
		weft_task *b = weft_spawn(ret_arg, (void *)2);
		weft_task *with_null[3] = { a, nullptr, b };
		weft_task *repeated[3] = { a, b, a };
		weft_task *with_self[2] = { a, weft_self() };
		EXPECT_EQ(-EINVAL, weft_gather(nullptr, 2, nullptr, 0));
		EXPECT_EQ(-EINVAL, weft_gather(with_null, 3, nullptr, 0));
		EXPECT_EQ(-EINVAL, weft_gather(repeated, 3, nullptr, 0));
		EXPECT_EQ(-EDEADLK, weft_gather(with_self, 2, nullptr, 0));
		weft_task *ok[2] = { a, b };
		EXPECT_EQ(-EINVAL, weft_gather(ok, 2, nullptr, 0x80));
		EXPECT_EQ(-EINVAL, weft_wait_any(repeated, 3, 0));
		// Nothing was released or left marked: both still join.
		EXPECT_EQ(1, weft_join(a));
		EXPECT_EQ(2, weft_join(b));
		// Released handles are rejected now.
		EXPECT_EQ(-EINVAL, weft_gather(ok, 2, nullptr, 0));
	});
}

// RELIABILITY H3: a count no array can hold (SIZE_MAX, or past INT_MAX,
// which weft_wait_any already refuses) is -EINVAL before any handle is
// read. The two handles sit at the end of a page with an inaccessible
// page after it, so a call that walks past them faults; they stay owned.
TEST(Gather, ImpossibleCountIsInvalidAndReadsNothing)
{
	const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	char *m = (char *)mmap(nullptr, 2 * pg, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, (void *)m);
	ASSERT_EQ(0, mprotect(m + pg, pg, PROT_NONE));
	weft_task **two = (weft_task **)(m + pg) - 2;
	WEFT_TEST_RUN(2, [two] {
		two[0] = weft_spawn(ret_arg, (void *)1);
		two[1] = weft_spawn(ret_arg, (void *)2);
		EXPECT_EQ(-EINVAL, weft_gather(two, SIZE_MAX, nullptr, 0));
		EXPECT_EQ(-EINVAL,
			  weft_gather(two, (size_t)INT_MAX + 1, nullptr, 0));
		EXPECT_EQ(-EINVAL, weft_wait_any(two, SIZE_MAX, 0));
		EXPECT_EQ(1, weft_join(two[0]));
		EXPECT_EQ(2, weft_join(two[1]));
	});
	munmap(m, 2 * pg);
}

TEST(Gather, CancelOnErrorCancelsTheRestAndReturnsTheFailure)
{
	WEFT_TEST_RUN(2, [] {
		std::atomic<int> cleaned{ 0 };
		weft_task *ts[4];
		for (int i = 0; i < 3; i++)
			ts[i] = go([&] {
				int r = weft_sleep(WEFT_SEC(30));
				cleaned++;
				return r;
			});
		ts[3] = go([] {
			weft_sleep(WEFT_MSEC(5));
			return -EPIPE;
		});
		int st[4];
		EXPECT_EQ(-EPIPE,
			  weft_gather(ts, 4, st, WEFT_CANCEL_ON_ERROR));
		EXPECT_EQ(3, cleaned.load()); // never returns while one runs
		for (int i = 0; i < 3; i++)
			EXPECT_EQ(-ECANCELED, st[i]);
		EXPECT_EQ(-EPIPE, st[3]);
	});
}

TEST(Gather, CancelOnErrorReturnsTheFirstFailureInTime)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *ts[2];
		// Index 0 fails later (its cleanup is shielded), index 1 first.
		ts[0] = go([] {
			weft_sleep(WEFT_SEC(30));
			return shield([] {
				weft_sleep(WEFT_MSEC(10));
				return -EIO;
			});
		});
		ts[1] = go([] {
			weft_sleep(WEFT_MSEC(5));
			return -EPIPE;
		});
		int st[2];
		EXPECT_EQ(-EPIPE,
			  weft_gather(ts, 2, st, WEFT_CANCEL_ON_ERROR));
		EXPECT_EQ(-EIO, st[0]);
		EXPECT_EQ(-EPIPE, st[1]);
	});
}

TEST(Gather, WithoutFlagsAFailureDoesNotCancelTheOthers)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *ts[2] = {
			weft_spawn(ret_arg, (void *)(intptr_t)-EIO),
			go([] { return weft_sleep(WEFT_MSEC(20)); }),
		};
		int st[2];
		EXPECT_EQ(-EIO, weft_gather(ts, 2, st, 0));
		EXPECT_EQ(0, st[1]);
	});
}

TEST(Gather, CallerCancelledCancelsAndWaitsForEveryTask)
{
	for (unsigned flags : { 0u, WEFT_CANCEL_ON_ERROR }) {
		WEFT_TEST_RUN(2, [flags] {
			std::atomic<int> finished{ 0 };
			weft_event started{};
			weft_task *g = go([&] {
				weft_task *ts[3];
				for (int i = 0; i < 3; i++)
					ts[i] = go([&] {
						weft_sleep(WEFT_SEC(30));
						// slow, uncancellable cleanup
						shield([] {
							return weft_sleep(
								WEFT_MSEC(10));
						});
						finished++;
						return 0;
					});
				weft_event_set(&started);
				int r = weft_gather(ts, 3, nullptr, flags);
				EXPECT_EQ(3, finished.load());
				return r;
			});
			EXPECT_EQ(0, weft_event_wait(&started));
			weft_sleep(WEFT_MSEC(2));
			weft_cancel(g);
			EXPECT_EQ(-ECANCELED, weft_join(g));
		});
	}
}

TEST(Gather, ScopeExpiryGivesTimedOut)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *ts[2] = {
			weft_spawn(sleep_forever, nullptr),
			weft_spawn(sleep_forever, nullptr),
		};
		int st[2];
		weft_scope s;
		weft_scope_enter(&s, WEFT_MSEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_gather(ts, 2, st, 0));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
		EXPECT_EQ(-ECANCELED, st[0]);
		EXPECT_EQ(-ECANCELED, st[1]);
	});
}

TEST(Gather, FailureBeforeTheCancellationIsReturned)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *ts[2] = {
			weft_spawn(sleep_forever, nullptr),
			weft_spawn(ret_arg, (void *)(intptr_t)-EIO),
		};
		// Let the failing one finish, then be cancelled, then gather.
		while (weft_wait_any(&ts[1], 1, WEFT_SEC(30)) != 0)
			;
		weft_cancel(weft_self());
		EXPECT_EQ(-EIO, weft_gather(ts, 2, nullptr, 0));
	}, false);
}

TEST(Gather, CancelledCallerWithNothingLeftStillGetsCanceled)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *t = weft_spawn(ret_arg, (void *)0);
		ASSERT_TRUE(finished_soon(t));
		weft_cancel(weft_self());
		EXPECT_EQ(-ECANCELED, weft_gather(&t, 1, nullptr, 0));
	}, false);
}

TEST(Gather, ManyTasksEachJoinedExactlyOnce)
{
	WEFT_TEST_RUN(2, [] {
		const size_t n = scaled(20000);
		std::vector<weft_task *> ts(n);
		std::vector<int> st(n);
		std::atomic<uint64_t> sum{ 0 };
		for (size_t i = 0; i < n; i++)
			ts[i] = go([&sum, i] {
				sum += i;
				if (i % 7 == 0)
					weft_yield();
				return (int)(i % 100);
			});
		EXPECT_EQ(0, weft_gather(ts.data(), n, st.data(), 0));
		for (size_t i = 0; i < n; i++)
			ASSERT_EQ((int)(i % 100), st[i]);
		EXPECT_EQ((uint64_t)n * (n - 1) / 2, sum.load());
	});
}

// Failures that finished before the call are simultaneous to it: the
// lowest index is the first. weft_wait_any() on each proves it finished
// without consuming the handle.
TEST(Gather, CancelOnErrorFailuresDoneBeforeTheCallTakeTheLowestIndex)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *ts[4] = {
			weft_spawn(ret_arg, (void *)(intptr_t)5),
			weft_spawn(ret_arg, (void *)(intptr_t)-EPIPE),
			weft_spawn(ret_arg, (void *)(intptr_t)-EIO),
			weft_spawn(ret_arg, (void *)(intptr_t)-ECANCELED),
		};
		for (int i = 3; i >= 0; i--)
			ASSERT_EQ(0, weft_wait_any(&ts[i], 1, WEFT_SEC(30)));
		int st[4];
		EXPECT_EQ(-EPIPE,
			  weft_gather(ts, 4, st, WEFT_CANCEL_ON_ERROR));
		EXPECT_EQ(5, st[0]);
		EXPECT_EQ(-EPIPE, st[1]);
		EXPECT_EQ(-EIO, st[2]);
		EXPECT_EQ(-ECANCELED, st[3]);
	});
}

// Many tasks finishing one after another, each while the caller sleeps
// in the gather: every one is delivered (the caller counts reports, not
// a rescan), and a failure near the end still cancels the rest.
TEST(Gather, CancelOnErrorManyTasksFinishingOneByOne)
{
	WEFT_TEST_RUN(2, [] {
		const size_t n = scaled(5000);
		std::vector<weft_task *> ts(n);
		std::vector<int> st(n, 12345);
		std::atomic<size_t> turn{ 0 }, ran{ 0 };
		const size_t fail_at = n - n / 10;
		for (size_t i = 0; i < n; i++)
			ts[i] = go([&, i] {
				// In index order: task i ends only after i-1.
				while (turn.load() != i)
					if (weft_yield())
						return -ECANCELED;
				ran++;
				turn++;
				return i == fail_at ? -EIO : (int)(i % 100);
			});
		EXPECT_EQ(-EIO, weft_gather(ts.data(), n, st.data(),
					    WEFT_CANCEL_ON_ERROR));
		for (size_t i = 0; i <= fail_at; i++)
			ASSERT_EQ(i == fail_at ? -EIO : (int)(i % 100), st[i])
				<< i;
		// The rest was cancelled, or finished before the cancel came.
		for (size_t i = fail_at + 1; i < n; i++)
			ASSERT_TRUE(st[i] == -ECANCELED ||
				    st[i] == (int)(i % 100))
				<< i << " " << st[i];
		EXPECT_EQ(ran.load(), turn.load());
	});
}

TEST(Gather, OutsideATaskIsPerm)
{
	EXPECT_EQ(-EPERM, weft_gather(nullptr, 0, nullptr, 0));
	EXPECT_EQ(-EPERM, weft_wait_any(nullptr, 1, 0));
	EXPECT_EQ(-EPERM, weft_wait_for(nullptr, 0));
	EXPECT_EQ(-EPERM, weft_group_wait(nullptr));
}

// ---------------------------------------------------------------- wait_for

TEST(WaitFor, InTimeReturnsTheStatus)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *t = go([] {
			weft_sleep(WEFT_MSEC(2));
			return 5;
		});
		EXPECT_EQ(5, weft_wait_for(t, WEFT_SEC(30)));
	});
}

TEST(WaitFor, AlreadyFinishedCountsEvenWithZero)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *t = weft_spawn(ret_arg, (void *)9);
		ASSERT_TRUE(finished_soon(t));
		EXPECT_EQ(9, weft_wait_for(t, 0));
	});
}

TEST(WaitFor, ExpiryCancelsWaitsAndTimesOut)
{
	WEFT_TEST_RUN(2, [] {
		std::atomic<bool> cleaned{ false };
		weft_task *t = go([&] {
			int r = weft_sleep(WEFT_SEC(30));
			shield([] { return weft_sleep(WEFT_MSEC(5)); });
			cleaned = true;
			return r == -ECANCELED ? 0 : 1;
		});
		uint64_t t0 = weft_now();
		EXPECT_EQ(-ETIMEDOUT, weft_wait_for(t, WEFT_MSEC(10)));
		EXPECT_GE(weft_now() - t0, WEFT_MSEC(10));
		EXPECT_TRUE(cleaned.load());
		// The caller's own state is untouched.
		EXPECT_EQ(0, weft_checkpoint());
	});
}

TEST(WaitFor, CallerCancelledReturnsTheTasksStatus)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *t = go([] {
			return weft_sleep(WEFT_SEC(30)) == -ECANCELED ? 33 : 1;
		});
		weft_cancel(weft_self());
		EXPECT_EQ(33, weft_wait_for(t, WEFT_SEC(30)));
		EXPECT_EQ(-ECANCELED, weft_checkpoint());
	}, false);
}

TEST(WaitFor, BadHandles)
{
	WEFT_TEST_RUN(1, [] {
		EXPECT_EQ(-EINVAL, weft_wait_for(nullptr, 0));
		EXPECT_EQ(-EDEADLK, weft_wait_for(weft_self(), 0));
		weft_task *t = weft_spawn(ret_arg, (void *)0);
		EXPECT_EQ(0, weft_wait_for(t, WEFT_FOREVER));
		EXPECT_EQ(-EINVAL, weft_wait_for(t, 0)); // released
	});
}

// RELIABILITY E1/E2 for the calls with a limit of their own: a zero limit
// on a task still running times out at once (wait_for cancels the task and
// waits for it; wait_any only polls), and a "negative" limit
// ((uint64_t)-5, UINT64_MAX - 1: now + limit would wrap) means forever,
// never "already expired" - for wait_for, wait_any and a scope alike.
TEST(WaitFor, ZeroLimitTimesOutAndWrappingLimitsMeanForever)
{
	WEFT_TEST_RUN(2, [] {
		std::atomic<int> seen{ 0 };
		weft_task *t = go([&] {
			int r = weft_sleep(WEFT_SEC(30));
			seen = r;
			return r;
		});
		EXPECT_EQ(-ETIMEDOUT, weft_wait_any(&t, 1, 0));
		EXPECT_EQ(-ETIMEDOUT, weft_wait_for(t, 0));
		EXPECT_EQ(-ECANCELED, seen.load())
			<< "not cancelled, or not waited for";
		for (uint64_t lim : { (uint64_t)-5, UINT64_MAX - 1 }) {
			weft_task *a = go([] {
				return weft_sleep(WEFT_MSEC(3)) == 0 ? 7 : -EIO;
			});
			EXPECT_EQ(0, weft_wait_any(&a, 1, lim)) << lim;
			EXPECT_EQ(7, weft_join(a));
			a = go([] {
				return weft_sleep(WEFT_MSEC(3)) == 0 ? 8 : -EIO;
			});
			EXPECT_EQ(8, weft_wait_for(a, lim)) << lim;
			weft_scope s;
			weft_scope_enter(&s, lim);
			EXPECT_EQ(0, weft_sleep(WEFT_MSEC(3))) << lim;
			EXPECT_EQ(0, weft_checkpoint()) << lim;
			EXPECT_EQ(0, weft_scope_exit(&s)) << lim;
		}
	});
}

// ---------------------------------------------------------------- wait_any

TEST(WaitAny, LowestFinishedIndexJoinsNothing)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *ts[3] = {
			weft_spawn(sleep_forever, nullptr),
			go([] {
				weft_sleep(WEFT_MSEC(2));
				return 4;
			}),
			weft_spawn(sleep_forever, nullptr),
		};
		EXPECT_EQ(1, weft_wait_any(ts, 3, WEFT_SEC(30)));
		EXPECT_EQ(1, weft_wait_any(ts, 3, 0)); // still there, owned
		weft_cancel(ts[2]);
		ASSERT_TRUE(finished_soon(ts[2]));
		EXPECT_EQ(1, weft_wait_any(ts, 3, 0)); // the lowest
		weft_cancel(ts[0]);
		EXPECT_EQ(-ECANCELED, weft_join(ts[0]));
		EXPECT_EQ(4, weft_join(ts[1]));
		EXPECT_EQ(-ECANCELED, weft_join(ts[2]));
	});
}

TEST(WaitAny, TimeoutPollAndErrors)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *t = weft_spawn(sleep_forever, nullptr);
		EXPECT_EQ(-ETIMEDOUT, weft_wait_any(&t, 1, 0));
		uint64_t t0 = weft_now();
		EXPECT_EQ(-ETIMEDOUT, weft_wait_any(&t, 1, WEFT_MSEC(5)));
		EXPECT_GE(weft_now() - t0, WEFT_MSEC(5));
		EXPECT_EQ(-EINVAL, weft_wait_any(&t, 0, 0));
		EXPECT_EQ(-EINVAL, weft_wait_any(nullptr, 1, 0));
		weft_task *self = weft_self();
		EXPECT_EQ(-EDEADLK, weft_wait_any(&self, 1, 0));
		weft_scope s;
		weft_scope_enter(&s, WEFT_MSEC(2));
		EXPECT_EQ(-ETIMEDOUT, weft_wait_any(&t, 1, WEFT_SEC(30)));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
		weft_cancel(t);
		EXPECT_EQ(-ECANCELED, weft_join(t));
	});
}

TEST(WaitAny, CallerCancelledGetsCanceledAndCancelsNothing)
{
	WEFT_TEST_RUN(2, [] {
		weft_task *t = go([] { return weft_sleep(WEFT_MSEC(20)); });
		weft_task *w = go([&] {
			return weft_wait_any(&t, 1, WEFT_FOREVER);
		});
		weft_sleep(WEFT_MSEC(2));
		weft_cancel(w);
		EXPECT_EQ(-ECANCELED, weft_join(w));
		EXPECT_EQ(0, weft_join(t)); // ran to the end
	});
}

// The handle moves to another task after a wait_any registered the first
// owner as joiner: the new owner's join must be woken, never the old one.
TEST(WaitAny, HandOverAfterWaitAnyWakesTheNewOwner)
{
	WEFT_TEST_RUN(2, [] {
		for (int i = 0; i < (int)scaled(500); i++) {
			weft_event start{};
			weft_task *t = go([&] {
				weft_event_wait(&start);
				return 7;
			});
			EXPECT_EQ(-ETIMEDOUT, weft_wait_any(&t, 1, 0));
			weft_task *j = go([t] { return weft_join(t); });
			weft_sleep(WEFT_USEC(i % 20));
			weft_event_set(&start);
			// Meanwhile the old owner waits on something else.
			EXPECT_EQ(0, weft_sleep(WEFT_USEC(50)));
			EXPECT_EQ(7, weft_join(j));
		}
	});
}

TEST(WaitAny, AsCompletedLoop)
{
	WEFT_TEST_RUN(2, [] {
		const size_t n = 64;
		std::vector<weft_task *> ts;
		for (size_t i = 0; i < n; i++)
			ts.push_back(go([i] {
				weft_sleep(WEFT_USEC((i * 37) % 500));
				return (int)i;
			}));
		uint64_t sum = 0;
		while (!ts.empty()) {
			int k = weft_wait_any(ts.data(), ts.size(), WEFT_SEC(30));
			ASSERT_GE(k, 0);
			sum += (uint64_t)weft_join(ts[(size_t)k]);
			ts.erase(ts.begin() + k);
		}
		EXPECT_EQ(n * (n - 1) / 2, sum);
	});
}

// ---------------------------------------------------------------- groups

TEST(Group, AllSucceed)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		ASSERT_NE(nullptr, g);
		std::atomic<int> ran{ 0 };
		for (int i = 0; i < 100; i++)
			ASSERT_EQ(0, gspawn(g, [&] {
					  ran++;
					  return weft_yield();
				  }));
		EXPECT_EQ(0, weft_group_wait(g));
		EXPECT_EQ(100, ran.load());
		EXPECT_EQ(0u, weft_group_errors(g, nullptr, 0));
		EXPECT_EQ(-EINVAL, gspawn(g, [] { return 0; }));
		EXPECT_EQ(-EINVAL, weft_group_wait(g));
		weft_group_free(g);
	});
}

TEST(Group, FirstFailureCancelsSiblingsWhoCleanUp)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		std::atomic<int> cleaned{ 0 };
		for (int i = 0; i < 5; i++)
			gspawn(g, [&] {
				int r = weft_sleep(WEFT_SEC(30));
				cleaned++;
				return r;
			});
		gspawn(g, [] {
			weft_sleep(WEFT_MSEC(2));
			return -EIO;
		});
		EXPECT_EQ(-EIO, weft_group_wait(g));
		EXPECT_EQ(5, cleaned.load());
		int errs[4] = {};
		EXPECT_EQ(1u, weft_group_errors(g, errs, 4));
		EXPECT_EQ(-EIO, errs[0]);
		weft_group_free(g);
	});
}

TEST(Group, SpawnIntoAFailingGroupIsCanceled)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		gspawn(g, [] { return -EIO; });
		gspawn(g, [] { return weft_sleep(WEFT_SEC(30)); });
		std::atomic<bool> ran{ false };
		// Wait until the failure has cancelled the group.
		int r = 0;
		for (int i = 0; i < 30000 && r == 0; i++) {
			weft_sleep(WEFT_USEC(100));
			r = gspawn(g, [&] {
				ran = true;
				return 0;
			});
		}
		EXPECT_EQ(-ECANCELED, r);
		EXPECT_EQ(-EIO, weft_group_wait(g));
		weft_group_free(g);
	});
}

TEST(Group, EveryRealFailureIsListedCancelledSiblingsAreNot)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		weft_event start{};
		gspawn(g, [&] {
			weft_event_wait(&start);
			return -EIO;
		});
		// Fails differently while being cancelled: listed.
		gspawn(g, [] {
			weft_sleep(WEFT_SEC(30));
			return -EPIPE;
		});
		// Returns -ECANCELED: not listed.
		gspawn(g, [] { return weft_sleep(WEFT_SEC(30)); });
		weft_event_set(&start);
		EXPECT_EQ(-EIO, weft_group_wait(g));
		int errs[4] = {};
		ASSERT_EQ(2u, weft_group_errors(g, errs, 4));
		EXPECT_EQ(-EIO, errs[0]);
		EXPECT_EQ(-EPIPE, errs[1]);
		// max smaller than the count: count still returned
		int one = 0;
		EXPECT_EQ(2u, weft_group_errors(g, &one, 1));
		EXPECT_EQ(-EIO, one);
		weft_group_free(g);
	});
}

TEST(Group, ManyFailuresAreAllKept)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		weft_event start{};
		for (int i = 0; i < 50; i++)
			gspawn(g, [&, i] {
				shield([&] { return weft_event_wait(&start); });
				return -(1000 + i);
			});
		weft_sleep(WEFT_MSEC(2));
		weft_event_set(&start);
		int r = weft_group_wait(g);
		EXPECT_LE(r, -1000);
		std::vector<int> errs(64);
		EXPECT_EQ(50u, weft_group_errors(g, errs.data(), errs.size()));
		weft_group_free(g);
	});
}

#ifdef WEFT_TEST_HOOKS
// The error list grows by allocation; when that fails the count stays
// exact and the statuses that could not be kept read -ENOMEM, never a
// hole the caller cannot tell from a status.
TEST(Group, ErrorsLostToAllocationFailureReadEnomem)
{
	WEFT_TEST_RUN(1, [] {
		weft_group *g = weft_group_new();
		weft_event start{};
		for (int i = 0; i < 12; i++)
			gspawn(g, [&, i] {
				shield([&] { return weft_event_wait(&start); });
				return -(1000 + i);
			});
		weft_sleep(WEFT_MSEC(2));
		weft_test_fail_alloc_after(0);
		weft_event_set(&start);
		int r = weft_group_wait(g);
		weft_test_fail_alloc_after(-1);
		EXPECT_LE(r, -1000);
		std::vector<int> errs(16, 7);
		ASSERT_EQ(12u, weft_group_errors(g, errs.data(), errs.size()));
		int kept = 0, lost = 0;
		for (size_t i = 0; i < 12; i++) {
			if (errs[i] == -ENOMEM)
				lost++;
			else if (errs[i] <= -1000 && errs[i] > -1012 && !lost)
				kept++;
		}
		EXPECT_EQ(8, kept) << "the inline list holds 8";
		EXPECT_EQ(4, lost);
		EXPECT_EQ(7, errs[12]) << "written past the count";
		weft_group_free(g);
	});
}
#endif

// API.md: handles and groups belong to one runtime; passed to a task of
// another they give -EINVAL (and nothing happens to them).
TEST(Runtime, HandlesAndGroupsOfAnotherRuntimeAreInvalid)
{
	static weft_task *h;
	static weft_group *g;
	weft_config cfg{};
	cfg.workers = 1;
	weft_runtime *a = nullptr;
	ASSERT_EQ(0, weft_runtime_new(&a, &cfg));
	std::function<int()> setup = [] {
		h = weft_spawn([](void *) { return weft_sleep(WEFT_FOREVER); },
			       nullptr);
		g = weft_group_new();
		if (!h || !g)
			return -ENOMEM;
		return weft_group_spawn(
			g, [](void *) { return weft_sleep(WEFT_FOREVER); },
			nullptr);
	};
	ASSERT_EQ(0, weft_block_on(a, weft_test::call_lambda, &setup));

	WEFT_TEST_RUN(1, [] {
		weft_task *hs[1] = { h };
		int st = 7;
		EXPECT_EQ(-EINVAL, weft_join(h));
		EXPECT_EQ(-EINVAL, weft_wait_for(h, 0));
		EXPECT_EQ(-EINVAL, weft_gather(hs, 1, &st, 0));
		EXPECT_EQ(-EINVAL, weft_wait_any(hs, 1, 0));
		EXPECT_EQ(-EINVAL,
			  weft_group_spawn(
				  g, [](void *) { return 0; }, nullptr));
		EXPECT_EQ(-EINVAL, weft_group_wait(g));
	});

	// Still whole in their own runtime: wait and join as usual.
	std::function<int()> finish = [] {
		weft_cancel(h);
		EXPECT_EQ(-ECANCELED, weft_join(h));
		weft_group_cancel(g);
		EXPECT_EQ(0, weft_group_wait(g));
		weft_group_free(g);
		return 0;
	};
	EXPECT_EQ(0, weft_block_on(a, weft_test::call_lambda, &finish));
	EXPECT_EQ(0, weft_runtime_free(a));
}

TEST(Group, ChildIgnoringCancellationOnceCannotHangTheGroup)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		std::atomic<int> ignored{ 0 };
		gspawn(g, [&] {
			for (int i = 0; i < 3; i++)
				if (weft_sleep(WEFT_SEC(30)) == -ECANCELED)
					ignored++; // and carries on
			return 0;
		});
		gspawn(g, [] {
			weft_sleep(WEFT_MSEC(2));
			return -EIO;
		});
		EXPECT_EQ(-EIO, weft_group_wait(g));
		EXPECT_EQ(3, ignored.load());
		weft_group_free(g);
	});
}

TEST(Group, CancellingTheWaiterCancelsEveryChild)
{
	WEFT_TEST_RUN(2, [] {
		std::atomic<int> finished{ 0 };
		weft_event started{};
		weft_task *w = go([&] {
			weft_group *g = weft_group_new();
			for (int i = 0; i < 4; i++)
				gspawn(g, [&] {
					weft_sleep(WEFT_SEC(30));
					shield([] {
						return weft_sleep(WEFT_MSEC(5));
					});
					finished++;
					return 0;
				});
			weft_event_set(&started);
			int r = weft_group_wait(g);
			EXPECT_EQ(4, finished.load());
			weft_group_free(g);
			return r;
		});
		weft_event_wait(&started);
		weft_sleep(WEFT_MSEC(1));
		weft_cancel(w);
		EXPECT_EQ(-ECANCELED, weft_join(w));
	});
}

TEST(Group, WaiterScopeExpiryGivesTimedOut)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		gspawn(g, [] { return weft_sleep(WEFT_SEC(30)); });
		weft_scope s;
		weft_scope_enter(&s, WEFT_MSEC(3));
		EXPECT_EQ(-ETIMEDOUT, weft_group_wait(g));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
		EXPECT_EQ(0u, weft_group_errors(g, nullptr, 0));
		weft_group_free(g);
	});
}

TEST(Group, WaiterAlreadyCancelledWithNothingLeft)
{
	WEFT_TEST_RUN(1, [] {
		weft_group *g = weft_group_new();
		weft_cancel(weft_self());
		EXPECT_EQ(-ECANCELED, weft_group_wait(g));
		weft_group_free(g);
	}, false);
}

TEST(Group, FailureBeforeTheWaitersCancellationWins)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		weft_event failed{};
		gspawn(g, [&] {
			weft_event_set(&failed);
			return -EIO;
		});
		gspawn(g, [] { return weft_sleep(WEFT_SEC(30)); });
		shield([&] { return weft_event_wait(&failed); });
		weft_sleep(0); // let the failing child finish
		weft_cancel(weft_self());
		int r = weft_group_wait(g);
		// The child set the event just before returning -EIO; its
		// failure is recorded before we look unless it is slow to
		// finish, so both answers are legal; what is not legal is
		// anything else.
		EXPECT_TRUE(r == -EIO || r == -ECANCELED) << r;
		EXPECT_EQ(1u, weft_group_errors(g, nullptr, 0));
		weft_group_free(g);
	}, false);
}

TEST(Group, CancelFromAForeignThread)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		std::atomic<int> cancelled{ 0 };
		for (int i = 0; i < 8; i++)
			gspawn(g, [&] {
				if (weft_sleep(WEFT_SEC(30)) == -ECANCELED)
					cancelled++;
				return -ECANCELED;
			});
		std::thread th([g] {
			std::this_thread::sleep_for(std::chrono::milliseconds(2));
			weft_group_cancel(g);
		});
		EXPECT_EQ(0, weft_group_wait(g));
		th.join();
		EXPECT_EQ(8, cancelled.load());
		weft_group_cancel(nullptr); // reported, ignored
		weft_group_free(g);
	});
}

TEST(Group, CancelThenAChildFailsReportsTheFailure)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		gspawn(g, [] {
			weft_sleep(WEFT_SEC(30));
			return -EIO;
		});
		weft_group_cancel(g);
		EXPECT_EQ(-ECANCELED, gspawn(g, [] { return 0; }));
		EXPECT_EQ(-EIO, weft_group_wait(g));
		weft_group_free(g);
	});
}

TEST(Group, ChildrenSpawnSiblings)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		std::atomic<int> ran{ 0 };
		std::function<int(int)> tree = [&](int depth) -> int {
			ran++;
			if (depth > 0)
				for (int k = 0; k < 2; k++)
					gspawn(g, [&, depth] {
						return tree(depth - 1);
					});
			return 0;
		};
		gspawn(g, [&] { return tree(8); });
		EXPECT_EQ(0, weft_group_wait(g));
		EXPECT_EQ(511, ran.load());
		weft_group_free(g);
	});
}

TEST(Group, ChildrenDoNotInheritTheSpawnersStateOrScopes)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		std::atomic<int> r{ 99 };
		weft_scope s;
		weft_scope_enter(&s, 0);
		gspawn(g, [&] {
			r = weft_sleep(WEFT_MSEC(2));
			return 0;
		});
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
		EXPECT_EQ(0, weft_group_wait(g));
		EXPECT_EQ(0, r.load());
		weft_group_free(g);
	});
}

TEST(Group, FreeBeforeWaitCancelsChildrenAndFreesAfterTheLast)
{
	WEFT_TEST_RUN(2, [] {
		weft_event done{};
		std::atomic<int> left{ 3 };
		weft_group *g = weft_group_new();
		for (int i = 0; i < 3; i++)
			gspawn(g, [&] {
				weft_sleep(WEFT_SEC(30));
				// Spawning into a freed group: refused.
				int r = gspawn(g, [] { return 0; });
				EXPECT_EQ(-ECANCELED, r);
				if (--left == 0)
					weft_event_set(&done);
				return 0;
			});
		weft_group_free(g);
		EXPECT_EQ(0, weft_event_wait(&done));
		weft_group_free(nullptr);
	});
}

TEST(Group, BadArguments)
{
	WEFT_TEST_RUN(1, [] {
		weft_group *g = weft_group_new();
		EXPECT_EQ(-EINVAL, weft_group_spawn(nullptr, ret_arg, nullptr));
		EXPECT_EQ(-EINVAL, weft_group_spawn(g, nullptr, nullptr));
		weft_spawn_opts o{};
		o.flags = 0x100;
		EXPECT_EQ(-EINVAL, weft_group_spawn_ex(g, &o, ret_arg, nullptr));
		o.flags = 0;
		o.name = "named-child";
		EXPECT_EQ(0, weft_group_spawn_ex(g, &o, ret_arg, nullptr));
		EXPECT_EQ(-EINVAL, weft_group_wait(nullptr));
		EXPECT_EQ(0u, weft_group_errors(nullptr, nullptr, 0));
		EXPECT_EQ(0, weft_group_wait(g));
		weft_group_free(g);
	});
}

TEST(Group, SpawnOutsideATaskIsPerm)
{
	weft_group *g = weft_group_new();
	ASSERT_NE(nullptr, g);
	EXPECT_EQ(-EPERM, weft_group_spawn(g, ret_arg, nullptr));
	weft_group_free(g);
}

TEST(Group, SecondConcurrentWaitIsInvalid)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		weft_event start{};
		gspawn(g, [&] { return weft_event_wait(&start); });
		weft_task *w = go([g] { return weft_group_wait(g); });
		// Until w is in its wait (a fixed sleep was not enough under
		// TSan: our call came first, became the wait, and hung).
		bool waiting = weft_test::wait_for_dump("waiting on join");
		EXPECT_TRUE(waiting) << "the first weft_group_wait never began";
		if (waiting) {
			EXPECT_EQ(-EINVAL, weft_group_wait(g));
		}
		weft_event_set(&start);
		EXPECT_EQ(0, weft_join(w));
		weft_group_free(g);
	});
}

// A server's connection group lives long: finished children are reclaimed
// at once, so the live-task count stays at the number really running.
TEST(Group, FinishedChildrenAreReclaimedAtOnce)
{
	WEFT_TEST_RUN(2, [] {
		weft_group *g = weft_group_new();
		const int n = (int)scaled(20000);
		std::atomic<int> ran{ 0 };
		for (int i = 0; i < n; i++) {
			ASSERT_EQ(0, gspawn(g, [&] {
					  ran++;
					  return 0;
				  }));
			if (i % 256 == 255)
				weft_sleep(WEFT_USEC(200));
		}
		for (int i = 0; i < 30000 && ran.load() < n; i++)
			weft_sleep(WEFT_USEC(200));
		ASSERT_EQ(n, ran.load());
#ifdef WEFT_TEST_HOOKS
		// Only this test's body is alive (and a child or two finishing).
		EXPECT_LE(weft_test_live_tasks(weft_runtime_current()), 3u);
#endif
		EXPECT_EQ(0, weft_group_wait(g));
		EXPECT_EQ(n, ran.load());
		weft_group_free(g);
	});
}
