/*
 * test_auth.c - API keys and request signing (API.md "HTTP"): a signed
 * request is taken once, its nonce remembered while its timestamp is in
 * the window; signatures in either case of hex; and the nonce memory holds
 * far more than the 65,536 whose filling once refused every signed request
 * of every key for ten minutes, saying their fresh nonces "were already
 * used".
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/digest.h"
#include "core/transfer.h"
#include "server/auth.h"
#include "util/redact.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY       "test-signing-key"
#define OTHER_KEY "another-signing-key"
#define T0        1795486500 /* the clock of these tests */

/* Two signing keys, "till" (shop:S001) and "other-till" (other_scope),
 * from the environment; the caller frees it. */
static pgw_config *signing_config(const char *other_scope)
{
    setenv("PGW_TEST_AUTH_KEY", KEY, 1);
    setenv("PGW_TEST_AUTH_OTHER_KEY", OTHER_KEY, 1);
    pgw_config *cfg = calloc(1, sizeof(*cfg));
    assert_non_null(cfg);
    cfg->n_keys = 2;
    snprintf(cfg->keys[0].name, sizeof(cfg->keys[0].name), "till");
    snprintf(cfg->keys[0].scope, sizeof(cfg->keys[0].scope), "shop:S001");
    snprintf(cfg->keys[0].key_env, sizeof(cfg->keys[0].key_env), "PGW_TEST_AUTH_KEY");
    cfg->keys[0].require_signature = true;
    snprintf(cfg->keys[1].name, sizeof(cfg->keys[1].name), "other-till");
    snprintf(cfg->keys[1].scope, sizeof(cfg->keys[1].scope), "%s", other_scope);
    snprintf(cfg->keys[1].key_env, sizeof(cfg->keys[1].key_env), "PGW_TEST_AUTH_OTHER_KEY");
    cfg->keys[1].require_signature = true;
    return cfg;
}

/* The keys of cfg (freed here), or the test fails. */
static pgw_auth *auth_of(pgw_config *cfg)
{
    pgw_auth *a = NULL;
    pgw_err err;
    if (pgw_auth_new(cfg, &a, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    free(cfg);
    return a;
}

static pgw_auth *signing_auth(void)
{
    return auth_of(signing_config("shop:S002"));
}

/* Regression: two keys holding one secret were both taken, and a request
 * was the last one's: an admin's key answered as the finance key. */
static void test_one_secret_is_one_key(void **state)
{
    (void)state;
    setenv("PGW_TEST_AUTH_KEY", KEY, 1);
    setenv("PGW_TEST_AUTH_SAME_KEY", KEY, 1);
    pgw_config *cfg = calloc(1, sizeof(*cfg));
    assert_non_null(cfg);
    cfg->n_keys = 2;
    const char *names[] = {"admin", "dashboard"},
               *envs[] = {"PGW_TEST_AUTH_KEY", "PGW_TEST_AUTH_SAME_KEY"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(cfg->keys[i].name, sizeof(cfg->keys[i].name), "%s", names[i]);
        snprintf(cfg->keys[i].scope, sizeof(cfg->keys[i].scope), i == 0 ? "admin" : "finance");
        snprintf(cfg->keys[i].key_env, sizeof(cfg->keys[i].key_env), "%s", envs[i]);
    }
    pgw_auth *a = NULL;
    pgw_err err;
    assert_int_equal(pgw_auth_new(cfg, &a, &err), PGW_EINVAL);
    assert_null(a);
    assert_non_null(strstr(err.msg, "keys admin and dashboard are the same key"));
    free(cfg);
}

/* Signs GET /v1/members/M1 with `key`, stamped `ts`, with `nonce`, as a
 * client does: the secret is the key's SHA-256. The hex is upper case when
 * asked. */
static int check_key(pgw_auth *a, const char *key, int64_t ts, const char *nonce, int64_t now,
                     bool upper, pgw_err *err)
{
    uint8_t secret[32], body_hash[32], mac[32];
    char body_hex[65], stamp[24], message[512], sig[65], authorization[128];
    pgw_sha256(key, strlen(key), secret);
    pgw_sha256("", 0, body_hash);
    pgw_hash_hex(body_hash, body_hex, sizeof(body_hex));
    snprintf(stamp, sizeof(stamp), "%lld", (long long)ts);
    int len = snprintf(message, sizeof(message), "GET\n/v1/members/M1\n%s\n%s\n%s", stamp, nonce,
                       body_hex);
    unsigned int mac_len = 0;
    assert_non_null(
        HMAC(EVP_sha256(), secret, 32, (const unsigned char *)message, (size_t)len, mac, &mac_len));
    pgw_hash_hex(mac, sig, sizeof(sig));
    for (size_t i = 0; upper && sig[i] != '\0'; i++)
        sig[i] = (char)toupper((unsigned char)sig[i]);
    pgw_signed_request req = {.method = "GET",
                              .path_and_query = "/v1/members/M1",
                              .timestamp = stamp,
                              .nonce = nonce,
                              .signature = sig,
                              .body = (const uint8_t *)"",
                              .body_len = 0};
    pgw_principal who;
    pgw_bearer bearer;
    snprintf(authorization, sizeof(authorization), "Bearer %s", key);
    pgw_bearer_of(authorization, &bearer);
    return pgw_auth_check(a, &bearer, &req, now, &who, err);
}

static int check(pgw_auth *a, int64_t ts, const char *nonce, int64_t now, bool upper, pgw_err *err)
{
    return check_key(a, KEY, ts, nonce, now, upper, err);
}

/* A request's key is hashed once (pgw_bearer_of) and every question after
 * asks the hash: the stranger's test, the log's name, authentication, each
 * saying what it said of the header itself. */
static void test_one_bearer_answers_every_question(void **state)
{
    (void)state;
    pgw_auth *a = signing_auth();
    pgw_bearer b;
    pgw_principal who;
    pgw_signed_request unsigned_req = {"GET", "/v1/members/M1",    NULL, NULL,
                                       NULL,  (const uint8_t *)"", 0};
    pgw_err err;
    pgw_bearer_of("bearer " KEY, &b); /* the scheme's case is free */
    assert_true(b.given);
    assert_true(pgw_auth_knows(a, &b));
    assert_string_equal(pgw_auth_name(a, &b), "till");
    memset(&who, 0, sizeof(who));
    assert_int_equal(pgw_auth_check(a, &b, &unsigned_req, T0, &who, &err), PGW_EUNAUTHORIZED);
    assert_non_null(strstr(err.msg, "key till must sign"));
    assert_string_equal(who.name, "till"); /* named for the log */
    pgw_bearer_of("Bearer not-a-key", &b);
    assert_true(b.given);
    assert_false(pgw_auth_knows(a, &b));
    assert_null(pgw_auth_name(a, &b));
    assert_int_equal(pgw_auth_check(a, &b, &unsigned_req, T0, &who, &err), PGW_EUNAUTHORIZED);
    assert_string_equal(err.msg, "unknown API key");
    const char *none[] = {NULL, "", "Bearer ", "Session " KEY, KEY};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        pgw_bearer_of(none[i], &b);
        assert_false(b.given);
        assert_false(pgw_auth_knows(a, &b));
        assert_null(pgw_auth_name(a, &b));
        assert_int_equal(pgw_auth_check(a, &b, &unsigned_req, T0, &who, &err), PGW_EUNAUTHORIZED);
        assert_string_equal(err.msg, "Authorization: Bearer <key> is required");
    }
    pgw_auth_free(a);
}

/* Regression (s60S): RFC 9110 11.4 puts 1*SP between the scheme and the
 * credentials: "Bearer  <key>" (two spaces, a template's "Bearer " + " "
 * + key) was hashed with its space, "unknown API key", sending its
 * integrator after a key that was right. A tab is no SP: refused as
 * before, as is a scheme followed by spaces alone. */
static void test_bearer_after_several_spaces(void **state)
{
    (void)state;
    pgw_auth *a = signing_auth();
    pgw_bearer b;
    pgw_bearer_of("Bearer   " KEY, &b);
    assert_true(b.given);
    assert_true(pgw_auth_knows(a, &b));
    assert_string_equal(pgw_auth_name(a, &b), "till");
    const char *none[] = {"Bearer\t" KEY, "Bearer   ", "Bearer" KEY};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        pgw_bearer_of(none[i], &b);
        assert_false(b.given);
    }
    pgw_auth_free(a);
}

static void test_a_nonce_is_taken_once_within_its_window(void **state)
{
    (void)state;
    pgw_auth *a = signing_auth();
    pgw_err err;
    assert_int_equal(check(a, T0, "n-1", T0, false, &err), PGW_OK);
    assert_int_equal(check(a, T0, "n-1", T0 + 1, false, &err), PGW_EUNAUTHORIZED);
    assert_non_null(strstr(err.msg, "already used"));
    /* With another timestamp, still within the first one's window: refused. */
    assert_int_equal(check(a, T0 + 250, "n-1", T0 + 250, false, &err), PGW_EUNAUTHORIZED);
    /* Once the first timestamp is stale, its nonce is free for a new one. */
    assert_int_equal(
        check(a, T0 + PGW_SIGNATURE_SKEW_S + 1, "n-1", T0 + PGW_SIGNATURE_SKEW_S + 1, false, &err),
        PGW_OK);
    /* The clock never goes back for signatures: a request checked with an
     * earlier `now` than one before it (its body came slowly; the clock
     * stepped back) is judged at the later one, T0 + 301 here, where a
     * stamp of T0 is stale. Judged at T0 + 299 it would pass, though the
     * nonces of T0 may be forgotten by then: a replay could be taken. */
    assert_int_equal(check(a, T0, "n-3", T0 + 299, false, &err), PGW_EUNAUTHORIZED);
    assert_non_null(strstr(err.msg, "stale"));
    /* A request stamped ahead is remembered until its own stamp is stale. */
    assert_int_equal(check(a, T0 + 2000, "n-2", T0 + 1800, false, &err), PGW_OK);
    assert_int_equal(check(a, T0 + 2000, "n-2", T0 + 2000 + PGW_SIGNATURE_SKEW_S, false, &err),
                     PGW_EUNAUTHORIZED);
    pgw_auth_free(a);
}

/* `msg` as the request log shows it (pgw_redact_reason) has `want` and
 * nothing hidden. */
static void assert_logged_whole(const char *msg, const char *want)
{
    char shown[256];
    pgw_redact_reason(msg, shown, sizeof(shown));
    if (strstr(shown, want) == NULL || strstr(shown, "***") != NULL)
        fail_msg("\"%s\" is logged \"%s\", wanted with \"%s\" and nothing hidden", msg, shown,
                 want);
}

/* Regression (an operator's walkthrough): a stale stamp's refusal gave
 * the gateway's clock, and the refusal after a start that kept no nonces
 * the start, as unix seconds: 10 digits, which the request log hides as
 * a phone's ("(***)"). The skew in seconds (days, when seconds would be
 * 7 digits) and UTC dates survive it. */
static void test_time_refusals_read_in_the_log(void **state)
{
    (void)state;
    pgw_err err;
    bool kept = true;
    pgw_auth *a = signing_auth();
    assert_int_equal(check(a, T0 - 412, "t-1", T0, false, &err), PGW_EUNAUTHORIZED);
    assert_logged_whole(err.msg, "412 s behind the gateway's clock (2026-11-24T02:15:00Z)");
    assert_non_null(strstr(err.msg, "more than the 300 s"));
    assert_int_equal(check(a, T0 + 3600, "t-2", T0, false, &err), PGW_EUNAUTHORIZED);
    assert_logged_whole(err.msg, "3600 s ahead of the gateway's clock (2026-11-24T02:15:00Z)");
    /* A clock at 0 (unset): 20781 days and some. */
    assert_int_equal(check(a, 0, "t-3", T0, false, &err), PGW_EUNAUTHORIZED);
    assert_logged_whole(err.msg, "20781 days behind the gateway's clock (2026-11-24T02:15:00Z)");
    pgw_auth_free(a);
    a = signing_auth();
    assert_int_equal(pgw_auth_restore_nonces(a, "/nonexistent/db-nonces", T0, &kept, &err), PGW_OK);
    assert_false(kept);
    assert_int_equal(check(a, T0 - 5, "t-4", T0 + 1, false, &err), PGW_EUNAUTHORIZED);
    assert_logged_whole(err.msg, "not after this gateway started (2026-11-24T02:15:00Z)");
    pgw_auth_free(a);
}

/* Every clock case of the window's refusal, as the request log shows it:
 * the bound itself taken, one second past it refused either way, seconds
 * up to 6 digits, days from there; and a stamp no clock of today gives
 * (milliseconds, the extremes of a long long), whose days would be 7
 * digits or more and hidden as a phone's, is "over 999999 days". */
static void test_every_skew_reads_in_the_log(void **state)
{
    (void)state;
    pgw_err err;
    pgw_auth *a = signing_auth();
    assert_int_equal(check(a, T0 - 300, "b-1", T0, false, &err), PGW_OK);
    assert_int_equal(check(a, T0 + 300, "b-2", T0, false, &err), PGW_OK);
    static const struct {
        long long ts;
        const char *want;
    } CASES[] = {
        {T0 - 301, "stale X-PGW-Timestamp: 301 s behind the gateway's clock ("},
        {T0 + 301, "X-PGW-Timestamp too far ahead: 301 s ahead of the gateway's clock ("},
        {T0 - 999999, ": 999999 s behind"},
        {T0 + 1000000, ": 11 days ahead of"},
        {-1, ": 20781 days behind"},
        {T0 - 86400LL * 999999 - 86399, ": 999999 days behind"},
        {T0 + 86400LL * 1000000, ": over 999999 days ahead of"},
        {T0 * 1000LL, ": over 999999 days ahead of"}, /* a stamp in milliseconds */
        {INT64_MAX, ": over 999999 days ahead of"},
        {INT64_MIN, ": over 999999 days behind"},
    };
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        char nonce[16];
        snprintf(nonce, sizeof(nonce), "s-%zu", i);
        assert_int_equal(check(a, CASES[i].ts, nonce, T0, false, &err), PGW_EUNAUTHORIZED);
        assert_logged_whole(err.msg, CASES[i].want);
    }
    pgw_auth_free(a);
}

/* Nonces are each key's own: two tills that number their requests 1, 2,
 * 3... must not refuse each other's (API.md: a key's nonce is unique
 * within the window; nothing asks keys to agree). A replay is still a
 * replay for the key that sent it. */
static void test_each_key_has_its_own_nonces(void **state)
{
    (void)state;
    pgw_auth *a = signing_auth();
    pgw_err err;
    assert_int_equal(check_key(a, KEY, T0, "1", T0, false, &err), PGW_OK);
    if (check_key(a, OTHER_KEY, T0, "1", T0, false, &err) != PGW_OK)
        fail_msg("another key's first nonce was refused: %s", err.msg);
    assert_int_equal(check_key(a, OTHER_KEY, T0, "1", T0, false, &err), PGW_EUNAUTHORIZED);
    assert_non_null(strstr(err.msg, "already used"));
    assert_int_equal(check_key(a, KEY, T0, "1", T0, false, &err), PGW_EUNAUTHORIZED);
    pgw_auth_free(a);
}

static void test_signatures_in_upper_case_hex(void **state)
{
    (void)state;
    pgw_auth *a = signing_auth();
    pgw_err err;
    assert_int_equal(check(a, T0, "u-1", T0, true, &err), PGW_OK);
    assert_int_equal(check(a, T0, "u-1", T0, true, &err), PGW_EUNAUTHORIZED); /* a replay */
    pgw_auth_free(a);
}

/* 100,000 signed requests, 250 a second for 400 s: up to 75,000 nonces to
 * remember at once (the table once held 65,536 and refused every signed
 * request past them). Every one is taken; then those still within their
 * window are refused as replays. */
static void test_many_nonces_within_one_window(void **state)
{
    (void)state;
    pgw_auth *a = signing_auth();
    pgw_err err;
    enum { N = 100000, PER_S = 250 };
    char nonce[32];
    for (int i = 0; i < N; i++) {
        snprintf(nonce, sizeof(nonce), "many-%d", i);
        int64_t now = T0 + i / PER_S;
        if (check(a, now, nonce, now, false, &err) != PGW_OK)
            fail_msg("request %d: %s", i, err.msg);
    }
    const int64_t end = T0 + (N - 1) / PER_S;
    for (int i = (int)(end - PGW_SIGNATURE_SKEW_S - T0) * PER_S; i < N; i += 97) {
        snprintf(nonce, sizeof(nonce), "many-%d", i);
        assert_int_equal(check(a, T0 + i / PER_S, nonce, end, false, &err), PGW_EUNAUTHORIZED);
        assert_non_null(strstr(err.msg, "already used"));
    }
    pgw_auth_free(a);
}

/* A reload (serve's SIGHUP) swaps the keys in: a key removed is unknown
 * at once, and its principal no longer stands; a key kept keeps its
 * nonces (a replay after the reload is still one) and stands; one whose
 * scope changed does not. */
static void test_a_reload_keeps_the_nonces(void **state)
{
    (void)state;
    pgw_auth *a = signing_auth();
    pgw_err err;
    pgw_principal till, other;
    pgw_bearer b;
    pgw_bearer_of("Bearer " KEY, &b);
    pgw_signed_request none = {0};
    assert_int_equal(pgw_auth_check(a, &b, &none, T0, &till, &err), PGW_EUNAUTHORIZED); /* named */
    pgw_bearer_of("Bearer " OTHER_KEY, &b);
    assert_int_equal(pgw_auth_check(a, &b, &none, T0, &other, &err), PGW_EUNAUTHORIZED);
    assert_int_equal(check(a, T0, "r-1", T0, false, &err), PGW_OK);
    /* The new file: the till's key kept, the other's scope changed. */
    pgw_config *cfg = signing_config("shop:S003");
    pgw_auth *fresh = NULL;
    assert_int_equal(pgw_auth_new(cfg, &fresh, &err), PGW_OK);
    pgw_auth_take_keys(a, fresh);
    assert_true(pgw_auth_still(a, &till));
    assert_false(pgw_auth_still(a, &other));
    assert_true(pgw_auth_still(fresh, &other)); /* fresh holds the old keys */
    assert_int_equal(check(a, T0, "r-1", T0 + 1, false, &err), PGW_EUNAUTHORIZED);
    assert_non_null(strstr(err.msg, "already used"));
    assert_int_equal(check(a, T0, "r-2", T0 + 1, false, &err), PGW_OK);
    pgw_auth_free(fresh);
    /* Then the till's key removed: unknown at once. */
    cfg->n_keys = 0;
    assert_int_equal(pgw_auth_new(cfg, &fresh, &err), PGW_OK);
    pgw_auth_take_keys(a, fresh);
    pgw_auth_free(fresh);
    free(cfg);
    assert_int_equal(pgw_auth_count(a), 0);
    assert_false(pgw_auth_still(a, &till));
    assert_int_equal(check(a, T0, "r-3", T0 + 1, false, &err), PGW_EUNAUTHORIZED);
    assert_string_equal(err.msg, "unknown API key");
    pgw_auth_free(a);
}

/* A config of the keys `keys[0..n)`, each named after itself, admin. */
static pgw_auth *auth_of_keys(const char *const *keys, size_t n)
{
    pgw_config *cfg = calloc(1, sizeof(*cfg));
    assert_non_null(cfg);
    cfg->n_keys = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(cfg->keys[i].name, sizeof(cfg->keys[i].name), "name-%s", keys[i]);
        snprintf(cfg->keys[i].scope, sizeof(cfg->keys[i].scope), "admin");
        cfg->keys[i].has_sha256 = true;
        pgw_sha256(keys[i], strlen(keys[i]), cfg->keys[i].key_sha256);
    }
    return auth_of(cfg);
}

/* What a bearer looked up (pgw_auth_resolve) is told equals what one not
 * looked up is: its name, whether it is known, its check. */
static void assert_answers_as_looked_up(pgw_auth *a, const pgw_bearer *looked_up)
{
    pgw_bearer fresh = *looked_up;
    fresh.table = 0;
    fresh.entry = 0;
    pgw_signed_request none = {0};
    pgw_principal who_1, who_2;
    pgw_err err_1, err_2;
    assert_int_equal(pgw_auth_knows(a, looked_up), pgw_auth_knows(a, &fresh));
    const char *name = pgw_auth_name(a, &fresh);
    if (name == NULL)
        assert_null(pgw_auth_name(a, looked_up));
    else
        assert_string_equal(pgw_auth_name(a, looked_up), name);
    memset(&who_1, 0, sizeof(who_1));
    memset(&who_2, 0, sizeof(who_2));
    int rc = pgw_auth_check(a, &fresh, &none, T0, &who_1, &err_1);
    assert_int_equal(pgw_auth_check(a, looked_up, &none, T0, &who_2, &err_2), rc);
    assert_memory_equal(&who_1, &who_2, sizeof(who_1));
    if (rc != PGW_OK)
        assert_string_equal(err_1.msg, err_2.msg);
}

/* A bearer is looked up once (a connection keeps it, http.c); a reload's
 * keys, moved, removed or added, are looked up afresh: a key removed is
 * unknown at once, a stranger's key added is known, a moved one named. */
static void test_a_looked_up_bearer_follows_reloads(void **state)
{
    (void)state;
    const char *const first[] = {"key-a", "key-b", "key-c"};
    const char *const moved[] = {"key-c", "key-b", "key-x"}; /* a gone, c moved, x new */
    const char *const given[] = {"key-a", "key-b", "key-c", "key-x", "key-y"};
    enum { N = sizeof(given) / sizeof(given[0]) };
    pgw_auth *a = auth_of_keys(first, 3);
    pgw_bearer b[N];
    for (size_t i = 0; i < N; i++) {
        char authorization[64];
        snprintf(authorization, sizeof(authorization), "Bearer %s", given[i]);
        pgw_bearer_of(authorization, &b[i]);
        assert_int_equal(b[i].table, 0);
        pgw_auth_resolve(a, &b[i]);
        assert_int_not_equal(b[i].table, 0);
        assert_int_equal(pgw_auth_knows(a, &b[i]), i < 3);
        assert_answers_as_looked_up(a, &b[i]);
    }
    assert_string_equal(pgw_auth_name(a, &b[2]), "name-key-c");
    pgw_auth *fresh = auth_of_keys(moved, 3);
    pgw_auth_take_keys(a, fresh);
    pgw_auth_free(fresh);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(pgw_auth_knows(a, &b[i]), i >= 1 && i <= 3); /* b, c, x */
        assert_answers_as_looked_up(a, &b[i]);
        pgw_auth_resolve(a, &b[i]); /* the new keys' answer, kept */
        assert_answers_as_looked_up(a, &b[i]);
    }
    assert_string_equal(pgw_auth_name(a, &b[2]), "name-key-c");
    assert_string_equal(pgw_auth_name(a, &b[3]), "name-key-x");
    /* The same keys again (a reload of an unchanged file): the answers stand. */
    fresh = auth_of_keys(moved, 3);
    pgw_auth_take_keys(a, fresh);
    pgw_auth_free(fresh);
    for (size_t i = 0; i < N; i++)
        assert_answers_as_looked_up(a, &b[i]);
    /* None: every bearer unknown. */
    fresh = auth_of_keys(moved, 0);
    pgw_auth_take_keys(a, fresh);
    pgw_auth_free(fresh);
    for (size_t i = 0; i < N; i++) {
        assert_false(pgw_auth_knows(a, &b[i]));
        assert_answers_as_looked_up(a, &b[i]);
    }
    pgw_auth_free(a);
}

/* A clean stop's nonces, read back at the next start: a replay of a
 * request taken before is refused after; the file goes once read. Without
 * it (a crash), signed requests stamped at the start or before are
 * refused, those after taken; a file not whole is said and counts as none. */
static void test_nonces_across_a_restart(void **state)
{
    (void)state;
    char path[512];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%s/pgw-test-nonces-XXXXXX", tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    pgw_err err;
    bool kept = false;
    pgw_auth *a = signing_auth();
    assert_int_equal(check(a, T0 - 400, "k-old", T0 - 400, false, &err), PGW_OK); /* stale at T0 */
    assert_int_equal(check(a, T0, "k-1", T0, false, &err), PGW_OK);
    assert_int_equal(pgw_auth_save_nonces(a, path, T0 + 1, &err), PGW_OK);
    pgw_auth_free(a);
    a = signing_auth();
    assert_int_equal(pgw_auth_restore_nonces(a, path, T0 + 2, &kept, &err), PGW_OK);
    assert_true(kept);
    assert_int_equal(access(path, F_OK), -1); /* gone */
    assert_int_equal(check(a, T0, "k-1", T0 + 3, false, &err), PGW_EUNAUTHORIZED);
    assert_non_null(strstr(err.msg, "already used"));
    assert_int_equal(check(a, T0, "k-2", T0 + 3, false, &err), PGW_OK); /* no floor */
    pgw_auth_free(a);
    /* A crash: no file. */
    a = signing_auth();
    assert_int_equal(pgw_auth_restore_nonces(a, path, T0 + 10, &kept, &err), PGW_OK);
    assert_false(kept);
    assert_int_equal(check(a, T0 + 10, "k-3", T0 + 11, false, &err), PGW_EUNAUTHORIZED);
    assert_non_null(strstr(err.msg, "not after this gateway started"));
    assert_int_equal(check(a, T0 + 11, "k-3", T0 + 11, false, &err), PGW_OK);
    pgw_auth_free(a);
    /* A file cut short. */
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("pointsgw nonces 1\nabc", f);
    fclose(f);
    a = signing_auth();
    assert_int_equal(pgw_auth_restore_nonces(a, path, T0 + 10, &kept, &err), PGW_EINVAL);
    assert_false(kept);
    assert_int_equal(check(a, T0 + 5, "k-4", T0 + 11, false, &err), PGW_EUNAUTHORIZED);
    assert_int_equal(access(path, F_OK), -1);
    pgw_auth_free(a);
}

/* The file of nonces and its ".new" are opened as files, never through a
 * link: a link planted at "DB-nonces.new" (to the ledger, say) had a clean
 * stop truncate and overwrite what it named, and a FIFO at "DB-nonces"
 * held the next start forever. Nothing is written or read through them. */
static void test_nonces_file_through_a_link(void **state)
{
    (void)state;
    char dir[512], path[600], tmp[640], victim[640];
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/pgw-test-nonce-link-XXXXXX", t ? t : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/db-nonces", dir);
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    snprintf(victim, sizeof(victim), "%s/ledger", dir);
    FILE *f = fopen(victim, "wb");
    assert_non_null(f);
    fputs("the ledger", f);
    fclose(f);
    assert_int_equal(symlink(victim, tmp), 0);
    pgw_err err;
    bool kept = true;
    pgw_auth *a = signing_auth();
    assert_int_equal(check(a, T0, "l-1", T0, false, &err), PGW_OK);
    assert_int_equal(pgw_auth_save_nonces(a, path, T0 + 1, &err), PGW_OK);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode)); /* the nonces, in a file of their own */
    assert_int_equal(unlink(path), 0);
    char back[32] = "";
    f = fopen(victim, "rb");
    assert_non_null(f);
    assert_non_null(fgets(back, sizeof(back), f));
    fclose(f);
    assert_string_equal(back, "the ledger");
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(symlink(victim, path), 0); /* nor read through one */
    assert_int_equal(pgw_auth_restore_nonces(a, path, T0 + 2, &kept, &err), PGW_EIO);
    assert_false(kept);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkfifo(path, 0600), 0); /* no writer: an open for reading would wait */
    assert_int_equal(pgw_auth_restore_nonces(a, path, T0 + 2, &kept, &err), PGW_EINVAL);
    assert_false(kept);
    assert_int_equal(check(a, T0 + 1, "l-2", T0 + 2, false, &err), PGW_EUNAUTHORIZED); /* floor */
    pgw_auth_free(a);
    (void)unlink(path);
    assert_int_equal(unlink(victim), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_secret_is_one_key),
        cmocka_unit_test(test_one_bearer_answers_every_question),
        cmocka_unit_test(test_bearer_after_several_spaces),
        cmocka_unit_test(test_a_nonce_is_taken_once_within_its_window),
        cmocka_unit_test(test_time_refusals_read_in_the_log),
        cmocka_unit_test(test_every_skew_reads_in_the_log),
        cmocka_unit_test(test_each_key_has_its_own_nonces),
        cmocka_unit_test(test_signatures_in_upper_case_hex),
        cmocka_unit_test(test_many_nonces_within_one_window),
        cmocka_unit_test(test_a_reload_keeps_the_nonces),
        cmocka_unit_test(test_a_looked_up_bearer_follows_reloads),
        cmocka_unit_test(test_nonces_across_a_restart),
        cmocka_unit_test(test_nonces_file_through_a_link),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
