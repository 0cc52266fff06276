// SPDX-License-Identifier: MIT
//
// tests/fuzz/scope_fuzz.cc - libFuzzer target for cancel scopes, shields
// and task cancellation (runtime/scope.c), model-based (RELIABILITY 3.6,
// item 4: level-triggered semantics, E4, E5, A10).
//
// One 1-worker runtime lives for the whole session; each input is one
// weft_block_on() of a fresh task that decodes the bytes into operations
// on eight scope objects on its stack: enter (absolute deadline long past,
// an hour away, or none), enter shielded (timeout 0, an hour, none), exit
// (in order, out of order, or of a scope that is not open), move a
// deadline, read a deadline, cancel itself, and suspension points:
// weft_checkpoint, weft_yield, weft_sleep(0), and, when the model says it
// must fail at once, a wait on an event nobody sets and an hour's sleep.
// Deadlines are either in the past or an hour away, so the model knows
// exactly which have passed. It predicts every result:
//  - a suspension point fails with -ECANCELED if the task was cancelled
//    and no shield is open, else with -ETIMEDOUT if a deadline has passed
//    among the scopes from the innermost out to (and including) the
//    innermost shielded one, else succeeds (level-triggered: again and
//    again, never consumed);
//  - weft_scope_exit of the innermost scope gives -ETIMEDOUT if its own
//    deadline passed while it was open (also when it was moved away
//    after passing), else 0; of a scope open further out, -EINVAL, and it
//    and every scope inside it are closed; of a scope not open, -EINVAL;
//  - weft_scope_deadline gives the deadline of an open scope, UINT64_MAX
//    for one that is not open.
// At the end the scopes left open are exited innermost first, each result
// checked, and the task must then see only its own cancellation.
//
// Byte format: op = b % 10, slot = (b / 10) % 8, kind = b / 80 (0..3).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <errno.h>

#include <weft.h>

#define FUZZ_NAME "scope_fuzz"
#include "tests/fuzz/fuzz_check.h"

namespace
{

constexpr int kSlots = 8;
constexpr uint64_t kHour = 3600ull * 1000000000ull;

enum When {
	PAST, // passed: entered at 1 ns, or shielded with timeout 0
	FAR, // an hour from now
	NONE // UINT64_MAX
};

struct Open {
	int slot;
	When when;
	uint64_t deadline; // the exact value where the model knows it
	bool shielded;
	bool expired; // moved away after its deadline passed
};

struct Model {
	std::vector<Open> stack; // innermost last
	bool cancelled = false;

	int find(int slot) const
	{
		for (size_t i = 0; i < stack.size(); i++)
			if (stack[i].slot == slot)
				return (int)i;
		return -1;
	}
	bool shielded() const
	{
		for (const Open &o : stack)
			if (o.shielded)
				return true;
		return false;
	}
	int pending() const
	{
		if (cancelled && !shielded())
			return -ECANCELED;
		for (size_t i = stack.size(); i-- > 0;) {
			if (stack[i].when == PAST)
				return -ETIMEDOUT;
			if (stack[i].shielded)
				break;
		}
		return 0;
	}
};

struct Input {
	const uint8_t *p;
	size_t n;
};

int body(void *arg)
{
	Input *in = static_cast<Input *>(arg);
	weft_scope sc[kSlots];
	weft_event ev;
	Model m;

	CHECK(weft_event_init(&ev) == 0, 0);
	for (size_t i = 0; i < in->n; i++) {
		unsigned b = in->p[i], op = b % 10, slot = (b / 10) % kSlots,
			 kind = b / 80;
		uint64_t now = weft_now();
		int at = m.find((int)slot);

		switch (op) {
		case 0: { // enter, absolute deadline
			When w = kind == 0 ? PAST : kind == 1 ? FAR : NONE;
			uint64_t d = w == PAST ? 1 :
				     w == FAR  ? now + kHour :
						 UINT64_MAX;
			weft_scope_enter_at(&sc[slot], d);
			if (at < 0) // (an open one is reported, unchanged)
				m.stack.push_back(
					{ (int)slot, w, d, false, false });
			break;
		}
		case 1: { // enter shielded, relative timeout
			When w = kind == 0 ? PAST : kind == 1 ? FAR : NONE;
			uint64_t t = w == PAST ? 0 :
				     w == FAR  ? kHour :
						 UINT64_MAX;
			weft_scope_enter_shielded(&sc[slot], t);
			if (at < 0)
				m.stack.push_back(
					{ (int)slot, w, 0, true, false });
			break;
		}
		case 2: { // exit
			int r = weft_scope_exit(&sc[slot]);
			if (at < 0) {
				CHECK(r == -EINVAL, i);
			} else if ((size_t)at + 1 == m.stack.size()) {
				const Open &o = m.stack.back();
				bool exp = o.when == PAST || o.expired;
				CHECK(r == (exp ? -ETIMEDOUT : 0), i);
				m.stack.pop_back();
			} else {
				CHECK(r == -EINVAL, i);
				m.stack.resize((size_t)at);
			}
			break;
		}
		case 3: { // move the deadline
			When w = kind == 0 ? PAST : kind == 1 ? FAR : NONE;
			uint64_t d = w == PAST ? 1 :
				     w == FAR  ? now + kHour :
						 UINT64_MAX;
			weft_scope_set_deadline(&sc[slot], d);
			if (at >= 0) {
				Open &o = m.stack[(size_t)at];
				if (o.when == PAST)
					o.expired = true;
				o.when = w;
				o.deadline = d;
			}
			break;
		}
		case 4: { // read a deadline
			uint64_t d = weft_scope_deadline(&sc[slot]);
			if (at < 0) {
				CHECK(d == UINT64_MAX, i);
				break;
			}
			const Open &o = m.stack[(size_t)at];
			if (o.when == NONE)
				CHECK(d == UINT64_MAX, i);
			else if (o.when == PAST)
				CHECK(d <= weft_now(), i);
			else
				CHECK(d > now + kHour / 2 && d != UINT64_MAX,
				      i);
			if (!o.shielded && o.when != NONE)
				CHECK(d == o.deadline, i);
			break;
		}
		case 5:
			CHECK(weft_checkpoint() == m.pending(), i);
			break;
		case 6:
			CHECK(weft_yield() == m.pending(), i);
			break;
		case 7:
			CHECK(weft_sleep(0) == m.pending(), i);
			break;
		case 8: // cancel itself (level-triggered: stays cancelled)
			CHECK(weft_cancel(weft_self()) == 1, i);
			m.cancelled = true;
			break;
		case 9: { // a wait that would never end, only when it must fail
			int want = m.pending();
			if (!want)
				break;
			if (kind & 1)
				CHECK(weft_event_wait(&ev) == want, i);
			else
				CHECK(weft_sleep(kHour) == want, i);
			break;
		}
		}
	}
	// Close what is left, innermost first.
	while (!m.stack.empty()) {
		const Open &o = m.stack.back();
		bool exp = o.when == PAST || o.expired;
		CHECK(weft_scope_exit(&sc[o.slot]) == (exp ? -ETIMEDOUT : 0),
		      in->n);
		m.stack.pop_back();
	}
	CHECK(weft_checkpoint() == (m.cancelled ? -ECANCELED : 0), in->n);
	return 0;
}

weft_runtime *rt;

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***)
{
	rt = fuzz_one_worker_runtime();
	return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Input in{ data, size };

	// The task's status: 0, or -ECANCELED when it cancelled itself
	// (weft_block_on reports a cancelled task's status as is).
	int r = weft_block_on(rt, body, &in);
	if (r != 0 && r != -ECANCELED)
		abort();
	return 0;
}
