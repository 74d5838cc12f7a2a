/*
 * test_config.c - the example configuration, and one refusal per kind of
 * mistake, each naming the JSON path of the offending value.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "config/config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *source_dir(void)
{
    const char *dir = getenv("PGW_SOURCE_DIR");
    return dir != NULL ? dir : ".";
}

static void test_example_loads_with_its_figures(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/config/pointsgw.example.json", source_dir());
    pgw_config *cfg = NULL;
    pgw_err err;
    if (pgw_config_load(path, &cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    const pgw_rules *r = &cfg->rules;
    assert_int_equal(r->tz.offset_s, 28800);
    assert_true(r->n_shops >= 8);
    assert_true(r->n_formats >= 4);
    assert_int_equal(r->n_tiers, 4);
    int32_t s002 = pgw_rules_find_shop(r, "S002");
    assert_true(s002 >= 0);
    assert_int_equal(pgw_rules_fen_per_point(r, s002), 400); /* its own rate */
    assert_int_equal(pgw_rules_fen_per_point(r, pgw_rules_find_shop(r, "S004")), 200);
    assert_int_equal(r->tiers[3].multiplier_bp, 20000);
    assert_string_equal(r->tiers[1].display_name, "金卡"); /* what a tier notice says */
    bool kinds[8] = {false};
    for (size_t i = 0; i < r->n_campaigns; i++)
        kinds[r->campaigns[i].kind] = true;
    for (size_t k = 0; k < 8; k++)
        assert_true(kinds[k]);
    assert_int_equal(r->behaviours.n_streaks, 2);
    assert_int_equal(r->behaviours.streaks[0].days, 7);
    assert_int_equal(r->behaviours.streaks[1].days, 30);
    assert_true(r->behaviours.follow_oa.enabled && r->behaviours.survey.enabled);
    assert_int_equal(r->expiry.policy, PGW_EXPIRY_YEAR_END);
    assert_string_equal(cfg->sms.provider, "tencent");
    assert_int_equal(cfg->notify.quiet_start_min, 21 * 60);
    assert_int_equal(cfg->notify.quiet_end_min, 8 * 60);
    assert_int_equal(cfg->n_keys, 4);
    char summary[2048];
    assert_int_equal(pgw_config_summary(cfg, summary, sizeof(summary)), PGW_OK);
    assert_non_null(strstr(summary, "Asia/Shanghai"));
    pgw_config_free(cfg);
}

static const char MINIMAL[] =
    "{\"mall\": {\"name\": \"Test Mall\", \"time_zone\": \"Asia/Shanghai\"},"
    " \"formats\": {\"retail\": {\"fen_per_point\": 100}},"
    " \"shops\": [{\"id\": \"S001\", \"name\": \"One\", \"format\": \"retail\"}],"
    " \"tiers\": [{\"name\": \"silver\", \"min_spend_fen_12m\": 0, \"multiplier_bp\": 10000}],"
    " \"campaigns\": ["
    "  {\"id\": \"wed\", \"kind\": \"weekday\", \"weekday\": 3, \"multiplier_bp\": 20000},"
    "  {\"id\": \"spend\", \"kind\": \"brackets\", \"brackets\": ["
    "    {\"min_fen\": 100, \"max_fen\": 199, \"bonus_points\": 5},"
    "    {\"min_fen\": 200, \"bonus_points\": 10}]},"
    "  {\"id\": \"range\", \"kind\": \"date_range\", \"from\": \"2026-11-11\","
    "   \"to\": \"2026-11-13\", \"multiplier_bp\": 30000}],"
    " \"behaviours\": {\"sign_in\": {\"points\": 5,"
    "   \"streaks\": [{\"days\": 7, \"bonus_points\": 50}]}},"
    " \"keys\": [{\"name\": \"admin\", \"scope\": \"admin\", \"key_env\": \"PGW_ADMIN_KEY\"}]}";

/* Sets (or with value NULL deletes) the member at a dotted path ("a.0.b"). */
static void set_path(json_t *root, const char *path, const char *value)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *node = root;
    char *save = NULL;
    char *part = strtok_r(buf, ".", &save);
    for (char *next = strtok_r(NULL, ".", &save); next != NULL;
         part = next, next = strtok_r(NULL, ".", &save))
        node = json_is_array(node) ? json_array_get(node, strtoul(part, NULL, 10))
                                   : json_object_get(node, part);
    assert_non_null(node);
    json_t *v = value ? json_loads(value, JSON_DECODE_ANY, NULL) : NULL;
    assert_true(value == NULL || v != NULL);
    if (json_is_array(node)) {
        size_t i = strtoul(part, NULL, 10);
        if (i < json_array_size(node))
            json_array_set_new(node, i, v);
        else
            json_array_append_new(node, v);
    } else if (v == NULL) {
        json_object_del(node, part);
    } else {
        json_object_set_new(node, part, v);
    }
}

/* channels with a mini program carrying the keys `more` */
#define MP_WITH(more)                                                                              \
    "{\"wechat_mp\": {\"appid\": \"wx1234567890abcdef\", \"secret_env\": \"X\", " more "}}"

static const struct {
    const char *path, *value, *fragment;
} BAD[] = {
    {"mall.colour", "\"red\"", "$.mall.colour: unknown key"},
    {"colour", "1", "$.colour: unknown key"},
    {"mall", NULL, "$.mall: required"},
    {"mall.name", "5", "$.mall.name: expected a string, got an integer"},
    {"mall.time_zone", "\"Mars/Olympus\"", "$.mall.time_zone: unknown time zone"},
    {"mall.time_zone", "\"Europe/Paris\"", "daylight saving"},
    {"mall.point_value_fen", "1.5", "$.mall.point_value_fen: expected an integer"},
    {"mall.allow_negative", "\"yes\"", "$.mall.allow_negative: expected true or false"},
    {"formats.retail.fen_per_point", "0",
     "$.formats.retail.fen_per_point: expected an integer "
     "1..100000000, got 0"},
    {"formats.retail.fen_per_point", "-5", "got -5"},
    {"formats.retail.fen_per_point", "1e3", "a number with a fraction or exponent"},
    {"formats.retail.rate", "1", "$.formats.retail.rate: unknown key"},
    {"shops.0.format", "\"cinema\"", "$.shops[0].format: unknown format \"cinema\""},
    {"shops.1", "{\"id\": \"S001\", \"name\": \"Dup\", \"format\": \"retail\"}",
     "$.shops[1].id: duplicate shop id \"S001\""},
    {"shops.1", "{\"id\": \"s001\", \"name\": \"Dup\", \"format\": \"retail\"}",
     "$.shops[1].id: duplicate shop id \"s001\" (as \"S001\")"},
    {"shops.0.id", "\"S 001\"", "$.shops[0].id"},
    {"shops.0.fen_per_point", "-1", "$.shops[0].fen_per_point"},
    {"shops", "[]", "$.shops: at least one shop"},
    {"tiers.0.min_spend_fen_12m", "5", "$.tiers[0].min_spend_fen_12m: the first tier must start"},
    {"tiers.1", "{\"name\": \"gold\", \"min_spend_fen_12m\": 0, \"multiplier_bp\": 12000}",
     "$.tiers[1].min_spend_fen_12m: must be above"},
    {"tiers.0.multiplier_bp", "9999", "$.tiers[0].multiplier_bp"},
    {"campaigns.0.shops", "[\"S099\"]", "$.campaigns[0].shops[0]: unknown shop \"S099\""},
    {"campaigns.0.formats", "[\"cinema\"]", "$.campaigns[0].formats[0]: unknown format"},
    {"campaigns.0.weekday", "8", "$.campaigns[0].weekday: expected an integer 1..7, got 8"},
    {"campaigns.0.multiplier_bp", "-20000", "$.campaigns[0].multiplier_bp"},
    {"campaigns.0.skus", "[\"A\"]", "$.campaigns[0].skus: unknown key"},
    {"campaigns.0.kind", "\"lottery\"", "$.campaigns[0].kind"},
    {"campaigns.0.stacking", "\"most\"", "$.campaigns[0].stacking"},
    {"campaigns.0.funded_by", "\"bank\"", "$.campaigns[0].funded_by"},
    {"campaigns.0.daily_cap", "-1", "$.campaigns[0].daily_cap"},
    {"campaigns.1.brackets.1.min_fen", "150",
     "$.campaigns[1].brackets[1]: overlaps brackets[0] (100..199)"},
    {"campaigns.1.brackets.0.multiplier_bp", "12000",
     "$.campaigns[1].brackets[0]: give exactly one of bonus_points and multiplier_bp"},
    {"campaigns.1.brackets", "[]", "$.campaigns[1].brackets: must not be empty"},
    {"campaigns.2.from", "\"2026-11-14\"", "$.campaigns[2]: from 2026-11-14 is after to"},
    {"campaigns.2.to", "\"2026-02-30\"", "$.campaigns[2].to"},
    {"campaigns.3",
     "{\"id\": \"wed\", \"kind\": \"weekday\", \"weekday\": 1, \"multiplier_bp\": "
     "20000}",
     "$.campaigns[3].id: duplicate campaign id"},
    {"campaigns.3", "{\"id\": \"c\", \"kind\": \"challenge\", \"bonus_points\": 5}",
     "$.campaigns[3]: give exactly one of min_purchases and min_spend_fen"},
    {"campaigns.3", "{\"id\": \"s\", \"kind\": \"sku\", \"skus\": [], \"multiplier_bp\": 20000}",
     "$.campaigns[3].skus: must not be empty"},
    {"behaviours.sign_in.streaks.1", "{\"days\": 5, \"bonus_points\": 1}",
     "$.behaviours.sign_in.streaks[1].days: streaks must be in ascending days"},
    {"behaviours.dance", "{\"points\": 1}", "$.behaviours.dance: unknown key"},
    {"behaviours.review", "{\"points\": -1}", "$.behaviours.review.points"},
    {"keys.0.scope", "\"shop:S099\"", "$.keys[0].scope: unknown shop"},
    {"keys.0.scope", "\"root\"", "$.keys[0].scope"},
    {"keys.0.key_sha256", "\"abc\"", "$.keys[0].key_sha256: expected 64"},
    {"keys.0.key_env", NULL, "$.keys[0]: give exactly one of key_sha256 and key_env"},
    {"keys.1", "{\"name\": \"k\", \"scope\": \"admin\", \"key\": \"clear-text\"}",
     "$.keys[1].key: unknown key"},
    {"keys.0.key_env", "\"lower\"", "$.keys[0].key_env"},
    /* regression: one secret twice, and the last line decided the scope */
    {"keys.1", "{\"name\": \"k2\", \"scope\": \"finance\", \"key_env\": \"PGW_ADMIN_KEY\"}",
     "$.keys[1]: the same key as \"admin\""},
    {"listen", "\"localhost:8080\"", "$.listen: the host of \"localhost:8080\" is not an IP"},
    {"listen", "\"nohost\"", "$.listen"},
    {"listen", "\"0.0.0.0:70000\"", "$.listen"},
    {"db", "\"mysql://x\"", "$.db"},
    {"expiry", "{\"policy\": \"rolling\"}", "$.expiry.months: required"},
    {"expiry", "{\"policy\": \"rolling\", \"months\": 12, \"years\": 1}",
     "$.expiry.years: only for the year_end policy"},
    {"expiry", "{\"policy\": \"forever\"}", "$.expiry.policy"},
    {"channels", "{\"sms\": {\"provider\": \"twilio\", \"sign_name\": \"x\"}}",
     "$.channels.sms.provider"},
    {"channels", "{\"wechat_mp\": {\"appid\": \"wx123\", \"secret_env\": \"X\"}}",
     "$.channels.wechat_mp.appid"},
    {"channels", "{\"wechat_mp\": {\"appid\": \"wx1234567890abcdef\", \"secret\": \"s3cr3t\"}}",
     "$.channels.wechat_mp.secret: unknown key"},
    {"channels", MP_WITH("\"notice_page\": \"/pages/points/index\""),
     "$.channels.wechat_mp.notice_page: a page path starts with its first directory"},
    {"channels", MP_WITH("\"notice_page\": \"?tab=1\""),
     "$.channels.wechat_mp.notice_page: a page path starts with its first directory"},
    {"channels", MP_WITH("\"notice_page\": \"pages/points /index\""),
     "$.channels.wechat_mp.notice_page: character 13 (U+0020) is not a URL character"},
    /* regression: taken, and WeChat refused the notice (no such page) */
    {"channels", MP_WITH("\"notice_page\": \"pages/points\\u3000/index\""),
     "$.channels.wechat_mp.notice_page: character 13 (U+3000) is a space, an invisible or a "
     "full-width character"},
    {"channels", MP_WITH("\"notice_page\": \"pages/points/index\\u00a0\""),
     "$.channels.wechat_mp.notice_page: character 19 (U+00A0) is a space, an invisible or a "
     "full-width character"},
    {"channels", MP_WITH("\"notice_page\": \"\\u200bpages/points/index\""),
     "$.channels.wechat_mp.notice_page: character 1 (U+200B) is a space, an invisible or a "
     "full-width character"},
    {"channels", MP_WITH("\"notice_page\": \"pages/points/index\\uff1ftab=1\""),
     "$.channels.wechat_mp.notice_page: character 19 (U+FF1F) is a space, an invisible or a "
     "full-width character"},
    {"channels", MP_WITH("\"notice_page\": \"pkg/积分/home\\ufeff\""),
     "$.channels.wechat_mp.notice_page: character 12 (U+FEFF) is a space, an invisible or a "
     "full-width character"},
    {"channels", MP_WITH("\"notice_page\": \"pages/\\uff50oints\""),
     "$.channels.wechat_mp.notice_page: character 7 (U+FF50) is a space, an invisible or a "
     "full-width character"},
    /* regression: invisible (Unicode's default-ignorable) characters taken */
    {"channels", MP_WITH("\"notice_page\": \"pages/\\u3164points\""),
     "$.channels.wechat_mp.notice_page: character 7 (U+3164) is a space, an invisible or a "
     "full-width character"},
    {"channels", MP_WITH("\"notice_page\": \"pages/points\\udb40\\udc20\""),
     "$.channels.wechat_mp.notice_page: character 13 (U+E0020) is a space, an invisible or a "
     "full-width character"},
    {"channels", MP_WITH("\"notice_page\": \"pages/a#top\""),
     "$.channels.wechat_mp.notice_page: character 8 (U+0023) is not a URL character"},
    {"channels", MP_WITH("\"notice_page\": \"pages/a?x=50%\""),
     "$.channels.wechat_mp.notice_page: the '%' at character 13 starts no %XX escape"},
    {"channels", MP_WITH("\"notice_page\": \"pages/a?x=%zz\""),
     "$.channels.wechat_mp.notice_page: the '%' at character 11 starts no %XX escape"},
    {"channels", MP_WITH("\"notice_page\": \"pages/points\\u0001\""),
     "$.channels.wechat_mp.notice_page: contains a control character (0x01)"},
    {"channels", MP_WITH("\"notice_page\": \"\""),
     "$.channels.wechat_mp.notice_page: must not be empty"},
    {"channels", MP_WITH("\"notice_page\": 5"),
     "$.channels.wechat_mp.notice_page: expected a string"},
    {"channels", MP_WITH("\"miniprogram_state\": \"release\""),
     "$.channels.wechat_mp.miniprogram_state: \"release\" is not one of the allowed values"},
    {"channels", MP_WITH("\"mp_jump_page\": \"pages/points/index\""),
     "$.channels.wechat_mp.mp_jump_page: unknown key"},
    {"channels",
     "{\"wechat_oa\": {\"appid\": \"wxfedcba0987654321\", \"secret_env\": \"S\","
     " \"token_env\": \"T\", \"mp_jump_page\": \"pages/a\\tb\"}}",
     "$.channels.wechat_oa.mp_jump_page: character 8 (U+0009) is not a URL character"},
    /* regression: taken, and no template opened it (no mp_jump_appid: no jump) */
    {"channels",
     "{\"wechat_oa\": {\"appid\": \"wxfedcba0987654321\", \"secret_env\": \"S\","
     " \"token_env\": \"T\", \"mp_jump_page\": \"pages/oa/points\"}}",
     "$.channels.wechat_oa.mp_jump_page: opens a page of the mini program mp_jump_appid names, "
     "and none is named"},
    /* regression: another mini program opened our notice_page, a page it may not have */
    {"channels",
     "{\"wechat_mp\": {\"appid\": \"wx1234567890abcdef\", \"secret_env\": \"X\"},"
     " \"wechat_oa\": {\"appid\": \"wxfedcba0987654321\", \"secret_env\": \"S\","
     " \"token_env\": \"T\", \"mp_jump_appid\": \"wx0000000000000001\"}}",
     "$.channels.wechat_oa.mp_jump_page: required, as mp_jump_appid \"wx0000000000000001\" is "
     "not channels.wechat_mp's appid"},
    {"channels",
     "{\"wechat_oa\": {\"appid\": \"wxfedcba0987654321\", \"secret_env\": \"S\","
     " \"token_env\": \"T\", \"mp_jump_appid\": \"wx1234567890abcdef\"}}",
     "$.channels.wechat_oa.mp_jump_page: required, as mp_jump_appid \"wx1234567890abcdef\" is "
     "not channels.wechat_mp's appid"},
    /* regression: a null page (no page, as for every key) passed as one named */
    {"channels",
     "{\"wechat_mp\": {\"appid\": \"wx1234567890abcdef\", \"secret_env\": \"X\"},"
     " \"wechat_oa\": {\"appid\": \"wxfedcba0987654321\", \"secret_env\": \"S\","
     " \"token_env\": \"T\", \"mp_jump_appid\": \"wx0000000000000001\", \"mp_jump_page\": null}}",
     "$.channels.wechat_oa.mp_jump_page: required, as mp_jump_appid \"wx0000000000000001\" is "
     "not channels.wechat_mp's appid"},
    {"channels",
     "{\"wechat_oa\": {\"appid\": \"wxfedcba0987654321\", \"secret_env\": \"S\","
     " \"token_env\": \"T\", \"miniprogram_state\": \"trial\"}}",
     "$.channels.wechat_oa.miniprogram_state: unknown key"},
    {"channels",
     "{\"wechat_oa\": {\"appid\": \"wxfedcba0987654321\", \"secret_env\": \"S\","
     " \"token_env\": \"T\", \"reply_within_ms\": 5000}}",
     "$.channels.wechat_oa.reply_within_ms: expected an integer 200..4900, got 5000"},
    {"channels",
     "{\"wechat_oa\": {\"appid\": \"wxfedcba0987654321\", \"secret_env\": \"S\","
     " \"token_env\": \"T\", \"reply_within_ms\": 199}}",
     "$.channels.wechat_oa.reply_within_ms: expected an integer 200..4900, got 199"},
    {"channels", MP_WITH("\"reply_within_ms\": 3000"),
     "$.channels.wechat_mp.reply_within_ms: unknown key"},
    {"notify", "{\"quiet_hours\": {\"start\": \"25:00\"}}", "$.notify.quiet_hours.start"},
    {"notify", "{\"retry\": {\"max_attempts\": 0}}", "$.notify.retry.max_attempts"},
    /* regression: accepted, and the first retry's backoff aborted the gateway */
    {"notify", "{\"retry\": {\"base_delay_ms\": 700000}}",
     "$.notify.retry.max_delay_ms: 600000 is below base_delay_ms 700000"},
    {"notify", "{\"routes\": {\"default\": [\"sms\", \"sms\"]}}",
     "$.notify.routes.default[1]: expected wechat_mp, wechat_oa or sms, each once"},
    {"notify", "{\"routes\": {\"redemption\": [\"email\"]}}", "$.notify.routes.redemption[0]"},
    {"notify", "{\"routes\": {\"points_arrived\": []}}",
     "$.notify.routes.points_arrived: name at least one channel"},
    {"notify", "{\"routes\": {\"birthday\": [\"sms\"]}}", "$.notify.routes.birthday: unknown key"},
    {"notify", "{\"routes\": {\"default\": [\"sms\", \"wechat_oa\", \"wechat_mp\", \"sms\"]}}",
     "$.notify.routes.default: more than 3 entries"},
    /* regression (review notes): a route naming a channel the configuration
     * does not set up was accepted, and its notices silently never went that way */
    {"notify", "{\"routes\": {\"points_expiring\": [\"sms\"]}}",
     "$.notify.routes.points_expiring[0]: channel \"sms\" is not configured ($.channels.sms)"},
    {"notify", "{\"routes\": {\"default\": [\"wechat_oa\"]}}",
     "$.notify.routes.default[0]: channel \"wechat_oa\" is not configured"},
    {"http", "{\"body_max_bytes\": 10}", "$.http.body_max_bytes"},
    {"http", "{\"tls\": {\"cert_file\": \"c.pem\"}}", "$.http.tls.key_file: required"},
    {"http", "{\"max_inflight\": 1}", "$.http.max_inflight"},
    /* a shop's CSV batch takes 4 MiB: a total below it never reads one */
    {"http", "{\"body_total_max_bytes\": 4194303}", "$.http.body_total_max_bytes"},
    {"http", "{\"body_total_max_bytes\": 68719476737}", "$.http.body_total_max_bytes"},
    {"http", "{\"body_max_bytes\": 8388608, \"body_total_max_bytes\": 8388607}",
     "$.http.body_total_max_bytes: 8388607 is below body_max_bytes 8388608"},
    {"http", "{\"gzip\": true}", "$.http.gzip: unknown key"},
    {"http", "{\"stream_sessions_max\": 4097}", "$.http.stream_sessions_max"},
    {"http", "{\"stream_session_check_s\": 0}", "$.http.stream_session_check_s"},
    {"http", "{\"max_connections_per_address\": 65537}", "$.http.max_connections_per_address"},
    {"http", "{\"max_connections_per_address\": -1}", "$.http.max_connections_per_address"},
    {"http", "{\"trusted_proxies\": \"10.0.0.1\"}", "$.http.trusted_proxies: expected an array"},
    {"http", "{\"trusted_proxies\": [7]}", "$.http.trusted_proxies[0]: expected an address"},
    {"http", "{\"trusted_proxies\": [\"::1\", \"proxy.local\"]}",
     "$.http.trusted_proxies[1]: \"proxy.local\" is not an IPv4 or IPv6 address"},
    {"http", "{\"trusted_proxies\": [\"10.0.0.1/8\"]}", "bits set past its prefix length"},
};

static void test_every_mistake_is_refused_with_its_path(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(BAD) / sizeof(BAD[0]); i++) {
        json_t *root = json_loads(MINIMAL, 0, NULL);
        assert_non_null(root);
        set_path(root, BAD[i].path, BAD[i].value);
        char *text = json_dumps(root, 0);
        pgw_config *cfg = (pgw_config *)1;
        pgw_err err;
        pgw_err_clear(&err);
        int rc = pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err);
        if (rc != PGW_EINVAL || cfg != NULL || strstr(err.msg, BAD[i].fragment) == NULL ||
            strncmp(err.msg, "mall.json: ", 11) != 0)
            fail_msg("case %zu (%s): rc %d, \"%s\"", i, BAD[i].path, rc, err.msg);
        free(text);
        json_decref(root);
    }
}

static void test_minimal_is_valid_and_defaults_apply(void **state)
{
    (void)state;
    pgw_config *cfg = NULL;
    pgw_err err;
    if (pgw_config_parse(MINIMAL, strlen(MINIMAL), "mall.json", &cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(cfg->db, "sqlite:data/pointsgw.db");
    assert_true(cfg->allow_negative);
    assert_int_equal(cfg->rules.expiry.policy, PGW_EXPIRY_NEVER);
    assert_int_equal(cfg->rules.campaigns[1].brackets[1].max_fen, PGW_AMOUNT_FEN_MAX);
    assert_int_equal(cfg->rules.campaigns[0].stacking, PGW_STACK_MAX);
    assert_string_equal(cfg->rules.tiers[0].display_name, "silver"); /* none given: the name */
    assert_false(cfg->sms.enabled);
    /* Every kind routes mini program, official account, SMS by default. */
    for (size_t k = 0; k < PGW_NOTICE_KINDS; k++) {
        assert_int_equal(cfg->notify.routes[k].n, 3);
        assert_int_equal(cfg->notify.routes[k].channel[0], PGW_CHANNEL_MP);
        assert_int_equal(cfg->notify.routes[k].channel[2], PGW_CHANNEL_SMS);
    }
    pgw_config_free(cfg);
}

/* Regression (the operator's review): a configuration saved by Windows'
 * Notepad starts with a UTF-8 byte order mark, and was refused at 1:1
 * naming an invisible character. It is read as the file without it; a
 * mark anywhere else is still no JSON. */
static void test_a_byte_order_mark_is_skipped(void **state)
{
    (void)state;
    char text[sizeof(MINIMAL) + 3] = "\xEF\xBB\xBF";
    memcpy(text + 3, MINIMAL, sizeof(MINIMAL));
    pgw_config *cfg = NULL;
    pgw_err err;
    if (pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(cfg->db, "sqlite:data/pointsgw.db");
    pgw_config_free(cfg);
    char twice[sizeof(text) + 3] = "\xEF\xBB\xBF";
    memcpy(twice + 3, text, sizeof(text));
    assert_int_equal(pgw_config_parse(twice, strlen(twice), "mall.json", &cfg, &err), PGW_EINVAL);
    assert_null(cfg);
    assert_non_null(strstr(err.msg, "mall.json:1:"));
}

/* Regression (the review of e7cbbd5): an optional key set to null is
 * absent, in the configuration as in requests; it was "expected an
 * object, got null". A required one null is still refused. */
static void test_null_is_absent(void **state)
{
    (void)state;
    json_t *root = json_loads(MINIMAL, 0, NULL);
    assert_non_null(root);
    static const char *const optional[] = {"expiry",
                                           "http",
                                           "risk",
                                           "notify",
                                           "security",
                                           "channels",
                                           "campaigns.0.shops",
                                           "campaigns.1.formats",
                                           "mall.allow_negative",
                                           "behaviours.sign_in.daily_cap"};
    for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++)
        set_path(root, optional[i], "null");
    char *text = json_dumps(root, 0);
    pgw_config *cfg = NULL;
    pgw_err err;
    if (pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(cfg->rules.expiry.policy, PGW_EXPIRY_NEVER); /* the defaults */
    assert_true(cfg->allow_negative);
    assert_int_equal(cfg->rules.campaigns[0].n_shops, 0);
    pgw_config_free(cfg);
    free(text);
    set_path(root, "mall", "null");
    text = json_dumps(root, 0);
    assert_int_equal(pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "$.mall"));
    free(text);
    json_decref(root);
}

/* Up to four edits of MINIMAL and what loading it must say (NULL: it loads). */
typedef struct edited_case {
    const char *edits[4][2]; /* path, value (NULL deletes) */
    const char *fragment;
} edited_case;

static void check_edited(const edited_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_t *root = json_loads(MINIMAL, 0, NULL);
        assert_non_null(root);
        for (size_t k = 0; k < 4 && cases[i].edits[k][0] != NULL; k++)
            set_path(root, cases[i].edits[k][0], cases[i].edits[k][1]);
        char *text = json_dumps(root, 0);
        pgw_config *cfg = NULL;
        pgw_err err;
        pgw_err_clear(&err);
        int rc = pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err);
        if (cases[i].fragment == NULL && rc != PGW_OK)
            fail_msg("case %zu: refused: %s", i, err.msg);
        if (cases[i].fragment != NULL &&
            (rc != PGW_EINVAL || cfg != NULL || strstr(err.msg, cases[i].fragment) == NULL))
            fail_msg("case %zu: rc %d, \"%s\"", i, rc, err.msg);
        pgw_config_free(cfg);
        free(text);
        json_decref(root);
    }
}

/* The second format and shop the cases below use: S002, a restaurant. */
#define FNB_FORMAT                                                                                 \
    {                                                                                              \
        "formats.fnb", "{\"fen_per_point\": 200}"                                                  \
    }
#define FNB_SHOP                                                                                   \
    {                                                                                              \
        "shops.1", "{\"id\": \"S002\", \"name\": \"Two\", \"format\": \"fnb\"}"                    \
    }

/*
 * Regression: a campaign applies where both its shops and its formats
 * filters admit the shop, so a listed shop of another format was taken
 * and the campaign silently never paid there ("member day at S002, for
 * retail" gave S002's diners nothing). Such a shop is refused by name.
 */
static void test_campaign_shops_outside_its_formats(void **state)
{
    (void)state;
    static const edited_case cases[] = {
        {{FNB_FORMAT,
          FNB_SHOP,
          {"campaigns.0.shops", "[\"S002\"]"},
          {"campaigns.0.formats", "[\"retail\"]"}},
         "$.campaigns[0].shops[0]: shop \"S002\" is of format \"fnb\", not one of the "
         "campaign's formats: the campaign would never apply there"},
        {{FNB_FORMAT,
          FNB_SHOP,
          {"campaigns.0.shops", "[\"S001\", \"S002\"]"},
          {"campaigns.0.formats", "[\"retail\"]"}},
         "$.campaigns[0].shops[1]: shop \"S002\" is of format \"fnb\""},
        {{FNB_FORMAT,
          FNB_SHOP,
          {"campaigns.0.shops", "[\"S001\", \"S002\"]"},
          {"campaigns.0.formats", "[\"fnb\", \"retail\"]"}},
         NULL},
        {{FNB_FORMAT, FNB_SHOP, {"campaigns.0.shops", "[\"S002\"]"}}, NULL},
        {{FNB_FORMAT, FNB_SHOP, {"campaigns.0.formats", "[\"retail\"]"}}, NULL},
    };
    check_edited(cases, sizeof(cases) / sizeof(cases[0]));
}

/* A challenge as the cases below add it (campaigns[3]), with `more` keys. */
#define CHALLENGE_WITH(more)                                                                       \
    "{\"id\": \"five\", \"kind\": \"challenge\", \"min_purchases\": 5, \"bonus_points\": 800" more \
    "}"

/*
 * Regression: a fixed award larger than the daily cap that limits it was
 * taken, and no event could ever pay it: a review of 20 points with a
 * daily cap of 10 paid 10, a challenge's 800 with a cap of 500 paid 500
 * once and counted as paid for the month, a 10-point bracket under a cap
 * of 7 paid 7. Refused, naming both figures; a cap equal to the award,
 * or none, loads.
 */
static void test_fixed_awards_above_their_daily_cap(void **state)
{
    (void)state;
    static const edited_case cases[] = {
        {{{"behaviours.review", "{\"points\": 20, \"daily_cap\": 10}"}},
         "$.behaviours.review.daily_cap: 10 is below points 20: no event could pay its points"},
        {{{"behaviours.first_purchase", "{\"points\": 200, \"daily_cap\": 199}"}},
         "$.behaviours.first_purchase.daily_cap: 199 is below points 200"},
        {{{"behaviours.sign_in.daily_cap", "4"}},
         "$.behaviours.sign_in.daily_cap: 4 is below points 5"},
        {{{"behaviours.review", "{\"points\": 20, \"daily_cap\": 20}"}}, NULL},
        {{{"behaviours.review", "{\"points\": 20, \"daily_cap\": 0}"}}, NULL},
        {{{"campaigns.3", CHALLENGE_WITH(", \"daily_cap\": 500")}},
         "$.campaigns[3].daily_cap: 500 is below bonus_points 800: the bonus could never be "
         "paid whole"},
        {{{"campaigns.3", CHALLENGE_WITH(", \"daily_cap\": 800")}}, NULL},
        {{{"campaigns.1.daily_cap", "7"}},
         "$.campaigns[1].daily_cap: 7 is below brackets[1].bonus_points 10"},
        {{{"campaigns.1.daily_cap", "10"}}, NULL},
        {{{"campaigns.0.daily_cap", "1"}}, NULL}, /* a multiplier's extra: capped as meant */
        /* the cap holds the referrer's side too (command.c cap_referrer) */
        {{{"behaviours.referral",
           "{\"points\": 100, \"referrer_points\": 200, \"daily_cap\": 150}"}},
         "$.behaviours.referral.daily_cap: 150 is below referrer_points 200"},
        {{{"behaviours.referral",
           "{\"points\": 100, \"referrer_points\": 200, \"daily_cap\": 200}"}},
         NULL},
    };
    check_edited(cases, sizeof(cases) / sizeof(cases[0]));
}

/*
 * Regression: fixed points above a risk limit were taken, and every event
 * paying them was refused (risk_rejected), over and over: a first-purchase
 * bonus of 200 under max_behaviour_points_per_day 150 refused each of a new
 * member's purchases, none ever being the first to succeed; a challenge's
 * 500 under max_points_per_event 400 refused the fifth purchase of the
 * month and, as the refused one counted nothing, every one after it (seen
 * on a server: 422 for each). A sign-in with its streak bonuses past
 * PGW_POINTS_MAX failed as an overflow. Refused at load, naming both
 * figures; equal to the limit loads.
 */
static void test_fixed_awards_above_a_risk_limit(void **state)
{
    (void)state;
    static const edited_case cases[] = {
        {{{"behaviours.first_purchase", "{\"points\": 200}"},
          {"risk", "{\"max_behaviour_points_per_day\": 150}"}},
         "$.behaviours.first_purchase.points: 200 is above risk.max_behaviour_points_per_day 150: "
         "every event paying it would be refused (risk_rejected)"},
        {{{"behaviours.first_purchase", "{\"points\": 150}"},
          {"risk", "{\"max_behaviour_points_per_day\": 150}"}},
         NULL},
        {{{"behaviours.review", "{\"points\": 101}"}, {"risk", "{\"max_points_per_event\": 100}"}},
         "$.behaviours.review.points: 101 is above risk.max_points_per_event 100"},
        {{{"behaviours.sign_in.streaks.1", "{\"days\": 30, \"bonus_points\": 300}"},
          {"risk", "{\"max_points_per_event\": 354}"}},
         "$.behaviours.sign_in: points 5 and every streak's bonus_points (a day all streaks "
         "meet) come to 355, above risk.max_points_per_event 354"},
        {{{"behaviours.sign_in.streaks.1", "{\"days\": 30, \"bonus_points\": 300}"},
          {"risk", "{\"max_points_per_event\": 355}"}},
         NULL},
        /* the day's behaviour points too: a sign-in paying 355 on its 30th
         * day under 354 was 422 that day, and its streak began again */
        {{{"behaviours.sign_in.streaks.1", "{\"days\": 30, \"bonus_points\": 300}"},
          {"risk", "{\"max_behaviour_points_per_day\": 354}"}},
         "$.behaviours.sign_in: points 5 and every streak's bonus_points (a day all streaks "
         "meet) come to 355, above risk.max_behaviour_points_per_day 354"},
        {{{"behaviours.sign_in.streaks.1", "{\"days\": 30, \"bonus_points\": 300}"},
          {"risk", "{\"max_behaviour_points_per_day\": 355}"}},
         NULL},
        {{{"behaviours.sign_in",
           "{\"points\": 1000000000000, \"streaks\": [{\"days\": 7, \"bonus_points\": "
           "1000000000000}]}"},
          {"risk", "{\"max_points_per_event\": 1000000000000, "
                   "\"max_behaviour_points_per_day\": 1000000000000}"}},
         "come to 2000000000000, above risk.max_points_per_event 1000000000000"},
        {{{"campaigns.3", CHALLENGE_WITH("")}, {"risk", "{\"max_points_per_event\": 799}"}},
         "$.campaigns[3].bonus_points: 800 is above risk.max_points_per_event 799"},
        {{{"campaigns.1.brackets.1.bonus_points", "10"},
          {"behaviours.sign_in.streaks", NULL},
          {"risk", "{\"max_points_per_event\": 9}"}},
         "$.campaigns[1].brackets[1].bonus_points: 10 is above risk.max_points_per_event 9"},
        {{{"behaviours.sign_in.streaks", NULL}, {"risk", "{\"max_points_per_event\": 10}"}}, NULL},
    };
    check_edited(cases, sizeof(cases) / sizeof(cases[0]));
}

/* http.trusted_proxies: each entry kept as a prefix, mapped IPv4 as IPv4. */
static void test_trusted_proxies(void **state)
{
    (void)state;
    json_t *root = json_loads(MINIMAL, 0, NULL);
    assert_non_null(root);
    json_object_set_new(root, "http",
                        json_pack("{s:[s,s,s]}", "trusted_proxies", "127.0.0.1", "10.0.0.0/8",
                                  "::ffff:192.168.0.0/112"));
    char *text = json_dumps(root, 0);
    pgw_config *cfg = NULL;
    pgw_err err;
    if (pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(cfg->http.n_trusted_proxies, 3);
    const pgw_prefix *p = cfg->http.trusted_proxies;
    assert_true(p[0].len == 4 && p[0].bits == 32 && p[0].bytes[0] == 127 && p[0].bytes[3] == 1);
    assert_true(p[1].len == 4 && p[1].bits == 8 && p[1].bytes[0] == 10);
    assert_true(p[2].len == 4 && p[2].bits == 16 && p[2].bytes[0] == 192 && p[2].bytes[1] == 168);
    pgw_config_free(cfg);
    free(text);
    json_decref(root);
}

/* The members' streams: 256 at most, each session checked every minute,
 * unless said otherwise; 0 streams turns them off. Connections per
 * address: 4096 unless said, 0 for no limit. */
static void test_stream_sessions(void **state)
{
    (void)state;
    json_t *root = json_loads(MINIMAL, 0, NULL);
    assert_non_null(root);
    char *text = json_dumps(root, 0);
    pgw_config *cfg = NULL;
    pgw_err err;
    if (pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(cfg->http.stream_sessions_max, 256);
    assert_int_equal(cfg->http.stream_session_check_s, 60);
    assert_int_equal(cfg->http.max_connections_per_address, 4096);
    pgw_config_free(cfg);
    free(text);
    json_object_set_new(root, "http",
                        json_pack("{s:i,s:i,s:i}", "stream_sessions_max", 0,
                                  "stream_session_check_s", 1, "max_connections_per_address", 0));
    text = json_dumps(root, 0);
    if (pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(cfg->http.stream_sessions_max, 0);
    assert_int_equal(cfg->http.stream_session_check_s, 1);
    assert_int_equal(cfg->http.max_connections_per_address, 0); /* none */
    pgw_config_free(cfg);
    free(text);
    json_decref(root);
}

/* http.body_total_max_bytes: 64 MiB unless said; its bounds taken, and one
 * equal to body_max_bytes (a single body of the largest at a time). */
static void test_body_total(void **state)
{
    (void)state;
    static const struct {
        json_int_t body_max, total; /* 0: not given */
        int64_t want;
    } CASES[] = {
        {0, 0, INT64_C(64) << 20},
        {0, INT64_C(4) << 20, INT64_C(4) << 20},
        {INT64_C(64) << 20, INT64_C(64) << 20, INT64_C(64) << 20},
        {0, INT64_C(64) << 30, INT64_C(64) << 30},
    };
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        json_t *root = json_loads(MINIMAL, 0, NULL);
        assert_non_null(root);
        json_t *http = json_object();
        if (CASES[i].body_max)
            json_object_set_new(http, "body_max_bytes", json_integer(CASES[i].body_max));
        if (CASES[i].total)
            json_object_set_new(http, "body_total_max_bytes", json_integer(CASES[i].total));
        json_object_set_new(root, "http", http);
        char *text = json_dumps(root, 0);
        pgw_config *cfg = NULL;
        pgw_err err;
        if (pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err) != PGW_OK)
            fail_msg("case %zu: %s", i, err.msg);
        assert_int_equal(cfg->http.body_total_max_bytes, CASES[i].want);
        pgw_config_free(cfg);
        free(text);
        json_decref(root);
    }
}

/* notify.routes: a default for every kind, a kind's own over it. A channel
 * configured but switched off ("enabled": false) may stay in a route. */
static void test_notice_routes(void **state)
{
    (void)state;
    json_t *root = json_loads(MINIMAL, 0, NULL);
    assert_non_null(root);
    json_object_set_new(root, "notify",
                        json_pack("{s:{s:[s,s],s:[s]}}", "routes", "default", "wechat_oa",
                                  "wechat_mp", "points_expiring", "sms"));
    json_t *channels = json_pack(
        "{s:{s:s,s:s},s:{s:s,s:s,s:s},s:{s:b,s:s,s:s,s:s,s:s}}", "wechat_mp", "appid",
        "wx1234567890abcdef", "secret_env", "MP_SECRET", "wechat_oa", "appid", "wxfedcba0987654321",
        "secret_env", "OA_SECRET", "token_env", "OA_TOKEN", "sms", "enabled", 0, "provider",
        "aliyun", "sign_name", "Mall", "key_id_env", "SMS_ID", "key_secret_env", "SMS_KEY");
    assert_non_null(channels);
    json_object_set_new(root, "channels", channels);
    char *text = json_dumps(root, 0);
    pgw_config *cfg = NULL;
    pgw_err err;
    if (pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    const pgw_notice_order *arrived = &cfg->notify.routes[PGW_NOTICE_POINTS_ARRIVED];
    assert_int_equal(arrived->n, 2);
    assert_int_equal(arrived->channel[0], PGW_CHANNEL_OA);
    assert_int_equal(arrived->channel[1], PGW_CHANNEL_MP);
    const pgw_notice_order *expiring = &cfg->notify.routes[PGW_NOTICE_POINTS_EXPIRING];
    assert_int_equal(expiring->n, 1);
    assert_int_equal(expiring->channel[0], PGW_CHANNEL_SMS);
    pgw_config_free(cfg);
    free(text);
    json_decref(root);
}

/* Parses MINIMAL with `channels` (JSON; NULL: none). */
static pgw_config *with_channels(const char *channels)
{
    json_t *root = json_loads(MINIMAL, 0, NULL);
    assert_non_null(root);
    if (channels != NULL)
        set_path(root, "channels", channels);
    char *text = json_dumps(root, 0);
    pgw_config *cfg = NULL;
    pgw_err err;
    if (pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    free(text);
    json_decref(root);
    return cfg;
}

/* The page a notice opens and the version it opens in: today's
 * "pages/points/index" of the released version unless configured; the
 * official account's jump follows the mini program's page unless it
 * names its own. A query and the longest page (256) are taken. */
static void test_notice_pages(void **state)
{
    (void)state;
    pgw_config *cfg = with_channels(NULL);
    assert_string_equal(cfg->wechat_mp.page, "pages/points/index");
    assert_string_equal(cfg->wechat_mp.mp_state, "formal");
    assert_string_equal(cfg->wechat_oa.page, "pages/points/index");
    pgw_config_free(cfg);
    static const char OA[] = "\"wechat_oa\": {\"appid\": \"wxfedcba0987654321\", "
                             "\"secret_env\": \"S\", \"token_env\": \"T\"";
    char channels[1024];
    snprintf(channels, sizeof(channels), "{%s}}", OA);
    cfg = with_channels(channels);
    assert_string_equal(cfg->wechat_oa.page, "pages/points/index");
    /* WeChat's 5 s, less the way to us, unless configured */
    assert_int_equal(cfg->wechat_oa.reply_within_ms, 4500);
    pgw_config_free(cfg);
    snprintf(channels, sizeof(channels), "{%s, \"reply_within_ms\": 3000}}", OA);
    cfg = with_channels(channels);
    assert_int_equal(cfg->wechat_oa.reply_within_ms, 3000);
    pgw_config_free(cfg);
    /* a null page is none, as every key's null: the default, no jump to refuse */
    snprintf(channels, sizeof(channels), "{%s, \"mp_jump_page\": null}}", OA);
    cfg = with_channels(channels);
    assert_string_equal(cfg->wechat_oa.page, "pages/points/index");
    pgw_config_free(cfg);
    /* every URL character, a query's text percent-encoded ("积分"), and
     * letters other than ASCII's, which a mini program's folders may have,
     * past U+FFFF too ("𠮷", U+20BB7: refused as a lookalike, regression) */
    static const char URLISH[] = "pkg/积分/Points-2/home_v.1?from=notice&q=%E7%A7%AF%e5%88%86"
                                 "&x=~!$'()*+,;:@/?&t=会员&s=𠮷野家";
    snprintf(channels, sizeof(channels),
             MP_WITH("\"notice_page\": \"%s\", \"miniprogram_state\": \"trial\""), URLISH);
    cfg = with_channels(channels);
    assert_string_equal(cfg->wechat_mp.page, URLISH);
    assert_string_equal(cfg->wechat_mp.mp_state, "trial");
    pgw_config_free(cfg);
    char page[PGW_MP_PAGE_MAX + 1];
    memset(page, 'p', PGW_MP_PAGE_MAX);
    page[PGW_MP_PAGE_MAX] = '\0';
    snprintf(channels, sizeof(channels),
             "{\"wechat_mp\": {\"appid\": \"wx1234567890abcdef\", \"secret_env\": \"X\", "
             "\"notice_page\": \"%s\", \"miniprogram_state\": \"developer\"}, %s}}",
             page, OA);
    cfg = with_channels(channels);
    assert_string_equal(cfg->wechat_mp.page, page);
    assert_string_equal(cfg->wechat_oa.page, page); /* the mini program's, by default */
    assert_string_equal(cfg->wechat_mp.mp_state, "developer");
    pgw_config_free(cfg);
    snprintf(channels, sizeof(channels),
             "{\"wechat_mp\": {\"appid\": \"wx1234567890abcdef\", \"secret_env\": \"X\", "
             "\"notice_page\": \"pages/a\"}, %s, \"mp_jump_appid\": \"wx1234567890abcdef\", "
             "\"mp_jump_page\": \"pages/b?x=1\"}}",
             OA);
    cfg = with_channels(channels);
    assert_string_equal(cfg->wechat_mp.page, "pages/a");
    assert_string_equal(cfg->wechat_oa.page, "pages/b?x=1");
    pgw_config_free(cfg);
    /* the mini program's page when mp_jump_appid is ours; another's, as told */
    snprintf(channels, sizeof(channels),
             "{\"wechat_mp\": {\"appid\": \"wx1234567890abcdef\", \"secret_env\": \"X\", "
             "\"notice_page\": \"pages/a\"}, %s, \"mp_jump_appid\": \"wx1234567890abcdef\"}}",
             OA);
    cfg = with_channels(channels);
    assert_string_equal(cfg->wechat_oa.page, "pages/a");
    pgw_config_free(cfg);
    snprintf(channels, sizeof(channels),
             "{\"wechat_mp\": {\"appid\": \"wx1234567890abcdef\", \"secret_env\": \"X\"}, "
             "%s, \"mp_jump_appid\": \"wx0000000000000001\", \"mp_jump_page\": \"shop/home\"}}",
             OA);
    cfg = with_channels(channels);
    assert_string_equal(cfg->wechat_oa.mp_jump_appid, "wx0000000000000001");
    assert_string_equal(cfg->wechat_oa.page, "shop/home");
    pgw_config_free(cfg);
    /* one byte more is refused */
    snprintf(channels, sizeof(channels), MP_WITH("\"notice_page\": \"%sp\""), page);
    json_t *root = json_loads(MINIMAL, 0, NULL);
    set_path(root, "channels", channels);
    char *text = json_dumps(root, 0);
    pgw_err err;
    assert_int_equal(pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "$.channels.wechat_mp.notice_page: longer than 256 bytes"));
    free(text);
    json_decref(root);
}

/* Case `i`: MINIMAL with `value` (JSON; NULL: as it is) at `path` gives
 * a summary (check-config's) holding `line`. */
static void want_summary_line(size_t i, const char *path, const char *value, const char *line)
{
    json_t *root = json_loads(MINIMAL, 0, NULL);
    assert_non_null(root);
    if (value != NULL)
        set_path(root, path, value);
    char *text = json_dumps(root, 0);
    pgw_config *cfg = NULL;
    pgw_err err;
    if (pgw_config_parse(text, strlen(text), "mall.json", &cfg, &err) != PGW_OK)
        fail_msg("case %zu: %s", i, err.msg);
    char summary[2048];
    assert_int_equal(pgw_config_summary(cfg, summary, sizeof(summary)), PGW_OK);
    if (strstr(summary, line) == NULL)
        fail_msg("case %zu: no \"%s\" in:\n%s", i, line, summary);
    pgw_config_free(cfg);
    free(text);
    json_decref(root);
}

/* Regression (an operator's walkthrough): check-config's expiry line
 * said "year_end (months 0, years 1)": months mean nothing to year_end,
 * nor either to never. Each policy's line shows what it uses. */
static void test_summary_expiry_shows_what_its_policy_uses(void **state)
{
    (void)state;
    static const struct {
        const char *expiry, *line;
    } CASES[] = {
        {NULL, "expiry:     never\n"},
        {"{\"policy\": \"never\"}", "expiry:     never\n"},
        {"{\"policy\": \"rolling\", \"months\": 18}", "expiry:     rolling (months 18)\n"},
        {"{\"policy\": \"year_end\", \"years\": 1}", "expiry:     year_end (years 1)\n"},
        {"{\"policy\": \"year_end\", \"years\": 0}", "expiry:     year_end (years 0)\n"},
    };
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++)
        want_summary_line(i, "expiry", CASES[i].expiry, CASES[i].line);
}

/* Regression (a mini-program team's walkthrough): with no campaigns
 * check-config said "campaigns:  0:", a colon before a list of none. */
static void test_summary_no_campaigns_no_colon(void **state)
{
    (void)state;
    want_summary_line(0, "campaigns", "[]", "campaigns:  0\n");
    want_summary_line(1, "campaigns", NULL, "campaigns:  3: weekday=1 brackets=1 date_range=1\n");
}

/* Regression (review): the mall line wrote the offset's hours with their
 * sign, so a zone less than an hour west of UTC ("-00:30") was said
 * "UTC+0:30", east of it. The sign is the offset's, not its hours'. */
static void test_summary_says_the_offsets_sign(void **state)
{
    (void)state;
    static const struct {
        const char *zone, *line;
    } CASES[] = {
        {"\"Asia/Shanghai\"", "(Asia/Shanghai, UTC+8:00)\n"},
        {"\"-05:00\"", "(-05:00, UTC-5:00)\n"},
        {"\"-00:30\"", "(-00:30, UTC-0:30)\n"},
        {"\"+05:45\"", "(+05:45, UTC+5:45)\n"},
    };
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++)
        want_summary_line(i, "mall.time_zone", CASES[i].zone, CASES[i].line);
}

/* Regression (an operator's walkthrough): `keys add --scope shop:S999`
 * said `key.scope: unknown shop "S999"`, a configuration path for what
 * was a command-line flag. The check is the configuration's, the name
 * the flag's; a file's key still names its JSON path (BAD above). */
static void test_check_scope_names_the_flag(void **state)
{
    (void)state;
    pgw_config *cfg = NULL;
    pgw_err err;
    if (pgw_config_parse(MINIMAL, strlen(MINIMAL), "mall.json", &cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(pgw_config_check_scope(cfg, "shop:S001", &err), PGW_OK);
    assert_int_equal(pgw_config_check_scope(cfg, "channel:sms", &err), PGW_OK);
    assert_int_equal(pgw_config_check_scope(cfg, "shop:S999", &err), PGW_EINVAL);
    assert_string_equal(err.msg, "--scope: unknown shop \"S999\"");
    assert_int_equal(pgw_config_check_scope(cfg, "root", &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "--scope: \"root\" is not shop:<id>"));
    char longer[PGW_SCOPE_MAX + 2];
    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    assert_int_equal(pgw_config_check_scope(cfg, longer, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "--scope: longer than"));
    pgw_config_free(cfg);
}

static void test_syntax_and_duplicate_keys(void **state)
{
    (void)state;
    pgw_config *cfg = NULL;
    pgw_err err;
    const char *broken = "{\"mall\": {\"name\": \"x\",}\n";
    assert_int_equal(pgw_config_parse(broken, strlen(broken), "m.json", &cfg, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "m.json:1:"));
    assert_non_null(strstr(err.msg, "invalid JSON"));
    const char *dup = "{\"mall\": {\"name\": \"a\", \"name\": \"b\"}}";
    assert_int_equal(pgw_config_parse(dup, strlen(dup), "m.json", &cfg, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "duplicate"));
    assert_int_equal(pgw_config_parse("[]", 2, "m.json", &cfg, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "m.json: $: expected an object"));
}

static void test_files_missing_and_too_large(void **state)
{
    (void)state;
    pgw_config *cfg = NULL;
    pgw_err err;
    assert_int_equal(pgw_config_load("/nonexistent/pointsgw.json", &cfg, &err), PGW_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/pointsgw.json: cannot open"));
    char path[] = "/tmp/pgw-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    for (int i = 0; i <= PGW_CONFIG_FILE_MAX; i++)
        fputc(' ', f);
    fclose(f);
    assert_int_equal(pgw_config_load(path, &cfg, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "larger than"));
    assert_null(cfg);
    remove(path);
}

/* What a reload of the keys leaves for a restart: the top-level settings
 * but "keys" that differ as JSON, both ways, each once; spaces and the
 * order of members are no change. */
static void test_changed_settings(void **state)
{
    (void)state;
    static const char was[] = "{\"listen\": \"127.0.0.1:8080\", \"keys\": [], "
                              "\"risk\": {\"a\": 1, \"b\": 2}, \"db\": \"sqlite:x\"}";
    static const char same[] = "{ \"risk\": {\"b\": 2, \"a\": 1}, \"keys\": [{\"name\": \"k\"}],"
                               "\"db\": \"sqlite:x\", \"listen\": \"127.0.0.1:8080\" }";
    static const char other[] = "{\"listen\": \"127.0.0.1:9090\", \"keys\": [], "
                                "\"risk\": {\"a\": 1, \"b\": 2}, \"http\": {}}";
    char out[128];
    pgw_err err;
    assert_int_equal(
        pgw_config_changed(was, strlen(was), same, strlen(same), out, sizeof(out), &err), PGW_OK);
    assert_string_equal(out, "");
    assert_int_equal(
        pgw_config_changed(was, strlen(was), other, strlen(other), out, sizeof(out), &err), PGW_OK);
    assert_string_equal(out, "listen, http, db");
}

/* Regression (last session's review): a path over ~500 bytes filled the
 * 512-byte message, and the reason, what the operator needs, was cut off
 * (a reload's refusal said only the path). A long path is shown with its
 * middle elided, its start and its file's end kept; the reason whole. */
static void test_long_path_keeps_the_reason(void **state)
{
    (void)state;
    char path[700] = "/srv/";
    while (strlen(path) < 600)
        strcat(path, "deep-folder/");
    strcat(path, "pointsgw-long.json");
    pgw_config *cfg = NULL;
    pgw_err err;
    assert_int_equal(pgw_config_load(path, &cfg, &err), PGW_EIO);
    assert_non_null(strstr(err.msg, "/pointsgw-long.json: cannot open: No such file"));
    assert_non_null(strstr(err.msg, "/srv/deep-folder/"));
    assert_non_null(strstr(err.msg, "..."));
    assert_true(strlen(err.msg) < 300);
    const char *broken = "{\"mall\": ";
    assert_int_equal(pgw_config_parse(broken, strlen(broken), path, &cfg, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "pointsgw-long.json:1:"));
    assert_non_null(strstr(err.msg, "invalid JSON"));
    assert_int_equal(pgw_config_parse("[]", 2, path, &cfg, &err), PGW_EINVAL);
    assert_non_null(strstr(err.msg, "pointsgw-long.json: $: expected an object"));
    /* a path of at most PGW_CONFIG_NAME_MAX bytes is shown whole */
    char name[PGW_CONFIG_NAME_MAX + 1];
    path[PGW_CONFIG_NAME_MAX] = '\0';
    pgw_config_name(path, name);
    assert_string_equal(name, path);
    /* a cut in a character's bytes moves to its start: the name stays UTF-8 */
    char wide[400] = "/srv/";
    while (strlen(wide) < 390)
        strcat(wide, "\xe5\x95\x86");
    pgw_config_name(wide, name);
    assert_true(strlen(name) <= PGW_CONFIG_NAME_MAX);
    assert_non_null(strstr(name, "..."));
    assert_int_equal(strlen(strstr(name, "...") + 3) % 3, 0);
    assert_int_equal((strstr(name, "...") - name - 5) % 3, 0);
}

/*
 * Tiers are a ladder: a member who spends more to reach the next tier
 * must not earn less there. A higher tier with a lower multiplier_bp
 * (a typo: 1200 for 12000 cannot load, 11000 after 12000 can) would
 * quietly cut the points of the mall's best customers on upgrade, so it
 * is refused; an equal multiplier (a tier for its notice or its name
 * alone) loads.
 */
static void test_tier_multipliers_never_decrease(void **state)
{
    (void)state;
    static const edited_case cases[] = {
        {{{"tiers.1", "{\"name\": \"gold\", \"min_spend_fen_12m\": 500000, "
                      "\"multiplier_bp\": 12000}"},
          {"tiers.2", "{\"name\": \"platinum\", \"min_spend_fen_12m\": 2000000, "
                      "\"multiplier_bp\": 11000}"}},
         "$.tiers[2].multiplier_bp: 11000 is below the previous tier's 12000: a member would "
         "earn less after an upgrade"},
        {{{"tiers.1", "{\"name\": \"gold\", \"min_spend_fen_12m\": 500000, "
                      "\"multiplier_bp\": 10000}"}},
         NULL},
        {{{"tiers.0.multiplier_bp", "15000"},
          {"tiers.1", "{\"name\": \"gold\", \"min_spend_fen_12m\": 1, \"multiplier_bp\": 14999}"}},
         "$.tiers[1].multiplier_bp: 14999 is below the previous tier's 15000"},
    };
    check_edited(cases, sizeof(cases) / sizeof(cases[0]));
}

/*
 * A challenge's bonus is paid on the purchase that first reaches the
 * month's threshold, by that purchase's shop when funded_by is "shop".
 * Without filters (or with several shops, or whole formats) the threshold
 * counts purchases at other shops, and whichever shop happened to sell
 * the last one would pay the whole bonus for spend it never saw: refused.
 * A shop-funded challenge names its one shop; mall-funded ones may span
 * the mall.
 */
static void test_shop_funded_challenge_names_its_shop(void **state)
{
    (void)state;
    static const char *const refused =
        "$.campaigns[3].funded_by: a shop-funded challenge must list exactly one shop in "
        "\"shops\"";
    static const edited_case cases[] = {
        {{{"campaigns.3", CHALLENGE_WITH(", \"funded_by\": \"shop\"")}}, refused},
        {{{"campaigns.3", CHALLENGE_WITH(", \"funded_by\": \"shop\", \"formats\": [\"retail\"]")}},
         refused},
        {{FNB_FORMAT,
          FNB_SHOP,
          {"campaigns.3",
           CHALLENGE_WITH(", \"funded_by\": \"shop\", \"shops\": [\"S001\", \"S002\"]")}},
         refused},
        {{{"campaigns.3", CHALLENGE_WITH(", \"funded_by\": \"shop\", \"shops\": [\"S001\"]")}},
         NULL},
        {{{"campaigns.3", CHALLENGE_WITH(", \"funded_by\": \"mall\"")}}, NULL},
        {{{"campaigns.3", CHALLENGE_WITH("")}}, NULL},
        /* a multiplier's extra is on the purchase's own points: its shop may fund it */
        {{{"campaigns.0.funded_by", "\"shop\""}}, NULL},
    };
    check_edited(cases, sizeof(cases) / sizeof(cases[0]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_loads_with_its_figures),
        cmocka_unit_test(test_every_mistake_is_refused_with_its_path),
        cmocka_unit_test(test_minimal_is_valid_and_defaults_apply),
        cmocka_unit_test(test_a_byte_order_mark_is_skipped),
        cmocka_unit_test(test_null_is_absent),
        cmocka_unit_test(test_campaign_shops_outside_its_formats),
        cmocka_unit_test(test_fixed_awards_above_their_daily_cap),
        cmocka_unit_test(test_fixed_awards_above_a_risk_limit),
        cmocka_unit_test(test_trusted_proxies),
        cmocka_unit_test(test_stream_sessions),
        cmocka_unit_test(test_body_total),
        cmocka_unit_test(test_notice_routes),
        cmocka_unit_test(test_notice_pages),
        cmocka_unit_test(test_summary_expiry_shows_what_its_policy_uses),
        cmocka_unit_test(test_check_scope_names_the_flag),
        cmocka_unit_test(test_summary_says_the_offsets_sign),
        cmocka_unit_test(test_summary_no_campaigns_no_colon),
        cmocka_unit_test(test_syntax_and_duplicate_keys),
        cmocka_unit_test(test_files_missing_and_too_large),
        cmocka_unit_test(test_changed_settings),
        cmocka_unit_test(test_long_path_keeps_the_reason),
        cmocka_unit_test(test_tier_multipliers_never_decrease),
        cmocka_unit_test(test_shop_funded_challenge_names_its_shop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
