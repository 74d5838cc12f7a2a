/*
 * sign.h - request signatures of the two SMS providers, as pure functions.
 *
 * Facts: research/sms-api.md section 1.7 (Tencent Cloud TC3-HMAC-SHA256)
 * and 2.5 (Alibaba Cloud RPC signature, SignatureVersion 1.0, HMAC-SHA1).
 * Both are checked against every published vector (research 1.8, 2.6) in
 * tests/unit/test_sms_sign.c.
 *
 * Nothing here reads a clock, a random source, a file or the network: the
 * timestamp and the nonce are inputs, so the same inputs always give the
 * same bytes and the tests can pin them. Every input has a cap below; an
 * input over its cap is refused (PGW_ETOOLARGE), never cut, because a cut
 * value would sign something other than what is sent.
 *
 * Secrets: the secret key is only ever an HMAC key here. It is never
 * copied into an output or an error message.
 */
#ifndef PGW_ADAPTERS_SMS_SIGN_H
#define PGW_ADAPTERS_SMS_SIGN_H

#include "core/error.h"

#include <stddef.h>
#include <stdint.h>

/* Key ids and secrets: Tencent's are 36 and 32 characters, Alibaba's 24
 * and 30; the cap leaves room for longer ones without being unbounded. */
#define PGW_SMS_KEY_MAX 128

/* ---- Tencent Cloud TC3-HMAC-SHA256 (research 1.7) ------------------------ */

#define PGW_TC3_HEADERS_MAX      8           /* signed headers */
#define PGW_TC3_HEADER_NAME_MAX  64          /* bytes of a header name */
#define PGW_TC3_HEADER_VALUE_MAX 256         /* bytes of a header value */
#define PGW_TC3_SERVICE_MAX      32          /* "sms", "cvm" */
#define PGW_TC3_PAYLOAD_MAX      (64 * 1024) /* a SendSms body is a few KiB */
#define PGW_TC3_HEX_LEN          64          /* a SHA-256 in lower-case hex */
#define PGW_TC3_CANONICAL_MAX                                                                      \
    (16 + PGW_TC3_HEADERS_MAX * (PGW_TC3_HEADER_NAME_MAX * 2 + PGW_TC3_HEADER_VALUE_MAX + 3) +     \
     PGW_TC3_HEX_LEN)
#define PGW_TC3_SCOPE_MAX          (10 + 1 + PGW_TC3_SERVICE_MAX + 12)
#define PGW_TC3_STRING_TO_SIGN_MAX (16 + 20 + 1 + PGW_TC3_SCOPE_MAX + 1 + PGW_TC3_HEX_LEN)
#define PGW_TC3_AUTHORIZATION_MAX                                                                  \
    (48 + PGW_SMS_KEY_MAX + PGW_TC3_SCOPE_MAX +                                                    \
     PGW_TC3_HEADERS_MAX * (PGW_TC3_HEADER_NAME_MAX + 1) + PGW_TC3_HEX_LEN)

typedef struct pgw_tc3_header {
    const char *name;  /* any case; signed lower-cased */
    const char *value; /* signed trimmed and lower-cased (research 1.7 step 2) */
} pgw_tc3_header;

typedef struct pgw_tc3_input {
    const char *secret_id;  /* 1..PGW_SMS_KEY_MAX printable ASCII */
    const char *secret_key; /* 1..PGW_SMS_KEY_MAX bytes */
    const char *service;    /* 1..PGW_TC3_SERVICE_MAX of [a-z0-9] ("sms") */
    int64_t timestamp;      /* unix seconds, the X-TC-Timestamp header; 0..year 9999 */
    /* The headers to sign, in any order: at least content-type and host
     * (host without a port). Names unique, case-insensitively. */
    const pgw_tc3_header *headers;
    size_t n_headers;
    const char *payload; /* the body exactly as sent; may be NULL when len is 0 */
    size_t payload_len;
} pgw_tc3_input;

/* The signature and every intermediate the published vectors name, so a
 * test can tell which step went wrong. */
typedef struct pgw_tc3_signature {
    char hashed_payload[PGW_TC3_HEX_LEN + 1];
    char canonical_request[PGW_TC3_CANONICAL_MAX + 1];
    char hashed_canonical_request[PGW_TC3_HEX_LEN + 1];
    char date[11]; /* UTC YYYY-MM-DD of the timestamp */
    char credential_scope[PGW_TC3_SCOPE_MAX + 1];
    char string_to_sign[PGW_TC3_STRING_TO_SIGN_MAX + 1];
    char secret_date[PGW_TC3_HEX_LEN + 1]; /* hex of the derived keys (raw bytes are chained) */
    char secret_service[PGW_TC3_HEX_LEN + 1];
    char secret_signing[PGW_TC3_HEX_LEN + 1];
    char signature[PGW_TC3_HEX_LEN + 1];
    char signed_headers[PGW_TC3_HEADERS_MAX * (PGW_TC3_HEADER_NAME_MAX + 1) + 1];
    char authorization[PGW_TC3_AUTHORIZATION_MAX + 1]; /* the Authorization header's value */
} pgw_tc3_signature;

/*
 * Signs a POST to "/" with an empty query (the only request the gateway
 * makes; research 1.1). PGW_EINVAL for a malformed input (an empty secret, a
 * header value with a control character, duplicate or missing headers),
 * PGW_ETOOLARGE for one over its cap. On failure *out is zeroed.
 */
int pgw_tc3_sign(const pgw_tc3_input *in, pgw_tc3_signature *out, pgw_err *err);

/* ---- Alibaba Cloud RPC signature (research 2.5) -------------------------- */

#define PGW_RPC_PARAMS_MAX         24 /* SendSms uses 15 */
#define PGW_RPC_NAME_MAX           64 /* bytes of a parameter name */
#define PGW_RPC_VALUE_MAX          4096 /* bytes of a parameter value (TemplateParam is the long one) */
#define PGW_RPC_QUERY_MAX          (16 * 1024) /* bytes of the canonicalized query string */
#define PGW_RPC_SIGNATURE_LEN      28          /* base64 of a 20-byte HMAC-SHA1 */
#define PGW_RPC_STRING_TO_SIGN_MAX (3 * PGW_RPC_QUERY_MAX + 8)

typedef struct pgw_rpc_param {
    const char *name;  /* 1..PGW_RPC_NAME_MAX bytes, not "Signature" */
    const char *value; /* 0..PGW_RPC_VALUE_MAX bytes of UTF-8 */
} pgw_rpc_param;

/*
 * Percent-encodes the UTF-8 text `src` as Alibaba specifies: A-Z a-z 0-9
 * - _ . ~ as they are, every other byte %XY in upper-case hex (so a space
 * is %20, never '+', and '*' is %2A). Writes a NUL-terminated string to
 * out; *len (may be NULL) gets its length. PGW_EINVAL for invalid UTF-8,
 * PGW_ETOOLARGE when it does not fit cap (then out holds "").
 */
int pgw_rpc_percent_encode(const char *src, char *out, size_t cap, size_t *len, pgw_err *err);

/*
 * The canonicalized query string: the parameters sorted by name (byte
 * order), each name=value percent-encoded, joined by '&'. It is also the
 * request's query (GET) or form body (POST) without the Signature. Names
 * must be unique. Errors as pgw_rpc_percent_encode, plus PGW_EINVAL for a
 * duplicate, empty or "Signature" name and PGW_ETOOLARGE over
 * PGW_RPC_PARAMS_MAX parameters or cap bytes.
 */
int pgw_rpc_canonical_query(const pgw_rpc_param *params, size_t n, char *out, size_t cap,
                            size_t *len, pgw_err *err);

/* METHOD "&%2F&" percentEncode(canonical): method is "GET" or "POST" (the
 * verb actually used: the two give different signatures). */
int pgw_rpc_string_to_sign(const char *method, const char *canonical, char *out, size_t cap,
                           size_t *len, pgw_err *err);

/* Base64(HMAC-SHA1(key = secret "&", string_to_sign)). */
int pgw_rpc_signature(const char *secret, const char *string_to_sign,
                      char out[PGW_RPC_SIGNATURE_LEN + 1], pgw_err *err);

/*
 * All of the above at once: the canonical query into query (cap bytes) and
 * the signature into signature. The caller sends
 * query "&Signature=" percentEncode(signature).
 */
int pgw_rpc_sign(const char *method, const pgw_rpc_param *params, size_t n, const char *secret,
                 char *query, size_t cap, char signature[PGW_RPC_SIGNATURE_LEN + 1], pgw_err *err);

#endif
