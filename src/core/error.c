/*
 * error.c - see error.h.
 */
#include "error.h"

#include "assertions.h"
#include "bounds.h"
#include "utf8.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

_Static_assert(PGW_ID_MAX <= PGW_ERR_MEMBER_MAX, "an error names any member");

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Cuts `s` (NUL-terminated, of capacity `cap`) back so that it never ends
 * inside a UTF-8 multi-byte sequence: vsnprintf truncates on bytes. */
static void trim_utf8_tail(char *s, size_t cap)
{
    size_t len = strnlen(s, cap);
    if (len + 1 < cap)
        return; /* not truncated */
    size_t i = len;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i > 0 && ((unsigned char)s[i - 1] & 0x80)) {
        unsigned char lead = (unsigned char)s[i - 1];
        size_t need = (lead >= 0xF0) ? 4 : (lead >= 0xE0) ? 3 : 2;
        if (len - (i - 1) < need)
            s[i - 1] = '\0';
    }
}

static int set_v(pgw_err *err, int code, bool database, const char *fmt, va_list ap)
{
    PGW_ASSERT(code < 0);
    if (err == NULL)
        return code;
    err->code = code;
    err->member_id[0] = '\0';
    err->n_figures = 0;
    err->n_texts = 0;
    err->database = database;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    trim_utf8_tail(err->msg, sizeof(err->msg));
    return code;
}

int pgw_err_set(pgw_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = set_v(err, code, false, fmt, ap);
    va_end(ap);
    return rc;
}

int pgw_err_set_database(pgw_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = set_v(err, code, true, fmt, ap);
    va_end(ap);
    return rc;
}

void pgw_err_clear(pgw_err *err)
{
    if (err == NULL)
        return;
    err->code = PGW_OK;
    err->msg[0] = '\0';
    err->member_id[0] = '\0';
    err->n_figures = 0;
    err->n_texts = 0;
    err->database = false;
}

/* Whether the error in `err` carries a figure or a text `name` already. */
static bool has_detail(const pgw_err *err, const char *name)
{
    for (size_t i = 0; i < err->n_figures; i++)
        if (strcmp(err->figures[i].name, name) == 0)
            return true;
    for (size_t i = 0; i < err->n_texts; i++)
        if (strcmp(err->texts[i].name, name) == 0)
            return true;
    return false;
}

void pgw_err_figure(pgw_err *err, const char *name, int64_t value)
{
    PGW_ASSERT(name != NULL);
    if (err == NULL)
        return;
    PGW_ASSERT(err->code < 0 && err->n_figures < PGW_ERR_FIGURES_MAX);
    PGW_ASSERT(!has_detail(err, name));
    err->figures[err->n_figures++] = (pgw_named_figure){name, value};
}

void pgw_err_text(pgw_err *err, const char *name, const char *value)
{
    PGW_ASSERT(name != NULL && value != NULL);
    if (err == NULL)
        return;
    PGW_ASSERT(err->code < 0 && err->n_texts < PGW_ERR_TEXTS_MAX);
    PGW_ASSERT(!has_detail(err, name));
    pgw_named_text *t = &err->texts[err->n_texts++];
    t->name = name;
    size_t len = strnlen(value, PGW_ERR_TEXT_MAX);
    memcpy(t->value, value, len);
    t->value[len] = '\0';
    trim_utf8_tail(t->value, sizeof(t->value)); /* cut on a character, as a message is */
    /* A text quotes what came or what the store kept (a hand-edited or
     * older store's bytes): the body made of it must be JSON, where
     * jansson drops a string that is not UTF-8. */
    pgw_utf8_scrub(t->value);
}

void pgw_err_member(pgw_err *err, const char *member_id)
{
    if (err == NULL)
        return;
    size_t len = strlen(member_id);
    PGW_ASSERT(err->code < 0 && len <= PGW_ERR_MEMBER_MAX);
    memcpy(err->member_id, member_id, len + 1);
}

int pgw_err_prefix(pgw_err *err, const char *fmt, ...)
{
    PGW_ASSERT(err != NULL);
    char prefix[PGW_ERR_MSG_MAX];
    char old[PGW_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    size_t cap = sizeof(err->msg) - 1;
    size_t plen = min_size(strlen(prefix), cap);
    size_t olen = min_size(strnlen(old, sizeof(old)), cap - plen);
    memcpy(err->msg, prefix, plen);
    memcpy(err->msg + plen, old, olen);
    err->msg[plen + olen] = '\0';
    trim_utf8_tail(err->msg, sizeof(err->msg));
    return err->code;
}

const char *pgw_code_name(int code)
{
    switch (code) {
    case PGW_OK:
        return "OK";
    case PGW_EINVAL:
        return "EINVAL";
    case PGW_ERANGE:
        return "ERANGE";
    case PGW_ENOTFOUND:
        return "ENOTFOUND";
    case PGW_ECONFLICT:
        return "ECONFLICT";
    case PGW_EINSUFFICIENT:
        return "EINSUFFICIENT";
    case PGW_ESTATE:
        return "ESTATE";
    case PGW_EFULL:
        return "EFULL";
    case PGW_EIO:
        return "EIO";
    case PGW_ENOMEM:
        return "ENOMEM";
    case PGW_EEXCEEDS:
        return "EEXCEEDS";
    case PGW_EUNAVAILABLE:
        return "EUNAVAILABLE";
    case PGW_EUNAUTHORIZED:
        return "EUNAUTHORIZED";
    case PGW_EFORBIDDEN:
        return "EFORBIDDEN";
    case PGW_ETOOLARGE:
        return "ETOOLARGE";
    case PGW_EMEDIA:
        return "EMEDIA";
    case PGW_ERISK:
        return "ERISK";
    case PGW_ELIMITED:
        return "ELIMITED";
    case PGW_ECLOSED:
        return "ECLOSED";
    default:
        return "E?";
    }
}

int pgw_err_recode(pgw_err *err, int code)
{
    PGW_ASSERT(code < 0);
    if (err != NULL && err->code != code) {
        err->member_id[0] = '\0';
        err->n_figures = 0;
        err->n_texts = 0;
    }
    if (err != NULL)
        err->code = code;
    return code;
}
