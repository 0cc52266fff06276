/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * io/stream.c - multishot recv for stream sockets marked WEFT_FD_MULTISHOT
 * (weft_fd_set_flags): one recv stays armed in the kernel for the life of
 * the fd and fills the worker's provided buffers (io/uring.c); weft_recv
 * copies out of them. Per request this saves the SQE, the kernel's recv
 * attempt and its poll arm/disarm of a plain weft_recv.
 *
 * Why opt-in: an armed multishot holds its own file reference. After a
 * plain close(2) the socket would live on and keep delivering, and if the
 * fd number were reused, readers of the new socket must never see the old
 * one's bytes. So only fds the user promises to close with weft_close get
 * a stream, and weft_close tears it down first. Bytes are routed by the
 * stream record (user_data), never by fd number, so even a broken promise
 * cannot hand old bytes to a new socket made by weft (weft_accept/socket/
 * open drop a stale stream of the number they return: stream_forget).
 *
 * What a stream guarantees:
 *  - Order: completions are handled in CQ order (io/uring.c reap's
 *    forward pass) and appended to the stream's FIFO of chunks; readers
 *    consume from its head; a short weft_recv leaves the rest of a chunk.
 *  - Nothing is lost to a cancellation: the kernel writes only into
 *    provided buffers, never into the reader's, so a cancelled or timed
 *    out reader just leaves; bytes that come later stay queued.
 *  - ENOBUFS (the worker's ring is empty) ends the multishot; the stream
 *    is flagged fallback, and the next weft_recv is one plain recv into
 *    the caller's buffer (the multishot is not armed then, so order
 *    holds); the one after re-arms. No spin: an arm happens only for a
 *    reader that found nothing queued.
 *  - The end of a multishot without data (EOF: 0, an error) is stored as
 *    the stream's final result and returned once the queue is drained,
 *    as a plain recv would return it; the next weft_recv arms again and
 *    the kernel says again what it says.
 *
 * The protocol, as steps:
 *  1. weft_recv: take a reference on the stream (inside an fd use,
 *     weft__io_fd_enter, so a concurrent weft_close cannot free it),
 *     then under its spinlock: queued bytes, the final result, dead,
 *     fallback, in that order; else enqueue as a reader (waitq.h) and
 *     park. The publish callback, on the worker w the task parked on,
 *     arms the multishot on w if none is armed (counted in on the fd, so
 *     wholly before or after a close(2)); w becomes its owner.
 *  2. The owner's reap hands each completion to weft__io_stream_cqe():
 *     under the spinlock, append the chunk (or give the buffer back when
 *     the stream is dead), record the end, and claim every reader; a
 *     claimed reader goes back to step 1.
 *  3. Consumed buffers go back to their worker's ring from whichever
 *     thread consumed them (backend buf_put).
 *  4. weft_close: take the stream out of the fd table (exclusive, under
 *     weft__io_fd_lock), mark it dead, give its queued buffers back, end
 *     its readers with -ECANCELED; if the multishot is armed and the
 *     caller is a task, move to the owner, cancel it there and wait,
 *     uncancellably, for its last completion (no F_MORE); only then
 *     close(2). From a thread outside the runtime the close(2) comes
 *     first and the close protocol (reactor.c), posted to the stream's
 *     runtime's workers (weft__io_close_end_in()), cancels the multishot;
 *     its last completion frees the stream.
 * References: the fd table, an armed multishot, each reader in step 1, a
 * closer. The record is freed when the last goes (stream_put).
 *
 * Lock order: fd use (weft__io_fd_enter) before the stream's spinlock;
 * nothing is armed or submitted under the spinlock (an arm may reap).
 *
 * Every read call comes here (weft__io_stream_read: an iovec sink, so
 * weft_recv, weft_read, weft_readv and weft_recvmsg share one path).
 *
 * Flow control: a chunk that leaves STREAM_MAX_CHUNKS unread queues an
 * ASYNC_CANCEL of the multishot (submit-only: we are inside a reap); its
 * last completion ends it, and the next reader to find the queue empty
 * re-arms (step 1). Meanwhile the socket's buffer fills and TCP holds the
 * sender back, instead of one idle stream draining the worker's ring.
 *
 * weft_poll (stream_poll): the socket no longer shows bytes the multishot
 * took, so POLLIN (with POLLRDHUP) waits as a reader (it arms like one,
 * and is woken by every chunk) but takes nothing. Other events besides
 * need the socket itself: the poller takes a hold (readers then do not
 * arm; once the multishot has ended they read plainly, never before, so
 * bytes it still takes come first), cancels the multishot and waits for
 * its last completion (wait_unarmed: closers are claimed whenever the
 * multishot ends), looks at the queue once more, then polls the socket.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "io/backend.h"
#include "runtime/waitq.h"

#define STREAM_FDS 65536u
/* Chunks a stream may hold unread before its multishot is cancelled (so
 * TCP flow control, not the worker's shared buffer ring, holds back a
 * sender nobody reads); the next reader to find the queue empty re-arms. */
#define STREAM_MAX_CHUNKS 16u

/* One received chunk in a provided buffer of worker w's ring. */
struct chunk {
	char *addr;
	struct weft__worker *w;
	uint32_t len, off; /* bytes in it; bytes consumed */
	unsigned bid;
};

struct weft__io_stream {
	struct weft__io_op op; /* the multishot recv; in flight iff armed */
	_Atomic uint32_t lock; /* spinlock over the fields below */
	_Atomic unsigned refs; /* see the top */
	struct weft__runtime *rt; /* set at creation */
	ino_t ino; /* the socket's inode (set_flags twice) */
	int fd;
	bool armed; /* op in flight on op.owner */
	bool dead; /* out of the table: no new arm, no new chunk */
	bool has_final; /* final_res waits behind the queue */
	bool fallback; /* next read: one plain recv (ENOBUFS) */
	bool broken; /* bytes were lost (no memory): final_res forever */
	bool throttled; /* a cancel is queued: too many chunks unread */
	unsigned hold; /* pollers watching the socket itself: no arm */
	unsigned fini_drop; /* weft__io_stream_rt_fini's references */
	int final_res;
	struct chunk *q; /* FIFO ring: qhead, qlen of qcap */
	unsigned qcap, qhead, qlen;
	struct weft__waitq readers, closers;
	struct weft__list all; /* all_streams, under all_lock */
};

static _Atomic(struct weft__io_stream *) table[STREAM_FDS];
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static struct weft__list all_streams = { &all_streams, &all_streams };

static void stream_free(struct weft__io_stream *s)
{
	pthread_mutex_lock(&all_lock);
	weft__list_del(&s->all);
	pthread_mutex_unlock(&all_lock);
	weft__free(s->q);
	weft__free(s);
}

static void stream_put(struct weft__io_stream *s)
{
	/* acq_rel: the last user's writes happen before the free */
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		stream_free(s);
}

/* A reference on @fd's stream, or NULL. Context: any thread. */
static struct weft__io_stream *stream_get(int fd)
{
	struct weft__io_stream *s;

	weft__io_fd_enter(fd);
	/* acquire: pairs with the release store in weft_fd_set_flags() */
	s = atomic_load_explicit(&table[fd], memory_order_acquire);
	if (s)
		atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	weft__io_fd_exit(fd);
	return s;
}

static bool q_push(struct weft__io_stream *s, struct chunk c)
{
	if (s->qlen == s->qcap) {
		unsigned cap = s->qcap ? 2 * s->qcap : 8;
		struct chunk *n = weft__alloc(cap * sizeof(*n));
		if (!n)
			return false;
		for (unsigned i = 0; i < s->qlen; i++)
			n[i] = s->q[(s->qhead + i) % s->qcap];
		weft__free(s->q);
		s->q = n;
		s->qcap = cap;
		s->qhead = 0;
	}
	s->q[(s->qhead + s->qlen++) % s->qcap] = c;
	return true;
}

/* Where the next byte read goes: @iov[@n], at @off in iov[@i]. */
struct sink {
	const struct iovec *iov;
	int n, i;
	size_t off;
	bool discard; /* MSG_TRUNC: count, do not copy */
};

/* Copy up to @len queued bytes into @k; consumed buffers go back to their
 * rings unless @peek. A bad buffer (*@fault = true) stops the copy: the
 * chunk it was in stays queued whole. Context: under s->lock. */
static size_t consume(struct weft__io_stream *s, struct sink *k, size_t len,
		      bool peek, bool *fault)
{
	size_t done = 0;
	unsigned i = 0;

	while (done < len && i < s->qlen && !*fault) {
		struct chunk *c = &s->q[(s->qhead + i) % s->qcap];
		size_t n = c->len - c->off;
		if (n > len - done)
			n = len - done;
		if (!k->discard) {
			/* into the iovecs, skipping empty ones */
			for (size_t m = 0; m < n;) {
				const struct iovec *v = &k->iov[k->i];
				size_t room = v->iov_len - k->off;
				if (!room) {
					k->i++;
					k->off = 0;
					continue;
				}
				if (room > n - m)
					room = n - m;
				if (weft__copy_out((char *)v->iov_base + k->off,
						   c->addr + c->off + m,
						   room)) {
					*fault = true;
					break;
				}
				k->off += room;
				m += room;
			}
			if (*fault)
				break;
		}
		done += n;
		if (peek) {
			i++;
			continue;
		}
		c->off += (uint32_t)n;
		if (c->off == c->len) {
			c->w->rt->io_backend->buf_put(c->w, c->bid);
			s->qhead = (s->qhead + 1) % s->qcap;
			s->qlen--;
		}
	}
	return done;
}

/* Give every queued buffer back. Context: under s->lock. */
static void q_drop(struct weft__io_stream *s)
{
	while (s->qlen) {
		struct chunk *c = &s->q[s->qhead];
		c->w->rt->io_backend->buf_put(c->w, c->bid);
		s->qhead = (s->qhead + 1) % s->qcap;
		s->qlen--;
	}
}

/* Claim every waiter of @q with @status. Context: under s->lock. */
static void claim_all(struct weft__waitq *q, int status,
		      struct weft__wakeups *wk)
{
	struct weft__waiter *r;

	while ((r = weft__waitq_pop(q))) {
		r->status = status;
		weft__waiter_claim(r, wk);
	}
}

static void wait_unarmed(struct weft__task *t, struct weft__io_stream *s);

/* ------------------------------------------------------------ readers */

/* Step 1's publish: arm on this worker if nothing is armed and nothing
 * would end the wait anyway. Context: w's scheduler stack. */
static void reader_publish(struct weft__task *t, struct weft__wait *wt)
{
	struct weft__io_stream *s = wt->obj;
	struct weft__worker *w = weft__worker_current();
	const struct weft__io_backend *be = w->rt->io_backend;
	struct weft__wakeups wk;
	bool arm = false;

	(void)t;
	wk.n = 0;
	weft__io_fd_enter(s->fd);
	weft__spin_lock(&s->lock);
	if (!s->armed && !s->dead && !s->qlen && !s->has_final &&
	    !s->fallback && !weft__waitq_empty(&s->readers)) {
		if (!s->hold && be->ms_ready && be->ms_ready(w)) {
			arm = true;
			s->armed = true;
			s->op.owner = w;
			atomic_fetch_add_explicit(&s->refs, 1,
						  memory_order_relaxed);
		} else {
			/* no ring here, or a poller watches the socket:
			 * they read it directly (step 1) */
			if (!s->hold)
				s->fallback = true;
			claim_all(&s->readers, 0, &wk);
		}
	}
	weft__spin_unlock(&s->lock);
	if (arm)
		weft__io_arm(w, &s->op);
	weft__io_fd_exit(s->fd);
	weft__wakeups_flush(&wk);
}

/* Park @t as a reader of @s (enqueued by the caller, under the lock,
 * which this releases). Return: 0 to look again, or the error that ends
 * the read. */
static int reader_park(struct weft__task *t, struct weft__io_stream *s,
		       struct weft__waiter *wr)
{
	struct weft__wait wt;
	int reason;

	weft__spin_unlock(&s->lock);
	wt.publish = reader_publish;
	wt.obj = s;
	wt.word = wr->word;
	wt.deadline_ns = weft__wait_deadline(t);
	weft__set_wait_kind(t, WEFT__WK_IO); /* for dumps */
	reason = weft__wait_park(t, &wt);
	if (reason != WEFT__WAKE_SOURCE) {
		weft__spin_lock(&s->lock);
		if (wr->linked)
			weft__waitq_remove(&s->readers, wr);
		weft__spin_unlock(&s->lock);
		return weft__wait_error(t, reason);
	}
	return wr->status;
}

/* Return: bytes read, an error, or -EAGAIN: nothing read, nothing queued
 * and nothing armed (a fallback, a poller holding): one plain call. */
static ssize_t stream_read(struct weft__task *t, struct weft__io_stream *s,
			   struct sink *k, size_t len, int flags)
{
	bool peek = flags & MSG_PEEK, all = (flags & MSG_WAITALL) && !peek;
	struct weft__waiter wr;
	bool fault = false;
	size_t done = 0;
	int err;

	for (;;) {
		weft__spin_lock(&s->lock);
		if (s->qlen) {
			done += consume(s, k, len - done, peek, &fault);
			if (fault) {
				weft__spin_unlock(&s->lock);
				return done ? (ssize_t)done : -EFAULT;
			}
			if (!all || done == len) {
				weft__spin_unlock(&s->lock);
				return (ssize_t)done;
			}
		}
		if (s->has_final) {
			int r = s->final_res;
			if (!done && !peek && !s->broken)
				s->has_final = false;
			weft__spin_unlock(&s->lock);
			return done ? (ssize_t)done : r;
		}
		if (s->dead) {
			weft__spin_unlock(&s->lock);
			return done ? (ssize_t)done : -EBADF;
		}
		/* (With a hold, only once the multishot has ended: bytes it
		 * still takes must come first; its end claims us.) */
		if (s->fallback || (s->hold && !s->armed)) {
			if (!s->hold)
				s->fallback = false;
			weft__spin_unlock(&s->lock);
			/* nothing queued, nothing armed: order holds */
			return done ? (ssize_t)done : -EAGAIN;
		}
		weft__waiter_enqueue(&s->readers, &wr, t, true, false, false);
		err = reader_park(t, s, &wr);
		if (err < 0)
			return done ? (ssize_t)done : err;
	}
}

bool weft__io_is_stream(int fd)
{
	return fd >= 0 && (unsigned)fd < STREAM_FDS &&
	       atomic_load_explicit(&table[fd], memory_order_relaxed);
}

ssize_t weft__io_stream_read(struct weft__task *t, int fd,
			     const struct iovec *iov, int iovcnt, int flags,
			     bool *handled)
{
	struct weft__io_stream *s;
	struct sink k = { iov, iovcnt, 0, 0, false };
	size_t len = 0;
	ssize_t r;
	int err;

	*handled = false;
	if ((unsigned)fd >= STREAM_FDS ||
	    !atomic_load_explicit(&table[fd], memory_order_relaxed) ||
	    (flags & ~(MSG_PEEK | MSG_WAITALL | MSG_TRUNC)) || iovcnt < 0 ||
	    iovcnt > IOV_MAX || (!iov && iovcnt))
		return 0; /* the kernel says what it says about those */
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > SSIZE_MAX - len)
			return 0; /* -EINVAL from the kernel */
		len += iov[i].iov_len;
	}
	s = stream_get(fd);
	if (!s)
		return 0;
	if (s->rt != t->rt) {
		/* a stream serves the runtime that made it (its workers'
		 * buffers, its owner): another's tasks read plainly */
		stream_put(s);
		return 0;
	}
	k.discard = flags & MSG_TRUNC;
	err = weft__pending_error(t);
	if (err)
		r = err;
	else if (len == 0)
		r = 0;
	else
		r = stream_read(t, s, &k, len, flags);
	stream_put(s);
	if (r == -EAGAIN)
		return 0;
	*handled = true;
	return r;
}

/* ------------------------------------------------------------ poll */

#define POLL_READ (POLLIN | POLLRDNORM)

/* What a poll for @events sees of the queue. Context: under s->lock. */
static short queued_events(struct weft__io_stream *s, short events)
{
	short ev = 0;

	if (s->qlen || s->has_final)
		ev |= events & POLL_READ;
	if (!s->qlen && s->has_final) {
		if (s->final_res < 0)
			ev |= POLLERR;
		else
			ev |= events & POLLRDHUP;
	}
	return ev;
}

/* Add the events the socket itself shows for @events beyond reading. */
static int with_socket_events(int fd, short events, short ev)
{
	struct pollfd p = { fd, (short)(events & ~POLL_READ), 0 };

	if (p.events && poll(&p, 1, 0) > 0)
		ev |= p.revents & (short)~POLL_READ;
	return ev;
}

/*
 * weft_poll on a stream. Bytes the multishot took out of the socket are in
 * the queue, where the socket's own readiness no longer shows them:
 *  - POLLIN (with POLLRDHUP at most): wait as a reader (arming as one
 *    does) for the queue to hold something; it is not consumed.
 *  - anything else besides, or after a fallback: the socket is watched
 *    directly. A hold keeps readers from arming meanwhile (they read
 *    plainly once it has ended), the multishot is cancelled and waited
 *    for, then the queue
 *    is looked at once more, then a plain poll of the socket.
 */
static int stream_poll(struct weft__task *t, struct weft__io_stream *s,
		       short events)
{
	struct weft__waiter wr;
	bool dead;
	short ev;
	int err;

	for (;;) {
		weft__spin_lock(&s->lock);
		if ((ev = queued_events(s, events)))
			break;
		if (s->dead) {
			weft__spin_unlock(&s->lock);
			return -EBADF;
		}
		if (s->fallback || s->hold ||
		    (events & ~(POLL_READ | POLLRDHUP)))
			goto watch_socket;
		weft__waiter_enqueue(&s->readers, &wr, t, true, false, false);
		err = reader_park(t, s, &wr);
		if (err < 0)
			return err;
	}
	weft__spin_unlock(&s->lock);
	return with_socket_events(s->fd, events, ev);

watch_socket:
	s->hold++;
	weft__spin_unlock(&s->lock);
	wait_unarmed(t, s);
	weft__spin_lock(&s->lock);
	ev = queued_events(s, events);
	dead = s->dead;
	weft__spin_unlock(&s->lock);
	if (ev) {
		err = with_socket_events(s->fd, events, ev);
	} else if (dead) {
		err = -EBADF;
	} else {
		/* nothing queued, nothing armed, none will be: the socket
		 * shows everything */
		err = weft__io_poll_fd(t, s->fd, events);
	}
	weft__spin_lock(&s->lock);
	s->hold--;
	weft__spin_unlock(&s->lock);
	return err;
}

int weft__io_stream_poll(struct weft__task *t, int fd, short events,
			 bool *handled)
{
	struct weft__io_stream *s;
	int r;

	*handled = false;
	if ((unsigned)fd >= STREAM_FDS || !(events & POLL_READ) ||
	    !atomic_load_explicit(&table[fd], memory_order_relaxed))
		return 0;
	s = stream_get(fd);
	if (!s)
		return 0;
	if (s->rt != t->rt) {
		stream_put(s); /* as in weft__io_stream_read() */
		return 0;
	}
	*handled = true;
	r = weft__pending_error(t);
	if (!r)
		r = stream_poll(t, s, events);
	stream_put(s);
	return r;
}

/* ------------------------------------------------------------ completions */

unsigned weft__io_stream_cqe(struct weft__worker *w, struct weft__io_op *op,
			     int res, bool more, char *buf, unsigned bid)
{
	struct weft__io_stream *s =
		weft__container_of(op, struct weft__io_stream, op);
	const struct weft__io_backend *be = w->rt->io_backend;
	struct weft__wakeups wk;
	bool throttle = false;

	wk.n = 0;
	weft__spin_lock(&s->lock);
	if (buf) {
		struct chunk c = { buf, w, res > 0 ? (uint32_t)res : 0, 0,
				   bid };
		if (res <= 0 || s->dead || s->broken) {
			be->buf_put(w, bid);
		} else if (!q_push(s, c)) {
			/* No memory for the queue: these bytes cannot be
			 * kept. The stream fails for good (every later recv,
			 * once the bytes before the gap are read, returns
			 * -ENOMEM) rather than go on past a silent gap. */
			be->buf_put(w, bid);
			s->broken = true;
			s->has_final = true;
			s->final_res = -ENOMEM;
		}
	}
	if (!more) {
		s->armed = false;
		weft__io_retire(w, op);
		if (!buf && !s->dead && !s->broken) {
			if (res == -ENOBUFS) {
				s->fallback = true;
			} else if (res != -ECANCELED && res != -EAGAIN &&
				   res != -EINTR) {
				/* (a plain recv retries those three; here
				 * the next reader re-arms) */
				s->has_final = true;
				s->final_res = res;
			}
		}
	}
	if (!more) {
		s->throttled = false;
	} else if (s->qlen >= STREAM_MAX_CHUNKS && !s->throttled &&
		   !s->dead) {
		/* Nobody reads: stop taking the worker's buffers (the
		 * multishot's last completion clears the mark). */
		s->throttled = throttle = true;
	}
	if (!s->armed)
		claim_all(&s->closers, 0, &wk); /* weft_close, a poller */
	if (!s->dead)
		claim_all(&s->readers, 0, &wk);
	weft__spin_unlock(&s->lock);
	/* Still armed (more), so op stays ours. No SQE free now: try again
	 * at the next chunk. */
	if (throttle && !be->cancel_try(w, op)) {
		weft__spin_lock(&s->lock);
		s->throttled = false;
		weft__spin_unlock(&s->lock);
	}
	for (unsigned i = 0; i < wk.n; i++)
		weft__io_ready(w, wk.t[i]);
	if (!more)
		stream_put(s); /* the armed multishot's reference */
	return wk.n;
}

/* ------------------------------------------------------------ teardown */

/* Out of the table: mark dead, give the buffers back, end the readers.
 * Return: whether the multishot is still armed. Context: any thread. */
static bool stream_kill(struct weft__io_stream *s, int status)
{
	struct weft__wakeups wk;
	bool armed;

	wk.n = 0;
	weft__spin_lock(&s->lock);
	s->dead = true;
	q_drop(s);
	claim_all(&s->readers, status, &wk);
	armed = s->armed;
	weft__spin_unlock(&s->lock);
	weft__wakeups_flush(&wk);
	return armed;
}

/* Cancel the multishot on its owner and wait for its last completion. */
static void wait_unarmed(struct weft__task *t, struct weft__io_stream *s)
{
	weft__io_ms_wait_unarmed(t, &s->op, &s->lock, &s->armed,
				 &s->closers);
}

static struct weft__io_stream *stream_detach(int fd)
{
	struct weft__io_stream *s;

	if ((unsigned)fd >= STREAM_FDS ||
	    !atomic_load_explicit(&table[fd], memory_order_relaxed))
		return NULL;
	/* exclusive: every reader that took a reference did so before */
	weft__io_fd_lock(fd);
	s = atomic_exchange_explicit(&table[fd], NULL, memory_order_acq_rel);
	weft__io_fd_unlock(fd);
	return s;
}

struct weft__runtime *weft__io_stream_close(int fd)
{
	struct weft__io_stream *s = stream_detach(fd);
	struct weft__runtime *rt = NULL;
	struct weft__task *t;

	if (!s)
		return NULL;
	if (stream_kill(s, -ECANCELED)) {
		/* only a task of the stream's runtime may move to its
		 * owner; anyone else posts the cancel as a foreign thread */
		if ((t = weft__task_current()) && t->rt == s->rt)
			wait_unarmed(t, s);
		else
			rt = s->rt; /* weft_close posts the cancel there */
	}
	stream_put(s); /* the table's reference */
	return rt;
}

/* @s, already out of the table, belonged to a file of number @fd that was
 * closed with close(2) against the promise: drop it. */
static void drop_stale(struct weft__io_stream *s, int fd)
{
	weft__report("fd %d was closed without weft_close() while marked "
		     "WEFT_FD_MULTISHOT; its stream is dropped",
		     fd);
	if (stream_kill(s, -EBADF)) {
		/* cancel what is still armed on the old file of this
		 * number (the new one has nothing armed yet), on the
		 * stream's own workers even from a foreign thread */
		weft__io_close_begin(fd);
		weft__io_close_end_in(fd, s->rt);
	}
	stream_put(s);
}

void weft__io_stream_forget(int fd)
{
	struct weft__io_stream *s = stream_detach(fd);

	if (s)
		drop_stale(s, fd);
	weft__io_acceptq_forget(fd);
}

void weft__io_stream_rt_fini(struct weft__runtime *rt)
{
	struct weft__list gone = { &gone, &gone }, *l, *n;

	/* The workers have stopped: no reader, no completion runs. Rings
	 * are closed next, which cancels what is still armed: that
	 * multishot's reference is dropped here. A weft_close() from a
	 * thread outside the runtime may hold the record (it took it out of
	 * the table first): it is killed, not freed, under it. */
	pthread_mutex_lock(&all_lock);
	for (l = all_streams.next; l != &all_streams; l = n) {
		struct weft__io_stream *s =
			weft__container_of(l, struct weft__io_stream, all);
		struct weft__io_stream *exp = s;
		n = l->next;
		if (s->rt != rt)
			continue;
		unsigned drop = atomic_compare_exchange_strong_explicit(
			&table[s->fd], &exp, NULL, memory_order_acq_rel,
			memory_order_relaxed);
		weft__spin_lock(&s->lock);
		s->dead = true;
		q_drop(s); /* the rings are still there */
		drop += s->armed;
		s->armed = false;
		weft__spin_unlock(&s->lock);
		weft__list_del(&s->all);
		s->fini_drop = drop;
		weft__list_add_tail(&gone, &s->all);
	}
	pthread_mutex_unlock(&all_lock);
	while (gone.next != &gone) {
		struct weft__io_stream *s =
			weft__container_of(gone.next, struct weft__io_stream,
					   all);
		unsigned drop = s->fini_drop;
		weft__list_del(&s->all); /* stream_free's del is then a no-op */
		while (drop--)
			stream_put(s);
	}
}

/* ------------------------------------------------------------ the call */

WEFT_API int weft_fd_set_flags(int fd, unsigned flags)
{
	struct weft__task *t = weft__task_current();
	const struct weft__io_backend *be;
	struct weft__io_stream *s, *old;
	struct stat st;
	int type = 0;
	socklen_t sl = sizeof(type);

	if (!t)
		return -EPERM;
	if (fd < 0)
		return -EBADF;
	if (flags & ~(unsigned)WEFT_FD_MULTISHOT)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISSOCK(st.st_mode))
		return -ENOTSOCK;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) < 0)
		return -errno;
	if (type != SOCK_STREAM)
		return -EINVAL;
	/* A listener: multishot accept (io/acceptq.c). */
	if (weft__io_acceptq_listener(fd))
		return weft__io_acceptq_set_flags(t, fd, flags, st.st_ino);
	be = t->rt->io_backend;
	/* A hint: where it cannot be served, the plain path stays. */
	if (!flags || (unsigned)fd >= STREAM_FDS || !be->ms_ready ||
	    !be->ms_ready(weft__worker_current()))
		return 0;
	s = weft__calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->rt = t->rt;
	s->fd = fd;
	s->ino = st.st_ino;
	atomic_init(&s->refs, 1);
	s->op.opcode = WEFT__OP_RECV_MULTISHOT;
	s->op.fd = fd;
	s->op.off = -1;
	pthread_mutex_lock(&all_lock);
	weft__list_add_tail(&all_streams, &s->all);
	pthread_mutex_unlock(&all_lock);
	weft__io_fd_lock(fd);
	old = atomic_load_explicit(&table[fd], memory_order_relaxed);
	if (old && old->ino == s->ino && old->rt == s->rt) {
		weft__io_fd_unlock(fd);
		stream_free(s);
		return 0; /* already set */
	}
	/* release: the record's fields before it is found (stream_get) */
	atomic_store_explicit(&table[fd], s, memory_order_release);
	weft__io_fd_unlock(fd);
	if (old)
		drop_stale(old, fd);
	return 0;
}
