/*
 * client.c - see client.h.
 */
#include "client.h"

#include "core/assertions.h"
#include "core/utf8.h"
#include "util/env.h"
#include "util/http_client.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define APPID_MAX     32
#define SECRET_MAX    128
#define API_BASE_MAX  256
#define URL_MAX       (API_BASE_MAX + PGW_WX_TOKEN_MAX + 512)
#define FORCE_GAP_S   30 /* stable_token ignores force_refresh more often than this */
#define LEASE_POLL_US 100000

typedef struct wx_app {
    char appid[APPID_MAX + 1];
    char secret[SECRET_MAX + 1];
    char api_base[API_BASE_MAX + 1];
    pthread_mutex_t lock;
    pthread_cond_t fetched;
    bool fetching; /* one thread fetches; the others wait on `fetched` */
    char token[PGW_WX_TOKEN_MAX + 1];
    int64_t expires_at;  /* unix seconds */
    int64_t forced_at;   /* the last force_refresh */
    uint64_t generation; /* fetches finished: a waiter sees whether its fetch failed */
    int last_rc;
    pgw_wx_reply last_reply;
    char last_err[PGW_ERR_MSG_MAX];
} wx_app;

struct pgw_wx_client {
    pgw_wx_token_cache cache;
    bool has_cache;
    long timeout_ms;
    size_t n_apps;
    wx_app apps[PGW_WX_APPS_MAX];
    pthread_mutex_t stats_lock;
    pgw_wx_client_stats stats;
};

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* Deadlines are on this clock: a step of the wall clock must not cut or
 * stretch a request. */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* When a request started now must be done (client.h PGW_WX_REQUEST_CALLS). */
static int64_t deadline_of(const pgw_wx_client *c)
{
    return mono_ms() + PGW_WX_REQUEST_CALLS * c->timeout_ms;
}

static void count(pgw_wx_client *c, uint64_t *field)
{
    pthread_mutex_lock(&c->stats_lock);
    (*field)++;
    pthread_mutex_unlock(&c->stats_lock);
}

pgw_wx_outcome pgw_wx_classify(int rc, const pgw_wx_reply *reply)
{
    if (rc == PGW_OK)
        return PGW_WX_DONE;
    /* Sent with no answer (a timeout, a connection closed): a retry, not
     * a refusal the next channel may follow. Answered and not read (a
     * 200 not understood; a send's answer over our bound): WeChat handled
     * it, done most likely; a retry would do it again (the caller marks
     * it maybe done). */
    if (reply != NULL && reply->maybe_done)
        return reply->unread ? PGW_WX_GIVE_UP : PGW_WX_RETRY;
    if (rc == PGW_ESTATE)
        return PGW_WX_FALL_THROUGH;
    /* A daily quota (45009) does not come back within a retry's backoff,
     * but it does come back: not a refusal for good either. */
    if (rc == PGW_EUNAVAILABLE && reply != NULL && reply->errcode == 45009)
        return PGW_WX_QUOTA_DAY;
    if (rc == PGW_EUNAVAILABLE)
        return PGW_WX_RETRY;
    return PGW_WX_GIVE_UP;
}

void pgw_wx_without_request_ids(const char *msg, char *out, size_t cap)
{
    PGW_ASSERT(msg != NULL && out != NULL && cap > 0);
    size_t used = 0;
    for (const char *p = msg; *p != '\0' && used + 1 < cap;) {
        if (strncmp(p, " rid: ", 6) == 0)
            break;
        if (strncmp(p, " hint: [", 8) == 0) {
            const char *end = strchr(p, ']');
            p = end != NULL ? end + 1 : p + strlen(p);
            continue;
        }
        out[used++] = *p++;
    }
    out[used] = '\0';
    out[pgw_utf8_prefix(out, used)] = '\0'; /* a character cut by cap */
}

int64_t pgw_wx_quota_back(int64_t now)
{
    int64_t into_day = ((now + PGW_WX_DAY_OFFSET_S) % 86400 + 86400) % 86400;
    return into_day < PGW_WX_DAY_SKEW_S ? now : now + (86400 - into_day);
}

/* The rc of a WeChat errcode (client.h says which). */
static int rc_of(long errcode)
{
    switch (errcode) {
    case 0:
        return PGW_OK;
    case -1:    /* system busy */
    case -1000: /* system error */
    case 45009: /* daily quota */
    case 45011: /* per-minute quota */
    case 40001: /* token errors left after the one retry */
    case 40014:
    case 42001:
        return PGW_EUNAVAILABLE;
    case 43101: /* no subscription quota left */
    case 43004: /* does not follow the account */
    case 43019: /* blocked the account: refuses it as one who does not follow */
        return PGW_ESTATE;
    case 40029: /* invalid code: the client must ask WeChat for a new one */
    case 40163: /* code used */
        return PGW_EUNAUTHORIZED;
    case 40226: /* a high-risk user: WeChat blocks the login */
        return PGW_ERISK;
    case 40003: /* invalid openid */
    case 40037: /* invalid template */
    case 47003: /* invalid argument */
    case 41030: /* page not released */
        return PGW_EINVAL;
    default: /* 40002, 40013, 40125, 40164, 48001 ...: our configuration */
        return PGW_EIO;
    }
}
static bool token_error(long errcode)
{
    return errcode == 40001 || errcode == 40014 || errcode == 42001;
}

int pgw_wx_client_new(const pgw_wx_token_cache *cache, long timeout_ms, pgw_wx_client **out,
                      pgw_err *err)
{
    *out = NULL;
    pgw_wx_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the WeChat client");
    if (cache != NULL) {
        c->cache = *cache;
        c->has_cache = true;
    }
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : PGW_HTTP_TIMEOUT_MS;
    pthread_mutex_init(&c->stats_lock, NULL);
    *out = c;
    return PGW_OK;
}

void pgw_wx_client_free(pgw_wx_client *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_apps; i++) {
        pthread_mutex_destroy(&c->apps[i].lock);
        pthread_cond_destroy(&c->apps[i].fetched);
    }
    pthread_mutex_destroy(&c->stats_lock);
    /* The secret and tokens should not outlive the client in freed memory. */
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

/* An appid for the middle of a message: its first 32 bytes, a character
 * cut there and any byte no character holds shown as '?', so that the
 * message stays UTF-8 (the id is the caller's, not yet checked). */
static void id_shown(const char *appid, char out[33])
{
    snprintf(out, 33, "%s", appid);
    pgw_utf8_scrub(out);
}

int pgw_wx_client_add_app(pgw_wx_client *c, const char *appid, const char *secret,
                          const char *api_base, pgw_err *err)
{
    if (c->n_apps == PGW_WX_APPS_MAX)
        return pgw_err_set(err, PGW_EFULL, "at most %d WeChat apps", PGW_WX_APPS_MAX);
    if (appid[0] == '\0' || strlen(appid) > APPID_MAX || secret[0] == '\0' ||
        strlen(secret) > SECRET_MAX || strlen(api_base) > API_BASE_MAX ||
        (strncmp(api_base, "http://", 7) != 0 && strncmp(api_base, "https://", 8) != 0)) {
        char shown[33];
        id_shown(appid, shown);
        return pgw_err_set(err, PGW_EINVAL,
                           "WeChat app %s: needs an appid, a secret (at most %d bytes) and an "
                           "http(s) api_base",
                           shown, SECRET_MAX);
    }
    wx_app *a = &c->apps[c->n_apps];
    memset(a, 0, sizeof(*a));
    snprintf(a->appid, sizeof(a->appid), "%s", appid);
    snprintf(a->secret, sizeof(a->secret), "%s", secret);
    snprintf(a->api_base, sizeof(a->api_base), "%s", api_base);
    size_t n = strlen(a->api_base);
    while (n > 0 && a->api_base[n - 1] == '/')
        a->api_base[--n] = '\0';
    pthread_mutex_init(&a->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* the deadlines' clock */
    pthread_cond_init(&a->fetched, &attr);
    pthread_condattr_destroy(&attr);
    c->n_apps++;
    return PGW_OK;
}

static wx_app *app_of(pgw_wx_client *c, const char *appid, pgw_err *err)
{
    for (size_t i = 0; i < c->n_apps; i++) {
        if (strcmp(c->apps[i].appid, appid) == 0)
            return &c->apps[i];
    }
    char shown[33];
    id_shown(appid, shown);
    pgw_err_set(err, PGW_EINVAL, "no WeChat app %s is configured", shown);
    return NULL;
}

/* Why jansson could not read an answer, in our words: its own quote the
 * text near the fault, which may be a token's (stable_token's answer). */
static const char *why_not_json(const pgw_http_answer *http, const json_t *doc,
                                const json_error_t *jerr)
{
    if (doc != NULL)
        return "not a JSON object";
    if (http->body_len == 0)
        return "empty";
    switch (json_error_code(jerr)) {
    case json_error_numeric_overflow:
        return "a number past int64";
    case json_error_premature_end_of_input:
        return "cut short";
    default:
        return "not JSON";
    }
}

/* An HTTP 200 answer we cannot read (pgw_wx_reply.unread). */
static int unread(const char *path, const char *why, pgw_wx_reply *reply, pgw_err *err)
{
    reply->unread = true;
    return pgw_err_set(err, PGW_EIO, "WeChat %s: HTTP 200, its answer could not be read (%s)", path,
                       why);
}

/* The rc an answer's HTTP status alone gives: PGW_OK for a 200, whose
 * body says the rest. One rule for an answer read and for one whose body
 * was not kept (too large, no memory: call). WeChat answers its own
 * limits with a 200 and an errcode (45009, 45011): a 429 or 408 is a
 * proxy's or gateway's in front of it, which took nothing and says try
 * later, as the SMS adapter reads them too, not a refusal. */
static int status_rc(long status)
{
    if (status >= 500 || status == 429 || status == 408)
        return PGW_EUNAVAILABLE;
    return status == 200 ? PGW_OK : PGW_EIO;
}

/* Reads WeChat's answer: JSON with an errcode (absent means 0). */
static int read_answer(const pgw_http_answer *http, const char *path, json_t **answer,
                       pgw_wx_reply *reply, pgw_err *err)
{
    *answer = NULL;
    int by_status = status_rc(http->status);
    if (by_status != PGW_OK)
        return pgw_err_set(err, by_status, "WeChat %s: HTTP %ld", path, http->status);
    /* A number past int64 (a msgid) fails the whole document here: never
     * read cut or rounded. */
    json_error_t jerr;
    json_t *doc = json_loadb(http->body, http->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return unread(path, why_not_json(http, doc, &jerr), reply, err);
    }
    json_t *code = json_object_get(doc, "errcode");
    if (code != NULL && !json_is_integer(code)) {
        json_decref(doc);
        return unread(path, "errcode is not a number", reply, err);
    }
    reply->errcode = code ? (long)json_integer_value(code) : 0;
    const char *msg = json_string_value(json_object_get(doc, "errmsg"));
    /* Kept whole characters only: a long Chinese errmsg cut inside one is
     * no longer UTF-8, in the reply or the messages that quote it. */
    snprintf(reply->errmsg, sizeof(reply->errmsg), "%.*s",
             msg ? (int)pgw_utf8_prefix(msg, PGW_WX_ERRMSG_MAX) : 0, msg ? msg : "");
    int rc = rc_of(reply->errcode);
    if (rc != PGW_OK) {
        json_decref(doc);
        return pgw_err_set(err, rc, "WeChat %s: errcode %ld %s", path, reply->errcode,
                           reply->errmsg);
    }
    *answer = doc;
    return PGW_OK;
}

/* *sent (when not NULL): whether the request went out (pgw_http_answer).
 * `repeatable`: curl may send it twice (http_client.h): a read, a token
 * not forced, a code WeChat spends once; never a send.
 * The call ends by `deadline` (mono_ms): with no time left it is not made.
 * The reply is this call's alone: a call WeChat does not answer (no time,
 * no connection, a 5xx) must not pass on an errcode an earlier call put
 * in the same reply (a token retry reuses it). */
static int call(pgw_wx_client *c, const char *method, const char *url, const char *path,
                const char *body, bool repeatable, int64_t deadline, json_t **answer,
                pgw_wx_reply *reply, bool *sent, pgw_err *err)
{
    reply->errcode = 0;
    reply->errmsg[0] = '\0';
    reply->unread = false;
    int64_t left = deadline - mono_ms();
    if (sent != NULL)
        *sent = false;
    if (left <= 0)
        return pgw_err_set(err, PGW_EUNAVAILABLE, "WeChat %s: no time left for the call", path);
    pgw_http_call hc = {.method = method,
                        .url = url,
                        .timeout_ms = left < c->timeout_ms ? (long)left : c->timeout_ms,
                        .repeatable = repeatable};
    if (body != NULL) {
        hc.headers[0] = "Content-Type: application/json; charset=utf-8";
        hc.body = body;
        hc.body_len = strlen(body);
    }
    pgw_http_answer http;
    int rc = pgw_http_do(&hc, &http, err);
    if (sent != NULL)
        *sent = http.request_sent;
    /* An answer whose body was not kept is still an answer of its status:
     * a 5xx over the bound (a gateway's page) is a 5xx, not a 200 we
     * could not read (reply->unread), which with_token takes it for. */
    bool unkept = rc == PGW_ETOOLARGE || rc == PGW_ENOMEM;
    int by_status = status_rc(http.status);
    if (unkept && http.status != 0 && by_status != PGW_OK)
        return pgw_err_set(err, by_status, "WeChat %s: HTTP %ld, its answer not kept (%s)", path,
                           http.status, rc == PGW_ETOOLARGE ? "too large" : "no memory");
    if (rc != PGW_OK)
        return err != NULL ? pgw_err_prefix(err, "WeChat %s: ", path) : rc;
    rc = read_answer(&http, path, answer, reply, err);
    pgw_http_answer_free(&http);
    return rc;
}

/* cgi-bin/stable_token: a token and its expiry. */
static int fetch_token(pgw_wx_client *c, wx_app *a, bool force, int64_t deadline,
                       char token[PGW_WX_TOKEN_MAX + 1], int64_t *expires_at, pgw_wx_reply *reply,
                       pgw_err *err)
{
    static const char path[] = "/cgi-bin/stable_token";
    char url[URL_MAX];
    snprintf(url, sizeof(url), "%s%s", a->api_base, path);
    json_t *req = json_pack("{s:s,s:s,s:s,s:b}", "grant_type", "client_credential", "appid",
                            a->appid, "secret", a->secret, "force_refresh", force);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (body == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for a token request");
    json_t *answer = NULL;
    count(c, &c->stats.token_fetches);
    /* The caller learns what the token call answered: a wrong secret
     * (40125, EIO) is for an operator, not for a retry. So is 40001 here
     * ("invalid credential"): no token of ours was sent to be stale. */
    /* Twice, a forced fetch would replace the token the first one made. */
    int rc = call(c, "POST", url, path, body, !force, deadline, &answer, reply, NULL, err);
    OPENSSL_cleanse(body, strlen(body)); /* it held the secret */
    free(body);
    if (rc == PGW_EUNAVAILABLE && token_error(reply->errcode))
        rc = pgw_err_set(err, PGW_EIO, "WeChat %s: errcode %ld %s", path, reply->errcode,
                         reply->errmsg);
    if (rc != PGW_OK)
        return rc;
    const char *t = json_string_value(json_object_get(answer, "access_token"));
    json_t *in = json_object_get(answer, "expires_in");
    rc = t != NULL && t[0] != '\0' && strlen(t) <= PGW_WX_TOKEN_MAX && json_is_integer(in) &&
                 json_integer_value(in) > 0 && json_integer_value(in) <= 86400
             ? PGW_OK
             : pgw_err_set(err, PGW_EUNAVAILABLE, "WeChat %s: no usable token in the answer", path);
    if (rc == PGW_OK) {
        snprintf(token, PGW_WX_TOKEN_MAX + 1, "%s", t);
        *expires_at = now_s() + json_integer_value(in);
    }
    json_decref(answer);
    return rc;
}

static bool fresh(int64_t expires_at)
{
    return expires_at - PGW_WX_TOKEN_MARGIN_S > now_s();
}

/* A token from the shared cache, waiting for another instance's refresh
 * while it holds the lease; fetches (and stores) one when it is ours to,
 * or when waiting longer would leave the request no time to fetch and
 * call: the wait is on the clock, statements included, so that it fits in
 * the request's bound however long the lease. */
static int refresh_shared(pgw_wx_client *c, wx_app *a, const char *failed, bool force,
                          int64_t deadline, char *token, int64_t *expires_at, pgw_wx_reply *reply,
                          pgw_err *err)
{
    const pgw_wx_token_cache *k = &c->cache;
    for (int64_t started = mono_ms();;) {
        /* A stored token other than the one refused is another instance's
         * refresh (forced or not): use it rather than force again. */
        int rc = k->load(k->ctx, a->appid, token, expires_at, err);
        bool usable =
            rc == PGW_OK && fresh(*expires_at) && (failed == NULL || strcmp(token, failed) != 0);
        if (usable)
            return PGW_OK;
        if (rc != PGW_OK && rc != PGW_ENOTFOUND)
            return rc;
        bool taken = false;
        int64_t now = now_s();
        rc = k->lease(k->ctx, a->appid, now, now + PGW_WX_LEASE_S, &taken, err);
        if (rc != PGW_OK)
            return rc;
        if (taken) { /* stored between our read and our lease? */
            rc = k->load(k->ctx, a->appid, token, expires_at, err);
            if (rc != PGW_OK && rc != PGW_ENOTFOUND)
                return rc;
            if (rc == PGW_OK && fresh(*expires_at) &&
                (failed == NULL || strcmp(token, failed) != 0))
                return PGW_OK;
        }
        int64_t at = mono_ms();
        if (taken || at - started >= PGW_WX_LEASE_S * 1000 || deadline - at <= 2 * c->timeout_ms) {
            rc = fetch_token(c, a, force, deadline, token, expires_at, reply, err);
            if (rc == PGW_OK) /* saving ends the lease */
                return k->save(k->ctx, a->appid, token, *expires_at, err);
            /* A failed fetch ends it too, so the next instance need not wait
             * it out. If even that fails, the lease lapses by itself within
             * PGW_WX_LEASE_S: the fetch's failure is what the caller needs. */
            (void)k->release(k->ctx, a->appid, NULL);
            return rc;
        }
        usleep(LEASE_POLL_US); /* another instance is refreshing: read what it stores */
    }
}
/* The app's token: cached, or fetched by one thread while the others wait.
 * `failed` (may be NULL) is a token a call was just refused with. */
static int fetch_either(pgw_wx_client *c, wx_app *a, const char *failed, bool force,
                        int64_t deadline, char *token, int64_t *expires_at, pgw_wx_reply *reply,
                        pgw_err *err)
{
    return c->has_cache
               ? refresh_shared(c, a, failed, force, deadline, token, expires_at, reply, err)
               : fetch_token(c, a, force, deadline, token, expires_at, reply, err);
}

/* Waits (a->lock held) for another thread's fetch, until `deadline`. */
static bool wait_fetched(wx_app *a, int64_t deadline)
{
    struct timespec until = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000L};
    int rc = 0;
    while (a->fetching && rc == 0) /* 0 also on a spurious wakeup */
        rc = pthread_cond_timedwait(&a->fetched, &a->lock, &until);
    return !a->fetching;
}

static int token_for(pgw_wx_client *c, wx_app *a, const char *failed, int64_t deadline,
                     char out[PGW_WX_TOKEN_MAX + 1], pgw_wx_reply *reply, pgw_err *err)
{
    pthread_mutex_lock(&a->lock);
    if (failed != NULL && strcmp(a->token, failed) == 0) { /* not replaced meanwhile */
        a->token[0] = '\0';
        a->expires_at = 0;
    }
    uint64_t generation = a->generation;
    if (!wait_fetched(a, deadline)) {
        pthread_mutex_unlock(&a->lock);
        return pgw_err_set(err, PGW_EUNAVAILABLE,
                           "WeChat /cgi-bin/stable_token: the token being fetched came too late");
    }
    /* The fetch we waited for failed: share its failure, do not all refetch. */
    if (a->generation != generation && a->last_rc != PGW_OK) {
        int rc = a->last_rc;
        *reply = a->last_reply;
        pthread_mutex_unlock(&a->lock);
        return pgw_err_set(err, rc, "%s", a->last_err);
    }
    if (a->token[0] != '\0' && fresh(a->expires_at)) {
        memcpy(out, a->token, PGW_WX_TOKEN_MAX + 1);
        pthread_mutex_unlock(&a->lock);
        return PGW_OK;
    }
    a->fetching = true;
    pthread_mutex_unlock(&a->lock);

    char token[PGW_WX_TOKEN_MAX + 1] = "";
    int64_t expires_at = 0;
    int rc = PGW_OK;
    if (failed != NULL && c->has_cache) /* so other instances stop using it */
        rc = c->cache.forget(c->cache.ctx, a->appid, failed, err);
    if (rc == PGW_OK)
        rc = fetch_either(c, a, failed, false, deadline, token, &expires_at, reply, err);
    /* The platform handed back the token it just refused: make it issue a
     * new one (at most every FORCE_GAP_S, WeChat's own limit). */
    bool force = rc == PGW_OK && failed != NULL && strcmp(token, failed) == 0;
    if (force && now_s() - a->forced_at >= FORCE_GAP_S) {
        a->forced_at = now_s();
        rc = fetch_either(c, a, failed, true, deadline, token, &expires_at, reply, err);
    }

    pthread_mutex_lock(&a->lock);
    if (rc == PGW_OK) {
        memcpy(a->token, token, sizeof(token));
        a->expires_at = expires_at;
        memcpy(out, token, sizeof(token));
    }
    a->generation++;
    a->last_rc = rc;
    a->last_reply = *reply;
    snprintf(a->last_err, sizeof(a->last_err), "%s", rc != PGW_OK && err ? err->msg : "");
    a->fetching = false;
    pthread_cond_broadcast(&a->fetched);
    pthread_mutex_unlock(&a->lock);
    OPENSSL_cleanse(token, sizeof(token));
    return rc;
}
int pgw_wx_access_token(pgw_wx_client *c, const char *appid, char out[PGW_WX_TOKEN_MAX + 1],
                        pgw_err *err)
{
    pgw_wx_reply reply = {0};
    wx_app *a = app_of(c, appid, err);
    return a ? token_for(c, a, NULL, deadline_of(c), out, &reply, err) : PGW_EINVAL;
}

/* A call with the app's access token (query: more parameters, already
 * URL-encoded, or ""); retried once with a new token on a token error. */
static int with_token(pgw_wx_client *c, const char *appid, const char *method, const char *path,
                      const char *query, const char *body, json_t **answer, pgw_wx_reply *reply,
                      pgw_err *err)
{
    *answer = NULL;
    memset(reply, 0, sizeof(*reply));
    wx_app *a = app_of(c, appid, err);
    if (a == NULL)
        return PGW_EINVAL;
    char token[PGW_WX_TOKEN_MAX + 1], url[URL_MAX];
    int64_t deadline = deadline_of(c);
    int rc = token_for(c, a, NULL, deadline, token, reply, err);
    for (int attempt = 0; rc == PGW_OK; attempt++) {
        int n = snprintf(url, sizeof(url), "%s%s?access_token=%s%s%s", a->api_base, path, token,
                         query[0] ? "&" : "", query);
        if (n < 0 || (size_t)n >= sizeof(url)) {
            rc = pgw_err_set(err, PGW_ETOOLARGE, "WeChat %s: request too long", path);
            break;
        }
        count(c, &c->stats.calls);
        bool sent = false;
        /* A POST is a send (a message) or spends a code: at most once. */
        bool repeatable = strcmp(method, "GET") == 0;
        rc = call(c, method, url, path, body, repeatable, deadline, answer, reply, &sent, err);
        /* Sent, and no answer of WeChat's read: none came, we could not
         * keep it (too large, no memory for it) or not read it (unread):
         * it may have been done. */
        reply->maybe_done =
            sent && reply->errcode == 0 &&
            (rc == PGW_EUNAVAILABLE || rc == PGW_ETOOLARGE || rc == PGW_ENOMEM || reply->unread);
        /* A send's answer that came too large to keep, or with no memory
         * for it, came after WeChat handled the request: not read, as a
         * 200 we cannot parse (pgw_wx_reply.unread), and not sent again.
         * A read (GET) is asked again as before: it does nothing twice. */
        if (reply->maybe_done && !repeatable && (rc == PGW_ETOOLARGE || rc == PGW_ENOMEM))
            reply->unread = true;
        if (rc == PGW_OK || attempt == 1 || !token_error(reply->errcode))
            break;
        count(c, &c->stats.token_retries);
        char failed[PGW_WX_TOKEN_MAX + 1];
        memcpy(failed, token, sizeof(failed));
        /* The reply goes on: a fetch (call) puts its own answer in it. */
        rc = token_for(c, a, failed, deadline, token, reply, err);
        OPENSSL_cleanse(failed, sizeof(failed));
    }
    OPENSSL_cleanse(url, sizeof(url));
    OPENSSL_cleanse(token, sizeof(token));
    return rc;
}

int pgw_wx_post(pgw_wx_client *c, const char *appid, const char *path, const json_t *body,
                json_t **answer, pgw_wx_reply *reply, pgw_err *err)
{
    *answer = NULL;
    memset(reply, 0, sizeof(*reply));
    char *text = json_dumps(body, JSON_COMPACT);
    if (text == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for a WeChat request");
    int rc = with_token(c, appid, "POST", path, "", text, answer, reply, err);
    free(text);
    return rc;
}

int pgw_wx_get(pgw_wx_client *c, const char *appid, const char *path, const char *query,
               json_t **answer, pgw_wx_reply *reply, pgw_err *err)
{
    return with_token(c, appid, "GET", path, query, NULL, answer, reply, err);
}

int pgw_wx_get_with_secret(pgw_wx_client *c, const char *appid, const char *path, const char *query,
                           json_t **answer, pgw_wx_reply *reply, pgw_err *err)
{
    *answer = NULL;
    memset(reply, 0, sizeof(*reply));
    wx_app *a = app_of(c, appid, err);
    if (a == NULL)
        return PGW_EINVAL;
    char url[URL_MAX];
    int n = snprintf(url, sizeof(url), "%s%s?appid=%s&secret=%s&%s", a->api_base, path, a->appid,
                     a->secret, query);
    if (n < 0 || (size_t)n >= sizeof(url))
        return pgw_err_set(err, PGW_ETOOLARGE, "WeChat %s: request too long", path);
    count(c, &c->stats.calls);
    /* jscode2session spends the code once: sent again, WeChat says so (40163). */
    int rc =
        call(c, "GET", url, path, NULL, true, mono_ms() + c->timeout_ms, answer, reply, NULL, err);
    OPENSSL_cleanse(url, sizeof(url));
    return rc;
}

void pgw_wx_client_get_stats(pgw_wx_client *c, pgw_wx_client_stats *out)
{
    pthread_mutex_lock(&c->stats_lock);
    *out = c->stats;
    pthread_mutex_unlock(&c->stats_lock);
}

bool pgw_wechat_mp_env_set(const pgw_wechat_channel *mp, char *unset, size_t cap)
{
    const char *vars[] = {mp->secret_env};
    return pgw_env_all_set(vars, 1, unset, cap);
}

bool pgw_wechat_oa_env_set(const pgw_wechat_channel *oa, char *unset, size_t cap)
{
    /* A configuration naming an EncodingAESKey asks for safe mode; run
     * without it, the account would take plain pushes, which safe mode
     * refuses, and refuse WeChat's encrypted ones for want of fields. */
    const char *vars[] = {oa->secret_env, oa->token_env, oa->aes_key_env};
    return pgw_env_all_set(vars, oa->aes_key_env[0] != '\0' ? 3 : 2, unset, cap);
}
