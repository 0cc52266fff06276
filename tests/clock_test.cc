// SPDX-License-Identifier: MIT
//
// tests/clock_test.cc - RELIABILITY E8: clock jumps.
//
// Every weft deadline is CLOCK_MONOTONIC, and every wait that carries one
// is relative (io_uring_enter's timeout, epoll_wait's milliseconds) or
// absolute on CLOCK_MONOTONIC itself (the futexes' FUTEX_WAIT_BITSET,
// which the kernel translates out of a time namespace). Nothing reads
// CLOCK_REALTIME, so a jump of the wall clock cannot move a deadline; that
// needs no test of its own (and settimeofday would disturb a shared
// machine). What can go wrong is a deadline computed on one clock and
// handed to the kernel on another: in a time namespace whose monotonic
// clock runs far ahead of the host's, such a wait would sleep for the
// offset (months: the child's alarm ends it), and with the clocks swapped
// it would return at once and spin. So the child runs the runtime's timed
// waits inside such a namespace (liburing's timens-abs-timer.c does the
// same for IORING_TIMEOUT_ABS) and checks that each ends on time, on both
// backends, without burning the CPU. (An idle offload thread's futex
// deadline given on CLOCK_REALTIME instead, for one, spins until it
// passes: the CPU check catches it.)
#include <gtest/gtest.h>

#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "runtime/test_hooks.h"
#include "weft.h"

namespace
{

// Far enough ahead (about 116 days) that a wait on the host's clock by
// mistake cannot end within the child's alarm.
constexpr long long kOffsetSec = 10000000;

// How long an idle offload thread lingers (test hook).
constexpr uint64_t kIdle = WEFT_MSEC(100);

uint64_t cpu_ns()
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) *
		       1000000000u +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
}

struct Check {
	int failures = 0;
	void fail(const char *what, unsigned long long v)
	{
		fprintf(stderr, "clock_test: %s (%llu)\n", what, v);
		failures++;
	}
};

// Runs in the namespace: timed waits of every kind end on time.
int timed_waits(void *arg)
{
	Check *c = static_cast<Check *>(arg);
	const uint64_t lo = WEFT_MSEC(20), hi = WEFT_SEC(5);

	// A sleep: the worker waits in its ring, epoll or futex until the
	// timer is due (the other worker is idle, parked the same way).
	uint64_t t0 = weft_now(), cpu0 = cpu_ns();
	for (int i = 0; i < 10; i++)
		if (weft_sleep(WEFT_MSEC(2)) != 0)
			c->fail("weft_sleep failed", (unsigned)i);
	uint64_t took = weft_now() - t0, cpu = cpu_ns() - cpu0;
	if (took < lo || took > hi)
		c->fail("10 x 2 ms sleeps took (ns)", took);
	// Spinning would burn the whole time on one core at least.
	if (cpu > took / 2 + WEFT_MSEC(5))
		c->fail("sleeping burnt CPU (ns)", cpu);

	// A recv that a scope's deadline ends: the reactor's own wait.
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		c->fail("socketpair", (unsigned)errno);
		return 0;
	}
	char b;
	weft_scope s;
	t0 = weft_now();
	weft_scope_enter(&s, lo);
	ssize_t r = weft_recv(sv[0], &b, 1, 0);
	int e = weft_scope_exit(&s);
	took = weft_now() - t0;
	if (r != -ETIMEDOUT || e != -ETIMEDOUT)
		c->fail("a recv past its deadline did not time out",
			(unsigned long long)-r);
	if (took < lo || took > hi)
		c->fail("the recv's deadline took (ns)", took);
	close(sv[0]);
	close(sv[1]);

	// A task that waits for another one's sleep, on a 2-worker runtime:
	// the waker's timer fires on whichever worker holds it.
	t0 = weft_now(); // before the spawn: the task may start at once
	weft_task *t = weft_spawn(
		+[](void *) -> int {
			return weft_sleep(WEFT_MSEC(20));
		},
		nullptr);
	if (!t || weft_join(t) != 0)
		c->fail("join of a sleeping task failed", 0);
	took = weft_now() - t0;
	if (took < lo || took > hi)
		c->fail("join of a 20 ms sleeper took (ns)", took);

#ifdef WEFT_TEST_HOOKS
	// An offload thread idles on a futex with an absolute deadline
	// (FUTEX_WAIT_BITSET), then exits: kIdle after its call, not months
	// later, and without spinning in between.
	weft_stats st;
	if (weft_offload(
		    +[](void *) -> int {
			    return 0;
		    },
		    nullptr) != 0)
		c->fail("offload failed", 0);
	t0 = weft_now();
	cpu0 = cpu_ns();
	do {
		weft_sleep(WEFT_MSEC(5));
		weft_stats_get(nullptr, &st);
	} while (st.offload_threads && weft_now() - t0 < hi);
	took = weft_now() - t0;
	cpu = cpu_ns() - cpu0;
	if (st.offload_threads || took < kIdle / 2)
		c->fail("the idle offload thread left after (ns)", took);
	if (cpu > took / 2 + WEFT_MSEC(5))
		c->fail("the idle offload thread burnt CPU (ns)", cpu);
#endif
	return 0;
}

// In the namespace's first process: runs the waits on one backend.
int run_backend(bool epoll, uint64_t host_now)
{
	Check c;
	weft_config cfg{};
	cfg.workers = 2;
	if (epoll)
		cfg.flags = WEFT_IO_EPOLL;
	// The namespace is in effect: its clock is far past the host's.
	if (weft_now() < host_now + (uint64_t)kOffsetSec * 1000000000u) {
		fprintf(stderr, "clock_test: no offset seen\n");
		return 5;
	}
#ifdef WEFT_TEST_HOOKS
	weft_test_offload_idle_ns(kIdle);
#endif
	weft_runtime *rt;
	if (weft_runtime_new(&rt, &cfg) != 0)
		return 6;
	if (weft_block_on(rt, timed_waits, &c) != 0)
		c.failures++;
	weft_runtime_free(rt);
	return c.failures ? 1 : 0;
}

// Forks a child into a new user and time namespace whose monotonic clock
// is kOffsetSec ahead; its child (the first process inside) runs the
// waits. 77: namespaces unavailable here.
int in_time_namespace(bool epoll)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	const uint64_t host_now =
		(uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;

	fflush(nullptr);
	pid_t pid = fork();
	if (pid < 0)
		return 90;
	if (pid == 0) {
		alarm(60);
		if (unshare(CLONE_NEWUSER | CLONE_NEWTIME) != 0)
			_exit(77);
		FILE *f = fopen("/proc/self/timens_offsets", "w");
		if (!f)
			_exit(77);
		fprintf(f, "monotonic %lld 0\n", kOffsetSec);
		if (fclose(f) != 0)
			_exit(77);
		pid_t inner = fork();
		if (inner < 0)
			_exit(91);
		if (inner == 0) {
			alarm(30);
			_exit(run_backend(epoll, host_now));
		}
		int st;
		if (waitpid(inner, &st, 0) != inner)
			_exit(92);
		_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	}
	int st;
	if (waitpid(pid, &st, 0) != pid)
		return 93;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

class ClockJump : public ::testing::TestWithParam<const char *>
{
};

TEST_P(ClockJump, TimedWaitsEndOnTimeInATimeNamespaceFarAhead)
{
#if defined(__SANITIZE_THREAD__)
	GTEST_SKIP() << "SKIPPED: fork-then-threads under TSan";
#endif
	bool epoll = strcmp(GetParam(), "epoll") == 0;
	if (!epoll && strcmp(weft_io_backend(NULL), "io_uring") != 0)
		GTEST_SKIP() << "SKIPPED: io_uring unavailable here";
	int rc = in_time_namespace(epoll);
	if (rc == 77)
		GTEST_SKIP() << "SKIPPED: no user or time namespaces here";
	// 128 + SIGALRM: a wait slept on the host's clock.
	EXPECT_EQ(0, rc);
}

INSTANTIATE_TEST_SUITE_P(Backends, ClockJump,
			 ::testing::Values("io_uring", "epoll"),
			 [](const ::testing::TestParamInfo<const char *> &p) {
				 return std::string(p.param);
			 });

} // namespace
