/* SPDX-License-Identifier: MIT */
/*
 * examples/http_hello.c - HTTP/1.1 "Hello, World!", one task per connection.
 * WEFT_EXAMPLE_NO_CTEST (a server: tests/io_examples_test.cc drives it)
 *
 *   http_hello [-p PORT] [-w WORKERS] [-P PROCESSES] [-H HOST]
 *
 * Listens on HOST:PORT (default 127.0.0.1:8080; -p 0 picks a free port),
 * prints "listening on HOST:PORT pid PID" and answers GET / with 200 and
 * "Hello, World!\n" (text/plain, Content-Length: 14), any other path with
 * 404. Enough HTTP/1.1 for wrk and curl: request line, headers, bodies by
 * Content-Length (skipped), keep-alive (HTTP/1.0 closes unless it asks for
 * keep-alive; "Connection: close" closes), and pipelining: every complete
 * request in a read is answered, and the answers go out in one send.
 * Limits: 8 KiB of request head (else 431 and close), bodies up to
 * 1 MiB (else 413 and close); chunked request bodies get 501 and close.
 * With -P N > 1, N processes share the port through SO_REUSEPORT
 * (WEFT_LISTEN_REUSEPORT), so the kernel spreads connections over them;
 * the same works across hosts behind any load balancer.
 *
 * Shutdown on SIGINT or SIGTERM (weft_signal_wait; both are blocked before
 * the runtime starts, so its threads inherit the mask): stop accepting,
 * cancel every connection task, wait until they have closed their sockets,
 * print "pid PID served N connections" and exit 0. The first process
 * passes the signal on to the others and waits for them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "weft.h"
#include "http_parse.h"

struct conn {
	int fd;
	weft_task *self; /* weft_self() of its task, set by the task:
				 * borrowed, for weft_cancel only (the
				 * spawn handle dies with weft_detach) */
	struct conn *prev, *next;
};

/* The live connections. A pthread mutex is fine here: it is never held
 * across a suspension point. */
static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn conns = { -1, NULL, &conns, &conns };
static bool stopping;
static weft_event drained; /* set when stopping and conns is empty */
static unsigned long served;

static int listen_fd = -1;

static int serve(void *arg)
{
	struct conn *c = arg;
	char *in = malloc(HEAD_MAX + BODY_MAX), out[16384];
	size_t have = 0, outlen = 0;
	int one = 1, done = 0;

	pthread_mutex_lock(&conns_lock);
	c->self = weft_self();
	if (stopping) /* shutdown began before we could be found */
		weft_cancel(c->self);
	pthread_mutex_unlock(&conns_lock);
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Closed only with weft_close below: multishot recv allowed. */
	weft_fd_set_flags(c->fd, WEFT_FD_MULTISHOT);
	while (in && !done) {
		ssize_t n = weft_recv(c->fd, in + have,
				      HEAD_MAX + BODY_MAX - have, 0);
		if (n <= 0)
			break;
		have += (size_t)n;
		size_t off = 0;
		for (;;) {
			const char *resp;
			int cl;
			long used = parse(in + off, have - off, &resp, &cl);
			if (used == 0)
				break;
			size_t rl = strlen(resp);
			if (outlen + rl > sizeof(out)) {
				if (weft_send_all(c->fd, out, outlen) < 0)
					goto out;
				outlen = 0;
			}
			memcpy(out + outlen, resp, rl);
			outlen += rl;
			if (used < 0 || cl == CLOSE) {
				done = 1;
				break;
			}
			off += (size_t)used;
		}
		memmove(in, in + off, have - off);
		have -= off;
		if (outlen && weft_send_all(c->fd, out, outlen) < 0)
			break;
		outlen = 0;
	}
out:
	free(in);
	weft_close(c->fd);
	pthread_mutex_lock(&conns_lock);
	c->prev->next = c->next;
	c->next->prev = c->prev;
	if (stopping && conns.next == &conns)
		weft_event_set(&drained);
	pthread_mutex_unlock(&conns_lock);
	free(c);
	return 0;
}

static int acceptor(void *arg)
{
	(void)arg;
	/* One multishot accept stays armed (a hint: the plain path where it
	 * cannot be); the listener is closed with weft_close(), as the flag
	 * asks. */
	weft_fd_set_flags(listen_fd, WEFT_FD_MULTISHOT);
	for (;;) {
		int fd = weft_accept(listen_fd, NULL, NULL);
		if (fd == -ECANCELED)
			return 0;
		if (fd < 0) {
			/* EMFILE and friends: shed load briefly, keep going */
			if (weft_sleep(WEFT_MSEC(10)) == -ECANCELED)
				return 0;
			continue;
		}
		struct conn *c = calloc(1, sizeof(*c));
		if (!c) {
			weft_close(fd);
			continue;
		}
		c->fd = fd;
		/* Spawn and detach under the lock: the task records its
		 * weft_self() under it too, so after weft_detach() (which
		 * retires the spawn handle's generation): a self handle
		 * taken before the detach would not cancel. */
		pthread_mutex_lock(&conns_lock);
		weft_task *t = weft_spawn_named("http-conn", serve, c);
		if (t) {
			c->next = &conns;
			c->prev = conns.prev;
			conns.prev->next = c;
			conns.prev = c;
			served++;
			weft_detach(t);
		}
		pthread_mutex_unlock(&conns_lock);
		if (!t) {
			weft_close(fd);
			free(c);
		}
	}
}

static int server_main(void *arg)
{
	const sigset_t *sigs = arg;
	weft_task *acc = weft_spawn_named("acceptor", acceptor, NULL);
	int sig;

	if (!acc)
		return -errno;
	do
		sig = weft_signal_wait(sigs);
	while (sig < 0 && sig != -ECANCELED);
	weft_cancel(acc);
	weft_join(acc);
	pthread_mutex_lock(&conns_lock);
	stopping = true;
	bool empty = conns.next == &conns;
	for (struct conn *c = conns.next; c != &conns; c = c->next)
		if (c->self)
			weft_cancel(c->self);
	pthread_mutex_unlock(&conns_lock);
	if (!empty)
		weft_event_wait(&drained);
	weft_close(listen_fd);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: http_hello [-p PORT] [-w WORKERS] "
			"[-P PROCESSES] [-H HOST]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	weft_config cfg = { 0 };
	const char *host = "127.0.0.1";
	long port = 8080, procs = 1;
	sigset_t sigs;
	pid_t kids[64];
	int opt, nkids = 0, st;

	while ((opt = getopt(argc, argv, "p:w:P:H:")) != -1) {
		switch (opt) {
		case 'p':
			port = strtol(optarg, NULL, 10);
			break;
		case 'w':
			cfg.workers = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'P':
			procs = strtol(optarg, NULL, 10);
			break;
		case 'H':
			host = optarg;
			break;
		default:
			usage();
		}
	}
	if (port < 0 || port > 65535 || procs < 1 || procs > 64)
		usage();
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	listen_fd = weft_listen_tcp_ex(host, (uint16_t)port, 4096,
				       procs > 1 ? WEFT_LISTEN_REUSEPORT : 0);
	if (listen_fd < 0) {
		fprintf(stderr, "http_hello: listen on %s:%ld: %s\n", host,
			port, strerror(-listen_fd));
		return 1;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(listen_fd, (struct sockaddr *)&ss, &sl);
	port = ntohs(ss.ss_family == AF_INET6 ?
			     ((struct sockaddr_in6 *)&ss)->sin6_port :
			     ((struct sockaddr_in *)&ss)->sin_port);
	/* Before any runtime exists: fork is safe. Each child opens its own
	 * listener on the same port. */
	for (long i = 1; i < procs; i++) {
		pid_t p = fork();
		if (p < 0)
			break;
		if (p == 0) {
			close(listen_fd);
			listen_fd = weft_listen_tcp_ex(host, (uint16_t)port,
						       4096,
						       WEFT_LISTEN_REUSEPORT);
			if (listen_fd < 0)
				_exit(1);
			nkids = 0;
			procs = 0;
			break;
		}
		kids[nkids++] = p;
	}
	printf("listening on %s:%ld pid %d\n", host, port, (int)getpid());
	fflush(stdout);
	int status = weft_run(server_main, &sigs, &cfg);
	for (int i = 0; i < nkids; i++)
		kill(kids[i], SIGTERM);
	for (int i = 0; i < nkids; i++)
		if (waitpid(kids[i], &st, 0) == kids[i] &&
		    !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			status = 1;
	printf("pid %d served %lu connections\n", (int)getpid(), served);
	fflush(stdout);
	if (status) {
		fprintf(stderr, "http_hello: %s\n", strerror(-status));
		return 1;
	}
	return 0;
}
