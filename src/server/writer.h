/*
 * writer.h - the one writer thread and its group commit.
 *
 * Every write to the transfer log goes through here. Callers submit
 * validated commands to a bounded queue; the writer thread takes up to
 * batch_max of them, applies them in one database transaction (each inside
 * its own savepoint, so a failing command fails alone and the others still
 * commit) and commits once; a second thread syncs the commit to disk while
 * the writer applies the next batch, and only then completes every command
 * of the batch. A caller therefore never learns of a write that is not
 * durable, and one fsync is shared by the whole batch (or two, when a
 * batch committed while the previous one was syncing).
 *
 * A failed sync is final: its commands and every later one fail with
 * PGW_EUNAVAILABLE (retry with the same key once the gateway is restarted
 * on a working disk) and the stats report the storage down.
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

#include "command.h"
#include "core/error.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_WRITER_QUEUE_MAX    65536
#define PGW_WRITER_BATCH_MAX    4096
#define PGW_WRITER_BACKSTOP_MAX 1000000

/*
 * Commands per transaction unless told otherwise. On SQLite a command is
 * answered only once its whole transaction is committed and synced, so a
 * large one keeps its first commands waiting while the writer applies the
 * rest (30-40 us each), and the syncer idles meanwhile. Small transactions
 * hand each part to the syncer sooner: at 128 HTTP connections 16 gave
 * 20,900-22,700 purchases/s against 19,900-20,300 with 1,024, p99 lower
 * too (bench/RESULTS.md, 2026-12-01); 8 and 4 paid for their extra commits.
 * 32 keeps four transactions in flight at 128 connections with half the
 * commits (and WAL frames, syncs, checkpoint copies) of 16: 6.7% more
 * purchases/s than 16 in six alternated pairs of 5 s, p99 lower; over
 * 20 s runs +4.9%, p99 2-3 ms higher (2026-12-04). 64 was no better.
 * A PostgreSQL commit waits for the server's own flush, with no syncer
 * alongside: there 16 was 6% slower than 1,024.
 */
#define PGW_WRITER_BATCH_SQLITE 32
#define PGW_WRITER_BATCH_REMOTE 1024

typedef struct pgw_writer_options {
    const char *db_url; /* "sqlite:PATH"; created when missing */
    pgw_ledger_policy policy;
    /* A reader: its own connection (never creates the database), read
     * transactions, read-only commands only (pgw_command_reads). */
    bool read_only;
    size_t queue_cap; /* 1..PGW_WRITER_QUEUE_MAX */
    /* 1..PGW_WRITER_BATCH_MAX commands per transaction; 0: the database's,
     * PGW_WRITER_BATCH_SQLITE or PGW_WRITER_BATCH_REMOTE. */
    size_t batch_max;
    /* SQLite: WAL pages past which the writer's connection checkpoints
     * itself (writer.c); 0 means 40,000, else 64..PGW_WRITER_BACKSTOP_MAX.
     * The checkpoint thread copies the WAL at half of them and starts it
     * over from three quarters. */
    size_t wal_backstop_pages;
    /* SQLite: the connection's page cache in KiB (pgw_store_set_cache_kib);
     * 0 keeps PGW_STORE_CACHE_KIB. */
    int64_t cache_kib;
} pgw_writer_options;

/* Histogram buckets: batch sizes 1, 2, 4 ... 4096; commit times in
 * microseconds 250, 500, 1000 ... 256000 (each the upper bound, inclusive). */
#define PGW_BATCH_BUCKETS  13
#define PGW_COMMIT_BUCKETS 11

typedef struct pgw_writer_stats {
    uint64_t batches;        /* transactions committed */
    uint64_t commands;       /* commands completed (any result) */
    uint64_t failed_batches; /* commits that failed: their commands got PGW_EUNAVAILABLE */
    bool last_batch_failed;  /* the latest batch could not commit (storage down?) */
    int64_t last_transfer;   /* id of the newest committed transfer (the log's length) */
    size_t largest_batch;
    uint64_t batch_size_le[PGW_BATCH_BUCKETS]; /* cumulative, Prometheus style */
    uint64_t commit_us_le[PGW_COMMIT_BUCKETS];
    uint64_t commit_us_sum;
    uint64_t batch_size_sum; /* commands in committed batches */
    uint64_t syncs;          /* fdatasyncs of the WAL that made batches durable */
    uint64_t sync_us_sum;
    uint64_t checkpoints;         /* WAL checkpoints run by the checkpoint thread (SQLite) */
    uint64_t checkpoint_us_sum;   /* time spent in them */
    uint64_t checkpoint_flushes;  /* of them, those that synced the database file too */
    uint64_t restarts;            /* whole copies of the WAL by the checkpoint thread, the
                                     writer held: the WAL starts over at the next commit */
    uint64_t restart_hold_us_sum; /* time the writer was held for those copies (and tries) */
} pgw_writer_stats;

/* The upper bounds of the histogram buckets. */
uint64_t pgw_writer_batch_bucket(size_t i);
uint64_t pgw_writer_commit_bucket_us(size_t i);

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

/*
 * A stream of commands for pgw_writer_run_stream. `fill` prepares the next
 * one in *cmd (slot `slot` of the caller's array): PGW_OK to submit it,
 * another code (err filled) for one refused before the writer, or *end
 * true when there are no more. `report` sees every command's outcome, in
 * the order filled: rc and err are the refusal's or the command's.
 */
typedef int (*pgw_writer_fill)(void *ctx, size_t slot, pgw_command *cmd, bool *end, pgw_err *err);
typedef void (*pgw_writer_report)(void *ctx, size_t slot, const pgw_command *cmd, int rc,
                                  const pgw_err *err);

/*
 * Runs a stream with up to `depth` commands (slots[0..depth)) in flight,
 * so that they share transactions and syncs: the CLI's imports, where one
 * command at a time waited for a sync of its own (1 ms a row on SQLite,
 * 3.5 on PostgreSQL). The writer's queue must hold `depth` commands.
 * Returns when every command is reported, or PGW_ENOMEM before any is.
 */
int pgw_writer_run_stream(pgw_writer *writer, pgw_command *slots, size_t depth,
                          pgw_writer_fill fill, pgw_writer_report report, void *ctx);

/* Stops accepting, applies and commits what is queued, closes the store,
 * joins the thread and frees the writer. */
void pgw_writer_stop(pgw_writer *writer);

void pgw_writer_get_stats(pgw_writer *writer, pgw_writer_stats *out);

/* Test hook: while paused the thread takes no work, so a test can fill the
 * queue deterministically. */
void pgw_writer__pause_for_test(pgw_writer *writer, bool paused);

/* Test hook: while held the syncer syncs and completes nothing, so a test
 * can see that a committed command is not completed before its sync. */
void pgw_writer__hold_sync_for_test(pgw_writer *writer, bool held);

/* Test hook: the writer's own store, to be touched only while paused. */
pgw_store *pgw_writer__store_for_test(pgw_writer *writer);

#endif
