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

static pgw_vault *open_test_vault(void)
{
    setenv("TEST_PGW_HMAC", HMAC_HEX, 1);
    setenv("TEST_PGW_AES", AES_HEX, 1);
    pgw_vault *v = NULL;
    bool warned = true;
    pgw_err err;
    if (pgw_vault_open("TEST_PGW_HMAC", "TEST_PGW_AES", false, &v, &warned, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_false(warned);
    return v;
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
    setenv("TEST_PGW_SHORT", "abcd", 1);
    pgw_vault *v = NULL;
    bool warned = false;
    pgw_err err;
    assert_int_equal(pgw_vault_open("TEST_PGW_NONE_A", "TEST_PGW_SHORT", false, &v, &warned, &err),
                     PGW_EINVAL);
    assert_null(v);
    assert_non_null(strstr(err.msg, "development_mode"));
    assert_int_equal(pgw_vault_open("TEST_PGW_NONE_A", "TEST_PGW_SHORT", true, &v, &warned, &err),
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blind_index_is_the_hmac_of_the_normalised_phone),
        cmocka_unit_test(test_sealed_phone_opens_only_where_it_belongs),
        cmocka_unit_test(test_keys_are_required_outside_development),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
