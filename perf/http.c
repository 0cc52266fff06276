/* SPDX-License-Identifier: MIT */
/*
 * perf/http.c - shared/perf/io-spec.md, section "3. HTTP workload":
 *
 *   HTTP/1.1 keep-alive; GET / answers 200, text/plain, "Hello, World!\n"
 *   (Content-Length: 14). C in {64, 256}; 10 s measured (quick: 1.5 s).
 *
 * The server is examples/http_hello (2 workers, 127.0.0.1, port 0; -t 0:
 * no request timeouts, like the peers' servers) in its own process. The
 * spec's load is wrk -t1; weft-bench uses its own one-thread closed loop
 * instead (perf/loadgen.c: one request in flight per connection, as wrk
 * without a pipelining script), which checks every answer byte for byte. Compare with the peers' wrk figures only roughly;
 * run wrk itself for the exact setting (README). Metrics per cell (suffix
 * _cC): rps, p50_us, p99_us, server_us_per_req, loadgen_cpu_s. The size
 * argument is the window in milliseconds.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "loadgen.h"

static const char OK[] = "HTTP/1.1 200 OK\r\n"
			 "Content-Type: text/plain\r\n"
			 "Content-Length: 14\r\n"
			 "\r\n"
			 "Hello, World!\n";

static int run(const struct bench_opts *o, long long d_ms)
{
	static const int conns[] = { 64, 256 };
	const char *bin = loadgen_example_path("http_hello");
	char workers[16];
	int failed = 0;

	if (!bin)
		return bench_fail("http", "examples/http_hello is not built");
	snprintf(workers, sizeof(workers), "%u", o->workers);
	for (size_t ci = 0; ci < 2; ci++) {
		/* -t 0: no request timeouts, as the peers' servers */
		char *argv[] = { (char *)bin, "-p", "0", "-w",
				 workers,     "-t", "0", NULL };
		struct loadgen_cfg cfg = {
			.mode = LOADGEN_HTTP,
			.conns = conns[ci],
			.warm_s = o->quick ? 0.5 : 1.0,
			.dur_s = (double)d_ms / 1000.0,
			.expect = OK,
		};
		struct loadgen_result r;
		char m[64];
		int port, err;

		cfg.server = loadgen_server_start(argv, &port);
		if (cfg.server < 0)
			return bench_fail("http", "server did not start");
		cfg.port = port;
		err = loadgen_run(&cfg, &r);
		loadgen_server_stop(cfg.server);
		if (err) {
			failed = bench_fail("http", "c%d: %s", conns[ci],
					    strerror(-err));
			continue;
		}
		if (r.errors)
			failed = bench_fail("http", "c%d: %llu errors",
					    conns[ci],
					    (unsigned long long)r.errors);
#define EMIT(name, val, unit)                                   \
	do {                                                    \
		snprintf(m, sizeof(m), name "_c%d", conns[ci]); \
		bench_emit("http", m, (val), unit, d_ms);       \
	} while (0)
		EMIT("rps", r.rps, "req/s");
		EMIT("p50_us", r.p50_us, "us");
		EMIT("p99_us", r.p99_us, "us");
		EMIT("server_us_per_req", r.server_us_per_req, "us");
		EMIT("loadgen_cpu_s", r.loadgen_cpu_s, "s");
#undef EMIT
	}
	return failed;
}

const struct bench_workload bench_http = {
	.name = "http",
	.spec = "io 3. http: keep-alive GET / against examples/http_hello",
	.size_full = 10000,
	.size_quick = 1500,
	.quick_runs = 1,
	.run = run,
};
