/*
 * ledger.c - see ledger.h.
 */
#include "ledger.h"

#include "arith.h"
#include "assertions.h"
#include "text.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- planning ------------------------------------------------------------ */

int pgw_expiry_at(const pgw_expiry *policy, const pgw_tz *tz, int64_t earned_at,
                  int64_t *expires_at, pgw_err *err)
{
    pgw_date earned = pgw_local_date(earned_at, tz);
    pgw_date last_day, end;
    switch (policy->policy) {
    case PGW_EXPIRY_NEVER:
        *expires_at = PGW_NEVER;
        return PGW_OK;
    case PGW_EXPIRY_ROLLING:
        if (pgw_date_add_months(earned, policy->months, &last_day) != PGW_OK ||
            pgw_date_add_days(last_day, 1, &end) != PGW_OK)
            return pgw_err_set(err, PGW_ERANGE, "expiry beyond year %d", PGW_YEAR_MAX);
        break;
    case PGW_EXPIRY_YEAR_END:
        end = (pgw_date){earned.year + policy->years + 1, 1, 1};
        if (!pgw_date_valid(end))
            return pgw_err_set(err, PGW_ERANGE, "expiry beyond year %d", PGW_YEAR_MAX);
        break;
    default:
        return pgw_err_set(err, PGW_EINVAL, "unknown expiry policy %d", (int)policy->policy);
    }
    *expires_at = pgw_local_midnight(end, tz);
    PGW_ASSERT(*expires_at > earned_at);
    return PGW_OK;
}

int pgw_lot_order(const pgw_lot *a, const pgw_lot *b)
{
    if (a->expires_at != b->expires_at)
        return a->expires_at < b->expires_at ? -1 : 1;
    if (a->earned_at != b->earned_at)
        return a->earned_at < b->earned_at ? -1 : 1;
    if (a->id != b->id)
        return a->id < b->id ? -1 : 1;
    return 0;
}

/* Index of the first spendable lot after `prev` in consumption order, or n. */
static size_t next_lot(const pgw_lot *lots, size_t n, const char *member, int64_t now,
                       const pgw_lot *prev)
{
    size_t best = n;
    for (size_t i = 0; i < n; i++) {
        const pgw_lot *lot = &lots[i];
        if (lot->left <= 0 || lot->expires_at <= now || strcmp(lot->member, member) != 0)
            continue;
        if (prev != NULL && pgw_lot_order(lot, prev) <= 0)
            continue;
        if (best == n || pgw_lot_order(lot, &lots[best]) < 0)
            best = i;
    }
    return best;
}

int pgw_lots_plan_take(const pgw_lot *lots, size_t n, const char *member, int64_t now,
                       int64_t points, pgw_lot_take *takes, size_t takes_cap, size_t *n_takes,
                       int64_t *shortfall)
{
    PGW_ASSERT(points >= 0);
    *n_takes = 0;
    const pgw_lot *prev = NULL;
    while (points > 0) {
        size_t i = next_lot(lots, n, member, now, prev);
        if (i == n)
            break;
        if (*n_takes == takes_cap)
            return PGW_EFULL;
        int64_t take = pgw_min64(points, lots[i].left);
        takes[(*n_takes)++] = (pgw_lot_take){i, take};
        points -= take;
        prev = &lots[i];
    }
    *shortfall = points;
    return PGW_OK;
}

int pgw_refund_target(int64_t points, int64_t amount, int64_t refunded, int64_t *out, pgw_err *err)
{
    if (points < 0 || amount < 1 || refunded < 0)
        return pgw_err_set(err, PGW_EINVAL, "refund of %lld on %lld fen earning %lld points",
                           (long long)refunded, (long long)amount, (long long)points);
    if (refunded > amount)
        return pgw_err_set(err, PGW_EEXCEEDS, "refunds of %lld fen exceed the original %lld fen",
                           (long long)refunded, (long long)amount);
    int rc = pgw_mul_div_floor(points, refunded, amount, out);
    PGW_ASSERT(rc == PGW_OK); /* refunded <= amount, so the result is <= points */
    PGW_ASSERT(*out >= 0 && *out <= points);
    return PGW_OK;
}

int64_t pgw_refund_lapsed(int64_t delta, int64_t expired, int64_t written_off)
{
    PGW_ASSERT(delta >= 0 && expired >= 0 && written_off >= 0);
    return pgw_min64(delta, pgw_max64(0, expired - written_off));
}

int pgw_share_out(int64_t points, const int64_t *weights, size_t n, int64_t *shares)
{
    PGW_ASSERT(points >= 0 && n >= 1 && n <= PGW_EARN_FUNDERS_MAX);
    int64_t total = 0, given = 0, rest[PGW_EARN_FUNDERS_MAX];
    for (size_t i = 0; i < n; i++) {
        PGW_ASSERT(weights[i] >= 0);
        if (pgw_add(total, weights[i], &total) != PGW_OK)
            return PGW_ERANGE;
    }
    for (size_t i = 0; i < n; i++) {
        if (total < 1 || pgw_mul_div_floor(points, weights[i], total, &shares[i]) != PGW_OK)
            return PGW_ERANGE;
        rest[i] = (int64_t)((__int128)points * weights[i] - (__int128)shares[i] * total);
        given += shares[i];
    }
    /* At most n - 1 points left: one each to the largest remainders, so no
     * share passes its exact value rounded up (nor its weight). */
    for (int64_t left = points - given; left > 0; left--) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            best = rest[i] > rest[best] ? i : best;
        PGW_ASSERT(rest[best] > 0);
        shares[best]++;
        rest[best] = -1;
    }
    return PGW_OK;
}

int pgw_refund_split(const int64_t *lines, const int64_t *reversed, size_t n, int64_t delta,
                     int64_t *parts, pgw_err *err)
{
    int64_t total = 0, given = 0, kept[PGW_EARN_FUNDERS_MAX] = {0};
    PGW_ASSERT(n >= 1 && n <= PGW_EARN_FUNDERS_MAX);
    for (size_t i = 0; i < n; i++) {
        PGW_ASSERT(lines[i] >= 0 && reversed[i] >= 0 && reversed[i] <= lines[i]);
        total += lines[i]; /* n <= PGW_EARN_FUNDERS_MAX lines of bounded points */
        given += reversed[i];
    }
    if (delta < 0 || delta > total - given)
        return pgw_err_set(err, PGW_ERANGE, "cannot reverse %lld more points than were earned",
                           (long long)(delta - (total - given)));
    /* Each line keeps its share of what stays unreversed, shared as the
     * report shares an expiry: whatever of that rest later expires, each
     * funder's reversed and expired points then add up to its line. */
    int64_t rest = total - given - delta;
    if (rest > 0 && pgw_share_out(rest, lines, n, kept) != PGW_OK)
        return pgw_err_set(err, PGW_ERANGE, "%lld points cannot be shared out", (long long)rest);
    int64_t over = -delta;
    for (size_t i = 0; i < n; i++) {
        parts[i] = pgw_max64(lines[i] - kept[i] - reversed[i], 0);
        over += parts[i];
    }
    /* Largest remainders are not monotone: with three lines or more, a line
     * can be owed less of a larger refund than it gave back already. It
     * keeps that, and the last lines give the point less. */
    for (size_t i = n; i-- > 0 && over > 0;) {
        int64_t less = pgw_min64(parts[i], over);
        parts[i] -= less;
        over -= less;
    }
    PGW_ASSERT(over == 0);
    return PGW_OK;
}

pgw_hold_state pgw_hold_state_at(pgw_hold_state stored, int64_t deadline, int64_t now)
{
    return stored == PGW_HOLD_PENDING && now >= deadline ? PGW_HOLD_EXPIRED : stored;
}

const char *pgw_hold_state_name(pgw_hold_state state)
{
    switch (state) {
    case PGW_HOLD_PENDING:
        return "pending";
    case PGW_HOLD_CAPTURED:
        return "captured";
    case PGW_HOLD_VOIDED:
        return "voided";
    case PGW_HOLD_EXPIRED:
        return "expired";
    }
    return "?";
}

/* ---- the in-memory ledger: storage ---------------------------------------- */

typedef struct account {
    char name[PGW_ACCOUNT_MAX + 1];
    int64_t balance;
} account;

typedef struct member {
    char id[PGW_ID_MAX + 1];
    int64_t debt;
} member;

typedef struct hold {
    char id[PGW_REFERENCE_MAX + 1];
    char member[PGW_ID_MAX + 1];
    char shop[PGW_ID_MAX + 1];
    int64_t points;
    int64_t deadline;
    pgw_hold_state state;
} hold;

typedef struct portion {
    size_t hold;
    size_t lot;
    int64_t points; /* still reserved; 0 once spent or released */
} portion;

/* What a spend (the REDEEM transfer at index `transfer`) took of a lot. */
typedef struct spent {
    size_t transfer;
    size_t lot;
    int64_t points; /* not given back yet */
} spent;

typedef struct funder {
    char debit[PGW_ACCOUNT_MAX + 1];
    int64_t points;
    int64_t reversed;
} funder;

typedef struct earn {
    char ref[PGW_REFERENCE_MAX + 1];
    char member[PGW_ID_MAX + 1];
    char shop[PGW_ID_MAX + 1];
    int64_t amount_fen;
    int64_t points;
    int64_t refunded_fen;
    int64_t written_off;
    size_t lot; /* 1 + index of its lot; 0 when its points all repaid debt */
    size_t n_funders;
    funder funders[PGW_EARN_FUNDERS_MAX];
} earn;

typedef struct ref {
    char text[PGW_REFERENCE_MAX + 1];
} ref;

struct pgw_ledger {
    pgw_ledger_options opts;
    size_t n_accounts, n_members, n_lots, n_holds, n_portions, n_spent, n_transfers, n_earns,
        n_refs;
    account *accounts;
    member *members;
    pgw_lot *lots;
    int64_t *lot_expired; /* per lot: its points moved to system:expired */
    hold *holds;
    portion *portions;
    spent *spent; /* max_portions of them */
    pgw_transfer *transfers;
    earn *earns;
    ref *refs;
    pgw_lot_take *takes; /* scratch for plans, max_lots entries */
};

int pgw_ledger_new(const pgw_ledger_options *opts, pgw_ledger **out, pgw_err *err)
{
    *out = NULL;
    pgw_ledger *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for a ledger");
    l->opts = *opts;
    l->accounts = calloc(opts->max_accounts + 1, sizeof(*l->accounts));
    l->members = calloc(opts->max_members + 1, sizeof(*l->members));
    l->lots = calloc(opts->max_lots + 1, sizeof(*l->lots));
    l->lot_expired = calloc(opts->max_lots + 1, sizeof(*l->lot_expired));
    l->holds = calloc(opts->max_holds + 1, sizeof(*l->holds));
    l->portions = calloc(opts->max_portions + 1, sizeof(*l->portions));
    l->spent = calloc(opts->max_portions + 1, sizeof(*l->spent));
    l->transfers = calloc(opts->max_transfers + 1, sizeof(*l->transfers));
    l->earns = calloc(opts->max_earns + 1, sizeof(*l->earns));
    l->refs = calloc(opts->max_refs + 1, sizeof(*l->refs));
    l->takes = calloc(opts->max_lots + 1, sizeof(*l->takes));
    if (!l->accounts || !l->members || !l->lots || !l->lot_expired || !l->holds || !l->portions ||
        !l->spent || !l->transfers || !l->earns || !l->refs || !l->takes) {
        pgw_ledger_free(l);
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for a ledger");
    }
    *out = l;
    return PGW_OK;
}

void pgw_ledger_free(pgw_ledger *l)
{
    if (l == NULL)
        return;
    free(l->accounts);
    free(l->members);
    free(l->lots);
    free(l->lot_expired);
    free(l->holds);
    free(l->portions);
    free(l->spent);
    free(l->transfers);
    free(l->earns);
    free(l->refs);
    free(l->takes);
    free(l);
}

/*
 * Index of the first of n records (each `size` bytes) whose string field at
 * `offset` equals `key`, or n. One linear scan serves every table: this
 * ledger is a model, sized for tests, not a store.
 */
static size_t index_of(const void *records, size_t n, size_t size, size_t offset, const char *key)
{
    const char *base = records;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(base + i * size + offset, key) == 0)
            return i;
    }
    return n;
}

#define FIND(table, count, field, key)                                                             \
    index_of((table), (count), sizeof(*(table)), offsetof(__typeof__(*(table)), field), (key))

static account *find_account(const pgw_ledger *l, const char *name)
{
    size_t i = FIND(l->accounts, l->n_accounts, name, name);
    return i < l->n_accounts ? &l->accounts[i] : NULL;
}

static member *find_member(const pgw_ledger *l, const char *id)
{
    size_t i = FIND(l->members, l->n_members, id, id);
    return i < l->n_members ? &l->members[i] : NULL;
}

static bool ref_used(const pgw_ledger *l, const char *text)
{
    return FIND(l->refs, l->n_refs, text, text) < l->n_refs;
}

static hold *find_hold(const pgw_ledger *l, const char *id)
{
    size_t i = FIND(l->holds, l->n_holds, id, id);
    return i < l->n_holds ? &l->holds[i] : NULL;
}

static earn *find_earn(const pgw_ledger *l, const char *ref_text)
{
    size_t i = FIND(l->earns, l->n_earns, ref, ref_text);
    return i < l->n_earns ? &l->earns[i] : NULL;
}

static void member_account_name(const char *member_id, char out[PGW_ACCOUNT_MAX + 1])
{
    snprintf(out, PGW_ACCOUNT_MAX + 1, "member:%s", member_id);
}

/* How many of these account names do not exist yet. */
static size_t missing_accounts(const pgw_ledger *l, const char *const *names, size_t n)
{
    size_t missing = 0;
    for (size_t i = 0; i < n; i++) {
        bool seen = find_account(l, names[i]) != NULL;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(names[i], names[j]) == 0;
        missing += !seen;
    }
    return missing;
}

static account *account_get_or_add(pgw_ledger *l, const char *name)
{
    account *a = find_account(l, name);
    if (a != NULL)
        return a;
    PGW_ASSERT(l->n_accounts < l->opts.max_accounts); /* callers checked capacity */
    a = &l->accounts[l->n_accounts++];
    snprintf(a->name, sizeof(a->name), "%s", name);
    a->balance = 0;
    return a;
}

/* Checks there is room for `transfers` transfers and `accounts` new accounts. */
static int check_room(const pgw_ledger *l, size_t transfers, const char *const *names,
                      size_t n_names, pgw_err *err)
{
    if (l->n_transfers + transfers > l->opts.max_transfers)
        return pgw_err_set(err, PGW_EFULL, "transfer log full (%zu)", l->opts.max_transfers);
    if (l->n_accounts + missing_accounts(l, names, n_names) > l->opts.max_accounts)
        return pgw_err_set(err, PGW_EFULL, "account table full (%zu)", l->opts.max_accounts);
    return PGW_OK;
}

static void remember_ref(pgw_ledger *l, const char *text)
{
    PGW_ASSERT(l->n_refs < l->opts.max_refs);
    snprintf(l->refs[l->n_refs++].text, sizeof(l->refs[0].text), "%s", text);
}

/* Appends one transfer, moves the balances and links it into the chain. */
static const pgw_transfer *post(pgw_ledger *l, pgw_transfer_kind kind, const char *debit,
                                const char *credit, int64_t points, const char *key,
                                const char *shop, const char *reference, const char *breakdown,
                                int64_t at)
{
    PGW_ASSERT(points > 0 && l->n_transfers < l->opts.max_transfers);
    pgw_transfer *t = &l->transfers[l->n_transfers];
    memset(t, 0, sizeof(*t));
    t->id = (int64_t)l->n_transfers + 1;
    t->kind = kind;
    snprintf(t->idem_key, sizeof(t->idem_key), "%s", key);
    snprintf(t->debit, sizeof(t->debit), "%s", debit);
    snprintf(t->credit, sizeof(t->credit), "%s", credit);
    t->points = points;
    snprintf(t->shop_id, sizeof(t->shop_id), "%s", shop);
    snprintf(t->channel, sizeof(t->channel), "%s",
             kind == PGW_TRANSFER_EXPIRE ? PGW_CHANNEL_SYSTEM : "store");
    t->occurred_at = at;
    t->recorded_at_us = at * 1000000 + (t->id % 1000000);
    snprintf(t->reference, sizeof(t->reference), "%s", reference);
    snprintf(t->breakdown, sizeof(t->breakdown), "%s", breakdown);
    const uint8_t *prev =
        l->n_transfers == 0 ? PGW_GENESIS_HASH : l->transfers[l->n_transfers - 1].hash;
    int rc = pgw_transfer_link(t, prev, NULL);
    PGW_ASSERT(rc == PGW_OK);
    account *d = account_get_or_add(l, debit);
    account *c = account_get_or_add(l, credit);
    /* Balances are sums of transfers of at most PGW_POINTS_MAX each, over a
     * log of max_transfers entries: far from int64's range, but checked. */
    rc = pgw_sub(d->balance, points, &d->balance);
    PGW_ASSERT(rc == PGW_OK);
    rc = pgw_add(c->balance, points, &c->balance);
    PGW_ASSERT(rc == PGW_OK);
    l->n_transfers++;
    return t;
}

/* ---- the in-memory ledger: earning ---------------------------------------- */

/* Appends "rule=points" to a funder's breakdown (cut at its bound). */
static void append_breakdown(pgw_earn_funder *f, const pgw_earn_line *line)
{
    size_t used = strlen(f->breakdown);
    char points[PGW_TEXT_INT_SIZE];
    if (used < sizeof(f->breakdown) - 1)
        PGW_TEXT(f->breakdown + used, sizeof(f->breakdown) - used, used ? "," : "", line->rule, "=",
                 pgw_text_int(line->points, points));
}

int pgw_earn_group(const pgw_earn_line *lines, size_t n, pgw_earn_funder *funders,
                   size_t *n_funders, int64_t *total, pgw_err *err)
{
    *n_funders = 0;
    *total = 0;
    if (n == 0)
        return pgw_err_set(err, PGW_EINVAL, "an earn needs at least one line");
    for (size_t i = 0; i < n; i++) {
        const pgw_earn_line *line = &lines[i];
        if (line->points < 1 || line->points > PGW_POINTS_MAX || line->debit[0] == '\0')
            return pgw_err_set(err, PGW_EINVAL, "line %zu: points 1..%lld and a debit account", i,
                               (long long)PGW_POINTS_MAX);
        size_t f = 0;
        while (f < *n_funders && strcmp(funders[f].debit, line->debit) != 0)
            f++;
        if (f == PGW_EARN_FUNDERS_MAX)
            return pgw_err_set(err, PGW_EINVAL, "more than %d funders", PGW_EARN_FUNDERS_MAX);
        if (f == *n_funders) {
            memset(&funders[f], 0, sizeof(funders[f]));
            PGW_TEXT(funders[f].debit, sizeof(funders[f].debit), line->debit);
            (*n_funders)++;
        }
        funders[f].points += line->points; /* both <= PGW_POINTS_MAX: no overflow */
        append_breakdown(&funders[f], line);
        *total += line->points;
        if (*total > PGW_POINTS_MAX)
            return pgw_err_set(err, PGW_ERANGE, "earn of more than %lld points",
                               (long long)PGW_POINTS_MAX);
    }
    return PGW_OK;
}

static int validate_earn(const pgw_ledger *l, const pgw_earn_cmd *cmd, earn *e,
                         pgw_earn_funder *grouped, size_t *n_grouped, pgw_err *err)
{
    if (cmd->member == NULL || cmd->member[0] == '\0' || strlen(cmd->member) > PGW_ID_MAX ||
        cmd->ref == NULL || cmd->ref[0] == '\0' || strlen(cmd->ref) > PGW_REFERENCE_MAX ||
        strlen(cmd->shop) > PGW_ID_MAX || cmd->amount_fen < 0)
        return pgw_err_set(err, PGW_EINVAL,
                           "earn needs a member, a reference and a shop in bounds");
    if (ref_used(l, cmd->ref))
        return pgw_err_set(err, PGW_ECONFLICT, "reference %s was already used", cmd->ref);
    int rc = pgw_earn_group(cmd->lines, cmd->n_lines, grouped, n_grouped, &e->points, err);
    if (rc != PGW_OK)
        return rc;
    e->n_funders = *n_grouped;
    for (size_t f = 0; f < *n_grouped; f++) {
        PGW_STATIC_ASSERT(sizeof(e->funders[f].debit) == sizeof(grouped[f].debit), "same bound");
        memcpy(e->funders[f].debit, grouped[f].debit, sizeof(e->funders[f].debit));
        e->funders[f].points = grouped[f].points;
    }
    if (l->n_earns == l->opts.max_earns || l->n_refs == l->opts.max_refs ||
        l->n_lots == l->opts.max_lots)
        return pgw_err_set(err, PGW_EFULL, "earn, reference or lot table full");
    if (find_member(l, cmd->member) == NULL && l->n_members == l->opts.max_members)
        return pgw_err_set(err, PGW_EFULL, "member table full (%zu)", l->opts.max_members);
    char credit[PGW_ACCOUNT_MAX + 1];
    member_account_name(cmd->member, credit);
    const char *names[PGW_EARN_FUNDERS_MAX + 1] = {credit};
    for (size_t f = 0; f < e->n_funders; f++)
        names[f + 1] = e->funders[f].debit;
    return check_room(l, e->n_funders, names, e->n_funders + 1, err);
}

static member *member_get_or_add(pgw_ledger *l, const char *id)
{
    member *m = find_member(l, id);
    if (m != NULL)
        return m;
    PGW_ASSERT(l->n_members < l->opts.max_members);
    m = &l->members[l->n_members++];
    snprintf(m->id, sizeof(m->id), "%s", id);
    m->debt = 0;
    return m;
}

static void release_due_holds(pgw_ledger *l, const char *member_id, int64_t at);

int pgw_ledger_earn(pgw_ledger *l, const pgw_earn_cmd *cmd, pgw_err *err)
{
    earn e;
    memset(&e, 0, sizeof(e));
    int64_t expires_at;
    pgw_earn_funder grouped[PGW_EARN_FUNDERS_MAX];
    size_t n_grouped = 0;
    int rc = validate_earn(l, cmd, &e, grouped, &n_grouped, err);
    if (rc == PGW_OK)
        rc = pgw_expiry_at(&l->opts.expiry, &l->opts.tz, cmd->at, &expires_at, err);
    if (rc != PGW_OK)
        return rc;
    snprintf(e.ref, sizeof(e.ref), "%s", cmd->ref);
    snprintf(e.member, sizeof(e.member), "%s", cmd->member);
    snprintf(e.shop, sizeof(e.shop), "%s", cmd->shop);
    e.amount_fen = cmd->amount_fen;
    member *m = member_get_or_add(l, cmd->member);
    release_due_holds(l, cmd->member, cmd->at); /* their points repay debt before these */
    char credit[PGW_ACCOUNT_MAX + 1];
    member_account_name(cmd->member, credit);
    int64_t first_id = 0;
    for (size_t f = 0; f < e.n_funders; f++) {
        const pgw_transfer *t =
            post(l, PGW_TRANSFER_EARN, grouped[f].debit, credit, grouped[f].points, cmd->ref,
                 cmd->shop, cmd->ref, grouped[f].breakdown, cmd->at);
        first_id = first_id ? first_id : t->id;
    }
    int64_t repay = pgw_min64(m->debt, e.points); /* earned points pay debt first */
    m->debt -= repay;
    if (e.points > repay) {
        pgw_lot *lot = &l->lots[l->n_lots];
        *lot = (pgw_lot){.id = (int64_t)l->n_lots + 1,
                         .points = e.points - repay,
                         .left = e.points - repay,
                         .earned_at = cmd->at,
                         .expires_at = expires_at,
                         .source_transfer = first_id};
        snprintf(lot->member, sizeof(lot->member), "%s", cmd->member);
        e.lot = ++l->n_lots;
    }
    l->earns[l->n_earns++] = e;
    remember_ref(l, cmd->ref);
    return PGW_OK;
}

/* ---- the in-memory ledger: spending ---------------------------------------- */

int64_t pgw_ledger_account(const pgw_ledger *l, const char *name)
{
    const account *a = find_account(l, name);
    return a ? a->balance : 0;
}

int64_t pgw_ledger_balance(const pgw_ledger *l, const char *member_id)
{
    char name[PGW_ACCOUNT_MAX + 1];
    member_account_name(member_id, name);
    return pgw_ledger_account(l, name);
}

int64_t pgw_ledger_debt(const pgw_ledger *l, const char *member_id)
{
    const member *m = find_member(l, member_id);
    return m ? m->debt : 0;
}

/* Points `member_id`'s holds pending at `at` (before their deadline) reserve. */
static int64_t held_by(const pgw_ledger *l, const char *member_id, int64_t at)
{
    int64_t sum = 0;
    for (size_t i = 0; i < l->n_holds; i++) {
        const hold *h = &l->holds[i];
        if (h->state == PGW_HOLD_PENDING && h->deadline > at && strcmp(h->member, member_id) == 0)
            sum += h->points;
    }
    return sum;
}

/* Whether hold a is released after hold b: by deadline, then id (strcmp). */
static bool released_after(const hold *a, const hold *b)
{
    return a->deadline != b->deadline ? a->deadline > b->deadline : strcmp(a->id, b->id) > 0;
}

/*
 * The first hold still pending past its deadline at `now` released after
 * `prev` (NULL: the first of all), of `member_id` (NULL: anyone's), or
 * n_holds: the order the stores release them in, which decides whose
 * points repay a debt first.
 */
static size_t next_due_hold(const pgw_ledger *l, const char *member_id, int64_t now,
                            const hold *prev)
{
    size_t best = l->n_holds;
    for (size_t i = 0; i < l->n_holds; i++) {
        const hold *h = &l->holds[i];
        if (h->state != PGW_HOLD_PENDING || h->deadline > now ||
            (member_id != NULL && strcmp(h->member, member_id) != 0) ||
            (prev != NULL && !released_after(h, prev)))
            continue;
        if (best == l->n_holds || released_after(&l->holds[best], h))
            best = i;
    }
    return best;
}

/*
 * Of the points `member_id`'s holds past their deadline at `at` still
 * reserve, those their release will put back in lots past expiry: each
 * repays the member's debt first, in release order and in reservation
 * order within a hold (release_hold), and the rest goes back to its lot.
 */
static int64_t overdue_lapsed(const pgw_ledger *l, const char *member_id, int64_t at)
{
    const member *m = find_member(l, member_id);
    int64_t debt = m != NULL ? m->debt : 0, lapsed = 0;
    const hold *prev = NULL;
    for (size_t h; (h = next_due_hold(l, member_id, at, prev)) < l->n_holds; prev = &l->holds[h]) {
        for (size_t i = 0; i < l->n_portions; i++) {
            const portion *p = &l->portions[i];
            if (p->hold != h || p->points == 0)
                continue;
            int64_t repay = pgw_min64(debt, p->points);
            debt -= repay;
            lapsed += l->lots[p->lot].expires_at <= at ? p->points - repay : 0;
        }
    }
    return lapsed;
}

int64_t pgw_ledger_available(const pgw_ledger *l, const char *member_id, int64_t at)
{
    /* A lot past its expiry keeps its points in the balance until the sweep
     * moves them, but nothing can spend them (a pending hold's are counted
     * in held_by already). A hold past its deadline reserves nothing any
     * more, released or not: its points are free again, but for those its
     * release will put back in a lot past expiry (README, Holds). */
    int64_t lapsed = overdue_lapsed(l, member_id, at);
    for (size_t i = 0; i < l->n_lots; i++) {
        const pgw_lot *lot = &l->lots[i];
        if (lot->expires_at <= at && strcmp(lot->member, member_id) == 0)
            lapsed += lot->left;
    }
    return pgw_ledger_balance(l, member_id) - held_by(l, member_id, at) - lapsed;
}

static void release_hold(pgw_ledger *l, size_t h, pgw_hold_state state);

/*
 * Releases `member_id`'s holds past their deadline at `at`, in release
 * order, as every store command does before it reads the member's lots
 * (command.c expire_due_holds): past its deadline a hold is expired,
 * swept or not, and its points are the member's again (or its debt's).
 * Changes neither balance nor available: a command may do it before it
 * is sure to succeed.
 */
static void release_due_holds(pgw_ledger *l, const char *member_id, int64_t at)
{
    for (size_t i; (i = next_due_hold(l, member_id, at, NULL)) < l->n_holds;)
        release_hold(l, i, PGW_HOLD_EXPIRED);
}

/* PGW_EINSUFFICIENT, just set in `err`, with its figures (error.h). */
static int short_of(pgw_err *err, const char *member_id, int64_t available, int64_t asked)
{
    pgw_err_member(err, member_id);
    pgw_err_figure(err, "available", available);
    pgw_err_figure(err, "asked", asked);
    return PGW_EINSUFFICIENT;
}

int pgw_ledger_refuse_short(pgw_err *err, const char *member_id, int64_t available, int64_t asked)
{
    pgw_err_set(err, PGW_EINSUFFICIENT, "member %s has %lld available, %lld asked", member_id,
                (long long)available, (long long)asked);
    return short_of(err, member_id, available, asked);
}

int pgw_ledger_refuse_expired(pgw_err *err, const char *member_id, int64_t usable, int64_t asked)
{
    PGW_ASSERT(usable < asked);
    pgw_err_set(err, PGW_EINSUFFICIENT, "member %s: %lld of the points asked have expired",
                member_id, (long long)(asked - usable));
    return short_of(err, member_id, usable, asked);
}

/* Plans spending `points` of a member's free lots; PGW_EINSUFFICIENT if short. */
static int plan_spend(pgw_ledger *l, const char *member_id, int64_t points, int64_t at,
                      size_t *n_takes, pgw_err *err)
{
    int64_t available = pgw_ledger_available(l, member_id, at);
    if (points < 1 || points > PGW_POINTS_MAX)
        return pgw_err_set(err, PGW_EINVAL, "points must be 1..%lld, got %lld",
                           (long long)PGW_POINTS_MAX, (long long)points);
    if (find_member(l, member_id) == NULL) /* a spend never enrolls */
        return pgw_err_set(err, PGW_ENOTFOUND, "no member %s", member_id);
    if (available < points)
        return pgw_ledger_refuse_short(err, member_id, available, points);
    release_due_holds(l, member_id, at);
    int64_t shortfall;
    int rc = pgw_lots_plan_take(l->lots, l->n_lots, member_id, at, points, l->takes,
                                l->opts.max_lots, n_takes, &shortfall);
    PGW_ASSERT(rc == PGW_OK); /* takes has room for every lot */
    /* Never short here: pgw_ledger_check's invariants make the balance
     * the member's lots' left + held less the debt (left >= 0), and its
     * pending holds, whose portions lie in its own lots (no merge here),
     * reserve exactly their held; so `available` is the left of its lots
     * not yet expired less the debt, every point of which the plan takes
     * (the same expiry test, lots of 0 left aside), and points <=
     * available. pgw_ledger_refuse_expired stays for the store's spend
     * (command.c), which reads its figures from the database. */
    PGW_ASSERT(shortfall == 0);
    return PGW_OK;
}

static int check_spend_args(const pgw_ledger *l, const char *ref_text, const char *member_id,
                            const char *shop, pgw_err *err)
{
    if (ref_text == NULL || ref_text[0] == '\0' || strlen(ref_text) > PGW_REFERENCE_MAX ||
        member_id == NULL || strlen(member_id) > PGW_ID_MAX || shop == NULL || shop[0] == '\0' ||
        strlen(shop) > PGW_ID_MAX)
        return pgw_err_set(err, PGW_EINVAL, "a reference, a member and a shop are required");
    if (ref_used(l, ref_text))
        return pgw_err_set(err, PGW_ECONFLICT, "reference %s was already used", ref_text);
    if (l->n_refs == l->opts.max_refs)
        return pgw_err_set(err, PGW_EFULL, "reference table full (%zu)", l->opts.max_refs);
    return PGW_OK;
}

static void redeemed_account(const char *shop, char out[PGW_ACCOUNT_MAX + 1])
{
    snprintf(out, PGW_ACCOUNT_MAX + 1, "shop:%s:redeemed", shop);
}

int pgw_ledger_redeem(pgw_ledger *l, const char *ref_text, const char *member_id, const char *shop,
                      int64_t points, int64_t at, pgw_err *err)
{
    size_t n_takes = 0;
    char debit[PGW_ACCOUNT_MAX + 1], credit[PGW_ACCOUNT_MAX + 1];
    int rc = check_spend_args(l, ref_text, member_id, shop, err);
    if (rc == PGW_OK)
        rc = plan_spend(l, member_id, points, at, &n_takes, err);
    member_account_name(member_id, debit);
    redeemed_account(shop, credit);
    const char *names[] = {debit, credit};
    if (rc == PGW_OK)
        rc = check_room(l, 1, names, 2, err);
    if (rc == PGW_OK && l->n_spent + n_takes > l->opts.max_portions)
        rc = pgw_err_set(err, PGW_EFULL, "spent table full (%zu)", l->opts.max_portions);
    if (rc != PGW_OK)
        return rc;
    for (size_t i = 0; i < n_takes; i++) {
        l->lots[l->takes[i].lot].left -= l->takes[i].points;
        l->spent[l->n_spent++] = (spent){l->n_transfers, l->takes[i].lot, l->takes[i].points};
    }
    post(l, PGW_TRANSFER_REDEEM, debit, credit, points, ref_text, shop, ref_text, "", at);
    remember_ref(l, ref_text);
    return PGW_OK;
}

int pgw_ledger_hold(pgw_ledger *l, const char *hold_id, const char *member_id, const char *shop,
                    int64_t points, int64_t deadline, int64_t at, pgw_err *err)
{
    size_t n_takes = 0;
    int rc = check_spend_args(l, hold_id, member_id, shop, err);
    if (rc == PGW_OK && deadline <= at)
        rc = pgw_err_set(err, PGW_EINVAL, "hold %s: deadline must be after now", hold_id);
    if (rc == PGW_OK)
        rc = plan_spend(l, member_id, points, at, &n_takes, err);
    if (rc == PGW_OK &&
        (l->n_holds == l->opts.max_holds || l->n_portions + n_takes > l->opts.max_portions))
        rc = pgw_err_set(err, PGW_EFULL, "hold table full");
    if (rc != PGW_OK)
        return rc;
    hold *h = &l->holds[l->n_holds];
    memset(h, 0, sizeof(*h));
    snprintf(h->id, sizeof(h->id), "%s", hold_id);
    snprintf(h->member, sizeof(h->member), "%s", member_id);
    snprintf(h->shop, sizeof(h->shop), "%s", shop);
    h->points = points;
    h->deadline = deadline;
    h->state = PGW_HOLD_PENDING;
    for (size_t i = 0; i < n_takes; i++) {
        pgw_lot *lot = &l->lots[l->takes[i].lot];
        lot->left -= l->takes[i].points;
        lot->held += l->takes[i].points;
        l->portions[l->n_portions++] = (portion){l->n_holds, l->takes[i].lot, l->takes[i].points};
    }
    l->n_holds++;
    remember_ref(l, hold_id);
    return PGW_OK;
}

/*
 * Returns every point still reserved by hold index `h` to its lots, after
 * repaying the member's debt from them in reservation (consumption) order.
 * Debt beside reserved points comes from a refund that could not take
 * them; back in the lots they would be spendable or expire while still
 * owed, and the member would pay for them twice.
 */
static void release_hold(pgw_ledger *l, size_t h, pgw_hold_state state)
{
    PGW_ASSERT(l->holds[h].state == PGW_HOLD_PENDING);
    member *m = find_member(l, l->holds[h].member);
    PGW_ASSERT(m != NULL);
    for (size_t i = 0; i < l->n_portions; i++) {
        portion *p = &l->portions[i];
        if (p->hold != h || p->points == 0)
            continue;
        int64_t repay = pgw_min64(m->debt, p->points);
        m->debt -= repay;
        l->lots[p->lot].held -= p->points;
        l->lots[p->lot].left += p->points - repay;
        p->points = 0;
    }
    l->holds[h].state = state;
}

/* Finds a pending hold, or fails naming its state; expires it when due. */
static int pending_hold(pgw_ledger *l, const char *hold_id, int64_t at, size_t *index, pgw_err *err)
{
    hold *h = find_hold(l, hold_id);
    if (h == NULL)
        return pgw_err_set(err, PGW_ENOTFOUND, "no hold %s", hold_id);
    *index = (size_t)(h - l->holds);
    if (h->state == PGW_HOLD_PENDING && at >= h->deadline)
        release_hold(l, *index, PGW_HOLD_EXPIRED);
    if (h->state != PGW_HOLD_PENDING)
        return pgw_err_set(err, PGW_ESTATE, "hold %s is %s", hold_id,
                           pgw_hold_state_name(h->state));
    release_due_holds(l, h->member, at); /* its other ones: theirs repay a debt first */
    return PGW_OK;
}

int pgw_ledger_capture(pgw_ledger *l, const char *hold_id, int64_t points, int64_t at, pgw_err *err)
{
    size_t h;
    int rc = pending_hold(l, hold_id, at, &h, err);
    if (rc != PGW_OK)
        return rc;
    hold *hd = &l->holds[h];
    int64_t spend = points <= 0 ? hd->points : points;
    if (spend > hd->points)
        return pgw_err_set(err, PGW_EINVAL, "hold %s holds %lld, %lld asked", hold_id,
                           (long long)hd->points, (long long)spend);
    char debit[PGW_ACCOUNT_MAX + 1], credit[PGW_ACCOUNT_MAX + 1];
    member_account_name(hd->member, debit);
    redeemed_account(hd->shop, credit);
    const char *names[] = {debit, credit};
    rc = check_room(l, 1, names, 2, err);
    size_t lots = 0;
    for (size_t i = 0; i < l->n_portions; i++)
        lots += l->portions[i].hold == h && l->portions[i].points > 0;
    if (rc == PGW_OK && l->n_spent + lots > l->opts.max_portions)
        rc = pgw_err_set(err, PGW_EFULL, "spent table full (%zu)", l->opts.max_portions);
    if (rc != PGW_OK)
        return rc;
    int64_t left = spend; /* portions were reserved in consumption order */
    for (size_t i = 0; i < l->n_portions && left > 0; i++) {
        portion *p = &l->portions[i];
        if (p->hold != h || p->points == 0)
            continue;
        int64_t take = pgw_min64(p->points, left);
        l->spent[l->n_spent++] = (spent){l->n_transfers, p->lot, take};
        l->lots[p->lot].held -= take;
        p->points -= take;
        left -= take;
    }
    PGW_ASSERT(left == 0);
    post(l, PGW_TRANSFER_REDEEM, debit, credit, spend, hold_id, hd->shop, hold_id, "", at);
    hd->points = spend;
    release_hold(l, h, PGW_HOLD_CAPTURED);
    return PGW_OK;
}

int pgw_ledger_void(pgw_ledger *l, const char *hold_id, int64_t at, pgw_err *err)
{
    size_t h;
    int rc = pending_hold(l, hold_id, at, &h, err);
    if (rc != PGW_OK)
        return rc;
    release_hold(l, h, PGW_HOLD_VOIDED);
    return PGW_OK;
}

/* ---- the in-memory ledger: returns ------------------------------------------ */

/* Index of the REDEEM transfer a spend keyed `spend_ref` wrote (to the shop), or n_transfers. */
static size_t find_spend(const pgw_ledger *l, const char *spend_ref)
{
    for (size_t i = 0; i < l->n_transfers; i++) {
        const pgw_transfer *t = &l->transfers[i];
        if (t->kind == PGW_TRANSFER_REDEEM && strncmp(t->debit, "member:", 7) == 0 &&
            strcmp(t->idem_key, spend_ref) == 0)
            return i;
    }
    return l->n_transfers;
}

/* What spend `t` has still to give back, and the entry of it taken last
 * (latest in consumption order) with points left, or n_spent. */
static int64_t spent_left(const pgw_ledger *l, size_t t, size_t *last)
{
    int64_t sum = 0;
    *last = l->n_spent;
    for (size_t i = 0; i < l->n_spent; i++) {
        const spent *e = &l->spent[i];
        if (e->transfer != t || e->points == 0)
            continue;
        sum += e->points;
        if (*last == l->n_spent ||
            pgw_lot_order(&l->lots[e->lot], &l->lots[l->spent[*last].lot]) > 0)
            *last = i;
    }
    return sum;
}

int pgw_ledger_return(pgw_ledger *l, const char *spend_ref, const char *return_ref, int64_t points,
                      int64_t at, pgw_err *err)
{
    if (points < 1 || points > PGW_POINTS_MAX || return_ref == NULL || return_ref[0] == '\0' ||
        strlen(return_ref) > PGW_REFERENCE_MAX)
        return pgw_err_set(err, PGW_EINVAL, "a return needs a reference and 1..%lld points",
                           (long long)PGW_POINTS_MAX);
    size_t t = find_spend(l, spend_ref), last;
    if (t == l->n_transfers)
        return pgw_err_set(err, PGW_ENOTFOUND, "no spend %s", spend_ref);
    if (ref_used(l, return_ref))
        return pgw_err_set(err, PGW_ECONFLICT, "reference %s was already used", return_ref);
    if (l->n_refs == l->opts.max_refs)
        return pgw_err_set(err, PGW_EFULL, "reference table full (%zu)", l->opts.max_refs);
    int64_t left = spent_left(l, t, &last);
    if (points > left) {
        pgw_err_set(err, PGW_EEXCEEDS, "spend %s has %lld left to return, %lld asked", spend_ref,
                    (long long)left, (long long)points);
        pgw_err_figure(err, "left", left);
        pgw_err_figure(err, "asked", points);
        return PGW_EEXCEEDS;
    }
    /* Copied: post() writes the log this points into. */
    pgw_transfer spend = l->transfers[t];
    char credit[PGW_ACCOUNT_MAX + 1];
    member *m = find_member(l, l->lots[l->spent[last].lot].member);
    PGW_ASSERT(m != NULL);
    member_account_name(m->id, credit);
    const char *names[] = {spend.credit, credit};
    int rc = check_room(l, 1, names, 2, err);
    if (rc != PGW_OK)
        return rc;
    release_due_holds(l, m->id, at); /* as an earn's, after theirs repaid debt */
    /* As an earn's, returned points repay debt first; the rest go back to
     * their lots, what the spend took last first. */
    int64_t to_debt = pgw_min64(m->debt, points), want = points;
    m->debt -= to_debt;
    for (; want > 0; spent_left(l, t, &last)) {
        spent *e = &l->spent[last];
        int64_t take = pgw_min64(e->points, want), paid = pgw_min64(take, to_debt);
        PGW_ASSERT(strcmp(l->lots[e->lot].member, m->id) == 0);
        e->points -= take;
        l->lots[e->lot].left += take - paid;
        to_debt -= paid;
        want -= take;
    }
    post(l, PGW_TRANSFER_REDEEM, spend.credit, credit, points, return_ref, spend.shop_id,
         spend.reference, "", at);
    remember_ref(l, return_ref);
    return PGW_OK;
}

int pgw_ledger_expire_holds(pgw_ledger *l, int64_t now, size_t *n_expired, pgw_err *err)
{
    /* By deadline then id, as the stores release them: which one's points
     * repay a debt first decides which lot keeps its own. */
    size_t n = 0;
    for (size_t i; (i = next_due_hold(l, NULL, now, NULL)) < l->n_holds; n++)
        release_hold(l, i, PGW_HOLD_EXPIRED);
    if (n_expired != NULL)
        *n_expired = n;
    return PGW_OK;
}

int pgw_ledger_expire(pgw_ledger *l, int64_t now, size_t *n_lots, pgw_err *err)
{
    size_t due = 0;
    for (size_t i = 0; i < l->n_lots; i++)
        due += l->lots[i].expires_at <= now && l->lots[i].left > 0;
    const char *names[] = {"system:expired"};
    int rc = check_room(l, due, names, 1, err);
    if (rc != PGW_OK)
        return rc;
    for (size_t i = 0; i < l->n_lots; i++) {
        pgw_lot *lot = &l->lots[i];
        if (lot->expires_at > now || lot->left == 0)
            continue;
        char debit[PGW_ACCOUNT_MAX + 1], key[64], reference[32];
        member_account_name(lot->member, debit);
        /* Keyed by the lot and what had expired of it before, as the
         * stores key it (command.c): a lot expires again after a hold on
         * it is released or a return gives it points past its date, and
         * under the first one's key that would be a replay, never done. */
        snprintf(key, sizeof(key), "expire:lot:%lld:%lld", (long long)lot->id,
                 (long long)l->lot_expired[i]);
        snprintf(reference, sizeof(reference), "lot:%lld", (long long)lot->id);
        post(l, PGW_TRANSFER_EXPIRE, debit, "system:expired", lot->left, key, "", reference, "",
             now);
        l->lot_expired[i] += lot->left;
        lot->left = 0;
    }
    if (n_lots != NULL)
        *n_lots = due;
    return PGW_OK;
}

/* ---- the in-memory ledger: refunds ----------------------------------------- */

/*
 * Plans a refund: the delta to reverse, the part of it that `lapsed` (see
 * pgw_refund_lapsed), and what the member's lots cover of the rest: first
 * `own` from the purchase's own lot (free and not due), then the other
 * lots in consumption order. Taken from an earlier lot, the purchase's own
 * expired later, charged to the funders the refund had paid back.
 */
static int plan_refund(pgw_ledger *l, const earn *e, const char *refund_ref, int64_t amount_fen,
                       int64_t at, int64_t *delta, int64_t *lapsed, int64_t *own, size_t *n_takes,
                       int64_t *shortfall, pgw_err *err)
{
    if (refund_ref == NULL || refund_ref[0] == '\0' || strlen(refund_ref) > PGW_REFERENCE_MAX ||
        amount_fen < 1)
        return pgw_err_set(err, PGW_EINVAL, "a refund needs a reference and an amount >= 1");
    if (ref_used(l, refund_ref))
        return pgw_err_set(err, PGW_ECONFLICT, "reference %s was already used", refund_ref);
    if (e->amount_fen < 1)
        return pgw_err_set(err, PGW_EINVAL, "earn %s has no purchase amount to refund", e->ref);
    int64_t before, after, total;
    if (pgw_add(e->refunded_fen, amount_fen, &total) != PGW_OK)
        return pgw_err_set(err, PGW_EEXCEEDS, "refund overflows");
    int rc = pgw_refund_target(e->points, e->amount_fen, e->refunded_fen, &before, err);
    if (rc == PGW_OK)
        rc = pgw_refund_target(e->points, e->amount_fen, total, &after, err);
    if (rc == PGW_OK && l->n_refs == l->opts.max_refs)
        rc = pgw_err_set(err, PGW_EFULL, "reference table full");
    if (rc != PGW_OK)
        return rc;
    release_due_holds(l, e->member, at); /* the refund may take their points back */
    *delta = after - before;
    int64_t expired = 0;
    if (e->lot > 0) { /* swept, and due at `at` but not swept yet */
        const pgw_lot *lot = &l->lots[e->lot - 1];
        expired = l->lot_expired[e->lot - 1] + (lot->expires_at <= at ? lot->left : 0);
    }
    *lapsed = pgw_refund_lapsed(*delta, expired, e->written_off);
    pgw_lot *mine = e->lot > 0 ? &l->lots[e->lot - 1] : NULL;
    *own = mine != NULL && mine->expires_at > at ? pgw_min64(*delta - *lapsed, mine->left) : 0;
    if (mine != NULL)
        mine->left -= *own; /* planned without it; given back below */
    rc = pgw_lots_plan_take(l->lots, l->n_lots, e->member, at, *delta - *lapsed - *own, l->takes,
                            l->opts.max_lots, n_takes, shortfall);
    if (mine != NULL)
        mine->left += *own;
    return rc;
}

int pgw_ledger_refund(pgw_ledger *l, const char *original_ref, const char *refund_ref,
                      int64_t amount_fen, int64_t at, pgw_err *err)
{
    earn *e = find_earn(l, original_ref);
    if (e == NULL)
        return pgw_err_set(err, PGW_ENOTFOUND, "no earn %s to refund", original_ref);
    int64_t delta = 0, lapsed = 0, own = 0, shortfall = 0;
    size_t n_takes = 0;
    int64_t line_points[PGW_EARN_FUNDERS_MAX], reversed[PGW_EARN_FUNDERS_MAX];
    int64_t parts[PGW_EARN_FUNDERS_MAX];
    int rc = plan_refund(l, e, refund_ref, amount_fen, at, &delta, &lapsed, &own, &n_takes,
                         &shortfall, err);
    for (size_t f = 0; rc == PGW_OK && f < e->n_funders; f++) {
        line_points[f] = e->funders[f].points;
        reversed[f] = e->funders[f].reversed;
    }
    /* With clamp the member gives back only what their lots hold; the rest
     * is written off, and only the collectable part is split to funders. */
    int64_t collect = delta - lapsed - (l->opts.allow_negative ? 0 : shortfall);
    if (rc == PGW_OK)
        rc = pgw_refund_split(line_points, reversed, e->n_funders, collect, parts, err);
    char debit[PGW_ACCOUNT_MAX + 1];
    member_account_name(e->member, debit);
    const char *names[PGW_EARN_FUNDERS_MAX + 1] = {debit};
    for (size_t f = 0; f < e->n_funders; f++)
        names[f + 1] = e->funders[f].debit;
    if (rc == PGW_OK)
        rc = check_room(l, e->n_funders, names, e->n_funders + 1, err);
    if (rc != PGW_OK)
        return rc;
    if (own > 0)
        l->lots[e->lot - 1].left -= own;
    for (size_t i = 0; i < n_takes; i++)
        l->lots[l->takes[i].lot].left -= l->takes[i].points;
    for (size_t f = 0; f < e->n_funders; f++) {
        if (parts[f] > 0)
            post(l, PGW_TRANSFER_REVERSAL, debit, e->funders[f].debit, parts[f], refund_ref,
                 e->shop, original_ref, "", at);
        e->funders[f].reversed += parts[f];
    }
    e->written_off += lapsed;
    if (l->opts.allow_negative)
        find_member(l, e->member)->debt += shortfall;
    else
        e->written_off += shortfall;
    e->refunded_fen += amount_fen;
    remember_ref(l, refund_ref);
    return PGW_OK;
}

/* ---- reads and the invariant check ----------------------------------------- */

size_t pgw_ledger_transfer_count(const pgw_ledger *l)
{
    return l->n_transfers;
}

const pgw_transfer *pgw_ledger_transfer(const pgw_ledger *l, size_t index)
{
    PGW_ASSERT(index < l->n_transfers);
    return &l->transfers[index];
}

size_t pgw_ledger_lot_count(const pgw_ledger *l)
{
    return l->n_lots;
}

const pgw_lot *pgw_ledger_lot(const pgw_ledger *l, size_t index)
{
    PGW_ASSERT(index < l->n_lots);
    return &l->lots[index];
}

int pgw_ledger_hold_state(const pgw_ledger *l, const char *hold_id, pgw_hold_state *out)
{
    const hold *h = find_hold(l, hold_id);
    if (h == NULL)
        return PGW_ENOTFOUND;
    *out = h->state;
    return PGW_OK;
}

int pgw_ledger_earn_reversal(const pgw_ledger *l, const char *ref_text, int64_t *reversed,
                             int64_t *written_off)
{
    const earn *e = find_earn(l, ref_text);
    if (e == NULL)
        return PGW_ENOTFOUND;
    *reversed = 0;
    for (size_t f = 0; f < e->n_funders; f++)
        *reversed += e->funders[f].reversed;
    *written_off = e->written_off;
    return PGW_OK;
}

void pgw_ledger__corrupt_lot_for_test(pgw_ledger *l, size_t index, int64_t points)
{
    PGW_ASSERT(index < l->n_lots);
    l->lots[index].left += points;
}

/* Balances replayed from the log equal the stored ones, and sum to zero. */
static int check_accounts(const pgw_ledger *l, pgw_err *err)
{
    int64_t sum = 0;
    for (size_t a = 0; a < l->n_accounts; a++) {
        int64_t replayed = 0;
        for (size_t i = 0; i < l->n_transfers; i++) {
            const pgw_transfer *t = &l->transfers[i];
            replayed += strcmp(t->credit, l->accounts[a].name) == 0 ? t->points : 0;
            replayed -= strcmp(t->debit, l->accounts[a].name) == 0 ? t->points : 0;
        }
        if (replayed != l->accounts[a].balance)
            return pgw_err_set(err, PGW_ECONFLICT, "account %s: balance %lld, log says %lld",
                               l->accounts[a].name, (long long)l->accounts[a].balance,
                               (long long)replayed);
        sum += replayed;
    }
    if (sum != 0)
        return pgw_err_set(err, PGW_ECONFLICT, "accounts sum to %lld, not 0", (long long)sum);
    return PGW_OK;
}

static int check_members(const pgw_ledger *l, pgw_err *err)
{
    for (size_t m = 0; m < l->n_members; m++) {
        const member *mb = &l->members[m];
        int64_t lots = 0;
        for (size_t i = 0; i < l->n_lots; i++) {
            const pgw_lot *lot = &l->lots[i];
            if (lot->left < 0 || lot->held < 0 || lot->left + lot->held > lot->points)
                return pgw_err_set(err, PGW_ECONFLICT, "lot %lld: left %lld held %lld of %lld",
                                   (long long)lot->id, (long long)lot->left, (long long)lot->held,
                                   (long long)lot->points);
            if (strcmp(lot->member, mb->id) == 0)
                lots += lot->left + lot->held;
        }
        int64_t balance = pgw_ledger_balance(l, mb->id);
        if (mb->debt < 0 || balance != lots - mb->debt)
            return pgw_err_set(err, PGW_ECONFLICT,
                               "member %s: balance %lld but lots %lld minus debt %lld", mb->id,
                               (long long)balance, (long long)lots, (long long)mb->debt);
        if (!l->opts.allow_negative && balance < 0)
            return pgw_err_set(err, PGW_ECONFLICT, "member %s: negative balance under clamp",
                               mb->id);
    }
    return PGW_OK;
}

/* Pending holds' points equal their portions; portions per lot equal lot.held. */
static int check_holds(const pgw_ledger *l, pgw_err *err)
{
    for (size_t h = 0; h < l->n_holds; h++) {
        int64_t reserved = 0;
        for (size_t i = 0; i < l->n_portions; i++)
            reserved += l->portions[i].hold == h ? l->portions[i].points : 0;
        int64_t expected = l->holds[h].state == PGW_HOLD_PENDING ? l->holds[h].points : 0;
        if (reserved != expected)
            return pgw_err_set(err, PGW_ECONFLICT, "hold %s (%s): reserves %lld, expected %lld",
                               l->holds[h].id, pgw_hold_state_name(l->holds[h].state),
                               (long long)reserved, (long long)expected);
    }
    for (size_t i = 0; i < l->n_lots; i++) {
        int64_t held = 0;
        for (size_t p = 0; p < l->n_portions; p++)
            held += l->portions[p].lot == i ? l->portions[p].points : 0;
        if (held != l->lots[i].held)
            return pgw_err_set(err, PGW_ECONFLICT, "lot %lld: held %lld but holds reserve %lld",
                               (long long)l->lots[i].id, (long long)l->lots[i].held,
                               (long long)held);
    }
    return PGW_OK;
}

static int check_earns(const pgw_ledger *l, pgw_err *err)
{
    for (size_t i = 0; i < l->n_earns; i++) {
        const earn *e = &l->earns[i];
        int64_t reversed = 0, target = 0;
        for (size_t f = 0; f < e->n_funders; f++) {
            if (e->funders[f].reversed < 0 || e->funders[f].reversed > e->funders[f].points)
                return pgw_err_set(err, PGW_ECONFLICT, "earn %s: %s reversed %lld of %lld", e->ref,
                                   e->funders[f].debit, (long long)e->funders[f].reversed,
                                   (long long)e->funders[f].points);
            reversed += e->funders[f].reversed;
        }
        if (e->amount_fen > 0 &&
            pgw_refund_target(e->points, e->amount_fen, e->refunded_fen, &target, err) != PGW_OK)
            return pgw_err_prefix(err, "earn %s: ", e->ref);
        if (reversed + e->written_off != target)
            return pgw_err_set(err, PGW_ECONFLICT,
                               "earn %s: reversed %lld + written off %lld != floor(P*R/A) %lld",
                               e->ref, (long long)reversed, (long long)e->written_off,
                               (long long)target);
    }
    return PGW_OK;
}

int pgw_ledger_check(const pgw_ledger *l, pgw_err *err)
{
    size_t bad = 0;
    int rc = check_accounts(l, err);
    if (rc == PGW_OK)
        rc = check_members(l, err);
    if (rc == PGW_OK)
        rc = check_holds(l, err);
    if (rc == PGW_OK)
        rc = check_earns(l, err);
    if (rc == PGW_OK)
        rc = pgw_chain_verify(l->transfers, l->n_transfers, PGW_GENESIS_HASH, 0, NULL, &bad, err);
    return rc;
}
