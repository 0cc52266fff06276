// SPDX-License-Identifier: MIT
//
// tests/chaos_test.cc - chaos mode (runtime/chaos.c, RELIABILITY 3.1):
// WEFT_CHAOS=<seed>[:<per-mille>] is parsed and announced once, bad values
// are refused, and armed points act (yield or spin) without breaking the
// protocols they sit in. `make chaos` runs the stress suite with it.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <atomic>

#include "runtime/test_hooks.h"
#include "tests/harness.h"

#ifdef WEFT_TEST_HOOKS

TEST(Chaos, ParseTakesASeedAndAPerMilleAndRefusesTheRest)
{
	EXPECT_EQ(0, weft_test_chaos_parse("42"));
	EXPECT_EQ(0, weft_test_chaos_parse("42:0"));
	EXPECT_EQ(0, weft_test_chaos_parse("18446744073709551615:1000"));
	for (const char *bad :
	     { "", "x", "42:", "42:1001", "-1", "42:-5", "42:5x", "42x", " 42",
	       "99999999999999999999" })
		EXPECT_EQ(-EINVAL, weft_test_chaos_parse(bad)) << bad;
	EXPECT_EQ(-EINVAL, weft_test_chaos_parse(nullptr));
	weft_test_chaos(0, 0);
}

// Every point acts (1000 per mille): cross-worker semaphore ping-pong,
// sleeps and spawns still deliver exactly what they should.
TEST(Chaos, EveryPointActingBreaksNoProtocol)
{
	unsigned long before = weft_test_chaos_events();
	weft_test_chaos(7, 1000);
	WEFT_TEST_RUN(2, [] {
		static weft_sem ping, pong;
		static std::atomic<int> got;
		got = 0;
		weft_sem_init(&ping, 0);
		weft_sem_init(&pong, 0);
		const int rounds = (int)weft_test::scaled(2000);
		weft_task *t =
			weft_spawn(([](void *p) -> int {
					   int n = *static_cast<const int *>(p);
					   for (int i = 0; i < n; i++) {
						   if (weft_sem_acquire(&ping))
							   return -1;
						   got++;
						   weft_sem_release(&pong);
					   }
					   return 0;
				   }),
				   const_cast<int *>(&rounds));
		for (int i = 0; i < rounds; i++) {
			weft_sem_release(&ping);
			ASSERT_EQ(0, weft_sem_acquire(&pong));
			if (i % 100 == 0) {
				ASSERT_EQ(0, weft_sleep(WEFT_USEC(50)));
			}
		}
		EXPECT_EQ(0, weft_join(t));
		EXPECT_EQ(rounds, got.load());
	});
	weft_test_chaos(0, 0);
	EXPECT_GT(weft_test_chaos_events(), before + 100);
}

// In the death tests' fresh process: a runtime made (which reads
// WEFT_CHAOS) and freed; exit 0 if both worked.
[[noreturn]] void new_and_free_runtime()
{
	weft_runtime *rt = nullptr;
	if (weft_runtime_new(&rt, nullptr) || weft_runtime_free(rt))
		exit(1);
	exit(0);
}

// The environment variable, in a fresh process: announced with its seed.
TEST(ChaosDeathTest, EnvIsAnnouncedWithItsSeed)
{
	GTEST_FLAG_SET(death_test_style, "threadsafe");
	setenv("WEFT_CHAOS", "99:1", 1);
	EXPECT_EXIT(new_and_free_runtime(), testing::ExitedWithCode(0),
		    "weft: chaos mode: seed 99, 1 per mille");
	setenv("WEFT_CHAOS", "99:1001", 1);
	EXPECT_EXIT(new_and_free_runtime(), testing::ExitedWithCode(0),
		    "WEFT_CHAOS");
	unsetenv("WEFT_CHAOS");
}

#else

TEST(Chaos, NeedsTestHooks)
{
	GTEST_SKIP() << "chaos mode exists only in WEFT_TEST_HOOKS builds";
}

#endif
