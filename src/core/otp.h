/*
 * otp.h - the rules of SMS verification codes, without I/O: how a code is
 * made and kept, how often a number and an address may ask for one, and
 * what a submitted code is worth. server/ stores the rows (store.h), sends
 * the SMS (adapters/sms) and applies these; test_otp checks them.
 *
 * A code is 6 digits, so it is never kept as such nor as a plain hash (a
 * million guesses undo a SHA-256 of it): the row keeps an HMAC under a key
 * of the gateway's vault, bound to the phone's lookup, so a stolen table
 * reveals nothing and a code for one number is worth nothing for another.
 *
 * Only the newest code of a number counts, for PGW_OTP_ATTEMPTS_MAX tries,
 * until it expires or is used once, and only for whoever asked for it (a
 * mini-program member, or an API key): a code someone else asked for is
 * worth nothing, and trying it costs its owner no try.
 */
#ifndef PGW_CORE_OTP_H
#define PGW_CORE_OTP_H

#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_OTP_DIGITS        6 /* research/sms-api.md 1.3: verification variables are 0..6 digits */
#define PGW_OTP_RANDOM_LEN    8 /* random bytes one code is made of */
#define PGW_OTP_HASH_LEN      32
#define PGW_OTP_ATTEMPTS_MAX  5 /* wrong tries before a code is burnt */
#define PGW_OTP_TTL_MIN_S     60
#define PGW_OTP_TTL_MAX_S     1800
#define PGW_OTP_TIMES_MAX     64 /* issue times one limit check reads */
#define PGW_OTP_REQUESTER_MAX 80 /* who asked: "member:<id>" or "key:<name>" */
#define PGW_OTP_ADDRESS_MAX   63 /* an address bucket, pgw_otp_address */

/*
 * How often codes may be issued. Per number: the strictest of the two
 * providers' verification-code rules (research/sms-api.md 2.4: one a
 * minute, 5 an hour, 10 a day), so a code we accept is one the provider
 * will send. Per client address: a bound on one machine walking through
 * numbers (0: none). Windows are rolling, never looser than the providers'
 * clock windows.
 */
typedef struct pgw_otp_limits {
    int64_t ttl_s;            /* a code's life: PGW_OTP_TTL_MIN_S..PGW_OTP_TTL_MAX_S */
    int64_t min_gap_s;        /* between two codes to one number */
    uint32_t per_hour;        /* codes to one number */
    uint32_t per_day;         /* codes to one number, at most PGW_OTP_TIMES_MAX */
    uint32_t per_ip_per_hour; /* codes asked from one address, at most PGW_OTP_TIMES_MAX */
} pgw_otp_limits;

/*
 * The bucket a client address counts in for the per-address limit:
 * IPv4 in its dotted form; IPv6 by its /64 ("2001:db8:1:2::/64"), which one
 * subscriber usually holds whole, so rotating addresses inside it does not
 * reset the limit; an IPv4-mapped IPv6 address as IPv4. false for anything
 * that is not an address.
 */
bool pgw_otp_address(const char *ip, char out[PGW_OTP_ADDRESS_MAX + 1]);

/* The per-number defaults above, with ttl_s and per_ip_per_hour given. */
pgw_otp_limits pgw_otp_limits_default(int64_t ttl_s, uint32_t per_ip_per_hour);

/* A code from PGW_OTP_RANDOM_LEN random bytes: 6 decimal digits. The
 * 64-bit value modulo 10^6 is uniform to within 10^6 / 2^64. */
void pgw_otp_code(const uint8_t random[PGW_OTP_RANDOM_LEN], char out[PGW_OTP_DIGITS + 1]);

/* Whether s is a code as members type it: exactly PGW_OTP_DIGITS digits. */
bool pgw_otp_code_ok(const char *s);

/* HMAC-SHA256(key, lookup ":" code): what a row keeps of a code. */
int pgw_otp_hash(const uint8_t *key, size_t key_len, const char *phone_lookup, const char *code,
                 uint8_t out[PGW_OTP_HASH_LEN], pgw_err *err);

/*
 * Whether one more code may go out at `now`, given when the number's
 * codes went out (`phone_times`, newest first, those of the last day) and
 * when the address's did (`ip_times`, newest first, those of the last
 * hour; n_ip 0 when there is no address). false: *retry_at is the first
 * second it may be asked again and *why names the limit.
 */
bool pgw_otp_may_issue(const pgw_otp_limits *limits, const int64_t *phone_times, size_t n_phone,
                       const int64_t *ip_times, size_t n_ip, int64_t now, int64_t *retry_at,
                       const char **why);

/* What a submitted code is worth. */
typedef enum pgw_otp_verdict {
    PGW_OTP_VERIFIED = 0,
    PGW_OTP_NONE,      /* no code of this requester's is live for the number (none, used,
                          or the newest is someone else's) */
    PGW_OTP_EXPIRED,   /* the newest code's time is up */
    PGW_OTP_EXHAUSTED, /* the newest code had PGW_OTP_ATTEMPTS_MAX wrong tries */
    PGW_OTP_MISMATCH,  /* wrong code: one try fewer */
} pgw_otp_verdict;

const char *pgw_otp_verdict_name(pgw_otp_verdict v);

/* The newest code of a number, as stored. */
typedef struct pgw_otp_row {
    int64_t id;
    int64_t expires_at;
    int64_t attempts; /* wrong tries so far */
    bool used;
    uint8_t hash[PGW_OTP_HASH_LEN];
    char requester[PGW_OTP_REQUESTER_MAX + 1];
} pgw_otp_row;

/* The verdict on `hash` (pgw_otp_hash of the submitted code), submitted
 * by `requester`, against `row` (NULL: none), compared in constant time;
 * *tries_left after it. */
pgw_otp_verdict pgw_otp_judge(const pgw_otp_row *row, const uint8_t hash[PGW_OTP_HASH_LEN],
                              const char *requester, int64_t now, int64_t *tries_left);

#endif
