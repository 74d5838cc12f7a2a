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

/* A longer expiry or another member cannot be claimed by re-signing nothing. */
static void test_malformed(void **state)
{
    (void)state;
    pgw_session s, got;
    char token[PGW_SESSION_TOKEN_MAX + 1], forged[PGW_SESSION_TOKEN_MAX * 2];
    make(&s, token);
    const char *mac = strrchr(token, '.') + 1;
    snprintf(forged, sizeof(forged), "v1.%s.M1.%lld.%s", s.id, (long long)s.expires_at, mac);
    assert_int_equal(verify(KEY, forged, NOW, &got), PGW_EUNAUTHORIZED);
    snprintf(forged, sizeof(forged), "v1.%s.M7Q2K9ABCDEF.%lld.%s", s.id,
             (long long)s.expires_at + 86400, mac);
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
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
