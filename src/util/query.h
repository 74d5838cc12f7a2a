/*
 * query.h - reading one parameter of a URL query string.
 */
#ifndef PGW_UTIL_QUERY_H
#define PGW_UTIL_QUERY_H

#include "core/error.h"

#include <stddef.h>

/*
 * The first value of `name` in `query` ("a=1&b=2", without '?'),
 * percent-decoded (a '+' stays a '+': WeChat's base64 values carry it raw),
 * into out (cap bytes, NUL-terminated). PGW_ENOTFOUND when absent,
 * PGW_ETOOLARGE when it does not fit, PGW_EINVAL for a bad escape or a
 * decoded NUL.
 */
int pgw_query_get(const char *query, const char *name, char *out, size_t cap, pgw_err *err);

#endif
