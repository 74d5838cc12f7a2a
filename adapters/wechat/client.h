/*
 * client.h - calls to WeChat's server API, and the access tokens they need.
 *
 * One client serves every appid the gateway speaks for (the mini program
 * and the official account). Facts: research/wechat-api.md sections 1-5.
 *
 * Access tokens (section 3): fetched from cgi-bin/stable_token, which
 * hands every caller the same token while it is valid, so instances never
 * invalidate each other's. A token is used until PGW_WX_TOKEN_MARGIN_S
 * before it expires. When several threads need a new one at once, one
 * fetches and the rest wait for it (no thundering herd). A call answered
 * 40001, 40014 or 42001 drops the token (only if it is still the one that
 * failed: another thread may have replaced it already), fetches another and
 * is retried once; if the platform hands back the very token that failed,
 * the second fetch asks force_refresh (at most every 30 s, as WeChat allows).
 *
 * Several gateway instances: the optional shared cache (the database) holds
 * the token and a short refresh lease, so one instance refreshes and the
 * others read what it stored.
 *
 * Neither the secret nor a token is ever put in a message or a log: errors
 * name the API path only.
 *
 * Threads: every function may be called from any thread; calls block (the
 * gateway makes them on its outbound workers). The client owns copies of
 * everything it is given.
 */
#ifndef PGW_ADAPTERS_WECHAT_CLIENT_H
#define PGW_ADAPTERS_WECHAT_CLIENT_H

#include "config/config.h"
#include "core/error.h"

#include <jansson.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_WX_TOKEN_MAX      512 /* WeChat: reserve at least 512 characters */
#define PGW_WX_APPS_MAX       4
#define PGW_WX_TOKEN_MARGIN_S 300 /* stable tokens rotate 5 minutes before expiry */
#define PGW_WX_LEASE_S        10  /* how long one instance may take to refresh */
#define PGW_WX_ERRMSG_MAX     200

/* What WeChat answered: errcode 0 on success. */
typedef struct pgw_wx_reply {
    long errcode;
    char errmsg[PGW_WX_ERRMSG_MAX + 1];
    /* The API request itself went out and what became of it is unknown (no
     * answer, a 5xx, an answer not read: `unread`): it may have been done.
     * False when it never left (the token could not be had, no connection)
     * or WeChat answered. */
    bool maybe_done;
    /* WeChat answered HTTP 200 with what we cannot read: not JSON, cut,
     * errcode not a number, a number past int64 (a msgid: jansson refuses
     * the document, so msgid is an int64 or not read at all); or, to a
     * POST (a send), an HTTP 200 over PGW_HTTP_ANSWER_MAX or with no
     * memory for it (one of another status is that status's failure: a
     * 5xx PGW_EUNAVAILABLE, a 4xx PGW_EIO, whatever its size). WeChat
     * answers so after handling the request: with
     * maybe_done (the call's own answer, not its token's), done most
     * likely, and not to be asked again (the SMS adapter's rule too:
     * sms.h pgw_sms_result.unread). */
    bool unread;
} pgw_wx_reply;

/* What a sender should do after a call (notifications). */
typedef enum pgw_wx_outcome {
    PGW_WX_DONE = 0,     /* accepted */
    PGW_WX_RETRY,        /* busy, timed out, 5xx, 429, 408: try again later */
    PGW_WX_FALL_THROUGH, /* 43101 no quota, 43004 not following, 43019 blocked: next channel */
    /* A permanent refusal; or, with the reply's maybe_done (its unread),
     * an answer not read after the request went out: it may have been
     * done, and asked again it may be done twice (a message read twice) */
    PGW_WX_GIVE_UP,
    /* 45009: the app's daily quota of the call is used up: the same call
     * fails until WeChat's day turns (pgw_wx_quota_back), not for a blip */
    PGW_WX_QUOTA_DAY,
} pgw_wx_outcome;

/* Classifies a call's result (rc from the functions here, and its reply). */
pgw_wx_outcome pgw_wx_classify(int rc, const pgw_wx_reply *reply);

/* An error's message `msg` without WeChat's request ids, which errmsg may
 * carry: the older " hint: [...]" (up to its "]", or to the end when cut
 * inside it) and the newer " rid: ...", which ends it. What an operator's
 * line names as the cause: the same for every request, or each failure is
 * news to the log's limit (core/log_limit.h). Writes at most cap - 1 bytes
 * and a NUL (cap > 0), never cutting a UTF-8 character. */
void pgw_wx_without_request_ids(const char *msg, char *out, size_t cap);

/* WeChat's day is China's (UTC+8, no daylight saving), whatever the
 * mall's zone; a 45009 in its first PGW_WX_DAY_SKEW_S seconds is the day
 * before's, met with a clock a little behind WeChat's or ours. */
#define PGW_WX_DAY_OFFSET_S (8 * 3600)
#define PGW_WX_DAY_SKEW_S   60

/*
 * When WeChat's daily quotas come back after a 45009 met at `now` (unix
 * seconds): the next midnight of WeChat's day; `now` itself in that day's
 * first PGW_WX_DAY_SKEW_S seconds (the quota is back already: retry as
 * after a blip). One answer for the mini program's Retry-After and the
 * notifier's wait.
 */
int64_t pgw_wx_quota_back(int64_t now);

/* The shared token store (all callbacks return PGW_OK or a PGW_E... code). */
typedef struct pgw_wx_token_cache {
    /* The stored token of appid and when it expires; PGW_ENOTFOUND when none. */
    int (*load)(void *ctx, const char *appid, char token[PGW_WX_TOKEN_MAX + 1], int64_t *expires_at,
                pgw_err *err);
    /* Takes appid's refresh lease until `until` unless another holds one past `now`. */
    int (*lease)(void *ctx, const char *appid, int64_t now, int64_t until, bool *taken,
                 pgw_err *err);
    /* Stores a new token (and ends the lease). */
    int (*save)(void *ctx, const char *appid, const char *token, int64_t expires_at, pgw_err *err);
    /* Forgets `token` if it is still appid's stored one. */
    int (*forget)(void *ctx, const char *appid, const char *token, pgw_err *err);
    /* Ends appid's lease without a token (a fetch failed). */
    int (*release)(void *ctx, const char *appid, pgw_err *err);
    void *ctx;
} pgw_wx_token_cache;

typedef struct pgw_wx_client pgw_wx_client;

/* What the gateway gives one call to WeChat's API. The passive reply to a
 * push does not wait on any, so this bounds the outbound workers and the
 * couriers, not WeChat's 5 s reply deadline. */
#define PGW_WX_CALL_TIMEOUT_MS 2500

/*
 * A request (pgw_wx_post, pgw_wx_get, pgw_wx_access_token) at its slowest
 * is a call, a token, a forced token and the call again: it ends within
 * this many of the client's timeouts from its start, whatever it waits on
 * (another thread's token fetch, another instance's refresh lease, which
 * may be longer): it waits for another instance only while that leaves
 * time to fetch and call, and a step left with no time fails as
 * unanswered and unsent (PGW_EUNAVAILABLE). The notifier counts on it:
 * a notice must end before its claim's lease does.
 */
#define PGW_WX_REQUEST_CALLS 4

/* A new client; `cache` (copied; may be NULL) shares tokens between instances. */
int pgw_wx_client_new(const pgw_wx_token_cache *cache, long timeout_ms, pgw_wx_client **out,
                      pgw_err *err);
void pgw_wx_client_free(pgw_wx_client *client);

/* Speaks for `appid` with `secret` at `api_base` ("https://api.weixin.qq.com"). */
int pgw_wx_client_add_app(pgw_wx_client *client, const char *appid, const char *secret,
                          const char *api_base, pgw_err *err);

/* A valid access token of appid into out (fetching one when needed). */
int pgw_wx_access_token(pgw_wx_client *client, const char *appid, char out[PGW_WX_TOKEN_MAX + 1],
                        pgw_err *err);

/*
 * POSTs `body` (JSON, borrowed) to api_base + path + "?access_token=...",
 * retrying once with a new token on a token error. On PGW_OK *answer is
 * WeChat's JSON (errcode 0; the caller decrefs). Otherwise the reply says
 * what WeChat answered (errcode, errmsg; those of the token call when
 * that failed) and the rc how it failed: PGW_EUNAVAILABLE (no answer,
 * busy -1, 5xx, a proxy's 429 or 408, quota: a daily quota's errcode 45009 in the reply tells
 * it from a blip, see pgw_wx_classify), PGW_ESTATE (43101, 43004, 43019: the member cannot get it
 * there), PGW_EUNAUTHORIZED (a bad or used code: ask the client for a new
 * one), PGW_ERISK (40226, WeChat blocks the user), PGW_EINVAL (an invalid
 * argument), PGW_EIO (anything else, such as a wrong secret or appid: our
 * configuration). A failed token fetch is shared by the threads that
 * waited for it, so an outage costs one call, not one per thread.
 * A POST is sent once (a message must not go twice): an answer lost with
 * its connection is PGW_EUNAVAILABLE with maybe_done, as a timeout is,
 * where curl would have sent it again (util/http_client.h): retried.
 * One sent whose HTTP 200 answer was too large to read or found no
 * memory is PGW_ETOOLARGE or PGW_ENOMEM with maybe_done and unread (of
 * another status, the status's own failure, as when read), and one
 * answered HTTP 200 with what we cannot read PGW_EIO with maybe_done and
 * unread: an answer came, WeChat handled it, and pgw_wx_classify gives
 * it up, not retried.
 */
int pgw_wx_post(pgw_wx_client *client, const char *appid, const char *path, const json_t *body,
                json_t **answer, pgw_wx_reply *reply, pgw_err *err);

/* The same as a GET with query parameters `query` (already URL-encoded). */
int pgw_wx_get(pgw_wx_client *client, const char *appid, const char *path, const char *query,
               json_t **answer, pgw_wx_reply *reply, pgw_err *err);

/* A GET without access token (jscode2session): the app's appid and secret
 * are added as query parameters to `query` (already URL-encoded). */
int pgw_wx_get_with_secret(pgw_wx_client *client, const char *appid, const char *path,
                           const char *query, json_t **answer, pgw_wx_reply *reply, pgw_err *err);

typedef struct pgw_wx_client_stats {
    uint64_t token_fetches; /* stable_token calls made */
    uint64_t token_retries; /* calls retried after a token error */
    uint64_t calls;         /* API calls made (token fetches excluded) */
} pgw_wx_client_stats;

void pgw_wx_client_get_stats(pgw_wx_client *client, pgw_wx_client_stats *out);

/*
 * Whether the variables channels.wechat_mp needs to run (its secret) are
 * set, and those of channels.wechat_oa (its secret and callback token,
 * and its EncodingAESKey when the configuration names one: safe mode):
 * the unset ones named in `unset` (util/env.h pgw_env_all_set; cap
 * PGW_ENV_UNSET_MAX). serve warns of them all in one line, check-config
 * lists them, the notifier says which in a notice's last_error: one list
 * of each channel's variables for all three.
 */
bool pgw_wechat_mp_env_set(const pgw_wechat_channel *mp, char *unset, size_t cap);
bool pgw_wechat_oa_env_set(const pgw_wechat_channel *oa, char *unset, size_t cap);

#endif
