/*
 * command.c - see command.h.
 *
 * Each kind has one function that reads what it needs, checks its rules,
 * writes its rows and appends its transfers, returning the first error;
 * pgw_command_apply wraps it in a savepoint and the idempotency record.
 * Memory: lots and portions are read in fixed pages on the stack, so a
 * member with any number of lots costs bounded memory.
 */
#include "command.h"
#include "event_command.h" /* PGW_EVENT_AHEAD_MAX_S */

#include "core/arith.h"
#include "core/assertions.h"
#include "core/civil.h"
#include "core/digest.h"
#include "core/text.h"
#include "util/csv.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LOT_PAGE  64 /* lots or portions read at a time */
#define HOLD_PAGE 16 /* due holds released at a time */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool filled(const char *text, size_t cap)
{
    return text[0] != '\0' && memchr(text, '\0', cap) != NULL;
}

/*
 * Copies a text into a field that holds it: every caller's source is
 * bounded as its destination (one cut short would be another key, member
 * or account). snprintf's "%s" did the same per field, a few percent of
 * the writer's time per event.
 */
static void copy_text(char *out, size_t cap, const char *text)
{
    size_t n = strnlen(text, cap);
    PGW_ASSERT(n < cap);
    memcpy(out, text, n + 1);
}

static void copy_account(char out[PGW_ACCOUNT_MAX + 1], const char *account)
{
    copy_text(out, PGW_ACCOUNT_MAX + 1, account);
}

/* Adds a transfer of `kind` to the command; the common fields are stamped later. */
static pgw_transfer *add_transfer(pgw_command *cmd, pgw_transfer_kind kind, const char *debit,
                                  const char *credit, int64_t points)
{
    PGW_ASSERT(cmd->n_transfers < PGW_COMMAND_TRANSFERS_MAX);
    PGW_ASSERT(points > 0);
    pgw_transfer *t = &cmd->transfers[cmd->n_transfers++];
    memset(t, 0, sizeof(*t));
    t->kind = kind;
    copy_account(t->debit, debit);
    copy_account(t->credit, credit);
    t->points = points;
    return t;
}

static void member_account(const char *member, char out[PGW_ACCOUNT_MAX + 1])
{
    PGW_STATIC_ASSERT(PGW_ACCOUNT_MAX >= 7 + PGW_ID_MAX, "a member's account holds its id");
    memcpy(out, "member:", 7);
    copy_text(out + 7, PGW_ACCOUNT_MAX + 1 - 7, member);
}

static void redeemed_account(const char *shop, char out[PGW_ACCOUNT_MAX + 1])
{
    snprintf(out, PGW_ACCOUNT_MAX + 1, "shop:%s:redeemed", shop);
}

/* The kinds whose key is looked up before anything else (command.h). */
static bool key_checked_first(pgw_command_kind kind)
{
    return kind == PGW_COMMAND_REFUND || kind == PGW_COMMAND_HOLD || kind == PGW_COMMAND_CAPTURE ||
           kind == PGW_COMMAND_VOID || kind == PGW_COMMAND_REDEEM || kind == PGW_COMMAND_EVENT ||
           kind == PGW_COMMAND_BIND || kind == PGW_COMMAND_IMPORT ||
           kind == PGW_COMMAND_SUBSCRIBE || kind == PGW_COMMAND_END_SESSION ||
           kind == PGW_COMMAND_OTP_VERIFY || kind == PGW_COMMAND_RETURN;
}

/*
 * Records the key after the command's appends; a replay found here is
 * undone by the caller. A key looked up first (key_checked_first) cannot
 * meet a replay now: the look-up was in this transaction. Its record waits
 * for the answer (answer()) and goes in with it, one statement instead of
 * an insert and an update.
 */
static int record_key(pgw_store *store, pgw_command *cmd)
{
    if (cmd->kind == PGW_COMMAND_EXPIRE_HOLD)
        return PGW_OK; /* idempotent by the hold's state */
    int64_t first = cmd->n_transfers > 0 ? cmd->transfers[0].id : 0;
    cmd->key_deferred = key_checked_first(cmd->kind);
    if (!cmd->key_deferred) {
        int rc = pgw_store_record_key(store, cmd->key, cmd->fingerprint, first,
                                      (int64_t)cmd->n_transfers, now_us(), NULL, NULL,
                                      &cmd->replayed, &cmd->record, &cmd->err);
        if (rc != PGW_OK || cmd->replayed)
            return rc; /* a replay: cmd->record is the first one's */
    }
    memcpy(cmd->record.fingerprint, cmd->fingerprint, PGW_HASH_LEN);
    cmd->record.first_transfer = first;
    cmd->record.transfer_count = (int64_t)cmd->n_transfers;
    return PGW_OK;
}

/*
 * Stamps the fields every transfer of a command shares, appends them all,
 * then records the key. Every kind calls this once, after its transfers
 * are known; anything it writes after must first check cmd->replayed.
 */
static int append_transfers(pgw_store *store, pgw_command *cmd)
{
    int64_t recorded = now_us();
    int rc = PGW_OK;
    for (size_t i = 0; rc == PGW_OK && i < cmd->n_transfers; i++) {
        pgw_transfer *t = &cmd->transfers[i];
        if (cmd->kind != PGW_COMMAND_TRANSFERS) {
            copy_text(t->idem_key, sizeof(t->idem_key), cmd->key);
            memcpy(t->fingerprint, cmd->fingerprint, PGW_HASH_LEN);
            if (t->shop_id[0] == '\0')
                copy_text(t->shop_id, sizeof(t->shop_id), cmd->shop);
            if (t->channel[0] == '\0')
                copy_text(t->channel, sizeof(t->channel), cmd->channel);
            if (t->reference[0] == '\0')
                copy_text(t->reference, sizeof(t->reference), cmd->reference);
            t->occurred_at = cmd->at;
            t->recorded_at_us = recorded;
        }
        rc = pgw_store_append_transfer(store, t, &cmd->err);
    }
    return rc == PGW_OK ? record_key(store, cmd) : rc;
}

/* ---- spending lots -------------------------------------------------------- */

static int activity_days(const pgw_ledger_policy *policy, int64_t at, pgw_activity_days *out,
                         pgw_err *err);

/* Spends `points` of a hold's portions, in their lots' consumption order,
 * recording what it took of each lot under `spent_by` (a capture's key, so
 * that a return can give them back; NULL: a debt repaid, never given back). */
static int spend_portions(pgw_store *store, const char *hold, int64_t points, const char *spent_by,
                          pgw_err *err)
{
    pgw_portion page[LOT_PAGE];
    pgw_lot cursor;
    bool started = false;
    int rc = PGW_OK;
    while (rc == PGW_OK && points > 0) {
        size_t n = 0;
        rc =
            pgw_store_hold_portions(store, hold, started ? &cursor : NULL, page, LOT_PAGE, &n, err);
        if (rc == PGW_OK && n == 0)
            rc = pgw_err_set(err, PGW_EIO, "hold %s reserves fewer points than it says", hold);
        for (size_t i = 0; rc == PGW_OK && i < n && points > 0; i++) {
            int64_t take = pgw_min64(page[i].points, points);
            rc = pgw_store_add_portion(store, hold, page[i].lot.id, -take, err);
            if (rc == PGW_OK)
                rc = pgw_store_move_lot_points(store, page[i].lot.id, 0, -take, err);
            if (rc == PGW_OK && spent_by != NULL)
                rc = pgw_store_add_spent(store, spent_by, page[i].lot.id, take, err);
            points -= take;
        }
        cursor = page[n > 0 ? n - 1 : 0].lot;
        started = true;
    }
    return rc;
}

/*
 * Repays the member's debt from the `unspent` points hold `h` still
 * reserves, before the rest goes back to its lots. Such debt comes from a
 * refund made while the points were held, which could not take them; back
 * in the lots they would be spent or expire while still owed, and the
 * member would pay for them twice. The reference ledger's release_hold.
 */
static int repay_from_hold(pgw_store *store, const pgw_hold_record *h, int64_t unspent,
                           pgw_err *err)
{
    bool found = false;
    int64_t debt = 0;
    int rc = unspent > 0 ? pgw_store_member_debt(store, h->member, &found, &debt, err) : PGW_OK;
    int64_t repay = pgw_min64(debt, unspent);
    if (rc == PGW_OK && repay > 0)
        rc = spend_portions(store, h->id, repay, NULL, err);
    if (rc == PGW_OK && repay > 0)
        rc = pgw_store_put_member(store, h->member, debt - repay, now_us(), err);
    return rc;
}

/*
 * Settles hold `h` (its state, captured and capture transfer set) at `at`,
 * or at its deadline when it expired: what it did not spend repays debt
 * first (repay_from_hold), its lots get back the rest then, and none of it
 * counts as redeemed on the day the hold was made any more
 * (check_spend_risk counted all of it then, for max_redeem_points_per_day:
 * a voided hold kept a member from redeeming for the rest of the day).
 */
static int settle_hold(pgw_store *store, const pgw_ledger_policy *policy, const pgw_hold_record *h,
                       int64_t at, pgw_err *err)
{
    PGW_ASSERT(h->state != PGW_HOLD_PENDING && h->captured >= 0 && h->captured <= h->points);
    int64_t unspent = h->points - h->captured;
    int64_t released = h->state == PGW_HOLD_EXPIRED ? h->deadline : at;
    int rc = repay_from_hold(store, h, unspent, err);
    if (rc == PGW_OK)
        rc = pgw_store_release_hold(store, h->id, released, err);
    if (rc == PGW_OK && unspent > 0 && policy->risk.max_redeem_points_per_day > 0) {
        pgw_activity_days days = {0}; /* -O3 cannot see activity_days fill it */
        rc = activity_days(policy, h->created_at, &days, err);
        if (rc == PGW_OK)
            rc = pgw_store_take_back_rule_day(store, h->member, days.today, "redeem", unspent, err);
    }
    return rc == PGW_OK ? pgw_store_update_hold(store, h, err) : rc;
}

/* Releases every hold of `member` that is pending past `at` (they expire first). */
static int expire_due_holds(pgw_store *store, const pgw_ledger_policy *policy, const char *member,
                            int64_t at, pgw_err *err)
{
    pgw_hold_record due[HOLD_PAGE];
    size_t n = 0;
    int rc;
    /* Each round expires what it read, so the next starts from the top again. */
    while ((rc = pgw_store_member_due_holds(store, member, at, due, HOLD_PAGE, &n, err)) ==
               PGW_OK &&
           n > 0) {
        for (size_t i = 0; rc == PGW_OK && i < n; i++) {
            due[i].state = PGW_HOLD_EXPIRED;
            rc = settle_hold(store, policy, &due[i], at, err);
        }
        if (rc != PGW_OK)
            break;
    }
    return rc;
}

/*
 * Takes up to `points` from the member's free, unexpired lots in
 * consumption order: spent (hold NULL) or reserved for `hold`. A spend
 * `spent_by` a redemption's key records what it took of each lot, for its
 * returns. *taken is what the lots covered.
 */
static int take_lots(pgw_store *store, const char *member, int64_t at, int64_t points,
                     const char *hold, const char *spent_by, int64_t *taken, pgw_err *err)
{
    pgw_lot page[LOT_PAGE];
    pgw_lot_take takes[LOT_PAGE];
    pgw_lot cursor;
    bool started = false;
    int64_t want = points;
    int rc = PGW_OK;
    while (rc == PGW_OK && want > 0) {
        size_t n = 0, n_takes = 0;
        rc = pgw_store_spendable_lots(store, member, at, started ? &cursor : NULL, page, LOT_PAGE,
                                      &n, err);
        if (rc != PGW_OK || n == 0)
            break;
        int64_t shortfall = 0;
        rc = pgw_lots_plan_take(page, n, member, at, want, takes, LOT_PAGE, &n_takes, &shortfall);
        PGW_ASSERT(rc == PGW_OK); /* takes has room for the whole page */
        for (size_t i = 0; rc == PGW_OK && i < n_takes; i++) {
            const pgw_lot *lot = &page[takes[i].lot];
            int64_t p = takes[i].points;
            rc = pgw_store_move_lot_points(store, lot->id, -p, hold ? p : 0, err);
            if (rc == PGW_OK && hold != NULL)
                rc = pgw_store_add_portion(store, hold, lot->id, p, err);
            if (rc == PGW_OK && spent_by != NULL)
                rc = pgw_store_add_spent(store, spent_by, lot->id, p, err);
        }
        want = shortfall;
        cursor = page[n - 1];
        started = true;
    }
    *taken = points - want;
    return rc;
}

/* The clock for the state a command meets, holds due and lots expired:
 * when it is applied (command.h). An event's occurred_at (cmd->at) dates what it does
 * (its transfers' period, its lot's expiry); a backlog's refund must not
 * reverse points that expired since (the sweep may have moved them), nor
 * a till's fast clock release another till's hold before its deadline. */
int64_t pgw_command_asked_at(const pgw_command *cmd)
{
    return cmd->asked_at > 0 ? cmd->asked_at : cmd->at;
}

/* The moment of the figures a command's answer and notice tell (command.h asked_at). */
static int64_t figures_at(const pgw_command *cmd)
{
    return pgw_max64(cmd->at, cmd->asked_at);
}

/*
 * The command's member's figures after `points` credited to it, with the
 * member's debt `debt` as credit_member met it, when they are kept
 * (figures_kept): a new lot of them, free until its expiry. A debt
 * repaid (the member's row, perhaps holds released before) is read after
 * instead: rare, and more than a lot to follow.
 */
static void keep_figures(pgw_command *cmd, int64_t debt, int64_t points, int64_t expires_at)
{
    pgw_member_figures *f = &cmd->figures, after = *f;
    bool lapsed = expires_at <= figures_at(cmd); /* in the balance, spendable by nothing */
    cmd->figures_kept = cmd->figures_kept && debt == 0 && f->debt == 0 &&
                        pgw_add(f->balance, points, &after.balance) == PGW_OK &&
                        (lapsed || (pgw_add(f->free, points, &after.free) == PGW_OK &&
                                    pgw_add(f->available, points, &after.available) == PGW_OK &&
                                    pgw_add(f->unexpired, points, &after.unexpired) == PGW_OK));
    if (cmd->figures_kept)
        *f = after;
}

/* Whether `member` is the one the command enrols, its row not yet written. */
static bool enrolled_here(const pgw_command *cmd, const char *member)
{
    return cmd->enrolling != NULL && strcmp(member, cmd->member) == 0;
}

/* A spend (hold or redemption) of `points` needs the member's free points. */
static int check_spendable(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                           int64_t points)
{
    if (points < 1 || points > PGW_POINTS_MAX)
        return pgw_err_set(&cmd->err, PGW_EINVAL, "points must be 1..%lld, got %lld",
                           (long long)PGW_POINTS_MAX, (long long)points);
    int rc = expire_due_holds(store, policy, cmd->member, cmd->at, &cmd->err);
    bool found = false;
    pgw_member_figures f;
    if (rc == PGW_OK)
        rc = pgw_store_member_figures(store, cmd->member, cmd->at, &found, &f, &cmd->err);
    /* A spend never enrolls: a member nobody is is not found (README), as an
     * identity nobody holds is. */
    if (rc == PGW_OK && !found)
        return pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no member %s", cmd->member);
    if (rc == PGW_OK && f.free - f.debt < points)
        rc = pgw_ledger_refuse_short(&cmd->err, cmd->member, f.free - f.debt, points);
    return rc;
}

static int activity_days(const pgw_ledger_policy *policy, int64_t at, pgw_activity_days *out,
                         pgw_err *err);

/* Points earned today under rules whose name starts with `prefix`. */
static int64_t today_points(const pgw_member_activity *a, const char *prefix)
{
    int64_t sum = 0;
    for (size_t i = 0; i < a->n_today; i++)
        sum += strncmp(a->today[i].rule, prefix, strlen(prefix)) == 0 ? a->today[i].points : 0;
    return sum;
}

/* Each rule's name (command.h): its refusal's first word and its metric label. */
static const char *const RISK_RULE_NAMES[PGW_RISK_RULES_END] = {
    [PGW_RISK_MAX_POINTS_PER_EVENT] = "max_points_per_event",
    [PGW_RISK_MAX_EVENTS_PER_MEMBER_PER_DAY] = "max_events_per_member_per_day",
    [PGW_RISK_MAX_REDEEM_POINTS_PER_DAY] = "max_redeem_points_per_day",
    [PGW_RISK_MAX_BEHAVIOUR_POINTS_PER_DAY] = "max_behaviour_points_per_day",
    [PGW_RISK_NEW_MEMBER_REDEEM_HOURS] = "new_member_redeem_hours",
    [PGW_RISK_UNIQUE_RECEIPTS] = "unique_receipts",
    [PGW_RISK_SELF_REFERRAL] = "self_referral",
    [PGW_RISK_MAX_NEW_MEMBERS_PER_IP_PER_HOUR] = "max_new_members_per_ip_per_hour",
};

const char *pgw_risk_rule_name(pgw_risk_rule rule)
{
    return rule > PGW_RISK_NONE && rule < PGW_RISK_RULES_END ? RISK_RULE_NAMES[rule] : NULL;
}

/* Refuses `cmd` by `rule` (PGW_ERISK): the rule kept in risk_rule for
 * whoever counts refusals, its name put before the message by the same
 * table, so that the two cannot disagree. */
static int refuse_risk(pgw_command *cmd, pgw_risk_rule rule, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse_risk(pgw_command *cmd, pgw_risk_rule rule, const char *fmt, ...)
{
    const char *name = pgw_risk_rule_name(rule);
    PGW_ASSERT(name != NULL);
    /* `why` ends inside a character only when cut, too long for a message:
     * then pgw_err_set cuts the whole, the name before it, on a character
     * ahead of that point. */
    char why[PGW_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    cmd->risk_rule = rule;
    return pgw_err_set(&cmd->err, PGW_ERISK, "%s: %s", name, why);
}

/* Risk rules on spending: new members wait; redemptions per day are capped.
 * Counts the spend in today's "redeem" total when it is allowed. */
static int check_spend_risk(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                            int64_t points)
{
    const pgw_risk_limits *r = &policy->risk;
    int64_t created = 0;
    int rc = r->new_member_redeem_hours > 0
                 ? pgw_store_member_created(store, cmd->member, &created, &cmd->err)
                 : PGW_OK;
    if (rc == PGW_OK && created > 0 &&
        cmd->at * 1000000 < created + r->new_member_redeem_hours * 3600 * 1000000)
        return refuse_risk(cmd, PGW_RISK_NEW_MEMBER_REDEEM_HOURS,
                           "member %s joined less than %lld hours ago", cmd->member,
                           (long long)r->new_member_redeem_hours);
    if (rc != PGW_OK || r->max_redeem_points_per_day <= 0)
        return rc; /* no cap: nothing to count */
    pgw_activity_days days;
    pgw_member_activity a;
    bool found = false;
    rc = activity_days(policy, cmd->at, &days, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_member_activity(store, cmd->member, &days, &found, &a, &cmd->err);
    if (rc == PGW_OK && !a.today_read)
        rc = pgw_store_member_today(store, cmd->member, days.today, &a, &cmd->err);
    if (rc == PGW_OK && today_points(&a, "redeem") + points > r->max_redeem_points_per_day)
        return refuse_risk(cmd, PGW_RISK_MAX_REDEEM_POINTS_PER_DAY,
                           "%lld redeemed today, %lld more asked, limit %lld",
                           (long long)today_points(&a, "redeem"), (long long)points,
                           (long long)r->max_redeem_points_per_day);
    if (rc == PGW_OK && found)
        rc = pgw_store_add_rule_day(store, cmd->member, days.today, "redeem", points, &cmd->err);
    return rc;
}

/* Takes all of `points` or fails: lots that expired but were not yet swept
 * count in the figures and cannot be spent. */
static int take_all(pgw_store *store, pgw_command *cmd, int64_t points, const char *hold)
{
    int64_t taken = 0;
    const char *spent_by = hold == NULL ? cmd->key : NULL; /* a redemption's */
    int rc = take_lots(store, cmd->member, cmd->at, points, hold, spent_by, &taken, &cmd->err);
    if (rc == PGW_OK && taken < points)
        rc = pgw_ledger_refuse_expired(&cmd->err, cmd->member, taken, points);
    return rc;
}

/* ---- earning ------------------------------------------------------------------ */

/*
 * Credits `points` to `member`: repays its debt first, the rest becomes a
 * lot expiring per the policy, linked to transfer `source`. `debt_read`:
 * the member's debt as this command read it (the member exists), or NULL
 * to read it here (a member not found is created).
 */
static int credit_member(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                         const char *member, const int64_t *debt_read, int64_t points,
                         int64_t source)
{
    bool known = debt_read != NULL;
    int64_t debt = known ? *debt_read : 0, expires_at = 0;
    int rc = known ? PGW_OK : pgw_store_member_debt(store, member, &known, &debt, &cmd->err);
    /* Holds past their deadline repay debt as they are released: before
     * these points do, as if each had been released at its deadline (the
     * reference ledger's order). Only a member in debt pays the read. */
    if (rc == PGW_OK && debt > 0)
        rc = expire_due_holds(store, policy, member, pgw_command_asked_at(cmd), &cmd->err);
    if (rc == PGW_OK && debt > 0)
        rc = pgw_store_member_debt(store, member, &known, &debt, &cmd->err);
    int64_t repay = pgw_min64(debt, points);
    /* Only a new member or a repayment writes the member's row: an
     * unchanged row costs nothing at commit. */
    if (rc == PGW_OK && (!known || repay > 0))
        rc = pgw_store_put_member(store, member, debt - repay, now_us(), &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_expiry_at(&policy->expiry, &policy->tz, cmd->at, &expires_at, &cmd->err);
    if (rc == PGW_OK && points > repay) {
        pgw_lot lot = {.points = points - repay,
                       .left = points - repay,
                       .earned_at = cmd->at,
                       .expires_at = expires_at,
                       .source_transfer = source};
        copy_text(lot.member, sizeof(lot.member), member);
        bool enrols = enrolled_here(cmd, member);
        rc = enrols ? pgw_store_add_member(store, member, cmd->enrolling, now_us(), &lot, &cmd->err)
                    : pgw_store_insert_lot(store, &lot, &cmd->err);
        if (enrols)
            cmd->enrolling = NULL;
    }
    if (rc == PGW_OK && strcmp(member, cmd->member) == 0)
        keep_figures(cmd, debt, points, expires_at);
    return rc;
}

/* Repays debt first, puts the rest in a lot, records a purchase for refunds. */
static int finish_earn(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                       const int64_t *debt_read, size_t first, size_t n_funders)
{
    int rc = credit_member(store, policy, cmd, cmd->member, debt_read, cmd->points_moved,
                           cmd->transfers[first].id);
    if (rc != PGW_OK || cmd->amount_fen == 0)
        return rc;
    pgw_earn_record e = {.amount_fen = cmd->amount_fen,
                         .points = cmd->points_moved,
                         .first_transfer = cmd->transfers[first].id,
                         .n_funders = n_funders};
    copy_text(e.key, sizeof(e.key), cmd->key);
    copy_text(e.member, sizeof(e.member), cmd->member);
    return pgw_store_insert_earn(store, &e, &cmd->err);
}

/* One EARN transfer per funder, then debt, lot and earn record (debt_read:
 * as credit_member takes it). */
static int apply_earn(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                      const int64_t *debt_read)
{
    pgw_earn_funder funders[PGW_EARN_FUNDERS_MAX];
    size_t n = 0;
    PGW_STATIC_ASSERT(PGW_EARN_FUNDERS_MAX <= PGW_COMMAND_TRANSFERS_MAX, "one transfer a funder");
    PGW_STATIC_ASSERT(sizeof(cmd->transfers[0].breakdown) == sizeof(funders[0].breakdown),
                      "same bound");
    int rc = pgw_earn_group(cmd->lines, cmd->n_lines, funders, &n, &cmd->points_moved, &cmd->err);
    if (rc == PGW_OK && (cmd->amount_fen < 0 || cmd->amount_fen > PGW_AMOUNT_FEN_MAX))
        rc = pgw_err_set(&cmd->err, PGW_EINVAL, "amount_fen must be 0..%lld",
                         (long long)PGW_AMOUNT_FEN_MAX);
    if (rc != PGW_OK)
        return rc;
    char credit[PGW_ACCOUNT_MAX + 1];
    member_account(cmd->member, credit);
    size_t first = cmd->n_transfers; /* a referral's referrer transfer may come first */
    for (size_t i = 0; i < n; i++) {
        pgw_transfer *t = add_transfer(
            cmd, cmd->kind == PGW_COMMAND_IMPORT ? PGW_TRANSFER_IMPORT : PGW_TRANSFER_EARN,
            funders[i].debit, credit, funders[i].points);
        memcpy(t->breakdown, funders[i].breakdown, sizeof(t->breakdown));
    }
    rc = append_transfers(store, cmd);
    return rc == PGW_OK && !cmd->replayed ? finish_earn(store, policy, cmd, debt_read, first, n)
                                          : rc;
}

/*
 * When a lot a merge brought came to its member: the merge of its earner,
 * then of each member it went into, until the one into its member (a hop
 * for each merge the lot went through, M1 into M3 then M3 into M2 is two;
 * PGW_MERGE_HOPS_MAX at most, a bound on the walk). *traced false when a
 * hop wrote no transfer (a member merged with a balance of 0) or the way
 * does not reach the lot's member within the bound.
 */
static int lot_arrival(pgw_store *store, const pgw_lot *lot, const char *earner, int64_t *arrived,
                       bool *traced, pgw_err *err)
{
    char hop[PGW_ID_MAX + 1];
    copy_text(hop, sizeof(hop), earner);
    *traced = false;
    for (int i = 0; i < PGW_MERGE_HOPS_MAX && strcmp(hop, lot->member) != 0; i++) {
        bool found = false;
        char into[PGW_ID_MAX + 1];
        int rc = pgw_store_merge_of(store, hop, &found, arrived, into, err);
        if (rc != PGW_OK || !found)
            return rc;
        memcpy(hop, into, sizeof(hop));
    }
    *traced = strcmp(hop, lot->member) == 0;
    return PGW_OK;
}

/*
 * An expiry is dated by its run (cmd->at: the sweep's clock, expire's
 * --as-of), but never before the merge that brought its lot to the member
 * it debits: a run as of a moment before that merge would take the points
 * from the survivor's account before they were in it (its balance in the
 * log short of them until the merge, the merged member's holding them), so
 * the pool would show a debt nobody owed. A lot its member earned keeps the
 * run's date; one a merge brought (its earn credited another member) is
 * dated at that merge when it is later, not at a later merge that brought
 * others (which would move the expiry out of the run's period). When the
 * merge cannot be traced, the newest merge into the member bounds it.
 * Nor is it dated before points last came back to the lot (`back_at`: a
 * return's date, a hold's release), for the same reason: the return's
 * credit is dated then, and a void's points were not free before.
 */
static int date_expiry(pgw_store *store, const pgw_lot *lot, int64_t back_at, pgw_command *cmd)
{
    cmd->at = pgw_max64(cmd->at, back_at);
    char own[PGW_ACCOUNT_MAX + 1];
    member_account(lot->member, own);
    pgw_transfer first;
    size_t n = 0;
    int rc = lot->source_transfer > 0 ? pgw_store_read_transfers(store, lot->source_transfer - 1,
                                                                 &first, 1, &n, &cmd->err)
                                      : PGW_OK;
    if (rc != PGW_OK ||
        (n == 1 && first.id == lot->source_transfer && strcmp(first.credit, own) == 0))
        return rc;
    int64_t merged = 0;
    bool traced = false;
    if (n == 1 && first.id == lot->source_transfer && strncmp(first.credit, "member:", 7) == 0)
        rc = lot_arrival(store, lot, first.credit + 7, &merged, &traced, &cmd->err);
    if (rc == PGW_OK && !traced)
        rc = pgw_store_merged_in_at(store, lot->member, &merged, &cmd->err);
    if (rc == PGW_OK && merged > cmd->at)
        cmd->at = merged;
    return rc;
}

/*
 * What is left of a lot moves to system:expired. The key names the lot and
 * how much of it had expired before, so each expiry of a lot (a lot can
 * expire again after a hold on it is released) is its own idempotent event.
 */
static int apply_expire_lot(pgw_store *store, pgw_command *cmd)
{
    pgw_lot lot;
    bool found = false;
    int64_t expired = 0, back_at = 0;
    int rc = pgw_store_get_lot(store, cmd->lot_id, &found, &lot, &expired, &back_at, &cmd->err);
    if (rc == PGW_OK && !found)
        rc = pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no lot %lld", (long long)cmd->lot_id);
    if (rc == PGW_OK && (lot.left == 0 || lot.expires_at > cmd->at))
        rc = pgw_err_set(&cmd->err, PGW_ESTATE, "lot %lld has nothing due to expire",
                         (long long)cmd->lot_id);
    if (rc == PGW_OK)
        rc = date_expiry(store, &lot, back_at, cmd);
    if (rc != PGW_OK)
        return rc;
    snprintf(cmd->key, sizeof(cmd->key), "expire:lot:%lld:%lld", (long long)lot.id,
             (long long)expired);
    memset(cmd->fingerprint, 0, sizeof(cmd->fingerprint));
    memcpy(cmd->fingerprint, &lot.left, sizeof(lot.left));
    snprintf(cmd->member, sizeof(cmd->member), "%s", lot.member);
    snprintf(cmd->channel, sizeof(cmd->channel), PGW_CHANNEL_SYSTEM);
    snprintf(cmd->reference, sizeof(cmd->reference), "lot:%lld", (long long)lot.id);
    cmd->points_moved = lot.left;
    char debit[PGW_ACCOUNT_MAX + 1];
    member_account(lot.member, debit);
    add_transfer(cmd, PGW_TRANSFER_EXPIRE, debit, "system:expired", lot.left);
    rc = append_transfers(store, cmd);
    if (rc == PGW_OK && !cmd->replayed)
        rc = pgw_store_expire_lot_points(store, lot.id, lot.left, &cmd->err);
    return rc;
}

/* ---- refunds ------------------------------------------------------------------ */

/* The funders' points of an earn, from its EARN transfers. */
static int earn_funders(pgw_store *store, const pgw_earn_record *e, pgw_transfer *out,
                        int64_t line_points[PGW_EARN_FUNDERS_MAX], pgw_err *err)
{
    size_t n = 0;
    int rc = pgw_store_read_transfers(store, e->first_transfer - 1, out, e->n_funders, &n, err);
    if (rc == PGW_OK && n != e->n_funders)
        rc = pgw_err_set(err, PGW_EIO, "earn %s: its transfers are missing", e->key);
    for (size_t i = 0; rc == PGW_OK && i < n; i++)
        line_points[i] = out[i].points;
    return rc;
}

/* Works out how much this refund reverses: floor(P*R/A) after minus before. */
static int refund_delta(const pgw_earn_record *e, int64_t amount_fen, int64_t *delta, pgw_err *err)
{
    int64_t total = 0, before = 0, after = 0;
    if (amount_fen < 1 || amount_fen > PGW_AMOUNT_FEN_MAX)
        return pgw_err_set(err, PGW_EINVAL, "amount_fen must be 1..%lld",
                           (long long)PGW_AMOUNT_FEN_MAX);
    if (pgw_add(e->refunded_fen, amount_fen, &total) != PGW_OK || total > e->amount_fen) {
        pgw_err_set(err, PGW_EEXCEEDS,
                    "refunds of %lld fen would exceed the original %lld fen of %s",
                    (long long)e->refunded_fen + amount_fen, (long long)e->amount_fen, e->key);
        pgw_err_figure(err, "original_fen", e->amount_fen);
        pgw_err_figure(err, "left_fen", e->amount_fen - e->refunded_fen);
        pgw_err_figure(err, "asked_fen", amount_fen);
        return PGW_EEXCEEDS;
    }
    int rc = pgw_refund_target(e->points, e->amount_fen, e->refunded_fen, &before, err);
    if (rc == PGW_OK)
        rc = pgw_refund_target(e->points, e->amount_fen, total, &after, err);
    *delta = after - before;
    return rc;
}

/* A refund of `e`, a purchase that earned nothing: there is nothing to
 * reverse, but the refund is the shop's real event (reconciliation looks
 * for it) and it is summed like any other, so that refunds never take
 * more than the purchase off the member's spend. */
static int refund_unearned(pgw_store *store, pgw_command *cmd, pgw_earn_record *e)
{
    snprintf(cmd->member, sizeof(cmd->member), "%s", e->member);
    cmd->original_at = e->occurred_at;
    cmd->points_moved = cmd->written_off = cmd->debt_added = 0;
    int rc = append_transfers(store, cmd); /* none: it records the key */
    if (rc != PGW_OK || cmd->replayed)
        return rc;
    e->refunded_fen += cmd->amount_fen;
    return pgw_store_update_earn(store, e, &cmd->err);
}

/*
 * A refund takes its purchase's points back from the lot the purchase
 * made first, and only what was spent of it from the member's other lots
 * (earliest expiry first). Taken from an earlier lot, another shop's, the
 * purchase's own lot expired later and was charged to the funders it had
 * just paid back (pgw_ledger_refund does the same).
 */
static int take_for_refund(pgw_store *store, const pgw_earn_record *e, int64_t at, int64_t want,
                           int64_t *taken, pgw_err *err)
{
    int64_t lot = 0, left = 0, rest = 0;
    int rc = want > 0 ? pgw_store_earn_lot(store, e, at, &lot, &left, err) : PGW_OK;
    int64_t own = pgw_min64(want, left);
    if (rc == PGW_OK && own > 0)
        rc = pgw_store_move_lot_points(store, lot, -own, 0, err);
    if (rc == PGW_OK)
        rc = take_lots(store, e->member, at, want - own, NULL, NULL, &rest, err);
    *taken = own + rest;
    return rc;
}

/* A refund dated before its purchase: both times, in UTC as the gateway's
 * clock is given, so that the till whose clock is off sees which. */
static int refund_too_early(pgw_command *cmd, int64_t purchased)
{
    char refund_at[PGW_RFC3339_MAX], purchase_at[PGW_RFC3339_MAX];
    pgw_format_utc(cmd->at, refund_at);
    pgw_format_utc(purchased, purchase_at);
    return pgw_err_set(&cmd->err, PGW_EINVAL,
                       "$.occurred_at (%s) is %lld s before its purchase %s (%s): a refund comes "
                       "after",
                       refund_at, (long long)(purchased - cmd->at), cmd->original, purchase_at);
}

/* Whether `rule` is a challenge's ("campaign:<id>" of kind challenge). */
static bool challenge_rule(const pgw_rules *rules, const char *rule)
{
    if (strncmp(rule, "campaign:", 9) != 0)
        return false;
    for (size_t i = 0; i < rules->n_campaigns; i++) {
        if (strcmp(rules->campaigns[i].id, rule + 9) == 0)
            return rules->campaigns[i].kind == PGW_CAMPAIGN_CHALLENGE;
    }
    return false;
}

/* Frees a refund's share of one "rule=points" entry of its purchase's
 * breakdown, on the purchase's day (a cut last entry is passed over). */
static int give_back_cap(pgw_store *store, const pgw_ledger_policy *policy,
                         const pgw_earn_record *e, int64_t day, int64_t refunded_before,
                         const char *entry, size_t len, pgw_err *err)
{
    char rule[PGW_RULE_MAX + 1];
    const char *eq = memchr(entry, '=', len);
    size_t digits = eq != NULL ? len - (size_t)(eq - entry) - 1 : 0;
    if (eq == NULL || (size_t)(eq - entry) > PGW_RULE_MAX || digits == 0 || digits > 18)
        return PGW_OK;
    int64_t points = 0;
    for (size_t i = 0; i < digits; i++) {
        if (eq[1 + i] < '0' || eq[1 + i] > '9')
            return PGW_OK;
        points = points * 10 + (eq[1 + i] - '0');
    }
    memcpy(rule, entry, (size_t)(eq - entry));
    rule[eq - entry] = '\0';
    if (challenge_rule(policy->rules, rule))
        return PGW_OK;
    int64_t before = 0, after = 0;
    int rc = pgw_refund_target(points, e->amount_fen, refunded_before, &before, err);
    if (rc == PGW_OK)
        rc = pgw_refund_target(points, e->amount_fen, e->refunded_fen, &after, err);
    if (rc == PGW_OK && after > before)
        rc = pgw_store_take_back_rule_day(store, e->member, day, rule, after - before, err);
    return rc;
}

/*
 * What a refund gives back of its purchase's daily caps: each capped
 * rule's points on the purchase's day, in the refunded share (floor(points
 * * R / A) after minus before, as the reversal's), read from its funders'
 * breakdowns. Not a challenge's: its day says it was paid this month
 * (paid_challenges), which a refund does not undo. Regression (a review of
 * the rules): an exchange (a refund, the same buy again that day) earned
 * nothing of a capped campaign, its cap used by points taken back.
 */
static int give_back_caps(pgw_store *store, const pgw_ledger_policy *policy,
                          const pgw_earn_record *e, const pgw_transfer *funders, int64_t amount_fen,
                          pgw_err *err)
{
    if (policy->rules == NULL) /* priced by no rules here: none to tell challenges by */
        return PGW_OK;
    pgw_activity_days days = {0}; /* filled on success only: -O3 warns */
    int rc = activity_days(policy, e->occurred_at, &days, err);
    for (size_t f = 0; rc == PGW_OK && f < e->n_funders; f++) {
        const char *entry = funders[f].breakdown;
        while (rc == PGW_OK && *entry != '\0') {
            size_t len = strcspn(entry, ",");
            rc = give_back_cap(store, policy, e, days.today, e->refunded_fen - amount_fen, entry,
                               len, err);
            entry += len + (entry[len] == ',');
        }
    }
    return rc;
}

/* Refunds cmd->original; `buyer` (NULL: whoever bought it) must be its
 * member, checked before anything is said of the purchase (its amount). */
static int apply_refund(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                        const char *buyer)
{
    pgw_earn_record e;
    bool found = false;
    int64_t delta = 0, taken = 0;
    int rc = pgw_store_get_earn(store, cmd->original, &found, &e, &cmd->err);
    if (rc == PGW_OK && !found)
        rc = pgw_store_get_unearned(store, cmd->original, &found, &e, &cmd->err);
    if (rc == PGW_OK && !found)
        rc = pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no purchase %s to refund", cmd->original);
    /* Another member's purchase by that id: as for an unknown member or
     * id, original_not_found (once 400 here, 422 there), and nothing of it
     * (refund_exceeds_original once told its amount). */
    if (rc == PGW_OK && buyer != NULL && strcmp(buyer, e.member) != 0)
        rc = pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no purchase %s of this member to refund",
                         cmd->original);
    /* A till's clock a year wrong would put the reversal in a period
     * that never had the purchase (settlement, the pool report). The
     * slack a fast till's purchase was allowed, its refund is too: the
     * service desk's clock may be right. */
    if (rc == PGW_OK && cmd->at + PGW_EVENT_AHEAD_MAX_S < e.occurred_at)
        rc = refund_too_early(cmd, e.occurred_at);
    if (rc == PGW_OK)
        rc = refund_delta(&e, cmd->amount_fen, &delta, &cmd->err);
    if (rc != PGW_OK)
        return rc;
    if (e.n_funders == 0)
        return refund_unearned(store, cmd, &e);
    snprintf(cmd->member, sizeof(cmd->member), "%s", e.member);
    cmd->original_at = e.occurred_at;
    /* What the purchase lost to expiry (swept or only due) is not taken
     * back: written off. */
    int64_t due = 0, lapsed = 0;
    rc = expire_due_holds(store, policy, e.member, pgw_command_asked_at(cmd), &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_earn_lot_due(store, &e, pgw_command_asked_at(cmd), &due, &cmd->err);
    if (rc == PGW_OK) {
        lapsed = pgw_refund_lapsed(delta, e.expired + due, e.written_off);
        rc = take_for_refund(store, &e, pgw_command_asked_at(cmd), delta - lapsed, &taken,
                             &cmd->err);
    }
    /* With clamp the member gives back only what their lots hold and the
     * rest is written off; with allow_negative the rest becomes debt. */
    int64_t shortfall = delta - lapsed - taken;
    int64_t collect = policy->allow_negative ? delta - lapsed : taken;
    pgw_transfer funders[PGW_EARN_FUNDERS_MAX];
    int64_t line_points[PGW_EARN_FUNDERS_MAX], parts[PGW_EARN_FUNDERS_MAX];
    if (rc == PGW_OK)
        rc = earn_funders(store, &e, funders, line_points, &cmd->err);
    /* What expired is the funders' by the report's shares: each gets back
     * the rest of what it funded (pgw_refund_split). */
    if (rc == PGW_OK)
        rc = pgw_refund_split(line_points, e.reversed, e.n_funders, collect, parts, &cmd->err);
    if (rc != PGW_OK)
        return rc;
    char debit[PGW_ACCOUNT_MAX + 1];
    member_account(e.member, debit);
    for (size_t f = 0; f < e.n_funders; f++) {
        if (parts[f] > 0) {
            pgw_transfer *t =
                add_transfer(cmd, PGW_TRANSFER_REVERSAL, debit, funders[f].debit, parts[f]);
            snprintf(t->reference, sizeof(t->reference), "earn:%lld", (long long)e.first_transfer);
        }
        e.reversed[f] += parts[f];
    }
    cmd->points_moved = collect;
    cmd->debt_added = policy->allow_negative ? shortfall : 0;
    cmd->written_off = lapsed + (policy->allow_negative ? 0 : shortfall);
    e.written_off += cmd->written_off;
    e.refunded_fen += cmd->amount_fen;
    rc = append_transfers(store, cmd);
    if (rc != PGW_OK || cmd->replayed)
        return rc;
    rc = pgw_store_update_earn(store, &e, &cmd->err);
    if (rc == PGW_OK)
        rc = give_back_caps(store, policy, &e, funders, cmd->amount_fen, &cmd->err);
    if (rc == PGW_OK && cmd->debt_added > 0) {
        int64_t debt = 0;
        rc = pgw_store_member_debt(store, e.member, &found, &debt, &cmd->err);
        if (rc == PGW_OK)
            rc = pgw_store_put_member(store, e.member, debt + cmd->debt_added, now_us(), &cmd->err);
    }
    return rc;
}

/* ---- holds and redemptions ------------------------------------------------------- */

static int check_spend_ids(pgw_command *cmd)
{
    if (!filled(cmd->hold_id, sizeof(cmd->hold_id)) || !filled(cmd->member, sizeof(cmd->member)) ||
        !filled(cmd->shop, sizeof(cmd->shop)))
        return pgw_err_set(&cmd->err, PGW_EINVAL,
                           "a hold or redemption id, a member and a shop "
                           "are required");
    return PGW_OK;
}

static int apply_hold(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    int rc = check_spend_ids(cmd);
    if (rc == PGW_OK && cmd->deadline <= cmd->at)
        rc = pgw_err_set(&cmd->err, PGW_EINVAL, "hold %s: the deadline must be after now",
                         cmd->hold_id);
    pgw_hold_record h;
    bool exists = false;
    if (rc == PGW_OK)
        rc = pgw_store_get_hold(store, cmd->hold_id, &exists, &h, &cmd->err);
    if (rc == PGW_OK && exists)
        rc = pgw_err_set(&cmd->err, PGW_ECONFLICT, "hold %s already exists", cmd->hold_id);
    if (rc == PGW_OK)
        rc = check_spendable(store, policy, cmd, cmd->points);
    if (rc == PGW_OK)
        rc = check_spend_risk(store, policy, cmd, cmd->points);
    if (rc != PGW_OK)
        return rc;
    h = (pgw_hold_record){.points = cmd->points,
                          .deadline = cmd->deadline,
                          .created_at = cmd->at,
                          .state = PGW_HOLD_PENDING};
    snprintf(h.id, sizeof(h.id), "%s", cmd->hold_id);
    snprintf(h.member, sizeof(h.member), "%s", cmd->member);
    snprintf(h.shop, sizeof(h.shop), "%s", cmd->shop);
    rc = pgw_store_insert_hold(store, &h, &cmd->err);
    if (rc == PGW_OK)
        rc = take_all(store, cmd, cmd->points, cmd->hold_id);
    cmd->points_moved = cmd->points;
    cmd->hold_state = PGW_HOLD_PENDING;
    return rc == PGW_OK ? append_transfers(store, cmd) : rc; /* none: records the key */
}

/* The hold cmd->hold_id, as its caller may see it: one limited to a shop
 * names it (cmd->shop), and another shop's hold is not there. */
static int visible_hold(pgw_store *store, pgw_command *cmd, pgw_hold_record *h)
{
    bool found = false;
    int rc = pgw_store_get_hold(store, cmd->hold_id, &found, h, &cmd->err);
    if (rc == PGW_OK && !found)
        return pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no hold %s", cmd->hold_id);
    if (rc == PGW_OK && cmd->shop[0] != '\0' && strcmp(cmd->shop, h->shop) != 0)
        return pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no hold %s at shop %s", cmd->hold_id,
                           cmd->shop);
    return rc;
}

/*
 * The hold to capture or void, pending at cmd->at. The member's other holds
 * already due are released first, as at their deadlines: their points
 * repay any debt before this one's do (see settle_hold).
 */
static int pending_hold(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                        pgw_hold_record *h)
{
    int rc = visible_hold(store, cmd, h);
    if (rc != PGW_OK)
        return rc;
    snprintf(cmd->member, sizeof(cmd->member), "%s", h->member);
    snprintf(cmd->shop, sizeof(cmd->shop), "%s", h->shop);
    cmd->hold_state = pgw_hold_state_at(h->state, h->deadline, cmd->at);
    if (cmd->hold_state != PGW_HOLD_PENDING)
        return pgw_err_set(&cmd->err, PGW_ESTATE, "hold %s is %s", cmd->hold_id,
                           pgw_hold_state_name(cmd->hold_state));
    return expire_due_holds(store, policy, h->member, cmd->at, &cmd->err);
}

static int apply_capture(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    pgw_hold_record h;
    int rc = pending_hold(store, policy, cmd, &h);
    int64_t spend = cmd->points <= 0 ? h.points : cmd->points;
    if (rc == PGW_OK && spend > h.points) {
        rc = pgw_err_set(&cmd->err, PGW_EINVAL, "hold %s holds %lld, %lld asked", cmd->hold_id,
                         (long long)h.points, (long long)spend);
        pgw_err_figure(&cmd->err, "held", h.points);
        pgw_err_figure(&cmd->err, "asked", spend);
    }
    if (rc == PGW_OK)
        rc = spend_portions(store, h.id, spend, cmd->key, &cmd->err);
    if (rc != PGW_OK)
        return rc;
    char debit[PGW_ACCOUNT_MAX + 1], credit[PGW_ACCOUNT_MAX + 1];
    member_account(h.member, debit);
    redeemed_account(h.shop, credit);
    pgw_transfer *t = add_transfer(cmd, PGW_TRANSFER_REDEEM, debit, credit, spend);
    snprintf(t->reference, sizeof(t->reference), "%s", h.id);
    rc = append_transfers(store, cmd);
    if (rc != PGW_OK || cmd->replayed)
        return rc;
    h.state = cmd->hold_state = PGW_HOLD_CAPTURED;
    h.captured = cmd->points_moved = spend;
    h.capture_transfer = t->id;
    return settle_hold(store, policy, &h, cmd->at, &cmd->err);
}

/* VOID (pending holds) and EXPIRE_HOLD (pending past the deadline). */
static int apply_release(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    pgw_hold_record h;
    int rc;
    if (cmd->kind == PGW_COMMAND_VOID) {
        rc = pending_hold(store, policy, cmd, &h);
    } else {
        bool found = false;
        rc = pgw_store_get_hold(store, cmd->hold_id, &found, &h, &cmd->err);
        if (rc == PGW_OK && (!found || h.state != PGW_HOLD_PENDING || h.deadline > cmd->at))
            rc = pgw_err_set(&cmd->err, PGW_ESTATE, "hold %s has nothing due to expire",
                             cmd->hold_id);
    }
    h.state = cmd->hold_state = cmd->kind == PGW_COMMAND_VOID ? PGW_HOLD_VOIDED : PGW_HOLD_EXPIRED;
    cmd->points_moved = h.points;
    if (rc == PGW_OK)
        rc = settle_hold(store, policy, &h, cmd->at, &cmd->err);
    return rc == PGW_OK ? append_transfers(store, cmd) : rc; /* none: records the key */
}

static int apply_redeem(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    int rc = check_spend_ids(cmd);
    if (rc == PGW_OK)
        rc = check_spendable(store, policy, cmd, cmd->points);
    if (rc == PGW_OK)
        rc = check_spend_risk(store, policy, cmd, cmd->points);
    if (rc == PGW_OK)
        rc = take_all(store, cmd, cmd->points, NULL);
    if (rc != PGW_OK)
        return rc;
    char debit[PGW_ACCOUNT_MAX + 1], credit[PGW_ACCOUNT_MAX + 1];
    member_account(cmd->member, debit);
    redeemed_account(cmd->shop, credit);
    pgw_transfer *t = add_transfer(cmd, PGW_TRANSFER_REDEEM, debit, credit, cmd->points);
    snprintf(t->reference, sizeof(t->reference), "%s", cmd->hold_id);
    cmd->points_moved = cmd->points;
    return append_transfers(store, cmd);
}

/* ---- returns: a spend's points given back ---------------------------------------- */

static int read_transfer(pgw_store *store, int64_t id, pgw_transfer *t, bool *found, pgw_err *err);

/* "redemption" or "captured hold": what cmd->original's key names. */
static const char *spend_name(const pgw_command *cmd)
{
    return strncmp(cmd->original, "capture:", 8) == 0 ? "captured hold" : "redemption";
}

/* The REDEEM transfer of spend cmd->original, as its caller may see it:
 * one limited to a shop (cmd->shop) finds no other shop's, as for holds. */
static int visible_spend(pgw_store *store, pgw_command *cmd, pgw_transfer *t)
{
    bool found = false;
    pgw_idem_record r;
    int rc = pgw_store_find_key(store, cmd->original, &found, &r, &cmd->err);
    if (rc == PGW_OK && found && r.transfer_count >= 1)
        rc = read_transfer(store, r.first_transfer, t, &found, &cmd->err);
    else
        found = false;
    found = found && t->kind == PGW_TRANSFER_REDEEM &&
            (cmd->shop[0] == '\0' || strcmp(cmd->shop, t->shop_id) == 0);
    if (rc == PGW_OK && !found)
        return pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no %s %s%s%s", spend_name(cmd), cmd->hold_id,
                           cmd->shop[0] != '\0' ? " at shop " : "", cmd->shop);
    return rc;
}

/* The member the spend's lots are now with (a merge moves lots), and its
 * debt, after its holds past their deadline repaid what they could (as
 * credit_member does for an earn). */
static int return_member(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                         int64_t *debt)
{
    pgw_portion first;
    size_t n = 0;
    bool found = false;
    int rc = pgw_store_spent_lots(store, cmd->original, &first, 1, &n, &cmd->err);
    if (rc == PGW_OK && n == 0)
        return pgw_err_set(&cmd->err, PGW_EIO, "%s %s records no lot", spend_name(cmd),
                           cmd->hold_id);
    if (rc == PGW_OK) {
        copy_text(cmd->member, sizeof(cmd->member), first.lot.member);
        rc = pgw_store_member_debt(store, cmd->member, &found, debt, &cmd->err);
    }
    if (rc == PGW_OK && *debt > 0)
        rc = expire_due_holds(store, policy, cmd->member, pgw_command_asked_at(cmd), &cmd->err);
    if (rc == PGW_OK && *debt > 0)
        rc = pgw_store_member_debt(store, cmd->member, &found, debt, &cmd->err);
    return rc;
}

/*
 * Gives cmd->points of the spend back, what it took last first: as if it
 * had spent that much less. As an earn's points do, they repay the
 * member's debt first (those go to no lot); the rest return to their lots,
 * with their expiry (a lot past its date: the next expiry run takes them,
 * dated no earlier than this return).
 */
static int give_back(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    int64_t debt = 0;
    int rc = return_member(store, policy, cmd, &debt);
    int64_t want = cmd->points, repay = pgw_min64(debt, cmd->points), to_debt = repay;
    pgw_portion page[LOT_PAGE];
    while (rc == PGW_OK && want > 0) {
        size_t n = 0;
        rc = pgw_store_spent_lots(store, cmd->original, page, LOT_PAGE, &n, &cmd->err);
        if (rc == PGW_OK && n == 0)
            rc = pgw_err_set(&cmd->err, PGW_EIO, "%s %s records fewer points than it says",
                             spend_name(cmd), cmd->hold_id);
        /* Each round empties what it read but the last lot: the next starts at the top. */
        for (size_t i = 0; rc == PGW_OK && i < n && want > 0; i++) {
            const pgw_lot *lot = &page[i].lot;
            int64_t take = pgw_min64(page[i].points, want), paid = pgw_min64(take, to_debt);
            if (strcmp(lot->member, cmd->member) != 0)
                rc = pgw_err_set(&cmd->err, PGW_EIO, "%s %s spent lots of two members",
                                 spend_name(cmd), cmd->hold_id);
            if (rc == PGW_OK)
                rc = pgw_store_add_spent(store, cmd->original, lot->id, -take, &cmd->err);
            if (rc == PGW_OK && take > paid)
                rc =
                    pgw_store_give_back_lot_points(store, lot->id, take - paid, cmd->at, &cmd->err);
            if (lot->expires_at <= figures_at(cmd))
                cmd->returned_lapsed += take - paid;
            to_debt -= paid;
            want -= take;
        }
    }
    if (rc == PGW_OK && repay > 0)
        rc = pgw_store_put_member(store, cmd->member, debt - repay, now_us(), &cmd->err);
    return rc;
}

/* What spend `t` has left to give back, PGW_EEXCEEDS below cmd->points. A
 * spend made before schema 37 recorded no lot: said so, not "0 left",
 * which reads as if all had been given back already. */
static int spend_left(pgw_store *store, pgw_command *cmd, const pgw_transfer *t, int64_t *left)
{
    bool recorded = false;
    int rc = pgw_store_spent_left(store, cmd->original, left, &recorded, &cmd->err);
    if (rc == PGW_OK && !recorded)
        return pgw_err_set(&cmd->err, PGW_EEXCEEDS,
                           "%s %s was made before pointsgw recorded the lots a spend takes "
                           "(schema 37): none of its %lld points can be given back by a return",
                           spend_name(cmd), cmd->hold_id, (long long)t->points);
    if (rc == PGW_OK && cmd->points > *left) {
        rc = pgw_err_set(&cmd->err, PGW_EEXCEEDS,
                         "%s %s has %lld of its %lld points left to return, %lld asked",
                         spend_name(cmd), cmd->hold_id, (long long)*left, (long long)t->points,
                         (long long)cmd->points);
        pgw_err_figure(&cmd->err, "points", t->points);
        pgw_err_figure(&cmd->err, "left", *left);
        pgw_err_figure(&cmd->err, "asked", cmd->points);
    }
    return rc;
}

static int apply_return(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    pgw_transfer spend;
    const pgw_transfer *t = &spend;
    int64_t left = 0;
    int rc = cmd->points >= 1 && cmd->points <= PGW_POINTS_MAX
                 ? visible_spend(store, cmd, &spend)
                 : pgw_err_set(&cmd->err, PGW_EINVAL, "points must be 1..%lld",
                               (long long)PGW_POINTS_MAX);
    if (rc == PGW_OK)
        rc = spend_left(store, cmd, t, &left);
    if (rc != PGW_OK)
        return rc;
    copy_text(cmd->shop, sizeof(cmd->shop), t->shop_id);
    copy_text(cmd->channel, sizeof(cmd->channel), t->channel);
    copy_text(cmd->reference, sizeof(cmd->reference), cmd->hold_id);
    rc = give_back(store, policy, cmd);
    if (rc != PGW_OK)
        return rc;
    char debit[PGW_ACCOUNT_MAX + 1], credit[PGW_ACCOUNT_MAX + 1];
    redeemed_account(cmd->shop, debit);
    member_account(cmd->member, credit);
    add_transfer(cmd, PGW_TRANSFER_REDEEM, debit, credit, cmd->points);
    cmd->points_moved = cmd->points;
    cmd->spend_left = left - cmd->points;
    return append_transfers(store, cmd);
}

/* ---- events: priced by the rules against the member's activity ----------------- */

/* The day numbers an event's activity read spans, in the mall's zone. */
static int activity_days(const pgw_ledger_policy *policy, int64_t at, pgw_activity_days *out,
                         pgw_err *err)
{
    pgw_date today = pgw_local_date(at, &policy->tz), year_before;
    if (pgw_date_add_months(today, -12, &year_before) != PGW_OK)
        return pgw_err_set(err, PGW_ERANGE, "event date out of range");
    out->today = pgw_days_from_date(today);
    out->year_before = pgw_days_from_date(year_before);
    out->month_first = pgw_days_from_date((pgw_date){today.year, today.month, 1});
    out->figures_at = 0; /* not asked; an event's asks (apply_event) */
    return PGW_OK;
}

/* What an event adds to its member's spend: a refund takes its amount off. */
static int64_t event_spend(const pgw_event *ev)
{
    return ev->type == PGW_EVENT_PURCHASE ? ev->amount_fen
           : ev->type == PGW_EVENT_REFUND ? -ev->amount_fen
                                          : 0;
}

/*
 * The day an event's spend counts on: a refund's is its purchase's, so
 * that refunding a purchase older than 12 months does not take from the
 * last 12 months' spend (a member lost a tier so), nor a refund of last
 * month's purchase from this month's challenge. The refund's own day when
 * the purchase's time is not known (its key is not an event's).
 */
static int spend_day(const pgw_ledger_policy *policy, const pgw_command *cmd,
                     const pgw_activity_days *days, int64_t *out, pgw_err *err)
{
    *out = days->today;
    if (cmd->event->type != PGW_EVENT_REFUND || cmd->original_at <= 0)
        return PGW_OK;
    pgw_activity_days then = {0}; /* -O3 cannot see activity_days fill it */
    int rc = activity_days(policy, cmd->original_at, &then, err);
    *out = then.today;
    return rc;
}

/* The own months of the challenges with shops or formats that cover an
 * event's shop (pgw_rules_challenge_own_month), read for its pricing. */
typedef struct own_months {
    size_t n;
    pgw_challenge_month months[PGW_CAMPAIGNS_MAX];
} own_months;

/* The rules' view of a member from what the store keeps. */
static void activity_to_ctx(const pgw_member_activity *a, const own_months *own,
                            pgw_event_type type, pgw_member_ctx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->spend_12m_fen = a->spend_12m_fen;
    ctx->month_purchases = a->month_purchases;
    ctx->month_spend_fen = a->month_spend_fen;
    ctx->n_challenges = own->n;
    ctx->challenges = own->months;
    ctx->first_purchase = type == PGW_EVENT_PURCHASE && !a->purchased_before;
    /* As the API takes it (a day of a leap year), else none: sscanf took
     * spaces, signs, one digit and a tail, and any day number. */
    int32_t month = 0, day = 0;
    if (pgw_parse_month_day(a->birthday, &month, &day, NULL) == PGW_OK) {
        ctx->has_birthday = true;
        ctx->birth_month = month;
        ctx->birth_day = day;
    }
    ctx->registered_before = a->registered_before;
    ctx->followed_before = a->followed_before;
    ctx->reviewed_before = a->reviewed_before;
    ctx->has_last_sign_in = a->has_last_sign_in;
    if (a->has_last_sign_in)
        ctx->last_sign_in = pgw_date_from_days(a->last_sign_in);
    ctx->sign_in_streak = a->sign_in_streak;
    ctx->n_today = a->n_today;
    ctx->today = a->today;
    ctx->today_unknown = !a->today_read;
}

/* Sets the once-only flags and the sign-in streak the event leaves the
 * member with (after its pricing); true when they changed. */
static bool set_flags_after(const pgw_command *cmd, const pgw_activity_days *days,
                            pgw_member_activity *a)
{
    const pgw_event *ev = cmd->event;
    const struct {
        bool purchased, registered, followed, has_sign_in;
        int64_t sign_in, streak;
    } was = {a->purchased_before, a->registered_before, a->followed_before,
             a->has_last_sign_in, a->last_sign_in,      a->sign_in_streak};
    a->purchased_before |= ev->type == PGW_EVENT_PURCHASE;
    a->registered_before |= ev->type == PGW_EVENT_REGISTER;
    a->followed_before |= ev->type == PGW_EVENT_FOLLOW_OA;
    /* Only forward: a backlog's sign-in for an earlier day moved the last
     * sign-in back, and a day signed already paid again. */
    if (ev->type == PGW_EVENT_SIGN_IN && cmd->earning->sign_in_streak > 0 &&
        (!a->has_last_sign_in || days->today > a->last_sign_in)) {
        a->has_last_sign_in = true;
        a->last_sign_in = days->today;
        a->sign_in_streak = cmd->earning->sign_in_streak;
    }
    return was.purchased != a->purchased_before || was.registered != a->registered_before ||
           was.followed != a->followed_before || was.has_sign_in != a->has_last_sign_in ||
           was.sign_in != a->last_sign_in || was.streak != a->sign_in_streak;
}

/*
 * A purchase counts on the day of each challenge with shops or formats
 * that covers its shop; a refund's amount comes off its purchase's day
 * (spend_day) there, as off the whole month's. Nothing for events at
 * other shops: most purchases write no more than before.
 */
static int record_challenge_days(pgw_store *store, const pgw_ledger_policy *policy,
                                 pgw_command *cmd, int64_t spend_day)
{
    const pgw_event *ev = cmd->event;
    int64_t spend = event_spend(ev);
    if (spend == 0 || ev->shop < 0 || (size_t)ev->shop >= policy->rules->n_shops)
        return PGW_OK;
    int rc = PGW_OK;
    for (size_t i = 0; rc == PGW_OK && i < policy->rules->n_campaigns; i++) {
        if (pgw_rules_challenge_own_month(policy->rules, i, ev->shop))
            rc = pgw_store_move_challenge_day(store, cmd->member, policy->rules->campaigns[i].id,
                                              spend_day, spend, &cmd->err);
    }
    return rc;
}

/*
 * What the lines of `whom` (the member or a referral's referrer) paid, on
 * its day of their rules (daily caps). A rule's day is kept only where
 * something reads it back (the rules' day_counted: campaigns and
 * behaviours, whatever the configuration, so that a cap added later
 * counts the day's earlier points). The base rate's row was one more
 * random B-tree leaf per event (RESULTS.md).
 */
static int record_rule_days(pgw_store *store, pgw_command *cmd, pgw_beneficiary whom, int64_t today)
{
    const pgw_earning *e = cmd->earning;
    const char *member = whom == PGW_BENEFICIARY_MEMBER ? cmd->member : cmd->referrer;
    int rc = PGW_OK;
    for (size_t i = 0; rc == PGW_OK && i < e->n_lines; i++) {
        const pgw_breakdown_line *line = &e->lines[i];
        if (line->beneficiary == whom && line->day_counted)
            rc = pgw_store_add_rule_day(store, member, today, line->rule, line->points, &cmd->err);
    }
    return rc;
}

/* What the event changes in the member's activity, after its points. */
static int record_activity(pgw_store *store, pgw_command *cmd, const pgw_activity_days *days,
                           int64_t spend_day, pgw_member_activity *a)
{
    const pgw_event *ev = cmd->event;
    bool purchase = ev->type == PGW_EVENT_PURCHASE;
    /* max_events_per_member_per_day bounds the events that move points (a
     * scripted flood of earnings): one that moved none (a second sign-in
     * of the day, a capped behaviour) is not counted. Counted, it used up
     * the day's allowance and a real purchase was refused. */
    int64_t counted = cmd->n_transfers > 0;
    int rc;
    /* Today first: `a`, read at the start of the event, still holds the
     * totals before today only until a day of this member is written. */
    if (spend_day == days->today) {
        rc = pgw_store_add_member_day(store, cmd->member, days->today, purchase, event_spend(ev),
                                      counted, a->later_days, &a->before_today, &cmd->err);
    } else { /* a refund of an earlier day's purchase: the spend is that day's */
        rc = pgw_store_add_member_day(store, cmd->member, days->today, 0, 0, counted, a->later_days,
                                      &a->before_today, &cmd->err);
        if (rc == PGW_OK)
            rc = pgw_store_add_member_day(store, cmd->member, spend_day, 0, event_spend(ev), 0,
                                          true, NULL, &cmd->err);
    }
    if (rc == PGW_OK)
        rc = record_rule_days(store, cmd, PGW_BENEFICIARY_MEMBER, days->today);
    /* A returning buyer's flags stay as they were, and a member enrolled
     * by this event has them already (enrol): no write for either. */
    if (rc != PGW_OK || !set_flags_after(cmd, days, a))
        return rc;
    return pgw_store_set_member_flags(store, cmd->member, a, &cmd->err);
}

/* A member first seen in this event: the flags the event leaves it (its
 * debt 0). Its row is written with its first lot, its sums in it, before
 * the lot references it (credit_member); with none, after its points
 * (enrol_without_lot). One statement fewer than the row and then the
 * lot's sums. */
static void enrol(pgw_command *cmd, const pgw_activity_days *days, pgw_member_activity *a)
{
    set_flags_after(cmd, days, a);
    cmd->enrolling = a;
}

/* The enrolled member's row, when its event earned it no lot. */
static int enrol_without_lot(pgw_store *store, pgw_command *cmd)
{
    const pgw_member_activity *a = cmd->enrolling;
    cmd->enrolling = NULL;
    return a != NULL ? pgw_store_add_member(store, cmd->member, a, now_us(), NULL, &cmd->err)
                     : PGW_OK;
}

/* Earns the member's lines of the earning (none: the key is still recorded).
 * The member exists, with `debt` as this command read it. */
/*
 * A referral's referrer line (the rules price the event for its referee
 * alone) within behaviours.referral's daily cap, on the referrer's own day
 * of the rule: what the referrer earned under it today, as referrer or as
 * referee, counts. A line cut to nothing leaves the breakdown, as the rules
 * leave one. Regression (a review of the rules): only the referee's side
 * was capped, and a referrer was paid for every referee of the day, which
 * is where a referral scheme is gamed (one member, many made-up referees).
 */
static int cap_referrer(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                        int64_t today)
{
    pgw_earning *e = cmd->earning;
    int64_t cap = policy->rules->behaviours.referral.daily_cap;
    size_t kept = 0;
    int rc = PGW_OK;
    for (size_t i = 0; rc == PGW_OK && i < e->n_lines; i++) {
        pgw_breakdown_line line = e->lines[i];
        if (line.beneficiary == PGW_BENEFICIARY_REFERRER && cap > 0) {
            int64_t earned = 0;
            rc = pgw_store_member_rule_points(store, cmd->referrer, line.rule, today, today,
                                              &earned, &cmd->err);
            int64_t paid = pgw_min64(line.points, pgw_max64(0, cap - earned));
            e->referrer_points -= line.points - paid;
            line.points = paid;
        }
        if (line.points > 0)
            e->lines[kept++] = line;
    }
    e->n_lines = kept;
    return rc;
}

static int earn_lines(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                      int64_t debt, int64_t today)
{
    int rc = cap_referrer(store, policy, cmd, today);
    if (rc != PGW_OK)
        return rc;
    const pgw_earning *earning = cmd->earning;
    cmd->n_lines = 0;
    for (size_t i = 0; i < earning->n_lines; i++) {
        const pgw_breakdown_line *line = &earning->lines[i];
        if (line->beneficiary != PGW_BENEFICIARY_MEMBER)
            continue;
        PGW_ASSERT(cmd->n_lines < PGW_BREAKDOWN_MAX);
        pgw_earn_line *out = &cmd->lines[cmd->n_lines++];
        copy_text(out->debit, sizeof(out->debit), line->debit);
        copy_text(out->rule, sizeof(out->rule), line->rule);
        out->points = line->points;
    }
    cmd->amount_fen = cmd->event->type == PGW_EVENT_PURCHASE ? cmd->event->amount_fen : 0;
    int64_t referrer_points = 0;
    for (size_t i = 0; i < earning->n_lines; i++) {
        const pgw_breakdown_line *line = &earning->lines[i];
        if (line->beneficiary != PGW_BENEFICIARY_REFERRER)
            continue;
        /* One line at most (behaviour:referral): the referrer's transfer goes first. */
        char credit[PGW_ACCOUNT_MAX + 1];
        member_account(cmd->referrer, credit);
        pgw_transfer *t = add_transfer(cmd, PGW_TRANSFER_EARN, line->debit, credit, line->points);
        snprintf(t->breakdown, sizeof(t->breakdown), "%s=%lld", line->rule,
                 (long long)line->points);
        referrer_points += line->points;
    }
    /* None of the member's: the appends record the key (and the
     * referrer's transfer, whose lot follows all the same). */
    rc = cmd->n_lines > 0 ? apply_earn(store, policy, cmd, &debt) : append_transfers(store, cmd);
    if (rc == PGW_OK && !cmd->replayed && referrer_points > 0)
        rc = credit_member(store, policy, cmd, cmd->referrer, NULL, referrer_points,
                           cmd->transfers[0].id);
    if (rc == PGW_OK && !cmd->replayed && referrer_points > 0)
        rc = record_rule_days(store, cmd, PGW_BENEFICIARY_REFERRER, today);
    return rc;
}

/*
 * The referrer of a referral event: found by member id or identity
 * (following merges), never the referee itself, under any identity.
 * *again when the referee was already referred; otherwise records who
 * referred it.
 */
static int resolve_referrer(pgw_store *store, pgw_command *cmd, bool *again)
{
    bool found = false;
    int rc = PGW_OK;
    *again = false;
    if (!cmd->has_referrer)
        return pgw_err_set(&cmd->err, PGW_EINVAL, "a referral names its referrer");
    if (cmd->referrer_by_identity) {
        rc = pgw_store_find_identity(store, &cmd->referrer_key, &found, cmd->referrer, &cmd->err);
        if (rc == PGW_OK && !found)
            return pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no member has the referrer's %s",
                               pgw_identity_kind_name(cmd->referrer_key.kind));
    }
    if (rc == PGW_OK)
        rc = pgw_store_survivor(store, cmd->referrer, NULL, &cmd->err);
    pgw_member_figures f;
    if (rc == PGW_OK)
        rc = pgw_store_member_figures(store, cmd->referrer, cmd->at, &found, &f, &cmd->err);
    if (rc == PGW_OK && !found)
        rc = pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no referrer %s", cmd->referrer);
    if (rc == PGW_OK && strcmp(cmd->referrer, cmd->member) == 0)
        rc = refuse_risk(cmd, PGW_RISK_SELF_REFERRAL, "a member cannot refer themselves");
    char by[PGW_ID_MAX + 1];
    if (rc == PGW_OK)
        rc = pgw_store_referred_by(store, cmd->member, by, &cmd->err);
    *again = rc == PGW_OK && by[0] != '\0';
    if (rc == PGW_OK && !*again)
        rc = pgw_store_set_referred_by(store, cmd->member, cmd->referrer, &cmd->err);
    return rc;
}

static void record_event(pgw_command *cmd);

/* A referral of a member already referred: nothing earned, and why. Its
 * event is recorded all the same: reconciliation found a statement's row
 * of it missing from the ledger, and --repair only replayed it (the
 * second review). */
static int refuse_again(pgw_store *store, pgw_command *cmd, const char *why)
{
    pgw_earning_clear(cmd->earning);
    snprintf(cmd->earning->reason, sizeof(cmd->earning->reason), "%s", why);
    record_event(cmd);
    return append_transfers(store, cmd); /* none: records the key */
}

/*
 * A review pays once per member, shop and receipt: the same receipt
 * reviewed again earned again, every day up to the cap (the HTTP review).
 * A paid review's receipt is kept among the shops' receipts as
 * ("review:<member>:<shop or ->", receipt); one the cap paid nothing is
 * not, and may pay another day (a failed command's savepoint takes a
 * claim back). This names the "shop" its receipt is kept under.
 */
static void reviewer_of(const char *member, const char *shop, char out[2 * PGW_ID_MAX + 16])
{
    PGW_TEXT(out, 2 * PGW_ID_MAX + 16, "review:", member, ":", shop[0] ? shop : "-");
}

/* Whether this review's receipt was paid to the member, or to one merged
 * into it: a merged member's claims stay under its own id, and the
 * survivor was paid for the same receipt again. */
static int review_paid_before(pgw_store *store, pgw_command *cmd, bool *paid)
{
    char members[1 + PGW_HISTORY_MERGED_MAX][PGW_ID_MAX + 1];
    snprintf(members[0], sizeof(members[0]), "%s", cmd->member);
    size_t n = 0;
    int rc = pgw_store_merged_members(store, cmd->member, members + 1, PGW_HISTORY_MERGED_MAX, &n,
                                      &cmd->err);
    *paid = false;
    for (size_t i = 0; rc == PGW_OK && !*paid && i <= n; i++) {
        char reviewer[2 * PGW_ID_MAX + 16], claimant[PGW_IDEM_KEY_MAX + 1];
        reviewer_of(members[i], cmd->shop, reviewer);
        rc = pgw_store_receipt_claimant(store, reviewer, cmd->receipt, claimant, &cmd->err);
        *paid = claimant[0] != '\0';
    }
    return rc;
}

/* Risk rules an event meets before it is priced: events per day, receipts. */
static int check_event_risk_before(pgw_store *store, const pgw_ledger_policy *policy,
                                   pgw_command *cmd, const pgw_member_activity *a)
{
    const pgw_risk_limits *r = &policy->risk;
    if (r->max_events_per_member_per_day > 0 && a->events_today >= r->max_events_per_member_per_day)
        return refuse_risk(cmd, PGW_RISK_MAX_EVENTS_PER_MEMBER_PER_DAY,
                           "member %s has had %lld events that moved points today", cmd->member,
                           (long long)a->events_today);
    if (!r->unique_receipts || cmd->event->type != PGW_EVENT_PURCHASE || cmd->receipt[0] == '\0')
        return PGW_OK;
    int rc = pgw_store_claim_receipt(store, cmd->shop, cmd->receipt, cmd->key, &cmd->err);
    if (rc == PGW_ECONFLICT)
        rc = refuse_risk(cmd, PGW_RISK_UNIQUE_RECEIPTS,
                         "receipt %s at shop %s was already used by another event", cmd->receipt,
                         cmd->shop);
    return rc;
}

/* The member's points from behaviours in an earning. */
static int64_t behaviour_points(const pgw_earning *e)
{
    int64_t sum = 0;
    for (size_t i = 0; i < e->n_lines; i++) {
        if (e->lines[i].beneficiary == PGW_BENEFICIARY_MEMBER &&
            strncmp(e->lines[i].rule, "behaviour:", 10) == 0)
            sum += e->lines[i].points;
    }
    return sum;
}

/* Whether the risk limit on behaviours' points a day judges this earning
 * (which then needs the member's points by rule today). */
static bool behaviour_limit_applies(const pgw_risk_limits *r, const pgw_earning *e)
{
    return r->max_behaviour_points_per_day > 0 && behaviour_points(e) > 0;
}

static bool earning_has_line(const pgw_earning *e, const char *rule)
{
    for (size_t i = 0; i < e->n_lines; i++) {
        if (e->lines[i].points > 0 && strcmp(e->lines[i].rule, rule) == 0)
            return true;
    }
    return false;
}

/* Marks in *ctx the challenges this pricing pays that the member has been
 * paid already in the event's month; *again when there is one. Read only
 * when a challenge would pay: once a month or so per member. */
static int paid_challenges(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                           const pgw_activity_days *days, pgw_member_ctx *ctx, bool *again)
{
    const pgw_rules *rules = policy->rules;
    pgw_date first = pgw_date_from_days(days->month_first);
    int64_t last = days->month_first + pgw_days_in_month(first.year, first.month) - 1;
    *again = false;
    int rc = PGW_OK;
    for (size_t i = 0; rc == PGW_OK && i < rules->n_campaigns; i++) {
        const pgw_campaign *c = &rules->campaigns[i];
        if (c->kind != PGW_CAMPAIGN_CHALLENGE || ctx->challenge_paid[i])
            continue; /* before the name is made: most campaigns are not challenges */
        char rule[PGW_RULE_MAX + 1];
        PGW_TEXT(rule, sizeof(rule), "campaign:", c->id);
        if (!earning_has_line(cmd->earning, rule))
            continue;
        int64_t points = 0;
        rc = pgw_store_member_rule_points(store, cmd->member, rule, days->month_first, last,
                                          &points, &cmd->err);
        ctx->challenge_paid[i] = points > 0;
        *again |= points > 0;
    }
    return rc;
}

/*
 * The own months of the challenges with shops or formats that cover a
 * purchase's shop, up to its day (a backdated purchase's too): one read
 * each, only for such a purchase, as their threshold needs them.
 */
static int read_own_months(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                           const pgw_activity_days *days, own_months *own)
{
    const pgw_event *ev = cmd->event;
    const pgw_rules *rules = policy->rules;
    own->n = 0;
    if (ev->type != PGW_EVENT_PURCHASE || ev->shop < 0 || (size_t)ev->shop >= rules->n_shops)
        return PGW_OK; /* an unknown shop: the rules refuse it */
    int rc = PGW_OK;
    for (size_t i = 0; rc == PGW_OK && i < rules->n_campaigns; i++) {
        if (!pgw_rules_challenge_own_month(rules, i, ev->shop))
            continue;
        PGW_ASSERT(own->n < PGW_CAMPAIGNS_MAX);
        pgw_challenge_month *m = &own->months[own->n++];
        memcpy(m->campaign, rules->campaigns[i].id, sizeof(m->campaign));
        rc = pgw_store_challenge_month(store, cmd->member, m->campaign, days->month_first,
                                       days->today, &m->purchases, &m->spend_fen, &cmd->err);
    }
    return rc;
}

/*
 * Prices the event. The member's points by rule today are read only when
 * something needs them: a daily cap the rules met (which then price again
 * with them) or the risk limit on behaviours' points a day. Most events
 * meet neither, and the read is one statement more. A challenge it would
 * pay is checked against the month's (paid_challenges); a challenge with
 * shops or formats covering the shop is judged on its own month
 * (read_own_months), read first: its threshold always needs it.
 */
static int price(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                 const pgw_activity_days *days, pgw_member_activity *a)
{
    pgw_member_ctx ctx;
    own_months own;
    int rc = read_own_months(store, policy, cmd, days, &own);
    if (rc != PGW_OK)
        return rc;
    activity_to_ctx(a, &own, cmd->event->type, &ctx);
    rc = pgw_rules_earn(policy->rules, cmd->event, &ctx, cmd->earning, &cmd->err);
    bool risk = rc == PGW_OK && behaviour_limit_applies(&policy->risk, cmd->earning);
    /* A failure priced without them may not be one with them. */
    if (!a->today_read && (cmd->earning->needs_today || risk)) {
        rc = pgw_store_member_today(store, cmd->member, days->today, a, &cmd->err);
        if (rc == PGW_OK && cmd->earning->needs_today) {
            activity_to_ctx(a, &own, cmd->event->type, &ctx);
            rc = pgw_rules_earn(policy->rules, cmd->event, &ctx, cmd->earning, &cmd->err);
            PGW_ASSERT(rc != PGW_OK || !cmd->earning->needs_today);
        }
    }
    /* Priced again without a challenge paid already, another challenge it
     * beat (stacking max) may pay instead: checked in its turn, each round
     * marking one more (regression: the second was paid twice a month). */
    bool again = true;
    for (size_t round = 0; rc == PGW_OK && again; round++) {
        PGW_ASSERT(round <= policy->rules->n_campaigns);
        rc = paid_challenges(store, policy, cmd, days, &ctx, &again);
        if (rc == PGW_OK && again)
            rc = pgw_rules_earn(policy->rules, cmd->event, &ctx, cmd->earning, &cmd->err);
    }
    return rc;
}

/* Risk rules on what the event would earn: per event, behaviour per day. */
static int check_event_risk_after(const pgw_ledger_policy *policy, pgw_command *cmd,
                                  const pgw_member_activity *a)
{
    const pgw_risk_limits *r = &policy->risk;
    const pgw_earning *e = cmd->earning;
    if (r->max_points_per_event > 0 && e->points > r->max_points_per_event)
        return refuse_risk(cmd, PGW_RISK_MAX_POINTS_PER_EVENT,
                           "the event would earn %lld points, limit %lld", (long long)e->points,
                           (long long)r->max_points_per_event);
    if (!behaviour_limit_applies(r, e))
        return PGW_OK;
    PGW_ASSERT(a->today_read); /* price() read them */
    int64_t behaviour = behaviour_points(e), before = today_points(a, "behaviour:");
    if (before + behaviour > r->max_behaviour_points_per_day)
        return refuse_risk(cmd, PGW_RISK_MAX_BEHAVIOUR_POINTS_PER_DAY,
                           "%lld today, %lld more, limit %lld", (long long)before,
                           (long long)behaviour, (long long)r->max_behaviour_points_per_day);
    return PGW_OK;
}

/* The event as finance's reconciliation reads it: what its channel's
 * statement says of it (points as the answer gives them). Its key's
 * record carries it (record_key_with_answer). */
static void record_event(pgw_command *cmd)
{
    const pgw_event *ev = cmd->event;
    bool refund = ev->type == PGW_EVENT_REFUND;
    pgw_event_record *r = &cmd->event_record;
    const char *type = pgw_event_type_name(ev->type);
    PGW_ASSERT(strlen(type) < sizeof(r->type));
    PGW_ASSERT(strlen(cmd->member) < sizeof(r->member));
    memcpy(r->type, type, strlen(type) + 1);
    memcpy(r->member, cmd->member, strlen(cmd->member) + 1);
    r->occurred_at = ev->occurred_at;
    r->amount_fen = refund || ev->type == PGW_EVENT_PURCHASE ? ev->amount_fen : 0;
    r->points = refund ? -cmd->points_moved : cmd->earning->points;
    r->written_off = refund ? cmd->written_off : 0; /* its answer's: finance's explanation */
}

/* A merged member's id keeps working: the command's member becomes the
 * survivor. A member read keeps the id it was asked for in merged_from
 * (its answer says merged_into); a BIND's or a verified code's
 * merged_from names only a merge it made itself (render_bind's "merged"). */
static int follow_merges(pgw_store *store, pgw_command *cmd)
{
    bool binds = cmd->kind == PGW_COMMAND_BIND || cmd->kind == PGW_COMMAND_OTP_VERIFY;
    return pgw_store_survivor(store, cmd->member, binds ? NULL : cmd->merged_from, &cmd->err);
}

static int apply_event(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    const pgw_event *ev = cmd->event;
    if (policy->rules == NULL || ev == NULL || cmd->earning == NULL)
        return pgw_err_set(&cmd->err, PGW_EINVAL, "events need the earning rules");
    pgw_activity_days days;
    pgw_member_activity activity, *a = &activity;
    bool known = false;
    int rc = activity_days(policy, cmd->at, &days, &cmd->err);
    days.figures_at = figures_at(cmd);
    if (rc == PGW_OK)
        rc = pgw_store_member_activity(store, cmd->member, &days, &known, a, &cmd->err);
    if (rc == PGW_OK && a->merged) { /* rare: one read more, the survivor's */
        rc = follow_merges(store, cmd);
        if (rc == PGW_OK)
            rc = pgw_store_member_activity(store, cmd->member, &days, &known, a, &cmd->err);
    }
    /* Its figures kept from here (keep_figures), not read after: what an
     * event writes of them is its lot. A refund's are read. A failed read
     * (or none: activity_days refused) leaves reset_output's zeros. */
    if (rc == PGW_OK)
        cmd->figures = a->figures;
    cmd->figures_kept = rc == PGW_OK && a->has_figures && ev->type != PGW_EVENT_REFUND;
    if (rc == PGW_OK && !known && !policy->auto_enroll)
        rc =
            pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no member %s (auto_enroll is off)", cmd->member);
    if (rc == PGW_OK)
        rc = check_event_risk_before(store, policy, cmd, a);
    bool review = ev->type == PGW_EVENT_REVIEW && cmd->receipt[0] != '\0';
    char reviewer[2 * PGW_ID_MAX + 16];
    reviewer_of(cmd->member, cmd->shop, reviewer); /* the member is the survivor by now */
    if (rc == PGW_OK && review)
        rc = review_paid_before(store, cmd, &a->reviewed_before);
    if (rc != PGW_OK)
        return rc;
    pgw_earning_clear(cmd->earning);
    if (ev->type == PGW_EVENT_REFERRAL) {
        bool again = false;
        if (!known) /* a new referee: its row first, for who referred it */
            rc = pgw_store_put_member(store, cmd->member, 0, now_us(), &cmd->err);
        if (rc == PGW_OK)
            rc = resolve_referrer(store, cmd, &again);
        if (rc == PGW_OK && again) /* pays once per referee: 0 points, and why */
            rc = refuse_again(store, cmd, "member was already referred");
        if (rc != PGW_OK || again)
            return rc;
        known = true;
    }
    if (ev->type == PGW_EVENT_REFUND) {
        char buyer[PGW_ID_MAX + 1];
        memcpy(buyer, cmd->member, sizeof(buyer));
        cmd->amount_fen = ev->amount_fen;
        rc = apply_refund(store, policy, cmd, buyer);
    } else {
        rc = price(store, policy, cmd, &days, a);
        if (rc == PGW_OK)
            rc = check_event_risk_after(policy, cmd, a);
        if (rc == PGW_OK && !known)
            enrol(cmd, &days, a);
        if (rc == PGW_OK)
            rc = earn_lines(store, policy, cmd, a->debt, days.today);
        if (rc == PGW_OK)
            rc = enrol_without_lot(store, cmd);
        cmd->enrolling = NULL; /* `a` is this frame's */
        if (rc == PGW_OK && review && cmd->earning->points > 0)
            rc = pgw_store_claim_receipt(store, reviewer, cmd->receipt, cmd->key, &cmd->err);
    }
    int64_t day = days.today;
    if (rc == PGW_OK)
        rc = spend_day(policy, cmd, &days, &day, &cmd->err);
    if (rc == PGW_OK && policy->rules->n_tiers > 0) { /* spend moved: maybe the tier too */
        bool counts = day > days.year_before && day <= days.today;
        int32_t before = pgw_rules_tier_for_spend(policy->rules, a->spend_12m_fen);
        int32_t after = pgw_rules_tier_for_spend(policy->rules,
                                                 a->spend_12m_fen + (counts ? event_spend(ev) : 0));
        cmd->new_tier = after != before ? after : -1;
    }
    if (rc == PGW_OK)
        rc = record_activity(store, cmd, &days, day, a);
    if (rc == PGW_OK)
        rc = record_challenge_days(store, policy, cmd, day);
    if (rc == PGW_OK)
        record_event(cmd);
    return rc;
}

/* ---- members by identity ------------------------------------------------------------ */

/* A fresh member id: "M" and 12 characters of 60 random bits (Crockford's
 * alphabet, no I L O U); the members table's key catches the impossible. */
static int new_member_id(char out[PGW_ID_MAX + 1], pgw_err *err)
{
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    uint8_t bytes[12];
    if (RAND_bytes(bytes, sizeof(bytes)) != 1)
        return pgw_err_set(err, PGW_EUNAVAILABLE, "no randomness for a member id");
    out[0] = 'M';
    for (size_t i = 0; i < sizeof(bytes); i++)
        out[1 + i] = alphabet[bytes[i] & 31];
    out[1 + sizeof(bytes)] = '\0';
    return PGW_OK;
}

/* Risk: one client address may enrol only so many members an hour (the
 * mini program's sign-ups; a shop's till enrols from one address by nature).
 * The hour is the request's: by its occurred_at, which the sender picks,
 * a sign-up dated in an unused hour went through. */
static int check_enrolment(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    int64_t limit = policy->risk.max_new_members_per_ip_per_hour, members = 0;
    if (limit <= 0 || cmd->client_address[0] == '\0')
        return PGW_OK;
    int64_t hour = pgw_command_asked_at(cmd) / 3600;
    int rc = pgw_store_enrolments(store, cmd->client_address, hour, &members, &cmd->err);
    if (rc == PGW_OK && members >= limit) {
        cmd->retry_at = (hour + 1) * 3600; /* the address's count starts again (Retry-After) */
        return refuse_risk(cmd, PGW_RISK_MAX_NEW_MEMBERS_PER_IP_PER_HOUR,
                           "%lld members enrolled from %s this hour", (long long)members,
                           cmd->client_address);
    }
    return rc == PGW_OK ? pgw_store_add_enrolment(store, cmd->client_address, hour, &cmd->err) : rc;
}

/*
 * Fills cmd->member from cmd->who. An event for an identity nobody holds
 * enrolls a new member with it when the configuration says auto_enroll;
 * anything else is PGW_ENOTFOUND.
 */
static int resolve_member(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    bool found = false;
    int rc = pgw_store_find_identity(store, &cmd->who, &found, cmd->member, &cmd->err);
    if (rc != PGW_OK || found)
        return rc;
    bool enroll = cmd->kind == PGW_COMMAND_EVENT && policy->auto_enroll &&
                  cmd->event->type != PGW_EVENT_REFUND; /* a refund needs its buyer */
    bool refund = cmd->kind == PGW_COMMAND_EVENT && cmd->event->type == PGW_EVENT_REFUND;
    /* The purchase first: a till after an outage sends them out of order.
     * Its key whole (~260 bytes at most of the message's 512), as a 409's:
     * a cut one named no purchase the till could find. */
    if (refund)
        return pgw_err_set(&cmd->err, PGW_ENOTFOUND,
                           "no member has that %s yet: purchase %.*s cannot be refunded to it",
                           pgw_identity_kind_name(cmd->who.kind), PGW_IDEM_KEY_MAX, cmd->original);
    if (!enroll)
        return pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no member has that %s",
                           pgw_identity_kind_name(cmd->who.kind));
    rc = check_enrolment(store, policy, cmd);
    if (rc == PGW_OK)
        rc = new_member_id(cmd->member, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_put_member(store, cmd->member, 0, now_us(), &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_bind_identity(store, &cmd->who, cmd->member, now_us(), &cmd->err);
    return rc;
}

/* ---- merges ------------------------------------------------------------------------------ */

/* Flags and streak of two members as one: bonuses given to either were given. */
static void combine_activity(pgw_member_activity *into, const pgw_member_activity *from)
{
    into->purchased_before |= from->purchased_before;
    into->registered_before |= from->registered_before;
    into->followed_before |= from->followed_before;
    /* The later sign-in's streak; on the same day the longer one (it was
     * one person signing in on both: the shorter lost days it had). */
    if (from->has_last_sign_in &&
        (!into->has_last_sign_in || from->last_sign_in > into->last_sign_in ||
         (from->last_sign_in == into->last_sign_in &&
          from->sign_in_streak > into->sign_in_streak))) {
        into->has_last_sign_in = true;
        into->last_sign_in = from->last_sign_in;
        into->sign_in_streak = from->sign_in_streak;
    }
}

/*
 * Repays cmd->member's `debt` from its free, unexpired lots, as an earn
 * repays before its lot: after a merge one member's debt and the other's
 * points are one member's, and left side by side the points could be spent
 * or expire while the debt stays.
 */
static int repay_from_lots(pgw_store *store, pgw_command *cmd, int64_t debt)
{
    int64_t taken = 0;
    int rc = take_lots(store, cmd->member, cmd->at, debt, NULL, NULL, &taken, &cmd->err);
    if (rc == PGW_OK && taken > 0)
        rc = pgw_store_put_member(store, cmd->member, debt - taken, now_us(), &cmd->err);
    return rc;
}

/* Merges member `from` into cmd->member (see PGW_COMMAND_BIND). */
static int merge_member(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                        const char *from)
{
    pgw_member_figures f;
    pgw_activity_days days;
    pgw_member_activity a_from, a_into;
    bool found = false, found_into = false;
    int64_t debt_into = 0;
    /* Holds due release first (repaying either member's debt), so that
     * the merged debt is repaid from what is really free (credit_member). */
    int rc = expire_due_holds(store, policy, from, cmd->at, &cmd->err);
    if (rc == PGW_OK)
        rc = expire_due_holds(store, policy, cmd->member, cmd->at, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_member_figures(store, from, cmd->at, &found, &f, &cmd->err);
    if (rc == PGW_OK)
        rc = activity_days(policy, cmd->at, &days, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_member_activity(store, from, &days, &found, &a_from, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_member_activity(store, cmd->member, &days, &found_into, &a_into, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_member_debt(store, cmd->member, &found_into, &debt_into, &cmd->err);
    if (rc != PGW_OK)
        return rc;
    /* The balance moves in the log; lots and debt move with their rows, so
     * both members' balance = lots - debt holds before and after. */
    char a[PGW_ACCOUNT_MAX + 1], b[PGW_ACCOUNT_MAX + 1];
    member_account(from, a);
    member_account(cmd->member, b);
    if (f.balance != 0) {
        pgw_transfer *t =
            add_transfer(cmd, PGW_TRANSFER_MERGE, f.balance > 0 ? a : b, f.balance > 0 ? b : a,
                         f.balance > 0 ? f.balance : -f.balance);
        snprintf(t->reference, sizeof(t->reference), "merge:%s", from);
    }
    rc = append_transfers(store, cmd);
    combine_activity(&a_into, &a_from);
    if (rc == PGW_OK)
        rc = pgw_store_put_member(store, cmd->member, debt_into + f.debt, now_us(), &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_set_member_flags(store, cmd->member, &a_into, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_merge_rows(store, from, cmd->member, &cmd->err);
    if (rc == PGW_OK && debt_into + f.debt > 0)
        rc = repay_from_lots(store, cmd, debt_into + f.debt);
    memcpy(cmd->merged_from, from, sizeof(cmd->merged_from));
    return rc;
}

/* Identities of a member a shop may merge in read at most: a member with
 * as many is taken to be known beyond one shop's cards. */
#define SHOP_MERGE_IDENTITIES 8

/* PGW_EFORBIDDEN unless every identity of `holder` is a card of `shop`. */
static int held_by_shop_alone(pgw_store *store, const char *holder, const char *shop, pgw_err *err)
{
    pgw_identity_key ids[SHOP_MERGE_IDENTITIES];
    size_t n = 0;
    int rc = pgw_store_member_identities(store, holder, ids, SHOP_MERGE_IDENTITIES, &n, err);
    bool alone = rc == PGW_OK && n < SHOP_MERGE_IDENTITIES;
    for (size_t i = 0; alone && i < n; i++)
        alone = ids[i].kind == PGW_ID_CARD && strcmp(ids[i].scope, shop) == 0;
    if (rc == PGW_OK && !alone)
        rc = pgw_err_set(err, PGW_EFORBIDDEN,
                         "member %s is known beyond shop %s's cards: only an admin merges it",
                         holder, shop);
    return rc;
}

/*
 * Whether a bind by a shop's key (bind_shop) or of a number the member
 * proved (bind_self) may merge `holder` in; PGW_EFORBIDDEN otherwise. A
 * proved number's refusal goes to the end user (a session, or a channel's
 * backend acting for one): it does not name the holder, whose member id is
 * the key to their account in every other call (the service desk finds it
 * with /v1/members/resolve).
 */
static int may_merge(pgw_store *store, const pgw_command *cmd, const char *holder, pgw_err *err)
{
    if (cmd->bind_shop[0] != '\0')
        return held_by_shop_alone(store, holder, cmd->bind_shop, err);
    bool on_wechat = false;
    int rc = cmd->bind_self ? pgw_store_member_on_wechat(store, holder, &on_wechat, err) : PGW_OK;
    if (rc == PGW_OK && on_wechat)
        rc = pgw_err_set(err, PGW_EFORBIDDEN,
                         "that %s belongs to another member, known by a WeChat account of its "
                         "own: the service desk (an admin key) merges the two once it knows "
                         "they are one person",
                         pgw_identity_kind_name(cmd->who.kind));
    return rc;
}

static int apply_bind(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    bool found = false;
    char holder[PGW_ID_MAX + 1];
    pgw_member_figures f;
    int rc = pgw_store_member_figures(store, cmd->member, cmd->at, &found, &f, &cmd->err);
    if (rc == PGW_OK && !found)
        rc = pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no member %s", cmd->member);
    if (rc == PGW_OK)
        rc = pgw_store_find_identity(store, &cmd->who, &found, holder, &cmd->err);
    if (rc != PGW_OK)
        return rc;
    if (!found) {
        rc = pgw_store_bind_identity(store, &cmd->who, cmd->member, now_us(), &cmd->err);
        return rc == PGW_OK ? append_transfers(store, cmd) : rc; /* none: records the key */
    }
    if (strcmp(holder, cmd->member) == 0)
        return append_transfers(store, cmd); /* already this member's */
    rc = may_merge(store, cmd, holder, &cmd->err);
    return rc == PGW_OK ? merge_member(store, policy, cmd, holder) : rc;
}

/* ---- preferences ------------------------------------------------------------------------ */

static int apply_preferences(pgw_store *store, pgw_command *cmd)
{
    int rc = cmd->set_sms
                 ? pgw_store_set_sms_opt_out(store, cmd->member, cmd->sms_opt_out, &cmd->err)
                 : PGW_OK;
    char was[6] = "";
    if (rc == PGW_OK)
        rc = pgw_store_birthday(store, cmd->member, was, &cmd->err);
    bool change = rc == PGW_OK && cmd->birthday[0] != '\0' && strcmp(was, cmd->birthday) != 0;
    if (change && was[0] != '\0' && !cmd->birthday_admin)
        rc = pgw_err_set(&cmd->err, PGW_EFORBIDDEN,
                         "member %s's birthday is set already: an admin key changes it",
                         cmd->member);
    if (rc == PGW_OK && change)
        rc = pgw_store_set_birthday(store, cmd->member, cmd->birthday, &cmd->err);
    else if (rc == PGW_OK) /* the answer says both as they are now */
        memcpy(cmd->birthday, was, sizeof(was));
    if (rc == PGW_OK)
        rc = pgw_store_sms_opt_out(store, cmd->member, &cmd->sms_opt_out, &cmd->err);
    return rc;
}

/* ---- SMS verification codes ------------------------------------------------------------- */

static int apply_otp_issue(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    const pgw_otp_limits *l = &policy->otp;
    int64_t phone[PGW_OTP_TIMES_MAX], ip[PGW_OTP_TIMES_MAX];
    size_t n_phone = 0, n_ip = 0;
    const char *why = NULL;
    int rc = pgw_store_otp_times(store, cmd->who.lookup, NULL, cmd->at - 86400, phone,
                                 PGW_OTP_TIMES_MAX, &n_phone, &cmd->err);
    if (rc == PGW_OK && cmd->client_address[0] != '\0')
        rc = pgw_store_otp_times(store, NULL, cmd->client_address, cmd->at - 3600, ip,
                                 PGW_OTP_TIMES_MAX, &n_ip, &cmd->err);
    if (rc != PGW_OK)
        return rc;
    if (!pgw_otp_may_issue(l, phone, n_phone, ip, n_ip, cmd->at, &cmd->retry_at, &why))
        return pgw_err_set(&cmd->err, PGW_ELIMITED, "over the limit of %s: try again in %lld s",
                           why, (long long)(cmd->retry_at - cmd->at));
    return pgw_store_otp_add(store, cmd->who.lookup, cmd->otp_hash, cmd->otp_requester,
                             cmd->client_address, cmd->at, cmd->at + l->ttl_s, &cmd->err);
}

static int apply_bind(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd);

static int apply_otp_verify(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    pgw_otp_row row;
    bool found = false;
    int rc = pgw_store_otp_newest(store, cmd->who.lookup, &row, &found, &cmd->err);
    if (rc != PGW_OK)
        return rc;
    cmd->otp_verdict = pgw_otp_judge(found ? &row : NULL, cmd->otp_hash, cmd->otp_requester,
                                     cmd->at, &cmd->otp_tries_left);
    if (cmd->otp_verdict == PGW_OTP_MISMATCH)
        return pgw_store_otp_mark(store, row.id, false, &cmd->err);
    if (cmd->otp_verdict != PGW_OTP_VERIFIED)
        return PGW_OK;
    rc = pgw_store_otp_mark(store, row.id, true, &cmd->err);
    cmd->bind_self = true; /* the code proves the number, not its holder's account */
    return rc == PGW_OK ? apply_bind(store, policy, cmd) : rc;
}

/* ---- WeChat ------------------------------------------------------------------------------ */

/* A new member holding `who` (and who2), as an enrolment from cmd->client_address. */
static int enroll_member(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    int rc = check_enrolment(store, policy, cmd);
    if (rc == PGW_OK)
        rc = new_member_id(cmd->member, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_put_member(store, cmd->member, 0, now_us(), &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_bind_identity(store, &cmd->who, cmd->member, now_us(), &cmd->err);
    if (rc == PGW_OK && cmd->has_who2)
        rc = pgw_store_bind_identity(store, &cmd->who2, cmd->member, now_us(), &cmd->err);
    return rc;
}

/*
 * Fills cmd->member from `who` and `who2` (an openid and a unionid): the
 * member holding either gets both; when each is held by a different
 * member, `who`'s is merged into `who2`'s (WeChat says they are one
 * person, and the merge writes its transfer and the key). Nobody holding
 * either: a new member when `enroll`, else PGW_ENOTFOUND.
 */
static int link_member(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                       bool enroll, bool *merged)
{
    char by_who[PGW_ID_MAX + 1] = "", by_who2[PGW_ID_MAX + 1] = "";
    bool found = false, found2 = false;
    *merged = false;
    int rc = pgw_store_find_identity(store, &cmd->who, &found, by_who, &cmd->err);
    if (rc == PGW_OK && cmd->has_who2)
        rc = pgw_store_find_identity(store, &cmd->who2, &found2, by_who2, &cmd->err);
    if (rc != PGW_OK)
        return rc;
    if (!found && !found2)
        return enroll ? enroll_member(store, policy, cmd)
                      : pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no member has that %s",
                                    pgw_identity_kind_name(cmd->who.kind));
    snprintf(cmd->member, sizeof(cmd->member), "%s", found2 ? by_who2 : by_who);
    if (!found)
        rc = pgw_store_bind_identity(store, &cmd->who, cmd->member, now_us(), &cmd->err);
    if (rc == PGW_OK && cmd->has_who2 && !found2)
        rc = pgw_store_bind_identity(store, &cmd->who2, cmd->member, now_us(), &cmd->err);
    *merged = found && found2 && strcmp(by_who, by_who2) != 0;
    if (rc == PGW_OK && *merged)
        rc = merge_member(store, policy, cmd, by_who);
    return rc;
}

/* A login is the member's own sign-up: it enrols even without auto_enroll
 * (the per-address enrolment limit still applies). */
static int apply_link(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    bool merged = false, login = cmd->session_id[0] != '\0';
    int rc = link_member(store, policy, cmd, login || policy->auto_enroll, &merged);
    if (rc == PGW_OK && !merged)
        rc = append_transfers(store, cmd); /* none: records the key */
    if (rc == PGW_OK && login)
        rc = pgw_store_insert_session(store, cmd->session_id, cmd->member, cmd->appid, cmd->at,
                                      cmd->session_expires, &cmd->err);
    return rc;
}

static int apply_subscribe(pgw_store *store, pgw_command *cmd)
{
    int rc = pgw_store_add_quota(store, cmd->member, cmd->sub_openid, cmd->template_id, cmd->points,
                                 &cmd->quota, &cmd->err);
    return rc == PGW_OK ? append_transfers(store, cmd) : rc; /* none: records the key */
}

static int apply_end_session(pgw_store *store, pgw_command *cmd)
{
    int rc = pgw_store_revoke_session(store, cmd->session_id, cmd->at, &cmd->err);
    cmd->session_id[0] = '\0'; /* checked before: now it is gone, as asked */
    return rc == PGW_OK ? append_transfers(store, cmd) : rc;
}

/*
 * A follow's or an unfollow's `original` is its push's own key, recorded
 * here (not the follow event's, which a risk rule's refusal leaves
 * unrecorded). A push WeChat delivers again finds its key and changes
 * nothing: a follow state of equal time would otherwise undo what came
 * between (an unsubscribe and a subscribe in one second, then either
 * redelivered).
 */
static int apply_follow(pgw_store *store, pgw_command *cmd)
{
    PGW_ASSERT(cmd->who.kind == PGW_ID_OA_OPENID && cmd->oa_follow != 0);
    if (cmd->oa_follow == PGW_OA_NOTE)
        return pgw_store_note_follower(store, cmd->who.scope, cmd->who.lookup, cmd->at,
                                       &cmd->follow_new, &cmd->err);
    if (cmd->oa_follow == PGW_OA_FORGET_NOTE)
        return pgw_store_forget_follower(store, cmd->who.scope, cmd->who.lookup, cmd->at,
                                         &cmd->err);
    bool redelivered = false;
    pgw_idem_record record;
    int rc = cmd->original[0] != '\0'
                 ? pgw_store_find_key(store, cmd->original, &redelivered, &record, &cmd->err)
                 : PGW_OK;
    cmd->follow_seen = rc == PGW_OK && redelivered;
    if (rc != PGW_OK || redelivered)
        return rc;
    rc = pgw_store_set_follow(store, cmd->who.scope, cmd->who.lookup,
                              cmd->oa_follow == PGW_OA_FOLLOWS, cmd->at, &cmd->err);
    if (rc != PGW_OK || cmd->original[0] == '\0')
        return rc;
    uint8_t fingerprint[PGW_HASH_LEN];
    pgw_sha256(cmd->original, strlen(cmd->original), fingerprint);
    return pgw_store_record_key(store, cmd->original, fingerprint, 0, 0, now_us(), NULL, NULL,
                                &redelivered, &record, &cmd->err);
}

static int apply_prune(pgw_store *store, pgw_command *cmd)
{
    int64_t before = cmd->at - PGW_PRUNE_GRACE_S;
    int rc =
        pgw_store_prune_sessions(store, before, PGW_PRUNE_ROWS, &cmd->pruned_sessions, &cmd->err);
    /* check_enrolment counts in hour at / 3600: hours ending by `before` are done. */
    if (rc == PGW_OK)
        rc = pgw_store_prune_enrolments(store, before / 3600, PGW_PRUNE_ROWS,
                                        &cmd->pruned_enrolments, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_prune_reminders(store, cmd->at / 86400 - PGW_PRUNE_REMINDER_DAYS,
                                       PGW_PRUNE_ROWS, &cmd->pruned_reminders, &cmd->err);
    return rc;
}

/* A session named by a request must still be good when the command runs. */
static int check_session(pgw_store *store, pgw_command *cmd)
{
    bool valid = false;
    if (cmd->session_id[0] == '\0' || cmd->kind == PGW_COMMAND_LINK) /* it makes one */
        return PGW_OK;
    int rc =
        pgw_store_session_valid(store, cmd->session_id, cmd->member, cmd->at, &valid, &cmd->err);
    if (rc == PGW_OK && !valid)
        rc = pgw_err_set(&cmd->err, PGW_EUNAUTHORIZED,
                         "the session was ended or has expired: log in again");
    return rc;
}

/* ---- legacy imports ------------------------------------------------------------------------ */

/* Finds the member a card or a phone belongs to; *found false when neither. */
static int import_holder(pgw_store *store, pgw_command *cmd, bool *found)
{
    char by_card[PGW_ID_MAX + 1] = "", by_phone[PGW_ID_MAX + 1] = "";
    bool card = false, phone = false;
    int rc = cmd->by_identity ? pgw_store_find_identity(store, &cmd->who, &card, by_card, &cmd->err)
                              : PGW_OK;
    if (rc == PGW_OK && cmd->has_who2)
        rc = pgw_store_find_identity(store, &cmd->who2, &phone, by_phone, &cmd->err);
    /* Bad input, not a reused key (ECONFLICT answered idempotency_conflict). */
    if (rc == PGW_OK && card && phone && strcmp(by_card, by_phone) != 0)
        return pgw_err_set(&cmd->err, PGW_EINVAL,
                           "the card and the phone belong to different members: the card to "
                           "member %s, the phone to member %s",
                           by_card, by_phone);
    *found = card || phone;
    cmd->import_match = card    ? PGW_IMPORT_BY_CARD
                        : phone ? PGW_IMPORT_BY_PHONE
                                : PGW_IMPORT_CREATED;
    snprintf(cmd->member, sizeof(cmd->member), "%s", card ? by_card : by_phone);
    return rc;
}

/* Binds an identity to cmd->member unless it is already its. */
static int bind_if_new(pgw_store *store, pgw_command *cmd, const pgw_identity_key *key)
{
    bool found = false;
    char holder[PGW_ID_MAX + 1];
    int rc = pgw_store_find_identity(store, key, &found, holder, &cmd->err);
    if (rc == PGW_OK && !found)
        rc = pgw_store_bind_identity(store, key, cmd->member, now_us(), &cmd->err);
    return rc;
}

/* The part of an import key after its n-th colon; NULL when it has fewer. */
static const char *key_after(const char *key, int n)
{
    for (; n > 0 && key != NULL; n--) {
        key = strchr(key, ':');
        key = key != NULL ? key + 1 : NULL;
    }
    return key;
}

/* The batch named in an import key (import:<shop>:<batch>:...), or the
 * whole key when it is no import key (another program's row). */
static const char *import_batch_of(const char *key, int *len)
{
    const char *batch = key_after(key, 2), *end = key_after(key, 3);
    *len = batch && end ? (int)(end - 1 - batch) : (int)strlen(key);
    return batch && end ? batch : key;
}

/* What an import row's old account is called in a message: never its
 * card's number nor its phone's lookup (a keyed hash of the number), as
 * messages reach logs and HTTP answers; the row's line, which the caller
 * puts before the message, says which row it is. */
static const char *import_account_name(const pgw_command *cmd)
{
    return cmd->by_identity ? "this row's card" : "this row's phone (it has no card)";
}

/*
 * A row of a batch imported before with other points (the same file at
 * another rate: its rows' hash names the same batch). Said as what
 * happened, with the points the batch gave it from its stored answer,
 * rather than as a reused key, whose text holds a phone's lookup.
 */
static int import_changed(pgw_store *store, pgw_command *cmd)
{
    int rc = pgw_store_get_answer(store, cmd->key, cmd->answer, sizeof(cmd->answer), &cmd->err);
    if (rc != PGW_OK)
        return rc;
    json_t *doc = json_loads(cmd->answer, 0, NULL);
    json_t *points = json_object_get(doc, "points");
    char before[48] = "other points"; /* an older gateway kept no answer */
    if (json_is_integer(points))
        snprintf(before, sizeof(before), "%lld points", (long long)json_integer_value(points));
    json_decref(doc);
    cmd->answer[0] = '\0';
    int batch_len;
    const char *batch = import_batch_of(cmd->key, &batch_len);
    return pgw_err_set(&cmd->err, PGW_ECONFLICT,
                       "%s was imported at %s before, in batch %.*s, with %s, not %lld: a "
                       "batch's rows do not change (another rate or balance is another batch: "
                       "name a new one to credit the row again)",
                       import_account_name(cmd), cmd->shop, batch_len, batch, before,
                       (long long)cmd->points);
}

/*
 * The first batch to import an old account (its card, else its phone) at
 * a shop claims it. A batch the rows' hash named that meets another's
 * claim is a mended file run again: its rows were credited once already,
 * and were credited a second time. A batch the operator named goes on.
 */
static int claim_old_account(pgw_store *store, pgw_command *cmd)
{
    char shop[PGW_ID_MAX + 16], claimant[PGW_IDEM_KEY_MAX + 1];
    snprintf(shop, sizeof(shop), "import:%s", cmd->shop);
    const char *account = key_after(cmd->key, 3); /* import:<shop>:<batch>:<card|phone>:<lookup> */
    PGW_ASSERT(account != NULL);                  /* pgw_import_fields made it */
    int rc = pgw_store_receipt_claimant(store, shop, account, claimant, &cmd->err);
    if (rc == PGW_OK && claimant[0] == '\0')
        return pgw_store_claim_receipt(store, shop, account, cmd->key, &cmd->err);
    if (rc != PGW_OK || cmd->import_batch_named)
        return rc;
    int batch_len;
    const char *batch = import_batch_of(claimant, &batch_len);
    return pgw_err_set(&cmd->err, PGW_EINVAL,
                       "%s was imported at %s before, in batch %.*s: not credited again (a "
                       "mended file is another batch: name that batch to go on with it, or a new "
                       "one to credit it again)",
                       import_account_name(cmd), cmd->shop, batch_len, batch);
}

/* A row is held to the events' limit: a file whose columns slipped put a
 * phone number (13,800,138,000) under points, imported as a balance. The
 * message says the limit, not the points: at 1:1 they are that phone. */
static int check_import_risk(const pgw_ledger_policy *policy, pgw_command *cmd)
{
    int64_t limit = policy->risk.max_points_per_event;
    if (limit > 0 && cmd->points > limit)
        return refuse_risk(cmd, PGW_RISK_MAX_POINTS_PER_EVENT,
                           "the row would credit more than the limit, %lld points (its columns may "
                           "have slipped; a real balance this "
                           "large needs a higher risk.max_points_per_event for the import)",
                           (long long)limit);
    return PGW_OK;
}

static int apply_import(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    bool found = false;
    int rc = check_import_risk(policy, cmd);
    if (rc == PGW_OK)
        rc = import_holder(store, cmd, &found);
    if (rc == PGW_OK)
        rc = claim_old_account(store, cmd);
    /* A holder found by identity is alive: merges move identities along. */
    if (rc == PGW_OK && !found)
        rc = new_member_id(cmd->member, &cmd->err);
    if (rc == PGW_OK && !found)
        rc = pgw_store_put_member(store, cmd->member, 0, now_us(), &cmd->err);
    if (rc == PGW_OK && cmd->by_identity)
        rc = bind_if_new(store, cmd, &cmd->who);
    if (rc == PGW_OK && cmd->has_who2)
        rc = bind_if_new(store, cmd, &cmd->who2);
    if (rc != PGW_OK)
        return rc;
    cmd->n_lines = 1;
    snprintf(cmd->lines[0].debit, sizeof(cmd->lines[0].debit), "import:%s", cmd->shop);
    snprintf(cmd->lines[0].rule, sizeof(cmd->lines[0].rule), "import:%s", cmd->shop);
    cmd->lines[0].points = cmd->points;
    cmd->amount_fen = 0; /* nothing to refund */
    return apply_earn(store, policy, cmd, NULL);
}

/* ---- applying --------------------------------------------------------------------- */

/* "channel:-:event_id": an event's key before its appid was part of it. */
static void key_without_appid(const char *key, char out[PGW_IDEM_KEY_MAX + 1])
{
    const char *source = strchr(key, ':');
    const char *id = source != NULL ? strchr(source + 1, ':') : NULL;
    PGW_ASSERT(id != NULL); /* pgw_store_event_key made it */
    snprintf(out, PGW_IDEM_KEY_MAX + 1, "%.*s:-%s", (int)(source - key), key, id);
}

/* pgw_command_row_fingerprint, with the receipt or without it. A row
 * without one hashes as before receipts were part of it (the rows
 * reconcile --repair recorded). */
static void row_fingerprint(const pgw_command *cmd, bool with_receipt, uint8_t out[PGW_HASH_LEN])
{
    PGW_ASSERT(cmd->kind == PGW_COMMAND_EVENT && cmd->event != NULL);
    const pgw_event *e = cmd->event;
    /* A member named by identity is named by its lookup: a phone's blind
     * index, never the number. The text starts otherwise than any JSON
     * body's, so no request's fingerprint is a row's. */
    const char *kind = cmd->by_identity ? pgw_identity_kind_name(cmd->who.kind) : "member_id";
    const char *scope = cmd->by_identity ? cmd->who.scope : "";
    const char *member = cmd->by_identity ? cmd->who.lookup : cmd->member;
    bool receipt = with_receipt && cmd->receipt[0] != '\0';
    char text[128 + 2 * PGW_IDEM_KEY_MAX + 2 * PGW_ID_MAX + PGW_LOOKUP_MAX + sizeof(cmd->receipt)];
    int n =
        snprintf(text, sizeof(text), "statement row\n%s\n%s\n%lld\n%s:%s:%s\n%lld\n%lld\n%s%s%s",
                 cmd->key, pgw_event_type_name(e->type), (long long)cmd->at, kind, scope, member,
                 (long long)e->amount_fen, (long long)e->custom_points,
                 e->type == PGW_EVENT_REFUND ? cmd->original : "", receipt ? "\nreceipt " : "",
                 receipt ? cmd->receipt : "");
    PGW_ASSERT(n > 0 && (size_t)n < sizeof(text));
    pgw_sha256(text, (size_t)n, out);
}

void pgw_command_row_fingerprint(const pgw_command *cmd, uint8_t out[PGW_HASH_LEN])
{
    row_fingerprint(cmd, true, out);
}

/* Whether the key's record is of the event a statement row gave
 * reconcile --repair, and `cmd` says the same as that row. */
static bool repaired_as_row(const pgw_command *cmd)
{
    if (cmd->kind != PGW_COMMAND_EVENT || cmd->event == NULL)
        return false;
    /* Recorded with the receipt this names (a shop's CSV row), or without
     * one (a statement's row: it has no receipt column). */
    uint8_t row[PGW_HASH_LEN], bare[PGW_HASH_LEN];
    row_fingerprint(cmd, true, row);
    row_fingerprint(cmd, false, bare);
    return memcmp(cmd->record.fingerprint, row, PGW_HASH_LEN) == 0 ||
           memcmp(cmd->record.fingerprint, bare, PGW_HASH_LEN) == 0;
}

/* The member `cmd` names (by identity: whoever holds it), through merges,
 * into `now`: "" when the identity is nobody's. */
static int member_now(pgw_store *store, pgw_command *cmd, char now[PGW_ID_MAX + 1])
{
    bool found = true;
    int rc = PGW_OK;
    if (cmd->by_identity)
        rc = pgw_store_find_identity(store, &cmd->who, &found, now, &cmd->err);
    else
        snprintf(now, PGW_ID_MAX + 1, "%s", cmd->member);
    if (rc == PGW_OK && found)
        rc = pgw_store_survivor(store, now, NULL, &cmd->err);
    if (rc != PGW_OK || !found)
        now[0] = '\0';
    return rc;
}

/* Whether `recorded` (a member id as an event's key keeps it) is, through
 * merges, member_now's `now`; never when `now` is nobody. */
static int same_member(pgw_store *store, pgw_command *cmd, const char *recorded, const char *now,
                       bool *same)
{
    char was[PGW_ID_MAX + 1];
    size_t n = strlen(recorded);
    *same = false;
    if (now[0] == '\0' || n >= sizeof(was)) /* a member id, as the log keeps them */
        return PGW_OK;
    memcpy(was, recorded, n + 1);
    int rc = pgw_store_survivor(store, was, NULL, &cmd->err);
    *same = rc == PGW_OK && strcmp(now, was) == 0;
    return rc;
}

/* Transfer `id` into *t; *found false when the log has none. */
static int read_transfer(pgw_store *store, int64_t id, pgw_transfer *t, bool *found, pgw_err *err)
{
    size_t n = 0;
    int rc = id > 0 ? pgw_store_read_transfers(store, id - 1, t, 1, &n, err) : PGW_OK;
    *found = rc == PGW_OK && n == 1 && t->id == id;
    return rc;
}

/*
 * What the first transfer under cmd's key says of its request beyond the
 * key's row: a refund's, the key of the purchase whose earn it reversed
 * (its reference "earn:<id>" names the earn's first transfer); another
 * event's, its reference (its receipt number, or its event id when it had
 * none: event_command.c). "" when it cannot tell: no transfer, a refund
 * that reversed nothing. Read only when fingerprints differ.
 */
static int first_said(pgw_store *store, pgw_command *cmd, char out[PGW_IDEM_KEY_MAX + 1])
{
    static const char prefix[] = "earn:";
    PGW_STATIC_ASSERT(PGW_REFERENCE_MAX <= PGW_IDEM_KEY_MAX, "a reference fits");
    pgw_transfer t;
    bool found = false;
    int64_t earn = 0;
    out[0] = '\0';
    int rc = read_transfer(store, cmd->record.first_transfer, &t, &found, &cmd->err);
    if (rc != PGW_OK || !found)
        return rc;
    if (cmd->event->type != PGW_EVENT_REFUND) {
        copy_text(out, PGW_IDEM_KEY_MAX + 1, t.reference);
        return PGW_OK;
    }
    /* Exactly "earn:<digits>" as the refund wrote it (sscanf took a sign,
     * spaces and a tail, and past int64 is undefined). */
    if (strncmp(t.reference, prefix, sizeof(prefix) - 1) != 0 ||
        !pgw_decimal_in(t.reference + sizeof(prefix) - 1, 1, INT64_MAX, &earn))
        return PGW_OK;
    rc = read_transfer(store, earn, &t, &found, &cmd->err);
    if (rc == PGW_OK && found)
        copy_text(out, PGW_IDEM_KEY_MAX + 1, t.idem_key);
    return rc;
}

/* The event id of an event's key "channel:source:event_id"
 * (pgw_store_event_key: neither a channel nor a source has a ':'), NULL
 * for a key of no event. */
static const char *key_event_id(const char *key)
{
    const char *at = strchr(key, ':');
    at = at != NULL ? strchr(at + 1, ':') : NULL;
    return at != NULL ? at + 1 : NULL;
}

/*
 * What an event's key recorded of its first request beside what `cmd`
 * says: the fields the key keeps (store.h pgw_event_record) and, where
 * those are the same, what its first transfer tells (first_said): a
 * refund's original, a receipt number. Items, or what no transfer tells,
 * only the fingerprint does. Read only when the fingerprints differ.
 */
enum { DIFF_MEMBER, DIFF_AMOUNT, DIFF_AT, DIFF_TYPE, DIFF_ORIGINAL, DIFF_RECEIPT, DIFF_FIELDS };
static const char *const DIFF_NAMES[DIFF_FIELDS] = {"member_id", "amount_fen",        "occurred_at",
                                                    "type",      "original_event_id", "receipt_no"};
enum { DIFF_KEPT = DIFF_ORIGINAL }; /* the fields the key's row keeps come first */

typedef struct event_diff {
    bool found;                                   /* the key recorded an event */
    bool differs[DIFF_FIELDS];                    /* none when not found */
    char then[DIFF_FIELDS][PGW_ERR_TEXT_MAX + 1]; /* each field's, as said */
    char now[DIFF_FIELDS][PGW_ERR_TEXT_MAX + 1];  /* "" for no member, no receipt */
    int64_t amount_then;
    char said[PGW_IDEM_KEY_MAX + 1]; /* first_said's, when the kept fields agree; else "" */
} event_diff;

/* The first field that differs, or -1. */
static int first_difference(const event_diff *d)
{
    for (int i = 0; i < DIFF_FIELDS; i++)
        if (d->differs[i])
            return i;
    return -1;
}

/* Whether d->said tells a refund's original or a receipt other than cmd's. */
static void diff_said(const pgw_command *cmd, event_diff *d)
{
    PGW_STATIC_ASSERT(PGW_ERR_TEXT_MAX >= PGW_EVENT_ID_MAX && PGW_ERR_TEXT_MAX >= PGW_REFERENCE_MAX,
                      "an event id and a receipt are said whole");
    if (cmd->event->type == PGW_EVENT_REFUND) {
        /* Keys of one channel and shop (a refund's original is its shop's). */
        const char *then = key_event_id(d->said), *now = key_event_id(cmd->original);
        if (then == NULL || now == NULL || strcmp(then, now) == 0)
            return;
        d->differs[DIFF_ORIGINAL] = true;
        copy_text(d->then[DIFF_ORIGINAL], sizeof(d->then[0]), then);
        copy_text(d->now[DIFF_ORIGINAL], sizeof(d->now[0]), now);
        return;
    }
    /* A reference that is the event's id was no receipt, or one equal to
     * the id: which, nothing tells. */
    const char *id = key_event_id(cmd->key);
    if (d->said[0] == '\0' || id == NULL || strcmp(d->said, id) == 0 ||
        strcmp(d->said, cmd->receipt) == 0)
        return;
    d->differs[DIFF_RECEIPT] = true;
    copy_text(d->then[DIFF_RECEIPT], sizeof(d->then[0]), d->said);
    copy_text(d->now[DIFF_RECEIPT], sizeof(d->now[0]), cmd->receipt);
}

static int diff_event(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                      event_diff *d)
{
    const pgw_event *e = cmd->event;
    PGW_ASSERT(e != NULL);
    memset(d->differs, 0, sizeof(d->differs));
    d->said[0] = '\0';
    pgw_recon_row was;
    int rc = pgw_store_read_keyed_event(store, cmd->key, &was, &d->found, &cmd->err);
    if (rc != PGW_OK || !d->found)
        return rc;
    bool same = false;
    rc = member_now(store, cmd, d->now[DIFF_MEMBER]);
    if (rc == PGW_OK)
        rc = same_member(store, cmd, was.member, d->now[DIFF_MEMBER], &same);
    snprintf(d->then[DIFF_MEMBER], sizeof(d->then[0]), "%.*s", PGW_ID_MAX, was.member);
    d->differs[DIFF_MEMBER] = !same;
    d->amount_then = was.amount_fen;
    snprintf(d->then[DIFF_AMOUNT], sizeof(d->then[0]), "%lld", (long long)was.amount_fen);
    snprintf(d->now[DIFF_AMOUNT], sizeof(d->now[0]), "%lld", (long long)e->amount_fen);
    d->differs[DIFF_AMOUNT] = was.amount_fen != e->amount_fen;
    pgw_format_moment(was.occurred_at, &policy->tz, d->then[DIFF_AT]);
    pgw_format_moment(cmd->at, &policy->tz, d->now[DIFF_AT]);
    d->differs[DIFF_AT] = was.occurred_at != cmd->at;
    snprintf(d->then[DIFF_TYPE], sizeof(d->then[0]), "%s", was.type);
    snprintf(d->now[DIFF_TYPE], sizeof(d->now[0]), "%s", pgw_event_type_name(e->type));
    d->differs[DIFF_TYPE] = strcmp(d->then[DIFF_TYPE], d->now[DIFF_TYPE]) != 0;
    if (rc != PGW_OK || first_difference(d) >= 0 || e->type == PGW_EVENT_CUSTOM)
        return rc; /* another request by what the key kept: said without more reads */
    /* A CSV row without a receipt agrees with any (row_agrees): a shop's
     * batch of its live sales replays each without reading its transfer. */
    if (cmd->from_row && e->type != PGW_EVENT_REFUND && cmd->receipt[0] == '\0')
        return rc;
    rc = first_said(store, cmd, d->said);
    if (rc == PGW_OK)
        diff_said(cmd, d);
    return rc;
}

/* Whether the event recorded under a CSV row's key says what the row says
 * (pgw_command.from_row): what pgw_command_row_fingerprint covers. A row
 * without a receipt says nothing of one; where the first transfer cannot
 * tell a refund's original or a receipt, the row is another request. */
static bool row_agrees(const pgw_command *cmd, const event_diff *d)
{
    int first = first_difference(d);
    if (!d->found || cmd->event->type == PGW_EVENT_CUSTOM || (first >= 0 && first < DIFF_KEPT))
        return false;
    if (cmd->event->type == PGW_EVENT_REFUND)
        return strcmp(d->said, cmd->original) == 0;
    return cmd->receipt[0] == '\0' || strcmp(d->said, cmd->receipt) == 0;
}

/* The start of a 409's message (PGW_STORE_KEY_CONFLICT). An event's
 * differences follow (event_conflict): past the message's PGW_ERR_MSG_MAX
 * they are cut, the key never, and its details still name the first whole. */
static int key_conflict(pgw_command *cmd)
{
    return pgw_err_set(&cmd->err, PGW_ECONFLICT, PGW_STORE_KEY_CONFLICT, PGW_IDEM_KEY_MAX,
                       cmd->key);
}

/*
 * An event's key used before for another request: the message names each
 * field that differs of those the key keeps, or else the one its first
 * transfer tells (a refund's original, a receipt), with both values
 * ("amount_fen 12800 then, 9900 now"), `details` the first of them
 * (README, HTTP API). Tills re-use an id for another sale, or resend with
 * another time or receipt; what nothing kept tells (items, a receipt
 * where the reference is the event id) is told as the fingerprint's
 * difference, never guessed. Members by id alone: a phone is never echoed.
 */
static int event_conflict(pgw_command *cmd, const event_diff *d)
{
    char said[PGW_ERR_MSG_MAX] = "";
    size_t used = 0;
    for (int i = 0; i < DIFF_FIELDS; i++) {
        if (!d->differs[i])
            continue;
        bool none = d->now[i][0] == '\0'; /* a member nobody holds, no receipt */
        int n =
            snprintf(said + used, sizeof(said) - used, "%s%s %s then, %s now%s",
                     used > 0 ? "; " : "", DIFF_NAMES[i], d->then[i], none ? "none" : d->now[i],
                     none && i == DIFF_MEMBER ? " (no member holds the identity it names)" : "");
        /* four of ~100 bytes at most, or one told by a transfer (~300) */
        PGW_ASSERT(n > 0 && (size_t)n < sizeof(said) - used);
        used += (size_t)n;
    }
    if (used == 0) /* what the key does not keep differs, or it kept no event */
        snprintf(said, sizeof(said), "the stored fingerprint differs%s",
                 d->found ? " (its member_id, amount_fen, occurred_at and type are the same)" : "");
    pgw_err_set(&cmd->err, PGW_ECONFLICT, PGW_STORE_KEY_CONFLICT ": %s", PGW_IDEM_KEY_MAX, cmd->key,
                said);
    int first = first_difference(d);
    pgw_err_text(&cmd->err, "differs", first < 0 ? "fingerprint" : DIFF_NAMES[first]);
    static const char *const then_names[DIFF_FIELDS] = {
        "member_id_then", NULL, "occurred_at_then", "type_then", "original_event_id_then",
        "receipt_no_then"};
    static const char *const now_names[DIFF_FIELDS] = {"member_id_now",         NULL,
                                                       "occurred_at_now",       "type_now",
                                                       "original_event_id_now", "receipt_no_now"};
    if (first == DIFF_AMOUNT) { /* fen are integers, as everywhere in the API */
        pgw_err_figure(&cmd->err, "amount_fen_then", d->amount_then);
        pgw_err_figure(&cmd->err, "amount_fen_now", cmd->event->amount_fen);
    } else if (first >= 0) {
        pgw_err_text(&cmd->err, then_names[first], d->then[first]);
        if (d->now[first][0] != '\0') /* absent: nobody holds the identity, no receipt */
            pgw_err_text(&cmd->err, now_names[first], d->now[first]);
    }
    return PGW_ECONFLICT;
}

/* The shop whose request first took hold or redemption id cmd->hold_id
 * ("" when it cannot be told): the hold's, or its REDEEM transfer's. */
static int id_owner(pgw_store *store, pgw_command *cmd, char shop[PGW_ID_MAX + 1])
{
    bool found = false;
    int rc;
    shop[0] = '\0';
    if (cmd->kind == PGW_COMMAND_HOLD) {
        pgw_hold_record h;
        rc = pgw_store_get_hold(store, cmd->hold_id, &found, &h, &cmd->err);
        if (rc == PGW_OK && found)
            snprintf(shop, PGW_ID_MAX + 1, "%.*s", PGW_ID_MAX, h.shop);
        return rc;
    }
    pgw_transfer t;
    rc = read_transfer(store, cmd->record.first_transfer, &t, &found, &cmd->err);
    if (rc == PGW_OK && found)
        snprintf(shop, PGW_ID_MAX + 1, "%.*s", PGW_ID_MAX, t.shop_id);
    return rc;
}

/*
 * A hold or redemption id taken before by another request. Tills that
 * number from 1 meet each other's (ids are mall-wide): told to prefix
 * theirs with their shop, unless they do already. A till's own retry
 * with another amount, member or expiry is told so instead: prefixing
 * would not help it (the POS walkthrough was told "S001-S001-RD10").
 */
static int id_conflict(pgw_store *store, pgw_command *cmd)
{
    const char *what = cmd->kind == PGW_COMMAND_HOLD ? "hold" : "redemption";
    char owner[PGW_ID_MAX + 1];
    int rc = id_owner(store, cmd, owner);
    if (rc != PGW_OK)
        return rc;
    if (owner[0] != '\0' && strcmp(owner, cmd->shop) == 0)
        return pgw_err_set(
            &cmd->err, PGW_ECONFLICT,
            "%s id %.128s was taken by an earlier request of this shop, for "
            "another %s: a retry sends that request as it was; a new %s takes a "
            "new id",
            what, cmd->hold_id,
            cmd->kind == PGW_COMMAND_HOLD ? "member, amount or expiry" : "member or amount", what);
    const char *shop = cmd->shop[0] != '\0' ? cmd->shop : "S001";
    size_t len = strlen(shop);
    char example[PGW_ID_MAX + 80] = ""; /* " (S002-1)", unless it is so already */
    if (strncmp(cmd->hold_id, shop, len) != 0 || cmd->hold_id[len] != '-')
        snprintf(example, sizeof(example), " (%s-%.64s)", shop, cmd->hold_id);
    return pgw_err_set(&cmd->err, PGW_ECONFLICT,
                       "%s id %.128s was used before for a different request: hold and "
                       "redemption ids are mall-wide, so a till numbering its own should "
                       "prefix them with its shop id%s",
                       what, cmd->hold_id, example);
}

/* Kinds whose effect depends on the state they meet: replays are recognised first. */
/* Looks the key up before anything else; *seen when it was used before. */
static int check_key_first(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                           bool *seen)
{
    int rc = pgw_store_find_key(store, cmd->key, seen, &cmd->record, &cmd->err);
    if (rc == PGW_OK && !*seen && cmd->keyed_by_appid) { /* recorded before appids were keyed */
        char older[PGW_IDEM_KEY_MAX + 1];
        key_without_appid(cmd->key, older);
        rc = pgw_store_find_key(store, older, seen, &cmd->record, &cmd->err);
        if (rc == PGW_OK && *seen)
            memcpy(cmd->key, older, sizeof(older));
    }
    if (rc != PGW_OK || !*seen)
        return rc;
    /* A capture's or a void's key is its hold's, not its shop's: another
     * shop's caller sending it is told the hold is not there (as before
     * it is settled), never its replay or its state. Used by another
     * request, the hold was captured or voided: API.md's hold_not_pending. */
    bool settles = cmd->kind == PGW_COMMAND_CAPTURE || cmd->kind == PGW_COMMAND_VOID;
    pgw_hold_record h;
    if (settles && cmd->shop[0] != '\0' && (rc = visible_hold(store, cmd, &h)) != PGW_OK)
        return rc;
    /* So is a return's: its key names the spend alone. */
    pgw_transfer spend;
    if (cmd->kind == PGW_COMMAND_RETURN && cmd->shop[0] != '\0' &&
        (rc = visible_spend(store, cmd, &spend)) != PGW_OK)
        return rc;
    if (settles && memcmp(cmd->record.fingerprint, cmd->fingerprint, PGW_HASH_LEN) != 0)
        return pgw_err_set(&cmd->err, PGW_ESTATE, "hold %s was %s by an earlier request",
                           cmd->hold_id, cmd->kind == PGW_COMMAND_CAPTURE ? "captured" : "voided");
    /* Recorded before phones, emails, times or qty's default were normal in
     * fingerprints. */
    bool as_sent =
        (cmd->has_fingerprint_as_sent &&
         memcmp(cmd->record.fingerprint, cmd->fingerprint_as_sent, PGW_HASH_LEN) == 0) ||
        (cmd->has_fingerprint_time_as_sent &&
         memcmp(cmd->record.fingerprint, cmd->fingerprint_time_as_sent, PGW_HASH_LEN) == 0) ||
        (cmd->has_fingerprint_time_qty_as_sent &&
         memcmp(cmd->record.fingerprint, cmd->fingerprint_time_qty_as_sent, PGW_HASH_LEN) == 0);
    bool differs = memcmp(cmd->record.fingerprint, cmd->fingerprint, PGW_HASH_LEN) != 0 &&
                   !as_sent && !repaired_as_row(cmd);
    bool event = differs && cmd->kind == PGW_COMMAND_EVENT && cmd->event != NULL;
    bool told = event && !cmd->first_unsaid; /* a row's is read to compare it, told or not */
    event_diff d;
    if ((told || (event && cmd->from_row)) && (rc = diff_event(store, policy, cmd, &d)) != PGW_OK)
        return rc;
    differs = differs && !(event && cmd->from_row && row_agrees(cmd, &d));
    if (differs && cmd->kind == PGW_COMMAND_IMPORT)
        return import_changed(store, cmd);
    if (differs && (cmd->kind == PGW_COMMAND_HOLD || cmd->kind == PGW_COMMAND_REDEEM))
        return id_conflict(store, cmd);
    if (differs && told)
        return event_conflict(cmd, &d);
    if (differs)
        return key_conflict(cmd);
    cmd->replayed = true;
    return PGW_OK;
}

/* Whether a kind writes what finance's periods hold: transfers, an
 * event's rows (its key, its activity), a hold's. The others (sessions,
 * quota, follows, notices, codes, preferences) are dated by nothing a
 * report reads. */
static bool writes_dated(pgw_command_kind kind)
{
    switch (kind) {
    case PGW_COMMAND_TRANSFERS:
    case PGW_COMMAND_EARN:
    case PGW_COMMAND_EXPIRE_LOT:
    case PGW_COMMAND_REFUND:
    case PGW_COMMAND_HOLD:
    case PGW_COMMAND_CAPTURE:
    case PGW_COMMAND_VOID:
    case PGW_COMMAND_REDEEM:
    case PGW_COMMAND_RETURN:
    case PGW_COMMAND_EXPIRE_HOLD:
    case PGW_COMMAND_EVENT:
    case PGW_COMMAND_BIND:
    case PGW_COMMAND_IMPORT:
    case PGW_COMMAND_LINK:
    case PGW_COMMAND_OTP_VERIFY:
        return true;
    default:
        return false;
    }
}

/* What a command is dated by: its `at` (an event's occurred_at, the
 * clock's for the rest), or raw transfers' own dates, the earliest. */
static int64_t dated_at(const pgw_command *cmd)
{
    if (cmd->kind != PGW_COMMAND_TRANSFERS)
        return cmd->at;
    int64_t at = INT64_MAX;
    for (size_t i = 0; i < cmd->n_transfers; i++)
        at = pgw_min64(at, cmd->transfers[i].occurred_at);
    return at;
}

/* A purchase's replay met before its appends says the points the request
 * earns, as one met after them does (apply_earn groups the lines first):
 * command.h's points_moved, EARN: earned. The same lines as the first
 * request's, for the fingerprint is the same. */
static int replayed_earn_points(pgw_command *cmd)
{
    pgw_earn_funder funders[PGW_EARN_FUNDERS_MAX];
    size_t n = 0;
    return pgw_earn_group(cmd->lines, cmd->n_lines, funders, &n, &cmd->points_moved, &cmd->err);
}

/*
 * PGW_ECLOSED, nothing written, for a command dated before the period
 * close the batch read under its lock (pgw_store_closed_before): finance
 * settled that period. After its key, so that a retry of what was written
 * before the close still answers as a replay: the kinds that look their
 * key up first have; those that append first (a purchase's EARN, raw
 * transfers) look it up here, only when dated before the close (a replay
 * is then *seen, as check_key_first makes one). Things dated by the
 * gateway's clock (holds, redemptions, merges) are after any close, which
 * may not be ahead of the clock, but for instances whose clocks are apart:
 * refused the same, never asserted.
 */
static int check_open_period(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd,
                             bool *seen)
{
    int64_t closed = pgw_store_closed_before(store), at = dated_at(cmd);
    if (closed == 0 || !writes_dated(cmd->kind) || at >= closed)
        return PGW_OK;
    if (!key_checked_first(cmd->kind) && cmd->key[0] != '\0' &&
        (cmd->kind == PGW_COMMAND_EARN || cmd->kind == PGW_COMMAND_TRANSFERS)) {
        int rc = pgw_store_find_key(store, cmd->key, seen, &cmd->record, &cmd->err);
        if (rc == PGW_OK && *seen &&
            memcmp(cmd->record.fingerprint, cmd->fingerprint, PGW_HASH_LEN) != 0)
            return key_conflict(cmd);
        if (rc == PGW_OK && *seen && cmd->kind == PGW_COMMAND_EARN)
            rc = replayed_earn_points(cmd);
        cmd->replayed = rc == PGW_OK && *seen;
        if (rc != PGW_OK || *seen)
            return rc;
    }
    char when[PGW_RFC3339_MAX], close[PGW_RFC3339_MAX];
    pgw_format_moment(at, &policy->tz, when);
    pgw_format_moment(closed, &policy->tz, close);
    return pgw_err_set(&cmd->err, PGW_ECLOSED,
                       "%s is dated %s, in the period finance closed before %s: what is dated "
                       "before the close is final; date it in the open period (at or after %s)",
                       cmd->kind == PGW_COMMAND_EVENT ? "the event (its occurred_at)" : "the write",
                       when, close, close);
}

static int apply_kind(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    switch (cmd->kind) {
    case PGW_COMMAND_TRANSFERS:
        return append_transfers(store, cmd);
    case PGW_COMMAND_EARN:
        return apply_earn(store, policy, cmd, NULL);
    case PGW_COMMAND_EXPIRE_LOT:
        return apply_expire_lot(store, cmd);
    case PGW_COMMAND_REFUND:
        return apply_refund(store, policy, cmd, NULL);
    case PGW_COMMAND_HOLD:
        return apply_hold(store, policy, cmd);
    case PGW_COMMAND_CAPTURE:
        return apply_capture(store, policy, cmd);
    case PGW_COMMAND_VOID:
    case PGW_COMMAND_EXPIRE_HOLD:
        return apply_release(store, policy, cmd);
    case PGW_COMMAND_REDEEM:
        return apply_redeem(store, policy, cmd);
    case PGW_COMMAND_RETURN:
        return apply_return(store, policy, cmd);
    case PGW_COMMAND_EVENT:
        return apply_event(store, policy, cmd);
    case PGW_COMMAND_LINK:
        return apply_link(store, policy, cmd);
    case PGW_COMMAND_SUBSCRIBE:
        return apply_subscribe(store, cmd);
    case PGW_COMMAND_END_SESSION:
        return apply_end_session(store, cmd);
    case PGW_COMMAND_OA_FOLLOW:
        return apply_follow(store, cmd);
    case PGW_COMMAND_NOTICE_RETRY:
        return pgw_store_retry_notice(store, cmd->notice_id, now_us() / 1000000, &cmd->err);
    case PGW_COMMAND_SMS_PREFERENCE:
        return apply_preferences(store, cmd);
    case PGW_COMMAND_BIND:
        return apply_bind(store, policy, cmd);
    case PGW_COMMAND_IMPORT:
        return apply_import(store, policy, cmd);
    case PGW_COMMAND_OTP_ISSUE:
        return apply_otp_issue(store, policy, cmd);
    case PGW_COMMAND_OTP_VERIFY:
        return apply_otp_verify(store, policy, cmd);
    case PGW_COMMAND_OTP_VOID:
        return pgw_store_otp_void(store, cmd->who.lookup, cmd->otp_hash, &cmd->err);
    case PGW_COMMAND_PRUNE:
        return apply_prune(store, cmd);
    case PGW_COMMAND_READ_MEMBER:
    case PGW_COMMAND_READ_HISTORY:
    case PGW_COMMAND_READ_RESOLVE:
    case PGW_COMMAND_READ_CALL:
        break; /* not a write: pgw_command_read */
    }
    return pgw_err_set(&cmd->err, PGW_EINVAL, "unknown command kind %d", (int)cmd->kind);
}

/* The record record_key left for the answer, with it ("" stores none). */
static int record_key_with_answer(pgw_store *store, pgw_command *cmd)
{
    bool again = false;
    pgw_idem_record existing;
    const pgw_event_record *event = cmd->event_record.type[0] ? &cmd->event_record : NULL;
    int rc = pgw_store_record_key(
        store, cmd->key, cmd->fingerprint, cmd->record.first_transfer, cmd->record.transfer_count,
        now_us(), cmd->answer[0] ? cmd->answer : NULL, event, &again, &existing, &cmd->err);
    if (rc == PGW_OK && again) /* the look-up said unused, in this transaction */
        rc = pgw_err_set(&cmd->err, PGW_ECONFLICT,
                         "idempotency key %.*s appeared while its command ran", PGW_IDEM_KEY_MAX,
                         cmd->key);
    return rc;
}

/* Renders and stores the answer (when the caller renders one), or reads back a replay's. */
static int answer(pgw_store *store, pgw_command *cmd, int rc)
{
    cmd->answer[0] = '\0';
    if (rc != PGW_OK ||
        (cmd->kind == PGW_COMMAND_EXPIRE_HOLD || cmd->kind == PGW_COMMAND_EXPIRE_LOT))
        return rc;
    if (cmd->replayed) /* whatever the first one stored ("" when it rendered nothing) */
        return pgw_store_get_answer(store, cmd->key, cmd->answer, sizeof(cmd->answer), &cmd->err);
    if (cmd->render != NULL) {
        cmd->render(cmd, cmd->render_ctx);
        if (memchr(cmd->answer, '\0', sizeof(cmd->answer)) == NULL)
            return pgw_err_set(&cmd->err, PGW_EINVAL, "answer longer than %d bytes",
                               PGW_ANSWER_MAX);
    }
    if (cmd->key_deferred)
        return record_key_with_answer(store, cmd);
    /* Every kind that renders looks its key up first (its record waits for
     * the answer); a wrong OTP code records no key and renders nothing. */
    PGW_ASSERT(cmd->answer[0] == '\0');
    return PGW_OK;
}

static void reset_output(pgw_command *cmd)
{
    pgw_err_clear(&cmd->err);
    cmd->replayed = false;
    cmd->key_deferred = false;
    cmd->points_moved = 0;
    cmd->written_off = 0;
    cmd->debt_added = 0;
    cmd->spend_left = 0;
    cmd->returned_lapsed = 0;
    memset(&cmd->record, 0, sizeof(cmd->record));
    cmd->event_record.type[0] = '\0'; /* none: not an event, or one that recorded none */
    memset(&cmd->figures, 0, sizeof(cmd->figures));
    cmd->figures_kept = false;
    cmd->enrolling = NULL;
    cmd->merged_from[0] = '\0';
    cmd->new_tier = -1;
    cmd->retry_at = 0;
    cmd->risk_rule = PGW_RISK_NONE;
    cmd->otp_verdict = PGW_OTP_VERIFIED;
    cmd->follow_seen = false;
    cmd->follow_new = false;
    cmd->otp_tries_left = 0;
    cmd->pruned_sessions = cmd->pruned_enrolments = cmd->pruned_reminders = 0;
    if (cmd->kind != PGW_COMMAND_TRANSFERS)
        cmd->n_transfers = 0;
}

/* Whether a purchase's points were past their expiry when it was applied
 * (a sale posted late): the member cannot spend them, and the sweep takes
 * them within a minute. */
static bool expired_on_arrival(const pgw_ledger_policy *policy, const pgw_command *cmd)
{
    int64_t expires_at = 0;
    return pgw_expiry_at(&policy->expiry, &policy->tz, cmd->at, &expires_at, NULL) == PGW_OK &&
           expires_at <= now_us() / 1000000;
}

/* The notice of the points a command moved: "points arrived" for a
 * purchase that earned (not for points already expired: "arrived" would
 * name points the member cannot use) and for a return of spent points (the
 * member saw them go; not those back in lots past their expiry, for the
 * same reason), "points reversed" for a refund, "redemption" for points
 * spent. */
static int queue_points_notice(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    int64_t points = cmd->points_moved - cmd->returned_lapsed;
    if (points <= 0)
        return PGW_OK;
    const char *kind = NULL;
    bool purchase = cmd->kind == PGW_COMMAND_EVENT && cmd->event != NULL &&
                    cmd->event->type == PGW_EVENT_PURCHASE;
    bool refund = cmd->kind == PGW_COMMAND_EVENT && cmd->event != NULL &&
                  cmd->event->type == PGW_EVENT_REFUND;
    if (purchase && expired_on_arrival(policy, cmd))
        return PGW_OK;
    bool arrival = purchase || cmd->kind == PGW_COMMAND_RETURN;
    if (arrival)
        kind = "points_arrived";
    else if (refund)
        kind = "points_reversed";
    else if (cmd->kind == PGW_COMMAND_REDEEM || cmd->kind == PGW_COMMAND_CAPTURE)
        kind = "redemption";
    if (kind == NULL)
        return PGW_OK;
    return pgw_store_enqueue_notice(store, cmd->member, kind, points, cmd->figures.unexpired,
                                    cmd->shop, "", now_us() / 1000000,
                                    arrival ? policy->notify_coalesce_s : 0, &cmd->err);
}

/* The notices a command causes, in its own transaction (so a notice exists
 * exactly when its cause committed). The balance told leaves out points
 * past their expiry not yet swept: the member has them no more. The
 * points first, then the tier change they made: queued after an arrival,
 * the tier change makes it due at once and goes after it (store.h
 * pgw_store_enqueue_notice), where queued first it went at once and the
 * arrival after its window ("you are now 金卡", then "+600 points"). */
static int queue_notice(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    if (!policy->notify || cmd->member[0] == '\0')
        return PGW_OK;
    int rc = queue_points_notice(store, policy, cmd);
    if (rc == PGW_OK && cmd->new_tier >= 0) /* "you are now 金卡": the name members read */
        rc = pgw_store_enqueue_notice(store, cmd->member, "tier_changed", 0, cmd->figures.unexpired,
                                      cmd->shop, policy->rules->tiers[cmd->new_tier].display_name,
                                      now_us() / 1000000, 0, &cmd->err);
    return rc;
}

void pgw_command_apply(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    reset_output(cmd);
    bool seen = false;
    int rc = pgw_store_savepoint(store, &cmd->err);
    if (rc == PGW_OK && key_checked_first(cmd->kind))
        rc = check_key_first(store, policy, cmd, &seen);
    if (rc == PGW_OK && !seen)
        rc = check_open_period(store, policy, cmd, &seen);
    /* After the key: a retried logout (or any retry) gets its first answer. */
    if (rc == PGW_OK && !seen)
        rc = check_session(store, cmd);
    /* BIND's `who` is what to bind, not whom the command is for. */
    if (rc == PGW_OK && !seen && cmd->by_identity && cmd->kind != PGW_COMMAND_BIND &&
        cmd->kind != PGW_COMMAND_IMPORT && cmd->kind != PGW_COMMAND_LINK &&
        cmd->kind != PGW_COMMAND_OA_FOLLOW && cmd->kind != PGW_COMMAND_OTP_ISSUE &&
        cmd->kind != PGW_COMMAND_OTP_VERIFY && cmd->kind != PGW_COMMAND_OTP_VOID)
        rc = resolve_member(store, policy, cmd);
    /* An event follows them on its first read of the member (apply_event). */
    if (rc == PGW_OK && !seen && cmd->member[0] != '\0' && cmd->kind != PGW_COMMAND_EVENT)
        rc = follow_merges(store, cmd);
    if (rc == PGW_OK && !seen)
        rc = apply_kind(store, policy, cmd);
    if (rc == PGW_OK && !cmd->replayed && cmd->member[0] != '\0' && !cmd->figures_kept) {
        bool found = false;
        rc = pgw_store_member_figures(store, cmd->member, figures_at(cmd), &found, &cmd->figures,
                                      &cmd->err);
    }
    if (rc == PGW_OK && !cmd->replayed)
        rc = queue_notice(store, policy, cmd);
    rc = answer(store, cmd, rc);
    /* A failed RELEASE (a PostgreSQL connection lost at that moment) is
     * the command's failure, undone like any other. */
    if (rc == PGW_OK && !cmd->replayed)
        rc = pgw_store_release(store, &cmd->err);
    if (rc != PGW_OK || cmd->replayed) {
        pgw_store_rollback_to(store, NULL); /* its own error, if any, is in cmd->err */
        for (size_t i = 0; i < cmd->n_transfers; i++)
            cmd->transfers[i].id = 0; /* those appends were undone */
    }
    cmd->rc = rc;
}

/* A return's key names its spend: return:<original>/<id>, the id not
 * empty and without '/' (the API's, api.c handle_return). verify finds a
 * spend's returns by it (store.c). */
static bool names_its_spend(const pgw_command *cmd)
{
    const char *rest = cmd->key + strlen("return:");
    size_t n = strlen(cmd->original);
    return strncmp(cmd->key, "return:", strlen("return:")) == 0 &&
           strncmp(rest, cmd->original, n) == 0 && rest[n] == '/' && rest[n + 1] != '\0' &&
           strchr(rest + n + 1, '/') == NULL;
}

int pgw_command_check(const pgw_command *cmd, pgw_err *err)
{
    if (cmd->done == NULL)
        return pgw_err_set(err, PGW_EINVAL, "command without a completion callback");
    if ((int)cmd->kind < 0 || cmd->kind > PGW_COMMAND_KIND_MAX)
        return pgw_err_set(err, PGW_EINVAL, "unknown command kind %d", (int)cmd->kind);
    /* The writer names expiries itself. */
    bool keyed = cmd->kind != PGW_COMMAND_EXPIRE_LOT && cmd->kind != PGW_COMMAND_EXPIRE_HOLD &&
                 cmd->kind != PGW_COMMAND_OA_FOLLOW && cmd->kind != PGW_COMMAND_NOTICE_RETRY &&
                 cmd->kind != PGW_COMMAND_SMS_PREFERENCE && cmd->kind != PGW_COMMAND_OTP_ISSUE &&
                 cmd->kind != PGW_COMMAND_OTP_VOID && cmd->kind != PGW_COMMAND_PRUNE &&
                 !pgw_command_reads(cmd->kind);
    if (keyed && !filled(cmd->key, sizeof(cmd->key)))
        return pgw_err_set(err, PGW_EINVAL, "command without an idempotency key");
    switch (cmd->kind) {
    case PGW_COMMAND_TRANSFERS:
        if (cmd->n_transfers < 1 || cmd->n_transfers > PGW_COMMAND_TRANSFERS_MAX)
            return pgw_err_set(err, PGW_EINVAL, "a command writes 1..%d transfers, not %zu",
                               PGW_COMMAND_TRANSFERS_MAX, cmd->n_transfers);
        return PGW_OK;
    case PGW_COMMAND_EARN:
        if (!filled(cmd->member, sizeof(cmd->member)) || cmd->n_lines < 1 ||
            cmd->n_lines > PGW_BREAKDOWN_MAX)
            return pgw_err_set(err, PGW_EINVAL, "an earn needs a member and 1..%d lines",
                               PGW_BREAKDOWN_MAX);
        return PGW_OK;
    case PGW_COMMAND_EXPIRE_LOT:
        return cmd->lot_id > 0 ? PGW_OK : pgw_err_set(err, PGW_EINVAL, "no lot to expire");
    case PGW_COMMAND_REFUND:
        return filled(cmd->original, sizeof(cmd->original))
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a refund names its original purchase");
    case PGW_COMMAND_HOLD:
    case PGW_COMMAND_REDEEM:
        if (!(filled(cmd->member, sizeof(cmd->member)) || cmd->by_identity) ||
            !filled(cmd->shop, sizeof(cmd->shop)))
            return pgw_err_set(err, PGW_EINVAL, "a hold or redemption needs a member and a shop");
        return filled(cmd->hold_id, sizeof(cmd->hold_id))
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a hold or redemption needs an id");
    case PGW_COMMAND_READ_MEMBER:
        return filled(cmd->member, sizeof(cmd->member)) || cmd->by_identity
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a member read names the member");
    case PGW_COMMAND_IMPORT:
        return (cmd->by_identity || cmd->has_who2) && filled(cmd->shop, sizeof(cmd->shop)) &&
                       cmd->points >= 1 && cmd->points <= PGW_POINTS_MAX
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL,
                                 "an import needs a card or a phone, a shop "
                                 "and 1..%lld points",
                                 (long long)PGW_POINTS_MAX);
    case PGW_COMMAND_BIND:
        return cmd->by_identity && filled(cmd->member, sizeof(cmd->member))
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a bind names a member and an identity");
    case PGW_COMMAND_READ_CALL:
        return cmd->call != NULL ? PGW_OK
                                 : pgw_err_set(err, PGW_EINVAL, "a call names its function");
    case PGW_COMMAND_READ_RESOLVE:
        return cmd->by_identity || filled(cmd->member, sizeof(cmd->member))
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a resolve names an identity");
    case PGW_COMMAND_READ_HISTORY:
        return filled(cmd->member, sizeof(cmd->member)) && cmd->page != NULL && cmd->page_cap > 0
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a history read names the member and has room");
    case PGW_COMMAND_EVENT:
        if (!(filled(cmd->member, sizeof(cmd->member)) || cmd->by_identity) || cmd->event == NULL ||
            cmd->earning == NULL || !filled(cmd->channel, sizeof(cmd->channel)))
            return pgw_err_set(err, PGW_EINVAL,
                               "an event needs a member, its channel, the event and room for "
                               "its earning");
        if (cmd->event->type == PGW_EVENT_REFUND && !filled(cmd->original, sizeof(cmd->original)))
            return pgw_err_set(err, PGW_EINVAL, "a refund names its original purchase");
        return PGW_OK;
    case PGW_COMMAND_LINK: {
        bool openid = cmd->who.kind == PGW_ID_MP_OPENID || cmd->who.kind == PGW_ID_OA_OPENID;
        bool session = cmd->session_id[0] == '\0' ||
                       (strlen(cmd->session_id) == PGW_SESSION_ID_LEN &&
                        filled(cmd->appid, sizeof(cmd->appid)) && cmd->session_expires > cmd->at);
        return cmd->by_identity && openid && (!cmd->has_who2 || cmd->who2.kind == PGW_ID_UNIONID) &&
                       session
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL,
                                 "a link needs an openid, maybe a unionid, and a whole session");
    }
    case PGW_COMMAND_SUBSCRIBE:
        return filled(cmd->member, sizeof(cmd->member)) &&
                       filled(cmd->template_id, sizeof(cmd->template_id)) && cmd->points >= 1 &&
                       cmd->points <= PGW_QUOTA_MAX
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL,
                                 "a subscription needs a member, a template and 1..%d sends",
                                 PGW_QUOTA_MAX);
    case PGW_COMMAND_END_SESSION:
        return strlen(cmd->session_id) == PGW_SESSION_ID_LEN
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a logout names its session");
    case PGW_COMMAND_NOTICE_RETRY:
        return cmd->notice_id > 0 ? PGW_OK : pgw_err_set(err, PGW_EINVAL, "no notice to retry");
    case PGW_COMMAND_SMS_PREFERENCE:
        return filled(cmd->member, sizeof(cmd->member))
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a preference names its member");
    case PGW_COMMAND_OTP_VOID:
        return cmd->by_identity && cmd->who.kind == PGW_ID_PHONE
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a code to void names its phone");
    case PGW_COMMAND_OTP_ISSUE:
    case PGW_COMMAND_OTP_VERIFY: {
        bool member =
            cmd->kind == PGW_COMMAND_OTP_ISSUE || filled(cmd->member, sizeof(cmd->member));
        return cmd->by_identity && cmd->who.kind == PGW_ID_PHONE && member &&
                       filled(cmd->otp_requester, sizeof(cmd->otp_requester))
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a code names a phone (and a member to bind)");
    }
    case PGW_COMMAND_OA_FOLLOW:
        return cmd->by_identity && cmd->who.kind == PGW_ID_OA_OPENID &&
                       (cmd->oa_follow == PGW_OA_UNFOLLOWS || cmd->oa_follow == PGW_OA_FOLLOWS ||
                        cmd->oa_follow == PGW_OA_NOTE || cmd->oa_follow == PGW_OA_FORGET_NOTE)
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a follow change names an openid");
    case PGW_COMMAND_PRUNE:
        return cmd->at > PGW_PRUNE_GRACE_S
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a prune names the moment it runs at");
    case PGW_COMMAND_RETURN:
        if (!filled(cmd->hold_id, sizeof(cmd->hold_id)) ||
            !filled(cmd->original, sizeof(cmd->original)) || cmd->points < 1 ||
            cmd->points > PGW_POINTS_MAX)
            return pgw_err_set(err, PGW_EINVAL, "a return names its spend and 1..%lld points",
                               (long long)PGW_POINTS_MAX);
        return names_its_spend(cmd)
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a return's key is return:%s/<its id>, not %s",
                                 cmd->original, cmd->key);
    case PGW_COMMAND_CAPTURE:
    case PGW_COMMAND_VOID:
    case PGW_COMMAND_EXPIRE_HOLD:
        return filled(cmd->hold_id, sizeof(cmd->hold_id))
                   ? PGW_OK
                   : pgw_err_set(err, PGW_EINVAL, "a hold command needs a hold id");
    }
    return PGW_EINVAL;
}

bool pgw_command_reads(pgw_command_kind kind)
{
    return kind == PGW_COMMAND_READ_MEMBER || kind == PGW_COMMAND_READ_HISTORY ||
           kind == PGW_COMMAND_READ_RESOLVE || kind == PGW_COMMAND_READ_CALL;
}

static int read_member(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    pgw_activity_days days;
    pgw_member_activity activity;
    bool active = false;
    int rc = pgw_store_member_figures(store, cmd->member, cmd->at, &cmd->found, &cmd->figures,
                                      &cmd->err);
    if (rc == PGW_OK && !cmd->found)
        return pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no member %s", cmd->member);
    if (rc == PGW_OK)
        rc = activity_days(policy, cmd->at, &days, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_member_activity(store, cmd->member, &days, &active, &activity, &cmd->err);
    cmd->tier = -1;
    if (rc == PGW_OK && policy->rules != NULL)
        cmd->tier = pgw_rules_tier_for_spend(policy->rules, activity.spend_12m_fen);
    if (rc == PGW_OK)
        rc = pgw_store_member_expiring(store, cmd->member, cmd->at, cmd->expiring,
                                       PGW_EXPIRING_SHOWN, &cmd->n_expiring, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_member_identities(store, cmd->member, cmd->identities, PGW_IDENTITIES_SHOWN,
                                         &cmd->n_identities, &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_member_follows(store, cmd->member, &cmd->follows, &cmd->err);
    cmd->n_subscriptions = 0;
    for (size_t i = 0; rc == PGW_OK && i < PGW_TEMPLATES_SHOWN && cmd->templates[i]; i++) {
        pgw_subscription *sub = &cmd->subscriptions[cmd->n_subscriptions++];
        snprintf(sub->template_id, sizeof(sub->template_id), "%s", cmd->templates[i]);
        rc = pgw_store_quota(store, cmd->member, sub->template_id, &sub->quota, &cmd->err);
    }
    cmd->n_page = 0;
    if (rc == PGW_OK && cmd->page != NULL && cmd->page_cap > 0) /* GET /v1/me: the newest too */
        rc = pgw_store_member_history(store, cmd->member, INT64_MAX, cmd->page, cmd->page_cap,
                                      &cmd->n_page, &cmd->err);
    return rc;
}

void pgw_command_read(pgw_store *store, const pgw_ledger_policy *policy, pgw_command *cmd)
{
    reset_output(cmd);
    cmd->found = false;
    cmd->n_expiring = 0;
    PGW_ASSERT(pgw_command_reads(cmd->kind));
    cmd->n_identities = 0;
    if ((cmd->rc = check_session(store, cmd)) != PGW_OK)
        return;
    if (cmd->kind == PGW_COMMAND_READ_CALL) {
        cmd->rc = cmd->call(store, cmd);
        return;
    }
    if (cmd->member[0] == '\0' && cmd->by_identity && cmd->kind == PGW_COMMAND_READ_MEMBER) {
        cmd->rc = pgw_store_find_identity(store, &cmd->who, &cmd->found, cmd->member, &cmd->err);
        if (cmd->rc == PGW_OK && !cmd->found)
            cmd->rc = pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no member has that %s",
                                  pgw_identity_kind_name(cmd->who.kind));
        if (cmd->rc != PGW_OK)
            return;
    }
    if (cmd->member[0] != '\0' && (cmd->rc = follow_merges(store, cmd)) != PGW_OK)
        return;
    if (cmd->kind == PGW_COMMAND_READ_RESOLVE) { /* a member_id resolves to itself */
        cmd->rc =
            cmd->by_identity
                ? pgw_store_find_identity(store, &cmd->who, &cmd->found, cmd->member, &cmd->err)
                : pgw_store_member_figures(store, cmd->member, cmd->at, &cmd->found, &cmd->figures,
                                           &cmd->err);
        if (cmd->rc == PGW_OK && !cmd->found)
            cmd->rc = pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no such member");
        return;
    }
    if (cmd->kind == PGW_COMMAND_READ_MEMBER) {
        cmd->rc = read_member(store, policy, cmd);
        return;
    }
    cmd->n_page = 0;
    cmd->rc = pgw_store_member_figures(store, cmd->member, cmd->at, &cmd->found, &cmd->figures,
                                       &cmd->err);
    if (cmd->rc == PGW_OK && !cmd->found)
        cmd->rc = pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no member %s", cmd->member);
    if (cmd->rc == PGW_OK)
        cmd->rc = pgw_store_member_history(store, cmd->member, cmd->before, cmd->page,
                                           cmd->page_cap, &cmd->n_page, &cmd->err);
}
