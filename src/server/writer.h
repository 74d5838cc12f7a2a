/*
 * writer.h - the one writer thread and its group commit.
 *
 * Every write to the transfer log goes through here. Callers submit
 * validated commands to a bounded queue; the writer thread takes up to
 * batch_max of them, applies them in one database transaction (each inside
 * its own savepoint, so a failing command fails alone and the others still
 * commit), commits once, and only then completes every command of the
 * batch. A caller therefore never learns of a write that is not durable,
 * and one fsync is shared by the whole batch.
 *
 * Backpressure: a full queue is refused at once (PGW_EFULL), never grown;
 * the HTTP layer turns that into 503 unavailable / 429.
 *
 * Ownership: the caller owns a pgw_command and must keep it alive and
 * untouched from pgw_writer_submit() until its `done` callback has run.
 * `done` runs on the writer thread after the commit; it must be quick
 * (wake the service thread, signal a condition), never block on the writer.
 */
#ifndef PGW_SERVER_WRITER_H
#define PGW_SERVER_WRITER_H

#include "core/error.h"
#include "core/ledger.h"
#include "core/transfer.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Transfers one command may write: a purchase writes one per funder. */
#define PGW_COMMAND_TRANSFERS_MAX 8
#define PGW_WRITER_QUEUE_MAX      65536
#define PGW_WRITER_BATCH_MAX      4096

typedef struct pgw_command pgw_command;
typedef void (*pgw_command_done)(pgw_command *cmd, void *payload);

typedef enum pgw_command_kind {
    /* Append the caller's transfers as they are (imports, adjustments, tests). */
    PGW_COMMAND_TRANSFERS = 0,
    /*
     * Earn: the writer groups `lines` by funder into EARN transfers to
     * member:<member>, repays the member's debt first, and puts the rest in
     * a new lot expiring per the writer's policy (ledger.h semantics).
     */
    PGW_COMMAND_EARN,
    /* Expire what is left of lot `lot_id` into system:expired. */
    PGW_COMMAND_EXPIRE_LOT,
} pgw_command_kind;

struct pgw_command {
    /* Input, filled by the caller. */
    pgw_command_kind kind;
    char key[PGW_IDEM_KEY_MAX + 1];    /* idempotency key: channel + source + event id */
    uint8_t fingerprint[PGW_HASH_LEN]; /* SHA-256 of the canonical request */
    size_t n_transfers; /* TRANSFERS: 1..PGW_COMMAND_TRANSFERS_MAX; others: set by the writer */
    pgw_transfer transfers[PGW_COMMAND_TRANSFERS_MAX]; /* id and hashes set by the writer */
    /* EARN */
    char member[PGW_ID_MAX + 1];
    char shop[PGW_ID_MAX + 1];
    char channel[PGW_ID_MAX + 1];
    char reference[PGW_REFERENCE_MAX + 1];
    int64_t at; /* when it happened, unix seconds (EARN: earning time; EXPIRE_LOT: now) */
    size_t n_lines;
    pgw_earn_line lines[PGW_BREAKDOWN_MAX];
    /* EXPIRE_LOT */
    int64_t lot_id;
    pgw_command_done done;
    void *payload;
    /* Output, valid once `done` runs. */
    int rc; /* PGW_OK, PGW_ECONFLICT, PGW_EINVAL, PGW_EUNAVAILABLE ... */
    pgw_err err;
    bool replayed;          /* the key was used before with the same fingerprint */
    pgw_idem_record record; /* what the key produced (first transfer id, count) */
    int64_t lot_created;    /* EARN: the new lot's id, 0 when none (all repaid debt) */
    int64_t points_moved;   /* EARN: points earned; EXPIRE_LOT: points expired */
};

typedef struct pgw_writer_options {
    const char *db_url; /* "sqlite:PATH"; created when missing */
    pgw_expiry expiry;  /* lots' expiry policy (EARN) */
    pgw_tz tz;          /* the mall's time zone, for expiry dates */
    size_t queue_cap;   /* 1..PGW_WRITER_QUEUE_MAX */
    size_t batch_max;   /* 1..PGW_WRITER_BATCH_MAX commands per transaction */
} pgw_writer_options;

typedef struct pgw_writer_stats {
    uint64_t batches;        /* transactions committed */
    uint64_t commands;       /* commands completed (any result) */
    uint64_t failed_batches; /* commits that failed: their commands got PGW_EUNAVAILABLE */
    size_t largest_batch;
} pgw_writer_stats;

typedef struct pgw_writer pgw_writer;

/* Opens the store and starts the thread. The caller stops it with pgw_writer_stop. */
int pgw_writer_start(const pgw_writer_options *opts, pgw_writer **out, pgw_err *err);

/*
 * Queues a command. PGW_EINVAL for a malformed command, PGW_EFULL when the
 * queue is full, PGW_ESTATE once stopping: in those cases `done` will not
 * be called and the caller keeps the command.
 */
int pgw_writer_submit(pgw_writer *writer, pgw_command *cmd, pgw_err *err);

/* Submits and waits for the command's completion (for the CLI and tests).
 * Returns the submit error or the command's rc. */
int pgw_writer_run(pgw_writer *writer, pgw_command *cmd, pgw_err *err);

/* Stops accepting, applies and commits what is queued, closes the store,
 * joins the thread and frees the writer. */
void pgw_writer_stop(pgw_writer *writer);

void pgw_writer_get_stats(pgw_writer *writer, pgw_writer_stats *out);

/* Test hook: while paused the thread takes no work, so a test can fill the
 * queue deterministically. */
void pgw_writer__pause_for_test(pgw_writer *writer, bool paused);

/* Test hook: the writer's own store, to be touched only while paused. */
pgw_store *pgw_writer__store_for_test(pgw_writer *writer);

#endif
