// SPDX-License-Identifier: MIT
// tests/io_observe_test.cc - where the I/O layer meets the rest: I/O
// counters in weft_stats_get, an I/O wait named in weft_dump_tasks, and the
// epoll backend's blocking file calls running on the offload pool.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "tests/harness.h"

namespace
{

void run_with(unsigned flags, std::function<void()> body)
{
	weft_config cfg{};
	cfg.workers = 2;
	cfg.flags = flags;
	weft_runtime *rt = nullptr;
	ASSERT_EQ(0, weft_runtime_new(&rt, &cfg));
	weft_test::Body b{ std::move(body) };
	EXPECT_EQ(0, weft_block_on(rt, weft_test::run_body, &b));
	EXPECT_EQ(0, weft_runtime_free(rt));
}

std::string dump()
{
	char *buf = nullptr;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	weft_dump_tasks(nullptr, f);
	fclose(f);
	std::string s(buf, len);
	free(buf);
	return s;
}

} // namespace

TEST(IoObserve, StatsCountSubmittedAndCompletedOps)
{
	for (unsigned flags : { 0u, (unsigned)WEFT_IO_EPOLL }) {
		run_with(flags, [] {
			int sv[2];
			ASSERT_EQ(0, socketpair(AF_UNIX,
						SOCK_STREAM | SOCK_CLOEXEC, 0,
						sv));
			weft_stats a{}, b{};
			weft_stats_get(nullptr, &a);
			char c = 'x', d = 0;
			for (int i = 0; i < 10; i++) {
				ASSERT_EQ(1, weft_send(sv[0], &c, 1, 0));
				ASSERT_EQ(1, weft_recv(sv[1], &d, 1, 0));
			}
			weft_stats_get(nullptr, &b);
			// io_uring arms every call; epoll arms only the waits
			// (a ready socket is served without one): at least the
			// counters never go backwards and agree once idle.
			EXPECT_GE(b.io_submitted, a.io_submitted);
			EXPECT_GE(b.io_completed, a.io_completed);
			EXPECT_LE(b.io_completed, b.io_submitted);
			if (std::string(weft_io_backend(NULL)) ==
			    "io_uring") {
				EXPECT_GE(b.io_submitted - a.io_submitted, 20u);
			}
			weft_close(sv[0]);
			weft_close(sv[1]);
		});
	}
}

TEST(IoObserve, DumpNamesATaskBlockedInRecv)
{
	run_with(0, [] {
		int sv[2];
		ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC,
					0, sv));
		weft_task *t = weft_spawn_named(
			"io-reader",
			[](void *p) -> int {
				char c;
				return (int)weft_recv(*static_cast<int *>(p), &c,
						      1, 0);
			},
			&sv[1]);
		ASSERT_NE(nullptr, t);
		std::string line;
		for (int i = 0; i < 2000; i++) {
			weft_sleep(WEFT_MSEC(1));
			std::string d = dump();
			size_t at = d.find("io-reader");
			if (at == std::string::npos)
				continue;
			line = d.substr(at, d.find('\n', at) - at);
			if (line.find("I/O") != std::string::npos)
				break;
		}
		EXPECT_NE(std::string::npos, line.find("I/O")) << line;
		char c = 'y';
		EXPECT_EQ(1, weft_send(sv[0], &c, 1, 0));
		EXPECT_EQ(1, weft_join(t));
		weft_close(sv[0]);
		weft_close(sv[1]);
	});
}

TEST(IoObserve, EpollFileCallsRunOnTheOffloadPool)
{
	run_with(WEFT_IO_EPOLL, [] {
		ASSERT_STREQ("epoll", weft_io_backend(NULL));
		char path[] = "/tmp/weft-io-observe-XXXXXX";
		int fd = mkostemp(path, O_CLOEXEC);
		ASSERT_GE(fd, 0);
		unlink(path);
		weft_stats a{}, b{};
		weft_stats_get(nullptr, &a);
		const char msg[] = "through the pool";
		ASSERT_EQ((ssize_t)sizeof(msg), weft_write(fd, msg, sizeof(msg), 0));
		char back[sizeof(msg)] = {};
		ASSERT_EQ((ssize_t)sizeof(msg), weft_read(fd, back, sizeof(back), 0));
		EXPECT_STREQ(msg, back);
		weft_stats_get(nullptr, &b);
		EXPECT_GE(b.offload_calls - a.offload_calls, 2u);
		// A cancelled task's file call fails without running.
		weft_cancel(weft_self());
		EXPECT_EQ(-ECANCELED, weft_read(fd, back, sizeof(back), 0));
		weft_close(fd);
	});
}
