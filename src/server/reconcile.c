/*
 * reconcile.c - see reconcile.h.
 */
#include "reconcile.h"

#include "core/assertions.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LEDGER_PAGE 512

/* The ledger side: events a page at a time after a cursor. */
typedef struct ledger_pages {
    pgw_store *store;
    const pgw_event_filter *filter;
    pgw_recon_row *page; /* LEDGER_PAGE rows */
    size_t n, next;
    bool last; /* the page in hand is the last one */
    char after_id[PGW_EVENT_ID_MAX + 1];
    char after_source[PGW_ID_MAX + 1];
} ledger_pages;

static int next_ledger(void *p, pgw_recon_row *row, bool *end, pgw_err *err)
{
    ledger_pages *l = p;
    if (l->next == l->n && !l->last) {
        int rc = pgw_store_read_events(l->store, l->filter, l->after_id, l->after_source, l->page,
                                       LEDGER_PAGE, &l->n, err);
        if (rc != PGW_OK)
            return rc;
        l->next = 0;
        l->last = l->n < LEDGER_PAGE;
        if (l->n > 0) {
            memcpy(l->after_id, l->page[l->n - 1].event_id, sizeof(l->after_id));
            memcpy(l->after_source, l->page[l->n - 1].source, sizeof(l->after_source));
        }
    }
    *end = l->next == l->n;
    if (!*end)
        *row = l->page[l->next++];
    return PGW_OK;
}

/* Where exceptions go while the match runs. */
typedef struct sink {
    const pgw_recon_options *opts;
    FILE *tmp;
    size_t listed;
} sink;

static json_t *side_json(const pgw_recon_row *r, bool ledger, const pgw_tz *tz)
{
    if (r == NULL)
        return json_null();
    char when[PGW_RFC3339_MAX] = "";
    pgw_format_rfc3339(r->occurred_at, tz, when, sizeof(when));
    json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I}", "occurred_at", when, "type", r->type,
                          ledger ? "member_id" : "member", r->member, "amount_fen",
                          (json_int_t)r->amount_fen, "points", (json_int_t)r->points);
    if (o != NULL && ledger)
        json_object_set_new(o, "shop_id", json_string(r->source));
    if (o != NULL && !ledger)
        json_object_set_new(o, "line", json_integer((json_int_t)r->line));
    return o;
}

static int write_json(sink *k, pgw_recon_kind kind, const pgw_recon_row *s, const pgw_recon_row *l)
{
    const pgw_recon_row *any = s ? s : l;
    json_t *o;
    if (kind == PGW_RECON_MALFORMED_ROW)
        o = json_pack("{s:s,s:s,s:I,s:s}", "event_id", s->event_id, "kind",
                      pgw_recon_kind_name(kind), "line", (json_int_t)s->line, "problem",
                      s->problem);
    else
        o = json_pack("{s:s,s:s,s:o,s:o}", "event_id", any->event_id, "kind",
                      pgw_recon_kind_name(kind), "statement", side_json(s, false, k->opts->tz),
                      "ledger", side_json(l, true, k->opts->tz));
    int rc = o != NULL && (k->listed == 0 || fputc(',', k->tmp) != EOF) &&
                     json_dumpf(o, k->tmp, JSON_COMPACT) == 0 && fputc('\n', k->tmp) != EOF
                 ? PGW_OK
                 : PGW_EIO;
    json_decref(o);
    return rc;
}

/* A CSV field, quoted when it must be. */
static void csv_field(FILE *f, const char *text, bool last)
{
    if (strpbrk(text, ",\"\r\n") == NULL) {
        fputs(text, f);
    } else {
        fputc('"', f);
        for (const char *c = text; *c; c++) {
            if (*c == '"')
                fputc('"', f);
            fputc(*c, f);
        }
        fputc('"', f);
    }
    fputc(last ? '\n' : ',', f);
}

static const char CSV_HEADER[] =
    "kind,event_id,line,shop_id,statement_occurred_at,ledger_occurred_at,statement_type,"
    "ledger_type,statement_member,ledger_member,statement_amount_fen,ledger_amount_fen,"
    "statement_points,ledger_points,problem\n";

static int write_csv(sink *k, pgw_recon_kind kind, const pgw_recon_row *s, const pgw_recon_row *l)
{
    char line[24] = "", sat[PGW_RFC3339_MAX] = "", lat[PGW_RFC3339_MAX] = "";
    char num[4][24] = {"", "", "", ""};
    if (s != NULL) {
        snprintf(line, sizeof(line), "%zu", s->line);
        if (!s->malformed) {
            pgw_format_rfc3339(s->occurred_at, k->opts->tz, sat, sizeof(sat));
            snprintf(num[0], sizeof(num[0]), "%lld", (long long)s->amount_fen);
            snprintf(num[2], sizeof(num[2]), "%lld", (long long)s->points);
        }
    }
    if (l != NULL) {
        pgw_format_rfc3339(l->occurred_at, k->opts->tz, lat, sizeof(lat));
        snprintf(num[1], sizeof(num[1]), "%lld", (long long)l->amount_fen);
        snprintf(num[3], sizeof(num[3]), "%lld", (long long)l->points);
    }
    const char *fields[] = {pgw_recon_kind_name(kind),
                            (s ? s : l)->event_id,
                            line,
                            l ? l->source : "",
                            sat,
                            lat,
                            s && !s->malformed ? s->type : "",
                            l ? l->type : "",
                            s && !s->malformed ? s->member : "",
                            l ? l->member : "",
                            num[0],
                            num[1],
                            num[2],
                            num[3],
                            s && s->malformed ? s->problem : ""};
    size_t n = sizeof(fields) / sizeof(fields[0]);
    for (size_t i = 0; i < n; i++)
        csv_field(k->tmp, fields[i], i + 1 == n);
    return ferror(k->tmp) ? PGW_EIO : PGW_OK;
}

static int emit(void *p, pgw_recon_kind kind, const pgw_recon_row *s, const pgw_recon_row *l,
                pgw_err *err)
{
    sink *k = p;
    if (kind == PGW_RECON_MISSING_IN_LEDGER && k->opts->missing != NULL &&
        fwrite(s, sizeof(*s), 1, k->opts->missing) != 1)
        return pgw_err_set(err, PGW_EIO, "keeping a row to repair failed");
    if (k->opts->exceptions_max > 0 && k->listed >= k->opts->exceptions_max)
        return PGW_OK; /* counted in the summary, not listed */
    int rc =
        k->opts->format == PGW_RECON_CSV ? write_csv(k, kind, s, l) : write_json(k, kind, s, l);
    k->listed++;
    return rc == PGW_OK ? PGW_OK : pgw_err_set(err, PGW_EIO, "writing an exception failed");
}

/* One pass over both sides; the statement as it is, or sorted. */
static int match_once(pgw_store *store, pgw_statement *st, const pgw_recon_options *opts, sink *k,
                      pgw_recon_summary *sum, pgw_err *err)
{
    ledger_pages l = {.store = store, .filter = &opts->filter};
    l.page = malloc(LEDGER_PAGE * sizeof(*l.page));
    if (l.page == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory reconciling");
    pgw_recon_io io = {pgw_statement_next, st, next_ledger, &l, emit, k};
    int rc = pgw_reconcile(&io, sum, err);
    free(l.page);
    return rc;
}

/* Starts the exception and repair files over. */
static int reset(sink *k, const pgw_recon_options *opts, pgw_err *err)
{
    k->listed = 0;
    rewind(k->tmp);
    if (ftruncate(fileno(k->tmp), 0) != 0 ||
        (opts->missing && (rewind(opts->missing), ftruncate(fileno(opts->missing), 0) != 0)))
        return pgw_err_set(err, PGW_EIO, "starting the reconciliation over failed");
    return PGW_OK;
}

int pgw_recon_write_summary(const pgw_recon_summary *s, FILE *out)
{
    json_t *o =
        json_pack("{s:I,s:I,s:I,s:I}", "statement_rows", (json_int_t)s->statement_rows,
                  "ledger_rows", (json_int_t)s->ledger_rows, "statement_points",
                  (json_int_t)s->statement_points, "ledger_points", (json_int_t)s->ledger_points);
    for (size_t kind = 0; o != NULL && kind < PGW_RECON_KINDS; kind++)
        json_object_set_new(o, pgw_recon_kind_name((pgw_recon_kind)kind),
                            json_integer((json_int_t)s->count[kind]));
    int rc = o != NULL && json_dumpf(o, out, JSON_COMPACT) == 0 ? PGW_OK : PGW_EIO;
    json_decref(o);
    return rc;
}

/* The report: summary, then the exceptions kept in `tmp`. */
static int write_report(const sink *k, const pgw_recon_summary *sum, FILE *out, pgw_err *err)
{
    bool json = k->opts->format == PGW_RECON_JSON;
    bool truncated = k->opts->exceptions_max > 0 && k->listed >= k->opts->exceptions_max;
    int rc = PGW_OK;
    if (json) {
        fputs("{\"summary\":", out);
        rc = pgw_recon_write_summary(sum, out);
        fprintf(out, ",\"exceptions_listed\":%zu,\"truncated\":%s,\"exceptions\":[\n", k->listed,
                truncated ? "true" : "false");
    } else {
        fputs(CSV_HEADER, out);
    }
    rewind(k->tmp);
    char buf[65536];
    size_t n;
    while (rc == PGW_OK && (n = fread(buf, 1, sizeof(buf), k->tmp)) > 0)
        rc = fwrite(buf, 1, n, out) == n ? PGW_OK : PGW_EIO;
    if (json)
        fputs("]}\n", out);
    if (rc != PGW_OK || ferror(k->tmp) || fflush(out) != 0 || ferror(out))
        return pgw_err_set(err, PGW_EIO, "writing the report failed");
    return PGW_OK;
}

int pgw_recon_run(pgw_store *store, pgw_statement *st, const pgw_recon_options *opts, FILE *out,
                  pgw_recon_summary *sum, pgw_err *err)
{
    sink k = {.opts = opts, .tmp = tmpfile()};
    if (k.tmp == NULL)
        return pgw_err_set(err, PGW_EIO, "no temporary file for the exceptions");
    int rc = match_once(store, st, opts, &k, sum, err);
    if (rc == PGW_EINVAL) {
        /* Not in event_id order (the only EINVAL of the matcher): sort the
         * statement on disk and match again from the start. */
        rc = reset(&k, opts, err);
        if (rc == PGW_OK)
            rc = pgw_statement_sort(st, err);
        if (rc == PGW_OK)
            rc = match_once(store, st, opts, &k, sum, err);
        PGW_ASSERT(rc != PGW_EINVAL); /* sorted rows are in order */
    }
    if (rc == PGW_OK)
        rc = write_report(&k, sum, out, err);
    fclose(k.tmp);
    return rc;
}

bool pgw_recon_read_missing(FILE *missing, pgw_recon_row *row)
{
    return fread(row, sizeof(*row), 1, missing) == 1;
}
