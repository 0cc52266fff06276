// SPDX-License-Identifier: MIT
//
// tests/harness.h - run a googletest body as a weft task.
//
//   WEFT_TEST_RUN(2, [&] { ... weft calls ... });
//
// starts a runtime with the given worker count, runs the lambda as a task
// (through weft_block_on), checks that no task the body spawned is still
// alive when it returns (a leak), then frees the runtime.
#ifndef WEFT_TESTS_HARNESS_H
#define WEFT_TESTS_HARNESS_H

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>

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

} // namespace weft_test

#define WEFT_TEST_RUN(workers, ...) weft_test::run((workers), __VA_ARGS__)

#endif
