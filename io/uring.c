/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * io/uring.c - the io_uring backend: one ring per worker, used only by that
 * worker's thread.
 *
 * Setup. Flags are tried from the best set down, each step dropping what an
 * older kernel rejects with -EINVAL (io_uring_setup(2)):
 *   SINGLE_ISSUER|DEFER_TASKRUN (6.1+), COOP_TASKRUN (5.19+), SUBMIT_ALL
 *   (5.18+), R_DISABLED (5.10+).
 * The ring is created disabled by the runtime's creator thread (so a lack
 * of memory or fds is reported by weft_runtime_new) and enabled by its
 * worker thread, which SINGLE_ISSUER then makes the only submitter.
 *
 * Per scheduler round (poll): SQEs prepared by the round's tasks are
 * submitted together with one io_uring_enter, which also runs the deferred
 * completions (DEFER_TASKRUN posts CQEs only when the owner enters); the CQ
 * is then reaped in batches. poll skips the syscall when nothing is
 * prepared and nothing is in flight.
 *
 * Idle sleep and kick: a read of the worker's eventfd is kept armed on its
 * ring while it sleeps (re-armed lazily, before each sleep). The idle
 * worker waits in io_uring_enter for one CQE with its next timer deadline
 * as the timeout (EXT_ARG, 5.11+; liburing falls back to a timeout SQE,
 * whose CQE is ignored). A waker writes the eventfd: the read completes and
 * ends the wait. A kick that comes before the sleep leaves the counter
 * non-zero, so the next armed read completes at once: no lost wake-up; the
 * park_word protocol of worker.c/sched.c decides who kicks whom.
 *
 * Errors of io_uring_enter: -EINTR, -EAGAIN (no request memory) and -EBUSY
 * (CQ overflow backlog) lose nothing: the SQEs stay in the SQ ring and are
 * submitted by the next round; completions are reaped first. The CQ is
 * sized generously; with IORING_FEAT_NODROP an overflow is kept by the
 * kernel and flushed by io_uring_get_events() when the overflow flag shows.
 * An SQ that is full when an op is armed is submitted (and the CQ reaped)
 * until an SQE frees up.
 *
 * user_data: the struct weft__io_op address in bits 0-47 and a per-worker
 * arm generation in bits 48-63, or one of the small tags below. The
 * generation keeps a late ASYNC_CANCEL (its target completed first and the
 * task armed a new op in the same stack slot) from hitting the new op:
 * it names the old generation, and lets op_cqe() ignore (and count, in
 * weft_io_stats.stale_cqes) a completion for a slot armed again since
 * (RELIABILITY D11). User addresses fit in 47 bits (task stacks
 * come from weft's own mmap arena, never from a high-address hint). Bit 0
 * (op records are 8-aligned) marks a multishot recv (io/stream.c): its
 * completions go to weft__io_stream_cqe(); bit 1 a multishot accept
 * (io/acceptq.c, IORING_ACCEPT_MULTISHOT, 5.19+): weft__io_acceptq_cqe().
 * An accepted fd whose CQE is still unreaped when the ring is closed
 * (runtime teardown) is closed by fini().
 *
 * Provided buffers (multishot recv, io/stream.c): each worker registers
 * one buffer ring (group BGID) of PBUF_COUNT buffers of PBUF_SIZE bytes at
 * start (IORING_REGISTER_PBUF_RING, 5.19+; liburing 2.3 has no
 * io_uring_setup_buf_ring, so the ring is mmap'd and registered here). The
 * register call must come from the ring's thread (SINGLE_ISSUER), hence
 * start(), not init(). A kernel that refuses leaves br NULL: ms_ready()
 * says no and the streams keep the plain path. Buffers go back to the ring
 * from whichever thread consumed them (buf_put, under pbuf_lock: the tail
 * is the only word we write; the kernel reads it with acquire). The buffer
 * memory is virtual until the kernel first receives into it.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "io/backend.h"
#include "runtime/test_hooks.h"
#include "runtime/waitq.h"

#define TAG_KICK 1u /* the eventfd read */
#define TAG_CANCEL 2u /* an ASYNC_CANCEL: its result is not needed */
#define TAG_FINI 4u /* fini's cancel of everything (close_unreaped_accepts) */
#define UD_GEN_SHIFT 48
#define UD_PTR_MASK ((UINT64_C(1) << UD_GEN_SHIFT) - 1)
#define UD_MULTISHOT 1u /* bit 0 of an op's user_data */
#define UD_ACCEPT_MS 2u /* bit 1 of an op's user_data */
#define BGID 1

/* Provided buffers per worker: 1024 x 4 KiB (4 MiB of address space;
 * resident only once the kernel has received into them). */
static _Atomic unsigned pbuf_count = 1024, pbuf_size = 4096;

#ifdef WEFT_TEST_HOOKS
WEFT_API void weft_test_io_pbuf(unsigned count, unsigned size)
{
	/* rings started after the call; count a power of two */
	atomic_store_explicit(&pbuf_count, count ? count : 1024,
			      memory_order_relaxed);
	atomic_store_explicit(&pbuf_size, size ? size : 4096,
			      memory_order_relaxed);
}

static _Atomic bool accept_ms_einval;

WEFT_API void weft_test_io_accept_ms_einval(bool on)
{
	atomic_store_explicit(&accept_ms_einval, on, memory_order_relaxed);
}

static bool test_accept_ms_einval(void)
{
	return atomic_load_explicit(&accept_ms_einval, memory_order_relaxed);
}
#else
static inline bool test_accept_ms_einval(void)
{
	return false;
}
#endif

struct uring {
	struct weft__io_worker common; /* first: see io/backend.h */
	struct io_uring ring;
	int efd; /* kick eventfd */
	uint64_t efd_val; /* read target of the armed kick read */
	bool kick_armed; /* a read of efd is in flight */
	bool disabled; /* created R_DISABLED: start() enables */
	bool taskrun_flag; /* the kernel flags pending completions */
	unsigned inflight; /* ops armed and not completed */
	unsigned polls; /* poll() calls, for the periodic enter */
	uint16_t gen; /* arm generation, bits 48-63 of user_data */
	/* provided buffers: set by start(), then read-only but the tail */
	struct io_uring_buf_ring *br; /* NULL: refused or not yet set up */
	char *bufs; /* pbuf_n buffers of pbuf_sz bytes */
	unsigned pbuf_n, pbuf_sz;
	_Atomic uint32_t pbuf_lock; /* over br->tail; any thread */
	/* Test builds' "cqe_delay:D", "cancel_delay:D" and "cqe_stale:K"
	 * (RELIABILITY 3.5, D9, D11): completions of single-shot ops and of
	 * cancels held back, and replays, oldest first. */
	struct delayed_cqe *delayed;
	unsigned ndelayed, reaps;
	/* weft_test_io_ring_counts(): written by the owner, read anywhere */
	_Atomic unsigned long held_pub, replayed;
};

struct delayed_cqe {
	uint64_t ud;
	int res;
	unsigned due; /* u->reaps at which it is handled */
	bool replay; /* cqe_stale's copy of a completion already handled */
};
#define DELAY_MAX 1024u

static inline struct uring *U(struct weft__worker *w)
{
	return (struct uring *)w->io;
}

/* TASKRUN_FLAG (5.19+, with COOP or DEFER_TASKRUN): the kernel raises
 * IORING_SQ_TASKRUN in the SQ flags while completions wait for us to
 * enter, so a round with nothing to submit enters only when it pays. */
static const unsigned setup_flags[] = {
	IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
		IORING_SETUP_SUBMIT_ALL | IORING_SETUP_R_DISABLED,
	IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN |
		IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL |
		IORING_SETUP_R_DISABLED,
	IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
	IORING_SETUP_SUBMIT_ALL,
	0,
};

static int ring_setup(struct io_uring *ring, unsigned entries, unsigned *used)
{
	unsigned cq = entries < 256 ? entries * 2 : entries * 4;
	int r = -EINVAL;

	if (entries >= 256 && cq < 4096)
		cq = 4096;
	if (cq > 65536)
		cq = 65536;
	size_t from = 0;
#ifdef WEFT_TEST_HOOKS
	/* tests: start at a later set, as an older kernel would end up */
	const char *e = getenv("WEFT_TEST_URING_SETUP_FROM");
	if (e)
		from = strtoul(e, NULL, 10) % WEFT__ARRAY_SIZE(setup_flags);
#endif
	for (size_t i = from; i < WEFT__ARRAY_SIZE(setup_flags); i++) {
		struct io_uring_params p;

		memset(&p, 0, sizeof(p));
		p.flags = setup_flags[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = cq;
		r = weft__fault(WEFT__F_URING_SETUP);
		r = r ? -r : io_uring_queue_init_params(entries, ring, &p);
		if (r == 0) {
			*used = setup_flags[i];
			return 0;
		}
		if (r != -EINVAL)
			return r;
	}
	return r;
}

int weft__io_uring_probe(void)
{
	struct io_uring ring;
	int r = weft__fault(WEFT__F_URING_SETUP);

	if (r)
		return -r;
	r = io_uring_queue_init(2, &ring, 0);

	if (r == 0)
		io_uring_queue_exit(&ring);
	return r;
}

/* The opcodes weft submits (io/reactor.c, io/calls.c): all in 5.6+. */
static const struct {
	int op;
	const char *name;
} needed_ops[] = {
	{ IORING_OP_RECV, "RECV" },	      { IORING_OP_SEND, "SEND" },
	{ IORING_OP_READ, "READ" },	      { IORING_OP_WRITE, "WRITE" },
	{ IORING_OP_READV, "READV" },	      { IORING_OP_WRITEV, "WRITEV" },
	{ IORING_OP_RECVMSG, "RECVMSG" },     { IORING_OP_SENDMSG, "SENDMSG" },
	{ IORING_OP_ACCEPT, "ACCEPT" },	      { IORING_OP_CONNECT, "CONNECT" },
	{ IORING_OP_OPENAT, "OPENAT" },	      { IORING_OP_FSYNC, "FSYNC" },
	{ IORING_OP_POLL_ADD, "POLL_ADD" },   { IORING_OP_ASYNC_CANCEL,
						"ASYNC_CANCEL" },
};

const char *weft__io_uring_missing_op(void)
{
	static _Atomic bool known;
	static const char *_Atomic missing;
	struct io_uring_probe *probe;
	const char *m = NULL;

	if (weft__fault(WEFT__F_URING_PROBE))
		return "RECV"; /* as a kernel without it */
	/* acquire: pairs with the release below (missing before known) */
	if (atomic_load_explicit(&known, memory_order_acquire))
		return atomic_load_explicit(&missing, memory_order_relaxed);
	probe = io_uring_get_probe();
	if (!probe) {
		/* No ring at all (disabled, no memory): the caller's own
		 * setup reports that; not cached. */
		if (weft__io_uring_probe() != 0)
			return NULL;
		m = "PROBE";
	} else {
		for (size_t i = 0; i < WEFT__ARRAY_SIZE(needed_ops); i++)
			if (!io_uring_opcode_supported(probe,
						       needed_ops[i].op)) {
				m = needed_ops[i].name;
				break;
			}
		io_uring_free_probe(probe);
	}
	atomic_store_explicit(&missing, m, memory_order_relaxed);
	atomic_store_explicit(&known, true, memory_order_release);
	return m;
}

static int u_init(struct weft__worker *w, unsigned entries)
{
	struct uring *u = weft__alloc_aligned(WEFT__CACHELINE, sizeof(*u));
	unsigned used = 0;
	int r;

	if (!u)
		return -ENOMEM;
	memset(u, 0, sizeof(*u));
	r = weft__io_worker_init(&u->common);
	if (r)
		goto out_free;
	r = ring_setup(&u->ring, entries, &used);
	if (r)
		goto out_common;
	/* Blocking eventfd: io_uring polls it; a write never blocks (the
	 * counter cannot reach its limit with 1-increments). */
	r = weft__fault(WEFT__F_EVENTFD);
	u->efd = r ? (errno = r, -1) : eventfd(0, EFD_CLOEXEC);
	if (u->efd < 0) {
		r = -errno;
		goto out_exit;
	}
	u->disabled = used & IORING_SETUP_R_DISABLED;
	u->taskrun_flag = used & IORING_SETUP_TASKRUN_FLAG;
	w->io = u;
	return 0;

out_exit:
	io_uring_queue_exit(&u->ring);
out_common:
	weft__io_worker_fini(&u->common);
out_free:
	weft__free(u);
	return r;
}

static void pbuf_free(struct uring *u)
{
	if (u->br)
		munmap(u->br, u->pbuf_n * sizeof(struct io_uring_buf));
	if (u->bufs)
		munmap(u->bufs, (size_t)u->pbuf_n * u->pbuf_sz);
	u->br = NULL;
	u->bufs = NULL;
}

/* Register w's buffer ring (see the top). Context: w's thread, start(). */
static void pbuf_setup(struct weft__worker *w)
{
	struct uring *u = U(w);
	unsigned n = atomic_load_explicit(&pbuf_count, memory_order_relaxed);
	unsigned sz = atomic_load_explicit(&pbuf_size, memory_order_relaxed);
	const char *e = getenv("WEFT_IO_PBUFS");
	struct io_uring_buf_reg reg;
	unsigned long long v;
	void *br, *bufs;
	int mask;

	/* WEFT_IO_PBUFS=N: N buffers per worker; 0 turns multishot recv off
	 * (for measurements: WEFT_FD_MULTISHOT is then a no-op). Anything
	 * but 0 or a power of two up to 32768 keeps the default, said once
	 * (every worker reads it). */
	if (e && *e) {
		static _Atomic bool reported; /* relaxed: one message */

		if (weft__parse_ulong(e, 0, 32768, &v) == 0 && !(v & (v - 1)))
			n = (unsigned)v;
		else if (!atomic_exchange_explicit(&reported, true,
						   memory_order_relaxed))
			weft__env_bad("WEFT_IO_PBUFS", e,
				      "0 or a power of two up to 32768");
	}
	if (n == 0)
		return;
	/* Buffer rings came in 5.19, multishot recv only in 6.0, whose
	 * IORING_OP_SEND_ZC serves as the marker: a 5.19 kernel would take
	 * the ring and then fail every multishot recv with -EINVAL. */
	struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
	bool has_ms = probe && io_uring_opcode_supported(probe,
							 IORING_OP_SEND_ZC);
	if (probe)
		io_uring_free_probe(probe);
	if (!has_ms)
		return;
	br = mmap(NULL, n * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
		  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (br == MAP_FAILED)
		return;
	bufs = mmap(NULL, (size_t)n * sz, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (bufs == MAP_FAILED) {
		munmap(br, n * sizeof(struct io_uring_buf));
		return;
	}
	u->br = br;
	u->bufs = bufs;
	u->pbuf_n = n;
	u->pbuf_sz = sz;
	io_uring_buf_ring_init(u->br);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)br;
	reg.ring_entries = n;
	reg.bgid = BGID;
	/* refused (a kernel or filter without IORING_REGISTER_PBUF_RING):
	 * multishot recv stays off on this worker, as documented */
	if (weft__fault(WEFT__F_URING_REGISTER) ||
	    io_uring_register_buf_ring(&u->ring, &reg, 0) != 0) {
		pbuf_free(u);
		return;
	}
	mask = io_uring_buf_ring_mask(n);
	for (unsigned i = 0; i < n; i++)
		io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * sz, sz,
				      (unsigned short)i, mask, (int)i);
	io_uring_buf_ring_advance(u->br, (int)n);
}

static bool u_ms_ready(struct weft__worker *w)
{
	return U(w)->br != NULL;
}

static void u_buf_put(struct weft__worker *w, unsigned bid)
{
	struct uring *u = U(w);

	weft__spin_lock(&u->pbuf_lock);
	io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * u->pbuf_sz,
			      u->pbuf_sz, (unsigned short)bid,
			      io_uring_buf_ring_mask(u->pbuf_n), 0);
	io_uring_buf_ring_advance(u->br, 1);
	weft__spin_unlock(&u->pbuf_lock);
}

static inline bool is_accept_ms(uint64_t ud);

/* Close the fds of the multishot accept completions in the CQ (nobody
 * will reap them: the workers have exited); consume every completion.
 * Return: how many there were. Context: fini(). */
static unsigned close_cq_accepts(struct uring *u)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&u->ring, head, cqe)
	{
		if (is_accept_ms(cqe->user_data) && cqe->res >= 0)
			close(cqe->res);
		n++;
	}
	io_uring_cq_advance(&u->ring, n);
	return n;
}

/*
 * At fini (the workers have stopped): an fd a multishot accept took and
 * nobody reaped must be closed, not leaked. On a SINGLE_ISSUER ring this
 * thread may not submit, and with DEFER_TASKRUN nothing completes without
 * the workers: what is in the CQ is all there is. On the other setups the
 * kernel keeps accepting until the ring goes, so cancel everything first
 * and take what completes until the cancel's own completion, and what the
 * kernel held in its overflow list.
 */
static void close_unreaped_accepts(struct uring *u)
{
	close_cq_accepts(u);
	if (u->ring.flags & IORING_SETUP_SINGLE_ISSUER)
		return;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (!sqe)
		return; /* (the SQ holds nothing of ours: cannot happen) */
	io_uring_prep_cancel64(sqe, 0,
			       IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, TAG_FINI);
	if (io_uring_submit(&u->ring) != 1)
		return;
	for (int i = 0; i < 100; i++) {
		struct __kernel_timespec ts = { .tv_sec = 0,
						.tv_nsec = 1000000 };
		struct io_uring_cqe *cqe;
		bool done = false;
		unsigned head;

		if (io_uring_cq_has_overflow(&u->ring))
			io_uring_get_events(&u->ring);
		(void)io_uring_wait_cqe_timeout(&u->ring, &cqe, &ts);
		io_uring_for_each_cqe(&u->ring, head, cqe)
			done |= cqe->user_data == TAG_FINI;
		close_cq_accepts(u);
		if (done && !io_uring_cq_has_overflow(&u->ring))
			return;
	}
}

static void u_fini(struct weft__worker *w)
{
	struct uring *u = U(w);

	/* Every op's task has finished, so nothing of ours is in flight but
	 * the kick read and multishots: close_unreaped_accepts() cancels
	 * them where it may, closing the ring cancels the rest. */
	close_unreaped_accepts(u);
	io_uring_queue_exit(&u->ring);
	weft__free(u->delayed); /* empty: every op's task has finished */
	pbuf_free(u);
	close(u->efd);
	weft__io_worker_fini(&u->common);
	weft__free(u);
	w->io = NULL;
}

static unsigned reap(struct weft__worker *w);
/* Submit what is prepared; with DEFER_TASKRUN (or COOP) also run the
 * completions due. Errors leave the SQEs queued for the next round. */
static void enter(struct uring *u)
{
	int r;

	weft__io_stat_inc(&u->common.enters);
	if (weft__fault(WEFT__F_URING_ENTER))
		return; /* as -EINTR/-EBUSY: the next round retries */
	if (io_uring_sq_ready(&u->ring))
		r = io_uring_submit_and_get_events(&u->ring);
	else
		r = io_uring_get_events(&u->ring);
	(void)r; /* -EINTR, -EAGAIN, -EBUSY: retried by the next round */
}

static struct io_uring_sqe *get_sqe(struct weft__worker *w)
{
	struct uring *u = U(w);
	struct io_uring_sqe *sqe;

	while (!(sqe = io_uring_get_sqe(&u->ring))) {
		/* SQ full: submit, and make CQ room for what completes. */
		enter(u);
		if (reap(w))
			weft__notify(w->rt);
	}
	return sqe;
}

static void arm_kick(struct weft__worker *w)
{
	struct uring *u = U(w);
	struct io_uring_sqe *sqe = get_sqe(w);

	io_uring_prep_read(sqe, u->efd, &u->efd_val, sizeof(u->efd_val), 0);
	io_uring_sqe_set_data64(sqe, TAG_KICK);
	u->kick_armed = true;
}

static void u_start(struct weft__worker *w)
{
	struct uring *u = U(w);

	if (u->disabled) {
		/* Debian's liburing 2.3 declares io_uring_enable_rings() but
		 * does not export it: the register call, directly. */
		int r = (int)syscall(__NR_io_uring_register, u->ring.ring_fd,
				     IORING_REGISTER_ENABLE_RINGS, NULL, 0);
		if (r < 0)
			r = -errno;
		if (r)
			weft__report("io_uring: enabling the ring of worker %u "
				     "failed (%s)",
				     w->index, strerror(-r));
	}
	pbuf_setup(w);
	arm_kick(w);
}

static void u_arm(struct weft__worker *w, struct weft__io_op *op)
{
	struct uring *u = U(w);
	struct io_uring_sqe *sqe = get_sqe(w);
	unsigned len = (unsigned)op->len; /* callers clamp (MAX_RW_COUNT) */

	switch (op->opcode) {
	case WEFT__OP_POLL:
		io_uring_prep_poll_add(sqe, op->fd, op->poll_events);
		break;
	case WEFT__OP_READ:
		io_uring_prep_read(sqe, op->fd, op->buf, len, (__u64)op->off);
		break;
	case WEFT__OP_WRITE:
		io_uring_prep_write(sqe, op->fd, op->buf, len, (__u64)op->off);
		break;
	case WEFT__OP_READV:
		io_uring_prep_readv(sqe, op->fd, op->buf, len, (__u64)op->off);
		break;
	case WEFT__OP_WRITEV:
		io_uring_prep_writev(sqe, op->fd, op->buf, len, (__u64)op->off);
		break;
	case WEFT__OP_RECV:
		io_uring_prep_recv(sqe, op->fd, op->buf, len, op->flags);
		break;
	case WEFT__OP_SEND:
		io_uring_prep_send(sqe, op->fd, op->buf, len,
				   op->flags | MSG_NOSIGNAL);
		break;
	case WEFT__OP_RECVMSG:
		io_uring_prep_recvmsg(sqe, op->fd, op->buf,
				      (unsigned)op->flags);
		break;
	case WEFT__OP_SENDMSG:
		io_uring_prep_sendmsg(sqe, op->fd, op->buf,
				      (unsigned)op->flags | MSG_NOSIGNAL);
		break;
	case WEFT__OP_ACCEPT:
		io_uring_prep_accept(sqe, op->fd, op->buf, op->addrlen,
				     SOCK_CLOEXEC);
		break;
	case WEFT__OP_CONNECT:
		io_uring_prep_connect(sqe, op->fd, op->buf, (socklen_t)op->len);
		break;
	case WEFT__OP_OPEN:
		io_uring_prep_openat(sqe, AT_FDCWD, op->buf,
				     op->flags | O_CLOEXEC, (mode_t)op->off);
		break;
	case WEFT__OP_FSYNC:
		io_uring_prep_fsync(sqe, op->fd, 0);
		break;
	case WEFT__OP_RECV_MULTISHOT:
		/* 6.0+; ms_ready() said the buffer ring is there */
		io_uring_prep_recv_multishot(sqe, op->fd, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = BGID;
		op->ud = (uint64_t)(uintptr_t)op | UD_MULTISHOT |
			 ((uint64_t)++u->gen << UD_GEN_SHIFT);
		io_uring_sqe_set_data64(sqe, op->ud);
		u->inflight++;
		return;
	case WEFT__OP_ACCEPT_MULTISHOT:
		/* no addresses: one buffer cannot serve many connections */
		io_uring_prep_multishot_accept(sqe, op->fd, NULL, NULL,
					       SOCK_CLOEXEC);
		if (test_accept_ms_einval())
			sqe->len = 1; /* rejected: -EINVAL, as before 5.19 */
		op->ud = (uint64_t)(uintptr_t)op | UD_ACCEPT_MS |
			 ((uint64_t)++u->gen << UD_GEN_SHIFT);
		io_uring_sqe_set_data64(sqe, op->ud);
		u->inflight++;
		return;
	default:
		WEFT__BUG_ON(1);
	}
	op->ud = (uint64_t)(uintptr_t)op | ((uint64_t)++u->gen << UD_GEN_SHIFT);
	io_uring_sqe_set_data64(sqe, op->ud);
	u->inflight++;
}

/* An SQE got by submitting only (reaping here could complete, and let go
 * of, ops our caller is still looking at), or NULL. */
static struct io_uring_sqe *get_sqe_submitting(struct uring *u)
{
	struct io_uring_sqe *sqe;

	if (weft__fault(WEFT__F_SQ_FULL))
		return NULL; /* tests: as a full SQ that submitting cannot drain */
	for (int i = 0; !(sqe = io_uring_get_sqe(&u->ring)); i++) {
		if (i == 8)
			return NULL;
		io_uring_submit(&u->ring);
	}
	return sqe;
}

static void prep_cancel(struct io_uring_sqe *sqe, struct weft__io_op *op)
{
	/* Its result (0, -ENOENT, -EALREADY) does not matter: the target's
	 * own CQE still comes and ends the wait. */
	io_uring_prep_cancel64(sqe, op->ud, 0);
	io_uring_sqe_set_data64(sqe, TAG_CANCEL);
}

static void u_cancel(struct weft__worker *w, struct weft__io_op *op)
{
	struct io_uring_sqe *sqe = get_sqe_submitting(U(w));

	if (!sqe)
		sqe = get_sqe(w); /* the CQ is full too: reap after all */
	prep_cancel(sqe, op);
}

static bool u_cancel_try(struct weft__worker *w, struct weft__io_op *op)
{
	struct io_uring_sqe *sqe = get_sqe_submitting(U(w));

	if (sqe)
		prep_cancel(sqe, op);
	return sqe != NULL;
}

#define REAP_BATCH 256

static inline bool is_multishot(uint64_t ud)
{
	return (ud & UD_MULTISHOT) && ud != TAG_KICK &&
	       ud != LIBURING_UDATA_TIMEOUT;
}

static inline bool is_accept_ms(uint64_t ud)
{
	return (ud & UD_ACCEPT_MS) && ud != TAG_CANCEL &&
	       ud != LIBURING_UDATA_TIMEOUT;
}

static unsigned accept_ms_cqe(struct weft__worker *w, struct io_uring_cqe *cqe)
{
	struct weft__io_op *op =
		(struct weft__io_op *)(uintptr_t)(cqe->user_data & UD_PTR_MASK &
						  ~(uint64_t)UD_ACCEPT_MS);
	bool more = cqe->flags & IORING_CQE_F_MORE;

	if (!more)
		U(w)->inflight--;
	return weft__io_acceptq_cqe(w, op, cqe->res, more);
}

static unsigned ms_cqe(struct weft__worker *w, struct io_uring_cqe *cqe)
{
	struct uring *u = U(w);
	uint64_t ud = cqe->user_data;
	struct weft__io_op *op =
		(struct weft__io_op *)(uintptr_t)(ud & UD_PTR_MASK &
						  ~(uint64_t)UD_MULTISHOT);
	unsigned fl = cqe->flags;
	unsigned bid = fl >> IORING_CQE_BUFFER_SHIFT;
	bool more = fl & IORING_CQE_F_MORE;
	char *buf = NULL;

	if (fl & IORING_CQE_F_BUFFER)
		buf = u->bufs + (size_t)bid * u->pbuf_sz;
	if (!more)
		u->inflight--;
	return weft__io_stream_cqe(w, op, cqe->res, more, buf, bid);
}

/*
 * Is this completion stale (RELIABILITY D11)? Its op has ended, is being
 * armed again (owner NULL), was armed since on another worker, or on this
 * one with a new generation in op->ud. The kernel posts one CQE per
 * single-shot op and weft waits for it before the op's frame may end, so
 * only a kernel or reactor bug (or the cqe_stale fault) gets here;
 * completing it would hand the new op an old result while the kernel
 * still writes to its buffer. A best effort: the frame is on a task
 * stack, which is usually still mapped (a default stack is cached, maybe
 * with its pages dropped, which read as zeros; a larger one is unmapped
 * when its task ends, and the read would fault); a 16-bit generation that
 * wrapped exactly (65536 arms on this worker in between) is not caught;
 * and the loads race with another worker reusing the frame. ASan is told
 * not to check the reads: on the stale path they look at a dead frame,
 * which is the point.
 */
__attribute__((no_sanitize("address"))) static bool
op_is_stale(const struct weft__worker *w, struct weft__io_op *op, uint64_t ud)
{
	return op->owner != w || op->ud != ud ||
	       atomic_load_explicit(&op->done, memory_order_relaxed);
}

/* The completion of a single-shot op. */
static unsigned op_cqe(struct weft__worker *w, struct uring *u, uint64_t ud,
		       int res)
{
	struct weft__io_op *op =
		(struct weft__io_op *)(uintptr_t)(ud & UD_PTR_MASK);

	if (WEFT__UNLIKELY(op_is_stale(w, op, ud))) {
		weft__io_stat_inc(&u->common.stale_cqes);
		return 0;
	}
	/* write(2) on a socket or pipe whose reader is gone raised SIGPIPE
	 * in this thread. */
	if (res == -EPIPE &&
	    (op->opcode == WEFT__OP_WRITE || op->opcode == WEFT__OP_WRITEV))
		weft__io_drain_sigpipe();
	u->inflight--;
	return weft__io_complete(w, op, res);
}

/* The completion of one of weft's ASYNC_CANCELs: nothing to do (see
 * prep_cancel()), but test builds may rewrite its result ("cancel_res"),
 * which must not matter either. */
static void cancel_cqe(int res)
{
	int v = weft__fault(WEFT__F_CANCEL_RES);

	if (v)
		res = v == WEFT_TEST_FAULT_RES0 ? 0 : -v;
	(void)res;
}

static void publish_held(struct uring *u)
{
	atomic_store_explicit(&u->held_pub, u->ndelayed, memory_order_relaxed);
}

/*
 * "cqe_delay:D", "cancel_delay:D", "cqe_stale:K" (test builds): hold a
 * completion back for D reaps (@replay: a copy of one already handled).
 * Return: whether it was held (a full buffer or no memory: handled now).
 * An op stays in flight meanwhile, so its task waits as for a slow
 * kernel, and a cancel's own completion overtakes its target's.
 */
static bool delay_cqe(struct uring *u, unsigned d, uint64_t ud, int res,
		      bool replay)
{
	if (!u->delayed) {
		u->delayed = weft__alloc(DELAY_MAX * sizeof(*u->delayed));
		if (!u->delayed)
			return false;
	}
	if (u->ndelayed == DELAY_MAX)
		return false;
	u->delayed[u->ndelayed++] = (struct delayed_cqe){ .ud = ud,
							  .res = res,
							  .due = u->reaps + d,
							  .replay = replay };
	publish_held(u);
	return true;
}

/* Handle a single-shot op's completion now; "cqe_stale:K" (test builds)
 * also replays it K reaps later (RELIABILITY D11). */
static unsigned handle_op(struct weft__worker *w, struct uring *u, uint64_t ud,
			  int res, bool replay)
{
	unsigned k;

	if (res == -ECANCELED) {
		int e = weft__fault(WEFT__F_CANCEL_TARGET);
		if (e)
			res = -e;
	}
	if (!replay && (k = (unsigned)weft__fault(WEFT__F_CQE_STALE)) &&
	    delay_cqe(u, k, ud, res, true))
		atomic_fetch_add_explicit(&u->replayed, 1,
					  memory_order_relaxed);
	return op_cqe(w, u, ud, res);
}

/* Handle the held completions that are due (all when @all), in order,
 * the ops' before the cancels' ("cancel_delay": a cancel's completion
 * comes after its target's when both are due). */
static unsigned undelay(struct weft__worker *w, struct uring *u, bool all)
{
	unsigned woken = 0, kept = 0;

	/* handle_op() may append a replay: count it in as it comes */
	for (unsigned i = 0; i < u->ndelayed; i++) {
		struct delayed_cqe c = u->delayed[i];
		if (!all && (int)(u->reaps - c.due) < 0)
			u->delayed[kept++] = c;
		else if (c.ud != TAG_CANCEL)
			woken += handle_op(w, u, c.ud, c.res, c.replay);
		else
			u->delayed[kept++] =
				(struct delayed_cqe){ .ud = TAG_CANCEL,
						      .res = c.res,
						      .due = u->reaps };
	}
	u->ndelayed = kept;
	kept = 0;
	for (unsigned i = 0; i < u->ndelayed; i++) {
		struct delayed_cqe c = u->delayed[i];
		if (c.ud == TAG_CANCEL && (all || (int)(u->reaps - c.due) >= 0))
			cancel_cqe(c.res);
		else
			u->delayed[kept++] = c;
	}
	u->ndelayed = kept;
	publish_held(u);
	return woken;
}

/* Reap every CQE there is. Return: tasks made runnable. */
static unsigned reap(struct weft__worker *w)
{
	struct uring *u = U(w);
	struct io_uring_cqe *cqes[REAP_BATCH];
	unsigned woken = 0, n;

	/* Test builds: ring faults (runtime/fault.c). */
	unsigned k = (unsigned)weft__fault(WEFT__F_REAP_K);
	unsigned seed = (unsigned)weft__fault(WEFT__F_CQE_SHUFFLE);
	unsigned delay = (unsigned)weft__fault(WEFT__F_CQE_DELAY);
	unsigned cdelay = (unsigned)weft__fault(WEFT__F_CANCEL_DELAY);
	bool holding = delay || cdelay || weft__fault(WEFT__F_CQE_STALE);

	if (WEFT__UNLIKELY(u->ndelayed || holding)) {
		u->reaps++;
		woken += undelay(w, u, !holding);
	}
	for (;;) {
		n = io_uring_peek_batch_cqe(&u->ring, cqes,
					    k && k < REAP_BATCH ? k : REAP_BATCH);
		/* Multishot completions in CQ order: each carries the next
		 * bytes of its stream. */
		for (unsigned i = 0; i < n; i++)
			if (is_multishot(cqes[i]->user_data))
				woken += ms_cqe(w, cqes[i]);
			else if (is_accept_ms(cqes[i]->user_data))
				woken += accept_ms_cqe(w, cqes[i]);
		for (unsigned i = n; seed && i > 1; i--) {
			unsigned j = (seed = seed * 1103515245u + 12345u) % i;
			struct io_uring_cqe *c = cqes[i - 1];
			cqes[i - 1] = cqes[j];
			cqes[j] = c;
			seed |= 1; /* never 0: still armed */
		}
		/* Newest first: the woken tasks go to the deque, whose owner
		 * takes the newest first, so the oldest completion runs
		 * first (FIFO within a batch: a fair tail at 1000s of
		 * connections). */
		for (unsigned i = n; i-- > 0;) {
			uint64_t ud = cqes[i]->user_data;
			int res = cqes[i]->res;

			if (ud == TAG_KICK) {
				u->kick_armed = false;
			} else if (ud == TAG_CANCEL) {
				if (!cdelay ||
				    !delay_cqe(u, cdelay, ud, res, false))
					cancel_cqe(res);
			} else if (ud == LIBURING_UDATA_TIMEOUT) {
				/* nothing to do */
			} else if (is_multishot(ud) || is_accept_ms(ud)) {
				/* done by the forward pass above */
			} else if (!delay ||
				   !delay_cqe(u, delay, ud, res, false)) {
				woken += handle_op(w, u, ud, res, false);
			}
		}
		io_uring_cq_advance(&u->ring, n);
		if (k)
			return woken; /* the rest next tick */
		if (n == REAP_BATCH)
			continue;
		/* NODROP: completions the CQ had no room for wait in the
		 * kernel; get_events flushes them into the CQ. Counted once
		 * per flush (weft_io_stats.cq_overflows); the kernel's own
		 * counter (koverflow) counts only what it dropped. */
		if (io_uring_cq_has_overflow(&u->ring)) {
			unsigned dropped =
				IO_URING_READ_ONCE(*u->ring.cq.koverflow);
			weft__io_stat_inc(&u->common.cq_overflows);
			if (dropped !=
			    atomic_load_explicit(&u->common.cq_dropped,
						 memory_order_relaxed))
				atomic_store_explicit(&u->common.cq_dropped,
						      dropped,
						      memory_order_relaxed);
			weft__io_stat_inc(&u->common.enters);
			io_uring_get_events(&u->ring);
			if (io_uring_cq_ready(&u->ring))
				continue;
		}
		return woken;
	}
}

static unsigned u_poll(struct weft__worker *w)
{
	struct uring *u = U(w);
	unsigned woken;

	if (io_uring_sq_ready(&u->ring)) {
		enter(u);
	} else if (u->inflight) {
		/* Enter only for completions the kernel says are waiting;
		 * every 32nd round regardless, in case a kernel does not
		 * raise the flag for some path. */
		unsigned f = IO_URING_READ_ONCE(*u->ring.sq.kflags);
		if (!u->taskrun_flag || (++u->polls & 31) == 0 ||
		    (f & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)))
			enter(u);
	}
	woken = reap(w);
	/* No notify here: the tasks are this worker's next work, and waking
	 * a parked worker to steal them costs a cross-core wake-up (20-25 us
	 * on these VMs) per batch: measured worse on the echo workload. A
	 * busy worker's caller notifies instead (worker.c). */
	return woken;
}

static void u_sleep(struct weft__worker *w, uint64_t deadline_ns)
{
	struct uring *u = U(w);
	struct __kernel_timespec ts, *tsp = NULL;
	struct io_uring_cqe *cqe;

	if (!u->kick_armed)
		arm_kick(w);
	if (WEFT__UNLIKELY(u->ndelayed)) {
		/* held completions (cqe_delay): come back for them soon */
		uint64_t soon = weft__clock_now() + 1000000u;
		if (soon < deadline_ns)
			deadline_ns = soon;
	}
	if (deadline_ns != UINT64_MAX) {
		uint64_t now = weft__clock_now();
		uint64_t d = deadline_ns > now ? deadline_ns - now : 0;
		if (d == 0) {
			enter(u);
			return;
		}
		ts.tv_sec = (long long)(d / 1000000000u);
		ts.tv_nsec = (long long)(d % 1000000000u);
		tsp = &ts;
	}
	weft__io_stat_inc(&u->common.sleeps);
	weft__io_stat_inc(&u->common.enters);
	/* -ETIME, -EINTR, -EBUSY: return; the worker loop reaps and
	 * decides again. */
	(void)io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, tsp, NULL);
}

static void u_kick(struct weft__worker *w)
{
	uint64_t one = 1;
	ssize_t r = write(U(w)->efd, &one, sizeof(one));

	(void)r; /* cannot fail short of a closed fd (a bug) */
}

#ifdef WEFT_TEST_HOOKS
WEFT_API void weft_test_io_ring_counts(struct weft_runtime *h,
				       unsigned long *held,
				       unsigned long *replayed)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;
	unsigned long nh = 0, nr = 0;

	for (unsigned i = 0; rt && rt->io_backend == &weft__io_uring_backend &&
			     i < rt->nworkers;
	     i++) {
		struct uring *u = U(rt->workers[i]);
		if (!u)
			continue;
		/* relaxed: a snapshot; one writer each (the owner) */
		nh += atomic_load_explicit(&u->held_pub, memory_order_relaxed);
		nr += atomic_load_explicit(&u->replayed, memory_order_relaxed);
	}
	if (held)
		*held = nh;
	if (replayed)
		*replayed = nr;
}
#endif

static unsigned u_inflight(struct weft__worker *w)
{
	return U(w)->inflight;
}

const struct weft__io_backend weft__io_uring_backend = {
	.name = "io_uring",
	.native = true,
	.init = u_init,
	.start = u_start,
	.fini = u_fini,
	.arm = u_arm,
	.cancel = u_cancel,
	.poll = u_poll,
	.sleep = u_sleep,
	.kick = u_kick,
	.inflight = u_inflight,
	.ms_ready = u_ms_ready,
	.buf_put = u_buf_put,
	.accept_multishot = true,
	.cancel_try = u_cancel_try,
};
