/*
 * test_api.c - what of server/api.h runs without a server: a live-stream
 * message as a member's own stream shows it, and whose Authorization names
 * a mini-program session.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "server/api.h"

#include <string.h>

/* The member's view of `json`, as a string. */
static void view(const char *json, char *out)
{
    size_t len = pgw_api_stream_member_view(json, strlen(json), out);
    assert_true(len <= strlen(json));
    out[len] = '\0';
}

/* A transfer's message loses its event_key, whatever it holds. */
static void test_member_view_drops_event_key(void **state)
{
    (void)state;
    char out[512];
    view("{\"type\":\"transfer\",\"id\":7,\"credit\":\"member:M1\",\"reference\":\"R-1\","
         "\"event_key\":\"store:S001:E-1\"}",
         out);
    assert_string_equal(out, "{\"type\":\"transfer\",\"id\":7,\"credit\":\"member:M1\","
                             "\"reference\":\"R-1\"}");
    /* A reference that spells the key inside a string (its quotes escaped)
     * is no cut: only the real, last field is. */
    view("{\"type\":\"transfer\",\"reference\":\"a\\\",\\\"event_key\\\":\\\"x\","
         "\"event_key\":\"store:S001:\\\",\\\"event_key\\\":1\"}",
         out);
    assert_string_equal(out,
                        "{\"type\":\"transfer\",\"reference\":\"a\\\",\\\"event_key\\\":\\\"x\"}");
}

/* A message with no event_key (a notice, the sweep's transfers) is left whole. */
static void test_member_view_keeps_the_rest(void **state)
{
    (void)state;
    char out[512];
    const char *notice = "{\"type\":\"notification\",\"id\":3,\"member_id\":\"M1\",\"points\":5}";
    view(notice, out);
    assert_string_equal(out, notice);
    view("{}", out);
    assert_string_equal(out, "{}");
    assert_int_equal(pgw_api_stream_member_view("", 0, out), 0);
}

static void test_by_session(void **state)
{
    (void)state;
    assert_true(pgw_api_by_session("Session v2.abc"));
    assert_true(pgw_api_by_session("session v2.abc"));
    assert_false(pgw_api_by_session("Bearer k"));
    assert_false(pgw_api_by_session("Session"));
    assert_false(pgw_api_by_session(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_member_view_drops_event_key),
        cmocka_unit_test(test_member_view_keeps_the_rest),
        cmocka_unit_test(test_by_session),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
