/*
 * user.h - who an official-account follower is beyond the account
 * (cgi-bin/user/info, research/wechat-api.md section 6).
 */
#ifndef PGW_ADAPTERS_WECHAT_OA_USER_H
#define PGW_ADAPTERS_WECHAT_OA_USER_H

#include "adapters/wechat/client.h"
#include "adapters/wechat_mp/api.h"

#include <stdbool.h>
#include <stddef.h>

/* The user's unionid into unionid ("" when the account is not bound to an
 * open platform, or WeChat gives none), and into *follows whether they
 * follow the account now (the answer's subscribe, 1 or 0: 0 for someone
 * who unfollowed since their last push). An answer without subscribe, or
 * with a malformed unionid, is PGW_EIO. */
int pgw_oa_user_unionid(pgw_wx_client *client, const char *appid, const char *openid,
                        char unionid[PGW_WX_OPENID_MAX + 1], bool *follows, pgw_wx_reply *reply,
                        pgw_err *err);

#endif
