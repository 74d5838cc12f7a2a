/*
 * test_writer.c - the writer thread against a real SQLite file: results only
 * after commit, replays and conflicts, a failing command failing alone in
 * its batch, backpressure, draining on stop, many threads racing on one
 * idempotency key (exactly one effect), no completion before the sync,
 * checkpoints on their own thread, a WAL that stays bounded on a slow disk
 * (a VFS shim slows the database's syncs), and a failed sync stopping all
 * writes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "server/writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <sqlite3.h>
#include "db_fixture.h"
#include "shim_vfs.h"
#include "util/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* backstop_pages: the WAL's (0: the default), which sets the checkpoints'. */
static pgw_writer *start_with_backstop(const db_fixture *f, size_t queue_cap, size_t batch_max,
                                       size_t backstop_pages)
{
    pgw_writer_options opts = {.db_url = f->url,
                               .queue_cap = queue_cap,
                               .batch_max = batch_max,
                               .wal_backstop_pages = backstop_pages};
    pgw_writer *w = NULL;
    pgw_err err;
    if (pgw_writer_start(&opts, &w, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    return w;
}

static pgw_writer *start(const db_fixture *f, size_t queue_cap, size_t batch_max)
{
    return start_with_backstop(f, queue_cap, batch_max, 0);
}

/* A purchase-like command: `n` transfers, fingerprint derived from `variant`. */
static void make_command(pgw_command *cmd, const char *key, int variant, size_t n)
{
    memset(cmd, 0, sizeof(*cmd));
    snprintf(cmd->key, sizeof(cmd->key), "%s", key);
    cmd->fingerprint[0] = (uint8_t)variant;
    cmd->n_transfers = n;
    for (size_t i = 0; i < n; i++) {
        pgw_transfer *t = &cmd->transfers[i];
        t->kind = PGW_TRANSFER_EARN;
        snprintf(t->idem_key, sizeof(t->idem_key), "%s", key);
        memcpy(t->fingerprint, cmd->fingerprint, PGW_HASH_LEN);
        snprintf(t->debit, sizeof(t->debit), i == 0 ? "shop:S001:issued" : "mall:campaigns");
        /* no member: these earn no lots, which verify holds a member to */
        snprintf(t->credit, sizeof(t->credit), "system:pool");
        t->points = 100 + variant;
        snprintf(t->channel, sizeof(t->channel), "store");
        t->occurred_at = 1795486500;
        t->recorded_at_us = 1795486500000000;
    }
}

static int64_t log_size(const db_fixture *f)
{
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(f->url, false, &s, NULL), PGW_OK);
    pgw_verify_report r;
    assert_int_equal(pgw_store_verify(s, &r, NULL), PGW_OK);
    assert_true(r.ok);
    pgw_store_close(s);
    return r.transfers;
}

static void test_replay_and_conflict(void **state)
{
    db_fixture *f = *state;
    pgw_writer *w = start(f, 16, 16);
    pgw_command cmd;
    pgw_err err;
    make_command(&cmd, "store:S001:E1", 1, 2);
    assert_int_equal(pgw_writer_run(w, &cmd, &err), PGW_OK);
    assert_false(cmd.replayed);
    assert_int_equal(cmd.transfers[0].id, 1);
    assert_int_equal(cmd.transfers[1].id, 2);
    make_command(&cmd, "store:S001:E1", 1, 2);
    assert_int_equal(pgw_writer_run(w, &cmd, &err), PGW_OK);
    assert_true(cmd.replayed);
    assert_int_equal(cmd.record.first_transfer, 1);
    assert_int_equal(cmd.record.transfer_count, 2);
    make_command(&cmd, "store:S001:E1", 2, 2); /* same key, different request */
    assert_int_equal(pgw_writer_run(w, &cmd, &err), PGW_ECONFLICT);
    assert_non_null(strstr(err.msg, "different request"));
    make_command(&cmd, "store:S001:E2", 1, 0);
    assert_int_equal(pgw_writer_run(w, &cmd, &err), PGW_EINVAL);
    pgw_writer_stop(w);
    assert_int_equal(log_size(f), 2);
}

/* A stream of 200: every 17th refused by its filler, the 100th malformed
 * (no transfers), the last 50 the first 50's keys again (even ones as
 * they were: replays; odd ones changed: conflicts; new where the first
 * never went in). */
typedef struct stream_test {
    pgw_writer *w;
    int filled, reported;
    int slot_of[200];
} stream_test;

enum { STREAM_N = 200, STREAM_DEPTH = 8 };

static int stream_fill(void *ctx, size_t slot, pgw_command *cmd, bool *end, pgw_err *err)
{
    stream_test *t = ctx;
    int i = t->filled;
    *end = i == STREAM_N;
    if (*end)
        return PGW_OK;
    t->filled++;
    t->slot_of[i] = (int)slot;
    if (i == STREAM_DEPTH - 1) /* seven queued: one transaction for them at least */
        pgw_writer__pause_for_test(t->w, false);
    if (i % 17 == 16)
        return pgw_err_set(err, PGW_EINVAL, "refused %d", i);
    char key[32];
    snprintf(key, sizeof(key), "store:S001:E%d", i < 150 ? i : i - 150);
    make_command(cmd, key, i >= 150 && i % 2 == 1 ? 2 : 1, i == 99 ? 0 : 1);
    return PGW_OK;
}

static void stream_report(void *ctx, size_t slot, const pgw_command *cmd, int rc,
                          const pgw_err *err)
{
    stream_test *t = ctx;
    int i = t->reported++;
    assert_int_equal((int)slot, t->slot_of[i]); /* in the order filled */
    int first = i < 150 ? i : i - 150;          /* the key's first command */
    bool first_in = first % 17 != 16 && first != 99;
    if (i % 17 == 16) {
        char want[32];
        snprintf(want, sizeof(want), "refused %d", i);
        assert_int_equal(rc, PGW_EINVAL);
        assert_string_equal(err->msg, want);
    } else if (i == 99) {
        assert_int_equal(rc, PGW_EINVAL); /* malformed */
    } else if (i >= 150 && first_in && i % 2 == 1) {
        assert_int_equal(rc, PGW_ECONFLICT);
    } else {
        assert_int_equal(rc, PGW_OK);
        assert_int_equal(cmd->replayed, i >= 150 && first_in);
    }
}

static void test_a_stream_reports_in_order_and_shares_commits(void **state)
{
    db_fixture *f = *state;
    pgw_writer *w = start(f, STREAM_DEPTH, 64);
    pgw_writer__pause_for_test(w, true);
    stream_test t = {.w = w};
    pgw_command *slots = calloc(STREAM_DEPTH, sizeof(*slots));
    assert_non_null(slots);
    assert_int_equal(pgw_writer_run_stream(w, slots, STREAM_DEPTH, stream_fill, stream_report, &t),
                     PGW_OK);
    assert_int_equal(t.reported, STREAM_N);
    pgw_writer_stats stats;
    pgw_writer_get_stats(w, &stats);
    assert_true(stats.largest_batch >= STREAM_DEPTH - 1 && stats.largest_batch <= STREAM_DEPTH);
    pgw_writer_stop(w);
    free(slots);
    int went_in = 0;
    for (int i = 0; i < STREAM_N; i++) {
        int first = i < 150 ? i : i - 150;
        bool first_in = first % 17 != 16 && first != 99;
        went_in += i % 17 != 16 && i != 99 && (i < 150 || !first_in);
    }
    assert_int_equal(log_size(f), went_in);
}

typedef struct counter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
} counter;

static void count_done(pgw_command *cmd, void *payload)
{
    (void)cmd;
    counter *c = payload;
    pthread_mutex_lock(&c->lock);
    c->done++;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* Command `prefix:i` of `n` transfers, counted in `c` when done. */
static void counted_command(pgw_command *cmd, const char *prefix, int i, size_t n, counter *c)
{
    char key[32];
    snprintf(key, sizeof(key), "%s:%d", prefix, i);
    make_command(cmd, key, 1, n);
    cmd->done = count_done;
    cmd->payload = c;
}

static void wait_for(counter *c, int n)
{
    pthread_mutex_lock(&c->lock);
    while (c->done < n)
        pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
}

/* Runs cmds[0..n) in one batch: they queue while the writer is paused. */
static void run_in_one_batch(pgw_writer *w, pgw_command *cmds, int n)
{
    counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    pgw_writer__pause_for_test(w, true);
    for (int i = 0; i < n; i++) {
        cmds[i].done = count_done;
        cmds[i].payload = &c;
        assert_int_equal(pgw_writer_submit(w, &cmds[i], NULL), PGW_OK);
    }
    pgw_writer__pause_for_test(w, false);
    wait_for(&c, n);
}

static void test_a_failing_command_fails_alone(void **state)
{
    db_fixture *f = *state;
    pgw_writer *w = start(f, 16, 16);
    static pgw_command cmds[3];
    make_command(&cmds[0], "k:A", 1, 2);
    make_command(&cmds[1], "k:B", 1, 2);
    cmds[1].transfers[1].points = 0; /* invalid: caught by the store */
    make_command(&cmds[2], "k:C", 1, 1);
    run_in_one_batch(w, cmds, 3);
    assert_int_equal(cmds[0].rc, PGW_OK);
    assert_int_equal(cmds[1].rc, PGW_EINVAL);
    assert_int_equal(cmds[2].rc, PGW_OK);
    assert_int_equal(cmds[2].transfers[0].id, 3); /* B's transfer 3 was undone */
    pgw_writer_stats stats;
    pgw_writer_get_stats(w, &stats);
    assert_int_equal(stats.batches, 1);
    assert_int_equal(stats.largest_batch, 3);
    /* B's key was not consumed by its failure: the corrected request goes in. */
    make_command(&cmds[1], "k:B", 1, 2);
    assert_int_equal(pgw_writer_run(w, &cmds[1], NULL), PGW_OK);
    assert_false(cmds[1].replayed);
    pgw_writer_stop(w);
    assert_int_equal(log_size(f), 5);
}

/* Unless told (batch_max 0), a SQLite writer commits every
 * PGW_WRITER_BATCH_SQLITE commands, however many wait, so the first of a
 * long queue are synced and answered while the rest are applied; a
 * PostgreSQL writer takes up to PGW_WRITER_BATCH_REMOTE at once. */
static void test_the_default_batch_is_the_databases(void **state)
{
    db_fixture *f = *state;
    enum { N = 2 * PGW_WRITER_BATCH_SQLITE + 8 };
    pgw_writer *w = start(f, N, 0);
    static pgw_command cmds[N];
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof(key), "k:batch:%d", i);
        make_command(&cmds[i], key, 1, 1);
    }
    run_in_one_batch(w, cmds, N); /* queued while paused: one batch if the batch allows */
    for (int i = 0; i < N; i++)
        assert_int_equal(cmds[i].rc, PGW_OK);
    pgw_writer_stats stats;
    pgw_writer_get_stats(w, &stats);
    assert_int_equal(stats.largest_batch, f->pg ? N : PGW_WRITER_BATCH_SQLITE);
    assert_int_equal(stats.batches, f->pg ? 1 : 3);
    pgw_writer_stop(w);
    assert_int_equal(log_size(f), N);
}

/*
 * A statement the database refuses after it was sent without waiting
 * (PostgreSQL's pipeline, pgw_sql_send): the command that sent it fails,
 * alone, saying why, and the next one's transfer takes the chain's next
 * id (the cached head forgot the refused transfer). A trigger refuses
 * credits to member:BAD; the store's own checks pass them.
 */
static void test_a_refused_sent_statement_fails_its_command_alone(void **state)
{
    db_fixture *f = *state;
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(f->url, true, &s, NULL), PGW_OK);
    pgw_store_close(s);
    const char *refuse =
        f->pg
            ? "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS"
              " $$ BEGIN RAISE EXCEPTION 'no points for BAD'; END $$;"
              "CREATE TRIGGER refuse_bad BEFORE INSERT ON transfers FOR EACH ROW"
              " WHEN (NEW.credit = 'member:BAD') EXECUTE FUNCTION refuse_bad()"
            : "CREATE TRIGGER refuse_bad BEFORE INSERT ON transfers"
              " WHEN NEW.credit = 'member:BAD' BEGIN SELECT RAISE(ABORT, 'no points for BAD'); END";
    assert_int_equal(db_fixture_exec(f, refuse), PGW_OK);
    pgw_writer *w = start(f, 16, 16);
    static pgw_command cmds[3];
    make_command(&cmds[0], "k:A", 1, 2);
    make_command(&cmds[1], "k:B", 1, 2);
    snprintf(cmds[1].transfers[1].credit, sizeof(cmds[1].transfers[1].credit), "member:BAD");
    make_command(&cmds[2], "k:C", 1, 1);
    run_in_one_batch(w, cmds, 3);
    assert_int_equal(cmds[0].rc, PGW_OK);
    /* A storage failure on both backends: SQLite calls a trigger's
     * RAISE(ABORT) a constraint's failure, which was ECONFLICT, an
     * idempotency conflict (409) naming the database's file. */
    assert_int_equal(cmds[1].rc, PGW_EIO);
    /* The reason names the database: the operator's (stderr) */
    assert_non_null(strstr(cmds[1].err.msg, "storage failed"));
    assert_int_equal(cmds[2].rc, PGW_OK);
    assert_int_equal(cmds[2].transfers[0].id, 3); /* B's transfers 3 and 4 were undone */
    pgw_writer_stats stats;
    pgw_writer_get_stats(w, &stats);
    assert_int_equal(stats.batches, 1);
    pgw_writer_stop(w);
    assert_int_equal(log_size(f), 3);
}

static void test_backpressure_and_drain_on_stop(void **state)
{
    db_fixture *f = *state;
    pgw_writer *w = start(f, 4, 2);
    counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    static pgw_command cmds[5];
    pgw_writer__pause_for_test(w, true);
    for (int i = 0; i < 5; i++)
        counted_command(&cmds[i], "k", i, 1, &c);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pgw_writer_submit(w, &cmds[i], NULL), PGW_OK);
    pgw_err err;
    assert_int_equal(pgw_writer_submit(w, &cmds[4], &err), PGW_EFULL);
    assert_non_null(strstr(err.msg, "queue full"));
    pgw_writer_stop(w); /* unpauses, applies the four queued commands, commits */
    assert_int_equal(c.done, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(cmds[i].rc, PGW_OK);
    assert_int_equal(log_size(f), 4);
}

typedef struct racer {
    pgw_writer *w;
    const char *key;
    int rc;
    bool replayed;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    pgw_command *cmd = calloc(1, sizeof(*cmd));
    make_command(cmd, r->key, 7, 2);
    r->rc = pgw_writer_run(r->w, cmd, NULL);
    r->replayed = cmd->replayed;
    free(cmd);
    return NULL;
}

static void test_many_threads_one_key_one_effect(void **state)
{
    db_fixture *f = *state;
    pgw_writer *w = start(f, 128, 32);
    enum { THREADS = 64 };
    pthread_t threads[THREADS];
    racer racers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        racers[i] = (racer){.w = w, .key = "store:S001:SAME"};
        assert_int_equal(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
    }
    int fresh = 0, replays = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(racers[i].rc, PGW_OK);
        fresh += !racers[i].replayed;
        replays += racers[i].replayed;
    }
    assert_int_equal(fresh, 1);
    assert_int_equal(replays, THREADS - 1);
    pgw_writer_stop(w);
    assert_int_equal(log_size(f), 2);
}

/*
 * A database that fills up mid-batch (SQLite may then abandon the whole
 * transaction): whatever the writer reports as committed must be in the
 * database afterwards, and whatever it reports as failed must not be.
 */
static void test_full_database_reports_only_what_committed(void **state)
{
    db_fixture *f = *state;
    if (f->pg)
        skip(); /* a full disk is made with SQLite's max_page_count */
    pgw_writer *w = start(f, 256, 256);
    pgw_command *cmd = calloc(1, sizeof(*cmd));
    make_command(cmd, "warm-up", 1, 1);
    assert_int_equal(pgw_writer_run(w, cmd, NULL), PGW_OK);
    pgw_writer__pause_for_test(w, true);
    sqlite3 *probe = NULL;
    assert_int_equal(sqlite3_open(f->path, &probe), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(probe, "PRAGMA page_count", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    char limit[64];
    snprintf(limit, sizeof(limit), "PRAGMA max_page_count = %d", sqlite3_column_int(st, 0) + 8);
    sqlite3_finalize(st);
    sqlite3_close(probe);
    assert_int_equal(pgw_store__exec_for_test(pgw_writer__store_for_test(w), limit, NULL), PGW_OK);

    enum { N = 200 };
    static pgw_command cmds[N];
    counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof(key), "full:%d", i);
        make_command(&cmds[i], key, 1, 2);
        memset(cmds[i].transfers[0].breakdown, 'x', 1000); /* fill pages fast */
        cmds[i].done = count_done;
        cmds[i].payload = &c;
        assert_int_equal(pgw_writer_submit(w, &cmds[i], NULL), PGW_OK);
    }
    pgw_writer__pause_for_test(w, false);
    wait_for(&c, N);
    int ok = 0, failed = 0;
    for (int i = 0; i < N; i++) {
        ok += cmds[i].rc == PGW_OK;
        failed += cmds[i].rc == PGW_EUNAVAILABLE || cmds[i].rc == PGW_EIO;
    }
    assert_int_equal(ok + failed, N);
    assert_true(failed > 0); /* the limit was really hit */
    pgw_writer_stop(w);

    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(f->url, false, &s, NULL), PGW_OK);
    for (int i = 0; i < N; i++) {
        bool found = true;
        pgw_idem_record rec;
        assert_int_equal(pgw_store_find_key(s, cmds[i].key, &found, &rec, NULL), PGW_OK);
        if (found != (cmds[i].rc == PGW_OK))
            fail_msg("%s: reported %s but %s in the database", cmds[i].key,
                     pgw_code_name(cmds[i].rc), found ? "present" : "absent");
    }
    pgw_verify_report r;
    assert_int_equal(pgw_store_verify(s, &r, NULL), PGW_OK);
    assert_true(r.ok);
    assert_int_equal(r.transfers, 1 + 2 * ok);
    pgw_store_close(s);
    free(cmd);
}

/* The newest transfer id another connection sees (committed, synced or not). */
static int64_t visible_head(const db_fixture *f)
{
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(f->url, false, &s, NULL), PGW_OK);
    int64_t id = 0;
    uint8_t hash[PGW_HASH_LEN];
    assert_int_equal(pgw_store_chain_head(s, &id, hash, NULL), PGW_OK);
    pgw_store_close(s);
    return id;
}

/* Waits (bounded) until another connection sees transfer `id` committed. */
static void wait_visible(const db_fixture *f, int64_t id)
{
    for (int i = 0; i < 2000 && visible_head(f) < id; i++)
        usleep(1000);
    assert_int_equal(visible_head(f), id);
}

static void test_completes_only_after_the_sync(void **state)
{
    db_fixture *f = *state;
    pgw_writer *w = start(f, 16, 16);
    counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    static pgw_command cmds[2];
    pgw_writer__hold_sync_for_test(w, true);
    for (int i = 0; i < 2; i++) {
        make_command(&cmds[i], i == 0 ? "sync:A" : "sync:B", 1, 1);
        cmds[i].done = count_done;
        cmds[i].payload = &c;
        assert_int_equal(pgw_writer_submit(w, &cmds[i], NULL), PGW_OK);
        wait_visible(f, i + 1); /* committed: the writer went on to the next */
    }
    usleep(20000);
    pthread_mutex_lock(&c.lock);
    assert_int_equal(c.done, 0); /* committed, not synced: nobody told */
    pthread_mutex_unlock(&c.lock);
    pgw_writer_stats stats;
    pgw_writer_get_stats(w, &stats);
    uint64_t syncs_before = stats.syncs;
    pgw_writer__hold_sync_for_test(w, false);
    wait_for(&c, 2);
    assert_int_equal(cmds[0].rc, PGW_OK);
    assert_int_equal(cmds[1].rc, PGW_OK);
    pgw_writer_get_stats(w, &stats);
    assert_int_equal(stats.syncs, syncs_before + 1); /* one sync served both batches */
    assert_int_equal(stats.batches, 2);
    pgw_writer_stop(w);
}

static int64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Raises *peak to the file's size now. A WAL file keeps its largest size
 * only up to the journal size limit, past which a start over cuts it back:
 * its size at the end is not its peak. */
static void note_peak(const char *path, int64_t *peak)
{
    int64_t size = file_size(path);
    *peak = size > *peak ? size : *peak;
}

/* Sends commands "wal:<from>".. in groups of 8, one group at least, until
 * the WAL holds `pages` pages after a commit; returns the next number. */
static int commit_until_wal(pgw_writer *w, int from, int64_t pages, pgw_command *cmds)
{
    counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    int i = from;
    do {
        c.done = 0;
        for (int k = 0; k < 8; k++, i++) {
            counted_command(&cmds[k], "wal", i, 4, &c);
            while (pgw_writer_submit(w, &cmds[k], NULL) == PGW_EFULL)
                usleep(1000);
        }
        wait_for(&c, 8);
    } while (pgw_store_wal_pages(pgw_writer__store_for_test(w)) < pages && i < from + 8000);
    return i;
}

/* SQLite: checkpoints run on the writer's checkpoint thread once commits
 * have filled half the WAL's backstop; its own connection copies the WAL
 * into the database while the writer goes on (the writer's connection
 * would only at the backstop). PostgreSQL checkpoints by itself: no thread. */
static void test_checkpoints_leave_the_writer(void **state)
{
    db_fixture *f = *state;
    enum { BACKSTOP = 4000 };
    pgw_writer *w = start_with_backstop(f, 64, 16, BACKSTOP);
    int64_t before = f->pg ? 0 : file_size(f->path);
    static pgw_command cmds[8];
    int n = commit_until_wal(w, 0, f->pg ? 0 : BACKSTOP / 2 + 100, cmds); /* PostgreSQL: 8 */
    pgw_writer_stats stats;
    pgw_writer_get_stats(w, &stats);
    for (int i = 0; i < 5000 && !f->pg && (stats.checkpoints == 0 || file_size(f->path) <= before);
         i++) {
        usleep(1000);
        pgw_writer_get_stats(w, &stats);
    }
    if (f->pg) {
        assert_int_equal(stats.checkpoints, 0);
    } else {
        assert_true(stats.checkpoints > 0);
        assert_true(file_size(f->path) > before); /* the log's pages reached the database */
        /* The writer's connection counts what its commits put in the WAL
         * (its hook replaces SQLite's automatic checkpoint). */
        assert_true(pgw_store_wal_pages(pgw_writer__store_for_test(w)) > 0);
    }
    pgw_writer_stop(w);
    assert_int_equal(log_size(f), 4 * (int64_t)n);
}

/* No checkpoint before the WAL holds `from` pages, with the writer's
 * backstop at `backstop` pages; then one, which syncs the database. */
static void checkpoints_only_past(const db_fixture *f, int backstop, int64_t from)
{
    pgw_writer *w = start_with_backstop(f, 64, 8, (size_t)backstop);
    static pgw_command cmds[8];
    /* A reader's snapshot keeps the WAL from starting over, as steady
     * writes do: a checkpoint here reaches the WAL's end between two
     * groups, and the next commit starts it over. */
    int next = commit_until_wal(w, 0, 8, cmds);
    sqlite3 *pin = NULL;
    assert_int_equal(sqlite3_open(f->path, &pin), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(pin, "BEGIN; SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL),
        SQLITE_OK);
    /* Short of `from`: none, given time to start one. */
    next = commit_until_wal(w, next, from - 100, cmds);
    usleep(100 * 1000);
    pgw_writer_stats stats;
    pgw_writer_get_stats(w, &stats);
    assert_int_equal(stats.checkpoints, 0);
    /* Past it: one, flushed. */
    next = commit_until_wal(w, next, from + 100, cmds);
    for (int i = 0; i < 5000 && stats.checkpoints == 0; i++) {
        usleep(1000);
        pgw_writer_get_stats(w, &stats);
    }
    print_message("backstop %d: %d commands, %llu checkpoints, %llu flushed\n", backstop, next,
                  (unsigned long long)stats.checkpoints,
                  (unsigned long long)stats.checkpoint_flushes);
    assert_true(stats.checkpoints > 0);
    assert_int_equal(stats.checkpoint_flushes, stats.checkpoints);
    assert_int_equal(sqlite3_exec(pin, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(pin);
    pgw_writer_stop(w);
    assert_int_equal(log_size(f), 4 * (int64_t)next);
}

/*
 * The checkpoint thread copies the WAL once it holds half the backstop, not
 * before (a page rewritten by many commits is copied once per checkpoint),
 * and syncs the database after its copy: SQLite syncs it only after a
 * checkpoint that reached the WAL's end, under steady writes restart's last
 * copy, which would then flush every page copied since the WAL began while
 * the writer is held. A reader's snapshot keeps the WAL from starting over.
 */
static void test_a_checkpoint_at_half_the_wal_and_synced(void **state)
{
    db_fixture *f = *state;
    if (f->pg)
        skip(); /* SQLite's WAL */
    checkpoints_only_past(f, 4000, 4000 / 2);
}

/*
 * Under steady writes the WAL starts over without the writer's own
 * checkpoint at the backstop, which stopped every command for its copy and
 * the sync of every page copied since the last sync: the checkpoint thread
 * copies and syncs until little is left, then holds the writer between two
 * batches for the last copy. So the WAL never reaches the backstop (its
 * file's size, sampled as commands go, is its peak).
 */
static void test_wal_starts_over_before_the_backstop(void **state)
{
    db_fixture *f = *state;
    if (f->pg)
        skip(); /* SQLite's WAL */
    enum { BACKSTOP = 8000, IN_FLIGHT = 128 };
    pgw_writer *w = start_with_backstop(f, 256, 16, BACKSTOP);
    counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    static pgw_command cmds[IN_FLIGHT];
    pgw_writer_stats stats = {0};
    int sent = 0;
    char wal[160];
    snprintf(wal, sizeof(wal), "%s-wal", f->path);
    int64_t peak = 0;
    /* Never an idle writer: a checkpoint between two batches would reach
     * the WAL's end by itself. */
    while (stats.restarts < 2 && sent < 200000) {
        note_peak(wal, &peak);
        pgw_command *cmd = &cmds[sent % IN_FLIGHT];
        if (sent >= IN_FLIGHT)
            wait_for(&c, sent - IN_FLIGHT + 1); /* its last use is done */
        counted_command(cmd, "steady", sent, 4, &c);
        while (pgw_writer_submit(w, cmd, NULL) == PGW_EFULL)
            usleep(1000);
        sent++;
        pgw_writer_get_stats(w, &stats);
    }
    wait_for(&c, sent);
    note_peak(wal, &peak);
    pgw_writer_get_stats(w, &stats);
    pgw_writer_stop(w);
    print_message(
        "%d commands, %llu starts over, writer held %llu us in all, WAL peak %lld bytes\n", sent,
        (unsigned long long)stats.restarts, (unsigned long long)stats.restart_hold_us_sum,
        (long long)peak);
    assert_true(stats.restarts >= 2);
    assert_true(stats.checkpoint_flushes > 0);
    assert_true(peak < BACKSTOP * (2048 + 24)); /* the writer never checkpointed itself */
    assert_int_equal(log_size(f), 4 * (int64_t)sent);
}

/* ---- a slow disk: SQLite's default VFS with the database file's syncs slowed ---- */

static atomic_int slow_db_sync_ms; /* 0: as fast as the disk */

static void slow_db_sync(shim_file *f, int flags)
{
    (void)flags;
    int ms = atomic_load(&slow_db_sync_ms);
    if ((f->open_flags & SQLITE_OPEN_MAIN_DB) != 0 && ms > 0)
        usleep((useconds_t)ms * 1000);
}

/* Makes the slow VFS the default, once for the whole process. */
static void install_slow_disk(void)
{
    shim_vfs_hooks.before_sync = slow_db_sync;
    assert_true(shim_vfs_install());
}

/*
 * On a disk whose syncs of the database take 50 ms the checkpoint thread
 * checkpoints back to back. It once kept the writer's own checkpoint busy
 * for ever, and only that one lets the WAL start over under steady writes:
 * the WAL grew without bound. With a backstop of 500 pages it must stay
 * near it (its file's size, sampled as commands go).
 */
#define WAL_SLOW_COMMANDS 1500

static void test_wal_bounded_on_a_slow_disk(void **state)
{
    db_fixture *f = *state;
    if (f->pg)
        skip(); /* SQLite's WAL */
    install_slow_disk();
    atomic_store(&slow_db_sync_ms, 50);
    pgw_writer *w = start_with_backstop(f, 256, 64, 500);
    counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    static pgw_command cmds[128];
    /* A number of commands, not a time: 3 s gave 766 under TSan beside
     * make test's other tests (2026-12-04), too few to prove anything.
     * The minute is only against a hang. */
    int64_t until = pgw_monotonic_us() + 60000000, sent = 0;
    char wal[160];
    snprintf(wal, sizeof(wal), "%s-wal", f->path);
    int64_t peak = 0;
    for (int i = 0; sent < WAL_SLOW_COMMANDS && pgw_monotonic_us() < until; i++) {
        note_peak(wal, &peak);
        pgw_command *cmd = &cmds[i % 128];
        if (i >= 128)
            wait_for(&c, i - 127); /* its last use is done */
        counted_command(cmd, "slow", i, 4, &c);
        while (pgw_writer_submit(w, cmd, NULL) == PGW_EFULL)
            usleep(1000);
        sent++;
    }
    wait_for(&c, (int)sent);
    note_peak(wal, &peak);
    pgw_writer_stop(w);
    atomic_store(&slow_db_sync_ms, 0);
    print_message("%lld commands, WAL peak %lld bytes\n", (long long)sent, (long long)peak);
    assert_true(sent == WAL_SLOW_COMMANDS);    /* enough to pass the backstop many times */
    assert_true(peak < 4 * 500 * (2048 + 24)); /* a few backstops' worth, not growing */
}

/* ---- a full disk that empties again ---- */

static atomic_bool wal_writes_fail;

static int fail_wal_writes(shim_file *f, int n)
{
    (void)n;
    return (f->open_flags & SQLITE_OPEN_WAL) != 0 && atomic_load(&wal_writes_fail) ? SQLITE_FULL
                                                                                   : SQLITE_OK;
}

/* Whether /healthz reports the storage down, within `ms`. */
static bool health_down_within(pgw_writer *w, bool down, int ms)
{
    pgw_writer_stats stats;
    for (int waited = 0;; waited += 50) {
        pgw_writer_get_stats(w, &stats);
        if (stats.last_batch_failed == down || waited >= ms)
            return stats.last_batch_failed == down;
        usleep(50 * 1000);
    }
}

/*
 * After a commit failed (a full disk) health stays down until a commit
 * works: on SQLite a read answering says nothing of writes (a full disk
 * answers them), and the idle ping of fb39d74 set health ok again while
 * every write still failed: it flapped. The disk emptied, the next write
 * succeeds and health is ok. (A probe that commits one page was tried: on
 * a full tmpfs it succeeded while whole events failed.)
 */
static void test_a_failed_commit_keeps_health_down_until_a_write(void **state)
{
    db_fixture *f = *state;
    if (f->pg)
        skip(); /* SQLite's own files */
    shim_vfs_hooks.before_write = fail_wal_writes;
    assert_true(shim_vfs_install());
    pgw_writer *w = start(f, 16, 16);
    pgw_command cmd;
    make_command(&cmd, "full:before", 1, 1);
    assert_int_equal(pgw_writer_run(w, &cmd, NULL), PGW_OK);
    atomic_store(&wal_writes_fail, true);
    make_command(&cmd, "full:during", 1, 1);
    /* A command no request sent (a CLI run's): its error and the commit's
     * line say so, not "503" and "the gateway's log" (regression). The
     * line is written before the batch's commands complete. */
    FILE *said = tmpfile();
    assert_non_null(said);
    fflush(stderr);
    int kept = dup(STDERR_FILENO);
    assert_true(kept >= 0 && dup2(fileno(said), STDERR_FILENO) >= 0);
    pgw_err err;
    int rc = pgw_writer_run(w, &cmd, &err);
    fflush(stderr);
    assert_true(dup2(kept, STDERR_FILENO) >= 0);
    close(kept);
    assert_int_equal(rc, PGW_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "nothing was written (stderr says why)"));
    char line[512] = "";
    rewind(said);
    size_t got = fread(line, 1, sizeof(line) - 1, said);
    line[got] = '\0';
    fclose(said);
    assert_non_null(strstr(line, "pointsgw: a commit failed, nothing written of its 1 command: "));
    assert_true(health_down_within(w, true, 0));
    usleep(2500 * 1000); /* two idle pings, which a read answers */
    assert_true(health_down_within(w, true, 0));
    /* A batch that writes nothing (serve's periodic prune finding nothing
     * to prune) commits on a full disk: it says nothing of writes, yet it
     * set health ok and wrote "commits work again" while the next event
     * still failed (a probe of serve on a full tmpfs, the data-safety
     * review). */
    memset(&cmd, 0, sizeof(cmd));
    cmd.kind = PGW_COMMAND_PRUNE;
    cmd.at = 1795486500;
    rc = pgw_writer_run(w, &cmd, &err);
    if (rc != PGW_OK)
        fail_msg("a prune of nothing on a full disk: %s", err.msg);
    assert_true(health_down_within(w, true, 0));
    /* A write refused at its begin meanwhile (the file moved aside, then
     * back) leaves it down: it cleared the latch (the review of 87436ff). */
    char aside[600];
    snprintf(aside, sizeof(aside), "%s.aside", f->path);
    assert_int_equal(rename(f->path, aside), 0);
    make_command(&cmd, "full:moved", 1, 1);
    assert_int_equal(pgw_writer_run(w, &cmd, NULL), PGW_EUNAVAILABLE);
    assert_int_equal(rename(aside, f->path), 0);
    usleep(2500 * 1000);
    assert_true(health_down_within(w, true, 0));
    atomic_store(&wal_writes_fail, false);
    make_command(&cmd, "full:after", 1, 1);
    assert_int_equal(pgw_writer_run(w, &cmd, NULL), PGW_OK);
    assert_true(health_down_within(w, false, 0));
    pgw_writer_stop(w);
    shim_vfs_hooks.before_write = NULL;
    assert_int_equal(log_size(f), 2);
}

static void test_a_failed_sync_is_final(void **state)
{
    db_fixture *f = *state;
    pgw_writer *w = start(f, 16, 16);
    pgw_command cmd;
    make_command(&cmd, "disk:ok", 1, 1);
    assert_int_equal(pgw_writer_run(w, &cmd, NULL), PGW_OK);
    pgw_writer__pause_for_test(w, true); /* the store is touched only while paused */
    pgw_store__fail_syncs_for_test(pgw_writer__store_for_test(w));
    pgw_writer__pause_for_test(w, false);
    pgw_err err;
    make_command(&cmd, "disk:A", 1, 1);
    assert_int_equal(pgw_writer_run(w, &cmd, &err), PGW_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "not known to be durable"));
    assert_null(strstr(err.msg, "log.db"));
    assert_int_equal(visible_head(f), 2); /* committed, but never acknowledged */
    make_command(&cmd, "disk:B", 1, 1);
    assert_int_equal(pgw_writer_run(w, &cmd, &err), PGW_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "storage failed, nothing was written"));
    /* The reason names the file: it is the operator's (stderr), not the caller's. */
    assert_null(strstr(err.msg, "log.db"));
    assert_int_equal(visible_head(f), 2); /* nothing written after the failure */
    pgw_writer_stats stats;
    pgw_writer_get_stats(w, &stats);
    assert_true(stats.last_batch_failed); /* /healthz reports the storage down */
    pgw_writer_stop(w);
    /* After a restart the unacknowledged command is a replay: one effect. */
    w = start(f, 16, 16);
    make_command(&cmd, "disk:A", 1, 1);
    assert_int_equal(pgw_writer_run(w, &cmd, NULL), PGW_OK);
    assert_true(cmd.replayed);
    pgw_writer_stop(w);
    assert_int_equal(log_size(f), 2);
}

/* A mini-program login's command for `openid`, session `sid`, from one address. */
static void link_make(pgw_command *cmd, const char *openid, const char *sid, int64_t t)
{
    memset(cmd, 0, sizeof(*cmd));
    cmd->kind = PGW_COMMAND_LINK;
    cmd->by_identity = true;
    cmd->who.kind = PGW_ID_MP_OPENID;
    snprintf(cmd->who.lookup, sizeof(cmd->who.lookup), "%s", openid);
    snprintf(cmd->session_id, sizeof(cmd->session_id), "%s", sid);
    snprintf(cmd->appid, sizeof(cmd->appid), "wxapp");
    snprintf(cmd->channel, sizeof(cmd->channel), "wechat_mp");
    snprintf(cmd->key, sizeof(cmd->key), "mp_login:%s", sid);
    snprintf(cmd->client_address, sizeof(cmd->client_address), "10.1.1.1");
    cmd->at = cmd->asked_at = t;
    cmd->session_expires = t + 86400;
    memcpy(cmd->fingerprint, sid, 16);
}

/*
 * Regression (R3's review): a sign-up the hourly limit refused, in a batch
 * whose commit failed, kept its retry_at: its 503 said Retry-After to the
 * hour's end, though the rollback undid the enrolment that filled the
 * limit and the same login works at once.
 */
static void test_a_failed_batch_keeps_no_retry_at(void **state)
{
    db_fixture *f = *state;
    if (f->pg)
        skip();
    shim_vfs_hooks.before_write = fail_wal_writes;
    assert_true(shim_vfs_install());
    pgw_writer_options opts = {.db_url = f->url, .queue_cap = 16, .batch_max = 16};
    opts.policy.expiry = (pgw_expiry){PGW_EXPIRY_NEVER, 0, 0};
    opts.policy.risk.max_new_members_per_ip_per_hour = 1;
    pgw_writer *w = NULL;
    pgw_err err;
    if (pgw_writer_start(&opts, &w, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    int64_t t = (int64_t)time(NULL);
    static pgw_command cmds[2];
    link_make(&cmds[0], "oA", "sessAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", t);
    link_make(&cmds[1], "oB", "sessBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", t);
    atomic_store(&wal_writes_fail, true);
    run_in_one_batch(w, cmds, 2);
    atomic_store(&wal_writes_fail, false);
    assert_int_equal(cmds[1].rc, PGW_EUNAVAILABLE);
    /* the same login works now: nothing was enrolled */
    pgw_command again;
    link_make(&again, "oB", "sessCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", t);
    assert_int_equal(pgw_writer_run(w, &again, NULL), PGW_OK);
    pgw_writer_stop(w);
    shim_vfs_hooks.before_write = NULL;
    assert_int_equal(cmds[1].retry_at, 0); /* a 503 with no hour-long Retry-After */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_stream_reports_in_order_and_shares_commits,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_replay_and_conflict, db_fixture_setup_migrated,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_failing_command_fails_alone,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_the_default_batch_is_the_databases,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_refused_sent_statement_fails_its_command_alone,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_and_drain_on_stop,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_full_database_reports_only_what_committed,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_many_threads_one_key_one_effect,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_completes_only_after_the_sync,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints_leave_the_writer,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_checkpoint_at_half_the_wal_and_synced,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_wal_starts_over_before_the_backstop,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_wal_bounded_on_a_slow_disk, db_fixture_setup_migrated,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_sync_is_final, db_fixture_setup_migrated,
                                        db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_commit_keeps_health_down_until_a_write,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_batch_keeps_no_retry_at,
                                        db_fixture_setup_migrated, db_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
