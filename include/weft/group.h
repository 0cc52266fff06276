/* SPDX-License-Identifier: MIT */
/*
 * weft/group.h - waiting on many tasks: gather, wait_for, wait_any
 * (asyncio.gather / wait_for / wait(FIRST_COMPLETED)), and task groups
 * (asyncio.TaskGroup, structured concurrency).
 *
 * A failure is a negative status other than -ECANCELED: in gather and
 * groups a task's -ECANCELED is never a failure, and a positive status is a
 * result, like 0. Waits never
 * abandon: when the waiter is cancelled or a deadline of its scopes passes,
 * the tasks it waits for are cancelled and still waited for, so their args
 * may point into the waiter's frame.
 */
#ifndef WEFT_GROUP_H
#define WEFT_GROUP_H

#include "weft/base.h"
#include "weft/task.h"

WEFT_EXTERN_C_BEGIN

/* weft_gather() flags */
#define WEFT_CANCEL_ON_ERROR 1u

/**
 * weft_gather() - Wait for all @n tasks and join them.
 * @tasks: @n owned handles, all released by the call (unless it returns
 *	-EINVAL/-EDEADLK/-EPERM, which release nothing).
 * @n: how many (at most INT_MAX); 0 returns 0 at once.
 * @statuses: NULL, or @n ints that receive each task's status in order
 *	(asyncio's return_exceptions=True).
 * @flags: 0 or WEFT_CANCEL_ON_ERROR: the first failure in time cancels the
 *	others (still waited for) and its status is returned.
 *
 * If the caller is cancelled, or a deadline of its scopes passes, while it
 * waits (or before it starts), every task is cancelled and waited for, and
 * gather returns -ECANCELED / -ETIMEDOUT unless a task had failed first.
 *
 * Context: task only; suspension point; never allocates.
 * Return: 0; the first failing status in index order (without flags) or
 * in time (WEFT_CANCEL_ON_ERROR); -ECANCELED / -ETIMEDOUT as above;
 * -EINVAL for a NULL @tasks with @n > 0, @n > INT_MAX, a NULL, released,
 * detached, foreign or repeated handle, a handle another wait is using, or
 * unknown @flags; -EDEADLK if a handle is the caller; -EPERM outside a task.
 */
WEFT_API int weft_gather(weft_task *const *tasks, size_t n, int *statuses,
			 unsigned flags);

/**
 * weft_wait_for() - Join @t with a time limit.
 * @t: an owned handle; always released (except on -EINVAL/-EDEADLK/-EPERM).
 * @timeout_ns: relative limit; 0 still returns the status of a task that
 *	has already finished; WEFT_FOREVER: weft_join().
 *
 * When the limit passes, @t is cancelled and waited for, and -ETIMEDOUT is
 * returned whatever @t then returned (to see that status use
 * weft_wait_any(), weft_cancel() and weft_join()). A cancellation of the
 * caller or a scope deadline cancels @t too and returns @t's status, like
 * weft_join(); the caller sees its own error at its next suspension point.
 *
 * Context: task only; suspension point; never allocates.
 * Return: @t's status; -ETIMEDOUT; -EINVAL, -EDEADLK, -EPERM as
 * weft_join().
 */
WEFT_API int weft_wait_for(weft_task *t, uint64_t timeout_ns);

/**
 * weft_wait_any() - Wait until one of @n tasks has finished.
 * @tasks: @n owned handles; none is joined, cancelled or released.
 * @n: how many (at most INT_MAX).
 * @timeout_ns: relative limit; 0 polls; WEFT_FOREVER: none.
 *
 * Context: task only; suspension point; never allocates.
 * Return: the lowest index of a finished task; -ETIMEDOUT when the limit
 * passes; -ECANCELED / -ETIMEDOUT when the caller is cancelled or its scope
 * expires; -EINVAL for @n = 0, a NULL @tasks, or a bad or repeated handle;
 * -EDEADLK if a handle is the caller; -EPERM outside a task.
 */
WEFT_API int weft_wait_any(weft_task *const *tasks, size_t n,
			   uint64_t timeout_ns);

/*
 * Task groups. The first child failure (a negative status other than
 * -ECANCELED) cancels every sibling; weft_group_wait() returns only when
 * every child has finished; weft_group_errors() lists every real failure.
 * Cancelling the task that waits on the group, or a deadline of its scopes
 * passing, cancels every child. Children do not inherit the spawner's
 * cancellation or scopes. A finished child's stack and record are
 * reclaimed at once, so a group may live for months (a server's
 * connections).
 */
typedef struct weft_group weft_group;

/**
 * weft_group_new() - Create an empty task group.
 *
 * Context: any thread; never suspends.
 * Return: the group; NULL with errno = ENOMEM.
 */
WEFT_API weft_group *weft_group_new(void);

/**
 * weft_group_spawn() - Start fn(arg) as a child of @g.
 * @g: the group.
 * @fn: the child's body; runs exactly once when this returns 0.
 * @arg: its argument.
 *
 * Children may spawn siblings into their own group.
 *
 * Context: task only; never suspends.
 * Return: 0; -ECANCELED once the group is failing or cancelled (fn never
 * runs; also once weft_group_free() was called); -EINVAL for NULL @g or
 * @fn, after weft_group_wait() returned, or a group of another runtime;
 * -ENOMEM; -EPERM outside a task.
 */
WEFT_API int weft_group_spawn(weft_group *g, weft_fn fn, void *arg);

/**
 * weft_group_spawn_ex() - weft_group_spawn() with a name, stack size or
 * pinning.
 * @g: the group.
 * @o: options as weft_spawn_ex(); NULL for the defaults.
 * @fn: the child's body.
 * @arg: its argument.
 *
 * Context: task only; never suspends.
 * Return: as weft_group_spawn(); -EINVAL for bad options too.
 */
WEFT_API int weft_group_spawn_ex(weft_group *g, const weft_spawn_opts *o,
				 weft_fn fn, void *arg);

/**
 * weft_group_wait() - Wait until every child of @g has finished.
 * @g: the group; called once, by one task.
 *
 * If the caller is cancelled or a deadline of its scopes passes (also
 * before the call), every child is cancelled and still waited for. A
 * child's failure does not cancel the caller: it learns of it here.
 *
 * Context: task only; suspension point; never allocates.
 * Return: 0; the first child failure in time; -ECANCELED / -ETIMEDOUT when
 * the caller was interrupted before any child failed; -EINVAL for NULL @g,
 * a second call, or a call while another task waits; -EPERM outside a
 * task.
 */
WEFT_API int weft_group_wait(weft_group *g);

/**
 * weft_group_cancel() - Cancel every child of @g, now and spawned later
 * (later spawns fail with -ECANCELED).
 * @g: the group.
 *
 * weft_group_wait() still waits for them and returns 0 unless a child
 * failed (the children's -ECANCELED is not a failure). A NULL @g is
 * reported and ignored.
 *
 * Context: any thread (an acceptor loop, an offload function, a signal
 * task); never suspends.
 */
WEFT_API void weft_group_cancel(weft_group *g);

/**
 * weft_group_errors() - Every real failure of @g's children so far, in
 * the order they finished (asyncio's ExceptionGroup).
 * @g: the group.
 * @errs: receives up to @max statuses; may be NULL when @max is 0.
 * @max: room in @errs.
 *
 * Siblings cancelled because of a failure are not listed (their
 * -ECANCELED is not a failure); a sibling that fails otherwise while
 * being cancelled is. If memory ran out while the list grew, the count
 * stays exact and the entries of the failures that could not be kept
 * read -ENOMEM.
 *
 * Context: any thread; never suspends.
 * Return: the number of failures (may exceed @max); 0 for NULL @g.
 */
WEFT_API size_t weft_group_errors(const weft_group *g, int *errs, size_t max);

/**
 * weft_group_free() - Give up @g.
 * @g: the group; NULL is ignored.
 *
 * Before weft_group_wait(): cancels the children, and the group is freed
 * when the last one ends (until then its children may still call
 * weft_group_spawn() on it, which gives -ECANCELED). Afterwards @g must not
 * be used. Freeing a group while a task waits on it is reported and
 * ignored.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_group_free(weft_group *g);

WEFT_EXTERN_C_END
#endif /* WEFT_GROUP_H */
