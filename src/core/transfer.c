/*
 * transfer.c - see transfer.h.
 */
#include "transfer.h"

#include "assertions.h"
#include "digest.h"

#include <stdio.h>
#include <string.h>

const uint8_t PGW_GENESIS_HASH[PGW_HASH_LEN] = {0};

static const char *const KIND_NAMES[] = {
    [PGW_TRANSFER_EARN] = "earn",     [PGW_TRANSFER_REVERSAL] = "reversal",
    [PGW_TRANSFER_REDEEM] = "redeem", [PGW_TRANSFER_EXPIRE] = "expire",
    [PGW_TRANSFER_IMPORT] = "import", [PGW_TRANSFER_MERGE] = "merge",
    [PGW_TRANSFER_ADJUST] = "adjust",
};

const char *pgw_transfer_kind_name(pgw_transfer_kind kind)
{
    if (kind < PGW_TRANSFER_KIND_MIN || kind > PGW_TRANSFER_KIND_MAX)
        return "?";
    return KIND_NAMES[kind];
}

int pgw_transfer_kind_parse(const char *name, pgw_transfer_kind *out)
{
    for (int k = PGW_TRANSFER_KIND_MIN; k <= PGW_TRANSFER_KIND_MAX; k++) {
        if (strcmp(KIND_NAMES[k], name) == 0) {
            *out = (pgw_transfer_kind)k;
            return PGW_OK;
        }
    }
    return PGW_EINVAL;
}

/* true when the array of `cap` bytes holds a NUL-terminated string. */
#define TERMINATED(array) (memchr((array), '\0', sizeof(array)) != NULL)

int pgw_transfer_validate(const pgw_transfer *t, pgw_err *err)
{
    if (t->id < 1)
        return pgw_err_set(err, PGW_EINVAL, "transfer id must be >= 1, got %lld", (long long)t->id);
    if (t->kind < PGW_TRANSFER_KIND_MIN || t->kind > PGW_TRANSFER_KIND_MAX)
        return pgw_err_set(err, PGW_EINVAL, "transfer %lld: unknown kind %d", (long long)t->id,
                           (int)t->kind);
    if (t->points < 1 || t->points > PGW_POINTS_MAX)
        return pgw_err_set(err, PGW_EINVAL, "transfer %lld: points must be 1..%lld, got %lld",
                           (long long)t->id, (long long)PGW_POINTS_MAX, (long long)t->points);
    if (!TERMINATED(t->idem_key) || !TERMINATED(t->debit) || !TERMINATED(t->credit) ||
        !TERMINATED(t->shop_id) || !TERMINATED(t->channel) || !TERMINATED(t->reference) ||
        !TERMINATED(t->breakdown))
        return pgw_err_set(err, PGW_EINVAL, "transfer %lld: a text field is not terminated",
                           (long long)t->id);
    if (t->debit[0] == '\0' || t->credit[0] == '\0')
        return pgw_err_set(err, PGW_EINVAL, "transfer %lld: debit and credit accounts are required",
                           (long long)t->id);
    if (strcmp(t->debit, t->credit) == 0)
        return pgw_err_set(err, PGW_EINVAL, "transfer %lld: debit and credit are both %s",
                           (long long)t->id, t->debit);
    if (t->recorded_at_us < 0)
        return pgw_err_set(err, PGW_EINVAL, "transfer %lld: recorded_at_us is negative",
                           (long long)t->id);
    return PGW_OK;
}

/* A bounded big-endian writer: the caller checked the total fits. */
typedef struct writer {
    uint8_t *buf;
    size_t len;
    size_t cap;
} writer;

static void put_bytes(writer *w, const void *p, size_t n)
{
    PGW_ASSERT(w->len + n <= w->cap);
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void put_u64(writer *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 7; i >= 0; i--) {
        b[i] = (uint8_t)(v & 0xFF);
        v >>= 8;
    }
    put_bytes(w, b, sizeof(b));
}

static void put_str(writer *w, const char *s)
{
    size_t n = strlen(s);
    PGW_ASSERT(n <= UINT32_MAX);
    uint8_t b[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    put_bytes(w, b, sizeof(b));
    put_bytes(w, s, n);
}

int pgw_transfer_encode(const pgw_transfer *t, uint8_t *buf, size_t cap, size_t *len, pgw_err *err)
{
    int rc = pgw_transfer_validate(t, err);
    if (rc != PGW_OK)
        return rc;
    if (cap < PGW_TRANSFER_ENCODED_MAX)
        return pgw_err_set(err, PGW_EINVAL, "encoding buffer of %zu bytes, %d needed", cap,
                           (int)PGW_TRANSFER_ENCODED_MAX);
    writer w = {buf, 0, cap};
    const uint8_t version = 1, kind = (uint8_t)t->kind;
    put_bytes(&w, "PGWT", 4);
    put_bytes(&w, &version, 1);
    put_u64(&w, (uint64_t)t->id);
    put_bytes(&w, &kind, 1);
    put_str(&w, t->idem_key);
    put_bytes(&w, t->fingerprint, PGW_HASH_LEN);
    put_str(&w, t->debit);
    put_str(&w, t->credit);
    put_u64(&w, (uint64_t)t->points);
    put_str(&w, t->shop_id);
    put_str(&w, t->channel);
    put_u64(&w, (uint64_t)t->occurred_at);
    put_u64(&w, (uint64_t)t->recorded_at_us);
    put_str(&w, t->reference);
    put_str(&w, t->breakdown);
    PGW_ASSERT(w.len <= PGW_TRANSFER_ENCODED_MAX);
    *len = w.len;
    return PGW_OK;
}

/* SHA-256(prev_hash || canonical bytes) of t, whose prev_hash is set. */
static int hash_transfer(const pgw_transfer *t, uint8_t out[PGW_HASH_LEN], pgw_err *err)
{
    uint8_t buf[PGW_HASH_LEN + PGW_TRANSFER_ENCODED_MAX];
    size_t len = 0;
    int rc = pgw_transfer_encode(t, buf + PGW_HASH_LEN, sizeof(buf) - PGW_HASH_LEN, &len, err);
    if (rc != PGW_OK)
        return rc;
    memcpy(buf, t->prev_hash, PGW_HASH_LEN);
    pgw_sha256(buf, PGW_HASH_LEN + len, out);
    return PGW_OK;
}

int pgw_transfer_link(pgw_transfer *t, const uint8_t prev[PGW_HASH_LEN], pgw_err *err)
{
    memcpy(t->prev_hash, prev, PGW_HASH_LEN);
    return hash_transfer(t, t->hash, err);
}

void pgw_hash_hex(const uint8_t hash[PGW_HASH_LEN], char *out, size_t cap)
{
    PGW_ASSERT(cap >= 2 * PGW_HASH_LEN + 1);
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < PGW_HASH_LEN; i++) {
        out[2 * i] = digits[hash[i] >> 4];
        out[2 * i + 1] = digits[hash[i] & 0x0F];
    }
    out[2 * PGW_HASH_LEN] = '\0';
}

/* Checks one entry against the running hash and id; fills err when broken. */
static int verify_one(const pgw_transfer *t, const uint8_t running[PGW_HASH_LEN], int64_t prev_id,
                      pgw_err *err)
{
    char a[2 * PGW_HASH_LEN + 1], b[2 * PGW_HASH_LEN + 1];
    if (t->id != prev_id + 1)
        return pgw_err_set(err, PGW_ECONFLICT, "transfer %lld: expected id %lld (gap or reorder)",
                           (long long)t->id, (long long)prev_id + 1);
    if (memcmp(t->prev_hash, running, PGW_HASH_LEN) != 0) {
        pgw_hash_hex(t->prev_hash, a, sizeof(a));
        pgw_hash_hex(running, b, sizeof(b));
        return pgw_err_set(err, PGW_ECONFLICT,
                           "transfer %lld: prev_hash %.12s… but chain has %.12s…", (long long)t->id,
                           a, b);
    }
    uint8_t computed[PGW_HASH_LEN];
    pgw_err inner;
    if (hash_transfer(t, computed, &inner) != PGW_OK)
        return pgw_err_set(err, PGW_ECONFLICT, "%s", inner.msg);
    if (memcmp(computed, t->hash, PGW_HASH_LEN) != 0) {
        pgw_hash_hex(t->hash, a, sizeof(a));
        pgw_hash_hex(computed, b, sizeof(b));
        return pgw_err_set(err, PGW_ECONFLICT,
                           "transfer %lld: hash mismatch (stored %.12s…, computed %.12s…)",
                           (long long)t->id, a, b);
    }
    return PGW_OK;
}

int pgw_chain_verify(const pgw_transfer *transfers, size_t n, const uint8_t prev[PGW_HASH_LEN],
                     int64_t prev_id, uint8_t last_out[PGW_HASH_LEN], size_t *bad_index,
                     pgw_err *err)
{
    uint8_t running[PGW_HASH_LEN];
    memcpy(running, prev, PGW_HASH_LEN);
    for (size_t i = 0; i < n; i++) {
        int rc = verify_one(&transfers[i], running, prev_id, err);
        if (rc != PGW_OK) {
            if (bad_index != NULL)
                *bad_index = i;
            return rc;
        }
        memcpy(running, transfers[i].hash, PGW_HASH_LEN);
        prev_id = transfers[i].id;
    }
    if (last_out != NULL)
        memcpy(last_out, running, PGW_HASH_LEN);
    return PGW_OK;
}
