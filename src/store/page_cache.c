/*
 * page_cache.c - see page_cache.h.
 */
#include "page_cache.h"

#include "core/assertions.h"

#include <stdlib.h>

/* Page numbers above the bound that pages were moved to and are still at.
 * A B-tree swap parks one page at a time; more is no longer a swap, and
 * raises the bound instead. */
#define PARKED_MAX 4

typedef struct wrapped {
    sqlite3_pcache *inner;
    unsigned bound;              /* no page above this is cached, but the parked */
    unsigned parked[PARKED_MAX]; /* page numbers above `bound` moved to */
    int n_parked;
} wrapped;

/* The cache wrapped. Written by pgw_page_cache_install only while SQLite is
 * not initialized, so never while one of the functions below runs; SQLite
 * passes them no argument to carry it instead. */
static sqlite3_pcache_methods2 inner;

static int wrap_init(void *arg)
{
    (void)arg;
    return inner.xInit != NULL ? inner.xInit(inner.pArg) : SQLITE_OK;
}

static void wrap_shutdown(void *arg)
{
    (void)arg;
    if (inner.xShutdown != NULL)
        inner.xShutdown(inner.pArg);
}

static sqlite3_pcache *wrap_create(int page_size, int extra_size, int purgeable)
{
    wrapped *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->inner = inner.xCreate(page_size, extra_size, purgeable);
    if (c->inner == NULL) {
        free(c);
        return NULL;
    }
    return (sqlite3_pcache *)c;
}

static void wrap_cachesize(sqlite3_pcache *p, int n)
{
    inner.xCachesize(((wrapped *)p)->inner, n);
}

static int wrap_pagecount(sqlite3_pcache *p)
{
    return inner.xPagecount(((wrapped *)p)->inner);
}

static sqlite3_pcache_page *wrap_fetch(sqlite3_pcache *p, unsigned key, int create)
{
    wrapped *c = (wrapped *)p;
    sqlite3_pcache_page *page = inner.xFetch(c->inner, key, create);
    if (page != NULL && create != 0 && key > c->bound)
        c->bound = key;
    return page;
}

static void wrap_unpin(sqlite3_pcache *p, sqlite3_pcache_page *page, int discard)
{
    inner.xUnpin(((wrapped *)p)->inner, page, discard);
}

static void unpark(wrapped *c, int i)
{
    PGW_ASSERT(i >= 0 && i < c->n_parked);
    c->parked[i] = c->parked[--c->n_parked];
}

static void wrap_rekey(sqlite3_pcache *p, sqlite3_pcache_page *page, unsigned old_key,
                       unsigned new_key)
{
    wrapped *c = (wrapped *)p;
    inner.xRekey(c->inner, page, old_key, new_key);
    for (int i = 0; i < c->n_parked; i++)
        if (c->parked[i] == old_key) {
            unpark(c, i);
            break;
        }
    if (new_key <= c->bound)
        return;
    if (c->n_parked < PARKED_MAX)
        c->parked[c->n_parked++] = new_key;
    else
        c->bound = new_key;
}

/* Drops the pages numbered `limit` and up, if the cache can hold any. */
static void wrap_truncate(sqlite3_pcache *p, unsigned limit)
{
    wrapped *c = (wrapped *)p;
    bool any = c->bound >= limit;
    for (int i = 0; i < c->n_parked && !any; i++)
        any = c->parked[i] >= limit;
    if (!any)
        return;
    inner.xTruncate(c->inner, limit);
    if (c->bound >= limit)
        c->bound = limit > 0 ? limit - 1 : 0;
    for (int i = c->n_parked - 1; i >= 0; i--)
        if (c->parked[i] >= limit)
            unpark(c, i);
}

static void wrap_destroy(sqlite3_pcache *p)
{
    wrapped *c = (wrapped *)p;
    inner.xDestroy(c->inner);
    free(c);
}

static void wrap_shrink(sqlite3_pcache *p)
{
    inner.xShrink(((wrapped *)p)->inner);
}

static const sqlite3_pcache_methods2 wrapper = {
    .iVersion = 1,
    .xInit = wrap_init,
    .xShutdown = wrap_shutdown,
    .xCreate = wrap_create,
    .xCachesize = wrap_cachesize,
    .xPagecount = wrap_pagecount,
    .xFetch = wrap_fetch,
    .xUnpin = wrap_unpin,
    .xRekey = wrap_rekey,
    .xTruncate = wrap_truncate,
    .xDestroy = wrap_destroy,
    .xShrink = wrap_shrink,
};

bool pgw_page_cache_install(const sqlite3_pcache_methods2 *over)
{
    /* Refused once SQLite is initialized: then nothing is changed. */
    sqlite3_pcache_methods2 current;
    if (sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &current) != SQLITE_OK)
        return false;
    if (over == NULL)
        over = &current;
    if (over->xCreate == wrap_create)
        return true; /* installed already: wrapping ourselves would recurse */
    PGW_ASSERT(over->xCreate != NULL && over->xFetch != NULL && over->xTruncate != NULL);
    inner = *over;
    return sqlite3_config(SQLITE_CONFIG_PCACHE2, &wrapper) == SQLITE_OK;
}
