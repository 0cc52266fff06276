/* SPDX-License-Identifier: MIT */
/*
 * runtime/env.c - the one parser of weft's environment variables
 * (README "Environment"; RELIABILITY A17).
 *
 * Rule: a variable that is unset or empty means the default, silently; a
 * value that does not parse, or is out of range, means the default too,
 * with one line on stderr naming the variable, the value (shortened, with
 * unprintable bytes shown as '?') and what was expected. Nothing here
 * allocates, and nothing reads past the value's NUL.
 *
 * A number is decimal digits only: no sign (strtoul() would turn "-1"
 * into ULONG_MAX), no leading blanks, no "0x", nothing after the digits
 * (strtoul() would stop at "4096abc" and call it 4096), no overflow. A
 * switch is "0" or "1".
 *
 * tests/fuzz/env_fuzz.c checks the parsers against a model.
 */
#include <errno.h>
#include <stdlib.h>

#include "runtime/internal.h"

int weft__parse_ulong(const char *s, unsigned long long lo,
		      unsigned long long hi, unsigned long long *out)
{
	unsigned long long v = 0;
	bool over = false; /* a number, but too large: -ERANGE */

	if (!s || !*s)
		return -EINVAL;
	for (; *s; s++) {
		unsigned d = (unsigned char)*s - '0';

		if (d > 9)
			return -EINVAL;
		over = over || __builtin_mul_overflow(v, 10ull, &v) ||
		       __builtin_add_overflow(v, (unsigned long long)d, &v);
	}
	if (over || v < lo || v > hi)
		return -ERANGE;
	*out = v;
	return 0;
}

int weft__parse_switch(const char *s)
{
	if (s && s[0] && !s[1] && (s[0] == '0' || s[0] == '1'))
		return s[0] - '0';
	return -EINVAL;
}

/* @s shortened to 40 bytes, unprintable bytes as '?', into @buf. */
static const char *shown(const char *s, char buf[48])
{
	size_t i;

	for (i = 0; s[i] && i < 40; i++) {
		unsigned char c = (unsigned char)s[i];

		buf[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	if (s[i]) {
		buf[i++] = '.';
		buf[i++] = '.';
		buf[i++] = '.';
	}
	buf[i] = '\0';
	return buf;
}

void weft__env_bad(const char *name, const char *value, const char *expected)
{
	char buf[48];

	weft__report("ignoring %s=\"%s\": expected %s", name,
		     shown(value, buf), expected);
}

bool weft__env_ulong(const char *name, unsigned long long lo,
		     unsigned long long hi, unsigned long long *out)
{
	const char *s = getenv(name);
	char expected[96];

	if (!s || !*s)
		return false;
	if (weft__parse_ulong(s, lo, hi, out) == 0)
		return true;
	snprintf(expected, sizeof(expected), "a decimal number in [%llu, %llu]",
		 lo, hi);
	weft__env_bad(name, s, expected);
	return false;
}

bool weft__env_switch(const char *name, bool dflt)
{
	const char *s = getenv(name);
	int v;

	if (!s || !*s)
		return dflt;
	v = weft__parse_switch(s);
	if (v >= 0)
		return v;
	weft__env_bad(name, s, "0 or 1");
	return dflt;
}
