/*
 * query.h - reading one parameter of a request's query string.
 *
 * The HTTP layer (libwebsockets) hands the query over already
 * percent-decoded, its arguments joined again with '&' (http.c
 * copy_query): a value is taken as it is, never decoded a second time
 * ("%2541" stays "%41"). A '&' escaped inside a value would split it:
 * copy_query refuses such a query (400) before anything reads it.
 */
#ifndef PGW_UTIL_QUERY_H
#define PGW_UTIL_QUERY_H

#include "core/error.h"

#include <stddef.h>

/*
 * The value of `name` in `query` ("a=1&b=2", without '?') into out (cap
 * bytes, NUL-terminated). PGW_ENOTFOUND when absent, PGW_ETOOLARGE when
 * it does not fit, PGW_EINVAL when the name comes twice or without '=':
 * which of two values a proxy or a log in front took is anyone's guess,
 * so the request is refused rather than read by one of them. err says
 * which; out is written only on PGW_OK.
 */
int pgw_query_get(const char *query, const char *name, char *out, size_t cap, pgw_err *err);

/*
 * PGW_EINVAL, naming it, when `query` has a parameter not in `names`
 * (NULL-terminated), so that a misspelt one is refused rather than
 * ignored: a reconciliation asked with shop_id= for shop= covered the
 * whole channel, and form= for from= every day since 1970. Empty
 * segments ("a=1&&b=2") name nothing.
 */
int pgw_query_only(const char *query, const char *const *names, pgw_err *err);

#endif
