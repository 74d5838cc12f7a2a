/*
 * clock.c - see clock.h.
 */
#include "clock.h"

#include <time.h>

int64_t pgw_monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t pgw_monotonic_s(void)
{
    int64_t s = pgw_monotonic_us() / 1000000;
    return s > 0 ? s : 1;
}
