/*
 * wal_vfs.c - see wal_vfs.h.
 *
 * Files other than a WAL are the underlying VFS's own, opened in place: the
 * wrapper costs them nothing. A WAL is a wal_file, the underlying file
 * right after it, and gathers once pgw_wal_vfs_gather gave it a buffer.
 * Writes reach the file in the order SQLite made them: a write that does
 * not continue the buffer writes the buffer first.
 *
 * Outside a write transaction the buffer is empty: a commit writes it at
 * its sync, and a rollback drops it (the connection's rollback hook). The
 * frames of a rolled-back transaction must never reach the file: the
 * write lock is released with the rollback, and another connection may
 * commit frames at the same offsets. A failed write of the buffer fails
 * every call after it, with SQLITE_IOERR_WRITE (which makes SQLite roll the
 * whole transaction back, where SQLITE_FULL from a read would undo only the
 * statement and carry on without frames it believes written), until the
 * rollback.
 */
#include "wal_vfs.h"

#include "core/assertions.h"

#include <stdlib.h>
#include <string.h>

#define VFS_NAME "pgw-wal"

typedef struct wal_file {
    sqlite3_file base;
    sqlite3_file *real; /* the underlying VFS's file, right after this struct */
    unsigned char *buf; /* PGW_WAL_GATHER_BYTES once gathering, else NULL */
    sqlite3_int64 at;   /* the file offset of buf[0] */
    int len;            /* bytes gathered */
    int failed;         /* SQLITE_IOERR_WRITE after a failed flush, until the rollback */
    bool full;          /* the last flush failed with SQLITE_FULL (pgw_wal_vfs_disk_full) */
    sqlite3 *db;        /* gathering for it: its rollback hook is ours */
} wal_file;

/* The VFS underneath; set once, at install, before any file is opened. */
static sqlite3_vfs *below;

#define REAL(f) (((wal_file *)(f))->real)

/* SQLite's unix VFS writes at most 128 KiB - 1 bytes a call (it masks the
 * size to 17 bits: a larger write writes the rest of the division, and
 * says the disk is full). */
#define WRITE_MAX (64 * 1024)

/* Writes what is gathered; after a failure, fails until the rollback. */
static int flush(wal_file *w)
{
    if (w->failed != SQLITE_OK)
        return w->failed;
    int rc = SQLITE_OK;
    for (int done = 0; rc == SQLITE_OK && done < w->len; done += WRITE_MAX) {
        int n = w->len - done < WRITE_MAX ? w->len - done : WRITE_MAX;
        rc = w->real->pMethods->xWrite(w->real, w->buf + done, n, w->at + done);
    }
    w->len = 0;
    w->full = rc == SQLITE_FULL;
    if (rc != SQLITE_OK)
        w->failed = SQLITE_IOERR_WRITE;
    return w->failed;
}

/* The transaction rolled back: its frames are not to be written. */
static void drop_on_rollback(void *arg)
{
    wal_file *w = arg;
    w->len = 0;
    w->failed = SQLITE_OK;
}

static int wal_write(sqlite3_file *f, const void *data, int n, sqlite3_int64 at)
{
    wal_file *w = (wal_file *)f;
    if (w->buf == NULL)
        return w->real->pMethods->xWrite(w->real, data, n, at);
    if (w->failed != SQLITE_OK)
        return w->failed;
    /* SQLite writes a WAL frame's header, then its page (64 KiB at most). */
    PGW_ASSERT(n >= 0 && n <= WRITE_MAX);
    PGW_ASSERT(w->len >= 0 && w->len <= PGW_WAL_GATHER_BYTES);
    bool continues = w->len > 0 && at == w->at + w->len;
    if (!continues || w->len + n > PGW_WAL_GATHER_BYTES) {
        int rc = flush(w);
        if (rc != SQLITE_OK)
            return rc;
        w->at = at;
    }
    memcpy(w->buf + w->len, data, (size_t)n);
    w->len += n;
    return SQLITE_OK;
}

static int wal_sync(sqlite3_file *f, int flags)
{
    wal_file *w = (wal_file *)f;
    int rc = flush(w);
    if (rc != SQLITE_OK)
        return rc;
    /* Gathering, a commit's sync (SQLITE_SYNC_NORMAL) is the syncer's fdatasync. */
    if (w->buf != NULL && (flags & 0x0f) == SQLITE_SYNC_NORMAL)
        return SQLITE_OK;
    return w->real->pMethods->xSync(w->real, flags);
}

/* Nothing is gathered between transactions: nothing to write at close. */
static int wal_close(sqlite3_file *f)
{
    wal_file *w = (wal_file *)f;
    PGW_ASSERT(w->len == 0 || w->failed != SQLITE_OK);
    if (w->db != NULL) /* the WAL may close before its connection (journal_mode) */
        (void)sqlite3_rollback_hook(w->db, NULL, NULL);
    free(w->buf);
    w->buf = NULL;
    return w->real->pMethods->xClose(w->real);
}

/*
 * Everything else sees the file as written: the buffer goes first. After a
 * failed flush these go on (the rollback reads the committed frames back);
 * only writes and syncs stay failed, so the transaction cannot commit.
 */
static int flush_before(sqlite3_file *f)
{
    wal_file *w = (wal_file *)f;
    return w->failed != SQLITE_OK ? SQLITE_OK : flush(w);
}

static int wal_read(sqlite3_file *f, void *data, int n, sqlite3_int64 at)
{
    int rc = flush_before(f);
    return rc != SQLITE_OK ? rc : REAL(f)->pMethods->xRead(REAL(f), data, n, at);
}

static int wal_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    int rc = flush_before(f);
    return rc != SQLITE_OK ? rc : REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int wal_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    int rc = flush_before(f);
    return rc != SQLITE_OK ? rc : REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int wal_control(sqlite3_file *f, int op, void *arg)
{
    int rc = flush_before(f);
    return rc != SQLITE_OK ? rc : REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int wal_lock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xLock(REAL(f), level);
}

static int wal_unlock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), level);
}

static int wal_check_lock(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int wal_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int wal_device(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

/* Version 1: no shared memory or mapping of its own. SQLite maps neither
 * for a WAL; the database file (not wrapped) carries the WAL index. */
static const sqlite3_io_methods WAL_METHODS = {
    .iVersion = 1,
    .xClose = wal_close,
    .xRead = wal_read,
    .xWrite = wal_write,
    .xTruncate = wal_truncate,
    .xSync = wal_sync,
    .xFileSize = wal_file_size,
    .xLock = wal_lock,
    .xUnlock = wal_unlock,
    .xCheckReservedLock = wal_check_lock,
    .xFileControl = wal_control,
    .xSectorSize = wal_sector,
    .xDeviceCharacteristics = wal_device,
};

static int wal_vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out)
{
    (void)vfs;
    if ((flags & SQLITE_OPEN_WAL) == 0) /* in place: the file is the real one */
        return below->xOpen(below, name, file, flags, out);
    wal_file *w = (wal_file *)file;
    memset(w, 0, sizeof(*w));
    w->real = (sqlite3_file *)(w + 1);
    int rc = below->xOpen(below, name, w->real, flags, out);
    /* No methods: nothing to close (SQLite then calls no xClose). */
    w->base.pMethods = w->real->pMethods != NULL ? &WAL_METHODS : NULL;
    return rc;
}

int pgw_wal_vfs_install(void)
{
    static sqlite3_vfs vfs;
    if (sqlite3_vfs_find(VFS_NAME) != NULL)
        return PGW_OK;
    below = sqlite3_vfs_find(NULL);
    if (below == NULL)
        return PGW_ESTATE;
    vfs = *below;
    vfs.zName = VFS_NAME;
    vfs.pNext = NULL;
    vfs.szOsFile = (int)sizeof(wal_file) + below->szOsFile;
    vfs.xOpen = wal_vfs_open;
    return sqlite3_vfs_register(&vfs, 1) == SQLITE_OK ? PGW_OK : PGW_ESTATE;
}

/*
 * Without POWERSAFE_OVERWRITE (the unix VFS's default has it) SQLite pads a
 * commit to a sector with a sync in the middle of a frame and none at the
 * end: the end would be published while still gathered.
 */
static bool powersafe(sqlite3 *db)
{
    sqlite3_file *main = NULL;
    return sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &main) == SQLITE_OK &&
           main != NULL && main->pMethods != NULL &&
           (main->pMethods->xDeviceCharacteristics(main) & SQLITE_IOCAP_POWERSAFE_OVERWRITE) != 0;
}

/* The gathering WAL file of `db`, or NULL. */
static wal_file *gathering(sqlite3 *db)
{
    sqlite3_file *file = NULL;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &file) != SQLITE_OK ||
        file == NULL || file->pMethods != &WAL_METHODS)
        return NULL;
    return (wal_file *)file;
}

bool pgw_wal_vfs_disk_full(sqlite3 *db)
{
    wal_file *w = gathering(db);
    return w != NULL && w->buf != NULL && w->full;
}

int pgw_wal_vfs_gather(sqlite3 *db, pgw_err *err)
{
    wal_file *w = gathering(db);
    if (w == NULL)
        return pgw_err_set(err, PGW_ESTATE, "the WAL is not open through " VFS_NAME);
    if (!powersafe(db))
        return pgw_err_set(err, PGW_ESTATE, "the database's disk is not powersafe-overwrite");
    PGW_ASSERT(w->buf == NULL); /* once per connection */
    if ((w->buf = malloc(PGW_WAL_GATHER_BYTES)) == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the WAL's writes");
    w->len = 0;
    w->failed = SQLITE_OK;
    w->full = false;
    w->db = db;
    void *before = sqlite3_rollback_hook(db, drop_on_rollback, w);
    PGW_ASSERT(before == NULL); /* the hook is ours alone (wal_vfs.h) */
    return PGW_OK;
}
