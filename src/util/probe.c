/*
 * probe.c - see probe.h.
 */
#include "util/probe.h"

bool pgw_probe_stays(size_t home, size_t i, size_t j)
{
    if (i < j) /* the run does not wrap: (i, j] */
        return home > i && home <= j;
    return home > i || home <= j; /* it wraps past the table's end */
}
