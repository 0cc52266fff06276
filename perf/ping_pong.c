/* SPDX-License-Identifier: MIT */
/*
 * perf/ping_pong.c - shared/perf/cpu-spec.md, section "3. ping_pong and
 * ping_pong_pairs":
 *
 *   A pair = two channels a, b, each bounded with capacity 1, plus two
 *   tasks:
 *     pinger: for i in 0..R: send i on a; receive v on b; check v == i.
 *     ponger: for i in 0..R: receive v on a; send v on b.
 *   Both tasks are spawned (ponger first) and the driver joins both.
 *   ping_pong: one pair, R = 1,000,000. Metric ns_per_roundtrip = wall ns / R.
 *   ping_pong_pairs: P = 1,000 pairs spawned together, each with R = 1,000
 *   round trips (2,000,000 messages). Metric msgs_per_s = 2 x P x R / wall s.
 *
 * weft: a channel is weft_queue_new(1); send is weft_queue_put(), receive
 * weft_queue_get(); the value i travels as (void *)(uintptr_t)i. Queues are
 * made before the clock starts (the spec times spawn to last join), and
 * the driver joins in spawn order. Built only when include/weft/queue.h
 * exists; until then both workloads report themselves unavailable.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "bench.h"

#if __has_include("weft/queue.h")
#include "weft/queue.h"
#define HAVE_QUEUE 1
#else
#define HAVE_QUEUE 0
#endif

#if HAVE_QUEUE

struct pair {
	weft_queue *a; /* pinger -> ponger */
	weft_queue *b; /* ponger -> pinger */
	long long r; /* round trips */
	long long bad; /* pinger: replies that were not i */
	int failed; /* first failed queue call of this pair */
};

static void pair_fail(struct pair *p, int ret)
{
	if (!p->failed)
		p->failed = ret;
}

static int ponger(void *arg)
{
	struct pair *p = arg;
	void *v;
	long long i;
	int ret;

	for (i = 0; i < p->r; i++) {
		ret = weft_queue_get(p->a, &v);
		if (ret < 0)
			goto fail;
		ret = weft_queue_put(p->b, v);
		if (ret < 0)
			goto fail;
	}
	return 0;
fail:
	pair_fail(p, ret);
	return ret;
}

static int pinger(void *arg)
{
	struct pair *p = arg;
	void *v;
	long long i;
	int ret;

	for (i = 0; i < p->r; i++) {
		ret = weft_queue_put(p->a, (void *)(uintptr_t)i);
		if (ret < 0)
			goto fail;
		ret = weft_queue_get(p->b, &v);
		if (ret < 0)
			goto fail;
		if ((uintptr_t)v != (uintptr_t)i)
			p->bad++;
	}
	return 0;
fail:
	pair_fail(p, ret);
	return ret;
}

struct pairs {
	long long npairs;
	struct pair *pairs;
	weft_task **handles; /* 2 per pair: ponger, pinger */
	uint64_t wall_ns;
	int failed; /* first failed spawn or join */
};

static int driver(void *arg)
{
	struct pairs *s = arg;
	long long i, spawned = 0;
	uint64_t t0;
	int ret;

	t0 = weft_now();
	for (i = 0; i < s->npairs; i++) {
		s->handles[2 * i] = weft_spawn(ponger, &s->pairs[i]);
		if (!s->handles[2 * i]) {
			s->failed = -errno;
			break;
		}
		spawned++;
		s->handles[2 * i + 1] = weft_spawn(pinger, &s->pairs[i]);
		if (!s->handles[2 * i + 1]) {
			s->failed = -errno;
			/* the ponger waits for a ping that never comes */
			weft_cancel(s->handles[2 * i]);
			break;
		}
		spawned++;
	}
	for (i = 0; i < spawned; i++) {
		ret = weft_join(s->handles[i]);
		if (ret != 0 && !s->failed)
			s->failed = ret;
	}
	s->wall_ns = weft_now() - t0;
	return s->failed;
}

/* P pairs of R round trips each; fills *wall_ns. Return: 0 or bench_fail(). */
static int run_pairs(const struct bench_opts *o, const char *workload,
		     long long npairs, long long r, uint64_t *wall_ns)
{
	struct pairs s = { .npairs = npairs };
	long long i, made = 0, bad = 0;
	int ret = 0, failed = 0;

	s.pairs = calloc((size_t)npairs, sizeof(*s.pairs));
	s.handles = calloc(2 * (size_t)npairs, sizeof(*s.handles));
	if (!s.pairs || !s.handles) {
		ret = bench_fail(workload, "out of memory");
		goto out_free;
	}
	for (made = 0; made < npairs; made++) {
		struct pair *p = &s.pairs[made];

		p->r = r;
		p->a = weft_queue_new(1);
		p->b = p->a ? weft_queue_new(1) : NULL;
		if (!p->b) {
			ret = bench_fail(workload,
					 "weft_queue_new(1): errno %d", errno);
			if (p->a)
				weft_queue_free(p->a);
			goto out_queues;
		}
	}
	ret = bench_weft_run(o, driver, &s);
	for (i = 0; i < npairs; i++) {
		bad += s.pairs[i].bad;
		if (!failed)
			failed = s.pairs[i].failed;
	}
	if (ret != 0 || failed)
		ret = bench_fail(workload, "weft call failed: %d (queue: %d)",
				 ret, failed);
	else if (bad)
		ret = bench_fail(workload, "%lld pongs differ from their ping",
				 bad);
	*wall_ns = s.wall_ns;
out_queues:
	for (i = 0; i < made; i++) {
		weft_queue_free(s.pairs[i].a);
		weft_queue_free(s.pairs[i].b);
	}
out_free:
	free(s.handles);
	free(s.pairs);
	return ret;
}

static int run_one(const struct bench_opts *o, long long r)
{
	uint64_t wall_ns = 0;

	if (run_pairs(o, "ping_pong", 1, r, &wall_ns))
		return 1;
	bench_emit("ping_pong", "ns_per_roundtrip", (double)wall_ns / (double)r,
		   "ns", r);
	return 0;
}

#define NPAIRS 1000

static int run_many(const struct bench_opts *o, long long r)
{
	uint64_t wall_ns = 0;
	long long msgs = 2LL * NPAIRS * r;

	if (run_pairs(o, "ping_pong_pairs", NPAIRS, r, &wall_ns))
		return 1;
	bench_emit("ping_pong_pairs", "msgs_per_s",
		   (double)msgs / ((double)wall_ns / 1e9), "msg/s", msgs);
	return 0;
}

#define UNAVAILABLE NULL

#else /* !HAVE_QUEUE */

static int unavailable_run(const struct bench_opts *o, long long r)
{
	(void)o;
	(void)r;
	return 1;
}

#define run_one unavailable_run
#define run_many unavailable_run
#define UNAVAILABLE "skipped: weft/queue.h not in this build"

#endif /* HAVE_QUEUE */

const struct bench_workload bench_ping_pong = {
	.name = "ping_pong",
	.spec = "3. ping_pong: one pair of capacity-1 queues, R round trips",
	.size_full = 1000000,
	.size_quick = 1000000,
	.unavailable = UNAVAILABLE,
	.run = run_one,
};

const struct bench_workload bench_ping_pong_pairs = {
	.name = "ping_pong_pairs",
	.spec = "3. ping_pong_pairs: 1,000 pairs spawned together, R each",
	.size_full = 1000,
	.size_quick = 1000,
	.unavailable = UNAVAILABLE,
	.run = run_many,
};
