/* SPDX-License-Identifier: MIT */
/*
 * examples/serve.h - the server around examples/echo_server.c and
 * examples/http_hello.c: command line, listening socket, processes, the
 * accept loop and graceful shutdown. An example brings only what it does
 * with one connection (struct server); serve_main() does the rest. In a
 * header because every .c in examples/ is a program of its own.
 *
 *   NAME [-p PORT] [-w WORKERS] [-P PROCESSES] [-H HOST] [-t SECONDS]
 *
 * Listens on HOST:PORT (default 127.0.0.1 and the example's port; -p 0
 * picks a free port) and prints "listening on HOST:PORT pid PID". One task
 * accepts; every connection gets a task of its own, which calls the
 * example's handler. With -P N > 1, N processes share the port through
 * SO_REUSEPORT (WEFT_LISTEN_REUSEPORT), so the kernel spreads connections
 * over them; the same works across hosts behind any load balancer.
 *
 * -t SECONDS (default 60, fractions allowed; 0: never) is the handlers'
 * timeout (serve_timeout_ns): a connection that keeps the server waiting
 * that long is closed (echo: nothing received or sent for that long; http:
 * a request head not complete that long after its first byte, or no new
 * request for that long). A client that holds a connection open and
 * dribbles bytes (slowloris) thus costs one task for a bounded time.
 *
 * Shutdown on SIGINT or SIGTERM (weft_signal_wait; both are blocked before
 * the runtime starts, so its threads inherit the mask):
 *  1. stop accepting: cancel the acceptor task and join it;
 *  2. cancel every connection task (its weft_recv/weft_send_all return
 *     -ECANCELED, the handler returns and the socket is closed);
 *  3. wait until the last one has closed its socket (the event drained);
 *  4. print "pid PID served N connections" and exit 0. The first process
 *     passes the signal on to the others and waits for them.
 */
#ifndef WEFT_EXAMPLES_SERVE_H
#define WEFT_EXAMPLES_SERVE_H

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

/* What an example server is. */
struct server {
	const char *name; /* the program: for error messages */
	const char *usage; /* the usage line, printed on a bad argument */
	const char *conn_task; /* weft_spawn_named() name of a connection */
	long port; /* the port when there is no -p */
	/* Serves one connection on @fd until the peer closes, an error, or
	 * cancellation at shutdown. Runs in the connection's own task,
	 * inside @limit, a cancel scope serve.h opened with no deadline: the
	 * handler moves its deadline (serve_deadline()) to bound how long
	 * the peer may keep it waiting (-t); past it, its calls return
	 * -ETIMEDOUT. It must not close @fd: serve.h closes it with
	 * weft_close() after. */
	void (*handle)(int fd, weft_scope *limit);
};

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
static const struct server *server; /* set once by serve_main() */
/* -t: how long a handler waits on its peer; WEFT_FOREVER for -t 0. */
static uint64_t serve_timeout_ns = WEFT_SEC(60);

/* A deadline serve_timeout_ns after @from (WEFT_FOREVER when there is no
 * timeout), for weft_scope_set_deadline() in a handler. */
static inline uint64_t serve_deadline(uint64_t from)
{
	return serve_timeout_ns == WEFT_FOREVER ? WEFT_FOREVER :
						  from + serve_timeout_ns;
}

/* The task of one connection: around the example's handler. */
static int conn_main(void *arg)
{
	struct conn *c = arg;
	int one = 1;

	pthread_mutex_lock(&conns_lock);
	c->self = weft_self();
	if (stopping) /* shutdown began before we could be found */
		weft_cancel(c->self);
	pthread_mutex_unlock(&conns_lock);
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Closed only with weft_close below: weft_recv may then use a
	 * multishot recv (no submission per wait on io_uring). */
	weft_fd_set_flags(c->fd, WEFT_FD_MULTISHOT);
	weft_scope limit;
	weft_scope_enter(&limit, WEFT_FOREVER);
	server->handle(c->fd, &limit);
	weft_scope_exit(&limit);
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
		weft_task *t =
			weft_spawn_named(server->conn_task, conn_main, c);
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

/* The root task: accept until a signal, then shut down (steps 1-3). */
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
	fputs(server->usage, stderr);
	exit(2);
}

/* The whole program: call it from main() and return what it returns. */
static int serve_main(int argc, char **argv, const struct server *srv)
{
	weft_config cfg = { 0 };
	const char *host = "127.0.0.1";
	long port = srv->port, procs = 1;
	sigset_t sigs;
	pid_t kids[64];
	int opt, nkids = 0, st;

	server = srv;
	while ((opt = getopt(argc, argv, "p:w:P:H:t:")) != -1) {
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
		case 't': {
			char *end;
			double t = strtod(optarg, &end);
			if (*end || !(t >= 0 && t <= 1e6))
				usage();
			serve_timeout_ns = t == 0 ? WEFT_FOREVER :
						    (uint64_t)(t * 1e9);
			break;
		}
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
		fprintf(stderr, "%s: listen on %s:%ld: %s\n", srv->name, host,
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
	int kids_failed = 0;
	for (int i = 0; i < nkids; i++)
		if (waitpid(kids[i], &st, 0) == kids[i] &&
		    !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			kids_failed++;
	printf("pid %d served %lu connections\n", (int)getpid(), served);
	fflush(stdout);
	if (status)
		fprintf(stderr, "%s: %s\n", srv->name, strerror(-status));
	if (kids_failed)
		fprintf(stderr, "%s: %d of %d other processes failed\n",
			srv->name, kids_failed, nkids);
	return status || kids_failed ? 1 : 0;
}

#endif /* WEFT_EXAMPLES_SERVE_H */
