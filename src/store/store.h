/*
 * store.h - the durable transfer log behind one interface.
 *
 * A pgw_store is an open database: SQLite today ("sqlite:PATH"), PostgreSQL
 * next ("postgresql://..."). Callers never see SQL, dialects or locking;
 * they see transactions and records of the ledger model (core/transfer.h,
 * core/ledger.h). Opening a store applies the forward-only schema
 * migrations it lacks, in order, each in its own transaction, and refuses a
 * database written by a newer pointsgw (its schema version is higher than
 * PGW_STORE_SCHEMA_VERSION) with a message saying so.
 *
 * Threads: a pgw_store is one connection, used by one thread at a time.
 * The writer thread owns one; readers open their own.
 *
 What it holds: the transfer log with its hash chain, idempotency records,
 * members (with their debt), lots, earns (what a purchase earned and how
 * much of it refunds have reversed), holds with the lot portions they
 * reserve, and the checks `pointsgw verify` runs. Identities and the
 * outbox arrive as further migrations.
 *
 * The store keeps rows consistent only as far as its constraints go; the
 * ledger rules (which lots a debit takes, what a refund reverses) are
 * applied by server/command.c with the planners of core/ledger.h.
 */
#ifndef PGW_STORE_STORE_H
#define PGW_STORE_STORE_H

#include "core/civil.h"
#include "core/error.h"
#include "core/identity.h"
#include "core/ledger.h"
#include "core/notice.h"
#include "core/otp.h"
#include "core/reconcile.h"
#include "core/rules.h"
#include "core/transfer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The schema this build writes; see store.c (MIGRATIONS) for the migrations. */
#define PGW_STORE_SCHEMA_VERSION 39
/* Longest database URL accepted (sql.h's PGW_SQL_URL_MAX, the same). */
#define PGW_STORE_URL_MAX 512
/* What serve's lock file adds to its SQLite database's path (main.c):
 * one of the database's files, which a backup may not be renamed over. */
#define PGW_STORE_SERVE_LOCK_SUFFIX "-serve.lock"
#define PGW_STORE_NONCES_SUFFIX     "-nonces" /* serve's nonces at a clean stop (auth.h) */
/* ...written first under this name, which a clean stop removes (auth.h) */
#define PGW_STORE_NONCES_NEW_SUFFIX PGW_STORE_NONCES_SUFFIX ".new"

typedef struct pgw_store pgw_store;
typedef struct pgw_verify_report pgw_verify_report; /* with pgw_store_verify */

/*
 * Opens the database at `url` and migrates it to PGW_STORE_SCHEMA_VERSION.
 * With `create` a missing database is created, and a SQLite file this user
 * may not write is PGW_ESTATE (`create` is a writer's open), as is a
 * folder it may not write (its -wal and -shm); without, a missing one is
 * PGW_ENOTFOUND (so `pointsgw verify` on a typo does not make an empty
 * database and call it valid). PGW_EINVAL for a URL of an unknown kind or
 * a login the PostgreSQL server refuses (sql.h), PGW_EUNAVAILABLE when the
 * database cannot be reached, PGW_EIO for a damaged SQLite file (said as
 * such, with what to do) or a full disk, PGW_ESTATE for a schema newer
 * than this build: the commands exit by these codes alike (main.c
 * exit_for). The caller closes *out with pgw_store_close.
 */
int pgw_store_open(const char *url, bool create, pgw_store **out, pgw_err *err);
void pgw_store_close(pgw_store *store);
/* The database as the store's messages begin with it ("NAME: ..."): a
 * SQLite file's path, or a PostgreSQL URL without its password (sql.h
 * pgw_sql_open). Owned by the store. Those failures are the database's,
 * and marked so (error.h pgw_err_set_database): ask the mark, not NAME. */
const char *pgw_store_name(const pgw_store *store);

/*
 * Opens the SQLite database at `url` read-only and as it is, for commands
 * that only read (`pointsgw verify`): nothing of the file is written, not
 * even on read-only media (sql.h pgw_sql_open_read_only). *version is its
 * schema version (0 when unread). PGW_ESTATE, nothing open, when that is
 * not PGW_STORE_SCHEMA_VERSION: an older database would have to be
 * migrated first (pgw_store_open does, where the file can be written).
 * PGW_EINVAL for a URL that is not sqlite:; otherwise as pgw_store_open
 * without `create`. The caller closes *out with pgw_store_close.
 */
int pgw_store_open_read_only(const char *url, int64_t *version, pgw_store **out, pgw_err *err);

/*
 * Copies the SQLite database at `url` to the file `path` (a link there:
 * to the file it names, the link kept), as one consistent snapshot while
 * a server may be writing: written beside that file, synced, and
 * renamed over it only once whole, its pages pass SQLite's quick_check
 * (run once, before the copy is opened) and, when it is of this build's
 * schema, its ledger passes pgw_store_verify's other checks into *report
 * (mode 0600). *version is the schema
 * version copied: the database is not migrated, and a copy of another
 * schema is not verified (*report untouched). PGW_ENOTFOUND when `url`
 * holds no pointsgw database, PGW_EINVAL for PostgreSQL (pg_dump does it),
 * for a `path` that is a folder and for one too long (before any copying),
 * PGW_EIO when the copy fails, the source is damaged or the copy does not
 * verify (then report->ok false and report->problem say why), the message
 * saying which (nothing is left at or beside `path`, which stays as it
 * was).
 *
 * `guard`, when not NULL, is told the copy's file as soon as it exists
 * (FILE.partial-XXXXXX: SQLite makes its -journal, -wal and -shm beside
 * it), then NULL once it is renamed or removed: a caller that may be
 * stopped by a signal removes them from its handler, which this function
 * cannot do (the process ends there). A caller that blocks its stopping
 * signals before the call and unblocks them in `guard` leaves no moment
 * in which a stop leaves the file.
 */
typedef void pgw_store_backup_guard(const char *partial);
int pgw_store_backup(const char *url, const char *path, int64_t *version, pgw_verify_report *report,
                     pgw_store_backup_guard *guard, pgw_err *err);

/*
 * SQLite: the connection's page cache, in KiB (PGW_STORE_CACHE_KIB_MIN..
 * PGW_STORE_CACHE_KIB, the default every connection opens with). A reader
 * whose queries scan (finance's reports) gains nothing from a large one:
 * a log bigger than it goes through it once, and SQLite keeps the pages
 * it filled until the connection closes. PostgreSQL: nothing to do.
 */
#define PGW_STORE_CACHE_KIB     65536
#define PGW_STORE_CACHE_KIB_MIN 256
int pgw_store_set_cache_kib(pgw_store *store, int64_t kib, pgw_err *err);

/* The schema version the database is at (after pgw_store_open: the build's). */
int pgw_store_schema_version(pgw_store *store, int64_t *out, pgw_err *err);

/*
 * Transactions. Everything between begin and commit becomes durable
 * together at commit (SQLite: WAL with synchronous=FULL, so an acknowledged
 * commit survives power loss; see pgw_store_defer_sync for the writer's
 * variant) or not at all. rollback is safe to call after a failed
 * statement. begin (a write transaction) is PGW_ESTATE, with nothing
 * begun, once a newer pointsgw has migrated the database since it was
 * opened: this one's writes would miss what the new schema keeps.
 */
int pgw_store_begin(pgw_store *store, pgw_err *err);
/* A read transaction: a consistent snapshot, no write lock (readers). */
int pgw_store_begin_read(pgw_store *store, pgw_err *err);
int pgw_store_commit(pgw_store *store, pgw_err *err);
int pgw_store_rollback(pgw_store *store, pgw_err *err);

/*
 * PostgreSQL: a lost connection makes the statement running fail with
 * PGW_EUNAVAILABLE (a transaction fails whole); the next begin, or the
 * next statement outside a transaction, reconnects, at most once per
 * backoff period (50 ms doubling to 5 s), failing fast in between.
 * pgw_store_ping does the same and runs a trivial query: whether the
 * database answers now (SQLite: PGW_EUNAVAILABLE when its file was deleted
 * or replaced under us, as pgw_store_begin). Not inside a transaction.
 */
int pgw_store_ping(pgw_store *store, pgw_err *err);
/* Whether the store is a server's (PostgreSQL), which can go away. */
bool pgw_store_is_remote(const pgw_store *store);
/* Whether the store's last failure was its disk full (sql.h
 * pgw_sql_failed_on_space): the notifier's failure, not a notice's. */
bool pgw_store_failed_on_space(const pgw_store *store);

/*
 * Whether a transaction is still open. A database may abandon one on its
 * own (SQLite does on a full disk or an I/O error); whoever batches
 * commands must check this after each, or the work before it would be
 * reported as committed while it was rolled back.
 */
bool pgw_store_in_transaction(pgw_store *store);

/*
 * Deferred durability, for a writer that overlaps the disk's flush of one
 * batch with applying the next. After pgw_store_defer_sync (called outside
 * a transaction), pgw_store_commit makes a transaction visible and
 * crash-consistent but not yet durable: a power cut can lose it until a
 * pgw_store_sync that began after the commit returned has returned. Nobody
 * may be told of a commit before that. store.c argues why this is the
 * guarantee of synchronous=FULL.
 *
 * pgw_store_sync may run on another thread while the connection is in use:
 * it touches only the store's own descriptor on the WAL. A failed sync is
 * final: the kernel may have dropped the pages it could not write, so the
 * caller must stop writing (PostgreSQL treats it the same way).
 */
int pgw_store_defer_sync(pgw_store *store, pgw_err *err);
int pgw_store_sync(pgw_store *store, pgw_err *err);

/*
 * Appends `t` to the log inside the open transaction: assigns t->id (the
 * next sequence number), links it after the last entry (t->prev_hash,
 * t->hash) and inserts it. Every other field must be filled and valid
 * (pgw_transfer_validate). The chain head is read inside the transaction,
 * so appends serialise on it. Each side that is a member's account
 * (member:<id>) also links it into that member's history, the member's
 * row made (its columns' defaults) when it has none yet: the row holds
 * the history's newest transfer, and a new member's row is written after
 * its first points (pgw_store_add_member, pgw_store_put_member: both
 * upsert).
 */
int pgw_store_append_transfer(pgw_store *store, pgw_transfer *t, pgw_err *err);

/*
 * Savepoints: a command inside a batch transaction runs between
 * savepoint and release; on failure rollback_to undoes only its writes, so
 * it fails alone and the rest of the batch commits.
 */
int pgw_store_savepoint(pgw_store *store, pgw_err *err);
int pgw_store_release(pgw_store *store, pgw_err *err);
int pgw_store_rollback_to(pgw_store *store, pgw_err *err);

/* What an idempotency key recorded the first time it was used. */
typedef struct pgw_idem_record {
    uint8_t fingerprint[PGW_HASH_LEN];
    int64_t first_transfer; /* id of the command's first transfer; 0 when none */
    int64_t transfer_count;
} pgw_idem_record;

/* A 409's message, the store's and the commands': the key whole (a cut
 * one, by "%.128s", left the client unable to tell which of its events it
 * was), its arguments PGW_IDEM_KEY_MAX and the key. The bare message fits
 * a pgw_err whole; what a command adds after it may be cut, the key never. */
#define PGW_STORE_KEY_CONFLICT "idempotency key %.*s was used before for a different request"
PGW_STATIC_ASSERT(sizeof(PGW_STORE_KEY_CONFLICT) + PGW_IDEM_KEY_MAX <= PGW_ERR_MSG_MAX,
                  "a conflict's message holds its key whole");

/*
 * Records `key` for a command whose canonical request hashes to
 * `fingerprint` and that has just appended `transfer_count` transfers from
 * `first_transfer` on, inside the open transaction. The key's uniqueness is
 * enforced by the database (a primary key), not by a look-up first, so two
 * writers can never both record it. New key: PGW_OK, *replayed false.
 * Key already there: *replayed true and *existing filled; the caller must
 * then undo its appends (pgw_store_rollback_to). Same fingerprint: PGW_OK
 * (a replay: answer with *existing). Other fingerprint: PGW_ECONFLICT
 * (idempotency_conflict), said by PGW_STORE_KEY_CONFLICT.
 *
 * Appending first and recording after costs a replay some wasted work but
 * saves every first-time command a second statement: replays are rare.
 * `answer` (NULL: none yet) is stored with the key for replays. `event`
 * (NULL for other commands) is what reconciliation reads of an event
 * whose key pgw_store_event_key made: it goes in the key's row, so that
 * an event writes one keyed row, not two (schema 21).
 */
typedef struct pgw_event_record pgw_event_record;
int pgw_store_record_key(pgw_store *store, const char *key, const uint8_t fingerprint[PGW_HASH_LEN],
                         int64_t first_transfer, int64_t transfer_count, int64_t now_us,
                         const char *answer, const pgw_event_record *event, bool *replayed,
                         pgw_idem_record *existing, pgw_err *err);

/* Looks a key up outside any command (reads, tests): *found false when unused. */
int pgw_store_find_key(pgw_store *store, const char *key, bool *found, pgw_idem_record *out,
                       pgw_err *err);

/* The id and hash of the last entry (0 and PGW_GENESIS_HASH when empty). */
int pgw_store_chain_head(pgw_store *store, int64_t *id, uint8_t hash[PGW_HASH_LEN], pgw_err *err);

/*
 * Reads up to `cap` transfers with id > after_id in id order into out and
 * sets *n (0 at the end). Pages keep memory bounded over any log size.
 */
int pgw_store_read_transfers(pgw_store *store, int64_t after_id, pgw_transfer *out, size_t cap,
                             size_t *n, pgw_err *err);

/* What `pointsgw verify` found. */
struct pgw_verify_report {
    int64_t transfers;    /* entries checked */
    int64_t accounts;     /* distinct accounts */
    int64_t points_moved; /* sum of all transfers' points */
    int64_t members;      /* members whose balance was checked against their lots */
    int64_t refunds;      /* refund events' keys checked against their purchases */
    uint8_t head[PGW_HASH_LEN];
    bool ok;
    int64_t bad_id; /* first broken entry, when !ok and known (else 0) */
    char problem[PGW_ERR_MSG_MAX];
};

/*
 * Recomputes the hash chain page by page (memory stays bounded whatever the
 * log's size). A broken chain is not an error of the call: it returns
 * PGW_OK with report->ok false and report->problem naming the first broken
 * entry. Then checks every member: balance (credits - debits of
 * member:<id>) == sum of the lots' left + held - debt. Errors (PGW_EIO ...)
 * mean the check could not run. Then the invariants over lots, holds and
 * refunds: every lot's expired points equal its EXPIRE transfers; every
 * hold reserves exactly its points while pending and nothing after, every
 * lot's held points equal the portions reserving it, a capture's REDEEM
 * transfer carries the captured points; every earn's reversals stay within
 * its funders' points, equal its REVERSAL transfers, and with what was
 * written off add up to floor(P*R/A); what the refund events' keys say
 * they wrote off (and refunded) is within their earn's, per earn for the
 * refunds its REVERSAL transfers name and in all, and equal to it when
 * those keys are all its refunds and all say it (report->refunds counts
 * the keys); what each spend (a redemption's or capture's key) took of
 * each lot and has not had back (spent_lots) is its REDEEM transfer's
 * points less its returns' (their keys return:<spend>/<id>), none below
 * 0, each lot its member's or that member's survivor's; a spend with no
 * rows (made before schema 37) is not checked unless it has returns;
 * each member's history (schema 39) links every transfer of the member
 * to the one before it, nothing else, and the member's row names its
 * newest. On
 * the chain's walk, no transfer after a close's chain head
 * is dated before that close (pgw_store_close_period): a period closed
 * stayed closed. Last, on SQLite, the file's own
 * structure (SQLite's quick_check), tables the checks above do not read
 * included.
 */
int pgw_store_verify(pgw_store *store, pgw_verify_report *report, pgw_err *err);

/* ---- closed periods ---------------------------------------------------------- */

/*
 * Finance closes a period: whatever is dated before the close (a
 * transfer's occurred_at, an event's) is final, and no write may change
 * it. Closes are kept (schema 34), each with when it was made and the
 * chain head it saw; the newest is the one in force.
 */
#define PGW_PERIOD_CLOSES_MAX 36500 /* a century of daily closes: what verify reads */

typedef struct pgw_period_close {
    int64_t before;        /* unix seconds: what is dated before it is closed; 0: never closed */
    int64_t closed_at_us;  /* when it was closed (the closing command's clock) */
    int64_t last_transfer; /* the chain head's id when it was closed (0: an empty log) */
} pgw_period_close;

/*
 * The close in force in the open write transaction: read by
 * pgw_store_begin under the write lock (SQLite's write transaction,
 * PostgreSQL's chain lock), with the schema version in one statement, so
 * a close and a write racing cannot both win and a batch pays for it
 * once. 0 when none, and outside a write transaction.
 * pgw_store_append_transfer refuses a transfer dated before it
 * (PGW_ECLOSED), whatever wrote it.
 */
int64_t pgw_store_closed_before(const pgw_store *store);

/* The newest close (all 0 when the period was never closed); any
 * transaction or none. */
int pgw_store_period_close(pgw_store *store, pgw_period_close *out, pgw_err *err);

/*
 * Inside the open write transaction: closes the period before `before`
 * (unix seconds) as of `now_us`. PGW_EINVAL, nothing changed, for a
 * moment not past (<= 0, or after now_us) or earlier than the close in
 * force: a close only moves later. The same moment again: PGW_OK and
 * *moved false. PGW_ESTATE, nothing changed, while work dated before it
 * is not written yet: a lot due before it with points left, a hold
 * pending past a deadline before it (the message names one and says to
 * run `pointsgw expire --as-of` first). PGW_EFULL past
 * PGW_PERIOD_CLOSES_MAX closes. The messages name times in `tz`, the
 * mall's zone finance writes them in (NULL: unix seconds; the store has
 * no zone of its own).
 */
int pgw_store_close_period(pgw_store *store, int64_t before, int64_t now_us, const pgw_tz *tz,
                           bool *moved, pgw_err *err);

/* ---- members and lots (all inside the open transaction) ---------------- */

/* A member's debt; *found false (and *debt 0) for a member not seen yet. */
int pgw_store_member_debt(pgw_store *store, const char *member, bool *found, int64_t *debt,
                          pgw_err *err);
/* Creates the member or sets its debt (>= 0). */
int pgw_store_put_member(pgw_store *store, const char *member, int64_t debt, int64_t now_us,
                         pgw_err *err);
/* Inserts a lot (lot->id unused: the database numbers it) and adds its
 * left and held points to its member's sums. left + held <= points,
 * points > 0. Its id is not returned: a member's lots are found
 * by pgw_store_spendable_lots, due ones by pgw_store_due_lots. */
int pgw_store_insert_lot(pgw_store *store, const pgw_lot *lot, pgw_err *err);
/* Reads one lot, how many of its points have expired so far, and when
 * points last came back to its free part (*back_at; 0: none since schema
 * 38; back_at may be NULL). */
int pgw_store_get_lot(pgw_store *store, int64_t id, bool *found, pgw_lot *out, int64_t *expired,
                      int64_t *back_at, pgw_err *err);
/* The occurred_at of the newest MERGE transfer into `member`'s account (0
 * when none was merged into it): an expiry of a lot a merge brought is not
 * dated before it (command.c date_expiry). */
int pgw_store_merged_in_at(pgw_store *store, const char *member, int64_t *at, pgw_err *err);
/* The merge that took `member` into another member (*found false when
 * none wrote a transfer: a member merged with a balance of 0): its
 * occurred_at and the member it went into, then alive. A merged-in lot's
 * expiry follows them from its earner to its member (command.c
 * date_expiry). */
int pgw_store_merge_of(pgw_store *store, const char *member, bool *found, int64_t *at,
                       char into[PGW_ID_MAX + 1], pgw_err *err);
/* Moves `points` of a lot's free part to expired (left -= points, expired += points)
 * and counts them on the lot's earn (its expired). */
int pgw_store_expire_lot_points(pgw_store *store, int64_t id, int64_t points, pgw_err *err);
/*
 * Up to `cap` lots with free points that are due at `now` (expires_at <=
 * now, left > 0) and id > after_id, in id order. Reads; any thread with
 * its own store.
 */
int pgw_store_due_lots(pgw_store *store, int64_t now, int64_t after_id, pgw_lot *out, size_t cap,
                       size_t *n, pgw_err *err);

/* ---- spending: figures and lots in consumption order -------------------- */

typedef struct pgw_member_figures {
    int64_t balance;   /* lots' left + held - debt */
    int64_t pending;   /* reserved by holds still pending at `now` */
    int64_t available; /* balance - pending - points of lots past their expiry at `now` not
                          reserved by a pending hold (the sweep has yet to move them) */
    int64_t debt;
    int64_t free;      /* lots' left, not past their expiry (what a spend may take) */
    int64_t unexpired; /* balance - those expired points: the balance a notice tells */
} pgw_member_figures;

/* A member's figures at `now`; *found false (all 0) for an unknown member. */
int pgw_store_member_figures(pgw_store *store, const char *member, int64_t now, bool *found,
                             pgw_member_figures *out, pgw_err *err);

/*
 * Up to `cap` of `member`'s lots with free points not expired at `now`, in
 * consumption order (pgw_lot_order), strictly after `after` (NULL: from the
 * first). Feed each page to pgw_lots_plan_take; memory stays bounded however
 * many lots a member has.
 */
int pgw_store_spendable_lots(pgw_store *store, const char *member, int64_t now,
                             const pgw_lot *after, pgw_lot *out, size_t cap, size_t *n,
                             pgw_err *err);

/* Adds d_left and d_held to a lot; PGW_ESTATE when either would go negative. */
int pgw_store_move_lot_points(pgw_store *store, int64_t id, int64_t d_left, int64_t d_held,
                              pgw_err *err);
/* Gives `points` (> 0) back to a lot's free part at `at` (a return's
 * date): its back_at becomes `at` when that is later, so that no expiry of
 * them is dated before they were back (command.c date_expiry).
 * PGW_ESTATE when the lot is not there; a lot given more than its points
 * breaks its CHECK (an error too). */
int pgw_store_give_back_lot_points(pgw_store *store, int64_t id, int64_t points, int64_t at,
                                   pgw_err *err);

/* ---- earns: what refunds of a purchase may reverse ------------------------ */

/*
 * One purchase's earn. Its funders are its transfers first_transfer ..
 * first_transfer + n_funders - 1 (one per funder, ledger.h); reversed[i] is
 * what refunds have reversed of funder i so far.
 */
typedef struct pgw_earn_record {
    char key[PGW_IDEM_KEY_MAX + 1]; /* the purchase's idempotency key */
    char member[PGW_ID_MAX + 1];
    int64_t amount_fen; /* > 0 */
    int64_t points;     /* earned in total */
    int64_t refunded_fen;
    int64_t written_off; /* reversal not taken: lapsed, or not covered (clamp) */
    int64_t expired;     /* points its lot lost to expiry */
    int64_t first_transfer;
    size_t n_funders;
    int64_t reversed[PGW_EARN_FUNDERS_MAX];
    int64_t occurred_at; /* the purchase's time (its transfer's when its key predates schema
                            13); 0 for an unearned purchase whose key does not say */
} pgw_earn_record;

int pgw_store_insert_earn(pgw_store *store, const pgw_earn_record *earn, pgw_err *err);
int pgw_store_get_earn(pgw_store *store, const char *key, bool *found, pgw_earn_record *out,
                       pgw_err *err);
/*
 * A purchase that earned nothing (no transfer, so no earn) as an earn of
 * no points and no funders: its buyer (followed through merges), amount
 * and what refunds took of it. *found false when `key` is not such a
 * purchase. pgw_store_update_earn writes its refunded_fen back.
 */
int pgw_store_get_unearned(pgw_store *store, const char *key, bool *found, pgw_earn_record *out,
                           pgw_err *err);
/* Points left in earn `e`'s lot that are due at `now` (expires_at <= now)
 * but not yet moved by an expiry run: expired all the same. */
int pgw_store_earn_lot_due(pgw_store *store, const pgw_earn_record *e, int64_t now, int64_t *points,
                           pgw_err *err);
/* Earn `e`'s lot when it has free points not due at `now` (*id 0 when
 * not): its id and those points. */
int pgw_store_earn_lot(pgw_store *store, const pgw_earn_record *e, int64_t now, int64_t *id,
                       int64_t *left, pgw_err *err);
/* Writes refunded_fen, written_off and every funder's reversed (an earn of
 * no funders, from pgw_store_get_unearned: refunded_fen alone). */
int pgw_store_update_earn(pgw_store *store, const pgw_earn_record *earn, pgw_err *err);

/* ---- holds and the lot portions they reserve ------------------------------ */

typedef struct pgw_hold_record {
    char id[PGW_REFERENCE_MAX + 1];
    char member[PGW_ID_MAX + 1];
    char shop[PGW_ID_MAX + 1];
    int64_t points;   /* reserved when created */
    int64_t captured; /* spent by the capture (0 unless captured) */
    int64_t deadline; /* unix seconds; pending at t < deadline only */
    int64_t created_at;
    int64_t capture_transfer; /* the REDEEM transfer of the capture, 0 when none */
    pgw_hold_state state;     /* as stored: read it through pgw_hold_state_at */
} pgw_hold_record;

int pgw_store_insert_hold(pgw_store *store, const pgw_hold_record *hold, pgw_err *err);
int pgw_store_get_hold(pgw_store *store, const char *id, bool *found, pgw_hold_record *out,
                       pgw_err *err);
/* Writes state, captured and capture_transfer. */
int pgw_store_update_hold(pgw_store *store, const pgw_hold_record *hold, pgw_err *err);

/* Adds `points` (negative: gives back; PGW_ESTATE beyond what it holds) to
 * what hold `hold` reserves of lot `lot`. The lot's own left and held move
 * separately, with pgw_store_move_lot_points. */
int pgw_store_add_portion(pgw_store *store, const char *hold, int64_t lot, int64_t points,
                          pgw_err *err);

typedef struct pgw_portion {
    pgw_lot lot; /* as stored now */
    int64_t points;
} pgw_portion;

/* Up to `cap` of a hold's non-empty portions in their lots' consumption
 * order, after lot `after` (NULL: from the first). */
int pgw_store_hold_portions(pgw_store *store, const char *hold, const pgw_lot *after,
                            pgw_portion *out, size_t cap, size_t *n, pgw_err *err);

/* Returns every point a hold still reserves to its lots (held -> left) at
 * `at` (when it was captured or voided, or its deadline), each lot's
 * back_at moved to `at` when that is later (pgw_store_give_back_lot_points
 * says why), and empties its portions. */
int pgw_store_release_hold(pgw_store *store, const char *hold, int64_t at, pgw_err *err);

/* ---- what spends took of lots (schema 37), for returns ------------------ */

/* Adds `points` (negative: gives back; PGW_ESTATE beyond what is recorded)
 * to what spend `spend` (a redemption's or a capture's key) took of lot
 * `lot`. The lot itself moves separately (pgw_store_move_lot_points). */
int pgw_store_add_spent(pgw_store *store, const char *spend, int64_t lot, int64_t points,
                        pgw_err *err);

/* Up to `cap` of a spend's lots it has points of still to give back, in
 * reverse consumption order (what it took last first): points are what it
 * took of the lot less what returns gave back. */
int pgw_store_spent_lots(pgw_store *store, const char *spend, pgw_portion *out, size_t cap,
                         size_t *n, pgw_err *err);

/* What spend `spend` took of lots and has not had back; *recorded false
 * when it recorded no lot at all (a spend made before schema 37, or none). */
int pgw_store_spent_left(pgw_store *store, const char *spend, int64_t *out, bool *recorded,
                         pgw_err *err);

/* Up to `cap` pending holds with deadline <= now, by deadline then id, after
 * `after` (NULL: from the first): the order of every release of due holds
 * (pgw_store_member_due_holds too, and the reference ledger), since which
 * hold's points repay a member's debt first decides which lot keeps its. */
int pgw_store_due_holds(pgw_store *store, int64_t now, const pgw_hold_record *after,
                        pgw_hold_record *out, size_t cap, size_t *n, pgw_err *err);

/* Up to `cap` of `member`'s pending holds with deadline <= now, by deadline
 * then id: the order of the index it reads, so no sort (which in SQLite
 * is a temporary B-tree per call, and this runs for every spend). */
int pgw_store_member_due_holds(pgw_store *store, const char *member, int64_t now,
                               pgw_hold_record *out, size_t cap, size_t *n, pgw_err *err);

/* Members merged into one whose history is read with its own. */
#define PGW_HISTORY_MERGED_MAX 63

/* Up to `cap` of the members merged into `member`, lowest ids first (a
 * merged id points at its survivor, however many merges followed). */
int pgw_store_merged_members(pgw_store *store, const char *member, char (*out)[PGW_ID_MAX + 1],
                             size_t cap, size_t *n, pgw_err *err);

/* Up to `cap` of a member's transfers (either side) with id < before_id (0:
 * the newest), newest first, with those of the members merged into it (up
 * to PGW_HISTORY_MERGED_MAX of them, lowest ids first): one person's
 * history, whichever identity earned it. Each account's page is a walk
 * down its chain (schema 39) from before_id's transfer when that is the
 * account's (a page's cursor), else from its newest: a merged member's
 * page may walk past the transfers newer than before_id. */
int pgw_store_member_history(pgw_store *store, const char *member, int64_t before_id,
                             pgw_transfer *out, size_t cap, size_t *n, pgw_err *err);

/* Points of a member's lots that expire at one moment (for the member view). */
typedef struct pgw_expiring {
    int64_t expires_at;
    int64_t points; /* left: held points do not expire while held */
} pgw_expiring;

/* Up to `cap` next expiry moments after `now` with points, soonest first. */
int pgw_store_member_expiring(pgw_store *store, const char *member, int64_t now, pgw_expiring *out,
                              size_t cap, size_t *n, pgw_err *err);

/* ---- identities (core/identity.h pgw_identity_key; util/vault.h makes them) ---- */

/* Whose identity this is; *found false when nobody's. */
int pgw_store_find_identity(pgw_store *store, const pgw_identity_key *key, bool *found,
                            char member[PGW_ID_MAX + 1], pgw_err *err);
/* Makes the identity `member`'s; PGW_ECONFLICT when it is already someone's.
 * A WeChat openid makes the member's notices held for SMS due again
 * (core/notice.h PGW_NOTICE_HELD), its app no longer excluded from them:
 * WeChat may reach them now. */
int pgw_store_bind_identity(pgw_store *store, const pgw_identity_key *key, const char *member,
                            int64_t now_us, pgw_err *err);
/* Whether a member holds a WeChat identity (an openid, a unionid). */
int pgw_store_member_on_wechat(pgw_store *store, const char *member, bool *on_wechat, pgw_err *err);
/* The identities a notice reaches `member` by, at most one of each: its
 * openid of mini program `mp_appid`, of official account `oa_appid`, and
 * its newest phone; *n of them in out, in that order (those it has). */
int pgw_store_member_reach(pgw_store *store, const char *member, const char *mp_appid,
                           const char *oa_appid, pgw_identity_key out[3], size_t *n, pgw_err *err);
/* Up to `cap` of a member's identities, ordered by kind, cards last. */
int pgw_store_member_identities(pgw_store *store, const char *member, pgw_identity_key *out,
                                size_t cap, size_t *n, pgw_err *err);
/* The first and the last stored phone by blind index (*n 2; the same one
 * twice when there is one; 0 when none), read from the primary key's index
 * (cheap at any size): the start's check of the phone keys (server/api.h
 * pgw_api_check_phone_keys). */
int pgw_store_some_phones(pgw_store *store, pgw_identity_key out[2], size_t *n, pgw_err *err);

/* ---- merges -------------------------------------------------------------- */

/* The member `member` was merged into ("" when none, or unknown). */
int pgw_store_merged_into(pgw_store *store, const char *member, char into[PGW_ID_MAX + 1],
                          pgw_err *err);
/* Replaces `member` by the member it was merged into, hop by hop (at most
 * PGW_MERGE_HOPS_MAX: a longer chain is a bug, PGW_EIO); the first id is
 * kept in `first` when it is not NULL and still empty. */
#define PGW_MERGE_HOPS_MAX 16
int pgw_store_survivor(pgw_store *store, char member[PGW_ID_MAX + 1], char first[PGW_ID_MAX + 1],
                       pgw_err *err);
/*
 * Moves everything `from` has to `into`: lots (with their expiry), holds,
 * earns (so refunds find their buyer), identities, activity days, the
 * expiry days it was reminded of (one row when both were); marks
 * `from` merged into `into` with no debt left, and the members merged into
 * `from` before as merged into `into` (a merged id is one hop from its
 * survivor, however many merges followed). `into` is a survivor. The
 * caller moves the balance (a MERGE transfer) and the debt and flags first.
 * Notices held for SMS of either are due again (core/notice.h
 * PGW_NOTICE_HELD), neither WeChat app excluded: the survivor may be
 * reached by WeChat.
 */
int pgw_store_merge_rows(pgw_store *store, const char *from, const char *into, pgw_err *err);

/* The key that claimed a receipt number at a shop (pgw_store_claim_receipt),
 * "" when none did. */
int pgw_store_receipt_claimant(pgw_store *store, const char *shop, const char *receipt,
                               char key[PGW_IDEM_KEY_MAX + 1], pgw_err *err);

/* Claims a receipt number at a shop for key `key`; PGW_ECONFLICT when it
 * was claimed before (by another key: replays never get here). */
int pgw_store_claim_receipt(pgw_store *store, const char *shop, const char *receipt,
                            const char *key, pgw_err *err);
/* Members enrolled from `address` in `hour` (unix seconds / 3600), and one more. */
int pgw_store_enrolments(pgw_store *store, const char *address, int64_t hour, int64_t *members,
                         pgw_err *err);
int pgw_store_add_enrolment(pgw_store *store, const char *address, int64_t hour, pgw_err *err);
/* Deletes at most `limit` (> 0) rows of hours before `before_hour`, which
 * no limit reads any more; *deleted: how many went. */
int pgw_store_prune_enrolments(pgw_store *store, int64_t before_hour, int64_t limit,
                               int64_t *deleted, pgw_err *err);
/* Deletes at most `limit` (> 0) expiry reminders' rows of local days
 * before `before_day` (days since 1970 in the mall's zone), the earliest
 * first: no lot expires on them any more, so none can be reminded again. */
int pgw_store_prune_reminders(pgw_store *store, int64_t before_day, int64_t limit, int64_t *deleted,
                              pgw_err *err);
/* When a member was created (microseconds; 0 for an unknown member). */
int pgw_store_member_created(pgw_store *store, const char *member, int64_t *created_us,
                             pgw_err *err);

/* Who referred `member` ("" when nobody). */
int pgw_store_referred_by(pgw_store *store, const char *member, char by[PGW_ID_MAX + 1],
                          pgw_err *err);
/* Records that `by` referred `member` (the member must exist). */
int pgw_store_set_referred_by(pgw_store *store, const char *member, const char *by, pgw_err *err);

/* ---- WeChat: sessions, subscription quota, followers, tokens ------------- */

#define PGW_SESSION_ID_LEN   32 /* hex of 16 random bytes */
#define PGW_QUOTA_MAX        50 /* one-time sends kept per member and template */
#define PGW_TEMPLATES_SHOWN  8  /* subscription quotas a member read returns */
#define PGW_TEMPLATE_KEY_MAX 64

/* A mini-program session (the signed token names it; see server/session.h). */
int pgw_store_insert_session(pgw_store *store, const char *id, const char *member,
                             const char *appid, int64_t created_at, int64_t expires_at,
                             pgw_err *err);
/* Whether session `id` exists, was issued to `member`, is not revoked and
 * has not expired at `now` (the member check means a token re-signed with
 * another member's id is worthless even to someone holding the key). */
int pgw_store_session_valid(pgw_store *store, const char *id, const char *member, int64_t now,
                            bool *valid, pgw_err *err);
/* Revokes it (again is fine). */
int pgw_store_revoke_session(pgw_store *store, const char *id, int64_t now, pgw_err *err);
/* Deletes at most `limit` (> 0) sessions that expired before `before`,
 * the earliest first (a revoked one stays until then: its token is still
 * signed and unexpired); *deleted: how many went. */
int pgw_store_prune_sessions(pgw_store *store, int64_t before, int64_t limit, int64_t *deleted,
                             pgw_err *err);

/* Adds n one-time sends of `template_id` for `member`'s mini-program
 * `openid` ("": not known, as from a session token of the first format),
 * kept at most PGW_QUOTA_MAX per openid; *quota is what the member has now,
 * all openids together. The member's notices held for SMS are due again
 * (core/notice.h PGW_NOTICE_HELD), the mini program no longer excluded from
 * them (its 43101 is over). */
int pgw_store_add_quota(pgw_store *store, const char *member, const char *openid,
                        const char *template_id, int64_t n, int64_t *quota, pgw_err *err);
/* Where a subscribe message of `template_id` to `member` goes: the
 * member's openid of mini program `mp_appid` that has quota of its own,
 * else, when quota of openid "" is left, the member's newest openid there.
 * quota_openid: the openid whose quota it uses ("" for the latter). Both
 * "" when none has quota. */
int pgw_store_mp_target(pgw_store *store, const char *member, const char *mp_appid,
                        const char *template_id, char openid[PGW_OPENID_MAX + 1],
                        char quota_openid[PGW_OPENID_MAX + 1], pgw_err *err);
typedef struct pgw_subscription {
    char template_id[PGW_TEMPLATE_KEY_MAX + 1];
    int64_t quota;
} pgw_subscription;
/* The one-time sends of `template_id` `member` has, all its openids (0: none). */
int pgw_store_quota(pgw_store *store, const char *member, const char *template_id, int64_t *quota,
                    pgw_err *err);

/* Records that openid follows (or no longer follows) the official account
 * appid as of `at`; an older change than the one stored is ignored. A
 * follow makes the notices held for SMS of whoever holds openid due again
 * (core/notice.h PGW_NOTICE_HELD), the official account no longer
 * excluded from them (its 43004 is over); so does a follower noted below. */
int pgw_store_set_follow(pgw_store *store, const char *appid, const char *openid, bool following,
                         int64_t at, pgw_err *err);
/* Records that openid follows appid as of `at` when nothing is recorded
 * of it (a follower from before the gateway, whose subscribe was never
 * pushed); *noted: it was recorded now. */
int pgw_store_note_follower(pgw_store *store, const char *appid, const char *openid, int64_t at,
                            bool *noted, pgw_err *err);
/* Forgets the follow of `at` when openid's state is still that one
 * (following as of `at`): a note (pgw_store_note_follower) whose link
 * failed for the moment, which the next push notes again and links; or
 * a follow WeChat's user/info then said was over (subscribe 0). */
int pgw_store_forget_follower(pgw_store *store, const char *appid, const char *openid, int64_t at,
                              pgw_err *err);
/* Whether any of member's official-account openids follows. */
int pgw_store_member_follows(pgw_store *store, const char *member, bool *follows, pgw_err *err);

/* The access-token cache shared by instances (adapters/wechat/client.h's
 * pgw_wx_token_cache; each runs in its own short transaction, so call
 * them on a connection of their own, never inside the writer's). */
int pgw_store_token_load(pgw_store *store, const char *appid, char *token, size_t cap,
                         int64_t *expires_at, pgw_err *err);
int pgw_store_token_lease(pgw_store *store, const char *appid, int64_t now, int64_t until,
                          bool *taken, pgw_err *err);
int pgw_store_token_save(pgw_store *store, const char *appid, const char *token, int64_t expires_at,
                         pgw_err *err);
int pgw_store_token_forget(pgw_store *store, const char *appid, const char *token, pgw_err *err);
int pgw_store_token_release(pgw_store *store, const char *appid, pgw_err *err);

/* ---- notifications: the outbox ---------------------------------------- */

#define PGW_NOTICE_KIND_MAX  24
#define PGW_NOTICE_ERROR_MAX 200
#define PGW_PROVIDER_ID_MAX  64

typedef struct pgw_notice {
    int64_t id;
    char member[PGW_ID_MAX + 1];
    char kind[PGW_NOTICE_KIND_MAX + 1]; /* config.h pgw_notice_kind names: "points_arrived" ... */
    int64_t points, balance;
    char shop[PGW_ID_MAX + 1];
    char detail[PGW_NAME_MAX + 1]; /* tier_changed: the new tier's display name; "" otherwise */
    int64_t created_at, due_at, updated_at;
    int64_t about_at; /* what it is about happened (or, expiring: will) then */
    char state[16];   /* pending, sending, sent, dead, skipped */
    char channel[16];
    int64_t excluded; /* core/notice.h channel mask */
    int64_t attempts;
    char last_error[PGW_NOTICE_ERROR_MAX + 1];
    char provider_id[PGW_PROVIDER_ID_MAX + 1];
    /* An arrival a later notice of its member made due at once
     * (pgw_store_enqueue_notice): it tells the balance it was queued
     * with, whenever sent (notifier.c current_balance). Until a notice
     * of its member queued after it is sent, while it still waits (held
     * for SMS, a retry), telling another balance, or one queued before it
     * that read the balance it told when sent: the member has read it,
     * and it then tells the balance when sent (the store clears the mark
     * when that notice is recorded, the courier in the rest of its batch
     * at once). */
    bool hurried;
    /* Queued for a member merged since (pgw_store_merge_rows moved it to
     * the survivor), or still waiting when a notice of its member was
     * sent telling another balance it read as it was sent
     * (pgw_store_finish_notice): it tells the balance when sent, never
     * the one it was queued with, hurried or not. */
    bool merged;
    /* Set by the courier (notifier.c current_balance), never stored: the
     * balance it tells was read as it was sent, not the one it was queued
     * with. Recorded sent, such a notice may tell a later balance than a
     * notice of its member still waiting (pgw_store_finish_notice). */
    bool read_when_sent;
    /* Set by the courier (notifier.c unmark_rest_of_batch), never stored:
     * a notice of its member sent before it in the batch told another
     * balance, read as it was sent (or queued after it, this one
     * hurried), so the member has read past the balance this one was
     * queued with: it reads the balance when sent, as `merged`. */
    bool read_past;
    /* Set by the courier (notifier.c deliver), never stored: a channel
     * of the attempt just made, not sent, got no answer saying it failed
     * (a timeout, an answer lost on its way back, an SMS that left and was
     * not refused), whatever the channels after it did and whether the
     * notice is retried or dead: the member may have read it
     * (pgw_store_notice_told). */
    bool may_have_reached;
} pgw_notice;

/*
 * Queues a notice inside the writer's transaction. With coalesce_s > 0 a
 * pending notice of the same member, kind and shop still inside its window
 * (due_at > now) takes the points and the new balance instead, so that
 * arrivals within the window become one notice with their total; a new
 * one is due at now + coalesce_s. One held for SMS (quiet hours, a
 * number's limit), whatever channels refused it before, takes them too
 * and is due again at now + coalesce_s, so its channel is chosen again.
 * Never one that may have reached the member: an attempt of it counted
 * (a failure that may have been a send), one made before an operator's
 * retry (core/notice.h PGW_NOTICE_MAY_HAVE_REACHED), or its SMS may have
 * gone. And only the member's newest notice: a notice behind a later one
 * would tell the balance after an event that the later one (sent after
 * it) does not count yet.
 * A notice of another kind (a reversal, a redemption, a tier change) first
 * makes the member's arrivals still waiting out their window due at once
 * and marks them hurried (not one held for SMS, waiting for a retry, or
 * that may have reached the member): a courier's claim takes notices by
 * due time, then id, so they go before it, in the order they were queued.
 */
int pgw_store_enqueue_notice(pgw_store *store, const char *member, const char *kind, int64_t points,
                             int64_t balance, const char *shop, const char *detail, int64_t now,
                             int64_t coalesce_s, pgw_err *err);
/* For the notifier's own connection: commits without waiting for the disk
 * (synchronous=NORMAL). Its writes are delivery state, not the ledger: a
 * power cut can lose the last few, which costs a notice sent again (the
 * provider's de-dup key still holds) or a quota unit given back, never a
 * notice (those are written, and synced, by the writer). It also leaves
 * checkpoints to the writer's connection: a courier committing often would
 * otherwise run them, and wait for the disk after all. */
int pgw_store_relax_sync(pgw_store *store, pgw_err *err);
/* Renewed while a batch is worked (notifier.c keep_leases), once under its
 * LEASE_MARGIN_S (34 s) is left: twice that, so renewals stay rare. */
#define PGW_NOTICE_LEASE_S 70
/* A notice due as it was queued and sent, on its first attempt, less than
 * this many seconds (of the courier's clock) after its created_at is "sent
 * at once": it tells the balance it was queued with (notifier.c
 * current_balance). pgw_store_finish_notice looks that far back, and
 * further for the clocks, for such notices a read went past. */
#define PGW_NOTICE_AT_ONCE_S 2

/* Claims up to cap notices due at `now` for `owner` (a notifier instance's
 * id): pending -> sending, attempts + 1, leased for PGW_NOTICE_LEASE_S. */
int pgw_store_claim_notices(pgw_store *store, const char *owner, int64_t now, pgw_notice *out,
                            size_t cap, size_t *n, pgw_err *err);
/* Records how an attempt went (state, channel, excluded, due_at, attempts,
 * error, provider id) if the notice is still owner's claim; PGW_ESTATE
 * when its lease ran out and another instance took it. The row's
 * PGW_NOTICE_MAY_HAVE_REACHED stays, whatever `n` says. */
/* (state, channel, exclusions, due time, error, provider id, attempts and
 * the balance told, as `n` has them; but a notice recorded held for SMS
 * that a wake came for during the claim (pgw_store_add_quota ...; core/
 * notice.h PGW_NOTICE_WOKEN) is due at once, the channels it reopened no
 * longer excluded, as if the wake had come just after. The same holds for
 * a claim given back or released below, untried.) A notice recorded sent
 * clears the hurried mark of its member's arrivals still waiting before it
 * that were queued with another balance than it told (pgw_notice.hurried);
 * one that read that balance as it was sent (pgw_notice.read_when_sent)
 * clears those of the arrivals waiting after it too, and every notice of
 * its member still waiting that could tell the balance it was queued
 * with, queued with another balance, tells the balance when sent from
 * then on, hurried or not, sent at once or not (pgw_notice.merged): those
 * among the member's 32 newest notices (where a hurry can still mark an
 * arrival) and those queued since PGW_NOTICE_AT_ONCE_S + 120 s before
 * `now` (which may still be sent at once, by clocks up to 60 s apart),
 * however many notices of the
 * member came after them; past 4,096 such, every notice of the member
 * still waiting. One recorded for a retry after an attempt that may have
 * reached the member does the same, as if sent (pgw_store_notice_told). */
int pgw_store_finish_notice(pgw_store *store, const char *owner, const pgw_notice *n, int64_t now,
                            pgw_err *err);
/* Whether the member may have read the balance notice `n` told in the
 * attempt just made: it was sent, or the attempt may have reached the
 * member (pgw_notice.may_have_reached: WeChat handled a send whose answer
 * was lost; an SMS left), retried or dead after it. The courier's batch
 * and pgw_store_finish_notice count it as told either way; an attempt
 * that failed for sure is not (a hurried arrival's retry keeps its
 * balance). */
bool pgw_store_notice_told(const pgw_notice *n);
/* Renews owner's claims on notices ids[0..n) (n at most
 * PGW_STORE_RENEW_MAX: a courier's batch) before an attempt, before and
 * while their record is written, in one statement (one wait for a lock,
 * not one a claim); renewed[i] false for one no longer owner's (its lease
 * ran out and another instance took it). Never behind the write
 * lock (pgw_store_begin's, which a record may wait PGW_STORE_LOCK_WAIT_S
 * for): on PostgreSQL transactions of its own, outside any of the
 * caller's, their lock waits PGW_STORE_MARK_WAIT_S at most in all (then
 * PGW_EUNAVAILABLE), none holding a row while it waits for another (what
 * nobody holds renewed at once, each other claim then waited for alone:
 * the writer's transactions lock several of a member's notices); on
 * SQLite one statement, its busy handler's wait bounded the same (as the
 * marks' below).
 * Regression: renewed under that lock, a renewal waiting for it let the
 * lease run out, and the sweep took back a notice already delivered. */
#define PGW_STORE_RENEW_MAX 4
int pgw_store_renew_claims(pgw_store *store, const char *owner, const int64_t *ids, size_t n,
                           int64_t now, bool *renewed, pgw_err *err);
/* Marks owner's claim on notice `n` (as claimed: its id and attempts) as
 * one whose SMS may have gone (core/notice.h PGW_NOTICE_SMS_MAY_HAVE_GONE),
 * before the request leaves, with the channels n excludes (and
 * PGW_NOTICE_GAVE_UP): a claim that lapses keeps them, so WeChat channels
 * its attempt left out before the SMS stay out; one recorded has the
 * courier's exclusions instead. PGW_ESTATE when that
 * claim is over, or its lease does not run until need_s after `now` (the
 * SMS answered; a lease run out, not yet swept, included): the SMS must
 * not leave then. */
int pgw_store_sms_leaving(pgw_store *store, const char *owner, const pgw_notice *n, int64_t now,
                          int64_t need_s, pgw_err *err);
/* How long pgw_store_begin waits for the write lock on PostgreSQL (the
 * chain lock, or a row lock after it) before PGW_EUNAVAILABLE; SQLite's
 * busy handler waits less (5 s). */
#define PGW_STORE_LOCK_WAIT_S 30
/* How long either mark (above, below) or a renewal waits for a lock at
 * most, outside any transaction of the caller's (on PostgreSQL it runs in
 * its own; on SQLite the busy handler gives up then): then
 * PGW_EUNAVAILABLE, as a lock timeout. */
#define PGW_STORE_MARK_WAIT_S 2
/* The same before a WeChat message of `channel` (PGW_CHANNEL_MP or
 * PGW_CHANNEL_OA) leaves: marked as one that may have gone by it (core/
 * notice.h PGW_NOTICE_WX_MAY_HAVE_GONE), so a claim that lapses (its
 * courier died with the request on its way) comes back to that channel
 * only, never SMS. Both marks set the row's WeChat marks to n's and their
 * own: one of this attempt's that was refused for sure (a 43101, then the
 * next channel) goes. The courier's record of the attempt has its own
 * exclusions instead: a refusal recorded clears the mark. */
int pgw_store_wx_leaving(pgw_store *store, const char *owner, const pgw_notice *n,
                         pgw_notice_channel channel, int64_t now, int64_t need_s, pgw_err *err);
/* Gives owner's claim on notice `n` (as claimed: its id and attempts)
 * back, not tried: pending again, its attempt not counted; PGW_ESTATE when
 * that claim is over (its lease ran out: pending, or claimed again, by
 * another instance or another courier of owner's). */
int pgw_store_give_back_notice(pgw_store *store, const char *owner, const pgw_notice *n,
                               int64_t now, pgw_err *err);
/* owner NULL: claims whose lease ran out (an instance that died) go back
 * to pending, their attempt counted, marked as one whose SMS or WeChat
 * message may have gone only if pgw_store_sms_leaving or
 * pgw_store_wx_leaving marked it, a wake during the claim
 * applied as for a claim given back. Otherwise owner's own claims (a
 * stop), their attempt not counted: they were not tried. *n of them. */
int pgw_store_unclaim_notices(pgw_store *store, const char *owner, int64_t now, int64_t *n,
                              pgw_err *err);
/* A member's notices, newest first (up to cap), those with an id below
 * `before` (0: from the newest): GET /v1/notifications?member_id=, read
 * from notices_member (member, id). */
int pgw_store_member_notices(pgw_store *store, const char *member, int64_t before, pgw_notice *out,
                             size_t cap, size_t *n, pgw_err *err);
/* Every member's dead notices, newest first (up to cap), those with an id
 * below `before` (0: from the newest): GET /v1/notifications?state=dead,
 * read from notices_dead (schema 36), whatever else the outbox keeps. */
int pgw_store_dead_notices(pgw_store *store, int64_t before, pgw_notice *out, size_t cap, size_t *n,
                           pgw_err *err);
/* A dead notice goes back to pending, due now, attempts and exclusions
 * cleared but PGW_NOTICE_SMS_MAY_HAVE_GONE, and marked
 * PGW_NOTICE_MAY_HAVE_REACHED when it had attempts (what they did stays
 * possible: no arrival joins it); PGW_ENOTFOUND when there is no notice
 * `id`, PGW_ESTATE when it is not dead. */
int pgw_store_retry_notice(pgw_store *store, int64_t id, int64_t now, pgw_err *err);
/* "N points expire on D": for every member with points expiring on a local
 * day (offset_s east of UTC) within horizon_s of now, not reminded of that
 * day before, one notice (the day's points, the balance), due now. */
int pgw_store_queue_reminders(pgw_store *store, int64_t now, int64_t horizon_s, int32_t offset_s,
                              int64_t *queued, pgw_err *err);
/* A member's choice about SMS notices (PGW_ENOTFOUND for no such member). */
int pgw_store_set_sms_opt_out(pgw_store *store, const char *member, bool opt_out, pgw_err *err);
int pgw_store_sms_opt_out(pgw_store *store, const char *member, bool *opt_out, pgw_err *err);
/* A member's birthday, "MM-DD" ("" unknown); PGW_ENOTFOUND for no such member. */
int pgw_store_set_birthday(pgw_store *store, const char *member, const char *birthday,
                           pgw_err *err);
int pgw_store_birthday(pgw_store *store, const char *member, char birthday[6], pgw_err *err);
/* Deletes finished notices (sent, skipped, dead) created before `before`,
 * within PGW_PRUNE_CHUNK ids of the oldest finished one: call again while
 * *deleted is not 0. Each call is its own short transaction. */
#define PGW_PRUNE_CHUNK 5000
int pgw_store_prune_notices(pgw_store *store, int64_t before, int64_t *deleted, pgw_err *err);
/*
 * Copies what it can of the WAL into the database without waiting for
 * anyone: the writer's checkpoint thread, and a courier after a large
 * prune. *busy (may be NULL): another connection was checkpointing, so
 * nothing was done (not an error). `flush` (SQLite): then also sync the
 * database file. SQLite syncs it only after a checkpoint that copied the
 * whole WAL, which under steady writes only the writer's backstop does
 * (pgw_store_checkpoint_backstop), inside a COMMIT: left to it, the pages
 * every earlier checkpoint copied are flushed there while every command
 * waits (20-30 ms at 128 connections, bench/RESULTS.md).
 */
int pgw_store_checkpoint(pgw_store *store, bool flush, bool *busy, pgw_err *err);
/*
 * SQLite: this connection stops checkpointing after its commits until the
 * WAL holds `pages` pages, for a writer whose checkpoints another
 * connection runs (pgw_store_checkpoint, on a thread of its own). A
 * checkpoint here stalls every command of the next batch behind its copy
 * and its fsync of the database. The backstop bounds the WAL when the other
 * connection never empties it: a WAL is reused only once a checkpoint has
 * copied all of it, which under steady writes the writer's own does. No-op
 * on PostgreSQL.
 */
int pgw_store_checkpoint_backstop(pgw_store *store, int pages, pgw_err *err);
/* After pgw_store_checkpoint_backstop: the pages in the WAL after this
 * connection's last commit (it shrinks when the WAL starts over). 0 before
 * and on PostgreSQL. */
int64_t pgw_store_wal_pages(const pgw_store *store);
/* After pgw_store_checkpoint on this connection: the WAL's frames copied
 * into the database (all of them when it reached the WAL's end). 0 before
 * and on PostgreSQL. */
int64_t pgw_store_wal_backfilled(const pgw_store *store);
/* Notices not yet delivered (pending or sending). */
int pgw_store_outbox_depth(pgw_store *store, int64_t *n, pgw_err *err);
/* Takes one unit of member's quota of `openid` (pgw_store_mp_target's
 * quota_openid) for template_id (all of it: WeChat said none is left for
 * that openid); *taken false when none was left. */
int pgw_store_take_quota(pgw_store *store, const char *member, const char *openid,
                         const char *template_id, bool all, bool *taken, pgw_err *err);

/* ---- SMS verification codes (core/otp.h) --------------------------------- */

/* When codes went out since `since`, newest first (at most cap): to the
 * phone whose lookup is `phone_lookup`, or, when that is NULL, asked from
 * client address `ip`. */
int pgw_store_otp_times(pgw_store *store, const char *phone_lookup, const char *ip, int64_t since,
                        int64_t *out, size_t cap, size_t *n, pgw_err *err);
/* Records a code issued at `now` (its hash only) for `requester`, asked
 * from address bucket `ip`, expiring at expires_at, and forgets codes
 * older than a day (they count for no limit any more). */
int pgw_store_otp_add(pgw_store *store, const char *phone_lookup, const uint8_t *hash,
                      const char *requester, const char *ip, int64_t now, int64_t expires_at,
                      pgw_err *err);
/* Forgets a code that never left (the provider did not take it): it
 * neither counts nor replaces the number's previous code. */
int pgw_store_otp_void(pgw_store *store, const char *phone_lookup, const uint8_t *hash,
                       pgw_err *err);
/* The newest code of a number; *found false when none. */
int pgw_store_otp_newest(pgw_store *store, const char *phone_lookup, pgw_otp_row *out, bool *found,
                         pgw_err *err);
/* Counts one wrong try of code `id`, or (used) marks it used. */
int pgw_store_otp_mark(pgw_store *store, int64_t id, bool used, pgw_err *err);

/* ---- member activity: what the earning rules need to know ----------------- */

/* Rules with points today read at most: every rule a configuration can
 * count in a day (each campaign; the behaviours, their streaks and
 * "redeem" are fewer than 16 + PGW_STREAKS_MAX). At 64 a day's later rules
 * were dropped: their caps, and the daily redemption limit, counted
 * nothing. (Read in the primary key's order: no sort.) */
#define PGW_ACTIVITY_TODAY_MAX (PGW_CAMPAIGNS_MAX + 16 + PGW_STREAKS_MAX)

/* The local day numbers (civil.h pgw_days_from_date) an activity read spans. */
typedef struct pgw_activity_days {
    int64_t today;       /* the event's local day */
    int64_t year_before; /* 12 months before: spend counts on days after it */
    int64_t month_first; /* first day of the event's month */
    int64_t figures_at;  /* the member's figures at this time too; 0: not asked */
} pgw_activity_days;

/* A member's running totals of purchases and spend up to a day. */
typedef struct pgw_day_run {
    int64_t purchases, spend_fen;
} pgw_day_run;

typedef struct pgw_member_activity {
    int64_t spend_12m_fen;   /* purchases minus refunds on days in (year_before, today] */
    int64_t month_purchases; /* purchases on days in [month_first, today] */
    int64_t month_spend_fen;
    int64_t events_today;     /* events recorded on `today` */
    int64_t debt;             /* the member's, as pgw_store_member_debt reads it */
    bool later_days;          /* days after `today` are recorded (a till sent today's first) */
    pgw_day_run before_today; /* the running totals of the days before `today` */
    bool merged;              /* merged into another (pgw_store_survivor): the rest is not its */
    bool purchased_before, registered_before, followed_before;
    bool reviewed_before; /* the event's receipt: set by the command, not read here */
    bool has_last_sign_in;
    int64_t last_sign_in; /* local day number */
    int32_t sign_in_streak;
    char birthday[6]; /* "MM-DD", or "" when unknown */
    /* Its figures at figures_at, as pgw_store_member_figures reads them
     * (all 0 for a member not seen yet): has_figures false when not asked
     * or when it has a hold not released (those are read there). */
    bool has_figures;
    pgw_member_figures figures;
    size_t n_today; /* rules with points on `today` (at most PGW_ACTIVITY_TODAY_MAX) */
    pgw_rule_total today[PGW_ACTIVITY_TODAY_MAX];
    bool today_read; /* n_today and today are filled */
} pgw_member_activity;

/*
 * *found false (activity zeroed) for a member not seen yet. The points by
 * rule on `today` are read only for a member not seen yet (none):
 * pgw_store_member_today reads them, for the events that need them.
 */
int pgw_store_member_activity(pgw_store *store, const char *member, const pgw_activity_days *days,
                              bool *found, pgw_member_activity *out, pgw_err *err);
/* *points: what a member earned under `rule` on days first..last. */
int pgw_store_member_rule_points(pgw_store *store, const char *member, const char *rule,
                                 int64_t first, int64_t last, int64_t *points, pgw_err *err);
/* Fills a member's points by rule on `day` into *a (and a->today_read). */
int pgw_store_member_today(pgw_store *store, const char *member, int64_t day,
                           pgw_member_activity *a, pgw_err *err);
/*
 * Counts `events` (0 or 1) on a member's day, with purchases and spend
 * (negative for refunds). Every later day's running totals take them too:
 * `later_days` says whether there may be any, as an activity read at `day`
 * in this transaction found (pgw_member_activity.later_days); false skips
 * that update, one statement per event. true is always correct. `before`:
 * the running totals of the days before `day`, as that read found them
 * (before_today), when nothing has written the member's days since; NULL
 * reads them here.
 */
int pgw_store_add_member_day(pgw_store *store, const char *member, int64_t day, int64_t purchases,
                             int64_t spend_fen, int64_t events, bool later_days,
                             const pgw_day_run *before, pgw_err *err);
/* A challenge's own month (rules.h pgw_rules_challenge_own_month): the
 * member's purchases it covered on days first..last, and their spend. */
int pgw_store_challenge_month(pgw_store *store, const char *member, const char *campaign,
                              int64_t first, int64_t last, int64_t *purchases, int64_t *spend_fen,
                              pgw_err *err);
/* spend_fen > 0: one purchase of that amount on a member's `day` of
 * challenge `campaign`; < 0: a refund of one of them, taken off that day's
 * spend (never below 0; nothing when the day has no row). */
int pgw_store_move_challenge_day(pgw_store *store, const char *member, const char *campaign,
                                 int64_t day, int64_t spend_fen, pgw_err *err);
/* Takes `points` back from a member's `rule` on `day` (never below 0;
 * nothing when the member has no such row). */
int pgw_store_take_back_rule_day(pgw_store *store, const char *member, int64_t day,
                                 const char *rule, int64_t points, pgw_err *err);
/* Adds points earned under `rule` on `day` (daily caps). */
int pgw_store_add_rule_day(pgw_store *store, const char *member, int64_t day, const char *rule,
                           int64_t points, pgw_err *err);
/* Writes the once-only flags and the sign-in streak (the member must exist). */
int pgw_store_set_member_flags(pgw_store *store, const char *member,
                               const pgw_member_activity *activity, pgw_err *err);
/* Creates a member without debt, with those flags and streak: one
 * statement where pgw_store_put_member and the flags would take two.
 * A row its first transfer made (pgw_store_append_transfer) takes them
 * and the lot's sums; the caller read no member there before that.
 * `first_lot`: NULL, or the member's first lot, inserted after it as
 * pgw_store_insert_lot does, its points in the member's sums as the row
 * is written (not one statement more to add them). */
int pgw_store_add_member(pgw_store *store, const char *member, const pgw_member_activity *activity,
                         int64_t now_us, const pgw_lot *first_lot, pgw_err *err);

/* ---- answers: what a replay repeats ---------------------------------------- */

/* The stored answer ("" when none). PGW_EIO when it does not fit `cap`. */
int pgw_store_get_answer(pgw_store *store, const char *key, char *out, size_t cap, pgw_err *err);

/* ---- events, for reconciliation ------------------------------------------- */

/*
 * An event's idempotency key: "channel:source:event_id", the source being
 * the shop, or "-" when the event has none (API.md: the key is channel,
 * shop or appid, and event_id). Reconciliation reads a shop's or a
 * channel's events as a range of these keys, in their order: the first
 * two colons split a key back into its parts, because channel names are
 * [a-z0-9_]+ (pgw_store_channel_name_ok, which event_json.c enforces; not
 * the first word of the gateway's own keys, "hold", "bind", ...) and
 * shop ids [A-Za-z0-9_-]+ (pgw_store_shop_id_ok, as config.c's ids).
 * Asserts both: callers pass what those checked.
 */
void pgw_store_event_key(char out[PGW_IDEM_KEY_MAX + 1], const char *channel, const char *shop,
                         const char *event_id);
bool pgw_store_channel_name_ok(const char *s);
bool pgw_store_shop_id_ok(const char *s);

/* One event as its channel knows it, recorded with its key
 * (pgw_store_record_key); the key says its channel, source and event_id,
 * the key's first_transfer its first transfer. */
struct pgw_event_record {
    char type[PGW_RECON_TYPE_MAX + 1]; /* never "": that is a key of another command */
    char member[PGW_ID_MAX + 1];
    int64_t occurred_at;
    int64_t amount_fen;  /* purchase or refund amount; 0 otherwise */
    int64_t points;      /* what the member got (a refund: minus what was reversed) */
    int64_t written_off; /* a refund: what it wrote off, >= 0 (its answer's); else unused */
};

/* Which events a reconciliation reads: a channel, optionally one shop,
 * occurred_at in [from, to). */
typedef struct pgw_event_filter {
    const char *channel;
    const char *shop; /* NULL: every shop of the channel */
    int64_t from, to;
} pgw_event_filter;

/* PGW_EINVAL, saying why, unless the filter's channel is a channel name and
 * its shop (when there is one) a shop id: reconciliation's inputs. */
int pgw_store_check_event_filter(const pgw_event_filter *filter, pgw_err *err);

/*
 * Up to `cap` events after the cursor (after_id, after_source; "" and ""
 * for the first page) into out[]; *n says how many (fewer than cap: the
 * last page). Each row's `source` says its shop. Order: event_id for one
 * shop; for a whole channel their keys' ("S001-2:..." before "S001:...":
 * the caller sorts). Byte order on both databases. A filter that
 * pgw_store_check_event_filter refuses reads nothing: PGW_EINVAL.
 */
int pgw_store_read_events(pgw_store *store, const pgw_event_filter *filter, const char *after_id,
                          const char *after_source, pgw_recon_row *out, size_t cap, size_t *n,
                          pgw_err *err);

/*
 * The event recorded under the key channel:shop:event_id, whatever its
 * time, into *out as pgw_store_read_events gives it: reconciliation's look
 * for a statement row's event dated outside the period it read. *found is
 * false when there is none (nor can be: a channel or shop no key has).
 */
int pgw_store_read_event(pgw_store *store, const char *channel, const char *shop,
                         const char *event_id, pgw_recon_row *out, bool *found, pgw_err *err);

/* The same by the event's whole key (pgw_store_event_key's, or one keyed
 * by an appid or "-"): what an event's conflicting retry is told of its
 * first request (server/command.c). *found false when the key recorded no
 * event (another command's key). */
int pgw_store_read_keyed_event(pgw_store *store, const char *key, pgw_recon_row *out, bool *found,
                               pgw_err *err);

/*
 * Whether `channel` holds events whose source (shop, appid or "-") starts
 * with `source_prefix` (at most PGW_ID_MAX + 1 bytes), in one look at the
 * keys' range: "" for any event of the channel (a statement's channel
 * misspelt has none); "S001:" for one source's (a shop misspelt has none);
 * "wx" for those keyed by an appid ("channel:wx...:id", a mini
 * program's or official account's without a shop: schema 23 on; a shop id
 * beginning "wx" counts too), which "--shop -" does not read: a repair by
 * it would post them again under "-".
 */
int pgw_store_channel_has_keys(pgw_store *store, const char *channel, const char *source_prefix,
                               bool *has, pgw_err *err);

/* ---- reports ------------------------------------------------------------------ */

/* Points of one kind moved against one account on the other side of a member. */
typedef struct pgw_flow {
    pgw_transfer_kind kind;
    char account[PGW_ACCOUNT_MAX + 1]; /* "shop:S001:issued", "system:expired", ... */
    int64_t points;
    bool to_member; /* points went to members (EARN, IMPORT, an ADJUST up) */
} pgw_flow;

/* Every (kind, account) pair's points in [from, to) of occurred_at, merges
 * left out; PGW_ETOOLARGE beyond cap pairs. */
int pgw_store_flows(pgw_store *store, int64_t from, int64_t to, pgw_flow *out, size_t cap,
                    size_t *n, pgw_err *err);

/* An expiry and the funders of the lot it came from, to share it out. */
typedef struct pgw_lot_expiry {
    int64_t transfer_id, lot, points;
    int64_t before; /* of the lot expired by earlier transfers (its key says) */
    size_t n_funders;
    char funder[PGW_EARN_FUNDERS_MAX][PGW_ACCOUNT_MAX + 1];
    int64_t funded[PGW_EARN_FUNDERS_MAX];
} pgw_lot_expiry;

/*
 * An expiry's idempotency key, expire:lot:<lot>:<points of it expired
 * before> (server/command.c apply_expire_lot writes it): true, *lot
 * (1..INT64_MAX) and *before (0..INT64_MAX) set, when it is exactly that,
 * each number in decimal digits only (util/csv.h pgw_decimal_in); false
 * for anything else, a sign, a space or a number past int64 among them,
 * *lot and *before then untouched. The database's keys are input too.
 */
bool pgw_store_expiry_key(const char *key, int64_t *lot, int64_t *before);

/* Up to cap EXPIRE transfers in [from, to) after transfer after_id, in id
 * order. An expiry whose reference (lot:<lot>) or key does not name its
 * lot as the gateway writes them is PGW_EIO. */
int pgw_store_expiries(pgw_store *store, int64_t from, int64_t to, int64_t after_id,
                       pgw_lot_expiry *out, size_t cap, size_t *n, pgw_err *err);

/* The pool per local day (unix day of occurred_at + offset_s). */
typedef struct pgw_day_flow {
    int64_t day;
    int64_t issued;   /* EARN, IMPORT, ADJUST to members */
    int64_t reversed; /* REVERSAL, ADJUST from members */
    int64_t redeemed; /* REDEEM */
    int64_t expired;  /* EXPIRE */
} pgw_day_flow;

/* Days with movements in [from, to), ascending; PGW_ETOOLARGE beyond cap. */
int pgw_store_day_flows(pgw_store *store, int64_t from, int64_t to, int32_t offset_s,
                        pgw_day_flow *out, size_t cap, size_t *n, pgw_err *err);

/* The day standing for everything before `from` in pgw_day_holding: the day
 * before from's local day (the period's days are from's day on). */
#define PGW_STORE_OPENING_DAY(from, offset_s) (((from) + (offset_s)) / 86400 - 1)

/* Changes of what members hold (the sum of positive member balances) and
 * owe (the sum of negative ones, as a positive figure: their debt). */
typedef struct pgw_day_holding {
    int64_t day;  /* local day of occurred_at; PGW_STORE_OPENING_DAY: before from */
    int64_t held; /* change of the points members hold */
    int64_t owed; /* change of the points members owe */
} pgw_day_holding;

/* Days (and the opening) whose transfers before `to` changed what members
 * hold or owe, ascending; PGW_EINVAL beyond cap. Summed up to a day, they
 * give both at that day's end (at from for the opening). */
int pgw_store_day_holdings(pgw_store *store, int64_t from, int64_t to, int32_t offset_s,
                           pgw_day_holding *out, size_t cap, size_t *n, pgw_err *err);

/* Points into members minus points out of them in [from, to) (merges cancel out). */
int pgw_store_member_net(pgw_store *store, int64_t from, int64_t to, int64_t *out, pgw_err *err);

/* Test hook (not for production callers): runs raw SQL on the store's own
 * connection, e.g. to make the database "full" with PRAGMA max_page_count. */
int pgw_store__exec_for_test(pgw_store *store, const char *sql, pgw_err *err);
/* Test hook: the text of a member's read of lots ("member_figures",
 * "spendable_lots", "expiring"), of a notice's hurry of its member's
 * arrivals ("hurry_arrivals") or of a notice's insert ("insert_notice") as
 * prepared, or of a courier's claim ("claim_notices"), for its plan; NULL
 * for another name. */
const char *pgw_store__statement_for_test(pgw_store *store, const char *name);

/* Test hook: the text of the i-th query `pgw_store_verify` runs, in its
 * order (quick_check aside); NULL past the last. For their plans and costs. */
const char *pgw_store__verify_query_for_test(size_t i);

/* Test hook: every later pgw_store_sync fails as a dying disk's would. */
void pgw_store__fail_syncs_for_test(pgw_store *store);

#endif
