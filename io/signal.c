/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * io/signal.c - weft_signal_wait: wait for a signal through a signalfd.
 *
 * The contract (API.md): every signal of the set must be blocked in every
 * thread, which weft checks on the calling worker thread (workers inherit
 * the mask of the thread that made the runtime); one that is not gives
 * -EINVAL, since it could be delivered to a handler or kill the process
 * instead. weft changes no mask and no disposition. Each call makes its own
 * non-blocking signalfd, waits until it is readable (weft_poll: a
 * suspension point, on either backend), and reads one siginfo: the kernel
 * dequeues each signal once, so each goes to exactly one waiter.
 */
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "io/backend.h"

WEFT_API int weft_signal_wait(const sigset_t *set)
{
	struct signalfd_siginfo si;
	struct weft__task *t = weft__task_current();
	sigset_t cur;
	int fd, r, n = 0;

	if (!t)
		return -EPERM;
	if (!set)
		return -EINVAL;
	if (pthread_sigmask(SIG_BLOCK, NULL, &cur) != 0)
		return -EINVAL;
	for (int s = 1; s < NSIG; s++) {
		if (sigismember(set, s) != 1)
			continue;
		if (sigismember(&cur, s) != 1)
			return -EINVAL;
		n++;
	}
	if (n == 0)
		return -EINVAL;
	r = weft__pending_error(t);
	if (r)
		return r;
	r = weft__fault(WEFT__F_SIGNALFD);
	fd = r ? (errno = r, -1) : signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t got = read(fd, &si, sizeof(si));
		if (got == (ssize_t)sizeof(si)) {
			r = (int)si.ssi_signo;
			break;
		}
		if (got < 0 && errno != EAGAIN && errno != EINTR) {
			r = -errno;
			break;
		}
		r = weft_poll(fd, POLLIN);
		if (r < 0)
			break;
	}
	close(fd);
	return r;
}
