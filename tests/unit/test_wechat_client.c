/*
 * test_wechat_client.c - the WeChat client (adapters/wechat/client.c) and the
 * calls built on it (mini program login, phone, subscribe; official-account
 * template) against the fake WeChat server tests/fakes/wechat_fake.py, run as
 * a child process for the whole group and reset before each test.
 *
 * Facts: research/wechat-api.md section 3 (tokens), 4 (subscribe), 5.1
 * (template). What the fake saw is read back through its control API
 * (/_fake/requests, /_fake/stats), so every check is on the wire, not on the
 * client's own account of itself.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "adapters/wechat/client.h"
#include "adapters/wechat_mp/api.h"
#include "adapters/wechat_oa/custom.h"
#include "adapters/wechat_oa/template.h"
#include "adapters/wechat_oa/user.h"
#include "core/utf8.h"
#include "store/store.h"
#include "util/http_client.h"
#include "fake_process.h"

#include "db_fixture.h"

#include <jansson.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define APP_MP      "wx1111mp00000test"
#define SECRET_MP   "mp-Secret-7f3a9c21"
#define APP_OA      "wx2222oa00000test"
#define SECRET_OA   "oa-Secret-5be04d88"
#define WRONG_SEC   "WRONG-s3cr3t-d41d8c"
#define TEMPLATE_ID "TPL_points_credited_01"
#define OPENID_1    "oMP_member_0001"
#define OA_OPENID   "oOA_follower_0001"
#define THREADS     16
#define CLIENT_MS   3000L

#define SEND_PATH     "/cgi-bin/message/subscribe/send"
#define TEMPLATE_PATH "/cgi-bin/message/template/send"
#define TOKEN_PATH    "/cgi-bin/stable_token"
#define LOGIN_PATH    "/sns/jscode2session"

/* ---- the fake server ------------------------------------------------------ */

static fake_process FAKE = {.pid = -1};

static void sleep_ms(long ms)
{
    fake_sleep_ms(ms);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int start_fake(void **state)
{
    (void)state;
    static const char *const args[] = {"--app", APP_MP ":" SECRET_MP, "--app", APP_OA ":" SECRET_OA,
                                       NULL};
    return fake_start(&FAKE, "tests/fakes/wechat_fake.py", args);
}

static int end_fake(void **state)
{
    (void)state;
    return fake_end(&FAKE);
}

/* A control call: method, path (with its query), body (stolen; NULL for
 * none). The answer must be HTTP 200 JSON; the caller decrefs it. */
static json_t *fake_call(const char *method, const char *path, json_t *body)
{
    return fake_request(&FAKE, method, path, body);
}

static void fault(json_t *spec)
{
    assert_non_null(spec);
    json_decref(fake_call("POST", "/_fake/faults", spec));
}

/* stable_token calls the fake counted for appid. */
static long stable_calls(const char *appid)
{
    json_t *doc = fake_call("GET", "/_fake/stats", NULL);
    json_t *n = json_object_get(json_object_get(doc, "stable_token_calls"), appid);
    long out = json_is_integer(n) ? (long)json_integer_value(n) : 0;
    json_decref(doc);
    return out;
}

/* The fake's record of the requests to `path`, oldest first; decref the root. */
static json_t *requests_to(const char *path, json_t **list)
{
    char q[256];
    snprintf(q, sizeof(q), "/_fake/requests?path=%s", path);
    json_t *doc = fake_call("GET", q, NULL);
    *list = json_object_get(doc, "requests");
    assert_true(json_is_array(*list));
    return doc;
}

static long req_errcode(const json_t *list, size_t i)
{
    json_t *code = json_object_get(json_array_get(list, i), "errcode");
    assert_true(json_is_integer(code));
    return (long)json_integer_value(code);
}

static const char *req_token(const json_t *list, size_t i)
{
    const char *t = json_string_value(
        json_object_get(json_object_get(json_array_get(list, i), "query"), "access_token"));
    assert_non_null(t);
    return t;
}

static json_t *req_body(const json_t *list, size_t i)
{
    json_t *body = json_object_get(json_array_get(list, i), "body");
    assert_true(json_is_object(body));
    return body;
}

static int reset_fake(void **state)
{
    (void)state;
    json_decref(fake_call("POST", "/_fake/reset", NULL));
    return 0;
}

/* ---- helpers -------------------------------------------------------------- */

static pgw_wx_client *new_client_at(const pgw_wx_token_cache *cache, const char *base,
                                    const char *mp_secret)
{
    pgw_wx_client *c = NULL;
    pgw_err err = {0};
    assert_int_equal(pgw_wx_client_new(cache, CLIENT_MS, &c, &err), PGW_OK);
    assert_int_equal(pgw_wx_client_add_app(c, APP_MP, mp_secret, base, &err), PGW_OK);
    assert_int_equal(pgw_wx_client_add_app(c, APP_OA, SECRET_OA, base, &err), PGW_OK);
    return c;
}

static pgw_wx_client *new_client(const pgw_wx_token_cache *cache)
{
    return new_client_at(cache, FAKE.base, SECRET_MP);
}

static pgw_wx_client_stats stats_of(pgw_wx_client *c)
{
    pgw_wx_client_stats s;
    pgw_wx_client_get_stats(c, &s);
    return s;
}

static void add_quota(const char *openid, int n)
{
    fake_control(&FAKE, "/_fake/subscribe_quota", "{s:s,s:s,s:s,s:i}", "appid", APP_MP, "openid",
                 openid, "template_id", TEMPLATE_ID, "count", n);
}

static long quota_left(const char *openid)
{
    char q[256];
    snprintf(q, sizeof(q), "/_fake/subscribe_quota?appid=%s&openid=%s&template_id=%s", APP_MP,
             openid, TEMPLATE_ID);
    json_t *doc = fake_call("GET", q, NULL);
    long n = (long)json_integer_value(json_object_get(doc, "count"));
    json_decref(doc);
    return n;
}

static const pgw_wx_keyword KW[] = {{"thing1", "积分到账"}, {"number2", "120"}};

static int send_sub(pgw_wx_client *c, int64_t *msgid, pgw_wx_reply *reply, pgw_err *err)
{
    return pgw_mp_send_subscribe(c, APP_MP, OPENID_1, TEMPLATE_ID, "pages/points/index", NULL, KW,
                                 2, msgid, reply, err);
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && strcmp(s + n - t, tail) == 0;
}

/* A TCP port on 127.0.0.1 that refuses connections: bound, never listening. */
static int refusing_port(int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *fd_out = fd;
    return ntohs(a.sin_port);
}

/* ---- 1. single flight ------------------------------------------------------ */

typedef struct flight {
    pgw_wx_client *client;
    pthread_barrier_t *start;
    char token[PGW_WX_TOKEN_MAX + 1];
    int rc;
    pgw_err err;
} flight;

static void *flight_main(void *arg)
{
    flight *f = arg;
    pthread_barrier_wait(f->start);
    f->rc = pgw_wx_access_token(f->client, APP_MP, f->token, &f->err);
    return NULL;
}

/* THREADS threads ask c for a token at once (behind a barrier), results in f. */
static void take_off(pgw_wx_client *c, flight f[THREADS])
{
    pthread_t th[THREADS];
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
    memset(f, 0, THREADS * sizeof(*f));
    for (int i = 0; i < THREADS; i++) {
        f[i].client = c;
        f[i].start = &start;
        assert_int_equal(pthread_create(&th[i], NULL, flight_main, &f[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
}

/* THREADS threads ask at once; all their tokens must be `want` (or, when
 * want is "", one same non-empty token, copied into want). */
static void fly(pgw_wx_client *c, char want[PGW_WX_TOKEN_MAX + 1])
{
    static flight f[THREADS];
    take_off(c, f);
    if (want[0] == '\0')
        snprintf(want, PGW_WX_TOKEN_MAX + 1, "%s", f[0].token);
    assert_true(strlen(want) > 0);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(f[i].rc, PGW_OK);
        assert_string_equal(f[i].token, want);
    }
}

static void test_single_flight(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    fault(json_pack("{s:s,s:i,s:i}", "path", TOKEN_PATH, "count", 1, "delay_ms", 400));
    char token[PGW_WX_TOKEN_MAX + 1] = "";
    fly(c, token);
    assert_int_equal(stats_of(c).token_fetches, 1);
    assert_int_equal(stats_of(c).calls, 0);
    /* One stable_token request reached the fake. (Its stats count is read
     * below only as a difference: the fake counts a delayed stable_token
     * call twice, once as a fault and once as a call.) */
    json_t *list;
    json_t *doc = requests_to(TOKEN_PATH, &list);
    assert_int_equal(json_array_size(list), 1);
    json_t *body = req_body(list, 0);
    assert_string_equal(json_string_value(json_object_get(body, "grant_type")),
                        "client_credential");
    assert_string_equal(json_string_value(json_object_get(body, "appid")), APP_MP);
    assert_string_equal(json_string_value(json_object_get(body, "secret")), SECRET_MP);
    assert_true(json_is_false(json_object_get(body, "force_refresh")));
    json_decref(doc);
    long calls = stable_calls(APP_MP);
    assert_true(calls >= 1);

    /* It is the token the fake issued and still holds as current. */
    doc = fake_call("GET", "/_fake/tokens?appid=" APP_MP, NULL);
    json_t *tokens = json_object_get(doc, "tokens");
    assert_int_equal(json_array_size(tokens), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(tokens, 0), "access_token")), token);
    assert_true(json_is_true(json_object_get(json_array_get(tokens, 0), "current")));
    json_decref(doc);

    /* A second round is served from the cache. */
    fly(c, token);
    assert_int_equal(stable_calls(APP_MP), calls);
    doc = requests_to(TOKEN_PATH, &list);
    assert_int_equal(json_array_size(list), 1);
    json_decref(doc);
    assert_int_equal(stats_of(c).token_fetches, 1);
    /* Apps do not share tokens: the official account fetches its own. */
    char oa[PGW_WX_TOKEN_MAX + 1];
    pgw_err err = {0};
    assert_int_equal(pgw_wx_access_token(c, APP_OA, oa, &err), PGW_OK);
    assert_string_not_equal(oa, token);
    assert_int_equal(stable_calls(APP_OA), 1);
    assert_int_equal(stats_of(c).token_fetches, 2);
    /* An app the client was not given. */
    assert_int_equal(pgw_wx_access_token(c, "wx9999unknown", oa, &err), PGW_EINVAL);
    assert_int_equal(stats_of(c).token_fetches, 2);
    /* Its quoted id stays UTF-8: "a" and 11 three-byte characters put byte
     * 32 inside the last, whose one byte kept shows as "?", as does any
     * byte no character holds. */
    assert_int_equal(pgw_wx_access_token(c, "a号号号号号号号号号号号", oa, &err), PGW_EINVAL);
    assert_true(pgw_utf8_valid(err.msg));
    assert_non_null(strstr(err.msg, "a号号号号号号号号号号? is configured"));
    /* So does an app refused when added. */
    assert_int_equal(pgw_wx_client_add_app(c, "a号号号号号号号号号号号", "", "http://x", &err),
                     PGW_EINVAL);
    assert_true(pgw_utf8_valid(err.msg));
    assert_non_null(strstr(err.msg, "WeChat app a号号号号号号号号号号?: needs an appid"));
    assert_int_equal(pgw_wx_access_token(c,
                                         "wx\xff"
                                         "1",
                                         oa, &err),
                     PGW_EINVAL);
    assert_non_null(strstr(err.msg, "no WeChat app wx?1 is configured"));
    pgw_wx_client_free(c);
}

/* A token is used until PGW_WX_TOKEN_MARGIN_S before it expires, then
 * fetched again: WeChat has rotated it by then (the fake does as WeChat). */
static void test_token_refreshed_before_expiry(void **state)
{
    (void)state;
    fake_control(&FAKE, "/_fake/config", "{s:i}", "expires_in", PGW_WX_TOKEN_MARGIN_S + 2);
    pgw_wx_client *c = new_client(NULL);
    char first[PGW_WX_TOKEN_MAX + 1], again[PGW_WX_TOKEN_MAX + 1], later[PGW_WX_TOKEN_MAX + 1];
    pgw_err err = {0};
    assert_int_equal(pgw_wx_access_token(c, APP_MP, first, &err), PGW_OK);
    assert_int_equal(pgw_wx_access_token(c, APP_MP, again, &err), PGW_OK);
    assert_string_equal(first, again); /* 2 s of use left: from the cache */
    assert_int_equal(stats_of(c).token_fetches, 1);
    struct timespec pause = {3, 0};
    nanosleep(&pause, NULL);
    assert_int_equal(pgw_wx_access_token(c, APP_MP, later, &err), PGW_OK);
    assert_int_equal(stats_of(c).token_fetches, 2); /* within the margin now: fetched */
    assert_string_not_equal(later, first);
    assert_int_equal(pgw_wx_access_token(c, APP_MP, again, &err), PGW_OK);
    assert_string_equal(again, later);
    assert_int_equal(stats_of(c).token_fetches, 2);
    pgw_wx_client_free(c);
}

/* The fake's reset keeps its config: the usual lifetime goes back even
 * when the test above fails half-way. */
static int restore_token_lifetime(void **state)
{
    (void)state;
    fake_control(&FAKE, "/_fake/config", "{s:i}", "expires_in", 7200);
    return 0;
}

/* A failed fetch is shared by the threads that waited for it: WeChat busy
 * costs one stable_token call, not one per thread. */
static void test_failed_fetch_shared(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    fault(json_pack("{s:s,s:i,s:i,s:i}", "path", TOKEN_PATH, "count", 1, "delay_ms", 400, "errcode",
                    -1));
    static flight f[THREADS];
    take_off(c, f);
    int failed = 0;
    for (int i = 0; i < THREADS; i++) {
        failed += f[i].rc == PGW_EUNAVAILABLE;
        assert_true(f[i].rc == PGW_OK || f[i].rc == PGW_EUNAVAILABLE);
        if (f[i].rc != PGW_OK)
            assert_non_null(strstr(f[i].err.msg, "errcode -1"));
    }
    /* All but latecomers (who fetched again, once) shared the one failure. */
    json_t *list;
    json_t *doc = requests_to(TOKEN_PATH, &list);
    size_t fetches = json_array_size(list);
    json_decref(doc);
    assert_int_equal((size_t)stats_of(c).token_fetches, fetches);
    /* They all started within the 400 ms the fetch took: at most a rare
     * latecomer fetched again. Without sharing, 15 would refetch and pass. */
    assert_true(failed >= THREADS / 2);
    assert_true(fetches == 1 || fetches == 2);
    assert_true(fetches == 2 || failed == THREADS);
    pgw_wx_client_free(c);
}

/* ---- 2. token errors: one new token, one retry ------------------------------ */

static void expect_retried_send(pgw_wx_client *c, long errcode, size_t round)
{
    char old[PGW_WX_TOKEN_MAX + 1];
    pgw_err err = {0};
    assert_int_equal(pgw_wx_access_token(c, APP_MP, old, &err), PGW_OK);
    pgw_wx_client_stats before = stats_of(c);
    fake_control(&FAKE, "/_fake/expire_tokens", "{s:s,s:i}", "appid", APP_MP, "errcode",
                 (int)errcode);

    int64_t msgid = 0;
    pgw_wx_reply reply;
    int rc = send_sub(c, &msgid, &reply, &err);
    assert_int_equal(rc, PGW_OK);
    assert_int_equal(reply.errcode, 0);
    assert_true(msgid > 0);
    pgw_wx_client_stats after = stats_of(c);
    assert_int_equal(after.token_retries, before.token_retries + 1);
    assert_int_equal(after.token_fetches, before.token_fetches + 1);
    assert_int_equal(after.calls, before.calls + 2);

    json_t *list;
    json_t *doc = requests_to(SEND_PATH, &list);
    assert_int_equal(json_array_size(list), 2 * (round + 1));
    assert_int_equal(req_errcode(list, 2 * round), errcode);
    assert_int_equal(req_errcode(list, 2 * round + 1), 0);
    assert_string_equal(req_token(list, 2 * round), old);
    assert_string_not_equal(req_token(list, 2 * round + 1), old);
    char now[PGW_WX_TOKEN_MAX + 1];
    assert_int_equal(pgw_wx_access_token(c, APP_MP, now, &err), PGW_OK);
    assert_string_equal(req_token(list, 2 * round + 1), now);
    json_decref(doc);
    /* The fake handed out a new token at once: no force_refresh was needed. */
    doc = requests_to(TOKEN_PATH, &list);
    assert_true(
        json_is_false(json_object_get(req_body(list, json_array_size(list) - 1), "force_refresh")));
    json_decref(doc);
}

static void test_token_error_retry(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    add_quota(OPENID_1, 2);
    expect_retried_send(c, 42001, 0);
    expect_retried_send(c, 40001, 1);
    assert_int_equal(quota_left(OPENID_1), 0);
    assert_int_equal(stable_calls(APP_MP), 3);
    assert_int_equal(stats_of(c).token_fetches, 3);
    pgw_wx_client_free(c);
}

/* ---- 3. a token error after the retry is not retried again ------------------ */

static void test_only_one_retry(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    add_quota(OPENID_1, 1);
    char old[PGW_WX_TOKEN_MAX + 1];
    pgw_err err = {0};
    assert_int_equal(pgw_wx_access_token(c, APP_MP, old, &err), PGW_OK);
    fault(json_pack("{s:s,s:i,s:i}", "path", SEND_PATH, "count", 2, "errcode", 42001));

    int64_t msgid = 7;
    pgw_wx_reply reply;
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_EUNAVAILABLE);
    assert_int_equal(reply.errcode, 42001);
    assert_int_equal(msgid, 0);
    assert_int_equal(pgw_wx_classify(PGW_EUNAVAILABLE, &reply), PGW_WX_RETRY);
    assert_non_null(strstr(err.msg, "42001"));
    assert_int_equal(stats_of(c).token_retries, 1);
    assert_int_equal(stats_of(c).calls, 2);

    json_t *list;
    json_t *doc = requests_to(SEND_PATH, &list);
    assert_int_equal(json_array_size(list), 2); /* no loop */
    assert_int_equal(req_errcode(list, 0), 42001);
    assert_int_equal(req_errcode(list, 1), 42001);
    assert_string_equal(req_token(list, 0), old);
    /* The token was still valid at the fake, so stable_token handed it back;
     * the client then asked force_refresh and retried with the new one. */
    assert_string_not_equal(req_token(list, 1), old);
    json_decref(doc);
    doc = requests_to(TOKEN_PATH, &list);
    assert_int_equal(json_array_size(list), 3);
    assert_true(json_is_false(json_object_get(req_body(list, 1), "force_refresh")));
    assert_true(json_is_true(json_object_get(req_body(list, 2), "force_refresh")));
    json_decref(doc);
    assert_int_equal(quota_left(OPENID_1), 1); /* nothing was delivered */

    /* The faults are used up: the next send goes through on the new token. */
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_OK);
    assert_true(msgid > 0);
    assert_int_equal(stats_of(c).token_retries, 1);
    pgw_wx_client_free(c);
}

/*
 * A reply reused by the next call: the send's token error (40001), then
 * the new token's fetch answered 503 with no JSON. The reply must say what
 * that fetch answered (no errcode), not the send's 40001, which made the
 * fetch's 503 read as a refused credential (EIO, give up) where it is
 * WeChat not answering (retry). call() resets what it fills.
 */
static void test_reply_not_stale(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    add_quota(OPENID_1, 1);
    char token[PGW_WX_TOKEN_MAX + 1];
    pgw_err err = {0};
    assert_int_equal(pgw_wx_access_token(c, APP_MP, token, &err), PGW_OK);
    fault(json_pack("{s:s,s:i,s:i}", "path", SEND_PATH, "count", 1, "errcode", 40001));
    fault(json_pack("{s:s,s:i,s:i}", "path", TOKEN_PATH, "count", 1, "http_status", 503));

    int64_t msgid = 7;
    pgw_wx_reply reply;
    int rc = send_sub(c, &msgid, &reply, &err);
    print_message("token error, then a 503 fetch: rc %d errcode %ld (%s)\n", rc, reply.errcode,
                  err.msg);
    assert_int_equal(rc, PGW_EUNAVAILABLE);
    assert_int_equal(reply.errcode, 0);
    assert_string_equal(reply.errmsg, "");
    assert_int_equal(pgw_wx_classify(rc, &reply), PGW_WX_RETRY);
    assert_int_equal(stats_of(c).token_retries, 1);

    /* The faults used up: the same reply struct, a success, says 0. */
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_OK);
    assert_int_equal(reply.errcode, 0);
    assert_true(msgid > 0);
    pgw_wx_client_free(c);
}

/* ---- 4. outcomes ------------------------------------------------------------ */

/*
 * Regression: the token endpoint refusing our appid or secret (40001
 * "invalid credential", 40125, 40013) is our configuration, for an
 * operator: the channel gives up at once, so a notice goes the next way.
 * 40001 there was taken for a stale token, retried with backoff until the
 * notice died.
 */
static void test_token_refusal_gives_up(void **state)
{
    (void)state;
    static const long codes[] = {40001, 40125, 40013};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        pgw_wx_client *c = new_client(NULL);
        fault(json_pack("{s:s,s:i,s:i}", "path", TOKEN_PATH, "count", 1, "errcode", codes[i]));
        pgw_err err = {0};
        pgw_wx_reply reply;
        int64_t msgid;
        int rc = send_sub(c, &msgid, &reply, &err);
        uint64_t calls = stats_of(c).calls;
        pgw_wx_client_free(c);
        print_message("token endpoint errcode %ld: rc %d\n", codes[i], rc);
        assert_int_equal(reply.errcode, codes[i]);
        assert_int_equal(pgw_wx_classify(rc, &reply), PGW_WX_GIVE_UP);
        assert_false(reply.maybe_done);
        assert_int_equal(calls, 0);
    }
}

/* WeChat's daily quota comes back at midnight China time (UTC+8), and in
 * the first minute of WeChat's day is back already (the 45009 is the day
 * before's). */
static void test_quota_back(void **state)
{
    (void)state;
    const int64_t midnight = 1796227200; /* 2026-12-02 00:00:00 UTC+8 */
    assert_int_equal((midnight + PGW_WX_DAY_OFFSET_S) % 86400, 0);
    assert_int_equal(pgw_wx_quota_back(midnight - 1), midnight);
    assert_int_equal(pgw_wx_quota_back(midnight - 86400 + PGW_WX_DAY_SKEW_S), midnight);
    assert_int_equal(pgw_wx_quota_back(midnight - 12 * 3600), midnight);
    assert_int_equal(pgw_wx_quota_back(midnight), midnight);
    assert_int_equal(pgw_wx_quota_back(midnight + PGW_WX_DAY_SKEW_S - 1),
                     midnight + PGW_WX_DAY_SKEW_S - 1);
    assert_int_equal(pgw_wx_quota_back(midnight + PGW_WX_DAY_SKEW_S), midnight + 86400);
}

/* An errmsg's request ids are no part of the cause an operator's line
 * names (a failed login's and a notice's alike), and a short buffer cuts
 * between characters, never inside one. */
static void test_without_request_ids(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"errcode -1 system busy", "errcode -1 system busy"},
        {"errcode -1 system busy hint: [Dr0eSA08131508]", "errcode -1 system busy"},
        {"errcode -1 system busy hint: [t6V0a0473] rid: 63a0b1c2-1", "errcode -1 system busy"},
        {"errcode -1 system busy rid: 63a0b1c2-5d6e7f80", "errcode -1 system busy"},
        {"errcode 40037 bad hint: [a] template hint: [b]!", "errcode 40037 bad template!"},
        {"errcode -1 cut hint: [no end", "errcode -1 cut"},
        {" hint: [x] rid: y", ""},
        {"hint: [kept, no space before it]", "hint: [kept, no space before it]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[128];
        pgw_wx_without_request_ids(cases[i][0], out, sizeof(out));
        assert_string_equal(out, cases[i][1]);
    }
    char fits[6], cut[5]; /* "ab" and a 3-byte character need 5 bytes and a NUL */
    pgw_wx_without_request_ids("ab\xe7\xb3\xbb\xe7\xbb\x9f", fits, sizeof(fits));
    assert_string_equal(fits, "ab\xe7\xb3\xbb");
    pgw_wx_without_request_ids("ab\xe7\xb3\xbb\xe7\xbb\x9f", cut, sizeof(cut));
    assert_string_equal(cut, "ab");
    char one[1];
    pgw_wx_without_request_ids("anything", one, sizeof(one));
    assert_string_equal(one, "");
}

static void test_classify(void **state)
{
    (void)state;
    pgw_wx_reply none = {0}, daily = {.errcode = 45009};
    assert_int_equal(pgw_wx_classify(PGW_OK, &none), PGW_WX_DONE);
    assert_int_equal(pgw_wx_classify(PGW_EUNAVAILABLE, NULL), PGW_WX_RETRY);
    assert_int_equal(pgw_wx_classify(PGW_EUNAVAILABLE, &daily), PGW_WX_QUOTA_DAY);
    assert_int_equal(pgw_wx_classify(PGW_ESTATE, &none), PGW_WX_FALL_THROUGH);
    assert_int_equal(pgw_wx_classify(PGW_EINVAL, &none), PGW_WX_GIVE_UP);
    assert_int_equal(pgw_wx_classify(PGW_EIO, &none), PGW_WX_GIVE_UP);

    pgw_wx_client *c = new_client(NULL);
    pgw_err err = {0};
    pgw_wx_reply reply;
    int64_t msgid;
    char token[PGW_WX_TOKEN_MAX + 1];
    assert_int_equal(pgw_wx_access_token(c, APP_MP, token, &err), PGW_OK);

    /* -1 system busy: try later. */
    fault(json_pack("{s:s,s:i,s:i}", "path", SEND_PATH, "count", 1, "errcode", -1));
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_EUNAVAILABLE);
    assert_int_equal(reply.errcode, -1);
    assert_int_equal(pgw_wx_classify(PGW_EUNAVAILABLE, &reply), PGW_WX_RETRY);

    /* 45009 daily quota: not within a retry's backoff, nor for good (a
     * review: a sender could not tell it from a blip but by errcode). */
    fault(json_pack("{s:s,s:i,s:i}", "path", SEND_PATH, "count", 1, "errcode", 45009));
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_EUNAVAILABLE);
    assert_int_equal(reply.errcode, 45009);
    assert_int_equal(pgw_wx_classify(PGW_EUNAVAILABLE, &reply), PGW_WX_QUOTA_DAY);

    /* No subscription quota: 43101, the next channel. */
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_ESTATE);
    assert_int_equal(reply.errcode, 43101);
    assert_string_equal(reply.errmsg, "user refuse to accept the msg");
    assert_int_equal(pgw_wx_classify(PGW_ESTATE, &reply), PGW_WX_FALL_THROUGH);

    /* A value the fake refuses (time is passed as is): 47003, permanent. */
    add_quota(OPENID_1, 3);
    const pgw_wx_keyword bad_time[] = {{"thing1", "积分到账"}, {"time3", "25:99"}};
    assert_int_equal(pgw_mp_send_subscribe(c, APP_MP, OPENID_1, TEMPLATE_ID, NULL, NULL, bad_time,
                                           2, &msgid, &reply, &err),
                     PGW_EINVAL);
    assert_int_equal(reply.errcode, 47003);
    assert_non_null(strstr(reply.errmsg, "data.time3.value"));
    assert_int_equal(pgw_wx_classify(PGW_EINVAL, &reply), PGW_WX_GIVE_UP);

    /* A thing over 20 characters is sent fitted: 17 and "...". */
    const char *long_ascii = "Points credited for your purchase at the Riverside store";
    const pgw_wx_keyword long_thing[] = {{"thing1", long_ascii}};
    assert_int_equal(pgw_mp_send_subscribe(c, APP_MP, OPENID_1, TEMPLATE_ID, NULL, NULL, long_thing,
                                           1, &msgid, &reply, &err),
                     PGW_OK);
    const char *long_cjk = "您在滨江店的消费已获得积分请在小程序中查看明细谢谢"; /* 25 */
    const pgw_wx_keyword long_cjk_thing[] = {{"thing1", long_cjk}};
    assert_int_equal(pgw_mp_send_subscribe(c, APP_MP, OPENID_1, TEMPLATE_ID, NULL, NULL,
                                           long_cjk_thing, 1, &msgid, &reply, &err),
                     PGW_OK);
    json_t *list;
    json_t *doc = requests_to(SEND_PATH, &list);
    size_t n = json_array_size(list);
    assert_true(n >= 2);
    const char *v1 = json_string_value(json_object_get(
        json_object_get(json_object_get(req_body(list, n - 2), "data"), "thing1"), "value"));
    const char *v2 = json_string_value(json_object_get(
        json_object_get(json_object_get(req_body(list, n - 1), "data"), "thing1"), "value"));
    assert_non_null(v1);
    assert_non_null(v2);
    assert_int_equal(utf8_chars(v1), 20);
    assert_true(ends_with(v1, "..."));
    assert_true(strncmp(v1, long_ascii, 17) == 0);
    assert_int_equal(utf8_chars(v2), 20);
    assert_true(ends_with(v2, "..."));
    assert_true(strncmp(v2, long_cjk, 17 * 3) == 0);
    assert_int_equal(req_errcode(list, n - 1), 0);
    json_decref(doc);

    /* An official-account template to a member who does not follow: 43004. */
    const pgw_wx_keyword tkw[] = {{"first", "积分变动"}, {"keyword1", "120"}};
    pgw_oa_template t = {.openid = OA_OPENID, .template_id = "OA_TPL_1", .kw = tkw, .n_kw = 2};
    assert_int_equal(pgw_oa_send_template(c, APP_OA, &t, &msgid, &reply, &err), PGW_ESTATE);
    assert_int_equal(reply.errcode, 43004);
    assert_int_equal(pgw_wx_classify(PGW_ESTATE, &reply), PGW_WX_FALL_THROUGH);
    /* One who blocked the account (43019, "user blocked": research
     * wechat-api.md, the template message's errcodes) refuses it as one
     * who does not follow: a refusal of this member, the next channel,
     * not a failure of ours. Regression: PGW_EIO, given up as if our
     * configuration were wrong. */
    fault(json_pack("{s:s,s:i,s:i}", "path", TEMPLATE_PATH, "count", 1, "errcode", 43019));
    assert_int_equal(pgw_oa_send_template(c, APP_OA, &t, &msgid, &reply, &err), PGW_ESTATE);
    assert_int_equal(reply.errcode, 43019);
    assert_false(reply.maybe_done);
    assert_int_equal(pgw_wx_classify(PGW_ESTATE, &reply), PGW_WX_FALL_THROUGH);
    /* The same to a subscribe message (the member blocked the mini
     * program): the same refusal, not a send that may have gone. */
    fault(json_pack("{s:s,s:i,s:i}", "path", SEND_PATH, "count", 1, "errcode", 43019));
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_ESTATE);
    assert_int_equal(reply.errcode, 43019);
    assert_false(reply.maybe_done);
    assert_false(reply.unread);
    assert_int_equal(pgw_wx_classify(PGW_ESTATE, &reply), PGW_WX_FALL_THROUGH);

    /* HTTP 500: try later. */
    fault(json_pack("{s:s,s:i,s:i,s:s}", "path", SEND_PATH, "count", 1, "http_status", 500, "body",
                    "Internal Server Error"));
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_EUNAVAILABLE);
    assert_int_equal(reply.errcode, 0);
    assert_true(reply.maybe_done); /* it reached WeChat: perhaps sent */
    assert_int_equal(pgw_wx_classify(PGW_EUNAVAILABLE, &reply), PGW_WX_RETRY);
    assert_non_null(strstr(err.msg, "500"));
    /* The token's fetch failing: the send never left. */
    pgw_wx_client *fresh = new_client(NULL);
    fault(json_pack("{s:s,s:i,s:i,s:s}", "path", TOKEN_PATH, "count", 1, "http_status", 500, "body",
                    "Internal Server Error"));
    assert_int_equal(send_sub(fresh, &msgid, &reply, &err), PGW_EUNAVAILABLE);
    assert_false(reply.maybe_done);
    pgw_wx_client_free(fresh);
    /* Another status: not a WeChat answer. */
    fault(json_pack("{s:s,s:i,s:i,s:s}", "path", SEND_PATH, "count", 1, "http_status", 404, "body",
                    "no"));
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_EIO);
    assert_int_equal(pgw_wx_classify(PGW_EIO, &reply), PGW_WX_GIVE_UP);
    pgw_wx_client_free(c);

    /* Nobody listening: no answer at all. */
    int fd;
    int port = refusing_port(&fd);
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
    pgw_wx_client *down = new_client_at(NULL, base, SECRET_MP);
    assert_int_equal(pgw_wx_access_token(down, APP_MP, token, &err), PGW_EUNAVAILABLE);
    assert_int_equal(send_sub(down, &msgid, &reply, &err), PGW_EUNAVAILABLE);
    assert_int_equal(reply.errcode, 0);
    /* Regression: no token, so no send: nothing of the member's quota may
     * count as used (the notifier took a unit for any answerless failure). */
    assert_false(reply.maybe_done);
    assert_int_equal(pgw_wx_classify(PGW_EUNAVAILABLE, &reply), PGW_WX_RETRY);
    pgw_mp_identity who;
    assert_int_equal(pgw_mp_login(down, APP_MP, "code-X", &who, &reply, &err), PGW_EUNAVAILABLE);
    assert_int_equal(stats_of(down).token_fetches, 2);
    pgw_wx_client_free(down);
    close(fd);
}

/* ---- customer-service text: a reply after the push's answer ------------- */

static void test_custom_text(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    fake_control(&FAKE, "/_fake/followers", "{s:s,s:s,s:b}", "appid", APP_OA, "openid", OA_OPENID,
                 "following", 1);
    pgw_wx_reply reply;
    pgw_err err = {0};
    assert_int_equal(
        pgw_oa_send_text(c, APP_OA, OA_OPENID, "签到成功，获得 5 积分。", &reply, &err), PGW_OK);
    assert_int_equal(reply.errcode, 0);
    json_t *list;
    json_t *doc = requests_to("/cgi-bin/message/custom/send", &list);
    assert_int_equal(json_array_size(list), 1);
    json_t *body = req_body(list, 0);
    assert_string_equal(json_string_value(json_object_get(body, "touser")), OA_OPENID);
    assert_string_equal(json_string_value(json_object_get(body, "msgtype")), "text");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(body, "text"), "content")),
        "签到成功，获得 5 积分。");
    json_decref(doc);
    /* Refused before it leaves: nothing, too much, not UTF-8, not an openid. */
    char big[PGW_OA_TEXT_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *bad_text[] = {"", big, "\xff\xfe"};
    for (size_t i = 0; i < sizeof(bad_text) / sizeof(bad_text[0]); i++)
        assert_int_equal(pgw_oa_send_text(c, APP_OA, OA_OPENID, bad_text[i], &reply, &err),
                         PGW_EINVAL);
    assert_int_equal(pgw_oa_send_text(c, APP_OA, "o/../x", "hi", &reply, &err), PGW_EINVAL);
    big[PGW_OA_TEXT_MAX] = '\0'; /* the longest is sent */
    assert_int_equal(pgw_oa_send_text(c, APP_OA, OA_OPENID, big, &reply, &err), PGW_OK);
    doc = requests_to("/cgi-bin/message/custom/send", &list);
    assert_int_equal(json_array_size(list), 2);
    json_decref(doc);
    /* Someone who does not follow: WeChat's refusal of this member. */
    assert_int_equal(pgw_oa_send_text(c, APP_OA, "oOA_stranger", "hi", &reply, &err), PGW_ESTATE);
    assert_int_equal(reply.errcode, 43004);
    pgw_wx_client_free(c);
}

/* ---- 5. template message -------------------------------------------------- */

static void test_template(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    fake_control(&FAKE, "/_fake/followers", "{s:s,s:s,s:b}", "appid", APP_OA, "openid", OA_OPENID,
                 "following", 1);
    const pgw_wx_keyword kw[] = {{"first", "您的积分有变动"},
                                 {"keyword1", "+120"},
                                 {"thing3", "滨江店消费"},
                                 {"remark", "谢谢"}};
    pgw_oa_template t = {.openid = OA_OPENID,
                         .template_id = "OA_TPL_points",
                         .jump_appid = APP_MP,
                         .jump_page = "pages/points/index?tab=history",
                         .client_msg_id = "notice-000042",
                         .kw = kw,
                         .n_kw = 4};
    int64_t msgid = 0;
    pgw_wx_reply reply;
    pgw_err err = {0};
    assert_int_equal(pgw_oa_send_template(c, APP_OA, &t, &msgid, &reply, &err), PGW_OK);
    assert_int_equal(reply.errcode, 0);
    assert_true(msgid > 0);

    json_t *list;
    json_t *doc = requests_to(TEMPLATE_PATH, &list);
    assert_int_equal(json_array_size(list), 1);
    json_t *body = req_body(list, 0);
    assert_string_equal(json_string_value(json_object_get(body, "touser")), OA_OPENID);
    assert_string_equal(json_string_value(json_object_get(body, "template_id")), "OA_TPL_points");
    json_t *mp = json_object_get(body, "miniprogram");
    assert_true(json_is_object(mp));
    assert_string_equal(json_string_value(json_object_get(mp, "appid")), APP_MP);
    assert_string_equal(json_string_value(json_object_get(mp, "pagepath")),
                        "pages/points/index?tab=history");
    assert_string_equal(json_string_value(json_object_get(body, "client_msg_id")), "notice-000042");
    assert_null(json_object_get(body, "url"));
    json_t *data = json_object_get(body, "data");
    assert_string_equal(json_string_value(json_object_get(json_object_get(data, "first"), "value")),
                        "您的积分有变动");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(data, "keyword1"), "value")), "+120");
    /* The token of the official account, not the mini program's. */
    char oa[PGW_WX_TOKEN_MAX + 1];
    assert_int_equal(pgw_wx_access_token(c, APP_OA, oa, &err), PGW_OK);
    assert_string_equal(req_token(list, 0), oa);
    json_decref(doc);
    doc = fake_call("GET", "/_fake/stats", NULL);
    json_t *delivered = json_object_get(doc, "delivered");
    assert_int_equal(json_array_size(delivered), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(delivered, 0), "msgid")),
                     msgid);
    json_decref(doc);
    assert_int_equal(stable_calls(APP_MP), 0);

    /* Without a mini program there is no jump at all, and no de-dup key. */
    pgw_oa_template plain = {.openid = OA_OPENID,
                             .template_id = "OA_TPL_points",
                             .jump_page = "pages/ignored",
                             .kw = kw,
                             .n_kw = 2};
    int64_t second = 0;
    assert_int_equal(pgw_oa_send_template(c, APP_OA, &plain, &second, &reply, &err), PGW_OK);
    assert_true(second > 0);
    assert_true(second != msgid);
    doc = requests_to(TEMPLATE_PATH, &list);
    assert_int_equal(json_array_size(list), 2);
    body = req_body(list, 1);
    assert_null(json_object_get(body, "miniprogram"));
    assert_null(json_object_get(body, "url"));
    assert_null(json_object_get(body, "client_msg_id"));
    json_decref(doc);
    pgw_wx_client_free(c);
}

/* ---- 5b. who a follower is (user/info) ------------------------------------ */

static void follower(const char *openid, bool following, const char *unionid)
{
    if (unionid != NULL)
        fake_control(&FAKE, "/_fake/followers", "{s:s,s:s,s:b,s:s}", "appid", APP_OA, "openid",
                     openid, "following", following, "unionid", unionid);
    else
        fake_control(&FAKE, "/_fake/followers", "{s:s,s:s,s:b}", "appid", APP_OA, "openid", openid,
                     "following", following);
}

/* subscribe (0 or 1) is told with the unionid: a user who unfollowed
 * before the link asked must not be taken for a follower. */
static void test_user_info(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    char unionid[PGW_WX_OPENID_MAX + 1];
    bool follows = false;
    pgw_wx_reply reply;
    pgw_err err = {0};
    follower(OA_OPENID, true, "uUNION_0001");
    assert_int_equal(pgw_oa_user_unionid(c, APP_OA, OA_OPENID, unionid, &follows, &reply, &err),
                     PGW_OK);
    assert_true(follows);
    assert_string_equal(unionid, "uUNION_0001");

    follower("oOA_no_union", true, NULL); /* the account bound to no open platform */
    assert_int_equal(
        pgw_oa_user_unionid(c, APP_OA, "oOA_no_union", unionid, &follows, &reply, &err), PGW_OK);
    assert_true(follows);
    assert_string_equal(unionid, "");

    follower(OA_OPENID, false, NULL); /* unfollowed: WeChat answers subscribe 0 */
    assert_int_equal(pgw_oa_user_unionid(c, APP_OA, OA_OPENID, unionid, &follows, &reply, &err),
                     PGW_OK);
    assert_false(follows);
    assert_string_equal(unionid, "");

    /* No subscribe in the answer: not taken for either. */
    follower(OA_OPENID, true, NULL);
    fault(json_pack("{s:s,s:i,s:i,s:s}", "path", "/cgi-bin/user/info", "count", 1, "http_status",
                    200, "body", "{\"openid\":\"" OA_OPENID "\",\"unionid\":\"uUNION_0001\"}"));
    assert_int_equal(pgw_oa_user_unionid(c, APP_OA, OA_OPENID, unionid, &follows, &reply, &err),
                     PGW_EIO);
    assert_false(follows);
    assert_string_equal(unionid, "");
    assert_non_null(strstr(err.msg, "subscribe"));

    fault(json_pack("{s:s,s:i,s:i}", "path", "/cgi-bin/user/info", "count", 1, "errcode", -1));
    assert_int_equal(pgw_oa_user_unionid(c, APP_OA, OA_OPENID, unionid, &follows, &reply, &err),
                     PGW_EUNAVAILABLE);
    assert_false(follows);
    assert_int_equal(reply.errcode, -1);
    pgw_wx_client_free(c);
}

/* ---- 5c. a send goes at most once ---------------------------------------- */

/* Messages the fake delivered (subscribe and template). */
static size_t delivered_count(void)
{
    json_t *doc = fake_call("GET", "/_fake/stats", NULL);
    size_t n = json_array_size(json_object_get(doc, "delivered"));
    json_decref(doc);
    return n;
}

static size_t requests_count(const char *path)
{
    json_t *list;
    json_t *doc = requests_to(path, &list);
    size_t n = json_array_size(list);
    json_decref(doc);
    return n;
}

/*
 * A send that left and whose answer we could not keep (over
 * PGW_HTTP_ANSWER_MAX, or no memory for it: 4c1d827's ENOMEM) came after
 * WeChat handled it: maybe_done and unread, as a 200 we cannot parse, so
 * that the notifier neither counts it "not sent" and tells the member by
 * SMS too, nor sends it again (given up). Regressions: (review of
 * 4c1d827) only EUNAVAILABLE was maybe_done, and ETOOLARGE or ENOMEM
 * classified GIVE_UP as a refusal; then it was retried as a timeout is,
 * a second subscribe message sent.
 */
static void test_an_answer_not_kept_may_have_been_done(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    add_quota(OPENID_1, 3);
    char token[PGW_WX_TOKEN_MAX + 1];
    pgw_err err = {0};
    assert_int_equal(pgw_wx_access_token(c, APP_MP, token, &err), PGW_OK);
    fault(json_pack("{s:s,s:i,s:i,s:s,s:i}", "path", SEND_PATH, "count", 1, "http_status", 200,
                    "body", "x", "repeat", PGW_HTTP_ANSWER_MAX + 1));
    int64_t msgid = 0;
    pgw_wx_reply reply;
    int rc = send_sub(c, &msgid, &reply, &err);
    assert_int_equal(rc, PGW_ETOOLARGE);
    if (!reply.maybe_done || !reply.unread || pgw_wx_classify(rc, &reply) != PGW_WX_GIVE_UP)
        fail_msg("an answer too large after the send: maybe_done %d, unread %d, outcome %d (%s); "
                 "want maybe_done, unread, given up",
                 reply.maybe_done, reply.unread, (int)pgw_wx_classify(rc, &reply), err.msg);
    /* A read (GET) does nothing twice: asked again, as after a timeout. */
    fault(json_pack("{s:s,s:i,s:i,s:s,s:i}", "path", "/cgi-bin/user/info", "count", 1,
                    "http_status", 200, "body", "x", "repeat", PGW_HTTP_ANSWER_MAX + 1));
    json_t *answer = NULL;
    rc = pgw_wx_get(c, APP_MP, "/cgi-bin/user/info", "openid=o1&lang=zh_CN", &answer, &reply, &err);
    assert_int_equal(rc, PGW_ETOOLARGE);
    assert_null(answer);
    assert_false(reply.unread);
    assert_int_equal(pgw_wx_classify(rc, &reply), PGW_WX_RETRY);
    pgw_wx_client_free(c);
}

/*
 * An answer whose body we did not keep (over PGW_HTTP_ANSWER_MAX) is
 * classified by its status, as one of that status we could read (README:
 * one rule for an answer not read): only a 200 came after WeChat handled
 * the send (the test above). A 5xx over the bound is a retry as any 5xx
 * is; a 429 or 408 (a proxy's or gateway's in front of WeChat, which
 * answers its own limits with a 200 and an errcode) a retry too, whatever
 * its size, as the SMS adapter's; another 4xx a refusal, neither unread
 * nor maybe done. Regressions: every answer over the bound was given up
 * unread, "may have been sent", whatever its status; then a 429 or 408
 * was given up as any 4xx, a throttled notice never sent.
 */
static void test_an_answer_not_kept_is_read_by_its_status(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    add_quota(OPENID_1, 20);
    char token[PGW_WX_TOKEN_MAX + 1];
    pgw_err err = {0};
    assert_int_equal(pgw_wx_access_token(c, APP_MP, token, &err), PGW_OK);
    static const struct {
        int status;
        int repeat; /* 1: a small page; more: over the bound */
        int rc;
        pgw_wx_outcome outcome;
        bool maybe_done;
    } cases[] = {
        {503, PGW_HTTP_ANSWER_MAX + 1, PGW_EUNAVAILABLE, PGW_WX_RETRY, true},
        {502, PGW_HTTP_ANSWER_MAX + 1, PGW_EUNAVAILABLE, PGW_WX_RETRY, true},
        {429, PGW_HTTP_ANSWER_MAX + 1, PGW_EUNAVAILABLE, PGW_WX_RETRY, true},
        {429, 1, PGW_EUNAVAILABLE, PGW_WX_RETRY, true},
        {408, 1, PGW_EUNAVAILABLE, PGW_WX_RETRY, true},
        {400, PGW_HTTP_ANSWER_MAX + 1, PGW_EIO, PGW_WX_GIVE_UP, false},
        {400, 1, PGW_EIO, PGW_WX_GIVE_UP, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fault(json_pack("{s:s,s:i,s:i,s:s,s:i}", "path", SEND_PATH, "count", 1, "http_status",
                        cases[i].status, "body", "x", "repeat", cases[i].repeat));
        int64_t msgid = 0;
        pgw_wx_reply reply;
        err.msg[0] = '\0';
        int rc = send_sub(c, &msgid, &reply, &err);
        pgw_wx_outcome got = pgw_wx_classify(rc, &reply);
        if (rc != cases[i].rc || got != cases[i].outcome || reply.unread ||
            reply.maybe_done != cases[i].maybe_done)
            fail_msg("HTTP %d, %d byte(s): %s, outcome %d, maybe_done %d, unread %d (%s); want "
                     "%s, outcome %d, maybe_done %d, not unread",
                     cases[i].status, cases[i].repeat, pgw_code_name(rc), (int)got,
                     reply.maybe_done, reply.unread, err.msg, pgw_code_name(cases[i].rc),
                     (int)cases[i].outcome, cases[i].maybe_done);
        char want[32];
        snprintf(want, sizeof(want), "HTTP %d", cases[i].status);
        assert_non_null(strstr(err.msg, want));
    }
    pgw_wx_client_free(c);
}

/*
 * WeChat took a send and answered HTTP 200 with what we cannot read: not
 * JSON, cut, errcode of another type, a msgid past int64 (jansson refuses
 * the whole document; msgid is kept as an int64 or not at all). It may
 * have been done: maybe_done, and not retried (GIVE_UP: sent again, the
 * member may read it twice, a subscribe message having no de-dup key),
 * the message saying the answer could not be read. A msgid of exactly
 * INT64_MAX is read. Regression: such an answer was a refusal
 * (PGW_EIO, not maybe_done), and the notifier told the member by SMS too.
 */
static void test_an_unread_answer_may_have_been_done(void **state)
{
    (void)state;
    static const char *const answers[] = {
        "<html><body>ok</body></html>",
        "",
        "{\"errcode\":0,\"errmsg\":\"ok\",\"msgid\":29440229",
        "{\"errcode\":\"0\",\"errmsg\":\"ok\",\"msgid\":294402298110051942}",
        "{\"errcode\":0,\"errmsg\":\"ok\",\"msgid\":9223372036854775808}",
        "[0]",
    };
    pgw_wx_client *c = new_client(NULL);
    add_quota(OPENID_1, 10);
    pgw_err err = {0};
    int64_t msgid = 0;
    pgw_wx_reply reply;
    for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
        fault(json_pack("{s:s,s:i,s:s}", "path", SEND_PATH, "count", 1, "answer_body", answers[i]));
        int rc = send_sub(c, &msgid, &reply, &err);
        print_message("answer \"%s\": %s\n", answers[i], err.msg);
        if (rc == PGW_OK || !reply.maybe_done || pgw_wx_classify(rc, &reply) != PGW_WX_GIVE_UP ||
            strstr(err.msg, "could not be read") == NULL)
            fail_msg("answer \"%s\": rc %s, maybe_done %d, outcome %d (%s); want it maybe done, "
                     "given up, the answer said not read",
                     answers[i], pgw_code_name(rc), reply.maybe_done,
                     (int)pgw_wx_classify(rc, &reply), err.msg);
    }
    assert_int_equal(requests_count(SEND_PATH), sizeof(answers) / sizeof(answers[0]));
    fault(json_pack("{s:s,s:i,s:s}", "path", SEND_PATH, "count", 1, "answer_body",
                    "{\"errcode\":0,\"errmsg\":\"ok\",\"msgid\":9223372036854775807}"));
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_OK);
    assert_true(msgid == INT64_MAX);

    /* The official account's template message the same. */
    fake_control(&FAKE, "/_fake/followers", "{s:s,s:s,s:b}", "appid", APP_OA, "openid", OA_OPENID,
                 "following", 1);
    const pgw_wx_keyword kw[] = {{"first", "积分变动"}, {"keyword1", "+120"}};
    pgw_oa_template t = {.openid = OA_OPENID, .template_id = "OA_TPL_points", .kw = kw, .n_kw = 2};
    fault(json_pack("{s:s,s:i,s:s}", "path", TEMPLATE_PATH, "count", 1, "answer_body",
                    "{\"errcode\":0,\"msgid\":18446744073709551615}"));
    int rc = pgw_oa_send_template(c, APP_OA, &t, &msgid, &reply, &err);
    assert_int_not_equal(rc, PGW_OK);
    assert_true(reply.maybe_done);
    assert_int_equal(pgw_wx_classify(rc, &reply), PGW_WX_GIVE_UP);
    pgw_wx_client_free(c);
}

/*
 * Regression (the mp-login review): libcurl sends a request once more, on
 * a new connection, when a kept-alive one closes before any answer
 * ("Connection died, retrying a fresh connect"). WeChat that took a send
 * and lost its answer got it twice: the member read the notice twice, and
 * the caller, told "sent", never knew its first copy may have gone. A
 * send is now made at most once: the lost answer is an unclear outcome
 * (no answer, maybe_done), as a timeout is. A GET does nothing twice
 * (user/info reads, a login code is spent once): it is still sent again.
 */
static void test_send_not_resent(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    add_quota(OPENID_1, 3);
    char token[PGW_WX_TOKEN_MAX + 1];
    pgw_err err = {0};
    assert_int_equal(pgw_wx_access_token(c, APP_MP, token, &err), PGW_OK);
    /* This thread's connection to the fake is kept alive: the control call
     * just made on it is reused by the send, whose answer is lost. */
    fault(json_pack("{s:s,s:i,s:b}", "path", SEND_PATH, "count", 1, "lose_answer", 1));
    int64_t msgid = 0;
    pgw_wx_reply reply;
    int rc = send_sub(c, &msgid, &reply, &err);
    size_t sent = requests_count(SEND_PATH), got = delivered_count();
    if (sent != 1 || got != 1)
        fail_msg("one send: the fake received %zu and delivered %zu (rc %s: %s)", sent, got,
                 pgw_code_name(rc), err.msg);
    assert_int_equal(rc, PGW_EUNAVAILABLE);
    assert_true(reply.maybe_done); /* it may have gone: it did */
    assert_int_equal(pgw_wx_classify(rc, &reply), PGW_WX_RETRY);
    assert_int_equal(quota_left(OPENID_1), 2);

    /* The official account's template message the same. */
    fake_control(&FAKE, "/_fake/followers", "{s:s,s:s,s:b}", "appid", APP_OA, "openid", OA_OPENID,
                 "following", 1);
    const pgw_wx_keyword kw[] = {{"first", "积分变动"}, {"keyword1", "+120"}};
    pgw_oa_template t = {.openid = OA_OPENID, .template_id = "OA_TPL_points", .kw = kw, .n_kw = 2};
    assert_int_equal(pgw_wx_access_token(c, APP_OA, token, &err), PGW_OK);
    fault(json_pack("{s:s,s:i,s:b}", "path", TEMPLATE_PATH, "count", 1, "lose_answer", 1));
    rc = pgw_oa_send_template(c, APP_OA, &t, &msgid, &reply, &err);
    sent = requests_count(TEMPLATE_PATH);
    if (sent != 1 || delivered_count() != 2)
        fail_msg("one template message: the fake received %zu (rc %s: %s)", sent, pgw_code_name(rc),
                 err.msg);
    assert_int_equal(rc, PGW_EUNAVAILABLE);
    assert_true(reply.maybe_done);

    /* The next send on a new connection goes as ever. */
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_OK);
    assert_int_equal(delivered_count(), 3);

    /* A GET is sent again: user/info read twice reads nothing more. */
    follower("oOA_reader_0001", true, NULL);
    fault(json_pack("{s:s,s:i,s:b}", "path", "/cgi-bin/user/info", "count", 1, "close", 1));
    char unionid[PGW_WX_OPENID_MAX + 1];
    bool follows = false;
    assert_int_equal(
        pgw_oa_user_unionid(c, APP_OA, "oOA_reader_0001", unionid, &follows, &reply, &err), PGW_OK);
    assert_true(follows);
    assert_int_equal(requests_count("/cgi-bin/user/info"), 2);
    pgw_wx_client_free(c);
}

/* ---- 6. login and phone number ------------------------------------------- */

static void test_login_and_phone(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    fake_control(&FAKE, "/_fake/login_codes", "{s:s,s:s,s:s,s:s}", "appid", APP_MP, "code",
                 "code-A1", "openid", "oMP_user_0001", "unionid", "oUN_union_0001");
    fake_control(&FAKE, "/_fake/login_codes", "{s:s,s:s,s:s}", "appid", APP_MP, "code", "code-B2",
                 "openid", "oMP_user_0002");
    pgw_mp_identity who;
    pgw_wx_reply reply;
    pgw_err err = {0};
    assert_int_equal(pgw_mp_login(c, APP_MP, "code-A1", &who, &reply, &err), PGW_OK);
    assert_string_equal(who.openid, "oMP_user_0001");
    assert_string_equal(who.unionid, "oUN_union_0001");
    assert_int_equal(reply.errcode, 0);
    /* Single use. */
    assert_int_equal(pgw_mp_login(c, APP_MP, "code-A1", &who, &reply, &err), PGW_EUNAUTHORIZED);
    assert_int_equal(reply.errcode, 40163);
    assert_string_equal(who.openid, "");
    assert_int_equal(pgw_mp_login(c, APP_MP, "code-unknown", &who, &reply, &err),
                     PGW_EUNAUTHORIZED);
    assert_int_equal(reply.errcode, 40029);
    /* No unionid when the user has none. */
    assert_int_equal(pgw_mp_login(c, APP_MP, "code-B2", &who, &reply, &err), PGW_OK);
    assert_string_equal(who.openid, "oMP_user_0002");
    assert_string_equal(who.unionid, "");
    /* A code that is not [A-Za-z0-9_-] never leaves the process. */
    assert_int_equal(pgw_mp_login(c, APP_MP, "code&secret=x", &who, &reply, &err), PGW_EINVAL);
    json_t *list;
    json_t *doc = requests_to(LOGIN_PATH, &list);
    assert_int_equal(json_array_size(list), 4);
    json_t *q = json_object_get(json_array_get(list, 0), "query");
    assert_string_equal(json_string_value(json_object_get(q, "js_code")), "code-A1");
    assert_string_equal(json_string_value(json_object_get(q, "grant_type")), "authorization_code");
    assert_string_equal(json_string_value(json_object_get(q, "appid")), APP_MP);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "method")),
                        "GET");
    json_decref(doc);
    assert_int_equal(stable_calls(APP_MP), 0); /* login needs no access token */

    fake_control(&FAKE, "/_fake/phone_codes", "{s:s,s:s,s:s}", "appid", APP_MP, "code", "ph-cn-1",
                 "phone", "13800138000");
    fake_control(&FAKE, "/_fake/phone_codes", "{s:s,s:s,s:s,s:i}", "appid", APP_MP, "code",
                 "ph-us-1", "phone", "4155550100", "country_code", 1);
    fake_control(&FAKE, "/_fake/phone_codes", "{s:s,s:s,s:s,s:b}", "appid", APP_MP, "code",
                 "ph-cn-2", "phone", "13900139000", "country_code_as_string", 1);
    /* A code WeChat gave to another user (oB-2), asked for by oA-1. */
    fake_control(&FAKE, "/_fake/phone_codes", "{s:s,s:s,s:s,s:s}", "appid", APP_MP, "code",
                 "ph-cn-3", "phone", "13700137000", "openid", "oB-2");
    char phone[32];
    bool odd = true;
    assert_int_equal(
        pgw_mp_phone(c, APP_MP, "oA-1", "ph-cn-1", phone, sizeof(phone), &odd, &reply, &err),
        PGW_OK);
    assert_string_equal(phone, "13800138000");
    assert_int_equal(
        pgw_mp_phone(c, APP_MP, "oA-1", "ph-us-1", phone, sizeof(phone), &odd, &reply, &err),
        PGW_EINVAL);
    assert_false(odd); /* the member's number, not WeChat's answer: nothing to tell */
    assert_int_equal(
        pgw_mp_phone(c, APP_MP, "oA-1", "ph-cn-2", phone, sizeof(phone), &odd, &reply, &err),
        PGW_OK);
    assert_string_equal(phone, "13900139000");
    /* Single use. */
    assert_int_equal(
        pgw_mp_phone(c, APP_MP, "oA-1", "ph-cn-1", phone, sizeof(phone), &odd, &reply, &err),
        PGW_EUNAUTHORIZED);
    assert_int_equal(reply.errcode, 40029);
    /* Another user's: WeChat checks the openid sent, and refuses it. */
    phone[0] = '\0';
    assert_int_equal(
        pgw_mp_phone(c, APP_MP, "oA-1", "ph-cn-3", phone, sizeof(phone), &odd, &reply, &err),
        PGW_EUNAUTHORIZED);
    assert_int_equal(reply.errcode, 40029);
    assert_non_null(strstr(err.msg, "only for the WeChat user it was given to"));
    assert_string_equal(phone, "");
    /* Without an openid WeChat would check nothing: it never goes out. */
    assert_int_equal(
        pgw_mp_phone(c, APP_MP, "", "ph-cn-3", phone, sizeof(phone), &odd, &reply, &err),
        PGW_EINVAL);
    assert_int_equal(
        pgw_mp_phone(c, APP_MP, "oB-2", "ph-cn-3", phone, sizeof(phone), &odd, &reply, &err),
        PGW_OK);
    assert_string_equal(phone, "13700137000");
    doc = requests_to("/wxa/business/getuserphonenumber", &list);
    assert_int_equal(json_array_size(list), 6);
    assert_string_equal(json_string_value(json_object_get(req_body(list, 0), "code")), "ph-cn-1");
    assert_string_equal(json_string_value(json_object_get(req_body(list, 0), "openid")), "oA-1");
    assert_string_equal(json_string_value(json_object_get(req_body(list, 5), "openid")), "oB-2");
    json_decref(doc);
    /* WeChat answers, but with no number this app can use: unusable, and
     * the message says what came without the number. */
    fake_control(&FAKE, "/_fake/phone_codes", "{s:s,s:s,s:s,s:b}", "appid", APP_MP, "code",
                 "ph-none", "phone", "13600136000", "no_phone_info", 1);
    fake_control(&FAKE, "/_fake/phone_codes", "{s:s,s:s,s:s,s:s}", "appid", APP_MP, "code",
                 "ph-other", "phone", "13600136000", "watermark_appid", "wx00000000000000ff");
    odd = false;
    assert_int_equal(
        pgw_mp_phone(c, APP_MP, "oA-1", "ph-none", phone, sizeof(phone), &odd, &reply, &err),
        PGW_EINVAL);
    assert_true(odd);
    assert_non_null(strstr(err.msg, "no phone_info in its answer (its keys: errcode, errmsg)"));
    odd = false;
    assert_int_equal(
        pgw_mp_phone(c, APP_MP, "oA-1", "ph-other", phone, sizeof(phone), &odd, &reply, &err),
        PGW_EINVAL);
    assert_true(odd);
    assert_non_null(strstr(err.msg, "watermark names wx00000000000000ff, not this gateway's"));
    assert_null(strstr(err.msg, "13600136000"));
    /* An empty number is no number (R2). */
    fake_control(&FAKE, "/_fake/phone_codes", "{s:s,s:s,s:s}", "appid", APP_MP, "code", "ph-empty",
                 "phone", "");
    odd = false;
    assert_int_equal(
        pgw_mp_phone(c, APP_MP, "oA-1", "ph-empty", phone, sizeof(phone), &odd, &reply, &err),
        PGW_EINVAL);
    assert_true(odd);
    assert_non_null(strstr(err.msg, "lacks purePhoneNumber"));
    assert_int_equal(stable_calls(APP_MP), 1);
    pgw_wx_client_free(c);
}

/* WeChat's errmsg is kept to PGW_WX_ERRMSG_MAX bytes: a long Chinese one
 * must be cut between characters, or the reply and the phone refusal
 * (which quotes it mid-sentence) are not UTF-8. "a" and 67 three-byte
 * characters put byte 200 inside the last one. */
static void test_long_errmsg_cut_on_a_character(void **state)
{
    (void)state;
    pgw_wx_client *c = new_client(NULL);
    char errmsg[1 + 67 * 3 + 1] = "a";
    for (int i = 0; i < 67; i++)
        strcat(errmsg, "码");
    fault(json_pack("{s:s,s:i,s:i,s:s}", "path", "/wxa/business/getuserphonenumber", "count", 1,
                    "errcode", 40029, "errmsg", errmsg));
    char phone[32];
    bool odd = false;
    pgw_wx_reply reply;
    pgw_err err = {0};
    assert_int_equal(
        pgw_mp_phone(c, APP_MP, "oA-1", "ph-any", phone, sizeof(phone), &odd, &reply, &err),
        PGW_EUNAUTHORIZED);
    assert_int_equal(reply.errcode, 40029);
    assert_true(pgw_utf8_valid(reply.errmsg));
    assert_int_equal(strlen(reply.errmsg), 1 + 66 * 3);
    assert_true(pgw_utf8_valid(err.msg));
    assert_non_null(strstr(err.msg, "only for the WeChat user it was given to"));
    pgw_wx_client_free(c);
}

/* ---- 7. secrets and tokens stay out of messages ---------------------------- */

static void assert_clean(const char *msg, const char *secret, const char *token)
{
    assert_null(strstr(msg, secret));
    assert_null(strstr(msg, "secret="));
    assert_null(strstr(msg, "access_token="));
    if (token != NULL && token[0] != '\0')
        assert_null(strstr(msg, token));
}

static void test_secrets_not_shown(void **state)
{
    (void)state;
    pgw_wx_client *bad = new_client_at(NULL, FAKE.base, WRONG_SEC);
    char token[PGW_WX_TOKEN_MAX + 1] = "";
    pgw_err err = {0};
    int rc = pgw_wx_access_token(bad, APP_MP, token, &err);
    assert_int_not_equal(rc, PGW_OK);
    assert_int_equal(err.code, rc);
    assert_non_null(strstr(err.msg, TOKEN_PATH));
    assert_clean(err.msg, WRONG_SEC, NULL);
    json_t *list;
    json_t *doc = requests_to(TOKEN_PATH, &list);
    assert_int_equal(json_array_size(list), 1);
    assert_int_equal(req_errcode(list, 0), 40125);
    json_decref(doc);
    /* A send that needs the token fails the same way, with no call made. */
    int64_t msgid;
    pgw_wx_reply reply;
    memset(&err, 0, sizeof(err));
    assert_int_not_equal(send_sub(bad, &msgid, &reply, &err), PGW_OK);
    assert_clean(err.msg, WRONG_SEC, NULL);
    assert_int_equal(stats_of(bad).calls, 0);
    /* jscode2session carries the secret in its query. */
    fake_control(&FAKE, "/_fake/login_codes", "{s:s,s:s,s:s}", "appid", APP_MP, "code", "code-S1",
                 "openid", "oMP_user_0009");
    pgw_mp_identity who;
    memset(&err, 0, sizeof(err));
    assert_int_not_equal(pgw_mp_login(bad, APP_MP, "code-S1", &who, &reply, &err), PGW_OK);
    assert_int_equal(reply.errcode, 40125);
    assert_non_null(strstr(err.msg, LOGIN_PATH));
    assert_clean(err.msg, WRONG_SEC, NULL);
    pgw_wx_client_free(bad);

    /* No answer at all (the fake drops the connection): curl's message must
     * not carry the URL's query either. curl sends a GET once more on a
     * new connection when a kept-alive one closes before any answer (a
     * send it does not: test_send_not_resent), so the fault holds until
     * it is cleared. */
    pgw_wx_client *c = new_client(NULL);
    assert_int_equal(pgw_wx_access_token(c, APP_MP, token, &err), PGW_OK);
    fault(json_pack("{s:s,s:i,s:b}", "path", SEND_PATH, "count", 10, "close", 1));
    memset(&err, 0, sizeof(err));
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, SEND_PATH));
    assert_clean(err.msg, SECRET_MP, token);
    json_decref(fake_call("POST", "/_fake/faults/clear", json_object()));
    fault(json_pack("{s:s,s:i,s:b}", "path", LOGIN_PATH, "count", 10, "close", 1));
    memset(&err, 0, sizeof(err));
    assert_int_equal(pgw_mp_login(c, APP_MP, "code-S1", &who, &reply, &err), PGW_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, LOGIN_PATH));
    assert_clean(err.msg, SECRET_MP, token);
    json_decref(fake_call("POST", "/_fake/faults/clear", json_object()));
    /* An errmsg is WeChat's text, passed through: it names the path, not the URL. */
    fault(json_pack("{s:s,s:i,s:i}", "path", SEND_PATH, "count", 1, "errcode", 48001));
    memset(&err, 0, sizeof(err));
    assert_int_equal(send_sub(c, &msgid, &reply, &err), PGW_EIO);
    assert_clean(err.msg, SECRET_MP, token);
    pgw_wx_client_free(c);
}

/* ---- 7b. err may be NULL (core/error.h) ----------------------------------- */

/* Runs the call in a child process, so a crash fails this test only. */
static void expect_in_child(int (*call)(void), int want)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(call() == want ? 0 : 3);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg("the call died of signal %d", WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static int wrong_secret_null_err(void)
{
    pgw_wx_client *c = new_client_at(NULL, FAKE.base, WRONG_SEC);
    char token[PGW_WX_TOKEN_MAX + 1];
    int rc = pgw_wx_access_token(c, APP_MP, token, NULL);
    pgw_wx_client_free(c);
    return rc;
}

static int refused_port;

static int no_answer_null_err(void)
{
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", refused_port);
    pgw_wx_client *c = new_client_at(NULL, base, SECRET_MP);
    char token[PGW_WX_TOKEN_MAX + 1];
    int rc = pgw_wx_access_token(c, APP_MP, token, NULL);
    pgw_wx_client_free(c);
    return rc;
}

static void test_null_err(void **state)
{
    (void)state;
    expect_in_child(wrong_secret_null_err, PGW_EIO); /* a wrong secret is configuration */
    int fd;
    refused_port = refusing_port(&fd);
    expect_in_child(no_answer_null_err, PGW_EUNAVAILABLE);
    close(fd);
}

/* ---- 8. the token shared through the database ------------------------------ */

static int cache_load(void *ctx, const char *appid, char token[PGW_WX_TOKEN_MAX + 1],
                      int64_t *expires_at, pgw_err *err)
{
    return pgw_store_token_load(ctx, appid, token, PGW_WX_TOKEN_MAX + 1, expires_at, err);
}

static int cache_lease(void *ctx, const char *appid, int64_t now, int64_t until, bool *taken,
                       pgw_err *err)
{
    return pgw_store_token_lease(ctx, appid, now, until, taken, err);
}

static int cache_save(void *ctx, const char *appid, const char *token, int64_t expires_at,
                      pgw_err *err)
{
    return pgw_store_token_save(ctx, appid, token, expires_at, err);
}

static int cache_forget(void *ctx, const char *appid, const char *token, pgw_err *err)
{
    return pgw_store_token_forget(ctx, appid, token, err);
}

static int cache_release(void *ctx, const char *appid, pgw_err *err)
{
    return pgw_store_token_release(ctx, appid, err);
}

static pgw_wx_token_cache cache_on(pgw_store *store)
{
    return (pgw_wx_token_cache){.load = cache_load,
                                .lease = cache_lease,
                                .save = cache_save,
                                .forget = cache_forget,
                                .release = cache_release,
                                .ctx = store};
}

static int setup_db(void **state)
{
    reset_fake(state);
    return db_fixture_setup(state);
}

static int teardown_db(void **state)
{
    return db_fixture_teardown(state);
}

typedef struct saver {
    pgw_store *store;
    int rc;
    int64_t saved_at_ms;
} saver;

/* Plays another instance that holds the lease and stores its token late. */
static void *saver_main(void *arg)
{
    saver *s = arg;
    sleep_ms(350); /* not on one of the client's 100 ms polls */
    pgw_err err;
    s->saved_at_ms = mono_ms();
    s->rc =
        pgw_store_token_save(s->store, APP_MP, "LEASED-TOKEN-1", (int64_t)time(NULL) + 7200, &err);
    return NULL;
}

static void test_shared_cache(void **state)
{
    db_fixture *f = *state;
    pgw_store *s1 = NULL, *s2 = NULL, *s3 = NULL;
    pgw_err err = {0};
    assert_int_equal(pgw_store_open(f->url, true, &s1, &err), PGW_OK);
    assert_int_equal(pgw_store_open(f->url, false, &s2, &err), PGW_OK);
    assert_int_equal(pgw_store_open(f->url, false, &s3, &err), PGW_OK);
    pgw_wx_token_cache k1 = cache_on(s1), k2 = cache_on(s2);
    pgw_wx_client *a = new_client(&k1), *b = new_client(&k2);

    /* A fetches and stores; B reads what A stored. */
    char ta[PGW_WX_TOKEN_MAX + 1], tb[PGW_WX_TOKEN_MAX + 1];
    assert_int_equal(pgw_wx_access_token(a, APP_MP, ta, &err), PGW_OK);
    assert_int_equal(stats_of(a).token_fetches, 1);
    assert_int_equal(stable_calls(APP_MP), 1);
    char stored[PGW_WX_TOKEN_MAX + 1];
    int64_t expires_at = 0;
    assert_int_equal(pgw_store_token_load(s3, APP_MP, stored, sizeof(stored), &expires_at, &err),
                     PGW_OK);
    assert_string_equal(stored, ta);
    int64_t now = (int64_t)time(NULL);
    assert_true(expires_at > now + 7100 && expires_at <= now + 7201);
    assert_int_equal(pgw_wx_access_token(b, APP_MP, tb, &err), PGW_OK);
    assert_string_equal(tb, ta);
    assert_int_equal(stats_of(b).token_fetches, 0);
    assert_int_equal(stable_calls(APP_MP), 1);

    /* The token expires under both: A replaces it; B, refused with the same
     * old token, finds A's new one stored and fetches nothing. */
    add_quota(OPENID_1, 2);
    fake_control(&FAKE, "/_fake/expire_tokens", "{s:s,s:i}", "appid", APP_MP, "errcode", 42001);
    int64_t msgid;
    pgw_wx_reply reply;
    assert_int_equal(send_sub(a, &msgid, &reply, &err), PGW_OK);
    assert_int_equal(stats_of(a).token_fetches, 2);
    assert_int_equal(stats_of(a).token_retries, 1);
    assert_int_equal(stable_calls(APP_MP), 2);
    assert_int_equal(send_sub(b, &msgid, &reply, &err), PGW_OK);
    assert_int_equal(stats_of(b).token_retries, 1);
    assert_int_equal(stats_of(b).token_fetches, 0);
    assert_int_equal(stable_calls(APP_MP), 2);
    assert_int_equal(pgw_wx_access_token(a, APP_MP, ta, &err), PGW_OK);
    assert_int_equal(pgw_wx_access_token(b, APP_MP, tb, &err), PGW_OK);
    assert_string_equal(tb, ta);
    assert_int_equal(pgw_store_token_load(s3, APP_MP, stored, sizeof(stored), &expires_at, &err),
                     PGW_OK);
    assert_string_equal(stored, ta);

    /* Another instance holds the refresh lease: a client that needs a token
     * waits for what that instance stores instead of fetching its own. */
    bool taken = false;
    now = (int64_t)time(NULL);
    assert_int_equal(pgw_store_token_lease(s3, APP_MP, now, now + PGW_WX_LEASE_S, &taken, &err),
                     PGW_OK);
    assert_true(taken);
    assert_int_equal(pgw_store_token_forget(s3, APP_MP, ta, &err), PGW_OK);
    assert_int_equal(pgw_store_token_load(s3, APP_MP, stored, sizeof(stored), &expires_at, &err),
                     PGW_ENOTFOUND);
    /* The lease is held: nobody else gets it now. */
    assert_int_equal(pgw_store_token_lease(s2, APP_MP, now, now + PGW_WX_LEASE_S, &taken, &err),
                     PGW_OK);
    assert_false(taken);

    pgw_wx_client *cc = new_client(&k1);
    saver sv = {.store = s3, .rc = 1};
    pthread_t th;
    int64_t asked_at = mono_ms();
    assert_int_equal(pthread_create(&th, NULL, saver_main, &sv), 0);
    char tc[PGW_WX_TOKEN_MAX + 1] = "";
    int rc = pgw_wx_access_token(cc, APP_MP, tc, &err);
    int64_t got_at = mono_ms();
    pthread_join(th, NULL);
    assert_int_equal(sv.rc, PGW_OK);
    assert_int_equal(rc, PGW_OK);
    assert_string_equal(tc, "LEASED-TOKEN-1");
    assert_true(got_at >= sv.saved_at_ms);
    assert_true(got_at - asked_at < 5000); /* polled, not the whole lease */
    assert_int_equal(stats_of(cc).token_fetches, 0);
    assert_int_equal(stable_calls(APP_MP), 2);
    /* Saving ended the lease. */
    now = (int64_t)time(NULL);
    assert_int_equal(pgw_store_token_lease(s2, APP_MP, now, now + PGW_WX_LEASE_S, &taken, &err),
                     PGW_OK);
    assert_true(taken);

    pgw_wx_client_free(cc);
    pgw_wx_client_free(a);
    pgw_wx_client_free(b);
    pgw_store_close(s1);
    pgw_store_close(s2);
    pgw_store_close(s3);
}

/* Another instance stores its token and ends its lease between this
 * client's load (nothing stored) and its lease (now free): the client must
 * still use the stored token, not fetch one of its own. The lease callback
 * below lets the other instance's save land exactly there. */
typedef struct racing_cache {
    pgw_store *own, *other;
    int leases;
} racing_cache;

static int race_load(void *ctx, const char *appid, char token[PGW_WX_TOKEN_MAX + 1],
                     int64_t *expires_at, pgw_err *err)
{
    racing_cache *r = ctx;
    return pgw_store_token_load(r->own, appid, token, PGW_WX_TOKEN_MAX + 1, expires_at, err);
}

static int race_lease(void *ctx, const char *appid, int64_t now, int64_t until, bool *taken,
                      pgw_err *err)
{
    racing_cache *r = ctx;
    if (r->leases++ == 0) {
        int rc = pgw_store_token_save(r->other, appid, "OTHER-INSTANCE-TOKEN",
                                      (int64_t)time(NULL) + 7200, err);
        if (rc != PGW_OK)
            return rc;
    }
    return pgw_store_token_lease(r->own, appid, now, until, taken, err);
}

static int race_save(void *ctx, const char *appid, const char *token, int64_t expires_at,
                     pgw_err *err)
{
    racing_cache *r = ctx;
    return pgw_store_token_save(r->own, appid, token, expires_at, err);
}

static int race_forget(void *ctx, const char *appid, const char *token, pgw_err *err)
{
    racing_cache *r = ctx;
    return pgw_store_token_forget(r->own, appid, token, err);
}

static int race_release(void *ctx, const char *appid, pgw_err *err)
{
    racing_cache *r = ctx;
    return pgw_store_token_release(r->own, appid, err);
}

static void test_shared_cache_save_before_lease(void **state)
{
    db_fixture *f = *state;
    pgw_store *own = NULL, *other = NULL;
    pgw_err err = {0};
    assert_int_equal(pgw_store_open(f->url, true, &own, &err), PGW_OK);
    assert_int_equal(pgw_store_open(f->url, false, &other, &err), PGW_OK);
    /* The other instance holds the lease while it refreshes. */
    bool taken = false;
    int64_t now = (int64_t)time(NULL);
    assert_int_equal(pgw_store_token_lease(other, APP_MP, now, now + PGW_WX_LEASE_S, &taken, &err),
                     PGW_OK);
    assert_true(taken);

    racing_cache r = {.own = own, .other = other};
    pgw_wx_token_cache k = {.load = race_load,
                            .lease = race_lease,
                            .save = race_save,
                            .forget = race_forget,
                            .release = race_release,
                            .ctx = &r};
    pgw_wx_client *c = new_client(&k);
    char token[PGW_WX_TOKEN_MAX + 1] = "";
    int rc = pgw_wx_access_token(c, APP_MP, token, &err);
    uint64_t fetches = stats_of(c).token_fetches;
    long calls = stable_calls(APP_MP);
    pgw_wx_client_free(c);
    pgw_store_close(own);
    pgw_store_close(other);
    assert_int_equal(rc, PGW_OK);
    assert_true(r.leases >= 1);
    assert_string_equal(token, "OTHER-INSTANCE-TOKEN");
    assert_int_equal(fetches, 0);
    assert_int_equal(calls, 0);
}

/*
 * Regression: a request's waits count in its bound. Another instance held
 * the token-refresh lease and the token endpoint answered slowly: the
 * client polled the whole lease (PGW_WX_LEASE_S), then fetched, then
 * called: eleven seconds where the notifier counts four timeouts per WeChat
 * channel (PGW_WX_REQUEST_CALLS), so a notice outlasted its
 * claim's lease and could be sent twice. Within the bound the send still
 * goes, the first time and after a token error.
 */
#define QUICK_MS 1000L
#define BOUND_MS (PGW_WX_REQUEST_CALLS * QUICK_MS)
static void test_shared_cache_lease_wait_bounded(void **state)
{
    db_fixture *f = *state;
    pgw_store *own = NULL, *other = NULL;
    pgw_err err = {0};
    assert_int_equal(pgw_store_open(f->url, true, &own, &err), PGW_OK);
    assert_int_equal(pgw_store_open(f->url, false, &other, &err), PGW_OK);
    pgw_wx_token_cache k = cache_on(own);
    pgw_wx_client *c = NULL;
    assert_int_equal(pgw_wx_client_new(&k, QUICK_MS, &c, &err), PGW_OK);
    assert_int_equal(pgw_wx_client_add_app(c, APP_MP, SECRET_MP, FAKE.base, &err), PGW_OK);
    add_quota(OPENID_1, 2);
    fault(json_pack("{s:s,s:i,s:i}", "path", TOKEN_PATH, "count", 2, "delay_ms", 800));
    int64_t took[2];
    int rc[2];
    for (int i = 0; i < 2; i++) {
        if (i == 1) /* the token is refused now: the retry needs another */
            fake_control(&FAKE, "/_fake/expire_tokens", "{s:s,s:i}", "appid", APP_MP, "errcode",
                         40001);
        bool taken = false;
        int64_t now = (int64_t)time(NULL);
        assert_int_equal(
            pgw_store_token_lease(other, APP_MP, now, now + PGW_WX_LEASE_S, &taken, &err), PGW_OK);
        assert_true(taken); /* another instance refreshes, and never stores */
        int64_t msgid = 0;
        pgw_wx_reply reply;
        int64_t started = mono_ms();
        rc[i] = send_sub(c, &msgid, &reply, &err);
        took[i] = mono_ms() - started;
    }
    uint64_t retries = stats_of(c).token_retries;
    pgw_wx_client_free(c);
    pgw_store_close(own);
    pgw_store_close(other);
    for (int i = 0; i < 2; i++)
        print_message("send %d: rc %d in %lld ms (bound %ld)\n", i, rc[i], (long long)took[i],
                      BOUND_MS);
    for (int i = 0; i < 2; i++) {
        assert_true(took[i] <= BOUND_MS + 300); /* a poll and a few statements late at most */
        assert_int_equal(rc[i], PGW_OK);
    }
    assert_int_equal(retries, 1);
}

int main(void)
{
    pgw_err err;
    if (pgw_http_client_init(&err) != PGW_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_single_flight, reset_fake),
        cmocka_unit_test_setup_teardown(test_token_refreshed_before_expiry, reset_fake,
                                        restore_token_lifetime),
        cmocka_unit_test_setup(test_failed_fetch_shared, reset_fake),
        cmocka_unit_test_setup(test_token_error_retry, reset_fake),
        cmocka_unit_test_setup(test_only_one_retry, reset_fake),
        cmocka_unit_test_setup(test_reply_not_stale, reset_fake),
        cmocka_unit_test_setup(test_classify, reset_fake),
        cmocka_unit_test(test_quota_back),
        cmocka_unit_test(test_without_request_ids),
        cmocka_unit_test_setup(test_token_refusal_gives_up, reset_fake),
        cmocka_unit_test_setup(test_template, reset_fake),
        cmocka_unit_test_setup(test_custom_text, reset_fake),
        cmocka_unit_test_setup(test_send_not_resent, reset_fake),
        cmocka_unit_test_setup(test_an_answer_not_kept_may_have_been_done, reset_fake),
        cmocka_unit_test_setup(test_an_answer_not_kept_is_read_by_its_status, reset_fake),
        cmocka_unit_test_setup(test_an_unread_answer_may_have_been_done, reset_fake),
        cmocka_unit_test_setup(test_user_info, reset_fake),
        cmocka_unit_test_setup(test_login_and_phone, reset_fake),
        cmocka_unit_test_setup(test_long_errmsg_cut_on_a_character, reset_fake),
        cmocka_unit_test_setup(test_secrets_not_shown, reset_fake),
        cmocka_unit_test_setup(test_null_err, reset_fake),
        cmocka_unit_test_setup_teardown(test_shared_cache, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_shared_cache_save_before_lease, setup_db, teardown_db),
        cmocka_unit_test_setup_teardown(test_shared_cache_lease_wait_bounded, setup_db,
                                        teardown_db),
    };
    /* The PostgreSQL run (unit.pg.*) needs only the tests on a database:
     * the others were run by unit.test_wechat_client already. */
    const char *pg = getenv("PGW_TEST_PG_DIR");
    if (pg != NULL && pg[0] != '\0')
        cmocka_set_test_filter("test_shared_cache*");
    int failed = cmocka_run_group_tests(tests, start_fake, end_fake);
    pgw_http_client_cleanup();
    return failed;
}
