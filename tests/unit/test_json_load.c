/*
 * test_json_load.c - util/json_load.h: the plain reader gives jansson's
 * values, and whatever it leaves goes to jansson, whose refusals stay
 * word for word. Checked on bodies the API sees, on the cases the plain
 * reader must leave, and on generated bodies, mutated or not, against
 * json_loadb itself.
 */
#include "rng.h"
#include "util/json_load.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- comparing with jansson ------------------------------------------------------------ */

/* The value as text, keys in their order: equal texts are equal values,
 * integers and reals apart ("1" and "1.0"). */
static char *dump(const json_t *value)
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(text);
    return text;
}

typedef struct {
    long inputs, plain, refused;
} tally;

/*
 * The body as json_loadb reads it and as pgw_json_load and the plain
 * reader do: the same value when they take it, jansson's very error when
 * not. Returns whether the plain reader took it.
 */
static bool agrees_with_jansson(const char *body, size_t len, tally *t)
{
    json_error_t want_err, got_err;
    json_t *want = json_loadb(body, len, JSON_REJECT_DUPLICATES, &want_err);
    json_t *plain = pgw_json_load_plain(body, len);
    json_t *got = NULL;
    int rc = pgw_json_load(body, len, &got, &got_err);
    t->inputs++;
    t->plain += plain != NULL;
    t->refused += want == NULL;
    if (plain != NULL) {
        if (want == NULL)
            fail_msg("the plain reader took what jansson refuses (%s): %.*s", want_err.text,
                     (int)len, body);
        assert_true(json_equal(plain, want));
        char *a = dump(plain), *b = dump(want);
        assert_string_equal(a, b);
        free(a);
        free(b);
    }
    assert_int_equal(rc, want != NULL ? 0 : -1);
    if (want != NULL) {
        char *a = dump(got), *b = dump(want);
        assert_string_equal(a, b);
        free(a);
        free(b);
    } else {
        assert_null(got);
        assert_string_equal(got_err.text, want_err.text);
        assert_int_equal(got_err.line, want_err.line);
        assert_int_equal(got_err.column, want_err.column);
        assert_int_equal(got_err.position, want_err.position);
    }
    bool took = plain != NULL;
    json_decref(plain);
    json_decref(got);
    json_decref(want);
    return took;
}

static bool agrees(const char *body, tally *t)
{
    return agrees_with_jansson(body, strlen(body), t);
}

/* ---- fixed bodies ------------------------------------------------------------------------ */

static void test_reads_events_as_jansson_does(void **state)
{
    (void)state;
    tally t = {0};
    static const char *const bodies[] = {
        "{\"event_id\":\"B3-1207\",\"channel\":\"store\",\"shop_id\":\"S002\","
        "\"type\":\"purchase\",\"occurred_at\":\"2026-11-24T10:15:00+08:00\","
        "\"member\":{\"member_id\":\"M8456\"},\"amount_fen\":12800}",
        "{\n  \"event_id\": \"S001-20261125-000124\",\n  \"channel\": \"store\",\n"
        "  \"items\": [{\"sku\": \"A1\", \"amount_fen\": 12800, \"qty\": 1}],\n"
        "  \"receipt_no\": null, \"paid\": true, \"void\": false\r\n}\n",
        "{\"name\":\"\xe5\xbc\xa0\xe4\xb8\x89\",\"escaped\":\"\\u5f20\\u4e09 \\ud83d\\ude00\","
        "\"quote\":\"a\\\"b\\\\c\\/"
        "d\\b\\f\\n\\r\\t\",\"\":\"\",\"n\":-0,\"m\":-123456789012345678}",
        "{\"a\":{},\"b\":[],\"c\":[[],{}],\"d\":[1,\"x\",null,{\"e\":[true]}]}",
        "[{\"events\":[]}]",
        " \t{}\r\n ",
        "{\"\\u0041\\u00e9\\uFFFF\":\"\\u20AC\"}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        if (!agrees(bodies[i], &t))
            fail_msg("the plain reader left body %zu to jansson: %s", i, bodies[i]);
}

/* What the plain reader must leave to jansson: jansson takes some of it
 * (reals, long integers, deep nesting) and refuses the rest with its own
 * message, which stays the answer's. */
static void test_leaves_the_rest_to_jansson(void **state)
{
    (void)state;
    tally t = {0};
    static const char *const taken_by_jansson[] = {
        "{\"a\":1.5}",
        "{\"a\":1e3}",
        "{\"a\":-0.0}",
        "{\"a\":1234567890123456789}",
        "{\"a\":-9223372036854775808}",
        "\"a\"",
        "1",
    };
    for (size_t i = 0; i < sizeof(taken_by_jansson) / sizeof(taken_by_jansson[0]); i++)
        if (agrees(taken_by_jansson[i], &t))
            fail_msg("the plain reader took %s", taken_by_jansson[i]);
    assert_int_equal(t.refused, 2); /* only the last two: not an object or array */
    static const char *const refused[] = {
        "{\"a\":1,\"a\":2}",
        "{\"a\":1,\"\\u0061\":2}",
        "{\"a\":\"x\\u0000y\"}",
        "{\"a\\u0000\":1}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\udc00\\ud800\"}",
        "{\"a\":\"\\ud800\\u0041\"}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12g4\"}",
        "{\"a\":\"tab\there\"}",
        "{\"a\":\"\xc3\x28\"}",
        "{\"a\":\"\xed\xa0\x80\"}",
        "{\"a\":\"\xc0\xaf\"}",
        "{\"a\":\"\xf4\x90\x80\x80\"}",
        "{\"a\":\"\xe5\xbc\"}",
        "{\"a\":01}",
        "{\"a\":-}",
        "{\"a\":99999999999999999999}",
        "{\"a\":1.}",
        "{\"a\":1e400}",
        "{\"a\":truex}",
        "{\"a\":nul}",
        "{\"a\":1,}",
        "[1,]",
        "{\"a\" 1}",
        "{a:1}",
        "{\"a\":1}}",
        "{\"a\":1} x",
        "{\"a\":1",
        "{\"a\":\"unterminated",
        "",
        "\xef\xbb\xbf{}",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (agrees(refused[i], &t))
            fail_msg("the plain reader took %s", refused[i]);
    assert_int_equal(t.refused, 2 + (long)(sizeof(refused) / sizeof(refused[0])));
    /* NUL bytes, which a C string cannot carry */
    static const char nul_in_string[] = "{\"a\":\"x\0y\"}", nul_after[] = "{}\0";
    assert_false(agrees_with_jansson(nul_in_string, sizeof(nul_in_string) - 1, &t));
    assert_false(agrees_with_jansson(nul_after, sizeof(nul_after) - 1, &t));
}

/* The plain reader's depth limit, and jansson's message past its own. */
static void test_depth(void **state)
{
    (void)state;
    tally t = {0};
    char body[2 * 2100 + 1];
    for (size_t depth = PGW_JSON_PLAIN_DEPTH - 1; depth <= PGW_JSON_PLAIN_DEPTH + 1; depth++) {
        memset(body, '[', depth);
        memset(body + depth, ']', depth);
        assert_int_equal(agrees_with_jansson(body, 2 * depth, &t), depth <= PGW_JSON_PLAIN_DEPTH);
    }
    memset(body, '[', 2100);
    memset(body + 2100, ']', 2100);
    assert_false(agrees_with_jansson(body, 4200, &t));
    json_t *value = NULL;
    json_error_t jerr;
    assert_int_equal(pgw_json_load(body, 4200, &value, &jerr), -1);
    assert_string_equal(jerr.text, "maximum parsing depth reached near '['");
}

/* ---- generated bodies -------------------------------------------------------------------- */

typedef struct {
    char buf[4096];
    size_t len;
    uint64_t rng;
    bool wild; /* anything, not only what the plain reader takes */
    bool full; /* a body too long for buf, cut: made again */
} gen;

static void put(gen *g, const char *s, size_t n)
{
    g->full |= g->len + n >= sizeof(g->buf);
    if (!g->full) {
        memcpy(g->buf + g->len, s, n);
        g->len += n;
    }
}

static void put_text(gen *g, const char *s)
{
    put(g, s, strlen(s));
}

static int64_t pick(gen *g, int64_t lo, int64_t hi)
{
    return rng_pick(&g->rng, lo, hi);
}

static void space(gen *g)
{
    static const char SPACE[] = " \t\n\r";
    for (int64_t n = pick(g, -3, 2); n > 0; n--)
        put(g, &SPACE[pick(g, 0, 3)], 1);
}

static void put_cp_utf8(gen *g, uint32_t cp)
{
    char out[4];
    size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    static const unsigned char lead[] = {0, 0, 0xc0, 0xe0, 0xf0};
    for (size_t i = n - 1; i > 0; i--, cp >>= 6)
        out[i] = (char)(0x80 | (cp & 0x3f));
    out[0] = (char)(n == 1 ? cp : (lead[n] | cp));
    put(g, out, n);
}

/* A code point outside the surrogates, of 1 to 4 bytes in UTF-8. */
static uint32_t some_cp(gen *g)
{
    static const uint32_t top[] = {0x7f, 0x7ff, 0xffff, 0x10ffff};
    uint32_t cp;
    do
        cp = (uint32_t)pick(g, 0x20, top[pick(g, 0, 3)]);
    while ((cp >= 0xd800 && cp <= 0xdfff) || cp == '"' || cp == '\\');
    return cp;
}

static void put_u_escape(gen *g, uint32_t unit)
{
    char out[8];
    snprintf(out, sizeof(out), pick(g, 0, 1) ? "\\u%04x" : "\\u%04X", unit);
    put(g, out, 6);
}

/* One piece of a string's text. */
static void string_piece(gen *g)
{
    static const char *const SIMPLE[] = {"\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"};
    static const char *const BAD[] = {
        "\\x",
        "\\U0041",
        "\\u12",
        "\\u00zz",
        "\t",
        "\x01",
        "\x1f",
        "\x80",
        "\xc3(",
        "\xc0\xaf",
        "\xed\xa0\x80",
        "\xf5\x80\x80\x80",
        "\xf4\x90\x80\x80",
        "\xe5\xbc",
        "\xff",
        "\\",
    };
    switch (pick(g, 0, g->wild ? 60 : 5)) {
    case 0:
    case 1: {
        char c = (char)pick(g, 0x20, 0x7e);
        if (c != '"' && c != '\\')
            put(g, &c, 1);
        break;
    }
    case 2:
        put_text(g, SIMPLE[pick(g, 0, 7)]);
        break;
    case 3: {
        uint32_t cp = some_cp(g);
        if (cp >= 0x10000) {
            put_u_escape(g, 0xd800 + ((cp - 0x10000) >> 10));
            put_u_escape(g, 0xdc00 + ((cp - 0x10000) & 0x3ff));
        } else {
            put_u_escape(g, cp);
        }
        break;
    }
    case 4:
    case 5:
        put_cp_utf8(g, some_cp(g));
        break;
    case 6: /* a lone or misplaced surrogate, or \u0000 */
        put_u_escape(g, pick(g, 0, 2) == 0 ? 0 : (uint32_t)pick(g, 0xd800, 0xdfff));
        break;
    case 7:
        put_text(g, BAD[pick(g, 0, (int64_t)(sizeof(BAD) / sizeof(BAD[0])) - 1)]);
        break;
    default: /* a wild body's pieces are plain mostly */
        put_cp_utf8(g, some_cp(g));
        break;
    }
}

/* A string of `pieces` pieces after `prefix` (raw text). */
static void string(gen *g, const char *prefix, int64_t pieces)
{
    put_text(g, "\"");
    put_text(g, prefix);
    for (int64_t i = 0; i < pieces; i++)
        string_piece(g);
    put_text(g, "\"");
}

static void number(gen *g)
{
    static const char *const ODD[] = {"1.5", "-0.0", "1e3", "1E+2", "2.5e-3", "0.1e1",
                                      "01",  "-",    "1.",  ".5",   "1e400",  "00"};
    if (g->wild && pick(g, 0, 3) == 0) {
        put_text(g, ODD[pick(g, 0, (int64_t)(sizeof(ODD) / sizeof(ODD[0])) - 1)]);
        return;
    }
    if (pick(g, 0, 1))
        put_text(g, "-");
    int64_t digits = pick(g, 1, g->wild && pick(g, 0, 3) == 0 ? 21 : 18);
    char d = (char)(digits == 1 ? pick(g, '0', '9') : pick(g, '1', '9'));
    put(g, &d, 1);
    for (int64_t i = 1; i < digits; i++) {
        d = (char)pick(g, '0', '9');
        put(g, &d, 1);
    }
}

static void value(gen *g, int depth);

/* Plain bodies' keys differ by their first byte (the member's index); wild
 * ones come from a few, so that some repeat, escaped or not. */
static void key(gen *g, int index)
{
    static const char *const FEW[] = {"\"a\"", "\"\\u0061\"", "\"b\"", "\"\"", "\"event_id\""};
    if (g->wild && pick(g, 0, 5) == 0) {
        put_text(g, FEW[pick(g, 0, 4)]);
        return;
    }
    char first[2] = {(char)('A' + index), '\0'};
    string(g, first, pick(g, 0, 3));
}

static void container(gen *g, int depth, bool object)
{
    put_text(g, object ? "{" : "[");
    space(g);
    int64_t n = pick(g, 0, 5);
    for (int i = 0; i < n; i++) {
        if (i > 0) {
            put_text(g, ",");
            space(g);
        }
        if (object) {
            key(g, i);
            space(g);
            put_text(g, ":");
            space(g);
        }
        value(g, depth + 1);
        space(g);
    }
    put_text(g, object ? "}" : "]");
}

static void value(gen *g, int depth)
{
    int limit = g->wild ? PGW_JSON_PLAIN_DEPTH + 2 : PGW_JSON_PLAIN_DEPTH;
    int64_t kind = pick(g, 0, depth < 3 ? 4 : 9);
    if (kind <= 1 && depth < limit) {
        container(g, depth, kind == 0);
        return;
    }
    if (kind == 2 || kind == 5) {
        string(g, "", pick(g, 0, 6));
        return;
    }
    if (kind == 3 || kind == 6) {
        number(g);
        return;
    }
    static const char *const WORDS[] = {"true", "false", "null"};
    put_text(g, WORDS[pick(g, 0, 2)]);
}

/* A body's top level: an object mostly, an array at times. */
static void body(gen *g)
{
    do {
        g->len = 0;
        g->full = false;
        space(g);
        container(g, 1, pick(g, 0, 4) != 0);
        space(g);
    } while (g->full);
}

/* One to three bytes changed, cut, doubled or dropped. */
static void mutate(gen *g)
{
    static const char SHARP[] = "\"\\{}[],: 0-e.u\x80\xff";
    for (int64_t n = pick(g, 1, 3); n > 0 && g->len > 0; n--) {
        size_t at = (size_t)pick(g, 0, (int64_t)g->len - 1);
        switch (pick(g, 0, 4)) {
        case 0:
            g->buf[at] = SHARP[pick(g, 0, (int64_t)sizeof(SHARP) - 1)]; /* its NUL too */
            break;
        case 1:
            g->buf[at] = (char)pick(g, 0, 255);
            break;
        case 2:
            memmove(g->buf + at, g->buf + at + 1, g->len - at - 1);
            g->len--;
            break;
        case 3:
            if (g->len + 1 < sizeof(g->buf)) {
                memmove(g->buf + at + 1, g->buf + at, g->len - at);
                g->len++;
            }
            break;
        default:
            g->len = at;
            break;
        }
    }
}

/* Plain bodies: each one the plain reader must take, as jansson reads it. */
static void test_generated_plain_bodies(void **state)
{
    (void)state;
    tally t = {0};
    gen g = {.rng = 20261203};
    for (int i = 0; i < 6000; i++) {
        body(&g);
        if (!agrees_with_jansson(g.buf, g.len, &t))
            fail_msg("body %d left to jansson: %.*s", i, (int)g.len, g.buf);
    }
    assert_int_equal(t.refused, 0);
}

/* Anything, and mutations of plain and wild bodies: whatever the plain
 * reader takes is jansson's value, and every refusal jansson's. The tally
 * shows both paths ran many times. */
static void test_generated_bodies_against_jansson(void **state)
{
    (void)state;
    tally t = {0};
    gen g = {.rng = 4};
    for (int i = 0; i < 30000; i++) {
        g.wild = i % 3 != 0;
        body(&g);
        if (i % 2 == 0)
            mutate(&g);
        (void)agrees_with_jansson(g.buf, g.len, &t);
    }
    print_message("%ld bodies: %ld taken by the plain reader, %ld refused by jansson\n", t.inputs,
                  t.plain, t.refused);
    assert_true(t.plain > t.inputs / 5);
    assert_true(t.refused > t.inputs / 5);
    assert_true(t.inputs - t.plain - t.refused > t.inputs / 40); /* taken by jansson only */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_events_as_jansson_does),
        cmocka_unit_test(test_leaves_the_rest_to_jansson),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_generated_plain_bodies),
        cmocka_unit_test(test_generated_bodies_against_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
