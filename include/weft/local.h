/* SPDX-License-Identifier: MIT */
/*
 * weft/local.h - task-local storage (contextvars). Values live in the task
 * record: no allocation, NULL in every new task (not inherited).
 */
#ifndef WEFT_LOCAL_H
#define WEFT_LOCAL_H

#include "base.h"

WEFT_EXTERN_C_BEGIN

typedef unsigned weft_key;

/* The most keys a process may create. */
#define WEFT_KEYS_MAX 16

/**
 * weft_key_create() - Create a task-local key.
 * @k: receives the key.
 * @dtor: NULL, or run in the task after its fn returns, for each non-NULL
 *	value the task holds under this key.
 *
 * Context: any thread; never suspends.
 * Return: 0; -EINVAL for NULL @k; -EAGAIN once WEFT_KEYS_MAX keys exist.
 */
WEFT_API int weft_key_create(weft_key *k, void (*dtor)(void *));

/**
 * weft_local_get() - The calling task's value for @k.
 * @k: a key from weft_key_create().
 *
 * Context: task; never suspends.
 * Return: the value; NULL if unset, outside a task, or for a bad key.
 */
WEFT_API void *weft_local_get(weft_key k);

/**
 * weft_local_set() - Set the calling task's value for @k.
 * @k: a key from weft_key_create().
 * @value: the new value (any pointer; NULL unsets).
 *
 * Context: task only; never suspends.
 * Return: 0; -EPERM outside a task; -EINVAL for a key never created.
 */
WEFT_API int weft_local_set(weft_key k, void *value);

WEFT_EXTERN_C_END
#endif /* WEFT_LOCAL_H */
