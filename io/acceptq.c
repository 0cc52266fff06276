/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * io/acceptq.c - multishot accept for listening sockets marked
 * WEFT_FD_MULTISHOT (weft_fd_set_flags): one accept (IORING_ACCEPT_MULTISHOT,
 * 5.19+) stays armed on one worker, its owner, and every connection it
 * accepts is handed to a waiting weft_accept or queued for the next one.
 * Per connection this saves the SQE, the accept attempt that finds nothing
 * and the poll arm/disarm of a plain weft_accept.
 *
 * Opt-in for the reason stream.c gives: the armed accept holds its own
 * file reference, so the listener must be closed with weft_close, which
 * tears the multishot down first. The record is modelled on stream.c's
 * (an fd-indexed table, found by fd, completions routed by user_data).
 *
 * What it guarantees:
 *  - Each accepted fd goes to exactly one caller: the completion handler
 *    hands it to the first waiting weft_accept under that waiter's claim
 *    (DESIGN.md, "a primitive that hands something over"); if the waiter
 *    gave up first (cancelled, timed out) the fd goes to the next one or
 *    to the queue. No herd: one waiter is woken per fd.
 *  - Accepted fds are close-on-exec (SOCK_CLOEXEC, as plain weft_accept).
 *    The multishot cannot give per-connection addresses; weft_accept fills
 *    addr/len with getpeername() (len 0 if the peer is already gone).
 *  - The queue is bounded: at ACCEPTQ_MAX queued fds the multishot is
 *    cancelled and the kernel's backlog does the flow control; the next
 *    weft_accept that finds the queue empty arms it again. (Completions
 *    already on their way when the cancel lands still queue: the queue
 *    grows past the bound then, never drops an fd.)
 *  - The end of a multishot with an error (EMFILE, ENFILE, ENOMEM, ...) is
 *    returned once, by the next weft_accept, as a plain accept would
 *    return it; the one after arms again, so a server that ran out of fds
 *    serves again once fds are free. -ECANCELED, -EINTR and -EAGAIN ends
 *    just mean "arm again". A first arm that fails with -EINVAL without
 *    ever accepting means the kernel has no multishot accept: the record
 *    falls back to the plain path for good.
 *  - Nothing leaks: an fd accepted after the record died (weft_close,
 *    stale) is closed by the completion handler; weft_close and runtime
 *    teardown close the queued ones (and io/uring.c's fini the fds of
 *    completions nobody reaped).
 *
 * The protocol, as steps:
 *  1. weft_accept: take a reference on the record (inside an fd use,
 *     weft__io_fd_enter), then under its spinlock: a queued fd, the
 *     stored error, dead, plain, in that order; else enqueue as a waiter
 *     (waitq.h) and park. The publish callback, on the worker w the task
 *     parked on, arms the multishot on w if none is armed (counted in on
 *     the fd); w becomes its owner.
 *  2. The owner's reap hands each completion to weft__io_acceptq_cqe():
 *     under the spinlock, an fd goes to the first waiter whose claim
 *     succeeds (status = the fd), else to the queue; at ACCEPTQ_MAX the
 *     handler asks for a cancel with the backend's cancel_try (submit
 *     only: a completion handler must not reap), retried on a later
 *     completion if no SQE could be had. The last completion (no
 *     IORING_CQE_F_MORE) unarms: its error goes to the first waiter (or is
 *     stored), and one more waiter is woken to arm again (the baton).
 *  3. A waiter ended by a cancellation or deadline unlinks itself and
 *     takes nothing; if nothing is armed it passes the baton on, so the
 *     waiters left behind are never stranded with nothing armed.
 *  4. weft_close: take the record out of the fd table (exclusive, under
 *     weft__io_fd_lock), mark it dead, close its queued fds, end its
 *     waiters with -ECANCELED; if the multishot is armed and the caller is
 *     a task of the record's runtime, move to the owner, cancel it there
 *     and wait, uncancellably, for its last completion; only then
 *     close(2). From elsewhere (a thread outside the runtime) the close(2)
 *     comes first and the close protocol (reactor.c), posted to the
 *     record's runtime (weft__io_close_end_in()), cancels the multishot;
 *     its last completion frees the record.
 *  5. weft_poll for POLLIN: a queued fd or a stored error is readable
 *     (the socket no longer shows them); else wait as a poller, which
 *     takes nothing: the publish arms the multishot as for a waiter, and
 *     every fd that goes to the queue, a stored error, the end of the
 *     record, or the baton with no waiter left wake the pollers to look
 *     again.
 * References: the fd table, an armed multishot, each caller in step 1 or 5,
 * a closer. The record is freed when the last goes (acq_put).
 *
 * Lock order: fd use (weft__io_fd_enter) before the record's spinlock;
 * nothing is armed, submitted or closed under the spinlock.
 *
 * Not served (the flag stays a hint, weft_accept its plain path): the
 * epoll backend; the TSan build (fds made by io_uring are invisible to
 * TSan: backend.h, weft__io_fds_via_syscalls); fds above 65535; kernels
 * without multishot accept (the -EINVAL probe above).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/backend.h"
#include "runtime/waitq.h"

#define ACCEPTQ_FDS 65536u
#define ACCEPTQ_MAX 64u /* queued fds before the multishot is cancelled */

struct acceptq {
	struct weft__io_op op; /* the multishot accept; in flight iff armed */
	_Atomic uint32_t lock; /* spinlock over the fields below */
	_Atomic unsigned refs; /* see the top */
	struct weft__runtime *rt; /* set at creation */
	ino_t ino; /* the listener's inode (set_flags twice) */
	int fd;
	bool armed; /* op in flight on op.owner */
	bool dead; /* out of the table: no new arm; late fds are closed */
	bool plain; /* no multishot accept here: plain path for good */
	bool accepted; /* the multishot has delivered an fd (probe) */
	bool cancel_sent; /* the bound's cancel is prepared (owner only) */
	bool has_err; /* err waits for the next caller */
	int err;
	unsigned fini_drop; /* weft__io_acceptq_rt_fini's references */
	int *q; /* FIFO ring of fds: qhead, qlen of qcap */
	unsigned qcap, qhead, qlen;
	struct weft__waitq waiters, closers;
	struct weft__waitq pollers; /* weft_poll for POLLIN (step 5) */
	struct weft__list all; /* all_queues, under all_lock */
};

static _Atomic(struct acceptq *) table[ACCEPTQ_FDS];
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static struct weft__list all_queues = { &all_queues, &all_queues };

static void acq_free(struct acceptq *a)
{
	pthread_mutex_lock(&all_lock);
	weft__list_del(&a->all);
	pthread_mutex_unlock(&all_lock);
	weft__free(a->q);
	weft__free(a);
}

static void acq_put(struct acceptq *a)
{
	/* acq_rel: the last user's writes happen before the free */
	if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
		acq_free(a);
}

/* A reference on @fd's record, or NULL. Context: any thread. */
static struct acceptq *acq_get(int fd)
{
	struct acceptq *a;

	weft__io_fd_enter(fd);
	/* acquire: pairs with the release store in set_flags */
	a = atomic_load_explicit(&table[fd], memory_order_acquire);
	if (a)
		atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
	weft__io_fd_exit(fd);
	return a;
}

/* Context: under a->lock. */
static bool q_push(struct acceptq *a, int fd)
{
	if (a->qlen == a->qcap) {
		unsigned cap = a->qcap ? 2 * a->qcap : ACCEPTQ_MAX;
		int *n = weft__alloc(cap * sizeof(*n));
		if (!n)
			return false;
		for (unsigned i = 0; i < a->qlen; i++)
			n[i] = a->q[(a->qhead + i) % a->qcap];
		weft__free(a->q);
		a->q = n;
		a->qcap = cap;
		a->qhead = 0;
	}
	a->q[(a->qhead + a->qlen++) % a->qcap] = fd;
	return true;
}

/* Context: under a->lock, a->qlen != 0. */
static int q_pop(struct acceptq *a)
{
	int fd = a->q[a->qhead];

	a->qhead = (a->qhead + 1) % a->qcap;
	a->qlen--;
	return fd;
}

/* Give @status (an fd or an error) to the first waiter still waiting.
 * Return: false if there was none. Context: under a->lock. */
static bool hand(struct acceptq *a, int status, struct weft__wakeups *wk)
{
	struct weft__waiter *r;

	while ((r = weft__waitq_pop(&a->waiters))) {
		r->status = status;
		r->granted = true;
		if (weft__waiter_claim(r, wk))
			return true;
		/* it gave up first: the next one, or the caller keeps it */
	}
	return false;
}

/* Claim every waiter of @q with @status (@granted false: go round
 * again). Context: under a->lock. */
static void claim_all(struct weft__waitq *q, int status, bool granted,
		      struct weft__wakeups *wk)
{
	struct weft__waiter *r;

	while ((r = weft__waitq_pop(q))) {
		r->status = status;
		r->granted = granted;
		weft__waiter_claim(r, wk);
	}
}

/* Wake one waiter to arm the multishot again (the baton); with no waiter
 * left, the pollers (step 5), who arm it as well. Context: under a->lock. */
static void pass_baton(struct acceptq *a, struct weft__wakeups *wk)
{
	struct weft__waiter *r;

	while ((r = weft__waitq_pop(&a->waiters))) {
		r->status = 0;
		r->granted = false;
		if (weft__waiter_claim(r, wk))
			return;
	}
	claim_all(&a->pollers, 0, false, wk);
}

/* ------------------------------------------------------------ callers */

/* Step 1's publish: arm on this worker if nothing is armed and a waiter
 * needs it. Context: w's scheduler stack. */
static void waiter_publish(struct weft__task *t, struct weft__wait *wt)
{
	struct acceptq *a = wt->obj;
	struct weft__worker *w = weft__worker_current();
	bool arm = false;

	(void)t;
	weft__io_fd_enter(a->fd);
	weft__spin_lock(&a->lock);
	if (!a->armed && !a->dead && !a->plain && !a->qlen && !a->has_err &&
	    (!weft__waitq_empty(&a->waiters) ||
	     !weft__waitq_empty(&a->pollers))) {
		arm = true;
		a->armed = true;
		a->cancel_sent = false;
		a->op.owner = w;
		atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
	}
	weft__spin_unlock(&a->lock);
	if (arm)
		weft__io_arm(w, &a->op);
	weft__io_fd_exit(a->fd);
}

/*
 * Called under a->lock: link @t on @list (the waiters or the pollers),
 * drop the lock and park (steps 1 and 5). Return: 0 woken by a source
 * (@granted and @status as it left them); else the wait ended by a
 * cancellation or deadline, unlinked, the baton passed on if nothing is
 * armed (step 3): its error, or 0 if the caller should look again.
 */
static int wait_turn(struct weft__task *t, struct acceptq *a,
		     struct weft__waitq *list, bool *granted, int *status)
{
	struct weft__wakeups wk;
	struct weft__waiter wr;
	struct weft__wait wt;
	int reason;

	weft__waiter_enqueue(list, &wr, t, true, false, false);
	weft__spin_unlock(&a->lock);
	wt.publish = waiter_publish;
	wt.obj = a;
	wt.word = wr.word;
	wt.deadline_ns = weft__wait_deadline(t);
	weft__set_wait_kind(t, WEFT__WK_IO); /* for dumps */
	reason = weft__wait_park(t, &wt);
	if (reason == WEFT__WAKE_SOURCE) {
		*granted = wr.granted;
		*status = wr.status;
		return 0;
	}
	/* whoever unlinked us took back what it gave */
	wk.n = 0;
	weft__spin_lock(&a->lock);
	if (wr.linked)
		weft__waitq_remove(list, &wr);
	if (!a->armed && !a->dead)
		pass_baton(a, &wk);
	weft__spin_unlock(&a->lock);
	weft__wakeups_flush(&wk);
	*granted = false;
	return weft__wait_error(t, reason);
}

/* An fd, an error, or 1 with *plain: take the plain path. */
static int take(struct weft__task *t, struct acceptq *a, bool *plain)
{
	bool granted;
	int r;

	for (;;) {
		weft__spin_lock(&a->lock);
		if (a->qlen) {
			r = q_pop(a);
			weft__spin_unlock(&a->lock);
			return r;
		}
		if (a->has_err) {
			a->has_err = false;
			r = a->err;
			weft__spin_unlock(&a->lock);
			return r;
		}
		if (a->dead) {
			weft__spin_unlock(&a->lock);
			return -EBADF;
		}
		if (a->plain) {
			weft__spin_unlock(&a->lock);
			*plain = true;
			return 1;
		}
		int err = wait_turn(t, a, &a->waiters, &granted, &r);
		if (err)
			return err;
		if (granted)
			return r;
		/* the baton, or a wait that ended early: go round */
	}
}

int weft__io_acceptq_accept(struct weft__task *t, int fd, struct sockaddr *addr,
			    socklen_t *len, bool *handled)
{
	struct acceptq *a;
	bool plain = false;
	int r;

	*handled = false;
	if ((unsigned)fd >= ACCEPTQ_FDS ||
	    !atomic_load_explicit(&table[fd], memory_order_relaxed))
		return 0;
	a = acq_get(fd);
	if (!a)
		return 0;
	r = weft__pending_error(t);
	if (!r)
		r = take(t, a, &plain);
	acq_put(a);
	if (plain)
		return 0;
	*handled = true;
	if (r >= 0 && addr) {
		/* The multishot gives no address: ask the socket. A peer
		 * that is gone already (reset) leaves none: len 0. */
		socklen_t l = *len;
		if (getpeername(r, addr, &l) < 0)
			l = 0;
		*len = l;
	}
	return r;
}

/* Step 5: POLLIN's share of @events (the caller's), when a connection or
 * an error is queued; else wait as a poller. 1 with *plain: the plain
 * path decides (the record died, or has no multishot). */
static int poll_wait(struct weft__task *t, struct acceptq *a, short in,
		     bool *plain)
{
	bool granted;
	int status;

	for (;;) {
		weft__spin_lock(&a->lock);
		if (a->qlen || a->has_err) {
			weft__spin_unlock(&a->lock);
			return in;
		}
		if (a->dead || a->plain) {
			weft__spin_unlock(&a->lock);
			*plain = true;
			return 1;
		}
		int err = wait_turn(t, a, &a->pollers, &granted, &status);
		if (err)
			return err;
		/* look again */
	}
}

int weft__io_acceptq_poll(struct weft__task *t, int fd, short events,
			  bool *handled)
{
	const short in = events & (POLLIN | POLLRDNORM);
	struct acceptq *a;
	bool plain = false;
	int r;

	*handled = false;
	if (!in || (unsigned)fd >= ACCEPTQ_FDS ||
	    !atomic_load_explicit(&table[fd], memory_order_relaxed))
		return 0;
	a = acq_get(fd);
	if (!a)
		return 0;
	if (a->rt != t->rt) {
		/* another runtime's record: its fds are not ours to see */
		acq_put(a);
		return 0;
	}
	/* What the socket itself shows (an error, a hang-up, other events
	 * asked for) counts too, at the start: a listener has little else. */
	struct pollfd p = { .fd = fd, .events = events & ~in };
	short now = 0;
	if (poll(&p, 1, 0) == 1)
		now = p.revents;
	if (now & POLLNVAL) {
		acq_put(a);
		return 0;
	}
	r = weft__pending_error(t);
	if (!r && !now)
		r = poll_wait(t, a, in, &plain);
	else if (!r) {
		weft__spin_lock(&a->lock);
		r = now | ((a->qlen || a->has_err) ? in : 0);
		weft__spin_unlock(&a->lock);
	}
	acq_put(a);
	if (plain)
		return 0;
	*handled = true;
	return r;
}

/* ------------------------------------------------------------ completions */

unsigned weft__io_acceptq_cqe(struct weft__worker *w, struct weft__io_op *op,
			      int res, bool more)
{
	struct acceptq *a = weft__container_of(op, struct acceptq, op);
	struct weft__wakeups wk;
	int close_fd = -1;
	bool cancel;

	wk.n = 0;
	weft__spin_lock(&a->lock);
	if (res >= 0) {
		a->accepted = true;
		if (a->dead) {
			close_fd = res; /* nobody will ever take it */
		} else if (!hand(a, res, &wk)) {
			if (!q_push(a, res)) {
				/* No memory to queue it: the connection is
				 * dropped, and the next caller told so. */
				close_fd = res;
				a->has_err = true;
				a->err = -ENOMEM;
			}
			claim_all(&a->pollers, 0, false, &wk);
		}
	}
	if (!more) {
		a->armed = false;
		weft__io_retire(w, op);
		if (!a->dead) {
			if (res == -EINVAL && !a->accepted) {
				/* the probe: no multishot accept here */
				a->plain = true;
				claim_all(&a->waiters, 0, false, &wk);
			} else if (res < 0 && res != -ECANCELED &&
				   res != -EINTR && res != -EAGAIN) {
				/* (a plain accept retries those three; here
				 * the next caller arms again) */
				if (!hand(a, res, &wk)) {
					a->has_err = true;
					a->err = res;
					claim_all(&a->pollers, 0, false, &wk);
				}
			}
			if (!a->plain)
				pass_baton(a, &wk);
		} else {
			claim_all(&a->closers, 0, true, &wk);
		}
	}
	weft__spin_unlock(&a->lock);
	if (close_fd >= 0)
		close(close_fd);
	for (unsigned i = 0; i < wk.n; i++)
		weft__io_ready(w, wk.t[i]);
	if (more) {
		/* Still armed, so still ours: only this thread ends it. The
		 * bound: ask for a cancel; with no SQE to be had without
		 * reaping, the next completion asks again. */
		weft__spin_lock(&a->lock);
		cancel = !a->dead && !a->cancel_sent && a->qlen >= ACCEPTQ_MAX;
		weft__spin_unlock(&a->lock);
		if (cancel && w->rt->io_backend->cancel_try(w, op)) {
			weft__spin_lock(&a->lock);
			a->cancel_sent = true;
			weft__spin_unlock(&a->lock);
		}
	} else {
		acq_put(a); /* the armed multishot's reference */
	}
	return wk.n;
}

/* ------------------------------------------------------------ teardown */

/* Out of the table: mark dead, end the waiters with @status, close the
 * queued fds. Return: whether the multishot is still armed. Context: any
 * thread. */
static bool acq_kill(struct acceptq *a, int status)
{
	struct weft__wakeups wk;
	unsigned qhead, qlen, qcap;
	int *q;
	bool armed;

	wk.n = 0;
	weft__spin_lock(&a->lock);
	a->dead = true;
	q = a->q;
	qhead = a->qhead;
	qlen = a->qlen;
	qcap = a->qcap;
	a->q = NULL;
	a->qcap = a->qhead = a->qlen = 0;
	claim_all(&a->waiters, status, true, &wk);
	claim_all(&a->pollers, 0, false, &wk);
	armed = a->armed;
	weft__spin_unlock(&a->lock);
	weft__wakeups_flush(&wk);
	for (unsigned i = 0; i < qlen; i++)
		close(q[(qhead + i) % qcap]);
	weft__free(q);
	return armed;
}

/* Cancel the multishot on its owner and wait for its last completion. */
static void wait_unarmed(struct weft__task *t, struct acceptq *a)
{
	weft__io_ms_wait_unarmed(t, &a->op, &a->lock, &a->armed,
				 &a->closers);
}

static struct acceptq *acq_detach(int fd)
{
	struct acceptq *a;

	if ((unsigned)fd >= ACCEPTQ_FDS ||
	    !atomic_load_explicit(&table[fd], memory_order_relaxed))
		return NULL;
	/* exclusive: every caller that took a reference did so before */
	weft__io_fd_lock(fd);
	a = atomic_exchange_explicit(&table[fd], NULL, memory_order_acq_rel);
	weft__io_fd_unlock(fd);
	return a;
}

struct weft__runtime *weft__io_acceptq_close(int fd)
{
	struct acceptq *a = acq_detach(fd);
	struct weft__runtime *rt = NULL;
	struct weft__task *t;

	if (!a)
		return NULL;
	if (acq_kill(a, -ECANCELED)) {
		t = weft__task_current();
		/* only a task of the record's runtime can get onto its
		 * owner; anyone else has the close protocol cancel it */
		if (t && t->rt == a->rt)
			wait_unarmed(t, a);
		else
			rt = a->rt;
	}
	acq_put(a); /* the table's reference */
	return rt;
}

/* @a, already out of the table, belonged to a listener of number @fd that
 * was closed with close(2) against the promise: drop it. */
static void drop_stale(struct acceptq *a, int fd)
{
	weft__report("fd %d was closed without weft_close() while marked "
		     "WEFT_FD_MULTISHOT; its accept queue is dropped",
		     fd);
	if (acq_kill(a, -EBADF)) {
		/* cancel what is still armed on the old file of this number,
		 * on the record's own workers even from a foreign thread */
		weft__io_close_begin(fd);
		weft__io_close_end_in(fd, a->rt);
	}
	acq_put(a);
}

void weft__io_acceptq_forget(int fd)
{
	struct acceptq *a = acq_detach(fd);

	if (a)
		drop_stale(a, fd);
}

void weft__io_acceptq_rt_fini(struct weft__runtime *rt)
{
	struct weft__list gone = { &gone, &gone }, *l, *n;

	/* The workers have stopped: no caller, no completion runs. The rings
	 * are closed next, which cancels what is still armed (that
	 * multishot's reference is dropped here); fds of completions nobody
	 * reaped are closed there (io/uring.c fini). A weft_close() from a
	 * thread outside the runtime may hold the record (it took it out of
	 * the table first): it is emptied, not freed, under it (as
	 * stream.c's). */
	pthread_mutex_lock(&all_lock);
	for (l = all_queues.next; l != &all_queues; l = n) {
		struct acceptq *a = weft__container_of(l, struct acceptq, all);
		struct acceptq *exp = a;
		n = l->next;
		if (a->rt != rt)
			continue;
		unsigned drop = atomic_compare_exchange_strong_explicit(
			&table[a->fd], &exp, NULL, memory_order_acq_rel,
			memory_order_relaxed);
		weft__spin_lock(&a->lock);
		a->dead = true;
		/* (closed under the lock, an exception: the workers have
		 * stopped, only a foreign closer could wait on it) */
		while (a->qlen)
			close(q_pop(a));
		drop += a->armed;
		a->armed = false;
		weft__spin_unlock(&a->lock);
		weft__list_del(&a->all);
		a->fini_drop = drop;
		weft__list_add_tail(&gone, &a->all);
	}
	pthread_mutex_unlock(&all_lock);
	while (gone.next != &gone) {
		struct acceptq *a =
			weft__container_of(gone.next, struct acceptq, all);
		unsigned drop = a->fini_drop;
		weft__list_del(&a->all); /* acq_free's del is then a no-op */
		while (drop--)
			acq_put(a);
	}
}

/* ------------------------------------------------------------ the flag */

bool weft__io_acceptq_listener(int fd)
{
	int on = 0;
	socklen_t sl = sizeof(on);

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &sl) == 0 && on;
}

int weft__io_acceptq_set_flags(struct weft__task *t, int fd, unsigned flags,
			       ino_t ino)
{
	const struct weft__io_backend *be = t->rt->io_backend;
	struct acceptq *a, *old;

	/* A hint: where it cannot be served, the plain path stays. */
	if (!flags || (unsigned)fd >= ACCEPTQ_FDS || !be->accept_multishot ||
	    weft__io_fds_via_syscalls())
		return 0;
	a = weft__calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	/* The bound's worth up front: the completion handler allocates
	 * only for fds already on their way when its cancel lands. */
	a->q = weft__alloc(ACCEPTQ_MAX * sizeof(*a->q));
	if (!a->q) {
		weft__free(a);
		return -ENOMEM;
	}
	a->qcap = ACCEPTQ_MAX;
	a->rt = t->rt;
	a->fd = fd;
	a->ino = ino;
	atomic_init(&a->refs, 1);
	a->op.opcode = WEFT__OP_ACCEPT_MULTISHOT;
	a->op.fd = fd;
	a->op.off = -1;
	pthread_mutex_lock(&all_lock);
	weft__list_add_tail(&all_queues, &a->all);
	pthread_mutex_unlock(&all_lock);
	weft__io_fd_lock(fd);
	old = atomic_load_explicit(&table[fd], memory_order_relaxed);
	if (old && old->ino == a->ino && old->rt == a->rt) {
		weft__io_fd_unlock(fd);
		acq_free(a);
		return 0; /* already set */
	}
	/* release: the record's fields before it is found (acq_get) */
	atomic_store_explicit(&table[fd], a, memory_order_release);
	weft__io_fd_unlock(fd);
	if (old)
		drop_stale(old, fd);
	return 0;
}

#ifdef WEFT_TEST_HOOKS
WEFT_API int weft_test_io_acceptq_state(int fd, unsigned *queued, bool *armed,
					bool *plain)
{
	struct acceptq *a;

	if (fd < 0 || (unsigned)fd >= ACCEPTQ_FDS || !(a = acq_get(fd)))
		return -ENOENT;
	weft__spin_lock(&a->lock);
	if (queued)
		*queued = a->qlen;
	if (armed)
		*armed = a->armed;
	if (plain)
		*plain = a->plain;
	weft__spin_unlock(&a->lock);
	acq_put(a);
	return 0;
}
#endif
