/*
 * reconcile.h - matching a channel's statement against the transfer log.
 *
 * Both sides are streams of rows in event_id order (byte order, as
 * strcmp and SQLite's BINARY collation sort); the matcher walks them like
 * a merge join, so memory stays at two rows whatever the sizes. Where the
 * rows come from (a CSV file, an HTTP body, the store) is the caller's: it
 * hands in two `next` functions. The matcher does no I/O itself.
 *
 * Every statement row ends in exactly one category: matched,
 * points_mismatch (points differ; checked first), amount_mismatch,
 * type_mismatch, time_mismatch, member_mismatch (checked in that order:
 * the first difference names the row), missing_in_ledger, duplicate_in_statement (a readable row
 * of the key of a readable row before it), malformed_row (the reader could not read it, or, keyed
 * by event_id alone, its event_id is at several shops of the log and pairing it would be a guess;
 * it carries its line and why) or outside_period (dated outside the period the ledger side was read
 * for: not matched, for its event may be in the log all the same). Every ledger row is taken by one
 * statement row or is missing_in_statement.
 *
 * Who takes an event (finance saw an unreadable row counted twice: malformed_row, and its event
 * missing_in_statement; the first fix, reverted, let it turn a readable row of its key after it
 * into a duplicate):
 *  - the first readable row of its key, wherever unreadable rows of that key are: the pair's
 *    first difference, as always; readable rows of the key after it are duplicate_in_statement;
 *  - when no readable row has its key, the first unreadable row whose key was read (key_read:
 *    the statement reader reads its date too, and one dated outside the period takes nothing,
 *    as a readable row so dated): reported malformed_row with the event as its ledger side, and
 *    the event is not missing;
 *  - no row: missing_in_statement. Keyed by event_id alone over several shops, an event_id at two
 *    or more of them is taken by no row, readable or not (each of its events missing).
 * An unreadable row is malformed_row and nothing else, whatever it takes: never a duplicate, never
 * the reason another row is one, never missing_in_ledger; its points are not the statement's. A
 * row whose key was read must come in key order as a readable row does (the caller sorts a
 * statement in which it does not); others may be anywhere. So the categories add up: their sum is
 * statement_rows plus missing_in_statement. Each category but matched is reported through `emit`,
 * one call per row.
 */
#ifndef PGW_CORE_RECONCILE_H
#define PGW_CORE_RECONCILE_H

#include "bounds.h"
#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_RECON_TYPE_MAX   16   /* "purchase", "sign_in", ... */
#define PGW_RECON_MEMBER_MAX 80   /* the statement's member column: "phone:...", an id */
#define PGW_RECON_UNKNOWN    (-1) /* a row's written_off the log does not say */

typedef struct pgw_recon_row {
    char event_id[PGW_EVENT_ID_MAX + 1];
    int64_t occurred_at; /* unix seconds */
    char type[PGW_RECON_TYPE_MAX + 1];
    char member[PGW_RECON_MEMBER_MAX + 1];
    int64_t amount_fen; /* purchase or refund amount; 0 for behaviour events */
    int64_t points;     /* signed: what the event moved for the member (a refund < 0) */
    /* Ledger: what a refund wrote off instead of reversing (expired, or
     * not covered under clamp), PGW_RECON_UNKNOWN when its key's row does
     * not say (recorded before schema 31) or for another type; statement:
     * PGW_RECON_UNKNOWN. Shown, not compared. */
    int64_t written_off;
    char original[PGW_EVENT_ID_MAX + 1]; /* statement: a refund's original_event_id when the
                                            statement has one (for --repair); "" otherwise */
    size_t line;                         /* statement: where the row is in its file; ledger: 0 */
    char source[PGW_ID_MAX + 1]; /* ledger: the event's shop ("-" when none); statement: "" */
    bool malformed;              /* statement only: the reader could not read the row... */
    char problem[160];           /* ...and says why */
    /* A malformed row's key (event_id, and `source` when rows are keyed by
     * shop) was read all the same, from a row whose fields line up with the
     * header: it may take the event of that key (see above). Read only when
     * `malformed` (the store does not set it on the log's rows). */
    bool key_read;
    /* A malformed row whose fields were all read all the same: one keyed
     * by event_id alone that was paired with none, its event_id at several
     * shops (pgw_recon_unpaired). Its points are the statement's total's
     * and malformed_row's, and a report shows them with the row's other
     * fields, so that the exceptions add up to the summary. Set by
     * pgw_reconcile alone. */
    bool fields_read;
} pgw_recon_row;

typedef enum pgw_recon_kind {
    PGW_RECON_MATCHED = 0,
    PGW_RECON_POINTS_MISMATCH,
    PGW_RECON_AMOUNT_MISMATCH,
    PGW_RECON_MISSING_IN_LEDGER,
    PGW_RECON_MISSING_IN_STATEMENT,
    PGW_RECON_DUPLICATE_IN_STATEMENT,
    PGW_RECON_MALFORMED_ROW,
    PGW_RECON_OUTSIDE_PERIOD,
    /* Found by the finance review: points and amount agree, but the row
     * says another type, instant or member than the log. Last, so that
     * the kinds above keep their numbers. */
    PGW_RECON_TYPE_MISMATCH,
    PGW_RECON_TIME_MISMATCH,
    PGW_RECON_MEMBER_MISMATCH,
} pgw_recon_kind;
#define PGW_RECON_KINDS (PGW_RECON_MEMBER_MISMATCH + 1)

/* "matched", "points_mismatch", ... as API.md spells them. */
const char *pgw_recon_kind_name(pgw_recon_kind kind);

typedef struct pgw_recon_summary {
    int64_t statement_rows; /* every data row read, malformed ones included */
    int64_t ledger_rows;
    int64_t count[PGW_RECON_KINDS]; /* rows per category */
    int64_t statement_points;       /* over the readable rows dated in the period */
    int64_t ledger_points;          /* over the period's ledger rows */
    /* The two totals by the category of the rows they add: each side's
     * per-category sums add up to its total, so statement_points -
     * ledger_points is the sum of the categories' differences. A side a
     * category's rows have not (a missing_in_statement's statement), or
     * whose points are not its total's (an unreadable row's, a ledger
     * event outside the period met by a row inside it), adds 0. */
    int64_t statement_points_of[PGW_RECON_KINDS];
    int64_t ledger_points_of[PGW_RECON_KINDS];
} pgw_recon_summary;

/* The rows of every category but matched: what a report lists. */
int64_t pgw_recon_exceptions(const pgw_recon_summary *sum);

/*
 * Fills *row with the next row and returns PGW_OK, or sets *end at the end
 * of the stream. A negative code stops the match (I/O, an out-of-order
 * source) with err filled.
 */
typedef int (*pgw_recon_next)(void *source, pgw_recon_row *row, bool *end, pgw_err *err);

/*
 * Called once per exception. `statement` or `ledger` is NULL when that side
 * has no row (missing_in_...). A negative return stops the match.
 */
typedef int (*pgw_recon_emit)(void *sink, pgw_recon_kind kind, const pgw_recon_row *statement,
                              const pgw_recon_row *ledger, pgw_err *err);

/*
 * Whether the member ids `statement` (as a statement row names it) and
 * `ledger` (as the log recorded the event's) are one member: merges, which
 * the caller can look up. Asked only when the two differ. A negative
 * return stops the match.
 */
typedef int (*pgw_recon_same_member)(void *members, const char *statement, const char *ledger,
                                     bool *same, pgw_err *err);

/* The log's event for statement row `s` at any time, into *out (*found
 * false: none). A negative return stops the match. */
typedef int (*pgw_recon_find_event)(void *events, const pgw_recon_row *s, pgw_recon_row *out,
                                    bool *found, pgw_err *err);

/* Shops named in a pgw_recon_unpaired call at most. */
#define PGW_RECON_SHOPS_LISTED 8

/*
 * Called for a statement row keyed by event_id alone whose event_id the
 * ledger has at `total` (>= 2) shops: the first `listed` of them (at most
 * PGW_RECON_SHOPS_LISTED, byte order) in shops[]. The row is then reported
 * as malformed_row (its problem says the same) and each of those ledger
 * rows as missing_in_statement. A negative return stops the match.
 */
typedef int (*pgw_recon_unpaired)(void *sink, const pgw_recon_row *statement,
                                  const char (*shops)[PGW_ID_MAX + 1], size_t listed, size_t total,
                                  pgw_err *err);

typedef struct pgw_recon_io {
    pgw_recon_next statement;
    void *statement_source;
    pgw_recon_next ledger;
    void *ledger_source;
    pgw_recon_emit emit;
    void *sink;
    /* The period the ledger rows were read for, [from, to); none when
     * to <= from. A statement row dated outside it is outside_period. */
    int64_t from, to;
    /* Optional (NULL: member ids that differ are different members). */
    pgw_recon_same_member same_member;
    void *members;
    /* Optional (NULL: none is looked for): the event of a statement row
     * dated inside the period that the period's ledger lacks, at any time
     * (its event dated just outside: a till's clock, a statement cut at
     * another hour). */
    pgw_recon_find_event find_event;
    void *events;
    /* The statement names each row's shop (in `source`): rows are keyed
     * by (event_id, shop), as the log's keys are, and both sides come in
     * that order. Otherwise by event_id alone, the shop unknown. */
    bool by_shop;
    /* The ledger rows may be several shops' (a whole channel's): keyed by
     * event_id alone, one event_id may then be at more than one shop, and
     * a statement row of it is paired with none (see pgw_recon_unpaired).
     * Off for one shop's, which saves a look ahead per row. */
    bool several_shops;
    pgw_recon_unpaired unpaired; /* optional: told of each such row */
} pgw_recon_io;

/* The member id a statement row names ("member_id:M1" gives "M1", as the
 * log keeps it), or NULL when it names none (a phone, a card, nothing):
 * the only member the matcher compares. */
const char *pgw_recon_member_id(const pgw_recon_row *statement);

/* Orders two rows by their key: event_id, then (by_shop) their source. */
int pgw_recon_key_cmp(const pgw_recon_row *a, const pgw_recon_row *b, bool by_shop);

/*
 * Runs the match to the end of both streams and fills *summary (zeroed
 * first). PGW_EINVAL when a statement row's event_id sorts before the one
 * read before it (err names the line: the caller sorts statements it
 * cannot vouch for); PGW_ESTATE when the ledger is out of order; PGW_ERANGE
 * when a points sum overflows; or whatever a callback returned.
 */
int pgw_reconcile(const pgw_recon_io *io, pgw_recon_summary *summary, pgw_err *err);

#endif
