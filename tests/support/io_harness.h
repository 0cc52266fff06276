// SPDX-License-Identifier: MIT
//
// tests/support/io_harness.h - shared by the I/O suites: run a body as a
// weft task on a runtime of the requested backend, small socket helpers.
#ifndef WEFT_TESTS_IO_HARNESS_H
#define WEFT_TESTS_IO_HARNESS_H

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

#include "tests/harness.h"
#include "tests/support/io_hooks.h"
#include "weft.h"

namespace io_test
{

struct Body {
	std::function<void()> fn;
};

inline int body(void *p)
{
	static_cast<Body *>(p)->fn();
	return 0;
}

// Runs fn as a task of a fresh runtime on `backend` ("io_uring"/"epoll").
inline void run(const std::string &backend, unsigned workers,
		std::function<void()> fn, unsigned ring_entries = 0)
{
	weft_config cfg{};
	cfg.workers = workers;
	cfg.ring_entries = ring_entries;
	if (backend == "epoll")
		cfg.flags |= WEFT_IO_EPOLL;
	weft_runtime *rt = nullptr;
	ASSERT_EQ(0, weft_runtime_new(&rt, &cfg));
	ASSERT_STREQ(backend.c_str(), weft_io_backend(rt));
	Body b{ std::move(fn) };
	EXPECT_EQ(0, weft_block_on(rt, body, &b));
#ifdef WEFT_TEST_HOOKS
	EXPECT_EQ(0u, weft_test_live_tasks(rt)) << "tasks leaked by the body";
#endif
	uint64_t sub, comp;
	io_test_stats(rt, &sub, &comp);
	EXPECT_EQ(sub, comp) << "io_submitted != io_completed";
	EXPECT_EQ(0, weft_runtime_free(rt));
}

// Fixture parameterised over the backend; io_uring skips (never passes
// silently) where the kernel cannot make a ring.
class IoBackend : public ::testing::TestWithParam<std::string>
{
protected:
	void SetUp() override
	{
		if (GetParam() == "io_uring" &&
		    strcmp(weft_io_backend(NULL), "io_uring") != 0)
			GTEST_SKIP() << "SKIPPED: io_uring unavailable here";
	}
	void Run(unsigned workers, std::function<void()> fn,
		 unsigned ring_entries = 0)
	{
		run(GetParam(), workers, std::move(fn), ring_entries);
	}
};

inline std::string backend_name(const ::testing::TestParamInfo<std::string> &i)
{
	return i.param;
}

inline uint16_t local_port(int fd)
{
	struct sockaddr_in sa;
	socklen_t l = sizeof(sa);
	getsockname(fd, (struct sockaddr *)&sa, &l);
	return ntohs(sa.sin_port);
}

inline uint64_t splitmix(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ULL;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
	return x ^ (x >> 31);
}

inline int count_fds()
{
	int n = 0;
	char path[64];
	for (int fd = 0; fd < 4096; fd++) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if (access(path, F_OK) == 0)
			n++;
	}
	return n;
}

// weft_close(@fd) on a thread outside the runtime, racing
// weft_runtime_free(@rt) (which must return 0); the close starts @spin
// turns after the free. Return: the close's result.
inline int close_racing_free(weft_runtime *rt, int fd, int spin)
{
	std::atomic<int> go{ 0 };
	int rc = 7;
	std::thread closer([&] {
		while (!go.load())
			;
		for (int k = 0; k < spin; k++)
			asm volatile("" ::: "memory");
		rc = weft_close(fd);
	});
	go = 1;
	EXPECT_EQ(0, weft_runtime_free(rt));
	closer.join();
	return rc;
}

} // namespace io_test

#endif
