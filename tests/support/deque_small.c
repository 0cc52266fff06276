/* SPDX-License-Identifier: MIT */
/*
 * tests/support/deque_small.c - runtime/deque.c compiled a second time with
 * a 4-slot ring and every symbol renamed (weft__deque_* ->
 * weft__deque_small_*, struct weft__deque -> struct weft__deque_small), so
 * it links beside libweft's own deque. See deque_small.h.
 */
#include "tests/support/deque_small.h"

#define WEFT__DEQUE_CAP_OVERRIDE WEFT__DEQUE_SMALL_CAP
#define weft__deque weft__deque_small
#define weft__deque_init weft__deque_small_init
#define weft__deque_push weft__deque_small_push
#define weft__deque_take weft__deque_small_take
#define weft__deque_steal weft__deque_small_steal
#define weft__deque_len weft__deque_small_len
#define weft__deque_steal_half weft__deque_small_steal_half
#define weft__deque_take_top weft__deque_small_take_top
#define weft__deque_take_if_bottom weft__deque_small_take_if_bottom

#include "runtime/deque.c"

struct weft__deque_small *weft__deque_small_new(void)
{
	struct weft__deque_small *d =
		aligned_alloc(_Alignof(struct weft__deque_small), sizeof(*d));

	if (d)
		weft__deque_small_init(d);
	return d;
}

void weft__deque_small_free(struct weft__deque_small *d)
{
	free(d);
}

size_t weft__deque_small_steal_max(void)
{
	return WEFT__DEQUE_STEAL_MAX;
}
