/*
 * clock.h - the monotonic clock in microseconds: for waits, backoffs and
 * latency (never for times that are stored or shown, which are wall time).
 */
#ifndef PGW_UTIL_CLOCK_H
#define PGW_UTIL_CLOCK_H

#include <stdint.h>

int64_t pgw_monotonic_us(void);
/* The monotonic clock in whole seconds, at least 1: the `now_s` that
 * core/log_limit.h pgw_log_due takes (> 0), for every limited log line. */
int64_t pgw_monotonic_s(void);

#endif
