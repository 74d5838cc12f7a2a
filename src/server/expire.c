/*
 * expire.c - see expire.h.
 */
#include "expire.h"

#include "core/assertions.h"
#include "server/report.h"
#include "util/clock.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPIRE_PAGE 256

typedef struct page_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t done;
    pgw_expire_seen seen;
    void *seen_ctx;
} page_wait;

static void page_done(pgw_command *cmd, void *payload)
{
    page_wait *pw = payload;
    if (pw->seen != NULL && cmd->rc == PGW_OK && !cmd->replayed && cmd->n_transfers > 0)
        pw->seen(pw->seen_ctx, cmd);
    pthread_mutex_lock(&pw->lock);
    pw->done++;
    pthread_cond_signal(&pw->cond);
    pthread_mutex_unlock(&pw->lock);
}

/*
 * Submits one command; when the queue is full, waits (at most 10 ms at a
 * time: other callers may be filling it too) for one of ours to complete.
 */
static int submit_when_room(pgw_writer *w, pgw_command *cmd, page_wait *pw, pgw_err *err)
{
    for (;;) {
        int rc = pgw_writer_submit(w, cmd, err);
        if (rc != PGW_EFULL)
            return rc;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 10 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&pw->lock);
        size_t seen = pw->done;
        while (pw->done == seen && pthread_cond_timedwait(&pw->cond, &pw->lock, &until) == 0)
            ;
        pthread_mutex_unlock(&pw->lock);
    }
}

/* One run of pgw_expire_due: its arguments, reader and page of commands. */
typedef struct expire_run {
    pgw_writer *w;
    pgw_store *reader;
    int64_t as_of;
    pgw_command *cmds; /* EXPIRE_PAGE */
    pgw_expire_seen seen;
    void *seen_ctx;
    pgw_expire_stop stop; /* NULL: never */
    void *stop_ctx;
    pgw_expire_report *out;
    pgw_err first_failed; /* the run's first hold or lot that failed alone */
} expire_run;

/*
 * Whether an expiry's failure `rc` is its own hold's or lot's (its data:
 * one corrupt row), which must not keep the others from expiring, or the
 * run's: the storage or the writer down (PGW_EUNAVAILABLE: a whole batch),
 * memory, a period closed meanwhile, which the next expiries would meet
 * too. ESTATE (done by another run meanwhile) is no failure.
 */
static bool fails_alone(int rc)
{
    return rc != PGW_OK && rc != PGW_ESTATE && rc != PGW_EUNAVAILABLE && rc != PGW_ENOMEM &&
           rc != PGW_ECLOSED;
}

/* Notes command `cmd`'s failure alone: counted, and the run's first kept. */
static void note_failed(expire_run *r, const pgw_command *cmd)
{
    r->out->failed++;
    if (r->first_failed.code != PGW_OK)
        return;
    if (cmd->kind == PGW_COMMAND_EXPIRE_LOT)
        pgw_err_set(&r->first_failed, cmd->rc, "lot %lld: %s", (long long)cmd->lot_id,
                    cmd->err.msg);
    else
        pgw_err_set(&r->first_failed, cmd->rc, "hold %s: %s", cmd->hold_id, cmd->err.msg);
}

/* Whether the owner asked the run to stop (asked between pages). */
static bool stopping(const expire_run *r)
{
    return r->stop != NULL && r->stop(r->stop_ctx);
}

/*
 * Runs one page of expiry commands (kind and target filled); adds what
 * they did to r->out. A hold or lot failing alone (fails_alone) is noted
 * and the run goes on; any other failure ends it, as does a whole page
 * whose every expiry failed (a storage failing each write, not a row:
 * pages after it would fail the same, at a page a second).
 */
static int run_page(expire_run *r, size_t n, pgw_err *err)
{
    pgw_writer *w = r->w;
    pgw_command *cmds = r->cmds;
    int64_t as_of = r->as_of;
    pgw_expire_report *out = r->out;
    page_wait pw = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, r->seen, r->seen_ctx};
    size_t submitted = 0;
    int rc = PGW_OK;
    for (; rc == PGW_OK && submitted < n; submitted++) {
        pgw_command *cmd = &cmds[submitted];
        cmd->at = as_of;
        cmd->done = page_done;
        cmd->payload = &pw;
        rc = submit_when_room(w, cmd, &pw, err);
    }
    if (rc != PGW_OK)
        submitted--; /* the last one was not queued */
    pthread_mutex_lock(&pw.lock);
    while (pw.done < submitted)
        pthread_cond_wait(&pw.cond, &pw.lock);
    pthread_mutex_unlock(&pw.lock);
    size_t failed = 0;
    for (size_t i = 0; i < submitted; i++) {
        bool lot = cmds[i].kind == PGW_COMMAND_EXPIRE_LOT;
        if (cmds[i].rc == PGW_OK && !cmds[i].replayed) {
            out->lots += lot;
            out->points += lot ? cmds[i].points_moved : 0;
            out->holds += !lot;
        } else if (fails_alone(cmds[i].rc)) {
            note_failed(r, &cmds[i]);
            failed++;
        } else if (cmds[i].rc != PGW_OK && cmds[i].rc != PGW_ESTATE && rc == PGW_OK) {
            /* ESTATE: someone else got there first (nothing due any more).
             * Named as a lot's own failure is: where the run stopped. */
            rc =
                lot ? pgw_err_set(err, cmds[i].rc, "lot %lld: %s", (long long)cmds[i].lot_id,
                                  cmds[i].err.msg)
                    : pgw_err_set(err, cmds[i].rc, "hold %s: %s", cmds[i].hold_id, cmds[i].err.msg);
        }
    }
    if (rc == PGW_OK && failed == EXPIRE_PAGE)
        rc = pgw_err_set(err, r->first_failed.code,
                         "every expiry of a page of %d failed, the run ends there; the run's "
                         "first: %s",
                         EXPIRE_PAGE, r->first_failed.msg);
    return rc;
}

/* Holds pending past as_of are released first: what they reserved of a
 * lot that is due then expires with the rest of it. */
static int expire_holds(expire_run *r, pgw_err *err)
{
    pgw_command *cmds = r->cmds;
    pgw_hold_record *holds = calloc(EXPIRE_PAGE, sizeof(*holds));
    if (holds == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the expiry run");
    pgw_hold_record after;
    bool started = false;
    size_t n = 0;
    int rc = PGW_OK;
    while (!stopping(r) &&
           (rc = pgw_store_due_holds(r->reader, r->as_of, started ? &after : NULL, holds,
                                     EXPIRE_PAGE, &n, err)) == PGW_OK &&
           n > 0) {
        for (size_t i = 0; i < n; i++) {
            memset(&cmds[i], 0, sizeof(cmds[i]));
            cmds[i].kind = PGW_COMMAND_EXPIRE_HOLD;
            memcpy(cmds[i].hold_id, holds[i].id, sizeof(cmds[i].hold_id));
        }
        rc = run_page(r, n, err);
        if (rc != PGW_OK)
            break;
        after = holds[n - 1];
        started = true;
    }
    free(holds);
    return rc;
}

static int expire_lots(expire_run *r, pgw_err *err)
{
    pgw_command *cmds = r->cmds;
    pgw_lot *lots = calloc(EXPIRE_PAGE, sizeof(*lots));
    if (lots == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the expiry run");
    int64_t after_id = 0;
    size_t n = 0;
    int rc = PGW_OK;
    while (!stopping(r) &&
           (rc = pgw_store_due_lots(r->reader, r->as_of, after_id, lots, EXPIRE_PAGE, &n, err)) ==
               PGW_OK &&
           n > 0) {
        for (size_t i = 0; i < n; i++) {
            memset(&cmds[i], 0, sizeof(cmds[i]));
            cmds[i].kind = PGW_COMMAND_EXPIRE_LOT;
            cmds[i].lot_id = lots[i].id;
        }
        rc = run_page(r, n, err);
        if (rc != PGW_OK)
            break;
        after_id = lots[n - 1].id;
    }
    free(lots);
    return rc;
}

/* PGW_ECLOSED for a run dated before the period's close: its expiries
 * would be dated in a period finance settled (each command would be
 * refused too, under the writer's lock: command.c; this says it once).
 * The times in `tz`, as finance wrote the close and as pointsgw expire
 * and period close say them. */
static int check_open_period(pgw_store *reader, int64_t as_of, const pgw_tz *tz, pgw_err *err)
{
    pgw_period_close c;
    int rc = pgw_store_period_close(reader, &c, err);
    if (rc != PGW_OK || as_of >= c.before)
        return rc;
    char when[PGW_RFC3339_MAX], close[PGW_RFC3339_MAX];
    pgw_format_moment(as_of, tz, when);
    pgw_format_moment(c.before, tz, close);
    return pgw_err_set(err, PGW_ECLOSED,
                       "the period before %s is closed: an expiry as of %s would be dated in "
                       "it; expire as of %s or later",
                       close, when, close);
}

/*
 * A run that ended on a failure after some of its expiries committed: the
 * failure's own words ("storage failed, nothing was written") followed
 * `pointsgw expire`'s "expired 256 lots", and read as if those had not
 * been; the commits stand, and the next run takes what is left.
 */
static void said_part_way(pgw_err *err)
{
    char why[sizeof(err->msg)];
    snprintf(why, sizeof(why), "%s", err->msg);
    pgw_err_set(err, err->code,
                "the run stopped part way: what it did stays done, the rest is still due; %s", why);
}

int pgw_expire_due(pgw_writer *w, const char *db_url, int64_t as_of, const pgw_tz *tz,
                   pgw_expire_seen seen, void *seen_ctx, pgw_expire_report *out, pgw_err *err)
{
    return pgw_expire_due_until(w, db_url, as_of, tz, seen, seen_ctx, NULL, NULL, out, err);
}

int pgw_expire_due_until(pgw_writer *w, const char *db_url, int64_t as_of, const pgw_tz *tz,
                         pgw_expire_seen seen, void *seen_ctx, pgw_expire_stop stop, void *stop_ctx,
                         pgw_expire_report *out, pgw_err *err)
{
    memset(out, 0, sizeof(*out));
    /* Its callers bound it (expire's --as-of, the sweep's clock); a moment
     * outside the times finance writes would date expiries no report can
     * show, and no message could name it. */
    if (as_of < 0 || as_of > PGW_REPORT_TIME_MAX)
        return pgw_err_set(err, PGW_EINVAL,
                           "an expiry run as of %lld: the moment is not " PGW_REPORT_TIME_RANGE,
                           (long long)as_of);
    expire_run r = {.w = w,
                    .as_of = as_of,
                    .seen = seen,
                    .seen_ctx = seen_ctx,
                    .stop = stop,
                    .stop_ctx = stop_ctx,
                    .out = out};
    int rc = pgw_store_open(db_url, false, &r.reader, err);
    if (rc != PGW_OK)
        return rc;
    rc = check_open_period(r.reader, as_of, tz, err);
    if (rc != PGW_OK) {
        pgw_store_close(r.reader);
        return rc;
    }
    r.cmds = calloc(EXPIRE_PAGE, sizeof(*r.cmds));
    if (r.cmds == NULL)
        rc = pgw_err_set(err, PGW_ENOMEM, "out of memory for the expiry run");
    if (rc == PGW_OK)
        rc = expire_holds(&r, err);
    if (rc == PGW_OK)
        rc = expire_lots(&r, err);
    if (rc != PGW_OK && out->holds + out->lots > 0)
        said_part_way(err);
    if (rc == PGW_OK && out->failed > 0)
        rc = pgw_err_set(err, r.first_failed.code,
                         "%lld of the due holds and lots failed and are left due (the rest "
                         "expired); the first, %s",
                         (long long)out->failed, r.first_failed.msg);
    free(r.cmds);
    pgw_store_close(r.reader);
    return rc;
}

/* Writes what the limit said (core/log_limit.h pgw_log_line's words). */
static void say(pgw_log_say said, const char *what, const char *failed, uint64_t unsaid, FILE *out)
{
    char text[PGW_LOG_LINE_MAX];
    pgw_log_line(said, what, failed, unsaid, text);
    if (text[0] != '\0')
        fputs(text, out);
}

/* The lines of pgw_expire_tell_at and _late: a failure's cause `failed`
 * (NULL: it worked), as pgw_log_tell says. */
static void tell(pgw_log_limit *said, const char *what, const char *failed, int64_t now_s,
                 FILE *out)
{
    uint64_t unsaid = 0;
    pgw_log_say told = pgw_log_tell(said, now_s, failed, &unsaid);
    say(told, what, failed, unsaid, out);
}

void pgw_expire_tell_at(pgw_log_limit *said, const char *what, int rc, const pgw_err *err,
                        int64_t now_s, FILE *out)
{
    tell(said, what, rc == PGW_OK ? NULL : err->msg, now_s, out);
}

void pgw_expire_tell(pgw_log_limit *said, const char *what, int rc, const pgw_err *err)
{
    pgw_expire_tell_at(said, what, rc, err, pgw_monotonic_s(), stderr);
}

void pgw_expire_tell_stopping(pgw_log_limit *said, const char *what, FILE *out)
{
    uint64_t unsaid = 0;
    pgw_log_say told = pgw_log_stopping(said, &unsaid);
    say(told, what, NULL, unsaid, out);
}

void pgw_expire_tell_later(pgw_log_limit *said, const char *what, int64_t now_s, FILE *out)
{
    uint64_t unsaid = 0;
    pgw_log_say told = pgw_log_later(said, now_s, &unsaid);
    say(told, what, NULL, unsaid, out);
}

void pgw_expire_tell_late(pgw_log_limit *said, const char *what, const char *failed)
{
    tell(said, what, failed, pgw_monotonic_s(), stderr);
}
