/*
 * db_fixture.h - a throwaway SQLite database in a fresh temporary directory,
 * shared by the store, writer and crash tests (cmocka setup/teardown).
 */
#ifndef PGW_TESTS_DB_FIXTURE_H
#define PGW_TESTS_DB_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

typedef struct db_fixture {
    char dir[64];   /* /tmp/pgw-test-XXXXXX */
    char path[128]; /* <dir>/log.db */
    char url[160];  /* sqlite:<path> */
} db_fixture;

/* Makes the directory; the database itself is created by whoever opens it. */
static inline int db_fixture_setup(void **state)
{
    db_fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/pgw-test-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/log.db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
    *state = f;
    return 0;
}

static inline int db_fixture_teardown(void **state)
{
    db_fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

#endif
