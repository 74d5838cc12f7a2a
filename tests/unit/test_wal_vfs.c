/*
 * test_wal_vfs.c - the writer's WAL in one write per commit (store/wal_vfs.h),
 * seen from below: a counting VFS under it counts what reaches the files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "store/store.h"
#include "store/wal_vfs.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a counting VFS: SQLite's default, with the WAL's writes and syncs counted ---- */

typedef struct counts {
    long wal_writes, wal_syncs_normal, wal_syncs_full;
} counts;

static counts seen;          /* the test's one thread writes; nothing else counts */
static bool fail_wal_writes; /* as a full disk does */
static sqlite3_vfs *unix_vfs;

typedef struct counted_file {
    sqlite3_file base;
    sqlite3_file *real;
    bool wal;
} counted_file;

#define REAL(f)   (((counted_file *)(f))->real)
#define IS_WAL(f) (((counted_file *)(f))->wal)

static int c_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int c_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 at)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, at);
}
static int c_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 at)
{
    seen.wal_writes += IS_WAL(f);
    if (IS_WAL(f) && fail_wal_writes)
        return SQLITE_FULL;
    return REAL(f)->pMethods->xWrite(REAL(f), buf, n, at);
}
static int c_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int c_sync(sqlite3_file *f, int flags)
{
    if (IS_WAL(f)) {
        seen.wal_syncs_normal += (flags & 0x0f) == SQLITE_SYNC_NORMAL;
        seen.wal_syncs_full += (flags & 0x0f) == SQLITE_SYNC_FULL;
    }
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int c_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int c_lock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xLock(REAL(f), level);
}
static int c_unlock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), level);
}
static int c_check_lock(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int c_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int c_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int c_device(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int c_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **out)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), region, size, extend, out);
}
static int c_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void c_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int c_shm_unmap(sqlite3_file *f, int delete_flag)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}
static int c_fetch(sqlite3_file *f, sqlite3_int64 at, int n, void **out)
{
    return REAL(f)->pMethods->xFetch(REAL(f), at, n, out);
}
static int c_unfetch(sqlite3_file *f, sqlite3_int64 at, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), at, p);
}

static const sqlite3_io_methods COUNTED = {
    3,          c_close,       c_read,       c_write,   c_truncate, c_sync,   c_file_size,
    c_lock,     c_unlock,      c_check_lock, c_control, c_sector,   c_device, c_shm_map,
    c_shm_lock, c_shm_barrier, c_shm_unmap,  c_fetch,   c_unfetch};

static int c_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out)
{
    (void)vfs;
    counted_file *f = (counted_file *)file;
    f->real = (sqlite3_file *)(f + 1);
    f->wal = (flags & SQLITE_OPEN_WAL) != 0;
    int rc = unix_vfs->xOpen(unix_vfs, name, f->real, flags, out);
    f->base.pMethods = f->real->pMethods != NULL ? &COUNTED : NULL;
    return rc;
}

/* ---- the tests ---- */

typedef struct fixture {
    char dir[64];
    char url[128];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/pgw-wal-vfs-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->url, sizeof(f->url), "sqlite:%s/log.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc;
}

static pgw_store *open_store(const fixture *f)
{
    pgw_store *s = NULL;
    pgw_err err;
    if (pgw_store_open(f->url, true, &s, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    return s;
}

/* One member row per commit; `reader` must see each as COMMIT returns. */
static void commit_members(pgw_store *writer, pgw_store *reader, int from, int n)
{
    pgw_err err;
    for (int i = from; i < from + n; i++) {
        char member[16];
        snprintf(member, sizeof(member), "M%d", i);
        assert_int_equal(pgw_store_begin(writer, NULL), PGW_OK);
        for (int k = 0; k < 20; k++) { /* a few pages' worth per commit */
            char other[24];
            snprintf(other, sizeof(other), "M%d-%d", i, k);
            assert_int_equal(pgw_store_put_member(writer, other, 0, 1, NULL), PGW_OK);
        }
        assert_int_equal(pgw_store_put_member(writer, member, (int64_t)i, 1, NULL), PGW_OK);
        if (pgw_store_commit(writer, &err) != PGW_OK)
            fail_msg("%s", err.msg);
        bool found = false;
        int64_t debt = -1;
        assert_int_equal(pgw_store_member_debt(reader, member, &found, &debt, NULL), PGW_OK);
        assert_true(found);
        assert_int_equal(debt, i);
    }
}

/*
 * Gathered: a commit reaches the WAL in a write or two, not two per page;
 * its sync is left to pgw_store_sync; another connection reads every commit
 * as soon as it returns; checkpoints still sync.
 */
static void test_commits_are_gathered(void **state)
{
    fixture *f = *state;
    pgw_store *writer = open_store(f), *reader = open_store(f);
    pgw_err err;
    if (pgw_store_defer_sync(writer, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    /* Checkpoints only when asked (the writer has a thread for them). */
    assert_int_equal(pgw_store__exec_for_test(writer, "PRAGMA wal_autocheckpoint = 0", NULL),
                     PGW_OK);
    commit_members(writer, reader, 0, 10); /* the WAL's header, written and synced */
    seen = (counts){0};
    commit_members(writer, reader, 10, 200);
    assert_true(seen.wal_writes >= 200);     /* at least one per commit */
    assert_true(seen.wal_writes <= 2 * 200); /* frames gathered: several pages each */
    assert_int_equal(seen.wal_syncs_normal, 0);
    assert_int_equal(seen.wal_syncs_full, 0);
    assert_int_equal(pgw_store_sync(writer, NULL), PGW_OK);
    bool busy = false;
    if (pgw_store_checkpoint(writer, &busy, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_false(busy);
    assert_true(seen.wal_syncs_full >= 1); /* a checkpoint syncs the WAL first */
    pgw_store_close(reader);
    pgw_store_close(writer);
    /* Reopened: every commit is in the database. */
    pgw_store *again = open_store(f);
    bool found = false;
    int64_t debt = -1;
    assert_int_equal(pgw_store_member_debt(again, "M209", &found, &debt, NULL), PGW_OK);
    assert_true(found);
    assert_int_equal(debt, 209);
    pgw_store_close(again);
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

/*
 * A transaction too big for the writer's cache spills frames into the
 * WAL's buffer, then rolls back: the frames must go with it. Kept, they
 * were written at the writer's next read, over the frames another
 * connection had committed at the same offsets since: the database was
 * "not a database" for good (found by review; reproducer by the reviewer).
 */
static void test_rolled_back_frames_are_dropped(void **state)
{
    fixture *f = *state;
    pgw_store *writer = open_store(f);
    pgw_err err;
    if (pgw_store_defer_sync(writer, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(pgw_store__exec_for_test(writer,
                                              "CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT,"
                                              " v BLOB); INSERT INTO t VALUES (1, 'seed', x'00');"
                                              " PRAGMA cache_size = 10;"
                                              " PRAGMA wal_autocheckpoint = 0",
                                              NULL),
                     PGW_OK);
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(strchr(f->url, ':') + 1, &other), SQLITE_OK);
    /* As the checkpoint thread does: all of the WAL copied, so the writer's
     * next write starts it over at its first frame. */
    assert_int_equal(raw_int(other, "SELECT count(*) FROM t"), 1);
    assert_int_equal(sqlite3_wal_checkpoint_v2(other, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(pgw_store__exec_for_test(
                         writer,
                         "BEGIN IMMEDIATE; WITH RECURSIVE c(i) AS (SELECT 2 UNION ALL SELECT i + 1"
                         " FROM c WHERE i < 400) INSERT INTO t SELECT i, 'rolled back',"
                         " randomblob(1500) FROM c; ROLLBACK",
                         NULL),
                     PGW_OK);
    raw_exec(other, "BEGIN IMMEDIATE; WITH RECURSIVE c(i) AS (SELECT 1000 UNION ALL SELECT i + 1"
                    " FROM c WHERE i < 1050) INSERT INTO t SELECT i, 'other', randomblob(1500)"
                    " FROM c; COMMIT");
    /* The writer reads (a flush, were anything left to write). */
    assert_int_equal(pgw_store__exec_for_test(writer, "SELECT count(*) FROM t", NULL), PGW_OK);
    sqlite3 *fresh = NULL;
    assert_int_equal(sqlite3_open(strchr(f->url, ':') + 1, &fresh), SQLITE_OK);
    assert_int_equal(raw_int(fresh, "SELECT count(*) FROM t WHERE who = 'other'"), 51);
    assert_int_equal(raw_int(fresh, "SELECT count(*) FROM t"), 52);
    sqlite3_close(fresh);
    sqlite3_close(other);
    pgw_store_close(writer);
}

/*
 * Frames gathered, then the disk refuses them: the whole transaction rolls
 * back. (SQLITE_FULL passed on from the read that wrote them made SQLite
 * undo only the statement and go on, reading pages it believed written:
 * "database disk image is malformed". Found by review.)
 */
static void test_lost_frames_fail_the_transaction(void **state)
{
    fixture *f = *state;
    pgw_store *writer = open_store(f);
    pgw_err err;
    if (pgw_store_defer_sync(writer, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(pgw_store__exec_for_test(writer,
                                              "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);"
                                              " PRAGMA cache_size = 10",
                                              NULL),
                     PGW_OK);
    /* Statement 1 spills about 600 KB of frames, all still gathered. */
    assert_int_equal(pgw_store__exec_for_test(
                         writer,
                         "BEGIN IMMEDIATE; WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1"
                         " FROM c WHERE i < 300) INSERT INTO t SELECT i, randomblob(1500) FROM c",
                         NULL),
                     PGW_OK);
    assert_true(pgw_store_in_transaction(writer));
    fail_wal_writes = true;
    /* Statement 2 needs them written (its own fill the buffer). */
    assert_int_not_equal(
        pgw_store__exec_for_test(writer,
                                 "WITH RECURSIVE c(i) AS (SELECT 301 UNION ALL SELECT i + 1 FROM c"
                                 " WHERE i < 900) INSERT INTO t SELECT i, randomblob(1500) FROM c",
                                 NULL),
        PGW_OK);
    assert_false(pgw_store_in_transaction(writer)); /* all of it, not the statement */
    fail_wal_writes = false;
    assert_int_equal(pgw_store__exec_for_test(writer, "INSERT INTO t VALUES (5000, x'01')", NULL),
                     PGW_OK);
    sqlite3 *fresh = NULL;
    assert_int_equal(sqlite3_open(strchr(f->url, ':') + 1, &fresh), SQLITE_OK);
    assert_int_equal(raw_int(fresh, "SELECT count(*) FROM t"), 1);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(fresh, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(fresh);
    pgw_store_close(writer);
}

/* Without deferred sync the WAL is SQLite's own: a write per frame header
 * and per page, and a sync per commit. */
static void test_other_connections_write_as_sqlite_does(void **state)
{
    fixture *f = *state;
    pgw_store *writer = open_store(f), *reader = open_store(f);
    commit_members(writer, reader, 0, 10);
    seen = (counts){0};
    commit_members(writer, reader, 10, 50);
    assert_true(seen.wal_writes >= 2 * 2 * 50); /* two pages a commit at least, two writes each */
    assert_int_equal(seen.wal_syncs_normal, 50);
    pgw_store_close(reader);
    pgw_store_close(writer);
}

int main(void)
{
    /* The counting VFS first, as the default; the WAL VFS over it. */
    static sqlite3_vfs counting;
    unix_vfs = sqlite3_vfs_find(NULL);
    if (unix_vfs == NULL)
        return 1;
    counting = *unix_vfs;
    counting.zName = "pgw-test-counting";
    counting.szOsFile = (int)sizeof(counted_file) + unix_vfs->szOsFile;
    counting.xOpen = c_open;
    if (sqlite3_vfs_register(&counting, 1) != SQLITE_OK || pgw_wal_vfs_install() != PGW_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commits_are_gathered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rolled_back_frames_are_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_frames_fail_the_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_connections_write_as_sqlite_does, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
