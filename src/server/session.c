/*
 * session.c - see session.h.
 */
#include "session.h"

#include "core/assertions.h"
#include "core/transfer.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAC_HEX 64

int pgw_session_new_id(char id[PGW_SESSION_ID_LEN + 1], pgw_err *err)
{
    uint8_t bytes[PGW_SESSION_ID_LEN / 2];
    if (RAND_bytes(bytes, sizeof(bytes)) != 1)
        return pgw_err_set(err, PGW_EUNAVAILABLE, "no randomness for a session");
    for (size_t i = 0; i < sizeof(bytes); i++)
        snprintf(id + 2 * i, 3, "%02x", bytes[i]);
    return PGW_OK;
}

static void mac_hex(const uint8_t key[PGW_SESSION_KEY_LEN], const char *text, size_t len,
                    char out[MAC_HEX + 1])
{
    uint8_t mac[32];
    unsigned int n = sizeof(mac);
    uint8_t *done =
        HMAC(EVP_sha256(), key, PGW_SESSION_KEY_LEN, (const unsigned char *)text, len, mac, &n);
    PGW_ASSERT(done != NULL && n == sizeof(mac));
    pgw_hash_hex(mac, out, MAC_HEX + 1);
}

static bool only(const char *s, const char *set, size_t min, size_t max)
{
    size_t n = strlen(s);
    return n >= min && n <= max && strspn(s, set) == n;
}

#define OPENID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

int pgw_session_token(const uint8_t key[PGW_SESSION_KEY_LEN], const pgw_session *s,
                      char token[PGW_SESSION_TOKEN_MAX + 1], pgw_err *err)
{
    if (!only(s->openid, OPENID_CHARS, 1, PGW_OPENID_MAX))
        return pgw_err_set(err, PGW_EINVAL, "a session names the openid that logged in");
    int n = snprintf(token, PGW_SESSION_TOKEN_MAX + 1, "v2.%s.%s.%lld.%s.", s->id, s->member,
                     (long long)s->expires_at, s->openid);
    if (n < 0 || (size_t)n + MAC_HEX > PGW_SESSION_TOKEN_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "session token too long");
    mac_hex(key, token, (size_t)n - 1, token + n);
    return PGW_OK;
}

/* Splits "v1.id.member.expires.mac" or "v2.id.member.expires.openid.mac"
 * in place into `n` parts; false when it is not that many. */
static bool split(char *text, char **part, int n)
{
    for (int i = 0; i < n; i++) {
        part[i] = text;
        char *dot = strchr(text, '.');
        if ((dot == NULL) != (i == n - 1))
            return false;
        if (dot != NULL) {
            *dot = '\0';
            text = dot + 1;
        }
    }
    return true;
}

/* Whether the split parts are a token's (v1 has no openid, part[4]). */
static bool well_formed(char **part, bool v2)
{
    return strcmp(part[0], v2 ? "v2" : "v1") == 0 &&
           only(part[1], "0123456789abcdef", PGW_SESSION_ID_LEN, PGW_SESSION_ID_LEN) &&
           only(part[2], "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", 2, PGW_ID_MAX) &&
           only(part[3], "0123456789", 1, 18) &&
           (!v2 || only(part[4], OPENID_CHARS, 1, PGW_OPENID_MAX)) &&
           strlen(part[v2 ? 5 : 4]) == MAC_HEX;
}

int pgw_session_verify(const uint8_t key[PGW_SESSION_KEY_LEN], const char *token, int64_t now,
                       pgw_session *out, pgw_err *err)
{
    char copy[PGW_SESSION_TOKEN_MAX + 1], *part[6];
    size_t len = strnlen(token, sizeof(copy));
    if (len == sizeof(copy))
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "malformed session token");
    memcpy(copy, token, len + 1);
    bool v2 = strncmp(copy, "v2.", 3) == 0;
    int n = v2 ? 6 : 5;
    if (!split(copy, part, n) || !well_formed(part, v2))
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "malformed session token");
    char expected[MAC_HEX + 1];
    size_t signed_len = (size_t)(part[n - 1] - copy) - 1;
    mac_hex(key, token, signed_len, expected);
    if (CRYPTO_memcmp(expected, part[n - 1], MAC_HEX) != 0)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "session token not issued by this gateway");
    int64_t expires = strtoll(part[3], NULL, 10);
    if (expires <= now)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "session expired: log in again");
    snprintf(out->id, sizeof(out->id), "%s", part[1]);
    snprintf(out->member, sizeof(out->member), "%s", part[2]);
    out->expires_at = expires;
    snprintf(out->openid, sizeof(out->openid), "%s", v2 ? part[4] : "");
    return PGW_OK;
}
