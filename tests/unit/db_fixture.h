/*
 * db_fixture.h - a throwaway database for the store, writer and crash
 * tests (cmocka setup/teardown): SQLite in a fresh temporary directory, or,
 * when PGW_TEST_PG_DIR names a running cluster (scripts/pg-cluster.sh, the
 * ctest fixture "pg"), a fresh PostgreSQL database on it. The same test
 * programs run against both backends; ctest registers each twice.
 *
 * The directory is on a tmpfs (/dev/shm) when there is one with room: the
 * store syncs every commit (synchronous=FULL), and on the CI machine's
 * disk a sync takes 5-30 ms, two cores' worth of tests syncing at once:
 * a fresh store's migrations alone took about a second a test, the
 * random ledger runs of test_command most of their 80 s. No unit test
 * cuts the power, which is all the syncs guard against (a process killed,
 * test_crash's, loses nothing either way), so the tests prove the same.
 */
#ifndef PGW_TESTS_DB_FIXTURE_H
#define PGW_TESTS_DB_FIXTURE_H

#include "store/sql.h"
#include "store/store.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#define DB_FIXTURE_TMPFS_MAGIC 0x01021994 /* linux/magic.h TMPFS_MAGIC */
/* Room enough for every test binary at once (ctest -j3), with margin. */
#define DB_FIXTURE_TMPFS_MIN ((uint64_t)1 << 30)

typedef struct db_fixture {
    char dir[64];   /* /dev/shm or /tmp: pgw-test-XXXXXX (both backends: tests put files there) */
    char path[128]; /* SQLite: <dir>/log.db */
    char url[512];  /* sqlite:<path> or postgresql://.../<name> */
    bool pg;
    char admin[400]; /* PostgreSQL: the cluster's admin URL */
    char name[64];   /* PostgreSQL: the database's name */
} db_fixture;

static inline bool db_fixture_pg_admin(const db_fixture *f, const char *sql)
{
    PGconn *c = PQconnectdb(f->admin);
    bool ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *quiet = PQexec(c, "SET client_min_messages = warning");
        PQclear(quiet);
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            fprintf(stderr, "db_fixture: %s: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
    } else {
        fprintf(stderr, "db_fixture: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return ok;
}

/* PostgreSQL: `f`'s database made again, empty, or a copy of the
 * database `tpl` (which was made so). */
static inline int db_fixture_pg_create(const db_fixture *f, const char *tpl)
{
    char sql[200];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", f->name);
    if (!db_fixture_pg_admin(f, sql))
        return -1;
    /* Sorting text as en-US does, as production databases often do: the
     * store must not depend on the database's collation (byte order).
     * FILE_COPY: PostgreSQL 15's default (WAL_LOG) writes every page of
     * the template through the log, which a test cluster (fsync off)
     * does not need: a copy of template0 took ~870 ms that way and ~240
     * by FILE_COPY under make test's load, ~200 unit tests a run. */
    if (tpl != NULL && tpl[0] != '\0')
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s TEMPLATE %s STRATEGY FILE_COPY", f->name,
                 tpl);
    else
        snprintf(sql, sizeof(sql),
                 "CREATE DATABASE %s TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                 "STRATEGY FILE_COPY",
                 f->name);
    return db_fixture_pg_admin(f, sql) ? 0 : -1;
}

/* An empty database again (the SQLite file is removed; the store's next
 * open creates it). */
static inline int db_fixture_reset(const db_fixture *f)
{
    if (!f->pg) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -f '%s' '%s-wal' '%s-shm'", f->path, f->path, f->path);
        return system(cmd) == 0 ? 0 : -1;
    }
    return db_fixture_pg_create(f, NULL);
}

static inline int db_fixture_pg_setup(db_fixture *f, const char *cluster, const char *tpl)
{
    static int counter;
    char file[256];
    snprintf(file, sizeof(file), "%s/url", cluster);
    FILE *in = fopen(file, "r");
    if (in == NULL || fgets(f->admin, sizeof(f->admin), in) == NULL) {
        fprintf(stderr, "db_fixture: no cluster URL in %s\n", file);
        if (in != NULL)
            fclose(in);
        return -1;
    }
    fclose(in);
    f->admin[strcspn(f->admin, "\n")] = '\0';
    f->pg = true;
    snprintf(f->name, sizeof(f->name), "pgwt_%d_%d", (int)getpid(), ++counter);
    /* the admin URL ends in /postgres: the same server, another database */
    char *slash = strrchr(f->admin, '/');
    snprintf(f->url, sizeof(f->url), "%.*s/%s", (int)(slash - f->admin), f->admin, f->name);
    return db_fixture_pg_create(f, tpl);
}

/* Where the directory goes: /dev/shm when it is a writable tmpfs with
 * DB_FIXTURE_TMPFS_MIN free (a container's is often 64 MB), else /tmp. */
static inline const char *db_fixture_base(void)
{
    struct statfs fs;
    if (statfs("/dev/shm", &fs) == 0 && (uint64_t)fs.f_type == DB_FIXTURE_TMPFS_MAGIC &&
        (uint64_t)fs.f_bavail * (uint64_t)fs.f_bsize >= DB_FIXTURE_TMPFS_MIN &&
        access("/dev/shm", W_OK) == 0)
        return "/dev/shm";
    return "/tmp";
}

/* Fills `f`: its directory made, the database empty (PostgreSQL: made
 * from `tpl`, else template0; SQLite: made by whoever opens it). */
static inline int db_fixture_make(db_fixture *f, const char *tpl)
{
    snprintf(f->dir, sizeof(f->dir), "%s/pgw-test-XXXXXX", db_fixture_base());
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/log.db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
    const char *cluster = getenv("PGW_TEST_PG_DIR");
    if (cluster != NULL && cluster[0] != '\0' && db_fixture_pg_setup(f, cluster, tpl) != 0) {
        rmdir(f->dir); /* still empty */
        return -1;
    }
    return 0;
}

/* Removes `f`'s directory and database. */
static inline int db_fixture_drop(const db_fixture *f)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    if (f->pg) {
        char sql[160];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", f->name);
        if (!db_fixture_pg_admin(f, sql))
            rc = -1;
    }
    return rc == 0 ? 0 : -1;
}

/* Makes the directory; the database itself is created by whoever opens it. */
static inline int db_fixture_setup(void **state)
{
    db_fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    if (db_fixture_make(f, NULL) != 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static inline int db_fixture_teardown(void **state)
{
    db_fixture *f = *state;
    int rc = db_fixture_drop(f);
    free(f);
    return rc;
}

/*
 * A store made by pgw_store_open (every migration run), made once a
 * process and copied for each test that starts from an empty store
 * (db_fixture_setup_migrated, db_fixture_reset_migrated): the copy is
 * the same database, and the migrations cost a test nothing (on
 * PostgreSQL about a second, some 40 transactions of DDL). Tests of the
 * migrations themselves keep db_fixture_setup. Dropped at exit.
 */
static inline db_fixture *db_fixture_tpl(void)
{
    static db_fixture tpl; /* its dir empty until made */
    return &tpl;
}

/* The process that made the template: only it drops it at exit, not a
 * child it forked that calls exit() (the parent's copies would then be
 * of nothing). */
static inline pid_t *db_fixture_tpl_owner(void)
{
    static pid_t owner;
    return &owner;
}

static inline void db_fixture_tpl_drop(void)
{
    db_fixture *t = db_fixture_tpl();
    if (getpid() != *db_fixture_tpl_owner())
        return;
    if (t->dir[0] != '\0' && db_fixture_drop(t) != 0)
        fprintf(stderr, "db_fixture: the template %s was not removed\n", t->url);
    t->dir[0] = '\0';
}

static inline int db_fixture_tpl_make(void)
{
    db_fixture *t = db_fixture_tpl();
    if (t->dir[0] != '\0')
        return 0;
    if (db_fixture_make(t, NULL) != 0)
        return -1;
    pgw_store *s = NULL;
    pgw_err err;
    if (pgw_store_open(t->url, true, &s, &err) != PGW_OK) {
        fprintf(stderr, "db_fixture: the template: %s\n", err.msg);
        db_fixture_drop(t);
        t->dir[0] = '\0';
        return -1;
    }
    pgw_store_close(s);
    *db_fixture_tpl_owner() = getpid();
    return atexit(db_fixture_tpl_drop) == 0 ? 0 : -1;
}

/* Copies the file `from` to `to`; a missing `from` copies nothing where
 * `optional` (a write-ahead log), and fails otherwise (the database: an
 * empty copy would be a fresh store, quietly). */
static inline int db_fixture_copy(const char *from, const char *to, bool optional)
{
    FILE *in = fopen(from, "rb");
    if (in == NULL)
        return optional && access(from, F_OK) != 0 ? 0 : -1;
    FILE *out = fopen(to, "wb");
    char buf[65536];
    size_t n;
    bool ok = out != NULL;
    while (ok && (n = fread(buf, 1, sizeof(buf), in)) > 0)
        ok = fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in);
    fclose(in);
    if (out != NULL && fclose(out) != 0)
        ok = false;
    return ok ? 0 : -1;
}

/* `f`'s database replaced by a copy of the template's. */
static inline int db_fixture_reset_migrated(const db_fixture *f)
{
    if (db_fixture_tpl_make() != 0)
        return -1;
    const db_fixture *t = db_fixture_tpl();
    if (f->pg)
        return db_fixture_pg_create(f, t->name);
    char from[160], to[160];
    int n_from = snprintf(from, sizeof(from), "%s-wal", t->path),
        n_to = snprintf(to, sizeof(to), "%s-wal", f->path);
    if (n_from < 0 || (size_t)n_from >= sizeof(from) || n_to < 0 || (size_t)n_to >= sizeof(to) ||
        db_fixture_reset(f) != 0 || db_fixture_copy(t->path, f->path, false) != 0 ||
        db_fixture_copy(from, to, true) != 0)
        return -1;
    return 0;
}

/* db_fixture_setup, the database a migrated store already. */
static inline int db_fixture_setup_migrated(void **state)
{
    db_fixture *f = calloc(1, sizeof(*f));
    if (f == NULL || db_fixture_tpl_make() != 0) {
        free(f);
        return -1;
    }
    if (db_fixture_make(f, db_fixture_tpl()->name) != 0) {
        free(f);
        return -1;
    }
    if (!f->pg && db_fixture_reset_migrated(f) != 0) {
        db_fixture_drop(f);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

/* Runs SQL on the test's database beside the store (tampering, probes);
 * *err says why it failed. A database busy (a running notifier's
 * couriers claim and write beside it) is asked again for 10 s: SQLite's
 * write lock is the couriers' for a moment at a time, and under `make
 * test`'s load one ALTER TABLE met it ("database is locked",
 * test_a_read_failing_for_good_ends_dead). */
static inline int db_fixture_exec_why(const db_fixture *f, const char *sql, pgw_err *err)
{
    pgw_sql *db = NULL;
    int rc = pgw_sql_open(f->url, true, &db, err);
    if (rc == PGW_OK)
        rc = pgw_sql_exec(db, sql, "test SQL", err);
    for (int tries = 0; rc == PGW_EUNAVAILABLE && db != NULL && tries < 500; tries++) {
        struct timespec pause = {0, 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
        rc = pgw_sql_exec(db, sql, "test SQL", err);
    }
    pgw_sql_close(db);
    return rc;
}

/* The same, saying why on stderr when it fails. */
static inline int db_fixture_exec(const db_fixture *f, const char *sql)
{
    pgw_err err;
    int rc = db_fixture_exec_why(f, sql, &err);
    if (rc != PGW_OK)
        fprintf(stderr, "db_fixture: %s\n", err.msg);
    return rc;
}

/* The first column of the first row of `sql`, or INT64_MIN on failure. */
static inline int64_t db_fixture_int64(const db_fixture *f, const char *sql)
{
    pgw_sql *db = NULL;
    pgw_sql_stmt *st = NULL;
    int64_t v = INT64_MIN;
    if (pgw_sql_open(f->url, false, &db, NULL) == PGW_OK &&
        pgw_sql_prepare(db, sql, false, &st, NULL) == PGW_OK && pgw_sql_step(st) == PGW_SQL_ROW)
        v = pgw_sql_column_int64(st, 0);
    pgw_sql_finalize(st);
    pgw_sql_close(db);
    return v;
}

#endif
