/*
 * peer_limit.h - connections held by each client address, bounded.
 *
 * Without a bound, one client that opens connections and sends a request
 * on each within every http.keepalive_timeout_s holds them all, up to the
 * open-files limit, and then nobody else is served. The service thread
 * counts each accepted connection against its peer's address and refuses
 * one past http.max_connections_per_address.
 *
 * An IPv6 address counts by its /64: one phone or one host is handed a
 * whole /64 and may connect from any address in it. An IPv4 address (or
 * an IPv4-mapped IPv6 one) counts alone.
 *
 * The table is allocated once, at start, for PGW_PEER_ADDRESSES_MAX
 * addresses at once; no connection allocates. Past that many addresses a
 * connection is let in uncounted (PGW_PEER_UNCOUNTED): the open-files
 * limit still bounds them, and a gateway with that many clients at once
 * is not one client's to fill.
 *
 * No I/O, not thread-safe: the service thread owns it.
 */
#ifndef PGW_SERVER_PEER_LIMIT_H
#define PGW_SERVER_PEER_LIMIT_H

#include "core/error.h"
#include "util/netaddr.h"

#include <stddef.h>
#include <stdint.h>

#define PGW_PEER_ADDRESSES_MAX   65536 /* addresses counted at once */
#define PGW_PEER_PER_ADDRESS_MAX 65536 /* the configuration's bound on the limit */

typedef struct pgw_peer_limit pgw_peer_limit;

/* A table for `per_address` connections an address (1..PGW_PEER_PER_ADDRESS_MAX);
 * `seed` scatters the addresses (random at start: a client cannot choose
 * addresses that collide). Freed with pgw_peer_limit_free. */
int pgw_peer_limit_new(uint32_t per_address, uint64_t seed, pgw_peer_limit **out, pgw_err *err);
void pgw_peer_limit_free(pgw_peer_limit *l);

typedef enum pgw_peer_verdict {
    PGW_PEER_TAKEN,     /* counted: release it once, when it closes */
    PGW_PEER_OVER,      /* the address holds its limit: refuse; nothing counted */
    PGW_PEER_UNCOUNTED, /* no room to count a new address: let in, never released */
} pgw_peer_verdict;

/* One more connection from `addr` (a full-length prefix: pgw_address_parse). */
pgw_peer_verdict pgw_peer_limit_take(pgw_peer_limit *l, const pgw_prefix *addr);

/* A connection that pgw_peer_limit_take counted (PGW_PEER_TAKEN) closed. */
void pgw_peer_limit_release(pgw_peer_limit *l, const pgw_prefix *addr);

/* Connections counted for `addr`'s address (its /64 for IPv6). */
uint32_t pgw_peer_limit_held(const pgw_peer_limit *l, const pgw_prefix *addr);

/* Addresses counted now. */
size_t pgw_peer_limit_addresses(const pgw_peer_limit *l);

#endif
