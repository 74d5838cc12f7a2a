/*
 * custom.c - see custom.h.
 */
#include "custom.h"

#include "adapters/wechat_mp/api.h"
#include "core/utf8.h"

#include <string.h>

int pgw_oa_send_text(pgw_wx_client *client, const char *appid, const char *openid, const char *text,
                     pgw_wx_reply *reply, pgw_err *err)
{
    memset(reply, 0, sizeof(*reply));
    if (!pgw_wx_id_ok(openid))
        return pgw_err_set(err, PGW_EINVAL, "openid: 1..%d of [A-Za-z0-9_-]", PGW_WX_OPENID_MAX);
    size_t n = strlen(text);
    if (n == 0 || n > PGW_OA_TEXT_MAX)
        return pgw_err_set(err, PGW_EINVAL, "a text message has 1..%d bytes, not %zu",
                           PGW_OA_TEXT_MAX, n);
    if (!pgw_utf8_valid(text))
        return pgw_err_set(err, PGW_EINVAL, "a text message must be UTF-8");
    json_t *content = json_string(text);
    if (content == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory");
    json_t *body = json_pack("{s:s,s:s,s:{s:o}}", "touser", openid, "msgtype", "text", "text",
                             "content", content);
    if (body == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory");
    json_t *answer = NULL;
    int rc = pgw_wx_post(client, appid, "/cgi-bin/message/custom/send", body, &answer, reply, err);
    json_decref(body);
    json_decref(answer);
    return rc;
}
