/*
 * test_arith.c - overflow-checked arithmetic and the error convention.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/arith.h"
#include "core/utf8.h"

#include <string.h>

static void test_checked_add_sub_mul(void **state)
{
    (void)state;
    int64_t r = 7;
    assert_int_equal(pgw_add(INT64_MAX - 1, 1, &r), PGW_OK);
    assert_true(r == INT64_MAX);
    r = 7;
    assert_int_equal(pgw_add(INT64_MAX, 1, &r), PGW_ERANGE);
    assert_int_equal(r, 7); /* untouched on failure */
    assert_int_equal(pgw_sub(INT64_MIN, 1, &r), PGW_ERANGE);
    assert_int_equal(pgw_sub(0, 5, &r), PGW_OK);
    assert_int_equal(r, -5);
    assert_int_equal(pgw_mul(INT64_C(3037000500), INT64_C(3037000500), &r), PGW_ERANGE);
    assert_int_equal(pgw_mul(-4, 5, &r), PGW_OK);
    assert_int_equal(r, -20);
}

static void test_mul_div_floor(void **state)
{
    (void)state;
    static const struct {
        int64_t a, b, d, want;
        int rc;
    } cases[] = {
        {257, 3333, 10000, 85, PGW_OK},
        {257, 10000, 10000, 257, PGW_OK},
        {128, 2000, 10000, 25, PGW_OK}, /* 25.6 floors to 25 */
        {0, 5, 7, 0, PGW_OK},
        /* The product overflows int64 but the quotient fits: computed exactly. */
        {INT64_MAX, 10000, 10000, INT64_MAX, PGW_OK},
        {INT64_MAX, 10001, 10000, 0, PGW_ERANGE},
        {-1, 5, 7, 0, PGW_ERANGE},
        {1, -5, 7, 0, PGW_ERANGE},
        {1, 5, 0, 0, PGW_ERANGE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t r = 0;
        assert_int_equal(pgw_mul_div_floor(cases[i].a, cases[i].b, cases[i].d, &r), cases[i].rc);
        if (cases[i].rc == PGW_OK)
            assert_true(r == cases[i].want);
    }
    int64_t r;
    assert_int_equal(pgw_mul_bp(100, 15000, &r), PGW_OK);
    assert_int_equal(r, 150);
}

static void test_error_messages(void **state)
{
    (void)state;
    pgw_err err;
    assert_int_equal(pgw_err_set(&err, PGW_EINVAL, "bad %s %d", "points", 5), PGW_EINVAL);
    assert_int_equal(err.code, PGW_EINVAL);
    assert_string_equal(err.msg, "bad points 5");
    assert_int_equal(pgw_err_prefix(&err, "$.items[%d]: ", 2), PGW_EINVAL);
    assert_string_equal(err.msg, "$.items[2]: bad points 5");
    assert_int_equal(pgw_err_set(NULL, PGW_ERANGE, "ignored"), PGW_ERANGE);
    pgw_err_clear(&err);
    assert_int_equal(err.code, PGW_OK);
    assert_string_equal(err.msg, "");
    assert_string_equal(pgw_code_name(PGW_EEXCEEDS), "EEXCEEDS");
    assert_string_equal(pgw_code_name(-999), "E?");

    /* A long message of 3-byte characters is cut on a character boundary. */
    char chinese[3 * 300 + 1] = "";
    for (int i = 0; i < 300; i++)
        strcat(chinese, "积");
    pgw_err_set(&err, PGW_EINVAL, "x%s", chinese);
    size_t len = strlen(err.msg);
    assert_true(len < PGW_ERR_MSG_MAX);
    assert_int_equal((len - 1) % 3, 0); /* "x" then whole characters only */
    pgw_err_prefix(&err, "%s", "ab");
    len = strlen(err.msg);
    assert_int_equal((len - 3) % 3, 0);
}

/* A refusal's figures (API.md's error `details`) go with its error: kept
 * as it travels outwards, gone with the next error or a clear. */
static void test_error_figures(void **state)
{
    (void)state;
    pgw_err err;
    pgw_err_set(&err, PGW_EINSUFFICIENT, "member M1 has 120 available, 500 asked");
    assert_int_equal(err.n_figures, 0);
    assert_string_equal(err.member_id, "");
    pgw_err_member(&err, "M1");
    pgw_err_figure(&err, "available", 120);
    pgw_err_figure(&err, "asked", INT64_MAX);
    pgw_err_prefix(&err, "events[2]: ");
    pgw_err_recode(&err, PGW_EINSUFFICIENT);
    assert_string_equal(err.member_id, "M1");
    assert_int_equal(err.n_figures, 2);
    assert_string_equal(err.figures[0].name, "available");
    assert_true(err.figures[0].value == 120);
    assert_string_equal(err.figures[1].name, "asked");
    assert_true(err.figures[1].value == INT64_MAX);
    pgw_err copy = err; /* a command's error, back from the writer */
    assert_int_equal(copy.n_figures, 2);
    pgw_err_set(&err, PGW_EINVAL, "another");
    assert_int_equal(err.n_figures, 0);
    assert_string_equal(err.member_id, "");
    pgw_err_figure(&copy, "left", 3);
    pgw_err_clear(&copy);
    assert_int_equal(copy.n_figures, 0);
    assert_string_equal(copy.member_id, "");
    pgw_err_figure(NULL, "asked", 1); /* a caller wanting only the code */
    pgw_err_member(NULL, "M1");
    /* Another code, another refusal: its figures were the first code's. */
    pgw_err_set(&err, PGW_EINSUFFICIENT, "member M1 has 120 available, 500 asked");
    pgw_err_member(&err, "M1");
    pgw_err_figure(&err, "available", 120);
    pgw_err_recode(&err, PGW_EIO);
    assert_int_equal(err.n_figures, 0);
    assert_string_equal(err.member_id, "");
}

/* The database's mark goes with its error as figures do, whatever the
 * words become on the way: serve's exit is told by it (main.c). */
static void test_error_of_the_database(void **state)
{
    (void)state;
    pgw_err err;
    pgw_err_set(&err, PGW_EUNAVAILABLE, "cannot listen on 127.0.0.1:80");
    assert_false(err.database);
    assert_int_equal(pgw_err_set_database(&err, PGW_EIO, "x.db: %s", "disk I/O error"), PGW_EIO);
    assert_true(err.database);
    assert_string_equal(err.msg, "x.db: disk I/O error");
    pgw_err_prefix(&err, "(and the rollback failed) ");
    assert_int_equal(pgw_err_recode(&err, PGW_EUNAVAILABLE), PGW_EUNAVAILABLE);
    pgw_err copy = err; /* back from the writer */
    assert_true(copy.database);
    pgw_err_set(&err, PGW_EIO, "x.db: words like the database's, from elsewhere");
    assert_false(err.database);
    pgw_err_clear(&copy);
    assert_false(copy.database);
    assert_int_equal(pgw_err_set_database(NULL, PGW_EIO, "ignored"), PGW_EIO);
}

/* Its texts (which field differs, its two values) go as its figures do. */
static void test_error_texts(void **state)
{
    (void)state;
    pgw_err err;
    pgw_err_set(&err, PGW_ECONFLICT, "key K was used before for a different request");
    assert_int_equal(err.n_texts, 0);
    pgw_err_text(&err, "differs", "occurred_at");
    pgw_err_text(&err, "occurred_at_then", "2026-11-24T10:00:00+08:00");
    pgw_err_figure(&err, "points", 1); /* beside figures, under other names */
    pgw_err_prefix(&err, "events[2]: ");
    pgw_err copy = err;
    assert_int_equal(copy.n_texts, 2);
    assert_string_equal(copy.texts[0].name, "differs");
    assert_string_equal(copy.texts[0].value, "occurred_at");
    assert_string_equal(copy.texts[1].value, "2026-11-24T10:00:00+08:00");
    pgw_err_recode(&copy, PGW_ECONFLICT);
    assert_int_equal(copy.n_texts, 2);
    pgw_err_recode(&copy, PGW_EIO);
    assert_int_equal(copy.n_texts, 0);
    pgw_err_set(&err, PGW_EINVAL, "another");
    assert_int_equal(err.n_texts, 0);
    pgw_err_set(&err, PGW_ECONFLICT, "again");
    pgw_err_text(&err, "differs", "type");
    pgw_err_clear(&err);
    assert_int_equal(err.n_texts, 0);
    pgw_err_text(NULL, "differs", "type");
}

/* A text quotes what came or was stored (a receipt, an event id): any byte
 * of no valid character is a '?' and a longer one is cut on a character,
 * as a message is, for jansson makes no JSON string of what is not UTF-8
 * and the details lost it. */
static void test_error_texts_are_utf8(void **state)
{
    (void)state;
    pgw_err err;
    pgw_err_set(&err, PGW_ECONFLICT, "key K was used before for a different request");
    pgw_err_text(&err, "receipt_no_then",
                 "R\xff"
                 "1");
    assert_string_equal(err.texts[0].value, "R?1");
    char cut[PGW_ERR_TEXT_MAX + 2]; /* an "é" across the bound */
    memset(cut, 'a', sizeof(cut));
    cut[PGW_ERR_TEXT_MAX - 1] = '\xc3';
    cut[PGW_ERR_TEXT_MAX] = '\xa9';
    cut[PGW_ERR_TEXT_MAX + 1] = '\0';
    pgw_err_text(&err, "receipt_no_now", cut);
    assert_int_equal(strlen(err.texts[1].value), PGW_ERR_TEXT_MAX - 1);
    assert_true(pgw_utf8_valid(err.texts[1].value));
    assert_int_equal(err.n_texts, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checked_add_sub_mul),   cmocka_unit_test(test_mul_div_floor),
        cmocka_unit_test(test_error_messages),        cmocka_unit_test(test_error_figures),
        cmocka_unit_test(test_error_of_the_database), cmocka_unit_test(test_error_texts),
        cmocka_unit_test(test_error_texts_are_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
