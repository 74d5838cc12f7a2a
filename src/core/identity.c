/*
 * identity.c - see identity.h.
 */
#include "identity.h"

#include "assertions.h"
#include "text.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define PHONE_INPUT_MAX 64 /* characters; a full-width one takes 3 bytes */

static const char *const KIND_NAMES[] = {
    [PGW_ID_MEMBER] = "member_id",    [PGW_ID_PHONE] = "phone",
    [PGW_ID_CARD] = "card",           [PGW_ID_MP_OPENID] = "mp_openid",
    [PGW_ID_OA_OPENID] = "oa_openid", [PGW_ID_UNIONID] = "unionid",
    [PGW_ID_EMAIL] = "email",
};
#define N_KINDS (sizeof(KIND_NAMES) / sizeof(KIND_NAMES[0]))

/*
 * What a refusal says of a value: its shape, never the value. A refused
 * value's message becomes a 400's answer and a log line, and a phone
 * number (or an openid, a card, an address) must not reach a log: phones
 * are sealed in the vault and logged masked, if at all.
 */
static const char *const VALUE_SHAPES[] = {
    [PGW_ID_MEMBER] = "\"M\" and 1..20 of 0-9 A-Z",
    [PGW_ID_PHONE] = "a mainland China mobile number",
    [PGW_ID_CARD] = "1..32 letters, digits or -",
    [PGW_ID_MP_OPENID] = "1..64 letters, digits, _ or -",
    [PGW_ID_OA_OPENID] = "1..64 letters, digits, _ or -",
    [PGW_ID_UNIONID] = "1..64 letters, digits, _ or -",
    [PGW_ID_EMAIL] = "name@domain.tld",
};
PGW_STATIC_ASSERT(sizeof(VALUE_SHAPES) == sizeof(KIND_NAMES), "a shape for every kind");

int pgw_identity_kind_parse(const char *name, pgw_identity_kind *out)
{
    for (size_t i = 0; i < N_KINDS; i++) {
        if (strcmp(KIND_NAMES[i], name) == 0) {
            *out = (pgw_identity_kind)i;
            return PGW_OK;
        }
    }
    return PGW_EINVAL;
}

const char *pgw_identity_kind_name(pgw_identity_kind kind)
{
    PGW_ASSERT((size_t)kind < N_KINDS);
    return KIND_NAMES[kind];
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* The character (not byte) count of in[0..end), counted from 1: where a
 * refusal points instead of quoting the number. */
static size_t char_at(const char *in, size_t end)
{
    size_t chars = 0;
    for (size_t i = 0; i < end; i++)
        chars += ((unsigned char)in[i] & 0xC0) != 0x80;
    return chars;
}

/*
 * The character at in[*i], advancing *i past it: a full-width form as its
 * ASCII (U+FF10..U+FF19 digits, U+FF0B '+', U+FF0D '-', U+FF08/U+FF09
 * parentheses, U+3000 the ideographic space), else the byte. A Chinese
 * input method in full-width mode types a number so, and it was refused
 * (the HTTP review).
 */
static char next_halfwidth(const char *in, size_t len, size_t *i)
{
    const unsigned char *u = (const unsigned char *)in + *i;
    size_t left = len - *i;
    if (left >= 3 && u[0] == 0xEF && u[1] == 0xBC && u[2] >= 0x88 && u[2] <= 0x99 && u[2] != 0x8A &&
        u[2] != 0x8C && u[2] != 0x8E && u[2] != 0x8F) {
        *i += 3;
        return (char)(u[2] - 0x88 + '('); /* U+FF08 '（' .. U+FF19 '９' */
    }
    if (left >= 3 && u[0] == 0xE3 && u[1] == 0x80 && u[2] == 0x80) {
        *i += 3;
        return ' ';
    }
    return in[(*i)++];
}

int pgw_phone_normalize(const char *in, char *out, size_t cap, pgw_err *err)
{
    PGW_ASSERT(cap >= 15);
    size_t len = strnlen(in, 3 * PHONE_INPUT_MAX + 1), chars = 0;
    for (size_t i = 0; i < len; i++)
        chars += ((unsigned char)in[i] & 0xC0) != 0x80; /* not a continuation byte */
    if (len == 0 || len > 3 * PHONE_INPUT_MAX || chars > PHONE_INPUT_MAX)
        return pgw_err_set(err, PGW_EINVAL, "phone number must be 1..%d characters",
                           PHONE_INPUT_MAX);
    char digits[PHONE_INPUT_MAX + 1];
    size_t n = 0;
    bool plus = false;
    for (size_t i = 0; i < len;) {
        char c = next_halfwidth(in, len, &i);
        if (c == ' ' || c == '-' || c == '(' || c == ')')
            continue;
        if (c == '+' && n == 0 && !plus) {
            plus = true;
            continue;
        }
        if (!is_digit(c))
            return pgw_err_set(err, PGW_EINVAL,
                               "the phone number has a character that is not a digit (its "
                               "character %zu)",
                               char_at(in, i));
        digits[n++] = c;
    }
    digits[n] = '\0';
    const char *d = digits;
    if (plus) {
        if (strncmp(d, "86", 2) != 0)
            return pgw_err_set(err, PGW_EINVAL,
                               "the phone number is not a mainland China number (+86)");
        d += 2;
    } else if (strncmp(d, "0086", 4) == 0) {
        d += 4;
    } else if (strncmp(d, "86", 2) == 0 && strlen(d) == 13) {
        d += 2;
    }
    if (d[0] == '0' && strlen(d) == 12)
        d += 1; /* a trunk '0' typed in front of a mobile */
    if (strlen(d) != 11 || d[0] != '1' || d[1] < '3' || d[1] > '9')
        return pgw_err_set(err, PGW_EINVAL,
                           "the phone number is not a mainland China mobile number (11 digits "
                           "starting 13-19; %zu digits%s)",
                           strlen(d), strlen(d) == 11 ? " not starting so" : "");
    PGW_TEXT(out, cap, "+86", d);
    return PGW_OK;
}

int pgw_phone_mask(const char *e164, char *out, size_t cap)
{
    if (cap < 12 || strlen(e164) != 14 || strncmp(e164, "+86", 3) != 0)
        return PGW_EINVAL;
    snprintf(out, cap, "%.3s****%.4s", e164 + 3, e164 + 10);
    return PGW_OK;
}

/* 1..max characters, each a letter, a digit or one of `extra`. */
static bool token_ok(const char *s, size_t max, const char *extra)
{
    size_t len = strnlen(s, max + 1);
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_alnum(s[i]) && strchr(extra, s[i]) == NULL)
            return false;
    }
    return true;
}

static bool appid_ok(const char *s)
{
    if (strnlen(s, PGW_APPID_LEN + 1) != PGW_APPID_LEN || strncmp(s, "wx", 2) != 0)
        return false;
    for (size_t i = 2; i < PGW_APPID_LEN; i++) {
        if (!is_digit(s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
            return false;
    }
    return true;
}

static bool member_id_ok(const char *s)
{
    size_t len = strnlen(s, PGW_MEMBER_ID_MAX + 1);
    if (len < 2 || len > PGW_MEMBER_ID_MAX || s[0] != 'M')
        return false;
    for (size_t i = 1; i < len; i++) {
        if (!is_digit(s[i]) && !(s[i] >= 'A' && s[i] <= 'Z'))
            return false;
    }
    return true;
}

/* A practical address check; the domain is lower-cased into out. Its
 * labels are not empty: "a@example..com" is a typo, and taken it made a
 * member of an address that can never be one, beside the right one's. */
static int email_normalize(const char *s, char *out, size_t cap, pgw_err *err)
{
    size_t len = strnlen(s, PGW_IDENTITY_VALUE_MAX + 1);
    const char *at = strchr(s, '@');
    if (len > PGW_IDENTITY_VALUE_MAX || at == NULL || strchr(at + 1, '@') != NULL || at == s ||
        at - s > 64 || strchr(at + 1, '.') == NULL || at[1] == '.' || s[len - 1] == '.' ||
        strstr(at + 1, "..") != NULL)
        return pgw_err_set(err, PGW_EINVAL, "the value is not an email address (name@domain.tld)");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == 0x7F || c >= 0x80)
            return pgw_err_set(err, PGW_EINVAL,
                               "the email address has a space or non-ASCII byte (byte %zu)", i + 1);
    }
    PGW_ASSERT(cap > len);
    for (size_t i = 0; i <= len; i++) {
        char c = s[i];
        out[i] = (s + i > at && c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    return PGW_OK;
}

/* Checks a kind's scope: a shop id for cards, an appid for openids, none else. */
static int check_scope(pgw_identity_kind kind, const char *scope, pgw_err *err)
{
    bool has = scope != NULL && scope[0] != '\0';
    if (kind == PGW_ID_CARD) {
        if (!has || !token_ok(scope, PGW_ID_MAX, "_-"))
            return pgw_err_set(err, PGW_EINVAL,
                               "card needs a shop id (letters, digits, _ -), "
                               "as in \"S001:88001\"");
        return PGW_OK;
    }
    if (kind == PGW_ID_MP_OPENID || kind == PGW_ID_OA_OPENID) {
        /* Not quoted: what stands there when it is no appid is most often
         * the openid, written first (kind:OPENID:APPID) or swapped with it. */
        if (!has || !appid_ok(scope))
            return pgw_err_set(
                err, PGW_EINVAL, "%s needs an appid, \"wx\" + 16 hex digits; %s", KIND_NAMES[kind],
                has ? "the one given is not one (the openid in its place?)" : "none is given");
        return PGW_OK;
    }
    if (has)
        return pgw_err_set(err, PGW_EINVAL, "%s takes no scope", KIND_NAMES[kind]);
    return PGW_OK;
}

static int check_value(pgw_identity_kind kind, const char *value, pgw_identity *out, pgw_err *err)
{
    bool ok = true;
    switch (kind) {
    case PGW_ID_PHONE:
        return pgw_phone_normalize(value, out->value, sizeof(out->value), err);
    case PGW_ID_EMAIL:
        return email_normalize(value, out->value, sizeof(out->value), err);
    case PGW_ID_MEMBER:
        ok = member_id_ok(value);
        break;
    case PGW_ID_CARD:
        ok = token_ok(value, PGW_CARD_NO_MAX, "-");
        break;
    case PGW_ID_MP_OPENID:
    case PGW_ID_OA_OPENID:
    case PGW_ID_UNIONID:
        ok = token_ok(value, PGW_OPENID_MAX, "_-");
        break;
    }
    if (!ok)
        return pgw_err_set(err, PGW_EINVAL, "the value is not a valid %s (%s)", KIND_NAMES[kind],
                           VALUE_SHAPES[kind]);
    PGW_TEXT(out->value, sizeof(out->value), value); /* fits: its kind's bound */
    return PGW_OK;
}

int pgw_identity_make(pgw_identity_kind kind, const char *scope, const char *value,
                      pgw_identity *out, pgw_err *err)
{
    PGW_ASSERT(value != NULL && out != NULL);
    if ((size_t)kind >= N_KINDS)
        return pgw_err_set(err, PGW_EINVAL, "unknown identity kind %d", (int)kind);
    memset(out, 0, sizeof(*out));
    out->kind = kind;
    int rc = check_scope(kind, scope, err);
    if (rc == PGW_OK)
        rc = check_value(kind, value, out, err);
    if (rc == PGW_OK && scope != NULL)
        PGW_TEXT(out->scope, sizeof(out->scope), scope); /* fits: check_scope */
    return rc;
}

int pgw_identity_parse(const char *text, pgw_identity *out, pgw_err *err)
{
    size_t len = strnlen(text, PGW_IDENTITY_TEXT_MAX + 1);
    if (len > PGW_IDENTITY_TEXT_MAX)
        return pgw_err_set(err, PGW_EINVAL, "identity longer than %d bytes", PGW_IDENTITY_TEXT_MAX);
    char buf[PGW_IDENTITY_TEXT_MAX + 1];
    memcpy(buf, text, len + 1);
    char *colon = strchr(buf, ':');
    if (colon == NULL)
        return pgw_err_set(
            err, PGW_EINVAL,
            "an identity is kind:value (phone:NUMBER, card:SHOP:NUMBER ...), and this "
            "one has no ':'");
    *colon = '\0';
    pgw_identity_kind kind;
    if (pgw_identity_kind_parse(buf, &kind) != PGW_OK)
        return pgw_err_set(err, PGW_EINVAL,
                           "unknown identity kind before the ':' (member_id, phone, card, "
                           "mp_openid, oa_openid, unionid or email)");
    char *value = colon + 1;
    const char *scope = NULL;
    if (kind == PGW_ID_CARD || kind == PGW_ID_MP_OPENID || kind == PGW_ID_OA_OPENID) {
        char *second = strchr(value, ':');
        if (second == NULL)
            return pgw_err_set(err, PGW_EINVAL, "%s needs %s:value", buf,
                               kind == PGW_ID_CARD ? "shop" : "appid");
        *second = '\0';
        scope = value;
        value = second + 1;
    }
    return pgw_identity_make(kind, scope, value, out, err);
}

int pgw_identity_format(const pgw_identity *id, char *out, size_t cap)
{
    int n;
    if (id->scope[0] != '\0')
        n = snprintf(out, cap, "%s:%s:%s", pgw_identity_kind_name(id->kind), id->scope, id->value);
    else
        n = snprintf(out, cap, "%s:%s", pgw_identity_kind_name(id->kind), id->value);
    return (n < 0 || (size_t)n >= cap) ? PGW_ERANGE : PGW_OK;
}
