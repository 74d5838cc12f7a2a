/*
 * redact.c - see redact.h.
 */
#include "redact.h"

#include "core/assertions.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The most of a message redacted: past it, what would be shown is cut
 * anyway (a reason is at most PGW_API_REASON_MAX, 120 bytes). */
#define PGW_REDACT_TEXT_MAX 512

/* The first "password" in s, in any case, or NULL. */
static char *find_password(char *s)
{
    for (; *s != '\0'; s++)
        if (strncasecmp(s, "password", 8) == 0)
            return s;
    return NULL;
}

/* The length of a keyword's value at v: to the next space, or a quoted
 * one ('correct horse', \' escaping a quote) to its closing quote. */
static size_t quoted_length(const char *v)
{
    if (*v != '\'') { /* to a space not escaped (libpq: "a\ b" is "a b") */
        size_t i = 0;
        while (v[i] != '\0' && v[i] != ' ' && v[i] != '\t')
            i += v[i] == '\\' && v[i + 1] != '\0' ? 2 : 1;
        return i;
    }
    size_t i = 1;
    while (v[i] != '\0' && v[i] != '\'')
        i += v[i] == '\\' && v[i + 1] != '\0' ? 2 : 1;
    return v[i] == '\'' ? i + 1 : i;
}

/* Replaces the value of every "password = VALUE" in s (a keyword/value
 * string: the value runs to the next space) by "***", in place, the text
 * cut to cap where a value shorter than the stars makes it longer. */
static void hide_password_values(char *s, size_t cap)
{
    static const char stars[] = "***";
    for (char *p = s; (p = find_password(p)) != NULL;) {
        char *eq = p + 8 + strspn(p + 8, " \t");
        p += 8;
        if (*eq != '=')
            continue;
        char *value = eq + 1 + strspn(eq + 1, " \t");
        size_t at = (size_t)(value - s);
        if (at + sizeof(stars) > cap) { /* no room for the stars: the value goes */
            *value = '\0';
            return;
        }
        size_t len = quoted_length(value), tail = strlen(value + len);
        size_t room = cap - at - sizeof(stars); /* for the tail, after the stars and the NUL */
        size_t keep = tail < room ? tail : room;
        memmove(value + 3, value + len, keep);
        value[3 + keep] = '\0';
        memcpy(value, stars, 3);
        p = value + 3;
    }
}

void pgw_redact_db_url(const char *url, char *out, size_t cap)
{
    PGW_ASSERT(cap > 0);
    const char *scheme_end = strstr(url, "://");
    const char *rest = scheme_end ? scheme_end + 3 : url;
    /* The password runs to the last '@': one holding a '/', a '?' or an
     * '@' (base64 has '/') is still all of it, whatever libpq makes of
     * such a URL; an '@' in the query hides the host too, which is safe. */
    const char *at = strrchr(rest, '@');
    const char *colon = strchr(rest, ':');
    size_t head = (size_t)(rest - url);
    if (scheme_end != NULL && at != NULL && colon != NULL && colon < at)
        snprintf(out, cap, "%.*s%.*s%s", (int)head, url, (int)(colon - rest), rest, at);
    else
        snprintf(out, cap, "%s", url);
    char *query = scheme_end != NULL ? strchr(out, '?') : NULL;
    if (query != NULL)
        *query = '\0';
    hide_password_values(out, cap);
}

/* A byte of a token's text (a key, a signature, base64, an openid). */
static bool token_byte(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("_-+/=", c) != NULL);
}

static bool digit_byte(char c)
{
    return c >= '0' && c <= '9';
}

/* A byte a phone's digit groups are written apart by: a space, "-./()",
 * or one of a UTF-8 character's (a no-break or an ideographic space, a
 * full-width hyphen, as pasted from a spreadsheet or an IME). */
static bool group_gap_byte(char c)
{
    return (unsigned char)c >= 0x80 || (c != '\0' && strchr(" -./()", c) != NULL);
}

/* The length of a date at p, "2026-11-24" or "2026/11/24", or 0: a year
 * 1900..2199, a month and a day apart by the same '-' or '/', no digit
 * after. A phone is never written so (3-4-4 digits, 138-0013-8000), nor
 * starts a card's number so (4, 5, 62, 2221..2720), so a closed period's or a
 * clock's date stays readable. */
static size_t date_length(const char *p)
{
    for (size_t i = 0; i < 10; i++) {
        bool gap = i == 4 || i == 7;
        if (gap ? p[i] != p[4] || (p[i] != '-' && p[i] != '/') : !digit_byte(p[i]))
            return 0;
    }
    int century = (p[0] - '0') * 10 + (p[1] - '0');
    int month = (p[5] - '0') * 10 + (p[6] - '0'), day = (p[8] - '0') * 10 + (p[9] - '0');
    bool in_range =
        century >= 19 && century <= 21 && month >= 1 && month <= 12 && day >= 1 && day <= 31;
    return in_range && !digit_byte(p[10]) ? 10 : 0;
}

/* The value of the 2 digits at p, or -1. */
static int two_digits(const char *p)
{
    return digit_byte(p[0]) && digit_byte(p[1]) ? (p[0] - '0') * 10 + (p[1] - '0') : -1;
}

/* The length of a time of day at p, or 0: "9:05", "12:30:45", its seconds'
 * fraction up to 9 digits ("09:05:07.123456"), in range (hours 0..23,
 * minutes 0..59, seconds 0..60), no digit nor ':' and a digit after. A
 * phone written in pairs apart by ':' (138:00:13:80:00, 13:80:01:38:00)
 * has more groups, or one out of range: it is no time. */
static size_t time_length(const char *p)
{
    size_t n = digit_byte(p[1]) ? 2 : 1;
    int hour = n == 2 ? two_digits(p) : digit_byte(p[0]) ? p[0] - '0' : -1;
    if (hour < 0 || hour > 23 || p[n] != ':' || two_digits(p + n + 1) < 0 ||
        two_digits(p + n + 1) > 59)
        return 0;
    n += 3;
    if (p[n] == ':' && two_digits(p + n + 1) >= 0) {
        if (two_digits(p + n + 1) > 60)
            return 0;
        n += 3;
        size_t fraction = p[n] == '.' ? strspn(p + n + 1, "0123456789") : 0;
        if (fraction > 9)
            return 0;
        n += fraction > 0 ? fraction + 1 : 0;
    }
    bool more = digit_byte(p[n]) || ((p[n] == ':' || p[n] == '.') && digit_byte(p[n + 1]));
    return more ? 0 : n;
}

static size_t number_length(const char *p, size_t *digits);

/* The gap bytes at p: up to 4 of them. */
static size_t gap_length(const char *p)
{
    size_t gap = 0;
    while (gap < 4 && group_gap_byte(p[gap]))
        gap++;
    return gap;
}

/* Whether the date at p is one: the number a gap joins it to after, if
 * any, is hidden by itself (7 digits), a time ("10:15") or a date (a
 * period's end). Else its digits are a number's: a phone 1381-12-30 0000,
 * an identity card's 110105 1990-01-01 1234. */
static bool date_alone(const char *p)
{
    const char *next = p + 10 + gap_length(p + 10);
    size_t digits = 0;
    if (next == p + 10 || !digit_byte(*next) || date_length(next) > 0)
        return true;
    number_length(next, &digits);
    return digits >= 7 || time_length(next) > 0;
}

/* The length of the number at p (digits, at most 4 gap bytes between two
 * of them: "138 0013 8000", "138.0013.8000", ")" and an ideographic space,
 * or one ':': 138:0013:8000, 138:00:13:80:00), its digits counted in
 * *digits. A time or a date (date_alone) is no number's (0 digits) and
 * joins none by a gap, a date none that is hidden anyway: a short one it
 * joins (110105-1990-01-01). */
static size_t number_length(const char *p, size_t *digits)
{
    size_t n = 0;
    *digits = 0;
    if (time_length(p) > 0)
        return time_length(p);
    if (date_length(p) > 0 && date_alone(p))
        return 10;
    while (digit_byte(p[n])) {
        for (; digit_byte(p[n]); n++)
            ++*digits;
        bool colon = p[n] == ':'; /* a time's would have been one from the first group */
        size_t gap = colon ? 1 : gap_length(p + n);
        const char *next = p + n + gap;
        if (gap > 0 && digit_byte(*next) && (colon || time_length(next) == 0) &&
            (*digits < 7 || date_length(next) == 0))
            n += gap;
    }
    return n;
}

/* Whether the token at p (len bytes) is a period written without spaces,
 * two dates joined by one '/' or '-' (2026-11-01/2026-11-30, as ISO 8601
 * writes an interval): long, but no key's text. */
static bool period_token(const char *p, size_t len)
{
    return len == 21 && date_length(p) == 10 && (p[10] == '/' || p[10] == '-') &&
           date_length(p + 11) == 10;
}

/* How much of p, a token of `len` bytes and what follows it, is hidden:
 * 0 when none. The whole token when it is long (not a period) or holds a
 * long number, and that number to its end. When none is, *shown is how
 * much goes as it is: the token, and a time that starts in it to its end
 * ("T09:05:07.123456", whose ':' and '.' end the token). */
static size_t hidden_length(const char *p, size_t len, size_t *shown)
{
    size_t hide = len >= 20 && !period_token(p, len) ? len : 0;
    *shown = len;
    for (size_t i = 0; i < len; i++) {
        size_t digits, n = number_length(p + i, &digits);
        if (digits >= 7 && i + n > hide)
            hide = i + n > len ? i + n : len;
        if (time_length(p + i) > 0 && i + n > *shown)
            *shown = i + n;
        i += n;
    }
    return hide;
}

/* Where a PostgreSQL error's DETAIL or HINT starts in message (a row's
 * values: "Key (phone)=(...)", "Failing row contains (...)"), as libpq
 * writes it (a line of its own) or the store (after "; "), or its end. */
static size_t shown_length(const char *message)
{
    static const char *const DETAIL[] = {"; Key (", "; Failing row contains",
                                         "; hint: ", "DETAIL:", "HINT:"};
    size_t len = strcspn(message, "\r\n");
    for (size_t i = 0; i < sizeof(DETAIL) / sizeof(DETAIL[0]); i++) {
        const char *at = strstr(message, DETAIL[i]);
        if (at != NULL && (size_t)(at - message) < len)
            len = (size_t)(at - message);
    }
    return len;
}

/* Appends s (len bytes) to text (n bytes of cap) as far as it fits. */
static void append(char *text, size_t *n, size_t cap, const char *s, size_t len)
{
    for (size_t i = 0; i < len && *n + 1 < cap; i++)
        text[(*n)++] = s[i];
}

/*
 * message's first len bytes into text (cap), NUL-terminated, with what
 * it quotes of the request as "***": from its first '"' to its last (a
 * name or a phone typed in the wrong field; a '"' in it ends nothing) or
 * to its end, and jansson's "near '<the body's text where it failed>'".
 */
static void hide_quoted(const char *message, size_t len, char *text, size_t cap)
{
    size_t n = 0, i = 0;
    while (i < len) {
        const char *p = message + i;
        bool near = len - i > 6 && strncmp(p, "near '", 6) == 0;
        if (*p != '"' && !near) {
            append(text, &n, cap, p, 1);
            i++;
            continue;
        }
        size_t open = near ? 6 : 1, close = len - i; /* the span's text: [open, close) */
        for (size_t j = open; j < len - i; j++)
            if (p[j] == (near ? '\'' : '"'))
                close = j;
        append(text, &n, cap, p, open);
        if (close > open)
            append(text, &n, cap, "***", 3);
        if (close < len - i)
            append(text, &n, cap, p + close, 1);
        i += close < len - i ? close + 1 : len - i;
    }
    text[n] = '\0';
}

void pgw_redact_reason(const char *message, char *out, size_t cap)
{
    PGW_ASSERT(cap > 0);
    char text[PGW_REDACT_TEXT_MAX];
    hide_quoted(message, shown_length(message), text, sizeof(text));
    size_t n = 0;
    for (const char *p = text; *p != '\0';) {
        size_t token = 0;
        while (token_byte(p[token]))
            token++;
        size_t shown = 1, hidden = token > 0 ? hidden_length(p, token, &shown) : 0;
        const char *piece = hidden > 0 ? "***" : p;
        size_t len = hidden > 0 ? 3 : shown;
        if (token == 0 && (*p < 0x20 || *p > 0x7e))
            piece = "?";
        if (n + len > cap - 1)
            break;
        memcpy(out + n, piece, len);
        n += len;
        p += hidden > 0 ? hidden : len;
    }
    out[n] = '\0';
}
