/* SPDX-License-Identifier: MIT */
/*
 * weft/scope.h - deadlines (asyncio.timeout) as cancel scopes, and shields.
 *
 * A scope is a stack-allocated value owned by the task that entered it.
 * Inside a scope whose deadline has passed, every suspension point returns
 * -ETIMEDOUT, again and again (level-triggered, like cancellation), until
 * the scope is exited. Scopes nest LIFO; the earliest open deadline applies
 * to the suspension points inside; each scope's exit reports whether its
 * *own* deadline passed. Task cancellation is the outermost scope: when
 * both apply, suspension points return -ECANCELED.
 *
 *	weft_scope s;
 *	weft_scope_enter(&s, WEFT_MSEC(200));
 *	int r = fetch_recommendations(&out);	// its waits fail at 200 ms
 *	if (weft_scope_exit(&s) == -ETIMEDOUT)
 *		use_fallback(&out);
 *
 * A scope arms no timer by itself: its deadline is only given to the waits
 * its task makes inside it, so entering and leaving one costs a few stores.
 *
 * Exit a scope before the function that entered it returns. A task (or a
 * weft_shield() fn) that returns with scopes open is reported on stderr and
 * its scopes are closed without being read. A helper function that returns
 * with its own scope open while the task goes on is not detected: the
 * task's next scope call would read that scope's dead stack memory.
 */
#ifndef WEFT_SCOPE_H
#define WEFT_SCOPE_H

#include "weft/base.h"

WEFT_EXTERN_C_BEGIN

/* 64 bytes, embeddable; an all-zero scope is a valid closed scope. Never
 * copy or move an open one. */
typedef struct weft_scope {
	uint64_t opaque_[8];
} weft_scope;

/**
 * weft_scope_enter() - Open a cancel scope whose deadline is @timeout_ns
 * from now.
 * @s: a closed scope (zeroed, or exited before), on the caller's stack or
 *	in memory that outlives the scope.
 * @timeout_ns: relative; WEFT_FOREVER (or an end that overflows) means no
 *	deadline of its own; 0 means already expired.
 *
 * Misuse (NULL @s, an @s that is already open, a call outside a task) is
 * reported on stderr and changes nothing; the matching weft_scope_exit()
 * then returns -EINVAL.
 *
 * Context: task only; never suspends.
 */
WEFT_API void weft_scope_enter(weft_scope *s, uint64_t timeout_ns);

/**
 * weft_scope_enter_at() - Open a cancel scope with an absolute deadline.
 * @s: as weft_scope_enter().
 * @deadline_ns: on the weft_now() clock; at or before now: expired.
 *
 * Context: task only; never suspends.
 */
WEFT_API void weft_scope_enter_at(weft_scope *s, uint64_t deadline_ns);

/**
 * weft_scope_enter_shielded() - Open a shielded scope: inside it the
 * task's cancellation and the deadlines of enclosing scopes are not seen.
 * @s: as weft_scope_enter().
 * @timeout_ns: the shielded scope's own deadline (relative), which does
 *	apply inside, so cleanup can be bounded; WEFT_FOREVER: none.
 *
 * A cancellation or an enclosing deadline that arrived meanwhile is
 * reported by the first suspension point after the scope's exit.
 * Shutdown waits for shielded code: bound it with @timeout_ns.
 *
 * Context: task only; never suspends.
 */
WEFT_API void weft_scope_enter_shielded(weft_scope *s, uint64_t timeout_ns);

/**
 * weft_scope_exit() - Close the innermost scope.
 * @s: the scope the calling task entered last and has not exited.
 *
 * Context: task only; never suspends.
 * Return: -ETIMEDOUT if this scope's own deadline passed while it was
 * open (even if no wait noticed), else 0; -EINVAL (reported on stderr)
 * for a scope that is not open in this task (nothing changes), or one
 * that is not the innermost: then it is closed together with every scope
 * entered inside it, whose own exits later give -EINVAL.
 */
WEFT_API int weft_scope_exit(weft_scope *s);

/**
 * weft_scope_set_deadline() - Move an open scope's deadline
 * (asyncio's Timeout.reschedule).
 * @s: a scope the calling task has open (any depth).
 * @deadline_ns: the new absolute deadline; WEFT_FOREVER: none.
 *
 * Moving a deadline that has already passed to later does not undo the
 * expiry: the exit still reports -ETIMEDOUT. Misuse is reported and
 * changes nothing.
 *
 * Context: the task that entered @s; never suspends.
 */
WEFT_API void weft_scope_set_deadline(weft_scope *s, uint64_t deadline_ns);

/**
 * weft_scope_deadline() - The scope's own deadline.
 * @s: an open scope.
 *
 * Context: any thread; never suspends.
 * Return: the absolute deadline; WEFT_FOREVER for none, a NULL or closed
 * scope.
 */
WEFT_API uint64_t weft_scope_deadline(const weft_scope *s);

/**
 * weft_shield() - Run @fn(@arg) in the calling task, shielded from its
 * cancellation and from the deadlines of its enclosing scopes.
 * @fn: runs exactly once, even in a task that is already cancelled.
 * @arg: its argument.
 *
 * Scopes entered inside @fn apply. What arrived meanwhile (a cancellation,
 * an expired enclosing deadline) is reported by the first suspension point
 * after weft_shield() returns. Shutdown waits for shielded code: bound it
 * with weft_scope_enter_shielded() or a scope inside @fn.
 *
 * Context: task only; suspends only if @fn does.
 * Return: @fn's status; -EINVAL for a NULL @fn; -EPERM outside a task.
 */
WEFT_API int weft_shield(weft_fn fn, void *arg);

WEFT_EXTERN_C_END
#endif /* WEFT_SCOPE_H */
