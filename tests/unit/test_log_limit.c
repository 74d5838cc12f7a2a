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

/* pgw_log_tell: working again after failures told is said once the
 * minute of the last line out is over, once, with the count held back;
 * then the limit starts afresh and the same cause is news. */
static void test_works_again_once_with_the_count(void **state)
{
    (void)state;
    pgw_log_limit l = {0};
    uint64_t unsaid = 99;
    assert_int_equal(pgw_log_tell(&l, T0, NULL, &unsaid), PGW_LOG_QUIET); /* nothing told */
    assert_int_equal(unsaid, 99);
    assert_int_equal(pgw_log_tell(&l, T0, "database is locked", &unsaid), PGW_LOG_FAILED);
    assert_int_equal(unsaid, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pgw_log_tell(&l, T0 + 1, "database is locked", &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_tell(&l, T0 + 2, NULL, &unsaid), PGW_LOG_QUIET); /* the minute */
    assert_int_equal(pgw_log_tell(&l, T0 + PGW_LOG_EVERY_S, NULL, &unsaid), PGW_LOG_WORKS);
    assert_int_equal(unsaid, 3);
    assert_int_equal(pgw_log_tell(&l, T0 + PGW_LOG_EVERY_S, NULL, &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_tell(&l, T0 + 61, "database is locked", &unsaid), PGW_LOG_FAILED);
    assert_int_equal(unsaid, 0);
}

/* pgw_log_idle: nothing told awaits its "works again", so a success says
 * nothing and changes nothing (what pgw_log_tell finds then): the writer
 * reads no clock at such a commit. A failure told, even one held back
 * since, makes it busy till "works again" is said. */
static void test_idle_till_a_failure_is_told(void **state)
{
    (void)state;
    pgw_log_limit l = {0}, before;
    uint64_t unsaid = 99;
    assert_true(pgw_log_idle(&l));
    before = l;
    assert_int_equal(pgw_log_tell(&l, T0, NULL, &unsaid), PGW_LOG_QUIET);
    assert_memory_equal(&l, &before, sizeof(l));
    assert_int_equal(unsaid, 99);
    assert_int_equal(pgw_log_tell(&l, T0, "disk I/O error", &unsaid), PGW_LOG_FAILED);
    assert_false(pgw_log_idle(&l));
    assert_int_equal(pgw_log_tell(&l, T0 + 1, "disk I/O error", &unsaid), PGW_LOG_QUIET);
    assert_false(pgw_log_idle(&l));
    assert_int_equal(pgw_log_tell(&l, T0 + 2, NULL, &unsaid), PGW_LOG_QUIET);
    assert_false(pgw_log_idle(&l));
    assert_int_equal(pgw_log_tell(&l, T0 + PGW_LOG_EVERY_S, NULL, &unsaid), PGW_LOG_WORKS);
    assert_true(pgw_log_idle(&l));
}

/* Working within the minute, then failing again before it is over: the
 * failure is held back and counted, and "works again" waits for the next
 * success; none after the minute's failure, none said. */
static void test_a_failure_takes_back_the_works_again(void **state)
{
    (void)state;
    pgw_log_limit l = {0};
    uint64_t unsaid = 0;
    const char *down = "WeChat: system busy (-1)";
    assert_int_equal(pgw_log_tell(&l, T0, down, &unsaid), PGW_LOG_FAILED);
    assert_int_equal(pgw_log_tell(&l, T0 + 1, down, &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_tell(&l, T0 + 2, NULL, &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_tell(&l, T0 + 3, down, &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_later(&l, T0 + 60, &unsaid), PGW_LOG_QUIET); /* it failed last */
    assert_int_equal(pgw_log_tell(&l, T0 + 59, NULL, &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_tell(&l, T0 + 60, NULL, &unsaid), PGW_LOG_WORKS);
    assert_int_equal(unsaid, 2);
    assert_int_equal(pgw_log_tell(&l, T0 + 61, NULL, &unsaid), PGW_LOG_QUIET);
}

/* pgw_log_later: a success within the minute, then nothing used (an idle
 * writer): "works again" comes with the minute's end all the same, once;
 * before it, or with nothing told, nothing. */
static void test_works_again_later_when_nothing_is_used(void **state)
{
    (void)state;
    pgw_log_limit l = {0};
    uint64_t unsaid = 0;
    assert_int_equal(pgw_log_later(&l, T0, &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_tell(&l, T0, "disk full", &unsaid), PGW_LOG_FAILED);
    assert_int_equal(pgw_log_tell(&l, T0 + 1, "disk full", &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_tell(&l, T0 + 5, NULL, &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_later(&l, T0 + 59, &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_later(&l, T0 + 60, &unsaid), PGW_LOG_WORKS);
    assert_int_equal(unsaid, 1);
    assert_true(pgw_log_idle(&l));
    assert_int_equal(pgw_log_later(&l, T0 + 61, &unsaid), PGW_LOG_QUIET);
}

/* pgw_log_stopping: the owner stops within the minute, the thing having
 * worked since its failure: "works again" at once, with the count, once;
 * failing still, or nothing told, nothing. */
static void test_works_again_when_stopping(void **state)
{
    (void)state;
    pgw_log_limit l = {0};
    uint64_t unsaid = 99;
    assert_int_equal(pgw_log_stopping(&l, &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_tell(&l, T0, "disk full", &unsaid), PGW_LOG_FAILED);
    assert_int_equal(pgw_log_tell(&l, T0 + 1, "disk full", &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_stopping(&l, &unsaid), PGW_LOG_QUIET); /* failing still */
    assert_false(pgw_log_idle(&l));
    assert_int_equal(pgw_log_tell(&l, T0 + 2, NULL, &unsaid), PGW_LOG_QUIET);
    assert_int_equal(pgw_log_stopping(&l, &unsaid), PGW_LOG_WORKS);
    assert_int_equal(unsaid, 1);
    assert_true(pgw_log_idle(&l));
    assert_int_equal(pgw_log_stopping(&l, &unsaid), PGW_LOG_QUIET);
}

/* Why the wait: a thing failing every other second for two minutes says
 * a line a minute (it said two lines a failure when "works again" came
 * at once); one that mends says it a minute after its first line. */
static void test_every_other_failure_is_bounded(void **state)
{
    (void)state;
    pgw_log_limit flaky = {0}, mends = {0};
    uint64_t unsaid = 0;
    int lines_flaky = 0, lines_mends = 0;
    for (int i = 0; i < 120; i++) {
        const char *failed = i % 2 == 0 ? "WeChat: system busy (-1)" : NULL;
        lines_flaky += pgw_log_tell(&flaky, T0 + i, failed, &unsaid) != PGW_LOG_QUIET;
        pgw_log_say say = pgw_log_tell(&mends, T0 + i, i < 10 ? failed : NULL, &unsaid);
        lines_mends += say != PGW_LOG_QUIET;
        if (say == PGW_LOG_WORKS) {
            assert_int_equal(i, PGW_LOG_EVERY_S);
            assert_int_equal(unsaid, 4);
        }
    }
    assert_int_equal(lines_flaky, 2);
    assert_int_equal(lines_mends, 2);
}

/* Regression (an operator's walkthrough): the first failure's line said
 * "(0 more since the last such line)": nothing held back says nothing. */
static void test_held_back_said_only_when_some(void **state)
{
    (void)state;
    char text[PGW_LOG_HELD_BACK_MAX];
    pgw_log_held_back(0, text);
    assert_string_equal(text, "");
    pgw_log_held_back(1, text);
    assert_string_equal(text, " (1 more since the last such line)");
    pgw_log_held_back(UINT64_MAX, text);
    assert_string_equal(text, " (18446744073709551615 more since the last such line)");
}

/* The line an owner writes for what the limit said (the notifier's and
 * server/expire.c's): the count held back only when there is one, and a
 * cause too long for the line cut, its newline kept. */
static void test_a_line_in_one_wording(void **state)
{
    (void)state;
    char text[PGW_LOG_LINE_MAX], why[2000];
    pgw_log_line(PGW_LOG_FAILED, "outbox", "database or disk is full", 0, text);
    assert_string_equal(text, "pointsgw: outbox: database or disk is full\n");
    pgw_log_line(PGW_LOG_FAILED, "outbox", "database or disk is full", 3, text);
    assert_string_equal(text, "pointsgw: outbox: database or disk is full (3 more since the last "
                              "such line)\n");
    pgw_log_line(PGW_LOG_WORKS, "outbox", "", 2, text);
    assert_string_equal(text, "pointsgw: outbox works again (2 more failed since the last line)\n");
    pgw_log_line(PGW_LOG_WORKS, "outbox", "", 0, text); /* none failed since: no "(0 more" */
    assert_string_equal(text, "pointsgw: outbox works again\n");
    pgw_log_line(PGW_LOG_QUIET, "outbox", "database or disk is full", 2, text);
    assert_string_equal(text, "");
    memset(why, 'x', sizeof(why) - 1);
    why[sizeof(why) - 1] = '\0';
    pgw_log_line(PGW_LOG_FAILED, why, why, UINT64_MAX, text);
    size_t len = strlen(text);
    assert_int_equal(len, strlen("pointsgw: : ") + 200 + 700 +
                              strlen(" (18446744073709551615 more since the last such line)\n"));
    assert_int_equal(text[len - 1], '\n');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_cause_once_a_minute_the_rest_counted),
        cmocka_unit_test(test_another_cause_goes_out_at_once),
        cmocka_unit_test(test_changing_causes_are_bounded),
        cmocka_unit_test(test_long_causes_compare_on_their_start),
        cmocka_unit_test(test_works_again_once_with_the_count),
        cmocka_unit_test(test_idle_till_a_failure_is_told),
        cmocka_unit_test(test_a_failure_takes_back_the_works_again),
        cmocka_unit_test(test_works_again_later_when_nothing_is_used),
        cmocka_unit_test(test_works_again_when_stopping),
        cmocka_unit_test(test_every_other_failure_is_bounded),
        cmocka_unit_test(test_held_back_said_only_when_some),
        cmocka_unit_test(test_a_line_in_one_wording),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
