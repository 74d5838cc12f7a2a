/*
 * test_path.c - the folder of a path: a bare name, the root, nested and
 * trailing slashes, and a folder too long for its buffer; a path made
 * whole, of a file there or not made yet; a step through a link.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* One file by every path to it, made or not; the root's files with one
 * slash; a folder that is not there: false. */
static void test_whole_paths(void **state)
{
    (void)state;
    char dir[] = "/tmp/pgw-path-XXXXXX", real_dir[PATH_MAX], whole[PATH_MAX], want[PATH_MAX + 16];
    assert_non_null(mkdtemp(dir));
    assert_non_null(realpath(dir, real_dir));
    char made[PATH_MAX], link_path[PATH_MAX], odd[PATH_MAX];
    snprintf(made, sizeof(made), "%s/made.db", dir);
    FILE *f = fopen(made, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(link_path, sizeof(link_path), "%s/link.db", dir);
    assert_int_equal(symlink(made, link_path), 0);
    snprintf(want, sizeof(want), "%s/made.db", real_dir);
    assert_true(pgw_path_whole(link_path, whole)); /* through the link */
    assert_string_equal(whole, want);
    snprintf(odd, sizeof(odd), "%s/./made.db-wal", dir); /* not made yet */
    snprintf(want, sizeof(want), "%s/made.db-wal", real_dir);
    assert_true(pgw_path_whole(odd, whole));
    assert_string_equal(whole, want);
    assert_true(pgw_path_whole("/pgw-not-there-at-the-root", whole));
    assert_string_equal(whole, "/pgw-not-there-at-the-root");
    snprintf(odd, sizeof(odd), "%s/no-such-folder/x.db", dir);
    assert_false(pgw_path_whole(odd, whole));
    unlink(link_path);
    unlink(made);
    rmdir(dir);
}

/* Where a link leads, one step: an absolute target as it is; a relative
 * one from the link's folder, or as it is for a link named without one;
 * anything else (a file, nothing) is its own path; a result over the
 * buffer: false. */
static void test_link_steps(void **state)
{
    (void)state;
    char dir[] = "/tmp/pgw-link-XXXXXX", path[PATH_MAX], next[PATH_MAX], cwd[PATH_MAX];
    assert_non_null(mkdtemp(dir));
    bool was_link = true;
    snprintf(path, sizeof(path), "%s/abs", dir);
    assert_int_equal(symlink("/var/backups/pointsgw.db", path), 0);
    assert_true(pgw_path_link_step(path, next, sizeof(next), &was_link));
    assert_true(was_link);
    assert_string_equal(next, "/var/backups/pointsgw.db");
    snprintf(path, sizeof(path), "%s/rel", dir);
    assert_int_equal(symlink("sub/copy.db", path), 0);
    assert_true(pgw_path_link_step(path, next, sizeof(next), &was_link));
    assert_true(was_link);
    char want[PATH_MAX + 16];
    snprintf(want, sizeof(want), "%s/sub/copy.db", dir);
    assert_string_equal(next, want);
    char small[8] = "";
    assert_false(pgw_path_link_step(path, small, sizeof(small), &was_link));
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(dir), 0); /* a link named without a folder */
    assert_true(pgw_path_link_step("rel", next, sizeof(next), &was_link));
    assert_true(was_link);
    assert_string_equal(next, "sub/copy.db");
    assert_true(pgw_path_link_step("nothing-here", next, sizeof(next), &was_link));
    assert_false(was_link);
    assert_string_equal(next, "nothing-here");
    assert_int_equal(chdir(cwd), 0);
    assert_true(pgw_path_link_step(dir, next, sizeof(next), &was_link)); /* a folder */
    assert_false(was_link);
    assert_string_equal(next, dir);
    assert_false(pgw_path_link_step(dir, small, sizeof(small), &was_link));
    snprintf(path, sizeof(path), "%s/abs", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/rel", dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_folders),
        cmocka_unit_test(test_too_long_for_the_buffer),
        cmocka_unit_test(test_whole_paths),
        cmocka_unit_test(test_link_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
