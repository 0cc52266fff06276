/* SPDX-License-Identifier: MIT */
/*
 * runtime/deque.h - the per-worker Chase-Lev work-stealing deque.
 *
 * A fixed ring of WEFT__DEQUE_CAP non-NULL pointers. The owner worker pushes
 * and takes at the bottom (LIFO); any thread steals at the top (FIFO). The
 * ring never grows: a full push fails and the owner spills half of its
 * items to the global injection queue with weft__deque_take_top().
 * runtime/deque.c opens with the theory of operation and the table of
 * memory orderings.
 *
 * A second copy with another capacity and other symbol names can be built
 * by defining WEFT__DEQUE_CAP_OVERRIDE and renaming the symbols with macros
 * before including runtime/deque.c (tests/support/deque_small.c does this),
 * so the wrap and overflow paths run in tests.
 */
#ifndef WEFT_RUNTIME_DEQUE_H
#define WEFT_RUNTIME_DEQUE_H

#ifdef __cplusplus
#include <atomic>
#endif

#include "runtime/internal.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef WEFT__DEQUE_CAP_OVERRIDE
#define WEFT__DEQUE_CAP WEFT__DEQUE_CAP_OVERRIDE
#else
/*
 * Power of two. 1024, not Tokio's and Go's 256: a worker with a few hundred
 * runnable tasks (1,000 ping-pong pairs, a server with many ready
 * connections) kept spilling half its deque to the injection queue, and the
 * tasks then cycled through the shared queue and both workers' caches:
 * ping_pong_pairs ran 1.6-1.8x slower at 256 (same-run medians, see the
 * commit). 8 KiB per worker.
 */
#define WEFT__DEQUE_CAP 1024
#endif

/*
 * Most items one weft__deque_steal_half() moves: half of a full default ring
 * is 128 CASes on the victim's top line; 64 bounds how long one thief keeps
 * that line and how much work one steal can drag away from a cache.
 */
#define WEFT__DEQUE_STEAL_MAX \
	(WEFT__DEQUE_CAP / 2 < 64 ? WEFT__DEQUE_CAP / 2 : 64)

/* ABORTs (lost CAS races) one weft__deque_steal_half() call retries. */
#define WEFT__DEQUE_STEAL_RETRIES 4

/*
 * C and C++ spell an atomic member differently; the layouts are the same
 * (gcc and clang give std::atomic<T> the size and alignment of _Atomic(T)
 * for the scalar and pointer types used here), so a C++ test sees the
 * struct the C code writes.
 */
#ifdef __cplusplus
#define WEFT__DEQUE_ATOMIC(T) std::atomic<T>
#define WEFT__DEQUE_ALIGNED_CL alignas(WEFT__CACHELINE)
#else
#define WEFT__DEQUE_ATOMIC(T) _Atomic(T)
#define WEFT__DEQUE_ALIGNED_CL WEFT__ALIGNED_CL
#endif

/*
 * Indices grow without bound (int64_t: 2^63 pushes never happen); an item
 * at index i lives in buf[i & (WEFT__DEQUE_CAP - 1)]. Items are the
 * indices top .. bottom - 1.
 */
struct weft__deque {
	/* thieves CAS it; the owner CASes it only for the last item (and in
	 * weft__deque_take_top()) */
	WEFT__DEQUE_ALIGNED_CL WEFT__DEQUE_ATOMIC(int64_t) top;
	/* written by the owner only; thieves read it */
	WEFT__DEQUE_ALIGNED_CL WEFT__DEQUE_ATOMIC(int64_t) bottom;
	/* written by the owner only (relaxed); read by the owner and thieves */
	WEFT__DEQUE_ATOMIC(void *) buf[WEFT__DEQUE_CAP];
};

enum {
	WEFT__STEAL_EMPTY = 0, /* nothing to steal (as seen at the call) */
	WEFT__STEAL_ABORT = 1, /* lost a race for the top item; try again */
	WEFT__STEAL_OK = 2, /* *out holds the oldest item */
};

/**
 * weft__deque_init() - Make @d empty.
 * @d: the deque; nobody else may touch it during the call.
 *
 * Context: any thread, before the deque is shared.
 */
void weft__deque_init(struct weft__deque *d);

/**
 * weft__deque_push() - Add @item at the bottom (the owner's LIFO end).
 * @d: the owner's deque.
 * @item: a non-NULL pointer (NULL is a bug: it means "empty" elsewhere).
 *
 * Context: owner only; never blocks.
 * Return: true if stored; false if the ring is full (nothing stored: the
 * caller spills with weft__deque_take_top() and pushes again).
 */
bool weft__deque_push(struct weft__deque *d, void *item);

/**
 * weft__deque_take() - Remove the newest item (LIFO end).
 * @d: the owner's deque.
 *
 * The last item is arbitrated against thieves by one CAS; every other take
 * costs a seq_cst fence and no CAS.
 *
 * Context: owner only; never blocks.
 * Return: the item, or NULL when the deque is empty (or a thief won the
 * last item).
 */
void *weft__deque_take(struct weft__deque *d);

/**
 * weft__deque_take_if_bottom() - weft__deque_take(), only if the newest item
 * is @item.
 * @d: the owner's deque.
 * @item: the item hoped for.
 *
 * The owner reads the bottom slot first (it alone writes slots); only if it
 * holds @item does it take, which then yields @item or, if thieves emptied
 * the deque meanwhile, nothing. A joiner uses it to remove the entry of the
 * child it is about to run itself, instead of leaving a tombstone behind.
 *
 * Context: owner only; never blocks.
 * Return: true if @item was taken out; false if the deque is untouched (the
 * bottom is another item) or a thief took @item first.
 */
bool weft__deque_take_if_bottom(struct weft__deque *d, void *item);

/**
 * weft__deque_steal() - Remove the oldest item (FIFO end).
 * @d: the victim's deque.
 * @out: receives the item, written only on WEFT__STEAL_OK.
 *
 * Context: any thread, the owner included; never blocks.
 * Return: WEFT__STEAL_OK; WEFT__STEAL_EMPTY if the deque looked empty;
 * WEFT__STEAL_ABORT if another thief or the owner took the item first
 * (the deque may still hold items: the caller may retry).
 */
int weft__deque_steal(struct weft__deque *d, void **out);

/**
 * weft__deque_len() - How many items @d holds, approximately.
 * @d: any deque.
 *
 * A racy snapshot of two relaxed loads (top, then bottom): exact for the
 * owner between its own operations, a hint for everyone else. Never
 * negative, never above WEFT__DEQUE_CAP. It is no barrier: a park protocol
 * that needs "publish my state, then see the queues" issues its own
 * seq_cst fence before calling it.
 *
 * Context: any thread; never blocks.
 * Return: 0 .. WEFT__DEQUE_CAP.
 */
size_t weft__deque_len(const struct weft__deque *d);

/**
 * weft__deque_steal_half() - Move about half of @victim's items.
 * @victim: the deque to steal from; not @thief.
 * @thief: the caller's own deque; receives every stolen item but the first.
 * @first: receives the first (oldest) stolen item.
 *
 * Takes ceil(n / 2) items, where n is the victim's length seen by the first
 * successful steal, but at most WEFT__DEQUE_STEAL_MAX, and at most one more
 * than the room @thief had at the call (so every stolen item has a place:
 * with @thief full it steals one item). Each item is claimed by its own
 * CAS on the victim's top, as weft__deque_steal() does; why one CAS for the
 * whole batch would be wrong is explained at steal_half() in deque.c. It
 * stops early when the victim runs dry, and gives up after
 * WEFT__DEQUE_STEAL_RETRIES lost races (ABORT) in one call, so 0 can also
 * mean "contended": a caller that must not miss work looks at
 * weft__deque_len(@victim) before it parks.
 *
 * Context: the owner of @thief; never blocks.
 * Return: the number of items stolen (*first plus those pushed into
 * @thief); 0 if none (*first untouched).
 */
size_t weft__deque_steal_half(struct weft__deque *victim,
			      struct weft__deque *thief, void **first);

/**
 * weft__deque_take_top() - Remove up to @max of the oldest items (FIFO end).
 * @d: the owner's deque.
 * @out: receives the items, oldest first.
 * @max: the most items to remove.
 *
 * For spilling half of a full deque to the global injection queue, and
 * for the owner's own FIFO pops (a yield's next task). One CAS
 * claims the whole batch: that is safe here (unlike in steal_half) because
 * the caller is the owner, so nobody moves bottom during the call. With
 * @max >= 1 the next push succeeds: 0 is returned only for an empty deque,
 * and k items taken leave k free slots (thieves only add room).
 *
 * Context: owner only; never blocks.
 * Return: how many items were written to @out (0 if empty or @max is 0).
 */
size_t weft__deque_take_top(struct weft__deque *d, void **out, size_t max);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_RUNTIME_DEQUE_H */
