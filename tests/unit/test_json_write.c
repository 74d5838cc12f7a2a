/*
 * test_json_write.c - the allocation-free JSON writer: what it writes parses
 * back (jansson) to what was written, escapes included; commas in nested
 * containers; a text that does not fit is marked, never cut silently; an
 * object reopened takes more members.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "rng.h"
#include "util/json_write.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_nested_containers_and_commas(void **state)
{
    (void)state;
    char buf[256];
    pgw_json_out o;
    pgw_json_out_init(&o, buf, sizeof(buf));
    pgw_json_out_begin_object(&o);
    pgw_json_out_key_int(&o, "a", -9223372036854775807LL - 1);
    pgw_json_out_key(&o, "list");
    pgw_json_out_begin_array(&o);
    pgw_json_out_begin_object(&o);
    pgw_json_out_end_object(&o);
    pgw_json_out_int(&o, 7);
    pgw_json_out_begin_array(&o);
    pgw_json_out_end_array(&o);
    pgw_json_out_bool(&o, true);
    pgw_json_out_end_array(&o);
    pgw_json_out_key(&o, "empty");
    pgw_json_out_begin_array(&o);
    pgw_json_out_end_array(&o);
    pgw_json_out_key_string(&o, "last", "x");
    pgw_json_out_end_object(&o);
    assert_false(o.overflow);
    assert_string_equal(buf, "{\"a\":-9223372036854775808,\"list\":[{},7,[],true],\"empty\":[],"
                             "\"last\":\"x\"}");
    assert_int_equal(o.len, strlen(buf));
}

/* Integers as printf writes them: edges, powers of ten and their
 * neighbours, and a spread of values of every length. */
static void test_integers_as_printf_writes_them(void **state)
{
    (void)state;
    int64_t values[200];
    size_t n = 0;
    values[n++] = 0;
    values[n++] = INT64_MAX;
    values[n++] = INT64_MIN;
    values[n++] = INT64_MIN + 1;
    for (int64_t p = 1; p <= INT64_MAX / 10; p *= 10) {
        int64_t around[] = {p - 1, p, p + 1, -p - 1, -p, -p + 1};
        for (size_t i = 0; i < sizeof(around) / sizeof(around[0]); i++)
            values[n++] = around[i];
    }
    uint64_t x = 0x9E3779B97F4A7C15u;
    while (n < sizeof(values) / sizeof(values[0])) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift */
        values[n++] = (int64_t)(x >> (x % 63));
    }
    for (size_t i = 0; i < n; i++) {
        char buf[32], want[32];
        pgw_json_out o;
        pgw_json_out_init(&o, buf, sizeof(buf));
        pgw_json_out_int(&o, values[i]);
        snprintf(want, sizeof(want), "%lld", (long long)values[i]);
        assert_false(o.overflow);
        assert_string_equal(buf, want);
        char text[PGW_INT_TEXT_MAX]; /* the digits alone, as an HTTP head takes them */
        assert_int_equal(pgw_int_text(values[i], text), strlen(want));
        assert_string_equal(text, want);
    }
    /* Every value of up to five digits: each pair of digits, each length. */
    for (int64_t v = -99999; v <= 99999; v++) {
        char text[PGW_INT_TEXT_MAX], want[32];
        snprintf(want, sizeof(want), "%lld", (long long)v);
        assert_int_equal(pgw_int_text(v, text), strlen(want));
        assert_string_equal(text, want);
    }
}

static void test_strings_escape_and_parse_back(void **state)
{
    (void)state;
    /* Quotes, backslashes, every control character, UTF-8 and DEL. */
    char text[64] = "q\"b\\s/ \xe7\xa7\xaf\xe5\x88\x86 \x7f";
    size_t n = strlen(text);
    for (int c = 1; c < 0x20; c++)
        text[n++] = (char)c;
    text[n] = '\0';
    char buf[512];
    pgw_json_out o;
    pgw_json_out_init(&o, buf, sizeof(buf));
    pgw_json_out_begin_object(&o);
    pgw_json_out_key_string(&o, text, text); /* keys are escaped too */
    pgw_json_out_end_object(&o);
    assert_false(o.overflow);
    json_error_t jerr;
    json_t *back = json_loads(buf, 0, &jerr);
    assert_non_null(back);
    assert_string_equal(json_string_value(json_object_get(back, text)), text);
    assert_int_equal(json_object_size(back), 1);
    /* The forms jansson writes, so answers stay byte-for-byte the same. */
    char *theirs = json_dumps(back, JSON_COMPACT);
    assert_string_equal(buf, theirs);
    free(theirs);
    json_decref(back);
}

static void test_overflow_is_marked(void **state)
{
    (void)state;
    char buf[16];
    pgw_json_out o;
    pgw_json_out_init(&o, buf, sizeof(buf));
    pgw_json_out_begin_object(&o);
    pgw_json_out_key_string(&o, "k", "0123456789"); /* 18 characters: 3 too many */
    pgw_json_out_end_object(&o);
    assert_true(o.overflow);
    assert_true(strlen(buf) < sizeof(buf)); /* always terminated within the buffer */
    /* Exactly full: 15 characters and the NUL fit. */
    pgw_json_out_init(&o, buf, sizeof(buf));
    pgw_json_out_begin_object(&o);
    pgw_json_out_key_string(&o, "k", "0123456");
    pgw_json_out_end_object(&o);
    assert_false(o.overflow);
    assert_string_equal(buf, "{\"k\":\"0123456\"}");
}

/* The writer as strings were written before they were written straight
 * (json_write.c's put_quoted_in_pieces): the oracle of the next test. */
typedef struct pieces {
    char *buf;
    size_t cap, len;
    bool overflow;
} pieces;

static void pieces_put(pieces *r, const char *bytes, size_t n)
{
    if (r->overflow || n >= r->cap - r->len) {
        r->overflow = true;
        return;
    }
    memcpy(r->buf + r->len, bytes, n);
    r->len += n;
    r->buf[r->len] = '\0';
}

static void pieces_quoted(pieces *r, const char *text)
{
    pieces_put(r, "\"", 1);
    const char *run = text;
    for (const char *p = text; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        pieces_put(r, run, (size_t)(p - run));
        run = p + 1;
        char esc[8];
        const char *two = c == '"'    ? "\\\""
                          : c == '\\' ? "\\\\"
                          : c == '\n' ? "\\n"
                          : c == '\r' ? "\\r"
                          : c == '\t' ? "\\t"
                          : c == '\b' ? "\\b"
                          : c == '\f' ? "\\f"
                                      : NULL;
        if (two != NULL) {
            pieces_put(r, two, 2);
        } else {
            snprintf(esc, sizeof(esc), "\\u%04X", (unsigned)c);
            pieces_put(r, esc, 6);
        }
    }
    pieces_put(r, run, strlen(run));
    pieces_put(r, "\"", 1);
}

/* Strings of quotes, backslashes, control characters, UTF-8, DEL and
 * letters, written into buffers of every size from one byte to more than
 * enough: the whole buffer (past the NUL too), length and overflow are
 * what the piecewise writer left, where they fit and where they do not. */
static void test_strings_as_written_piece_by_piece(void **state)
{
    (void)state;
    static const char BYTES[] = "\"\\\b\f\n\r\t\x01\x1f\x7f\xc2\x80\xe7\xa7\xaf /azAZ09";
    uint64_t seed = 45;
    enum { TEXT_MAX = 40, CAP_MAX = 2 * (6 * TEXT_MAX + 3) + 8 };
    for (int trial = 0; trial < 1500; trial++) {
        char text[TEXT_MAX + 1];
        size_t n = (size_t)rng_pick(&seed, 0, TEXT_MAX);
        for (size_t i = 0; i < n; i++)
            text[i] = BYTES[rng_pick(&seed, 0, (int64_t)sizeof(BYTES) - 2)];
        text[n] = '\0';
        for (size_t cap = 1; cap <= CAP_MAX; cap++) {
            char mine[CAP_MAX], theirs[CAP_MAX];
            memset(mine, '#', sizeof(mine));
            memset(theirs, '#', sizeof(theirs));
            pgw_json_out o;
            pgw_json_out_init(&o, mine, cap);
            pgw_json_out_begin_array(&o);
            pgw_json_out_string(&o, text);
            pgw_json_out_key(&o, text); /* as a key, after a comma */
            pieces r = {theirs, cap, 0, false};
            theirs[0] = '\0';
            pieces_put(&r, "[", 1);
            pieces_quoted(&r, text);
            pieces_put(&r, ",", 1);
            pieces_quoted(&r, text);
            pieces_put(&r, ":", 1);
            if (memcmp(mine, theirs, sizeof(mine)) != 0 || o.len != r.len ||
                o.overflow != r.overflow)
                fail_msg("trial %d, cap %zu: \"%s\" (%zu, %d) against \"%s\" (%zu, %d)", trial, cap,
                         mine, o.len, o.overflow, theirs, r.len, r.overflow);
        }
    }
}

static void test_reopen_adds_members(void **state)
{
    (void)state;
    char buf[64] = "{\"a\":1}";
    pgw_json_out o;
    pgw_json_out_reopen(&o, buf, sizeof(buf), strlen(buf));
    pgw_json_out_key_int(&o, "b", 2);
    pgw_json_out_end_object(&o);
    assert_string_equal(buf, "{\"a\":1,\"b\":2}");
    strcpy(buf, "{}");
    pgw_json_out_reopen(&o, buf, sizeof(buf), 2);
    pgw_json_out_key_int(&o, "b", 2);
    pgw_json_out_end_object(&o);
    assert_string_equal(buf, "{\"b\":2}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nested_containers_and_commas),
        cmocka_unit_test(test_integers_as_printf_writes_them),
        cmocka_unit_test(test_strings_escape_and_parse_back),
        cmocka_unit_test(test_overflow_is_marked),
        cmocka_unit_test(test_strings_as_written_piece_by_piece),
        cmocka_unit_test(test_reopen_adds_members),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
