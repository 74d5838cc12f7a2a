/*
 * query.c - see query.h.
 */
#include "query.h"

#include <string.h>

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int decode(const char *name, const char *in, size_t len, char *out, size_t cap, pgw_err *err)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            int hi = i + 1 < len ? hex_digit(in[i + 1]) : -1;
            int lo = i + 2 < len ? hex_digit(in[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return pgw_err_set(err, PGW_EINVAL, "query parameter %s: bad escape", name);
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (n + 1 >= cap)
            return pgw_err_set(err, PGW_ETOOLARGE, "query parameter %s: longer than %zu bytes",
                               name, cap - 1);
        out[n++] = c;
    }
    out[n] = '\0';
    return 0;
}

int pgw_query_get(const char *query, const char *name, char *out, size_t cap, pgw_err *err)
{
    size_t n = strlen(name);
    for (const char *p = query; *p != '\0';) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > n && strncmp(p, name, n) == 0 && p[n] == '=')
            return decode(name, p + n + 1, len - n - 1, out, cap, err);
        p += len + (end != NULL);
    }
    return PGW_ENOTFOUND;
}
