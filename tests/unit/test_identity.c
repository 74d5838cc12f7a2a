/*
 * test_identity.c - phones, cards, openids, unionids, emails, member ids.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/identity.h"

#include <string.h>

static void test_phones_normalise_to_one_number(void **state)
{
    (void)state;
    static const char *const same[] = {
        "13800138000",
        "+86 138 0013 8000",
        "0086-13800138000",
        "+86 138-0013-8000",
        "008613800138000",
        "8613800138000",
        "(+86) 13800138000",
        "013800138000",
        "+8613800138000",
        " 138 0013 8000 ",
        /* full-width, as an input method in that mode types it (the HTTP
         * review: they were refused) */
        "１３８００１３８０００",
        "＋８６　１３８－００１３－８０００",
        "（＋８６）13800138000",
        /* 23 characters, 69 bytes: the bound counts characters (the review) */
        "＋８６　－　１３８　－　００１３　－　８０００",
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        char out[16];
        pgw_err err;
        if (pgw_phone_normalize(same[i], out, sizeof(out), &err) != PGW_OK)
            fail_msg("\"%s\" refused: %s", same[i], err.msg);
        assert_string_equal(out, "+8613800138000");
    }
    char out[16];
    assert_int_equal(pgw_phone_normalize("19212345678", out, sizeof(out), NULL), PGW_OK);
    assert_string_equal(out, "+8619212345678");
}

static void test_phones_garbage_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "1380013800",                 /* 10 digits */
        "138001380000",               /* 12 digits */
        "12800138000",                /* second digit 2 */
        "23800138000",                /* not a mobile */
        "021-12345678",               /* a Shanghai landline */
        "+1 415 555 0100",            /* not +86 */
        "+86 138 0013 800a",          /* a letter */
        "138.0013.8000",              /* dots */
        "++8613800138000",            /* two pluses */
        "86-86-13800138000",          /* country code twice */
        "１３８００１３８００ａ",     /* a full-width letter */
        "１３８．００１３．８０００", /* full-width dots */
        "13800138000                                                         ", /* too long */
        "１３８００１３８０００　　　　　　　　　　　　　　　　　　　　　　　　　　　　　　　　　　"
        "　　　　　　　　　　　　　　　　　　　　", /* 65 characters */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char out[16] = "unchanged";
        pgw_err err;
        pgw_err_clear(&err);
        if (pgw_phone_normalize(bad[i], out, sizeof(out), &err) != PGW_EINVAL)
            fail_msg("\"%s\" accepted as %s", bad[i], out);
        assert_string_equal(out, "unchanged");
        assert_true(err.msg[0] != '\0');
    }
}

static void test_phone_mask(void **state)
{
    (void)state;
    char out[12];
    assert_int_equal(pgw_phone_mask("+8613800138000", out, sizeof(out)), PGW_OK);
    assert_string_equal(out, "138****8000");
    assert_int_equal(pgw_phone_mask("13800138000", out, sizeof(out)), PGW_EINVAL);
    assert_int_equal(pgw_phone_mask("+8613800138000", out, 11), PGW_EINVAL);
}

static void test_parse_format_round_trip(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
        pgw_identity_kind kind;
        const char *scope;
    } cases[] = {
        {"phone:+86 138 0013 8000", "phone:+8613800138000", PGW_ID_PHONE, ""},
        {"card:S001:88001", "card:S001:88001", PGW_ID_CARD, "S001"},
        {"mp_openid:wx1234567890abcdef:oABCdefGHIjklMNOpqrSTUvwxYZ1",
         "mp_openid:wx1234567890abcdef:oABCdefGHIjklMNOpqrSTUvwxYZ1", PGW_ID_MP_OPENID,
         "wx1234567890abcdef"},
        {"oa_openid:wxfedcba0987654321:o-_x", "oa_openid:wxfedcba0987654321:o-_x", PGW_ID_OA_OPENID,
         "wxfedcba0987654321"},
        {"unionid:oUnion_123-abc", "unionid:oUnion_123-abc", PGW_ID_UNIONID, ""},
        {"email:Li.Lei@Example.COM", "email:Li.Lei@example.com", PGW_ID_EMAIL, ""},
        {"member_id:M7Q2K9", "member_id:M7Q2K9", PGW_ID_MEMBER, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgw_identity id;
        pgw_err err;
        if (pgw_identity_parse(cases[i].in, &id, &err) != PGW_OK)
            fail_msg("%s: %s", cases[i].in, err.msg);
        assert_int_equal(id.kind, cases[i].kind);
        assert_string_equal(id.scope, cases[i].scope);
        char text[PGW_IDENTITY_TEXT_MAX + 1];
        assert_int_equal(pgw_identity_format(&id, text, sizeof(text)), PGW_OK);
        assert_string_equal(text, cases[i].out);
        pgw_identity again;
        assert_int_equal(pgw_identity_parse(text, &again, NULL), PGW_OK);
        assert_memory_equal(&id, &again, sizeof(id));
    }
}

static void test_identities_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "phone",
        "fax:123",
        "card:88001",                                  /* no shop */
        "card:S0 01:88001",                            /* space in shop */
        "card:S001:",                                  /* no number */
        "card:S001:123456789012345678901234567890123", /* 33 characters */
        "mp_openid:oABC",                              /* no appid */
        "mp_openid:wx123:oABC",                        /* short appid */
        "mp_openid:wx1234567890ABCDEF:oABC",           /* upper-case hex */
        "oa_openid:wx1234567890abcdef:o b",            /* space */
        "unionid:",
        "unionid:abc!",
        "email:nobody",
        "email:a@b",
        "email:a@@b.cn",
        "email:@example.com",
        "member_id:7Q2K9",
        "member_id:m7q2k9",
        "member_id:M",
        "member_id:M1234567890123456789012", /* 22 characters */
        "phone:13800138000:extra",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pgw_identity id;
        pgw_err err;
        pgw_err_clear(&err);
        if (pgw_identity_parse(bad[i], &id, &err) != PGW_EINVAL)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_true(err.msg[0] != '\0');
    }
}

static void test_bounds_exactly_at_the_limit(void **state)
{
    (void)state;
    pgw_identity id;
    char openid[PGW_OPENID_MAX + 2];
    memset(openid, 'a', sizeof(openid));
    openid[PGW_OPENID_MAX] = '\0';
    assert_int_equal(pgw_identity_make(PGW_ID_UNIONID, NULL, openid, &id, NULL), PGW_OK);
    openid[PGW_OPENID_MAX] = 'a';
    openid[PGW_OPENID_MAX + 1] = '\0';
    assert_int_equal(pgw_identity_make(PGW_ID_UNIONID, NULL, openid, &id, NULL), PGW_EINVAL);
    assert_int_equal(
        pgw_identity_make(PGW_ID_CARD, "S001", "12345678901234567890123456789012", &id, NULL),
        PGW_OK);
    assert_int_equal(pgw_identity_make(PGW_ID_PHONE, "S001", "13800138000", &id, NULL), PGW_EINVAL);
    assert_int_equal(pgw_identity_make(PGW_ID_MEMBER, NULL, "M12345678901234567890", &id, NULL),
                     PGW_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phones_normalise_to_one_number),
        cmocka_unit_test(test_phones_garbage_refused),
        cmocka_unit_test(test_phone_mask),
        cmocka_unit_test(test_parse_format_round_trip),
        cmocka_unit_test(test_identities_refused),
        cmocka_unit_test(test_bounds_exactly_at_the_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
