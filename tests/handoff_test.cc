// SPDX-License-Identifier: MIT
// tests/handoff_test.cc - the park's direct hand-off (runtime/worker.c,
// weft__task_switch_out()): a task that parks while its worker's LIFO slot
// holds a woken task switches straight to it, and that task publishes the
// parked one's wait (wait.c step 3) after the switch.
//
// What could go wrong, one test each: the hand-off never happens (the
// counter), a wake from another worker that lands while the parked task is
// not yet published (PREP: the publisher must queue it, exactly once), a
// cancellation or a deadline in that window, and a pinned or yielding task
// being run out of turn. Yields hand off too (the yielder is queued by the
// task switched to): their counter, their order, and steals racing them.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/stack.h"
#include "tests/harness.h"
#include "weft/io.h"
#include "weft/observe.h"
#include "weft/queue.h"
#include "weft/scope.h"

using weft_test::go;
using weft_test::scaled;
using weft_test::P;
using weft_test::QueuePtr;
using weft_test::V;

namespace
{

std::vector<QueuePtr> queues(unsigned n)
{
	std::vector<QueuePtr> qs;
	for (unsigned i = 0; i < n; i++) {
		qs.emplace_back(weft_queue_new(1));
		EXPECT_TRUE(qs.back());
	}
	return qs;
}

uint64_t handoffs()
{
	weft_stats s{};
	weft_stats_get(nullptr, &s);
	return s.handoffs;
}

// One pair on one worker: each message wakes the peer into the LIFO slot
// and parks, so nearly every park is a hand-off (the LIFO streak cap sends
// every 4th through the scheduler).
TEST(Handoff, MessagePassingSwitchesStraightToThePeer)
{
	const uint64_t n = scaled(20000);
	uint64_t before = 0, after = 0;

	WEFT_TEST_RUN(1, [&] {
		QueuePtr a(weft_queue_new(1)), b(weft_queue_new(1));
		ASSERT_TRUE(a && b);
		before = handoffs();
		weft_task *pong = go([&] {
			for (uint64_t i = 0; i < n; i++) {
				void *v;
				int r = weft_queue_get(a.get(), &v);
				if (r)
					return r;
				r = weft_queue_put(b.get(), v);
				if (r)
					return r;
			}
			return 0;
		});
		weft_task *ping = go([&] {
			for (uint64_t i = 0; i < n; i++) {
				void *v;
				int r = weft_queue_put(a.get(), P(i));
				if (r)
					return r;
				r = weft_queue_get(b.get(), &v);
				if (r)
					return r;
				if (V(v) != i)
					return -EBADMSG;
			}
			return 0;
		});
		ASSERT_TRUE(pong && ping);
		EXPECT_EQ(0, weft_join(ping));
		EXPECT_EQ(0, weft_join(pong));
		after = handoffs();
	});
	// 2n parks, at most one in four through the scheduler.
	EXPECT_GE(after - before, n) << "parks did not hand off";
}

// Consumers park on their own queues while producers on both workers put
// into random queues: a put from the other worker often claims a consumer
// whose hand-off is still in flight (its wait PREP, not yet published), so
// the task it switched to must queue it. Every item must arrive exactly
// once (count and sum per queue), and a debug build aborts on a double run
// (RELIABILITY C10).
TEST(Handoff, WakesRacingTheHandoffLoseNothing)
{
	const unsigned nq = 16, nprod = 16;
	const uint64_t per_prod = scaled(40000);
	struct Cons {
		QueuePtr q;
		std::atomic<uint64_t> got{ 0 }, sum{ 0 };
	};
	std::vector<std::unique_ptr<Cons>> cons;
	std::atomic<uint64_t> sent_sum[16];
	std::atomic<uint64_t> sent_n[16];
	uint64_t used = 0;

	for (unsigned i = 0; i < nq; i++) {
		cons.emplace_back(new Cons);
		cons.back()->q.reset(weft_queue_new(1));
		ASSERT_TRUE(cons.back()->q);
		sent_sum[i] = 0;
		sent_n[i] = 0;
	}
	WEFT_TEST_RUN(2, [&] {
		uint64_t before = handoffs();
		std::vector<weft_task *> ct, pt;
		for (unsigned i = 0; i < nq; i++) {
			Cons *c = cons[i].get();
			ct.push_back(go([c] {
				void *v;
				int r;
				while ((r = weft_queue_get(c->q.get(), &v)) ==
				       0) {
					c->got.fetch_add(1);
					c->sum.fetch_add(V(v));
				}
				return r == -EPIPE ? 0 : r;
			}));
			ASSERT_NE(nullptr, ct.back());
		}
		for (unsigned p = 0; p < nprod; p++) {
			pt.push_back(go([&, p] {
				std::mt19937_64 rng(p * 7919 + 1);
				for (uint64_t k = 0; k < per_prod; k++) {
					unsigned i = rng() % nq;
					uintptr_t v = (rng() & 0xffff) + 1;
					int r = weft_queue_put(cons[i]->q.get(),
							       P(v));
					if (r)
						return r;
					sent_sum[i].fetch_add(v);
					sent_n[i].fetch_add(1);
				}
				return 0;
			}));
			ASSERT_NE(nullptr, pt.back());
		}
		for (weft_task *t : pt)
			EXPECT_EQ(0, weft_join(t));
		for (auto &c : cons)
			weft_queue_close(c->q.get());
		for (weft_task *t : ct)
			EXPECT_EQ(0, weft_join(t));
		used = handoffs() - before;
	});
	for (unsigned i = 0; i < nq; i++) {
		EXPECT_EQ(sent_n[i].load(), cons[i]->got.load()) << "queue " << i;
		EXPECT_EQ(sent_sum[i].load(), cons[i]->sum.load())
			<< "queue " << i;
	}
	EXPECT_GT(used, 0u) << "the race was never set up";
}

// Ping-pong pairs on two workers, cancelled at random moments by a foreign
// thread: a cancellation that lands while a parked task is handed off (PREP
// or just ARMED) must still end its wait; every task returns -ECANCELED
// (or 0 if it finished first) and nothing hangs.
TEST(Handoff, CancelDuringHandoffEndsTheWait)
{
	const unsigned npairs = 32;
	const unsigned rounds = (unsigned)scaled(10);

	for (unsigned round = 0; round < rounds; round++) {
		std::vector<weft_task *> tasks(2 * npairs);
		std::atomic<bool> spawned{ false };
		std::atomic<uint64_t> msgs{ 0 };
		std::thread canceller;

		WEFT_TEST_RUN(2, [&] {
			std::vector<QueuePtr> qs = queues(2 * npairs);
			for (unsigned i = 0; i < npairs; i++) {
				weft_queue *a = qs[2 * i].get();
				weft_queue *b = qs[2 * i + 1].get();
				tasks[2 * i] = go([a, b, &msgs] {
					void *v;
					int r;
					for (;;) {
						if ((r = weft_queue_get(a, &v)))
							return r;
						msgs.fetch_add(1, std::memory_order_relaxed);
						if ((r = weft_queue_put(b, v)))
							return r;
					}
				});
				tasks[2 * i + 1] = go([a, b, &msgs] {
					void *v;
					int r;
					for (uintptr_t k = 1;; k++) {
						if ((r = weft_queue_put(a, P(k))))
							return r;
						if ((r = weft_queue_get(b, &v)))
							return r;
						msgs.fetch_add(1, std::memory_order_relaxed);
						if (V(v) != k)
							return -EBADMSG;
					}
				});
				ASSERT_TRUE(tasks[2 * i] && tasks[2 * i + 1]);
			}
			spawned.store(true);
			canceller = std::thread([&, round] {
				std::mt19937 rng(round + 1);
				std::vector<unsigned> order(tasks.size());
				for (unsigned i = 0; i < order.size(); i++)
					order[i] = i;
				std::shuffle(order.begin(), order.end(), rng);
				// let the pairs get going, then cancel one by one
				while (msgs.load() < 2000)
					std::this_thread::yield();
				for (unsigned i : order) {
					EXPECT_EQ(1, weft_cancel(tasks[i]));
					for (unsigned s = rng() % 200; s; s--)
						std::this_thread::yield();
				}
			});
			for (weft_task *t : tasks) {
				int r = weft_join(t);
				EXPECT_TRUE(r == -ECANCELED) << r;
			}
			canceller.join();
		});
	}
}

// A deadline on every get, short enough to fire while pairs are running:
// the timer (armed by the publisher, on the worker the hand-off happened on)
// and the peer's put race for the same wait. Each get returns the item or
// -ETIMEDOUT, never both, never neither: the pinger counts what it got.
TEST(Handoff, DeadlinesRacingHandoffs)
{
	const unsigned npairs = 16;
	const uint64_t n = scaled(4000);
	std::atomic<uint64_t> timeouts{ 0 }, bad{ 0 };

	WEFT_TEST_RUN(2, [&] {
		std::vector<QueuePtr> qs = queues(2 * npairs);
		std::vector<weft_task *> tasks;
		for (unsigned i = 0; i < npairs; i++) {
			weft_queue *a = qs[2 * i].get();
			weft_queue *b = qs[2 * i + 1].get();
			// echo: whatever comes on a goes back on b, until closed
			tasks.push_back(go([a, b] {
				void *v;
				while (weft_queue_get(a, &v) == 0)
					if (weft_queue_put(b, v))
						return -EIO;
				weft_queue_close(b);
				return 0;
			}));
			tasks.push_back(go([a, b, n, &timeouts, &bad] {
				uint64_t expect = 1, sent = 0;
				while (sent < n) {
					if (weft_queue_put(a, P(++sent)))
						return -EIO;
					for (;;) {
						weft_scope s;
						void *v;
						weft_scope_enter(&s, WEFT_USEC(5));
						int r = weft_queue_get(b, &v);
						int e = weft_scope_exit(&s);
						if (r == 0) {
							// replies come in order, each once
							if (V(v) != expect)
								bad.fetch_add(1);
							expect++;
							break;
						}
						if (r != -ETIMEDOUT || e != -ETIMEDOUT)
							return r ? r : -EIO;
						timeouts.fetch_add(1);
					}
				}
				weft_queue_close(a);
				void *v;
				// nothing extra may be left behind
				if (weft_queue_get(b, &v) != -EPIPE)
					bad.fetch_add(1);
				return 0;
			}));
		}
		for (weft_task *t : tasks)
			EXPECT_EQ(0, weft_join(t));
	});
	EXPECT_EQ(0u, bad.load());
	fprintf(stderr, "deadlines that fired: %llu\n",
		(unsigned long long)timeouts.load());
}

// Yields hand off too: two tasks yielding on one worker switch straight to
// each other; only the scheduler's periodic turns (every 61st tick, for
// the shared queue and the ring) go through it.
TEST(Handoff, YieldSwitchesStraightToTheNextTask)
{
	const uint64_t n = scaled(20000);
	uint64_t before = 0, after = 0;

	WEFT_TEST_RUN(1, [&] {
		before = handoffs();
		std::vector<weft_task *> ts;
		for (int k = 0; k < 2; k++)
			ts.push_back(go([n] {
				for (uint64_t i = 0; i < n; i++)
					if (int r = weft_yield())
						return r;
				return 0;
			}));
		for (weft_task *t : ts)
			EXPECT_EQ(0, weft_join(t));
		after = handoffs();
	});
	// 2n yields, one in 61 (and the last few) through the scheduler.
	EXPECT_GE(after - before, 2 * n * 9 / 10) << "yields did not hand off";
}

// A yield hand-off keeps asyncio's order: on one worker, tasks that yield
// in a loop take strict turns (the yielder goes behind the others), and a
// task woken meanwhile runs before the yielder comes back. Checked with
// the hand-off on and off (WEFT_HANDOFF=0 is read at runtime creation).
TEST(Handoff, YieldersTakeStrictTurns)
{
	for (const char *handoff : { "1", "0" }) {
		SCOPED_TRACE(handoff);
		setenv("WEFT_HANDOFF", handoff, 1);
		const int nt = 3, rounds = (int)scaled(3000);
		std::vector<int> order;
		order.reserve((size_t)(nt * rounds + 8));
		WEFT_TEST_RUN(1, [&] {
			std::vector<weft_task *> ts;
			for (int k = 0; k < nt; k++)
				ts.push_back(go([k, rounds, &order] {
					for (int i = 0; i < rounds; i++) {
						order.push_back(k);
						if (int r = weft_yield())
							return r;
					}
					return 0;
				}));
			for (weft_task *t : ts)
				EXPECT_EQ(0, weft_join(t));
		});
		unsetenv("WEFT_HANDOFF");
		ASSERT_EQ((size_t)(nt * rounds), order.size());
		size_t bad = 0;
		for (size_t i = nt; i < order.size(); i++)
			bad += order[i] != order[i - nt];
		EXPECT_EQ(0u, bad) << "yielders ran out of turn";
	}

	// A task woken while others yield runs before the yielder's next turn.
	WEFT_TEST_RUN(1, [&] {
		QueuePtr q(weft_queue_new(1));
		ASSERT_TRUE(q);
		std::atomic<int> seen_after{ -1 };
		std::atomic<int> turns{ 0 };
		weft_task *waiter = go([&] {
			void *v;
			int r = weft_queue_get(q.get(), &v);
			seen_after = turns.load();
			return r;
		});
		weft_task *other = go([&] {
			for (int i = 0; i < 50; i++)
				if (int r = weft_yield())
					return r;
			return 0;
		});
		weft_task *yielder = go([&] {
			weft_yield(); // the waiter parks, the other runs
			if (int r = weft_queue_put(q.get(), P(1)))
				return r;
			turns++; // counted before the yield...
			weft_yield(); // ... the waiter runs here
			turns++;
			return 0;
		});
		EXPECT_EQ(0, weft_join(yielder));
		EXPECT_EQ(0, weft_join(waiter));
		EXPECT_EQ(0, weft_join(other));
		EXPECT_EQ(1, seen_after.load())
			<< "the woken task ran after the yielder came back";
	});
}

// Yield hand-offs racing steals: many tasks yield on 2 workers while the
// idle one steals from the busy one (the hand-off pops the deque's top,
// which thieves take from too). Every task finishes its yields exactly
// once; a debug build aborts if a task ever runs on two workers at once
// (RELIABILITY C10), which a yielder queued before its switch would do.
TEST(Handoff, YieldHandoffsRacingSteals)
{
	const int nt = 64;
	const uint64_t n = scaled(3000);
	std::atomic<uint64_t> yields{ 0 }, children{ 0 };

	WEFT_TEST_RUN(2, [&] {
		for (int round = 0; round < 4; round++) {
#ifdef WEFT_TEST_HOOKS
			// Rounds 2 and 3: every unstarted top is stashed.
			weft_test_yield_skip_peek(round >= 2);
#endif
			std::vector<weft_task *> ts;
			for (int k = 0; k < nt; k++)
				ts.push_back(go([n, &yields, &children] {
					for (uint64_t i = 0; i < n; i++) {
						if (int r = weft_yield())
							return r;
						yields.fetch_add(
							1, std::memory_order_relaxed);
						// Unstarted tasks among the started
						// ones: the top a yield looks at
						// may be taken, and the next one
						// unstarted (the stash).
						if (i % 32 == 0) {
							weft_task *c = go([&children] {
								children.fetch_add(1);
								return 0;
							});
							if (!c)
								return -ENOMEM;
							weft_detach(c);
						}
					}
					return 0;
				}));
			for (weft_task *t : ts)
				EXPECT_EQ(0, weft_join(t));
		}
		// detached children finish before the body's leak check
		while (children.load() < 4 * nt * ((n + 31) / 32))
			weft_yield();
#ifdef WEFT_TEST_HOOKS
		weft_test_yield_skip_peek(0);
#endif
	});
	EXPECT_EQ(4 * nt * n, yields.load());
	EXPECT_EQ(4 * nt * ((n + 31) / 32), children.load());
}

#ifdef WEFT_TEST_HOOKS
// Run @body as a task on one worker with the hand-off's look at the top
// skipped (weft_test_yield_skip_peek), so a yield pops whatever is on top
// and, if it has not started, stashes it; check the stash path was taken
// once. Return the order @body's tasks recorded.
std::vector<int>
run_with_forced_stash(const std::function<int(std::vector<int> &)> &body)
{
	std::vector<int> order;
	WEFT_TEST_RUN(1, [&] {
		unsigned long before = weft_test_yield_stashes();
		weft_test_yield_skip_peek(1);
		weft_task *y = go([&] {
			return body(order);
		});
		EXPECT_EQ(0, weft_join(y));
		weft_test_yield_skip_peek(0);
		EXPECT_EQ(before + 1, weft_test_yield_stashes())
			<< "the yield did not go down the stash path";
	});
	return order;
}
#endif

// The stash: a yield's hand-off that pops an unstarted task (a thief took
// the started one it looked at; forced here by the test hook, which skips
// the look) cannot switch to it; the scheduler runs it first, so the order
// is the one a yield always gives: the unstarted child before the yielder.
TEST(Handoff, YieldPoppingAnUnstartedTaskStashesItForTheScheduler)
{
#ifndef WEFT_TEST_HOOKS
	GTEST_SKIP() << "needs the WEFT_TEST_HOOKS build";
#else
	std::vector<int> order = run_with_forced_stash([](std::vector<int> &o) {
		weft_task *c = go([&o] {
			o.push_back(1);
			return 0;
		});
		if (!c)
			return -ENOMEM;
		int r = weft_yield(); // the child is the deque's top
		o.push_back(2);
		int j = weft_join(c);
		return r ? r : j;
	});
	EXPECT_EQ((std::vector<int>{ 1, 2 }), order);
#endif
}

// A stash that is a tombstone (an unstarted child its joiner then ran
// inline: its entry stays in the deque, claimed) runs nothing: the yield
// must still let the next task in the deque run before the yielder comes
// back, as the scheduler's own pick after a yield (which skips tombstones)
// does. Here the yielder is the inline child itself: c, spawned first, is
// the deque's top and s behind it when its parent joins it; c yields, and
// the hook makes the hand-off pop c's own tombstone.
TEST(Handoff, YieldStashingATombstoneStillRunsTheNextTaskFirst)
{
#ifndef WEFT_TEST_HOOKS
	GTEST_SKIP() << "needs the WEFT_TEST_HOOKS build";
#else
	std::vector<int> order = run_with_forced_stash([](std::vector<int> &o) {
		weft_task *c = go([&o] {
			int r = weft_yield(); // pops c's tombstone
			o.push_back(2);
			return r;
		});
		weft_task *s = go([&o] {
			o.push_back(1);
			return 0;
		});
		if (!c || !s)
			return -ENOMEM;
		int jc = weft_join(c); // c is not the bottom: inline
		int js = weft_join(s);
		return jc ? jc : js;
	});
	EXPECT_EQ((std::vector<int>{ 1, 2 }), order)
		<< "the yielder came back before the task behind the "
		   "tombstone ran";
#endif
}

// A chain of yield hand-offs never passes through the scheduler on its
// own, so the hand-off must step aside for what only the scheduler does:
// timers every 4th tick while one is armed, and every 61st tick the
// injection queue and the reactor's completions. On one worker, 3 tasks
// yield in a loop (their iterations are the clock here, not time) while a
// sleeper sleeps 10 times, a foreign thread submits a task, and a task
// polls a pipe the foreign thread then writes (those two once the sleeper
// is done: then only the 61-tick turns stop the chain). Each must run
// within a few dozen iterations of becoming due: a sleeper within 16 of a
// yielder seeing its deadline pass, the other two within 130 (two 61-tick
// turns) of the submit or the write returning. Without the hand-off's
// deferral to those turns the timers wait for the 61st tick and the other
// two for the yielders to stop.
TEST(Handoff, YieldChainLetsTimersInjectedTasksAndIoRun)
{
	constexpr int nyield = 3, nsleep = 10;
	struct State {
		std::atomic<int64_t> ticks{ 0 };
		std::atomic<bool> stop{ false };
		// timers: the round's deadline, when a yielder saw it pass and
		// when the sleeper woke (in ticks); the worst gap
		std::atomic<uint64_t> deadline{ UINT64_MAX };
		std::atomic<int64_t> passed_at{ -1 }, timer_worst{ 0 };
		std::atomic<bool> slept{ false };
		// the injected task and the poller: when they became due and
		// when they ran (-1: not yet)
		std::atomic<int64_t> submitted_at{ -1 }, injected_at{ -1 };
		std::atomic<bool> polling{ false };
		std::atomic<int64_t> written_at{ -1 }, polled_at{ -1 };
		int pipe_fd[2] = { -1, -1 };
	} st;
	ASSERT_EQ(0, pipe(st.pipe_fd));

	WEFT_TEST_RUN(1, [&] {
		weft_runtime *rt = weft_runtime_current();
		std::vector<weft_task *> ts;
		for (int k = 0; k < nyield; k++)
			ts.push_back(go([&st] {
				uint64_t guard = weft_now() + WEFT_SEC(5);
				while (!st.stop.load()) {
					if (int r = weft_yield())
						return r;
					int64_t now_tick = ++st.ticks;
					uint64_t now = weft_now();
					if (now >= st.deadline.load() &&
					    st.passed_at.load() < 0)
						st.passed_at = now_tick;
					if (now > guard)
						break; // the assertions below fail
				}
				return 0;
			}));
		weft_task *sleeper = go([&st] {
			int r = 0;
			for (int i = 0; i < nsleep && !r; i++) {
				st.passed_at = -1;
				uint64_t d = weft_now() + WEFT_USEC(300);
				st.deadline = d;
				if ((r = weft_sleep_until(d)))
					break;
				int64_t gap =
					st.ticks.load() - st.passed_at.load();
				st.deadline = UINT64_MAX;
				if (st.passed_at.load() >= 0 &&
				    gap > st.timer_worst.load())
					st.timer_worst = gap;
			}
			st.slept = true; // the foreign thread goes on
			return r;
		});
		weft_task *poller = go([&st] {
			st.polling = true;
			int r = weft_poll(st.pipe_fd[0], POLLIN);
			st.polled_at = st.ticks.load();
			return r > 0 ? 0 : r;
		});
		std::thread foreign([&st, rt] {
			auto wait_ticks = [&st](int64_t n) {
				int64_t until = st.ticks.load() + n;
				while (st.ticks.load() < until &&
				       !st.stop.load())
					std::this_thread::yield();
			};
			// no timer armed from here on: only the 61-tick turns
			// take the worker through its scheduler
			while (!st.slept.load())
				std::this_thread::yield();
			wait_ticks(100);
			EXPECT_EQ(0,
				  weft_submit(
					  rt,
					  [](void *p) -> int {
						  auto *s =
							  static_cast<State *>(
								  p);
						  s->injected_at =
							  s->ticks.load();
						  return 0;
					  },
					  &st));
			st.submitted_at = st.ticks.load();
			while (!st.polling.load())
				std::this_thread::yield();
			// two 61-tick turns: the poll is submitted to the ring
			wait_ticks(200);
			EXPECT_EQ(1, write(st.pipe_fd[1], "x", 1));
			st.written_at = st.ticks.load();
		});
		EXPECT_EQ(0, weft_join(sleeper));
		EXPECT_EQ(0, weft_join(poller));
		st.stop = true;
		foreign.join();
		for (weft_task *t : ts)
			EXPECT_EQ(0, weft_join(t));
		// detached: it must end before the body's leak check
		EXPECT_TRUE(weft_test::wait_until([&st] {
			return st.injected_at.load() >= 0;
		}));
	});
	close(st.pipe_fd[0]);
	close(st.pipe_fd[1]);
	fprintf(stderr,
		"yields: %lld; worst timer gap %lld, submit %lld, io %lld\n",
		(long long)st.ticks.load(), (long long)st.timer_worst.load(),
		(long long)(st.injected_at.load() - st.submitted_at.load()),
		(long long)(st.polled_at.load() - st.written_at.load()));
	EXPECT_LE(st.timer_worst.load(), 16)
		<< "a sleeper waited that many yields past its deadline";
	ASSERT_GE(st.injected_at.load(), 0) << "the submitted task never ran";
	EXPECT_LE(st.injected_at.load() - st.submitted_at.load(), 130)
		<< "the submitted task waited that many yields";
	ASSERT_GE(st.polled_at.load(), 0);
	EXPECT_LE(st.polled_at.load() - st.written_at.load(), 130)
		<< "the poll's completion waited that many yields";
}

// The overflow reporter names the task whose guard page a fault hits
// (w->oi). A hand-off switches task to task: until the switch is done the
// thread still runs on the task handing over, whose frames (the swap's
// register saves included) may be the ones that reach its guard, so the
// record must still name that task then. Probed at every depth near the
// guard: a task leaves N bytes of stack above its guard and yields while
// the task it woke waits in the LIFO slot (a hand-off); each probe runs in
// a process of its own and must either finish or die with the report
// naming the yielder. Naming the other task too early made one depth (168
// bytes, release build) a bare SIGSEGV, no report. The -O0 debug build
// cannot show it: its picks reach deeper than the swap, and fault first.
uintptr_t current_stack_lo()
{
	const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = (uintptr_t)__builtin_frame_address(0) & ~(pg - 1);
	int p[2];
	char c;

	if (pipe(p))
		return 0;
	// Down from here, the first page the kernel cannot read: the guard.
	for (int i = 0;; i++, a -= pg) {
		if (i == 4096) {
			a = 0;
			break;
		}
		if (write(p[1], (void *)(a - pg), 1) < 0) {
			if (errno != EFAULT)
				a = 0;
			break;
		}
		if (read(p[0], &c, 1) != 1) {
			a = 0;
			break;
		}
	}
	close(p[0]);
	close(p[1]);
	return a;
}

weft_event probe_ev;

__attribute__((noinline)) int yield_not_inlined()
{
	int r = weft_yield();
	__asm__ __volatile__("" ::: "memory"); // not a tail call
	return r;
}

__attribute__((noinline)) int yield_with_stack_down_to(uintptr_t target)
{
	uintptr_t here = (uintptr_t)__builtin_frame_address(0);
	volatile char *pad = (volatile char *)alloca(here - target);
	int r = yield_not_inlined();
	pad[here - target - 1] = 0; // keeps the pad
	return r;
}

size_t probe_room;

[[noreturn]] void run_probe()
{
	weft_config cfg{};
	cfg.workers = 1;
	if (weft_event_init(&probe_ev))
		_exit(6);
	int r = weft_run(
		[](void *) -> int {
			weft_task *b = weft_spawn_named(
				"other",
				[](void *) -> int {
					return weft_event_wait(&probe_ev);
				},
				nullptr);
			weft_task *a = weft_spawn_named(
				"prober",
				[](void *) -> int {
					weft_yield(); // "other" starts and waits
					uintptr_t lo = current_stack_lo();
					if (!lo)
						return -1;
					// "other" to the LIFO slot, the hand-off's
					// shallowest pick (no deque call below it);
					// woken up here, where the stack is deep
					// enough for the wake's own calls
					weft_event_set(&probe_ev);
					return yield_with_stack_down_to(
						lo + probe_room);
				},
				nullptr);
			if (!a || !b)
				return -1;
			int ra = weft_join(a);
			int rb = weft_join(b);
			return ra ? ra : rb;
		},
		nullptr, &cfg);
	_exit(r ? 3 : 0);
}

// One probe in a process of its own: 0 if it finished, 1 if it died with
// the report naming the yielder, -1 otherwise (printed).
int probe_at(size_t room)
{
	int errp[2];
	if (pipe(errp))
		_exit(4);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(errp[1], 2);
		close(errp[0]);
		probe_room = room;
		run_probe();
	}
	close(errp[1]);
	std::string out;
	char buf[512];
	ssize_t n;
	while ((n = read(errp[0], buf, sizeof(buf))) > 0)
		out.append(buf, (size_t)n);
	close(errp[0]);
	int st = 0;
	if (pid < 0 || waitpid(pid, &st, 0) != pid)
		_exit(5);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT &&
	    out.find("stack overflow in task 'prober'") != std::string::npos)
		return 1;
	fprintf(stderr,
		"%zu bytes left: status %#x, no report naming the yielder; "
		"stderr: %s\n",
		room, st, out.c_str());
	return -1;
}

// In a death test's process (single-threaded: forks are safe): the least
// room (in steps of 256 bytes) that lets the yield finish, then every
// 8 bytes below it, where the yield's deepest frames reach the guard.
[[noreturn]] void probe_every_depth()
{
	struct rlimit no_core = { 0, 0 };
	size_t enough = 0;
	int r;

	setrlimit(RLIMIT_CORE, &no_core);
	while ((r = probe_at(enough)) == 1 && enough < 65536)
		enough += 256;
	if (r != 0) {
		fprintf(stderr, "no probe finished (last: %d)\n", r);
		_exit(1);
	}
	for (size_t room = enough >= 1024 ? enough - 1024 : 0; room < enough;
	     room += 8)
		if (probe_at(room) < 0)
			_exit(1);
	_exit(0);
}

TEST(HandoffDeathTest, OverflowDuringAHandoffNamesTheTaskThatOverflowed)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV and reports "
				"overflows itself";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	EXPECT_EXIT(probe_every_depth(), testing::ExitedWithCode(0), "");
}

} // namespace
