/*
 * ledger.h - ledger semantics: lots and expiry, refunds, holds, debt.
 *
 * Two layers, both pure (time is always a parameter, never read):
 *
 * 1. Planning functions that any store calls on the rows it has loaded:
 *    when a lot expires, which lots a debit consumes, how much a refund
 *    reverses and from which funder. The SQLite and PostgreSQL stores use
 *    exactly these, so both agree with the model below.
 *
 * 2. pgw_ledger: an in-memory reference implementation of the whole ledger
 *    (accounts, transfers with their hash chain, lots, holds, earns and
 *    their refunds). It is the executable specification: the randomised
 *    test drives it through thousands of operations and checks every
 *    invariant after each, and the durable stores are tested against the
 *    same scenarios. All memory is allocated by pgw_ledger_new(); an
 *    operation never allocates and either applies completely or changes
 *    nothing (it plans and checks capacities before it writes).
 *
 * Semantics (README "Ledger semantics" says the same for operators):
 * - Balance of an account = credits - debits; all balances sum to zero.
 * - A member's balance = sum over their lots of (left + held) - debt.
 *   available = balance - points held by holds pending before their
 *   deadline - points left in lots past their expiry (the sweep has yet
 *   to move them), and those a hold past its deadline will put back there.
 * - Earning creates one lot (after first repaying any debt) with an expiry
 *   from the policy; spending consumes lots earliest expiry first, then
 *   earliest earned, then lowest id; lots already expired are not spent.
 * - A refund of R (cumulative) of an original amount A that earned P
 *   reverses floor(P*R/A) in total, split across the original funders.
 *   Points of the purchase's lot that expired are written off first
 *   (pgw_refund_lapsed); what the member's lots cannot cover of the rest
 *   becomes debt (allow_negative) or is written off (clamp), so
 *   reversed + written_off == floor(P*R/A).
 * - A return gives back part of a redemption or capture: to the lots it
 *   spent, what it took last first, after repaying the member's debt.
 * - A hold reserves points from lots (left -> held); capture spends part
 *   or all of them and releases the rest; void or the deadline releases
 *   all. Released points repay the member's debt first (a refund made
 *   while they were held could not take them). Reserved points do not
 *   expire while held; released points of an expired lot expire at the
 *   next expiry run. A hold is expired from its deadline on, released or
 *   not: every operation first releases its member's holds past their
 *   deadline (by deadline, then id), as the stores' commands do.
 */
#ifndef PGW_CORE_LEDGER_H
#define PGW_CORE_LEDGER_H

#include "bounds.h"
#include "civil.h"
#include "error.h"
#include "rules.h"
#include "transfer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_NEVER            INT64_MAX /* expires_at of a lot that never expires */
#define PGW_EARN_FUNDERS_MAX 8         /* distinct debit accounts on one earn */

/* ---- planning ------------------------------------------------------------ */

/*
 * When a lot earned at `earned_at` expires (PGW_NEVER for policy NEVER).
 * ROLLING N: usable through the local day N calendar months after the
 * earning day (day clamped to month end), so expires_at is the local
 * midnight that ends that day. YEAR_END N: usable through 31 December of
 * (earning year + N); expires_at is the local midnight of the next 1 January.
 * A lot is expired at every instant t >= expires_at.
 */
int pgw_expiry_at(const pgw_expiry *policy, const pgw_tz *tz, int64_t earned_at,
                  int64_t *expires_at, pgw_err *err);

typedef struct pgw_lot {
    int64_t id;
    char member[PGW_ID_MAX + 1];
    int64_t points; /* earned into the lot, after debt repayment */
    int64_t left;   /* free to spend */
    int64_t held;   /* reserved by pending holds */
    int64_t earned_at;
    int64_t expires_at;
    int64_t source_transfer; /* id of the first transfer of its earn */
} pgw_lot;

typedef struct pgw_lot_take {
    size_t lot; /* index into the lots array given to the planner */
    int64_t points;
} pgw_lot_take;

/* Consumption order: negative when lot a is spent before lot b. */
int pgw_lot_order(const pgw_lot *a, const pgw_lot *b);

/*
 * Plans taking `points` from the free part (left) of `member`'s lots that
 * are not expired at `now`, in consumption order. Writes at most takes_cap
 * takes; *shortfall is what the lots could not cover (0 when they could).
 * PGW_EFULL when more than takes_cap lots would be needed. Mutates nothing.
 */
int pgw_lots_plan_take(const pgw_lot *lots, size_t n, const char *member, int64_t now,
                       int64_t points, pgw_lot_take *takes, size_t takes_cap, size_t *n_takes,
                       int64_t *shortfall);

/* floor(P*R/A): points reversed in total after refunds totalling R of A.
 * PGW_EEXCEEDS when R > A; PGW_EINVAL for P < 0, A < 1 or R < 0. */
int pgw_refund_target(int64_t points, int64_t amount, int64_t refunded, int64_t *out, pgw_err *err);

/*
 * Splits `delta` points to reverse now across n funding lines of lines[i]
 * points (the purchase's funders) that have had reversed[i] reversed.
 * Each line keeps its share of what stays unreversed (pgw_share_out, the
 * settlement report's rule for an expiry) and is owed the rest, less what
 * it gave back already. So once the purchase's lot is gone, refunded in
 * parts and expired in parts in any order, each funder's reversed points
 * and its share of the lot's expiry add up to its line: its settlement
 * row nets zero. Exact (the parts sum to delta) and every line ends fully
 * reversed when the whole is. Rarely, with three lines or more, a line is
 * owed less than it gave back (largest remainders are not monotone): it
 * keeps it, and the last lines give a point less. PGW_ERANGE when delta
 * exceeds what the lines have left.
 */
int pgw_refund_split(const int64_t *lines, const int64_t *reversed, size_t n, int64_t delta,
                     int64_t *parts, pgw_err *err);

/*
 * Of `delta` points a refund reverses now, those that lapsed: the points
 * its purchase's own lot lost to expiry (`expired`: those the sweep moved
 * and those due by the refund's time, still in the lot) are not taken back
 * (the member no longer has them; the funders' cost ended when they
 * expired). They are written off before anything is reversed, less what
 * the earn has written off already (`written_off` counts them). Returns
 * 0..delta.
 */
int64_t pgw_refund_lapsed(int64_t delta, int64_t expired, int64_t written_off);

/*
 * Shares `points` (>= 0) among n (1..PGW_EARN_FUNDERS_MAX) parts in
 * proportion to `weights` (each >= 0, summing to at least 1): each the
 * floor of its share, then one point more to the largest remainders
 * (earlier parts first on ties), so no share exceeds its exact value
 * rounded up. The settlement report shares an expiry among its lot's
 * funders so, and a refund what each funder keeps (pgw_refund_split).
 * PGW_ERANGE when the weights sum to less than 1 or overflow.
 */
int pgw_share_out(int64_t points, const int64_t *weights, size_t n, int64_t *shares);

typedef enum pgw_hold_state {
    PGW_HOLD_PENDING = 0,
    PGW_HOLD_CAPTURED,
    PGW_HOLD_VOIDED,
    PGW_HOLD_EXPIRED,
} pgw_hold_state;

const char *pgw_hold_state_name(pgw_hold_state state); /* "pending", ... */

/* A hold's state at `now`: a stored PENDING hold is EXPIRED from its
 * deadline on, whether or not a sweep has released it yet. */
pgw_hold_state pgw_hold_state_at(pgw_hold_state stored, int64_t deadline, int64_t now);

/* ---- the in-memory reference ledger -------------------------------------- */

typedef struct pgw_ledger pgw_ledger;

typedef struct pgw_ledger_options {
    size_t max_members;
    size_t max_accounts;
    size_t max_lots;
    size_t max_holds;
    size_t max_portions; /* lot reservations held by holds, in total; and lots spends took */
    size_t max_transfers;
    size_t max_earns;
    size_t max_refs; /* idempotency references: earns, refunds, holds, redemptions */
    bool allow_negative;
    pgw_expiry expiry;
    pgw_tz tz;
} pgw_ledger_options;

typedef struct pgw_earn_line {
    char debit[PGW_ACCOUNT_MAX + 1]; /* funder: "shop:S001:issued", "mall:campaigns", ... */
    char rule[PGW_RULE_MAX + 1];
    int64_t points; /* >= 1 */
} pgw_earn_line;

/* One funder's share of an earn: its lines summed, with their breakdown. */
typedef struct pgw_earn_funder {
    char debit[PGW_ACCOUNT_MAX + 1];
    int64_t points;
    char breakdown[PGW_BREAKDOWN_TEXT_MAX + 1]; /* "rule=points,rule=points" */
} pgw_earn_funder;

/*
 * Groups earn lines by funder (debit account), in order of first
 * appearance: one EARN transfer is written per funder. Checks every line
 * (points 1..PGW_POINTS_MAX, a debit account) and the total (at most
 * PGW_POINTS_MAX). Shared by the reference ledger and the stores.
 */
int pgw_earn_group(const pgw_earn_line *lines, size_t n, pgw_earn_funder *funders,
                   size_t *n_funders, int64_t *total, pgw_err *err);

typedef struct pgw_earn_cmd {
    const char *member; /* member id, e.g. "M1" */
    const char *ref;    /* the event's idempotency reference; unique */
    const char *shop;   /* "" when none */
    int64_t amount_fen; /* purchase amount for later refunds; 0 when none */
    size_t n_lines;
    const pgw_earn_line *lines;
    int64_t at; /* unix seconds */
} pgw_earn_cmd;

/* Allocates a ledger sized by `opts`; the caller frees it with pgw_ledger_free. */
int pgw_ledger_new(const pgw_ledger_options *opts, pgw_ledger **out, pgw_err *err);
void pgw_ledger_free(pgw_ledger *ledger);

/* Earns lines for a member: one EARN transfer per funder, then one lot. */
int pgw_ledger_earn(pgw_ledger *ledger, const pgw_earn_cmd *cmd, pgw_err *err);

/* Refunds amount_fen of the earn `original_ref` (PGW_ENOTFOUND, PGW_EEXCEEDS). */
int pgw_ledger_refund(pgw_ledger *ledger, const char *original_ref, const char *refund_ref,
                      int64_t amount_fen, int64_t at, pgw_err *err);

/* Reserves points for a redemption at `shop` until `deadline` (PGW_EINSUFFICIENT;
 * PGW_ENOTFOUND for a member never seen: a spend never enrolls). */
int pgw_ledger_hold(pgw_ledger *ledger, const char *hold_id, const char *member, const char *shop,
                    int64_t points, int64_t deadline, int64_t at, pgw_err *err);

/*
 * Spends `points` of a pending hold (all of it when points <= 0) and
 * releases the rest. PGW_ESTATE when the hold is not pending; a hold whose
 * deadline has passed (at >= deadline) becomes EXPIRED, releasing its
 * points, and the capture fails with PGW_ESTATE.
 */
int pgw_ledger_capture(pgw_ledger *ledger, const char *hold_id, int64_t points, int64_t at,
                       pgw_err *err);
int pgw_ledger_void(pgw_ledger *ledger, const char *hold_id, int64_t at, pgw_err *err);
/* Expires every pending hold with deadline <= now, by deadline then id (as
 * the stores do); *n_expired may be NULL. */
int pgw_ledger_expire_holds(pgw_ledger *ledger, int64_t now, size_t *n_expired, pgw_err *err);

/* Hold and capture in one step. */
int pgw_ledger_redeem(pgw_ledger *ledger, const char *ref, const char *member, const char *shop,
                      int64_t points, int64_t at, pgw_err *err);

/*
 * Gives back `points` of the spend whose REDEEM transfer is keyed
 * `spend_ref` (a redemption's ref, a capture's hold id): a REDEEM transfer
 * from the shop's redeemed account to the member that now has the lots it
 * spent, the points repaying its debt first and the rest going back to
 * those lots, what the spend took last first. PGW_ENOTFOUND for no such
 * spend, PGW_EEXCEEDS beyond what it has left to give back.
 */
int pgw_ledger_return(pgw_ledger *ledger, const char *spend_ref, const char *return_ref,
                      int64_t points, int64_t at, pgw_err *err);

/* Expires what is left of every lot with expires_at <= now. Idempotent. */
int pgw_ledger_expire(pgw_ledger *ledger, int64_t now, size_t *n_lots, pgw_err *err);

/* Reads. Unknown members and accounts read as 0. */
int64_t pgw_ledger_balance(const pgw_ledger *ledger, const char *member);
/* At `at`: lots past their expiry that no expiry run moved yet do not count. */
int64_t pgw_ledger_available(const pgw_ledger *ledger, const char *member, int64_t at);

/* A spend refused for want of points, in `err` with API.md's details
 * (member_id, available, asked), returning PGW_EINSUFFICIENT: `member` has
 * `available` (below 0 while it owes) of the `asked`; or (_expired) only
 * `usable` of them, the rest past their expiry. The reference ledger and
 * the store's spends say it by these. */
int pgw_ledger_refuse_short(pgw_err *err, const char *member, int64_t available, int64_t asked);
int pgw_ledger_refuse_expired(pgw_err *err, const char *member, int64_t usable, int64_t asked);
int64_t pgw_ledger_debt(const pgw_ledger *ledger, const char *member);
int64_t pgw_ledger_account(const pgw_ledger *ledger, const char *account);
size_t pgw_ledger_transfer_count(const pgw_ledger *ledger);
const pgw_transfer *pgw_ledger_transfer(const pgw_ledger *ledger, size_t index);
size_t pgw_ledger_lot_count(const pgw_ledger *ledger);
const pgw_lot *pgw_ledger_lot(const pgw_ledger *ledger, size_t index);
/* PGW_ENOTFOUND for an unknown hold. */
int pgw_ledger_hold_state(const pgw_ledger *ledger, const char *hold_id, pgw_hold_state *out);
/* Points reversed and written off so far for an earn (PGW_ENOTFOUND). */
int pgw_ledger_earn_reversal(const pgw_ledger *ledger, const char *ref, int64_t *reversed,
                             int64_t *written_off);

/* Checks every invariant (see the top of this file); names the first broken one. */
int pgw_ledger_check(const pgw_ledger *ledger, pgw_err *err);

/* Test hook (libgit2's double underscore: not for production callers):
 * adds `points` (may be negative) to lot `index`'s left without a transfer, breaking the
 * balance invariant so tests can see pgw_ledger_check catch it. */
void pgw_ledger__corrupt_lot_for_test(pgw_ledger *ledger, size_t index, int64_t points);

#endif
