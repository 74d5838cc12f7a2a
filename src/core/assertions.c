/*
 * assertions.c - the one place an assertion failure is reported. Writing to
 * stderr here is the only I/O src/core does, and only on the way to abort().
 */
#include "assertions.h"

#include <stdio.h>
#include <stdlib.h>

_Noreturn void pgw_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}
