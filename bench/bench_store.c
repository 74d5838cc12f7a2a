/*
 * bench_store.c - durable transfers per second through the writer thread.
 *
 * Usage: bench_store [DIR | postgresql://ADMIN-URL] [SECONDS_PER_CASE] [BATCH_SIZE...]
 *
 * On PostgreSQL (an admin URL of a cluster, as scripts/pg-cluster.sh
 * prints) each case runs on a new database `pgw_bench` of that cluster, and
 * PGW_BENCH_WRITERS (1..8, default 1) writers share it, as that many
 * gateway instances would; commands go to them in turn.
 *
 * First measures the raw fsync rate of DIR's disk (write 4 KiB +
 * fdatasync, repeated): the physical ceiling for a batch of one. Then, for
 * batch sizes 1, 16, 128 and 1024, runs the real writer (SQLite, WAL,
 * synchronous=FULL) on a fresh database in DIR with enough commands in
 * flight to fill its batches, in two modes (see fill()): "log", one earn
 * transfer appended as it is, and "purchase", a whole purchase through
 * PGW_COMMAND_EARN, all at one shop (S001: the hot issuing account), and
 * "spread", the same over 8 shops; and "event", POST /v1/events' whole
 * purchase without HTTP (PGW_COMMAND_EVENT priced by the rules of
 * PGW_BENCH_CONFIG, default config/pointsgw.example.json, the body parsed
 * and the answer rendered as the API does): the writer's cost per event,
 * without the noise of a load client on the same machine. Each command has
 * its own idempotency key; members are spread over 100,000
 * (PGW_BENCH_MEMBERS). Reports committed transfers (= commands) per second.
 * PGW_BENCH_MODES=event (a comma-separated list) runs only the modes named.
 * PGW_BENCH_SPENT_LOTS=N (SQLite) first gives every member N spent lots, as
 * years of shopping leave them: what a member's reads must not walk. Such
 * members have bought before (no first-purchase bonus): with a few members
 * (PGW_BENCH_MEMBERS=200, say) every event is a returning member's, as most
 * of a mall's purchases are.
 * PGW_BENCH_EVENTS=N submits exactly N commands a case, however long they
 * take: a fixed workload for callgrind, whose count per command otherwise
 * moves with how many the machine's speed let in (the database grows).
 */
#include "config/config.h"
#include "server/api.h"
#include "server/event_command.h"
#include "server/event_json.h"
#include "server/writer.h"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POOL           4096   /* commands in flight at most */
#define EVENT_POOL     1024   /* in "event" mode (each carries ~50 KB more) */
#define MEMBERS        100000 /* purchases spread over this many members */
#define WRITERS_MAX    8
#define SPENT_ROWS_MAX 20000000 /* PGW_BENCH_SPENT_LOTS x members */

static long members = MEMBERS; /* PGW_BENCH_MEMBERS */
static long spent_lots;        /* PGW_BENCH_SPENT_LOTS: per member, seeded before a case */
static long events_max;        /* PGW_BENCH_EVENTS: commands a case, 0 = by the clock */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double fsync_rate(const char *dir, double seconds)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/fsync.bin", dir);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    char block[4096];
    memset(block, 'x', sizeof(block));
    long n = 0;
    double start = now_s();
    while (now_s() - start < seconds) {
        if (pwrite(fd, block, sizeof(block), 0) != (ssize_t)sizeof(block) || fdatasync(fd) != 0) {
            perror("fsync test");
            exit(1);
        }
        n++;
    }
    double rate = (double)n / (now_s() - start);
    close(fd);
    unlink(path);
    return rate;
}

/* The pool of commands and the count of those in flight. */
typedef struct pool {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    pgw_command *cmds;
    int free_list[POOL];
    int n_free;
    long completed;
    long failed;
    pgw_event_doc *docs;   /* "event": each command's document */
    pgw_earning *earnings; /* "event": where each command's earning goes */
} pool;

static void on_done(pgw_command *cmd, void *payload)
{
    pool *p = payload;
    pthread_mutex_lock(&p->lock);
    p->free_list[p->n_free++] = (int)(cmd - p->cmds);
    p->completed++;
    if (cmd->rc != PGW_OK && p->failed == 0)
        fprintf(stderr, "first failure: %s\n", cmd->err.msg);
    p->failed += cmd->rc != PGW_OK;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->lock);
}

/*
 * What one command is. "log": one EARN transfer appended as it is (the
 * transfer log and its idempotency alone). "purchase": a purchase earning
 * 128 points at S001 the way the HTTP layer will send it (PGW_COMMAND_EARN:
 * the transfer, the member's debt checked, a lot, the earn record for
 * refunds, the member's figures for the answer).
 */
typedef enum mode { MODE_LOG, MODE_PURCHASE, MODE_SPREAD, MODE_EVENT } mode;
static const char *const MODE_NAMES[] = {"log", "purchase", "spread", "event"};
#define MODE_LAST MODE_EVENT

static const pgw_config *bench_cfg; /* "event": loaded once by main() */

/* "event": the render the API sets, with the event's parsed document. */
static void render(pgw_command *cmd, void *payload)
{
    pool *p = payload;
    pgw_event_render(cmd, &bench_cfg->rules, &p->docs[cmd - p->cmds]);
}

/* "event": a purchase as a till posts it, parsed and priced as the API does. */
static void fill_event(pgw_command *cmd, long serial, pool *p)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"event_id\":\"B%ld\",\"channel\":\"store\",\"shop_id\":\"S00%ld\","
             "\"type\":\"purchase\",\"occurred_at\":\"2026-11-24T10:15:00+08:00\","
             "\"member\":{\"member_id\":\"M%ld\"},\"amount_fen\":12800}",
             serial, 1 + serial % 4, serial % members);
    size_t i = (size_t)(cmd - p->cmds);
    memset(cmd, 0, sizeof(*cmd)); /* ~5 us: small beside an event's ~170 */
    json_t *obj = json_loads(body, 0, NULL);
    pgw_err err;
    cmd->kind = PGW_COMMAND_EVENT;
    if (obj == NULL || pgw_event_from_json(obj, &bench_cfg->rules, &p->docs[i], &err) != PGW_OK ||
        pgw_event_command(NULL, obj, &p->docs[i], (int64_t)time(NULL), &p->earnings[i], cmd,
                          &err) != PGW_OK) {
        fprintf(stderr, "bench_store: event %ld: %s\n", serial, err.msg);
        exit(1);
    }
    json_decref(obj);
    cmd->at = 1795486500 + serial / 1000;
    cmd->render = render;
    cmd->render_ctx = p;
    cmd->done = on_done;
    cmd->payload = p;
}

/*
 * The pool's commands are zeroed once (calloc); fill() sets every input the
 * mode uses and clears what the writer left in them last time, instead of
 * zeroing all 58 KB of a command per use: at 50,000 commands/s that memset
 * alone took a third of a core from the writer on this 2-core machine.
 */
static void fill(pgw_command *cmd, long serial, mode m, pool *p)
{
    if (m == MODE_EVENT) {
        fill_event(cmd, serial, p);
        return;
    }
    cmd->n_transfers = 0;
    cmd->answer[0] = '\0';
    cmd->rc = PGW_OK;
    cmd->replayed = false;
    snprintf(cmd->key, sizeof(cmd->key), "store:S001:%ld", serial);
    memcpy(cmd->fingerprint, &serial, sizeof(serial));
    cmd->done = on_done;
    cmd->payload = p;
    if (m != MODE_LOG) {
        int shop = m == MODE_SPREAD ? 1 + (int)(serial % 8) : 1;
        cmd->kind = PGW_COMMAND_EARN;
        snprintf(cmd->member, sizeof(cmd->member), "M%ld", serial % members);
        snprintf(cmd->shop, sizeof(cmd->shop), "S00%d", shop);
        snprintf(cmd->channel, sizeof(cmd->channel), "store");
        snprintf(cmd->reference, sizeof(cmd->reference), "R%ld", serial);
        cmd->at = 1795486500 + serial / 1000;
        cmd->amount_fen = 12800;
        cmd->lines[0] = (pgw_earn_line){"", "format:retail", 128};
        snprintf(cmd->lines[0].debit, sizeof(cmd->lines[0].debit), "shop:S00%d:issued", shop);
        cmd->n_lines = 1;
        return;
    }
    cmd->kind = PGW_COMMAND_TRANSFERS;
    cmd->n_transfers = 1;
    pgw_transfer *t = &cmd->transfers[0];
    memset(t, 0, sizeof(*t));
    t->kind = PGW_TRANSFER_EARN;
    snprintf(t->idem_key, sizeof(t->idem_key), "%s", cmd->key);
    memcpy(t->fingerprint, cmd->fingerprint, PGW_HASH_LEN);
    snprintf(t->debit, sizeof(t->debit), "shop:S001:issued");
    snprintf(t->credit, sizeof(t->credit), "member:M%ld", serial % members);
    t->points = 128;
    snprintf(t->shop_id, sizeof(t->shop_id), "S001");
    snprintf(t->channel, sizeof(t->channel), "store");
    snprintf(t->breakdown, sizeof(t->breakdown), "format:retail=128");
    t->occurred_at = 1795486500 + serial / 1000;
    t->recorded_at_us = t->occurred_at * 1000000;
}

/* Takes a free command, waiting for one when all are in flight. */
static int take(pool *p)
{
    pthread_mutex_lock(&p->lock);
    while (p->n_free == 0)
        pthread_cond_wait(&p->freed, &p->lock);
    int i = p->free_list[--p->n_free];
    pthread_mutex_unlock(&p->lock);
    return i;
}

static bool is_postgres(const char *where)
{
    return strncmp(where, "postgresql://", 13) == 0;
}

/* A new, empty database pgw_bench on the cluster of `admin`; its URL in url. */
static void fresh_pg_database(const char *admin, char *url, size_t cap)
{
    PGconn *c = PQconnectdb(admin);
    const char *steps[] = {"SET client_min_messages = warning",
                           "DROP DATABASE IF EXISTS pgw_bench WITH (FORCE)",
                           "CREATE DATABASE pgw_bench"};
    for (size_t i = 0; i < 3; i++) {
        PGresult *r = PQexec(c, steps[i]);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "%s: %s", steps[i], PQerrorMessage(c));
            exit(1);
        }
        PQclear(r);
    }
    PQfinish(c);
    const char *slash = strrchr(admin, '/');
    snprintf(url, cap, "%.*s/pgw_bench", (int)(slash - admin), admin);
}

/*
 * Every member with `spent_lots` lots spent whole, straight in SQL on a
 * database the store has created: one seed transfer they all come from
 * (a bench database is never verified), the members, their lots.
 */
static void seed_spent_lots(const char *url)
{
    pgw_store *s = NULL;
    pgw_err err;
    sqlite3 *db = NULL;
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "BEGIN;"
             "INSERT INTO transfers VALUES (1, 1, 'bench:seed', zeroblob(32), 'mall:campaigns',"
             " 'member:M0', 1, '', 'bench', 0, 0, '', '', zeroblob(32), zeroblob(32));"
             "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < %ld)"
             " INSERT INTO members (id, debt, created_at_us, purchased)"
             " SELECT 'M' || i, 0, 0, 1 FROM n;"
             "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < %ld)"
             " INSERT INTO lots (member, points, left_points, held, earned_at, expires_at,"
             " source_transfer) SELECT 'M' || (i %% %ld), 10, 0, 0, 1700000000 + i,"
             " 1800000000 + i, 1 FROM n;"
             "COMMIT;",
             members, members * spent_lots, members);
    if (pgw_store_open(url, true, &s, &err) != PGW_OK) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    pgw_store_close(s);
    char *msg = NULL;
    if (sqlite3_open(url + 7, &db) != SQLITE_OK || sqlite3_exec(db, sql, NULL, NULL, &msg) != 0) {
        fprintf(stderr, "seeding spent lots: %s\n", msg ? msg : sqlite3_errmsg(db));
        exit(1);
    }
    sqlite3_close(db);
}

static double run_case(const char *dir, mode m, size_t batch, double seconds, int n_writers,
                       long *total)
{
    char url[600];
    if (is_postgres(dir)) {
        fresh_pg_database(dir, url, sizeof(url));
    } else {
        snprintf(url, sizeof(url), "sqlite:%s/bench-%zu.db", dir, batch);
        unlink(url + 7);
        if (spent_lots > 0)
            seed_spent_lots(url);
    }
    pgw_writer_options opts = {.db_url = url,
                               .queue_cap = POOL,
                               .batch_max = batch,
                               .policy.expiry = {PGW_EXPIRY_ROLLING, 12, 0}};
    pgw_tz_lookup("Asia/Shanghai", &opts.policy.tz, NULL);
    if (m == MODE_EVENT)
        pgw_api_policy(bench_cfg, &opts.policy);
    pgw_writer *writers[WRITERS_MAX] = {NULL};
    pgw_err err;
    for (int k = 0; k < n_writers; k++) {
        if (pgw_writer_start(&opts, &writers[k], &err) != PGW_OK) {
            fprintf(stderr, "%s\n", err.msg);
            exit(1);
        }
    }
    pool p = {.lock = PTHREAD_MUTEX_INITIALIZER, .freed = PTHREAD_COND_INITIALIZER};
    size_t cap = m == MODE_EVENT ? EVENT_POOL : POOL;
    p.cmds = calloc(cap, sizeof(*p.cmds));
    if (m == MODE_EVENT) {
        p.docs = calloc(cap, sizeof(*p.docs));
        p.earnings = calloc(cap, sizeof(*p.earnings));
    }
    size_t in_flight = batch * 4 < cap ? batch * 4 : cap; /* enough to fill batches */
    for (size_t i = 0; i < in_flight; i++)
        p.free_list[p.n_free++] = (int)i;
    long serial = 0;
    double start = now_s();
    while (events_max > 0 ? serial < events_max : now_s() - start < seconds) {
        int i = take(&p);
        pgw_writer *w = writers[serial % n_writers];
        fill(&p.cmds[i], serial++, m, &p);
        while (pgw_writer_submit(w, &p.cmds[i], &err) == PGW_EFULL)
            sched_yield();
    }
    for (int k = 0; k < n_writers; k++)
        pgw_writer_stop(writers[k]); /* drains and commits what is queued */
    double elapsed = now_s() - start;
    if (p.failed > 0) {
        fprintf(stderr, "%ld commands failed\n", p.failed);
        exit(1);
    }
    if (p.completed == 0) { /* a case that committed nothing measured nothing */
        fprintf(stderr, "no command completed\n");
        exit(1);
    }
    *total = p.completed;
    free(p.cmds);
    free(p.docs);
    free(p.earnings);
    if (is_postgres(dir))
        return (double)p.completed / elapsed;
    unlink(url + 7);
    char side[700];
    snprintf(side, sizeof(side), "%s-wal", url + 7);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", url + 7);
    unlink(side);
    return (double)p.completed / elapsed;
}

/* PGW_BENCH_MODES: the modes to run (default all). */
static bool mode_wanted(mode m)
{
    const char *list = getenv("PGW_BENCH_MODES");
    if (list == NULL)
        return true;
    size_t n = strlen(MODE_NAMES[m]);
    for (const char *at = strstr(list, MODE_NAMES[m]); at != NULL;
         at = strstr(at + 1, MODE_NAMES[m]))
        if ((at == list || at[-1] == ',') && (at[n] == '\0' || at[n] == ','))
            return true;
    return false;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "bench/data";
    double seconds = argc > 2 ? atof(argv[2]) : 3.0;
    if (seconds <= 0 || seconds > 600) {
        fprintf(stderr,
                "usage: bench_store [DIR | postgresql://ADMIN-URL] [SECONDS_PER_CASE 0..600] "
                "[BATCH_SIZE...]\n");
        return 2;
    }
    const char *env = getenv("PGW_BENCH_MEMBERS");
    members = env ? atol(env) : MEMBERS;
    env = getenv("PGW_BENCH_SPENT_LOTS");
    spent_lots = env ? atol(env) : 0;
    env = getenv("PGW_BENCH_EVENTS");
    events_max = env ? atol(env) : 0;
    if (events_max < 0 || events_max > 100000000) {
        fprintf(stderr, "PGW_BENCH_EVENTS is 0..100000000 (0: each case runs SECONDS)\n");
        return 2;
    }
    if (members < 1 || members > 1000000 || spent_lots < 0 ||
        spent_lots > SPENT_ROWS_MAX / members || (spent_lots > 0 && is_postgres(dir))) {
        fprintf(stderr,
                "PGW_BENCH_MEMBERS is 1..1000000; PGW_BENCH_SPENT_LOTS at most %d lots in"
                " all, on SQLite\n",
                SPENT_ROWS_MAX);
        return 2;
    }
    env = getenv("PGW_BENCH_WRITERS");
    int n_writers = env ? atoi(env) : 1;
    if (n_writers < 1 || n_writers > WRITERS_MAX || (n_writers > 1 && !is_postgres(dir))) {
        fprintf(stderr, "PGW_BENCH_WRITERS is 1..%d, and more than 1 only on PostgreSQL\n",
                WRITERS_MAX);
        return 2;
    }
    if (is_postgres(dir)) {
        printf("PostgreSQL: %s, %d writer(s), %.1f s per case\n", dir, n_writers, seconds);
    } else {
        printf("directory: %s, %.1f s per case\n", dir, seconds);
        printf("raw fsync (4 KiB write + fdatasync): %.0f /s\n", fsync_rate(dir, seconds));
    }
    const char *config = getenv("PGW_BENCH_CONFIG");
    pgw_config *cfg = NULL;
    pgw_err err;
    if (mode_wanted(MODE_EVENT) &&
        pgw_config_load(config ? config : "config/pointsgw.example.json", &cfg, &err) != PGW_OK) {
        fprintf(stderr, "bench_store: %s\n", err.msg);
        return 2;
    }
    bench_cfg = cfg;
    size_t batches[8] = {1, 16, 128, 1024}, n_batches = 4;
    if (argc > 3) { /* only the batch sizes given */
        n_batches = 0;
        for (int i = 3; i < argc && n_batches < 8; i++)
            batches[n_batches++] = (size_t)atol(argv[i]);
    }
    for (size_t i = 0; i < n_batches; i++) {
        if (batches[i] < 1 || batches[i] > PGW_WRITER_BATCH_MAX) {
            fprintf(stderr, "batch sizes are 1..%d\n", PGW_WRITER_BATCH_MAX);
            return 2;
        }
        for (mode m = MODE_LOG; m <= MODE_LAST; m++) {
            if (!mode_wanted(m))
                continue;
            long total = 0;
            double rate = run_case(dir, m, batches[i], seconds, n_writers, &total);
            printf("%-8s batch %4zu: %9.0f durable transfers/s (%ld committed)\n", MODE_NAMES[m],
                   batches[i], rate, total);
            fflush(stdout);
        }
    }
    pgw_config_free(cfg);
    return 0;
}
