/*
 * test_session.c - mini-program session tokens: what the service thread
 * accepts without the database, and what it refuses.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "server/session.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <stdio.h>
#include <string.h>

static const uint8_t KEY[PGW_SESSION_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const int64_t NOW = 1795000000;

static void make(pgw_session *s, char token[PGW_SESSION_TOKEN_MAX + 1])
{
    pgw_err err;
    memset(s, 0, sizeof(*s));
    assert_int_equal(pgw_session_new_id(s->id, &err), PGW_OK);
    snprintf(s->member, sizeof(s->member), "M7Q2K9ABCDEF");
    s->expires_at = NOW + PGW_SESSION_TTL_S;
    snprintf(s->openid, sizeof(s->openid), "o16wA0b4AZKzgVJR3MBwoUdTfU_E");
    assert_int_equal(pgw_session_token(KEY, s, token, &err), PGW_OK);
}

static int verify(const uint8_t *key, const char *token, int64_t now, pgw_session *out)
{
    pgw_err err;
    return pgw_session_verify(key, token, now, out, &err);
}

static void test_round_trip(void **state)
{
    (void)state;
    pgw_session s, got;
    char token[PGW_SESSION_TOKEN_MAX + 1];
    make(&s, token);
    assert_int_equal(strlen(s.id), PGW_SESSION_ID_LEN);
    assert_int_equal(verify(KEY, token, NOW, &got), PGW_OK);
    assert_string_equal(got.id, s.id);
    assert_string_equal(got.member, "M7Q2K9ABCDEF");
    assert_int_equal(got.expires_at, s.expires_at);
    assert_string_equal(got.openid, "o16wA0b4AZKzgVJR3MBwoUdTfU_E");
    /* Two sessions of one member are two ids. */
    pgw_session other;
    char token2[PGW_SESSION_TOKEN_MAX + 1];
    make(&other, token2);
    assert_string_not_equal(other.id, s.id);
}

static void test_expiry(void **state)
{
    (void)state;
    pgw_session s, got;
    char token[PGW_SESSION_TOKEN_MAX + 1];
    make(&s, token);
    assert_int_equal(verify(KEY, token, s.expires_at - 1, &got), PGW_OK);
    assert_int_equal(verify(KEY, token, s.expires_at, &got), PGW_EUNAUTHORIZED);
}

/* Changing any one character, or the key, breaks it. */
static void test_every_change_is_refused(void **state)
{
    (void)state;
    pgw_session s, got;
    char token[PGW_SESSION_TOKEN_MAX + 1];
    make(&s, token);
    size_t n = strlen(token);
    for (size_t i = 0; i < n; i++) {
        char copy[PGW_SESSION_TOKEN_MAX + 1];
        memcpy(copy, token, n + 1);
        copy[i] = copy[i] == '1' ? '2' : '1';
        assert_int_equal(verify(KEY, copy, NOW, &got), PGW_EUNAUTHORIZED);
    }
    uint8_t other[PGW_SESSION_KEY_LEN] = {9};
    assert_int_equal(verify(other, token, NOW, &got), PGW_EUNAUTHORIZED);
}

/* A session names the openid of its login (getuserphonenumber is told it):
 * none, or one that is not an openid, makes no token. */
static void test_openid_required(void **state)
{
    (void)state;
    pgw_session s;
    char token[PGW_SESSION_TOKEN_MAX + 1];
    pgw_err err;
    make(&s, token);
    s.openid[0] = '\0';
    assert_int_equal(pgw_session_token(KEY, &s, token, &err), PGW_EINVAL);
    snprintf(s.openid, sizeof(s.openid), "o.1");
    assert_int_equal(pgw_session_token(KEY, &s, token, &err), PGW_EINVAL);
    memset(s.openid, 'o', PGW_OPENID_MAX); /* the longest, with the longest member */
    s.openid[PGW_OPENID_MAX] = '\0';
    memset(s.member, 'M', PGW_ID_MAX);
    s.member[PGW_ID_MAX] = '\0';
    s.expires_at = INT64_C(999999999999999999);
    assert_int_equal(pgw_session_token(KEY, &s, token, &err), PGW_OK);
    pgw_session got;
    assert_int_equal(verify(KEY, token, NOW, &got), PGW_OK);
    assert_string_equal(got.openid, s.openid);
}

/* Tokens issued before the openid was in them (v1) stay good, with none. */
static void test_v1_token(void **state)
{
    (void)state;
    pgw_session s, got;
    char token[PGW_SESSION_TOKEN_MAX + 1], v1[PGW_SESSION_TOKEN_MAX + 1];
    make(&s, token);
    /* A v1 token as the gateway signed them: the MAC over "v1.id.member.expires". */
    int n = snprintf(v1, sizeof(v1), "v1.%s.%s.%lld", s.id, s.member, (long long)s.expires_at);
    uint8_t mac[32];
    unsigned int mac_len = sizeof(mac);
    HMAC(EVP_sha256(), KEY, PGW_SESSION_KEY_LEN, (const unsigned char *)v1, (size_t)n, mac,
         &mac_len);
    v1[n++] = '.';
    for (size_t i = 0; i < sizeof(mac); i++)
        n += snprintf(v1 + n, sizeof(v1) - (size_t)n, "%02x", mac[i]);
    memset(&got, 'x', sizeof(got));
    assert_int_equal(verify(KEY, v1, NOW, &got), PGW_OK);
    assert_string_equal(got.id, s.id);
    assert_string_equal(got.member, s.member);
    assert_string_equal(got.openid, "");
    /* Its MAC does not make a v2 token, with an openid added. */
    const char *mac_hex = strrchr(v1, '.') + 1;
    char forged[2 * PGW_SESSION_TOKEN_MAX];
    snprintf(forged, sizeof(forged), "v2.%s.%s.%lld.oEVIL.%s", s.id, s.member,
             (long long)s.expires_at, mac_hex);
    assert_int_equal(verify(KEY, forged, NOW, &got), PGW_EUNAUTHORIZED);
}

/* A longer expiry or another member cannot be claimed by re-signing nothing. */
static void test_malformed(void **state)
{
    (void)state;
    pgw_session s, got;
    char token[PGW_SESSION_TOKEN_MAX + 1], forged[PGW_SESSION_TOKEN_MAX * 2];
    make(&s, token);
    const char *mac = strrchr(token, '.') + 1;
    snprintf(forged, sizeof(forged), "v2.%s.M1.%lld.%s.%s", s.id, (long long)s.expires_at, s.openid,
             mac);
    assert_int_equal(verify(KEY, forged, NOW, &got), PGW_EUNAUTHORIZED);
    snprintf(forged, sizeof(forged), "v2.%s.M7Q2K9ABCDEF.%lld.%s.%s", s.id,
             (long long)s.expires_at + 86400, s.openid, mac);
    assert_int_equal(verify(KEY, forged, NOW, &got), PGW_EUNAUTHORIZED);
    /* Nor another WeChat user's openid. */
    snprintf(forged, sizeof(forged), "v2.%s.M7Q2K9ABCDEF.%lld.oOTHER.%s", s.id,
             (long long)s.expires_at, mac);
    assert_int_equal(verify(KEY, forged, NOW, &got), PGW_EUNAUTHORIZED);
    static const char *const bad[] = {
        "",
        "v1",
        "v2.x.y.z.w",
        "v1....",
        "v1.0123456789abcdef0123456789abcdef.M1.99999999999.short",
        "v1.0123456789ABCDEF0123456789ABCDEF.M1.1.0000000000000000000000000000000000000000000000"
        "000000000000000000",
        "v1.0123456789abcdef0123456789abcdef.m1.1.0000000000000000000000000000000000000000000000"
        "000000000000000000",
        "v1.0123456789abcdef0123456789abcdef.M1.-5.000000000000000000000000000000000000000000000"
        "0000000000000000000",
        "v1.0123456789abcdef0123456789abcdef.M1.1.0000000000000000000000000000000000000000000000"
        "000000000000000000.extra",
        /* v2: no openid, one with a character WeChat never uses, one part too many */
        "v2.0123456789abcdef0123456789abcdef.M1.1.0000000000000000000000000000000000000000000000"
        "000000000000000000",
        "v2.0123456789abcdef0123456789abcdef.M1.1..0000000000000000000000000000000000000000000000"
        "000000000000000000",
        "v2.0123456789abcdef0123456789abcdef.M1.1.o+1.000000000000000000000000000000000000000000"
        "0000000000000000000000",
        "v2.0123456789abcdef0123456789abcdef.M1.1.o1.00000000000000000000000000000000000000000000"
        "00000000000000000000.extra",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(verify(KEY, bad[i], NOW, &got), PGW_EUNAUTHORIZED);
    char huge[PGW_SESSION_TOKEN_MAX + 64];
    memset(huge, 'a', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    assert_int_equal(verify(KEY, huge, NOW, &got), PGW_EUNAUTHORIZED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_every_change_is_refused),
        cmocka_unit_test(test_openid_required),
        cmocka_unit_test(test_v1_token),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
