/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * runtime/group.c - task groups (asyncio.TaskGroup).
 *
 * A group is a lock, a list of its live children, and a small state
 * machine:
 *   OPEN       children may be spawned
 *   FAILING    a child failed: every sibling was cancelled, spawns refused
 *   CANCELLED  weft_group_cancel(), weft_group_free() before the wait, or
 *              the waiting task was interrupted: same, without a failure
 * Children are ordinary tasks nobody owns (task.c: weft__spawn_child): one
 * reference, released when they end, so a finished child's stack and record
 * go back to the caches at once. A child leaves the list in its own task
 * context right after fn returned (task.c: task_finish() calls
 * weft__group_child_done()), under the group lock; so every child on the
 * list is alive and may be cancelled under that lock.
 *
 * The waiter (one task, weft_group_wait) parks through the wait protocol:
 * its publish callback registers it under the lock unless no child is
 * left; the child that brings the live count to zero takes the
 * registration under the lock and claims the wait after unlocking. A
 * registration that went stale (the waiter was cancelled and re-parked)
 * fails on the sequence number.
 *
 * Result of the wait: the first real failure in time, unless the waiter's
 * own interruption (-ECANCELED / -ETIMEDOUT) came before any failure; an
 * explicit weft_group_cancel() is not a failure. Every real failure is
 * kept for weft_group_errors() (growing an array; if that allocation fails
 * the count still grows, the list stops).
 *
 * Lifetime: the group is freed by whoever comes last of weft_group_free()
 * and the last child's exit.
 */
#include <errno.h>
#include <string.h>

#include "runtime/sched.h"
#include "weft/group.h"

enum { G_OPEN = 0, G_FAILING, G_CANCELLED };

#define INLINE_ERRS 8

struct weft_group {
	pthread_mutex_t lock;
	struct weft__runtime *rt;	/* set by the first spawn */
	struct weft__task *head;	/* live children */
	size_t live;
	int state;			/* G_* */
	int first_err;			/* first real failure, 0: none */
	int interrupt;			/* the waiter's interruption, 0: none */
	bool interrupt_first;		/* ... came before any failure */
	bool waiting, waited, freed;
	struct weft__task *waiter;	/* registered by group_publish() */
	uint64_t waiter_word;
	size_t nerrs;			/* every failure, counted */
	size_t errs_cap;		/* room in errs */
	int *errs;			/* inline_errs, or a heap array */
	int inline_errs[INLINE_ERRS];
};

WEFT_API weft_group *weft_group_new(void)
{
	weft_group *g = weft__alloc(sizeof(*g));

	if (!g) {
		errno = ENOMEM;
		return NULL;
	}
	memset(g, 0, sizeof(*g));
	pthread_mutex_init(&g->lock, NULL);
	g->errs = g->inline_errs;
	g->errs_cap = INLINE_ERRS;
	return g;
}

static void group_destroy(weft_group *g)
{
	pthread_mutex_destroy(&g->lock);
	if (g->errs != g->inline_errs)
		weft__free(g->errs);
	weft__free(g);
}

/* Cancel every live child. Context: g->lock held. */
static void cancel_children(weft_group *g)
{
	for (struct weft__task *c = g->head; c; c = c->grp_next)
		weft__task_cancel_internal(c);
}

/* Context: g->lock held. */
static void record_error(weft_group *g, int status)
{
	if (g->nerrs == g->errs_cap) {
		size_t cap = g->errs_cap * 2;
		int *e = weft__alloc(cap * sizeof(*e));
		if (e) {
			memcpy(e, g->errs, g->nerrs * sizeof(*e));
			if (g->errs != g->inline_errs)
				weft__free(g->errs);
			g->errs = e;
			g->errs_cap = cap;
		}
	}
	if (g->nerrs < g->errs_cap)
		g->errs[g->nerrs] = status;
	g->nerrs++;
	if (!g->first_err)
		g->first_err = status;
}

WEFT_API int weft_group_spawn_ex(weft_group *g, const weft_spawn_opts *o,
				 weft_fn fn, void *arg)
{
	struct weft__worker *w = weft__worker_current();
	struct weft__task *t = NULL;
	int err = 0;

	if (!g || !fn || weft__spawn_opts_check(o))
		return -EINVAL;
	if (!w || !w->current)
		return -EPERM;
	pthread_mutex_lock(&g->lock);
	if (g->waited || (g->rt && g->rt != w->rt))
		err = -EINVAL;
	else if (g->state != G_OPEN || g->freed)
		err = -ECANCELED;
	if (!err) {
		t = weft__spawn_child(w, o, fn, arg, g);
		if (t) {
			g->rt = w->rt;
			t->grp_prev = NULL;
			t->grp_next = g->head;
			if (g->head)
				g->head->grp_prev = t;
			g->head = t;
			g->live++;
		} else {
			err = -ENOMEM;
		}
	}
	pthread_mutex_unlock(&g->lock);
	if (err)
		return err;
	/* Linked before it can run, so its exit finds itself on the list;
	 * a cancel between the unlock and here marks it before it starts. */
	weft__ready_fresh(w, t);
	return 0;
}

WEFT_API int weft_group_spawn(weft_group *g, weft_fn fn, void *arg)
{
	return weft_group_spawn_ex(g, NULL, fn, arg);
}

/* A child's fn returned. Context: the child's own task, on its stack. */
void weft__group_child_done(struct weft__task *t)
{
	weft_group *g = t->group;
	struct weft__task *wake = NULL;
	uint64_t word = 0;
	bool destroy;

	pthread_mutex_lock(&g->lock);
	if (t->grp_prev)
		t->grp_prev->grp_next = t->grp_next;
	else
		g->head = t->grp_next;
	if (t->grp_next)
		t->grp_next->grp_prev = t->grp_prev;
	t->grp_prev = t->grp_next = NULL;
	t->group = NULL;
	g->live--;
	if (t->status < 0 && t->status != -ECANCELED) {
		record_error(g, t->status);
		if (g->state == G_OPEN) {
			g->state = G_FAILING;
			cancel_children(g);
		}
	}
	if (g->live == 0 && g->waiter) {
		wake = g->waiter;
		word = g->waiter_word;
		g->waiter = NULL;
	}
	destroy = g->live == 0 && g->freed;
	pthread_mutex_unlock(&g->lock);
	if (wake)
		weft__wait_claim(wake, word, WEFT__WAKE_SOURCE);
	if (destroy)
		group_destroy(g);
}

static void group_publish(struct weft__task *self, struct weft__wait *wt)
{
	weft_group *g = wt->obj;
	bool none;

	pthread_mutex_lock(&g->lock);
	none = g->live == 0;
	if (!none) {
		g->waiter = self;
		g->waiter_word = wt->word;
	}
	pthread_mutex_unlock(&g->lock);
	if (none)
		weft__wait_try_claim(self, wt->word, WEFT__WAKE_SOURCE);
}

WEFT_API int weft_group_wait(weft_group *g)
{
	struct weft__task *self = weft__task_current();
	int interrupted = 0, r;

	if (!self)
		return -EPERM;
	if (!g)
		return -EINVAL;
	pthread_mutex_lock(&g->lock);
	if (g->rt && g->rt != self->rt) {
		/* API.md: a group belongs to one runtime (its first spawn's) */
		pthread_mutex_unlock(&g->lock);
		weft__report("weft_group_wait: group %p belongs to another "
			     "runtime",
			     (void *)g);
		return -EINVAL;
	}
	if (g->waiting || g->waited || g->freed) {
		const char *why = g->waiting ? "already being waited on" :
				  g->waited  ? "already waited for" :
					       "freed";
		pthread_mutex_unlock(&g->lock);
		weft__report("weft_group_wait: group %p is %s", (void *)g, why);
		return -EINVAL;
	}
	g->waiting = true;
	pthread_mutex_unlock(&g->lock);

	for (;;) {
		bool left;

		/* Checked before "all done": an interruption is reported
		 * even when nothing was left to wait for (API.md). */
		if (!interrupted) {
			interrupted = weft__pending_error(self);
			if (interrupted) {
				pthread_mutex_lock(&g->lock);
				g->interrupt = interrupted;
				g->interrupt_first = !g->first_err;
				if (g->state == G_OPEN)
					g->state = G_CANCELLED;
				cancel_children(g);
				pthread_mutex_unlock(&g->lock);
			}
		}
		pthread_mutex_lock(&g->lock);
		left = g->live != 0;
		if (!left) {
			g->waiting = false;
			g->waited = true;
			g->waiter = NULL;
		}
		pthread_mutex_unlock(&g->lock);
		if (!left)
			break;

		struct weft__wait wt = {
			.publish = group_publish,
			.obj = g,
			.deadline_ns = interrupted ? UINT64_MAX :
						     weft__wait_deadline(self),
		};
		wt.word = weft__wait_prepare(self, !interrupted);
		weft__set_wait_kind(self, WEFT__WK_JOIN); /* for dumps */
		weft__wait_park(self, &wt);
	}
	/* No child is left and waited is set: nobody else writes these. */
	pthread_mutex_lock(&g->lock);
	if (g->interrupt && g->interrupt_first)
		r = g->interrupt;
	else if (g->first_err)
		r = g->first_err;
	else
		r = 0;
	pthread_mutex_unlock(&g->lock);
	return r;
}

WEFT_API void weft_group_cancel(weft_group *g)
{
	if (!g) {
		weft__report("weft_group_cancel: NULL group");
		return;
	}
	pthread_mutex_lock(&g->lock);
	if (g->state == G_OPEN)
		g->state = G_CANCELLED;
	cancel_children(g);
	pthread_mutex_unlock(&g->lock);
}

WEFT_API size_t weft_group_errors(const weft_group *cg, int *errs, size_t max)
{
	weft_group *g = (weft_group *)cg;
	size_t n;

	if (!g)
		return 0;
	pthread_mutex_lock(&g->lock);
	n = g->nerrs;
	if (errs) {
		size_t kept = n < g->errs_cap ? n : g->errs_cap;
		size_t want = n < max ? n : max;
		memcpy(errs, g->errs, (kept < want ? kept : want) * sizeof(*errs));
		/* Failures that came after the list could not grow: their
		 * statuses are gone, and say so rather than leave holes. */
		for (size_t i = kept; i < want; i++)
			errs[i] = -ENOMEM;
	}
	pthread_mutex_unlock(&g->lock);
	return n;
}

WEFT_API void weft_group_free(weft_group *g)
{
	bool destroy;

	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	if (g->waiting || g->freed) {
		bool waiting = g->waiting;
		pthread_mutex_unlock(&g->lock);
		weft__report("weft_group_free: group %p %s", (void *)g,
			     waiting ? "is being waited on: not freed" :
				       "was already freed");
		return;
	}
	g->freed = true;
	if (g->state == G_OPEN)
		g->state = G_CANCELLED;
	cancel_children(g);
	destroy = g->live == 0;
	pthread_mutex_unlock(&g->lock);
	if (destroy)
		group_destroy(g);
}
