/* SPDX-License-Identifier: MIT */
/*
 * runtime/fault.c - the syscall fault table of WEFT_TEST_HOOKS builds
 * (RELIABILITY.md 3.5): make a chosen system call site fail with a chosen
 * errno, on the nth call, every kth call, or always, so that each
 * resource-exhaustion and refusal case of the catalog can be provoked on
 * any machine. Other builds compile weft__fault() to a constant 0.
 *
 * Two ways to arm a site:
 *   WEFT_FAULTS="io_uring_setup:EPERM;mprotect:ENOMEM@3;accept4:EMFILE%10"
 *     parsed once, by the first weft_runtime_new() (a bad string is
 *     reported and ignored whole);
 *   weft_test_fault(site, errno, nth, every) from a test.
 * A rule fails call k of its site (counted from 1 since it was armed) if
 *   nth == 0 && every == 0:  every call          ("site:E")
 *   every == 0:              k == nth            ("site:E@n")
 *   otherwise:               k >= f && (k - f) % every == 0, where f is
 *                            nth, or every when nth is 0
 *                                                ("site:E%k", "site:E@n%k")
 *
 * One site is not a failure: "short_io:K" (RELIABILITY D5) caps each
 * transfer of weft_recv/send/read/write/readv/writev, and of a multishot
 * stream's reads, at K bytes, so callers meet short counts on any machine
 * (@n and %k work as for the others). For stream sockets, pipes and
 * files: a datagram would be cut (recvmsg/sendmsg are left whole).
 * Two more are ring faults of the io_uring backend (RELIABILITY B8, 3.5):
 * "reap_k:K" reaps at most K completions per scheduler tick (the rest
 * wait in the CQ, which then overflows sooner), and "cqe_shuffle:SEED"
 * handles each reaped batch in a shuffled order (multishot completions
 * excepted: the kernel orders a stream's bytes, and so do we), and
 * "cqe_delay:D" holds each single-shot op's completion back for D reaps
 * (a slow kernel; a cancel's completion then comes before its target's).
 * And "sq_full:E" makes the io_uring backend find its SQ full when it
 * looks for an SQE without reaping (a cancel asked for from a completion
 * handler is then put off; weft's own cancel reaps to make room).
 * Four more stand in for the kernel's answers to a cancel of in-flight
 * I/O (RELIABILITY D9, D11), io_uring backend only:
 *   "cancel_res:E" rewrites the res of weft's own ASYNC_CANCEL
 *     completions to -E ("cancel_res:0": 0, the target was found; in a
 *     test, weft_test_fault("cancel_res", WEFT_TEST_FAULT_RES0, ...)):
 *     ENOENT (the target had completed), EALREADY (it was running);
 *   "cancel_target:E" rewrites a cancelled op's -ECANCELED to -E
 *     (EINTR: an op interrupted in io-wq);
 *   "cancel_delay:D" holds each ASYNC_CANCEL completion back for D reaps,
 *     behind any held target completion ("cqe_delay"), so the target's
 *     completion comes first; a large D with cqe_delay holds both until
 *     the tests disarm them (which releases every held completion, in
 *     order, at the next reap);
 *   "cqe_stale:K" replays each single-shot op's completion K reaps after
 *     it was handled, when its op record is gone or its slot armed again
 *     with a new generation: the reactor must ignore it and count it
 *     (weft_io_stats.stale_cqes).
 * weft_test_fault_calls(site) tells a test how often a site was consulted
 * since it was armed (for cancel_res and cancel_target: completions
 * rewritten).
 *
 * Cost when nothing is armed: one relaxed load of a flag per site call.
 * The sites are the calls named below; each returns its usual failure
 * (-1 with errno, or -errno where the call does) as the real call would.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"
#include "runtime/internal.h"
#include "runtime/test_hooks.h"

#ifdef WEFT_TEST_HOOKS

static const char *const site_names[WEFT__F_NSITES] = {
	[WEFT__F_MMAP] = "mmap",
	[WEFT__F_MPROTECT] = "mprotect",
	[WEFT__F_MADVISE_GUARD] = "madvise_guard",
	[WEFT__F_URING_SETUP] = "io_uring_setup",
	[WEFT__F_URING_ENTER] = "io_uring_enter",
	[WEFT__F_URING_REGISTER] = "io_uring_register",
	[WEFT__F_URING_PROBE] = "io_uring_probe",
	[WEFT__F_EVENTFD] = "eventfd",
	[WEFT__F_EPOLL_CREATE] = "epoll_create1",
	[WEFT__F_ACCEPT] = "accept4",
	[WEFT__F_SOCKET] = "socket",
	[WEFT__F_PTHREAD_CREATE] = "pthread_create",
	[WEFT__F_SIGNALFD] = "signalfd",
	[WEFT__F_SHORT_IO] = "short_io",
	[WEFT__F_REAP_K] = "reap_k",
	[WEFT__F_CQE_SHUFFLE] = "cqe_shuffle",
	[WEFT__F_CQE_DELAY] = "cqe_delay",
	[WEFT__F_SQ_FULL] = "sq_full",
	[WEFT__F_CANCEL_RES] = "cancel_res",
	[WEFT__F_CANCEL_TARGET] = "cancel_target",
	[WEFT__F_CANCEL_DELAY] = "cancel_delay",
	[WEFT__F_CQE_STALE] = "cqe_stale",
};

static const struct {
	const char *name;
	int err;
} errnos[] = {
	{ "EPERM", EPERM },   { "ENOSYS", ENOSYS }, { "ENOMEM", ENOMEM },
	{ "EMFILE", EMFILE }, { "ENFILE", ENFILE }, { "EAGAIN", EAGAIN },
	{ "EINTR", EINTR },   { "EBUSY", EBUSY },   { "EINVAL", EINVAL },
	{ "EACCES", EACCES }, { "ENOBUFS", ENOBUFS }, { "EIO", EIO },
	{ "ECONNABORTED", ECONNABORTED },
	/* for cancel_res and cancel_target */
	{ "ENOENT", ENOENT }, { "EALREADY", EALREADY },
	{ "ECANCELED", ECANCELED },
};

struct rule {
	_Atomic int err; /* 0: off */
	_Atomic unsigned nth, every;
	_Atomic unsigned long calls;
};

bool weft__faults_armed; /* any rule armed: __atomic builtins only */
static struct rule rules[WEFT__F_NSITES];
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static void rearm_flag(void)
{
	bool any = false;

	for (int i = 0; i < WEFT__F_NSITES; i++)
		any |= atomic_load(&rules[i].err) != 0;
	__atomic_store_n(&weft__faults_armed, any, __ATOMIC_SEQ_CST);
}

int weft__fault_slow(enum weft__fault_site s)
{
	struct rule *r = &rules[s];
	int err = atomic_load_explicit(&r->err, memory_order_relaxed);
	unsigned nth, every;
	unsigned long k;

	if (!err)
		return 0;
	nth = atomic_load_explicit(&r->nth, memory_order_relaxed);
	every = atomic_load_explicit(&r->every, memory_order_relaxed);
	k = atomic_fetch_add_explicit(&r->calls, 1, memory_order_relaxed) + 1;
	if (!nth && !every)
		return err;
	if (!every)
		return k == nth ? err : 0;
	unsigned long first = nth ? nth : every;
	return k >= first && (k - first) % every == 0 ? err : 0;
}

static int site_of(const char *name, size_t len)
{
	for (int i = 0; i < WEFT__F_NSITES; i++)
		if (strlen(site_names[i]) == len &&
		    memcmp(site_names[i], name, len) == 0)
			return i;
	return -1;
}

static int errno_of(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++)
		if (strlen(errnos[i].name) == len &&
		    memcmp(errnos[i].name, name, len) == 0)
			return errnos[i].err;
	return 0;
}

static bool parse_uint(const char **p, unsigned *out)
{
	char *end;
	unsigned long v;

	if (**p < '0' || **p > '9')
		return false;
	v = strtoul(*p, &end, 10);
	if (v == 0 || v > 1000000000ul)
		return false;
	*out = (unsigned)v;
	*p = end;
	return true;
}

/* Parse and apply @spec (the WEFT_FAULTS syntax): all or nothing. */
static int apply_spec(const char *spec)
{
	struct {
		int site, err;
		unsigned nth, every;
	} parsed[WEFT__F_NSITES * 2];
	int n = 0;
	const char *p = spec;

	while (*p) {
		const char *colon = strchr(p, ':');
		const char *end;
		int site, err;
		unsigned nth = 0, every = 0;

		if (*p == ';') {
			p++;
			continue;
		}
		if (!colon || n == (int)(sizeof(parsed) / sizeof(parsed[0])))
			return -EINVAL;
		site = site_of(p, (size_t)(colon - p));
		p = colon + 1;
		end = p;
		while ((*end >= 'A' && *end <= 'Z') || (*end >= '0' && *end <= '9'))
			end++;
		if (site == WEFT__F_CANCEL_RES && end - p == 1 && *p == '0') {
			/* "cancel_res:0": a cancel that found its target */
			err = WEFT_TEST_FAULT_RES0;
		} else if (site == WEFT__F_SHORT_IO || site == WEFT__F_REAP_K ||
			   site == WEFT__F_CQE_SHUFFLE ||
			   site == WEFT__F_CQE_DELAY ||
			   site == WEFT__F_CANCEL_DELAY ||
			   site == WEFT__F_CQE_STALE) {
			/* a number, not an errno: "short_io:1" */
			unsigned k;
			if (!parse_uint(&p, &k))
				return -EINVAL;
			err = (int)k;
			end = p;
		} else {
			err = errno_of(p, (size_t)(end - p));
		}
		if (site < 0 || !err)
			return -EINVAL;
		p = end;
		if (*p == '@') {
			p++;
			if (!parse_uint(&p, &nth))
				return -EINVAL;
		}
		if (*p == '%') {
			p++;
			if (!parse_uint(&p, &every))
				return -EINVAL;
		}
		if (*p && *p != ';')
			return -EINVAL;
		parsed[n].site = site;
		parsed[n].err = err;
		parsed[n].nth = nth;
		parsed[n].every = every;
		n++;
	}
	for (int i = 0; i < n; i++)
		weft_test_fault(site_names[parsed[i].site], parsed[i].err,
				parsed[i].nth, parsed[i].every);
	return 0;
}

static void parse_env(void)
{
	const char *e = getenv("WEFT_FAULTS");

	if (e && *e && apply_spec(e) != 0)
		weft__env_bad("WEFT_FAULTS", e,
			      "site:ERRNO[@nth][%every] separated by ';' "
			      "(runtime/fault.c lists the sites)");
}

void weft__faults_init(void)
{
	pthread_once(&env_once, parse_env);
}

WEFT_API int weft_test_fault(const char *site, int err, unsigned nth,
			     unsigned every)
{
	int s = site ? site_of(site, strlen(site)) : -1;

	if (s < 0 || err < 0)
		return -EINVAL;
	struct rule *r = &rules[s];
	atomic_store(&r->err, 0);
	atomic_store(&r->nth, nth);
	atomic_store(&r->every, every);
	atomic_store(&r->calls, 0);
	atomic_store(&r->err, err);
	rearm_flag();
	return 0;
}

WEFT_API unsigned long weft_test_fault_calls(const char *site)
{
	int s = site ? site_of(site, strlen(site)) : -1;

	return s < 0 ? 0 : atomic_load(&rules[s].calls);
}

WEFT_API void weft_test_faults_clear(void)
{
	for (int i = 0; i < WEFT__F_NSITES; i++)
		atomic_store(&rules[i].err, 0);
	rearm_flag();
}

WEFT_API int weft_test_faults_parse(const char *spec)
{
	return spec ? apply_spec(spec) : -EINVAL;
}

#else

static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static void warn_env(void)
{
	const char *e = getenv("WEFT_FAULTS");

	if (e && *e)
		weft__report("ignoring WEFT_FAULTS: fault injection exists only "
			     "in test builds (WEFT_TEST_HOOKS)");
}

void weft__faults_init(void)
{
	pthread_once(&env_once, warn_env);
}

#endif
