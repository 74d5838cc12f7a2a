/*
 * custom.h - the official account's customer-service text messages
 * (cgi-bin/message/custom/send): a reply sent after the push's own answer,
 * within the 48 hours WeChat allows after the member's last message.
 */
#ifndef PGW_ADAPTERS_WECHAT_OA_CUSTOM_H
#define PGW_ADAPTERS_WECHAT_OA_CUSTOM_H

#include "adapters/wechat/client.h"

/* The longest text we send, in bytes: our replies are a sentence. */
#define PGW_OA_TEXT_MAX 2048

/* Sends `text` (1..PGW_OA_TEXT_MAX bytes of UTF-8) to the follower
 * `openid`. 45015 (past the 48 hours) and 48001 (the account may not send
 * them) come back as pgw_wx_post gives them, WeChat's code in *reply. */
int pgw_oa_send_text(pgw_wx_client *client, const char *appid, const char *openid, const char *text,
                     pgw_wx_reply *reply, pgw_err *err);

#endif
