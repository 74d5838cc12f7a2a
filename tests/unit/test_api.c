/*
 * test_api.c - what of server/api.h runs without a server: a live-stream
 * message as a member's own stream shows it, whose Authorization names
 * a mini-program session, and the command a transfer names.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "server/api.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The member's view of `json`, as a string. */
static void view(const char *json, char *out)
{
    size_t len = pgw_api_stream_member_view(json, strlen(json), out);
    assert_true(len <= strlen(json));
    out[len] = '\0';
}

/* A transfer's message loses its event_key, whatever it holds. */
static void test_member_view_drops_event_key(void **state)
{
    (void)state;
    char out[512];
    view("{\"type\":\"transfer\",\"id\":7,\"credit\":\"member:M1\",\"reference\":\"R-1\","
         "\"event_key\":\"store:S001:E-1\"}",
         out);
    assert_string_equal(out, "{\"type\":\"transfer\",\"id\":7,\"credit\":\"member:M1\","
                             "\"reference\":\"R-1\"}");
    /* A reference that spells the key inside a string (its quotes escaped)
     * is no cut: only the real, last field is. */
    view("{\"type\":\"transfer\",\"reference\":\"a\\\",\\\"event_key\\\":\\\"x\","
         "\"event_key\":\"store:S001:\\\",\\\"event_key\\\":1\"}",
         out);
    assert_string_equal(out,
                        "{\"type\":\"transfer\",\"reference\":\"a\\\",\\\"event_key\\\":\\\"x\"}");
}

/* A message with no event_key (a notice, the sweep's transfers) is left whole. */
static void test_member_view_keeps_the_rest(void **state)
{
    (void)state;
    char out[512];
    const char *notice = "{\"type\":\"notification\",\"id\":3,\"member_id\":\"M1\",\"points\":5}";
    view(notice, out);
    assert_string_equal(out, notice);
    view("{}", out);
    assert_string_equal(out, "{}");
    assert_int_equal(pgw_api_stream_member_view("", 0, out), 0);
}

/* A transfer of `kind` written under `key`, as the store reads it. */
static pgw_transfer transfer(pgw_transfer_kind kind, const char *key, const char *debit,
                             const char *credit, const char *reference)
{
    pgw_transfer t;
    memset(&t, 0, sizeof(t));
    t.id = 1;
    t.kind = kind;
    t.points = 10;
    snprintf(t.idem_key, sizeof(t.idem_key), "%s", key);
    snprintf(t.debit, sizeof(t.debit), "%s", debit);
    snprintf(t.credit, sizeof(t.credit), "%s", credit);
    snprintf(t.reference, sizeof(t.reference), "%s", reference);
    return t;
}

/* occurred_at of the one transfer pgw_api_history_json shows, in a mall
 * `offset_s` east of UTC. */
static void history_time(int32_t offset_s, int64_t t, char *out, size_t cap)
{
    pgw_config *cfg = calloc(1, sizeof(*cfg));
    pgw_command *cmd = calloc(1, sizeof(*cmd));
    assert_non_null(cfg);
    assert_non_null(cmd);
    cfg->rules.tz.offset_s = offset_s;
    pgw_transfer page[1] = {
        transfer(PGW_TRANSFER_EARN, "store:S001:E-1", "pool:S001", "member:M1", "R-1")};
    page[0].occurred_at = t;
    cmd->page = page;
    cmd->page_cap = cmd->n_page = 1;
    json_t *history = pgw_api_history_json(cfg, cmd, 1, false);
    json_t *item = json_array_get(json_object_get(history, "transfers"), 0);
    assert_non_null(item);
    snprintf(out, cap, "%s", json_string_value(json_object_get(item, "occurred_at")));
    json_decref(history);
    free(cmd);
    free(cfg);
}

/* Regression: a time the mall's zone cannot write (its year before 1970
 * there) was shown as "", an instant nobody can read; it is written in
 * UTC, as a report writes one (report.c time_text). The gateway dates no
 * transfer before 2000 (event_command.h PGW_EVENT_EARLIEST_S) nor after
 * its clock: only a row written by hand has such a time, or one outside
 * UTC's years. */
static void test_history_time_out_of_the_zone(void **state)
{
    (void)state;
    char when[64];
    history_time(-5 * 3600, 1764000000, when, sizeof(when));
    assert_string_equal(when, "2025-11-24T11:00:00-05:00");
    history_time(-5 * 3600, 0, when, sizeof(when));
    assert_string_equal(when, "1970-01-01T00:00:00Z");
    /* Regression: one UTC cannot write either was its unix seconds in a
     * string ("-1"), not the RFC 3339 time API.md promises: it is the
     * nearest time UTC writes (a row written by hand; none is dated so). */
    history_time(0, -1, when, sizeof(when));
    assert_string_equal(when, "1970-01-01T00:00:00Z");
    history_time(14 * 3600, INT64_MIN, when, sizeof(when));
    assert_string_equal(when, "1970-01-01T00:00:00Z");
    history_time(0, INT64_C(253402300800), when, sizeof(when)); /* 10000-01-01T00:00:00Z */
    assert_string_equal(when, "9999-12-31T23:59:59Z");
    history_time(-14 * 3600, INT64_MAX, when, sizeof(when));
    assert_string_equal(when, "9999-12-31T23:59:59Z");
}

/* The transfer's "command" as compact JSON, checked against `want`, and
 * none of `hidden` (NULL-terminated) in it. */
static void command_is(const pgw_transfer *t, const char *want, const char *const *hidden)
{
    json_t *command = pgw_api_transfer_command(t);
    assert_non_null(command);
    char *text = json_dumps(command, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(command);
    assert_non_null(text);
    for (size_t i = 0; hidden != NULL && hidden[i] != NULL; i++)
        if (strstr(text, hidden[i]) != NULL)
            fail_msg("%s shows %s", text, hidden[i]);
    assert_string_equal(text, want);
    free(text);
}

/* Finance's audit: transfers of the gateway's own commands (event_key
 * null) named no command. Each names its own, from its key. */
static void test_command_of_each_kind(void **state)
{
    (void)state;
    pgw_transfer t = transfer(PGW_TRANSFER_REDEEM, "capture:H-1:a.b", "member:M1",
                              "shop:S001:redeemed", "H-1:a.b");
    command_is(&t, "{\"kind\":\"capture\",\"hold_id\":\"H-1:a.b\"}", NULL);
    t = transfer(PGW_TRANSFER_REDEEM, "redeem:D-9", "member:M1", "shop:S001:redeemed", "D-9");
    command_is(&t, "{\"kind\":\"redemption\",\"redemption_id\":\"D-9\"}", NULL);
    t = transfer(PGW_TRANSFER_EXPIRE, "expire:lot:42:7", "member:M1", "system:expired", "lot:42");
    command_is(&t, "{\"kind\":\"expiry\",\"lot_id\":42,\"expired_before\":7}", NULL);
}

/* The parts of a key that no view shows stay unshown: an import's card
 * number or phone's blind index, a bind's digest of its identity, a
 * code's hash, a login's session id, a follower's digest. */
static void test_command_hides_what_keys_hide(void **state)
{
    (void)state;
    static const char *const card[] = {"CARD-0042", ":card", NULL};
    pgw_transfer t = transfer(PGW_TRANSFER_IMPORT, "import:S001:b-2026.11_a:card:CARD-0042",
                              "import:S001", "member:M1", "b-2026.11_a");
    command_is(&t, "{\"kind\":\"import\",\"shop_id\":\"S001\",\"batch\":\"b-2026.11_a\"}", card);
    static const char *const lookup[] = {"9f86d081884c7d65", "phone", NULL};
    t = transfer(
        PGW_TRANSFER_IMPORT,
        "import:S002:x:phone:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "import:S002", "member:M2", "x");
    command_is(&t, "{\"kind\":\"import\",\"shop_id\":\"S002\",\"batch\":\"x\"}", lookup);
    static const char *const digest[] = {"0123456789abcdef", "fedcba98", NULL};
    static const struct {
        const char *key, *by;
    } merges[] = {
        {"bind:M1:0123456789abcdef0123456789abcdef", "bind"},
        {"mp_phone:M1:0123456789abcdef0123456789abcdef", "mp_phone"},
        {"otp:M1:0123456789abcdef0123456789abcdef:fedcba9876543210", "otp"},
        {"mp_login:fedcba9876543210fedcba9876543210", "mp_login"},
        {"oa_link:0123456789abcdef0123456789abcdef:1764000000", "oa_link"},
    };
    for (size_t i = 0; i < sizeof(merges) / sizeof(merges[0]); i++) {
        char want[256];
        snprintf(want, sizeof(want),
                 "{\"kind\":\"merge\",\"by\":\"%s\",\"from\":\"M2\",\"into\":\"M1\"}",
                 merges[i].by);
        t = transfer(PGW_TRANSFER_MERGE, merges[i].key, "member:M2", "member:M1", "merge:M2");
        command_is(&t, want, digest);
        /* A merged member in debt: the survivor pays it, the other way. */
        t = transfer(PGW_TRANSFER_MERGE, merges[i].key, "member:M1", "member:M2", "merge:M2");
        command_is(&t, want, digest);
    }
}

/* An event's transfers have none (event_key names the event); a key of a
 * form this build does not know, or on a transfer of another kind, is
 * "other", nothing of it shown. */
static void test_command_of_events_and_others(void **state)
{
    (void)state;
    pgw_transfer t =
        transfer(PGW_TRANSFER_EARN, "store:S001:E-1", "shop:S001:issued", "member:M1", "R-1");
    snprintf(t.channel, sizeof(t.channel), "store");
    command_is(&t, "null", NULL);
    t = transfer(PGW_TRANSFER_REVERSAL, "wechat_mp:-:E-2", "member:M1", "mall:behaviour", "earn:3");
    snprintf(t.channel, sizeof(t.channel), "wechat_mp");
    command_is(&t, "null", NULL);
    static const char *const secret[] = {"SECRET", "CARD-1", NULL};
    static const struct {
        pgw_transfer_kind kind;
        const char *key, *reference;
    } others[] = {
        {PGW_TRANSFER_ADJUST, "Adjust:SECRET", ""},
        {PGW_TRANSFER_EARN, "capture:SECRET", ""},                 /* not a spend */
        {PGW_TRANSFER_REDEEM, "capture:SECRET/x", ""},             /* not a hold's id */
        {PGW_TRANSFER_REDEEM, "expire:lot:1:0", ""},               /* not an expiry */
        {PGW_TRANSFER_EXPIRE, "expire:lot:1", "lot:1"},            /* the reference ledger's */
        {PGW_TRANSFER_EXPIRE, "expire:lot:1:0:SECRET", "lot:1"},   /* more than it says */
        {PGW_TRANSFER_EXPIRE, "expire:lot:-1:0", "lot:1"},         /* no lot */
        {PGW_TRANSFER_IMPORT, "import:S001:b", "b"},               /* no account */
        {PGW_TRANSFER_IMPORT, "import:S0 1:b:card:CARD-1", "b"},   /* not a shop */
        {PGW_TRANSFER_IMPORT, "import:S001:b/c:card:CARD-1", "b"}, /* not a batch */
        {PGW_TRANSFER_MERGE, "mp_phoneSECRET:abc", "merge:M2"},    /* not a merge's request */
        {PGW_TRANSFER_MERGE, "bind:M1:SECRET", "M2"},              /* names no merged member */
        {PGW_TRANSFER_MERGE, "bind:M1:SECRET", "merge:M3"},        /* a member it did not move */
    };
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        t = transfer(others[i].kind, others[i].key, "member:M2", "member:M1", others[i].reference);
        command_is(&t, "{\"kind\":\"other\"}", secret);
    }
}

/* An expiry's key is read as the gateway writes it (%lld of a lot id and a
 * count): decimal digits only. sscanf's %lld took a space or a sign
 * before either number, and one past int64 was undefined behaviour (glibc
 * saturates it). A key not of that form names no expiry. */
static void test_expiry_key_is_digits_only(void **state)
{
    (void)state;
    static const char *const keys[] = {
        "expire:lot: 1:0",
        "expire:lot:+1:0",
        "expire:lot:1: 0",
        "expire:lot:1:+0",
        "expire:lot:1:-0",
        "expire:lot:1:\t0",
        "expire:lot:0:0",
        "expire:lot::0",
        "expire:lot:1:",
        "expire:lot:1:0 ",
        "expire:lot:1:9223372036854775808",  /* INT64_MAX + 1 */
        "expire:lot:1:99999999999999999999", /* 20 digits */
        "expire:lot:18446744073709551617:0", /* 20 digits: wraps uint64 to 1 */
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        pgw_transfer t =
            transfer(PGW_TRANSFER_EXPIRE, keys[i], "member:M1", "system:expired", "lot:1");
        json_t *command = pgw_api_transfer_command(&t);
        assert_non_null(command);
        const char *kind = json_string_value(json_object_get(command, "kind"));
        if (kind == NULL || strcmp(kind, "other") != 0)
            fail_msg("%s reads as %s", keys[i], kind ? kind : "(none)");
        json_decref(command);
    }
    /* The largest numbers the gateway could write still read. */
    pgw_transfer t = transfer(PGW_TRANSFER_EXPIRE, "expire:lot:9223372036854775807:0123",
                              "member:M1", "system:expired", "lot:9223372036854775807");
    command_is(&t, "{\"kind\":\"expiry\",\"lot_id\":9223372036854775807,\"expired_before\":123}",
               NULL);
}

/* t as the staff's history shows it (event_key and command), compact. */
static char *staff_history(const pgw_transfer *t)
{
    pgw_config *cfg = calloc(1, sizeof(*cfg));
    pgw_command *cmd = calloc(1, sizeof(*cmd));
    assert_non_null(cfg);
    assert_non_null(cmd);
    cmd->page = (pgw_transfer *)t;
    cmd->page_cap = cmd->n_page = 1;
    json_t *history = pgw_api_history_json(cfg, cmd, 1, true);
    assert_non_null(history);
    char *text = json_dumps(json_array_get(json_object_get(history, "transfers"), 0),
                            JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(text);
    json_decref(history);
    free(cmd);
    free(cfg);
    return text;
}

/* Before e974178 a phone bound by POST /v1/mp/phone was keyed by writing
 * "mp_phone" over a bind key's first 8 bytes and moving the rest 4 on:
 * member m_abc2's "bind:m_abc2:<digest>" became
 * "mp_phonehonebc2:<digest>", whose first word is a channel's name. Its
 * merge showed that key, digest and all, as an event's. It names no event
 * (the transfer's channel is wechat_mp, and an event's key has its
 * channel's three parts); it is the mp_phone request's merge. */
static void test_old_mp_phone_key_is_no_event(void **state)
{
    (void)state;
    static const char *const keys[] = {
        "mp_phonehonebc2:0123456789abcdef0123456789abcdef", /* member m_abc2 */
        "mp_phonehone:0123456789abcdef0123456789abcdef",    /* member abc */
        "mp_phonehone0123456789abcdef0123456789abcdef",     /* member mm */
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        pgw_transfer t =
            transfer(PGW_TRANSFER_MERGE, keys[i], "member:m2", "member:m_abc2", "merge:m2");
        snprintf(t.channel, sizeof(t.channel), "wechat_mp");
        char *text = staff_history(&t);
        if (strstr(text, "0123456789abcdef") != NULL || strstr(text, "honebc2") != NULL)
            fail_msg("%s shows its key", text);
        assert_non_null(strstr(text, "\"event_key\":null"));
        assert_non_null(strstr(text, "\"command\":{\"by\":\"mp_phone\",\"from\":\"m2\","
                                     "\"into\":\"m_abc2\",\"kind\":\"merge\"}"));
        free(text);
    }
}

/* An event key names its event only on a transfer of the channel its key
 * begins with, in an event key's three parts: another tool's
 * "adjust:SECRET" under channel system, or a key of one part after a
 * channel's name, is none. */
static void test_event_key_only_of_its_channel(void **state)
{
    (void)state;
    pgw_transfer t =
        transfer(PGW_TRANSFER_EARN, "store:S001:E-1", "shop:S001:issued", "member:M1", "R-1");
    snprintf(t.channel, sizeof(t.channel), "store");
    char *text = staff_history(&t);
    assert_non_null(strstr(text, "\"command\":null,"));
    assert_non_null(strstr(text, "\"event_key\":\"store:S001:E-1\""));
    free(text);
    static const struct {
        const char *key, *channel;
    } others[] = {
        {"adjust:SECRET", "system"},
        {"store:SECRET", "store"},
        {"store:S 1:SECRET", "store"},
        {"mp_phone2:SECRET", "wechat_mp"},
    };
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        t = transfer(PGW_TRANSFER_ADJUST, others[i].key, "system:adjustments", "member:M1", "");
        snprintf(t.channel, sizeof(t.channel), "%s", others[i].channel);
        text = staff_history(&t);
        if (strstr(text, "SECRET") != NULL || strstr(text, "\"event_key\":null") == NULL)
            fail_msg("%s shows its key", text);
        free(text);
    }
}

/* A member's stream cuts the command along with the event_key. */
static void test_member_view_drops_command(void **state)
{
    (void)state;
    char out[512];
    view("{\"type\":\"transfer\",\"id\":8,\"reference\":\"H-1\",\"event_key\":null,"
         "\"command\":{\"kind\":\"capture\",\"hold_id\":\"H-1\"}}",
         out);
    assert_string_equal(out, "{\"type\":\"transfer\",\"id\":8,\"reference\":\"H-1\"}");
}

static void test_by_session(void **state)
{
    (void)state;
    assert_true(pgw_api_by_session("Session v2.abc"));
    assert_true(pgw_api_by_session("session v2.abc"));
    assert_false(pgw_api_by_session("Bearer k"));
    /* The scheme alone is a session's header with its token missing (told
     * "Session <token> is required"), not an API key's; a scheme that
     * only begins so is not one. */
    assert_true(pgw_api_by_session("Session"));
    assert_true(pgw_api_by_session("SESSION"));
    assert_false(pgw_api_by_session("Sessions x"));
    assert_false(pgw_api_by_session("Session2 x"));
    assert_false(pgw_api_by_session("Sess"));
    assert_false(pgw_api_by_session(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_member_view_drops_event_key),
        cmocka_unit_test(test_member_view_keeps_the_rest),
        cmocka_unit_test(test_by_session),
        cmocka_unit_test(test_history_time_out_of_the_zone),
        cmocka_unit_test(test_command_of_each_kind),
        cmocka_unit_test(test_command_hides_what_keys_hide),
        cmocka_unit_test(test_command_of_events_and_others),
        cmocka_unit_test(test_member_view_drops_command),
        cmocka_unit_test(test_old_mp_phone_key_is_no_event),
        cmocka_unit_test(test_event_key_only_of_its_channel),
        cmocka_unit_test(test_expiry_key_is_digits_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
