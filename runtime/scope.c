/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * runtime/scope.c - cancel scopes (deadlines) and shields.
 *
 * A task's open scopes form a LIFO chain through the scopes themselves
 * (they live on the task's stack): t->scope_top is the innermost, each
 * scope points at the one it was entered in. The task keeps one derived
 * value, t->scope_deadline_ns: the earliest own deadline along the chain,
 * stopping at (and including) the innermost shielded scope, because
 * enclosing deadlines are not seen inside a shield. Every suspension point
 * reads it through weft__wait_deadline()/weft__pending_error() (sched.h):
 * a passed deadline fails the call at once without touching a timer; a
 * future one becomes the deadline of the wait, armed on the worker's
 * timer heap only while the task is parked. So entering and leaving a scope
 * is a few stores and never allocates or locks.
 *
 * Shielding: a shielded scope (and weft_shield(), which is one) raises
 * t->shield_depth, which hides J_CANCEL from weft__task_cancel_pending()
 * and keeps waits uncancellable (weft__wait_prepare()); it also hides the
 * deadline of a host the task runs inline under (inherited_deadline_ns),
 * which is saved in the scope and restored at exit. Nothing is lost while
 * shielded: J_CANCEL stays set in the join word and the enclosing deadlines
 * stay in their scopes, so the first suspension point after the exit sees
 * them (level-triggered).
 *
 * Scopes belong to the task that entered them: only it enters, exits and
 * moves them (all of this runs on the task itself, so no atomics). Another
 * thread may read a scope's deadline (weft_scope_deadline()).
 */
#include <errno.h>

#include "runtime/sched.h"
#include "weft/scope.h"

#define SCOPE_OPEN 0x53434f50u /* "SCOP" */
#define SCOPE_SHIELDED 1u
#define SCOPE_EXPIRED 2u	/* its deadline passed before a move */

struct weft__scope {
	uint64_t deadline_ns;		/* own deadline; UINT64_MAX: none */
	struct weft__scope *prev;	/* enclosing scope of the same task */
	struct weft__task *task;	/* the task that entered it */
	uint64_t saved_inherited;	/* shielded: host deadline at entry */
	uint32_t magic;			/* SCOPE_OPEN while open */
	uint32_t flags;			/* SCOPE_* */
	uint16_t shield_depth; /* the task's, inside this scope */
};

_Static_assert(sizeof(struct weft__scope) <= sizeof(weft_scope),
	       "weft_scope too small");
_Static_assert(_Alignof(struct weft__scope) <= _Alignof(weft_scope),
	       "weft_scope under-aligned");

static inline struct weft__scope *S(weft_scope *s)
{
	return (struct weft__scope *)(void *)s;
}

/* The deadline in force at @top: the earliest own deadline from @top
 * outwards, up to the innermost shielded scope. */
static uint64_t chain_deadline(const struct weft__scope *top)
{
	uint64_t d = UINT64_MAX;

	for (const struct weft__scope *s = top; s; s = s->prev) {
		if (s->deadline_ns < d)
			d = s->deadline_ns;
		if (s->flags & SCOPE_SHIELDED)
			break;
	}
	return d;
}

/* Is @s open in @t (anywhere in its chain)? Walks the chain rather than
 * trusting the magic, so an uninitialised stack scope is never mistaken
 * for an open one. */
static bool in_chain(const struct weft__task *t, const struct weft__scope *s)
{
	for (const struct weft__scope *c = t->scope_top; c; c = c->prev)
		if (c == s)
			return true;
	return false;
}

static void scope_open(weft_scope *us, uint64_t deadline_ns, bool shielded,
		       const char *who)
{
	struct weft__task *t = weft__task_current();
	struct weft__scope *s = S(us);

	if (!s || !t) {
		weft__report("%s: %s", who,
			     !s ? "NULL scope" : "called outside a task");
		return;
	}
	if (shielded && t->shield_depth == UINT16_MAX) {
		weft__report("%s: more than %u nested shields in task '%s'",
			     who, UINT16_MAX, t->name);
		return;
	}
	if (in_chain(t, s)) {
		weft__report("%s: scope %p is already open in task '%s'", who,
			     (void *)us, t->name);
		return;
	}
	s->deadline_ns = deadline_ns;
	s->prev = t->scope_top;
	s->task = t;
	s->flags = shielded ? SCOPE_SHIELDED : 0;
	s->saved_inherited = t->inherited_deadline_ns;
	__atomic_store_n(&s->magic, SCOPE_OPEN, __ATOMIC_RELEASE);
	if (shielded) {
		t->shield_depth++;
		t->inherited_deadline_ns = UINT64_MAX;
		t->scope_deadline_ns = deadline_ns;
	} else if (deadline_ns < t->scope_deadline_ns) {
		t->scope_deadline_ns = deadline_ns;
	}
	s->shield_depth = t->shield_depth;
	t->scope_top = s;
	t->scoped = true;
}

WEFT_API void weft_scope_enter_at(weft_scope *s, uint64_t deadline_ns)
{
	scope_open(s, deadline_ns, false, "weft_scope_enter_at");
}

WEFT_API void weft_scope_enter(weft_scope *s, uint64_t timeout_ns)
{
	uint64_t dl = timeout_ns == UINT64_MAX ?
			      UINT64_MAX :
			      weft__deadline_after(weft__clock_now(), timeout_ns);

	scope_open(s, dl, false, "weft_scope_enter");
}

WEFT_API void weft_scope_enter_shielded(weft_scope *s, uint64_t timeout_ns)
{
	uint64_t dl = timeout_ns == UINT64_MAX ?
			      UINT64_MAX :
			      weft__deadline_after(weft__clock_now(), timeout_ns);

	scope_open(s, dl, true, "weft_scope_enter_shielded");
}

/* Pop @s, the innermost scope of @t. Return: whether its deadline passed. */
static bool scope_pop(struct weft__task *t, struct weft__scope *s)
{
	bool expired = (s->flags & SCOPE_EXPIRED) ||
		       (s->deadline_ns != UINT64_MAX &&
			weft__clock_now() >= s->deadline_ns);

	t->scope_top = s->prev;
	if (s->flags & SCOPE_SHIELDED) {
		t->shield_depth--;
		t->inherited_deadline_ns = s->saved_inherited;
	}
	t->scope_deadline_ns = chain_deadline(s->prev);
	__atomic_store_n(&s->magic, 0, __ATOMIC_RELEASE);
	s->task = NULL;
	return expired;
}

WEFT_API int weft_scope_exit(weft_scope *us)
{
	struct weft__task *t = weft__task_current();
	struct weft__scope *s = S(us);

	if (!s || !t) {
		weft__report("weft_scope_exit: %s",
			     !s ? "NULL scope" : "called outside a task");
		return -EINVAL;
	}
	if (t->scope_top != s) {
		bool open = in_chain(t, s);
		weft__report("weft_scope_exit: scope %p %s in task '%s'",
			     (void *)us,
			     open ? "exited out of order: it and the scopes "
				    "inside it are closed" :
				    "is not open",
			     t->name);
		/* Repair (RELIABILITY A10): close s and everything entered
		 * after it, so no forgotten deadline fails later waits;
		 * their own exits then report "not open". */
		if (open) {
			while (t->scope_top != s)
				scope_pop(t, t->scope_top);
			scope_pop(t, s);
		}
		return -EINVAL;
	}
	return scope_pop(t, s) ? -ETIMEDOUT : 0;
}

WEFT_API void weft_scope_set_deadline(weft_scope *us, uint64_t deadline_ns)
{
	struct weft__task *t = weft__task_current();
	struct weft__scope *s = S(us);

	if (!s || !t || !in_chain(t, s)) {
		weft__report("weft_scope_set_deadline: scope %p is not open in "
			     "the calling task",
			     (void *)us);
		return;
	}
	if (s->deadline_ns != UINT64_MAX && weft__clock_now() >= s->deadline_ns)
		s->flags |= SCOPE_EXPIRED;
	__atomic_store_n(&s->deadline_ns, deadline_ns, __ATOMIC_RELAXED);
	t->scope_deadline_ns = chain_deadline(t->scope_top);
}

WEFT_API uint64_t weft_scope_deadline(const weft_scope *us)
{
	const struct weft__scope *s = (const struct weft__scope *)(const void *)us;

	if (!s || __atomic_load_n(&s->magic, __ATOMIC_ACQUIRE) != SCOPE_OPEN)
		return UINT64_MAX;
	return __atomic_load_n(&s->deadline_ns, __ATOMIC_RELAXED);
}

/*
 * The task returned (or a shield's fn returned) with scopes above @keep
 * still open: close them and report once, so the task's deadline and
 * shield depth are consistent again. Those scopes lived in frames that
 * have returned: their memory may hold other frames by now, and this
 * call's own report overwrites it, so they are neither read nor written
 * (walking them once looped forever on a clobbered prev pointer). The
 * state comes from @keep alone, which is in a frame still running. With no
 * @keep (the task's end) the host deadline of an inline run is left as
 * it is: the host restores its own. Context: @t's own task.
 */
void weft__scopes_unwind(struct weft__task *t, void *keep, const char *what)
{
	struct weft__scope *k = keep;

	if (t->scope_top == k)
		return;
	t->scope_top = k;
	if (k) {
		t->shield_depth = k->shield_depth;
		if (k->flags & SCOPE_SHIELDED)
			t->inherited_deadline_ns = UINT64_MAX;
		else
			t->inherited_deadline_ns = k->saved_inherited;
	} else {
		t->shield_depth = 0;
	}
	t->scope_deadline_ns = chain_deadline(k);
	weft__report("task '%s': %s with a cancel scope still open",
		     t->name[0] ? t->name : "<unnamed>", what);
}

WEFT_API int weft_shield(weft_fn fn, void *arg)
{
	struct weft__task *t = weft__task_current();
	weft_scope s;
	int r;

	if (!t)
		return -EPERM;
	if (!fn)
		return -EINVAL;
	scope_open(&s, UINT64_MAX, true, "weft_shield");
	r = fn(arg);
	/* fn ran on this task's stack: t is still the caller (it may run on
	 * another worker now, which does not matter here). */
	weft__scopes_unwind(t, S(&s), "weft_shield's fn returned");
	scope_pop(t, S(&s));
	return r;
}
