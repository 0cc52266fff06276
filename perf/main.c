/* SPDX-License-Identifier: MIT */
/*
 * perf/main.c - weft-bench, the driver of weft's CPU perf harness; the
 * workloads, one per file, implement shared/perf/cpu-spec.md exactly.
 *
 *   weft-bench [--quick] [--runs N] [--only REGEX] [--workers N]
 *              [--json-only] [--out FILE] [--peers FILE] [--timeout S]
 *              [--n N] [--list]
 *
 * How a suite runs (spec "Common rules"):
 *   1. Passes are interleaved: pass 1 of every selected workload, then
 *      pass 2, ... (default 3 passes).
 *   2. Each (workload, pass) is a child process: this same binary,
 *      re-executed from /proc/self/exe with `--child WORKLOAD`, its stdout
 *      a pipe to us. The child starts a runtime of --workers workers
 *      (default 2), runs the workload's driver as the runtime's main task,
 *      times spawn-of-the-first to join-of-the-last in-process, checks the
 *      spec's invariants and prints the spec's JSON lines.
 *   3. A child has --timeout seconds (default 120); past that it is killed
 *      (SIGKILL, by pid) and an "error" line says so. A child that exits
 *      non-zero, dies of a signal or prints nothing also gets an "error"
 *      line, unless it printed one itself. Error lines carry the reason in
 *      "unit", as the peers' run.sh does, so summarize.py reads both.
 *   4. Every line gets "run" (the pass) and "proc_s" (the child's wall time
 *      from fork to reap, start-up included), is printed on stdout and
 *      appended to perf/results.jsonl (or --out).
 *   5. At the end: a table of median, min, max and spread = (max - min) /
 *      median per (workload, metric), next to the targets, the
 *      spec's figures for Tokio, Go and oneTBB, and, with --peers, the
 *      medians of a peers' results.jsonl (shared/peers/cpu/run.sh).
 *
 * --quick keeps the spec's sizes and passes except for sleepers (one pass,
 * N = 100,000), so `make bench` finishes in well under a minute on 2 cores;
 * the "n" field shows every size actually used.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* ---- the workloads, in the spec's order ---------------------------------- */

static const struct bench_workload *const workloads[] = {
	&bench_spawn_join, /* 1. */
	&bench_yield, /* 2. */
	&bench_switch, /* 2., boost-context */
	&bench_ping_pong, /* 3. */
	&bench_ping_pong_pairs, /* 3. */
	&bench_fib, /* 4. */
	&bench_sleepers, /* 5. */
	&bench_offload, /* 6. */
	&bench_offload_c64, /* 6. */
	&bench_mutex_pair, /* perf/sync.c: issue 4, not the spec */
	&bench_mutex_convoy,
	&bench_mutex_handoff,
	&bench_sem_pair,
	&bench_queue_pair,
	&bench_queue_mpmc,
	&bench_limiter_acquire,
	&bench_limiter_c64,
	&bench_echo, /* io-spec 2. (perf/echo.c) */
	&bench_http, /* io-spec 3. (perf/http.c) */
};
#define NR_WORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

/*
 * What each metric is compared with: the spec's table of peers' figures
 * (2-core machine, medians; Tokio, Go, oneTBB, plus the raw-switch and
 * sequential-C limits) and the target. @target_op: '<' or '>' for
 * a target to pass, '~' for a figure to approach, 0 for none.
 */
struct reference {
	const char *workload;
	const char *metric;
	const char *spec_peers;
	char target_op;
	double target;
};

static const struct reference references[] = {
	{ "spawn_join", "ns_per_task", "tokio 151, go 203, tbb 102", '<', 75 },
	{ "yield", "ns_per_yield", "tokio 143, go 52", '<', 15 },
	{ "switch", "ns_per_switch_pair", "boost-context 11.0", '~', 11.0 },
	{ "switch", "ns_per_switch", "boost-context 5.5", '~', 5.5 },
	{ "ping_pong", "ns_per_roundtrip", "tokio 197, go 240", '<', 100 },
	{ "ping_pong_pairs", "msgs_per_s", "tokio 22.0M, go 16.4M", '>', 44e6 },
	{ "fib", "wall_ms", "tokio 275, go 697, tbb 67; C seq 2.2", '<', 70 },
	{ "fib", "tasks_per_s", "tokio 4.9M, go 1.9M, tbb 20M (by ms)", 0, 0 },
	{ "sleepers", "wall_ms", "tokio 2791, go 3052", '<', 1300 },
	{ "sleepers", "peak_rss_mib", "", 0, 0 },
	{ "sleepers", "rss_per_task", "tokio 1416, go 961", '<', 4608 },
	{ "offload", "us_per_roundtrip_seq", "tokio 22.1", '<', 5 },
	{ "offload_c64", "us_per_roundtrip_c64", "tokio 4.45", '<', 2 },
	/* issue 4: "tens of nanoseconds at most" uncontended */
	{ "mutex_pair", "ns_per_pair", "", '<', 100 },
	{ "queue_pair", "ns_per_pair", "", '<', 100 },
	{ "queue_mpmc", "msgs_per_s", "ping_pong_pairs: tokio 22.0M, go 16.4M",
	  0, 0 },
};

/* Peers in the order their medians are shown (others follow, as found). */
static const char *const peer_order[] = {
	"tokio", /* the spec's table order: Tokio, Go, oneTBB first */
	"go",
	"tbb",
	"boost-fiber", /* then the other peers of shared/peers/cpu */
	"boost-context",
	"c-seq",
	"asyncio",
	"uvloop",
};

/* ---- small helpers --------------------------------------------------------- */

static void die(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "weft-bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void *xrealloc(void *p, size_t size)
{
	p = realloc(p, size);
	if (!p)
		die("out of memory");
	return p;
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s);

	if (!d)
		die("out of memory");
	return d;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Copy @src into @dst of @cap bytes, truncated, always terminated. */
static void copy_str(char *dst, size_t cap, const char *src)
{
	size_t len = strlen(src);

	if (len >= cap)
		len = cap - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* @s as the inside of a JSON string (quotes and controls escaped). */
static void json_escape(char *out, size_t cap, const char *s)
{
	size_t at = 0;

	for (; *s && at + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\') {
			out[at++] = '\\';
			out[at++] = (char)ch;
		} else if (ch < 0x20) {
			at += (size_t)snprintf(out + at, cap - at, "\\u%04x",
					       ch);
		} else {
			out[at++] = (char)ch;
		}
	}
	out[at] = '\0';
}

/* ---- the workload side (bench.h) ----------------------------------------- */

void bench_emit(const char *workload, const char *metric, double value,
		const char *unit, long long n)
{
	if (!isfinite(value)) { /* JSON has no inf or nan */
		bench_fail(workload, "%s is not finite (%g)", metric, value);
		return;
	}
	printf("{\"peer\":\"weft\",\"workload\":\"%s\",\"metric\":\"%s\","
	       "\"value\":%.6g,\"unit\":\"%s\",\"n\":%lld}\n",
	       workload, metric, value, unit, n);
	fflush(stdout);
}

int bench_fail(const char *workload, const char *fmt, ...)
{
	char why[256], esc[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	json_escape(esc, sizeof(esc), why);
	printf("{\"peer\":\"weft\",\"workload\":\"%s\",\"metric\":\"error\","
	       "\"value\":null,\"unit\":\"%s\",\"n\":0}\n",
	       workload, esc);
	fflush(stdout);
	fprintf(stderr, "weft-bench: %s: %s\n", workload, why);
	return 1;
}

struct main_task {
	unsigned workers;
	weft_fn fn;
	void *arg;
};

/* The runtime's main task: check the worker count, then the workload's
 * driver itself, inline (no extra spawn). */
static int main_task(void *arg)
{
	struct main_task *m = arg;
	unsigned have = weft_runtime_workers(NULL);

	if (have != m->workers) {
		fprintf(stderr, "weft-bench: runtime has %u workers, not %u\n",
			have, m->workers);
		return -EINVAL;
	}
	return m->fn(m->arg);
}

int bench_weft_run(const struct bench_opts *o, weft_fn fn, void *arg)
{
	weft_config cfg = { .workers = o->workers };
	struct main_task m = { .workers = o->workers, .fn = fn, .arg = arg };

	return weft_run(main_task, &m, &cfg);
}

long bench_rss_now_kib(void)
{
	long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f)
		return 0;
	if (fscanf(f, "%ld %ld", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

long bench_rss_peak_kib(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return ru.ru_maxrss;
}

/* ---- options --------------------------------------------------------------- */

struct options {
	bool quick;
	bool json_only;
	bool list;
	unsigned runs;
	unsigned workers;
	unsigned timeout_s;
	long long n; /* --n: size override, 0 = the spec's */
	const char *only;
	const char *out;
	const char *peers;
	const char *child; /* --child WORKLOAD: run one, print, exit */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: weft-bench [options]\n"
		"  --quick         make-bench mode: spec sizes, but sleepers 1 pass of N=100,000\n"
		"  --runs N        passes, interleaved (default 3)\n"
		"  --only PAT      workloads whose name matches PAT (extended regex or substring)\n"
		"  --workers N     weft_config.workers (default 2, as the spec says)\n"
		"  --json-only     print the JSON lines only, no table\n"
		"  --out FILE      append the JSON lines here (default perf/results.jsonl)\n"
		"  --peers FILE    a peers' results.jsonl (shared/peers/cpu/run.sh): show their medians\n"
		"  --timeout S     seconds per (workload, pass) process (default 120)\n"
		"  --n N           override the size argument (N, Y, R, n or M) of every selected workload\n"
		"  --list          list the workloads and their spec sections\n");
}

static long long parse_num(const char *opt, const char *s, long long min)
{
	char *end;
	long long v;

	if (!s)
		die("%s needs a value", opt);
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || end == s || v < min)
		die("%s: bad value '%s'", opt, s);
	return v;
}

static void parse_options(int argc, char **argv, struct options *o)
{
	int i;

	*o = (struct options){ .runs = 3, .workers = 2, .timeout_s = 120 };
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--quick")) {
			o->quick = true;
		} else if (!strcmp(a, "--json-only")) {
			o->json_only = true;
		} else if (!strcmp(a, "--list")) {
			o->list = true;
		} else if (!strcmp(a, "--runs")) {
			o->runs = (unsigned)parse_num(a, v, 1);
			i++;
		} else if (!strcmp(a, "--workers")) {
			o->workers = (unsigned)parse_num(a, v, 1);
			i++;
		} else if (!strcmp(a, "--timeout")) {
			o->timeout_s = (unsigned)parse_num(a, v, 1);
			i++;
		} else if (!strcmp(a, "--n")) {
			o->n = parse_num(a, v, 1);
			i++;
		} else if (!strcmp(a, "--only") && v) {
			o->only = v;
			i++;
		} else if (!strcmp(a, "--out") && v) {
			o->out = v;
			i++;
		} else if (!strcmp(a, "--peers") && v) {
			o->peers = v;
			i++;
		} else if (!strcmp(a, "--child") && v) {
			o->child = v;
			i++;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		} else {
			usage(stderr);
			die("unknown or incomplete option '%s'", a);
		}
	}
}

static const struct bench_workload *find_workload(const char *name)
{
	size_t i;

	for (i = 0; i < NR_WORKLOADS; i++)
		if (!strcmp(workloads[i]->name, name))
			return workloads[i];
	return NULL;
}

static long long workload_size(const struct options *o,
			       const struct bench_workload *w)
{
	if (o->n)
		return o->n;
	return o->quick ? w->size_quick : w->size_full;
}

/* ---- child: one (workload, pass) ------------------------------------------ */

static int child_main(const struct options *o)
{
	const struct bench_workload *w = find_workload(o->child);
	struct bench_opts bo = { .workers = o->workers, .quick = o->quick };

	if (!w)
		die("--child: unknown workload '%s'", o->child);
	if (w->unavailable)
		return bench_fail(w->name, "%s", w->unavailable);
	return w->run(&bo, workload_size(o, w)) ? 1 : 0;
}

/* ---- a tiny reader for flat JSON objects (ours and the peers') ------------ */

struct record {
	char peer[32];
	char workload[32];
	char metric[48];
	char unit[160];
	double value;
	bool has_value; /* false for null */
	long long n;
	unsigned run;
};

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

/* Reads a JSON string at @p (at its opening quote) into @out; returns the
 * position after the closing quote, or NULL. Escapes are kept simple:
 * \" and \\ and \/ decode, others keep their letter. */
static const char *read_string(const char *p, char *out, size_t cap)
{
	size_t at = 0;

	if (*p++ != '"')
		return NULL;
	while (*p && *p != '"') {
		char ch = *p++;

		if (ch == '\\' && *p)
			ch = *p++;
		if (at + 1 < cap)
			out[at++] = ch;
	}
	if (cap)
		out[at] = '\0';
	return *p == '"' ? p + 1 : NULL;
}

/* Parses one line; fields other than the record's are skipped. */
static bool parse_record(const char *line, struct record *r)
{
	const char *p = skip_ws(line);
	char key[32], sval[160];

	memset(r, 0, sizeof(*r));
	if (*p++ != '{')
		return false;
	for (;;) {
		p = skip_ws(p);
		if (*p == '}')
			break;
		p = read_string(p, key, sizeof(key));
		if (!p)
			return false;
		p = skip_ws(p);
		if (*p++ != ':')
			return false;
		p = skip_ws(p);
		if (*p == '"') {
			p = read_string(p, sval, sizeof(sval));
			if (!p)
				return false;
			if (!strcmp(key, "peer"))
				copy_str(r->peer, sizeof(r->peer), sval);
			else if (!strcmp(key, "workload"))
				copy_str(r->workload, sizeof(r->workload),
					 sval);
			else if (!strcmp(key, "metric"))
				copy_str(r->metric, sizeof(r->metric), sval);
			else if (!strcmp(key, "unit"))
				copy_str(r->unit, sizeof(r->unit), sval);
		} else if (!strncmp(p, "null", 4)) {
			p += 4;
		} else if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
			p += *p == 't' ? 4 : 5;
		} else {
			char *end;
			double v = strtod(p, &end);

			if (end == p)
				return false;
			p = end;
			if (!strcmp(key, "value")) {
				r->value = v;
				r->has_value = true;
			} else if (!strcmp(key, "n")) {
				r->n = (long long)v;
			} else if (!strcmp(key, "run")) {
				r->run = (unsigned)v;
			}
		}
		p = skip_ws(p);
		if (*p == ',')
			p++;
		else if (*p != '}')
			return false;
	}
	return r->workload[0] && r->metric[0];
}

/* ---- results ------------------------------------------------------------- */

struct results {
	struct record *v;
	size_t len, cap;
};

static void results_add(struct results *rs, const struct record *r)
{
	if (rs->len == rs->cap) {
		rs->cap = rs->cap ? 2 * rs->cap : 64;
		rs->v = xrealloc(rs->v, rs->cap * sizeof(*rs->v));
	}
	rs->v[rs->len++] = *r;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* statistics.median: the mean of the two middle values when even. */
static double median_of(double *v, size_t len)
{
	qsort(v, len, sizeof(*v), cmp_double);
	return len % 2 ? v[len / 2] : (v[len / 2 - 1] + v[len / 2]) / 2;
}

/* ---- the driver's side of a child ---------------------------------------- */

struct suite {
	const struct options *o;
	const char *exe_argv0;
	FILE *out; /* --out / perf/results.jsonl, or NULL */
	struct results results; /* this session's lines, errors included */
	unsigned failures; /* (workload, pass)es that failed */
};

static void emit_line(struct suite *s, const char *line)
{
	printf("%s\n", line);
	fflush(stdout);
	if (s->out) {
		fprintf(s->out, "%s\n", line);
		fflush(s->out);
	}
}

static void emit_error(struct suite *s, const char *workload, unsigned run,
		       double proc_s, const char *why)
{
	char esc[256], line[512];
	struct record r = { .run = run };

	json_escape(esc, sizeof(esc), why);
	snprintf(line, sizeof(line),
		 "{\"peer\":\"weft\",\"workload\":\"%s\",\"metric\":\"error\","
		 "\"value\":null,\"unit\":\"%s\",\"n\":0,\"run\":%u,"
		 "\"proc_s\":%.2f}",
		 workload, esc, run, proc_s);
	emit_line(s, line);
	copy_str(r.peer, sizeof(r.peer), "weft");
	copy_str(r.workload, sizeof(r.workload), workload);
	copy_str(r.metric, sizeof(r.metric), "error");
	copy_str(r.unit, sizeof(r.unit), why);
	results_add(&s->results, &r);
}

struct child_out {
	char *buf; /* everything read so far */
	size_t len, cap;
};

static void child_out_append(struct child_out *c, const char *p, size_t n)
{
	if (c->len + n + 1 > c->cap) {
		c->cap = (c->len + n + 1) * 2;
		c->buf = xrealloc(c->buf, c->cap);
	}
	memcpy(c->buf + c->len, p, n);
	c->len += n;
	c->buf[c->len] = '\0';
}

/* Fork and exec `exe --child NAME ...`; its stdout into *@fd. */
static pid_t start_child(const struct suite *s, const struct bench_workload *w,
			 int *fd)
{
	const struct options *o = s->o;
	char workers[16], n[32];
	const char *argv[12];
	int p[2], argc = 0;
	pid_t pid;

	snprintf(workers, sizeof(workers), "%u", o->workers);
	snprintf(n, sizeof(n), "%lld", o->n);
	argv[argc++] = s->exe_argv0;
	argv[argc++] = "--child";
	argv[argc++] = w->name;
	argv[argc++] = "--workers";
	argv[argc++] = workers;
	if (o->quick)
		argv[argc++] = "--quick";
	if (o->n) {
		argv[argc++] = "--n";
		argv[argc++] = n;
	}
	argv[argc] = NULL;

	if (pipe2(p, O_CLOEXEC) != 0)
		die("pipe2: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		/* the child dies with us: no orphan keeps a core busy */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (dup2(p[1], STDOUT_FILENO) < 0)
			_exit(127);
		execv("/proc/self/exe", (char *const *)argv);
		fprintf(stderr, "weft-bench: exec /proc/self/exe: %s\n",
			strerror(errno));
		_exit(127);
	}
	close(p[1]);
	*fd = p[0];
	return pid;
}

/*
 * Run one (workload, pass) in a child; print and record its lines with
 * "run" and "proc_s" added, or an error line.
 */
static void run_child(struct suite *s, const struct bench_workload *w,
		      unsigned run)
{
	struct child_out out = { 0 };
	double t0 = mono_s(), deadline = t0 + s->o->timeout_s, proc_s;
	bool timed_out = false, saw_error = false, saw_result = false;
	struct rusage ru = { 0 };
	char why[64];
	int fd, status = 0;
	char *line, *next;
	double cpu_s;
	pid_t pid;

	pid = start_child(s, w, &fd);
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		double left = deadline - mono_s();
		char chunk[4096];
		ssize_t got;

		if (left <= 0) {
			timed_out = true;
			break;
		}
		if (poll(&pfd, 1, (int)(left * 1000) + 1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll: %s", strerror(errno));
		}
		if (!pfd.revents)
			continue;
		got = read(fd, chunk, sizeof(chunk));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break; /* EOF: the child is exiting */
		child_out_append(&out, chunk, (size_t)got);
	}
	close(fd);
	while (!timed_out) {
		pid_t r = wait4(pid, &status, WNOHANG, &ru);

		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			die("wait4: %s", strerror(errno));
		if (mono_s() >= deadline)
			timed_out = true;
		else
			usleep(2000);
	}
	if (timed_out) {
		kill(pid, SIGKILL);
		while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
			;
	}
	proc_s = mono_s() - t0;
	cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		(double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;

	for (line = out.buf; line && *line; line = next) {
		struct record r;
		char full[1024];
		size_t len;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		else
			next = line + strlen(line);
		len = strlen(line);
		if (!len)
			continue;
		if (line[0] != '{' || line[len - 1] != '}' ||
		    !parse_record(line, &r)) {
			fprintf(stderr, "weft-bench: %s: %s\n", w->name, line);
			continue;
		}
		r.run = run;
		snprintf(full, sizeof(full), "%.*s,\"run\":%u,\"proc_s\":%.2f}",
			 (int)len - 1, line, run, proc_s);
		emit_line(s, full);
		results_add(&s->results, &r);
		if (!strcmp(r.metric, "error"))
			saw_error = true;
		else
			saw_result = true;
	}
	free(out.buf);

	why[0] = '\0';
	if (timed_out)
		snprintf(why, sizeof(why), "timeout_%us", s->o->timeout_s);
	else if (saw_error)
		; /* the child said why */
	else if (WIFSIGNALED(status))
		snprintf(why, sizeof(why), "signal_%d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else if (WEXITSTATUS(status) != 0)
		snprintf(why, sizeof(why), "exit_%d", WEXITSTATUS(status));
	else if (!saw_result)
		snprintf(why, sizeof(why), "no output");
	if (why[0])
		emit_error(s, w->name, run, proc_s, why);
	if (why[0] || saw_error)
		s->failures++;
	if (!s->o->json_only) {
		const char *tag = "";

		if (timed_out)
			tag = "  TIMEOUT";
		else if (why[0] || saw_error)
			tag = "  ERROR";
		/* CPU time well below workers x wall: the machine is busy */
		fprintf(stderr,
			"[weft-bench] pass %u: %-16s %6.2f s wall, %6.2f s cpu%s\n",
			run, w->name, proc_s, cpu_s, tag);
	}
}

/* ---- peers' results -------------------------------------------------------- */

struct peer_median {
	char peer[32], workload[32], metric[48];
	double median;
	long long n;
};

struct peers {
	struct peer_median *v;
	size_t len;
};

static int peer_rank(const char *peer)
{
	size_t i;

	for (i = 0; i < sizeof(peer_order) / sizeof(peer_order[0]); i++)
		if (!strcmp(peer_order[i], peer))
			return (int)i;
	return (int)(sizeof(peer_order) / sizeof(peer_order[0]));
}

/* Medians per (peer, workload, metric) of a peers' results.jsonl; error
 * lines and weft's own lines are left out. */
static void load_peers(const char *path, struct peers *out)
{
	struct results all = { 0 };
	FILE *f = fopen(path, "r");
	char line[2048];
	bool *used;
	size_t i, j;

	if (!f)
		die("--peers %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		struct record r;

		if (!parse_record(line, &r) || !r.has_value ||
		    !strcmp(r.metric, "error") || !strcmp(r.peer, "weft"))
			continue;
		results_add(&all, &r);
	}
	fclose(f);
	used = calloc(all.len + 1, sizeof(*used));
	if (!used)
		die("out of memory");
	out->v = xrealloc(NULL, (all.len + 1) * sizeof(*out->v));
	out->len = 0;
	for (i = 0; i < all.len; i++) {
		struct record *a = &all.v[i];
		struct peer_median *m;
		double *vals;
		size_t nv = 0;

		if (used[i])
			continue;
		vals = xrealloc(NULL, all.len * sizeof(*vals));
		for (j = i; j < all.len; j++) {
			struct record *b = &all.v[j];

			if (!used[j] && !strcmp(a->peer, b->peer) &&
			    !strcmp(a->workload, b->workload) &&
			    !strcmp(a->metric, b->metric)) {
				used[j] = true;
				vals[nv++] = b->value;
			}
		}
		m = &out->v[out->len++];
		copy_str(m->peer, sizeof(m->peer), a->peer);
		copy_str(m->workload, sizeof(m->workload), a->workload);
		copy_str(m->metric, sizeof(m->metric), a->metric);
		m->median = median_of(vals, nv);
		m->n = a->n;
		free(vals);
	}
	free(used);
	free(all.v);
	if (!out->len)
		fprintf(stderr, "weft-bench: --peers %s: no results in it\n",
			path);
}

/* The peers report the raw switch floor (boost-context) as workload
 * "yield"; weft's switch.c reports it as "switch". */
static bool peer_matches(const struct peer_median *m, const char *workload,
			 const char *metric)
{
	if (strcmp(m->metric, metric))
		return false;
	if (!strcmp(m->workload, workload))
		return true;
	return !strcmp(workload, "switch") && !strcmp(m->workload, "yield");
}

/* ---- the table ------------------------------------------------------------ */

/* Three significant figures or so; M and G for big rates. */
static void fmt_value(char *buf, size_t cap, double v)
{
	double a = v < 0 ? -v : v;

	if (a >= 1e9)
		snprintf(buf, cap, "%.2fG", v / 1e9);
	else if (a >= 1e6)
		snprintf(buf, cap, "%.1fM", v / 1e6);
	else if (a >= 1e5)
		snprintf(buf, cap, "%.2fM", v / 1e6);
	else if (a >= 100)
		snprintf(buf, cap, "%.0f", v);
	else if (a >= 10)
		snprintf(buf, cap, "%.1f", v);
	else
		snprintf(buf, cap, "%.2f", v);
}

static const struct reference *find_reference(const char *workload,
					      const char *metric)
{
	size_t i;

	for (i = 0; i < sizeof(references) / sizeof(references[0]); i++)
		if (!strcmp(references[i].workload, workload) &&
		    !strcmp(references[i].metric, metric))
			return &references[i];
	return NULL;
}

static void peers_cell(char *buf, size_t cap, const struct peers *peers,
		       const char *workload, const char *metric, long long n)
{
	size_t at = 0, i;
	int rank, last = -1;

	buf[0] = '\0';
	/* by rank, then in file order within a rank */
	for (rank = 0; rank <= peer_rank(""); rank++) {
		for (i = 0; i < peers->len; i++) {
			const struct peer_median *m = &peers->v[i];
			char v[32];

			if (peer_rank(m->peer) != rank ||
			    !peer_matches(m, workload, metric))
				continue;
			fmt_value(v, sizeof(v), m->median);
			at += (size_t)snprintf(buf + at,
					       at < cap ? cap - at : 0,
					       "%s%s %s", last >= 0 ? ", " : "",
					       m->peer, v);
			if (m->n != n && at < cap)
				at += (size_t)snprintf(buf + at, cap - at,
						       " (n=%lld)", m->n);
			last = rank;
			if (at >= cap)
				return;
		}
	}
}

static void print_table(struct suite *s, const struct peers *peers)
{
	struct results *rs = &s->results;
	bool *done = calloc(rs->len + 1, sizeof(*done));
	double *vals = xrealloc(NULL, (rs->len + 1) * sizeof(*vals));
	size_t i, j, errors = 0;

	if (!done)
		die("out of memory");
	printf("\nweft-bench: %u workers, %u pass%s%s; medians of the passes, "
	       "spread = (max - min) / median\n",
	       s->o->workers, s->o->runs, s->o->runs == 1 ? "" : "es",
	       s->o->quick ? ", --quick" : "");
	printf("%-15s %-20s %-7s %9s %9s %9s %6s %4s %9s %-12s %s\n",
	       "workload", "metric", "unit", "median", "min", "max", "spread",
	       "runs", "n", "target", "spec peers (2-core table)");
	for (i = 0; i < rs->len; i++) {
		const struct record *a = &rs->v[i];
		const struct reference *ref;
		char med[32], lo[32], hi[32], target[48] = "", cell[512];
		double m, spread;
		size_t nv = 0;

		if (done[i] || !strcmp(a->metric, "error"))
			continue;
		for (j = i; j < rs->len; j++) {
			const struct record *b = &rs->v[j];

			if (!done[j] && !strcmp(a->workload, b->workload) &&
			    !strcmp(a->metric, b->metric)) {
				done[j] = true;
				vals[nv++] = b->value;
			}
		}
		m = median_of(vals, nv);
		spread = m != 0 ? (vals[nv - 1] - vals[0]) / m * 100 : 0;
		fmt_value(med, sizeof(med), m);
		fmt_value(lo, sizeof(lo), vals[0]);
		fmt_value(hi, sizeof(hi), vals[nv - 1]);
		ref = find_reference(a->workload, a->metric);
		if (ref && ref->target_op) {
			char t[32];
			const char *verdict = "";

			if (ref->target >= 1e6)
				fmt_value(t, sizeof(t), ref->target);
			else
				snprintf(t, sizeof(t), "%g", ref->target);
			if (ref->target_op == '<')
				verdict = m < ref->target ? " ok" : " MISS";
			else if (ref->target_op == '>')
				verdict = m > ref->target ? " ok" : " MISS";
			snprintf(target, sizeof(target), "%c%s%s",
				 ref->target_op, t, verdict);
		}
		printf("%-15s %-20s %-7s %9s %9s %9s %5.0f%% %4zu %9lld %-12s %s\n",
		       a->workload, a->metric, a->unit, med, lo, hi, spread, nv,
		       a->n, target, ref ? ref->spec_peers : "");
		if (peers && peers->len) {
			peers_cell(cell, sizeof(cell), peers, a->workload,
				   a->metric, a->n);
			printf("%-15s %-20s %-7s %s\n", "", "  peers (--peers)",
			       "", cell[0] ? cell : "-");
		}
	}
	for (i = 0; i < rs->len; i++) {
		const struct record *a = &rs->v[i];

		if (strcmp(a->metric, "error"))
			continue;
		if (!errors++)
			printf("\nerrors:\n");
		printf("  %-15s pass %u: %s\n", a->workload, a->run, a->unit);
	}
	free(vals);
	free(done);
}

/* ---- main ------------------------------------------------------------------ */

static bool selected(const struct options *o, const regex_t *re, bool have_re,
		     const struct bench_workload *w)
{
	if (!o->only)
		return true;
	if (have_re)
		return regexec(re, w->name, 0, NULL, 0) == 0;
	return strstr(w->name, o->only) != NULL;
}

/* perf/results.jsonl next to this source file when that folder exists
 * (CMake compiles with absolute paths; a hand build from the source root
 * gives "perf/main.c"), else ./results.jsonl. */
static char *default_out_path(void)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(__FILE__, '/');
	struct stat st;
	char *path;

	if (slash) {
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - __FILE__),
			 __FILE__);
		if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode) &&
		    access(dir, W_OK) == 0) {
			path = xrealloc(NULL, strlen(dir) + 16);
			sprintf(path, "%s/results.jsonl", dir);
			return path;
		}
	}
	return xstrdup("results.jsonl");
}

int main(int argc, char **argv)
{
	struct options o;
	struct suite s = { 0 };
	struct peers peers = { 0 };
	regex_t re;
	bool have_re = false;
	char *out_path;
	unsigned run;
	size_t i, nsel = 0;

	parse_options(argc, argv, &o);
	if (o.child)
		return child_main(&o);
	if (o.list) {
		for (i = 0; i < NR_WORKLOADS; i++)
			printf("%-16s size %lld (quick %lld%s)  %s%s%s\n",
			       workloads[i]->name, workloads[i]->size_full,
			       workloads[i]->size_quick,
			       workloads[i]->quick_runs ? ", 1 pass" : "",
			       workloads[i]->spec,
			       workloads[i]->unavailable ? "  -- " : "",
			       workloads[i]->unavailable ?
				       workloads[i]->unavailable :
				       "");
		return 0;
	}
	if (o.only)
		have_re = regcomp(&re, o.only, REG_EXTENDED | REG_NOSUB) == 0;
	for (i = 0; i < NR_WORKLOADS; i++)
		nsel += selected(&o, &re, have_re, workloads[i]);
	if (!nsel)
		die("--only '%s' selects no workload (see --list)", o.only);
	if (o.peers)
		load_peers(o.peers, &peers);

	s.o = &o;
	s.exe_argv0 = argv[0];
	out_path = o.out ? xstrdup(o.out) : default_out_path();
	s.out = fopen(out_path, "a");
	if (!s.out)
		fprintf(stderr, "weft-bench: %s: %s (results not saved)\n",
			out_path, strerror(errno));
	else if (!o.json_only)
		fprintf(stderr, "[weft-bench] appending to %s\n", out_path);

	for (run = 1; run <= o.runs; run++) {
		for (i = 0; i < NR_WORKLOADS; i++) {
			const struct bench_workload *w = workloads[i];

			if (!selected(&o, &re, have_re, w))
				continue;
			if (w->unavailable) {
				if (run == 1)
					emit_error(&s, w->name, run, 0,
						   w->unavailable);
				continue;
			}
			if (o.quick && w->quick_runs && run > w->quick_runs)
				continue;
			run_child(&s, w, run);
		}
	}
	if (!o.json_only)
		print_table(&s, &peers);
	if (s.out)
		fclose(s.out);
	if (have_re)
		regfree(&re);
	free(out_path);
	free(peers.v);
	free(s.results.v);
	/* a skipped (unavailable) workload is not a failure */
	return s.failures ? 1 : 0;
}
