/*
 * template.h - the official account's template messages
 * (cgi-bin/message/template/send, research/wechat-api.md section 5.1).
 */
#ifndef PGW_ADAPTERS_WECHAT_OA_TEMPLATE_H
#define PGW_ADAPTERS_WECHAT_OA_TEMPLATE_H

#include "adapters/wechat/client.h"
#include "adapters/wechat_mp/api.h"

#include <stddef.h>
#include <stdint.h>

typedef struct pgw_oa_template {
    const char *openid; /* the member's official-account openid */
    const char *template_id;
    const char *jump_appid;    /* the mini program to open; NULL or "" for none */
    const char *jump_page;     /* its page ("pages/points/index"); NULL for its home */
    const char *client_msg_id; /* WeChat's de-dup key (the notice id); NULL for none */
    const pgw_wx_keyword *kw;
    size_t n_kw;
} pgw_oa_template;

/* Sends it; *msgid is WeChat's id. 43004 (does not follow) is PGW_ESTATE. */
int pgw_oa_send_template(pgw_wx_client *client, const char *appid, const pgw_oa_template *t,
                         int64_t *msgid, pgw_wx_reply *reply, pgw_err *err);

#endif
