/* SPDX-License-Identifier: MIT */

/* runtime/sched.c undoes notify's searcher role under idle_lock (the fix);
 * -DOLD_NOTIFY_DEC models the old code, which the checks must catch. */
#ifndef OLD_NOTIFY_DEC
#define FIX_NOTIFY_DEC
#endif

/*
 * tests/model/park.pml - spin model of how idle workers park and are woken:
 * runtime/sched.c (weft__notify, weft__wake_worker, idle_enter/leave) and
 * runtime/worker.c (worker loop, search, spin_for_work, stop_searching,
 * park, work_visible). RELIABILITY 3.3 item "Park/unpark", case C5.
 *
 * What is modelled, step by step as the C code does it:
 *  - NW workers (2). Each loops: next_task() (own pinned inbox, own deque,
 *    the injection queue, then search(): become a searcher if fewer than
 *    half search, steal half of another deque, take from the injection
 *    queue); on finding work as a searcher, stop_searching() (the last
 *    searcher notifies again); else spin_for_work() (becomes a searcher
 *    under the same limit, polls any number of times: the 50 us bound is
 *    time, which spin does not have) and then park().
 *  - park(): drop the searcher count; idle_enter (under idle_lock:
 *    idle_stack push, idle = 1, park_word = ASLEEP, nidle++); the seq_cst
 *    fence; work_visible() (injection queue, own inbox, every deque);
 *    futex wait while park_word == ASLEEP; idle_leave (under idle_lock:
 *    if still idle remove itself, else it was woken and is a searcher iff
 *    park_word == SEARCHING).
 *  - weft__notify(): the fence; return if nsearching != 0 or nidle == 0
 *    (two separate loads); CAS nsearching 0 -> 1; under idle_lock pop the
 *    last idle worker, set its park_word = SEARCHING; after the unlock,
 *    futex-wake it, or, when no worker was idle, nsearching-- (this
 *    decrement is outside the lock in the C code, and is its own step
 *    here; see FIX_NOTIFY_DEC).
 *  - weft__wake_worker() for a pinned task: inbox push, then under
 *    idle_lock: if the worker is idle, remove it, park_word = WOKEN, wake.
 *  - Producers: NSUB foreign submitters (weft_submit: inject push, then
 *    weft__notify), one of which may first send a pinned task to worker
 *    1's inbox (weft__wake_worker); and tasks that, when run by a worker,
 *    spawn one child into that worker's deque and notify (weft_spawn:
 *    weft__ready_local -> deque push -> weft__notify), NSPAWN in all.
 *
 * Simplifications, each argued:
 *  - Queues are counters. Which item a worker gets does not matter to
 *    waking; the deque's own correctness is tests/model/deque.pml. A steal
 *    moves half of the victim's items (rounded up) in one step, as
 *    weft__deque_steal_half() claims them with one CAS.
 *  - A section under idle_lock is one atomic step. Outside the lock only
 *    single loads of nidle (notify's fast path) and of park_word (the
 *    futex loop) touch that state, and a single load sees the state before
 *    or after a section either way. Everything after an unlock (the futex
 *    wake, notify's decrement) stays a separate step.
 *  - The futex: FUTEX_WAIT(park_word, ASLEEP) sleeps unless the word
 *    changed, and every waker stores the word before FUTEX_WAKE, so the
 *    wait is the blocking guard (park_word != ASLEEP). No timeout: timers
 *    are not modelled (a parked worker with a timer wakes by itself, which
 *    can only help).
 *  - spin is sequentially consistent: this checks the protocol, not the
 *    C11 orderings (the seq_cst fences in notify() and park() exist to
 *    give the C code exactly this Dekker behaviour).
 *  - The LIFO slot is not modelled: filling it never notifies, by design
 *    (sched.c), and its owner is running.
 *
 * Checked:
 *  - safety (run_spin.sh park): when no process can move any more (spin's
 *    timeout), no work is queued: an end state with queued work and every
 *    worker asleep is a lost wakeup, reported by the assertion in
 *    monitor(). Plus the counter invariants asserted along the way.
 *  - liveness (run_spin.sh park, second run, -DLIVENESS, pan -a -f): every
 *    item is eventually run (ltl done), under weak fairness.
 *
 * Knobs: NSUB (foreign submitters, default 1), NSUBMIT (items each),
 * NSPAWN (children spawned by running tasks), PINNED (1: submitter 0
 * first sends one pinned task to worker 1), FIX_NOTIFY_DEC (move notify's
 * decrement under idle_lock, as Go's startm() does), MUTANT=1 (park()
 * without its re-check: run_spin.sh checks that the model catches it).
 *
 * FOUND (NSUB=2, run_spin.sh park_two_submitters): a lost wake-up. Two
 * foreign threads submit; worker W registers idle and then sees submitter
 * A's task in its re-check; A, meanwhile past its fast-path check, takes
 * the searcher role (nsearching 0 -> 1) but finds nidle == 0 under the
 * lock (W just left) and unlocks. Before A's decrement, W runs the task,
 * finds nothing, parks (re-check empty), and submitter B pushes and sees
 * nsearching == 1: it wakes nobody. A decrements. B's task stays queued
 * with every worker asleep. With FIX_NOTIFY_DEC (the decrement inside the
 * idle_lock section) the search is complete and clean: a worker that
 * registers idle after A's lock section does so after the decrement.
 */

#define NW 2

#ifndef NSUB
#define NSUB 1
#endif
#ifndef NSUBMIT
#define NSUBMIT 2
#endif
#ifndef NSPAWN
#define NSPAWN 1
#endif
#ifndef PINNED
#define PINNED 1
#endif

#ifndef MUTANT
#define MUTANT 0
#endif

#define TOTAL (NSUB * NSUBMIT + NSPAWN + PINNED)

#define ASLEEP 0
#define WOKEN 1
#define SEARCHING 2

byte inject_len;		/* global injection queue */
byte dq[NW];			/* each worker's deque */
byte inbox[NW];			/* pinned tasks sent to a worker */

byte nsearching;
byte nidle;
byte idle_stack[NW];		/* under idle_lock */
bool idle[NW];			/* under idle_lock */
byte park_word[NW];		/* futex word */

byte spawn_left = NSPAWN;	/* children still to be spawned */
byte done;			/* items run */
byte producers_left = NSUB;

/* ------------------------------------------------------------ helpers */

/* idle_remove_locked(w): part of a locked section. */
#define IDLE_REMOVE(w)                                          \
	j = 0;                                                  \
	do                                                      \
	:: j < nidle && idle_stack[j] != w -> j++               \
	:: else -> break                                        \
	od;                                                     \
	assert(j < nidle);                                      \
	idle_stack[j] = idle_stack[nidle - 1];                  \
	idle[w] = false;                                        \
	nidle--

/* weft__notify(). Locals: v, j, n. */
inline notify()
{
	/* atomic_thread_fence(seq_cst): a no-op under SC */
	v = 255;
	if
	:: nsearching != 0 -> skip		/* someone searches */
	:: else ->
		if
		:: nidle == 0 -> skip		/* nobody to wake */
		:: else ->
			if
			:: atomic { nsearching == 0 -> nsearching = 1 };
			   atomic {	/* under idle_lock */
				n = nidle;
				if
				:: n > 0 ->
					v = idle_stack[n - 1];
					IDLE_REMOVE(v);
					park_word[v] = SEARCHING
				:: else ->
					v = 254
#ifdef FIX_NOTIFY_DEC
					; assert(nsearching > 0); nsearching--
#endif
				fi
			   };
			   /* after pthread_mutex_unlock(&rt->idle_lock) */
			   if
			   :: v == 254 ->
#ifndef FIX_NOTIFY_DEC
				d_step { assert(nsearching > 0); nsearching-- }
#else
				skip
#endif
			   :: else -> skip	/* futex_wake(): see the guard */
			   fi
			:: atomic { nsearching != 0 -> skip }	/* CAS failed */
			fi
		fi
	fi;
	d_step { v = 0; n = 0; j = 0 }
}

/* weft__wake_worker(w) for a pinned inbox. Locals: j. */
inline wake_worker(w)
{
	atomic {
		if
		:: idle[w] ->
			IDLE_REMOVE(w);
			park_word[w] = WOKEN
		:: else
		fi
	}
	j = 0
}

/* ------------------------------------------------------------ worker */

/* Run one item on worker me: it may spawn one child into our deque. */
inline run_task()
{
	d_step { assert(done < TOTAL); done++ }
	/* The first NSPAWN tasks run each spawn one child (which task that
	 * is, and on which worker, the interleaving decides). */
	if
	:: d_step { spawn_left > 0 -> spawn_left-- };
		dq[me]++;	/* weft__ready_local(w, t, false): push ... */
		notify()	/* ... then weft__notify() */
	:: d_step { spawn_left == 0 -> skip }
	fi
}

/* stop_searching(): the last searcher to find work notifies. */
inline stop_searching()
{
	searching = false;
	d_step { assert(nsearching > 0); old = nsearching; nsearching-- };
	if
	:: old == 1 -> notify()
	:: else
	fi;
	old = 0
}

/*
 * inject_take(): len = inject_len (relaxed); want = len / NW + 1; pop up
 * to want under inject_lock: run the first, push the rest to our deque
 * (without notifying, as the C code does). got = 1 if an item was taken.
 */
inline inject_take()
{
	n = inject_len;
	if
	:: n > 0 ->
		atomic {
			n = n / NW + 1;
			if
			:: n > inject_len -> n = inject_len
			:: else
			fi;
			if
			:: n > 0 -> inject_len = inject_len - n;
				    dq[me] = dq[me] + n - 1; got = true
			:: else
			fi
		}
	:: else
	fi;
	n = 0
}

/* steal_work(): each other worker's deque (half of it), then inject. */
inline steal_work()
{
	/* NW == 2: the one other worker */
	atomic {
		if
		:: dq[1 - me] > 0 ->
			n = (dq[1 - me] + 1) / 2;
			dq[1 - me] = dq[1 - me] - n;
			dq[me] = dq[me] + n - 1;
			got = true
		:: else
		fi;
		n = 0
	}
	if
	:: !got -> inject_take()
	:: else
	fi
}

/* search(): become a searcher if fewer than half search, then steal. */
inline search()
{
	if
	:: !searching ->
		n = nsearching;
		if
		:: 2 * n < NW -> nsearching++; searching = true
		:: else
		fi
	:: else
	fi;
	if
	:: searching -> steal_work()
	:: else
	fi;
	n = 0
}

/* next_task(): got = true when an item was taken. */
inline next_task()
{
	got = false;
	/* pinned: pin_pop() */
	if
	:: inbox[me] > 0 -> atomic { inbox[me] > 0 -> inbox[me]--; got = true }
	:: else
	fi;
	if
	:: !got ->	/* own deque: weft__deque_take() */
		atomic { if :: dq[me] > 0 -> dq[me]--; got = true :: else fi }
	:: else
	fi;
	if
	:: !got -> inject_take()
	:: else
	fi;
	if
	:: !got -> search()
	:: else
	fi
}

/* work_visible() after the fence in park(). */
#define WORK_VISIBLE (inject_len > 0 || inbox[me] > 0 || dq[0] > 0 || dq[1] > 0)

proctype worker(byte me)
{
	bool searching, got, may_spin;
	byte n, v, j, old;

	do
	:: next_task();
	   if
	   :: !got ->
		/* spin_for_work(): a searcher, under the same limit */
		may_spin = true;
		if
		:: !searching ->
			n = nsearching;
			if
			:: 2 * n < NW -> nsearching++; searching = true
			:: else -> may_spin = false
			fi
		:: else
		fi;
		do
		:: may_spin && (inject_len > 0 || inbox[me] > 0 ||
				dq[1 - me] > 0) ->
			/* work_hint(), then the full pick */
			next_task();
			if :: got -> break :: else fi
		:: true -> break	/* the 50 us ran out */
		od;
		n = 0
	   :: else
	   fi;
	   if
	   :: got ->
		if :: searching -> stop_searching() :: else fi;
		run_task()
	   :: else ->
		/* park() */
		if
		:: searching ->
			searching = false;
			d_step { assert(nsearching > 0); nsearching-- }
		:: else
		fi;
		atomic {	/* weft__idle_enter() */
			idle_stack[nidle] = me;
			idle[me] = true;
			park_word[me] = ASLEEP;
			nidle++
		}
		/* seq_cst fence; then work_visible() */
		if
#if MUTANT == 1
		:: false -> skip	/* mutant: no re-check after idle_enter */
#else
		:: WORK_VISIBLE -> skip
#endif
		:: else ->
end_park:		(park_word[me] != ASLEEP)	/* futex wait */
		fi;
		atomic {	/* weft__idle_leave() */
			if
			:: idle[me] ->
				IDLE_REMOVE(me)
			:: else ->
				searching = (park_word[me] == SEARCHING)
			fi
		}
	   fi;
	   d_step { got = false; may_spin = false; n = 0; v = 0; j = 0 }
	od
}

proctype submitter(byte id)
{
	byte i, v, j, n;

#if PINNED
	if
	:: id == 0 ->
		inbox[1]++;	/* inbox_push(), seq_cst */
		wake_worker(1)
	:: else
	fi;
#endif
	i = 0;
	do
	:: i < NSUBMIT ->
		inject_len++;	/* weft__inject_push(), under inject_lock */
		notify();
		i++
	:: else -> break
	od;
	producers_left--
}

/* Runs only when nothing else can: then nothing may be left queued. */
proctype monitor()
{
	timeout ->
	assert(producers_left == 0);
	assert(inject_len == 0 && dq[0] == 0 && dq[1] == 0 &&
	       inbox[0] == 0 && inbox[1] == 0);
	assert(done == TOTAL)
}

init
{
	byte i;

	atomic {
		i = 0;
		do
		:: i < NW -> park_word[i] = WOKEN; i++
		:: else -> break
		od;
		run worker(0);
		run worker(1);
		i = 0;
		do
		:: i < NSUB -> run submitter(i); i++
		:: else -> break
		od;
#ifndef LIVENESS
		run monitor()
#endif
	}
}

#ifdef LIVENESS
ltl all_run { <> (done == TOTAL) }
#endif
