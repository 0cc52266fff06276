/* SPDX-License-Identifier: MIT */
/*
 * perf/loadgen.c - the load generator of shared/perf/io-spec.md, section 2,
 * followed to the letter for echo; the same loop drives HTTP (section 3
 * uses wrk, which is not always installed: the figures then come from this
 * loop, one request in flight per connection, as wrk -t1 does without a
 * pipelining script).
 *
 *  1. C connections with blocking connect() (retried on refusal for 1 s),
 *     TCP_NODELAY, then non-blocking in one epoll set, edge-triggered
 *     (EPOLLIN|EPOLLOUT|EPOLLET), one thread.
 *  2. Closed loop: one request in flight per connection; a request is
 *     complete when all of its answer is read; never more is read than is
 *     still owed.
 *  3. Echo content: byte i of request q on connection k is
 *     (uint8)(x >> ((i & 7) * 8)) ^ (uint8)(i >> 3), x = splitmix64((k <<
 *     32) | q). Every byte read is compared; a difference, or bytes beyond
 *     what was sent, is a mismatch: counted, and the connection is closed.
 *  4. After a response completes the next request is sent and control goes
 *     back to epoll_wait: at most one request per connection per event.
 *  5. t0 after all connections are open; warm-up W, then the window D. A
 *     request counts when its last byte is read inside the window; its
 *     latency runs from its first send() to that read (CLOCK_MONOTONIC).
 *     No new request starts after the window.
 *  6. rps = counted / D; percentiles from a log-linear histogram (64
 *     sub-buckets per power of two, the bucket's upper bound reported);
 *     mean and max exact; errors = connect failures + I/O errors and EOFs +
 *     mismatches; the server's CPU (utime+stime of /proc/PID/stat) is read
 *     at the start and the end of the window.
 */
#define _GNU_SOURCE
#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t s)
{
	uint64_t z = s + UINT64_C(0x9E3779B97F4A7C15);

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* ---- histogram: 64 sub-buckets per power of two --------------------------- */

#define HBUCKETS (64 * 64)

static unsigned hidx(uint64_t v)
{
	if (v < 64)
		return (unsigned)v;
	unsigned e = 63 - (unsigned)__builtin_clzll(v); /* >= 6 */
	return (e - 5) * 64 + (unsigned)((v >> (e - 6)) & 63);
}

static uint64_t hupper(unsigned i)
{
	if (i < 64)
		return i;
	unsigned e = i / 64 + 5, sub = i % 64;
	return (((uint64_t)64 + sub + 1) << (e - 6)) - 1;
}

static double pct(const uint64_t *h, uint64_t n, double p)
{
	uint64_t want = (uint64_t)((double)n * p + 0.5), acc = 0;

	if (want == 0)
		want = 1;
	for (unsigned i = 0; i < HBUCKETS; i++) {
		acc += h[i];
		if (acc >= want)
			return (double)hupper(i) / 1e3;
	}
	return 0;
}

/* ---- connections -------------------------------------------------------- */

struct conn {
	int fd;
	bool dead;
	uint64_t k, q;
	size_t sent, got; /* of the current request */
	uint64_t t_first; /* first send of the current request */
	bool active; /* a request is in flight */
};

struct lg {
	const struct loadgen_cfg *cfg;
	struct conn *c;
	unsigned char *buf; /* scratch */
	size_t len; /* bytes per request */
	size_t anslen; /* bytes per answer */
	uint64_t t_win0, t_win1;
	uint64_t *hist;
	uint64_t counted, sum_ns, max_ns;
	uint64_t errors, mismatches;
};

static unsigned char echo_byte(uint64_t x, size_t i)
{
	return (unsigned char)(x >> ((i & 7) * 8)) ^ (unsigned char)(i >> 3);
}

static void fill(struct lg *g, struct conn *c, unsigned char *out, size_t off,
		 size_t n)
{
	if (g->cfg->mode == LOADGEN_HTTP) {
		static const char rq[] =
			"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
		memcpy(out, rq + off, n);
		return;
	}
	uint64_t x = splitmix64((c->k << 32) | c->q);
	for (size_t i = 0; i < n; i++)
		out[i] = echo_byte(x, off + i);
}

static void kill_conn(struct lg *g, struct conn *c)
{
	(void)g;
	c->dead = true;
	close(c->fd);
}

/* Push the current request out as far as the socket takes it. */
static void do_send(struct lg *g, struct conn *c)
{
	while (c->sent < g->len) {
		size_t n = g->len - c->sent;
		if (n > 65536)
			n = 65536;
		fill(g, c, g->buf, c->sent, n);
		ssize_t r = send(c->fd, g->buf, n, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EAGAIN)
				return;
			g->errors++;
			kill_conn(g, c);
			return;
		}
		if (c->sent == 0)
			c->t_first = now_ns();
		c->sent += (size_t)r;
	}
}

static void start(struct lg *g, struct conn *c)
{
	c->sent = c->got = 0;
	c->active = true;
	do_send(g, c);
}

/* Read what is owed; true when the answer completed. */
static bool do_recv(struct lg *g, struct conn *c)
{
	unsigned char in[65536];

	while (c->active && !c->dead && c->got < g->anslen) {
		size_t want = g->anslen - c->got;
		if (want > sizeof(in))
			want = sizeof(in);
		ssize_t r = recv(c->fd, in, want, 0);
		if (r < 0) {
			if (errno == EAGAIN)
				return false;
			g->errors++;
			kill_conn(g, c);
			return false;
		}
		if (r == 0) {
			g->errors++;
			kill_conn(g, c);
			return false;
		}
		bool bad = c->got + (size_t)r > c->sent &&
			   g->cfg->mode == LOADGEN_ECHO;
		if (g->cfg->mode == LOADGEN_HTTP) {
			bad = memcmp(in, g->cfg->expect + c->got, (size_t)r) !=
			      0;
		} else if (!bad) {
			uint64_t x = splitmix64((c->k << 32) | c->q);
			for (ssize_t i = 0; i < r; i++)
				if (in[i] != echo_byte(x, c->got + (size_t)i)) {
					bad = true;
					break;
				}
		}
		if (bad) {
			g->mismatches++;
			g->errors++;
			kill_conn(g, c);
			return false;
		}
		c->got += (size_t)r;
	}
	return c->active && !c->dead && c->got == g->anslen;
}

static int dial(int port)
{
	struct sockaddr_in sa = { 0 };
	uint64_t until = now_ns() + 1000000000u;
	int one = 1;

	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (;;) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
				   sizeof(one));
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
			return fd;
		}
		int e = errno;
		close(fd);
		if (e != ECONNREFUSED || now_ns() > until)
			return -e;
		usleep(10000);
	}
}

static double proc_cpu_s(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f)) {
		char *p = strrchr(buf, ')');
		/* fields after ")": state(3) ... utime(14) stime(15) */
		if (p && sscanf(p + 2,
				"%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
				"%*u %lu %lu",
				&ut, &st) == 2) {
		}
	}
	fclose(f);
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

int loadgen_run(const struct loadgen_cfg *cfg, struct loadgen_result *res)
{
	struct lg g = { .cfg = cfg };
	struct epoll_event ev, evs[256];
	double cpu0 = self_cpu_s(), srv0 = 0;
	bool in_window = false;
	int ep, i, err = 0;

	memset(res, 0, sizeof(*res));
	g.len = cfg->mode == LOADGEN_HTTP ?
			strlen("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") :
			(size_t)cfg->size;
	g.anslen = cfg->mode == LOADGEN_HTTP ? strlen(cfg->expect) : g.len;
	g.c = calloc((size_t)cfg->conns, sizeof(*g.c));
	g.hist = calloc(HBUCKETS, sizeof(*g.hist));
	g.buf = malloc(65536);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (!g.c || !g.hist || !g.buf || ep < 0) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < cfg->conns; i++) {
		struct conn *c = &g.c[i];
		c->k = (uint64_t)i;
		c->fd = dial(cfg->port);
		if (c->fd < 0) {
			err = c->fd;
			for (int j = 0; j < i; j++)
				close(g.c[j].fd);
			goto out;
		}
		ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
		ev.data.u32 = (uint32_t)i;
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	uint64_t t0 = now_ns();
	g.t_win0 = t0 + (uint64_t)(cfg->warm_s * 1e9);
	g.t_win1 = g.t_win0 + (uint64_t)(cfg->dur_s * 1e9);
	for (i = 0; i < cfg->conns; i++)
		start(&g, &g.c[i]);
	for (;;) {
		uint64_t now = now_ns();
		if (!in_window && now >= g.t_win0) {
			in_window = true;
			srv0 = proc_cpu_s(cfg->server);
		}
		if (now >= g.t_win1)
			break;
		int n = epoll_wait(ep, evs, 256, 1);
		for (int e = 0; e < n; e++) {
			struct conn *c = &g.c[evs[e].data.u32];
			if (c->dead)
				continue;
			if ((evs[e].events & EPOLLOUT) && c->active &&
			    c->sent < g.len)
				do_send(&g, c);
			if (c->dead || !do_recv(&g, c))
				continue;
			uint64_t t = now_ns();
			c->active = false;
			if (t >= g.t_win0 && t < g.t_win1) {
				uint64_t lat = t - c->t_first;
				g.counted++;
				g.sum_ns += lat;
				if (lat > g.max_ns)
					g.max_ns = lat;
				unsigned h = hidx(lat);
				g.hist[h < HBUCKETS ? h : HBUCKETS - 1]++;
			}
			if (t < g.t_win1) {
				c->q++;
				start(&g, c);
			}
		}
	}
	res->server_cpu_s = proc_cpu_s(cfg->server) - srv0;
	for (i = 0; i < cfg->conns; i++)
		if (!g.c[i].dead)
			close(g.c[i].fd);
	res->requests = g.counted;
	res->rps = (double)g.counted / cfg->dur_s;
	res->p50_us = pct(g.hist, g.counted, 0.50);
	res->p99_us = pct(g.hist, g.counted, 0.99);
	res->p999_us = pct(g.hist, g.counted, 0.999);
	res->mean_us = g.counted ? (double)g.sum_ns / (double)g.counted / 1e3 :
				   0;
	res->max_us = (double)g.max_ns / 1e3;
	res->errors = g.errors;
	res->mismatches = g.mismatches;
	res->loadgen_cpu_s = self_cpu_s() - cpu0;
	res->server_us_per_req =
		g.counted ? res->server_cpu_s * 1e6 / (double)g.counted : 0;
out:
	if (ep >= 0)
		close(ep);
	free(g.c);
	free(g.hist);
	free(g.buf);
	return err;
}

pid_t loadgen_server_start(char *const argv[], int *port)
{
	int p[2];
	pid_t pid;
	char line[256];
	size_t n = 0;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(p[1], 1);
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	while (n < sizeof(line) - 1) {
		ssize_t r = read(p[0], line + n, 1);
		if (r <= 0 || line[n] == '\n')
			break;
		n++;
	}
	line[n] = 0;
	close(p[0]);
	char *colon = strrchr(line, ':');
	if (strncmp(line, "listening on", 12) != 0 || !colon) {
		loadgen_server_stop(pid);
		return -EIO;
	}
	*port = atoi(colon + 1);
	return pid;
}

void loadgen_server_stop(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

const char *loadgen_example_path(const char *name)
{
	static char path[PATH_MAX + 64];
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return NULL;
	self[n] = 0;
	char *slash = strrchr(self, '/');
	if (!slash)
		return NULL;
	*slash = 0;
	snprintf(path, sizeof(path), "%s/../examples/%s", self, name);
	return access(path, X_OK) == 0 ? path : NULL;
}
