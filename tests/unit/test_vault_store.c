/*
 * test_vault_store.c - the start's check that the phone keys are those the
 * database's phones were stored with (server/api.h pgw_api_check_phone_keys,
 * util/vault.h pgw_vault_check_stored, store/store.h pgw_store_some_phones),
 * on SQLite and, with PGW_TEST_PG_DIR, on PostgreSQL.
 *
 * Regression (the operations review): keys changed on a database with
 * phones (development mode to real keys, a rotation, a typo) were taken
 * silently: the same phone got another blind index, was not found, and its
 * next event enrolled a second member, its balance split.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "db_fixture.h"
#include "server/api.h"
#include "store/store.h"
#include "util/vault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEX_A "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define HEX_B "f0e0d0c0b0a090807060504030201000f1e1d1c1b1a191817161514131211101"
#define HEX_C "5555555555555555555555555555555555555555555555555555555555555555"

/* A vault on index key `hmac` and sealing key `aes` (NULL, NULL: the
 * development mode's public keys). */
static pgw_vault *vault_on(const char *hmac, const char *aes)
{
    if (hmac != NULL) {
        setenv("TEST_VS_HMAC", hmac, 1);
        setenv("TEST_VS_AES", aes, 1);
    } else {
        unsetenv("TEST_VS_HMAC");
        unsetenv("TEST_VS_AES");
    }
    pgw_vault *v = NULL;
    bool warned = false;
    pgw_err err;
    if (pgw_vault_open("TEST_VS_HMAC", "TEST_VS_AES", true, &v, &warned, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_true(warned == (hmac == NULL));
    return v;
}

/* Stores `phone` (and a card) as member `member`'s, made by `v`. */
static void store_phone(const db_fixture *f, const pgw_vault *v, const char *member,
                        const char *phone)
{
    pgw_store *s = NULL;
    pgw_err err;
    pgw_identity id, card;
    pgw_identity_key key, card_key;
    assert_int_equal(pgw_identity_make(PGW_ID_PHONE, NULL, phone, &id, NULL), PGW_OK);
    assert_int_equal(pgw_identity_make(PGW_ID_CARD, "S001", member, &card, NULL), PGW_OK);
    assert_int_equal(pgw_vault_key(v, &id, &key, NULL), PGW_OK);
    assert_int_equal(pgw_vault_key(v, &card, &card_key, NULL), PGW_OK);
    if (pgw_store_open(f->url, true, &s, &err) != PGW_OK || pgw_store_begin(s, &err) != PGW_OK ||
        pgw_store_put_member(s, member, 0, 1000, &err) != PGW_OK ||
        pgw_store_bind_identity(s, &key, member, 1000, &err) != PGW_OK ||
        pgw_store_bind_identity(s, &card_key, member, 1000, &err) != PGW_OK ||
        pgw_store_commit(s, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    pgw_store_close(s);
}

/* pgw_api_check_phone_keys's answer; its message in msg. */
static int check(const db_fixture *f, const pgw_vault *v, char msg[PGW_ERR_MSG_MAX])
{
    pgw_err err = {0};
    int rc = pgw_api_check_phone_keys(v, f->url, &err);
    snprintf(msg, PGW_ERR_MSG_MAX, "%s", rc == PGW_OK ? "" : err.msg);
    if (strstr(msg, "13800138000") != NULL || strstr(msg, "138****") != NULL ||
        strstr(msg, "0102030405") != NULL || strstr(msg, "e0d0c0b0a0") != NULL ||
        strstr(msg, "55555555") != NULL)
        fail_msg("the message shows a phone or a key: %s", msg);
    return rc;
}

static void expect_refused(const db_fixture *f, const pgw_vault *v, const char *says)
{
    char msg[PGW_ERR_MSG_MAX];
    assert_int_equal(check(f, v, msg), PGW_ESTATE);
    if (strstr(msg, says) == NULL || strstr(msg, "TEST_VS_HMAC") == NULL ||
        strstr(msg, "TEST_VS_AES") == NULL)
        fail_msg("the message lacks '%s' or a variable's name: %s", says, msg);
}

static void test_keys_must_open_the_stored_phones(void **state)
{
    db_fixture *f = *state;
    pgw_vault *a = vault_on(HEX_A, HEX_B);
    pgw_vault *other_seal = vault_on(HEX_A, HEX_C), *other_index = vault_on(HEX_C, HEX_B);
    pgw_vault *public = vault_on(NULL, NULL);
    char msg[PGW_ERR_MSG_MAX];
    /* A database without phones takes any keys. */
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(f->url, true, &s, NULL), PGW_OK);
    pgw_store_close(s);
    assert_int_equal(check(f, other_seal, msg), PGW_OK);
    assert_int_equal(check(f, public, msg), PGW_OK);
    store_phone(f, a, "M1", "13800138000");
    assert_int_equal(check(f, a, msg), PGW_OK);
    expect_refused(f, other_seal, "sealed with other keys: TEST_VS_AES does not open them");
    expect_refused(f, other_index,
                   "indexed with another key: TEST_VS_HMAC gives them other blind indexes");
    expect_refused(f, public, "other keys than the development mode's public ones");
    pgw_vault_free(a);
    pgw_vault_free(other_seal);
    pgw_vault_free(other_index);
    pgw_vault_free(public);
}

/* The development mode's phones refuse real keys; the public keys pass. */
static void test_development_phones_refuse_real_keys(void **state)
{
    db_fixture *f = *state;
    pgw_vault *public = vault_on(NULL, NULL), *real = vault_on(HEX_A, HEX_B);
    pgw_vault *spelled =
        vault_on("1111111111111111111111111111111111111111111111111111111111111111",
                 "2222222222222222222222222222222222222222222222222222222222222222");
    store_phone(f, public, "M1", "13800138000");
    char msg[PGW_ERR_MSG_MAX];
    assert_int_equal(check(f, public, msg), PGW_OK);
    assert_int_equal(check(f, spelled, msg), PGW_OK); /* the same keys, given */
    expect_refused(f, real, "sealed with other keys: TEST_VS_AES does not open them");
    pgw_vault_free(public);
    pgw_vault_free(real);
    pgw_vault_free(spelled);
}

/* A database already split (phones under two sets of keys) is refused by
 * either: the first and the last phone by blind index are both read. */
static void test_phones_under_two_keys_refuse_both(void **state)
{
    db_fixture *f = *state;
    pgw_vault *a = vault_on(HEX_A, HEX_B), *c = vault_on(HEX_C, HEX_C);
    store_phone(f, a, "M1", "13800138000");
    store_phone(f, c, "M2", "13800138000");
    expect_refused(f, a, "TEST_VS_");
    expect_refused(f, c, "TEST_VS_");
    pgw_vault_free(a);
    pgw_vault_free(c);
}

/* A stored phone without its sealed number is damage, not other keys. */
static void test_a_phone_without_its_number_is_damage(void **state)
{
    db_fixture *f = *state;
    pgw_vault *a = vault_on(HEX_A, HEX_B);
    store_phone(f, a, "M1", "13800138000");
    assert_int_equal(db_fixture_exec(f, "UPDATE identities SET sealed = NULL WHERE kind = 1"), 0);
    char msg[PGW_ERR_MSG_MAX];
    assert_int_equal(check(f, a, msg), PGW_EIO);
    assert_non_null(strstr(msg, "a stored phone has no sealed number"));
    pgw_vault_free(a);
}

/* A database that is not there is the store's refusal, as before. */
static void test_no_database_is_the_stores_answer(void **state)
{
    db_fixture *f = *state;
    pgw_vault *a = vault_on(HEX_A, HEX_B);
    char msg[PGW_ERR_MSG_MAX];
    assert_int_equal(check(f, a, msg), PGW_ENOTFOUND);
    pgw_vault_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keys_must_open_the_stored_phones, db_fixture_setup,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_development_phones_refuse_real_keys, db_fixture_setup,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_phones_under_two_keys_refuse_both, db_fixture_setup,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_phone_without_its_number_is_damage, db_fixture_setup,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_no_database_is_the_stores_answer, db_fixture_setup,
                                        db_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
