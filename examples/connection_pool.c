/* SPDX-License-Identifier: MIT */
/*
 * examples/connection_pool.c - a pool of reusable connections: a queue of
 * idle ones, guarded by a semaphore of max_size permits.
 *
 * Seed files: shared/seeds/002_9ceb21de6e9778d1.txt, 003_7eae0f6a7e03e310.txt.
 *
 * Ports seed 002's "Real-world: async database connection pool" (asyncpg
 * create_pool(min_size=2, max_size=10), 20 fetch_user calls sharing it)
 * and the acquire/release of seed 003's DatabasePool:
 *
 *     async def fetch_user(user_id):
 *         async with pool.acquire() as conn:
 *             return await conn.fetchrow("SELECT ... WHERE id = $1", user_id)
 *
 * pool_acquire() takes a permit (waiting while max_size connections are
 * out), then an idle connection from the queue, or opens a new one when
 * none is idle - the permit guarantees there is room for it. pool_release()
 * puts the connection back before giving the permit back, so the next
 * permit holder finds it. A caller cancelled while it waits for a permit
 * holds nothing (weft_sem_acquire's rule), so nothing leaks.
 *
 * Checked: all 20 queries return the right row; never more than max_size
 * connections exist or are in use at once; no connection is ever used by
 * two tasks at a time; every connection is closed by pool_close().
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "weft.h"

#define MIN_SIZE 2
#define MAX_SIZE 4
#define NR_QUERIES 20

struct conn {
	int id;
	atomic_bool busy; /* set while a task uses it: must never be shared */
};

struct pool {
	weft_sem permits; /* MAX_SIZE: connections out + may be opened */
	weft_queue *idle; /* connections nobody uses right now */
	atomic_int opened, closed, in_use, max_in_use;
	atomic_int shared; /* a connection found busy: a bug */
};

static struct conn *conn_open(struct pool *p)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (c)
		c->id = atomic_fetch_add(&p->opened, 1) + 1;
	return c;
}

static void conn_close(struct pool *p, struct conn *c)
{
	atomic_fetch_add(&p->closed, 1);
	free(c);
}

static int pool_open(struct pool *p)
{
	struct conn *c;
	int i;

	weft_sem_init(&p->permits, MAX_SIZE);
	p->idle = weft_queue_new(MAX_SIZE); /* never full: room for all */
	if (!p->idle)
		return -errno;
	for (i = 0; i < MIN_SIZE; i++) {
		c = conn_open(p);
		if (!c)
			return -ENOMEM;
		weft_queue_try_put(p->idle, c);
	}
	return 0;
}

static int pool_acquire(struct pool *p, struct conn **out)
{
	struct conn *c;
	int ret, now, max;

	ret = weft_sem_acquire(&p->permits);
	if (ret < 0)
		return ret;
	if (weft_queue_try_get(p->idle, (void **)&c) < 0) {
		c = conn_open(p); /* none idle: the permit leaves room */
		if (!c) {
			weft_sem_release(&p->permits);
			return -ENOMEM;
		}
	}
	if (atomic_exchange(&c->busy, true))
		atomic_fetch_add(&p->shared, 1);
	now = atomic_fetch_add(&p->in_use, 1) + 1;
	max = atomic_load(&p->max_in_use);
	while (now > max &&
	       !atomic_compare_exchange_weak(&p->max_in_use, &max, now))
		;
	*out = c;
	return 0;
}

static void pool_release(struct pool *p, struct conn *c)
{
	atomic_fetch_sub(&p->in_use, 1);
	atomic_store(&c->busy, false);
	weft_queue_try_put(p->idle, c); /* back first ... */
	weft_sem_release(&p->permits); /* ... then the permit */
}

static void pool_close(struct pool *p)
{
	struct conn *c;

	weft_queue_close(p->idle);
	while (weft_queue_try_get(p->idle, (void **)&c) == 0)
		conn_close(p, c);
	weft_queue_free(p->idle);
	weft_sem_destroy(&p->permits);
}

/* ---- the application ----------------------------------------------------- */

struct fetch_user {
	struct pool *pool;
	int user_id;
	int row_id; /* the result */
};

static int fetch_user(void *arg)
{
	struct fetch_user *f = arg;
	struct conn *conn;
	int ret;

	ret = pool_acquire(f->pool, &conn); /* async with pool.acquire() */
	if (ret < 0)
		return ret;
	ret = weft_sleep(WEFT_MSEC(5)); /* await conn.fetchrow(...) */
	if (ret == 0)
		f->row_id = f->user_id;
	pool_release(f->pool, conn); /* on every path out of the block */
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
	struct pool pool = { 0 };
	struct fetch_user calls[NR_QUERIES];
	weft_task *tasks[NR_QUERIES];
	int i, ret, spawned;

	(void)arg;
	ret = pool_open(&pool);
	if (ret < 0)
		return ret;
	for (spawned = 0; spawned < NR_QUERIES; spawned++) {
		calls[spawned] = (struct fetch_user){ &pool, spawned + 1, 0 };
		tasks[spawned] = weft_spawn(fetch_user, &calls[spawned]);
		if (!tasks[spawned]) {
			CHECK(0, "weft_spawn: errno %d", errno);
			break;
		}
	}
	for (i = 0; i < spawned; i++) {
		ret = weft_join(tasks[i]);
		CHECK(ret == 0 && calls[i].row_id == calls[i].user_id,
		      "fetch_user(%d): %d, row %d", calls[i].user_id, ret,
		      calls[i].row_id);
	}
	pool_close(&pool);

	printf("%d queries on %d connections (max %d), at most %d in use "
	       "at once; %d closed\n",
	       spawned, atomic_load(&pool.opened), MAX_SIZE,
	       atomic_load(&pool.max_in_use), atomic_load(&pool.closed));
	CHECK(spawned == NR_QUERIES, "only %d queries spawned", spawned);
	CHECK(atomic_load(&pool.opened) <= MAX_SIZE, "%d connections opened",
	      atomic_load(&pool.opened));
	CHECK(atomic_load(&pool.max_in_use) <= MAX_SIZE,
	      "%d connections in use at once", atomic_load(&pool.max_in_use));
	CHECK(atomic_load(&pool.shared) == 0,
	      "a connection was handed to two tasks at once (%d times)",
	      atomic_load(&pool.shared));
	CHECK(atomic_load(&pool.closed) == atomic_load(&pool.opened),
	      "%d opened, %d closed", atomic_load(&pool.opened),
	      atomic_load(&pool.closed));
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
