/*
 * rng.h - the randomised tests' generator: SplitMix64, so a seed printed by
 * a failing run reproduces it exactly on any machine.
 */
#ifndef PGW_TESTS_RNG_H
#define PGW_TESTS_RNG_H

#include <stdint.h>

static inline uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* A number in lo..hi (hi >= lo). */
static inline int64_t rng_pick(uint64_t *state, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rng_next(state) % (uint64_t)(hi - lo + 1));
}

#endif
