/*
 * path.h - the folder a file path names, for the checks SQLite's files
 * need (its -wal and -shm are made beside the database, so the folder
 * must be writable, and have room), a path made whole, for telling two
 * paths to one file apart from two files, and where a link leads, for
 * writing a new file where a link points.
 */
#ifndef PGW_UTIL_PATH_H
#define PGW_UTIL_PATH_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * The folder of `path` in `out` (cap bytes): what is before its last '/',
 * "/" for a file at the root ("/x"), "." for a bare name ("x"). False,
 * and `out` "", when it does not fit in cap.
 */
bool pgw_path_folder(const char *path, char *out, size_t cap);

/*
 * `path` absolute, through links (realpath(3)); a file not made yet by its
 * folder's whole path and its own name ("/" and "x": "/x"). False when
 * neither resolves, or the result does not fit PATH_MAX.
 */
bool pgw_path_whole(const char *path, char whole[PATH_MAX]);

/*
 * One step through a symbolic link: when `path` is one, what it names in
 * `next` (a relative target taken from the link's folder, as the kernel
 * takes it), *was_link true; else `path` itself, *was_link false (nothing
 * there is not a link). False when the result does not fit `cap`.
 */
bool pgw_path_link_step(const char *path, char *next, size_t cap, bool *was_link);

#endif
