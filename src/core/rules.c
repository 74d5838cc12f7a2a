/*
 * rules.c - see rules.h; its top comment is the specification.
 *
 * pgw_rules_earn() builds the answer line by line into a caller-provided
 * struct: no allocation. Each step is its own function reading one piece
 * of the model, so a rule can be read (and tested) on one screen.
 */
#include "rules.h"

#include "arith.h"
#include "assertions.h"
#include "text.h"

#include <stdio.h>
#include <string.h>

static const char *const EVENT_TYPE_NAMES[] = {
    [PGW_EVENT_PURCHASE] = "purchase", [PGW_EVENT_REFUND] = "refund",
    [PGW_EVENT_REGISTER] = "register", [PGW_EVENT_SIGN_IN] = "sign_in",
    [PGW_EVENT_REVIEW] = "review",     [PGW_EVENT_SHARE] = "share",
    [PGW_EVENT_REFERRAL] = "referral", [PGW_EVENT_FOLLOW_OA] = "follow_oa",
    [PGW_EVENT_SURVEY] = "survey",     [PGW_EVENT_CUSTOM] = "custom",
};
#define N_EVENT_TYPES (sizeof(EVENT_TYPE_NAMES) / sizeof(EVENT_TYPE_NAMES[0]))

int pgw_event_type_parse(const char *name, pgw_event_type *out)
{
    for (size_t i = 0; i < N_EVENT_TYPES; i++) {
        if (strcmp(EVENT_TYPE_NAMES[i], name) == 0) {
            *out = (pgw_event_type)i;
            return PGW_OK;
        }
    }
    return PGW_EINVAL;
}

const char *pgw_event_type_name(pgw_event_type type)
{
    PGW_ASSERT((size_t)type < N_EVENT_TYPES);
    return EVENT_TYPE_NAMES[type];
}

int32_t pgw_rules_find_shop(const pgw_rules *rules, const char *id)
{
    for (size_t i = 0; i < rules->n_shops; i++) {
        if (strcmp(rules->shops[i].id, id) == 0)
            return (int32_t)i;
    }
    return -1;
}

int64_t pgw_rules_fen_per_point(const pgw_rules *rules, int32_t shop)
{
    PGW_ASSERT(shop >= 0 && (size_t)shop < rules->n_shops);
    const pgw_shop *s = &rules->shops[shop];
    if (s->fen_per_point > 0)
        return s->fen_per_point;
    PGW_ASSERT(s->format >= 0 && (size_t)s->format < rules->n_formats);
    int64_t fpp = rules->formats[s->format].fen_per_point;
    PGW_ASSERT(fpp >= 1);
    return fpp;
}

int32_t pgw_rules_tier_for_spend(const pgw_rules *rules, int64_t spend_12m_fen)
{
    int32_t tier = -1;
    for (size_t i = 0; i < rules->n_tiers; i++) {
        if (rules->tiers[i].min_spend_fen_12m <= spend_12m_fen)
            tier = (int32_t)i;
    }
    /* The first tier starts at 0, so a member with no (or negative) spend is in it. */
    return (tier < 0 && rules->n_tiers > 0) ? 0 : tier;
}

/* Everything one computation needs, passed to each step. */
typedef struct earn_state {
    const pgw_rules *rules;
    const pgw_event *event;
    const pgw_member_ctx *ctx;
    pgw_date today; /* local date of the event */
    int64_t fen_per_point;
    int64_t base;
    pgw_earning *out;
    pgw_err *err;
} earn_state;

static void set_reason(earn_state *st, const char *reason)
{
    if (st->out->reason[0] == '\0')
        PGW_TEXT(st->out->reason, sizeof(st->out->reason), reason);
}

static void name_funder(earn_state *st, pgw_funder funder, pgw_breakdown_line *line)
{
    const char *shop = st->event->shop >= 0 ? st->rules->shops[st->event->shop].id : "";
    switch (funder) {
    case PGW_FUND_SHOP:
        PGW_ASSERT(shop[0] != '\0');
        PGW_TEXT(line->funded_by, sizeof(line->funded_by), "shop:", shop);
        PGW_TEXT(line->debit, sizeof(line->debit), "shop:", shop, ":issued");
        return;
    case PGW_FUND_MALL_CAMPAIGN:
        PGW_TEXT(line->funded_by, sizeof(line->funded_by), "mall:campaigns");
        break;
    case PGW_FUND_MALL_BEHAVIOUR:
        PGW_TEXT(line->funded_by, sizeof(line->funded_by), "mall:behaviour");
        break;
    case PGW_FUND_ADJUSTMENT:
        PGW_TEXT(line->funded_by, sizeof(line->funded_by), "system:adjustments");
        break;
    }
    memcpy(line->debit, line->funded_by, sizeof(line->debit));
}

/* Appends a breakdown line (nothing for 0 points) and adds it to its total. */
static int add_line(earn_state *st, const char *rule, int64_t points, pgw_funder funder,
                    pgw_beneficiary beneficiary, bool day_counted)
{
    PGW_ASSERT(points >= 0);
    if (points == 0)
        return PGW_OK;
    pgw_earning *out = st->out;
    PGW_ASSERT(out->n_lines < PGW_BREAKDOWN_MAX);
    pgw_breakdown_line *line = &out->lines[out->n_lines];
    PGW_TEXT(line->rule, sizeof(line->rule), rule);
    line->points = points;
    line->funder = funder;
    line->beneficiary = beneficiary;
    line->day_counted = day_counted;
    name_funder(st, funder, line);
    int64_t *total = beneficiary == PGW_BENEFICIARY_MEMBER ? &out->points : &out->referrer_points;
    if (pgw_add(*total, points, total) != PGW_OK || *total > PGW_POINTS_MAX)
        return pgw_err_set(st->err, PGW_ERANGE, "event earns more than %lld points",
                           (long long)PGW_POINTS_MAX);
    out->n_lines++;
    return PGW_OK;
}

/* Points the member already earned today under `rule`. */
static int64_t earned_today(const pgw_member_ctx *ctx, const char *rule)
{
    int64_t sum = 0;
    for (size_t i = 0; i < ctx->n_today; i++) {
        if (strcmp(ctx->today[i].rule, rule) == 0 && ctx->today[i].points > 0)
            sum = pgw_min64(sum + pgw_min64(ctx->today[i].points, PGW_POINTS_MAX), PGW_POINTS_MAX);
    }
    return sum;
}

/* Limits `points` to what is left of a daily cap (0 = no cap). */
static int64_t cap_points(earn_state *st, const char *rule, int64_t cap, int64_t points)
{
    if (cap <= 0 || points == 0)
        return points;
    if (st->ctx->today_unknown) { /* the caller reads today's points and prices again */
        st->out->needs_today = true;
        return pgw_min64(points, cap); /* no more than with them: no limit it would pass fails */
    }
    return pgw_min64(points, pgw_max64(0, cap - earned_today(st->ctx, rule)));
}

/* Why the member got less: a daily cap cut `rule`'s points. Not said while
 * today's points are unread: the pricing with them says it. */
static void cap_reason(earn_state *st, const char *rule)
{
    if (st->ctx->today_unknown)
        return;
    char reason[PGW_NAME_MAX + 1];
    snprintf(reason, sizeof(reason), "daily cap of %s reached", rule);
    set_reason(st, reason);
}

/* cap_points, noting why when the cap cut them. */
static int64_t apply_daily_cap(earn_state *st, const char *rule, int64_t cap, int64_t points)
{
    int64_t capped = cap_points(st, rule, cap, points);
    if (capped < points)
        cap_reason(st, rule);
    return capped;
}

/* floor(points * (multiplier - 1x)): the extra a multiplier adds. */
static int extra_for_multiplier(earn_state *st, int64_t points, int64_t multiplier_bp, int64_t *out)
{
    if (multiplier_bp <= PGW_BP_ONE) {
        *out = 0;
        return PGW_OK;
    }
    if (pgw_mul_bp(points, multiplier_bp - PGW_BP_ONE, out) != PGW_OK)
        return pgw_err_set(st->err, PGW_ERANGE, "multiplier overflows on %lld points",
                           (long long)points);
    return PGW_OK;
}

static int validate_purchase(const pgw_rules *rules, const pgw_event *event, pgw_err *err)
{
    if (event->shop < 0 || (size_t)event->shop >= rules->n_shops)
        return pgw_err_set(err, PGW_EINVAL, "a purchase needs a known shop");
    if (event->amount_fen < 1 || event->amount_fen > PGW_AMOUNT_FEN_MAX)
        return pgw_err_set(err, PGW_EINVAL, "amount_fen must be 1..%lld, got %lld",
                           (long long)PGW_AMOUNT_FEN_MAX, (long long)event->amount_fen);
    if (event->n_items > PGW_ITEMS_MAX || (event->n_items > 0 && event->items == NULL))
        return pgw_err_set(err, PGW_EINVAL, "at most %d items", PGW_ITEMS_MAX);
    for (size_t i = 0; i < event->n_items; i++) {
        const pgw_item *item = &event->items[i];
        if (item->amount_fen < 0 || item->amount_fen > PGW_AMOUNT_FEN_MAX || item->qty < 1)
            return pgw_err_set(err, PGW_EINVAL, "item %zu: amount_fen 0..%lld and qty >= 1", i,
                               (long long)PGW_AMOUNT_FEN_MAX);
    }
    return PGW_OK;
}

static int base_and_tier(earn_state *st)
{
    const pgw_rules *rules = st->rules;
    const pgw_shop *shop = &rules->shops[st->event->shop];
    char rule[PGW_RULE_MAX + 1];
    st->fen_per_point = pgw_rules_fen_per_point(rules, st->event->shop);
    st->base = st->event->amount_fen / st->fen_per_point;
    if (shop->fen_per_point > 0)
        PGW_TEXT(rule, sizeof(rule), "shop:", shop->id);
    else
        PGW_TEXT(rule, sizeof(rule), "format:", rules->formats[shop->format].name);
    int rc = add_line(st, rule, st->base, PGW_FUND_SHOP, PGW_BENEFICIARY_MEMBER, false);
    st->out->tier = pgw_rules_tier_for_spend(rules, st->ctx->spend_12m_fen);
    if (rc != PGW_OK || st->out->tier < 0)
        return rc;
    const pgw_tier *tier = &rules->tiers[st->out->tier];
    int64_t extra = 0;
    rc = extra_for_multiplier(st, st->base, tier->multiplier_bp, &extra);
    if (rc != PGW_OK)
        return rc;
    PGW_TEXT(rule, sizeof(rule), "tier:", tier->name);
    return add_line(st, rule, extra, PGW_FUND_MALL_CAMPAIGN, PGW_BENEFICIARY_MEMBER, false);
}

/* true when the campaign's shop and format filters admit the event's shop. */
static bool campaign_covers_shop(const pgw_campaign *c, const pgw_rules *rules, int32_t shop)
{
    bool shop_ok = c->n_shops == 0;
    for (size_t i = 0; i < c->n_shops && !shop_ok; i++)
        shop_ok = c->shops[i] == shop;
    bool format_ok = c->n_formats == 0;
    for (size_t i = 0; i < c->n_formats && !format_ok; i++)
        format_ok = c->formats[i] == rules->shops[shop].format;
    return shop_ok && format_ok;
}

bool pgw_rules_challenge_own_month(const pgw_rules *rules, size_t campaign, int32_t shop)
{
    PGW_ASSERT(campaign < rules->n_campaigns);
    PGW_ASSERT(shop >= 0 && (size_t)shop < rules->n_shops);
    const pgw_campaign *c = &rules->campaigns[campaign];
    return c->kind == PGW_CAMPAIGN_CHALLENGE && (c->n_shops > 0 || c->n_formats > 0) &&
           campaign_covers_shop(c, rules, shop);
}

static bool is_birthday(const pgw_campaign *c, const pgw_member_ctx *ctx, pgw_date today)
{
    if (!ctx->has_birthday || today.month != ctx->birth_month)
        return false;
    if (c->birthday_whole_month || today.day == ctx->birth_day)
        return true;
    /* A 29 February birthday is celebrated on the 28th in common years. */
    return ctx->birth_month == 2 && ctx->birth_day == 29 && today.day == 28 &&
           !pgw_is_leap_year(today.year);
}

/* Whether a date-driven campaign (weekday, monthday, birthday, range) is on today. */
static bool date_campaign_on(const pgw_campaign *c, const earn_state *st)
{
    switch (c->kind) {
    case PGW_CAMPAIGN_WEEKDAY:
        return pgw_weekday(st->today) == c->weekday;
    case PGW_CAMPAIGN_MONTHDAY:
        return st->today.day == c->monthday;
    case PGW_CAMPAIGN_BIRTHDAY:
        return is_birthday(c, st->ctx, st->today);
    case PGW_CAMPAIGN_DATE_RANGE:
        return pgw_date_cmp(c->from, st->today) <= 0 && pgw_date_cmp(st->today, c->to) <= 0;
    default:
        return false;
    }
}

static bool item_matches(const pgw_campaign *c, const pgw_item *item)
{
    if (c->kind == PGW_CAMPAIGN_SKU) {
        for (size_t i = 0; i < c->n_skus; i++) {
            if (strcmp(c->skus[i], item->sku) == 0)
                return true;
        }
        return false;
    }
    for (size_t i = 0; i < c->n_categories; i++) {
        if (strcmp(c->categories[i], item->category) == 0)
            return true;
    }
    return false;
}

/* SKU and category campaigns: each matching item's own points, multiplied. */
static int item_campaign_extra(earn_state *st, const pgw_campaign *c, int64_t *out)
{
    int64_t sum = 0;
    for (size_t i = 0; i < st->event->n_items; i++) {
        const pgw_item *item = &st->event->items[i];
        if (!item_matches(c, item))
            continue;
        int64_t extra = 0;
        int rc = extra_for_multiplier(st, item->amount_fen / st->fen_per_point, c->multiplier_bp,
                                      &extra);
        if (rc != PGW_OK)
            return rc;
        if (pgw_add(sum, extra, &sum) != PGW_OK)
            return pgw_err_set(st->err, PGW_ERANGE, "campaign %s overflows", c->id);
    }
    *out = sum;
    return PGW_OK;
}

static int bracket_extra(earn_state *st, const pgw_campaign *c, int64_t *out)
{
    *out = 0;
    for (size_t i = 0; i < c->n_brackets; i++) {
        const pgw_bracket *b = &c->brackets[i];
        if (st->event->amount_fen < b->min_fen || st->event->amount_fen > b->max_fen)
            continue;
        if (b->bonus_points > 0) {
            *out = b->bonus_points;
            return PGW_OK;
        }
        return extra_for_multiplier(st, st->base, b->multiplier_bp, out);
    }
    return PGW_OK;
}

/* The month a challenge counts before this purchase: its own (shops or
 * formats: only what it covers; none listed, nothing yet), else the
 * member's whole month. */
static void challenge_month(const earn_state *st, size_t index, int64_t *purchases,
                            int64_t *spend_fen)
{
    const pgw_member_ctx *ctx = st->ctx;
    *purchases = ctx->month_purchases;
    *spend_fen = ctx->month_spend_fen;
    if (!pgw_rules_challenge_own_month(st->rules, index, st->event->shop))
        return;
    *purchases = *spend_fen = 0;
    PGW_ASSERT(ctx->n_challenges == 0 || ctx->challenges != NULL);
    for (size_t i = 0; i < ctx->n_challenges; i++) {
        if (strcmp(ctx->challenges[i].campaign, st->rules->campaigns[index].id) == 0) {
            *purchases = ctx->challenges[i].purchases;
            *spend_fen = ctx->challenges[i].spend_fen;
            return;
        }
    }
}

/* The challenge pays once: on the purchase that first reaches its threshold. */
static int challenge_extra(earn_state *st, const pgw_campaign *c, int64_t *out)
{
    const pgw_member_ctx *ctx = st->ctx;
    size_t index = (size_t)(c - st->rules->campaigns);
    PGW_ASSERT(index < st->rules->n_campaigns);
    int64_t purchases = 0, spend_fen = 0;
    challenge_month(st, index, &purchases, &spend_fen);
    bool crossed;
    if (c->min_purchases > 0) {
        crossed = purchases < c->min_purchases && c->min_purchases <= purchases + 1;
    } else {
        int64_t after;
        if (pgw_add(spend_fen, st->event->amount_fen, &after) != PGW_OK)
            return pgw_err_set(st->err, PGW_ERANGE, "monthly spend overflows");
        crossed = spend_fen < c->min_spend_fen && c->min_spend_fen <= after;
    }
    *out = crossed && !ctx->challenge_paid[index] ? c->bonus_points : 0;
    return PGW_OK;
}

/* A campaign's extra points for this purchase, before caps and stacking. */
static int campaign_extra(earn_state *st, const pgw_campaign *c, int64_t *out)
{
    *out = 0;
    if (!campaign_covers_shop(c, st->rules, st->event->shop))
        return PGW_OK;
    switch (c->kind) {
    case PGW_CAMPAIGN_SKU:
    case PGW_CAMPAIGN_CATEGORY:
        return item_campaign_extra(st, c, out);
    case PGW_CAMPAIGN_BRACKETS:
        return bracket_extra(st, c, out);
    case PGW_CAMPAIGN_CHALLENGE:
        return challenge_extra(st, c, out);
    default:
        if (!date_campaign_on(c, st))
            return PGW_OK;
        return extra_for_multiplier(st, st->base, c->multiplier_bp, out);
    }
}

/*
 * A cut campaign is the reason the member got less when it is added
 * (PGW_STACK_ADD), or when uncut it would have beaten the winner: a
 * "max" campaign that loses either way cost nothing.
 */
static void campaign_cap_reasons(earn_state *st, const int64_t *uncut, const int64_t *extras,
                                 int32_t best)
{
    int64_t won = best >= 0 ? extras[best] : 0;
    for (size_t i = 0; i < st->rules->n_campaigns; i++) {
        const pgw_campaign *c = &st->rules->campaigns[i];
        if (extras[i] < uncut[i] && (c->stacking == PGW_STACK_ADD || uncut[i] > won)) {
            char rule[PGW_RULE_MAX + 1];
            snprintf(rule, sizeof(rule), "campaign:%s", c->id);
            cap_reason(st, rule);
        }
    }
}

/*
 * Every campaign's capped extra; then the PGW_STACK_MAX ones compete (the
 * largest wins, the first on a tie) and the PGW_STACK_ADD ones all count.
 * Lines are emitted in configuration order.
 */
static int campaigns(earn_state *st)
{
    const pgw_rules *rules = st->rules;
    int64_t uncut[PGW_CAMPAIGNS_MAX], extras[PGW_CAMPAIGNS_MAX];
    int32_t best = -1;
    /* A rule's name is made only for a campaign that pays: each purchase
     * passes every campaign, most of which pay nothing. */
    char rule[PGW_RULE_MAX + 1];
    for (size_t i = 0; i < rules->n_campaigns; i++) {
        const pgw_campaign *c = &rules->campaigns[i];
        int rc = campaign_extra(st, c, &uncut[i]);
        if (rc != PGW_OK)
            return rc;
        extras[i] = uncut[i];
        if (extras[i] > 0 && c->daily_cap > 0) {
            snprintf(rule, sizeof(rule), "campaign:%s", c->id);
            extras[i] = cap_points(st, rule, c->daily_cap, extras[i]);
        }
        if (c->stacking == PGW_STACK_MAX && extras[i] > 0 && (best < 0 || extras[i] > extras[best]))
            best = (int32_t)i;
    }
    campaign_cap_reasons(st, uncut, extras, best);
    for (size_t i = 0; i < rules->n_campaigns; i++) {
        const pgw_campaign *c = &rules->campaigns[i];
        if (extras[i] == 0 || (c->stacking == PGW_STACK_MAX && (int32_t)i != best))
            continue;
        snprintf(rule, sizeof(rule), "campaign:%s", c->id);
        pgw_funder funder = c->funded_by == PGW_FUND_SHOP ? PGW_FUND_SHOP : PGW_FUND_MALL_CAMPAIGN;
        int rc = add_line(st, rule, extras[i], funder, PGW_BENEFICIARY_MEMBER, true);
        if (rc != PGW_OK)
            return rc;
    }
    return PGW_OK;
}

static int earn_purchase(earn_state *st)
{
    int rc = validate_purchase(st->rules, st->event, st->err);
    if (rc == PGW_OK)
        rc = base_and_tier(st);
    if (rc == PGW_OK)
        rc = campaigns(st);
    const pgw_behaviour *first = &st->rules->behaviours.first_purchase;
    if (rc == PGW_OK && first->enabled && st->ctx->first_purchase) {
        int64_t points =
            apply_daily_cap(st, "behaviour:first_purchase", first->daily_cap, first->points);
        rc = add_line(st, "behaviour:first_purchase", points, PGW_FUND_MALL_BEHAVIOUR,
                      PGW_BENEFICIARY_MEMBER, true);
    }
    if (rc == PGW_OK && st->out->points == 0)
        set_reason(st, "amount is below one point at this shop's rate");
    return rc;
}

/* A plain behaviour: its points, within its daily cap, funded by the mall. */
static int earn_behaviour(earn_state *st, const char *name, const pgw_behaviour *b,
                          pgw_beneficiary beneficiary)
{
    char rule[PGW_RULE_MAX + 1];
    snprintf(rule, sizeof(rule), "behaviour:%s", name);
    if (!b->enabled || b->points == 0) {
        char reason[PGW_NAME_MAX + 1];
        snprintf(reason, sizeof(reason), "%s earns no points in this configuration", name);
        set_reason(st, reason);
        return PGW_OK;
    }
    int64_t points = apply_daily_cap(st, rule, b->daily_cap, b->points);
    return add_line(st, rule, points, PGW_FUND_MALL_BEHAVIOUR, beneficiary, true);
}

static int earn_sign_in(earn_state *st)
{
    const pgw_member_ctx *ctx = st->ctx;
    const pgw_behaviours *bs = &st->rules->behaviours;
    pgw_date yesterday;
    int later = ctx->has_last_sign_in ? pgw_date_cmp(ctx->last_sign_in, st->today) : -1;
    if (later >= 0) { /* a backlog's sign-in for a day before the last one: the streak is past */
        st->out->sign_in_streak = ctx->sign_in_streak;
        set_reason(st, later == 0 ? PGW_REASON_SIGNED_IN_TODAY : PGW_REASON_SIGNED_IN_LATER);
        return PGW_OK;
    }
    bool continues = ctx->has_last_sign_in &&
                     pgw_date_add_days(st->today, -1, &yesterday) == PGW_OK &&
                     pgw_date_cmp(ctx->last_sign_in, yesterday) == 0;
    int32_t streak = continues ? ctx->sign_in_streak + 1 : 1;
    st->out->sign_in_streak = streak;
    int rc = earn_behaviour(st, "sign_in", &bs->sign_in, PGW_BENEFICIARY_MEMBER);
    for (size_t i = 0; rc == PGW_OK && bs->sign_in.enabled && i < bs->n_streaks; i++) {
        if (streak % bs->streaks[i].days != 0)
            continue;
        char rule[PGW_RULE_MAX + 1];
        snprintf(rule, sizeof(rule), "behaviour:sign_in_streak_%d", (int)bs->streaks[i].days);
        rc = add_line(st, rule, bs->streaks[i].bonus_points, PGW_FUND_MALL_BEHAVIOUR,
                      PGW_BENEFICIARY_MEMBER, true);
    }
    return rc;
}

static int earn_once(earn_state *st, const char *name, const pgw_behaviour *b, bool done_before)
{
    if (done_before) {
        char reason[PGW_NAME_MAX + 1];
        snprintf(reason, sizeof(reason), "%s bonus already given", name);
        set_reason(st, reason);
        return PGW_OK;
    }
    return earn_behaviour(st, name, b, PGW_BENEFICIARY_MEMBER);
}

static int earn_referral(earn_state *st)
{
    const pgw_behaviours *bs = &st->rules->behaviours;
    int rc = earn_behaviour(st, "referral", &bs->referral, PGW_BENEFICIARY_MEMBER);
    if (rc == PGW_OK && bs->referral.enabled)
        rc = add_line(st, "behaviour:referral", bs->referral_referrer_points,
                      PGW_FUND_MALL_BEHAVIOUR, PGW_BENEFICIARY_REFERRER, true);
    return rc;
}

static int earn_custom(earn_state *st)
{
    int64_t points = st->event->custom_points;
    if (points < 1 || points > PGW_POINTS_MAX)
        return pgw_err_set(st->err, PGW_EINVAL, "custom points must be 1..%lld, got %lld",
                           (long long)PGW_POINTS_MAX, (long long)points);
    return add_line(st, "custom", points, PGW_FUND_ADJUSTMENT, PGW_BENEFICIARY_MEMBER, false);
}

static int dispatch(earn_state *st)
{
    const pgw_behaviours *bs = &st->rules->behaviours;
    const pgw_member_ctx *ctx = st->ctx;
    switch (st->event->type) {
    case PGW_EVENT_PURCHASE:
        return earn_purchase(st);
    case PGW_EVENT_REFUND:
        set_reason(st, "refunds are reversed by the ledger");
        return PGW_OK;
    case PGW_EVENT_REGISTER:
        return earn_once(st, "register", &bs->register_, ctx->registered_before);
    case PGW_EVENT_SIGN_IN:
        return earn_sign_in(st);
    case PGW_EVENT_REVIEW:
        if (ctx->reviewed_before) {
            set_reason(st, "this receipt's review was paid already");
            return PGW_OK;
        }
        return earn_behaviour(st, "review", &bs->review, PGW_BENEFICIARY_MEMBER);
    case PGW_EVENT_SHARE:
        return earn_behaviour(st, "share", &bs->share, PGW_BENEFICIARY_MEMBER);
    case PGW_EVENT_REFERRAL:
        return earn_referral(st);
    case PGW_EVENT_FOLLOW_OA:
        return earn_once(st, "follow_oa", &bs->follow_oa, ctx->followed_before);
    case PGW_EVENT_SURVEY:
        return earn_behaviour(st, "survey", &bs->survey, PGW_BENEFICIARY_MEMBER);
    case PGW_EVENT_CUSTOM:
        return earn_custom(st);
    }
    return pgw_err_set(st->err, PGW_EINVAL, "unknown event type %d", (int)st->event->type);
}

void pgw_earning_clear(pgw_earning *e)
{
    e->points = 0;
    e->referrer_points = 0;
    e->tier = -1;
    e->sign_in_streak = 0;
    e->n_lines = 0;
    e->reason[0] = '\0';
    e->needs_today = false;
}

int pgw_rules_earn(const pgw_rules *rules, const pgw_event *event, const pgw_member_ctx *ctx,
                   pgw_earning *out, pgw_err *err)
{
    PGW_ASSERT(rules != NULL && event != NULL && ctx != NULL && out != NULL);
    PGW_ASSERT(ctx->n_today == 0 || ctx->today != NULL);
    pgw_earning_clear(out);
    if (event->shop >= 0 && (size_t)event->shop >= rules->n_shops)
        return pgw_err_set(err, PGW_EINVAL, "unknown shop index %d", (int)event->shop);
    /* 1970-01-02 .. 9999-12-30 UTC: any zone's local date stays in range. */
    if (event->occurred_at < 86400 || event->occurred_at > INT64_C(253402214400))
        return pgw_err_set(err, PGW_EINVAL, "occurred_at is outside years %d..%d", PGW_YEAR_MIN,
                           PGW_YEAR_MAX);
    earn_state st = {.rules = rules, .event = event, .ctx = ctx, .out = out, .err = err};
    st.today = pgw_local_date(event->occurred_at, &rules->tz);
    int rc = dispatch(&st);
    PGW_ASSERT(rc != PGW_OK || (out->points >= 0 && out->points <= PGW_POINTS_MAX));
    return rc;
}
