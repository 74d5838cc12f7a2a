/*
 * test_query.c - one parameter of a query the HTTP layer already decoded:
 * taken as it is, bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "util/query.h"

#include <string.h>

static int get(const char *query, const char *name, char *out, size_t cap)
{
    pgw_err err;
    return pgw_query_get(query, name, out, cap, &err);
}

static void test_values(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(get("signature=abc&timestamp=123&nonce=9", "timestamp", out, sizeof(out)),
                     PGW_OK);
    assert_string_equal(out, "123");
    /* Never decoded twice: what the HTTP layer decoded stays as it is. */
    assert_int_equal(get("echostr=P9n/q+Y==&x=1", "echostr", out, sizeof(out)), PGW_OK);
    assert_string_equal(out, "P9n/q+Y==");
    assert_int_equal(get("a=%2541", "a", out, sizeof(out)), PGW_OK);
    assert_string_equal(out, "%2541");
    /* A name that only starts like another is not it. */
    assert_int_equal(get("nonce2=1&nonce=2&nonc=3&xnonce=4", "nonce", out, sizeof(out)), PGW_OK);
    assert_string_equal(out, "2");
    assert_int_equal(get("a=&b=1", "a", out, sizeof(out)), PGW_OK);
    assert_string_equal(out, "");
}

static void test_refusals(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(get("a=1", "b", out, sizeof(out)), PGW_ENOTFOUND);
    assert_int_equal(get("", "a", out, sizeof(out)), PGW_ENOTFOUND);
    assert_int_equal(get("a=1234567", "a", out, sizeof(out)), PGW_OK);
    assert_int_equal(get("a=12345678", "a", out, sizeof(out)), PGW_ETOOLARGE);
}

/* Regression: the first of two values was taken, silently, where a proxy
 * or a log in front may have read the second (limit=2&limit=3 read 2). A
 * name without '=' was taken for absent by one reader and for present by
 * another. Both are refused, saying so, and out is left as it was. */
static void test_a_name_twice_or_without_a_value_is_refused(void **state)
{
    (void)state;
    const char *queries[] = {"limit=2&limit=3", "limit=2&x=1&limit=2",
                             "limit=&limit=3",  "limit=123456789&limit=3",
                             "limit",           "x=1&limit&limit=3"};
    const char *says[] = {"given twice", "given twice", "given twice",
                          "given twice", "no value",    "no value"};
    for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
        char out[8] = "kept";
        pgw_err err;
        assert_int_equal(pgw_query_get(queries[i], "limit", out, sizeof(out), &err), PGW_EINVAL);
        assert_non_null(strstr(err.msg, "query parameter limit"));
        assert_non_null(strstr(err.msg, says[i]));
        assert_string_equal(out, "kept");
    }
}

/* A route's own parameters only: a misspelt one (shop_id= for shop=)
 * was ignored, and the report covered more than was asked. Names are
 * whole: "shop" takes neither "shop_id" nor "sho". */
static void test_only_named_parameters(void **state)
{
    (void)state;
    static const char *const names[] = {"channel", "shop", "from", NULL};
    pgw_err err;
    const char *taken[] = {"",      "shop=S1",   "channel=store&shop=S1&from=1",
                           "shop=", "&&shop=1&", "from"};
    for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++)
        assert_int_equal(pgw_query_only(taken[i], names, &err), PGW_OK);
    const char *refused[] = {"shop_id=S1", "channel=store&form=1", "sho=1", "x", "=1"};
    const char *named[] = {"\"shop_id\"", "\"form\"", "\"sho\"", "\"x\"", NULL};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        int rc = pgw_query_only(refused[i], names, &err);
        if (named[i] == NULL) { /* "=1" names nothing: no parameter to refuse */
            assert_int_equal(rc, PGW_OK);
            continue;
        }
        assert_int_equal(rc, PGW_EINVAL);
        assert_non_null(strstr(err.msg, named[i]));
        assert_non_null(strstr(err.msg, "this route takes channel, shop, from"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_a_name_twice_or_without_a_value_is_refused),
        cmocka_unit_test(test_only_named_parameters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
