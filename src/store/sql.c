/*
 * sql.c - see sql.h. Two drivers behind one statement type: SQLite's
 * calls pass straight through; PostgreSQL's translate the text once,
 * keep the bindings as text (blobs as binary), and run the statement on
 * its first step.
 */
#include "sql.h"

#include "core/assertions.h"
#include "core/utf8.h"
#include "page_cache.h"
#include "wal_vfs.h"
#include "util/clock.h"
#include "util/path.h"
#include "util/redact.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define NAME_MAX_LEN (PGW_SQL_URL_MAX + 1) /* a SQLite path is most of a URL */
#define ERRMSG_MAX   384
#define SESSION_MAX  256
#define CONNINFO_MAX (PGW_SQL_URL_MAX + 200) /* the URL and with_defaults() */
/* PostgreSQL type OIDs (server/catalog/pg_type_d.h is not in libpq-dev). */
#define OID_BYTEA          17
#define OID_INT8           20
#define OID_TEXT           25
#define RECONNECT_FIRST_US 50000   /* 50 ms */
#define RECONNECT_MAX_US   5000000 /* 5 s */
#define SENT_MAX           32      /* statements pgw_sql_send may leave unanswered */
#define SENT_TEXT_MAX      56      /* of each, to name it if it fails */

enum bound { UNBOUND, BOUND_INT, BOUND_TEXT, BOUND_BLOB, BOUND_NULL };

struct pgw_sql {
    pgw_sql_kind kind;
    sqlite3 *lite;
    PGconn *pg;
    int64_t changes;     /* PostgreSQL: of the last INSERT, UPDATE or DELETE */
    uint64_t generation; /* PostgreSQL: bumped by each reconnect */
    uint64_t next_stmt;  /* PostgreSQL: names of prepared statements */
    bool in_txn;         /* as the caller said (pgw_sql_mark_transaction) */
    bool session_ok;     /* PostgreSQL: pg_session ran on this connection */
    /* PostgreSQL: when a lost connection may be tried again, and the wait
     * after the next failure (doubling to RECONNECT_MAX_US) */
    int64_t next_reconnect_us, reconnect_wait_us;
    char session[SESSION_MAX]; /* SETs of pgw_sql_set_session, made again on reconnecting */
    char name[NAME_MAX_LEN];
    char errmsg[ERRMSG_MAX];
    int errcode;    /* what the last statement failed with; PGW_OK: it did not */
    bool on_lock;   /* that failure was waiting for a lock, the connection kept */
    bool on_space;  /* the last failure was a full disk (pgw_sql_failed_on_space) */
    bool on_damage; /* the last failure was a damaged file (pgw_sql_failed_on_damage) */
    /* PostgreSQL: statements pgw_sql_send sent in pipeline mode whose
     * results no one has read yet, and the start of each one's text */
    int n_sent;
    char sent[SENT_MAX][SENT_TEXT_MAX];
};

struct pgw_sql_stmt {
    pgw_sql *db;
    char *text; /* as given */
    bool persistent;
    sqlite3_stmt *lite;
    /* PostgreSQL */
    char *pg_text; /* ?N as $N, / *pg * / uncommented */
    int n_params;  /* highest ?N in the text */
    char name[32];
    uint64_t prepared_in; /* the generation it was prepared in; 0: not yet */
    enum bound bound[PGW_SQL_PARAMS_MAX + 1];
    const char *value[PGW_SQL_PARAMS_MAX + 1];
    int length[PGW_SQL_PARAMS_MAX + 1];
    char ints[PGW_SQL_PARAMS_MAX + 1][24];
    PGresult *res;
    int row, rows;
    bool streaming; /* a one-off statement's rows, one result each (pg_stream_step) */
    int blob_col;   /* the column decoded into blob; -1 none */
    size_t blob_len;
    uint8_t blob[PGW_SQL_BLOB_MAX];
};

/* A severity libpq writes before a server's message ("ERROR:  ..."), at
 * `p`: its length, or 0. */
static size_t severity_at(const char *p)
{
    static const char *const severities[] = {"ERROR:  ", "FATAL:  ", "PANIC:  "};
    for (size_t i = 0; i < sizeof(severities) / sizeof(severities[0]); i++)
        if (strncmp(p, severities[i], strlen(severities[i])) == 0)
            return strlen(severities[i]);
    return 0;
}

/* `text` of `n` bytes without a character its cut left incomplete (the
 * rest as it is, valid UTF-8 or not); its new length. */
static size_t whole_characters(char *text, size_t n)
{
    size_t start = n, follow = 0;
    while (start > 0 && follow < 3 && ((unsigned char)text[start - 1] & 0xC0) == 0x80)
        start--, follow++;
    if (start == 0)
        return n;
    unsigned char lead = (unsigned char)text[start - 1];
    size_t need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : follow;
    if (need > follow)
        text[n = start - 1] = '\0';
    return n;
}

/*
 * A failure, PGW_EIO unless the caller then says what else (failed()).
 * Its message as one line, whole characters, without libpq's severities:
 * it goes into log lines and a notice's last_error. A line that goes on
 * (libpq's tab) joins with a space, the next one with "; "; libpq's last
 * newline goes. Regression: "ERROR:  duplicate key value ...\nDETAIL:
 * ...", "server closed the connection unexpectedly\n\tThis probably ...".
 */
static void set_errmsg(pgw_sql *db, const char *msg)
{
    db->errcode = PGW_EIO;
    char *out = db->errmsg;
    size_t n = 0, cap = sizeof(db->errmsg) - 1;
    for (const char *p = msg ? msg : "unknown error"; *p != '\0' && n < cap;) {
        if (*p == '\n' || *p == '\t') {
            bool goes_on = false;
            for (; *p == '\n' || *p == '\t' || *p == ' '; p++)
                goes_on |= *p == '\t';
            const char *join = *p == '\0' || n == 0 ? "" : goes_on ? " " : "; ";
            for (; *join != '\0' && n < cap; join++)
                out[n++] = *join;
            continue;
        }
        size_t severity = severity_at(p);
        if (severity > 0) {
            p += severity;
            continue;
        }
        out[n++] = *p++;
    }
    out[n] = '\0';
    n = whole_characters(out, n);
    while (n > 0 && out[n - 1] == ' ')
        out[--n] = '\0';
}

static int failed(pgw_sql *db, int code)
{
    PGW_ASSERT(code < 0);
    db->errcode = code;
    db->on_lock = false;
    return code;
}

/* Whether SQLite's failure was a duplicate key (sql.h: PGW_ECONFLICT). The
 * result a call returns is the primary code unless extended codes are on;
 * the connection keeps the extended one of its last failure. */
static bool sqlite_duplicate_key(pgw_sql *db, int result)
{
    int extended =
        result != (result & 0xff) || db->lite == NULL ? result : sqlite3_extended_errcode(db->lite);
    return extended == SQLITE_CONSTRAINT_UNIQUE || extended == SQLITE_CONSTRAINT_PRIMARYKEY ||
           extended == SQLITE_CONSTRAINT_ROWID;
}

/* Whether the file system holding the SQLite file `path` has no block left
 * for this user: what makes any write there fail, its -shm's included. */
static bool folder_full(const char *path)
{
    char dir[PGW_SQL_URL_MAX + 1];
    struct statvfs vfs;
    return pgw_path_folder(path, dir, sizeof(dir)) && statvfs(dir, &vfs) == 0 && vfs.f_bavail == 0;
}

/*
 * Why a write of SQLite's failed, when it is the space, and what to do:
 * "disk I/O error" alone sent an operator whose disk was full looking for
 * a hardware fault. A full disk is seen by the WAL's own record (its
 * writes fail as SQLITE_IOERR_WRITE whatever their cause: see wal_vfs.c),
 * by SQLITE_FULL, by the errno of the failing call (growing the -shm index
 * at open fails as SQLITE_IOERR_SHMSIZE, ENOSPC), or by the file system
 * having no block left. A file-size limit (ulimit -f, LimitFSIZE=) fails
 * its writes with EFBIG. NULL when none of these is the cause.
 */
static const char *space_cause(pgw_sql *db, int primary)
{
    if (primary != SQLITE_IOERR && primary != SQLITE_FULL && primary != SQLITE_CANTOPEN)
        return NULL;
    /* The errno SQLite keeps is the thread's at the failure it reports:
     * right for the call that failed, so read only for these results. */
    int sys = db->lite != NULL ? sqlite3_system_errno(db->lite) : 0;
    if (sys == EFBIG)
        return " (a file would grow past this process's file-size limit); raise the limit "
               "(ulimit -f, systemd's LimitFSIZE=), then run this again";
    /* Which disk: a backup's VACUUM INTO writes its copy elsewhere, and
     * sending its operator to the database's disk was wrong. */
    if (folder_full(db->name))
        return " (the disk is full); free space on the file system holding the database (df "
               "shows it; SQLite needs room for its -wal and -shm files beside it), then run "
               "this again";
    bool full = primary == SQLITE_FULL || sys == ENOSPC || sys == EDQUOT ||
                (db->lite != NULL && pgw_wal_vfs_disk_full(db->lite));
    return full ? " (the disk is full); free space on the file system it was writing to (df "
                  "shows it), then run this again"
                : NULL;
}

/* SQLite's result as a PGW_E... code: busy and locked are worth a retry;
 * a failure for want of space says so (space_cause). */
static int sqlite_failure(pgw_sql *db, int result)
{
    int primary = result & 0xff;
    size_t n = strlen(db->errmsg);
    const char *space = space_cause(db, primary);
    if (space != NULL && n < sizeof(db->errmsg))
        snprintf(db->errmsg + n, sizeof(db->errmsg) - n, "%s", space);
    db->on_space = space != NULL;
    db->on_damage = primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB;
    bool on_lock = primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
    bool duplicate = primary == SQLITE_CONSTRAINT && sqlite_duplicate_key(db, result);
    int code = failed(db, duplicate ? PGW_ECONFLICT : on_lock ? PGW_EUNAVAILABLE : PGW_EIO);
    db->on_lock = on_lock;
    return code;
}

/* ---- opening -------------------------------------------------------------------- */

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "already exists, skipping" and the like: not for stderr */
}

/*
 * The URL with our defaults for what it does not say: a bounded connect,
 * and TCP keepalives that notice a server gone silent (a partition) in
 * about a minute rather than the system's two hours.
 */
static void with_defaults(const char *url, char *out, size_t cap)
{
    static const char *const defaults[][2] = {{"connect_timeout", "10"},
                                              {"keepalives_idle", "30"},
                                              {"keepalives_interval", "10"},
                                              {"keepalives_count", "3"}};
    size_t n = (size_t)snprintf(out, cap, "%s", url);
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]) && n < cap; i++)
        if (strstr(url, defaults[i][0]) == NULL)
            n += (size_t)snprintf(out + n, cap - n, "%c%s=%s", strchr(out, '?') ? '&' : '?',
                                  defaults[i][0], defaults[i][1]);
    PGW_ASSERT(n < cap); /* pgw_sql_open bounds the URL well below cap */
}

/*
 * Session settings on every connection, the first and each reconnect: hex
 * bytea and UTF-8 whatever the server's defaults (sql.c decodes hex; our
 * text is UTF-8), and a session that idles in a transaction for a minute
 * (a stopped instance holding the chain lock) is ended by the server, so
 * the other instances go on. READ COMMITTED for every statement that does
 * not say otherwise (a read transaction does), whatever the database's
 * default: under REPEATABLE READ a migration's snapshot predated the lock
 * it waited for (a second schema row), and the notifier's claims failed
 * to serialize.
 */
static int pg_session(pgw_sql *db)
{
    static const char base[] = "SET bytea_output = 'hex'; SET client_encoding = 'UTF8';"
                               " SET idle_in_transaction_session_timeout = '60s';"
                               " SET default_transaction_isolation = 'read committed';";
    PQsetNoticeProcessor(db->pg, ignore_notice, NULL);
    char sql[sizeof(base) + SESSION_MAX];
    snprintf(sql, sizeof(sql), "%s%s", base, db->session);
    PGresult *res = PQexec(db->pg, sql);
    bool ok = res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        set_errmsg(db, res ? PQresultErrorMessage(res) : PQerrorMessage(db->pg));
    PQclear(res);
    return ok ? PGW_OK : failed(db, PGW_EUNAVAILABLE);
}

/* Whether a key of a URL's query may name a password ("password",
 * "sslpassword", any case, or percent-encoded: libpq decodes keys). */
static bool password_key(const char *key, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (key[i] == '%' || (len - i >= 8 && strncasecmp(key + i, "password", 8) == 0))
            return true;
    return false;
}

/* Whether url[from, to) touches a password in it: the user part's, from
 * its first ':' to the last '@' (pgw_redact_db_url's span, whatever libpq
 * makes of a '/' or an '@' in it), or a query parameter's whose key may
 * name one, key and value. */
static bool touches_password(const char *url, size_t from, size_t to)
{
    const char *rest = strstr(url, "://") + 3; /* pgw_sql_open saw the scheme */
    const char *at = strrchr(rest, '@'), *colon = strchr(rest, ':');
    if (at != NULL && colon != NULL && colon < at && from < (size_t)(at - url) &&
        to > (size_t)(colon + 1 - url))
        return true;
    for (const char *p = strchr(rest, '?'); p != NULL; p = strchr(p + 1, '&')) {
        size_t start = (size_t)(p + 1 - url), len = strcspn(p + 1, "&");
        if (password_key(p + 1, strcspn(p + 1, "=&")) && from < start + len && to > start)
            return true;
    }
    return false;
}

/* Where a token libpq quoted, from `p` (after its opening quote), ends
 * (its closing quote) when it is any part of a password in `url`; NULL
 * when it is none. The last quote that keeps it in the URL: a password
 * may hold a '"'. */
static const char *password_token_end(const char *url, const char *p)
{
    const char *end = NULL;
    for (const char *q = strchr(p, '"'); q != NULL; q = strchr(q + 1, '"')) {
        size_t len = (size_t)(q - p);
        for (const char *u = url; len > 0 && *u != '\0'; u++)
            if (strncmp(u, p, len) == 0 &&
                touches_password(url, (size_t)(u - url), (size_t)(u - url) + len)) {
                end = q;
                break;
            }
    }
    return end;
}

/*
 * libpq's reason `url` failed, as the failure's message, without the
 * URL's password: libpq quotes what it could not read, a token ('invalid
 * percent-encoded token: "p%zz..."') or the URL whole, and one that is
 * any part of a password (libpq's user part ends at the first '@' and
 * before a '/': "p%zz" of "p%zz@secret") shows as "***". Done on libpq's
 * text whole: set_errmsg's cut left a long password's start.
 */
static void set_url_errmsg(pgw_sql *db, const char *url, const char *text)
{
    char shown[ERRMSG_MAX];
    size_t n = 0;
    for (const char *p = text; *p != '\0' && n + 4 < sizeof(shown);) {
        shown[n++] = *p++;
        const char *end = p[-1] == '"' ? password_token_end(url, p) : NULL;
        if (end != NULL)
            memcpy(shown + n, "***", 3), n += 3, p = end;
    }
    shown[n] = '\0';
    set_errmsg(db, shown);
}

/*
 * Whether a PostgreSQL server answers at `conninfo` though the connection
 * failed: then it refused the login (a wrong password, a user or database
 * that does not exist), which is what the operator gave, and no retry
 * mends (the commands exit 2); none answering is an outage (exit 1). A
 * ping asks no password. Bounded at 2 s: a first try that timed out would
 * otherwise wait its whole connect_timeout again.
 */
static bool server_answers(const char *conninfo)
{
    const char *const keys[] = {"dbname", "connect_timeout", NULL};
    const char *const values[] = {conninfo, "2", NULL};
    return PQpingParams(keys, values, 1) == PQPING_OK;
}

/*
 * Whether libpq's words for a failed connection are PostgreSQL's for
 * SQLSTATE 53300 (too_many_connections: max_connections, or a role's or a
 * database's CONNECTION LIMIT, reached). The server answers then, but the
 * login is not what is wrong: it is capacity, which a retry may find
 * free. libpq keeps no SQLSTATE of a failed connection for its callers,
 * so its English words are read; a server set to another language's
 * messages is told as a refused login, its own words shown beside.
 */
static bool no_connection_free(const char *errmsg)
{
    return strstr(errmsg, "too many clients already") != NULL ||
           strstr(errmsg, "too many connections for ") != NULL ||
           strstr(errmsg, "connection slots are reserved") != NULL;
}

static int open_postgres(pgw_sql *db, const char *url, pgw_err *err)
{
    db->kind = PGW_SQL_POSTGRES;
    pgw_redact_db_url(url, db->name, sizeof(db->name));
    char conninfo[CONNINFO_MAX];
    with_defaults(url, conninfo, sizeof(conninfo));
    db->pg = PQconnectdb(conninfo);
    if (db->pg == NULL)
        return pgw_err_set_database(err, PGW_ENOMEM, "%s: out of memory connecting", db->name);
    if (PQstatus(db->pg) != CONNECTION_OK) {
        set_url_errmsg(db, conninfo, PQerrorMessage(db->pg)); /* libpq read that */
        if (no_connection_free(db->errmsg))
            return pgw_err_set_database(
                err, PGW_EUNAVAILABLE,
                "%s: cannot connect: %s (the server has no connection free for "
                "this login: raise its max_connections, or the role's or the "
                "database's CONNECTION LIMIT, or run fewer gateways on it)",
                db->name, db->errmsg);
        if (server_answers(conninfo))
            return pgw_err_set_database(
                err, PGW_EINVAL,
                "%s: cannot connect: %s (the server answers, but not to this "
                "login: check the user, the database name and the password: "
                "the URL, PGPASSWORD or ~/.pgpass)",
                db->name, db->errmsg);
        return pgw_err_set_database(err, PGW_EUNAVAILABLE, "%s: cannot connect: %s", db->name,
                                    db->errmsg);
    }
    if (pg_session(db) != PGW_OK)
        return pgw_err_set_database(err, PGW_EUNAVAILABLE, "%s: setting up the session: %s",
                                    db->name, db->errmsg);
    db->session_ok = true;
    db->generation = 1;
    return PGW_OK;
}

int pgw_sql_set_session(pgw_sql *db, const char *sql, pgw_err *err)
{
    if (db->kind == PGW_SQL_SQLITE)
        return pgw_sql_exec(db, sql, "setting up the session", err);
    size_t have = strlen(db->session);
    if (have + strlen(sql) + 2 > sizeof(db->session))
        return pgw_err_set_database(err, PGW_EFULL, "%s: too many session settings", db->name);
    int rc = pgw_sql_exec(db, sql, "setting up the session", err);
    if (rc == PGW_OK)
        snprintf(db->session + have, sizeof(db->session) - have, "%s;", sql);
    return rc;
}

/*
 * Before the first open initializes SQLite (if something in the process
 * initialized it first, these stay SQLite's own, only slower):
 * - its page cache without its walk at every commit (page_cache.h);
 * - the writer's WAL in one write per commit (wal_vfs.h); without it the
 *   writer writes each frame, as SQLite does;
 * - statement journals in memory up to STMT_JOURNAL_SPILL. The writer runs
 *   each command in a savepoint, whose journal keeps the first version of
 *   each page the command changes. Past SQLite's default 64 KiB the journal
 *   became a temporary file (/var/tmp/etilqs_...) for the rest of the
 *   transaction: an open, unlink and close per batch and a pwrite() per
 *   page, about one per event (strace of the writer, bench_store). At 120
 *   KiB (58 pages) strace shows none at batches of 128 or 1024. Not more:
 *   the journal moves to its file in writes of that size, and SQLite's
 *   unix files refuse a write over 128 KiB (SQLITE_FULL). At 4 MiB a
 *   migration dropping a table of 200,000 rows failed so.
 * - no memory statistics: with them every sqlite3_malloc and sqlite3_free
 *   takes one global mutex, 2% of the writer's time (perf at 128
 *   connections), for counts nothing here reads (sqlite3_memory_used, a
 *   soft heap limit).
 */
#define STMT_JOURNAL_SPILL (120 << 10)
static pthread_once_t sqlite_once = PTHREAD_ONCE_INIT;

static void set_up_sqlite(void)
{
    (void)pgw_page_cache_install(NULL);
    (void)sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, STMT_JOURNAL_SPILL);
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    (void)pgw_wal_vfs_install(); /* last: registering a VFS initializes SQLite */
}

/* "file:PATH?QUERY", SQLite's URI for `path`: '%', '?' and '#' escaped
 * (they delimit a URI), the rest as it is. False when over `cap`. */
static bool sqlite_uri(const char *path, const char *query, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "file:");
    for (; *path != '\0'; path++) {
        if (n + 4 > cap)
            return false;
        bool special = strchr("%?#", *path) != NULL;
        n += (size_t)(special ? snprintf(out + n, cap - n, "%%%02X", (unsigned char)*path)
                              : snprintf(out + n, cap - n, "%c", *path));
    }
    int k = snprintf(out + n, cap - n, "?%s", query);
    return k > 0 && (size_t)k < cap - n;
}

/* Opens the SQLite file of `url` into db: read-write (made when `create`),
 * or, with `ro_query` ("mode=ro", ...), read-only through that URI query. */
static int open_sqlite(pgw_sql *db, const char *url, bool create, const char *ro_query,
                       pgw_err *err)
{
    pthread_once(&sqlite_once, set_up_sqlite);
    db->kind = PGW_SQL_SQLITE;
    const char *path = url + 7;
    char uri[3 * PGW_SQL_URL_MAX + 32];
    if (path[0] == '\0' || strlen(path) >= sizeof(db->name) ||
        (ro_query != NULL && !sqlite_uri(path, ro_query, uri, sizeof(uri))))
        return pgw_err_set(err, PGW_EINVAL, "database URL \"%.64s\" is not sqlite:PATH", url);
    snprintf(db->name, sizeof(db->name), "%s", path);
    struct stat st;
    if (!create && stat(path, &st) != 0)
        return pgw_err_set_database(err, PGW_ENOTFOUND, "%s: no database there", path);
    int flags = ro_query != NULL ? SQLITE_OPEN_READONLY | SQLITE_OPEN_URI
                                 : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(ro_query != NULL ? uri : path, &db->lite, flags | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        return pgw_err_set_database(err, PGW_EUNAVAILABLE, "%s: cannot open: %s", path,
                                    db->lite ? sqlite3_errmsg(db->lite) : "out of memory");
    return PGW_OK;
}

int pgw_sql_open_read_only(const char *url, bool immutable, pgw_sql **out, pgw_err *err)
{
    *out = NULL;
    if (strncmp(url, "sqlite:", 7) != 0)
        return pgw_err_set(err, PGW_EINVAL, "only a SQLite database opens read-only here");
    pgw_sql *db = calloc(1, sizeof(*db));
    if (db == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory opening a database");
    int rc = open_sqlite(db, url, false, immutable ? "mode=ro&immutable=1" : "mode=ro", err);
    if (rc != PGW_OK) {
        pgw_sql_close(db);
        return rc;
    }
    *out = db;
    return PGW_OK;
}

int pgw_sql_open(const char *url, bool create, pgw_sql **out, pgw_err *err)
{
    *out = NULL;
    bool postgres = strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0;
    if (strlen(url) > PGW_SQL_URL_MAX)
        return pgw_err_set(err, PGW_EINVAL, "database URL longer than %d bytes", PGW_SQL_URL_MAX);
    if (!postgres && strncmp(url, "sqlite:", 7) != 0) {
        char shown[PGW_SQL_URL_MAX + 1];
        pgw_redact_db_url(url, shown, sizeof(shown));
        return pgw_err_set(err, PGW_EINVAL,
                           "database URL \"%.64s\" is neither sqlite:PATH nor postgresql://...",
                           shown);
    }
    pgw_sql *db = calloc(1, sizeof(*db));
    if (db == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory opening a database");
    int rc = postgres ? open_postgres(db, url, err) : open_sqlite(db, url, create, NULL, err);
    if (rc != PGW_OK) {
        pgw_sql_close(db);
        return rc;
    }
    *out = db;
    return PGW_OK;
}

void pgw_sql_close(pgw_sql *db)
{
    if (db == NULL)
        return;
    if (db->lite != NULL)
        sqlite3_close(db->lite);
    if (db->pg != NULL)
        PQfinish(db->pg);
    free(db);
}

pgw_sql_kind pgw_sql_kind_of(const pgw_sql *db)
{
    return db->kind;
}

const char *pgw_sql_name(const pgw_sql *db)
{
    return db->name;
}

void *pgw_sql_sqlite_handle(pgw_sql *db)
{
    PGW_ASSERT(db->kind == PGW_SQL_SQLITE);
    return db->lite;
}

/*
 * A reconnection refused or not answered: libpq's text of it goes to
 * stderr, the operator's, and the failure's message says only that. The
 * text names the server's address and port and what it refused (the
 * database, the user), and the message reaches what others read: a
 * notice's last_error, shown to API keys. At most one line per attempt,
 * and attempts back off to one per RECONNECT_MAX_US. (The first
 * connection, pgw_sql_open's, keeps it in its message: a command's
 * answer to its operator.)
 */
static void reconnect_failed(pgw_sql *db)
{
    set_errmsg(db, PQerrorMessage(db->pg));
    fprintf(stderr, "pointsgw: %s: reconnecting: %s\n", db->name, db->errmsg);
    set_errmsg(db, "the database server cannot be reached (reconnecting failed: why is logged)");
}

/*
 * PostgreSQL: reopens a lost connection before a statement, at most once
 * per backoff period (50 ms doubling to 5 s) so that callers failing fast
 * meanwhile do not hammer a restarting server. Never inside a transaction:
 * one the connection took with it is failed whole by whoever ran it.
 */
static int pg_ensure_connected(pgw_sql *db)
{
    /* Pipeline mode is on only while statements are sent (pgw_sql_send),
     * or on a lost connection, which PQreset below takes with it. */
    PGW_ASSERT(db->n_sent > 0 || PQpipelineStatus(db->pg) == PQ_PIPELINE_OFF ||
               PQstatus(db->pg) != CONNECTION_OK);
    if (PQstatus(db->pg) == CONNECTION_OK && db->session_ok)
        return PGW_OK;
    if (db->in_txn) {
        set_errmsg(db, "the connection was lost in the transaction");
        return failed(db, PGW_EUNAVAILABLE);
    }
    int64_t now = pgw_monotonic_us();
    if (now < db->next_reconnect_us) {
        set_errmsg(db, "the database is unreachable; trying again shortly");
        return failed(db, PGW_EUNAVAILABLE);
    }
    if (PQstatus(db->pg) != CONNECTION_OK) {
        PQreset(db->pg); /* the same conninfo: the same server and database */
        db->session_ok = false;
        db->generation++; /* every statement is prepared again on its next step */
        db->n_sent = 0;   /* their results went with the old connection */
    }
    if (PQstatus(db->pg) != CONNECTION_OK)
        reconnect_failed(db);
    else
        db->session_ok =
            pg_session(db) == PGW_OK; /* a failure is tried again, on this connection */
    if (!db->session_ok) {
        db->reconnect_wait_us = db->reconnect_wait_us == 0 ? RECONNECT_FIRST_US
                                : db->reconnect_wait_us >= RECONNECT_MAX_US / 2
                                    ? RECONNECT_MAX_US
                                    : 2 * db->reconnect_wait_us;
        db->next_reconnect_us = now + db->reconnect_wait_us;
        return failed(db, PGW_EUNAVAILABLE);
    }
    db->reconnect_wait_us = 0;
    return PGW_OK;
}

/* ---- errors ----------------------------------------------------------------------- */

/*
 * A failed result's message, one line (set_errmsg): the server's primary
 * message (it names the constraint broken), its SQLSTATE and its hint;
 * libpq's own (a connection lost) when there is none. Not its DETAIL,
 * which quotes the row ("Key (phone)=(13800138000) already exists.",
 * "Failing row contains (...)"): the message goes to the gateway's stderr
 * and a notice's last_error (shown to API keys), the server's log keeps it
 * whole. A key's columns stay, its values shown as "***".
 */
static void set_pg_errmsg(pgw_sql *db, const PGresult *res)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (primary == NULL) {
        set_errmsg(db, res ? PQresultErrorMessage(res) : PQerrorMessage(db->pg));
        if (db->errmsg[0] == '\0')
            set_errmsg(db, PQerrorMessage(db->pg));
        return;
    }
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    const char *key_end = detail && strncmp(detail, "Key (", 5) == 0 ? strstr(detail, ")=(") : NULL;
    char msg[ERRMSG_MAX];
    snprintf(msg, sizeof(msg), "%s (SQLSTATE %s)%s%.*s%s%s%s", primary, state ? state : "?",
             key_end ? "; " : "", key_end ? (int)(key_end - detail) + 1 : 0, key_end ? detail : "",
             key_end ? "=(***)" : "", hint ? "; hint: " : "", hint ? hint : "");
    set_errmsg(db, msg);
}

/* The PGW_E... code for a failed PostgreSQL result (or NULL: no result). */
static int pg_failure(pgw_sql *db, const PGresult *res)
{
    set_pg_errmsg(db, res);
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    db->on_space = state != NULL && strcmp(state, "53100") == 0; /* disk_full */
    if (PQstatus(db->pg) != CONNECTION_OK)
        return failed(db, PGW_EUNAVAILABLE);
    if (state == NULL)
        return failed(db, PGW_EIO);
    if (strcmp(state, "23505") == 0) /* unique_violation: a duplicate key (sql.h) */
        return failed(db, PGW_ECONFLICT);
    /* connection exceptions, shutdowns, serialization failures, deadlocks,
     * lock and statement timeouts, a read-only server (after a failover) */
    if (strcmp(state, "55P03") == 0 || strcmp(state, "40P01") == 0) { /* lock timeout, deadlock */
        int code = failed(db, PGW_EUNAVAILABLE);
        db->on_lock = true;
        return code;
    }
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strcmp(state, "40001") == 0 || strcmp(state, "57014") == 0 || strcmp(state, "25006") == 0)
        return failed(db, PGW_EUNAVAILABLE);
    return failed(db, PGW_EIO);
}

static int pg_drain(pgw_sql *db);

/*
 * PQexec once any pipeline is read (pgw_sql_send); PGW_OK or the failure.
 * `commit`: anything but a COMMIT done is a failure. A sent statement's
 * failure is reported when `sql` fails too: the transaction it aborted
 * refuses everything but a rollback, whose success stands.
 */
static int pg_exec(pgw_sql *db, const char *sql, bool commit)
{
    int sent = pg_drain(db);
    if (!db->session_ok) { /* the drain dropped the connection, and its transaction */
        if (sent == PGW_OK) {
            set_errmsg(db, "the connection was lost in the transaction");
            sent = failed(db, PGW_EUNAVAILABLE);
        }
        return sent;
    }
    char sent_why[ERRMSG_MAX];
    snprintf(sent_why, sizeof(sent_why), "%s", db->errmsg);
    bool sent_on_lock = db->on_lock, sent_on_space = db->on_space;
    PGresult *res = PQexec(db->pg, sql);
    ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc = status == PGRES_COMMAND_OK || (!commit && status == PGRES_TUPLES_OK)
                 ? PGW_OK
                 : pg_failure(db, res);
    if (rc == PGW_OK && commit && strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        set_errmsg(db, "a statement failed earlier in the transaction; it was rolled back");
        rc = PGW_EIO;
    }
    PQclear(res);
    if (rc != PGW_OK && sent != PGW_OK) {
        set_errmsg(db, sent_why);
        rc = failed(db, sent);
        db->on_lock = sent_on_lock;
        db->on_space = sent_on_space;
    }
    if (rc == PGW_OK)
        db->errcode = PGW_OK;
    return rc;
}

int pgw_sql_exec(pgw_sql *db, const char *sql, const char *what, pgw_err *err)
{
    if (db->kind == PGW_SQL_SQLITE) {
        char *msg = NULL;
        int result = sqlite3_exec(db->lite, sql, NULL, NULL, &msg);
        if (result == SQLITE_OK) {
            db->errcode = PGW_OK;
            return PGW_OK;
        }
        set_errmsg(db, msg);
        sqlite3_free(msg);
        return pgw_err_set_database(err, sqlite_failure(db, result), "%s: %s: %s", db->name, what,
                                    db->errmsg);
    }
    int rc = pg_ensure_connected(db);
    if (rc == PGW_OK)
        rc = pg_exec(db, sql, false);
    return rc == PGW_OK ? PGW_OK
                        : pgw_err_set_database(err, rc, "%s: %s: %s", db->name, what, db->errmsg);
}

int pgw_sql_commit(pgw_sql *db, pgw_err *err)
{
    if (db->kind == PGW_SQL_SQLITE)
        return pgw_sql_exec(db, "COMMIT", "committing", err);
    int rc = pg_exec(db, "COMMIT", true);
    return rc == PGW_OK ? PGW_OK
                        : pgw_err_set_database(err, rc, "%s: committing: %s", db->name, db->errmsg);
}

/* ---- statements ------------------------------------------------------------------- */

/*
 * The PostgreSQL text of portable SQL: ?N becomes $N and / *pg ... * /
 * comments are uncommented; quoted literals are copied as they are. The
 * result is never longer than the input.
 */
static void translate(const char *in, char *out, int *n_params)
{
    *n_params = 0;
    while (*in != '\0') {
        if (*in == '\'' || *in == '"') { /* a literal ('' inside included) or an identifier */
            const char *end = strchr(in + 1, *in);
            size_t n = end ? (size_t)(end - in) + 1 : strlen(in);
            memcpy(out, in, n);
            out += n, in += n;
        } else if (strncmp(in, "--", 2) == 0 || (strncmp(in, "/*", 2) == 0 && in[2] != 'p')) {
            const char *end = in[0] == '-' ? strchr(in, '\n') : strstr(in + 2, "*/");
            size_t n = end ? (size_t)(end - in) + (in[0] == '-' ? 0 : 2) : strlen(in);
            memcpy(out, in, n); /* a comment, copied as it is */
            out += n, in += n;
        } else if (strncmp(in, "/*pg", 4) == 0) {
            in += 4;
            const char *end = strstr(in, "*/");
            size_t n = end ? (size_t)(end - in) : strlen(in);
            memcpy(out, in, n);
            out += n, in += n + (end ? 2 : 0);
        } else if (*in == '?' && in[1] >= '0' && in[1] <= '9') {
            *out++ = '$';
            int k = 0;
            for (in++; *in >= '0' && *in <= '9'; in++) {
                if (k <= PGW_SQL_PARAMS_MAX) /* beyond it, prepare refuses the statement */
                    k = k * 10 + (*in - '0');
                *out++ = *in;
            }
            if (k > *n_params)
                *n_params = k;
        } else {
            *out++ = *in++;
        }
    }
    *out = '\0';
}

int pgw_sql_prepare(pgw_sql *db, const char *sql, bool persistent, pgw_sql_stmt **out, pgw_err *err)
{
    *out = NULL;
    pgw_sql_stmt *st = calloc(1, sizeof(*st));
    size_t len = strlen(sql);
    if (st == NULL || (st->text = malloc(len + 1)) == NULL) {
        free(st);
        set_errmsg(db, "out of memory");
        return pgw_err_set_database(err, failed(db, PGW_ENOMEM), "%s: preparing a statement: %s",
                                    db->name, db->errmsg);
    }
    memcpy(st->text, sql, len + 1);
    st->db = db;
    st->persistent = persistent;
    st->blob_col = -1;
    int rc = PGW_OK;
    if (db->kind == PGW_SQL_SQLITE) {
        unsigned flags = persistent ? SQLITE_PREPARE_PERSISTENT : 0;
        int result = sqlite3_prepare_v3(db->lite, sql, -1, flags, &st->lite, NULL);
        if (result != SQLITE_OK) {
            set_errmsg(db, sqlite3_errmsg(db->lite));
            rc = sqlite_failure(db, result);
        }
    } else if ((st->pg_text = malloc(len + 1)) == NULL) {
        set_errmsg(db, "out of memory");
        rc = failed(db, PGW_ENOMEM);
    } else {
        translate(sql, st->pg_text, &st->n_params);
        if (st->n_params > PGW_SQL_PARAMS_MAX) {
            char why[64];
            snprintf(why, sizeof(why), "%d parameters (max %d)", st->n_params, PGW_SQL_PARAMS_MAX);
            set_errmsg(db, why);
            rc = failed(db, PGW_EINVAL);
        }
        snprintf(st->name, sizeof(st->name), "pgw%llu", (unsigned long long)++db->next_stmt);
    }
    if (rc != PGW_OK) {
        pgw_sql_finalize(st);
        return pgw_err_set_database(err, rc, "%s: preparing a statement: %s", db->name, db->errmsg);
    }
    *out = st;
    return PGW_OK;
}

static void pg_stream_end(pgw_sql_stmt *st);

void pgw_sql_finalize(pgw_sql_stmt *st)
{
    if (st == NULL)
        return;
    if (st->lite != NULL)
        sqlite3_finalize(st->lite);
    PQclear(st->res);
    if (st->streaming)
        pg_stream_end(st);
    /* A prepared statement lives as long as its session; we prepare a
     * bounded set per connection (store.c), so none is deallocated. */
    free(st->pg_text);
    free(st->text);
    free(st);
}

int pgw_sql_param_count(const pgw_sql_stmt *st)
{
    return st->lite != NULL ? sqlite3_bind_parameter_count(st->lite) : st->n_params;
}

const char *pgw_sql_text(const pgw_sql_stmt *st)
{
    return st->text;
}

static bool pg_param(pgw_sql_stmt *st, int i)
{
    PGW_ASSERT(i >= 1 && i <= PGW_SQL_PARAMS_MAX);
    PGW_ASSERT(st->res == NULL); /* bound before the step that runs it */
    return st->db->kind == PGW_SQL_POSTGRES;
}

void pgw_sql_bind_int64(pgw_sql_stmt *st, int i, int64_t v)
{
    if (!pg_param(st, i)) {
        sqlite3_bind_int64(st->lite, i, v);
        return;
    }
    int n = snprintf(st->ints[i], sizeof(st->ints[i]), "%lld", (long long)v);
    st->bound[i] = BOUND_INT;
    st->value[i] = st->ints[i];
    st->length[i] = n;
}

void pgw_sql_bind_text(pgw_sql_stmt *st, int i, const char *text)
{
    PGW_ASSERT(text != NULL);
    if (!pg_param(st, i)) {
        sqlite3_bind_text(st->lite, i, text, -1, SQLITE_STATIC);
        return;
    }
    st->bound[i] = BOUND_TEXT;
    st->value[i] = text;
    st->length[i] = 0;
}

void pgw_sql_bind_blob(pgw_sql_stmt *st, int i, const void *blob, size_t len)
{
    PGW_ASSERT(len <= INT32_MAX);
    if (!pg_param(st, i)) {
        sqlite3_bind_blob(st->lite, i, blob, (int)len, SQLITE_STATIC);
        return;
    }
    st->bound[i] = BOUND_BLOB;
    st->value[i] = blob;
    st->length[i] = (int)len;
}

void pgw_sql_bind_null(pgw_sql_stmt *st, int i)
{
    if (!pg_param(st, i)) {
        sqlite3_bind_null(st->lite, i);
        return;
    }
    st->bound[i] = BOUND_NULL;
    st->value[i] = NULL;
    st->length[i] = 0;
}

static int sqlite_step(pgw_sql_stmt *st)
{
    int step = sqlite3_step(st->lite);
    if (step == SQLITE_ROW)
        return PGW_SQL_ROW;
    if (step == SQLITE_DONE)
        return PGW_SQL_DONE;
    set_errmsg(st->db, sqlite3_errmsg(st->db->lite));
    return sqlite_failure(st->db, step);
}

/* The parameter count, types and formats of the statement's bindings. */
static int pg_params(pgw_sql_stmt *st, Oid types[PGW_SQL_PARAMS_MAX],
                     int formats[PGW_SQL_PARAMS_MAX])
{
    int n = st->n_params;
    for (int i = n + 1; i <= PGW_SQL_PARAMS_MAX; i++)
        if (st->bound[i] != UNBOUND)
            n = i;
    for (int i = 1; i <= n; i++) {
        enum bound b = st->bound[i];
        /* NULL: the server infers its type; never bound: as text (a
         * parameter the SQL does not use needs some type) */
        types[i - 1] = b == BOUND_INT    ? OID_INT8
                       : b == BOUND_BLOB ? OID_BYTEA
                       : b == BOUND_NULL ? 0
                                         : OID_TEXT;
        formats[i - 1] = b == BOUND_BLOB ? 1 : 0;
    }
    return n;
}

/* Runs the statement with its bindings; the result lands in st->res. */
static void pg_execute(pgw_sql_stmt *st)
{
    pgw_sql *db = st->db;
    Oid types[PGW_SQL_PARAMS_MAX];
    int formats[PGW_SQL_PARAMS_MAX];
    int n = pg_params(st, types, formats);
    const char *const *values = st->value + 1;
    const int *lengths = st->length + 1;
    PGW_ASSERT(st->persistent); /* one-off statements stream (pg_stream_step) */
    if (st->prepared_in != db->generation) {
        PGresult *prep = PQprepare(db->pg, st->name, st->pg_text, n, types);
        if (prep == NULL || PQresultStatus(prep) != PGRES_COMMAND_OK) {
            st->res = prep;
            return;
        }
        PQclear(prep);
        st->prepared_in = db->generation;
    }
    st->res = PQexecPrepared(db->pg, st->name, n, values, lengths, formats, 0);
}

/* pgw_sql_changes after a completed statement: rows an INSERT, UPDATE or
 * DELETE changed (with RETURNING too); a SELECT leaves it, as in SQLite. */
static void record_changes(pgw_sql *db, const PGresult *res)
{
    const char *verb = PQcmdStatus((PGresult *)res);
    if (strncmp(verb, "INSERT", 6) == 0 || strncmp(verb, "UPDATE", 6) == 0 ||
        strncmp(verb, "DELETE", 6) == 0)
        db->changes = strtoll(PQcmdTuples((PGresult *)res), NULL, 10);
}

/* ---- pipelining (pgw_sql_send) ----------------------------------------------------- */

/* Queues a prepared statement in the pipeline; PGW_OK or a failure. */
static int pg_send_prepared(pgw_sql_stmt *st)
{
    Oid types[PGW_SQL_PARAMS_MAX];
    int formats[PGW_SQL_PARAMS_MAX];
    int n = pg_params(st, types, formats);
    (void)types; /* the types were given when it was prepared */
    if (!PQsendQueryPrepared(st->db->pg, st->name, n, st->value + 1, st->length + 1, formats, 0))
        return pg_failure(st->db, NULL);
    return PGW_OK;
}

/* A sent statement's failure, as the failure of the call that waited for
 * it: named, and never a unique violation (the waiting caller would take
 * it for its own, as pgw_sql_step's PGW_ECONFLICT). */
static int sent_failure(pgw_sql *db, const PGresult *res, int i)
{
    int code = pg_failure(db, res);
    bool on_lock = db->on_lock;
    char why[ERRMSG_MAX];
    /* cut between characters: a message may be Chinese (a trigger's, lc_messages) */
    snprintf(why, sizeof(why), "%.*s (a statement sent earlier: %s...)",
             (int)pgw_utf8_prefix(db->errmsg, 290), db->errmsg, db->sent[i]);
    set_errmsg(db, why);
    code = failed(db, code == PGW_ECONFLICT ? PGW_EIO : code);
    db->on_lock = on_lock;
    return code;
}

/*
 * A pipeline left open on a live connection by a failure on our side
 * (libpq out of memory, results unread): libpq would refuse every later
 * synchronous call. The connection goes, its transaction with it (the
 * caller's batch fails: pgw_sql_in_transaction turns false), and the next
 * statement outside a transaction sets the session up again.
 */
static void pg_drop_open_pipeline(pgw_sql *db)
{
    if (PQpipelineStatus(db->pg) == PQ_PIPELINE_OFF || PQstatus(db->pg) != CONNECTION_OK)
        return; /* a lost connection: pg_ensure_connected's PQreset clears it */
    PQreset(db->pg);
    db->session_ok = false;
    db->generation++;
}

/*
 * Reads the results of `n` sent statements and then of `waiting` (NULL:
 * none), up to the sync. Each statement's results end with a NULL; the
 * sync's is one result. Bounded: a lost connection gives only NULLs.
 */
static int pg_read_pipeline(pgw_sql *db, int n, pgw_sql_stmt *waiting)
{
    int rc = PGW_OK, queries = n + (waiting != NULL);
    for (int q = 0;;) {
        PGresult *res = PQgetResult(db->pg);
        if (res == NULL) {
            if (PQstatus(db->pg) != CONNECTION_OK || ++q > queries) {
                if (rc == PGW_OK)
                    rc = pg_failure(db, NULL);
                return rc;
            }
            continue;
        }
        ExecStatusType status = PQresultStatus(res);
        if (status == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            return rc;
        }
        if (q < n && rc == PGW_OK && status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
            rc = sent_failure(db, res, q);
        if (q == n && rc == PGW_OK && waiting != NULL && waiting->res == NULL)
            waiting->res = res; /* its own failure is the caller's to read */
        else
            PQclear(res);
    }
}

/*
 * Ends the pipeline pgw_sql_send began: sends `waiting` (a prepared
 * statement, or NULL) after the statements sent, then a sync, and reads
 * every result: one round trip for all. Returns the first sent
 * statement's failure (the server ran nothing after it up to the sync,
 * `waiting` included), else PGW_OK with `waiting`'s result in
 * waiting->res.
 */
static int pg_end_pipeline(pgw_sql *db, pgw_sql_stmt *waiting)
{
    PGW_ASSERT(db->n_sent > 0 && PQpipelineStatus(db->pg) != PQ_PIPELINE_OFF);
    PGW_ASSERT(waiting == NULL || (waiting->res == NULL && waiting->prepared_in == db->generation));
    int n = db->n_sent, rc = PGW_OK;
    db->n_sent = 0;
    if (waiting != NULL)
        rc = pg_send_prepared(waiting);
    if (rc == PGW_OK && !PQpipelineSync(db->pg))
        rc = pg_failure(db, NULL);
    if (rc == PGW_OK)
        rc = pg_read_pipeline(db, n, waiting);
    if (!PQexitPipelineMode(db->pg) && rc == PGW_OK)
        rc = pg_failure(db, NULL);
    pg_drop_open_pipeline(db);
    if (rc != PGW_OK && waiting != NULL) {
        PQclear(waiting->res);
        waiting->res = NULL;
    }
    return rc;
}

/* Ends a pipeline, if one is open, before a statement that waits. */
static int pg_drain(pgw_sql *db)
{
    return db->n_sent > 0 ? pg_end_pipeline(db, NULL) : PGW_OK;
}

int pgw_sql_send(pgw_sql_stmt *st)
{
    pgw_sql *db = st->db;
    if (db->kind == PGW_SQL_SQLITE || !db->in_txn || !st->persistent ||
        st->prepared_in != db->generation || db->n_sent == SENT_MAX) {
        int rc = db->kind == PGW_SQL_POSTGRES ? pg_drain(db) : PGW_OK;
        return rc == PGW_OK ? pgw_sql_step(st) : rc;
    }
    int rc = pg_ensure_connected(db);
    if (rc != PGW_OK)
        return rc;
    if (db->n_sent == 0 && !PQenterPipelineMode(db->pg))
        return pg_failure(db, NULL);
    rc = pg_send_prepared(st);
    if (rc != PGW_OK) {
        if (db->n_sent == 0) {
            (void)PQexitPipelineMode(db->pg); /* nothing in it */
            pg_drop_open_pipeline(db);
        }
        return rc; /* what was sent before is read by the next statement that waits */
    }
    snprintf(db->sent[db->n_sent++], SENT_TEXT_MAX, "%s", st->text);
    db->errcode = PGW_OK;
    return PGW_SQL_DONE;
}

/* Reads and drops what is left of a streamed statement's results. */
static void pg_stream_end(pgw_sql_stmt *st)
{
    PGresult *res;
    while ((res = PQgetResult(st->db->pg)) != NULL)
        PQclear(res);
    st->streaming = false;
}

/*
 * A one-off statement (not persistent: verify's passes over every member
 * or earn) row by row in single-row mode, so no result set holds a whole
 * table in memory.
 */
static int pg_stream_step(pgw_sql_stmt *st)
{
    pgw_sql *db = st->db;
    if (!st->streaming) {
        int rc = pg_ensure_connected(db);
        if (rc == PGW_OK)
            rc = pg_drain(db);
        if (rc != PGW_OK)
            return rc;
        Oid types[PGW_SQL_PARAMS_MAX];
        int formats[PGW_SQL_PARAMS_MAX];
        int n = pg_params(st, types, formats);
        if (!PQsendQueryParams(db->pg, st->pg_text, n, types, st->value + 1, st->length + 1,
                               formats, 0))
            return pg_failure(db, NULL);
        st->streaming = true;
        /* Without single-row mode the whole result would come as one set
         * (and read as DONE here): refuse rather than read nothing. */
        if (!PQsetSingleRowMode(db->pg)) {
            pg_stream_end(st);
            set_errmsg(db, "cannot stream a statement's rows (single-row mode)");
            return PGW_EIO;
        }
    }
    PQclear(st->res);
    st->res = PQgetResult(db->pg);
    st->blob_col = -1;
    ExecStatusType status = st->res ? PQresultStatus(st->res) : PGRES_FATAL_ERROR;
    if (status == PGRES_SINGLE_TUPLE) {
        st->row = 0;
        st->rows = 1;
        return PGW_SQL_ROW;
    }
    int rc = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK ? PGW_SQL_DONE
                                                                     : pg_failure(db, st->res);
    if (rc == PGW_SQL_DONE)
        record_changes(db, st->res);
    PQclear(st->res);
    st->res = NULL;
    pg_stream_end(st);
    return rc;
}

static int pg_step(pgw_sql_stmt *st)
{
    pgw_sql *db = st->db;
    if (!st->persistent)
        return pg_stream_step(st);
    if (st->res != NULL) {
        st->row++;
        st->blob_col = -1;
        return st->row < st->rows ? PGW_SQL_ROW : PGW_SQL_DONE;
    }
    int rc = pg_ensure_connected(db);
    bool piped = rc == PGW_OK && db->n_sent > 0 && st->prepared_in == db->generation;
    if (piped)
        rc = pg_end_pipeline(db, st); /* st in the same round trip */
    else if (rc == PGW_OK)
        rc = pg_drain(db);
    if (rc != PGW_OK)
        return rc;
    if (!piped) /* (piped, a result that never came is a failure below, never a second run) */
        pg_execute(st);
    ExecStatusType status = st->res ? PQresultStatus(st->res) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        rc = pg_failure(db, st->res);
        PQclear(st->res);
        st->res = NULL;
        return rc;
    }
    record_changes(db, st->res);
    st->row = 0;
    st->rows = PQntuples(st->res);
    st->blob_col = -1;
    return st->rows > 0 ? PGW_SQL_ROW : PGW_SQL_DONE;
}

int pgw_sql_step(pgw_sql_stmt *st)
{
    int rc = st->db->kind == PGW_SQL_SQLITE ? sqlite_step(st) : pg_step(st);
    if (rc >= 0) {
        st->db->errcode = PGW_OK;
        st->db->on_space = false; /* an older full disk is not a later failure's cause */
    }
    return rc;
}

void pgw_sql_reset(pgw_sql_stmt *st)
{
    if (st->db->kind == PGW_SQL_SQLITE) {
        sqlite3_reset(st->lite);
        sqlite3_clear_bindings(st->lite);
        return;
    }
    PQclear(st->res);
    st->res = NULL;
    if (st->streaming)
        pg_stream_end(st);
    st->blob_col = -1;
    memset(st->bound, 0, sizeof(st->bound));
    memset(st->value, 0, sizeof(st->value));
}

/* ---- columns ---------------------------------------------------------------------- */

static bool pg_column(pgw_sql_stmt *st, int col)
{
    if (st->db->kind == PGW_SQL_SQLITE)
        return false;
    PGW_ASSERT(st->res != NULL && st->row < st->rows);
    PGW_ASSERT(col >= 0 && col < PQnfields(st->res));
    return true;
}

bool pgw_sql_column_null(pgw_sql_stmt *st, int col)
{
    if (!pg_column(st, col))
        return sqlite3_column_type(st->lite, col) == SQLITE_NULL;
    return PQgetisnull(st->res, st->row, col);
}

int64_t pgw_sql_column_int64(pgw_sql_stmt *st, int col)
{
    if (!pg_column(st, col))
        return sqlite3_column_int64(st->lite, col);
    const char *v = PQgetvalue(st->res, st->row, col);
    if (v[0] == 't' || v[0] == 'f') /* a boolean */
        return v[0] == 't';
    return strtoll(v, NULL, 10);
}

const char *pgw_sql_column_text(pgw_sql_stmt *st, int col)
{
    if (!pg_column(st, col))
        return (const char *)sqlite3_column_text(st->lite, col);
    return PQgetisnull(st->res, st->row, col) ? NULL : PQgetvalue(st->res, st->row, col);
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes a bytea column ("\x0a1b..." in text format) into st->blob;
 * false when it is not one or does not fit. */
static bool pg_decode_blob(pgw_sql_stmt *st, int col)
{
    if (st->blob_col == col)
        return true;
    st->blob_col = -1;
    if (PQftype(st->res, col) != OID_BYTEA || PQgetisnull(st->res, st->row, col))
        return false;
    const char *v = PQgetvalue(st->res, st->row, col);
    size_t len = (size_t)PQgetlength(st->res, st->row, col);
    if (len < 2 || v[0] != '\\' || v[1] != 'x' || (len - 2) % 2 != 0 ||
        (len - 2) / 2 > sizeof(st->blob))
        return false;
    for (size_t i = 0; i < (len - 2) / 2; i++) {
        int hi = hex_digit(v[2 + 2 * i]), lo = hex_digit(v[3 + 2 * i]);
        if (hi < 0 || lo < 0)
            return false;
        st->blob[i] = (uint8_t)(hi << 4 | lo);
    }
    st->blob_len = (len - 2) / 2;
    st->blob_col = col;
    return true;
}

size_t pgw_sql_column_bytes(pgw_sql_stmt *st, int col)
{
    if (!pg_column(st, col))
        return (size_t)sqlite3_column_bytes(st->lite, col);
    if (PQftype(st->res, col) == OID_BYTEA)
        return pg_decode_blob(st, col) ? st->blob_len : 0;
    return (size_t)PQgetlength(st->res, st->row, col);
}

const void *pgw_sql_column_blob(pgw_sql_stmt *st, int col)
{
    if (!pg_column(st, col))
        return sqlite3_column_blob(st->lite, col);
    return pg_decode_blob(st, col) && st->blob_len > 0 ? st->blob : NULL;
}

/* ---- connection state ------------------------------------------------------------- */

int64_t pgw_sql_changes(pgw_sql *db)
{
    return db->kind == PGW_SQL_SQLITE ? sqlite3_changes(db->lite) : db->changes;
}

int64_t pgw_sql_last_insert_id(pgw_sql *db)
{
    PGW_ASSERT(db->kind == PGW_SQL_SQLITE);
    return sqlite3_last_insert_rowid(db->lite);
}

const char *pgw_sql_errmsg(pgw_sql *db)
{
    return db->errmsg; /* set by every failing call of either driver */
}

int pgw_sql_errcode(const pgw_sql *db)
{
    return db->errcode;
}

bool pgw_sql_failed_on_lock(const pgw_sql *db)
{
    return db->errcode == PGW_EUNAVAILABLE && db->on_lock;
}

bool pgw_sql_failed_on_damage(const pgw_sql *db)
{
    return db->kind == PGW_SQL_SQLITE && db->on_damage;
}

bool pgw_sql_failed_on_space(const pgw_sql *db)
{
    return db->on_space;
}

bool pgw_sql_in_transaction(pgw_sql *db)
{
    if (db->kind == PGW_SQL_SQLITE)
        return !sqlite3_get_autocommit(db->lite);
    PGTransactionStatusType t = PQtransactionStatus(db->pg);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

void pgw_sql_mark_transaction(pgw_sql *db, bool open)
{
    PGW_ASSERT(!open || !db->in_txn); /* no BEGIN inside a transaction */
    db->in_txn = open;
}
