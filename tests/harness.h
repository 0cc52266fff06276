// SPDX-License-Identifier: MIT
//
// tests/harness.h - run a googletest body as a weft task.
//
//   WEFT_TEST_RUN(2, [&] { ... weft calls ... });
//
// starts a runtime with the given worker count, runs the lambda as a task
// (through weft_block_on), checks that no task the body spawned is still
// alive when it returns (a leak), then frees the runtime.
//
// It also holds the helpers several test files share: go() and friends to
// spawn lambdas as tasks (sync_test, sync_stress_test, queue_test), and the
// stress tests' watchdog, time budget and PRNG (sched_stress_test,
// task_stress_test).
#ifndef WEFT_TESTS_HARNESS_H
#define WEFT_TESTS_HARNESS_H

#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "weft.h"
#include "runtime/test_hooks.h"

namespace weft_test {

// WEFT_TEST_SCALE divides stress sizes (10 under sanitizers); never to 0.
inline uint64_t scaled(uint64_t n)
{
	const char *s = getenv("WEFT_TEST_SCALE");
	uint64_t d = s ? strtoull(s, nullptr, 10) : 1;
	if (d == 0)
		d = 1;
	uint64_t r = n / d;
	return r ? r : 1;
}

struct Body {
	std::function<void()> fn;
};

inline int run_body(void *p)
{
	static_cast<Body *>(p)->fn();
	return 0;
}

// Run fn as a task on a fresh runtime of `workers` workers.
inline void run(unsigned workers, std::function<void()> fn,
		bool check_leaks = true)
{
	weft_config cfg{};
	cfg.workers = workers;
	weft_runtime *rt = nullptr;
	ASSERT_EQ(0, weft_runtime_new(&rt, &cfg));
	Body b{ std::move(fn) };
	EXPECT_EQ(0, weft_block_on(rt, run_body, &b));
#ifdef WEFT_TEST_HOOKS
	if (check_leaks) {
		EXPECT_EQ(0u, weft_test_live_tasks(rt))
			<< "tasks still alive when the test body returned";
	}
#else
	(void)check_leaks;
#endif
	EXPECT_EQ(0, weft_runtime_free(rt));
}

// ------------------------------------------------------------ task helpers

struct Fn {
	std::function<int()> f;
};

inline int run_fn(void *p)
{
	std::unique_ptr<Fn> f(static_cast<Fn *>(p));
	return f->f();
}

// Spawn a lambda as a task (joined by the caller).
inline weft_task *go(std::function<int()> f)
{
	auto *p = new Fn{ std::move(f) };
	weft_task *t = weft_spawn(run_fn, p);
	if (!t)
		delete p;
	return t;
}

inline int call_lambda(void *p)
{
	return (*static_cast<std::function<int()> *>(p))();
}

// Run a lambda under weft_shield() (in the calling task).
inline int shield(std::function<int()> f)
{
	return weft_shield(call_lambda, &f);
}

// A suspension point that lets the worker's other runnable tasks run,
// including ones that are not on any queue yet (a timer due now). weft_yield()
// runs a task woken into the LIFO slot and the deque's oldest before the
// yielder (Yield.RunsTheTaskItJustWokeFirst); this also passes a timer
// tick.
inline void let_others_run()
{
	weft_sleep(WEFT_USEC(1));
}

// Let other tasks run until pred() holds; false after the hang guard.
template <class P>
inline bool wait_until(P pred, uint64_t guard_ns = WEFT_SEC(30))
{
	uint64_t end = weft_now() + guard_ns;
	while (!pred()) {
		if (weft_now() > end)
			return false;
		weft_sleep(WEFT_USEC(20));
	}
	return true;
}

// Let other tasks run until the runtime's task dump (weft_dump_tasks)
// contains @what, e.g. "waiting on join"; false after the hang guard. For
// tests that need another task to be inside a wait before they go on: a
// fixed sleep is not enough under TSan on a loaded machine.
inline bool wait_for_dump(const char *what, uint64_t guard_ns = WEFT_SEC(30))
{
	return wait_until(
		[what] {
			char *buf = nullptr;
			size_t len = 0;
			FILE *f = open_memstream(&buf, &len);
			if (!f)
				return false;
			weft_dump_tasks(weft_runtime_current(), f);
			fclose(f);
			bool found = buf && strstr(buf, what) != nullptr;
			free(buf);
			return found;
		},
		guard_ns);
}

// Run a() in the calling task and b() in a helper task at about the same
// moment, b() @offset spin loops later (negative: earlier). With two or
// more workers the helper runs on another worker, spinning until the
// signal, so both sides really run in parallel; neither side ever spins
// for long without suspending (a worker must stay free to run the other).
inline void race(std::function<void()> a, std::function<void()> b, int offset)
{
	std::atomic<int> ready{ 0 }, go_flag{ 0 };
	auto spin = [](int n) {
		for (int k = n; k > 0; k--)
			__asm__ __volatile__("" ::: "memory");
	};
	auto wait_for = [](std::atomic<int> &f) {
		uint64_t t0 = weft_now();
		while (!f.load(std::memory_order_acquire))
			if (weft_now() - t0 > WEFT_USEC(200))
				weft_sleep(WEFT_USEC(1)); // let the other run
	};
	weft_task *h = go([&] {
		ready.store(1, std::memory_order_release);
		wait_for(go_flag);
		spin(offset);
		b();
		return 0;
	});
	wait_for(ready);
	go_flag.store(1, std::memory_order_release);
	spin(-offset);
	a();
	weft_join(h);
}

// ------------------------------------------------------------ queue helpers

// A queue item from a number and back.
inline void *P(uintptr_t v)
{
	return reinterpret_cast<void *>(v);
}

inline uintptr_t V(void *p)
{
	return reinterpret_cast<uintptr_t>(p);
}

struct QueueDeleter {
	void operator()(weft_queue *q) const
	{
		weft_queue_free(q);
	}
};
using QueuePtr = std::unique_ptr<weft_queue, QueueDeleter>;

// ------------------------------------------------------------ stress helpers

using Clock = std::chrono::steady_clock;

inline unsigned test_scale()
{
	const char *s = getenv("WEFT_TEST_SCALE");
	unsigned long v = s ? strtoul(s, nullptr, 10) : 1;
	return v ? (unsigned)v : 1;
}

inline uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

// Entries in a /proc directory (fds, threads), not counting "." and "..",
// nor the fd opendir itself holds while it reads /proc/self/fd.
inline unsigned proc_entries(const char *path)
{
	DIR *d = opendir(path);
	unsigned n = 0;

	if (!d)
		return 0;
	while (struct dirent *e = readdir(d))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - (strcmp(path, "/proc/self/fd") == 0);
}

// The process's threads, once the ones that are exiting are gone.
// pthread_join() returns as soon as the kernel clears the thread's tid
// (CLONE_CHILD_CLEARTID), which is before the thread is reaped, so a
// thread just joined may still be listed in /proc/self/task for a moment:
// a count taken right after a join can be one too high. This waits (up
// to 2 s) until the count is at most `at_most`, or until it has not
// changed for 20 ms when no bound is given, and returns it.
inline unsigned live_threads(unsigned at_most = ~0u)
{
	unsigned n = proc_entries("/proc/self/task");
	unsigned same = 0;

	for (int i = 0; i < 2000; i++) {
		if (at_most != ~0u ? n <= at_most : same >= 20)
			break;
		usleep(1000);
		unsigned m = proc_entries("/proc/self/task");
		same = m == n ? same + 1 : 0;
		n = m;
	}
	return n;
}

// Print every thread's stack with gdb (installed on CI), to stderr.
inline void dump_threads()
{
	if (system("command -v gdb >/dev/null 2>&1") != 0)
		return;
	prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
	char cmd[256];
	snprintf(cmd, sizeof(cmd),
		 "timeout 60 gdb -batch -nx -p %d -ex 'thread apply all bt' "
		 "</dev/null 1>&2 2>/dev/null",
		 (int)getpid());
	if (system(cmd) != 0)
		fprintf(stderr, "(gdb failed)\n");
}

// Watchdog: aborts with a report if progress() does not change for
// 10 s x WEFT_TEST_SCALE. report() must only read atomics: it runs while
// the test is stuck.
class Watchdog
{
public:
	Watchdog(std::string what, std::function<uint64_t()> progress,
		 std::function<void()> report)
	    : what_(std::move(what)), progress_(std::move(progress)),
	      report_(std::move(report)), th_([this] {
		      loop();
	      })
	{
	}
	~Watchdog()
	{
		stop_.store(true);
		th_.join();
	}
	// Give up now: print the report and the stacks, then abort.
	[[noreturn]] void fire(const char *why)
	{
		fprintf(stderr, "\n=== WATCHDOG %s: %s\n", what_.c_str(), why);
		report_();
		dump_threads();
		fflush(stderr);
		abort();
	}

private:
	void loop()
	{
		const auto limit = std::chrono::seconds(10) * test_scale();
		uint64_t last = progress_();
		auto since = Clock::now();
		while (!stop_.load()) {
			std::this_thread::sleep_for(
				std::chrono::milliseconds(50));
			uint64_t now = progress_();
			if (now != last) {
				last = now;
				since = Clock::now();
			} else if (Clock::now() - since > limit) {
				char why[96];
				snprintf(
					why, sizeof(why),
					"no progress for %u s (counter %" PRIu64
					")",
					10 * test_scale(), now);
				fire(why);
			}
		}
	}

	std::string what_;
	std::function<uint64_t()> progress_;
	std::function<void()> report_;
	std::atomic<bool> stop_{ false };
	std::thread th_;
};

// The time budget of one test: it stops early after this and still checks
// what ran.
constexpr auto kBudget = std::chrono::seconds(20);

struct Deadline {
	Clock::time_point end;
	explicit Deadline(Clock::duration d) : end(Clock::now() + d)
	{
	}
	bool passed() const
	{
		return Clock::now() >= end;
	}
};

inline std::string worker_name(const ::testing::TestParamInfo<unsigned> &i)
{
	return "w" + std::to_string(i.param);
}

} // namespace weft_test

#define WEFT_TEST_RUN(workers, ...) weft_test::run((workers), __VA_ARGS__)

#endif
