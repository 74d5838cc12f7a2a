/*
 * test_otp.c - verification-code rules: codes from random bytes, the
 * keyed hash, every issue limit with the moment it opens again, and the
 * verdicts on a submitted code.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/otp.h"

#include <stdio.h>
#include <string.h>

static void test_code_from_random(void **state)
{
    (void)state;
    char code[PGW_OTP_DIGITS + 1];
    uint8_t zero[PGW_OTP_RANDOM_LEN] = {0};
    pgw_otp_code(zero, code);
    assert_string_equal(code, "000000"); /* leading zeros kept */
    uint8_t ones[PGW_OTP_RANDOM_LEN];
    memset(ones, 0xff, sizeof(ones));
    pgw_otp_code(ones, code); /* 2^64 - 1 = 18446744073709551615 */
    assert_string_equal(code, "551615");
    uint8_t small[PGW_OTP_RANDOM_LEN] = {0, 0, 0, 0, 0, 0x01, 0xe2, 0x40}; /* 123456 */
    pgw_otp_code(small, code);
    assert_string_equal(code, "123456");
    assert_true(pgw_otp_code_ok("000000"));
    assert_true(pgw_otp_code_ok(code));
    assert_false(pgw_otp_code_ok("12345"));
    assert_false(pgw_otp_code_ok("1234567"));
    assert_false(pgw_otp_code_ok("12345a"));
    assert_false(pgw_otp_code_ok(" 123456"));
    assert_false(pgw_otp_code_ok(""));
}

static void test_hash_is_keyed_and_bound_to_the_number(void **state)
{
    (void)state;
    const uint8_t key[] = "k1", other_key[] = "k2";
    uint8_t a[PGW_OTP_HASH_LEN], b[PGW_OTP_HASH_LEN];
    pgw_err err;
    assert_int_equal(pgw_otp_hash(key, 2, "lookupA", "123456", a, &err), PGW_OK);
    assert_int_equal(pgw_otp_hash(key, 2, "lookupA", "123456", b, &err), PGW_OK);
    assert_memory_equal(a, b, sizeof(a));
    assert_int_equal(pgw_otp_hash(key, 2, "lookupB", "123456", b, &err), PGW_OK);
    assert_memory_not_equal(a, b, sizeof(a));
    assert_int_equal(pgw_otp_hash(key, 2, "lookupA", "123457", b, &err), PGW_OK);
    assert_memory_not_equal(a, b, sizeof(a));
    assert_int_equal(pgw_otp_hash(other_key, 2, "lookupA", "123456", b, &err), PGW_OK);
    assert_memory_not_equal(a, b, sizeof(a));
    /* HMAC-SHA256("k1", "lookupA:123456"), computed with Python's hmac module. */
    static const uint8_t expected[PGW_OTP_HASH_LEN] = {
        0xb7, 0x76, 0x17, 0x24, 0xc6, 0x83, 0x44, 0xdb, 0xb9, 0xaf, 0x4a,
        0x4c, 0xc7, 0x32, 0xe4, 0xe5, 0x60, 0xd4, 0xeb, 0x73, 0xe0, 0xc9,
        0x4d, 0xcd, 0xa1, 0x76, 0xb9, 0x55, 0xf2, 0x5a, 0xd7, 0xf5};
    assert_memory_equal(a, expected, sizeof(a));
}

static const int64_t NOW = 1795824000;

static void test_issue_limits(void **state)
{
    (void)state;
    pgw_otp_limits l = pgw_otp_limits_default(300, 3);
    int64_t retry = 0;
    const char *why = NULL;
    assert_true(pgw_otp_may_issue(&l, NULL, 0, NULL, 0, NOW, &retry, &why));
    assert_int_equal(retry, NOW);
    assert_null(why);

    /* One a minute. */
    int64_t t1[] = {NOW - 59};
    assert_false(pgw_otp_may_issue(&l, t1, 1, NULL, 0, NOW, &retry, &why));
    assert_int_equal(retry, NOW + 1);
    assert_non_null(strstr(why, "minute"));
    t1[0] = NOW - 60;
    assert_true(pgw_otp_may_issue(&l, t1, 1, NULL, 0, NOW, &retry, &why));

    /* Five an hour: the fifth newest leaving the hour opens it again. */
    int64_t t5[] = {NOW - 100, NOW - 200, NOW - 300, NOW - 400, NOW - 3500};
    assert_false(pgw_otp_may_issue(&l, t5, 5, NULL, 0, NOW, &retry, &why));
    assert_int_equal(retry, NOW - 3500 + 3600);
    assert_non_null(strstr(why, "hour to a number"));
    t5[4] = NOW - 3600; /* out of the hour: four inside */
    assert_true(pgw_otp_may_issue(&l, t5, 5, NULL, 0, NOW, &retry, &why));

    /* Ten a day. */
    int64_t t10[10];
    for (int i = 0; i < 10; i++)
        t10[i] = NOW - 4000 - i * 7000; /* none in the last hour */
    assert_false(pgw_otp_may_issue(&l, t10, 10, NULL, 0, NOW, &retry, &why));
    assert_int_equal(retry, t10[9] + 86400);
    assert_non_null(strstr(why, "day"));
    assert_true(pgw_otp_may_issue(&l, t10, 9, NULL, 0, NOW, &retry, &why));

    /* Three an hour from one address, whatever the number. */
    int64_t ip[] = {NOW - 10, NOW - 20, NOW - 30};
    assert_false(pgw_otp_may_issue(&l, NULL, 0, ip, 3, NOW, &retry, &why));
    assert_int_equal(retry, NOW - 30 + 3600);
    assert_non_null(strstr(why, "address"));
    assert_true(pgw_otp_may_issue(&l, NULL, 0, ip, 2, NOW, &retry, &why));
    l.per_ip_per_hour = 0; /* off */
    assert_true(pgw_otp_may_issue(&l, NULL, 0, ip, 3, NOW, &retry, &why));

    /* Several limits: the latest opening wins. */
    l.per_ip_per_hour = 3;
    assert_false(pgw_otp_may_issue(&l, t5, 5, ip, 3, NOW, &retry, &why));
    assert_int_equal(retry, NOW - 30 + 3600);
}

static void test_verdicts(void **state)
{
    (void)state;
    pgw_otp_row row = {.id = 1, .expires_at = NOW + 300};
    uint8_t good[PGW_OTP_HASH_LEN], bad[PGW_OTP_HASH_LEN];
    pgw_err err;
    assert_int_equal(pgw_otp_hash((const uint8_t *)"k", 1, "L", "111111", good, &err), PGW_OK);
    assert_int_equal(pgw_otp_hash((const uint8_t *)"k", 1, "L", "111112", bad, &err), PGW_OK);
    memcpy(row.hash, good, sizeof(good));
    snprintf(row.requester, sizeof(row.requester), "me");
    int64_t left = -1;
    assert_int_equal(pgw_otp_judge(NULL, good, "me", NOW, &left), PGW_OTP_NONE);
    assert_int_equal(pgw_otp_judge(&row, good, "me", NOW, &left), PGW_OTP_VERIFIED);
    assert_int_equal(pgw_otp_judge(&row, bad, "me", NOW, &left), PGW_OTP_MISMATCH);
    assert_int_equal(left, PGW_OTP_ATTEMPTS_MAX - 1);
    row.attempts = PGW_OTP_ATTEMPTS_MAX - 1;
    assert_int_equal(pgw_otp_judge(&row, bad, "me", NOW, &left), PGW_OTP_MISMATCH);
    assert_int_equal(left, 0);
    assert_int_equal(pgw_otp_judge(&row, good, "me", NOW, &left), PGW_OTP_VERIFIED);
    row.attempts = PGW_OTP_ATTEMPTS_MAX; /* burnt: even the right code */
    assert_int_equal(pgw_otp_judge(&row, good, "me", NOW, &left), PGW_OTP_EXHAUSTED);
    row.attempts = 0;
    assert_int_equal(pgw_otp_judge(&row, good, "me", NOW + 299, &left), PGW_OTP_VERIFIED);
    assert_int_equal(pgw_otp_judge(&row, good, "me", NOW + 300, &left), PGW_OTP_EXPIRED);
    /* Someone else's code, even when right. */
    assert_int_equal(pgw_otp_judge(&row, good, "other", NOW, &left), PGW_OTP_NONE);
    row.used = true;
    assert_int_equal(pgw_otp_judge(&row, good, "me", NOW, &left), PGW_OTP_NONE);
    assert_string_equal(pgw_otp_verdict_name(PGW_OTP_EXHAUSTED), "too_many_attempts");
}

static void test_address_buckets(void **state)
{
    (void)state;
    char out[PGW_OTP_ADDRESS_MAX + 1];
    assert_true(pgw_otp_address("10.1.2.3", out));
    assert_string_equal(out, "10.1.2.3");
    assert_true(pgw_otp_address("::ffff:10.1.2.3", out)); /* mapped: the IPv4 bucket */
    assert_string_equal(out, "10.1.2.3");
    assert_true(pgw_otp_address("2001:db8:1:2:aaaa:bbbb:cccc:dddd", out));
    assert_string_equal(out, "2001:db8:1:2::/64");
    assert_true(pgw_otp_address("2001:0DB8:0001:0002:0:0:0:1", out)); /* same /64, other spelling */
    assert_string_equal(out, "2001:db8:1:2::/64");
    assert_true(pgw_otp_address("::1", out));
    assert_string_equal(out, "::/64");
    const char *bad[] = {
        "",      "1",          "a",
        "1.2.3", "1.2.3.256",  "01.2.3.4x",
        "::g",   "10.1.2.3/8", "0000000000000000000000000000000000000000000000000000000000000000"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(pgw_otp_address(bad[i], out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_from_random),
        cmocka_unit_test(test_hash_is_keyed_and_bound_to_the_number),
        cmocka_unit_test(test_issue_limits),
        cmocka_unit_test(test_verdicts),
        cmocka_unit_test(test_address_buckets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
