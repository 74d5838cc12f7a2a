/*
 * auth.c - see auth.h.
 *
 * The nonce cache is an open-addressing table of (hash of key and nonce,
 * until) sized once. Each key has its own nonces: two tills numbering
 * their requests 1, 2, 3... must not refuse each other's. A nonce is kept until its request's
 * timestamp leaves the skew window (a replay after that is stale anyway); an entry past it counts
 * as free, so the table never needs sweeping. A nonce lies at most NONCE_PROBES slots from its
 * home, so that a table nearly full of live nonces costs a request a bounded probe, not a walk of
 * the whole table. When there is no room, signed requests are refused (PGW_EUNAVAILABLE) rather
 * than letting a replay in.
 */
#include "auth.h"

#include "core/assertions.h"
#include "core/civil.h"
#include "core/digest.h"
#include "core/transfer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Longest signed message: method, path and query, timestamp, nonce, body hash. */
#define PGW_SIGNED_MESSAGE_MAX 4096

typedef struct key_entry {
    uint8_t sha256[32];
    pgw_principal who;
} key_entry;

#define NONCE_PROBES 256

typedef struct nonce_slot {
    uint64_t hash; /* 0 = never used */
    int64_t until; /* its timestamp + the skew: stale after */
} nonce_slot;

typedef enum nonce_verdict { NONCE_NEW, NONCE_SEEN, NONCE_NO_ROOM } nonce_verdict;

struct pgw_auth {
    size_t n_keys;
    key_entry keys[PGW_KEYS_MAX];
    /* The keys' fingerprint (never 0): what a bearer's lookup is good for
     * (pgw_auth_resolve). Moves with the keys at a reload. */
    uint64_t table;
    /* The latest `now` a signature was checked at. Signatures are judged
     * by it, never by an earlier one: a request whose headers came before
     * a later request's (its body slow) or a clock stepped back would
     * otherwise find its nonce's slot already given to another while its
     * timestamp still passed, and a replay of it would be taken. */
    int64_t clock;
    /* Signed requests stamped at it or before are refused: a start after a
     * stop that kept no nonces (pgw_auth_restore_nonces) cannot tell them
     * from replays of the last run's, which took stamps of its second too. 0: none. */
    int64_t floor;
    nonce_slot nonces[PGW_NONCES_KEPT];
};

static void principal_from(const pgw_key_config *k, pgw_principal *who)
{
    memset(who, 0, sizeof(*who));
    snprintf(who->name, sizeof(who->name), "%s", k->name);
    who->require_signature = k->require_signature;
    if (strncmp(k->scope, "shop:", 5) == 0) {
        who->kind = PGW_SCOPE_SHOP;
        snprintf(who->scope_id, sizeof(who->scope_id), "%s", k->scope + 5);
    } else if (strncmp(k->scope, "channel:", 8) == 0) {
        who->kind = PGW_SCOPE_CHANNEL;
        snprintf(who->scope_id, sizeof(who->scope_id), "%s", k->scope + 8);
    } else if (strcmp(k->scope, "finance") == 0) {
        who->kind = PGW_SCOPE_FINANCE;
    } else {
        PGW_ASSERT(strcmp(k->scope, "admin") == 0); /* the config checked */
        who->kind = PGW_SCOPE_ADMIN;
    }
}

/* Keys README publishes, by their SHA-256: anyone may read them. */
static const struct published_key {
    const char *what;
    uint8_t sha256[32];
} PUBLISHED_KEYS[] = {
    /* "demo-admin-key-change-me": README's first curl, the example's key */
    {"published demo key", {0xc1, 0x4d, 0x7b, 0xde, 0xcf, 0x21, 0x88, 0x28, 0x9b, 0xf9, 0xd4,
                            0x36, 0x5a, 0x65, 0x0f, 0x7f, 0xdd, 0x6f, 0x26, 0xd9, 0xf1, 0x65,
                            0x6d, 0x41, 0x2e, 0xb4, 0x7b, 0x81, 0x76, 0xe3, 0x20, 0xed}},
    /* "pgw_0123...cdef": the key of README's worked signing example */
    {"published sample signing key",
     {0xa9, 0x9d, 0xb3, 0x03, 0xaa, 0xe5, 0x73, 0x50, 0x3f, 0xa9, 0x81,
      0x95, 0xa1, 0x8d, 0x40, 0x85, 0x99, 0x1e, 0x37, 0x16, 0x74, 0x86,
      0xde, 0x39, 0x81, 0xdc, 0xe4, 0xb3, 0x03, 0xb5, 0x38, 0xc0}},
};

/* A published key is refused outside development mode, and said aloud
 * within it: copied with the example, the demo key opened the admin scope
 * to anyone who read README (the operations review, from another host);
 * the signing example's was taken as any other (the thirty-fifth
 * session's walkthrough). */
static int check_not_demo(const pgw_config *cfg, const pgw_key_config *k, const uint8_t sha256[32],
                          pgw_err *err)
{
    const char *what = NULL;
    for (size_t i = 0; i < sizeof(PUBLISHED_KEYS) / sizeof(PUBLISHED_KEYS[0]); i++) {
        if (CRYPTO_memcmp(sha256, PUBLISHED_KEYS[i].sha256, 32) == 0)
            what = PUBLISHED_KEYS[i].what;
    }
    if (what == NULL)
        return PGW_OK;
    if (!cfg->security.development_mode)
        return pgw_err_set(err, PGW_EINVAL,
                           "key %s is README's %s: anyone may use it; make one "
                           "of your own with `pointsgw keys add` (it is taken only in "
                           "security.development_mode)",
                           k->name, what);
    fprintf(stderr,
            "pointsgw: warning: key %s is README's %s: anyone who can reach "
            "this server may use it; make one of your own with `pointsgw keys add`\n",
            k->name, what);
    return PGW_OK;
}

/* The fingerprint of a's keys, in order: the first 8 bytes of the SHA-256
 * of their hashes, never 0 (0 is a bearer not looked up). Two tables of
 * one fingerprint hold the same keys at the same places. */
static uint64_t table_of(const pgw_auth *a)
{
    uint8_t hashes[PGW_KEYS_MAX * 32], sha256[32];
    for (size_t i = 0; i < a->n_keys; i++)
        memcpy(hashes + i * 32, a->keys[i].sha256, 32);
    pgw_sha256(hashes, a->n_keys * 32, sha256);
    OPENSSL_cleanse(hashes, sizeof(hashes));
    uint64_t table;
    memcpy(&table, sha256, sizeof(table));
    return table != 0 ? table : 1;
}

int pgw_auth_new(const pgw_config *cfg, pgw_auth **out, pgw_err *err)
{
    *out = NULL;
    pgw_auth *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the key table");
    for (size_t i = 0; i < cfg->n_keys; i++) {
        const pgw_key_config *k = &cfg->keys[i];
        key_entry *e = &a->keys[a->n_keys];
        if (k->has_sha256) {
            memcpy(e->sha256, k->key_sha256, 32);
        } else {
            const char *value = getenv(k->key_env);
            if (value == NULL || value[0] == '\0') {
                /* The key cannot be presented; the others still work. */
                fprintf(stderr, "pointsgw: warning: key %s is disabled: %s is not set\n", k->name,
                        k->key_env);
                continue;
            }
            pgw_sha256(value, strlen(value), e->sha256);
        }
        int refused = check_not_demo(cfg, k, e->sha256, err);
        if (refused != PGW_OK) {
            pgw_auth_free(a);
            return refused;
        }
        /* The configuration refuses one hash or variable twice; two
         * variables may still hold one key. */
        for (size_t j = 0; j < a->n_keys; j++) {
            if (CRYPTO_memcmp(a->keys[j].sha256, e->sha256, 32) == 0) {
                int rc = pgw_err_set(err, PGW_EINVAL, "keys %s and %s are the same key",
                                     a->keys[j].who.name, k->name);
                pgw_auth_free(a);
                return rc;
            }
        }
        principal_from(k, &e->who);
        memcpy(e->who.secret, e->sha256, 32);
        a->n_keys++;
    }
    a->table = table_of(a);
    *out = a;
    return PGW_OK;
}

void pgw_auth_free(pgw_auth *a)
{
    /* The keys' hashes only: the nonces are no secret (each a hash's
     * 8 bytes), and 16 MiB written would fault in a reload's pages. */
    if (a != NULL)
        OPENSSL_cleanse(a->keys, sizeof(a->keys));
    free(a);
}

size_t pgw_auth_count(const pgw_auth *a)
{
    return a->n_keys;
}

void pgw_auth_take_keys(pgw_auth *a, pgw_auth *fresh)
{
    PGW_ASSERT(a != fresh);
    size_t n = a->n_keys > fresh->n_keys ? a->n_keys : fresh->n_keys;
    key_entry swap;
    for (size_t i = 0; i < n; i++) /* entries past a table's count are zeros */
        swap = a->keys[i], a->keys[i] = fresh->keys[i], fresh->keys[i] = swap;
    n = a->n_keys, a->n_keys = fresh->n_keys, fresh->n_keys = n;
    uint64_t table = a->table;
    a->table = fresh->table, fresh->table = table;
    OPENSSL_cleanse(&swap, sizeof(swap));
}

bool pgw_auth_still(const pgw_auth *a, const pgw_principal *who)
{
    for (size_t i = 0; i < a->n_keys; i++) {
        const pgw_principal *k = &a->keys[i].who;
        /* The secret is the key's SHA-256: the same key, not another of that name. */
        if (CRYPTO_memcmp(k->secret, who->secret, 32) == 0)
            return strcmp(k->name, who->name) == 0 && k->kind == who->kind &&
                   strcmp(k->scope_id, who->scope_id) == 0 &&
                   k->require_signature == who->require_signature;
    }
    return false;
}

/* Remembers the nonce hashed `h` (never 0) until `until`, at `now`. */
static nonce_verdict put_nonce(pgw_auth *a, uint64_t h, int64_t until, int64_t now)
{
    PGW_ASSERT(h != 0);
    size_t start = (size_t)(h % PGW_NONCES_KEPT);
    nonce_slot *free_slot = NULL;
    for (size_t probe = 0; probe < NONCE_PROBES; probe++) {
        nonce_slot *slot = &a->nonces[(start + probe) % PGW_NONCES_KEPT];
        bool live = slot->hash != 0 && now <= slot->until;
        if (live && slot->hash == h)
            return NONCE_SEEN;
        if (!live && free_slot == NULL)
            free_slot = slot;
        if (slot->hash == 0)
            break; /* the probe chain ends here */
    }
    if (free_slot == NULL)
        return NONCE_NO_ROOM;
    free_slot->hash = h;
    free_slot->until = until;
    return NONCE_NEW;
}

/* Remembers the nonce of `who`'s request stamped `ts` (within the window
 * at `now`). */
static nonce_verdict remember_nonce(pgw_auth *a, const pgw_principal *who, const char *nonce,
                                    int64_t ts, int64_t now)
{
    uint8_t keyed[32 + PGW_NONCE_MAX], digest[32];
    size_t nonce_len = strlen(nonce);
    PGW_ASSERT(nonce_len <= PGW_NONCE_MAX); /* check_signature checked */
    memcpy(keyed, who->secret, 32);
    memcpy(keyed + 32, nonce, nonce_len);
    pgw_sha256(keyed, 32 + nonce_len, digest);
    uint64_t h = 0;
    memcpy(&h, digest, sizeof(h));
    h |= 1; /* 0 marks a slot never used */
    return put_nonce(a, h, ts + PGW_SIGNATURE_SKEW_S, now);
}

/* A stamp `ts` out of the window at `now`: how far off, and which way (a
 * till's clock is what to fix). The distance in unsigned: any long long
 * is within 2^64 of a clock of today. In days from 7 digits of seconds
 * on, and "over 999999 days" past that (a stamp in milliseconds, say),
 * the log hiding 7 digits of either as a phone's. */
static int refuse_skew(long long ts, int64_t now, pgw_err *err)
{
    unsigned long long off = ts < now ? (unsigned long long)now - (unsigned long long)ts
                                      : (unsigned long long)ts - (unsigned long long)now;
    bool days = off >= 1000000, over = off / 86400 > 999999;
    char clock[PGW_RFC3339_MAX];
    pgw_format_utc(now, clock); /* civil.h: why UTC */
    return pgw_err_set(
        err, PGW_EUNAUTHORIZED,
        "%s: %s%llu %s %s the gateway's clock (%s), more than the %d s a signature "
        "is good for: check the client's clock",
        ts < now ? "stale X-PGW-Timestamp" : "X-PGW-Timestamp too far ahead", over ? "over " : "",
        over   ? 999999
        : days ? off / 86400
               : off,
        days ? "days" : "s", ts < now ? "behind" : "ahead of", clock, PGW_SIGNATURE_SKEW_S);
}

static int check_signature(pgw_auth *a, const pgw_principal *who, const pgw_signed_request *req,
                           int64_t now, pgw_err *err)
{
    if (now > a->clock)
        a->clock = now;
    now = a->clock;
    if (req->timestamp == NULL || req->nonce == NULL || req->signature == NULL)
        return pgw_err_set(err, PGW_EUNAUTHORIZED,
                           "key %s must sign: X-PGW-Timestamp, X-PGW-Nonce and X-PGW-Signature",
                           who->name);
    char *end = NULL;
    errno = 0;
    long long ts = strtoll(req->timestamp, &end, 10);
    if (end == req->timestamp || *end != '\0' || errno == ERANGE)
        return pgw_err_set(err, PGW_EUNAUTHORIZED,
                           "X-PGW-Timestamp must be unix seconds, within %d s of the gateway's "
                           "clock",
                           PGW_SIGNATURE_SKEW_S);
    if (ts < now - PGW_SIGNATURE_SKEW_S || ts > now + PGW_SIGNATURE_SKEW_S)
        return refuse_skew(ts, now, err);
    if (ts <= a->floor) {
        char started[PGW_RFC3339_MAX];
        pgw_format_utc(a->floor, started);
        return pgw_err_set(err, PGW_EUNAUTHORIZED,
                           "X-PGW-Timestamp not after this gateway started (%s), after a stop "
                           "that kept no nonces: a replay cannot be told; sign it again, "
                           "stamped now",
                           started);
    }
    size_t nonce_len = strlen(req->nonce);
    if (nonce_len == 0 || nonce_len > PGW_NONCE_MAX)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "X-PGW-Nonce must be 1..%d characters",
                           PGW_NONCE_MAX);
    uint8_t body_hash[32], mac[32];
    char body_hex[65], expected[65];
    pgw_sha256(req->body, req->body_len, body_hash);
    pgw_hash_hex(body_hash, body_hex, sizeof(body_hex));
    char message[PGW_SIGNED_MESSAGE_MAX];
    int len = snprintf(message, sizeof(message), "%s\n%s\n%s\n%s\n%s", req->method,
                       req->path_and_query, req->timestamp, req->nonce, body_hex);
    if (len < 0 || (size_t)len >= sizeof(message))
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "request too long to sign");
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), who->secret, 32, (const unsigned char *)message, (size_t)len, mac,
             &mac_len) == NULL ||
        mac_len != 32)
        return pgw_err_set(err, PGW_EUNAVAILABLE, "cannot compute an HMAC");
    pgw_hash_hex(mac, expected, sizeof(expected));
    char given[64]; /* hex in either case: API.md says hex, not which */
    bool hex_length = strlen(req->signature) == 64;
    for (size_t i = 0; hex_length && i < sizeof(given); i++)
        given[i] = (char)(req->signature[i] | (req->signature[i] >= 'A' ? 0x20 : 0));
    if (!hex_length || CRYPTO_memcmp(expected, given, sizeof(given)) != 0)
        return pgw_err_set(err, PGW_EUNAUTHORIZED,
                           "bad X-PGW-Signature (HMAC-SHA256 keyed with the raw SHA-256 of the "
                           "API key, over METHOD, path and query, timestamp, nonce and the "
                           "body's SHA-256, each on its own line)");
    nonce_verdict v = remember_nonce(a, who, req->nonce, ts, now);
    if (v == NONCE_SEEN)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "X-PGW-Nonce was already used");
    if (v == NONCE_NO_ROOM)
        return pgw_err_set(err, PGW_EUNAVAILABLE,
                           "too many signed requests within %d s to remember their nonces; retry",
                           2 * PGW_SIGNATURE_SKEW_S);
    return PGW_OK;
}

/* A file of nonces: this line, then each live slot as it is in memory
 * (the same machine reads it back). */
#define NONCES_MAGIC "pointsgw nonces 1\n"
#define MAGIC_LEN    (sizeof(NONCES_MAGIC) - 1)

int pgw_auth_save_nonces(const pgw_auth *a, const char *path, int64_t now, pgw_err *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.new", path) >= (int)sizeof(tmp))
        return pgw_err_set(err, PGW_EINVAL, "%s: path too long", path);
    /* A file of its own, never through a link (one planted at the name
     * would have this write over what it names): the name freed first,
     * a crash's half-written file or anything else. */
    (void)unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    int why = errno;
    if (f == NULL) {
        if (fd >= 0)
            close(fd);
        return pgw_err_set(err, PGW_EIO, "%s: %s", tmp, strerror(why));
    }
    bool ok = fwrite(NONCES_MAGIC, 1, MAGIC_LEN, f) == MAGIC_LEN;
    for (size_t i = 0; ok && i < PGW_NONCES_KEPT; i++) {
        const nonce_slot *slot = &a->nonces[i];
        if (slot->hash != 0 && slot->until >= now)
            ok = fwrite(slot, sizeof(*slot), 1, f) == 1;
    }
    /* Whole on disk before it is named: a torn file would be taken whole. */
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    why = errno;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) != 0)
        ok = false, why = errno;
    if (!ok) {
        (void)unlink(tmp);
        return pgw_err_set(err, PGW_EIO, "%s: %s", path, strerror(why ? why : EIO));
    }
    return PGW_OK;
}

/* Puts the slots of an open file of nonces in `a` (those live at `now`);
 * false for a file pointsgw did not write whole, or nonces past room. */
static bool read_nonces(pgw_auth *a, FILE *f, int64_t now)
{
    char magic[MAGIC_LEN];
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size < (long)MAGIC_LEN || (size - (long)MAGIC_LEN) % (long)sizeof(nonce_slot) != 0 ||
        (size_t)(size - (long)MAGIC_LEN) / sizeof(nonce_slot) > PGW_NONCES_KEPT ||
        fseek(f, 0, SEEK_SET) != 0 || fread(magic, 1, MAGIC_LEN, f) != MAGIC_LEN ||
        memcmp(magic, NONCES_MAGIC, MAGIC_LEN) != 0)
        return false;
    nonce_slot slot;
    while (fread(&slot, sizeof(slot), 1, f) == 1) {
        if (slot.hash == 0)
            return false;
        if (slot.until >= now && put_nonce(a, slot.hash, slot.until, now) == NONCE_NO_ROOM)
            return false;
    }
    return ferror(f) == 0;
}

int pgw_auth_restore_nonces(pgw_auth *a, const char *path, int64_t now, bool *kept, pgw_err *err)
{
    *kept = false;
    a->floor = now; /* unless the last run's nonces are all here */
    /* Not through a link, and a FIFO's open must not wait for a writer:
     * a plain file or not whole. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? PGW_OK
                               : pgw_err_set(err, PGW_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    FILE *f = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? fdopen(fd, "rb") : NULL;
    bool whole = f != NULL && read_nonces(a, f, now);
    if (f != NULL)
        fclose(f);
    else
        close(fd);
    /* Gone once read: a crash of this run must not find it and take the
     * last run's nonces for all there are. */
    if (unlink(path) != 0)
        return pgw_err_set(err, PGW_EIO, "%s: cannot remove it: %s", path, strerror(errno));
    if (!whole)
        return pgw_err_set(err, PGW_EINVAL, "%s: not a whole file of nonces", path);
    a->floor = 0;
    *kept = true;
    return PGW_OK;
}

void pgw_bearer_of(const char *authorization, pgw_bearer *out)
{
    memset(out, 0, sizeof(*out));
    /* the scheme's case is free (RFC 9110 11.1): "bearer" is Bearer */
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
        return;
    /* and one space or more before the key (11.4: 1*SP), "Bearer  <key>"
     * is that key, not one with a space */
    const char *key = authorization + 7 + strspn(authorization + 7, " ");
    if (*key == '\0')
        return;
    pgw_sha256(key, strlen(key), out->sha256);
    out->given = true;
}

/* The entry of `b`, NULL when none (or none given). */
static const key_entry *find_key(const pgw_auth *a, const pgw_bearer *b)
{
    if (!b->given)
        return NULL;
    if (b->table == a->table) /* looked up in these keys: the answer stands */
        return b->entry >= 0 ? &a->keys[b->entry] : NULL;
    /* Every entry is compared, match or not: the time taken says nothing. */
    const key_entry *found = NULL;
    for (size_t i = 0; i < a->n_keys; i++) {
        if (CRYPTO_memcmp(b->sha256, a->keys[i].sha256, 32) == 0)
            found = &a->keys[i];
    }
    return found;
}

void pgw_auth_resolve(const pgw_auth *a, pgw_bearer *b)
{
    if (!b->given || b->table == a->table)
        return;
    const key_entry *found = find_key(a, b);
    b->entry = found != NULL ? (int)(found - a->keys) : -1;
    b->table = a->table;
}

bool pgw_auth_knows(const pgw_auth *a, const pgw_bearer *b)
{
    return find_key(a, b) != NULL;
}

const char *pgw_auth_name(const pgw_auth *a, const pgw_bearer *b)
{
    const key_entry *k = find_key(a, b);
    return k != NULL ? k->who.name : NULL;
}

int pgw_auth_check(pgw_auth *a, const pgw_bearer *b, const pgw_signed_request *req, int64_t now,
                   pgw_principal *out, pgw_err *err)
{
    if (!b->given)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "Authorization: Bearer <key> is required");
    const key_entry *found = find_key(a, b);
    if (found == NULL)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "unknown API key");
    *out = found->who; /* named even when its signature fails: the log says whose */
    return found->who.require_signature ? check_signature(a, &found->who, req, now, err) : PGW_OK;
}

bool pgw_auth_may_write(const pgw_principal *who, const char *shop, const char *channel)
{
    switch (who->kind) {
    case PGW_SCOPE_ADMIN:
        return true;
    case PGW_SCOPE_SHOP:
        return shop != NULL && strcmp(shop, who->scope_id) == 0;
    case PGW_SCOPE_CHANNEL:
        return channel != NULL && strcmp(channel, who->scope_id) == 0;
    case PGW_SCOPE_FINANCE:
        return false;
    }
    return false;
}

bool pgw_auth_is(const pgw_principal *who, pgw_scope_kind kind)
{
    return who->kind == PGW_SCOPE_ADMIN || who->kind == kind;
}
