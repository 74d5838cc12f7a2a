/*
 * test_text.c - core/text.h: names joined as snprintf would make them.
 */
#include "core/text.h"
#include "core/utf8.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* Every cut of a three-part name, against snprintf's. */
static void test_join_cuts_as_snprintf_does(void **state)
{
    (void)state;
    for (size_t cap = 1; cap <= 24; cap++) {
        char ours[24], theirs[24];
        memset(ours, 'x', sizeof(ours));
        size_t len = PGW_TEXT(ours, cap, "shop:", "S001", ":issued");
        int want = snprintf(theirs, cap, "shop:%s:issued", "S001");
        assert_int_equal(len, (size_t)want);
        assert_string_equal(ours, theirs);
        /* Nothing past the cut is written. */
        for (size_t i = cap; i < sizeof(ours); i++)
            assert_int_equal(ours[i], 'x');
    }
}

static void test_join_of_empty_parts(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(PGW_TEXT(out, sizeof(out), "", "", ""), 0);
    assert_string_equal(out, "");
    assert_int_equal(PGW_TEXT(out, sizeof(out), "abcdefgh"), 8);
    assert_string_equal(out, "abcdefg");
}

static void test_int_as_printf_writes_it(void **state)
{
    (void)state;
    static const int64_t values[] = {0,         7,         -7, 10, 99, 100, 1234567890123,
                                     INT64_MAX, INT64_MIN, -1};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char ours[PGW_TEXT_INT_SIZE], theirs[32];
        snprintf(theirs, sizeof(theirs), "%" PRId64, values[i]);
        assert_string_equal(pgw_text_int(values[i], ours), theirs);
    }
}

/* A message quoting bytes cut inside a character (or any not UTF-8) is
 * made UTF-8, each bad byte a '?', the characters around it kept. */
static void test_utf8_scrub_replaces_bad_bytes(void **state)
{
    (void)state;
    char cut[] = "member \"nobody:aa\xc3\" is not";
    assert_int_equal(pgw_utf8_scrub(cut), 1);
    assert_string_equal(cut, "member \"nobody:aa?\" is not");
    char mixed[] = "\xe2\x82\xac\xff\xe2\x82 \xc3\xa9\xed\xa0\x80";
    assert_int_equal(pgw_utf8_scrub(mixed), 6);
    assert_string_equal(mixed, "\xe2\x82\xac??? \xc3\xa9???");
    char fine[] = "caf\xc3\xa9";
    assert_int_equal(pgw_utf8_scrub(fine), 0);
    assert_string_equal(fine, "caf\xc3\xa9");
}

/* A character cut by the end of its bytes is none; a whole one is read
 * as from a NUL-terminated string. */
static void test_utf8_next_n_stops_at_n(void **state)
{
    (void)state;
    const char euro[] = "\xe2\x82\xac!";
    uint32_t cp = 0;
    for (size_t n = 0; n < 3; n++)
        assert_int_equal(pgw_utf8_next_n(euro, n, &cp), 0);
    assert_int_equal(pgw_utf8_next_n(euro, 3, &cp), 3);
    assert_int_equal(cp, 0x20ac);
    assert_int_equal(pgw_utf8_next_n(euro, 4, &cp), 3);
    assert_int_equal(pgw_utf8_next_n("\xed\xa0\x80", 3, &cp), 0); /* a surrogate */
    assert_int_equal(pgw_utf8_next_n("\xf0\x9f\x98\x80", 4, &cp), 4);
    assert_int_equal(cp, 0x1f600);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_cuts_as_snprintf_does),
        cmocka_unit_test(test_utf8_scrub_replaces_bad_bytes),
        cmocka_unit_test(test_utf8_next_n_stops_at_n),
        cmocka_unit_test(test_join_of_empty_parts),
        cmocka_unit_test(test_int_as_printf_writes_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
