/* SPDX-License-Identifier: MIT */
/*
 * runtime/deque.c - fixed-size Chase-Lev work-stealing deque.
 *
 * Theory of operation
 * -------------------
 * The algorithm and its C11 orderings are those of N. M. Lê, A. Pop,
 * A. Cohen, F. Zappa Nardelli, "Correct and efficient work-stealing for
 * weak memory models", PPoPP 2013, Fig. 1, with the ring fixed at
 * WEFT__DEQUE_CAP slots (no resize: a full push fails instead).
 *
 * Items are the indices top .. bottom - 1; index i lives in
 * buf[i & (CAP - 1)]. Indices are int64_t and only grow, so a CAS on top can
 * never succeed across a wrap (no ABA). What it guarantees: every pushed
 * item is returned exactly once, by take, steal, steal_half or take_top;
 * the owner sees its items LIFO, thieves FIFO.
 *
 *  1. push(x): the owner writes buf[b], then publishes bottom = b + 1 with
 *     release. A thief that reads the new bottom with acquire sees x.
 *  2. take(): the owner claims index b = bottom - 1 by storing bottom = b
 *     first, then (seq_cst fence) reads top. If t < b, no thief can claim
 *     b any more: a thief that has not yet read bottom will see the new
 *     bottom, and the fence pair makes "the owner missed the thief's
 *     top and the thief missed the owner's bottom" impossible. If t == b
 *     it is the last item: owner and thieves race for it with a CAS on top,
 *     and the owner restores bottom = b + 1 either way. If t > b the deque
 *     was empty; bottom is restored.
 *  3. steal(): a thief reads top, then (seq_cst fence) bottom; if t < b it
 *     reads buf[t] and claims index t with a CAS top: t -> t + 1. A failed
 *     CAS (ABORT) means someone else took index t; the value read is
 *     discarded (it may already be overwritten: slots are atomics, so that
 *     read is no data race).
 *  4. The ring: push stores into the slot of index b only if b - t < CAP
 *     for a top t it read with acquire. That read synchronises with the
 *     CAS that moved top past index b - CAP, so the thief's read of that
 *     slot happens before the owner overwrites it.
 *
 * Orderings (P = production build; T = WEFT_TSAN build, see below)
 *
 *   operation    access                   order            pairs with
 *   push         load bottom              relaxed          (own variable)
 *                load top                 acquire          CAS top in steal/take
 *                                                          (slot reuse, step 4)
 *                store buf[b]             relaxed          published by the next
 *                P: fence                 release          acquire load of bottom
 *                P: store bottom          relaxed            in steal (step 1)
 *                T: store bottom          release
 *   take         load bottom              relaxed          (own variable)
 *                P: store bottom          relaxed          load bottom in steal
 *                P: fence                 seq_cst          fence in steal (step 2)
 *                P: load top              relaxed
 *                T: store bottom          seq_cst          seq_cst loads in steal
 *                T: load top              seq_cst
 *                load buf[b]              relaxed          (own write)
 *                CAS top (last item)      seq_cst/relaxed  CAS top in steal;
 *                                                          acquire top in push
 *                store bottom (restore)   relaxed          (no data published)
 *   steal        P: load top              acquire          CAS top (redundant
 *                                                          with the fence; kept
 *                                                          as in the paper)
 *                P: fence                 seq_cst          fence in take (step 2)
 *                P: load bottom           acquire          release in push
 *                T: load top              seq_cst
 *                T: load bottom           seq_cst          release/seq_cst stores
 *                                                          of bottom in push/take
 *                load buf[t]              relaxed          validated by the CAS
 *                CAS top                  seq_cst/relaxed  CAS top in take;
 *                                                          acquire top in push
 *   take_top     load bottom              relaxed          (own variable)
 *                load top                 acquire          as in steal
 *                load buf[t..]            relaxed          (own writes)
 *                CAS top                  seq_cst/acquire  as in steal
 *   steal_half   n x steal, then push into the thief's own deque
 *   len          load top, load bottom    relaxed          (a hint)
 *
 * The WEFT_TSAN variant. ThreadSanitizer does not model standalone fences,
 * so with the production orderings it would not see that a push
 * happens-before the steal of that item, and would report races on the
 * item's contents far from this file (it does: the threaded cases of
 * tests/deque_test.cc report them when built that way; gcc also warns,
 * -Wtsan). In a WEFT_TSAN build (defined by the tsan preset, and here
 * whenever the compiler says it instruments for TSan) each fence + relaxed
 * pair becomes one stronger operation, which gives at least the same
 * guarantees: push publishes bottom with a release store; take stores
 * bottom and loads top seq_cst; steal loads top and bottom seq_cst. The
 * swap lives in the three helpers below, so each function body is the same
 * in both builds. The production variant stays covered by
 * tests/model/deque.pml (spin, sequentially consistent) and by the table
 * above. No TSan suppression is needed or wanted.
 *
 * Designs considered and dropped
 *  - One CAS for a whole steal_half batch (Go's runqsteal, Tokio's
 *    steal_into): wrong with Chase-Lev's CAS-free take; see steal_half().
 *    Those queues pay for it with a CAS in every owner pop.
 *  - A growable ring (the paper's resize): a full worker spills to the
 *    global injection queue instead, which also shares the work; no ring
 *    has to be retired while thieves may still read it.
 */
#include "runtime/deque.h"

#include "runtime/internal.h"

_Static_assert(WEFT__DEQUE_CAP >= 2 &&
		       (WEFT__DEQUE_CAP & (WEFT__DEQUE_CAP - 1)) == 0,
	       "WEFT__DEQUE_CAP must be a power of two >= 2");

#if defined(WEFT__TSAN) && !defined(WEFT_TSAN)
#define WEFT_TSAN 1
#endif

#ifndef WEFT_TSAN
/* push, step 1: make the slot written before visible with bottom. */
static inline void publish_bottom(struct weft__deque *d, int64_t b)
{
	/* release: pairs with the acquire load of bottom in steal_one() */
	atomic_thread_fence(memory_order_release);
	/* relaxed: ordered by the fence above */
	atomic_store_explicit(&d->bottom, b, memory_order_relaxed);
}

/* take, step 2: claim index b by lowering bottom, then read top. */
static inline int64_t reserve_bottom(struct weft__deque *d, int64_t b)
{
	/* relaxed: ordered by the fence below */
	atomic_store_explicit(&d->bottom, b, memory_order_relaxed);
	/* seq_cst: pairs with the seq_cst fence in load_top_bottom() */
	atomic_thread_fence(memory_order_seq_cst);
	/* relaxed: ordered by the fence above */
	return atomic_load_explicit(&d->top, memory_order_relaxed);
}

/* steal, step 3: read top, then bottom. */
static inline int64_t load_top_bottom(struct weft__deque *d, int64_t *b)
{
	/* acquire: pairs with the seq_cst CAS of top in steal_one(),
	 * weft__deque_take() and weft__deque_take_top(); the fence below
	 * would do as much, kept as in the paper */
	int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);

	/* seq_cst: pairs with the seq_cst fence in reserve_bottom() */
	atomic_thread_fence(memory_order_seq_cst);
	/* acquire: pairs with the release fence in publish_bottom() */
	*b = atomic_load_explicit(&d->bottom, memory_order_acquire);
	return t;
}
#else
static inline void publish_bottom(struct weft__deque *d, int64_t b)
{
	/* release: pairs with the seq_cst (acquire) load of bottom in
	 * load_top_bottom() */
	atomic_store_explicit(&d->bottom, b, memory_order_release);
}

static inline int64_t reserve_bottom(struct weft__deque *d, int64_t b)
{
	/* seq_cst store then seq_cst load: no store-load reordering; pairs
	 * with the seq_cst loads in load_top_bottom() */
	atomic_store_explicit(&d->bottom, b, memory_order_seq_cst);
	return atomic_load_explicit(&d->top, memory_order_seq_cst);
}

static inline int64_t load_top_bottom(struct weft__deque *d, int64_t *b)
{
	/* seq_cst: pairs with the seq_cst CAS of top and the seq_cst store
	 * in reserve_bottom() */
	int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);

	/* seq_cst: pairs with publish_bottom() (release) and
	 * reserve_bottom() (seq_cst) */
	*b = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
	return t;
}
#endif

static inline _Atomic(void *) *slot(struct weft__deque *d, int64_t i)
{
	return &d->buf[(uint64_t)i & (WEFT__DEQUE_CAP - 1)];
}

void weft__deque_init(struct weft__deque *d)
{
	/* relaxed: the deque is not shared yet; whoever shares it publishes
	 * the pointer with its own release */
	atomic_store_explicit(&d->top, 0, memory_order_relaxed);
	atomic_store_explicit(&d->bottom, 0, memory_order_relaxed);
	for (size_t i = 0; i < WEFT__DEQUE_CAP; i++)
		atomic_store_explicit(&d->buf[i], NULL, memory_order_relaxed);
}

bool weft__deque_push(struct weft__deque *d, void *item)
{
	int64_t b, t;

	WEFT__BUG_ON(item == NULL);
	/* relaxed: only the owner writes bottom */
	b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
	/* acquire: pairs with the seq_cst CAS of top in steal_one() and
	 * weft__deque_take(): a thief's read of the slot of index
	 * b - CAP happens before the store below reuses it */
	t = atomic_load_explicit(&d->top, memory_order_acquire);
	if (b - t > WEFT__DEQUE_CAP - 1)
		return false;
	/* relaxed: published by publish_bottom() */
	atomic_store_explicit(slot(d, b), item, memory_order_relaxed);
	publish_bottom(d, b + 1);
	return true;
}

void *weft__deque_take(struct weft__deque *d)
{
	/* relaxed: only the owner writes bottom */
	int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
	int64_t t = reserve_bottom(d, b);
	void *x;

	if (t > b) {
		/* empty. relaxed: no data published, thieves see t >= b
		 * either way */
		atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
		return NULL;
	}
	weft__chaos(); /* bottom reserved: thieves race for index b */
	/* relaxed: the owner's own write; no thief claims index b unless
	 * t == b, settled by the CAS below */
	x = atomic_load_explicit(slot(d, b), memory_order_relaxed);
	if (t == b) {
		/* the last item. seq_cst: pairs with the CAS in steal_one()
		 * (one of them wins) and with the acquire load of top in
		 * weft__deque_push(); relaxed on failure: nothing read */
		if (!atomic_compare_exchange_strong_explicit(
			    &d->top, &t, t + 1, memory_order_seq_cst,
			    memory_order_relaxed))
			x = NULL;
		/* relaxed: top == b + 1 now, the deque is empty */
		atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
	}
	return x;
}

bool weft__deque_take_if_bottom(struct weft__deque *d, void *item)
{
	/* relaxed: only the owner writes bottom and the slots */
	int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);

	/* relaxed: the owner's own write of index b - 1 (or an older
	 * index's item, if thieves took b - 1 already: then the take below
	 * finds the deque empty). Thieves never write slots, so a slot that
	 * holds @item keeps it until the owner pushes again. */
	if (atomic_load_explicit(slot(d, b - 1), memory_order_relaxed) != item)
		return false;
	return weft__deque_take(d) == item;
}

/*
 * One Chase-Lev steal. *len_out gets b - t as seen (0 when empty), for
 * steal_half's "half of what was there".
 */
static int steal_one(struct weft__deque *d, void **out, int64_t *len_out)
{
	int64_t b;
	int64_t t = load_top_bottom(d, &b);
	void *x;

	if (t >= b) {
		*len_out = 0;
		return WEFT__STEAL_EMPTY;
	}
	*len_out = b - t;
	weft__chaos(); /* between the reads of top/bottom and the claim */
	/* relaxed: may be stale or already reused; kept only if the CAS
	 * below proves index t was still unclaimed, and then the acquire
	 * load of bottom above ordered it after the push of index t */
	x = atomic_load_explicit(slot(d, t), memory_order_relaxed);
	/* seq_cst: pairs with the CAS in weft__deque_take() and other
	 * thieves, and with the acquire load of top in weft__deque_push()
	 * (the read above happens before the slot is reused); relaxed on
	 * failure: the value read is discarded */
	if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1,
						     memory_order_seq_cst,
						     memory_order_relaxed))
		return WEFT__STEAL_ABORT;
	*out = x;
	return WEFT__STEAL_OK;
}

int weft__deque_steal(struct weft__deque *d, void **out)
{
	int64_t len;

	return steal_one(d, out, &len);
}

size_t weft__deque_len(const struct weft__deque *d)
{
	/* relaxed, both: a hint. top first: it only grows, so the
	 * difference errs high rather than missing items that were there
	 * for the whole call (clamped: both reads are racy) */
	int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
	int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);

	if (b <= t)
		return 0;
	if (b - t > WEFT__DEQUE_CAP)
		return WEFT__DEQUE_CAP;
	return (size_t)(b - t);
}

/*
 * steal_half - Why each item costs its own CAS.
 *
 * A batch claim would read t and b, copy buf[t .. t+k-1] and CAS top from
 * t to t + k. The owner's take() does not write top unless it takes the
 * last item: it lowers bottom, sees (after its fence) a top t' < its
 * index b', and keeps b' without any CAS. So between the thief's read of
 * bottom and its CAS, the owner can take indices t + k - 1, t + k - 2, ...
 * (any of them, as long as it sees t' < b'), and the thief's CAS still
 * succeeds because top never moved: those items come out twice. One CAS
 * per item is the Chase-Lev steal, whose claim of index t is safe because
 * the owner only ever takes index t itself through the same CAS (t == b).
 * Making the batch safe would need a CAS in every take (as Go's and
 * Tokio's run queues do), the cost this deque exists to avoid.
 */
size_t weft__deque_steal_half(struct weft__deque *victim,
			      struct weft__deque *thief, void **first)
{
	/* the caller owns thief: its room only grows during the call (its
	 * thieves take, nobody else pushes), so every item we claim has a
	 * place and is never stolen only to be dropped */
	size_t room = WEFT__DEQUE_CAP - weft__deque_len(thief);
	size_t want = 1, got = 0;
	int aborts = 0;

	WEFT__BUG_ON(victim == thief);
	while (got < want) {
		void *x;
		int64_t n;
		bool pushed;
		int r = steal_one(victim, &x, &n);

		if (r == WEFT__STEAL_EMPTY)
			break;
		if (r == WEFT__STEAL_ABORT) {
			if (++aborts > WEFT__DEQUE_STEAL_RETRIES)
				break;
			continue;
		}
		if (got++ == 0) {
			/* ceil(n / 2) of what the first claim saw */
			want = ((size_t)n + 1) / 2;
			if (want > WEFT__DEQUE_STEAL_MAX)
				want = WEFT__DEQUE_STEAL_MAX;
			if (want > room + 1)
				want = room + 1;
			*first = x;
			continue;
		}
		pushed = weft__deque_push(thief, x);
		/* room + 1 bounds want: the push cannot fail */
		WEFT__BUG_ON(!pushed);
	}
	return got;
}

size_t weft__deque_take_top(struct weft__deque *d, void **out, size_t max)
{
	/* relaxed: only the owner (the caller) writes bottom, so it stays
	 * put during the call: a batch of k items is then k steals that no
	 * take can overlap */
	int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
	/* acquire: as the top load in load_top_bottom() */
	int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);

	for (;;) {
		int64_t n = b - t;

		if (n <= 0 || max == 0)
			return 0;
		if ((uint64_t)n > max)
			n = (int64_t)max;
		for (int64_t i = 0; i < n; i++)
			/* relaxed: the owner's own writes */
			out[i] = atomic_load_explicit(slot(d, t + i),
						      memory_order_relaxed);
		/* seq_cst: as the CAS in steal_one(); on failure a thief took
		 * index t, and t is reloaded with acquire (as a new steal
		 * would). Each failure is one item gone, so this ends. */
		if (atomic_compare_exchange_strong_explicit(
			    &d->top, &t, t + n, memory_order_seq_cst,
			    memory_order_acquire))
			return (size_t)n;
	}
}
