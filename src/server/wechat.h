/*
 * wechat.h - the gateway's side of WeChat: its apps, their secrets, the
 * client that calls WeChat (from the API's outbound workers), and the
 * official account's callback.
 *
 * Built from the configuration's channels.wechat_mp / wechat_oa. A channel
 * whose secret (or, for the official account, callback token) is missing
 * from the environment is off: its routes answer 503 and a warning at
 * start names every variable to set, in one line. Access tokens are shared with other
 * instances through the database (store.h pgw_store_token_*), on a
 * connection of this module's own.
 *
 * The callback (research/wechat-api.md 5.2-5.6): the plain signature is
 * checked on every request, msg_signature too in safe mode (encrypt_type=aes),
 * and the timestamp must be within PGW_OA_CLOCK_SKEW_S of ours, so a
 * captured push cannot be replayed later; in plain mode, within that
 * window, a (nonce, timestamp) accepted with one body is refused with
 * another (the plain signature does not cover the body; in safe mode
 * msg_signature covers the ciphertext). CreateTime may not be ahead
 * of the window either. Replies go back encrypted when
 * the push was.
 *
 * Threads: pgw_wechat_oa_* run on the service thread (no I/O); the client
 * is for any thread.
 */
#ifndef PGW_SERVER_WECHAT_H
#define PGW_SERVER_WECHAT_H

#include "adapters/wechat/client.h"
#include "adapters/wechat_oa/message.h"
#include "config/config.h"
#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_OA_CLOCK_SKEW_S 600
#define PGW_OA_NONCE_MAX    64
#define PGW_OA_NONCES_KEPT  4096 /* pushes remembered against a replayed query */
#define PGW_OA_TOKEN_MAX    64   /* the callback token's bytes (WeChat: 3..32 letters, digits) */

typedef struct pgw_wechat pgw_wechat;

/* Reads the secrets and opens the token cache. The caller frees it with
 * pgw_wechat_free once no outbound task uses its client any more. */
int pgw_wechat_new(const pgw_config *cfg, const char *db_url, pgw_wechat **out, pgw_err *err);
void pgw_wechat_free(pgw_wechat *w);

/* Whether `token`, the official account's callback token read from the
 * variable `env`, is one serve takes (at most PGW_OA_TOKEN_MAX bytes);
 * PGW_EINVAL saying why not. check-config asks it as serve does. */
int pgw_wechat_oa_check_token(const char *env, const char *token, pgw_err *err);

bool pgw_wechat_mp_ready(const pgw_wechat *w);
bool pgw_wechat_oa_ready(const pgw_wechat *w);
pgw_wx_client *pgw_wechat_client(pgw_wechat *w);

/* GET /wechat/oa/callback: the echostr to answer with when the signature
 * over the query is good and its timestamp within PGW_OA_CLOCK_SKEW_S of
 * `now`, as for a push; PGW_EUNAUTHORIZED otherwise. */
int pgw_wechat_oa_echo(const pgw_wechat *w, const char *query, int64_t now, char *echostr,
                       size_t cap, pgw_err *err);

/* A push, checked and opened. */
typedef struct pgw_oa_inbound {
    bool encrypted; /* safe mode: the reply is encrypted too */
    pgw_oa_message msg;
} pgw_oa_inbound;

/* POST /wechat/oa/callback: PGW_EUNAUTHORIZED for a bad signature or a
 * stale timestamp, PGW_EINVAL for a body that does not open or parse. */
int pgw_wechat_oa_open(pgw_wechat *w, const char *query, const char *body, size_t len, int64_t now,
                       pgw_oa_inbound *out, pgw_err *err);

/* The passive reply carrying `text` to the push's sender (encrypted when
 * the push was): a malloc'd body the caller frees. */
int pgw_wechat_oa_reply(const pgw_wechat *w, const pgw_oa_inbound *in, const char *text,
                        int64_t now, char **body, size_t *len, pgw_err *err);

/* The official account's appid ("" when off). */
const char *pgw_wechat_oa_appid(const pgw_wechat *w);

#endif
