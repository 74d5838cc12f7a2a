/*
 * session.h - the mini program's session tokens (Authorization: Session ...).
 *
 * A token is "v2.<id>.<member>.<expires>.<openid>.<mac>": the session id
 * (32 hex digits of randomness), the member it was issued to, when it
 * expires (unix seconds), the mini-program openid whose login made it, and
 * the hex HMAC-SHA256 of everything before it under a key derived from the
 * vault (util/vault.h pgw_vault_derive "session"). The openid is what
 * getuserphonenumber is told, so that WeChat refuses a phone code given to
 * another WeChat user. Tokens of the first format, "v1.<id>.<member>.
 * <expires>.<mac>" (issued before the openid was in them), are still good
 * for 7 days, with no openid.
 * The service thread checks the MAC and the expiry without the database;
 * the store's sessions row is what makes a token revocable (a logout), and
 * every command carrying a session checks it there (command.h session_id).
 * The WeChat session_key has nothing to do with it and never leaves
 * adapters/wechat_mp.
 */
#ifndef PGW_SERVER_SESSION_H
#define PGW_SERVER_SESSION_H

#include "core/bounds.h"
#include "core/error.h"
#include "core/identity.h"
#include "store/store.h"

#include <stdint.h>

#define PGW_SESSION_TOKEN_MAX 256
#define PGW_SESSION_TTL_S     (7 * 86400)
#define PGW_SESSION_KEY_LEN   32

typedef struct pgw_session {
    char id[PGW_SESSION_ID_LEN + 1];
    char member[PGW_ID_MAX + 1];
    int64_t expires_at;
    char openid[PGW_OPENID_MAX + 1]; /* "" in a v1 token */
} pgw_session;

/* A fresh random session id into id. */
int pgw_session_new_id(char id[PGW_SESSION_ID_LEN + 1], pgw_err *err);

/* The token of `s` (its openid required: 1..64 of [A-Za-z0-9_-]) into token. */
int pgw_session_token(const uint8_t key[PGW_SESSION_KEY_LEN], const pgw_session *s,
                      char token[PGW_SESSION_TOKEN_MAX + 1], pgw_err *err);

/* Checks a token (the text after "Session ") at `now`: PGW_EUNAUTHORIZED
 * for a malformed, forged or expired one, *out filled otherwise. */
int pgw_session_verify(const uint8_t key[PGW_SESSION_KEY_LEN], const char *token, int64_t now,
                       pgw_session *out, pgw_err *err);

#endif
