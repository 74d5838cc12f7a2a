/*
 * test_vault.c - phones are found by a blind index and kept sealed: the
 * index is HMAC-SHA256 under the index key (checked against OpenSSL's HMAC
 * computed here independently), sealing is randomised, a sealed value
 * opens only under its own lookup and key, and keys are required outside
 * development mode.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "util/vault.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HMAC_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define AES_HEX  "f0e0d0c0b0a090807060504030201000f1e1d1c1b1a191817161514131211101"

/* A vault on these keys, outside development mode (no warning). */
static pgw_vault *open_vault_with(const char *hmac_hex, const char *aes_hex)
{
    setenv("TEST_PGW_HMAC", hmac_hex, 1);
    setenv("TEST_PGW_AES", aes_hex, 1);
    pgw_vault *v = NULL;
    bool warned = true;
    pgw_err err;
    if (pgw_vault_open("TEST_PGW_HMAC", "TEST_PGW_AES", false, &v, &warned, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_false(warned);
    return v;
}

static pgw_vault *open_test_vault(void)
{
    return open_vault_with(HMAC_HEX, AES_HEX);
}

static pgw_identity phone(const char *text)
{
    pgw_identity id;
    assert_int_equal(pgw_identity_make(PGW_ID_PHONE, NULL, text, &id, NULL), PGW_OK);
    return id;
}

static void test_blind_index_is_the_hmac_of_the_normalised_phone(void **state)
{
    (void)state;
    pgw_vault *v = open_test_vault();
    pgw_identity_key a, b;
    pgw_identity p1 = phone("+86 138-0013-8000"), p2 = phone("008613800138000");
    assert_int_equal(pgw_vault_key(v, &p1, &a, NULL), PGW_OK);
    assert_int_equal(pgw_vault_key(v, &p2, &b, NULL), PGW_OK);
    assert_string_equal(a.lookup, b.lookup); /* one member, however written */
    uint8_t key[32], mac[32];
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)i;
    unsigned int len = 0;
    HMAC(EVP_sha256(), key, 32, (const uint8_t *)"+8613800138000", 14, mac, &len);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    assert_string_equal(a.lookup, hex);
    assert_null(strstr(a.lookup, "138")); /* the number is not in the index */
    /* Sealing is randomised, and both open to the same mask. */
    assert_int_equal(a.sealed_len, 12 + 14 + 16);
    assert_memory_not_equal(a.sealed, b.sealed, a.sealed_len);
    char shown[32];
    assert_int_equal(pgw_vault_display(v, &a, shown, sizeof(shown), NULL), PGW_OK);
    assert_string_equal(shown, "138****8000");
    pgw_vault_free(v);
}

static void test_sealed_phone_opens_only_where_it_belongs(void **state)
{
    (void)state;
    pgw_vault *v = open_test_vault();
    pgw_identity_key a, b;
    pgw_identity p1 = phone("13800138000"), p2 = phone("13900139000");
    assert_int_equal(pgw_vault_key(v, &p1, &a, NULL), PGW_OK);
    assert_int_equal(pgw_vault_key(v, &p2, &b, NULL), PGW_OK);
    char shown[32];
    pgw_identity_key moved = a;
    memcpy(moved.lookup, b.lookup, sizeof(moved.lookup)); /* sealed value on another row */
    assert_int_equal(pgw_vault_display(v, &moved, shown, sizeof(shown), NULL), PGW_EIO);
    pgw_identity_key tampered = a;
    tampered.sealed[20] ^= 1;
    assert_int_equal(pgw_vault_display(v, &tampered, shown, sizeof(shown), NULL), PGW_EIO);
    setenv("TEST_PGW_AES", HMAC_HEX, 1); /* another key */
    pgw_vault *other = NULL;
    bool warned = false;
    assert_int_equal(pgw_vault_open("TEST_PGW_HMAC", "TEST_PGW_AES", false, &other, &warned, NULL),
                     PGW_OK);
    assert_int_equal(pgw_vault_display(other, &a, shown, sizeof(shown), NULL), PGW_EIO);
    pgw_vault_free(other);
    pgw_vault_free(v);
}

static void test_keys_are_required_outside_development(void **state)
{
    (void)state;
    unsetenv("TEST_PGW_NONE_A");
    setenv("TEST_PGW_EMPTY", "", 1); /* as unset: `VAR= pointsgw ...` */
    pgw_vault *v = NULL;
    bool warned = false;
    pgw_err err;
    assert_int_equal(pgw_vault_open("TEST_PGW_NONE_A", "TEST_PGW_EMPTY", false, &v, &warned, &err),
                     PGW_EINVAL);
    assert_null(v);
    assert_non_null(strstr(err.msg, "development_mode"));
    assert_int_equal(pgw_vault_open("TEST_PGW_NONE_A", "TEST_PGW_EMPTY", true, &v, &warned, &err),
                     PGW_OK);
    assert_true(warned);
    pgw_identity card;
    pgw_identity_key k;
    assert_int_equal(pgw_identity_make(PGW_ID_CARD, "S001", "88001", &card, NULL), PGW_OK);
    assert_int_equal(pgw_vault_key(v, &card, &k, NULL), PGW_OK);
    assert_string_equal(k.lookup, "88001"); /* only phones are blinded */
    assert_int_equal(k.sealed_len, 0);
    char shown[64];
    assert_int_equal(pgw_vault_display(v, &k, shown, sizeof(shown), NULL), PGW_OK);
    assert_string_equal(shown, "S001:88001");
    pgw_vault_free(v);
}

/* Opens the vault on `hmac` and `aes` (NULL: unset) and expects it refused
 * in either mode, its message naming `named` and not holding the value. */
static void expect_refused(const char *hmac, const char *aes, const char *named)
{
    if (hmac != NULL)
        setenv("TEST_PGW_HMAC", hmac, 1);
    else
        unsetenv("TEST_PGW_HMAC");
    if (aes != NULL)
        setenv("TEST_PGW_AES", aes, 1);
    else
        unsetenv("TEST_PGW_AES");
    for (int development = 1; development >= 0; development--) {
        pgw_vault *v = NULL;
        bool warned = false;
        pgw_err err = {0};
        int rc = pgw_vault_open("TEST_PGW_HMAC", "TEST_PGW_AES", development, &v, &warned, &err);
        if (rc != PGW_EINVAL || v != NULL || warned)
            fail_msg("%s/%s, development %d: rc %d, warned %d: %s", hmac ? hmac : "(unset)",
                     aes ? aes : "(unset)", development, rc, (int)warned, err.msg);
        if (strstr(err.msg, named) == NULL)
            fail_msg("the message does not name %s: %s", named, err.msg);
        if ((hmac != NULL && hmac[0] && strstr(err.msg, hmac) != NULL) ||
            (aes != NULL && aes[0] && strstr(err.msg, aes) != NULL))
            fail_msg("the message shows a key: %s", err.msg);
    }
}

/*
 * Regression (the operations review): in development mode a key that was
 * set but malformed ("abc"), or one key without the other, was replaced by
 * the public keys, the warning saying they were "not set"; outside it, a
 * key with a sign or a space ("-1...", sscanf's %2x) was taken for another
 * key. Keys that are set must be whole and paired in either mode; only both
 * unset fall back to the public keys.
 */
static void test_keys_set_must_be_whole_and_paired(void **state)
{
    (void)state;
    expect_refused("abc", NULL, "TEST_PGW_HMAC is malformed");
    expect_refused("abc", AES_HEX, "TEST_PGW_HMAC is malformed");
    expect_refused(HMAC_HEX, "abc", "TEST_PGW_AES is malformed");
    expect_refused("abc", "abc", "TEST_PGW_HMAC and TEST_PGW_AES are malformed");
    expect_refused(HMAC_HEX "00", AES_HEX, "TEST_PGW_HMAC is malformed"); /* 66 digits */
    expect_refused("-10102030405060708090a0b0c0d0e0f10"
                   "1112131415161718191a1b1c1d1e1f",
                   AES_HEX, "TEST_PGW_HMAC is malformed");
    expect_refused(HMAC_HEX,
                   " 1e0d0c0b0a090807060504030201000f1"
                   "e1d1c1b1a191817161514131211101",
                   "TEST_PGW_AES is malformed");
    expect_refused(HMAC_HEX, NULL, "TEST_PGW_AES is not set");
    expect_refused(HMAC_HEX, "", "TEST_PGW_AES is not set");
    expect_refused(NULL, AES_HEX, "TEST_PGW_HMAC is not set");
    /* Regression (the operator's review): a secrets file with Windows line
     * ends gives each value a trailing \r, refused as "malformed" alone. */
    expect_refused(HMAC_HEX "\r", AES_HEX "\r", "a value ends in a carriage return");
    expect_refused(HMAC_HEX, AES_HEX "\r", "TEST_PGW_AES is malformed");
    /* Upper-case digits are digits. */
    pgw_vault_free(open_vault_with(
        "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789", AES_HEX));
    /* Both empty: unset, the public keys in development mode only. */
    pgw_vault *v = NULL;
    bool warned = false;
    pgw_err err;
    setenv("TEST_PGW_HMAC", "", 1);
    setenv("TEST_PGW_AES", "", 1);
    assert_int_equal(pgw_vault_open("TEST_PGW_HMAC", "TEST_PGW_AES", true, &v, &warned, &err),
                     PGW_OK);
    assert_true(warned);
    pgw_vault_free(v);
}

/*
 * The start's check of a stored phone (pgw_vault_check_stored): the keys it
 * was made with pass; another sealing key, another index key or the public
 * keys are PGW_ESTATE naming both variables and neither key nor number.
 */
static void test_a_stored_phone_tells_other_keys(void **state)
{
    (void)state;
    pgw_vault *v = open_test_vault();
    pgw_identity p = phone("13800138000");
    pgw_identity_key stored;
    assert_int_equal(pgw_vault_key(v, &p, &stored, NULL), PGW_OK);
    pgw_err err;
    assert_int_equal(pgw_vault_check_stored(v, &stored, &err), PGW_OK);
    static const struct {
        const char *hmac, *aes, *says;
    } others[] = {
        {HMAC_HEX, HMAC_HEX, "sealed with other keys: TEST_PGW_AES does not open them"},
        {AES_HEX, HMAC_HEX, "sealed with other keys: TEST_PGW_AES does not open them"},
        {AES_HEX, AES_HEX, "indexed with another key: TEST_PGW_HMAC gives them other"},
        {"", "", "other keys than the development mode's public ones"},
    };
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        setenv("TEST_PGW_HMAC", others[i].hmac, 1);
        setenv("TEST_PGW_AES", others[i].aes, 1);
        pgw_vault *other = NULL;
        bool warned = false;
        assert_int_equal(
            pgw_vault_open("TEST_PGW_HMAC", "TEST_PGW_AES", true, &other, &warned, NULL), PGW_OK);
        assert_int_equal(pgw_vault_check_stored(other, &stored, &err), PGW_ESTATE);
        if (strstr(err.msg, others[i].says) == NULL ||
            strstr(err.msg, "TEST_PGW_HMAC and TEST_PGW_AES") == NULL)
            fail_msg("case %zu: %s", i, err.msg);
        if (strstr(err.msg, "0102030405") != NULL || strstr(err.msg, "e0d0c0b0a0") != NULL ||
            strstr(err.msg, "138") != NULL)
            fail_msg("the message shows a key or the number: %s", err.msg);
        pgw_vault_free(other);
    }
    pgw_identity_key no_number = stored;
    no_number.sealed_len = 0;
    assert_int_equal(pgw_vault_check_stored(v, &no_number, &err), PGW_EIO);
    pgw_identity card;
    pgw_identity_key card_key;
    assert_int_equal(pgw_identity_make(PGW_ID_CARD, "S001", "88001", &card, NULL), PGW_OK);
    assert_int_equal(pgw_vault_key(v, &card, &card_key, NULL), PGW_OK);
    assert_int_equal(pgw_vault_check_stored(v, &card_key, &err), PGW_EINVAL);
    pgw_vault_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blind_index_is_the_hmac_of_the_normalised_phone),
        cmocka_unit_test(test_sealed_phone_opens_only_where_it_belongs),
        cmocka_unit_test(test_keys_are_required_outside_development),
        cmocka_unit_test(test_keys_set_must_be_whole_and_paired),
        cmocka_unit_test(test_a_stored_phone_tells_other_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
