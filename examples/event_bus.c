/* SPDX-License-Identifier: MIT */
/*
 * examples/event_bus.c - an in-process publish/subscribe bus on a queue.
 *
 * Seed file: shared/seeds/004_636619dee873197f.txt.
 *
 * Ports seed 004's "Event-Driven Async with Queue" (class AsyncEventBus):
 *
 *     async def run(self):
 *         while self._running:
 *             event = await self._queue.get()
 *             handlers = self._subscribers.get(event.type, [])
 *             await asyncio.gather(*[h(event) for h in handlers],
 *                                  return_exceptions=True)
 *             self._queue.task_done()
 *
 * publish() is a weft_queue_put(); the bus task gets events one at a time
 * and runs every handler subscribed to the event's type as a task of its
 * own, then waits for all of them: gather(return_exceptions=True), so one
 * failing handler neither stops the others nor the bus. (With weft_gather
 * the join loop becomes one call.) Instead of the seed's _running flag the
 * bus stops when its queue is closed: it drains what is left, then its get
 * returns -EPIPE.
 *
 * Checked: every handler ran once per event of its type, the one failure
 * (analytics is down for order 3) was reported and did not stop the bus,
 * an event nobody subscribed to was still task_done()'d, and
 * weft_queue_join() returned only after every event was handled.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "weft.h"

struct event {
	const char *type;
	int order_id;
	const char *user_email;
};

typedef int (*handler_fn)(const struct event *ev);

#define MAX_SUBSCRIPTIONS 8

struct event_bus {
	weft_queue *queue;
	struct {
		const char *type;
		handler_fn handler;
	} subs[MAX_SUBSCRIPTIONS];
	int nr_subs;
	int handler_failures; /* written by the bus task only */
};

static int bus_init(struct event_bus *bus)
{
	memset(bus, 0, sizeof(*bus));
	bus->queue = weft_queue_new(16);
	return bus->queue ? 0 : -errno;
}

static int bus_subscribe(struct event_bus *bus, const char *type,
			 handler_fn handler)
{
	if (bus->nr_subs == MAX_SUBSCRIPTIONS)
		return -ENOSPC;
	bus->subs[bus->nr_subs].type = type;
	bus->subs[bus->nr_subs].handler = handler;
	bus->nr_subs++;
	return 0;
}

static int bus_publish(struct event_bus *bus, struct event *ev)
{
	return weft_queue_put(bus->queue, ev);
}

struct handler_call {
	handler_fn handler;
	const struct event *ev;
};

static int run_handler(void *arg)
{
	struct handler_call *call = arg;

	return call->handler(call->ev);
}

/* Run every handler of @ev concurrently; wait for all; count failures. */
static void dispatch(struct event_bus *bus, const struct event *ev)
{
	struct handler_call calls[MAX_SUBSCRIPTIONS];
	weft_task *tasks[MAX_SUBSCRIPTIONS];
	int i, n = 0, status;

	for (i = 0; i < bus->nr_subs; i++) {
		if (strcmp(bus->subs[i].type, ev->type) != 0)
			continue;
		calls[n] = (struct handler_call){ bus->subs[i].handler, ev };
		tasks[n] = weft_spawn_named("handler", run_handler, &calls[n]);
		if (!tasks[n]) {
			bus->handler_failures++;
			continue;
		}
		n++;
	}
	/* gather(..., return_exceptions=True): a failure is just a value.
	 * The handlers' args live in this frame: join never abandons them. */
	for (i = 0; i < n; i++) {
		status = weft_join(tasks[i]);
		if (status < 0) {
			printf("  handler for %s #%d failed: %s\n", ev->type,
			       ev->order_id, strerrorname_np(-status));
			bus->handler_failures++;
		}
	}
}

static int bus_run(void *arg)
{
	struct event_bus *bus = arg;
	void *item;
	int ret;

	while ((ret = weft_queue_get(bus->queue, &item)) == 0) {
		dispatch(bus, item);
		weft_queue_task_done(bus->queue);
	}
	return ret == -EPIPE ? 0 : ret; /* -EPIPE: closed and drained */
}

/* ---- the subscribers ----------------------------------------------------- */

static atomic_int emails_sent, orders_tracked, welcomes_sent;

static int send_confirmation_email(const struct event *ev)
{
	int ret = weft_sleep(WEFT_MSEC(2)); /* await email_service.send() */

	if (ret < 0)
		return ret;
	printf("  email to %s: order %d confirmed\n", ev->user_email,
	       ev->order_id);
	atomic_fetch_add(&emails_sent, 1);
	return 0;
}

static int update_analytics(const struct event *ev)
{
	int ret = weft_sleep(WEFT_MSEC(1)); /* await analytics.track() */

	if (ret < 0)
		return ret;
	if (ev->order_id == 3)
		return -EIO; /* the analytics service is down just now */
	atomic_fetch_add(&orders_tracked, 1);
	return 0;
}

static int send_welcome(const struct event *ev)
{
	(void)ev;
	atomic_fetch_add(&welcomes_sent, 1);
	return 0;
}

/* ---- main ---------------------------------------------------------------- */

static int failures;

#define CHECK(cond, ...)                                       \
	do {                                                   \
		if (!(cond)) {                                 \
			fprintf(stderr, "FAIL: " __VA_ARGS__); \
			fputc('\n', stderr);                   \
			failures++;                            \
		}                                              \
	} while (0)

static struct event events[] = {
	{ "order.placed", 1, "ada@example.com" },
	{ "user.signup", 0, "grace@example.com" },
	{ "order.placed", 2, "grace@example.com" },
	{ "cart.viewed", 0, "ada@example.com" }, /* nobody subscribed */
	{ "order.placed", 3, "linus@example.com" },
	{ "order.placed", 4, "ada@example.com" },
	{ "user.signup", 0, "ken@example.com" },
	{ "order.placed", 5, "ken@example.com" },
};
#define NR_EVENTS (int)(sizeof(events) / sizeof(events[0]))
#define NR_ORDERS 5
#define NR_SIGNUPS 2

static int main_task(void *arg)
{
	struct event_bus bus;
	weft_task *runner;
	int i, ret;

	(void)arg;
	ret = bus_init(&bus);
	if (ret < 0)
		return ret;
	bus_subscribe(&bus, "order.placed", send_confirmation_email);
	bus_subscribe(&bus, "order.placed", update_analytics);
	bus_subscribe(&bus, "user.signup", send_welcome);

	runner = weft_spawn_named("event-bus", bus_run, &bus);
	if (!runner) {
		weft_queue_free(bus.queue);
		return -errno;
	}
	for (i = 0; i < NR_EVENTS; i++) {
		ret = bus_publish(&bus, &events[i]);
		CHECK(ret == 0, "publish %d: %d", i, ret);
	}
	/* Every event published so far is handled once join returns. */
	ret = weft_queue_join(bus.queue);
	CHECK(ret == 0, "weft_queue_join: %d", ret);
	printf("emails %d, tracked %d, welcomes %d, handler failures %d\n",
	       atomic_load(&emails_sent), atomic_load(&orders_tracked),
	       atomic_load(&welcomes_sent), bus.handler_failures);
	CHECK(atomic_load(&emails_sent) == NR_ORDERS, "emails sent: %d",
	      atomic_load(&emails_sent));
	CHECK(atomic_load(&orders_tracked) == NR_ORDERS - 1,
	      "orders tracked: %d", atomic_load(&orders_tracked));
	CHECK(atomic_load(&welcomes_sent) == NR_SIGNUPS, "welcomes sent: %d",
	      atomic_load(&welcomes_sent));
	CHECK(bus.handler_failures == 1, "handler failures: %d",
	      bus.handler_failures);

	/* Shut the bus down: close its queue, wait for it to drain and end. */
	weft_queue_close(bus.queue);
	ret = weft_join(runner);
	CHECK(ret == 0, "bus ended with %d", ret);
	CHECK(bus_publish(&bus, &events[0]) == -EPIPE,
	      "publish after close was accepted");
	weft_queue_free(bus.queue);
	return 0;
}

int main(void)
{
	int ret = weft_run(main_task, NULL, NULL);

	if (ret != 0) {
		fprintf(stderr, "FAIL: main task: %d\n", ret);
		return 1;
	}
	if (failures)
		return 1;
	printf("ok\n");
	return 0;
}
