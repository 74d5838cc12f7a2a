/*
 * auth.h - API keys, scopes and request signatures (API.md "HTTP").
 *
 * Keys come from the configuration: each has a name, one scope and either
 * the SHA-256 of the key or the name of an environment variable holding
 * it (read once, at pgw_auth_new, then kept only as its SHA-256). A request
 * presents `Authorization: Bearer <key>`; the key is hashed (once a request:
 * pgw_bearer) and compared in constant time against every configured hash, so timing says nothing
 * about which key, or which prefix, came close.
 *
 * Signing: a key configured with require_signature must also send
 * X-PGW-Timestamp (unix seconds, within PGW_SIGNATURE_SKEW_S of now),
 * X-PGW-Nonce (unused by that key within that window) and X-PGW-Signature =
 * hex, in either case, of HMAC-SHA256(secret, METHOD "\n" PATH_AND_QUERY "\n" TIMESTAMP "\n"
 * NONCE "\n" hex(SHA-256(body))). The secret is the raw 32-byte SHA-256 of
 * the key: the gateway never stores keys in clear, and a client that holds
 * the key can always derive it.
 *
 * Scopes: "admin" may do everything; "shop:<id>" may write for that shop
 * only; "channel:<name>" for events of that channel; "finance" for reports
 * and reconciliation.
 *
 * Not thread-safe: the service thread owns a pgw_auth (the nonce cache).
 */
#ifndef PGW_SERVER_AUTH_H
#define PGW_SERVER_AUTH_H

#include "config/config.h"
#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_SIGNATURE_SKEW_S 300
#define PGW_NONCE_MAX        64 /* longest nonce accepted */
/* Nonces remembered at once (16 bytes each, touched as used): each for as
 * long as its timestamp is within the skew window, so about 2,500 signed
 * requests a second, sustained, for all keys together (a simulation of the
 * probing saw the first refusals at 3,000). Beyond, a signed request is
 * refused 503 (retry) rather than let a replay in. */
#define PGW_NONCES_KEPT (1 << 20)

typedef struct pgw_auth pgw_auth;

typedef enum pgw_scope_kind {
    PGW_SCOPE_ADMIN = 0,
    PGW_SCOPE_SHOP,
    PGW_SCOPE_CHANNEL,
    PGW_SCOPE_FINANCE,
} pgw_scope_kind;

/* Who a request is, once authenticated. */
typedef struct pgw_principal {
    char name[PGW_ID_MAX + 1]; /* the key's name, for the request log */
    pgw_scope_kind kind;
    char scope_id[PGW_SCOPE_MAX + 1]; /* the shop id or channel name */
    bool require_signature;
    uint8_t secret[32]; /* SHA-256 of the key: the signing secret */
} pgw_principal;

/* What the signature covers, taken from the request. */
typedef struct pgw_signed_request {
    const char *method;         /* "POST" */
    const char *path_and_query; /* "/v1/events?x=1" */
    const char *timestamp;      /* X-PGW-Timestamp, NULL when absent */
    const char *nonce;          /* X-PGW-Nonce */
    const char *signature;      /* X-PGW-Signature */
    const uint8_t *body;
    size_t body_len;
} pgw_signed_request;

/* Builds the key table from `cfg`. A key whose variable is unset is left
 * out, with a warning on stderr. The caller frees it with pgw_auth_free. */
int pgw_auth_new(const pgw_config *cfg, pgw_auth **out, pgw_err *err);
void pgw_auth_free(pgw_auth *auth);

/* The keys in the table (those whose variable was set). */
size_t pgw_auth_count(const pgw_auth *auth);

/*
 * A reload (serve's SIGHUP): `auth` takes the keys of `fresh` (made by
 * pgw_auth_new from the file read again) and `fresh` gets the old ones,
 * for its caller to free. The nonces stay with `auth`, as does its clock:
 * a signed request taken before the reload is still a replay after it,
 * its key unchanged. Principals given out before stay as they were (a
 * copy): a request in flight keeps the key it was let in with.
 */
void pgw_auth_take_keys(pgw_auth *auth, pgw_auth *fresh);

/*
 * Nonces across a restart: a clean stop writes those still live at `now`
 * to `path` (mode 0600, through `path`.new, removed first and renamed
 * once whole, never through a link), and the next start reads them back
 * (pgw_auth_restore_nonces), so that a signed request taken before the
 * restart is a replay after it. The service thread's, as every call: at a
 * stop, after it served.
 */
int pgw_auth_save_nonces(const pgw_auth *auth, const char *path, int64_t now, pgw_err *err);

/*
 * At start (`now`): the nonces a clean stop left at `path`, the file
 * removed once read (*kept true). Without them (no file: a crash; a file
 * not whole, or one that cannot be read or removed: an error saying which,
 * the rest the same), the last run's
 * nonces are unknown: signed requests stamped at `now` or before are refused
 * (PGW_EUNAUTHORIZED, saying so) while such stamps are within the window,
 * PGW_SIGNATURE_SKEW_S after the start at most.
 */
int pgw_auth_restore_nonces(pgw_auth *auth, const char *path, int64_t now, bool *kept,
                            pgw_err *err);

/* Whether `who` (a principal pgw_auth_check gave) is still one of the
 * keys, with the same name, scope and signing: after a reload, a live
 * stream let in by a key since removed or changed is not. */
bool pgw_auth_still(const pgw_auth *auth, const pgw_principal *who);

/*
 * A request's Bearer key, hashed once where its Authorization header is
 * read and asked about as often as needed after (a SHA-256 is ~3% of a
 * request's work on the service thread). All zeros: none.
 */
typedef struct pgw_bearer {
    bool given;         /* "Bearer <key>", the key not empty (the scheme's case free) */
    uint8_t sha256[32]; /* the key's SHA-256, when given: a credential, as the key is */
    /* What pgw_auth_resolve found: which entry (-1: none) of the keys
     * whose fingerprint is `table` (0: not looked up). */
    uint64_t table;
    int entry;
} pgw_bearer;

/* The Bearer of `authorization` (the header's whole value; NULL for none),
 * not looked up. */
void pgw_bearer_of(const char *authorization, pgw_bearer *out);

/*
 * Looks `bearer` up among the keys of `auth` (every key compared, in
 * constant time), unless it was already among these very keys: the
 * questions below then take that answer, not comparing every key again
 * (a request asks three, each such a scan: ~2,300 instructions of the
 * service thread's ~58,000 for three keys; bench/RESULTS.md). A reload's
 * keys (pgw_auth_take_keys) are looked up afresh. The time saved says
 * only that this bearer was looked up before, which the holder of the
 * bearer (one connection's last key, http.c) knows.
 */
void pgw_auth_resolve(const pgw_auth *auth, pgw_bearer *bearer);

/*
 * Authenticates `bearer` and, when the key requires it, the signature at
 * time `now` (or at the latest `now` of an earlier call, if later: time
 * never goes back for signatures). PGW_EUNAUTHORIZED with a message saying
 * what was wrong (and never echoing the key); when the key is known but its
 * signature is not right, *out still names it (for the log, never for
 * access). One thread at a time (the service thread).
 */
int pgw_auth_check(pgw_auth *auth, const pgw_bearer *bearer, const pgw_signed_request *req,
                   int64_t now, pgw_principal *out, pgw_err *err);

/* Whether `bearer` is one of the configured keys (every key compared, in
 * constant time, unless pgw_auth_resolve found it in these keys): asked before a body is read, so
 * that a stranger's request holds no body buffer (the signature is checked with the body, by
 * pgw_auth_check). */
bool pgw_auth_knows(const pgw_auth *auth, const pgw_bearer *bearer);
/* The configured name of that key, NULL when it is none of ours (for the
 * log and /metrics of a request refused before it is authenticated). */
const char *pgw_auth_name(const pgw_auth *auth, const pgw_bearer *bearer);

/* Whether the principal may write for `shop` ("" for none) on `channel`. */
bool pgw_auth_may_write(const pgw_principal *who, const char *shop, const char *channel);
/* Whether the principal has one of the plain scopes (admin always does). */
bool pgw_auth_is(const pgw_principal *who, pgw_scope_kind kind);

#endif
