/* SPDX-License-Identifier: MIT */
/*
 * examples/echo_server.c - a TCP echo server, one task per connection.
 * WEFT_EXAMPLE_NO_CTEST (a server: tests/io_examples_test.cc drives it)
 *
 *   echo_server [-p PORT] [-w WORKERS] [-P PROCESSES] [-H HOST] [-t SECONDS]
 *
 * Listens on HOST:PORT (default 127.0.0.1:7000; -p 0 picks a free port),
 * prints "listening on HOST:PORT pid PID" and echoes every byte back.
 * With -P N > 1, N processes share the port through SO_REUSEPORT.
 * -t SECONDS (default 60; 0: never): a connection on which nothing can be
 * received or sent for that long is closed.
 * SIGINT or SIGTERM shuts down gracefully: every connection is cancelled
 * and closed, "pid PID served N connections" printed, exit 0.
 *
 * This file is what the server does with one connection; examples/serve.h
 * (shared with http_hello.c) is the rest: the listener, the processes, the
 * accept loop that spawns a task per connection, and the shutdown.
 */
#define _GNU_SOURCE
#include "serve.h"

/* One connection, in its own task: echo until the peer closes. serve.h
 * set TCP_NODELAY and WEFT_FD_MULTISHOT on @fd, so a weft_recv that waits
 * costs no submission on io_uring. At shutdown weft_recv or weft_send_all
 * returns -ECANCELED and the loop ends; serve.h then closes the socket.
 * The idle timeout (serve.h's -t): @limit's deadline moves forward before
 * each call, so a call that waits past it returns -ETIMEDOUT and the loop
 * ends the same way. */
static void echo_conn(int fd, weft_scope *limit)
{
	char buf[16384];
	ssize_t n;

	for (;;) {
		weft_scope_set_deadline(limit, serve_deadline(weft_now()));
		n = weft_recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		weft_scope_set_deadline(limit, serve_deadline(weft_now()));
		if (weft_send_all(fd, buf, (size_t)n) < 0)
			break;
	}
}

int main(int argc, char **argv)
{
	static const struct server echo_server = {
		.name = "echo_server",
		.usage = "usage: echo_server [-p PORT] [-w WORKERS] "
			 "[-P PROCESSES] [-H HOST] [-t SECONDS]\n",
		.conn_task = "echo-conn",
		.port = 7000,
		.handle = echo_conn,
	};

	return serve_main(argc, argv, &echo_server);
}
