// SPDX-License-Identifier: MIT
//
// tests/offload_test.cc - weft_offload(): status, exactly-once, the pool's
// limits and idle exit, cancellation of the caller, -EPERM, signal masks,
// shutdown waiting for calls in flight.
#include <gtest/gtest.h>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/harness.h"
#include "tests/offload_support.h"

using weft_test::count_of;
using weft_test::run_cfg;
using weft_test::scaled;
using weft_test::spawn_lambda;
using weft_test::StderrCapture;

namespace
{

// Wait (in a task) until pred() holds; fail instead of hanging.
template <class P> bool task_wait_until(P pred, uint64_t limit_ms = 10000)
{
	uint64_t end = weft_now() + WEFT_MSEC(limit_ms);
	while (!pred()) {
		if (weft_now() > end)
			return false;
		weft_sleep(WEFT_MSEC(1));
	}
	return true;
}

// Same from a plain thread.
template <class P> bool thread_wait_until(P pred, uint64_t limit_ms = 10000)
{
	uint64_t end = weft_now() + WEFT_MSEC(limit_ms);
	while (!pred()) {
		if (weft_now() > end)
			return false;
		usleep(1000);
	}
	return true;
}

struct Gate {
	std::atomic<int> entered{ 0 };
	std::atomic<int> open{ 0 };
};

int gate_fn(void *p)
{
	Gate *g = static_cast<Gate *>(p);
	g->entered.fetch_add(1);
	while (!g->open.load())
		usleep(200);
	return 7;
}

weft_stats stats()
{
	weft_stats s;
	weft_stats_get(nullptr, &s);
	return s;
}

} // namespace

TEST(Offload, ReturnsFnStatusAndResult)
{
	WEFT_TEST_RUN(2, [] {
		struct Arg {
			int in, out;
		} a{ 20, 0 };
		int r = weft_offload(
			[](void *p) {
				Arg *x = static_cast<Arg *>(p);
				x->out = x->in + 1;
				return -42;
			},
			&a);
		EXPECT_EQ(-42, r);
		EXPECT_EQ(21, a.out);
		EXPECT_EQ(0, weft_offload([](void *) { return 0; }, nullptr));
		EXPECT_EQ(-EINVAL, weft_offload(nullptr, nullptr));
	});
}

TEST(Offload, EpermFromPlainThread)
{
	EXPECT_EQ(-EPERM, weft_offload([](void *) { return 0; }, nullptr));
	std::thread th([] {
		EXPECT_EQ(-EPERM,
			  weft_offload([](void *) { return 0; }, nullptr));
	});
	th.join();
}

// Pool threads are not tasks: suspending calls give -EPERM there, and the
// runtime is still known (API.md: weft_runtime_current from an offload fn).
TEST(Offload, FnIsNotATask)
{
	WEFT_TEST_RUN(2, [] {
		struct R {
			weft_runtime *rt;
			int sleep, yield, offload, checkpoint, free_busy;
			bool self_null;
			weft_runtime *seen;
		} r{ weft_runtime_current(), 0, 0, 0, 0, 0, false, nullptr };
		ASSERT_EQ(0, weft_offload(
				     [](void *p) {
					     R *x = static_cast<R *>(p);
					     x->sleep = weft_sleep(1000);
					     x->yield = weft_yield();
					     x->checkpoint = weft_checkpoint();
					     x->offload = weft_offload(
						     [](void *) { return 0; },
						     nullptr);
					     x->self_null = weft_self() == nullptr;
					     x->seen = weft_runtime_current();
					     x->free_busy = weft_runtime_free(x->rt);
					     return 0;
				     },
				     &r));
		EXPECT_EQ(-EPERM, r.sleep);
		EXPECT_EQ(-EPERM, r.yield);
		EXPECT_EQ(-EPERM, r.checkpoint);
		EXPECT_EQ(-EPERM, r.offload);
		EXPECT_TRUE(r.self_null);
		EXPECT_EQ(r.rt, r.seen);
		EXPECT_EQ(-EBUSY, r.free_busy);
	});
}

// 10,000 calls from 100 tasks: each fn runs exactly once, each caller gets
// its own result back.
TEST(Offload, ManyCallersEveryCallExactlyOnce)
{
	const unsigned ntasks = 100;
	const unsigned per = (unsigned)scaled(100);
	std::vector<std::atomic<int>> runs(ntasks * per);
	std::atomic<long> bad{ 0 };

	WEFT_TEST_RUN(2, [&] {
		uint64_t calls0 = stats().offload_calls;
		std::vector<weft_task *> ts;
		for (unsigned i = 0; i < ntasks; i++) {
			ts.push_back(spawn_lambda("caller", [&, i] {
				for (unsigned j = 0; j < per; j++) {
					struct C {
						std::atomic<int> *slot;
						unsigned v, out;
					} c{ &runs[i * per + j], i * per + j,
					     0 };
					int r = weft_offload(
						[](void *p) {
							C *x = static_cast<C *>(p);
							x->slot->fetch_add(1);
							x->out = x->v * 3;
							return 0;
						},
						&c);
					if (r != 0 || c.out != c.v * 3)
						bad.fetch_add(1);
				}
				return 0;
			}));
			ASSERT_NE(nullptr, ts.back());
		}
		for (weft_task *t : ts)
			EXPECT_EQ(0, weft_join(t));
		EXPECT_EQ(calls0 + ntasks * per, stats().offload_calls);
	});
	EXPECT_EQ(0, bad.load());
	for (auto &r : runs)
		ASSERT_EQ(1, r.load());
}

// offload_max bounds the threads alive (weft_stats) and the calls running
// at once; the excess waits in FIFO order.
TEST(Offload, PoolNeverExceedsOffloadMax)
{
	weft_config cfg{};
	cfg.workers = 2;
	cfg.offload_max = 3;
	std::atomic<int> running{ 0 }, peak{ 0 };
	std::atomic<uint64_t> peak_threads{ 0 };
	std::atomic<bool> done{ false };

	ASSERT_EQ(0, run_cfg(cfg, [&] {
		weft_task *sampler = spawn_lambda("sampler", [&] {
			while (!done.load()) {
				uint64_t n = stats().offload_threads;
				if (n > peak_threads.load())
					peak_threads.store(n);
				weft_sleep(WEFT_USEC(500));
			}
			return 0;
		});
		std::vector<weft_task *> ts;
		for (int i = 0; i < 20; i++)
			ts.push_back(spawn_lambda("sleepy", [&] {
				struct P {
					std::atomic<int> *running, *peak;
				} p{ &running, &peak };
				return weft_offload(
					[](void *arg) {
						P *x = static_cast<P *>(arg);
						int now = x->running->fetch_add(1) + 1;
						int pk = x->peak->load();
						while (now > pk &&
						       !x->peak->compare_exchange_weak(
							       pk, now))
							;
						usleep(10000);
						x->running->fetch_sub(1);
						return 0;
					},
					&p);
			}));
		for (weft_task *t : ts)
			EXPECT_EQ(0, weft_join(t));
		done.store(true);
		EXPECT_EQ(0, weft_join(sampler));
		EXPECT_LE(stats().offload_threads, 3u);
	}));
	EXPECT_EQ(3, peak.load());
	EXPECT_LE(peak_threads.load(), 3u);
	EXPECT_GE(peak_threads.load(), 1u);
}

// Requests beyond offload_max run in the order they were made.
TEST(Offload, QueuedRequestsRunFifo)
{
	weft_config cfg{};
	cfg.workers = 2;
	cfg.offload_max = 1;
	Gate g;
	std::vector<int> order;
	std::mutex mu;

	ASSERT_EQ(0, run_cfg(cfg, [&] {
		weft_task *blocker = spawn_lambda("blocker", [&] {
			return weft_offload(gate_fn, &g) == 7 ? 0 : -1;
		});
		ASSERT_TRUE(task_wait_until([&] { return g.entered == 1; }));
		std::vector<weft_task *> ts;
		for (int i = 0; i < 5; i++) {
			uint64_t before = stats().offload_calls;
			ts.push_back(spawn_lambda("fifo", [&, i] {
				struct A {
					std::vector<int> *o;
					std::mutex *m;
					int i;
				} a{ &order, &mu, i };
				return weft_offload(
					[](void *p) {
						A *x = static_cast<A *>(p);
						std::lock_guard<std::mutex> l(*x->m);
						x->o->push_back(x->i);
						return 0;
					},
					&a);
			}));
			// Next caller only once this one has queued.
			ASSERT_TRUE(task_wait_until([&] {
				return stats().offload_calls == before + 1;
			}));
		}
		g.open = 1;
		EXPECT_EQ(0, weft_join(blocker));
		for (weft_task *t : ts)
			EXPECT_EQ(0, weft_join(t));
	}));
	EXPECT_EQ((std::vector<int>{ 0, 1, 2, 3, 4 }), order);
}

// Idle threads exit (test hook: 30 ms), and a request arriving as threads
// time out is never lost (pool thread exit vs new request).
TEST(Offload, IdleThreadsExitAndExitNeverLosesARequest)
{
#ifndef WEFT_TEST_HOOKS
	GTEST_SKIP() << "needs the WEFT_TEST_HOOKS build";
#else
	weft_test_offload_idle_ns(WEFT_MSEC(30));
	WEFT_TEST_RUN(2, [] {
		Gate g;
		std::vector<weft_task *> ts;
		for (int i = 0; i < 4; i++)
			ts.push_back(spawn_lambda("four", [&] {
				return weft_offload(gate_fn, &g) == 7 ? 0 : -1;
			}));
		EXPECT_TRUE(task_wait_until([&] { return g.entered == 4; }));
		EXPECT_EQ(4u, stats().offload_threads);
		g.open = 1;
		for (weft_task *t : ts)
			EXPECT_EQ(0, weft_join(t));
		EXPECT_TRUE(task_wait_until(
			[] { return stats().offload_threads == 0; }, 5000));
	});
	// Now race: idle time 1 ms and gaps around it.
	weft_test_offload_idle_ns(WEFT_MSEC(1));
	WEFT_TEST_RUN(2, [] {
		unsigned n = (unsigned)scaled(400);
		for (unsigned i = 0; i < n; i++) {
			int v = (int)i;
			ASSERT_EQ((int)i + 1,
				  weft_offload(
					  [](void *p) {
						  return *static_cast<int *>(p) + 1;
					  },
					  &v));
			weft_sleep(WEFT_USEC((i * 37) % 2000));
		}
	});
	weft_test_offload_idle_ns(0);
#endif
}

// The caller cancelled while fn runs keeps waiting (fn writes into its
// stack frame late), returns fn's status, and the next suspension point
// says -ECANCELED.
TEST(Offload, CancelWhileFnRunsWaitsThenNextPointFails)
{
	WEFT_TEST_RUN(2, [] {
		Gate g;
		std::atomic<int> ret{ 1 }, next{ 1 }, late_seen{ 0 };
		std::atomic<bool> returned{ false };
		weft_task *t = spawn_lambda("victim", [&] {
			struct A {
				Gate *g;
				int late;
			} a{ &g, 0 };
			ret = weft_offload(
				[](void *p) {
					A *x = static_cast<A *>(p);
					gate_fn(x->g);
					usleep(2000);
					x->late = 99; // into the caller's frame
					return 5;
				},
				&a);
			returned = true;
			late_seen = a.late;
			next = weft_sleep(0);
			return 0;
		});
		ASSERT_TRUE(task_wait_until([&] { return g.entered == 1; }));
		EXPECT_EQ(1, weft_cancel(t));
		weft_sleep(WEFT_MSEC(20));
		EXPECT_FALSE(returned.load()); // still waiting for fn
		g.open = 1;
		EXPECT_EQ(0, weft_join(t));
		EXPECT_EQ(5, ret.load());
		EXPECT_EQ(99, late_seen.load());
		EXPECT_EQ(-ECANCELED, next.load());
	});
}

TEST(Offload, AlreadyCancelledCallerDoesNotRunFn)
{
	WEFT_TEST_RUN(2, [] {
		std::atomic<int> ran{ 0 };
		weft_task *t = spawn_lambda("cancelled", [&] {
			weft_cancel(weft_self());
			return weft_offload(
				[](void *p) {
					static_cast<std::atomic<int> *>(p)
						->fetch_add(1);
					return 0;
				},
				&ran);
		});
		EXPECT_EQ(-ECANCELED, weft_join(t));
		EXPECT_EQ(0, ran.load());
	});
}

// ... unless shielded: then fn runs and its status comes back; the
// cancellation shows at the first suspension point after the shield.
TEST(Offload, AlreadyCancelledButShieldedCallerRunsFn)
{
	WEFT_TEST_RUN(2, [] {
		std::atomic<int> ran{ 0 };
		std::atomic<int> inside{ 7 };
		weft_task *t = spawn_lambda("shielded", [&] {
			weft_cancel(weft_self());
			inside = weft_test::shield([&] {
				return weft_offload(
					[](void *p) {
						static_cast<std::atomic<int> *>(
							p)
							->fetch_add(1);
						return 42;
					},
					&ran);
			});
			return weft_checkpoint();
		});
		EXPECT_EQ(-ECANCELED, weft_join(t));
		EXPECT_EQ(42, inside.load());
		EXPECT_EQ(1, ran.load());
	});
}

// RELIABILITY B10: thread creation failing queues on the threads there
// are; with none at all the call fails -EAGAIN without running fn.
TEST(Offload, ThreadCreateFailure)
{
#ifndef WEFT_TEST_HOOKS
	GTEST_SKIP() << "needs the WEFT_TEST_HOOKS build";
#else
	WEFT_TEST_RUN(2, [] {
		std::atomic<int> ran{ 0 };
		auto count = [](void *p) {
			static_cast<std::atomic<int> *>(p)->fetch_add(1);
			return 0;
		};
		weft_test_offload_fail_create(1);
		EXPECT_EQ(-EAGAIN, weft_offload(count, &ran));
		EXPECT_EQ(0, ran.load());
		EXPECT_EQ(0, weft_offload(count, &ran)); // a thread now
		EXPECT_EQ(1, ran.load());
		// One thread, kept busy; the next creation fails: the call
		// queues on the busy thread and runs when it is free.
		Gate g;
		weft_task *busy = spawn_lambda("busy", [&] {
			return weft_offload(gate_fn, &g) == 7 ? 0 : -1;
		});
		ASSERT_TRUE(task_wait_until([&] { return g.entered == 1; }));
		weft_test_offload_fail_create(1);
		weft_task *q = spawn_lambda("queued", [&] {
			return weft_offload(count, &ran);
		});
		weft_sleep(WEFT_MSEC(10));
		EXPECT_EQ(1, ran.load());
		g.open = 1;
		EXPECT_EQ(0, weft_join(busy));
		EXPECT_EQ(0, weft_join(q));
		EXPECT_EQ(2, ran.load());
		weft_test_offload_fail_create(0);
	});
#endif
}

// Pool threads start with the runtime creator's signal mask.
TEST(Offload, ThreadsInheritCreatorSignalMask)
{
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	ASSERT_EQ(0, pthread_sigmask(SIG_BLOCK, &set, &old));
	std::atomic<int> blocked{ -1 };
	WEFT_TEST_RUN(2, [&] {
		ASSERT_EQ(0, weft_offload(
				     [](void *p) {
					     sigset_t cur;
					     pthread_sigmask(SIG_SETMASK, nullptr,
							     &cur);
					     static_cast<std::atomic<int> *>(p)
						     ->store(sigismember(&cur,
									 SIGUSR2));
					     return 0;
				     },
				     &blocked));
	});
	pthread_sigmask(SIG_SETMASK, &old, nullptr);
	EXPECT_EQ(1, blocked.load());
}

// Shutdown waits for a call in flight (its arg lives on the caller's
// stack) and names the caller after the grace period (RELIABILITY F3).
TEST(Offload, ShutdownWaitsForInFlightCallAndReportsIt)
{
#ifndef WEFT_TEST_HOOKS
	GTEST_SKIP() << "needs the WEFT_TEST_HOOKS build";
#else
	weft_test_drain_grace_ns(WEFT_MSEC(50));
	static std::atomic<int> started, finished;
	started = 0;
	finished = 0;
	weft_runtime *rt = nullptr;
	weft_config cfg{};
	cfg.workers = 2;
	ASSERT_EQ(0, weft_runtime_new(&rt, &cfg));
	StderrCapture cap;
	ASSERT_EQ(0, weft_block_on(rt, [](void *) {
		weft_task *t = spawn_lambda("stuck-reader", [] {
			int r = weft_offload(
				[](void *) {
					started = 1;
					usleep(300 * 1000);
					finished = 1;
					return 3;
				},
				nullptr);
			return r == 3 ? 0 : -1;
		});
		weft_detach(t);
		while (!started.load())
			weft_sleep(WEFT_MSEC(1));
		return 0;
	}, nullptr));
	uint64_t t0 = weft_now();
	EXPECT_EQ(0, weft_runtime_free(rt));
	EXPECT_EQ(1, finished.load());
	EXPECT_GE(weft_now() - t0, WEFT_MSEC(100));
	std::string err = cap.text();
	cap.restore();
	weft_test_drain_grace_ns(0);
	EXPECT_GE(count_of(err, "shutdown is waiting for task 'stuck-reader'"),
		  1u)
		<< err;
#endif
}

// ------------------------------------------------ queued calls withdrawn

namespace
{

// A caller that records its token when its fn runs, and what its call
// returned. Its arg lives in its own frame, as callers' args usually do.
struct Queued {
	std::vector<int> *ran;
	std::mutex *mu;
	std::atomic<int> ret{ 1 };
	std::atomic<int> returned{ 0 };
};

weft_task *spawn_queued(Queued *q, int token)
{
	return spawn_lambda("queued", [q, token] {
		struct A {
			Queued *q;
			int token;
		} a{ q, token };
		q->ret = weft_offload(
			[](void *p) {
				A *x = static_cast<A *>(p);
				std::lock_guard<std::mutex> l(*x->q->mu);
				x->q->ran->push_back(x->token);
				return x->token;
			},
			&a);
		q->returned = 1;
		return 0;
	});
}

// Spawn @token's caller and wait until its call has been made: it queues,
// since the one pool thread is held.
weft_task *spawn_and_queue(Queued *q, int token)
{
	uint64_t before = stats().offload_calls;
	weft_task *t = spawn_queued(q, token);
	EXPECT_TRUE(task_wait_until([&] {
		return stats().offload_calls == before + 1;
	}));
	weft_sleep(WEFT_MSEC(2)); // past submit(), into the FIFO
	return t;
}

// Keep the one pool thread busy in gate_fn until @g opens; the task that
// called, once fn has started (nullptr if it never did).
weft_task *hold_the_pool_thread(Gate *g)
{
	weft_task *t = spawn_lambda("blocker", [g] {
		return weft_offload(gate_fn, g) == 7 ? 0 : -1;
	});
	if (!task_wait_until([g] {
		    return g->entered == 1;
	    }))
		return nullptr;
	return t;
}

// Opens @g after 10 s from a plain thread: a test whose withdrawal does
// not happen fails on its checks instead of hanging.
struct GateFailsafe {
	Gate *g;
	std::atomic<bool> stop{ false };
	std::thread th;
	explicit GateFailsafe(Gate *gate) : g(gate)
	{
		th = std::thread([this] {
			for (int i = 0; i < 10000 && !stop; i++)
				usleep(1000);
			g->open = 1;
		});
	}
	~GateFailsafe()
	{
		stop = true;
		th.join();
	}
};

} // namespace

// A caller cancelled while its request waits for a pool thread is
// withdrawn: it returns -ECANCELED at once, its fn never runs, and the
// requests queued around it still run in their order (as a pending
// concurrent.futures call is cancelled; asyncio's to_thread).
TEST(Offload, QueuedCallerCancelledIsWithdrawnAndFnNeverRuns)
{
	weft_config cfg{};
	cfg.workers = 2;
	cfg.offload_max = 1;
	Gate g;
	std::vector<int> ran;
	std::mutex mu;

	ASSERT_EQ(0, run_cfg(cfg, [&] {
			  GateFailsafe fs(&g);
			  weft_task *blocker = hold_the_pool_thread(&g);
			  ASSERT_NE(nullptr, blocker);
			  Queued q[3];
			  weft_task *t[3];
			  for (int i = 0; i < 3; i++) {
				  q[i].ran = &ran;
				  q[i].mu = &mu;
				  t[i] = spawn_and_queue(&q[i], i);
			  }
			  EXPECT_EQ(1, weft_cancel(t[1]));
			  EXPECT_EQ(0, weft_join(t[1]));
			  EXPECT_EQ(-ECANCELED, q[1].ret.load());
			  EXPECT_EQ(0, g.open.load())
				  << "not withdrawn: waited for the "
				     "pool thread";
			  EXPECT_EQ(0, q[0].returned.load());
			  EXPECT_EQ(0, q[2].returned.load());
			  g.open = 1;
			  EXPECT_EQ(0, weft_join(blocker));
			  EXPECT_EQ(0, weft_join(t[0]));
			  EXPECT_EQ(0, weft_join(t[2]));
			  EXPECT_EQ(0, q[0].ret.load());
			  EXPECT_EQ(2, q[2].ret.load());
			  // A withdrawn request leaves the pool as it was: more calls
			  // run on the one thread.
			  EXPECT_EQ(7, weft_offload(
					       [](void *) {
						       return 7;
					       },
					       nullptr));
		  }));
	EXPECT_EQ((std::vector<int>{ 0, 2 }), ran);
}

// The caller's deadline withdraws a queued request the same way
// (-ETIMEDOUT); a queued request whose caller has no deadline stays.
TEST(Offload, QueuedCallerPastItsDeadlineIsWithdrawn)
{
	weft_config cfg{};
	cfg.workers = 2;
	cfg.offload_max = 1;
	Gate g;
	std::vector<int> ran;
	std::mutex mu;

	ASSERT_EQ(0, run_cfg(cfg, [&] {
			  GateFailsafe fs(&g);
			  weft_task *blocker = hold_the_pool_thread(&g);
			  ASSERT_NE(nullptr, blocker);
			  Queued patient;
			  patient.ran = &ran;
			  patient.mu = &mu;
			  weft_task *p = spawn_and_queue(&patient, 1);
			  std::atomic<int> at_exit{ 1 };
			  std::atomic<uint64_t> took{ 0 };
			  weft_task *d = spawn_lambda("deadline", [&] {
				  struct A {
					  std::vector<int> *ran;
					  std::mutex *mu;
				  } a{ &ran, &mu };
				  weft_scope s;
				  uint64_t t0 = weft_now();
				  weft_scope_enter(&s, WEFT_MSEC(20));
				  int r = weft_offload(
					  [](void *x) {
						  A *y = static_cast<A *>(x);
						  std::lock_guard<std::mutex> l(
							  *y->mu);
						  y->ran->push_back(2);
						  return 2;
					  },
					  &a);
				  took = weft_now() - t0;
				  at_exit = weft_scope_exit(&s);
				  return r;
			  });
			  EXPECT_EQ(-ETIMEDOUT, weft_join(d));
			  EXPECT_EQ(-ETIMEDOUT, at_exit.load());
			  EXPECT_GE(took.load(), WEFT_MSEC(20));
			  EXPECT_EQ(0, g.open.load())
				  << "not withdrawn at the deadline";
			  EXPECT_EQ(0, patient.returned.load());
			  g.open = 1;
			  EXPECT_EQ(0, weft_join(blocker));
			  EXPECT_EQ(0, weft_join(p));
			  EXPECT_EQ(1, patient.ret.load());
		  }));
	EXPECT_EQ((std::vector<int>{ 1 }), ran);
}

// A shielded caller is not withdrawn: its fn runs once a thread is free,
// its status comes back, and the cancellation shows after the shield.
TEST(Offload, QueuedShieldedCallerIsNotWithdrawn)
{
	weft_config cfg{};
	cfg.workers = 2;
	cfg.offload_max = 1;
	Gate g;
	std::atomic<int> ran{ 0 }, inside{ 1 }, entered{ 0 };

	ASSERT_EQ(
		0, run_cfg(cfg, [&] {
			GateFailsafe fs(&g);
			weft_task *blocker = hold_the_pool_thread(&g);
			ASSERT_NE(nullptr, blocker);
			uint64_t before = stats().offload_calls;
			weft_task *t = spawn_lambda("shielded", [&] {
				inside = weft_test::shield([&] {
					entered = 1;
					return weft_offload(
						[](void *p) {
							static_cast<std::atomic<
								int> *>(p)
								->fetch_add(1);
							return 42;
						},
						&ran);
				});
				return weft_checkpoint();
			});
			ASSERT_TRUE(task_wait_until([&] {
				return stats().offload_calls == before + 1;
			}));
			weft_sleep(WEFT_MSEC(2));
			EXPECT_EQ(1, weft_cancel(t));
			weft_sleep(WEFT_MSEC(20));
			EXPECT_EQ(1, inside.load())
				<< "a shielded call returned early";
			EXPECT_EQ(0, ran.load());
			g.open = 1;
			EXPECT_EQ(0, weft_join(blocker));
			EXPECT_EQ(-ECANCELED, weft_join(t));
			EXPECT_EQ(42, inside.load());
			EXPECT_EQ(1, ran.load());
		}));
}

// A caller cancelled while queued, whose request a thread takes before the
// caller gets to withdraw it, waits for fn after all (fn may write into
// its frame) and gets fn's status. Forced with a test hook that stalls a
// woken caller 30 ms before it looks (withdraw_or_rewait()); the thread is
// freed at once and takes the request meanwhile. fn takes 60 ms (the
// caller finds it running and waits again) or no time (it finds it done).
TEST(Offload, CancelledCallerWhoseRequestWasTakenMeanwhileWaitsForFn)
{
#ifndef WEFT_TEST_HOOKS
	GTEST_SKIP() << "needs the WEFT_TEST_HOOKS build";
#else
	for (int fn_ms : { 60, 0 }) {
		SCOPED_TRACE(fn_ms);
		weft_config cfg{};
		cfg.workers = 2;
		cfg.offload_max = 1;
		Gate g;
		static std::atomic<int> ret, late, next, fn_us;
		ret = late = next = 1;
		fn_us = fn_ms * 1000;

		ASSERT_EQ(0, run_cfg(cfg, [&] {
				  GateFailsafe fs(&g);
				  weft_task *blocker = hold_the_pool_thread(&g);
				  ASSERT_NE(nullptr, blocker);
				  uint64_t before = stats().offload_calls;
				  weft_task *t = spawn_lambda("late", [] {
					  struct A {
						  int late;
					  } a{ 0 };
					  ret = weft_offload(
						  [](void *p) {
							  if (fn_us)
								  usleep(fn_us);
							  static_cast<A *>(p)
								  ->late = 99;
							  return 5;
						  },
						  &a);
					  late = a.late;
					  next = weft_checkpoint();
					  return 0;
				  });
				  ASSERT_TRUE(task_wait_until([&] {
					  return stats().offload_calls ==
						 before + 1;
				  }));
				  weft_sleep(WEFT_MSEC(2));
				  weft_test_offload_withdraw_delay_ns(
					  WEFT_MSEC(30));
				  EXPECT_EQ(1, weft_cancel(t));
				  g.open = 1;
				  EXPECT_EQ(0, weft_join(blocker));
				  EXPECT_EQ(0, weft_join(t));
				  weft_test_offload_withdraw_delay_ns(0);
			  }));
		EXPECT_EQ(5, ret.load());
		EXPECT_EQ(99, late.load());
		EXPECT_EQ(-ECANCELED, next.load());
	}
#endif
}

// Shutdown cancels every task: callers still queued are withdrawn, so it
// waits only for the call that is running (before, every queued fn ran
// first). The running one is let go 100 ms after main returned.
TEST(Offload, ShutdownWithdrawsQueuedCalls)
{
	static std::atomic<int> ran;
	static Gate g;
	ran = 0;
	g.entered = 0;
	g.open = 0;
	std::atomic<bool> body_done{ false };
	std::thread opener([&] {
		while (!body_done)
			usleep(1000);
		usleep(100000);
		g.open = 1;
	});
	weft_config cfg{};
	cfg.workers = 2;
	cfg.offload_max = 1;
	EXPECT_EQ(0, run_cfg(cfg, [&] {
			  weft_detach(spawn_lambda("running", [] {
				  return weft_offload(gate_fn, &g);
			  }));
			  EXPECT_TRUE(task_wait_until([&] {
				  return g.entered == 1;
			  }));
			  for (int i = 0; i < 20; i++)
				  weft_detach(spawn_lambda("queued", [] {
					  return weft_offload(
						  [](void *) {
							  ran++;
							  return 0;
						  },
						  nullptr);
				  }));
			  EXPECT_TRUE(task_wait_until([&] {
				  return stats().offload_calls == 21;
			  }));
			  weft_sleep(WEFT_MSEC(2));
			  body_done = true;
		  }));
	body_done = true;
	opener.join();
	EXPECT_EQ(1, g.open.load());
	EXPECT_EQ(0, ran.load()) << "queued calls ran at shutdown";
}
