// SPDX-License-Identifier: MIT
//
// tests/paused_clock_test.cc - WEFT_CLOCK_PAUSED and weft_clock_advance()
// (weft/runtime.h; RELIABILITY 3.4, the virtual clock of E2, E4, E5, E7).
//
// A paused runtime's clock stands still while tasks run, jumps to the
// earliest deadline when every task waits on a timer only, and runs at
// real speed while a task waits on I/O or an offloaded call. So the
// timer tests here check exact virtual times (deadline == wake-up time),
// and the wall clock only with loose bounds ("an hour took under a
// minute"); the I/O and offload tests check that a reply on its way is not
// overtaken by a jump.
#include <gtest/gtest.h>

#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <ctime>
#include <thread>
#include <vector>

#include "tests/harness.h"
#include "weft.h"

namespace
{

uint64_t real_now()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

weft_config paused_config()
{
	weft_config cfg = {};
	cfg.flags = WEFT_CLOCK_PAUSED;
	return cfg;
}

// Run fn(arg) as a task of a new paused runtime; return its status.
int run_paused(weft_fn fn, void *arg)
{
	weft_config cfg = paused_config();
	return weft_run(fn, arg, &cfg);
}

TEST(PausedClock, NeedsOneWorker)
{
	weft_config cfg = paused_config();
	weft_runtime *rt = nullptr;

	cfg.workers = 2;
	EXPECT_EQ(weft_runtime_new(&rt, &cfg), -EINVAL);
	EXPECT_EQ(weft_run(
			  [](void *) {
				  return 0;
			  },
			  nullptr, &cfg),
		  -EINVAL);
	/* 0 means 1: tasks that keep yielding all run on one thread */
	for (unsigned n : { 0u, 1u }) {
		static std::atomic<int> other_threads;
		static pthread_t first;
		cfg.workers = n;
		other_threads = 0;
		int rc = weft_run(
			[](void *) {
				weft_task *t[8];
				first = pthread_self();
				for (auto &x : t)
					if (!(x = weft_spawn(
						      ([](void *) {
							      for (int i = 0;
								   i < 200;
								   i++) {
								      if (!pthread_equal(
										  pthread_self(),
										  first))
									      other_threads++;
								      weft_yield();
							      }
							      return 0;
						      }),
						      nullptr)))
						return 1;
				for (auto &x : t)
					weft_join(x);
				return 0;
			},
			nullptr, &cfg);
		EXPECT_EQ(rc, 0) << n;
		EXPECT_EQ(other_threads.load(), 0) << n;
	}
}

TEST(PausedClock, AnHourLongSleepEndsAtOnceOnItsDeadline)
{
	uint64_t r0 = real_now();
	int rc = run_paused(
		[](void *) {
			uint64_t t0 = weft_now();
			if (weft_sleep(WEFT_SEC(3600)) != 0)
				return 1;
			if (weft_now() != t0 + WEFT_SEC(3600))
				return 2;
			/* and a deadline on the same clock */
			if (weft_sleep_until(t0 + WEFT_SEC(7200)) != 0)
				return 3;
			return weft_now() == t0 + WEFT_SEC(7200) ? 0 : 4;
		},
		nullptr);
	EXPECT_EQ(rc, 0);
	EXPECT_LT(real_now() - r0, WEFT_SEC(60));
}

struct Sleepers {
	static constexpr int kN = 300;
	uint64_t t0 = 0;
	uint64_t dur[kN];
	uint64_t woke_at[kN];
	int order[kN];
	int armed_as[kN];
	std::atomic<int> seq{ 0 }, armed{ 0 };
};

struct Sleeper {
	Sleepers *s;
	int i;
};

// E7 on a virtual clock: many timers, a few sharing each deadline; every
// one fires at exactly its deadline, in deadline order, ties in the order
// they were set.
TEST(PausedClock, SleepersWakeAtTheirDeadlinesInOrder)
{
	static Sleepers s;
	int rc = run_paused(
		[](void *) {
			static Sleeper args[Sleepers::kN];
			weft_task *t[Sleepers::kN];
			uint64_t x = 88172645463325252ull;

			s.t0 = weft_now();
			for (int i = 0; i < Sleepers::kN; i++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				/* 1 ms .. 100 s in whole ms: ties happen */
				s.dur[i] =
					WEFT_MSEC(1 + x % 100000) / 1000 * 1000;
				if (i % 10 == 9)
					s.dur[i] = s.dur[i - 1];
				args[i] = { &s, i };
				t[i] = weft_spawn(
					([](void *a) {
						auto *p =
							static_cast<Sleeper *>(
								a);
						/* all start before the clock moves */
						uint64_t t0 = weft_now();
						if (t0 != p->s->t0)
							return 1;
						p->s->armed_as[p->i] =
							p->s->armed++;
						if (weft_sleep(p->s->dur[p->i]))
							return 2;
						p->s->woke_at[p->i] =
							weft_now();
						p->s->order[p->s->seq++] = p->i;
						return 0;
					}),
					&args[i]);
				if (!t[i])
					return 100;
			}
			int bad = 0;
			for (int i = 0; i < Sleepers::kN; i++)
				bad += weft_join(t[i]) != 0;
			return bad;
		},
		nullptr);
	ASSERT_EQ(rc, 0);
	ASSERT_EQ(s.seq.load(), Sleepers::kN);
	for (int i = 0; i < Sleepers::kN; i++)
		EXPECT_EQ(s.woke_at[i], s.t0 + s.dur[i]) << i;
	for (int k = 1; k < Sleepers::kN; k++) {
		int a = s.order[k - 1], b = s.order[k];
		EXPECT_LE(s.dur[a], s.dur[b]) << k;
		if (s.dur[a] == s.dur[b]) {
			EXPECT_LT(s.armed_as[a], s.armed_as[b])
				<< "ties out of FIFO order at " << k;
		}
	}
}

// E4 and E5 on a virtual clock: a deadline already past fails the first
// suspension point at once; of two nested scopes the earlier deadline
// (the outer one) fires, at exactly its time.
TEST(PausedClock, ScopeDeadlinesFireExactly)
{
	int rc = run_paused(
		[](void *) {
			uint64_t t0 = weft_now();
			weft_scope past, outer, inner;

			weft_scope_enter_at(&past, t0 - 1);
			if (weft_checkpoint() != -ETIMEDOUT ||
			    weft_sleep(WEFT_SEC(1)) != -ETIMEDOUT ||
			    weft_now() != t0)
				return 1;
			if (weft_scope_exit(&past) != -ETIMEDOUT)
				return 2;

			weft_scope_enter(&outer, WEFT_SEC(10));
			weft_scope_enter(&inner, WEFT_SEC(20));
			if (weft_sleep(WEFT_SEC(3600)) != -ETIMEDOUT)
				return 3;
			if (weft_now() != t0 + WEFT_SEC(10))
				return 4;
			if (weft_scope_exit(&inner) != 0)
				return 5;
			if (weft_scope_exit(&outer) != -ETIMEDOUT)
				return 6;
			return 0;
		},
		nullptr);
	EXPECT_EQ(rc, 0);
}

// E11 on a virtual clock: a limiter at 1 per second with a burst of 1
// spaces five acquires over four seconds, none of them real.
TEST(PausedClock, LimiterSlotsAreOnTheVirtualClock)
{
	uint64_t r0 = real_now();
	int rc = run_paused(
		[](void *) {
			weft_limiter *l = weft_limiter_new(1.0, 1);
			uint64_t t0 = weft_now();
			int err = 0;

			if (!l)
				return 1;
			for (int i = 0; i < 5 && !err; i++)
				err = weft_limiter_acquire(l);
			uint64_t d = weft_now() - t0;
			weft_limiter_free(l);
			if (err)
				return 2;
			return d >= WEFT_SEC(4) &&
					       d < WEFT_SEC(4) + WEFT_MSEC(1) ?
				       0 :
				       3;
		},
		nullptr);
	EXPECT_EQ(rc, 0);
	EXPECT_LT(real_now() - r0, WEFT_SEC(30));
}

struct Mass {
	unsigned n = 0;
	uint64_t t0 = 0;
	std::atomic<unsigned> armed{ 0 }, woke{ 0 };
	std::vector<unsigned> arm_seq, wake_seq;
	std::vector<int> status;
	std::vector<uint64_t> woke_at;
};

struct MassArg {
	Mass *m;
	unsigned i;
};

// E7 through the runtime: tasks sleep to one deadline an hour away; half
// are cancelled before it (they end at once, the clock still at the
// start); the rest wake at exactly the deadline. A small batch resumes in
// the order its timers were set. A large one does not quite: the worker's
// fairness pick (every 61 runs, the deque's oldest entry, the batch's last
// one) and, past 1,024, the spill of its deque to the global queue let
// some later ones run early.
void many_on_one_deadline(unsigned n, bool check_order)
{
	static Mass m;
	m.n = n;
	m.armed = 0;
	m.woke = 0;
	m.arm_seq.assign(m.n, 0);
	m.wake_seq.assign(m.n, 0);
	m.status.assign(m.n, 1);
	m.woke_at.assign(m.n, 0);
	int rc = run_paused(
		[](void *) {
			std::vector<MassArg> args(m.n);
			std::vector<weft_task *> t(m.n);

			m.t0 = weft_now();
			for (unsigned i = 0; i < m.n; i++) {
				args[i] = { &m, i };
				t[i] = weft_spawn(
					([](void *a) {
						auto *p =
							static_cast<MassArg *>(
								a);
						Mass *q = p->m;
						q->arm_seq[p->i] = q->armed++;
						int r = weft_sleep_until(
							q->t0 + WEFT_SEC(3600));
						q->woke_at[p->i] = weft_now();
						q->wake_seq[p->i] = q->woke++;
						return r;
					}),
					&args[i]);
				if (!t[i])
					return 100;
			}
			/* every sleeper armed: wait without moving the clock */
			while (m.armed < m.n)
				if (weft_yield())
					return 101;
			for (unsigned i = 0; i < m.n; i += 2)
				if (weft_cancel(t[i]) != 1)
					return 102;
			for (unsigned i = 0; i < m.n; i++)
				m.status[i] = weft_join(t[i]);
			return 0;
		},
		nullptr);
	ASSERT_EQ(rc, 0);
	std::vector<unsigned> order; /* survivors by wake-up */
	unsigned bad = 0;
	for (unsigned i = 0; i < m.n; i++) {
		if (i % 2 == 0) {
			bad += m.status[i] != -ECANCELED ||
			       m.woke_at[i] != m.t0;
		} else {
			bad += m.status[i] != 0 ||
			       m.woke_at[i] != m.t0 + WEFT_SEC(3600);
			order.push_back(i);
		}
	}
	EXPECT_EQ(bad, 0u);
	std::sort(order.begin(), order.end(), [](unsigned a, unsigned b) {
		return m.wake_seq[a] < m.wake_seq[b];
	});
	unsigned inversions = 0;
	for (size_t k = 1; k < order.size(); k++)
		inversions += m.arm_seq[order[k - 1]] > m.arm_seq[order[k]];
	if (check_order) {
		EXPECT_EQ(inversions, 0u)
			<< "woken out of the order they slept in";
	}
}

TEST(PausedClock, TimersOnOneDeadlineResumeInTheOrderTheyWereSet)
{
	many_on_one_deadline(100, true);
}

TEST(PausedClock, ManyTimersOnOneDeadlineAllFireOrCancelCleanly)
{
	many_on_one_deadline((unsigned)weft_test::scaled(20000), false);
}

struct Advance {
	uint64_t t0 = 0;
	uint64_t woke_at = 0;
	std::atomic<int> advances{ 0 };
	int advances_at_wake = -1;
};

// A task that never parks keeps the worker busy, so the clock moves only
// by weft_clock_advance(): the sleeper wakes after the tenth step of 10 s,
// at exactly 100 s, and not before.
TEST(PausedClock, AdvanceMovesTheClockWhileTasksRun)
{
	static Advance a;
	int rc = run_paused(
		[](void *) {
			weft_task *sleeper;

			a.t0 = weft_now();
			if (!(sleeper = weft_spawn(
				      ([](void *) {
					      if (weft_sleep(WEFT_SEC(100)))
						      return 1;
					      a.woke_at = weft_now();
					      a.advances_at_wake = a.advances;
					      return 0;
				      }),
				      nullptr)))
				return 100;
			for (int i = 0; i < 10; i++) {
				/* a few scheduler rounds: the sleeper is not due */
				for (int k = 0; k < 20; k++)
					if (weft_yield())
						return 101;
				if (a.woke_at)
					return 102;
				if (weft_clock_advance(WEFT_SEC(10)))
					return 103;
				a.advances++;
			}
			/* woken without this task parking (which would jump) */
			for (int k = 0; k < 1000 && !a.woke_at; k++)
				if (weft_yield())
					return 104;
			if (!a.woke_at)
				return 105;
			return weft_join(sleeper);
		},
		nullptr);
	EXPECT_EQ(rc, 0);
	EXPECT_EQ(a.woke_at, a.t0 + WEFT_SEC(100));
	EXPECT_EQ(a.advances_at_wake, 10);
}

TEST(PausedClock, AdvanceNeedsAPausedRuntimesTask)
{
	EXPECT_EQ(weft_clock_advance(1), -EPERM);
	EXPECT_EQ(weft_run(
			  [](void *) {
				  return weft_clock_advance(1);
			  },
			  nullptr, nullptr),
		  -EINVAL);
	/* clamped below WEFT_FOREVER: the clock still reads as a time */
	int rc = run_paused(
		[](void *) {
			if (weft_clock_advance(WEFT_FOREVER))
				return 1;
			uint64_t now = weft_now();
			return now != WEFT_FOREVER && now > WEFT_SEC(1) << 32 ?
				       0 :
				       2;
		},
		nullptr);
	EXPECT_EQ(rc, 0);
}

struct Pipe {
	int fd[2] = { -1, -1 };
};

// A recv with a 10 s timeout whose reply is 100 ms of real time away: the
// clock must not jump over it (it runs at real speed while the recv is in
// flight), so the bytes arrive and no timeout fires. A jump would end
// the recv with -ETIMEDOUT at once.
TEST(PausedClock, IoInFlightHoldsTheClockToRealSpeed)
{
	static Pipe p;
	static uint64_t waited;
	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p.fd), 0);
	std::thread peer([] {
		usleep(100000);
		EXPECT_EQ(write(p.fd[1], "hi", 2), 2);
	});
	int rc = run_paused(
		[](void *) {
			weft_scope s;
			char buf[8];
			uint64_t t0 = weft_now();

			weft_scope_enter(&s, WEFT_SEC(10));
			ssize_t n = weft_recv(p.fd[0], buf, sizeof(buf), 0);
			int ex = weft_scope_exit(&s);
			waited = weft_now() - t0;
			if (n != 2)
				return n < 0 ? (int)n : 1000;
			return ex;
		},
		nullptr);
	peer.join();
	EXPECT_EQ(rc, 0);
	/* it moved with real time: at least most of the 100 ms */
	EXPECT_GE(waited, WEFT_MSEC(50));
	EXPECT_LT(waited, WEFT_SEC(10));
	close(p.fd[0]);
	close(p.fd[1]);
}

// A silent peer: the timeout fires after its length in real time.
TEST(PausedClock, IoTimeoutFromASilentPeerTakesRealTime)
{
	static Pipe p;
	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p.fd), 0);
	uint64_t r0 = real_now();
	int rc = run_paused(
		[](void *) {
			weft_scope s;
			char buf[8];
			uint64_t t0 = weft_now();

			weft_scope_enter(&s, WEFT_MSEC(200));
			ssize_t n = weft_recv(p.fd[0], buf, sizeof(buf), 0);
			weft_scope_exit(&s);
			if (n != -ETIMEDOUT)
				return 1;
			return weft_now() - t0 >= WEFT_MSEC(200) ? 0 : 2;
		},
		nullptr);
	EXPECT_EQ(rc, 0);
	EXPECT_GE(real_now() - r0, WEFT_MSEC(150));
	close(p.fd[0]);
	close(p.fd[1]);
}

struct Offload {
	uint64_t t0 = 0;
	uint64_t sleeper_woke = 0;
	uint64_t offload_took = 0;
};

// An offloaded call holds the clock to real speed too: a 10 s sleeper
// beside a 100 ms blocking call is still asleep when the call returns;
// after it, the clock jumps to the sleeper's deadline exactly.
TEST(PausedClock, OffloadInFlightHoldsTheClockToRealSpeed)
{
	static Offload o;
	int rc = run_paused(
		[](void *) {
			weft_task *sleeper;

			o.t0 = weft_now();
			if (!(sleeper = weft_spawn(
				      ([](void *) {
					      if (weft_sleep(WEFT_SEC(10)))
						      return 1;
					      o.sleeper_woke = weft_now();
					      return 0;
				      }),
				      nullptr)))
				return 100;
			int r = weft_offload(
				[](void *) {
					usleep(100000);
					return 0;
				},
				nullptr);
			o.offload_took = weft_now() - o.t0;
			if (r)
				return 101;
			if (o.sleeper_woke)
				return 102;
			return weft_join(sleeper);
		},
		nullptr);
	EXPECT_EQ(rc, 0);
	EXPECT_GE(o.offload_took, WEFT_MSEC(50));
	EXPECT_LT(o.offload_took, WEFT_SEC(10));
	EXPECT_EQ(o.sleeper_woke, o.t0 + WEFT_SEC(10));
}

// The virtual clock is the paused runtime's own: its tasks read it, while
// another runtime's tasks and plain threads read the real clock.
TEST(PausedClock, OnlyThePausedRuntimesTasksReadIt)
{
	weft_config cfg = paused_config();
	weft_runtime *paused = nullptr, *real = nullptr;

	ASSERT_EQ(weft_runtime_new(&paused, &cfg), 0);
	ASSERT_EQ(weft_runtime_new(&real, nullptr), 0);
	/* an hour ahead */
	EXPECT_EQ(weft_block_on(
			  paused,
			  [](void *) {
				  return weft_sleep(WEFT_SEC(3600));
			  },
			  nullptr),
		  0);
	static uint64_t in_paused, in_real;
	EXPECT_EQ(weft_block_on(
			  paused,
			  [](void *) {
				  in_paused = weft_now();
				  return 0;
			  },
			  nullptr),
		  0);
	EXPECT_EQ(weft_block_on(
			  real,
			  [](void *) {
				  in_real = weft_now();
				  return 0;
			  },
			  nullptr),
		  0);
	uint64_t here = weft_now(), r = real_now();
	EXPECT_GT(in_paused, r + WEFT_SEC(3000));
	EXPECT_LT(in_real, r + WEFT_SEC(1));
	EXPECT_GE(here + WEFT_SEC(1), r);
	EXPECT_LE(here, r);
	EXPECT_EQ(weft_runtime_free(real), 0);
	EXPECT_EQ(weft_runtime_free(paused), 0);
}

} // namespace
