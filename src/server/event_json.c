/*
 * event_json.c - see event_json.h.
 */
#include "event_json.h"

#include "core/assertions.h"
#include "core/civil.h"
#include "core/text.h"
#include "core/utf8.h"
#include "store/store.h"
#include "util/json_read.h"

#include <stdio.h>
#include <stddef.h>
#include <string.h>

#define ITEM_QTY_MAX 100000

static const char *const EVENT_KEYS[] = {
    "event_id",   "channel", "shop_id",           "type",       "occurred_at", "member",
    "amount_fen", "items",   "original_event_id", "receipt_no", "referrer",    "points",
    NULL,
};

/* An event's values by key, as pgw_json_fields keeps them: EVENT_KEYS' order. */
enum event_field {
    F_EVENT_ID,
    F_CHANNEL,
    F_SHOP_ID,
    F_TYPE,
    F_OCCURRED_AT,
    F_MEMBER,
    F_AMOUNT_FEN,
    F_ITEMS,
    F_ORIGINAL_EVENT_ID,
    F_RECEIPT_NO,
    F_REFERRER,
    F_POINTS,
    N_EVENT_FIELDS
};
_Static_assert(sizeof(EVENT_KEYS) / sizeof(EVENT_KEYS[0]) == N_EVENT_FIELDS + 1,
               "a field for each key");

/* The member object's keys (API.md): exactly one identity, appid with openids. */
static const char *const MEMBER_KEYS[] = {
    "member_id", "phone", "card", "mp_openid", "oa_openid", "appid", "unionid", "email", NULL,
};
enum { N_MEMBER_FIELDS = sizeof(MEMBER_KEYS) / sizeof(MEMBER_KEYS[0]) - 1, F_APPID = 5 };

/* Refuses control characters: ids end up in logs, CSV exports and keys. */
static int check_printable(const char *s, const char *path, const char *key, pgw_err *err)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7F)
            return pgw_err_set(err, PGW_EINVAL, "%s.%s: contains a control character", path, key);
    }
    return PGW_OK;
}

/* Channel names are short lower-case words: "store", "wechat_mp" (and
 * part of an event's key: pgw_store_event_key). */
int pgw_event_check_channel(const char *s, const char *name, pgw_err *err)
{
    /* A query's value, decoded, may be any bytes: quoted, they would make
     * the refusal no JSON (an event's channel is UTF-8 already). */
    if (!pgw_utf8_valid(s))
        return pgw_err_set(err, PGW_EINVAL, "%s: not UTF-8, so not a channel name", name);
    if (!pgw_store_channel_name_ok(s))
        return pgw_err_set(err, PGW_EINVAL, "%s: \"%s\" is not a channel name", name, s);
    /* A name, and a channel reports and reconciliation read (the moves
     * already under it), but not one a client writes under. */
    if (strcmp(s, PGW_CHANNEL_SYSTEM) == 0)
        return pgw_err_set(err, PGW_EINVAL,
                           "%s: \"%s\" is the gateway's own channel (expiry, identity binds), "
                           "not a client's",
                           name, s);
    return PGW_OK;
}

/*
 * Reads a member object: exactly one identity; mp_openid and oa_openid need
 * appid, which nothing else takes. Normalised by pgw_identity_parse.
 */
int pgw_member_from_json(const json_t *obj, const char *path, const pgw_rules *rules,
                         pgw_identity *out, pgw_err *err)
{
    /* The values of the kinds it has, from its keys (one, as a rule): a
     * lookup of each kind hashed its name, six in vain, ~1,000
     * instructions an event (bench/RESULTS.md). */
    const json_t *fields[N_MEMBER_FIELDS];
    int rc = pgw_json_expect_object(obj, path, err);
    if (rc == PGW_OK)
        rc = pgw_json_fields(obj, path, MEMBER_KEYS, fields, err);
    if (rc != PGW_OK)
        return rc;
    /* The identities' kinds, in MEMBER_KEYS: all but appid. */
    static const size_t KINDS[] = {0, 1, 2, 3, 4, 6, 7};
    const char *kind = NULL;
    const char *value = NULL;
    for (size_t i = 0; i < sizeof(KINDS) / sizeof(KINDS[0]); i++) {
        const char *name = MEMBER_KEYS[KINDS[i]];
        if (fields[KINDS[i]] == NULL)
            continue;
        const char *v;
        rc = pgw_json_string_ref_of(fields[KINDS[i]], name, path, false, PGW_IDENTITY_TEXT_MAX, &v,
                                    err);
        if (rc != PGW_OK)
            return rc;
        if (v != NULL && kind != NULL)
            return pgw_err_set(err, PGW_EINVAL, "%s: names both %s and %s; give exactly one", path,
                               kind, name);
        if (v != NULL) {
            kind = name;
            value = v;
        }
    }
    if (kind == NULL)
        return pgw_err_set(err, PGW_EINVAL,
                           "%s: needs one of member_id, phone, card, mp_openid, oa_openid, "
                           "unionid, email",
                           path);
    const char *appid;
    rc = pgw_json_string_ref_of(fields[F_APPID], "appid", path, false, PGW_IDENTITY_TEXT_MAX,
                                &appid, err);
    if (rc != PGW_OK)
        return rc;
    bool openid = strcmp(kind, "mp_openid") == 0 || strcmp(kind, "oa_openid") == 0;
    if (openid != (appid != NULL))
        return pgw_err_set(err, PGW_EINVAL, "%s.appid: %s", path,
                           openid ? "required with an openid" : "only goes with an openid");
    char text[PGW_IDENTITY_TEXT_MAX * 2 + 32]; /* each part's bound: none is cut */
    if (openid)
        PGW_TEXT(text, sizeof(text), kind, ":", appid, ":", value);
    else
        PGW_TEXT(text, sizeof(text), kind, ":", value);
    rc = pgw_identity_parse(text, out, err);
    if (rc != PGW_OK) /* the field's path ("$.phone"), not its object's ("$") */
        return pgw_err_prefix(err, "%s.%s: ", path, kind);
    /* A card of no configured shop ("s001:C1", "S999:C1") named nobody
     * and enrolled a new member for each spelling. */
    if (out->kind == PGW_ID_CARD && pgw_rules_find_shop(rules, out->scope) < 0)
        return pgw_err_set(err, PGW_EINVAL,
                           "%s.card: \"%s\" is not a shop of the configuration (SHOP:NUMBER)", path,
                           out->scope);
    return PGW_OK;
}

static int item_from_json(const json_t *obj, const char *path, pgw_item *out, pgw_err *err)
{
    static const char *const keys[] = {"sku", "category", "amount_fen", "qty", NULL};
    int64_t qty = 1;
    *out = (pgw_item){0};
    int rc = pgw_json_expect_object(obj, path, err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, path, keys, err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "sku", path, true, PGW_ID_MAX, out->sku, sizeof(out->sku), err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "category", path, false, PGW_ID_MAX, out->category,
                             sizeof(out->category), err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "amount_fen", path, true, 0, PGW_AMOUNT_FEN_MAX, &out->amount_fen,
                          err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "qty", path, false, 1, ITEM_QTY_MAX, &qty, err);
    out->qty = (int32_t)qty;
    return rc;
}

/* Items are optional; their amounts may not add up to more than the receipt. */
static int items_from_json(const json_t *const *f, pgw_event_doc *out, pgw_err *err)
{
    const json_t *items = f[F_ITEMS];
    if (!pgw_json_given(items))
        return PGW_OK;
    if (!json_is_array(items))
        return pgw_err_set(err, PGW_EINVAL, "$.items: expected an array");
    if (json_array_size(items) > PGW_ITEMS_MAX)
        return pgw_err_set(err, PGW_EINVAL, "$.items: more than %d items", PGW_ITEMS_MAX);
    int64_t sum = 0;
    for (size_t i = 0; i < json_array_size(items); i++) {
        char path[PGW_JSON_PATH_MAX];
        pgw_json_path_index(path, "$.items", i);
        int rc = item_from_json(json_array_get(items, i), path, &out->items[i], err);
        if (rc != PGW_OK)
            return rc;
        sum += out->items[i].amount_fen; /* <= 200 * 10^11: cannot overflow */
    }
    if (sum > out->event.amount_fen)
        return pgw_err_set(err, PGW_EINVAL,
                           "$.items: item amounts add up to %lld fen, more than amount_fen %lld",
                           (long long)sum, (long long)out->event.amount_fen);
    out->event.n_items = json_array_size(items);
    out->event.items = out->items;
    return PGW_OK;
}

/* The common fields: ids, channel, type, time, member. */
static int header_from_json(const json_t *const *f, const pgw_rules *rules, pgw_event_doc *out,
                            pgw_err *err)
{
    const char *type = NULL;
    const char *when = NULL;
    int rc = pgw_json_string_of(f[F_EVENT_ID], "event_id", "$", true, PGW_EVENT_ID_MAX,
                                out->event_id, sizeof(out->event_id), err);
    if (rc == PGW_OK)
        rc = check_printable(out->event_id, "$", "event_id", err);
    if (rc == PGW_OK)
        rc = pgw_json_string_of(f[F_CHANNEL], "channel", "$", true, PGW_ID_MAX, out->channel,
                                sizeof(out->channel), err);
    if (rc == PGW_OK)
        rc = pgw_event_check_channel(out->channel, "$.channel", err);
    if (rc == PGW_OK)
        rc = pgw_json_string_ref_of(f[F_TYPE], "type", "$", true, PGW_ID_MAX, &type, err);
    if (rc == PGW_OK && pgw_event_type_parse(type, &out->event.type) != PGW_OK)
        rc = pgw_err_set(err, PGW_EINVAL, "$.type: unknown event type \"%s\"", type);
    if (rc == PGW_OK)
        rc = pgw_json_string_ref_of(f[F_OCCURRED_AT], "occurred_at", "$", true, 64, &when, err);
    if (rc == PGW_OK && pgw_parse_rfc3339(when, &out->event.occurred_at, err) != PGW_OK)
        rc = pgw_err_prefix(err, "$.occurred_at: ");
    /* Out of its range, "": years no event is taken in (pgw_event_command). */
    if (rc == PGW_OK &&
        pgw_format_rfc3339(out->event.occurred_at, &rules->tz, out->occurred_at_normal,
                           sizeof(out->occurred_at_normal)) != PGW_OK)
        out->occurred_at_normal[0] = '\0';
    if (rc == PGW_OK)
        rc = pgw_member_from_json(f[F_MEMBER], "$.member", rules, &out->member, err);
    return rc;
}

/* The shop: required for purchases and refunds, optional otherwise. */
static int shop_from_json(const json_t *const *f, const pgw_rules *rules, pgw_event_doc *out,
                          pgw_err *err)
{
    pgw_event_type type = out->event.type;
    bool needs_shop = type == PGW_EVENT_PURCHASE || type == PGW_EVENT_REFUND;
    int rc = pgw_json_string_of(f[F_SHOP_ID], "shop_id", "$", needs_shop, PGW_ID_MAX, out->shop_id,
                                sizeof(out->shop_id), err);
    if (rc != PGW_OK)
        return rc;
    out->event.shop = -1;
    if (out->shop_id[0] == '\0')
        return PGW_OK;
    out->event.shop = pgw_rules_find_shop(rules, out->shop_id);
    if (out->event.shop < 0)
        return pgw_err_set(err, PGW_EINVAL, "$.shop_id: unknown shop \"%s\"", out->shop_id);
    return PGW_OK;
}

/* The fields that only some types take, each required where its type needs it. */
static int typed_fields_from_json(const json_t *const *f, const pgw_rules *rules,
                                  pgw_event_doc *out, pgw_err *err)
{
    pgw_event_type type = out->event.type;
    bool money = type == PGW_EVENT_PURCHASE || type == PGW_EVENT_REFUND;
    int rc = pgw_json_int_of(f[F_AMOUNT_FEN], "amount_fen", "$", money, 1, PGW_AMOUNT_FEN_MAX,
                             &out->event.amount_fen, err);
    if (rc == PGW_OK && !money && pgw_json_given(f[F_AMOUNT_FEN]))
        rc = pgw_err_set(err, PGW_EINVAL, "$.amount_fen: not taken by %s events",
                         pgw_event_type_name(type));
    if (rc == PGW_OK)
        rc = pgw_json_string_of(f[F_ORIGINAL_EVENT_ID], "original_event_id", "$",
                                type == PGW_EVENT_REFUND, PGW_EVENT_ID_MAX, out->original_event_id,
                                sizeof(out->original_event_id), err);
    /* Ignored, it let a return mislabelled a purchase be credited. */
    if (rc == PGW_OK && type != PGW_EVENT_REFUND && pgw_json_given(f[F_ORIGINAL_EVENT_ID]))
        rc = pgw_err_set(err, PGW_EINVAL, "$.original_event_id: not taken by %s events",
                         pgw_event_type_name(type));
    if (rc == PGW_OK)
        rc = pgw_json_string_of(f[F_RECEIPT_NO], "receipt_no", "$", type == PGW_EVENT_REVIEW,
                                PGW_REFERENCE_MAX, out->receipt_no, sizeof(out->receipt_no), err);
    if (rc == PGW_OK)
        rc = pgw_json_int_of(f[F_POINTS], "points", "$", type == PGW_EVENT_CUSTOM, 1,
                             PGW_POINTS_MAX, &out->event.custom_points, err);
    if (rc == PGW_OK && type != PGW_EVENT_CUSTOM && pgw_json_given(f[F_POINTS]))
        rc = pgw_err_set(err, PGW_EINVAL, "$.points: only custom events give points directly");
    if (rc == PGW_OK && type == PGW_EVENT_REFERRAL) {
        out->has_referrer = true;
        rc = pgw_member_from_json(f[F_REFERRER], "$.referrer", rules, &out->referrer, err);
    }
    if (rc == PGW_OK && type != PGW_EVENT_REFERRAL && pgw_json_given(f[F_REFERRER]))
        rc = pgw_err_set(err, PGW_EINVAL, "$.referrer: only referral events name a referrer");
    return rc;
}

int pgw_event_from_json(const json_t *obj, const pgw_rules *rules, pgw_event_doc *out, pgw_err *err)
{
    PGW_ASSERT(rules != NULL && out != NULL);
    /* All but the 16 KB of items: each item read is filled whole. */
    memset(out, 0, offsetof(pgw_event_doc, items));
    memset(&out->event, 0, sizeof(out->event));
    /* Each value found once, as its key is checked: not hashed again for
     * each field read (bench/RESULTS.md). */
    const json_t *fields[N_EVENT_FIELDS];
    int rc = pgw_json_expect_object(obj, "$", err);
    if (rc == PGW_OK)
        rc = pgw_json_fields(obj, "$", EVENT_KEYS, fields, err);
    if (rc == PGW_OK)
        rc = header_from_json(fields, rules, out, err);
    if (rc == PGW_OK)
        rc = shop_from_json(fields, rules, out, err);
    if (rc == PGW_OK)
        rc = typed_fields_from_json(fields, rules, out, err);
    if (rc == PGW_OK)
        rc = items_from_json(fields, out, err);
    PGW_ASSERT(rc != PGW_OK || out->event.n_items <= PGW_ITEMS_MAX);
    return rc;
}

static int today_from_json(const json_t *obj, pgw_member_ctx_doc *out, pgw_err *err)
{
    json_t *today = json_object_get(obj, "today");
    if (!pgw_json_has(obj, "today"))
        return PGW_OK;
    int rc = pgw_json_expect_object(today, "$.today", err);
    if (rc != PGW_OK)
        return rc;
    if (json_object_size(today) > PGW_CTX_TODAY_MAX)
        return pgw_err_set(err, PGW_EINVAL, "$.today: more than %d rules", PGW_CTX_TODAY_MAX);
    const char *rule;
    json_t *value;
    size_t n = 0;
    json_object_foreach(today, rule, value)
    {
        if (strlen(rule) == 0 || strlen(rule) > PGW_RULE_MAX)
            return pgw_err_set(err, PGW_EINVAL, "$.today: rule name of 1..%d bytes expected",
                               PGW_RULE_MAX);
        memcpy(out->today[n].rule, rule, strlen(rule) + 1);
        rc = pgw_json_int(today, rule, "$.today", true, 0, PGW_POINTS_MAX, &out->today[n].points,
                          err);
        if (rc != PGW_OK)
            return rc;
        n++;
    }
    out->ctx.today = out->today;
    out->ctx.n_today = n;
    return PGW_OK;
}

/* "challenges": {"<campaign id>": {"purchases": N, "spend_fen": S}}: the
 * own months of challenges with shops or formats (rules.h). */
static int challenges_from_json(const json_t *obj, pgw_member_ctx_doc *out, pgw_err *err)
{
    static const char *const keys[] = {"purchases", "spend_fen", NULL};
    json_t *all = json_object_get(obj, "challenges");
    if (!pgw_json_has(obj, "challenges"))
        return PGW_OK;
    int rc = pgw_json_expect_object(all, "$.challenges", err);
    if (rc == PGW_OK && json_object_size(all) > PGW_CAMPAIGNS_MAX)
        rc =
            pgw_err_set(err, PGW_EINVAL, "$.challenges: more than %d campaigns", PGW_CAMPAIGNS_MAX);
    const char *id;
    json_t *value;
    size_t n = 0;
    json_object_foreach(all, id, value)
    {
        if (rc != PGW_OK)
            return rc;
        if (strlen(id) == 0 || strlen(id) > PGW_ID_MAX)
            return pgw_err_set(err, PGW_EINVAL, "$.challenges: campaign id of 1..%d bytes expected",
                               PGW_ID_MAX);
        char path[PGW_ID_MAX + 16];
        snprintf(path, sizeof(path), "$.challenges.%s", id);
        pgw_challenge_month *m = &out->challenges[n++];
        memcpy(m->campaign, id, strlen(id) + 1);
        rc = pgw_json_expect_object(value, path, err);
        if (rc == PGW_OK)
            rc = pgw_json_only_keys(value, path, keys, err);
        if (rc == PGW_OK)
            rc = pgw_json_int(value, "purchases", path, false, 0, 1000000, &m->purchases, err);
        if (rc == PGW_OK)
            rc = pgw_json_int(value, "spend_fen", path, false, 0, PGW_AMOUNT_FEN_MAX * 1000,
                              &m->spend_fen, err);
    }
    out->ctx.challenges = out->challenges;
    out->ctx.n_challenges = n;
    return rc;
}

static int dates_from_json(const json_t *obj, pgw_member_ctx *ctx, pgw_err *err)
{
    const char *text;
    int rc = pgw_json_string_ref(obj, "birthday", "$", false, 5, &text, err);
    if (rc == PGW_OK && text != NULL) {
        ctx->has_birthday = true;
        rc = pgw_parse_month_day(text, &ctx->birth_month, &ctx->birth_day, err);
        if (rc != PGW_OK)
            return pgw_err_prefix(err, "$.birthday: ");
    }
    if (rc == PGW_OK)
        rc = pgw_json_string_ref(obj, "last_sign_in", "$", false, 10, &text, err);
    if (rc == PGW_OK && text != NULL) {
        ctx->has_last_sign_in = true;
        ctx->sign_in_streak = 1;
        rc = pgw_parse_date(text, &ctx->last_sign_in, err);
        if (rc != PGW_OK)
            return pgw_err_prefix(err, "$.last_sign_in: ");
    }
    return rc;
}

int pgw_member_ctx_from_json(const json_t *obj, pgw_member_ctx_doc *out, pgw_err *err)
{
    static const char *const keys[] = {
        "spend_12m_fen",   "month_purchases", "month_spend_fen",
        "first_purchase",  "birthday",        "registered_before",
        "followed_before", "last_sign_in",    "sign_in_streak",
        "today",           "challenges",      NULL,
    };
    memset(out, 0, sizeof(*out));
    out->ctx.first_purchase = true; /* a new member, unless told otherwise */
    if (obj == NULL)
        return PGW_OK;
    int64_t streak = 0;
    int rc = pgw_json_expect_object(obj, "$", err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, "$", keys, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "spend_12m_fen", "$", false, -PGW_AMOUNT_FEN_MAX * 1000,
                          PGW_AMOUNT_FEN_MAX * 1000, &out->ctx.spend_12m_fen, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "month_purchases", "$", false, 0, 1000000, &out->ctx.month_purchases,
                          err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "month_spend_fen", "$", false, 0, PGW_AMOUNT_FEN_MAX * 1000,
                          &out->ctx.month_spend_fen, err);
    if (rc == PGW_OK)
        rc = pgw_json_bool(obj, "first_purchase", "$", false, &out->ctx.first_purchase, err);
    if (rc == PGW_OK)
        rc = pgw_json_bool(obj, "registered_before", "$", false, &out->ctx.registered_before, err);
    if (rc == PGW_OK)
        rc = pgw_json_bool(obj, "followed_before", "$", false, &out->ctx.followed_before, err);
    if (rc == PGW_OK)
        rc = dates_from_json(obj, &out->ctx, err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "sign_in_streak", "$", false, 1, 100000, &streak, err);
    if (rc == PGW_OK && streak > 0 && !out->ctx.has_last_sign_in)
        rc = pgw_err_set(err, PGW_EINVAL, "$.sign_in_streak: needs last_sign_in");
    if (rc == PGW_OK && streak > 0)
        out->ctx.sign_in_streak = (int32_t)streak;
    if (rc == PGW_OK)
        rc = today_from_json(obj, out, err);
    if (rc == PGW_OK)
        rc = challenges_from_json(obj, out, err);
    return rc;
}

void pgw_earning_write(pgw_json_out *o, const pgw_rules *rules, const pgw_event_doc *doc,
                       const pgw_earning *earning, int64_t points)
{
    pgw_json_out_key_string(o, "event_id", doc->event_id);
    pgw_json_out_key_string(o, "type", pgw_event_type_name(doc->event.type));
    pgw_json_out_key_int(o, "points", points);
    pgw_json_out_key(o, "breakdown");
    pgw_json_out_begin_array(o);
    for (size_t i = 0; i < earning->n_lines; i++) {
        const pgw_breakdown_line *line = &earning->lines[i];
        pgw_json_out_begin_object(o);
        pgw_json_out_key_string(o, "rule", line->rule);
        pgw_json_out_key_int(o, "points", line->points);
        pgw_json_out_key_string(o, "funded_by", line->funded_by);
        if (line->beneficiary == PGW_BENEFICIARY_REFERRER)
            pgw_json_out_key_string(o, "beneficiary", "referrer");
        pgw_json_out_end_object(o);
    }
    pgw_json_out_end_array(o);
    if (earning->referrer_points > 0)
        pgw_json_out_key_int(o, "referrer_points", earning->referrer_points);
    if (earning->tier >= 0 && (size_t)earning->tier < rules->n_tiers) {
        pgw_json_out_key_string(o, "tier", rules->tiers[earning->tier].name);
    } else if (rules->n_tiers == 0) { /* no member has one: null, as GET /v1/members/{id} says */
        pgw_json_out_key(o, "tier");
        pgw_json_out_null(o);
    }
    if (doc->event.type == PGW_EVENT_SIGN_IN)
        pgw_json_out_key_int(o, "sign_in_streak", earning->sign_in_streak);
    if (earning->reason[0] != '\0')
        pgw_json_out_key_string(o, "reason", earning->reason);
}
