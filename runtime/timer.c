/* SPDX-License-Identifier: MIT */
/*
 * runtime/timer.c - per-worker timers: an intrusive pairing heap, plus the
 * time helpers (clock, deadline arithmetic, timespec and ms conversions).
 *
 * Theory of operation
 * -------------------
 * Guarantees:
 *   - No allocation, ever. A struct weft__timer is embedded in the record
 *     that arms it (task, scope, I/O op), so a sleeping task never needs
 *     memory and arming a timer cannot fail.
 *   - Exact: deadlines are full 64-bit nanoseconds, compared exactly; no
 *     slot rounding, and a timer never fires early
 *     (weft__timer_pop_expired() returns only deadline_ns <= now_ns).
 *   - Stable: the key is (deadline_ns, order), where order is a per-heap
 *     insertion counter. Keys are unique, so the heap pops in one total
 *     order and equal deadlines fire first in, first out (RELIABILITY E7).
 *   - Costs: insert O(1); remove of any node and delete-min amortised
 *     O(log n); remove of a childless node (a recently armed timer that is
 *     cancelled, the common case) O(1). Nothing recurses, so 10^6 siblings
 *     or a 10^6-deep chain cost no stack.
 *   - Single-threaded: the owning worker holds its timer lock around every
 *     call. Nothing here locks, reads the clock, or suspends.
 *
 * Measured (informal, -O2, 2-core Xeon VM, 10^6 live timers with random
 * deadlines): arm+cancel of one timer ~9 ns; arm one + cancel a random live
 * one ~330 ns; pop the first + re-arm it ~2.2 us (~240 ns with 10^4 live).
 * The pop cost is pointer chasing: the root has ~30 children at each pop
 * at 10^6 live, each a cache miss. An array binary heap does the pop +
 * re-arm in ~540 ns on the same machine, but it allocates and has no cheap
 * cancel (below).
 *
 * Structure: a heap-ordered multiway tree (every node's key is after its
 * parent's), stored child / next-sibling / prev. prev is the previous
 * sibling, or the parent for a first child, or &root_mark for the root, or
 * NULL when the timer is unlinked — so "linked" is just prev != NULL, for
 * the root too.
 *
 * Operations:
 *   1. meld(a, b) of two roots: the one with the later key becomes the first
 *      child of the other. O(1).
 *   2. insert: a one-node tree linked with the root.
 *   3. delete-min (pop): drop the root, then merge its children in two
 *      passes, both loops: (a) left to right, link siblings in pairs and
 *      push each result on a stack threaded through ->next; (b) pop the
 *      stack (so right to left) and link each tree into an accumulator.
 *      Two-pass merging is what gives the amortised O(log n) bound.
 *   4. remove(t), t not the root: unhook t from its sibling list (fixing the
 *      parent's child pointer if t was first), merge t's children as in 3,
 *      and link the result with the root. t's subtree keys are all after
 *      the root's, so the root stays the root.
 *
 * The wheel in front of the heap
 * ------------------------------
 * With 10^6 sleepers the heap alone spends its time in merge_pairs()
 * (17% of the sleepers benchmark's CPU, every pop a chain of cache
 * misses). So far timers wait in a hierarchical timing wheel instead, and
 * only the timers of the first tick or so are ever in the heap, which stays
 * small; the heap keeps everything exact (ns deadlines, FIFO by order).
 *
 *   - A tick is 2^20 ns (~1.05 ms); tick(t) = deadline_ns >> 20.
 *   - WEFT__WHEEL_LEVELS levels of 64 slots; level L slot i holds the
 *     timers whose tick shares with wheel_now every 6-bit group above L,
 *     differs in group L, and has i there (group L = bits 6L..6L+5). So
 *     every wheel timer is after wheel_now, all of level L are before all
 *     of level L+1, and within a level slot order is time order: the
 *     earliest slot is the lowest set bit of the lowest non-empty level.
 *     Timers more than 2^36 ticks (2.2 years) away, and those whose tick
 *     is not after wheel_now (the reference point), go to the heap.
 *   - wheel_now may move to any tick before the earliest slot's start
 *     without changing any timer's slot. To pass a slot's start, the slot
 *     is emptied and each of its timers placed again (into the heap, or a
 *     lower level): cascading. A timer cascades at most once per level.
 *   - pop_expired(now) first cascades every slot that starts at or before
 *     tick(now), so every timer due by now is in the heap; the heap pops
 *     them in (deadline, order) order. next_deadline() cascades the
 *     earliest slots until the heap's first timer is before every slot.
 *   - A wheel slot is a doubly linked list through next/prev (the head's
 *     prev is &wheel_mark): insert and remove are O(1).
 *
 * Designs considered and dropped:
 *   - Binary or 4-ary array heap (DESIGN.md "Time" offers a 4-ary heap): the
 *     array must grow when timers are armed, i.e. a sleep could fail with
 *     -ENOMEM; an intrusive index-based variant still needs the array.
 *   - A wheel alone (ms slots): rounds deadlines, and FIFO among equal
 *     deadlines needs care across cascades; the heap behind it gives both.
 *   - Recursive two-pass merge: simplest to write, but a root with 10^6
 *     children (10^6 sleeps armed before the first fires) would recurse
 *     10^6 deep.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime() even under -std=c17 */
#endif
#include "timer.h"

#include <limits.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "sched.h"

#define NSEC_PER_SEC UINT64_C(1000000000)
#define NSEC_PER_MSEC UINT64_C(1000000)

/*
 * The root's prev points here, so weft__timer_linked() holds for the root.
 * Only its address is used (never read or written), so every heap on every
 * thread can share it.
 */
static struct weft__timer root_mark;

/* Is @a's key strictly before @b's? Keys are unique within a heap. */
static inline bool before(const struct weft__timer *a,
			  const struct weft__timer *b)
{
	if (a->deadline_ns != b->deadline_ns)
		return a->deadline_ns < b->deadline_ns;
	return a->order < b->order;
}

/*
 * meld() - Operation 1: make the later of two roots the first child of the
 * other. @a and @b are tree roots; their own next/prev are stale and are
 * left for the caller to set. Return: the new root.
 */
static inline struct weft__timer *meld(struct weft__timer *a,
				       struct weft__timer *b)
{
	struct weft__timer *tmp;

	if (before(b, a)) {
		tmp = a;
		a = b;
		b = tmp;
	}
	b->next = a->child;
	if (a->child)
		a->child->prev = b;
	b->prev = a;
	a->child = b;
	return a;
}

/*
 * merge_pairs() - Operation 3: two-pass merge of the sibling list starting
 * at @first into one tree, without recursion. Return: its root (next/prev
 * stale, for the caller to set), or NULL for an empty list.
 */
static struct weft__timer *merge_pairs(struct weft__timer *first)
{
	struct weft__timer *stack = NULL, *a, *b, *rest;

	if (!first || !first->next)
		return first;

	/* (a) left to right, in pairs; results pushed on a ->next stack */
	while (first) {
		a = first;
		b = a->next;
		if (b) {
			rest = b->next; /* read before meld() rewrites it */
			a = meld(a, b);
		} else {
			rest = NULL;
		}
		a->next = stack;
		stack = a;
		first = rest;
	}

	/* (b) right to left into one accumulator */
	a = stack;
	stack = stack->next;
	while (stack) {
		b = stack;
		stack = stack->next;
		a = meld(a, b);
	}
	return a;
}

static inline void set_root(struct weft__timer_heap *h, struct weft__timer *r)
{
	r->prev = &root_mark;
	r->next = NULL;
	h->root = r;
}

static inline void unlink_node(struct weft__timer *t)
{
	t->child = NULL;
	t->next = NULL;
	t->prev = NULL;
	t->in_wheel = false;
}

/* Drop the root (operation 3); the caller fixes count and unlinks it. */
static void remove_root(struct weft__timer_heap *h)
{
	struct weft__timer *sub = merge_pairs(h->root->child);

	if (sub)
		set_root(h, sub);
	else
		h->root = NULL;
}

void weft__timer_heap_init(struct weft__timer_heap *h)
{
	memset(h, 0, sizeof(*h));
}

void weft__timer_init(struct weft__timer *t)
{
	t->deadline_ns = 0;
	t->order = 0;
	unlink_node(t);
}

bool weft__timer_linked(const struct weft__timer *t)
{
	return t->prev != NULL;
}

/* ------------------------------------------------------------ wheel */

#define TICK_SHIFT 20
#define LEVEL_BITS 6

/* The head of a wheel slot's list has prev == &wheel_mark (only its
 * address is used). */
static struct weft__timer wheel_mark;

static void heap_link(struct weft__timer_heap *h, struct weft__timer *t)
{
	t->child = NULL;
	t->in_wheel = false;
	if (h->root)
		set_root(h, meld(h->root, t));
	else
		set_root(h, t);
}

static void wheel_link(struct weft__timer_heap *h, struct weft__timer *t,
		       unsigned s)
{
	t->child = NULL;
	t->in_wheel = true;
	t->wslot = (uint16_t)s;
	t->next = h->slot[s];
	if (t->next)
		t->next->prev = t;
	t->prev = &wheel_mark;
	h->slot[s] = t;
	h->occupied[s / WEFT__WHEEL_SLOTS] |= UINT64_C(1)
					      << (s % WEFT__WHEEL_SLOTS);
	h->wheel_count++;
}

static void wheel_unlink(struct weft__timer_heap *h, struct weft__timer *t)
{
	unsigned s = t->wslot;

	if (t->prev == &wheel_mark) {
		WEFT__BUG_ON(h->slot[s] != t); /* in another worker's wheel */
		h->slot[s] = t->next;
	} else {
		t->prev->next = t->next;
	}
	if (t->next)
		t->next->prev = t->prev;
	if (!h->slot[s])
		h->occupied[s / WEFT__WHEEL_SLOTS] &=
			~(UINT64_C(1) << (s % WEFT__WHEEL_SLOTS));
	h->wheel_count--;
}

/* Put @t (deadline and order set, links stale) where it belongs: the heap
 * when its tick is at or before @near, or beyond the wheel; else its
 * wheel slot relative to wheel_now. */
static void place(struct weft__timer_heap *h, struct weft__timer *t,
		  uint64_t near)
{
	uint64_t tick = t->deadline_ns >> TICK_SHIFT;
	unsigned level;

	if (tick <= near || tick <= h->wheel_now) {
		heap_link(h, t);
		return;
	}
	level = (unsigned)(63 - __builtin_clzll(tick ^ h->wheel_now)) /
		LEVEL_BITS;
	if (level >= WEFT__WHEEL_LEVELS) {
		heap_link(h, t);
		return;
	}
	wheel_link(h, t,
		   level * WEFT__WHEEL_SLOTS +
			   (unsigned)((tick >> (level * LEVEL_BITS)) &
				      (WEFT__WHEEL_SLOTS - 1)));
}

/* The earliest non-empty slot and the first tick it covers; -1 if the
 * wheel is empty. */
static int wheel_first(const struct weft__timer_heap *h, uint64_t *start)
{
	for (unsigned l = 0; l < WEFT__WHEEL_LEVELS; l++) {
		if (!h->occupied[l])
			continue;
		unsigned i = (unsigned)__builtin_ctzll(h->occupied[l]);
		unsigned shift = l * LEVEL_BITS;
		uint64_t above = ~((UINT64_C(1) << (shift + LEVEL_BITS)) - 1);
		*start = (h->wheel_now & above) | ((uint64_t)i << shift);
		return (int)(l * WEFT__WHEEL_SLOTS + i);
	}
	return -1;
}

/* Empty slot @s, which starts at tick @start, and place its timers again
 * with wheel_now = @start; ticks up to @near go to the heap. */
static void cascade(struct weft__timer_heap *h, int s, uint64_t start,
		    uint64_t near)
{
	struct weft__timer *t = h->slot[s], *next;

	h->slot[s] = NULL;
	h->occupied[s / WEFT__WHEEL_SLOTS] &=
		~(UINT64_C(1) << (s % WEFT__WHEEL_SLOTS));
	h->wheel_now = start;
	for (; t; t = next) {
		next = t->next;
		h->wheel_count--;
		place(h, t, near);
	}
}

/* Cascade every slot that starts at or before @target, then move
 * wheel_now up to @target: afterwards every timer whose tick is at or
 * before @target is in the heap. */
static void wheel_advance(struct weft__timer_heap *h, uint64_t target)
{
	uint64_t start;
	int s;

	while (h->wheel_count && (s = wheel_first(h, &start)) >= 0 &&
	       start <= target)
		cascade(h, s, start, target);
	if (target > h->wheel_now)
		h->wheel_now = target;
}

void weft__timer_insert(struct weft__timer_heap *h, struct weft__timer *t,
			uint64_t deadline_ns)
{
	WEFT__BUG_ON(t->prev != NULL); /* t already linked */

	t->deadline_ns = deadline_ns;
	t->order = h->next_order++;
	place(h, t, h->wheel_now);
	h->count++;
}

void weft__timer_remove(struct weft__timer_heap *h, struct weft__timer *t)
{
	struct weft__timer *sub;

	WEFT__BUG_ON(t->prev == NULL); /* t not linked */

	if (t->in_wheel) {
		wheel_unlink(h, t);
	} else if (t == h->root) {
		remove_root(h);
	} else {
		WEFT__BUG_ON(t->prev == &root_mark); /* root of another heap */
		/* Operation 4: unhook t, then fold its children back in. */
		if (t->prev->child == t)
			t->prev->child = t->next;
		else
			t->prev->next = t->next;
		if (t->next)
			t->next->prev = t->prev;
		sub = merge_pairs(t->child);
		if (sub)
			set_root(h, meld(h->root, sub));
	}
	h->count--;
	unlink_node(t);
}

struct weft__timer *weft__timer_min(struct weft__timer_heap *h)
{
	weft__timer_next_deadline(h);
	return h->root;
}

struct weft__timer *weft__timer_pop_expired(struct weft__timer_heap *h,
					    uint64_t now_ns)
{
	struct weft__timer *r;

	if (h->wheel_count)
		wheel_advance(h, now_ns >> TICK_SHIFT);
	r = h->root;
	if (!r || r->deadline_ns > now_ns)
		return NULL;
	remove_root(h);
	h->count--;
	unlink_node(r);
	return r;
}

uint64_t weft__timer_next_deadline(struct weft__timer_heap *h)
{
	uint64_t start;
	int s;

	/* The earliest slot may hold a timer before the heap's first (or
	 * equal to it, earlier in the tick): cascade until the heap's first
	 * tick is before every slot. Each round empties one slot into lower
	 * levels or the heap, so this ends at a level-0 slot at the latest. */
	while (h->wheel_count && (s = wheel_first(h, &start)) >= 0 &&
	       (!h->root || (h->root->deadline_ns >> TICK_SHIFT) >= start))
		cascade(h, s, start, start);
	return h->root ? h->root->deadline_ns : UINT64_MAX;
}

uint64_t weft__clock_real(void)
{
	struct timespec ts;
	uint64_t sec;
	int ret;

	/* CLOCK_MONOTONIC cannot fail (clock_gettime(2)) */
	ret = clock_gettime(CLOCK_MONOTONIC, &ts);
	WEFT__BUG_ON(ret != 0);
	if (ts.tv_sec < 0)
		return 0;
	sec = (uint64_t)ts.tv_sec;
	/* ~584 years of uptime (or a time-namespace offset): saturate, but
	 * below UINT64_MAX, which means forever. */
	if (sec >= (UINT64_MAX - 1) / NSEC_PER_SEC)
		return UINT64_MAX - 1;
	return sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* Runtimes alive with WEFT_CLOCK_PAUSED: while there are none, the clock
 * costs one relaxed load more than clock_gettime. */
static _Atomic unsigned weft__vclock_runtimes;

void weft__vclock_runtimes_add(int delta)
{
	atomic_fetch_add_explicit(&weft__vclock_runtimes, (unsigned)delta,
				  memory_order_relaxed);
}

uint64_t weft__clock_now(void)
{
	if (WEFT__UNLIKELY(atomic_load_explicit(&weft__vclock_runtimes,
						memory_order_relaxed))) {
		struct weft__worker *w = weft__worker_current();
		if (w && w->rt->vclock_paused)
			return atomic_load_explicit(&w->rt->vclock_ns,
						    memory_order_relaxed);
	}
	return weft__clock_real();
}

uint64_t weft__deadline_after(uint64_t now_ns, uint64_t timeout_ns)
{
	/* Negative as int64 (E2), WEFT_FOREVER, or an overflowing sum. */
	if (timeout_ns > (uint64_t)INT64_MAX ||
	    now_ns > UINT64_MAX - timeout_ns)
		return UINT64_MAX;
	return now_ns + timeout_ns;
}

/* Largest time_t: it is a signed integer type on every Linux ABI. */
#define TIME_T_MAX                                            \
	((time_t)(sizeof(time_t) >= 8 ? (uint64_t)INT64_MAX : \
					(uint64_t)INT32_MAX))

void weft__ns_to_timespec(uint64_t ns, struct timespec *ts)
{
	uint64_t sec = ns / NSEC_PER_SEC;

	if (sec > (uint64_t)TIME_T_MAX) {
		ts->tv_sec = TIME_T_MAX;
		ts->tv_nsec = (long)(NSEC_PER_SEC - 1);
		return;
	}
	ts->tv_sec = (time_t)sec;
	ts->tv_nsec = (long)(ns % NSEC_PER_SEC);
}

int64_t weft__timeout_ms_until(uint64_t deadline_ns, uint64_t now_ns)
{
	uint64_t left, ms;

	if (deadline_ns == UINT64_MAX)
		return -1;
	if (deadline_ns <= now_ns)
		return 0;
	left = deadline_ns - now_ns;
	ms = left / NSEC_PER_MSEC + (left % NSEC_PER_MSEC != 0);
	return ms > (uint64_t)INT_MAX ? INT_MAX : (int64_t)ms;
}
