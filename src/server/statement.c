/*
 * statement.c - see statement.h.
 */
#include "statement.h"

#include "core/assertions.h"
#include "core/civil.h"
#include "core/rules.h"
#include "util/csv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { COL_EVENT_ID, COL_OCCURRED_AT, COL_TYPE, COL_MEMBER, COL_AMOUNT, COL_POINTS, N_COLS };
static const char *const COLUMNS[N_COLS] = {
    [COL_EVENT_ID] = "event_id", [COL_OCCURRED_AT] = "occurred_at", [COL_TYPE] = "type",
    [COL_MEMBER] = "member",     [COL_AMOUNT] = "amount_fen",       [COL_POINTS] = "points",
};

/*
 * Sorting: rows are packed (a fixed head, then their strings) into a 32 MiB
 * arena, sorted there by (event_id, line) and written out as a sorted run
 * to a temporary file whenever the arena fills; the runs are then merged
 * through a heap, a packed row at a time from each. A statement that fits
 * in one arena never touches the disk. Memory: the arena, its index, and a
 * read buffer per run.
 */
#define SORT_ARENA    (32u << 20)
#define SORT_RUNS_MAX 1024 /* 32 GiB of packed rows */

typedef struct packed_head {
    int64_t occurred_at, amount_fen, points;
    uint64_t line;
    uint16_t problem_len;
    uint8_t id_len, type_len, member_len, malformed;
} packed_head;

/* A run being merged: its file and the row at its head. */
typedef struct run {
    FILE *f;
    pgw_recon_row head;
} run;

typedef struct sorter {
    char *arena;
    size_t used;
    const char **index; /* packed rows of the arena, in order once sorted */
    size_t n, next;
    bool in_memory; /* one run, still in the arena */
    run *runs;      /* SORT_RUNS_MAX */
    size_t n_runs;
    size_t heap[SORT_RUNS_MAX]; /* run numbers, smallest head first */
    size_t n_heap;
} sorter;

struct pgw_statement {
    pgw_csv_file *file; /* a file, or... */
    const char *text;   /* ...a borrowed text */
    size_t len;
    pgw_csv csv;
    int col[N_COLS];
    pgw_csv_row row;
    sorter *sorted;     /* once sorted: rows come from here */
    size_t arena_bytes; /* SORT_ARENA; smaller in tests, to make many runs */
};

static int read_csv(pgw_statement *st, bool *done, pgw_err *err)
{
    return st->file ? pgw_csv_file_next(st->file, &st->row, done, err)
                    : pgw_csv_next(&st->csv, &st->row, done, err);
}

/* The header: every column named, each once. */
static int read_header(pgw_statement *st, pgw_err *err)
{
    bool done = false;
    int rc = read_csv(st, &done, err);
    if (rc == PGW_OK && done)
        return pgw_err_set(err, PGW_EINVAL, "the statement is empty: no header row");
    if (rc == PGW_OK)
        rc = pgw_csv_columns(&st->row, COLUMNS, N_COLS, st->col, err);
    for (size_t c = 0; rc == PGW_OK && c < N_COLS; c++) {
        if (st->col[c] < 0)
            rc = pgw_err_set(err, PGW_EINVAL, "line %zu: column %s is missing", st->row.line,
                             COLUMNS[c]);
    }
    return rc;
}

static int opened(pgw_statement *st, pgw_statement **out, pgw_err *err)
{
    st->arena_bytes = SORT_ARENA;
    int rc = read_header(st, err);
    if (rc != PGW_OK) {
        pgw_statement_free(st);
        return rc;
    }
    *out = st;
    return PGW_OK;
}

int pgw_statement_open_file(const char *path, pgw_statement **out, pgw_err *err)
{
    *out = NULL;
    pgw_statement *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory reading %s", path);
    int rc = pgw_csv_file_open(path, &st->file, err);
    if (rc != PGW_OK) {
        free(st);
        return rc;
    }
    return opened(st, out, err);
}

int pgw_statement_open_text(const char *text, size_t len, pgw_statement **out, pgw_err *err)
{
    *out = NULL;
    pgw_statement *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory reading a statement");
    st->text = text;
    st->len = len;
    pgw_csv_init(&st->csv, text, len);
    return opened(st, out, err);
}

/* A whole number in [lo, hi]; "" is `empty` when allowed (empty_ok). */
static bool whole_number(const char *text, int64_t lo, int64_t hi, bool empty_ok, int64_t *out)
{
    if (text[0] == '\0') {
        *out = 0;
        return empty_ok;
    }
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

__attribute__((format(printf, 2, 3))) static bool malformed(pgw_recon_row *r, const char *fmt, ...)
{
    r->malformed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->problem, sizeof(r->problem), fmt, ap);
    va_end(ap);
    return false;
}

/* Copies a non-empty field that fits (the hot path: no printf). */
static bool copy_field(const char *text, char *out, size_t cap)
{
    size_t len = strnlen(text, cap);
    if (len == 0 || len == cap)
        return false;
    memcpy(out, text, len + 1);
    return true;
}

/* One CSV row's fields checked into *r. False (and r->problem) when it is not a row. */
static bool parse_row(const pgw_statement *st, pgw_recon_row *r)
{
    const pgw_csv_row *row = &st->row;
    const char *id = pgw_csv_cell(row, st->col, COL_EVENT_ID);
    const char *at = pgw_csv_cell(row, st->col, COL_OCCURRED_AT);
    const char *type = pgw_csv_cell(row, st->col, COL_TYPE);
    const char *member = pgw_csv_cell(row, st->col, COL_MEMBER);
    if (!copy_field(id, r->event_id, sizeof(r->event_id)))
        return malformed(r, "event_id must be 1..%d bytes", PGW_EVENT_ID_MAX);
    int64_t secs = 0;
    pgw_event_type t;
    if (!whole_number(at, 0, INT64_C(253402300799), false, &secs) &&
        pgw_parse_rfc3339(at, &secs, NULL) != PGW_OK)
        return malformed(r, "occurred_at \"%.40s\" is neither RFC 3339 nor unix seconds", at);
    r->occurred_at = secs;
    if (pgw_event_type_parse(type, &t) != PGW_OK)
        return malformed(r, "type \"%.40s\" is not an event type", type);
    copy_field(pgw_event_type_name(t), r->type, sizeof(r->type));
    if (!copy_field(member, r->member, sizeof(r->member)))
        return malformed(r, "member must be 1..%d bytes", PGW_RECON_MEMBER_MAX);
    if (!whole_number(pgw_csv_cell(row, st->col, COL_AMOUNT), 0, PGW_AMOUNT_FEN_MAX, true,
                      &r->amount_fen))
        return malformed(r, "amount_fen \"%.32s\" is not a whole number of fen in range",
                         pgw_csv_cell(row, st->col, COL_AMOUNT));
    if (!whole_number(pgw_csv_cell(row, st->col, COL_POINTS), -PGW_POINTS_MAX, PGW_POINTS_MAX,
                      false, &r->points))
        return malformed(r, "points \"%.32s\" is not a whole number in range",
                         pgw_csv_cell(row, st->col, COL_POINTS));
    return true;
}

static int next_from_csv(pgw_statement *st, pgw_recon_row *r, bool *end, pgw_err *err)
{
    pgw_err row_err;
    int rc = read_csv(st, end, &row_err);
    memset(r, 0, sizeof(*r));
    r->line = st->row.line;
    if (rc == PGW_EINVAL) { /* a malformed CSV line: a row of its own kind */
        r->malformed = true;
        snprintf(r->problem, sizeof(r->problem), "%.150s", row_err.msg);
        return PGW_OK;
    }
    if (rc != PGW_OK) {
        *err = row_err;
        return rc;
    }
    if (!*end)
        parse_row(st, r);
    return PGW_OK;
}

static size_t packed_len(const packed_head *h)
{
    return sizeof(*h) + h->id_len + h->type_len + h->member_len + h->problem_len;
}

/* Packs a row (its strings without their NULs) into out; returns its length. */
static size_t pack(const pgw_recon_row *r, char *out)
{
    packed_head h = {r->occurred_at,
                     r->amount_fen,
                     r->points,
                     r->line,
                     (uint16_t)strlen(r->problem),
                     (uint8_t)strlen(r->event_id),
                     (uint8_t)strlen(r->type),
                     (uint8_t)strlen(r->member),
                     r->malformed};
    PGW_STATIC_ASSERT(PGW_EVENT_ID_MAX <= 255 && PGW_RECON_MEMBER_MAX <= 255, "lengths fit a byte");
    char *p = out + sizeof(h);
    memcpy(out, &h, sizeof(h));
    memcpy(p, r->event_id, h.id_len);
    memcpy(p += h.id_len, r->type, h.type_len);
    memcpy(p += h.type_len, r->member, h.member_len);
    memcpy(p + h.member_len, r->problem, h.problem_len);
    return packed_len(&h);
}

static void unpack(const char *in, pgw_recon_row *r)
{
    packed_head h;
    memcpy(&h, in, sizeof(h));
    const char *p = in + sizeof(h);
    r->occurred_at = h.occurred_at;
    r->amount_fen = h.amount_fen;
    r->points = h.points;
    r->line = (size_t)h.line;
    r->malformed = h.malformed != 0;
    memcpy(r->event_id, p, h.id_len);
    r->event_id[h.id_len] = '\0';
    memcpy(r->type, p += h.id_len, h.type_len);
    r->type[h.type_len] = '\0';
    memcpy(r->member, p += h.type_len, h.member_len);
    r->member[h.member_len] = '\0';
    memcpy(r->problem, p + h.member_len, h.problem_len);
    r->problem[h.problem_len] = '\0';
    r->source[0] = '\0';
}

/* (event_id, line) order, event_id as strcmp orders it. */
static int compare_keys(const char *a_id, size_t a_len, uint64_t a_line, const char *b_id,
                        size_t b_len, uint64_t b_line)
{
    int c = memcmp(a_id, b_id, a_len < b_len ? a_len : b_len);
    if (c == 0)
        c = a_len < b_len ? -1 : a_len > b_len;
    return c != 0 ? c : (a_line > b_line) - (a_line < b_line);
}

static int compare_packed(const void *a, const void *b)
{
    const char *pa = *(const char *const *)a, *pb = *(const char *const *)b;
    packed_head ha, hb;
    memcpy(&ha, pa, sizeof(ha));
    memcpy(&hb, pb, sizeof(hb));
    return compare_keys(pa + sizeof(ha), ha.id_len, ha.line, pb + sizeof(hb), hb.id_len, hb.line);
}

static int compare_rows(const pgw_recon_row *a, const pgw_recon_row *b)
{
    return compare_keys(a->event_id, strlen(a->event_id), a->line, b->event_id, strlen(b->event_id),
                        b->line);
}

/* Reads a run's next packed row into its head; false at its end. */
static bool run_advance(run *r, char *buf)
{
    packed_head h;
    if (fread(&h, sizeof(h), 1, r->f) != 1)
        return false;
    memcpy(buf, &h, sizeof(h));
    size_t rest = packed_len(&h) - sizeof(h);
    if (fread(buf + sizeof(h), 1, rest, r->f) != rest)
        return false;
    unpack(buf, &r->head);
    return true;
}

/* Min-heap of runs by their head rows. */
static bool heap_less(const sorter *s, size_t a, size_t b)
{
    return compare_rows(&s->runs[s->heap[a]].head, &s->runs[s->heap[b]].head) < 0;
}

static void heap_down(sorter *s, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->n_heap && heap_less(s, l, m))
            m = l;
        if (r < s->n_heap && heap_less(s, r, m))
            m = r;
        if (m == i)
            return;
        size_t t = s->heap[i];
        s->heap[i] = s->heap[m];
        s->heap[m] = t;
        i = m;
    }
}

static int next_from_sorted(pgw_statement *st, pgw_recon_row *r, bool *end, pgw_err *err)
{
    sorter *s = st->sorted;
    (void)err;
    if (s->in_memory) {
        *end = s->next == s->n;
        if (!*end)
            unpack(s->index[s->next++], r);
        return PGW_OK;
    }
    *end = s->n_heap == 0;
    if (*end)
        return PGW_OK;
    run *top = &s->runs[s->heap[0]];
    *r = top->head;
    if (!run_advance(top, s->arena)) { /* that run is done */
        if (ferror(top->f))
            return pgw_err_set(err, PGW_EIO, "reading a sorted run failed");
        s->heap[0] = s->heap[--s->n_heap];
    }
    heap_down(s, 0);
    return PGW_OK;
}
int pgw_statement_next(void *p, pgw_recon_row *row, bool *end, pgw_err *err)
{
    pgw_statement *st = p;
    return st->sorted ? next_from_sorted(st, row, end, err) : next_from_csv(st, row, end, err);
}

static void sorter_free(sorter *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_runs; i++)
        fclose(s->runs[i].f);
    free(s->runs);
    free(s->index);
    free(s->arena);
    free(s);
}

int pgw_statement_rewind(pgw_statement *st, pgw_err *err)
{
    if (st->sorted) { /* sorted again from the file: the runs were read */
        sorter_free(st->sorted);
        st->sorted = NULL;
    }
    if (st->file == NULL) {
        pgw_csv_init(&st->csv, st->text, st->len);
    } else {
        int rc = pgw_csv_file_rewind(st->file, err);
        if (rc != PGW_OK)
            return rc;
    }
    return read_header(st, err);
}

/* Sorts the arena's rows and, unless it is the only run, writes them out. */
static int flush_run(sorter *s, bool last, pgw_err *err)
{
    qsort(s->index, s->n, sizeof(*s->index), compare_packed);
    if (last && s->n_runs == 0) {
        s->in_memory = true;
        return PGW_OK;
    }
    if (s->n_runs == SORT_RUNS_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE,
                           "the statement is too large to sort (over %u runs of %u MiB); sort "
                           "it by event_id first",
                           SORT_RUNS_MAX, SORT_ARENA >> 20);
    FILE *f = tmpfile();
    for (size_t i = 0; f != NULL && i < s->n; i++) {
        packed_head h;
        memcpy(&h, s->index[i], sizeof(h));
        if (fwrite(s->index[i], 1, packed_len(&h), f) != packed_len(&h))
            break;
    }
    if (f == NULL || fflush(f) != 0 || ferror(f)) {
        if (f != NULL)
            fclose(f);
        return pgw_err_set(err, PGW_EIO, "writing a sorted run to a temporary file failed");
    }
    rewind(f);
    s->runs[s->n_runs++].f = f;
    s->used = s->n = 0;
    return PGW_OK;
}

/* Reads every row (file order) into sorted runs. */
static int make_runs(pgw_statement *st, sorter *s, pgw_err *err)
{
    size_t max_rows = st->arena_bytes / sizeof(packed_head);
    int rc = pgw_statement_rewind(st, err);
    pgw_recon_row r;
    bool end = false;
    char packed[sizeof(packed_head) + sizeof(r)];
    while (rc == PGW_OK && (rc = next_from_csv(st, &r, &end, err)) == PGW_OK && !end) {
        size_t len = pack(&r, packed);
        if (s->used + len > st->arena_bytes || s->n == max_rows)
            rc = flush_run(s, false, err);
        if (rc == PGW_OK) {
            memcpy(s->arena + s->used, packed, len);
            s->index[s->n++] = s->arena + s->used;
            s->used += len;
        }
    }
    return rc == PGW_OK ? flush_run(s, true, err) : rc;
}

int pgw_statement_sort(pgw_statement *st, pgw_err *err)
{
    int rc = pgw_statement_rewind(st, err); /* drops an earlier sort */
    sorter *s = calloc(1, sizeof(*s));
    if (s != NULL) {
        s->arena = malloc(st->arena_bytes);
        s->index = malloc(st->arena_bytes / sizeof(packed_head) * sizeof(*s->index));
        s->runs = calloc(SORT_RUNS_MAX, sizeof(*s->runs));
    }
    if (rc == PGW_OK && (s == NULL || !s->arena || !s->index || !s->runs))
        rc = pgw_err_set(err, PGW_ENOMEM, "out of memory sorting the statement");
    if (rc == PGW_OK)
        rc = make_runs(st, s, err);
    for (size_t i = 0; rc == PGW_OK && i < s->n_runs; i++) { /* the merge's first heads */
        if (run_advance(&s->runs[i], s->arena))
            s->heap[s->n_heap++] = i;
        else if (ferror(s->runs[i].f))
            rc = pgw_err_set(err, PGW_EIO, "reading a sorted run failed");
    }
    for (size_t i = s ? s->n_heap / 2 : 0; rc == PGW_OK && i-- > 0;)
        heap_down(s, i);
    if (rc != PGW_OK) {
        sorter_free(s);
        return rc;
    }
    st->sorted = s;
    return PGW_OK;
}

void pgw_statement_free(pgw_statement *st)
{
    if (st == NULL)
        return;
    sorter_free(st->sorted);
    pgw_csv_file_close(st->file);
    free(st);
}

void pgw_statement__set_sort_arena_for_test(pgw_statement *st, size_t bytes)
{
    PGW_ASSERT(bytes >= 4096 && bytes <= SORT_ARENA);
    st->arena_bytes = bytes;
}
