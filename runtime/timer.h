/* SPDX-License-Identifier: MIT */
/*
 * runtime/timer.h - per-worker timer heap and the time helpers every file uses.
 *
 * The "heap" is an intrusive hierarchical timing wheel in front of an exact
 * pairing heap (theory of operation in timer.c): nodes live inside task
 * records and scope/I/O records, so arming a timer never allocates, and a
 * sleeping task never needs memory. The structure
 * is single-threaded; the worker that owns it wraps every call in its own
 * timer lock. Deadlines are absolute CLOCK_MONOTONIC nanoseconds; UINT64_MAX
 * (WEFT_FOREVER) means "never".
 */
#ifndef WEFT_RUNTIME_TIMER_H
#define WEFT_RUNTIME_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * One timer, embedded in the record that owns it. All fields are written
 * only by the heap functions below, under the owning worker's timer lock;
 * the owner may read deadline_ns of a linked timer under the same lock.
 */
struct weft__timer {
	uint64_t deadline_ns; /* absolute CLOCK_MONOTONIC ns; set by insert */
	uint64_t order; /* insertion counter: FIFO among equal ones */
	/* heap links, or wheel-slot list links (next/prev);
	 * prev == NULL <=> not linked */
	struct weft__timer *child, *next, *prev;
	uint16_t wslot; /* wheel slot (level * 64 + index) when in_wheel */
	bool in_wheel;
};

#define WEFT__WHEEL_LEVELS 6
#define WEFT__WHEEL_SLOTS 64

/*
 * A worker's timers: a hierarchical wheel for the far ones and an exact
 * pairing heap for the near ones (timer.c). Written and read only under
 * that worker's timer lock.
 */
struct weft__timer_heap {
	struct weft__timer *root; /* heap: first (deadline, order) */
	uint64_t next_order; /* next insertion counter; never wraps */
	size_t count; /* linked timers, heap and wheel */
	size_t wheel_count; /* of which in the wheel */
	uint64_t wheel_now; /* the wheel's reference tick (timer.c) */
	uint64_t occupied[WEFT__WHEEL_LEVELS]; /* bit i: slot i not empty */
	struct weft__timer *slot[WEFT__WHEEL_LEVELS * WEFT__WHEEL_SLOTS];
};

/**
 * weft__timer_heap_init() - Make @h an empty heap.
 * @h: the heap.
 *
 * Context: any thread; @h not yet shared.
 */
void weft__timer_heap_init(struct weft__timer_heap *h);

/**
 * weft__timer_init() - Make @t an unlinked timer.
 * @t: the timer, usually embedded in a task or scope record.
 *
 * Context: any thread; @t not yet shared.
 */
void weft__timer_init(struct weft__timer *t);

/**
 * weft__timer_linked() - Is @t in a heap?
 * @t: an initialised timer.
 *
 * True for every linked node, the root included. A record that embeds a
 * timer must see this false before its memory is freed (RELIABILITY E6).
 *
 * Context: under the timer lock of the heap @t may be in.
 * Return: true if @t is linked in some heap.
 */
bool weft__timer_linked(const struct weft__timer *t);

/**
 * weft__timer_insert() - Arm @t to expire at @deadline_ns.
 * @h: the heap.
 * @t: an unlinked timer (linking a linked one is a bug: WEFT__BUG_ON).
 * @deadline_ns: absolute CLOCK_MONOTONIC ns. A deadline already in the past
 *   is legal: the next weft__timer_pop_expired() returns it. UINT64_MAX is
 *   legal but pointless: weft__timer_next_deadline() then still reads
 *   "nothing to wait for", and only now_ns == UINT64_MAX would pop it.
 *
 * O(1), never allocates. Among equal deadlines, timers expire in the order
 * they were inserted; a removed and re-inserted timer goes to the back.
 *
 * Context: under the heap's timer lock; never suspends.
 */
void weft__timer_insert(struct weft__timer_heap *h, struct weft__timer *t,
			uint64_t deadline_ns);

/**
 * weft__timer_remove() - Disarm @t before it expires.
 * @h: the heap @t is linked in.
 * @t: a timer linked in @h. An unlinked timer, or the root of another
 *   heap, is a bug (WEFT__BUG_ON); a non-root timer of another heap cannot
 *   be told apart cheaply and corrupts both heaps, so callers keep the
 *   owning worker next to the timer.
 *
 * O(1) for a timer in the wheel (most far ones); in the heap amortised
 * O(log n), O(1) for a timer that has no children. @t is unlinked on
 * return.
 *
 * Context: under the heap's timer lock; never suspends.
 */
void weft__timer_remove(struct weft__timer_heap *h, struct weft__timer *t);

/**
 * weft__timer_min() - The timer that expires first.
 * @h: the heap.
 *
 * Moves wheel slots into the heap as needed to know.
 * Context: under the heap's timer lock.
 * Return: the linked timer with the smallest (deadline, order); NULL when
 * @h is empty.
 */
struct weft__timer *weft__timer_min(struct weft__timer_heap *h);

/**
 * weft__timer_pop_expired() - Take the first timer if it has expired.
 * @h: the heap.
 * @now_ns: the current CLOCK_MONOTONIC time (or the virtual clock).
 *
 * Never early: a timer is returned only when its deadline_ns <= @now_ns.
 * Call in a loop until NULL to fire everything due, in (deadline, insertion)
 * order. Amortised O(log n).
 *
 * Context: under the heap's timer lock; never suspends.
 * Return: the removed timer, now unlinked; NULL if @h is empty or its first
 * deadline is after @now_ns.
 */
struct weft__timer *weft__timer_pop_expired(struct weft__timer_heap *h,
					    uint64_t now_ns);

/**
 * weft__timer_next_deadline() - When the worker must wake up next.
 * @h: the heap.
 *
 * Exact: moves the wheel slots that may hold it into the heap (cheap: at
 * most a few slots, and only the first tick's timers end in the heap).
 * Context: under the heap's timer lock.
 * Return: the smallest linked deadline_ns; UINT64_MAX when @h is empty.
 */
uint64_t weft__timer_next_deadline(struct weft__timer_heap *h);

/**
 * weft__clock_now() - The clock of every deadline: weft_now().
 *
 * CLOCK_MONOTONIC (weft__clock_real()), except on a worker of a runtime
 * made with WEFT_CLOCK_PAUSED, where it is that runtime's virtual clock
 * (worker.c: vclock_park()). Use it for deadlines and timeouts; use
 * weft__clock_real() for spins, back-offs and fairness, which are about
 * real time spent on a CPU (a virtual clock stands still while tasks run).
 *
 * Context: any thread; never suspends.
 * Return: nanoseconds since an arbitrary start; never UINT64_MAX.
 */
uint64_t weft__clock_now(void);

/**
 * weft__clock_real() - Read CLOCK_MONOTONIC.
 *
 * Always reads the clock (no caching). Unaffected by CLOCK_REALTIME jumps
 * (RELIABILITY E8).
 *
 * Context: any thread; never suspends.
 * Return: nanoseconds since an arbitrary start; never UINT64_MAX.
 */
uint64_t weft__clock_real(void);

/* Count a runtime made with WEFT_CLOCK_PAUSED in (+1) or out (-1): while
 * none is alive, weft__clock_now() does not look for one. */
void weft__vclock_runtimes_add(int delta);

/**
 * weft__deadline_after() - The absolute deadline @timeout_ns after @now_ns.
 * @now_ns: the current time.
 * @timeout_ns: a relative timeout; UINT64_MAX (WEFT_FOREVER) means forever.
 *
 * Never wraps into "already expired" (RELIABILITY E2): a sum that overflows
 * saturates at UINT64_MAX, and so does any @timeout_ns >= 2^63 (292 years),
 * which is what a caller's negative int64 timeout such as (uint64_t)-5
 * becomes — those mean forever even when @now_ns is small, as under a
 * virtual clock that starts at 0.
 *
 * Context: any thread; pure.
 * Return: @now_ns + @timeout_ns, or UINT64_MAX as above.
 */
uint64_t weft__deadline_after(uint64_t now_ns, uint64_t timeout_ns);

/**
 * weft__ns_to_timespec() - Split @ns into a struct timespec.
 * @ns: nanoseconds (absolute or relative).
 * @ts: the result.
 *
 * tv_sec is never negative and never overflows time_t (RELIABILITY E3): with
 * a 64-bit time_t every value is exact (UINT64_MAX is 18446744073 s); with a
 * 32-bit time_t values past its range clamp to its maximum with tv_nsec
 * 999999999. Copy the fields into a __kernel_timespec (64-bit tv_sec) for
 * io_uring.
 *
 * Context: any thread; pure.
 */
void weft__ns_to_timespec(uint64_t ns, struct timespec *ts);

/**
 * weft__timeout_ms_until() - A poll/epoll_wait timeout for @deadline_ns.
 * @deadline_ns: absolute deadline; UINT64_MAX means forever.
 * @now_ns: the current time.
 *
 * Rounds up, so a wait never ends early: 1 ns left gives 1 ms.
 *
 * Context: any thread; pure.
 * Return: -1 for UINT64_MAX (wait forever); 0 if @deadline_ns <= @now_ns;
 * else the milliseconds left rounded up, clamped to INT_MAX (the caller
 * wakes early after ~24.8 days and recomputes).
 */
int64_t weft__timeout_ms_until(uint64_t deadline_ns, uint64_t now_ns);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_RUNTIME_TIMER_H */
