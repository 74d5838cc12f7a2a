/*
 * keywords.c - see keywords.h.
 */
#include "keywords.h"

#include "core/assertions.h"
#include "core/utf8.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define CHARS_MAX 256 /* characters of any value we look at */

typedef enum kind {
    K_THING,
    K_CHARACTER_STRING,
    K_PHONE_NUMBER,
    K_CAR_NUMBER,
    K_NAME,
    K_LETTER,
    K_NUMBER,
    K_AMOUNT,
    K_SYMBOL,
    K_PHRASE,
    K_TIME,
    K_DATE,
    K_ENUM,
    K_COUNT
} kind;

static const char *const KIND_NAMES[K_COUNT] = {
    [K_THING] = "thing",
    [K_CHARACTER_STRING] = "character_string",
    [K_PHONE_NUMBER] = "phone_number",
    [K_CAR_NUMBER] = "car_number",
    [K_NAME] = "name",
    [K_LETTER] = "letter",
    [K_NUMBER] = "number",
    [K_AMOUNT] = "amount",
    [K_SYMBOL] = "symbol",
    [K_PHRASE] = "phrase",
    [K_TIME] = "time",
    [K_DATE] = "date",
    [K_ENUM] = "enum",
};

/* "thing01" -> K_THING: the name without its trailing digits. */
static int kind_of(const char *keyword, kind *out)
{
    size_t len = strlen(keyword);
    while (len > 0 && keyword[len - 1] >= '0' && keyword[len - 1] <= '9')
        len--;
    for (size_t k = 0; k < K_COUNT; k++) {
        if (strlen(KIND_NAMES[k]) == len && strncmp(keyword, KIND_NAMES[k], len) == 0) {
            *out = (kind)k;
            return PGW_OK;
        }
    }
    return PGW_EINVAL;
}

/* One decoded character: its code point and where its bytes are. */
typedef struct ch {
    uint32_t cp;
    size_t at, len;
} ch;

/* Decodes UTF-8 (core/utf8.h); false when invalid or too long. */
static bool decode(const char *s, ch *chars, size_t cap, size_t *n)
{
    size_t i = 0, len;
    uint32_t cp;
    *n = 0;
    while ((len = pgw_utf8_next(s + i, &cp)) > 0) {
        if (*n == cap)
            return false;
        chars[(*n)++] = (ch){cp, i, len};
        i += len;
    }
    return s[i] == '\0';
}

static bool is_cjk(uint32_t cp)
{
    return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf);
}

static bool is_digit(uint32_t cp)
{
    return cp >= '0' && cp <= '9';
}

static bool is_letter(uint32_t cp)
{
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
}

/* Printable ASCII that is not a letter or digit. */
static bool is_symbol(uint32_t cp)
{
    return cp > ' ' && cp < 0x7f && !is_digit(cp) && !is_letter(cp);
}

/* Copies the first `keep` characters (control ones as spaces), then `tail`. */
static int emit(const char *value, const ch *chars, size_t keep, const char *tail, char *out,
                size_t cap, pgw_err *err)
{
    size_t len = 0;
    for (size_t i = 0; i < keep; i++) {
        if (len + chars[i].len >= cap)
            return pgw_err_set(err, PGW_ETOOLARGE, "no room for the keyword value");
        bool control = chars[i].cp < 0x20 || chars[i].cp == 0x7f;
        if (control)
            out[len++] = ' ';
        else
            memcpy(out + len, value + chars[i].at, chars[i].len), len += chars[i].len;
    }
    if (len + strlen(tail) >= cap)
        return pgw_err_set(err, PGW_ETOOLARGE, "no room for the keyword value");
    strcpy(out + len, tail);
    return PGW_OK;
}

/* Cuts to `limit` characters; past it keeps limit - 3 and "..." when asked. */
static int cut(const char *value, const ch *chars, size_t n, size_t limit, bool ellipsis, char *out,
               size_t cap, pgw_err *err)
{
    if (n <= limit)
        return emit(value, chars, n, "", out, cap, err);
    return ellipsis ? emit(value, chars, limit - 3, "...", out, cap, err)
                    : emit(value, chars, limit, "", out, cap, err);
}

static bool all(const ch *chars, size_t n, bool (*ok)(uint32_t))
{
    for (size_t i = 0; i < n; i++) {
        if (!ok(chars[i].cp))
            return false;
    }
    return true;
}

static bool is_ascii(uint32_t cp)
{
    return cp < 0x80;
}

static bool is_dialable(uint32_t cp)
{
    return is_digit(cp) || is_symbol(cp);
}

/* A plate as the kinds' table has it (research 4): 1..8 ASCII letters and
 * digits, the first and the last of which may be a Chinese character (a
 * province's 粤, a 学 or 警 at the end). Nothing is cut: a plate cut names
 * another car, and "..." is no letter or digit of one. */
static bool car_number_ok(const ch *chars, size_t n)
{
    if (n > 8)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = chars[i].cp;
        bool end = i == 0 || i == n - 1;
        if (!(is_digit(cp) || is_letter(cp) || (end && is_cjk(cp))))
            return false;
    }
    return true;
}

/* A number: digits, with at most one '.' between digits ("5." and ".5"
 * are no decimal number), <= 32 characters. No sign: WeChat refuses
 * "-456" (47003), which is how the kinds' table reads. */
static bool number_ok(const ch *chars, size_t n)
{
    size_t points = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = chars[i].cp;
        bool inside = i > 0 && i + 1 < n;
        points += cp == '.';
        if (!(is_digit(cp) || (cp == '.' && inside)))
            return false;
    }
    return n > 0 && points <= 1 && n <= 32;
}

/* An amount: an optional currency sign, 1..10 digits, decimals, an optional 元. */
static bool amount_ok(const ch *chars, size_t n)
{
    size_t i = 0, digits = 0;
    static const uint32_t signs[] = {'$', 0xa5 /* ¥ */, 0xffe5 /* ￥ */, 0x20ac, 0xa3};
    for (size_t k = 0; n > 0 && k < sizeof(signs) / sizeof(signs[0]); k++)
        i += i == 0 && chars[0].cp == signs[k];
    size_t end = n > i && chars[n - 1].cp == 0x5143 /* 元 */ ? n - 1 : n;
    for (size_t k = i; k < end && chars[k].cp != '.'; k++, digits++) {
        if (!is_digit(chars[k].cp))
            return false;
    }
    return digits >= 1 && digits <= 10 && number_ok(chars + i, end - i);
}

int pgw_wx_keyword_fit(const char *keyword, const char *value, char *out, size_t cap, pgw_err *err)
{
    PGW_ASSERT(cap > 0);
    out[0] = '\0';
    kind k;
    if (kind_of(keyword, &k) != PGW_OK)
        return pgw_err_set(err, PGW_EINVAL, "keyword \"%.32s\" is of no kind WeChat knows",
                           keyword);
    ch chars[CHARS_MAX];
    size_t n = 0;
    if (!decode(value, chars, CHARS_MAX, &n))
        return pgw_err_set(err, PGW_EINVAL, "%s: not UTF-8, or longer than %d characters", keyword,
                           CHARS_MAX);
    if (n == 0)
        return pgw_err_set(err, PGW_EINVAL, "%s: empty (WeChat refuses it)", keyword);
    bool ok = true;
    switch (k) {
    case K_THING:
        return cut(value, chars, n, 20, true, out, cap, err);
    case K_CHARACTER_STRING:
        ok = all(chars, n, is_ascii);
        return ok ? cut(value, chars, n, 32, true, out, cap, err)
                  : pgw_err_set(err, PGW_EINVAL, "%s: ASCII only", keyword);
    case K_PHONE_NUMBER: /* never cut: a cut phone is another's, and "..." dials nothing */
        ok = n <= 17 && all(chars, n, is_dialable);
        break;
    case K_CAR_NUMBER:
        ok = car_number_ok(chars, n);
        break;
    case K_NAME:
        return cut(value, chars, n, all(chars, n, is_ascii) ? 20 : 10, false, out, cap, err);
    case K_LETTER:
        ok = all(chars, n, is_letter);
        return ok ? cut(value, chars, n, 32, false, out, cap, err)
                  : pgw_err_set(err, PGW_EINVAL, "%s: letters only", keyword);
    case K_NUMBER:
        ok = number_ok(chars, n);
        break;
    case K_AMOUNT:
        ok = amount_ok(chars, n);
        break;
    case K_SYMBOL:
        ok = n <= 5 && all(chars, n, is_symbol);
        break;
    case K_PHRASE:
        ok = n <= 5 && all(chars, n, is_cjk);
        break;
    case K_TIME:
    case K_DATE:
    case K_ENUM:
        ok = strlen(value) < 64 && !all(chars, n, is_symbol);
        break;
    case K_COUNT:
        PGW_ASSERT(!"not a kind");
    }
    /* The quote ends on a character: cut inside one, the message is not
     * UTF-8, and a JSON answer carrying it cannot be built. */
    if (!ok)
        return pgw_err_set(err, PGW_EINVAL, "%s: \"%.*s\" is not a %s WeChat takes", keyword,
                           (int)pgw_utf8_prefix(value, 48), value, KIND_NAMES[k]);
    return emit(value, chars, n, "", out, cap, err);
}
