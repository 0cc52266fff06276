/* SPDX-License-Identifier: MIT */
/*
 * tests/fuzz/http_fuzz.c - libFuzzer target: the request parser of
 * examples/http_hello.c (examples/http_parse.h), RELIABILITY H8 and 3.6
 * item 6.
 *
 * The input is a connection's byte stream, copied into a buffer of exactly
 * its size (ASan sees any read past it: the parser's buffer is never
 * NUL-terminated). It is parsed as http_hello's http_conn() does: request
 * after request until one needs more bytes, is refused or asks to close.
 * Checked for every request, against a reference written separately here:
 *  - a result never exceeds the bytes given; a refusal (-1) closes;
 *  - an accepted request is its head (up to the first CRLFCRLF, under
 *    HEAD_MAX) plus exactly the body its one Content-Length (digits only,
 *    optional spaces or tabs around, at most BODY_MAX) announces, 0 when
 *    there is none, and the answer is 200 for "/" and 404 otherwise;
 *  - every strict prefix of an accepted request gives 0 (need more), so
 *    the answer never depends on how the bytes were split into reads.
 * The first byte, if any, picks where the prefix check cuts.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "examples/http_parse.h"

static void fail(const char *what, size_t at)
{
	fprintf(stderr, "http_fuzz: %s (request at byte %zu)\n", what, at);
	abort();
}

#define CHECK(cond, at)                    \
	do {                               \
		if (!(cond))               \
			fail(#cond, (at)); \
	} while (0)

/* The reference: the body length of an accepted request whose head is
 * [p, head + 2) (head: where its CRLFCRLF starts), or -1 if it should have
 * been refused. Lines end at CRLF; the first is the request line. */
static long ref_body(const char *p, const char *head)
{
	const char *s =
		(const char *)memmem(p, (size_t)(head + 2 - p), "\r\n", 2) + 2;
	long body = -1;

	while (s < head + 2) {
		const char *e = memmem(s, (size_t)(head + 2 - s), "\r\n", 2);
		if ((size_t)(e - s) >= 15 &&
		    strncasecmp(s, "content-length:", 15) == 0) {
			const char *d = s + 15;
			long n = 0;
			int digits = 0;
			while (d < e && (*d == ' ' || *d == '\t'))
				d++;
			for (; d < e && *d >= '0' && *d <= '9'; d++, digits++)
				if ((n = n * 10 + (*d - '0')) > BODY_MAX)
					return -1;
			while (d < e && (*d == ' ' || *d == '\t'))
				d++;
			if (!digits || d != e || (body >= 0 && n != body))
				return -1;
			body = n;
		} else if ((size_t)(e - s) >= 18 &&
			   strncasecmp(s, "transfer-encoding:", 18) == 0) {
			return -1;
		}
		s = e + 2;
	}
	return body < 0 ? 0 : body;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size ? size : 1);
	size_t off = 0;
	unsigned cut = size ? data[0] : 0;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	while (off < size) {
		const char *p = buf + off, *resp = NULL;
		size_t len = size - off;
		int cl = -1;
		long r = parse(p, len, &resp, &cl);

		CHECK(cl == KEEP || cl == CLOSE, off);
		CHECK(r >= -1 && r <= (long)len, off);
		if (r == 0)
			break;
		CHECK(resp && strncmp(resp, "HTTP/1.1 ", 9) == 0, off);
		if (r < 0) {
			CHECK(cl == CLOSE, off);
			break;
		}
		const char *head = memmem(p, len, "\r\n\r\n", 4);
		CHECK(head && head + 4 - p <= HEAD_MAX, off);
		long body = ref_body(p, head);
		CHECK(body >= 0, off);
		CHECK(r == (long)(head + 4 - p) + body, off);
		const char *sp = memchr(p, ' ', (size_t)(head - p));
		CHECK(sp, off);
		bool root = sp[1] == '/' && sp[2] == ' ';
		CHECK(resp == (root ? OK : NOTFOUND), off);
		/* a strict prefix needs more */
		size_t k = (size_t)r - 1 - (cut % (unsigned long)r);
		char *pre = malloc(k ? k : 1);
		if (pre) {
			const char *pr;
			int pc;
			memcpy(pre, p, k);
			CHECK(parse(pre, k, &pr, &pc) == 0, off);
			free(pre);
		}
		if (cl == CLOSE)
			break;
		off += (size_t)r;
	}
	free(buf);
	return 0;
}
