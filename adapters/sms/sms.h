/*
 * sms.h - sending one SMS through Tencent Cloud SMS or Alibaba Cloud
 * dysmsapi, and a per-number frequency limiter to consult first.
 *
 * Facts: research/sms-api.md ("research" below): Tencent SendSms 2021-01-11
 * (sections 1.1-1.6), Alibaba SendSms 2017-05-25 (2.1-2.4), message length
 * (4), numbers (5). Signatures are adapters/sms/sign.h.
 *
 * One interface for both: the channel's `provider` ("tencent" / "aliyun")
 * picks the wire format. A send is one number, one template, up to
 * PGW_SMS_PARAMS_MAX parameters and our notice id, which the provider keeps
 * (Tencent SessionContext, Alibaba OutId) so that a resend after a crash
 * can be recognised in its records and delivery reports.
 *
 * Every outcome is classified (pgw_sms_outcome): what the caller does next
 * depends only on that, while the provider's own code and message are kept
 * in the result for the operator. A message the providers would refuse
 * for its form (a parameter too long, a URL in a parameter, a bad number)
 * is refused here before anything is sent.
 *
 * Neither the key secret nor a whole phone number ever appears in an error
 * message or a result: numbers are shown masked (138****8000).
 *
 * Threads: pgw_sms_send may be called from any thread on one client; it
 * blocks for at most the client's timeout (outbound workers only). The
 * limiter is thread-safe. pgw_http_client_init() must have run.
 */
#ifndef PGW_ADAPTERS_SMS_SMS_H
#define PGW_ADAPTERS_SMS_SMS_H

#include "config/config.h"
#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_SMS_PARAMS_MAX     10  /* template variables of one message */
#define PGW_SMS_PARAM_NAME_MAX 32  /* an Alibaba variable name: ${name} */
#define PGW_SMS_TEXT_CHARS_MAX 500 /* research 4: a whole message, signature included */
/* Research 1.3: 12 characters per variable for personal-verified Tencent
 * accounts, the only per-variable figure the research gives. */
#define PGW_SMS_TENCENT_PARAM_CHARS 12
#define PGW_SMS_SESSION_MAX         511 /* Tencent SessionContext: < 512 bytes */
#define PGW_SMS_OUT_ID_MAX          255 /* Alibaba OutId: < 256 characters */
#define PGW_SMS_SIGN_CHARS_MIN      2   /* research 4: both providers, 2..12 */
#define PGW_SMS_SIGN_CHARS_MAX      12
#define PGW_SMS_CODE_MAX            96  /* a provider error code we keep */
#define PGW_SMS_MESSAGE_MAX         256 /* bytes of a provider message we keep */
#define PGW_SMS_ID_MAX              64  /* a RequestId, SerialNo or BizId we keep */

/* What the caller does next. */
typedef enum pgw_sms_outcome {
    PGW_SMS_SENT = 0,       /* accepted by the provider (delivery is reported later) */
    PGW_SMS_RETRY,          /* no answer, 5xx, throttling, internal errors: try again soon */
    PGW_SMS_GIVE_UP,        /* this message cannot go by SMS: bad number, template, sign,
                               auth, account or balance; or refused before sending; or an
                               answer came that we could not read (pgw_sms_result.unread) */
    PGW_SMS_RATE_LIMITED,   /* this number is over a frequency limit: later, not now */
    PGW_SMS_NUMBER_REFUSED, /* this number takes no SMS (blacklisted, opted out at the
                               carrier, not a mobile number): never by SMS, others still */
} pgw_sms_outcome;

const char *pgw_sms_outcome_name(pgw_sms_outcome outcome);

/*
 * The outcome of a provider code ("tencent": "Ok", "LimitExceeded.Phone...";
 * "aliyun": "OK", "isv.BUSINESS_LIMIT_CONTROL", ...), by the research's
 * tables (1.5, 2.3). *rc (may be NULL) gets the code pgw_sms_send returns
 * for it: PGW_OK, PGW_EUNAVAILABLE (retry), PGW_ERISK (rate limited),
 * PGW_EUNAUTHORIZED (signature, key, clock), PGW_EFORBIDDEN (account:
 * arrears, balance, permissions, volume caps), PGW_EINVAL (number,
 * template, sign, parameters), PGW_EIO (a code we do not know: given up,
 * because resending what we do not understand may bill twice).
 */
pgw_sms_outcome pgw_sms_classify(const char *provider, const char *code, int *rc);

/* One template variable. Tencent fills {1}, {2}, ... in order and ignores
 * the name; Alibaba fills ${name} and needs it (1..32 of [A-Za-z0-9_]). */
typedef struct pgw_sms_param {
    const char *name;
    const char *value; /* UTF-8, 1..the client's limit in characters */
} pgw_sms_param;

typedef struct pgw_sms_message {
    const char *phone;       /* E.164 mainland mobile: "+8613800138000" */
    const char *template_id; /* Tencent "1234", Alibaba "SMS_71390007": 1..64 [A-Za-z0-9_-] */
    const pgw_sms_param *params;
    size_t n_params; /* 0..PGW_SMS_PARAMS_MAX */
    /* Our notice id, echoed by the provider (NULL or "": none). Printable
     * ASCII without spaces, at most PGW_SMS_OUT_ID_MAX. */
    const char *out_id;
} pgw_sms_message;

typedef struct pgw_sms_result {
    pgw_sms_outcome outcome;
    bool attempted; /* a request went out (false: refused before sending) */
    /* The provider answered that it took nothing: a code it names as a
     * refusal (a number, a limit, a throttle, a template), a 429, a 4xx
     * without a code. False when it sent, and when it may have: no answer,
     * a 5xx, an answer not understood, its own fault (InternalError,
     * isp.*), a code not known here. */
    bool refused;
    /* The request left and an answer came that we could not read: HTTP
     * 200 not understood (no code of ours for the number), over
     * PGW_HTTP_ANSWER_MAX, or no memory for it (one of another status
     * over the bound is classified by its status, as one of that status
     * without a code: a 429 or 5xx a retry). The provider handled the
     * request and most likely sent the SMS; neither provider de-duplicates
     * a repeat (SessionContext, OutId are only echoed), so it is given up
     * (PGW_SMS_GIVE_UP, PGW_EIO), not sent again: the WeChat channels'
     * rule for the same (wechat/client.h pgw_wx_reply.unread). */
    bool unread;
    long http_status;                /* 0 when no answer arrived; set for one over the bound too */
    char code[PGW_SMS_CODE_MAX + 1]; /* the provider's code ("Ok", "OK", "isv...") or "" */
    char message[PGW_SMS_MESSAGE_MAX + 1]; /* the provider's message, or "" */
    /* The ids only whole: "" for one over PGW_SMS_ID_MAX bytes or not
     * printable ASCII (a cut id would match nothing of the provider's). */
    char request_id[PGW_SMS_ID_MAX + 1];
    char message_id[PGW_SMS_ID_MAX + 1]; /* Tencent SerialNo / Alibaba BizId when sent */
    int64_t fee; /* Tencent: billed parts, 0..PGW_SMS_TEXT_CHARS_MAX; 0 when it does not say */
} pgw_sms_result;

typedef struct pgw_sms_options {
    long timeout_ms; /* a whole call; 0: PGW_HTTP_TIMEOUT_MS */
    /* Characters per variable; 0: the provider's default (Tencent
     * PGW_SMS_TENCENT_PARAM_CHARS; Alibaba only the whole-message cap).
     * An enterprise-verified Tencent account may raise it. */
    size_t param_chars_max;
    bool aliyun_get; /* Alibaba: GET with the query instead of a POST form */
    /* Tests: the clock (unix seconds) and Alibaba's nonce (out: 1..64 of
     * [A-Za-z0-9-], NUL-terminated). NULL: time() and 16 random bytes in hex. */
    int64_t (*clock)(void *ctx);
    void (*nonce)(void *ctx, char out[65]);
    void *ctx;
} pgw_sms_options;

typedef struct pgw_sms_client pgw_sms_client;

/*
 * A client for `channel` (copied: provider, api_base, sign_name, sdk_app_id,
 * region) with the key id and secret read from the channel's *_env
 * variables by the caller. `options` may be NULL. PGW_EINVAL for an unknown
 * provider, a sign name that is not 2..12 letters, digits or Chinese
 * characters, a missing Tencent SdkAppId, an api_base that is not
 * http(s)://host[:port][/], or an empty or overlong key.
 */
int pgw_sms_client_new(const pgw_sms_channel *channel, const char *key_id, const char *key_secret,
                       const pgw_sms_options *options, pgw_sms_client **out, pgw_err *err);
void pgw_sms_client_free(pgw_sms_client *client);

/*
 * Whether the variables `channel` names for its key (key_id_env,
 * key_secret_env) are set, the unset ones named in `unset` (util/env.h
 * pgw_env_all_set; cap PGW_ENV_UNSET_MAX): serve and check-config ask
 * this one list, as for the WeChat channels (server/wechat.h).
 */
bool pgw_sms_env_set(const pgw_sms_channel *channel, char *unset, size_t cap);

/*
 * Sends `msg`. PGW_OK when the provider accepted it (out->outcome
 * PGW_SMS_SENT); otherwise the code pgw_sms_classify names (or PGW_EINVAL /
 * PGW_ETOOLARGE for a message refused before sending, PGW_EUNAVAILABLE
 * for no answer, PGW_EIO for an answer not read: out->unread), with out filled in and
 * err saying why. Tencent's per-number status inside a 200 answer counts,
 * not only the request's.
 */
int pgw_sms_send(const pgw_sms_client *client, const pgw_sms_message *msg, pgw_sms_result *out,
                 pgw_err *err);

/* The characters a parameter may hold with this client's provider. */
size_t pgw_sms_param_chars_max(const pgw_sms_client *client);

/*
 * Whether `msg` may be sent by this client, without sending it: the checks
 * pgw_sms_send makes first. PGW_OK, PGW_EINVAL or PGW_ETOOLARGE.
 */
int pgw_sms_check(const pgw_sms_client *client, const pgw_sms_message *msg, pgw_err *err);

/* ---- per-number frequency limiter --------------------------------------- */

#define PGW_SMS_LIMITER_CAPACITY_MAX 65536 /* numbers remembered */
#define PGW_SMS_LIMIT_COUNT_MAX      64    /* per_hour and per_day at most */

/*
 * Limits per number. The gap and the hour are rolling (an hour is any
 * 3600 s), never looser than a provider's clock-hour window. The day is
 * any 86400 s, or with `calendar_day` the provider's calendar day in China
 * (00:00 to 00:00 UTC+8, which has no daylight saving time): a rolling
 * day where the provider counts calendar days would hold a number's
 * messages up to a whole day longer than the provider does.
 * 0 turns a limit off.
 */
typedef struct pgw_sms_limits {
    int64_t min_gap_s; /* seconds between two messages to one number */
    uint32_t per_hour;
    uint32_t per_day;
    bool calendar_day; /* per_day counts per calendar day, UTC+8 */
    size_t capacity;   /* numbers remembered: 1..PGW_SMS_LIMITER_CAPACITY_MAX */
} pgw_sms_limits;

/* What a message is: the providers limit some kinds apart (research 2.4). */
typedef enum pgw_sms_kind {
    PGW_SMS_KIND_CODE,   /* a verification code */
    PGW_SMS_KIND_NOTICE, /* a notification: points arrived, expiring, ... */
} pgw_sms_kind;

/*
 * The provider's documented defaults for `kind` (research 1.6, 2.4),
 * capacity 4096. "tencent", every kind: 30 s, no hourly figure documented,
 * 2 a calendar day (the current documentation; older revisions said 10).
 * "aliyun": codes 60 s, 5 an hour, 10 a day; notices 50 a day and nothing
 * shorter (Alibaba's 50 are per template; here per number, whatever the
 * template: never looser); its days are rolling 24 hours (research 2.4).
 * PGW_EINVAL for another name or kind.
 */
int pgw_sms_limits_default(const char *provider, pgw_sms_kind kind, pgw_sms_limits *out,
                           pgw_err *err);

typedef struct pgw_sms_limiter pgw_sms_limiter;

/* A limiter of fixed size (limits copied). PGW_EINVAL for limits out of range. */
int pgw_sms_limiter_new(const pgw_sms_limits *limits, pgw_sms_limiter **out, pgw_err *err);
void pgw_sms_limiter_free(pgw_sms_limiter *limiter);

/*
 * Whether `phone` (E.164) may get a message at `now` (unix seconds), and if
 * so counts one: check and count are one step, so two threads cannot both
 * take the last slot. PGW_OK when taken; PGW_ERISK when over a limit, with
 * *retry_at (may be NULL) the earliest second it may be tried again;
 * PGW_EINVAL for a malformed number.
 *
 * Memory is fixed: when the table is full, a number whose every window has
 * passed is forgotten first, else the one written to least recently (it
 * may then get more than its share; the provider still enforces its own).
 */
int pgw_sms_limiter_take(pgw_sms_limiter *limiter, const char *phone, int64_t now,
                         int64_t *retry_at, pgw_err *err);

/* Gives back the slot taken at `taken_at` for a message that never left.
 * Nothing happens when the number's newest counted send is another (a
 * later one took its place): counting one too many is the safe side. */
void pgw_sms_limiter_give_back(pgw_sms_limiter *limiter, const char *phone, int64_t taken_at);

/* The same question without counting anything. */
int pgw_sms_limiter_peek(pgw_sms_limiter *limiter, const char *phone, int64_t now,
                         int64_t *retry_at, pgw_err *err);

typedef struct pgw_sms_limiter_stats {
    uint64_t taken;   /* messages counted */
    uint64_t refused; /* take or peek answered PGW_ERISK */
    uint64_t evicted; /* numbers forgotten while still inside a window */
    size_t tracked;   /* numbers in the table now */
} pgw_sms_limiter_stats;

void pgw_sms_limiter_get_stats(pgw_sms_limiter *limiter, pgw_sms_limiter_stats *out);

/* Whether s is a mainland mobile in E.164: "+86" then 1[3-9] and 9 digits
 * (research 5: the permissive pattern; the provider judges the range). */
bool pgw_sms_phone_ok(const char *s);

#endif
