/*
 * sign.c - see sign.h.
 */
#include "sign.h"

#include "core/assertions.h"
#include "core/utf8.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TIMESTAMP_MAX INT64_C(253402300799) /* 9999-12-31T23:59:59Z: a 4-digit year */

/* ---- shared helpers ------------------------------------------------------- */

static void to_hex(const unsigned char *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0x0F];
    }
    out[2 * n] = '\0';
}

static bool printable_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7E)
            return false;
    }
    return true;
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Appends the n bytes at s to out (len so far in *at, capacity cap including
 * the NUL); false when they do not fit. */
static bool append(char *out, size_t cap, size_t *at, const char *s, size_t n)
{
    if (n >= cap - *at)
        return false;
    memcpy(out + *at, s, n);
    *at += n;
    out[*at] = '\0';
    return true;
}

static bool append_str(char *out, size_t cap, size_t *at, const char *s)
{
    return append(out, cap, at, s, strlen(s));
}

/* ---- Tencent TC3 ---------------------------------------------------------- */

/* One header as it is signed: lower-case name, trimmed lower-case value. */
typedef struct tc3_line {
    char name[PGW_TC3_HEADER_NAME_MAX + 1];
    char value[PGW_TC3_HEADER_VALUE_MAX + 1];
} tc3_line;

static int tc3_line_of(const pgw_tc3_header *h, tc3_line *line, pgw_err *err)
{
    if (h->name == NULL || h->value == NULL)
        return pgw_err_set(err, PGW_EINVAL, "TC3: a signed header needs a name and a value");
    size_t n = strnlen(h->name, PGW_TC3_HEADER_NAME_MAX + 1);
    if (n == 0 || n > PGW_TC3_HEADER_NAME_MAX)
        return pgw_err_set(err, n == 0 ? PGW_EINVAL : PGW_ETOOLARGE,
                           "TC3: a header name is 1..%d bytes", PGW_TC3_HEADER_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = h->name[i];
        bool ok =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
        if (!ok)
            return pgw_err_set(err, PGW_EINVAL, "TC3: header name %.64s is not [A-Za-z0-9-]",
                               h->name);
        line->name[i] = lower(c);
    }
    line->name[n] = '\0';

    size_t v = strnlen(h->value, PGW_TC3_HEADER_VALUE_MAX + 1);
    if (v > PGW_TC3_HEADER_VALUE_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "TC3: header %s: value over %d bytes", line->name,
                           PGW_TC3_HEADER_VALUE_MAX);
    /* A control character (a line break above all) would forge another
     * canonical line; non-ASCII has no agreed lower-casing. */
    if (!printable_ascii(h->value, v))
        return pgw_err_set(err, PGW_EINVAL, "TC3: header %s: value must be printable ASCII",
                           line->name);
    const char *s = h->value;
    while (v > 0 && *s == ' ') {
        s++;
        v--;
    }
    while (v > 0 && s[v - 1] == ' ')
        v--;
    if (v == 0)
        return pgw_err_set(err, PGW_EINVAL, "TC3: header %s: empty value", line->name);
    for (size_t i = 0; i < v; i++)
        line->value[i] = lower(s[i]);
    line->value[v] = '\0';
    return PGW_OK;
}

static int tc3_check(const pgw_tc3_input *in, pgw_err *err)
{
    if (in->secret_id == NULL || in->secret_key == NULL || in->service == NULL)
        return pgw_err_set(err, PGW_EINVAL, "TC3: secret id, secret key and service are needed");
    size_t id = strnlen(in->secret_id, PGW_SMS_KEY_MAX + 1);
    size_t key = strnlen(in->secret_key, PGW_SMS_KEY_MAX + 1);
    if (id == 0 || key == 0)
        return pgw_err_set(err, PGW_EINVAL, "TC3: empty secret id or secret key");
    if (id > PGW_SMS_KEY_MAX || key > PGW_SMS_KEY_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "TC3: secret id and key are at most %d bytes",
                           PGW_SMS_KEY_MAX);
    /* The id goes into a header; ", " or a line break in it would change
     * what the server parses. */
    if (!printable_ascii(in->secret_id, id) || strpbrk(in->secret_id, " ,/=") != NULL)
        return pgw_err_set(err, PGW_EINVAL,
                           "TC3: the secret id must be printable ASCII "
                           "without spaces, commas, slashes or '='");
    size_t sv = strnlen(in->service, PGW_TC3_SERVICE_MAX + 1);
    if (sv == 0 || sv > PGW_TC3_SERVICE_MAX ||
        strspn(in->service, "abcdefghijklmnopqrstuvwxyz0123456789") != sv)
        return pgw_err_set(err, PGW_EINVAL, "TC3: service must be 1..%d of [a-z0-9]",
                           PGW_TC3_SERVICE_MAX);
    if (in->timestamp < 0 || in->timestamp > TIMESTAMP_MAX)
        return pgw_err_set(err, PGW_EINVAL, "TC3: timestamp %lld out of range",
                           (long long)in->timestamp);
    if (in->n_headers == 0 || in->headers == NULL)
        return pgw_err_set(err, PGW_EINVAL, "TC3: content-type and host must be signed");
    if (in->n_headers > PGW_TC3_HEADERS_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "TC3: at most %d signed headers",
                           PGW_TC3_HEADERS_MAX);
    if (in->payload_len > PGW_TC3_PAYLOAD_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "TC3: payload over %d bytes", PGW_TC3_PAYLOAD_MAX);
    if (in->payload == NULL && in->payload_len > 0)
        return pgw_err_set(err, PGW_EINVAL, "TC3: payload missing");
    return PGW_OK;
}

/* The header lines sorted by name (insertion sort: at most 8). */
static int tc3_lines(const pgw_tc3_input *in, tc3_line *lines, pgw_err *err)
{
    bool has_type = false, has_host = false;
    for (size_t i = 0; i < in->n_headers; i++) {
        tc3_line line;
        int rc = tc3_line_of(&in->headers[i], &line, err);
        if (rc != PGW_OK)
            return rc;
        size_t j = i;
        while (j > 0 && strcmp(lines[j - 1].name, line.name) > 0) {
            lines[j] = lines[j - 1];
            j--;
        }
        if (j > 0 && strcmp(lines[j - 1].name, line.name) == 0)
            return pgw_err_set(err, PGW_EINVAL, "TC3: header %s signed twice", line.name);
        lines[j] = line;
        has_type |= strcmp(line.name, "content-type") == 0;
        has_host |= strcmp(line.name, "host") == 0;
    }
    /* Tencent refuses a signature that does not cover these two. */
    if (!has_type || !has_host)
        return pgw_err_set(err, PGW_EINVAL, "TC3: content-type and host must be signed");
    return PGW_OK;
}

static bool hmac256(const unsigned char *key, size_t key_len, const char *msg, size_t len,
                    unsigned char out[SHA256_DIGEST_LENGTH])
{
    unsigned int n = 0;
    return HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, len, out, &n) !=
               NULL &&
           n == SHA256_DIGEST_LENGTH;
}

int pgw_tc3_sign(const pgw_tc3_input *in, pgw_tc3_signature *out, pgw_err *err)
{
    memset(out, 0, sizeof(*out));
    int rc = tc3_check(in, err);
    tc3_line lines[PGW_TC3_HEADERS_MAX];
    if (rc == PGW_OK)
        rc = tc3_lines(in, lines, err);
    if (rc != PGW_OK)
        return rc;

    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)(in->payload ? in->payload : ""), in->payload_len, digest);
    to_hex(digest, sizeof(digest), out->hashed_payload);

    /* Step 4: the header block ends in "\n" per line, then one more "\n"
     * before the signed names: the blank line the vectors depend on. */
    size_t at = 0, sh = 0;
    bool fits =
        append_str(out->canonical_request, sizeof(out->canonical_request), &at, "POST\n/\n\n");
    for (size_t i = 0; fits && i < in->n_headers; i++) {
        char *c = out->canonical_request;
        size_t cap = sizeof(out->canonical_request);
        fits = append_str(c, cap, &at, lines[i].name) && append_str(c, cap, &at, ":") &&
               append_str(c, cap, &at, lines[i].value) && append_str(c, cap, &at, "\n") &&
               (i == 0 || append_str(out->signed_headers, sizeof(out->signed_headers), &sh, ";")) &&
               append_str(out->signed_headers, sizeof(out->signed_headers), &sh, lines[i].name);
    }
    fits = fits && append_str(out->canonical_request, sizeof(out->canonical_request), &at, "\n") &&
           append_str(out->canonical_request, sizeof(out->canonical_request), &at,
                      out->signed_headers) &&
           append_str(out->canonical_request, sizeof(out->canonical_request), &at, "\n") &&
           append_str(out->canonical_request, sizeof(out->canonical_request), &at,
                      out->hashed_payload);
    PGW_ASSERT(fits); /* the caps above size the buffer for the largest input */
    SHA256((const unsigned char *)out->canonical_request, at, digest);
    to_hex(digest, sizeof(digest), out->hashed_canonical_request);

    /* Step 5: the date is UTC's, not Beijing's (they differ 00:00-08:00 CST). */
    time_t t = (time_t)in->timestamp;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        memset(out, 0, sizeof(*out));
        return pgw_err_set(err, PGW_EINVAL, "TC3: timestamp %lld has no date",
                           (long long)in->timestamp);
    }
    /* The year has 4 digits: the timestamp was bounded to year 9999. */
    size_t date_len = strftime(out->date, sizeof(out->date), "%Y-%m-%d", &tm);
    PGW_ASSERT(date_len == 10);
    snprintf(out->credential_scope, sizeof(out->credential_scope), "%s/%s/tc3_request", out->date,
             in->service);
    snprintf(out->string_to_sign, sizeof(out->string_to_sign), "TC3-HMAC-SHA256\n%lld\n%s\n%s",
             (long long)in->timestamp, out->credential_scope, out->hashed_canonical_request);

    /* Step 7: each derived key is the raw digest of the one before. */
    unsigned char k_secret[3 + PGW_SMS_KEY_MAX];
    size_t key_len = strlen(in->secret_key);
    memcpy(k_secret, "TC3", 3);
    memcpy(k_secret + 3, in->secret_key, key_len);
    unsigned char k_date[SHA256_DIGEST_LENGTH], k_service[SHA256_DIGEST_LENGTH],
        k_signing[SHA256_DIGEST_LENGTH];
    bool ok = hmac256(k_secret, 3 + key_len, out->date, strlen(out->date), k_date) &&
              hmac256(k_date, sizeof(k_date), in->service, strlen(in->service), k_service) &&
              hmac256(k_service, sizeof(k_service), "tc3_request", 11, k_signing) &&
              hmac256(k_signing, sizeof(k_signing), out->string_to_sign,
                      strlen(out->string_to_sign), digest);
    if (ok) {
        to_hex(k_date, sizeof(k_date), out->secret_date);
        to_hex(k_service, sizeof(k_service), out->secret_service);
        to_hex(k_signing, sizeof(k_signing), out->secret_signing);
        to_hex(digest, sizeof(digest), out->signature);
    }
    /* Key material does not stay on the stack after we return. */
    memset(k_secret, 0, sizeof(k_secret));
    memset(k_date, 0, sizeof(k_date));
    memset(k_service, 0, sizeof(k_service));
    memset(k_signing, 0, sizeof(k_signing));
    if (!ok) {
        memset(out, 0, sizeof(*out));
        return pgw_err_set(err, PGW_EIO, "TC3: HMAC-SHA256 failed");
    }
    /* Step 9: comma and space between the three parts. */
    int n = snprintf(out->authorization, sizeof(out->authorization),
                     "TC3-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                     in->secret_id, out->credential_scope, out->signed_headers, out->signature);
    PGW_ASSERT(n > 0 && (size_t)n < sizeof(out->authorization));
    return PGW_OK;
}

/* ---- Alibaba RPC ---------------------------------------------------------- */

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

/* Encodes n bytes at src onto out at *at; false when out is full. */
static bool encode_onto(const char *src, size_t n, char *out, size_t cap, size_t *at)
{
    static const char digits[] = "0123456789ABCDEF"; /* upper case: research 2.5 step 2 */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (unreserved(c)) {
            if (!append(out, cap, at, (const char *)&src[i], 1))
                return false;
        } else {
            char esc[3] = {'%', digits[c >> 4], digits[c & 0x0F]};
            if (!append(out, cap, at, esc, 3))
                return false;
        }
    }
    return true;
}

int pgw_rpc_percent_encode(const char *src, char *out, size_t cap, size_t *len, pgw_err *err)
{
    if (len != NULL)
        *len = 0;
    if (cap == 0)
        return pgw_err_set(err, PGW_ETOOLARGE, "percent-encoding: no room");
    out[0] = '\0';
    if (!pgw_utf8_valid(src))
        return pgw_err_set(err, PGW_EINVAL, "percent-encoding: the text is not valid UTF-8");
    size_t at = 0;
    if (!encode_onto(src, strlen(src), out, cap, &at)) {
        out[0] = '\0';
        return pgw_err_set(err, PGW_ETOOLARGE, "percent-encoding: over %zu bytes", cap - 1);
    }
    if (len != NULL)
        *len = at;
    return PGW_OK;
}

static int rpc_param_check(const pgw_rpc_param *p, pgw_err *err)
{
    if (p->name == NULL || p->value == NULL)
        return pgw_err_set(err, PGW_EINVAL, "RPC: a parameter needs a name and a value");
    size_t n = strnlen(p->name, PGW_RPC_NAME_MAX + 1);
    if (n == 0)
        return pgw_err_set(err, PGW_EINVAL, "RPC: a parameter has an empty name");
    if (n > PGW_RPC_NAME_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "RPC: a parameter name is over %d bytes",
                           PGW_RPC_NAME_MAX);
    /* Signature is what comes out of this, never what goes in. */
    if (strcmp(p->name, "Signature") == 0)
        return pgw_err_set(err, PGW_EINVAL, "RPC: Signature is not signed");
    if (strnlen(p->value, PGW_RPC_VALUE_MAX + 1) > PGW_RPC_VALUE_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "RPC: %.64s: value over %d bytes", p->name,
                           PGW_RPC_VALUE_MAX);
    if (!pgw_utf8_valid(p->name) || !pgw_utf8_valid(p->value))
        return pgw_err_set(err, PGW_EINVAL, "RPC: %.64s: not valid UTF-8", p->name);
    return PGW_OK;
}

int pgw_rpc_canonical_query(const pgw_rpc_param *params, size_t n, char *out, size_t cap,
                            size_t *len, pgw_err *err)
{
    if (len != NULL)
        *len = 0;
    if (cap == 0)
        return pgw_err_set(err, PGW_ETOOLARGE, "RPC: no room for the query");
    out[0] = '\0';
    if (n > PGW_RPC_PARAMS_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "RPC: at most %d parameters", PGW_RPC_PARAMS_MAX);
    if (n > 0 && params == NULL)
        return pgw_err_set(err, PGW_EINVAL, "RPC: parameters missing");
    /* Sort indices by name, byte order (strcmp compares as unsigned char). */
    size_t order[PGW_RPC_PARAMS_MAX];
    for (size_t i = 0; i < n; i++) {
        int rc = rpc_param_check(&params[i], err);
        if (rc != PGW_OK)
            return rc;
        size_t j = i;
        while (j > 0 && strcmp(params[order[j - 1]].name, params[i].name) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        if (j > 0 && strcmp(params[order[j - 1]].name, params[i].name) == 0)
            return pgw_err_set(err, PGW_EINVAL, "RPC: parameter %.64s given twice", params[i].name);
        order[j] = i;
    }
    size_t at = 0;
    for (size_t k = 0; k < n; k++) {
        const pgw_rpc_param *p = &params[order[k]];
        if ((k > 0 && !append(out, cap, &at, "&", 1)) ||
            !encode_onto(p->name, strlen(p->name), out, cap, &at) ||
            !append(out, cap, &at, "=", 1) ||
            !encode_onto(p->value, strlen(p->value), out, cap, &at)) {
            out[0] = '\0';
            return pgw_err_set(err, PGW_ETOOLARGE, "RPC: the query is over %zu bytes", cap - 1);
        }
    }
    if (len != NULL)
        *len = at;
    return PGW_OK;
}

int pgw_rpc_string_to_sign(const char *method, const char *canonical, char *out, size_t cap,
                           size_t *len, pgw_err *err)
{
    if (len != NULL)
        *len = 0;
    if (cap == 0)
        return pgw_err_set(err, PGW_ETOOLARGE, "RPC: no room for the string to sign");
    out[0] = '\0';
    if (method == NULL || (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0))
        return pgw_err_set(err, PGW_EINVAL, "RPC: the method is GET or POST");
    size_t n = strnlen(canonical, PGW_RPC_QUERY_MAX + 1);
    if (n > PGW_RPC_QUERY_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "RPC: the query is over %d bytes",
                           PGW_RPC_QUERY_MAX);
    size_t at = 0;
    /* "%2F" is the encoded path "/"; the query is encoded a second time. */
    if (!append_str(out, cap, &at, method) || !append_str(out, cap, &at, "&%2F&") ||
        !encode_onto(canonical, n, out, cap, &at)) {
        out[0] = '\0';
        return pgw_err_set(err, PGW_ETOOLARGE, "RPC: the string to sign is over %zu bytes",
                           cap - 1);
    }
    if (len != NULL)
        *len = at;
    return PGW_OK;
}

int pgw_rpc_signature(const char *secret, const char *string_to_sign,
                      char out[PGW_RPC_SIGNATURE_LEN + 1], pgw_err *err)
{
    out[0] = '\0';
    size_t s = strnlen(secret, PGW_SMS_KEY_MAX + 1);
    if (s == 0)
        return pgw_err_set(err, PGW_EINVAL, "RPC: empty access key secret");
    if (s > PGW_SMS_KEY_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "RPC: the secret is over %d bytes", PGW_SMS_KEY_MAX);
    size_t m = strnlen(string_to_sign, PGW_RPC_STRING_TO_SIGN_MAX + 1);
    if (m > PGW_RPC_STRING_TO_SIGN_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "RPC: the string to sign is over %d bytes",
                           PGW_RPC_STRING_TO_SIGN_MAX);
    unsigned char key[PGW_SMS_KEY_MAX + 1];
    memcpy(key, secret, s);
    key[s] = '&'; /* research 2.5 step 5: the secret followed by "&" */
    unsigned char mac[20];
    unsigned int n = 0;
    bool ok = HMAC(EVP_sha1(), key, (int)(s + 1), (const unsigned char *)string_to_sign, m, mac,
                   &n) != NULL &&
              n == sizeof(mac);
    memset(key, 0, sizeof(key));
    if (!ok)
        return pgw_err_set(err, PGW_EIO, "RPC: HMAC-SHA1 failed");
    int w = EVP_EncodeBlock((unsigned char *)out, mac, (int)sizeof(mac));
    PGW_ASSERT(w == PGW_RPC_SIGNATURE_LEN);
    return PGW_OK;
}

int pgw_rpc_sign(const char *method, const pgw_rpc_param *params, size_t n, const char *secret,
                 char *query, size_t cap, char signature[PGW_RPC_SIGNATURE_LEN + 1], pgw_err *err)
{
    signature[0] = '\0';
    int rc = pgw_rpc_canonical_query(params, n, query, cap, NULL, err);
    if (rc != PGW_OK)
        return rc;
    /* Heap, not stack: 48 KiB is too much for a small worker stack. */
    char *sts = malloc(PGW_RPC_STRING_TO_SIGN_MAX + 1);
    if (sts == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "RPC: out of memory for the string to sign");
    rc = pgw_rpc_string_to_sign(method, query, sts, PGW_RPC_STRING_TO_SIGN_MAX + 1, NULL, err);
    if (rc == PGW_OK)
        rc = pgw_rpc_signature(secret, sts, signature, err);
    free(sts);
    if (rc != PGW_OK)
        query[0] = '\0';
    return rc;
}
