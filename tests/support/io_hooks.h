/* SPDX-License-Identifier: MIT */
/* tests/support/io_hooks.h - see io_hooks.c. */
#ifndef WEFT_TESTS_IO_HOOKS_H
#define WEFT_TESTS_IO_HOOKS_H

#include <stdbool.h>
#include <stdint.h>

#include "weft.h"

#ifdef __cplusplus
extern "C" {
#endif

void io_test_set_deadline(uint64_t deadline_ns);
void io_test_stats(weft_runtime *rt, uint64_t *submitted, uint64_t *completed);

#ifdef WEFT_TEST_HOOKS
/* io/reactor.c: spin up to @ns at random in the windows between arming an
 * op and publishing it, and in weft_close (0: off). */
WEFT_API void weft_test_io_close_race_delay(uint64_t ns);
/* io/uring.c: provided buffers (count, a power of two, of size bytes) of
 * the rings started from now on; 0, 0: the defaults. */
WEFT_API void weft_test_io_pbuf(unsigned count, unsigned size);
/* io/uring.c: multishot accepts armed from now on fail with -EINVAL, as
 * on a kernel without them. */
WEFT_API void weft_test_io_accept_ms_einval(bool on);
/* io/acceptq.c: @fd's accept queue; -ENOENT when it has none. */
WEFT_API int weft_test_io_acceptq_state(int fd, unsigned *queued, bool *armed,
					bool *plain);
#endif

#ifdef __cplusplus
}
#endif
#endif
