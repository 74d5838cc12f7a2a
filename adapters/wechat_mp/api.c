/*
 * api.c - see api.h.
 */
#include "api.h"

#include "adapters/wechat_mp/keywords.h"
#include "core/assertions.h"
#include "core/utf8.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEGACY_VALUE_MAX 200 /* bytes of an old-style template value ("first", "keyword1") */

bool pgw_wx_code_ok(const char *code)
{
    size_t n = strnlen(code, PGW_WX_CODE_MAX + 1);
    if (n == 0 || n > PGW_WX_CODE_MAX)
        return false;
    return strspn(code, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

bool pgw_wx_id_ok(const char *id)
{
    size_t n = strnlen(id, PGW_WX_OPENID_MAX + 1);
    return n > 0 && n <= PGW_WX_OPENID_MAX &&
           strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

int pgw_mp_login(pgw_wx_client *client, const char *appid, const char *code, pgw_mp_identity *out,
                 pgw_wx_reply *reply, pgw_err *err)
{
    memset(out, 0, sizeof(*out));
    memset(reply, 0, sizeof(*reply));
    if (!pgw_wx_code_ok(code))
        return pgw_err_set(err, PGW_EINVAL, "code must be 1..%d of [A-Za-z0-9_-]", PGW_WX_CODE_MAX);
    char query[PGW_WX_CODE_MAX + 64];
    snprintf(query, sizeof(query), "js_code=%s&grant_type=authorization_code", code);
    json_t *answer = NULL;
    int rc =
        pgw_wx_get_with_secret(client, appid, "/sns/jscode2session", query, &answer, reply, err);
    if (rc != PGW_OK)
        return rc;
    /* Drop the session key at once: nothing below may copy it. */
    json_object_del(answer, "session_key");
    const char *openid = json_string_value(json_object_get(answer, "openid"));
    /* No unionid (absent or null) is an app not bound to an open platform;
     * one that is there but no unionid (a number, "", a space in it) is an
     * answer we cannot use, as one without an openid: dropped, the member
     * would be linked by its openid alone. Each says which field failed. */
    json_t *union_value = json_object_get(answer, "unionid");
    const char *unionid = json_string_value(union_value);
    bool no_union = union_value == NULL || json_is_null(union_value);
    if (openid == NULL || !pgw_wx_id_ok(openid))
        rc = pgw_err_set(err, PGW_EIO, "WeChat jscode2session: no usable openid in the answer");
    else if (!no_union && (unionid == NULL || !pgw_wx_id_ok(unionid)))
        rc = pgw_err_set(err, PGW_EIO, "WeChat jscode2session: no usable unionid in the answer");
    if (rc == PGW_OK) {
        snprintf(out->openid, sizeof(out->openid), "%s", openid);
        snprintf(out->unionid, sizeof(out->unionid), "%s", unionid ? unionid : "");
    }
    json_decref(answer);
    return rc;
}

/* `text` from WeChat, for a message: printable ASCII, the rest '?', at
 * most cap - 1 bytes (a key or an appid could hold a newline). */
static void shown(const char *text, char *out, size_t cap)
{
    size_t n = 0;
    for (; text[n] != '\0' && n + 1 < cap; n++)
        out[n] = text[n] >= 0x20 && text[n] < 0x7f ? text[n] : '?';
    out[n] = '\0';
}

/* The names (never the values) of `obj`'s members, for a message: "errcode,
 * errmsg"; "none" when it has none, "..." when they do not fit. */
static void key_names(const json_t *obj, char *out, size_t cap)
{
    PGW_ASSERT(cap > 8);
    const char *key;
    json_t *value;
    size_t n = 0;
    out[0] = '\0';
    json_object_foreach((json_t *)obj, key, value)
    {
        char name[33];
        shown(key, name, sizeof(name));
        if (n + strlen(name) + 2 + 4 >= cap) {
            snprintf(out + n, cap - n, "%s...", n > 0 ? ", " : "");
            return;
        }
        n += (size_t)snprintf(out + n, cap - n, "%s%s", n > 0 ? ", " : "", name);
    }
    if (n == 0)
        snprintf(out, cap, "none");
}

/* The number in getuserphonenumber's answer, checked. */
static int phone_of(const json_t *answer, const char *appid, char *phone, size_t cap,
                    bool *unusable, pgw_err *err)
{
    char keys[160], mark_shown[PGW_WX_OPENID_MAX + 1];
    json_t *info = json_object_get(answer, "phone_info");
    const char *pure = json_string_value(json_object_get(info, "purePhoneNumber"));
    const char *mark =
        json_string_value(json_object_get(json_object_get(info, "watermark"), "appid"));
    /* countryCode is a number in WeChat's examples and a string in its table. */
    json_t *cc = json_object_get(info, "countryCode");
    bool mainland = (json_is_integer(cc) && json_integer_value(cc) == 86) ||
                    (json_is_string(cc) && strcmp(json_string_value(cc), "86") == 0);
    if (!json_is_object(info)) {
        key_names(answer, keys, sizeof(keys));
        *unusable = true;
        return pgw_err_set(err, PGW_EINVAL,
                           "WeChat answered getuserphonenumber without a number: no phone_info "
                           "in its answer (its keys: %s)",
                           keys);
    }
    if (pure == NULL || pure[0] == '\0' || mark == NULL) { /* "" is no number either */
        key_names(info, keys, sizeof(keys));
        *unusable = true;
        return pgw_err_set(err, PGW_EINVAL,
                           "WeChat answered getuserphonenumber without a number: its phone_info "
                           "lacks %s (its keys: %s)",
                           pure == NULL || pure[0] == '\0' ? "purePhoneNumber" : "watermark.appid",
                           keys);
    }
    shown(mark, mark_shown, sizeof(mark_shown));
    if (strcmp(mark, appid) != 0) {
        *unusable = true;
        return pgw_err_set(err, PGW_EINVAL,
                           "WeChat gave getuserphonenumber's number for another app: its "
                           "watermark names %s, not this gateway's %s",
                           mark_shown, appid);
    }
    if (!mainland)
        return pgw_err_set(err, PGW_EINVAL, "only mainland China mobile numbers are kept");
    if (strlen(pure) >= cap) {
        *unusable = true;
        return pgw_err_set(err, PGW_EINVAL,
                           "WeChat answered getuserphonenumber with a number too long to be one");
    }
    snprintf(phone, cap, "%s", pure);
    return PGW_OK;
}

int pgw_mp_phone(pgw_wx_client *client, const char *appid, const char *openid, const char *code,
                 char *phone, size_t cap, bool *unusable, pgw_wx_reply *reply, pgw_err *err)
{
    memset(reply, 0, sizeof(*reply));
    *unusable = false;
    if (!pgw_wx_code_ok(code))
        return pgw_err_set(err, PGW_EINVAL, "code must be 1..%d of [A-Za-z0-9_-]", PGW_WX_CODE_MAX);
    if (!pgw_wx_id_ok(openid)) /* without it WeChat takes anyone's code */
        return pgw_err_set(err, PGW_EINVAL, "the openid asking for the number is required");
    json_t *body = json_pack("{s:s,s:s}", "code", code, "openid", openid), *answer = NULL;
    if (body == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory");
    int rc =
        pgw_wx_post(client, appid, "/wxa/business/getuserphonenumber", body, &answer, reply, err);
    json_decref(body);
    if (rc == PGW_EUNAUTHORIZED) /* 40029 is only "invalid code": say what makes one */
        return pgw_err_set(err, rc,
                           "WeChat refused the phone code (errcode %ld %s): it is good once, for "
                           "5 minutes, and only for the WeChat user it was given to",
                           reply->errcode, reply->errmsg);
    if (rc != PGW_OK)
        return rc;
    rc = phone_of(answer, appid, phone, cap, unusable, err);
    json_decref(answer);
    return rc;
}

/* Old-style template keys carry no kind: "first", "remark", "keyword3". */
static bool legacy_key(const char *name)
{
    return strcmp(name, "first") == 0 || strcmp(name, "remark") == 0 ||
           strncmp(name, "keyword", 7) == 0;
}

int pgw_wx_keywords_json(const pgw_wx_keyword *kw, size_t n, json_t **out, pgw_err *err)
{
    *out = NULL;
    if (n == 0 || n > PGW_WX_KEYWORDS_MAX)
        return pgw_err_set(err, PGW_EINVAL, "a message has 1..%d keywords", PGW_WX_KEYWORDS_MAX);
    json_t *data = json_object();
    int rc = data ? PGW_OK : pgw_err_set(err, PGW_ENOMEM, "out of memory");
    for (size_t i = 0; rc == PGW_OK && i < n; i++) {
        char fitted[LEGACY_VALUE_MAX + 1 > PGW_WX_KEYWORD_VALUE_MAX ? LEGACY_VALUE_MAX + 1
                                                                    : PGW_WX_KEYWORD_VALUE_MAX];
        if (!legacy_key(kw[i].name)) {
            rc = pgw_wx_keyword_fit(kw[i].name, kw[i].value, fitted, sizeof(fitted), err);
        } else if (strlen(kw[i].value) > LEGACY_VALUE_MAX || !pgw_utf8_valid(kw[i].value)) {
            rc = pgw_err_set(err, PGW_EINVAL, "%s: at most %d bytes of UTF-8", kw[i].name,
                             LEGACY_VALUE_MAX);
        } else {
            snprintf(fitted, sizeof(fitted), "%s", kw[i].value);
        }
        json_t *value = rc == PGW_OK ? json_pack("{s:s}", "value", fitted) : NULL;
        if (rc == PGW_OK && value == NULL) /* jansson refuses what is not UTF-8 */
            rc = pgw_err_set(err, PGW_EINVAL, "%s: not valid UTF-8", kw[i].name);
        if (rc == PGW_OK && json_object_set_new(data, kw[i].name, value) != 0)
            rc = pgw_err_set(err, PGW_EINVAL, "%s: not a valid keyword name", kw[i].name);
    }
    if (rc != PGW_OK) {
        json_decref(data);
        return rc;
    }
    *out = data;
    return PGW_OK;
}

/* WeChat's msgid: a 64-bit integer. */
int64_t pgw_wx_msgid(const json_t *answer)
{
    json_t *id = json_object_get(answer, "msgid");
    return json_is_integer(id) ? (int64_t)json_integer_value(id) : 0;
}

int pgw_mp_send_subscribe(pgw_wx_client *client, const char *appid, const char *openid,
                          const char *template_id, const char *page, const char *state,
                          const pgw_wx_keyword *kw, size_t n, int64_t *msgid, pgw_wx_reply *reply,
                          pgw_err *err)
{
    *msgid = 0;
    memset(reply, 0, sizeof(*reply));
    if (!pgw_wx_id_ok(openid) || template_id[0] == '\0' || strlen(template_id) > 128 ||
        (page != NULL && strlen(page) > PGW_WX_PAGE_MAX) ||
        (state != NULL && strcmp(state, "formal") != 0 && strcmp(state, "trial") != 0 &&
         strcmp(state, "developer") != 0))
        return pgw_err_set(err, PGW_EINVAL,
                           "subscribe message: bad openid, template, page or version");
    json_t *data = NULL, *answer = NULL;
    int rc = pgw_wx_keywords_json(kw, n, &data, err);
    if (rc != PGW_OK)
        return rc;
    json_t *body =
        json_pack("{s:s,s:s,s:o}", "touser", openid, "template_id", template_id, "data", data);
    if (body == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory");
    if (page != NULL && page[0] != '\0' &&
        json_object_set_new(body, "page", json_string(page)) != 0) {
        json_decref(body);
        return pgw_err_set(err, PGW_EINVAL, "subscribe message: the page is not valid UTF-8");
    }
    if (state != NULL && json_object_set_new(body, "miniprogram_state", json_string(state)) != 0) {
        json_decref(body);
        return pgw_err_set(err, PGW_ENOMEM, "out of memory");
    }
    rc = pgw_wx_post(client, appid, "/cgi-bin/message/subscribe/send", body, &answer, reply, err);
    json_decref(body);
    if (rc == PGW_OK)
        *msgid = pgw_wx_msgid(answer);
    json_decref(answer);
    return rc;
}
