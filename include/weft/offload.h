/* SPDX-License-Identifier: MIT */
/*
 * weft/offload.h - running blocking or long CPU work off the workers
 * (asyncio.to_thread / loop.run_in_executor).
 */
#ifndef WEFT_OFFLOAD_H
#define WEFT_OFFLOAD_H

#include "base.h"

WEFT_EXTERN_C_BEGIN

/**
 * weft_offload() - Run fn(arg) on the runtime's offload pool and wait for it.
 * @fn: the function; it runs on an OS thread of the pool, not on a task.
 * @arg: its argument; may point into the caller's stack frame.
 *
 * The pool is elastic: a thread is started only when no idle one is free,
 * up to weft_config.offload_max (default 512) alive at once; a thread idle
 * for 10 s exits. Requests beyond the limit wait in FIFO order. The calling
 * task suspends and its worker runs other tasks meanwhile; the pool thread
 * that finishes @fn makes the caller runnable again (no polling).
 *
 * Cancellation: @fn cannot be interrupted. A caller cancelled (or whose
 * scope deadline passes) while @fn runs keeps waiting for it, so @arg may
 * live on the caller's stack, gets @fn's status, and sees -ECANCELED /
 * -ETIMEDOUT at its next suspension point. A caller whose request still
 * waits in the queue for a free pool thread (offload_max reached) is
 * withdrawn instead, as a pending concurrent.futures call is cancelled: it
 * returns -ECANCELED / -ETIMEDOUT at once and @fn never runs. Whichever of
 * the two happens, it happens whole: @fn ran and its status is returned,
 * or @fn never runs and the error is. A caller that is already cancelled
 * gets -ECANCELED without @fn running. A shielded caller (weft_shield, a
 * shielded scope) is neither withdrawn nor refused: @fn runs.
 *
 * @fn must not make suspending weft calls (they return -EPERM there: pool
 * threads are not tasks); non-suspending calls (weft_cancel, weft_submit,
 * weft_sem_release, weft_queue_try_put, ...) are fine, and
 * weft_runtime_current() returns the caller's runtime. An @fn that waits
 * for another offloaded @fn can deadlock when the pool is full.
 *
 * Shutdown (weft_runtime_free, the end of weft_run) cancels every task, so
 * queued calls are withdrawn, and waits for every call that is running;
 * one still running after 5 s is reported on stderr, naming its calling
 * task, every 5 s until it returns.
 *
 * Pool threads start with the signal mask of the thread that created the
 * runtime, as the workers do.
 *
 * Context: task; suspension point (but see cancellation above).
 * Return: @fn's status; -ECANCELED / -ETIMEDOUT if the caller was already
 * cancelled or past a deadline, or became so while its request was queued
 * (@fn not run); -EPERM outside a task;
 * -EINVAL for a NULL @fn; -EAGAIN if no pool thread exists and none can be
 * started (@fn not run).
 */
WEFT_API int weft_offload(weft_fn fn, void *arg);

WEFT_EXTERN_C_END
#endif /* WEFT_OFFLOAD_H */
