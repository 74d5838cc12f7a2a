/*
 * user.c - see user.h.
 */
#include "user.h"

#include <stdio.h>
#include <string.h>

int pgw_oa_user_unionid(pgw_wx_client *client, const char *appid, const char *openid,
                        char unionid[PGW_WX_OPENID_MAX + 1], bool *follows, pgw_wx_reply *reply,
                        pgw_err *err)
{
    unionid[0] = '\0';
    *follows = false;
    memset(reply, 0, sizeof(*reply));
    if (!pgw_wx_id_ok(openid))
        return pgw_err_set(err, PGW_EINVAL, "openid: 1..%d of [A-Za-z0-9_-]", PGW_WX_OPENID_MAX);
    char query[PGW_WX_OPENID_MAX + 32];
    snprintf(query, sizeof(query), "openid=%s&lang=zh_CN", openid);
    json_t *answer = NULL;
    int rc = pgw_wx_get(client, appid, "/cgi-bin/user/info", query, &answer, reply, err);
    if (rc != PGW_OK)
        return rc;
    json_t *subscribe = json_object_get(answer, "subscribe");
    const char *u = json_string_value(json_object_get(answer, "unionid"));
    if (!json_is_integer(subscribe) || json_integer_value(subscribe) < 0 ||
        json_integer_value(subscribe) > 1)
        rc = pgw_err_set(err, PGW_EIO, "WeChat user/info: no subscribe (0 or 1) in the answer");
    else if (u != NULL && !pgw_wx_id_ok(u))
        rc = pgw_err_set(err, PGW_EIO, "WeChat user/info: a malformed unionid");
    if (rc == PGW_OK) {
        *follows = json_integer_value(subscribe) == 1;
        snprintf(unionid, PGW_WX_OPENID_MAX + 1, "%s", u != NULL ? u : "");
    }
    json_decref(answer);
    return rc;
}
