/* SPDX-License-Identifier: MIT */
/*
 * tests/fuzz/api_fuzz.c - libFuzzer target: garbage arguments to public
 * calls (RELIABILITY 3.6, item 5).
 *
 * One 1-worker runtime lives for the session; each input is one
 * weft_block_on() of a task that decodes the bytes into calls with odd
 * sizes, flags, fds, deadlines and NULLs: weft_queue_new, weft_spawn_ex
 * options, weft_fd_set_flags, weft_poll / weft_send / weft_recv on a
 * socketpair and on bad fds, weft_read / weft_write offsets, scopes (enter
 * in every flavour, exit in any order, set_deadline), sleeps, semaphores,
 * limiters, task names. The rule checked: every int result is >= 0 or a
 * -errno (-4095 .. -1), pointer constructors return a handle or NULL with
 * errno set, nothing crashes (ASan/UBSan) and nothing hangs: every call
 * that can wait runs inside a 1 ms scope, so it must come back with
 * -ETIMEDOUT at worst (libFuzzer's -timeout catches one that does not).
 *
 * Byte format: each op is one byte (op = b % 16); operands are read from
 * the following bytes (0 once the input runs out).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <weft.h>

struct reader {
	const uint8_t *p;
	size_t n, i;
};

static uint8_t u8(struct reader *r)
{
	return r->i < r->n ? r->p[r->i++] : 0;
}

static uint32_t u32(struct reader *r)
{
	uint32_t v = 0;

	for (int k = 0; k < 4; k++)
		v = v << 8 | u8(r);
	return v;
}

static uint64_t u64(struct reader *r)
{
	return (uint64_t)u32(r) << 32 | u32(r);
}

static _Noreturn void fail(const char *what, long long v, size_t step)
{
	fprintf(stderr, "api_fuzz: %s (got %lld, at op %zu)\n", what, v, step);
	abort();
}

/* the rule: >= 0 or a negative errno */
#define CHECK_RET(call, step)                                          \
	do {                                                           \
		long long r_ = (long long)(call);                      \
		if (r_ < -4095)                                        \
			fail(#call " returned no -errno", r_, (step)); \
	} while (0)

#define CHECK(cond, step)                       \
	do {                                    \
		if (!(cond))                    \
			fail(#cond, 0, (step)); \
	} while (0)

/* Odd sizes: small, page-ish, and ones whose byte counts overflow (never
 * a huge but representable malloc: libFuzzer's -malloc_limit_mb would
 * report that as an out-of-memory crash of the fuzzer, not of weft). */
static size_t odd_size(struct reader *r)
{
	static const size_t table[] = {
		0,
		1,
		2,
		3,
		63,
		64,
		4095,
		4096,
		16384,
		65536,
		SIZE_MAX,
		SIZE_MAX / 2,
		SIZE_MAX / sizeof(void *),
		SIZE_MAX / sizeof(void *) + 1,
		(SIZE_MAX >> 1) + 1,
	};
	uint8_t b = u8(r);

	if (b & 0x80)
		return b & 0x7f;
	return table[b % (sizeof(table) / sizeof(table[0]))];
}

static uint64_t odd_timeout(struct reader *r)
{
	static const uint64_t table[] = {
		0,
		1,
		1000,
		100000,
		UINT64_MAX,
		UINT64_MAX - 1,
		(uint64_t)INT64_MAX,
		(uint64_t)INT64_MAX + 1,
		(uint64_t)-5,
	};
	uint8_t b = u8(r);

	if (b & 0x80)
		return (uint64_t)(b & 0x7f) * 1000; /* up to 127 us */
	return table[b % (sizeof(table) / sizeof(table[0]))];
}

static int noop(void *arg)
{
	(void)arg;
	return 7;
}

static int devnull = -1;

struct ctx {
	struct reader r;
	int sv[2];
	weft_scope scopes[8];
	int open[8]; /* stack of entered scope indices */
	int nopen;
	size_t step;
};

static int pick_fd(struct ctx *c)
{
	switch (u8(&c->r) % 7) {
	case 0:
		return c->sv[0];
	case 1:
		return c->sv[1];
	case 2:
		return -1;
	case 3:
		return INT_MAX;
	case 4:
		return 1 << 20; /* above any RLIMIT_NOFILE here */
	case 5:
		return devnull;
	default:
		return -(int)u8(&c->r) - 2;
	}
}

/* Every call that can wait runs inside a 1 ms scope. */
#define BOUNDED(c, call)                                    \
	do {                                                \
		weft_scope s_;                              \
		memset(&s_, 0, sizeof(s_));                 \
		weft_scope_enter(&s_, 1000000);             \
		CHECK_RET(call, (c)->step);                 \
		CHECK_RET(weft_scope_exit(&s_), (c)->step); \
	} while (0)

static void op_queue_new(struct ctx *c)
{
	size_t cap = odd_size(&c->r);
	weft_queue *q;

	errno = 0;
	q = weft_queue_new(cap);
	if (!q) {
		CHECK(errno == EINVAL || errno == ENOMEM, c->step);
		CHECK(cap != 1, c->step);
		return;
	}
	CHECK(cap != 0, c->step);
	CHECK_RET(weft_queue_try_put(q, (void *)1), c->step);
	CHECK(weft_queue_len(q) == 1, c->step);
	weft_queue_close(q);
	weft_queue_free(q);
}

static void op_spawn_ex(struct ctx *c)
{
	static const char long_name[] =
		"a name longer than WEFT_TASK_NAME_MAX bytes, "
		"so that it has to be truncated somewhere along the way";
	weft_spawn_opts o;
	weft_task *t = NULL;
	uint8_t how = u8(&c->r);
	int r;

	memset(&o, 0, sizeof(o));
	o.name = how % 3 == 0 ? NULL : how % 3 == 1 ? "" : long_name;
	o.stack_size = (how & 4) ? odd_size(&c->r) : 0;
	o.flags = (how & 8) ? u32(&c->r) : 0;
	if (how & 16)
		o.reserved[u8(&c->r) % 4] = u64(&c->r);
	r = weft_spawn_ex(&t, (how & 32) ? NULL : &o, noop, NULL);
	CHECK_RET(r, c->step);
	if (r < 0)
		return;
	CHECK(t != NULL, c->step);
	if (how & 64) {
		char buf[80];
		size_t len = u8(&c->r) % sizeof(buf);
		CHECK_RET(weft_task_name(t, len ? buf : NULL, len), c->step);
	}
	CHECK(weft_join(t) == 7, c->step);
}

static void op_fd_flags(struct ctx *c)
{
	int fd = pick_fd(c);
	unsigned flags = u8(&c->r) & 1 ? WEFT_FD_MULTISHOT : u32(&c->r);

	CHECK_RET(weft_fd_set_flags(fd, flags), c->step);
}

static void op_poll(struct ctx *c)
{
	int fd = pick_fd(c);
	short ev = (short)(u32(&c->r) & 0xffff);

	BOUNDED(c, weft_poll(fd, ev));
}

static void op_send(struct ctx *c)
{
	char buf[64];
	int fd = u8(&c->r) & 1 ? c->sv[u8(&c->r) & 1] : pick_fd(c);
	size_t len = u8(&c->r) % (sizeof(buf) + 1);
	int flags = u8(&c->r) & 1 ? MSG_NOSIGNAL : (int)u32(&c->r);

	memset(buf, 'x', sizeof(buf));
	BOUNDED(c, weft_send(fd, len ? buf : NULL, len, flags));
}

static void op_recv(struct ctx *c)
{
	char buf[64];
	int fd = u8(&c->r) & 1 ? c->sv[u8(&c->r) & 1] : pick_fd(c);
	size_t len = u8(&c->r) % (sizeof(buf) + 1);
	int flags = u8(&c->r) & 1 ? 0 : (int)u32(&c->r);

	BOUNDED(c, weft_recv(fd, len ? buf : NULL, len, flags));
}

static void op_file(struct ctx *c)
{
	char buf[32];
	uint8_t how = u8(&c->r);
	int fd = how & 1 ? devnull : pick_fd(c);
	size_t len = u8(&c->r) % (sizeof(buf) + 1);
	int64_t off = how & 2 ? (int64_t)u64(&c->r) : -1;

	memset(buf, 'y', sizeof(buf));
	if (how & 4)
		BOUNDED(c, weft_write(fd, buf, len, off));
	else
		BOUNDED(c, weft_read(fd, buf, len, off));
}

static void op_scope_enter(struct ctx *c)
{
	uint8_t how = u8(&c->r);
	int i = how % 8;
	weft_scope *s = &c->scopes[i];
	uint64_t v = odd_timeout(&c->r);
	bool already = false;

	/* entering an open scope is misuse, reported and ignored */
	for (int k = 0; k < c->nopen; k++)
		already |= c->open[k] == i;
	switch (how / 8 % 3) {
	case 0:
		weft_scope_enter(s, v);
		break;
	case 1:
		weft_scope_enter_at(s, v < 1000000 ? weft_now() + v : v);
		break;
	case 2:
		weft_scope_enter_shielded(s, v);
		break;
	}
	if (!already && c->nopen < 8)
		c->open[c->nopen++] = i;
}

static void op_scope_exit(struct ctx *c)
{
	uint8_t how = u8(&c->r);
	int k;

	if (c->nopen == 0 || how & 1) {
		/* any scope: closed ones give -EINVAL */
		int i = how / 2 % 8;
		int r = weft_scope_exit(&c->scopes[i]);
		CHECK_RET(r, c->step);
		for (k = 0; k < c->nopen && c->open[k] != i; k++)
			;
		if (k == c->nopen) {
			CHECK(r == -EINVAL, c->step);
			return;
		}
		/* not the innermost: -EINVAL, and it closed every scope
		 * entered inside it too */
		if (k < c->nopen - 1 && r != -EINVAL)
			fail("exit of an outer scope is not -EINVAL", r,
			     c->step);
		if (k == c->nopen - 1 && r != 0 && r != -ETIMEDOUT)
			fail("scope exit", r, c->step);
		c->nopen = k;
		return;
	}
	int r = weft_scope_exit(&c->scopes[c->open[--c->nopen]]);
	if (r != 0 && r != -ETIMEDOUT)
		fail("innermost scope exit", r, c->step);
}

static void op_scope_set(struct ctx *c)
{
	weft_scope *s = &c->scopes[u8(&c->r) % 8];
	uint64_t v = odd_timeout(&c->r);

	weft_scope_set_deadline(s, v < 1000000 ? weft_now() + v : v);
	(void)weft_scope_deadline(s);
	(void)weft_scope_deadline(NULL);
}

static void op_sleep(struct ctx *c)
{
	uint64_t v = odd_timeout(&c->r);

	if (u8(&c->r) & 1)
		BOUNDED(c, weft_sleep(v));
	else
		BOUNDED(c, weft_sleep_until(v));
}

static void op_sem(struct ctx *c)
{
	weft_sem s;
	unsigned v = u8(&c->r) & 1 ? u32(&c->r) : u8(&c->r) % 3;
	int r = weft_sem_init(&s, v);

	CHECK_RET(r, c->step);
	if (r < 0)
		return;
	CHECK_RET(weft_sem_try_acquire(&s), c->step);
	BOUNDED(c, weft_sem_acquire(&s));
	weft_sem_release(&s);
	weft_sem_destroy(&s);
}

static void op_limiter(struct ctx *c)
{
	static const double rates[] = {
		0.0, -1.0, 1e-30, 1e-9, 0.5, 1.0, 1e6, 1e18, 1e300,
	};
	uint8_t b = u8(&c->r);
	double rate = b & 0x80 ? (b & 1 ? NAN : INFINITY * (b & 2 ? -1 : 1)) :
				 rates[b % (sizeof(rates) / sizeof(rates[0]))];
	unsigned burst = u8(&c->r) & 1 ? u32(&c->r) : u8(&c->r) % 4;
	weft_limiter *l;

	errno = 0;
	l = weft_limiter_new(rate, burst);
	if (!l) {
		CHECK(errno == EINVAL || errno == ENOMEM, c->step);
		return;
	}
	CHECK(isfinite(rate) && rate > 0, c->step);
	BOUNDED(c, weft_limiter_acquire(l));
	BOUNDED(c, weft_limiter_acquire(l));
	weft_limiter_free(l);
}

static void op_misc(struct ctx *c)
{
	char buf[40];
	size_t len = u8(&c->r) % (sizeof(buf) + 1);

	switch (u8(&c->r) % 6) {
	case 0:
		CHECK_RET(weft_task_name(weft_self(), len ? buf : NULL, len),
			  c->step);
		break;
	case 1:
		CHECK_RET(weft_task_name(NULL, buf, sizeof(buf)), c->step);
		break;
	case 2:
		CHECK_RET(weft_checkpoint(), c->step);
		break;
	case 3:
		CHECK_RET(weft_yield(), c->step);
		break;
	case 4:
		CHECK(weft_cancel(NULL) == -EINVAL, c->step);
		CHECK_RET(weft_join(NULL), c->step);
		break;
	case 5:
		CHECK(weft_queue_len(NULL) == 0, c->step);
		CHECK(weft_queue_try_put(NULL, NULL) == -EINVAL, c->step);
		CHECK(weft_queue_try_get(NULL, NULL) == -EINVAL, c->step);
		break;
	}
}

static int driver(void *arg)
{
	struct ctx *c = arg;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c->sv) != 0)
		abort();
	while (c->r.i < c->r.n) {
		uint8_t b = u8(&c->r);

		c->step++;
		switch (b % 16) {
		case 0:
			op_queue_new(c);
			break;
		case 1:
			op_spawn_ex(c);
			break;
		case 2:
			op_fd_flags(c);
			break;
		case 3:
		case 4:
			op_poll(c);
			break;
		case 5:
			op_send(c);
			break;
		case 6:
			op_recv(c);
			break;
		case 7:
			op_file(c);
			break;
		case 8:
		case 9:
			op_scope_enter(c);
			break;
		case 10:
			op_scope_exit(c);
			break;
		case 11:
			op_scope_set(c);
			break;
		case 12:
			op_sleep(c);
			break;
		case 13:
			op_sem(c);
			break;
		case 14:
			op_limiter(c);
			break;
		case 15:
			op_misc(c);
			break;
		}
	}
	while (c->nopen > 0) {
		int r = weft_scope_exit(&c->scopes[c->open[--c->nopen]]);
		if (r != 0 && r != -ETIMEDOUT)
			fail("scope exit at the end", r, c->step);
	}
	/* weft_close: the fds may have WEFT_FD_MULTISHOT (weft/io.h) */
	CHECK(weft_close(c->sv[0]) == 0, c->step);
	CHECK(weft_close(c->sv[1]) == 0, c->step);
	return 0;
}

static weft_runtime *rt;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	weft_config cfg;

	(void)argc;
	(void)argv;
	memset(&cfg, 0, sizeof(cfg));
	cfg.workers = 1;
	if (weft_runtime_new(&rt, &cfg) != 0) {
		fprintf(stderr, "api_fuzz: weft_runtime_new failed\n");
		abort();
	}
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctx c;

	memset(&c, 0, sizeof(c));
	c.r.p = data;
	c.r.n = size;
	if (weft_block_on(rt, driver, &c) != 0)
		abort();
	return 0;
}
