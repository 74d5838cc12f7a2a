/*
 * test_page_cache.c - the page cache wrapper (store/page_cache.h) under a
 * counting cache: SQLite's default one, with what is asked of it counted.
 * A truncation is a walk of the whole default cache when its limit is at or
 * below the highest page number the cache ever held (pcache1's iMaxKey,
 * mirrored here).
 */
#include "store/page_cache.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "raw_sqlite.h"

static sqlite3_pcache_methods2 pcache1; /* SQLite's default, taken before any use */

typedef struct counts {
    unsigned max_key; /* pcache1's highest page number held, mirrored */
    long truncates;   /* truncations that reached the default cache */
    long walks;       /* of those, the ones it walks the whole cache for */
    long swaps;       /* pages moved above every page number held before */
} counts;

static counts seen; /* the counting cache's; one cache (one connection) at a time */

static sqlite3_pcache_page *count_fetch(sqlite3_pcache *c, unsigned key, int create)
{
    sqlite3_pcache_page *page = pcache1.xFetch(c, key, create);
    if (page != NULL && create != 0 && key > seen.max_key)
        seen.max_key = key;
    return page;
}

static void count_rekey(sqlite3_pcache *c, sqlite3_pcache_page *page, unsigned old_key,
                        unsigned new_key)
{
    pcache1.xRekey(c, page, old_key, new_key);
    if (new_key > seen.max_key) {
        seen.swaps++;
        seen.max_key = new_key;
    }
}

static void count_truncate(sqlite3_pcache *c, unsigned limit)
{
    pcache1.xTruncate(c, limit);
    seen.truncates++;
    if (limit <= seen.max_key) {
        seen.walks++;
        seen.max_key = limit - 1;
    }
}

static sqlite3_pcache_methods2 counting(void)
{
    sqlite3_pcache_methods2 m = pcache1;
    m.xFetch = count_fetch;
    m.xRekey = count_rekey;
    m.xTruncate = count_truncate;
    return m;
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* A fresh database, set up as the store sets up its own (store.c). */
static sqlite3 *open_fresh(char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/pgw-page-cache-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    raw_exec(db, "PRAGMA page_size = 2048; PRAGMA journal_mode = WAL; PRAGMA cache_size = -65536;"
                 "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL, pad TEXT NOT NULL);"
                 "CREATE INDEX t_k ON t (k)");
    return db;
}

static void close_and_remove(sqlite3 *db, const char *path)
{
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    char side[300];
    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
}

/* Inserts `n` rows with random index keys: leaf splits all over the index. */
static void insert_random(sqlite3 *db, int n, unsigned *seed)
{
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(db, "INSERT INTO t (k, pad) VALUES (?1, ?2)", -1, &st, NULL), SQLITE_OK);
    for (int i = 0; i < n; i++) {
        char key[32];
        *seed = *seed * 1103515245u + 12345u;
        snprintf(key, sizeof(key), "key-%08x", *seed);
        sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, "padding padding padding padding padding", -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
}

/* Before each test: SQLite down, the wrapper installed over a counting cache. */
static int install_counted(void **state)
{
    (void)state;
    assert_int_equal(sqlite3_shutdown(), SQLITE_OK);
    sqlite3_pcache_methods2 m = counting();
    assert_true(pgw_page_cache_install(&m));
    seen = (counts){0};
    return 0;
}

/* Commits whose B-tree splits swapped pages through a temporary number:
 * without the wrapper each such commit walked the whole cache. */
static void test_splits_do_not_walk_the_cache(void **state)
{
    (void)state;
    char path[64];
    sqlite3 *db = open_fresh(path, sizeof(path));
    unsigned seed = 1;
    long walks_before = seen.walks; /* setting up: journal mode, schema */
    for (int i = 0; i < 300; i++) {
        raw_exec(db, "BEGIN IMMEDIATE");
        insert_random(db, 40, &seed);
        raw_exec(db, "COMMIT");
    }
    assert_true(seen.swaps > 0); /* the workload does what triggered the walks */
    assert_int_equal(seen.walks - walks_before, 0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM t"), 300 * 40);
    close_and_remove(db, path);
}

/* A rolled-back transaction that grew the database leaves pages past its
 * end: those truncations still reach the cache, and the data is sound. */
static void test_rollback_still_drops_pages(void **state)
{
    (void)state;
    char path[64];
    sqlite3 *db = open_fresh(path, sizeof(path));
    unsigned seed = 2;
    raw_exec(db, "BEGIN IMMEDIATE");
    insert_random(db, 1000, &seed);
    raw_exec(db, "COMMIT");
    long before = seen.truncates;
    raw_exec(db, "BEGIN IMMEDIATE");
    insert_random(db, 5000, &seed);
    raw_exec(db, "ROLLBACK");
    assert_true(seen.truncates > before);
    raw_exec(db, "BEGIN IMMEDIATE");
    insert_random(db, 5000, &seed);
    raw_exec(db, "COMMIT");
    assert_int_equal(query_int(db, "SELECT count(*) FROM t"), 6000);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    close_and_remove(db, path);
}

/* Once SQLite runs, installing changes nothing, and says so. */
static void test_install_after_start_is_refused(void **state)
{
    (void)state;
    assert_int_equal(sqlite3_initialize(), SQLITE_OK);
    sqlite3_pcache_methods2 m = counting();
    assert_false(pgw_page_cache_install(&m));
    assert_false(pgw_page_cache_install(NULL));
}

int main(void)
{
    /* Before anything initializes SQLite, which fixes its cache. */
    if (sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &pcache1) != SQLITE_OK) {
        fprintf(stderr, "SQLite was initialized before main\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_splits_do_not_walk_the_cache, install_counted),
        cmocka_unit_test_setup(test_rollback_still_drops_pages, install_counted),
        cmocka_unit_test(test_install_after_start_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
