// SPDX-License-Identifier: MIT
//
// tests/observe_test.cc - weft_stats_get, weft_dump_tasks, the blocking-task
// watchdog (slow_task_ns), SIGQUIT dumps, and offloading keeping a worker
// responsive where a direct blocking call does not.
#include <gtest/gtest.h>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/harness.h"
#include "tests/offload_support.h"

using weft_test::count_of;
using weft_test::run_cfg;
using weft_test::spawn_lambda;
using weft_test::StderrCapture;

namespace
{

std::string dump_to_string(const weft_runtime *rt)
{
	char *buf = nullptr;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	weft_dump_tasks(rt, f);
	fclose(f);
	std::string s(buf ? buf : "", len);
	free(buf);
	return s;
}

// The dump line of the task named @name, or "".
std::string line_of(const std::string &dump, const std::string &name)
{
	size_t p = dump.find("'" + name + "'");
	if (p == std::string::npos)
		return "";
	size_t b = dump.rfind('\n', p);
	size_t e = dump.find('\n', p);
	b = b == std::string::npos ? 0 : b + 1;
	return dump.substr(b, e == std::string::npos ? e : e - b);
}

void busy_ms(unsigned ms)
{
	uint64_t end = weft_now() + WEFT_MSEC(ms);
	while (weft_now() < end)
		;
}

} // namespace

TEST(Stats, CountsSpawnsCompletionsOffloadsAndLiveTasks)
{
	WEFT_TEST_RUN(2, [] {
		weft_stats a, b;
		weft_stats_get(nullptr, &a);
		EXPECT_GE(a.spawned, 1u);
		EXPECT_GE(a.live_tasks, 1u); // this body
		for (uint64_t r : a.reserved)
			EXPECT_EQ(0u, r);
		std::vector<weft_task *> ts;
		for (int i = 0; i < 10; i++)
			ts.push_back(weft_spawn([](void *) { return 0; },
						nullptr));
		for (weft_task *t : ts)
			ASSERT_EQ(0, weft_join(t));
		for (int i = 0; i < 5; i++)
			ASSERT_EQ(0, weft_offload([](void *) { return 0; },
						  nullptr));
		weft_stats_get(weft_runtime_current(), &b);
		EXPECT_EQ(a.spawned + 10, b.spawned);
		EXPECT_EQ(a.completed + 10, b.completed);
		EXPECT_EQ(a.offload_calls + 5, b.offload_calls);
		EXPECT_GE(b.offload_threads, 1u);
		EXPECT_EQ(b.spawned - b.completed, b.live_tasks);
		// From an offload fn, NULL is the caller's runtime too.
		weft_stats c{};
		ASSERT_EQ(0, weft_offload(
				     [](void *p) {
					     weft_stats_get(nullptr,
							    static_cast<weft_stats *>(
								    p));
					     return 0;
				     },
				     &c));
		EXPECT_GE(c.spawned, b.spawned);
	});
}

TEST(Stats, NullRuntimeFromAPlainThreadIsZero)
{
	weft_stats s;
	memset(&s, 0xab, sizeof(s));
	weft_stats_get(nullptr, &s);
	weft_stats zero;
	memset(&zero, 0, sizeof(zero));
	EXPECT_EQ(0, memcmp(&s, &zero, sizeof(s)));
}

// A task blocked on a queue shows as "waiting on queue"; others as what
// they wait on. The dump is taken from a plain thread and from a task.
TEST(Dump, ListsTasksWithWhatTheyWaitOn)
{
	weft_runtime *rt = nullptr;
	weft_config cfg{};
	cfg.workers = 2;
	ASSERT_EQ(0, weft_runtime_new(&rt, &cfg));
	struct Shared {
		weft_queue *q;
		weft_mutex m;
		weft_event ev;
		std::atomic<int> in_offload{ 0 }, release{ 0 };
		std::string dump_from_task;
		weft_runtime *rt;
	} sh;
	sh.rt = rt;
	weft_mutex_init(&sh.m);
	weft_event_init(&sh.ev);
	std::string from_thread;
	std::thread checker;
	ASSERT_EQ(0, weft_block_on(rt, [](void *p) {
		Shared *s = static_cast<Shared *>(p);
		s->q = weft_queue_new(1);
		weft_mutex_lock(&s->m);
		std::vector<weft_task *> ts;
		ts.push_back(spawn_lambda("qwaiter", [s] {
			void *it;
			return weft_queue_get(s->q, &it);
		}));
		ts.push_back(spawn_lambda("sleeper", [] {
			return weft_sleep(WEFT_SEC(30)) == -ECANCELED ? 0 : -1;
		}));
		ts.push_back(spawn_lambda("locker", [s] {
			int r = weft_mutex_lock(&s->m);
			if (r == 0)
				weft_mutex_unlock(&s->m);
			return 0;
		}));
		ts.push_back(spawn_lambda("evwaiter", [s] {
			return weft_event_wait(&s->ev);
		}));
		ts.push_back(spawn_lambda("offloader", [s] {
			return weft_offload(
				[](void *q) {
					Shared *x = static_cast<Shared *>(q);
					x->in_offload = 1;
					while (!x->release.load())
						usleep(500);
					return 0;
				},
				s);
		}));
		// Let all of them park (the wait kind is published by then):
		// dump until every one shows its wait, not for a fixed time
		// (30 ms was not always enough on a loaded machine).
		while (!s->in_offload.load())
			weft_sleep(WEFT_MSEC(1));
		weft_sleep(WEFT_MSEC(30));
		for (int i = 0; i < 1000; i++) {
			s->dump_from_task = dump_to_string(nullptr);
			const std::string &d = s->dump_from_task;
			if (line_of(d, "qwaiter").find("waiting on") !=
				    std::string::npos &&
			    line_of(d, "sleeper").find("waiting on") !=
				    std::string::npos &&
			    line_of(d, "locker").find("waiting on") !=
				    std::string::npos &&
			    line_of(d, "evwaiter").find("waiting on") !=
				    std::string::npos)
				break;
			weft_sleep(WEFT_MSEC(5));
		}
		// A plain thread dumps too (rt given).
		std::string other;
		std::thread th([&] { other = dump_to_string(s->rt); });
		th.join();
		s->dump_from_task += "\n--- from a thread ---\n" + other;
		// Release everybody.
		weft_queue_put(s->q, nullptr);
		weft_mutex_unlock(&s->m);
		weft_event_set(&s->ev);
		s->release = 1;
		weft_cancel(ts[1]);
		for (weft_task *t : ts)
			EXPECT_EQ(0, weft_join(t));
		weft_queue_free(s->q);
		return 0;
	}, &sh));
	EXPECT_EQ(0, weft_runtime_free(rt));
	const std::string &d = sh.dump_from_task;
	size_t split = d.find("--- from a thread ---");
	ASSERT_NE(std::string::npos, split);
	for (const std::string &part : { d.substr(0, split), d.substr(split) }) {
		EXPECT_NE(std::string::npos,
			  line_of(part, "qwaiter").find("waiting on queue"))
			<< part;
		EXPECT_NE(std::string::npos,
			  line_of(part, "sleeper").find("waiting on sleep"))
			<< part;
		EXPECT_NE(std::string::npos,
			  line_of(part, "locker").find("waiting on mutex"))
			<< part;
		EXPECT_NE(std::string::npos,
			  line_of(part, "evwaiter").find("waiting on event"))
			<< part;
		EXPECT_NE(std::string::npos,
			  line_of(part, "offloader").find("waiting on offload"))
			<< part;
		EXPECT_NE(std::string::npos, part.find("live tasks")) << part;
	}
	// The dumping task itself is running.
	EXPECT_NE(std::string::npos, d.substr(0, split).find("running on worker"))
		<< d;
	// How long: the sleeper has waited >= 30 ms, in ms units.
	EXPECT_NE(std::string::npos, line_of(d, "sleeper").find(" ms")) << d;
	weft_mutex_destroy(&sh.m);
	weft_event_destroy(&sh.ev);
}

// A 200 ms busy loop is reported once, by name and worker; a task that
// yields every millisecond for as long is never reported.
TEST(Watchdog, FiresOnceForABusyLoopNeverForAYielder)
{
	weft_config cfg{};
	cfg.workers = 2;
	cfg.slow_task_ns = WEFT_MSEC(50);
	StderrCapture cap;
	ASSERT_EQ(0, run_cfg(cfg, [] {
		weft_task *b = spawn_lambda("hog", [] {
			busy_ms(200);
			return 0;
		});
		weft_task *y = spawn_lambda("polite", [] {
			uint64_t end = weft_now() + WEFT_MSEC(300);
			while (weft_now() < end) {
				busy_ms(1);
				weft_yield();
			}
			return 0;
		});
		EXPECT_EQ(0, weft_join(b));
		EXPECT_EQ(0, weft_join(y));
	}));
	std::string err = cap.text();
	cap.restore();
	EXPECT_EQ(1u, count_of(err, "task 'hog' (id ")) << err;
	EXPECT_NE(std::string::npos, err.find("without suspending")) << err;
	EXPECT_NE(std::string::npos, err.find("on worker ")) << err;
	EXPECT_EQ(0u, count_of(err, "'polite'")) << err;
}

// The point of offloading: a task doing 300 ms of blocking work through
// weft_offload does not delay a ping task on the same (single) worker;
// doing it directly does, and the watchdog names it.
TEST(Watchdog, OffloadKeepsAPingTaskOnTimeADirectCallDoesNot)
{
	weft_config cfg{};
	cfg.workers = 1;
	cfg.slow_task_ns = WEFT_MSEC(50);
	for (int direct = 0; direct < 2; direct++) {
		std::atomic<uint64_t> worst{ 0 };
		StderrCapture cap;
		ASSERT_EQ(0, run_cfg(cfg, [&] {
			std::atomic<bool> stop{ false };
			weft_task *ping = spawn_lambda("ping", [&] {
				while (!stop.load()) {
					uint64_t t0 = weft_now();
					weft_sleep(WEFT_MSEC(1));
					uint64_t late = weft_now() - t0 -
							WEFT_MSEC(1);
					if (late > worst.load())
						worst.store(late);
				}
				return 0;
			});
			weft_sleep(WEFT_MSEC(5));
			weft_task *blocker = spawn_lambda("blocker", [direct] {
				if (direct) {
					usleep(300 * 1000);
					return 0;
				}
				return weft_offload(
					[](void *) {
						usleep(300 * 1000);
						return 0;
					},
					nullptr);
			});
			EXPECT_EQ(0, weft_join(blocker));
			weft_sleep(WEFT_MSEC(5));
			stop = true;
			EXPECT_EQ(0, weft_join(ping));
		}));
		std::string err = cap.text();
		cap.restore();
		if (direct) {
			EXPECT_GE(worst.load(), WEFT_MSEC(250))
				<< "direct: ping at most " << worst.load()
				<< " ns late";
			EXPECT_EQ(1u, count_of(err, "task 'blocker'")) << err;
		} else {
			// "a few ms" on an idle machine; the bound is
			// generous for a loaded 2-core one (ctest -j2 beside
			// other builds) and TSan, and still well below the
			// 300 ms a blocked worker gives.
			EXPECT_LT(worst.load(), WEFT_MSEC(150))
				<< "offloaded: ping at most " << worst.load()
				<< " ns late";
			EXPECT_EQ(0u, count_of(err, "'blocker'")) << err;
		}
	}
}

// WEFT_DUMP_ON_SIGQUIT: a SIGQUIT prints the dump (not a core dump); the
// previous disposition comes back when the runtime is freed.
TEST(Dump, SigquitPrintsTheDumpWhenAskedFor)
{
	struct sigaction before;
	ASSERT_EQ(0, sigaction(SIGQUIT, nullptr, &before));
	weft_config cfg{};
	cfg.workers = 2;
	cfg.flags = WEFT_DUMP_ON_SIGQUIT;
	StderrCapture capture;
	StderrCapture *cap = &capture;
	ASSERT_EQ(0, run_cfg(cfg, [cap] {
		weft_queue *q = weft_queue_new(1);
		weft_task *t = spawn_lambda("sq-waiter", [q] {
			void *it;
			return weft_queue_get(q, &it);
		});
		weft_sleep(WEFT_MSEC(10));
		// Raised in a helper thread that then sleeps in an
		// intercepted call: TSan delivers a signal to a thread only
		// at such calls, and a worker spinning or in a raw futex
		// syscall would hold it back. (The handler is process-wide:
		// a kill(2) works the same outside TSan.)
		std::thread th([] {
			pthread_kill(pthread_self(), SIGQUIT);
			usleep(50 * 1000);
		});
		th.join();
		// The dump comes from weft's thread: poll for it, bounded.
		for (int i = 0; i < 500 && count_of(cap->text(), "sq-waiter") == 0;
		     i++)
			weft_sleep(WEFT_MSEC(10));
		weft_queue_put(q, nullptr);
		EXPECT_EQ(0, weft_join(t));
		weft_queue_free(q);
	}));
	std::string err = capture.text();
	capture.restore();
	EXPECT_NE(std::string::npos,
		  line_of(err, "sq-waiter").find("waiting on queue"))
		<< err;
	struct sigaction after;
	ASSERT_EQ(0, sigaction(SIGQUIT, nullptr, &after));
	EXPECT_EQ((void *)before.sa_handler, (void *)after.sa_handler);
}

// Without the flag weft leaves SIGQUIT alone.
TEST(Dump, NoSigquitHandlerWithoutTheFlag)
{
	struct sigaction before, during;
	ASSERT_EQ(0, sigaction(SIGQUIT, nullptr, &before));
	WEFT_TEST_RUN(1, [&] { sigaction(SIGQUIT, nullptr, &during); });
	EXPECT_EQ((void *)before.sa_handler, (void *)during.sa_handler);
}

// Debug mode names tasks never joined nor detached at runtime end.
TEST(Dump, UnjoinedTasksAreNamedAtRuntimeEnd)
{
	weft_runtime *rt = nullptr;
	weft_config cfg{};
	cfg.workers = 1;
	ASSERT_EQ(0, weft_runtime_new(&rt, &cfg));
	StderrCapture cap;
	ASSERT_EQ(0, weft_block_on(rt, [](void *) {
		weft_task *t = spawn_lambda("forgotten", [] { return 0; });
		(void)t; // never joined nor detached
		weft_sleep(WEFT_MSEC(5));
		return 0;
	}, nullptr));
	EXPECT_EQ(0, weft_runtime_free(rt));
	std::string err = cap.text();
	cap.restore();
#ifndef NDEBUG
	EXPECT_NE(std::string::npos,
		  err.find("task 'forgotten' (id "))
		<< err;
	EXPECT_NE(std::string::npos, err.find("never joined nor detached"))
		<< err;
#endif
}

// RELIABILITY H7: names are copied and truncated, printed with "%s"; with
// the watchdog on, a running task's dump line says for how long.
TEST(Dump, HostileNamesAndRunningDuration)
{
	weft_config cfg{};
	cfg.workers = 2;
	cfg.slow_task_ns = WEFT_SEC(10); // watchdog samples, never reports
	std::string d;
	ASSERT_EQ(0, run_cfg(cfg, [&] {
		std::atomic<bool> stop{ false };
		const char *hostile =
			"%n%s%x\xff\xfe-a-name-longer-than-thirty-one-bytes";
		weft_runtime *rt = weft_runtime_current();
		// The dump and the stop come from a plain thread: a task
		// sleeping meanwhile could have its timer on the worker the
		// spinner holds (README: timers of a busy worker fire late).
		std::thread th([&] {
			// The monitor samples every 250 ms (the cap); two
			// samples of the same slice give it a start time.
			usleep(700 * 1000);
			d = dump_to_string(rt);
			stop = true;
		});
		weft_task *t = spawn_lambda(hostile, [&] {
			while (!stop.load())
				; // running, never suspends
			return 0;
		});
		EXPECT_EQ(0, weft_join(t));
		th.join();
	}));
	// Truncated to 31 bytes, verbatim.
	std::string want = std::string("'") +
			   std::string("%n%s%x\xff\xfe-a-name-longer-than-thirty-one-bytes")
				   .substr(0, 31) +
			   "'";
	size_t p = d.find(want);
	ASSERT_NE(std::string::npos, p) << d;
	std::string line = d.substr(p, d.find('\n', p) - p);
	EXPECT_NE(std::string::npos, line.find("running on worker")) << line;
	EXPECT_NE(std::string::npos, line.find(" ms")) << line;
}

// Env WEFT_DEBUG=1 turns the watchdog on at 100 ms when slow_task_ns is 0.
TEST(Watchdog, WeftDebugEnvMeans100ms)
{
	const char *old = getenv("WEFT_DEBUG");
	std::string saved = old ? old : "";
	setenv("WEFT_DEBUG", "1", 1);
	weft_config cfg{};
	cfg.workers = 2;
	StderrCapture cap;
	int r = run_cfg(cfg, [] {
		weft_task *t = spawn_lambda("env-hog", [] {
			busy_ms(60); // under 100 ms: not reported
			weft_yield();
			busy_ms(250);
			return 0;
		});
		EXPECT_EQ(0, weft_join(t));
	});
	std::string err = cap.text();
	cap.restore();
	if (old)
		setenv("WEFT_DEBUG", saved.c_str(), 1);
	else
		unsetenv("WEFT_DEBUG");
	ASSERT_EQ(0, r);
	EXPECT_EQ(1u, count_of(err, "task 'env-hog'")) << err;
}

namespace
{
int return_zero(void *)
{
	return 0;
}
} // namespace

// Debug mode gives an unjoined task's spawn site (file:line) when the
// weft_spawn* macros of task.h recorded one; the functions stay callable by
// name and through a pointer (no site then).
TEST(Dump, UnjoinedTasksNameTheirSpawnSite)
{
	static unsigned line_named, line_ex;
	weft_runtime *rt = nullptr;
	weft_config cfg{};
	cfg.workers = 1;
	ASSERT_EQ(0, weft_runtime_new(&rt, &cfg));
	StderrCapture cap;
	ASSERT_EQ(0, weft_block_on(rt, [](void *) {
		// Never joined nor detached: reported at runtime end.
		line_named = __LINE__ + 1;
		weft_task *a = weft_spawn_named("site-named", return_zero, nullptr);
		weft_spawn_opts o{};
		o.name = "site-ex";
		weft_task *b = nullptr;
		line_ex = __LINE__ + 1;
		EXPECT_EQ(0, weft_spawn_ex(&b, &o, return_zero, nullptr));
		// The real functions, by pointer and parenthesised name.
		weft_task *(*fp)(weft_fn, void *) = &weft_spawn;
		weft_task *c = fp(return_zero, nullptr);
		weft_task *d = (weft_spawn_named)("site-unknown", return_zero,
						  nullptr);
		EXPECT_NE(nullptr, a);
		EXPECT_NE(nullptr, b);
		EXPECT_NE(nullptr, c);
		EXPECT_NE(nullptr, d);
		EXPECT_EQ(0, weft_join(c));
		weft_sleep(WEFT_MSEC(5));
		return 0;
	}, nullptr));
	EXPECT_EQ(0, weft_runtime_free(rt));
	std::string err = cap.text();
	cap.restore();
#ifndef NDEBUG
	EXPECT_NE(std::string::npos,
		  err.find("task 'site-named' (id ")) << err;
	EXPECT_NE(std::string::npos,
		  err.find("spawned at " __FILE__ ":" +
			   std::to_string(line_named) +
			   " was never joined nor detached"))
		<< err;
	EXPECT_NE(std::string::npos,
		  err.find("spawned at " __FILE__ ":" +
			   std::to_string(line_ex) +
			   " was never joined nor detached"))
		<< err;
	// Through the function itself: named, no site.
	size_t p = err.find("task 'site-unknown' (id ");
	ASSERT_NE(std::string::npos, p) << err;
	std::string line = err.substr(p, err.find('\n', p) - p);
	EXPECT_EQ(std::string::npos, line.find("spawned at")) << line;
	EXPECT_NE(std::string::npos, line.find("was never joined")) << line;
	EXPECT_EQ(3u, count_of(err, "never joined nor detached")) << err;
#else
	(void)line_named;
	(void)line_ex;
#endif
}

// Every state of a dump line has an age, the watchdog on or off: a task
// kept runnable behind a busy one on a single worker shows how long it
// has been runnable (not early), and the running one how long it runs.
TEST(Dump, RunnableAndRunningTasksShowHowLong)
{
	weft_config cfg{};
	cfg.workers = 1; // the child cannot run while the body spins
	std::string d;
	ASSERT_EQ(0, run_cfg(cfg, [&] {
		weft_task *t = spawn_lambda("queued", [] { return 0; });
		busy_ms(60); // never suspends: "queued" stays runnable
		d = dump_to_string(nullptr);
		EXPECT_EQ(0, weft_join(t));
	}));
	std::string q = line_of(d, "queued");
	unsigned long long ms = ~0ull;
	size_t p = q.find("runnable for ~");
	ASSERT_NE(std::string::npos, p) << d;
	ASSERT_EQ(1, sscanf(q.c_str() + p, "runnable for ~%llu ms", &ms)) << q;
	// The coarse clock ticks every 1-10 ms: allow two ticks early. The
	// upper bound only catches a missing stamp (an age since boot).
	EXPECT_GE(ms, 40u) << q;
	EXPECT_LT(ms, 60000u) << q;
	// The body itself: running, with an age.
	p = d.find("running on worker 0 for ~");
	EXPECT_NE(std::string::npos, p) << d;
}

// RELIABILITY F2: a cancelled task that keeps calling suspension points.
// Each call fails at once (level-triggered; a one-hour sleep that did not
// would hang the test), and the watchdog names the task with a count that
// grows, rate-limited (each report at least double the previous count).
TEST(Watchdog, ReportsATaskThatIgnoresItsCancellation)
{
	weft_config cfg{};
	cfg.workers = 2;
	cfg.slow_task_ns = WEFT_MSEC(20); // samples every 5 ms
	StderrCapture cap;
	std::atomic<bool> stop{ false };
	std::atomic<long> fails{ 0 }, other{ 0 };
	ASSERT_EQ(0, run_cfg(cfg, [&] {
		weft_task *t = spawn_lambda("stubborn", [&] {
			while (!stop.load()) {
				if (weft_sleep(WEFT_SEC(3600)) == -ECANCELED)
					fails++;
				else
					other++;
			}
			return 7;
		});
		weft_cancel(t);
		// Stop the loop once the report is out (hang guard: the
		// test's timeout), from a plain thread: the stubborn task
		// holds a worker, and this task must not need it.
		std::thread th([&] {
			uint64_t guard = weft_now() + WEFT_SEC(30);
			while (cap.text().find("ignored ") == std::string::npos &&
			       weft_now() < guard)
				usleep(1000);
			usleep(100 * 1000); // let the count double a few times
			stop = true;
		});
		EXPECT_EQ(7, weft_join(t));
		th.join();
	}));
	std::string err = cap.text();
	cap.restore();
	EXPECT_EQ(0, other.load());
	EXPECT_GE(fails.load(), 100);
	std::vector<unsigned long> counts;
	const std::string key = "task 'stubborn' (id ";
	for (size_t p = err.find(key); p != std::string::npos;
	     p = err.find(key, p + 1)) {
		size_t q = err.find(") ignored ", p);
		if (q == std::string::npos || q > err.find('\n', p))
			continue; // the slow-task line
		counts.push_back(strtoul(err.c_str() + q + 10, nullptr, 10));
	}
	ASSERT_GE(counts.size(), 1u) << err;
	EXPECT_GE(counts[0], 100u) << err;
	for (size_t i = 1; i < counts.size(); i++)
		EXPECT_GE(counts[i], 2 * counts[i - 1]) << err;
	EXPECT_LE(counts.size(), 40u) << err; // doubling: ~log2(fails)
	EXPECT_NE(std::string::npos, err.find(" cancellations")) << err;
}

// RELIABILITY F2 at shutdown (README and weft_runtime_free's doc: the
// drain waits for such a task): weft_runtime_free waits for it, names it
// after the grace period with its count, and returns once it stops.
TEST(Shutdown, WaitsForATaskIgnoringCancellationAndNamesIt)
{
#ifndef WEFT_TEST_HOOKS
	GTEST_SKIP() << "needs the WEFT_TEST_HOOKS build";
#else
	weft_test_drain_grace_ns(WEFT_MSEC(50));
	static std::atomic<bool> stop, done;
	stop = false;
	done = false;
	weft_runtime *rt = nullptr;
	weft_config cfg{};
	cfg.workers = 2; // no watchdog: the drain alone reports
	ASSERT_EQ(0, weft_runtime_new(&rt, &cfg));
	StderrCapture cap;
	ASSERT_EQ(0, weft_block_on(rt, [](void *) {
		weft_task *t = spawn_lambda("deaf", [] {
			while (!stop.load())
				weft_sleep(WEFT_MSEC(1)); // fails once cancelled
			done = true;
			return 0;
		});
		weft_detach(t);
		return 0;
	}, nullptr));
	std::thread th([&] {
		uint64_t guard = weft_now() + WEFT_SEC(30);
		while (cap.text().find("shutdown is waiting for task 'deaf'") ==
			       std::string::npos &&
		       weft_now() < guard)
			usleep(1000);
		stop = true;
	});
	EXPECT_EQ(0, weft_runtime_free(rt)); // cancels "deaf", waits for it
	th.join();
	EXPECT_TRUE(done.load());
	std::string err = cap.text();
	cap.restore();
	weft_test_drain_grace_ns(0);
	EXPECT_NE(std::string::npos,
		  err.find("shutdown is waiting for task 'deaf' (id "))
		<< err;
	EXPECT_NE(std::string::npos, err.find("cancellations")) << err;
#endif
}
