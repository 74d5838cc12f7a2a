/*
 * api.h - the mini program's server calls: login, phone number, and
 * subscribe messages (research/wechat-api.md sections 1, 2 and 4).
 *
 * The session_key jscode2session returns is never copied out of the
 * answer, never stored and never logged: the gateway does not need it
 * (phone numbers come through getuserphonenumber's code instead).
 */
#ifndef PGW_ADAPTERS_WECHAT_MP_API_H
#define PGW_ADAPTERS_WECHAT_MP_API_H

#include "adapters/wechat/client.h"
#include "core/error.h"

#include <stddef.h>
#include <stdint.h>

#define PGW_WX_CODE_MAX     128 /* a wx.login or phone code we accept */
#define PGW_WX_OPENID_MAX   64
#define PGW_WX_KEYWORDS_MAX 10 /* keywords of one subscribe or template message */
#define PGW_WX_PAGE_MAX     256

/* Whether `code` is 1..PGW_WX_CODE_MAX of [A-Za-z0-9_-] (safe in a URL as is). */
bool pgw_wx_code_ok(const char *code);

/* Whether `id` is an openid or unionid as WeChat issues them: 1..64 of
 * [A-Za-z0-9_-] (safe in a URL as is). */
bool pgw_wx_id_ok(const char *id);

typedef struct pgw_mp_identity {
    char openid[PGW_WX_OPENID_MAX + 1];
    char unionid[PGW_WX_OPENID_MAX + 1]; /* "" when the app is not bound to an open platform */
} pgw_mp_identity;

/* sns/jscode2session: who the wx.login `code` belongs to. A bad or used
 * code is PGW_EINVAL (errcode 40029 / 40163 in reply). An answer without
 * a usable openid, or with a unionid that is none (not 1..64 of
 * [A-Za-z0-9_-]; absent or null is no unionid), is PGW_EIO, its message
 * naming the field. */
int pgw_mp_login(pgw_wx_client *client, const char *appid, const char *code, pgw_mp_identity *out,
                 pgw_wx_reply *reply, pgw_err *err);

/* wxa/business/getuserphonenumber: the member's mainland number as WeChat
 * gives it ("13800138000"); the watermark must name appid. Other countries
 * are PGW_EINVAL (the gateway keeps mainland China mobiles only). `openid`
 * (required) is the WeChat user asking: WeChat then refuses a code given
 * to another user (research/wechat-api.md 2), as it refuses a bad or used
 * one: PGW_EUNAUTHORIZED. An answer WeChat gave (errcode 0) with no number
 * this app can use (no phone_info, another app's watermark, a number too
 * long) is PGW_EINVAL with *unusable set: not an outage, and WeChat took
 * the code, so sending it again cannot work; the message says what came
 * (member names, an appid), never the number, so the operator may log it. */
int pgw_mp_phone(pgw_wx_client *client, const char *appid, const char *openid, const char *code,
                 char *phone, size_t cap, bool *unusable, pgw_wx_reply *reply, pgw_err *err);

typedef struct pgw_wx_keyword {
    const char *name;  /* "thing1", "amount2", ... */
    const char *value; /* fitted to the kind's limits before sending */
} pgw_wx_keyword;

/* cgi-bin/message/subscribe/send to openid; `page` may be NULL (no jump),
 * `state` too (WeChat's default, "formal"; else "trial" or "developer": the
 * version the page is opened in, 41030 when the page is not in it). *msgid
 * is WeChat's id of the message. 43101 (no quota) is PGW_ESTATE. */
int pgw_mp_send_subscribe(pgw_wx_client *client, const char *appid, const char *openid,
                          const char *template_id, const char *page, const char *state,
                          const pgw_wx_keyword *kw, size_t n, int64_t *msgid, pgw_wx_reply *reply,
                          pgw_err *err);

/* The data object of a message: {"name": {"value": fitted}, ...}; the
 * caller decrefs. Shared by subscribe and template messages. */
int pgw_wx_keywords_json(const pgw_wx_keyword *kw, size_t n, json_t **out, pgw_err *err);

/* The msgid of WeChat's answer to a send (0 when absent). */
int64_t pgw_wx_msgid(const json_t *answer);

#endif
