/*
 * store.c - see store.h. The SQLite backend.
 *
 * Durability: WAL journal with synchronous=FULL. In WAL mode NORMAL only
 * syncs at checkpoints, so a power cut can lose the last commits; FULL
 * fsyncs the WAL at every commit, which is what "an acknowledged transfer
 * survives power loss" needs. Group commit (the writer thread) is what
 * makes that affordable: one fsync per batch, not per transfer.
 *
 * Every statement used on a hot path is prepared once at open and reset
 * after use.
 */
#include "store.h"

#include "core/assertions.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BUSY_TIMEOUT_MS 5000
/* The columns read into a pgw_lot, in row_to_lot()'s order. */
#define LOT_COLUMNS                                                                                \
    "id, member, points, left_points, held, earned_at, expires_at, source_transfer, expired"
#define VERIFY_PAGE 512

struct pgw_store {
    sqlite3 *db;
    char path[PGW_STORE_URL_MAX + 1];
    sqlite3_stmt *insert_transfer;
    sqlite3_stmt *select_head;
    sqlite3_stmt *select_page;
    sqlite3_stmt *insert_key;
    sqlite3_stmt *select_key;
    sqlite3_stmt *savepoint;
    sqlite3_stmt *release;
    sqlite3_stmt *select_debt;
    sqlite3_stmt *put_member;
    sqlite3_stmt *insert_lot;
    sqlite3_stmt *select_lot;
    sqlite3_stmt *expire_lot;
    sqlite3_stmt *due_lots;
    /* The chain head as of the last append in this transaction, so a batch
     * does not re-read it per transfer. Dropped on any rollback. */
    bool head_cached;
    int64_t head_id;
    uint8_t head_hash[PGW_HASH_LEN];
};

/*
 * Forward-only migrations: entry i takes the schema from version i to i+1.
 * Never edit one that has shipped; add the next. PRAGMA user_version holds
 * the version, changed in the same transaction as the DDL.
 */
static const char *const MIGRATIONS[PGW_STORE_SCHEMA_VERSION] = {
    /* 0 -> 1: the transfer log. */
    "CREATE TABLE transfers ("
    "  id INTEGER PRIMARY KEY,"
    "  kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 7),"
    "  idem_key TEXT NOT NULL,"
    "  fingerprint BLOB NOT NULL CHECK (length(fingerprint) = 32),"
    "  debit TEXT NOT NULL,"
    "  credit TEXT NOT NULL CHECK (credit <> debit),"
    "  points INTEGER NOT NULL CHECK (points > 0),"
    "  shop_id TEXT NOT NULL,"
    "  channel TEXT NOT NULL,"
    "  occurred_at INTEGER NOT NULL,"
    "  recorded_at_us INTEGER NOT NULL,"
    "  reference TEXT NOT NULL,"
    "  breakdown TEXT NOT NULL,"
    "  prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),"
    "  hash BLOB NOT NULL UNIQUE CHECK (length(hash) = 32)"
    ") STRICT;"
    "CREATE INDEX transfers_by_debit ON transfers (debit);"
    "CREATE INDEX transfers_by_credit ON transfers (credit);",
    /* 1 -> 2: idempotency records; the primary key is the guarantee. */
    "CREATE TABLE idempotency ("
    "  key TEXT PRIMARY KEY,"
    "  fingerprint BLOB NOT NULL CHECK (length(fingerprint) = 32),"
    "  first_transfer INTEGER NOT NULL DEFAULT 0,"
    "  transfer_count INTEGER NOT NULL DEFAULT 0 CHECK (transfer_count >= 0),"
    "  created_at_us INTEGER NOT NULL"
    ") STRICT;",
    /* 2 -> 3: members and their lots. */
    "CREATE TABLE members ("
    "  id TEXT PRIMARY KEY,"
    "  debt INTEGER NOT NULL DEFAULT 0 CHECK (debt >= 0),"
    "  created_at_us INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE lots ("
    "  id INTEGER PRIMARY KEY,"
    "  member TEXT NOT NULL REFERENCES members (id),"
    "  points INTEGER NOT NULL CHECK (points > 0),"
    "  left_points INTEGER NOT NULL CHECK (left_points >= 0),"
    "  held INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),"
    "  expired INTEGER NOT NULL DEFAULT 0 CHECK (expired >= 0),"
    "  earned_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  source_transfer INTEGER NOT NULL REFERENCES transfers (id),"
    "  CHECK (left_points + held <= points)"
    ") STRICT;"
    "CREATE INDEX lots_by_member ON lots (member, expires_at);"
    "CREATE INDEX lots_due ON lots (expires_at) WHERE left_points > 0;",
};

static int db_error(pgw_store *s, int code, const char *what, pgw_err *err)
{
    return pgw_err_set(err, code, "%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static int exec(pgw_store *s, const char *sql, const char *what, pgw_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return PGW_OK;
    int rc = pgw_err_set(err, PGW_EIO, "%s: %s: %s", s->path, what, msg ? msg : "?");
    sqlite3_free(msg);
    return rc;
}

static int read_user_version(pgw_store *s, int64_t *out, pgw_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return db_error(s, PGW_EIO, "reading the schema version", err);
    int rc = sqlite3_step(st) == SQLITE_ROW ? PGW_OK : PGW_EIO;
    if (rc == PGW_OK)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == PGW_OK ? PGW_OK : db_error(s, PGW_EIO, "reading the schema version", err);
}

static int migrate(pgw_store *s, pgw_err *err)
{
    int64_t version = 0;
    int rc = read_user_version(s, &version, err);
    if (rc != PGW_OK)
        return rc;
    if (version > PGW_STORE_SCHEMA_VERSION)
        return pgw_err_set(err, PGW_ESTATE,
                           "%s: the database is at schema version %lld, newer than this "
                           "pointsgw (%d); run the newer pointsgw that wrote it",
                           s->path, (long long)version, PGW_STORE_SCHEMA_VERSION);
    for (int64_t v = version; v < PGW_STORE_SCHEMA_VERSION; v++) {
        char bump[64];
        snprintf(bump, sizeof(bump), "PRAGMA user_version = %lld", (long long)v + 1);
        rc = exec(s, "BEGIN IMMEDIATE", "starting a migration", err);
        if (rc == PGW_OK)
            rc = exec(s, MIGRATIONS[v], "migrating the schema", err);
        if (rc == PGW_OK)
            rc = exec(s, bump, "recording the schema version", err);
        if (rc == PGW_OK)
            rc = exec(s, "COMMIT", "committing a migration", err);
        if (rc != PGW_OK) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
    }
    return PGW_OK;
}

static int prepare_statements(pgw_store *s, pgw_err *err)
{
    static const char insert[] =
        "INSERT INTO transfers (id, kind, idem_key, fingerprint, debit, credit, points, shop_id,"
        " channel, occurred_at, recorded_at_us, reference, breakdown, prev_hash, hash)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";
    static const char head[] = "SELECT id, hash FROM transfers ORDER BY id DESC LIMIT 1";
    static const char page[] =
        "SELECT id, kind, idem_key, fingerprint, debit, credit, points, shop_id, channel,"
        " occurred_at, recorded_at_us, reference, breakdown, prev_hash, hash"
        " FROM transfers WHERE id > ?1 ORDER BY id LIMIT ?2";
    static const char insert_key[] =
        "INSERT INTO idempotency (key, fingerprint, first_transfer, transfer_count,"
        " created_at_us) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO NOTHING";
    static const char select_key[] =
        "SELECT fingerprint, first_transfer, transfer_count FROM idempotency WHERE key = ?1";
    struct {
        const char *sql;
        sqlite3_stmt **stmt;
    } table[] = {
        {insert, &s->insert_transfer},
        {head, &s->select_head},
        {page, &s->select_page},
        {insert_key, &s->insert_key},
        {select_key, &s->select_key},
        {"SAVEPOINT pgw_command", &s->savepoint},
        {"RELEASE pgw_command", &s->release},
        {"SELECT debt FROM members WHERE id = ?1", &s->select_debt},
        {"INSERT INTO members (id, debt, created_at_us) VALUES (?1, ?2, ?3)"
         " ON CONFLICT (id) DO UPDATE SET debt = excluded.debt",
         &s->put_member},
        {"INSERT INTO lots (member, points, left_points, held, earned_at, expires_at,"
         " source_transfer) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
         &s->insert_lot},
        {"SELECT " LOT_COLUMNS " FROM lots WHERE id = ?1", &s->select_lot},
        {"UPDATE lots SET left_points = left_points - ?2, expired = expired + ?2"
         " WHERE id = ?1 AND left_points >= ?2",
         &s->expire_lot},
        {"SELECT " LOT_COLUMNS " FROM lots WHERE expires_at <= ?1 AND left_points > 0"
         " AND id > ?2 ORDER BY id LIMIT ?3",
         &s->due_lots},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (sqlite3_prepare_v3(s->db, table[i].sql, -1, SQLITE_PREPARE_PERSISTENT, table[i].stmt,
                               NULL) != SQLITE_OK)
            return db_error(s, PGW_EIO, "preparing statements", err);
    }
    return PGW_OK;
}

/* Connection settings; see the top of this file for why synchronous=FULL. */
static int configure(pgw_store *s, pgw_err *err)
{
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    int rc = exec(s, "PRAGMA journal_mode = WAL", "enabling WAL", err);
    if (rc == PGW_OK)
        rc = exec(s, "PRAGMA synchronous = FULL", "setting synchronous", err);
    if (rc == PGW_OK)
        rc = exec(s, "PRAGMA foreign_keys = ON", "enabling foreign keys", err);
    /* A 64 MiB page cache keeps the indexes' hot pages in memory. */
    if (rc == PGW_OK)
        rc = exec(s, "PRAGMA cache_size = -65536", "sizing the page cache", err);
    return rc;
}

static int parse_url(const char *url, bool create, char *path, size_t cap, pgw_err *err)
{
    if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0)
        return pgw_err_set(err, PGW_EINVAL,
                           "%s: the PostgreSQL backend is not built yet; use "
                           "sqlite:PATH",
                           url);
    if (strncmp(url, "sqlite:", 7) != 0 || url[7] == '\0' || strlen(url + 7) >= cap)
        return pgw_err_set(err, PGW_EINVAL, "database URL \"%.64s\" is not sqlite:PATH", url);
    snprintf(path, cap, "%s", url + 7);
    struct stat st;
    if (!create && stat(path, &st) != 0)
        return pgw_err_set(err, PGW_ENOTFOUND, "%s: no database there", path);
    return PGW_OK;
}

int pgw_store_open(const char *url, bool create, pgw_store **out, pgw_err *err)
{
    *out = NULL;
    pgw_store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory opening %s", url);
    int rc = parse_url(url, create, s->path, sizeof(s->path), err);
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
    if (rc == PGW_OK && sqlite3_open_v2(s->path, &s->db, flags, NULL) != SQLITE_OK)
        rc = pgw_err_set(err, PGW_EUNAVAILABLE, "%s: cannot open: %s", s->path,
                         s->db ? sqlite3_errmsg(s->db) : "out of memory");
    if (rc == PGW_OK)
        rc = configure(s, err);
    if (rc == PGW_OK)
        rc = migrate(s, err);
    if (rc == PGW_OK)
        rc = prepare_statements(s, err);
    if (rc != PGW_OK) {
        pgw_store_close(s);
        return rc;
    }
    *out = s;
    return PGW_OK;
}

void pgw_store_close(pgw_store *s)
{
    if (s == NULL)
        return;
    sqlite3_finalize(s->insert_transfer);
    sqlite3_finalize(s->select_head);
    sqlite3_finalize(s->select_page);
    sqlite3_finalize(s->insert_key);
    sqlite3_finalize(s->select_key);
    sqlite3_stmt *all[] = {s->savepoint,  s->release,    s->select_debt, s->put_member,
                           s->insert_lot, s->select_lot, s->expire_lot,  s->due_lots};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        sqlite3_finalize(all[i]);
    sqlite3_close(s->db);
    free(s);
}

int pgw_store_schema_version(pgw_store *s, int64_t *out, pgw_err *err)
{
    return read_user_version(s, out, err);
}

int pgw_store_begin(pgw_store *s, pgw_err *err)
{
    s->head_cached = false; /* another connection may have appended since */
    /* IMMEDIATE takes the write lock now, so the chain head read inside the
     * transaction cannot change under us. */
    return exec(s, "BEGIN IMMEDIATE", "beginning a transaction", err);
}

bool pgw_store_in_transaction(pgw_store *s)
{
    return !sqlite3_get_autocommit(s->db);
}

int pgw_store_commit(pgw_store *s, pgw_err *err)
{
    return exec(s, "COMMIT", "committing", err);
}

int pgw_store_rollback(pgw_store *s, pgw_err *err)
{
    s->head_cached = false;
    if (sqlite3_get_autocommit(s->db))
        return PGW_OK; /* nothing open: SQLite already rolled back */
    return exec(s, "ROLLBACK", "rolling back", err);
}

/* Runs a prepared statement that returns no rows (one per command: no re-parsing). */
static int step_done(pgw_store *s, sqlite3_stmt *st, const char *what, pgw_err *err)
{
    int step = sqlite3_step(st);
    sqlite3_reset(st);
    return step == SQLITE_DONE ? PGW_OK : db_error(s, PGW_EIO, what, err);
}

int pgw_store_savepoint(pgw_store *s, pgw_err *err)
{
    return step_done(s, s->savepoint, "starting a command", err);
}

int pgw_store_release(pgw_store *s, pgw_err *err)
{
    return step_done(s, s->release, "finishing a command", err);
}

int pgw_store_rollback_to(pgw_store *s, pgw_err *err)
{
    s->head_cached = false;
    int rc = exec(s, "ROLLBACK TO pgw_command", "undoing a command", err);
    if (rc == PGW_OK)
        rc = exec(s, "RELEASE pgw_command", "undoing a command", err);
    return rc;
}

/* Copies a text column into a fixed array; false when it does not fit. */
static bool column_text(sqlite3_stmt *st, int col, char *out, size_t cap)
{
    const unsigned char *text = sqlite3_column_text(st, col);
    size_t len = (size_t)sqlite3_column_bytes(st, col);
    if (text == NULL || len >= cap)
        return false;
    memcpy(out, text, len + 1);
    return true;
}

static bool column_hash(sqlite3_stmt *st, int col, uint8_t out[PGW_HASH_LEN])
{
    if (sqlite3_column_bytes(st, col) != PGW_HASH_LEN)
        return false;
    memcpy(out, sqlite3_column_blob(st, col), PGW_HASH_LEN);
    return true;
}

/* Reads a key's record; *found false when there is none. */
static int read_key(pgw_store *s, const char *key, bool *found, pgw_idem_record *out, pgw_err *err)
{
    sqlite3_stmt *st = s->select_key;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    int rc = PGW_OK;
    *found = step == SQLITE_ROW;
    if (*found && column_hash(st, 0, out->fingerprint)) {
        out->first_transfer = sqlite3_column_int64(st, 1);
        out->transfer_count = sqlite3_column_int64(st, 2);
    } else if (*found) {
        rc = pgw_err_set(err, PGW_EIO, "%s: key %.128s has a malformed fingerprint", s->path, key);
    } else if (step != SQLITE_DONE) {
        rc = db_error(s, PGW_EIO, "reading an idempotency key", err);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

int pgw_store_find_key(pgw_store *s, const char *key, bool *found, pgw_idem_record *out,
                       pgw_err *err)
{
    return read_key(s, key, found, out, err);
}

int pgw_store_record_key(pgw_store *s, const char *key, const uint8_t fingerprint[PGW_HASH_LEN],
                         int64_t first_transfer, int64_t transfer_count, int64_t now_us,
                         bool *replayed, pgw_idem_record *existing, pgw_err *err)
{
    PGW_ASSERT(!sqlite3_get_autocommit(s->db));
    PGW_ASSERT(transfer_count >= 0);
    sqlite3_stmt *st = s->insert_key;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, fingerprint, PGW_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, first_transfer);
    sqlite3_bind_int64(st, 4, transfer_count);
    sqlite3_bind_int64(st, 5, now_us);
    int step = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (step != SQLITE_DONE)
        return db_error(s, PGW_EIO, "recording an idempotency key", err);
    *replayed = sqlite3_changes(s->db) == 0; /* the primary key said: already there */
    if (!*replayed)
        return PGW_OK;
    bool found = false;
    int rc = read_key(s, key, &found, existing, err);
    PGW_ASSERT(rc != PGW_OK || found); /* the insert just met it, in this transaction */
    if (rc == PGW_OK && memcmp(existing->fingerprint, fingerprint, PGW_HASH_LEN) != 0)
        rc = pgw_err_set(err, PGW_ECONFLICT,
                         "idempotency key %.128s was used before for a different request", key);
    return rc;
}

int pgw_store_chain_head(pgw_store *s, int64_t *id, uint8_t hash[PGW_HASH_LEN], pgw_err *err)
{
    sqlite3_stmt *st = s->select_head;
    int step = sqlite3_step(st);
    int rc = PGW_OK;
    *id = 0;
    memcpy(hash, PGW_GENESIS_HASH, PGW_HASH_LEN);
    if (step == SQLITE_ROW && sqlite3_column_bytes(st, 1) == PGW_HASH_LEN) {
        *id = sqlite3_column_int64(st, 0);
        memcpy(hash, sqlite3_column_blob(st, 1), PGW_HASH_LEN);
    } else if (step != SQLITE_DONE) {
        rc = db_error(s, PGW_EIO, "reading the chain head", err);
    }
    sqlite3_reset(st);
    return rc;
}

static void bind_transfer(sqlite3_stmt *st, const pgw_transfer *t)
{
    sqlite3_bind_int64(st, 1, t->id);
    sqlite3_bind_int(st, 2, (int)t->kind);
    sqlite3_bind_text(st, 3, t->idem_key, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, t->fingerprint, PGW_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, t->debit, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, t->credit, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, t->points);
    sqlite3_bind_text(st, 8, t->shop_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, t->channel, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 10, t->occurred_at);
    sqlite3_bind_int64(st, 11, t->recorded_at_us);
    sqlite3_bind_text(st, 12, t->reference, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 13, t->breakdown, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 14, t->prev_hash, PGW_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 15, t->hash, PGW_HASH_LEN, SQLITE_STATIC);
}

int pgw_store_append_transfer(pgw_store *s, pgw_transfer *t, pgw_err *err)
{
    PGW_ASSERT(!sqlite3_get_autocommit(s->db)); /* only inside a transaction */
    int rc = PGW_OK;
    if (!s->head_cached)
        rc = pgw_store_chain_head(s, &s->head_id, s->head_hash, err);
    if (rc != PGW_OK)
        return rc;
    t->id = s->head_id + 1;
    rc = pgw_transfer_link(t, s->head_hash, err);
    if (rc != PGW_OK)
        return rc;
    bind_transfer(s->insert_transfer, t);
    int step = sqlite3_step(s->insert_transfer);
    sqlite3_reset(s->insert_transfer);
    sqlite3_clear_bindings(s->insert_transfer);
    if (step != SQLITE_DONE) {
        s->head_cached = false;
        return db_error(s, PGW_EIO, "appending a transfer", err);
    }
    s->head_cached = true;
    s->head_id = t->id;
    memcpy(s->head_hash, t->hash, PGW_HASH_LEN);
    return PGW_OK;
}

/* One row into a transfer; false when a stored value does not fit its field. */
static bool row_to_transfer(sqlite3_stmt *st, pgw_transfer *t)
{
    memset(t, 0, sizeof(*t));
    t->id = sqlite3_column_int64(st, 0);
    t->kind = (pgw_transfer_kind)sqlite3_column_int(st, 1);
    t->points = sqlite3_column_int64(st, 6);
    t->occurred_at = sqlite3_column_int64(st, 9);
    t->recorded_at_us = sqlite3_column_int64(st, 10);
    return column_text(st, 2, t->idem_key, sizeof(t->idem_key)) &&
           column_hash(st, 3, t->fingerprint) && column_text(st, 4, t->debit, sizeof(t->debit)) &&
           column_text(st, 5, t->credit, sizeof(t->credit)) &&
           column_text(st, 7, t->shop_id, sizeof(t->shop_id)) &&
           column_text(st, 8, t->channel, sizeof(t->channel)) &&
           column_text(st, 11, t->reference, sizeof(t->reference)) &&
           column_text(st, 12, t->breakdown, sizeof(t->breakdown)) &&
           column_hash(st, 13, t->prev_hash) && column_hash(st, 14, t->hash);
}

int pgw_store_read_transfers(pgw_store *s, int64_t after_id, pgw_transfer *out, size_t cap,
                             size_t *n, pgw_err *err)
{
    sqlite3_stmt *st = s->select_page;
    sqlite3_bind_int64(st, 1, after_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)cap);
    int rc = PGW_OK, step;
    *n = 0;
    while (rc == PGW_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        PGW_ASSERT(*n < cap);
        if (!row_to_transfer(st, &out[*n]))
            rc = pgw_err_set(err, PGW_EIO, "%s: transfer %lld has a field beyond its bound",
                             s->path, (long long)sqlite3_column_int64(st, 0));
        (*n)++;
    }
    if (rc == PGW_OK && step != SQLITE_DONE)
        rc = db_error(s, PGW_EIO, "reading transfers", err);
    sqlite3_reset(st);
    return rc;
}

/* Account count and points moved, in SQL. (A sum-to-zero check belongs
 * with cached balances: over the log itself every row adds +p and -p.) */
static int verify_sums(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    static const char sql[] =
        "SELECT (SELECT COUNT(*) FROM (SELECT debit FROM transfers UNION SELECT credit FROM "
        "transfers)), (SELECT COALESCE(SUM(points), 0) FROM transfers)";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_error(s, PGW_EIO, "summing balances", err);
    int rc = PGW_OK;
    if (sqlite3_step(st) == SQLITE_ROW) {
        r->accounts = sqlite3_column_int64(st, 0);
        r->points_moved = sqlite3_column_int64(st, 1);
    } else {
        rc = db_error(s, PGW_EIO, "summing balances", err);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Walks the chain page by page; stops at the first broken entry. */
static int verify_chain(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    pgw_transfer *page = calloc(VERIFY_PAGE, sizeof(*page));
    if (page == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory verifying %s", s->path);
    uint8_t running[PGW_HASH_LEN];
    memcpy(running, PGW_GENESIS_HASH, PGW_HASH_LEN);
    int64_t last_id = 0;
    size_t n = 0;
    int rc;
    while ((rc = pgw_store_read_transfers(s, last_id, page, VERIFY_PAGE, &n, err)) == PGW_OK &&
           n > 0) {
        size_t bad = 0;
        pgw_err broken;
        if (pgw_chain_verify(page, n, running, last_id, running, &bad, &broken) != PGW_OK) {
            r->ok = false;
            r->bad_id = page[bad].id;
            snprintf(r->problem, sizeof(r->problem), "%s", broken.msg);
            break;
        }
        r->transfers += (int64_t)n;
        last_id = page[n - 1].id;
    }
    memcpy(r->head, running, PGW_HASH_LEN);
    free(page);
    return rc;
}

/* Every member's balance equals their lots' left + held minus their debt. */
static int verify_members(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    static const char sql[] =
        "SELECT m.id, m.debt,"
        " (SELECT COALESCE(SUM(left_points + held), 0) FROM lots WHERE member = m.id),"
        " (SELECT COALESCE(SUM(points), 0) FROM transfers WHERE credit = 'member:' || m.id) -"
        " (SELECT COALESCE(SUM(points), 0) FROM transfers WHERE debit = 'member:' || m.id)"
        " FROM members m ORDER BY m.id";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_error(s, PGW_EIO, "checking members", err);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t debt = sqlite3_column_int64(st, 1), lots = sqlite3_column_int64(st, 2);
        int64_t balance = sqlite3_column_int64(st, 3);
        r->members++;
        if (r->ok && balance != lots - debt) {
            r->ok = false;
            snprintf(r->problem, sizeof(r->problem),
                     "member %.32s: balance %lld but lots hold %lld and debt is %lld",
                     (const char *)sqlite3_column_text(st, 0), (long long)balance, (long long)lots,
                     (long long)debt);
        }
    }
    sqlite3_finalize(st);
    return step == SQLITE_DONE ? PGW_OK : db_error(s, PGW_EIO, "checking members", err);
}

int pgw_store_verify(pgw_store *s, pgw_verify_report *r, pgw_err *err)
{
    memset(r, 0, sizeof(*r));
    r->ok = true;
    int rc = verify_chain(s, r, err);
    if (rc == PGW_OK)
        rc = verify_sums(s, r, err);
    if (rc == PGW_OK)
        rc = verify_members(s, r, err);
    return rc;
}

int pgw_store_member_debt(pgw_store *s, const char *member, bool *found, int64_t *debt,
                          pgw_err *err)
{
    sqlite3_stmt *st = s->select_debt;
    sqlite3_bind_text(st, 1, member, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW;
    *debt = *found ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        return db_error(s, PGW_EIO, "reading a member", err);
    return PGW_OK;
}

int pgw_store_put_member(pgw_store *s, const char *member, int64_t debt, int64_t now_us,
                         pgw_err *err)
{
    PGW_ASSERT(debt >= 0);
    sqlite3_stmt *st = s->put_member;
    sqlite3_bind_text(st, 1, member, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, debt);
    sqlite3_bind_int64(st, 3, now_us);
    int rc = step_done(s, st, "writing a member", err);
    sqlite3_clear_bindings(st);
    return rc;
}

int pgw_store_insert_lot(pgw_store *s, pgw_lot *lot, pgw_err *err)
{
    PGW_ASSERT(lot->points > 0 && lot->left >= 0 && lot->held >= 0);
    PGW_ASSERT(lot->left + lot->held <= lot->points);
    sqlite3_stmt *st = s->insert_lot;
    sqlite3_bind_text(st, 1, lot->member, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, lot->points);
    sqlite3_bind_int64(st, 3, lot->left);
    sqlite3_bind_int64(st, 4, lot->held);
    sqlite3_bind_int64(st, 5, lot->earned_at);
    sqlite3_bind_int64(st, 6, lot->expires_at);
    sqlite3_bind_int64(st, 7, lot->source_transfer);
    int rc = step_done(s, st, "writing a lot", err);
    sqlite3_clear_bindings(st);
    if (rc == PGW_OK)
        lot->id = sqlite3_last_insert_rowid(s->db);
    return rc;
}

/* One row of LOT_COLUMNS into a lot; false when the member id does not fit. */
static bool row_to_lot(sqlite3_stmt *st, pgw_lot *lot, int64_t *expired)
{
    memset(lot, 0, sizeof(*lot));
    lot->id = sqlite3_column_int64(st, 0);
    lot->points = sqlite3_column_int64(st, 2);
    lot->left = sqlite3_column_int64(st, 3);
    lot->held = sqlite3_column_int64(st, 4);
    lot->earned_at = sqlite3_column_int64(st, 5);
    lot->expires_at = sqlite3_column_int64(st, 6);
    lot->source_transfer = sqlite3_column_int64(st, 7);
    if (expired != NULL)
        *expired = sqlite3_column_int64(st, 8);
    return column_text(st, 1, lot->member, sizeof(lot->member));
}

int pgw_store_get_lot(pgw_store *s, int64_t id, bool *found, pgw_lot *out, int64_t *expired,
                      pgw_err *err)
{
    sqlite3_stmt *st = s->select_lot;
    sqlite3_bind_int64(st, 1, id);
    int step = sqlite3_step(st);
    int rc = PGW_OK;
    *found = step == SQLITE_ROW;
    if (*found && !row_to_lot(st, out, expired))
        rc = pgw_err_set(err, PGW_EIO, "%s: lot %lld has a malformed member", s->path,
                         (long long)id);
    else if (!*found && step != SQLITE_DONE)
        rc = db_error(s, PGW_EIO, "reading a lot", err);
    sqlite3_reset(st);
    return rc;
}

int pgw_store_expire_lot_points(pgw_store *s, int64_t id, int64_t points, pgw_err *err)
{
    PGW_ASSERT(points > 0);
    sqlite3_stmt *st = s->expire_lot;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, points);
    int rc = step_done(s, st, "expiring a lot", err);
    if (rc == PGW_OK && sqlite3_changes(s->db) != 1)
        rc = pgw_err_set(err, PGW_ESTATE, "lot %lld has fewer than %lld free points", (long long)id,
                         (long long)points);
    return rc;
}

int pgw_store_due_lots(pgw_store *s, int64_t now, int64_t after_id, pgw_lot *out, size_t cap,
                       size_t *n, pgw_err *err)
{
    sqlite3_stmt *st = s->due_lots;
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, after_id);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)cap);
    int rc = PGW_OK, step;
    *n = 0;
    while (rc == PGW_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        PGW_ASSERT(*n < cap);
        if (!row_to_lot(st, &out[(*n)++], NULL))
            rc = pgw_err_set(err, PGW_EIO, "%s: a lot has a malformed member", s->path);
    }
    if (rc == PGW_OK && step != SQLITE_DONE)
        rc = db_error(s, PGW_EIO, "reading due lots", err);
    sqlite3_reset(st);
    return rc;
}

int pgw_store__exec_for_test(pgw_store *s, const char *sql, pgw_err *err)
{
    return exec(s, sql, "test SQL", err);
}
