/*
 * outbound.h - worker threads for calls that leave the gateway (WeChat).
 *
 * The service thread never waits on the network, as it never waits on the
 * database: a request that needs WeChat first (a login's code exchange)
 * queues a task here; a worker makes the blocking call and hands the rest
 * to the writer, or finishes the request itself. The queue is bounded: a
 * full one is refused at once (PGW_EFULL), never grown, so a stalled
 * provider turns into 503s instead of memory.
 */
#ifndef PGW_SERVER_OUTBOUND_H
#define PGW_SERVER_OUTBOUND_H

#include "core/error.h"

#include <stddef.h>

#define PGW_OUTBOUND_THREADS_MAX 32

typedef struct pgw_outbound pgw_outbound;
typedef void (*pgw_outbound_task)(void *arg);

int pgw_outbound_start(size_t threads, size_t queue_cap, pgw_outbound **out, pgw_err *err);

/* Queues task(arg); PGW_EFULL when the queue is full, PGW_ESTATE once
 * stopping (then the task will not run and the caller keeps arg). */
int pgw_outbound_submit(pgw_outbound *pool, pgw_outbound_task task, void *arg, pgw_err *err);

/* Runs what is queued, joins the workers and frees the pool. */
void pgw_outbound_stop(pgw_outbound *pool);

#endif
