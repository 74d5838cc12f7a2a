/*
 * clock.h - the monotonic clock in microseconds: for waits, backoffs and
 * latency (never for times that are stored or shown, which are wall time).
 */
#ifndef PGW_UTIL_CLOCK_H
#define PGW_UTIL_CLOCK_H

#include <stdint.h>

int64_t pgw_monotonic_us(void);

#endif
