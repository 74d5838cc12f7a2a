/*
 * fuzz_statement.c - libFuzzer target: any bytes as a channel's statement
 * (pgw_statement_open_text), its rows read in file order, then sorted
 * with the smallest arena (4 KiB: a few dozen rows a run, so most inputs
 * spill runs to temporary files and merge them) and read again. Either a
 * clean refusal of the header, or rows such that the sorted ones are the
 * file's rows, each once and field for field (what a run wrote is what
 * it gives back), in (event_id, source, line) order. Never a crash, a
 * leak or undefined behaviour.
 */
#include "core/civil.h"
#include "core/reconcile.h"
#include "server/statement.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ROWS_MAX 4096 /* more and the input is passed over: a bound, not a finding */

static bool same_row(const pgw_recon_row *a, const pgw_recon_row *b)
{
    return a->line == b->line && a->occurred_at == b->occurred_at &&
           a->amount_fen == b->amount_fen && a->points == b->points &&
           a->written_off == b->written_off && a->malformed == b->malformed &&
           (!a->malformed || a->key_read == b->key_read) && strcmp(a->event_id, b->event_id) == 0 &&
           strcmp(a->type, b->type) == 0 && strcmp(a->member, b->member) == 0 &&
           strcmp(a->original, b->original) == 0 && strcmp(a->source, b->source) == 0 &&
           strcmp(a->problem, b->problem) == 0;
}

/* Rows in file order, at most ROWS_MAX: their number, or -1 past it. */
static long read_all(pgw_statement *st, pgw_recon_row *rows)
{
    pgw_err err;
    bool end = false;
    for (long n = 0;; n++) {
        pgw_recon_row row;
        if (pgw_statement_next(st, &row, &end, &err) != PGW_OK)
            abort(); /* a bad row comes back malformed, never as an error */
        if (end)
            return n;
        if (n == ROWS_MAX)
            return -1;
        if (n > 0 && row.line <= rows[n - 1].line)
            abort(); /* file order: lines go up */
        rows[n] = row;
    }
}

static const pgw_recon_row *by_line(const pgw_recon_row *rows, long n, size_t line)
{
    long lo = 0, hi = n;
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        if (rows[mid].line < line)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && rows[lo].line == line ? &rows[lo] : NULL;
}

/* The sorted rows against the file's: each once, the same, in order. */
static void check_sorted(pgw_statement *st, const pgw_recon_row *rows, long n, bool *seen)
{
    pgw_err err;
    pgw_recon_row prev, row;
    bool end = false;
    for (long i = 0;; i++) {
        if (pgw_statement_next(st, &row, &end, &err) != PGW_OK)
            abort();
        if (end) {
            if (i != n)
                abort(); /* rows lost by the sort */
            return;
        }
        const pgw_recon_row *was = by_line(rows, n, row.line);
        if (i >= n || was == NULL || seen[was - rows] || !same_row(was, &row))
            abort(); /* a row made up, given twice or changed */
        seen[was - rows] = true;
        if (i > 0) { /* rowsort.h's order: the key, then the line */
            int c = pgw_recon_key_cmp(&prev, &row, true);
            if (c > 0 || (c == 0 && prev.line > row.line))
                abort(); /* out of order */
        }
        prev = row;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pgw_recon_row rows[ROWS_MAX];
    static bool seen[ROWS_MAX];
    static pgw_tz mall;
    pgw_err err;
    if (mall.name[0] == '\0' && pgw_tz_lookup("Asia/Shanghai", &mall, &err) != PGW_OK)
        abort();
    pgw_statement *st = NULL;
    if (pgw_statement_open_text((const char *)data, size, &st, &err) != PGW_OK) {
        if (st != NULL || err.msg[0] == '\0')
            abort(); /* a refusal says why and leaves nothing open */
        return 0;
    }
    pgw_statement_set_time_zone(st, &mall);
    long n = read_all(st, rows);
    if (n >= 0) {
        pgw_statement__set_sort_arena_for_test(st, 4096);
        if (pgw_statement_sort(st, &err) != PGW_OK)
            abort(); /* 4096 rows make about 100 runs, far from the bound of 512 */
        memset(seen, 0, sizeof(seen));
        check_sorted(st, rows, n, seen);
    }
    pgw_statement_free(st);
    return 0;
}
