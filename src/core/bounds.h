/*
 * bounds.h - every bound of pointsgw in one place, with its reason.
 *
 * Following SQLite's sqliteLimit.h and TigerBeetle: everything that comes
 * from outside has a maximum, and every fixed-size structure is sized from
 * here. Raising a limit is a deliberate edit of this file.
 */
#ifndef PGW_CORE_BOUNDS_H
#define PGW_CORE_BOUNDS_H

#include "assertions.h"

#include <stdint.h>

/* Identifiers written by people or tills: shop ids, campaign ids, tier and
 * format names, SKUs, categories. Short enough to log and index cheaply. */
#define PGW_ID_MAX 32
/* Display names (a shop's name in Chinese is ~10 characters, 30 bytes). */
#define PGW_NAME_MAX 128
/* A rule name in a breakdown: "campaign:" + id, "behaviour:sign_in_streak_30". */
#define PGW_RULE_MAX 64
/* An account name: "shop:" + id + ":issued", "member:" + member id. */
#define PGW_ACCOUNT_MAX 64
/* Idempotency key: channel + source + external event id (see DESIGN.md). */
#define PGW_IDEM_KEY_MAX 200
/* Reference on a transfer: receipt number or original event id. */
#define PGW_REFERENCE_MAX 128
/* External event ids sent by channels. */
#define PGW_EVENT_ID_MAX 128

/* An identity's value: openids are 28 bytes, unionids 29, emails up to 254;
 * the text form "kind:scope:value" fits PGW_IDENTITY_TEXT_MAX. */
#define PGW_IDENTITY_VALUE_MAX 254
#define PGW_IDENTITY_TEXT_MAX  300

/* The largest purchase amount accepted: 10^11 fen = 1 billion yuan. Far above
 * any real receipt, far below where int64 arithmetic gets close to overflow. */
#define PGW_AMOUNT_FEN_MAX INT64_C(100000000000)
/* The largest number of points one event, transfer, hold or lot may carry. */
#define PGW_POINTS_MAX INT64_C(1000000000000)
/* Multipliers above 100x are a typo, not a campaign. */
#define PGW_MULTIPLIER_BP_MAX 1000000

/* Configuration sizes. */
#define PGW_FORMATS_MAX             32
#define PGW_SHOPS_MAX               1024
#define PGW_TIERS_MAX               16
#define PGW_CAMPAIGNS_MAX           128
#define PGW_CAMPAIGN_SHOPS_MAX      64 /* shops a campaign may be restricted to */
#define PGW_CAMPAIGN_SKUS_MAX       64
#define PGW_CAMPAIGN_CATEGORIES_MAX 32
#define PGW_BRACKETS_MAX            16
#define PGW_STREAKS_MAX             8

/* Items on one purchase event. A supermarket receipt rarely exceeds 100 lines. */
#define PGW_ITEMS_MAX 200
/* Lines in one earning breakdown: base, tier, every campaign, behaviours. */
#define PGW_BREAKDOWN_MAX (4 + PGW_CAMPAIGNS_MAX)

PGW_STATIC_ASSERT(PGW_POINTS_MAX < INT64_MAX / PGW_MULTIPLIER_BP_MAX,
                  "points times the largest multiplier must fit int64");
PGW_STATIC_ASSERT(PGW_RULE_MAX >= PGW_ID_MAX + 16, "a rule name holds a prefix and an id");
PGW_STATIC_ASSERT(PGW_ACCOUNT_MAX >= PGW_ID_MAX + 16, "an account name holds a prefix and an id");

#endif
