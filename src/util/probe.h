/*
 * probe.h - open addressing with linear probing: emptying a slot without
 * tombstones. The entries of the run after the emptied slot each either
 * stay or move back into the hole, which then moves to where they were,
 * so that every entry stays reachable from its home slot. The tables
 * that use it keep their own slots and their own hashes (peer_limit.c,
 * http.c's waiting table); this is the one decision they share.
 */
#ifndef PGW_UTIL_PROBE_H
#define PGW_UTIL_PROBE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Whether an entry found at slot `j`, in the run after the hole at slot
 * `i`, stays where it is: its home slot `home` lies cyclically within
 * (i, j], so moving it into the hole would put it before its home, where
 * a probe from its home would not find it. All three are slot indexes of
 * one table, i != j.
 */
bool pgw_probe_stays(size_t home, size_t i, size_t j);

#endif
