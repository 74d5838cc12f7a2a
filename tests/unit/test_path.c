/*
 * test_path.c - the folder of a path: a bare name, the root, nested and
 * trailing slashes, and a folder too long for its buffer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "util/path.h"

static void test_folders(void **state)
{
    (void)state;
    static const struct {
        const char *path, *folder;
    } CASES[] = {
        {"pointsgw.db", "."},
        {"/pointsgw.db", "/"},
        {"data/pointsgw.db", "data"},
        {"/var/lib/p/x.db", "/var/lib/p"},
        {"a/b/", "a/b"},
        {"//x", "/"},
        {"./x.db", "."},
        {"/", "/"},
        {"", "."},
    };
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        char out[64];
        assert_true(pgw_path_folder(CASES[i].path, out, sizeof(out)));
        assert_string_equal(out, CASES[i].folder);
    }
}

static void test_too_long_for_the_buffer(void **state)
{
    (void)state;
    char out[5] = "xxxx";
    assert_false(pgw_path_folder("abcde/f", out, sizeof(out))); /* "abcde" needs 6 */
    assert_string_equal(out, "");
    assert_true(pgw_path_folder("abcd/f", out, sizeof(out)));
    assert_string_equal(out, "abcd");
    assert_false(pgw_path_folder("f", out, 1)); /* "." needs 2 */
    assert_false(pgw_path_folder("f", out, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_folders),
        cmocka_unit_test(test_too_long_for_the_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
