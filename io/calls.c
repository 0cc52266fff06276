/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * io/calls.c - weft's I/O calls: check the caller and the arguments, build
 * an op on the task's stack, run it through weft__io_exec(), shape the
 * result. Also the non-blocking attempts the readiness (epoll) backend
 * makes (weft__io_try) and the SIGPIPE rule.
 *
 * Rules every call follows (API.md, I/O):
 *  - outside a task: -EPERM; bad arguments: -EINVAL / -EBADF, the same on
 *    both backends; then the pending cancellation or deadline; then the op.
 *  - never -EAGAIN, -EWOULDBLOCK, -EINTR: the op waits for readiness and
 *    is retried (weft__io_exec). MSG_DONTWAIT from the caller is dropped.
 *  - lengths above the kernel's per-call maximum (MAX_RW_COUNT,
 *    INT_MAX & PAGE_MASK = 0x7ffff000) are clamped: the call returns a
 *    short count, as read(2) does; io_uring's 32-bit length would
 *    otherwise truncate them silently (RELIABILITY H4).
 *  - sends carry MSG_NOSIGNAL. A write(2)-style call on a socket or pipe
 *    whose reader is gone raises SIGPIPE in the thread that made it; weft
 *    blocks SIGPIPE in its worker threads (io/uring.c, io/epoll.c start)
 *    and drops such a pending thread-directed SIGPIPE right after the
 *    -EPIPE, so the process survives whatever the disposition is.
 */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io/backend.h"

#define MAX_RW ((size_t)0x7ffff000)

/* ------------------------------------------------------------ SIGPIPE */

void weft__io_block_sigpipe(void)
{
	sigset_t s;

	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
}

void weft__io_drain_sigpipe(void)
{
	static const struct timespec zero = { 0, 0 };
	sigset_t s, pend;

	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	/* The failed write raised SIGPIPE on this thread (blocked here, so
	 * pending). sigpending() also shows a process-directed SIGPIPE (the
	 * user's), but sigtimedwait() dequeues the thread's own pending
	 * signal before the process's, so ours is the one taken. */
	if (sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE))
		sigtimedwait(&s, NULL, &zero);
}

/* ------------------------------------------------------------ attempts */

static ssize_t sys_call(struct weft__io_op *op)
{
	ssize_t r;

	switch (op->opcode) {
	case WEFT__OP_READ:
		r = op->off < 0 ? read(op->fd, op->buf, op->len) :
				  pread(op->fd, op->buf, op->len, op->off);
		break;
	case WEFT__OP_WRITE:
		r = op->off < 0 ? write(op->fd, op->buf, op->len) :
				  pwrite(op->fd, op->buf, op->len, op->off);
		break;
	case WEFT__OP_READV:
		r = op->off < 0 ?
			    readv(op->fd, op->buf, (int)op->len) :
			    preadv(op->fd, op->buf, (int)op->len, op->off);
		break;
	case WEFT__OP_WRITEV:
		r = op->off < 0 ?
			    writev(op->fd, op->buf, (int)op->len) :
			    pwritev(op->fd, op->buf, (int)op->len, op->off);
		break;
	case WEFT__OP_OPEN:
		r = openat(AT_FDCWD, op->buf, op->flags | O_CLOEXEC,
			   (mode_t)op->off);
		break;
	case WEFT__OP_FSYNC:
		r = fsync(op->fd);
		break;
	default:
		return -EINVAL;
	}
	if (r < 0 && errno == ESPIPE && op->off >= 0 &&
	    op->opcode != WEFT__OP_OPEN && op->opcode != WEFT__OP_FSYNC) {
		/* A pipe, FIFO or socket: io_uring ignores the offset of
		 * such a file, so the epoll backend does too (io.h); for
		 * good, so a retry after EAGAIN does not fail the same way. */
		op->off = -1;
		return sys_call(op);
	}
	if (r < 0) {
		r = -errno;
		if (r == -EPIPE)
			weft__io_drain_sigpipe();
	}
	return r;
}

static ssize_t ready_now(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };
	int r = poll(&p, 1, 0);

	if (r < 0)
		return -errno;
	if (r == 0)
		return -EAGAIN;
	if (p.revents & POLLNVAL)
		return -EBADF;
	return p.revents;
}

static bool is_write(int opcode)
{
	return opcode == WEFT__OP_WRITE || opcode == WEFT__OP_WRITEV;
}

/* read/write family on the readiness backend. */
static ssize_t try_rw(struct weft__io_op *op)
{
	struct stat st;
	int fl;
	ssize_t r;

	/* Counted in on the fd (see try_socket()), but not across the
	 * offload of a file call: it suspends. */
	weft__io_fd_enter(op->fd);
	if (fstat(op->fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISDIR(st.st_mode)) {
		weft__io_fd_exit(op->fd);
		return weft__io_blocking_call(sys_call, op);
	}
	fl = fcntl(op->fd, F_GETFL);
	if (fl < 0) {
		r = -errno;
		goto out;
	}
	if (!(fl & O_NONBLOCK)) {
		/* A blocking pipe, tty or socket: make the call only once
		 * it is ready, so it returns at once. */
		r = ready_now(op->fd, is_write(op->opcode) ? POLLOUT : POLLIN);
		if (r < 0)
			goto out;
	}
	r = sys_call(op);
	if (r == -EWOULDBLOCK)
		r = -EAGAIN;
out:
	weft__io_fd_exit(op->fd);
	return r;
}

/* Plain accepts on blocking listeners, one at a time per stripe: with two
 * callers between the readiness check and accept4(), both could see the
 * one queued connection and the loser would block its worker in accept4()
 * (and a weft_close, waiting for that use of the fd to end, spin forever):
 * the epoll backend and TSan builds. */
static pthread_mutex_t accept_locks[16] = {
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
};

static ssize_t try_accept(struct weft__io_op *op)
{
	pthread_mutex_t *lk = NULL;
	ssize_t r;
	int fl = fcntl(op->fd, F_GETFL);

	if (fl < 0)
		return -errno;
	if (!(fl & O_NONBLOCK)) {
		/* A blocking listener: accept only when a connection is
		 * queued (a process sharing the listener can still take it
		 * first: API.md, use weft_offload for such fds). */
		lk = &accept_locks[(unsigned)op->fd % 16];
		pthread_mutex_lock(lk);
		r = ready_now(op->fd, POLLIN);
		if (r < 0)
			goto out;
	}
	r = accept4(op->fd, op->buf, op->addrlen, SOCK_CLOEXEC);
	if (r < 0)
		r = errno == EWOULDBLOCK ? -EAGAIN : -errno;
out:
	if (lk)
		pthread_mutex_unlock(lk);
	return r;
}

/* The socket calls: never suspend, so they run counted in on the fd
 * (weft__io_fd_enter: wholly before or after a weft_close's close(2)). */
static ssize_t try_socket(struct weft__io_op *op)
{
	ssize_t r;

	switch (op->opcode) {
	case WEFT__OP_POLL:
		return ready_now(op->fd, (short)op->poll_events);
	case WEFT__OP_RECV:
		r = recv(op->fd, op->buf, op->len, op->flags | MSG_DONTWAIT);
		break;
	case WEFT__OP_SEND:
		r = send(op->fd, op->buf, op->len,
			 op->flags | MSG_DONTWAIT | MSG_NOSIGNAL);
		break;
	case WEFT__OP_RECVMSG:
		r = recvmsg(op->fd, op->buf, op->flags | MSG_DONTWAIT);
		break;
	case WEFT__OP_SENDMSG:
		r = sendmsg(op->fd, op->buf,
			    op->flags | MSG_DONTWAIT | MSG_NOSIGNAL);
		break;
	case WEFT__OP_ACCEPT:
		return try_accept(op);
	default:
		return -EINVAL;
	}
	if (r < 0) {
		r = -errno;
		if (r == -EWOULDBLOCK)
			r = -EAGAIN;
	}
	return r;
}

ssize_t weft__io_try(struct weft__io_op *op)
{
	ssize_t r;

	switch (op->opcode) {
	case WEFT__OP_OPEN:
	case WEFT__OP_FSYNC:
		return weft__io_blocking_call(sys_call, op);
	case WEFT__OP_POLL:
	case WEFT__OP_RECV:
	case WEFT__OP_SEND:
	case WEFT__OP_RECVMSG:
	case WEFT__OP_SENDMSG:
	case WEFT__OP_ACCEPT:
		weft__io_fd_enter(op->fd);
		r = try_socket(op);
		weft__io_fd_exit(op->fd);
		return r;
	default:
		return try_rw(op);
	}
}

/* ------------------------------------------------------------ helpers */

/* The caller as a task, or NULL with *err = -EPERM. */
static struct weft__task *caller(int *err)
{
	struct weft__task *t = weft__task_current();

	*err = t ? 0 : -EPERM;
	return t;
}

static ssize_t run(struct weft__task *t, struct weft__io_op *op)
{
	int err = weft__pending_error(t);

	if (err)
		return err;
	return weft__io_exec(t, op);
}

static void op_init(struct weft__io_op *op, int opcode, int fd)
{
	memset(op, 0, sizeof(*op));
	op->opcode = opcode;
	op->fd = fd;
	op->off = -1;
}

static size_t clamp(size_t len)
{
	size_t k = (size_t)weft__fault(WEFT__F_SHORT_IO); /* tests */

	if (k && len > k)
		len = k;
	return len > MAX_RW ? MAX_RW : len;
}

/* The short_io test site for vectors: @iov cut to its first K bytes in
 * @tmp. Return: the iovecs to use. */
static const struct iovec *clamp_iov(const struct iovec *iov, int *iovcnt,
				     struct iovec tmp[8])
{
	size_t k = (size_t)weft__fault(WEFT__F_SHORT_IO);
	int n = 0;

	if (!k || !iov || *iovcnt <= 0 || *iovcnt > IOV_MAX)
		return iov;
	for (int i = 0; i < *iovcnt && k && n < 8; i++) {
		if (!iov[i].iov_len)
			continue;
		tmp[n] = iov[i];
		if (tmp[n].iov_len > k)
			tmp[n].iov_len = k;
		k -= tmp[n++].iov_len;
	}
	*iovcnt = n;
	return n ? tmp : iov;
}

static ssize_t xfer(int opcode, int fd, void *buf, size_t len, int flags,
		    int64_t off)
{
	struct weft__io_op op;
	struct weft__task *t;
	int err;

	if (!(t = caller(&err)))
		return err;
	if (fd < 0)
		return -EBADF;
	if (len > SSIZE_MAX || (!buf && len) || off < -1)
		return -EINVAL;
	op_init(&op, opcode, fd);
	op.buf = buf;
	op.len = clamp(len);
	op.flags = flags & ~MSG_DONTWAIT;
	op.off = off;
	return run(t, &op);
}

/* ------------------------------------------------------------ the calls */

/* A WEFT_FD_MULTISHOT stream's reads (io/stream.c) take bytes from its
 * queue. Return: whether it handled the read (*r). */
static bool stream_read(int fd, const struct iovec *iov, int iovcnt,
			int flags, ssize_t *r)
{
	struct weft__task *t = weft__task_current();
	bool handled = false;

	if (t && fd >= 0)
		*r = weft__io_stream_read(t, fd, iov, iovcnt,
					  flags & ~MSG_DONTWAIT, &handled);
	return handled;
}

WEFT_API ssize_t weft_recv(int fd, void *buf, size_t len, int flags)
{
	struct iovec v = { buf, clamp(len) };
	ssize_t r;

	if (len <= SSIZE_MAX && (buf || !len || (flags & MSG_TRUNC)) &&
	    stream_read(fd, &v, 1, flags, &r))
		return r;
	return xfer(WEFT__OP_RECV, fd, buf, len, flags, -1);
}

WEFT_API ssize_t weft_send(int fd, const void *buf, size_t len, int flags)
{
	return xfer(WEFT__OP_SEND, fd, (void *)buf, len, flags, -1);
}

WEFT_API ssize_t weft_send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	size_t done = 0;

	if (len > SSIZE_MAX)
		return -EINVAL;
	do {
		ssize_t r = weft_send(fd, p + done, len - done, 0);
		if (r < 0)
			return r;
		done += (size_t)r;
	} while (done < len);
	return (ssize_t)len;
}

WEFT_API ssize_t weft_read(int fd, void *buf, size_t len, int64_t offset)
{
	struct iovec v = { buf, clamp(len) };
	ssize_t r;

	if (offset != -1 && weft__io_is_stream(fd))
		return -ESPIPE; /* as pread(2) on a socket */
	if (len <= SSIZE_MAX && (buf || !len) && stream_read(fd, &v, 1, 0, &r))
		return r;
	return xfer(WEFT__OP_READ, fd, buf, len, 0, offset);
}

WEFT_API ssize_t weft_write(int fd, const void *buf, size_t len, int64_t offset)
{
	return xfer(WEFT__OP_WRITE, fd, (void *)buf, len, 0, offset);
}

static ssize_t xferv(int opcode, int fd, const struct iovec *iov, int iovcnt,
		     int64_t off)
{
	struct weft__io_op op;
	struct weft__task *t;
	int err;

	if (!(t = caller(&err)))
		return err;
	if (fd < 0)
		return -EBADF;
	if (iovcnt < 0 || iovcnt > IOV_MAX || (!iov && iovcnt) || off < -1)
		return -EINVAL;
	op_init(&op, opcode, fd);
	op.buf = (void *)iov;
	op.len = (size_t)iovcnt;
	op.off = off;
	return run(t, &op);
}

WEFT_API ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt,
			    int64_t offset)
{
	struct iovec tmp[8];
	ssize_t r;

	iov = clamp_iov(iov, &iovcnt, tmp);

	if (offset != -1 && weft__io_is_stream(fd))
		return -ESPIPE; /* as preadv(2) on a socket */
	if (stream_read(fd, iov, iovcnt, 0, &r))
		return r;
	return xferv(WEFT__OP_READV, fd, iov, iovcnt, offset);
}

WEFT_API ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt,
			     int64_t offset)
{
	struct iovec tmp[8];

	iov = clamp_iov(iov, &iovcnt, tmp);
	return xferv(WEFT__OP_WRITEV, fd, iov, iovcnt, offset);
}

static ssize_t xmsg(int opcode, int fd, const struct msghdr *msg, int flags)
{
	struct weft__io_op op;
	struct weft__task *t;
	int err;

	if (!(t = caller(&err)))
		return err;
	if (fd < 0)
		return -EBADF;
	if (!msg)
		return -EINVAL;
	op_init(&op, opcode, fd);
	op.buf = (void *)msg;
	op.flags = flags & ~MSG_DONTWAIT;
	return run(t, &op);
}

WEFT_API ssize_t weft_recvmsg(int fd, struct msghdr *msg, int flags)
{
	ssize_t r;

	/* A stream socket gives no address and, from the queue, no control
	 * messages (TCP's are timestamps and TCP_INQ only). */
	if (msg && msg->msg_iovlen <= IOV_MAX &&
	    stream_read(fd, msg->msg_iov, (int)msg->msg_iovlen,
			flags & ~MSG_CMSG_CLOEXEC, &r)) {
		if (r >= 0) {
			msg->msg_namelen = 0;
			msg->msg_controllen = 0;
			msg->msg_flags = 0;
		}
		return r;
	}
	return xmsg(WEFT__OP_RECVMSG, fd, msg, flags);
}

WEFT_API ssize_t weft_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	return xmsg(WEFT__OP_SENDMSG, fd, msg, flags);
}

WEFT_API int weft_accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	struct weft__io_op op;
	struct weft__task *t;
	int err;

	if (!(t = caller(&err)))
		return err;
	if (fd < 0)
		return -EBADF;
	if ((addr && !len) || (!addr && len))
		return -EINVAL;
	/* Injected: as the kernel's EMFILE, the connection stays queued. */
	err = weft__fault(WEFT__F_ACCEPT);
	if (err)
		return -err;
	/* A WEFT_FD_MULTISHOT listener (io/acceptq.c), else the plain op. */
	bool handled;
	err = weft__io_acceptq_accept(t, fd, addr, len, &handled);
	if (!handled) {
		op_init(&op, WEFT__OP_ACCEPT, fd);
		op.buf = addr;
		op.addrlen = len;
		err = (int)run(t, &op);
	}
	if (err >= 0)
		weft__io_stream_forget(err);
	return err;
}

/* The outcome of a connect in progress, once the socket is writable. */
static int connect_wait(struct weft__task *t, int fd)
{
	struct weft__io_op op;
	socklen_t sl = sizeof(int);
	int soerr = 0;
	ssize_t r;

	op_init(&op, WEFT__OP_POLL, fd);
	op.poll_events = POLLOUT;
	r = run(t, &op);
	if (r < 0)
		return (int)r;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		return -errno;
	return -soerr;
}

WEFT_API int weft_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct weft__io_op op;
	struct weft__task *t;
	int err, fl, r;

	if (!(t = caller(&err)))
		return err;
	if (fd < 0)
		return -EBADF;
	if (!addr || len == 0)
		return -EINVAL;
	err = weft__pending_error(t);
	if (err)
		return err;
	if (t->rt->io_backend->native) {
		op_init(&op, WEFT__OP_CONNECT, fd);
		op.buf = (void *)addr;
		op.len = len;
		r = (int)weft__io_exec(t, &op);
		if (r == -EINPROGRESS || r == -EALREADY)
			r = connect_wait(t, fd);
		return r;
	}
	/* Readiness backend: a blocking socket is made non-blocking for the
	 * connect only, so the worker never blocks in connect(2). */
	fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -errno;
	if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	r = connect(fd, addr, len) < 0 ? -errno : 0;
	if (r == -EINPROGRESS || r == -EINTR || r == -EAGAIN)
		r = connect_wait(t, fd);
	if (!(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl);
	return r;
}

WEFT_API int weft_open(const char *path, int flags, mode_t mode)
{
	struct weft__io_op op;
	struct weft__task *t;
	int err;

	if (!(t = caller(&err)))
		return err;
	if (!path)
		return -EINVAL;
	op_init(&op, WEFT__OP_OPEN, -1);
	op.buf = (void *)path;
	op.flags = flags;
	op.off = (int64_t)mode;
	err = (int)run(t, &op);
	if (err >= 0)
		weft__io_stream_forget(err);
	return err;
}

WEFT_API int weft_fsync(int fd)
{
	struct weft__io_op op;
	struct weft__task *t;
	int err;

	if (!(t = caller(&err)))
		return err;
	if (fd < 0)
		return -EBADF;
	op_init(&op, WEFT__OP_FSYNC, fd);
	return (int)run(t, &op);
}

/* Events a socket's wake-up names along with the usual ones
 * (sock_def_readable: IN|PRI|RDNORM|RDBAND; write space: OUT|WRNORM|
 * WRBAND), whatever the socket's state. */
#define WAKE_KEY_EXTRAS (POLLPRI | POLLRDBAND | POLLWRBAND)

int weft__io_poll_fd(struct weft__task *t, int fd, short events)
{
	struct weft__io_op op;
	int r;

	for (;;) {
		op_init(&op, WEFT__OP_POLL, fd);
		op.poll_events = (uint16_t)events;
		r = (int)weft__io_exec(t, &op);
		if (r <= 0 || !(r & WAKE_KEY_EXTRAS) ||
		    !t->rt->io_backend->native)
			return r;
		/* io_uring reports the waker's key, not a fresh poll: ask
		 * the socket itself about those (rarely asked for) bits. */
		struct pollfd p = { fd, (short)(r & WAKE_KEY_EXTRAS), 0 };
		if (poll(&p, 1, 0) < 0)
			return r;
		r = (r & ~WAKE_KEY_EXTRAS) | (p.revents & WAKE_KEY_EXTRAS) |
		    (p.revents & (POLLERR | POLLHUP | POLLNVAL));
		if (r)
			return r;
	}
}

WEFT_API int weft_poll(int fd, short events)
{
	struct weft__task *t;
	int err;

	if (!(t = caller(&err)))
		return err;
	if (fd < 0)
		return -EBADF;
	/* A stream's queued bytes are readable, though the socket no longer
	 * shows them (io/stream.c). */
	bool handled;
	err = weft__io_stream_poll(t, fd, events, &handled);
	if (handled)
		return err;
	/* Likewise a multishot listener's queued connections (acceptq.c). */
	err = weft__io_acceptq_poll(t, fd, events, &handled);
	if (handled)
		return err;
	err = weft__pending_error(t);
	if (err)
		return err;
	return weft__io_poll_fd(t, fd, events);
}

WEFT_API int weft_close(int fd)
{
	int r;

	if (fd < 0)
		return -EBADF;
	/* Ops of other tasks pending on fd end with -ECANCELED (reactor.c:
	 * the close protocol). close(2) never blocks for sockets and files
	 * weft makes; it runs even in a cancelled task (the fd is always
	 * released). EINTR still released the fd on Linux: never retried. */
	/* A WEFT_FD_MULTISHOT stream first: its multishot recv is cancelled
	 * and, in a task, waited for, so the socket ends with the close(2). */
	struct weft__runtime *armed_in = weft__io_stream_close(fd);
	/* Likewise a listener's multishot accept (io/acceptq.c). */
	struct weft__runtime *acc_in = weft__io_acceptq_close(fd);

	weft__io_close_begin(fd);
	r = close(fd) < 0 ? (errno == EINTR ? 0 : -errno) : 0;
	weft__io_close_end_in(fd, armed_in ? armed_in : acc_in);
	return r;
}
