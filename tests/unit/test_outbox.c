/*
 * test_outbox.c - the notification outbox in the store: coalescing inside
 * the window only, claiming what is due, a crash's claims released,
 * retrying only the dead, and notices following a merge.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "db_fixture.h"
#include "store/store.h"

#include <string.h>

static pgw_store *open_store(void **state)
{
    db_fixture *f = *state;
    pgw_store *s = NULL;
    pgw_err err;
    if (pgw_store_open(f->url, true, &s, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    return s;
}

static void enqueue(pgw_store *s, const char *member, int64_t points, int64_t balance, int64_t now,
                    int64_t window)
{
    pgw_err err;
    assert_int_equal(pgw_store_begin(s, &err), PGW_OK);
    assert_int_equal(pgw_store_enqueue_notice(s, member, "points_arrived", points, balance, "S001",
                                              now, window, &err),
                     PGW_OK);
    assert_int_equal(pgw_store_commit(s, &err), PGW_OK);
}

static size_t claim(pgw_store *s, int64_t now, pgw_notice *out)
{
    size_t n = 0;
    pgw_err err;
    assert_int_equal(pgw_store_claim_notices(s, now, out, 8, &n, &err), PGW_OK);
    return n;
}

static void test_coalescing_window(void **state)
{
    pgw_store *s = open_store(state);
    pgw_notice got[8];
    enqueue(s, "M1", 100, 100, 1000, 10);
    enqueue(s, "M1", 50, 150, 1005, 10);      /* inside the window: joins */
    enqueue(s, "M2", 7, 7, 1006, 10);         /* another member: its own */
    assert_int_equal(claim(s, 1009, got), 0); /* nothing due before the window ends */
    assert_int_equal(claim(s, 1010, got), 1);
    assert_string_equal(got[0].member, "M1");
    assert_int_equal(got[0].points, 150);
    assert_int_equal(got[0].balance, 150);
    assert_string_equal(got[0].state, "sending");
    assert_int_equal(got[0].attempts, 1);
    /* Claimed notices are no longer pending: a later arrival starts anew. */
    enqueue(s, "M1", 30, 180, 1011, 10);
    assert_int_equal(claim(s, 1016, got), 1);
    assert_string_equal(got[0].member, "M2");
    assert_int_equal(claim(s, 1021, got), 1);
    assert_int_equal(got[0].points, 30);
    /* Without a window every notice is its own and due at once. */
    enqueue(s, "M3", 1, 1, 2000, 0);
    enqueue(s, "M3", 2, 3, 2000, 0);
    assert_int_equal(claim(s, 2000, got), 2);
    pgw_store_close(s);
}

static void test_crash_and_retry(void **state)
{
    pgw_store *s = open_store(state);
    pgw_err err;
    pgw_notice got[8];
    enqueue(s, "M1", 10, 10, 1000, 0);
    assert_int_equal(claim(s, 1000, got), 1);
    int64_t n = 0;
    assert_int_equal(pgw_store_unclaim_notices(s, 1001, &n, &err), PGW_OK);
    assert_int_equal(n, 1);
    assert_int_equal(claim(s, 1001, got), 1); /* sent again after the "crash" */
    assert_int_equal(got[0].attempts, 2);
    assert_int_equal(pgw_store_retry_notice(s, got[0].id, 1002, &err), PGW_ESTATE);
    snprintf(got[0].state, sizeof(got[0].state), "dead");
    snprintf(got[0].last_error, sizeof(got[0].last_error), "wechat_oa: errcode -1");
    assert_int_equal(pgw_store_finish_notice(s, &got[0], 1002, &err), PGW_OK);
    assert_int_equal(claim(s, 5000, got), 0); /* the dead stay dead */
    assert_int_equal(pgw_store_retry_notice(s, 999, 1003, &err), PGW_ENOTFOUND);
    pgw_notice listed[4];
    size_t count = 0;
    assert_int_equal(pgw_store_member_notices(s, "M1", listed, 4, &count, &err), PGW_OK);
    assert_int_equal(count, 1);
    assert_int_equal(pgw_store_retry_notice(s, listed[0].id, 1003, &err), PGW_OK);
    assert_int_equal(claim(s, 1003, got), 1);
    assert_int_equal(got[0].attempts, 1);
    assert_string_equal(got[0].last_error, "");
    assert_int_equal(pgw_store_outbox_depth(s, &n, &err), PGW_OK);
    assert_int_equal(n, 1); /* in hand */
    pgw_store_close(s);
}

static void test_quota_taken_once(void **state)
{
    pgw_store *s = open_store(state);
    pgw_err err;
    int64_t quota = 0;
    bool taken = false;
    assert_int_equal(pgw_store_begin(s, &err), PGW_OK);
    assert_int_equal(pgw_store_add_quota(s, "M1", "tpl", 1, &quota, &err), PGW_OK);
    assert_int_equal(pgw_store_commit(s, &err), PGW_OK);
    assert_int_equal(pgw_store_take_quota(s, "M1", "tpl", &taken, &err), PGW_OK);
    assert_true(taken);
    assert_int_equal(pgw_store_take_quota(s, "M1", "tpl", &taken, &err), PGW_OK);
    assert_false(taken);
    assert_int_equal(pgw_store_take_quota(s, "M2", "tpl", &taken, &err), PGW_OK);
    assert_false(taken);
    pgw_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_coalescing_window, db_fixture_setup,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_crash_and_retry, db_fixture_setup,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_quota_taken_once, db_fixture_setup,
                                        db_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
