/* SPDX-License-Identifier: MIT */
/*
 * tests/fuzz/env_fuzz.c - libFuzzer target: environment variables
 * (RELIABILITY 3.6 item 6, case A17).
 *
 * Byte 0 picks what to do; the rest, up to a NUL, is the value.
 *
 * Every input: the value goes through runtime/env.c's parsers, each
 * checked against a model written here another way (a number is compared
 * as a string of digits against the range's bounds, not accumulated), for
 * the ranges weft uses and the extremes; and through the WEFT_FAULTS
 * parser (0 or -EINVAL, nothing crashes, the faults are cleared after).
 *
 * One input in four also sets one of the variables a runtime reads at
 * start (WEFT_WORKERS, WEFT_IO, WEFT_IO_PBUFS, WEFT_OFFLOAD_SPIN_NS,
 * WEFT_HANDOFF, WEFT_INLINE_JOIN) to the value and starts a runtime with
 * the defaults: it must start, have the worker count and the backend the
 * model says (the value if valid, else the default with the variable
 * unset), and run a task that makes an offload call and a multishot
 * recv on a socketpair. Worker counts above 8 are not started (threads).
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <weft.h>

#include "runtime/internal.h"
#ifdef WEFT_TEST_HOOKS
#include "runtime/test_hooks.h"
#endif

#define NAME "env_fuzz"

static _Noreturn void fail(const char *what, const char *value)
{
	fprintf(stderr, NAME ": %s (value \"%s\")\n", what, value);
	abort();
}

#define CHECK(cond, value)                 \
	do {                               \
		if (!(cond))               \
			fail(#cond, value); \
	} while (0)

/* ---------------------------------------------------------------- models */

/* Compare two digit strings without leading zeros as numbers. */
static int cmp_digits(const char *a, size_t na, const char *b, size_t nb)
{
	if (na != nb)
		return na < nb ? -1 : 1;
	int c = memcmp(a, b, na);
	return c < 0 ? -1 : c > 0;
}

/* The model of weft__parse_ulong(): 0, -EINVAL or -ERANGE. */
static int model_ulong(const char *s, unsigned long long lo,
		       unsigned long long hi, unsigned long long *out)
{
	char los[32], his[32];
	size_t n = strlen(s), z = 0;

	if (n == 0 || strspn(s, "0123456789") != n)
		return -EINVAL;
	while (z + 1 < n && s[z] == '0')
		z++;
	snprintf(los, sizeof(los), "%llu", lo);
	snprintf(his, sizeof(his), "%llu", hi);
	if (cmp_digits(s + z, n - z, los, strlen(los)) < 0 ||
	    cmp_digits(s + z, n - z, his, strlen(his)) > 0)
		return -ERANGE;
	*out = strtoull(s + z, NULL, 10); /* in range: exact */
	return 0;
}

static int model_switch(const char *s)
{
	if (strcmp(s, "0") == 0)
		return 0;
	if (strcmp(s, "1") == 0)
		return 1;
	return -EINVAL;
}

static void check_parsers(const char *s)
{
	static const unsigned long long ranges[][2] = {
		{ 0, ULLONG_MAX }, { 1, 1024 },	   { 0, 32768 },
		{ 0, 10000000 },   { 7, 7 },	   { 1, 0 },
		{ ULLONG_MAX, ULLONG_MAX },
	};

	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		unsigned long long got = 12345, want = 12345;
		int r = weft__parse_ulong(s, ranges[i][0], ranges[i][1], &got);
		int m = model_ulong(s, ranges[i][0], ranges[i][1], &want);

		CHECK(r == m, s);
		CHECK(got == want, s); /* set on success, untouched otherwise */
	}
	CHECK(weft__parse_switch(s) == model_switch(s), s);
#ifdef WEFT_TEST_HOOKS
	int f = weft_test_faults_parse(s);
	CHECK(f == 0 || f == -EINVAL, s);
	weft_test_faults_clear();
#endif
}

/* ---------------------------------------------------------- end to end */

static const char *const vars[] = {
	"WEFT_WORKERS",	 "WEFT_IO",	 "WEFT_IO_PBUFS",
	"WEFT_OFFLOAD_SPIN_NS", "WEFT_HANDOFF", "WEFT_INLINE_JOIN",
};
#define NVARS (sizeof(vars) / sizeof(vars[0]))

static unsigned default_workers;
static char default_backend[16];

struct probe {
	char backend[16];
	int offload; /* weft_offload()'s result */
	int io; /* 0, or the first failing I/O call's result */
};

static int add_one(void *arg)
{
	return *(int *)arg + 1;
}

static int probe_task(void *arg)
{
	struct probe *p = arg;
	int fds[2], x = 41;
	char buf[8];

	snprintf(p->backend, sizeof(p->backend), "%s", weft_io_backend(NULL));
	p->offload = weft_offload(add_one, &x);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
		p->io = -errno;
		return 0;
	}
	p->io = weft_fd_set_flags(fds[0], WEFT_FD_MULTISHOT);
	if (p->io == 0 && weft_send_all(fds[1], "ping", 4) != 4)
		p->io = -EIO;
	if (p->io == 0 && weft_recv(fds[0], buf, sizeof(buf), 0) != 4)
		p->io = -EIO;
	weft_close(fds[0]);
	weft_close(fds[1]);
	return 0;
}

static void run_probe(unsigned *workers, struct probe *p, const char *s)
{
	weft_runtime *rt;
	int r = weft_runtime_new(&rt, NULL);

	CHECK(r == 0, s);
	*workers = weft_runtime_workers(rt);
	memset(p, 0, sizeof(*p));
	CHECK(weft_block_on(rt, probe_task, p) == 0, s);
	CHECK(weft_runtime_free(rt) == 0, s);
}

static void check_runtime(unsigned which, const char *s)
{
	const char *var = vars[which % NVARS];
	unsigned long long v = 0;
	unsigned want_workers = default_workers, workers;
	const char *want_backend = default_backend;
	struct probe p;

	if (strcmp(var, "WEFT_WORKERS") == 0 &&
	    model_ulong(s, 1, 1024, &v) == 0) {
		if (v > 8)
			return;
		want_workers = (unsigned)v;
	}
	if (strcmp(var, "WEFT_IO") == 0 &&
	    (strcmp(s, "epoll") == 0 || strcmp(s, "io_uring") == 0))
		want_backend = s;
	setenv(var, s, 1);
	run_probe(&workers, &p, s);
	unsetenv(var);
	CHECK(workers == want_workers, s);
	CHECK(strcmp(p.backend, want_backend) == 0, s);
	CHECK(p.offload == 42, s);
	CHECK(p.io == 0, s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct probe p;

	(void)argc;
	(void)argv;
	for (size_t i = 0; i < NVARS; i++)
		unsetenv(vars[i]);
	run_probe(&default_workers, &p, "(defaults)");
	CHECK(p.offload == 42 && p.io == 0, "(defaults)");
	snprintf(default_backend, sizeof(default_backend), "%s", p.backend);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char s[256];
	size_t n;

	if (size == 0)
		return 0;
	n = size - 1 < sizeof(s) - 1 ? size - 1 : sizeof(s) - 1;
	memcpy(s, data + 1, n);
	s[n] = '\0'; /* a NUL inside ends the value, as in an environment */
	check_parsers(s);
	if (data[0] % 4 == 0)
		check_runtime(data[0] / 4u, s);
	return 0;
}
