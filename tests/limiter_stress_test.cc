// SPDX-License-Identifier: MIT
// tests/limiter_stress_test.cc - issue 4's limiter invariant: under 64
// concurrent callers on every worker, no 1-second window ever holds more
// than burst + rate grants (the seeds' bug of measuring elapsed time after
// taking the lock would let bursts through here), and the rate is really
// reached (the limiter does not under-serve either).
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "tests/harness.h"

namespace
{

struct Caller {
	weft_limiter *l;
	weft_event *go;
	uint64_t until;
	std::mutex *mu;
	std::vector<uint64_t> *times;
};

int caller(void *p)
{
	auto *c = static_cast<Caller *>(p);
	int r = weft_event_wait(c->go);
	if (r)
		return r;
	while (weft_now() < c->until) {
		r = weft_limiter_acquire(c->l);
		if (r)
			return r;
		uint64_t now = weft_now();
		std::lock_guard<std::mutex> g(*c->mu);
		c->times->push_back(now);
	}
	return 0;
}

} // namespace

TEST(LimiterStress, SixtyFourCallersNeverExceedTheRateInAnyWindow)
{
	const double rate = 200; // per second
	const unsigned burst = 10;
	const uint64_t run = WEFT_MSEC(2500);
	weft_limiter *l = weft_limiter_new(rate, burst);
	ASSERT_NE(nullptr, l);
	std::mutex mu;
	std::vector<uint64_t> times;
	WEFT_TEST_RUN(2, [&] {
		// All 64 start first and wait together, so the measured run
		// has no start-up lag in it (slow under sanitizers).
		weft_event go{};
		Caller c{ l, &go, 0, &mu, &times };
		std::vector<weft_task *> ts;
		for (int i = 0; i < 64; i++)
			ts.push_back(weft_spawn(caller, &c));
		weft_sleep(WEFT_MSEC(50));
		c.until = weft_now() + run;
		weft_event_set(&go);
		for (auto t : ts)
			EXPECT_EQ(0, weft_join(t));
	});
	weft_limiter_free(l);
	std::sort(times.begin(), times.end());
	ASSERT_FALSE(times.empty());
	// Every window [t_i, t_i + 1 s): at most burst + rate grants, plus
	// the wake-up latency of the observation: a grant is seen after its
	// slot, so a window that starts at a late-seen grant reaches further
	// into the slot schedule. 100 ms of latency is allowed (10% of the
	// window; 250 ms under the sanitizers, WEFT_TEST_SCALE > 1); the
	// seeds' elapsed-after-the-lock bug lets whole bursts through and
	// fails this by far.
	size_t j = 0;
	const double slack = weft_test::scaled(10) < 10 ? 1.25 : 1.1;
	const size_t cap = burst + (size_t)(rate * slack);
	for (size_t i = 0; i < times.size(); i++) {
		if (j < i)
			j = i;
		while (j < times.size() && times[j] < times[i] + WEFT_SEC(1))
			j++;
		ASSERT_LE(j - i, cap) << "window starting at grant " << i;
	}
	// And the limiter delivers its rate: 2.5 s at 200/s is ~500 grants
	// plus the burst; accept a generous margin for a loaded machine.
	double secs = (double)(times.back() - times.front()) / 1e9;
	EXPECT_GE((double)times.size(), 0.5 * rate * secs);
}
