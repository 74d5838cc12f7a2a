/*
 * writer.c - see writer.h.
 *
 * The queue is a ring of command pointers sized once at start: submitting
 * never allocates. One mutex guards it; `wake` tells the thread there is
 * work (or that it should stop).
 *
 * A writer is a pipeline of two threads. The writer thread applies and
 * commits a batch (visible, not yet durable: pgw_store_defer_sync) and moves
 * its commands to `pending`; the syncer thread takes everything pending,
 * fdatasyncs the WAL once and only then completes those commands. While the
 * disk flushes one batch the writer applies the next, so a batch costs
 * max(apply, fsync) instead of apply + fsync. A reader has no syncer: it
 * writes nothing and completes its commands itself.
 *
 * On SQLite a third thread, the checkpointer, copies the WAL into the
 * database on a connection of its own, once the writer's commits have
 * filled half the WAL's backstop, and syncs the database after the copy:
 * SQLite syncs it only at a checkpoint that reaches the WAL's end, which
 * would otherwise flush every page copied since the WAL began, with the
 * writer held (restart). From three quarters of the backstop
 * it starts the WAL over itself, holding the writer only for a short last
 * copy (restart), so that under steady writes the backstop is not reached.
 * Left to the writer's connection, SQLite runs each checkpoint inside a
 * COMMIT: the copy and its fsyncs stalled the next batch (a quarter fewer
 * events per second over HTTP). The writer's own checkpoint stays as a
 * backstop (pgw_store_checkpoint_backstop).
 */
#include "writer.h"

#include "core/assertions.h"
#include "core/log_limit.h"
#include "util/clock.h"
#include "util/thread_name.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pgw_writer {
    pgw_store *store;
    pgw_ledger_policy policy;
    bool read_only;
    size_t batch_max;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pgw_command **ring; /* queue_cap entries */
    size_t cap, head, count;
    bool stopping;
    bool paused;
    pgw_command **batch; /* batch_max entries, owned by the thread */
    pgw_writer_stats stats;
    /* The pipeline (writers only), under `lock`. */
    pthread_t syncer;
    bool has_syncer;
    pthread_cond_t sync_wake;    /* commands pending, or the writer thread ended */
    pthread_cond_t pending_room; /* the syncer took what was pending */
    pgw_command **pending;       /* committed, waiting for the sync; PENDING_CAP(w) */
    pgw_command **flight;        /* the syncer's: being synced, then completed */
    size_t n_pending;
    bool writer_ended;
    bool sync_failed;   /* final: nothing is written after a failed sync */
    bool commit_failed; /* the last batch's, once begun; on SQLite only a commit clears it */
    pgw_log_limit commits_failed;  /* the writer's: stderr's lines on failed commits */
    pgw_log_limit requests_failed; /* its thread's: on requests storage failed */
    pgw_err sync_err;
    bool sync_held; /* test hook */
    /* The checkpointer (SQLite writers only), under `lock`. */
    pthread_t checkpointer;
    bool has_checkpointer;
    pgw_store *checkpoint_store; /* its own connection */
    pthread_cond_t checkpoint_wake;
    int64_t backstop_pages;          /* past these the writer checkpoints itself */
    bool checkpoint_wanted;          /* CHECKPOINT_PAGES(w) were added since the last one */
    bool wal_over_backstop;          /* the writer's connection is to checkpoint: stand aside */
    int64_t wal_pages;               /* the WAL's pages after the last commit */
    int64_t wal_backfilled;          /* of them, copied into the database by the last checkpoint */
    int64_t restart_pages;           /* from these the checkpointer starts the WAL over (restart) */
    int64_t restart_retry_at;        /* and again from these, after a try */
    bool hold_for_restart;           /* the writer takes no batch: restart's last copy */
    bool applying;                   /* the writer thread is inside a batch */
    int64_t wal_pages_added;         /* pages the commits added since the last checkpoint */
    pgw_log_limit checkpoint_failed; /* the checkpointer's, under `lock` */
};

#define PING_EVERY_S 1
/* By default the writer checkpoints itself only past this many WAL pages
 * (~80 MiB with 2 KiB pages). Restart needs room past its start, at three
 * quarters of these, for what commits add while it copies and syncs: at
 * 10,000 pages, 19,000 purchases a second filled the 2,500 left before it
 * was done, about half the times, and the writer stopped for its own
 * checkpoint and the database's sync some 8 times a second. 40,000: never
 * seen in 4 s traces, +7% purchases over 20-30 s, p99 2-4 ms lower; 80,000
 * no better (bench/RESULTS.md). */
#define CHECKPOINT_BACKSTOP_PAGES 40000
/* restart: the writer is held for the last copy once no more than these
 * frames are left to copy, or after this many copies and syncs. */
#define RESTART_LEFT   256
#define RESTART_PASSES 4
/*
 * One checkpoint while the WAL fills, at its half, then restart at three
 * quarters. A page a commit rewrites (the end of the log, a member's row)
 * is copied once per checkpoint, however often it was written since the
 * last: with a checkpoint each 2,048 pages (4 MiB) the checkpoint thread
 * copied 1.7 times the pages, and at half purchases over HTTP were 15%
 * more at 128 connections, p99 the same (bench/RESULTS.md, 2026-12-05).
 * None before restart was 3% faster still, but its first copy, three
 * quarters of the WAL, let the WAL reach the backstop, and the writer
 * stopped to copy itself.
 */
#define CHECKPOINT_PAGES(w) ((w)->backstop_pages / 2)
/* A restart a reader's snapshot kept from the WAL's end is tried again
 * after this many more pages: a few tries before the backstop. */
#define RESTART_RETRY_PAGES(w) ((w)->backstop_pages / 16)

/* Room for the batch being synced plus the one applied meanwhile. */
#define PENDING_CAP(w) (2 * (w)->batch_max)

/* Whether a line of l's kind with `cause` may go out now (log_limit.h);
 * *unsaid: how many were held back before it. */
static bool warn_due(pgw_log_limit *l, const char *cause, uint64_t *unsaid)
{
    return pgw_log_due(l, pgw_monotonic_s(), cause, unsaid);
}

/*
 * Tells `cmd` it failed with `rc`, saying `told` and where the cause is:
 * a request's client, "the gateway's log"; a command no request sent (a
 * CLI run's, the sweep's), "stderr", its operator's, where no gateway may
 * run (the review of the command line: `expire` said "(the gateway's log
 * says why)").
 */
static void told_to(pgw_command *cmd, int rc, const char *told)
{
    pgw_err_set(&cmd->err, rc, "%s (%s says why)", told,
                cmd->request_id != 0 ? "the gateway's log" : "stderr");
}

/*
 * A request that storage failed (PGW_EIO, PGW_EUNAVAILABLE): the store's
 * words name the database (its file, its server) and may name a member,
 * which are the operator's, on stderr (limited: core/log_limit.h), not the
 * caller's, an HTTP client's perhaps: it is told that storage failed. The
 * line names the request as the request log does ("id"), when it is one;
 * a command no request sent (the sweep's, a CLI run's) answered no 503.
 */
static void keep_reason(pgw_writer *w, pgw_command *cmd, const char *told)
{
    if (cmd->rc != PGW_EIO && cmd->rc != PGW_EUNAVAILABLE)
        return;
    uint64_t unsaid = 0;
    if (warn_due(&w->requests_failed, cmd->err.msg, &unsaid)) {
        /* " (request N)", " (M more since ...)", both in one "(request N; M more
         * ...)", or neither (held_back + 2: its words without " (") */
        char which[40] = "", held_back[PGW_LOG_HELD_BACK_MAX];
        pgw_log_held_back(unsaid, held_back);
        if (cmd->request_id != 0)
            snprintf(which, sizeof(which), " (request %llu%s", (unsigned long long)cmd->request_id,
                     unsaid > 0 ? "; " : ")");
        fprintf(stderr, "pointsgw: %s%s%s: %s\n",
                cmd->request_id != 0 ? "a request failed in storage, answered 503"
                                     : "a command failed in storage, nothing written",
                which, which[0] != '\0' && unsaid > 0 ? held_back + 2 : held_back, cmd->err.msg);
    }
    told_to(cmd, cmd->rc, told);
}

#define STORAGE_FAILED "storage failed, nothing was written" /* told_to says where */

/* A reader's batch: one snapshot for all of its reads. */
static void read_batch(pgw_writer *w, size_t n)
{
    pgw_err err;
    int rc = pgw_store_begin_read(w->store, &err);
    for (size_t i = 0; i < n; i++) {
        if (rc == PGW_OK)
            pgw_command_read(w->store, &w->policy, w->batch[i]);
        else
            w->batch[i]->rc = pgw_err_set(&w->batch[i]->err, PGW_EUNAVAILABLE, "%s", err.msg);
        keep_reason(w, w->batch[i], "storage failed");
    }
    pgw_store_rollback(w->store, NULL); /* nothing was written */
    pthread_mutex_lock(&w->lock);
    w->stats.batches++;
    w->stats.commands += n;
    pthread_mutex_unlock(&w->lock);
}

/* One transaction for the whole batch; if it cannot commit, nothing did. */
uint64_t pgw_writer_batch_bucket(size_t i)
{
    PGW_ASSERT(i < PGW_BATCH_BUCKETS);
    return UINT64_C(1) << i;
}

uint64_t pgw_writer_commit_bucket_us(size_t i)
{
    PGW_ASSERT(i < PGW_COMMIT_BUCKETS);
    return UINT64_C(250) << i;
}

/* Counts one committed batch in the histograms (lock held). */
static void observe(pgw_writer_stats *st, size_t n, uint64_t us)
{
    for (size_t i = 0; i < PGW_BATCH_BUCKETS; i++)
        st->batch_size_le[i] += n <= pgw_writer_batch_bucket(i);
    for (size_t i = 0; i < PGW_COMMIT_BUCKETS; i++)
        st->commit_us_le[i] += us <= pgw_writer_commit_bucket_us(i);
    st->commit_us_sum += us;
    st->batch_size_sum += n;
}

/* After a failed sync nothing more is written: the disk cannot be trusted. */
static int check_sync_failed(pgw_writer *w, pgw_err *err)
{
    pthread_mutex_lock(&w->lock);
    int rc = w->sync_failed ? pgw_err_set(err, PGW_EUNAVAILABLE, "%s", w->sync_err.msg) : PGW_OK;
    pthread_mutex_unlock(&w->lock);
    return rc;
}

/* "commits work again" when the limit says so (pgw_log_tell, _later).
 * The count by its address: read here, after the limit's call set it (a
 * call's arguments have no order: `f(tell(&n), n)` read n first). */
static void say_commits_work(pgw_log_say say, const uint64_t *unsaid)
{
    if (say == PGW_LOG_WORKS && *unsaid == 0)
        fputs("pointsgw: commits work again\n", stderr);
    else if (say == PGW_LOG_WORKS)
        fprintf(stderr, "pointsgw: commits work again (%llu more batches failed before)\n",
                (unsigned long long)*unsaid);
}

/*
 * Failed commits on stderr, limited as core/log_limit.h says (the first,
 * then a count, another cause at once), and that commits work again once
 * the minute of the last such line is over. A full disk showed only as
 * 503s in the request log and a metric (the operator review).
 */
static void tell_commit(pgw_writer *w, int rc, size_t n, const pgw_err *err)
{
    size_t requests = 0; /* the rest, a CLI run's or the sweep's, answered nobody */
    for (size_t i = 0; rc != PGW_OK && i < n; i++)
        requests += w->batch[i]->request_id != 0;
    uint64_t unsaid = 0;
    if (rc == PGW_OK) {
        /* No clock at every commit: only after failures told (the review) */
        if (!pgw_log_idle(&w->commits_failed))
            say_commits_work(pgw_log_tell(&w->commits_failed, pgw_monotonic_s(), NULL, &unsaid),
                             &unsaid);
        return;
    }
    if (!warn_due(&w->commits_failed, err->msg, &unsaid))
        return;
    char held_back[PGW_LOG_HELD_BACK_MAX];
    pgw_log_held_back(unsaid, held_back);
    if (n == 1 && requests == 1)
        fprintf(stderr, "pointsgw: a commit failed, its request answered 503%s: %s\n", held_back,
                err->msg);
    else if (requests == n)
        fprintf(stderr, "pointsgw: a commit failed, its %zu requests answered 503%s: %s\n", n,
                held_back, err->msg);
    else if (requests == 0)
        fprintf(stderr, "pointsgw: a commit failed, nothing written of its %zu command%s%s: %s\n",
                n, n == 1 ? "" : "s", held_back, err->msg);
    else
        fprintf(stderr,
                "pointsgw: a commit failed, its %zu requests answered 503 and nothing written of "
                "its %zu other commands%s: %s\n",
                requests, n - requests, held_back, err->msg);
}

/* Whether the checkpointer is to start the WAL over (restart); under `lock`. */
static bool restart_due(const pgw_writer *w)
{
    return w->has_checkpointer && w->wal_pages >= w->restart_pages &&
           w->wal_pages >= w->restart_retry_at;
}

/* Whether the checkpointer has work; under `lock`. */
static bool checkpoint_due(const pgw_writer *w)
{
    return !w->wal_over_backstop && (w->checkpoint_wanted || restart_due(w));
}

static void apply_batch(pgw_writer *w, size_t n)
{
    pgw_err err;
    pgw_err_clear(&err);
    uint64_t started = (uint64_t)pgw_monotonic_us();
    int rc = check_sync_failed(w, &err);
    if (rc == PGW_OK)
        rc = pgw_store_begin(w->store, &err);
    /* A begin that fails (the file moved, a lock) wrote nothing: the ping
     * sees it mend. What fails after it may be a disk a read cannot judge. */
    bool began = rc == PGW_OK;
    for (size_t i = 0; rc == PGW_OK && i < n; i++) {
        pgw_command_apply(w->store, &w->policy, w->batch[i]);
        if (!pgw_store_in_transaction(w->store))
            rc = pgw_err_set(&err, PGW_EUNAVAILABLE, "the database abandoned the batch (%s)",
                             w->batch[i]->err.msg);
        else
            keep_reason(w, w->batch[i], STORAGE_FAILED);
    }
    /* A COMMIT whose answer was lost (a PostgreSQL connection dropped)
     * may have happened: the callers retry with the same key, and find a
     * replay if it did. */
    bool committing = rc == PGW_OK;
    if (rc == PGW_OK)
        rc = pgw_store_commit(w->store, &err);
    if (rc != PGW_OK) {
        pgw_store_rollback(w->store, NULL);
        for (size_t i = 0; i < n; i++) {
            /* tell_commit gives the operator the reason */
            w->batch[i]->rc = PGW_EUNAVAILABLE;
            told_to(w->batch[i], PGW_EUNAVAILABLE,
                    committing && pgw_store_is_remote(w->store)
                        ? "storage failed while committing; retry with the same key"
                        : STORAGE_FAILED);
            w->batch[i]->replayed = false;
            w->batch[i]->retry_at = 0; /* a limit's wait was about what is rolled back */
        }
    }
    int64_t last = 0;
    for (size_t i = 0; rc == PGW_OK && i < n; i++) {
        const pgw_command *c = w->batch[i];
        if (c->rc == PGW_OK && !c->replayed && c->n_transfers > 0)
            last = c->transfers[c->n_transfers - 1].id > last ? c->transfers[c->n_transfers - 1].id
                                                              : last;
    }
    int64_t pages = rc == PGW_OK ? pgw_store_wal_pages(w->store) : w->wal_pages;
    bool started_over = pages < w->wal_pages;
    /* On SQLite a batch that wrote no page (serve's periodic prune with
     * nothing to prune) commits on a full disk too: it tells nothing of
     * writes, so a failure stays as it was (it set /healthz ok and said
     * "commits work again" while events still failed). A database
     * server's commit answers for the server. */
    bool wrote = rc != PGW_OK || pgw_store_is_remote(w->store) || pages != w->wal_pages;
    pthread_mutex_lock(&w->lock);
    w->wal_pages_added += started_over ? pages : pages - w->wal_pages;
    w->wal_pages = pages;
    if (started_over)
        w->wal_backfilled = w->restart_retry_at = 0;
    w->wal_over_backstop = pages >= w->backstop_pages;
    w->checkpoint_wanted |= w->has_checkpointer && w->wal_pages_added >= CHECKPOINT_PAGES(w);
    w->applying = false;
    if (checkpoint_due(w) || w->hold_for_restart) /* also once the WAL started over */
        pthread_cond_signal(&w->checkpoint_wake);
    if (last > w->stats.last_transfer)
        w->stats.last_transfer = last;
    w->stats.batches += rc == PGW_OK;
    w->stats.failed_batches += rc != PGW_OK;
    if (wrote) {
        w->commit_failed = began ? rc != PGW_OK : w->commit_failed; /* a refused begin: as it was */
        w->stats.last_batch_failed = rc != PGW_OK || w->sync_failed; /* a failed sync is final */
    }
    w->stats.commands += n;
    w->stats.largest_batch = n > w->stats.largest_batch ? n : w->stats.largest_batch;
    if (rc == PGW_OK)
        observe(&w->stats, n, (uint64_t)pgw_monotonic_us() - started);
    pthread_mutex_unlock(&w->lock);
    if (wrote)
        tell_commit(w, rc, n, &err);
}

/*
 * Idle: asks the store every PING_EVERY_S whether it answers, so /healthz
 * tells a database that went away (or came back) without waiting for a
 * write to fail: a server that stopped, or a SQLite file deleted or moved
 * aside (a health check kept sending traffic to an instance that could
 * not write). Called and returns with the lock.
 */
static void idle_wait(pgw_writer *w)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC,
                  &until); /* `wake` runs on it: a clock step must not stop pings */
    until.tv_sec += PING_EVERY_S;
    if (pthread_cond_timedwait(&w->wake, &w->lock, &until) != ETIMEDOUT || w->stopping ||
        w->count > 0)
        return;
    pthread_mutex_unlock(&w->lock);
    bool up = pgw_store_ping(w->store, NULL) == PGW_OK;
    /* A commit that worked after failures, none since: said once its
     * minute is over, lest a quiet gateway leave the failure the last word */
    uint64_t unsaid = 0;
    if (!pgw_log_idle(&w->commits_failed))
        say_commits_work(pgw_log_later(&w->commits_failed, pgw_monotonic_s(), &unsaid), &unsaid);
    pthread_mutex_lock(&w->lock);
    /* SQLite answers reads from a disk too full to commit: after a failed
     * commit only a commit says it works again (a ping here set health
     * ok while every write failed). A database server's answer does. */
    bool failed = w->commit_failed && !pgw_store_is_remote(w->store);
    w->stats.last_batch_failed = !up || w->sync_failed || failed;
}

/* Waits for work; moves up to batch_max commands out of the ring. 0 = stop. */
static size_t take_batch(pgw_writer *w)
{
    pthread_mutex_lock(&w->lock);
    while ((w->count == 0 || w->paused || w->hold_for_restart) && !w->stopping)
        idle_wait(w);
    size_t n = 0;
    while (n < w->batch_max && w->count > 0) {
        w->batch[n++] = w->ring[w->head];
        w->head = (w->head + 1) % w->cap;
        w->count--;
    }
    w->applying = n > 0 && !w->read_only;
    pthread_mutex_unlock(&w->lock);
    return n;
}

static void complete(pgw_command **cmds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cmds[i]->done(cmds[i], cmds[i]->payload);
}

/* Hands a committed batch to the syncer, waiting while two are in line. */
static void hand_to_syncer(pgw_writer *w, size_t n)
{
    PGW_ASSERT(n <= w->batch_max);
    pthread_mutex_lock(&w->lock);
    while (w->n_pending + n > PENDING_CAP(w))
        pthread_cond_wait(&w->pending_room, &w->lock);
    memcpy(w->pending + w->n_pending, w->batch, n * sizeof(*w->batch));
    w->n_pending += n;
    pthread_cond_signal(&w->sync_wake);
    pthread_mutex_unlock(&w->lock);
}

static void *writer_main(void *arg)
{
    pgw_writer *w = arg;
    pgw_thread_name(w->read_only ? "pgw-reader" : "pgw-writer");
    for (;;) {
        size_t n = take_batch(w);
        if (n == 0)
            break; /* stopping, and the queue is drained */
        if (w->read_only) {
            read_batch(w, n);
            complete(w->batch, n);
        } else {
            apply_batch(w, n);
            hand_to_syncer(w, n);
        }
    }
    /* Stopping within the minute of a failure's line, commits having worked
     * since: said now, or the failure stayed the log's last word. */
    uint64_t unsaid = 0;
    say_commits_work(pgw_log_stopping(&w->commits_failed, &unsaid), &unsaid);
    pthread_mutex_lock(&w->lock);
    w->writer_ended = true;
    pthread_cond_signal(&w->sync_wake);
    pthread_cond_signal(&w->checkpoint_wake);
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* Takes everything pending into `flight`. 0 = the writer ended, all synced. */
static size_t take_pending(pgw_writer *w, bool *failed)
{
    pthread_mutex_lock(&w->lock);
    while ((w->n_pending == 0 || w->sync_held) && !w->writer_ended)
        pthread_cond_wait(&w->sync_wake, &w->lock);
    size_t n = w->n_pending;
    pgw_command **swap = w->flight;
    w->flight = w->pending;
    w->pending = swap;
    w->n_pending = 0;
    *failed = w->sync_failed;
    pthread_cond_signal(&w->pending_room);
    pthread_mutex_unlock(&w->lock);
    return n;
}

/* A sync failed: every command waiting on it is told so, whatever its answer was. */
static void fail_unsynced(pgw_writer *w, size_t n, const pgw_err *err)
{
    pthread_mutex_lock(&w->lock);
    if (!w->sync_failed) {
        w->sync_failed = true;
        fprintf(stderr, "pointsgw: the disk failed to sync, the gateway writes nothing more: %s\n",
                err->msg);
        pgw_err_set(&w->sync_err, PGW_EUNAVAILABLE,
                    "the disk failed to sync (%s); the gateway writes nothing more until restarted",
                    err->msg);
    }
    w->stats.last_batch_failed = true;
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < n; i++) {
        if (w->flight[i]->rc == PGW_EUNAVAILABLE)
            continue; /* its batch already failed: nothing of it was written */
        w->flight[i]->rc =
            pgw_err_set(&w->flight[i]->err, PGW_EUNAVAILABLE,
                        "not known to be durable, the disk failed to sync (the gateway's log "
                        "says why); retry with the same key");
        w->flight[i]->replayed = false;
    }
}

static void *syncer_main(void *arg)
{
    pgw_writer *w = arg;
    pgw_thread_name("pgw-syncer");
    bool failed = false;
    size_t n;
    while ((n = take_pending(w, &failed)) > 0) {
        pgw_err err;
        uint64_t started = (uint64_t)pgw_monotonic_us();
        int rc = failed ? pgw_err_set(&err, PGW_EIO, "an earlier sync failed")
                        : pgw_store_sync(w->store, &err);
        if (rc != PGW_OK) {
            fail_unsynced(w, n, &err);
        } else {
            pthread_mutex_lock(&w->lock);
            w->stats.syncs++;
            w->stats.sync_us_sum += (uint64_t)pgw_monotonic_us() - started;
            pthread_mutex_unlock(&w->lock);
        }
        complete(w->flight, n);
    }
    return NULL;
}

/* Runs one PASSIVE checkpoint and counts it; `flush`: then syncs the
 * database. false: it did nothing (busy) or failed. Called and returns with
 * the lock. */
static bool checkpoint_once(pgw_writer *w, bool flush)
{
    w->checkpoint_wanted = false;
    w->wal_pages_added = 0;
    pthread_mutex_unlock(&w->lock);
    pgw_err err;
    bool busy = false;
    int64_t started = pgw_monotonic_us();
    int rc = pgw_store_checkpoint(w->checkpoint_store, flush, &busy, &err);
    int64_t took = pgw_monotonic_us() - started;
    pthread_mutex_lock(&w->lock);
    if (rc == PGW_OK) {
        w->stats.checkpoints += !busy; /* busy: the writer's own was running */
        w->stats.checkpoint_flushes += !busy && flush;
        w->stats.checkpoint_us_sum += (uint64_t)took;
        if (busy)
            return false;
        /* More than the WAL holds: of the WAL before it started over. */
        int64_t backfilled = pgw_store_wal_backfilled(w->checkpoint_store);
        w->wal_backfilled = backfilled <= w->wal_pages ? backfilled : 0;
        return true;
    }
    /* The writer's backstop keeps the WAL bounded meanwhile; say so as
     * core/log_limit.h allows, not for every attempt. */
    uint64_t unsaid = 0;
    char line[PGW_LOG_LINE_MAX];
    if (warn_due(&w->checkpoint_failed, err.msg, &unsaid)) {
        pgw_log_line(PGW_LOG_FAILED, "checkpoint failed (the writer checkpoints itself)", err.msg,
                     unsaid, line);
        fputs(line, stderr);
    }
    return false;
}

/*
 * Lets the WAL start over with the writer stopped for a short copy, not
 * for the backstop's. A WAL starts over at the first commit after a
 * checkpoint that copied all of it, so under steady writes only a
 * checkpoint with the writer stopped does: the writer's backstop, which
 * stopped it for its copy and the sync of every page copied since the
 * last sync (20-30 ms every quarter second at 128 connections,
 * bench/RESULTS.md). Here copies and syncs run while the writer goes on,
 * each copying what came during the last, until little is left; only then
 * is the writer held, between two batches, for the last copy and its
 * sync. A reader's old snapshot can keep that copy from the WAL's end:
 * tried again RESTART_RETRY_PAGES(w) later. Called and returns with the lock.
 */
static void restart(pgw_writer *w)
{
    for (int pass = 0; pass < RESTART_PASSES && !w->wal_over_backstop &&
                       w->wal_pages - w->wal_backfilled > RESTART_LEFT;
         pass++)
        if (!checkpoint_once(w, true))
            break;
    w->hold_for_restart = true;
    while (w->applying && !w->writer_ended)
        pthread_cond_wait(&w->checkpoint_wake, &w->lock);
    int64_t started = pgw_monotonic_us();
    bool whole = checkpoint_once(w, false) && w->wal_backfilled == w->wal_pages;
    w->hold_for_restart = false;
    pthread_cond_signal(&w->wake);
    w->stats.restarts += whole;
    w->stats.restart_hold_us_sum += (uint64_t)(pgw_monotonic_us() - started);
    w->restart_retry_at = w->wal_pages + RESTART_RETRY_PAGES(w); /* started over: reset to 0 */
}

static void *checkpointer_main(void *arg)
{
    pgw_writer *w = arg;
    pgw_thread_name("pgw-checkpoint");
    pthread_mutex_lock(&w->lock);
    for (;;) {
        /*
         * Past the backstop the WAL is the writer's to checkpoint: its
         * PASSIVE checkpoint gives up while this connection holds the
         * checkpoint lock, so on a slow disk, checkpointing back to back
         * here, the WAL grew without bound (300 MB in 30 s with database
         * fsyncs of 150 ms).
         */
        while (!w->writer_ended && !checkpoint_due(w))
            pthread_cond_wait(&w->checkpoint_wake, &w->lock);
        if (w->writer_ended)
            break; /* closing the last connection checkpoints what is left */
        if (restart_due(w))
            restart(w);
        else
            checkpoint_once(w, true);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* SQLite writers: checkpoints move to a thread and a connection of their own. */
static int start_checkpointer(pgw_writer *w, const char *db_url, pgw_err *err)
{
    if (w->read_only || pgw_store_is_remote(w->store))
        return PGW_OK; /* a reader writes nothing; a server checkpoints on its own */
    int rc = pgw_store_open(db_url, false, &w->checkpoint_store, err);
    if (rc == PGW_OK)
        rc = pgw_store_checkpoint_backstop(w->store, (int)w->backstop_pages, err);
    if (rc == PGW_OK) {
        /* Set before the thread starts: it reads the flag (restart_due). */
        w->has_checkpointer = true;
        if (pthread_create(&w->checkpointer, NULL, checkpointer_main, w) != 0) {
            w->has_checkpointer = false;
            rc = pgw_err_set(err, PGW_ENOMEM, "cannot start the checkpoint thread");
        }
    }
    return rc;
}

/* Ends the syncer and the checkpointer of a writer whose thread never ran. */
static void end_helpers(pgw_writer *w)
{
    pthread_mutex_lock(&w->lock);
    w->writer_ended = true;
    pthread_cond_signal(&w->sync_wake);
    pthread_cond_signal(&w->checkpoint_wake);
    pthread_mutex_unlock(&w->lock);
    if (w->has_syncer)
        pthread_join(w->syncer, NULL);
    if (w->has_checkpointer)
        pthread_join(w->checkpointer, NULL);
}

static void writer_free(pgw_writer *w)
{
    pgw_store_close(w->checkpoint_store);
    pgw_store_close(w->store);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->sync_wake);
    pthread_cond_destroy(&w->pending_room);
    pthread_cond_destroy(&w->checkpoint_wake);
    free(w->ring);
    free(w->batch);
    free(w->pending);
    free(w->flight);
    free(w);
}

int pgw_writer_start(const pgw_writer_options *opts, pgw_writer **out, pgw_err *err)
{
    *out = NULL;
    if (opts->queue_cap < 1 || opts->queue_cap > PGW_WRITER_QUEUE_MAX ||
        opts->batch_max > PGW_WRITER_BATCH_MAX ||
        (opts->wal_backstop_pages != 0 &&
         (opts->wal_backstop_pages < 64 || opts->wal_backstop_pages > PGW_WRITER_BACKSTOP_MAX)) ||
        (opts->cache_kib != 0 &&
         (opts->cache_kib < PGW_STORE_CACHE_KIB_MIN || opts->cache_kib > PGW_STORE_CACHE_KIB)))
        return pgw_err_set(err, PGW_EINVAL,
                           "writer queue 1..%d, batch 0..%d, WAL backstop 64..%d pages, "
                           "cache %d..%d KiB",
                           PGW_WRITER_QUEUE_MAX, PGW_WRITER_BATCH_MAX, PGW_WRITER_BACKSTOP_MAX,
                           PGW_STORE_CACHE_KIB_MIN, PGW_STORE_CACHE_KIB);
    pgw_writer *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory starting the writer");
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_cond_init(&w->sync_wake, NULL);
    pthread_cond_init(&w->pending_room, NULL);
    pthread_cond_init(&w->checkpoint_wake, NULL);
    w->cap = opts->queue_cap;
    w->policy = opts->policy;
    w->read_only = opts->read_only;
    w->backstop_pages =
        opts->wal_backstop_pages ? (int64_t)opts->wal_backstop_pages : CHECKPOINT_BACKSTOP_PAGES;
    w->restart_pages = w->backstop_pages * 3 / 4;
    w->ring = calloc(w->cap, sizeof(*w->ring));
    int rc = w->ring ? PGW_OK : pgw_err_set(err, PGW_ENOMEM, "out of memory");
    if (rc == PGW_OK)
        rc = pgw_store_open(opts->db_url, !opts->read_only, &w->store, err);
    if (rc == PGW_OK) { /* the database's batch needs the database open */
        w->batch_max = opts->batch_max                 ? opts->batch_max
                       : pgw_store_is_remote(w->store) ? PGW_WRITER_BATCH_REMOTE
                                                       : PGW_WRITER_BATCH_SQLITE;
        w->batch = calloc(w->batch_max, sizeof(*w->batch));
        w->pending = calloc(PENDING_CAP(w), sizeof(*w->pending));
        w->flight = calloc(PENDING_CAP(w), sizeof(*w->flight));
        if (!w->batch || !w->pending || !w->flight)
            rc = pgw_err_set(err, PGW_ENOMEM, "out of memory");
    }
    if (rc == PGW_OK && opts->cache_kib > 0)
        rc = pgw_store_set_cache_kib(w->store, opts->cache_kib, err);
    uint8_t head[PGW_HASH_LEN];
    if (rc == PGW_OK)
        rc = pgw_store_chain_head(w->store, &w->stats.last_transfer, head, err);
    if (rc == PGW_OK && !w->read_only)
        rc = pgw_store_defer_sync(w->store, err);
    if (rc == PGW_OK && !w->read_only) {
        w->has_syncer = pthread_create(&w->syncer, NULL, syncer_main, w) == 0;
        if (!w->has_syncer)
            rc = pgw_err_set(err, PGW_ENOMEM, "cannot start the syncer thread");
    }
    if (rc == PGW_OK)
        rc = start_checkpointer(w, opts->db_url, err);
    if (rc == PGW_OK && pthread_create(&w->thread, NULL, writer_main, w) != 0)
        rc = pgw_err_set(err, PGW_ENOMEM, "cannot start the writer thread");
    if (rc != PGW_OK) {
        end_helpers(w); /* they have nothing to do: let them end */
        writer_free(w);
        return rc;
    }
    *out = w;
    return PGW_OK;
}

int pgw_writer_submit(pgw_writer *w, pgw_command *cmd, pgw_err *err)
{
    int rc = pgw_command_check(cmd, err);
    if (rc == PGW_OK && pgw_command_reads(cmd->kind) != w->read_only)
        rc = pgw_err_set(err, PGW_EINVAL, "%s",
                         w->read_only ? "a reader takes only reads" : "reads go to a reader");
    if (rc != PGW_OK)
        return rc;
    pthread_mutex_lock(&w->lock);
    if (w->stopping)
        rc = pgw_err_set(err, PGW_ESTATE, "the writer is stopping");
    else if (w->count == w->cap)
        rc = pgw_err_set(err, PGW_EFULL, "%s queue full (%zu commands)",
                         w->read_only ? "read" : "write", w->cap);
    if (rc == PGW_OK) {
        w->ring[(w->head + w->count) % w->cap] = cmd;
        w->count++;
        /* The thread only sleeps on an empty queue: wake it on the first
         * command, not on every one (each wake is a context switch). */
        if (w->count == 1)
            pthread_cond_signal(&w->wake);
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

/* A caller waiting on its commands: the writer completes them in the order
 * submitted, so a count says which are done. */
typedef struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t completed;
} waiter;

static void waiter_init(waiter *wt)
{
    wt->completed = 0;
    pthread_mutex_init(&wt->lock, NULL);
    pthread_cond_init(&wt->cond, NULL);
}

static void waiter_destroy(waiter *wt)
{
    pthread_mutex_destroy(&wt->lock);
    pthread_cond_destroy(&wt->cond);
}

static void count_completion(pgw_command *cmd, void *payload)
{
    (void)cmd;
    waiter *wt = payload;
    pthread_mutex_lock(&wt->lock);
    wt->completed++;
    pthread_cond_signal(&wt->cond);
    pthread_mutex_unlock(&wt->lock);
}

/* Until the n-th command submitted is complete. */
static void wait_for(waiter *wt, uint64_t n)
{
    pthread_mutex_lock(&wt->lock);
    while (wt->completed < n)
        pthread_cond_wait(&wt->cond, &wt->lock);
    pthread_mutex_unlock(&wt->lock);
}

int pgw_writer_run(pgw_writer *w, pgw_command *cmd, pgw_err *err)
{
    waiter wt;
    waiter_init(&wt);
    cmd->done = count_completion;
    cmd->payload = &wt;
    int rc = pgw_writer_submit(w, cmd, err);
    if (rc == PGW_OK) {
        wait_for(&wt, 1);
        rc = cmd->rc;
        if (rc != PGW_OK && err != NULL)
            *err = cmd->err;
    }
    waiter_destroy(&wt);
    return rc;
}

/* A slot's command as filled: the seq-th submitted, or refused before the
 * writer (rc, err). */
typedef struct stream_slot {
    uint64_t seq; /* 0: not submitted */
    int rc;
    pgw_err err;
} stream_slot;

/* Waits for slot i's command and reports it. */
static void report_slot(waiter *wt, const stream_slot *st, size_t i, const pgw_command *cmd,
                        pgw_writer_report report, void *ctx)
{
    if (st->seq == 0) {
        report(ctx, i, cmd, st->rc, &st->err);
        return;
    }
    wait_for(wt, st->seq);
    report(ctx, i, cmd, cmd->rc, &cmd->err);
}

int pgw_writer_run_stream(pgw_writer *w, pgw_command *slots, size_t depth, pgw_writer_fill fill,
                          pgw_writer_report report, void *ctx)
{
    PGW_ASSERT(depth >= 1 && depth <= w->cap); /* else rows refused "queue full" */
    stream_slot *state = calloc(depth, sizeof(*state));
    if (state == NULL)
        return PGW_ENOMEM;
    waiter wt;
    waiter_init(&wt);
    uint64_t filled = 0, reported = 0, submitted = 0;
    bool end = false;
    while (!end || reported < filled) {
        if (end || filled - reported == depth) { /* the oldest first */
            size_t i = (size_t)(reported++ % depth);
            report_slot(&wt, &state[i], i, &slots[i], report, ctx);
            continue;
        }
        size_t i = (size_t)(filled % depth);
        stream_slot *st = &state[i];
        st->rc = fill(ctx, i, &slots[i], &end, &st->err);
        if (end)
            continue;
        if (st->rc == PGW_OK) {
            slots[i].done = count_completion;
            slots[i].payload = &wt;
            st->rc = pgw_writer_submit(w, &slots[i], &st->err);
        }
        st->seq = st->rc == PGW_OK ? ++submitted : 0;
        filled++;
    }
    waiter_destroy(&wt);
    free(state);
    return PGW_OK;
}

void pgw_writer_stop(pgw_writer *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    w->paused = false;
    w->sync_held = false;
    pthread_cond_signal(&w->wake);
    pthread_cond_signal(&w->sync_wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    if (w->has_syncer)
        pthread_join(w->syncer, NULL); /* it ends once everything is synced */
    if (w->has_checkpointer)
        pthread_join(w->checkpointer, NULL);
    PGW_ASSERT(w->count == 0 && w->n_pending == 0); /* drained before the threads ended */
    writer_free(w);
}

void pgw_writer_get_stats(pgw_writer *w, pgw_writer_stats *out)
{
    pthread_mutex_lock(&w->lock);
    *out = w->stats;
    pthread_mutex_unlock(&w->lock);
}

void pgw_writer__pause_for_test(pgw_writer *w, bool paused)
{
    pthread_mutex_lock(&w->lock);
    w->paused = paused;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

void pgw_writer__hold_sync_for_test(pgw_writer *w, bool held)
{
    pthread_mutex_lock(&w->lock);
    w->sync_held = held;
    pthread_cond_signal(&w->sync_wake);
    pthread_mutex_unlock(&w->lock);
}

pgw_store *pgw_writer__store_for_test(pgw_writer *w)
{
    return w->store;
}
