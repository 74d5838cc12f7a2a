/*
 * template.c - see template.h.
 */
#include "template.h"

#include <string.h>

#define CLIENT_MSG_ID_MAX 64

static bool present(const char *s)
{
    return s != NULL && s[0] != '\0';
}

int pgw_oa_send_template(pgw_wx_client *client, const char *appid, const pgw_oa_template *t,
                         int64_t *msgid, pgw_wx_reply *reply, pgw_err *err)
{
    *msgid = 0;
    memset(reply, 0, sizeof(*reply));
    if (!present(t->openid) || strlen(t->openid) > PGW_WX_OPENID_MAX || !present(t->template_id) ||
        strlen(t->template_id) > 128 ||
        (present(t->jump_page) && strlen(t->jump_page) > PGW_WX_PAGE_MAX) ||
        (present(t->client_msg_id) && strlen(t->client_msg_id) > CLIENT_MSG_ID_MAX))
        return pgw_err_set(err, PGW_EINVAL, "template message: bad openid, template, page or id");
    json_t *data = NULL, *answer = NULL;
    int rc = pgw_wx_keywords_json(t->kw, t->n_kw, &data, err);
    if (rc != PGW_OK)
        return rc;
    json_t *body = json_pack("{s:s,s:s,s:o}", "touser", t->openid, "template_id", t->template_id,
                             "data", data);
    if (body == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory");
    /* The mini program wins over a URL, so only it is ever sent. A field
     * jansson refuses (not UTF-8) fails the send: a notice without its
     * jump or its de-dup id is not the notice asked for. */
    if (present(t->jump_appid) &&
        json_object_set_new(body, "miniprogram",
                            json_pack("{s:s,s:s}", "appid", t->jump_appid, "pagepath",
                                      present(t->jump_page) ? t->jump_page : "")) != 0)
        rc = pgw_err_set(err, PGW_EINVAL, "template message: the jump is not valid UTF-8");
    if (rc == PGW_OK && present(t->client_msg_id) &&
        json_object_set_new(body, "client_msg_id", json_string(t->client_msg_id)) != 0)
        rc = pgw_err_set(err, PGW_EINVAL, "template message: client_msg_id is not valid UTF-8");
    if (rc != PGW_OK) {
        json_decref(body);
        return rc;
    }
    rc = pgw_wx_post(client, appid, "/cgi-bin/message/template/send", body, &answer, reply, err);
    json_decref(body);
    if (rc == PGW_OK)
        *msgid = pgw_wx_msgid(answer);
    json_decref(answer);
    return rc;
}
