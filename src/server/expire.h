/*
 * expire.h - the expiry run, through the writer, idempotently: every hold
 * still pending at its deadline is released, then every lot due by the
 * moment loses what is left of it to system:expired.
 */
#ifndef PGW_SERVER_EXPIRE_H
#define PGW_SERVER_EXPIRE_H

#include "core/civil.h"
#include "core/error.h"
#include "core/log_limit.h"
#include "server/writer.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct pgw_expire_report {
    int64_t holds;  /* holds pending past their deadline, released in this run */
    int64_t lots;   /* lots whose remaining points expired in this run */
    int64_t points; /* points expired in this run */
    int64_t failed; /* holds and lots whose expiry failed, left due for the next run */
} pgw_expire_report;

/* Told of each expiry that committed a transfer, with the command (its
 * transfers filled): on the writer's completion thread, in commit order,
 * as the writer completes every other command (writer.h). */
typedef void (*pgw_expire_seen)(void *ctx, const pgw_command *cmd);

/*
 * Reads the holds, then the lots, due at `as_of` (expires_at <= as_of, points left) page by
 * page on its own connection to `db_url`, and submits one EXPIRE_HOLD
 * or EXPIRE_LOT command for each to `writer`, waiting for each page to commit. A second
 * run over the same moment finds nothing due and expires nothing. A run
 * as of a moment before the period's close (store.h
 * pgw_store_close_period) is PGW_ECLOSED, nothing done; its message says
 * the times in `tz`, the mall's zone as finance wrote the close (NULL:
 * unix seconds; core/civil.h pgw_format_moment). `seen`
 * (may be NULL) hears of every committed expiry that moved points.
 * A hold or lot whose expiry fails on its own (its rows) is skipped,
 * still due, counted in out->failed, and the run goes on; it then ends
 * with the first such failure, naming it. The storage or the writer
 * failing (PGW_EUNAVAILABLE), memory, a close made meanwhile, or a whole
 * page failing end the run at once, the error naming the hold or lot it
 * stopped at and, when some expiries had committed, saying that the run
 * stopped part way (those stay done). *out holds what was committed,
 * whatever the run returns. `as_of` outside 1970..9999 is PGW_EINVAL.
 */
int pgw_expire_due(pgw_writer *writer, const char *db_url, int64_t as_of, const pgw_tz *tz,
                   pgw_expire_seen seen, void *seen_ctx, pgw_expire_report *out, pgw_err *err);

/* Whether the run's owner asks it to stop (serve's sweep: a SIGTERM). */
typedef bool (*pgw_expire_stop)(void *ctx);

/*
 * pgw_expire_due, asking `stop` (may be NULL) before each page: once it
 * says true the run ends after the page under way has committed, PGW_OK
 * with what it did (*out). A year-end run over a million lots takes
 * minutes (longer on PostgreSQL), and serve's stop waited for all of it:
 * past a supervisor's stop timeout it was killed mid-drain. What is left
 * is still due, and the next run (any instance's, or expire) takes it.
 */
int pgw_expire_due_until(pgw_writer *writer, const char *db_url, int64_t as_of, const pgw_tz *tz,
                         pgw_expire_seen seen, void *seen_ctx, pgw_expire_stop stop, void *stop_ctx,
                         pgw_expire_report *out, pgw_err *err);

/*
 * What a sweep (serve's: pgw_expire_due, then the prune) tells the
 * operator of one of its parts, `what` ("expiry sweep"): its failure
 * `err` as "pointsgw: WHAT: message" on stderr, limited by `said` as the
 * writer's lines are (core/log_limit.h: a cause once a minute, the lines
 * held back counted in the next), since a sweep every second on a
 * database it cannot open said so every second; rc PGW_OK after
 * failures, once, that it works again, when the minute of the last line
 * out is over (pgw_log_tell: a sweep failing every other run said two
 * lines a failure). `said` is the sweep thread's.
 */
void pgw_expire_tell(pgw_log_limit *said, const char *what, int rc, const pgw_err *err);
/* The same at `now_s` (a monotonic clock's seconds, > 0), on `out`. */
void pgw_expire_tell_at(pgw_log_limit *said, const char *what, int rc, const pgw_err *err,
                        int64_t now_s, FILE *out);
/* The same of a cause `failed` (NULL: it worked), for lines whose
 * failure is a cause rather than an error (the API's of WeChat, of SMS
 * codes, at request rate). */
void pgw_expire_tell_late(pgw_log_limit *said, const char *what, const char *failed);
/* Its owner stops: "works again" on `out` if it worked since its last
 * failure, within that line's minute (pgw_log_stopping), lest the failure
 * stay the log's last word. */
void pgw_expire_tell_stopping(pgw_log_limit *said, const char *what, FILE *out);
/* Nothing told at `now_s`: "works again" on `out` if it worked since its
 * last failure and that line's minute is over (pgw_log_later), for an
 * owner that may fall quiet after a failure. */
void pgw_expire_tell_later(pgw_log_limit *said, const char *what, int64_t now_s, FILE *out);

#endif
