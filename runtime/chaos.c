/* SPDX-License-Identifier: MIT */
/*
 * runtime/chaos.c - chaos mode of WEFT_TEST_HOOKS builds (RELIABILITY 3.1,
 * "the cheap version of Go's race mode randomising the scheduler").
 *
 *   WEFT_CHAOS=<seed>[:<per-mille>]
 *
 * makes every protocol point - a weft__chaos() call placed where a
 * preemption would hurt most: between a worker's last look at its queues
 * and its sleep, between a wait's registrations and its publish CAS, in a
 * claim, between a Chase-Lev deque's reads and its CAS, in a wake-up, a
 * timer fire, an offload hand-off - yield the CPU (sched_yield) or spin
 * 0-50 us, with the given probability (default 20 per mille). The other
 * threads and the OS then run in the middle of those protocols far more
 * often than they would: a stress test's invariant that holds under chaos
 * has been checked against many more interleavings. It explores nothing a
 * model checker (tests/model) would not, but it runs the whole suite.
 *
 * The seed is printed once on stderr ("weft: chaos mode: seed S, P per
 * mille"), parsed by the first weft_runtime_new(). Each thread draws from
 * its own xorshift stream, seeded from the seed and the order in which
 * threads first reach a point: a failing seed replays the same decisions
 * per thread, not the same interleaving (the OS still schedules).
 * weft_test_chaos() sets it from a test (per-mille 0: off), and
 * weft_test_chaos_events() counts the points that acted.
 *
 * Cost: one relaxed load of a flag per point in test builds; nothing at
 * all in others (weft__chaos() is an empty inline there, and WEFT_CHAOS is
 * reported as ignored).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"
#include "runtime/test_hooks.h"
#include "runtime/timer.h"

static pthread_once_t env_once = PTHREAD_ONCE_INIT;

#ifdef WEFT_TEST_HOOKS

#define CHAOS_SPIN_MAX_NS 50000u
#define CHAOS_DEFAULT_PERMILLE 20u

bool weft__chaos_on; /* __atomic builtins only */
static _Atomic uint64_t chaos_seed;
static _Atomic unsigned chaos_permille;
static _Atomic unsigned chaos_gen; /* bumped by every (re)arm */
static _Atomic uint64_t chaos_threads; /* threads that drew so far */
static _Atomic unsigned long chaos_events;

static _Thread_local uint64_t tls_rng;
static _Thread_local unsigned tls_gen;

/* splitmix64: spreads (seed, thread number) over the xorshift state. */
static uint64_t mix(uint64_t z)
{
	z += UINT64_C(0x9e3779b97f4a7c15);
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

void weft__chaos_slow(void)
{
	unsigned gen = atomic_load_explicit(&chaos_gen, memory_order_acquire);
	uint64_t r;

	if (tls_gen != gen || !tls_rng) {
		uint64_t n = atomic_fetch_add_explicit(&chaos_threads, 1,
						       memory_order_relaxed);
		tls_rng = mix(atomic_load_explicit(&chaos_seed,
						   memory_order_relaxed) ^
			      mix(n + 1)) |
			  1;
		tls_gen = gen;
	}
	/* xorshift64 */
	r = tls_rng;
	r ^= r << 13;
	r ^= r >> 7;
	r ^= r << 17;
	tls_rng = r;
	if (r % 1000 >=
	    atomic_load_explicit(&chaos_permille, memory_order_relaxed))
		return;
	atomic_fetch_add_explicit(&chaos_events, 1, memory_order_relaxed);
	if ((r >> 20) & 1) {
		sched_yield();
		return;
	}
	uint64_t end = weft__clock_real() + (r >> 24) % (CHAOS_SPIN_MAX_NS + 1);
	while (weft__clock_real() < end)
		weft__cpu_relax();
}

static void arm(uint64_t seed, unsigned permille)
{
	atomic_store_explicit(&chaos_seed, seed, memory_order_relaxed);
	atomic_store_explicit(&chaos_permille, permille, memory_order_relaxed);
	atomic_store_explicit(&chaos_threads, 0, memory_order_relaxed);
	atomic_fetch_add_explicit(&chaos_gen, 1, memory_order_release);
	__atomic_store_n(&weft__chaos_on, permille != 0, __ATOMIC_RELAXED);
}

/* "<seed>[:<per-mille>]": a decimal seed, per-mille 0-1000. */
static int parse(const char *s, uint64_t *seed, unsigned *permille)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	*seed = v;
	*permille = CHAOS_DEFAULT_PERMILLE;
	if (*end == ':') {
		const char *p = end + 1;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = strtoull(p, &end, 10);
		if (errno || end == p || v > 1000)
			return -EINVAL;
		*permille = (unsigned)v;
	}
	return *end ? -EINVAL : 0;
}

static void parse_env(void)
{
	const char *e = getenv("WEFT_CHAOS");
	uint64_t seed;
	unsigned permille;

	if (!e || !*e)
		return;
	if (parse(e, &seed, &permille) != 0) {
		weft__env_bad("WEFT_CHAOS", e,
			      "<seed>[:<per-mille 0-1000>], decimal");
		return;
	}
	weft__report("chaos mode: seed %llu, %u per mille",
		     (unsigned long long)seed, permille);
	arm(seed, permille);
}

void weft__chaos_init(void)
{
	pthread_once(&env_once, parse_env);
}

WEFT_API void weft_test_chaos(uint64_t seed, unsigned permille)
{
	arm(seed, permille > 1000 ? 1000 : permille);
}

WEFT_API int weft_test_chaos_parse(const char *spec)
{
	uint64_t seed;
	unsigned permille;
	int err = parse(spec, &seed, &permille);

	if (!err)
		arm(seed, permille);
	return err;
}

WEFT_API unsigned long weft_test_chaos_events(void)
{
	return atomic_load_explicit(&chaos_events, memory_order_relaxed);
}

#else

static void warn_env(void)
{
	const char *e = getenv("WEFT_CHAOS");

	if (e && *e)
		weft__report("ignoring WEFT_CHAOS: chaos mode exists only in "
			     "test builds (WEFT_TEST_HOOKS)");
}

void weft__chaos_init(void)
{
	pthread_once(&env_once, warn_env);
}

#endif
