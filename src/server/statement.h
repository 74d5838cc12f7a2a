/*
 * statement.h - a channel's statement, read as reconciliation rows.
 *
 * A statement is CSV with a header row naming the columns event_id,
 * occurred_at, type, member, amount_fen, points (any order; all required).
 * occurred_at is RFC 3339 or unix seconds; amount_fen 0..PGW_AMOUNT_FEN_MAX
 * (empty: 0); points a signed whole number (a refund's are negative). A row
 * that breaks a rule comes back as a malformed row with its line and the
 * reason, never as an error: one bad line does not stop a reconciliation.
 *
 * Rows come in file order. Reconciliation needs event_id order: when the
 * file is not in it, pgw_statement_sort copies the rows into a temporary
 * SQLite database (its own file, deleted on close; SQLite sorts on disk
 * with a bounded cache) and reads them back in order. Memory stays bounded
 * either way: a 1 MiB read buffer, or SQLite's cache.
 */
#ifndef PGW_SERVER_STATEMENT_H
#define PGW_SERVER_STATEMENT_H

#include "core/reconcile.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct pgw_statement pgw_statement;

/* Opens a statement file and reads its header. PGW_ENOTFOUND / PGW_EIO for
 * the file, PGW_EINVAL for a header without the columns (err says which). */
int pgw_statement_open_file(const char *path, pgw_statement **out, pgw_err *err);

/* The same over `len` bytes of `text`, borrowed until pgw_statement_free. */
int pgw_statement_open_text(const char *text, size_t len, pgw_statement **out, pgw_err *err);

/* A pgw_recon_next: the next row (file order, or event_id order once sorted). */
int pgw_statement_next(void *statement, pgw_recon_row *row, bool *end, pgw_err *err);

/* Back to the first row. */
int pgw_statement_rewind(pgw_statement *statement, pgw_err *err);

/* Reads the whole statement into a temporary database; from then on rows
 * come in (event_id, line) order. */
int pgw_statement_sort(pgw_statement *statement, pgw_err *err);

void pgw_statement_free(pgw_statement *statement);

#endif
