/* SPDX-License-Identifier: MIT */
/*
 * weft/observe.h - what a running runtime can tell about itself: counters,
 * a dump of every live task (asyncio.all_tasks / Go's goroutine dump), and
 * the blocking-task watchdog of weft_config.slow_task_ns.
 */
#ifndef WEFT_OBSERVE_H
#define WEFT_OBSERVE_H

#include "base.h"
#include "runtime.h"

WEFT_EXTERN_C_BEGIN

/**
 * struct weft_stats - counters of one runtime since it started.
 * @spawned: tasks created (weft_spawn*, weft_submit, weft_block_on).
 * @completed: tasks whose function returned.
 * @steals: successful steals between workers.
 * @parks: times a worker went to sleep for lack of work.
 * @io_submitted: I/O operations submitted (0 until the I/O layer counts).
 * @io_completed: I/O operations completed (0 until the I/O layer counts).
 * @offload_calls: weft_offload() calls past their entry checks (fn ran,
 *	runs, or the pool could not start a thread).
 * @offload_threads: offload pool threads alive now (a gauge).
 * @live_tasks: @spawned - @completed at the time of the snapshot.
 * @handoffs: parks and yields that switched straight to the next task
 *	(after a park, its worker's just-woken one; after a yield, the next
 *	in turn) instead of through the scheduler: how often a message
 *	between two tasks, or a yield, cost one switch instead of two.
 * @reserved: zero; new counters take this space.
 *
 * Counters are kept per worker and summed on read: a snapshot, not atomic
 * across fields.
 */
typedef struct weft_stats {
	uint64_t spawned, completed, steals, parks, io_submitted, io_completed,
		offload_calls, offload_threads, live_tasks;
	uint64_t handoffs;
	uint64_t reserved[15];
} weft_stats;

/**
 * weft_stats_get() - Read the counters of @rt.
 * @rt: the runtime; NULL: the caller's (a task's or an offload function's).
 * @out: receives the snapshot; all-zero when @rt is NULL and the caller
 *	belongs to no runtime.
 *
 * Context: any thread; never suspends. A NULL @out is reported (debug
 * builds) and ignored.
 */
WEFT_API void weft_stats_get(const weft_runtime *rt, weft_stats *out);

/**
 * weft_dump_tasks() - Print every live task of @rt on @out.
 * @rt: the runtime; NULL: the caller's.
 * @out: where to print (stderr, a file, an fmemopen buffer).
 *
 * One line per task that has not finished:
 *   task <id> '<name>': running on worker <w> for ~<n> ms
 *   task <id> '<name>': runnable for ~<n> ms
 *   task <id> '<name>': waiting on <what> for ~<n> ms (worker <w>)
 * where <what> is sleep, mutex, sem, event, cond, queue, join, I/O,
 * offload or limiter, <w> the worker it runs or last ran on, and <n> how
 * long the task has been in that state (running: since it last resumed;
 * runnable: since it was spawned, woken or yielded). Durations are
 * approximate (one coarse-clock tick, 1-10 ms). The first line counts the
 * tasks. States change while the dump runs: each line is a
 * snapshot of one task.
 *
 * With weft_config.flags & WEFT_DUMP_ON_SIGQUIT, a SIGQUIT sent to the
 * process prints this dump of every such runtime on stderr (instead of the
 * default core dump): weft installs a SIGQUIT handler while such a runtime
 * exists (it only writes a byte to a pipe; a weft thread does the dump) and
 * restores the previous disposition when the last one is freed. Without the
 * flag weft never touches SIGQUIT.
 *
 * Context: any thread (takes the runtime's record lock; not from a signal
 * handler); never suspends.
 */
WEFT_API void weft_dump_tasks(const weft_runtime *rt, FILE *out);

WEFT_EXTERN_C_END
#endif /* WEFT_OBSERVE_H */
