/* SPDX-License-Identifier: MIT */
/*
 * examples/stream.c - an async generator: a producer task streams rows
 * through a small queue, the consumer iterates, and may stop early.
 *
 * Seed files: shared/seeds/004_636619dee873197f.txt, 002_9ceb21de6e9778d1.txt.
 *
 * Ports seed 004's "Async Generators and Streaming" (stream_database_rows
 * and managed_stream) and seed 002's "Async generators":
 *
 *     async def managed_stream(source_id):
 *         stream = await open_stream(source_id)
 *         try:
 *             async for chunk in stream:
 *                 yield chunk
 *         finally:
 *             await stream.close()   # runs even if the consumer breaks early
 *
 * The generator body is a producer task; each `yield` is a put on a queue
 * of capacity 4, so the producer runs at most 4 rows ahead of the
 * consumer (lazy: rows are not all loaded into memory). The end of the
 * stream is weft_queue_close(): the consumer's get drains what is left,
 * then returns -EPIPE, its StopAsyncIteration. Breaking early is
 * stream_close(), the generator's aclose(): it closes the queue and
 * cancels the producer, so the producer's next put or wait fails and it
 * runs its "finally" (closes its cursor) and ends; stream_close() joins
 * it and frees the rows it had queued that nobody will read.
 *
 * Checked: a full iteration gets every row in order and ends with -EPIPE;
 * an early break after 10 of 100,000 rows stops the producer, which had
 * produced at most 10 + 4 rows; in both the cursor was closed, the
 * producer's task ended, and every row allocated was freed.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"

#define AHEAD 4 /* queue capacity: how far the producer may run ahead */

struct row {
	int id;
	long amount;
};

static atomic_int rows_alive; /* allocated and not yet freed */

static struct row *row_new(int id)
{
	struct row *r = malloc(sizeof(*r));

	if (r) {
		*r = (struct row){ .id = id, .amount = 10L * id };
		atomic_fetch_add(&rows_alive, 1);
	}
	return r;
}

static void row_free(struct row *r)
{
	atomic_fetch_sub(&rows_alive, 1);
	free(r);
}

struct stream {
	weft_queue *q;
	weft_task *producer;
	int nr_rows; /* rows the query has */
	int produced; /* rows handed to the queue (producer writes) */
	bool cursor_closed; /* the producer's "finally" ran */
};

/* The generator's body. */
static int produce_rows(void *arg)
{
	struct stream *s = arg;
	struct row *r;
	int i, ret = 0;

	/* stream = await open_stream(...) would go here */
	for (i = 0; i < s->nr_rows; i++) {
		ret = weft_sleep(WEFT_USEC(20)); /* fetch the next row */
		if (ret < 0)
			break;
		r = row_new(i);
		if (!r) {
			ret = -ENOMEM;
			break;
		}
		ret = weft_queue_put(s->q, r); /* yield row */
		if (ret < 0) {
			row_free(r); /* not enqueued: still ours */
			break;
		}
		s->produced++;
	}
	/* finally: */
	s->cursor_closed = true;
	weft_queue_close(s->q); /* end of stream; no-op if already closed */
	return ret;
}

static int stream_open(struct stream *s, int nr_rows)
{
	*s = (struct stream){ .nr_rows = nr_rows };
	s->q = weft_queue_new(AHEAD);
	if (!s->q)
		return -errno;
	s->producer = weft_spawn_named("row-producer", produce_rows, s);
	if (!s->producer) {
		weft_queue_free(s->q);
		return -errno;
	}
	return 0;
}

/* `async for row in stream`: 0 and a row, or -EPIPE at the end. */
static int stream_next(struct stream *s, struct row **row)
{
	return weft_queue_get(s->q, (void **)row);
}

/* aclose(): stop the producer, wait for it, free what nobody will read. */
static int stream_close(struct stream *s)
{
	struct row *r;
	int ret;

	weft_queue_close(s->q); /* its next put fails with -EPIPE ... */
	weft_cancel(s->producer); /* ... and so does a wait it is in now */
	ret = weft_join(s->producer);
	while (weft_queue_try_get(s->q, (void **)&r) == 0)
		row_free(r);
	weft_queue_free(s->q);
	/* Stopped by us is a normal end for the producer. */
	return ret == -EPIPE || ret == -ECANCELED ? 0 : ret;
}

/* ---- the consumers ------------------------------------------------------- */

static int failures;

#define CHECK(cond, ...)                                       \
	do {                                                   \
		if (!(cond)) {                                 \
			fprintf(stderr, "FAIL: " __VA_ARGS__); \
			fputc('\n', stderr);                   \
			failures++;                            \
		}                                              \
	} while (0)

static void read_all(void)
{
	struct stream s;
	struct row *r;
	int ret, count = 0, in_order = 1;

	ret = stream_open(&s, 50);
	CHECK(ret == 0, "stream_open: %d", ret);
	if (ret)
		return;
	while ((ret = stream_next(&s, &r)) == 0) {
		in_order &= r->id == count;
		count++;
		row_free(r);
	}
	printf("read all: %d rows, then %s\n", count, strerrorname_np(-ret));
	CHECK(ret == -EPIPE, "the stream ended with %d, not -EPIPE", ret);
	CHECK(count == 50 && in_order, "%d rows, in order: %d", count,
	      in_order);
	ret = stream_close(&s);
	CHECK(ret == 0, "producer ended with %d", ret);
	CHECK(s.cursor_closed, "the producer's cleanup did not run");
}

static void break_early(void)
{
	struct stream s;
	struct row *r;
	int ret, count = 0;

	ret = stream_open(&s, 100000);
	CHECK(ret == 0, "stream_open: %d", ret);
	if (ret)
		return;
	while ((ret = stream_next(&s, &r)) == 0) {
		count++;
		ret = weft_sleep(WEFT_USEC(500)); /* await process_row(row) */
		row_free(r);
		if (ret < 0 || count == 10)
			break; /* we have what we came for */
	}
	ret = stream_close(&s);
	printf("break early: read %d rows, the producer made %d of %d and "
	       "ended (%d), cursor closed: %s\n",
	       count, s.produced, s.nr_rows, ret,
	       s.cursor_closed ? "yes" : "no");
	CHECK(count == 10, "read %d rows", count);
	CHECK(ret == 0, "producer ended with %d", ret);
	CHECK(s.cursor_closed, "the producer's cleanup did not run");
	CHECK(s.produced <= count + AHEAD,
	      "the producer ran %d rows ahead, the queue holds %d",
	      s.produced - count, AHEAD);
}

static int main_task(void *arg)
{
	(void)arg;
	read_all();
	break_early();
	CHECK(atomic_load(&rows_alive) == 0, "%d rows leaked",
	      atomic_load(&rows_alive));
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
