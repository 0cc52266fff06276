/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * io/signal.c - weft_signal_wait: wait for a signal through a signalfd.
 *
 * The contract (API.md): every signal of the set must be blocked in every
 * thread, which weft checks on the calling worker thread (workers inherit
 * the mask of the thread that made the runtime); one that is not gives
 * -EINVAL, since it could be delivered to a handler or kill the process
 * instead. weft changes no mask and no disposition. Each process-directed
 * signal goes to one waiter whose set holds it, first come first served.
 *
 * First come first served, as steps. A process-wide FIFO of waiters, under
 * waiters_lock. Each waiter has a signalfd of its set, an eventfd (its
 * bell) and an epoll fd watching both, and waits until that is readable
 * (weft_poll: a suspension point, on either backend).
 *  1. A waiter enqueues itself at the tail, then dispatches.
 *  2. Dispatch (under the lock): for each waiter from the head, one
 *     non-blocking read of its signalfd; what it reads is that waiter's
 *     signal: it leaves the FIFO, done, and its bell rings. So a signal
 *     goes to the oldest waiter whose set holds it, whichever waiter's
 *     wake-up ran the dispatch (each is woken when a signal of its own set
 *     is pending, so some waiter always dispatches).
 *  3. Woken, a waiter dispatches again, then looks whether it is done;
 *     if not, it waits again (level-triggered: a signal another waiter
 *     took no longer shows, so no spin).
 *  4. Cancelled or timed out: if it was given a signal meanwhile, that
 *     signal is returned (it was dequeued: returning the error would lose
 *     it; the cancellation shows at the next suspension point); else it
 *     leaves the FIFO and returns the error.
 * The kernel dequeues each signal once, so none is delivered twice.
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "io/backend.h"

struct sig_waiter {
	struct weft__list link; /* in waiters, while not done */
	int sfd, bell, ep;
	int signo; /* 0 until done */
};

static pthread_mutex_t waiters_lock = PTHREAD_MUTEX_INITIALIZER;
static struct weft__list waiters = { &waiters, &waiters };

/* Step 2. Context: under waiters_lock. */
static void dispatch(void)
{
	struct weft__list *l, *n;

	for (l = waiters.next; l != &waiters; l = n) {
		struct sig_waiter *w =
			weft__container_of(l, struct sig_waiter, link);
		struct signalfd_siginfo si;
		uint64_t one = 1;

		n = l->next;
		if (read(w->sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
			continue; /* EAGAIN: none of its set is pending */
		w->signo = (int)si.ssi_signo;
		weft__list_del(&w->link);
		/* an eventfd write of 1 cannot fail short of overflow */
		(void)!write(w->bell, &one, sizeof(one));
	}
}

static int waiter_init(struct sig_waiter *w, const sigset_t *set)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int r = weft__fault(WEFT__F_SIGNALFD);

	w->signo = 0;
	w->bell = w->ep = -1;
	w->sfd = r ? (errno = r, -1) :
		     signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (w->sfd < 0)
		return -errno;
	w->bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->bell < 0)
		return -errno;
	w->ep = epoll_create1(EPOLL_CLOEXEC);
	if (w->ep < 0)
		return -errno;
	if (epoll_ctl(w->ep, EPOLL_CTL_ADD, w->sfd, &ev) < 0 ||
	    epoll_ctl(w->ep, EPOLL_CTL_ADD, w->bell, &ev) < 0)
		return -errno;
	return 0;
}

static void waiter_fini(struct sig_waiter *w)
{
	if (w->ep >= 0)
		close(w->ep);
	if (w->bell >= 0)
		close(w->bell);
	if (w->sfd >= 0)
		close(w->sfd);
}

WEFT_API int weft_signal_wait(const sigset_t *set)
{
	struct weft__task *t = weft__task_current();
	struct sig_waiter w;
	sigset_t cur;
	int r, n = 0;

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
	r = waiter_init(&w, set);
	if (r) {
		waiter_fini(&w);
		return r;
	}
	pthread_mutex_lock(&waiters_lock);
	weft__list_add_tail(&waiters, &w.link);
	for (;;) {
		dispatch();
		if (w.signo) {
			r = w.signo;
			break;
		}
		pthread_mutex_unlock(&waiters_lock);
		r = weft_poll(w.ep, POLLIN);
		pthread_mutex_lock(&waiters_lock);
		if (r < 0) {
			if (w.signo)
				r = w.signo; /* dequeued for us: never lost */
			else
				weft__list_del(&w.link);
			break;
		}
	}
	pthread_mutex_unlock(&waiters_lock);
	waiter_fini(&w);
	return r;
}
