/*
 * env.c - see env.h.
 */
#include "env.h"

#include "core/assertions.h"

#include <stdio.h>
#include <stdlib.h>

bool pgw_env_all_set(const char *const *vars, size_t n, char *unset, size_t cap)
{
    PGW_ASSERT(cap > 0);
    size_t used = 0;
    bool all = true;
    unset[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *value = vars[i][0] ? getenv(vars[i]) : NULL;
        if (value != NULL && value[0] != '\0')
            continue;
        int k = snprintf(unset + used, cap - used, "%s%s", all ? "" : ", ",
                         vars[i][0] ? vars[i] : "(no variable named)");
        /* snprintf says what it would have written: the end is where it stopped. */
        used = k < 0 ? used : used + (size_t)k < cap ? used + (size_t)k : cap - 1;
        all = false;
    }
    return all;
}
