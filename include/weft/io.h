/* SPDX-License-Identifier: MIT */
/*
 * weft/io.h - I/O calls that suspend the calling task instead of blocking
 * its worker: sockets, files, readiness, signals.
 *
 * Each call returns what the matching syscall would, or a negative errno,
 * but never -EAGAIN, -EWOULDBLOCK or -EINTR: it waits or retries. Every
 * call that can suspend is a suspension point: it fails with -ECANCELED in
 * a cancelled task and -ETIMEDOUT past a scope's deadline, and called from
 * a thread that is not a weft task it returns -EPERM. An operation that
 * completed before the cancellation took effect returns its result (bytes
 * moved); the next suspension point reports the cancellation. A call
 * returns only once the kernel has let go of its buffers, iovecs, msghdr
 * and address out-parameters, so they may live on the task's stack.
 *
 * Any fd may be passed in, blocking or not, on both backends (io_uring, or
 * epoll where io_uring is unavailable or WEFT_IO=epoll / WEFT_IO_EPOLL asks
 * for it; see weft_io_backend()). Sends and writes never raise SIGPIPE:
 * they return -EPIPE (sends use MSG_NOSIGNAL; for writes, weft's own worker
 * threads keep SIGPIPE blocked and take back the one a write raised: the
 * process's disposition and the masks of your threads are untouched).
 * Descriptors weft makes are close-on-exec. Lengths above the
 * kernel's per-call maximum (0x7ffff000 bytes) are clamped: a short count.
 * Bad arguments give -EINVAL, a negative fd -EBADF.
 */
#ifndef WEFT_IO_H
#define WEFT_IO_H

#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "base.h"

WEFT_EXTERN_C_BEGIN

struct weft_runtime;

/**
 * weft_socket() - socket(2), always close-on-exec.
 * @domain: AF_INET, AF_INET6, AF_UNIX, ...
 * @type: SOCK_STREAM, SOCK_DGRAM, ...; SOCK_CLOEXEC is added.
 * @protocol: as for socket(2).
 *
 * Context: any thread; never suspends.
 * Return: the new fd, or -errno.
 */
WEFT_API int weft_socket(int domain, int type, int protocol);

/**
 * weft_accept() - Wait for and accept a connection on listening socket @fd.
 * @fd: a listening socket.
 * @addr: receives the peer's address, or NULL.
 * @len: in: size of @addr; out: its length. NULL exactly when @addr is.
 *
 * The accepted socket is close-on-exec. A connection the kernel accepted
 * while the caller was being cancelled is returned (completion wins: the
 * cancellation shows at the next suspension point), so it is never lost
 * nor leaked: the caller owns it.
 *
 * Context: task only; suspension point.
 * Return: the new fd; -ECANCELED, -ETIMEDOUT; -EMFILE and the other
 * accept4(2) errors; -EINVAL for bad arguments; -EPERM outside a task.
 */
WEFT_API int weft_accept(int fd, struct sockaddr *addr, socklen_t *len);

/**
 * weft_connect() - Connect socket @fd to @addr, waiting until done.
 * @fd: a socket, blocking or not.
 * @addr: the peer address.
 * @len: its length.
 *
 * Context: task only; suspension point.
 * Return: 0; -ECONNREFUSED, -ETIMEDOUT (also a scope deadline), -ECANCELED
 * and the other connect(2) errors; -EINVAL; -EPERM outside a task.
 */
WEFT_API int weft_connect(int fd, const struct sockaddr *addr, socklen_t len);

/**
 * weft_recv() - Receive up to @len bytes from socket @fd.
 * @fd: a socket.
 * @buf: where to store them.
 * @len: at most this many (clamped to 0x7ffff000).
 * @flags: recv(2) flags; MSG_DONTWAIT is ignored (the call waits).
 *
 * Context: task only; suspension point.
 * Return: bytes received, 0 at end of stream; -ECONNRESET and the other
 * recv(2) errors; -ECANCELED / -ETIMEDOUT if nothing was received (the
 * buffer is then untouched); -EPERM outside a task.
 */
WEFT_API ssize_t weft_recv(int fd, void *buf, size_t len, int flags);

/**
 * weft_send() - Send up to @len bytes on socket @fd (may be short).
 * @fd: a socket.
 * @buf: the bytes.
 * @len: how many (clamped to 0x7ffff000).
 * @flags: send(2) flags; MSG_NOSIGNAL is always added.
 *
 * Context: task only; suspension point.
 * Return: bytes sent; -EPIPE (never SIGPIPE), -ECONNRESET and the other
 * send(2) errors; -ECANCELED / -ETIMEDOUT if nothing was sent.
 */
WEFT_API ssize_t weft_send(int fd, const void *buf, size_t len, int flags);

/**
 * weft_send_all() - Send all @len bytes, looping over short sends.
 * @fd: a socket.
 * @buf: the bytes.
 * @len: how many.
 *
 * Context: task only; suspension point.
 * Return: @len, or the -errno of the send that failed (bytes sent before
 * the failure are lost to the caller).
 */
WEFT_API ssize_t weft_send_all(int fd, const void *buf, size_t len);

/**
 * weft_recvmsg() - recvmsg(2) that waits; works for UDP servers.
 * @fd: a socket.
 * @msg: the message header (may live on the task's stack).
 * @flags: recvmsg(2) flags; MSG_DONTWAIT is ignored.
 *
 * Context: task only; suspension point.
 * Return: bytes received, or -errno as for weft_recv().
 */
WEFT_API ssize_t weft_recvmsg(int fd, struct msghdr *msg, int flags);

/**
 * weft_sendmsg() - sendmsg(2) that waits; MSG_NOSIGNAL is always added.
 * @fd: a socket.
 * @msg: the message header.
 * @flags: sendmsg(2) flags.
 *
 * Context: task only; suspension point.
 * Return: bytes sent, or -errno as for weft_send().
 */
WEFT_API ssize_t weft_sendmsg(int fd, const struct msghdr *msg, int flags);

/**
 * weft_read() - Read up to @len bytes from @fd at @offset.
 * @fd: a file, pipe or socket.
 * @buf: where to store them.
 * @len: at most this many (clamped to 0x7ffff000).
 * @offset: file offset, or -1 for the current position. On a pipe, FIFO,
 *	socket or other stream any offset means the current position, as
 *	io_uring reads them, on both backends (a socket flagged
 *	WEFT_FD_MULTISHOT gives -ESPIPE instead: see weft_fd_set_flags()).
 *
 * On the epoll backend regular files are read with a blocking call.
 *
 * Context: task only; suspension point.
 * Return: bytes read, 0 at end of file; -EINVAL for @offset < -1; -errno.
 */
WEFT_API ssize_t weft_read(int fd, void *buf, size_t len, int64_t offset);

/**
 * weft_write() - Write up to @len bytes to @fd at @offset.
 * @fd: a file, pipe or socket.
 * @buf: the bytes.
 * @len: how many (clamped to 0x7ffff000).
 * @offset: file offset, or -1 for the current position (any offset on a
 *	stream, as weft_read()).
 *
 * Context: task only; suspension point.
 * Return: bytes written; -EPIPE (no SIGPIPE reaches the process), -ENOSPC,
 * -EIO and the other write(2) errors; -EINVAL for @offset < -1.
 */
WEFT_API ssize_t weft_write(int fd, const void *buf, size_t len,
			    int64_t offset);

/**
 * weft_readv() - readv(2)/preadv(2) that waits.
 * @fd: a file, pipe or socket.
 * @iov: the buffers (may live on the task's stack).
 * @iovcnt: how many, 0..IOV_MAX.
 * @offset: file offset, or -1 for the current position (any offset on a
 *	stream, as weft_read()).
 *
 * Context: task only; suspension point.
 * Return: bytes read, or -errno as for weft_read().
 */
WEFT_API ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt,
			    int64_t offset);

/**
 * weft_writev() - writev(2)/pwritev(2) that waits.
 * @fd: a file, pipe or socket.
 * @iov: the buffers.
 * @iovcnt: how many, 0..IOV_MAX.
 * @offset: file offset, or -1 for the current position (any offset on a
 *	stream, as weft_read()).
 *
 * Context: task only; suspension point.
 * Return: bytes written, or -errno as for weft_write().
 */
WEFT_API ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt,
			     int64_t offset);

/**
 * weft_open() - open(2), always close-on-exec.
 * @path: the file.
 * @flags: open(2) flags; O_CLOEXEC is added.
 * @mode: permissions for O_CREAT.
 *
 * An fd opened while the caller was being cancelled is returned
 * (completion wins); the cancellation shows at the next suspension point.
 *
 * Context: task only; suspension point.
 * Return: the new fd, or -errno; -EINVAL for a NULL @path.
 */
WEFT_API int weft_open(const char *path, int flags, mode_t mode);

/**
 * weft_close() - Release @fd.
 * @fd: any descriptor.
 *
 * Always releases the descriptor, even in a cancelled task or past a
 * deadline. Calls other tasks of the caller's runtime have pending on @fd
 * end promptly with -ECANCELED (or -EBADF); a call started on the same fd
 * number after weft_close() returned is not affected. A call racing the
 * close (started while it runs) either ends that way or finds the fd
 * closed (-EBADF): it never keeps waiting on the closed file. From a
 * thread outside any runtime the same holds for the calls of every
 * runtime's tasks (each runtime's workers are asked).
 *
 * On an fd marked WEFT_FD_MULTISHOT (weft_fd_set_flags()), the armed
 * multishot recv is cancelled first and, from a task, waited for
 * (uncancellably, usually a few microseconds) before the close(2), so the
 * socket is really closed when weft_close() returns; bytes received and
 * not yet read are dropped.
 *
 * Context: any thread; never suspends (it may wait, without suspending,
 * for another thread's syscall or arming on @fd to finish), except on a
 * WEFT_FD_MULTISHOT fd in a task, as above.
 * Return: 0, or close(2)'s error (-EBADF, -EIO).
 */
WEFT_API int weft_close(int fd);

/* weft_fd_set_flags() flags */
#define WEFT_FD_MULTISHOT 0x1u /* weft_recv/weft_accept through multishot */

/**
 * weft_fd_set_flags() - Opt @fd into faster paths that need a promise.
 * @fd: a stream socket (TCP, AF_UNIX SOCK_STREAM), connected or listening.
 * @flags: WEFT_FD_MULTISHOT, or 0 (no change).
 *
 * WEFT_FD_MULTISHOT: on the io_uring backend, weft_recv() on @fd is served
 * by one multishot recv that stays armed in the kernel and fills buffers
 * the runtime provides (a ring of 1,024 4 KiB buffers per worker, set up
 * when the worker starts), so a recv that waits costs no submission and
 * no poll arming. weft_recv() copies from those buffers, in order; a short
 * weft_recv() leaves the rest for the next. Its results are those of the
 * plain call: bytes, 0 at end of stream, the socket's error, -ECANCELED /
 * -ETIMEDOUT (bytes that arrive after a cancelled or timed-out recv stay
 * queued for the next one). When the buffers run out, the next weft_recv()
 * is a plain recv, then the multishot is armed again: nothing is lost.
 * Should the runtime run out of memory to queue a received chunk, the
 * bytes before it are delivered and every later weft_recv() returns
 * -ENOMEM (the stream is broken; close it): never a silent gap.
 *
 * THE PROMISE: close @fd only with weft_close(), never with close(2) (nor
 * dup2() over it). The armed recv holds its own reference to the socket:
 * after a close(2) the socket would stay open until its peer closes it.
 * A new fd that weft makes with the same number (weft_accept,
 * weft_socket, weft_open, weft_dial_tcp) drops the stale state, with a
 * report on stderr, so it never sees the old socket's bytes; an fd made
 * by a plain socket(2)/accept(2) is not checked.
 *
 * Every read call goes through the queue, in order: weft_recv() (flags 0,
 * MSG_PEEK, MSG_WAITALL, MSG_TRUNC; MSG_DONTWAIT ignored), weft_read() and
 * weft_readv() (offset -1; another offset gives -ESPIPE, as pread(2) on a
 * socket), and weft_recvmsg() (which then gives no address and no control
 * messages: TCP's are timestamps and TCP_INQ, so do not set the flag on a
 * socket that needs those). Other recv flags (MSG_OOB, MSG_ERRQUEUE) go to
 * the socket. weft_poll() with POLLIN sees queued bytes as readable (and a
 * queued end of stream as POLLIN, with POLLRDHUP if asked; an error as
 * POLLERR) and waits for the multishot's next bytes without taking them; a
 * poll for POLLIN together with other events (POLLPRI, POLLOUT not ready
 * yet) first cancels the multishot, so the socket itself shows everything,
 * and readers read plainly until that poll returns. A stream that holds 16
 * unread chunks stops taking buffers (its multishot is cancelled; TCP flow
 * control then holds the sender back) until a reader empties it. One
 * reader at a time is the sensible use (several are served, in no defined
 * order of bytes between them). A stream serves the tasks of the runtime
 * that set the flag; another runtime's tasks read @fd plainly (do not
 * share such an fd between runtimes). The flag is a hint: on the epoll backend,
 * on a kernel without multishot recv (before 6.0), with WEFT_IO_PBUFS=0
 * and for fds above 65535, the plain paths stay. It lasts until
 * weft_close(), and ends with the runtime.
 *
 * On a listening socket, WEFT_FD_MULTISHOT makes weft_accept() take from
 * one multishot accept (io_uring, Linux 5.19+) that stays armed on one
 * worker: each accepted connection goes to exactly one waiting
 * weft_accept(), or is queued (up to 64; past that the multishot is
 * stopped and the kernel's backlog holds the rest until the queue is
 * drained). Results are those of the plain call: the fd (close-on-exec),
 * addr/len filled with getpeername() (len 0 if the peer is already gone),
 * the error that ended the multishot (-EMFILE, ...) once, -ECANCELED /
 * -ETIMEDOUT taking nothing. weft_close() closes queued connections. The
 * promise is the same. weft_poll() for POLLIN sees queued connections (and
 * a stored error) as readable, and waits for the next connection without
 * taking it; other events are looked at as the call starts. A
 * hint, too: on epoll, under TSan, for fds above 65535 and on kernels
 * without multishot accept, weft_accept() keeps its plain path.
 *
 * Context: task only; never suspends.
 * Return: 0; -ENOTSOCK, -EINVAL (not a stream socket, unknown flags),
 * -EBADF; -ENOMEM; -EPERM outside a task.
 */
WEFT_API int weft_fd_set_flags(int fd, unsigned flags);

/**
 * weft_fsync() - fsync(2) that suspends the task instead of the worker.
 * @fd: an open file.
 *
 * Context: task only; suspension point.
 * Return: 0, or -errno.
 */
WEFT_API int weft_fsync(int fd);

/**
 * weft_poll() - Wait until @fd is ready for @events.
 * @fd: any pollable descriptor.
 * @events: POLLIN, POLLOUT, POLLPRI, ... (POLLERR and POLLHUP always count).
 *
 * Context: task only; suspension point.
 * Return: the revents seen (> 0); -ECANCELED, -ETIMEDOUT; -EBADF.
 */
WEFT_API int weft_poll(int fd, short events);

/* weft_listen_tcp_ex() flags */
#define WEFT_LISTEN_REUSEPORT 0x1u /* SO_REUSEPORT: processes share a port */

/**
 * weft_listen_tcp_ex() - A listening TCP socket on a numeric address.
 * @host: numeric IPv4 or IPv6 address; NULL means 127.0.0.1. A host name
 *	gives -EINVAL (no name resolution).
 * @port: the port; 0 picks an ephemeral one (getsockname tells which).
 * @backlog: listen(2) backlog; <= 0 means SOMAXCONN; the kernel caps it
 *	at net.core.somaxconn.
 * @flags: 0 or WEFT_LISTEN_REUSEPORT, so that several processes (or
 *	runtimes) listening on the same port share its connections.
 *
 * SO_REUSEADDR is always set. The socket is close-on-exec.
 *
 * Context: any thread; never suspends.
 * Return: the listening fd; -EINVAL (a name, unknown flags); -EADDRINUSE
 * and the other socket/bind/listen errors.
 */
WEFT_API int weft_listen_tcp_ex(const char *host, uint16_t port, int backlog,
				unsigned flags);

/**
 * weft_listen_tcp() - weft_listen_tcp_ex() with no flags.
 * @host: numeric address; NULL means 127.0.0.1.
 * @port: the port; 0: ephemeral.
 * @backlog: <= 0: SOMAXCONN.
 *
 * Context: any thread; never suspends.
 * Return: the listening fd, or -errno as for weft_listen_tcp_ex().
 */
WEFT_API int weft_listen_tcp(const char *host, uint16_t port, int backlog);

/**
 * weft_dial_tcp() - Connect to a numeric @host and @port.
 * @host: numeric IPv4 or IPv6 address; a name gives -EINVAL.
 * @port: the port (not 0).
 *
 * The socket is close-on-exec, with TCP_NODELAY.
 *
 * Context: task only; suspension point.
 * Return: the connected fd; -ECONNREFUSED, -ECANCELED, -ETIMEDOUT, ...;
 * -EINVAL; -EPERM outside a task.
 */
WEFT_API int weft_dial_tcp(const char *host, uint16_t port);

/**
 * weft_signal_wait() - Wait for one of the signals in @set.
 * @set: signals to wait for. Every one must be blocked in every thread:
 *	weft's threads inherit the mask of the thread that calls weft_run()
 *	or weft_runtime_new(), so block the set with pthread_sigmask()
 *	before that.
 *
 * Each process-directed signal goes to one waiter whose set holds it, first
 * come first served; with no waiter it stays pending. weft changes no
 * disposition, and no mask but SIGPIPE's in its own worker threads (see
 * the top).
 *
 * Context: task only; suspension point.
 * Return: the signal number; -EINVAL if @set is NULL, empty, or holds a
 * signal not blocked in the calling thread; -ECANCELED, -ETIMEDOUT; -EPERM.
 */
WEFT_API int weft_signal_wait(const sigset_t *set);

/**
 * weft_io_backend() - Which I/O backend a runtime uses.
 * @rt: a runtime; NULL: the caller's runtime (a task or an offloaded
 *	function of it), or outside any runtime, the backend a new runtime
 *	with the default config would pick now.
 *
 * Context: any thread; never suspends.
 * Return: "io_uring" or "epoll" (a static string).
 */
WEFT_API const char *weft_io_backend(const struct weft_runtime *rt);

/**
 * weft_io_backend_of() - The same as weft_io_backend(@rt); kept for code
 * written against weft 0.1's headers.
 * @rt: as for weft_io_backend().
 *
 * Context: any thread; never suspends.
 * Return: "io_uring" or "epoll" (a static string).
 */
WEFT_API const char *weft_io_backend_of(const struct weft_runtime *rt);

/**
 * struct weft_io_stats - reactor counters of one runtime since it started,
 * summed over its workers (a snapshot, not atomic across fields).
 * @enters: io_uring_enter calls (submit, reap, idle sleep); epoll: epoll_wait
 *	calls. Per request served, the cost of the reactor's batching.
 * @sleeps: times a worker slept in the reactor (nothing to run).
 * @cq_overflows: times a worker found completions the kernel had held back
 *	because its completion queue was full (IORING_FEAT_NODROP keeps them;
 *	they are flushed and delivered, none is lost). Non-zero means the
 *	ring is too small for the load: raise weft_config.ring_entries.
 *	Always 0 on epoll.
 * @cq_dropped: completions the kernel dropped outright (its overflow
 *	counter: only without NODROP, or when it had no memory to keep them);
 *	should stay 0. Always 0 on epoll.
 * @stale_cqes: completions ignored because their op had ended or its record
 *	was in use by a newer op (the generation in user_data differed); only
 *	a kernel or weft bug, or a test's fault injection, makes one. Always 0
 *	on epoll.
 * @reserved: zero; new counters take this space.
 */
typedef struct weft_io_stats {
	uint64_t enters, sleeps, cq_overflows, cq_dropped;
	uint64_t stale_cqes;
	uint64_t reserved[11];
} weft_io_stats;

/**
 * weft_io_stats_get() - Read the reactor counters of @rt.
 * @rt: the runtime; NULL: the caller's (a task's or an offload function's).
 * @out: receives the snapshot; all-zero when @rt is NULL and the caller
 *	belongs to no runtime. NULL is ignored.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_io_stats_get(const struct weft_runtime *rt,
				weft_io_stats *out);

WEFT_EXTERN_C_END
#endif /* WEFT_IO_H */
