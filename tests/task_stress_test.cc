// SPDX-License-Identifier: MIT
//
// tests/task_stress_test.cc - tasks under load (label "stress"): spawn and
// join at scale, nested spawn/join, cancel racing completion, join, detach
// and exit (RELIABILITY C1-C4), a million concurrent sleepers, and sleeps
// racing cancellation (E6).
//
// Every test checks exact invariants (a ledger: each task ran exactly once;
// every status delivered; every sleep returned one of its allowed results
// and never early), is bounded by iterations and by time (it stops early
// after its time budget and checks what ran), and has a watchdog: if its
// progress counter does not move for 10 s x WEFT_TEST_SCALE it prints what
// it knows, the threads' stacks (gdb), and aborts, so a hang is a
// diagnosis rather than a ctest timeout. WEFT_TEST_SCALE (10 under
// sanitizers) divides the sizes.
#include <gtest/gtest.h>

#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/harness.h"

using weft_test::scaled;

namespace
{

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ------------------------------------------------------------ helpers

using weft_test::Deadline;
using weft_test::kBudget;
using weft_test::splitmix64;
using weft_test::Watchdog;
using weft_test::worker_name;

// Busy-wait ns nanoseconds without a suspension point.
void spin_ns(uint64_t ns)
{
	uint64_t end = weft_now() + ns;
	while (weft_now() < end) {
	}
}

} // namespace

// ================================================================ SpawnJoin

namespace
{

std::atomic<uint8_t> *g_ledger;

int mark(void *a)
{
	uint64_t i = (uint64_t)(uintptr_t)a;
	g_ledger[i].fetch_add(1, std::memory_order_relaxed);
	return (int)(i % 1000003);
}

} // namespace

class SpawnJoin : public ::testing::TestWithParam<unsigned>
{
};

// RELIABILITY C1 at scale: 10,000,000 trivial tasks spawned and joined in
// batches of 10,000. Each marks its own ledger slot and returns a status
// derived from its index: every slot ends exactly 1 and every join returns
// its task's status. 4 workers oversubscribe the 2 cores on purpose.
TEST_P(SpawnJoin, TenMillionExactlyOnce)
{
	const uint64_t n = scaled(10000000);
	constexpr uint64_t kBatch = 10000;
	std::unique_ptr<std::atomic<uint8_t>[]> ledger(
		new std::atomic<uint8_t>[n]());
	g_ledger = ledger.get();
	std::atomic<uint64_t> joined{ 0 }, bad_status{ 0 }, spawned{ 0 };
	Watchdog wd(
		"SpawnJoin.TenMillionExactlyOnce",
		[&] {
			return joined.load() + spawned.load();
		},
		[&] {
			fprintf(stderr,
				"spawned %" PRIu64 ", joined %" PRIu64
				" of %" PRIu64 "\n",
				spawned.load(), joined.load(), n);
		});

	WEFT_TEST_RUN(GetParam(), [&] {
		std::vector<weft_task *> h(kBatch);
		Deadline dl(kBudget);
		for (uint64_t base = 0; base < n && !dl.passed();
		     base += kBatch) {
			uint64_t m = std::min(kBatch, n - base);
			for (uint64_t i = 0; i < m; i++) {
				h[i] = weft_spawn(
					mark, (void *)(uintptr_t)(base + i));
				ASSERT_NE(nullptr, h[i]);
				spawned.fetch_add(1, std::memory_order_relaxed);
			}
			for (uint64_t i = 0; i < m; i++) {
				if (weft_join(h[i]) !=
				    (int)((base + i) % 1000003))
					bad_status.fetch_add(1);
				joined.fetch_add(1, std::memory_order_relaxed);
			}
		}
	});

	const uint64_t ran = spawned.load();
	EXPECT_EQ(ran, joined.load());
	EXPECT_EQ(0u, bad_status.load());
	uint64_t wrong = 0;
	for (uint64_t i = 0; i < n; i++)
		wrong += ledger[i].load() != (i < ran ? 1 : 0);
	EXPECT_EQ(0u, wrong) << "ledger slots not exactly once";
	fprintf(stderr, "workers %u: %" PRIu64 " of %" PRIu64 " tasks\n",
		GetParam(), ran, n);
}

namespace
{

std::atomic<uint64_t> g_fib_tasks;

int fib(int n);

int fib_task(void *a)
{
	g_fib_tasks.fetch_add(1, std::memory_order_relaxed);
	return fib((int)(intptr_t)a);
}

// fib(n-1) in a child task (spawned, then joined), fib(n-2) right here
// meanwhile.
int fib(int n)
{
	if (n < 2)
		return n;
	weft_task *t = weft_spawn(fib_task, (void *)(intptr_t)(n - 1));
	if (!t)
		return -1000000000;
	int b = fib(n - 2);
	int a = weft_join(t);
	return a + b;
}

} // namespace

// Recursive fib where fib(n-1) is a spawned and joined task: about 120,000
// nested spawn/join pairs per run, joins waiting on children that are
// stolen, run and finished on other workers. The result must be exact.
TEST_P(SpawnJoin, NestedFibExact)
{
	const uint64_t reps = scaled(20);
	uint64_t done = 0;
	std::atomic<uint64_t> wrong{ 0 };
	g_fib_tasks = 0;
	Watchdog wd(
		"SpawnJoin.NestedFibExact",
		[&] {
			return g_fib_tasks.load();
		},
		[&] {
			fprintf(stderr, "fib tasks run so far %" PRIu64 "\n",
				g_fib_tasks.load());
		});
	WEFT_TEST_RUN(GetParam(), [&] {
		Deadline dl(10s);
		for (done = 0; done < reps && !dl.passed(); done++)
			if (fib(25) != 75025)
				wrong.fetch_add(1);
	});
	EXPECT_EQ(0u, wrong.load());
	EXPECT_GT(done, 0u);
	// fib_task runs T(n) = 1 + T(n-1) + T(n-2) - 1 ... = fib(n+1) - 1
	// times for one fib(n) (T(0) = T(1) = 0 spawns).
	EXPECT_EQ(done * (121393 - 1), g_fib_tasks.load());
	fprintf(stderr,
		"workers %u: %" PRIu64 " x fib(25), %" PRIu64 " tasks\n",
		GetParam(), done, g_fib_tasks.load());
}

INSTANTIATE_TEST_SUITE_P(Workers, SpawnJoin, ::testing::Values(2u, 4u),
			 worker_name);

// ================================================================ Cancel

namespace
{

constexpr int kStatus = 4242;

struct CancelRound {
	weft_task *target;
	uint64_t spin_ns; // target's work before its suspension
	uint64_t delay_ns; // canceller's wait before weft_cancel
	int kind; // 0 checkpoint, 1 yield, 2 sleep 1 us
	std::atomic<int> saw{ 1 }; // what the suspension point returned
	std::atomic<int> cancel_ret{ 7 };
	std::atomic<bool> started{ false }; // the target is running
	// forced round: the target waits (bounded) for the cancel to be
	// issued before its suspension point, so it must see it
	bool force_seen = false;
	std::atomic<bool> issued{ false }, waited_out{ false };
};

// Spins until f is set, for at most 50 ms (scaled); false if it never was.
bool await_flag(const std::atomic<bool> &f)
{
	uint64_t give_up = weft_now() + WEFT_MSEC(50) * weft_test::test_scale();

	while (!f.load(std::memory_order_acquire)) {
		if (weft_now() > give_up)
			return false;
	}
	return true;
}

int cancel_target(void *a)
{
	CancelRound *r = static_cast<CancelRound *>(a);
	int err;

	r->started.store(true, std::memory_order_relaxed);
	spin_ns(r->spin_ns);
	if (r->force_seen && !await_flag(r->issued))
		r->waited_out.store(true);
	switch (r->kind) {
	case 0:
		err = weft_checkpoint();
		break;
	case 1:
		err = weft_yield();
		break;
	default:
		err = weft_sleep(WEFT_USEC(1));
		break;
	}
	r->saw.store(err, std::memory_order_relaxed);
	return err == 0 ? kStatus : err;
}

// A watchdog on a counter of rounds, reporting "round i of n" if it fires.
Watchdog rounds_watchdog(const char *name, const std::atomic<uint64_t> &rounds,
			 uint64_t n)
{
	return Watchdog(
		name,
		[&rounds] {
			return rounds.load();
		},
		[&rounds, n] {
			fprintf(stderr, "round %" PRIu64 " of %" PRIu64 "\n",
				rounds.load(), n);
		});
}

int canceller(void *a)
{
	CancelRound *r = static_cast<CancelRound *>(a);

	// Let the target start first (on the other worker), within a bound:
	// the canceller usually runs inline in the owner's join, and the
	// other worker may be parked; under TSan its wake-up took ~5 ms, far
	// past the delay, and every cancel landed before the target ran.
	uint64_t give_up = weft_now() + WEFT_MSEC(20) * weft_test::test_scale();
	while (!r->started.load(std::memory_order_relaxed) &&
	       weft_now() < give_up) {
	}
	spin_ns(r->delay_ns);
	r->cancel_ret.store(weft_cancel(r->target), std::memory_order_relaxed);
	r->issued.store(true, std::memory_order_release);
	return 0;
}

} // namespace

// RELIABILITY C2. A task computes 0-20 us, then reaches one suspension
// point (checkpoint, yield or a 1 us sleep) and returns kStatus, or that
// point's error. Another task cancels it after a random 0-25 us; the owner
// joins the canceller (a handle may be cancelled only until the owner's
// wait returned) and then the target, which may still be running. Each
// round exactly one of:
//  - cancel too late: weft_cancel returned 0, the body saw 0, join gives
//    kStatus;
//  - cancel recorded after the body's suspension point: weft_cancel
//    returned 1, the body saw 0, join gives kStatus;
//  - cancel recorded before it: 1, the body saw -ECANCELED, join gives
//    -ECANCELED.
// Never anything else; the handle is freed once (the harness checks that
// no task is left). One round in four is forced to the last outcome (the
// target waits for the cancel before its suspension point) and must come
// out so: on a loaded machine nearly every free round is "too late".
TEST(Cancel, RacingFinishAndJoin)
{
	const uint64_t n = scaled(200000);
	std::atomic<uint64_t> rounds{ 0 };
	uint64_t late = 0, unseen = 0, seen = 0, forced_seen = 0, bad = 0;
	Watchdog wd = rounds_watchdog("Cancel.RacingFinishAndJoin", rounds, n);
	WEFT_TEST_RUN(2, [&] {
		Deadline dl(12s);
		uint64_t rng = 42;
		for (uint64_t i = 0; i < n && !dl.passed(); i++) {
			CancelRound r;
			uint64_t x = splitmix64(&rng);
			r.spin_ns = x % 20001;
			r.delay_ns = (x >> 20) % 25001;
			r.kind = (int)((x >> 40) % 3);
			r.force_seen = i % 4 == 3;
			r.target = weft_spawn(cancel_target, &r);
			ASSERT_NE(nullptr, r.target);
			weft_task *c = weft_spawn(canceller, &r);
			ASSERT_NE(nullptr, c);
			EXPECT_EQ(0, weft_join(c));
			int st = weft_join(r.target);
			int saw = r.saw.load(), cr = r.cancel_ret.load();
			bool forced = r.force_seen && !r.waited_out.load();
			if (cr == 0 && saw == 0 && st == kStatus && !forced)
				late++;
			else if (cr == 1 && saw == 0 && st == kStatus &&
				 !forced)
				unseen++;
			else if (cr == 1 && saw == -ECANCELED &&
				 st == -ECANCELED) {
				seen++;
				forced_seen += forced;
			} else if (bad++ < 10)
				ADD_FAILURE()
					<< "round " << i << ": cancel " << cr
					<< ", body saw " << saw << ", join "
					<< st << " (kind " << r.kind << ")";
			rounds.fetch_add(1, std::memory_order_relaxed);
		}
	});
	EXPECT_EQ(0u, bad);
	EXPECT_EQ(rounds.load(), late + unseen + seen);
	fprintf(stderr,
		"%" PRIu64 " rounds: too late %" PRIu64
		", after the suspension point %" PRIu64 ", seen %" PRIu64
		" (%" PRIu64 " of them forced)\n",
		rounds.load(), late, unseen, seen, forced_seen);
	// Both main outcomes must have happened, or the race was not run.
	if (rounds.load() >= 1000) {
		EXPECT_GT(late + unseen, 0u);
		EXPECT_GT(forced_seen, 0u);
	}
}

// A cancel racing the end of a child its owner runs inline (task.c
// try_run_inline(): the join word's J_DONE is a plain store there, and a
// canceller's J_CANCEL may land between its load and store). The canceller
// runs on the other worker: it starts first and spins until the owner, which
// busy-waits for it (so the owner's worker cannot run it), spawns the child
// and joins it, inline. The canceller waits for the child to start, then
// cancels it. Each round exactly one of:
//  - weft_cancel() -EINVAL: the join had returned (the handle is released;
//    the generation says so); the child saw 0 and returned kStatus;
//  - 0: the child had finished (J_DONE); it saw 0, kStatus;
//  - 1 before its checkpoint: it saw -ECANCELED and returned it;
//  - 1 after its checkpoint: it saw 0 and returned kStatus.
// Three rounds in four are free races (random work on both sides); in the
// fourth, the order is forced in turn to "before", "after" and "released"
// by a handshake, so each of those outcomes is checked exactly whatever the
// machine's load. A free race's outcome is not asserted: on a loaded machine
// (CI runs TSan two tests at a time on 2 cores) the two workers are seldom
// on a CPU together, and nearly every cancel lands after the join.
namespace
{

enum InlineMode {
	kFree,
	kBefore,
	kAfter,
	kReleased
};

struct InlineRound {
	InlineMode mode = kFree;
	std::atomic<bool> k_running{ false }, started{ false };
	std::atomic<bool> issued{ false }, checked{ false }, joined{ false };
	std::atomic<bool> waited_out{ false };
	std::atomic<weft_task *> child{ nullptr };
	uint64_t spin_ns = 0, delay_ns = 0;
	std::atomic<int> saw{ 1 }, cancel_ret{ 7 };
};

int inline_child(void *a)
{
	auto *r = static_cast<InlineRound *>(a);
	r->started.store(true, std::memory_order_release);
	spin_ns(r->spin_ns);
	if (r->mode == kBefore && !await_flag(r->issued))
		r->waited_out.store(true);
	int err = weft_checkpoint();
	r->saw.store(err, std::memory_order_relaxed);
	r->checked.store(true, std::memory_order_release);
	if (r->mode == kAfter && !await_flag(r->issued))
		r->waited_out.store(true);
	return err == 0 ? kStatus : err;
}

int inline_canceller(void *a)
{
	auto *r = static_cast<InlineRound *>(a);

	r->k_running.store(true, std::memory_order_release);
	if (!await_flag(r->started)) {
		r->waited_out.store(true);
		return 0; // the owner skipped the round, or never got the CPU
	}
	if ((r->mode == kReleased && !await_flag(r->joined)) ||
	    (r->mode == kAfter && !await_flag(r->checked)))
		r->waited_out.store(true);
	spin_ns(r->delay_ns);
	r->cancel_ret.store(weft_cancel(r->child.load()),
			    std::memory_order_relaxed);
	r->issued.store(true, std::memory_order_release);
	return 0;
}

} // namespace

TEST(Cancel, RacingTheEndOfAnInlineChild)
{
	const uint64_t n = scaled(50000);
	const uint64_t k = weft_test::test_scale();
	std::atomic<uint64_t> rounds{ 0 };
	// outcome counts: [mode][released, done, before, after]
	uint64_t got[4][4] = {};
	uint64_t skipped = 0, bad = 0;
	Watchdog wd = rounds_watchdog("Cancel.RacingTheEndOfAnInlineChild",
				      rounds, n);
	WEFT_TEST_RUN(2, [&] {
		Deadline dl(10s);
		uint64_t rng = 7;
		for (uint64_t i = 0; i < n && !dl.passed(); i++) {
			InlineRound r;
			uint64_t x = splitmix64(&rng);
			r.mode = i % 4 != 3 ? kFree : InlineMode(1 + i / 4 % 3);
			r.spin_ns = x % (10001 * k);
			r.delay_ns = r.mode == kFree ? (x >> 20) % (12001 * k) :
						       0;
			weft_task *kt = weft_spawn(inline_canceller, &r);
			ASSERT_NE(nullptr, kt);
			// Busy, not suspended: only the other worker can run
			// the canceller.
			uint64_t until = weft_now() + WEFT_MSEC(20) * k;
			while (!r.k_running.load(std::memory_order_acquire) &&
			       weft_now() < until) {
			}
			if (!r.k_running.load(std::memory_order_acquire)) {
				// Not stolen in time: end the round.
				EXPECT_EQ(0, weft_join(kt));
				skipped++;
				rounds.fetch_add(1, std::memory_order_relaxed);
				continue;
			}
			weft_task *c = weft_spawn(inline_child, &r);
			ASSERT_NE(nullptr, c);
			r.child.store(c);
			int st = weft_join(c); // inline: c is fresh, ours
			r.joined.store(true, std::memory_order_release);
			EXPECT_EQ(0, weft_join(kt));
			rounds.fetch_add(1, std::memory_order_relaxed);
			if (r.waited_out.load()) {
				skipped++; // a handshake waited out its bound
				continue;
			}
			int saw = r.saw.load(), cr = r.cancel_ret.load(), o;
			if (cr == -EINVAL && saw == 0 && st == kStatus)
				o = 0;
			else if (cr == 0 && saw == 0 && st == kStatus)
				o = 1;
			else if (cr == 1 && saw == -ECANCELED &&
				 st == -ECANCELED)
				o = 2;
			else if (cr == 1 && saw == 0 && st == kStatus)
				o = 3;
			else
				o = -1;
			// A forced round has one right outcome: kBefore is 2,
			// kAfter 3, kReleased 0.
			static const int want[4] = { -1, 2, 3, 0 };
			if (o < 0 || (r.mode != kFree && o != want[r.mode])) {
				if (bad++ < 10)
					ADD_FAILURE()
						<< "round " << i << " (mode "
						<< r.mode << "): cancel " << cr
						<< ", child saw " << saw
						<< ", join " << st;
				continue;
			}
			got[r.mode][o]++;
		}
	});
	EXPECT_EQ(0u, bad);
	static const char *const name[4] = { "free", "forced before",
					     "forced after",
					     "forced released" };
	for (int m = 0; m < 4; m++)
		fprintf(stderr,
			"%s: released %" PRIu64 ", done %" PRIu64
			", before the checkpoint %" PRIu64 ", after it %" PRIu64
			"\n",
			name[m], got[m][0], got[m][1], got[m][2], got[m][3]);
	fprintf(stderr, "%" PRIu64 " rounds, %" PRIu64 " skipped\n",
		rounds.load(), skipped);
	// Each forced order was run, and came out as forced.
	if (rounds.load() - skipped >= 1000) {
		EXPECT_GT(got[kBefore][2], 0u);
		EXPECT_GT(got[kAfter][3], 0u);
		EXPECT_GT(got[kReleased][0], 0u);
	}
}

namespace
{

struct DetachCtx {
	std::unique_ptr<std::atomic<uint8_t>[]> ran; // ledger by id
	std::atomic<uint64_t> finished{ 0 };
	std::atomic<uint64_t> spurious{ 0 }; // a non-target saw a cancel
	std::atomic<uint64_t> target_cancelled{ 0 };
};

DetachCtx *g_detach;

// id in the low bits, target flag in bit 62
int detach_body(void *a)
{
	uint64_t v = (uint64_t)(uintptr_t)a;
	uint64_t id = v & ((1ull << 40) - 1);
	bool target = v >> 62;
	DetachCtx *c = g_detach;

	c->ran[id].fetch_add(1, std::memory_order_relaxed);
	if ((v >> 41) & 1)
		weft_yield();
	int err = weft_checkpoint();
	if (err == -ECANCELED) {
		if (target)
			c->target_cancelled.fetch_add(1);
		else
			c->spurious.fetch_add(1);
	}
	c->finished.fetch_add(1, std::memory_order_release);
	return 0;
}

} // namespace

// RELIABILITY C3/C4: the last reference raced by detach, exit and cancel.
// A task spawns tasks and detaches each at a random moment (at once,
// after a yield, after it ran); a foreign std::thread cancels every
// second one ("targets") through the published handle, at random moments,
// possibly after the task was detached and has exited (weft_cancel then
// returns 0 or -EINVAL: the handle is stale). Every fn runs exactly once,
// every record is freed exactly once (the harness counts live tasks; ASan
// and TSan builds check the memory), and a task that was never a target
// never sees a cancellation.
TEST(Cancel, VersusDetachVersusExit)
{
	constexpr unsigned kSlots = 256;
	const uint64_t n = scaled(2000000);
	DetachCtx c;
	c.ran.reset(new std::atomic<uint8_t>[n]());
	g_detach = &c;
	std::unique_ptr<std::atomic<weft_task *>[]> slot(
		new std::atomic<weft_task *>[kSlots]());
	std::atomic<bool> quit{ false }, foreign_done{ false };
	std::atomic<uint64_t> spawned{ 0 };
	std::atomic<uint64_t> cret[4] = {}; // 1, 0, -EINVAL, other
	Watchdog wd(
		"Cancel.VersusDetachVersusExit",
		[&] {
			return c.finished.load() + spawned.load();
		},
		[&] {
			fprintf(stderr,
				"spawned %" PRIu64 ", finished %" PRIu64 "\n",
				spawned.load(), c.finished.load());
		});
	std::thread foreign([&] {
		uint64_t rng = 7;
		while (!quit.load(std::memory_order_relaxed)) {
			for (unsigned i = 0; i < kSlots; i += 2) {
				weft_task *h =
					slot[i].load(std::memory_order_acquire);
				if (!h)
					continue;
				if (splitmix64(&rng) % 4 == 0)
					std::this_thread::yield();
				int r = weft_cancel(h);
				cret[r == 1	  ? 0 :
				     r == 0	  ? 1 :
				     r == -EINVAL ? 2 :
						    3]
					.fetch_add(1,
						   std::memory_order_relaxed);
			}
		}
		foreign_done.store(true, std::memory_order_release);
	});
	WEFT_TEST_RUN(2, [&] {
		// However the body ends, the foreign thread must be done with
		// the runtime's handles before the harness frees the runtime.
		struct StopForeign {
			std::atomic<bool> &quit, &done;
			~StopForeign()
			{
				quit.store(true);
				while (!done.load(std::memory_order_acquire))
					weft_yield();
			}
		} stop_foreign{ quit, foreign_done };
		Deadline dl(10s);
		uint64_t rng = 42, id = 0;
		weft_task *mine[kSlots];
		while (id + kSlots <= n && !dl.passed()) {
			uint64_t round_start = id;
			for (unsigned i = 0; i < kSlots; i++, id++) {
				uint64_t x = splitmix64(&rng);
				bool target = (i % 2) == 0;
				uint64_t v = id | ((x & 1) << 41) |
					     ((uint64_t)target << 62);
				mine[i] = weft_spawn(detach_body,
						     (void *)(uintptr_t)v);
				ASSERT_NE(nullptr, mine[i]);
				spawned.fetch_add(1);
				slot[i].store(mine[i],
					      std::memory_order_release);
				if ((x >> 8) % 3 == 0) {
					weft_detach(mine[i]);
					mine[i] = nullptr;
				}
			}
			if (splitmix64(&rng) % 2)
				weft_yield();
			for (unsigned i = 0; i < kSlots; i++)
				if (mine[i]) {
					weft_detach(mine[i]);
					mine[i] = nullptr;
				}
			// Wait until this round's bodies ran; the foreign
			// thread may still hold their (now stale) handles.
			while (c.finished.load(std::memory_order_acquire) <
			       round_start + kSlots)
				weft_yield();
			for (unsigned i = 0; i < kSlots; i++)
				slot[i].store(nullptr,
					      std::memory_order_release);
		}
	});
	quit.store(true);
	foreign.join();
	const uint64_t total = spawned.load();
	uint64_t wrong = 0;
	for (uint64_t i = 0; i < n; i++)
		wrong += c.ran[i].load() != (i < total ? 1 : 0);
	EXPECT_EQ(0u, wrong) << "fn not run exactly once";
	EXPECT_EQ(total, c.finished.load());
	EXPECT_EQ(0u, cret[3].load())
		<< "weft_cancel returned an unexpected code";
	EXPECT_EQ(0u, c.spurious.load())
		<< "a task nobody cancelled saw -ECANCELED: a stale handle's "
		   "weft_cancel reached the record's next task";
	fprintf(stderr,
		"%" PRIu64 " tasks; cancel returned 1: %" PRIu64 ", 0: %" PRIu64
		", -EINVAL: %" PRIu64 "; targets that saw it %" PRIu64
		", non-targets %" PRIu64 "\n",
		total, cret[0].load(), cret[1].load(), cret[2].load(),
		c.target_cancelled.load(), c.spurious.load());
}

// ================================================================ Sleep

namespace
{

struct SleepCtx {
	uint64_t seed;
	std::atomic<uint64_t> woke{ 0 }, early{ 0 }, bad_ret{ 0 };
	std::atomic<uint64_t> max_late_ns{ 0 };
};
SleepCtx *g_sleep;

int sleeper(void *a)
{
	uint64_t i = (uint64_t)(uintptr_t)a;
	SleepCtx *c = g_sleep;
	uint64_t s = c->seed ^ (i * 0x9e3779b97f4a7c15ull);
	uint64_t d = WEFT_MSEC(1 + splitmix64(&s) % 1000);
	uint64_t deadline = weft_now() + d;
	int r = weft_sleep(d);
	uint64_t now = weft_now();

	if (r != 0)
		c->bad_ret.fetch_add(1, std::memory_order_relaxed);
	if (now < deadline)
		c->early.fetch_add(1, std::memory_order_relaxed);
	else {
		uint64_t late = now - deadline;
		uint64_t m = c->max_late_ns.load(std::memory_order_relaxed);
		while (late > m &&
		       !c->max_late_ns.compare_exchange_weak(m, late))
			;
	}
	c->woke.fetch_add(1, std::memory_order_relaxed);
	return 0;
}

} // namespace

// 1,000,000 tasks sleep at once, each a random 1-1000 ms (splitmix64, seed
// 42): every one wakes, its sleep returns 0, and none wakes before its
// deadline. About 4.5 KiB each at full scale (record, stack pages, timer).
TEST(Sleep, MillionSleepersNoneEarly)
{
	uint64_t n = scaled(1000000);
#if defined(__SANITIZE_THREAD__)
	// TSan gives every fiber a thread context and dies past 8128 of
	// them; a sleeper is a live fiber.
	n = std::min<uint64_t>(n, 2000);
#endif
	SleepCtx c;
	c.seed = 42;
	g_sleep = &c;
	std::atomic<uint64_t> spawned{ 0 };
	Watchdog wd(
		"Sleep.MillionSleepersNoneEarly",
		[&] {
			return c.woke.load() + spawned.load();
		},
		[&] {
			fprintf(stderr,
				"spawned %" PRIu64 ", woke %" PRIu64
				" of %" PRIu64 "\n",
				spawned.load(), c.woke.load(), n);
		});
	WEFT_TEST_RUN(2, [&] {
		std::vector<weft_task *> h(n);
		Deadline dl(kBudget);
		uint64_t i;
		for (i = 0; i < n; i++) {
			if ((i & 4095) == 0 && dl.passed())
				break;
			h[i] = weft_spawn(sleeper, (void *)(uintptr_t)i);
			ASSERT_NE(nullptr, h[i]);
			spawned.fetch_add(1, std::memory_order_relaxed);
		}
		for (uint64_t k = 0; k < i; k++)
			EXPECT_EQ(0, weft_join(h[k]));
	});
	EXPECT_EQ(spawned.load(), c.woke.load());
	EXPECT_EQ(0u, c.bad_ret.load()) << "a sleep returned non-zero";
	EXPECT_EQ(0u, c.early.load()) << "a sleeper woke before its deadline";
	fprintf(stderr, "%" PRIu64 " sleepers, latest wake %.3f ms late\n",
		spawned.load(), c.max_late_ns.load() / 1e6);
}

namespace
{

struct RaceSleeper {
	weft_task *h;
	uint64_t seed;
	uint64_t delay_ns;
	std::atomic<bool> cancelled{ false }; // weft_cancel returned 1
	std::atomic<int> cancel_ret{ 7 };
	// results, written by the sleeper
	uint64_t sleeps = 0, early = 0, bad = 0, not_level = 0;
	int last = 1;
};

int race_sleeper(void *a)
{
	RaceSleeper *s = static_cast<RaceSleeper *>(a);
	uint64_t rng = s->seed;

	for (;;) {
		// Read before sleeping: if the cancel was already recorded,
		// this sleep must fail (level-triggered cancellation).
		bool was = s->cancelled.load(std::memory_order_acquire);
		uint64_t d = WEFT_USEC(1 + splitmix64(&rng) % 50);
		uint64_t t0 = weft_now();
		int r = weft_sleep(d);
		uint64_t t1 = weft_now();
		s->sleeps++;
		s->last = r;
		if (r == 0) {
			if (t1 < t0 + d)
				s->early++;
			if (was)
				s->not_level++;
			if (s->sleeps > 2000000) // the cancel never came
				return -1;
			continue;
		}
		if (r != -ECANCELED) {
			s->bad++;
			return r;
		}
		// Cancelled: every later suspension point fails too.
		if (weft_checkpoint() != -ECANCELED ||
		    weft_sleep(WEFT_USEC(5)) != -ECANCELED ||
		    weft_yield() != -ECANCELED)
			s->not_level++;
		return r;
	}
}

int race_canceller(void *a)
{
	RaceSleeper *s = static_cast<RaceSleeper *>(a);
	uint64_t rng = s->seed + 1;

	if (splitmix64(&rng) % 2)
		weft_sleep(s->delay_ns);
	else
		// compute instead: the cancel lands at any point of a sleep
		// (preparing, published, timer firing)
		spin_ns(s->delay_ns);
	int r = weft_cancel(s->h);
	s->cancel_ret.store(r, std::memory_order_relaxed);
	if (r == 1)
		s->cancelled.store(true, std::memory_order_release);
	return 0;
}

} // namespace

// RELIABILITY E6. Tasks sleep tiny durations (1-50 us) in a loop while
// another task cancels them at a random moment (0-200 us, sleeping or
// computing): every sleep returns exactly 0 or -ECANCELED, a 0 is never
// early, a sleep that starts after weft_cancel() returned 1 fails (the
// cancellation is level-triggered, and so does every later suspension
// point), and every sleeper ends on -ECANCELED.
// A cancellation that races with a task parking on a wait that nothing
// else will ever end (an empty queue, an unset event, an endless sleep)
// must end that wait: weft_cancel()'s flag and the publisher's check after
// its CAS are the Dekker pair of wait.c (step 4), and the check before the
// switch only a shortcut. A lost cancellation hangs a pair, which the
// watchdog reports. Both tasks meet at a barrier and the canceller then
// waits 0-255 loop turns, so that its flag lands in the few nanoseconds
// between the waiter's PREP store and its switch (the window where a store
// buffer hides PREP from the canceller).
struct ParkRace {
	weft_queue *q;
	weft_event ev;
	weft_task *h;
	unsigned kind;
	unsigned delay;
	std::atomic<int> arrived{ 0 };
	int cancel_ret = 7;
};

void park_barrier(ParkRace *p)
{
	p->arrived.fetch_add(1);
	// Yield while alone: both may be on one worker.
	while (p->arrived.load() < 2)
		weft_yield();
}

int park_racer(void *a)
{
	ParkRace *p = static_cast<ParkRace *>(a);
	void *v;

	park_barrier(p);
	switch (p->kind) {
	case 0:
		return weft_queue_get(p->q, &v);
	case 1:
		return weft_event_wait(&p->ev);
	default:
		return weft_sleep(UINT64_MAX);
	}
}

int park_canceller(void *a)
{
	ParkRace *p = static_cast<ParkRace *>(a);

	park_barrier(p);
	for (volatile unsigned k = 0; k < p->delay; k++) {
	}
	p->cancel_ret = weft_cancel(p->h);
	return 0;
}

TEST(Cancel, RacingAParkOnAWaitNothingElseEnds)
{
	constexpr unsigned kPairs = 8;
	const uint64_t n = scaled(200000);
	std::atomic<uint64_t> rounds{ 0 };
	uint64_t not_cancelled = 0, bad_cancel = 0;
	Watchdog wd(
		"Cancel.RacingAParkOnAWaitNothingElseEnds",
		[&] {
			return rounds.load();
		},
		[&] {
			fprintf(stderr,
				"%" PRIu64 " waits of %" PRIu64 " ended\n",
				rounds.load(), n);
		});
	WEFT_TEST_RUN(2, [&] {
		Deadline dl(10s);
		uint64_t rng = 7;
		std::vector<ParkRace> ps(kPairs);
		weft_task *cs[kPairs];
		for (auto &p : ps) {
			p.q = weft_queue_new(1);
			ASSERT_NE(nullptr, p.q);
		}
		while (rounds.load() + kPairs <= n && !dl.passed()) {
			for (unsigned i = 0; i < kPairs; i++) {
				ParkRace &p = ps[i];
				ASSERT_EQ(0, weft_event_init(&p.ev));
				p.kind = (unsigned)(splitmix64(&rng) % 3);
				p.delay = (unsigned)(splitmix64(&rng) % 256);
				p.arrived = 0;
				p.cancel_ret = 7;
				p.h = weft_spawn(park_racer, &p);
				ASSERT_NE(nullptr, p.h);
				cs[i] = weft_spawn(park_canceller, &p);
				ASSERT_NE(nullptr, cs[i]);
			}
			for (unsigned i = 0; i < kPairs; i++) {
				EXPECT_EQ(0, weft_join(cs[i]));
				not_cancelled += weft_join(ps[i].h) != -ECANCELED;
				bad_cancel += ps[i].cancel_ret != 1;
				rounds.fetch_add(1);
			}
		}
		for (auto &p : ps)
			weft_queue_free(p.q);
	});
	EXPECT_EQ(0u, not_cancelled) << "a wait did not end on -ECANCELED";
	EXPECT_EQ(0u, bad_cancel) << "weft_cancel of a live task did not "
				     "return 1";
	fprintf(stderr, "%" PRIu64 " waits cancelled\n", rounds.load());
}

TEST(Sleep, DeadlinesRaceCancel)
{
	constexpr unsigned kPairs = 32;
	const uint64_t n = scaled(100000);
	std::atomic<uint64_t> rounds{ 0 };
	uint64_t sleeps = 0, early = 0, bad = 0, not_level = 0, unfinished = 0,
		 bad_cancel = 0;
	Watchdog wd(
		"Sleep.DeadlinesRaceCancel",
		[&] {
			return rounds.load();
		},
		[&] {
			fprintf(stderr,
				"%" PRIu64 " sleepers of %" PRIu64 " done\n",
				rounds.load(), n);
		});
	WEFT_TEST_RUN(2, [&] {
		Deadline dl(10s);
		uint64_t rng = 42;
		std::vector<std::unique_ptr<RaceSleeper>> s(kPairs);
		weft_task *cs[kPairs];
		while (rounds.load() + kPairs <= n && !dl.passed()) {
			for (unsigned i = 0; i < kPairs; i++) {
				s[i] = std::make_unique<RaceSleeper>();
				s[i]->seed = splitmix64(&rng);
				s[i]->delay_ns = splitmix64(&rng) % 200001;
				s[i]->h = weft_spawn(race_sleeper, s[i].get());
				ASSERT_NE(nullptr, s[i]->h);
				cs[i] = weft_spawn(race_canceller, s[i].get());
				ASSERT_NE(nullptr, cs[i]);
			}
			for (unsigned i = 0; i < kPairs; i++) {
				EXPECT_EQ(0, weft_join(cs[i]));
				int st = weft_join(s[i]->h);
				RaceSleeper &r = *s[i];
				sleeps += r.sleeps;
				early += r.early;
				bad += r.bad;
				not_level += r.not_level;
				unfinished += st != -ECANCELED;
				bad_cancel += r.cancel_ret.load() != 1;
				rounds.fetch_add(1);
			}
		}
	});
	EXPECT_EQ(0u, bad) << "a sleep returned neither 0 nor -ECANCELED";
	EXPECT_EQ(0u, early) << "a sleep returned 0 before its deadline";
	EXPECT_EQ(0u, not_level) << "a suspension point after a recorded "
				    "cancel did not fail";
	EXPECT_EQ(0u, unfinished) << "a sleeper did not end on -ECANCELED";
	EXPECT_EQ(0u, bad_cancel) << "weft_cancel of a running sleeper "
				     "did not return 1";
	fprintf(stderr, "%" PRIu64 " sleepers, %" PRIu64 " sleeps\n",
		rounds.load(), sleeps);
}
