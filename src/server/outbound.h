/*
 * outbound.h - worker threads for calls that leave the gateway (WeChat,
 * SMS).
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

#include <stdbool.h>
#include <stddef.h>

#define PGW_OUTBOUND_THREADS_MAX 32
/* The longest name of a pool ("WeChat calls"). */
#define PGW_OUTBOUND_NAME_MAX 32

typedef struct pgw_outbound pgw_outbound;
#define PGW_OUTBOUND_STALE_MS 10000

/* Whether a task may call out; when not, it must finish without (its
 * client has given up, and a wx.login code lives 5 minutes), and say why
 * as the reason is: a queue backed up is no stop. */
typedef enum pgw_outbound_turn {
    PGW_OUTBOUND_CALL,     /* call out */
    PGW_OUTBOUND_STALE,    /* it waited over PGW_OUTBOUND_STALE_MS */
    PGW_OUTBOUND_STOPPING, /* the pool is stopping (pgw_outbound_stop) */
} pgw_outbound_turn;

typedef void (*pgw_outbound_task)(void *arg, pgw_outbound_turn turn);

/* `name` says what the pool's tasks are ("WeChat calls", "SMS sends"),
 * as a full queue's refusal names them: one pool type serves several
 * channels, and a refusal naming another misleads whoever reads it. */
int pgw_outbound_start(const char *name, size_t threads, size_t queue_cap, pgw_outbound **out,
                       pgw_err *err);

/* Queues task(arg); PGW_EFULL ("too many <name> waiting") when the queue
 * is full, PGW_ESTATE once stopping (then the task will not run and the
 * caller keeps arg). */
int pgw_outbound_submit(pgw_outbound *pool, pgw_outbound_task task, void *arg, pgw_err *err);

/* Hands what is queued to the workers as PGW_OUTBOUND_STOPPING, joins them
 * and frees the pool. */
void pgw_outbound_stop(pgw_outbound *pool);

#endif
