/*
 * text.c - see text.h.
 */
#include "text.h"

#include "assertions.h"

#include <string.h>

size_t pgw_text_join(char *out, size_t cap, size_t n, const char *const parts[])
{
    PGW_ASSERT(cap >= 1);
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t part = strlen(parts[i]);
        if (len < cap - 1) {
            size_t room = cap - 1 - len;
            memcpy(out + len, parts[i], part < room ? part : room);
        }
        len += part;
    }
    out[len < cap - 1 ? len : cap - 1] = '\0';
    return len;
}

const char *pgw_text_int(int64_t v, char out[PGW_TEXT_INT_SIZE])
{
    char digits[PGW_TEXT_INT_SIZE];
    size_t n = 0;
    /* In unsigned arithmetic, where INT64_MIN's magnitude fits. */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    size_t at = 0;
    if (v < 0)
        out[at++] = '-';
    while (n > 0)
        out[at++] = digits[--n];
    out[at] = '\0';
    return out;
}
