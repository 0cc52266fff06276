// SPDX-License-Identifier: MIT
//
// tests/io_cancel_fi_stress_test.cc - RELIABILITY D9 under load: a
// weft_recv cancelled while its data arrives, many times over a real
// socketpair, with the io_uring ring faults of runtime/fault.c (cancel
// results, -EINTR targets, held and shuffled completions) and on epoll.
// The invariant is exactly-once: every byte sent is returned by exactly
// one recv or is still readable from the socket afterwards, in order.
#include <gtest/gtest.h>

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/harness.h"
#include "tests/support/io_harness.h"

#ifdef WEFT_TEST_HOOKS

namespace
{

class IoCancelFiStress : public io_test::IoBackend
{
};

// Read what is readable now, without waiting, onto @out.
void drain(int fd, std::vector<char> &out)
{
	char b[4096];
	ssize_t n;
	while ((n = recv(fd, b, sizeof(b), MSG_DONTWAIT)) > 0)
		out.insert(out.end(), b, b + n);
}

} // namespace

TEST_P(IoCancelFiStress, CancelRacingDataLosesNoByte)
{
	const char *uring_specs[] = {
		"",
		"cqe_shuffle:12345",
		"cancel_res:ENOENT;cqe_shuffle:7",
		"cqe_delay:2;cancel_res:EALREADY",
		"cancel_target:EINTR;cancel_delay:3;"
		"cqe_delay:1",
		"reap_k:1;cancel_res:0;cancel_target:EINTR"
	};
	size_t nspecs = GetParam() == "io_uring" ? 6 : 1;
	for (size_t si = 0; si < nspecs; si++) {
		const char *spec = uring_specs[si];
		SCOPED_TRACE(std::string("WEFT_FAULTS=") + spec);
		Run(2, [spec, si] {
			ASSERT_EQ(0, weft_test_faults_parse(spec));
			int sv[2];
			ASSERT_EQ(0, socketpair(AF_UNIX,
						SOCK_STREAM | SOCK_CLOEXEC, 0,
						sv));
			std::vector<char> sent, got;
			const uint64_t rounds = weft_test::scaled(1500);
			uint64_t r = 0x5eed + si;
			unsigned cancelled = 0, bytes_won = 0, bad_next = 0;
			for (uint64_t i = 0; i < rounds; i++) {
				r = io_test::splitmix(r);
				size_t want = 1 + r % 48;
				size_t k = (r >> 8) % 40; // 0: a pure cancel
				unsigned spins = (unsigned)(r >> 16) % 4;
				bool before = (r >> 20) & 1;
				char out[40];
				for (size_t j = 0; j < k; j++)
					out[j] = (char)(r >> (j % 56)) ^
						 (char)i;
				ssize_t res = 0;
				int next = 0;
				std::vector<char> mine;
				if (before && k) {
					ASSERT_EQ((ssize_t)k,
						  write(sv[1], out, k));
					sent.insert(sent.end(), out, out + k);
				}
				weft_task *a = weft_test::go([&] {
					char b[48];
					res = weft_recv(sv[0], b, want, 0);
					if (res > 0)
						mine.assign(b, b + res);
					next = weft_yield();
					return 0;
				});
				ASSERT_NE(nullptr, a);
				for (unsigned s = 0; s < spins; s++)
					weft_yield();
				if (!before && k) {
					ASSERT_EQ((ssize_t)k,
						  write(sv[1], out, k));
					sent.insert(sent.end(), out, out + k);
				}
				if ((r >> 24) & 1)
					weft_yield();
				int c = weft_cancel(a);
				EXPECT_EQ(0, weft_join(a));
				got.insert(got.end(), mine.begin(), mine.end());
				if (res == -ECANCELED) {
					cancelled++;
				} else if (res > 0) {
					if (c == 1)
						bytes_won++;
				} else {
					ADD_FAILURE()
						<< "recv returned " << res;
				}
				// Level-triggered: a recv that saw the cancel
				// leaves it for the next suspension point.
				if (res == -ECANCELED && next != -ECANCELED)
					bad_next++;
				// Keep the socket buffer from filling: what
				// nobody took stays in order behind got.
				if (sent.size() - got.size() > 16384)
					drain(sv[0], got);
			}
			weft_test_faults_clear();
			drain(sv[0], got);
			EXPECT_EQ(0u, bad_next);
			ASSERT_EQ(sent.size(), got.size())
				<< "bytes lost or duplicated";
			EXPECT_TRUE(sent == got)
				<< "bytes changed or reordered";
			uint64_t hs = 0, hg = 0;
			for (size_t j = 0; j < sent.size(); j++) {
				hs = hs * 31 + (unsigned char)sent[j];
				hg = hg * 31 + (unsigned char)got[j];
			}
			EXPECT_EQ(hs, hg);
			// Both outcomes happened (else the race was not run).
			EXPECT_GT(cancelled, 0u);
			EXPECT_GT(got.size(), 0u);
			weft_io_stats st;
			weft_io_stats_get(nullptr, &st);
			EXPECT_EQ(0u, st.stale_cqes);
			printf("  [%s] rounds %llu: -ECANCELED %u, bytes "
			       "with a cancel pending %u, %zu bytes\n",
			       spec, (unsigned long long)rounds, cancelled,
			       bytes_won, sent.size());
			weft_close(sv[0]);
			weft_close(sv[1]);
		});
		weft_test_faults_clear();
		if (HasFatalFailure())
			return;
	}
}

INSTANTIATE_TEST_SUITE_P(Backends, IoCancelFiStress,
			 ::testing::Values("io_uring", "epoll"),
			 io_test::backend_name);

#else
TEST(IoCancelFiStress, NeedsTestHooks)
{
	GTEST_SKIP() << "SKIPPED: fault injection exists only in "
			"WEFT_TEST_HOOKS builds";
}
#endif
