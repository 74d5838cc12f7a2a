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
#include "shim_vfs.h"
#include "raw_sqlite.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- counted below: the WAL's writes and syncs as they reach the file ---- */

typedef struct counts {
    long wal_writes, wal_syncs_normal, wal_syncs_full;
} counts;

static counts seen;          /* the test's one thread writes; nothing else counts */
static bool fail_wal_writes; /* as a full disk does */

static int count_write(shim_file *f, int n)
{
    (void)n;
    if ((f->open_flags & SQLITE_OPEN_WAL) == 0)
        return SQLITE_OK;
    seen.wal_writes++;
    return fail_wal_writes ? SQLITE_FULL : SQLITE_OK;
}

static void count_sync(shim_file *f, int flags)
{
    if ((f->open_flags & SQLITE_OPEN_WAL) == 0)
        return;
    seen.wal_syncs_normal += (flags & 0x0f) == SQLITE_SYNC_NORMAL;
    seen.wal_syncs_full += (flags & 0x0f) == SQLITE_SYNC_FULL;
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

/* A store as the writer's (deferred sync: its WAL gathered), then `sql`. */
static pgw_store *open_writer(const fixture *f, const char *sql)
{
    pgw_store *s = open_store(f);
    pgw_err err;
    if (pgw_store_defer_sync(s, &err) != PGW_OK ||
        (sql != NULL && pgw_store__exec_for_test(s, sql, &err) != PGW_OK))
        fail_msg("%s", err.msg);
    return s;
}

/* A plain SQLite connection to the fixture's database. */
static sqlite3 *open_raw(const fixture *f)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(strchr(f->url, ':') + 1, &db), SQLITE_OK);
    return db;
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
    /* Checkpoints only when asked (the writer has a thread for them). */
    pgw_store *writer = open_writer(f, "PRAGMA wal_autocheckpoint = 0");
    pgw_store *reader = open_store(f);
    pgw_err err;
    commit_members(writer, reader, 0, 10); /* the WAL's header, written and synced */
    seen = (counts){0};
    commit_members(writer, reader, 10, 200);
    assert_true(seen.wal_writes >= 200);     /* at least one per commit */
    assert_true(seen.wal_writes <= 2 * 200); /* frames gathered: several pages each */
    assert_int_equal(seen.wal_syncs_normal, 0);
    assert_int_equal(seen.wal_syncs_full, 0);
    assert_int_equal(pgw_store_sync(writer, NULL), PGW_OK);
    bool busy = false;
    if (pgw_store_checkpoint(writer, false, &busy, &err) != PGW_OK)
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
    pgw_store *writer = open_writer(f, "CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT, v BLOB);"
                                       " INSERT INTO t VALUES (1, 'seed', x'00');"
                                       " PRAGMA cache_size = 10; PRAGMA wal_autocheckpoint = 0");
    sqlite3 *other = open_raw(f);
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
    sqlite3 *fresh = open_raw(f);
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
    pgw_store *writer =
        open_writer(f, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); PRAGMA cache_size = 10");
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
    pgw_err err;
    assert_int_not_equal(
        pgw_store__exec_for_test(writer,
                                 "WITH RECURSIVE c(i) AS (SELECT 301 UNION ALL SELECT i + 1 FROM c"
                                 " WHERE i < 900) INSERT INTO t SELECT i, randomblob(1500) FROM c",
                                 &err),
        PGW_OK);
    assert_false(pgw_store_in_transaction(writer)); /* all of it, not the statement */
    /* Said as what it is: "disk I/O error" alone sent an operator whose
     * disk was full looking for a hardware fault (the operations review). */
    assert_non_null(strstr(err.msg, "disk I/O error (the disk is full)"));
    fail_wal_writes = false;
    assert_int_equal(pgw_store__exec_for_test(writer, "INSERT INTO t VALUES (5000, x'01')", NULL),
                     PGW_OK);
    sqlite3 *fresh = open_raw(f);
    assert_int_equal(raw_int(fresh, "SELECT count(*) FROM t"), 1);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(fresh, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(fresh);
    pgw_store_close(writer);
}

/* The WAL closed under a gathering connection (it left WAL mode): its
 * rollback hook went on pointing at the freed file; a rollback wrote to it
 * (found by review, with AddressSanitizer). */
static void test_closed_wal_leaves_no_hook(void **state)
{
    fixture *f = *state;
    pgw_store *writer = open_writer(f, "CREATE TABLE t (id INTEGER PRIMARY KEY);"
                                       " PRAGMA journal_mode = DELETE;"
                                       " BEGIN; INSERT INTO t VALUES (1); ROLLBACK;"
                                       " INSERT INTO t VALUES (2)");
    sqlite3 *fresh = open_raw(f);
    assert_int_equal(raw_int(fresh, "SELECT count(*) FROM t"), 1);
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
    shim_vfs_hooks = (shim_hooks){.before_write = count_write, .before_sync = count_sync};
    if (!shim_vfs_install() || pgw_wal_vfs_install() != PGW_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commits_are_gathered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rolled_back_frames_are_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_frames_fail_the_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_wal_leaves_no_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_connections_write_as_sqlite_does, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
