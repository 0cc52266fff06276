/* SPDX-License-Identifier: MIT */
/*
 * perf/echo.c - shared/perf/io-spec.md, section "2. Echo workload":
 *
 *   Raw TCP echo; the client (perf/loadgen.c, section 2 to the letter)
 *   keeps one S-byte request in flight per connection. Matrix C in
 *   {1, 64, 1000} x S in {64, 4096}; W = 1 s warm-up, D = 10 s window;
 *   quick mode: W = 0.5 s, D = 1.5 s, 1 run.
 *
 * The server is examples/echo_server (2 workers, 127.0.0.1, port 0; -t 0:
 * no idle timeout, like the peers' servers, as its default 60 s costs a
 * timer per waiting call) in a process of its own, started per cell, so
 * its CPU time (utime + stime from /proc/PID/stat, over the window) is the
 * server's alone; the load generator runs in this process, one thread,
 * unpinned (pin=shared).
 * Metrics per cell (suffix _cC_sS): rps, p50_us, p99_us, p999_us,
 * server_us_per_req (server CPU per counted request), loadgen_cpu_s.
 * The size argument is D in milliseconds.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "loadgen.h"

static int run(const struct bench_opts *o, long long d_ms)
{
	static const int conns[] = { 1, 64, 1000 }, sizes[] = { 64, 4096 };
	const char *bin = loadgen_example_path("echo_server");
	char workers[16];
	int failed = 0;

	if (!bin)
		return bench_fail("echo", "examples/echo_server is not built");
	snprintf(workers, sizeof(workers), "%u", o->workers);
	for (size_t ci = 0; ci < 3; ci++) {
		for (size_t si = 0; si < 2; si++) {
			/* -t 0: no idle timeout, as the peers' servers */
			char *argv[] = { (char *)bin, "-p", "0", "-w",
					 workers,     "-t", "0", NULL };
			struct loadgen_cfg cfg = {
				.mode = LOADGEN_ECHO,
				.conns = conns[ci],
				.size = sizes[si],
				.warm_s = o->quick ? 0.5 : 1.0,
				.dur_s = (double)d_ms / 1000.0,
			};
			struct loadgen_result r;
			char m[64];
			int port, err;

			cfg.server = loadgen_server_start(argv, &port);
			if (cfg.server < 0)
				return bench_fail("echo",
						  "server did not start");
			cfg.port = port;
			err = loadgen_run(&cfg, &r);
			loadgen_server_stop(cfg.server);
			if (err) {
				failed = bench_fail("echo", "c%d s%d: %s",
						    conns[ci], sizes[si],
						    strerror(-err));
				continue;
			}
			if (r.errors)
				failed = bench_fail(
					"echo",
					"c%d s%d: %llu errors (%llu mismatches)",
					conns[ci], sizes[si],
					(unsigned long long)r.errors,
					(unsigned long long)r.mismatches);
#define EMIT(name, val, unit)                                                  \
	do {                                                                   \
		snprintf(m, sizeof(m), name "_c%d_s%d", conns[ci], sizes[si]); \
		bench_emit("echo", m, (val), unit, d_ms);                      \
	} while (0)
			EMIT("rps", r.rps, "req/s");
			EMIT("p50_us", r.p50_us, "us");
			EMIT("p99_us", r.p99_us, "us");
			EMIT("p999_us", r.p999_us, "us");
			EMIT("server_us_per_req", r.server_us_per_req, "us");
			EMIT("loadgen_cpu_s", r.loadgen_cpu_s, "s");
#undef EMIT
		}
	}
	return failed;
}

const struct bench_workload bench_echo = {
	.name = "echo",
	.spec = "io 2. echo: C x S matrix against examples/echo_server",
	.size_full = 10000,
	.size_quick = 1500,
	.quick_runs = 1,
	.run = run,
};
