/* SPDX-License-Identifier: MIT */
/*
 * examples/http_hello.c - HTTP/1.1 "Hello, World!", one task per connection.
 * WEFT_EXAMPLE_NO_CTEST (a server: tests/io_examples_test.cc drives it)
 *
 *   http_hello [-p PORT] [-w WORKERS] [-P PROCESSES] [-H HOST] [-t SECONDS]
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
 * With -P N > 1, N processes share the port through SO_REUSEPORT.
 * -t SECONDS (default 60; 0: never): a request head must be complete
 * within it of its first byte, and a kept-alive connection is closed after
 * that long without a new request (slowloris clients cost bounded time).
 * SIGINT or SIGTERM shuts down gracefully: every connection is cancelled
 * and closed, "pid PID served N connections" printed, exit 0.
 *
 * This file is what the server does with one connection; examples/serve.h
 * (shared with echo_server.c) is the rest: the listener, the processes,
 * the accept loop that spawns a task per connection, and the shutdown.
 * The request parser is examples/http_parse.h.
 */
#define _GNU_SOURCE
#include "serve.h"
#include "http_parse.h"

/* One connection, in its own task: read requests, answer every complete
 * one, until the peer closes or a request asks to. At shutdown weft_recv
 * or weft_send_all returns -ECANCELED and the loop ends; serve.h then
 * closes the socket.
 * Timeouts (serve.h's -t) come from @limit, whose deadline moves:
 * while no request has begun, the timeout from now; once one has, the
 * timeout from its first byte, however slowly the rest trickles in. An
 * expired scope makes weft_recv/weft_send_all return -ETIMEDOUT: the loop
 * ends and the connection is closed. */
static void http_conn(int fd, weft_scope *limit)
{
	char *in = malloc(HEAD_MAX + BODY_MAX), out[16384];
	size_t have = 0, outlen = 0;
	uint64_t began = 0; /* first byte of the request in progress */
	int done = 0;

	while (in && !done) {
		weft_scope_set_deadline(
			limit, serve_deadline(have ? began : weft_now()));
		ssize_t n =
			weft_recv(fd, in + have, HEAD_MAX + BODY_MAX - have, 0);
		if (n <= 0)
			break;
		uint64_t now = weft_now();
		if (have == 0)
			began = now;
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
				if (weft_send_all(fd, out, outlen) < 0)
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
		if (off && have)
			began = now; /* the rest began in this read */
		weft_scope_set_deadline(limit, serve_deadline(now));
		if (outlen && weft_send_all(fd, out, outlen) < 0)
			break;
		outlen = 0;
	}
out:
	free(in);
}

int main(int argc, char **argv)
{
	static const struct server http_hello = {
		.name = "http_hello",
		.usage = "usage: http_hello [-p PORT] [-w WORKERS] "
			 "[-P PROCESSES] [-H HOST] [-t SECONDS]\n",
		.conn_task = "http-conn",
		.port = 8080,
		.handle = http_conn,
	};

	return serve_main(argc, argv, &http_hello);
}
