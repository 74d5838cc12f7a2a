/*
 * arith.h - overflow-checked integer arithmetic for points and money.
 *
 * Points and fen are int64_t; rates and multipliers are basis points
 * (10000 = 1x). No floating point ever touches them. Every helper returns
 * PGW_OK or PGW_ERANGE and writes its result only on success, so a caller
 * can chain them and fail with a message of its own.
 */
#ifndef PGW_CORE_ARITH_H
#define PGW_CORE_ARITH_H

#include "error.h"

#include <stdint.h>

#define PGW_BP_ONE 10000 /* basis points in 1x */

static inline int pgw_add(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return PGW_ERANGE;
    *out = r;
    return PGW_OK;
}

static inline int pgw_sub(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return PGW_ERANGE;
    *out = r;
    return PGW_OK;
}

static inline int pgw_mul(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return PGW_ERANGE;
    *out = r;
    return PGW_OK;
}

/*
 * floor(a * b / d) for a >= 0, b >= 0, d > 0, computed in 128 bits so the
 * product cannot overflow; PGW_ERANGE if the quotient does not fit int64.
 * This is the one place proportional figures are computed: multipliers
 * (d = 10000), refund reversals floor(P*R/A), conversion rates.
 */
static inline int pgw_mul_div_floor(int64_t a, int64_t b, int64_t d, int64_t *out)
{
    if (a < 0 || b < 0 || d <= 0)
        return PGW_ERANGE;
    __int128 q = ((__int128)a * (__int128)b) / (__int128)d;
    if (q > (__int128)INT64_MAX)
        return PGW_ERANGE;
    *out = (int64_t)q;
    return PGW_OK;
}

/* floor(value * bp / 10000) for value >= 0 and bp >= 0. */
static inline int pgw_mul_bp(int64_t value, int64_t bp, int64_t *out)
{
    return pgw_mul_div_floor(value, bp, PGW_BP_ONE, out);
}

static inline int64_t pgw_min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static inline int64_t pgw_max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

#endif
