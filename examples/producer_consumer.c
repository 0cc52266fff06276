/* SPDX-License-Identifier: MIT */
/*
 * examples/producer_consumer.c - producers and consumers on a bounded
 * queue, with task_done() and join().
 *
 * Seed files: shared/seeds/001_7802f0af235a723e.txt, 003_7eae0f6a7e03e310.txt.
 *
 * Ports seed 001's "Quick Reference: Queue() — Producer-consumer" (and
 * the Queue of seed 003's "Concurrency Primitives"), written the way the
 * asyncio.Queue documentation does it:
 *
 *     async def consumer(q):
 *         while True:
 *             item = await q.get()
 *             await process(item)
 *             q.task_done()
 *
 *     await asyncio.gather(*producers)   # everything is put
 *     await q.join()                     # ... and processed
 *     for c in consumers: c.cancel()
 *
 * The queue is small, so producers wait for room (back-pressure) and the
 * consumers, real tasks on every worker, process items in parallel.
 *
 * Checked: every item is processed exactly once (count and sum of the
 * values), weft_queue_join() returns only after the last task_done(), and
 * the cancelled consumers end with -ECANCELED.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "weft.h"

#define NR_PRODUCERS 3
#define NR_CONSUMERS 4
#define ITEMS_EACH 100 /* per producer */
#define NR_ITEMS (NR_PRODUCERS * ITEMS_EACH)
#define QUEUE_CAP 4

struct producer {
	weft_queue *q;
	int first; /* puts first .. first + ITEMS_EACH - 1 */
};

struct consumer {
	weft_queue *q;
	atomic_int *processed; /* shared: items fully processed */
	long count, sum; /* this consumer's own tally */
};

static int producer(void *arg)
{
	struct producer *p = arg;
	int i, ret;

	for (i = p->first; i < p->first + ITEMS_EACH; i++) {
		/* Items are pointers; a small integer travels as one. */
		ret = weft_queue_put(p->q, (void *)(intptr_t)i);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int consumer(void *arg)
{
	struct consumer *c = arg;
	void *item;
	int ret;

	for (;;) {
		ret = weft_queue_get(c->q, &item);
		if (ret < 0)
			return ret; /* -ECANCELED: main is done with us */
		ret = weft_sleep(WEFT_USEC(100)); /* await process(item) */
		c->count++;
		c->sum += (intptr_t)item;
		atomic_fetch_add(c->processed, 1);
		weft_queue_task_done(c->q);
		if (ret < 0)
			return ret;
	}
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
	struct producer prods[NR_PRODUCERS];
	struct consumer cons[NR_CONSUMERS];
	weft_task *ptask[NR_PRODUCERS], *ctask[NR_CONSUMERS];
	atomic_int processed = 0;
	long count = 0, sum = 0;
	weft_queue *q;
	int i, ret;

	(void)arg;
	q = weft_queue_new(QUEUE_CAP);
	if (!q)
		return -errno;
	for (i = 0; i < NR_CONSUMERS; i++) {
		cons[i] = (struct consumer){ .q = q, .processed = &processed };
		ctask[i] = weft_spawn_named("consumer", consumer, &cons[i]);
		CHECK(ctask[i], "spawn consumer: errno %d", errno);
	}
	for (i = 0; i < NR_PRODUCERS; i++) {
		prods[i] = (struct producer){ .q = q,
					      .first = 1 + i * ITEMS_EACH };
		ptask[i] = weft_spawn_named("producer", producer, &prods[i]);
		CHECK(ptask[i], "spawn producer: errno %d", errno);
	}
	if (failures)
		return -ENOMEM; /* weft_run cancels and drains the rest */

	for (i = 0; i < NR_PRODUCERS; i++) {
		ret = weft_join(ptask[i]);
		CHECK(ret == 0, "producer %d: %d", i, ret);
	}
	/* Everything is put; wait until every item is also processed. */
	ret = weft_queue_join(q);
	CHECK(ret == 0, "weft_queue_join: %d", ret);
	CHECK(atomic_load(&processed) == NR_ITEMS,
	      "join returned with %d of %d items processed",
	      atomic_load(&processed), NR_ITEMS);

	/* The consumers wait forever in weft_queue_get(): cancel them. */
	for (i = 0; i < NR_CONSUMERS; i++)
		weft_cancel(ctask[i]);
	for (i = 0; i < NR_CONSUMERS; i++) {
		ret = weft_join(ctask[i]);
		CHECK(ret == -ECANCELED, "consumer %d ended with %d", i, ret);
		printf("consumer %d processed %ld items\n", i, cons[i].count);
		count += cons[i].count;
		sum += cons[i].sum;
	}
	weft_queue_free(q);

	printf("%ld items processed, sum %ld\n", count, sum);
	CHECK(count == NR_ITEMS, "%ld items processed, want %d", count,
	      NR_ITEMS);
	CHECK(sum == (long)NR_ITEMS * (NR_ITEMS + 1) / 2,
	      "sum %ld, want %ld: an item was lost or processed twice", sum,
	      (long)NR_ITEMS * (NR_ITEMS + 1) / 2);
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
