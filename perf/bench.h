/* SPDX-License-Identifier: MIT */
/*
 * perf/bench.h - the interface between weft-bench's driver (main.c) and its
 * workloads (one per file, each implementing one section of
 * shared/perf/cpu-spec.md).
 *
 * The driver runs every (workload, pass) in a child process of its own
 * (spec "Common rules": one process per (peer, workload, run)). A child
 * calls the workload's run(), which times the spec's region in-process and
 * prints the spec's JSON lines with bench_emit() on stdout:
 *   {"peer":"weft","workload":W,"metric":M,"value":V,"unit":U,"n":N}
 * A violated invariant (a wrong count, a wrong result, a failed weft call)
 * prints a line with metric "error" and the reason in "unit", as the
 * peers' run.sh does, through bench_fail(). The driver adds "run" and
 * "proc_s" to every line it receives.
 */
#ifndef WEFT_PERF_BENCH_H
#define WEFT_PERF_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "weft.h"

/*
 * struct bench_opts - what a child was asked to run.
 * @workers: weft_config.workers of the runtime (spec: 2).
 * @quick: --quick was given; run() gets the workload's size_quick.
 */
struct bench_opts {
	unsigned workers;
	bool quick;
};

/*
 * struct bench_workload - one workload of the spec.
 * @name: the spec's workload name, also the "workload" field.
 * @spec: the spec section it implements, for --list.
 * @size_full: the spec's size argument (the one the peers take on their
 *	command line: N, Y, R, n or M); run() gets it unless --quick or --n.
 * @size_quick: the size under --quick (== @size_full unless the full size
 *	is too slow for `make bench`; the "n" field then shows it).
 * @quick_runs: under --quick, run at most this many passes (0: all).
 * @unavailable: NULL, or why weft cannot run it in this build (an API the
 *	workload needs is missing); the driver then prints one "error" line
 *	with this reason instead of starting children.
 * @run: the body, in the child; prints its lines. Return: 0 on success,
 *	non-zero once bench_fail() has reported why (the child exits 1).
 */
struct bench_workload {
	const char *name;
	const char *spec;
	long long size_full;
	long long size_quick;
	unsigned quick_runs;
	const char *unavailable;
	int (*run)(const struct bench_opts *o, long long size);
};

/* The workloads, one per file, in the order the spec lists them. */
extern const struct bench_workload bench_spawn_join;
extern const struct bench_workload bench_yield;
extern const struct bench_workload bench_switch;
extern const struct bench_workload bench_ping_pong;
extern const struct bench_workload bench_ping_pong_pairs;
extern const struct bench_workload bench_fib;
extern const struct bench_workload bench_sleepers;
extern const struct bench_workload bench_offload;
extern const struct bench_workload bench_offload_c64;
/* Not in the spec: the sync primitives' costs (issue 4), perf/sync.c. */
extern const struct bench_workload bench_mutex_pair;
extern const struct bench_workload bench_mutex_convoy;
extern const struct bench_workload bench_mutex_handoff;
extern const struct bench_workload bench_sem_pair;
extern const struct bench_workload bench_queue_pair;
extern const struct bench_workload bench_queue_mpmc;
extern const struct bench_workload bench_limiter_acquire;
extern const struct bench_workload bench_limiter_c64;
/* shared/perf/io-spec.md: perf/echo.c, perf/http.c (load: perf/loadgen.c) */
extern const struct bench_workload bench_echo;
extern const struct bench_workload bench_http;

/**
 * bench_emit() - Print one result line on stdout (and flush it).
 * @workload: the spec's workload name.
 * @metric: the spec's metric name (ns_per_task, ...).
 * @value: the value, in @unit.
 * @unit: "ns", "ms", "msg/s", "tasks/s", "MiB", "bytes", "us".
 * @n: the size the value was measured at (the spec's "n" field).
 */
void bench_emit(const char *workload, const char *metric, double value,
		const char *unit, long long n);

/**
 * bench_fail() - Print an "error" line for @workload: the reason, from
 * @fmt, goes in "unit". Return: 1, for `return bench_fail(...)`.
 */
int bench_fail(const char *workload, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/**
 * bench_weft_run() - Run @fn(@arg) as the main task of a new runtime with
 * @o->workers workers; return after the runtime shut down.
 * Return: @fn's status, or weft_run()'s error.
 */
int bench_weft_run(const struct bench_opts *o, weft_fn fn, void *arg);

/* Resident set now, from /proc/self/statm, in KiB (0 if unreadable). */
long bench_rss_now_kib(void);

/* getrusage(RUSAGE_SELF).ru_maxrss: the peak resident set so far, KiB. */
long bench_rss_peak_kib(void);

/*
 * bench_splitmix64() - the spec's PRNG ("Common rules", PRNG): 64-bit
 * wrap-around, state initialised to 42 by the caller.
 */
static inline uint64_t bench_splitmix64(uint64_t *s)
{
	uint64_t z;

	*s += UINT64_C(0x9E3779B97F4A7C15);
	z = *s;
	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

#endif /* WEFT_PERF_BENCH_H */
