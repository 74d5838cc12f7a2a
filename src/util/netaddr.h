/*
 * netaddr.h - IP addresses and prefixes (CIDR) as text, for the proxies
 * whose X-Forwarded-For the server believes (config http.trusted_proxies).
 */
#ifndef PGW_UTIL_NETADDR_H
#define PGW_UTIL_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Longest address or prefix text taken ("ffff:...:ffff/128" and spaces). */
#define PGW_NETADDR_TEXT_MAX 63

/* An IPv4 or IPv6 prefix; an address is a prefix of its full length.
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are kept as IPv4. */
typedef struct pgw_prefix {
    uint8_t bytes[16];
    uint8_t len;  /* address bytes: 4 or 16 */
    uint8_t bits; /* prefix length: 0..8 * len */
} pgw_prefix;

/* Parses "10.0.0.0/8", "192.168.1.7", "fd00::/8" or "::1". A prefix's
 * address must have no bits past its length ("10.0.0.1/8" is refused:
 * it says something else than it means). */
int pgw_prefix_parse(const char *text, pgw_prefix *out, pgw_err *err);

/* Whether the address `text` (no prefix length) parses; *out its prefix. */
bool pgw_address_parse(const char *text, pgw_prefix *out);

/* The peer of connected socket `fd` (getpeername), as pgw_address_parse
 * makes it; false when it has none (reset already) or is not IP. */
bool pgw_address_of_peer(int fd, pgw_prefix *out);

/* Whether address `a` (a full-length prefix) is inside any of prefixes[0..n). */
bool pgw_prefix_contains(const pgw_prefix *prefixes, size_t n, const pgw_prefix *a);

#endif
