// SPDX-License-Identifier: MIT
//
// tests/fuzz/queue_fuzz.cc - libFuzzer target for weft_queue
// (runtime/queue.c), model-based (RELIABILITY 3.6, item 2).
//
// One 1-worker runtime lives for the whole fuzzing session; each input is
// one weft_block_on() of a driver task that makes a queue (capacity 1-4)
// and decodes the bytes into operations: try_put, try_get, a put / get /
// join that may block (each run as its own spawned task), close,
// task_done, len, and cancelling one of the waiting tasks. A model of a
// bounded FIFO with close semantics predicts every result: FIFO order of
// items, waiting getters served first come first served, a waiting putter's
// item pulled into the slot a get frees, items in = items out + len, close
// wakes waiters with -EPIPE and later gets drain and then get -EPIPE, puts
// get -EPIPE, a cancelled waiter returns -ECANCELED having put or taken
// nothing, join waits until task_done has matched every put.
//
// After each operation the driver yields until the runtime agrees with the
// model: every task the model says is finished has finished, and the
// queue's waiter lists have the model's lengths (on one worker a woken
// task runs at the driver's next yield). Then each finished task's result
// is compared. At the end the queue is closed, what is left drained, and
// every item must have come out exactly once.
//
// Byte format: the first byte picks the capacity; each op is one byte,
// op = b % 11, arg = b / 11.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <vector>
#include <errno.h>

#include <weft.h>

extern "C" size_t weft__queue_nwaiters(weft_queue *q, int which);

#define FUZZ_NAME "queue_fuzz"
#include "tests/fuzz/fuzz_check.h"

namespace
{

constexpr size_t kMaxTasks = 48;

enum Kind {
	PUT,
	GET,
	JOIN
};

// One spawned blocking call. The task writes result/got then done.
struct Op {
	Kind kind;
	weft_queue *q;
	uintptr_t item; // PUT: what it puts
	void *got = nullptr; // GET: what it got
	int result = 1;
	bool done = false;
	weft_task *t = nullptr;
	// the model's prediction, once it has one
	bool expect_done = false;
	int expect_result = 0;
	uintptr_t expect_item = 0;
	bool checked = false;
};

int op_main(void *arg)
{
	Op *o = static_cast<Op *>(arg);

	switch (o->kind) {
	case PUT:
		o->result = weft_queue_put(o->q, (void *)o->item);
		break;
	case GET:
		o->result = weft_queue_get(o->q, &o->got);
		break;
	case JOIN:
		o->result = weft_queue_join(o->q);
		break;
	}
	o->done = true;
	return 0;
}

struct Driver {
	const uint8_t *data;
	size_t size;
	weft_queue *q = nullptr;
	size_t cap = 1;
	// the model
	std::deque<uintptr_t> ring;
	std::deque<Op *> getters, putters, joiners;
	bool closed = false;
	size_t unfinished = 0;
	uintptr_t next_item = 1;
	std::vector<Op *> ops;
	std::vector<uint8_t> out_count; // per item id: times it came out
	std::vector<uint8_t> in_count; // per item id: times it was put
	size_t step = 0;

	void finish(Op *o, int result, uintptr_t item = 0)
	{
		o->expect_done = true;
		o->expect_result = result;
		o->expect_item = item;
	}

	void new_item()
	{
		out_count.push_back(0);
		in_count.push_back(0);
	}

	void came_out(uintptr_t id)
	{
		CHECK(id > 0 && id < next_item, step);
		CHECK(out_count[id] == 0, step); // exactly once
		out_count[id]++;
	}

	// A successful put of @id, as runtime/queue.c's deliver(): the first
	// waiting getter gets it, else the ring (the caller checked room).
	void deliver(uintptr_t id)
	{
		in_count[id]++;
		unfinished++;
		if (!getters.empty()) {
			Op *g = getters.front();
			getters.pop_front();
			finish(g, 0, id);
			return;
		}
		CHECK(ring.size() < cap, step);
		ring.push_back(id);
	}

	bool can_deliver() const
	{
		return !getters.empty() || ring.size() < cap;
	}

	// A get that found an item: the slot it frees takes the first
	// waiting putter's item.
	uintptr_t ring_pop()
	{
		uintptr_t id = ring.front();
		ring.pop_front();
		if (!putters.empty()) {
			Op *p = putters.front();
			putters.pop_front();
			ring.push_back(p->item);
			in_count[p->item]++;
			unfinished++;
			finish(p, 0);
		}
		return id;
	}

	void do_task_done()
	{
		weft_queue_task_done(q);
		if (unfinished == 0)
			return; // reported and ignored
		if (--unfinished == 0) {
			for (Op *j : joiners)
				finish(j, 0);
			joiners.clear();
		}
	}

	void do_close()
	{
		weft_queue_close(q);
		if (closed)
			return;
		closed = true;
		for (Op *p : putters)
			finish(p, -EPIPE);
		putters.clear();
		for (Op *g : getters)
			finish(g, -EPIPE);
		getters.clear();
	}

	void spawn(Kind k)
	{
		if (ops.size() >= kMaxTasks)
			return;
		Op *o = new Op{ k, q, 0 };
		ops.push_back(o);
		switch (k) {
		case PUT:
			o->item = next_item++;
			new_item();
			if (closed)
				finish(o, -EPIPE);
			else if (can_deliver()) {
				deliver(o->item);
				finish(o, 0);
			} else
				putters.push_back(o);
			break;
		case GET:
			if (!ring.empty()) {
				uintptr_t id = ring_pop();
				finish(o, 0, id);
			} else if (closed)
				finish(o, -EPIPE);
			else
				getters.push_back(o);
			break;
		case JOIN:
			if (unfinished == 0)
				finish(o, 0);
			else
				joiners.push_back(o);
			break;
		}
		o->t = weft_spawn(op_main, o);
		CHECK(o->t != nullptr, step);
	}

	// Cancel the @n-th waiting task (getters, then putters, then joiners).
	void cancel_waiter(size_t n)
	{
		size_t total = getters.size() + putters.size() + joiners.size();
		if (total == 0)
			return;
		n %= total;
		std::deque<Op *> *l = &getters;
		if (n >= getters.size()) {
			n -= getters.size();
			l = &putters;
			if (n >= putters.size()) {
				n -= putters.size();
				l = &joiners;
			}
		}
		Op *o = (*l)[n];
		l->erase(l->begin() + (long)n);
		finish(o, -ECANCELED);
		CHECK(weft_cancel(o->t) == 1, step); // it was waiting
	}

	bool settled()
	{
		for (Op *o : ops)
			if (o->expect_done && !o->done)
				return false;
		return weft__queue_nwaiters(q, 0) == getters.size() &&
		       weft__queue_nwaiters(q, 1) == putters.size() &&
		       weft__queue_nwaiters(q, 2) == joiners.size();
	}

	void settle()
	{
		for (int i = 0; !settled(); i++) {
			CHECK(i < 10000, step); // the runtime never got there
			weft_yield();
		}
		for (Op *o : ops) {
			if (!o->expect_done) {
				CHECK(!o->done, step); // should still wait
				continue;
			}
			if (o->checked)
				continue;
			o->checked = true;
			CHECK(o->result == o->expect_result, step);
			if (o->kind == GET && o->result == 0) {
				CHECK((uintptr_t)o->got == o->expect_item,
				      step);
				came_out(o->expect_item);
			}
		}
		CHECK(weft_queue_len(q) == ring.size(), step);
	}

	void run()
	{
		size_t i = 0;

		cap = size ? data[i++] % 4 + 1 : 1;
		q = weft_queue_new(cap);
		CHECK(q != nullptr, step);
		new_item(); // id 0 is never used

		while (i < size) {
			uint8_t b = data[i++];
			unsigned arg = b / 11;

			step++;
			switch (b % 11) {
			case 0:
			case 1: { // try_put
				uintptr_t id = next_item++;
				new_item();
				int r = weft_queue_try_put(q, (void *)id);
				if (closed) {
					CHECK(r == -EPIPE, step);
				} else if (can_deliver()) {
					CHECK(r == 0, step);
					deliver(id);
				} else {
					CHECK(r == -EAGAIN, step);
				}
				break;
			}
			case 2:
			case 3: { // try_get
				void *x = nullptr;
				int r = weft_queue_try_get(q, &x);
				if (!ring.empty()) {
					CHECK(r == 0, step);
					uintptr_t id = ring_pop();
					CHECK((uintptr_t)x == id, step);
					came_out(id);
				} else {
					CHECK(r == (closed ? -EPIPE : -EAGAIN),
					      step);
					CHECK(x == nullptr, step);
				}
				break;
			}
			case 4:
				spawn(PUT);
				break;
			case 5:
				spawn(GET);
				break;
			case 6:
				spawn(JOIN);
				break;
			case 7:
				// close is rare: most inputs should stay open long
				if (arg % 4 == 0)
					do_close();
				break;
			case 8:
				// one too many is legal (reported on stderr and
				// ignored): tried now and then, not every time
				if (unfinished > 0 || arg % 8 == 0)
					do_task_done();
				break;
			case 9:
				cancel_waiter(arg);
				break;
			case 10:
				CHECK(weft_queue_len(q) == ring.size(), step);
				break;
			}
			settle();
		}

		// the end: close, drain, cancel the joiners, reap every task
		step++;
		do_close();
		while (!joiners.empty())
			cancel_waiter(getters.size() + putters.size());
		settle();
		for (;;) {
			void *x = nullptr;
			int r = weft_queue_try_get(q, &x);
			if (ring.empty()) {
				CHECK(r == -EPIPE, step);
				break;
			}
			CHECK(r == 0, step);
			uintptr_t id = ring_pop();
			CHECK((uintptr_t)x == id, step);
			came_out(id);
		}
		CHECK(weft_queue_len(q) == 0, step);
		// items in = items out: each put item came out exactly once
		for (uintptr_t id = 1; id < next_item; id++)
			CHECK(in_count[id] <= 1 &&
				      out_count[id] == in_count[id],
			      step);
		for (Op *o : ops) {
			CHECK(weft_join(o->t) == 0, step);
			delete o;
		}
		weft_queue_free(q);
	}
};

int driver_main(void *arg)
{
	static_cast<Driver *>(arg)->run();
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
	Driver d;

	d.data = data;
	d.size = size;
	if (weft_block_on(rt, driver_main, &d) != 0)
		abort();
	return 0;
}
