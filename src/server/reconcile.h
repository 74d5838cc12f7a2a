/*
 * reconcile.h - a reconciliation run: a statement against the events of
 * the log, written as finance reads it (JSON or CSV).
 *
 * Shared by `pointsgw reconcile` and POST /v1/reconciliations. The ledger
 * side is read a page at a time inside the caller's read transaction (one
 * snapshot for the whole run); the statement streams, and is sorted on
 * disk only when it is not in event_id order. Exceptions are written to a
 * temporary file as they are found and copied after the summary, so memory
 * does not grow with the number of rows either.
 */
#ifndef PGW_SERVER_RECONCILE_H
#define PGW_SERVER_RECONCILE_H

#include "core/civil.h"
#include "core/reconcile.h"
#include "server/statement.h"
#include "store/store.h"

#include <stdio.h>

typedef enum pgw_recon_format { PGW_RECON_JSON = 0, PGW_RECON_CSV } pgw_recon_format;

typedef struct pgw_recon_options {
    pgw_event_filter filter; /* channel, optional shop, [from, to) */
    pgw_recon_format format;
    /* CSV only: summary rows after the exceptions. Asked for, as API.md's
     * CSV is one exception per row and readers may take every row so. */
    bool csv_summary;
    const pgw_tz *tz;      /* the mall's zone: the report's occurred_at, a row's local time */
    size_t exceptions_max; /* exceptions listed at most; 0: all (the summary counts all) */
    /* When set, every missing_in_ledger row is also written here as a raw
     * pgw_recon_row, for a repair to post (pgw_recon_read_missing). */
    FILE *missing;
    /* When set (the CLI's stderr), each warning is also written here as a
     * line: a statement row keyed by event_id alone whose event_id the log
     * has at several shops, which is paired with none (see README). */
    FILE *warn;
} pgw_recon_options;

/*
 * What the log holds of a reconciliation's scope, whatever its period: a
 * channel or shop misspelt has no event at all, and every statement row is
 * then missing_in_ledger without a word. The JSON report says so in its
 * `notices`; the CLI also on stderr (and refuses a --repair of a channel
 * with none). has_shop_events is true when the filter names no shop.
 */
typedef struct pgw_recon_scope {
    bool has_channel_events;
    bool has_shop_events; /* of filter.shop on the channel; false when the channel has none */
} pgw_recon_scope;

/* Reads *scope for `filter` (channel and shop checked: pgw_store_check_event_filter). */
int pgw_recon_read_scope(pgw_store *store, const pgw_event_filter *filter, pgw_recon_scope *scope,
                         pgw_err *err);

/*
 * Runs the match and writes the report to `out`. The caller holds a read
 * transaction on `store`. Fills *summary. PGW_EINVAL never comes from the
 * statement's content (bad rows are malformed_row exceptions); errors are
 * I/O or storage.
 */
/* The JSON report: {"summary", "ignored_columns", "warnings", "notices"
 * (pgw_recon_scope's, as {"kind": "no_events_on_channel"|
 * "no_events_of_shop", "channel", ["shop",] "message"}; an empty list when
 * none), "exceptions_listed", "truncated", "exceptions"}. */
int pgw_recon_run(pgw_store *store, pgw_statement *statement, const pgw_recon_options *opts,
                  FILE *out, pgw_recon_summary *summary, pgw_err *err);

/* The next row written to opts.missing (after rewinding it); false at the end. */
bool pgw_recon_read_missing(FILE *missing, pgw_recon_row *row);

#endif
