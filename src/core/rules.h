/*
 * rules.h - earning rules: how many points an event earns, and who pays.
 *
 * The model (struct pgw_rules) is plain data filled by the configuration
 * loader (src/config) and read here; this module never parses JSON and does
 * no I/O. pgw_rules_earn() is a pure function:
 *
 *     (rules, event, member context) -> total points + one breakdown line
 *                                        per rule, each naming its funder
 *
 * Semantics (README "Earning rules" tells the operator the same):
 *
 * Purchase
 *   base      floor(amount_fen / fen_per_point) of the shop (its own rate,
 *             else its format's). Rule "shop:<id>" when the shop has its own
 *             rate, else "format:<format>". Funded by the shop.
 *   tier      the member's tier is the highest whose min_spend_fen_12m <=
 *             ctx.spend_12m_fen (spend before this event, so an upgrade
 *             applies from the next event). Extra floor(base * (m - 10000) /
 *             10000), rule "tier:<name>", funded by the mall (mall:campaigns).
 *             Nothing when m == 10000.
 *   campaigns each campaign that applies (kind, shops/formats filter, date)
 *             gives extra points:
 *               weekday/monthday/birthday/date_range: floor(base*(m-10000)/10000)
 *               sku/category: per matching item, floor(item_amount /
 *                 fen_per_point) -> floor(that*(m-10000)/10000), summed
 *               brackets: the bracket containing amount_fen (min <= amount <=
 *                 max) gives bonus_points, or floor(base*(m-10000)/10000)
 *               challenge: bonus_points once, on the purchase that first
 *                 reaches min_purchases (count) or min_spend_fen in the
 *                 calendar month (before < threshold <= after); with shops
 *                 or formats, counting only the purchases they cover
 *                 (ctx.challenges), else every purchase (ctx.month_*);
 *                 a PGW_STACK_MAX one beaten on that purchase is not paid
 *                 that month (no later purchase first reaches it)
 *             then its daily_cap (if > 0) limits it to cap minus what the
 *             member already earned today under that rule (ctx.today).
 *             Stacking: campaigns with stacking PGW_STACK_MAX compete and
 *             only the one giving the most points is kept (first in config
 *             order on a tie); PGW_STACK_ADD campaigns are always added.
 *             Funded by the mall (mall:campaigns) or, for funded_by
 *             "shop", by the purchasing shop. The reason names a
 *             campaign's cap only when the cut cost the member points:
 *             an added campaign's, or a max one's that uncut would have
 *             beaten the winner.
 *   first     behaviours.first_purchase points when ctx.first_purchase,
 *             rule "behaviour:first_purchase", funded by mall:behaviour.
 *
 * Behaviour events (register, sign_in, review, share, referral, follow_oa,
 * survey) earn their configured points, funded by mall:behaviour, limited
 * by their daily_cap (points per member per local day; 0 = none):
 *   register   once per member (ctx.registered_before -> 0, with reason).
 *   review     once paid per member, shop and receipt (ctx.reviewed_before
 *              -> 0, with reason); one the daily cap paid nothing may
 *              pay another day.
 *   sign_in    once per local day; the streak continues when the last
 *              sign-in was yesterday, else restarts at 1; a streak bonus
 *              with `days` = N is added on every day the streak length is a
 *              multiple of N (day 7, 14, ... for N = 7), rule
 *              "behaviour:sign_in_streak_<N>".
 *   follow_oa  once per member (ctx.followed_before -> 0).
 *   referral   points to the referee (this member) and referrer_points to
 *              the referrer (line.beneficiary = PGW_BENEFICIARY_REFERRER).
 *   custom     event.custom_points, rule "custom", funded by
 *              system:adjustments (admin only: checked by the server).
 * Refunds earn nothing here: the ledger reverses floor(P*R/A) (ledger.h).
 *
 * Rounding is always floor; every sum and product is overflow-checked and
 * the total is bounded by PGW_POINTS_MAX. An event that earns nothing has
 * points == 0 and a `reason`.
 */
#ifndef PGW_CORE_RULES_H
#define PGW_CORE_RULES_H

#include "bounds.h"
#include "civil.h"
#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the model (filled by src/config) ---------------------------------- */

typedef enum pgw_expiry_policy {
    PGW_EXPIRY_NEVER = 0,
    PGW_EXPIRY_ROLLING,  /* end of the local day `months` after earning */
    PGW_EXPIRY_YEAR_END, /* end of local year (earn year + `years`) */
} pgw_expiry_policy;

typedef struct pgw_expiry {
    pgw_expiry_policy policy;
    int32_t months; /* ROLLING: 1..120 */
    int32_t years;  /* YEAR_END: 0..10 (0 = end of the earning year) */
} pgw_expiry;

typedef struct pgw_format {
    char name[PGW_ID_MAX + 1];
    int64_t fen_per_point; /* >= 1 */
} pgw_format;

typedef struct pgw_shop {
    char id[PGW_ID_MAX + 1];
    char name[PGW_NAME_MAX + 1];
    int32_t format;        /* index into rules.formats */
    int64_t fen_per_point; /* 0 = the format's rate */
    int64_t rate_bp;       /* legacy shop points -> unified points (10000 = 1:1) */
} pgw_shop;

typedef struct pgw_tier {
    char name[PGW_ID_MAX + 1];
    char display_name[PGW_NAME_MAX + 1]; /* what members read ("金卡"); the name when unset */
    int64_t min_spend_fen_12m;           /* tiers sorted ascending; the first is 0 */
    int64_t multiplier_bp;               /* >= 10000 */
} pgw_tier;

typedef enum pgw_campaign_kind {
    PGW_CAMPAIGN_WEEKDAY = 0, /* every week on `weekday` (1 = Monday) */
    PGW_CAMPAIGN_MONTHDAY,    /* every month on `monthday` (1..31) */
    PGW_CAMPAIGN_BIRTHDAY,    /* on the member's birthday (or its month) */
    PGW_CAMPAIGN_SKU,         /* items whose sku is listed */
    PGW_CAMPAIGN_CATEGORY,    /* items whose category is listed */
    PGW_CAMPAIGN_BRACKETS,    /* by receipt amount */
    PGW_CAMPAIGN_DATE_RANGE,  /* local dates from..to inclusive */
    PGW_CAMPAIGN_CHALLENGE,   /* N purchases or S fen in a calendar month */
} pgw_campaign_kind;

typedef enum pgw_stacking {
    PGW_STACK_MAX = 0, /* compete: only the best PGW_STACK_MAX campaign applies */
    PGW_STACK_ADD,     /* always added on top */
} pgw_stacking;

typedef enum pgw_funder {
    PGW_FUND_SHOP = 0,       /* the purchasing shop: shop:<id>:issued */
    PGW_FUND_MALL_CAMPAIGN,  /* mall:campaigns */
    PGW_FUND_MALL_BEHAVIOUR, /* mall:behaviour */
    PGW_FUND_ADJUSTMENT,     /* system:adjustments (custom points) */
} pgw_funder;

typedef struct pgw_bracket {
    int64_t min_fen;       /* inclusive, >= 0 */
    int64_t max_fen;       /* inclusive; PGW_AMOUNT_FEN_MAX when open-ended */
    int64_t bonus_points;  /* exactly one of bonus_points > 0 ... */
    int64_t multiplier_bp; /* ... or multiplier_bp > 10000 */
} pgw_bracket;

typedef struct pgw_campaign {
    char id[PGW_ID_MAX + 1];
    pgw_campaign_kind kind;
    int64_t multiplier_bp; /* weekday, monthday, birthday, sku, category, date_range */
    pgw_funder funded_by;  /* PGW_FUND_MALL_CAMPAIGN or PGW_FUND_SHOP */
    pgw_stacking stacking;
    int64_t daily_cap; /* points per member per local day; 0 = none */

    /* Where it applies: empty lists mean every shop / format. */
    size_t n_shops;
    int32_t shops[PGW_CAMPAIGN_SHOPS_MAX]; /* indexes into rules.shops */
    size_t n_formats;
    int32_t formats[PGW_FORMATS_MAX]; /* indexes into rules.formats */

    int32_t weekday;           /* WEEKDAY: 1..7 */
    int32_t monthday;          /* MONTHDAY: 1..31 (no effect in shorter months) */
    bool birthday_whole_month; /* BIRTHDAY: the whole birth month, else the day */
    size_t n_skus;             /* SKU */
    char skus[PGW_CAMPAIGN_SKUS_MAX][PGW_ID_MAX + 1];
    size_t n_categories; /* CATEGORY */
    char categories[PGW_CAMPAIGN_CATEGORIES_MAX][PGW_ID_MAX + 1];
    size_t n_brackets; /* BRACKETS: sorted by min_fen, not overlapping */
    pgw_bracket brackets[PGW_BRACKETS_MAX];
    pgw_date from, to;     /* DATE_RANGE: inclusive local dates */
    int64_t min_purchases; /* CHALLENGE: exactly one of min_purchases > 0 ... */
    int64_t min_spend_fen; /* ... or min_spend_fen > 0 */
    int64_t bonus_points;  /* CHALLENGE */
} pgw_campaign;

typedef struct pgw_streak {
    int32_t days;         /* >= 2 */
    int64_t bonus_points; /* > 0 */
} pgw_streak;

typedef struct pgw_behaviour {
    bool enabled;
    int64_t points;    /* >= 0 */
    int64_t daily_cap; /* points per member per local day; 0 = none */
} pgw_behaviour;

typedef struct pgw_behaviours {
    pgw_behaviour register_;
    pgw_behaviour first_purchase;
    pgw_behaviour sign_in;
    size_t n_streaks; /* sign-in streak bonuses, sorted by days */
    pgw_streak streaks[PGW_STREAKS_MAX];
    pgw_behaviour review;
    pgw_behaviour share;
    pgw_behaviour referral;           /* .points go to the referee */
    int64_t referral_referrer_points; /* to the referrer */
    pgw_behaviour follow_oa;
    pgw_behaviour survey;
} pgw_behaviours;

typedef struct pgw_rules {
    pgw_tz tz;
    pgw_expiry expiry;
    size_t n_formats;
    pgw_format formats[PGW_FORMATS_MAX];
    size_t n_shops;
    pgw_shop shops[PGW_SHOPS_MAX];
    size_t n_tiers;
    pgw_tier tiers[PGW_TIERS_MAX];
    size_t n_campaigns;
    pgw_campaign campaigns[PGW_CAMPAIGNS_MAX];
    pgw_behaviours behaviours;
} pgw_rules;

/* Index of the shop with `id`, or -1. */
int32_t pgw_rules_find_shop(const pgw_rules *rules, const char *id);
/* The shop's points rate: its own fen_per_point, else its format's. */
int64_t pgw_rules_fen_per_point(const pgw_rules *rules, int32_t shop);
/* Index of the member's tier for a 12-month spend (0 when no tiers: -1). */
int32_t pgw_rules_tier_for_spend(const pgw_rules *rules, int64_t spend_12m_fen);

/* ---- the event and the member's context -------------------------------- */

typedef enum pgw_event_type {
    PGW_EVENT_PURCHASE = 0,
    PGW_EVENT_REFUND,
    PGW_EVENT_REGISTER,
    PGW_EVENT_SIGN_IN,
    PGW_EVENT_REVIEW,
    PGW_EVENT_SHARE,
    PGW_EVENT_REFERRAL,
    PGW_EVENT_FOLLOW_OA,
    PGW_EVENT_SURVEY,
    PGW_EVENT_CUSTOM,
} pgw_event_type;

/* "purchase" -> PGW_EVENT_PURCHASE ...; PGW_EINVAL for an unknown name. */
int pgw_event_type_parse(const char *name, pgw_event_type *out);
const char *pgw_event_type_name(pgw_event_type type);

typedef struct pgw_item {
    char sku[PGW_ID_MAX + 1];
    char category[PGW_ID_MAX + 1];
    int64_t amount_fen; /* 0..PGW_AMOUNT_FEN_MAX */
    int32_t qty;        /* >= 1 */
} pgw_item;

typedef struct pgw_event {
    pgw_event_type type;
    int32_t shop;          /* index into rules.shops; -1 for behaviour events without a shop */
    int64_t occurred_at;   /* unix seconds */
    int64_t amount_fen;    /* PURCHASE: 1..PGW_AMOUNT_FEN_MAX */
    size_t n_items;        /* 0..PGW_ITEMS_MAX */
    const pgw_item *items; /* borrowed */
    int64_t custom_points; /* CUSTOM: 1..PGW_POINTS_MAX */
} pgw_event;

/*
 * True when campaign `campaign` is a challenge with shops or formats that
 * covers `shop`: its threshold counts only the purchases at the shops it
 * covers (its own month: pgw_challenge_month), which the caller keeps per
 * campaign and reads for such a purchase. A challenge without filters
 * counts the member's whole month (ctx.month_purchases, month_spend_fen).
 */
bool pgw_rules_challenge_own_month(const pgw_rules *rules, size_t campaign, int32_t shop);

/* A challenge's own month (pgw_rules_challenge_own_month): the member's
 * purchases at the shops it covers, and their spend less their refunds,
 * on the days of the event's calendar month up to the event's, before it. */
typedef struct pgw_challenge_month {
    char campaign[PGW_ID_MAX + 1]; /* the campaign's id */
    int64_t purchases;
    int64_t spend_fen;
} pgw_challenge_month;

/* Points a member already earned today (local day of the event) under a rule. */
typedef struct pgw_rule_total {
    char rule[PGW_RULE_MAX + 1];
    int64_t points;
} pgw_rule_total;

typedef struct pgw_member_ctx {
    int64_t spend_12m_fen;   /* purchases minus refunds, 12 months before the event */
    int64_t month_purchases; /* purchases this local calendar month, before the event */
    int64_t month_spend_fen; /* their amount */
    /* The own months of the challenges with shops or formats that cover
     * the event's shop (borrowed): such a challenge is judged on its own,
     * never on month_purchases/month_spend_fen; one not listed has
     * counted nothing yet. */
    size_t n_challenges;
    const pgw_challenge_month *challenges;
    bool first_purchase; /* this purchase is the member's first */
    bool has_birthday;
    int32_t birth_month;    /* 1..12 */
    int32_t birth_day;      /* 1..31; 02-29 is celebrated on 02-28 in common years */
    bool registered_before; /* the register bonus was already given */
    bool followed_before;   /* the follow_oa bonus was already given */
    bool reviewed_before;   /* a review of this event's receipt was paid already */
    bool has_last_sign_in;
    pgw_date last_sign_in;  /* local date of the previous sign-in */
    int32_t sign_in_streak; /* streak length at last_sign_in (>= 1 when set) */
    size_t n_today;
    const pgw_rule_total *today; /* borrowed; rules with points earned today */
    /* n_today/today were not read (most events meet no daily cap, and the
     * read is one more statement): a daily cap that would consult them
     * sets the earning's needs_today instead (and counts the whole cap as
     * left), and the caller prices again with them, also when this
     * pricing failed. */
    bool today_unknown;
    /* challenge_paid[i]: campaign i, a challenge, paid already this
     * calendar month; it pays no more (refunds lower the month's spend, so
     * "first reaches the threshold" can come twice). The caller fills it in
     * when a pricing would pay one, and prices again. */
    bool challenge_paid[PGW_CAMPAIGNS_MAX];
} pgw_member_ctx;

/* ---- the result --------------------------------------------------------- */

typedef enum pgw_beneficiary {
    PGW_BENEFICIARY_MEMBER = 0, /* the event's member */
    PGW_BENEFICIARY_REFERRER,   /* the referrer named on a referral event */
} pgw_beneficiary;

typedef struct pgw_breakdown_line {
    char rule[PGW_RULE_MAX + 1]; /* "format:retail", "campaign:member-day" */
    int64_t points;              /* > 0 */
    pgw_funder funder;
    char funded_by[PGW_ACCOUNT_MAX + 1]; /* "shop:S001", "mall:campaigns", ... */
    char debit[PGW_ACCOUNT_MAX + 1];     /* "shop:S001:issued", "mall:campaigns", ... */
    pgw_beneficiary beneficiary;
    /* A campaign's or a behaviour's: daily caps and the risk limit on
     * behaviours read its day's total back, whatever the configuration
     * that priced it (base, tier and custom lines are never read). */
    bool day_counted;
} pgw_breakdown_line;

/* The reasons of a behaviour done before (the answer's "reason"): the
 * official account's reply tells a repeat from a behaviour that pays
 * nothing by them. */
#define PGW_REASON_SIGNED_IN_TODAY "already signed in today"
#define PGW_REASON_SIGNED_IN_LATER "signed in on a later day already"
#define PGW_REASON_FOLLOWED_BEFORE "follow_oa bonus already given"

typedef struct pgw_earning {
    int64_t points;          /* sum of lines for PGW_BENEFICIARY_MEMBER */
    int64_t referrer_points; /* sum of lines for PGW_BENEFICIARY_REFERRER */
    int32_t tier;            /* tier index used (-1 when no tiers) */
    int32_t sign_in_streak;  /* SIGN_IN: the streak length after this event */
    size_t n_lines;
    pgw_breakdown_line lines[PGW_BREAKDOWN_MAX];
    char reason[PGW_NAME_MAX + 1]; /* why nothing (or less) was earned; "" otherwise */
    bool needs_today; /* priced without today's points (today_unknown), which a cap needed */
} pgw_earning;

/*
 * Empties *e: no lines, no points, no reason, no tier (-1). The lines past
 * n_lines are left as they were: 28 KB that nothing reads, and zeroing them
 * twice per event was 6% of the writer thread's time.
 */
void pgw_earning_clear(pgw_earning *e);

/*
 * Computes what `event` earns for a member in context `ctx` under `rules`.
 * Fills *out completely (emptied first: pgw_earning_clear). PGW_EINVAL for an invalid event
 * (unknown shop for a purchase, amount or items out of bounds) and
 * PGW_ERANGE on overflow, each with a message in err; *out is then not
 * meaningful.
 */
int pgw_rules_earn(const pgw_rules *rules, const pgw_event *event, const pgw_member_ctx *ctx,
                   pgw_earning *out, pgw_err *err);

#endif
