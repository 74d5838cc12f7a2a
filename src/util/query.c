/*
 * query.c - see query.h.
 */
#include "query.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int pgw_query_get(const char *query, const char *name, char *out, size_t cap, pgw_err *err)
{
    size_t n = strlen(name);
    const char *value = NULL;
    size_t value_len = 0;
    for (const char *p = query; *p != '\0';) {
        size_t len = strcspn(p, "&");
        if (len >= n && strncmp(p, name, n) == 0 && (len == n || p[n] == '=')) {
            if (len == n)
                return pgw_err_set(err, PGW_EINVAL, "query parameter %s has no value (%s=...)",
                                   name, name);
            if (value != NULL) /* which one a proxy in front took is anyone's guess */
                return pgw_err_set(err, PGW_EINVAL, "query parameter %s is given twice", name);
            value = p + n + 1;
            value_len = len - n - 1;
        }
        p += len + (p[len] == '&');
    }
    if (value == NULL)
        return pgw_err_set(err, PGW_ENOTFOUND, "query parameter %s is missing", name);
    if (value_len >= cap)
        return pgw_err_set(err, PGW_ETOOLARGE, "query parameter %s: longer than %zu bytes", name,
                           cap - 1);
    memcpy(out, value, value_len);
    out[value_len] = '\0';
    return PGW_OK;
}

static bool named(const char *const *names, const char *name, size_t len)
{
    for (size_t i = 0; names[i] != NULL; i++) {
        if (strlen(names[i]) == len && strncmp(names[i], name, len) == 0)
            return true;
    }
    return false;
}

int pgw_query_only(const char *query, const char *const *names, pgw_err *err)
{
    for (const char *p = query; *p != '\0';) {
        size_t len = strcspn(p, "&");
        size_t name_len = strcspn(p, "=&");
        if (name_len > 0 && !named(names, p, name_len)) {
            char taken[160] = "";
            for (size_t i = 0, at = 0; names[i] != NULL && at < sizeof(taken); i++)
                at += (size_t)snprintf(taken + at, sizeof(taken) - at, "%s%s", i ? ", " : "",
                                       names[i]);
            return pgw_err_set(err, PGW_EINVAL,
                               "unknown query parameter \"%.*s\": this route takes %s",
                               (int)(name_len < 40 ? name_len : 40), p, taken);
        }
        p += len + (p[len] == '&');
    }
    return PGW_OK;
}
