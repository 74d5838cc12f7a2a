/*
 * log_limit.h - how often a line of one kind goes to the operator's log.
 *
 * A failing disk fails every request: a stderr line for each would flood
 * the log and bury what came before it. So a kind of line goes out at most
 * once a minute, the lines held back counted and told in the next one. But
 * a line that gives another cause than the last one out goes out at once
 * (a full disk, then a lock: the second is news the operator needs now,
 * not a minute later behind the first one's count), up to
 * PGW_LOG_LINES_MAX lines a minute, so that causes that alternate, or name
 * a member each, stay bounded.
 *
 * No I/O: the caller tells the time and writes the line. Not thread-safe:
 * one limit belongs to one thread, or is used under its owner's lock.
 */
#ifndef PGW_CORE_LOG_LIMIT_H
#define PGW_CORE_LOG_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

#define PGW_LOG_EVERY_S   60  /* a cause already said goes out again after this */
#define PGW_LOG_LINES_MAX 10  /* lines of one kind in a minute, new causes included */
#define PGW_LOG_CAUSE_MAX 160 /* a cause is compared on its first 159 bytes */

/* Zeroed (`= {0}`) is a limit with nothing said yet. */
typedef struct pgw_log_limit {
    int64_t minute_s; /* when this minute's first line went out; 0: none since cleared */
    int said;         /* lines out since minute_s */
    bool through;     /* worked since the last failure; its "works again" is to come */
    uint64_t unsaid;  /* lines held back since the last one out */
    char last[PGW_LOG_CAUSE_MAX]; /* the last cause out, cut */
} pgw_log_limit;

/*
 * Whether a line with `cause` may go out at `now_s` (seconds of a
 * monotonic clock, > 0). When it may, *unsaid is how many lines were held
 * back before it, and the count starts again; when not, it is counted.
 */
bool pgw_log_due(pgw_log_limit *l, int64_t now_s, const char *cause, uint64_t *unsaid);

/* Whether nothing told awaits its "works again" (zeroed, or cleared by
 * it): pgw_log_tell of a success would then say nothing and change
 * nothing, so a caller at a hot path's rate may skip it, and its clock. */
bool pgw_log_idle(const pgw_log_limit *l);

/* What pgw_log_tell says is to be written. */
typedef enum pgw_log_say {
    PGW_LOG_QUIET,  /* nothing now */
    PGW_LOG_FAILED, /* the failure's line, *unsaid held back before it */
    PGW_LOG_WORKS,  /* "works again", *unsaid failed since the last line out */
} pgw_log_say;

/*
 * What to write at `now_s` of a thing that failed with `failed`, or (NULL)
 * worked. A failure: as pgw_log_due. Working after failures told: "works
 * again", once, with the failures held back since the last line, and the
 * limit starts afresh (the next failure is news); but, as a failure's
 * line, only once the minute of the last line out is over (its first line
 * PGW_LOG_EVERY_S old). Till then it is remembered, unless a failure comes
 * first: a thing failing every other time would otherwise say two lines a
 * failure (failed, works again, failed...).
 */
pgw_log_say pgw_log_tell(pgw_log_limit *l, int64_t now_s, const char *failed, uint64_t *unsaid);

/* Nothing used at `now_s`: "works again" (PGW_LOG_WORKS, as pgw_log_tell)
 * if the thing worked since its last failure and that minute is over,
 * else PGW_LOG_QUIET. For an owner that may fall quiet (the writer when
 * idle), lest a failure stay the log's last word. */
pgw_log_say pgw_log_later(pgw_log_limit *l, int64_t now_s, uint64_t *unsaid);

/* The owner stops: "works again" (PGW_LOG_WORKS) if the thing worked since
 * its last failure, the minute over or not: no line follows it to bound,
 * and the failure would stay the log's last word. Else PGW_LOG_QUIET. */
pgw_log_say pgw_log_stopping(pgw_log_limit *l, uint64_t *unsaid);

/* " (N more since the last such line)", the words a failure's line gives
 * its *unsaid in, or "" when N is 0 (its first line, or none held back). */
#define PGW_LOG_HELD_BACK_MAX 64
void pgw_log_held_back(uint64_t unsaid, char out[PGW_LOG_HELD_BACK_MAX]);

/* The line of `what` that pgw_log_tell (or _later, _stopping) said is to
 * be written, newline ended, in `out`, or "" for PGW_LOG_QUIET:
 * "pointsgw: WHAT: WHY", with pgw_log_held_back's words when lines were
 * held back (never "(0 more ...)"), or "pointsgw: WHAT works again (N
 * more failed since the last line)", without the parenthesis for N 0. WHAT is cut at 200 bytes, WHY
 * at 700. One wording for the owners that write both (the notifier, and server/expire.c's for the
 * sweeps and WeChat's lines). */
#define PGW_LOG_LINE_MAX 1024
void pgw_log_line(pgw_log_say said, const char *what, const char *why, uint64_t unsaid,
                  char out[PGW_LOG_LINE_MAX]);

#endif
