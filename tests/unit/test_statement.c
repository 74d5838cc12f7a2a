/*
 * test_statement.c - a channel's statement as reconciliation rows: the
 * header in any order, what spreadsheets write, each kind of bad row
 * reported with its line (and reading going on), and the on-disk sort.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "server/statement.h"

#include "core/utf8.h"
#include "util/csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char STATEMENT[] =
    "\xEF\xBB\xBFpoints,event_id,type,occurred_at,member,amount_fen\r\n"
    "128,E3,purchase,2026-11-24T10:15:00+08:00,\"phone:(138) 0013-8000\",12800\r\n"
    "-64,E1,refund,1795486500,card:S001:88001,6400\r\n"
    "\r\n"
    "5,E2,sign_in,2026-11-24T08:00:00+08:00,member_id:M1,\r\n"
    "5,E4,teleport,2026-11-24T08:00:00+08:00,member_id:M1,\r\n"
    "5,E5,purchase,yesterday,member_id:M1,100\r\n"
    "5,E6,purchase,2026-11-24T08:00:00+08:00,member_id:M1,12.5\r\n"
    "x,E7,purchase,2026-11-24T08:00:00+08:00,member_id:M1,100\r\n"
    "5,E9,purchase,2026-11-24T08:00:00+08:00,member_i:M1,100\r\n"
    "5,E10,purchase,2026-11-24T08:00:00+08:00,M1,100\r\n"
    "5,E11,purchase,2026-11-24T08:00:00+08:00,phone:138****8000,100\r\n"
    "5,E12,purchase,2026-11-24T08:00:00+08:00,tel:+86 138 0013 8000,100\r\n"
    "5,E13,purchase,2026-11-24T08:00:00+08:00,member_id:M 1,100\r\n"
    "5,E14,purchase,2026-11-24T08:00:00+08:00, Member_ID: M1 ,100\r\n"
    "5,E15,purchase,2026-11-24T08:00:00+08:00,Phone:13800138000,100\r\n"
    "5,\"E8,purchase\r\n"
    "\r\n";

typedef struct expect {
    const char *event_id;
    size_t line;
    bool malformed;
    const char *problem; /* a part of it */
} expect;

static void read_all(pgw_statement *st, const expect *want, size_t n)
{
    pgw_recon_row r;
    bool end = false;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
        assert_false(end);
        assert_int_equal(r.line, want[i].line);
        assert_int_equal(r.malformed, want[i].malformed);
        if (want[i].event_id != NULL)
            assert_string_equal(r.event_id, want[i].event_id);
        if (want[i].problem != NULL && strstr(r.problem, want[i].problem) == NULL)
            fail_msg("line %zu: \"%s\" does not say \"%s\"", r.line, r.problem, want[i].problem);
    }
    assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
    assert_true(end);
}

static void test_rows_and_bad_rows_in_file_order(void **state)
{
    (void)state;
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(STATEMENT, strlen(STATEMENT), &st, NULL), PGW_OK);
    pgw_recon_row r;
    bool end = false;
    assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
    assert_string_equal(r.event_id, "E3");
    assert_string_equal(r.member, "phone:(138) 0013-8000"); /* as written */
    assert_int_equal(r.amount_fen, 12800);
    assert_int_equal(r.points, 128);
    assert_int_equal(r.occurred_at, 1795486500); /* 2026-11-24T10:15:00+08:00 */
    assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
    assert_string_equal(r.type, "refund");
    assert_int_equal(r.points, -64);
    assert_int_equal(r.occurred_at, 1795486500); /* unix seconds as they are */
    const expect rest[] = {
        {"E2", 5, false, NULL},
        {"E4", 6, true, "type \"teleport\""},
        {"E5", 7, true, "occurred_at \"yesterday\""},
        {"E6", 8, true, "amount_fen \"12.5\""},
        {"E7", 9, true, "points \"x\""},
        /* Regression (the finance walkthrough): a member no event could
         * name was read as it was, not compared, and its row matched. */
        {"E9", 10, true, "\"member_i\" looks like member_id misspelt"},
        {"E10", 11, false, NULL},                /* a bare id: read, as before, not compared */
        {"E11", 12, false, NULL},                /* masked, as tills export it: not compared */
        {"E12", 13, false, NULL},                /* another kind: read, not compared */
        {"E13", 14, true, "is not a member id"}, /* compared: checked whole */
        {"E14", 15, false, NULL},                /* any case, spaces around: member_id:M1 */
        {"E15", 16, false, NULL},
        {NULL, 17, true, "quote is never closed"},
    };
    read_all(st, rest, sizeof(rest) / sizeof(rest[0]));
    /* Rewound, the same rows again. */
    assert_int_equal(pgw_statement_rewind(st, NULL), PGW_OK);
    assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
    assert_string_equal(r.event_id, "E3");
    pgw_statement_free(st);
}

/* A member id written in any case, spaces around it, is kept as the
 * matcher finds it (the late review: a till's "Member_ID: M1" or a space
 * after the comma made its row malformed). */
static void test_a_member_id_is_kept_as_matched(void **state)
{
    (void)state;
    const char *text = "event_id,occurred_at,type,member,amount_fen,points\n"
                       "E1,1795486400,purchase, Member_ID: M1 ,1000,10\n";
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    pgw_recon_row r;
    bool end = false;
    assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
    assert_false(r.malformed);
    assert_string_equal(r.member, "member_id:M1");
    pgw_statement_free(st);
}

static void test_sorted_on_disk_keeping_lines(void **state)
{
    (void)state;
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(STATEMENT, strlen(STATEMENT), &st, NULL), PGW_OK);
    assert_int_equal(pgw_statement_sort(st, NULL), PGW_OK);
    const expect sorted[] = {
        {"", 17, true, "quote is never closed"}, /* no event_id: first */
        {"E1", 3, false, NULL},
        {"E10", 11, false, NULL},
        {"E11", 12, false, NULL},
        {"E12", 13, false, NULL},
        {"E13", 14, true, NULL},
        {"E14", 15, false, NULL},
        {"E15", 16, false, NULL},
        {"E2", 5, false, NULL},
        {"E3", 2, false, NULL},
        {"E4", 6, true, "teleport"},
        {"E5", 7, true, NULL},
        {"E6", 8, true, NULL},
        {"E7", 9, true, NULL},
        {"E9", 10, true, NULL},
    };
    read_all(st, sorted, sizeof(sorted) / sizeof(sorted[0]));
    assert_int_equal(pgw_statement_sort(st, NULL), PGW_OK); /* again: from the start */
    read_all(st, sorted, sizeof(sorted) / sizeof(sorted[0]));
    pgw_statement_free(st);
}

/* A file whose lines end in a bare CR (Excel for Mac's "CSV (Macintosh)")
 * reads as one line: it was refused saying "column points is missing (is
 * \"points\" it, misspelt?)", the CR unseen. It is refused saying why. */
static void test_bare_cr_line_ends_are_named(void **state)
{
    (void)state;
    pgw_statement *st = NULL;
    pgw_err err;
    const char *mac = "event_id,occurred_at,type,member,amount_fen,points\r"
                      "E1,2026-11-20T10:00:00+08:00,purchase,,12800,128\r";
    assert_int_equal(pgw_statement_open_text(mac, strlen(mac), &st, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "line 1: the header has a line break that is a bare CR"));
    assert_null(st);
    const char *cut = "event_id,occurred_at,type,member,amount_fen,points\r";
    assert_int_equal(pgw_statement_open_text(cut, strlen(cut), &st, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "bare CR"));
    assert_null(st);
}

/* A till's export with more columns than a row may have was refused
 * saying "more than 32 fields" alone: not that it was the header, nor how
 * many columns a statement may have. */
static void test_a_header_too_wide_says_so(void **state)
{
    (void)state;
    char text[512] = "event_id,occurred_at,type,member,amount_fen,points";
    for (int i = 0; i < PGW_CSV_FIELDS_MAX; i++)
        strcat(text, ",c");
    strcat(text, "\n");
    pgw_statement *st = NULL;
    pgw_err err;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "line 1, the header: more than 32 fields"));
    assert_non_null(strstr(err.msg, "at most 32 columns"));
    assert_null(st);
}

/* Two days' exports joined into one file (cat) repeat the header, BOM and
 * all: it was a malformed_row saying its occurred_at "occurred_at" is no
 * time, its event_id "\xEF\xBB\xBFevent_id". It says it is the header again. */
static void test_a_header_repeated_says_so(void **state)
{
    (void)state;
    const char *text = "\xEF\xBB\xBF"
                       "event_id,occurred_at,type,member,amount_fen,points\r\n"
                       "E1,2026-11-24T10:15:00+08:00,purchase,,12800,128\r\n"
                       "\xEF\xBB\xBF"
                       "event_id,occurred_at,type,member,amount_fen,points\r\n"
                       "E2,2026-11-25T10:15:00+08:00,purchase,,12800,128\r\n"
                       "event_id,occurred_at,type,member,amount_fen,points\r\n";
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    const expect want[] = {
        {"E1", 2, false, NULL},
        {"", 3, true, "the header again (statements joined into one file?)"},
        {"E2", 4, false, NULL},
        {"", 5, true, "the header again"},
    };
    read_all(st, want, sizeof(want) / sizeof(want[0]));
    pgw_statement_free(st);
}

static void test_headers_and_files(void **state)
{
    (void)state;
    pgw_statement *st = NULL;
    pgw_err err;
    const char *no_points = "event_id,occurred_at,type,member,amount_fen\n";
    assert_int_equal(pgw_statement_open_text(no_points, strlen(no_points), &st, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "column points is missing"));
    assert_null(st);
    const char *twice = "event_id,occurred_at,type,member,amount_fen,points,points\n";
    assert_int_equal(pgw_statement_open_text(twice, strlen(twice), &st, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "\"points\" is there twice"));
    assert_int_equal(pgw_statement_open_text("", 0, &st, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "empty"));
    assert_int_equal(pgw_statement_open_file("/nonexistent/statement.csv", &st, &err),
                     PGW_ENOTFOUND);
    char path[] = "/tmp/pgw-statement-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(STATEMENT, f);
    fclose(f);
    assert_int_equal(pgw_statement_open_file(path, &st, NULL), PGW_OK);
    pgw_recon_row r;
    bool end = false;
    assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
    assert_string_equal(r.event_id, "E3");
    assert_int_equal(r.line, 2);
    pgw_statement_free(st);
    remove(path);
}

/* Regression: a statement exported with columns of the channel's own
 * (a shop's name, a note, an empty one after a trailing comma) was refused
 * whole, so finance had to cut them out first. They are read past, and
 * named, so that a misspelt optional column does not go unseen. */
static void test_other_columns_are_ignored_and_named(void **state)
{
    (void)state;
    const char *text = "shop_name,event_id,occurred_at,type,member,amount_fen,points,备注,\n"
                       "Tea House,E1,1795486400,purchase,member_id:M1,1000,10,x,\n";
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    assert_string_equal(pgw_statement_ignored(st, 0), "shop_name");
    assert_string_equal(pgw_statement_ignored(st, 1), "备注");
    assert_string_equal(pgw_statement_ignored(st, 2), "");
    assert_null(pgw_statement_ignored(st, 3));
    pgw_recon_row r;
    bool end = false;
    assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
    assert_false(r.malformed);
    assert_string_equal(r.event_id, "E1");
    assert_int_equal(r.points, 10);
    assert_int_equal(r.amount_fen, 1000);
    pgw_statement_free(st);
    /* A long name is cut on a character boundary, a control character
     * (a quoted line break) shown as '?'; a name not UTF-8 is refused. */
    char header[700];
    snprintf(header, sizeof(header), "event_id,occurred_at,type,member,amount_fen,points,%s,%s\n",
             "很长的列名很长的列名很长的列名很长的列名很长的列名很长的列名很长的列名", "\"a\nb\"");
    assert_int_equal(pgw_statement_open_text(header, strlen(header), &st, NULL), PGW_OK);
    assert_int_equal(strlen(pgw_statement_ignored(st, 0)), 63); /* 21 characters of 3 bytes */
    assert_true(pgw_utf8_valid(pgw_statement_ignored(st, 0)));
    assert_string_equal(pgw_statement_ignored(st, 1), "a?b");
    pgw_statement_free(st);
    const char *not_utf8 = "event_id,occurred_at,type,member,amount_fen,points,\xff\n";
    pgw_err err;
    assert_int_equal(pgw_statement_open_text(not_utf8, strlen(not_utf8), &st, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "not UTF-8"));
    /* The review of 8e9072b: our optional column misspelt was read past,
     * and a CSV report over HTTP named it nowhere. One that is it but for
     * its case, a separator or a letter is refused, naming it; a missing
     * required column names what looks like it. */
    static const char *const near[] = {"orignal_event_id", "Original_Event_ID", "original event id",
                                       "original_eventid"};
    for (size_t i = 0; i < sizeof(near) / sizeof(near[0]); i++) {
        snprintf(header, sizeof(header), "event_id,occurred_at,type,member,amount_fen,points,%s\n",
                 near[i]);
        assert_int_equal(pgw_statement_open_text(header, strlen(header), &st, &err), PGW_EINVAL);
        assert_non_null(strstr(err.msg, near[i]));
        assert_non_null(strstr(err.msg, "looks like original_event_id misspelt"));
    }
    /* Regression (the code review): a till's own "Shop ID" (its shop's
     * name, say), read past before shop_id was ours, was then refused as
     * shop_id misspelt, failing a nightly reconciliation that had passed.
     * It is read past again, and named: without shop_id, rows are keyed
     * by event_id alone, as they always were. */
    static const char *const tills[] = {"Shop ID", "ShopID", "shop-id", "shop_ids"};
    for (size_t i = 0; i < sizeof(tills) / sizeof(tills[0]); i++) {
        snprintf(header, sizeof(header),
                 "event_id,occurred_at,type,member,amount_fen,points,%s\n"
                 "E1,1795486400,purchase,member_id:M1,1000,10,Tea House\n",
                 tills[i]);
        assert_int_equal(pgw_statement_open_text(header, strlen(header), &st, &err), PGW_OK);
        assert_string_equal(pgw_statement_ignored(st, 0), tills[i]);
        assert_false(pgw_statement_has_shop(st));
        assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
        assert_false(r.malformed);
        assert_string_equal(r.source, "");
        pgw_statement_free(st);
    }
    const char *typo = "event_id,occured_at,type,member,amount_fen,points\n";
    assert_int_equal(pgw_statement_open_text(typo, strlen(typo), &st, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "column occurred_at is missing (is \"occured_at\" it"));
    /* A till's own columns near ours are its own (the second review). */
    const char *far = "event_id,occurred_at,type,member,amount_fen,points,points_after,note,time,"
                      "event_no,original_event_at,amount_fee,point,Type\n";
    assert_int_equal(pgw_statement_open_text(far, strlen(far), &st, &err), PGW_OK);
    pgw_statement_free(st);
}

/* An optional original_event_id column names what a refund refunds, so
 * that --repair can post a refund missing from the log (a statement
 * without it could not: the refund's purchase was unknown). It is kept
 * through the on-disk sort; one too long makes its row malformed. */
static void test_a_refunds_original(void **state)
{
    (void)state;
    static char text[1024];
    snprintf(text, sizeof(text),
             "event_id,occurred_at,type,member,amount_fen,points,original_event_id\n"
             "R2,1795486500,refund,member_id:M1,500,-5,P1\n"
             "P1,1795486400,purchase,member_id:M1,1000,10,\n"
             "R3,1795486500,refund,member_id:M1,500,-5,%0*d\n",
             PGW_EVENT_ID_MAX + 1, 0);
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    for (int pass = 0; pass < 2; pass++) { /* in file order, then sorted */
        pgw_recon_row r;
        bool end = false;
        static const char *const ids[2][3] = {{"R2", "P1", "R3"}, {"P1", "R2", "R3"}};
        for (int i = 0; i < 3; i++) {
            assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
            assert_string_equal(r.event_id, ids[pass][i]);
            if (strcmp(r.event_id, "R3") == 0) {
                assert_true(r.malformed);
                assert_non_null(strstr(r.problem, "original_event_id"));
            } else {
                assert_false(r.malformed);
                assert_string_equal(r.original, strcmp(r.event_id, "R2") == 0 ? "P1" : "");
            }
        }
        assert_int_equal(pgw_statement_sort(st, NULL), PGW_OK);
    }
    pgw_statement_free(st);
}

/* Shuffled rows (with duplicates and bad rows) sorted through many runs
 * on disk come back exactly in (event_id, line) order. */
static void test_sorted_through_many_runs(void **state)
{
    (void)state;
    enum { ROWS = 6000 };
    size_t cap = ROWS * 96 + 128, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    len += (size_t)snprintf(text, cap, "event_id,occurred_at,type,member,amount_fen,points\n");
    uint64_t x = 7;
    for (int i = 0; i < ROWS; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u; /* shuffles the ids */
        int id = (int)(x >> 33) % 4000;                      /* some come twice */
        len += (size_t)snprintf(text + len, cap - len, "E%05d,1795486500,%s,member_id:M1,%d,%d\n",
                                id, i % 500 == 0 ? "teleport" : "purchase", i, i);
    }
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, len, &st, NULL), PGW_OK);
    pgw_statement__set_sort_arena_for_test(st, 4096); /* ~60 runs */
    assert_int_equal(pgw_statement_sort(st, NULL), PGW_OK);
    pgw_recon_row r, prev;
    bool end = false;
    size_t n = 0;
    while (pgw_statement_next(st, &r, &end, NULL) == PGW_OK && !end) {
        if (n > 0) {
            int c = strcmp(prev.event_id, r.event_id);
            assert_true(c < 0 || (c == 0 && prev.line < r.line));
        }
        /* each row still carries its own fields */
        assert_int_equal(r.malformed, (r.line - 2) % 500 == 0);
        if (!r.malformed)
            assert_int_equal(r.points, (int64_t)r.line - 2);
        else
            assert_non_null(strstr(r.problem, "teleport"));
        prev = r;
        n++;
    }
    assert_true(end);
    assert_int_equal(n, ROWS);
    pgw_statement_free(st);
    free(text);
}

/* Which unreadable rows have their key read (reconcile.h: they may take
 * their event): the event_id, and the shop when the statement names
 * shops, from a row whose fields line up with the header; the same once
 * sorted. The problem stays the one found first. */
static void test_an_unreadable_rows_key(void **state)
{
    (void)state;
    const char *text = "event_id,occurred_at,type,member,amount_fen,points,shop_id\n"
                       "E5,1795486400,purchase,member_id:M1,1000,ten,S001\n"   /* read */
                       "E4,yesterday,purchase,member_id:M1,1000,10,-\n"        /* its date unread */
                       "E3,1795486400,purchase,member_id:M1,1000,ten,S0:1\n"   /* its shop unread */
                       "E2,purchase,member_id:M1,1000,10,S001\n"               /* a field too few */
                       "E1,1795486400,purchase,member_id:M1,1000,ten,S001,x\n" /* one too many */
                       ",1795486400,purchase,member_id:M1,1000,ten,S001\n"     /* no event_id */
                       "E0,1795486400,purchase,member_id:M1,1000,10,S001\n";   /* readable */
    static const struct {
        const char *event_id, *source, *problem;
        bool key_read;
    } want[] = {{"E5", "S001", "points \"ten\"", true}, {"E4", "", "occurred_at", false},
                {"E3", "", "points \"ten\"", false},    {"E2", "", "occurred_at", false},
                {"E1", "", "points \"ten\"", false},    {"", "", "event_id must be", false}};
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    for (int sorted = 0; sorted < 2; sorted++) {
        if (sorted)
            assert_int_equal(pgw_statement_sort(st, NULL), PGW_OK);
        pgw_recon_row r;
        bool end = false;
        for (size_t i = 0; i < 7; i++) {
            assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
            assert_false(end);
            size_t w = r.line - 2; /* want[] by line, in file order or sorted */
            static const size_t by_key[] = {7, 8, 6, 5, 4, 3, 2}; /* "", E0, E1, ... E5 */
            assert_int_equal(r.line, sorted ? by_key[i] : i + 2);
            if (w == 6) { /* E0, readable */
                assert_false(r.malformed);
                continue;
            }
            assert_true(r.malformed);
            assert_string_equal(r.event_id, want[w].event_id);
            assert_string_equal(r.source, want[w].source);
            assert_non_null(strstr(r.problem, want[w].problem));
            if (r.key_read != want[w].key_read)
                fail_msg("line %zu: key_read %d", r.line, r.key_read);
        }
        assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
        assert_true(end);
    }
    pgw_statement_free(st);
}

/* Reads every row of `text` (one per line, from line 2) into rows[]. */
static size_t read_rows(pgw_statement *st, pgw_recon_row *rows, size_t cap)
{
    size_t n = 0;
    bool end = false;
    while (n < cap) {
        assert_int_equal(pgw_statement_next(st, &rows[n], &end, NULL), PGW_OK);
        if (end)
            break;
        assert_int_equal(rows[n].line, n + 2);
        n++;
    }
    return n;
}

/* Regression (the finance analyst): an amount a spreadsheet wrote with
 * thousands separators ("1,234", a quoted cell) was a malformed row. It is
 * whole fen with commas grouping it in threes; anything else (a decimal
 * point: yuan?, another separator, a group not of three) is refused
 * saying why, and so is a comma left unquoted, which splits the cell and
 * shifts the row's columns (1 fen and 234 points, read as it was). */
static void test_amounts_grouped_in_thousands(void **state)
{
    (void)state;
#define ROW(id, amount, points) id ",1795486400,purchase,member_id:M1," amount "," points "\n"
    const char *text = "event_id,occurred_at,type,member,amount_fen,points\n" /* line 1 */
        ROW("G1", "\"1,234\"", "12")                                          /* 2 */
        ROW("G2", "\"1,234,567\"", "12")                                      /* 3 */
        ROW("G3", "\"100,000,000,000\"", "12") /* 4: PGW_AMOUNT_FEN_MAX */
        ROW("G4", "12345", "12")               /* 5: as before */
        ROW("G5", "", "12")                    /* 6: as before, 0 */
        ROW("B1", "\"100,000,000,001\"", "12") /* 7 */
        ROW("B2", "\"1,234.50\"", "12")        /* 8 */
        ROW("B3", "\"1 234\"", "12")           /* 9 */
        ROW("B4", "\"1,23\"", "12")            /* 10 */
        ROW("B5", "\"12,3456\"", "12")         /* 11 */
        ROW("B6", "\",123\"", "12")            /* 12 */
        ROW("B7", "\"1,,234\"", "12")          /* 13 */
        ROW("B8", "\"0,123\"", "12")           /* 14 */
        ROW("B9", "\"1,234,\"", "12")          /* 15 */
        ROW("B10", "\"-1,234\"", "12")         /* 16 */
        ROW("B11", "\"1.234\"", "12")          /* 17 */
        ROW("B12", "\"1\302\240234\"", "12")   /* 18: a no-break space */
        ROW("B13", "\"1234,567\"", "12")       /* 19 */
        ROW("B14", "1,234", "12");             /* 20: unquoted */
#undef ROW
    static const struct {
        int64_t amount_fen;
        const char *problem; /* a part of it; NULL: read */
    } want[] = {
        {1234, NULL},
        {1234567, NULL},
        {INT64_C(100000000000), NULL},
        {12345, NULL},
        {0, NULL},
        {0, "amount_fen \"100,000,000,001\" is not a whole number of fen in range"},
        {0, "amount_fen \"1,234.50\" has a decimal point: amount_fen is whole fen"},
        {0, "amount_fen \"1 234\": only commas group thousands"},
        {0, "amount_fen \"1,23\" is not grouped in threes"},
        {0, "amount_fen \"12,3456\" is not grouped in threes"},
        {0, "amount_fen \",123\" is not grouped in threes"},
        {0, "amount_fen \"1,,234\" is not grouped in threes"},
        {0, "amount_fen \"0,123\" is not grouped in threes"},
        {0, "amount_fen \"1,234,\" is not grouped in threes"},
        {0, "amount_fen \"-1,234\" is not a whole number of fen in range"},
        {0, "amount_fen \"1.234\" has a decimal point"},
        {0, "amount_fen \"1\302\240234\": only commas group thousands"},
        {0, "amount_fen \"1234,567\" is not grouped in threes"},
        {0, "7 fields where the header has 6"},
    };
    enum { N = sizeof(want) / sizeof(want[0]) };
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    pgw_recon_row rows[N + 1];
    assert_int_equal(read_rows(st, rows, N + 1), N);
    for (size_t i = 0; i < N; i++) {
        const pgw_recon_row *r = &rows[i];
        if (r->malformed != (want[i].problem != NULL))
            fail_msg("line %zu (%s): malformed %d: %s", r->line, r->event_id, r->malformed,
                     r->problem);
        if (want[i].problem == NULL && r->amount_fen != want[i].amount_fen)
            fail_msg("line %zu: amount_fen %lld", r->line, (long long)r->amount_fen);
        if (want[i].problem != NULL && strstr(r->problem, want[i].problem) == NULL)
            fail_msg("line %zu: \"%s\" does not say \"%s\"", r->line, r->problem, want[i].problem);
    }
    pgw_statement_free(st);
}

/* Regression (the finance analyst): occurred_at as a till writes it, a
 * space for the "T" (which RFC 3339 allows, section 5.6) or a local time
 * without an offset, was a malformed row. The space is read with or
 * without a zone; a local time in the zone given (the mall's), and
 * without one it is refused: which instant it names is the zone's to say.
 * So is a local time from before the zone's offset last changed
 * (Asia/Shanghai kept summer time until 1991): it may name two instants
 * or none. */
static void test_times_as_tills_write_them(void **state)
{
    (void)state;
    const char *text = "event_id,occurred_at,type,member,amount_fen,points\n"
                       "T1,2026-11-20 14:03:00+08:00,purchase,member_id:M1,1000,10\n"
                       "T2,2026-11-20T14:03:00,purchase,member_id:M1,1000,10\n"
                       "T3,2026-11-20 14:03:00,purchase,member_id:M1,1000,10\n"
                       "T4,2026-11-20 14:03:00.250,purchase,member_id:M1,1000,10\n"
                       "T5,2026-11-20  14:03:00,purchase,member_id:M1,1000,10\n"
                       "T6,1991-07-01 12:00:00,purchase,member_id:M1,1000,10\n"
                       "T7,2026-11-20 14:03:00,purchase,member_id:M1,1000,ten\n"
                       "T8,2026-11-20 14:03:00Z,purchase,member_id:M1,1000,10\n";
    enum { N = 8, AT = 1795154580 /* 2026-11-20T14:03:00+08:00 */ };
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    pgw_recon_row rows[N + 1];
    /* No zone: only times with their offset. */
    assert_int_equal(read_rows(st, rows, N + 1), N);
    assert_false(rows[0].malformed);
    assert_int_equal(rows[0].occurred_at, AT);
    for (size_t i = 1; i < 4; i++) {
        assert_true(rows[i].malformed);
        assert_non_null(strstr(rows[i].problem, "has no offset"));
    }
    assert_false(rows[6].key_read);
    assert_false(rows[7].malformed);
    assert_int_equal(rows[7].occurred_at, AT + 8 * 3600);
    /* The mall's zone. */
    pgw_tz tz;
    assert_int_equal(pgw_tz_lookup("Asia/Shanghai", &tz, NULL), PGW_OK);
    pgw_statement_set_time_zone(st, &tz);
    for (int sorted = 0; sorted < 2; sorted++) {
        if (sorted)
            assert_int_equal(pgw_statement_sort(st, NULL), PGW_OK);
        else
            assert_int_equal(pgw_statement_rewind(st, NULL), PGW_OK);
        assert_int_equal(read_rows(st, rows, N + 1), N); /* sorted: by event_id, T1..T8 */
        for (size_t i = 0; i < 4; i++) {
            if (rows[i].malformed || rows[i].occurred_at != AT)
                fail_msg("line %zu: %s %lld", rows[i].line, rows[i].problem,
                         (long long)rows[i].occurred_at);
        }
        assert_true(rows[4].malformed);
        assert_non_null(strstr(rows[4].problem, "occurred_at \"2026-11-20  14:03:00\""));
        assert_true(rows[5].malformed);
        assert_non_null(strstr(rows[5].problem, "occurred_at \"1991-07-01 12:00:00\""));
        assert_non_null(strstr(rows[5].problem, "Asia/Shanghai"));
        assert_non_null(strstr(rows[5].problem, "give its offset"));
        assert_true(rows[6].malformed); /* its points; its key read, dated */
        assert_true(rows[6].key_read);
        assert_int_equal(rows[6].occurred_at, AT);
    }
    /* Another zone, a fixed offset: every local time is one instant. */
    assert_int_equal(pgw_tz_lookup("+05:30", &tz, NULL), PGW_OK);
    pgw_statement_set_time_zone(st, &tz);
    assert_int_equal(pgw_statement_rewind(st, NULL), PGW_OK);
    assert_int_equal(read_rows(st, rows, N + 1), N);
    assert_int_equal(rows[0].occurred_at, AT); /* its own offset */
    assert_int_equal(rows[2].occurred_at, AT + 9000);
    assert_false(rows[5].malformed);
    pgw_statement_free(st);
    /* A zone whose offset changed lately: Kazakhstan's, on 2024-03-01. */
    const char *almaty = "event_id,occurred_at,type,member,amount_fen,points\n"
                         "K1,2024-02-29 23:30:00,purchase,member_id:M1,1000,10\n"
                         "K2,2025-01-01 00:00:00,purchase,member_id:M1,1000,10\n";
    assert_int_equal(pgw_tz_lookup("Asia/Almaty", &tz, NULL), PGW_OK);
    assert_int_equal(pgw_statement_open_text(almaty, strlen(almaty), &st, NULL), PGW_OK);
    pgw_statement_set_time_zone(st, &tz);
    assert_int_equal(read_rows(st, rows, 3), 2);
    assert_true(rows[0].malformed);
    assert_non_null(strstr(rows[0].problem, "Asia/Almaty"));
    assert_false(rows[1].malformed);
    assert_int_equal(rows[1].occurred_at, 1735671600); /* 2025-01-01T00:00:00+05:00 */
    pgw_statement_free(st);
}

/* Review of 2775730: an unquoted thousands comma was caught only when the
 * field it pushes past the header's last column is not empty. A till's
 * statement with original_event_id (empty on a purchase) or a note last
 * writes "P1,...,1,234,12," for "1,234" fen and 12 points: the 12 lands
 * in the empty last column, the field past it is empty, and the row was
 * read as 1 fen and 234 points (a points_mismatch, or with --repair a
 * purchase of 1 fen posted with 234 points). So does a row whose writer
 * leaves the empty last field out: split, it has the header's count. */
static void test_an_unquoted_comma_before_an_empty_last_column(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "event_id,occurred_at,type,member,amount_fen,points,original_event_id\n"
        "P1,1795486400,purchase,member_id:M1,1,234,12,\n",
        "event_id,occurred_at,type,member,amount_fen,points,note\n"
        "P1,1795486400,purchase,member_id:M1,1,234,12,\n",
        /* A writer that leaves an empty last field out: the split row has
         * exactly the header's fields, and nothing is past them. */
        "event_id,occurred_at,type,member,amount_fen,points,original_event_id\n"
        "P1,1795486400,purchase,member_id:M1,1,234,12\n",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        pgw_statement *st = NULL;
        assert_int_equal(pgw_statement_open_text(texts[i], strlen(texts[i]), &st, NULL), PGW_OK);
        pgw_recon_row r;
        bool end = false;
        assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
        if (!r.malformed)
            fail_msg("statement %zu: read as amount_fen %lld, points %lld", i,
                     (long long)r.amount_fen, (long long)r.points);
        pgw_statement_free(st);
    }
}

/* Review of 2775730: an amount grouped in threes past int64 was called
 * "not grouped in threes: write 1,234,567", which it is; what is wrong
 * with it is its size, as for one past PGW_AMOUNT_FEN_MAX. */
static void test_a_grouped_amount_past_int64(void **state)
{
    (void)state;
    const char *text = "event_id,occurred_at,type,member,amount_fen,points\n"
                       "G1,1795486400,purchase,member_id:M1,\"10,000,000,000,000,000,000\",12\n";
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    pgw_recon_row r;
    bool end = false;
    assert_int_equal(pgw_statement_next(st, &r, &end, NULL), PGW_OK);
    assert_true(r.malformed);
    if (strstr(r.problem, "is not a whole number of fen in range") == NULL)
        fail_msg("%s", r.problem);
    pgw_statement_free(st);
}

/* A row ending in a comma the header lacks is refused, saying how such a
 * file reads (5858318; R3): with the header ending in one too, it does. */
static void test_a_trailing_comma_says_how_to_read_it(void **state)
{
    (void)state;
    const char *bare = "event_id,occurred_at,type,member,amount_fen,points\n"
                       "T1,1795486400,purchase,member_id:M1,1000,10,\n";
    const char *both = "event_id,occurred_at,type,member,amount_fen,points,\n"
                       "T1,1795486400,purchase,member_id:M1,1000,10,\n";
    pgw_statement *st = NULL;
    pgw_recon_row rows[2];
    assert_int_equal(pgw_statement_open_text(bare, strlen(bare), &st, NULL), PGW_OK);
    assert_int_equal(read_rows(st, rows, 2), 1);
    assert_true(rows[0].malformed);
    if (strstr(rows[0].problem, "end the header with one too") == NULL)
        fail_msg("%s", rows[0].problem);
    /* Whole: cut at problem's 160 bytes, it lost how to write a thousands
     * comma (review of d7760fb). */
    if (strstr(rows[0].problem, "\"1,234\"") == NULL)
        fail_msg("cut: %s", rows[0].problem);
    pgw_statement_free(st);
    assert_int_equal(pgw_statement_open_text(both, strlen(both), &st, NULL), PGW_OK);
    assert_int_equal(read_rows(st, rows, 2), 1);
    if (rows[0].malformed)
        fail_msg("%s", rows[0].problem);
    assert_int_equal(rows[0].amount_fen, 1000);
    assert_int_equal(rows[0].points, 10);
    pgw_statement_free(st);
    /* The other count's message, whole too: it was cut at "an em". */
    const char *bare_comma = "event_id,occurred_at,type,member,amount_fen,points\n"
                             "T1,1795486400,purchase,member_id:M1,1,000,10\n";
    assert_int_equal(pgw_statement_open_text(bare_comma, strlen(bare_comma), &st, NULL), PGW_OK);
    assert_int_equal(read_rows(st, rows, 2), 1);
    assert_true(rows[0].malformed);
    if (strstr(rows[0].problem, "\"1,234\"") == NULL || strstr(rows[0].problem, "left out") == NULL)
        fail_msg("cut: %s", rows[0].problem);
    pgw_statement_free(st);
}

/* H-D's note on 2775730: a till that groups its amounts groups its points
 * too ("1,280"), and those rows were malformed though the amounts beside
 * them were read. Points are read as amounts are, a sign allowed (a
 * refund's), and held to the same rules. */
static void test_points_grouped_in_thousands(void **state)
{
    (void)state;
#define ROW(id, points) id ",1795486400,purchase,member_id:M1,1000," points "\n"
    const char *text = "event_id,occurred_at,type,member,amount_fen,points\n" /* line 1 */
        ROW("P1", "\"1,280\"")                                                /* read */
        ROW("P2", "\"-1,280\"")                                               /* read: a sign */
        ROW("P3", "\"1,28\"")                                                 /* not in threes */
        ROW("P4", "\"1,000,000,000,001\"") /* past PGW_POINTS_MAX */
        ROW("P5", "\"1,280.5\"");          /* a point */
#undef ROW
    static const struct {
        int64_t points;
        bool malformed;
    } want[] = {{1280, false}, {-1280, false}, {0, true}, {0, true}, {0, true}};
    pgw_statement *st = NULL;
    pgw_recon_row rows[8];
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    assert_int_equal(read_rows(st, rows, 8), 5);
    for (size_t i = 0; i < 5; i++) {
        if (rows[i].malformed != want[i].malformed ||
            (!want[i].malformed && rows[i].points != want[i].points))
            fail_msg("row %zu: malformed %d (%s), points %lld; want malformed %d, points %lld", i,
                     rows[i].malformed, rows[i].problem, (long long)rows[i].points,
                     want[i].malformed, (long long)want[i].points);
    }
    pgw_statement_free(st);
}

/* Review (known defect 1): a number was read by strtoll, which takes a
 * space or a "+" ahead of it, so " 1234" and "+1234" were 1234 while a
 * grouped " 1,234" was refused. One rule for every number a row holds:
 * digits alone (a "-" ahead of points, a refund's), as a spreadsheet
 * writes them (Excel never writes a "+"; a space is a hand's edit, and
 * what else it left is not guessed). The problem names the field and
 * what to write; the row's line is the row's. */
static void test_a_sign_or_space_around_a_number(void **state)
{
    (void)state;
#define ROW(id, at, amount, points) id "," at ",purchase,member_id:M1," amount "," points "\n"
    const char *text = "event_id,occurred_at,type,member,amount_fen,points\n" /* line 1 */
        ROW("S1", "1795486400", "\" 1234\"", "12")                            /* 2 */
        ROW("S2", "1795486400", "+1234", "12")                                /* 3 */
        ROW("S3", "1795486400", "\" 1,234\"", "12")                           /* 4 */
        ROW("S4", "1795486400", "\"1234 \"", "12")                            /* 5 */
        ROW("S5", "1795486400", "\"+1,234\"", "12")                           /* 6 */
        ROW("S6", "1795486400", "1234", "+12")                                /* 7 */
        ROW("S7", "1795486400", "1234", "\" 12\"")                            /* 8 */
        ROW("S8", "1795486400", "1234", "\" -12\"")                           /* 9 */
        ROW("S9", "1795486400", "1234", "\"+1,280\"")                         /* 10 */
        ROW("S10", "+1795486400", "1234", "12")                               /* 11 */
        ROW("S11", "\" 1795486400\"", "1234", "12")                           /* 12 */
        ROW("S12", "1795486400", "1234", "-12")                               /* 13: read */
        ROW("S13", "1795486400", "\"1,234\"", "\"-1,280\"");                  /* 14: read */
#undef ROW
    static const char *const want[] = {
        "amount_fen \" 1234\" has a space around it: write the number alone",
        "amount_fen \"+1234\" has a \"+\": write the number alone",
        "amount_fen \" 1,234\" has a space around it: write the number alone",
        "amount_fen \"1234 \" has a space around it: write the number alone",
        "amount_fen \"+1,234\" has a \"+\": write the number alone",
        "points \"+12\" has a \"+\": write the number alone",
        "points \" 12\" has a space around it: write the number alone",
        "points \" -12\" has a space around it: write the number alone",
        "points \"+1,280\" has a \"+\": write the number alone",
        "occurred_at \"+1795486400\" has a \"+\": write the time alone",
        "occurred_at \" 1795486400\" has a space around it: write the time alone",
        NULL,
        NULL,
    };
    enum { N = sizeof(want) / sizeof(want[0]) };
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    pgw_recon_row rows[N + 1];
    assert_int_equal(read_rows(st, rows, N + 1), N);
    for (size_t i = 0; i < N; i++) {
        const pgw_recon_row *r = &rows[i];
        assert_int_equal(r->line, i + 2);
        if (r->malformed != (want[i] != NULL))
            fail_msg("line %zu (%s): malformed %d: %s", r->line, r->event_id, r->malformed,
                     r->problem);
        if (want[i] != NULL && strstr(r->problem, want[i]) == NULL)
            fail_msg("line %zu: \"%s\" does not say \"%s\"", r->line, r->problem, want[i]);
    }
    assert_int_equal(rows[11].points, -12);
    assert_int_equal(rows[12].amount_fen, 1234);
    assert_int_equal(rows[12].points, -1280);
    pgw_statement_free(st);
}

/* Review (known defect 2): a till's or a spreadsheet's time without its
 * seconds, or with a slash date (Excel's and Chinese tills' "2026/11/20
 * 14:03:05"), was a malformed row. Each is read, in the mall's zone when
 * it has no offset; a date or time that does not exist is a malformed
 * row saying so, and its key is not dated (read_key). */
static void test_times_as_spreadsheets_write_them(void **state)
{
    (void)state;
#define ROW(id, at) id "," at ",purchase,member_id:M1,1000,10\n"
    const char *text = "event_id,occurred_at,type,member,amount_fen,points\n" /* line 1 */
        ROW("T1", "2026-11-20 14:03")                                         /* 2 */
        ROW("T2", "2026-11-20T14:03+08:00")                                   /* 3 */
        ROW("T3", "2026/11/20 14:03:05")                                      /* 4 */
        ROW("T4", "2026/11/20 14:03")                                         /* 5 */
        ROW("T5", "2026/11/20 6:03+00:00")                                    /* 6 */
        ROW("B1", "2026/13/01 14:03")                                         /* 7 */
        ROW("B2", "2026/2/30 14:03")                                          /* 8 */
        ROW("B3", "2026/11/20 24:00")                                         /* 9 */
        ROW("B4", "2026/11/20")                                               /* 10 */
        ROW("B5", "2026/11/20 14:03 ");                                       /* 11 */
#undef ROW
    enum { AT = 1795154580 }; /* 2026-11-20T14:03:00+08:00 */
    static const struct {
        int64_t at;
        const char *problem; /* a part of it; NULL: read */
    } want[] = {
        {AT, NULL},
        {AT, NULL},
        {AT + 5, NULL},
        {AT, NULL},
        {AT, NULL},
        {0, "occurred_at \"2026/13/01 14:03\" is no date: a month is 1..12"},
        {0, "occurred_at \"2026/2/30 14:03\" is no date: 2026-02 has 28 days"},
        {0, "occurred_at \"2026/11/20 24:00\" is no time of day"},
        {0, "occurred_at \"2026/11/20\" is neither unix seconds nor a time"},
        {0, "occurred_at \"2026/11/20 14:03 \" has a space around it"},
    };
    enum { N = sizeof(want) / sizeof(want[0]) };
    pgw_tz tz;
    assert_int_equal(pgw_tz_lookup("Asia/Shanghai", &tz, NULL), PGW_OK);
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    pgw_statement_set_time_zone(st, &tz);
    pgw_recon_row rows[N + 1];
    assert_int_equal(read_rows(st, rows, N + 1), N);
    for (size_t i = 0; i < N; i++) {
        const pgw_recon_row *r = &rows[i];
        if (r->malformed != (want[i].problem != NULL))
            fail_msg("line %zu (%s): malformed %d: %s", r->line, r->event_id, r->malformed,
                     r->problem);
        if (want[i].problem == NULL && r->occurred_at != want[i].at)
            fail_msg("line %zu: occurred_at %lld", r->line, (long long)r->occurred_at);
        if (want[i].problem != NULL && strstr(r->problem, want[i].problem) == NULL)
            fail_msg("line %zu: \"%s\" does not say \"%s\"", r->line, r->problem, want[i].problem);
        /* B5's date is clear, its padding aside: it keeps its key (the
         * review of 7b8ed44); the others name no time. */
        bool keyed = i == N - 1;
        if (want[i].problem != NULL && (r->key_read != keyed || (keyed && r->occurred_at != AT)))
            fail_msg("line %zu: key_read %d, dated %lld", r->line, r->key_read,
                     (long long)r->occurred_at);
    }
    pgw_statement_free(st);
}

/*
 * A shop's CSV batch reads its occurred_at by the statement's own reading
 * (pgw_statement_time): what a spreadsheet writes, offset-less in the
 * mall's zone, as one instant however it is spelt; a time it refuses is
 * named by its column, as the statement's malformed rows name it.
 */
static void test_a_time_read_alone_as_a_row_reads_it(void **state)
{
    (void)state;
    enum { AT = 1796173200 }; /* 2026-12-02T09:00:00+08:00 */
    static const char *const same[] = {
        "2026-12-02 09:00", "2026/12/02 09:00",          "2026-12-02T09:00:00",  "1796173200",
        "2026/12/2 9:00",   "2026-12-02T09:00:00+08:00", "2026-12-02T01:00:00Z",
    };
    pgw_tz tz;
    assert_int_equal(pgw_tz_lookup("Asia/Shanghai", &tz, NULL), PGW_OK);
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        int64_t at = 0;
        pgw_err err;
        pgw_err_clear(&err);
        if (pgw_statement_time(same[i], &tz, &at, &err) != PGW_OK || at != AT)
            fail_msg("\"%s\": %lld, %s", same[i], (long long)at, err.msg);
    }
    static const struct {
        const char *at, *says;
    } bad[] = {
        {"2026/11/20", "occurred_at \"2026/11/20\" is neither unix seconds nor a time"},
        {"2026/2/30 14:03", "occurred_at \"2026/2/30 14:03\" is no date"},
        {" 2026-12-02 09:00", "occurred_at \" 2026-12-02 09:00\" has a space around it"},
        {"+1796173200", "occurred_at \"+1796173200\" has a \"+\""},
        {"", "occurred_at \"\" is neither"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t at = 0;
        pgw_err err;
        pgw_err_clear(&err);
        if (pgw_statement_time(bad[i].at, &tz, &at, &err) == PGW_OK ||
            strncmp(err.msg, bad[i].says, strlen(bad[i].says)) != 0)
            fail_msg("\"%s\": \"%s\" does not start \"%s\"", bad[i].at, err.msg, bad[i].says);
    }
    /* Without a zone a local time names no instant: refused, as in a statement. */
    int64_t at = 0;
    assert_int_not_equal(pgw_statement_time("2026-12-02 09:00", NULL, &at, NULL), PGW_OK);
    assert_int_equal(pgw_statement_time("2026-12-02T09:00:00+08:00", NULL, &at, NULL), PGW_OK);
    assert_int_equal(at, AT);
}

/*
 * Review of 7b8ed44: a time with a space around it or a "+" ahead is a
 * malformed row, as a number so written is, but unlike one its key was not
 * read: read_key read the time as it was, which whole_number no longer
 * takes, so the row gave up its event, which the reconciliation then
 * also called missing from the statement, where before 7b8ed44 the row
 * matched it. Its date is clear whatever surrounds it: the row keeps its
 * key, as one with a padded amount does; its problem stays the padding.
 */
static void test_a_padded_time_keys_its_row(void **state)
{
    (void)state;
    const char *text = "event_id,occurred_at,type,member,amount_fen,points\n"
                       "P1,\" 1795486400\",purchase,member_id:M1,1234,12\n"
                       "P2,+1795486400,purchase,member_id:M1,1234,12\n"
                       "P3,\"2026-11-20 14:03+08:00 \",purchase,member_id:M1,1234,12\n"
                       "P4,1795486400,purchase,member_id:M1,\" 1234\",12\n";
    static const int64_t at[] = {1795486400, 1795486400, 1795154580, 1795486400};
    pgw_statement *st = NULL;
    assert_int_equal(pgw_statement_open_text(text, strlen(text), &st, NULL), PGW_OK);
    pgw_recon_row rows[5];
    assert_int_equal(read_rows(st, rows, 5), 4);
    for (size_t i = 0; i < 4; i++) {
        const pgw_recon_row *r = &rows[i];
        if (!r->malformed || strstr(r->problem, i == 1 ? "has a \"+\"" : "space around") == NULL)
            fail_msg("line %zu: malformed %d: %s", r->line, r->malformed, r->problem);
        if (!r->key_read || r->occurred_at != at[i])
            fail_msg("line %zu (%s): key_read %d at %lld", r->line, r->event_id, r->key_read,
                     (long long)r->occurred_at);
    }
    pgw_statement_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_and_bad_rows_in_file_order),
        cmocka_unit_test(test_bare_cr_line_ends_are_named),
        cmocka_unit_test(test_a_header_too_wide_says_so),
        cmocka_unit_test(test_a_header_repeated_says_so),
        cmocka_unit_test(test_a_member_id_is_kept_as_matched),
        cmocka_unit_test(test_sorted_on_disk_keeping_lines),
        cmocka_unit_test(test_headers_and_files),
        cmocka_unit_test(test_sorted_through_many_runs),
        cmocka_unit_test(test_a_refunds_original),
        cmocka_unit_test(test_other_columns_are_ignored_and_named),
        cmocka_unit_test(test_an_unreadable_rows_key),
        cmocka_unit_test(test_amounts_grouped_in_thousands),
        cmocka_unit_test(test_times_as_tills_write_them),
        cmocka_unit_test(test_an_unquoted_comma_before_an_empty_last_column),
        cmocka_unit_test(test_a_grouped_amount_past_int64),
        cmocka_unit_test(test_a_trailing_comma_says_how_to_read_it),
        cmocka_unit_test(test_points_grouped_in_thousands),
        cmocka_unit_test(test_a_sign_or_space_around_a_number),
        cmocka_unit_test(test_a_padded_time_keys_its_row),
        cmocka_unit_test(test_times_as_spreadsheets_write_them),
        cmocka_unit_test(test_a_time_read_alone_as_a_row_reads_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
