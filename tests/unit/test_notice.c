/*
 * test_notice.c - notification rules: routing and fall-through, SMS quiet
 * hours across midnight and time zones, retry backoff bounds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/notice.h"

static void test_route_order_and_fall_through(void **state)
{
    (void)state;
    pgw_notice_reach all = {.mp = true, .oa = true, .sms = true};
    assert_int_equal(pgw_notice_route(&all, NULL, 0), PGW_CHANNEL_MP);
    assert_int_equal(pgw_notice_route(&all, NULL, PGW_CHANNEL_MP), PGW_CHANNEL_OA);
    assert_int_equal(pgw_notice_route(&all, NULL, PGW_CHANNEL_MP | PGW_CHANNEL_OA),
                     PGW_CHANNEL_SMS);
    assert_int_equal(
        pgw_notice_route(&all, NULL, PGW_CHANNEL_MP | PGW_CHANNEL_OA | PGW_CHANNEL_SMS),
        PGW_CHANNEL_NONE);
    pgw_notice_reach no_quota = {.mp = false, .oa = true, .sms = true};
    assert_int_equal(pgw_notice_route(&no_quota, NULL, 0), PGW_CHANNEL_OA);
    pgw_notice_reach phone_only = {.sms = true};
    assert_int_equal(pgw_notice_route(&phone_only, NULL, 0), PGW_CHANNEL_SMS);
    pgw_notice_reach nothing = {0};
    assert_int_equal(pgw_notice_route(&nothing, NULL, 0), PGW_CHANNEL_NONE);
    assert_string_equal(pgw_notice_channel_name(PGW_CHANNEL_OA), "wechat_oa");
    /* The gave-up mark kept with the exclusions is not a channel. */
    assert_int_equal(pgw_notice_route(&all, NULL, PGW_NOTICE_GAVE_UP), PGW_CHANNEL_MP);
    assert_int_equal(pgw_notice_route(&all, NULL, PGW_NOTICE_GAVE_UP | PGW_CHANNEL_MP),
                     PGW_CHANNEL_OA);
    /* A configured order: SMS first for this kind, the official account
     * next, the mini program never. */
    pgw_notice_order sms_first = {2, {PGW_CHANNEL_SMS, PGW_CHANNEL_OA}};
    assert_int_equal(pgw_notice_route(&all, &sms_first, 0), PGW_CHANNEL_SMS);
    assert_int_equal(pgw_notice_route(&all, &sms_first, PGW_CHANNEL_SMS), PGW_CHANNEL_OA);
    assert_int_equal(pgw_notice_route(&all, &sms_first, PGW_CHANNEL_SMS | PGW_CHANNEL_OA),
                     PGW_CHANNEL_NONE); /* not the mini program: left out */
    assert_int_equal(pgw_notice_route(&no_quota, &sms_first, PGW_CHANNEL_SMS), PGW_CHANNEL_OA);
    assert_int_equal(pgw_notice_channel_parse("sms"), PGW_CHANNEL_SMS);
    assert_int_equal(pgw_notice_channel_parse("wechat_mp"), PGW_CHANNEL_MP);
    assert_int_equal(pgw_notice_channel_parse("email"), PGW_CHANNEL_NONE);
}

#define SHANGHAI (8 * 3600)
/* 2026-11-28 00:00 in Shanghai, as unix seconds. */
static const int64_t MIDNIGHT = 1795824000 - SHANGHAI;

static int64_t at(int hour, int minute)
{
    return MIDNIGHT + hour * 3600 + minute * 60;
}

static void test_quiet_hours(void **state)
{
    (void)state;
    const int32_t start = 21 * 60, end = 8 * 60;
    /* Daytime: at once. */
    assert_int_equal(pgw_notice_sms_time(at(12, 0), SHANGHAI, start, end), at(12, 0));
    assert_int_equal(pgw_notice_sms_time(at(20, 59), SHANGHAI, start, end), at(20, 59));
    assert_int_equal(pgw_notice_sms_time(at(8, 0), SHANGHAI, start, end), at(8, 0));
    /* Evening waits for tomorrow 08:00; the early morning for today's. */
    assert_int_equal(pgw_notice_sms_time(at(21, 0), SHANGHAI, start, end), at(32, 0));
    assert_int_equal(pgw_notice_sms_time(at(23, 59), SHANGHAI, start, end), at(32, 0));
    assert_int_equal(pgw_notice_sms_time(at(0, 0), SHANGHAI, start, end), at(8, 0));
    assert_int_equal(pgw_notice_sms_time(at(7, 59), SHANGHAI, start, end), at(8, 0));
    /* A window inside one day (12:00-14:00), and none at all. */
    assert_int_equal(pgw_notice_sms_time(at(13, 0), SHANGHAI, 720, 840), at(14, 0));
    assert_int_equal(pgw_notice_sms_time(at(14, 0), SHANGHAI, 720, 840), at(14, 0));
    assert_int_equal(pgw_notice_sms_time(at(23, 0), SHANGHAI, 600, 600), at(23, 0));
    /* The zone matters: 22:00 in Shanghai is 14:00 UTC, not quiet there. */
    assert_int_equal(pgw_notice_sms_time(at(22, 0), 0, start, end), at(22, 0));
}

static void test_backoff(void **state)
{
    (void)state;
    /* No jitter: the floor; full jitter: the doubled delay, capped. */
    assert_int_equal(pgw_notice_backoff_ms(1, 1000, 60000, 1000), 1000);
    assert_int_equal(pgw_notice_backoff_ms(2, 1000, 60000, 1000), 2000);
    assert_int_equal(pgw_notice_backoff_ms(4, 1000, 60000, 1000), 8000);
    assert_int_equal(pgw_notice_backoff_ms(7, 1000, 60000, 1000), 60000);
    assert_int_equal(pgw_notice_backoff_ms(200, 1000, 60000, 1000), 60000);
    assert_int_equal(pgw_notice_backoff_ms(5, 1000, 60000, 0), 500);
    for (int32_t j = 0; j <= 1000; j += 7) {
        int64_t d = pgw_notice_backoff_ms(3, 1000, 60000, j);
        assert_true(d >= 500 && d <= 4000);
    }
    /* A huge cap does not overflow. */
    assert_int_equal(pgw_notice_backoff_ms(100, 1, INT64_MAX, 1000), INT64_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_order_and_fall_through),
        cmocka_unit_test(test_quiet_hours),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
