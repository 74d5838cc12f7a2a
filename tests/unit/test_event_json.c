/*
 * test_event_json.c - the universal inbound event (API.md "Events") and the
 * quote context: every field's type, bound and presence rule, and the JSON
 * path in every error.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "rng.h"

#include "core/digest.h"
#include "core/text.h"
#include "core/utf8.h"
#include "server/event_command.h"
#include "server/event_json.h"
#include "util/json_read.h"

#include <stdio.h>

#include <stdlib.h>
#include <string.h>

static pgw_rules *make_rules(void)
{
    pgw_rules *rules = calloc(1, sizeof(*rules));
    assert_non_null(rules);
    rules->n_formats = 1;
    strcpy(rules->formats[0].name, "retail");
    rules->formats[0].fen_per_point = 100;
    rules->n_shops = 2;
    strcpy(rules->shops[0].id, "S001");
    strcpy(rules->shops[1].id, "S002");
    return rules;
}

static int parse(const char *text, pgw_event_doc *doc, pgw_err *err)
{
    json_error_t jerr;
    json_t *obj = json_loads(text, 0, &jerr);
    assert_non_null(obj);
    pgw_rules *rules = make_rules();
    int rc = pgw_event_from_json(obj, rules, doc, err);
    free(rules);
    json_decref(obj);
    return rc;
}

/* API.md's purchase. */
static const char API_EXAMPLE[] =
    "{\"event_id\": \"S001-20261124-000123\", \"channel\": \"store\","
    " \"shop_id\": \"S001\", \"type\": \"purchase\","
    " \"occurred_at\": \"2026-11-24T10:15:00+08:00\","
    " \"member\": {\"phone\": \"+86 138 0013 8000\"}, \"amount_fen\": 12800,"
    " \"items\": [{\"sku\": \"A1\", \"category\": \"shoes\", \"amount_fen\": 12800,"
    " \"qty\": 1}], \"receipt_no\": \"R123\"}";

static void test_api_example_parses(void **state)
{
    (void)state;
    pgw_event_doc *doc = calloc(1, sizeof(*doc));
    pgw_err err;
    int rc = parse(API_EXAMPLE, doc, &err);
    assert_int_equal(rc, PGW_OK);
    assert_string_equal(doc->event_id, "S001-20261124-000123");
    assert_int_equal(doc->event.type, PGW_EVENT_PURCHASE);
    assert_int_equal(doc->event.shop, 0);
    assert_int_equal(doc->event.amount_fen, 12800);
    /* 10:15 in Shanghai is 02:15 UTC. */
    assert_int_equal(doc->event.occurred_at, 1795486500);
    assert_int_equal(doc->member.kind, PGW_ID_PHONE);
    assert_string_equal(doc->member.value, "+8613800138000");
    assert_int_equal(doc->event.n_items, 1);
    assert_ptr_equal(doc->event.items, doc->items);
    assert_string_equal(doc->items[0].category, "shoes");
    assert_string_equal(doc->receipt_no, "R123");
    free(doc);
}

/* An event may be dated at most PGW_EVENT_AHEAD_MAX_S after the gateway's
 * clock (a till's fast clock); later, it is refused before anything else.
 * Dated before, by any amount, it is taken (a till's offline backlog). */
static void test_events_ahead_of_the_clock(void **state)
{
    (void)state;
    static const char text[] =
        "{\"event_id\": \"E1\", \"channel\": \"store\", \"shop_id\": \"S001\","
        " \"type\": \"purchase\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\","
        " \"member\": {\"member_id\": \"M1\"}, \"amount_fen\": 12800}";
    json_error_t jerr;
    json_t *obj = json_loads(text, 0, &jerr);
    assert_non_null(obj);
    pgw_event_doc *doc = calloc(1, sizeof(*doc));
    pgw_command *cmd = calloc(1, sizeof(*cmd));
    pgw_earning earning;
    pgw_err err;
    assert_int_equal(parse(text, doc, &err), PGW_OK);
    const int64_t at = doc->event.occurred_at;
    int64_t nows[] = {at - PGW_EVENT_AHEAD_MAX_S, at, at + 86400 * 365};
    for (size_t i = 0; i < sizeof(nows) / sizeof(nows[0]); i++) {
        memset(cmd, 0, sizeof(*cmd));
        assert_int_equal(pgw_event_command(NULL, obj, doc, nows[i], &earning, cmd, &err), PGW_OK);
        assert_int_equal(cmd->at, at);
    }
    memset(cmd, 0, sizeof(*cmd));
    assert_int_equal(
        pgw_event_command(NULL, obj, doc, at - PGW_EVENT_AHEAD_MAX_S - 1, &earning, cmd, &err),
        PGW_EINVAL);
    /* With the gateway's clock, as a signature's refusal gives it (in
     * UTC: the log's redaction keeps a date), for the till's clock to be
     * set by. */
    assert_string_equal(err.msg, "$.occurred_at is 301 s ahead of the gateway's clock "
                                 "(2026-11-24T02:09:59Z), more than the 300 s taken: check "
                                 "the sender's clock");
    assert_string_equal(cmd->key, ""); /* refused before anything was filled */
    json_decref(obj);
    free(cmd);
    free(doc);
}

/* `text` with its occurred_at (and, not NULL, its member's phone) set, parsed
 * in a mall of zone `tz`, and fingerprinted as an event into cmd. */
static void fingerprint_at(const char *text, const char *when, const char *phone, const char *tz,
                           json_t **obj, pgw_command *cmd)
{
    *obj = json_loads(text, 0, NULL);
    assert_non_null(*obj);
    json_object_set_new(*obj, "occurred_at", json_string(when));
    if (phone != NULL)
        json_object_set_new(*obj, "member", json_pack("{s:s}", "phone", phone));
    pgw_rules *rules = make_rules();
    pgw_event_doc *doc = calloc(1, sizeof(*doc));
    pgw_err err;
    assert_int_equal(pgw_tz_lookup(tz, &rules->tz, &err), PGW_OK);
    assert_int_equal(pgw_event_from_json(*obj, rules, doc, &err), PGW_OK);
    memset(cmd, 0xA5, sizeof(*cmd)); /* every flag is set, not left as it was */
    assert_int_equal(pgw_event_fingerprint(*obj, doc, cmd, &err), PGW_OK);
    free(doc);
    free(rules);
}

/*
 * Regression: a till's retry writing occurred_at in another offset was
 * another request (409), though it names the same instant. Any spelling of
 * one second has one fingerprint; a body in normal form (the mall's zone,
 * as the gateway writes times) keeps the one it always had, and one written
 * otherwise keeps beside it the fingerprints keys were recorded under
 * before: its own, and with its phone normalised and its time as sent.
 */
static void test_any_offset_of_one_instant_is_one_request(void **state)
{
    (void)state;
    static const char text[] =
        "{\"event_id\": \"E1\", \"channel\": \"store\", \"shop_id\": \"S001\","
        " \"type\": \"purchase\", \"occurred_at\": \"\","
        " \"member\": {\"member_id\": \"M1\"}, \"amount_fen\": 12800}";
    const char *shanghai = "Asia/Shanghai";
    pgw_command *normal = calloc(1, sizeof(*normal)), *cmd = calloc(1, sizeof(*cmd));
    json_t *obj = NULL;
    uint8_t own[PGW_HASH_LEN];
    fingerprint_at(text, "2026-11-24T10:15:00+08:00", NULL, shanghai, &obj, normal);
    assert_int_equal(pgw_json_fingerprint(obj, own), PGW_OK);
    assert_memory_equal(normal->fingerprint, own, PGW_HASH_LEN); /* as it always was */
    assert_false(normal->has_fingerprint_as_sent);
    assert_false(normal->has_fingerprint_time_as_sent);
    json_decref(obj);
    static const char *const same[] = {
        "2026-11-24T02:15:00Z",      "2026-11-24T02:15:00+00:00",     "2026-11-24t02:15:00z",
        "2026-11-23T21:15:00-05:00", "2026-11-24T10:15:00.250+08:00", "2026-11-24T10:45:00+08:30",
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        fingerprint_at(text, same[i], NULL, shanghai, &obj, cmd);
        assert_memory_equal(cmd->fingerprint, normal->fingerprint, PGW_HASH_LEN);
        assert_int_equal(pgw_json_fingerprint(obj, own), PGW_OK);
        assert_true(cmd->has_fingerprint_as_sent);
        assert_memory_equal(cmd->fingerprint_as_sent, own, PGW_HASH_LEN);
        assert_true(cmd->has_fingerprint_time_as_sent); /* its member is written as it is */
        assert_memory_equal(cmd->fingerprint_time_as_sent, own, PGW_HASH_LEN);
        json_decref(obj);
    }
    static const char *const other[] = {"2026-11-24T02:15:01Z", "2026-11-24T10:15:00Z",
                                        "2026-11-24T10:15:00+09:00"};
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        fingerprint_at(text, other[i], NULL, shanghai, &obj, cmd);
        assert_memory_not_equal(cmd->fingerprint, normal->fingerprint, PGW_HASH_LEN);
        json_decref(obj);
    }
    /* A phone and a time written otherwise: normal in both, and what each
     * gateway before recorded beside. */
    fingerprint_at(text, "2026-11-24T10:15:00+08:00", "+8613800138000", shanghai, &obj, normal);
    assert_false(normal->has_fingerprint_as_sent);
    json_decref(obj);
    fingerprint_at(text, "2026-11-24T02:15:00Z", "138 0013 8000", shanghai, &obj, cmd);
    assert_memory_equal(cmd->fingerprint, normal->fingerprint, PGW_HASH_LEN);
    assert_int_equal(pgw_json_fingerprint(obj, own), PGW_OK);
    assert_memory_equal(cmd->fingerprint_as_sent, own, PGW_HASH_LEN);
    json_object_set_new(obj, "member", json_pack("{s:s}", "phone", "+8613800138000"));
    assert_int_equal(pgw_json_fingerprint(obj, own), PGW_OK);
    assert_true(cmd->has_fingerprint_time_as_sent);
    assert_memory_equal(cmd->fingerprint_time_as_sent, own, PGW_HASH_LEN);
    json_decref(obj);
    /* Only the phone otherwise: the time is normal, nothing more beside. */
    fingerprint_at(text, "2026-11-24T10:15:00+08:00", "138 0013 8000", shanghai, &obj, cmd);
    assert_memory_equal(cmd->fingerprint, normal->fingerprint, PGW_HASH_LEN);
    assert_true(cmd->has_fingerprint_as_sent);
    assert_false(cmd->has_fingerprint_time_as_sent);
    json_decref(obj);
    /* In a mall on UTC, "Z" is the normal form. */
    fingerprint_at(text, "2026-11-24T02:15:00Z", NULL, "+00:00", &obj, cmd);
    assert_false(cmd->has_fingerprint_as_sent);
    assert_false(cmd->has_fingerprint_time_as_sent);
    json_decref(obj);
    /* Holds and redemptions carry no time: never a time's fingerprint. */
    pgw_identity m1 = {.kind = PGW_ID_MEMBER, .value = "M1"};
    pgw_err err;
    obj = json_pack("{s:s,s:{s:s},s:s,s:i}", "hold_id", "H1", "member", "member_id", "M1",
                    "shop_id", "S001", "points", 10);
    memset(cmd, 0xA5, sizeof(*cmd));
    assert_int_equal(pgw_command_fingerprint(obj, &m1, NULL, cmd, &err), PGW_OK);
    assert_false(cmd->has_fingerprint_as_sent);
    assert_false(cmd->has_fingerprint_time_as_sent);
    json_decref(obj);
    free(cmd);
    free(normal);
}

static void test_openid_member_and_referral(void **state)
{
    (void)state;
    pgw_event_doc *doc = calloc(1, sizeof(*doc));
    pgw_err err;
    int rc = parse("{\"event_id\": \"r-1\", \"channel\": \"wechat_mp\", \"type\": \"referral\","
                   " \"occurred_at\": \"2026-11-24T02:15:00Z\","
                   " \"member\": {\"mp_openid\": \"oABCdefGHIjklMNOpqrSTUvwxYZ12\","
                   " \"appid\": \"wx1234567890abcdef\"},"
                   " \"referrer\": {\"card\": \"S002:88001\"}}",
                   doc, &err);
    assert_int_equal(rc, PGW_OK);
    assert_int_equal(doc->event.shop, -1);
    assert_int_equal(doc->member.kind, PGW_ID_MP_OPENID);
    assert_string_equal(doc->member.scope, "wx1234567890abcdef");
    assert_true(doc->has_referrer);
    assert_int_equal(doc->referrer.kind, PGW_ID_CARD);
    free(doc);
}

/* `n` bytes of `c` then `tail`, into out (n + strlen(tail) < cap). */
static const char *filled(char *out, size_t cap, char c, size_t n, const char *tail)
{
    assert_true(n + strlen(tail) < cap);
    memset(out, c, n);
    strcpy(out + n, tail);
    return out;
}

/* Every text an event names reaches its command whole at its longest: the
 * key (channel, shop or appid, event id: 194 bytes), shop, channel,
 * reference (the receipt, else the event id), receipt, the member's id or
 * identity, and a refund's original key. */
static void test_longest_fields_reach_the_command_whole(void **state)
{
    (void)state;
    char event_id[PGW_EVENT_ID_MAX + 1], original[PGW_EVENT_ID_MAX + 1];
    char receipt[PGW_REFERENCE_MAX + 1], member_id[PGW_MEMBER_ID_MAX + 1];
    char openid[PGW_OPENID_MAX + 1], key[PGW_IDEM_KEY_MAX + 1];
    const char *channel = "abcdefghijklmnopqrstuvwxyz_01234"; /* PGW_ID_MAX */
    const char *shop = "S-ABCDEFGHIJKLMNOPQRSTUVWXYZ_012";    /* PGW_ID_MAX */
    const char *appid = "wx1234567890abcdef";
    filled(event_id, sizeof(event_id), 'e', PGW_EVENT_ID_MAX - 1, "!");
    filled(original, sizeof(original), 'o', PGW_EVENT_ID_MAX - 1, "~");
    filled(receipt, sizeof(receipt), 'r', PGW_REFERENCE_MAX - 1, "#");
    filled(member_id, sizeof(member_id), 'Z', PGW_MEMBER_ID_MAX - 1, "9");
    member_id[0] = 'M';
    filled(openid, sizeof(openid), 'o', PGW_OPENID_MAX - 1, "_");
    assert_int_equal(strlen(channel), PGW_ID_MAX);
    assert_int_equal(strlen(shop), PGW_ID_MAX);
    pgw_rules *rules = make_rules();
    strcpy(rules->shops[1].id, shop);
    json_t *bodies[] = {
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:s}, s:i, s:s}", "event_id", event_id, "channel",
                  channel, "shop_id", shop, "type", "purchase", "occurred_at",
                  "2026-11-24T10:15:00+08:00", "member", "member_id", member_id, "amount_fen", 100,
                  "receipt_no", receipt),
        json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s}}", "event_id", event_id, "channel", channel,
                  "type", "sign_in", "occurred_at", "2026-11-24T10:15:00+08:00", "member",
                  "mp_openid", openid, "appid", appid),
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:s}, s:i, s:s}", "event_id", event_id, "channel",
                  channel, "shop_id", shop, "type", "refund", "occurred_at",
                  "2026-11-24T10:15:00+08:00", "member", "member_id", member_id, "amount_fen", 100,
                  "original_event_id", original),
    };
    pgw_event_doc *doc = calloc(1, sizeof(*doc));
    pgw_command *cmd = calloc(1, sizeof(*cmd));
    pgw_earning earning;
    pgw_err err;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        assert_non_null(bodies[i]);
        if (pgw_event_from_json(bodies[i], rules, doc, &err) != PGW_OK)
            fail_msg("body %zu: %s", i, err.msg);
        memset(cmd, 0, sizeof(*cmd));
        assert_int_equal(
            pgw_event_command(NULL, bodies[i], doc, doc->event.occurred_at, &earning, cmd, &err),
            PGW_OK);
        bool by_appid = i == 1;
        PGW_TEXT(key, sizeof(key), channel, ":", by_appid ? appid : shop, ":", event_id);
        assert_int_equal(strlen(key), by_appid ? 32 + 18 + 128 + 2 : 2 * PGW_ID_MAX + 128 + 2);
        assert_string_equal(cmd->key, key);
        assert_string_equal(cmd->shop, by_appid ? "" : shop);
        assert_string_equal(cmd->channel, channel);
        assert_string_equal(cmd->reference, i == 0 ? receipt : event_id);
        assert_string_equal(cmd->receipt, i == 0 ? receipt : "");
        if (by_appid) {
            assert_int_equal(doc->member.kind, PGW_ID_MP_OPENID);
            assert_string_equal(doc->member.value, openid);
            assert_string_equal(doc->member.scope, appid);
            assert_true(cmd->by_identity);
            assert_string_equal(cmd->who.lookup, openid);
            assert_string_equal(cmd->who.scope, appid);
        } else {
            assert_string_equal(cmd->member, member_id);
        }
        if (i == 2) {
            PGW_TEXT(key, sizeof(key), channel, ":", shop, ":", original);
            assert_string_equal(cmd->original, key);
        }
        json_decref(bodies[i]);
    }
    free(cmd);
    free(doc);
    free(rules);
}

/* A member object names its kind by its one key; a kind set to null is
 * absent; two kinds are named in the order API.md lists them, whatever
 * the object's own. */
static void test_member_kinds_by_their_keys(void **state)
{
    (void)state;
    pgw_rules *rules = make_rules();
    static const struct {
        const char *member;
        const char *error; /* NULL: read */
    } cases[] = {
        {"{\"phone\": null, \"member_id\": \"M1\"}", NULL},
        {"{\"member_id\": \"M1\", \"email\": null, \"unionid\": null}", NULL},
        {"{\"phone\": \"13800138000\", \"member_id\": \"M1\"}",
         "$.member: names both member_id and phone; give exactly one"},
        {"{\"email\": \"a@b.cn\", \"card\": \"S001:1\"}",
         "$.member: names both card and email; give exactly one"},
        {"{\"mp_openid\": null, \"appid\": \"wx1234567890abcdef\"}", "$.member: needs one of"},
        {"{\"appid\": null}", "$.member: needs one of"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *obj = json_loads(cases[i].member, 0, NULL);
        assert_non_null(obj);
        pgw_identity id;
        pgw_err err;
        pgw_err_clear(&err);
        int rc = pgw_member_from_json(obj, "$.member", rules, &id, &err);
        if (cases[i].error == NULL && (rc != PGW_OK || id.kind != PGW_ID_MEMBER))
            fail_msg("%s: %s", cases[i].member, err.msg);
        if (cases[i].error != NULL &&
            (rc != PGW_EINVAL || strstr(err.msg, cases[i].error) != err.msg))
            fail_msg("%s: \"%s\"", cases[i].member, err.msg);
        json_decref(obj);
    }
    free(rules);
}

/* Each bad event and a fragment its error must contain (path, then problem). */
static const struct {
    const char *json;
    const char *fragment;
} BAD_EVENTS[] = {
    {"[]", "$: expected an object"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"shop_id\": "
     "\"S001\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": "
     "\"M1\"}, \"amount_fen\": 100, \"colour\": 1}",
     "$.colour: unknown key"},
    {"{\"channel\": \"store\"}", "$.event_id: required"},
    {"{\"event_id\": \"e\\u0001\", \"channel\": \"store\"}", "$.event_id: contains a control"},
    {"{\"event_id\": \"e\", \"channel\": \"Store!\"}", "$.channel"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"gift\"}",
     "$.type: unknown event type"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"occurred_at\": "
     "\"2026-11-24 10:15:00\"}",
     "$.occurred_at"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\"}",
     "$.member: expected an object"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\", \"member\": {}}",
     "$.member: needs one of"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\", \"member\": {\"phone\": \"13800138000\", \"member_id\": "
     "\"M1\"}}",
     "give exactly one"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\", \"member\": {\"phone\": \"12345\"}}",
     "$.member.phone: "},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\", \"member\": {\"mp_openid\": \"oABC\"}}",
     "$.member.appid: required with an openid"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": \"M1\"}, \"amount_fen\": 100}",
     "$.shop_id: required"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"shop_id\": "
     "\"S999\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": "
     "\"M1\"}, \"amount_fen\": 100}",
     "$.shop_id: unknown shop \"S999\""},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"shop_id\": "
     "\"S001\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": "
     "\"M1\"}, \"amount_fen\": -5}",
     "$.amount_fen: expected an integer 1..100000000000, got -5"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"shop_id\": "
     "\"S001\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": "
     "\"M1\"}, \"amount_fen\": 100000000001}",
     "$.amount_fen: expected an integer"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"shop_id\": "
     "\"S001\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": "
     "\"M1\"}, \"amount_fen\": 12.5}",
     "got a number with a fraction"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"shop_id\": "
     "\"S001\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": "
     "\"M1\"}, \"amount_fen\": \"100\"}",
     "got a string"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"shop_id\": "
     "\"S001\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": "
     "\"M1\"}, \"amount_fen\": 100, \"items\": [{\"sku\": \"A\", \"amount_fen\": 60}, "
     "{\"sku\": \"B\", \"amount_fen\": 50}]}",
     "$.items: item amounts add up to 110 fen"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"shop_id\": "
     "\"S001\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": "
     "\"M1\"}, \"amount_fen\": 100, \"items\": [{\"sku\": \"A\", \"amount_fen\": 60, \"qty\": "
     "0}]}",
     "$.items[0].qty"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"refund\", \"shop_id\": "
     "\"S001\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": "
     "\"M1\"}, \"amount_fen\": 100}",
     "$.original_event_id: required"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"sign_in\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": \"M1\"}, \"amount_fen\": 100}",
     "$.amount_fen: not taken by sign_in events"},
    /* Regression: a return mislabelled a purchase was credited, its
     * original_event_id silently ignored. */
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"purchase\", \"shop_id\": "
     "\"S001\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": "
     "\"M1\"}, \"amount_fen\": 100, \"original_event_id\": \"E0\"}",
     "$.original_event_id: not taken by purchase events"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"sign_in\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": \"M1\"}, "
     "\"original_event_id\": \"E0\"}",
     "$.original_event_id: not taken by sign_in events"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"sign_in\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": \"M1\"}, \"points\": 100}",
     "$.points: only custom events"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"custom\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": \"M1\"}}",
     "$.points: required"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"referral\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": \"M1\"}}",
     "$.referrer: expected an object"},
    {"{\"event_id\": \"e\", \"channel\": \"store\", \"type\": \"review\", \"occurred_at\": "
     "\"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": \"M1\"}}",
     "$.receipt_no: required"},
};

static void test_bad_events_name_their_path(void **state)
{
    (void)state;
    pgw_event_doc *doc = calloc(1, sizeof(*doc));
    for (size_t i = 0; i < sizeof(BAD_EVENTS) / sizeof(BAD_EVENTS[0]); i++) {
        pgw_err err;
        pgw_err_clear(&err);
        int rc = parse(BAD_EVENTS[i].json, doc, &err);
        if (rc != PGW_EINVAL || strstr(err.msg, BAD_EVENTS[i].fragment) == NULL)
            fail_msg("case %zu: rc %d, message \"%s\", wanted \"%s\"", i, rc, err.msg,
                     BAD_EVENTS[i].fragment);
    }
    free(doc);
}

/* A field sent as null is absent: a purchase's "original_event_id": null,
 * as a till's serializer writes an unset one, is taken. */
static void test_null_original_event_id_is_absent(void **state)
{
    (void)state;
    pgw_event_doc *doc = calloc(1, sizeof(*doc));
    pgw_err err;
    assert_int_equal(parse("{\"event_id\": \"e\", \"channel\": \"store\", \"type\": "
                           "\"purchase\", \"shop_id\": \"S001\", \"occurred_at\": "
                           "\"2026-11-24T10:15:00+08:00\", \"member\": {\"member_id\": "
                           "\"M1\"}, \"amount_fen\": 100, \"original_event_id\": null}",
                           doc, &err),
                     PGW_OK);
    assert_string_equal(doc->original_event_id, "");
    free(doc);
}

static void test_too_many_items(void **state)
{
    (void)state;
    json_t *obj =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:s}, s:I}", "event_id", "e", "channel", "store",
                  "type", "purchase", "shop_id", "S001", "occurred_at", "2026-11-24T10:15:00+08:00",
                  "member", "member_id", "M1", "amount_fen", (json_int_t)1000000);
    json_t *items = json_array();
    for (int i = 0; i <= PGW_ITEMS_MAX; i++)
        json_array_append_new(items,
                              json_pack("{s:s, s:I}", "sku", "A", "amount_fen", (json_int_t)1));
    json_object_set_new(obj, "items", items);
    pgw_rules *rules = make_rules();
    pgw_event_doc *doc = calloc(1, sizeof(*doc));
    pgw_err err;
    assert_int_equal(pgw_event_from_json(obj, rules, doc, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "more than 200 items"));
    /* Exactly the bound is accepted. */
    json_array_remove(items, 0);
    assert_int_equal(pgw_event_from_json(obj, rules, doc, &err), PGW_OK);
    assert_int_equal(doc->event.n_items, PGW_ITEMS_MAX);
    free(doc);
    free(rules);
    json_decref(obj);
}

static void test_context(void **state)
{
    (void)state;
    pgw_member_ctx_doc ctx;
    pgw_err err;
    assert_int_equal(pgw_member_ctx_from_json(NULL, &ctx, &err), PGW_OK);
    assert_true(ctx.ctx.first_purchase);
    assert_int_equal(ctx.ctx.n_today, 0);

    json_t *obj = json_loads("{\"spend_12m_fen\": 620000, \"first_purchase\": false, \"birthday\": "
                             "\"02-29\", \"last_sign_in\": \"2026-11-23\", \"sign_in_streak\": 6, "
                             "\"today\": {\"campaign:x\": 300}}",
                             0, NULL);
    assert_int_equal(pgw_member_ctx_from_json(obj, &ctx, &err), PGW_OK);
    assert_int_equal(ctx.ctx.spend_12m_fen, 620000);
    assert_false(ctx.ctx.first_purchase);
    assert_int_equal(ctx.ctx.birth_month, 2);
    assert_int_equal(ctx.ctx.birth_day, 29);
    assert_int_equal(ctx.ctx.last_sign_in.day, 23);
    assert_int_equal(ctx.ctx.sign_in_streak, 6);
    assert_int_equal(ctx.ctx.n_today, 1);
    assert_string_equal(ctx.ctx.today[0].rule, "campaign:x");
    assert_int_equal(ctx.ctx.today[0].points, 300);
    json_decref(obj);

    /* A challenge with shops or formats counts its own month. */
    obj = json_loads("{\"challenges\": {\"dining-3000\": {\"purchases\": 2, \"spend_fen\": "
                     "250000}}}",
                     0, NULL);
    assert_int_equal(pgw_member_ctx_from_json(obj, &ctx, &err), PGW_OK);
    assert_int_equal(ctx.ctx.n_challenges, 1);
    assert_string_equal(ctx.ctx.challenges[0].campaign, "dining-3000");
    assert_int_equal(ctx.ctx.challenges[0].purchases, 2);
    assert_int_equal(ctx.ctx.challenges[0].spend_fen, 250000);
    json_decref(obj);
    obj = json_loads("{\"challenges\": {\"dining-3000\": {\"spend\": 1}}}", 0, NULL);
    assert_int_equal(pgw_member_ctx_from_json(obj, &ctx, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "$.challenges.dining-3000"));
    json_decref(obj);

    obj = json_loads("{\"sign_in_streak\": 6}", 0, NULL);
    assert_int_equal(pgw_member_ctx_from_json(obj, &ctx, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "needs last_sign_in"));
    json_decref(obj);
    obj = json_loads("{\"birthday\": \"13-01\"}", 0, NULL);
    assert_int_equal(pgw_member_ctx_from_json(obj, &ctx, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "$.birthday"));
    json_decref(obj);
}

static void test_json_read_bounds(void **state)
{
    (void)state;
    json_t *obj = json_loads("{\"s\": \"abcd\", \"n\": 5, \"b\": 1}", 0, NULL);
    char buf[8];
    int64_t n = -1;
    bool b = false;
    pgw_err err;
    assert_int_equal(pgw_json_string(obj, "s", "$", true, 4, buf, sizeof(buf), &err), PGW_OK);
    assert_string_equal(buf, "abcd");
    assert_int_equal(pgw_json_string(obj, "s", "$", true, 3, buf, sizeof(buf), &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "$.s: longer than 3 bytes"));
    assert_int_equal(pgw_json_int(obj, "n", "$", true, 5, 5, &n, &err), PGW_OK);
    assert_int_equal(n, 5);
    assert_int_equal(pgw_json_int(obj, "n", "$", true, 6, 9, &n, &err), PGW_EINVAL);
    assert_int_equal(pgw_json_int(obj, "missing", "$", false, 0, 9, &n, &err), PGW_OK);
    assert_int_equal(n, 5); /* absent and optional: unchanged */
    assert_int_equal(pgw_json_bool(obj, "b", "$", true, &b, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "expected true or false"));
    json_decref(obj);
}

/* Bytes that JSON escapes or that are UTF-8, and plain ones. */
static const char *const PIECES[] = {
    "a",      "Z",  "0",  " ",  "\"", "\\",   "/",        "\x01",         "\x1f",
    "\n",     "\t", "\b", "\f", "\r", "\x7f", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
    "shop_id"};

static void random_text(uint64_t *rng, char *out, size_t cap)
{
    out[0] = '\0';
    for (int64_t n = rng_pick(rng, 0, 6); n > 0; n--) {
        const char *piece = PIECES[rng_pick(rng, 0, sizeof(PIECES) / sizeof(PIECES[0]) - 1)];
        if (strlen(out) + strlen(piece) < cap)
            strcat(out, piece);
    }
}

static const json_int_t EDGES[] = {0, -1, 1, 9, 10, -10, INT64_MAX, INT64_MIN, 1234567890123};

/* A random JSON value, `reals` of them doubles when allowed. */
static json_t *random_value(uint64_t *rng, int depth, bool reals)
{
    char text[64];
    switch (rng_pick(rng, depth >= 4 ? 2 : 0, reals ? 7 : 6)) {
    case 0: {
        json_t *obj = json_object();
        for (int64_t n = rng_pick(rng, 0, 8); n > 0; n--) {
            random_text(rng, text, sizeof(text));
            json_object_set_new(obj, text, random_value(rng, depth + 1, reals));
        }
        return obj;
    }
    case 1: {
        json_t *arr = json_array();
        for (int64_t n = rng_pick(rng, 0, 5); n > 0; n--)
            json_array_append_new(arr, random_value(rng, depth + 1, reals));
        return arr;
    }
    case 2:
        random_text(rng, text, sizeof(text));
        return json_string(text);
    case 3:
        return json_integer(EDGES[rng_pick(rng, 0, sizeof(EDGES) / sizeof(EDGES[0]) - 1)]);
    case 4:
        return json_integer((json_int_t)rng_next(rng));
    case 5:
        return json_boolean(rng_pick(rng, 0, 1));
    case 6:
        return json_null();
    default:
        return json_real((double)(int64_t)rng_next(rng) / 1e6);
    }
}

/* Two readers' answers alike: result, message when refused. */
static void assert_same_answer(int rc_1, const pgw_err *err_1, int rc_2, const pgw_err *err_2)
{
    assert_int_equal(rc_1, rc_2);
    if (rc_1 != PGW_OK)
        assert_string_equal(err_1->msg, err_2->msg);
}

/* An object's values kept by pgw_json_fields read as looking each key up
 * reads them: the same keys refused, and for each key, required or not,
 * the same value, result and message from every reader. */
static void test_fields_read_as_their_keys(void **state)
{
    (void)state;
    static const char *const ALLOWED[] = {"s", "n", "shop_id", "\xe4\xb8\xad", NULL};
    enum { N = sizeof(ALLOWED) / sizeof(ALLOWED[0]) - 1 };
    uint64_t rng = 45;
    for (int trial = 0; trial < 4000; trial++) {
        json_t *obj = json_object();
        for (size_t i = 0; i < N; i++)
            if (rng_pick(&rng, 0, 9) < 7)
                json_object_set_new(obj, ALLOWED[i], random_value(&rng, 1, true));
        if (rng_pick(&rng, 0, 9) == 0)
            json_object_set_new(obj, rng_pick(&rng, 0, 1) ? "S" : "shop", json_null());
        const json_t *values[N];
        pgw_err err_1, err_2;
        int rc = pgw_json_fields(obj, "$.x", ALLOWED, values, &err_1);
        assert_same_answer(rc, &err_1, pgw_json_only_keys(obj, "$.x", ALLOWED, &err_2), &err_2);
        for (size_t i = 0; rc == PGW_OK && i < N; i++) {
            const char *key = ALLOWED[i];
            assert_ptr_equal(values[i], json_object_get(obj, key));
            assert_int_equal(pgw_json_given(values[i]), pgw_json_has(obj, key));
            for (int required = 0; required < 2; required++) {
                int64_t n_1 = 7, n_2 = 7;
                assert_same_answer(
                    pgw_json_int_of(values[i], key, "$.x", required, -10, 10, &n_1, &err_1), &err_1,
                    pgw_json_int(obj, key, "$.x", required, -10, 10, &n_2, &err_2), &err_2);
                assert_int_equal(n_1, n_2);
                char s_1[8] = "-", s_2[8] = "-";
                assert_same_answer(
                    pgw_json_string_of(values[i], key, "$.x", required, 6, s_1, sizeof(s_1),
                                       &err_1),
                    &err_1, pgw_json_string(obj, key, "$.x", required, 6, s_2, sizeof(s_2), &err_2),
                    &err_2);
                assert_string_equal(s_1, s_2);
                const char *r_1 = "-", *r_2 = "-";
                assert_same_answer(
                    pgw_json_string_ref_of(values[i], key, "$.x", required, 6, &r_1, &err_1),
                    &err_1, pgw_json_string_ref(obj, key, "$.x", required, 6, &r_2, &err_2),
                    &err_2);
                assert_ptr_equal(r_1, r_2);
            }
        }
        json_decref(obj);
    }
}

/* The oracle for fingerprints: members set to null are absent. */
static void without_nulls(json_t *v)
{
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            without_nulls(json_array_get(v, i));
    } else if (json_is_object(v)) {
        const char *key;
        json_t *value;
        void *tmp;
        json_object_foreach_safe(v, tmp, key, value)
        {
            if (json_is_null(value))
                json_object_del(v, key);
            else
                without_nulls(value);
        }
    }
}

static void expect_canonical(const json_t *v, bool handled)
{
    char *dumped = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    assert_non_null(dumped);
    char buf[8192];
    size_t len = 0;
    assert_int_equal(pgw_json_canonical(v, buf, sizeof(buf), &len), handled);
    if (handled) {
        assert_string_equal(buf, dumped);
        assert_int_equal(len, strlen(dumped));
    }
    uint8_t want[PGW_SHA256_LEN], got[PGW_HASH_LEN];
    if (json_is_object(v) || json_is_array(v)) { /* requests are objects */
        /* copied only when it may hold a null: a copy loses a key's NUL */
        json_t *plain = strstr(dumped, "null") ? json_deep_copy(v) : json_incref((json_t *)v);
        without_nulls(plain);
        char *text = json_dumps(plain, JSON_COMPACT | JSON_SORT_KEYS);
        pgw_sha256(text, strlen(text), want);
        assert_int_equal(pgw_json_fingerprint(v, got), PGW_OK);
        assert_memory_equal(got, want, sizeof(want));
        free(text);
        json_decref(plain);
    }
    free(dumped);
}

/* The fingerprints stored for years came from json_dumps' text: the one
 * written by hand must be the same text, byte for byte, or a replay after
 * an upgrade would answer 409. */
static void test_canonical_text_is_json_dumps(void **state)
{
    (void)state;
    json_t *example = json_loads(API_EXAMPLE, 0, NULL);
    assert_non_null(example);
    expect_canonical(example, true);
    json_decref(example);
    uint64_t rng = 20261129;
    for (int i = 0; i < 3000; i++) {
        json_t *v = random_value(&rng, 0, false);
        expect_canonical(v, true);
        json_decref(v);
    }
    int with_reals = 0;
    for (int i = 0; i < 1000; i++) {
        json_t *v = random_value(&rng, 0, true);
        char *dumped = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        bool real = strchr(dumped, '.') != NULL || strchr(dumped, 'e') != NULL;
        free(dumped);
        if (json_is_real(v)) {
            with_reals++;
            expect_canonical(v, false); /* json_dumps' formatting, through it */
        } else if (!real) {
            expect_canonical(v, true);
        }
        json_decref(v);
    }
    assert_true(with_reals > 50);
}

/* A member set to null is absent (json_read.h): the same request with its
 * unset fields null, or without them, has one fingerprint, and a request
 * with none keeps the fingerprint it always had. */
static void test_null_members_are_absent_from_fingerprints(void **state)
{
    (void)state;
    json_t *plain = json_loads(API_EXAMPLE, 0, NULL), *nulls = json_deep_copy(plain);
    assert_non_null(nulls);
    json_object_set_new(nulls, "receipt_no_x", json_null());
    json_object_set_new(json_object_get(nulls, "member"), "card", json_null());
    uint8_t a[PGW_HASH_LEN], b[PGW_HASH_LEN], dumped[PGW_SHA256_LEN];
    assert_int_equal(pgw_json_fingerprint(plain, a), PGW_OK);
    assert_int_equal(pgw_json_fingerprint(nulls, b), PGW_OK);
    assert_memory_equal(a, b, sizeof(a));
    char *text = json_dumps(plain, JSON_COMPACT | JSON_SORT_KEYS);
    pgw_sha256(text, strlen(text), dumped);
    assert_memory_equal(a, dumped, sizeof(dumped));
    json_object_set_new(nulls, "receipt_no_x", json_string("R1"));
    assert_int_equal(pgw_json_fingerprint(nulls, b), PGW_OK);
    assert_memory_not_equal(a, b, sizeof(a));
    free(text);
    json_decref(plain);
    json_decref(nulls);
}

/* Past its limits the text is json_dumps', fingerprinted the same. */
static void test_canonical_limits(void **state)
{
    (void)state;
    json_t *wide = json_object();
    char key[16];
    for (int i = 0; i < 65; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        json_object_set_new(wide, key, json_integer(i));
    }
    expect_canonical(wide, false);
    json_object_del(wide, "k64");
    expect_canonical(wide, true);
    json_decref(wide);
    json_t *deep = json_array(), *inner = deep;
    for (int i = 0; i < 17; i++) {
        json_t *next = json_array();
        json_array_append_new(inner, next);
        inner = next;
    }
    expect_canonical(deep, false);
    json_array_remove(json_array_get(deep, 0), 0);
    expect_canonical(deep, true);
    json_decref(deep);
    json_t *nul = json_pack("[s%]", "a\0b", (size_t)3), *long_text = json_array();
    expect_canonical(nul, false);
    json_decref(nul);
    nul = json_object();
    json_object_setn_new(nul, "a\0b", 3, json_true());
    expect_canonical(nul, false);
    char chunk[1001];
    memset(chunk, 'x', 1000);
    chunk[1000] = '\0';
    for (int i = 0; i < 9; i++)
        json_array_append_new(long_text, json_string(chunk));
    expect_canonical(long_text, false); /* over 8 KiB */
    json_array_remove(long_text, 0);
    expect_canonical(long_text, true);
    json_decref(nul);
    json_decref(long_text);
}

/* `h` in lower-case hex into out (2 * PGW_HASH_LEN + 1 bytes). */
static const char *hash_hex(const uint8_t h[PGW_HASH_LEN], char *out)
{
    for (size_t i = 0; i < PGW_HASH_LEN; i++) {
        out[2 * i] = "0123456789abcdef"[h[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[h[i] & 15];
    }
    out[2 * PGW_HASH_LEN] = '\0';
    return out;
}

/*
 * The fingerprints and keys stored by gateways before the event path left
 * snprintf and qsort (2c95882^), pinned: a retry of an event they took must
 * meet the same key and one of the same fingerprints after an upgrade, or
 * it is 409 idempotency_conflict. Computed by that build (the first two
 * cases' own fingerprints moved beside once an item's "qty": 1 was left
 * out of the normal form: test_qty_default_as_gateways_recorded_it); a
 * change of any
 * byte of the canonical text, the time's normal form or the key shows here.
 * Phone normalised, time in another offset with a fraction, escapes and
 * UTF-8, nulls left out, keys in another order, a refund's original key,
 * an openid's event keyed by its appid, negative offsets with minutes.
 */
static void test_fingerprints_as_gateways_recorded_them(void **state)
{
    (void)state;
    static const struct {
        const char *tz, *body, *normal, *fingerprint, *as_sent, *time_as_sent, *key, *original;
    } cases[] = {
        {"Asia/Shanghai",
         "{\"event_id\": \"S001-20261124-000123\", \"channel\": \"store\", \"shop_id\": \"S001\","
         " \"type\": \"purchase\", \"occurred_at\": \"2026-11-24T10:15:00+08:00\","
         " \"member\": {\"member_id\": \"M1\"}, \"amount_fen\": 12800, \"items\": [{\"sku\":"
         " \"A1\", \"category\": \"shoes\", \"amount_fen\": 12800, \"qty\": 1}],"
         " \"receipt_no\": \"R123\"}",
         "2026-11-24T10:15:00+08:00",
         "5c42e0949e02852faab19880c833b881eeceefda78ac8f38141aef70ce86c707",
         "7356e5b733054df4487ecf9e52b5b06b83a1e8a46c7292ac50c76dd6b3b49a0a", NULL,
         "store:S001:S001-20261124-000123", ""},
        {"Asia/Shanghai", API_EXAMPLE, "2026-11-24T10:15:00+08:00",
         "60ec21aaad39bda2769bab7de90898686d613dd1f8fc6935d528493cde4457e0",
         "3c885acd599a387bb5fd40c4ebd5e94be4cf8c206c201efb909aa772a041c86b",
         "1eaf7f3cca96257c302f1ec7d634dfeaf2ce538e27d0e7ef3bc37f067f45b8c9", NULL, NULL},
        {"-03:30",
         "{\"type\": \"refund\", \"original_event_id\": \"E\\u00e9-\\u4e2d:1\", \"receipt_no\":"
         " \"R \\\"q\\\" \\\\ \\ud83d\\ude00\", \"items\": null, \"member\": {\"email\": null,"
         " \"member_id\": \"M7Z\"}, \"amount_fen\": 1, \"shop_id\": \"S002\", \"channel\":"
         " \"pos_2\", \"occurred_at\": \"2000-01-01T00:00:00.5z\", \"event_id\": \"\\u00e9v/1\"}",
         "1999-12-31T20:30:00-03:30",
         "716be5c1e05c5f94186f19c861e29441a12a55d7ca83875d3ea5e10fe81e8e59",
         "d0754f7ef0fba786055112f7522d83a84619d886e063907d05a56f1c6bbe5cf5",
         "d0754f7ef0fba786055112f7522d83a84619d886e063907d05a56f1c6bbe5cf5",
         "pos_2:S002:\xc3\xa9v/1", "pos_2:S002:E\xc3\xa9-\xe4\xb8\xad:1"},
        {"-00:30",
         "{\"member\": {\"appid\": \"wx1234567890abcdef\", \"mp_openid\": \"oABC_-9\"},"
         " \"channel\": \"wechat_mp\", \"type\": \"sign_in\", \"occurred_at\":"
         " \"2026-02-28T23:59:59-14:00\", \"event_id\": \"s-1\", \"shop_id\": null}",
         "2026-03-01T13:29:59-00:30",
         "d8c6a42a4938d38ec8fe22c03b239b9b0b18e8e7f24352582ec2c02a48356ff7",
         "a1264f9ff7d5e7f2811ba66811ef33025d73ff69c1901c561c099fb54955db73",
         "a1264f9ff7d5e7f2811ba66811ef33025d73ff69c1901c561c099fb54955db73",
         "wechat_mp:wx1234567890abcdef:s-1", ""},
    };
    pgw_rules *rules = make_rules();
    pgw_event_doc *doc = calloc(1, sizeof(*doc));
    pgw_command *cmd = calloc(1, sizeof(*cmd));
    pgw_earning earning;
    pgw_err err;
    char hex[2 * PGW_HASH_LEN + 1];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *obj = json_loads(cases[i].body, JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(obj);
        assert_int_equal(pgw_tz_lookup(cases[i].tz, &rules->tz, &err), PGW_OK);
        assert_int_equal(pgw_event_from_json(obj, rules, doc, &err), PGW_OK);
        assert_string_equal(doc->occurred_at_normal, cases[i].normal);
        memset(cmd, 0, sizeof(*cmd));
        if (cases[i].key != NULL) /* a phone's needs the vault: its key is case 0's */
            assert_int_equal(
                pgw_event_command(NULL, obj, doc, doc->event.occurred_at, &earning, cmd, &err),
                PGW_OK);
        else
            assert_int_equal(pgw_event_fingerprint(obj, doc, cmd, &err), PGW_OK);
        assert_string_equal(hash_hex(cmd->fingerprint, hex), cases[i].fingerprint);
        assert_int_equal(cmd->has_fingerprint_as_sent, cases[i].as_sent != NULL);
        if (cases[i].as_sent != NULL)
            assert_string_equal(hash_hex(cmd->fingerprint_as_sent, hex), cases[i].as_sent);
        assert_int_equal(cmd->has_fingerprint_time_as_sent, cases[i].time_as_sent != NULL);
        if (cases[i].time_as_sent != NULL)
            assert_string_equal(hash_hex(cmd->fingerprint_time_as_sent, hex),
                                cases[i].time_as_sent);
        if (cases[i].key != NULL) {
            assert_string_equal(cmd->key, cases[i].key);
            assert_string_equal(cmd->original, cases[i].original);
        }
        json_decref(obj);
    }
    free(cmd);
    free(doc);
    free(rules);
}

/*
 * Regression: an item's "qty": 1 written out and qty left out (its
 * default) were two requests, 409 on a retry from a till whose serializer
 * writes defaults, while a hold's "expires_in_s": 600 was one. The default
 * is left out of the normal form, and a key recorded before, with it
 * written out, is met by one of the fingerprints kept beside: `recorded`
 * holds what main's build before this gave each body (its fingerprint, as
 * sent, time as sent; "" none), in the four ways a body may be written
 * (phone, time each in normal form or not). Written otherwise in both,
 * three earlier forms are in use, all kept beside (it kept its qty as
 * written: a Java till's "Z" and an 11-digit phone, qty left out on a
 * retry, was 409).
 */
static void test_qty_default_as_gateways_recorded_it(void **state)
{
    (void)state;
    static const struct {
        const char *when, *phone;
        bool normal; /* qty's default normalised */
        const char *recorded[3];
    } cases[] = {
        {"2026-11-24T10:15:00+08:00",
         "+8613800138000",
         true,
         {"db01f11fec280b6dc0a3e2a737ba6025d7893e8e5e11d5afc2d1f65ab0137755", "", ""}},
        {"2026-11-24T10:15:00+08:00",
         "138 0013 8000",
         true,
         {"db01f11fec280b6dc0a3e2a737ba6025d7893e8e5e11d5afc2d1f65ab0137755",
          "9ae7a1b1cfb9f83bbfbc48008925c9b1bb7309e2c44dc70432d3e782ebbac115", ""}},
        {"2026-11-24T02:15:00Z",
         "+8613800138000",
         true,
         {"db01f11fec280b6dc0a3e2a737ba6025d7893e8e5e11d5afc2d1f65ab0137755",
          "819763a24eb931f980e55a577c9b23747b6d7aa8d7e2a3b49699e72d0c662e10",
          "819763a24eb931f980e55a577c9b23747b6d7aa8d7e2a3b49699e72d0c662e10"}},
        {"2026-11-24T02:15:00.5Z",
         "138 0013 8000",
         true,
         {"db01f11fec280b6dc0a3e2a737ba6025d7893e8e5e11d5afc2d1f65ab0137755",
          "868dc00a3b2a657efda8ffff884ff8ceaba81fbef84962845320cf02f538c021",
          "45293dfba6e72cc76b416c2dce6fbeb1051f88b70905937e5cd0c20136994f78"}},
    };
    static const char with[] =
        "{\"event_id\": \"Q1\", \"channel\": \"store\", \"shop_id\": \"S001\","
        " \"type\": \"purchase\", \"occurred_at\": \"\", \"member\": {},"
        " \"amount_fen\": 300, \"items\": [{\"sku\": \"A\", \"amount_fen\": 100, \"qty\": 1},"
        " {\"sku\": \"B\", \"amount_fen\": 200, \"qty\": 2}]}";
    static const char without[] =
        "{\"event_id\": \"Q1\", \"channel\": \"store\", \"shop_id\": \"S001\","
        " \"type\": \"purchase\", \"occurred_at\": \"\", \"member\": {},"
        " \"amount_fen\": 300, \"items\": [{\"sku\": \"A\", \"amount_fen\": 100},"
        " {\"sku\": \"B\", \"amount_fen\": 200, \"qty\": 2}]}";
    pgw_command *cmd = calloc(1, sizeof(*cmd)), *bare = calloc(1, sizeof(*bare));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *obj, *other;
        fingerprint_at(with, cases[i].when, cases[i].phone, "Asia/Shanghai", &obj, cmd);
        fingerprint_at(without, cases[i].when, cases[i].phone, "Asia/Shanghai", &other, bare);
        const char *now[4] = {"", "", "", ""};
        char text[4][2 * PGW_HASH_LEN + 1];
        now[0] = hash_hex(cmd->fingerprint, text[0]);
        if (cmd->has_fingerprint_as_sent)
            now[1] = hash_hex(cmd->fingerprint_as_sent, text[1]);
        if (cmd->has_fingerprint_time_as_sent)
            now[2] = hash_hex(cmd->fingerprint_time_as_sent, text[2]);
        if (cmd->has_fingerprint_time_qty_as_sent)
            now[3] = hash_hex(cmd->fingerprint_time_qty_as_sent, text[3]);
        for (size_t r = 0; r < 3; r++) {
            const char *old = cases[i].recorded[r];
            if (old[0] != '\0' && strcmp(old, now[0]) != 0 && strcmp(old, now[1]) != 0 &&
                strcmp(old, now[2]) != 0 && strcmp(old, now[3]) != 0)
                fail_msg("case %zu: recorded %s is none of %s %s %s %s: a retry is 409", i, old,
                         now[0], now[1], now[2], now[3]);
        }
        bool same = memcmp(cmd->fingerprint, bare->fingerprint, PGW_HASH_LEN) == 0;
        if (same != cases[i].normal)
            fail_msg("case %zu: qty 1 written and left out are %s", i,
                     same ? "one request" : "two requests");
        json_decref(obj);
        json_decref(other);
    }
    free(bare);
    free(cmd);
}

/* A name from a query (the shop CSV route's ?channel) may be any bytes:
 * its refusal is still a message an answer's JSON can carry. */
static void test_channel_check_quotes_only_utf8(void **state)
{
    (void)state;
    pgw_err err;
    assert_int_equal(pgw_event_check_channel("pos", "channel", &err), PGW_OK);
    assert_int_equal(pgw_event_check_channel("Pos", "channel", &err), PGW_EINVAL);
    assert_string_equal(err.msg, "channel: \"Pos\" is not a channel name");
    assert_int_equal(pgw_event_check_channel("p\xffs", "channel", &err), PGW_EINVAL);
    assert_true(pgw_utf8_valid(err.msg));
    assert_string_equal(err.msg, "channel: not UTF-8, so not a channel name");
}

/* Expiry and identity binds move points under channel "system": a client's
 * event there would mix its sales into the gateway's own movements, which
 * finance reconciles and reports by channel. */
static void test_system_channel_is_the_gateways(void **state)
{
    (void)state;
    pgw_err err;
    assert_int_equal(pgw_event_check_channel("system", "channel", &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "the gateway's own"));
    assert_int_equal(pgw_event_check_channel("systems", "channel", &err), PGW_OK);
    json_t *obj = json_loads(API_EXAMPLE, 0, NULL);
    assert_non_null(obj);
    assert_int_equal(json_object_set_new(obj, "channel", json_string("system")), 0);
    pgw_rules *rules = make_rules();
    pgw_event_doc *doc = calloc(1, sizeof(*doc));
    assert_int_equal(pgw_event_from_json(obj, rules, doc, &err), PGW_EINVAL);
    assert_string_equal(err.msg, "$.channel: \"system\" is the gateway's own channel (expiry, "
                                 "identity binds), not a client's");
    free(rules);
    json_decref(obj);
    free(doc);
}

/* The answer `earning` makes for API.md's purchase, typed `type`, under `rules`. */
static void earning_answer(const pgw_rules *rules, pgw_event_type type, const pgw_earning *earning,
                           char *out, size_t cap)
{
    pgw_event_doc doc;
    pgw_err err;
    assert_int_equal(parse(API_EXAMPLE, &doc, &err), PGW_OK);
    doc.event.type = type;
    pgw_json_out o;
    pgw_json_out_init(&o, out, cap);
    pgw_json_out_begin_object(&o);
    pgw_earning_write(&o, rules, &doc, earning, earning->points);
    pgw_json_out_end_object(&o);
    assert_false(o.overflow);
}

/*
 * GET /v1/members/{id} says "tier": null for a member without one (a
 * configuration without tiers); an event's answer left "tier" out, as it
 * does where it does not say the tier (a behaviour is not priced by it).
 * Where no member has a tier, the answer says null as the member does.
 */
static void test_an_answer_without_tiers_says_tier_null(void **state)
{
    (void)state;
    pgw_rules *rules = make_rules();
    pgw_earning e;
    pgw_earning_clear(&e);
    char text[1024];
    earning_answer(rules, PGW_EVENT_PURCHASE, &e, text, sizeof(text));
    assert_non_null(strstr(text, ",\"tier\":null"));
    earning_answer(rules, PGW_EVENT_SIGN_IN, &e, text, sizeof(text));
    assert_non_null(strstr(text, ",\"tier\":null"));
    rules->n_tiers = 1; /* with tiers: the tier the purchase was priced in */
    strcpy(rules->tiers[0].name, "silver");
    e.tier = 0;
    earning_answer(rules, PGW_EVENT_PURCHASE, &e, text, sizeof(text));
    assert_non_null(strstr(text, ",\"tier\":\"silver\""));
    pgw_earning_clear(&e); /* a behaviour's: not priced by the tier, not said */
    earning_answer(rules, PGW_EVENT_SIGN_IN, &e, text, sizeof(text));
    assert_null(strstr(text, "\"tier\""));
    free(rules);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_example_parses),
        cmocka_unit_test(test_an_answer_without_tiers_says_tier_null),
        cmocka_unit_test(test_events_ahead_of_the_clock),
        cmocka_unit_test(test_openid_member_and_referral),
        cmocka_unit_test(test_longest_fields_reach_the_command_whole),
        cmocka_unit_test(test_member_kinds_by_their_keys),
        cmocka_unit_test(test_bad_events_name_their_path),
        cmocka_unit_test(test_null_original_event_id_is_absent),
        cmocka_unit_test(test_too_many_items),
        cmocka_unit_test(test_context),
        cmocka_unit_test(test_json_read_bounds),
        cmocka_unit_test(test_fields_read_as_their_keys),
        cmocka_unit_test(test_canonical_text_is_json_dumps),
        cmocka_unit_test(test_canonical_limits),
        cmocka_unit_test(test_null_members_are_absent_from_fingerprints),
        cmocka_unit_test(test_any_offset_of_one_instant_is_one_request),
        cmocka_unit_test(test_fingerprints_as_gateways_recorded_them),
        cmocka_unit_test(test_qty_default_as_gateways_recorded_it),
        cmocka_unit_test(test_channel_check_quotes_only_utf8),
        cmocka_unit_test(test_system_channel_is_the_gateways),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
