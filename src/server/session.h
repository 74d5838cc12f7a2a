/*
 * session.h - the mini program's session tokens (Authorization: Session ...).
 *
 * A token is "v1.<id>.<member>.<expires>.<mac>": the session id (32 hex
 * digits of randomness), the member it was issued to, when it expires
 * (unix seconds) and the hex HMAC-SHA256 of everything before it under a
 * key derived from the vault (util/vault.h pgw_vault_derive "session").
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
#include "store/store.h"

#include <stdint.h>

#define PGW_SESSION_TOKEN_MAX 160
#define PGW_SESSION_TTL_S     (7 * 86400)
#define PGW_SESSION_KEY_LEN   32

typedef struct pgw_session {
    char id[PGW_SESSION_ID_LEN + 1];
    char member[PGW_ID_MAX + 1];
    int64_t expires_at;
} pgw_session;

/* A fresh random session id into id. */
int pgw_session_new_id(char id[PGW_SESSION_ID_LEN + 1], pgw_err *err);

/* The token of `s` into token. */
int pgw_session_token(const uint8_t key[PGW_SESSION_KEY_LEN], const pgw_session *s,
                      char token[PGW_SESSION_TOKEN_MAX + 1], pgw_err *err);

/* Checks a token (the text after "Session ") at `now`: PGW_EUNAUTHORIZED
 * for a malformed, forged or expired one, *out filled otherwise. */
int pgw_session_verify(const uint8_t key[PGW_SESSION_KEY_LEN], const char *token, int64_t now,
                       pgw_session *out, pgw_err *err);

#endif
