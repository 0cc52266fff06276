/* SPDX-License-Identifier: MIT */
/*
 * examples/cancel_cleanup.c - cancel a looping worker; it sees
 * -ECANCELED, cleans up and reports.
 *
 * Seed files: shared/seeds/002_9ceb21de6e9778d1.txt,
 * 000_30f16e6467157b09.txt, 004_636619dee873197f.txt.
 *
 * Ports seed 002's "Cancellation" (also seed 000's "Cooperative
 * cancellation done right" and seed 004's long_running_job):
 *
 *     async def worker(name):
 *         try:
 *             while True:
 *                 await asyncio.sleep(0.5)
 *                 print(f"{name}: tick")
 *         except asyncio.CancelledError:
 *             print(f"{name}: cancelled, cleaning up")
 *             raise   # always re-raise CancelledError
 *
 * In weft, CancelledError is the -ECANCELED that the worker's suspension
 * point (here weft_sleep) returns after weft_cancel(). "Re-raise" means:
 * return that status from the task. A task cannot swallow it anyway:
 * cancellation is level-triggered, so every later suspension point fails
 * the same way (shown below with weft_checkpoint), and shutdown can never
 * hang on a worker that ignored it once. Cleanup that must itself wait
 * belongs in weft_shield() (see examples/pending/shield_checkpoint.c).
 *
 * Instead of the seed's sleep(1.8) before cancelling, main waits on an
 * event the worker sets after its third tick, so the run does not depend
 * on timing. Checked: the worker ticked at least 3 times, its loop ended
 * on -ECANCELED, it cleaned up once (releasing its buffer), a later
 * suspension point still reported -ECANCELED, and join returned
 * -ECANCELED.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"

struct worker {
	const char *name;
	weft_event warmed_up; /* set after the third tick */
	int ticks;
	int loop_error; /* what ended the loop */
	int later_checkpoint; /* a suspension point after that */
	bool cleaned_up;
};

static int worker(void *arg)
{
	struct worker *w = arg;
	char *buffer = malloc(4096); /* a resource the loop holds */
	int ret;

	if (!buffer)
		return -ENOMEM;
	for (;;) {
		ret = weft_sleep(WEFT_MSEC(5)); /* await asyncio.sleep(...) */
		if (ret < 0)
			break;
		w->ticks++;
		printf("%s: tick %d\n", w->name, w->ticks);
		if (w->ticks == 3)
			weft_event_set(&w->warmed_up);
	}
	/* except CancelledError: */
	w->loop_error = ret;
	printf("%s: %s, cleaning up\n", w->name, strerrorname_np(-ret));
	free(buffer);
	w->cleaned_up = true;
	w->later_checkpoint = weft_checkpoint(); /* still -ECANCELED */
	return ret; /* raise */
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
	struct worker w = { .name = "background" };
	weft_task *t;
	int ret;

	(void)arg;
	t = weft_spawn_named("worker", worker, &w);
	if (!t)
		return -errno;
	ret = weft_event_wait(&w.warmed_up);
	CHECK(ret == 0, "weft_event_wait: %d", ret);

	weft_cancel(t); /* task.cancel() */
	ret = weft_join(t); /* await task */
	printf("main: the worker ended with %s after %d ticks\n",
	       strerrorname_np(-ret), w.ticks);

	CHECK(ret == -ECANCELED, "join returned %d", ret);
	CHECK(w.ticks >= 3, "only %d ticks", w.ticks);
	CHECK(w.loop_error == -ECANCELED, "the loop ended with %d",
	      w.loop_error);
	CHECK(w.cleaned_up, "the worker did not clean up");
	CHECK(w.later_checkpoint == -ECANCELED,
	      "after the cancellation a checkpoint returned %d",
	      w.later_checkpoint);
	weft_event_destroy(&w.warmed_up);
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
