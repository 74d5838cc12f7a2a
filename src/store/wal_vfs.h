/*
 * wal_vfs.h - the writer's WAL written in one write per commit.
 *
 * SQLite writes each frame of the WAL with two calls, the 24-byte header and
 * the page: a commit of 150 pages was 300 pwrite()s, a fifth of the writer
 * thread's time on this VM's costly system calls. This VFS (SQLite's
 * default one underneath, registered as the default) gathers one
 * connection's consecutive WAL writes in a buffer and writes them at once
 * before anything could need them in the file: a sync, a read, the file's
 * size, a truncation, a file control. A rollback drops them instead.
 *
 * It gathers only for a connection that asks (pgw_wal_vfs_gather), which
 * must run with synchronous=FULL and checkpoint_fullfsync=ON: then SQLite
 * syncs the WAL at the end of every commit, before it publishes the commit
 * to other connections, and that sync is where the buffer is written. The
 * sync itself SQLite asks with SQLITE_SYNC_NORMAL is skipped, as
 * synchronous=NORMAL would: the store's syncer fdatasyncs the WAL after
 * COMMIT returns (store.c, "Deferred sync"). The syncs SQLite asks with
 * SQLITE_SYNC_FULL, which checkpoint_fullfsync makes of the WAL header's
 * and a checkpoint's, are done (on Linux FULL and NORMAL are the same
 * fdatasync).
 */
#ifndef PGW_WAL_VFS_H
#define PGW_WAL_VFS_H

#include "core/error.h"

#include <sqlite3.h>
#include <stdbool.h>

/* WAL bytes gathered at most; a commit writing more writes in pieces this large. */
#define PGW_WAL_GATHER_BYTES (1024 * 1024)

/* Registers the VFS as the default, over the default of the moment; again
 * is a no-op. Not thread-safe: pgw_sql_open calls it under pthread_once. */
int pgw_wal_vfs_install(void);

/*
 * Makes `db`'s WAL (it must exist: the database was read in WAL mode)
 * gather its writes and skip its commit syncs, until the connection closes.
 * Once per connection; it takes the connection's rollback hook, which
 * nothing else may set from then on (a rollback drops what was gathered:
 * the write lock goes with it, and another connection may then write at
 * the same offsets, which a later flush of those frames would overwrite). The connection must keep
 * synchronous=FULL and checkpoint_fullfsync=ON from then on: under NORMAL
 * no commit would write what it gathered, and without checkpoint_fullfsync
 * a checkpoint's syncs would be skipped.
 * PGW_ESTATE when its WAL is not this VFS's (another VFS was made the
 * default over it, as a test's), or when the database's file is not
 * powersafe-overwrite (SQLite then pads a commit with a sync in a frame's
 * middle, and none at its end): nothing changes, and the caller keeps
 * synchronous=NORMAL instead. PGW_ENOMEM for the buffer.
 */
int pgw_wal_vfs_gather(sqlite3 *db, pgw_err *err);

/* Whether the last write of `db`'s gathered WAL failed for a full disk,
 * which it reports as SQLITE_IOERR_WRITE (see wal_vfs.c) and SQLite
 * therefore as "disk I/O error"; false for a connection not gathering.
 * Until the next write goes through. */
bool pgw_wal_vfs_disk_full(sqlite3 *db);

#endif
