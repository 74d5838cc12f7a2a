/*
 * test_csv.c - CSV as tills and spreadsheets write it: BOM, CRLF, quotes
 * with commas, doubled quotes and line breaks, Chinese text, blank lines;
 * malformed rows reported with their line and skipped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "util/csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pgw_csv_row row;

static void expect_row(pgw_csv *c, size_t line, size_t n, const char *const *fields)
{
    bool done = true;
    pgw_err err;
    if (pgw_csv_next(c, &row, &done, &err) != PGW_OK)
        fail_msg("line %zu: %s", row.line, err.msg);
    assert_false(done);
    assert_int_equal(row.line, line);
    assert_int_equal(row.n, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(row.fields[i], fields[i]);
}

static void expect_end(pgw_csv *c)
{
    bool done = false;
    assert_int_equal(pgw_csv_next(c, &row, &done, NULL), PGW_OK);
    assert_true(done);
}

static void test_what_excel_writes(void **state)
{
    (void)state;
    static const char text[] = "\xEF\xBB\xBF"
                               "event_id,member,receipt_no\r\n"
                               "E1,phone:13800138000,\"R1, \"\"gift\"\"\"\r\n"
                               "\r\n"
                               "E2,card:S001:88001,\"两行\r\n备注\"\r\n"
                               "E3,,\xE5\xB0\x8F\xE7\xB1\xB3\r\n"
                               "\r\n\r\n";
    pgw_csv c;
    pgw_csv_init(&c, text, sizeof(text) - 1);
    expect_row(&c, 1, 3, (const char *const[]){"event_id", "member", "receipt_no"});
    expect_row(&c, 2, 3, (const char *const[]){"E1", "phone:13800138000", "R1, \"gift\""});
    expect_row(&c, 4, 3, (const char *const[]){"E2", "card:S001:88001", "两行\r\n备注"});
    expect_row(&c, 6, 3, (const char *const[]){"E3", "", "小米"});
    expect_end(&c);
}

static void test_malformed_rows_are_reported_and_skipped(void **state)
{
    (void)state;
    char *text = calloc(1, 4096); /* zeroed: the strings built below stay terminated */
    strcpy(text, "a,b\n"
                 "bad\"quote,x\n"
                 "\"closed\"then,x\n"
                 "ok,1\n");
    size_t len = strlen(text);
    strcat(text, "long,");
    memset(text + strlen(text), 'x', PGW_CSV_FIELD_MAX + 1);
    len = strlen(text);
    static const char tail[] = "\nlast,2\n\"never closed,3\n";
    memcpy(text + len, tail, sizeof(tail) - 1);
    len += sizeof(tail) - 1;
    pgw_csv c;
    pgw_csv_init(&c, text, len);
    pgw_err err;
    bool done = false;
    expect_row(&c, 1, 2, (const char *const[]){"a", "b"});
    assert_int_equal(pgw_csv_next(&c, &row, &done, &err), PGW_EINVAL);
    assert_int_equal(row.line, 2);
    assert_non_null(strstr(err.msg, "a quote inside an unquoted field"));
    assert_int_equal(pgw_csv_next(&c, &row, &done, &err), PGW_EINVAL);
    assert_int_equal(row.line, 3);
    assert_non_null(strstr(err.msg, "after the closing quote"));
    expect_row(&c, 4, 2, (const char *const[]){"ok", "1"});
    assert_int_equal(pgw_csv_next(&c, &row, &done, &err), PGW_EINVAL);
    assert_int_equal(row.line, 5);
    assert_non_null(strstr(err.msg, "longer than"));
    expect_row(&c, 6, 2, (const char *const[]){"last", "2"});
    assert_int_equal(pgw_csv_next(&c, &row, &done, &err), PGW_EINVAL);
    assert_int_equal(row.line, 7);
    assert_non_null(strstr(err.msg, "never closed"));
    expect_end(&c);
    free(text);
}

/* A field that is not UTF-8 makes its row malformed (every reader hands
 * fields on as JSON or text), and reading goes on. */
static void test_a_field_not_utf8_is_a_bad_row(void **state)
{
    (void)state;
    static const char text[] = "a,b\nE1,R-\xE9\nE2,ok\n";
    pgw_csv c;
    pgw_csv_init(&c, text, sizeof(text) - 1);
    pgw_err err;
    bool done = false;
    expect_row(&c, 1, 2, (const char *const[]){"a", "b"});
    assert_int_equal(pgw_csv_next(&c, &row, &done, &err), PGW_EINVAL);
    assert_int_equal(row.line, 2);
    assert_non_null(strstr(err.msg, "field 2 is not UTF-8"));
    expect_row(&c, 3, 2, (const char *const[]){"E2", "ok"});
    expect_end(&c);
}

/* A NUL byte ended the field where C strings end: "A1<NUL>x" read as
 * "A1", and a statement's row matched event A1 it does not name. */
static void test_a_field_with_a_nul_byte_is_a_bad_row(void **state)
{
    (void)state;
    static const char text[] = "a,b\nA1\0x,1\nE2,\"q\0\"\nE3,ok\n";
    pgw_csv c;
    pgw_csv_init(&c, text, sizeof(text) - 1);
    pgw_err err;
    bool done = false;
    expect_row(&c, 1, 2, (const char *const[]){"a", "b"});
    assert_int_equal(pgw_csv_next(&c, &row, &done, &err), PGW_EINVAL);
    assert_int_equal(row.line, 2);
    assert_non_null(strstr(err.msg, "field 1 has a NUL byte"));
    assert_int_equal(pgw_csv_next(&c, &row, &done, &err), PGW_EINVAL);
    assert_int_equal(row.line, 3);
    assert_non_null(strstr(err.msg, "field 2 has a NUL byte"));
    expect_row(&c, 4, 2, (const char *const[]){"E3", "ok"});
    expect_end(&c);
}

static void test_field_count_is_bounded(void **state)
{
    (void)state;
    char text[256] = "";
    for (int i = 0; i < PGW_CSV_FIELDS_MAX + 1; i++)
        strcat(text, i ? ",f" : "f");
    strcat(text, "\nnext\n");
    pgw_csv c;
    pgw_csv_init(&c, text, strlen(text));
    bool done = false;
    pgw_err err;
    assert_int_equal(pgw_csv_next(&c, &row, &done, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "more than"));
    assert_true(row.too_wide); /* what the statement's header reader tells apart */
    expect_row(&c, 2, 1, (const char *const[]){"next"});
    assert_false(row.too_wide);
    expect_end(&c);
}

/* As many fields as a row may have, one not UTF-8: refused, but not as
 * too wide (the statement once told the two apart by the message's text). */
static void test_a_full_row_refused_otherwise_is_not_too_wide(void **state)
{
    (void)state;
    char text[256] = "";
    for (int i = 0; i < PGW_CSV_FIELDS_MAX; i++)
        strcat(text, i ? ",f" : "\xff");
    strcat(text, "\n");
    pgw_csv c;
    pgw_csv_init(&c, text, strlen(text));
    bool done = false;
    pgw_err err;
    assert_int_equal(pgw_csv_next(&c, &row, &done, &err), PGW_EINVAL);
    assert_int_equal(row.n, PGW_CSV_FIELDS_MAX);
    assert_non_null(strstr(err.msg, "not UTF-8"));
    assert_false(row.too_wide);
}

/*
 * Regression: after a row's error the reader went on at the next line
 * break, even one inside a quoted field, so the rest of that field was
 * read as rows of its own. A shop's batch with a note longer than a field
 * may hold posted the text inside the note as an event (the API review
 * found a 99,999-yuan purchase slipped in so).
 */
static void test_a_bad_row_is_skipped_to_its_own_end(void **state)
{
    (void)state;
    char *text = calloc(1, 4096);
    strcpy(text, "a,b\nn1,\"");
    memset(text + strlen(text), 'x', PGW_CSV_FIELD_MAX + 1);
    strcat(text, "\nINJ,evil\n\"\"still the note\"\"\nend\"\nlast,2\n");
    for (int i = 0; i < PGW_CSV_FIELDS_MAX; i++) /* a row of too many fields, its last quoted */
        strcat(text, "f,");
    strcat(text, "\"x\nINJ2,evil\"\nnext,3\n");
    pgw_csv c;
    pgw_csv_init(&c, text, strlen(text));
    pgw_err err;
    bool done = false;
    expect_row(&c, 1, 2, (const char *const[]){"a", "b"});
    assert_int_equal(pgw_csv_next(&c, &row, &done, &err), PGW_EINVAL);
    assert_int_equal(row.line, 2);
    assert_non_null(strstr(err.msg, "longer than"));
    expect_row(&c, 6, 2, (const char *const[]){"last", "2"});
    assert_int_equal(pgw_csv_next(&c, &row, &done, &err), PGW_EINVAL);
    assert_int_equal(row.line, 7);
    assert_non_null(strstr(err.msg, "more than"));
    expect_row(&c, 9, 2, (const char *const[]){"next", "3"});
    expect_end(&c);
    free(text);
}

static void test_columns_are_mapped_by_name(void **state)
{
    (void)state;
    static const char *const names[] = {"card", "phone", "points"};
    static const char text[] = "points,card\n7,C1\npoints,points\nsize\n";
    pgw_csv c;
    pgw_csv_init(&c, text, sizeof(text) - 1);
    int col[3];
    pgw_err err;
    expect_row(&c, 1, 2, (const char *const[]){"points", "card"});
    assert_int_equal(pgw_csv_columns(&row, names, 3, col, false, &err), PGW_OK);
    assert_int_equal(col[0], 1);
    assert_int_equal(col[1], -1); /* absent: the caller decides whether it must be there */
    assert_int_equal(col[2], 0);
    expect_row(&c, 2, 2, (const char *const[]){"7", "C1"});
    assert_string_equal(pgw_csv_cell(&row, col, 0), "C1");
    assert_string_equal(pgw_csv_cell(&row, col, 1), "");
    assert_string_equal(pgw_csv_cell(&row, col, 2), "7");
    expect_row(&c, 3, 2, (const char *const[]){"points", "points"});
    assert_int_equal(pgw_csv_columns(&row, names, 3, col, false, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "line 3: column \"points\" is there twice"));
    assert_int_equal(pgw_csv_columns(&row, names, 3, col, true, &err), PGW_EINVAL); /* still */
    expect_row(&c, 4, 1, (const char *const[]){"size"});
    assert_int_equal(pgw_csv_columns(&row, names, 3, col, false, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "line 4: column 1 is unknown"));
    assert_int_equal(pgw_csv_columns(&row, names, 3, col, true, &err), PGW_OK);
    assert_true(col[0] == -1 && col[1] == -1 && col[2] == -1); /* "size" maps to nothing */
}

/*
 * A header's unknown name is told by its position, never quoted.
 * Regression (a review of 2568cd1): a file without its header row had its
 * first row taken for one, and the message quoted that row's phone ("column
 * \"13800138000\" is unknown") in the terminal, errors and logs.
 */
static void test_an_unknown_column_is_named_by_its_position(void **state)
{
    (void)state;
    static const char *const names[] = {"card", "phone", "points"};
    static const char text[] = "card,13800138000,100\n";
    pgw_csv c;
    pgw_csv_init(&c, text, sizeof(text) - 1);
    int col[3];
    pgw_err err;
    expect_row(&c, 1, 3, (const char *const[]){"card", "13800138000", "100"});
    assert_int_equal(pgw_csv_columns(&row, names, 3, col, false, &err), PGW_EINVAL);
    if (strstr(err.msg, "13800138000") != NULL ||
        strstr(err.msg, "line 1: column 2 is unknown") == NULL ||
        strstr(err.msg, "card, phone, points") == NULL)
        fail_msg("\"%s\": want column 2 named by its position, the names the header may "
                 "have listed, and never the field",
                 err.msg);
}

/* A file read in chunks gives exactly the rows, line numbers and errors of
 * the same text read whole, with rows, quoted line breaks and a malformed
 * row straddling chunk boundaries. */
/* Writes `head`, `n` bytes of 'A', then `tail` to a new temporary file. */
static void write_long_file(char *path, const char *head, size_t n, const char *tail)
{
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(head, f);
    for (size_t i = 0; i < n; i++)
        fputc('A', f);
    fputs(tail, f);
    assert_int_equal(fclose(f), 0);
}

/* Reads the file at path (then removes it): its header, a row at line
 * `long_line` refused as longer than a chunk, the row "last" at line
 * `last_line`, and nothing else. */
static void expect_long_row_then_last(const char *path, size_t long_line, size_t last_line)
{
    pgw_csv_file *file = NULL;
    assert_int_equal(pgw_csv_file_open(path, &file, NULL), PGW_OK);
    static pgw_csv_row r;
    bool done = false;
    pgw_err err;
    assert_int_equal(pgw_csv_file_next(file, &r, &done, &err), PGW_OK); /* the header */
    assert_int_equal(pgw_csv_file_next(file, &r, &done, &err), PGW_EINVAL);
    assert_int_equal(r.line, long_line);
    assert_non_null(strstr(err.msg, "longer than"));
    assert_int_equal(pgw_csv_file_next(file, &r, &done, &err), PGW_OK);
    assert_false(done);
    assert_string_equal(r.fields[0], "last"); /* nothing of the long row in between */
    assert_int_equal(r.line, last_line);
    assert_int_equal(pgw_csv_file_next(file, &r, &done, &err), PGW_OK);
    assert_true(done);
    pgw_csv_file_close(file);
    unlink(path);
}

/* Writes text[0..len) to a new temporary file named into path. */
static void write_text_file(char *path, const char *text, size_t len)
{
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
}

/* Reads text[0..len) whole and from a file in chunks, twice (the second
 * time after a rewind): the same rows, lines and errors. Counts rows and
 * errors of one pass. */
static void expect_file_reads_as_text(const char *text, size_t len, size_t *rows, size_t *errors)
{
    char path[] = "/tmp/pgw-csv-XXXXXX";
    write_text_file(path, text, len);
    pgw_csv whole;
    pgw_csv_init(&whole, text, len);
    pgw_csv_file *file = NULL;
    assert_int_equal(pgw_csv_file_open(path, &file, NULL), PGW_OK);
    static pgw_csv_row a, b;
    *rows = *errors = 0;
    for (int pass = 0; pass < 2; pass++) {
        bool done_a = false, done_b = false;
        while (!done_a) {
            pgw_err ea, eb;
            int ra = pgw_csv_next(&whole, &a, &done_a, &ea);
            int rb = pgw_csv_file_next(file, &b, &done_b, &eb);
            assert_int_equal(ra, rb);
            assert_int_equal(done_a, done_b);
            assert_int_equal(a.line, b.line);
            if (ra != PGW_OK) {
                assert_string_equal(ea.msg, eb.msg);
                *errors += pass == 0;
                continue;
            }
            assert_int_equal(a.n, b.n);
            for (size_t f = 0; f < a.n; f++)
                assert_string_equal(a.fields[f], b.fields[f]);
            *rows += pass == 0 && !done_a;
        }
        pgw_csv_init(&whole, text, len);
        assert_int_equal(pgw_csv_file_rewind(file, NULL), PGW_OK);
    }
    pgw_csv_file_close(file);
    unlink(path);
}

/* Regression: a statement given as a pipe (`--statement <(iconv -f gbk
 * ...)`) was refused as the disk failing, "rewinding a CSV file: Illegal
 * seek" (exit 1), and a directory read as a header of "line 0". Both are
 * what the command was given: PGW_EINVAL (exit 2), saying what to do. */
static void test_a_pipe_or_a_directory_is_refused_as_given(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    char path[32];
    snprintf(path, sizeof(path), "/dev/fd/%d", fds[0]);
    pgw_csv_file *file = NULL;
    pgw_err err;
    assert_int_equal(pgw_csv_file_open(path, &file, &err), PGW_EINVAL);
    assert_null(file);
    assert_non_null(strstr(err.msg, "is not a file that can be read twice"));
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(pgw_csv_file_open("/tmp", &file, &err), PGW_EINVAL);
    assert_null(file);
    assert_non_null(strstr(err.msg, "/tmp is a directory"));
}

static void test_a_file_reads_as_the_whole_text(void **state)
{
    (void)state;
    size_t cap = 3 * PGW_CSV_CHUNK + 4096, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    len += (size_t)sprintf(text, "\xEF\xBB\xBF"
                                 "event_id,note,points\r\n");
    for (int i = 0; len + 200 < cap - 4096; i++) {
        if (i % 997 == 0)
            len += (size_t)sprintf(text + len, "\r\n\n"); /* blank lines */
        if (i % 1499 == 0)
            len += (size_t)sprintf(text + len, "E%d,\"open quote,%d\n", i, i); /* malformed */
        else if (i % 1301 == 0) /* a stray quote: the line is bad, the next ones are not */
            len += (size_t)sprintf(text + len, "E%d,ab\"c,%d\n", i, i);
        else if (i % 7 == 0)
            len +=
                (size_t)sprintf(text + len, "E%d,\"a \"\"quoted\"\",\nline break\",%d\r\n", i, i);
        else
            len += (size_t)sprintf(text + len, "E%d,plain %d,%d\n", i, i * 31, i);
    }
    size_t rows, errors;
    expect_file_reads_as_text(text, len, &rows, &errors);
    assert_true(rows > 100000); /* the chunks were really crossed */
    assert_true(errors >= 4);
    free(text);
    pgw_csv_file *file = NULL;
    pgw_err err;
    assert_int_equal(pgw_csv_file_open("/nonexistent/x.csv", &file, &err), PGW_ENOTFOUND);
}

/*
 * A text of `len` bytes: a header, rows of "n,n,n", one padding row so
 * that `tail` starts `back` bytes before the first chunk's end. The
 * caller frees it.
 */
static char *text_with_tail_at_chunk_end(size_t back, const char *tail, size_t *len)
{
    size_t at = PGW_CSV_CHUNK - back, tail_len = strlen(tail);
    char *text = malloc(at + tail_len);
    assert_non_null(text);
    size_t n = (size_t)sprintf(text, "a,b,c\n");
    while (n + 6 + 64 < at)
        n += (size_t)sprintf(text + n, "n,n,n\n");
    n += (size_t)sprintf(text + n, "p,q,");
    memset(text + n, 'A', at - n - 1);
    text[at - 1] = '\n';
    memcpy(text + at, tail, tail_len);
    *len = at + tail_len;
    return text;
}

/* Regression: a row whose empty first fields ended the first chunk lost
 * them (",,x" was read as "x"): the fields read went as a blank row of a
 * sheet, and the rest was read as a row of its own. */
static void test_a_row_cut_after_its_empty_fields_keeps_them(void **state)
{
    (void)state;
    size_t len, rows, errors;
    char *text = text_with_tail_at_chunk_end(2, ",,x\nlast,1,2\n", &len);
    expect_file_reads_as_text(text, len, &rows, &errors);
    assert_int_equal(errors, 0);
    free(text);
    text = text_with_tail_at_chunk_end(3, ",,\r\nlast,1,2\n", &len); /* a blank row, CRLF cut */
    expect_file_reads_as_text(text, len, &rows, &errors);
    assert_int_equal(errors, 0);
    free(text);
}

/* Regression: a chunk of blank lines before a row made the row, cut at
 * the chunk's end, look longer than a chunk: refused, and the row after
 * it read in its place. */
static void test_blank_lines_do_not_make_a_row_too_long(void **state)
{
    (void)state;
    size_t len = PGW_CSV_CHUNK + 64, rows, errors;
    char *text = malloc(len);
    assert_non_null(text);
    memset(text, '\n', PGW_CSV_CHUNK - 3);
    int tail = sprintf(text + PGW_CSV_CHUNK - 3, "a,b,c\nlast,1\n");
    len = PGW_CSV_CHUNK - 3 + (size_t)tail;
    expect_file_reads_as_text(text, len, &rows, &errors);
    assert_int_equal(rows, 2);
    assert_int_equal(errors, 0);
    free(text);
}

/* Regression: a row longer than a chunk after blank lines was reported
 * once for each of them (its dropping began at the first blank line). */
static void test_an_overlong_row_after_blank_lines_is_reported_once(void **state)
{
    (void)state;
    char path[] = "/tmp/pgw-csv-XXXXXX";
    write_long_file(path, "a,b\n\n\n\r\n\nlong,", PGW_CSV_CHUNK + 100, "\nlast,2\n");
    expect_long_row_then_last(path, 6, 7);
}

/* Regression: a row longer than a chunk was cut at the chunk's end and its
 * tail read as rows of its own (a way to slip rows into a statement). */
static void test_an_overlong_row_is_dropped_whole(void **state)
{
    (void)state;
    char path[] = "/tmp/pgw-csv-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("a,b\r\nfirst,1\r\nlong,", f);
    for (int i = 0; i < PGW_CSV_CHUNK + 100; i++)
        fputc(i % 7 == 0 ? '"' : 'A', f); /* stray quotes too */
    fputs("inj,x,1234\r\nlast,2\r\n", f);
    fclose(f);
    pgw_csv_file *file = NULL;
    assert_int_equal(pgw_csv_file_open(path, &file, NULL), PGW_OK);
    static pgw_csv_row r;
    bool done = false;
    pgw_err err;
    assert_int_equal(pgw_csv_file_next(file, &r, &done, &err), PGW_OK); /* the header */
    assert_int_equal(pgw_csv_file_next(file, &r, &done, &err), PGW_OK);
    assert_string_equal(r.fields[0], "first");
    assert_int_equal(pgw_csv_file_next(file, &r, &done, &err), PGW_EINVAL);
    assert_int_equal(r.line, 3);
    assert_non_null(strstr(err.msg, "longer than"));
    assert_int_equal(pgw_csv_file_next(file, &r, &done, &err), PGW_OK);
    assert_false(done);
    assert_string_equal(r.fields[0], "last"); /* nothing of the long row in between */
    assert_int_equal(r.line, 4);
    assert_int_equal(pgw_csv_file_next(file, &r, &done, &err), PGW_OK);
    assert_true(done);
    pgw_csv_file_close(file);
    unlink(path);
}

/* Regression: the rest of a row longer than a chunk was dropped to the next
 * line break, even one inside its quotes, and the quoted lines after it
 * were read as rows: a statement row slipped in where --repair would post
 * it. Now the row is followed to its real end, wherever its quoted line
 * breaks and "" fall: in the first chunk, or past it. */
static void test_an_overlong_row_is_dropped_to_its_real_end(void **state)
{
    (void)state;
    const char *heads[] = {"a,b\r\nlong,\"x\ninj,x,1\n", "a,b\r\nlong,\""};
    const char *tails[] = {"\"\"\ninj,y,2\r\n\",3\r\nlast,2\r\n",
                           "\ninj,x,1\n\"\",\r\n\"\r\nlast,2\r\n"};
    for (int t = 0; t < 2; t++) {
        char path[] = "/tmp/pgw-csv-XXXXXX";
        write_long_file(path, heads[t], PGW_CSV_CHUNK + 100, tails[t]);
        expect_long_row_then_last(path, 2, t == 0 ? 7 : 6);
    }
}

/* A number field: digits only, 1..18 of them, within its bounds; anything
 * else refused with the field quoted and *out untouched. */
static void test_a_number_field_is_digits_only(void **state)
{
    (void)state;
    static const struct {
        const char *field;
        int64_t lo, hi, want; /* want -1: refused */
    } cases[] = {
        {"0", 0, 10, 0},
        {"10", 0, 10, 10},
        {"0010", 0, 10, 10},
        {"11", 0, 10, -1},
        {"0", 1, 10, -1},
        {"999999999999999999", 0, INT64_MAX, 999999999999999999},
        {"0999999999999999999", 0, INT64_MAX, -1}, /* 19 digits */
        {"9223372036854775808", 0, INT64_MAX, -1}, /* past int64 */
        {"", 0, 10, -1},
        {" 5", 0, 10, -1},
        {"5 ", 0, 10, -1},
        {"+5", 0, 10, -1},
        {"-5", 0, 10, -1},
        {"5.0", 0, 10, -1},
        {"5e0", 0, 10, -1},
        {"\xef\xbc\x95", 0, 10, -1}, /* a full-width 5 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = -7;
        pgw_err err = {0};
        int rc = pgw_csv_digits(cases[i].field, cases[i].lo, cases[i].hi, &v, &err);
        if (cases[i].want >= 0 && (rc != PGW_OK || v != cases[i].want))
            fail_msg("\"%s\": rc %d, %lld (%s)", cases[i].field, rc, (long long)v, err.msg);
        if (cases[i].want < 0 && (rc != PGW_EINVAL || v != -7))
            fail_msg("\"%s\": rc %d, %lld, want EINVAL", cases[i].field, rc, (long long)v);
    }
    pgw_err err = {0};
    int64_t v = 0;
    assert_int_equal(pgw_csv_digits("+5", 1, 100, &v, &err), PGW_EINVAL);
    assert_string_equal(err.msg, "is not 1..100: character 1 is not a digit 0-9");
    assert_int_equal(pgw_csv_digits("x", 1, 100, &v, NULL), PGW_EINVAL);
}

/*
 * What a refused number field says: what is wrong with it, never the field
 * itself. Regression: it quoted up to 32 bytes of the field, and in a file
 * whose columns are shifted that is a phone or a card number, copied into
 * a log line and an HTTP answer (identity.c's refusals say a value's
 * shape only).
 */
static void test_a_refused_number_is_not_quoted(void **state)
{
    (void)state;
    static const struct {
        const char *field, *said;
    } cases[] = {
        {"13800138000", "is not 1..100: 11 digits, out of range"},
        {"+86 138-0013-8000", "is not 1..100: character 1 is not a digit 0-9"},
        {"138 0013 8000", "is not 1..100: character 4 is not a digit 0-9"},
        {"C100200300", "is not 1..100: character 1 is not a digit 0-9"},
        {"6222021234567890123", "is not 1..100: over 18 digits"},
        {"", "is not 1..100: empty"},
        {"0", "is not 1..100: 1 digit, out of range"},
        {"5\xe5\x85\x83", "is not 1..100: character 2 is not a digit 0-9"}, /* 5元 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgw_err err = {0};
        int64_t v = -7;
        assert_int_equal(pgw_csv_digits(cases[i].field, 1, 100, &v, &err), PGW_EINVAL);
        if (strcmp(err.msg, cases[i].said) != 0)
            fail_msg("\"%s\": said \"%s\", want \"%s\"", cases[i].field, err.msg, cases[i].said);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_what_excel_writes),
        cmocka_unit_test(test_malformed_rows_are_reported_and_skipped),
        cmocka_unit_test(test_field_count_is_bounded),
        cmocka_unit_test(test_a_full_row_refused_otherwise_is_not_too_wide),
        cmocka_unit_test(test_a_field_not_utf8_is_a_bad_row),
        cmocka_unit_test(test_a_field_with_a_nul_byte_is_a_bad_row),
        cmocka_unit_test(test_a_bad_row_is_skipped_to_its_own_end),
        cmocka_unit_test(test_columns_are_mapped_by_name),
        cmocka_unit_test(test_an_unknown_column_is_named_by_its_position),
        cmocka_unit_test(test_a_file_reads_as_the_whole_text),
        cmocka_unit_test(test_a_pipe_or_a_directory_is_refused_as_given),
        cmocka_unit_test(test_an_overlong_row_is_dropped_whole),
        cmocka_unit_test(test_an_overlong_row_is_dropped_to_its_real_end),
        cmocka_unit_test(test_a_row_cut_after_its_empty_fields_keeps_them),
        cmocka_unit_test(test_blank_lines_do_not_make_a_row_too_long),
        cmocka_unit_test(test_an_overlong_row_after_blank_lines_is_reported_once),
        cmocka_unit_test(test_a_number_field_is_digits_only),
        cmocka_unit_test(test_a_refused_number_is_not_quoted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
