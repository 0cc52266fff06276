/* SPDX-License-Identifier: MIT */
/*
 * tests/model/deque.pml - spin model of the Chase-Lev deque of
 * runtime/deque.c (RELIABILITY 3.3, C6 and C7).
 *
 * One owner pushes NITEMS items, taking at will in between; two thieves
 * steal. The ring has CAP slots; a full push spills CAP/2 items to an
 * injector with take_top() (one CAS, owner only), as a worker spills to the
 * global injection queue, and pushes again. Every shared access is its own
 * step; each CAS is one atomic step. spin explores every interleaving.
 *
 * Checked: every item is consumed (taken, stolen or injected) exactly once
 * (asserted at each consumption and at the end), and the drained deque
 * ends empty (top == bottom).
 *
 * Indices. The C code's top and bottom are int64_t and never wrap. Here
 * they are kept as counters too, but every decision the algorithm makes
 * from them (empty, full, last item, which slot) uses only their 3-bit
 * views, with signed 3-bit differences, so with NITEMS >= 9 the indices
 * wrap around inside the model and slots are reused many times. Only the
 * CAS on top compares the whole counter, exactly as the C CAS compares all
 * 64 bits: a CAS on the 3-bit view alone would let a thief stalled for 8
 * claims succeed on a stale top (ABA), which 64-bit indices rule out.
 * 3-bit signed differences hold -4 .. 3, so CAP is 2 (the default) or, with
 * 3 items of slack, at most 3; and CAP must divide 8 for the slot of a view
 * to be the slot of the index: CAP = 2 here, CAP = 4 needs IBITS = 4
 * (run_spin.sh runs both).
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
#define NITEMS 9
#endif

#define IMASK ((1 << IBITS) - 1)
#define IHALF (1 << (IBITS - 1))
#define V(x) ((x) & IMASK)		/* the 3-bit view of an index */
#define DIST(a, b) (((V(a) - V(b) + IHALF) & IMASK) - IHALF) /* a - b */
#define SLOT(i) (V(i) % CAP)
#define HALF (CAP / 2)

short top;		/* thieves CAS it; the owner CASes it for the last item
			 * and in take_top */
short bottom;		/* written by the owner only */
byte buf[CAP];		/* item ids 1..NITEMS; written by the owner only */

byte got[NITEMS + 1];	/* times each item was consumed */
byte injected;		/* items spilled by take_top */
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
	b = bottom - 1;
	bottom = b;		/* then the seq_cst fence: a plain step here */
	t = top;
	if
	:: DIST(b, t) < 0 ->	/* empty: restore */
		bottom = b + 1;
		x = 0
	:: else ->
		x = buf[SLOT(b)];
		if
		:: DIST(b, t) == 0 ->	/* the last item: one CAS decides */
			atomic {
				if
				:: top == t -> top = t + 1
				:: else -> x = 0
				fi
			}
			bottom = b + 1
		:: else
		fi
	fi
}

/* weft__deque_take_top(HALF) into the injector; owner only, so bottom
 * stays put and one CAS claims the batch. */
inline take_top()
{
	do
	:: t = top;
	   n = DIST(bottom, t);
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
		:: top == t -> top = t + n; ok = true
		:: else -> ok = false
		fi
	   }
	   if
	   :: ok ->
		i = 0;
		do
		:: i < n -> consume(spill[i]); injected++; i++
		:: else -> break
		od;
		break
	   :: else		/* a thief took index t: read again */
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
		   :: DIST(b, t) >= CAP -> take_top()	/* full: spill */
		   :: else -> break
		   fi
		od;
		buf[SLOT(b)] = next;
		bottom = b + 1;	/* release */
		next++
	:: take(x);
	   if
	   :: x != 0 -> consume(x)
	   :: else
	   fi
	:: next > NITEMS -> break
	od;
	/* drain */
	do
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

	do
	:: t = top;
	   b = bottom;		/* after the seq_cst fence */
	   if
	   :: DIST(b, t) > 0 ->
		x = buf[SLOT(t)];
		atomic {
			if
			:: top == t -> top = t + 1; ok = true
			:: else -> ok = false	/* ABORT */
			fi
		}
		if
		:: ok -> consume(x)
		:: else
		fi
	   :: else		/* EMPTY */
	   fi
	:: owner_done -> break
	od;
	ended++
}

init
{
	byte i = 1;

	run owner();
	run thief();
	run thief();
	(ended == 3) -> skip;
	assert(top == bottom && DIST(bottom, top) == 0);
	do
	:: i <= NITEMS -> assert(got[i] == 1); i++
	:: else -> break
	od
}
