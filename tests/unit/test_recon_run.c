/*
 * test_recon_run.c - a reconciliation run over a real store: a whole
 * channel (the log gives it shop by shop, so its side is sorted first), one
 * shop, the time range, and the report's summary.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "server/reconcile.h"
#include "util/csv.h"

#include "db_fixture.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1795486500 /* 2026-11-24T10:15:00+08:00 */

/* Records an event as the writer does: its columns in its key's row. */
static void log_event(pgw_store *s, const char *channel, const char *shop, const char *id,
                      const pgw_event_record *r)
{
    char key[PGW_IDEM_KEY_MAX + 1];
    pgw_store_event_key(key, channel, shop, id);
    uint8_t fingerprint[PGW_HASH_LEN] = {0};
    bool replayed = true;
    pgw_idem_record existing;
    assert_int_equal(
        pgw_store_record_key(s, key, fingerprint, 0, 0, 1, "{}", r, &replayed, &existing, NULL),
        PGW_OK);
    assert_false(replayed);
}

/* Events of two shops whose ids interleave: by shop they are A, C, E | B, D. */
static void log_events(const db_fixture *db)
{
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, true, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_begin(s, NULL), PGW_OK);
    static const struct {
        const char *shop, *id;
        int64_t points;
    } events[] = {{"S001", "A", 10}, {"S001", "C", 30}, {"S001", "E", 50},
                  {"S002", "B", 20}, {"S002", "D", 40}, {"S003", "Z", 99}};
    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        pgw_event_record r = {.type = "purchase", .member = "M1"};
        r.occurred_at = T0 + (int64_t)i * 3600;
        r.amount_fen = events[i].points * 100;
        r.points = events[i].points;
        log_event(s, "store", events[i].shop, events[i].id, &r);
    }
    pgw_event_record wechat = {.type = "sign_in", .member = "M1", .occurred_at = T0, .points = 5};
    log_event(s, "wechat_mp", "", "A", &wechat);
    assert_int_equal(pgw_store_commit(s, NULL), PGW_OK);
    pgw_store_close(s);
}

static size_t listed;           /* exceptions_max of the next run (0: all) */
static pgw_recon_format format; /* of the next run's report */
static bool csv_summary;        /* of the next run's report */

static int run(const db_fixture *db, const char *statement, const char *shop, int64_t to,
               pgw_recon_summary *sum, char **report)
{
    pgw_tz tz;
    assert_int_equal(pgw_tz_lookup("Asia/Shanghai", &tz, NULL), PGW_OK);
    pgw_recon_options o = {.filter = {"store", shop, 0, to}, .tz = &tz, .exceptions_max = listed};
    o.format = format;
    o.csv_summary = csv_summary;
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(statement, strlen(statement), &st, NULL), PGW_OK);
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_begin_read(s, NULL), PGW_OK);
    size_t len = 0;
    FILE *out = open_memstream(report, &len);
    pgw_err err;
    int rc = pgw_recon_run(s, st, &o, out, sum, &err);
    fclose(out);
    pgw_store_rollback(s, NULL);
    pgw_store_close(s);
    pgw_statement_free(st);
    return rc;
}

static const char HEADER[] = "event_id,occurred_at,type,member,amount_fen,points\n";

static void test_a_whole_channel_in_event_id_order(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,10\n"
             "B,%d,purchase,member_id:M1,2000,20\n"
             "C,%d,purchase,member_id:M1,3000,30\n"
             "D,%d,purchase,member_id:M1,4000,41\n"
             "E,%d,purchase,member_id:M1,5000,50\n"
             "Z,%d,purchase,member_id:M1,9900,99\n",
             HEADER, T0, T0 + 3 * 3600, T0 + 3600, T0 + 4 * 3600, T0 + 2 * 3600, T0 + 5 * 3600);
    pgw_recon_summary sum;
    char *report = NULL;
    assert_int_equal(run(db, statement, NULL, INT64_MAX, &sum, &report), PGW_OK);
    /* Every shop's events of the channel, none of another channel's. */
    assert_int_equal(sum.ledger_rows, 6);
    assert_int_equal(sum.count[PGW_RECON_MATCHED], 5);
    assert_int_equal(sum.count[PGW_RECON_POINTS_MISMATCH], 1); /* D */
    assert_int_equal(sum.ledger_points, 10 + 20 + 30 + 40 + 50 + 99);
    assert_non_null(strstr(report, "\"event_id\":\"D\",\"kind\":\"points_mismatch\""));
    assert_non_null(strstr(report, "\"shop_id\":\"S002\""));
    free(report);
    /* One shop: the others' rows are missing from its log. */
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    assert_int_equal(sum.ledger_rows, 3);
    assert_int_equal(sum.count[PGW_RECON_MATCHED], 3);
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_LEDGER], 3);
    free(report);
    /* A time range: events from the fourth hour on are left out. */
    assert_int_equal(run(db, statement, NULL, T0 + 3 * 3600, &sum, &report), PGW_OK);
    assert_int_equal(sum.ledger_rows, 3);                     /* A, C, E */
    assert_int_equal(sum.count[PGW_RECON_OUTSIDE_PERIOD], 3); /* B, D, Z: so are their rows */
    free(report);
}

/* Regression: one shop's events come from the database in event_id order,
 * which must be byte order (the matcher's): a database sorting text like
 * en-US (a1, A2, b0, B1) made the ledger look out of order. The test
 * databases on PostgreSQL sort that way (db_fixture.h). */
static void test_one_shop_mixed_case_ids(void **state)
{
    const db_fixture *db = *state;
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, true, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_begin(s, NULL), PGW_OK);
    static const char *const ids[] = {"a1", "A2", "b0", "B1"};
    for (size_t i = 0; i < 4; i++) {
        pgw_event_record r = {.type = "purchase",
                              .member = "M1",
                              .occurred_at = T0,
                              .amount_fen = 1000,
                              .points = 10};
        log_event(s, "store", "S004", ids[i], &r);
    }
    assert_int_equal(pgw_store_commit(s, NULL), PGW_OK);
    pgw_store_close(s);
    char statement[512];
    snprintf(statement, sizeof(statement),
             "%sA2,%d,purchase,member_id:M1,1000,10\nB1,%d,purchase,member_id:M1,1000,10\n"
             "a1,%d,purchase,member_id:M1,1000,10\nb0,%d,purchase,member_id:M1,1000,10\n",
             HEADER, T0, T0, T0, T0);
    pgw_recon_summary sum;
    char *report = NULL;
    assert_int_equal(run(db, statement, "S004", INT64_MAX, &sum, &report), PGW_OK);
    assert_int_equal(sum.count[PGW_RECON_MATCHED], 4);
    free(report);
}

/* Regressions: a statement in another encoding (GBK) or a long CJK type
 * made the JSON report fail as a whole; now those are malformed rows. And
 * exactly exceptions_max exceptions are not "truncated". */
static void test_bad_text_is_a_malformed_row(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,10\n"
             "X1,%d,purchase,member_id:\xd5\xc5\xc8\xfd,1000,10\n"
             "X2,%d,一二三四五六七八九十一二三四五六七八九十,member_id:M1,1000,10\n",
             HEADER, T0, T0, T0);
    pgw_recon_summary sum;
    char *report = NULL;
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 2);
    assert_non_null(strstr(report, "field 4 is not UTF-8"));
    assert_non_null(strstr(report, "\"truncated\":false"));
    free(report);
    listed = 4; /* exactly as many as there are: all listed, nothing left out */
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    assert_non_null(strstr(report, "\"exceptions_listed\":4,\"truncated\":false"));
    free(report);
    listed = 3;
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    assert_non_null(strstr(report, "\"exceptions_listed\":3,\"truncated\":true"));
    free(report);
    listed = 0;
}

/* Regression: the shop_id "-" (an event without a shop, as a statement's
 * shop_id column and --shop write it) went out in a CSV report as "'-",
 * taken for a formula: a filter on the column's "-" found none of them.
 * A lone "-" runs as nothing in a spreadsheet; "-1+2" still goes as text. */
static void test_no_shop_is_written_as_a_dash(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "event_id,occurred_at,type,member,amount_fen,points,shop_id\n"
             "Q,%d,sign_in,,,5,-\n-1+2,%d,sign_in,,,5,-\n",
             T0, T0);
    pgw_recon_summary sum;
    char *report = NULL;
    format = PGW_RECON_CSV;
    assert_int_equal(run(db, statement, NULL, INT64_MAX, &sum, &report), PGW_OK);
    format = PGW_RECON_JSON;
    if (strstr(report, "\nmissing_in_ledger,Q,2,-,") == NULL)
        fail_msg("no shop is not \"-\": %s", strchr(report, '\n'));
    assert_non_null(strstr(report, "\nmissing_in_ledger,\"'-1+2\",3,-,"));
    free(report);
}

/* Regression: a CSV report cut at exceptions_max (HTTP's 10,000) without
 * summary rows was the first rows alone, nothing saying others were left
 * out: finance took it for the whole. It ends with the two rows that say
 * so, as the summary rows have them; one not cut stays exceptions alone. */
static void test_a_cut_csv_report_says_so(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sX1,%d,purchase,,1000,10\nX2,%d,purchase,,1000,10\nX3,%d,purchase,,1000,10\n",
             HEADER, T0, T0, T0);
    pgw_recon_summary sum;
    char *report = NULL;
    format = PGW_RECON_CSV;
    listed = 2; /* of 6: X1..X3 missing in the log, A, C, E from the statement */
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    const char *end = strstr(report, "\nexceptions_listed,2,");
    if (end == NULL || strstr(end, "\ntruncated,true,") == NULL)
        fail_msg("a cut CSV does not say so: %s", report);
    assert_null(strstr(report, "statement_rows,"));
    free(report);
    listed = 6; /* exactly all: nothing cut, nothing added */
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    assert_null(strstr(report, "truncated,"));
    assert_null(strstr(report, "exceptions_listed,"));
    free(report);
    listed = 0;
    format = PGW_RECON_JSON;
}

/* Regression: API.md's exception is {"event_id", "kind", "statement",
 * "ledger"}, a side it has not null; a malformed_row's left both keys out
 * (one that took no event, and one not read), and a client reading
 * exception["statement"] as API.md has it failed on them. */
static void test_every_exception_has_both_sides(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,10\n"
             "C,%d,purchase,member_id:M1,3000,thirty\n"    /* takes C: its ledger side */
             "X,%d,purchse,member_id:M1,1000,10\n"         /* in no shop: none */
             "Y,%d,purchase,member_id:M1,1000,10,extra\n", /* its key not read */
             HEADER, T0, T0 + 3600, T0, T0);
    pgw_recon_summary sum;
    char *report = NULL;
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 3);
    json_t *doc = json_loads(report, 0, NULL);
    assert_non_null(doc);
    json_t *exceptions = json_object_get(doc, "exceptions");
    assert_true(json_array_size(exceptions) >= 4);
    size_t i;
    json_t *e;
    json_array_foreach(exceptions, i, e)
    {
        const char *kind = json_string_value(json_object_get(e, "kind"));
        if (json_object_get(e, "statement") == NULL || json_object_get(e, "ledger") == NULL)
            fail_msg("exception %zu (%s) lacks a side: %s", i, kind, report);
        if (strcmp(kind, "malformed_row") == 0 &&
            strcmp(json_string_value(json_object_get(e, "event_id")), "C") == 0)
            assert_true(json_is_object(json_object_get(e, "ledger")));
    }
    json_decref(doc);
    free(report);
}

/* Regression: a channel or shop that is part of no event's key (a ':', an
 * empty shop) is refused with a reason; the store asserted on them, and
 * took the server down with a finance key's request. A channel named like
 * a channel and a shop read the shop's events as the channel's. */
static void test_a_filter_outside_the_keys_is_refused(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    static const struct {
        const char *channel, *shop, *why;
    } bad[] = {{"store", "S001:E", "is not a shop id"},
               {"store:S001", NULL, "is not a channel name"},
               {"store", "", "is not a shop id"},
               {"Store", NULL, "is not a channel name"},
               {"", NULL, "is not a channel name"},
               {"store", "S0000000000000000000000000000001X", "is not a shop id"}};
    pgw_recon_row rows[8];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pgw_event_filter f = {.channel = bad[i].channel, .shop = bad[i].shop, .to = INT64_MAX};
        size_t n = 99;
        pgw_err err;
        assert_int_equal(pgw_store_read_events(s, &f, "", "", rows, 8, &n, &err), PGW_EINVAL);
        assert_int_equal(n, 0);
        assert_non_null(strstr(err.msg, bad[i].why));
    }
    pgw_event_filter good = {.channel = "store", .shop = "S002", .to = INT64_MAX};
    size_t n = 0;
    assert_int_equal(pgw_store_read_events(s, &good, "", "", rows, 8, &n, NULL), PGW_OK);
    assert_int_equal(n, 2);
    pgw_store_close(s);
}

/* The finance review: a row naming another member, type or time than its
 * event was matched. The member by id, following merges both ways (the
 * log records the survivor of its day); the time as an instant, in any
 * offset; a phone is not compared (the log has the member's id). */
static void test_member_type_and_time_are_compared(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    pgw_store *s = NULL;
    pgw_err err;
    assert_int_equal(pgw_store_open(db->url, true, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_begin(s, NULL), PGW_OK);
    const char *members[] = {"M1", "MOLD", "M7"};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(pgw_store_put_member(s, members[i], 0, 1, &err), PGW_OK);
    assert_int_equal(pgw_store_merge_rows(s, "MOLD", "M1", &err), PGW_OK);
    assert_int_equal(pgw_store_commit(s, NULL), PGW_OK);
    pgw_store_close(s);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sA,2026-11-24T02:15:00Z,purchase,member_id:MOLD,1000,10\n" /* T0, merged id */
             "B,%d,purchase,member_id:M7,2000,20\n"                       /* member_mismatch */
             "C,%d,purchase,phone:13800138000,3000,30\n"                  /* not compared */
             "D,%d,purchase,member_id:M1,4000,40\n"                       /* time_mismatch */
             "E,%d,sign_in,member_id:M1,5000,50\n",                       /* type_mismatch */
             HEADER, T0 + 3 * 3600, T0 + 3600, T0 + 4 * 3600 + 60, T0 + 2 * 3600);
    for (int whole = 0; whole < 2; whole++) { /* the channel sorted, and a shop's pages */
        pgw_recon_summary sum;
        char *report = NULL;
        const char *shop = whole ? NULL : "S001";
        assert_int_equal(run(db, statement, shop, INT64_MAX, &sum, &report), PGW_OK);
        assert_int_equal(sum.count[PGW_RECON_TYPE_MISMATCH], 1);
        if (whole) {
            assert_int_equal(sum.count[PGW_RECON_MATCHED], 2); /* A, C */
            assert_int_equal(sum.count[PGW_RECON_MEMBER_MISMATCH], 1);
            assert_int_equal(sum.count[PGW_RECON_TIME_MISMATCH], 1);
            assert_non_null(strstr(report, "\"event_id\":\"B\",\"kind\":\"member_mismatch\""));
            assert_non_null(strstr(report, "\"event_id\":\"D\",\"kind\":\"time_mismatch\""));
            assert_non_null(strstr(report, "\"member_mismatch\":1}"));
        } else {
            assert_int_equal(sum.count[PGW_RECON_MATCHED], 2); /* A, C; B and D S002's */
        }
        assert_non_null(strstr(report, "\"event_id\":\"E\",\"kind\":\"type_mismatch\""));
        /* The statement side's member id, beside the ledger side's. */
        assert_non_null(strstr(report, "\"line\":3,\"member_id\":\"M7\"}"));
        free(report);
    }
}

/* The finance review: a channel's statement has no shop column, so two
 * shops' events with one event_id were one row matched against the
 * first and a duplicate (the other shop's event missing_in_statement).
 * With the optional shop_id column each row matches its own shop's. */
static void test_a_shop_id_column_keys_rows_by_shop(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, true, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_begin(s, NULL), PGW_OK);
    for (int i = 0; i < 2; i++) {
        pgw_event_record r = {.type = "purchase", .member = "M1", .occurred_at = T0};
        r.amount_fen = 1000 * (i + 1);
        r.points = 10 * (i + 1);
        log_event(s, "store", i ? "S002" : "S001", "X", &r);
    }
    assert_int_equal(pgw_store_commit(s, NULL), PGW_OK);
    pgw_store_close(s);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "event_id,shop_id,occurred_at,type,member,amount_fen,points\n"
             "X,S002,%d,purchase,member_id:M1,2000,20\n"
             "X,S001,%d,purchase,member_id:M1,1000,10\n"
             "A,S001,%d,purchase,member_id:M1,1000,10\n"
             "B,S001,%d,purchase,member_id:M1,2000,20\n" /* B is S002's */
             "Y,S 1,%d,purchase,member_id:M1,1000,10\n"
             "C,,%d,purchase,member_id:M1,3000,30\n",
             T0, T0, T0, T0 + 3 * 3600, T0, T0 + 3600);
    pgw_recon_summary sum;
    char *report = NULL;
    assert_int_equal(run(db, statement, NULL, INT64_MAX, &sum, &report), PGW_OK);
    assert_int_equal(sum.count[PGW_RECON_MATCHED], 3); /* X twice, A */
    assert_int_equal(sum.count[PGW_RECON_DUPLICATE_IN_STATEMENT], 0);
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_LEDGER], 1);    /* B of S001 */
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_STATEMENT], 5); /* B, D, E, Z; C */
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 2);
    assert_non_null(strstr(report, "shop_id \\\"S 1\\\" is not a shop id"));
    assert_non_null(strstr(report, "shop_id is empty"));
    free(report);
    /* One shop: a row of another is not its to match, nor to repair. */
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    assert_int_equal(sum.count[PGW_RECON_MATCHED], 2); /* X, A */
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_LEDGER], 1);
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 3);
    assert_non_null(strstr(report, "shop_id \\\"S002\\\" is not the shop reconciled, S001"));
    free(report);
}

/* The finance walkthrough: `reconcile --shop S001` left shop_id empty for
 * a row with no event of the log (missing_in_ledger, and a duplicate
 * after its event's row), though the statement is S001's and --repair
 * posts them as S001's. A row without a shop_id column is --shop's, in the
 * CSV's column and the JSON's statement side alike. */
static void test_one_shops_rows_name_its_shop(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,10\n"
             "A,%d,purchase,member_id:M1,1000,10\n"
             "B,%d,purchase,member_id:M1,2000,20\n",
             HEADER, T0, T0, T0);
    pgw_recon_summary sum;
    char *report = NULL;
    format = PGW_RECON_CSV;
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    format = PGW_RECON_JSON;
    assert_int_equal(sum.count[PGW_RECON_DUPLICATE_IN_STATEMENT], 1);
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_LEDGER], 1);
    assert_non_null(strstr(report, "\nduplicate_in_statement,A,3,S001,"));
    assert_non_null(strstr(report, "\nmissing_in_ledger,B,4,S001,"));
    free(report);
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    assert_non_null(strstr(report, "\"event_id\":\"B\",\"kind\":\"missing_in_ledger\","
                                   "\"statement\":{\"occurred_at\":\"2026-11-24T10:15:00+08:00\","
                                   "\"type\":\"purchase\",\"member\":\"member_id:M1\","
                                   "\"amount_fen\":2000,\"points\":20,\"shop_id\":\"S001\","));
    assert_non_null(strstr(report, "\"event_id\":\"A\",\"kind\":\"duplicate_in_statement\","
                                   "\"statement\":{\"occurred_at\":\"2026-11-24T10:15:00+08:00\","
                                   "\"type\":\"purchase\",\"member\":\"member_id:M1\","
                                   "\"amount_fen\":1000,\"points\":10,\"shop_id\":\"S001\","));
    free(report);
    /* A whole channel's statement without the column names no shop. */
    format = PGW_RECON_CSV;
    assert_int_equal(run(db, statement, NULL, INT64_MAX, &sum, &report), PGW_OK);
    format = PGW_RECON_JSON;
    assert_non_null(strstr(report, "\nduplicate_in_statement,A,3,,"));
    free(report);
}

/* The finance review: a refund's ledger side showed only its points; a
 * refund that reversed 60 and wrote off 40 looked like one that reversed
 * 60 of 60. Its written_off is shown with it (null, and an empty cell,
 * when its key's row does not say: recorded before schema 31). */
static void test_a_refunds_ledger_side_says_what_it_wrote_off(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, true, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_begin(s, NULL), PGW_OK);
    static const char *const ids[] = {"R1", "R2"};
    for (size_t i = 0; i < 2; i++) {
        pgw_event_record r = {.type = "refund",
                              .member = "M1",
                              .occurred_at = T0,
                              .amount_fen = 10000,
                              .points = -60,
                              .written_off = 40};
        log_event(s, "store", "S001", ids[i], &r);
    }
    assert_int_equal(
        pgw_store__exec_for_test(
            s, "UPDATE idempotency SET written_off = NULL WHERE key LIKE '%:R2'", NULL),
        PGW_OK);
    assert_int_equal(pgw_store_commit(s, NULL), PGW_OK);
    pgw_store_close(s);
    char statement[512];
    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,11\n"
             "R1,%d,refund,member_id:M1,10000,-100\n"
             "R2,%d,refund,member_id:M1,10000,-100\n",
             HEADER, T0, T0, T0);
    pgw_recon_summary sum;
    char *report = NULL;
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    assert_int_equal(sum.count[PGW_RECON_POINTS_MISMATCH], 3);
    assert_non_null(strstr(report, "\"amount_fen\":10000,\"points\":-60,\"shop_id\":\"S001\","
                                   "\"written_off\":40}"));
    assert_non_null(strstr(report, "\"amount_fen\":10000,\"points\":-60,\"shop_id\":\"S001\","
                                   "\"written_off\":null}"));
    /* Not a refund's: not said at all. */
    assert_non_null(strstr(report, "\"amount_fen\":1000,\"points\":10,\"shop_id\":\"S001\"}"));
    free(report);
}

/* Logs X at S001 (10 points) and at S002 (20): one event_id, two shops. */
static void log_x_at_two_shops(const db_fixture *db)
{
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, true, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_begin(s, NULL), PGW_OK);
    for (int i = 0; i < 2; i++) {
        pgw_event_record r = {.type = "purchase", .member = "M1", .occurred_at = T0};
        r.amount_fen = 1000 * (i + 1);
        r.points = 10 * (i + 1);
        log_event(s, "store", i ? "S002" : "S001", "X", &r);
    }
    assert_int_equal(pgw_store_commit(s, NULL), PGW_OK);
    pgw_store_close(s);
}

/* The finance review: a whole channel's statement without shop_id, whose
 * event_id the log holds at two shops, was paired with the first shop's
 * event, silently (the other missing_in_statement). Neither is taken now:
 * the row is a malformed_row naming both shops, with a warning in the
 * report, and both events are missing_in_statement. */
static void test_an_event_id_at_two_shops_is_not_paired(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    log_x_at_two_shops(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,10\n"
             "X,%d,purchase,member_id:M1,1000,10\n",
             HEADER, T0, T0);
    pgw_recon_summary sum;
    char *report = NULL;
    assert_int_equal(run(db, statement, NULL, INT64_MAX, &sum, &report), PGW_OK);
    assert_int_equal(sum.count[PGW_RECON_MATCHED], 1); /* A */
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 1);
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_STATEMENT], 7); /* B, C, D, E, Z; X twice */
    assert_non_null(strstr(report, "\"warnings\":[{\"event_id\":\"X\",\"line\":3,"
                                   "\"shops\":[\"S001\",\"S002\"]"));
    assert_non_null(strstr(report, "{\"event_id\":\"X\",\"kind\":\"malformed_row\",\"line\":3,"
                                   "\"problem\":\"event_id X is at 2 shops in the log (S001, "
                                   "S002)"));
    assert_null(strstr(report, "\"event_id\":\"X\",\"kind\":\"matched\""));
    free(report);
    /* One shop's, or a statement naming each row's shop: no doubt, no warning. */
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    assert_int_equal(sum.count[PGW_RECON_MATCHED], 2);
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 0);
    assert_non_null(strstr(report, "\"warnings\":[]"));
    free(report);
}

/* The finance review: in the CSV, statement_member was the row's text
 * (member_id:M7) and ledger_member the bare id (M1), so a spreadsheet
 * could not compare them. A member id is written bare on both sides; the
 * row's text as it was is in the last column. */
static void test_csv_members_compare(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sB,%d,purchase,member_id:M7,2000,20\n"
             "C,%d,purchase,phone:13800138000,3000,31\n",
             HEADER, T0 + 3 * 3600, T0 + 3600);
    pgw_tz tz;
    assert_int_equal(pgw_tz_lookup("Asia/Shanghai", &tz, NULL), PGW_OK);
    pgw_recon_options o = {
        .filter = {"store", NULL, 0, INT64_MAX}, .tz = &tz, .format = PGW_RECON_CSV};
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(statement, strlen(statement), &st, NULL), PGW_OK);
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_begin_read(s, NULL), PGW_OK);
    char *report = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&report, &len);
    pgw_recon_summary sum;
    assert_int_equal(pgw_recon_run(s, st, &o, out, &sum, NULL), PGW_OK);
    fclose(out);
    pgw_store_rollback(s, NULL);
    pgw_store_close(s);
    pgw_statement_free(st);
    /* B: M7 against M1, both bare; as written last. */
    assert_non_null(strstr(report, "member_mismatch,B,2,S002,"));
    assert_non_null(strstr(report, ",purchase,purchase,M7,M1,2000,2000,20,20,,,"));
    assert_non_null(strstr(report, ",statement_member_as_written\n"));
    assert_non_null(strstr(report, ",member_id:M7\n"));
    /* C: a phone is no member id: as written in both. */
    assert_non_null(strstr(report, ",purchase,purchase,phone:13800138000,M1,3000,3000,31,30,"));
    assert_non_null(strstr(report, ",phone:13800138000\n"));
    free(report);
}

/* Each statement row in one category, each ledger row matched by one row
 * or missing_in_statement: the sum of the categories is the statement's
 * rows and the events no row took. */
static void assert_totals(const pgw_recon_summary *sum)
{
    int64_t rows = 0;
    for (size_t k = 0; k < PGW_RECON_KINDS; k++)
        rows += sum->count[k];
    assert_int_equal(rows, sum->statement_rows + sum->count[PGW_RECON_MISSING_IN_STATEMENT]);
}

/* The pairs and the exceptions of one run of `statement` against S001's
 * events (A, C, E), or the whole channel's (shop NULL). */
static void run_counted(const db_fixture *db, const char *statement, const char *shop,
                        pgw_recon_summary *sum, char **report)
{
    assert_int_equal(run(db, statement, shop, INT64_MAX, sum, report), PGW_OK);
    assert_totals(sum);
}

/* Finance's walkthrough: a row the gateway could not read (its points,
 * "thirty") but whose event_id it could was a malformed_row, and its
 * event, in the log, missing_in_statement too: one row counted twice. It
 * now takes its event (a) and shows it as the ledger side; a key the log
 * does not have (d) takes nothing, as before. */
static void test_an_unreadable_rows_event_is_not_missing(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,10\n"
             "C,%d,purchase,member_id:M1,3000,thirty\n"
             "X,%d,purchase,member_id:M1,3000,thirty\n",
             HEADER, T0, T0 + 3600, T0);
    pgw_recon_summary sum;
    char *report = NULL;
    run_counted(db, statement, "S001", &sum, &report);
    assert_int_equal(sum.statement_rows, 3);
    assert_int_equal(sum.ledger_rows, 3);
    assert_int_equal(sum.count[PGW_RECON_MATCHED], 1);
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 2);        /* C, X */
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_STATEMENT], 1); /* E alone */
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_LEDGER], 0);
    assert_int_equal(sum.statement_points, 10); /* the readable row's */
    assert_null(strstr(report, "\"event_id\":\"C\",\"kind\":\"missing_in_statement\""));
    assert_non_null(strstr(report, "\"event_id\":\"C\",\"kind\":\"malformed_row\",\"line\":3,"));
    assert_non_null(strstr(report, "\"ledger\":{\"occurred_at\":\"2026-11-24T11:15:00+08:00\""));
    assert_non_null(strstr(report, "\"event_id\":\"X\",\"kind\":\"malformed_row\",\"line\":4,"
                                   "\"problem\":\"points \\\"thirty\\\" is not a whole number "
                                   "in range\",\"statement\":null,\"ledger\":null}"));
    free(report);
    format = PGW_RECON_CSV;
    run_counted(db, statement, "S001", &sum, &report);
    format = PGW_RECON_JSON;
    assert_non_null(
        strstr(report, "malformed_row,C,3,S001,,2026-11-24T11:15:00+08:00,,purchase,,M1,,3000,,30,"
                       "\"points \"\"thirty\"\" is not"));
    assert_null(strstr(report, "missing_in_statement,C,"));
    free(report);
}

/* The reverted attempt (43b2871): a readable row after an unreadable one
 * of its key was duplicate_in_statement and its event not compared. The
 * readable row takes the event wherever the unreadable one is (b, c), as
 * a mismatch when it differs; the unreadable one is a malformed_row only. */
static void test_a_readable_row_takes_its_event_before_an_unreadable_one(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    static const char BAD[] = "C,%d,purchase,member_id:M1,3000,thirty\n";
    static const char GOOD[] = "C,%d,purchase,member_id:M1,3000,%d\n";
    for (size_t bad_first = 0; bad_first < 2; bad_first++) {
        for (int points = 30; points <= 31; points++) {
            char bad[128], good[128], statement[1024];
            snprintf(bad, sizeof(bad), BAD, T0 + 3600);
            snprintf(good, sizeof(good), GOOD, T0 + 3600, points);
            char rows[256];
            snprintf(rows, sizeof(rows), "%s%s", bad_first ? bad : good, bad_first ? good : bad);
            snprintf(statement, sizeof(statement), "%sA,%d,purchase,member_id:M1,1000,10\n%s",
                     HEADER, T0, rows);
            pgw_recon_summary sum;
            char *report = NULL;
            run_counted(db, statement, "S001", &sum, &report);
            assert_int_equal(sum.count[PGW_RECON_MATCHED], points == 30 ? 2 : 1);
            assert_int_equal(sum.count[PGW_RECON_POINTS_MISMATCH], points == 30 ? 0 : 1);
            assert_int_equal(sum.count[PGW_RECON_DUPLICATE_IN_STATEMENT], 0);
            assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 1);
            assert_int_equal(sum.count[PGW_RECON_MISSING_IN_STATEMENT], 1); /* E */
            assert_int_equal(sum.statement_points, 10 + points);
            /* The malformed row is shown without the event: the readable row has it. */
            assert_non_null(strstr(report, "\"kind\":\"malformed_row\",\"line\":"));
            assert_null(strstr(report, "in range\",\"ledger\""));
            free(report);
        }
    }
}

/* Where an unreadable row is in the file does not change what it takes:
 * one after its place (the statement sorted first), two of one key (the
 * first takes the event), one of a statement keyed by shop (its shop's
 * event, not another's). A row whose fields do not line up with the
 * header (a field too few) may have its columns shifted: its event_id is
 * not trusted, and it takes nothing. */
static void test_where_an_unreadable_row_is_does_not_matter(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,10\n"
             "E,%d,purchase,member_id:M1,5000,50\n"
             "C,%d,purchase,member_id:M1,3000,thirty\n"
             "C,%d,purchase,member_id:M1,3000,3O\n",
             HEADER, T0, T0 + 2 * 3600, T0 + 3600, T0 + 3600);
    pgw_recon_summary sum;
    char *report = NULL;
    run_counted(db, statement, "S001", &sum, &report);
    assert_int_equal(sum.count[PGW_RECON_MATCHED], 2);
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 2);
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_STATEMENT], 0);
    assert_non_null(strstr(report,
                           "\"kind\":\"malformed_row\",\"line\":4,\"problem\":\"points "
                           "\\\"thirty\\\" is not a whole number in range\",\"statement\":null,"
                           "\"ledger\":{"));
    free(report);

    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,10\n"
             "C,purchase,member_id:M1,3000,30\n",
             HEADER, T0);
    run_counted(db, statement, "S001", &sum, &report);
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 1);
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_STATEMENT], 2); /* C, E */
    free(report);

    /* Keyed by shop, the whole channel: B of S002 takes S002's B; B of
     * S001 (no such event) and a row whose shop cannot be read take none. */
    snprintf(statement, sizeof(statement),
             "event_id,shop_id,occurred_at,type,member,amount_fen,points\n"
             "A,S001,%d,purchase,member_id:M1,1000,10\n"
             "B,S001,%d,purchase,member_id:M1,2000,twenty\n"
             "B,S002,%d,purchase,member_id:M1,2000,twenty\n"
             "C,S001,%d,purchase,member_id:M1,3000,30\n"
             "D,S0:2,%d,purchase,member_id:M1,4000,forty\n"
             "E,S001,%d,purchase,member_id:M1,5000,50\n"
             "Z,S003,%d,purchase,member_id:M1,9900,99\n",
             T0, T0 + 3 * 3600, T0 + 3 * 3600, T0 + 3600, T0 + 4 * 3600, T0 + 2 * 3600,
             T0 + 5 * 3600);
    run_counted(db, statement, NULL, &sum, &report);
    assert_int_equal(sum.count[PGW_RECON_MATCHED], 4);
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 3);
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_STATEMENT], 1); /* D */
    assert_non_null(strstr(report, "\"event_id\":\"D\",\"kind\":\"missing_in_statement\""));
    free(report);
}

/* Regression (the finance analyst): a till's statement, its times local
 * (the mall's zone, the run's) or with a space for the "T", its amounts
 * grouped by thousands, was all malformed rows and its events all
 * missing_in_statement. Its rows are read as they mean, and match. */
static void test_a_tills_times_and_amounts_match(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    const char *statement = "event_id,occurred_at,type,member,amount_fen,points\n"
                            "A,2026-11-24 10:15:00,purchase,member_id:M1,\"1,000\",10\n"
                            "C,2026-11-24T11:15:00,purchase,member_id:M1,\"3,000\",30\n"
                            "E,2026-11-24 12:15:00+08:00,purchase,member_id:M1,\"5,000\",50\n";
    pgw_recon_summary sum;
    char *report = NULL;
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    if (sum.count[PGW_RECON_MATCHED] != 3)
        fail_msg("%s", report);
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 0);
    assert_int_equal(sum.count[PGW_RECON_MISSING_IN_STATEMENT], 0);
    free(report);
}

/* Regression: a statement row dated where the mall's zone cannot write it
 * (9999-12-31T23:59:59Z is 10000-01-01 in Shanghai) was listed with an
 * empty occurred_at (the formatter's PGW_ERANGE ignored): a reader saw a
 * row of no time. It is a malformed_row saying why, in JSON and CSV. */
static void test_a_row_past_the_zones_years_is_malformed(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    const char *statement = "event_id,occurred_at,type,member,amount_fen,points\n"
                            "A,1795486500,purchase,member_id:M1,1000,10\n"
                            "X1,253402300799,purchase,member_id:M1,100,1\n"
                            "X2,9999-12-31T23:59:59-14:00,purchase,member_id:M1,100,1\n"
                            "X3,9999-12-31T15:59:59Z,purchase,member_id:M1,100,1\n";
    for (int csv = 0; csv < 2; csv++) {
        format = csv ? PGW_RECON_CSV : PGW_RECON_JSON;
        pgw_recon_summary sum;
        char *report = NULL;
        assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
        if (sum.count[PGW_RECON_MALFORMED_ROW] != 2 ||
            sum.count[PGW_RECON_MISSING_IN_LEDGER] != 1 ||
            strstr(report, "is outside the years 1970..9999 in the mall's zone (Asia/Shanghai)") ==
                NULL ||
            strstr(report, "\"occurred_at\":\"\"") != NULL)
            fail_msg("%s", report);
        /* The last second the zone writes is a row's time still. */
        assert_non_null(strstr(report, "9999-12-31T23:59:59+08:00"));
        free(report);
    }
    format = PGW_RECON_JSON;
}

/* An event the zone cannot write (no writer dates one past 9999; a
 * database written otherwise could) stops the report, naming it, rather
 * than list it with an empty occurred_at. */
static void test_an_event_past_the_zones_years_stops_the_report(void **state)
{
    const db_fixture *db = *state;
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, true, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_begin(s, NULL), PGW_OK);
    pgw_event_record r = {.type = "purchase",
                          .member = "M1",
                          .occurred_at = INT64_C(253402300799),
                          .amount_fen = 100,
                          .points = 1};
    log_event(s, "store", "S001", "LATE", &r);
    assert_int_equal(pgw_store_commit(s, NULL), PGW_OK);
    pgw_store_close(s);
    pgw_tz tz;
    assert_int_equal(pgw_tz_lookup("Asia/Shanghai", &tz, NULL), PGW_OK);
    pgw_recon_options o = {.filter = {"store", "S001", 0, INT64_MAX}, .tz = &tz};
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(HEADER, strlen(HEADER), &st, NULL), PGW_OK);
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_begin_read(s, NULL), PGW_OK);
    FILE *out = fopen("/dev/null", "w");
    pgw_recon_summary sum;
    pgw_err err;
    assert_int_equal(pgw_recon_run(s, st, &o, out, &sum, &err), PGW_ERANGE);
    assert_string_equal(err.msg, "the ledger's event \"LATE\": occurred_at 253402300799 is outside "
                                 "the years 1970..9999 in the mall's zone (Asia/Shanghai)");
    fclose(out);
    pgw_store_rollback(s, NULL);
    pgw_store_close(s);
    pgw_statement_free(st);
}

/*
 * The finance walkthrough: a CSV report was its exceptions alone, so a
 * clean match was its header alone, which finance could not tell from an
 * empty or failed export, and the totals were the JSON report's only. It
 * ends with summary rows now, as the settlement's CSV does: each a row as
 * wide as the header, its name first, a value second, a figure under the
 * column it belongs to. Each kind's rows carry their points under the
 * statement_points and ledger_points columns, so the totals' difference
 * reads off them; the JSON report has the same, beside its summary.
 */
/* In a CSV report, every kind's listed exceptions' points add up to what
 * its summary row says (statement_points, ledger_points), when all are
 * listed: finance totals the exceptions and compares. */
static void assert_exceptions_add_up(const char *report)
{
    int64_t listed_points[PGW_RECON_KINDS][2] = {{0}};
    static pgw_csv_row row;
    pgw_csv csv;
    pgw_csv_init(&csv, report, strlen(report));
    bool done = false;
    size_t summaries = 0;
    while (pgw_csv_next(&csv, &row, &done, NULL) == PGW_OK && !done) {
        for (size_t k = 0; k < PGW_RECON_KINDS; k++) {
            const char *name = pgw_recon_kind_name((pgw_recon_kind)k);
            size_t len = strlen(name);
            int64_t s = strtoll(row.fields[12], NULL, 10), l = strtoll(row.fields[13], NULL, 10);
            if (strcmp(row.fields[0], name) == 0) { /* an exception of kind k */
                listed_points[k][0] += s;
                listed_points[k][1] += l;
            } else if (strncmp(row.fields[0], name, len) == 0 &&
                       strcmp(row.fields[0] + len, "_rows") == 0 && k != PGW_RECON_MATCHED) {
                summaries++;
                if (s != listed_points[k][0] || l != listed_points[k][1])
                    fail_msg("%s: the summary says %lld and %lld points, its exceptions %lld "
                             "and %lld:\n%s",
                             name, (long long)s, (long long)l, (long long)listed_points[k][0],
                             (long long)listed_points[k][1], report);
            }
        }
    }
    assert_true(done);
    assert_int_equal(summaries, PGW_RECON_KINDS - 1);
}

/* Regression: a whole channel's statement row keyed by event_id alone,
 * paired with none as its event_id is at two shops, is read: its points
 * are in statement_points and in malformed_row's, but its exception showed
 * none of them (the CSV's statement_points empty, the JSON no statement
 * side), so finance's exceptions did not add up to the summary. */
static void test_an_unpaired_rows_points_are_listed(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    log_x_at_two_shops(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,10\n"
             "X,%d,purchase,member_id:M1,1000,10\n",
             HEADER, T0, T0);
    pgw_recon_summary sum;
    char *report = NULL;
    format = PGW_RECON_CSV;
    csv_summary = true;
    assert_int_equal(run(db, statement, NULL, INT64_MAX, &sum, &report), PGW_OK);
    format = PGW_RECON_JSON;
    csv_summary = false;
    assert_int_equal(sum.count[PGW_RECON_MALFORMED_ROW], 1);
    assert_int_equal(sum.statement_points_of[PGW_RECON_MALFORMED_ROW], 10);
    assert_exceptions_add_up(report);
    free(report);
    assert_int_equal(run(db, statement, NULL, INT64_MAX, &sum, &report), PGW_OK);
    const char *x = strstr(report, "{\"event_id\":\"X\",\"kind\":\"malformed_row\"");
    assert_non_null(x);
    const char *points = strstr(x, "\"statement\":{\"occurred_at\":\"2026-11-24T10:15:00+08:00\","
                                   "\"type\":\"purchase\",\"member\":\"member_id:M1\","
                                   "\"amount_fen\":1000,\"points\":10,");
    if (points == NULL || points > strchr(x, '\n'))
        fail_msg("no statement side in X's exception: %s", x);
    free(report);
}

static void test_a_csv_report_ends_with_its_summary(void **state)
{
    const db_fixture *db = *state;
    log_events(db);
    char statement[1024];
    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,10\n"
             "C,%d,purchase,member_id:M1,3000,30\n"
             "E,%d,purchase,member_id:M1,5000,50\n",
             HEADER, T0, T0 + 3600, T0 + 7200);
    pgw_recon_summary sum;
    char *report = NULL;
    format = PGW_RECON_CSV;
    /* Not asked for, none: API.md's CSV is one exception per row. */
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    assert_string_equal(strchr(report, '\n') + 1, "");
    free(report);
    csv_summary = true;
    assert_int_equal(run(db, statement, "S001", INT64_MAX, &sum, &report), PGW_OK);
    const char *tail = strchr(report, '\n') + 1; /* after the header: no exception */
    assert_string_equal(tail, "statement_rows,3,,,,,,,,,,,,,,,,\n"
                              "ledger_rows,3,,,,,,,,,,,,,,,,\n"
                              "matched_rows,3,,,,,,,,,,,90,90,,,,\n"
                              "points_mismatch_rows,0,,,,,,,,,,,0,0,,,,\n"
                              "amount_mismatch_rows,0,,,,,,,,,,,0,0,,,,\n"
                              "missing_in_ledger_rows,0,,,,,,,,,,,0,0,,,,\n"
                              "missing_in_statement_rows,0,,,,,,,,,,,0,0,,,,\n"
                              "duplicate_in_statement_rows,0,,,,,,,,,,,0,0,,,,\n"
                              "malformed_row_rows,0,,,,,,,,,,,0,0,,,,\n"
                              "outside_period_rows,0,,,,,,,,,,,0,0,,,,\n"
                              "type_mismatch_rows,0,,,,,,,,,,,0,0,,,,\n"
                              "time_mismatch_rows,0,,,,,,,,,,,0,0,,,,\n"
                              "member_mismatch_rows,0,,,,,,,,,,,0,0,,,,\n"
                              "total,points_equal,,,,,,,,,,,90,90,,,,\n"
                              "exceptions_listed,0,,,,,,,,,,,,,,,,\n"
                              "truncated,false,,,,,,,,,,,,,,,,\n"
                              "from,1970-01-01T08:00:00+08:00,,,,,,,,,,,,,,,,\n"
                              "to,,,,,,,,,,,,,,,,,\n");
    free(report);
    /* Mixed: 48 - 90 = 1 (C's points) + 7 (X, not in the log) - 50 (E, not
     * in the statement), listed two of three, the period closed. */
    snprintf(statement, sizeof(statement),
             "%sA,%d,purchase,member_id:M1,1000,10\n"
             "C,%d,purchase,member_id:M1,3000,31\n"
             "X,%d,purchase,member_id:M1,700,7\n",
             HEADER, T0, T0 + 3600, T0 + 3600);
    listed = 2;
    assert_int_equal(run(db, statement, "S001", T0 + 86400, &sum, &report), PGW_OK);
    assert_non_null(strstr(report, "\nmatched_rows,1,,,,,,,,,,,10,10,,,,\n"));
    assert_non_null(strstr(report, "\npoints_mismatch_rows,1,,,,,,,,,,,31,30,,,,\n"));
    assert_non_null(strstr(report, "\nmissing_in_ledger_rows,1,,,,,,,,,,,7,0,,,,\n"));
    assert_non_null(strstr(report, "\nmissing_in_statement_rows,1,,,,,,,,,,,0,50,,,,\n"));
    assert_non_null(strstr(report, "\ntotal,points_differ,,,,,,,,,,,48,90,,,,\n"
                                   "exceptions_listed,2,,,,,,,,,,,,,,,,\n"
                                   "truncated,true,,,,,,,,,,,,,,,,\n"
                                   "from,1970-01-01T08:00:00+08:00,,,,,,,,,,,,,,,,\n"
                                   "to,2026-11-25T10:15:00+08:00,,,,,,,,,,,,,,,,\n"));
    free(report);
    format = PGW_RECON_JSON;
    csv_summary = false;
    assert_int_equal(run(db, statement, "S001", T0 + 86400, &sum, &report), PGW_OK);
    listed = 0;
    /* The summary as it was; the breakdown after it, every kind. */
    assert_non_null(strstr(report, "{\"summary\":{\"statement_rows\":3,\"ledger_rows\":3,"
                                   "\"statement_points\":48,\"ledger_points\":90,\"matched\":1,"));
    assert_non_null(strstr(report,
                           "},\"points_by_kind\":{\"matched\":{\"statement_points\":10,"
                           "\"ledger_points\":10},\"points_mismatch\":{\"statement_points\":"
                           "31,\"ledger_points\":30},\"amount_mismatch\":{"));
    assert_non_null(strstr(report, "\"missing_in_statement\":{\"statement_points\":0,"
                                   "\"ledger_points\":50}"));
    assert_non_null(strstr(report, "\"member_mismatch\":{\"statement_points\":0,"
                                   "\"ledger_points\":0}},\"ignored_columns\":[]"));
    free(report);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_shop_mixed_case_ids, db_fixture_setup_migrated,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_whole_channel_in_event_id_order,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_bad_text_is_a_malformed_row, db_fixture_setup_migrated,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_no_shop_is_written_as_a_dash,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_cut_csv_report_says_so, db_fixture_setup_migrated,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_every_exception_has_both_sides,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_filter_outside_the_keys_is_refused,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_member_type_and_time_are_compared,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_shop_id_column_keys_rows_by_shop,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_one_shops_rows_name_its_shop,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_refunds_ledger_side_says_what_it_wrote_off,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_an_event_id_at_two_shops_is_not_paired,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_csv_members_compare, db_fixture_setup_migrated,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_an_unreadable_rows_event_is_not_missing,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_a_readable_row_takes_its_event_before_an_unreadable_one, db_fixture_setup_migrated,
            db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_where_an_unreadable_row_is_does_not_matter,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_row_past_the_zones_years_is_malformed,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_an_event_past_the_zones_years_stops_the_report,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_tills_times_and_amounts_match,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_csv_report_ends_with_its_summary,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_an_unpaired_rows_points_are_listed,
                                        db_fixture_setup_migrated, db_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
