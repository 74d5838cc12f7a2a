/*
 * test_env.c - which of a channel's variables are set: every one unset
 * named at once, an empty value as unset, a name too long for the room
 * cut short but still unset.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "util/env.h"

#include <stdlib.h>
#include <string.h>

static void test_every_unset_variable_is_named(void **state)
{
    (void)state;
    unsetenv("PGW_TEST_ENV_A");
    setenv("PGW_TEST_ENV_B", "", 1); /* empty: as good as unset */
    setenv("PGW_TEST_ENV_C", "c", 1);
    const char *vars[] = {"PGW_TEST_ENV_A", "PGW_TEST_ENV_B", "PGW_TEST_ENV_C", ""};
    char unset[PGW_ENV_UNSET_MAX];
    assert_false(pgw_env_all_set(vars, 4, unset, sizeof(unset)));
    assert_string_equal(unset, "PGW_TEST_ENV_A, PGW_TEST_ENV_B, (no variable named)");
    setenv("PGW_TEST_ENV_A", "a", 1);
    assert_false(pgw_env_all_set(vars, 2, unset, sizeof(unset)));
    assert_string_equal(unset, "PGW_TEST_ENV_B");
    setenv("PGW_TEST_ENV_B", "b", 1);
    assert_true(pgw_env_all_set(vars, 3, unset, sizeof(unset)));
    assert_string_equal(unset, "");
}

static void test_a_list_too_long_is_cut_and_still_unset(void **state)
{
    (void)state;
    unsetenv("PGW_TEST_ENV_A");
    unsetenv("PGW_TEST_ENV_D");
    const char *vars[] = {"PGW_TEST_ENV_A", "PGW_TEST_ENV_D"};
    char unset[8];
    assert_false(pgw_env_all_set(vars, 2, unset, sizeof(unset)));
    assert_string_equal(unset, "PGW_TES");
    char none[1]; /* no room for a name at all: still not set */
    assert_false(pgw_env_all_set(vars, 2, none, sizeof(none)));
    assert_string_equal(none, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_unset_variable_is_named),
        cmocka_unit_test(test_a_list_too_long_is_cut_and_still_unset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
