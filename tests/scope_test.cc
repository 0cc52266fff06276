// SPDX-License-Identifier: MIT
// tests/scope_test.cc - cancel scopes (deadlines) and shields: API.md
// "Deadlines" and the shield paragraph of "Tasks". Each behaviour there has
// a test here that fails if it breaks.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include "tests/harness.h"

namespace
{

using weft_test::go;
using weft_test::shield;


} // namespace

// ---------------------------------------------------------------- scopes

TEST(Scope, ExpiryFailsTheWaitAndTheExitReportsIt)
{
	WEFT_TEST_RUN(2, [] {
		weft_scope s;
		uint64_t t0 = weft_now();
		weft_scope_enter(&s, WEFT_MSEC(20));
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(10)));
		uint64_t took = weft_now() - t0;
		EXPECT_GE(took, WEFT_MSEC(20));
		EXPECT_LT(took, WEFT_SEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
		// Closed: waits work again.
		EXPECT_EQ(0, weft_sleep(WEFT_MSEC(1)));
	});
}

TEST(Scope, UnexpiredScopeExitsWithZero)
{
	WEFT_TEST_RUN(1, [] {
		weft_scope s{};
		weft_scope_enter(&s, WEFT_SEC(10));
		EXPECT_EQ(0, weft_sleep(WEFT_MSEC(1)));
		EXPECT_EQ(0, weft_scope_exit(&s));
	});
}

TEST(Scope, ExpiryIsLevelTriggeredAtEverySuspensionPoint)
{
	WEFT_TEST_RUN(2, [] {
		weft_sem sem{};
		weft_event ev{};
		weft_mutex mu{};
		weft_queue *q = weft_queue_new(1);
		ASSERT_NE(nullptr, q);
		weft_scope s;
		weft_scope_enter(&s, 0); // already expired
		EXPECT_EQ(-ETIMEDOUT, weft_checkpoint());
		EXPECT_EQ(-ETIMEDOUT, weft_yield());
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(0));
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_MSEC(1)));
		EXPECT_EQ(-ETIMEDOUT, weft_sem_acquire(&sem));
		EXPECT_EQ(-ETIMEDOUT, weft_event_wait(&ev));
		EXPECT_EQ(-ETIMEDOUT, weft_mutex_lock(&mu));
		void *item = nullptr;
		EXPECT_EQ(-ETIMEDOUT, weft_queue_get(q, &item));
		// and again: nothing is consumed by failing once
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_MSEC(1)));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
		weft_queue_free(q);
	});
}

TEST(Scope, DeadlineReachesSyncWaitsWhileBlocked)
{
	WEFT_TEST_RUN(2, [] {
		weft_sem sem{};
		weft_event ev{};
		weft_queue *q = weft_queue_new(1);
		ASSERT_NE(nullptr, q);
		weft_scope s;

		weft_scope_enter(&s, WEFT_MSEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_sem_acquire(&sem));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));

		weft_scope_enter(&s, WEFT_MSEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_event_wait(&ev));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));

		weft_scope_enter(&s, WEFT_MSEC(5));
		void *item = nullptr;
		EXPECT_EQ(-ETIMEDOUT, weft_queue_get(q, &item));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));

		// A mutex held by another task.
		weft_mutex mu{};
		weft_event held{}, release{};
		weft_task *holder = go([&] {
			weft_mutex_lock(&mu);
			weft_event_set(&held);
			weft_event_wait(&release);
			weft_mutex_unlock(&mu);
			return 0;
		});
		ASSERT_EQ(0, weft_event_wait(&held));
		weft_scope_enter(&s, WEFT_MSEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_mutex_lock(&mu));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
		weft_event_set(&release);
		EXPECT_EQ(0, weft_join(holder));

		// Nothing was lost: the semaphore still holds its 0 permits
		// plus one released now, the queue takes one item.
		weft_sem_release(&sem);
		EXPECT_EQ(0, weft_sem_try_acquire(&sem));
		EXPECT_EQ(0, weft_queue_try_put(q, &s));
		weft_queue_free(q);
	});
}

TEST(Scope, JoinInAnExpiredScopeCancelsTheChildAndReturnsItsStatus)
{
	WEFT_TEST_RUN(2, [] {
		std::atomic<bool> cleaned{ false };
		weft_task *t = go([&] {
			int r = weft_sleep(WEFT_SEC(30));
			cleaned = true;
			return r == -ECANCELED ? 42 : 1;
		});
		weft_scope s;
		weft_scope_enter(&s, WEFT_MSEC(10));
		EXPECT_EQ(42, weft_join(t));
		EXPECT_TRUE(cleaned.load());
		EXPECT_EQ(-ETIMEDOUT, weft_checkpoint());
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
	});
}

TEST(Scope, NestedEarliestAppliesEachExitReportsItsOwn)
{
	WEFT_TEST_RUN(1, [] {
		// Outer expires first: the inner scope's waits fail, but the
		// inner exit reports 0 (its own deadline did not pass).
		weft_scope outer, inner;
		weft_scope_enter(&outer, WEFT_MSEC(10));
		weft_scope_enter(&inner, WEFT_SEC(30));
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(10)));
		EXPECT_EQ(0, weft_scope_exit(&inner));
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_MSEC(1)));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&outer));

		// Inner expires first: after its exit the outer scope's waits
		// work again.
		weft_scope_enter(&outer, WEFT_SEC(30));
		weft_scope_enter(&inner, WEFT_MSEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(10)));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&inner));
		EXPECT_EQ(0, weft_sleep(WEFT_MSEC(1)));
		EXPECT_EQ(0, weft_scope_exit(&outer));
	});
}

TEST(Scope, CancellationWinsOverAPassedDeadline)
{
	WEFT_TEST_RUN(1, [] {
		weft_scope s;
		weft_scope_enter(&s, 0);
		weft_cancel(weft_self());
		EXPECT_EQ(-ECANCELED, weft_sleep(WEFT_MSEC(1)));
		EXPECT_EQ(-ECANCELED, weft_checkpoint());
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
		EXPECT_EQ(-ECANCELED, weft_checkpoint());
	}, false);
}

TEST(Scope, SetDeadlineMovesAnOpenScope)
{
	WEFT_TEST_RUN(1, [] {
		weft_scope s;
		weft_scope_enter(&s, WEFT_MSEC(5));
		uint64_t later = weft_now() + WEFT_SEC(30);
		weft_scope_set_deadline(&s, later);
		EXPECT_EQ(later, weft_scope_deadline(&s));
		EXPECT_EQ(0, weft_sleep(WEFT_MSEC(20))); // past the old one
		weft_scope_set_deadline(&s, weft_now() + WEFT_MSEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(10)));
		// Moving an expired deadline later does not undo the expiry.
		weft_scope_set_deadline(&s, WEFT_FOREVER);
		EXPECT_EQ(0, weft_sleep(WEFT_MSEC(1)));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
		EXPECT_EQ(WEFT_FOREVER, weft_scope_deadline(&s));
		EXPECT_EQ(WEFT_FOREVER, weft_scope_deadline(nullptr));
	});
}

TEST(Scope, SetDeadlineOfAnOuterScopeAppliesInside)
{
	WEFT_TEST_RUN(1, [] {
		weft_scope outer, inner;
		weft_scope_enter(&outer, WEFT_SEC(30));
		weft_scope_enter(&inner, WEFT_SEC(30));
		weft_scope_set_deadline(&outer, weft_now() + WEFT_MSEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(10)));
		EXPECT_EQ(0, weft_scope_exit(&inner));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&outer));
	});
}

TEST(Scope, AbsoluteDeadlineAndReentry)
{
	WEFT_TEST_RUN(1, [] {
		weft_scope s;
		uint64_t dl = weft_now() + WEFT_MSEC(5);
		weft_scope_enter_at(&s, dl);
		EXPECT_EQ(dl, weft_scope_deadline(&s));
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(10)));
		EXPECT_GE(weft_now(), dl);
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
		// The same object again, now with no deadline at all.
		weft_scope_enter(&s, WEFT_FOREVER);
		EXPECT_EQ(WEFT_FOREVER, weft_scope_deadline(&s));
		EXPECT_EQ(0, weft_sleep(WEFT_MSEC(1)));
		EXPECT_EQ(0, weft_scope_exit(&s));
		// A relative timeout whose end overflows means forever.
		weft_scope_enter(&s, UINT64_MAX - 1);
		EXPECT_EQ(WEFT_FOREVER, weft_scope_deadline(&s));
		EXPECT_EQ(0, weft_scope_exit(&s));
	});
}

TEST(Scope, MisuseIsReportedAndRepaired)
{
	WEFT_TEST_RUN(1, [] {
		weft_scope a, b, c, never{};
		weft_scope_enter(&a, WEFT_SEC(30));
		weft_scope_enter(&b, WEFT_MSEC(5));
		// Entering an open scope again changes nothing.
		weft_scope_enter(&b, WEFT_SEC(30));
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(10)));
		// Out of order: -EINVAL, and a and b are both closed, so b's
		// expired deadline does not fail later waits (A10).
		EXPECT_EQ(-EINVAL, weft_scope_exit(&a));
		EXPECT_EQ(0, weft_sleep(WEFT_MSEC(1)));
		EXPECT_EQ(-EINVAL, weft_scope_exit(&b));
		// Later scopes still work.
		weft_scope_enter(&c, WEFT_MSEC(2));
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(10)));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&c));
		// Not open at all.
		EXPECT_EQ(-EINVAL, weft_scope_exit(&never));
		EXPECT_EQ(-EINVAL, weft_scope_exit(&a));
		EXPECT_EQ(-EINVAL, weft_scope_exit(nullptr));
		weft_scope_enter(nullptr, 1);
		weft_scope_set_deadline(&never, 1);
		EXPECT_EQ(0, weft_checkpoint());
	});
}

TEST(Scope, OutsideATaskIsReported)
{
	weft_scope s{};
	weft_scope_enter(&s, 0);
	EXPECT_EQ(-EINVAL, weft_scope_exit(&s));
	EXPECT_EQ(-EPERM, weft_shield(
				  [](void *) -> int { return 0; }, nullptr));
}

TEST(Scope, LeftOpenWhenTheTaskReturnsIsReportedAndClosed)
{
	WEFT_TEST_RUN(1, [] {
		weft_task *t = go([] {
			static weft_scope leak; // outlives fn
			weft_scope_enter(&leak, WEFT_MSEC(1));
			return 0;
		});
		EXPECT_EQ(0, weft_join(t));
		// The record is reused by the next spawn with no scope open.
		t = go([] { return weft_sleep(WEFT_MSEC(5)); });
		EXPECT_EQ(0, weft_join(t));
	});
}

// A scope entered on the stack of a function that returned without
// exiting it: its memory then belongs to whatever runs next. Here that is
// a frame full of 0xff bytes; at the task's end weft must close the scope
// without reading it (it once walked such a chain: a crash, or a loop
// on a prev pointer that the report itself overwrote).
static __attribute__((noinline)) void leave_scopes_open()
{
	weft_scope outer, inner;
	weft_scope_enter(&outer, WEFT_SEC(30));
	weft_scope_enter_shielded(&inner, WEFT_SEC(30));
	asm volatile("" ::"r"(&outer), "r"(&inner) : "memory");
}

static __attribute__((noinline)) void clobber_dead_frames()
{
	volatile unsigned char junk[2048];
	for (auto &b : junk)
		b = 0xff;
	asm volatile("" ::"r"(junk) : "memory");
}

// 16 KiB down the stack, below anything the task's end and a report on
// stderr use, so that the 0xff bytes are what a reader finds there.
static __attribute__((noinline)) void leave_scopes_open_deep(int n)
{
	volatile unsigned char pad[1024];
	pad[0] = (unsigned char)n;
	if (n) {
		leave_scopes_open_deep(n - 1);
	} else {
		leave_scopes_open();
		clobber_dead_frames();
	}
	asm volatile("" ::"r"(pad) : "memory");
}

TEST(Scope, LeftOpenInAFrameThatReturnedIsNotReadAgain)
{
	WEFT_TEST_RUN(1, [] {
		weft_task *t = go([] {
			leave_scopes_open_deep(16);
			return 7;
		});
		EXPECT_EQ(7, weft_join(t));
		// The record is reused with no scope open and no shield.
		t = go([] {
			weft_scope s;
			weft_scope_enter(&s, WEFT_MSEC(1));
			int r = weft_sleep(WEFT_SEC(30));
			weft_scope_exit(&s);
			return r;
		});
		EXPECT_EQ(-ETIMEDOUT, weft_join(t));
	});
}

TEST(Scope, ChildrenDoNotInheritTheSpawnersScope)
{
	WEFT_TEST_RUN(2, [] {
		weft_scope s;
		weft_scope_enter(&s, WEFT_MSEC(1));
		weft_event done{};
		std::atomic<int> child_r{ 99 };
		weft_task *t = go([&] {
			child_r = weft_sleep(WEFT_MSEC(20));
			weft_event_set(&done);
			return 0;
		});
		weft_detach(t);
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(10)));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
		EXPECT_EQ(0, weft_event_wait(&done));
		EXPECT_EQ(0, child_r.load());
	});
}

// ---------------------------------------------------------------- shields

TEST(Shield, RunsInACancelledTaskAndDefersTheCancellation)
{
	WEFT_TEST_RUN(1, [] {
		weft_cancel(weft_self());
		int inside = -1;
		int r = shield([&] {
			inside = weft_sleep(WEFT_MSEC(5));
			return 17;
		});
		EXPECT_EQ(17, r);
		EXPECT_EQ(0, inside);
		EXPECT_EQ(-ECANCELED, weft_checkpoint());
	}, false);
}

TEST(Shield, CancellationArrivingDuringAShieldedWaitShowsAfterIt)
{
	WEFT_TEST_RUN(2, [] {
		std::atomic<int> inside{ 99 }, after{ 99 };
		weft_event started{};
		weft_task *t = go([&] {
			shield([&] {
				weft_event_set(&started);
				inside = weft_sleep(WEFT_MSEC(30));
				return 0;
			});
			after = weft_sleep(WEFT_MSEC(1));
			return 0;
		});
		EXPECT_EQ(0, weft_event_wait(&started));
		EXPECT_EQ(1, weft_cancel(t));
		EXPECT_EQ(0, weft_join(t));
		EXPECT_EQ(0, inside.load());
		EXPECT_EQ(-ECANCELED, after.load());
	});
}

TEST(Shield, EnclosingDeadlineIsNotSeenInsideButAfter)
{
	WEFT_TEST_RUN(1, [] {
		weft_scope s;
		weft_scope_enter(&s, WEFT_MSEC(2));
		int inside = shield([] { return weft_sleep(WEFT_MSEC(20)); });
		EXPECT_EQ(0, inside);
		EXPECT_EQ(-ETIMEDOUT, weft_checkpoint());
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&s));
	});
}

TEST(Shield, ShieldedScopeOwnDeadlineAndInnerScopesApply)
{
	WEFT_TEST_RUN(1, [] {
		weft_cancel(weft_self());
		weft_scope sh;
		// 200 ms: well after the inner scope's 1 ms, even on a loaded
		// machine under a sanitizer (10 ms was overtaken once in CI,
		// and the shield's deadline then ended the inner sleep).
		weft_scope_enter_shielded(&sh, WEFT_MSEC(200));
		EXPECT_EQ(0, weft_sleep(WEFT_MSEC(1))); // cancel not seen
		weft_scope inner;
		weft_scope_enter(&inner, WEFT_MSEC(1));
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(10)));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&inner));
		// the shielded scope's own deadline bounds the cleanup
		EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(10)));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&sh));
		EXPECT_EQ(-ECANCELED, weft_sleep(WEFT_MSEC(1)));
	}, false);
}

// Found by tests/fuzz/api_fuzz: waits on the waiter-list primitives
// (semaphore, event, queue) armed no deadline timer inside a shield, so a
// scope's deadline there never ended them: the task hung until the
// resource came. A helper provides each resource after 2 s, so without the
// fix the waits return 0 late instead of hanging the test.
TEST(Shield, ScopeDeadlinesEndPrimitiveWaitsInsideAShield)
{
	WEFT_TEST_RUN(2, [] {
		static weft_sem sem;
		static weft_event ev;
		static weft_queue *q;
		ASSERT_EQ(0, weft_sem_init(&sem, 0));
		ASSERT_EQ(0, weft_event_init(&ev));
		q = weft_queue_new(1);
		ASSERT_NE(nullptr, q);
		weft_task *helper = go([] {
			weft_shield(
				[](void *) {
					weft_sleep(WEFT_SEC(2));
					weft_sem_release(&sem);
					weft_sem_release(&sem);
					weft_event_set(&ev);
					weft_queue_try_put(q, (void *)1);
					return 0;
				},
				nullptr);
			return 0;
		});
		void *x = nullptr;
		weft_scope sh, in;
		weft_scope_enter_shielded(&sh, WEFT_SEC(60));
		weft_scope_enter(&in, WEFT_MSEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_sem_acquire(&sem));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&in));
		weft_scope_enter(&in, WEFT_MSEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_event_wait(&ev));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&in));
		weft_scope_enter(&in, WEFT_MSEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_queue_get(q, &x));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&in));
		EXPECT_EQ(0, weft_scope_exit(&sh));
		// the shielded scope's own deadline, too
		weft_scope_enter_shielded(&sh, WEFT_MSEC(5));
		EXPECT_EQ(-ETIMEDOUT, weft_sem_acquire(&sem));
		EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&sh));
		EXPECT_EQ(0, weft_join(helper));
		weft_queue_free(q);
		weft_event_destroy(&ev);
		weft_sem_destroy(&sem);
	}, false);
}

TEST(Shield, JoinInsideAShieldDoesNotCancelTheChild)
{
	WEFT_TEST_RUN(2, [] {
		weft_cancel(weft_self());
		int st = shield([] {
			weft_task *t = go(
				[] { return weft_sleep(WEFT_MSEC(10)); });
			return weft_join(t);
		});
		EXPECT_EQ(0, st);
		EXPECT_EQ(-ECANCELED, weft_checkpoint());
	}, false);
}

TEST(Shield, ScopesLeftOpenInsideAreClosed)
{
	WEFT_TEST_RUN(1, [] {
		weft_scope outer;
		weft_scope_enter(&outer, WEFT_SEC(30));
		static weft_scope leak;
		shield([] {
			weft_scope_enter(&leak, 0);
			return 0;
		});
		EXPECT_EQ(0, weft_sleep(WEFT_MSEC(1)));
		EXPECT_EQ(0, weft_scope_exit(&outer));
	});
}

// The shield's fn returns with scopes open in its own frame, one of them
// shielded: after weft_shield() returns, the caller's deadline applies
// again and a cancellation shows (the shield depth is the caller's).
TEST(Shield, ScopesLeftOpenInTheFnsFrameRestoreTheCallersState)
{
	WEFT_TEST_RUN(
		1,
		[] {
			weft_scope outer;
			weft_scope_enter(&outer, WEFT_MSEC(20));
			EXPECT_EQ(0, shield([] {
					  leave_scopes_open();
					  return 0;
				  }));
			EXPECT_EQ(-ETIMEDOUT, weft_sleep(WEFT_SEC(30)));
			EXPECT_EQ(-ETIMEDOUT, weft_scope_exit(&outer));
			weft_cancel(weft_self());
			EXPECT_EQ(-ECANCELED, weft_checkpoint());
		},
		false);
}

TEST(Shield, NullFnIsInvalid)
{
	WEFT_TEST_RUN(1, [] { EXPECT_EQ(-EINVAL, weft_shield(nullptr, nullptr)); });
}

static std::atomic<bool> shielded_cleanup_done;

static int shielded_cleanup_task(void *)
{
	weft_sleep(WEFT_SEC(30)); // cancelled at shutdown
	return shield([] {
		int r = weft_sleep(WEFT_MSEC(30));
		shielded_cleanup_done = r == 0;
		return 0;
	});
}

static int main_detaches_cleanup(void *)
{
	weft_task *t = weft_spawn(shielded_cleanup_task, nullptr);
	if (!t)
		return -errno;
	weft_detach(t);
	return weft_sleep(WEFT_MSEC(5));
}

TEST(Shield, ShutdownWaitsForShieldedCleanup)
{
	shielded_cleanup_done = false;
	EXPECT_EQ(0, weft_run(main_detaches_cleanup, nullptr, nullptr));
	EXPECT_TRUE(shielded_cleanup_done.load());
}

// A cancel racing the entry and exit of shields: every cancellation is
// seen exactly once the shields are gone, and never inside one.
TEST(Shield, CancelRacingShieldEntryIsNeverLost)
{
	WEFT_TEST_RUN(2, [] {
		for (int i = 0; i < (int)weft_test::scaled(300); i++) {
			std::atomic<int> seen_inside{ 0 };
			weft_event start{};
			weft_task *t = go([&] {
				weft_event_wait(&start);
				for (;;) {
					int r = shield([&] {
						int e = weft_yield();
						if (e)
							seen_inside++;
						return 0;
					});
					(void)r;
					if (weft_yield() == -ECANCELED)
						return 1;
				}
			});
			weft_event_set(&start);
			weft_sleep(WEFT_USEC(i % 50));
			weft_cancel(t);
			EXPECT_EQ(1, weft_join(t));
			EXPECT_EQ(0, seen_inside.load());
		}
	});
}
