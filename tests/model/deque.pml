/* SPDX-License-Identifier: MIT */
/*
 * tests/model/deque.pml - spin model of the Chase-Lev deque of
 * runtime/deque.c (RELIABILITY 3.3, C6 and C7). Run by run_spin.sh.
 *
 * One owner pushes NITEMS items, taking at will in between, then drains;
 * two thieves steal until the owner is done. The ring has CAP slots; a
 * full push spills CAP/2 items to an injector with take_top() (one CAS,
 * owner only), as a worker spills to the global injection queue, and
 * pushes again. Every shared access is its own step; each CAS is one
 * atomic step; spin explores every interleaving.
 *
 * Checked: every item is consumed (taken, stolen or spilled) exactly once,
 * asserted at each consumption and for all items at the end; the drained
 * deque ends empty (top == bottom); and no process is stuck (spin's
 * invalid end state check).
 *
 * Indices. The C code's top and bottom are int64_t and never wrap. Here
 * they are counters too, but every decision the algorithm makes from them
 * (empty, full, last item, which slot) uses only their IBITS-bit views,
 * with signed IBITS-bit differences, and they start at START, just below
 * the wrap: the views wrap in the middle of every run, and with CAP 2 each
 * slot is reused several times. Only the CAS on top compares the whole
 * counter, as the C CAS compares all 64 bits: a CAS on the 3-bit view alone
 * would let a thief stalled for 8 claims succeed on a stale top (ABA),
 * which 64-bit indices rule out. A signed 3-bit difference holds -4 .. 3,
 * and CAP must divide 2^IBITS for the slot of a view to be the slot of the
 * index: CAP 2 runs with IBITS 3 (the default), CAP 4 with IBITS 4.
 *
 * MUTANT selects a known-wrong variant, which must fail (run_spin.sh checks
 * that each one does, so a model that checks nothing cannot pass):
 *   1  take() keeps the last item without the CAS;
 *   2  take() reads top before lowering bottom (the missing seq_cst fence:
 *      a store-load reordering);
 *   3  a thief claims two items with one CAS: steal_half with a single
 *      CAS, which deque.c explains is wrong against the CAS-free take;
 *   4  push() lets CAP + 1 items in.
 *
 * Limit: spin is sequentially consistent. This checks the algorithm, not
 * the C11 orderings (see the table in runtime/deque.c): a fence + relaxed
 * access there is one plain step here.
 */

#ifndef CAP
#define CAP 2
#endif
#ifndef IBITS
#define IBITS 3
#endif
#ifndef NITEMS
#define NITEMS 6
#endif
#ifndef START
#define START ((1 << IBITS) - 3)
#endif
#ifndef MUTANT
#define MUTANT 0
#endif

#define IMASK ((1 << IBITS) - 1)
#define IHALF (1 << (IBITS - 1))
#define V(x) ((x) & IMASK)		/* the IBITS-bit view of an index */
#define DIST(a, b) (((V(a) - V(b) + IHALF) & IMASK) - IHALF) /* a - b */
#define SLOT(i) (V(i) % CAP)
#define HALF (CAP / 2)

/*
 * Ghost clearing, to merge states: the step that claims index i (a
 * successful CAS, or the owner's CAS-free take) also zeroes its slot,
 * which the C code leaves alone. Nobody may read a claimed slot and keep
 * the value; a reader that does (a bug) now consumes item 0, which
 * consume() rejects, so no error is hidden. In a correct run the slot
 * cleared holds the claimed item: nobody reuses it before the claim.
 */
#define CLEAR(i) buf[SLOT(i)] = 0

short top;		/* thieves CAS it; the owner CASes it for the last item
			 * and in take_top */
short bottom;		/* written by the owner only */
byte buf[CAP];		/* item ids 1..NITEMS; written by the owner (and by
			 * CLEAR) */

byte got[NITEMS + 1];	/* times each item was consumed */
bool owner_done;	/* the owner pushes and takes nothing more */
byte ended;		/* owner and thieves that have finished */

inline consume(x)
{
	d_step {
		assert(x >= 1 && x <= NITEMS);
		got[x]++;
		assert(got[x] == 1)
	}
}

/* weft__deque_take(): x = the item, or 0 when empty / lost the last one. */
inline take(x)
{
#if MUTANT == 2
	t = top;
	b = bottom - 1;
	bottom = b;
#else
	b = bottom - 1;
	bottom = b;		/* then the seq_cst fence: a plain step here */
	t = top;
#endif
	if
	:: DIST(b, t) < 0 ->	/* empty: restore */
		bottom = b + 1;
		x = 0
#if MUTANT == 1
	:: DIST(b, t) >= 0 ->
		d_step { x = buf[SLOT(b)]; CLEAR(b) }
#else
	:: DIST(b, t) == 0 ->	/* the last item: one CAS decides */
		x = buf[SLOT(b)];
		atomic {
			if
			:: top == t -> top = t + 1; CLEAR(b)
			:: else -> x = 0
			fi
		}
		bottom = b + 1
	:: DIST(b, t) > 0 ->	/* index b is the owner's: no CAS */
		d_step { x = buf[SLOT(b)]; CLEAR(b) }
#endif
	fi
}

/* weft__deque_take_top(HALF) into the injector. The owner calls it, so
 * bottom stays put and one CAS may claim the batch. */
inline take_top()
{
	do
	:: t = top;
	   n = DIST(b, t);
	   if
	   :: n > HALF -> n = HALF
	   :: else
	   fi;
	   if
	   :: n <= 0 -> break	/* thieves emptied it meanwhile */
	   :: else
	   fi;
	   i = 0;
	   do
	   :: i < n -> spill[i] = buf[SLOT(t + i)]; i++
	   :: else -> break
	   od;
	   atomic {
		if
		:: top == t ->
			top = t + n;
			i = 0;
			do
			:: i < n -> CLEAR(t + i); i++
			:: else -> break
			od;
			ok = true
		:: else -> ok = false	/* a thief took index t: again */
		fi
	   }
	   if
	   :: ok ->
		i = 0;
		do
		:: i < n -> consume(spill[i]); spill[i] = 0; i++
		:: else -> break
		od;
		break
	   :: else
	   fi
	od
}

proctype owner()
{
	short b, t, n;
	byte x, next = 1, i;
	byte spill[HALF];
	bool ok;

	do
	:: next <= NITEMS ->	/* weft__deque_push(next) */
		do
		:: b = bottom;
		   t = top;
		   if
#if MUTANT == 4
		   :: DIST(b, t) >= CAP + 1 -> take_top()
#else
		   :: DIST(b, t) >= CAP -> take_top()	/* full: spill */
#endif
		   :: else -> break
		   fi
		od;
		buf[SLOT(b)] = next;
		bottom = b + 1;	/* release */
		next++;
		d_step {	/* dead: merge states */
			b = 0; t = 0; n = 0; ok = false;
			i = 0;
			do
			:: i < HALF -> spill[i] = 0; i++
			:: else -> break
			od;
			i = 0
		}
	:: take(x);
	   if
	   :: x != 0 -> consume(x)
	   :: else
	   fi;
	   d_step { b = 0; t = 0; x = 0 }	/* dead: merge states */
	:: next > NITEMS -> break
	od;
	do			/* drain */
	:: take(x);
	   if
	   :: x != 0 -> consume(x)
	   :: else -> break
	   fi
	od;
	owner_done = true;
	ended++
}

/* weft__deque_steal() in a loop until the owner is done. */
proctype thief()
{
	short b, t;
	byte x;
	bool ok;
#if MUTANT == 3
	byte y;
#endif

	do
	:: t = top;
	   b = bottom;		/* after the seq_cst fence */
	   if
	   :: DIST(b, t) > 0 ->
		x = buf[SLOT(t)];
		atomic {
			if
			:: top == t -> top = t + 1; CLEAR(t); ok = true
			:: else -> ok = false	/* ABORT */
			fi
		}
		if
		:: ok -> consume(x)
		:: else
		fi
#if MUTANT == 3
	   :: DIST(b, t) > 1 ->	/* two items, one CAS */
		x = buf[SLOT(t)];
		y = buf[SLOT(t + 1)];
		atomic {
			if
			:: top == t ->
				top = t + 2; CLEAR(t); CLEAR(t + 1); ok = true
			:: else -> ok = false
			fi
		}
		if
		:: ok -> consume(x); consume(y)
		:: else
		fi;
		y = 0
#endif
	   :: else		/* EMPTY */
	   fi;
	   d_step { t = 0; b = 0; x = 0; ok = false }	/* dead: merge states */
	:: owner_done -> break
	od;
	ended++
}

init
{
	byte i = 1;

	top = START;
	bottom = START;
	run owner();
	run thief();
	run thief();
	(ended == 3) -> skip;
	do
	:: i <= NITEMS -> assert(got[i] == 1); i++
	:: else -> break
	od;
	assert(top == bottom)
}
