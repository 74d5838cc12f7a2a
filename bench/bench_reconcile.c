/*
 * bench_reconcile.c - reconciliation of a big statement against a big log.
 *
 * Usage: bench_reconcile POINTSGW_BINARY CONFIG DIR [ROWS [reversed]]   (default 10,000,000)
 *
 * Generates in DIR a log of ROWS events (the event keys of a real store,
 * written through the store's own insert) and a statement of the same
 * events with 0.1% discrepancies planted, one kind after another: points,
 * amount, a row missing from the statement, a row the log lacks, a row
 * twice ("reversed": the statement in descending event_id order, which
 * reconcile must sort first). Then times `pointsgw reconcile` on them as a separate process
 * (wall time and peak RSS from wait4), checks that the summary counts
 * exactly what was planted, and times the same match done with coreutils
 * (`sort` of both files, then `join`) on the statement and a CSV export of
 * the same log, as the reference.
 */
#include "store/store.h"

#include <stdbool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BASE_TIME 1795017600 /* 2026-11-19T00:00:00+08:00 */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct planted {
    long points, amount, missing_in_statement, missing_in_ledger, duplicate;
} planted;

static void fail(const char *what, const pgw_err *err)
{
    fprintf(stderr, "bench_reconcile: %s: %s\n", what, err ? err->msg : "failed");
    exit(1);
}

/* One statement line in RFC 3339, as tills write it: the log's time,
 * BASE_TIME + i % 86400, in +08:00 (BASE_TIME is that day's midnight). */
static void statement_line(FILE *f, const char *id, long i, long amount, long points)
{
    long local = i % 86400;
    fprintf(f, "%s,2026-11-19T%02ld:%02ld:%02ld+08:00,purchase,member_id:M%ld,%ld,%ld\n", id,
            local / 3600, local % 3600 / 60, local % 60, i % 100000, amount, points);
}

/* 0.1% of rows carry a discrepancy, one kind after another: points,
 * amount, missing from the statement, missing from the log, twice. */
static int planted_kind(long i)
{
    return i % 1000 == 500 ? (int)(i / 1000 % 5) : -1;
}

/* The log (through the store), the statement (in event_id order, or the
 * reverse) and the log's CSV export. */
static void generate(const char *dir, long rows, bool reversed, planted *p)
{
    char path[600];
    snprintf(path, sizeof(path), "sqlite:%s/recon.db", dir);
    unlink(path + 7);
    pgw_store *s = NULL;
    pgw_err err;
    if (pgw_store_open(path, true, &s, &err) != PGW_OK || pgw_store_begin(s, &err) != PGW_OK)
        fail("opening the log", &err);
    snprintf(path, sizeof(path), "%s/statement.csv", dir);
    FILE *st = fopen(path, "w");
    snprintf(path, sizeof(path), "%s/ledger.csv", dir);
    FILE *lg = fopen(path, "w");
    if (st == NULL || lg == NULL)
        fail("creating the files", NULL);
    fputs("event_id,occurred_at,type,member,amount_fen,points\n", st);
    pgw_event_record r = {.type = "purchase"};
    char event_id[PGW_EVENT_ID_MAX + 1], key[PGW_IDEM_KEY_MAX + 1];
    uint8_t fingerprint[PGW_HASH_LEN] = {0};
    for (long i = 0; i < rows; i++) {
        long amount = 1000 + i % 50000, points = amount / 100;
        snprintf(event_id, sizeof(event_id), "S001-%010ld", i);
        snprintf(r.member, sizeof(r.member), "M%ld", i % 100000);
        r.occurred_at = BASE_TIME + i % 86400;
        r.amount_fen = amount;
        r.points = points;
        if (planted_kind(i) != 3) {
            /* No answer: answers are rows of their own, which reconciliation never reads. */
            bool replayed = false;
            pgw_idem_record existing;
            pgw_store_event_key(key, "store", "S001", event_id);
            if (pgw_store_record_key(s, key, fingerprint, i + 1, 1, BASE_TIME * 1000000LL, NULL, &r,
                                     &replayed, &existing, &err) != PGW_OK ||
                replayed)
                fail("writing the log", &err);
            fprintf(lg, "%s,%ld,%ld\n", event_id, points, amount);
        }
    }
    for (long k = 0; k < rows; k++) {
        long i = reversed ? rows - 1 - k : k;
        long amount = 1000 + i % 50000, points = amount / 100;
        int kind = planted_kind(i);
        snprintf(event_id, sizeof(event_id), "S001-%010ld", i);
        if (kind == 2) {
            p->missing_in_statement++;
            continue;
        }
        statement_line(st, event_id, i, amount + (kind == 1), points + (kind == 0));
        p->points += kind == 0;
        p->amount += kind == 1;
        p->missing_in_ledger += kind == 3;
        if (kind == 4) {
            statement_line(st, event_id, i, amount, points);
            p->duplicate++;
        }
    }
    if (pgw_store_commit(s, &err) != PGW_OK)
        fail("committing the log", &err);
    pgw_store_close(s);
    if (fclose(st) != 0 || fclose(lg) != 0)
        fail("writing the files", NULL);
}

/* Runs argv as a child; its wall time and peak RSS (KiB). */
static int run(char *const argv[], double *seconds, long *maxrss_kib)
{
    double start = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) != pid)
        fail("running a child", NULL);
    *seconds = now_s() - start;
    *maxrss_kib = ru.ru_maxrss;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static long summary_value(const char *report, const char *name)
{
    char key[64];
    snprintf(key, sizeof(key), "\"%s\":", name);
    const char *at = strstr(report, key);
    return at ? atol(at + strlen(key)) : -1;
}

/* The summary must count exactly what was planted. */
static void check_report(const char *dir, long rows, const planted *p)
{
    char path[600], report[4096] = "";
    snprintf(path, sizeof(path), "%s/report.json", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL || fread(report, 1, sizeof(report) - 1, f) == 0)
        fail("reading the report", NULL);
    fclose(f);
    long statement = rows - p->missing_in_statement + p->duplicate;
    long ledger = rows - p->missing_in_ledger;
    long matched = rows - p->points - p->amount - p->missing_in_statement - p->missing_in_ledger;
    struct {
        const char *name;
        long want;
    } checks[] = {{"statement_rows", statement},
                  {"ledger_rows", ledger},
                  {"matched", matched},
                  {"points_mismatch", p->points},
                  {"amount_mismatch", p->amount},
                  {"missing_in_statement", p->missing_in_statement},
                  {"missing_in_ledger", p->missing_in_ledger},
                  {"duplicate_in_statement", p->duplicate},
                  {"malformed_row", 0}};
    for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        long got = summary_value(report, checks[i].name);
        if (got != checks[i].want) {
            fprintf(stderr, "bench_reconcile: %s is %ld, planted %ld\n", checks[i].name, got,
                    checks[i].want);
            exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_reconcile POINTSGW CONFIG DIR [ROWS [reversed]]\n");
        return 2;
    }
    const char *bin = argv[1], *config = argv[2], *dir = argv[3];
    long rows = argc > 4 ? atol(argv[4]) : 10000000;
    bool reversed = argc > 5 && strcmp(argv[5], "reversed") == 0;
    if (rows < 1000 || rows > 100000000) {
        fprintf(stderr, "bench_reconcile: ROWS is 1000..100000000\n");
        return 2;
    }
    planted p = {0};
    double t0 = now_s();
    generate(dir, rows, reversed, &p);
    printf("generated %ld log rows and a statement with %ld planted discrepancies in %.1f s\n",
           rows, p.points + p.amount + p.missing_in_statement + p.missing_in_ledger + p.duplicate,
           now_s() - t0);
    fflush(stdout);

    char statement[600], db[600], report[600], script[4096];
    snprintf(statement, sizeof(statement), "%s/statement.csv", dir);
    snprintf(db, sizeof(db), "sqlite:%s/recon.db", dir);
    snprintf(report, sizeof(report), "%s/report.json", dir);
    char *recon[] = {(char *)bin, "reconcile", "--statement", statement,  "--channel",
                     "store",     "--shop",    "S001",        "--config", (char *)config,
                     "--db",      db,          "--out",       report,     NULL};
    double secs = 0;
    long rss = 0;
    int code = run(recon, &secs, &rss);
    if (code != 1) /* 1: the check found the planted problems */
        fail("pointsgw reconcile did not exit 1", NULL);
    check_report(dir, rows, &p);
    printf("pointsgw reconcile: %.2f s, %.0f statement rows/s, peak RSS %.1f MiB "
           "(summary = what was planted)\n",
           secs, (double)rows / secs, (double)rss / 1024.0);
    fflush(stdout);

    /* The reference: coreutils on the same statement and the log's export. */
    snprintf(script, sizeof(script),
             "cd '%s' && export LC_ALL=C && tail -n +2 statement.csv | sort -t, -k1,1 > s.sorted "
             "&& sort -t, -k1,1 ledger.csv > l.sorted "
             "&& join -t, -a1 -a2 -e NONE -o 0,1.5,1.6,2.2,2.3 s.sorted l.sorted > joined.csv",
             dir);
    char *sh[] = {"sh", "-c", script, NULL};
    double ref = 0;
    long ref_rss = 0;
    if (run(sh, &ref, &ref_rss) != 0)
        fail("sort + join", NULL);
    printf("sort + join (LC_ALL=C): %.2f s, peak RSS %.1f MiB (largest process)\n", ref,
           (double)ref_rss / 1024.0);
    printf("pointsgw / sort+join time: %.2f\n", secs / ref);
    static const char *const made[] = {"recon.db",      "recon.db-wal", "recon.db-shm",
                                       "statement.csv", "ledger.csv",   "report.json",
                                       "s.sorted",      "l.sorted",     "joined.csv"};
    for (size_t i = 0; !getenv("BENCH_KEEP") && i < sizeof(made) / sizeof(made[0]);
         i++) { /* gigabytes at 10M rows; BENCH_KEEP=1 keeps them to look at */
        snprintf(statement, sizeof(statement), "%s/%s", dir, made[i]);
        unlink(statement);
    }
    return 0;
}
