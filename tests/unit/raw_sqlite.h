/*
 * raw_sqlite.h - SQL run straight on a SQLite handle, for tests that look
 * under the store: the statements run, or the test fails with SQLite's
 * message. Include after cmocka.h.
 */
#ifndef PGW_TESTS_RAW_SQLITE_H
#define PGW_TESTS_RAW_SQLITE_H

#include <sqlite3.h>

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

#endif
