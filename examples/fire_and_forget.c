/* SPDX-License-Identifier: MIT */
/*
 * examples/fire_and_forget.c - background tasks done right: detached,
 * then drained at shutdown; and the report for a task nobody owns.
 *
 * Seed files: shared/seeds/000_30f16e6467157b09.txt, 001_7802f0af235a723e.txt.
 *
 * Ports seed 000's "Fire-and-forget: the pitfall" (also seed 001's "WRONG
 * - orphaned task"):
 *
 *     asyncio.create_task(slow_background_thing())   # BUG: no reference
 *
 * asyncio may garbage-collect such a task mid-flight. A weft task is never
 * collected while it runs, but its handle must still be accounted for:
 * weft_spawn() gives the caller an owning handle, and the caller must
 * either join it (when it wants the result: the seed's "keep a reference
 * and await it") or weft_detach() it (fire and forget, on purpose). At
 * shutdown weft_run() cancels every task still running - detached ones
 * included - and returns only once they have all finished, so background
 * tasks get to clean up: the seed's "await outstanding tasks on shutdown"
 * comes built in. A handle dropped without join or detach is the bug, and
 * debug mode (a debug build, or WEFT_DEBUG=1) names the task at shutdown.
 *
 * Checked: 1. the detached tasks all ended before weft_run() returned -
 * the short jobs by finishing or being cancelled, the endless heartbeat by
 * being cancelled and cleaning up - and no report was printed;
 * 2. a task whose handle was dropped is reported by name.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft.h"

struct background {
	atomic_int jobs_ended; /* send_metrics tasks that returned */
	atomic_int heartbeat_cleaned_up;
	atomic_int beats;
};

static int send_metrics(void *arg)
{
	struct background *bg = arg;
	int ret = weft_sleep(WEFT_MSEC(1)); /* await post(metrics) */

	atomic_fetch_add(&bg->jobs_ended, 1);
	return ret;
}

/* Runs until shutdown cancels it. */
static int heartbeat(void *arg)
{
	struct background *bg = arg;
	int ret;

	while ((ret = weft_sleep(WEFT_MSEC(2))) == 0)
		atomic_fetch_add(&bg->beats, 1);
	/* -ECANCELED: the runtime is shutting down. Clean up, then return
	 * the error: never swallow a cancellation. */
	atomic_fetch_add(&bg->heartbeat_cleaned_up, 1);
	return ret;
}

static int app_done_right(void *arg)
{
	struct background *bg = arg;
	weft_task *t;
	int i;

	for (i = 0; i < 3; i++) {
		t = weft_spawn_named("send-metrics", send_metrics, bg);
		if (t)
			weft_detach(t); /* fire and forget, on purpose */
	}
	t = weft_spawn_named("heartbeat", heartbeat, bg);
	if (t)
		weft_detach(t);
	return weft_sleep(WEFT_MSEC(20)); /* the application's own work */
}

static int app_forgets_a_handle(void *arg)
{
	weft_task *t;

	t = weft_spawn_named("orphan", heartbeat, arg);
	(void)t; /* BUG: neither joined nor detached */
	return weft_sleep(WEFT_MSEC(5));
}

/* weft_run(@fn, @arg) with fd 2 sent to a temporary file; @out gets what
 * was written there (weft's reports are single write(2)s to fd 2). */
static int run_capturing_stderr(weft_fn fn, void *arg, char *out, size_t len)
{
	FILE *tmp = tmpfile();
	int saved, ret;
	size_t n;

	if (!tmp)
		return -errno;
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	dup2(fileno(tmp), STDERR_FILENO);
	ret = weft_run(fn, arg, NULL);
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(tmp);
	n = fread(out, 1, len - 1, tmp);
	out[n] = '\0';
	fclose(tmp);
	return ret;
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

int main(void)
{
	struct background bg = { 0 }, orphan_bg = { 0 };
	char report[4096];
	int ret;

	/* Debug mode reports unowned tasks; debug builds have it anyway. */
	setenv("WEFT_DEBUG", "1", 1);

	ret = run_capturing_stderr(app_done_right, &bg, report, sizeof(report));
	printf("done right: weft_run returned %d; %d metrics jobs ended, "
	       "heartbeat beat %d times and cleaned up %d time(s)\n",
	       ret, atomic_load(&bg.jobs_ended), atomic_load(&bg.beats),
	       atomic_load(&bg.heartbeat_cleaned_up));
	CHECK(ret == 0, "app_done_right: %d", ret);
	CHECK(atomic_load(&bg.jobs_ended) == 3,
	      "%d of 3 detached jobs ended before weft_run returned",
	      atomic_load(&bg.jobs_ended));
	CHECK(atomic_load(&bg.heartbeat_cleaned_up) == 1,
	      "the heartbeat did not clean up before weft_run returned");
	CHECK(strstr(report, "never joined") == NULL,
	      "detached tasks were reported:\n%s", report);

	ret = run_capturing_stderr(app_forgets_a_handle, &orphan_bg, report,
				   sizeof(report));
	printf("forgot a handle: weft_run returned %d; at shutdown weft "
	       "said:\n%s",
	       ret, report);
	CHECK(ret == 0, "app_forgets_a_handle: %d", ret);
	CHECK(strstr(report, "'orphan'") && strstr(report, "never joined"),
	      "the orphan task was not reported");
	CHECK(atomic_load(&orphan_bg.heartbeat_cleaned_up) == 1,
	      "the orphan was not cancelled and drained at shutdown");

	if (failures)
		return 1;
	printf("ok\n");
	return 0;
}
