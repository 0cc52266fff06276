/* SPDX-License-Identifier: MIT */
/*
 * tests/support/deque_small.h - a second copy of runtime/deque.c with a
 * WEFT__DEQUE_SMALL_CAP-slot ring (tests/support/deque_small.c), so the
 * wrap-around, full and spill paths run every few operations. The struct is
 * opaque here (its size depends on the override): make one with
 * weft__deque_small_new(). Each function behaves as its weft__deque_*
 * namesake in runtime/deque.h.
 *
 * C++: include the standard and gtest headers before this one (and before
 * runtime/deque.h): with clang++, runtime/internal.h's <stdatomic.h>
 * defines atomic_load() and friends as macros, which break libstdc++
 * headers parsed after it.
 */
#ifndef WEFT_TESTS_SUPPORT_DEQUE_SMALL_H
#define WEFT_TESTS_SUPPORT_DEQUE_SMALL_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT__DEQUE_SMALL_CAP 4

struct weft__deque_small;

/* A new, initialised small deque; NULL on allocation failure. */
struct weft__deque_small *weft__deque_small_new(void);
void weft__deque_small_free(struct weft__deque_small *d);
/* The WEFT__DEQUE_STEAL_MAX the copy was compiled with. */
size_t weft__deque_small_steal_max(void);

void weft__deque_small_init(struct weft__deque_small *d);
bool weft__deque_small_push(struct weft__deque_small *d, void *item);
void *weft__deque_small_take(struct weft__deque_small *d);
int weft__deque_small_steal(struct weft__deque_small *d, void **out);
size_t weft__deque_small_len(const struct weft__deque_small *d);
size_t weft__deque_small_steal_half(struct weft__deque_small *victim,
				    struct weft__deque_small *thief,
				    void **first);
size_t weft__deque_small_take_top(struct weft__deque_small *d, void **out,
				  size_t max);
bool weft__deque_small_take_if_bottom(struct weft__deque_small *d,
				      void *item);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_TESTS_SUPPORT_DEQUE_SMALL_H */
