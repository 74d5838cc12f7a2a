/*
 * statement.h - a channel's statement, read as reconciliation rows.
 *
 * A statement is CSV with a header row naming the columns event_id,
 * occurred_at, type, member, amount_fen, points (any order; all required)
 * and optionally original_event_id (a refund's purchase, for --repair)
 * and shop_id (the event's shop, "-" for none: rows are then keyed by
 * event_id and shop, as the log's keys are; each row must name one).
 * Other columns (a channel's own: a shop name, a note) are read past and
 * named by pgw_statement_ignored, for the report to show.
 * occurred_at is unix seconds or a time as pgw_parse_local_time reads it
 * (RFC 3339, a space allowed for its T, its seconds or offset left out,
 * or a slash date "2026/11/20 14:03:05"), without its offset a local time
 * in the zone set by pgw_statement_set_time_zone (one that names no date,
 * or that the zone cannot place or write, is refused, saying why); amount_fen 0..PGW_AMOUNT_FEN_MAX
 * whole fen (empty: 0), plain or grouped in threes by commas as a
 * spreadsheet writes it ("1,234,567"; a decimal point, another separator
 * or a group not of three is refused); points a signed whole number (a
 * refund's are negative). A number (unix seconds too) is digits alone,
 * a "-" ahead of points: one with a space around it or a "+" ahead is
 * refused, saying so, plain or grouped alike. A row with a value past the header's columns
 * (an unquoted comma: "1,234" bare is two fields) is refused. A row
 * that breaks a rule comes back as a malformed row with its line and the
 * reason, never as an error: one bad line does not stop a reconciliation.
 *
 * Rows come in file order. Reconciliation needs event_id order: when the
 * file is not in it, pgw_statement_sort sorts it with bounded memory: rows
 * packed into a 32 MiB arena, sorted there, written out as sorted runs to
 * temporary files (deleted when closed) whenever it fills, then merged.
 * Memory stays bounded either way: a 1 MiB read buffer, or the arena.
 */
#ifndef PGW_SERVER_STATEMENT_H
#define PGW_SERVER_STATEMENT_H

#include "core/civil.h"
#include "core/reconcile.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct pgw_statement pgw_statement;

/* Bytes of an ignored column's name kept for the report (cut on a
 * character boundary). */
#define PGW_STATEMENT_COLUMN_NAME_MAX 64

/* Opens a statement file and reads its header. PGW_ENOTFOUND / PGW_EIO for
 * the file, PGW_EINVAL for a header without the columns (err says which). */
int pgw_statement_open_file(const char *path, pgw_statement **out, pgw_err *err);

/* The same over `len` bytes of `text`, borrowed until pgw_statement_free. */
int pgw_statement_open_text(const char *text, size_t len, pgw_statement **out, pgw_err *err);

/* The i-th header column the statement does not use, left to right, or
 * NULL past the last: its name, at most PGW_STATEMENT_COLUMN_NAME_MAX
 * bytes of UTF-8, control characters as '?'. Owned by the statement. */
const char *pgw_statement_ignored(const pgw_statement *statement, size_t i);

/* Whether the header names shop_id: each row's shop is then in its
 * `source`, and the rows are keyed by (event_id, shop). */
bool pgw_statement_has_shop(const pgw_statement *statement);

/* The zone an occurred_at without an offset is read in (the mall's),
 * copied, for the rows read from then on; without one such a row is
 * malformed (which instant a local time names is the zone's to say). A
 * row's time the zone cannot write (outside its years 1970..9999, an
 * offset or unix seconds taking it there) is malformed too: the
 * reconciliation report writes the rows' times in it. */
void pgw_statement_set_time_zone(pgw_statement *statement, const pgw_tz *tz);

/* Reads an occurred_at as a row's is read (above), without its offset a
 * local time in `tz` (NULL: none, such a time refused): a shop's CSV batch
 * reads its column so too. PGW_EINVAL or PGW_ERANGE with err starting
 * "occurred_at", the column's name, and saying why. */
int pgw_statement_time(const char *at, const pgw_tz *tz, int64_t *out, pgw_err *err);

/* A pgw_recon_next: the next row (file order, or event_id order once sorted). */
int pgw_statement_next(void *statement, pgw_recon_row *row, bool *end, pgw_err *err);

/* Back to the first row of the file (in file order: a sort is dropped). */
int pgw_statement_rewind(pgw_statement *statement, pgw_err *err);

/* Sorts the whole statement; from then on rows come in (event_id, shop, line)
 * order. PGW_ETOOLARGE past 16 GiB of rows (sort such a file first). */
int pgw_statement_sort(pgw_statement *statement, pgw_err *err);

void pgw_statement_free(pgw_statement *statement);

/* Test hook: a smaller sort arena (4 KiB .. 32 MiB), to make many runs. */
void pgw_statement__set_sort_arena_for_test(pgw_statement *statement, size_t bytes);

#endif
