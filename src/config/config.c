/*
 * config.c - see config.h.
 *
 * One static function per section. Each reads its JSON with the bounded
 * readers of util/json_read.h, which put the JSON path in every message;
 * pgw_config_parse() adds the file name in front at the end.
 */
#include "config.h"

#include "core/arith.h"
#include "core/assertions.h"
#include "core/identity.h"
#include "core/otp.h"
#include "core/utf8.h"
#include "util/json_read.h"
#include "util/redact.h"

#include <ctype.h>
#include <errno.h>
#include <arpa/inet.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const NOTICE_NAMES[PGW_NOTICE_KINDS] = {
    "points_arrived", "points_reversed", "redemption", "points_expiring", "tier_changed",
};

static const char *const CAMPAIGN_KINDS[] = {
    [PGW_CAMPAIGN_WEEKDAY] = "weekday",       [PGW_CAMPAIGN_MONTHDAY] = "monthday",
    [PGW_CAMPAIGN_BIRTHDAY] = "birthday",     [PGW_CAMPAIGN_SKU] = "sku",
    [PGW_CAMPAIGN_CATEGORY] = "category",     [PGW_CAMPAIGN_BRACKETS] = "brackets",
    [PGW_CAMPAIGN_DATE_RANGE] = "date_range", [PGW_CAMPAIGN_CHALLENGE] = "challenge",
};
#define N_CAMPAIGN_KINDS (sizeof(CAMPAIGN_KINDS) / sizeof(CAMPAIGN_KINDS[0]))

/* ---- small readers shared by the sections -------------------------------- */

/* Whether every character of `s` is a letter, digit, '_' or '-'. */
static bool id_chars(const char *s)
{
    for (const char *p = s; *p != '\0'; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* An identifier: 1..PGW_ID_MAX of letters, digits, '_' and '-'. */
static int get_id(const json_t *obj, const char *key, const char *path, bool required, char *out,
                  size_t cap, pgw_err *err)
{
    int rc = pgw_json_string(obj, key, path, required, PGW_ID_MAX, out, cap, err);
    if (rc == PGW_OK && !id_chars(out))
        rc = pgw_err_set(err, PGW_EINVAL,
                         "%s.%s: \"%s\" may only contain letters, digits, '_' and '-'", path, key,
                         out);
    return rc;
}

/* The name of an environment variable: [A-Z_][A-Z0-9_]*. */
static int get_env_name(const json_t *obj, const char *key, const char *path, bool required,
                        char *out, size_t cap, pgw_err *err)
{
    int rc = pgw_json_string(obj, key, path, required, PGW_ENV_NAME_MAX, out, cap, err);
    if (rc != PGW_OK)
        return rc;
    for (const char *p = out; *p != '\0'; p++) {
        bool ok = (*p >= 'A' && *p <= 'Z') || *p == '_' || (p != out && *p >= '0' && *p <= '9');
        if (!ok)
            return pgw_err_set(err, PGW_EINVAL,
                               "%s.%s: \"%s\" is not an environment variable name (A-Z, 0-9, _)",
                               path, key, out);
    }
    return PGW_OK;
}

/* An array of at most `max` entries; absent (or null) and optional: *out = NULL. */
static int get_array(const json_t *obj, const char *key, const char *path, bool required,
                     size_t max, json_t **out, pgw_err *err)
{
    *out = pgw_json_has(obj, key) ? json_object_get(obj, key) : NULL;
    if (*out == NULL)
        return required ? pgw_err_set(err, PGW_EINVAL, "%s.%s: required", path, key) : PGW_OK;
    if (!json_is_array(*out))
        return pgw_err_set(err, PGW_EINVAL, "%s.%s: expected an array", path, key);
    if (json_array_size(*out) > max)
        return pgw_err_set(err, PGW_EINVAL, "%s.%s: more than %zu entries", path, key, max);
    return PGW_OK;
}

/* An object member that must be an object with only `keys`; NULL when absent
 * (or null: as the readers of json_read.h take it). */
static int get_section(const json_t *obj, const char *key, const char *path, bool required,
                       const char *const *keys, json_t **out, char sub[PGW_JSON_PATH_MAX],
                       pgw_err *err)
{
    pgw_json_path_key(sub, path, key);
    *out = pgw_json_has(obj, key) ? json_object_get(obj, key) : NULL;
    if (*out == NULL)
        return required ? pgw_err_set(err, PGW_EINVAL, "%s: required", sub) : PGW_OK;
    int rc = pgw_json_expect_object(*out, sub, err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(*out, sub, keys, err);
    return rc;
}

/* One string out of a fixed set; its index in *out. */
static int get_choice(const json_t *obj, const char *key, const char *path, bool required,
                      const char *const *choices, size_t n, int *out, pgw_err *err)
{
    const char *s;
    int rc = pgw_json_string_ref(obj, key, path, required, PGW_ID_MAX, &s, err);
    if (rc != PGW_OK || s == NULL)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (choices[i] != NULL && strcmp(choices[i], s) == 0) {
            *out = (int)i;
            return PGW_OK;
        }
    }
    return pgw_err_set(err, PGW_EINVAL, "%s.%s: \"%s\" is not one of the allowed values", path, key,
                       s);
}

/* ---- mall, listen, db, expiry -------------------------------------------- */

static int parse_mall(const json_t *root, pgw_config *cfg, pgw_err *err)
{
    static const char *const keys[] = {"name",        "time_zone",      "point_value_fen",
                                       "auto_enroll", "allow_negative", NULL};
    char path[PGW_JSON_PATH_MAX];
    json_t *mall;
    const char *tz = "Asia/Shanghai";
    int rc = get_section(root, "mall", "$", true, keys, &mall, path, err);
    if (rc == PGW_OK)
        rc = pgw_json_string(mall, "name", path, true, PGW_NAME_MAX, cfg->mall_name,
                             sizeof(cfg->mall_name), err);
    if (rc == PGW_OK)
        rc = pgw_json_string_ref(mall, "time_zone", path, false, PGW_TZ_NAME_MAX - 1, &tz, err);
    if (rc == PGW_OK && tz == NULL)
        tz = "Asia/Shanghai";
    if (rc == PGW_OK && pgw_tz_lookup(tz, &cfg->rules.tz, err) != PGW_OK)
        rc = pgw_err_prefix(err, "%s.time_zone: ", path);
    cfg->point_value_fen = 1;
    cfg->auto_enroll = true;
    cfg->allow_negative = true;
    if (rc == PGW_OK)
        rc = pgw_json_int(mall, "point_value_fen", path, false, 1, 1000000, &cfg->point_value_fen,
                          err);
    if (rc == PGW_OK)
        rc = pgw_json_bool(mall, "auto_enroll", path, false, &cfg->auto_enroll, err);
    if (rc == PGW_OK)
        rc = pgw_json_bool(mall, "allow_negative", path, false, &cfg->allow_negative, err);
    return rc;
}

int pgw_listen_parse(const char *listen, int min_port, char *host, size_t cap, int *port,
                     bool *ipv6, pgw_err *err)
{
    const char *colon = strrchr(listen, ':');
    char *end = NULL;
    long p = colon ? strtol(colon + 1, &end, 10) : -1;
    size_t len = colon ? (size_t)(colon - listen) : 0;
    if (colon == NULL || len == 0 || end == colon + 1 || *end != '\0' || p < min_port || p > 65535)
        return pgw_err_set(err, PGW_EINVAL, "expected HOST:PORT with port %d..65535, got \"%.64s\"",
                           min_port, listen);
    *ipv6 = listen[0] == '[' && len >= 2 && listen[len - 1] == ']';
    const char *from = *ipv6 ? listen + 1 : listen;
    size_t n = *ipv6 ? len - 2 : len;
    unsigned char addr[16];
    if (n >= cap || n >= 64)
        return pgw_err_set(err, PGW_EINVAL, "the host of \"%.64s\" is too long", listen);
    memcpy(host, from, n);
    host[n] = '\0';
    /* An address, not a name: libwebsockets bound a name it could not
     * take to nothing, and said it listened. */
    if (inet_pton(*ipv6 ? AF_INET6 : AF_INET, host, addr) != 1)
        return pgw_err_set(err, PGW_EINVAL,
                           "the host of \"%.64s\" is not an IP address (127.0.0.1, 0.0.0.0, "
                           "[::1])",
                           listen);
    *port = (int)p;
    return PGW_OK;
}

static int parse_listen_db(const json_t *root, pgw_config *cfg, pgw_err *err)
{
    snprintf(cfg->listen, sizeof(cfg->listen), "127.0.0.1:8080");
    snprintf(cfg->db, sizeof(cfg->db), "sqlite:data/pointsgw.db");
    int rc = pgw_json_string(root, "listen", "$", false, PGW_LISTEN_MAX, cfg->listen,
                             sizeof(cfg->listen), err);
    if (rc != PGW_OK)
        return rc;
    char host[PGW_LISTEN_MAX + 1];
    int port = 0;
    bool ipv6 = false;
    if (pgw_listen_parse(cfg->listen, 1, host, sizeof(host), &port, &ipv6, err) != PGW_OK)
        return pgw_err_prefix(err, "$.listen: ");
    rc = pgw_json_string(root, "db", "$", false, PGW_DB_URL_MAX, cfg->db, sizeof(cfg->db), err);
    if (rc == PGW_OK && pgw_config_set_db(cfg, cfg->db, err) != PGW_OK)
        return pgw_err_prefix(err, "$.db: ");
    return rc;
}

int pgw_config_set_db(pgw_config *cfg, const char *url, pgw_err *err)
{
    bool sqlite = strncmp(url, "sqlite:", 7) == 0 && url[7] != '\0';
    bool postgres = strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0;
    char shown[PGW_DB_URL_MAX + 1];
    pgw_redact_db_url(url, shown, sizeof(shown));
    if (strlen(url) > PGW_DB_URL_MAX)
        return pgw_err_set(err, PGW_EINVAL, "a database URL of at most %d bytes, got \"%.64s...\"",
                           PGW_DB_URL_MAX, shown);
    if (!sqlite && !postgres)
        return pgw_err_set(err, PGW_EINVAL,
                           "expected \"sqlite:PATH\" or a "
                           "\"postgresql://\" URL, got \"%.64s\"",
                           shown);
    if (url != cfg->db)
        snprintf(cfg->db, sizeof(cfg->db), "%s", url);
    return PGW_OK;
}

static int parse_expiry(const json_t *root, pgw_config *cfg, pgw_err *err)
{
    static const char *const keys[] = {"policy", "months", "years", "sweep_every_s", NULL};
    static const char *const policies[] = {"never", "rolling", "year_end"};
    char path[PGW_JSON_PATH_MAX];
    json_t *expiry;
    pgw_expiry *e = &cfg->rules.expiry;
    int policy = PGW_EXPIRY_NEVER;
    int64_t months = 0, years = 0;
    cfg->expiry_sweep_s = 60;
    int rc = get_section(root, "expiry", "$", false, keys, &expiry, path, err);
    if (rc != PGW_OK || expiry == NULL)
        return rc;
    rc = pgw_json_int(expiry, "sweep_every_s", path, false, 1, 86400, &cfg->expiry_sweep_s, err);
    if (rc != PGW_OK)
        return rc;
    rc = get_choice(expiry, "policy", path, true, policies, 3, &policy, err);
    if (rc == PGW_OK && policy == PGW_EXPIRY_ROLLING)
        rc = pgw_json_int(expiry, "months", path, true, 1, 120, &months, err);
    if (rc == PGW_OK && policy == PGW_EXPIRY_YEAR_END)
        rc = pgw_json_int(expiry, "years", path, true, 0, 10, &years, err);
    if (rc == PGW_OK && policy != PGW_EXPIRY_ROLLING && pgw_json_has(expiry, "months"))
        rc = pgw_err_set(err, PGW_EINVAL, "%s.months: only for the rolling policy", path);
    if (rc == PGW_OK && policy != PGW_EXPIRY_YEAR_END && pgw_json_has(expiry, "years"))
        rc = pgw_err_set(err, PGW_EINVAL, "%s.years: only for the year_end policy", path);
    e->policy = (pgw_expiry_policy)policy;
    e->months = (int32_t)months;
    e->years = (int32_t)years;
    return rc;
}

/* ---- formats, shops, tiers ----------------------------------------------- */

static int32_t find_format(const pgw_rules *rules, const char *name)
{
    for (size_t i = 0; i < rules->n_formats; i++) {
        if (strcmp(rules->formats[i].name, name) == 0)
            return (int32_t)i;
    }
    return -1;
}

static int parse_formats(const json_t *root, pgw_rules *rules, pgw_err *err)
{
    static const char *const keys[] = {"fen_per_point", NULL};
    json_t *formats = json_object_get(root, "formats");
    int rc = pgw_json_expect_object(formats, "$.formats", err);
    if (rc != PGW_OK)
        return rc;
    if (json_object_size(formats) == 0 || json_object_size(formats) > PGW_FORMATS_MAX)
        return pgw_err_set(err, PGW_EINVAL, "$.formats: 1..%d formats expected", PGW_FORMATS_MAX);
    const char *name;
    json_t *format;
    json_object_foreach(formats, name, format)
    {
        char path[PGW_JSON_PATH_MAX];
        pgw_json_path_key(path, "$.formats", name);
        pgw_format *f = &rules->formats[rules->n_formats];
        json_t *wrap = json_pack("{s:s}", "name", name);
        rc = get_id(wrap, "name", path, true, f->name, sizeof(f->name), err);
        json_decref(wrap);
        if (rc == PGW_OK)
            rc = pgw_json_expect_object(format, path, err);
        if (rc == PGW_OK)
            rc = pgw_json_only_keys(format, path, keys, err);
        if (rc == PGW_OK)
            rc = pgw_json_int(format, "fen_per_point", path, true, 1, 100000000, &f->fen_per_point,
                              err);
        if (rc != PGW_OK)
            return rc;
        rules->n_formats++;
    }
    return PGW_OK;
}

static int parse_shop(const json_t *obj, const char *path, pgw_rules *rules, pgw_shop *shop,
                      pgw_err *err)
{
    static const char *const keys[] = {"id", "name", "format", "fen_per_point", "rate_bp", NULL};
    char format[PGW_ID_MAX + 1];
    int rc = pgw_json_expect_object(obj, path, err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, path, keys, err);
    if (rc == PGW_OK)
        rc = get_id(obj, "id", path, true, shop->id, sizeof(shop->id), err);
    /* Ids are matched as written (cards name their shop): two that differ
     * only in case would be two shops a till could confuse. */
    for (size_t i = 0; rc == PGW_OK && i < rules->n_shops; i++) {
        if (strcasecmp(rules->shops[i].id, shop->id) == 0)
            rc = pgw_err_set(err, PGW_EINVAL, "%s.id: duplicate shop id \"%s\" (as \"%s\")", path,
                             shop->id, rules->shops[i].id);
    }
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "name", path, true, PGW_NAME_MAX, shop->name, sizeof(shop->name),
                             err);
    if (rc == PGW_OK)
        rc = get_id(obj, "format", path, true, format, sizeof(format), err);
    if (rc == PGW_OK && (shop->format = find_format(rules, format)) < 0)
        rc = pgw_err_set(err, PGW_EINVAL, "%s.format: unknown format \"%s\"", path, format);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "fen_per_point", path, false, 1, 100000000, &shop->fen_per_point,
                          err);
    shop->rate_bp = 10000; /* legacy points import 1:1 unless the shop says otherwise */
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "rate_bp", path, false, 1, PGW_MULTIPLIER_BP_MAX, &shop->rate_bp,
                          err);
    return rc;
}

static int parse_shops(const json_t *root, pgw_rules *rules, pgw_err *err)
{
    json_t *shops;
    int rc = get_array(root, "shops", "$", true, PGW_SHOPS_MAX, &shops, err);
    if (rc == PGW_OK && json_array_size(shops) == 0)
        rc = pgw_err_set(err, PGW_EINVAL, "$.shops: at least one shop expected");
    for (size_t i = 0; rc == PGW_OK && i < json_array_size(shops); i++) {
        char path[PGW_JSON_PATH_MAX];
        pgw_json_path_index(path, "$.shops", i);
        rc = parse_shop(json_array_get(shops, i), path, rules, &rules->shops[i], err);
        if (rc == PGW_OK)
            rules->n_shops++;
    }
    return rc;
}

static int parse_tier(const json_t *obj, const char *path, const pgw_rules *rules, pgw_tier *tier,
                      pgw_err *err)
{
    static const char *const keys[] = {"name", "display_name", "min_spend_fen_12m", "multiplier_bp",
                                       NULL};
    size_t index = rules->n_tiers;
    tier->display_name[0] = '\0';
    int rc = pgw_json_expect_object(obj, path, err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, path, keys, err);
    if (rc == PGW_OK)
        rc = get_id(obj, "name", path, true, tier->name, sizeof(tier->name), err);
    for (size_t i = 0; rc == PGW_OK && i < index; i++) {
        if (strcmp(rules->tiers[i].name, tier->name) == 0)
            rc = pgw_err_set(err, PGW_EINVAL, "%s.name: duplicate tier \"%s\"", path, tier->name);
    }
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "display_name", path, false, PGW_NAME_MAX, tier->display_name,
                             sizeof(tier->display_name), err);
    if (rc == PGW_OK && tier->display_name[0] == '\0') /* the members' name: the id, unless */
        memcpy(tier->display_name, tier->name, sizeof(tier->name));
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "min_spend_fen_12m", path, true, 0, PGW_AMOUNT_FEN_MAX * 100,
                          &tier->min_spend_fen_12m, err);
    if (rc == PGW_OK && index == 0 && tier->min_spend_fen_12m != 0)
        rc = pgw_err_set(err, PGW_EINVAL, "%s.min_spend_fen_12m: the first tier must start at 0",
                         path);
    if (rc == PGW_OK && index > 0 &&
        tier->min_spend_fen_12m <= rules->tiers[index - 1].min_spend_fen_12m)
        rc = pgw_err_set(err, PGW_EINVAL,
                         "%s.min_spend_fen_12m: must be above the previous tier's %lld", path,
                         (long long)rules->tiers[index - 1].min_spend_fen_12m);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "multiplier_bp", path, true, PGW_BP_ONE, PGW_MULTIPLIER_BP_MAX,
                          &tier->multiplier_bp, err);
    /* A ladder: spending into a higher tier never earns less per yuan. */
    if (rc == PGW_OK && index > 0 && tier->multiplier_bp < rules->tiers[index - 1].multiplier_bp)
        rc = pgw_err_set(err, PGW_EINVAL,
                         "%s.multiplier_bp: %lld is below the previous tier's %lld: a member "
                         "would earn less after an upgrade",
                         path, (long long)tier->multiplier_bp,
                         (long long)rules->tiers[index - 1].multiplier_bp);
    return rc;
}

static int parse_tiers(const json_t *root, pgw_rules *rules, pgw_err *err)
{
    json_t *tiers;
    int rc = get_array(root, "tiers", "$", false, PGW_TIERS_MAX, &tiers, err);
    for (size_t i = 0; rc == PGW_OK && tiers != NULL && i < json_array_size(tiers); i++) {
        char path[PGW_JSON_PATH_MAX];
        pgw_json_path_index(path, "$.tiers", i);
        rc = parse_tier(json_array_get(tiers, i), path, rules, &rules->tiers[i], err);
        if (rc == PGW_OK)
            rules->n_tiers++;
    }
    return rc;
}

/* ---- campaigns ----------------------------------------------------------- */

/* Reads a non-empty array of ids into a fixed table. */
static int get_id_list(const json_t *obj, const char *key, const char *path, size_t max,
                       char (*out)[PGW_ID_MAX + 1], size_t *n, pgw_err *err)
{
    json_t *list;
    char item_path[PGW_JSON_PATH_MAX], list_path[PGW_JSON_PATH_MAX];
    int rc = get_array(obj, key, path, true, max, &list, err);
    if (rc == PGW_OK && json_array_size(list) == 0)
        rc = pgw_err_set(err, PGW_EINVAL, "%s.%s: must not be empty", path, key);
    pgw_json_path_key(list_path, path, key);
    for (size_t i = 0; rc == PGW_OK && i < json_array_size(list); i++) {
        pgw_json_path_index(item_path, list_path, i);
        json_t *wrap = json_pack("{s:O}", "v", json_array_get(list, i));
        rc = get_id(wrap, "v", item_path, true, out[i], sizeof(out[i]), err);
        json_decref(wrap);
        if (rc != PGW_OK)
            return pgw_err_set(err, rc, "%s: expected an id (letters, digits, _ -)", item_path);
    }
    if (rc == PGW_OK)
        *n = json_array_size(list);
    return rc;
}

/*
 * A campaign applies where both filters admit the shop (rules.c), so a
 * listed shop of a format the campaign does not list would never get it:
 * refused by name rather than taken and silently paying nothing there.
 */
static int check_shops_in_formats(const char *path, const pgw_rules *rules, const pgw_campaign *c,
                                  pgw_err *err)
{
    for (size_t i = 0; c->n_formats > 0 && i < c->n_shops; i++) {
        const pgw_shop *shop = &rules->shops[c->shops[i]];
        bool listed = false;
        for (size_t k = 0; k < c->n_formats && !listed; k++)
            listed = c->formats[k] == shop->format;
        if (!listed)
            return pgw_err_set(err, PGW_EINVAL,
                               "%s.shops[%zu]: shop \"%s\" is of format \"%s\", not one of the "
                               "campaign's formats: the campaign would never apply there",
                               path, i, shop->id, rules->formats[shop->format].name);
    }
    return PGW_OK;
}

/* The optional "shops" and "formats" filters, resolved to indexes. */
static int parse_campaign_filters(const json_t *obj, const char *path, const pgw_rules *rules,
                                  pgw_campaign *c, pgw_err *err)
{
    char ids[PGW_CAMPAIGN_SHOPS_MAX][PGW_ID_MAX + 1];
    size_t n = 0;
    int rc = PGW_OK;
    if (pgw_json_has(obj, "shops"))
        rc = get_id_list(obj, "shops", path, PGW_CAMPAIGN_SHOPS_MAX, ids, &n, err);
    for (size_t i = 0; rc == PGW_OK && i < n; i++) {
        c->shops[i] = pgw_rules_find_shop(rules, ids[i]);
        if (c->shops[i] < 0)
            rc =
                pgw_err_set(err, PGW_EINVAL, "%s.shops[%zu]: unknown shop \"%s\"", path, i, ids[i]);
    }
    c->n_shops = rc == PGW_OK ? n : 0;
    n = 0;
    if (rc == PGW_OK && pgw_json_has(obj, "formats"))
        rc = get_id_list(obj, "formats", path, PGW_FORMATS_MAX, ids, &n, err);
    for (size_t i = 0; rc == PGW_OK && i < n; i++) {
        c->formats[i] = find_format(rules, ids[i]);
        if (c->formats[i] < 0)
            rc = pgw_err_set(err, PGW_EINVAL, "%s.formats[%zu]: unknown format \"%s\"", path, i,
                             ids[i]);
    }
    c->n_formats = rc == PGW_OK ? n : 0;
    if (rc == PGW_OK)
        rc = check_shops_in_formats(path, rules, c, err);
    return rc;
}

static int parse_bracket(const json_t *obj, const char *path, pgw_bracket *b, pgw_err *err)
{
    static const char *const keys[] = {"min_fen", "max_fen", "bonus_points", "multiplier_bp", NULL};
    b->max_fen = PGW_AMOUNT_FEN_MAX;
    int rc = pgw_json_expect_object(obj, path, err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, path, keys, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "min_fen", path, true, 0, PGW_AMOUNT_FEN_MAX, &b->min_fen, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "max_fen", path, false, b->min_fen, PGW_AMOUNT_FEN_MAX, &b->max_fen,
                          err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "bonus_points", path, false, 1, PGW_POINTS_MAX, &b->bonus_points,
                          err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "multiplier_bp", path, false, PGW_BP_ONE + 1, PGW_MULTIPLIER_BP_MAX,
                          &b->multiplier_bp, err);
    if (rc == PGW_OK && (b->bonus_points > 0) == (b->multiplier_bp > 0))
        rc = pgw_err_set(err, PGW_EINVAL, "%s: give exactly one of bonus_points and multiplier_bp",
                         path);
    return rc;
}

/* Brackets must be sorted by min_fen and must not overlap. */
static int parse_brackets(const json_t *obj, const char *path, pgw_campaign *c, pgw_err *err)
{
    json_t *list;
    char list_path[PGW_JSON_PATH_MAX], item_path[PGW_JSON_PATH_MAX];
    int rc = get_array(obj, "brackets", path, true, PGW_BRACKETS_MAX, &list, err);
    if (rc == PGW_OK && json_array_size(list) == 0)
        rc = pgw_err_set(err, PGW_EINVAL, "%s.brackets: must not be empty", path);
    pgw_json_path_key(list_path, path, "brackets");
    for (size_t i = 0; rc == PGW_OK && i < json_array_size(list); i++) {
        pgw_json_path_index(item_path, list_path, i);
        pgw_bracket *b = &c->brackets[i];
        rc = parse_bracket(json_array_get(list, i), item_path, b, err);
        if (rc == PGW_OK && i > 0 && b->min_fen <= c->brackets[i - 1].max_fen)
            rc = pgw_err_set(err, PGW_EINVAL,
                             "%s: overlaps brackets[%zu] (%lld..%lld) or is not "
                             "sorted by min_fen",
                             item_path, i - 1, (long long)c->brackets[i - 1].min_fen,
                             (long long)c->brackets[i - 1].max_fen);
        if (rc == PGW_OK)
            c->n_brackets = i + 1;
    }
    return rc;
}

static int parse_date_range(const json_t *obj, const char *path, pgw_campaign *c, pgw_err *err)
{
    const char *from, *to;
    int rc = pgw_json_string_ref(obj, "from", path, true, 10, &from, err);
    if (rc == PGW_OK && pgw_parse_date(from, &c->from, err) != PGW_OK)
        rc = pgw_err_prefix(err, "%s.from: ", path);
    if (rc == PGW_OK)
        rc = pgw_json_string_ref(obj, "to", path, true, 10, &to, err);
    if (rc == PGW_OK && pgw_parse_date(to, &c->to, err) != PGW_OK)
        rc = pgw_err_prefix(err, "%s.to: ", path);
    if (rc == PGW_OK && pgw_date_cmp(c->from, c->to) > 0)
        rc = pgw_err_set(err, PGW_EINVAL, "%s: from %s is after to %s", path, from, to);
    return rc;
}

static int parse_challenge(const json_t *obj, const char *path, pgw_campaign *c, pgw_err *err)
{
    int rc = pgw_json_int(obj, "min_purchases", path, false, 1, 10000, &c->min_purchases, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "min_spend_fen", path, false, 1, PGW_AMOUNT_FEN_MAX,
                          &c->min_spend_fen, err);
    if (rc == PGW_OK && (c->min_purchases > 0) == (c->min_spend_fen > 0))
        rc = pgw_err_set(err, PGW_EINVAL,
                         "%s: give exactly one of min_purchases and "
                         "min_spend_fen",
                         path);
    if (rc == PGW_OK)
        rc =
            pgw_json_int(obj, "bonus_points", path, true, 1, PGW_POINTS_MAX, &c->bonus_points, err);
    return rc;
}

/* The keys each kind takes besides the common ones. */
static const char *const *kind_keys(pgw_campaign_kind kind)
{
    static const char *const weekday[] = {"weekday", "multiplier_bp", NULL};
    static const char *const monthday[] = {"monthday", "multiplier_bp", NULL};
    static const char *const birthday[] = {"birthday", "multiplier_bp", NULL};
    static const char *const sku[] = {"skus", "multiplier_bp", NULL};
    static const char *const category[] = {"categories", "multiplier_bp", NULL};
    static const char *const brackets[] = {"brackets", NULL};
    static const char *const range[] = {"from", "to", "multiplier_bp", NULL};
    static const char *const challenge[] = {"min_purchases", "min_spend_fen", "bonus_points", NULL};
    static const char *const *const table[] = {weekday,  monthday, birthday, sku,
                                               category, brackets, range,    challenge};
    PGW_ASSERT((size_t)kind < sizeof(table) / sizeof(table[0]));
    return table[kind];
}

/* Refuses any key that is neither common nor the kind's own. */
static int check_campaign_keys(const json_t *obj, const char *path, pgw_campaign_kind kind,
                               pgw_err *err)
{
    static const char *const common[] = {"id",       "name",      "kind",  "funded_by",
                                         "stacking", "daily_cap", "shops", "formats"};
    const char *const *own = kind_keys(kind);
    const char *allowed[24];
    size_t n = 0;
    for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
        allowed[n++] = common[i];
    for (size_t i = 0; own[i] != NULL; i++)
        allowed[n++] = own[i];
    PGW_ASSERT(n < sizeof(allowed) / sizeof(allowed[0]));
    allowed[n] = NULL;
    int rc = pgw_json_only_keys(obj, path, allowed, err);
    if (rc != PGW_OK)
        return pgw_err_prefix(err, "(not taken by a %s campaign) ", CAMPAIGN_KINDS[kind]);
    return PGW_OK;
}

static int parse_campaign_kind(const json_t *obj, const char *path, pgw_campaign *c, pgw_err *err)
{
    static const char *const birthday_modes[] = {"day", "month"};
    int64_t n = 0;
    int mode = 0;
    int rc = PGW_OK;
    switch (c->kind) {
    case PGW_CAMPAIGN_WEEKDAY:
        rc = pgw_json_int(obj, "weekday", path, true, 1, 7, &n, err);
        c->weekday = (int32_t)n;
        return rc;
    case PGW_CAMPAIGN_MONTHDAY:
        rc = pgw_json_int(obj, "monthday", path, true, 1, 31, &n, err);
        c->monthday = (int32_t)n;
        return rc;
    case PGW_CAMPAIGN_BIRTHDAY:
        rc = get_choice(obj, "birthday", path, false, birthday_modes, 2, &mode, err);
        c->birthday_whole_month = mode == 1;
        return rc;
    case PGW_CAMPAIGN_SKU:
        return get_id_list(obj, "skus", path, PGW_CAMPAIGN_SKUS_MAX, c->skus, &c->n_skus, err);
    case PGW_CAMPAIGN_CATEGORY:
        return get_id_list(obj, "categories", path, PGW_CAMPAIGN_CATEGORIES_MAX, c->categories,
                           &c->n_categories, err);
    case PGW_CAMPAIGN_BRACKETS:
        return parse_brackets(obj, path, c, err);
    case PGW_CAMPAIGN_DATE_RANGE:
        return parse_date_range(obj, path, c, err);
    case PGW_CAMPAIGN_CHALLENGE:
        return parse_challenge(obj, path, c, err);
    }
    return pgw_err_set(err, PGW_EINVAL, "%s.kind: unknown", path);
}

/*
 * A daily cap below a fixed bonus (a challenge's, a bracket's) cuts it
 * every time: the challenge then counts as paid for the month with part
 * of its bonus. Multipliers' extras vary with the purchase: any cap is
 * theirs to limit.
 */
static int check_bonus_within_cap(const char *path, const pgw_campaign *c, pgw_err *err)
{
    if (c->daily_cap == 0)
        return PGW_OK;
    if (c->kind == PGW_CAMPAIGN_CHALLENGE && c->bonus_points > c->daily_cap)
        return pgw_err_set(err, PGW_EINVAL,
                           "%s.daily_cap: %lld is below bonus_points %lld: the bonus could never "
                           "be paid whole",
                           path, (long long)c->daily_cap, (long long)c->bonus_points);
    for (size_t i = 0; c->kind == PGW_CAMPAIGN_BRACKETS && i < c->n_brackets; i++) {
        if (c->brackets[i].bonus_points > c->daily_cap)
            return pgw_err_set(err, PGW_EINVAL,
                               "%s.daily_cap: %lld is below brackets[%zu].bonus_points %lld: the "
                               "bonus could never be paid whole",
                               path, (long long)c->daily_cap, i,
                               (long long)c->brackets[i].bonus_points);
    }
    return PGW_OK;
}

/*
 * A challenge's bonus is paid by the shop of the purchase that first
 * reaches the month's threshold. Counting purchases at other shops too
 * (no filters, whole formats, several shops), that shop would pay for
 * spend it never saw: a shop funds only a challenge of its own purchases.
 */
static int check_challenge_funder(const char *path, const pgw_campaign *c, pgw_err *err)
{
    if (c->kind != PGW_CAMPAIGN_CHALLENGE || c->funded_by != PGW_FUND_SHOP || c->n_shops == 1)
        return PGW_OK;
    return pgw_err_set(err, PGW_EINVAL,
                       "%s.funded_by: a shop-funded challenge must list exactly one shop in "
                       "\"shops\": the shop selling the purchase that "
                       "reaches the threshold would pay for purchases at others; use "
                       "\"funded_by\": \"mall\"",
                       path);
}

static int parse_campaign(const json_t *obj, const char *path, const pgw_rules *rules,
                          pgw_campaign *c, pgw_err *err)
{
    static const char *const funders[] = {"shop", "mall"};
    static const char *const stackings[] = {"max", "add"};
    int kind = 0, funder = 1, stacking = 0;
    char name[PGW_NAME_MAX + 1];
    int rc = pgw_json_expect_object(obj, path, err);
    if (rc == PGW_OK)
        rc = get_id(obj, "id", path, true, c->id, sizeof(c->id), err);
    for (size_t i = 0; rc == PGW_OK && i < rules->n_campaigns; i++) {
        if (strcmp(rules->campaigns[i].id, c->id) == 0)
            rc = pgw_err_set(err, PGW_EINVAL, "%s.id: duplicate campaign id \"%s\"", path, c->id);
    }
    if (rc == PGW_OK)
        rc = get_choice(obj, "kind", path, true, CAMPAIGN_KINDS, N_CAMPAIGN_KINDS, &kind, err);
    c->kind = (pgw_campaign_kind)kind;
    if (rc == PGW_OK)
        rc = check_campaign_keys(obj, path, c->kind, err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "name", path, false, PGW_NAME_MAX, name, sizeof(name), err);
    if (rc == PGW_OK)
        rc = get_choice(obj, "funded_by", path, false, funders, 2, &funder, err);
    c->funded_by = funder == 0 ? PGW_FUND_SHOP : PGW_FUND_MALL_CAMPAIGN;
    if (rc == PGW_OK)
        rc = get_choice(obj, "stacking", path, false, stackings, 2, &stacking, err);
    c->stacking = stacking == 0 ? PGW_STACK_MAX : PGW_STACK_ADD;
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "daily_cap", path, false, 0, PGW_POINTS_MAX, &c->daily_cap, err);
    bool has_multiplier = c->kind != PGW_CAMPAIGN_BRACKETS && c->kind != PGW_CAMPAIGN_CHALLENGE;
    if (rc == PGW_OK && has_multiplier)
        rc = pgw_json_int(obj, "multiplier_bp", path, true, PGW_BP_ONE + 1, PGW_MULTIPLIER_BP_MAX,
                          &c->multiplier_bp, err);
    if (rc == PGW_OK)
        rc = parse_campaign_filters(obj, path, rules, c, err);
    if (rc == PGW_OK)
        rc = parse_campaign_kind(obj, path, c, err);
    if (rc == PGW_OK)
        rc = check_bonus_within_cap(path, c, err);
    if (rc == PGW_OK)
        rc = check_challenge_funder(path, c, err);
    return rc;
}

static int parse_campaigns(const json_t *root, pgw_rules *rules, pgw_err *err)
{
    json_t *list;
    int rc = get_array(root, "campaigns", "$", false, PGW_CAMPAIGNS_MAX, &list, err);
    for (size_t i = 0; rc == PGW_OK && list != NULL && i < json_array_size(list); i++) {
        char path[PGW_JSON_PATH_MAX];
        pgw_json_path_index(path, "$.campaigns", i);
        rc = parse_campaign(json_array_get(list, i), path, rules, &rules->campaigns[i], err);
        if (rc == PGW_OK)
            rules->n_campaigns++;
    }
    return rc;
}

/* ---- behaviours ---------------------------------------------------------- */

static int parse_streaks(const json_t *obj, const char *path, pgw_behaviours *b, pgw_err *err)
{
    static const char *const keys[] = {"days", "bonus_points", NULL};
    json_t *list;
    char list_path[PGW_JSON_PATH_MAX], item_path[PGW_JSON_PATH_MAX];
    int rc = get_array(obj, "streaks", path, false, PGW_STREAKS_MAX, &list, err);
    pgw_json_path_key(list_path, path, "streaks");
    for (size_t i = 0; rc == PGW_OK && list != NULL && i < json_array_size(list); i++) {
        json_t *s = json_array_get(list, i);
        int64_t days = 0;
        pgw_json_path_index(item_path, list_path, i);
        rc = pgw_json_expect_object(s, item_path, err);
        if (rc == PGW_OK)
            rc = pgw_json_only_keys(s, item_path, keys, err);
        if (rc == PGW_OK)
            rc = pgw_json_int(s, "days", item_path, true, 2, 366, &days, err);
        if (rc == PGW_OK && i > 0 && days <= b->streaks[i - 1].days)
            rc = pgw_err_set(err, PGW_EINVAL, "%s.days: streaks must be in ascending days",
                             item_path);
        b->streaks[i].days = (int32_t)days;
        if (rc == PGW_OK)
            rc = pgw_json_int(s, "bonus_points", item_path, true, 1, PGW_POINTS_MAX,
                              &b->streaks[i].bonus_points, err);
        if (rc == PGW_OK)
            b->n_streaks = i + 1;
    }
    return rc;
}

/* One behaviour: {"points", "daily_cap"} plus the extras `keys` allows. */
static int parse_behaviour(const json_t *obj, const char *name, const char *const *keys,
                           pgw_behaviour *b, json_t **section, pgw_err *err)
{
    char path[PGW_JSON_PATH_MAX];
    int rc = get_section(obj, name, "$.behaviours", false, keys, section, path, err);
    if (rc != PGW_OK || *section == NULL)
        return rc;
    b->enabled = true;
    rc = pgw_json_int(*section, "points", path, true, 0, PGW_POINTS_MAX, &b->points, err);
    if (rc == PGW_OK)
        rc =
            pgw_json_int(*section, "daily_cap", path, false, 0, PGW_POINTS_MAX, &b->daily_cap, err);
    /* The cap would cut every event to it: the points could never be paid. */
    if (rc == PGW_OK && b->daily_cap > 0 && b->daily_cap < b->points)
        rc = pgw_err_set(err, PGW_EINVAL,
                         "%s.daily_cap: %lld is below points %lld: no event could pay its points",
                         path, (long long)b->daily_cap, (long long)b->points);
    return rc;
}

static int parse_behaviours(const json_t *root, pgw_rules *rules, pgw_err *err)
{
    static const char *const keys[] = {"register", "first_purchase", "sign_in", "review", "share",
                                       "referral", "follow_oa",      "survey",  NULL};
    static const char *const plain[] = {"points", "daily_cap", NULL};
    static const char *const sign_in[] = {"points", "daily_cap", "streaks", NULL};
    static const char *const referral[] = {"points", "daily_cap", "referrer_points", NULL};
    char path[PGW_JSON_PATH_MAX];
    json_t *obj, *section;
    pgw_behaviours *b = &rules->behaviours;
    int rc = get_section(root, "behaviours", "$", false, keys, &obj, path, err);
    if (rc != PGW_OK || obj == NULL)
        return rc;
    struct {
        const char *name;
        const char *const *keys;
        pgw_behaviour *behaviour;
    } table[] = {
        {"register", plain, &b->register_},  {"first_purchase", plain, &b->first_purchase},
        {"review", plain, &b->review},       {"share", plain, &b->share},
        {"follow_oa", plain, &b->follow_oa}, {"survey", plain, &b->survey},
    };
    for (size_t i = 0; rc == PGW_OK && i < sizeof(table) / sizeof(table[0]); i++)
        rc = parse_behaviour(obj, table[i].name, table[i].keys, table[i].behaviour, &section, err);
    if (rc == PGW_OK)
        rc = parse_behaviour(obj, "sign_in", sign_in, &b->sign_in, &section, err);
    if (rc == PGW_OK && section != NULL)
        rc = parse_streaks(section, "$.behaviours.sign_in", b, err);
    if (rc == PGW_OK)
        rc = parse_behaviour(obj, "referral", referral, &b->referral, &section, err);
    if (rc == PGW_OK && section != NULL)
        rc = pgw_json_int(section, "referrer_points", "$.behaviours.referral", false, 0,
                          PGW_POINTS_MAX, &b->referral_referrer_points, err);
    /* The cap holds the referrer's side too (command.c cap_referrer). */
    if (rc == PGW_OK && b->referral.daily_cap > 0 &&
        b->referral.daily_cap < b->referral_referrer_points)
        rc = pgw_err_set(err, PGW_EINVAL,
                         "$.behaviours.referral.daily_cap: %lld is below referrer_points %lld: "
                         "no referral could pay the referrer's points",
                         (long long)b->referral.daily_cap, (long long)b->referral_referrer_points);
    return rc;
}

/* ---- fixed awards within the risk limits --------------------------------- */

/*
 * The server refuses (risk_rejected) an event earning more than
 * max_points_per_event, or more behaviour points than
 * max_behaviour_points_per_day on a day that had none yet. An award above
 * either could never be paid, and worse: the refused event records
 * nothing, so the next one pays it again and is refused again (a
 * first-purchase bonus: each of the member's purchases; a challenge's:
 * every purchase after the threshold, to the month's end).
 */
/* The risk limit `points` pass (behaviour points: the daily one too),
 * *max its value; NULL for none. */
static const char *limit_passed(int64_t points, bool behaviour, const pgw_risk_config *r,
                                int64_t *max)
{
    *max = r->max_points_per_event;
    if (points > *max)
        return "max_points_per_event";
    *max = r->max_behaviour_points_per_day;
    return behaviour && points > *max ? "max_behaviour_points_per_day" : NULL;
}

static int check_award(const char *path, int64_t points, bool behaviour, const pgw_risk_config *r,
                       pgw_err *err)
{
    int64_t max = 0;
    const char *limit = limit_passed(points, behaviour, r, &max);
    if (limit == NULL)
        return PGW_OK;
    return pgw_err_set(err, PGW_EINVAL,
                       "%s: %lld is above risk.%s %lld: every event paying it would be refused "
                       "(risk_rejected)",
                       path, (long long)points, limit, (long long)max);
}

/* A sign-in pays its points and, on a day all streaks meet (a multiple of
 * each one's days), every streak's bonus: the most one sign-in earns, all
 * of it behaviour points (a sign-in's day over max_behaviour_points_per_day
 * was refused, and its streak began again). max_points_per_event <=
 * PGW_POINTS_MAX, past which rules.c refuses the sign-in as an overflow. */
static int check_sign_in_day(const pgw_behaviours *b, const pgw_risk_config *r, pgw_err *err)
{
    int64_t most = b->sign_in.points; /* each <= PGW_POINTS_MAX: 9 of them fit int64 */
    for (size_t i = 0; i < b->n_streaks; i++)
        most += b->streaks[i].bonus_points;
    int64_t max = 0;
    const char *limit = limit_passed(most, true, r, &max);
    if (!b->sign_in.enabled || limit == NULL)
        return PGW_OK;
    return pgw_err_set(err, PGW_EINVAL,
                       "$.behaviours.sign_in: points %lld and every streak's bonus_points (a day "
                       "all streaks meet) come to %lld, above risk.%s %lld",
                       (long long)b->sign_in.points, (long long)most, limit, (long long)max);
}

static int check_campaign_awards(const pgw_rules *rules, const pgw_risk_config *r, pgw_err *err)
{
    char path[PGW_JSON_PATH_MAX], bonus[PGW_JSON_PATH_MAX];
    int rc = PGW_OK;
    for (size_t i = 0; rc == PGW_OK && i < rules->n_campaigns; i++) {
        const pgw_campaign *c = &rules->campaigns[i];
        pgw_json_path_index(path, "$.campaigns", i);
        if (c->kind == PGW_CAMPAIGN_CHALLENGE) {
            pgw_json_path_key(bonus, path, "bonus_points");
            rc = check_award(bonus, c->bonus_points, false, r, err);
        }
        for (size_t k = 0; rc == PGW_OK && c->kind == PGW_CAMPAIGN_BRACKETS && k < c->n_brackets;
             k++) {
            char list[PGW_JSON_PATH_MAX], item[PGW_JSON_PATH_MAX];
            pgw_json_path_key(list, path, "brackets");
            pgw_json_path_index(item, list, k);
            pgw_json_path_key(bonus, item, "bonus_points");
            rc = check_award(bonus, c->brackets[k].bonus_points, false, r, err);
        }
    }
    return rc;
}

static int check_awards_within_risk(const pgw_config *cfg, pgw_err *err)
{
    const pgw_behaviours *b = &cfg->rules.behaviours;
    const struct {
        const char *path;
        const pgw_behaviour *behaviour;
    } table[] = {
        {"$.behaviours.register.points", &b->register_},
        {"$.behaviours.first_purchase.points", &b->first_purchase},
        {"$.behaviours.sign_in.points", &b->sign_in},
        {"$.behaviours.review.points", &b->review},
        {"$.behaviours.share.points", &b->share},
        {"$.behaviours.referral.points", &b->referral},
        {"$.behaviours.follow_oa.points", &b->follow_oa},
        {"$.behaviours.survey.points", &b->survey},
    };
    int rc = PGW_OK;
    for (size_t i = 0; rc == PGW_OK && i < sizeof(table) / sizeof(table[0]); i++) {
        if (table[i].behaviour->enabled)
            rc = check_award(table[i].path, table[i].behaviour->points, true, &cfg->risk, err);
    }
    if (rc == PGW_OK)
        rc = check_sign_in_day(b, &cfg->risk, err);
    if (rc == PGW_OK)
        rc = check_campaign_awards(&cfg->rules, &cfg->risk, err);
    return rc;
}

/* ---- risk, channels, notify, security, keys ------------------------------ */

static int parse_risk(const json_t *root, pgw_config *cfg, pgw_err *err)
{
    static const char *const keys[] = {"max_points_per_event",
                                       "max_events_per_member_per_day",
                                       "max_redeem_points_per_day",
                                       "max_behaviour_points_per_day",
                                       "new_member_redeem_hours",
                                       "unique_receipts",
                                       "max_new_members_per_ip_per_hour",
                                       NULL};
    char path[PGW_JSON_PATH_MAX];
    json_t *risk;
    pgw_risk_config *r = &cfg->risk;
    r->max_points_per_event = 1000000;
    r->max_events_per_member_per_day = 200;
    r->max_redeem_points_per_day = 1000000;
    r->max_behaviour_points_per_day = 10000;
    r->new_member_redeem_hours = 0;
    r->unique_receipts = true;
    r->max_new_members_per_ip_per_hour = 20;
    int rc = get_section(root, "risk", "$", false, keys, &risk, path, err);
    if (rc != PGW_OK || risk == NULL)
        return rc;
    rc = pgw_json_int(risk, "max_points_per_event", path, false, 1, PGW_POINTS_MAX,
                      &r->max_points_per_event, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(risk, "max_events_per_member_per_day", path, false, 1, 1000000,
                          &r->max_events_per_member_per_day, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(risk, "max_redeem_points_per_day", path, false, 1, PGW_POINTS_MAX,
                          &r->max_redeem_points_per_day, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(risk, "max_behaviour_points_per_day", path, false, 1, PGW_POINTS_MAX,
                          &r->max_behaviour_points_per_day, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(risk, "new_member_redeem_hours", path, false, 0, 24 * 365,
                          &r->new_member_redeem_hours, err);
    if (rc == PGW_OK)
        rc = pgw_json_bool(risk, "unique_receipts", path, false, &r->unique_receipts, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(risk, "max_new_members_per_ip_per_hour", path, false, 0, 1000000,
                          &r->max_new_members_per_ip_per_hour, err);
    return rc;
}

static int parse_tls(const json_t *http, const char *parent, pgw_http_config *h, pgw_err *err)
{
    static const char *const keys[] = {"cert_file", "key_file", NULL};
    char path[PGW_JSON_PATH_MAX];
    json_t *tls;
    int rc = get_section(http, "tls", parent, false, keys, &tls, path, err);
    if (rc != PGW_OK || tls == NULL)
        return rc;
    rc = pgw_json_string(tls, "cert_file", path, true, PGW_PATH_FILE_MAX, h->cert_file,
                         sizeof(h->cert_file), err);
    if (rc == PGW_OK)
        rc = pgw_json_string(tls, "key_file", path, true, PGW_PATH_FILE_MAX, h->key_file,
                             sizeof(h->key_file), err);
    h->tls = rc == PGW_OK;
    return rc;
}

/* PEM's passphrase callback: none is asked for (OpenSSL would prompt on
 * the terminal), so an encrypted key is not read. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* Reads the first PEM certificate or private key of `path` (NULL on any
 * failure, `why` then saying it). */
static void *read_pem(const char *path, bool key, const char **why)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        *why = strerror(errno);
        return NULL;
    }
    void *got = key ? (void *)PEM_read_PrivateKey(f, NULL, no_passphrase, NULL)
                    : (void *)PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    *why = key ? "no unencrypted PEM private key in it" : "no PEM certificate in it";
    return got;
}

int pgw_config_check_tls(const pgw_http_config *http, const char *file, pgw_err *err)
{
    if (!http->tls)
        return PGW_OK;
    const char *why = NULL;
    int rc = PGW_OK;
    char name[PGW_CONFIG_NAME_MAX + 1];
    pgw_config_name(file, name);
    file = name;
    X509 *cert = read_pem(http->cert_file, false, &why);
    EVP_PKEY *key = NULL;
    if (cert == NULL)
        rc = pgw_err_set(err, PGW_EINVAL, "%s: $.http.tls.cert_file: %s: %s", file, http->cert_file,
                         why);
    else if ((key = read_pem(http->key_file, true, &why)) == NULL)
        rc = pgw_err_set(err, PGW_EINVAL, "%s: $.http.tls.key_file: %s: %s", file, http->key_file,
                         why);
    else if (X509_check_private_key(cert, key) != 1)
        rc = pgw_err_set(err, PGW_EINVAL,
                         "%s: $.http.tls.key_file: %s is not the key of the certificate in %s",
                         file, http->key_file, http->cert_file);
    X509_free(cert);
    EVP_PKEY_free(key);
    ERR_clear_error(); /* what OpenSSL queued is said above */
    return rc;
}

/* http.trusted_proxies: addresses or prefixes ("10.0.0.0/8"). */
static int parse_trusted_proxies(const json_t *http, const char *path, pgw_http_config *h,
                                 pgw_err *err)
{
    json_t *list;
    char list_path[PGW_JSON_PATH_MAX], item_path[PGW_JSON_PATH_MAX];
    int rc = get_array(http, "trusted_proxies", path, false, PGW_TRUSTED_PROXIES_MAX, &list, err);
    pgw_json_path_key(list_path, path, "trusted_proxies");
    for (size_t i = 0; rc == PGW_OK && list != NULL && i < json_array_size(list); i++) {
        pgw_json_path_index(item_path, list_path, i);
        const char *text = json_string_value(json_array_get(list, i));
        pgw_err why;
        if (text == NULL)
            return pgw_err_set(err, PGW_EINVAL, "%s: expected an address or a prefix (10.0.0.0/8)",
                               item_path);
        if (pgw_prefix_parse(text, &h->trusted_proxies[i], &why) != PGW_OK)
            return pgw_err_set(err, PGW_EINVAL, "%s: %s", item_path, why.msg);
        h->n_trusted_proxies = i + 1;
    }
    return rc;
}

/* http.body_total_max_bytes, after body_max_bytes: below one body of the
 * largest a key may send, that body would be refused for ever (503). */
static int parse_bodies_max(const json_t *http, const char *path, pgw_http_config *h, pgw_err *err)
{
    int rc = pgw_json_int(http, "body_total_max_bytes", path, false, PGW_HTTP_BODIES_MIN,
                          PGW_HTTP_BODIES_MAX, &h->body_total_max_bytes, err);
    if (rc == PGW_OK && h->body_total_max_bytes < h->body_max_bytes)
        rc = pgw_err_set(err, PGW_EINVAL,
                         "%s.body_total_max_bytes: %lld is below body_max_bytes %lld: a body that "
                         "large could never be read",
                         path, (long long)h->body_total_max_bytes, (long long)h->body_max_bytes);
    return rc;
}

static int parse_http(const json_t *root, pgw_config *cfg, pgw_err *err)
{
    static const char *const keys[] = {"body_max_bytes",
                                       "body_timeout_s",
                                       "body_total_max_bytes",
                                       "keepalive_timeout_s",
                                       "max_inflight",
                                       "commit_batch",
                                       "stream_sessions_max",
                                       "stream_session_check_s",
                                       "max_connections_per_address",
                                       "tls",
                                       "trusted_proxies",
                                       NULL};
    char path[PGW_JSON_PATH_MAX];
    json_t *http;
    pgw_http_config *h = &cfg->http;
    h->body_max_bytes = 1024 * 1024;
    h->body_timeout_s = 60;
    h->body_total_max_bytes = PGW_HTTP_BODIES_DEFAULT;
    h->keepalive_timeout_s = 120;
    h->max_inflight = 4096;
    h->commit_batch = 0; /* the database's: PGW_WRITER_BATCH_SQLITE or _REMOTE */
    h->stream_sessions_max = 256;
    h->stream_session_check_s = 60;
    h->max_connections_per_address = 4096;
    int rc = get_section(root, "http", "$", false, keys, &http, path, err);
    if (rc != PGW_OK || http == NULL)
        return rc;
    rc = pgw_json_int(http, "body_max_bytes", path, false, 1024, 64 * 1024 * 1024,
                      &h->body_max_bytes, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(http, "body_timeout_s", path, false, 1, 3600, &h->body_timeout_s, err);
    if (rc == PGW_OK)
        rc = parse_bodies_max(http, path, h, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(http, "keepalive_timeout_s", path, false, 1, 3600,
                          &h->keepalive_timeout_s, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(http, "max_inflight", path, false, 32, 65536, &h->max_inflight, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(http, "commit_batch", path, false, 1, 4096, &h->commit_batch, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(http, "stream_sessions_max", path, false, 0, 4096,
                          &h->stream_sessions_max, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(http, "stream_session_check_s", path, false, 1, 3600,
                          &h->stream_session_check_s, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(http, "max_connections_per_address", path, false, 0, 65536,
                          &h->max_connections_per_address, err);
    if (rc == PGW_OK)
        rc = parse_trusted_proxies(http, path, h, err);
    return rc == PGW_OK ? parse_tls(http, path, h, err) : rc;
}

static int parse_templates(const json_t *obj, const char *path,
                           char (*templates)[PGW_TEMPLATE_ID_MAX + 1], pgw_err *err)
{
    char sub[PGW_JSON_PATH_MAX];
    json_t *t;
    const char *keys[PGW_NOTICE_KINDS + 1];
    for (size_t i = 0; i < PGW_NOTICE_KINDS; i++)
        keys[i] = NOTICE_NAMES[i];
    keys[PGW_NOTICE_KINDS] = NULL;
    int rc = get_section(obj, "templates", path, false, keys, &t, sub, err);
    for (size_t i = 0; rc == PGW_OK && t != NULL && i < PGW_NOTICE_KINDS; i++)
        rc = pgw_json_string(t, NOTICE_NAMES[i], sub, false, PGW_TEMPLATE_ID_MAX, templates[i],
                             sizeof(templates[i]), err);
    return rc;
}

static int check_url(const char *url, const char *path, pgw_err *err)
{
    if (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0)
        return pgw_err_set(err, PGW_EINVAL, "%s.api_base: expected an http(s) URL, got \"%.64s\"",
                           path, url);
    return PGW_OK;
}

/*
 * Whether a non-ASCII code point in a page looks like something it is not:
 * a space of any width (Unicode's White_Space), an invisible or format
 * character (its Default_Ignorable_Code_Point: U+200B, U+FEFF, the Hangul
 * fillers, tags), a C1 control, a full-width form of an ASCII character
 * (the '？' a Chinese keyboard types for '?'), or U+FFF0..U+FFFF (U+FFFD:
 * a byte mis-decoded). Other letters are a page's own, past U+FFFF too: a
 * mini program may name its folders in Chinese ("pkg/积分/home", "𠮷").
 */
static bool page_lookalike(uint32_t cp)
{
    static const uint32_t ranges[][2] = {
        {0x80, 0xA0},       {0xAD, 0xAD},     {0x34F, 0x34F},     {0x61C, 0x61C},
        {0x115F, 0x1160},   {0x1680, 0x1680}, {0x17B4, 0x17B5},   {0x180B, 0x180F},
        {0x2000, 0x200F},   {0x2028, 0x202F}, {0x205F, 0x206F},   {0x3000, 0x3000},
        {0x3164, 0x3164},   {0xFE00, 0xFE0F}, {0xFEFF, 0xFEFF},   {0xFF01, 0xFF5E},
        {0xFFA0, 0xFFA0},   {0xFFF0, 0xFFFF}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A},
        {0xE0000, 0xE0FFF},
    };
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
        if (cp >= ranges[i][0] && cp <= ranges[i][1])
            return true;
    return false;
}

/*
 * A mini-program page: a path with its query if any, as WeChat takes it
 * ("pages/points/index?tab=1", research/wechat-api.md 4 and 5.1). Its ASCII
 * is that of a URL's path and query (RFC 3986), '%' starting a %XX escape;
 * other characters are taken unless they look like what they are not
 * (page_lookalike). What looked right but was not (U+3000 or a no-break
 * space, a full-width '?', an invisible U+200B) was taken, and WeChat
 * refused the notice: no such page. No leading "/" or "?".
 */
static int check_page(const char *page, const char *key, const char *path, pgw_err *err)
{
    static const char url_chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "0123456789-._~!$&'()*+,;=:@/?%";
    if (page[0] == '/' || page[0] == '?')
        return pgw_err_set(err, PGW_EINVAL,
                           "%s.%s: a page path starts with its first directory, as in "
                           "\"pages/points/index\", not with '%c'",
                           path, key, page[0]);
    size_t i = 0;
    for (size_t n = 1; page[i] != '\0'; n++) {
        uint32_t cp = 0;
        size_t len = pgw_utf8_next(page + i, &cp);
        PGW_ASSERT(len > 0); /* jansson holds valid UTF-8 */
        if (len == 1 && strchr(url_chars, page[i]) == NULL)
            return pgw_err_set(err, PGW_EINVAL,
                               "%s.%s: character %zu (U+%04X) is not a URL character (a page "
                               "path's ASCII is letters, digits and %s, the rest "
                               "percent-encoded)",
                               path, key, n, (unsigned)cp, "-._~!$&'()*+,;=:@/?%");
        if (len > 1 && page_lookalike(cp))
            return pgw_err_set(err, PGW_EINVAL,
                               "%s.%s: character %zu (U+%04X) is a space, an invisible or a "
                               "full-width character: no page has it",
                               path, key, n, (unsigned)cp);
        if (page[i] == '%' &&
            !(isxdigit((unsigned char)page[i + 1]) && isxdigit((unsigned char)page[i + 2])))
            return pgw_err_set(err, PGW_EINVAL,
                               "%s.%s: the '%%' at character %zu starts no %%XX escape", path, key,
                               n);
        i += len;
    }
    return PGW_OK;
}

static int get_page(const json_t *obj, const char *key, const char *path, char *out, size_t cap,
                    pgw_err *err)
{
    int rc = pgw_json_string(obj, key, path, false, PGW_MP_PAGE_MAX, out, cap, err);
    if (rc == PGW_OK)
        rc = check_page(out, key, path, err);
    return rc;
}

/*
 * wechat_mp's notice_page and miniprogram_state; wechat_oa's mp_jump_page
 * (`mp` the mini program's channel, NULL when parsing it), whose default,
 * the mini program's notice_page, is a page of that mini program only: a
 * jump to another (mp_jump_appid another appid) must name its page (it
 * opened ours, a page it may not have: regression).
 */
static int parse_wechat_jump(const json_t *obj, const char *path, const pgw_wechat_channel *mp,
                             pgw_wechat_channel *w, pgw_err *err)
{
    bool oa = mp != NULL;
    static const char *const states[] = {"formal", "trial", "developer"};
    int state = 0;
    int rc =
        get_page(obj, oa ? "mp_jump_page" : "notice_page", path, w->page, sizeof(w->page), err);
    /* Named: a null is no page, as for every key (pgw_json_string); it
     * passed as one named, and the default opened another mini program. */
    const json_t *page = json_object_get(obj, "mp_jump_page");
    bool named = page != NULL && !json_is_null(page);
    /* Without mp_jump_appid a template opens no mini program: the page would be ignored. */
    if (rc == PGW_OK && oa && w->mp_jump_appid[0] == '\0' && named)
        return pgw_err_set(err, PGW_EINVAL,
                           "%s.mp_jump_page: opens a page of the mini program mp_jump_appid "
                           "names, and none is named",
                           path);
    if (rc == PGW_OK && oa && w->mp_jump_appid[0] != '\0' &&
        strcmp(w->mp_jump_appid, mp->appid) != 0 && !named)
        return pgw_err_set(
            err, PGW_EINVAL,
            "%s.mp_jump_page: required, as mp_jump_appid \"%s\" is not "
            "channels.wechat_mp's appid: the default, that mini program's notice_page, "
            "may be no page of it",
            path, w->mp_jump_appid);
    if (rc == PGW_OK && !oa)
        rc = get_choice(obj, "miniprogram_state", path, false, states, 3, &state, err);
    if (rc == PGW_OK && !oa)
        snprintf(w->mp_state, sizeof(w->mp_state), "%s", states[state]);
    return rc;
}

/* channels.wechat_mp (`mp` NULL), or channels.wechat_oa given the mini program's. */
static int parse_wechat(const json_t *channels, const char *name, const pgw_wechat_channel *mp,
                        pgw_wechat_channel *w, pgw_err *err)
{
    bool oa = mp != NULL;
    static const char *const mp_keys[] = {"enabled",           "api_base",  "appid",
                                          "secret_env",        "templates", "notice_page",
                                          "miniprogram_state", NULL};
    static const char *const oa_keys[] = {
        "enabled",   "api_base",      "appid",        "secret_env",      "token_env", "aes_key_env",
        "templates", "mp_jump_appid", "mp_jump_page", "reply_within_ms", NULL};
    char path[PGW_JSON_PATH_MAX];
    json_t *obj;
    pgw_identity probe;
    snprintf(w->api_base, sizeof(w->api_base), "https://api.weixin.qq.com");
    w->reply_within_ms = PGW_OA_REPLY_WITHIN_MS_DEFAULT;
    int rc =
        get_section(channels, name, "$.channels", false, oa ? oa_keys : mp_keys, &obj, path, err);
    if (rc != PGW_OK || obj == NULL)
        return rc;
    w->enabled = true;
    rc = pgw_json_bool(obj, "enabled", path, false, &w->enabled, err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "api_base", path, false, PGW_URL_MAX, w->api_base,
                             sizeof(w->api_base), err);
    if (rc == PGW_OK)
        rc = check_url(w->api_base, path, err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "appid", path, true, PGW_ID_MAX, w->appid, sizeof(w->appid), err);
    if (rc == PGW_OK && pgw_identity_make(PGW_ID_MP_OPENID, w->appid, "probe", &probe, err))
        rc = pgw_err_prefix(err, "%s.appid: ", path);
    if (rc == PGW_OK)
        rc = get_env_name(obj, "secret_env", path, true, w->secret_env, sizeof(w->secret_env), err);
    if (rc == PGW_OK && oa)
        rc = get_env_name(obj, "token_env", path, true, w->token_env, sizeof(w->token_env), err);
    if (rc == PGW_OK && oa)
        rc = get_env_name(obj, "aes_key_env", path, false, w->aes_key_env, sizeof(w->aes_key_env),
                          err);
    if (rc == PGW_OK && oa)
        rc = pgw_json_string(obj, "mp_jump_appid", path, false, PGW_ID_MAX, w->mp_jump_appid,
                             sizeof(w->mp_jump_appid), err);
    if (rc == PGW_OK && oa)
        rc = pgw_json_int(obj, "reply_within_ms", path, false, PGW_OA_REPLY_WITHIN_MS_MIN,
                          PGW_OA_REPLY_WITHIN_MS_MAX, &w->reply_within_ms, err);
    if (rc == PGW_OK)
        rc = parse_wechat_jump(obj, path, mp, w, err);
    if (rc == PGW_OK)
        rc = parse_templates(obj, path, w->templates, err);
    return rc;
}

/* channels.sms.otp: {"template", "ttl_s", "per_ip_per_hour"}. */
static int parse_otp(const json_t *sms, const char *sms_path, pgw_sms_channel *s, pgw_err *err)
{
    static const char *const keys[] = {"template", "ttl_s", "per_ip_per_hour", NULL};
    char path[PGW_JSON_PATH_MAX];
    json_t *obj;
    s->otp_ttl_s = 300;
    s->otp_per_ip_per_hour = 20;
    int rc = get_section(sms, "otp", sms_path, false, keys, &obj, path, err);
    if (rc != PGW_OK || obj == NULL)
        return rc;
    rc = pgw_json_string(obj, "template", path, true, PGW_TEMPLATE_ID_MAX, s->otp_template,
                         sizeof(s->otp_template), err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "ttl_s", path, false, PGW_OTP_TTL_MIN_S, PGW_OTP_TTL_MAX_S,
                          &s->otp_ttl_s, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "per_ip_per_hour", path, false, 0, PGW_OTP_TIMES_MAX,
                          &s->otp_per_ip_per_hour, err);
    return rc;
}

static int parse_sms(const json_t *channels, pgw_sms_channel *s, pgw_err *err)
{
    static const char *const keys[] = {"enabled",    "provider", "api_base",   "sign_name",
                                       "sdk_app_id", "region",   "key_id_env", "key_secret_env",
                                       "templates",  "otp",      NULL};
    static const char *const providers[] = {"tencent", "aliyun"};
    char path[PGW_JSON_PATH_MAX];
    json_t *obj;
    int provider = 0;
    int rc = get_section(channels, "sms", "$.channels", false, keys, &obj, path, err);
    if (rc != PGW_OK || obj == NULL)
        return rc;
    s->enabled = true;
    rc = pgw_json_bool(obj, "enabled", path, false, &s->enabled, err);
    if (rc == PGW_OK)
        rc = get_choice(obj, "provider", path, true, providers, 2, &provider, err);
    snprintf(s->provider, sizeof(s->provider), "%s", providers[provider]);
    snprintf(s->api_base, sizeof(s->api_base), "%s",
             provider == 0 ? "https://sms.tencentcloudapi.com" : "https://dysmsapi.aliyuncs.com");
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "api_base", path, false, PGW_URL_MAX, s->api_base,
                             sizeof(s->api_base), err);
    if (rc == PGW_OK)
        rc = check_url(s->api_base, path, err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "sign_name", path, true, PGW_NAME_MAX, s->sign_name,
                             sizeof(s->sign_name), err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "sdk_app_id", path, provider == 0, PGW_ID_MAX, s->sdk_app_id,
                             sizeof(s->sdk_app_id), err);
    if (rc == PGW_OK)
        rc = get_id(obj, "region", path, false, s->region, sizeof(s->region), err);
    if (rc == PGW_OK)
        rc = get_env_name(obj, "key_id_env", path, true, s->key_id_env, sizeof(s->key_id_env), err);
    if (rc == PGW_OK)
        rc = get_env_name(obj, "key_secret_env", path, true, s->key_secret_env,
                          sizeof(s->key_secret_env), err);
    if (rc == PGW_OK)
        rc = parse_templates(obj, path, s->templates, err);
    if (rc == PGW_OK)
        rc = parse_otp(obj, path, s, err);
    return rc;
}

static int parse_channels(const json_t *root, pgw_config *cfg, pgw_err *err)
{
    static const char *const keys[] = {"wechat_mp", "wechat_oa", "sms", NULL};
    char path[PGW_JSON_PATH_MAX];
    json_t *channels;
    pgw_wechat_channel *mp = &cfg->wechat_mp, *oa = &cfg->wechat_oa;
    snprintf(mp->page, sizeof(mp->page), "%s", PGW_MP_PAGE_DEFAULT);
    snprintf(mp->mp_state, sizeof(mp->mp_state), "formal");
    int rc = get_section(root, "channels", "$", false, keys, &channels, path, err);
    if (rc == PGW_OK && channels != NULL)
        rc = parse_wechat(channels, "wechat_mp", NULL, mp, err);
    /* The official account opens the mini program's page unless told
     * another (which it must be when it opens another mini program). */
    memcpy(oa->page, mp->page, sizeof(oa->page));
    if (rc != PGW_OK || channels == NULL)
        return rc;
    rc = parse_wechat(channels, "wechat_oa", mp, oa, err);
    if (rc == PGW_OK)
        rc = parse_sms(channels, &cfg->sms, err);
    return rc;
}

/* "HH:MM" into minutes after midnight. */
static int get_clock(const json_t *obj, const char *key, const char *path, int32_t *out,
                     pgw_err *err)
{
    const char *s;
    int rc = pgw_json_string_ref(obj, key, path, false, 5, &s, err);
    if (rc != PGW_OK || s == NULL)
        return rc;
    int h = -1, m = -1;
    bool ok = strlen(s) == 5 && s[2] == ':' && s[0] >= '0' && s[0] <= '2' && s[1] >= '0' &&
              s[1] <= '9' && s[3] >= '0' && s[3] <= '5' && s[4] >= '0' && s[4] <= '9';
    if (ok) {
        h = (s[0] - '0') * 10 + (s[1] - '0');
        m = (s[3] - '0') * 10 + (s[4] - '0');
    }
    if (!ok || h > 23)
        return pgw_err_set(err, PGW_EINVAL, "%s.%s: expected a time HH:MM, got \"%s\"", path, key,
                           s);
    *out = h * 60 + m;
    return PGW_OK;
}

/* Whether `channels` has a section for `ch` (its required appid or key
 * variable is set exactly when it does); one with "enabled": false has. */
static bool channel_configured(const pgw_config *cfg, pgw_notice_channel ch)
{
    return ch == PGW_CHANNEL_MP   ? cfg->wechat_mp.appid[0] != '\0'
           : ch == PGW_CHANNEL_OA ? cfg->wechat_oa.appid[0] != '\0'
                                  : cfg->sms.key_id_env[0] != '\0';
}

/* One route: 1..3 distinct channel names, in the order to try them, each
 * configured under $.channels: one that is not would never carry a notice,
 * and nothing would say so. Switched off ("enabled": false) is deliberate. */
static int get_route(const json_t *routes, const char *key, const char *path, const pgw_config *cfg,
                     pgw_notice_order *out, pgw_err *err)
{
    json_t *list;
    int rc = get_array(routes, key, path, false, PGW_NOTICE_CHANNELS, &list, err);
    if (rc != PGW_OK || list == NULL)
        return rc;
    if (json_array_size(list) == 0)
        return pgw_err_set(err, PGW_EINVAL, "%s.%s: name at least one channel", path, key);
    pgw_notice_order o = {0};
    unsigned seen = 0;
    for (size_t i = 0; i < json_array_size(list); i++) {
        const char *name = json_string_value(json_array_get(list, i));
        pgw_notice_channel ch = name ? pgw_notice_channel_parse(name) : PGW_CHANNEL_NONE;
        if (ch == PGW_CHANNEL_NONE || (seen & (unsigned)ch))
            return pgw_err_set(err, PGW_EINVAL,
                               "%s.%s[%zu]: expected wechat_mp, wechat_oa or sms, each once", path,
                               key, i);
        seen |= (unsigned)ch;
        o.channel[o.n++] = ch;
    }
    for (size_t i = 0; i < o.n; i++) { /* after the names: a typo is said as one */
        const char *name = pgw_notice_channel_name(o.channel[i]);
        if (!channel_configured(cfg, o.channel[i]))
            return pgw_err_set(err, PGW_EINVAL,
                               "%s.%s[%zu]: channel \"%s\" is not configured ($.channels.%s)", path,
                               key, i, name, name);
    }
    *out = o;
    return PGW_OK;
}

/* notify.routes: {"default": [...], "<kind>": [...]}; a kind without its
 * own route takes the default, itself by default mini program, official
 * account, SMS. */
static int parse_routes(const json_t *notify, const char *path, pgw_config *cfg, pgw_err *err)
{
    pgw_notify_config *n = &cfg->notify;
    const char *keys[PGW_NOTICE_KINDS + 2] = {"default"};
    for (size_t i = 0; i < PGW_NOTICE_KINDS; i++)
        keys[i + 1] = NOTICE_NAMES[i];
    char sub[PGW_JSON_PATH_MAX];
    json_t *routes;
    pgw_notice_order fallback = pgw_notice_order_default();
    int rc = get_section(notify, "routes", path, false, keys, &routes, sub, err);
    if (rc == PGW_OK && routes != NULL)
        rc = get_route(routes, "default", sub, cfg, &fallback, err);
    for (size_t i = 0; i < PGW_NOTICE_KINDS; i++)
        n->routes[i] = fallback;
    for (size_t i = 0; rc == PGW_OK && routes != NULL && i < PGW_NOTICE_KINDS; i++)
        rc = get_route(routes, NOTICE_NAMES[i], sub, cfg, &n->routes[i], err);
    return rc;
}

static int parse_notify(const json_t *root, pgw_config *cfg, pgw_err *err)
{
    static const char *const keys[] = {
        "coalesce_window_s", "quiet_hours", "retry",  "expiry_reminder_days",
        "workers",           "keep_days",   "routes", NULL};
    static const char *const quiet_keys[] = {"start", "end", NULL};
    static const char *const retry_keys[] = {"max_attempts", "base_delay_ms", "max_delay_ms", NULL};
    char path[PGW_JSON_PATH_MAX], sub[PGW_JSON_PATH_MAX];
    json_t *notify, *quiet = NULL, *retry = NULL;
    pgw_notify_config *n = &cfg->notify;
    *n = (pgw_notify_config){.coalesce_window_s = 10,
                             .quiet_start_min = 21 * 60,
                             .quiet_end_min = 8 * 60,
                             .retry_max_attempts = 8,
                             .retry_base_delay_ms = 1000,
                             .retry_max_delay_ms = 600000,
                             .expiry_reminder_days = 7,
                             .workers = 16,
                             .keep_days = 30};
    int rc = get_section(root, "notify", "$", false, keys, &notify, path, err);
    if (rc == PGW_OK) /* the defaults too when there is no section */
        rc = parse_routes(notify, path, cfg, err);
    if (rc != PGW_OK || notify == NULL)
        return rc;
    rc =
        pgw_json_int(notify, "coalesce_window_s", path, false, 0, 3600, &n->coalesce_window_s, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(notify, "expiry_reminder_days", path, false, 0, 90,
                          &n->expiry_reminder_days, err);
    if (rc == PGW_OK) /* 64: PGW_NOTIFY_THREADS_MAX (notify/notifier.h) */
        rc = pgw_json_int(notify, "workers", path, false, 1, 64, &n->workers, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(notify, "keep_days", path, false, 1, 3650, &n->keep_days, err);
    if (rc == PGW_OK)
        rc = get_section(notify, "quiet_hours", path, false, quiet_keys, &quiet, sub, err);
    if (rc == PGW_OK && quiet != NULL)
        rc = get_clock(quiet, "start", sub, &n->quiet_start_min, err);
    if (rc == PGW_OK && quiet != NULL)
        rc = get_clock(quiet, "end", sub, &n->quiet_end_min, err);
    if (rc == PGW_OK)
        rc = get_section(notify, "retry", path, false, retry_keys, &retry, sub, err);
    if (rc == PGW_OK && retry != NULL)
        rc = pgw_json_int(retry, "max_attempts", sub, false, 1, 100, &n->retry_max_attempts, err);
    if (rc == PGW_OK && retry != NULL)
        rc = pgw_json_int(retry, "base_delay_ms", sub, false, 10, 3600000, &n->retry_base_delay_ms,
                          err);
    if (rc == PGW_OK && retry != NULL)
        rc = pgw_json_int(retry, "max_delay_ms", sub, false, n->retry_base_delay_ms, 86400000,
                          &n->retry_max_delay_ms, err);
    /* The default maximum too: a base above it (max_delay_ms left out) was
     * taken, and the first retry's backoff asserted, killing the gateway. */
    if (rc == PGW_OK && n->retry_max_delay_ms < n->retry_base_delay_ms)
        rc = pgw_err_set(err, PGW_EINVAL,
                         "%s.max_delay_ms: %lld is below base_delay_ms %lld (give both)", sub,
                         (long long)n->retry_max_delay_ms, (long long)n->retry_base_delay_ms);
    return rc;
}

static int parse_security(const json_t *root, pgw_config *cfg, pgw_err *err)
{
    static const char *const keys[] = {"phone_hmac_key_env", "phone_aes_key_env",
                                       "development_mode", NULL};
    char path[PGW_JSON_PATH_MAX];
    json_t *obj;
    pgw_security_config *s = &cfg->security;
    snprintf(s->phone_hmac_key_env, sizeof(s->phone_hmac_key_env), "PGW_PHONE_HMAC_KEY");
    snprintf(s->phone_aes_key_env, sizeof(s->phone_aes_key_env), "PGW_PHONE_AES_KEY");
    int rc = get_section(root, "security", "$", false, keys, &obj, path, err);
    if (rc != PGW_OK || obj == NULL)
        return rc;
    rc = get_env_name(obj, "phone_hmac_key_env", path, false, s->phone_hmac_key_env,
                      sizeof(s->phone_hmac_key_env), err);
    if (rc == PGW_OK)
        rc = get_env_name(obj, "phone_aes_key_env", path, false, s->phone_aes_key_env,
                          sizeof(s->phone_aes_key_env), err);
    if (rc == PGW_OK)
        rc = pgw_json_bool(obj, "development_mode", path, false, &s->development_mode, err);
    return rc;
}

/* "shop:<existing id>", "channel:<name>", "finance" or "admin". `what`
 * names the value where it came from: a file's JSON path ("$.keys[0].scope")
 * or the command line's flag ("--scope"). */
static int check_scope(const char *scope, const char *what, const pgw_rules *rules, pgw_err *err)
{
    static const char *const channels[] = {"store", "wechat_mp", "wechat_oa", "sms", NULL};
    if (strcmp(scope, "finance") == 0 || strcmp(scope, "admin") == 0)
        return PGW_OK;
    if (strncmp(scope, "shop:", 5) == 0) {
        if (pgw_rules_find_shop(rules, scope + 5) >= 0)
            return PGW_OK;
        return pgw_err_set(err, PGW_EINVAL, "%s: unknown shop \"%s\"", what, scope + 5);
    }
    for (size_t i = 0; strncmp(scope, "channel:", 8) == 0 && channels[i] != NULL; i++) {
        if (strcmp(scope + 8, channels[i]) == 0)
            return PGW_OK;
    }
    return pgw_err_set(err, PGW_EINVAL,
                       "%s: \"%s\" is not shop:<id>, channel:<store|"
                       "wechat_mp|wechat_oa|sms>, finance or admin",
                       what, scope);
}

/* Whether one of the configuration's keys is called `name`. */
static bool key_named(const pgw_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_keys; i++) {
        if (strcmp(cfg->keys[i].name, name) == 0)
            return true;
    }
    return false;
}

int pgw_config_check_key_name(const pgw_config *cfg, const char *name, pgw_err *err)
{
    if (name[0] == '\0' || strlen(name) > PGW_ID_MAX || !id_chars(name))
        return pgw_err_set(err, PGW_EINVAL,
                           "--name \"%.64s\": 1..%d characters; it may only contain letters, "
                           "digits, '_' and '-'",
                           name, PGW_ID_MAX);
    if (key_named(cfg, name))
        return pgw_err_set(err, PGW_EINVAL, "a key named \"%s\" is in the configuration already",
                           name);
    return PGW_OK;
}

int pgw_config_check_scope(const pgw_config *cfg, const char *scope, pgw_err *err)
{
    /* keys add's --scope: a message naming the file's "key.scope" sent
     * the operator looking for a key in the configuration. */
    if (strlen(scope) > PGW_SCOPE_MAX)
        return pgw_err_set(err, PGW_EINVAL, "--scope: longer than %d bytes", PGW_SCOPE_MAX);
    return check_scope(scope, "--scope", &cfg->rules, err);
}

static int parse_hex32(const char *hex, uint8_t out[32])
{
    if (strlen(hex) != 64)
        return PGW_EINVAL;
    for (size_t i = 0; i < 64; i++) {
        char c = hex[i];
        int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (v < 0)
            return PGW_EINVAL;
        out[i / 2] = (uint8_t)(i % 2 == 0 ? v << 4 : out[i / 2] | v);
    }
    return PGW_OK;
}

static int parse_key(const json_t *obj, const char *path, pgw_config *cfg, pgw_key_config *k,
                     pgw_err *err)
{
    static const char *const keys[] = {
        "name", "scope", "key_sha256", "key_env", "require_signature", NULL};
    const char *hash = NULL;
    int rc = pgw_json_expect_object(obj, path, err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, path, keys, err);
    if (rc == PGW_OK)
        rc = get_id(obj, "name", path, true, k->name, sizeof(k->name), err);
    if (rc == PGW_OK && key_named(cfg, k->name))
        rc = pgw_err_set(err, PGW_EINVAL, "%s.name: duplicate key name \"%s\"", path, k->name);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "scope", path, true, PGW_SCOPE_MAX, k->scope, sizeof(k->scope),
                             err);
    char what[PGW_JSON_PATH_MAX];
    pgw_json_path_key(what, path, "scope");
    if (rc == PGW_OK)
        rc = check_scope(k->scope, what, &cfg->rules, err);
    if (rc == PGW_OK)
        rc = pgw_json_string_ref(obj, "key_sha256", path, false, 64, &hash, err);
    if (rc == PGW_OK && hash != NULL && parse_hex32(hash, k->key_sha256) != PGW_OK)
        rc = pgw_err_set(err, PGW_EINVAL, "%s.key_sha256: expected 64 lower-case hex digits", path);
    k->has_sha256 = hash != NULL;
    if (rc == PGW_OK)
        rc = get_env_name(obj, "key_env", path, false, k->key_env, sizeof(k->key_env), err);
    if (rc == PGW_OK && k->has_sha256 == (k->key_env[0] != '\0'))
        rc = pgw_err_set(err, PGW_EINVAL,
                         "%s: give exactly one of key_sha256 and key_env (a "
                         "clear key never goes in the file)",
                         path);
    /* Two keys with one secret: a request would be the last one's, and the
     * other never (a finance key's line over the admin's made it 403). */
    for (size_t i = 0; rc == PGW_OK && i < cfg->n_keys; i++) {
        const pgw_key_config *o = &cfg->keys[i];
        if ((k->has_sha256 && o->has_sha256 && memcmp(k->key_sha256, o->key_sha256, 32) == 0) ||
            (!k->has_sha256 && !o->has_sha256 && strcmp(k->key_env, o->key_env) == 0))
            rc = pgw_err_set(err, PGW_EINVAL, "%s: the same key as \"%s\"", path, o->name);
    }
    if (rc == PGW_OK)
        rc = pgw_json_bool(obj, "require_signature", path, false, &k->require_signature, err);
    return rc;
}

static int parse_keys(const json_t *root, pgw_config *cfg, pgw_err *err)
{
    json_t *list;
    int rc = get_array(root, "keys", "$", false, PGW_KEYS_MAX, &list, err);
    for (size_t i = 0; rc == PGW_OK && list != NULL && i < json_array_size(list); i++) {
        char path[PGW_JSON_PATH_MAX];
        pgw_json_path_index(path, "$.keys", i);
        rc = parse_key(json_array_get(list, i), path, cfg, &cfg->keys[i], err);
        if (rc == PGW_OK)
            cfg->n_keys++;
    }
    return rc;
}

/* ---- entry points -------------------------------------------------------- */

static int parse_root(const json_t *root, pgw_config *cfg, pgw_err *err)
{
    static const char *const keys[] = {
        "mall",       "listen", "db",       "expiry", "formats",  "shops", "tiers", "campaigns",
        "behaviours", "risk",   "channels", "notify", "security", "keys",  "http",  NULL};
    /* channels before notify: a route names only configured channels */
    int (*const sections[])(const json_t *, pgw_config *, pgw_err *) = {
        parse_mall,     parse_listen_db, parse_expiry,   parse_risk,
        parse_channels, parse_notify,    parse_security, parse_http,
    };
    int rc = pgw_json_expect_object(root, "$", err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(root, "$", keys, err);
    for (size_t i = 0; rc == PGW_OK && i < sizeof(sections) / sizeof(sections[0]); i++)
        rc = sections[i](root, cfg, err);
    if (rc == PGW_OK)
        rc = parse_formats(root, &cfg->rules, err);
    if (rc == PGW_OK)
        rc = parse_shops(root, &cfg->rules, err);
    if (rc == PGW_OK)
        rc = parse_tiers(root, &cfg->rules, err);
    if (rc == PGW_OK)
        rc = parse_campaigns(root, &cfg->rules, err);
    if (rc == PGW_OK)
        rc = parse_behaviours(root, &cfg->rules, err);
    if (rc == PGW_OK) /* parse_risk above filled cfg->risk */
        rc = check_awards_within_risk(cfg, err);
    if (rc == PGW_OK)
        rc = parse_keys(root, cfg, err);
    return rc;
}

int pgw_config_parse(const char *text, size_t len, const char *origin, pgw_config **out,
                     pgw_err *err)
{
    PGW_ASSERT(text != NULL && origin != NULL && out != NULL);
    *out = NULL;
    char name[PGW_CONFIG_NAME_MAX + 1];
    pgw_config_name(origin, name);
    /* A UTF-8 byte order mark, which Windows' Notepad writes at the start
     * of a file it saves: jansson refused the file at 1:1 naming an
     * invisible character. */
    size_t bom = pgw_utf8_bom(text, len);
    text += bom;
    len -= bom;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return pgw_err_set(err, PGW_EINVAL, "%s:%d:%d: invalid JSON: %s", name, jerr.line,
                           jerr.column, jerr.text);
    pgw_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        json_decref(root);
        return pgw_err_set(err, PGW_ENOMEM, "%s: out of memory", name);
    }
    snprintf(cfg->origin, sizeof(cfg->origin), "%s", name);
    int rc = parse_root(root, cfg, err);
    json_decref(root);
    if (rc != PGW_OK) {
        free(cfg);
        return pgw_err_prefix(err, "%s: ", name);
    }
    *out = cfg;
    return PGW_OK;
}

/* Of a long path, the bytes shown from its start; its end gets the rest
 * but the "...": the file's name and the folders nearest it, which tell
 * one configuration from another, more than its first folders do. */
#define NAME_HEAD 60

void pgw_config_name(const char *path, char out[PGW_CONFIG_NAME_MAX + 1])
{
    size_t len = strlen(path);
    if (len <= PGW_CONFIG_NAME_MAX) {
        memcpy(out, path, len + 1);
        return;
    }
    size_t head = pgw_utf8_prefix(path, NAME_HEAD);
    const char *tail = path + len - (PGW_CONFIG_NAME_MAX - NAME_HEAD - 3);
    while (((unsigned char)*tail & 0xC0) == 0x80) /* not in a character's bytes */
        tail++;
    snprintf(out, PGW_CONFIG_NAME_MAX + 1, "%.*s...%s", (int)head, path, tail);
}

int pgw_config_read(const char *path, char **text, size_t *len, pgw_err *err)
{
    *text = NULL;
    *len = 0;
    char name[PGW_CONFIG_NAME_MAX + 1];
    pgw_config_name(path, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return pgw_err_set(err, PGW_EIO, "%s: cannot open: %s", name, strerror(errno));
    char *buf = malloc(PGW_CONFIG_FILE_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        return pgw_err_set(err, PGW_ENOMEM, "%s: out of memory", name);
    }
    size_t n = fread(buf, 1, PGW_CONFIG_FILE_MAX + 1, f);
    bool failed = ferror(f) != 0;
    int why = errno; /* a folder: EISDIR, said as such (it was "read error") */
    fclose(f);
    int rc = PGW_OK;
    if (failed)
        rc = pgw_err_set(err, PGW_EIO, "%s: cannot read: %s", name, strerror(why ? why : EIO));
    else if (n > PGW_CONFIG_FILE_MAX)
        rc = pgw_err_set(err, PGW_EINVAL, "%s: larger than %d bytes", name, PGW_CONFIG_FILE_MAX);
    if (rc != PGW_OK) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return PGW_OK;
}

int pgw_config_load(const char *path, pgw_config **out, pgw_err *err)
{
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = pgw_config_read(path, &text, &len, err);
    if (rc == PGW_OK)
        rc = pgw_config_parse(text, len, path, out, err);
    free(text);
    return rc;
}

/* Adds `name` to the comma-separated list in out. */
static void list_add(char *out, size_t cap, const char *name)
{
    size_t used = strlen(out);
    snprintf(out + used, cap - used, "%s%s", used ? ", " : "", name);
}

int pgw_config_changed(const char *was, size_t was_len, const char *now, size_t now_len, char *out,
                       size_t cap, pgw_err *err)
{
    PGW_ASSERT(cap > 0);
    out[0] = '\0';
    json_error_t jerr;
    json_t *a = json_loadb(was, was_len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *b = json_loadb(now, now_len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = PGW_OK;
    if (!json_is_object(a) || !json_is_object(b)) {
        rc = pgw_err_set(err, PGW_EINVAL, "not a configuration: %s", jerr.text);
    } else {
        const char *name;
        json_t *value;
        /* Both ways (each name once): a section added or removed is a change too. */
        json_object_foreach(b, name, value)
        {
            if (strcmp(name, "keys") != 0 && !json_equal(value, json_object_get(a, name)))
                list_add(out, cap, name);
        }
        json_object_foreach(a, name, value)
        {
            if (strcmp(name, "keys") != 0 && json_object_get(b, name) == NULL)
                list_add(out, cap, name);
        }
    }
    json_decref(a);
    json_decref(b);
    return rc;
}

void pgw_config_free(pgw_config *cfg)
{
    free(cfg);
}

/* The expiry policy with what it uses alone: months mean nothing to
 * year_end, nor years to rolling, nor either to never. */
static void expiry_summary(const pgw_expiry *e, char *buf, size_t cap)
{
    switch (e->policy) {
    case PGW_EXPIRY_ROLLING:
        snprintf(buf, cap, "rolling (months %d)", (int)e->months);
        break;
    case PGW_EXPIRY_YEAR_END:
        snprintf(buf, cap, "year_end (years %d)", (int)e->years);
        break;
    default:
        PGW_ASSERT(e->policy == PGW_EXPIRY_NEVER);
        snprintf(buf, cap, "never");
        break;
    }
}

int pgw_config_summary(const pgw_config *cfg, char *buf, size_t cap)
{
    const pgw_rules *r = &cfg->rules;
    size_t kinds[N_CAMPAIGN_KINDS] = {0};
    for (size_t i = 0; i < r->n_campaigns; i++)
        kinds[r->campaigns[i].kind]++;
    char campaigns[256] = "";
    size_t used = 0;
    for (size_t k = 0; k < N_CAMPAIGN_KINDS; k++) {
        if (kinds[k] > 0 && used < sizeof(campaigns)) /* ":" before the first kind only */
            used += (size_t)snprintf(campaigns + used, sizeof(campaigns) - used, "%s %s=%zu",
                                     used == 0 ? ":" : "", CAMPAIGN_KINDS[k], kinds[k]);
    }
    char expiry[64];
    expiry_summary(&r->expiry, expiry, sizeof(expiry));
    char db[PGW_DB_URL_MAX + 1];
    pgw_redact_db_url(cfg->db, db, sizeof(db)); /* check-config's output may be pasted anywhere */
    /* The sign is the offset's: its hours' is "+0" for -00:30. */
    int32_t off = r->tz.offset_s < 0 ? -r->tz.offset_s : r->tz.offset_s;
    int n = snprintf(buf, cap,
                     "mall:       %s (%s, UTC%c%d:%02d)\n"
                     "shops:      %zu in %zu formats; %zu tiers\n"
                     "campaigns:  %zu%s\n"
                     "expiry:     %s\n"
                     "channels:   wechat_mp %s, wechat_oa %s, sms %s\n"
                     "keys:       %zu\n"
                     "database:   %s; listen %s\n",
                     cfg->mall_name, r->tz.name, r->tz.offset_s < 0 ? '-' : '+', (int)(off / 3600),
                     (int)(off % 3600 / 60), r->n_shops, r->n_formats, r->n_tiers, r->n_campaigns,
                     campaigns, expiry, cfg->wechat_mp.enabled ? "on" : "off",
                     cfg->wechat_oa.enabled ? "on" : "off",
                     cfg->sms.enabled ? cfg->sms.provider : "off", cfg->n_keys, db, cfg->listen);
    return (n < 0 || (size_t)n >= cap) ? PGW_ERANGE : PGW_OK;
}
