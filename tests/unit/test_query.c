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
    /* A name that only starts like another is not it; the first wins. */
    assert_int_equal(get("nonce2=1&nonce=2&nonce=3", "nonce", out, sizeof(out)), PGW_OK);
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
    assert_int_equal(get("a", "a", out, sizeof(out)), PGW_ENOTFOUND);
    assert_int_equal(get("a=1234567", "a", out, sizeof(out)), PGW_OK);
    assert_int_equal(get("a=12345678", "a", out, sizeof(out)), PGW_ETOOLARGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
