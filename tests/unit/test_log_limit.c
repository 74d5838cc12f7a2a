/*
 * test_log_limit.c - how often a kind of line reaches the operator's log.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/log_limit.h"

#include <stdio.h>
#include <string.h>

#define T0 1000 /* any monotonic second */

static void test_a_cause_once_a_minute_the_rest_counted(void **state)
{
    (void)state;
    pgw_log_limit l = {0};
    uint64_t unsaid = 99;
    assert_true(pgw_log_due(&l, T0, "database or disk is full", &unsaid));
    assert_int_equal(unsaid, 0);
    for (int i = 0; i < 500; i++) /* a full disk fails every request */
        assert_false(pgw_log_due(&l, T0 + i % 60, "database or disk is full", &unsaid));
    assert_int_equal(unsaid, 0); /* untouched while held back */
    assert_true(pgw_log_due(&l, T0 + 60, "database or disk is full", &unsaid));
    assert_int_equal(unsaid, 500);
    assert_false(pgw_log_due(&l, T0 + 61, "database or disk is full", &unsaid));
}

/* Regression (the whole-change review): a second cause within the minute
 * was only counted in the first one's next line, a minute later. */
static void test_another_cause_goes_out_at_once(void **state)
{
    (void)state;
    pgw_log_limit l = {0};
    uint64_t unsaid = 0;
    assert_true(pgw_log_due(&l, T0, "database or disk is full", &unsaid));
    assert_false(pgw_log_due(&l, T0 + 1, "database or disk is full", &unsaid));
    assert_false(pgw_log_due(&l, T0 + 2, "database or disk is full", &unsaid));
    assert_true(pgw_log_due(&l, T0 + 3, "database is locked", &unsaid));
    assert_int_equal(unsaid, 2); /* the full disk's two held back before it */
    assert_false(pgw_log_due(&l, T0 + 4, "database is locked", &unsaid));
    assert_true(pgw_log_due(&l, T0 + 5, "database or disk is full", &unsaid)); /* back again */
    assert_int_equal(unsaid, 1);
}

/* Causes that change every time (a member's id in each) stay bounded. */
static void test_changing_causes_are_bounded(void **state)
{
    (void)state;
    pgw_log_limit l = {0};
    uint64_t unsaid = 0;
    int out = 0;
    for (int i = 0; i < 1000; i++) {
        char cause[64];
        snprintf(cause, sizeof(cause), "member M%d: constraint failed", i);
        out += pgw_log_due(&l, T0 + i / 100, cause, &unsaid); /* 10 s */
    }
    assert_int_equal(out, PGW_LOG_LINES_MAX);
    assert_true(pgw_log_due(&l, T0 + 60, "member M1: constraint failed", &unsaid));
    assert_int_equal(unsaid, 1000 - PGW_LOG_LINES_MAX);
}

/* A cause is compared on its first PGW_LOG_CAUSE_MAX - 1 bytes: a long
 * message that differs only past them is the same cause. */
static void test_long_causes_compare_on_their_start(void **state)
{
    (void)state;
    char a[400], b[400];
    memset(a, 'x', sizeof(a) - 1);
    a[sizeof(a) - 1] = '\0';
    memcpy(b, a, sizeof(b));
    b[PGW_LOG_CAUSE_MAX + 10] = 'y';
    pgw_log_limit l = {0};
    uint64_t unsaid = 0;
    assert_true(pgw_log_due(&l, T0, a, &unsaid));
    assert_false(pgw_log_due(&l, T0, b, &unsaid));
    b[PGW_LOG_CAUSE_MAX - 2] = 'y';
    assert_true(pgw_log_due(&l, T0, b, &unsaid));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_cause_once_a_minute_the_rest_counted),
        cmocka_unit_test(test_another_cause_goes_out_at_once),
        cmocka_unit_test(test_changing_causes_are_bounded),
        cmocka_unit_test(test_long_causes_compare_on_their_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
