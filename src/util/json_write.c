/*
 * json_write.c - see json_write.h.
 */
#include "json_write.h"

#include "core/assertions.h"

#include <string.h>

static void put(pgw_json_out *o, const char *bytes, size_t n)
{
    if (o->overflow || n >= o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->buf + o->len, bytes, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static void put_char(pgw_json_out *o, char c)
{
    put(o, &c, 1);
}

/* A comma when something came before in this container. */
static void separate(pgw_json_out *o)
{
    if (o->need_comma)
        put_char(o, ',');
}

void pgw_json_out_init(pgw_json_out *o, char *buf, size_t cap)
{
    PGW_ASSERT(cap >= 1);
    *o = (pgw_json_out){.buf = buf, .cap = cap};
    buf[0] = '\0';
}

void pgw_json_out_reopen(pgw_json_out *o, char *buf, size_t cap, size_t len)
{
    PGW_ASSERT(len >= 2 && len < cap && buf[0] == '{' && buf[len - 1] == '}');
    *o = (pgw_json_out){.buf = buf, .cap = cap, .len = len - 1, .need_comma = len > 2};
    buf[o->len] = '\0';
}

void pgw_json_out_begin_object(pgw_json_out *o)
{
    separate(o);
    put_char(o, '{');
    o->need_comma = false;
}

void pgw_json_out_end_object(pgw_json_out *o)
{
    put_char(o, '}');
    o->need_comma = true;
}

void pgw_json_out_begin_array(pgw_json_out *o)
{
    separate(o);
    put_char(o, '[');
    o->need_comma = false;
}

void pgw_json_out_end_array(pgw_json_out *o)
{
    put_char(o, ']');
    o->need_comma = true;
}

/* Each byte's escape: 0 for a byte written as it is, else the character
 * after the backslash ('u' for \u00XX, as jansson writes the other
 * control characters). NUL ends the text. */
static const char ESCAPES[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b',         't',           'n', 'u',
    'f', 'r', 'u', 'u', 'u', 'u', 'u', 'u', 'u',         'u',           'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', ['"'] = '"', ['\\'] = '\\',
};

/* The hex digits of a \u00XX escape (upper case, as jansson writes them). */
static const char HEX[] = "0123456789ABCDEF";

/* A quoted, escaped string, piece by piece: runs of plain bytes, escapes,
 * each put whole or not at all (where a text that does not fit stops). */
static void put_quoted_in_pieces(pgw_json_out *o, const char *text)
{
    put_char(o, '"');
    const char *run = text;
    for (const char *p = text; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (ESCAPES[c] == 0)
            continue;
        put(o, run, (size_t)(p - run));
        run = p + 1;
        const char esc[6] = {'\\', ESCAPES[c], '0', '0', HEX[c >> 4], HEX[c & 15]};
        put(o, esc, ESCAPES[c] == 'u' ? 6 : 2);
    }
    put(o, run, strlen(run));
    put_char(o, '"');
}

/*
 * What put_quoted_in_pieces writes, written straight when the worst case
 * (every byte \u00XX) fits: a byte's test is one table look-up, and no
 * piece is copied again. Its strings were ~4,700 instructions of a
 * purchase's ~58,000 on the service thread (the canonical text and the
 * log line; bench/RESULTS.md).
 */
static void put_quoted(pgw_json_out *o, const char *text)
{
    size_t n = strlen(text), room = o->cap - o->len;
    /* Quotes, 6 bytes a byte at most, and the NUL. */
    if (o->overflow || room < 3 || n > (room - 3) / 6) {
        put_quoted_in_pieces(o, text);
        return;
    }
    char *to = o->buf + o->len;
    *to++ = '"';
    for (const unsigned char *p = (const unsigned char *)text;; p++) {
        unsigned char c = *p;
        char escape = ESCAPES[c];
        if (escape == 0) {
            *to++ = (char)c;
            continue;
        }
        if (c == '\0')
            break;
        *to++ = '\\';
        *to++ = escape;
        if (escape == 'u') {
            *to++ = '0';
            *to++ = '0';
            *to++ = HEX[c >> 4];
            *to++ = HEX[c & 15];
        }
    }
    *to++ = '"';
    *to = '\0';
    o->len = (size_t)(to - o->buf);
}

void pgw_json_out_key(pgw_json_out *o, const char *key)
{
    separate(o);
    put_quoted(o, key);
    put_char(o, ':');
    o->need_comma = false;
}

void pgw_json_out_string(pgw_json_out *o, const char *text)
{
    separate(o);
    put_quoted(o, text);
    o->need_comma = true;
}

/* "00" to "99": the digits are written two at a time, half the divisions
 * (a log line's microseconds have 16; bench/RESULTS.md). */
static const char DIGIT_PAIRS[] = "00010203040506070809"
                                  "10111213141516171819"
                                  "20212223242526272829"
                                  "30313233343536373839"
                                  "40414243444546474849"
                                  "50515253545556575859"
                                  "60616263646566676869"
                                  "70717273747576777879"
                                  "80818283848586878889"
                                  "90919293949596979899";

size_t pgw_int_text(int64_t value, char out[PGW_INT_TEXT_MAX])
{
    char digits[PGW_INT_TEXT_MAX];
    size_t at = sizeof(digits);
    /* The magnitude as unsigned: -INT64_MIN does not fit an int64_t. */
    uint64_t left = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    while (left >= 100) {
        size_t pair = (size_t)(left % 100) * 2;
        left /= 100;
        at -= 2;
        digits[at] = DIGIT_PAIRS[pair];
        digits[at + 1] = DIGIT_PAIRS[pair + 1];
    }
    if (left >= 10) {
        at -= 2;
        digits[at] = DIGIT_PAIRS[left * 2];
        digits[at + 1] = DIGIT_PAIRS[left * 2 + 1];
    } else {
        digits[--at] = (char)('0' + left);
    }
    if (value < 0)
        digits[--at] = '-';
    size_t n = sizeof(digits) - at;
    memcpy(out, digits + at, n);
    out[n] = '\0';
    return n;
}

void pgw_json_out_int(pgw_json_out *o, int64_t value)
{
    char text[PGW_INT_TEXT_MAX];
    size_t n = pgw_int_text(value, text);
    separate(o);
    put(o, text, n);
    o->need_comma = true;
}

void pgw_json_out_bool(pgw_json_out *o, bool value)
{
    separate(o);
    put(o, value ? "true" : "false", value ? 4 : 5);
    o->need_comma = true;
}

void pgw_json_out_null(pgw_json_out *o)
{
    separate(o);
    put(o, "null", 4);
    o->need_comma = true;
}

void pgw_json_out_key_string(pgw_json_out *o, const char *key, const char *text)
{
    pgw_json_out_key(o, key);
    pgw_json_out_string(o, text);
}

void pgw_json_out_key_int(pgw_json_out *o, const char *key, int64_t value)
{
    pgw_json_out_key(o, key);
    pgw_json_out_int(o, value);
}
