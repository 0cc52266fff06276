/* SPDX-License-Identifier: MIT */
/*
 * runtime/test_hooks.h - fault-injection hooks of WEFT_TEST_HOOKS builds
 * (RELIABILITY.md 3.5). Exported with the weft_test_ prefix so tests reach
 * them through the normal library; absent from release builds.
 */
#ifndef WEFT_RUNTIME_TEST_HOOKS_H
#define WEFT_RUNTIME_TEST_HOOKS_H

#include "weft/base.h"

WEFT_EXTERN_C_BEGIN

/* fault.c: site "cancel_res" takes this as its errno for a result of 0
 * ("cancel_res:0"); io/uring.c reads it back. */
#define WEFT_TEST_FAULT_RES0 0x10000

#ifdef WEFT_TEST_HOOKS
/* Let n more runtime allocations succeed, then fail every one (-1: off). */
WEFT_API void weft_test_fail_alloc_after(long n);
/* How many runtime allocation points were passed so far. */
WEFT_API unsigned long weft_test_alloc_count(void);
struct weft_runtime;
/* Tasks of rt spawned and not yet finished, other than the calling one. */
WEFT_API uint64_t weft_test_live_tasks(struct weft_runtime *rt);
/* offload.c: idle time before a pool thread exits, for threads going idle
 * from now on (0: the default 10 s). */
WEFT_API void weft_test_offload_idle_ns(uint64_t ns);
/* offload.c: make the next @n pool thread creations fail with EAGAIN. */
WEFT_API void weft_test_offload_fail_create(int n);
/* offload.c: a caller woken by its cancellation or deadline while its
 * request was queued stalls this long before it looks where the request is
 * (0: not at all), so a pool thread can take the request meanwhile. */
WEFT_API void weft_test_offload_withdraw_delay_ns(uint64_t ns);
/* observe.c: grace period of the shutdown drain's stuck-offload report
 * (0: the default 5 s). */
WEFT_API void weft_test_drain_grace_ns(uint64_t ns);
/* task.c: task records rt has made so far (free or not; never fewer). */
WEFT_API unsigned long weft_test_task_records(struct weft_runtime *rt);
/* task.c: 2 MiB chunks of records rt has mapped so far. */
WEFT_API unsigned long weft_test_record_chunks(struct weft_runtime *rt);
/* stack.c: how long a free stack beyond the warm ones keeps its pages in
 * rt's pool (0: the default, WEFT__STACK_DECAY_NS). */
WEFT_API void weft_test_stack_decay_ns(struct weft_runtime *rt, uint64_t ns);
/* stack.c: call @fn (NULL: nothing) in every new stack chunk's set-up,
 * after the mapping and before the chunk joins its pool: a test can stall
 * a worker there and check that the pool stays usable meanwhile. */
WEFT_API void weft_test_stack_chunk_hook(void (*fn)(void));
/* rt's pool: free stacks, and how many had their pages dropped so far. */
WEFT_API void weft_test_stack_counts(struct weft_runtime *rt,
				     unsigned long *nr_free,
				     unsigned long *nr_released);
/* fault.c: make system call @site ("mmap", "io_uring_setup", ...; the
 * list is in runtime/fault.c) fail with @err on call @nth, every @every
 * calls, or always (both 0); @err 0 disarms it. Site "short_io" takes a
 * byte count as @err: transfers are capped at it. Return 0 or -EINVAL. */
WEFT_API int weft_test_fault(const char *site, int err, unsigned nth,
			     unsigned every);
/* How often @site was consulted since it was last armed (0: unknown). */
WEFT_API unsigned long weft_test_fault_calls(const char *site);
/* io/uring.c: completions @rt's rings hold back now (cqe_delay,
 * cancel_delay, cqe_stale's pending replays), and replays cqe_stale has
 * made so far. Either may be NULL. */
WEFT_API void weft_test_io_ring_counts(struct weft_runtime *rt,
				       unsigned long *held,
				       unsigned long *replayed);
/* Disarm every site. */
WEFT_API void weft_test_faults_clear(void);
/* Apply a WEFT_FAULTS string now: 0, or -EINVAL (nothing applied). */
WEFT_API int weft_test_faults_parse(const char *spec);
/* chaos.c: chaos mode (RELIABILITY 3.1): each protocol point yields or
 * spins 0-50 us with probability permille/1000 (0: off), from per-thread
 * streams seeded by @seed. _parse takes WEFT_CHAOS's "<seed>[:<per-mille>]"
 * (-EINVAL, nothing changed, for a bad one); _events counts points that
 * acted since the process started. */
WEFT_API void weft_test_chaos(uint64_t seed, unsigned permille);
WEFT_API int weft_test_chaos_parse(const char *spec);
WEFT_API unsigned long weft_test_chaos_events(void);
/* worker.c: queue the calling task once more while it runs, as a double
 * wake-up would (RELIABILITY C10: debug builds must abort). */
WEFT_API void weft_test_queue_self_again(void);
/* worker.c: entries (tasks and tombstones) in the calling task's worker's
 * deque now; 0 outside a task. */
WEFT_API unsigned long weft_test_deque_len(void);
/* worker.c: a yield's hand-off pops the deque's top without looking at it
 * first, as if a thief had just taken the started task it saw, so an
 * unstarted top goes down the stash path (1: on, 0: off); how many items
 * were stashed so far. */
WEFT_API void weft_test_yield_skip_peek(int on);
WEFT_API unsigned long weft_test_yield_stashes(void);
#endif

WEFT_EXTERN_C_END
#endif
