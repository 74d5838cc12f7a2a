/*
 * rowsort.c - see rowsort.h.
 */
#include "rowsort.h"

#include "core/assertions.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct packed_head {
    int64_t occurred_at, amount_fen, points, written_off;
    uint64_t line;
    uint16_t problem_len;
    uint8_t id_len, type_len, member_len, source_len, original_len;
    uint8_t flags; /* MALFORMED, KEY_READ */
} packed_head;

enum { MALFORMED = 1, KEY_READ = 2 }; /* a packed row's flags */

/* A run being merged: its file and the row at its head. */
typedef struct run {
    FILE *f;
    pgw_recon_row head;
} run;

struct pgw_rowsort {
    size_t arena_bytes;
    char *arena;
    size_t used;
    const char **index; /* packed rows of the arena, in order once sorted */
    size_t n, next, max_rows;
    bool finished;
    bool in_memory; /* one run, still in the arena */
    run *runs;      /* PGW_ROWSORT_RUNS_MAX */
    size_t n_runs;
    size_t heap[PGW_ROWSORT_RUNS_MAX]; /* run numbers, smallest head first */
    size_t n_heap;
};

static size_t packed_len(const packed_head *h)
{
    return sizeof(*h) + h->id_len + h->type_len + h->member_len + h->source_len + h->original_len +
           h->problem_len;
}

/* Packs a row (its strings without their NULs) into out; returns its length. */
static size_t pack(const pgw_recon_row *r, char *out)
{
    PGW_STATIC_ASSERT(PGW_EVENT_ID_MAX <= 255 && PGW_RECON_MEMBER_MAX <= 255 && PGW_ID_MAX <= 255,
                      "lengths fit a byte");
    /* key_read only of a malformed row: the log's rows leave it unset */
    uint8_t flags = r->malformed ? MALFORMED | (r->key_read ? KEY_READ : 0) : 0;
    packed_head h = {r->occurred_at,
                     r->amount_fen,
                     r->points,
                     r->written_off,
                     r->line,
                     (uint16_t)strlen(r->problem),
                     (uint8_t)strlen(r->event_id),
                     (uint8_t)strlen(r->type),
                     (uint8_t)strlen(r->member),
                     (uint8_t)strlen(r->source),
                     (uint8_t)strlen(r->original),
                     flags};
    char *p = out + sizeof(h);
    memcpy(out, &h, sizeof(h));
    memcpy(p, r->event_id, h.id_len);
    memcpy(p += h.id_len, r->source, h.source_len);
    memcpy(p += h.source_len, r->type, h.type_len);
    memcpy(p += h.type_len, r->member, h.member_len);
    memcpy(p += h.member_len, r->original, h.original_len);
    memcpy(p + h.original_len, r->problem, h.problem_len);
    return packed_len(&h);
}

static const char *unpack_text(const char *p, size_t len, char *out)
{
    memcpy(out, p, len);
    out[len] = '\0';
    return p + len;
}

static void unpack(const char *in, pgw_recon_row *r)
{
    packed_head h;
    memcpy(&h, in, sizeof(h));
    r->occurred_at = h.occurred_at;
    r->amount_fen = h.amount_fen;
    r->points = h.points;
    r->written_off = h.written_off;
    r->line = (size_t)h.line;
    r->malformed = (h.flags & MALFORMED) != 0;
    r->key_read = (h.flags & KEY_READ) != 0;
    r->fields_read = false; /* the merge's alone, after the sort */
    const char *p = unpack_text(in + sizeof(h), h.id_len, r->event_id);
    p = unpack_text(p, h.source_len, r->source);
    p = unpack_text(p, h.type_len, r->type);
    p = unpack_text(p, h.member_len, r->member);
    p = unpack_text(p, h.original_len, r->original);
    unpack_text(p, h.problem_len, r->problem);
}

static int compare_text(const char *a, size_t a_len, const char *b, size_t b_len)
{
    int c = memcmp(a, b, a_len < b_len ? a_len : b_len); /* as strcmp orders them */
    return c != 0 ? c : (a_len > b_len) - (a_len < b_len);
}

/* (event_id, source, line) of two packed rows: a statement's rows keep
 * their file order within a key, its source "" unless it names shops. */
static int compare_packed(const void *a, const void *b)
{
    const char *pa = *(const char *const *)a, *pb = *(const char *const *)b;
    packed_head ha, hb;
    memcpy(&ha, pa, sizeof(ha));
    memcpy(&hb, pb, sizeof(hb));
    pa += sizeof(ha);
    pb += sizeof(hb);
    int c = compare_text(pa, ha.id_len, pb, hb.id_len);
    if (c == 0)
        c = compare_text(pa + ha.id_len, ha.source_len, pb + hb.id_len, hb.source_len);
    return c != 0 ? c : (ha.line > hb.line) - (ha.line < hb.line);
}

static int compare_rows(const pgw_recon_row *a, const pgw_recon_row *b)
{
    int c = pgw_recon_key_cmp(a, b, true); /* a row without a shop has source "" */
    return c != 0 ? c : (a->line > b->line) - (a->line < b->line);
}

int pgw_rowsort_new(size_t arena_bytes, pgw_rowsort **out, pgw_err *err)
{
    PGW_ASSERT(arena_bytes >= PGW_ROWSORT_ARENA_MIN && arena_bytes <= PGW_ROWSORT_ARENA);
    *out = NULL;
    pgw_rowsort *s = calloc(1, sizeof(*s));
    if (s != NULL) {
        s->arena_bytes = arena_bytes;
        s->max_rows = arena_bytes / sizeof(packed_head);
        s->arena = malloc(arena_bytes);
        s->index = malloc(s->max_rows * sizeof(*s->index));
        s->runs = calloc(PGW_ROWSORT_RUNS_MAX, sizeof(*s->runs));
    }
    if (s == NULL || !s->arena || !s->index || !s->runs) {
        pgw_rowsort_free(s);
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for sorting");
    }
    *out = s;
    return PGW_OK;
}

void pgw_rowsort_free(pgw_rowsort *s)
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

/* Sorts the arena's rows and, unless it is the only run, writes them out. */
static int flush_run(pgw_rowsort *s, bool last, pgw_err *err)
{
    qsort(s->index, s->n, sizeof(*s->index), compare_packed);
    if (last && s->n_runs == 0) {
        s->in_memory = true;
        return PGW_OK;
    }
    if (s->n_runs == PGW_ROWSORT_RUNS_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE,
                           "too many rows to sort (over %d runs of %zu KiB); sort them by "
                           "event_id first",
                           PGW_ROWSORT_RUNS_MAX, s->arena_bytes >> 10);
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

int pgw_rowsort_add(pgw_rowsort *s, const pgw_recon_row *r, pgw_err *err)
{
    PGW_ASSERT(!s->finished);
    char packed[sizeof(packed_head) + sizeof(*r)];
    size_t len = pack(r, packed);
    int rc =
        s->used + len > s->arena_bytes || s->n == s->max_rows ? flush_run(s, false, err) : PGW_OK;
    if (rc != PGW_OK)
        return rc;
    memcpy(s->arena + s->used, packed, len);
    s->index[s->n++] = s->arena + s->used;
    s->used += len;
    return PGW_OK;
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
static bool heap_less(const pgw_rowsort *s, size_t a, size_t b)
{
    return compare_rows(&s->runs[s->heap[a]].head, &s->runs[s->heap[b]].head) < 0;
}

static void heap_down(pgw_rowsort *s, size_t i)
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

int pgw_rowsort_finish(pgw_rowsort *s, pgw_err *err)
{
    PGW_ASSERT(!s->finished);
    s->finished = true;
    int rc = flush_run(s, true, err);
    for (size_t i = 0; rc == PGW_OK && !s->in_memory && i < s->n_runs; i++) {
        if (run_advance(&s->runs[i], s->arena)) /* the merge's first heads */
            s->heap[s->n_heap++] = i;
        else if (ferror(s->runs[i].f))
            rc = pgw_err_set(err, PGW_EIO, "reading a sorted run failed");
    }
    for (size_t i = s->n_heap / 2; rc == PGW_OK && i-- > 0;)
        heap_down(s, i);
    return rc;
}

int pgw_rowsort_next(void *p, pgw_recon_row *r, bool *end, pgw_err *err)
{
    pgw_rowsort *s = p;
    PGW_ASSERT(s->finished);
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
