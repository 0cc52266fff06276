/* SPDX-License-Identifier: MIT */
/*
 * tests/model/task_state.pml - spin model of the wait protocol of
 * runtime/wait.c (RELIABILITY 3.3 "Task state machine", C10, E6): one
 * task's wait word (PREP / ARMED / CLAIMED, a cancellable bit, a reason
 * and a sequence number), the publisher that runs on the worker's
 * scheduler stack after the switch, and three wake sources racing to end
 * each wait: the primitive it waits on, its deadline timer, and
 * weft_cancel().
 *
 * The task runs EPISODES waits in a row, each with a nondeterministic mix:
 * cancellable or not (shielded), with a deadline timer or not, registered
 * on the primitive or not (a sleep). Each wait, as the C code does it:
 *  task:      weft__wait_prepare(): seq++, word = seq|cancellable|PREP,
 *             a relaxed store: it sits in the task's store buffer (x86
 *             TSO) until a flusher drains it at any moment, and at the
 *             latest at the task's next locked instruction (a lock, a
 *             CAS); meanwhile every other process reads the old word;
 *             weft__wait_park(): if cancellable and J_CANCEL is set, claim
 *             its own wait for CANCEL (a shortcut: this load may run
 *             before the PREP store is visible, the store-load reordering
 *             a seq_cst store used to forbid); load the word; unless CLAIMED,
 *             switch out (then the publisher runs), and wait to be run
 *             again; then disarm the timer (under the timer lock) and, if
 *             the reason is not SOURCE, unlink from the primitive (under
 *             its lock).
 *  publisher: weft__wait_publish(): register on the primitive (under its
 *             lock), arm the timer (under the timer lock: timer_seq =
 *             word), CAS PREP -> ARMED; if that CAS fails a source claimed
 *             the wait while it was PREP, and the publisher enqueues; if
 *             it succeeds and the wait is cancellable, load J_CANCEL and,
 *             if set, claim for CANCEL (enqueue if that wins from ARMED):
 *             the Dekker partner of the canceller's fetch_or and load.
 *  primitive: under its lock, take the registered waiter, write the
 *             payload, claim; on a lost claim take the payload back.
 *  timer:     fire_timers(): under the timer lock, pop the entry, claim
 *             with timer_seq, enqueue if it won from ARMED, timer_worker =
 *             NULL.
 *  cancel:    weft__task_cancel_internal(): set J_CANCEL (seq_cst), load
 *             the wait word, claim it if cancellable.
 * weft__wait_try_claim(): CAS from PREP or ARMED, for exactly the word's
 * sequence number and cancellable bit, to CLAIMED with a reason; a win
 * from ARMED makes the caller enqueue the task; a win from PREP leaves
 * that to the publisher.
 *
 * Checked (assertions):
 *  - exactly one enqueue per wait the task switched out for, none for a
 *    wait claimed before it switched, and only after the switch;
 *  - a claim only ever succeeds for the task's current wait (never by a
 *    stale sequence number), and a non-cancellable wait is never ended by
 *    cancel;
 *  - the task resumes with its own wait CLAIMED;
 *  - cancellation is level-triggered: a cancellable wait that began after
 *    J_CANCEL was set ends with reason CANCEL; and a cancellable wait on a
 *    primitive that never serves it (PRIM_STUCK, no deadline) still ends
 *    once weft_cancel() runs - else the task blocks forever, which the
 *    invalid-end-state check reports;
 *  - the payload is with the task exactly when the reason is SOURCE (no
 *    item lost or duplicated: given == SOURCE resumes);
 *  - when the wait is over, the timer entry is unlinked and the primitive
 *    holds no registration of it (nothing may touch the task's record or
 *    its stack frame later).
 * Plus spin's invalid-end-state check: nobody is left blocked.
 *
 * Limit: apart from the PREP store buffer, spin is sequentially
 * consistent; the C11 orderings (release on PREP -> ARMED, acquire in
 * claimers) are argued in wait.c, not checked here.
 */

#ifndef EPISODES
#define EPISODES 2
#endif
/* Known-wrong variants run_spin.sh checks are caught: 1 the primitive
 * also enqueues a wait it won while PREP; 2 no J_CANCEL check after the
 * publish CAS (the protocol as it was with a seq_cst PREP store, wrong
 * once that store is relaxed); 3 a claim that ignores the sequence
 * number. */
#ifndef MUTANT
#define MUTANT 0
#endif

#define IDLE 0
#define PREP 1
#define ARMED 2
#define CLAIMED 3

#define R_SOURCE 0
#define R_TIMER 1
#define R_CANCEL 2

/* the wait word, as one record; every change is one atomic step */
byte w_state;
byte w_seq;
bool w_canc;
byte w_reason;

byte cur_seq;			/* the task's wait_seq (ghost for checks) */

/* the task's store buffer: a PREP word not yet visible to others */
bool b_pending;
byte b_seq;
bool b_canc;
bool prim_stuck;		/* this wait's primitive never serves it */
bool jcancel;			/* J_CANCEL in join_word */
bool task_done;

/* per episode */
byte enq[EPISODES + 1];		/* enqueues */
bool switched[EPISODES + 1];	/* the task switched out for it */
bool payload[EPISODES + 1];	/* an item was written to its wait record */
byte given;			/* items the primitive handed over */
byte source_resumes;

/* the primitive: one waiter slot, under plock */
bool plock;
byte pw_seq;			/* registered waiter's word: 0 none */
bool pw_canc;

/* the deadline timer, under tlock */
bool tlock;
bool tm_linked;
byte tm_seq;
bool tm_canc;
bool timer_worker;		/* t->timer_worker != NULL */

/* The buffered PREP store becomes visible (TSO: stores drain in order,
 * and entirely before a locked instruction). */
inline drain()
{
	atomic {
		if
		:: b_pending ->
			w_seq = b_seq; w_canc = b_canc; w_state = PREP;
			b_pending = false
		:: else
		fi
	}
}

#define LOCK(l) atomic { !l -> l = true }
#define UNLOCK(l) l = false

/*
 * weft__wait_try_claim(t, (s, c), why) -> r: 0 lost, 1 won from PREP,
 * 2 won from ARMED. One atomic step (the CAS).
 */
inline try_claim(s, c, why, r)
{
	atomic {
		if
#if MUTANT == 3
		:: w_canc == c &&
#else
		:: w_seq == s && w_canc == c &&
#endif
		   (w_state == PREP || w_state == ARMED) ->
			assert(s == cur_seq);		/* never stale */
			assert(why != R_CANCEL || c);	/* shield holds */
			r = (w_state == ARMED -> 2 : 1);
			w_state = CLAIMED;
			w_reason = why
		:: else -> r = 0
		fi
	}
}

/* The task becomes runnable (weft__task_ready / ready_local). */
inline enqueue(s)
{
	d_step {
		assert(s >= 1 && s <= EPISODES);
		assert(switched[s]);		/* only after the switch */
		assert(enq[s] == 0);		/* exactly once */
		enq[s]++
	}
}

proctype task()
{
	byte ep = 1, r, reason;
	bool c, use_timer, use_prim, late;

	do
	:: ep <= EPISODES ->
		if :: c = true :: c = false fi;
		if :: use_timer = true :: use_timer = false fi;
		if :: use_prim = true :: use_prim = false fi;
		/* a wait nothing can end (uncancellable, no primitive, no
		 * deadline) hangs by design: not modelled */
		if :: !use_timer && !use_prim -> use_timer = true :: else fi;
		/* a cancellable wait may be on a primitive that never comes:
		 * only the cancellation can end it then */
		if
		:: c && use_prim && !use_timer ->
			if :: prim_stuck = true :: prim_stuck = false fi
		:: else -> prim_stuck = false
		fi;
		/* weft__wait_prepare(): into the store buffer */
		d_step {
			cur_seq = ep; b_seq = ep; b_canc = c; b_pending = true;
			late = jcancel	/* ghost: cancelled before this wait */
		}
		/* weft__wait_park(): the shortcut (the load may pass the
		 * buffered store) */
		if
		:: c && jcancel ->
			drain();	/* the claim is a locked CAS */
			try_claim(ep, c, R_CANCEL, r);
			assert(r != 2)
		:: else
		fi;
		if
		:: !b_pending && w_state == CLAIMED -> skip	/* no switch */
		:: else ->
			switched[ep] = true;
			/* ---- the publisher, on the scheduler stack ---- */
			if
			:: use_prim ->
				drain();
				LOCK(plock);
				pw_seq = ep; pw_canc = c;
				UNLOCK(plock)
			:: else
			fi;
			if
			:: use_timer ->
				drain();
				LOCK(tlock);
				tm_seq = ep; tm_canc = c; tm_linked = true;
				timer_worker = true;
				UNLOCK(tlock)
			:: else
			fi;
			drain();
			atomic {	/* CAS PREP -> ARMED, seq_cst */
				if
				:: w_state == PREP -> w_state = ARMED; r = 0
				:: else -> r = 1
				fi
			}
			if
			:: r == 1 -> enqueue(ep)	/* claimed while PREP */
#if MUTANT != 2
			:: r == 0 && c && jcancel ->	/* the Dekker check */
				try_claim(ep, c, R_CANCEL, r);
				if
				:: r == 2 -> enqueue(ep)
				:: else
				fi
#endif
			:: else
			fi;
			/* ---- switched out until run again ---- */
			enq[ep] > 0
		fi;
		/* resumed */
		d_step {
			assert(w_state == CLAIMED && w_seq == ep);
			reason = w_reason
		}
		if
		:: timer_worker ->	/* weft__timer_disarm() */
			LOCK(tlock);
			tm_linked = false;
			timer_worker = false;
			UNLOCK(tlock)
		:: else
		fi;
		if
		:: reason != R_SOURCE && use_prim ->	/* unlink itself */
			LOCK(plock);
			if :: pw_seq == ep -> pw_seq = 0 :: else fi;
			assert(!payload[ep]);		/* nothing kept from us */
			UNLOCK(plock)
		:: else
		fi;
		d_step {
			assert(reason != R_SOURCE || payload[ep]);
			assert(reason == R_SOURCE || !payload[ep]);
			/* level-triggered: a cancellable wait that began after
			 * weft_cancel() ends with CANCEL */
			assert(!(c && late) || reason == R_CANCEL);
			if :: reason == R_SOURCE -> source_resumes++ :: else fi;
			assert(!tm_linked);		/* timer gone */
			assert(pw_seq != ep);		/* not registered */
			assert(enq[ep] == (switched[ep] -> 1 : 0));
			reason = 0; r = 0; late = false;
			ep++
		}
	:: else -> break
	od;
	task_done = true
}

proctype primitive()
{
	byte s, r;
	bool c;

end_prim:
	do
	:: atomic { !plock && pw_seq != 0 && !prim_stuck -> plock = true };
	   if
	   :: pw_seq != 0 && !prim_stuck ->
		s = pw_seq; c = pw_canc; pw_seq = 0;	/* take the waiter */
		payload[s] = true;			/* write the item */
		try_claim(s, c, R_SOURCE, r);
		if
		:: r == 0 -> payload[s] = false		/* take it back */
		:: r == 2 -> given++; enqueue(s)
#if MUTANT == 1
		:: r == 1 -> given++; enqueue(s)
#else
		:: r == 1 -> given++			/* publisher enqueues */
#endif
		fi
	   :: else
	   fi;
	   UNLOCK(plock);
	   d_step { s = 0; r = 0; c = false }
	:: task_done -> break
	od
}

proctype timer()
{
	byte s, r;
	bool c;

end_timer:
	do
	:: atomic { !tlock && tm_linked -> tlock = true };
	   if
	   :: tm_linked ->	/* due: pop it */
		tm_linked = false;
		s = tm_seq; c = tm_canc;
		try_claim(s, c, R_TIMER, r);
		if
		:: r == 2 -> enqueue(s)
		:: else
		fi;
		timer_worker = false
	   :: else
	   fi;
	   UNLOCK(tlock);
	   d_step { s = 0; r = 0; c = false }
	:: task_done -> break
	od
}

/* Drains the task's store buffer at any moment. */
proctype flusher()
{
end_flush:
	do
	:: b_pending -> drain()
	:: task_done -> break
	od
}

proctype canceller()
{
	byte s, st, r;
	bool c;

	jcancel = true;			/* fetch_or J_CANCEL, seq_cst */
	d_step { s = w_seq; c = w_canc; st = w_state }	/* load wait_word */
	if
	:: c && st != IDLE ->
		try_claim(s, c, R_CANCEL, r);
		if
		:: r == 2 -> enqueue(s)
		:: else
		fi
	:: else
	fi
}

init
{
	atomic {
		run task();
		run primitive();
		run timer();
		run canceller();
		run flusher()
	}
	_nr_pr == 1;	/* everybody else has finished */
	assert(given == source_resumes)
}
