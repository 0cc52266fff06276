/* SPDX-License-Identifier: MIT */
/*
 * examples/shield_checkpoint.c - a checkpoint write that cancellation
 * cannot tear, and cleanup bounded by a shielded scope's own deadline.
 *
 * Seed file: shared/seeds/004_636619dee873197f.txt.
 *
 * Ports seed 004's "Shield: prevent cancellation of critical cleanup":
 *
 *     async def save_checkpoint(data):
 *         try:
 *             await asyncio.shield(write_to_db(data))   # not cancellable
 *         except asyncio.CancelledError:
 *             pass   # checkpoint was saved even if outer task was cancelled
 *
 * weft_shield(fn, arg) runs fn in the calling task with the task's
 * cancellation (and enclosing deadlines) held back: the checkpoint's
 * writes all complete. What arrived meanwhile is reported by the first
 * suspension point after the shield. Unlike asyncio.shield, the caller
 * does not walk away from a write still running in the background: it
 * waits for it, so the checkpoint's buffers may live on its stack.
 *
 * Because shutdown waits for shielded code, cleanup that could take long
 * should be bounded: weft_scope_enter_shielded(&s, timeout) is a shield
 * with a deadline of its own. Here a final flush that would take 200 ms
 * gets 100 ms.
 *
 * Checked: 1. a worker cancelled in the middle of a checkpoint write still
 * writes every block and commits, weft_shield returns 0, and the worker's
 * next suspension point returns -ECANCELED, so it stops; 2. a cancelled
 * worker's final flush runs inside the shielded scope (its first block is
 * written although the task is cancelled), is cut off by the scope's own
 * deadline (exit returns -ETIMEDOUT, not all blocks written), and the
 * cancellation is still reported after the scope.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "weft.h"

#define CKPT_BLOCKS 4

struct checkpoint {
	int batch; /* the state saved */
	int blocks_written;
	bool committed;
	weft_event started; /* set when a write begins (for the demo) */
};

/* await write_to_db(data): several writes, then an atomic commit. */
static int write_checkpoint(void *arg)
{
	struct checkpoint *c = arg;
	int i, ret;

	c->blocks_written = 0;
	c->committed = false;
	weft_event_set(&c->started);
	for (i = 0; i < CKPT_BLOCKS; i++) {
		ret = weft_sleep(WEFT_MSEC(5)); /* weft_write(fd, block, ...) */
		if (ret < 0)
			return ret; /* a torn checkpoint */
		c->blocks_written++;
	}
	c->committed = true; /* rename(tmp, final) */
	return 0;
}

struct worker {
	struct checkpoint ckpt;
	int shield_status; /* what the last weft_shield returned */
};

static int batch_worker(void *arg)
{
	struct worker *w = arg;
	int batch, ret;

	for (batch = 1;; batch++) {
		ret = weft_sleep(WEFT_MSEC(2)); /* process a batch */
		if (ret < 0)
			return ret; /* -ECANCELED: stop, nothing to undo */
		w->ckpt.batch = batch;
		w->shield_status = weft_shield(write_checkpoint, &w->ckpt);
		if (w->shield_status < 0)
			return w->shield_status;
	}
}

/* ---- bounded cleanup ----------------------------------------------------- */

#define FLUSH_BLOCKS 20 /* 10 ms each: 200 ms in all */

struct flusher {
	weft_event running;
	int blocks_flushed;
	int scope_exit; /* weft_scope_exit() of the shielded scope */
	int after; /* a checkpoint after the scope */
};

static int flushing_worker(void *arg)
{
	struct flusher *f = arg;
	weft_scope cleanup;
	int i, ret;

	weft_event_set(&f->running);
	do
		ret = weft_sleep(WEFT_SEC(10)); /* serve until cancelled */
	while (ret == 0);

	/* Cancelled: flush what we have, but give it 100 ms at most. */
	weft_scope_enter_shielded(&cleanup, WEFT_MSEC(100));
	for (i = 0; i < FLUSH_BLOCKS; i++) {
		if (weft_sleep(WEFT_MSEC(10)) < 0) /* weft_write(...) */
			break;
		f->blocks_flushed++;
	}
	f->scope_exit = weft_scope_exit(&cleanup);
	f->after = weft_checkpoint();
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

static void cancel_during_checkpoint(void)
{
	struct worker w;
	weft_task *t;
	int ret;

	memset(&w, 0, sizeof(w));
	t = weft_spawn_named("batch-worker", batch_worker, &w);
	if (!t) {
		CHECK(0, "weft_spawn: errno %d", errno);
		return;
	}
	weft_event_wait(&w.ckpt.started); /* a checkpoint write is under way */
	weft_cancel(t);
	ret = weft_join(t);
	printf("checkpoint of batch %d: %d of %d blocks, committed: %s, "
	       "shield returned %d; the worker ended with %s\n",
	       w.ckpt.batch, w.ckpt.blocks_written, CKPT_BLOCKS,
	       w.ckpt.committed ? "yes" : "no", w.shield_status,
	       strerrorname_np(-ret));
	CHECK(w.ckpt.blocks_written == CKPT_BLOCKS && w.ckpt.committed,
	      "the checkpoint was torn");
	CHECK(w.shield_status == 0, "weft_shield returned %d", w.shield_status);
	CHECK(ret == -ECANCELED, "the worker ended with %d", ret);
	weft_event_destroy(&w.ckpt.started);
}

static void bounded_cleanup(void)
{
	struct flusher f;
	weft_task *t;
	uint64_t start, took;
	int ret;

	memset(&f, 0, sizeof(f));
	t = weft_spawn_named("flusher", flushing_worker, &f);
	if (!t) {
		CHECK(0, "weft_spawn: errno %d", errno);
		return;
	}
	weft_event_wait(&f.running);
	start = weft_now();
	weft_cancel(t);
	ret = weft_join(t);
	took = weft_now() - start;
	printf("final flush: %d of %d blocks in %llu ms, scope exit %s, "
	       "then %s; the worker ended with %s\n",
	       f.blocks_flushed, FLUSH_BLOCKS,
	       (unsigned long long)(took / WEFT_MSEC(1)),
	       strerrorname_np(-f.scope_exit), strerrorname_np(-f.after),
	       strerrorname_np(-ret));
	CHECK(f.blocks_flushed >= 1,
	      "the shielded scope let the cancellation in");
	CHECK(f.blocks_flushed < FLUSH_BLOCKS,
	      "the flush was not cut off by its deadline");
	CHECK(f.scope_exit == -ETIMEDOUT, "scope exit %d", f.scope_exit);
	CHECK(f.after == -ECANCELED, "after the scope: %d", f.after);
	CHECK(ret == -ECANCELED, "the worker ended with %d", ret);
	CHECK(took >= WEFT_MSEC(100), "the flush was cut off early");
	weft_event_destroy(&f.running);
}

static int main_task(void *arg)
{
	(void)arg;
	cancel_during_checkpoint();
	bounded_cleanup();
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
