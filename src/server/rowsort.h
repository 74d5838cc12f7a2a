/*
 * rowsort.h - reconciliation rows sorted with bounded memory.
 *
 * Rows are packed (a fixed head, then their strings: ~70 bytes) into an
 * arena, sorted there by (event_id, source, line) and written out as a
 * sorted run to a temporary file (deleted when closed) whenever the arena
 * fills; the runs are then merged through a heap, a row at a time from
 * each. Rows that fit in one arena never touch the disk. Memory: the
 * arena, its index and a read buffer per run, whatever the number of rows.
 *
 * Used for a statement not in event_id order, and for the log's side of a
 * channel-wide reconciliation (the log keeps a channel's events by shop).
 */
#ifndef PGW_SERVER_ROWSORT_H
#define PGW_SERVER_ROWSORT_H

#include "core/reconcile.h"

#include <stdbool.h>
#include <stddef.h>

#define PGW_ROWSORT_ARENA     (32u << 20)
#define PGW_ROWSORT_ARENA_MIN 4096u
/* Each run holds a temporary file open until the merge ends: within the
 * usual 1,024 descriptors a process may have. 16 GiB with the full arena. */
#define PGW_ROWSORT_RUNS_MAX 512

typedef struct pgw_rowsort pgw_rowsort;

/* arena_bytes: PGW_ROWSORT_ARENA_MIN .. PGW_ROWSORT_ARENA. */
int pgw_rowsort_new(size_t arena_bytes, pgw_rowsort **out, pgw_err *err);
/* Adds a row (before finish). PGW_ETOOLARGE past PGW_ROWSORT_RUNS_MAX runs. */
int pgw_rowsort_add(pgw_rowsort *sort, const pgw_recon_row *row, pgw_err *err);
/* Ends the adding; rows then come out in order. */
int pgw_rowsort_finish(pgw_rowsort *sort, pgw_err *err);
/* A pgw_recon_next over the sorted rows. */
int pgw_rowsort_next(void *sort, pgw_recon_row *row, bool *end, pgw_err *err);
void pgw_rowsort_free(pgw_rowsort *sort);

#endif
