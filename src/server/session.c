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

int pgw_session_token(const uint8_t key[PGW_SESSION_KEY_LEN], const pgw_session *s,
                      char token[PGW_SESSION_TOKEN_MAX + 1], pgw_err *err)
{
    int n = snprintf(token, PGW_SESSION_TOKEN_MAX + 1, "v1.%s.%s.%lld.", s->id, s->member,
                     (long long)s->expires_at);
    if (n < 0 || (size_t)n + MAC_HEX > PGW_SESSION_TOKEN_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "session token too long");
    mac_hex(key, token, (size_t)n - 1, token + n);
    return PGW_OK;
}

/* Splits "v1.id.member.expires.mac" in place; false when it is not that. */
static bool split(char *text, char *part[5])
{
    for (int i = 0; i < 5; i++) {
        part[i] = text;
        char *dot = strchr(text, '.');
        if ((dot == NULL) != (i == 4))
            return false;
        if (dot != NULL) {
            *dot = '\0';
            text = dot + 1;
        }
    }
    return true;
}

static bool only(const char *s, const char *set, size_t min, size_t max)
{
    size_t n = strlen(s);
    return n >= min && n <= max && strspn(s, set) == n;
}

int pgw_session_verify(const uint8_t key[PGW_SESSION_KEY_LEN], const char *token, int64_t now,
                       pgw_session *out, pgw_err *err)
{
    char copy[PGW_SESSION_TOKEN_MAX + 1], *part[5];
    size_t len = strnlen(token, sizeof(copy));
    if (len == sizeof(copy))
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "malformed session token");
    memcpy(copy, token, len + 1);
    if (!split(copy, part) || strcmp(part[0], "v1") != 0 ||
        !only(part[1], "0123456789abcdef", PGW_SESSION_ID_LEN, PGW_SESSION_ID_LEN) ||
        !only(part[2], "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", 2, PGW_ID_MAX) ||
        !only(part[3], "0123456789", 1, 18) || strlen(part[4]) != MAC_HEX)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "malformed session token");
    char expected[MAC_HEX + 1];
    size_t signed_len = (size_t)(part[4] - copy) - 1;
    mac_hex(key, token, signed_len, expected);
    if (CRYPTO_memcmp(expected, part[4], MAC_HEX) != 0)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "session token not issued by this gateway");
    int64_t expires = strtoll(part[3], NULL, 10);
    if (expires <= now)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "session expired: log in again");
    snprintf(out->id, sizeof(out->id), "%s", part[1]);
    snprintf(out->member, sizeof(out->member), "%s", part[2]);
    out->expires_at = expires;
    return PGW_OK;
}
