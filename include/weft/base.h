/* SPDX-License-Identifier: MIT */
/*
 * weft/base.h - conventions shared by every section of the API: version,
 * export macro, the task body type, time units.
 *
 * Errors are negative errno values (0 or a non-negative result on success).
 * errno is never used to report results, except by the pointer constructors
 * (weft_spawn, ...), which return NULL and set errno like malloc().
 */
#ifndef WEFT_BASE_H
#define WEFT_BASE_H

#if !defined(__linux__) || !(defined(__x86_64__) || defined(__aarch64__))
#error "weft supports 64-bit Linux on x86-64 and aarch64 only"
#endif

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
#define WEFT_EXTERN_C_BEGIN extern "C" {
#define WEFT_EXTERN_C_END }
#else
#define WEFT_EXTERN_C_BEGIN
#define WEFT_EXTERN_C_END
#endif

#define WEFT_API __attribute__((visibility("default")))
/* The result must be used: a spawn whose handle is dropped can never be
 * joined (asyncio's "task was never awaited"); detach it explicitly. */
#define WEFT_MUST_USE __attribute__((warn_unused_result))

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0
/* (major << 16) | (minor << 8) | patch, the value weft_version() returns. */
#define WEFT_VERSION \
	((WEFT_VERSION_MAJOR << 16) | (WEFT_VERSION_MINOR << 8) | WEFT_VERSION_PATCH)

/* No time limit. A relative timeout whose end overflows means this too. */
#define WEFT_FOREVER UINT64_MAX
#define WEFT_USEC(n) ((uint64_t)(n) * UINT64_C(1000))
#define WEFT_MSEC(n) ((uint64_t)(n) * UINT64_C(1000000))
#define WEFT_SEC(n) ((uint64_t)(n) * UINT64_C(1000000000))

WEFT_EXTERN_C_BEGIN

/**
 * typedef weft_fn - a task body.
 * @arg: the pointer given at spawn time; results travel back through it.
 *
 * Return: the task's status: 0 for success, a negative errno for failure.
 * A C++ exception leaving fn calls std::terminate.
 */
typedef int (*weft_fn)(void *arg);

/**
 * weft_version() - The library's version, as WEFT_VERSION encodes it.
 *
 * Context: any thread; never suspends.
 * Return: (major << 16) | (minor << 8) | patch of the linked library.
 */
WEFT_API unsigned weft_version(void);

/**
 * weft_now() - Read the monotonic clock.
 *
 * Reads the clock afresh at every call (CLOCK_MONOTONIC). Every deadline
 * and timeout in weft is on this clock: a change of the wall clock
 * (settimeofday, NTP steps) moves none of them, and the time a system
 * spends suspended does not count (a 10 s sleep across a 1 h suspend ends
 * 10 s of running time after it began, as Python's time.monotonic() and
 * asyncio's loop on Linux behave). In a time namespace it reads that
 * namespace's clock, and deadlines follow it.
 *
 * Context: any thread; never suspends.
 * Return: nanoseconds on the clock every weft deadline uses.
 */
WEFT_API uint64_t weft_now(void);

WEFT_EXTERN_C_END
#endif /* WEFT_BASE_H */
