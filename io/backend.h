/* SPDX-License-Identifier: MIT */
/*
 * io/backend.h - the contract between weft's I/O calls and a reactor
 * backend (io/uring.c, io/epoll.c). Code above this header (io/reactor.c,
 * io/calls.c, the runtime) never names io_uring or epoll.
 *
 * An I/O call describes its syscall in a struct weft__io_op on the calling
 * task's stack and hands it to weft__io_exec(). There the op is *armed* on
 * the worker the task runs on, from the wait protocol's publish callback
 * (runtime/wait.c: the task is switched out, we are on the scheduler stack
 * of that worker), and the task parks. Only that worker (the op's owner)
 * ever touches the op afterwards until the op is done:
 *  - a native backend (io_uring) performs the whole syscall in the kernel;
 *  - a readiness backend (epoll) only waits until op->fd is ready for
 *    op->poll_events; the caller then makes the syscall non-blocking and
 *    waits again on -EAGAIN.
 * The owner reports the end of an op with weft__io_complete(), which stores
 * the result, marks the op done and claims the task's wait with SOURCE.
 *
 * Per worker the backend also owns the idle sleep (sleep(): until an event,
 * a kick or the deadline) and the cross-thread kick (kick(): any thread).
 * Every entry is called on the owner worker's thread, except init/fini
 * (the runtime's creator/freer, worker not running) and kick (any thread).
 */
#ifndef WEFT_IO_BACKEND_H
#define WEFT_IO_BACKEND_H

#include <sys/socket.h>
#include <sys/types.h>

#include "runtime/sched.h"

#ifdef __cplusplus
extern "C" {
#endif

enum weft__io_opcode {
	WEFT__OP_POLL = 1, /* readiness: res = revents */
	WEFT__OP_READ,
	WEFT__OP_WRITE,
	WEFT__OP_READV,
	WEFT__OP_WRITEV,
	WEFT__OP_RECV,
	WEFT__OP_SEND,
	WEFT__OP_RECVMSG,
	WEFT__OP_SENDMSG,
	WEFT__OP_ACCEPT,
	WEFT__OP_CONNECT,
	WEFT__OP_OPEN,
	WEFT__OP_FSYNC,
	WEFT__OP_RECV_MULTISHOT, /* io/stream.c: armed while the fd lives;
				  * its completions go to
				  * weft__io_stream_cqe(), not
				  * weft__io_complete() */
	WEFT__OP_ACCEPT_MULTISHOT, /* io/acceptq.c: likewise, its
				    * completions go to
				    * weft__io_acceptq_cqe() */
};

/*
 * struct weft__io_op - one I/O operation; lives on the calling task's stack
 * until the op is done (the kernel or the backend has let go of it).
 */
struct weft__io_op {
	/* The request: written by the task before arming, then read-only. */
	int opcode; /* WEFT__OP_* */
	int fd;
	int flags; /* msg/open flags */
	uint32_t poll_events; /* POLL, and readiness backends */
	void *buf; /* buffer, iovec, msghdr, path, addr */
	size_t len; /* length, iovcnt, socklen */
	int64_t off; /* file offset (-1: current), mode */
	socklen_t *addrlen; /* accept */

	/* Bookkeeping. */
	struct weft__task *task; /* the waiter; set before arming */
	uint64_t word; /* wait word the completion claims;
					 * written by the task, read by the
					 * completer: both on the owner thread */
	struct weft__worker *owner; /* set by arm (scheduler stack of the
					 * owner), read by the task after */
	struct weft__io_op *next; /* backend lists; owner only */
	struct weft__list link; /* owner's inflight list (reactor) */
	uint64_t arm_seq; /* close_gen[fd] when armed (weft_close) */
	uint64_t ud; /* backend's tag of this arming (user_data) */
	int res; /* result; written before done */
	_Atomic uint32_t done; /* 1: finished (release by the owner) */
};

/* A weft_close() that other workers must apply to their ops on @fd. */
struct weft__io_close_req {
	int fd;
	uint64_t seq; /* ops armed before it are cancelled */
};

/*
 * struct weft__io_worker - the backend-neutral part of a worker's reactor
 * state; the first member of each backend's per-worker record, so w->io
 * points at it too (io/reactor.c).
 */
struct weft__io_worker {
	struct weft__list inflight; /* armed, not completed; owner only */
	_Atomic uint32_t *fd_ops; /* ops in flight per fd; owner
					 * writes, weft_close() reads */
	unsigned nfd_ops;
	pthread_mutex_t req_lock; /* over reqs */
	struct weft__io_close_req *reqs;
	size_t nreqs, capreqs;
	/* A request could not be stored (no memory): the owner sweeps every
	 * op instead (io/reactor.c apply_closes()). Under req_lock. */
	bool sweep;
	_Atomic size_t nreqs_hint; /* nreqs + sweep, read without the lock */
	/* weft_io_stats: written by the owner (weft__io_stat_inc), read by
	 * weft_io_stats_get() from any thread */
	_Atomic uint64_t enters, sleeps, cq_overflows, cq_dropped;
	_Atomic uint64_t stale_cqes; /* io/uring.c op_cqe() */
};

int weft__io_worker_init(struct weft__io_worker *c);
void weft__io_worker_fini(struct weft__io_worker *c);

struct weft__io_backend {
	const char *name; /* "io_uring" or "epoll" */
	bool native; /* arm() performs the syscall itself */
	/* Create the per-worker state (w->io). Context: runtime creator. */
	int (*init)(struct weft__worker *w, unsigned entries);
	/* Context: w's thread, before its loop. */
	void (*start)(struct weft__worker *w);
	/* Context: runtime freer, w's thread has exited. */
	void (*fini)(struct weft__worker *w);
	/* Start @op on w. Context: w's scheduler stack (publish). */
	void (*arm)(struct weft__worker *w, struct weft__io_op *op);
	/* Ask for an armed, not yet done @op to end soon; its completion
	 * still comes through weft__io_complete(). Context: w's scheduler
	 * stack (publish); w is op->owner. */
	void (*cancel)(struct weft__worker *w, struct weft__io_op *op);
	/* Submit what is prepared, reap what finished, without blocking.
	 * Return: tasks made runnable. Context: w's scheduler stack. */
	unsigned (*poll)(struct weft__worker *w);
	/* Sleep until an event, a kick or @deadline_ns (UINT64_MAX: none).
	 * Completions are reaped by the next poll(). Context: w, idle. */
	void (*sleep)(struct weft__worker *w, uint64_t deadline_ns);
	/* Wake w out of sleep(), now or the next time it sleeps.
	 * Context: any thread. */
	void (*kick)(struct weft__worker *w);
	/* Ops in flight on w (armed and not done). Context: w. */
	unsigned (*inflight)(struct weft__worker *w);
	/* Multishot recv into provided buffers (io/stream.c); NULL where the
	 * backend has none. Can w arm a WEFT__OP_RECV_MULTISHOT now (its
	 * buffer ring was registered)? Context: w's thread. */
	bool (*ms_ready)(struct weft__worker *w);
	/* Give provided buffer @bid back to w's ring. Context: any thread;
	 * never suspends. */
	void (*buf_put)(struct weft__worker *w, unsigned bid);
	/* Can arm WEFT__OP_ACCEPT_MULTISHOT (io/acceptq.c); a kernel that
	 * turns out not to have it fails the first arm with -EINVAL. */
	bool accept_multishot;
	/* cancel(), but only if an SQE can be had by submitting, never by
	 * reaping (so it may be called from a completion handler).
	 * Return: false if nothing was prepared: try again later.
	 * Context: w's thread; w is op->owner. */
	bool (*cancel_try)(struct weft__worker *w, struct weft__io_op *op);
};

extern const struct weft__io_backend weft__io_uring_backend;
extern const struct weft__io_backend weft__io_epoll_backend;

/*
 * weft__io_complete() - End @op with @res. Stores the result, marks the op
 * done, claims its task's wait with SOURCE and, when the claim wins from
 * ARMED, queues the task on @w. @op must not be touched afterwards.
 * Return: 1 if a task became runnable, else 0.
 * Context: @w is op->owner; its thread.
 */
unsigned weft__io_complete(struct weft__worker *w, struct weft__io_op *op,
			   int res);

/*
 * weft__io_ready() - Make @t, whose wait a completion has just claimed,
 * runnable from its reap on @w: a pinned task through weft__ready_local()
 * (its own worker's queue); any other into w's deque, without a notify per
 * task: the poll that reaped the batch notifies once (see weft__io_poll()
 * callers). The one rule for weft__io_complete(), weft__io_stream_cqe()
 * and weft__io_acceptq_cqe(); inline, as it runs once per woken task.
 * Context: w's thread, inside its reap.
 */
static inline void weft__io_ready(struct weft__worker *w, struct weft__task *t)
{
	if (t->pinned_to) {
		weft__ready_local(w, t, false);
	} else {
		weft__task_set_state(t, WEFT__TASK_RUNNABLE);
		weft__deque_push_or_spill(w, t);
	}
}

/*
 * weft__io_stream_cqe() - A completion of the multishot recv @op (embedded
 * in a struct weft__io_stream): @buf (NULL: none) holds @res bytes of
 * provided buffer @bid of w's ring; @more: the multishot stays armed (else
 * this is its last completion and @op is retired here).
 * Return: tasks made runnable. Context: w is op->owner; its thread.
 */
unsigned weft__io_stream_cqe(struct weft__worker *w, struct weft__io_op *op,
			     int res, bool more, char *buf, unsigned bid);

/* io/stream.c, for weft_recv/weft_close/weft_accept/... (io/calls.c). */
/* The multishot path of weft_recv()/weft_read()/weft_readv()/
 * weft_recvmsg() when @fd has a stream: read into @iov[@iovcnt] with
 * @flags (MSG_PEEK, MSG_WAITALL, MSG_TRUNC). *@handled false: take the
 * plain path (no stream, other flags, or nothing queued and nothing armed
 * after a fallback). Context: task. */
ssize_t weft__io_stream_read(struct weft__task *t, int fd,
			     const struct iovec *iov, int iovcnt, int flags,
			     bool *handled);
/* io/calls.c: a readiness wait on @fd (the plain weft_poll()). */
int weft__io_poll_fd(struct weft__task *t, int fd, short events);
/* Has @fd a stream? (A hint: a concurrent weft_close may end it.) */
bool weft__io_is_stream(int fd);
/* weft_poll() on @fd's stream, for events that include POLLIN; *@handled
 * false: take the plain path. Context: task. */
int weft__io_stream_poll(struct weft__task *t, int fd, short events,
			 bool *handled);
/* weft_close(): tear @fd's stream down before its close(2).
 * Context: any thread; suspends (uncancellably) only in a task.
 * Return: the stream's runtime when its multishot is still armed and the
 * caller could not wait for it (not a task): weft_close() then has that
 * runtime's workers cancel it after the close(2); else NULL. */
struct weft__runtime *weft__io_stream_close(int fd);
/* weft made a new fd with this number: drop a stale stream (an fd closed
 * with close(2) against the promise of WEFT_FD_MULTISHOT). Context: any
 * thread; never suspends. */
void weft__io_stream_forget(int fd);
/* The runtime ends: free its streams. Context: runtime freer. */
void weft__io_stream_rt_fini(struct weft__runtime *rt);

/*
 * weft__io_acceptq_cqe() - A completion of the multishot accept @op
 * (embedded in an io/acceptq.c record): @res is an accepted fd or, with
 * !@more, the error that ended it; @more: it stays armed (else @op is
 * retired here). Return: tasks made runnable. Context: w is op->owner;
 * its thread, inside its reap (so it never reaps).
 */
unsigned weft__io_acceptq_cqe(struct weft__worker *w, struct weft__io_op *op,
			      int res, bool more);

/* io/acceptq.c, for weft_fd_set_flags/weft_accept/weft_close. */
/* Is @fd a listening socket (SO_ACCEPTCONN)? Context: any thread. */
bool weft__io_acceptq_listener(int fd);
/* weft_fd_set_flags() on a listener (@ino: its inode). Context: task. */
int weft__io_acceptq_set_flags(struct weft__task *t, int fd, unsigned flags,
			       ino_t ino);
/* The multishot path of weft_accept() when @fd has one; *@handled false:
 * take the plain path. Context: task; suspension point. */
int weft__io_acceptq_accept(struct weft__task *t, int fd, struct sockaddr *addr,
			    socklen_t *len, bool *handled);
/* weft_poll() on a listener marked WEFT_FD_MULTISHOT: queued connections
 * are readable; *@handled false: take the plain path. Context: task;
 * suspension point. */
int weft__io_acceptq_poll(struct weft__task *t, int fd, short events,
			  bool *handled);
/* As weft__io_stream_close(), for @fd's accept queue. */
struct weft__runtime *weft__io_acceptq_close(int fd);
/* As weft__io_stream_forget(), for a stale accept queue. */
void weft__io_acceptq_forget(int fd);
/* The runtime ends: free its accept queues, close their queued fds.
 * Context: runtime freer, workers stopped. */
void weft__io_acceptq_rt_fini(struct weft__runtime *rt);

/* io/reactor.c, for io/stream.c and io/acceptq.c. */
/* Arm @op on w (the body of an arm publish); the caller is counted in on
 * op->fd (weft__io_fd_enter). Context: w's scheduler stack. */
void weft__io_arm(struct weft__worker *w, struct weft__io_op *op);
/* Take ended @op off w's in-flight books (weft__io_complete() without
 * the wake-up). Context: w's thread. */
void weft__io_retire(struct weft__worker *w, struct weft__io_op *op);
/* Switch out and resume on worker @to (pinned_to = @to; the caller
 * restores it). Context: task. */
void weft__io_move_to(struct weft__task *t, struct weft__worker *to);
/* The close step of a multishot record (io/stream.c, io/acceptq.c): move
 * to the owner of armed @op, cancel it there and wait, uncancellably, for
 * its last completion, whose handler claims @closers. @lock guards
 * *@armed, op->owner and @closers. Context: a task of the record's
 * runtime. */
struct weft__waitq;
void weft__io_ms_wait_unarmed(struct weft__task *t, struct weft__io_op *op,
			      _Atomic uint32_t *lock, const bool *armed,
			      struct weft__waitq *closers);
/* Exclusive use of fd number @fd: waits for the uses in progress
 * (weft__io_fd_enter), holds new ones off. Never across a suspension.
 * Context: any thread. */
void weft__io_fd_lock(int fd);
void weft__io_fd_unlock(int fd);

/* Backend probe: 0 if a ring can be made now, else -errno (io/uring.c). */
int weft__io_uring_probe(void);
/* The first opcode weft needs that this kernel's io_uring lacks ("PROBE"
 * when it cannot even say: before 5.6), or NULL. Asked once a process. */
const char *weft__io_uring_missing_op(void);

/* The non-blocking attempt of @op's syscall (readiness backends):
 * the result, or -EAGAIN to wait for op->poll_events (io/calls.c). */
ssize_t weft__io_try(struct weft__io_op *op);

/*
 * weft__io_exec() - Run @op for the calling task: arm, park, and on
 * cancellation or deadline cancel it on its owner and wait for the end.
 * Return: the syscall's result (never -EAGAIN/-EINTR), or -ECANCELED /
 * -ETIMEDOUT when the op had no effect.
 * Context: task; suspension point (the caller checked pending errors).
 */
ssize_t weft__io_exec(struct weft__task *t, struct weft__io_op *op);

/* The backend of the calling task's runtime. */
const struct weft__io_backend *weft__io_current(void);

/* weft_close(): around its close(2), begin (arms on @fd wait) and end
 * (cancel the ops other tasks have pending on @fd): reactor.c.
 * Context: any thread; never suspends. */
void weft__io_close_begin(int fd);
void weft__io_close_end(int fd);
/* weft__io_close_end(), also posting the cancel to @rt's workers (the
 * caller's own runtime, if any, gets it anyway); @rt may be NULL. */
void weft__io_close_end_in(int fd, struct weft__runtime *rt);
/* Around a use of @fd that must not overlap its weft_close (an arm, a
 * direct non-blocking syscall): never across a suspension point.
 * Context: any thread; waits only for a close(2) in progress. */
void weft__io_fd_enter(int fd);
void weft__io_fd_exit(int fd);

#ifdef WEFT_TEST_HOOKS
/* Test hook (tests/support/io_hooks.h): random delays up to @ns in the
 * windows of the arm/close race (reactor.c); 0: off. */
WEFT_API void weft_test_io_close_race_delay(uint64_t ns);
/* Test hook: provided buffers of the rings started from now on (@count a
 * power of two; 0: the defaults, 1024 x 4096). io/uring.c. */
WEFT_API void weft_test_io_pbuf(unsigned count, unsigned size);
/* Test hook: multishot accepts armed from now on get an SQE the kernel
 * rejects (-EINVAL), as a kernel without IORING_ACCEPT_MULTISHOT would.
 * io/uring.c. */
WEFT_API void weft_test_io_accept_ms_einval(bool on);
/* Test hook: @fd's accept queue (io/acceptq.c): fds queued, whether its
 * multishot is armed, whether it fell back to the plain path for good.
 * Return: 0, or -ENOENT when @fd has none. */
WEFT_API int weft_test_io_acceptq_state(int fd, unsigned *queued, bool *armed,
					bool *plain);
#endif

/* Worker hooks (runtime/worker.c, runtime/sched.c, runtime/runtime.c). */
int weft__io_rt_init(struct weft__runtime *rt);
void weft__io_rt_fini(struct weft__runtime *rt);
void weft__io_worker_start(struct weft__worker *w);
unsigned weft__io_poll(struct weft__worker *w);
bool weft__io_busy(struct weft__worker *w);
bool weft__io_has_work(struct weft__worker *w);
void weft__io_sleep(struct weft__worker *w, uint64_t deadline_ns);
bool weft__io_kick(struct weft__worker *w);

/*
 * weft__io_blocking_call() - Run a call that would block the worker thread
 * (epoll backend, regular files) on the offload pool (io/reactor.c).
 * Context: task.
 * Return: @fn's result; -ECANCELED if the task was already cancelled.
 */
ssize_t weft__io_blocking_call(ssize_t (*fn)(struct weft__io_op *op),
			       struct weft__io_op *op);

/* SIGPIPE rule (io/calls.c): workers block it; a write that failed with
 * -EPIPE drops the SIGPIPE it left pending on the calling thread. */
void weft__io_block_sigpipe(void);
void weft__io_drain_sigpipe(void);

/*
 * weft__io_fds_via_syscalls() - TSan models every fd and learns of new ones
 * only from the syscalls it intercepts; an fd made by io_uring (accept,
 * openat) is invisible to it, so the close of a reused fd number is
 * reported as racing with the close of the previous file of that number.
 * Under TSan, ops that make fds therefore wait for readiness on the ring
 * and make the fd with the syscall (the epoll backend's path).
 */
#if defined(WEFT_TSAN) || defined(WEFT__TSAN)
static inline bool weft__io_fds_via_syscalls(void)
{
	return true;
}
#else
static inline bool weft__io_fds_via_syscalls(void)
{
	return false;
}
#endif

static inline void weft__io_stat_inc(_Atomic uint64_t *c)
{
	/* single writer (the owner worker): see stat_inc() in worker.c */
	atomic_store_explicit(c,
			      atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_release);
}

#ifdef __cplusplus
}
#endif
#endif /* WEFT_IO_BACKEND_H */
