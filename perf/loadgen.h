/* SPDX-License-Identifier: MIT */
/*
 * perf/loadgen.h - the load generator of shared/perf/io-spec.md section 2
 * (echo) and weft's stand-in for wrk (section 3, http): one thread, one
 * epoll set, closed loop with one request in flight per connection, and a
 * server process started and measured per cell (perf/echo.c, perf/http.c).
 */
#ifndef WEFT_PERF_LOADGEN_H
#define WEFT_PERF_LOADGEN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum loadgen_mode {
	LOADGEN_ECHO, /* spec 2: S-byte messages echoed back, byte-checked */
	LOADGEN_HTTP, /* GET / keep-alive; the answer compared byte for byte */
};

struct loadgen_cfg {
	enum loadgen_mode mode;
	int port;
	int conns; /* C */
	int size; /* S (echo) */
	double warm_s; /* W */
	double dur_s; /* D */
	pid_t server; /* its CPU time is read over the window */
	const char *expect; /* http: the exact answer */
};

struct loadgen_result {
	double rps;
	double p50_us, p99_us, p999_us, mean_us, max_us;
	uint64_t requests; /* counted in the window */
	uint64_t errors, mismatches;
	double loadgen_cpu_s; /* whole run */
	double server_cpu_s; /* over the measured window */
	double server_us_per_req;
};

/* Run one cell. Return: 0, or -errno when the connections cannot be made
 * (then nothing was measured). */
int loadgen_run(const struct loadgen_cfg *cfg, struct loadgen_result *res);

/*
 * loadgen_server_start() - Start @argv (a server that prints "listening on
 * HOST:PORT ..." as its first line) in a child process that dies with us.
 * Return: its pid, the port in *@port; -errno on failure.
 */
pid_t loadgen_server_start(char *const argv[], int *port);

/* SIGKILL and reap the server @pid. */
void loadgen_server_stop(pid_t pid);

/* Path of a built example next to this binary (<build>/examples/NAME). */
const char *loadgen_example_path(const char *name);

#endif /* WEFT_PERF_LOADGEN_H */
