/*
 * report.c - see report.h.
 */
#include "report.h"

#include "core/arith.h"
#include "core/assertions.h"
#include "core/civil.h"
#include "util/csv.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define EXPIRY_PAGE 256
/* (kind, account) pairs: a shop moves points as issued, reversed and redeemed. */
#define FLOWS_MAX (4 * PGW_REPORT_ACCOUNTS_MAX)

bool pgw_report_time_in(const char *text, int64_t *out)
{
    if (pgw_decimal_in(text, 0, PGW_REPORT_TIME_MAX, out))
        return true;
    /* One bound in either spelling: 1970-01-01T00:00:00+01:00 is -3600. */
    int64_t t;
    if (pgw_parse_rfc3339(text, &t, NULL) != PGW_OK || t < 0 || t > PGW_REPORT_TIME_MAX)
        return false;
    *out = t;
    return true;
}

int pgw_bucket_parse(const char *name, pgw_bucket *out)
{
    static const char *const names[] = {"day", "week", "month"};
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (pgw_bucket)i;
            return PGW_OK;
        }
    }
    return PGW_EINVAL;
}

/* ---- settlement ----------------------------------------------------------------- */

/* One row: a shop (both of its accounts) or another funding account. */
typedef struct account_row {
    char key[PGW_ACCOUNT_MAX + 1]; /* "shop:S001" or the account itself */
    bool shop;
    int64_t issued, reversed, expired, redeemed;
} account_row;

typedef struct ledger_rows {
    account_row *rows; /* sorted by key */
    size_t n, cap;
    bool overflow;
} ledger_rows;

/* The row key of an account: a shop's accounts share "shop:<id>". */
static bool row_key(const char *account, char key[PGW_ACCOUNT_MAX + 1])
{
    size_t len = strlen(account);
    static const char issued[] = ":issued", redeemed[] = ":redeemed";
    bool shop = strncmp(account, "shop:", 5) == 0;
    size_t cut = !shop                                                  ? len
                 : len > 12 && strcmp(account + len - 7, issued) == 0   ? len - 7
                 : len > 14 && strcmp(account + len - 9, redeemed) == 0 ? len - 9
                                                                        : len;
    memcpy(key, account, cut);
    key[cut] = '\0';
    return shop && cut < len;
}

static int compare_rows(const void *a, const void *b)
{
    return strcmp(((const account_row *)a)->key, ((const account_row *)b)->key);
}

/* The row of `account`, added (in order) when new; NULL when there is no room. */
static account_row *row_of(ledger_rows *t, const char *account)
{
    account_row probe = {.key = ""};
    bool shop = row_key(account, probe.key);
    account_row *found = bsearch(&probe, t->rows, t->n, sizeof(*t->rows), compare_rows);
    if (found != NULL || t->n == t->cap)
        return found;
    size_t at = 0;
    while (at < t->n && strcmp(t->rows[at].key, probe.key) < 0)
        at++;
    memmove(&t->rows[at + 1], &t->rows[at], (t->n - at) * sizeof(*t->rows));
    t->rows[at] = probe;
    t->rows[at].shop = shop;
    t->n++;
    return &t->rows[at];
}

static void add(ledger_rows *t, int64_t *sum, int64_t points)
{
    if (pgw_add(*sum, points, sum) != PGW_OK)
        t->overflow = true;
}

/* Issued, reversed and redeemed per account, from the period's flows. */
static int add_flows(pgw_store *store, int64_t from, int64_t to, ledger_rows *t, pgw_err *err)
{
    pgw_flow *flows = malloc(FLOWS_MAX * sizeof(*flows));
    size_t n = 0;
    int rc = flows ? pgw_store_flows(store, from, to, flows, FLOWS_MAX, &n, err)
                   : pgw_err_set(err, PGW_ENOMEM, "out of memory for a report");
    for (size_t i = 0; rc == PGW_OK && i < n; i++) {
        const pgw_flow *f = &flows[i];
        if (f->kind == PGW_TRANSFER_EXPIRE)
            continue; /* shared out among funders below */
        account_row *r = row_of(t, f->account);
        if (r == NULL) {
            rc = pgw_err_set(err, PGW_ETOOLARGE, "more than %d accounts in one report",
                             PGW_REPORT_ACCOUNTS_MAX);
            break;
        }
        /* A return (REDEEM back to the member) nets against the redemption. */
        if (f->kind == PGW_TRANSFER_REDEEM)
            add(t, &r->redeemed, f->to_member ? -f->points : f->points);
        else
            add(t, f->to_member ? &r->issued : &r->reversed, f->points);
    }
    free(flows);
    return rc;
}

/* Each expiry shared among its lot's funders, in proportion to what they put in. */
static int share_expiry(ledger_rows *t, const pgw_lot_expiry *e, pgw_err *err)
{
    /* Each funder's share of all the lot has expired by this transfer,
     * less its share of what had before it, as a refund reckons the
     * expired part: shared out part by part, a tie's point went to the same
     * funder each time, charged more than it funded. */
    int64_t share[PGW_EARN_FUNDERS_MAX], earlier[PGW_EARN_FUNDERS_MAX], after;
    if (e->n_funders < 1 || pgw_add(e->before, e->points, &after) != PGW_OK ||
        pgw_share_out(after, e->funded, e->n_funders, share) != PGW_OK ||
        pgw_share_out(e->before, e->funded, e->n_funders, earlier) != PGW_OK)
        return pgw_err_set(err, PGW_ERANGE, "expiry %lld cannot be shared out",
                           (long long)e->transfer_id);
    for (size_t i = 0; i < e->n_funders; i++) {
        /* Rarely -1: largest remainders can give a funder less of a larger
         * total (the Alabama paradox); the lot's sums are exact anyway. */
        share[i] -= earlier[i];
        account_row *r = row_of(t, e->funder[i]);
        if (r == NULL)
            return pgw_err_set(err, PGW_ETOOLARGE, "more than %d accounts in one report",
                               PGW_REPORT_ACCOUNTS_MAX);
        add(t, &r->expired, share[i]);
    }
    return PGW_OK;
}

static int add_expiries(pgw_store *store, int64_t from, int64_t to, ledger_rows *t, pgw_err *err)
{
    pgw_lot_expiry *page = malloc(EXPIRY_PAGE * sizeof(*page));
    if (page == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for a report");
    int64_t after = 0;
    size_t n = EXPIRY_PAGE;
    int rc = PGW_OK;
    while (rc == PGW_OK && n == EXPIRY_PAGE) {
        rc = pgw_store_expiries(store, from, to, after, page, EXPIRY_PAGE, &n, err);
        for (size_t i = 0; rc == PGW_OK && i < n; i++)
            rc = share_expiry(t, &page[i], err);
        if (n > 0)
            after = page[n - 1].transfer_id;
    }
    free(page);
    return rc;
}

/* The rows with every configured shop present (a shop with nothing still settles). */
static int collect(pgw_store *store, const pgw_config *cfg, int64_t from, int64_t to,
                   ledger_rows *t, pgw_err *err)
{
    t->cap = PGW_REPORT_ACCOUNTS_MAX;
    t->rows = calloc(t->cap, sizeof(*t->rows));
    if (t->rows == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for a report");
    for (size_t i = 0; i < cfg->rules.n_shops; i++) {
        char account[PGW_ACCOUNT_MAX + 1];
        snprintf(account, sizeof(account), "shop:%s:issued", cfg->rules.shops[i].id);
        if (row_of(t, account) == NULL)
            return pgw_err_set(err, PGW_ETOOLARGE, "too many shops for one report");
    }
    int rc = add_flows(store, from, to, t, err);
    if (rc == PGW_OK)
        rc = add_expiries(store, from, to, t, err);
    if (rc == PGW_OK && t->overflow)
        rc = pgw_err_set(err, PGW_ERANGE, "a report's sum overflows");
    return rc;
}

/* net_points and net_fen of a row (a non-shop account redeems nothing). */
static int row_net(const account_row *r, int64_t point_value_fen, int64_t *points, int64_t *fen)
{
    int64_t n = 0;
    int rc = pgw_sub(r->issued, r->reversed, &n);
    if (rc == PGW_OK)
        rc = pgw_sub(n, r->expired, &n);
    if (rc == PGW_OK)
        rc = pgw_sub(n, r->redeemed, &n);
    *points = n;
    return rc == PGW_OK ? pgw_mul(n, point_value_fen, fen) : rc;
}

typedef struct settlement {
    ledger_rows t;
    account_row total;
    int64_t members_net;
} settlement;

/* Every row's net and the totals', checked before a byte is written: the
 * CSV, refused at the first row that overflowed, had written the header
 * and the rows before it, and no total (a partial file, on stdout or a
 * pipe). */
static int check_nets(const settlement *s, int64_t point_value_fen, pgw_err *err)
{
    for (size_t i = 0; i <= s->t.n; i++) {
        const account_row *r = i < s->t.n ? &s->t.rows[i] : &s->total;
        int64_t net, fen;
        if (row_net(r, point_value_fen, &net, &fen) != PGW_OK)
            return pgw_err_set(err, PGW_ERANGE, "a report's sum overflows: the net of %s",
                               i < s->t.n ? r->key : "the totals");
    }
    return PGW_OK;
}

static int settle(pgw_store *store, const pgw_config *cfg, int64_t from, int64_t to, settlement *s,
                  pgw_err *err)
{
    memset(s, 0, sizeof(*s));
    int rc = collect(store, cfg, from, to, &s->t, err);
    for (size_t i = 0; rc == PGW_OK && i < s->t.n; i++) {
        const account_row *r = &s->t.rows[i];
        add(&s->t, &s->total.issued, r->issued);
        add(&s->t, &s->total.reversed, r->reversed);
        add(&s->t, &s->total.expired, r->expired);
        add(&s->t, &s->total.redeemed, r->redeemed);
    }
    if (rc == PGW_OK)
        rc = pgw_store_member_net(store, from, to, &s->members_net, err);
    if (rc == PGW_OK && s->t.overflow)
        rc = pgw_err_set(err, PGW_ERANGE, "a report's sum overflows");
    return rc == PGW_OK ? check_nets(s, cfg->point_value_fen, err) : rc;
}

static json_t *row_json(const account_row *r, int64_t value_fen, bool *ok)
{
    int64_t net = 0, fen = 0;
    *ok = *ok && row_net(r, value_fen, &net, &fen) == PGW_OK;
    json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "issued", (json_int_t)r->issued, "reversed",
                          (json_int_t)r->reversed, "expired", (json_int_t)r->expired, "redeemed",
                          (json_int_t)r->redeemed, "net_points", (json_int_t)net, "net_fen",
                          (json_int_t)fen);
    if (o != NULL && r->shop)
        json_object_set_new(o, "shop_id", json_string(r->key + 5));
    else if (o != NULL && r->key[0])
        json_object_set_new(o, "account", json_string(r->key));
    return o;
}

/*
 * A time as a report writes it: in the mall's zone, else (an instant
 * before 1970 there: from 0, unix time's start, in a zone west of UTC) in
 * UTC, the same instant and still RFC 3339, so that a reader always sees
 * the bound and can parse it. PGW_ERANGE for one neither can write (the
 * reports' bounds, 0..PGW_REPORT_TIME_MAX, keep every time within UTC's).
 */
static int time_text(const pgw_config *cfg, int64_t t, char out[PGW_RFC3339_MAX], pgw_err *err)
{
    if (pgw_format_rfc3339_or_utc(t, &cfg->rules.tz, out) == PGW_OK)
        return PGW_OK;
    return pgw_err_set(err, PGW_ERANGE, "a report's time %lld is outside the years %d..%d",
                       (long long)t, PGW_YEAR_MIN, PGW_YEAR_MAX);
}

/* A report's period, its bounds written as time_text writes them. */
typedef struct period {
    int64_t from, to;
    char from_text[PGW_RFC3339_MAX], to_text[PGW_RFC3339_MAX];
} period;

static int read_period(const pgw_config *cfg, int64_t from, int64_t to, period *p, pgw_err *err)
{
    p->from = from;
    p->to = to;
    int rc = time_text(cfg, from, p->from_text, err);
    return rc == PGW_OK ? time_text(cfg, to, p->to_text, err) : rc;
}

static void period_json(json_t *doc, const period *p)
{
    json_object_set_new(doc, "from", json_string(p->from_text));
    json_object_set_new(doc, "to", json_string(p->to_text));
}

void pgw_report_csv_summary(FILE *out, size_t columns, const char *name, const char *text,
                            const pgw_report_figure *figures, size_t n)
{
    PGW_ASSERT(strpbrk(name, ",\"\r\n") == NULL && strpbrk(text, ",\"\r\n") == NULL);
    fputs(name, out);
    size_t f = 0;
    for (size_t c = 1; c < columns; c++) {
        fputc(',', out);
        if (c == 1) {
            fputs(text, out);
        } else if (f < n && c == figures[f].column) {
            fprintf(out, "%lld", (long long)figures[f].value);
            f++;
        }
    }
    PGW_ASSERT(f == n); /* every figure had its column, in order */
    fputc('\n', out);
}

static void csv_summary(FILE *out, size_t columns, const char *name, const char *text)
{
    pgw_report_csv_summary(out, columns, name, text, NULL, 0);
}

/* The period as two summary rows, "from" and "to". */
static void csv_period(FILE *out, size_t columns, const period *p)
{
    csv_summary(out, columns, "from", p->from_text);
    csv_summary(out, columns, "to", p->to_text);
}

/* Whether a report's period ends at or before the period's close (store.h
 * pgw_store_close_period): then no write can change its figures. */
typedef struct closing {
    bool closed;
    int64_t before;                    /* the close in force; 0 when none */
    char before_text[PGW_RFC3339_MAX]; /* it as time_text writes it; "" when none */
} closing;

static int read_closing(pgw_store *store, const pgw_config *cfg, int64_t to, closing *c,
                        pgw_err *err)
{
    pgw_period_close pc;
    int rc = pgw_store_period_close(store, &pc, err);
    c->before = rc == PGW_OK ? pc.before : 0;
    c->closed = c->before > 0 && to <= c->before;
    c->before_text[0] = '\0';
    return rc == PGW_OK && c->before > 0 ? time_text(cfg, c->before, c->before_text, err) : rc;
}

/* "closed" (and the close in force, "closed_before", null when none). */
static void closing_json(json_t *doc, const closing *c)
{
    json_object_set_new(doc, "closed", json_boolean(c->closed));
    json_object_set_new(doc, "closed_before",
                        c->before > 0 ? json_string(c->before_text) : json_null());
}

/* A closed period's CSV ends with the row "closed" and the close: its
 * figures are final. An open one has no such row (the rows after the
 * data stay as they were). */
static void csv_closing(FILE *out, size_t columns, const closing *c)
{
    if (c->closed)
        csv_summary(out, columns, "closed", c->before_text);
}

static int write_json(json_t *doc, bool ok, FILE *out, pgw_err *err)
{
    int rc = doc != NULL && ok && json_dumpf(doc, out, JSON_COMPACT) == 0 && fputc('\n', out) != EOF
                 ? PGW_OK
                 : pgw_err_set(err, ok ? PGW_ENOMEM : PGW_ERANGE, "writing a report failed");
    json_decref(doc);
    return rc;
}

static int settlement_json(const settlement *s, const pgw_config *cfg, const period *p,
                           const closing *c, FILE *out, pgw_err *err)
{
    bool ok = true;
    json_t *doc = json_object(), *shops = json_array(), *funders = json_array();
    period_json(doc, p);
    closing_json(doc, c);
    json_object_set_new(doc, "point_value_fen", json_integer(cfg->point_value_fen));
    for (size_t i = 0; i < s->t.n; i++)
        json_array_append_new(s->t.rows[i].shop ? shops : funders,
                              row_json(&s->t.rows[i], cfg->point_value_fen, &ok));
    int64_t net = 0, fen = 0;
    ok = ok && row_net(&s->total, cfg->point_value_fen, &net, &fen) == PGW_OK;
    json_object_set_new(doc, "shops", shops);
    json_object_set_new(doc, "funders", funders);
    json_object_set_new(doc, "totals", row_json(&s->total, cfg->point_value_fen, &ok));
    json_object_set_new(doc, "trial_balance",
                        json_pack("{s:I,s:b}", "members_net", (json_int_t)s->members_net,
                                  "balanced", net == s->members_net));
    return write_json(doc, ok, out, err);
}

#define SETTLEMENT_COLUMNS 9 /* row .. net_fen */
#define NET_POINTS_COLUMN  7

static int settlement_csv(const settlement *s, const pgw_config *cfg, const period *p,
                          const closing *c, FILE *out, pgw_err *err)
{
    fputs("row,shop_id,account,issued,reversed,expired,redeemed,net_points,net_fen\n", out);
    for (size_t i = 0; i <= s->t.n; i++) {
        const account_row *r = i < s->t.n ? &s->t.rows[i] : &s->total;
        int64_t net = 0, fen = 0;
        bool fits = row_net(r, cfg->point_value_fen, &net, &fen) == PGW_OK;
        PGW_ASSERT(fits); /* check_nets, before the header */
        fprintf(out, "%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%lld\n",
                i == s->t.n ? "total"
                : r->shop   ? "shop"
                            : "funder",
                r->shop ? r->key + 5 : "", r->shop || i == s->t.n ? "" : r->key,
                (long long)r->issued, (long long)r->reversed, (long long)r->expired,
                (long long)r->redeemed, (long long)net, (long long)fen);
        pgw_report_figure members = {NET_POINTS_COLUMN, s->members_net};
        if (i == s->t.n) /* under the totals' net: the members' net change */
            pgw_report_csv_summary(out, SETTLEMENT_COLUMNS, "trial_balance",
                                   net == s->members_net ? "balanced" : "unbalanced", &members, 1);
    }
    csv_period(out, SETTLEMENT_COLUMNS, p);
    csv_closing(out, SETTLEMENT_COLUMNS, c);
    return ferror(out) ? pgw_err_set(err, PGW_EIO, "writing a report failed") : PGW_OK;
}

int pgw_report_settlement(pgw_store *store, const pgw_config *cfg, int64_t from, int64_t to,
                          pgw_report_format format, FILE *out, pgw_err *err)
{
    if (from < 0 || to <= from || to > PGW_REPORT_TIME_MAX)
        return pgw_err_set(err, PGW_EINVAL,
                           "a settlement covers a period in order, ending by 9999-01-01");
    settlement s;
    period p;
    closing c;
    int rc = settle(store, cfg, from, to, &s, err);
    if (rc == PGW_OK)
        rc = read_period(cfg, from, to, &p, err);
    if (rc == PGW_OK)
        rc = read_closing(store, cfg, to, &c, err);
    if (rc == PGW_OK)
        rc = format == PGW_REPORT_CSV ? settlement_csv(&s, cfg, &p, &c, out, err)
                                      : settlement_json(&s, cfg, &p, &c, out, err);
    free(s.t.rows);
    return rc;
}

/* ---- pool ------------------------------------------------------------------------ */

/* The local day a bucket holding `day` starts on. */
static int64_t bucket_start(int64_t day, pgw_bucket bucket)
{
    pgw_date d = pgw_date_from_days(day);
    if (bucket == PGW_BUCKET_WEEK)
        return day - (pgw_weekday(d) - 1); /* Monday */
    if (bucket == PGW_BUCKET_MONTH)
        return pgw_days_from_date((pgw_date){d.year, d.month, 1});
    return day;
}

/* The day after the bucket starting on `start` ends; INT64_MAX past year 9999
 * (the period is bounded well before it, so that ends the loop). */
static int64_t next_bucket(int64_t start, pgw_bucket bucket)
{
    if (bucket == PGW_BUCKET_DAY)
        return start + 1;
    if (bucket == PGW_BUCKET_WEEK)
        return start + 7;
    pgw_date d = pgw_date_from_days(start), next;
    return pgw_date_add_months(d, 1, &next) == PGW_OK ? pgw_days_from_date(next) : INT64_MAX;
}

typedef struct pool_bucket {
    int64_t start_day; /* the first local day it covers */
    int64_t end_day;   /* the last: a first or last bucket may cover part of its week or month */
    int64_t issued, reversed, redeemed, expired, outstanding;
    int64_t held,
        owed; /* at its end: positive member balances, debts (outstanding = held - owed) */
} pool_bucket;

/* What members hold and owe at from (the opening) and, per day, how it changed. */
typedef struct pool_holdings {
    const pgw_day_holding *days;
    size_t n, next; /* rows, the first not yet added */
    int64_t held, owed;
} pool_holdings;

/* Adds the rows of days before `end` to what is held and owed. */
static int hold_until(pool_holdings *h, int64_t end)
{
    int rc = PGW_OK;
    for (; rc == PGW_OK && h->next < h->n && h->days[h->next].day < end; h->next++) {
        rc = pgw_add(h->held, h->days[h->next].held, &h->held);
        if (rc == PGW_OK)
            rc = pgw_add(h->owed, h->days[h->next].owed, &h->owed);
    }
    return rc;
}

/* Days into buckets, every bucket of the period present, outstanding carried. */
static int pool_buckets(const pgw_day_flow *days, size_t n_days, pool_holdings *h, int64_t first,
                        int64_t last, pgw_bucket bucket, int64_t opening, pool_bucket *out,
                        size_t *n, pgw_err *err)
{
    *n = 0;
    int64_t held = opening;
    size_t d = 0;
    for (int64_t start = bucket_start(first, bucket); start <= last;
         start = next_bucket(start, bucket)) {
        PGW_ASSERT(*n < PGW_REPORT_DAYS_MAX + 1);
        pool_bucket *b = &out[(*n)++];
        memset(b, 0, sizeof(*b));
        /* Labelled by the first day it covers: the first bucket begins at
         * from's day, not the Monday or the 1st before it. */
        b->start_day = start < first ? first : start;
        int64_t end = next_bucket(start, bucket);
        b->end_day = end - 1 > last ? last : end - 1;
        int rc = PGW_OK;
        for (; rc == PGW_OK && d < n_days && days[d].day < end; d++) {
            rc = pgw_add(b->issued, days[d].issued, &b->issued);
            if (rc == PGW_OK)
                rc = pgw_add(b->reversed, days[d].reversed, &b->reversed);
            if (rc == PGW_OK)
                rc = pgw_add(b->redeemed, days[d].redeemed, &b->redeemed);
            if (rc == PGW_OK)
                rc = pgw_add(b->expired, days[d].expired, &b->expired);
        }
        if (rc == PGW_OK)
            rc = pgw_add(held, b->issued, &held);
        if (rc == PGW_OK)
            rc = pgw_sub(held, b->reversed, &held);
        if (rc == PGW_OK)
            rc = pgw_sub(held, b->redeemed, &held);
        if (rc == PGW_OK)
            rc = pgw_sub(held, b->expired, &held);
        if (rc == PGW_OK)
            rc = hold_until(h, end);
        if (rc != PGW_OK)
            return pgw_err_set(err, PGW_ERANGE, "the pool's sums overflow");
        b->outstanding = held;
        b->held = h->held;
        b->owed = h->owed;
    }
    return PGW_OK;
}

#define POOL_COLUMNS 9 /* start .. outstanding, end, held_by_members, owed_by_members */

static int pool_write(const pool_bucket *b, size_t n, const period *p, pgw_bucket bucket,
                      const pool_bucket *opening, const closing *c, pgw_report_format format,
                      FILE *out, pgw_err *err)
{
    static const char *const names[] = {"day", "week", "month"};
    json_t *doc = format == PGW_REPORT_JSON ? json_object() : NULL, *list = json_array();
    if (doc != NULL) {
        period_json(doc, p);
        closing_json(doc, c);
        json_object_set_new(doc, "bucket", json_string(names[bucket]));
        json_object_set_new(doc, "opening_outstanding", json_integer(opening->outstanding));
        json_object_set_new(doc, "opening_held_by_members", json_integer(opening->held));
        json_object_set_new(doc, "opening_owed_by_members", json_integer(opening->owed));
    } else {
        /* New columns last: the ones before them are where they always were */
        fputs("start,issued,reversed,redeemed,expired,outstanding,end,held_by_members,"
              "owed_by_members\n",
              out);
    }
    for (size_t i = 0; i < n; i++) {
        char start[16], end[16];
        bool dated =
            pgw_format_date(pgw_date_from_days(b[i].start_day), start, sizeof(start)) == PGW_OK &&
            pgw_format_date(pgw_date_from_days(b[i].end_day), end, sizeof(end)) == PGW_OK;
        PGW_ASSERT(dated); /* the period is bounded within the calendar's years */
        if (doc == NULL)
            fprintf(out, "%s,%lld,%lld,%lld,%lld,%lld,%s,%lld,%lld\n", start,
                    (long long)b[i].issued, (long long)b[i].reversed, (long long)b[i].redeemed,
                    (long long)b[i].expired, (long long)b[i].outstanding, end, (long long)b[i].held,
                    (long long)b[i].owed);
        else
            json_array_append_new(
                list, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "start", start, "end", end,
                                "issued", (json_int_t)b[i].issued, "reversed",
                                (json_int_t)b[i].reversed, "redeemed", (json_int_t)b[i].redeemed,
                                "expired", (json_int_t)b[i].expired, "outstanding",
                                (json_int_t)b[i].outstanding, "held_by_members",
                                (json_int_t)b[i].held, "owed_by_members", (json_int_t)b[i].owed));
    }
    if (doc == NULL) {
        json_decref(list);
        /* The opening's three figures, each under its column: outstanding,
         * held_by_members, owed_by_members. */
        const pgw_report_figure figures[] = {
            {5, opening->outstanding}, {7, opening->held}, {8, opening->owed}};
        pgw_report_csv_summary(out, POOL_COLUMNS, "opening_outstanding", "", figures, 3);
        csv_summary(out, POOL_COLUMNS, "bucket", names[bucket]);
        csv_period(out, POOL_COLUMNS, p);
        csv_closing(out, POOL_COLUMNS, c);
        return ferror(out) ? pgw_err_set(err, PGW_EIO, "writing a report failed") : PGW_OK;
    }
    json_object_set_new(doc, "buckets", list);
    return write_json(doc, true, out, err);
}

/* The local day of `t`, as the rules date it and the store cuts it: (t +
 * the offset then) / 86400, for a local time of 1970 on (pgw_report_pool
 * refuses one before), where division rounding toward zero is floor. */
static int64_t local_day(int64_t t, const pgw_tz *tz)
{
    int64_t local = t + pgw_tz_offset_at(tz, t);
    PGW_ASSERT(local >= 0);
    return local / 86400;
}

/* Refuses a pool from before 1970-01-01 local: its first day, 1969-12-31,
 * is a year the calendar does not write (PGW_YEAR_MIN), and the store
 * cuts days by a division that rounds a negative time toward zero. */
static int pool_starts_in_1970(int64_t from, const pgw_tz *tz, pgw_err *err)
{
    int32_t offset = pgw_tz_offset_at(tz, from); /* 1970's, the earliest's too */
    if (from + offset >= 0)
        return PGW_OK;
    char earliest[PGW_RFC3339_MAX];
    pgw_format_moment(-(int64_t)offset, tz, earliest);
    return pgw_err_set(err, PGW_EINVAL,
                       "a pool report's days start at 1970-01-01 in the mall's zone: from %s at "
                       "the earliest",
                       earliest);
}

/* The end of the span of one offset of `tz` that starts at `from`, `to` at most. */
static int64_t span_end(const pgw_tz *tz, int64_t from, int64_t to)
{
    int64_t change = pgw_tz_next_change(tz, from);
    return change < to ? change : to;
}

/* Adds a day's flows into *into (the same day, from two spans). */
static int add_flow(pgw_day_flow *into, const pgw_day_flow *d)
{
    int rc = pgw_add(into->issued, d->issued, &into->issued);
    if (rc == PGW_OK)
        rc = pgw_add(into->reversed, d->reversed, &into->reversed);
    if (rc == PGW_OK)
        rc = pgw_add(into->redeemed, d->redeemed, &into->redeemed);
    if (rc == PGW_OK)
        rc = pgw_add(into->expired, d->expired, &into->expired);
    return rc;
}

/*
 * The pool's days in [from, to), each movement on the local day its rules
 * dated it (pgw_local_date: in the offset its zone had then), not in
 * today's offset, which put a purchase of 00:30 on 1 January 2013 in
 * Moscow (+04:00 then, +03:00 today) on 31 December. The store cuts days
 * in one offset, so [from, to) is asked for a span of one offset at a time
 * (a single span for most zones and periods); a day a change falls in has
 * rows from the spans on both sides of it, added into one (a change never
 * takes the local date back: the spans' days follow each other. Where a
 * zone went back across midnight it went to 23:00 of the day before, the
 * date repeated within the day of the change's last instant: test_civil
 * checks every zone pgw_tz_lookup knows a change of).
 */
static int day_flows(pgw_store *store, const pgw_tz *tz, int64_t from, int64_t to,
                     pgw_day_flow *out, size_t cap, size_t *n, pgw_err *err)
{
    *n = 0;
    for (int64_t a = from, b; a < to; a = b) {
        b = span_end(tz, a, to);
        size_t got = 0;
        pgw_day_flow *span = out + *n;
        int rc =
            pgw_store_day_flows(store, a, b, pgw_tz_offset_at(tz, a), span, cap - *n, &got, err);
        if (rc != PGW_OK)
            return rc;
        PGW_ASSERT(*n == 0 || got == 0 || span[0].day >= out[*n - 1].day);
        if (*n > 0 && got > 0 && span[0].day == out[*n - 1].day) {
            if (add_flow(&out[*n - 1], &span[0]) != PGW_OK)
                return pgw_err_set(err, PGW_ERANGE, "the pool's sums overflow");
            memmove(span, span + 1, (got - 1) * sizeof(*span));
            got--;
        }
        *n += got;
    }
    return PGW_OK;
}

/*
 * What members hold and owe, as day_flows cuts its days: a span's rows
 * before it (its opening) are the spans' before it, dropped after the
 * first; a day two spans share is added into one, its change of what is
 * held the sum of its two parts' (per member, max(balance, 0) at the
 * change less before it, plus at the day's end less at the change).
 */
static int day_holdings(pgw_store *store, const pgw_tz *tz, int64_t from, int64_t to,
                        pgw_day_holding *out, size_t cap, size_t *n, pgw_err *err)
{
    *n = 0;
    for (int64_t a = from, b; a < to; a = b) {
        b = span_end(tz, a, to);
        int32_t offset = pgw_tz_offset_at(tz, a);
        size_t got = 0;
        pgw_day_holding *span = out + *n;
        int rc = pgw_store_day_holdings(store, a, b, offset, span, cap - *n, &got, err);
        if (rc != PGW_OK)
            return rc;
        if (a > from && got > 0 && span[0].day == PGW_STORE_OPENING_DAY(a, offset)) {
            memmove(span, span + 1, (got - 1) * sizeof(*span));
            got--;
        }
        PGW_ASSERT(*n == 0 || got == 0 || span[0].day >= out[*n - 1].day);
        if (*n > 0 && got > 0 && span[0].day == out[*n - 1].day) {
            if (pgw_add(out[*n - 1].held, span[0].held, &out[*n - 1].held) != PGW_OK ||
                pgw_add(out[*n - 1].owed, span[0].owed, &out[*n - 1].owed) != PGW_OK)
                return pgw_err_set(err, PGW_ERANGE, "the pool's sums overflow");
            memmove(span, span + 1, (got - 1) * sizeof(*span));
            got--;
        }
        *n += got;
    }
    return PGW_OK;
}

/* Rows room: the period's days, the opening, and a span's opening and
 * shared day before they are dropped or added. */
#define POOL_ROWS_MAX (PGW_REPORT_DAYS_MAX + 4)

int pgw_report_pool(pgw_store *store, const pgw_config *cfg, int64_t from, int64_t to,
                    pgw_bucket bucket, pgw_report_format format, FILE *out, pgw_err *err)
{
    const pgw_tz *tz = &cfg->rules.tz;
    /* Bounded before any arithmetic: no overflow, and every bucket's date
     * stays within the calendar's years. Then the local days it touches,
     * the rows and buckets it fills, the one bound the refusal names (a
     * bound in seconds beside it refused 3698 whole days and took 3699
     * local days from late in one). */
    bool bounded = from >= 0 && from < to && to <= PGW_REPORT_TIME_MAX;
    int rc = bounded ? pool_starts_in_1970(from, tz, err) : PGW_OK;
    if (rc != PGW_OK)
        return rc;
    if (!bounded || local_day(to - 1, tz) - local_day(from, tz) >= PGW_REPORT_DAYS_MAX)
        return pgw_err_set(err, PGW_EINVAL,
                           "a pool report covers 1..%d days in order, ending by 9999-01-01",
                           PGW_REPORT_DAYS_MAX);
    int64_t first = local_day(from, tz), last = local_day(to - 1, tz);
    pgw_day_flow *days = malloc(POOL_ROWS_MAX * sizeof(*days));
    pool_bucket *buckets = malloc((PGW_REPORT_DAYS_MAX + 1) * sizeof(*buckets));
    /* The period's days and the opening's row */
    pgw_day_holding *holdings = malloc(POOL_ROWS_MAX * sizeof(*holdings));
    size_t n_days = 0, n = 0;
    pool_bucket opening = {0};
    pool_holdings h = {.days = holdings};
    rc = days && buckets && holdings
             ? pgw_store_member_net(store, INT64_MIN, from, &opening.outstanding, err)
             : pgw_err_set(err, PGW_ENOMEM, "out of memory for a report");
    if (rc == PGW_OK) /* a day a row: the period's days bound them */
        rc = day_flows(store, tz, from, to, days, POOL_ROWS_MAX, &n_days, err);
    if (rc == PGW_OK)
        rc = day_holdings(store, tz, from, to, holdings, POOL_ROWS_MAX, &h.n, err);
    /* rows before first */
    PGW_ASSERT(PGW_STORE_OPENING_DAY(from, pgw_tz_offset_at(tz, from)) == first - 1);
    if (rc == PGW_OK && hold_until(&h, first) != PGW_OK)
        rc = pgw_err_set(err, PGW_ERANGE, "the pool's sums overflow");
    opening.held = h.held;
    opening.owed = h.owed;
    if (rc == PGW_OK)
        rc = pool_buckets(days, n_days, &h, first, last, bucket, opening.outstanding, buckets, &n,
                          err);
    period p;
    closing c;
    if (rc == PGW_OK)
        rc = read_period(cfg, from, to, &p, err);
    if (rc == PGW_OK)
        rc = read_closing(store, cfg, to, &c, err);
    if (rc == PGW_OK)
        rc = pool_write(buckets, n, &p, bucket, &opening, &c, format, out, err);
    free(days);
    free(buckets);
    free(holdings);
    return rc;
}
