/* SPDX-License-Identifier: MIT */
/*
 * examples/wait_for.c - join a job with a time limit; on expiry the job is
 * cancelled, cleans up, and is waited for.
 *
 * Seed files: shared/seeds/004_636619dee873197f.txt,
 * 002_9ceb21de6e9778d1.txt, 003_7eae0f6a7e03e310.txt.
 *
 * Ports seed 004's "Task Cancellation" run_with_deadline (also seed 002's
 * and seed 003's asyncio.wait_for):
 *
 *     async def long_running_job(job_id):
 *         try:
 *             return await do_expensive_work(job_id)
 *         except asyncio.CancelledError:
 *             await cleanup_partial_work(job_id)
 *             raise
 *
 *     async def run_with_deadline(job_id, deadline_seconds):
 *         task = asyncio.create_task(long_running_job(job_id))
 *         try:
 *             return await asyncio.wait_for(task, timeout=deadline_seconds)
 *         except asyncio.TimeoutError:
 *             return None   # wait_for already cancelled the task
 *
 * weft_wait_for(t, timeout) returns t's status if t finished in time;
 * otherwise it cancels t, *waits for it to finish*, and returns
 * -ETIMEDOUT. So when it returns, the job's cleanup has run and its arg
 * (here on the caller's stack) is no longer used: the seed's "Detect:
 * wait_for raises TimeoutError but the underlying coroutine keeps running"
 * cannot happen.
 *
 * Checked: a fast job's result comes back; a slow job gives -ETIMEDOUT no
 * earlier than the limit and long before it would have finished, and its
 * cleanup had already run when wait_for returned.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "weft.h"

struct job {
	const char *id;
	uint64_t work_ns; /* how long do_expensive_work takes */
	long result;
	bool cleaned_up;
};

static int long_running_job(void *arg)
{
	struct job *j = arg;
	int ret = weft_sleep(j->work_ns); /* await do_expensive_work(job_id) */

	if (ret < 0) {
		j->cleaned_up = true; /* cleanup_partial_work(job_id) */
		return ret; /* raise */
	}
	j->result = 42;
	return 0;
}

/* 0 and @j->result, or -ETIMEDOUT (Python's None) or another failure. */
static int run_with_deadline(struct job *j, uint64_t deadline)
{
	weft_task *t = weft_spawn_named(j->id, long_running_job, j);

	if (!t)
		return -errno;
	return weft_wait_for(t, deadline); /* releases t either way */
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
	struct job fast = { .id = "fast-job", .work_ns = WEFT_MSEC(10) };
	struct job slow = { .id = "slow-job", .work_ns = WEFT_SEC(10) };
	uint64_t start, took;
	int ret;

	(void)arg;
	ret = run_with_deadline(&fast, WEFT_SEC(5));
	printf("%s: %d, result %ld\n", fast.id, ret, fast.result);
	CHECK(ret == 0 && fast.result == 42, "the fast job: %d", ret);

	start = weft_now();
	ret = run_with_deadline(&slow, WEFT_MSEC(50));
	took = weft_now() - start;
	printf("%s: %s after %llu ms, cleaned up: %s\n", slow.id,
	       strerrorname_np(-ret), (unsigned long long)(took / WEFT_MSEC(1)),
	       slow.cleaned_up ? "yes" : "no");
	CHECK(ret == -ETIMEDOUT, "the slow job: %d", ret);
	CHECK(slow.cleaned_up, "wait_for returned before the job cleaned up");
	CHECK(slow.result == 0, "the slow job finished its work");
	CHECK(took >= WEFT_MSEC(50), "timed out before the limit");
	CHECK(took < WEFT_SEC(5), "the slow job was not cancelled");
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
