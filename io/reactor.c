/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * io/reactor.c - the backend-neutral half of weft's reactor: which backend
 * a runtime uses, the worker hooks (poll every round, idle sleep, kick), and
 * the one protocol by which a task runs an op: weft__io_exec().
 *
 * Choosing a backend (weft__io_rt_init): WEFT_IO_EPOLL in the config or env
 * WEFT_IO=epoll pick epoll; WEFT_IO=io_uring insists on io_uring (no
 * fallback); otherwise io_uring, and epoll only when the kernel refuses
 * rings outright (EPERM: sysctl kernel.io_uring_disabled or seccomp; ENOSYS).
 * Any other failure (ENOMEM, EMFILE) is the runtime's error: a lack of
 * resources is not "io_uring is unavailable".
 *
 * Running an op (weft__io_exec), as steps:
 *  1. The task fills the op, prepares a cancellable wait with its scopes'
 *     deadline, stores the wait word in op->word, and parks.
 *  2. On the scheduler stack, the publish callback arms the op on the
 *     worker it ran on (op->owner). From now on only the owner touches the
 *     op, and it completes it with weft__io_complete(): result, done flag
 *     (release), then a SOURCE claim of op->word.
 *  3. Woken with SOURCE: the op is done, return its result.
 *  4. Woken with CANCEL or TIMER: the op may still be in flight, and the
 *     kernel may still write to its buffers. The task gets itself onto the
 *     owner (it sets pinned_to = owner for the duration and switches out
 *     with YIELD: run_task() hands a pinned task to its worker's inbox), so
 *     that the ring is touched only by its issuer (SINGLE_ISSUER), and the
 *     completion handler and the task never run at the same time: they
 *     share one thread. There, if the op is not done, it stores a fresh,
 *     uncancellable wait word in op->word and parks with a publish
 *     callback that asks the backend to cancel the op. The op's own
 *     completion (its result, or -ECANCELED) ends that wait.
 *  5. The result decides (completion wins): -ECANCELED/-EINTR from the
 *     kernel mean the op had no effect: return the wait's error. Bytes
 *     moved are returned (the cancellation shows at the next suspension
 *     point: it is level-triggered), and so is an fd made anyway
 *     (accept, open): API.md, "cancellation never undoes work already
 *     done"; the caller owns it, so none leaks.
 * A timer that fired although no deadline is due (a scope moved its
 * deadline later) re-arms the wait on the owner without cancelling.
 *
 * weft_close() while other tasks have ops on the fd (API.md: they return
 * -ECANCELED or -EBADF): the ring holds its own file reference, so close(2)
 * alone would leave them waiting. Each worker keeps its armed ops on an
 * inflight list and a per-fd count (fd_ops); per fd number there is a
 * close generation (close_gen) and a word (fd_word) counting the arms and
 * direct syscalls on the fd in progress, plus the closes in progress
 * (CLOSING_ONE each). The protocol:
 *   use (arming an op; the epoll backend's non-blocking syscall):
 *           weft__io_fd_enter(fd): count ourselves in, unless a close is
 *           in progress: then wait until it is over and retry;
 *           arm: fd_ops[fd]++, op->arm_seq = close_gen[fd], prepare the
 *           SQE / epoll_ctl; weft__io_fd_exit(fd) (release)
 *   close:  add CLOSING_ONE; wait until no use is in progress (acquire);
 *           close(2); g = ++close_gen[fd]; drop CLOSING_ONE (release);
 *           for each worker with fd_ops[fd] != 0: post {fd, g}, kick it
 *   owner, next poll: cancel its ops on fd with arm_seq < g (by
 *           user_data, so the fd being closed already does not matter).
 * So every use of the fd happens before the close(2) or after it: an op
 * armed before is counted in fd_ops when the closer scans, and cancelled
 * (even if it is submitted after the close and the number was reused
 * meanwhile: it was the old file's); an op armed after reads the new
 * generation, close(2) happened before its submission, and the kernel
 * finds no file (-EBADF) or the fd's new one: left alone. TSan sees the
 * same order (its fd model reported epoll_ctl racing the close before).
 * The waits are for a syscall or an SQE preparation on another thread:
 * nothing suspends while counted in.
 * Dropped: one global close sequence read before the count was published
 * (the closer could scan between the two and miss an op that then bound
 * to the old file and waited forever; tests/io_stress_test.cc,
 * CloseRacingArmNeverLeavesAWaiter, caught it within a few hundred
 * rounds); then a seq_cst Dekker pair (count, then generation), correct
 * but leaving the syscalls unordered with close(2).
 *
 * Tried and dropped: pinning the task to the ring's worker for the whole
 * op. Simple, but a completed task could then never be stolen, which undoes
 * work stealing for I/O-bound servers; only the rare cancel path pins.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "io/backend.h"
#include "runtime/waitq.h"

/* ------------------------------------------------------------ choosing */

enum pick {
	PICK_AUTO,
	PICK_URING,
	PICK_EPOLL
};

static enum pick pick_backend(unsigned cfg_flags)
{
	const char *e = getenv("WEFT_IO");

	if (cfg_flags & WEFT_IO_EPOLL)
		return PICK_EPOLL;
	if (!e || !*e)
		return PICK_AUTO;
	if (strcmp(e, "epoll") == 0)
		return PICK_EPOLL;
	if (strcmp(e, "io_uring") == 0)
		return PICK_URING;
	weft__env_bad("WEFT_IO", e, "io_uring or epoll");
	return PICK_AUTO;
}

/* The kernel refuses io_uring as such (not a resource shortage). */
static bool uring_unavailable(int err)
{
	return err == -EPERM || err == -ENOSYS;
}

static void fini_workers(struct weft__runtime *rt)
{
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__worker *w = rt->workers[i];
		if (w && w->io)
			rt->io_backend->fini(w);
	}
}

static int init_workers(struct weft__runtime *rt, unsigned entries)
{
	for (unsigned i = 0; i < rt->nworkers; i++) {
		int err = rt->io_backend->init(rt->workers[i], entries);
		if (err) {
			fini_workers(rt);
			return err;
		}
	}
	return 0;
}

/* Every runtime whose I/O is set up: a weft_close() from a thread that is
 * no worker cannot know which runtime has ops pending on the fd, so it
 * asks them all (weft__io_close_end_in()). */
static pthread_mutex_t io_rts_lock = PTHREAD_MUTEX_INITIALIZER;
static struct weft__list io_rts = { &io_rts, &io_rts };

static int init_backend(struct weft__runtime *rt);

int weft__io_rt_init(struct weft__runtime *rt)
{
	int err = init_backend(rt);

	if (!err) {
		pthread_mutex_lock(&io_rts_lock);
		weft__list_add_tail(&io_rts, &rt->io_rts_link);
		pthread_mutex_unlock(&io_rts_lock);
	} else {
		weft__list_init(&rt->io_rts_link);
	}
	return err;
}

static int init_backend(struct weft__runtime *rt)
{
	enum pick p = pick_backend(rt->cfg.flags);
	unsigned entries = rt->cfg.ring_entries;
	int err;

	/* A16: clamped, never an overflow; the kernel rounds up to a power
	 * of two. */
	if (entries == 0)
		entries = 256;
	if (entries < 2)
		entries = 2;
	if (entries > 32768)
		entries = 32768;
	if (p != PICK_EPOLL) {
		/* RELIABILITY D8: a kernel whose io_uring lacks an opcode we
		 * submit would fail that call with -EINVAL every time: the
		 * whole runtime takes the epoll backend instead (the strict
		 * WEFT_IO=io_uring fails). Said once a process. */
		const char *miss = weft__io_uring_missing_op();
		if (miss) {
			static _Atomic bool said;
			if (p == PICK_URING)
				return -EOPNOTSUPP;
			if (atomic_exchange(&said, true))
				; /* said once a process */
			else if (!strcmp(miss, "PROBE"))
				weft__report("this kernel's io_uring cannot "
					     "list its opcodes (before 5.6): "
					     "using the epoll backend");
			else
				weft__report("this kernel's io_uring lacks "
					     "IORING_OP_%s: using the epoll "
					     "backend",
					     miss);
		} else {
			rt->io_backend = &weft__io_uring_backend;
			err = init_workers(rt, entries);
			if (!err || p == PICK_URING || !uring_unavailable(err))
				return err;
		}
	}
	rt->io_backend = &weft__io_epoll_backend;
	return init_workers(rt, entries);
}

void weft__io_rt_fini(struct weft__runtime *rt)
{
	pthread_mutex_lock(&io_rts_lock);
	weft__list_del(&rt->io_rts_link); /* a no-op when not linked */
	pthread_mutex_unlock(&io_rts_lock);
	if (rt->io_backend) {
		weft__io_stream_rt_fini(rt);
		weft__io_acceptq_rt_fini(rt);
		fini_workers(rt);
	}
}

WEFT_API const char *weft_io_backend_of(const weft_runtime *h)
{
	return weft_io_backend(h);
}

WEFT_API const char *weft_io_backend(const weft_runtime *h)
{
	const struct weft__runtime *rt = (const struct weft__runtime *)h;

	if (!rt)
		rt = (const struct weft__runtime *)weft_runtime_current();
	if (rt && rt->io_backend)
		return rt->io_backend->name;
	/* The backend a new runtime with the default config would pick. */
	switch (pick_backend(0)) {
	case PICK_EPOLL:
		return weft__io_epoll_backend.name;
	case PICK_URING:
		return weft__io_uring_backend.name;
	default:
		return uring_unavailable(weft__io_uring_probe()) ||
				       weft__io_uring_missing_op() ?
			       weft__io_epoll_backend.name :
			       weft__io_uring_backend.name;
	}
}

WEFT_API void weft_io_stats_get(const weft_runtime *h, weft_io_stats *out)
{
	const struct weft__runtime *rt = (const struct weft__runtime *)h;

	if (!out)
		return;
	memset(out, 0, sizeof(*out));
	if (!rt)
		rt = (const struct weft__runtime *)weft_runtime_current();
	if (!rt || !rt->io_backend)
		return;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__io_worker *c = rt->workers[i]->io;
		if (!c)
			continue;
		/* relaxed: a snapshot; each counter has one writer */
		out->enters +=
			atomic_load_explicit(&c->enters, memory_order_relaxed);
		out->sleeps +=
			atomic_load_explicit(&c->sleeps, memory_order_relaxed);
		out->cq_overflows += atomic_load_explicit(&c->cq_overflows,
							  memory_order_relaxed);
		out->cq_dropped += atomic_load_explicit(&c->cq_dropped,
							memory_order_relaxed);
		out->stale_cqes += atomic_load_explicit(&c->stale_cqes,
							memory_order_relaxed);
	}
}

const struct weft__io_backend *weft__io_current(void)
{
	struct weft__worker *w = weft__worker_current();

	return w ? w->rt->io_backend : NULL;
}

/* ------------------------------------------------------------ close */

#ifdef WEFT_TEST_HOOKS
/* Widens the arm/close windows so the stress test of the close race hits
 * them (tests/io_stress_test.cc); 0: off. */
static _Atomic uint64_t race_delay_ns;

WEFT_API void weft_test_io_close_race_delay(uint64_t ns)
{
	atomic_store_explicit(&race_delay_ns, ns, memory_order_relaxed);
}

static void race_delay(void)
{
	uint64_t ns =
		atomic_load_explicit(&race_delay_ns, memory_order_relaxed);
	uint64_t now, end;

	if (!ns)
		return;
	now = weft__clock_real();
	end = now + (now ^ (now >> 13) ^ (now >> 29)) % ns;
	while (weft__clock_real() < end)
		weft__cpu_relax();
}
#else
static inline void race_delay(void)
{
}
#endif

#define FD_OPS_MAX 65536u

/* Per fd number (fds past the table share slots: a bump for another fd
 * only makes an arm_seq larger, or a use wait for another close(2)):
 * closes done, and uses and closes in progress (the protocol, top).
 * Process-wide, as fd numbers are. */
#define CLOSING_ONE (1u << 20)
#define USES_MASK (CLOSING_ONE - 1)
static _Atomic uint64_t close_gen[FD_OPS_MAX];
static _Atomic uint32_t fd_word[FD_OPS_MAX];

static inline unsigned fd_slot(int fd)
{
	return (unsigned)fd & (FD_OPS_MAX - 1);
}

void weft__io_fd_enter(int fd)
{
	_Atomic uint32_t *p = &fd_word[fd_slot(fd)];

	if (fd < 0)
		return;
	for (;;) {
		/* acquire: pairs with the release that ends a close, so its
		 * close(2) happens before our use */
		uint32_t v =
			atomic_fetch_add_explicit(p, 1, memory_order_acquire);
		if (!(v & ~USES_MASK))
			return;
		atomic_fetch_sub_explicit(p, 1, memory_order_relaxed);
		while (atomic_load_explicit(p, memory_order_acquire) &
		       ~USES_MASK)
			weft__cpu_relax();
	}
}

void weft__io_fd_exit(int fd)
{
	if (fd < 0)
		return;
	/* release: pairs with the closer's acquire wait, so our use (and
	 * the fd_ops count of an op we armed) happens before its close(2) */
	atomic_fetch_sub_explicit(&fd_word[fd_slot(fd)], 1,
				  memory_order_release);
}

int weft__io_worker_init(struct weft__io_worker *c)
{
	struct rlimit rl;

	weft__list_init(&c->inflight);
	c->nfd_ops = FD_OPS_MAX;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max < FD_OPS_MAX)
		c->nfd_ops = (unsigned)rl.rlim_max;
	c->fd_ops =
		weft__calloc(c->nfd_ops ? c->nfd_ops : 1, sizeof(*c->fd_ops));
	if (!c->fd_ops)
		return -ENOMEM;
	pthread_mutex_init(&c->req_lock, NULL);
	return 0;
}

void weft__io_worker_fini(struct weft__io_worker *c)
{
	pthread_mutex_destroy(&c->req_lock);
	weft__free(c->fd_ops);
	weft__free(c->reqs);
}

static inline struct weft__io_worker *common(struct weft__worker *w)
{
	return (struct weft__io_worker *)w->io;
}

static void fd_ops_add(struct weft__io_worker *c, int fd, int d)
{
	if (fd >= 0 && (unsigned)fd < c->nfd_ops)
		/* single writer (the owner); closers only read. seq_cst (a
		 * release at least): pairs with weft__io_close_begin()'s
		 * acquire, so the syscalls a task made on fd before its op
		 * was armed (or ended) happen before the close(2) that
		 * follows (TSan checks exactly this order between uses and
		 * the close of an fd); and the arm's Dekker store against
		 * weft__io_close_end(). */
		atomic_store_explicit(
			&c->fd_ops[fd],
			atomic_load_explicit(&c->fd_ops[fd],
					     memory_order_relaxed) +
				(uint32_t)d,
			memory_order_release);
}

/* Apply the close requests posted to @w. Context: w's scheduler stack. */
/*
 * Cancel @w's ops that request @r names (fd, armed before seq), or with
 * @r NULL (a sweep) every op armed before its fd's latest close: what
 * post_close() falls back to when it cannot store a request. A sweep
 * reads the generations themselves, so it may also cancel an op on an fd
 * past FD_OPS_MAX that shares the slot of one closed (only while memory
 * is short: -ECANCELED rather than a wait that never ends).
 */
static void cancel_closed(struct weft__worker *w,
			  const struct weft__io_close_req *r)
{
	struct weft__io_worker *c = common(w);
	/* Collect first: a cancel may complete an op at once (epoll),
	 * unlinking it, and its task may then reuse the frame. */
	struct weft__io_op *hit[64];
	size_t nhit;

	do {
		nhit = 0;
		for (struct weft__list *l = c->inflight.next;
		     l != &c->inflight && nhit < 64; l = l->next) {
			struct weft__io_op *op =
				weft__container_of(l, struct weft__io_op, link);
			bool stale;
			if (r)
				stale = op->fd == r->fd && op->arm_seq < r->seq;
			else
				/* relaxed: each closer bumped the
				 * generation before it set sweep under
				 * req_lock, which we took since */
				stale = op->fd >= 0 &&
					op->arm_seq <
						atomic_load_explicit(
							&close_gen[fd_slot(
								op->fd)],
							memory_order_relaxed);
			if (stale) {
				/* never again for this close */
				op->arm_seq = UINT64_MAX;
				hit[nhit++] = op;
			}
		}
		for (size_t k = 0; k < nhit; k++)
			w->rt->io_backend->cancel(w, hit[k]);
	} while (nhit == 64);
}

static void apply_closes(struct weft__worker *w)
{
	struct weft__io_worker *c = common(w);
	struct weft__io_close_req local[16];
	bool sweep;
	size_t n;

	pthread_mutex_lock(&c->req_lock);
	n = c->nreqs < 16 ? c->nreqs : 16;
	if (n) /* a sweep alone may come with no array at all */
		memcpy(local, c->reqs + (c->nreqs - n), n * sizeof(*local));
	c->nreqs -= n;
	sweep = c->sweep;
	c->sweep = false;
	atomic_store_explicit(&c->nreqs_hint, c->nreqs, memory_order_relaxed);
	pthread_mutex_unlock(&c->req_lock);
	for (size_t i = 0; i < n; i++)
		cancel_closed(w, &local[i]);
	if (sweep)
		cancel_closed(w, NULL);
}

void weft__io_fd_lock(int fd)
{
	/* New uses wait from now on; wait for those in progress. acquire:
	 * pairs with weft__io_fd_exit()'s release. */
	atomic_fetch_add_explicit(&fd_word[fd_slot(fd)], CLOSING_ONE,
				  memory_order_acq_rel);
	while (atomic_load_explicit(&fd_word[fd_slot(fd)],
				    memory_order_acquire) &
	       USES_MASK)
		weft__cpu_relax();
}

void weft__io_fd_unlock(int fd)
{
	/* release: what we did happens before the uses that waited */
	atomic_fetch_sub_explicit(&fd_word[fd_slot(fd)], CLOSING_ONE,
				  memory_order_release);
}

/* The close is about to happen: arms on @fd wait (see the protocol). */
void weft__io_close_begin(int fd)
{
	struct weft__worker *me = weft__worker_current();

	if (fd < 0)
		return;
	/* acquire: pairs with fd_ops_add()'s release, so the syscalls a
	 * task made on fd before its op was armed (or ended) happen before
	 * our close(2) (TSan checks exactly this order). */
	if (me && me->rt->io_backend)
		for (unsigned i = 0; i < me->rt->nworkers; i++) {
			struct weft__io_worker *c = common(me->rt->workers[i]);
			if ((unsigned)fd < c->nfd_ops)
				(void)atomic_load_explicit(
					&c->fd_ops[fd], memory_order_acquire);
		}
	weft__io_fd_lock(fd); /* new uses wait; those in progress end */
	race_delay();
}

/* Ask @rt's workers with ops on @fd to cancel those armed before
 * generation @seq. */
static void post_close(struct weft__runtime *rt, struct weft__worker *me,
		       int fd, uint64_t seq);

void weft__io_close_end(int fd)
{
	weft__io_close_end_in(fd, NULL);
}

/* close(2) is done: cancel the ops other tasks still have on @fd. */
void weft__io_close_end_in(int fd, struct weft__runtime *also)
{
	struct weft__worker *me = weft__worker_current();
	uint64_t seq;

	if (fd < 0)
		return;
	race_delay();
	/* relaxed: uses read it only after the release below */
	seq = atomic_fetch_add_explicit(&close_gen[fd_slot(fd)], 1,
					memory_order_relaxed) +
	      1;
	/* our close(2) and the new generation happen before the uses that
	 * waited (the release in weft__io_fd_unlock(), weft__io_fd_enter()'s
	 * acquire) */
	weft__io_fd_unlock(fd);
	if (me && me->rt->io_backend) {
		post_close(me->rt, me, fd, seq);
		/* An fd whose multishot recv is armed on another runtime's
		 * workers (io/stream.c): only they can cancel it. */
		if (also && also != me->rt && also->io_backend)
			post_close(also, me, fd, seq);
		return;
	}
	/* A thread outside every runtime (or in one without I/O): tasks of
	 * any runtime may have ops on @fd, and their workers count them. */
	pthread_mutex_lock(&io_rts_lock);
	for (struct weft__list *l = io_rts.next; l != &io_rts; l = l->next)
		post_close(weft__container_of(l, struct weft__runtime,
					      io_rts_link),
			   me, fd, seq);
	pthread_mutex_unlock(&io_rts_lock);
}

static void post_close(struct weft__runtime *rt, struct weft__worker *me,
		       int fd, uint64_t seq)
{
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__worker *v = rt->workers[i];
		struct weft__io_worker *c = common(v);
		/* acquire: every arm counted in before our close(2) was
		 * seen in fd_word; its count is visible */
		if ((unsigned)fd < c->nfd_ops &&
		    atomic_load_explicit(&c->fd_ops[fd],
					 memory_order_acquire) == 0)
			continue;
		pthread_mutex_lock(&c->req_lock);
		if (c->nreqs == c->capreqs) {
			size_t cap = c->capreqs ? 2 * c->capreqs : 8;
			struct weft__io_close_req *r =
				weft__alloc(cap * sizeof(*r));
			if (r) {
				if (c->nreqs)
					memcpy(r, c->reqs,
					       c->nreqs * sizeof(*r));
				weft__free(c->reqs);
				c->reqs = r;
				c->capreqs = cap;
			}
		}
		if (c->nreqs < c->capreqs)
			c->reqs[c->nreqs++] =
				(struct weft__io_close_req){ fd, seq };
		else
			c->sweep = true; /* no memory: sweep everything */
		atomic_store_explicit(&c->nreqs_hint, c->nreqs + c->sweep,
				      memory_order_seq_cst);
		pthread_mutex_unlock(&c->req_lock);
		if (v != me)
			weft__wake_worker(v); /* kicks it only if it sleeps */
	}
}

/* ------------------------------------------------------------ worker hooks */

void weft__io_worker_start(struct weft__worker *w)
{
	weft__io_block_sigpipe();
	if (w->io)
		w->rt->io_backend->start(w);
}

unsigned weft__io_poll(struct weft__worker *w)
{
	if (!w->io)
		return 0;
	while (atomic_load_explicit(&common(w)->nreqs_hint,
				    memory_order_relaxed))
		apply_closes(w);
	return w->rt->io_backend->poll(w);
}

bool weft__io_has_work(struct weft__worker *w)
{
	/* seq_cst: pairs with the store in weft__io_close_end() (a
	 * closer that saw us not idle relies on this re-check). */
	return w->io && atomic_load_explicit(&common(w)->nreqs_hint,
					     memory_order_seq_cst) != 0;
}

bool weft__io_busy(struct weft__worker *w)
{
	return w->io && w->rt->io_backend->inflight(w) != 0;
}

void weft__io_sleep(struct weft__worker *w, uint64_t deadline_ns)
{
	w->rt->io_backend->sleep(w, deadline_ns);
}

bool weft__io_kick(struct weft__worker *w)
{
	if (!w->io)
		return false;
	w->rt->io_backend->kick(w);
	return true;
}

/* ------------------------------------------------------------ completion */

unsigned weft__io_complete(struct weft__worker *w, struct weft__io_op *op,
			   int res)
{
	/* Read what the claim needs first: once done is stored, a task that
	 * was already woken by a cancellation may return and end op's frame. */
	struct weft__task *t = op->task;
	uint64_t word = op->word;

	weft__io_stat_inc(&w->stats.io_completed);
	weft__list_del(&op->link);
	fd_ops_add(common(w), op->fd, -1);
	op->res = res;
	/* release: pairs with the acquire loads of done in weft__io_exec(). */
	atomic_store_explicit(&op->done, 1, memory_order_release);
	if (weft__wait_try_claim(t, word, WEFT__WAKE_SOURCE) != 2)
		return 0; /* PREP: the publisher queues it; lost: a stale word */
	weft__io_ready(w, t);
	return 1;
}

struct blocking_call {
	ssize_t (*fn)(struct weft__io_op *op);
	struct weft__io_op *op;
	ssize_t res;
};

static int blocking_call_body(void *arg)
{
	struct blocking_call *c = arg;

	c->res = c->fn(c->op);
	return 0;
}

/*
 * A call that would block the worker (regular files under the epoll
 * backend) runs on the offload pool; the task waits for it like any
 * offloaded call (it cannot be interrupted: a cancellation shows at the
 * next suspension point, and the op and its buffer stay valid until fn
 * returned). If the pool cannot run it at all (no thread can be started),
 * the worker makes the call itself rather than fail it.
 */
ssize_t weft__io_blocking_call(ssize_t (*fn)(struct weft__io_op *op),
			       struct weft__io_op *op)
{
	struct blocking_call c = { fn, op, 0 };
	int r = weft_offload(blocking_call_body, &c);

	if (r == -EAGAIN)
		return fn(op);
	if (r < 0)
		return r;
	return c.res;
}

/* ------------------------------------------------------------ exec */

void weft__io_retire(struct weft__worker *w, struct weft__io_op *op)
{
	weft__io_stat_inc(&w->stats.io_completed);
	weft__list_del(&op->link);
	fd_ops_add(common(w), op->fd, -1);
}

static void arm_publish(struct weft__task *t, struct weft__wait *wt)
{
	struct weft__io_op *op = wt->obj;
	int fd = op->fd;

	(void)t;
	/* The protocol at the top: counted in, the arm happens wholly
	 * before a close(2) of fd or wholly after it. */
	weft__io_fd_enter(fd);
	weft__io_arm(weft__worker_current(), op);
	/* op may be done and gone already (epoll: -EBADF at once) */
	weft__io_fd_exit(fd);
}

void weft__io_arm(struct weft__worker *w, struct weft__io_op *op)
{
	int fd = op->fd;

	/* A stream's multishot (io/stream.c) has its owner set already,
	 * under the stream's lock, where a closer reads it: no second,
	 * unordered write of the same value. */
	if (op->owner != w)
		op->owner = w;
	weft__list_add_tail(&common(w)->inflight, &op->link);
	fd_ops_add(common(w), fd, 1);
	race_delay();
	op->arm_seq = fd < 0 ? 0 :
			       atomic_load_explicit(&close_gen[fd_slot(fd)],
						    memory_order_relaxed);
	weft__io_stat_inc(&w->stats.io_submitted);
	w->rt->io_backend->arm(w, op);
}

static void cancel_publish(struct weft__task *t, struct weft__wait *wt)
{
	struct weft__io_op *op = wt->obj;
	struct weft__worker *w = weft__worker_current();

	(void)t;
	WEFT__BUG_ON(w != op->owner);
	w->rt->io_backend->cancel(w, op);
}

/* Switch out and come back on @to (see step 4). Context: task. */
void weft__io_move_to(struct weft__task *t, struct weft__worker *to)
{
	struct weft__worker *w = weft__worker_current();

	if (w == to)
		return;
	t->pinned_to = to;
	t->switch_reason = WEFT__SW_YIELD;
	weft__task_switch_out(t);
	WEFT__BUG_ON(weft__worker_current() != to);
}

void weft__io_ms_wait_unarmed(struct weft__task *t, struct weft__io_op *op,
			      _Atomic uint32_t *lock, const bool *armed,
			      struct weft__waitq *closers)
{
	struct weft__worker *pin = t->pinned_to, *owner;
	struct weft__waiter wr;
	struct weft__wait wt;

	weft__spin_lock(lock);
	owner = *armed ? op->owner : NULL;
	weft__spin_unlock(lock);
	if (!owner)
		return;
	weft__io_move_to(t, owner);
	/* On the owner, armed cannot change under us: only this thread's
	 * reap ends the multishot. */
	weft__spin_lock(lock);
	if (!*armed) {
		weft__spin_unlock(lock);
		t->pinned_to = pin;
		return;
	}
	weft__waiter_enqueue(closers, &wr, t, false, false, false);
	weft__spin_unlock(lock);
	wt.publish = cancel_publish; /* on the owner: cancel it there */
	wt.obj = op;
	wt.word = wr.word;
	wt.deadline_ns = UINT64_MAX;
	weft__set_wait_kind(t, WEFT__WK_IO);
	(void)weft__wait_park(t, &wt); /* uncancellable: SOURCE */
	t->pinned_to = pin;
}

static bool makes_fd(int opcode)
{
	return opcode == WEFT__OP_ACCEPT || opcode == WEFT__OP_OPEN;
}

/* Steps 4 and 5: the wait ended with @err (0: a timer with nothing due). */
static ssize_t finish(struct weft__task *t, struct weft__io_op *op, int err)
{
	struct weft__worker *pin = t->pinned_to;
	struct weft__wait wt;
	int res, reason;

	if (!op->owner) /* claimed before the switch: never armed */
		return err ? err : -ECANCELED;
	while (!atomic_load_explicit(&op->done, memory_order_acquire)) {
		weft__io_move_to(t, op->owner);
		/* On the owner: its completion handler cannot run until we
		 * switch out, so done and op->word are stable here. */
		if (atomic_load_explicit(&op->done, memory_order_acquire))
			break;
		wt.obj = op;
		if (err) {
			wt.publish = cancel_publish;
			wt.deadline_ns = UINT64_MAX;
			wt.word = weft__wait_prepare(t, false);
		} else {
			wt.publish = NULL;
			wt.deadline_ns = weft__wait_deadline(t);
			wt.word = weft__wait_prepare(t, true);
		}
		op->word = wt.word;
		weft__set_wait_kind(t, WEFT__WK_IO); /* for dumps */
		reason = weft__wait_park(t, &wt);
		if (reason != WEFT__WAKE_SOURCE) {
			int e = weft__wait_error(t, reason);
			if (e)
				err = e;
		}
	}
	t->pinned_to = pin;
	res = op->res;
	if (!err)
		return res;
	if (res == -ECANCELED || res == -EINTR)
		return err;
	/* Completion wins (API.md "Cancellation never undoes work already
	 * done"): bytes moved, or an fd accepted or opened, are returned and
	 * the cancellation shows at the next suspension point. The fd is the
	 * caller's to use or close: nothing leaks. */
	return res;
}

static ssize_t exec_once(struct weft__task *t, struct weft__io_op *op)
{
	struct weft__wait wt;
	int reason;

	op->task = t;
	op->owner = NULL;
	op->next = NULL;
	op->res = 0;
	atomic_store_explicit(&op->done, 0, memory_order_relaxed);
	wt.publish = arm_publish;
	wt.obj = op;
	wt.deadline_ns = weft__wait_deadline(t);
	wt.word = weft__wait_prepare(t, true);
	op->word = wt.word;
	weft__set_wait_kind(t, WEFT__WK_IO); /* for dumps */
	reason = weft__wait_park(t, &wt);
	if (reason == WEFT__WAKE_SOURCE)
		return op->res;
	return finish(t, op, weft__wait_error(t, reason));
}

/* Readiness wanted by an op that the kernel refused with -EAGAIN. */
static uint32_t op_events(const struct weft__io_op *op)
{
	switch (op->opcode) {
	case WEFT__OP_POLL:
		return op->poll_events;
	case WEFT__OP_WRITE:
	case WEFT__OP_WRITEV:
	case WEFT__OP_SEND:
	case WEFT__OP_SENDMSG:
	case WEFT__OP_CONNECT:
		return POLLOUT;
	default:
		return POLLIN;
	}
}

static ssize_t wait_ready(struct weft__task *t, const struct weft__io_op *op)
{
	struct weft__io_op p;
	ssize_t r;

	memset(&p, 0, sizeof(p));
	p.opcode = WEFT__OP_POLL;
	p.fd = op->fd;
	p.poll_events = op_events(op);
	r = exec_once(t, &p);
	return r < 0 ? r : 0;
}

ssize_t weft__io_exec(struct weft__task *t, struct weft__io_op *op)
{
	const struct weft__io_backend *be = t->rt->io_backend;
	ssize_t r;
	int err;

	if (be->native &&
	    !(makes_fd(op->opcode) && weft__io_fds_via_syscalls())) {
		for (;;) {
			r = exec_once(t, op);
			/* A non-blocking fd (or EINTR in io-wq): wait for
			 * readiness and retry; never -EAGAIN to the caller. */
			if (r != -EAGAIN && r != -EINTR)
				return r;
			err = weft__pending_error(t);
			if (err)
				return err;
			if (r == -EAGAIN) {
				r = wait_ready(t, op);
				if (r < 0)
					return r;
			}
		}
	}
	for (;;) {
		r = weft__io_try(op);
		if (r != -EAGAIN && r != -EINTR)
			return r;
		err = weft__pending_error(t);
		if (err)
			return err;
		if (r == -EAGAIN) {
			r = wait_ready(t, op);
			if (r < 0)
				return r;
		}
	}
}
