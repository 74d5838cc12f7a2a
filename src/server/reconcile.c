/*
 * reconcile.c - see reconcile.h.
 */
#include "reconcile.h"

#include "core/assertions.h"
#include "server/report.h"
#include "server/rowsort.h"
#include "util/thread_name.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The ledger side: events a page at a time after a cursor. */
typedef struct ledger_pages {
    pgw_store *store;
    pthread_mutex_t *store_lock; /* shared with the merge's look-ups (same_member, find_event) */
    const pgw_event_filter *filter;
    bool last; /* the page read before was the last one */
    char after_id[PGW_EVENT_ID_MAX + 1];
    char after_source[PGW_ID_MAX + 1];
} ledger_pages;

/* A block of the log's rows: one page of the store, read straight into it. */
static int fill_pages(void *p, pgw_recon_row *rows, size_t cap, size_t *n, bool *end, pgw_err *err)
{
    ledger_pages *l = p;
    *n = 0;
    *end = l->last;
    if (l->last)
        return PGW_OK;
    pthread_mutex_lock(l->store_lock);
    int rc =
        pgw_store_read_events(l->store, l->filter, l->after_id, l->after_source, rows, cap, n, err);
    pthread_mutex_unlock(l->store_lock);
    if (rc != PGW_OK)
        return rc;
    l->last = *end = *n < cap;
    if (*n > 0) {
        memcpy(l->after_id, rows[*n - 1].event_id, sizeof(l->after_id));
        memcpy(l->after_source, rows[*n - 1].source, sizeof(l->after_source));
    }
    return PGW_OK;
}

/* The log's side of a whole channel: the store gives it by shop, so it is
 * sorted (with bounded memory) before the first block goes out. */
typedef struct channel_rows {
    ledger_pages pages;
    pgw_rowsort *sorted;
} channel_rows;

static int sort_channel(channel_rows *c, pgw_recon_row *rows, size_t cap, pgw_err *err)
{
    int rc = pgw_rowsort_new(PGW_ROWSORT_ARENA, &c->sorted, err);
    size_t got = 0;
    bool last = false;
    while (rc == PGW_OK && !last &&
           (rc = fill_pages(&c->pages, rows, cap, &got, &last, err)) == PGW_OK) {
        for (size_t i = 0; rc == PGW_OK && i < got; i++)
            rc = pgw_rowsort_add(c->sorted, &rows[i], err);
    }
    return rc == PGW_OK ? pgw_rowsort_finish(c->sorted, err) : rc;
}

static int fill_channel(void *p, pgw_recon_row *rows, size_t cap, size_t *n, bool *end,
                        pgw_err *err)
{
    channel_rows *c = p;
    int rc = c->sorted == NULL ? sort_channel(c, rows, cap, err) : PGW_OK;
    *n = 0;
    *end = false;
    while (rc == PGW_OK && *n < cap &&
           (rc = pgw_rowsort_next(c->sorted, &rows[*n], end, err)) == PGW_OK && !*end)
        (*n)++;
    return rc;
}

/* The statement side: its rows and the event_id read last, to see early
 * that it is not in order (the matcher would see it only after walking the
 * whole log to the first row's event_id, reporting every row on the way). */
typedef struct statement_rows {
    pgw_statement *st;
    bool by_shop;     /* it names each row's shop (pgw_statement_has_shop) */
    const char *shop; /* the shop reconciled; NULL: the whole channel */
    bool have_prev;
    pgw_recon_row prev; /* its key: event_id and source */
} statement_rows;

/* A row naming another shop than the one reconciled cannot match, and a
 * repair must not post it as this shop's: a malformed row, saying why.
 * One unreadable already takes no event of this shop's: out of the key
 * order, where a statement of every shop, by shop, would put it out of
 * order and have it sorted for nothing. */
static void other_shop(const statement_rows *s, pgw_recon_row *r)
{
    if (!s->by_shop || s->shop == NULL || r->source[0] == '\0' || strcmp(r->source, s->shop) == 0)
        return;
    r->key_read = false;
    if (r->malformed)
        return;
    r->malformed = true;
    snprintf(r->problem, sizeof(r->problem), "shop_id \"%s\" is not the shop reconciled, %s",
             r->source, s->shop);
}

/* A block of statement rows, one by one; PGW_EINVAL at the first out of order. */
static int fill_statement(void *p, pgw_recon_row *rows, size_t cap, size_t *n, bool *end,
                          pgw_err *err)
{
    statement_rows *s = p;
    int rc = PGW_OK;
    *end = false;
    for (*n = 0;
         *n < cap && (rc = pgw_statement_next(s->st, &rows[*n], end, err)) == PGW_OK && !*end;
         (*n)++) {
        pgw_recon_row *r = &rows[*n];
        other_shop(s, r);
        if (r->malformed && !r->key_read)
            continue; /* one whose key was read may take its event: in the order too */
        if (s->have_prev && pgw_recon_key_cmp(r, &s->prev, s->by_shop) < 0)
            return pgw_err_set(err, PGW_EINVAL,
                               "statement line %zu: event_id \"%.64s\" comes after \"%.64s\"; "
                               "rows must be in event_id order",
                               r->line, r->event_id, s->prev.event_id);
        memcpy(s->prev.event_id, r->event_id, sizeof(s->prev.event_id));
        memcpy(s->prev.source, r->source, sizeof(s->prev.source));
        s->have_prev = true;
    }
    return rc;
}

/*
 * Prefetching: each side's rows are read on a thread of its own into a
 * small ring of blocks, so that parsing the statement and reading the log
 * run on both cores while this thread merges. Bounded: PREFETCH_BLOCKS
 * blocks of PREFETCH_ROWS rows per side.
 */
#define PREFETCH_BLOCKS 4
#define PREFETCH_ROWS   1024

/* Fills rows[0..cap) from a side; *n rows, *end at its end. */
typedef int (*fill_fn)(void *source, pgw_recon_row *rows, size_t cap, size_t *n, bool *end,
                       pgw_err *err);

typedef struct prefetch {
    fill_fn fill;
    void *source;
    pthread_t thread;
    bool initialized, started;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    pgw_recon_row *rows; /* PREFETCH_BLOCKS * PREFETCH_ROWS */
    size_t count[PREFETCH_BLOCKS];
    size_t head, filled; /* blocks ready: head .. head + filled (mod) */
    bool done;           /* the producer ended: at the end, or on an error */
    bool stop;           /* the consumer gave up */
    int rc;
    pgw_err err;
    size_t pos; /* consumer: next row of block `head`, when filled > 0 */
} prefetch;

static void *prefetch_main(void *arg)
{
    prefetch *p = arg;
    pgw_thread_name("pgw-prefetch");
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->filled == PREFETCH_BLOCKS && !p->stop)
            pthread_cond_wait(&p->changed, &p->lock);
        size_t b = (p->head + p->filled) % PREFETCH_BLOCKS;
        bool stop = p->stop;
        pthread_mutex_unlock(&p->lock);
        if (stop)
            return NULL;
        size_t n = 0;
        bool end = false;
        pgw_err err;
        int rc = p->fill(p->source, p->rows + b * PREFETCH_ROWS, PREFETCH_ROWS, &n, &end, &err);
        pthread_mutex_lock(&p->lock);
        p->count[b] = n;
        if (n > 0)
            p->filled++;
        if (rc != PGW_OK || end) {
            p->done = true;
            p->rc = rc;
            if (rc != PGW_OK)
                p->err = err;
        }
        pthread_cond_broadcast(&p->changed);
        bool finished = p->done;
        pthread_mutex_unlock(&p->lock);
        if (finished)
            return NULL;
    }
}

static int prefetch_start(prefetch *p, fill_fn fill, void *source, pgw_err *err)
{
    memset(p, 0, sizeof(*p));
    p->fill = fill;
    p->source = source;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->changed, NULL);
    p->initialized = true;
    p->rows = malloc(PREFETCH_BLOCKS * PREFETCH_ROWS * sizeof(*p->rows));
    if (p->rows == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory reconciling");
    p->started = pthread_create(&p->thread, NULL, prefetch_main, p) == 0;
    return p->started ? PGW_OK : pgw_err_set(err, PGW_ENOMEM, "cannot start a reader thread");
}

/* A pgw_recon_next over the prefetched blocks. */
static int prefetch_next(void *arg, pgw_recon_row *row, bool *end, pgw_err *err)
{
    prefetch *p = arg;
    pthread_mutex_lock(&p->lock);
    if (p->filled > 0 && p->pos == p->count[p->head]) { /* that block is used up */
        p->head = (p->head + 1) % PREFETCH_BLOCKS;
        p->filled--;
        p->pos = 0;
        pthread_cond_broadcast(&p->changed);
    }
    while (p->filled == 0 && !p->done)
        pthread_cond_wait(&p->changed, &p->lock);
    int rc = PGW_OK;
    *end = false;
    if (p->filled > 0)
        *row = p->rows[p->head * PREFETCH_ROWS + p->pos++];
    else if (p->rc != PGW_OK)
        rc = (*err = p->err, p->rc);
    else
        *end = true;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* Stops the producer (wherever it is) and frees what it used. */
static void prefetch_stop(prefetch *p)
{
    if (!p->initialized)
        return; /* never started: nothing to stop or free */
    if (p->started) {
        pthread_mutex_lock(&p->lock);
        p->stop = true;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->changed);
    free(p->rows);
}

/* Where exceptions go while the match runs. */
typedef struct sink {
    const pgw_recon_options *opts;
    FILE *tmp;
    size_t listed;
    FILE *warnings; /* the report's warnings (JSON), written as found */
    size_t warned;
    FILE *warn_lines;    /* and as lines, for opts->warn once the match is done (when set) */
    prefetch *statement; /* its reader stops on an out-of-order row: stop here too */
} sink;

/* The statement's reader found it out of order: the match is void. */
static bool statement_unsorted(prefetch *p)
{
    pthread_mutex_lock(&p->lock);
    bool unsorted = p->done && p->rc == PGW_EINVAL;
    pthread_mutex_unlock(&p->lock);
    return unsorted;
}

/* A ledger row of a refund: what it wrote off is shown with it. */
static bool is_refund(bool ledger, const pgw_recon_row *r)
{
    return ledger && strcmp(r->type, "refund") == 0;
}

/* A row's shop: the ledger's, the one a statement row names, else
 * --shop's (the statement is that shop's: a row naming another is a
 * malformed_row, and --repair posts the rest as its); "" for a whole
 * channel's row without shop_id. */
static const char *row_shop(const sink *k, const pgw_recon_row *r)
{
    return r->source[0] != '\0' || k->opts->filter.shop == NULL ? r->source : k->opts->filter.shop;
}

/* Whether a statement row's fields were read: a readable row's, and an
 * unpaired one's (malformed for its event_id at several shops, its points
 * in the summary's): the exception shows them. */
static bool fields_read(const pgw_recon_row *s)
{
    return s != NULL && (!s->malformed || s->fields_read);
}

/* An exception's times in the mall's zone: the statement row's (when it
 * was read) and the ledger's ("" for a side it has not). */
typedef struct row_times {
    char statement[PGW_RFC3339_MAX], ledger[PGW_RFC3339_MAX];
} row_times;

/* PGW_ERANGE for a time the zone cannot write, which no row should have:
 * a statement row's is malformed (statement.c), an event's is 2000..now.
 * A ledger written otherwise stops the report rather than show no time. */
static int write_times(const sink *k, const pgw_recon_row *s, const pgw_recon_row *l, row_times *t,
                       pgw_err *err)
{
    t->statement[0] = t->ledger[0] = '\0';
    const pgw_recon_row *bad = NULL;
    if (fields_read(s) &&
        pgw_format_rfc3339(s->occurred_at, k->opts->tz, t->statement, PGW_RFC3339_MAX) != PGW_OK)
        bad = s;
    else if (l != NULL &&
             pgw_format_rfc3339(l->occurred_at, k->opts->tz, t->ledger, PGW_RFC3339_MAX) != PGW_OK)
        bad = l;
    if (bad == NULL)
        return PGW_OK;
    return pgw_err_set(err, PGW_ERANGE,
                       "%s \"%.64s\": occurred_at %lld is outside the years %d..%d in the mall's "
                       "zone (%s)",
                       bad == s ? "the statement's row of" : "the ledger's event", bad->event_id,
                       (long long)bad->occurred_at, PGW_YEAR_MIN, PGW_YEAR_MAX, k->opts->tz->name);
}

static json_t *side_json(const sink *k, const pgw_recon_row *r, bool ledger, const char *when)
{
    if (r == NULL)
        return json_null();
    json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I}", "occurred_at", when, "type", r->type,
                          ledger ? "member_id" : "member", r->member, "amount_fen",
                          (json_int_t)r->amount_fen, "points", (json_int_t)r->points);
    if (o != NULL && row_shop(k, r)[0] != '\0') /* but a whole channel's row without one */
        json_object_set_new(o, "shop_id", json_string(row_shop(k, r)));
    if (o != NULL && !ledger)
        json_object_set_new(o, "line", json_integer((json_int_t)r->line));
    if (o != NULL && !ledger && r->original[0] != '\0')
        json_object_set_new(o, "original_event_id", json_string(r->original));
    const char *named = ledger ? NULL : pgw_recon_member_id(r);
    if (o != NULL && named != NULL) /* comparable with the ledger side's member_id */
        json_object_set_new(o, "member_id", json_string(named));
    if (o != NULL && is_refund(ledger, r)) /* null: its key's row does not say */
        json_object_set_new(o, "written_off",
                            r->written_off == PGW_RECON_UNKNOWN
                                ? json_null()
                                : json_integer((json_int_t)r->written_off));
    return o;
}

static int write_json(sink *k, pgw_recon_kind kind, const pgw_recon_row *s, const pgw_recon_row *l,
                      const row_times *t)
{
    const pgw_recon_row *any = s ? s : l;
    json_t *o;
    /* With the event it took, when it took one; a side it has not is null,
     * as API.md's exception has both keys (a client reads them). */
    if (kind == PGW_RECON_MALFORMED_ROW)
        o = json_pack("{s:s,s:s,s:I,s:s,s:o,s:o}", "event_id", s->event_id, "kind",
                      pgw_recon_kind_name(kind), "line", (json_int_t)s->line, "problem", s->problem,
                      "statement",
                      fields_read(s) ? side_json(k, s, false, t->statement) : json_null(), "ledger",
                      l != NULL ? side_json(k, l, true, t->ledger) : json_null());
    else
        o = json_pack("{s:s,s:s,s:o,s:o}", "event_id", any->event_id, "kind",
                      pgw_recon_kind_name(kind), "statement", side_json(k, s, false, t->statement),
                      "ledger", side_json(k, l, true, t->ledger));
    int rc = o != NULL && (k->listed == 0 || fputc(',', k->tmp) != EOF) &&
                     json_dumpf(o, k->tmp, JSON_COMPACT) == 0 && fputc('\n', k->tmp) != EOF
                 ? PGW_OK
                 : PGW_EIO;
    json_decref(o);
    return rc;
}

/* A CSV field, quoted when it must be. */
/* Whether a spreadsheet would take the cell for a formula: it starts with
 * = + - @ or a tab or CR, and is not a plain (negative) integer, nor "-"
 * alone (no shop, as statements write it: it runs as nothing). */
static bool formula_like(const char *text)
{
    if (text[0] == '\0' || strchr("=+-@\t\r", text[0]) == NULL)
        return false;
    if (text[0] != '-')
        return true;
    for (const char *c = text + 1; *c != '\0'; c++) {
        if (*c < '0' || *c > '9')
            return true;
    }
    return false;
}

/* One cell. Event ids, members and messages come from tills: a cell a
 * spreadsheet would run as a formula goes out as text, behind a quote
 * mark (OWASP's advice for CSV injection); numbers stay numbers. */
static void csv_field(FILE *f, const char *text, bool last)
{
    bool formula = formula_like(text);
    if (!formula && strpbrk(text, ",\"\r\n") == NULL) {
        fputs(text, f);
    } else {
        fputc('"', f);
        if (formula)
            fputc('\'', f);
        for (const char *c = text; *c; c++) {
            if (*c == '"')
                fputc('"', f);
            fputc(*c, f);
        }
        fputc('"', f);
    }
    fputc(last ? '\n' : ',', f);
}

/* Columns added go last: the columns before them are where they were
 * (original_event_id, ledger_written_off, statement_member_as_written). */
static const char CSV_HEADER[] =
    "kind,event_id,line,shop_id,statement_occurred_at,ledger_occurred_at,statement_type,"
    "ledger_type,statement_member,ledger_member,statement_amount_fen,ledger_amount_fen,"
    "statement_points,ledger_points,problem,original_event_id,ledger_written_off,"
    "statement_member_as_written\n";
#define CSV_COLUMNS 18

/* The statement's member as the ledger's is written, so that a
 * spreadsheet compares the two columns: a member id bare ("M1" for
 * "member_id:M1"); anything else (a phone, a card) as the row wrote it. */
static const char *csv_member(const pgw_recon_row *s)
{
    const char *named = pgw_recon_member_id(s);
    return named != NULL ? named : s->member;
}

static int write_csv(sink *k, pgw_recon_kind kind, const pgw_recon_row *s, const pgw_recon_row *l,
                     const row_times *t)
{
    char line[24] = "";
    char num[5][24] = {"", "", "", "", ""}; /* the last: a refund's written_off, when known */
    if (s != NULL) {
        snprintf(line, sizeof(line), "%zu", s->line);
        if (fields_read(s)) {
            snprintf(num[0], sizeof(num[0]), "%lld", (long long)s->amount_fen);
            snprintf(num[2], sizeof(num[2]), "%lld", (long long)s->points);
        }
    }
    if (l != NULL) {
        snprintf(num[1], sizeof(num[1]), "%lld", (long long)l->amount_fen);
        snprintf(num[3], sizeof(num[3]), "%lld", (long long)l->points);
        if (is_refund(true, l) && l->written_off != PGW_RECON_UNKNOWN)
            snprintf(num[4], sizeof(num[4]), "%lld", (long long)l->written_off);
    }
    const char *fields[] = {pgw_recon_kind_name(kind),
                            (s ? s : l)->event_id,
                            line,
                            row_shop(k, l ? l : s),
                            t->statement,
                            t->ledger,
                            fields_read(s) ? s->type : "",
                            l ? l->type : "",
                            fields_read(s) ? csv_member(s) : "",
                            l ? l->member : "",
                            num[0],
                            num[1],
                            num[2],
                            num[3],
                            s && s->malformed ? s->problem : "",
                            fields_read(s) ? s->original : "",
                            num[4],
                            fields_read(s) ? s->member : ""};
    size_t n = sizeof(fields) / sizeof(fields[0]);
    PGW_STATIC_ASSERT(sizeof(fields) / sizeof(fields[0]) == CSV_COLUMNS, "one field a column");
    for (size_t i = 0; i < n; i++)
        csv_field(k->tmp, fields[i], i + 1 == n);
    return ferror(k->tmp) ? PGW_EIO : PGW_OK;
}

static int emit(void *p, pgw_recon_kind kind, const pgw_recon_row *s, const pgw_recon_row *l,
                pgw_err *err)
{
    sink *k = p;
    if (k->statement != NULL && statement_unsorted(k->statement))
        return pgw_err_set(err, PGW_EINVAL, "%s", k->statement->err.msg);
    if (kind == PGW_RECON_MISSING_IN_LEDGER && k->opts->missing != NULL &&
        fwrite(s, sizeof(*s), 1, k->opts->missing) != 1)
        return pgw_err_set(err, PGW_EIO, "keeping a row to repair failed");
    if (k->opts->exceptions_max > 0 && k->listed >= k->opts->exceptions_max)
        return PGW_OK; /* counted in the summary, not listed */
    row_times t;
    int rc = write_times(k, s, l, &t, err);
    if (rc != PGW_OK)
        return rc;
    rc = k->opts->format == PGW_RECON_CSV ? write_csv(k, kind, s, l, &t)
                                          : write_json(k, kind, s, l, &t);
    k->listed++;
    return rc == PGW_OK ? PGW_OK : pgw_err_set(err, PGW_EIO, "writing an exception failed");
}

/* A pgw_recon_unpaired: the report's warning, and a line on opts->warn. */
static int warn_unpaired(void *p, const pgw_recon_row *s, const char (*shops)[PGW_ID_MAX + 1],
                         size_t listed, size_t total, pgw_err *err)
{
    sink *k = p;
    if (k->warn_lines != NULL &&
        fprintf(k->warn_lines, "pointsgw reconcile: warning: line %zu: %s\n", s->line, s->problem) <
            0)
        return pgw_err_set(err, PGW_EIO, "writing a warning failed");
    if (k->opts->exceptions_max > 0 && k->warned >= k->opts->exceptions_max)
        return PGW_OK; /* listed as the exceptions are, at most so many */
    json_t *names = json_array();
    for (size_t i = 0; names != NULL && i < listed; i++)
        json_array_append_new(names, json_string(shops[i]));
    json_t *o = names ? json_pack("{s:s,s:I,s:o,s:I,s:s}", "event_id", s->event_id, "line",
                                  (json_int_t)s->line, "shops", names, "shops_total",
                                  (json_int_t)total, "problem", s->problem)
                      : NULL;
    int rc = o != NULL && (k->warned == 0 || fputc(',', k->warnings) != EOF) &&
                     json_dumpf(o, k->warnings, JSON_COMPACT) == 0
                 ? PGW_OK
                 : PGW_EIO;
    json_decref(o);
    k->warned++;
    return rc == PGW_OK ? PGW_OK : pgw_err_set(err, PGW_EIO, "writing a warning failed");
}

/* The merge's look-ups (members, events outside the period): the store is
 * the ledger reader's too, on its own thread, so each use holds the lock
 * (one connection, one user). */
typedef struct members {
    pgw_store *store;
    pthread_mutex_t *store_lock;
    const pgw_event_filter *filter;
    bool by_shop; /* the statement names each row's shop */
} members;

/* A pgw_recon_find_event: the row's event by its key, at any time. The key
 * needs the shop: --shop's, or the row's own; a whole channel's statement
 * without shop_id cannot say which shop's event it is, and looks for none. */
static int find_event(void *p, const pgw_recon_row *s, pgw_recon_row *out, bool *found,
                      pgw_err *err)
{
    members *m = p;
    const char *shop = m->filter->shop ? m->filter->shop : m->by_shop ? s->source : NULL;
    *found = false;
    if (shop == NULL)
        return PGW_OK;
    pthread_mutex_lock(m->store_lock);
    int rc = pgw_store_read_event(m->store, m->filter->channel, shop, s->event_id, out, found, err);
    pthread_mutex_unlock(m->store_lock);
    return rc;
}

/* A pgw_recon_same_member: one member when both ids end at the same
 * survivor. A till may name a member by an id merged away before the
 * event (the log records the survivor), or by the survivor of a merge
 * made since (the log keeps the id of its day). */
static int same_member(void *p, const char *statement, const char *ledger, bool *same, pgw_err *err)
{
    members *m = p;
    char a[PGW_ID_MAX + 1], b[PGW_ID_MAX + 1];
    *same = false;
    if (strlen(statement) > PGW_ID_MAX || strlen(ledger) > PGW_ID_MAX)
        return PGW_OK; /* not a member id at all: another member */
    memcpy(a, statement, strlen(statement) + 1);
    memcpy(b, ledger, strlen(ledger) + 1);
    pthread_mutex_lock(m->store_lock);
    int rc = pgw_store_survivor(m->store, a, NULL, err);
    if (rc == PGW_OK)
        rc = pgw_store_survivor(m->store, b, NULL, err);
    pthread_mutex_unlock(m->store_lock);
    *same = rc == PGW_OK && strcmp(a, b) == 0;
    return rc;
}

/* One pass over both sides; the statement as it is, or sorted. */
static int match_once(pgw_store *store, pgw_statement *st, const pgw_recon_options *opts, sink *k,
                      pgw_recon_summary *sum, pgw_err *err)
{
    pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;
    channel_rows l = {
        .pages = {.store = store, .store_lock = &store_lock, .filter = &opts->filter}};
    statement_rows srows = {
        .st = st, .by_shop = pgw_statement_has_shop(st), .shop = opts->filter.shop};
    members who = {.store = store,
                   .store_lock = &store_lock,
                   .filter = &opts->filter,
                   .by_shop = srows.by_shop};
    prefetch *sides = calloc(2, sizeof(*sides));
    int rc = sides ? PGW_OK : pgw_err_set(err, PGW_ENOMEM, "out of memory reconciling");
    if (rc == PGW_OK)
        rc = prefetch_start(&sides[0], fill_statement, &srows, err);
    if (rc == PGW_OK) /* one shop comes in event_id order; a whole channel is sorted */
        rc = opts->filter.shop ? prefetch_start(&sides[1], fill_pages, &l.pages, err)
                               : prefetch_start(&sides[1], fill_channel, &l, err);
    pgw_recon_io io = {.statement = prefetch_next,
                       .statement_source = &sides[0],
                       .ledger = prefetch_next,
                       .ledger_source = &sides[1],
                       .emit = emit,
                       .sink = k,
                       .from = opts->filter.from,
                       .to = opts->filter.to,
                       .same_member = same_member,
                       .members = &who,
                       .find_event = find_event,
                       .events = &who,
                       .by_shop = srows.by_shop,
                       .several_shops = opts->filter.shop == NULL,
                       .unpaired = warn_unpaired};
    k->statement = rc == PGW_OK ? &sides[0] : NULL;
    if (rc == PGW_OK)
        rc = pgw_reconcile(&io, sum, err);
    k->statement = NULL;
    /* Both threads end before the statement or the store is touched again. */
    for (size_t i = 0; sides != NULL && i < 2; i++)
        prefetch_stop(&sides[i]);
    free(sides);
    pgw_rowsort_free(l.sorted);
    pthread_mutex_destroy(&store_lock);
    return rc;
}

/* Starts the exception and repair files over. */
static int reset(sink *k, const pgw_recon_options *opts, pgw_err *err)
{
    k->listed = k->warned = 0;
    rewind(k->tmp);
    rewind(k->warnings);
    if (k->warn_lines != NULL)
        rewind(k->warn_lines);
    if (ftruncate(fileno(k->tmp), 0) != 0 || ftruncate(fileno(k->warnings), 0) != 0 ||
        (k->warn_lines != NULL && ftruncate(fileno(k->warn_lines), 0) != 0) ||
        (opts->missing && (rewind(opts->missing), ftruncate(fileno(opts->missing), 0) != 0)))
        return pgw_err_set(err, PGW_EIO, "starting the reconciliation over failed");
    return PGW_OK;
}

/* The summary as API.md's JSON object (plus malformed_row). */
static int write_summary(const pgw_recon_summary *s, FILE *out)
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

/* The totals' breakdown: {"<kind>": {"statement_points", "ledger_points"}}
 * for every kind, beside the summary (whose fields are API.md's figures). */
static int write_points_by_kind(const pgw_recon_summary *s, FILE *out)
{
    json_t *o = json_object();
    for (size_t kind = 0; o != NULL && kind < PGW_RECON_KINDS; kind++)
        json_object_set_new(o, pgw_recon_kind_name((pgw_recon_kind)kind),
                            json_pack("{s:I,s:I}", "statement_points",
                                      (json_int_t)s->statement_points_of[kind], "ledger_points",
                                      (json_int_t)s->ledger_points_of[kind]));
    int rc = o != NULL && json_dumpf(o, out, JSON_COMPACT) == 0 ? PGW_OK : PGW_EIO;
    json_decref(o);
    return rc;
}

/* The summary's columns in a CSV report: its points. */
#define CSV_STATEMENT_POINTS 12
#define CSV_LEDGER_POINTS    13

/* One summary row of a CSV report: a count or a word, and points (when
 * `points`: the statement's and the ledger's, under their columns). */
static void csv_summary_row(FILE *out, const char *name, const char *text, const int64_t *points)
{
    const pgw_report_figure figures[] = {{CSV_STATEMENT_POINTS, points ? points[0] : 0},
                                         {CSV_LEDGER_POINTS, points ? points[1] : 0}};
    pgw_report_csv_summary(out, CSV_COLUMNS, name, text, figures, points ? 2 : 0);
}

/*
 * A CSV report's summary rows, after its exceptions, as the settlement's
 * CSV has its totals (report.h): what the JSON report says beside its
 * exceptions, so that a clean match is not a header alone and the totals
 * travel with the file. The rows and points of each kind, then the
 * totals, how many exceptions are listed, the period ("" for a --to not
 * given).
 */
static int write_csv_summary(const sink *k, const pgw_recon_summary *s, bool truncated, FILE *out)
{
    char text[32];
    snprintf(text, sizeof(text), "%lld", (long long)s->statement_rows);
    csv_summary_row(out, "statement_rows", text, NULL);
    snprintf(text, sizeof(text), "%lld", (long long)s->ledger_rows);
    csv_summary_row(out, "ledger_rows", text, NULL);
    for (size_t kind = 0; kind < PGW_RECON_KINDS; kind++) {
        char name[48];
        snprintf(name, sizeof(name), "%s_rows", pgw_recon_kind_name((pgw_recon_kind)kind));
        snprintf(text, sizeof(text), "%lld", (long long)s->count[kind]);
        const int64_t points[2] = {s->statement_points_of[kind], s->ledger_points_of[kind]};
        csv_summary_row(out, name, text, points);
    }
    const int64_t totals[2] = {s->statement_points, s->ledger_points};
    csv_summary_row(out, "total", totals[0] == totals[1] ? "points_equal" : "points_differ",
                    totals);
    snprintf(text, sizeof(text), "%zu", k->listed);
    csv_summary_row(out, "exceptions_listed", text, NULL);
    csv_summary_row(out, "truncated", truncated ? "true" : "false", NULL);
    const int64_t bounds[2] = {k->opts->filter.from, k->opts->filter.to};
    const char *names[2] = {"from", "to"};
    for (size_t i = 0; i < 2; i++) {
        /* No --to is the end of time, which no calendar writes: "". */
        char when[PGW_RFC3339_MAX] = "";
        if (bounds[i] != INT64_MAX &&
            pgw_format_rfc3339_or_utc(bounds[i], k->opts->tz, when) != PGW_OK)
            when[0] = '\0';
        csv_summary_row(out, names[i], when, NULL);
    }
    return ferror(out) ? PGW_EIO : PGW_OK;
}

/* The statement's columns it read past, as a JSON array (never NULL on success). */
static int write_ignored(const pgw_statement *st, FILE *out)
{
    json_t *names = json_array();
    const char *name;
    for (size_t i = 0; names != NULL && (name = pgw_statement_ignored(st, i)) != NULL; i++) {
        if (json_array_append_new(names, json_string(name)) != 0) {
            json_decref(names);
            names = NULL;
        }
    }
    int rc = names != NULL && json_dumpf(names, out, JSON_COMPACT) == 0 ? PGW_OK : PGW_EIO;
    json_decref(names);
    return rc;
}

/* Copies a temporary file from its start to `out`. */
static int copy_file(FILE *from, FILE *out)
{
    char buf[65536];
    size_t n;
    int rc = PGW_OK;
    rewind(from);
    while (rc == PGW_OK && (n = fread(buf, 1, sizeof(buf), from)) > 0)
        rc = fwrite(buf, 1, n, out) == n ? PGW_OK : PGW_EIO;
    return rc == PGW_OK && !ferror(from) ? PGW_OK : PGW_EIO;
}

int pgw_recon_read_scope(pgw_store *store, const pgw_event_filter *filter, pgw_recon_scope *scope,
                         pgw_err *err)
{
    *scope = (pgw_recon_scope){false, false};
    int rc =
        pgw_store_channel_has_keys(store, filter->channel, "", &scope->has_channel_events, err);
    if (rc != PGW_OK || !scope->has_channel_events || filter->shop == NULL) {
        scope->has_shop_events = scope->has_channel_events;
        return rc;
    }
    char source[PGW_ID_MAX + 2];                    /* "S001:": the keys of the shop's events */
    PGW_ASSERT(strlen(filter->shop) <= PGW_ID_MAX); /* pgw_store_check_event_filter */
    snprintf(source, sizeof(source), "%s:", filter->shop);
    return pgw_store_channel_has_keys(store, filter->channel, source, &scope->has_shop_events, err);
}

/* The scope's notices as a JSON array (an empty one when all is well). */
static int write_notices(const pgw_event_filter *f, const pgw_recon_scope *scope, FILE *out)
{
    char message[2 * PGW_ID_MAX + 96];
    json_t *notices = json_array(), *o = NULL;
    if (!scope->has_channel_events) {
        snprintf(message, sizeof(message), "the log has no event on channel %s (misspelt?)",
                 f->channel);
        o = json_pack("{s:s,s:s,s:s}", "kind", "no_events_on_channel", "channel", f->channel,
                      "message", message);
    } else if (!scope->has_shop_events) {
        snprintf(message, sizeof(message),
                 "the log has no event of shop %s on channel %s (misspelt?)", f->shop, f->channel);
        o = json_pack("{s:s,s:s,s:s,s:s}", "kind", "no_events_of_shop", "channel", f->channel,
                      "shop", f->shop, "message", message);
    }
    bool due = !scope->has_channel_events || !scope->has_shop_events;
    /* json_array_append_new takes o over, also when it fails (no array) */
    int rc = (!due || json_array_append_new(notices, o) == 0) && notices != NULL &&
                     json_dumpf(notices, out, JSON_COMPACT) == 0
                 ? PGW_OK
                 : PGW_EIO;
    json_decref(notices);
    return rc;
}

/* A CSV report cut at exceptions_max (over HTTP) without its summary rows
 * was its first exceptions alone, and passed for the whole: it ends with
 * the two summary rows that say it is not. */
static int write_csv_cut(const sink *k, FILE *out)
{
    char text[32];
    snprintf(text, sizeof(text), "%zu", k->listed);
    csv_summary_row(out, "exceptions_listed", text, NULL);
    csv_summary_row(out, "truncated", "true", NULL);
    return ferror(out) ? PGW_EIO : PGW_OK;
}

/* The report: summary, warnings, notices, then the exceptions kept in `tmp`. */
static int write_report(const sink *k, const pgw_statement *st, const pgw_recon_summary *sum,
                        const pgw_recon_scope *scope, FILE *out, pgw_err *err)
{
    bool json = k->opts->format == PGW_RECON_JSON;
    bool truncated = pgw_recon_exceptions(sum) > (int64_t)k->listed;
    int rc = PGW_OK;
    if (json) {
        fputs("{\"summary\":", out);
        rc = write_summary(sum, out);
        fputs(",\"points_by_kind\":", out);
        if (rc == PGW_OK)
            rc = write_points_by_kind(sum, out);
        fputs(",\"ignored_columns\":", out);
        if (rc == PGW_OK)
            rc = write_ignored(st, out);
        fputs(",\"warnings\":[", out);
        if (rc == PGW_OK)
            rc = copy_file(k->warnings, out);
        fputs("],\"notices\":", out);
        if (rc == PGW_OK)
            rc = write_notices(&k->opts->filter, scope, out);
        fprintf(out, ",\"exceptions_listed\":%zu,\"truncated\":%s,\"exceptions\":[\n", k->listed,
                truncated ? "true" : "false");
    } else {
        fputs(CSV_HEADER, out);
    }
    if (rc == PGW_OK)
        rc = copy_file(k->tmp, out);
    if (json)
        fputs("]}\n", out);
    else if (rc == PGW_OK && k->opts->csv_summary)
        rc = write_csv_summary(k, sum, truncated, out);
    else if (rc == PGW_OK && truncated)
        rc = write_csv_cut(k, out);
    if (rc != PGW_OK || fflush(out) != 0 || ferror(out))
        return pgw_err_set(err, PGW_EIO, "writing the report failed");
    return PGW_OK;
}

static void close_sink(sink *k)
{
    FILE *files[] = {k->tmp, k->warnings, k->warn_lines};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (files[i] != NULL)
            fclose(files[i]);
}

int pgw_recon_run(pgw_store *store, pgw_statement *st, const pgw_recon_options *opts, FILE *out,
                  pgw_recon_summary *sum, pgw_err *err)
{
    sink k = {.opts = opts,
              .tmp = tmpfile(),
              .warnings = tmpfile(),
              .warn_lines = opts->warn ? tmpfile() : NULL};
    if (k.tmp == NULL || k.warnings == NULL || (opts->warn && k.warn_lines == NULL)) {
        close_sink(&k);
        return pgw_err_set(err, PGW_EIO, "no temporary file for the exceptions");
    }
    /* A row's local time (no offset) is the mall's, as the report's are. */
    pgw_statement_set_time_zone(st, opts->tz);
    pgw_recon_scope scope;
    int rc = pgw_recon_read_scope(store, &opts->filter, &scope, err);
    if (rc == PGW_OK)
        rc = match_once(store, st, opts, &k, sum, err);
    if (rc == PGW_EINVAL) {
        /* Not in event_id order (the only EINVAL of the matcher): sort the
         * statement on disk and match again from the start. */
        rc = reset(&k, opts, err);
        if (rc == PGW_OK)
            rc = pgw_statement_sort(st, err);
        if (rc == PGW_OK)
            rc = match_once(store, st, opts, &k, sum, err);
        /* An EINVAL now is not the order: the file changed between the passes. */
    }
    if (rc == PGW_OK)
        rc = write_report(&k, st, sum, &scope, out, err);
    /* Said once the match is done: a first pass over an unsorted
     * statement is started over, its findings dropped. */
    if (rc == PGW_OK && k.warn_lines != NULL &&
        (copy_file(k.warn_lines, opts->warn) != PGW_OK || fflush(opts->warn) != 0))
        rc = pgw_err_set(err, PGW_EIO, "writing the warnings failed");
    close_sink(&k);
    return rc;
}

bool pgw_recon_read_missing(FILE *missing, pgw_recon_row *row)
{
    return fread(row, sizeof(*row), 1, missing) == 1;
}
