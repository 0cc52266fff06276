/* SPDX-License-Identifier: MIT */
/*
 * examples/timeout_fallback.c - a 200 ms budget with a fallback value,
 * and nested deadlines.
 *
 * Seed files: shared/seeds/004_636619dee873197f.txt, 002_9ceb21de6e9778d1.txt.
 *
 * Ports seed 004's "Timeout Management: Timeout with fallback" (also seed
 * 001's "Pattern 4: Timeout" and seed 002's asyncio.timeout):
 *
 *     async def get_recommendations_with_fallback(user_id):
 *         try:
 *             async with asyncio.timeout(0.2):   # 200ms SLA
 *                 return await ml_recommendations(user_id)
 *         except TimeoutError:
 *             return get_default_recommendations()
 *
 * `async with asyncio.timeout(0.2)` is a cancel scope: weft_scope_enter()
 * ... weft_scope_exit(). Inside it, once the deadline passes, every
 * suspension point returns -ETIMEDOUT (the sleep standing for the model
 * server's reply here). weft_scope_exit() says whether *this* scope's
 * deadline passed. Only then is the fallback right: when an outer,
 * earlier deadline interrupted the call, the inner scope's exit returns 0
 * and the -ETIMEDOUT must travel on to whoever owns that deadline - as
 * asyncio re-raises a TimeoutError that is not its own. The outer caller
 * here is a request handler with a 50 ms budget that answers 504, like
 * seed 004's fetch_with_timeout.
 *
 * Checked: a fast model answers within the budget and its result is used;
 * a slow one is cut off at 200 ms (not earlier) and the fallback is used;
 * under an outer 50 ms deadline the fallback is not used, the inner scope
 * reports 0, the outer reports -ETIMEDOUT and the handler answers 504.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "weft.h"

struct recs {
	const char *items[3];
	bool personalised;
};

/* The model server: answers after @latency. */
static int ml_recommendations(uint64_t latency, struct recs *out)
{
	int ret = weft_sleep(latency); /* await the model's reply */

	if (ret < 0)
		return ret;
	*out = (struct recs){ { "tent", "stove", "lantern" }, true };
	return 0;
}

static void default_recommendations(struct recs *out)
{
	*out = (struct recs){ { "bestseller 1", "bestseller 2", "gift card" },
			      false };
}

static int get_recommendations_with_fallback(uint64_t latency, struct recs *out)
{
	weft_scope sla;
	int ret;

	weft_scope_enter(&sla, WEFT_MSEC(200));
	ret = ml_recommendations(latency, out);
	if (weft_scope_exit(&sla) == -ETIMEDOUT && ret == -ETIMEDOUT) {
		default_recommendations(out); /* our own deadline: fall back */
		ret = 0;
	}
	return ret; /* any other failure, or an outer deadline, goes up */
}

/* An HTTP handler with an overall budget: 200, or 504 on its deadline. */
static int handle_request(uint64_t budget, uint64_t latency, struct recs *out)
{
	weft_scope request;
	int ret, expired;

	weft_scope_enter(&request, budget);
	ret = get_recommendations_with_fallback(latency, out);
	expired = weft_scope_exit(&request);
	if (ret == -ETIMEDOUT && expired == -ETIMEDOUT)
		return 504;
	return ret == 0 ? 200 : 500;
}

static int failures;

#define CHECK(cond, ...)                                       \
	do {                                                   \
		if (!(cond)) {                                 \
			fprintf(stderr, "FAIL: " __VA_ARGS__); \
			fputc('\n', stderr);                   \
			failures++;                            \
		}                                              \
	} while (0)

static int main_task(void *arg)
{
	struct recs r;
	uint64_t start, took;
	int ret;

	(void)arg;
	memset(&r, 0, sizeof(r));
	ret = get_recommendations_with_fallback(WEFT_MSEC(20), &r);
	printf("fast model: %d, %s: %s, ...\n", ret,
	       r.personalised ? "personalised" : "fallback",
	       r.items[0] ? r.items[0] : "(none)");
	CHECK(ret == 0 && r.personalised, "the fast model's answer was lost");

	memset(&r, 0, sizeof(r));
	start = weft_now();
	ret = get_recommendations_with_fallback(WEFT_SEC(5), &r);
	took = weft_now() - start;
	printf("slow model: %d after %llu ms, %s: %s, ...\n", ret,
	       (unsigned long long)(took / WEFT_MSEC(1)),
	       r.personalised ? "personalised" : "fallback",
	       r.items[0] ? r.items[0] : "(none)");
	CHECK(ret == 0 && !r.personalised && r.items[0],
	      "no fallback for the slow model");
	CHECK(took >= WEFT_MSEC(200), "cut off before the 200 ms budget");
	CHECK(took < WEFT_SEC(4), "the slow model was not cut off");

	memset(&r, 0, sizeof(r));
	ret = handle_request(WEFT_MSEC(50), WEFT_SEC(5), &r);
	printf("request with a 50 ms budget: HTTP %d\n", ret);
	CHECK(ret == 504, "the handler answered %d, not 504", ret);
	CHECK(r.items[0] == NULL, "the fallback ran under the outer deadline");
	return 0;
}

int main(void)
{
	int ret = weft_run(main_task, NULL, NULL);

	if (ret != 0) {
		fprintf(stderr, "FAIL: main task: %d\n", ret);
		return 1;
	}
	if (failures)
		return 1;
	printf("ok\n");
	return 0;
}
