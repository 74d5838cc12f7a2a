/*
 * writer.c - see writer.h.
 *
 * The queue is a ring of command pointers sized once at start: submitting
 * never allocates. One mutex guards it; `wake` tells the thread there is
 * work (or that it should stop).
 */
#include "writer.h"

#include "core/assertions.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pgw_writer {
    pgw_store *store;
    pgw_expiry expiry;
    pgw_tz tz;
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
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* EARN, before appending: one EARN transfer per funder, to the member. */
static int prepare_earn(pgw_command *cmd)
{
    pgw_earn_funder funders[PGW_EARN_FUNDERS_MAX];
    size_t n = 0;
    int rc = pgw_earn_group(cmd->lines, cmd->n_lines, funders, &n, &cmd->points_moved, &cmd->err);
    if (rc != PGW_OK)
        return rc;
    PGW_STATIC_ASSERT(PGW_EARN_FUNDERS_MAX <= PGW_COMMAND_TRANSFERS_MAX, "one transfer a funder");
    PGW_STATIC_ASSERT(sizeof(cmd->transfers[0].debit) == sizeof(funders[0].debit), "same bound");
    PGW_STATIC_ASSERT(sizeof(cmd->transfers[0].breakdown) == sizeof(funders[0].breakdown),
                      "same bound");
    cmd->n_transfers = n;
    for (size_t i = 0; i < n; i++) {
        pgw_transfer *t = &cmd->transfers[i];
        memset(t, 0, sizeof(*t));
        t->kind = PGW_TRANSFER_EARN;
        memcpy(t->debit, funders[i].debit, sizeof(t->debit));
        snprintf(t->credit, sizeof(t->credit), "member:%s", cmd->member);
        t->points = funders[i].points;
        memcpy(t->breakdown, funders[i].breakdown, sizeof(t->breakdown));
    }
    return PGW_OK;
}

/* EARN, after appending: repay debt first, the rest becomes a lot. */
static int finish_earn(pgw_writer *w, pgw_command *cmd)
{
    bool known = false;
    int64_t debt = 0, expires_at = 0;
    int rc = pgw_store_member_debt(w->store, cmd->member, &known, &debt, &cmd->err);
    int64_t repay = debt < cmd->points_moved ? debt : cmd->points_moved;
    if (rc == PGW_OK)
        rc = pgw_store_put_member(w->store, cmd->member, debt - repay, now_us(), &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_expiry_at(&w->expiry, &w->tz, cmd->at, &expires_at, &cmd->err);
    if (rc != PGW_OK || cmd->points_moved == repay)
        return rc;
    pgw_lot lot = {.points = cmd->points_moved - repay,
                   .left = cmd->points_moved - repay,
                   .earned_at = cmd->at,
                   .expires_at = expires_at,
                   .source_transfer = cmd->transfers[0].id};
    snprintf(lot.member, sizeof(lot.member), "%s", cmd->member);
    rc = pgw_store_insert_lot(w->store, &lot, &cmd->err);
    cmd->lot_created = lot.id;
    return rc;
}

/*
 * EXPIRE_LOT, before appending: what is left of the lot moves to
 * system:expired. The key names the lot and how much of it had expired
 * before, so each expiry of a lot is its own idempotent event.
 */
static int prepare_expire(pgw_writer *w, pgw_command *cmd)
{
    pgw_lot lot;
    bool found = false;
    int64_t expired = 0;
    int rc = pgw_store_get_lot(w->store, cmd->lot_id, &found, &lot, &expired, &cmd->err);
    if (rc == PGW_OK && !found)
        rc = pgw_err_set(&cmd->err, PGW_ENOTFOUND, "no lot %lld", (long long)cmd->lot_id);
    if (rc == PGW_OK && (lot.left == 0 || lot.expires_at > cmd->at))
        rc = pgw_err_set(&cmd->err, PGW_ESTATE, "lot %lld has nothing due to expire",
                         (long long)cmd->lot_id);
    if (rc != PGW_OK)
        return rc;
    snprintf(cmd->key, sizeof(cmd->key), "expire:lot:%lld:%lld", (long long)lot.id,
             (long long)expired);
    memset(cmd->fingerprint, 0, sizeof(cmd->fingerprint));
    memcpy(cmd->fingerprint, &lot.left, sizeof(lot.left));
    cmd->points_moved = lot.left;
    cmd->n_transfers = 1;
    pgw_transfer *t = &cmd->transfers[0];
    memset(t, 0, sizeof(*t));
    t->kind = PGW_TRANSFER_EXPIRE;
    snprintf(t->debit, sizeof(t->debit), "member:%s", lot.member);
    snprintf(t->credit, sizeof(t->credit), "system:expired");
    t->points = lot.left;
    snprintf(t->channel, sizeof(t->channel), "system");
    snprintf(t->reference, sizeof(t->reference), "lot:%lld", (long long)lot.id);
    return PGW_OK;
}

/* Fills the fields every transfer of a command shares. */
static void stamp_transfers(pgw_command *cmd)
{
    int64_t recorded = now_us();
    for (size_t i = 0; cmd->kind != PGW_COMMAND_TRANSFERS && i < cmd->n_transfers; i++) {
        pgw_transfer *t = &cmd->transfers[i];
        snprintf(t->idem_key, sizeof(t->idem_key), "%s", cmd->key);
        memcpy(t->fingerprint, cmd->fingerprint, PGW_HASH_LEN);
        if (cmd->kind == PGW_COMMAND_EARN) {
            snprintf(t->shop_id, sizeof(t->shop_id), "%s", cmd->shop);
            snprintf(t->channel, sizeof(t->channel), "%s", cmd->channel);
            snprintf(t->reference, sizeof(t->reference), "%s", cmd->reference);
        }
        t->occurred_at = cmd->at;
        t->recorded_at_us = recorded;
    }
}

/* Appends the command's transfers, then records its key (replay or conflict). */
static int append_and_record(pgw_store *store, pgw_command *cmd)
{
    int rc = PGW_OK;
    for (size_t i = 0; rc == PGW_OK && i < cmd->n_transfers; i++)
        rc = pgw_store_append_transfer(store, &cmd->transfers[i], &cmd->err);
    if (rc == PGW_OK)
        rc = pgw_store_record_key(store, cmd->key, cmd->fingerprint, cmd->transfers[0].id,
                                  (int64_t)cmd->n_transfers, now_us(), &cmd->replayed, &cmd->record,
                                  &cmd->err);
    return rc;
}

/*
 * Applies one command inside its own savepoint. A replay or a conflict (the
 * key was there) and any failure undo everything it wrote, so only a
 * first-time command leaves a trace.
 */
static void apply_command(pgw_writer *w, pgw_command *cmd)
{
    pgw_err_clear(&cmd->err);
    cmd->replayed = false;
    cmd->lot_created = 0;
    memset(&cmd->record, 0, sizeof(cmd->record));
    int rc = pgw_store_savepoint(w->store, &cmd->err);
    if (rc == PGW_OK && cmd->kind == PGW_COMMAND_EARN)
        rc = prepare_earn(cmd);
    if (rc == PGW_OK && cmd->kind == PGW_COMMAND_EXPIRE_LOT)
        rc = prepare_expire(w, cmd);
    stamp_transfers(cmd);
    if (rc == PGW_OK)
        rc = append_and_record(w->store, cmd);
    if (rc == PGW_OK && !cmd->replayed && cmd->kind == PGW_COMMAND_EARN)
        rc = finish_earn(w, cmd);
    if (rc == PGW_OK && !cmd->replayed && cmd->kind == PGW_COMMAND_EXPIRE_LOT)
        rc = pgw_store_expire_lot_points(w->store, cmd->lot_id, cmd->points_moved, &cmd->err);
    if (rc == PGW_OK && !cmd->replayed) {
        memcpy(cmd->record.fingerprint, cmd->fingerprint, PGW_HASH_LEN);
        cmd->record.first_transfer = cmd->transfers[0].id;
        cmd->record.transfer_count = (int64_t)cmd->n_transfers;
        rc = pgw_store_release(w->store, &cmd->err);
    } else {
        pgw_store_rollback_to(w->store, NULL); /* its own error, if any, is in cmd->err */
        for (size_t i = 0; i < cmd->n_transfers; i++)
            cmd->transfers[i].id = 0; /* those appends were undone */
    }
    cmd->rc = rc;
}

/* One transaction for the whole batch; if it cannot commit, nothing did. */
static void apply_batch(pgw_writer *w, size_t n)
{
    pgw_err err;
    pgw_err_clear(&err);
    int rc = pgw_store_begin(w->store, &err);
    for (size_t i = 0; rc == PGW_OK && i < n; i++) {
        apply_command(w, w->batch[i]);
        if (!pgw_store_in_transaction(w->store))
            rc = pgw_err_set(&err, PGW_EUNAVAILABLE, "the database abandoned the batch (%s)",
                             w->batch[i]->err.msg);
    }
    if (rc == PGW_OK)
        rc = pgw_store_commit(w->store, &err);
    if (rc != PGW_OK) {
        pgw_store_rollback(w->store, NULL);
        for (size_t i = 0; i < n; i++) {
            w->batch[i]->rc = pgw_err_set(&w->batch[i]->err, PGW_EUNAVAILABLE,
                                          "storage failed, nothing was written: %s", err.msg);
            w->batch[i]->replayed = false;
        }
    }
    pthread_mutex_lock(&w->lock);
    w->stats.batches += rc == PGW_OK;
    w->stats.failed_batches += rc != PGW_OK;
    w->stats.commands += n;
    w->stats.largest_batch = n > w->stats.largest_batch ? n : w->stats.largest_batch;
    pthread_mutex_unlock(&w->lock);
}

/* Waits for work; moves up to batch_max commands out of the ring. 0 = stop. */
static size_t take_batch(pgw_writer *w)
{
    pthread_mutex_lock(&w->lock);
    while ((w->count == 0 || w->paused) && !w->stopping)
        pthread_cond_wait(&w->wake, &w->lock);
    size_t n = 0;
    while (n < w->batch_max && w->count > 0) {
        w->batch[n++] = w->ring[w->head];
        w->head = (w->head + 1) % w->cap;
        w->count--;
    }
    pthread_mutex_unlock(&w->lock);
    return n;
}

static void *writer_main(void *arg)
{
    pgw_writer *w = arg;
    for (;;) {
        size_t n = take_batch(w);
        if (n == 0)
            break; /* stopping, and the queue is drained */
        apply_batch(w, n);
        for (size_t i = 0; i < n; i++)
            w->batch[i]->done(w->batch[i], w->batch[i]->payload);
    }
    return NULL;
}

static void writer_free(pgw_writer *w)
{
    pgw_store_close(w->store);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    free(w->ring);
    free(w->batch);
    free(w);
}

int pgw_writer_start(const pgw_writer_options *opts, pgw_writer **out, pgw_err *err)
{
    *out = NULL;
    if (opts->queue_cap < 1 || opts->queue_cap > PGW_WRITER_QUEUE_MAX || opts->batch_max < 1 ||
        opts->batch_max > PGW_WRITER_BATCH_MAX)
        return pgw_err_set(err, PGW_EINVAL, "writer queue 1..%d and batch 1..%d",
                           PGW_WRITER_QUEUE_MAX, PGW_WRITER_BATCH_MAX);
    pgw_writer *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory starting the writer");
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    w->cap = opts->queue_cap;
    w->expiry = opts->expiry;
    w->tz = opts->tz;
    w->batch_max = opts->batch_max;
    w->ring = calloc(w->cap, sizeof(*w->ring));
    w->batch = calloc(w->batch_max, sizeof(*w->batch));
    int rc = (w->ring && w->batch) ? PGW_OK : pgw_err_set(err, PGW_ENOMEM, "out of memory");
    if (rc == PGW_OK)
        rc = pgw_store_open(opts->db_url, true, &w->store, err);
    if (rc == PGW_OK && pthread_create(&w->thread, NULL, writer_main, w) != 0)
        rc = pgw_err_set(err, PGW_ENOMEM, "cannot start the writer thread");
    if (rc != PGW_OK) {
        writer_free(w);
        return rc;
    }
    *out = w;
    return PGW_OK;
}

static int check_command(const pgw_command *cmd, pgw_err *err)
{
    if (cmd->done == NULL)
        return pgw_err_set(err, PGW_EINVAL, "command without a completion callback");
    bool keyed = cmd->kind != PGW_COMMAND_EXPIRE_LOT; /* the writer names expiries */
    if (keyed && (memchr(cmd->key, '\0', sizeof(cmd->key)) == NULL || cmd->key[0] == '\0'))
        return pgw_err_set(err, PGW_EINVAL, "command without an idempotency key");
    switch (cmd->kind) {
    case PGW_COMMAND_TRANSFERS:
        if (cmd->n_transfers < 1 || cmd->n_transfers > PGW_COMMAND_TRANSFERS_MAX)
            return pgw_err_set(err, PGW_EINVAL, "a command writes 1..%d transfers, not %zu",
                               PGW_COMMAND_TRANSFERS_MAX, cmd->n_transfers);
        return PGW_OK;
    case PGW_COMMAND_EARN:
        if (cmd->member[0] == '\0' || memchr(cmd->member, '\0', sizeof(cmd->member)) == NULL ||
            cmd->n_lines < 1 || cmd->n_lines > PGW_BREAKDOWN_MAX)
            return pgw_err_set(err, PGW_EINVAL, "an earn needs a member and 1..%d lines",
                               PGW_BREAKDOWN_MAX);
        return PGW_OK;
    case PGW_COMMAND_EXPIRE_LOT:
        return cmd->lot_id > 0 ? PGW_OK : pgw_err_set(err, PGW_EINVAL, "no lot to expire");
    }
    return pgw_err_set(err, PGW_EINVAL, "unknown command kind %d", (int)cmd->kind);
}

int pgw_writer_submit(pgw_writer *w, pgw_command *cmd, pgw_err *err)
{
    int rc = check_command(cmd, err);
    if (rc != PGW_OK)
        return rc;
    pthread_mutex_lock(&w->lock);
    if (w->stopping)
        rc = pgw_err_set(err, PGW_ESTATE, "the writer is stopping");
    else if (w->count == w->cap)
        rc = pgw_err_set(err, PGW_EFULL, "write queue full (%zu commands)", w->cap);
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

/* A caller waiting on one command. */
typedef struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
} waiter;

static void wake_waiter(pgw_command *cmd, void *payload)
{
    (void)cmd;
    waiter *wt = payload;
    pthread_mutex_lock(&wt->lock);
    wt->done = true;
    pthread_cond_signal(&wt->cond);
    pthread_mutex_unlock(&wt->lock);
}

int pgw_writer_run(pgw_writer *w, pgw_command *cmd, pgw_err *err)
{
    waiter wt = {.done = false};
    pthread_mutex_init(&wt.lock, NULL);
    pthread_cond_init(&wt.cond, NULL);
    cmd->done = wake_waiter;
    cmd->payload = &wt;
    int rc = pgw_writer_submit(w, cmd, err);
    if (rc == PGW_OK) {
        pthread_mutex_lock(&wt.lock);
        while (!wt.done)
            pthread_cond_wait(&wt.cond, &wt.lock);
        pthread_mutex_unlock(&wt.lock);
        rc = cmd->rc;
        if (rc != PGW_OK && err != NULL)
            *err = cmd->err;
    }
    pthread_mutex_destroy(&wt.lock);
    pthread_cond_destroy(&wt.cond);
    return rc;
}

void pgw_writer_stop(pgw_writer *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    w->paused = false;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    PGW_ASSERT(w->count == 0); /* drained before the thread ended */
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

pgw_store *pgw_writer__store_for_test(pgw_writer *w)
{
    return w->store;
}
