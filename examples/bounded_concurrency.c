/* SPDX-License-Identifier: MIT */
/*
 * examples/bounded_concurrency.c - at most 5 of 20 jobs in flight.
 *
 * Seed files: shared/seeds/002_9ceb21de6e9778d1.txt,
 * 001_7802f0af235a723e.txt, 004_636619dee873197f.txt.
 *
 * Ports the seeds' Semaphore pattern: seed 002 "Semaphore: limit
 * concurrency" (20 URLs, asyncio.Semaphore(5)), also seed 001 "Pattern 2:
 * Bounded Concurrency" and seed 004 "Semaphore — Concurrency Limiting".
 *
 *     async def fetch_with_limit(client, sem, url):
 *         async with sem:
 *             return (await client.get(url)).status_code
 *
 * In weft, `async with sem:` is weft_sem_acquire() ... weft_sem_release().
 * The 20 jobs are real tasks on every worker, so the jobs run in parallel
 * and the counters below are atomics (in asyncio a plain int would do).
 *
 * Checked: no more than 5 jobs are ever inside the semaphore (the maximum
 * is tracked), every job ran and succeeded, and the run took at least 4
 * rounds of one job's time (20 jobs / 5 permits): a semaphore that let
 * more through would finish sooner.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>

#include "weft.h"

#define NR_JOBS 20
#define LIMIT 5
#define JOB_TIME WEFT_MSEC(20) /* the simulated request */

struct crawler {
	weft_sem sem; /* LIMIT permits */
	atomic_int in_flight; /* jobs holding a permit now */
	atomic_int max_in_flight; /* the most ever seen at once */
};

struct job {
	struct crawler *c;
	int id;
	int status_code; /* the result travels back through arg */
};

/* Raise c->max_in_flight to at least @now. */
static void note_in_flight(struct crawler *c, int now)
{
	int max = atomic_load(&c->max_in_flight);

	while (now > max &&
	       !atomic_compare_exchange_weak(&c->max_in_flight, &max, now))
		;
}

static int fetch_with_limit(void *arg)
{
	struct job *j = arg;
	struct crawler *c = j->c;
	int ret;

	ret = weft_sem_acquire(&c->sem); /* async with sem: */
	if (ret < 0)
		return ret; /* cancelled: we hold no permit */
	note_in_flight(c, atomic_fetch_add(&c->in_flight, 1) + 1);

	ret = weft_sleep(JOB_TIME); /* await client.get(url) */
	if (ret == 0)
		j->status_code = 200;

	atomic_fetch_sub(&c->in_flight, 1);
	weft_sem_release(&c->sem); /* leaving the with block */
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

static int main_task(void *arg)
{
	struct crawler c = { 0 };
	struct job jobs[NR_JOBS];
	weft_task *tasks[NR_JOBS];
	uint64_t start, took;
	int i, ret, spawned;

	(void)arg;
	weft_sem_init(&c.sem, LIMIT);
	start = weft_now();
	for (spawned = 0; spawned < NR_JOBS; spawned++) {
		jobs[spawned] = (struct job){ .c = &c, .id = spawned };
		tasks[spawned] = weft_spawn(fetch_with_limit, &jobs[spawned]);
		if (!tasks[spawned]) {
			CHECK(0, "weft_spawn: errno %d", errno);
			break;
		}
	}
	/* asyncio.gather(*tasks): join them all, in order. */
	for (i = 0; i < spawned; i++) {
		ret = weft_join(tasks[i]);
		CHECK(ret == 0 && jobs[i].status_code == 200,
		      "job %d: status %d, code %d", i, ret,
		      jobs[i].status_code);
	}
	took = weft_now() - start;
	weft_sem_destroy(&c.sem);

	printf("%d jobs, limit %d: at most %d in flight, took %llu ms\n",
	       spawned, LIMIT, atomic_load(&c.max_in_flight),
	       (unsigned long long)(took / WEFT_MSEC(1)));
	CHECK(spawned == NR_JOBS, "only %d jobs spawned", spawned);
	CHECK(atomic_load(&c.max_in_flight) <= LIMIT,
	      "%d jobs in flight at once, limit %d",
	      atomic_load(&c.max_in_flight), LIMIT);
	CHECK(atomic_load(&c.max_in_flight) >= 1, "no job ran");
	CHECK(took >= (NR_JOBS / LIMIT) * JOB_TIME,
	      "took %llu ns, under %d rounds of %llu ns",
	      (unsigned long long)took, NR_JOBS / LIMIT,
	      (unsigned long long)JOB_TIME);
	return 0;
}

int main(void)
{
	int ret = weft_run(main_task, NULL, NULL); /* asyncio.run(main()) */

	if (ret != 0) {
		fprintf(stderr, "FAIL: weft_run: %d\n", ret);
		return 1;
	}
	if (failures)
		return 1;
	printf("ok\n");
	return 0;
}
