/*
 * page_cache.h - SQLite's page cache, without its walk at every commit.
 *
 * At the end of each write transaction SQLite asks its page cache to drop
 * the pages past the end of the database (xTruncate). Its default cache
 * (pcache1) does that by walking every hash bucket and every page in it
 * whenever the highest page number it ever held is past that end. And it
 * is, after nearly every busy transaction: when a B-tree split hands out
 * new pages out of order, SQLite swaps two of them through a temporary
 * number, the lock page's (page 524,289 at 2 KiB pages), and the cache
 * remembers that number as its highest until its next truncation, which
 * walks. So a commit that split a page walked the whole cache: with our 64 MiB cache (32,768 pages)
 * and this machine's ~130 ns per cache miss, milliseconds per commit; in a
 * benchmark it was an eighth of the writer thread's time.
 *
 * This wraps the default cache and keeps its own bound on the page numbers
 * it holds, one that comes down again when a page leaves the temporary
 * number. A truncation that cannot find a page is not passed on.
 *
 * The bound is kept from what SQLite asks of the cache: the largest number
 * fetched with create (or moved to), and the few moved above it (a swap's
 * temporary), forgotten when moved away again. Pages the cache evicts on
 * its own only make the bound loose, never wrong: the cache holds no page
 * above it, so skipping a truncation above it drops nothing that was there.
 */
#ifndef PGW_PAGE_CACHE_H
#define PGW_PAGE_CACHE_H

#include <sqlite3.h>
#include <stdbool.h>

/*
 * Installs the wrapper over `inner` (NULL: SQLite's default cache) for all
 * of SQLite in this process. It must run before SQLite initializes (the
 * first sqlite3_open does that); after, it changes nothing and returns
 * false. Not thread-safe: pgw_sql_open calls it once, under pthread_once.
 * `inner` is copied.
 */
bool pgw_page_cache_install(const sqlite3_pcache_methods2 *inner);

#endif
