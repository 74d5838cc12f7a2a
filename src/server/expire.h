/*
 * expire.h - the expiry run: every lot due by a moment loses what is left
 * of it to system:expired, through the writer, idempotently.
 */
#ifndef PGW_SERVER_EXPIRE_H
#define PGW_SERVER_EXPIRE_H

#include "core/error.h"
#include "server/writer.h"

#include <stdint.h>

typedef struct pgw_expire_report {
    int64_t lots;   /* lots whose remaining points expired in this run */
    int64_t points; /* points expired in this run */
} pgw_expire_report;

/*
 * Reads the lots due at `as_of` (expires_at <= as_of, points left) page by
 * page on its own connection to `db_url`, and submits one EXPIRE_LOT
 * command per lot to `writer`, waiting for each page to commit. A second
 * run over the same moment finds nothing due and expires nothing.
 */
int pgw_expire_due(pgw_writer *writer, const char *db_url, int64_t as_of, pgw_expire_report *out,
                   pgw_err *err);

#endif
