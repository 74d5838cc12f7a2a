/*
 * sql.h - one statement interface over SQLite and PostgreSQL (libpq).
 *
 * store.c is written once, against this interface, in the SQL both
 * databases accept. The shape is SQLite's (prepare, bind, step, column,
 * reset) because that is what store.c was written in; PostgreSQL is
 * driven through it:
 * - Parameters are written ?1, ?2 ...; for PostgreSQL they become $1, $2.
 * - A comment of the form / *pg ... * / (without the spaces) is SQL that
 *   only PostgreSQL runs (FOR UPDATE SKIP LOCKED): SQLite skips it as a
 *   comment, the PostgreSQL driver uncomments it.
 * - Portable SQL otherwise: no scalar min()/max() (CASE), every subquery
 *   in FROM has an alias, format('%s') rather than printf, RETURNING
 *   rather than last_insert_rowid, ON CONFLICT rather than OR IGNORE.
 * - Values are int64, text, blobs and NULL. A boolean PostgreSQL returns
 *   (a comparison in a select list) reads as 1 or 0; SUM()s, which
 *   PostgreSQL widens to numeric, read as int64.
 *
 * PostgreSQL specifics: a persistent statement is prepared on its first
 * step on each connection, as a named statement whose parameter types are
 * those of that first binding (int64 as int8, text, blob as bytea, NULL
 * for the server to infer), and its rows are fetched at once, so it must
 * be bounded (LIMIT) as store.c's are. A one-off (not persistent)
 * statement is sent with PQsendQueryParams and streams its rows one at a
 * time (verify's passes over a table). Results come in text format. A
 * lost connection fails the statement (PGW_EUNAVAILABLE) and is reopened,
 * with backoff, before the next statement outside a transaction
 * (pgw_sql_mark_transaction).
 *
 * Ownership: pgw_sql_open allocates a connection freed by pgw_sql_close;
 * pgw_sql_prepare a statement freed by pgw_sql_finalize (before the
 * connection is closed). Text and blob bindings are borrowed: they must
 * stay valid until the statement is reset. Column values are valid until
 * the next step or reset. One thread at a time per connection.
 */
#ifndef PGW_STORE_SQL_H
#define PGW_STORE_SQL_H

#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pgw_sql pgw_sql;
typedef struct pgw_sql_stmt pgw_sql_stmt;

typedef enum pgw_sql_kind { PGW_SQL_SQLITE, PGW_SQL_POSTGRES } pgw_sql_kind;

/* What pgw_sql_step returns besides a negative PGW_E... code. */
enum { PGW_SQL_DONE = 0, PGW_SQL_ROW = 1 };

/* Longest URL pgw_sql_open takes (a SQLite path up to 7 bytes shorter). */
#define PGW_SQL_URL_MAX 512
/* Most parameters one statement takes (the insert of a transfer 17), and
 * longest blob a column returns. */
#define PGW_SQL_PARAMS_MAX 20
#define PGW_SQL_BLOB_MAX   128

/*
 * Opens "sqlite:PATH" (created when `create`; PGW_ENOTFOUND when missing
 * without it) or "postgresql://..." / "postgres://..." (a libpq URI; the
 * database must exist). PGW_EINVAL for another kind, and for a PostgreSQL
 * server that answers but refuses the login or the database (a wrong
 * password, a user or database that does not exist: a ping tells it from
 * an outage); PGW_EUNAVAILABLE when no server answers. `name` (for
 * messages) is the path or the URL with any password removed.
 */
int pgw_sql_open(const char *url, bool create, pgw_sql **out, pgw_err *err);
/*
 * Opens "sqlite:PATH" read-only (SQLite's mode=ro): nothing of the file is
 * written through it. With `immutable`, SQLite also takes the file for one
 * nobody changes while it is open (no locks, no -wal or -shm files: what
 * a file on read-only media, without them, needs). PGW_EINVAL for another
 * kind of URL, PGW_ENOTFOUND when the file is missing.
 */
int pgw_sql_open_read_only(const char *url, bool immutable, pgw_sql **out, pgw_err *err);
void pgw_sql_close(pgw_sql *db);

pgw_sql_kind pgw_sql_kind_of(const pgw_sql *db);
/* The path or the URL without its password, for messages. */
const char *pgw_sql_name(const pgw_sql *db);
/* The underlying sqlite3 handle (SQLite only: its WAL, PRAGMAs). */
void *pgw_sql_sqlite_handle(pgw_sql *db);

/* Runs one or more statements without parameters or rows (DDL, BEGIN). */
int pgw_sql_exec(pgw_sql *db, const char *sql, const char *what, pgw_err *err);

/*
 * A statement for `sql` (portable SQL as above; the text is copied).
 * `persistent` ones are kept prepared on the server across resets.
 */
int pgw_sql_prepare(pgw_sql *db, const char *sql, bool persistent, pgw_sql_stmt **out,
                    pgw_err *err);
void pgw_sql_finalize(pgw_sql_stmt *st);
/* How many parameters (the highest ?N) the statement takes. */
int pgw_sql_param_count(const pgw_sql_stmt *st);
/* The text the statement was prepared from. */
const char *pgw_sql_text(const pgw_sql_stmt *st);

/* Bindings, 1-based like the ?N they fill. An unbound parameter is NULL. */
void pgw_sql_bind_int64(pgw_sql_stmt *st, int i, int64_t v);
void pgw_sql_bind_text(pgw_sql_stmt *st, int i, const char *text);
void pgw_sql_bind_blob(pgw_sql_stmt *st, int i, const void *blob, size_t len);
void pgw_sql_bind_null(pgw_sql_stmt *st, int i);

/*
 * PGW_SQL_ROW while there is a row to read, then PGW_SQL_DONE; or a
 * negative code (PGW_EUNAVAILABLE for a failure worth a retry, see
 * pgw_sql_errcode; PGW_ECONFLICT for a duplicate key; PGW_EIO otherwise)
 * with pgw_sql_errmsg saying why.
 *
 * A duplicate key is a UNIQUE or PRIMARY KEY violation and nothing else:
 * SQLite's SQLITE_CONSTRAINT_UNIQUE, _PRIMARYKEY or _ROWID, PostgreSQL's
 * 23505. Every other constraint the statement broke (a CHECK, a NOT NULL,
 * a foreign key, a trigger's RAISE, PostgreSQL's exclusion) is PGW_EIO: a
 * row the schema refuses is no "same key, different request" (409
 * idempotency_conflict over HTTP). pgw_sql_exec and pgw_sql_commit say
 * the same of what they ran themselves.
 */
int pgw_sql_step(pgw_sql_stmt *st);
/*
 * Runs a statement whose rows and changes the caller does not read (an
 * INSERT without RETURNING, a SAVEPOINT): PGW_SQL_DONE or a failure, as
 * pgw_sql_step. On PostgreSQL, inside a transaction and once the statement
 * was prepared on this connection, it is only sent (libpq's pipeline
 * mode): its round trip is shared with the next call that waits for a
 * result (pgw_sql_step, pgw_sql_exec, pgw_sql_commit). That call reports
 * a sent statement's failure, naming it, as its own (never as
 * PGW_ECONFLICT), and what it ran itself did not run; a ROLLBACK TO still
 * runs and succeeds. At most SENT_MAX (sql.c) are sent before one waits.
 */
int pgw_sql_send(pgw_sql_stmt *st);
/* Ready to run again, bindings cleared. */
void pgw_sql_reset(pgw_sql_stmt *st);

bool pgw_sql_column_null(pgw_sql_stmt *st, int col);
int64_t pgw_sql_column_int64(pgw_sql_stmt *st, int col);
/* NUL-terminated; NULL for a NULL value. */
const char *pgw_sql_column_text(pgw_sql_stmt *st, int col);
/* Bytes of a text or blob column. */
size_t pgw_sql_column_bytes(pgw_sql_stmt *st, int col);
/* A blob column's bytes (pgw_sql_column_bytes of them); NULL when empty or NULL. */
const void *pgw_sql_column_blob(pgw_sql_stmt *st, int col);

/* Rows the last INSERT, UPDATE or DELETE of this connection changed. */
int64_t pgw_sql_changes(pgw_sql *db);
/* SQLite only: the rowid of the last row this connection inserted. (On
 * PostgreSQL an INSERT says RETURNING; on SQLite that costs a temporary
 * B-tree per statement.) */
int64_t pgw_sql_last_insert_id(pgw_sql *db);
/* Why the last call on this connection failed. */
const char *pgw_sql_errmsg(pgw_sql *db);
/*
 * COMMIT. PostgreSQL answers COMMIT in a transaction a failed statement
 * aborted by rolling it back, without an error: that is PGW_EIO here, so
 * a rolled-back batch is never reported as committed.
 */
int pgw_sql_commit(pgw_sql *db, pgw_err *err);
/*
 * What the last statement (or exec, or commit) on this connection failed
 * with, as its call returned it; PGW_OK when it did not fail.
 * PGW_EUNAVAILABLE is a failure worth a retry: a lost or restarting
 * server, a lock, statement or serialization timeout, a deadlock, a
 * read-only server after a failover, SQLite busy.
 */
int pgw_sql_errcode(const pgw_sql *db);
/* Whether that failure (PGW_EUNAVAILABLE) was a wait for a lock given up:
 * PostgreSQL's lock timeout or a deadlock, on a connection that is still
 * the same session (its session locks held); SQLite busy or locked. */
bool pgw_sql_failed_on_lock(const pgw_sql *db);
/* Whether the connection's last failure was a full disk (SQLITE_FULL, a
 * WAL write that found the disk full, PostgreSQL's disk_full: 53100), no
 * statement stepped since: a rollback after it (pgw_sql_exec) leaves it
 * said, and a caller's own failure after a statement that worked (a
 * PGW_EIO of the store's) is not taken for it. */
bool pgw_sql_failed_on_space(const pgw_sql *db);
/* Whether the connection's last failure was SQLite finding the file
 * damaged or no database at all (SQLITE_CORRUPT, SQLITE_NOTADB). */
bool pgw_sql_failed_on_damage(const pgw_sql *db);
/* Runs session SETs and, on PostgreSQL, runs them again on every reconnect. */
int pgw_sql_set_session(pgw_sql *db, const char *sql, pgw_err *err);
/* Whether a transaction is open (or failed and not yet rolled back). */
bool pgw_sql_in_transaction(pgw_sql *db);
/*
 * What the caller knows of its transaction: open from a successful BEGIN
 * to its COMMIT or ROLLBACK. Outside one, a lost PostgreSQL connection is
 * reopened before the next statement, at most once per backoff period (50
 * ms doubling to 5 s; PGW_EUNAVAILABLE in between); inside one, it is not:
 * the transaction went with the connection, and its statements fail.
 */
void pgw_sql_mark_transaction(pgw_sql *db, bool open);

#endif
