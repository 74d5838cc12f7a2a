/*
 * test_wechat_keywords.c - subscribe-message values fitted to WeChat's
 * limits by characters, never splitting one; what no cut can save refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "adapters/wechat_mp/keywords.h"
#include "core/utf8.h"

#include <string.h>

static const char *fit(const char *keyword, const char *value)
{
    static char out[PGW_WX_KEYWORD_VALUE_MAX];
    pgw_err err;
    if (pgw_wx_keyword_fit(keyword, value, out, sizeof(out), &err) != PGW_OK)
        fail_msg("%s: %s", keyword, err.msg);
    return out;
}

static int refused(const char *keyword, const char *value)
{
    char out[PGW_WX_KEYWORD_VALUE_MAX];
    pgw_err err;
    return pgw_wx_keyword_fit(keyword, value, out, sizeof(out), &err) == PGW_EINVAL;
}

static void test_cut_on_character_boundaries(void **state)
{
    (void)state;
    /* 20 characters fit as they are; 25 become 17 and "...". */
    assert_string_equal(fit("thing1", "优衣生活UniLife服饰店积分已到账啦"),
                        "优衣生活UniLife服饰店积分已到账啦");
    assert_string_equal(fit("thing2", "一二三四五六七八九十一二三四五六七八九十一二三四五"),
                        "一二三四五六七八九十一二三四五六七...");
    /* Four-byte characters (emoji) are characters too. */
    assert_string_equal(fit("thing3", "🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉"), "🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉...");
    /* A receipt's line break becomes a space. */
    assert_string_equal(fit("thing4", "R-1\r\n收银台 2"), "R-1  收银台 2");
    assert_string_equal(fit("character_string5", "ORDER-1234567890-1234567890-1234567890"),
                        "ORDER-1234567890-1234567890-1...");
    assert_string_equal(fit("car_number7", "粤B12345学"), "粤B12345学");
    assert_string_equal(fit("name9", "欧阳娜娜娜娜娜娜娜娜娜娜"), "欧阳娜娜娜娜娜娜娜娜");
    assert_string_equal(fit("name10", "Alexander Hamilton-Burr"), "Alexander Hamilton-B");
    /* 20 three-byte characters plus "..." fit in the output bound. */
    assert_true(
        strlen(fit("thing11", "一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十一二三四"
                              "五六七八九十")) <= PGW_WX_KEYWORD_VALUE_MAX);
}

static void test_values_checked_as_their_kind(void **state)
{
    (void)state;
    assert_string_equal(fit("amount1", "¥128.00"), "¥128.00");
    assert_string_equal(fit("amount2", "128元"), "128元");
    assert_string_equal(fit("number3", "1256"), "1256");
    assert_string_equal(fit("number4", "12.5"), "12.5");
    assert_string_equal(fit("phrase5", "已到账"), "已到账");
    assert_string_equal(fit("time6", "2026年11月24日 10:15"), "2026年11月24日 10:15");
    assert_string_equal(fit("symbol7", "+-"), "+-");
    assert_true(refused("amount1", "abc"));
    assert_true(refused("amount1", "¥12345678901")); /* 11 digits */
    assert_true(refused("number3", "12a"));
    assert_true(refused("number3", "1.2.3"));
    assert_true(refused("number3", "-456")); /* WeChat: 47003 */
    /* Regression: a point without digits on both sides passed ("5.", ".5",
     * "¥92."), where the kinds' table reads a decimal number (the fake
     * answers 47003). */
    assert_true(refused("number3", "5."));
    assert_true(refused("number3", ".5"));
    assert_true(refused("number3", "."));
    assert_true(refused("amount1", "¥92."));
    assert_true(refused("amount1", "92.元"));
    assert_string_equal(fit("number3", "0.5"), "0.5");
    assert_string_equal(fit("amount1", "92.50元"), "92.50元");
    assert_true(refused("phrase5", "已到账了吗呀")); /* 6: a phrase cannot be cut */
    assert_true(refused("phrase5", "ok"));
    assert_true(refused("character_string1", "订单1"));
    assert_true(refused("phone_number1", "call me"));
    /* A phone of up to 17 digits and symbols passes as it is (research 4).
     * Regression: a longer one was cut to "+86-0766-66888...", a number
     * nobody answers, and "..." dials as nothing; it is refused now, as a
     * plate over 8 characters is. */
    assert_string_equal(fit("phone_number2", "+86-0766-66888866"), "+86-0766-66888866");
    assert_true(refused("phone_number3", "+86-0766-66888866-123"));
    assert_true(refused("phone_number4", "+86-0766-668888661"));
    assert_true(refused("letter1", "abc1"));
    assert_true(refused("symbol1", "abc"));
    assert_true(refused("thing1", ""));
    assert_true(refused("thing1", "\xE4\xB8")); /* cut inside a character */
    assert_true(refused("thing1", "\xC0\x80")); /* an overlong form */
    assert_true(refused("colour1", "red"));
    /* A plate: letters and digits, a Chinese character first or last only
     * (research 4). Regression: one over 8 characters was cut to
     * "粤B123...", dots the table does not take (the fake answers 47003),
     * and a cut plate names another car; any character went through. */
    assert_string_equal(fit("car_number2", "粤B12345学"), "粤B12345学");
    assert_string_equal(fit("car_number3", "沪A0N9X7"), "沪A0N9X7");
    assert_string_equal(fit("car_number4", "WX1234"), "WX1234");
    assert_true(refused("car_number5", "粤B123456789"));
    assert_true(refused("car_number6", "粤B-12345"));
    assert_true(refused("car_number7", "粤B·12345"));
    assert_true(refused("car_number8", "粤京12345"));
    assert_true(refused("car_number9", "粤B 12345"));
    /* The bounds on what is read: 256 characters of any kind (a thing
     * over it is refused, not cut), under 64 bytes of a time. */
    char long_value[258 * 3 + 1] = "";
    for (int i = 0; i < 256; i++)
        strcat(long_value, "积");
    assert_string_equal(fit("thing1", long_value), "积积积积积积积积积积积积积积积积积...");
    strcat(long_value, "积");
    assert_true(refused("thing1", long_value));
    char time_value[65];
    memset(time_value, '1', 64);
    time_value[63] = '\0';
    assert_string_equal(fit("time1", time_value), time_value);
    time_value[63] = '1';
    time_value[64] = '\0';
    assert_true(refused("time1", time_value));
    char small[8];
    pgw_err err;
    assert_int_equal(pgw_wx_keyword_fit("thing1", "一二三四五", small, sizeof(small), &err),
                     PGW_ETOOLARGE);
}

/* The refusal quotes the value: cut by bytes, it would end inside a
 * character, and jansson refuses such a string in the JSON answer. */
static void test_refusal_text_stays_utf8(void **state)
{
    (void)state;
    char out[PGW_WX_KEYWORD_VALUE_MAX];
    pgw_err err;
    /* "a" and 20 three-byte characters: byte 48 is inside the 16th. */
    const char *value = "a一二三四五六七八九十一二三四五六七八九十";
    assert_int_equal(pgw_wx_keyword_fit("phrase1", value, out, sizeof(out), &err), PGW_EINVAL);
    assert_true(pgw_utf8_valid(err.msg));
    assert_non_null(strstr(err.msg, "a一二三四五六七八九十一二三四五"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_on_character_boundaries),
        cmocka_unit_test(test_values_checked_as_their_kind),
        cmocka_unit_test(test_refusal_text_stays_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
