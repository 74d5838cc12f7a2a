/*
 * utf8.c - see utf8.h.
 */
#include "utf8.h"

#include <string.h>

size_t pgw_utf8_next(const char *s, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    uint32_t c = u[0];
    size_t len = c == 0           ? 0
                 : c < 0x80       ? 1
                 : (c >> 5) == 6  ? 2
                 : (c >> 4) == 14 ? 3
                 : (c >> 3) == 30 ? 4
                                  : 0;
    if (len <= 1) {
        *cp = c;
        return len;
    }
    c &= 0xffu >> (len + 1);
    for (size_t k = 1; k < len; k++) {
        if ((u[k] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (u[k] & 0x3f);
    }
    static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < least[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

size_t pgw_utf8_next_n(const char *s, size_t n, uint32_t *cp)
{
    /* The same decoder on a NUL-padded copy: the same rules, by construction. */
    char padded[5] = {0};
    memcpy(padded, s, n < 4 ? n : 4);
    return pgw_utf8_next(padded, cp);
}

size_t pgw_utf8_bom(const char *s, size_t len)
{
    return len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
}

bool pgw_utf8_valid(const char *s)
{
    uint32_t cp;
    size_t n = 1;
    while (n > 0) {
        while ((unsigned char)*s - 1u < 0x7fu) /* ASCII, the common case, at once */
            s++;
        n = pgw_utf8_next(s, &cp);
        s += n;
    }
    return *s == '\0';
}

size_t pgw_utf8_scrub(char *s)
{
    size_t replaced = 0, n;
    uint32_t cp;
    for (; *s != '\0'; s += n) {
        n = pgw_utf8_next(s, &cp);
        if (n == 0) {
            *s = '?';
            n = 1;
            replaced++;
        }
    }
    return replaced;
}

size_t pgw_utf8_prefix(const char *s, size_t max)
{
    size_t at = 0, n;
    uint32_t cp;
    while ((n = pgw_utf8_next(s + at, &cp)) > 0 && at + n <= max)
        at += n;
    return at;
}
