/*
 * otp.c - see otp.h.
 */
#include "otp.h"

#include "core/assertions.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <arpa/inet.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

bool pgw_otp_address(const char *ip, char out[PGW_OTP_ADDRESS_MAX + 1])
{
    struct in_addr v4;
    struct in6_addr v6;
    char text[INET6_ADDRSTRLEN];
    out[0] = '\0';
    if (strlen(ip) >= INET6_ADDRSTRLEN)
        return false;
    if (inet_pton(AF_INET, ip, &v4) == 1)
        return inet_ntop(AF_INET, &v4, out, PGW_OTP_ADDRESS_MAX + 1) != NULL;
    if (inet_pton(AF_INET6, ip, &v6) != 1)
        return false;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(v6.s6_addr, mapped, sizeof(mapped)) == 0) {
        memcpy(&v4, v6.s6_addr + 12, 4);
        return inet_ntop(AF_INET, &v4, out, PGW_OTP_ADDRESS_MAX + 1) != NULL;
    }
    memset(v6.s6_addr + 8, 0, 8); /* the /64 */
    if (inet_ntop(AF_INET6, &v6, text, sizeof(text)) == NULL)
        return false;
    snprintf(out, PGW_OTP_ADDRESS_MAX + 1, "%s/64", text);
    return true;
}

pgw_otp_limits pgw_otp_limits_default(int64_t ttl_s, uint32_t per_ip_per_hour)
{
    return (pgw_otp_limits){.ttl_s = ttl_s,
                            .min_gap_s = 60,
                            .per_hour = 5,
                            .per_day = 10,
                            .per_ip_per_hour = per_ip_per_hour};
}

void pgw_otp_code(const uint8_t random[PGW_OTP_RANDOM_LEN], char out[PGW_OTP_DIGITS + 1])
{
    uint64_t v = 0;
    for (size_t i = 0; i < PGW_OTP_RANDOM_LEN; i++)
        v = v << 8 | random[i];
    snprintf(out, PGW_OTP_DIGITS + 1, "%06u", (unsigned)(v % 1000000u));
}

bool pgw_otp_code_ok(const char *s)
{
    size_t n = 0;
    while (n <= PGW_OTP_DIGITS && s[n] >= '0' && s[n] <= '9')
        n++;
    return n == PGW_OTP_DIGITS && s[n] == '\0';
}

int pgw_otp_hash(const uint8_t *key, size_t key_len, const char *phone_lookup, const char *code,
                 uint8_t out[PGW_OTP_HASH_LEN], pgw_err *err)
{
    char material[256];
    int n = snprintf(material, sizeof(material), "%s:%s", phone_lookup, code);
    unsigned int len = 0;
    bool ok = n > 0 && (size_t)n < sizeof(material) && key_len > 0 && key_len <= INT32_MAX &&
              HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)material, (size_t)n, out,
                   &len) != NULL &&
              len == PGW_OTP_HASH_LEN;
    OPENSSL_cleanse(material, sizeof(material));
    return ok ? PGW_OK : pgw_err_set(err, PGW_EINVAL, "cannot hash a verification code");
}

/* With `times` newest first: when a window of `window_s` holding at most
 * `limit` may take one more (<= now when it may now). */
static int64_t window_opens(const int64_t *times, size_t n, int64_t now, int64_t window_s,
                            uint32_t limit)
{
    size_t inside = 0;
    while (inside < n && times[inside] > now - window_s)
        inside++;
    if (limit == 0 || inside < limit)
        return now;
    return times[limit - 1] + window_s; /* the limit-th newest leaves the window */
}

bool pgw_otp_may_issue(const pgw_otp_limits *limits, const int64_t *phone_times, size_t n_phone,
                       const int64_t *ip_times, size_t n_ip, int64_t now, int64_t *retry_at,
                       const char **why)
{
    PGW_ASSERT(n_phone <= PGW_OTP_TIMES_MAX && n_ip <= PGW_OTP_TIMES_MAX);
    for (size_t i = 1; i < n_phone; i++)
        PGW_ASSERT(phone_times[i - 1] >= phone_times[i]); /* newest first */
    struct {
        int64_t at;
        const char *why;
    } opens[] = {
        {n_phone > 0 ? phone_times[0] + limits->min_gap_s : now, "one code a minute to a number"},
        {window_opens(phone_times, n_phone, now, 3600, limits->per_hour),
         "codes an hour to a number"},
        {window_opens(phone_times, n_phone, now, 86400, limits->per_day),
         "codes a day to a number"},
        {window_opens(ip_times, n_ip, now, 3600, limits->per_ip_per_hour),
         "codes an hour from one address"},
    };
    int64_t latest = now;
    *why = NULL;
    for (size_t i = 0; i < sizeof(opens) / sizeof(opens[0]); i++) {
        if (opens[i].at > latest)
            latest = opens[i].at, *why = opens[i].why;
    }
    *retry_at = latest;
    return latest <= now;
}

const char *pgw_otp_verdict_name(pgw_otp_verdict v)
{
    switch (v) {
    case PGW_OTP_VERIFIED:
        return "verified";
    case PGW_OTP_NONE:
        return "no_code";
    case PGW_OTP_EXPIRED:
        return "expired";
    case PGW_OTP_EXHAUSTED:
        return "too_many_attempts";
    case PGW_OTP_MISMATCH:
        return "mismatch";
    }
    return "?";
}

pgw_otp_verdict pgw_otp_judge(const pgw_otp_row *row, const uint8_t hash[PGW_OTP_HASH_LEN],
                              const char *requester, int64_t now, int64_t *tries_left)
{
    *tries_left = 0;
    if (row == NULL || row->used || strcmp(row->requester, requester) != 0)
        return PGW_OTP_NONE;
    if (now >= row->expires_at)
        return PGW_OTP_EXPIRED;
    if (row->attempts >= PGW_OTP_ATTEMPTS_MAX)
        return PGW_OTP_EXHAUSTED;
    if (CRYPTO_memcmp(row->hash, hash, PGW_OTP_HASH_LEN) == 0)
        return PGW_OTP_VERIFIED;
    *tries_left = PGW_OTP_ATTEMPTS_MAX - row->attempts - 1;
    return PGW_OTP_MISMATCH;
}
