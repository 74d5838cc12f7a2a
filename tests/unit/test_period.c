/*
 * test_period.c - finance's closed periods, on both backends: a close
 * only moves later and waits for the work dated before it (the sweep's);
 * every write dated before it is refused with PGW_ECLOSED and changes
 * nothing, a replay of what was written before it still answers; a close
 * and a write racing for the lock cannot both win; an expiry dated
 * before it is refused; verify tells a transfer written into a closed
 * period.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "config/config.h"
#include "server/expire.h"
#include "server/report.h"
#include "server/writer.h"
#include "store/store.h"

#include "db_fixture.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DAY 86400

static pgw_store *open_store(const db_fixture *f)
{
    pgw_store *s = NULL;
    pgw_err err;
    if (pgw_store_open(f->url, true, &s, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    return s;
}

static pgw_writer *start_writer(const db_fixture *f)
{
    pgw_writer_options wo = {.db_url = f->url,
                             .queue_cap = 16,
                             .batch_max = 8,
                             .policy = {.expiry = {PGW_EXPIRY_ROLLING, 1, 0}}};
    assert_int_equal(pgw_tz_lookup("Asia/Shanghai", &wo.policy.tz, NULL), PGW_OK);
    pgw_writer *w = NULL;
    pgw_err err;
    if (pgw_writer_start(&wo, &w, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    return w;
}

/* A fresh keyed command whose fingerprint derives from its key. */
static void keyed(pgw_command *cmd, pgw_command_kind kind, const char *key, int64_t at)
{
    memset(cmd, 0, sizeof(*cmd));
    cmd->kind = kind;
    snprintf(cmd->key, sizeof(cmd->key), "%s", key);
    for (size_t i = 0; key[i] != '\0' && i < PGW_HASH_LEN; i++)
        cmd->fingerprint[i] = (uint8_t)key[i];
    snprintf(cmd->channel, sizeof(cmd->channel), "store");
    cmd->at = at;
}

static void earn_cmd(pgw_command *cmd, const char *key, int64_t at)
{
    keyed(cmd, PGW_COMMAND_EARN, key, at);
    snprintf(cmd->member, sizeof(cmd->member), "M1");
    snprintf(cmd->shop, sizeof(cmd->shop), "S001");
    cmd->lines[0] = (pgw_earn_line){"shop:S001:issued", "format:retail", 100};
    cmd->n_lines = 1;
    cmd->amount_fen = 10000;
}

static int run(pgw_writer *w, pgw_command *cmd)
{
    pgw_err err;
    return pgw_writer_run(w, cmd, &err);
}

/* The mall's zone the refusals name times in. */
static const pgw_tz *shanghai(void)
{
    static pgw_tz tz;
    if (tz.name[0] == '\0')
        assert_int_equal(pgw_tz_lookup("Asia/Shanghai", &tz, NULL), PGW_OK);
    return &tz;
}

/* `t` as finance writes it in the mall's zone. */
static const char *local(int64_t t, char out[PGW_RFC3339_MAX])
{
    assert_int_equal(pgw_format_rfc3339(t, shanghai(), out, PGW_RFC3339_MAX), PGW_OK);
    return out;
}

#define assert_said(err, ...)                                                                      \
    do {                                                                                           \
        char want_[256];                                                                           \
        snprintf(want_, sizeof(want_), __VA_ARGS__);                                               \
        if (strstr((err).msg, want_) == NULL)                                                      \
            fail_msg("\"%s\" does not say \"%s\"", (err).msg, want_);                              \
    } while (0)

/* Closes the period before `before` in a transaction of its own. */
static int close_period(const db_fixture *f, int64_t before, bool *moved, pgw_err *err)
{
    pgw_store *s = open_store(f);
    int rc = pgw_store_begin(s, err);
    if (rc == PGW_OK)
        rc = pgw_store_close_period(s, before, (int64_t)time(NULL) * 1000000, shanghai(), moved,
                                    err);
    int end = rc == PGW_OK ? pgw_store_commit(s, err) : pgw_store_rollback(s, NULL);
    pgw_store_close(s);
    return rc != PGW_OK ? rc : end;
}

static int64_t head_of(const db_fixture *f)
{
    pgw_store *s = open_store(f);
    int64_t id = 0;
    uint8_t hash[PGW_HASH_LEN];
    assert_int_equal(pgw_store_chain_head(s, &id, hash, NULL), PGW_OK);
    pgw_store_close(s);
    return id;
}

static void assert_verifies(const db_fixture *f)
{
    pgw_store *s = open_store(f);
    pgw_verify_report r;
    assert_int_equal(pgw_store_verify(s, &r, NULL), PGW_OK);
    if (!r.ok)
        fail_msg("verify: %s", r.problem);
    pgw_store_close(s);
}

/* A close waits for the sweep's work dated before it (a lot due, a hold
 * past its deadline), moves only later, never ahead of the clock, and
 * changes nothing when refused. */
static void test_a_close_moves_later_once_nothing_is_due(void **state)
{
    const db_fixture *f = *state;
    const int64_t now = (int64_t)time(NULL), t0 = now - 45 * DAY, close = now - 5 * DAY;
    pgw_writer *w = start_writer(f);
    pgw_command cmd;
    earn_cmd(&cmd, "store:S001:P1", t0); /* its lot lapses a month on: before the close */
    assert_int_equal(run(w, &cmd), PGW_OK);
    keyed(&cmd, PGW_COMMAND_HOLD, "H1", t0 + 10);
    snprintf(cmd.hold_id, sizeof(cmd.hold_id), "H1");
    snprintf(cmd.member, sizeof(cmd.member), "M1");
    snprintf(cmd.shop, sizeof(cmd.shop), "S002");
    cmd.points = 10;
    cmd.deadline = t0 + 600;
    assert_int_equal(run(w, &cmd), PGW_OK);
    pgw_err err;
    bool moved = true;
    assert_int_equal(close_period(f, close, &moved, &err), PGW_ESTATE);
    /* The finance walkthrough: the times were unix seconds; they are said
     * in the mall's zone, as finance writes them and copies --as-of. */
    char a[PGW_RFC3339_MAX], b[PGW_RFC3339_MAX];
    assert_said(err, "work dated before %s is not written yet (lot ", local(close, a));
    assert_said(err, "+08:00 with %d points)", 90); /* its expiry, a month on; 10 held */
    assert_said(err, "run pointsgw expire --as-of %s first", local(close - 1, a));
    assert_false(moved);
    pgw_period_close c;
    pgw_store *s = open_store(f);
    assert_int_equal(pgw_store_period_close(s, &c, &err), PGW_OK);
    assert_int_equal(c.before, 0); /* nothing changed */
    pgw_store_close(s);
    pgw_expire_report done;
    assert_int_equal(pgw_expire_due(w, f->url, close, NULL, NULL, NULL, &done, &err), PGW_OK);
    assert_int_equal(done.lots, 1);
    assert_int_equal(done.holds, 1);
    pgw_writer_stop(w);
    assert_int_equal(close_period(f, now + 60, &moved, &err), PGW_EINVAL); /* ahead */
    assert_said(err, "(%s is ahead of the clock)", local(now + 60, a));
    assert_int_equal(close_period(f, close, &moved, &err), PGW_OK);
    assert_true(moved);
    assert_int_equal(close_period(f, close, &moved, &err), PGW_OK); /* again: as it is */
    assert_false(moved);
    assert_int_equal(close_period(f, close - 1, &moved, &err), PGW_EINVAL);
    assert_said(err,
                "the period is closed before %s already; a close only moves later, %s is "
                "earlier: nothing changed",
                local(close, a), local(close - 1, b));
    s = open_store(f);
    assert_int_equal(pgw_store_period_close(s, &c, &err), PGW_OK);
    assert_int_equal(c.before, close);
    assert_true(c.closed_at_us >= now * 1000000);
    pgw_store_close(s);
    /* An expiry dated before the close is refused, and so is the sweep's
     * command itself. The refusal (serve's sweep says it) names the times
     * in the mall's zone, as pointsgw expire and period close do: it said
     * unix seconds. */
    w = start_writer(f);
    assert_int_equal(pgw_expire_due(w, f->url, close - 1, shanghai(), NULL, NULL, &done, &err),
                     PGW_ECLOSED);
    assert_said(err,
                "the period before %s is closed: an expiry as of %s would be dated in it; "
                "expire as of %s or later",
                local(close, a), local(close - 1, b), local(close, a));
    pgw_writer_stop(w);
    assert_verifies(f);
}

/* Every write dated before the close is refused and writes nothing; a
 * replay of a write from before the close answers as one; what is dated
 * by the clock (a hold, a redemption) goes on. */
static void test_writes_before_the_close_are_refused(void **state)
{
    const db_fixture *f = *state;
    const int64_t now = (int64_t)time(NULL), close = now - 5 * DAY;
    pgw_writer *w = start_writer(f);
    pgw_command p1, cmd;
    earn_cmd(&p1, "store:S001:P1", close - 2 * DAY);
    assert_int_equal(run(w, &p1), PGW_OK);
    assert_int_equal(p1.points_moved, 100);
    keyed(&cmd, PGW_COMMAND_REFUND, "store:S001:R0", close - DAY);
    snprintf(cmd.original, sizeof(cmd.original), "store:S001:P1");
    cmd.amount_fen = 1000;
    assert_int_equal(run(w, &cmd), PGW_OK);
    pgw_command r0 = cmd;
    pgw_writer_stop(w);
    pgw_err err;
    bool moved = false;
    assert_int_equal(close_period(f, close, &moved, &err), PGW_OK);
    int64_t head = head_of(f);
    w = start_writer(f);
    /* Replays first: the purchase (appended first) and the refund (its
     * key looked up first). */
    earn_cmd(&cmd, "store:S001:P1", close - 2 * DAY);
    assert_int_equal(run(w, &cmd), PGW_OK);
    assert_true(cmd.replayed);
    /* What a replay in the open period says too (command.h: EARN, earned). */
    if (cmd.points_moved != p1.points_moved)
        fail_msg("the purchase replayed before the close moved %lld points, not %lld",
                 (long long)cmd.points_moved, (long long)p1.points_moved);
    cmd = r0;
    if (run(w, &cmd) != PGW_OK)
        fail_msg("replaying the refund: %s", cmd.err.msg);
    assert_true(cmd.replayed);
    earn_cmd(&cmd, "store:S001:P1", close - DAY); /* the key, another request */
    cmd.fingerprint[PGW_HASH_LEN - 1] ^= 0x5a;
    assert_int_equal(run(w, &cmd), PGW_ECONFLICT);
    /* New writes dated before it. */
    earn_cmd(&cmd, "store:S001:P2", close - 1);
    assert_int_equal(run(w, &cmd), PGW_ECLOSED);
    assert_non_null(strstr(cmd.err.msg, "date it in the open period"));
    keyed(&cmd, PGW_COMMAND_REFUND, "store:S001:R1", close - 60);
    snprintf(cmd.original, sizeof(cmd.original), "store:S001:P1");
    cmd.amount_fen = 1000;
    assert_int_equal(run(w, &cmd), PGW_ECLOSED);
    keyed(&cmd, PGW_COMMAND_TRANSFERS, "adjust:1", 0);
    cmd.n_transfers = 1;
    pgw_transfer *t = &cmd.transfers[0];
    t->kind = PGW_TRANSFER_ADJUST;
    snprintf(t->idem_key, sizeof(t->idem_key), "adjust:1");
    snprintf(t->debit, sizeof(t->debit), "system:adjustments");
    snprintf(t->credit, sizeof(t->credit), "member:M1");
    t->points = 5;
    snprintf(t->channel, sizeof(t->channel), "admin");
    t->occurred_at = close - 1;
    t->recorded_at_us = now * 1000000;
    assert_int_equal(run(w, &cmd), PGW_ECLOSED);
    assert_int_equal(head_of(f), head); /* nothing written */
    /* At the close and after: the open period. A refund of a purchase in
     * the closed period is dated by itself. */
    earn_cmd(&cmd, "store:S001:P3", close);
    assert_int_equal(run(w, &cmd), PGW_OK);
    earn_cmd(&cmd, "store:S001:P3", close);
    assert_int_equal(run(w, &cmd), PGW_OK);
    assert_true(cmd.replayed);
    assert_int_equal(cmd.points_moved, p1.points_moved); /* the same lines: 100 */
    keyed(&cmd, PGW_COMMAND_REFUND, "store:S001:R2", now);
    snprintf(cmd.original, sizeof(cmd.original), "store:S001:P1");
    cmd.amount_fen = 1000;
    assert_int_equal(run(w, &cmd), PGW_OK);
    keyed(&cmd, PGW_COMMAND_HOLD, "H1", now);
    snprintf(cmd.hold_id, sizeof(cmd.hold_id), "H1");
    snprintf(cmd.member, sizeof(cmd.member), "M1");
    snprintf(cmd.shop, sizeof(cmd.shop), "S002");
    cmd.points = 10;
    cmd.deadline = now + 600;
    assert_int_equal(run(w, &cmd), PGW_OK);
    keyed(&cmd, PGW_COMMAND_REDEEM, "X1", now);
    snprintf(cmd.hold_id, sizeof(cmd.hold_id), "X1");
    snprintf(cmd.member, sizeof(cmd.member), "M1");
    snprintf(cmd.shop, sizeof(cmd.shop), "S002");
    cmd.points = 10;
    assert_int_equal(run(w, &cmd), PGW_OK);
    pgw_writer_stop(w);
    assert_verifies(f);
}

/* A write that took the lock after a close was made waits for it and
 * then reads it: a close and a write racing cannot both win. */
typedef struct racer {
    const db_fixture *f;
    int64_t dated;
    int rc;
} racer;

static void *race_append(void *arg)
{
    racer *r = arg;
    pgw_store *s = open_store(r->f);
    pgw_err err;
    r->rc = pgw_store_begin(s, &err);
    if (r->rc == PGW_OK) {
        pgw_transfer t;
        memset(&t, 0, sizeof(t));
        t.kind = PGW_TRANSFER_ADJUST;
        snprintf(t.idem_key, sizeof(t.idem_key), "race:1");
        snprintf(t.debit, sizeof(t.debit), "system:adjustments");
        snprintf(t.credit, sizeof(t.credit), "member:M1");
        t.points = 1;
        snprintf(t.channel, sizeof(t.channel), "admin");
        t.occurred_at = r->dated;
        t.recorded_at_us = (int64_t)time(NULL) * 1000000;
        r->rc = pgw_store_append_transfer(s, &t, &err);
        if (r->rc == PGW_OK)
            r->rc = pgw_store_commit(s, &err);
        else
            pgw_store_rollback(s, NULL);
    }
    pgw_store_close(s);
    return NULL;
}

static void test_a_close_and_a_write_racing_do_not_both_win(void **state)
{
    const db_fixture *f = *state;
    const int64_t now = (int64_t)time(NULL), close = now - DAY;
    pgw_store *s = open_store(f);
    pgw_err err;
    bool moved = false;
    assert_int_equal(pgw_store_begin(s, &err), PGW_OK);
    assert_int_equal(pgw_store_close_period(s, close, now * 1000000, NULL, &moved, &err), PGW_OK);
    racer r = {.f = f, .dated = close - 60};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, race_append, &r), 0);
    usleep(300 * 1000); /* the write waits for the close's lock meanwhile */
    assert_int_equal(pgw_store_commit(s, &err), PGW_OK);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, PGW_ECLOSED);
    assert_int_equal(head_of(f), 0);
    pgw_store_close(s);
}

/* verify tells a transfer dated before a close but written after it
 * (here: the close made as if before the transfer was written), and the
 * close in force for each transfer is the one it was written under. */
static void test_verify_tells_a_transfer_written_into_a_closed_period(void **state)
{
    const db_fixture *f = *state;
    const int64_t now = (int64_t)time(NULL), close = now - 5 * DAY;
    pgw_writer *w = start_writer(f);
    pgw_command cmd;
    earn_cmd(&cmd, "store:S001:P1", close - DAY);
    assert_int_equal(run(w, &cmd), PGW_OK);
    earn_cmd(&cmd, "store:S001:P2", close - DAY);
    assert_int_equal(run(w, &cmd), PGW_OK);
    pgw_writer_stop(w);
    assert_verifies(f);
    /* An older close, before either was dated, made after the first: fine. */
    char sql[256];
    snprintf(sql, sizeof(sql), "INSERT INTO period_closes VALUES (%lld, %lld, 1)",
             (long long)(close - 3 * DAY), (long long)(now * 1000000));
    assert_int_equal(db_fixture_exec(f, sql), 0);
    assert_verifies(f);
    /* A close of their period, made (so it says) after the first only. */
    snprintf(sql, sizeof(sql), "INSERT INTO period_closes VALUES (%lld, %lld, 1)", (long long)close,
             (long long)(now * 1000000));
    assert_int_equal(db_fixture_exec(f, sql), 0);
    pgw_store *s = open_store(f);
    pgw_verify_report r;
    assert_int_equal(pgw_store_verify(s, &r, NULL), PGW_OK);
    assert_false(r.ok);
    assert_int_equal(r.bad_id, 0); /* the chain holds */
    if (strstr(r.problem, "transfer 2 is dated") == NULL ||
        strstr(r.problem, "written after that close") == NULL)
        fail_msg("verify said: %s", r.problem);
    pgw_store_close(s);
}

/* verify holds a transfer only to a close in force when it was written:
 * one dated before 1970 (the store takes any date; a raw transfer, or a
 * log verify is asked to judge) with no close before it is no closed
 * period's, and verify says so instead of reading a close that is not
 * there. */
static void test_verify_without_a_close_in_force(void **state)
{
    const db_fixture *f = *state;
    pgw_store *s = open_store(f);
    pgw_err err;
    assert_int_equal(pgw_store_begin(s, &err), PGW_OK);
    pgw_transfer t;
    memset(&t, 0, sizeof(t));
    t.kind = PGW_TRANSFER_ADJUST;
    snprintf(t.idem_key, sizeof(t.idem_key), "old:1");
    snprintf(t.debit, sizeof(t.debit), "system:adjustments");
    snprintf(t.credit, sizeof(t.credit), "member:M1");
    t.points = 1;
    snprintf(t.channel, sizeof(t.channel), "admin");
    t.occurred_at = -1;
    t.recorded_at_us = (int64_t)time(NULL) * 1000000;
    if (pgw_store_append_transfer(s, &t, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(pgw_store_commit(s, &err), PGW_OK);
    pgw_store_close(s);
    pgw_verify_report r;
    s = open_store(f);
    assert_int_equal(pgw_store_verify(s, &r, NULL), PGW_OK);
    if (!r.ok && strstr(r.problem, "closed") != NULL)
        fail_msg("verify: %s", r.problem);
    pgw_store_close(s);
}

/* A close refused for a lot due before it says how to date that lot's
 * expiry in the period being closed: the sweep dates an expiry by its
 * run (expire --as-of), so a run as of the close itself dated it in the
 * open period, and the closed period's settlement never showed it. */
static void test_the_expiry_a_close_waits_for_lands_before_it(void **state)
{
    const db_fixture *f = *state;
    const int64_t now = (int64_t)time(NULL), t0 = now - 45 * DAY, close = now - 5 * DAY;
    pgw_writer *w = start_writer(f);
    pgw_command cmd;
    earn_cmd(&cmd, "store:S001:P1", t0); /* its lot lapses a month on: before the close */
    assert_int_equal(run(w, &cmd), PGW_OK);
    pgw_err err;
    bool moved = false;
    assert_int_equal(close_period(f, close, &moved, &err), PGW_ESTATE);
    char as_of[PGW_RFC3339_MAX];
    assert_said(err, "expire --as-of %s first", local(close - 1, as_of));
    pgw_expire_report done;
    assert_int_equal(pgw_expire_due(w, f->url, close - 1, NULL, NULL, NULL, &done, &err), PGW_OK);
    assert_int_equal(done.lots, 1);
    pgw_writer_stop(w);
    assert_int_equal(close_period(f, close, &moved, &err), PGW_OK);
    pgw_store *s = open_store(f);
    pgw_transfer last;
    size_t n = 0;
    assert_int_equal(pgw_store_read_transfers(s, head_of(f) - 1, &last, 1, &n, &err), PGW_OK);
    assert_int_equal(n, 1);
    assert_int_equal(last.kind, PGW_TRANSFER_EXPIRE);
    assert_true(last.occurred_at < close); /* in the closed period */
    pgw_store_close(s);
    assert_verifies(f);
}

/* The report of [from, to) as text. */
static char *report_text(const db_fixture *f, const pgw_config *cfg, bool pool, int64_t from,
                         int64_t to, pgw_report_format format)
{
    pgw_store *s = open_store(f);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    pgw_err err;
    assert_int_equal(pgw_store_begin_read(s, &err), PGW_OK);
    int rc = pool ? pgw_report_pool(s, cfg, from, to, PGW_BUCKET_DAY, format, out, &err)
                  : pgw_report_settlement(s, cfg, from, to, format, out, &err);
    if (rc != PGW_OK)
        fail_msg("%s", err.msg);
    pgw_store_rollback(s, NULL);
    pgw_store_close(s);
    fclose(out);
    return text;
}

/* A settlement or pool whose `to` is at or before the close says its
 * figures are final: "closed" in the JSON, a summary row in the CSV; one
 * reaching past it (or before any close) says it is open. */
static void test_reports_say_when_their_figures_are_final(void **state)
{
    const db_fixture *f = *state;
    const int64_t now = (int64_t)time(NULL), close = now - 5 * DAY;
    pgw_writer *w = start_writer(f);
    pgw_command cmd;
    earn_cmd(&cmd, "store:S001:P1", close - DAY);
    assert_int_equal(run(w, &cmd), PGW_OK);
    pgw_writer_stop(w);
    char path[512];
    const char *src = getenv("PGW_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/config/pointsgw.example.json", src ? src : ".");
    pgw_config *cfg = NULL;
    pgw_err err;
    if (pgw_config_load(path, &cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    char *text = report_text(f, cfg, false, close - 2 * DAY, close, PGW_REPORT_JSON);
    if (strstr(text, "\"closed\":false,\"closed_before\":null") == NULL)
        fail_msg("before any close: %s", text);
    free(text);
    bool moved = false;
    assert_int_equal(close_period(f, close, &moved, &err), PGW_OK);
    char when[PGW_RFC3339_MAX], row[64];
    assert_int_equal(pgw_format_rfc3339(close, &cfg->rules.tz, when, sizeof(when)), PGW_OK);
    for (int pool = 0; pool < 2; pool++) {
        text = report_text(f, cfg, pool, close - 2 * DAY, close, PGW_REPORT_JSON);
        if (strstr(text, "\"closed\":true") == NULL || strstr(text, when) == NULL)
            fail_msg("to at the close: %s", text);
        free(text);
        text = report_text(f, cfg, pool, close - 2 * DAY, close + 1, PGW_REPORT_JSON);
        if (strstr(text, "\"closed\":false") == NULL)
            fail_msg("to past the close: %s", text);
        free(text);
        snprintf(row, sizeof(row), "\nclosed,%s,,,,,,,\n", when);
        text = report_text(f, cfg, pool, close - 2 * DAY, close - DAY, PGW_REPORT_CSV);
        size_t n = strlen(text), m = strlen(row);
        if (n < m || strcmp(text + n - m, row) != 0)
            fail_msg("the CSV of a closed period ends with its row %s: %s", row, text);
        free(text);
        text = report_text(f, cfg, pool, close - 2 * DAY, close + 1, PGW_REPORT_CSV);
        if (strstr(text, "\nclosed,") != NULL)
            fail_msg("an open period's CSV: %s", text);
        free(text);
    }
    pgw_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_close_moves_later_once_nothing_is_due,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_writes_before_the_close_are_refused,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_a_close_and_a_write_racing_do_not_both_win,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_verify_tells_a_transfer_written_into_a_closed_period,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_reports_say_when_their_figures_are_final,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_verify_without_a_close_in_force,
                                        db_fixture_setup_migrated, db_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_the_expiry_a_close_waits_for_lands_before_it,
                                        db_fixture_setup_migrated, db_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
