/* SPDX-License-Identifier: MIT */
/*
 * weft/queue.h - a bounded multi-producer multi-consumer queue of void *
 * (asyncio.Queue), safe across workers and usable from any thread through
 * its try_ calls.
 *
 * Items go strictly FIFO: waiting producers' items enter the queue in the
 * order the producers arrived, and waiting consumers are served in the
 * order they arrived. A waiter that fails (cancelled, timed out) holds
 * nothing and loses nothing: an item is delivered to exactly one getter or
 * stays where it was (in the queue, or with its producer). Waits never
 * allocate.
 *
 * Closing is the producers' end of stream: puts fail with -EPIPE, getters
 * drain what is left and then get -EPIPE (an async generator's end).
 */
#ifndef WEFT_QUEUE_H
#define WEFT_QUEUE_H

#include "base.h"

WEFT_EXTERN_C_BEGIN

typedef struct weft_queue weft_queue;

/**
 * weft_queue_new() - Create a queue holding at most @capacity items.
 * @capacity: at least 1. The ring is allocated up front.
 *
 * Context: any thread; never suspends.
 * Return: the queue; NULL with errno EINVAL (@capacity 0) or ENOMEM (out of
 * memory, or a size that overflows: nothing is allocated then).
 */
WEFT_API weft_queue *weft_queue_new(size_t capacity);

/**
 * weft_queue_put() - Append @item, waiting while the queue is full.
 * @q: a queue.
 * @item: any pointer (NULL too); the queue never dereferences it.
 *
 * Waiting producers are served FIFO. When a consumer waits, @item is handed
 * to it directly. A put that fails did not enqueue @item (it stays the
 * caller's); a put that returns 0 did, even if the task was cancelled
 * meanwhile (the next suspension point reports that).
 *
 * Context: task only; suspension point (never suspends when there is room).
 * Return: 0; -EPIPE once @q is closed (also for a put waiting when it is
 * closed); -ECANCELED; -ETIMEDOUT if a scope deadline passed; -EINVAL for
 * NULL @q; -EPERM outside a task.
 */
WEFT_API int weft_queue_put(weft_queue *q, void *item);

/**
 * weft_queue_get() - Remove the oldest item, waiting while the queue is
 * empty.
 * @q: a queue.
 * @item: receives the item (written only on success).
 *
 * Waiting consumers are served FIFO.
 *
 * Context: task only; suspension point (never suspends when an item is
 * there).
 * Return: 0; -EPIPE once @q is closed and drained; -ECANCELED; -ETIMEDOUT
 * if a scope deadline passed; -EINVAL for NULL @q or @item; -EPERM outside
 * a task.
 */
WEFT_API int weft_queue_get(weft_queue *q, void **item);

/**
 * weft_queue_try_put() - Append @item if there is room.
 * @q: a queue.
 * @item: any pointer.
 *
 * Context: any thread; never suspends.
 * Return: 0; -EAGAIN if @q is full; -EPIPE once @q is closed; -EINVAL for
 * NULL @q.
 */
WEFT_API int weft_queue_try_put(weft_queue *q, void *item);

/**
 * weft_queue_try_get() - Remove the oldest item if there is one.
 * @q: a queue.
 * @item: receives the item (written only on success).
 *
 * Context: any thread; never suspends.
 * Return: 0; -EAGAIN if @q is empty; -EPIPE once @q is closed and drained;
 * -EINVAL for NULL @q or @item.
 */
WEFT_API int weft_queue_try_get(weft_queue *q, void **item);

/**
 * weft_queue_task_done() - Mark one item got from @q as fully processed.
 * @q: a queue.
 *
 * Every successful put counts one outstanding item; when task_done has been
 * called once for each, weft_queue_join() returns. A task_done with no
 * outstanding item is reported on stderr and changes nothing (the count
 * never underflows, and a later join is not released early).
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_queue_task_done(weft_queue *q);

/**
 * weft_queue_join() - Wait until every item put so far is task_done.
 * @q: a queue.
 *
 * Returns at once when nothing is outstanding. Closing @q does not release
 * joiners: items still in a closed queue are still owed a task_done.
 *
 * Context: task only; suspension point.
 * Return: 0; -ECANCELED; -ETIMEDOUT if a scope deadline passed; -EINVAL
 * for NULL @q; -EPERM outside a task.
 */
WEFT_API int weft_queue_join(weft_queue *q);

/**
 * weft_queue_close() - End the stream: no more puts.
 * @q: a queue.
 *
 * Every waiting producer and consumer is woken: producers get -EPIPE (their
 * items were not enqueued), consumers drain what is left and then get
 * -EPIPE. Closing a closed queue does nothing.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_queue_close(weft_queue *q);

/**
 * weft_queue_len() - How many items @q holds now.
 * @q: a queue.
 *
 * Items of producers still waiting to put are not counted.
 *
 * Context: any thread; never suspends.
 * Return: the number of items (0 for NULL @q); a snapshot.
 */
WEFT_API size_t weft_queue_len(const weft_queue *q);

/**
 * weft_queue_free() - Free @q and the items' slots (not what they point to).
 * @q: a queue, or NULL.
 *
 * Freeing a queue that tasks are waiting on is reported on stderr and
 * refused (@q stays valid); close it and let the waiters leave first.
 *
 * Context: any thread; never suspends.
 */
WEFT_API void weft_queue_free(weft_queue *q);

WEFT_EXTERN_C_END
#endif /* WEFT_QUEUE_H */
