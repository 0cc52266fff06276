/* SPDX-License-Identifier: MIT */
/*
 * examples/http_parse.h - the request parser of examples/http_hello.c, in
 * a header of its own so that tests/fuzz/http_fuzz.c can drive it
 * (RELIABILITY H8: untrusted length fields in example protocols).
 *
 * Enough HTTP/1.1 for wrk and curl: the request line, headers,
 * Content-Length bodies, keep-alive and pipelining. The buffer is never
 * NUL-terminated and may end anywhere: nothing here reads past @len, and
 * a length field is taken only if it is all digits (no sign, no
 * whitespace but the spaces or tabs around it, at most BODY_MAX).
 */
#ifndef WEFT_EXAMPLES_HTTP_PARSE_H
#define WEFT_EXAMPLES_HTTP_PARSE_H

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define HEAD_MAX 8192
#define BODY_MAX (1 << 20)

static const char OK[] = "HTTP/1.1 200 OK\r\n"
			 "Content-Type: text/plain\r\n"
			 "Content-Length: 14\r\n"
			 "\r\n"
			 "Hello, World!\n";
static const char NOTFOUND[] = "HTTP/1.1 404 Not Found\r\n"
			       "Content-Type: text/plain\r\n"
			       "Content-Length: 10\r\n"
			       "\r\n"
			       "Not Found\n";
static const char BAD_REQUEST[] =
	"HTTP/1.1 400 Bad Request\r\n"
	"Content-Length: 0\r\nConnection: close\r\n\r\n";

/* Case-insensitive "name:" at the start of a header line, or NULL. */
static const char *header_value(const char *line, const char *end,
				const char *name)
{
	size_t n = strlen(name);

	if ((size_t)(end - line) <= n || strncasecmp(line, name, n) != 0 ||
	    line[n] != ':')
		return NULL;
	line += n + 1;
	while (line < end && (*line == ' ' || *line == '\t'))
		line++;
	return line;
}

/* A Content-Length value in [v, eol): digits, then only spaces or tabs.
 * Return: the length, -1 if malformed, -2 if over BODY_MAX. */
static long content_length(const char *v, const char *eol)
{
	long n = 0;
	const char *d = v;

	while (d < eol && *d >= '0' && *d <= '9') {
		n = n * 10 + (*d - '0');
		if (n > BODY_MAX)
			return -2;
		d++;
	}
	if (d == v)
		return -1;
	while (d < eol && (*d == ' ' || *d == '\t'))
		d++;
	return d == eol ? n : -1;
}

enum {
	KEEP,
	CLOSE
};

/*
 * Parse one request at @p (@len bytes buffered). Return: bytes the request
 * takes (head + body) once complete, 0 if more is needed, -1 on a request
 * we refuse (*resp then holds the error answer). *resp gets the answer,
 * *close whether to close after it.
 */
static long parse(const char *p, size_t len, const char **resp, int *close)
{
	const char *end = memmem(p, len, "\r\n\r\n", 4);
	const char *line, *eol, *sp1, *sp2;
	long body = -1;
	bool http10, keep10 = false;

	*close = KEEP;
	/* A head of HEAD_MAX bytes or more is refused however it arrives
	 * (whole, or in pieces, where the first HEAD_MAX bytes show no end). */
	if (!end || end + 4 - p > HEAD_MAX) {
		if (end || len >= HEAD_MAX) {
			*resp = "HTTP/1.1 431 Request Header Fields Too Large\r\n"
				"Content-Length: 0\r\nConnection: close\r\n\r\n";
			*close = CLOSE;
			return -1;
		}
		return 0;
	}
	eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
	sp1 = memchr(p, ' ', (size_t)(eol - p));
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp1 || !sp2 || eol - sp2 - 1 != 8 ||
	    strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
		goto bad;
	http10 = sp2[8] == '0';
	for (line = eol + 2; line < end + 2; line = eol + 2) {
		const char *v;
		eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
		if ((v = header_value(line, eol, "Content-Length"))) {
			long n = content_length(v, eol);
			if (n == -2) {
				*resp = "HTTP/1.1 413 Content Too Large\r\n"
					"Content-Length: 0\r\n"
					"Connection: close\r\n\r\n";
				*close = CLOSE;
				return -1;
			}
			/* malformed, or a second one that disagrees (a
			 * smuggling attempt) */
			if (n < 0 || (body >= 0 && n != body))
				goto bad;
			body = n;
		} else if ((v = header_value(line, eol, "Transfer-Encoding"))) {
			*resp = "HTTP/1.1 501 Not Implemented\r\n"
				"Content-Length: 0\r\nConnection: close\r\n\r\n";
			*close = CLOSE;
			return -1;
		} else if ((v = header_value(line, eol, "Connection"))) {
			if ((size_t)(eol - v) >= 5 &&
			    strncasecmp(v, "close", 5) == 0)
				*close = CLOSE;
			else if ((size_t)(eol - v) >= 10 &&
				 strncasecmp(v, "keep-alive", 10) == 0)
				keep10 = true;
		}
	}
	if (body < 0)
		body = 0;
	if (http10 && !keep10)
		*close = CLOSE;
	if ((size_t)(end + 4 - p) + (size_t)body > len)
		return 0; /* the body is not all here yet */
	*resp = (sp2 - sp1 - 1 == 1 && sp1[1] == '/') ? OK : NOTFOUND;
	return (long)(end + 4 - p) + body;
bad:
	*resp = BAD_REQUEST;
	*close = CLOSE;
	return -1;
}

#endif /* WEFT_EXAMPLES_HTTP_PARSE_H */
