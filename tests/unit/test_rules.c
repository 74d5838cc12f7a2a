/*
 * test_rules.c - the earning rules, case by case. This file is the
 * specification of rules.h in executable form: every rule kind, every
 * boundary (local midnight, month ends, leap days in Asia/Shanghai),
 * stacking, caps, funding, bad input and overflow.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/arith.h"
#include "core/rules.h"

#include <stdlib.h>
#include <string.h>

/* ---- fixtures ------------------------------------------------------------ */

/* A mall: retail 100 fen/pt, fnb 200, unit 1; S001 retail, S002 retail at its
 * own 400, S003 fnb, S004 unit (1 fen per point, for overflow cases). */
static pgw_rules *rules_new(void)
{
    pgw_rules *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    assert_int_equal(pgw_tz_lookup("Asia/Shanghai", &r->tz, NULL), PGW_OK);
    const char *formats[] = {"retail", "fnb", "unit"};
    const int64_t fpp[] = {100, 200, 1};
    for (size_t i = 0; i < 3; i++) {
        strcpy(r->formats[i].name, formats[i]);
        r->formats[i].fen_per_point = fpp[i];
    }
    r->n_formats = 3;
    const char *shops[] = {"S001", "S002", "S003", "S004"};
    const int32_t shop_format[] = {0, 0, 1, 2};
    for (size_t i = 0; i < 4; i++) {
        strcpy(r->shops[i].id, shops[i]);
        r->shops[i].format = shop_format[i];
    }
    r->shops[1].fen_per_point = 400;
    r->n_shops = 4;
    return r;
}

static pgw_campaign *add_campaign(pgw_rules *r, const char *id, pgw_campaign_kind kind,
                                  int64_t multiplier_bp)
{
    pgw_campaign *c = &r->campaigns[r->n_campaigns++];
    memset(c, 0, sizeof(*c));
    strcpy(c->id, id);
    c->kind = kind;
    c->multiplier_bp = multiplier_bp;
    c->funded_by = PGW_FUND_MALL_CAMPAIGN;
    return c;
}

static int64_t at(const char *rfc3339)
{
    int64_t t = 0;
    assert_int_equal(pgw_parse_rfc3339(rfc3339, &t, NULL), PGW_OK);
    return t;
}

static pgw_event purchase(int32_t shop, int64_t amount_fen, const char *when)
{
    pgw_event e = {.type = PGW_EVENT_PURCHASE, .shop = shop, .amount_fen = amount_fen};
    e.occurred_at = at(when);
    return e;
}

static pgw_event behaviour(pgw_event_type type, const char *when)
{
    pgw_event e = {.type = type, .shop = -1};
    e.occurred_at = at(when);
    return e;
}

static pgw_earning *earn_ok(const pgw_rules *r, const pgw_event *e, const pgw_member_ctx *ctx)
{
    static pgw_earning out;
    pgw_err err;
    int rc = pgw_rules_earn(r, e, ctx, &out, &err);
    if (rc != PGW_OK)
        fail_msg("pgw_rules_earn: %s", err.msg);
    return &out;
}

/* Points of the line named `rule`, 0 when there is none. */
static int64_t line(const pgw_earning *e, const char *rule)
{
    for (size_t i = 0; i < e->n_lines; i++) {
        if (strcmp(e->lines[i].rule, rule) == 0)
            return e->lines[i].points;
    }
    return 0;
}

static const pgw_breakdown_line *find_line(const pgw_earning *e, const char *rule)
{
    for (size_t i = 0; i < e->n_lines; i++) {
        if (strcmp(e->lines[i].rule, rule) == 0)
            return &e->lines[i];
    }
    fail_msg("no line %s", rule);
    return NULL;
}

static const pgw_member_ctx NEW_MEMBER = {0};

/* ---- base points and tiers ------------------------------------------------ */

static void test_base_points_floor_per_shop_rate(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    static const struct {
        int32_t shop;
        int64_t amount;
        const char *rule;
        int64_t points;
    } cases[] = {
        {0, 12899, "format:retail", 128}, {0, 99, "format:retail", 0},
        {0, 100, "format:retail", 1},     {1, 12899, "shop:S002", 32},
        {2, 12899, "format:fnb", 64},     {3, 12899, "format:unit", 12899},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgw_event e = purchase(cases[i].shop, cases[i].amount, "2026-11-24T10:00:00+08:00");
        pgw_earning *out = earn_ok(r, &e, &NEW_MEMBER);
        assert_int_equal(out->points, cases[i].points);
        assert_int_equal(line(out, cases[i].rule), cases[i].points);
        if (cases[i].points == 0)
            assert_non_null(strstr(out->reason, "below one point"));
        else
            assert_string_equal(find_line(out, cases[i].rule)->debit,
                                cases[i].shop == 0   ? "shop:S001:issued"
                                : cases[i].shop == 1 ? "shop:S002:issued"
                                : cases[i].shop == 2 ? "shop:S003:issued"
                                                     : "shop:S004:issued");
    }
    free(r);
}

static void test_tier_from_spend_before_the_event(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    r->n_tiers = 2;
    strcpy(r->tiers[0].name, "silver");
    r->tiers[0].multiplier_bp = 10000;
    strcpy(r->tiers[1].name, "gold");
    r->tiers[1].min_spend_fen_12m = 500000;
    r->tiers[1].multiplier_bp = 12000;
    pgw_event e = purchase(0, 10000, "2026-11-24T10:00:00+08:00");
    pgw_member_ctx ctx = {.spend_12m_fen = 499999};
    /* This purchase lifts spend past 500000, but the upgrade counts from the next event. */
    pgw_earning *out = earn_ok(r, &e, &ctx);
    assert_int_equal(out->tier, 0);
    assert_int_equal(out->points, 100);
    assert_int_equal(line(out, "tier:silver"), 0);
    ctx.spend_12m_fen = 500000;
    out = earn_ok(r, &e, &ctx);
    assert_int_equal(out->tier, 1);
    assert_int_equal(line(out, "tier:gold"), 20);
    assert_string_equal(find_line(out, "tier:gold")->funded_by, "mall:campaigns");
    assert_int_equal(out->points, 120);
    ctx.spend_12m_fen = -5000; /* refunds exceeded purchases: still the first tier */
    assert_int_equal(pgw_rules_tier_for_spend(r, ctx.spend_12m_fen), 0);
    free(r);
}

/* ---- date-driven campaigns at local boundaries ----------------------------- */

typedef struct date_case {
    const char *when;
    int64_t extra;
} date_case;

static void check_dates(pgw_rules *r, const char *rule, const pgw_member_ctx *ctx,
                        const date_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pgw_event e = purchase(0, 10000, cases[i].when); /* base 100 */
        pgw_earning *out = earn_ok(r, &e, ctx);
        if (line(out, rule) != cases[i].extra)
            fail_msg("%s at %s: %lld, want %lld", rule, cases[i].when, (long long)line(out, rule),
                     (long long)cases[i].extra);
        assert_int_equal(out->points, 100 + cases[i].extra);
    }
}

static void test_weekday_member_day_at_local_midnight(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    add_campaign(r, "member-day", PGW_CAMPAIGN_WEEKDAY, 20000)->weekday = 3; /* Wednesday */
    static const date_case cases[] = {
        {"2026-11-24T15:59:59Z", 0},   /* Tuesday 23:59:59 in Shanghai */
        {"2026-11-24T16:00:00Z", 100}, /* Wednesday 00:00 in Shanghai, still Tuesday in UTC */
        {"2026-11-25T15:59:59Z", 100}, /* Wednesday 23:59:59 */
        {"2026-11-25T16:00:00Z", 0},   /* Thursday */
    };
    check_dates(r, "campaign:member-day", &NEW_MEMBER, cases, 4);
    free(r);
}

static void test_monthday_on_month_ends(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    add_campaign(r, "day-31", PGW_CAMPAIGN_MONTHDAY, 15000)->monthday = 31;
    static const date_case cases[] = {
        {"2026-11-30T10:00:00+08:00", 0}, /* November has no 31st */
        {"2026-11-30T16:00:00Z", 0},      /* 1 December local */
        {"2026-12-30T16:00:00Z", 50},     /* 31 December 00:00 local, 30th in UTC */
        {"2026-12-31T15:59:59Z", 50},     {"2026-12-31T16:00:00Z", 0}, /* New Year in Shanghai */
    };
    check_dates(r, "campaign:day-31", &NEW_MEMBER, cases, 5);
    free(r);
}

static void test_date_range_inclusive(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    pgw_campaign *c = add_campaign(r, "d11", PGW_CAMPAIGN_DATE_RANGE, 30000);
    c->from = (pgw_date){2026, 11, 11};
    c->to = (pgw_date){2026, 11, 13};
    static const date_case cases[] = {
        {"2026-11-10T15:59:59Z", 0},
        {"2026-11-10T16:00:00Z", 200},
        {"2026-11-13T15:59:59Z", 200},
        {"2026-11-13T16:00:00Z", 0},
    };
    check_dates(r, "campaign:d11", &NEW_MEMBER, cases, 4);
    free(r);
}

/*
 * A leap day in a zone whose offset changed at its end: Asia/Almaty left
 * +06:00 for +05:00 at 00:00 on 1 March 2024, so 29 February 2024 (a
 * Thursday) ran from 18:00 UTC on the 28th to 19:00 UTC on the 29th, its
 * last hour twice. A one-day range and a Thursday campaign hold for all
 * of it and not a second more.
 */
static void test_a_leap_day_across_an_offset_change(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    assert_int_equal(pgw_tz_lookup("Asia/Almaty", &r->tz, NULL), PGW_OK);
    pgw_campaign *c = add_campaign(r, "leap", PGW_CAMPAIGN_DATE_RANGE, 20000);
    c->from = c->to = (pgw_date){2024, 2, 29};
    static const date_case range[] = {
        {"2024-02-28T17:59:59Z", 0},   {"2024-02-28T18:00:00Z", 100},
        {"2024-02-29T17:59:59Z", 100}, /* 23:59:59 at +06:00 */
        {"2024-02-29T18:00:00Z", 100}, /* 23:00:00 again, at +05:00 */
        {"2024-02-29T18:59:59Z", 100}, {"2024-02-29T19:00:00Z", 0},
    };
    check_dates(r, "campaign:leap", &NEW_MEMBER, range, sizeof(range) / sizeof(range[0]));
    c->kind = PGW_CAMPAIGN_WEEKDAY;
    c->weekday = 4;
    check_dates(r, "campaign:leap", &NEW_MEMBER, range, sizeof(range) / sizeof(range[0]));
    free(r);
}

static void test_birthday_day_month_and_leap_day(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    add_campaign(r, "bday", PGW_CAMPAIGN_BIRTHDAY, 20000);
    pgw_member_ctx leap = {.has_birthday = true, .birth_month = 2, .birth_day = 29};
    static const date_case leap_cases[] = {
        {"2027-02-28T12:00:00+08:00", 100}, /* common year: celebrated on the 28th */
        {"2027-03-01T12:00:00+08:00", 0},
        {"2028-02-28T12:00:00+08:00", 0}, /* leap year: only the 29th */
        {"2028-02-29T12:00:00+08:00", 100},
    };
    check_dates(r, "campaign:bday", &leap, leap_cases, 4);

    pgw_member_ctx plain = {.has_birthday = true, .birth_month = 11, .birth_day = 24};
    static const date_case day_cases[] = {
        {"2026-11-23T16:00:00Z", 100}, /* 24th local from 16:00 UTC on the 23rd */
        {"2026-11-23T15:59:59Z", 0},
        {"2026-11-25T09:00:00+08:00", 0},
    };
    check_dates(r, "campaign:bday", &plain, day_cases, 3);
    check_dates(r, "campaign:bday", &NEW_MEMBER, day_cases + 2, 1); /* no birthday known */

    r->campaigns[0].birthday_whole_month = true;
    static const date_case month_cases[] = {
        {"2026-11-01T00:00:00+08:00", 100},
        {"2026-11-30T23:59:59+08:00", 100},
        {"2026-12-01T00:00:00+08:00", 0},
    };
    check_dates(r, "campaign:bday", &plain, month_cases, 3);
    free(r);
}

/* ---- item, bracket and challenge campaigns --------------------------------- */

static void test_sku_and_category_multiply_matching_items(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    pgw_campaign *sku = add_campaign(r, "phones", PGW_CAMPAIGN_SKU, 20000);
    strcpy(sku->skus[0], "A1");
    sku->n_skus = 1;
    sku->stacking = PGW_STACK_ADD;
    pgw_campaign *cat = add_campaign(r, "fresh", PGW_CAMPAIGN_CATEGORY, 15000);
    strcpy(cat->categories[0], "fresh");
    cat->n_categories = 1;
    cat->stacking = PGW_STACK_ADD;
    pgw_item items[] = {
        {"A1", "phone", 3050, 1}, /* 30 points -> +30 */
        {"B2", "fresh", 3099, 2}, /* 30 points -> +15 */
        {"C3", "toys", 1000, 1},  /* nothing */
    };
    pgw_event e = purchase(0, 7149, "2026-11-24T10:00:00+08:00");
    e.items = items;
    e.n_items = 3;
    pgw_earning *out = earn_ok(r, &e, &NEW_MEMBER);
    assert_int_equal(line(out, "format:retail"), 71);
    assert_int_equal(line(out, "campaign:phones"), 30);
    assert_int_equal(line(out, "campaign:fresh"), 15);
    assert_int_equal(out->points, 116);
    free(r);
}

static void test_brackets_at_their_edges(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    pgw_campaign *c = add_campaign(r, "spend", PGW_CAMPAIGN_BRACKETS, 0);
    c->brackets[0] = (pgw_bracket){50000, 99999, 50, 0};
    c->brackets[1] = (pgw_bracket){100000, 499999, 200, 0};
    c->brackets[2] = (pgw_bracket){500000, PGW_AMOUNT_FEN_MAX, 0, 12000};
    c->n_brackets = 3;
    static const struct {
        int64_t amount, extra;
    } cases[] = {
        {49999, 0},    {50000, 50},    {99999, 50},     {100000, 200},
        {499999, 200}, {500000, 1000}, {1000000, 2000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgw_event e = purchase(0, cases[i].amount, "2026-11-24T10:00:00+08:00");
        assert_int_equal(line(earn_ok(r, &e, &NEW_MEMBER), "campaign:spend"), cases[i].extra);
    }
    free(r);
}

static void test_challenge_pays_once_on_crossing(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    pgw_campaign *count = add_campaign(r, "five", PGW_CAMPAIGN_CHALLENGE, 0);
    count->min_purchases = 5;
    count->bonus_points = 500;
    count->stacking = PGW_STACK_ADD;
    pgw_campaign *spend = add_campaign(r, "spend3000", PGW_CAMPAIGN_CHALLENGE, 0);
    spend->min_spend_fen = 300000;
    spend->bonus_points = 800;
    spend->stacking = PGW_STACK_ADD;
    pgw_event e = purchase(0, 10000, "2026-11-24T10:00:00+08:00");
    static const struct {
        int64_t purchases, spend, five, spend3000;
    } cases[] = {
        {3, 0, 0, 0},        {4, 0, 500, 0},    {5, 0, 0, 0},      {4, 290000, 500, 800},
        {0, 290001, 0, 800}, {0, 300000, 0, 0}, {0, 200000, 0, 0}, {0, 289999, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgw_member_ctx ctx = {.month_purchases = cases[i].purchases,
                              .month_spend_fen = cases[i].spend};
        pgw_earning *out = earn_ok(r, &e, &ctx);
        assert_int_equal(line(out, "campaign:five"), cases[i].five);
        assert_int_equal(line(out, "campaign:spend3000"), cases[i].spend3000);
    }
    free(r);
}

/*
 * A challenge left at stacking "max" competes on the purchase that reaches
 * its threshold; beaten there it is not paid that month at all, as no
 * later purchase first reaches it (README: give challenges "add").
 */
static void test_a_max_challenge_beaten_is_not_paid_that_month(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    add_campaign(r, "wed", PGW_CAMPAIGN_WEEKDAY, 20000)->weekday = 3;
    pgw_campaign *five = add_campaign(r, "five", PGW_CAMPAIGN_CHALLENGE, 0);
    five->min_purchases = 5;
    five->bonus_points = 500;
    pgw_member_ctx fourth = {.month_purchases = 4};
    pgw_event small = purchase(0, 12800, "2026-11-25T10:00:00+08:00");         /* Wednesday */
    assert_int_equal(line(earn_ok(r, &small, &fourth), "campaign:five"), 500); /* beats 128 */
    pgw_event large = purchase(0, 100000, "2026-11-25T10:00:00+08:00");
    pgw_earning *out = earn_ok(r, &large, &fourth); /* the member day's 1000 beats it */
    assert_int_equal(line(out, "campaign:wed"), 1000);
    assert_int_equal(line(out, "campaign:five"), 0);
    pgw_member_ctx sixth = {.month_purchases = 5};
    assert_int_equal(line(earn_ok(r, &small, &sixth), "campaign:five"), 0);
    five->stacking = PGW_STACK_ADD; /* as the example's: paid on top */
    out = earn_ok(r, &large, &fourth);
    assert_int_equal(line(out, "campaign:five"), 500);
    assert_int_equal(out->points, 2500);
    free(r);
}

/*
 * A challenge with formats (or shops) is judged on its own month, the
 * purchases at the shops it covers (ctx.challenges), never on the
 * member's whole month: 2,990 yuan of retail and a coffee do not reach
 * 3,000 yuan of dining. One without filters counts the whole month, and
 * one whose own month the context does not list has counted nothing.
 */
static void test_a_filtered_challenge_counts_its_own_month(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    pgw_campaign *dining = add_campaign(r, "dining", PGW_CAMPAIGN_CHALLENGE, 0);
    dining->min_spend_fen = 300000;
    dining->bonus_points = 800;
    dining->stacking = PGW_STACK_ADD;
    dining->formats[dining->n_formats++] = 1; /* fnb: S003 */
    pgw_campaign *three = add_campaign(r, "three-at-s003", PGW_CAMPAIGN_CHALLENGE, 0);
    three->min_purchases = 3;
    three->bonus_points = 300;
    three->stacking = PGW_STACK_ADD;
    three->shops[three->n_shops++] = 2; /* S003 */
    pgw_campaign *five = add_campaign(r, "five", PGW_CAMPAIGN_CHALLENGE, 0);
    five->min_purchases = 5;
    five->bonus_points = 500;
    five->stacking = PGW_STACK_ADD;
    assert_true(pgw_rules_challenge_own_month(r, 0, 2));
    assert_false(pgw_rules_challenge_own_month(r, 0, 0)); /* retail: not covered */
    assert_true(pgw_rules_challenge_own_month(r, 1, 2));
    assert_false(pgw_rules_challenge_own_month(r, 2, 2)); /* no filters: the whole month */
    pgw_event coffee = purchase(2, 1000, "2026-11-24T10:00:00+08:00");
    static const struct {
        int64_t month_purchases, month_spend, own_purchases, own_spend;
        bool listed;
        int64_t dining, three, five;
    } cases[] = {
        {4, 299000, 0, 0, true, 0, 0, 500},  /* retail spend: the whole month's */
        {4, 299000, 0, 0, false, 0, 0, 500}, /* not listed: nothing counted */
        {1, 299000, 2, 299000, true, 800, 300, 0},
        {9, 900000, 1, 290000, true, 0, 0, 0}, /* 2 at S003, 2,910 yuan: not yet */
        {0, 0, 2, 300000, true, 0, 300, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgw_challenge_month own[2] = {{"dining", 0, 0}, {"three-at-s003", 0, 0}};
        for (size_t j = 0; j < 2; j++) {
            own[j].purchases = cases[i].own_purchases;
            own[j].spend_fen = cases[i].own_spend;
        }
        pgw_member_ctx ctx = {.month_purchases = cases[i].month_purchases,
                              .month_spend_fen = cases[i].month_spend,
                              .n_challenges = cases[i].listed ? 2 : 0,
                              .challenges = cases[i].listed ? own : NULL};
        pgw_earning *out = earn_ok(r, &coffee, &ctx);
        if (line(out, "campaign:dining") != cases[i].dining ||
            line(out, "campaign:three-at-s003") != cases[i].three ||
            line(out, "campaign:five") != cases[i].five)
            fail_msg("case %zu: dining %lld, three %lld, five %lld", i,
                     (long long)line(out, "campaign:dining"),
                     (long long)line(out, "campaign:three-at-s003"),
                     (long long)line(out, "campaign:five"));
    }
    /* At a retail shop neither filtered challenge applies, whatever the month. */
    pgw_event shirt = purchase(0, 1000, "2026-11-24T10:00:00+08:00");
    pgw_member_ctx ctx = {.month_purchases = 2, .month_spend_fen = 299000};
    pgw_earning *out = earn_ok(r, &shirt, &ctx);
    assert_int_equal(line(out, "campaign:dining"), 0);
    assert_int_equal(line(out, "campaign:three-at-s003"), 0);
    free(r);
}

/* ---- stacking, caps, funding, filters --------------------------------------- */

static void test_stacking_max_and_add(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    add_campaign(r, "wed", PGW_CAMPAIGN_WEEKDAY, 20000)->weekday = 3;
    pgw_campaign *range = add_campaign(r, "promo", PGW_CAMPAIGN_DATE_RANGE, 30000);
    range->from = (pgw_date){2026, 11, 1};
    range->to = (pgw_date){2026, 11, 30};
    pgw_campaign *tie = add_campaign(r, "tie", PGW_CAMPAIGN_MONTHDAY, 30000);
    tie->monthday = 25;
    pgw_campaign *add = add_campaign(r, "extra", PGW_CAMPAIGN_MONTHDAY, 15000);
    add->monthday = 25;
    add->stacking = PGW_STACK_ADD;
    pgw_event e = purchase(0, 10000, "2026-11-25T10:00:00+08:00"); /* Wednesday the 25th */
    pgw_earning *out = earn_ok(r, &e, &NEW_MEMBER);
    assert_int_equal(line(out, "campaign:wed"), 0);
    assert_int_equal(line(out, "campaign:promo"), 200); /* best; first of the two 200s */
    assert_int_equal(line(out, "campaign:tie"), 0);
    assert_int_equal(line(out, "campaign:extra"), 50);
    assert_int_equal(out->points, 350);
    assert_int_equal(out->n_lines, 3);
    free(r);
}

static void test_daily_cap_counts_points_earned_today(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    pgw_campaign *c = add_campaign(r, "d11", PGW_CAMPAIGN_DATE_RANGE, 30000);
    c->from = (pgw_date){2026, 11, 11};
    c->to = (pgw_date){2026, 11, 13};
    c->daily_cap = 150;
    pgw_event e = purchase(0, 10000, "2026-11-12T10:00:00+08:00");
    static const struct {
        int64_t today, extra;
        bool capped;
    } cases[] = {{0, 150, true}, {100, 50, true}, {150, 0, true}, {400, 0, true}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgw_rule_total today[] = {{"campaign:other", 999}, {"campaign:d11", cases[i].today}};
        pgw_member_ctx ctx = {.today = today, .n_today = 2};
        pgw_earning *out = earn_ok(r, &e, &ctx);
        assert_int_equal(line(out, "campaign:d11"), cases[i].extra);
        assert_int_equal(out->points, 100 + cases[i].extra);
        assert_non_null(strstr(out->reason, "daily cap of campaign:d11"));
    }
    c->daily_cap = 500; /* not reached: no reason */
    pgw_earning *out = earn_ok(r, &e, &NEW_MEMBER);
    assert_int_equal(line(out, "campaign:d11"), 200);
    assert_string_equal(out->reason, "");
    assert_false(out->needs_today);
    /* Today's points unread: the cap says it needs them, whatever the
     * rest (the caller prices again); without a cap, or another day, it
     * needs nothing. */
    pgw_member_ctx unread = {.today_unknown = true};
    assert_true(earn_ok(r, &e, &unread)->needs_today);
    c->daily_cap = 0;
    assert_false(earn_ok(r, &e, &unread)->needs_today);
    c->daily_cap = 500;
    pgw_event later = purchase(0, 10000, "2026-11-14T10:00:00+08:00");
    assert_false(earn_ok(r, &later, &unread)->needs_today);
    /* Unread, the cap still bounds its line: a purchase whose extra only
     * the cap keeps within the points' limit prices as with them. */
    c->multiplier_bp = 1000000; /* 100x */
    pgw_event huge = purchase(3, 100000000000, "2026-11-12T10:00:00+08:00");
    pgw_earning known = *earn_ok(r, &huge, &NEW_MEMBER);
    pgw_earning *guess = earn_ok(r, &huge, &unread);
    assert_true(guess->needs_today);
    assert_int_equal(guess->points, known.points);
    assert_int_equal(line(guess, "campaign:d11"), 500);
    free(r);
}

/*
 * Regression: a "max" campaign cut by its daily cap set the answer's
 * reason even when it would have lost the competition uncut, so a member
 * paid in full by another campaign was told "daily cap of campaign:...
 * reached". The reason names a cap only when it cost the member points.
 */
static void test_a_cap_is_the_reason_only_when_it_cost_points(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    pgw_campaign *small = add_campaign(r, "small", PGW_CAMPAIGN_MONTHDAY, 15000);
    small->monthday = 25;
    small->daily_cap = 10;
    pgw_campaign *big = add_campaign(r, "big", PGW_CAMPAIGN_WEEKDAY, 30000);
    big->weekday = 3;
    pgw_event e = purchase(0, 10000, "2026-11-25T10:00:00+08:00"); /* Wednesday the 25th */
    pgw_rule_total spent[] = {{"campaign:small", 10}};
    pgw_member_ctx ctx = {.today = spent, .n_today = 1};
    pgw_earning *out = earn_ok(r, &e, &ctx); /* small: 50, cut to 0; big: 200 wins anyway */
    assert_int_equal(line(out, "campaign:big"), 200);
    assert_int_equal(out->points, 300);
    assert_string_equal(out->reason, "");
    small->multiplier_bp = 40000; /* 300 uncut: it would have won, so the cap cost 100 */
    out = earn_ok(r, &e, &ctx);
    assert_int_equal(line(out, "campaign:big"), 200);
    assert_string_equal(out->reason, "daily cap of campaign:small reached");
    small->multiplier_bp = 30000; /* 200 uncut: a tie big would lose, for no more points */
    out = earn_ok(r, &e, &ctx);
    assert_string_equal(out->reason, "");
    small->stacking = PGW_STACK_ADD; /* added on top: any cut costs points */
    small->multiplier_bp = 15000;
    out = earn_ok(r, &e, &ctx);
    assert_int_equal(out->points, 300);
    assert_string_equal(out->reason, "daily cap of campaign:small reached");
    pgw_member_ctx unread = {.today_unknown = true}; /* priced again with them: no reason yet */
    small->daily_cap = 1;
    out = earn_ok(r, &e, &unread);
    assert_true(out->needs_today);
    assert_string_equal(out->reason, "");
    free(r);
}

static void test_funding_and_filters(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    pgw_campaign *shop_paid = add_campaign(r, "shop-paid", PGW_CAMPAIGN_WEEKDAY, 20000);
    shop_paid->weekday = 2;
    shop_paid->funded_by = PGW_FUND_SHOP;
    shop_paid->stacking = PGW_STACK_ADD;
    pgw_campaign *only_s002 = add_campaign(r, "s002", PGW_CAMPAIGN_WEEKDAY, 20000);
    only_s002->weekday = 2;
    only_s002->shops[0] = 1;
    only_s002->n_shops = 1;
    only_s002->stacking = PGW_STACK_ADD;
    pgw_campaign *only_fnb = add_campaign(r, "fnb", PGW_CAMPAIGN_WEEKDAY, 20000);
    only_fnb->weekday = 2;
    only_fnb->formats[0] = 1;
    only_fnb->n_formats = 1;
    only_fnb->stacking = PGW_STACK_ADD;

    pgw_event e = purchase(0, 10000, "2026-11-24T10:00:00+08:00"); /* Tuesday, S001 retail */
    pgw_earning *out = earn_ok(r, &e, &NEW_MEMBER);
    const pgw_breakdown_line *l = find_line(out, "campaign:shop-paid");
    assert_int_equal(l->points, 100);
    assert_string_equal(l->funded_by, "shop:S001");
    assert_string_equal(l->debit, "shop:S001:issued");
    assert_int_equal(line(out, "campaign:s002"), 0);
    assert_int_equal(line(out, "campaign:fnb"), 0);

    e = purchase(2, 10000, "2026-11-24T10:00:00+08:00"); /* S003, fnb: base 50 */
    out = earn_ok(r, &e, &NEW_MEMBER);
    assert_int_equal(line(out, "campaign:fnb"), 50);
    assert_string_equal(find_line(out, "campaign:fnb")->debit, "mall:campaigns");
    assert_int_equal(line(out, "campaign:s002"), 0);
    free(r);
}

/* ---- behaviours -------------------------------------------------------------- */

static pgw_rules *rules_with_behaviours(void)
{
    pgw_rules *r = rules_new();
    pgw_behaviours *b = &r->behaviours;
    b->register_ = (pgw_behaviour){true, 100, 0};
    b->first_purchase = (pgw_behaviour){true, 200, 0};
    b->sign_in = (pgw_behaviour){true, 5, 0};
    b->streaks[0] = (pgw_streak){7, 50};
    b->streaks[1] = (pgw_streak){30, 300};
    b->n_streaks = 2;
    b->review = (pgw_behaviour){true, 20, 60};
    b->share = (pgw_behaviour){true, 10, 30};
    b->referral = (pgw_behaviour){true, 100, 0};
    b->referral_referrer_points = 200;
    b->follow_oa = (pgw_behaviour){true, 50, 0};
    b->survey = (pgw_behaviour){true, 30, 0};
    return r;
}

static void test_sign_in_streaks(void **state)
{
    (void)state;
    pgw_rules *r = rules_with_behaviours();
    static const struct {
        bool has_last;
        pgw_date last;
        int32_t streak_before, streak_after;
        int64_t points;
        const char *reason;
    } cases[] = {
        {false, {0, 0, 0}, 0, 1, 5, ""},
        {true, {2026, 11, 30}, 1, 2, 5, ""},     /* yesterday across a month end */
        {true, {2026, 11, 30}, 6, 7, 55, ""},    /* day 7 */
        {true, {2026, 11, 30}, 13, 14, 55, ""},  /* day 14 */
        {true, {2026, 11, 30}, 29, 30, 305, ""}, /* day 30, not a multiple of 7 */
        {true, {2026, 11, 29}, 6, 1, 5, ""},     /* missed a day: restart */
        {true, {2026, 12, 1}, 4, 4, 0, "already signed in today"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgw_member_ctx ctx = {.has_last_sign_in = cases[i].has_last,
                              .last_sign_in = cases[i].last,
                              .sign_in_streak = cases[i].streak_before};
        /* 00:30 on 1 December in Shanghai, still 30 November in UTC. */
        pgw_event e = behaviour(PGW_EVENT_SIGN_IN, "2026-11-30T16:30:00Z");
        pgw_earning *out = earn_ok(r, &e, &ctx);
        if (out->points != cases[i].points || out->sign_in_streak != cases[i].streak_after)
            fail_msg("case %zu: %lld points streak %d", i, (long long)out->points,
                     (int)out->sign_in_streak);
        assert_string_equal(out->reason, cases[i].reason);
    }
    pgw_member_ctx ctx = {
        .has_last_sign_in = true, .last_sign_in = {2026, 11, 30}, .sign_in_streak = 6};
    pgw_event e = behaviour(PGW_EVENT_SIGN_IN, "2026-12-01T10:00:00+08:00");
    pgw_earning *out = earn_ok(r, &e, &ctx);
    assert_int_equal(line(out, "behaviour:sign_in_streak_7"), 50);
    assert_string_equal(find_line(out, "behaviour:sign_in")->debit, "mall:behaviour");
    free(r);
}

static void test_behaviours_once_capped_and_referral(void **state)
{
    (void)state;
    pgw_rules *r = rules_with_behaviours();
    const char *when = "2026-11-24T10:00:00+08:00";
    pgw_event e = behaviour(PGW_EVENT_REGISTER, when);
    assert_int_equal(earn_ok(r, &e, &NEW_MEMBER)->points, 100);
    pgw_member_ctx done = {.registered_before = true, .followed_before = true};
    pgw_earning *out = earn_ok(r, &e, &done);
    assert_int_equal(out->points, 0);
    assert_string_equal(out->reason, "register bonus already given");
    e = behaviour(PGW_EVENT_FOLLOW_OA, when);
    assert_int_equal(earn_ok(r, &e, &NEW_MEMBER)->points, 50);
    assert_int_equal(earn_ok(r, &e, &done)->points, 0);
    /* The official account's reply says "welcome back" by this reason. */
    assert_string_equal(earn_ok(r, &e, &done)->reason, PGW_REASON_FOLLOWED_BEFORE);

    e = behaviour(PGW_EVENT_REVIEW, when);
    static const int64_t today_review[][2] = {{0, 20}, {40, 20}, {50, 10}, {60, 0}};
    for (size_t i = 0; i < 4; i++) {
        pgw_rule_total today[] = {{"behaviour:review", today_review[i][0]}};
        pgw_member_ctx ctx = {.today = today, .n_today = 1};
        assert_int_equal(earn_ok(r, &e, &ctx)->points, today_review[i][1]);
    }
    pgw_member_ctx unread = {.today_unknown = true}; /* a capped behaviour needs today */
    assert_true(earn_ok(r, &e, &unread)->needs_today);
    pgw_member_ctx reviewed = {.reviewed_before = true}; /* its receipt paid once already */
    out = earn_ok(r, &e, &reviewed);
    assert_int_equal(out->points, 0);
    assert_string_equal(out->reason, "this receipt's review was paid already");
    e = behaviour(PGW_EVENT_SURVEY, when);
    assert_int_equal(earn_ok(r, &e, &NEW_MEMBER)->points, 30);
    e = behaviour(PGW_EVENT_SHARE, when);
    assert_int_equal(earn_ok(r, &e, &NEW_MEMBER)->points, 10);

    e = behaviour(PGW_EVENT_REFERRAL, when);
    out = earn_ok(r, &e, &NEW_MEMBER);
    assert_int_equal(out->points, 100);
    assert_int_equal(out->referrer_points, 200);
    assert_int_equal(out->n_lines, 2);
    assert_int_equal(out->lines[1].beneficiary, PGW_BENEFICIARY_REFERRER);

    e = behaviour(PGW_EVENT_CUSTOM, when);
    e.custom_points = 77;
    out = earn_ok(r, &e, &NEW_MEMBER);
    assert_int_equal(out->points, 77);
    assert_string_equal(find_line(out, "custom")->debit, "system:adjustments");

    e = purchase(0, 10000, when);
    pgw_member_ctx first = {.first_purchase = true};
    out = earn_ok(r, &e, &first);
    assert_int_equal(line(out, "behaviour:first_purchase"), 200);
    assert_int_equal(out->points, 300);

    e = behaviour(PGW_EVENT_REFUND, when);
    out = earn_ok(r, &e, &NEW_MEMBER);
    assert_int_equal(out->points, 0);
    assert_non_null(strstr(out->reason, "reversed by the ledger"));

    r->behaviours.share.enabled = false;
    e = behaviour(PGW_EVENT_SHARE, when);
    out = earn_ok(r, &e, &NEW_MEMBER);
    assert_int_equal(out->points, 0);
    assert_non_null(strstr(out->reason, "earns no points"));
    free(r);
}

/* ---- bad input and overflow --------------------------------------------------- */

static void test_invalid_events(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    pgw_item items[PGW_ITEMS_MAX + 1];
    memset(items, 0, sizeof(items));
    for (size_t i = 0; i < PGW_ITEMS_MAX + 1; i++)
        items[i].qty = 1;
    const char *when = "2026-11-24T10:00:00+08:00";
    pgw_event cases[7];
    cases[0] = purchase(-1, 100, when);
    cases[1] = purchase(9, 100, when);
    cases[2] = purchase(0, 0, when);
    cases[3] = purchase(0, -100, when);
    cases[4] = purchase(0, PGW_AMOUNT_FEN_MAX + 1, when);
    cases[5] = purchase(0, 100, when);
    cases[5].items = items;
    cases[5].n_items = PGW_ITEMS_MAX + 1;
    cases[6] = purchase(0, 100, when);
    items[0].qty = 0;
    cases[6].items = items;
    cases[6].n_items = 1;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgw_earning out;
        pgw_err err;
        pgw_err_clear(&err);
        int rc = pgw_rules_earn(r, &cases[i], &NEW_MEMBER, &out, &err);
        if (rc != PGW_EINVAL || err.msg[0] == '\0')
            fail_msg("case %zu: rc %d", i, rc);
    }
    pgw_event custom = behaviour(PGW_EVENT_CUSTOM, when);
    pgw_earning out;
    assert_int_equal(pgw_rules_earn(r, &custom, &NEW_MEMBER, &out, NULL), PGW_EINVAL);
    free(r);
}

static void test_overflow_never_wraps(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    pgw_event e = purchase(3, PGW_AMOUNT_FEN_MAX, "2026-11-24T10:00:00+08:00"); /* 1 fen/pt */
    pgw_earning *out = earn_ok(r, &e, &NEW_MEMBER);
    assert_int_equal(out->points, PGW_AMOUNT_FEN_MAX);
    /* 10^11 base points at 9x: exactly the PGW_POINTS_MAX bound of 10^12. */
    add_campaign(r, "x10", PGW_CAMPAIGN_MONTHDAY, 100000)->monthday = 24;
    __int128 exact = (__int128)PGW_AMOUNT_FEN_MAX * 100000 / 10000;
    assert_true(exact == (__int128)PGW_POINTS_MAX);
    out = earn_ok(r, &e, &NEW_MEMBER);
    assert_int_equal(out->points, PGW_POINTS_MAX);
    /* One more point of multiplier goes past the bound: refused, never wrapped. */
    r->campaigns[0].multiplier_bp = PGW_MULTIPLIER_BP_MAX;
    pgw_earning big;
    pgw_err err;
    assert_int_equal(pgw_rules_earn(r, &e, &NEW_MEMBER, &big, &err), PGW_ERANGE);
    assert_non_null(strstr(err.msg, "more than"));
    free(r);
}

/* A fixed-seed property test over random purchases. */
static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void test_random_purchases_are_consistent(void **state)
{
    (void)state;
    pgw_rules *r = rules_new();
    add_campaign(r, "wed", PGW_CAMPAIGN_WEEKDAY, 20000)->weekday = 3;
    pgw_campaign *b = add_campaign(r, "spend", PGW_CAMPAIGN_BRACKETS, 0);
    b->brackets[0] = (pgw_bracket){50000, 99999, 50, 0};
    b->brackets[1] = (pgw_bracket){100000, PGW_AMOUNT_FEN_MAX, 0, 15000};
    b->n_brackets = 2;
    b->stacking = PGW_STACK_ADD;
    uint64_t seed = 20261124;
    for (int i = 0; i < 10000; i++) {
        int32_t shop = (int32_t)(next_random(&seed) % 3);
        int64_t amount = 1 + (int64_t)(next_random(&seed) % 2000000);
        int64_t day = (int64_t)(next_random(&seed) % 3650);
        pgw_event e = purchase(shop, amount, "2026-01-01T00:00:00+08:00");
        e.occurred_at += day * 86400 + (int64_t)(next_random(&seed) % 86400);
        pgw_earning *out = earn_ok(r, &e, &NEW_MEMBER);
        int64_t sum = 0;
        for (size_t k = 0; k < out->n_lines; k++) {
            assert_true(out->lines[k].points > 0);
            sum += out->lines[k].points;
        }
        assert_int_equal(sum, out->points);
        int64_t base = amount / pgw_rules_fen_per_point(r, shop); /* the first line's */
        assert_int_equal(out->n_lines > 0 ? out->lines[0].points : 0, base);
        int64_t smaller = out->points;
        e.amount_fen = amount + 1 + (int64_t)(next_random(&seed) % 1000);
        assert_true(earn_ok(r, &e, &NEW_MEMBER)->points >= smaller);
    }
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_points_floor_per_shop_rate),
        cmocka_unit_test(test_tier_from_spend_before_the_event),
        cmocka_unit_test(test_weekday_member_day_at_local_midnight),
        cmocka_unit_test(test_monthday_on_month_ends),
        cmocka_unit_test(test_date_range_inclusive),
        cmocka_unit_test(test_a_leap_day_across_an_offset_change),
        cmocka_unit_test(test_birthday_day_month_and_leap_day),
        cmocka_unit_test(test_sku_and_category_multiply_matching_items),
        cmocka_unit_test(test_brackets_at_their_edges),
        cmocka_unit_test(test_challenge_pays_once_on_crossing),
        cmocka_unit_test(test_a_filtered_challenge_counts_its_own_month),
        cmocka_unit_test(test_a_max_challenge_beaten_is_not_paid_that_month),
        cmocka_unit_test(test_stacking_max_and_add),
        cmocka_unit_test(test_daily_cap_counts_points_earned_today),
        cmocka_unit_test(test_a_cap_is_the_reason_only_when_it_cost_points),
        cmocka_unit_test(test_funding_and_filters),
        cmocka_unit_test(test_sign_in_streaks),
        cmocka_unit_test(test_behaviours_once_capped_and_referral),
        cmocka_unit_test(test_invalid_events),
        cmocka_unit_test(test_overflow_never_wraps),
        cmocka_unit_test(test_random_purchases_are_consistent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
