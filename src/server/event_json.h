/*
 * event_json.h - the JSON of the universal inbound event (API.md "Events")
 * and of an earning's answer.
 *
 * pgw_event_from_json() turns a `POST /v1/events` body into a validated
 * pgw_event_doc: every field checked against its type and bound, unknown
 * keys refused, the member named by exactly one identity, the shop resolved
 * against the configured rules. Errors carry a JSON path:
 *     "$.items[2].amount_fen: expected an integer 0..100000000000"
 * The HTTP layer maps any such error to 400 invalid_request.
 *
 * pgw_member_ctx_from_json() reads the member context that `pointsgw quote`
 * takes on the command line (the server derives it from the store instead).
 */
#ifndef PGW_SERVER_EVENT_JSON_H
#define PGW_SERVER_EVENT_JSON_H

#include "core/bounds.h"
#include "core/civil.h"
#include "core/error.h"
#include "core/identity.h"
#include "core/rules.h"

#include "util/json_write.h"

#include <jansson.h>
#include <stdbool.h>

/* Rules a context may list under "today" (points earned today per rule). */
#define PGW_CTX_TODAY_MAX 64

/* A parsed event. Self-contained: event.items points into items[]. */
typedef struct pgw_event_doc {
    char event_id[PGW_EVENT_ID_MAX + 1];
    char channel[PGW_ID_MAX + 1];
    char shop_id[PGW_ID_MAX + 1]; /* "" when the event has no shop */
    char receipt_no[PGW_REFERENCE_MAX + 1];
    char original_event_id[PGW_EVENT_ID_MAX + 1]; /* refunds */
    pgw_identity member;
    bool has_referrer;
    pgw_identity referrer; /* referral events */
    /* The event's time as the gateway writes it (pgw_format_rfc3339 in
     * the mall's zone: "2026-11-24T10:15:00+08:00"), its normal form in
     * fingerprints (event_command.h); "" when the formatter cannot. */
    char occurred_at_normal[PGW_RFC3339_MAX];
    pgw_item items[PGW_ITEMS_MAX];
    pgw_event event;
} pgw_event_doc;

typedef struct pgw_member_ctx_doc {
    pgw_member_ctx ctx; /* ctx.today points into today[], ctx.challenges into challenges[] */
    pgw_rule_total today[PGW_CTX_TODAY_MAX];
    pgw_challenge_month challenges[PGW_CAMPAIGNS_MAX];
} pgw_member_ctx_doc;

/*
 * Parses and validates an event object. `out` is overwritten (it is ~20 KB:
 * allocate it, do not put it on a small stack). PGW_EINVAL with a JSON path
 * in err for anything malformed, missing, out of bounds or unknown.
 */
int pgw_event_from_json(const json_t *obj, const pgw_rules *rules, pgw_event_doc *out,
                        pgw_err *err);

/*
 * PGW_OK when `s` may be an event's channel: 1..PGW_ID_MAX of [a-z0-9_],
 * none of the words the gateway's own keys start with
 * (pgw_store_channel_name_ok), nor the gateway's own PGW_CHANNEL_SYSTEM
 * (its transfers' channel, which reads may still name); else PGW_EINVAL
 * naming it as `name`
 * ("$.channel"), quoting `s` only when it is UTF-8 (any bytes may come:
 * a query's value). Whatever else keys rows under a channel checks it so.
 */
int pgw_event_check_channel(const char *s, const char *name, pgw_err *err);

/*
 * Reads a member object ({"member_id": ...}, {"phone": ...}, ...: exactly
 * one identity; an openid with its appid) at JSON path `path`, normalised;
 * a card's shop must be one of `rules`' shops.
 */
int pgw_member_from_json(const json_t *obj, const char *path, const pgw_rules *rules,
                         pgw_identity *out, pgw_err *err);

/*
 * Parses a member context object; NULL means a new member with no history.
 * Keys: spend_12m_fen, month_purchases, month_spend_fen, first_purchase,
 * birthday ("MM-DD"), registered_before, followed_before, last_sign_in
 * ("YYYY-MM-DD"), sign_in_streak, today ({"rule": points}).
 */
int pgw_member_ctx_from_json(const json_t *obj, pgw_member_ctx_doc *out, pgw_err *err);

/*
 * The members of the answer for an earning, into the object `o` has open,
 * shaped like API.md's event response minus what only the store knows
 * (member_id, balance, transfers): event_id, type, `points` (the earning's,
 * or a refund's reversal), breakdown [{rule, points, funded_by}], and
 * referrer_points / tier / sign_in_streak / reason when they apply.
 */
void pgw_earning_write(pgw_json_out *o, const pgw_rules *rules, const pgw_event_doc *doc,
                       const pgw_earning *earning, int64_t points);

#endif
