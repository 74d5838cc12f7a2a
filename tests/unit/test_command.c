/*
 * test_command.c - the durable ledger behaves exactly like the reference.
 *
 * Random earn / refund / hold / capture / void / redeem / expiry sequences,
 * with time jumping past deadlines and expiries, under both negative-
 * balance policies, are applied twice: to core/ledger.h's in-memory
 * pgw_ledger (the executable specification) and through the writer thread
 * to a real SQLite file. After every step both must agree on the result
 * code, every member's balance, available points and debt, every hold's
 * state, every purchase's reversed and written-off points (the last two
 * every 5 steps on PostgreSQL: compare); `verify` must
 * pass on the file; and at the end both logs must hold the same transfers
 * (kind, accounts, points) in the same order. Replays and conflicting
 * reuses of keys are mixed in and must change nothing.
 *
 * Reproduce one run with PGW_SEED=<seed> (the failing seed and step are
 * printed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "rng.h"

#include "config/config.h"
#include "core/arith.h"
#include "server/expire.h"
#include "server/writer.h"

#include "db_fixture.h"
#include "store/page_cache.h"
#include "store/sql.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#define SEEDS    12
#define STEPS    250
#define MEMBERS  4
#define REFS_MAX 512

static const char *const MEMBER_IDS[MEMBERS] = {"M1", "M2", "M3", "M4"};

typedef struct run {
    uint64_t rng, seed;
    int step, serial;
    int64_t now;
    bool allow_negative;
    pgw_ledger *ref;
    pgw_writer *writer;
    pgw_store *reader;
    const db_fixture *db;
    char earns[REFS_MAX][24];
    size_t n_earns;
    char holds[REFS_MAX][24];
    size_t n_holds;
    /* Redemptions and captures, for returns: the store's key and the
     * reference's (a capture's transfer there is keyed by its hold). */
    char spends[REFS_MAX][2][24];
    size_t n_spends;
    pgw_command done[REFS_MAX]; /* keyed commands that succeeded, for replays */
    size_t n_done;
    pgw_err last; /* the store's last error, for messages */
} run;

/* Successful commands of each kind over all seeds: the sequences must
 * really exercise every path, not fail their way through. */
static size_t succeeded[PGW_COMMAND_KIND_MAX + 1];
static int64_t expired_lots, released_holds;

static int64_t pick(run *r, int64_t lo, int64_t hi)
{
    return rng_pick(&r->rng, lo, hi);
}

#define FAIL(r, ...)                                                                               \
    do {                                                                                           \
        print_error("seed %llu step %d (%s): ", (unsigned long long)(r)->seed, (r)->step,          \
                    (r)->allow_negative ? "allow_negative" : "clamp");                             \
        fail_msg(__VA_ARGS__);                                                                     \
    } while (0)

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

/* Runs a command through the writer; remembers it for replays when it worked. */
static int submit(run *r, pgw_command *cmd)
{
    pgw_err_clear(&r->last);
    int rc = pgw_writer_run(r->writer, cmd, &r->last);
    succeeded[cmd->kind] += rc == PGW_OK && !cmd->replayed;
    if (rc == PGW_OK && cmd->kind != PGW_COMMAND_EXPIRE_HOLD && r->n_done < REFS_MAX)
        r->done[r->n_done++] = *cmd;
    return rc;
}

static void new_ref(run *r, char out[24], char prefix)
{
    snprintf(out, 24, "%c%d", prefix, r->serial++);
}

static int op_earn(run *r)
{
    static const char *funders[] = {"shop:S001:issued", "mall:campaigns", "mall:behaviour"};
    pgw_command cmd;
    char ref[24];
    new_ref(r, ref, 'E');
    keyed(&cmd, PGW_COMMAND_EARN, ref, r->now);
    cmd.n_lines = (size_t)pick(r, 1, 3);
    for (size_t i = 0; i < cmd.n_lines; i++) {
        snprintf(cmd.lines[i].debit, sizeof(cmd.lines[i].debit), "%s", funders[pick(r, 0, 2)]);
        snprintf(cmd.lines[i].rule, sizeof(cmd.lines[i].rule), "rule%zu", i);
        cmd.lines[i].points = pick(r, 1, 500);
    }
    snprintf(cmd.member, sizeof(cmd.member), "%s", MEMBER_IDS[pick(r, 0, MEMBERS - 1)]);
    snprintf(cmd.shop, sizeof(cmd.shop), "S001");
    cmd.amount_fen = pick(r, 1, 100000);
    pgw_earn_cmd ec = {.member = cmd.member,
                       .ref = ref,
                       .shop = "S001",
                       .amount_fen = cmd.amount_fen,
                       .n_lines = cmd.n_lines,
                       .lines = cmd.lines,
                       .at = r->now};
    int expected = pgw_ledger_earn(r->ref, &ec, NULL);
    if (expected == PGW_OK && r->n_earns < REFS_MAX)
        memcpy(r->earns[r->n_earns++], ref, 24);
    int got = submit(r, &cmd);
    return got == expected ? PGW_OK : got;
}

static int op_refund(run *r, int *expected)
{
    pgw_command cmd;
    char ref[24];
    new_ref(r, ref, 'R');
    keyed(&cmd, PGW_COMMAND_REFUND, ref, r->now);
    snprintf(cmd.original, sizeof(cmd.original), "%s",
             r->n_earns ? r->earns[pick(r, 0, (int64_t)r->n_earns - 1)] : "E-none");
    snprintf(cmd.shop, sizeof(cmd.shop), "S001");
    cmd.amount_fen = pick(r, 1, 60000); /* against originals up to 100000: some exceed */
    *expected = pgw_ledger_refund(r->ref, cmd.original, ref, cmd.amount_fen, r->now, NULL);
    return submit(r, &cmd);
}

static void remember_spend(run *r, int rc, const char *key, const char *ref_key)
{
    if (rc != PGW_OK || r->n_spends == REFS_MAX)
        return;
    assert_true(strlen(key) < 24 && strlen(ref_key) < 24); /* new_ref's */
    memcpy(r->spends[r->n_spends][0], key, strlen(key) + 1);
    memcpy(r->spends[r->n_spends++][1], ref_key, strlen(ref_key) + 1);
}

static int op_spend(run *r, bool hold, int *expected)
{
    static const char *shops[] = {"S001", "S002", "S003"};
    pgw_command cmd;
    char id[24];
    new_ref(r, id, hold ? 'H' : 'D');
    keyed(&cmd, hold ? PGW_COMMAND_HOLD : PGW_COMMAND_REDEEM, id, r->now);
    snprintf(cmd.hold_id, sizeof(cmd.hold_id), "%s", id);
    snprintf(cmd.member, sizeof(cmd.member), "%s", MEMBER_IDS[pick(r, 0, MEMBERS - 1)]);
    snprintf(cmd.shop, sizeof(cmd.shop), "%s", shops[pick(r, 0, 2)]);
    cmd.points = pick(r, 1, 400);
    if (hold) {
        cmd.deadline = r->now + pick(r, 60, 86400 * 10);
        *expected = pgw_ledger_hold(r->ref, id, cmd.member, cmd.shop, cmd.points, cmd.deadline,
                                    r->now, NULL);
        if (*expected == PGW_OK && r->n_holds < REFS_MAX)
            memcpy(r->holds[r->n_holds++], id, 24);
    } else {
        *expected = pgw_ledger_redeem(r->ref, id, cmd.member, cmd.shop, cmd.points, r->now, NULL);
        remember_spend(r, *expected, id, id);
    }
    return submit(r, &cmd);
}

static int op_settle(run *r, bool capture, int *expected)
{
    if (r->n_holds == 0)
        return *expected = PGW_OK;
    pgw_command cmd;
    char key[24];
    new_ref(r, key, capture ? 'C' : 'V');
    keyed(&cmd, capture ? PGW_COMMAND_CAPTURE : PGW_COMMAND_VOID, key, r->now);
    /* Mostly a recent hold (likely still pending), sometimes any. */
    int64_t last = (int64_t)r->n_holds - 1;
    int64_t i = pick(r, 0, 3) ? pick(r, last > 3 ? last - 3 : 0, last) : pick(r, 0, last);
    snprintf(cmd.hold_id, sizeof(cmd.hold_id), "%s", r->holds[i]);
    /* All (0), part, or maybe more than the hold holds (EINVAL). */
    int64_t how = pick(r, 0, 2);
    cmd.points = !capture || how == 0 ? 0 : pick(r, 1, how == 1 ? 100 : 400);
    *expected = capture ? pgw_ledger_capture(r->ref, cmd.hold_id, cmd.points, r->now, NULL)
                        : pgw_ledger_void(r->ref, cmd.hold_id, r->now, NULL);
    if (capture)
        remember_spend(r, *expected, key, cmd.hold_id);
    return submit(r, &cmd);
}

/* Gives back part of a redemption or a capture, sometimes more than is left. */
static int op_return(run *r, int *expected)
{
    if (r->n_spends == 0)
        return *expected = PGW_OK;
    pgw_command cmd;
    char id[24], key[64];
    new_ref(r, id, 'T');
    int64_t i = pick(r, 0, (int64_t)r->n_spends - 1);
    snprintf(key, sizeof(key), "return:%s/%s", r->spends[i][0], id); /* verify reads it */
    keyed(&cmd, PGW_COMMAND_RETURN, key, r->now);
    snprintf(cmd.original, sizeof(cmd.original), "%s", r->spends[i][0]);
    snprintf(cmd.hold_id, sizeof(cmd.hold_id), "%s", r->spends[i][0]);
    cmd.points = pick(r, 1, 250);
    *expected = pgw_ledger_return(r->ref, r->spends[i][1], key, cmd.points, r->now, NULL);
    return submit(r, &cmd);
}

static void compare_lots(run *r);

static int op_expire(run *r, int *expected)
{
    *expected = pgw_ledger_expire(r->ref, r->now, NULL, NULL);
    pgw_expire_report report;
    pgw_err err;
    int rc = pgw_expire_due(r->writer, r->db->url, r->now, NULL, NULL, NULL, &report, &err);
    if (rc != PGW_OK)
        FAIL(r, "expiry run: %s", err.msg);
    expired_lots += report.lots;
    released_holds += report.holds;
    compare_lots(r);
    return rc;
}

/* Sends an earlier command again: same key and request is a replay that
 * changes nothing; a different request under that key is a conflict, or
 * for a capture or a void (whose key is its hold's) hold_not_pending. */
static void op_replay(run *r)
{
    if (r->n_done == 0)
        return;
    pgw_command cmd = r->done[pick(r, 0, (int64_t)r->n_done - 1)];
    pgw_idem_record first = cmd.record;
    bool conflict = pick(r, 0, 3) == 0;
    cmd.fingerprint[PGW_HASH_LEN - 1] ^= conflict ? 0x5a : 0;
    cmd.at = r->now;
    int rc = pgw_writer_run(r->writer, &cmd, NULL);
    bool settles = cmd.kind == PGW_COMMAND_CAPTURE || cmd.kind == PGW_COMMAND_VOID;
    if (conflict && rc != (settles ? PGW_ESTATE : PGW_ECONFLICT))
        FAIL(r, "reusing key %s for another request gave %s", cmd.key, pgw_code_name(rc));
    if (!conflict &&
        (rc != PGW_OK || !cmd.replayed || cmd.record.first_transfer != first.first_transfer ||
         cmd.record.transfer_count != first.transfer_count))
        FAIL(r, "replaying %s gave %s (replayed %d)", cmd.key, pgw_code_name(rc), cmd.replayed);
}

/*
 * Every member's figures; with `records`, every hold's state and every
 * earn's reversal too. step() asks for those every step on SQLite, on
 * PostgreSQL every PG_RECORDS_EVERY steps and at the last (compared after
 * the loop, the reference would not yet have released what the last
 * step's `now` made due): each is a read of its own, some 150 a step by
 * the end of a run, each a few round trips on PostgreSQL, two thirds of
 * this test's 130 s there. A record a step gets wrong stays wrong until a
 * command touches it again, so it is still caught within the steps
 * between (the step printed is the one that found it); SQLite keeps the
 * step-by-step check of the same commands.
 */
#define PG_RECORDS_EVERY 5
static void compare(run *r, bool records)
{
    for (int i = 0; i < MEMBERS; i++) {
        const char *m = MEMBER_IDS[i];
        bool found = false;
        pgw_member_figures f;
        assert_int_equal(pgw_store_member_figures(r->reader, m, r->now, &found, &f, NULL), PGW_OK);
        int64_t balance = pgw_ledger_balance(r->ref, m),
                available = pgw_ledger_available(r->ref, m, r->now);
        int64_t debt = pgw_ledger_debt(r->ref, m);
        /* The reference released the member's holds past their deadline
         * (step), the store does at the member's next command or sweep:
         * until then its debt is what their points will repay, and its
         * balance and available say so already. */
        pgw_hold_record due[16];
        size_t n_due = 0;
        assert_int_equal(pgw_store_member_due_holds(r->reader, m, r->now, due, 16, &n_due, NULL),
                         PGW_OK);
        assert_true(n_due < 16);
        for (size_t h = 0; h < n_due; h++)
            f.debt -= pgw_min64(f.debt, due[h].points);
        if (f.balance != balance || f.available != available || f.debt != debt)
            FAIL(r,
                 "member %s: store %lld/%lld/%lld, reference %lld/%lld/%lld "
                 "(balance/available/debt)",
                 m, (long long)f.balance, (long long)f.available, (long long)f.debt,
                 (long long)balance, (long long)available, (long long)debt);
    }
    for (size_t i = 0; records && i < r->n_holds; i++) {
        pgw_hold_state want;
        pgw_hold_record h;
        bool found = false;
        assert_int_equal(pgw_ledger_hold_state(r->ref, r->holds[i], &want), PGW_OK);
        assert_int_equal(pgw_store_get_hold(r->reader, r->holds[i], &found, &h, NULL), PGW_OK);
        int got = found ? (int)pgw_hold_state_at(h.state, h.deadline, r->now) : -1;
        if (got != (int)want)
            FAIL(r, "hold %s: store %d, reference %s", r->holds[i], (int)got,
                 pgw_hold_state_name(want));
    }
    for (size_t i = 0; records && i < r->n_earns; i++) {
        int64_t reversed = 0, written_off = 0, stored = 0;
        pgw_earn_record e;
        bool found = false;
        assert_int_equal(pgw_ledger_earn_reversal(r->ref, r->earns[i], &reversed, &written_off),
                         PGW_OK);
        assert_int_equal(pgw_store_get_earn(r->reader, r->earns[i], &found, &e, NULL), PGW_OK);
        for (size_t f = 0; found && f < e.n_funders; f++)
            stored += e.reversed[f];
        if (!found || stored != reversed || e.written_off != written_off)
            FAIL(r, "earn %s: store reversed %lld written off %lld, reference %lld and %lld",
                 r->earns[i], (long long)stored, (long long)e.written_off, (long long)reversed,
                 (long long)written_off);
    }
}

/* Lot by lot, in the order both made them: who holds it, what is left and
 * held. Which lot a repayment or a release touches shows here at once, not
 * only when one of them expires. Only right after an expiry run: the store
 * releases a hold past its deadline when the sweep or its member's next
 * command comes, the reference at every step. */
static void compare_lots(run *r)
{
    pgw_sql *db = NULL;
    pgw_sql_stmt *st = NULL;
    assert_int_equal(pgw_sql_open(r->db->url, false, &db, NULL), PGW_OK);
    assert_int_equal(pgw_sql_prepare(db, "SELECT member, left_points, held FROM lots ORDER BY id",
                                     false, &st, NULL),
                     PGW_OK);
    size_t i = 0;
    for (; pgw_sql_step(st) == PGW_SQL_ROW; i++) {
        if (i >= pgw_ledger_lot_count(r->ref))
            FAIL(r, "store has more than the reference's %zu lots", i);
        const pgw_lot *want = pgw_ledger_lot(r->ref, i);
        const char *member = pgw_sql_column_text(st, 0);
        int64_t left = pgw_sql_column_int64(st, 1), held = pgw_sql_column_int64(st, 2);
        if (strcmp(member, want->member) != 0 || left != want->left || held != want->held)
            FAIL(r, "lot %zu: store %s %lld left %lld held, reference %s %lld and %lld", i + 1,
                 member, (long long)left, (long long)held, want->member, (long long)want->left,
                 (long long)want->held);
    }
    pgw_sql_finalize(st);
    pgw_sql_close(db);
    if (i != pgw_ledger_lot_count(r->ref))
        FAIL(r, "store has %zu lots, reference %zu", i, pgw_ledger_lot_count(r->ref));
}

static void verify_store(run *r)
{
    pgw_verify_report report;
    assert_int_equal(pgw_store_verify(r->reader, &report, NULL), PGW_OK);
    if (!report.ok)
        FAIL(r, "verify: %s", report.problem);
    if ((size_t)report.transfers != pgw_ledger_transfer_count(r->ref))
        FAIL(r, "store has %lld transfers, reference %zu", (long long)report.transfers,
             pgw_ledger_transfer_count(r->ref));
}

static void step(run *r)
{
    /* The store releases holds past their deadline before anything else
     * happens at `now`; the reference does so when asked. */
    assert_int_equal(pgw_ledger_expire_holds(r->ref, r->now, NULL, NULL), PGW_OK);
    int expected = PGW_OK, got;
    int64_t which = pick(r, 0, 99);
    if (which < 28)
        got = op_earn(r);
    else if (which < 40)
        got = op_spend(r, false, &expected);
    else if (which < 55)
        got = op_refund(r, &expected);
    else if (which < 67)
        got = op_spend(r, true, &expected);
    else if (which < 75)
        got = op_settle(r, true, &expected);
    else if (which < 83)
        got = op_settle(r, false, &expected);
    else if (which < 88)
        got = op_expire(r, &expected);
    else if (which < 94)
        got = op_return(r, &expected);
    else
        op_replay(r), got = expected;
    if (got != expected)
        FAIL(r, "store said %s (%s), reference %s", pgw_code_name(got), r->last.msg,
             pgw_code_name(expected));
    compare(r, !r->db->pg || r->step % PG_RECORDS_EVERY == PG_RECORDS_EVERY - 1 ||
                   r->step == STEPS - 1);
    r->now += pick(r, 0, 9) == 0 ? pick(r, 86400, 86400 * 20) : pick(r, 1, 1800);
}

/* Both logs hold the same movements in the same order. */
static void compare_logs(run *r)
{
    static pgw_transfer page[128];
    int64_t after = 0;
    size_t n = 0, index = 0;
    while (pgw_store_read_transfers(r->reader, after, page, 128, &n, NULL) == PGW_OK && n > 0) {
        for (size_t i = 0; i < n; i++, index++) {
            const pgw_transfer *want = pgw_ledger_transfer(r->ref, index);
            if (page[i].kind != want->kind || strcmp(page[i].debit, want->debit) != 0 ||
                strcmp(page[i].credit, want->credit) != 0 || page[i].points != want->points)
                FAIL(r, "transfer %lld: store %s -> %s %lld, reference %s -> %s %lld",
                     (long long)page[i].id, page[i].debit, page[i].credit,
                     (long long)page[i].points, want->debit, want->credit, (long long)want->points);
        }
        after = page[n - 1].id;
    }
    assert_int_equal(index, pgw_ledger_transfer_count(r->ref));
}

/* The reference ledger the store is compared with: rolling one month. */
static pgw_ledger *reference_new(bool allow_negative, pgw_ledger_options *opts)
{
    *opts = (pgw_ledger_options){.max_members = 8,
                                 .max_accounts = 32,
                                 .max_lots = 400,
                                 .max_holds = 400,
                                 .max_portions = 4000,
                                 .max_transfers = 2000,
                                 .max_earns = 400,
                                 .max_refs = 2000,
                                 .allow_negative = allow_negative,
                                 .expiry = {PGW_EXPIRY_ROLLING, 1, 0}};
    assert_int_equal(pgw_tz_lookup("Asia/Shanghai", &opts->tz, NULL), PGW_OK);
    pgw_ledger *ref = NULL;
    assert_int_equal(pgw_ledger_new(opts, &ref, NULL), PGW_OK);
    return ref;
}

/*
 * The writers a test started and has not stopped. A failed check leaves
 * the test by longjmp, past its writer_stop: the teardown stops them, lest
 * a writer of a database dropped run on beside the next tests (on
 * PostgreSQL it said it was reconnecting to it for the rest of the run).
 */
#define RUNNING_MAX 4
static pgw_writer *running[RUNNING_MAX];

static int writer_start(const pgw_writer_options *wo, pgw_writer **out, pgw_err *err)
{
    size_t i = 0;
    while (i < RUNNING_MAX && running[i] != NULL)
        i++;
    assert_true(i < RUNNING_MAX);
    int rc = pgw_writer_start(wo, out, err);
    if (rc == PGW_OK)
        running[i] = *out;
    return rc;
}

static void writer_stop(pgw_writer *w)
{
    for (size_t i = 0; i < RUNNING_MAX && w != NULL; i++)
        if (running[i] == w)
            running[i] = NULL;
    pgw_writer_stop(w);
}

/* db_fixture_teardown, after stopping what a failed check left running. */
static int teardown(void **state)
{
    for (size_t i = 0; i < RUNNING_MAX; i++) {
        pgw_writer_stop(running[i]);
        running[i] = NULL;
    }
    return db_fixture_teardown(state);
}

static void run_seed(const db_fixture *db, uint64_t seed, bool allow_negative)
{
    static run r;
    memset(&r, 0, sizeof(r));
    r.seed = r.rng = seed;
    r.now = 1795486500; /* 2026-11-24T10:15:00+08:00 */
    r.allow_negative = allow_negative;
    r.db = db;
    pgw_ledger_options opts;
    r.ref = reference_new(allow_negative, &opts);
    assert_int_equal(db_fixture_reset_migrated(db), 0);
    pgw_writer_options wo = {.db_url = db->url,
                             .queue_cap = 256,
                             .batch_max = 64,
                             .policy = {opts.expiry, opts.tz, allow_negative}};
    pgw_err err;
    if (writer_start(&wo, &r.writer, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(pgw_store_open(db->url, false, &r.reader, NULL), PGW_OK);
    for (r.step = 0; r.step < STEPS; r.step++) {
        step(&r);
        if (r.step % 25 == 24)
            verify_store(&r);
    }
    verify_store(&r);
    compare_logs(&r);
    pgw_store_close(r.reader);
    writer_stop(r.writer);
    pgw_ledger_free(r.ref);
}

static void test_store_matches_the_reference_ledger(void **state)
{
    const db_fixture *db = *state;
    const char *only = getenv("PGW_SEED");
    if (only != NULL) {
        run_seed(db, strtoull(only, NULL, 10), false);
        run_seed(db, strtoull(only, NULL, 10), true);
        return;
    }
    for (uint64_t seed = 1; seed <= SEEDS; seed++)
        run_seed(db, seed, seed % 2 == 0);
    static const pgw_command_kind kinds[] = {
        PGW_COMMAND_EARN, PGW_COMMAND_REFUND, PGW_COMMAND_HOLD,  PGW_COMMAND_CAPTURE,
        PGW_COMMAND_VOID, PGW_COMMAND_REDEEM, PGW_COMMAND_RETURN};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (succeeded[kinds[i]] < 20)
            fail_msg("only %zu successful commands of kind %d", succeeded[kinds[i]], (int)kinds[i]);
    }
    if (expired_lots < 20 || released_holds < 5)
        fail_msg("expiry runs expired only %lld lots and released %lld holds",
                 (long long)expired_lots, (long long)released_holds);
}

/* ---- scenarios: the rules at their edges ------------------------------------- */

static pgw_writer *start_policy(const db_fixture *db, bool allow_negative, pgw_expiry expiry,
                                bool notify)
{
    pgw_writer_options wo = {
        .db_url = db->url,
        .queue_cap = 64,
        .batch_max = 16,
        .policy = {.expiry = expiry, .allow_negative = allow_negative, .notify = notify}};
    assert_int_equal(pgw_tz_lookup("Asia/Shanghai", &wo.policy.tz, NULL), PGW_OK);
    pgw_writer *w = NULL;
    pgw_err err;
    if (writer_start(&wo, &w, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    return w;
}

static pgw_writer *start_with(const db_fixture *db, bool allow_negative, pgw_expiry expiry)
{
    return start_policy(db, allow_negative, expiry, false);
}

/* Notices queued as the commands commit, none coalesced. */
static pgw_writer *start_notifying(const db_fixture *db, pgw_expiry expiry)
{
    return start_policy(db, false, expiry, true);
}

static pgw_writer *start_plain(const db_fixture *db, bool allow_negative)
{
    return start_with(db, allow_negative, (pgw_expiry){PGW_EXPIRY_NEVER, 0, 0});
}

static int run_cmd(pgw_writer *w, pgw_command *cmd)
{
    pgw_err err;
    return pgw_writer_run(w, cmd, &err);
}

/* Redeems `points` of `member` at `at` at shop S002, as redemption `id`
 * (key redeem:<id>); `cmd` has the answer. */
static int redeem_points(pgw_writer *w, const char *id, const char *member, int64_t points,
                         int64_t at, pgw_command *cmd)
{
    char key[PGW_IDEM_KEY_MAX + 1];
    snprintf(key, sizeof(key), "redeem:%s", id);
    keyed(cmd, PGW_COMMAND_REDEEM, key, at);
    snprintf(cmd->hold_id, sizeof(cmd->hold_id), "%s", id);
    snprintf(cmd->member, sizeof(cmd->member), "%s", member);
    snprintf(cmd->shop, sizeof(cmd->shop), "S002");
    cmd->points = points;
    return run_cmd(w, cmd);
}

static int earn_simple(pgw_writer *w, const char *key, const char *member, int64_t shop_points,
                       int64_t mall_points, int64_t amount_fen, int64_t at)
{
    pgw_command cmd;
    keyed(&cmd, PGW_COMMAND_EARN, key, at);
    snprintf(cmd.member, sizeof(cmd.member), "%s", member);
    snprintf(cmd.shop, sizeof(cmd.shop), "S001");
    cmd.lines[0] = (pgw_earn_line){"shop:S001:issued", "format:retail", shop_points};
    cmd.lines[1] = (pgw_earn_line){"mall:campaigns", "campaign:member-day", mall_points};
    cmd.n_lines = 2;
    cmd.amount_fen = amount_fen;
    return run_cmd(w, &cmd);
}

static int refund(pgw_writer *w, const char *key, const char *original, int64_t amount, int64_t at,
                  pgw_command *cmd)
{
    keyed(cmd, PGW_COMMAND_REFUND, key, at);
    snprintf(cmd->original, sizeof(cmd->original), "%s", original);
    cmd->amount_fen = amount;
    return run_cmd(w, cmd);
}

static void assert_verifies(const db_fixture *db)
{
    pgw_store *s = NULL;
    pgw_verify_report report;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_verify(s, &report, NULL), PGW_OK);
    if (!report.ok)
        fail_msg("verify: %s", report.problem);
    pgw_store_close(s);
}

/* The figure `name` of a refusal (API.md's error `details`); fails if absent. */
static int64_t figure(const pgw_err *err, const char *name)
{
    for (size_t i = 0; i < err->n_figures; i++) {
        if (strcmp(err->figures[i].name, name) == 0)
            return err->figures[i].value;
    }
    fail_msg("no figure %s in \"%s\"", name, err->msg);
    return -1;
}

/* Three partial refunds summing to the whole give back exactly what was
 * earned, split across both funders; one fen more is refused. */
static void test_partial_refunds_reverse_exactly(void **state)
{
    const db_fixture *db = *state;
    pgw_writer *w = start_plain(db, false);
    const int64_t t = 1795486500;
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 128, 128, 12800, t), PGW_OK);
    pgw_command cmd;
    int64_t reversed = 0;
    static const int64_t parts[] = {3333, 3333, 6134};
    for (int i = 0; i < 3; i++) {
        char key[32];
        snprintf(key, sizeof(key), "store:S001:R%d", i);
        assert_int_equal(refund(w, key, "store:S001:P1", parts[i], t + 10 + i, &cmd), PGW_OK);
        reversed += cmd.points_moved;
        assert_int_equal(cmd.written_off, 0);
    }
    assert_int_equal(reversed, 256);
    assert_int_equal(cmd.figures.balance, 0);
    assert_int_equal(refund(w, "store:S001:R9", "store:S001:P1", 1, t + 20, &cmd), PGW_EEXCEEDS);
    assert_int_equal(figure(&cmd.err, "left_fen"), 0);
    assert_int_equal(figure(&cmd.err, "asked_fen"), 1);
    assert_int_equal(figure(&cmd.err, "original_fen"), 12800);
    assert_int_equal(refund(w, "store:S001:R8", "store:S001:nope", 1, t + 20, &cmd), PGW_ENOTFOUND);
    writer_stop(w);
    assert_verifies(db);
}

static const pgw_expiry MONTH = {PGW_EXPIRY_ROLLING, 1, 0};
#define DAY 86400

static int hold_points(pgw_writer *w, const char *id, const char *member, int64_t points,
                       int64_t deadline, int64_t at)
{
    pgw_command hold;
    keyed(&hold, PGW_COMMAND_HOLD, id, at);
    snprintf(hold.hold_id, sizeof(hold.hold_id), "%s", id);
    snprintf(hold.member, sizeof(hold.member), "%s", member);
    snprintf(hold.shop, sizeof(hold.shop), "S002");
    hold.points = points;
    hold.deadline = deadline;
    return run_cmd(w, &hold);
}

static pgw_member_figures figures_at(const db_fixture *db, const char *member, int64_t at)
{
    pgw_store *s = NULL;
    pgw_member_figures f;
    bool found = false;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_member_figures(s, member, at, &found, &f, NULL), PGW_OK);
    pgw_store_close(s);
    return f;
}

static int64_t balance_at(const db_fixture *db, const char *member, int64_t at)
{
    return figures_at(db, member, at).balance;
}

/*
 * Points of a lot past its expiry that the sweep has not moved yet stay in
 * the balance (the log has not moved them) but are not available: nothing
 * can spend them. available counted them, so a till showed points that a
 * hold then refused ("have expired"), for up to sweep_every_s after each
 * expiry, and for as long as a year-end sweep of many lots takes.
 */
static void test_expired_points_awaiting_the_sweep_are_not_available(void **state)
{
    const db_fixture *db = *state;
    const int64_t t = 1795486500;
    pgw_writer *w = start_with(db, true, MONTH);
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 60, 40, 10000, t), PGW_OK);
    assert_int_equal(earn_simple(w, "store:S001:P2", "M1", 499, 1, 50000, t + 20 * DAY), PGW_OK);
    const int64_t at = t + 35 * DAY; /* P1's lot is due, not swept */
    pgw_member_figures f = figures_at(db, "M1", at);
    if (f.balance != 600 || f.available != 500)
        fail_msg("balance %lld, available %lld; want 600 and 500", (long long)f.balance,
                 (long long)f.available);
    assert_int_equal(hold_points(w, "S002:H1", "M1", 501, at + 600, at), PGW_EINSUFFICIENT);
    assert_int_equal(hold_points(w, "S002:H2", "M1", 500, at + 600, at), PGW_OK);
    f = figures_at(db, "M1", at);
    assert_int_equal(f.balance, 600);
    assert_int_equal(f.available, 0);
    pgw_expire_report report;
    assert_int_equal(pgw_expire_due(w, db->url, at, NULL, NULL, NULL, &report, NULL), PGW_OK);
    assert_int_equal(report.points, 100);
    writer_stop(w);
    f = figures_at(db, "M1", at);
    assert_int_equal(f.balance, 500);
    assert_int_equal(f.available, 0);
    assert_verifies(db);
    /* A hold past its deadline, not yet released, whose lot expired, of a
     * member in debt (a refund while the points were held): releasing it
     * repays the debt from those points first, so nothing is lapsed and
     * available is 0, as after the sweep (the review saw -100). */
    assert_int_equal(db_fixture_reset_migrated(db), 0);
    w = start_with(db, true, MONTH);
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 60, 40, 10000, t), PGW_OK);
    assert_int_equal(hold_points(w, "S002:H1", "M1", 100, t + 40 * DAY, t + 1), PGW_OK);
    pgw_command cmd;
    assert_int_equal(refund(w, "store:S001:R1", "store:S001:P1", 10000, t + 2, &cmd), PGW_OK);
    assert_int_equal(cmd.debt_added, 100);
    f = figures_at(db, "M1", t + 41 * DAY);
    if (f.balance != 0 || f.available != 0 || f.debt != 100)
        fail_msg("before the release: balance %lld, available %lld, debt %lld; want 0, 0, 100",
                 (long long)f.balance, (long long)f.available, (long long)f.debt);
    assert_int_equal(pgw_expire_due(w, db->url, t + 41 * DAY, NULL, NULL, NULL, &report, NULL),
                     PGW_OK);
    writer_stop(w);
    f = figures_at(db, "M1", t + 41 * DAY);
    assert_int_equal(f.available, 0);
    assert_int_equal(f.debt, 0);
    assert_verifies(db);
}

/* A member's expiring points at `at` (the member read's list), as "points@day;...". */
static void expiring_at(const db_fixture *db, const char *member, int64_t at, int64_t t0, char *out,
                        size_t cap)
{
    pgw_store *s = NULL;
    pgw_expiring e[PGW_EXPIRING_SHOWN];
    size_t n = 0;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_member_expiring(s, member, at, e, PGW_EXPIRING_SHOWN, &n, NULL),
                     PGW_OK);
    pgw_store_close(s);
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%lld@%lld;", (long long)e[i].points,
                                (long long)((e[i].expires_at - t0) / DAY));
}

/*
 * The member read's `expiring` lists what will expire unless spent: the
 * free points of lots. A hold takes its points from the lots that expire
 * first (left -> held), and held points do not expire while held (a
 * capture spends them, a void gives them back to their lot). The review's
 * finding: expiring counted them too, so a member with a pending hold was
 * shown more points expiring than it could lose or spend.
 */
static void test_expiring_leaves_out_held_points(void **state)
{
    const db_fixture *db = *state;
    const int64_t t = 1795486500, at = t + 21 * DAY;
    pgw_writer *w = start_with(db, true, MONTH);
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 60, 40, 10000, t), PGW_OK);
    assert_int_equal(earn_simple(w, "store:S001:P2", "M1", 49, 1, 5000, t + 20 * DAY), PGW_OK);
    char before[128], held[128], voided[128];
    expiring_at(db, "M1", at, t, before, sizeof(before));
    /* 120 held: all of P1's lot (it expires first) and 20 of P2's. */
    assert_int_equal(hold_points(w, "S002:H1", "M1", 120, at + 600, at), PGW_OK);
    expiring_at(db, "M1", at, t, held, sizeof(held));
    pgw_member_figures f = figures_at(db, "M1", at);
    pgw_command cmd;
    keyed(&cmd, PGW_COMMAND_VOID, "S002:V1", at + 1);
    snprintf(cmd.hold_id, sizeof(cmd.hold_id), "S002:H1");
    assert_int_equal(run_cmd(w, &cmd), PGW_OK);
    writer_stop(w);
    expiring_at(db, "M1", at + 1, t, voided, sizeof(voided));
    /* Expiry times are local midnights; whole days after t, rounded down. */
    if (strcmp(before, "100@30;50@51;") != 0 || strcmp(held, "30@51;") != 0 || f.available != 30 ||
        strcmp(voided, before) != 0)
        fail_msg("expiring before the hold %s, while held %s (available %lld), voided %s;"
                 " want 100@30;50@51;, 30@51; (30), as before",
                 before, held, (long long)f.available, voided);
}

/*
 * A refund after its purchase's lot expired, before the sweep moved it:
 * those points are written off as if swept. The review's finding: the
 * refund could not take them (expired), so it made debt (or took other
 * points under clamp), and the sweep then expired them too.
 */
static void test_a_refund_of_an_expired_unswept_lot(void **state)
{
    const db_fixture *db = *state;
    const int64_t t = 1795486500;
    for (int negative = 0; negative < 2; negative++) {
        assert_int_equal(db_fixture_reset_migrated(db), 0);
        pgw_writer *w = start_with(db, negative, MONTH);
        assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 60, 40, 10000, t), PGW_OK);
        assert_int_equal(earn_simple(w, "store:S001:P2", "M1", 499, 1, 50000, t + 40 * DAY),
                         PGW_OK);
        pgw_command cmd;
        assert_int_equal(refund(w, "store:S001:R1", "store:S001:P1", 10000, t + 41 * DAY, &cmd),
                         PGW_OK);
        if (cmd.points_moved != 0 || cmd.written_off != 100 || cmd.debt_added != 0)
            fail_msg("%s: reversed %lld, written off %lld, debt %lld; want 0, 100, 0",
                     negative ? "allow_negative" : "clamp", (long long)cmd.points_moved,
                     (long long)cmd.written_off, (long long)cmd.debt_added);
        pgw_expire_report report;
        assert_int_equal(pgw_expire_due(w, db->url, t + 42 * DAY, NULL, NULL, NULL, &report, NULL),
                         PGW_OK);
        assert_int_equal(report.points, 100);
        writer_stop(w);
        assert_int_equal(balance_at(db, "M1", t + 42 * DAY), 500);
        assert_verifies(db);
    }
}

/*
 * A partial refund after part of its purchase expired gives each funder
 * back in proportion to what it still funds. The review's finding: each
 * line's target was its share of the whole refund (half of its points for
 * half the amount), though the expired part was written off first, so
 * the first line, the shop, took all that was reversed. Here 100 points
 * (shop 60, campaigns 40), 60 spent, 40 expired (24 and 16 theirs), then
 * half refunded: 50, of which 40 lapsed; 10 reversed, 6 and 4.
 */
static void test_a_refund_after_expiry_pays_funders_in_proportion(void **state)
{
    const db_fixture *db = *state;
    const int64_t t = 1795486500;
    pgw_writer *w = start_with(db, true, MONTH);
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 60, 40, 10000, t), PGW_OK);
    assert_int_equal(hold_points(w, "S002:H1", "M1", 60, t + 600, t + 1), PGW_OK);
    pgw_command cmd;
    keyed(&cmd, PGW_COMMAND_CAPTURE, "S002:C1", t + 2);
    snprintf(cmd.hold_id, sizeof(cmd.hold_id), "S002:H1");
    assert_int_equal(run_cmd(w, &cmd), PGW_OK);
    pgw_expire_report report;
    assert_int_equal(pgw_expire_due(w, db->url, t + 40 * DAY, NULL, NULL, NULL, &report, NULL),
                     PGW_OK);
    assert_int_equal(report.points, 40);
    assert_int_equal(refund(w, "store:S001:R1", "store:S001:P1", 5000, t + 41 * DAY, &cmd), PGW_OK);
    assert_int_equal(cmd.written_off, 40);
    assert_int_equal(cmd.points_moved, 10);
    int64_t shop = 0, mall = 0;
    for (size_t i = 0; i < cmd.n_transfers; i++) {
        assert_int_equal(cmd.transfers[i].kind, PGW_TRANSFER_REVERSAL);
        if (strcmp(cmd.transfers[i].credit, "shop:S001:issued") == 0)
            shop += cmd.transfers[i].points;
        else if (strcmp(cmd.transfers[i].credit, "mall:campaigns") == 0)
            mall += cmd.transfers[i].points;
    }
    if (shop != 6 || mall != 4)
        fail_msg("the shop got back %lld and the campaigns %lld; want 6 and 4", (long long)shop,
                 (long long)mall);
    writer_stop(w);
    assert_verifies(db);
}

/*
 * An event's occurred_at dates its effects (the refund's period, a lot's
 * expiry), not the state it meets: holds and lots are as they are when it
 * is applied. The ledger review's findings: a refund dated before its
 * purchase's lot expired reversed points that had expired since, unless
 * the sweep had moved them first (then: written off); and an event dated
 * a few minutes ahead (a fast till) released another till's hold before
 * its deadline.
 */
static void test_events_meet_the_state_of_when_they_are_applied(void **state)
{
    const db_fixture *db = *state;
    const int64_t t = 1795486500;
    pgw_writer *w = start_with(db, true, MONTH);
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 60, 40, 10000, t), PGW_OK);
    pgw_command cmd;
    keyed(&cmd, PGW_COMMAND_REFUND, "store:S001:R1", t + 20 * DAY); /* dated before the expiry */
    cmd.asked_at = t + 40 * DAY;                                    /* applied after it */
    snprintf(cmd.original, sizeof(cmd.original), "store:S001:P1");
    cmd.amount_fen = 10000;
    assert_int_equal(run_cmd(w, &cmd), PGW_OK);
    if (cmd.points_moved != 0 || cmd.written_off != 100)
        fail_msg("a backlog refund of an expired lot reversed %lld, wrote off %lld; want 0, 100",
                 (long long)cmd.points_moved, (long long)cmd.written_off);

    assert_int_equal(earn_simple(w, "store:S001:P2", "M2", 60, 40, 10000, t), PGW_OK);
    assert_int_equal(hold_points(w, "S002:H2", "M2", 100, t + 300, t + 1), PGW_OK);
    keyed(&cmd, PGW_COMMAND_REFUND, "store:S001:R2", t + 350); /* a till 250 s fast */
    cmd.asked_at = t + 100;
    snprintf(cmd.original, sizeof(cmd.original), "store:S001:P2");
    cmd.amount_fen = 10000;
    assert_int_equal(run_cmd(w, &cmd), PGW_OK);
    keyed(&cmd, PGW_COMMAND_CAPTURE, "S002:C2", t + 200);
    snprintf(cmd.hold_id, sizeof(cmd.hold_id), "S002:H2");
    assert_int_equal(run_cmd(w, &cmd), PGW_OK); /* before its deadline: still pending */
    writer_stop(w);
    assert_verifies(db);
}

/*
 * Debt meets a hold past its deadline that nothing has released yet: a
 * purchase releases it first, so its points repay the debt, as the
 * reference ledger (whose holds are released at their deadline) does.
 * The review's finding: the new lot repaid the debt, and the held points
 * went back to the older lot later and expired with it.
 */
static void test_a_purchase_releases_due_holds_before_it_repays(void **state)
{
    const db_fixture *db = *state;
    const int64_t t = 1795486500;
    pgw_writer *w = start_with(db, true, MONTH);
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 200, 128, 12800, t), PGW_OK);
    assert_int_equal(hold_points(w, "S002:H1", "M1", 300, t + 2, t), PGW_OK);
    pgw_command cmd;
    assert_int_equal(refund(w, "store:S001:R1", "store:S001:P1", 12800, t + 1, &cmd), PGW_OK);
    assert_int_equal(cmd.debt_added, 300);
    /* Two days on, the hold long due: a lot expiring two days after the first. */
    assert_int_equal(earn_simple(w, "store:S001:P2", "M1", 1199, 1, 120000, t + 2 * DAY), PGW_OK);
    pgw_expire_report report;
    assert_int_equal(pgw_expire_due(w, db->url, t + 31 * DAY, NULL, NULL, NULL, &report, NULL),
                     PGW_OK);
    writer_stop(w);
    int64_t balance = balance_at(db, "M1", t + 31 * DAY);
    if (balance != 1200)
        fail_msg("after the first lot's expiry the member has %lld, want 1200 (%lld expired)",
                 (long long)balance, (long long)report.points);
    assert_verifies(db);
}

/*
 * Holds due together are released by deadline, then id, everywhere: the
 * sweep read them by id alone, the reference in the order they were made.
 * With a debt to repay, the first released repays it and the other's
 * points go back to their lot, so the order decides which lot keeps its
 * points when the earlier one expires (the review's finding). A void or a
 * capture of the later hold releases the one already due first, as every
 * other command does (the second review's finding: they repaid from the
 * hold they settled).
 */
static void test_due_holds_release_by_deadline_then_id(void **state)
{
    const db_fixture *db = *state;
    const int64_t t = 1795486500, later = t + 10 * DAY;
    static const char *const ends[] = {"sweep", "void", "capture"};
    static const int64_t want[] = {100, 100, 50};
    static const char *const purchases[] = {"store:S001:P1", "store:S001:P2", "store:S001:P3"};
    for (int end = 0; end < 3; end++) {
        assert_int_equal(db_fixture_reset_migrated(db), 0);
        pgw_writer *w = start_with(db, true, MONTH);
        pgw_ledger_options opts;
        pgw_ledger *ref = reference_new(true, &opts);
        for (int i = 0; i < 3; i++) {
            int64_t at = i == 0 ? t : later;
            assert_int_equal(earn_simple(w, purchases[i], "M1", 60, 40, 10000, at), PGW_OK);
            pgw_earn_line lines[2] = {{"shop:S001:issued", "format:retail", 60},
                                      {"mall:campaigns", "campaign:member-day", 40}};
            pgw_earn_cmd ec = {.member = "M1",
                               .ref = purchases[i],
                               .shop = "S001",
                               .amount_fen = 10000,
                               .n_lines = 2,
                               .lines = lines,
                               .at = at};
            assert_int_equal(pgw_ledger_earn(ref, &ec, NULL), PGW_OK);
        }
        /* H9 takes the first lot and falls due first; H10 the second. */
        assert_int_equal(hold_points(w, "S002:H9", "M1", 100, later + 300, later), PGW_OK);
        assert_int_equal(hold_points(w, "S002:H10", "M1", 100, later + 600, later), PGW_OK);
        assert_int_equal(
            pgw_ledger_hold(ref, "S002:H9", "M1", "S002", 100, later + 300, later, NULL), PGW_OK);
        assert_int_equal(
            pgw_ledger_hold(ref, "S002:H10", "M1", "S002", 100, later + 600, later, NULL), PGW_OK);
        pgw_command cmd;
        assert_int_equal(redeem_points(w, "D1", "M1", 100, later + 1, &cmd), PGW_OK);
        assert_int_equal(pgw_ledger_redeem(ref, "D1", "M1", "S002", 100, later + 1, NULL), PGW_OK);
        assert_int_equal(refund(w, "store:S001:R3", purchases[2], 10000, later + 2, &cmd), PGW_OK);
        assert_int_equal(pgw_ledger_refund(ref, purchases[2], "R3", 10000, later + 2, NULL),
                         PGW_OK);
        assert_int_equal(cmd.debt_added, 100);
        /* H9 due, H10 not: both at one sweep, or H10 settled by a command. */
        const int64_t settle = end == 0 ? later + 700 : later + 400;
        if (end > 0) {
            keyed(&cmd, end == 1 ? PGW_COMMAND_VOID : PGW_COMMAND_CAPTURE, ends[end], settle);
            snprintf(cmd.hold_id, sizeof(cmd.hold_id), "S002:H10");
            cmd.points = end == 1 ? 0 : 50;
            assert_int_equal(run_cmd(w, &cmd), PGW_OK);
        }
        assert_int_equal(pgw_ledger_expire_holds(ref, settle, NULL, NULL), PGW_OK);
        assert_int_equal(end == 0   ? PGW_OK
                         : end == 1 ? pgw_ledger_void(ref, "S002:H10", settle, NULL)
                                    : pgw_ledger_capture(ref, "S002:H10", 50, settle, NULL),
                         PGW_OK);
        /* Then the first lot's expiry. */
        pgw_expire_report report;
        const int64_t sweeps[] = {settle, t + 31 * DAY};
        for (int i = 0; i < 2; i++) {
            assert_int_equal(pgw_expire_due(w, db->url, sweeps[i], NULL, NULL, NULL, &report, NULL),
                             PGW_OK);
            assert_int_equal(pgw_ledger_expire_holds(ref, sweeps[i], NULL, NULL), PGW_OK);
            assert_int_equal(pgw_ledger_expire(ref, sweeps[i], NULL, NULL), PGW_OK);
        }
        writer_stop(w);
        int64_t store = balance_at(db, "M1", t + 31 * DAY), ours = pgw_ledger_balance(ref, "M1");
        pgw_ledger_free(ref);
        if (store != ours || ours != want[end])
            fail_msg("%s, after the first lot's expiry: store %lld, reference %lld, want %lld",
                     ends[end], (long long)store, (long long)ours, (long long)want[end]);
        assert_verifies(db);
    }
}

/* A retried hold is a replay even after the balance it needed is gone:
 * the key is looked up before any rule. */
static void test_hold_replay_is_recognised_before_the_rules(void **state)
{
    const db_fixture *db = *state;
    pgw_writer *w = start_plain(db, false);
    const int64_t t = 1795486500;
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 300, 0 + 1, 0, t), PGW_OK);
    pgw_command hold;
    keyed(&hold, PGW_COMMAND_HOLD, "hold:S002:H1", t);
    snprintf(hold.hold_id, sizeof(hold.hold_id), "S002:H1");
    snprintf(hold.member, sizeof(hold.member), "M1");
    snprintf(hold.shop, sizeof(hold.shop), "S002");
    hold.points = 301;
    hold.deadline = t + 600;
    pgw_command again = hold;
    assert_int_equal(run_cmd(w, &hold), PGW_OK);
    assert_int_equal(hold.figures.available, 0);
    assert_int_equal(hold.figures.pending, 301);
    assert_int_equal(run_cmd(w, &again), PGW_OK);
    assert_true(again.replayed);
    pgw_command other = hold;
    other.fingerprint[0] ^= 1; /* same key, other request */
    assert_int_equal(run_cmd(w, &other), PGW_ECONFLICT);
    writer_stop(w);
    assert_verifies(db);
}

/* ---- returns of what a redemption spent ---- */

static int spend_return(pgw_writer *w, const char *key, const char *spend, const char *id,
                        const char *shop, int64_t points, int64_t at, pgw_command *cmd)
{
    keyed(cmd, PGW_COMMAND_RETURN, key, at);
    snprintf(cmd->original, sizeof(cmd->original), "%s", spend);
    snprintf(cmd->hold_id, sizeof(cmd->hold_id), "%s", id);
    snprintf(cmd->shop, sizeof(cmd->shop), "%s", shop);
    cmd->points = points;
    return run_cmd(w, cmd);
}

static void assert_lot_left(const db_fixture *db, int64_t id, int64_t left)
{
    pgw_store *s = NULL;
    pgw_lot lot;
    int64_t expired = 0;
    bool found = false;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_get_lot(s, id, &found, &lot, &expired, NULL, NULL), PGW_OK);
    assert_true(found);
    assert_int_equal(lot.left, left);
    pgw_store_close(s);
}

/* A return gives back to the lots the redemption spent, what it took last
 * first; only the redemption's shop (or an admin) finds it; never more than
 * it spent; debt is repaid first, as an earn's points repay it. */
static void test_returns_go_back_to_their_lots(void **state)
{
    const db_fixture *db = *state;
    pgw_writer *w = start_plain(db, true);
    const int64_t t = 1795486500;
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 50, 50, 0, t), PGW_OK);
    assert_int_equal(earn_simple(w, "store:S001:P2", "M1", 50, 50, 0, t + 1), PGW_OK);
    pgw_command cmd;
    assert_int_equal(redeem_points(w, "D1", "M1", 150, t + 2, &cmd), PGW_OK);
    assert_lot_left(db, 1, 0);
    assert_lot_left(db, 2, 50);
    assert_int_equal(
        spend_return(w, "return:redeem:D1/1", "redeem:D1", "D1", "S002", 60, t + 3, &cmd), PGW_OK);
    assert_int_equal(cmd.spend_left, 90);
    assert_int_equal(cmd.figures.balance, 110);
    assert_int_equal(cmd.n_transfers, 1);
    assert_string_equal(cmd.transfers[0].debit, "shop:S002:redeemed");
    assert_string_equal(cmd.transfers[0].credit, "member:M1");
    assert_lot_left(db, 2, 100); /* the 50 taken last came back first */
    assert_lot_left(db, 1, 10);
    assert_int_equal(
        spend_return(w, "return:redeem:D1/2", "redeem:D1", "D1", "S001", 1, t + 4, &cmd),
        PGW_ENOTFOUND);
    assert_int_equal(spend_return(w, "return:redeem:D9/1", "redeem:D9", "D9", "", 1, t + 4, &cmd),
                     PGW_ENOTFOUND);
    assert_int_equal(spend_return(w, "return:redeem:D1/2", "redeem:D1", "D1", "", 91, t + 4, &cmd),
                     PGW_EEXCEEDS);
    assert_non_null(strstr(cmd.err.msg, "90 of its 150"));
    assert_int_equal(figure(&cmd.err, "left"), 90);
    assert_int_equal(figure(&cmd.err, "asked"), 91);
    assert_int_equal(figure(&cmd.err, "points"), 150);
    /* Its key names its spend (verify finds a spend's returns by it). */
    assert_int_equal(spend_return(w, "return:redeem:D2/1", "redeem:D1", "D1", "", 1, t + 4, &cmd),
                     PGW_EINVAL);
    assert_int_equal(spend_return(w, "return:redeem:D1/", "redeem:D1", "D1", "", 1, t + 4, &cmd),
                     PGW_EINVAL);
    assert_int_equal(spend_return(w, "return:redeem:D1/a/b", "redeem:D1", "D1", "", 1, t + 4, &cmd),
                     PGW_EINVAL);
    /* M2 asks one point more than its 100: the refusal says both. */
    assert_int_equal(earn_simple(w, "store:S001:P3", "M2", 50, 50, 10000, t + 5), PGW_OK);
    assert_int_equal(redeem_points(w, "D3", "M2", 101, t + 6, &cmd), PGW_EINSUFFICIENT);
    assert_string_equal(cmd.err.member_id, "M2");
    assert_int_equal(figure(&cmd.err, "available"), 100);
    assert_int_equal(figure(&cmd.err, "asked"), 101);
    /* M2 spends its 100, then a refund of the purchase leaves it owing 100. */
    assert_int_equal(redeem_points(w, "D2", "M2", 100, t + 6, &cmd), PGW_OK);
    assert_int_equal(refund(w, "store:S001:R3", "store:S001:P3", 10000, t + 7, &cmd), PGW_OK);
    assert_int_equal(cmd.figures.debt, 100);
    assert_int_equal(
        spend_return(w, "return:redeem:D2/1", "redeem:D2", "D2", "S002", 30, t + 8, &cmd), PGW_OK);
    assert_int_equal(cmd.figures.debt, 70);
    assert_int_equal(cmd.figures.balance, -70);
    assert_lot_left(db, 3, 0); /* the repaid points go to no lot */
    writer_stop(w);
    assert_verifies(db);
}

/* Claims every due notice of the database (up to 4) into got[]. */
static size_t claim_all_notices(const db_fixture *db, pgw_notice got[4])
{
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    size_t n = 0;
    pgw_err err;
    if (pgw_store_claim_notices(s, "A", time(NULL) + 2, got, 4, &n, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    pgw_store_close(s);
    return n;
}

/* A return tells the member the points came back, as an arrival at its
 * shop: the till gave them back, and a member who saw "-150" for the
 * redemption must see them return. Regression: a return queued nothing. */
static void test_a_return_is_told_as_an_arrival(void **state)
{
    const db_fixture *db = *state;
    pgw_writer *w = start_notifying(db, (pgw_expiry){PGW_EXPIRY_NEVER, 0, 0});
    const int64_t t = 1795486500;
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 100, 100, 0, t), PGW_OK);
    pgw_command cmd;
    assert_int_equal(redeem_points(w, "D1", "M1", 150, t + 1, &cmd), PGW_OK);
    assert_int_equal(
        spend_return(w, "return:redeem:D1/1", "redeem:D1", "D1", "S002", 60, t + 2, &cmd), PGW_OK);
    writer_stop(w);
    pgw_notice got[4];
    size_t n = claim_all_notices(db, got);
    if (n != 2 || strcmp(got[1].kind, "points_arrived") != 0 || got[1].points != 60 ||
        got[1].balance != 110 || strcmp(got[1].shop, "S002") != 0)
        fail_msg("claimed %zu notices, the second %s of %lld (balance %lld) at %s: want the "
                 "redemption's, then an arrival of 60 at S002, balance 110",
                 n, n > 1 ? got[1].kind : "none", n > 1 ? (long long)got[1].points : 0,
                 n > 1 ? (long long)got[1].balance : 0, n > 1 ? got[1].shop : "");
    assert_string_equal(got[0].kind, "redemption");
}

/* A return tells only the points the member can use: those given back to
 * a lot past its expiry (the sweep takes them) are not "arrived", as a
 * purchase posted after its expiry tells none. Regression: a return of 60,
 * 10 of them into a lot expired since the redemption, told "+60", and one
 * of 90 all into it told "+90" for points gone within a minute. */
static void test_a_return_into_expired_lots_tells_only_the_rest(void **state)
{
    const db_fixture *db = *state;
    pgw_writer *w = start_notifying(db, (pgw_expiry){PGW_EXPIRY_ROLLING, 1, 0});
    /* Lot 1 (1 Nov 2025) expires on 2 Dec, lot 2 (20 Nov) on 21 Dec. */
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 50, 50, 0, 1761969600), PGW_OK);
    assert_int_equal(earn_simple(w, "store:S001:P2", "M1", 50, 50, 0, 1763611200), PGW_OK);
    pgw_command cmd;
    assert_int_equal(redeem_points(w, "D1", "M1", 150, 1764043200, &cmd),
                     PGW_OK);         /* 25 Nov: 100 of lot 1, 50 of 2 */
    const int64_t dec10 = 1765339200; /* lot 1 expired, not yet swept */
    assert_int_equal(
        spend_return(w, "return:redeem:D1/1", "redeem:D1", "D1", "S002", 60, dec10, &cmd), PGW_OK);
    assert_int_equal(cmd.figures.unexpired, 100);
    assert_int_equal(
        spend_return(w, "return:redeem:D1/2", "redeem:D1", "D1", "S002", 90, dec10 + 1, &cmd),
        PGW_OK);
    writer_stop(w);
    pgw_notice got[4];
    size_t n = claim_all_notices(db, got);
    if (n != 2 || strcmp(got[1].kind, "points_arrived") != 0 || got[1].points != 50 ||
        got[1].balance != 100)
        fail_msg("claimed %zu notices, the second %s of %lld (balance %lld): want the "
                 "redemption's, then an arrival of the 50 of lot 2, balance 100, and none of "
                 "the return into lot 1 alone",
                 n, n > 1 ? got[1].kind : "none", n > 1 ? (long long)got[1].points : 0,
                 n > 1 ? (long long)got[1].balance : 0);
    assert_string_equal(got[0].kind, "redemption");
}

/* ---- verification codes through the writer ---- */

static void otp_make(pgw_command_kind kind, const char *phone, const char *ip, const char *code,
                     int64_t at, pgw_command *cmd)
{
    memset(cmd, 0, sizeof(*cmd));
    cmd->kind = kind;
    cmd->at = at;
    cmd->by_identity = true;
    cmd->who.kind = PGW_ID_PHONE;
    snprintf(cmd->who.lookup, sizeof(cmd->who.lookup), "%s", phone);
    snprintf(cmd->client_address, sizeof(cmd->client_address), "%s", ip);
    snprintf(cmd->channel, sizeof(cmd->channel), "sms");
    snprintf(cmd->otp_requester, sizeof(cmd->otp_requester), "key:app");
    assert_int_equal(pgw_otp_hash((const uint8_t *)"k", 1, phone, code, cmd->otp_hash, NULL),
                     PGW_OK);
    if (kind == PGW_COMMAND_OTP_VERIFY) {
        snprintf(cmd->member, sizeof(cmd->member), "M1");
        snprintf(cmd->key, sizeof(cmd->key), "otp:M1:%s:%s", phone, code);
        memcpy(cmd->fingerprint, cmd->key, 16);
    }
}

static int otp(pgw_writer *w, pgw_command_kind kind, const char *phone, const char *ip,
               const char *code, int64_t at, pgw_command *cmd)
{
    otp_make(kind, phone, ip, code, at, cmd);
    return run_cmd(w, cmd);
}

/* Limits per number and per address, only the newest code counting,
 * expiry, and the right code binding the phone once. */
static void test_otp_codes(void **state)
{
    const db_fixture *db = *state;
    pgw_writer_options wo = {
        .db_url = db->url,
        .queue_cap = 64,
        .batch_max = 16,
        .policy = {.expiry = {PGW_EXPIRY_NEVER, 0, 0}, .otp = pgw_otp_limits_default(300, 3)}};
    pgw_writer *w = NULL;
    pgw_err err;
    if (writer_start(&wo, &w, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    const int64_t t = 1795486500;
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 10, 10, 0, t), PGW_OK);
    pgw_command c;
    assert_int_equal(otp(w, PGW_COMMAND_OTP_ISSUE, "L1", "1.1.1.1", "111111", t, &c), PGW_OK);
    assert_int_equal(otp(w, PGW_COMMAND_OTP_ISSUE, "L1", "2.2.2.2", "222222", t + 30, &c),
                     PGW_ELIMITED);
    assert_int_equal(c.retry_at, t + 60);
    assert_int_equal(otp(w, PGW_COMMAND_OTP_ISSUE, "L1", "1.1.1.1", "333333", t + 60, &c), PGW_OK);
    /* The first code was replaced by the newest. */
    assert_int_equal(otp(w, PGW_COMMAND_OTP_VERIFY, "L1", "", "111111", t + 61, &c), PGW_OK);
    assert_int_equal(c.otp_verdict, PGW_OTP_MISMATCH);
    assert_int_equal(c.otp_tries_left, PGW_OTP_ATTEMPTS_MAX - 1);
    /* Someone else's check of the right code: nothing, and no try taken. */
    pgw_command other;
    otp_make(PGW_COMMAND_OTP_VERIFY, "L1", "", "333333", t + 62, &other);
    other.otp_requester[0] = 'X';
    other.key[0] = 'X'; /* a key of its own */
    assert_int_equal(run_cmd(w, &other), PGW_OK);
    assert_int_equal(other.otp_verdict, PGW_OTP_NONE);
    assert_int_equal(otp(w, PGW_COMMAND_OTP_VERIFY, "L1", "", "333334", t + 63, &c), PGW_OK);
    assert_int_equal(c.otp_tries_left, PGW_OTP_ATTEMPTS_MAX - 2); /* only our own two */
    /* Expired at issue + ttl, even when right. */
    assert_int_equal(otp(w, PGW_COMMAND_OTP_VERIFY, "L1", "", "333333", t + 360, &c), PGW_OK);
    assert_int_equal(c.otp_verdict, PGW_OTP_EXPIRED);
    /* The address had two; a third number from it is the last it gets this hour. */
    assert_int_equal(otp(w, PGW_COMMAND_OTP_ISSUE, "L2", "1.1.1.1", "444444", t + 400, &c), PGW_OK);
    assert_int_equal(otp(w, PGW_COMMAND_OTP_ISSUE, "L3", "1.1.1.1", "555555", t + 401, &c),
                     PGW_ELIMITED);
    assert_int_equal(c.retry_at, t + 3600);
    /* Right: bound once; a replay answers the same; the code is used up. */
    assert_int_equal(otp(w, PGW_COMMAND_OTP_VERIFY, "L2", "", "444444", t + 402, &c), PGW_OK);
    assert_int_equal(c.otp_verdict, PGW_OTP_VERIFIED);
    assert_false(c.replayed);
    assert_int_equal(otp(w, PGW_COMMAND_OTP_VERIFY, "L2", "", "444444", t + 403, &c), PGW_OK);
    assert_true(c.replayed);
    assert_int_equal(otp(w, PGW_COMMAND_OTP_VERIFY, "L2", "", "444445", t + 404, &c), PGW_OK);
    assert_int_equal(c.otp_verdict, PGW_OTP_NONE);
    /* A code that never left is forgotten: no limit counts it, no check finds it. */
    assert_int_equal(otp(w, PGW_COMMAND_OTP_ISSUE, "L5", "", "555000", t + 500, &c), PGW_OK);
    assert_int_equal(otp(w, PGW_COMMAND_OTP_VOID, "L5", "", "555000", t + 501, &c), PGW_OK);
    assert_int_equal(otp(w, PGW_COMMAND_OTP_ISSUE, "L5", "", "555001", t + 502, &c), PGW_OK);
    assert_int_equal(otp(w, PGW_COMMAND_OTP_VOID, "L5", "", "555001", t + 503, &c), PGW_OK);
    assert_int_equal(otp(w, PGW_COMMAND_OTP_VERIFY, "L5", "", "555001", t + 504, &c), PGW_OK);
    assert_int_equal(c.otp_verdict, PGW_OTP_NONE);
    writer_stop(w);

    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, false, &s, &err), PGW_OK);
    pgw_identity_key phone = {.kind = PGW_ID_PHONE};
    snprintf(phone.lookup, sizeof(phone.lookup), "L2");
    bool found = false;
    char holder[PGW_ID_MAX + 1] = "";
    assert_int_equal(pgw_store_find_identity(s, &phone, &found, holder, &err), PGW_OK);
    assert_true(found);
    assert_string_equal(holder, "M1");
    snprintf(phone.lookup, sizeof(phone.lookup), "L1");
    assert_int_equal(pgw_store_find_identity(s, &phone, &found, holder, &err), PGW_OK);
    assert_false(found);
    /* A day later the old codes are forgotten when a new one is recorded. */
    int64_t times[8];
    size_t n = 0;
    assert_int_equal(pgw_store_otp_times(s, "L1", NULL, 0, times, 8, &n, &err), PGW_OK);
    assert_int_equal(n, 2);
    assert_int_equal(times[0], t + 60); /* newest first */
    assert_int_equal(pgw_store_begin(s, &err), PGW_OK);
    uint8_t hash[PGW_OTP_HASH_LEN] = {0};
    assert_int_equal(
        pgw_store_otp_add(s, "L9", hash, "key:app", "", t + 86400 + 60, t + 86400 + 360, &err),
        PGW_OK);
    assert_int_equal(pgw_store_commit(s, &err), PGW_OK);
    assert_int_equal(pgw_store_otp_times(s, "L1", NULL, 0, times, 8, &n, &err), PGW_OK);
    assert_int_equal(n, 0);
    pgw_store_close(s);
    assert_verifies(db);
}

/* A hold is pending strictly before its deadline: at the deadline it cannot
 * be captured or voided, its points are available again, and the expiry
 * run releases it once. */
static void test_hold_deadline_is_exclusive(void **state)
{
    const db_fixture *db = *state;
    pgw_writer *w = start_plain(db, false);
    const int64_t t = 1795486500;
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 500, 1, 0, t), PGW_OK);
    for (int i = 0; i < 2; i++) {
        pgw_command hold;
        char key[32];
        snprintf(key, sizeof(key), "H%d", i);
        keyed(&hold, PGW_COMMAND_HOLD, key, t);
        snprintf(hold.hold_id, sizeof(hold.hold_id), "%s", key);
        snprintf(hold.member, sizeof(hold.member), "M1");
        snprintf(hold.shop, sizeof(hold.shop), "S002");
        hold.points = 200;
        hold.deadline = t + 600;
        assert_int_equal(run_cmd(w, &hold), PGW_OK);
    }
    pgw_command cap;
    keyed(&cap, PGW_COMMAND_CAPTURE, "C0", t + 599);
    snprintf(cap.hold_id, sizeof(cap.hold_id), "H0");
    cap.points = 150;
    assert_int_equal(run_cmd(w, &cap), PGW_OK); /* one second before: still pending */
    assert_int_equal(cap.hold_state, PGW_HOLD_CAPTURED);
    assert_int_equal(cap.figures.balance, 351);
    assert_int_equal(cap.figures.available, 151);
    keyed(&cap, PGW_COMMAND_CAPTURE, "C1", t + 600);
    snprintf(cap.hold_id, sizeof(cap.hold_id), "H1");
    assert_int_equal(run_cmd(w, &cap), PGW_ESTATE); /* at the deadline: expired */
    keyed(&cap, PGW_COMMAND_VOID, "V1", t + 600);
    snprintf(cap.hold_id, sizeof(cap.hold_id), "H1");
    assert_int_equal(run_cmd(w, &cap), PGW_ESTATE);
    pgw_store *s = NULL;
    pgw_member_figures f;
    bool found = false;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    assert_int_equal(pgw_store_member_figures(s, "M1", t + 599, &found, &f, NULL), PGW_OK);
    assert_int_equal(f.available, 151);
    assert_int_equal(pgw_store_member_figures(s, "M1", t + 600, &found, &f, NULL), PGW_OK);
    assert_int_equal(f.available, 351);
    pgw_expire_report report;
    assert_int_equal(pgw_expire_due(w, db->url, t + 600, NULL, NULL, NULL, &report, NULL), PGW_OK);
    assert_int_equal(report.holds, 1);
    assert_int_equal(pgw_expire_due(w, db->url, t + 600, NULL, NULL, NULL, &report, NULL), PGW_OK);
    assert_int_equal(report.holds, 0);
    pgw_hold_record h;
    assert_int_equal(pgw_store_get_hold(s, "H1", &found, &h, NULL), PGW_OK);
    assert_int_equal(h.state, PGW_HOLD_EXPIRED);
    pgw_store_close(s);
    writer_stop(w);
    assert_verifies(db);
}

/* verify names a hold, a lot or an earn whose rows were altered behind the
 * ledger's back. */
static void test_verify_catches_tampered_holds_and_refunds(void **state)
{
    const db_fixture *db = *state;
    static const struct {
        const char *sql;
        const char *problem;
    } tampers[] = {
        {"UPDATE hold_portions SET points = points - 1 WHERE hold = 'H0'", "hold H0"},
        {"UPDATE holds SET state = 2 WHERE id = 'H0'", "hold H0"},
        {"UPDATE earn_reversals SET reversed = reversed + 1", "earn 1:"},
        {"UPDATE earns SET written_off = written_off + 1", "earn 1:"},
        {"UPDATE holds SET captured = captured - 1 WHERE id = 'H1'", "hold H1"},
        {"UPDATE members SET lots_held = lots_held + 1 WHERE id = 'M1'", "member M1:"},
        {"UPDATE members SET lots_left = lots_left - 1 WHERE id = 'M1'", "member M1:"},
    };
    for (size_t i = 0; i < sizeof(tampers) / sizeof(tampers[0]); i++) {
        assert_int_equal(db_fixture_reset_migrated(db), 0);
        pgw_writer *w = start_plain(db, false);
        const int64_t t = 1795486500;
        assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 500, 100, 10000, t), PGW_OK);
        pgw_command cmd;
        assert_int_equal(refund(w, "R1", "store:S001:P1", 5000, t + 1, &cmd), PGW_OK);
        for (int h = 0; h < 2; h++) {
            char id[8];
            snprintf(id, sizeof(id), "H%d", h);
            keyed(&cmd, PGW_COMMAND_HOLD, id, t + 2);
            snprintf(cmd.hold_id, sizeof(cmd.hold_id), "%s", id);
            snprintf(cmd.member, sizeof(cmd.member), "M1");
            snprintf(cmd.shop, sizeof(cmd.shop), "S002");
            cmd.points = 40;
            cmd.deadline = t + 600;
            assert_int_equal(run_cmd(w, &cmd), PGW_OK);
        }
        keyed(&cmd, PGW_COMMAND_CAPTURE, "C1", t + 3);
        snprintf(cmd.hold_id, sizeof(cmd.hold_id), "H1");
        assert_int_equal(run_cmd(w, &cmd), PGW_OK);
        writer_stop(w);
        assert_verifies(db);
        pgw_store *s = NULL;
        pgw_verify_report report;
        assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
        if (!db->pg) /* PostgreSQL keeps its checks; none of these breaks one */
            assert_int_equal(
                pgw_store__exec_for_test(s, "PRAGMA ignore_check_constraints = ON", NULL), PGW_OK);
        assert_int_equal(pgw_store__exec_for_test(s, tampers[i].sql, NULL), PGW_OK);
        assert_int_equal(pgw_store_verify(s, &report, NULL), PGW_OK);
        if (report.ok || strstr(report.problem, tampers[i].problem) == NULL)
            fail_msg("after \"%s\" verify said ok=%d \"%s\"", tampers[i].sql, report.ok,
                     report.problem);
        pgw_store_close(s);
    }
}

/* ---- events: the rules see the member's real activity ------------------------------ */

typedef struct event_run {
    pgw_config *cfg;
    pgw_writer *writer;
    pgw_item item;
    pgw_event ev;
    pgw_earning earning, expected;
    pgw_command cmd;
    int serial;
    const char *member;   /* the events' member; NULL: M1 */
    const char *original; /* what refunds refund; NULL: the first event */
    int32_t shop;         /* the events' shop, by index in the configuration (0: S001) */
    const db_fixture *db; /* the writer's database */
} event_run;

/*
 * Page caches created on the writer thread. Its connection's own is
 * created at open, on the thread that starts the writer; SQLite creates
 * one on the writer thread only for a temporary B-tree, which a statement
 * opens and frees at every step: a RETURNING clause's rows, a subquery in
 * FROM it materializes, a long IN list. On a purchase's path those cost
 * the writer a tenth of its time (bench/RESULTS.md); an event must need
 * none.
 */
static sqlite3_pcache_methods2 pcache1;
static atomic_long writer_caches;

static sqlite3_pcache *count_create(int page_size, int extra_size, int purgeable)
{
    char name[16] = ""; /* a thread's name, at most 15 bytes (util/thread_name.h) */
    if (prctl(PR_GET_NAME, name, 0, 0, 0) == 0 && strcmp(name, "pgw-writer") == 0)
        atomic_fetch_add(&writer_caches, 1);
    return pcache1.xCreate(page_size, extra_size, purgeable);
}

/* Before SQLite starts: the gateway's cache over a counting default one. */
static void count_writer_caches(void)
{
    assert_int_equal(sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &pcache1), SQLITE_OK);
    sqlite3_pcache_methods2 counting = pcache1;
    counting.xCreate = count_create;
    assert_true(pgw_page_cache_install(&counting));
}

static void render_points(pgw_command *cmd, void *payload)
{
    (void)payload;
    snprintf(cmd->answer, sizeof(cmd->answer), "{\"points\": %lld, \"balance\": %lld}",
             (long long)cmd->earning->points, (long long)cmd->figures.balance);
}

/* Each event's key records it once, as its channel knows it: what
 * reconciliation reads, in event_id order, within a time range. */
static void assert_events_recorded(const db_fixture *db, const int64_t points[7], int64_t refunded)
{
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    pgw_event_filter f = {.channel = "store", .shop = "S001", .from = 0, .to = INT64_MAX};
    static pgw_recon_row rows[16];
    size_t n = 0;
    /* Every field set, whatever the memory held: a whole channel's rows
     * are sorted packed, original by its length (regression: it was left
     * as it was, and packed up to the first zero byte). */
    memset(rows, 'x', sizeof(rows));
    assert_int_equal(pgw_store_read_events(s, &f, "", "", rows, 16, &n, NULL), PGW_OK);
    assert_int_equal(n, 7); /* the replay added nothing */
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(rows[i].original, "");
        assert_false(rows[i].key_read);
    }
    static const char *const types[7] = {"purchase", "purchase", "purchase", "refund",
                                         "sign_in",  "sign_in",  "sign_in"};
    for (size_t i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "EV%zu", i + 1);
        assert_string_equal(rows[i].event_id, id);
        assert_string_equal(rows[i].type, types[i]);
        assert_string_equal(rows[i].member, "M1");
        assert_string_equal(rows[i].source, "S001");
        assert_int_equal(rows[i].points, points[i]);
    }
    assert_int_equal(rows[0].amount_fen, 12800);
    assert_int_equal(rows[3].amount_fen, refunded);
    assert_true(rows[3].points < 0);
    assert_int_equal(rows[4].amount_fen, 0);
    /* Paged after a cursor, and within [from, to). */
    assert_int_equal(pgw_store_read_events(s, &f, "EV2", "S001", rows, 2, &n, NULL), PGW_OK);
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].event_id, "EV3");
    f.from = rows[1].occurred_at; /* EV4, the refund */
    f.to = f.from + 1;
    assert_int_equal(pgw_store_read_events(s, &f, "", "", rows, 16, &n, NULL), PGW_OK);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].event_id, "EV4");
    f.shop = NULL; /* every shop of the channel */
    f.to = INT64_MAX;
    assert_int_equal(pgw_store_read_events(s, &f, "", "", rows, 16, &n, NULL), PGW_OK);
    assert_int_equal(n, 4);
    f.channel = "wechat_mp";
    assert_int_equal(pgw_store_read_events(s, &f, "", "", rows, 16, &n, NULL), PGW_OK);
    assert_int_equal(n, 0);
    /* What reconciliation reads of an event is outside the chain; verify
     * holds it to the event's transfers (the finance review: an edited
     * figure went unnoticed). */
    pgw_verify_report report;
    assert_int_equal(pgw_store_verify(s, &report, NULL), PGW_OK);
    assert_true(report.ok);
    assert_int_equal(
        pgw_store__exec_for_test(
            s, "UPDATE idempotency SET points = points + 1 WHERE event_type = 'refund'", NULL),
        PGW_OK);
    assert_int_equal(pgw_store_verify(s, &report, NULL), PGW_OK);
    if (report.ok || strstr(report.problem, "event") == NULL)
        fail_msg("an edited event record: verify said ok=%d \"%s\"", report.ok, report.problem);
    pgw_store_close(s);
}

/* The event `type` of `amount` at `when` under `key` into er->ev and
 * er->cmd, for er->member (NULL: M1) at er->shop. */
static void event_command(event_run *er, const char *key, pgw_event_type type, int64_t amount,
                          const char *when)
{
    er->ev = (pgw_event){.type = type, .shop = er->shop, .amount_fen = amount, .n_items = 0};
    const char *shop = er->cfg->rules.shops[er->shop].id;
    assert_int_equal(pgw_parse_rfc3339(when, &er->ev.occurred_at, NULL), PGW_OK);
    if (type != PGW_EVENT_PURCHASE && type != PGW_EVENT_REFUND)
        er->ev.shop = -1;
    keyed(&er->cmd, PGW_COMMAND_EVENT, key, er->ev.occurred_at);
    snprintf(er->cmd.member, sizeof(er->cmd.member), "%s", er->member ? er->member : "M1");
    snprintf(er->cmd.shop, sizeof(er->cmd.shop), "%s", shop);
    if (er->original != NULL)
        snprintf(er->cmd.original, sizeof(er->cmd.original), "%s", er->original);
    else
        snprintf(er->cmd.original, sizeof(er->cmd.original), "store:%s:EV1", shop);
    er->cmd.event = &er->ev;
    er->cmd.earning = &er->earning;
    er->cmd.render = render_points;
}

/* The figures an event's answer tells of its member (the writer keeps
 * them as it writes, command.c keep_figures) are those a read after it
 * gives, at the time they are as of. */
static void check_event_figures(const event_run *er)
{
    const pgw_command *cmd = &er->cmd;
    pgw_member_figures read = figures_at(er->db, cmd->member, pgw_max64(cmd->at, cmd->asked_at));
    const pgw_member_figures *told = &cmd->figures;
    if (told->balance != read.balance || told->pending != read.pending ||
        told->available != read.available || told->debt != read.debt || told->free != read.free ||
        told->unexpired != read.unexpired)
        fail_msg("event %s of %s: told balance/pending/available/debt/free/unexpired "
                 "%lld/%lld/%lld/%lld/%lld/%lld, read %lld/%lld/%lld/%lld/%lld/%lld",
                 cmd->key, cmd->member, (long long)told->balance, (long long)told->pending,
                 (long long)told->available, (long long)told->debt, (long long)told->free,
                 (long long)told->unexpired, (long long)read.balance, (long long)read.pending,
                 (long long)read.available, (long long)read.debt, (long long)read.free,
                 (long long)read.unexpired);
}

/* Sends one event for M1 at `when` and checks its points against the rules
 * priced with the context the test expects, and its figures. */
static int send_event(event_run *er, pgw_event_type type, int64_t amount, const char *when,
                      const pgw_member_ctx *expect)
{
    pgw_err err;
    char key[64];
    snprintf(key, sizeof(key), "store:%s:EV%d", er->cfg->rules.shops[er->shop].id, er->serial++);
    event_command(er, key, type, amount, when);
    int rc = pgw_writer_run(er->writer, &er->cmd, &err);
    if (rc == PGW_OK)
        check_event_figures(er);
    if (rc == PGW_OK && expect != NULL) {
        assert_int_equal(pgw_rules_earn(&er->cfg->rules, &er->ev, expect, &er->expected, &err),
                         PGW_OK);
        if (er->expected.points != er->earning.points)
            fail_msg("%s %s: earned %lld, the rules give %lld for the expected context",
                     pgw_event_type_name(type), when, (long long)er->earning.points,
                     (long long)er->expected.points);
    }
    return rc;
}

/* The example configuration, for a run not started yet. */
static void event_run_load(event_run *er)
{
    memset(er, 0, sizeof(*er));
    char path[512];
    const char *src = getenv("PGW_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/config/pointsgw.example.json", src ? src : ".");
    pgw_err err;
    if (pgw_config_load(path, &er->cfg, &err) != PGW_OK)
        fail_msg("%s", err.msg);
}

/* A writer pricing events with the run's configuration's rules and
 * `risk`'s limits (NULL: none). */
static void event_run_writer(const db_fixture *db, event_run *er, const pgw_risk_limits *risk)
{
    pgw_writer_options wo = {.db_url = db->url,
                             .queue_cap = 16,
                             .batch_max = 8,
                             .policy = {.expiry = er->cfg->rules.expiry,
                                        .tz = er->cfg->rules.tz,
                                        .allow_negative = er->cfg->allow_negative,
                                        .rules = &er->cfg->rules,
                                        .auto_enroll = true}};
    if (risk != NULL)
        wo.policy.risk = *risk;
    assert_int_equal(writer_start(&wo, &er->writer, NULL), PGW_OK);
    er->serial = 1;
    er->db = db;
}

/* A writer pricing events with the example configuration's rules and
 * `risk`'s limits (NULL: none). */
static void event_run_start_risk(const db_fixture *db, event_run *er, const pgw_risk_limits *risk)
{
    event_run_load(er);
    event_run_writer(db, er, risk);
}

/* The same with no risk limits. */
static void event_run_start(const db_fixture *db, event_run *er)
{
    event_run_start_risk(db, er, NULL);
}

/* The points of the earning's line under `rule`, 0 when it has none. */
static int64_t line_points(const pgw_earning *e, const char *rule)
{
    for (size_t i = 0; i < e->n_lines; i++)
        if (strcmp(e->lines[i].rule, rule) == 0)
            return e->lines[i].points;
    return 0;
}

/* The campaign `id` of the run's configuration. */
static pgw_campaign *campaign(event_run *er, const char *id)
{
    for (size_t i = 0; i < er->cfg->rules.n_campaigns; i++)
        if (strcmp(er->cfg->rules.campaigns[i].id, id) == 0)
            return &er->cfg->rules.campaigns[i];
    fail_msg("no campaign %s in the example configuration", id);
    return NULL;
}

/*
 * A daily cap counts what the member earned under its rule that day, as
 * the store kept it, whatever configuration priced those points: one
 * without the cap (an instance not yet restarted with it) too. The store
 * keeps the day only of campaigns and behaviours, which caps and the risk
 * limit read; the base rate's row was never read and cost a random B-tree
 * leaf per event.
 */
static void test_daily_caps_count_what_the_store_kept(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    /* Double eleven: 3x, at most 500 extra points a day; the first
     * purchase priced while the configuration has no cap. */
    pgw_campaign *double_eleven = campaign(&er, "double-eleven");
    assert_int_equal(double_eleven->daily_cap, 500);
    double_eleven->daily_cap = 0;
    const char *day = "2026-11-12T10:00:00+08:00";
    static const int64_t amounts[] = {10000, 20000, 10000};
    int64_t extra[3];
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, amounts[i], day, NULL), PGW_OK);
        extra[i] = line_points(&er.earning, "campaign:double-eleven");
        double_eleven->daily_cap = 500;
    }
    assert_true(extra[0] > 0 && extra[0] < 500);
    assert_int_equal(extra[0] + extra[1], 500); /* capped by what the first earned */
    assert_int_equal(extra[2], 0);
    /* Reviews: 20 points, at most 60 a day. */
    int64_t reviews[4];
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(send_event(&er, PGW_EVENT_REVIEW, 0, day, NULL), PGW_OK);
        reviews[i] = er.earning.points;
    }
    assert_int_equal(reviews[0] + reviews[1] + reviews[2], 60);
    assert_int_equal(reviews[3], 0);
    assert_int_equal(send_event(&er, PGW_EVENT_REVIEW, 0, "2026-11-13T10:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(er.earning.points, 20); /* a new day */
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    /* The campaign's day, the first purchase bonus's, the reviews' two
     * days; not format:retail's, which every purchase earned. */
    assert_int_equal(db_fixture_int64(db, "SELECT count(*) FROM member_rule_days"), 4);
    assert_int_equal(db_fixture_int64(db, "SELECT count(*) FROM member_rule_days WHERE rule IN"
                                          " ('campaign:double-eleven', 'behaviour:review',"
                                          " 'behaviour:first_purchase')"),
                     4);
}
/*
 * A referral whose referee earns nothing of its own (the configuration's
 * referral points 0) still pays the referrer: its lot with its transfer,
 * so that its balance and the log agree.
 */
static void test_a_referral_paying_only_the_referrer_credits_it(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    er.cfg->rules.behaviours.referral.points = 0;
    const char *day = "2026-11-12T10:00:00+08:00";
    er.member = "M2";
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 10000, day, NULL), PGW_OK);
    int64_t before = er.cmd.figures.balance;
    er.member = "M1";
    event_command(&er, "store:S001:REF1", PGW_EVENT_REFERRAL, 0, day);
    er.cmd.has_referrer = true;
    snprintf(er.cmd.referrer, sizeof(er.cmd.referrer), "M2");
    pgw_err err;
    if (pgw_writer_run(er.writer, &er.cmd, &err) != PGW_OK)
        fail_msg("the referral: %s", err.msg);
    assert_int_equal(er.earning.points, 0);
    assert_int_equal(er.earning.referrer_points, 200);
    int64_t at = er.cmd.at;
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_verifies(db);
    assert_int_equal(balance_at(db, "M2", at), before + 200);
}

/*
 * Regression (a review of the rules): a refund took back its purchase's
 * points but not their share of the day's caps, so an exchange (a refund,
 * then the same buy again that day) earned nothing of double-eleven (cap
 * 500 a day): "daily cap of campaign:double-eleven reached" by points the
 * member no longer had. A refund now frees its share of each capped rule
 * on its purchase's day; a challenge's day, which says it was paid this
 * month, stays (test_a_challenge_pays_once_a_month).
 */
static void test_a_refund_frees_its_share_of_the_daily_caps(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    const char *rule = "campaign:double-eleven";
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 50000, "2026-11-12T10:00:00+08:00", NULL),
                     PGW_OK); /* EV1: 500 of 1,000 extra, the day's cap */
    assert_int_equal(line_points(&er.earning, rule), 500);
    er.original = "store:S001:EV1";
    assert_int_equal(send_event(&er, PGW_EVENT_REFUND, 50000, "2026-11-12T11:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 50000, "2026-11-12T12:00:00+08:00", NULL),
                     PGW_OK); /* EV3: the exchange */
    int64_t exchanged = line_points(&er.earning, rule);
    er.original = "store:S001:EV3";
    assert_int_equal(send_event(&er, PGW_EVENT_REFUND, 10000, "2026-11-12T13:00:00+08:00", NULL),
                     PGW_OK); /* a fifth of EV3: 100 of its 500 */
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 50000, "2026-11-12T14:00:00+08:00", NULL),
                     PGW_OK);
    int64_t after_part = line_points(&er.earning, rule);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    if (exchanged != 500 || after_part != 100)
        fail_msg("after the refund: %lld (want 500); after a fifth refunded: %lld (want 100)",
                 (long long)exchanged, (long long)after_part);
    assert_verifies(db);
}

/* A referral of `referee` by M2 on `day`: the referrer's points it paid. */
static int64_t referred(event_run *er, const char *referee, const char *day)
{
    char key[64];
    snprintf(key, sizeof(key), "store:S001:REF%d", er->serial++);
    er->member = referee;
    event_command(er, key, PGW_EVENT_REFERRAL, 0, day);
    er->cmd.has_referrer = true;
    snprintf(er->cmd.referrer, sizeof(er->cmd.referrer), "M2");
    pgw_err err;
    if (pgw_writer_run(er->writer, &er->cmd, &err) != PGW_OK)
        fail_msg("the referral of %s: %s", referee, err.msg);
    assert_int_equal(er->earning.points, 100); /* the referee's side, capped on its own day */
    return er->earning.referrer_points;
}

/*
 * Regression (a review of the rules): behaviours.referral.daily_cap capped
 * the referee's points only; the referrer was paid for every referee of the
 * day, which is where a referral scheme is gamed (one member, many made-up
 * referees). The referrer's side now counts in the referrer's own day of
 * behaviour:referral, within the same cap, and its answer says what it paid.
 */
static void test_a_referrers_points_keep_the_referral_daily_cap(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    er.cfg->rules.behaviours.referral.daily_cap = 500;
    const char *day = "2026-11-12T10:00:00+08:00", *next = "2026-11-13T10:00:00+08:00";
    er.member = "M2";
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 10000, day, NULL), PGW_OK);
    int64_t before = er.cmd.figures.balance;
    int64_t paid[4];
    paid[0] = referred(&er, "M11", day);
    paid[1] = referred(&er, "M12", day);
    paid[2] = referred(&er, "M13", day); /* 100 left of the day's 500 */
    paid[3] = referred(&er, "M14", day);
    int64_t next_day = referred(&er, "M15", next);
    int64_t at = er.cmd.at;
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_int_equal(paid[0], 200);
    assert_int_equal(paid[1], 200);
    assert_int_equal(paid[2], 100);
    assert_int_equal(paid[3], 0);
    assert_int_equal(next_day, 200);
    assert_verifies(db);
    assert_int_equal(balance_at(db, "M2", at), before + 700);
}

/* Sends a purchase of `member` dated `when`, applied at `asked` (0: then),
 * and checks the figures its answer tells. */
static void purchase_told(event_run *er, const char *member, const char *when, int64_t asked)
{
    char key[64];
    snprintf(key, sizeof(key), "store:S001:F%d", er->serial++);
    er->member = member;
    event_command(er, key, PGW_EVENT_PURCHASE, 12800, when);
    er->cmd.asked_at = asked;
    pgw_err err;
    if (pgw_writer_run(er->writer, &er->cmd, &err) != PGW_OK)
        fail_msg("%s: %s", key, err.msg);
    check_event_figures(er);
}

/*
 * An event's answer tells its member's figures after it: kept from its
 * read of the member and the lot it wrote, not read again (one statement
 * fewer a purchase), or read when more than a lot changed them (a debt
 * repaid) or a hold keeps some (pending, or due and not yet released).
 * Each as a read after it says: a new member, a returning one, a lot
 * already past its expiry when applied (a backlog), with a hold, after it.
 */
static void test_an_events_figures_are_what_a_read_says(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    int64_t now = 0, later = 0;
    assert_int_equal(pgw_parse_rfc3339("2026-11-24T10:00:00+08:00", &now, NULL), PGW_OK);
    purchase_told(&er, "M1", "2026-11-24T10:00:00+08:00", 0); /* enrolled by it */
    int64_t first = er.cmd.figures.balance;
    assert_true(first > 0);
    purchase_told(&er, "M1", "2026-11-24T11:00:00+08:00", 0);
    assert_true(er.cmd.figures.balance > first);
    /* Dated 2024: its lot expired at the end of 2025, before it was applied. */
    purchase_told(&er, "M1", "2024-06-01T10:00:00+08:00", now + 7200);
    assert_true(er.cmd.figures.balance > er.cmd.figures.available);
    purchase_told(&er, "M2", "2024-06-01T10:00:00+08:00", now + 7200); /* a new member's, too */
    assert_int_equal(er.cmd.figures.available, 0);
    /* A hold pending, then due and not released: read. */
    assert_int_equal(hold_points(er.writer, "S002:H1", "M1", 100, now + 8000, now + 7300), PGW_OK);
    purchase_told(&er, "M1", "2026-11-24T12:00:00+08:00", now + 7400);
    assert_int_equal(er.cmd.figures.pending, 100);
    assert_int_equal(pgw_parse_rfc3339("2026-11-24T13:00:00+08:00", &later, NULL), PGW_OK);
    purchase_told(&er, "M1", "2026-11-24T13:00:00+08:00", later + 7200);
    writer_stop(er.writer);
    assert_verifies(db);
    pgw_config_free(er.cfg);
}

/*
 * An event refused before its member's activity is read (its day's year
 * before leaves the supported years: 1970) tells no figures: all 0, as
 * reset_output leaves them, not what the writer's stack held (command.c
 * apply_event copied its unread activity's figures). The purchase before
 * it leaves a member's figures on that stack; valgrind sees the rest.
 */
static void test_an_event_refused_before_its_read_tells_no_figures(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    purchase_told(&er, "M1", "2026-11-24T10:00:00+08:00", 0);
    assert_true(er.cmd.figures.balance > 0);
    event_command(&er, "store:S001:EARLY", PGW_EVENT_PURCHASE, 12800, "1970-06-01T10:00:00+08:00");
    pgw_err err;
    assert_int_equal(pgw_writer_run(er.writer, &er.cmd, &err), PGW_ERANGE);
    const pgw_member_figures *f = &er.cmd.figures;
    if (f->balance != 0 || f->pending != 0 || f->available != 0 || f->debt != 0 || f->free != 0 ||
        f->unexpired != 0)
        fail_msg("refused event told balance/pending/available/debt/free/unexpired "
                 "%lld/%lld/%lld/%lld/%lld/%lld",
                 (long long)f->balance, (long long)f->pending, (long long)f->available,
                 (long long)f->debt, (long long)f->free, (long long)f->unexpired);
    writer_stop(er.writer);
    assert_verifies(db);
    pgw_config_free(er.cfg);
}

static void test_events_are_priced_with_the_members_activity(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    atomic_store(&writer_caches, 0);
    int64_t points[7], refunded = 0; /* what each event moved, for reconciliation */
    /* A first purchase: a new member with no history. */
    pgw_member_ctx ctx = {.first_purchase = true};
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 12800, "2026-11-24T10:00:00+08:00", &ctx),
                     PGW_OK);
    points[0] = er.earning.points;
    assert_true(er.earning.points > 0);
    char first_answer[PGW_ANSWER_MAX];
    snprintf(first_answer, sizeof(first_answer), "%s", er.cmd.answer);
    pgw_rule_total today[PGW_BREAKDOWN_MAX];
    ctx.n_today = 0;
    for (size_t i = 0; i < er.expected.n_lines; i++)
        today[ctx.n_today++] = (pgw_rule_total){.points = er.expected.lines[i].points};
    for (size_t i = 0; i < ctx.n_today; i++)
        snprintf(today[i].rule, sizeof(today[i].rule), "%s", er.expected.lines[i].rule);
    /* The same day again: not first, spend and month counts see the first. */
    ctx = (pgw_member_ctx){.spend_12m_fen = 12800,
                           .month_purchases = 1,
                           .month_spend_fen = 12800,
                           .n_today = ctx.n_today,
                           .today = today};
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 600000, "2026-11-24T11:00:00+08:00", &ctx),
                     PGW_OK);
    points[1] = er.earning.points;
    /* Next day: 612800 spent in 12 months makes the member gold. */
    ctx =
        (pgw_member_ctx){.spend_12m_fen = 612800, .month_purchases = 2, .month_spend_fen = 612800};
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 10000, "2026-11-25T09:00:00+08:00", &ctx),
                     PGW_OK);
    points[2] = er.earning.points;
    assert_int_equal(er.expected.tier, pgw_rules_tier_for_spend(&er.cfg->rules, 612800));
    assert_true(er.expected.tier > 0);
    /* Refunding the first purchase in full takes its spend back out. */
    assert_int_equal(send_event(&er, PGW_EVENT_REFUND, 12800, "2026-11-25T09:30:00+08:00", NULL),
                     PGW_OK);
    points[3] = -er.cmd.points_moved;
    refunded = 12800;
    assert_true(er.cmd.points_moved > 0);
    /* No tier priced a refund, so its answer names none: it named the
     * first ("silver") for this gold member, from an earning zeroed
     * (tier 0) instead of emptied (-1). */
    assert_int_equal(er.earning.tier, -1);
    /* Sign in twice on the 26th, then on the 27th: a streak of two. */
    ctx =
        (pgw_member_ctx){.spend_12m_fen = 610000, .month_purchases = 3, .month_spend_fen = 610000};
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, "2026-11-26T08:00:00+08:00", &ctx),
                     PGW_OK);
    points[4] = er.earning.points;
    assert_int_equal(er.earning.sign_in_streak, 1);
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, "2026-11-26T09:00:00+08:00", NULL),
                     PGW_OK);
    points[5] = er.earning.points;
    assert_int_equal(er.earning.points, 0); /* already signed in today */
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, "2026-11-27T08:00:00+08:00", NULL),
                     PGW_OK);
    points[6] = er.earning.points;
    assert_int_equal(er.earning.sign_in_streak, 2);
    /* A replay repeats the stored answer and changes nothing. */
    keyed(&er.cmd, PGW_COMMAND_EVENT, "store:S001:EV1", er.ev.occurred_at);
    er.cmd.event = &er.ev;
    er.cmd.earning = &er.earning;
    snprintf(er.cmd.member, sizeof(er.cmd.member), "M1");
    assert_int_equal(pgw_writer_run(er.writer, &er.cmd, NULL), PGW_OK);
    assert_true(er.cmd.replayed);
    assert_string_equal(er.cmd.answer, first_answer);
    assert_int_equal(atomic_load(&writer_caches), 0); /* no temporary B-tree (see count_create) */
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_verifies(db);
    assert_events_recorded(db, points, refunded);
}

/*
 * max_events_per_member_per_day bounds the events that move points (a
 * scripted flood of them): one that earns nothing does not use it up. A
 * member who signed in twice (the second earning 0) was refused the day's
 * real purchase with a limit of 2.
 */
static void test_events_that_earn_nothing_leave_the_daily_event_limit(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    const pgw_risk_limits risk = {.max_events_per_member_per_day = 2};
    event_run_start_risk(db, &er, &risk);
    const char *day = "2026-11-26T08:00:00+08:00";
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, day, NULL), PGW_OK);
    assert_true(er.earning.points > 0);
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, "2026-11-26T09:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(er.earning.points, 0); /* signed in already: counts for nothing */
    int rc = send_event(&er, PGW_EVENT_PURCHASE, 10000, "2026-11-26T10:00:00+08:00", NULL);
    if (rc != PGW_OK)
        fail_msg("the purchase after a sign-in that earned nothing: %d (%s)", rc, er.cmd.err.msg);
    assert_true(er.earning.points > 0);
    /* Two events moved points today: the limit holds for the next. */
    rc = send_event(&er, PGW_EVENT_PURCHASE, 10000, "2026-11-26T11:00:00+08:00", NULL);
    assert_int_equal(rc, PGW_ERISK);
    assert_non_null(
        strstr(er.cmd.err.msg,
               "max_events_per_member_per_day: member M1 has had 2 events that moved points"));
    assert_int_equal(er.cmd.risk_rule, PGW_RISK_MAX_EVENTS_PER_MEMBER_PER_DAY);
    /* A new day, a new allowance. */
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, "2026-11-27T08:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(er.cmd.risk_rule, PGW_RISK_NONE); /* the command applied again */
    assert_true(er.earning.points > 0);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_verifies(db);
    assert_int_equal(db_fixture_int64(db, "SELECT sum(events) FROM activity_days"), 3);
}

/* Each rule has a name of its own, the one its config key and its
 * metric label (api.c) share; none for no rule, nor past the last. */
static void test_risk_rules_are_named_once(void **state)
{
    (void)state;
    assert_null(pgw_risk_rule_name(PGW_RISK_NONE));
    assert_null(pgw_risk_rule_name(PGW_RISK_RULES_END));
    assert_null(pgw_risk_rule_name((pgw_risk_rule)-1));
    assert_string_equal(pgw_risk_rule_name(PGW_RISK_MAX_POINTS_PER_EVENT), "max_points_per_event");
    assert_string_equal(pgw_risk_rule_name(PGW_RISK_MAX_NEW_MEMBERS_PER_IP_PER_HOUR),
                        "max_new_members_per_ip_per_hour");
    for (pgw_risk_rule r = PGW_RISK_NONE + 1; r < PGW_RISK_RULES_END; r++) {
        const char *name = pgw_risk_rule_name(r);
        assert_non_null(name);
        for (pgw_risk_rule s = PGW_RISK_NONE + 1; s < r; s++)
            if (strcmp(pgw_risk_rule_name(s), name) == 0)
                fail_msg("rules %d and %d are both \"%s\"", (int)s, (int)r, name);
    }
}

/* M1's spend over the 12 months to 2026-11-24 (local days). */
static int64_t spend_12m(pgw_store *s)
{
    pgw_activity_days days = {.today = pgw_days_from_date((pgw_date){2026, 11, 24})};
    days.year_before = pgw_days_from_date((pgw_date){2025, 11, 24});
    days.month_first = pgw_days_from_date((pgw_date){2026, 11, 1});
    pgw_member_activity a;
    bool found = false;
    assert_int_equal(pgw_store_member_activity(s, "M1", &days, &found, &a, NULL), PGW_OK);
    assert_true(found);
    return a.spend_12m_fen;
}

/*
 * A purchase that earned nothing (under the earning threshold) has no
 * earn; its refund was original_not_found, so the till's real refund went
 * unrecorded. Its refunds are recorded, move no points, and are summed
 * against its amount like any purchase's: they take at most the purchase
 * off the member's spend (refunds one by one, never summed, once let a
 * 40-fen purchase take a gold member down to silver). verify names a
 * purchase whose recorded refunds exceed it.
 */
static void test_refunds_of_a_purchase_that_earned_nothing(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    /* The first purchase earns its bonus; the second, of 50 fen, nothing. */
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 100, "2026-11-24T09:00:00+08:00", NULL),
                     PGW_OK);
    assert_true(er.earning.points > 0);
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 50, "2026-11-24T10:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(er.earning.points, 0);
    er.original = "store:S001:EV2";
    static const struct {
        int64_t fen;
        int rc;
    } refunds[] = {{30, PGW_OK}, {21, PGW_EEXCEEDS}, {20, PGW_OK}, {1, PGW_EEXCEEDS}};
    for (size_t i = 0; i < sizeof(refunds) / sizeof(refunds[0]); i++) {
        int rc =
            send_event(&er, PGW_EVENT_REFUND, refunds[i].fen, "2026-11-24T10:05:00+08:00", NULL);
        if (rc != refunds[i].rc)
            fail_msg("refund %zu of %lld fen: %d, wanted %d (%s)", i, (long long)refunds[i].fen, rc,
                     refunds[i].rc, er.cmd.err.msg);
        if (rc == PGW_OK) {
            assert_int_equal(er.cmd.points_moved, 0);
            assert_int_equal(er.cmd.n_transfers, 0);
            assert_string_equal(er.cmd.member, "M1");
        }
    }
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_verifies(db);
    pgw_store *s = NULL;
    pgw_verify_report report;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    assert_int_equal(spend_12m(s), 100); /* 150 bought, 50 refunded */
    assert_int_equal(
        pgw_store__exec_for_test(s, "UPDATE unearned_refunds SET refunded_fen = 51", NULL), PGW_OK);
    assert_int_equal(pgw_store_verify(s, &report, NULL), PGW_OK);
    if (report.ok || strstr(report.problem, "purchase store:S001:EV2:") == NULL)
        fail_msg("verify said ok=%d \"%s\"", report.ok, report.problem);
    pgw_store_close(s);
}

/* Refund event `ev` (store:S001:EV<n>, numbered from 1) of `member`'s `original`. */
static void refund_event(event_run *er, const char *member, const char *original, int64_t fen,
                         const char *when)
{
    er->member = member;
    er->original = original;
    int rc = send_event(er, PGW_EVENT_REFUND, fen, when, NULL);
    if (rc != PGW_OK)
        fail_msg("refund of %s: %s (%s)", original, pgw_code_name(rc), er->cmd.err.msg);
}

/*
 * A clamp store's purchases, refunded (as events) after expiry and after
 * their points were spent: each refund's key carries what it wrote off.
 *   P1 (M1): 100 points, all expired; EV1 and EV2 refund half each, both
 *            written off whole (no transfers).
 *   P2 (M2): 100 points, 60 spent, 40 expired; EV3 refunds half: 40
 *            lapsed, 10 taken from M2's P3; EV4 the other half, all taken.
 *   P4 (M3): 100 points, 70 spent; EV5 refunds all: 30 reversed, 70 not
 *            covered and written off (clamp).
 */
static void refunds_written_off(const db_fixture *db)
{
    static event_run er;
    event_run_load(&er);
    er.cfg->allow_negative = false;
    er.cfg->rules.expiry = MONTH;
    event_run_writer(db, &er, NULL);
    const int64_t t = 1795486500; /* 2026-11-24T10:15:00+08:00 */
    pgw_writer *w = er.writer;
    pgw_command cmd;
    assert_int_equal(earn_simple(w, "store:S001:P1", "M1", 60, 40, 10000, t), PGW_OK);
    assert_int_equal(earn_simple(w, "store:S001:P2", "M2", 60, 40, 10000, t), PGW_OK);
    assert_int_equal(redeem_points(w, "S002:D2", "M2", 60, t + 1, &cmd), PGW_OK);
    assert_int_equal(earn_simple(w, "store:S001:P3", "M2", 499, 1, 50000, t + 20 * DAY), PGW_OK);
    assert_int_equal(earn_simple(w, "store:S001:P4", "M3", 60, 40, 10000, t + 30 * DAY), PGW_OK);
    assert_int_equal(redeem_points(w, "S002:D4", "M3", 70, t + 30 * DAY + 1, &cmd), PGW_OK);
    pgw_expire_report report;
    assert_int_equal(pgw_expire_due(w, db->url, t + 40 * DAY, NULL, NULL, NULL, &report, NULL),
                     PGW_OK);
    assert_int_equal(report.points, 140);
    static const char *const when = "2027-01-04T10:15:00+08:00"; /* t + 41 days */
    refund_event(&er, "M1", "store:S001:P1", 5000, when);
    refund_event(&er, "M1", "store:S001:P1", 5000, when);
    refund_event(&er, "M2", "store:S001:P2", 5000, when);
    assert_int_equal(er.cmd.points_moved, 10);
    refund_event(&er, "M2", "store:S001:P2", 5000, when);
    refund_event(&er, "M3", "store:S001:P4", 10000, when);
    assert_int_equal(er.cmd.points_moved, 30);
    writer_stop(w);
    pgw_config_free(er.cfg);
}

/* Purchase `key`'s earn as the store has it. */
static pgw_earn_record earn_of(pgw_store *s, const char *key)
{
    pgw_earn_record e;
    bool found = false;
    assert_int_equal(pgw_store_get_earn(s, key, &found, &e, NULL), PGW_OK);
    assert_true(found);
    return e;
}

/*
 * What each refund's key says it wrote off adds up, per purchase, to what
 * the purchase's earn says: expired points lapsed, the rest not covered
 * under clamp. Read back from the rows both sides.
 */
static void test_refund_keys_carry_what_their_earn_wrote_off(void **state)
{
    const db_fixture *db = *state;
    refunds_written_off(db);
    assert_verifies(db);
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    pgw_event_filter f = {.channel = "store", .shop = "S001", .from = 0, .to = INT64_MAX};
    static pgw_recon_row rows[8];
    size_t n = 0;
    assert_int_equal(pgw_store_read_events(s, &f, "", "", rows, 8, &n, NULL), PGW_OK);
    assert_int_equal(n, 5);
    static const int64_t written_off[5] = {50, 50, 40, 0, 70};
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].type, "refund") != 0 || rows[i].written_off != written_off[i])
            fail_msg("%s: a %s writing off %lld; want a refund writing off %lld", rows[i].event_id,
                     rows[i].type, (long long)rows[i].written_off, (long long)written_off[i]);
    static const struct {
        const char *key;
        int64_t expired, written_off, reversed, keys_written_off;
    } earns[] = {{"store:S001:P1", 100, 100, 0, 50 + 50},
                 {"store:S001:P2", 40, 40, 60, 40 + 0},
                 {"store:S001:P4", 0, 70, 30, 70}};
    for (size_t i = 0; i < sizeof(earns) / sizeof(earns[0]); i++) {
        pgw_earn_record e = earn_of(s, earns[i].key);
        int64_t reversed = e.reversed[0] + e.reversed[1];
        if (e.expired != earns[i].expired || e.written_off != earns[i].written_off ||
            e.written_off != earns[i].keys_written_off || reversed != earns[i].reversed ||
            e.refunded_fen != e.amount_fen || reversed + e.written_off != e.points)
            fail_msg("%s: expired %lld, written off %lld, reversed %lld of %lld refunded fen",
                     earns[i].key, (long long)e.expired, (long long)e.written_off,
                     (long long)reversed, (long long)e.refunded_fen);
    }
    pgw_store_close(s);
}

/*
 * verify holds each refund's key's written_off to its purchase's earn
 * (the finance notes: schema 31 kept it with the key for reconciliation
 * to show, and nothing checked it). An edit of one, or one moved from a
 * purchase to another, is named; a key whose written_off is not known
 * (NULL: a refund recorded before schema 31 whose answer did not say) is
 * no discrepancy.
 */
static void test_verify_holds_refund_keys_to_their_earns(void **state)
{
    const db_fixture *db = *state;
    refunds_written_off(db);
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    char p2[32], p4[32];
    snprintf(p2, sizeof(p2), "earn %lld:", (long long)earn_of(s, "store:S001:P2").first_transfer);
    snprintf(p4, sizeof(p4), "earn %lld:", (long long)earn_of(s, "store:S001:P4").first_transfer);
#define KEY(n) "'store:S001:EV" #n "'"
    const struct {
        const char *tamper, *undo, *problem; /* problem NULL: verifies */
    } cases[] = {
        /* EV3 reversed 10 and wrote off 40 (its transfers name P2's earn). */
        {"UPDATE idempotency SET written_off = 30 WHERE key = " KEY(3),
         "UPDATE idempotency SET written_off = 40 WHERE key = " KEY(3), p2},
        /* EV5 reversed 30 of P4 and wrote off 70. */
        {"UPDATE idempotency SET written_off = 0 WHERE key = " KEY(5),
         "UPDATE idempotency SET written_off = 70 WHERE key = " KEY(5), p4},
        /* 10 moved from EV3 to EV5: the total is as it was, each earn's
         * not (either may be named first). */
        {"UPDATE idempotency SET written_off = written_off + CASE key WHEN " KEY(
             3) " THEN -10 ELSE 10 END WHERE key IN (" KEY(3) ", " KEY(5) ")",
         "UPDATE idempotency SET written_off = CASE key WHEN " KEY(3) " THEN 40 ELSE 70 END"
                                                                      " WHERE key IN (" KEY(
                                                                          3) ", " KEY(5) ")",
         "earn "},
        /* EV1 wrote P1's expired points off whole: it has no transfers. */
        {"UPDATE idempotency SET written_off = 55 WHERE key = " KEY(1),
         "UPDATE idempotency SET written_off = 50 WHERE key = " KEY(1), "refunds"},
        {"UPDATE idempotency SET written_off = 45 WHERE key = " KEY(1),
         "UPDATE idempotency SET written_off = 50 WHERE key = " KEY(1), "refunds"},
        /* Not known: fewer than the earn's, and no discrepancy. */
        {"UPDATE idempotency SET written_off = NULL WHERE key IN (" KEY(1) ", " KEY(3) ")",
         "UPDATE idempotency SET written_off = CASE key WHEN " KEY(3) " THEN 40 ELSE 50 END"
                                                                      " WHERE key IN (" KEY(
                                                                          1) ", " KEY(3) ")",
         NULL},
    };
#undef KEY
    pgw_verify_report report;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(pgw_store__exec_for_test(s, cases[i].tamper, NULL), PGW_OK);
        assert_int_equal(pgw_store_verify(s, &report, NULL), PGW_OK);
        bool named = cases[i].problem != NULL && !report.ok &&
                     strstr(report.problem, cases[i].problem) != NULL &&
                     strstr(report.problem, "written off") != NULL;
        if (cases[i].problem != NULL ? !named : !report.ok)
            fail_msg("after \"%s\" verify said ok=%d \"%s\"; want %s", cases[i].tamper, report.ok,
                     report.problem, cases[i].problem ? cases[i].problem : "ok");
        assert_int_equal(pgw_store__exec_for_test(s, cases[i].undo, NULL), PGW_OK);
        assert_int_equal(pgw_store_verify(s, &report, NULL), PGW_OK);
        if (!report.ok)
            fail_msg("after \"%s\" verify said \"%s\"", cases[i].undo, report.problem);
    }
    pgw_store_close(s);
}

/*
 * A purchase that lifts the member to gold queues its arrival, then the
 * tier change, and the arrival goes first, at once: "+N points", then
 * "you are now 金卡". Regression: the tier change was queued first and
 * went at once; the arrival waited out its 10 s window, after it.
 */
static void test_a_tier_change_goes_after_its_arrival(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_load(&er);
    pgw_writer_options wo = {.db_url = db->url,
                             .queue_cap = 16,
                             .batch_max = 8,
                             .policy = {.expiry = er.cfg->rules.expiry,
                                        .tz = er.cfg->rules.tz,
                                        .allow_negative = er.cfg->allow_negative,
                                        .rules = &er.cfg->rules,
                                        .auto_enroll = true,
                                        .notify = true,
                                        .notify_coalesce_s = 10}};
    assert_int_equal(writer_start(&wo, &er.writer, NULL), PGW_OK);
    er.serial = 1;
    er.db = db;
    char when[32];
    time_t t = time(NULL);
    struct tm utc;
    assert_non_null(gmtime_r(&t, &utc));
    assert_true(strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &utc) > 0);
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 600000, when, NULL), PGW_OK);
    assert_true(er.cmd.new_tier > 0);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    pgw_notice got[4];
    size_t n = 0;
    pgw_err err;
    if (pgw_store_claim_notices(s, "A", (int64_t)t + 2, got, 4, &n, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    pgw_store_close(s);
    if (n != 2 || strcmp(got[0].kind, "points_arrived") != 0 ||
        strcmp(got[1].kind, "tier_changed") != 0)
        fail_msg("claimed %zu at once, the first %s: want the arrival, then the tier change", n,
                 n > 0 ? got[0].kind : "none");
}

/*
 * A refund takes its amount off the spend of its purchase's day, not the
 * refund's: a purchase more than 12 months old no longer counts towards
 * the tier, and refunding it took its amount off the spend of the last 12
 * months all the same (the review dropped a gold member to silver so).
 */
static void test_a_refund_moves_the_spend_of_its_purchases_day(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 600000, "2025-10-01T10:00:00+08:00", NULL),
                     PGW_OK); /* EV1: 14 months before the refund */
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 600000, "2026-11-20T10:00:00+08:00", NULL),
                     PGW_OK); /* EV2 */
    int32_t gold = pgw_rules_tier_for_spend(&er.cfg->rules, 600000);
    assert_true(gold > 0);
    /* EV1's key as schema 12 left it: no time (events recorded before
     * schema 13 have none). Its transfers say when it was. */
    pgw_store *raw = NULL;
    assert_int_equal(pgw_store_open(db->url, false, &raw, NULL), PGW_OK);
    assert_int_equal(
        pgw_store__exec_for_test(
            raw, "UPDATE idempotency SET occurred_at = 0 WHERE key = 'store:S001:EV1'", NULL),
        PGW_OK);
    pgw_store_close(raw);
    assert_int_equal(send_event(&er, PGW_EVENT_REFUND, 600000, "2026-11-24T10:00:00+08:00", NULL),
                     PGW_OK); /* all of EV1 */
    assert_int_equal(er.cmd.new_tier, -1);
    er.original = "store:S001:EV2";
    assert_int_equal(send_event(&er, PGW_EVENT_REFUND, 50000, "2026-11-24T11:00:00+08:00", NULL),
                     PGW_OK);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_verifies(db);
    pgw_store *s = NULL;
    assert_int_equal(pgw_store_open(db->url, false, &s, NULL), PGW_OK);
    int64_t spend = spend_12m(s);
    if (spend != 550000)
        fail_msg("spend over the 12 months to the refunds: %lld, want 550000", (long long)spend);
    pgw_store_close(s);
}

/*
 * A month's challenge pays once. It judged "first reaches the threshold"
 * from the month's spend net of refunds, so a purchase that paid it,
 * partly refunded, let the next purchase pay it again: buy 3,000 yuan of
 * dinners (800 points), refund 1,000, buy 1,000 more, 800 again (and a
 * refund of an earlier month's purchase reopened that month's).
 */
static void test_a_challenge_pays_once_a_month(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    er.shop = pgw_rules_find_shop(&er.cfg->rules, "S004"); /* a restaurant: dining-3000 */
    assert_true(er.shop >= 0);
    const char *rule = "campaign:dining-3000";
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 300000, "2026-11-10T19:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(line_points(&er.earning, rule), 800);
    assert_int_equal(send_event(&er, PGW_EVENT_REFUND, 100000, "2026-11-11T19:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 100000, "2026-11-12T19:00:00+08:00", NULL),
                     PGW_OK);
    if (line_points(&er.earning, rule) != 0)
        fail_msg("the challenge paid again after a refund: %lld",
                 (long long)line_points(&er.earning, rule));
    /* Next month it pays again. */
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 300000, "2026-12-02T19:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(line_points(&er.earning, rule), 800);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_verifies(db);
}

/* Sends a purchase (or refund) at `shop` and answers what it earned under dining-3000. */
static int64_t dining(event_run *er, const char *shop, pgw_event_type type, int64_t fen,
                      const char *when)
{
    er->shop = pgw_rules_find_shop(&er->cfg->rules, shop);
    assert_true(er->shop >= 0);
    int rc = send_event(er, type, fen, when, NULL);
    if (rc != PGW_OK)
        fail_msg("%s %s at %s %s: %d (%s)", pgw_event_type_name(type), shop, when,
                 er->member ? er->member : "M1", rc, er->cmd.err.msg);
    return line_points(&er->earning, "campaign:dining-3000");
}

/*
 * A challenge with formats counts only the purchases it covers: the
 * example's dining-3000 (fnb spend of 3,000 yuan in a month, 800 points)
 * paid a member who spent 2,990 yuan in retail and then bought a 10-yuan
 * coffee. Its own month is net of refunds of its purchases (on their
 * days), counts a till's backdated purchase on that purchase's day, and
 * still pays once a month; five-a-month, without filters, counts every
 * shop as before.
 */
static void test_a_filtered_challenge_counts_only_its_shops(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    assert_int_equal(dining(&er, "S001", PGW_EVENT_PURCHASE, 299000, "2026-11-05T12:00:00+08:00"),
                     0); /* EV1: retail */
    int64_t paid = dining(&er, "S005", PGW_EVENT_PURCHASE, 1000, "2026-11-06T09:00:00+08:00");
    if (paid != 0) /* EV2: a coffee */
        fail_msg("2,990 yuan of retail and a coffee paid dining-3000: %lld", (long long)paid);
    assert_int_equal(dining(&er, "S004", PGW_EVENT_PURCHASE, 200000, "2026-11-07T19:00:00+08:00"),
                     0); /* EV3: fnb 2,010 yuan */
    er.original = "store:S004:EV3";
    assert_int_equal(dining(&er, "S004", PGW_EVENT_REFUND, 50000, "2026-11-08T19:00:00+08:00"),
                     0); /* EV4: fnb 1,510 yuan */
    /* EV5: 2,510 yuan; 3,010 had the refund not lowered it */
    paid = dining(&er, "S004", PGW_EVENT_PURCHASE, 100000, "2026-11-09T19:00:00+08:00");
    if (paid != 0)
        fail_msg("a refund of an fnb purchase did not lower dining-3000's spend: %lld",
                 (long long)paid);
    /* EV6: 2,910 yuan, and the fifth purchase at any shop: five-a-month */
    assert_int_equal(dining(&er, "S004", PGW_EVENT_PURCHASE, 40000, "2026-11-20T19:00:00+08:00"),
                     0);
    assert_int_equal(line_points(&er.earning, "campaign:five-a-month"), 500);
    /* EV7: a till's purchase of the 10th, sent late: 2,560 yuan to its day */
    assert_int_equal(dining(&er, "S005", PGW_EVENT_PURCHASE, 5000, "2026-11-10T09:00:00+08:00"), 0);
    /* EV8: 2,960 + 40 = 3,000 yuan, the backdated purchase counted */
    paid = dining(&er, "S004", PGW_EVENT_PURCHASE, 4000, "2026-11-21T19:00:00+08:00");
    if (paid != 800)
        fail_msg("fnb spend reaching 3,000 yuan (a backdated purchase among it) paid %lld",
                 (long long)paid);
    /* Once a month: refunded back under and crossing again pays nothing. */
    assert_int_equal(dining(&er, "S004", PGW_EVENT_REFUND, 150000, "2026-11-22T19:00:00+08:00"),
                     0); /* EV9: the rest of EV3 */
    assert_int_equal(dining(&er, "S004", PGW_EVENT_PURCHASE, 200000, "2026-11-23T19:00:00+08:00"),
                     0); /* EV10 */
    /* Next month: from nothing again, and retail still does not count. */
    assert_int_equal(dining(&er, "S001", PGW_EVENT_PURCHASE, 500000, "2026-12-01T12:00:00+08:00"),
                     0);
    assert_int_equal(dining(&er, "S004", PGW_EVENT_PURCHASE, 299900, "2026-12-02T19:00:00+08:00"),
                     0);
    assert_int_equal(dining(&er, "S005", PGW_EVENT_PURCHASE, 100, "2026-12-03T09:00:00+08:00"),
                     800);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_verifies(db);
}

/*
 * Regression (a review of the rules): two challenges left at stacking max,
 * both paid this month, crossed again on one purchase after refunds. The
 * pricing paid the better one, found it paid and priced again without it;
 * the other then won and was paid a second time, for it was not in the
 * first pricing to be checked. Here five-a-month becomes "2,000 yuan of
 * fnb, 500 points" beside dining-3000's 3,000 yuan and 800.
 */
static void test_two_max_challenges_crossed_again_pay_neither(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    pgw_campaign *dining3000 = campaign(&er, "dining-3000"),
                 *fnb2000 = campaign(&er, "five-a-month");
    fnb2000->min_purchases = 0;
    fnb2000->min_spend_fen = 200000;
    fnb2000->n_formats = dining3000->n_formats;
    memcpy(fnb2000->formats, dining3000->formats, sizeof(fnb2000->formats));
    fnb2000->stacking = dining3000->stacking = PGW_STACK_MAX;
    const char *fnb = "campaign:five-a-month";
    assert_int_equal(dining(&er, "S004", PGW_EVENT_PURCHASE, 200000, "2026-11-05T19:00:00+08:00"),
                     0); /* EV1 */
    assert_int_equal(line_points(&er.earning, fnb), 500);
    assert_int_equal(dining(&er, "S004", PGW_EVENT_PURCHASE, 100000, "2026-11-06T19:00:00+08:00"),
                     800); /* EV2 */
    er.original = "store:S004:EV1";
    dining(&er, "S004", PGW_EVENT_REFUND, 200000, "2026-11-07T19:00:00+08:00");
    er.original = "store:S004:EV2";
    dining(&er, "S004", PGW_EVENT_REFUND, 100000, "2026-11-07T19:00:00+08:00");
    int64_t paid = dining(&er, "S004", PGW_EVENT_PURCHASE, 300000, "2026-11-08T19:00:00+08:00");
    if (paid != 0 || line_points(&er.earning, fnb) != 0)
        fail_msg("crossed again: dining-3000 %lld, the fnb 2,000 %lld", (long long)paid,
                 (long long)line_points(&er.earning, fnb));
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_verifies(db);
}

/* Binds a card of S004 to `member`; merges its holder in when another has it. */
static void bind_card(event_run *er, const char *member, const char *card, const char *when)
{
    pgw_command cmd;
    char key[64];
    snprintf(key, sizeof(key), "bind:%s:%s", member, card);
    int64_t at = 0;
    assert_int_equal(pgw_parse_rfc3339(when, &at, NULL), PGW_OK);
    keyed(&cmd, PGW_COMMAND_BIND, key, at);
    snprintf(cmd.member, sizeof(cmd.member), "%s", member);
    cmd.by_identity = true;
    cmd.who.kind = PGW_ID_CARD;
    snprintf(cmd.who.scope, sizeof(cmd.who.scope), "S004");
    snprintf(cmd.who.lookup, sizeof(cmd.who.lookup), "%s", card);
    pgw_err err;
    if (pgw_writer_run(er->writer, &cmd, &err) != PGW_OK)
        fail_msg("bind %s to %s: %s", card, member, err.msg);
}

/* A merge carries a filtered challenge's progress to the survivor, as it
 * carries the month's purchases. */
static void test_a_merge_carries_a_filtered_challenges_progress(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    er.member = "M2";
    assert_int_equal(dining(&er, "S004", PGW_EVENT_PURCHASE, 200000, "2026-11-05T19:00:00+08:00"),
                     0);
    bind_card(&er, "M2", "C2", "2026-11-05T20:00:00+08:00");
    er.member = "M1";
    assert_int_equal(dining(&er, "S001", PGW_EVENT_PURCHASE, 250000, "2026-11-06T12:00:00+08:00"),
                     0);
    assert_int_equal(dining(&er, "S005", PGW_EVENT_PURCHASE, 50000, "2026-11-06T19:00:00+08:00"),
                     0);
    bind_card(&er, "M1", "C2", "2026-11-07T10:00:00+08:00"); /* M2 merged into M1 */
    int64_t paid = dining(&er, "S004", PGW_EVENT_PURCHASE, 50000, "2026-11-07T19:00:00+08:00");
    if (paid != 800)
        fail_msg("M2's 2,000 yuan of fnb, merged, and M1's 1,000 paid dining-3000 %lld",
                 (long long)paid);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_verifies(db);
}

/*
 * An event reads its member once and that read serves the whole event:
 * a member it enrols gets its row with the event's flags; whether later
 * days exist whose running totals must take the event (a till that was
 * offline sends yesterday's purchase after today's); the debt a purchase
 * repays before anything goes into a lot.
 */
static void test_an_event_uses_what_it_read_of_its_member(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    const char *today = "2026-11-25T10:00:00+08:00";
    pgw_member_ctx first = {.first_purchase = true}, returning = {0};
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 10000, today, &first), PGW_OK);
    assert_int_equal(db_fixture_int64(db, "SELECT purchased FROM members WHERE id = 'M1'"), 1);
    /* Yesterday's, sent after: the 25th's running totals take it. */
    assert_int_equal(
        send_event(&er, PGW_EVENT_PURCHASE, 600000, "2026-11-24T18:00:00+08:00", &returning),
        PGW_OK);
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 1000, today, NULL), PGW_OK);
    int32_t gold = pgw_rules_tier_for_spend(&er.cfg->rules, 610000);
    assert_true(gold > pgw_rules_tier_for_spend(&er.cfg->rules, 11000));
    assert_int_equal(er.earning.tier, gold);
    /* Spend every point, then refund the first purchase: its points come
     * back as debt (allow_negative), which the next purchase repays first. */
    assert_true(er.cfg->allow_negative);
    pgw_command redeem;
    keyed(&redeem, PGW_COMMAND_REDEEM, "redeem:S001:R1", er.cmd.at);
    snprintf(redeem.member, sizeof(redeem.member), "M1");
    snprintf(redeem.shop, sizeof(redeem.shop), "S001");
    snprintf(redeem.hold_id, sizeof(redeem.hold_id), "R1");
    redeem.points = er.cmd.figures.available;
    pgw_err err;
    if (pgw_writer_run(er.writer, &redeem, &err) != PGW_OK)
        fail_msg("redeem: %s", err.msg);
    assert_int_equal(send_event(&er, PGW_EVENT_REFUND, 10000, today, NULL), PGW_OK);
    int64_t debt = er.cmd.figures.debt;
    assert_true(debt > 0);
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 100000, today, NULL), PGW_OK);
    int64_t earned = er.earning.points;
    assert_true(earned > debt);
    assert_int_equal(er.cmd.figures.debt, 0);
    assert_int_equal(er.cmd.figures.balance, earned - debt);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_verifies(db); /* running totals included */
}

/*
 * A member first seen in an event that earns it nothing has no lot to be
 * written with (command.c enrol_without_lot): its row comes after the
 * event's points and before its days, which refer to it (PostgreSQL
 * refuses them otherwise; on SQLite verify names them), with the flags
 * the event leaves it.
 */
static void test_a_member_enrolled_by_an_event_earning_nothing_has_its_row(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    er.cfg->rules.behaviours.sign_in.enabled = false;
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, "2026-11-26T08:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(er.earning.points, 0);
    assert_int_equal(er.cmd.n_transfers, 0);
    er.cfg->rules.behaviours.sign_in.enabled = true;
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, "2026-11-27T08:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(er.earning.sign_in_streak, 2); /* the first day's, kept in its row */
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_int_equal(db_fixture_int64(db, "SELECT count(*) FROM members WHERE id = 'M1'"), 1);
    assert_int_equal(db_fixture_int64(db, "SELECT count(*) FROM activity_days WHERE member = 'M1'"),
                     2);
    assert_verifies(db);
}

/*
 * A member first seen in a behaviour event gets its row with the flags
 * that event leaves it: a sign-in's streak (a second sign-in that day
 * earns nothing, the next day continues it), a registration's and a
 * follow's once-only bonus.
 */
static void test_a_member_enrolled_by_a_behaviour_keeps_its_flags(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, "2026-11-26T08:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(er.earning.sign_in_streak, 1);
    assert_true(er.earning.points > 0);
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, "2026-11-26T09:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(er.earning.points, 0);
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, "2026-11-27T08:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(er.earning.sign_in_streak, 2);
    static const struct {
        const char *member;
        pgw_event_type type;
    } once[] = {{"M2", PGW_EVENT_REGISTER}, {"M3", PGW_EVENT_FOLLOW_OA}};
    for (size_t i = 0; i < sizeof(once) / sizeof(once[0]); i++) {
        er.member = once[i].member;
        int64_t points[2];
        for (size_t j = 0; j < 2; j++) {
            assert_int_equal(send_event(&er, once[i].type, 0, "2026-11-26T10:00:00+08:00", NULL),
                             PGW_OK);
            points[j] = er.earning.points;
        }
        assert_true(points[0] > 0);
        assert_int_equal(points[1], 0);
    }
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_verifies(db);
}

/* A survey of M1 keyed `key`, with the fingerprint of `like` (a request's), in er->cmd. */
static void survey_command(event_run *er, const char *key, const char *like, bool by_appid)
{
    er->ev = (pgw_event){.type = PGW_EVENT_SURVEY, .shop = -1};
    pgw_err err;
    assert_int_equal(pgw_parse_rfc3339("2026-11-26T10:00:00+08:00", &er->ev.occurred_at, &err),
                     PGW_OK);
    pgw_command fingerprinted;
    keyed(&fingerprinted, PGW_COMMAND_EVENT, like, er->ev.occurred_at);
    keyed(&er->cmd, PGW_COMMAND_EVENT, key, er->ev.occurred_at);
    memcpy(er->cmd.fingerprint, fingerprinted.fingerprint, PGW_HASH_LEN);
    er->cmd.keyed_by_appid = by_appid;
    snprintf(er->cmd.channel, sizeof(er->cmd.channel), "wechat_mp");
    snprintf(er->cmd.member, sizeof(er->cmd.member), "M1");
    er->cmd.event = &er->ev;
    er->cmd.earning = &er->earning;
    er->cmd.render = render_points;
}

/* survey_command's, run. */
static int send_survey(event_run *er, const char *key, const char *like, bool by_appid)
{
    pgw_err err;
    survey_command(er, key, like, by_appid);
    return pgw_writer_run(er->writer, &er->cmd, &err);
}

/* survey_command's with the fingerprint of `before` beside: as sent, or
 * (`time`) with its time as sent. */
static int send_survey_beside(event_run *er, const char *key, const char *like, const char *before,
                              bool time)
{
    pgw_err err;
    pgw_command fingerprinted;
    survey_command(er, key, like, false);
    keyed(&fingerprinted, PGW_COMMAND_EVENT, before, er->ev.occurred_at);
    er->cmd.has_fingerprint_as_sent = !time;
    er->cmd.has_fingerprint_time_as_sent = time;
    memcpy(time ? er->cmd.fingerprint_time_as_sent : er->cmd.fingerprint_as_sent,
           fingerprinted.fingerprint, PGW_HASH_LEN);
    return pgw_writer_run(er->writer, &er->cmd, &err);
}

/*
 * An event whose time is written otherwise than in normal form carries,
 * beside its fingerprint, the one keys were recorded under before times
 * were normal in fingerprints (event_command.h pgw_event_fingerprint): a
 * key holding that one is its replay, with the first answer, as a key
 * holding the body's own is; holding neither, a conflict.
 */
static void test_fingerprints_recorded_before_times_were_normal(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    const char *key = "wechat_mp:S001:T1";
    assert_int_equal(send_survey(&er, key, "time as sent", false), PGW_OK);
    assert_false(er.cmd.replayed);
    char answer[PGW_ANSWER_MAX];
    snprintf(answer, sizeof(answer), "%s", er.cmd.answer);
    assert_int_equal(send_survey(&er, key, "time normal", false), PGW_ECONFLICT);
    assert_int_equal(send_survey_beside(&er, key, "time normal", "time as sent", true), PGW_OK);
    assert_true(er.cmd.replayed);
    assert_string_equal(er.cmd.answer, answer);
    assert_int_equal(send_survey_beside(&er, key, "time normal", "time as sent", false), PGW_OK);
    assert_true(er.cmd.replayed);
    assert_int_equal(send_survey_beside(&er, key, "time normal", "another time", true),
                     PGW_ECONFLICT);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_int_equal(db_fixture_int64(db, "SELECT count(*) FROM idempotency WHERE key LIKE"
                                          " 'wechat_mp:S001:T1'"),
                     1);
    assert_verifies(db);
}

/*
 * A mini program's event is keyed with its appid (API.md: channel + shop
 * or appid + event_id); before, with "-", and two mini programs numbering
 * alike refused each other's events. One sent before the upgrade and
 * retried after is found under its older key: a replay, not a second
 * effect; another request there is still a conflict.
 */
static void test_appid_keys_find_the_keys_before_them(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    const char *older = "wechat_mp:-:MP1", *newer = "wechat_mp:wx0123456789abcdef:MP1";
    assert_int_equal(send_survey(&er, older, "request 1", false), PGW_OK);
    assert_false(er.cmd.replayed);
    int64_t points = er.earning.points;
    assert_true(points > 0);
    char answer[PGW_ANSWER_MAX];
    snprintf(answer, sizeof(answer), "%s", er.cmd.answer);
    assert_int_equal(send_survey(&er, newer, "request 1", true), PGW_OK);
    assert_true(er.cmd.replayed);
    assert_string_equal(er.cmd.answer, answer);
    assert_string_equal(er.cmd.key, older);
    assert_int_equal(send_survey(&er, newer, "request 2", true), PGW_ECONFLICT);
    /* not keyed by appid (a shop's event, say): the older key is not its own */
    assert_int_equal(send_survey(&er, "wechat_mp:S001:MP1", "request 1", false), PGW_OK);
    assert_false(er.cmd.replayed);
    /* a new event with its appid is its own, whoever numbers alike */
    assert_int_equal(send_survey(&er, "wechat_mp:wx0123456789abcdef:MP2", "request 3", true),
                     PGW_OK);
    assert_false(er.cmd.replayed);
    assert_int_equal(send_survey(&er, "wechat_mp:wxfedcba9876543210:MP2", "request 4", true),
                     PGW_OK);
    assert_false(er.cmd.replayed);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_int_equal(db_fixture_int64(db, "SELECT count(*) FROM idempotency WHERE key LIKE"
                                          " 'wechat_mp:wx%:MP2'"),
                     2);
    assert_verifies(db);
}

/* The refund `key` of the purchase store:S001:EV1 again, as a shop's CSV row
 * sends it (pgw_command.from_row), into er->cmd. */
static void send_refund_row(event_run *er, const char *key)
{
    keyed(&er->cmd, PGW_COMMAND_EVENT, key, er->ev.occurred_at);
    er->cmd.fingerprint[0] ^= 0xff; /* the row's, not the till's */
    er->cmd.from_row = true;
    snprintf(er->cmd.member, sizeof(er->cmd.member), "M1");
    snprintf(er->cmd.shop, sizeof(er->cmd.shop), "S001");
    snprintf(er->cmd.original, sizeof(er->cmd.original), "store:S001:EV1");
    er->cmd.event = &er->ev;
    er->cmd.earning = &er->earning;
    er->cmd.render = render_points;
}

/*
 * A refund sent as a shop's CSV row after the till's own refund replays
 * it when the refund recorded reversed the purchase the row names: the
 * refund's first transfer says which earn it reversed, "earn:<id>". Only
 * exactly that names an earn: a reference with a sign, spaces or a tail
 * ("earn:12abc" read as 12 before) is not this refund's, and the row is a
 * conflict rather than a replay of something it never said.
 */
static void test_a_refund_row_names_its_earn_exactly(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 12800, "2026-11-24T10:00:00+08:00", NULL),
                     PGW_OK);
    assert_int_equal(send_event(&er, PGW_EVENT_REFUND, 12800, "2026-11-24T11:00:00+08:00", NULL),
                     PGW_OK);
    assert_true(er.cmd.points_moved > 0);
    send_refund_row(&er, "store:S001:EV2");
    assert_int_equal(pgw_writer_run(er.writer, &er.cmd, NULL), PGW_OK);
    assert_true(er.cmd.replayed); /* as recorded: the row's own refund */
    int serial = er.serial;
    writer_stop(er.writer);
    const char *first = "(SELECT first_transfer FROM idempotency WHERE key = 'store:S001:EV2')";
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT CAST(substr(reference, 6) AS BIGINT) FROM transfers WHERE id = %s", first);
    int64_t earn = db_fixture_int64(db, sql);
    assert_true(earn > 0);
    int wrong = 0;
    static const struct {
        const char *before, *after; /* around the earn's id */
    } references[] = {
        {"earn: ", ""}, {"earn:+", ""}, {"earn:", "x"}, {"earn:", " "}, {"earn:", ":2"}};
    for (size_t i = 0; i < sizeof(references) / sizeof(references[0]); i++) {
        char reference[64];
        snprintf(reference, sizeof(reference), "%s%lld%s", references[i].before, (long long)earn,
                 references[i].after);
        snprintf(sql, sizeof(sql), "UPDATE transfers SET reference = '%s' WHERE id = %s", reference,
                 first);
        assert_int_equal(db_fixture_exec(db, sql), PGW_OK);
        event_run_writer(db, &er, NULL);
        er.serial = serial;
        send_refund_row(&er, "store:S001:EV2");
        int rc = pgw_writer_run(er.writer, &er.cmd, NULL);
        if (rc != PGW_ECONFLICT && ++wrong) /* each one named, then the test fails */
            print_error("reference \"%s\": rc %d replayed %d, expected a conflict\n", reference, rc,
                        er.cmd.replayed);
        writer_stop(er.writer);
    }
    pgw_config_free(er.cfg);
    assert_int_equal(wrong, 0);
}

/*
 * The rules read a member's birthday as the store keeps it, "MM-DD" as the
 * API takes it (a day of a leap year). Anything else there (spaces, a sign,
 * one digit, a tail, no such day) is no birthday: read leniently, " 11-5"
 * or "11-00" was November's and earned its triple points.
 */
static void test_only_a_real_stored_birthday_counts(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    static const struct {
        const char *id, *birthday;
        bool counts;
    } members[] = {
        {"B1", "11-05", true},   {"B2", "02-29", false},  {"B3", " 11-5", false},
        {"B4", "+11-5", false},  {"B5", "11-5x", false},  {"B6", "11-1", false},
        {"B7", "11-00", false},  {"B8", "11-31", false},  {"B9", "13-05", false},
        {"B10", "11- 5", false}, {"B11", "11-+5", false}, {"B12", "11-30", true},
    };
    const size_t n = sizeof(members) / sizeof(members[0]);
    int wrong = 0;
    event_run_start(db, &er);
    /* Enrolled by a sign-in before their month, then given the birthday
     * as a store edited by hand might hold it. */
    for (size_t i = 0; i < n; i++) {
        er.member = members[i].id;
        assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, "2026-10-20T10:00:00+08:00", NULL),
                         PGW_OK);
    }
    int serial = er.serial;
    writer_stop(er.writer);
    for (size_t i = 0; i < n; i++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "UPDATE members SET birthday = '%s' WHERE id = '%s'",
                 members[i].birthday, members[i].id);
        assert_int_equal(db_fixture_exec(db, sql), PGW_OK);
    }
    event_run_writer(db, &er, NULL);
    er.serial = serial;
    /* A purchase in November: the birthday month's triple points or none.
     * Each one wrong is named, then the test fails. */
    for (size_t i = 0; i < n; i++) {
        er.member = members[i].id;
        assert_int_equal(
            send_event(&er, PGW_EVENT_PURCHASE, 10000, "2026-11-24T10:00:00+08:00", NULL), PGW_OK);
        int64_t bonus = line_points(&er.earning, "campaign:birthday-month");
        if ((bonus > 0) != members[i].counts && ++wrong)
            print_error("birthday \"%s\": %lld birthday points\n", members[i].birthday,
                        (long long)bonus);
    }
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
    assert_int_equal(wrong, 0);
}

/* The text `name` of an error's details, "" when it has none. */
static const char *detail_text(const pgw_err *err, const char *name)
{
    for (size_t i = 0; i < err->n_texts; i++)
        if (strcmp(err->texts[i].name, name) == 0)
            return err->texts[i].value;
    return "";
}

/* The figure `name` of an error's details, -1 when it has none. */
static int64_t detail_figure(const pgw_err *err, const char *name)
{
    for (size_t i = 0; i < err->n_figures; i++)
        if (strcmp(err->figures[i].name, name) == 0)
            return err->figures[i].value;
    return -1;
}

/* The event under `key` sent again with another body (its fingerprint
 * changed) saying `type`, `amount`, `when`, for er->member: the
 * conflict's error into *err. */
static int resend_event(event_run *er, const char *key, pgw_event_type type, int64_t amount,
                        const char *when, pgw_err *err)
{
    event_command(er, key, type, amount, when);
    er->cmd.fingerprint[PGW_HASH_LEN - 1] ^= 0x5a; /* another body than keyed()'s */
    return pgw_writer_run(er->writer, &er->cmd, err);
}

/* err is the conflict of `key` whose message ends in `said` and whose
 * details say `differs`. */
static void assert_conflict(const pgw_err *err, const char *key, const char *said,
                            const char *differs)
{
    char msg[PGW_ERR_MSG_MAX];
    snprintf(msg, sizeof(msg), "idempotency key %s was used before for a different request: %s",
             key, said);
    assert_int_equal(err->code, PGW_ECONFLICT);
    assert_string_equal(err->msg, msg);
    assert_string_equal(detail_text(err, "differs"), differs);
}

/*
 * A till sending an event again under its id with another body is told
 * which of what the key kept of the first (member, amount, time, type)
 * differs, both values: an id re-used for another sale, a time resent
 * otherwise. What the key does not keep (items, a receipt) is told as the
 * fingerprint's difference. A conflict changes nothing; the first body
 * still replays.
 */
static void test_an_event_conflict_says_what_differs(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    const char *key = "store:S001:EV1", *at = "2026-11-24T10:00:00+08:00";
    assert_int_equal(send_event(&er, PGW_EVENT_PURCHASE, 12800, at, NULL), PGW_OK);
    char answer[PGW_ANSWER_MAX];
    snprintf(answer, sizeof(answer), "%s", er.cmd.answer);
    pgw_err err;
    assert_int_equal(resend_event(&er, key, PGW_EVENT_PURCHASE, 9900, at, &err), PGW_ECONFLICT);
    assert_conflict(&err, key, "amount_fen 12800 then, 9900 now", "amount_fen");
    assert_int_equal(detail_figure(&err, "amount_fen_then"), 12800);
    assert_int_equal(detail_figure(&err, "amount_fen_now"), 9900);
    er.member = "M2";
    assert_int_equal(resend_event(&er, key, PGW_EVENT_PURCHASE, 12800, at, &err), PGW_ECONFLICT);
    assert_conflict(&err, key, "member_id M1 then, M2 now", "member_id");
    assert_string_equal(detail_text(&err, "member_id_then"), "M1");
    assert_string_equal(detail_text(&err, "member_id_now"), "M2");
    /* another sale under the same id: each field said, details the first */
    assert_int_equal(resend_event(&er, key, PGW_EVENT_PURCHASE, 9900, at, &err), PGW_ECONFLICT);
    assert_conflict(&err, key, "member_id M1 then, M2 now; amount_fen 12800 then, 9900 now",
                    "member_id");
    er.member = NULL;
    assert_int_equal(
        resend_event(&er, key, PGW_EVENT_PURCHASE, 12800, "2026-11-24T10:00:00Z", &err),
        PGW_ECONFLICT);
    assert_conflict(&err, key,
                    "occurred_at 2026-11-24T10:00:00+08:00 then, 2026-11-24T18:00:00+08:00 now",
                    "occurred_at");
    assert_string_equal(detail_text(&err, "occurred_at_then"), "2026-11-24T10:00:00+08:00");
    assert_string_equal(detail_text(&err, "occurred_at_now"), "2026-11-24T18:00:00+08:00");
    assert_int_equal(resend_event(&er, key, PGW_EVENT_REFUND, 12800, at, &err), PGW_ECONFLICT);
    assert_conflict(&err, key, "type purchase then, refund now", "type");
    /* a card nobody holds names no member: said so, never the card */
    event_command(&er, key, PGW_EVENT_PURCHASE, 12800, at);
    er.cmd.fingerprint[0] ^= 0x5a;
    er.cmd.by_identity = true;
    er.cmd.who.kind = PGW_ID_CARD;
    snprintf(er.cmd.who.scope, sizeof(er.cmd.who.scope), "S004");
    snprintf(er.cmd.who.lookup, sizeof(er.cmd.who.lookup), "C77");
    assert_int_equal(pgw_writer_run(er.writer, &er.cmd, &err), PGW_ECONFLICT);
    assert_conflict(&err, key,
                    "member_id M1 then, none now (no member holds the identity it names)",
                    "member_id");
    assert_string_equal(detail_text(&err, "member_id_then"), "M1");
    assert_string_equal(detail_text(&err, "member_id_now"), "");
    assert_null(strstr(err.msg, "C77"));
    /* the same of all the key kept: another item, say */
    assert_int_equal(resend_event(&er, key, PGW_EVENT_PURCHASE, 12800, at, &err), PGW_ECONFLICT);
    assert_conflict(&err, key,
                    "the stored fingerprint differs (its member_id, amount_fen, occurred_at and "
                    "type are the same)",
                    "fingerprint");
    /* a behaviour's time */
    assert_int_equal(send_event(&er, PGW_EVENT_SIGN_IN, 0, at, NULL), PGW_OK);
    assert_int_equal(resend_event(&er, "store:S001:EV2", PGW_EVENT_SIGN_IN, 0,
                                  "2026-11-24T10:00:01+08:00", &err),
                     PGW_ECONFLICT);
    assert_conflict(&err, "store:S001:EV2",
                    "occurred_at 2026-11-24T10:00:00+08:00 then, 2026-11-24T10:00:01+08:00 now",
                    "occurred_at");
    /* nothing written: the first body still replays its first answer */
    event_command(&er, key, PGW_EVENT_PURCHASE, 12800, at);
    assert_int_equal(pgw_writer_run(er.writer, &er.cmd, &err), PGW_OK);
    assert_true(er.cmd.replayed);
    assert_string_equal(er.cmd.answer, answer);
    writer_stop(er.writer);
    assert_int_equal(db_fixture_int64(db, "SELECT count(*) FROM idempotency"), 2);
    assert_verifies(db);
    /* a key that kept no event (a store edited by hand) tells only the fingerprint */
    assert_int_equal(
        db_fixture_exec(db, "UPDATE idempotency SET event_type = '' WHERE key = 'store:S001:EV1'"),
        PGW_OK);
    event_run_writer(db, &er, NULL);
    assert_int_equal(resend_event(&er, key, PGW_EVENT_PURCHASE, 9900, at, &err), PGW_ECONFLICT);
    assert_conflict(&err, key, "the stored fingerprint differs", "fingerprint");
    assert_int_equal(err.n_figures, 0);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
}

/* Regression: a conflict's message quoted its key by "%.128s", and a key
 * is up to 194 bytes (channel, shop and event id at their maxima): the
 * client read a cut key, and could not tell which of its events it was.
 * The longest is quoted whole. */
/* The longest key an event has: its channel, shop and id at their
 * maxima, the id's last byte a 'Z' that a cut loses. */
static void longest_event_key(char key[PGW_IDEM_KEY_MAX + 1])
{
    char channel[PGW_ID_MAX + 1], shop[PGW_ID_MAX + 1], id[PGW_EVENT_ID_MAX + 1];
    memset(channel, 'c', PGW_ID_MAX);
    memset(shop, 'S', PGW_ID_MAX);
    memset(id, 'e', PGW_EVENT_ID_MAX);
    channel[PGW_ID_MAX] = shop[PGW_ID_MAX] = id[PGW_EVENT_ID_MAX] = '\0';
    id[PGW_EVENT_ID_MAX - 1] = 'Z';
    pgw_store_event_key(key, channel, shop, id);
    assert_int_equal(strlen(key), 2 * PGW_ID_MAX + PGW_EVENT_ID_MAX + 2);
}

static void test_a_conflict_quotes_the_longest_key_whole(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    char key[PGW_IDEM_KEY_MAX + 1];
    longest_event_key(key);
    const char *at = "2026-11-24T10:00:00+08:00";
    pgw_err err;
    event_command(&er, key, PGW_EVENT_PURCHASE, 12800, at);
    assert_int_equal(pgw_writer_run(er.writer, &er.cmd, &err), PGW_OK);
    assert_int_equal(resend_event(&er, key, PGW_EVENT_PURCHASE, 9900, at, &err), PGW_ECONFLICT);
    assert_conflict(&err, key, "amount_fen 12800 then, 9900 now", "amount_fen");
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
}

/* Regression: a refund whose buyer nobody holds yet (404) quoted its
 * original purchase's key by "%.128s", cut as 409s' keys were: of a long
 * key the till read a cut id, and could not tell which purchase. It is
 * quoted whole. */
static void test_a_refund_to_nobody_quotes_its_original_whole(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    char original[PGW_IDEM_KEY_MAX + 1];
    longest_event_key(original);
    er.original = original;
    event_command(&er, "store:S001:R-LONG", PGW_EVENT_REFUND, 12800, "2026-11-24T10:00:00+08:00");
    er.cmd.by_identity = true;
    er.cmd.who.kind = PGW_ID_CARD;
    snprintf(er.cmd.who.scope, sizeof(er.cmd.who.scope), "S004");
    snprintf(er.cmd.who.lookup, sizeof(er.cmd.who.lookup), "C77"); /* nobody's */
    pgw_err err;
    assert_int_equal(pgw_writer_run(er.writer, &er.cmd, &err), PGW_ENOTFOUND);
    char msg[PGW_ERR_MSG_MAX];
    snprintf(msg, sizeof(msg), "no member has that card yet: purchase %s cannot be refunded to it",
             original);
    assert_string_equal(err.msg, msg);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
}

/* The event under `key` of event_command's, with receipt number `receipt`
 * ("" when none) as pgw_event_command writes it: its transfers' reference
 * is the receipt, or the event id when there is none. */
static void with_receipt(event_run *er, const char *receipt)
{
    const char *id = strrchr(er->cmd.key, ':') + 1;
    snprintf(er->cmd.receipt, sizeof(er->cmd.receipt), "%s", receipt);
    snprintf(er->cmd.reference, sizeof(er->cmd.reference), "%s", receipt[0] ? receipt : id);
}

/* A resend of the purchase under `key` with receipt `receipt`: its error. */
static int resend_receipt(event_run *er, const char *key, const char *receipt, pgw_err *err)
{
    event_command(er, key, PGW_EVENT_PURCHASE, 12800, "2026-11-24T10:00:00+08:00");
    with_receipt(er, receipt);
    er->cmd.fingerprint[PGW_HASH_LEN - 1] ^= 0x5a;
    return pgw_writer_run(er->writer, &er->cmd, err);
}

/*
 * An event sent again differing only in what its key's row does not keep:
 * a refund's original, a receipt number. The first transfer tells them (a
 * refund's reverses its original's earn, another event's carries the
 * receipt as its reference), so they are named as the kept fields are;
 * where it cannot tell (an event id in the reference: no receipt, or one
 * equal to the id) the fingerprint is all that is said.
 */
static void test_an_event_conflict_names_its_original_and_receipt(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    const char *at = "2026-11-24T10:00:00+08:00";
    char long_receipt[PGW_REFERENCE_MAX + 1];
    memset(long_receipt, 'R', PGW_REFERENCE_MAX);
    long_receipt[PGW_REFERENCE_MAX] = '\0';
    const char *keys[] = {"store:S001:EV1", "store:S001:EV2", "store:S001:EV3"};
    const char *receipts[] = {"R1", "", long_receipt};
    for (size_t i = 0; i < 3; i++) {
        event_command(&er, keys[i], PGW_EVENT_PURCHASE, 12800, at);
        with_receipt(&er, receipts[i]);
        pgw_err err;
        assert_int_equal(pgw_writer_run(er.writer, &er.cmd, &err), PGW_OK);
    }
    pgw_err err;
    assert_int_equal(resend_receipt(&er, keys[0], "R2", &err), PGW_ECONFLICT);
    assert_conflict(&err, keys[0], "receipt_no R1 then, R2 now", "receipt_no");
    assert_string_equal(detail_text(&err, "receipt_no_then"), "R1");
    assert_string_equal(detail_text(&err, "receipt_no_now"), "R2");
    assert_int_equal(resend_receipt(&er, keys[0], "", &err), PGW_ECONFLICT);
    assert_conflict(&err, keys[0], "receipt_no R1 then, none now", "receipt_no");
    assert_int_equal(err.n_texts, 2); /* none now: no receipt_no_now */
    /* a receipt as long as one may be, whole in both */
    assert_int_equal(resend_receipt(&er, keys[2], "R1", &err), PGW_ECONFLICT);
    assert_string_equal(detail_text(&err, "receipt_no_then"), long_receipt);
    assert_non_null(strstr(err.msg, long_receipt));
    /* the reference EV2 is its id: no receipt then, or "EV2": not guessed */
    assert_int_equal(resend_receipt(&er, keys[1], "R9", &err), PGW_ECONFLICT);
    assert_string_equal(detail_text(&err, "differs"), "fingerprint");
    /* a refund of EV1 sent again naming EV3: its transfers reverse EV1's earn */
    const char *refund = "store:S001:EV4";
    er.original = keys[0];
    event_command(&er, refund, PGW_EVENT_REFUND, 5000, at);
    assert_int_equal(pgw_writer_run(er.writer, &er.cmd, &err), PGW_OK);
    er.original = keys[2];
    assert_int_equal(resend_event(&er, refund, PGW_EVENT_REFUND, 5000, at, &err), PGW_ECONFLICT);
    assert_conflict(&err, refund, "original_event_id EV1 then, EV3 now", "original_event_id");
    assert_string_equal(detail_text(&err, "original_event_id_then"), "EV1");
    assert_string_equal(detail_text(&err, "original_event_id_now"), "EV3");
    /* with another amount too: the kept field is said, nothing more read */
    assert_int_equal(resend_event(&er, refund, PGW_EVENT_REFUND, 4000, at, &err), PGW_ECONFLICT);
    assert_conflict(&err, refund, "amount_fen 5000 then, 4000 now", "amount_fen");
    er.original = keys[0];
    assert_int_equal(resend_event(&er, refund, PGW_EVENT_REFUND, 5000, at, &err), PGW_ECONFLICT);
    assert_string_equal(detail_text(&err, "differs"), "fingerprint");
    writer_stop(er.writer);
    assert_int_equal(db_fixture_int64(db, "SELECT count(*) FROM idempotency"), 4);
    assert_verifies(db);
    pgw_config_free(er.cfg);
}

/*
 * A shop's CSV row without a receipt, after the till's own sale: it says
 * nothing of a receipt, so it replays the sale whatever the first transfer
 * carries, and reads none (1f4ad5d read it for every row the key's fields
 * agree with; before it, only a row with a receipt or a refund did). A
 * first transfer that cannot be read (a reference past its bound, as a
 * store edited by hand may hold) shows the read: the row was refused.
 */
static void test_a_row_without_a_receipt_reads_no_transfer(void **state)
{
    const db_fixture *db = *state;
    static event_run er;
    event_run_start(db, &er);
    const char *key = "store:S001:EV1", *at = "2026-11-24T10:00:00+08:00";
    event_command(&er, key, PGW_EVENT_PURCHASE, 12800, at);
    with_receipt(&er, "R1");
    assert_int_equal(pgw_writer_run(er.writer, &er.cmd, NULL), PGW_OK);
    int serial = er.serial;
    writer_stop(er.writer);
    char sql[PGW_REFERENCE_MAX + 160];
    snprintf(sql, sizeof(sql),
             "UPDATE transfers SET reference = '%0*d' WHERE id = (SELECT first_transfer FROM "
             "idempotency WHERE key = '%s')",
             PGW_REFERENCE_MAX + 1, 0, key);
    assert_int_equal(db_fixture_exec(db, sql), PGW_OK);
    event_run_writer(db, &er, NULL);
    er.serial = serial;
    event_command(&er, key, PGW_EVENT_PURCHASE, 12800, at);
    with_receipt(&er, "");
    er.cmd.fingerprint[0] ^= 0xff; /* the row's, not the till's */
    er.cmd.from_row = true;
    pgw_err err;
    int rc = pgw_writer_run(er.writer, &er.cmd, &err);
    if (rc != PGW_OK)
        fail_msg("a row without a receipt: rc %d \"%s\"", rc, err.msg);
    assert_true(er.cmd.replayed);
    writer_stop(er.writer);
    pgw_config_free(er.cfg);
}

int main(void)
{
    count_writer_caches();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_risk_rules_are_named_once),
        cmocka_unit_test_setup_teardown(test_store_matches_the_reference_ledger,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_expired_points_awaiting_the_sweep_are_not_available,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_expiring_leaves_out_held_points,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_refund_of_an_expired_unswept_lot,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_refund_after_expiry_pays_funders_in_proportion,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_events_meet_the_state_of_when_they_are_applied,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_purchase_releases_due_holds_before_it_repays,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_due_holds_release_by_deadline_then_id,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_partial_refunds_reverse_exactly,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_otp_codes, db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_hold_replay_is_recognised_before_the_rules,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_returns_go_back_to_their_lots,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_return_is_told_as_an_arrival,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_return_into_expired_lots_tells_only_the_rest,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_hold_deadline_is_exclusive, db_fixture_setup_migrated,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_verify_catches_tampered_holds_and_refunds,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_events_are_priced_with_the_members_activity,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_an_events_figures_are_what_a_read_says,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_an_event_refused_before_its_read_tells_no_figures,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_events_that_earn_nothing_leave_the_daily_event_limit,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_daily_caps_count_what_the_store_kept,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_referral_paying_only_the_referrer_credits_it,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_referrers_points_keep_the_referral_daily_cap,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_refund_frees_its_share_of_the_daily_caps,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_refunds_of_a_purchase_that_earned_nothing,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_refund_keys_carry_what_their_earn_wrote_off,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_verify_holds_refund_keys_to_their_earns,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_refund_moves_the_spend_of_its_purchases_day,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_tier_change_goes_after_its_arrival,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_challenge_pays_once_a_month,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_filtered_challenge_counts_only_its_shops,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_two_max_challenges_crossed_again_pay_neither,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_merge_carries_a_filtered_challenges_progress,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_an_event_uses_what_it_read_of_its_member,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_member_enrolled_by_a_behaviour_keeps_its_flags,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_member_enrolled_by_an_event_earning_nothing_has_its_row,
            db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_appid_keys_find_the_keys_before_them,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_fingerprints_recorded_before_times_were_normal,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_refund_row_names_its_earn_exactly,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_only_a_real_stored_birthday_counts,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_an_event_conflict_says_what_differs,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_conflict_quotes_the_longest_key_whole,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_refund_to_nobody_quotes_its_original_whole,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_an_event_conflict_names_its_original_and_receipt,
                                        db_fixture_setup_migrated, teardown),
        cmocka_unit_test_setup_teardown(test_a_row_without_a_receipt_reads_no_transfer,
                                        db_fixture_setup_migrated, teardown),
    };
    /* One test, or a few, by name (a cmocka pattern), as test_store's. */
    const char *only = getenv("PGW_TEST_ONLY");
    if (only != NULL && only[0] != '\0')
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
