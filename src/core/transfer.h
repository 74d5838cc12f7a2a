/*
 * transfer.h - one entry of the transfer log, its canonical bytes, and the
 * SHA-256 hash chain that makes the log tamper-evident.
 *
 * A transfer moves `points` (> 0) from its debit account to its credit
 * account; balances are credits minus debits, so the sum of all balances
 * is always zero. The log is append-only: corrections are new transfers.
 *
 * Chain: hash = SHA-256(prev_hash || canonical bytes); the first entry's
 * prev_hash is 32 zero bytes (PGW_GENESIS_HASH). Every field of the
 * transfer except `hash` itself is covered, so changing any stored value,
 * reordering, inserting or deleting an entry breaks the chain from there on.
 *
 * Canonical bytes (version 1), all integers big-endian:
 *   "PGWT" | u8 version=1 | i64 id | u8 kind | str idem_key |
 *   32 fingerprint | str debit | str credit | i64 points | str shop_id |
 *   str channel | i64 occurred_at | i64 recorded_at_us | str reference |
 *   str breakdown
 * where str = u32 length + bytes (no terminator). Length prefixes make the
 * encoding injective: no two different transfers share bytes. prev_hash is
 * not part of the canonical bytes; it is hashed in front of them.
 */
#ifndef PGW_CORE_TRANSFER_H
#define PGW_CORE_TRANSFER_H

#include "bounds.h"
#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_HASH_LEN 32
/* Text of the rules a transfer carries: "format:retail=128,tier:gold=12". */
#define PGW_BREAKDOWN_TEXT_MAX 1024
/* Upper bound of pgw_transfer_encode's output. */
#define PGW_TRANSFER_ENCODED_MAX                                                                   \
    (4 + 1 + 8 + 1 + 4 + PGW_IDEM_KEY_MAX + PGW_HASH_LEN + 2 * (4 + PGW_ACCOUNT_MAX) + 8 +         \
     2 * (4 + PGW_ID_MAX) + 8 + 8 + 4 + PGW_REFERENCE_MAX + 4 + PGW_BREAKDOWN_TEXT_MAX)

typedef enum pgw_transfer_kind {
    PGW_TRANSFER_EARN = 1, /* points issued: shop/mall/behaviour -> member */
    PGW_TRANSFER_REVERSAL, /* refund of an earn: member -> original funder */
    PGW_TRANSFER_REDEEM,   /* captured hold or redemption: member -> shop:<id>:redeemed */
    PGW_TRANSFER_EXPIRE,   /* what was left of a lot: member -> system:expired */
    PGW_TRANSFER_IMPORT,   /* legacy shop balance: import:<shop> -> member */
    PGW_TRANSFER_MERGE,    /* member merged into another: member:old -> member:survivor */
    PGW_TRANSFER_ADJUST,   /* manual correction: system:adjustments <-> member */
} pgw_transfer_kind;

#define PGW_TRANSFER_KIND_MIN PGW_TRANSFER_EARN
#define PGW_TRANSFER_KIND_MAX PGW_TRANSFER_ADJUST

/* The channel of the gateway's own transfers (expiry, identity binds): no
 * client's event, batch row or file may take it (pgw_event_check_channel),
 * so that finance reading a channel never finds shop sales among them. */
#define PGW_CHANNEL_SYSTEM "system"

typedef struct pgw_transfer {
    int64_t id; /* sequence number: 1, 2, 3, ... without gaps */
    pgw_transfer_kind kind;
    char idem_key[PGW_IDEM_KEY_MAX + 1]; /* the command that wrote it */
    uint8_t fingerprint[PGW_HASH_LEN];   /* SHA-256 of the canonical request */
    char debit[PGW_ACCOUNT_MAX + 1];
    char credit[PGW_ACCOUNT_MAX + 1];
    int64_t points;                        /* 1..PGW_POINTS_MAX */
    char shop_id[PGW_ID_MAX + 1];          /* "" when none */
    char channel[PGW_ID_MAX + 1];          /* "store", "wechat_mp", ... or PGW_CHANNEL_SYSTEM */
    int64_t occurred_at;                   /* unix seconds, when it happened */
    int64_t recorded_at_us;                /* unix microseconds, when it was logged */
    char reference[PGW_REFERENCE_MAX + 1]; /* receipt no., original event, lot id */
    char breakdown[PGW_BREAKDOWN_TEXT_MAX + 1];
    uint8_t prev_hash[PGW_HASH_LEN];
    uint8_t hash[PGW_HASH_LEN];
} pgw_transfer;

extern const uint8_t PGW_GENESIS_HASH[PGW_HASH_LEN];

const char *pgw_transfer_kind_name(pgw_transfer_kind kind); /* "earn", "reversal", ... */
/* "earn" -> PGW_TRANSFER_EARN; PGW_EINVAL for an unknown name. */
int pgw_transfer_kind_parse(const char *name, pgw_transfer_kind *out);

/*
 * Checks a transfer's fields against their bounds: id >= 1, known kind,
 * points 1..PGW_POINTS_MAX, non-empty debit != credit, strings
 * NUL-terminated within their arrays. PGW_EINVAL with a message naming
 * the field otherwise.
 */
int pgw_transfer_validate(const pgw_transfer *t, pgw_err *err);

/*
 * Writes the canonical bytes of `t` (everything but prev_hash and hash) into buf and
 * sets *len. buf must hold PGW_TRANSFER_ENCODED_MAX bytes; PGW_EINVAL if `t`
 * does not validate.
 */
int pgw_transfer_encode(const pgw_transfer *t, uint8_t *buf, size_t cap, size_t *len, pgw_err *err);

/*
 * Links `t` after the entry whose hash is `prev`: copies prev into
 * t->prev_hash and sets t->hash. PGW_EINVAL if `t` does not validate.
 */
int pgw_transfer_link(pgw_transfer *t, const uint8_t prev[PGW_HASH_LEN], pgw_err *err);

/*
 * Recomputes the chain over n transfers that follow an entry with hash
 * `prev` (PGW_GENESIS_HASH for the start of the log) and whose ids follow
 * `prev_id` (0 at the start). On success returns 0 and copies the last hash
 * into last_out (when not NULL). On the first broken entry returns
 * PGW_ECONFLICT, sets *bad_index, and names the entry (id) and what is
 * wrong (id gap, prev_hash mismatch, hash mismatch, invalid field) in err.
 * Usable over a stream: call again per page with the last hash and id.
 */
int pgw_chain_verify(const pgw_transfer *transfers, size_t n, const uint8_t prev[PGW_HASH_LEN],
                     int64_t prev_id, uint8_t last_out[PGW_HASH_LEN], size_t *bad_index,
                     pgw_err *err);

/* Lower-case hex of a hash into out (cap >= 2 * PGW_HASH_LEN + 1). */
void pgw_hash_hex(const uint8_t hash[PGW_HASH_LEN], char *out, size_t cap);

#endif
