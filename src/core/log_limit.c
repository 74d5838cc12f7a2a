/*
 * log_limit.c - see log_limit.h.
 */
#include "log_limit.h"

#include "assertions.h"

#include <stdio.h>
#include <string.h>

bool pgw_log_due(pgw_log_limit *l, int64_t now_s, const char *cause, uint64_t *unsaid)
{
    PGW_ASSERT(l != NULL && cause != NULL && unsaid != NULL && now_s > 0);
    PGW_ASSERT(l->said >= 0 && l->said <= PGW_LOG_LINES_MAX);
    if (l->minute_s == 0 || now_s - l->minute_s >= PGW_LOG_EVERY_S) {
        l->minute_s = now_s;
        l->said = 0;
    }
    l->through = false;
    bool news = strncmp(cause, l->last, sizeof(l->last) - 1) != 0;
    if (l->said > 0 && (!news || l->said >= PGW_LOG_LINES_MAX)) {
        l->unsaid++;
        return false;
    }
    *unsaid = l->unsaid;
    l->unsaid = 0;
    l->said++;
    snprintf(l->last, sizeof(l->last), "%s", cause);
    return true;
}

bool pgw_log_idle(const pgw_log_limit *l)
{
    PGW_ASSERT(l != NULL);
    return l->minute_s == 0;
}

pgw_log_say pgw_log_stopping(pgw_log_limit *l, uint64_t *unsaid)
{
    PGW_ASSERT(l != NULL && unsaid != NULL);
    PGW_ASSERT(!l->through || l->minute_s != 0);
    if (!l->through)
        return PGW_LOG_QUIET;
    *unsaid = l->unsaid;
    *l = (pgw_log_limit){0};
    return PGW_LOG_WORKS;
}

pgw_log_say pgw_log_later(pgw_log_limit *l, int64_t now_s, uint64_t *unsaid)
{
    PGW_ASSERT(l != NULL && unsaid != NULL && now_s > 0);
    if (now_s - l->minute_s < PGW_LOG_EVERY_S)
        return PGW_LOG_QUIET;
    return pgw_log_stopping(l, unsaid);
}

pgw_log_say pgw_log_tell(pgw_log_limit *l, int64_t now_s, const char *failed, uint64_t *unsaid)
{
    PGW_ASSERT(l != NULL && unsaid != NULL && now_s > 0);
    if (failed != NULL)
        return pgw_log_due(l, now_s, failed, unsaid) ? PGW_LOG_FAILED : PGW_LOG_QUIET;
    l->through = l->minute_s != 0; /* nothing told: nothing to say */
    return pgw_log_later(l, now_s, unsaid);
}

void pgw_log_held_back(uint64_t unsaid, char out[PGW_LOG_HELD_BACK_MAX])
{
    out[0] = '\0';
    if (unsaid > 0)
        snprintf(out, PGW_LOG_HELD_BACK_MAX, " (%llu more since the last such line)",
                 (unsigned long long)unsaid);
}

/* The cuts leave the line its newline: 10 + 200 + 2 + 700 + 63 + 1 < 1024. */
PGW_STATIC_ASSERT(PGW_LOG_HELD_BACK_MAX + 913 < PGW_LOG_LINE_MAX, "a line whole");

void pgw_log_line(pgw_log_say said, const char *what, const char *why, uint64_t unsaid,
                  char out[PGW_LOG_LINE_MAX])
{
    PGW_ASSERT(what != NULL && out != NULL && (said != PGW_LOG_FAILED || why != NULL));
    char held_back[PGW_LOG_HELD_BACK_MAX];
    pgw_log_held_back(unsaid, held_back);
    out[0] = '\0';
    if (said == PGW_LOG_WORKS && unsaid == 0) /* nothing failed since the failure's line */
        snprintf(out, PGW_LOG_LINE_MAX, "pointsgw: %.200s works again\n", what);
    else if (said == PGW_LOG_WORKS)
        snprintf(out, PGW_LOG_LINE_MAX,
                 "pointsgw: %.200s works again (%llu more failed since the last line)\n", what,
                 (unsigned long long)unsaid);
    else if (said == PGW_LOG_FAILED)
        snprintf(out, PGW_LOG_LINE_MAX, "pointsgw: %.200s: %.700s%s\n", what, why, held_back);
}
