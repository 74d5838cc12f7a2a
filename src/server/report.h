/*
 * report.h - finance's reports from the transfer log: the settlement with
 * every shop and the health of the points pool.
 *
 * Shared by `pointsgw report` and GET /v1/reports/{settlement,pool}; the
 * caller holds a read transaction (one snapshot for the whole report).
 * Periods are [from, to) of occurred_at, the business time of each
 * transfer.
 *
 * Settlement, per funding account and per shop:
 *   issued    EARN transfers it funded (a shop: "shop:<id>:issued")
 *   reversed  REVERSAL transfers given back to it by refunds
 *   expired   its share of expired points: each expiry of a lot is shared
 *             among the lot's funders in proportion to what each put in
 *             (floor; the remainder to the first funder, the shop's base
 *             line), so every expired point is someone's
 *   redeemed  REDEEM transfers at the shop ("shop:<id>:redeemed")
 *   net_points = issued - reversed - expired - redeemed; net_fen =
 *             net_points x point_value_fen: on a shop's row what the shop
 *             owes the mall (negative: what the mall owes the shop); on a
 *             funder's row what its points cost the mall itself
 * Accounts that are not shops (mall:campaigns, mall:behaviour, import:*,
 * system:adjustments) are reported apart. The totals add up to the trial
 * balance: issued - reversed - expired - redeemed over every row equals the
 * members' net change in the period, read independently from the log.
 *
 * Pool, per day, week (Monday first) or month in the mall's time zone:
 * issued, reversed, redeemed, expired, and outstanding (what members hold
 * at the bucket's end: the liability). Each bucket is labelled by the
 * first local day it covers (`start`: the first, cut by `from`, by from's
 * day) and the last (`end`: the last, cut by `to`, by to's).
 *
 * Both say whether their figures are final: "closed" true when `to` is at
 * or before the period's close (store.h pgw_store_close_period), after
 * which no write dated in the report's period is taken; "closed_before"
 * the close in force (null when none). A closed period's CSV ends with the
 * summary row "closed" and the close; an open one's has no such row.
 */
#ifndef PGW_SERVER_REPORT_H
#define PGW_SERVER_REPORT_H

#include "config/config.h"
#include "store/store.h"

#include <stdio.h>

#define PGW_REPORT_ACCOUNTS_MAX 4096                  /* accounts moving points in one period */
#define PGW_REPORT_DAYS_MAX     3700                  /* local days in a pool report (ten years) */
#define PGW_REPORT_TIME_MAX     INT64_C(253370764800) /* 9999-01-01T00:00:00Z: periods end before */
/* The times pgw_report_time_in takes, for a refusal to say. */
#define PGW_REPORT_TIME_RANGE "from 1970-01-01T00:00:00Z to 9999-01-01T00:00:00Z"

typedef enum pgw_report_format { PGW_REPORT_JSON = 0, PGW_REPORT_CSV } pgw_report_format;
typedef enum pgw_bucket { PGW_BUCKET_DAY = 0, PGW_BUCKET_WEEK, PGW_BUCKET_MONTH } pgw_bucket;

/* A period's bound as finance writes it (HTTP from/to, CLI --from/--to,
 * --as-of, --before): unix seconds, or an RFC 3339 time, either from 0
 * (1970-01-01T00:00:00Z) to PGW_REPORT_TIME_MAX; false (and *out as it
 * was) otherwise. */
bool pgw_report_time_in(const char *text, int64_t *out);

/* "day", "week", "month"; PGW_EINVAL otherwise. */
int pgw_bucket_parse(const char *name, pgw_bucket *out);

/* A figure of a CSV summary row: `value` under column `column` (0-based). */
typedef struct pgw_report_figure {
    size_t column;
    int64_t value;
} pgw_report_figure;

/*
 * A CSV summary row, after a report's rows, as wide as its header
 * (`columns`) so that every reader takes it: `name` first, `text` (or "")
 * second, then each of the n figures under its column (in column order,
 * after the text's), the other cells empty. Rows after the data, not
 * comment lines before the header: spreadsheets show them as they are,
 * and readers that take the first line as the header, or filter on the
 * first column, keep working. The settlement's, the pool's and a
 * reconciliation's CSV end so. Name and text are the caller's own words:
 * nothing in them needs quoting.
 */
void pgw_report_csv_summary(FILE *out, size_t columns, const char *name, const char *text,
                            const pgw_report_figure *figures, size_t n);

/* The settlement for [from, to), written to `out`. */
int pgw_report_settlement(pgw_store *store, const pgw_config *cfg, int64_t from, int64_t to,
                          pgw_report_format format, FILE *out, pgw_err *err);

/* The pool for [from, to) by bucket, written to `out`. */
int pgw_report_pool(pgw_store *store, const pgw_config *cfg, int64_t from, int64_t to,
                    pgw_bucket bucket, pgw_report_format format, FILE *out, pgw_err *err);

#endif
