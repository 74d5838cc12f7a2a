/*
 * json_load.c - see json_load.h.
 *
 * Each reader below either consumes a whole value and returns it, or
 * returns NULL (having freed what it made) and the text goes to jansson.
 * NULL never needs a reason: jansson gives it.
 */
#include "json_load.h"

#include "core/error.h"
#include "core/utf8.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* An int64 holds every integer of this many digits, so none can overflow;
 * longer ones (jansson's "too big integer" among them) go to jansson. */
#define PLAIN_DIGITS_MAX 18

typedef struct {
    const unsigned char *at, *end;
    int depth;
} reader;

static json_t *read_value(reader *r);

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static void skip_space(reader *r)
{
    while (r->at < r->end && is_space(*r->at))
        r->at++;
}

/* The byte at the reader, or 0 at the end (a NUL in the text is no
 * token either, so both end the plain path). */
static unsigned char peek(const reader *r)
{
    return r->at < r->end ? *r->at : 0;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* The four hex digits at p (p + 4 <= end checked by the caller), or -1. */
static int32_t hex4(const unsigned char *p)
{
    int32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

static size_t put_utf8(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The code point of the \u escape at *p (its backslash), a surrogate pair
 * taken whole; *p moves past it. 0 for what jansson refuses (\u0000, a
 * lone surrogate, a bad digit) and what it keeps apart. */
static uint32_t unicode_escape(const unsigned char **p, const unsigned char *end)
{
    const unsigned char *s = *p;
    int32_t high = end - s >= 6 ? hex4(s + 2) : -1;
    if (high <= 0 || (high >= 0xdc00 && high <= 0xdfff))
        return 0;
    if (high < 0xd800 || high > 0xdbff) {
        *p = s + 6;
        return (uint32_t)high;
    }
    if (end - s < 12 || s[6] != '\\' || s[7] != 'u')
        return 0;
    int32_t low = hex4(s + 8);
    if (low < 0xdc00 || low > 0xdfff)
        return 0;
    *p = s + 12;
    return 0x10000 + ((uint32_t)(high - 0xd800) << 10) + (uint32_t)(low - 0xdc00);
}

/* What the escape \c stands for, or -1 when it is not a one-letter one. */
static int simple_escape(unsigned char c)
{
    switch (c) {
    case '"':
    case '\\':
    case '/':
        return c;
    case 'b':
        return '\b';
    case 'f':
        return '\f';
    case 'n':
        return '\n';
    case 'r':
        return '\r';
    case 't':
        return '\t';
    default:
        return -1;
    }
}

/* The escaped text s[0..end) decoded into out (as long at least: no
 * escape is shorter than what it stands for): its length, or -1 on an
 * escape jansson refuses. Each backslash in it has its next byte before
 * end (read_string saw to it). */
static long unescape(const unsigned char *s, const unsigned char *end, char *out)
{
    char *o = out;
    while (s < end) {
        if (*s != '\\') {
            *o++ = (char)*s++;
            continue;
        }
        int simple = simple_escape(s[1]);
        if (simple >= 0) {
            *o++ = (char)simple;
            s += 2;
            continue;
        }
        uint32_t cp = s[1] == 'u' ? unicode_escape(&s, end) : 0;
        if (cp == 0)
            return -1;
        o += put_utf8(cp, o);
    }
    return o - out;
}

/*
 * The string at the reader (its opening quote): *text and *len, pointing
 * into the body when it has no escapes, else into *owned (malloc'd, the
 * caller's to free). false when it is not plain: a control byte, invalid
 * UTF-8, a bad escape, no closing quote.
 */
static bool read_string(reader *r, const char **text, size_t *len, char **owned)
{
    const unsigned char *start = r->at + 1, *p = start;
    bool escaped = false;
    *owned = NULL;
    while (p < r->end && *p != '"') {
        if (*p >= 0x20 && *p < 0x80 && *p != '\\') { /* most bytes, at once */
            p++;
            continue;
        }
        uint32_t cp;
        size_t n = *p >= 0x80 ? pgw_utf8_next_n((const char *)p, (size_t)(r->end - p), &cp) : 1;
        if (*p < 0x20 || n == 0)
            return false;
        escaped |= *p == '\\';
        p += *p == '\\' && p + 1 < r->end ? 2 : n; /* an escaped quote does not close */
    }
    if (p >= r->end)
        return false;
    r->at = p + 1;
    *text = (const char *)start;
    *len = (size_t)(p - start);
    if (!escaped)
        return true;
    if ((*owned = malloc(*len + 1)) == NULL)
        return false;
    long n = unescape(start, p, *owned);
    *text = *owned;
    *len = (size_t)n;
    return n >= 0;
}

static json_t *read_string_value(reader *r)
{
    const char *text;
    size_t len;
    char *owned;
    json_t *value = read_string(r, &text, &len, &owned) ? json_stringn_nocheck(text, len) : NULL;
    free(owned);
    return value;
}

/* An integer; NULL for a real (its digits are jansson's to convert), a
 * leading zero, or too many digits. */
static json_t *read_integer(reader *r)
{
    const unsigned char *digits = r->at + (peek(r) == '-'), *p = digits;
    while (p < r->end && *p >= '0' && *p <= '9')
        p++;
    size_t n = (size_t)(p - digits);
    unsigned char next = p < r->end ? *p : 0;
    if (n == 0 || n > PLAIN_DIGITS_MAX || (digits[0] == '0' && n > 1) || next == '.' ||
        next == 'e' || next == 'E')
        return NULL;
    int64_t value = 0;
    for (const unsigned char *d = digits; d < p; d++)
        value = value * 10 + (*d - '0');
    bool negative = digits != r->at;
    r->at = p;
    return json_integer(negative ? -value : value);
}

static json_t *read_word(reader *r, const char *word, json_t *value)
{
    size_t n = strlen(word);
    if ((size_t)(r->end - r->at) < n || memcmp(r->at, word, n) != 0)
        return NULL;
    r->at += n;
    return value;
}

/* One key and its value into obj; false when not plain, a duplicate key
 * among them (jansson's to refuse, at its own position). */
static bool read_member(reader *r, json_t *obj)
{
    const char *key;
    size_t key_len;
    char *owned = NULL;
    if (peek(r) != '"' || !read_string(r, &key, &key_len, &owned)) {
        free(owned);
        return false;
    }
    skip_space(r);
    json_t *value = NULL;
    if (peek(r) == ':') {
        r->at++;
        skip_space(r);
        value = read_value(r);
    }
    size_t before = json_object_size(obj);
    bool added = value != NULL && json_object_setn_new_nocheck(obj, key, key_len, value) == 0 &&
                 json_object_size(obj) > before;
    free(owned);
    return added;
}

/* After an element: true at `close` (consumed, the container done), true
 * with *more at a comma, false at anything else. */
static bool next_element(reader *r, unsigned char close, bool *more)
{
    skip_space(r);
    unsigned char c = peek(r);
    if (c != ',' && c != close)
        return false;
    r->at++;
    *more = c == ',';
    if (*more)
        skip_space(r);
    return true;
}

static json_t *read_object(reader *r)
{
    json_t *obj = json_object();
    if (obj == NULL)
        return NULL;
    r->at++;
    skip_space(r);
    bool more = peek(r) != '}';
    if (!more)
        r->at++;
    while (more) {
        if (!read_member(r, obj) || !next_element(r, '}', &more)) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

static json_t *read_array(reader *r)
{
    json_t *array = json_array();
    if (array == NULL)
        return NULL;
    r->at++;
    skip_space(r);
    bool more = peek(r) != ']';
    if (!more)
        r->at++;
    while (more) {
        json_t *value = read_value(r);
        if (value == NULL || json_array_append_new(array, value) != 0 ||
            !next_element(r, ']', &more)) {
            json_decref(array);
            return NULL;
        }
    }
    return array;
}

static json_t *read_value(reader *r)
{
    unsigned char c = peek(r);
    if (c == '{' || c == '[') {
        if (r->depth == PGW_JSON_PLAIN_DEPTH)
            return NULL;
        r->depth++;
        json_t *value = c == '{' ? read_object(r) : read_array(r);
        r->depth--;
        return value;
    }
    if (c == '"')
        return read_string_value(r);
    if (c == '-' || (c >= '0' && c <= '9'))
        return read_integer(r);
    if (c == 't')
        return read_word(r, "true", json_true());
    if (c == 'f')
        return read_word(r, "false", json_false());
    if (c == 'n')
        return read_word(r, "null", json_null());
    return NULL;
}

json_t *pgw_json_load_plain(const char *buf, size_t len)
{
    reader r = {.at = (const unsigned char *)buf, .end = (const unsigned char *)buf + len};
    skip_space(&r);
    if (peek(&r) != '{' && peek(&r) != '[')
        return NULL;
    json_t *value = read_value(&r);
    skip_space(&r);
    if (value != NULL && r.at != r.end) {
        json_decref(value);
        return NULL;
    }
    return value;
}

int pgw_json_load(const char *buf, size_t len, json_t **out, json_error_t *jerr)
{
    *out = pgw_json_load_plain(buf, len);
    if (*out == NULL)
        *out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, jerr);
    return *out != NULL ? PGW_OK : PGW_EINVAL;
}
