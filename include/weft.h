/* SPDX-License-Identifier: MIT */
/*
 * weft.h - the one header users include.
 *
 * weft brings Python asyncio's programming model to C on many cores:
 * stackful tasks on per-core worker threads that steal work from each other.
 * The API is split by section into the headers in include/weft/; this header pulls in all
 * of them. See README.md for an overview and ../shared/API.md for the
 * contract.
 */
#ifndef WEFT_H
#define WEFT_H

#include "weft/base.h"
#include "weft/runtime.h"
#include "weft/task.h"
#include "weft/local.h"
#include "weft/sync.h"
#include "weft/queue.h"
#include "weft/scope.h"
#include "weft/group.h"
#include "weft/offload.h"
#include "weft/observe.h"
#include "weft/io.h"

#endif /* WEFT_H */
