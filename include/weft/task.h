/* SPDX-License-Identifier: MIT */
/*
 * weft/task.h - tasks: spawn, join, detach, cancel, yield, sleep
 * (create_task, await, Task.cancel, asyncio.sleep).
 *
 * Ownership: weft_spawn gives the caller the only owning reference.
 * weft_join releases it; weft_detach gives it up; after either the handle
 * must not be used (weft detects reuse of a released handle and returns
 * -EINVAL, or reports it for void calls, in every build). weft_cancel leaves
 * it owned. weft_self() is borrowed. Only the owner waits on a handle; the
 * owner may hand it to another task.
 *
 * fn runs exactly once after a successful spawn, even if the task is
 * cancelled before it starts or the runtime is shutting down (it then starts
 * cancelled: its first suspension point returns -ECANCELED), so fn may own
 * a heap arg. When spawn fails, fn never runs and arg stays the caller's.
 *
 * Cancellation is level-triggered: after weft_cancel(t), the suspension
 * point t is in (or its next one) returns -ECANCELED, and so does every
 * later one until t returns. Work already done is never undone: a call that
 * completed returns its result and the next suspension point reports the
 * cancellation. A task that ignores -ECANCELED and keeps calling suspension
 * points (while (1) weft_sleep(...)) gets -ECANCELED from each at once: it
 * never suspends again and holds its worker until it returns. The watchdog
 * (weft_config.slow_task_ns) names it, "task 'x' (id n) ignored N
 * cancellations", once it failed 100 such calls in one run and again each
 * time N has doubled; weft_runtime_free() waits for it (it cannot stop a
 * task) and names it every grace period (5 s) until it returns.
 *
 * TASKS MIGRATE. After any suspension point (every call that may suspend:
 * weft_yield, weft_sleep, weft_join, waits on sync primitives, I/O) a task may
 * continue on another worker thread, unless spawned with WEFT_SPAWN_PINNED.
 * Across a suspension point a task must not rely on:
 *   - errno or any thread-local variable (_Thread_local, thread_local,
 *     pthread_getspecific): the compiler may keep the old thread's address
 *     of a thread-local in a register or on the stack, so even re-reading
 *     errno after a weft call is wrong - weft reports errors as return
 *     values for this reason;
 *   - per-thread library state (OpenSSL's error queue, strerror and strtok
 *     buffers), pthread_self()/gettid();
 *   - a held pthread_mutex or spinlock (never suspend while holding one);
 *   - the signal mask or CPU affinity (they belong to the worker: never change
 *     them from a task).
 * Use task-local storage (weft/local.h) for per-task state, and
 * WEFT_SPAWN_PINNED for code that cannot follow these rules: a pinned task
 * never leaves the worker it first ran on.
 */
#ifndef WEFT_TASK_H
#define WEFT_TASK_H

#include "base.h"

WEFT_EXTERN_C_BEGIN

typedef struct weft_task weft_task;

/* weft_spawn_opts.flags: never leave the worker the task first runs on. */
#define WEFT_SPAWN_PINNED 0x1u

/* Longest task name kept (longer names are truncated). */
#define WEFT_TASK_NAME_MAX 31

/**
 * struct weft_spawn_opts - options of weft_spawn_ex(); all-zero = defaults.
 * @name: copied and truncated to WEFT_TASK_NAME_MAX bytes; NULL: no name.
 * @stack_size: usable stack bytes; 0: the runtime's default. A size up
 *	to the runtime's default gets a default stack (from the per-worker
 *	cache); a larger one gets its own mapping, rounded as
 *	weft_config.stack_size is.
 * @flags: WEFT_SPAWN_PINNED.
 * @reserved: must be zero.
 */
typedef struct weft_spawn_opts {
	const char *name;
	size_t stack_size;
	unsigned flags;
	uint64_t reserved[4];
} weft_spawn_opts;

/**
 * weft_spawn() - Start fn(arg) as a new task of the caller's runtime.
 * @fn: the task body.
 * @arg: its argument.
 *
 * The task gets no stack until it first runs. If no stack can be mapped
 * then (ENOMEM, or the vm.max_map_count limit: with mprotect guards, on
 * kernels before 6.13, each stack costs two mappings), the task waits
 * without spinning, reported on stderr at most once a second, until a
 * stack is free or memory is back, and still runs exactly once (a
 * cancellation meanwhile makes it start cancelled). From then until a
 * stack comes back, spawns that would need a new stack fail with ENOMEM
 * (a server sheds the connection instead of queueing tasks that cannot
 * start). During runtime shutdown the task is still created and starts
 * cancelled.
 *
 * Context: task only; never suspends.
 * Return: an owned handle (join or detach it); NULL with errno EINVAL (NULL
 * @fn), EPERM (not called from a task: use weft_submit()), ENOMEM.
 */
WEFT_MUST_USE WEFT_API weft_task *weft_spawn(weft_fn fn, void *arg);

/**
 * weft_spawn_named() - weft_spawn() with a name for reports and dumps.
 * @name: copied, truncated to WEFT_TASK_NAME_MAX bytes; NULL: no name.
 * @fn: the task body.
 * @arg: its argument.
 *
 * Context: task only; never suspends.
 * Return: as weft_spawn().
 */
WEFT_MUST_USE WEFT_API weft_task *weft_spawn_named(const char *name, weft_fn fn,
						   void *arg);

/**
 * weft_spawn_ex() - weft_spawn() with options.
 * @out: receives the owned handle.
 * @o: options, or NULL for defaults.
 * @fn: the task body.
 * @arg: its argument.
 *
 * Context: task only; never suspends.
 * Return: 0; -EINVAL (NULL @out or @fn, unknown flags, non-zero reserved,
 * a stack size above 1 GiB); -EPERM outside a task; -ENOMEM.
 */
WEFT_API int weft_spawn_ex(weft_task **out, const weft_spawn_opts *o,
			   weft_fn fn, void *arg);

/**
 * weft_spawn_named_at() - weft_spawn_named() that records a spawn site.
 * @name: as weft_spawn_named().
 * @fn: the task body.
 * @arg: its argument.
 * @file: the spawning source file (kept as a pointer: a string literal such
 *        as __FILE__); NULL: unknown.
 * @line: the spawning line.
 *
 * In debug mode (a debug build, or env WEFT_DEBUG=1) a task that is never
 * joined nor detached is reported when the runtime ends, by name and, when
 * known, by spawn site ("spawned at file:line"). Unless WEFT_NO_SPAWN_SITE
 * is defined before including weft.h, weft_spawn(), weft_spawn_named() and
 * weft_spawn_ex() are also function-like macros that pass __FILE__ and
 * __LINE__ to these _at variants; the functions themselves stay exported
 * under their names, so &weft_spawn and (weft_spawn)(fn, arg) still work
 * (without a spawn site).
 *
 * Context: task only; never suspends.
 * Return: as weft_spawn().
 */
WEFT_MUST_USE WEFT_API weft_task *weft_spawn_named_at(const char *name,
						      weft_fn fn, void *arg,
						      const char *file,
						      unsigned line);

/**
 * weft_spawn_ex_at() - weft_spawn_ex() that records a spawn site.
 * @out: receives the owned handle.
 * @o: options, or NULL for defaults.
 * @fn: the task body.
 * @arg: its argument.
 * @file: as weft_spawn_named_at().
 * @line: the spawning line.
 *
 * Context: task only; never suspends.
 * Return: as weft_spawn_ex().
 */
WEFT_API int weft_spawn_ex_at(weft_task **out, const weft_spawn_opts *o,
			      weft_fn fn, void *arg, const char *file,
			      unsigned line);

/* After the declarations above, which the macros would otherwise rewrite. */
#ifndef WEFT_NO_SPAWN_SITE
#define weft_spawn(fn, arg) \
	weft_spawn_named_at(NULL, (fn), (arg), __FILE__, __LINE__)
#define weft_spawn_named(name, fn, arg) \
	weft_spawn_named_at((name), (fn), (arg), __FILE__, __LINE__)
#define weft_spawn_ex(out, o, fn, arg) \
	weft_spawn_ex_at((out), (o), (fn), (arg), __FILE__, __LINE__)
#endif

/**
 * weft_join() - Wait for @t to finish and return its status.
 * @t: an owned handle.
 *
 * Always releases @t (on success and on -ECANCELED/-ETIMEDOUT alike): the
 * handle must not be used afterwards. If the caller is cancelled, or a
 * deadline of its scopes passes, while it waits, @t is cancelled and still
 * waited for: join never returns while @t runs, so @t's arg may point into
 * the caller's frame. The caller sees its own cancellation at its next
 * suspension point.
 *
 * Context: task only; suspension point.
 * Return: @t's status; -EDEADLK for weft_self() (nothing released); -EINVAL
 * for NULL, a released or detached handle, or a second concurrent wait;
 * -EPERM outside a task.
 */
WEFT_API int weft_join(weft_task *t);

/**
 * weft_detach() - Give up the handle; the task runs on and is reclaimed
 * when it ends (or at runtime shutdown, which cancels it).
 * @t: an owned handle.
 *
 * A released or already detached handle is reported on stderr and nothing
 * changes. Handles of a detached task (this one, or weft_self() taken in
 * the task) still cancel it while it runs; joining it gives -EINVAL.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_detach(weft_task *t);

/**
 * weft_cancel() - Request cancellation of @t (level-triggered).
 * @t: a handle (owned or borrowed from weft_self()).
 *
 * The suspension point @t waits in returns -ECANCELED, and so does every
 * later one until @t returns (each at once; a task that keeps calling them
 * is reported, see the top of this file). Other tasks may cancel a handle
 * only until its owner's wait has returned.
 *
 * Context: any thread; never suspends.
 * Return: 1 if the request was recorded before @t finished, 0 if @t had
 * finished; -EINVAL for NULL or a released handle.
 */
WEFT_API int weft_cancel(weft_task *t);

/**
 * weft_yield() - Let the worker's other runnable tasks run first.
 *
 * Context: task only; suspension point.
 * Return: 0; -ECANCELED; -ETIMEDOUT (a scope deadline passed); -EPERM
 * outside a task.
 */
WEFT_API int weft_yield(void);

/**
 * weft_sleep() - Suspend the calling task for @ns nanoseconds.
 * @ns: duration; 0 acts as weft_yield(); an end that overflows is forever.
 *
 * Never returns early.
 *
 * Context: task only; suspension point.
 * Return: 0; -ECANCELED; -ETIMEDOUT (a scope deadline passed first); -EPERM.
 */
WEFT_API int weft_sleep(uint64_t ns);

/**
 * weft_sleep_until() - Suspend the calling task until weft_now() >= deadline.
 * @deadline_ns: on the weft_now() clock; a past deadline acts as weft_yield().
 *
 * Context: task only; suspension point.
 * Return: as weft_sleep().
 */
WEFT_API int weft_sleep_until(uint64_t deadline_ns);

/**
 * weft_checkpoint() - Report pending cancellation or deadline expiry
 * without suspending.
 *
 * Context: task only; never suspends.
 * Return: 0; -ECANCELED; -ETIMEDOUT; -EPERM outside a task.
 */
WEFT_API int weft_checkpoint(void);

/**
 * weft_self() - The calling task.
 *
 * Context: any thread; never suspends.
 * Return: a borrowed handle, fit for weft_cancel() and naming only (joining
 * it gives -EDEADLK); NULL outside a task.
 */
WEFT_API weft_task *weft_self(void);

/**
 * weft_task_name() - Copy @t's name into @buf.
 * @t: a handle, or NULL for the calling task.
 * @buf: destination.
 * @len: size of @buf (at least WEFT_TASK_NAME_MAX + 1 is never truncated).
 *
 * Context: any thread; never suspends.
 * Return: the name's length; -EINVAL for a released handle or no task.
 */
WEFT_API int weft_task_name(const weft_task *t, char *buf, size_t len);

/**
 * weft_task_id() - @t's id, unique within the process for the task's life.
 * @t: a handle, or NULL for the calling task.
 *
 * Context: any thread; never suspends.
 * Return: the id (> 0); 0 for a released handle or no task.
 */
WEFT_API uint64_t weft_task_id(const weft_task *t);

WEFT_EXTERN_C_END
#endif /* WEFT_TASK_H */
