/*
 * query.c - see query.h.
 */
#include "query.h"

#include <string.h>

int pgw_query_get(const char *query, const char *name, char *out, size_t cap, pgw_err *err)
{
    size_t n = strlen(name);
    for (const char *p = query; *p != '\0';) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > n && strncmp(p, name, n) == 0 && p[n] == '=') {
            size_t value = len - n - 1;
            if (value >= cap)
                return pgw_err_set(err, PGW_ETOOLARGE, "query parameter %s: longer than %zu bytes",
                                   name, cap - 1);
            memcpy(out, p + n + 1, value);
            out[value] = '\0';
            return PGW_OK;
        }
        p += len + (end != NULL);
    }
    return PGW_ENOTFOUND;
}
