/*
 * peer_limit.c - connections held by each client address, bounded.
 *
 * An open-addressing table with linear probing, twice as many slots as
 * addresses it counts, so that a probe stays short; a slot whose count
 * falls to 0 is emptied by shifting the run after it back (no tombstones
 * to sweep). Keys are an address's first 4 (IPv4) or 8 (IPv6: its /64)
 * bytes and its length.
 */
#include "server/peer_limit.h"

#include "core/assertions.h"
#include "util/probe.h"

#include <stdlib.h>
#include <string.h>

#define SLOTS      (2 * PGW_PEER_ADDRESSES_MAX) /* a power of two */
#define PROBES_MAX 128                          /* a longer run: the address is let in uncounted */

typedef struct {
    uint64_t bits; /* the address's first 4 or 8 bytes */
    uint32_t held; /* connections; 0: the slot is empty */
    uint8_t len;   /* 4 or 16, as pgw_prefix */
} slot;

struct pgw_peer_limit {
    uint32_t per_address;
    uint64_t seed;
    size_t used;
    slot slots[SLOTS];
};

_Static_assert((SLOTS & (SLOTS - 1)) == 0, "SLOTS is a power of two");

static slot key_of(const pgw_prefix *addr)
{
    PGW_ASSERT(addr->len == 4 || addr->len == 16);
    slot k = {.len = addr->len};
    size_t n = addr->len == 4 ? 4 : 8; /* IPv6: the /64 */
    for (size_t i = 0; i < n; i++)
        k.bits = k.bits << 8 | addr->bytes[i];
    return k;
}

/* splitmix64's finaliser over the key and the secret seed. */
static size_t home_of(const pgw_peer_limit *l, const slot *k)
{
    uint64_t x = k->bits ^ l->seed ^ ((uint64_t)k->len << 56);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return (size_t)(x & (SLOTS - 1));
}

static bool same(const slot *a, const slot *b)
{
    return a->bits == b->bits && a->len == b->len;
}

/* The index of the slot holding `k`, or of the empty one where it would
 * go; SLOTS when the run from its home is longer than PROBES_MAX. */
static size_t find(const pgw_peer_limit *l, const slot *k)
{
    size_t at = home_of(l, k);
    for (size_t probe = 0; probe < PROBES_MAX; probe++) {
        size_t i = (at + probe) & (SLOTS - 1);
        if (l->slots[i].held == 0 || same(&l->slots[i], k))
            return i;
    }
    return SLOTS;
}

int pgw_peer_limit_new(uint32_t per_address, uint64_t seed, pgw_peer_limit **out, pgw_err *err)
{
    *out = NULL;
    if (per_address < 1 || per_address > PGW_PEER_PER_ADDRESS_MAX)
        return pgw_err_set(err, PGW_EINVAL, "connections per address must be 1..%d",
                           PGW_PEER_PER_ADDRESS_MAX);
    pgw_peer_limit *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the connections per address");
    l->per_address = per_address;
    l->seed = seed;
    *out = l;
    return PGW_OK;
}

void pgw_peer_limit_free(pgw_peer_limit *l)
{
    free(l);
}

pgw_peer_verdict pgw_peer_limit_take(pgw_peer_limit *l, const pgw_prefix *addr)
{
    slot k = key_of(addr);
    size_t i = find(l, &k);
    slot *s = i < SLOTS ? &l->slots[i] : NULL;
    if (s != NULL && s->held > 0) {
        if (s->held >= l->per_address)
            return PGW_PEER_OVER;
        s->held++;
        return PGW_PEER_TAKEN;
    }
    if (s == NULL || l->used >= PGW_PEER_ADDRESSES_MAX)
        return PGW_PEER_UNCOUNTED;
    *s = k;
    s->held = 1;
    l->used++;
    return PGW_PEER_TAKEN;
}

/* Empties slot `i`, shifting back the run after it (util/probe.h). */
static void empty_slot(pgw_peer_limit *l, size_t i)
{
    for (size_t j = (i + 1) & (SLOTS - 1); l->slots[j].held > 0; j = (j + 1) & (SLOTS - 1)) {
        if (!pgw_probe_stays(home_of(l, &l->slots[j]), i, j)) {
            l->slots[i] = l->slots[j];
            i = j;
        }
    }
    l->slots[i] = (slot){0};
}

void pgw_peer_limit_release(pgw_peer_limit *l, const pgw_prefix *addr)
{
    slot k = key_of(addr);
    size_t i = find(l, &k);
    /* released once, after a take that counted it */
    PGW_ASSERT(i < SLOTS && l->slots[i].held > 0);
    if (--l->slots[i].held > 0)
        return;
    PGW_ASSERT(l->used > 0);
    l->used--;
    empty_slot(l, i);
}

uint32_t pgw_peer_limit_held(const pgw_peer_limit *l, const pgw_prefix *addr)
{
    slot k = key_of(addr);
    size_t i = find(l, &k);
    return i < SLOTS ? l->slots[i].held : 0;
}

size_t pgw_peer_limit_addresses(const pgw_peer_limit *l)
{
    return l->used;
}
