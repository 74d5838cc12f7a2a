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
