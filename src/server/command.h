/*
 * command.h - a write command, and how one is applied to a store.
 *
 * Every change to the ledger is a pgw_command: validated by the caller,
 * queued to the writer thread (writer.h), applied here inside the batch's
 * transaction with the planners of core/ledger.h, and answered after the
 * commit. This module is what makes the durable store behave exactly like
 * the reference ledger (core/ledger.h pgw_ledger); test_command drives both
 * with the same random operations and compares them after each.
 *
 * Idempotency: every command but the two expiries and OA_FOLLOW (ordered
 * by time instead) carries a key. Purchases
 * (EARN) and raw TRANSFERS append first and let the key's unique constraint
 * detect a replay (the hot path pays one statement, a replay some wasted
 * work). The others look their key up first: their effect depends on the
 * state they meet (a refund on what was refunded before, a hold on the
 * balance), so a replay must be recognised before any rule is checked, or a
 * client retrying after a timeout would be told "insufficient points" for a
 * hold that was in fact made.
 *
 * Time: `at` is when the command happens. Holds whose deadline is at or
 * before it are released before a member's points are spent or refunded,
 * and cannot be captured or voided any more (PGW_ESTATE, hold_not_pending).
 */
#ifndef PGW_SERVER_COMMAND_H
#define PGW_SERVER_COMMAND_H

#include "core/error.h"
#include "core/ledger.h"
#include "core/otp.h"
#include "core/rules.h"
#include "core/transfer.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Transfers one command may write: a purchase or a refund writes one per funder. */
#define PGW_COMMAND_TRANSFERS_MAX 8

typedef struct pgw_command pgw_command;
typedef void (*pgw_command_done)(pgw_command *cmd, void *payload);

/* What an OA_FOLLOW command records (0: none, refused). */
typedef enum pgw_oa_follow {
    PGW_OA_UNFOLLOWS = -1,
    PGW_OA_FOLLOWS = 1,
    PGW_OA_NOTE = 2,
    PGW_OA_FORGET_NOTE = 3,
} pgw_oa_follow;

typedef enum pgw_command_kind {
    /* Append the caller's transfers as they are (imports, adjustments, tests). */
    PGW_COMMAND_TRANSFERS = 0,
    /*
     * Earn: groups `lines` by funder into EARN transfers to member:<member>,
     * repays the member's debt first, puts the rest in a new lot expiring
     * per the policy, and (amount_fen > 0) records the earn for refunds.
     */
    PGW_COMMAND_EARN,
    /* Expire what is left of lot `lot_id` into system:expired (key named by the writer). */
    PGW_COMMAND_EXPIRE_LOT,
    /*
     * Refund amount_fen of the purchase whose key is `original`: reverses
     * floor(P*R/A) cumulatively, split over its funders. PGW_ENOTFOUND
     * (original_not_found), PGW_EEXCEEDS (refund_exceeds_original).
     */
    PGW_COMMAND_REFUND,
    /* Reserve `points` of `member` at `shop` until `deadline` as hold `hold_id`. */
    PGW_COMMAND_HOLD,
    /* Spend `points` (all when 0) of pending hold `hold_id`; release the rest. */
    PGW_COMMAND_CAPTURE,
    /* Release pending hold `hold_id`. */
    PGW_COMMAND_VOID,
    /* Spend `points` of `member` at `shop` now; `hold_id` names the redemption. */
    PGW_COMMAND_REDEEM,
    /* Release hold `hold_id` if it is pending past its deadline (no key). */
    PGW_COMMAND_EXPIRE_HOLD,
    /*
     * A member's event (API.md POST /v1/events): the member's activity is
     * read, policy->rules price the event, the points are earned as EARN
     * (or, for a refund, reversed as REFUND of `original`), the activity is
     * updated, and `render` (when set) writes the answer, which is stored
     * with the key so a replay repeats it.
     */
    PGW_COMMAND_EVENT,
    /* Read-only (a reader's queue): `member`'s figures, tier and expiring points at `at`. */
    PGW_COMMAND_READ_MEMBER,
    /* Read-only: up to page_cap of `member`'s transfers before id `before`, newest first. */
    PGW_COMMAND_READ_HISTORY,
    /* Read-only: whose identity `who` is (member filled; PGW_ENOTFOUND when nobody's). */
    PGW_COMMAND_READ_RESOLVE,
    /*
     * Bind identity `who` to `member`. When another member holds it, that
     * member is merged into `member`: its balance moves by a MERGE transfer,
     * its lots (with their expiry), holds, purchases, identities, activity
     * and debt follow, and its id keeps answering with merged_into.
     */
    PGW_COMMAND_BIND,
    /*
     * A legacy shop balance: `points` (already converted) move from
     * import:<shop> to the member holding `who` (a card) or `who2` (a
     * phone), created when neither is known; both identities end up bound
     * to that member. A card and a phone held by two members is
     * PGW_EINVAL. `import_match` says how the member was found. The first
     * batch to import a card (or a phone, without one) at the shop claims
     * it; unless `import_batch_named`, another batch's row of it is
     * PGW_EINVAL naming that batch (`reference` is the batch).
     */
    PGW_COMMAND_IMPORT,
    /* Read-only: runs `call` on the reader's connection inside its read
     * transaction (a reconciliation, a report); its result is the call's.
     * With a `session_id`, the session is checked first (PGW_EUNAUTHORIZED). */
    PGW_COMMAND_READ_CALL,
    /*
     * WeChat's identities of one person: the member holding `who` (an
     * openid) or `who2` (the unionid, has_who2) is linked to both, created
     * when neither is known (always for a login, else under auto_enroll);
     * when each is held by a different member, the openid's member is
     * merged into the unionid's (WeChat says they are one person). With a
     * `session_id` (a mini-program login), that session of `appid` is then
     * recorded, expiring at session_expires.
     */
    PGW_COMMAND_LINK,
    /* One-time subscribe-message quota: `points` more sends of
     * `template_id` for `member`'s openid `sub_openid` (kept at most
     * PGW_QUOTA_MAX); `quota` out, the member's for the template. */
    PGW_COMMAND_SUBSCRIBE,
    /* Revokes session `session_id` (a logout). */
    PGW_COMMAND_END_SESSION,
    /* Official account: openid `who` (scope = appid) follows
     * (PGW_OA_FOLLOWS) or stops following (PGW_OA_UNFOLLOWS) as of `at`
     * (no key: later changes win). A
     * follow names its event's key in `original`: when that key is
     * recorded already, the push is WeChat redelivering it, and nothing
     * changes (at equal times the last arrival wins, and a redelivered
     * subscribe undid an unsubscribe of the same second); follow_seen
     * says so. PGW_OA_NOTE (another push, which only a follower can
     * send): openid follows unless a state is recorded of it already;
     * follow_new says it was recorded now. PGW_OA_FORGET_NOTE: the follow
     * of `at` is forgotten if openid's state is still that one (a note
     * whose link failed for the moment: the next push notes it again and
     * links; or a follow user/info said was over, subscribe 0). */
    PGW_COMMAND_OA_FOLLOW,
    /* A dead notice `notice_id` is pending again (no key: retrying twice is
     * retrying; PGW_ESTATE when it is not dead). */
    PGW_COMMAND_NOTICE_RETRY,
    /* `member`'s preferences (no key: the latest choice wins): no SMS
     * notices (sms_opt_out) or them again, when set_sms; its birthday, when
     * `birthday` is "MM-DD". A birthday set already is changed only when
     * birthday_admin (PGW_EFORBIDDEN): a member's would otherwise come
     * every month. Both are read back into sms_opt_out and `birthday`. */
    PGW_COMMAND_SMS_PREFERENCE,
    /*
     * A verification code for phone `who` (no key: every request is a new
     * code) for `otp_requester`, asked from `client_address` (its bucket): PGW_ELIMITED with
     * retry_at when a limit of policy->otp refuses it (core/otp.h), else its `otp_hash` is
     * recorded, expiring after policy->otp.ttl_s.
     */
    PGW_COMMAND_OTP_ISSUE,
    /*
     * A submitted code (`otp_hash`) for phone `who` by `otp_requester`
     * (only the requester's own code counts): otp_verdict says what
     * it was worth. A wrong code counts a try and the command succeeds
     * with nothing else done (the try must stay counted); the right one
     * is used up and `who` is bound to `member` as BIND does, in the same
     * transaction. Keyed by the caller on (phone, code), so a client
     * retrying after a timeout gets the first answer instead of "used".
     */
    PGW_COMMAND_OTP_VERIFY,
    /* The code `otp_hash` of phone `who` never left: forgotten (no key). */
    PGW_COMMAND_OTP_VOID,
    /*
     * Deletes what no check reads any more (no key), at most PGW_PRUNE_ROWS
     * rows of each table a pass, so that a backlog holds the writer for one
     * short pass at a time: sessions expired PGW_PRUNE_GRACE_S before `at`,
     * enrolment counts of hours that ended that long before it, and expiry
     * reminders' rows of days PGW_PRUNE_REMINDER_DAYS before its day.
     * pruned_sessions, pruned_enrolments and pruned_reminders say how many
     * went.
     */
    PGW_COMMAND_PRUNE,
    /*
     * Gives back `points` of the spend whose key is `original` (a
     * redemption's redeem:<id>, a capture's capture:<id>; `hold_id` its
     * id): a REDEEM transfer from the shop's redeemed account back to the
     * member, the points repaying the member's debt first and the rest
     * returning to the lots the spend took them from, what it took last
     * first. One limited to a shop (`shop` set) finds no other shop's
     * spend: PGW_ENOTFOUND, as for an unknown one; PGW_EEXCEEDS beyond
     * what the spend has left to give back (spends made before schema 37
     * have nothing). Its key is return:<original>/<its id>, the id
     * without '/' (PGW_EINVAL else): verify finds a spend's returns by it.
     */
    PGW_COMMAND_RETURN,
} pgw_command_kind;

#define PGW_COMMAND_KIND_MAX PGW_COMMAND_RETURN
/* Rows of each table one PRUNE deletes at most. */
#define PGW_PRUNE_ROWS 1000
/* How long past its end a row stays: a command made before then (a
 * session checked at its `at`, an enrolment counted in its hour) may
 * still be queued, and instances on one PostgreSQL have clocks apart. */
#define PGW_PRUNE_GRACE_S 3600
/* A reminder's day is local: two days before `at`'s UTC day is past in
 * every zone (UTC-12..+14), and no lot expires on it any more. */
#define PGW_PRUNE_REMINDER_DAYS 2

/*
 * The risk rule that refused a command (PGW_ERISK), each named as its
 * config key (self_referral, always on, has none): the name starts the
 * refusal's message and labels /metrics' pgw_risk_rejected_total, whose
 * lines follow this order.
 * A caller tells the rule by this, never by the message's words.
 */
typedef enum pgw_risk_rule {
    PGW_RISK_NONE = 0, /* refused by no rule of ours (WeChat's risk control), or not refused */
    PGW_RISK_MAX_POINTS_PER_EVENT,
    PGW_RISK_MAX_EVENTS_PER_MEMBER_PER_DAY,
    PGW_RISK_MAX_REDEEM_POINTS_PER_DAY,
    PGW_RISK_MAX_BEHAVIOUR_POINTS_PER_DAY,
    PGW_RISK_NEW_MEMBER_REDEEM_HOURS,
    PGW_RISK_UNIQUE_RECEIPTS,
    PGW_RISK_SELF_REFERRAL,
    PGW_RISK_MAX_NEW_MEMBERS_PER_IP_PER_HOUR,
    PGW_RISK_RULES_END /* one past the last rule */
} pgw_risk_rule;

/* The rule's name ("max_points_per_event"); NULL for PGW_RISK_NONE or
 * anything outside the enum. */
const char *pgw_risk_rule_name(pgw_risk_rule rule);

typedef enum pgw_import_match {
    PGW_IMPORT_CREATED = 0,
    PGW_IMPORT_BY_CARD,
    PGW_IMPORT_BY_PHONE,
} pgw_import_match;
#define PGW_IDENTITIES_SHOWN 16 /* identities a member read returns */
#define PGW_EXPIRING_SHOWN   5  /* expiry moments a member read returns */
/* Longest answer stored for a replay. */
#define PGW_ANSWER_MAX 16384

/*
 * An EVENT's fingerprint as a statement row would give it: its key, type,
 * time, member, amount, custom points and (a refund) its purchase's key,
 * and nothing else. reconcile --repair posts a row's event under this
 * fingerprint, for the row says no more (no items, no receipt); the
 * till's own event, sent later, is a replay of it when it says the same
 * of those, in whatever form (a time in another offset, a phone written
 * otherwise). Needs `key`, `at`, `event`, the member (`member` or `who`)
 * and, for a refund, `original`: pgw_event_command fills them.
 */
void pgw_command_row_fingerprint(const pgw_command *cmd, uint8_t out[PGW_HASH_LEN]);

struct pgw_command {
    /* Input, filled by the caller. */
    pgw_command_kind kind;
    char key[PGW_IDEM_KEY_MAX + 1];    /* idempotency key: channel + source + event id */
    uint8_t fingerprint[PGW_HASH_LEN]; /* SHA-256 of the canonical request */
    /* EVENT, HOLD, REDEEM: the body's own fingerprint, when `fingerprint`
     * is of it with its phone or email (an event's: or its time)
     * normalised: a key recorded before fingerprints were (of the body as
     * sent) is the same request (event_command.h pgw_command_fingerprint). */
    bool has_fingerprint_as_sent;
    uint8_t fingerprint_as_sent[PGW_HASH_LEN];
    /* EVENT whose time is not written in normal form: its fingerprint with
     * the phone or email normalised and the time as sent, the one
     * gateways gave it before times were normalised, which the keys they
     * recorded hold (event_command.h pgw_event_fingerprint). Accepted on
     * replay as fingerprint_as_sent is. */
    bool has_fingerprint_time_as_sent;
    uint8_t fingerprint_time_as_sent[PGW_HASH_LEN];
    /* EVENT writing an item's "qty": 1 (a default, left out of the normal
     * form) whose phone or email and time are both written otherwise: the
     * third form keys were recorded under before, beside the two above:
     * phone or email normalised, time and qty as sent (gateways before
     * times were normal). Accepted on replay as fingerprint_as_sent is. */
    bool has_fingerprint_time_qty_as_sent;
    uint8_t fingerprint_time_qty_as_sent[PGW_HASH_LEN];
    size_t n_transfers; /* TRANSFERS: 1..PGW_COMMAND_TRANSFERS_MAX; others: set when applied */
    pgw_transfer transfers[PGW_COMMAND_TRANSFERS_MAX]; /* id and hashes set when applied */
    char member[PGW_ID_MAX + 1]; /* EARN, HOLD, REDEEM (CAPTURE/VOID/REFUND: set when applied) */
    /* EVENT, HOLD, REDEEM, READ_RESOLVE: when set, the member is whoever
     * holds this identity (an EVENT enrolls a new member for an unknown one
     * under auto_enroll) and `member` is filled when applied. */
    bool by_identity;
    /* EVENT: `key` names the member's appid where keys made before it was
     * part of them have "-" (pgw_store_event_key): that one is looked up
     * too, so that a retry across the upgrade is a replay. (Refunds name
     * a shop: never keyed so.) */
    bool keyed_by_appid;
    /* EVENT: a shop's CSV row, which cannot carry items: when its key was
     * used by a request with another fingerprint, it is a replay if the
     * event recorded says what the row says (its type, instant, member,
     * amount and a refund's purchase), as a till's end-of-day file lists
     * the sales it sent live with their items. Its `fingerprint` is the
     * row's (pgw_command_row_fingerprint), so that the till's own event,
     * sent after the file, replays it too. */
    bool from_row;
    /* EVENT: a 409 idempotency_conflict says only that the body differs,
     * not what the key kept of the first request (its member, amount, time,
     * type): the asker may not see it. api.c sets it for a channel key
     * sending a shop's event, which the shop's own key may have posted
     * under that channel; false (the default) tells. */
    bool first_unsaid;
    pgw_identity_key who;
    bool has_who2; /* IMPORT: a second identity (the phone) */
    pgw_identity_key who2;
    /* EVENT referral: the referrer, by member id or by identity. */
    bool has_referrer, referrer_by_identity;
    pgw_identity_key referrer_key;
    char referrer[PGW_ID_MAX + 1];
    char shop[PGW_ID_MAX + 1];             /* EARN, REFUND, HOLD, REDEEM; "" when none */
    char channel[PGW_ID_MAX + 1];          /* written on every transfer */
    char reference[PGW_REFERENCE_MAX + 1]; /* EARN: receipt number or event id */
    char receipt[PGW_REFERENCE_MAX + 1];   /* EVENT: the till's receipt number, "" when none */
    char client_address[64]; /* EVENT from the mini program: who is enrolling, "" otherwise */
    /* BIND by a shop's key: that shop. It merges in only a member named by
     * nothing but this shop's cards (PGW_EFORBIDDEN otherwise): a shop must
     * not fold another person's account, phone and all, into a member. */
    char bind_shop[PGW_ID_MAX + 1];
    /* BIND of a phone the member proved (WeChat's phone button, an SMS
     * code): that proves the number is theirs now, not that its holder's
     * account is. It merges in no member known by a WeChat identity
     * (PGW_EFORBIDDEN): a number recycled to a new subscriber would take
     * the last one's points. */
    bool bind_self;
    int64_t at; /* when it happens, unix seconds */
    /* When it was asked (unix seconds; 0: `at`). A backlog's event happens
     * at its occurred_at, but meets holds and lots as they are when asked
     * (a refund does not reverse points expired since), and its answer's
     * figures are the later of the two: `available` as of then counted
     * points due since, which a hold would refuse. */
    int64_t asked_at;
    /* EARN */
    size_t n_lines;
    pgw_earn_line lines[PGW_BREAKDOWN_MAX];
    int64_t amount_fen; /* EARN: purchase amount (0: not refundable); REFUND: refunded now */
    /* REFUND: the purchase's key; OA_FOLLOW: the push's own; RETURN: the spend's */
    char original[PGW_IDEM_KEY_MAX + 1];
    int64_t original_at; /* filled: the purchase's time (0 when its key does not say) */
    /* HOLD, CAPTURE, VOID, REDEEM, EXPIRE_HOLD */
    char hold_id[PGW_REFERENCE_MAX + 1];
    int64_t points;   /* HOLD, REDEEM, RETURN: 1..PGW_POINTS_MAX; CAPTURE: 0 = all */
    int64_t deadline; /* HOLD: > at */
    /* EXPIRE_LOT */
    int64_t lot_id;
    /* EVENT: the priced event (borrowed, like everything it points to) and
     * where the earning goes (caller-owned, filled when applied). */
    const pgw_event *event;
    pgw_earning *earning;
    /* Optional: writes cmd->answer on the writer thread once the figures
     * are known, before the commit; it is stored with the key and a replay
     * gets it back in cmd->answer. Must not block. */
    void (*render)(pgw_command *cmd, void *render_ctx);
    void *render_ctx; /* the caller's: pgw_writer_run and its stream take done and payload */
    pgw_command_done done;
    void *payload;
    /* Any kind: when set, the mini-program session the request came with,
     * which must be neither revoked nor expired at `at` (PGW_EUNAUTHORIZED). */
    char session_id[PGW_SESSION_ID_LEN + 1];
    int64_t session_expires;                       /* LINK with a session */
    char appid[PGW_ID_MAX + 1];                    /* LINK with a session */
    char template_id[PGW_TEMPLATE_KEY_MAX + 1];    /* SUBSCRIBE */
    char sub_openid[PGW_OPENID_MAX + 1];           /* SUBSCRIBE: who accepted ("": unknown) */
    pgw_oa_follow oa_follow;                       /* OA_FOLLOW (see kind) */
    int64_t notice_id;                             /* NOTICE_RETRY */
    bool sms_opt_out;                              /* SMS_PREFERENCE */
    bool set_sms, birthday_admin;                  /* SMS_PREFERENCE */
    char birthday[6];                              /* SMS_PREFERENCE: "MM-DD" or "" */
    uint8_t otp_hash[PGW_OTP_HASH_LEN];            /* OTP_ISSUE, OTP_VERIFY, OTP_VOID */
    char otp_requester[PGW_OTP_REQUESTER_MAX + 1]; /* OTP_ISSUE, OTP_VERIFY: who asks */
    /* READ_CALL: fills cmd->err on failure; must not write. */
    int (*call)(pgw_store *store, pgw_command *cmd);
    /* The HTTP request's id (api.h pgw_request), which the request log
     * names too, for the writer's stderr line on a storage failure; 0:
     * no request's (a command line, the sweep). */
    uint64_t request_id;
    /* Output, valid once `done` runs. */
    int rc; /* PGW_OK, PGW_ECONFLICT, PGW_EINSUFFICIENT, PGW_ESTATE, PGW_EUNAVAILABLE ... */
    pgw_err err;
    bool replayed;                 /* the key was used before with the same fingerprint */
    bool key_deferred;             /* applying: the key is recorded with the answer (command.c) */
    pgw_idem_record record;        /* what the key produced (first transfer id, count) */
    pgw_event_record event_record; /* EVENT: what its key records for reconciliation */
    /* EARN: earned; EXPIRE_LOT: expired; REFUND: reversed now (collected);
     * HOLD: reserved; CAPTURE, REDEEM: spent; VOID, EXPIRE_HOLD: released;
     * RETURN: given back. */
    int64_t points_moved;
    int64_t written_off;        /* REFUND: what the member's lots could not cover (clamp) */
    int64_t debt_added;         /* REFUND: what became debt (allow_negative) */
    int64_t spend_left;         /* RETURN: what the spend has left to give back, after */
    int64_t returned_lapsed;    /* RETURN: of points_moved, back in lots past their expiry */
    pgw_member_figures figures; /* the member's figures after the command (see asked_at) */
    /* Writer's own: `figures` are kept by the command as it writes, from
     * its activity read on (an event's: apply_event), not read after it. */
    bool figures_kept;
    /* Writer's own: the member an event enrols, its row not yet written:
     * written with its first lot (credit_member), or after the event's
     * points when it earns none (apply_event). */
    const pgw_member_activity *enrolling;
    pgw_hold_state hold_state;   /* HOLD ... EXPIRE_HOLD: the hold's state after */
    char answer[PGW_ANSWER_MAX]; /* rendered, or the stored one on a replay */
    /* The member named was merged into `member` (READ_MEMBER, and any
     * command naming a merged id); BIND: the member merged away. */
    char merged_from[PGW_ID_MAX + 1];
    pgw_import_match import_match; /* IMPORT */
    bool import_batch_named;       /* IMPORT: the operator named the batch */
    /* READ_MEMBER */
    bool found;
    int32_t tier; /* index into the rules' tiers, -1 when none */
    size_t n_expiring;
    pgw_expiring expiring[PGW_EXPIRING_SHOWN];
    size_t n_identities;
    pgw_identity_key identities[PGW_IDENTITIES_SHOWN];
    bool follows;                /* READ_MEMBER: follows the official account */
    bool follow_seen;            /* OA_FOLLOW: its `original` was recorded already (a redelivery) */
    bool follow_new;             /* PGW_OA_NOTE: nothing was recorded of the openid before */
    int64_t quota;               /* SUBSCRIBE: the template's quota after */
    int64_t retry_at;            /* when the same request may work: after PGW_ELIMITED, the
                                  * hourly sign-up limit's PGW_ERISK, or (api.c) a login
                                  * WeChat failed */
    pgw_risk_rule risk_rule;     /* after PGW_ERISK: the rule that refused, if one of ours */
    pgw_otp_verdict otp_verdict; /* OTP_VERIFY (a replay: VERIFIED) */
    int64_t otp_tries_left;      /* OTP_VERIFY: after a wrong code */
    int64_t pruned_sessions, pruned_enrolments, pruned_reminders; /* PRUNE */
    int32_t new_tier; /* EVENT: the tier a purchase or refund moved the member to, -1 none */
    /* READ_MEMBER: the quota of each of `templates` (the configured ones,
     * borrowed; NULL ends them), so that old templates' rows hide none. */
    const char *templates[PGW_TEMPLATES_SHOWN];
    size_t n_subscriptions;
    pgw_subscription subscriptions[PGW_TEMPLATES_SHOWN];
    /* READ_HISTORY, and READ_MEMBER when page_cap > 0 (the newest):
     * caller-owned room for page_cap transfers; n_page filled */
    int64_t before;
    pgw_transfer *page;
    size_t page_cap, n_page;
};

/* Risk rules (config "risk"); 0 turns a limit off. A breach is PGW_ERISK,
 * the rule in the command's risk_rule, with a message that starts with
 * its name ("max_points_per_event: ..."). */
typedef struct pgw_risk_limits {
    int64_t max_points_per_event;
    int64_t max_events_per_member_per_day;
    int64_t max_redeem_points_per_day;
    int64_t max_behaviour_points_per_day;
    int64_t new_member_redeem_hours;
    bool unique_receipts;
    int64_t max_new_members_per_ip_per_hour;
} pgw_risk_limits;

/* How the ledger behaves: from the config. */
typedef struct pgw_ledger_policy {
    pgw_expiry expiry;      /* lots' expiry (EARN) */
    pgw_tz tz;              /* the mall's time zone, for expiry dates */
    bool allow_negative;    /* a refund beyond the lots becomes debt; else written off */
    const pgw_rules *rules; /* EVENT: the earning rules (borrowed; NULL refuses events) */
    bool auto_enroll;       /* EVENT: an unknown member is created (else PGW_ENOTFOUND) */
    pgw_risk_limits risk;
    /* Notifications: queue a notice in the outbox with every purchase that
     * earned, refund that reversed and redemption that spent (store.h
     * pgw_store_enqueue_notice); arrivals within coalesce_s become one. */
    bool notify;
    int64_t notify_coalesce_s;
    pgw_otp_limits otp; /* OTP_ISSUE */
} pgw_ledger_policy;

/* Checks a command's shape before it is queued (no store access). */
int pgw_command_check(const pgw_command *cmd, pgw_err *err);

/*
 * Applies `cmd` inside the store's open transaction, in its own savepoint:
 * a command that fails, and a replay, leave no trace (rollback to the
 * savepoint). Sets every output field; cmd->rc says how it went. The caller
 * must check pgw_store_in_transaction() afterwards (writer.h).
 */
void pgw_command_apply(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd);

/* Whether a kind only reads (a reader's queue takes only those). */
bool pgw_command_reads(pgw_command_kind kind);

/* When `cmd` was asked: asked_at, or `at` when it names none. A limit's
 * Retry-After counts from it, and holds and lots are met as they are then. */
int64_t pgw_command_asked_at(const pgw_command *cmd);

/* Answers a read-only command inside the store's open read transaction. */
void pgw_command_read(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd);

#endif
