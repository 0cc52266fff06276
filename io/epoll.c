/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * io/epoll.c - the epoll backend: readiness per worker, for kernels or
 * containers without io_uring (or WEFT_IO=epoll / WEFT_IO_EPOLL).
 *
 * This backend is not native: an op armed here only waits until op->fd is
 * ready for op->poll_events (res = the revents seen); weft__io_exec() makes
 * the syscall itself, non-blocking, and waits again on -EAGAIN
 * (io/calls.c, weft__io_try()). Regular files are always "ready": their
 * calls are made blocking on the offload pool, through
 * weft__io_blocking_call().
 *
 * Registration: each worker has its own epoll instance and a table indexed
 * by fd: the ops waiting on that fd on this worker (any number, any
 * direction) and whether the fd is registered. The fd is registered
 * EPOLLONESHOT for the union of its waiters' events, with the fd number as
 * data (never an op address: a stale event can then find at most an empty
 * slot, never freed memory). When an event fires, the ops it satisfies
 * (ERR and HUP satisfy all) complete; if some remain, the fd is re-armed.
 * Only the owner worker touches its table; cancel unlinks the op and
 * completes it with -ECANCELED on the spot.
 *
 * An fd number that was closed and reused: EPOLL_CTL_MOD fails with ENOENT
 * (the registration went with the old file) and the fd is added again. A
 * file epoll cannot watch (EPERM: a regular file) is reported ready.
 *
 * Idle sleep: epoll_wait with the next timer deadline (rounded up to the
 * millisecond); the events it returns are handled at once (the tasks go to
 * this worker's deque, found by the loop after park). Kick: an eventfd,
 * level-triggered in the set; the sleeper drains it.
 */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "io/backend.h"

#define KICK_DATA UINT64_MAX

struct fdent {
	struct weft__io_op *head; /* waiters on this fd, this worker */
	bool registered; /* in the epoll set (maybe disabled) */
};

struct ep {
	struct weft__io_worker common; /* first: see io/backend.h */
	int epfd;
	int efd;
	struct fdent *fds; /* indexed by fd; owner only */
	size_t nfds;
	unsigned inflight;
};

static inline struct ep *E(struct weft__worker *w)
{
	return (struct ep *)w->io;
}

static int e_init(struct weft__worker *w, unsigned entries)
{
	struct ep *e = weft__alloc_aligned(WEFT__CACHELINE, sizeof(*e));
	struct epoll_event ev;
	int r;

	(void)entries;
	if (!e)
		return -ENOMEM;
	memset(e, 0, sizeof(*e));
	r = weft__io_worker_init(&e->common);
	if (r)
		goto out_free;
	r = weft__fault(WEFT__F_EPOLL_CREATE);
	e->epfd = r ? (errno = r, -1) : epoll_create1(EPOLL_CLOEXEC);
	if (e->epfd < 0) {
		r = -errno;
		goto out_common;
	}
	r = weft__fault(WEFT__F_EVENTFD);
	e->efd = r ? (errno = r, -1) : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->efd < 0) {
		r = -errno;
		goto out_close;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.u64 = KICK_DATA;
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->efd, &ev) < 0) {
		r = -errno;
		close(e->efd);
		goto out_close;
	}
	w->io = e;
	return 0;

out_close:
	close(e->epfd);
out_common:
	weft__io_worker_fini(&e->common);
out_free:
	weft__free(e);
	return r;
}

static void e_start(struct weft__worker *w)
{
	(void)w;
}

static void e_fini(struct weft__worker *w)
{
	struct ep *e = E(w);

	close(e->efd);
	close(e->epfd);
	weft__free(e->fds);
	weft__io_worker_fini(&e->common);
	weft__free(e);
	w->io = NULL;
}

static bool grow(struct ep *e, int fd)
{
	size_t n = e->nfds ? e->nfds : 64;
	struct fdent *t;

	while (n <= (size_t)fd)
		n *= 2;
	t = weft__calloc(n, sizeof(*t));
	if (!t)
		return false;
	if (e->nfds)
		memcpy(t, e->fds, e->nfds * sizeof(*t));
	weft__free(e->fds);
	e->fds = t;
	e->nfds = n;
	return true;
}

static uint32_t wanted(const struct fdent *fe)
{
	uint32_t ev = 0;

	for (const struct weft__io_op *o = fe->head; o; o = o->next)
		ev |= o->poll_events;
	return ev;
}

/* (Re-)register fd for its waiters. Return 0 or -errno. */
static int rearm(struct ep *e, int fd)
{
	struct fdent *fe = &e->fds[fd];
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = wanted(fe) | EPOLLONESHOT;
	ev.data.u64 = (uint64_t)fd;
	if (fe->registered) {
		if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
			return 0;
		if (errno != ENOENT)
			return -errno;
		fe->registered = false; /* fd number reused */
	}
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) == 0) {
		fe->registered = true;
		return 0;
	}
	if (errno == EEXIST) {
		fe->registered = true;
		return epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev) ? -errno : 0;
	}
	return -errno;
}

static bool unlink_op(struct fdent *fe, struct weft__io_op *op)
{
	for (struct weft__io_op **pp = &fe->head; *pp; pp = &(*pp)->next) {
		if (*pp == op) {
			*pp = op->next;
			op->next = NULL;
			return true;
		}
	}
	return false;
}

static unsigned finish_op(struct weft__worker *w, struct weft__io_op *op,
			  int res)
{
	E(w)->inflight--;
	return weft__io_complete(w, op, res);
}

static void e_arm(struct weft__worker *w, struct weft__io_op *op)
{
	struct ep *e = E(w);
	struct fdent *fe;
	int r;

	WEFT__BUG_ON(op->opcode != WEFT__OP_POLL);
	e->inflight++;
	if (op->fd < 0) {
		finish_op(w, op, -EBADF);
		return;
	}
	if ((size_t)op->fd >= e->nfds && !grow(e, op->fd)) {
		finish_op(w, op, -ENOMEM);
		return;
	}
	fe = &e->fds[op->fd];
	op->next = fe->head;
	fe->head = op;
	r = rearm(e, op->fd);
	if (r == 0)
		return;
	unlink_op(fe, op);
	/* EPERM: a file epoll cannot watch is always ready. */
	finish_op(w, op, r == -EPERM ? (int)op->poll_events : r);
}

static void e_cancel(struct weft__worker *w, struct weft__io_op *op)
{
	struct ep *e = E(w);

	if (op->fd >= 0 && (size_t)op->fd < e->nfds &&
	    unlink_op(&e->fds[op->fd], op))
		finish_op(w, op, -ECANCELED);
}

static unsigned handle(struct weft__worker *w, struct epoll_event *evs, int n)
{
	struct ep *e = E(w);
	unsigned woken = 0;

	/* Newest first, so the deque's owner (newest first) runs the
	 * oldest event's task first: see reap() in io/uring.c. */
	for (int i = n; i-- > 0;) {
		if (evs[i].data.u64 == KICK_DATA) {
			uint64_t v;
			ssize_t r = read(e->efd, &v, sizeof(v));
			(void)r; /* EAGAIN: another read drained it */
			continue;
		}
		int fd = (int)evs[i].data.u64;
		uint32_t rev = evs[i].events;
		if ((size_t)fd >= e->nfds)
			continue;
		struct fdent *fe = &e->fds[fd];
		struct weft__io_op **pp = &fe->head;
		while (*pp) {
			struct weft__io_op *op = *pp;
			uint32_t hit = rev &
				       (op->poll_events | EPOLLERR | EPOLLHUP);
			if (!hit) {
				pp = &op->next;
				continue;
			}
			*pp = op->next;
			op->next = NULL;
			woken += finish_op(w, op, (int)hit);
		}
		if (fe->head) {
			int r = rearm(e, fd);
			/* Cannot re-arm: fail the rest rather than hang. */
			while (r && fe->head) {
				struct weft__io_op *op = fe->head;
				fe->head = op->next;
				op->next = NULL;
				woken += finish_op(w, op, r);
			}
		}
	}
	return woken;
}

static unsigned wait_events(struct weft__worker *w, int timeout_ms)
{
	struct epoll_event evs[64];
	unsigned woken = 0;
	int n;

	do {
		weft__io_stat_inc(&E(w)->common.enters);
		n = epoll_wait(E(w)->epfd, evs, 64, timeout_ms);
		if (n <= 0)
			return woken;
		woken += handle(w, evs, n);
		timeout_ms = 0;
	} while (n == 64);
	return woken;
}

static unsigned e_poll(struct weft__worker *w)
{
	unsigned woken;

	if (!E(w)->inflight)
		return 0;
	woken = wait_events(w, 0);
	return woken; /* no notify: see u_poll() in io/uring.c */
}

static void e_sleep(struct weft__worker *w, uint64_t deadline_ns)
{
	int ms = -1;

	if (deadline_ns != UINT64_MAX) {
		uint64_t now = weft__clock_now();
		uint64_t d = deadline_ns > now ? deadline_ns - now : 0;
		uint64_t m = (d + 999999) / 1000000;
		ms = m > INT32_MAX ? INT32_MAX : (int)m;
	}
	weft__io_stat_inc(&E(w)->common.sleeps);
	wait_events(w, ms);
}

static void e_kick(struct weft__worker *w)
{
	uint64_t one = 1;
	ssize_t r = write(E(w)->efd, &one, sizeof(one));

	(void)r;
}

static unsigned e_inflight(struct weft__worker *w)
{
	return E(w)->inflight;
}

const struct weft__io_backend weft__io_epoll_backend = {
	.name = "epoll",
	.native = false,
	.init = e_init,
	.start = e_start,
	.fini = e_fini,
	.arm = e_arm,
	.cancel = e_cancel,
	.poll = e_poll,
	.sleep = e_sleep,
	.kick = e_kick,
	.inflight = e_inflight,
};
