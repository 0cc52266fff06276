/* SPDX-License-Identifier: MIT */
/*
 * runtime/observe.c - weft_stats_get, weft_dump_tasks, the blocking-task
 * watchdog, SIGQUIT dumps, and the shutdown drain's stuck-offload report.
 *
 * Stats: every counter is written by one worker only (struct
 * weft__stats_ctr, on the worker's own cache line: no shared line on the
 * hot path) or, for off-worker spawns, by atomic RMWs on the runtime's
 * foreign counters; weft_stats_get() sums them. spawned/completed come from
 * weft__stat_live() (task.c), whose read order keeps live_tasks from
 * undercounting.
 *
 * Dumps walk the task registry under its lock (task.c): records are never
 * freed while the runtime lives, so every read is of valid memory; fields
 * are read with relaxed atomics and may belong to a state that has just
 * changed (tolerated: each line is one task's snapshot). A name is copied
 * bounded and printed with "%s". What a task waits on (wait_kind) is set by
 * each primitive before it parks; when it began waiting (state_since_ns,
 * coarse clock) and on which worker are stored by run_task() as it
 * switches out (sched.h weft__note_switch()); every other transition
 * (runnable, running) stores its time too (weft__task_set_state()), so a
 * dump gives each state's age. The running age used to come from the
 * watchdog's samples and was missing without slow_task_ns.
 *
 * Watchdog (slow_task_ns, or env WEFT_DEBUG=1: 100 ms). The hot path only
 * publishes (task, slice counter) per worker in run_task() (sched.h
 * weft__wd_slice_begin/end: no clock read). A monitor thread samples every
 * worker each period (slow_task_ns / 4, within [1 ms, 250 ms]):
 *  1. read wd_task (acquire), wd_slice (acquire), wd_task again; a sample
 *     counts only if both task reads agree and are not NULL;
 *  2. a sample equal to the previous one of that worker is the same run
 *     slice (slice numbers never repeat): its age is now - first_seen;
 *     otherwise remember it with first_seen = now;
 *  3. once the age reaches slow_task_ns, report it once (per slice);
 *  4. a task that, within the same slice, failed IGNORED_MIN suspension
 *     points at once because it is cancelled (its cancel_fails count,
 *     wait.c) ignores its cancellation (RELIABILITY F2): "task X ignored N
 *     cancellations", again whenever N has doubled (check_ignored()).
 * The age is underestimated by at most one period, so a report is never
 * early. A task that suspends starts a new slice, so one that yields often
 * is never reported. The monitor sleeps on a futex between samples, so
 * weft__observe_stop() wakes it at once. Without the watchdog, such a task
 * is still named by the shutdown drain, which waits for it (once per grace
 * period, report_ignored()).
 *
 * SIGQUIT (WEFT_DUMP_ON_SIGQUIT): a process-wide handler, installed while
 * at least one runtime with the flag exists, writes one byte to a
 * non-blocking pipe (async-signal-safe, errno preserved); a dumper thread
 * reads it and dumps every registered runtime on stderr, under the
 * registration lock. The last runtime to go restores the old disposition,
 * then stops the thread. Without the flag SIGQUIT is never touched.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime/sched.h"
#include "runtime/test_hooks.h"

void weft__registry_walk(struct weft__runtime *rt,
			 void (*fn)(struct weft__task *t, void *arg),
			 void *arg);

#define DEBUG_SLOW_NS ((uint64_t)100 * 1000 * 1000)
#define DRAIN_GRACE_NS ((uint64_t)5 * 1000 * 1000 * 1000)

struct wd_sample {
	struct weft__task *task;
	uint64_t slice;
	uint64_t first_ns;	/* when this slice was first seen */
	bool reported;
	uint32_t fails_first;	/* task's cancel_fails then */
	uint32_t fails_reported; /* cancel_fails last reported (0: none) */
};

/* Cancelled suspension points a task may fail within one run slice
 * before it is reported as ignoring its cancellation: a task cleaning up
 * after -ECANCELED may call a few (each fails at once); one that loops on
 * them calls thousands per millisecond. */
#define IGNORED_MIN 100u

struct weft__observer {
	/* watchdog */
	uint64_t slow_ns;	/* 0: no monitor */
	pthread_t monitor;
	bool monitor_started;
	_Atomic uint32_t stop_word;	/* futex: 1 = stop */
	struct wd_sample *samples;	/* per worker; monitor only */
	/* SIGQUIT registration: under sq_lock */
	bool sigquit;
	struct weft__observer *sq_next;
	struct weft__runtime *rt;
};

/* ------------------------------------------------------------ stats */

WEFT_API void weft_stats_get(const weft_runtime *h, weft_stats *out)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;
	uint64_t s, c;

	if (!out) {
		if (weft__debug_enabled())
			weft__report("weft_stats_get: NULL out");
		return;
	}
	memset(out, 0, sizeof(*out));
	if (!rt)
		rt = (struct weft__runtime *)weft_runtime_current();
	if (!rt)
		return;
	weft__stat_live(rt, &s, &c);
	out->spawned = s;
	out->completed = c;
	out->live_tasks = s - c;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__stats_ctr *k = &rt->workers[i]->stats;
		out->steals += atomic_load_explicit(&k->steals,
						    memory_order_relaxed);
		out->parks += atomic_load_explicit(&k->parks,
						   memory_order_relaxed);
		out->handoffs += atomic_load_explicit(&k->handoffs,
						      memory_order_relaxed);
		out->offload_calls += atomic_load_explicit(
			&k->offload_calls, memory_order_relaxed);
		out->io_submitted += atomic_load_explicit(
			&k->io_submitted, memory_order_relaxed);
		out->io_completed += atomic_load_explicit(
			&k->io_completed, memory_order_relaxed);
	}
	out->offload_threads = weft__offload_nthreads(rt);
}

/* ------------------------------------------------------------ dump */

static const char *const kind_names[WEFT__WK_COUNT] = {
	[WEFT__WK_NONE] = "something",	[WEFT__WK_SLEEP] = "sleep",
	[WEFT__WK_MUTEX] = "mutex",	[WEFT__WK_SEM] = "sem",
	[WEFT__WK_EVENT] = "event",	[WEFT__WK_COND] = "cond",
	[WEFT__WK_QUEUE] = "queue",	[WEFT__WK_JOIN] = "join",
	[WEFT__WK_IO] = "I/O",		[WEFT__WK_OFFLOAD] = "offload",
	[WEFT__WK_LIMITER] = "limiter",
};

/*
 * A task's name and id, for a report. Dumps and the watchdog read records
 * whose owner may be re-initialising them at that moment (a finished
 * task's record recycled for a new spawn: task_init() writes the name with
 * no ordering a reader could pair with). The copy is bounded, always
 * NUL-terminated and may be torn, which a dump line tolerates (API.md: a
 * snapshot); records are never freed while the runtime lives, so the loads
 * are of valid memory. This one intended race is kept out of TSan's view
 * (plain volatile loads, no intercepted strnlen/memcpy, the function not
 * instrumented); every other shared field here is read atomically. TSan
 * reported it in observe_test (Dump.HostileNamesAndRunningDuration: the
 * dump thread against weft_spawn_named()).
 */
__attribute__((noinline, no_sanitize("thread"))) static void
snapshot_ident(const struct weft__task *t, char *name, unsigned long long *id)
{
	const volatile char *src = t->name;
	size_t i;

	for (i = 0; i < WEFT_TASK_NAME_MAX && src[i]; i++)
		name[i] = src[i];
	name[i] = 0;
	*id = *(const volatile uint64_t *)&t->id;
}

struct dump_ctx {
	struct weft__runtime *rt;
	FILE *out;
	uint64_t now;	/* coarse */
	unsigned n;
};

static void count_live(struct weft__task *t, void *arg)
{
	unsigned *n = arg;

	if (atomic_load_explicit(&t->state, memory_order_relaxed) !=
	    WEFT__TASK_DONE)
		++*n;
}

static void dump_one(struct weft__task *t, void *arg)
{
	struct dump_ctx *d = arg;
	struct weft__runtime *rt = d->rt;
	char name[WEFT_TASK_NAME_MAX + 1];
	int st = atomic_load_explicit(&t->state, memory_order_relaxed);
	unsigned lw = atomic_load_explicit(&t->last_worker,
					   memory_order_relaxed);
	uint64_t since = atomic_load_explicit(&t->state_since_ns,
					      memory_order_relaxed);
	unsigned kind = atomic_load_explicit(&t->wait_kind,
					     memory_order_relaxed);
	uint64_t age = d->now > since ? d->now - since : 0;
	unsigned long long id;

	if (st == WEFT__TASK_DONE || st == WEFT__TASK_FREE)
		return;
	snapshot_ident(t, name, &id);
	fprintf(d->out, "  task %llu '%s': ", id,
		name[0] ? name : "<unnamed>");
	/* Every state shows its age: state_since_ns is stored with each
	 * transition (weft__task_set_state(), weft__note_switch()). */
	switch (st) {
	case WEFT__TASK_RUNNING:
		for (unsigned i = 0; i < rt->nworkers; i++) {
			struct weft__worker *w = rt->workers[i];
			if (atomic_load_explicit(&w->wd_task,
						 memory_order_acquire) != t)
				continue;
			fprintf(d->out, "running on worker %u for ~%llu ms\n",
				i, (unsigned long long)age / 1000000u);
			d->n++;
			return;
		}
		fprintf(d->out, "running for ~%llu ms\n",
			(unsigned long long)age / 1000000u);
		break;
	case WEFT__TASK_RUNNABLE:
		fprintf(d->out, "runnable for ~%llu ms\n",
			(unsigned long long)age / 1000000u);
		break;
	case WEFT__TASK_WAITING:
		fprintf(d->out, "waiting on %s for ~%llu ms (worker %u)\n",
			kind < WEFT__WK_COUNT ? kind_names[kind] : "?",
			(unsigned long long)age / 1000000u, lw);
		break;
	default:
		fprintf(d->out, "state %d\n", st);
		break;
	}
	d->n++;
}

WEFT_API void weft_dump_tasks(const weft_runtime *h, FILE *out)
{
	struct weft__runtime *rt = (struct weft__runtime *)h;
	struct dump_ctx d = { 0 };
	unsigned live = 0;

	if (!rt)
		rt = (struct weft__runtime *)weft_runtime_current();
	if (!rt || !out) {
		if (weft__debug_enabled())
			weft__report("weft_dump_tasks: no runtime or NULL out");
		return;
	}
	d.rt = rt;
	d.out = out;
	d.now = weft__clock_coarse();
	weft__registry_walk(rt, count_live, &live);
	fprintf(out, "weft: runtime %p, %u workers, %u live tasks\n",
		(void *)rt, rt->nworkers, live);
	weft__registry_walk(rt, dump_one, &d);
	fflush(out);
}

/* ------------------------------------------------------------ drain report */

static _Atomic uint64_t grace_override;

#ifdef WEFT_TEST_HOOKS
WEFT_API void weft_test_drain_grace_ns(uint64_t ns)
{
	atomic_store(&grace_override, ns);
}
#endif

static void report_offload(struct weft__task *t, void *arg)
{
	uint64_t *older = arg;
	char name[WEFT_TASK_NAME_MAX + 1];
	uint64_t since, now = weft__clock_coarse();
	unsigned long long id;

	if (atomic_load_explicit(&t->state, memory_order_relaxed) !=
		    WEFT__TASK_WAITING ||
	    atomic_load_explicit(&t->wait_kind, memory_order_relaxed) !=
		    WEFT__WK_OFFLOAD)
		return;
	since = atomic_load_explicit(&t->state_since_ns, memory_order_relaxed);
	if (now < since || now - since < *older)
		return;
	snapshot_ident(t, name, &id);
	weft__report("shutdown is waiting for task '%s' (id %llu): its "
		     "weft_offload() call has been running for %llu ms",
		     name[0] ? name : "<unnamed>", id,
		     (unsigned long long)(now - since) / 1000000u);
}

/* RELIABILITY F2 at shutdown: a task that ignores its cancellation keeps
 * the drain waiting; name it (once per grace period, with its count). */
static void report_ignored(struct weft__task *t, void *arg)
{
	char name[WEFT_TASK_NAME_MAX + 1];
	unsigned long long id;
	uint32_t n;
	int st = atomic_load_explicit(&t->state, memory_order_relaxed);

	(void)arg;
	if (st == WEFT__TASK_DONE || st == WEFT__TASK_FREE)
		return;
	n = atomic_load_explicit(&t->cancel_fails, memory_order_relaxed);
	if (n < IGNORED_MIN)
		return;
	snapshot_ident(t, name, &id);
	weft__report("shutdown is waiting for task '%s' (id %llu): it "
		     "ignored %u cancellations",
		     name[0] ? name : "<unnamed>", id, n);
}

void weft__drain_report(struct weft__runtime *rt, uint64_t *next_ns)
{
	uint64_t grace = atomic_load_explicit(&grace_override,
					      memory_order_relaxed);
	uint64_t now = weft__clock_real();

	if (!grace)
		grace = DRAIN_GRACE_NS;
	if (!*next_ns) {
		*next_ns = now + grace;
		return;
	}
	if (now < *next_ns)
		return;
	*next_ns = now + grace;
	weft__registry_walk(rt, report_offload, &grace);
	weft__registry_walk(rt, report_ignored, NULL);
}

/* ------------------------------------------------------------ watchdog */

/*
 * RELIABILITY F2: the task of sample @p (still in the same run slice on
 * worker @i) keeps calling suspension points that fail at once because it
 * is cancelled. Reported once it failed IGNORED_MIN of them within the
 * slice, then again each time its total has doubled: a task that never
 * stops gets a few dozen lines in its lifetime, not one per sample, and
 * each shows the count growing. A task that suspends starts a new slice
 * and is judged afresh.
 */
static void check_ignored(struct weft__worker *w, struct wd_sample *p,
			  unsigned i)
{
	struct weft__task *t = p->task;
	uint32_t n = atomic_load_explicit(&t->cancel_fails,
					  memory_order_relaxed);
	char name[WEFT_TASK_NAME_MAX + 1];
	unsigned long long id;

	if (n - p->fails_first < IGNORED_MIN ||
	    (uint64_t)n < 2 * (uint64_t)p->fails_reported)
		return;
	snapshot_ident(t, name, &id);
	/* Still the same slice? Else the count may be a recycled record's. */
	if (atomic_load_explicit(&w->wd_slice, memory_order_acquire) !=
		    p->slice ||
	    atomic_load_explicit(&w->wd_task, memory_order_acquire) != t)
		return;
	p->fails_reported = n;
	weft__report("task '%s' (id %llu) ignored %u cancellations: its "
		     "suspension points fail at once with -ECANCELED and it "
		     "keeps calling them (worker %u); runtime shutdown waits "
		     "for it",
		     name[0] ? name : "<unnamed>", id, n, i);
}

static void monitor_check(struct weft__runtime *rt, struct weft__observer *o,
			  unsigned i, uint64_t now)
{
	struct weft__worker *w = rt->workers[i];
	struct wd_sample *p = &o->samples[i];
	struct weft__task *t1, *t2;
	uint64_t slice;

	/* acquire: pairs with the release store of wd_task; the slice read
	 * comes after the first task read, the second after the slice. */
	t1 = atomic_load_explicit(&w->wd_task, memory_order_acquire);
	slice = atomic_load_explicit(&w->wd_slice, memory_order_acquire);
	t2 = atomic_load_explicit(&w->wd_task, memory_order_acquire);
	if (!t1 || t1 != t2) {
		p->task = NULL;
		return;
	}
	if (p->task != t1 || p->slice != slice) {
		*p = (struct wd_sample){ t1, slice, now, false,
					 atomic_load_explicit(
						 &t1->cancel_fails,
						 memory_order_relaxed),
					 0 };
		return;
	}
	check_ignored(w, p, i);
	if (p->reported || now - p->first_ns < o->slow_ns)
		return;
	char name[WEFT_TASK_NAME_MAX + 1];
	unsigned long long id;
	snapshot_ident(t1, name, &id);
	/* Still the same slice? Else it ended while we looked. */
	if (atomic_load_explicit(&w->wd_slice, memory_order_acquire) != slice ||
	    atomic_load_explicit(&w->wd_task, memory_order_acquire) != t1)
		return;
	p->reported = true;
	weft__report("task '%s' (id %llu) has been running for %llu ms on "
		     "worker %u without suspending",
		     name[0] ? name : "<unnamed>", id,
		     (unsigned long long)(now - p->first_ns) / 1000000u, i);
}

static void *monitor_main(void *arg)
{
	struct weft__runtime *rt = arg;
	struct weft__observer *o = rt->observer;
	uint64_t period = o->slow_ns / 4;
	struct timespec ts;

	pthread_setname_np(pthread_self(), "weft-watchdog");
	if (period < 1000000u)
		period = 1000000u;
	if (period > 250000000u)
		period = 250000000u;
	weft__ns_to_timespec(period, &ts);
	while (!atomic_load_explicit(&o->stop_word, memory_order_acquire)) {
		uint64_t now = weft__clock_real();
		for (unsigned i = 0; i < rt->nworkers; i++)
			monitor_check(rt, o, i, now);
		syscall(SYS_futex, (uint32_t *)&o->stop_word,
			FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
	}
	return NULL;
}

/* ------------------------------------------------------------ SIGQUIT */

static pthread_mutex_t sq_lock = PTHREAD_MUTEX_INITIALIZER;
static struct weft__observer *sq_list;	/* under sq_lock */
static unsigned sq_users;		/* under sq_lock */
static pthread_t sq_thread;		/* under sq_lock */
static struct sigaction sq_old;		/* under sq_lock */
static _Atomic int sq_wfd = -1;		/* the handler's pipe end */
static int sq_rfd = -1;			/* under sq_lock */

static void sq_handler(int sig)
{
	int saved = errno;
	char c = 'q';
	int fd = atomic_load_explicit(&sq_wfd, memory_order_relaxed);

	(void)sig;
	if (fd >= 0) {
		ssize_t r = write(fd, &c, 1); /* non-blocking: never waits */
		(void)r;
	}
	errno = saved;
}

static void *sq_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char c;

	pthread_setname_np(pthread_self(), "weft-sigquit");
	for (;;) {
		ssize_t r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || c == 'x')
			break;
		pthread_mutex_lock(&sq_lock);
		for (struct weft__observer *o = sq_list; o; o = o->sq_next)
			weft_dump_tasks((weft_runtime *)o->rt, stderr);
		pthread_mutex_unlock(&sq_lock);
	}
	return NULL;
}

static int sq_register(struct weft__observer *o)
{
	int fds[2], err = 0;
	sigset_t all, old;

	pthread_mutex_lock(&sq_lock);
	if (sq_users == 0) {
		if (pipe2(fds, O_CLOEXEC) != 0) {
			err = -errno;
			goto out;
		}
		fcntl(fds[1], F_SETFL, O_NONBLOCK);
		/* The dumper never takes signals: block them around create. */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		err = -pthread_create(&sq_thread, NULL, sq_main,
				      (void *)(intptr_t)fds[0]);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (err) {
			close(fds[0]);
			close(fds[1]);
			goto out;
		}
		sq_rfd = fds[0];
		atomic_store(&sq_wfd, fds[1]);
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = sq_handler;
		sa.sa_flags = SA_RESTART;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGQUIT, &sa, &sq_old);
	}
	sq_users++;
	o->sq_next = sq_list;
	sq_list = o;
	o->sigquit = true;
out:
	pthread_mutex_unlock(&sq_lock);
	return err;
}

static void sq_unregister(struct weft__observer *o)
{
	pthread_t th;
	int rfd, wfd;
	char x = 'x';

	pthread_mutex_lock(&sq_lock);
	for (struct weft__observer **pp = &sq_list; *pp; pp = &(*pp)->sq_next)
		if (*pp == o) {
			*pp = o->sq_next;
			break;
		}
	o->sigquit = false;
	if (--sq_users) {
		pthread_mutex_unlock(&sq_lock);
		return;
	}
	sigaction(SIGQUIT, &sq_old, NULL);
	th = sq_thread;
	rfd = sq_rfd;
	wfd = atomic_exchange(&sq_wfd, -1);
	sq_rfd = -1;
	/* The 'x' goes after any pending 'q': those dump nothing more (the
	 * list is empty) and the thread exits. Joined under sq_lock? No: a
	 * pending dump takes it. */
	ssize_t r = write(wfd, &x, 1);
	(void)r;
	pthread_mutex_unlock(&sq_lock);
	pthread_join(th, NULL);
	/* A handler that read wfd before the exchange may still write to
	 * it: the ends are closed only after the thread is gone, which
	 * narrows but cannot close that window (documented). */
	close(rfd);
	close(wfd);
}

/* ------------------------------------------------------------ lifetime */

int weft__observe_start(struct weft__runtime *rt)
{
	struct weft__observer *o;
	uint64_t slow = rt->cfg.slow_task_ns;
	const char *e = getenv("WEFT_DEBUG");
	int err;

	if (!slow && e && e[0] && strcmp(e, "0") != 0)
		slow = DEBUG_SLOW_NS;
	if (!slow && !(rt->cfg.flags & WEFT_DUMP_ON_SIGQUIT))
		return 0;
	o = weft__calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->rt = rt;
	o->slow_ns = slow;
	o->samples = weft__calloc(rt->nworkers, sizeof(*o->samples));
	if (!o->samples) {
		err = -ENOMEM;
		goto out_free;
	}
	rt->observer = o;
	if (slow) {
		err = -pthread_create(&o->monitor, NULL, monitor_main, rt);
		if (err)
			goto out_free;
		o->monitor_started = true;
	}
	if (rt->cfg.flags & WEFT_DUMP_ON_SIGQUIT) {
		err = sq_register(o);
		if (err)
			goto out_stop;
	}
	return 0;

out_stop:
	weft__observe_stop(rt);
	return err;
out_free:
	rt->observer = NULL;
	weft__free(o->samples);
	weft__free(o);
	return err;
}

void weft__observe_stop(struct weft__runtime *rt)
{
	struct weft__observer *o = rt->observer;

	if (!o)
		return;
	if (o->sigquit)
		sq_unregister(o);
	if (o->monitor_started) {
		atomic_store_explicit(&o->stop_word, 1, memory_order_release);
		syscall(SYS_futex, (uint32_t *)&o->stop_word,
			FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
		pthread_join(o->monitor, NULL);
	}
	rt->observer = NULL;
	weft__free(o->samples);
	weft__free(o);
}
