// SPDX-License-Identifier: MIT
// tests/queue_test.cc - weft_queue (runtime/queue.c): one test per
// behaviour of API.md's Queue contract, plus RELIABILITY.md A3, A7, A12,
// H3 and the hand-over race C11 (items in = items out + len under racing
// cancellations). sync_stress_test.cc runs the big B11 fan-in/fan-out.
//
// Ordering tests wait until a task is linked on the queue's waiter lists
// (weft__queue_nwaiters(), internal), so they do not depend on timing.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/harness.h"

using weft_test::scaled;

extern "C" {
// Internal (runtime/waitq.h): 0 getters, 1 putters, 2 joiners linked now.
size_t weft__queue_nwaiters(weft_queue *q, int which);
}

namespace
{

enum {
	GETTERS = 0,
	PUTTERS = 1,
	JOINERS = 2
};

using weft_test::go;
using weft_test::let_others_run;
using weft_test::wait_until;
using weft_test::P;
using weft_test::QueuePtr;
using weft_test::V;

} // namespace

// RELIABILITY A3, H3.
TEST(Queue, NewRejectsZeroAndOverflowingCapacity)
{
	errno = 0;
	EXPECT_EQ(nullptr, weft_queue_new(0));
	EXPECT_EQ(EINVAL, errno);
#ifdef WEFT_TEST_HOOKS
	unsigned long before = weft_test_alloc_count();
#endif
	errno = 0;
	EXPECT_EQ(nullptr, weft_queue_new(SIZE_MAX / 4));
	EXPECT_EQ(ENOMEM, errno);
	errno = 0;
	EXPECT_EQ(nullptr, weft_queue_new(SIZE_MAX));
	EXPECT_EQ(ENOMEM, errno);
	errno = 0;
	EXPECT_EQ(nullptr, weft_queue_new(SIZE_MAX / sizeof(void *)));
	EXPECT_EQ(ENOMEM, errno);
#ifdef WEFT_TEST_HOOKS
	EXPECT_EQ(before, weft_test_alloc_count())
		<< "an overflowing size reached the allocator";
#endif
}

#ifdef WEFT_TEST_HOOKS
TEST(Queue, NewReportsAllocationFailure)
{
	weft_test_fail_alloc_after(0);
	errno = 0;
	weft_queue *q = weft_queue_new(4);
	weft_test_fail_alloc_after(-1);
	EXPECT_EQ(nullptr, q);
	EXPECT_EQ(ENOMEM, errno);
	q = weft_queue_new(4);
	EXPECT_NE(nullptr, q);
	weft_queue_free(q);
}
#endif

TEST(Queue, NullArgumentsAreInvalid)
{
	void *x;
	QueuePtr q(weft_queue_new(1));
	EXPECT_EQ(-EINVAL, weft_queue_try_put(nullptr, nullptr));
	EXPECT_EQ(-EINVAL, weft_queue_try_get(nullptr, &x));
	EXPECT_EQ(-EINVAL, weft_queue_try_get(q.get(), nullptr));
	EXPECT_EQ(0u, weft_queue_len(nullptr));
	weft_queue_free(nullptr);
	WEFT_TEST_RUN(1, [&] {
		EXPECT_EQ(-EINVAL, weft_queue_put(nullptr, nullptr));
		EXPECT_EQ(-EINVAL, weft_queue_get(nullptr, &x));
		EXPECT_EQ(-EINVAL, weft_queue_get(q.get(), nullptr));
		EXPECT_EQ(-EINVAL, weft_queue_join(nullptr));
	});
}

// RELIABILITY A4: the waiting calls need a task; the try_ calls do not.
TEST(Queue, WaitingCallsAreEpermOutsideTaskTryCallsWork)
{
	QueuePtr q(weft_queue_new(2));
	void *x = nullptr;
	EXPECT_EQ(-EPERM, weft_queue_put(q.get(), P(1)));
	EXPECT_EQ(-EPERM, weft_queue_get(q.get(), &x));
	EXPECT_EQ(-EPERM, weft_queue_join(q.get()));
	EXPECT_EQ(0, weft_queue_try_put(q.get(), P(1)));
	EXPECT_EQ(1u, weft_queue_len(q.get()));
	EXPECT_EQ(0, weft_queue_try_get(q.get(), &x));
	EXPECT_EQ(1u, V(x));
	weft_queue_task_done(q.get());
}

TEST(Queue, FifoTryPutTryGetAndLen)
{
	QueuePtr q(weft_queue_new(3));
	void *x = P(99);
	EXPECT_EQ(-EAGAIN, weft_queue_try_get(q.get(), &x));
	EXPECT_EQ(99u, V(x)) << "written on failure";
	for (uintptr_t round = 0; round < 10; round++) { // wraps the ring
		for (uintptr_t i = 1; i <= 3; i++) {
			EXPECT_EQ(0, weft_queue_try_put(q.get(),
							P(round * 10 + i)));
			EXPECT_EQ(i, weft_queue_len(q.get()));
		}
		EXPECT_EQ(-EAGAIN, weft_queue_try_put(q.get(), P(0)));
		for (uintptr_t i = 1; i <= 3; i++) {
			ASSERT_EQ(0, weft_queue_try_get(q.get(), &x));
			EXPECT_EQ(round * 10 + i, V(x));
			EXPECT_EQ(3 - i, weft_queue_len(q.get()));
		}
	}
	EXPECT_EQ(0, weft_queue_try_put(q.get(), nullptr)); // NULL is an item
	ASSERT_EQ(0, weft_queue_try_get(q.get(), &x));
	EXPECT_EQ(nullptr, x);
}

TEST(Queue, PutWaitsWhileFullGetWaitsWhileEmpty)
{
	QueuePtr q(weft_queue_new(1));
	WEFT_TEST_RUN(2, [&] {
		ASSERT_EQ(0, weft_queue_put(q.get(), P(1)));
		std::atomic<bool> put_done{ false };
		weft_task *p = go([&] {
			int r = weft_queue_put(q.get(), P(2));
			put_done = true;
			return r;
		});
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), PUTTERS) == 1;
		}));
		EXPECT_FALSE(put_done);
		void *x;
		ASSERT_EQ(0, weft_queue_get(q.get(), &x));
		EXPECT_EQ(1u, V(x));
		EXPECT_EQ(0, weft_join(p));
		EXPECT_EQ(1u, weft_queue_len(q.get())); // 2 moved in
		ASSERT_EQ(0, weft_queue_get(q.get(), &x));
		EXPECT_EQ(2u, V(x));

		std::atomic<bool> got{ false };
		weft_task *g = go([&] {
			void *y = nullptr;
			int r = weft_queue_get(q.get(), &y);
			got = true;
			return r ? r : (int)V(y);
		});
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), GETTERS) == 1;
		}));
		EXPECT_FALSE(got);
		ASSERT_EQ(0, weft_queue_put(q.get(), P(3)));
		EXPECT_EQ(3, weft_join(g));
		EXPECT_EQ(0u, weft_queue_len(q.get()))
			<< "handed over directly";
	});
}

TEST(Queue, WaitingGettersAreServedFifo)
{
	QueuePtr q(weft_queue_new(4));
	WEFT_TEST_RUN(2, [&] {
		std::vector<weft_task *> gs;
		for (int i = 0; i < 5; i++) {
			gs.push_back(go([&] {
				void *y;
				int r = weft_queue_get(q.get(), &y);
				return r ? r : (int)V(y);
			}));
			ASSERT_TRUE(wait_until([&] {
				return weft__queue_nwaiters(q.get(), GETTERS) ==
				       (size_t)i + 1;
			}));
		}
		for (uintptr_t i = 0; i < 5; i++)
			ASSERT_EQ(0, weft_queue_put(q.get(), P(100 + i)));
		for (int i = 0; i < 5; i++)
			EXPECT_EQ(100 + i, weft_join(gs[i]));
	});
}

// Waiting producers' items enter behind the queued ones, in the order the
// producers arrived.
TEST(Queue, WaitingPuttersEnterInArrivalOrder)
{
	QueuePtr q(weft_queue_new(2));
	WEFT_TEST_RUN(2, [&] {
		ASSERT_EQ(0, weft_queue_put(q.get(), P(1)));
		ASSERT_EQ(0, weft_queue_put(q.get(), P(2)));
		std::vector<weft_task *> ps;
		for (uintptr_t i = 0; i < 4; i++) {
			ps.push_back(go([&, i] {
				return weft_queue_put(q.get(), P(3 + i));
			}));
			ASSERT_TRUE(wait_until([&] {
				return weft__queue_nwaiters(q.get(), PUTTERS) ==
				       i + 1;
			}));
		}
		EXPECT_EQ(2u, weft_queue_len(q.get()));
		for (uintptr_t want = 1; want <= 6; want++) {
			void *x;
			ASSERT_EQ(0, weft_queue_get(q.get(), &x));
			EXPECT_EQ(want, V(x));
		}
		for (auto p : ps)
			EXPECT_EQ(0, weft_join(p));
	});
}

TEST(Queue, TryCallsFromForeignThreadWakeTasks)
{
	QueuePtr q(weft_queue_new(1));
	WEFT_TEST_RUN(2, [&] {
		weft_task *g = go([&] {
			void *y;
			int r = weft_queue_get(q.get(), &y);
			return r ? r : (int)V(y);
		});
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), GETTERS) == 1;
		}));
		int r = -1;
		std::thread([&] {
			r = weft_queue_try_put(q.get(), P(42));
		}).join();
		EXPECT_EQ(0, r);
		EXPECT_EQ(42, weft_join(g));

		ASSERT_EQ(0, weft_queue_put(q.get(), P(1)));
		weft_task *p = go([&] {
			return weft_queue_put(q.get(), P(2));
		});
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), PUTTERS) == 1;
		}));
		void *x = nullptr;
		std::thread([&] {
			r = weft_queue_try_get(q.get(), &x);
		}).join();
		EXPECT_EQ(0, r);
		EXPECT_EQ(1u, V(x));
		EXPECT_EQ(0, weft_join(p));
		ASSERT_EQ(0, weft_queue_try_get(q.get(), &x));
		EXPECT_EQ(2u, V(x));
	});
}

TEST(Queue, CloseWakesAllWaitersAndDrains)
{
	QueuePtr q(weft_queue_new(1));
	WEFT_TEST_RUN(2, [&] {
		// Waiting getters get -EPIPE.
		std::vector<weft_task *> gs;
		for (int i = 0; i < 3; i++)
			gs.push_back(go([&] {
				void *y;
				return weft_queue_get(q.get(), &y);
			}));
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), GETTERS) == 3;
		}));
		weft_queue_close(q.get());
		for (auto g : gs)
			EXPECT_EQ(-EPIPE, weft_join(g));
		EXPECT_EQ(-EPIPE, weft_queue_put(q.get(), P(1)));
		EXPECT_EQ(-EPIPE, weft_queue_try_put(q.get(), P(1)));
		void *x;
		EXPECT_EQ(-EPIPE, weft_queue_get(q.get(), &x));
		EXPECT_EQ(-EPIPE, weft_queue_try_get(q.get(), &x));
		weft_queue_close(q.get()); // twice: nothing
	});

	QueuePtr q2(weft_queue_new(1));
	WEFT_TEST_RUN(2, [&] {
		// Waiting putters get -EPIPE; queued items still drain.
		ASSERT_EQ(0, weft_queue_put(q2.get(), P(7)));
		std::vector<weft_task *> ps;
		for (int i = 0; i < 3; i++)
			ps.push_back(go([&] {
				return weft_queue_put(q2.get(), P(8));
			}));
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q2.get(), PUTTERS) == 3;
		}));
		weft_queue_close(q2.get());
		for (auto p : ps)
			EXPECT_EQ(-EPIPE, weft_join(p));
		void *x;
		ASSERT_EQ(0, weft_queue_get(q2.get(), &x));
		EXPECT_EQ(7u, V(x));
		EXPECT_EQ(-EPIPE, weft_queue_get(q2.get(), &x));
	});
}

TEST(Queue, JoinWaitsForEveryTaskDone)
{
	QueuePtr q(weft_queue_new(4));
	WEFT_TEST_RUN(2, [&] {
		EXPECT_EQ(0, weft_queue_join(q.get())); // nothing outstanding
		ASSERT_EQ(0, weft_queue_put(q.get(), P(1)));
		ASSERT_EQ(0, weft_queue_put(q.get(), P(2)));
		std::atomic<bool> joined{ false };
		weft_task *j = go([&] {
			int r = weft_queue_join(q.get());
			joined = true;
			return r;
		});
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), JOINERS) == 1;
		}));
		void *x;
		ASSERT_EQ(0, weft_queue_get(q.get(), &x));
		ASSERT_EQ(0, weft_queue_get(q.get(), &x));
		weft_sleep(WEFT_MSEC(2));
		EXPECT_FALSE(joined) << "getting is not task_done";
		weft_queue_task_done(q.get());
		weft_sleep(WEFT_MSEC(2));
		EXPECT_FALSE(joined);
		std::thread([&] {
			weft_queue_task_done(q.get());
		}).join();
		EXPECT_EQ(0, weft_join(j));
	});
}

// RELIABILITY A7: task_done with nothing outstanding is reported, does not
// underflow, and a later join is not released early.
TEST(Queue, ExtraTaskDoneIsReportedAndIgnored)
{
	QueuePtr q(weft_queue_new(4));
	WEFT_TEST_RUN(2, [&] {
		void *x;
		ASSERT_EQ(0, weft_queue_put(q.get(), P(1)));
		ASSERT_EQ(0, weft_queue_get(q.get(), &x));
		weft_queue_task_done(q.get());
		testing::internal::CaptureStderr();
		weft_queue_task_done(q.get());
		std::string err = testing::internal::GetCapturedStderr();
		EXPECT_NE(std::string::npos, err.find("task_done")) << err;

		ASSERT_EQ(0, weft_queue_put(q.get(), P(2)));
		std::atomic<bool> joined{ false };
		weft_task *j = go([&] {
			int r = weft_queue_join(q.get());
			joined = true;
			return r;
		});
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), JOINERS) == 1;
		}));
		weft_sleep(WEFT_MSEC(2));
		EXPECT_FALSE(joined) << "released early: the count underflowed";
		ASSERT_EQ(0, weft_queue_get(q.get(), &x));
		weft_queue_task_done(q.get());
		EXPECT_EQ(0, weft_join(j));
	});
}

TEST(Queue, CancelledGetterTakesNothing)
{
	QueuePtr q(weft_queue_new(2));
	WEFT_TEST_RUN(2, [&] {
		weft_task *g = go([&] {
			void *y;
			return weft_queue_get(q.get(), &y);
		});
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), GETTERS) == 1;
		}));
		weft_cancel(g);
		EXPECT_EQ(-ECANCELED, weft_join(g));
		EXPECT_EQ(0u, weft__queue_nwaiters(q.get(), GETTERS));
		ASSERT_EQ(0, weft_queue_put(q.get(), P(5)));
		EXPECT_EQ(1u, weft_queue_len(q.get()))
			<< "item went to a dead getter";
	});
}

TEST(Queue, CancelledPutterDoesNotEnqueue)
{
	QueuePtr q(weft_queue_new(1));
	WEFT_TEST_RUN(2, [&] {
		ASSERT_EQ(0, weft_queue_put(q.get(), P(1)));
		weft_task *p = go([&] {
			return weft_queue_put(q.get(), P(2));
		});
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), PUTTERS) == 1;
		}));
		weft_cancel(p);
		EXPECT_EQ(-ECANCELED, weft_join(p));
		void *x;
		ASSERT_EQ(0, weft_queue_get(q.get(), &x));
		EXPECT_EQ(1u, V(x));
		EXPECT_EQ(-EAGAIN, weft_queue_try_get(q.get(), &x))
			<< "a cancelled put enqueued its item";
	});
}

// RELIABILITY C11, deterministic: the first getter's cancellation is
// pending (one worker: it has not run yet) when an item is handed to it.
// The hand-over fails and the item goes to the next getter.
TEST(Queue, ItemForCancelledGetterGoesToTheNext)
{
	QueuePtr q(weft_queue_new(1));
	WEFT_TEST_RUN(1, [&] {
		auto getter = [&] {
			void *y;
			int r = weft_queue_get(q.get(), &y);
			return r ? r : (int)V(y);
		};
		weft_task *a = go(getter);
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), GETTERS) == 1;
		}));
		weft_task *b = go(getter);
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), GETTERS) == 2;
		}));
		weft_cancel(a);
		ASSERT_EQ(0, weft_queue_put(q.get(), P(9)));
		EXPECT_EQ(-ECANCELED, weft_join(a));
		EXPECT_EQ(9, weft_join(b));
		EXPECT_EQ(0u, weft_queue_len(q.get()));

		// With only the cancelled getter, the item stays queued.
		weft_task *c = go(getter);
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), GETTERS) == 1;
		}));
		weft_cancel(c);
		ASSERT_EQ(0, weft_queue_put(q.get(), P(10)));
		EXPECT_EQ(-ECANCELED, weft_join(c));
		EXPECT_EQ(1u, weft_queue_len(q.get()));
	});
}

// Likewise for producers: the first waiting putter is cancelled when a
// slot frees; its item is not enqueued, the next putter's is.
TEST(Queue, SlotForCancelledPutterGoesToTheNext)
{
	QueuePtr q(weft_queue_new(1));
	WEFT_TEST_RUN(1, [&] {
		ASSERT_EQ(0, weft_queue_put(q.get(), P(1)));
		weft_task *a = go([&] {
			return weft_queue_put(q.get(), P(2));
		});
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), PUTTERS) == 1;
		}));
		weft_task *b = go([&] {
			return weft_queue_put(q.get(), P(3));
		});
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q.get(), PUTTERS) == 2;
		}));
		weft_cancel(a);
		void *x;
		ASSERT_EQ(0, weft_queue_try_get(q.get(), &x));
		EXPECT_EQ(1u, V(x));
		EXPECT_EQ(-ECANCELED, weft_join(a));
		EXPECT_EQ(0, weft_join(b));
		ASSERT_EQ(0, weft_queue_try_get(q.get(), &x));
		EXPECT_EQ(3u, V(x)) << "the cancelled putter's item got in";
		EXPECT_EQ(-EAGAIN, weft_queue_try_get(q.get(), &x));
	});
}

TEST(Queue, PendingCancellationFailsAtEntry)
{
	QueuePtr q(weft_queue_new(2));
	WEFT_TEST_RUN(2, [&] {
		ASSERT_EQ(0, weft_queue_put(q.get(), P(1)));
		weft_task *t = go([&] {
			weft_cancel(weft_self());
			void *y;
			int a = weft_queue_put(q.get(), P(2));
			int b = weft_queue_get(q.get(), &y);
			int c = weft_queue_join(q.get());
			return a == -ECANCELED && b == -ECANCELED &&
					       c == -ECANCELED ?
				       0 :
				       -1;
		});
		EXPECT_EQ(0, weft_join(t));
		EXPECT_EQ(1u, weft_queue_len(q.get()));
	});
}

// RELIABILITY C11: getters are cancelled at random while items are being
// handed to them; every item put is got exactly once or still queued:
// items in = items out + len.
TEST(Queue, ItemsConservedUnderRacingCancellation)
{
	QueuePtr q(weft_queue_new(2));
	const long cancels = (long)scaled(100000);
	const int ngetters = 6;
	const uintptr_t max_items = 1 << 23;
	std::vector<std::atomic<uint8_t>> seen(max_items);
	std::atomic<long> got{ 0 }, dup{ 0 };
	long put = 0;
	WEFT_TEST_RUN(2, [&] {
		auto getter = [&] {
			for (;;) {
				void *y;
				int r = weft_queue_get(q.get(), &y);
				if (r)
					return r == -ECANCELED || r == -EPIPE ?
						       0 :
						       r;
				if (seen[V(y)]++)
					dup++;
				got++;
			}
		};
		std::atomic<bool> stop{ false }, done{ false };
		weft_task *producer = go([&] {
			uintptr_t i = 0;
			int r = 0;
			while (!stop && i < max_items) {
				r = weft_queue_put(q.get(), P(i));
				if (r)
					break;
				i++;
				put = (long)i;
				if (i % 8 == 0)
					let_others_run();
			}
			done = true;
			return r;
		});
		std::vector<weft_task *> gs;
		for (int i = 0; i < ngetters; i++)
			gs.push_back(go(getter));
		std::mt19937 rng(99);
		for (long c = 0; c < cancels; c++) {
			int i = (int)(rng() % ngetters);
			weft_cancel(gs[i]);
			EXPECT_EQ(0, weft_join(gs[i]));
			gs[i] = go(getter);
			if (c % 8 == 0)
				let_others_run();
		}
		stop = true;
		for (auto g : gs) {
			weft_cancel(g);
			EXPECT_EQ(0, weft_join(g));
		}
		// The producer may wait on a full queue: make room until it
		// ends; what is left stays queued (counted by len).
		while (!done) {
			void *y;
			if (weft_queue_try_get(q.get(), &y) == 0) {
				if (seen[V(y)]++)
					dup++;
				got++;
			}
			weft_sleep(WEFT_USEC(50));
		}
		EXPECT_EQ(0, weft_join(producer));
	});
	EXPECT_EQ(0, dup.load()) << "an item was delivered twice";
	EXPECT_EQ(put, got.load() + (long)weft_queue_len(q.get()))
		<< "items in != items out + len";
	printf("put %ld, got %ld, left %zu\n", put, got.load(),
	       weft_queue_len(q.get()));
}

// RELIABILITY A12: freeing a queue tasks wait on is reported and refused.
TEST(Queue, FreeWithWaitersIsRefused)
{
	weft_queue *q = weft_queue_new(1);
	ASSERT_NE(nullptr, q);
	WEFT_TEST_RUN(2, [&] {
		weft_task *g = go([&] {
			void *y;
			return weft_queue_get(q, &y);
		});
		ASSERT_TRUE(wait_until([&] {
			return weft__queue_nwaiters(q, GETTERS) == 1;
		}));
		testing::internal::CaptureStderr();
		weft_queue_free(q);
		std::string err = testing::internal::GetCapturedStderr();
		EXPECT_NE(std::string::npos, err.find("not freed")) << err;
		EXPECT_EQ(0, weft_queue_try_put(q, P(3))); // still alive
		EXPECT_EQ(0, weft_join(g));
	});
	weft_queue_free(q);
}
