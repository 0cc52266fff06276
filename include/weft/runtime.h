/* SPDX-License-Identifier: MIT */
/*
 * weft/runtime.h - starting and stopping a runtime (asyncio.run), and
 * embedding one in a program that has threads of its own.
 */
#ifndef WEFT_RUNTIME_H
#define WEFT_RUNTIME_H

#include "base.h"

WEFT_EXTERN_C_BEGIN

/* weft_config.flags */
#define WEFT_IO_EPOLL 0x1u	  /* force the epoll I/O backend */
#define WEFT_PIN_WORKERS 0x2u	  /* bind worker i to the i-th allowed CPU */
#define WEFT_DUMP_ON_SIGQUIT 0x4u /* SIGQUIT prints weft_dump_tasks() on
				   * stderr (weft/observe.h) */
#define WEFT_CLOCK_PAUSED \
	0x8u /* a virtual clock, for tests: see
				   * weft_clock_advance() */

/**
 * struct weft_config - settings of a runtime; all-zero means defaults.
 * @workers: worker threads. 0: the CPUs in the process's affinity mask,
 *	capped by the cgroup CPU quota; env WEFT_WORKERS overrides 0 only.
 *	Values above 1024 are clamped to 1024.
 * @stack_size: usable bytes of each task stack (a guard page is added).
 *	0: 256 KiB (x4 in sanitizer builds). Clamped to [16 KiB, 1 GiB],
 *	then rounded up so that the stack and its 128-byte header fill
 *	whole pages (a stack overflow report gives the usable size: 266,112
 *	bytes for the 256 KiB default with 4 KiB pages). A task that runs
 *	into its guard page is reported on stderr ("weft: stack overflow in
 *	task 'name' (N-byte stack)") and the process aborts. Each worker has
 *	an alternate signal stack: give signal handlers SA_ONSTACK. Without
 *	it a handler's frame is written on the interrupted task's stack; one
 *	that does not fit there is reported as that task's overflow too.
 * @offload_max: most offload threads alive at once (0: 512); see
 *	weft_offload() in weft/offload.h.
 * @ring_entries: io_uring SQ size per worker (0: default).
 * @flags: WEFT_IO_EPOLL, WEFT_PIN_WORKERS, WEFT_DUMP_ON_SIGQUIT,
 *	WEFT_CLOCK_PAUSED (one worker: with @workers 0 it gets 1, and more
 *	than 1 is -EINVAL).
 * @slow_task_ns: 0: off (env WEFT_DEBUG=1 makes it 100 ms); >0: a
 *	watchdog thread reports on stderr, once per run slice, a task that
 *	has run that long on a worker without suspending, by name, id and
 *	worker (checked every slow_task_ns / 4; reports are never early);
 *	and a cancelled task that keeps calling suspension points, which
 *	all fail at once ("task 'x' (id n) ignored N cancellations", again
 *	each time N has doubled; weft/task.h).
 * @reserved: must be zero; new settings take this space.
 */
typedef struct weft_config {
	unsigned workers;
	size_t stack_size;
	unsigned offload_max;
	unsigned ring_entries;
	unsigned flags;
	uint64_t slow_task_ns;
	uint64_t reserved[8];
} weft_config;

/**
 * weft_run() - Run @main as the first task of a new runtime, then shut down.
 * @main: the first task's body.
 * @arg: its argument.
 * @cfg: settings; NULL or all-zero for the defaults.
 *
 * Returns once @main has returned *and* every task still alive has been
 * cancelled and has finished (detached tasks included: they see -ECANCELED
 * at their next suspension point). In debug mode (a debug build, or env
 * WEFT_DEBUG=1) tasks never joined nor detached are reported by name.
 *
 * Context: a thread that is not a weft task.
 * Return: @main's status; -EBUSY when called from a task (runtimes do not
 * nest); -EINVAL for a NULL @main or a bad @cfg; -ENOMEM, -EAGAIN (thread
 * creation) or -EMFILE when the runtime cannot start.
 */
WEFT_API int weft_run(weft_fn main, void *arg, const weft_config *cfg);

typedef struct weft_runtime weft_runtime;

/**
 * weft_runtime_new() - Start a runtime whose workers wait for work.
 * @out: receives the runtime.
 * @cfg: settings; NULL or all-zero for the defaults.
 *
 * Worker threads inherit the calling thread's signal mask.
 *
 * Context: any thread that is not a weft task.
 * Return: 0; -EINVAL (bad @cfg, NULL @out); -EBUSY from a task; -ENOMEM;
 * -EAGAIN when threads cannot be created.
 */
WEFT_API int weft_runtime_new(weft_runtime **out, const weft_config *cfg);

/**
 * weft_block_on() - Run fn(arg) as a task of @rt and wait for its status.
 * @rt: the runtime.
 * @fn: the task body.
 * @arg: its argument.
 *
 * Several threads may block on one runtime at once.
 *
 * Context: a thread that is not a task (blocks the calling thread).
 * Return: fn's status; -EPERM from a task; -EINVAL for NULL @rt or @fn;
 * -ECANCELED without running fn when @rt is being freed; -ENOMEM.
 */
WEFT_API int weft_block_on(weft_runtime *rt, weft_fn fn, void *arg);

/**
 * weft_submit() - Run fn(arg) as a detached task of @rt.
 * @rt: the runtime.
 * @fn: the task body.
 * @arg: its argument.
 *
 * Like asyncio.run_coroutine_threadsafe without the future: the task runs
 * exactly once if this returns 0 (it starts cancelled if the runtime is
 * shutting down by then).
 *
 * Context: any thread; never suspends.
 * Return: 0; -EINVAL; -ECANCELED (fn not run) once weft_runtime_free() has
 * begun; -ENOMEM.
 */
WEFT_API int weft_submit(weft_runtime *rt, weft_fn fn, void *arg);

/**
 * weft_clock_advance() - Move a paused runtime's clock forward.
 * @ns: how far; clamped so that the clock stays below WEFT_FOREVER.
 *
 * A runtime made with WEFT_CLOCK_PAUSED in weft_config.flags (Tokio's
 * start_paused, for tests of timeouts, retries and rate limits that should
 * take no wall time and give the same result every run) has one worker
 * and a virtual clock. Its tasks read it with weft_now(), and every sleep,
 * deadline, scope and timeout of theirs is on it. It starts at the real
 * monotonic time when the runtime is made and moves only forward:
 * - It stands still while any task runs or is runnable.
 * - When every task waits and none waits on I/O or on weft_offload(), it
 *   jumps to the earliest deadline, so a sleep of an hour returns at
 *   once, and weft_now() then reads exactly that deadline.
 * - While a task waits on I/O (a read, a send, an armed multishot recv or
 *   accept, weft_signal_wait) or on weft_offload(), it runs at real speed:
 *   a reply that is on its way is never overtaken by a timeout. A recv
 *   with a 5 s timeout from a silent peer takes 5 real seconds; advance
 *   the clock from another task to end it sooner.
 * - This call moves it by @ns. Tasks whose deadlines that reaches are
 *   woken when the worker next schedules, that is, at the caller's next
 *   suspension point.
 * As with Tokio's paused clock, a task that waits for a thread outside the
 *   runtime (weft_submit(), a weft_queue fed from a plain thread) without
 *   I/O does not hold the clock back: a timeout beside it fires at once.
 * weft_now() outside the runtime's tasks reads the real clock, and other
 * runtimes are unaffected. Fairness and spinning inside weft (mutex
 * hand-over to a starving waiter, idle spins) use real time.
 *
 * Context: a task of a runtime made with WEFT_CLOCK_PAUSED; never suspends.
 * Return: 0; -EPERM outside a task; -EINVAL when the task's runtime is not
 * paused.
 */
WEFT_API int weft_clock_advance(uint64_t ns);

/**
 * weft_runtime_free() - Cancel every task of @rt, wait for them, stop the
 * workers and free the runtime.
 * @rt: the runtime (NULL: nothing happens, returns 0).
 *
 * It waits for every task to return, however long that takes: an
 * offloaded call still running (its arg may live on the caller's stack),
 * and a task that ignores its cancellation and keeps calling suspension
 * points (each fails at once with -ECANCELED) keep it waiting. Such tasks
 * are named on stderr after a grace period (5 s), and again every period,
 * instead of the shutdown hanging silently.
 *
 * Context: a thread that is not a task or offload function of @rt.
 * Return: 0; -EBUSY from a task or offload function of @rt (nothing freed).
 */
WEFT_API int weft_runtime_free(weft_runtime *rt);

/**
 * weft_runtime_current() - The caller's runtime.
 *
 * Context: any thread; never suspends.
 * Return: the runtime of the calling task or offload function, else NULL.
 */
WEFT_API weft_runtime *weft_runtime_current(void);

/**
 * weft_runtime_workers() - The number of worker threads of @rt.
 * @rt: the runtime; NULL: the caller's.
 *
 * Context: any thread; never suspends.
 * Return: the worker count, or 0 when there is no runtime.
 */
WEFT_API unsigned weft_runtime_workers(const weft_runtime *rt);

/**
 * weft_worker_index() - The index of the worker running the calling task.
 *
 * The value may change after any suspension point (tasks migrate) unless the
 * task was spawned with WEFT_SPAWN_PINNED.
 *
 * Context: any thread; never suspends.
 * Return: 0 .. workers-1 in a task; -1 outside any worker.
 */
WEFT_API int weft_worker_index(void);

WEFT_EXTERN_C_END
#endif /* WEFT_RUNTIME_H */
