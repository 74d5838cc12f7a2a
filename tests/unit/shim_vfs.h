/*
 * shim_vfs.h - a VFS for tests: the default VFS of the moment, with a hook
 * before each write and each sync (a slow disk, a full one, counting what
 * reaches the files). shim_vfs_install makes it the default, once per test
 * program; the hooks may change between tests.
 */
#ifndef PGW_TESTS_SHIM_VFS_H
#define PGW_TESTS_SHIM_VFS_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct shim_file {
    sqlite3_file base;
    sqlite3_file *real; /* the file of the VFS underneath, right after this struct */
    int open_flags;     /* SQLITE_OPEN_MAIN_DB, SQLITE_OPEN_WAL, ... */
} shim_file;

typedef struct shim_hooks {
    /* Before a write reaches the file: anything but SQLITE_OK fails it. */
    int (*before_write)(shim_file *f, int n);
    void (*before_sync)(shim_file *f, int flags);
} shim_hooks;

static shim_hooks shim_vfs_hooks;   /* set by the test */
static sqlite3_vfs *shim_vfs_below; /* the VFS underneath */

#define SHIM_REAL(f) (((shim_file *)(f))->real)

static int shim_close(sqlite3_file *f)
{
    return SHIM_REAL(f)->pMethods->xClose(SHIM_REAL(f));
}
static int shim_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 at)
{
    return SHIM_REAL(f)->pMethods->xRead(SHIM_REAL(f), buf, n, at);
}
static int shim_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 at)
{
    int rc =
        shim_vfs_hooks.before_write ? shim_vfs_hooks.before_write((shim_file *)f, n) : SQLITE_OK;
    return rc != SQLITE_OK ? rc : SHIM_REAL(f)->pMethods->xWrite(SHIM_REAL(f), buf, n, at);
}
static int shim_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return SHIM_REAL(f)->pMethods->xTruncate(SHIM_REAL(f), size);
}
static int shim_sync(sqlite3_file *f, int flags)
{
    if (shim_vfs_hooks.before_sync)
        shim_vfs_hooks.before_sync((shim_file *)f, flags);
    return SHIM_REAL(f)->pMethods->xSync(SHIM_REAL(f), flags);
}
static int shim_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return SHIM_REAL(f)->pMethods->xFileSize(SHIM_REAL(f), size);
}
static int shim_lock(sqlite3_file *f, int level)
{
    return SHIM_REAL(f)->pMethods->xLock(SHIM_REAL(f), level);
}
static int shim_unlock(sqlite3_file *f, int level)
{
    return SHIM_REAL(f)->pMethods->xUnlock(SHIM_REAL(f), level);
}
static int shim_check_lock(sqlite3_file *f, int *out)
{
    return SHIM_REAL(f)->pMethods->xCheckReservedLock(SHIM_REAL(f), out);
}
static int shim_control(sqlite3_file *f, int op, void *arg)
{
    return SHIM_REAL(f)->pMethods->xFileControl(SHIM_REAL(f), op, arg);
}
static int shim_sector(sqlite3_file *f)
{
    return SHIM_REAL(f)->pMethods->xSectorSize(SHIM_REAL(f));
}
static int shim_device(sqlite3_file *f)
{
    return SHIM_REAL(f)->pMethods->xDeviceCharacteristics(SHIM_REAL(f));
}
static int shim_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **out)
{
    return SHIM_REAL(f)->pMethods->xShmMap(SHIM_REAL(f), region, size, extend, out);
}
static int shim_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return SHIM_REAL(f)->pMethods->xShmLock(SHIM_REAL(f), offset, n, flags);
}
static void shim_shm_barrier(sqlite3_file *f)
{
    SHIM_REAL(f)->pMethods->xShmBarrier(SHIM_REAL(f));
}
static int shim_shm_unmap(sqlite3_file *f, int delete_flag)
{
    return SHIM_REAL(f)->pMethods->xShmUnmap(SHIM_REAL(f), delete_flag);
}
static int shim_fetch(sqlite3_file *f, sqlite3_int64 at, int n, void **out)
{
    return SHIM_REAL(f)->pMethods->xFetch(SHIM_REAL(f), at, n, out);
}
static int shim_unfetch(sqlite3_file *f, sqlite3_int64 at, void *p)
{
    return SHIM_REAL(f)->pMethods->xUnfetch(SHIM_REAL(f), at, p);
}

/* Version 3, as the files underneath: shared memory and mapping for the
 * database file. A WAL file underneath may be version 1: SQLite calls none
 * of the later methods on a WAL. */
static const sqlite3_io_methods SHIM_METHODS = {
    .iVersion = 3,
    .xClose = shim_close,
    .xRead = shim_read,
    .xWrite = shim_write,
    .xTruncate = shim_truncate,
    .xSync = shim_sync,
    .xFileSize = shim_file_size,
    .xLock = shim_lock,
    .xUnlock = shim_unlock,
    .xCheckReservedLock = shim_check_lock,
    .xFileControl = shim_control,
    .xSectorSize = shim_sector,
    .xDeviceCharacteristics = shim_device,
    .xShmMap = shim_shm_map,
    .xShmLock = shim_shm_lock,
    .xShmBarrier = shim_shm_barrier,
    .xShmUnmap = shim_shm_unmap,
    .xFetch = shim_fetch,
    .xUnfetch = shim_unfetch,
};

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out)
{
    (void)vfs;
    shim_file *f = (shim_file *)file;
    f->real = (sqlite3_file *)(f + 1);
    f->open_flags = flags;
    int rc = shim_vfs_below->xOpen(shim_vfs_below, name, f->real, flags, out);
    f->base.pMethods = f->real->pMethods != NULL ? &SHIM_METHODS : NULL;
    return rc;
}

/* Makes the shim the default VFS, over the default of the moment; once. */
static bool shim_vfs_install(void)
{
    static sqlite3_vfs shim;
    if (shim_vfs_below != NULL)
        return true;
    shim_vfs_below = sqlite3_vfs_find(NULL);
    if (shim_vfs_below == NULL || shim_vfs_below->iVersion < 1)
        return false;
    shim = *shim_vfs_below;
    shim.zName = "pgw-test-shim";
    shim.pNext = NULL;
    shim.szOsFile = (int)sizeof(shim_file) + shim_vfs_below->szOsFile;
    shim.xOpen = shim_open;
    return sqlite3_vfs_register(&shim, 1) == SQLITE_OK;
}

#endif
