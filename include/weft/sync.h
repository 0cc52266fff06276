/* SPDX-License-Identifier: MIT */
/*
 * weft/sync.h - synchronisation between tasks (asyncio.Lock, Semaphore,
 * Event, Condition) and rate limiting.
 *
 * Unlike asyncio's, these are safe across workers: tasks really run in
 * parallel. The value types (weft_mutex, weft_sem, weft_event, weft_cond)
 * have a fixed size and may be embedded in user structs; an all-zero
 * object is a valid initialised one (a zeroed weft_sem holds 0), so static
 * objects need no _init. Never copy or move an initialised one.
 *
 * Common rules:
 *  - Waiters queue and are woken in FIFO order. A running task may take a
 *    free mutex or semaphore unit ahead of a woken waiter (no lock
 *    convoys), but a waiter that has waited over about 1 ms is handed the
 *    mutex or unit directly, so none starves.
 *  - Every call that may suspend is a suspension point: it returns -EPERM
 *    outside a task, and -ECANCELED / -ETIMEDOUT when the task is cancelled
 *    or a scope deadline passes, checked on entry and while it waits.
 *  - A waiter that fails holds nothing and loses nothing. When a
 *    cancellation races a hand-over, either outcome is possible, never both
 *    and never neither: a call that got what it waited for returns 0 and
 *    the next suspension point reports the cancellation.
 *  - Waits never allocate: waiter records live on the waiting task's stack.
 *  - Misused void calls (unlocking a mutex one does not hold, destroying an
 *    object tasks wait on) are reported on stderr and change nothing.
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include "base.h"

WEFT_EXTERN_C_BEGIN

/* ---------------------------------------------------------------- mutex */

/**
 * struct weft_mutex - a mutual-exclusion lock owned by a task (asyncio.Lock).
 *
 * All-zero is unlocked. Uncontended lock and unlock are one compare-and-swap
 * each and never enter the scheduler.
 */
typedef struct weft_mutex {
	uint64_t opaque_[4];
} weft_mutex;

/**
 * weft_mutex_init() - Make @m an unlocked mutex.
 * @m: the mutex (an all-zero one is already initialised).
 *
 * Context: any thread; never suspends. @m must not be in use.
 * Return: 0; -EINVAL for NULL @m.
 */
WEFT_API int weft_mutex_init(weft_mutex *m);

/**
 * weft_mutex_destroy() - End the life of @m.
 * @m: an initialised mutex.
 *
 * Destroying a mutex that is locked or has waiters is reported on stderr
 * and refused: @m is left intact and the waiters keep waiting.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_mutex_destroy(weft_mutex *m);

/**
 * weft_mutex_lock() - Take @m, waiting while another task holds it.
 * @m: an initialised mutex.
 *
 * Waiters queue in FIFO order. Unlock frees the mutex and wakes the first
 * waiter, which retries; a running task may take the mutex first (the
 * woken waiter then keeps its place at the head of the line), but a waiter
 * that has waited over about 1 ms is handed the mutex directly. A waiter
 * that fails does not hold @m.
 *
 * Context: task only; suspension point (never suspends when @m is free).
 * Return: 0, the caller holds @m; -ECANCELED if the task is cancelled;
 * -ETIMEDOUT if a scope deadline passed; -EDEADLK if the caller already
 * holds @m; -EINVAL for NULL @m; -EPERM outside a task.
 */
WEFT_API int weft_mutex_lock(weft_mutex *m);

/**
 * weft_mutex_trylock() - Take @m if it is free.
 * @m: an initialised mutex.
 *
 * Context: task only; never suspends.
 * Return: 0, the caller holds @m; -EBUSY if it is held (also by the
 * caller); -EINVAL for NULL @m; -EPERM outside a task.
 */
WEFT_API int weft_mutex_trylock(weft_mutex *m);

/**
 * weft_mutex_unlock() - Release @m.
 * @m: a mutex the calling task holds.
 *
 * The first waiter, if any, is woken (or handed @m if it has waited over
 * about 1 ms). Unlocking a mutex that is not locked, or that another task
 * holds, or from outside a task, is reported on stderr and changes nothing.
 *
 * Context: task that holds @m; never suspends.
 */
WEFT_API void weft_mutex_unlock(weft_mutex *m);

/* ---------------------------------------------------------------- semaphore */

/**
 * struct weft_sem - a counting semaphore (asyncio.Semaphore).
 *
 * All-zero holds 0 units. Counts saturate at UINT_MAX.
 */
typedef struct weft_sem {
	uint64_t opaque_[4];
} weft_sem;

/**
 * weft_sem_init() - Make @s a semaphore holding @value units.
 * @s: the semaphore.
 * @value: the initial count, at most INT_MAX.
 *
 * Context: any thread; never suspends. @s must not be in use.
 * Return: 0; -EINVAL for NULL @s or @value > INT_MAX.
 */
WEFT_API int weft_sem_init(weft_sem *s, unsigned value);

/**
 * weft_sem_destroy() - End the life of @s.
 * @s: an initialised semaphore.
 *
 * Destroying a semaphore tasks wait on is reported on stderr and refused.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_sem_destroy(weft_sem *s);

/**
 * weft_sem_acquire() - Take one unit from @s, waiting while it is zero.
 * @s: an initialised semaphore.
 *
 * Waiters are served first come, first served, with the same barging and
 * 1 ms hand-over rule as weft_mutex_lock(). A waiter that fails holds
 * nothing: a unit is never lost or duplicated.
 *
 * Context: task only; suspension point.
 * Return: 0, the caller took a unit; -ECANCELED if the task is cancelled;
 * -ETIMEDOUT if a scope deadline passed; -EINVAL for NULL @s; -EPERM
 * outside a task.
 */
WEFT_API int weft_sem_acquire(weft_sem *s);

/**
 * weft_sem_try_acquire() - Take one unit from @s if it holds one.
 * @s: an initialised semaphore.
 *
 * Context: any thread; never suspends.
 * Return: 0; -EAGAIN if @s holds no unit; -EINVAL for NULL @s.
 */
WEFT_API int weft_sem_try_acquire(weft_sem *s);

/**
 * weft_sem_release() - Give one unit back to @s.
 * @s: an initialised semaphore.
 *
 * Wakes the first waiter (or hands it the unit if it has waited over about
 * 1 ms). A release that would take the count past UINT_MAX is reported on
 * stderr and the count stays at UINT_MAX (it never wraps).
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_sem_release(weft_sem *s);

/* ---------------------------------------------------------------- event */

/**
 * struct weft_event - a flag tasks can wait for (asyncio.Event).
 *
 * All-zero is clear.
 */
typedef struct weft_event {
	uint64_t opaque_[4];
} weft_event;

/**
 * weft_event_init() - Make @e a clear event.
 * @e: the event.
 *
 * Context: any thread; never suspends. @e must not be in use.
 * Return: 0; -EINVAL for NULL @e.
 */
WEFT_API int weft_event_init(weft_event *e);

/**
 * weft_event_destroy() - End the life of @e.
 * @e: an initialised event.
 *
 * Destroying an event tasks wait on is reported on stderr and refused.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_event_destroy(weft_event *e);

/**
 * weft_event_set() - Set @e and wake every task waiting on it.
 * @e: an initialised event.
 *
 * Every task waiting at that moment returns 0 from weft_event_wait(), even
 * if @e is cleared again before it runs. Setting a set event does nothing.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_event_set(weft_event *e);

/**
 * weft_event_clear() - Clear @e; later waits block until the next set.
 * @e: an initialised event.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_event_clear(weft_event *e);

/**
 * weft_event_is_set() - Is @e set?
 * @e: an initialised event.
 *
 * Context: any thread; never suspends.
 * Return: true if @e is set (false for NULL @e).
 */
WEFT_API bool weft_event_is_set(const weft_event *e);

/**
 * weft_event_wait() - Wait until @e is set.
 * @e: an initialised event.
 *
 * Returns at once when @e is already set.
 *
 * Context: task only; suspension point.
 * Return: 0; -ECANCELED if the task is cancelled; -ETIMEDOUT if a scope
 * deadline passed; -EINVAL for NULL @e; -EPERM outside a task.
 */
WEFT_API int weft_event_wait(weft_event *e);

/* ---------------------------------------------------------------- condition */

/**
 * struct weft_cond - a condition variable used with a weft_mutex
 * (asyncio.Condition).
 *
 * All-zero is initialised.
 */
typedef struct weft_cond {
	uint64_t opaque_[4];
} weft_cond;

/**
 * weft_cond_init() - Make @c a condition variable with no waiters.
 * @c: the condition variable.
 *
 * Context: any thread; never suspends. @c must not be in use.
 * Return: 0; -EINVAL for NULL @c.
 */
WEFT_API int weft_cond_init(weft_cond *c);

/**
 * weft_cond_destroy() - End the life of @c.
 * @c: an initialised condition variable.
 *
 * Destroying a condition variable tasks wait on is reported on stderr and
 * refused.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_cond_destroy(weft_cond *c);

/**
 * weft_cond_wait() - Release @m, wait for a signal, re-acquire @m.
 * @c: an initialised condition variable.
 * @m: a mutex the calling task holds.
 *
 * Atomically releases @m and queues the caller (FIFO) on @c; a signal sent
 * after weft_cond_wait() released @m is never missed. Whatever happens, @m
 * is held again when it returns: re-acquiring it is not cancellable. May
 * wake spuriously, so wait in a loop that re-checks the predicate. A waiter
 * that fails after a signal was meant for it passes the signal on to the
 * next waiter.
 *
 * Context: task only; suspension point.
 * Return: 0 (signalled or spurious); -ECANCELED if the task is cancelled;
 * -ETIMEDOUT if a scope deadline passed; -EPERM if the caller does not hold
 * @m or is not a task; -EINVAL for NULL @c or @m. @m is held on every
 * return except -EPERM and -EINVAL (then nothing changed).
 */
WEFT_API int weft_cond_wait(weft_cond *c, weft_mutex *m);

/**
 * weft_cond_signal() - Wake the first task waiting on @c, if any.
 * @c: an initialised condition variable.
 *
 * Context: any thread; never suspends (the caller need not hold the mutex).
 */
WEFT_API void weft_cond_signal(weft_cond *c);

/**
 * weft_cond_broadcast() - Wake every task waiting on @c.
 * @c: an initialised condition variable.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_cond_broadcast(weft_cond *c);

/* ---------------------------------------------------------------- limiter */

/**
 * typedef weft_limiter - a token-bucket rate limiter, correct under
 * concurrency.
 *
 * Each weft_limiter_acquire() is given an absolute time slot (GCRA: the
 * bucket's "theoretical arrival time" is advanced under a lock), then sleeps
 * until it. Slots are handed out strictly FIFO in call order; at most
 * @burst calls pass at once, and over any window of length W at most
 * burst + W * per_second do.
 */
typedef struct weft_limiter weft_limiter;

/**
 * weft_limiter_new() - Create a limiter.
 * @per_second: sustained rate, finite and > 0 (fractions allowed: 0.5 is
 *   one every 2 s); the interval 1/per_second must be below 2^63 ns.
 * @burst: how many calls may pass back to back when the bucket is full;
 *   0 acts as 1. The bucket starts full.
 *
 * Context: any thread; never suspends.
 * Return: the limiter; NULL with errno EINVAL (@per_second 0, negative,
 * NaN, infinite or too small) or ENOMEM.
 */
WEFT_API weft_limiter *weft_limiter_new(double per_second, unsigned burst);

/**
 * weft_limiter_acquire() - Wait for the caller's time slot.
 * @l: a limiter.
 *
 * Takes the next slot and sleeps until it. A caller that fails while it
 * sleeps gives its slot back when no later slot was handed out meanwhile
 * (otherwise that capacity is lost: the rate is never exceeded).
 *
 * Context: task only; suspension point.
 * Return: 0; -ECANCELED if the task is cancelled; -ETIMEDOUT if a scope
 * deadline passed first; -EINVAL for NULL @l; -EPERM outside a task.
 */
WEFT_API int weft_limiter_acquire(weft_limiter *l);

/**
 * weft_limiter_free() - Free @l.
 * @l: a limiter, or NULL.
 *
 * Freeing a limiter that tasks are sleeping in weft_limiter_acquire() on is
 * reported on stderr and refused (@l stays valid).
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_limiter_free(weft_limiter *l);

WEFT_EXTERN_C_END
#endif /* WEFT_SYNC_H */
