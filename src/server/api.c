/*
 * api.c - see api.h.
 *
 * Layout: errors and JSON helpers; routing; one handler per route, each
 * validating its input completely before anything is queued (bad input
 * changes nothing); the renderers that run on the writer thread; finishing
 * jobs; metrics and the request log.
 */
#include "api.h"

#include "core/arith.h"
#include "core/assertions.h"
#include "core/digest.h"
#include "core/civil.h"
#include "server/auth.h"
#include "server/dashboard.h"
#include "core/transfer.h"
#include "core/utf8.h"
#include "server/event_command.h"
#include "server/event_json.h"
#include "server/expire.h"
#include "server/import.h"
#include "server/outbound.h"
#include "server/reconcile.h"
#include "server/report.h"
#include "server/session.h"
#include "server/statement.h"
#include "server/wechat.h"
#include "notify/notifier.h"
#include "adapters/wechat_mp/api.h"
#include "adapters/wechat_oa/custom.h"
#include "adapters/wechat_oa/user.h"
#include "util/csv.h"
#include "util/env.h"
#include "util/json_load.h"
#include "util/json_read.h"
#include "util/json_write.h"
#include "util/query.h"
#include "util/redact.h"
#include "util/vault.h"
#include "util/clock.h"
#include "util/thread_name.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define FINANCE_CACHE_KIB    8192 /* the finance reader's page cache (pgw_writer_options) */
#define FINANCE_QUEUE_CAP    8    /* reports and reconciliations waiting for the finance reader */
#define FINANCE_RETRY_S      10   /* a refused one's Retry-After: a report takes seconds */
#define HOLD_SECONDS_DEFAULT 600
#define HISTORY_DEFAULT      50
#define HISTORY_MAX          100
#define JOBS_KEPT            256      /* jobs kept for reuse after a burst: ~25 MB */
#define LOG_BUF              PIPE_BUF /* request log lines written at once (log_buf) */
#define LOG_CODE_MAX         31       /* an error's code in the log: API.md's are shorter */
#define BATCH_EVENTS_MAX     1000     /* API.md */
#define BATCH_WINDOW         32       /* events of one batch in the writer's queue at once */
#define CSV_ROWS_MAX         10000    /* rows of one shop CSV batch */
#define OUTBOUND_THREADS     4        /* calls to WeChat at once */
#define OUTBOUND_QUEUE       1024
#define SMS_THREADS          2 /* verification codes' SMS at once */
#define SMS_QUEUE            256
/* A path segment id's room: the whole path's, so that every id reaches
 * its route's handler, which answers one past its bound as it answers any
 * other (404 "no such member"), never "no such route". */
#define ROUTE_ID_CAP (PGW_PATH_MAX + 1)

/* A POST /v1/events:batch in progress: its events go to the writer a
 * window at a time (an event's job is ~100 KB), answers kept in order. */
typedef struct pgw_batch {
    uint64_t request_id;
    char key_name[PGW_ID_MAX + 1];
    pgw_principal who;
    json_t *events; /* the array, owned */
    size_t n, next, running, finished;
    int *statuses;
    char **bodies;  /* each an answer's JSON, owned */
    size_t *lines;  /* a CSV batch: each event's line; NULL for a JSON batch */
    bool committed; /* some event's answer is (pgw_response.committed) */
    int kind;       /* route: R_BATCH, R_SHOP_BATCH or R_IMPORT */
    char shop[PGW_ID_MAX + 1];
    char channel[PGW_ID_MAX + 1]; /* R_SHOP_BATCH: its rows' (a till's live events') */
    pgw_import_file import;       /* R_IMPORT */
    char client_address[64];      /* the request's: its events are as if sent alone from there */
} pgw_batch;
#define HOLD_SECONDS_MAX (30 * 86400)

typedef enum route {
    R_OTHER = 0,
    R_HEALTH,
    R_METRICS,
    R_EVENTS,
    R_HOLDS,
    R_CAPTURE,
    R_VOID,
    R_REDEMPTIONS,
    R_REDEMPTION_RETURNS,
    R_HOLD_RETURNS,
    R_MEMBER,
    R_HISTORY,
    R_BATCH,
    R_RESOLVE,
    R_BIND,
    R_SHOP_BATCH,
    R_IMPORT,
    R_DASHBOARD,
    R_RECONCILE,
    R_SETTLEMENT,
    R_POOL,
    R_MP_LOGIN,
    R_MP_PHONE,
    R_MP_SUBSCRIPTIONS,
    R_MP_LOGOUT,
    R_ME,
    R_ME_HISTORY,
    R_OA_CALLBACK,
    R_NOTIFICATIONS,
    R_NOTICE_RETRY,
    R_PREFERENCES,
    R_ME_PREFERENCES,
    R_SMS_OTP,
    R_SMS_OTP_VERIFY,
    R_STREAM, /* the WebSocket: http.c upgrades it; plain HTTP is refused */
    R_COUNT
} route;

/* Route templates: metric labels, log lines, and the fixed paths route_of
 * matches. Designated, so an entry cannot slip to another route. */
static const char *const ROUTE_NAMES[R_COUNT] = {
    [R_OTHER] = "other",
    [R_HEALTH] = "/healthz",
    [R_METRICS] = "/metrics",
    [R_EVENTS] = "/v1/events",
    [R_HOLDS] = "/v1/holds",
    [R_CAPTURE] = "/v1/holds/{id}/capture",
    [R_VOID] = "/v1/holds/{id}/void",
    [R_REDEMPTIONS] = "/v1/redemptions",
    [R_REDEMPTION_RETURNS] = "/v1/redemptions/{id}/returns",
    [R_HOLD_RETURNS] = "/v1/holds/{id}/returns",
    [R_MEMBER] = "/v1/members/{id}",
    [R_HISTORY] = "/v1/members/{id}/transfers",
    [R_BATCH] = "/v1/events:batch",
    [R_RESOLVE] = "/v1/members/resolve",
    [R_BIND] = "/v1/members/{id}/identities",
    [R_SHOP_BATCH] = "/v1/shops/{id}/batches",
    [R_IMPORT] = "/v1/shops/{id}/imports",
    [R_DASHBOARD] = "/",
    [R_RECONCILE] = "/v1/reconciliations",
    [R_SETTLEMENT] = "/v1/reports/settlement",
    [R_POOL] = "/v1/reports/pool",
    [R_MP_LOGIN] = "/v1/mp/login",
    [R_MP_PHONE] = "/v1/mp/phone",
    [R_MP_SUBSCRIPTIONS] = "/v1/mp/subscriptions",
    [R_MP_LOGOUT] = "/v1/mp/logout",
    [R_ME] = "/v1/me",
    [R_ME_HISTORY] = "/v1/me/transfers",
    [R_OA_CALLBACK] = "/wechat/oa/callback",
    [R_NOTIFICATIONS] = "/v1/notifications",
    [R_NOTICE_RETRY] = "/v1/notifications/{id}/retry",
    [R_PREFERENCES] = "/v1/members/{id}/preferences",
    [R_ME_PREFERENCES] = "/v1/me/preferences",
    [R_SMS_OTP] = "/v1/sms/otp",
    [R_SMS_OTP_VERIFY] = "/v1/sms/otp/verify",
    [R_STREAM] = "/v1/stream",
};

/* The statuses counted per route in /metrics. */
static const int STATUSES[] = {101, 200, 201, 202, 400, 401, 403, 404, 405,
                               409, 411, 413, 415, 422, 429, 500, 503};
#define N_STATUSES (sizeof(STATUSES) / sizeof(STATUSES[0]))
/* Request duration buckets, seconds (Prometheus histogram). */
static const double BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define N_BUCKETS (sizeof(BUCKETS) / sizeof(BUCKETS[0]))

struct pgw_job {
    pgw_api *api;
    pgw_job *next_free; /* on api->free_jobs when not in use */
    uint64_t request_id;
    route route;
    char key_name[PGW_ID_MAX + 1]; /* who asked, for the log */
    pgw_batch *batch;              /* when the job is one event of a batch */
    size_t batch_index;
    pgw_command cmd;
    pgw_event_doc doc;
    pgw_earning earning;
    struct finance_job *finance; /* a reconciliation or report: what it reads and writes */
    struct wx_job *wx;           /* a WeChat request: what it carries to the outbound worker */
    /* POST /v1/sms/otp: the code to send once recorded (wiped after). */
    char otp_phone[16]; /* E.164 */
    char otp_code[PGW_OTP_DIGITS + 1];
    int otp_rc;           /* how the send went: the answer once the job is back */
    int64_t otp_retry_at; /* PGW_ELIMITED */
    char otp_message[PGW_ERR_MSG_MAX];
    /* The stop finished the code unsent (otp_stopped): Retry-After: 1, as
     * every 503 at the stop, whatever otp_message says. */
    bool otp_stopping;
    /* The provider may have sent the code (otp_send_task): kept, counted;
     * Retry-After: 60, the number's one-a-minute limit. */
    bool otp_maybe_sent;
    /* Why the code's SMS did not go, for the operator's line (otp_tell);
     * "" when it went or was never tried. */
    char otp_unsent[PGW_SMS_CODE_MAX + 48];
};

/* What an official-account push asked for (the reply depends on it). */
typedef enum oa_action { OA_FOLLOW, OA_UNFOLLOW, OA_SIGN_IN, OA_BALANCE } oa_action;

typedef struct oa_follow oa_follow; /* a subscribe's follow command (oa_record_follow) */

/* A WeChat request's own state: the code to exchange on a worker, or the
 * push to answer. */
typedef struct wx_job {
    char code[PGW_WX_CODE_MAX + 1];
    /* A login or a phone number: why WeChat failed it, for the operator's
     * log (the answer says it without WeChat's address), "" when WeChat
     * answered. */
    char wechat_failed[PGW_ERR_MSG_MAX];
    /* A phone number WeChat answered with nothing usable: what came, for
     * the operator's log (pgw_mp_phone's unusable); "" otherwise. */
    char wechat_unusable[PGW_ERR_MSG_MAX];
    bool wechat_answered; /* WeChat answered jscode2session, getuserphonenumber */
    /* The mini-program user: a login's openid (for its session token), or
     * the session's, which a phone code must have been given to. */
    char openid[PGW_WX_OPENID_MAX + 1];
    pgw_oa_inbound oa;
    oa_action action;
    json_t *event;     /* an official-account event as POST /v1/events takes it */
    oa_follow *follow; /* a subscribe's follow, recorded before the event */
    /* A push's deadline (pgw_monotonic_us): answered "success" by then
     * (pgw_response.answer_within_us), its reply goes later (oa_late). */
    int64_t answer_by_us;
} wx_job;

static void oa_follow_release(oa_follow *f);

/* A finance read run on the reader (PGW_COMMAND_READ_CALL): its input and
 * the body it produces. */
typedef struct finance_job {
    char *statement; /* a copy of the request body */
    size_t statement_len;
    char channel[PGW_ID_MAX + 1], shop[PGW_ID_MAX + 1];
    pgw_recon_options opts;
    const pgw_config *cfg; /* reports */
    int64_t from, to;
    pgw_bucket bucket;
    bool csv;
    char member[PGW_ID_MAX + 1]; /* GET /v1/notifications?member_id=: a page of */
    bool dead;                   /* or ?state=dead: a page of */
    int64_t limit, after;        /* its size, and its cursor (0: the newest) */
    char *out;                   /* the answer's body (open_memstream) */
    size_t out_len;
} finance_job;

/* The expiry sweep: a thread that runs the expiry of due holds and lots
 * every expiry.sweep_every_s, through the writer like everything else,
 * then prunes the sessions and enrolment counts past (sweep_prune). */
typedef struct sweeper {
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    int64_t every_s;
    pgw_writer *writer;
    struct pgw_api *api; /* its expiries' transfers go to the live stream */
    char db_url[PGW_STORE_URL_MAX + 1];
    uint64_t runs, holds, lots, points, failures;                  /* under lock */
    uint64_t pruned_sessions, pruned_enrolments, pruned_reminders; /* under lock */
    pgw_log_limit expiry_said, prune_said; /* the sweep thread's (expire.h) */
} sweeper;

struct pgw_api {
    const pgw_config *cfg;
    /* The service thread's rows of CSV uploads (a header, then each row
     * in turn), 16 KB each: here, not on its stack. */
    pgw_csv_row csv_header, csv_row;
    sweeper sweep;
    pgw_writer *writer;
    pgw_writer *reader;  /* member reads, sessions, notices: each a few milliseconds */
    pgw_writer *finance; /* reports and reconciliations, seconds each (finance_route) */
    pgw_auth *auth;
    pgw_vault *vault;
    pgw_wechat *wechat;
    pgw_sms_client *sms;
    /* Workers for calls out, running when their channel is on: WeChat's,
     * and the verification codes' own, so that an SMS provider slow to
     * answer (5 s a call) cannot hold up mini-program logins. */
    pgw_outbound *outbound;
    pgw_outbound *sms_outbound;
    uint8_t otp_key[32]; /* verification codes' hashes (core/otp.h) */
    pgw_notifier *notifier;
    uint8_t session_key[PGW_SESSION_KEY_LEN];
    /* Links queued from the writer's completion thread (oa_note_done):
     * closed before the workers stop, so none goes to a pool being freed. */
    pthread_mutex_t links_lock;
    bool links_closed;
    /* Writes whose completion may submit another (a note's or a link's
     * forgetting, oa_forget_note; a code's void, otp_recorded), which the
     * writer refuses once stopping, so the stop waits for them first
     * (late_writes_settle). Under links_lock. */
    size_t late_writes;
    pthread_cond_t late_writes_done;
    size_t body_max, inflight_max, inflight;
    /* Bytes reserved for request bodies (pgw_api_body_reserve), at most
     * bodies_max, and those of each share (held, summing to bodies_held):
     * a session's and a stranger's at most a quarter. The service
     * thread's. */
    size_t bodies_max, bodies_held, held[PGW_BODY_SHARES];
    /* Jobs (~100 KB each) are kept for reuse: allocating and freeing them
     * per request made glibc hand the pages back and fault them in again. */
    pgw_job *free_jobs;
    size_t n_free_jobs; /* kept for reuse, at most JOBS_KEPT */
    size_t batches;     /* batches in progress: at most inflight_max / BATCH_WINDOW */
    uint64_t risk_rejected[PGW_RISK_RULES_END]; /* by the refusing rule (command.h) */
    pgw_log_limit login_said; /* the service thread's: WeChat failing logins (mp_wechat_tell) */
    pgw_log_limit phone_said; /* the same for phone numbers */
    /* Phone answers with no usable number: limited alike, but apart from
     * WeChat's failures, so an answer after them is no "works again". */
    pgw_log_limit unusable_said;
    pgw_log_limit failed_said;       /* the service thread's: other 5xx causes (fail_told) */
    pgw_log_limit otp_said;          /* the service thread's: codes not sent (otp_tell) */
    pgw_log_limit oa_said;           /* the service thread's: callbacks answered 503 (oa_fail_as) */
    pgw_log_limit oa_refused_said;   /* the same, callbacks answered 4xx (oa_fail_as) */
    pgw_log_limit oa_unreplied_said; /* the service thread's: taken, no reply (oa_answer) */
    pgw_log_limit oa_late_said;      /* the same, answered at the deadline (oa_late) */
    /* Replies the deadline cut off, sent after (oa_late_reply_task) or not:
     * counted where they end, a worker's thread or the service thread. */
    atomic_uint_least64_t oa_late_sent, oa_late_unsent;
    pgw_api_notify notify;
    pgw_api_stream_news stream_news; /* NULL: none */
    pgw_api_follow stream_follow;    /* NULL: none */
    void *notify_ctx;
    FILE *log;
    /* The request log's lines not yet written (pgw_api_flush_log): one
     * write(2) for a pass's lines, where one a line was a tenth of the
     * service thread's system calls. Whole lines, at most PIPE_BUF bytes
     * a write: a pipe takes such a write whole, so stderr's lines, in the
     * same pipe or journald stream under systemd, never land inside a
     * request's line. A pass's 64 KiB in one write was split where the
     * pipe was full, and another thread's line could come between its
     * pieces (R4). ~16 lines a write still. */
    char log_buf[LOG_BUF];
    size_t log_len;
    uint64_t log_dropped;         /* lines a write failed for (stdout closed, a full disk) */
    uint64_t connections_refused; /* pgw_api_connection_refused */
    uint64_t requests[R_COUNT][N_STATUSES + 1]; /* last slot: any other status */
    uint64_t duration_le[N_BUCKETS];
    uint64_t duration_count;
    double duration_sum;
};

/* ---- answers ------------------------------------------------------------------ */

static void set_body(pgw_response *resp, int status, json_t *body)
{
    resp->status = status;
    resp->content_type = "application/json";
    resp->body = body ? json_dumps(body, JSON_COMPACT) : NULL;
    resp->body_len = resp->body ? strlen(resp->body) : 0;
    json_decref(body);
    resp->error_code = NULL;
    resp->reason[0] = '\0';
    if (resp->body == NULL) { /* out of memory: say so without allocating */
        resp->status = 503;
        resp->content_type = "text/plain";
    }
}

/* The error shape of API.md; `details` (may be NULL: {}) is taken over. */
static void error_body(pgw_response *resp, int status, const char *code, const char *message,
                       json_t *details)
{
    /* Refusals quote what came (an unknown key by "%.64s", a query's
     * bytes; once an idempotency key by "%.128s"): cut inside a character,
     * or not UTF-8 at all, json_pack made no body of them and the answer was a
     * 503 without one, retried for ever, "no answer" in a batch. Each bad
     * byte becomes a '?' here, for every answer. */
    char scrubbed[PGW_ERR_MSG_MAX];
    if (!pgw_utf8_valid(message)) {
        snprintf(scrubbed, sizeof(scrubbed), "%s", message);
        pgw_utf8_scrub(scrubbed);
        message = scrubbed;
    }
    json_t *body = json_pack("{s:{s:s,s:s,s:o}}", "error", "code", code, "message", message,
                             "details", details ? details : json_object());
    set_body(resp, status, body);
    PGW_ASSERT(strlen(code) <= LOG_CODE_MAX); /* API.md's; the log's line is sized for them */
    resp->error_code = code;
    pgw_redact_reason(message, resp->reason, sizeof(resp->reason));
}

void pgw_api_error(pgw_response *resp, int status, const char *code, const char *message)
{
    error_body(resp, status, code, message, NULL);
}

/* Error codes (core/error.h) and what API.md answers for them. */
static const struct {
    int rc;
    int status;
    const char *code;
} ERRORS[] = {
    {PGW_EINVAL, 400, "invalid_request"},
    {PGW_ERANGE, 400, "invalid_request"},
    {PGW_EUNAUTHORIZED, 401, "unauthorized"},
    {PGW_EFORBIDDEN, 403, "forbidden"},
    {PGW_ENOTFOUND, 404, "not_found"},
    {PGW_ECONFLICT, 409, "idempotency_conflict"},
    {PGW_ESTATE, 409, "hold_not_pending"},
    {PGW_EINSUFFICIENT, 422, "insufficient_points"},
    {PGW_EEXCEEDS, 422, "refund_exceeds_original"},
    {PGW_ETOOLARGE, 413, "payload_too_large"},
    {PGW_EMEDIA, 415, "unsupported_media_type"},
    {PGW_ERISK, 422, "risk_rejected"},
    {PGW_ELIMITED, 429, "rate_limited"},
    {PGW_ECLOSED, 422, "period_closed"},
};

/* Finance's reads take seconds (a pool report scans the log, a
 * reconciliation reads a statement's events): on the reader of their own,
 * so that no member read (GET /v1/members/{id}, /v1/me) waits behind one. */
static bool finance_route(route r)
{
    return r == R_RECONCILE || r == R_SETTLEMENT || r == R_POOL;
}

/* ERRORS' index for rc, or -1: 503 unavailable. */
static int error_entry(int rc)
{
    for (size_t i = 0; i < sizeof(ERRORS) / sizeof(ERRORS[0]); i++) {
        if (ERRORS[i].rc == rc)
            return (int)i;
    }
    return -1;
}

/* API.md's error `details` of a refusal `why` (error.h): the member it
 * names, its figures and its texts; {} for one with none. */
static json_t *error_details(const pgw_err *why)
{
    PGW_ASSERT(why->n_figures <= PGW_ERR_FIGURES_MAX && why->n_texts <= PGW_ERR_TEXTS_MAX);
    json_t *d = json_object();
    if (d != NULL && why->member_id[0] != '\0')
        json_object_set_new(d, "member_id", json_string(why->member_id));
    for (size_t i = 0; d != NULL && i < why->n_figures; i++)
        json_object_set_new(d, why->figures[i].name, json_integer(why->figures[i].value));
    for (size_t i = 0; d != NULL && i < why->n_texts; i++)
        json_object_set_new(d, why->texts[i].name, json_string(why->texts[i].value));
    return d;
}

/* Answers an error; anything not in ERRORS (storage, memory, a full queue)
 * is 503 unavailable: nothing was written. `why`, when not NULL, is the
 * error `message` came from: a refusal's (an ERRORS code's) figures are
 * its `details`. */
static void fail_why(pgw_response *resp, route r, int rc, const char *message, const pgw_err *why)
{
    int i = error_entry(rc);
    int status = i >= 0 ? ERRORS[i].status : 503;
    const char *code = i >= 0 ? ERRORS[i].code : "unavailable";
    if (rc == PGW_ENOTFOUND && r == R_EVENTS) /* a refund's original purchase */
        status = 422, code = "original_not_found";
    if (rc == PGW_ESTATE && r == R_NOTICE_RETRY)
        code = "notice_not_dead";
    if (rc == PGW_EFULL) /* the write queue drains in milliseconds, finance's in seconds */
        resp->retry_after_s = finance_route(r) ? FINANCE_RETRY_S : 1;
    bool figures = why != NULL && why->code == rc && i >= 0;
    error_body(resp, status, code, message, figures ? error_details(why) : NULL);
}

static void fail(pgw_response *resp, route r, int rc, const char *message)
{
    fail_why(resp, r, rc, message, NULL);
}

/*
 * A 5xx's words when its cause is another module's (the store's, the
 * writer's, a reader's call): fixed, since the cause may name the
 * database (its file, its server's URL), its SQL or a member.
 */
static const char *server_words(int rc)
{
    switch (rc) {
    case PGW_ENOMEM:
        return "out of memory, nothing was written: retry shortly (the gateway's log says why)";
    case PGW_EFULL:
        return "the gateway is busy, nothing was written: retry shortly";
    default:
        return "the gateway failed, nothing was written: retry shortly (the gateway's log says "
               "why)";
    }
}

/*
 * fail() as route `r` answers (fail's mapping) for a failure `cause` that
 * another module wrote (a command back from the writer or a reader) of
 * `job`, whose request and route the stderr line names. A 4xx is the
 * request's own fault: its words are the client's. Storage failing
 * (PGW_EIO, PGW_EUNAVAILABLE) comes with the writer's words for the client,
 * its cause already on stderr under the request's id (writer.c
 * keep_reason). Any other 5xx (out of memory, a code API.md has no status
 * for) answers server_words, and `cause` goes to stderr with the request's
 * id, as the request log names it, limited as the writer's lines are
 * (core/log_limit.h: an outage cannot flood the log; the lines held back
 * are counted in the next). `from`, when not NULL, is the error `cause`
 * came from (a refusal's figures: fail_why). On the service thread.
 */
static void fail_told(pgw_api *api, pgw_response *resp, const pgw_job *job, route r, int rc,
                      const char *cause, const pgw_err *from)
{
    if (error_entry(rc) >= 0 || rc == PGW_EIO || rc == PGW_EUNAVAILABLE) {
        fail_why(resp, r, rc, cause, from);
        return;
    }
    pgw_err why;
    pgw_err_set(&why, rc, "%s", cause);
    /* A batch's event is its batch's request, as the log line says. */
    route asked = job->batch != NULL ? (route)job->batch->kind : job->route;
    char what[96];
    snprintf(what, sizeof(what), "request %llu (%s) answered 503",
             (unsigned long long)job->request_id, ROUTE_NAMES[asked]);
    pgw_expire_tell(&api->failed_said, what, rc, &why);
    fail(resp, r, rc, server_words(rc));
}

#define OA_UNAVAILABLE "the push could not be taken now: WeChat delivers it again"
#define OA_CHECK_UNAVAILABLE                                                                       \
    "the URL check could not be answered now: submit the server configuration again in WeChat's "  \
    "console"

/*
 * A callback refused with `status` (a 4xx) told on stderr: WeChat shows
 * the operator only that the server failed, and a wrong token or
 * EncodingAESKey refuses every push, so without a line the log said
 * nothing of why. `why` is the check's own words (which check failed, a
 * field's name, a value quoted cut: no token, key or body) and the lines
 * are limited as the 503's are (a cause once a minute, the ones held back
 * counted), as anyone may post to the callback. A 4xx is never "works
 * again": only refusals are told. On the service thread.
 */
static void oa_refused_tell(pgw_api *api, int status, const pgw_err *why, bool url_check)
{
    char what[80];
    snprintf(what, sizeof(what), "official-account %s refused %d", url_check ? "URL check" : "push",
             status);
    pgw_expire_tell(&api->oa_refused_said, what, why->code, why);
}

/*
 * fail() for the official account's callback. Its 503 (the store, memory,
 * a queue: WeChat delivers the push again) says only OA_UNAVAILABLE:
 * the body leaves for WeChat, which has no use for it (its documentation
 * says nothing of what it does with a failed reply's body), and `why`,
 * the store's words, may name the database's file, its SQL or a member. `why` goes to stderr,
 * limited as the mini program's failures are (pgw_expire_tell: during an
 * outage every push fails). On the service thread. The URL check
 * (`url_check`: GET with echostr) is no push WeChat delivers again but
 * the operator's, made once when they submit the server configuration in
 * WeChat's console: its 503 (out of memory only) says to submit it again.
 */
static void oa_fail_as(pgw_api *api, pgw_response *resp, int rc, const char *why, bool url_check)
{
    pgw_err cause;
    pgw_err_set(&cause, rc, "%s", why);
    if (error_entry(rc) >= 0) { /* the request's own fault, a 4xx: WeChat's to read */
        fail(resp, R_OA_CALLBACK, rc, why);
        oa_refused_tell(api, resp->status, &cause, url_check);
        return;
    }
    pgw_expire_tell(&api->oa_said,
                    url_check ? "official-account URL check answered 503"
                              : "official-account push answered 503 (WeChat delivers it again)",
                    rc, &cause);
    fail(resp, R_OA_CALLBACK, rc, url_check ? OA_CHECK_UNAVAILABLE : OA_UNAVAILABLE);
}

static void oa_fail(pgw_api *api, pgw_response *resp, int rc, const char *why)
{
    oa_fail_as(api, resp, rc, why, false);
}

/* "success": WeChat takes the push, says nothing to the member and does
 * not deliver it again. Out of memory, an empty body, which it takes too. */
static void oa_success(pgw_response *resp)
{
    resp->status = 200;
    resp->content_type = "text/plain";
    resp->body = strdup("success");
    resp->body_len = resp->body ? 7 : 0;
}

/* WeChat's routes authenticate by WeChat's means, not by API keys. */
static bool mp_route(route r)
{
    return r == R_MP_LOGIN || r == R_MP_PHONE || r == R_MP_SUBSCRIPTIONS || r == R_MP_LOGOUT ||
           r == R_ME || r == R_ME_HISTORY || r == R_ME_PREFERENCES;
}

static bool by_session(const pgw_request *req);
static const char *session_token(const char *authorization);
static int session_of(const pgw_api *api, const pgw_request *req, pgw_session *out, pgw_err *err);
static route route_of(const char *path, char *id, size_t cap);
static bool method_allowed(route r, const char *method);

/* Whether route r, so asked, is answered by an API key: not WeChat's, not
 * the open ones, not a verification code's under a session. */
static bool by_key(route r, const pgw_request *req)
{
    bool open = r == R_OTHER || r == R_HEALTH || r == R_METRICS || r == R_DASHBOARD;
    bool otp = r == R_SMS_OTP || r == R_SMS_OTP_VERIFY;
    return !open && !mp_route(r) && r != R_OA_CALLBACK && !(otp && by_session(req));
}

const char *pgw_api_route_label(const char *path)
{
    char id[ROUTE_ID_CAP];
    return ROUTE_NAMES[route_of(path, id, sizeof(id))];
}

void pgw_api_key_label(const pgw_api *api, const pgw_request *req, char out[PGW_ID_MAX + 1])
{
    const char *name = pgw_auth_name(api->auth, &req->bearer);
    snprintf(out, PGW_ID_MAX + 1, "%s", name != NULL ? name : "-");
}

_Static_assert(PGW_CSV_BATCH_BODY_MAX >= CSV_ROWS_MAX * 400, "a day-end file's rows fit");
_Static_assert(CSV_ROWS_MAX == 10000, "the 413's advice says so");

_Static_assert(PGW_CSV_BATCH_BODY_MAX <= PGW_HTTP_BODIES_MIN, "the total holds a batch's body");

/* Whose body: see pgw_body_share. */
static pgw_body_share body_share(const pgw_api *api, const pgw_request *req)
{
    if (pgw_auth_knows(api->auth, &req->bearer))
        return PGW_BODY_KEYED;
    pgw_session s;
    pgw_err err;
    return session_of(api, req, &s, &err) == PGW_OK ? PGW_BODY_SESSION : PGW_BODY_KEYLESS;
}

static bool bodies_sum(const pgw_api *api)
{
    size_t sum = 0;
    for (int i = 0; i < PGW_BODY_SHARES; i++)
        sum += api->held[i];
    return sum == api->bodies_held && api->bodies_held <= api->bodies_max;
}

int pgw_api_body_reserve(pgw_api *api, const pgw_request *req, size_t n, pgw_body_share *share,
                         pgw_err *err)
{
    PGW_ASSERT(bodies_sum(api));
    /* Anyone may send a body to a path that is none, or to a route WeChat
     * calls without a key: slow, they could hold the whole total, and every
     * till's write would be 503 (R-B); counted with theirs, a member's
     * was (the review of 43cba7b). Each has a quarter. */
    *share = body_share(api, req);
    size_t cap = *share == PGW_BODY_KEYED ? api->bodies_max : api->bodies_max / 4;
    /* More than its share can ever hold: a 503 would have it retried for ever. */
    if (n > cap) {
        PGW_ASSERT(*share != PGW_BODY_KEYED); /* the caller's body_max, at most bodies_max */
        return pgw_err_set(err, PGW_ETOOLARGE,
                           "a body %s may have at most %zu bytes: a quarter of "
                           "http.body_total_max_bytes",
                           *share == PGW_BODY_SESSION ? "under a mini-program session"
                                                      : "without an API key",
                           cap);
    }
    if (n > api->bodies_max - api->bodies_held || n > cap - api->held[*share])
        return pgw_err_set(err, PGW_EFULL,
                           "the gateway holds too many request bodies now, nothing was written: "
                           "retry shortly");
    api->bodies_held += n;
    api->held[*share] += n;
    return PGW_OK;
}

void pgw_api_connection_refused(pgw_api *api)
{
    api->connections_refused++;
}

void pgw_api_body_release(pgw_api *api, size_t n, pgw_body_share share)
{
    PGW_ASSERT(share < PGW_BODY_SHARES && n <= api->held[share] && bodies_sum(api));
    api->bodies_held -= n;
    api->held[share] -= n;
}

size_t pgw_api_body_max(const pgw_api *api, const pgw_request *req, const char **advice)
{
    char id[ROUTE_ID_CAP];
    if (route_of(req->path, id, sizeof(id)) != R_SHOP_BATCH) {
        *advice = "set by http.body_max_bytes";
        return api->body_max;
    }
    *advice = "split the file (a batch takes up to 10000 rows), or raise http.body_max_bytes";
    return api->body_max > PGW_CSV_BATCH_BODY_MAX ? api->body_max : PGW_CSV_BATCH_BODY_MAX;
}

bool pgw_api_stranger(const pgw_api *api, const pgw_request *req)
{
    char id[ROUTE_ID_CAP];
    route r = route_of(req->path, id, sizeof(id));
    /* Only a Bearer that is none of ours: no key, or another scheme, gets
     * the answer pgw_api_handle gives it, as does a method the route does
     * not take (405 first, as without a body). */
    return strncasecmp(req->authorization, "Bearer ", 7) == 0 && by_key(r, req) &&
           method_allowed(r, req->method) && !pgw_auth_knows(api->auth, &req->bearer);
}

void pgw_api_refusal(pgw_response *resp, int rc, const char *message)
{
    fail(resp, R_OTHER, rc, message);
}

static int64_t wall_now_s(void)
{
    return (int64_t)time(NULL);
}

/*
 * A time in an answer: in the mall's zone `tz`, else (a year that zone
 * cannot write: before 1970 there, or past 9999) in UTC, the same instant
 * and still RFC 3339, as a report writes one (core/civil.h
 * pgw_format_rfc3339_or_utc). The gateway dates nothing before 2000
 * (event_command.h PGW_EVENT_EARLIEST_S) nor after its clock: a time
 * outside UTC's years is a row written by hand, shown at the nearest
 * time UTC writes, in UTC, so that the field is always the RFC 3339
 * API.md says.
 */
static void answer_time(int64_t t, const pgw_tz *tz, char out[PGW_RFC3339_MAX])
{
    const int64_t utc_last = INT64_C(253402300799); /* 9999-12-31T23:59:59Z */
    if (pgw_format_rfc3339_or_utc(t, tz, out) == PGW_OK)
        return;
    pgw_format_utc(t < 0 ? 0 : utc_last, out); /* both within UTC's years: RFC 3339 */
    PGW_ASSERT(out[0] == (t < 0 ? '1' : '9'));
}

/* Parses a JSON object body; PGW_EINVAL with the position of the problem. */
static int parse_body(const pgw_request *req, bool optional, json_t **out, pgw_err *err)
{
    *out = NULL;
    if (req->body_len == 0 && optional) {
        *out = json_object();
        return *out ? PGW_OK : PGW_ENOMEM;
    }
    /* A UTF-8 byte order mark, as .NET's and Windows' writers put first,
     * is not the body's. */
    size_t bom = pgw_utf8_bom((const char *)req->body, req->body_len);
    const char *body = (const char *)req->body + bom;
    size_t len = req->body_len - bom;
    json_error_t jerr;
    if (pgw_json_load(body, len, out, &jerr) != PGW_OK)
        return pgw_err_set(err, PGW_EINVAL, "invalid JSON at %d:%d: %s", jerr.line, jerr.column,
                           jerr.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return pgw_err_set(err, PGW_EINVAL, "$: expected an object");
    }
    return PGW_OK;
}

/* The value of parameter `charset` in a Content-Type's parameters (what
 * follows its type/subtype), its quotes taken off, into out (cut to fit);
 * false when there is none. */
static bool charset_of(const char *params, char *out, size_t cap)
{
    for (const char *p = strchr(params, ';'); p != NULL; p = strchr(p + 1, ';')) {
        const char *name = p + 1 + strspn(p + 1, " \t");
        if (strncasecmp(name, "charset", 7) != 0)
            continue;
        const char *value = name + 7 + strspn(name + 7, " \t");
        if (*value++ != '=')
            continue;
        value += strspn(value, " \t\"");
        size_t n = strcspn(value, "\"; \t");
        snprintf(out, cap, "%.*s", (int)n, value);
        return true;
    }
    return false;
}

/* Whether the request's Content-Type is `type` (type/subtype), whatever
 * its case or parameters: "Application/JSON; charset=UTF-8" is JSON
 * (RFC 9110 8.3.1). A body in another charset is refused whole: read as
 * UTF-8, a GBK body (Chinese Windows' default) failed at its first
 * Chinese byte, as a JSON error about the byte. */
static int check_media_type(const pgw_request *req, const char *type, pgw_err *err)
{
    size_t n = strlen(type);
    const char *rest = req->content_type + n;
    if (strncasecmp(req->content_type, type, n) != 0 ||
        (rest[strspn(rest, " \t")] != '\0' && rest[strspn(rest, " \t")] != ';'))
        return pgw_err_set(err, PGW_EMEDIA, "Content-Type must be %s", type);
    char charset[24];
    if (charset_of(rest, charset, sizeof(charset)) && strcasecmp(charset, "utf-8") != 0 &&
        strcasecmp(charset, "utf8") != 0 && strcasecmp(charset, "us-ascii") != 0)
        return pgw_err_set(err, PGW_EMEDIA, "Content-Type must be %s in UTF-8, not charset=%s",
                           type, charset);
    return PGW_OK;
}

/* ---- jobs ----------------------------------------------------------------------- */

static void job_done(pgw_command *cmd, void *payload)
{
    (void)cmd;
    pgw_job *job = payload;
    job->api->notify(job, job->api->notify_ctx);
}

/* A job's scratch buffers, in the order of their offsets: whoever uses one
 * writes it before reading it (pgw_event_from_json and pgw_rules_earn clear
 * theirs; transfers, lines and a member's identities are read up to their
 * counts, the answer up to its first NUL). They are nine tenths of a job
 * (~100 KB); clearing them for every request was a fifth of the service
 * thread's time. (The identities, 5.9 KB, were still 3% of it.) */
static const struct {
    size_t offset, size;
} JOB_SCRATCH[] = {
    {offsetof(pgw_job, cmd.transfers), sizeof(((pgw_job *)0)->cmd.transfers)},
    {offsetof(pgw_job, cmd.lines), sizeof(((pgw_job *)0)->cmd.lines)},
    {offsetof(pgw_job, cmd.answer), sizeof(((pgw_job *)0)->cmd.answer)},
    {offsetof(pgw_job, cmd.identities), sizeof(((pgw_job *)0)->cmd.identities)},
    {offsetof(pgw_job, doc), sizeof(((pgw_job *)0)->doc)},
    {offsetof(pgw_job, earning), sizeof(((pgw_job *)0)->earning)},
};

/* Clears a reused job as calloc would, but for its scratch buffers. */
static void job_clear(pgw_job *job)
{
    size_t from = 0;
    for (size_t i = 0; i < sizeof(JOB_SCRATCH) / sizeof(JOB_SCRATCH[0]); i++) {
        PGW_ASSERT(JOB_SCRATCH[i].offset >= from);
        memset((char *)job + from, 0, JOB_SCRATCH[i].offset - from);
        from = JOB_SCRATCH[i].offset + JOB_SCRATCH[i].size;
    }
    memset((char *)job + from, 0, sizeof(*job) - from);
    job->cmd.answer[0] = '\0';
}

static pgw_job *job_new(pgw_api *api, const pgw_request *req, route r, pgw_command_kind kind)
{
    if (api->inflight >= api->inflight_max)
        return NULL;
    pgw_job *job = api->free_jobs;
    if (job != NULL) {
        api->free_jobs = job->next_free;
        api->n_free_jobs--;
        job_clear(job);
    } else if ((job = calloc(1, sizeof(*job))) == NULL) {
        return NULL;
    }
    api->inflight++;
    job->api = api;
    job->request_id = req->id;
    job->route = r;
    job->cmd.kind = kind;
    job->cmd.at = wall_now_s();
    job->cmd.asked_at = job->cmd.at; /* an event's `at` becomes its occurred_at */
    job->cmd.done = job_done;
    job->cmd.payload = job;
    job->cmd.render_ctx = job;
    return job;
}

static void job_free(pgw_job *job)
{
    pgw_api *api = job->api;
    PGW_ASSERT(api->inflight > 0);
    api->inflight--;
    OPENSSL_cleanse(job->otp_code, sizeof(job->otp_code)); /* a code refused before it went */
    free(job->cmd.page);                                   /* a history page, when there was one */
    job->cmd.page = NULL;
    if (job->wx != NULL) {
        oa_follow_release(job->wx->follow);
        json_decref(job->wx->event);
        free(job->wx);
        job->wx = NULL;
    }
    if (job->finance != NULL) {
        free(job->finance->statement);
        free(job->finance->out);
        free(job->finance);
        job->finance = NULL;
    }
    if (api->n_free_jobs == JOBS_KEPT) { /* a burst is over: give the memory back */
        free(job);
        return;
    }
    job->next_free = api->free_jobs;
    api->free_jobs = job;
    api->n_free_jobs++;
}

/* The queue a job's command goes to (NULL once stopping). */
static pgw_writer *queue_of(const pgw_api *api, const pgw_job *job)
{
    if (!pgw_command_reads(job->cmd.kind))
        return api->writer;
    return finance_route(job->route) ? api->finance : api->reader;
}

/* Queues the job's command; on refusal answers now and frees the job. */
static bool submit(pgw_api *api, pgw_job *job, pgw_response *resp)
{
    pgw_err err;
    memcpy(job->key_name, resp->key_name, sizeof(job->key_name));
    job->cmd.request_id = job->request_id; /* a batch's events: the batch's */
    pgw_writer *to = queue_of(api, job);
    int rc = to ? pgw_writer_submit(to, &job->cmd, &err)
                : pgw_err_set(&err, PGW_ESTATE, "the server is stopping");
    if (rc == PGW_OK)
        return true;
    rc = rc == PGW_EINVAL ? PGW_EINVAL : PGW_EFULL;
    if (job->route == R_OA_CALLBACK)
        oa_fail(api, resp, rc, err.msg);
    else
        fail(resp, job->route, rc, err.msg);
    job_free(job);
    return false;
}

/* Answers a request refused before its job was queued (frees the job). */
static bool refuse(pgw_response *resp, pgw_job *job, route r, int rc, const char *message)
{
    if (job != NULL)
        job_free(job);
    fail(resp, r, rc, message);
    return false;
}

/* ---- renderers (writer thread) ------------------------------------------------------ */

static void render_event(pgw_command *cmd, void *payload)
{
    pgw_job *job = payload;
    pgw_event_render(cmd, &job->api->cfg->rules, &job->doc);
}

static void render_hold(pgw_command *cmd, void *payload)
{
    pgw_job *job = payload;
    char when[PGW_RFC3339_MAX];
    answer_time(cmd->deadline, &job->api->cfg->rules.tz, when);
    json_t *body = NULL;
    switch (cmd->kind) {
    case PGW_COMMAND_HOLD:
        body = json_pack("{s:s,s:s,s:s,s:I,s:I,s:s}", "hold_id", cmd->hold_id, "member_id",
                         cmd->member, "state", "pending", "points", (json_int_t)cmd->points,
                         "available", (json_int_t)cmd->figures.available, "expires_at", when);
        break;
    case PGW_COMMAND_CAPTURE:
        body = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I}", "hold_id", cmd->hold_id, "member_id",
                         cmd->member, "state", "captured", "points", (json_int_t)cmd->points_moved,
                         "balance", (json_int_t)cmd->figures.balance, "available",
                         (json_int_t)cmd->figures.available);
        break;
    case PGW_COMMAND_VOID:
        body = json_pack("{s:s,s:s,s:s,s:I,s:I}", "hold_id", cmd->hold_id, "member_id", cmd->member,
                         "state", "voided", "balance", (json_int_t)cmd->figures.balance,
                         "available", (json_int_t)cmd->figures.available);
        break;
    case PGW_COMMAND_RETURN: {
        bool hold = strncmp(cmd->original, "capture:", 8) == 0;
        const char *return_id = strrchr(cmd->key, '/') + 1; /* handle_return's key */
        body = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I}", hold ? "hold_id" : "redemption_id",
                         cmd->hold_id, "return_id", return_id, "member_id", cmd->member, "points",
                         (json_int_t)cmd->points_moved, "left", (json_int_t)cmd->spend_left,
                         "balance", (json_int_t)cmd->figures.balance, "available",
                         (json_int_t)cmd->figures.available);
        break;
    }
    default: /* REDEEM */
        body = json_pack("{s:s,s:s,s:I,s:I,s:I}", "redemption_id", cmd->hold_id, "member_id",
                         cmd->member, "points", (json_int_t)cmd->points_moved, "balance",
                         (json_int_t)cmd->figures.balance, "available",
                         (json_int_t)cmd->figures.available);
        break;
    }
    pgw_command_keep_answer_with_transfers(cmd, body);
}

/* ---- handlers ------------------------------------------------------------------------ */

/* Path segment ids: what a hold or member id may contain. */
static bool plain_id(const char *s, size_t max)
{
    size_t n = strlen(s);
    /* "." and ".." would be taken, then never found again: the server folds
     * them out of a path (/v1/holds/../capture). */
    if (n == 0 || n > max || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (; *s != '\0'; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

/* Parses a JSON body into the job, checking the content type first. */
static int json_body(const pgw_request *req, bool optional, json_t **obj, pgw_err *err)
{
    int rc =
        optional && req->body_len == 0 ? PGW_OK : check_media_type(req, "application/json", err);
    return rc == PGW_OK ? parse_body(req, optional, obj, err) : rc;
}

/* Why `who` may not post an event of `shop` ("" for none) on `channel`:
 * its scope's rule (pgw_auth_may_write), said as what the event lacks. */
static int event_forbidden(const pgw_principal *who, const char *shop, const char *channel,
                           pgw_err *err)
{
    if (who->kind == PGW_SCOPE_SHOP && shop[0] == '\0')
        return pgw_err_set(err, PGW_EFORBIDDEN,
                           "key %s posts events of shop %s only: $.shop_id is required for "
                           "this key",
                           who->name, who->scope_id);
    if (who->kind == PGW_SCOPE_SHOP)
        return pgw_err_set(err, PGW_EFORBIDDEN,
                           "key %s posts events of shop %s only, not of shop \"%s\"", who->name,
                           who->scope_id, shop);
    if (who->kind == PGW_SCOPE_CHANNEL)
        return pgw_err_set(err, PGW_EFORBIDDEN,
                           "key %s posts events on channel %s only, not on \"%s\"", who->name,
                           who->scope_id, channel);
    return pgw_err_set(err, PGW_EFORBIDDEN, "key %s may not post events", who->name);
}

/*
 * Validates one event object and queues it; on refusal fills *resp and
 * returns false. `batch` (may be NULL) is the batch it belongs to.
 */
static bool start_event(pgw_api *api, const pgw_request *req, const json_t *obj,
                        const pgw_principal *who, pgw_batch *batch, size_t index,
                        pgw_response *resp)
{
    pgw_err err;
    pgw_job *job = job_new(api, req, R_EVENTS, PGW_COMMAND_EVENT);
    int rc = job ? PGW_OK : pgw_err_set(&err, PGW_EFULL, "too many requests in flight");
    if (rc == PGW_OK)
        rc = pgw_event_from_json(obj, &api->cfg->rules, &job->doc, &err);
    if (rc == PGW_OK && !pgw_auth_may_write(who, job->doc.shop_id, job->doc.channel))
        rc = event_forbidden(who, job->doc.shop_id, job->doc.channel, &err);
    if (rc == PGW_OK && job->doc.event.type == PGW_EVENT_CUSTOM && who->kind != PGW_SCOPE_ADMIN)
        rc = pgw_err_set(&err, PGW_EFORBIDDEN, "custom events need an admin key");
    pgw_command *cmd = job ? &job->cmd : NULL;
    if (rc == PGW_OK)
        rc = pgw_event_command(api->vault, obj, &job->doc, wall_now_s(), &job->earning, cmd, &err);
    if (rc != PGW_OK)
        return refuse(resp, job, R_EVENTS, rc, err.msg);
    job->batch = batch;
    job->batch_index = index;
    if (batch != NULL)
        job->request_id = batch->request_id;
    cmd->from_row = batch != NULL && batch->kind == R_SHOP_BATCH;
    /* The shop's own key may post on any channel: a channel key, which may
     * not watch the shop's transfers, is not told its sale by the sale's id. */
    cmd->first_unsaid = who->kind == PGW_SCOPE_CHANNEL && job->doc.shop_id[0] != '\0';
    if (cmd->from_row) { /* as --repair's rows: the till's own event, sent later, replays it */
        memcpy(cmd->fingerprint_as_sent, cmd->fingerprint, PGW_HASH_LEN); /* rows recorded so */
        cmd->has_fingerprint_as_sent = true;
        pgw_command_row_fingerprint(cmd, cmd->fingerprint);
    }
    if (strcmp(job->doc.channel, "wechat_mp") == 0) /* sign-ups from phones, one address each */
        snprintf(cmd->client_address, sizeof(cmd->client_address), "%s", req->client_address);
    cmd->render = render_event;
    return submit(api, job, resp);
}

static bool handle_event(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                         pgw_response *resp)
{
    pgw_err err;
    json_t *obj = NULL;
    int rc = json_body(req, false, &obj, &err);
    if (rc != PGW_OK) {
        fail(resp, R_EVENTS, rc, err.msg);
        return false;
    }
    bool started = start_event(api, req, obj, who, NULL, 0, resp);
    json_decref(obj);
    return started;
}

static bool start_import(pgw_api *api, const pgw_request *req, const json_t *row, pgw_batch *b,
                         size_t index, pgw_response *resp);
static bool query_has(const char *query, const char *name);
static int query_param(const char *query, const char *name, char *out, size_t cap, pgw_err *err);
static int query_int(const char *query, const char *name, int64_t lo, int64_t hi, int64_t *out,
                     const char *what, pgw_err *err);

/* ---- batches ----------------------------------------------------------------------------- */

static void batch_free(pgw_api *api, pgw_batch *b)
{
    PGW_ASSERT(api->batches > 0);
    api->batches--;
    for (size_t i = 0; b->bodies != NULL && i < b->n; i++)
        free(b->bodies[i]);
    free(b->bodies);
    free(b->statuses);
    free(b->lines);
    json_decref(b->events);
    pgw_import_file_clear(&b->import);
    free(b);
}

/* Keeps event i's answer (takes its body). */
static void batch_record(pgw_batch *b, size_t i, pgw_response *r)
{
    PGW_ASSERT(i < b->n && b->bodies[i] == NULL);
    b->statuses[i] = r->status;
    b->committed = b->committed || r->committed;
    b->bodies[i] = r->body;
    r->body = NULL;
    b->finished++;
}

/* Starts events until the window is full or none are left. */
static void batch_feed(pgw_api *api, pgw_batch *b)
{
    pgw_request req;
    memset(&req, 0, sizeof(req));
    req.id = b->request_id;
    PGW_STATIC_ASSERT(sizeof(req.client_address) == sizeof(b->client_address), "one size");
    memcpy(req.client_address, b->client_address, sizeof(req.client_address));
    while (b->running < BATCH_WINDOW && b->next < b->n) {
        size_t i = b->next++;
        /* Answered already (a CSV row that was not an event), by its
         * status: an answer without a body (503, no memory for it) left
         * the row to run as the null event in its place, counted twice. */
        if (b->statuses[i] != 0)
            continue;
        pgw_response r;
        memset(&r, 0, sizeof(r));
        bool started =
            b->kind == R_IMPORT
                ? start_import(api, &req, json_array_get(b->events, i), b, i, &r)
                : start_event(api, &req, json_array_get(b->events, i), &b->who, b, i, &r);
        if (started)
            b->running++;
        else
            batch_record(b, i, &r);
    }
}

/* Once every event has its answer: {"results": [{"status", "body"}, ...]} in
 * order, the batch freed. The bodies are JSON already: no re-parsing. */
static bool csv_answer(pgw_api *api, pgw_batch *b, pgw_response *resp);

static bool batch_answer(pgw_api *api, pgw_batch *b, pgw_response *resp)
{
    if (b->finished < b->n)
        return false;
    bool committed = b->committed; /* b is freed with the answer */
    if (b->lines != NULL) {
        (void)csv_answer(api, b, resp);
        resp->committed = committed && resp->status / 100 == 2;
        return true;
    }
    size_t cap = 32;
    for (size_t i = 0; i < b->n; i++)
        cap += 32 + (b->bodies[i] ? strlen(b->bodies[i]) : 4);
    char *out = malloc(cap);
    size_t len = 0;
    if (out != NULL) {
        len += (size_t)snprintf(out, cap, "{\"results\":[");
        for (size_t i = 0; i < b->n; i++)
            len += (size_t)snprintf(out + len, cap - len, "%s{\"status\":%d,\"body\":%s}",
                                    i ? "," : "", b->statuses[i],
                                    b->bodies[i] ? b->bodies[i] : "null");
        len += (size_t)snprintf(out + len, cap - len, "]}");
        PGW_ASSERT(len < cap);
    }
    resp->route = ROUTE_NAMES[R_BATCH];
    memcpy(resp->key_name, b->key_name, sizeof(resp->key_name));
    batch_free(api, b);
    if (out == NULL) {
        fail(resp, R_BATCH, PGW_ENOMEM, "out of memory");
        return true;
    }
    resp->status = 200;
    resp->committed = committed;
    resp->content_type = "application/json";
    resp->body = out;
    resp->body_len = len;
    return true;
}

/* ---- legacy imports over HTTP ------------------------------------------------------------- */

/* Queues row i of an import batch ({"card", "phone", "points"}). */
static bool start_import(pgw_api *api, const pgw_request *req, const json_t *row, pgw_batch *b,
                         size_t index, pgw_response *resp)
{
    pgw_err err;
    pgw_job *job = job_new(api, req, R_IMPORT, PGW_COMMAND_IMPORT);
    int rc = job ? PGW_OK : pgw_err_set(&err, PGW_EFULL, "too many requests in flight");
    const char *card = json_string_value(json_object_get(row, "card"));
    const char *phone = json_string_value(json_object_get(row, "phone"));
    const char *points = json_string_value(json_object_get(row, "points"));
    if (rc == PGW_OK)
        rc =
            pgw_import_fields(api->vault, &b->import, card ? card : "", phone ? phone : "",
                              points ? points : "", b->lines[index], wall_now_s(), &job->cmd, &err);
    if (rc != PGW_OK)
        return refuse(resp, job, R_IMPORT, rc, err.msg);
    job->cmd.done = job_done; /* pgw_import_fields started the command afresh */
    job->cmd.payload = job;
    job->cmd.render_ctx = job;
    job->batch = b;
    job->batch_index = index;
    job->request_id = b->request_id;
    return submit(api, job, resp);
}

static json_t *import_row_json(const pgw_csv_row *row, const int *col, const pgw_batch *b,
                               const pgw_tz *tz, pgw_err *err)
{
    (void)b;
    (void)tz;
    json_t *obj = json_pack("{s:s,s:s,s:s}", "card", pgw_csv_cell(row, col, PGW_IMPORT_CARD),
                            "phone", pgw_csv_cell(row, col, PGW_IMPORT_PHONE), "points",
                            pgw_csv_cell(row, col, PGW_IMPORT_POINTS));
    if (obj == NULL)
        pgw_err_set(err, PGW_EINVAL, "a field is not valid UTF-8");
    return obj;
}

/* ---- shop CSV batches ------------------------------------------------------------------- */

enum {
    COL_EVENT_ID,
    COL_TYPE,
    COL_OCCURRED_AT,
    COL_MEMBER,
    COL_AMOUNT,
    COL_ORIGINAL,
    COL_RECEIPT,
    N_COLUMNS
};
static const char *const COLUMNS[N_COLUMNS] = {
    [COL_EVENT_ID] = "event_id",  [COL_TYPE] = "type",         [COL_OCCURRED_AT] = "occurred_at",
    [COL_MEMBER] = "member",      [COL_AMOUNT] = "amount_fen", [COL_ORIGINAL] = "original_event_id",
    [COL_RECEIPT] = "receipt_no",
};

/* Maps the header row's names to columns; each required once. */
static int csv_header(const pgw_csv_row *row, int col[N_COLUMNS], pgw_err *err)
{
    int rc = pgw_csv_columns(row, COLUMNS, N_COLUMNS, col, false, err);
    for (size_t c = 0; rc == PGW_OK && c <= COL_MEMBER; c++) {
        if (col[c] < 0)
            rc = pgw_err_set(err, PGW_EINVAL, "line 1: column %s is missing", COLUMNS[c]);
    }
    return rc;
}

/* One CSV row as the event object POST /v1/events would take. Its
 * occurred_at is read as a reconciliation statement reads its own (what a
 * spreadsheet writes; offset-less, in the mall's zone `tz`) and handed on
 * as RFC 3339: the same instant however spelt is the same event. */
static json_t *csv_event(const pgw_csv_row *row, const int *col, const pgw_batch *b,
                         const pgw_tz *tz, pgw_err *err)
{
    int64_t at = 0;
    char when[PGW_RFC3339_MAX];
    /* A custom event's points and a referral's referrer have no column:
     * the event would refuse the row by a path no row has ("$.points:
     * required", column_message leaves it), so the row's type is named. */
    pgw_event_type type;
    if (pgw_event_type_parse(pgw_csv_cell(row, col, COL_TYPE), &type) == PGW_OK &&
        (type == PGW_EVENT_CUSTOM || type == PGW_EVENT_REFERRAL)) {
        pgw_err_set(err, PGW_EINVAL,
                    "type %s: a row has no column for its %s; POST /v1/events takes it",
                    pgw_event_type_name(type), type == PGW_EVENT_CUSTOM ? "points" : "referrer");
        return NULL;
    }
    json_t *member = pgw_member_json_from_text(pgw_csv_cell(row, col, COL_MEMBER), err);
    if (member == NULL)
        return NULL;
    const char *written = pgw_csv_cell(row, col, COL_OCCURRED_AT);
    int rc = pgw_statement_time(written, tz, &at, err);
    if (rc == PGW_OK) {
        int formatted = pgw_format_rfc3339(at, tz, when, sizeof(when));
        PGW_ASSERT(formatted == PGW_OK); /* pgw_statement_time refuses what tz cannot write */
    }
    /* The event refuses it too, but as "$.occurred_at" and without what it
     * was read as: "20261129", a date as some tills write it, is unix
     * seconds in 1970. */
    if (rc == PGW_OK && at < PGW_EVENT_EARLIEST_S)
        rc = pgw_err_set(err, PGW_EINVAL,
                         "occurred_at \"%.40s\" is %s, before 2000-01-01T00:00:00Z: no event "
                         "is older",
                         written, when);
    if (rc != PGW_OK) {
        json_decref(member);
        return NULL;
    }
    /* RFC 3339 with its offset, what the event itself reads, goes on as
     * written: a row recorded before row fingerprints is known by its
     * event's, the time as sent in it (test_instant_written_another_way). */
    pgw_err ignored;
    int64_t as_sent = 0;
    bool event_reads_it = pgw_parse_rfc3339(written, &as_sent, &ignored) == PGW_OK && as_sent == at;
    json_t *ev = json_pack("{s:s,s:s,s:s,s:s,s:s,s:o}", "event_id",
                           pgw_csv_cell(row, col, COL_EVENT_ID), "channel", b->channel, "shop_id",
                           b->shop, "type", pgw_csv_cell(row, col, COL_TYPE), "occurred_at",
                           event_reads_it ? written : when, "member", member);
    const char *amount = pgw_csv_cell(row, col, COL_AMOUNT);
    int64_t fen = 0;
    /* Digits only: strtoll took " 5000" and "+5000" as 5000 and refused "5000 ".
     * Empty is no amount (a behaviour event); the event checks 0 and the type. */
    if (ev != NULL && amount[0] != '\0' &&
        pgw_csv_digits(amount, 0, PGW_AMOUNT_FEN_MAX, &fen, err) != PGW_OK) {
        json_decref(ev);
        pgw_err_prefix(err, "amount_fen ");
        return NULL;
    }
    if (ev != NULL && amount[0] != '\0')
        json_object_set_new(ev, "amount_fen", json_integer(fen));
    if (ev != NULL && pgw_csv_cell(row, col, COL_ORIGINAL)[0] != '\0')
        json_object_set_new(ev, "original_event_id",
                            json_string(pgw_csv_cell(row, col, COL_ORIGINAL)));
    if (ev != NULL && pgw_csv_cell(row, col, COL_RECEIPT)[0] != '\0')
        json_object_set_new(ev, "receipt_no", json_string(pgw_csv_cell(row, col, COL_RECEIPT)));
    if (ev == NULL)
        pgw_err_set(err, PGW_EINVAL, "a field is not valid UTF-8");
    return ev;
}

/* Reads the rows after the header into b: an event per good row, an answer
 * (invalid_request with the problem) in place of each bad one. */
/* Turns a CSV row into what the batch will start (an event, an import row). */
typedef json_t *(*row_converter)(const pgw_csv_row *row, const int *col, const pgw_batch *b,
                                 const pgw_tz *tz, pgw_err *err);

static int csv_rows(pgw_csv *csv, const int *col, row_converter convert, const pgw_tz *tz,
                    pgw_csv_row *row, pgw_batch *b, pgw_err *err)
{
    bool done = false;
    size_t cap = 64;
    b->lines = malloc(cap * sizeof(*b->lines));
    char **problems = malloc(cap * sizeof(*problems));
    int rc = b->lines && problems ? PGW_OK : PGW_ENOMEM;
    while (rc == PGW_OK) {
        pgw_err bad;
        pgw_err_clear(&bad);
        int row_rc = pgw_csv_next(csv, row, &done, &bad);
        if (done)
            break;
        if (b->n == CSV_ROWS_MAX) {
            rc = pgw_err_set(err, PGW_ETOOLARGE, "more than %d rows", CSV_ROWS_MAX);
            break;
        }
        if (b->n == cap) {
            cap *= 2;
            size_t *lines = realloc(b->lines, cap * sizeof(*b->lines));
            char **grown = realloc(problems, cap * sizeof(*problems));
            b->lines = lines ? lines : b->lines;
            problems = grown ? grown : problems;
            if (lines == NULL || grown == NULL) {
                rc = PGW_ENOMEM;
                break;
            }
        }
        /* A refusal quoting the row's bytes, cut or not UTF-8, is made
         * UTF-8 by error_body, as every answer's. */
        json_t *ev = row_rc == PGW_OK ? convert(row, col, b, tz, &bad) : NULL;
        b->lines[b->n] = row->line;
        problems[b->n] = ev ? NULL : strdup(bad.msg);
        bool kept = (ev != NULL || problems[b->n] != NULL) &&
                    json_array_append_new(b->events, ev ? ev : json_null()) == 0;
        b->n++; /* counted either way, so its problem is freed below */
        if (!kept) {
            rc = PGW_ENOMEM;
            break;
        }
    }
    b->statuses = calloc(b->n ? b->n : 1, sizeof(*b->statuses));
    b->bodies = calloc(b->n ? b->n : 1, sizeof(*b->bodies));
    if (rc == PGW_OK && (b->statuses == NULL || b->bodies == NULL))
        rc = PGW_ENOMEM;
    for (size_t i = 0; i < b->n; i++) {
        if (rc == PGW_OK && problems[i] != NULL) {
            pgw_response r;
            memset(&r, 0, sizeof(r));
            pgw_api_error(&r, 400, "invalid_request", problems[i]);
            batch_record(b, i, &r);
        }
        free(problems[i]);
    }
    free(problems);
    return rc == PGW_ENOMEM ? pgw_err_set(err, PGW_ENOMEM, "out of memory") : rc;
}

/*
 * A row's refusal as its till's user reads it. The event's rules name a
 * JSON path ("$.occurred_at is 400 s ahead ...", "$.member.phone: ..."),
 * and a row has columns: the path becomes the column it was read from, as
 * csv_event names what it refuses itself (`occurred_at "20261129" is
 * ...`), every refusal alike, made before the writer or by it. A path no
 * column writes (none a row can reach: csv_event refuses the types that
 * need one) is left as it is. Into out (cap).
 */
static const char *column_message(const char *message, char *out, size_t cap)
{
    if (strncmp(message, "$.", 2) != 0)
        return message;
    const char *key = message + 2;
    size_t key_len = strcspn(key, ".[: ");
    const char *rest = key + strcspn(key, ": "); /* past "$.member.phone" whole */
    for (size_t c = 0; c < N_COLUMNS; c++) {
        if (strlen(COLUMNS[c]) == key_len && strncmp(key, COLUMNS[c], key_len) == 0) {
            snprintf(out, cap, "%s%s", COLUMNS[c], rest);
            return out;
        }
    }
    return message;
}

/* {"accepted", "replayed", "rejected", "errors": [{"line", "code", "message", "details"}]}. */
static bool csv_answer(pgw_api *api, pgw_batch *b, pgw_response *resp)
{
    json_int_t accepted = 0, replayed = 0, matched[3] = {0, 0, 0}, points = 0;
    json_t *errors = json_array();
    for (size_t i = 0; i < b->n; i++) {
        accepted += b->statuses[i] == 201;
        replayed += b->statuses[i] == 200;
        if (b->statuses[i] == 201 && b->kind == R_IMPORT) { /* how its member was found */
            json_t *body = json_loads(b->bodies[i], 0, NULL);
            json_int_t m = json_integer_value(json_object_get(body, "match"));
            matched[m >= 0 && m < 3 ? m : 0]++;
            points += json_integer_value(json_object_get(body, "points"));
            json_decref(body);
        }
        if (b->statuses[i] == 201 || b->statuses[i] == 200)
            continue;
        json_t *body = b->bodies[i] ? json_loads(b->bodies[i], 0, NULL) : NULL;
        json_t *e = json_object_get(body, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *message = json_string_value(json_object_get(e, "message"));
        char named[PGW_ERR_MSG_MAX];
        if (message != NULL && b->kind == R_SHOP_BATCH)
            message = column_message(message, named, sizeof(named));
        json_t *details = json_object_get(e, "details"); /* its figures, as alone */
        json_array_append_new(errors,
                              json_pack("{s:I,s:s,s:s,s:o}", "line", (json_int_t)b->lines[i],
                                        "code", code ? code : "unavailable", "message",
                                        message ? message : "no answer", "details",
                                        details ? json_incref(details) : json_object()));
        json_decref(body);
    }
    json_int_t rejected = (json_int_t)b->n - accepted - replayed;
    memcpy(resp->key_name, b->key_name, sizeof(resp->key_name));
    json_t *body =
        b->kind == R_IMPORT
            ? json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "batch", b->import.batch,
                        "rate_bp", (json_int_t)b->import.rate_bp, "imported", accepted, "replayed",
                        replayed, "rejected", rejected, "created", matched[PGW_IMPORT_CREATED],
                        "matched_by_card", matched[PGW_IMPORT_BY_CARD], "matched_by_phone",
                        matched[PGW_IMPORT_BY_PHONE], "points", points, "errors", errors)
            : json_pack("{s:I,s:I,s:I,s:o}", "accepted", accepted, "replayed", replayed, "rejected",
                        rejected, "errors", errors);
    resp->route = ROUTE_NAMES[b->kind];
    batch_free(api, b);
    set_body(resp, 200, body);
    return true;
}

/*
 * Starts a batch like `setup` (kind, shop, import fields) from the CSV rows
 * after the header; answers now when nothing is left to wait for, or when
 * `rc` says the request was already refused (with `why`).
 */
static bool run_csv_batch(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                          const pgw_batch *setup, int rc, const pgw_err *why, pgw_csv *csv,
                          const int *col, row_converter convert, pgw_response *resp)
{
    if (rc != PGW_OK) {
        fail(resp, (route)setup->kind, rc, why->msg);
        return false;
    }
    pgw_err err;
    pgw_batch *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        fail(resp, (route)setup->kind, PGW_ENOMEM, "out of memory");
        return false;
    }
    *b = *setup;
    api->batches++;
    b->request_id = req->id;
    memcpy(b->client_address, req->client_address, sizeof(b->client_address));
    memcpy(b->key_name, resp->key_name, sizeof(b->key_name));
    b->who = *who;
    b->events = json_array();
    rc = b->events ? csv_rows(csv, col, convert, &api->cfg->rules.tz, &api->csv_row, b, &err)
                   : PGW_ENOMEM;
    if (rc == PGW_OK && b->n == 0)
        rc = pgw_err_set(&err, PGW_EINVAL, "no rows after the header");
    if (rc != PGW_OK) {
        route kind = (route)b->kind;
        batch_free(api, b);
        fail(resp, kind, rc, rc == PGW_ENOMEM ? "out of memory" : err.msg);
        return false;
    }
    batch_feed(api, b);
    return !batch_answer(api, b, resp);
}

/*
 * What every CSV upload for a shop checks first: text/csv, a shop of the
 * configuration, a key that may write for it, room for another batch; then
 * reads the header row into *header.
 */
static int csv_request(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                       const char *shop, pgw_csv *csv, pgw_csv_row *header, pgw_err *err)
{
    bool done = false;
    pgw_csv_init(csv, (const char *)req->body, req->body_len);
    int rc = check_media_type(req, "text/csv", err);
    if (rc != PGW_OK)
        return rc;
    if (pgw_rules_find_shop(&api->cfg->rules, shop) < 0)
        return pgw_err_set(err, PGW_ENOTFOUND, "no shop %.32s", shop);
    if (!pgw_auth_may_write(who, shop, NULL))
        return pgw_err_set(err, PGW_EFORBIDDEN, "key %s may not post for shop %s", who->name, shop);
    if (api->batches >= api->inflight_max / BATCH_WINDOW)
        return pgw_err_set(err, PGW_EFULL, "too many batches in progress");
    pgw_err why;
    if (pgw_csv_next(csv, header, &done, &why) != PGW_OK || done)
        return pgw_err_set(err, PGW_EINVAL, "line 1: a header row is required (%s)",
                           done ? "the body is empty" : why.msg);
    return PGW_OK;
}

/*
 * POST /v1/shops/{shop_id}/batches?channel=NAME (text/csv): a till's
 * export, row by row, keyed under the channel its till posts live on
 * ("store" when not named): a sale it sent live is then a replay, not a
 * second credit. Its name is checked as an event's; the key is still the
 * shop's or an admin's (csv_request: a channel's key posts no file), and
 * each row is checked as that channel's event (start_event).
 */
static bool handle_shop_batch(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                              const char *shop, pgw_response *resp)
{
    pgw_err err;
    pgw_csv csv;
    int col[N_COLUMNS];
    pgw_batch setup = {.kind = R_SHOP_BATCH, .channel = "store"};
    int rc = csv_request(api, req, who, shop, &csv, &api->csv_header, &err);
    if (rc == PGW_OK)
        rc = query_param(req->query, "channel", setup.channel, sizeof(setup.channel), &err);
    if (rc == PGW_OK)
        rc = pgw_event_check_channel(setup.channel, "channel", &err);
    if (rc == PGW_OK)
        rc = csv_header(&api->csv_header, col, &err);
    snprintf(setup.shop, sizeof(setup.shop), "%s", shop);
    return run_csv_batch(api, req, who, &setup, rc, &err, &csv, col, csv_event, resp);
}

/* POST /v1/shops/{shop_id}/imports?batch=ID&rate_bp=N (text/csv card,phone,points). */
static bool handle_import(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                          const char *shop, pgw_response *resp)
{
    pgw_err err;
    pgw_csv csv;
    int col[PGW_IMPORT_COLUMNS];
    int32_t index = pgw_rules_find_shop(&api->cfg->rules, shop);
    char batch[PGW_IMPORT_BATCH_MAX + 1] = "";
    int64_t rate_bp = index >= 0 ? api->cfg->rules.shops[index].rate_bp : 0;
    int rc = csv_request(api, req, who, shop, &csv, &api->csv_header, &err);
    /* Never a batch too long taken for none: the body's hash would name the
     * batch, and the same file would be credited again. */
    if (rc == PGW_OK)
        rc = query_param(req->query, "batch", batch, sizeof(batch), &err);
    if (rc == PGW_OK && query_has(req->query, "batch") && !pgw_import_batch_ok(batch))
        rc = pgw_err_set(&err, PGW_EINVAL, "batch must be 1..%d of [A-Za-z0-9._-]",
                         PGW_IMPORT_BATCH_MAX);
    char what[48];
    snprintf(what, sizeof(what), "rate_bp must be 1..%d", PGW_MULTIPLIER_BP_MAX);
    if (rc == PGW_OK)
        rc = query_int(req->query, "rate_bp", 1, PGW_MULTIPLIER_BP_MAX, &rate_bp, what, &err);
    bool named = batch[0] != '\0';
    if (rc == PGW_OK && !named)
        pgw_import_default_batch(shop, (const char *)req->body, req->body_len, &api->csv_row,
                                 batch);
    if (rc == PGW_OK)
        rc = pgw_import_header(&api->csv_header, col, &err);
    pgw_batch setup = {.kind = R_IMPORT, .import = {.batch_named = named, .rate_bp = rate_bp}};
    snprintf(setup.shop, sizeof(setup.shop), "%s", shop);
    snprintf(setup.import.shop, sizeof(setup.import.shop), "%s", shop);
    snprintf(setup.import.batch, sizeof(setup.import.batch), "%s", batch);
    return run_csv_batch(api, req, who, &setup, rc, &err, &csv, col, import_row_json, resp);
}

/* POST /v1/events:batch {"events": [...]}: up to 1000, each its own result. */
static bool handle_batch(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                         pgw_response *resp)
{
    static const char *const KEYS[] = {"events", NULL};
    pgw_err err;
    json_t *obj = NULL;
    int rc = json_body(req, false, &obj, &err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, "$", KEYS, &err);
    json_t *events = obj ? json_object_get(obj, "events") : NULL;
    if (rc == PGW_OK && (!json_is_array(events) || json_array_size(events) < 1 ||
                         json_array_size(events) > BATCH_EVENTS_MAX))
        rc = pgw_err_set(&err, PGW_EINVAL, "$.events: expected an array of 1..%d events",
                         BATCH_EVENTS_MAX);
    if (rc == PGW_OK && api->batches >= api->inflight_max / BATCH_WINDOW)
        rc = pgw_err_set(&err, PGW_EFULL, "too many batches in progress");
    pgw_batch *b = rc == PGW_OK ? calloc(1, sizeof(*b)) : NULL;
    if (rc == PGW_OK && b == NULL)
        rc = pgw_err_set(&err, PGW_ENOMEM, "out of memory");
    if (b != NULL)
        api->batches++;
    if (rc != PGW_OK) {
        json_decref(obj);
        fail(resp, R_BATCH, rc, err.msg);
        return false;
    }
    b->request_id = req->id;
    memcpy(b->client_address, req->client_address, sizeof(b->client_address));
    b->kind = R_BATCH;
    memcpy(b->key_name, resp->key_name, sizeof(b->key_name));
    b->who = *who;
    b->events = json_incref(events);
    json_decref(obj);
    b->n = json_array_size(events);
    b->statuses = calloc(b->n, sizeof(*b->statuses));
    b->bodies = calloc(b->n, sizeof(*b->bodies));
    if (b->statuses == NULL || b->bodies == NULL) {
        batch_free(api, b);
        fail(resp, R_BATCH, PGW_ENOMEM, "out of memory");
        return false;
    }
    batch_feed(api, b);
    return !batch_answer(api, b, resp); /* all refused at once: answered now */
}

/* Reads {"hold_id"|"redemption_id", "member", "shop_id", "points", "expires_in_s"};
 * *member: the member as named, normalised. */
static int spend_from_json(const pgw_api *api, const json_t *obj, bool hold, pgw_command *cmd,
                           pgw_identity *member, int64_t *seconds, pgw_err *err)
{
    static const char *const HOLD_KEYS[] = {"hold_id", "member",       "shop_id",
                                            "points",  "expires_in_s", NULL};
    static const char *const REDEEM_KEYS[] = {"redemption_id", "member", "shop_id", "points", NULL};
    const char *id_key = hold ? "hold_id" : "redemption_id";
    int rc = pgw_json_only_keys(obj, "$", hold ? HOLD_KEYS : REDEEM_KEYS, err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, id_key, "$", true, PGW_REFERENCE_MAX, cmd->hold_id,
                             sizeof(cmd->hold_id), err);
    if (rc == PGW_OK && !plain_id(cmd->hold_id, PGW_REFERENCE_MAX))
        rc = pgw_err_set(err, PGW_EINVAL, "$.%s: use letters, digits and - _ . : only", id_key);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "shop_id", "$", true, PGW_ID_MAX, cmd->shop, sizeof(cmd->shop),
                             err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "points", "$", true, 1, PGW_POINTS_MAX, &cmd->points, err);
    *seconds = HOLD_SECONDS_DEFAULT;
    if (rc == PGW_OK && hold)
        rc = pgw_json_int(obj, "expires_in_s", "$", false, 1, HOLD_SECONDS_MAX, seconds, err);
    if (rc == PGW_OK)
        rc = pgw_member_from_json(json_object_get(obj, "member"), "$.member", &api->cfg->rules,
                                  member, err);
    return rc == PGW_OK ? pgw_command_name_member(api->vault, member, cmd, err) : rc;
}

/* POST /v1/holds and POST /v1/redemptions. */
static bool handle_spend(pgw_api *api, const pgw_request *req, const pgw_principal *who, route r,
                         pgw_response *resp)
{
    bool hold = r == R_HOLDS;
    pgw_err err;
    json_t *obj = NULL;
    int64_t seconds = 0;
    pgw_identity member;
    int rc = json_body(req, false, &obj, &err);
    pgw_job *job =
        rc == PGW_OK ? job_new(api, req, r, hold ? PGW_COMMAND_HOLD : PGW_COMMAND_REDEEM) : NULL;
    if (rc == PGW_OK && job == NULL)
        rc = pgw_err_set(&err, PGW_EFULL, "too many requests in flight");
    if (rc == PGW_OK)
        rc = spend_from_json(api, obj, hold, &job->cmd, &member, &seconds, &err);
    if (rc == PGW_OK && !pgw_auth_may_write(who, job->cmd.shop, NULL))
        rc = pgw_err_set(&err, PGW_EFORBIDDEN, "key %s may not spend points at shop %s", who->name,
                         job->cmd.shop);
    if (rc == PGW_OK && pgw_rules_find_shop(&api->cfg->rules, job->cmd.shop) < 0)
        rc = pgw_err_set(&err, PGW_EINVAL, "$.shop_id: no shop %s", job->cmd.shop);
    /* The default written out is the same request as the default left out:
     * fingerprinted without it, as holds that left it out always were. */
    if (rc == PGW_OK && hold && seconds == HOLD_SECONDS_DEFAULT)
        json_object_del(obj, "expires_in_s");
    /* Its member as normalised: a till's retry that writes the phone
     * afresh is the same hold (it was 409 idempotency_conflict). */
    if (rc == PGW_OK)
        rc = pgw_command_fingerprint(obj, &member, NULL, &job->cmd, &err);
    json_decref(obj);
    if (rc != PGW_OK)
        return refuse(resp, job, r, rc, err.msg);
    pgw_command *cmd = &job->cmd;
    snprintf(cmd->key, sizeof(cmd->key), "%s:%s", hold ? "hold" : "redeem", cmd->hold_id);
    snprintf(cmd->channel, sizeof(cmd->channel), "store");
    snprintf(cmd->reference, sizeof(cmd->reference), "%s", cmd->hold_id);
    /* `at` is the second the request came in, cut down: without the +1 a
     * hold asked for 1 s created at x.86 could be captured for 0.14 s.
     * Pending for at least the seconds asked, at most one more. */
    cmd->deadline = cmd->at + seconds + 1;
    cmd->render = render_hold;
    return submit(api, job, resp);
}

/*
 * What a request on a hold or redemption named by its path (a capture, a
 * void, a return) is checked for alike: an admin's or a shop's key (one
 * that may not `act` is 403), and its body fingerprinted.
 */
static int path_request_checks(const pgw_principal *who, json_t *obj, const char *act,
                               pgw_command *cmd, pgw_err *err)
{
    if (!(who->kind == PGW_SCOPE_ADMIN || who->kind == PGW_SCOPE_SHOP))
        return pgw_err_set(err, PGW_EFORBIDDEN, "key %s may not %s", who->name, act);
    if (pgw_json_fingerprint(obj, cmd->fingerprint) != PGW_OK)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory fingerprinting the request");
    return PGW_OK;
}

/* Such a request's command: the path's id, and a shop key limited to its
 * own shop's holds and spends (another's is not found). */
static void path_command(pgw_command *cmd, const pgw_principal *who, const char *id)
{
    snprintf(cmd->hold_id, sizeof(cmd->hold_id), "%s", id);
    snprintf(cmd->channel, sizeof(cmd->channel), "store");
    if (who->kind == PGW_SCOPE_SHOP)
        snprintf(cmd->shop, sizeof(cmd->shop), "%.*s", PGW_ID_MAX, who->scope_id);
}

/* POST /v1/holds/{id}/capture and /void; `id` is the path segment. */
static bool handle_settle(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                          const char *id, route r, pgw_response *resp)
{
    static const char *const CAPTURE_KEYS[] = {"points", NULL};
    static const char *const VOID_KEYS[] = {NULL};
    pgw_err err;
    json_t *obj = NULL;
    int rc =
        plain_id(id, PGW_REFERENCE_MAX)
            ? json_body(req, true, &obj, &err)
            : pgw_err_set(&err, PGW_EINVAL,
                          "a hold id is 1..%d of letters, digits and - _ . :", PGW_REFERENCE_MAX);
    bool capture = r == R_CAPTURE;
    pgw_job *job = rc == PGW_OK
                       ? job_new(api, req, r, capture ? PGW_COMMAND_CAPTURE : PGW_COMMAND_VOID)
                       : NULL;
    if (rc == PGW_OK && job == NULL)
        rc = pgw_err_set(&err, PGW_EFULL, "too many requests in flight");
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, "$", capture ? CAPTURE_KEYS : VOID_KEYS, &err);
    if (rc == PGW_OK && capture)
        rc = pgw_json_int(obj, "points", "$", false, 1, PGW_POINTS_MAX, &job->cmd.points, &err);
    if (rc == PGW_OK)
        rc = path_request_checks(who, obj, "settle holds", &job->cmd, &err);
    json_decref(obj);
    if (rc != PGW_OK)
        return refuse(resp, job, r, rc, err.msg);
    pgw_command *cmd = &job->cmd;
    path_command(cmd, who, id);
    snprintf(cmd->key, sizeof(cmd->key), "%s:%s", capture ? "capture" : "void", id);
    cmd->render = render_hold;
    return submit(api, job, resp);
}

/*
 * POST /v1/redemptions/{id}/returns and /v1/holds/{id}/returns
 * {"return_id", "points"}: gives back points of a redemption or a captured
 * hold. Keyed return:<spend's key>/<return id> ('/' is in no id, so the
 * key names one pair), idempotent per (spend, return id) as other keys.
 */
static bool handle_return(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                          const char *id, route r, pgw_response *resp)
{
    static const char *const KEYS[] = {"return_id", "points", NULL};
    bool hold = r == R_HOLD_RETURNS;
    const char *spend = hold ? "capture" : "redeem";
    char return_id[PGW_REFERENCE_MAX + 1] = "";
    pgw_err err;
    json_t *obj = NULL;
    int rc = plain_id(id, PGW_REFERENCE_MAX)
                 ? json_body(req, false, &obj, &err)
                 : pgw_err_set(&err, PGW_EINVAL, "a %s id is 1..%d of letters, digits and - _ . :",
                               hold ? "hold" : "redemption", PGW_REFERENCE_MAX);
    pgw_job *job = rc == PGW_OK ? job_new(api, req, r, PGW_COMMAND_RETURN) : NULL;
    if (rc == PGW_OK && job == NULL)
        rc = pgw_err_set(&err, PGW_EFULL, "too many requests in flight");
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, "$", KEYS, &err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "return_id", "$", true, PGW_REFERENCE_MAX, return_id,
                             sizeof(return_id), &err);
    if (rc == PGW_OK && !plain_id(return_id, PGW_REFERENCE_MAX))
        rc = pgw_err_set(&err, PGW_EINVAL, "$.return_id: use letters, digits and - _ . : only");
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "points", "$", true, 1, PGW_POINTS_MAX, &job->cmd.points, &err);
    /* The key holds both ids: together they fit it. */
    if (rc == PGW_OK &&
        strlen("return:") + strlen(spend) + 2 + strlen(id) + strlen(return_id) > PGW_IDEM_KEY_MAX)
        rc = pgw_err_set(&err, PGW_EINVAL,
                         "$.return_id: with the %s id, at most %d characters together",
                         hold ? "hold" : "redemption",
                         (int)(PGW_IDEM_KEY_MAX - strlen("return:") - strlen(spend) - 2));
    if (rc == PGW_OK)
        rc = path_request_checks(who, obj, "return points", &job->cmd, &err);
    json_decref(obj);
    if (rc != PGW_OK)
        return refuse(resp, job, r, rc, err.msg);
    pgw_command *cmd = &job->cmd;
    path_command(cmd, who, id);
    snprintf(cmd->original, sizeof(cmd->original), "%s:%s", spend, id);
    int len = snprintf(cmd->key, sizeof(cmd->key), "return:%s/%s", cmd->original, return_id);
    PGW_ASSERT(len > 0 && (size_t)len < sizeof(cmd->key)); /* checked above */
    cmd->render = render_hold;
    return submit(api, job, resp);
}

/*
 * ?name=<decimal digits, lo..hi> into *out, left as it is when absent.
 * Anything else given is PGW_EINVAL saying `what`: a value too long to
 * read is never taken for absent or for another number.
 */
static int query_int(const char *query, const char *name, int64_t lo, int64_t hi, int64_t *out,
                     const char *what, pgw_err *err)
{
    char text[24];
    int rc = pgw_query_get(query, name, text, sizeof(text), err);
    if (rc == PGW_ENOTFOUND)
        return PGW_OK;
    if (rc == PGW_EINVAL) /* twice, or no value: err says */
        return rc;
    if (rc != PGW_OK || !pgw_decimal_in(text, lo, hi, out))
        return pgw_err_set(err, PGW_EINVAL, "%s", what);
    return PGW_OK;
}

/* ?limit=1..100&after=<cursor>: the page a history read asks for. */
static int history_page(const pgw_request *req, pgw_command *cmd, pgw_err *err)
{
    int64_t limit = HISTORY_DEFAULT;
    char what[32];
    snprintf(what, sizeof(what), "limit must be 1..%d", HISTORY_MAX);
    int rc = query_int(req->query, "limit", 1, HISTORY_MAX, &limit, what, err);
    if (rc == PGW_OK)
        rc = query_int(req->query, "after", 1, INT64_MAX, &cmd->before,
                       "after must be a cursor: a page's next", err);
    if (rc != PGW_OK)
        return rc;
    cmd->page_cap = (size_t)limit + 1; /* one more: is there a next page? */
    cmd->page = calloc(cmd->page_cap, sizeof(*cmd->page));
    return cmd->page ? PGW_OK : pgw_err_set(err, PGW_ENOMEM, "out of memory");
}

/* GET /v1/members/{id} and /v1/members/{id}/transfers: through the reader. */
static bool handle_member(pgw_api *api, const pgw_request *req, const char *id, route r,
                          pgw_response *resp)
{
    pgw_identity who;
    pgw_err err;
    char text[PGW_ID_MAX + 16];
    snprintf(text, sizeof(text), "member_id:%.*s", PGW_ID_MAX + 1, id);
    if (strlen(id) > PGW_ID_MAX || pgw_identity_parse(text, &who, &err) != PGW_OK) {
        pgw_api_error(resp, 404, "not_found", "no such member");
        return false;
    }
    pgw_job *job =
        job_new(api, req, r, r == R_MEMBER ? PGW_COMMAND_READ_MEMBER : PGW_COMMAND_READ_HISTORY);
    int rc = job ? PGW_OK : pgw_err_set(&err, PGW_EFULL, "too many requests in flight");
    if (rc == PGW_OK && r == R_HISTORY)
        rc = history_page(req, &job->cmd, &err);
    if (rc != PGW_OK)
        return refuse(resp, job, r, rc, err.msg);
    snprintf(job->cmd.member, sizeof(job->cmd.member), "%.*s", PGW_ID_MAX, who.value);
    return submit(api, job, resp);
}

/* POST /v1/members/resolve {"phone": ...} (any member object): whose is it. */
static bool handle_resolve(pgw_api *api, const pgw_request *req, pgw_response *resp)
{
    pgw_err err;
    json_t *obj = NULL;
    pgw_identity who;
    int rc = json_body(req, false, &obj, &err);
    if (rc == PGW_OK)
        rc = pgw_member_from_json(obj, "$", &api->cfg->rules, &who, &err);
    json_decref(obj);
    pgw_job *job = rc == PGW_OK ? job_new(api, req, R_RESOLVE, PGW_COMMAND_READ_RESOLVE) : NULL;
    if (rc == PGW_OK && job == NULL)
        rc = pgw_err_set(&err, PGW_EFULL, "too many requests in flight");
    if (rc == PGW_OK)
        rc = pgw_command_name_member(api->vault, &who, &job->cmd, &err);
    if (rc != PGW_OK)
        return refuse(resp, job, R_RESOLVE, rc, err.msg);
    PGW_ASSERT(job != NULL); /* rc says so; gcc -O3 cannot follow it through pgw_err_set */
    return submit(api, job, resp);
}

/* BIND's answer, stored for replays: the member, what was bound, any merge. */
static void render_bind(pgw_command *cmd, void *payload)
{
    pgw_job *job = payload;
    char shown[PGW_IDENTITY_TEXT_MAX + 1];
    pgw_err err;
    if (pgw_vault_display(job->api->vault, &cmd->who, shown, sizeof(shown), &err) != PGW_OK)
        snprintf(shown, sizeof(shown), "(unreadable)");
    json_t *body = json_pack("{s:s,s:{s:s,s:s}}", "member_id", cmd->member, "identity", "kind",
                             pgw_identity_kind_name(cmd->who.kind), "value", shown);
    if (body != NULL && cmd->merged_from[0] != '\0')
        json_object_set_new(body, "merged",
                            json_pack("{s:s,s:s}", "from", cmd->merged_from, "into", cmd->member));
    if (body != NULL)
        json_object_set_new(body, "balance", json_integer(cmd->figures.balance));
    pgw_command_keep_answer(cmd, body);
}

/* One key per (member, identity): binding again is a replay. The lookup
 * may be long, so hashed. */
static void bind_key(pgw_command *cmd, const char *prefix)
{
    uint8_t digest[PGW_HASH_LEN];
    char hex[2 * PGW_HASH_LEN + 1], material[PGW_ID_MAX + PGW_LOOKUP_MAX + 16];
    snprintf(material, sizeof(material), "%d:%s:%s", (int)cmd->who.kind, cmd->who.scope,
             cmd->who.lookup);
    pgw_sha256(material, strlen(material), digest);
    pgw_hash_hex(digest, hex, sizeof(hex));
    snprintf(cmd->key, sizeof(cmd->key), "%s:%s:%.32s", prefix, cmd->member, hex);
}

/* POST /v1/members/{id}/identities {"phone": ...}: bind, merging when needed. */
static bool handle_bind(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                        const char *id, pgw_response *resp)
{
    pgw_err err;
    json_t *obj = NULL;
    pgw_identity member, identity;
    char text[PGW_ID_MAX + 16];
    snprintf(text, sizeof(text), "member_id:%.*s", PGW_ID_MAX + 1, id);
    int rc = strlen(id) <= PGW_ID_MAX && pgw_identity_parse(text, &member, &err) == PGW_OK
                 ? json_body(req, false, &obj, &err)
                 : pgw_err_set(&err, PGW_ENOTFOUND, "no such member");
    if (rc == PGW_OK)
        rc = pgw_member_from_json(obj, "$", &api->cfg->rules, &identity, &err);
    if (rc == PGW_OK && identity.kind == PGW_ID_MEMBER)
        rc = pgw_err_set(&err, PGW_EINVAL, "$: bind a phone, card, openid, unionid or email");
    /* A shop binds only its own cards; channels and admins bind anything. */
    if (rc == PGW_OK && who->kind != PGW_SCOPE_ADMIN && who->kind != PGW_SCOPE_CHANNEL &&
        !(who->kind == PGW_SCOPE_SHOP && identity.kind == PGW_ID_CARD &&
          strcmp(identity.scope, who->scope_id) == 0))
        rc = pgw_err_set(&err, PGW_EFORBIDDEN, "key %s may not bind that identity", who->name);
    pgw_job *job = rc == PGW_OK ? job_new(api, req, R_BIND, PGW_COMMAND_BIND) : NULL;
    if (rc == PGW_OK && job == NULL)
        rc = pgw_err_set(&err, PGW_EFULL, "too many requests in flight");
    if (rc == PGW_OK)
        rc = pgw_command_name_member(api->vault, &identity, &job->cmd, &err);
    json_decref(obj);
    if (rc != PGW_OK)
        return refuse(resp, job, R_BIND, rc, err.msg);
    pgw_command *cmd = &job->cmd;
    snprintf(cmd->member, sizeof(cmd->member), "%.*s", PGW_ID_MAX, member.value);
    bind_key(cmd, "bind");
    /* The request is the member and the identity as normalised, both in
     * the key: the same phone written another way is the same bind (the
     * body's bytes made it 409 idempotency_conflict). */
    pgw_sha256(cmd->key, strlen(cmd->key), cmd->fingerprint);
    snprintf(cmd->channel, sizeof(cmd->channel), PGW_CHANNEL_SYSTEM);
    if (who->kind == PGW_SCOPE_SHOP)
        snprintf(cmd->bind_shop, sizeof(cmd->bind_shop), "%.*s", PGW_ID_MAX, who->scope_id);
    /* A channel's backend binds what its member proved to it (an SMS code
     * of its own): as for /v1/mp/phone, no other WeChat account merged in. */
    cmd->bind_self = who->kind == PGW_SCOPE_CHANNEL;
    cmd->render = render_bind;
    return submit(api, job, resp);
}

/* The rest of `key` after its first word when that is `word`, else NULL. */
static const char *key_rest(const char *key, const char *word)
{
    size_t n = strlen(word);
    return strncmp(key, word, n) == 0 && key[n] == ':' ? key + n + 1 : NULL;
}

/*
 * The key of the event that wrote t (channel:source:event_id), or NULL when
 * a command of the gateway's own wrote it (a hold's capture, a redemption,
 * an import, a merge, an expiry: store.h's key prefixes). Only an event's:
 * an import's key holds a phone's blind index or a card number, and a
 * merge's a digest of a lookup, which no view shows. An event's adds to
 * the transfer's channel, shop_id and reference only the event id (when
 * the reference is its receipt) and, for an event with no shop, the appid
 * it is keyed under.
 *
 * A channel's name first is not enough: before e974178 a phone bound by
 * POST /v1/mp/phone was keyed "mp_phonehone<the member's id from its 4th
 * character>:<digest>", a channel's name for a lower-case member id. So
 * the first word must be the transfer's own channel (an event's transfers
 * are stamped with it; that bind's are wechat_mp's) and the key must have
 * an event key's three parts, its source "-", a shop's id or an appid.
 */
static const char *event_key_of(const pgw_transfer *t)
{
    const char *source = key_rest(t->idem_key, t->channel);
    const char *id = source != NULL ? strchr(source, ':') : NULL;
    char text[PGW_IDEM_KEY_MAX + 1];
    if (id == NULL || (size_t)(id - source) >= sizeof(text))
        return NULL;
    memcpy(text, source, (size_t)(id - source));
    text[id - source] = '\0';
    bool source_ok = strcmp(text, "-") == 0 || pgw_store_shop_id_ok(text);
    return source_ok && pgw_store_channel_name_ok(t->channel) ? t->idem_key : NULL;
}

/* Copies the part of `s` up to its first ':' into out (cap bytes); the
 * text after that colon, or NULL when there is none or it does not fit. */
static const char *key_part(const char *s, char *out, size_t cap)
{
    const char *colon = strchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= cap)
        return NULL;
    memcpy(out, s, (size_t)(colon - s));
    out[colon - s] = '\0';
    return colon + 1;
}

/* A return's, read as the ones below are: return:redeem:<id>/<return id>
 * or return:capture:<id>/<return id> (handle_return), its spend's id also
 * its reference. */
static bool return_command(const pgw_transfer *t, json_t **out)
{
    const char *rest = key_rest(t->idem_key, "return");
    const char *redeem = rest ? key_rest(rest, "redeem") : NULL;
    const char *capture = rest ? key_rest(rest, "capture") : NULL;
    const char *id = redeem ? redeem : capture;
    const char *slash = id ? strchr(id, '/') : NULL;
    size_t len = slash ? (size_t)(slash - id) : 0;
    if (slash == NULL || len != strlen(t->reference) || strncmp(id, t->reference, len) != 0 ||
        !plain_id(t->reference, PGW_REFERENCE_MAX) || !plain_id(slash + 1, PGW_REFERENCE_MAX))
        return false;
    *out = json_pack("{s:s,s:s,s:s}", "kind", redeem ? "redemption_return" : "hold_return",
                     redeem ? "redemption_id" : "hold_id", t->reference, "return_id", slash + 1);
    return true;
}

/*
 * Each reads one form of key: false when t's is not of it; else true and
 * *out its command (NULL when out of memory).
 *
 * A spend's: its id is the hold's or the redemption's, which the till
 * chose and `reference` shows already.
 */
static bool spend_command(const pgw_transfer *t, json_t **out)
{
    const char *id = key_rest(t->idem_key, "capture");
    if (id != NULL && plain_id(id, PGW_REFERENCE_MAX)) {
        *out = json_pack("{s:s,s:s}", "kind", "capture", "hold_id", id);
        return true;
    }
    id = key_rest(t->idem_key, "redeem");
    if (id != NULL && plain_id(id, PGW_REFERENCE_MAX)) {
        *out = json_pack("{s:s,s:s}", "kind", "redemption", "redemption_id", id);
        return true;
    }
    return return_command(t, out);
}

/* An expiry's: expire:lot:<lot>:<points of it expired before> (command.c
 * apply_expire_lot), decimal digits only (pgw_store_expiry_key). */
static bool expiry_command(const pgw_transfer *t, json_t **out)
{
    int64_t lot = 0, before = 0;
    if (!pgw_store_expiry_key(t->idem_key, &lot, &before))
        return false;
    *out = json_pack("{s:s,s:I,s:I}", "kind", "expiry", "lot_id", (json_int_t)lot, "expired_before",
                     (json_int_t)before);
    return true;
}

/* An import's: import:<shop>:<batch>:<card|phone>:<lookup> (import.c).
 * Only the shop and the batch: the rest is a card's number or a phone's
 * blind index. */
static bool import_command(const pgw_transfer *t, json_t **out)
{
    char shop[PGW_ID_MAX + 1], batch[PGW_IDEM_KEY_MAX + 1];
    const char *rest = key_rest(t->idem_key, "import");
    rest = rest ? key_part(rest, shop, sizeof(shop)) : NULL;
    rest = rest ? key_part(rest, batch, sizeof(batch)) : NULL;
    if (rest == NULL || !pgw_store_shop_id_ok(shop) || !pgw_import_batch_ok(batch))
        return false;
    *out = json_pack("{s:s,s:s,s:s}", "kind", "import", "shop_id", shop, "batch", batch);
    return true;
}

/* A merge's: the request that merged, by its key's first word alone (the
 * rest is a digest of the identity bound, or a session's id), and the two
 * members, from the transfer (its reference is merge:<merged member>, one
 * of its accounts that member's, the other its survivor's). */
static bool merge_command(const pgw_transfer *t, json_t **out)
{
    static const char *const BY[] = {"bind", "mp_phone", "otp", "mp_login", "oa_link"};
    const char *by = NULL;
    for (size_t i = 0; by == NULL && i < sizeof(BY) / sizeof(BY[0]); i++)
        by = key_rest(t->idem_key, BY[i]) != NULL ? BY[i] : NULL;
    /* POST /v1/mp/phone's key before e974178 (event_key_of). */
    if (by == NULL && strncmp(t->idem_key, "mp_phonehone", 12) == 0)
        by = "mp_phone";
    const char *from = strncmp(t->reference, "merge:", 6) == 0 ? t->reference + 6 : NULL;
    const char *debit = key_rest(t->debit, "member"), *credit = key_rest(t->credit, "member");
    const char *into = NULL;
    if (from != NULL && debit != NULL && credit != NULL)
        into = strcmp(debit, from) == 0 ? credit : strcmp(credit, from) == 0 ? debit : NULL;
    if (by == NULL || into == NULL)
        return false;
    *out = json_pack("{s:s,s:s,s:s,s:s}", "kind", "merge", "by", by, "from", from, "into", into);
    return true;
}

json_t *pgw_api_transfer_command(const pgw_transfer *t)
{
    if (event_key_of(t) != NULL)
        return json_null();
    json_t *out = NULL;
    bool named = (t->kind == PGW_TRANSFER_REDEEM && spend_command(t, &out)) ||
                 (t->kind == PGW_TRANSFER_EXPIRE && expiry_command(t, &out)) ||
                 (t->kind == PGW_TRANSFER_IMPORT && import_command(t, &out)) ||
                 (t->kind == PGW_TRANSFER_MERGE && merge_command(t, &out));
    /* A key of another form (a tool's own transfers, an older key) names
     * nothing this build can read: said so, and nothing of it shown. */
    return named ? out : json_pack("{s:s}", "kind", "other");
}

json_t *pgw_api_history_json(const pgw_config *cfg, const pgw_command *cmd, size_t shown,
                             bool event_keys)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < cmd->n_page && i < shown; i++) {
        const pgw_transfer *t = &cmd->page[i];
        char when[PGW_RFC3339_MAX];
        answer_time(t->occurred_at, &cfg->rules.tz, when);
        json_t *item =
            json_pack("{s:I,s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:s}", "id", (json_int_t)t->id, "kind",
                      pgw_transfer_kind_name(t->kind), "debit", t->debit, "credit", t->credit,
                      "points", (json_int_t)t->points, "shop_id", t->shop_id, "channel", t->channel,
                      "reference", t->reference, "breakdown", t->breakdown, "occurred_at", when);
        if (item != NULL && event_keys) {
            const char *key = event_key_of(t);
            json_object_set_new(item, "event_key", key ? json_string(key) : json_null());
            json_object_set_new(item, "command", pgw_api_transfer_command(t));
        }
        json_array_append_new(list, item);
    }
    char next[24] = "";
    if (shown > 0 && cmd->n_page > shown)
        snprintf(next, sizeof(next), "%lld", (long long)cmd->page[shown - 1].id);
    return json_pack("{s:o,s:s?}", "transfers", list, "next", next[0] ? next : NULL);
}

json_t *pgw_api_member_json(const pgw_config *cfg, const pgw_vault *vault, const pgw_command *cmd)
{
    json_t *expiring = json_array();
    for (size_t i = 0; expiring && i < cmd->n_expiring; i++) {
        char when[PGW_RFC3339_MAX];
        answer_time(cmd->expiring[i].expires_at, &cfg->rules.tz, when);
        json_array_append_new(expiring,
                              json_pack("{s:I,s:s}", "points", (json_int_t)cmd->expiring[i].points,
                                        "expires_at", when));
    }
    const char *tier = cmd->tier >= 0 ? cfg->rules.tiers[cmd->tier].name : NULL;
    json_t *identities = json_array();
    for (size_t i = 0; identities && i < cmd->n_identities; i++) {
        char shown[PGW_IDENTITY_TEXT_MAX + 1];
        pgw_err err;
        if (pgw_vault_display(vault, &cmd->identities[i], shown, sizeof(shown), &err) != PGW_OK)
            snprintf(shown, sizeof(shown), "(unreadable)"); /* never the raw lookup */
        json_array_append_new(identities, json_pack("{s:s,s:s}", "kind",
                                                    pgw_identity_kind_name(cmd->identities[i].kind),
                                                    "value", shown));
    }
    /* A merged id answers as itself, with its survivor's figures. */
    bool merged = cmd->merged_from[0] != '\0';
    return json_pack(
        "{s:s,s:s?,s:I,s:I,s:I,s:I,s:o,s:o,s:s?}", "member_id",
        merged ? cmd->merged_from : cmd->member, "tier", tier, "balance",
        (json_int_t)cmd->figures.balance, "available", (json_int_t)cmd->figures.available,
        "pending", (json_int_t)cmd->figures.pending, "debt", (json_int_t)cmd->figures.debt,
        "expiring", expiring, "identities", identities, "merged_into", merged ? cmd->member : NULL);
}

/* ---- health and metrics ----------------------------------------------------------------- */

/* The database as /healthz and /metrics' pgw_db_up report it. */
static bool db_down(const pgw_writer_stats *w)
{
    return w->last_batch_failed;
}

static void handle_health(pgw_api *api, pgw_response *resp)
{
    pgw_writer_stats w;
    pgw_writer_get_stats(api->writer, &w);
    bool down = db_down(&w);
    set_body(
        resp, down ? 503 : 200,
        json_pack("{s:s,s:s}", "status", down ? "degraded" : "ok", "db", down ? "down" : "ok"));
}

#ifndef PGW_VERSION
#error "PGW_VERSION comes from CMakeLists.txt's project(VERSION)"
#endif

/* The metrics' text, growing; `ok` false once an allocation failed, after
 * which nothing more is added (one check at the end, not one per line). */
typedef struct metrics_text {
    char *text;
    size_t len, cap;
    bool ok;
} metrics_text;

static void put(metrics_text *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(metrics_text *m, const char *fmt, ...)
{
    while (m->ok) {
        va_list ap;
        va_start(ap, fmt);
        int n =
            vsnprintf(m->text ? m->text + m->len : NULL, m->text ? m->cap - m->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            m->ok = false;
        } else if (m->text != NULL && m->len + (size_t)n < m->cap) {
            m->len += (size_t)n;
            return;
        } else {
            size_t want = (m->cap ? m->cap * 2 : 16384) + (size_t)n;
            char *grown = realloc(m->text, want);
            m->ok = grown != NULL;
            m->text = grown != NULL ? grown : m->text;
            m->cap = grown != NULL ? want : m->cap;
        }
    }
}

/* A metric's HELP and TYPE lines. */
static void describe(metrics_text *m, const char *name, const char *type, const char *help)
{
    put(m, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_counter(metrics_text *m, const char *name, const char *help, uint64_t value)
{
    describe(m, name, "counter", help);
    put(m, "%s %llu\n", name, (unsigned long long)value);
}

static void put_seconds(metrics_text *m, const char *name, const char *help, uint64_t us)
{
    describe(m, name, "counter", help);
    put(m, "%s %.6f\n", name, (double)us / 1e6);
}

/* What an operator alerts on first: the database as /healthz reports it,
 * and the version running (an info metric: always 1, the version its label). */
static void metrics_up(metrics_text *m, const pgw_writer_stats *w)
{
    describe(m, "pgw_db_up", "gauge", "1 while /healthz reports the database ok, 0 while down.");
    put(m, "pgw_db_up %d\n", db_down(w) ? 0 : 1);
    describe(m, "pgw_build_info", "gauge", "The pointsgw version running, in its label; always 1.");
    put(m, "pgw_build_info{version=\"%s\"} 1\n", PGW_VERSION);
}

static void metrics_http(metrics_text *m, const pgw_api *api)
{
    describe(m, "pgw_http_requests_total", "counter",
             "HTTP requests answered, by route and status.");
    for (size_t r = 0; r < R_COUNT; r++) {
        for (size_t s = 0; s <= N_STATUSES; s++) {
            if (api->requests[r][s] == 0)
                continue;
            char status[8] = "other";
            if (s < N_STATUSES)
                snprintf(status, sizeof(status), "%d", STATUSES[s]);
            put(m, "pgw_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n", ROUTE_NAMES[r],
                status, (unsigned long long)api->requests[r][s]);
        }
    }
    describe(m, "pgw_http_request_seconds", "histogram", "Time from request to response.");
    for (size_t b = 0; b < N_BUCKETS; b++)
        put(m, "pgw_http_request_seconds_bucket{le=\"%g\"} %llu\n", BUCKETS[b],
            (unsigned long long)api->duration_le[b]);
    put(m,
        "pgw_http_request_seconds_bucket{le=\"+Inf\"} %llu\n"
        "pgw_http_request_seconds_sum %.6f\npgw_http_request_seconds_count %llu\n",
        (unsigned long long)api->duration_count, api->duration_sum,
        (unsigned long long)api->duration_count);
    describe(m, "pgw_inflight_requests", "gauge", "Requests waiting on the database.");
    put(m, "pgw_inflight_requests %zu\n", api->inflight);
    describe(m, "pgw_request_body_bytes", "gauge",
             "Bytes reserved for request bodies being read or handled "
             "(at most http.body_total_max_bytes).");
    put(m, "pgw_request_body_bytes %zu\n", api->bodies_held);
    describe(m, "pgw_request_body_keyless_bytes", "gauge",
             "Of those, bytes for bodies with neither a key of ours nor a mini-program "
             "session that verifies (at most a quarter of http.body_total_max_bytes).");
    put(m, "pgw_request_body_keyless_bytes %zu\n", api->held[PGW_BODY_KEYLESS]);
    describe(m, "pgw_request_body_session_bytes", "gauge",
             "Of those, bytes for bodies under a mini-program session and no key (at most "
             "a quarter of http.body_total_max_bytes).");
    put(m, "pgw_request_body_session_bytes %zu\n", api->held[PGW_BODY_SESSION]);
    put_counter(m, "pgw_request_log_dropped_lines_total",
                "Request log lines lost: stdout closed or failing.", api->log_dropped);
    describe(m, "pgw_http_connections_refused_total", "counter",
             "Connections closed at their accept, by why: per_address, the client's address "
             "held http.max_connections_per_address.");
    put(m, "pgw_http_connections_refused_total{reason=\"per_address\"} %llu\n",
        (unsigned long long)api->connections_refused);
}

static void metrics_writer(metrics_text *m, const pgw_writer_stats *w)
{
    put_counter(m, "pgw_writer_batches_total", "Transactions committed by the writer.", w->batches);
    put_counter(m, "pgw_writer_commands_total", "Commands completed by the writer.", w->commands);
    put_counter(m, "pgw_writer_failed_batches_total", "Commits that failed.", w->failed_batches);
    describe(m, "pgw_writer_largest_batch", "gauge", "Most commands committed at once.");
    put(m, "pgw_writer_largest_batch %zu\n", w->largest_batch);
    describe(m, "pgw_ledger_transfers", "gauge", "Transfers in the log (id of the newest).");
    put(m, "pgw_ledger_transfers %lld\n", (long long)w->last_transfer);
    describe(m, "pgw_commit_batch_size", "histogram", "Commands per committed transaction.");
    for (size_t b = 0; b < PGW_BATCH_BUCKETS; b++)
        put(m, "pgw_commit_batch_size_bucket{le=\"%llu\"} %llu\n",
            (unsigned long long)pgw_writer_batch_bucket(b),
            (unsigned long long)w->batch_size_le[b]);
    put(m,
        "pgw_commit_batch_size_bucket{le=\"+Inf\"} %llu\n"
        "pgw_commit_batch_size_sum %llu\npgw_commit_batch_size_count %llu\n",
        (unsigned long long)w->batches, (unsigned long long)w->batch_size_sum,
        (unsigned long long)w->batches);
    describe(m, "pgw_commit_seconds", "histogram",
             "Time to apply and commit one transaction (before its sync).");
    for (size_t b = 0; b < PGW_COMMIT_BUCKETS; b++)
        put(m, "pgw_commit_seconds_bucket{le=\"%g\"} %llu\n",
            (double)pgw_writer_commit_bucket_us(b) / 1e6, (unsigned long long)w->commit_us_le[b]);
    put(m,
        "pgw_commit_seconds_bucket{le=\"+Inf\"} %llu\n"
        "pgw_commit_seconds_sum %.6f\npgw_commit_seconds_count %llu\n",
        (unsigned long long)w->batches, (double)w->commit_us_sum / 1e6,
        (unsigned long long)w->batches);
    put_counter(m, "pgw_wal_syncs_total",
                "fdatasyncs that made committed batches durable (one may serve several batches).",
                w->syncs);
    put_seconds(m, "pgw_wal_sync_seconds_total", "Time spent in those syncs.", w->sync_us_sum);
    put_counter(m, "pgw_wal_checkpoints_total",
                "WAL checkpoints by the checkpoint thread (SQLite).", w->checkpoints);
    put_seconds(m, "pgw_wal_checkpoint_seconds_total", "Time spent in those checkpoints.",
                w->checkpoint_us_sum);
    put_counter(m, "pgw_wal_checkpoint_flushes_total",
                "Of those checkpoints, the ones that synced the database file too.",
                w->checkpoint_flushes);
    put_counter(m, "pgw_wal_restarts_total",
                "Times the checkpoint thread copied the whole WAL with the writer held, so "
                "that it starts over.",
                w->restarts);
    put_seconds(m, "pgw_wal_restart_hold_seconds_total",
                "Time the writer was held for those copies.", w->restart_hold_us_sum);
}

static void metrics_risk_and_expiry(metrics_text *m, pgw_api *api)
{
    describe(m, "pgw_risk_rejected_total", "counter", "Requests refused by a risk rule.");
    for (pgw_risk_rule r = PGW_RISK_NONE + 1; r < PGW_RISK_RULES_END; r++)
        put(m, "pgw_risk_rejected_total{rule=\"%s\"} %llu\n", pgw_risk_rule_name(r),
            (unsigned long long)api->risk_rejected[r]);
    pthread_mutex_lock(&api->sweep.lock);
    uint64_t runs = api->sweep.runs, failures = api->sweep.failures;
    uint64_t holds = api->sweep.holds, lots = api->sweep.lots, points = api->sweep.points;
    uint64_t pruned_sessions = api->sweep.pruned_sessions;
    uint64_t pruned_enrolments = api->sweep.pruned_enrolments;
    uint64_t pruned_reminders = api->sweep.pruned_reminders;
    pthread_mutex_unlock(&api->sweep.lock);
    put_counter(m, "pgw_expiry_sweeps_total", "Expiry sweeps run (failures apart).", runs);
    put_counter(m, "pgw_expiry_sweep_failures_total", "Expiry sweeps that failed.", failures);
    put_counter(m, "pgw_expired_holds_total", "Holds released at their deadline.", holds);
    put_counter(m, "pgw_expired_lots_total", "Lots whose remaining points expired.", lots);
    put_counter(m, "pgw_expired_points_total", "Points expired by the sweeps.", points);
    put_counter(m, "pgw_pruned_sessions_total", "Expired sessions the sweeps deleted.",
                pruned_sessions);
    put_counter(m, "pgw_pruned_enrolments_total",
                "Past hours' enrolment counts the sweeps deleted.", pruned_enrolments);
    put_counter(m, "pgw_pruned_reminders_total",
                "Expiry reminders' rows of past days the sweeps deleted.", pruned_reminders);
}

static void metrics_notices(metrics_text *m, pgw_api *api)
{
    pgw_notifier_stats ns = {0};
    if (api->notifier != NULL)
        pgw_notifier_get_stats(api->notifier, &ns);
    describe(m, "pgw_outbox_depth", "gauge", "Notices not delivered yet (pending or being sent).");
    put(m, "pgw_outbox_depth %lld\n", (long long)ns.depth);
    static const char *const SENT_BY[] = {"wechat_mp", "wechat_oa", "sms"};
    PGW_STATIC_ASSERT(sizeof(SENT_BY) / sizeof(SENT_BY[0]) == sizeof(ns.sent) / sizeof(ns.sent[0]),
                      "a channel name for each count of notices sent");
    describe(m, "pgw_notifications_total", "counter", "Notices by outcome.");
    for (size_t i = 0; i < sizeof(SENT_BY) / sizeof(SENT_BY[0]); i++)
        put(m, "pgw_notifications_total{outcome=\"sent\",channel=\"%s\"} %llu\n", SENT_BY[i],
            (unsigned long long)ns.sent[i]);
    /* Deferrals by the channel waited on, "" for none (a read failed
     * before any channel). Regression: all of them were channel="sms",
     * WeChat's 45009 waits and marks not made too. */
    static const char *const DEFERRED_BY[] = {"wechat_mp", "wechat_oa", "sms", ""};
    PGW_STATIC_ASSERT(sizeof(DEFERRED_BY) / sizeof(DEFERRED_BY[0]) ==
                          sizeof(ns.deferred) / sizeof(ns.deferred[0]),
                      "a channel name for each count of notices deferred");
    for (size_t i = 0; i < sizeof(DEFERRED_BY) / sizeof(DEFERRED_BY[0]); i++)
        put(m, "pgw_notifications_total{outcome=\"deferred\",channel=\"%s\"} %llu\n",
            DEFERRED_BY[i], (unsigned long long)ns.deferred[i]);
    put(m,
        "pgw_notifications_total{outcome=\"retried\",channel=\"\"} %llu\n"
        "pgw_notifications_total{outcome=\"fell_through\",channel=\"\"} %llu\n"
        "pgw_notifications_total{outcome=\"dead\",channel=\"\"} %llu\n"
        "pgw_notifications_total{outcome=\"skipped\",channel=\"\"} %llu\n",
        (unsigned long long)ns.retried, (unsigned long long)ns.fell_through,
        (unsigned long long)ns.dead, (unsigned long long)ns.skipped);
}

static void metrics_wechat(metrics_text *m, pgw_api *api)
{
    pgw_wx_client_stats wx;
    pgw_wx_client_get_stats(pgw_wechat_client(api->wechat), &wx);
    put_counter(m, "pgw_wechat_calls_total", "Calls made to WeChat's API (token fetches apart).",
                wx.calls);
    put_counter(m, "pgw_wechat_token_fetches_total", "Access tokens fetched (stable_token).",
                wx.token_fetches);
    put_counter(m, "pgw_wechat_token_retries_total", "Calls retried after a token error.",
                wx.token_retries);
    describe(m, "pgw_oa_late_replies_total", "counter",
             "Official-account replies sent as customer-service messages after the push was "
             "answered at its deadline (channels.wechat_oa.reply_within_ms), by result.");
    put(m,
        "pgw_oa_late_replies_total{result=\"sent\"} %llu\n"
        "pgw_oa_late_replies_total{result=\"failed\"} %llu\n",
        (unsigned long long)atomic_load(&api->oa_late_sent),
        (unsigned long long)atomic_load(&api->oa_late_unsent));
}

static void handle_metrics(pgw_api *api, pgw_response *resp)
{
    metrics_text m = {.ok = true};
    pgw_writer_stats w;
    pgw_writer_get_stats(api->writer, &w);
    metrics_up(&m, &w);
    metrics_http(&m, api);
    metrics_writer(&m, &w);
    metrics_risk_and_expiry(&m, api);
    metrics_notices(&m, api);
    metrics_wechat(&m, api);
    if (!m.ok) {
        free(m.text);
        fail(resp, R_METRICS, PGW_ENOMEM, "out of memory");
        return;
    }
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4";
    resp->body = m.text;
    resp->body_len = m.len;
}

/* ---- routing ------------------------------------------------------------------------------ */

/* Matches "<prefix>{id}/<tail>": copies the id. */
static bool match_id_path(const char *path, const char *prefix, const char *tail, char *id,
                          size_t cap)
{
    if (strncmp(path, prefix, strlen(prefix)) != 0)
        return false;
    const char *start = path + strlen(prefix);
    const char *slash = strchr(start, '/');
    if (slash == NULL || slash == start || strcmp(slash + 1, tail) != 0 ||
        (size_t)(slash - start) >= cap)
        return false;
    memcpy(id, start, (size_t)(slash - start));
    id[slash - start] = '\0';
    return true;
}

/* Matches "/v1/holds/{id}/<tail>": copies the id. */
static bool match_hold_path(const char *path, const char *tail, char *id, size_t cap)
{
    return match_id_path(path, "/v1/holds/", tail, id, cap);
}

/* ---- finance ---------------------------------------------------------------------------- */

#define RECON_EXCEPTIONS_MAX 10000 /* listed in one HTTP answer; the summary counts all */

static pgw_job *job_of(pgw_command *cmd)
{
    return (pgw_job *)(void *)((char *)cmd - offsetof(pgw_job, cmd));
}

/* What a key other than finance's or admin's is refused, said of its route:
 * a shop told it "may not read finance's reports" when it asked for the
 * notifications would look for a report in its request. */
static const char *finance_only(route r)
{
    return r == R_RECONCILE       ? "reconcile statements"
           : r == R_NOTIFICATIONS ? "read notifications"
                                  : "read finance's reports";
}

/* A finance job: a finance or admin key, room for its state. */
static pgw_job *finance_job_new(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                                route r, pgw_err *err, int *rc)
{
    pgw_job *job = job_new(api, req, r, PGW_COMMAND_READ_CALL);
    *rc = job ? PGW_OK : pgw_err_set(err, PGW_EFULL, "too many requests in flight");
    if (job != NULL && (job->finance = calloc(1, sizeof(*job->finance))) == NULL)
        *rc = pgw_err_set(err, PGW_ENOMEM, "out of memory");
    if (*rc == PGW_OK && who->kind != PGW_SCOPE_FINANCE && who->kind != PGW_SCOPE_ADMIN)
        *rc = pgw_err_set(err, PGW_EFORBIDDEN, "key %s may not %s: finance and admin keys only",
                          who->name, finance_only(r));
    return job;
}

/* On the finance reader, in its read transaction: the whole reconciliation. */
static int run_reconciliation(pgw_store *store, pgw_command *cmd)
{
    finance_job *f = job_of(cmd)->finance;
    pgw_statement *st = NULL;
    int rc = pgw_statement_open_text(f->statement, f->statement_len, &st, &cmd->err);
    FILE *out = rc == PGW_OK ? open_memstream(&f->out, &f->out_len) : NULL;
    if (rc == PGW_OK && out == NULL)
        rc = pgw_err_set(&cmd->err, PGW_ENOMEM, "out of memory for the report");
    pgw_recon_summary sum;
    if (rc == PGW_OK)
        rc = pgw_recon_run(store, st, &f->opts, out, &sum, &cmd->err);
    if (out != NULL && fclose(out) != 0 && rc == PGW_OK)
        rc = pgw_err_set(&cmd->err, PGW_ENOMEM, "out of memory for the report");
    pgw_statement_free(st);
    return rc;
}

/* On the finance reader: a settlement or pool report into the job's body. */
static int run_report(pgw_store *store, pgw_command *cmd)
{
    pgw_job *job = job_of(cmd);
    finance_job *f = job->finance;
    FILE *out = open_memstream(&f->out, &f->out_len);
    if (out == NULL)
        return pgw_err_set(&cmd->err, PGW_ENOMEM, "out of memory for the report");
    pgw_report_format format = f->csv ? PGW_REPORT_CSV : PGW_REPORT_JSON;
    int rc = job->route == R_POOL
                 ? pgw_report_pool(store, f->cfg, f->from, f->to, f->bucket, format, out, &cmd->err)
                 : pgw_report_settlement(store, f->cfg, f->from, f->to, format, out, &cmd->err);
    if (fclose(out) != 0 && rc == PGW_OK)
        rc = pgw_err_set(&cmd->err, PGW_ENOMEM, "out of memory for the report");
    return rc;
}

/* Whether the query names `name` at all: with a value of any length, or
 * refused by pgw_query_get (twice, no value), which reads names alone. */
static bool query_has(const char *query, const char *name)
{
    char none[1];
    pgw_err err;
    return pgw_query_get(query, name, none, sizeof(none), &err) != PGW_ENOTFOUND;
}

/* A query parameter: absent leaves out as it is; longer than cap, given
 * twice or without a value is an error, never taken for absent (a
 * too-long shop= would widen a reconciliation to the whole channel). */
static int query_param(const char *query, const char *name, char *out, size_t cap, pgw_err *err)
{
    int rc = pgw_query_get(query, name, out, cap, err);
    if (rc == PGW_ETOOLARGE)
        return pgw_err_set(err, PGW_EINVAL, "%s must be a value of at most %zu bytes", name,
                           cap - 1);
    return rc == PGW_ENOTFOUND ? PGW_OK : rc;
}

/* format=json|csv; without it, Accept: text/csv asks for CSV. The query
 * wins: format=json under a client's default Accept of text/csv was
 * answered in CSV. */
static int finance_format(const pgw_request *req, bool *csv, pgw_err *err)
{
    char format[8] = "json";
    int rc = query_param(req->query, "format", format, sizeof(format), err);
    if (rc == PGW_OK && strcmp(format, "json") != 0 && strcmp(format, "csv") != 0)
        rc = pgw_err_set(err, PGW_EINVAL, "format is json or csv");
    *csv = query_has(req->query, "format") ? strcmp(format, "csv") == 0
                                           : strncmp(req->accept, "text/csv", 8) == 0;
    return rc;
}

/* summary_rows=true|false: a CSV reconciliation's summary rows, asked for
 * (API.md's CSV is one exception per row; a reader may take every row so). */
static int summary_rows(const pgw_request *req, bool csv, bool *on, pgw_err *err)
{
    char value[8] = "false";
    int rc = query_param(req->query, "summary_rows", value, sizeof(value), err);
    if (rc == PGW_OK && strcmp(value, "true") != 0 && strcmp(value, "false") != 0)
        rc = pgw_err_set(err, PGW_EINVAL, "summary_rows is true or false");
    *on = rc == PGW_OK && strcmp(value, "true") == 0;
    if (*on && !csv)
        rc = pgw_err_set(err, PGW_EINVAL,
                         "summary_rows=true is for a CSV report (the JSON report has its summary)");
    return rc;
}

/* A time in a query: RFC 3339 (with %2B for a '+' offset) or unix seconds. */
static int query_time(const char *query, const char *name, int64_t *out, pgw_err *err)
{
    char text[64] = "";
    if (!query_has(query, name))
        return PGW_OK;
    int rc = query_param(query, name, text, sizeof(text), err);
    if (rc != PGW_OK)
        return rc;
    if (!pgw_report_time_in(text, out))
        return pgw_err_set(err, PGW_EINVAL,
                           "%s \"%.40s\" is not a time " PGW_REPORT_TIME_RANGE
                           ", in RFC 3339 (encode + as %%2B) or unix seconds",
                           name, text);
    return PGW_OK;
}

/* POST /v1/reconciliations?channel=&shop=&from=&to=&format= (text/csv statement, finance). */
static bool handle_reconciliation(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                                  pgw_response *resp)
{
    pgw_err err;
    int rc;
    static const char *const PARAMS[] = {"channel", "shop",         "from", "to",
                                         "format",  "summary_rows", NULL};
    pgw_job *job = finance_job_new(api, req, who, R_RECONCILE, &err, &rc);
    finance_job *f = job ? job->finance : NULL;
    if (rc == PGW_OK)
        rc = pgw_query_only(req->query, PARAMS, &err);
    if (rc == PGW_OK && (f->statement = malloc(req->body_len + 1)) == NULL)
        rc = pgw_err_set(&err, PGW_ENOMEM, "out of memory");
    if (rc == PGW_OK)
        rc = check_media_type(req, "text/csv", &err);
    if (rc == PGW_OK)
        rc = query_param(req->query, "channel", f->channel, sizeof(f->channel), &err);
    if (rc == PGW_OK && !query_has(req->query, "channel"))
        rc = pgw_err_set(&err, PGW_EINVAL, "channel=NAME is required");
    if (rc == PGW_OK) {
        f->opts.filter = (pgw_event_filter){f->channel, NULL, 0, INT64_MAX};
        rc = query_param(req->query, "shop", f->shop, sizeof(f->shop), &err);
    }
    if (rc == PGW_OK && query_has(req->query, "shop"))
        f->opts.filter.shop = f->shop;
    if (rc == PGW_OK) /* both are part of the events' keys */
        rc = pgw_store_check_event_filter(&f->opts.filter, &err);
    if (rc == PGW_OK)
        rc = query_time(req->query, "from", &f->opts.filter.from, &err);
    if (rc == PGW_OK)
        rc = query_time(req->query, "to", &f->opts.filter.to, &err);
    if (rc == PGW_OK && f->opts.filter.from >= f->opts.filter.to)
        rc = pgw_err_set(&err, PGW_EINVAL, "from must come before to");
    bool csv = false;
    if (rc == PGW_OK)
        rc = finance_format(req, &csv, &err);
    if (rc == PGW_OK)
        rc = summary_rows(req, csv, &f->opts.csv_summary, &err);
    if (rc != PGW_OK)
        return refuse(resp, job, R_RECONCILE, rc, err.msg);
    memcpy(f->statement, req->body, req->body_len);
    f->statement[req->body_len] = '\0';
    f->statement_len = req->body_len;
    f->opts.format = csv ? PGW_RECON_CSV : PGW_RECON_JSON;
    f->csv = csv;
    f->opts.tz = &api->cfg->rules.tz;
    f->opts.exceptions_max = RECON_EXCEPTIONS_MAX;
    job->cmd.call = run_reconciliation;
    return submit(api, job, resp);
}

/* GET /v1/reports/settlement|pool?from&to[&bucket][&format]: finance. */
static bool handle_report(pgw_api *api, const pgw_request *req, const pgw_principal *who, route r,
                          pgw_response *resp)
{
    pgw_err err;
    int rc;
    static const char *const PARAMS[] = {"from", "to", "bucket", "format", NULL};
    pgw_job *job = finance_job_new(api, req, who, r, &err, &rc);
    finance_job *f = job ? job->finance : NULL;
    char bucket[8] = "day";
    if (rc == PGW_OK)
        rc = pgw_query_only(req->query, PARAMS, &err);
    if (rc == PGW_OK) {
        f->from = -1;
        f->to = -1;
        rc = query_time(req->query, "from", &f->from, &err);
    }
    if (rc == PGW_OK)
        rc = query_time(req->query, "to", &f->to, &err);
    if (rc == PGW_OK && (f->from < 0 || f->to < 0 || f->from >= f->to))
        rc = pgw_err_set(&err, PGW_EINVAL, "from and to are required, from before to");
    if (rc == PGW_OK)
        rc = query_param(req->query, "bucket", bucket, sizeof(bucket), &err);
    if (rc == PGW_OK && query_has(req->query, "bucket") &&
        (r != R_POOL || pgw_bucket_parse(bucket, &f->bucket) != PGW_OK))
        rc = pgw_err_set(&err, PGW_EINVAL, "bucket is day, week or month (pool only)");
    if (rc == PGW_OK)
        rc = finance_format(req, &f->csv, &err);
    if (rc != PGW_OK)
        return refuse(resp, job, r, rc, err.msg);
    f->cfg = api->cfg;
    job->cmd.call = run_report;
    return submit(api, job, resp);
}

/* ---- WeChat: the mini program and the official account ---------------------------------- */

#define ME_TRANSFERS 20 /* recent transfers GET /v1/me shows */

/* A worker's result for a job that never reached the writer: finish it now. */
static void wx_fail(pgw_job *job, int rc, const pgw_err *err)
{
    job->cmd.rc = rc;
    job->cmd.err = *err;
    job_done(&job->cmd, job);
}

/* From a worker: hands the job's command to the writer (or fails the job). */
static void wx_to_writer(pgw_job *job)
{
    pgw_err err;
    job->cmd.request_id = job->request_id;
    int rc = pgw_writer_submit(job->api->writer, &job->cmd, &err);
    if (rc != PGW_OK)
        wx_fail(job, rc == PGW_EINVAL ? PGW_EINVAL : PGW_EUNAVAILABLE, &err);
}

/* An identity as the store keeps it, into `key`. */
static int wx_identity(const pgw_api *api, pgw_identity_kind kind, const char *scope,
                       const char *value, pgw_identity_key *key, pgw_err *err)
{
    pgw_identity id;
    int rc = pgw_identity_make(kind, scope, value, &id, err);
    return rc == PGW_OK ? pgw_vault_key(api->vault, &id, key, err) : rc;
}

/* How long WeChat's per-minute quota (45011) asks callers to wait. */
#define WX_MINUTE_QUOTA_S 60

/* What the mini program hears: a code WeChat refused is already 401 (ask
 * wx.login again); our own configuration failing (EIO) is 503, not 400;
 * so is an answer too large to read (ETOOLARGE): WeChat failing, not the
 * mini program's request too large (413); WeChat's minute quota is 429
 * with Retry-After: wait, do not report us down. */
static int wx_refused(pgw_command *cmd, int rc, const pgw_wx_reply *reply)
{
    if (reply->errcode == 45011) {
        cmd->retry_at = cmd->at + WX_MINUTE_QUOTA_S;
        return PGW_ELIMITED;
    }
    return rc == PGW_EIO || rc == PGW_ETOOLARGE ? PGW_EUNAVAILABLE : rc;
}

/* How long a mini program is asked to wait (Retry-After) after WeChat
 * failed its login or its phone number: no answer, an error page, -1
 * system busy. WeChat's blips pass in seconds and a member is looking at
 * a spinner, so not long; but twice a call's 2.5 s
 * (PGW_WX_CALL_TIMEOUT_MS), so that while WeChat is down every member's
 * retry does not reach the outbound workers before the calls already
 * waiting there have timed out. A code WeChat never took stays good for
 * its 5 minutes: the retry may send it again. */
#define WX_DOWN_RETRY_S 5

/* `msg` into out (cap > 0) without the URLs in it: http_client.c names the
 * URL it called ("WeChat /sns/jscode2session: http://10.0.0.5:8080/sns/
 * jscode2session: Timeout was reached"), an address for the operator, not
 * for a mini program. A URL runs to the next space, its ": " with it. */
static void without_urls(const char *msg, char *out, size_t cap)
{
    PGW_ASSERT(cap > 0);
    size_t n = 0;
    for (const char *p = msg; *p != '\0' && n + 1 < cap;) {
        if (strncmp(p, "http://", 7) == 0 || strncmp(p, "https://", 8) == 0) {
            p += strcspn(p, " ");
            p += strspn(p, " ");
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
}

/* A login or a phone number (the job's route) WeChat did not answer (or
 * `cause` kept from asking): 503 with Retry-After, the cause without
 * WeChat's address; the whole cause goes to the operator's log on the
 * service thread (mp_wechat_tell). */
static void mp_wechat_down(pgw_job *job, const pgw_err *cause)
{
    char shown[PGW_ERR_MSG_MAX];
    without_urls(cause->msg, shown, sizeof(shown));
    pgw_wx_without_request_ids(cause->msg, job->wx->wechat_failed, sizeof(job->wx->wechat_failed));
    job->cmd.retry_at = job->cmd.at + WX_DOWN_RETRY_S;
    pgw_err err;
    pgw_err_set(&err, PGW_EUNAVAILABLE, "%s (%s): try again in %d s",
                job->route == R_MP_LOGIN ? "the login could not be checked with WeChat"
                                         : "the phone number could not be had from WeChat",
                shown, WX_DOWN_RETRY_S);
    wx_fail(job, PGW_EUNAVAILABLE, &err);
}

/* A login or a phone number refused for WeChat's daily quota (45009): 503
 * as WeChat failing, but with a Retry-After that says when the quota comes
 * back, the start of WeChat's next day (China's, UTC+8, whatever the
 * mall's zone), not 5 s: a retry before it fails again (the operator may
 * reset the quota sooner: clear_quota). In the first minute of that day
 * the quota is back already: answered as WeChat failing, not with a day's
 * wait (R2). pgw_wx_quota_back says which, for the notifier too. */
static void mp_wechat_quota(pgw_job *job, const pgw_err *cause)
{
    char shown[PGW_ERR_MSG_MAX];
    without_urls(cause->msg, shown, sizeof(shown));
    pgw_wx_without_request_ids(cause->msg, job->wx->wechat_failed, sizeof(job->wx->wechat_failed));
    int64_t back = pgw_wx_quota_back(job->cmd.at);
    if (back <= job->cmd.at) {
        mp_wechat_down(job, cause);
        return;
    }
    job->cmd.retry_at = back;
    bool login = job->route == R_MP_LOGIN;
    pgw_err err;
    pgw_err_set(&err, PGW_EUNAVAILABLE,
                "%s (%s): WeChat's daily quota for the call is used up: try again after "
                "midnight China time (UTC+8), in %lld s, with a new code from %s",
                login ? "the login could not be checked with WeChat"
                      : "the phone number could not be had from WeChat",
                shown, (long long)(back - job->cmd.at), login ? "wx.login" : "getPhoneNumber");
    wx_fail(job, PGW_EUNAVAILABLE, &err);
}

/* A task that waited too long: finished without calling out, and told
 * when to try again as when WeChat fails. One the stop finishes is told
 * so, as a request in the drain is (Retry-After 1): it was told WeChat
 * was backed up, and the operator's log said WeChat failed it
 * (login_at_the_stop). */
static bool wx_stale(pgw_job *job, pgw_outbound_turn turn)
{
    pgw_err err;
    if (turn == PGW_OUTBOUND_CALL)
        return false;
    if (turn == PGW_OUTBOUND_STOPPING) {
        job->cmd.retry_at = job->cmd.at + 1;
        pgw_err_set(&err, PGW_EUNAVAILABLE, "the server is stopping");
        wx_fail(job, PGW_EUNAVAILABLE, &err);
        return true;
    }
    pgw_err_set(&err, PGW_EUNAVAILABLE, "calls to WeChat are backed up");
    mp_wechat_down(job, &err);
    return true;
}

/* A login (jscode2session) or a phone number (getuserphonenumber) WeChat
 * refused or failed. A login code WeChat refused (40029: unknown or
 * expired; 40163: used already, as by a login whose answer the mini
 * program lost) cannot work again: the mini program is told to get a new
 * one from wx.login, by a 401 that means nothing else on this route (a
 * phone code's 401 says why already: pgw_mp_phone). */
static void mp_wechat_refused(pgw_job *job, int rc, const pgw_wx_reply *reply, const pgw_err *cause)
{
    int out = wx_refused(&job->cmd, rc, reply);
    /* Not the code's fault (401), the user's (40226, 422), nor a quota
     * (45011, 429), nor a bad request (400): WeChat failed it, or we
     * could not read or send what it takes (an answer too large, memory,
     * our own configuration). */
    if (reply->errcode == 45009) {
        mp_wechat_quota(job, cause);
        return;
    }
    if (out != PGW_EUNAUTHORIZED && out != PGW_ERISK && out != PGW_ELIMITED && out != PGW_EINVAL) {
        mp_wechat_down(job, cause);
        return;
    }
    pgw_err err = *cause;
    if (rc == PGW_EUNAUTHORIZED && job->route == R_MP_LOGIN)
        pgw_err_set(&err, rc,
                    "WeChat refused the login code (errcode %ld: %s): get a new code with "
                    "wx.login and log in with it",
                    reply->errcode,
                    reply->errcode == 40163 ? "used already" : "invalid or expired");
    else if (out == PGW_ELIMITED) /* WeChat's words, "...mustslower...", say little more */
        pgw_err_set(&err, out,
                    "WeChat's per-minute limit on %s calls is reached (errcode 45011): try again "
                    "after Retry-After (%d s); if WeChat then refuses the code, get a new one "
                    "from %s",
                    job->route == R_MP_LOGIN ? "login" : "phone-number", WX_MINUTE_QUOTA_S,
                    job->route == R_MP_LOGIN ? "wx.login" : "getPhoneNumber");
    else if (out == PGW_ERISK) /* WeChat's own words, "high risk user", say nothing to do */
        pgw_err_set(&err, out,
                    "WeChat's risk control blocks this WeChat user (errcode %ld): retrying will "
                    "not help; it is WeChat's decision about the user's account, not the mall's",
                    reply->errcode);
    wx_fail(job, out, &err);
}

/* WeChat answered, and took the code, but what it gave could not be made
 * the identity the store keeps (wx_identity): a value the gateway does
 * not take (PGW_EINVAL: 400, as a number outside the mainland), or the
 * vault failing to seal a number (no randomness, OpenSSL failing): 503
 * with Retry-After, as every other 503 of these routes, told that the
 * retry needs a new code (WeChat's answer to this one is gone). */
static void mp_identity_failed(pgw_job *job, int rc, const pgw_err *cause)
{
    if (rc == PGW_EINVAL) {
        wx_fail(job, rc, cause);
        return;
    }
    bool login = job->route == R_MP_LOGIN;
    /* The operator's line (mp_wechat_tell), limited as WeChat's failures:
     * the 503 was its only trace (R2). */
    snprintf(job->wx->wechat_failed, sizeof(job->wx->wechat_failed),
             "what WeChat gave could not be kept: %.400s", cause->msg);
    job->cmd.retry_at = job->cmd.at + WX_DOWN_RETRY_S;
    pgw_err err;
    pgw_err_set(&err, PGW_EUNAVAILABLE,
                "%s could not be kept (%s); WeChat took the code: try again in %d s with a new "
                "code from %s",
                login ? "the login WeChat checked" : "the phone number WeChat gave", cause->msg,
                WX_DOWN_RETRY_S, login ? "wx.login" : "getPhoneNumber");
    wx_fail(job, PGW_EUNAVAILABLE, &err);
}

/* Worker: jscode2session, then the MP_LOGIN command. */
static void mp_login_task(void *arg, pgw_outbound_turn turn)
{
    pgw_job *job = arg;
    if (wx_stale(job, turn))
        return;
    pgw_command *cmd = &job->cmd;
    pgw_err err;
    pgw_mp_identity who;
    pgw_wx_reply reply;
    int rc = pgw_mp_login(pgw_wechat_client(job->api->wechat), cmd->appid, job->wx->code, &who,
                          &reply, &err);
    job->wx->wechat_answered = rc == PGW_OK || reply.errcode != 0;
    if (rc != PGW_OK) {
        mp_wechat_refused(job, rc, &reply, &err);
        return;
    }
    rc = wx_identity(job->api, PGW_ID_MP_OPENID, cmd->appid, who.openid, &cmd->who, &err);
    snprintf(job->wx->openid, sizeof(job->wx->openid), "%s", who.openid);
    cmd->by_identity = true;
    cmd->has_who2 = rc == PGW_OK && who.unionid[0] != '\0';
    if (cmd->has_who2)
        rc = wx_identity(job->api, PGW_ID_UNIONID, "", who.unionid, &cmd->who2, &err);
    if (rc != PGW_OK)
        mp_identity_failed(job, rc, &err);
    else
        wx_to_writer(job);
}

/* WeChat answered the phone code, and took it, with nothing usable
 * (`cause`: pgw_mp_phone's unusable): no outage to wait out (no 503, no
 * Retry-After: the retry of a spent code is 401) but a 400 that says so;
 * what came goes to the operator's log (mp_wechat_tell), as it may be
 * ours to fix (another app's watermark: api_base or the appid). */
static void mp_phone_unusable(pgw_job *job, const pgw_err *cause)
{
    snprintf(job->wx->wechat_unusable, sizeof(job->wx->wechat_unusable), "%s", cause->msg);
    pgw_err err;
    pgw_err_set(&err, PGW_EINVAL,
                "%s: WeChat took the code, so sending it again will not help; a new code from "
                "getPhoneNumber may, and the gateway's operator is told",
                cause->msg);
    wx_fail(job, PGW_EINVAL, &err);
}

/* Worker: getuserphonenumber, then a BIND of the phone (merging a POS member). */
static void mp_phone_task(void *arg, pgw_outbound_turn turn)
{
    pgw_job *job = arg;
    if (wx_stale(job, turn))
        return;
    pgw_command *cmd = &job->cmd;
    const pgw_config *cfg = job->api->cfg;
    char phone[32];
    pgw_wx_reply reply;
    pgw_err err;
    bool unusable;
    int rc =
        pgw_mp_phone(pgw_wechat_client(job->api->wechat), cfg->wechat_mp.appid, job->wx->openid,
                     job->wx->code, phone, sizeof(phone), &unusable, &reply, &err);
    job->wx->wechat_answered = rc == PGW_OK || reply.errcode != 0 || unusable;
    if (unusable) {
        mp_phone_unusable(job, &err);
        return;
    }
    if (rc != PGW_OK) {
        mp_wechat_refused(job, rc, &reply, &err);
        return;
    }
    rc = wx_identity(job->api, PGW_ID_PHONE, "", phone, &cmd->who, &err);
    if (rc != PGW_OK) {
        mp_identity_failed(job, rc, &err);
        return;
    }
    cmd->by_identity = true;
    cmd->bind_self = true;
    bind_key(cmd, "mp_phone"); /* not "bind": an admin's bind of it is another request */
    pgw_sha256(cmd->key, strlen(cmd->key), cmd->fingerprint);
    wx_to_writer(job);
}

#define SESSION_SCHEME "Session "

/* Whether the request names a session (the scheme in any case, as Bearer). */
static bool by_session(const pgw_request *req)
{
    return pgw_api_by_session(req->authorization);
}

/* The session of Authorization: Session <token>; PGW_EUNAUTHORIZED otherwise. */
static int session_of(const pgw_api *api, const pgw_request *req, pgw_session *out, pgw_err *err)
{
    if (!by_session(req) || session_token(req->authorization)[0] == '\0')
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "Authorization: Session <token> is required");
    return pgw_session_verify(api->session_key, session_token(req->authorization), wall_now_s(),
                              out, err);
}

/* A mini-program job: the route's command for the session's member. */
static pgw_job *session_job(pgw_api *api, const pgw_request *req, route r, pgw_command_kind kind,
                            const pgw_session *s, pgw_err *err)
{
    pgw_job *job = job_new(api, req, r, kind);
    if (job == NULL) {
        pgw_err_set(err, PGW_EFULL, "too many requests in flight");
        return NULL;
    }
    snprintf(job->cmd.member, sizeof(job->cmd.member), "%s", s->member);
    memcpy(job->cmd.session_id, s->id, sizeof(job->cmd.session_id));
    snprintf(job->cmd.channel, sizeof(job->cmd.channel), "wechat_mp");
    snprintf(job->key_name, sizeof(job->key_name), "session:%.8s", s->id);
    return job;
}

/* Queues a blocking call out on `pool` (outbound.h). NULL: its channel
 * is off, or pgw_api_stop stopped it; a job the stop finished (its drain,
 * writer NULL) is told the server is stopping, as every request then is,
 * not that the channel is off (phone_checked_at_the_stop). */
static int outbound_submit(const pgw_api *api, pgw_outbound *pool, pgw_outbound_task task,
                           void *arg, pgw_err *err)
{
    if (pool == NULL && api->writer == NULL)
        return pgw_err_set(err, PGW_ESTATE, "the server is stopping");
    if (pool == NULL)
        return pgw_err_set(err, PGW_EUNAVAILABLE, "no outbound channel is configured");
    return pgw_outbound_submit(pool, task, arg, err);
}

/* Queues a job on the outbound workers; on refusal answers now. */
static bool submit_outbound(pgw_api *api, pgw_job *job, pgw_outbound_task task, pgw_response *resp)
{
    pgw_err err;
    memcpy(job->key_name, resp->key_name, sizeof(job->key_name));
    int rc = outbound_submit(api, api->outbound, task, job, &err);
    return rc == PGW_OK ? true : refuse(resp, job, job->route, PGW_EFULL, err.msg);
}

/* POST /v1/mp/login {"appid", "code"}. */
static bool handle_mp_login(pgw_api *api, const pgw_request *req, pgw_response *resp)
{
    pgw_err err;
    json_t *obj = NULL;
    char appid[PGW_ID_MAX + 1] = "", code[PGW_WX_CODE_MAX + 1] = "";
    static const char *const keys[] = {"appid", "code", NULL};
    int rc = json_body(req, false, &obj, &err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, "$", keys, &err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "appid", "$", true, PGW_ID_MAX, appid, sizeof(appid), &err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "code", "$", true, PGW_WX_CODE_MAX, code, sizeof(code), &err);
    json_decref(obj);
    if (rc == PGW_OK && strcmp(appid, api->cfg->wechat_mp.appid) != 0)
        rc = pgw_err_set(&err, PGW_EINVAL, "$.appid: not this gateway's mini program");
    if (rc == PGW_OK && !pgw_wx_code_ok(code))
        rc = pgw_err_set(&err, PGW_EINVAL, "$.code: 1..%d of [A-Za-z0-9_-]", PGW_WX_CODE_MAX);
    pgw_job *job = rc == PGW_OK ? job_new(api, req, R_MP_LOGIN, PGW_COMMAND_LINK) : NULL;
    if (rc == PGW_OK && (job == NULL || (job->wx = calloc(1, sizeof(*job->wx))) == NULL))
        rc = pgw_err_set(&err, PGW_EFULL, "too many requests in flight");
    pgw_command *cmd = job ? &job->cmd : NULL;
    if (rc == PGW_OK)
        rc = pgw_session_new_id(cmd->session_id, &err);
    if (rc != PGW_OK)
        return refuse(resp, job, R_MP_LOGIN, rc, err.msg);
    memcpy(job->wx->code, code, sizeof(code));
    snprintf(cmd->appid, sizeof(cmd->appid), "%s", appid);
    snprintf(cmd->channel, sizeof(cmd->channel), "wechat_mp");
    snprintf(cmd->key, sizeof(cmd->key), "mp_login:%s", cmd->session_id);
    snprintf(cmd->client_address, sizeof(cmd->client_address), "%s", req->client_address);
    cmd->session_expires = cmd->at + PGW_SESSION_TTL_S;
    /* The new session is checked by nothing yet: it is being made. */
    char id[PGW_SESSION_ID_LEN + 1];
    memcpy(id, cmd->session_id, sizeof(id));
    pgw_sha256(id, strlen(id), cmd->fingerprint);
    return submit_outbound(api, job, mp_login_task, resp);
}

/* The session_id of MP_LOGIN names the session it makes, not one to check:
 * the command checks it only once made (see command.c check_session). */

/* On the reader, once pgw_command_read found the session live: nothing more. */
static int session_checked(pgw_store *store, pgw_command *cmd)
{
    (void)store;
    (void)cmd;
    return PGW_OK;
}

/* POST /v1/mp/phone {"code"}: bind the member's WeChat phone number. */
static bool handle_mp_phone(pgw_api *api, const pgw_request *req, const pgw_session *s,
                            pgw_response *resp)
{
    pgw_err err;
    json_t *obj = NULL;
    char code[PGW_WX_CODE_MAX + 1] = "";
    static const char *const keys[] = {"code", NULL};
    int rc = json_body(req, false, &obj, &err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, "$", keys, &err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "code", "$", true, PGW_WX_CODE_MAX, code, sizeof(code), &err);
    json_decref(obj);
    if (rc == PGW_OK && !pgw_wx_code_ok(code))
        rc = pgw_err_set(&err, PGW_EINVAL, "$.code: 1..%d of [A-Za-z0-9_-]", PGW_WX_CODE_MAX);
    /* A token from before they named their openid (session.h v1): WeChat
     * could not be told whose code to expect. */
    if (rc == PGW_OK && s->openid[0] == '\0')
        rc = pgw_err_set(&err, PGW_EUNAUTHORIZED, "log in again to bind a phone number");
    pgw_job *job =
        rc == PGW_OK ? session_job(api, req, R_MP_PHONE, PGW_COMMAND_BIND, s, &err) : NULL;
    if (job != NULL && (job->wx = calloc(1, sizeof(*job->wx))) == NULL)
        rc = pgw_err_set(&err, PGW_ENOMEM, "out of memory");
    if (rc != PGW_OK || job == NULL)
        return refuse(resp, job, R_MP_PHONE, rc != PGW_OK ? rc : err.code, err.msg);
    memcpy(job->wx->code, code, sizeof(code));
    snprintf(job->wx->openid, sizeof(job->wx->openid), "%s", s->openid);
    /* First the session, on the reader: WeChat takes a phone code once, so
     * a logged-out session must not spend it (phone_session_checked). */
    job->cmd.kind = PGW_COMMAND_READ_CALL;
    job->cmd.call = session_checked;
    return submit(api, job, resp);
}

/* POST /v1/mp/phone back from the reader: a live session's code goes to
 * WeChat (the job lives on, to be answered by the BIND); false then. */
static bool phone_session_checked(pgw_api *api, pgw_job *job, pgw_response *resp)
{
    pgw_command *cmd = &job->cmd;
    if (cmd->rc == PGW_OK) {
        cmd->kind = PGW_COMMAND_BIND;
        cmd->call = NULL;
        cmd->render = render_bind;
        if (outbound_submit(api, api->outbound, mp_phone_task, job, &cmd->err) == PGW_OK)
            return false;
        cmd->rc = PGW_EFULL;
        fail(resp, job->route, cmd->rc, cmd->err.msg); /* the gateway's own words */
        return true;
    }
    fail_told(api, resp, job, job->route, cmd->rc, cmd->err.msg, &cmd->err);
    return true;
}

static void render_subscription(pgw_command *cmd, void *payload)
{
    (void)payload;
    pgw_command_keep_answer(cmd, json_pack("{s:s,s:s,s:I}", "member_id", cmd->member, "template_id",
                                           cmd->template_id, "quota", (json_int_t)cmd->quota));
}

/* Whether `id` is one of the mini program's configured templates. */
static bool mp_template(const pgw_config *cfg, const char *id)
{
    for (size_t i = 0; i < PGW_NOTICE_KINDS; i++) {
        if (cfg->wechat_mp.templates[i][0] != '\0' && strcmp(cfg->wechat_mp.templates[i], id) == 0)
            return true;
    }
    return false;
}

/* POST /v1/mp/subscriptions {"template_id", "accepted": 1, "request_id"?}. */
static bool handle_mp_subscription(pgw_api *api, const pgw_request *req, const pgw_session *s,
                                   pgw_response *resp)
{
    pgw_err err;
    json_t *obj = NULL;
    char tpl[PGW_TEMPLATE_KEY_MAX + 1] = "", request_id[PGW_REFERENCE_MAX + 1] = "";
    int64_t accepted = 0;
    static const char *const keys[] = {"template_id", "accepted", "request_id", NULL};
    int rc = json_body(req, false, &obj, &err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, "$", keys, &err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "template_id", "$", true, PGW_TEMPLATE_KEY_MAX, tpl, sizeof(tpl),
                             &err);
    if (rc == PGW_OK)
        rc = pgw_json_int(obj, "accepted", "$", true, 1, PGW_QUOTA_MAX, &accepted, &err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "request_id", "$", false, 64, request_id, sizeof(request_id),
                             &err);
    if (rc == PGW_OK && !plain_id(tpl, PGW_TEMPLATE_KEY_MAX))
        rc = pgw_err_set(&err, PGW_EINVAL, "$.template_id: letters, digits, - _ . : only");
    if (rc == PGW_OK && !mp_template(api->cfg, tpl))
        rc = pgw_err_set(&err, PGW_EINVAL, "$.template_id: not a template this gateway sends");
    if (rc == PGW_OK && request_id[0] != '\0' && !plain_id(request_id, 64))
        rc = pgw_err_set(&err, PGW_EINVAL, "$.request_id: letters, digits, - _ . : only");
    pgw_job *job = rc == PGW_OK
                       ? session_job(api, req, R_MP_SUBSCRIPTIONS, PGW_COMMAND_SUBSCRIBE, s, &err)
                       : NULL;
    if (rc == PGW_OK && job == NULL)
        rc = err.code;
    if (rc == PGW_OK && pgw_json_fingerprint(obj, job->cmd.fingerprint) != PGW_OK)
        rc = pgw_err_set(&err, PGW_ENOMEM, "out of memory fingerprinting the request");
    if (rc == PGW_OK && request_id[0] == '\0') /* no retry key: each report is its own */
        rc = pgw_session_new_id(request_id, &err);
    json_decref(obj);
    if (rc != PGW_OK)
        return refuse(resp, job, R_MP_SUBSCRIPTIONS, rc, err.msg);
    pgw_command *cmd = &job->cmd;
    snprintf(cmd->template_id, sizeof(cmd->template_id), "%s", tpl);
    /* WeChat grants the sends to the openid that accepted: the session's
     * (a token of the first format has none: "", store.h). */
    snprintf(cmd->sub_openid, sizeof(cmd->sub_openid), "%s", s->openid);
    cmd->points = accepted;
    /* Keyed by the openid the sends are granted to, not the session: the
     * usual retry is a report sent again after logging in anew (401, the
     * session expired), which counted it twice. A first-format token has
     * no openid: its session, as before. */
    if (s->openid[0] != '\0')
        snprintf(cmd->key, sizeof(cmd->key), "mp_sub:openid:%.64s:%.64s", s->openid,
                 request_id); /* both at most 64: checked above, and by the session */
    else
        snprintf(cmd->key, sizeof(cmd->key), "mp_sub:%s:%s", s->id, request_id);
    cmd->render = render_subscription;
    return submit(api, job, resp);
}

/* A logout's idempotency key: this and its session's id, which its
 * command clears once the session is revoked (follow_change reads it). */
#define LOGOUT_KEY "logout:"

static void render_logout(pgw_command *cmd, void *payload)
{
    (void)payload;
    pgw_command_keep_answer(cmd, json_pack("{s:s,s:b}", "member_id", cmd->member, "ended", 1));
}

static bool handle_preferences(pgw_api *api, const pgw_request *req, route r, const char *member,
                               const pgw_session *s, bool admin, pgw_response *resp);

/* A request that takes no body (a logout, a notice's retry): none, or {}
 * (what wx.request sends for `data: {}`). Anything else is refused as a
 * void's is, and does nothing: it was read as no body, so a request the
 * gateway could not read still logged the member out, and one asking for
 * what a retry does not do (another channel) was done as a plain retry. */
static int no_body(const pgw_request *req, pgw_err *err)
{
    static const char *const NO_KEYS[] = {NULL};
    json_t *obj = NULL;
    int rc = json_body(req, true, &obj, err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, "$", NO_KEYS, err);
    json_decref(obj);
    return rc;
}

/* GET /v1/me and /v1/me/transfers, POST /v1/mp/phone|subscriptions|logout:
 * the session first. */
static bool handle_mp_session(pgw_api *api, const pgw_request *req, route r, pgw_response *resp)
{
    pgw_session s;
    pgw_err err;
    if (session_of(api, req, &s, &err) != PGW_OK) {
        pgw_api_error(resp, 401, "unauthorized", err.msg);
        return false;
    }
    snprintf(resp->key_name, sizeof(resp->key_name), "session:%.8s", s.id);
    if (r == R_MP_PHONE)
        return handle_mp_phone(api, req, &s, resp);
    if (r == R_MP_SUBSCRIPTIONS)
        return handle_mp_subscription(api, req, &s, resp);
    if (r == R_ME_PREFERENCES)
        return handle_preferences(api, req, r, s.member, &s, false, resp);
    pgw_command_kind kind = r == R_ME           ? PGW_COMMAND_READ_MEMBER
                            : r == R_ME_HISTORY ? PGW_COMMAND_READ_HISTORY
                                                : PGW_COMMAND_END_SESSION;
    pgw_job *job = session_job(api, req, r, kind, &s, &err);
    if (job == NULL)
        return refuse(resp, NULL, r, err.code, err.msg);
    if (r == R_ME_HISTORY) { /* the pages past the 20 newest GET /v1/me shows */
        if (history_page(req, &job->cmd, &err) != PGW_OK)
            return refuse(resp, job, r, err.code, err.msg);
    } else if (r == R_ME) {
        size_t n = 0;
        for (size_t k = 0; k < PGW_NOTICE_KINDS; k++) /* what the mini program may ask for */
            if (api->cfg->wechat_mp.templates[k][0] != '\0')
                job->cmd.templates[n++] = api->cfg->wechat_mp.templates[k];
        job->cmd.page = calloc(ME_TRANSFERS, sizeof(*job->cmd.page));
        job->cmd.page_cap = ME_TRANSFERS;
        if (job->cmd.page == NULL)
            return refuse(resp, job, r, PGW_ENOMEM, "out of memory");
    } else {
        if (no_body(req, &err) != PGW_OK)
            return refuse(resp, job, r, err.code, err.msg);
        snprintf(job->cmd.key, sizeof(job->cmd.key), "%s%s", LOGOUT_KEY, s.id);
        pgw_sha256(s.id, strlen(s.id), job->cmd.fingerprint);
        job->cmd.render = render_logout;
    }
    return submit(api, job, resp);
}

_Static_assert(PGW_NOTICE_KINDS <= PGW_TEMPLATES_SHOWN, "GET /v1/me reads every template's quota");

/* GET /v1/me: the member view, recent transfers, subscriptions, following. */
static json_t *me_json(const pgw_api *api, const pgw_command *cmd)
{
    json_t *body = pgw_api_member_json(api->cfg, api->vault, cmd);
    json_t *history = pgw_api_history_json(api->cfg, cmd, cmd->page_cap, false);
    json_t *subs = json_object();
    for (size_t i = 0; subs && i < cmd->n_subscriptions; i++)
        json_object_set_new(subs, cmd->subscriptions[i].template_id,
                            json_integer(cmd->subscriptions[i].quota));
    if (body != NULL && history != NULL && subs != NULL) {
        json_object_set(body, "transfers", json_object_get(history, "transfers"));
        json_object_set_new(body, "subscriptions", subs);
        json_object_set_new(body, "follows_oa", json_boolean(cmd->follows));
        subs = NULL;
    }
    json_decref(history);
    json_decref(subs);
    return body;
}

/* The session a login made, as the token the mini program keeps. */
static void mp_login_answer(pgw_api *api, const pgw_job *job, pgw_response *resp)
{
    const pgw_command *cmd = &job->cmd;
    pgw_session s = {.expires_at = cmd->session_expires};
    memcpy(s.id, cmd->session_id, sizeof(s.id));
    snprintf(s.member, sizeof(s.member), "%s", cmd->member);
    snprintf(s.openid, sizeof(s.openid), "%s", job->wx->openid);
    char token[PGW_SESSION_TOKEN_MAX + 1];
    pgw_err err;
    if (pgw_session_token(api->session_key, &s, token, &err) != PGW_OK) {
        fail(resp, R_MP_LOGIN, err.code, err.msg);
        return;
    }
    set_body(resp, 200,
             json_pack("{s:s,s:s,s:I}", "session", token, "member_id", cmd->member, "expires_in",
                       (json_int_t)(cmd->session_expires - cmd->at)));
}

/* ---- the official account's callback ---- */

/* The push's text, without the spaces a member may type around a keyword
 * (a Chinese keyboard's full-width U+3000 among them). */
static bool oa_text_is(const pgw_oa_message *m, const char *word)
{
    static const char wide[] = "\xE3\x80\x80"; /* U+3000 */
    if (m->content_cut)
        return false; /* more than any keyword */
    const char *s = m->content;
    size_t n = strlen(s);
    for (bool trimmed = true; trimmed && n > 0;) {
        trimmed = false;
        if (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t')
            n--, trimmed = true;
        else if (n >= 3 && memcmp(s + n - 3, wide, 3) == 0)
            n -= 3, trimmed = true;
        if (n > 0 && (*s == ' ' || *s == '\n' || *s == '\t'))
            s++, n--, trimmed = true;
        else if (n >= 3 && memcmp(s, wide, 3) == 0)
            s += 3, n -= 3, trimmed = true;
    }
    return strlen(word) == n && strncmp(s, word, n) == 0;
}

/* The push as POST /v1/events takes it: follow_oa or sign_in of the openid.
 * Its event_id is WeChat's de-dup key, so a redelivery is a replay. */
static int oa_event(const pgw_api *api, const pgw_oa_message *m, oa_action action, json_t **out,
                    pgw_err *err)
{
    char event_id[PGW_EVENT_ID_MAX + 1], when[PGW_RFC3339_MAX] = "";
    if (action == OA_FOLLOW)
        snprintf(event_id, sizeof(event_id), "oa:%.64s:subscribe:%lld", m->from_user,
                 (long long)m->create_time);
    else
        snprintf(event_id, sizeof(event_id), "oa:msg:%.64s", m->msg_id);
    if (pgw_format_rfc3339(m->create_time, &api->cfg->rules.tz, when, sizeof(when)) != PGW_OK)
        return pgw_err_set(err, PGW_EINVAL, "CreateTime %lld is out of range",
                           (long long)m->create_time);
    *out =
        json_pack("{s:s,s:s,s:s,s:s,s:{s:s,s:s}}", "event_id", event_id, "channel", "wechat_oa",
                  "type", action == OA_FOLLOW ? "follow_oa" : "sign_in", "occurred_at", when,
                  "member", "oa_openid", m->from_user, "appid", pgw_wechat_oa_appid(api->wechat));
    return *out ? PGW_OK : pgw_err_set(err, PGW_ENOMEM, "out of memory");
}

/* A follow's or an unfollow's own key: WeChat's de-dup key for events
 * (the openid and CreateTime), under a prefix no channel may take. */
static void oa_follow_key(const pgw_api *api, const pgw_oa_message *m, const char *prefix,
                          char out[PGW_IDEM_KEY_MAX + 1])
{
    snprintf(out, PGW_IDEM_KEY_MAX + 1, "%s:%s:%.64s:%lld", prefix,
             pgw_wechat_oa_appid(api->wechat), m->from_user, (long long)m->create_time);
}

/* The command a push asks for, filled into the job. */
static int oa_command(pgw_api *api, pgw_job *job, pgw_err *err)
{
    const pgw_oa_message *m = &job->wx->oa.msg;
    pgw_command *cmd = &job->cmd;
    if (job->wx->action == OA_BALANCE || job->wx->action == OA_UNFOLLOW) {
        cmd->kind = job->wx->action == OA_BALANCE ? PGW_COMMAND_READ_MEMBER : PGW_COMMAND_OA_FOLLOW;
        cmd->by_identity = true;
        cmd->oa_follow = PGW_OA_UNFOLLOWS;
        cmd->at = m->create_time;
        if (job->wx->action == OA_UNFOLLOW)
            oa_follow_key(api, m, "oa_unfollow", cmd->original);
        return wx_identity(api, PGW_ID_OA_OPENID, pgw_wechat_oa_appid(api->wechat), m->from_user,
                           &cmd->who, err);
    }
    int rc = oa_event(api, m, job->wx->action, &job->wx->event, err);
    if (rc == PGW_OK)
        rc = pgw_event_from_json(job->wx->event, &api->cfg->rules, &job->doc, err);
    /* The push passed check_message's skew (PGW_OA_CLOCK_SKEW_S, WeChat's
     * clock against ours); the event's own bound must not refuse what that
     * took. But the holds and lots it meets are as they are now: a member
     * in debt signing in would otherwise release a till's hold 300 s early. */
    int64_t now = wall_now_s();
    if (rc == PGW_OK)
        rc = pgw_event_command(api->vault, job->wx->event, &job->doc,
                               now + (PGW_OA_CLOCK_SKEW_S - PGW_EVENT_AHEAD_MAX_S), &job->earning,
                               cmd, err);
    cmd->asked_at = now;
    cmd->render = render_event;
    return rc;
}

/* A subscribe's follow command, shared by the writer (until it is done)
 * and the push's job (until it is answered): the job may be refused and
 * freed while the follow is still queued. */
struct oa_follow {
    pgw_command cmd;
    atomic_int refs;
    atomic_bool done; /* cmd's output may be read */
};

static void oa_follow_release(oa_follow *f)
{
    if (f != NULL && atomic_fetch_sub(&f->refs, 1) == 1)
        free(f);
}

static void oa_follow_done(pgw_command *cmd, void *payload)
{
    (void)cmd;
    oa_follow *f = payload;
    atomic_store(&f->done, true);
    oa_follow_release(f);
}

/* Whether the follow found its push recorded before: WeChat redelivering
 * it. The writer completes commands in order, so the follow, queued
 * first, is done by the time its event is. */
static bool oa_follow_seen(oa_follow *f)
{
    return f != NULL && atomic_load(&f->done) && f->cmd.rc == PGW_OK && f->cmd.follow_seen;
}

/* A follow, recorded at once as a command of its own, in arrival order
 * with unfollows: a follow event refused for its points (a risk rule)
 * must not lose it. Its key stays when the event's is not recorded (a
 * refusal): oa_answer asks it whether this is a redelivery. */
static int oa_record_follow(pgw_api *api, wx_job *wx, pgw_err *err)
{
    const pgw_oa_message *m = &wx->oa.msg;
    oa_follow *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory");
    pgw_command *cmd = &f->cmd;
    cmd->kind = PGW_COMMAND_OA_FOLLOW;
    oa_follow_key(api, m, "oa_follow", cmd->original); /* a redelivery's: none */
    cmd->by_identity = true;
    cmd->oa_follow = PGW_OA_FOLLOWS;
    cmd->at = m->create_time;
    cmd->done = oa_follow_done;
    cmd->payload = f;
    atomic_init(&f->refs, 2); /* the writer's and the job's */
    atomic_init(&f->done, false);
    int rc = wx_identity(api, PGW_ID_OA_OPENID, pgw_wechat_oa_appid(api->wechat), m->from_user,
                         &cmd->who, err);
    if (rc == PGW_OK)
        rc = pgw_writer_submit(api->writer, cmd, err);
    if (rc != PGW_OK) {
        free(f);
        return rc;
    }
    wx->follow = f;
    return PGW_OK;
}

/* A new follower to link by unionid, after the reply (outbound worker). */
typedef struct oa_link_job {
    pgw_api *api;
    char openid[PGW_WX_OPENID_MAX + 1];
    int64_t at;    /* the follow's (its push's CreateTime): forgotten by it */
    int64_t dated; /* the LINK's: `at`, or now for a push before the close */
    bool noted;    /* a push's note (oa_note_follower), not a subscribe */
} oa_link_job;

/* The link's LINK command, and whose it is. */
typedef struct oa_link_cmd {
    pgw_command cmd;
    oa_link_job job;
} oa_link_cmd;

static void stream_committed(void *ctx, const pgw_command *cmd);

/* A note, a link or a code going to the writer (before its submit: it
 * may complete at once), or refused by it or completed (`ended`). */
static void late_write_count(pgw_api *api, bool ended)
{
    pthread_mutex_lock(&api->links_lock);
    PGW_ASSERT(!ended || api->late_writes > 0);
    api->late_writes = ended ? api->late_writes - 1 : api->late_writes + 1;
    if (api->late_writes == 0)
        pthread_cond_broadcast(&api->late_writes_done);
    pthread_mutex_unlock(&api->links_lock);
}

/* A note or a link to the writer, counted among the late writes until
 * its completion (refused: no completion, so not counted). */
static int late_submit(pgw_api *api, pgw_command *cmd, pgw_err *err)
{
    late_write_count(api, false);
    int rc = pgw_writer_submit(api->writer, cmd, err);
    if (rc != PGW_OK)
        late_write_count(api, true);
    return rc;
}

/* The stop, before the writer's: the notes, links and codes complete,
 * each forgetting its note or voiding its code while the writer takes
 * it. Regression: a note committed in the stop, not forgotten ("the
 * writer is stopping"), made every push after the restart wait for a
 * subscribe (note_at_the_stop). The workers are stopped and the service
 * thread is here: none comes. */
static void late_writes_settle(pgw_api *api)
{
    pthread_mutex_lock(&api->links_lock);
    PGW_ASSERT(api->links_closed);
    while (api->late_writes > 0)
        pthread_cond_wait(&api->late_writes_done, &api->links_lock);
    pthread_mutex_unlock(&api->links_lock);
}

/* The forgetting done (writer's completion thread). */
static void oa_forget_done(pgw_command *cmd, void *payload)
{
    (void)payload;
    if (cmd->rc != PGW_OK)
        fprintf(stderr, "pointsgw: warning: an official-account follow is not forgotten: %s\n",
                cmd->err.msg);
    free(cmd);
}

/* A noted follower's link failed for the moment (WeChat busy or not
 * reached, a queue full, the gateway stopping): the note is forgotten,
 * so that the next push notes it again and links, where it would
 * otherwise find the note and wait for a subscribe that never comes. At
 * most once a push, and pushes are a person's doing. A state recorded
 * since the note (a subscribe or unsubscribe of another time) stays.
 * Also a follow of `at` whose user WeChat says follows no more. */
static void oa_forget_note(pgw_api *api, const char *openid, int64_t at)
{
    pgw_err err;
    pgw_command *cmd = calloc(1, sizeof(*cmd));
    int rc = cmd ? PGW_OK : pgw_err_set(&err, PGW_ENOMEM, "out of memory");
    if (rc == PGW_OK) {
        cmd->kind = PGW_COMMAND_OA_FOLLOW;
        cmd->by_identity = true;
        cmd->oa_follow = PGW_OA_FORGET_NOTE;
        cmd->at = at;
        cmd->done = oa_forget_done;
        rc = wx_identity(api, PGW_ID_OA_OPENID, pgw_wechat_oa_appid(api->wechat), openid, &cmd->who,
                         &err);
    }
    if (rc == PGW_OK)
        rc = pgw_writer_submit(api->writer, cmd, &err);
    if (rc != PGW_OK) {
        free(cmd);
        fprintf(stderr, "pointsgw: warning: an official-account follow is not forgotten: %s\n",
                err.msg);
    }
}

/* Whether a link's failure may pass (the store or a queue, for now),
 * rather than being the ledger's answer to it. A period closed before the
 * push (PGW_ECLOSED) refuses this push's date, not the follower: the next
 * push, dated after the close (which is never ahead of the clock), notes
 * and links again. */
static bool oa_link_may_pass(int rc)
{
    return rc == PGW_EFULL || rc == PGW_EIO || rc == PGW_ENOMEM || rc == PGW_EUNAVAILABLE ||
           rc == PGW_ELIMITED || rc == PGW_ECLOSED;
}

/* The link done (writer's completion thread): a merge's transfers to the
 * live stream; a failure to the log (and a note's, for now, forgotten). */
static void oa_link_done(pgw_command *cmd, void *payload)
{
    oa_link_cmd *c = payload;
    if (cmd->rc == PGW_OK)
        stream_committed(c->job.api, cmd);
    else
        fprintf(stderr, "pointsgw: warning: official account follower not linked: %s\n",
                cmd->err.msg);
    pgw_api *api = c->job.api;
    if (cmd->rc != PGW_OK && c->job.noted && oa_link_may_pass(cmd->rc))
        oa_forget_note(api, c->job.openid, c->job.at);
    free(c);
    late_write_count(api, true);
}

/* Links the follower's openid to the unionid WeChat knows them by (a LINK
 * of its own): a member who logged into the mini program is the follower,
 * or the two merge. Nothing waits for it: oa_link_done ends it. */
static int oa_link(const oa_link_job *l, const char *unionid, pgw_err *err)
{
    oa_link_cmd *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory");
    c->job = *l;
    pgw_command *link = &c->cmd;
    link->kind = PGW_COMMAND_LINK;
    link->at = l->dated;
    link->by_identity = link->has_who2 = true;
    int rc = wx_identity(l->api, PGW_ID_OA_OPENID, pgw_wechat_oa_appid(l->api->wechat), l->openid,
                         &link->who, err);
    if (rc == PGW_OK)
        rc = wx_identity(l->api, PGW_ID_UNIONID, "", unionid, &link->who2, err);
    char material[2 * PGW_LOOKUP_MAX + 8], hex[2 * PGW_HASH_LEN + 1];
    snprintf(material, sizeof(material), "%s|%s", link->who.lookup, link->who2.lookup);
    pgw_sha256(material, strlen(material), link->fingerprint);
    pgw_hash_hex(link->fingerprint, hex, sizeof(hex));
    snprintf(link->key, sizeof(link->key), "oa_link:%.32s:%lld", hex, (long long)l->at);
    snprintf(link->channel, sizeof(link->channel), "wechat_oa");
    link->done = oa_link_done;
    link->payload = c;
    if (rc == PGW_OK)
        rc = late_submit(l->api, link, err);
    if (rc != PGW_OK)
        free(c);
    return rc;
}

/* Worker: the follower's unionid (cgi-bin/user/info), linked. Off the
 * reply's path, which WeChat wants within 5 s. Best effort: without it
 * the follower is still followed and paid, and a subscribe's link waits
 * for the next subscribe; a note's, failed for the moment, for the next
 * push. No unionid (no open platform) is an answer. */
static void oa_link_task(void *arg, pgw_outbound_turn turn)
{
    oa_link_job *l = arg;
    bool stale = turn != PGW_OUTBOUND_CALL;
    char unionid[PGW_WX_OPENID_MAX + 1] = "";
    bool follows = false;
    pgw_wx_reply reply = {0};
    pgw_err err;
    /* Not asked: the operator's line says why, a stop being no backlog. */
    int rc = turn == PGW_OUTBOUND_STOPPING
                 ? pgw_err_set(&err, PGW_EUNAVAILABLE, "the server is stopping")
             : stale ? pgw_err_set(&err, PGW_EUNAVAILABLE, "WeChat calls are backed up")
                     : pgw_oa_user_unionid(pgw_wechat_client(l->api->wechat),
                                           pgw_wechat_oa_appid(l->api->wechat), l->openid, unionid,
                                           &follows, &reply, &err);
    bool may_pass = stale || pgw_wx_classify(rc, &reply) == PGW_WX_RETRY;
    /* Following no more: they unfollowed before this ran, and the
     * unsubscribe's push is late or lost. The follow of `at` (a subscribe's
     * or a note's) is forgotten, so that they are not taken for a follower;
     * a unionid WeChat gives is theirs all the same. */
    if (rc == PGW_OK && !follows)
        oa_forget_note(l->api, l->openid, l->at);
    if (rc == PGW_OK && unionid[0] != '\0') {
        rc = oa_link(l, unionid, &err);
        may_pass = oa_link_may_pass(rc);
    }
    if (rc != PGW_OK)
        fprintf(stderr, "pointsgw: warning: official account follower not linked: %s\n", err.msg);
    if (rc != PGW_OK && l->noted && may_pass)
        oa_forget_note(l->api, l->openid, l->at);
    free(l);
}

/* Queues the link of a follower (nothing waits on it), the follow's time
 * `at`, the link dated `dated`; `noted`: a push's note, forgotten when the
 * link cannot be queued. */
static void oa_queue_link(pgw_api *api, const char *openid, int64_t at, int64_t dated, bool noted)
{
    pgw_err err;
    oa_link_job *l = calloc(1, sizeof(*l));
    int rc = l ? PGW_OK : pgw_err_set(&err, PGW_ENOMEM, "out of memory");
    if (rc == PGW_OK) {
        l->api = api;
        l->at = at;
        l->dated = dated;
        l->noted = noted;
        snprintf(l->openid, sizeof(l->openid), "%.64s", openid);
        rc = outbound_submit(api, api->outbound, oa_link_task, l, &err);
    }
    if (rc != PGW_OK) {
        free(l);
        fprintf(stderr, "pointsgw: warning: official account follower not linked: %s\n", err.msg);
        if (noted)
            oa_forget_note(api, openid, at);
    }
}

/* A push's note that its sender follows (PGW_OA_NOTE). Someone who
 * followed before the gateway went live had no subscribe pushed, so
 * nothing linked their openid to their unionid: their 签到 enrolled a
 * member apart from their mini-program one, and template notices never
 * found them following. The first push of an openid with no follow
 * record is linked as a subscribe is; later ones find the record, and
 * WeChat is asked nothing more. */
typedef struct oa_note {
    pgw_command cmd;
    pgw_api *api;
    char openid[PGW_WX_OPENID_MAX + 1];
} oa_note;

/* Writer's completion thread: the link queued; once the workers stop,
 * the note forgotten (the next push, after a restart, links). */
static void oa_note_done(pgw_command *cmd, void *payload)
{
    oa_note *n = payload;
    if (cmd->rc == PGW_OK && cmd->follow_new) {
        pthread_mutex_lock(&n->api->links_lock);
        bool closed = n->api->links_closed;
        if (!closed)
            oa_queue_link(n->api, n->openid, cmd->at, cmd->at, true);
        pthread_mutex_unlock(&n->api->links_lock);
        if (closed)
            oa_forget_note(n->api, n->openid, cmd->at);
    }
    pgw_api *api = n->api;
    free(n);
    late_write_count(api, true);
}

/* Best effort: refused (the writer's queue full), the next push notes it. */
static void oa_note_follower(pgw_api *api, const pgw_oa_message *m)
{
    pgw_err err;
    oa_note *n = calloc(1, sizeof(*n));
    int rc = n ? PGW_OK : PGW_ENOMEM;
    if (rc == PGW_OK) {
        n->api = api;
        snprintf(n->openid, sizeof(n->openid), "%.64s", m->from_user);
        n->cmd.kind = PGW_COMMAND_OA_FOLLOW;
        n->cmd.by_identity = true;
        n->cmd.oa_follow = PGW_OA_NOTE;
        n->cmd.at = m->create_time;
        n->cmd.done = oa_note_done;
        n->cmd.payload = n;
        rc = wx_identity(api, PGW_ID_OA_OPENID, pgw_wechat_oa_appid(api->wechat), m->from_user,
                         &n->cmd.who, &err);
    }
    if (rc == PGW_OK)
        rc = late_submit(api, &n->cmd, &err);
    if (rc != PGW_OK)
        free(n);
}

/* Whether a member sent push m (a message, or an event of their own doing:
 * a menu click or link, a scan, a location, a menu's photo or scan), so
 * that its sender follows. WeChat's word about the account's own jobs
 * (MASSSENDJOBFINISH, TEMPLATESENDJOBFINISH, audits, ...) is pushed from
 * the account or "mphelper", nobody who follows it: noted, it would link
 * an openid no member has. A list of what is a member's, not of what is
 * not: an event WeChat adds later is no follow until it is listed. */
static bool oa_member_sent(const pgw_oa_message *m)
{
    static const char *const theirs[] = {
        "CLICK",
        "VIEW",
        "SCAN",
        "LOCATION",
        "scancode_push",
        "scancode_waitmsg",
        "pic_sysphoto",
        "pic_photo_or_album",
        "pic_weixin",
        "location_select",
        "view_miniprogram",
    };
    if (strcmp(m->msg_type, "event") != 0)
        return true;
    for (size_t i = 0; i < sizeof(theirs) / sizeof(theirs[0]); i++) {
        if (strcmp(m->event, theirs[i]) == 0)
            return true;
    }
    return false;
}

/* POST /wechat/oa/callback: opens the push; answers "success" at once when
 * it asks nothing of the ledger. */
static bool handle_oa_push(pgw_api *api, const pgw_request *req, pgw_response *resp)
{
    pgw_err err;
    wx_job *wx = calloc(1, sizeof(*wx));
    int rc = wx ? pgw_wechat_oa_open(api->wechat, req->query, (const char *)req->body,
                                     req->body_len, wall_now_s(), &wx->oa, &err)
                : pgw_err_set(&err, PGW_ENOMEM, "out of memory");
    if (rc != PGW_OK) {
        free(wx);
        oa_fail(api, resp, rc, err.msg);
        return false;
    }
    const pgw_oa_message *m = &wx->oa.msg;
    if (!pgw_wx_id_ok(m->from_user)) {
        free(wx);
        oa_fail(api, resp, PGW_EINVAL, "FromUserName is not an openid");
        return false;
    }
    bool event = strcmp(m->msg_type, "event") == 0, text = strcmp(m->msg_type, "text") == 0;
    /* A subscribe records its follow itself; an unsubscribe ends one. */
    if (oa_member_sent(m)) /* first, so that it is ahead of the push's own command */
        oa_note_follower(api, m);
    if (event && strcmp(m->event, "subscribe") == 0)
        wx->action = OA_FOLLOW;
    else if (event && strcmp(m->event, "unsubscribe") == 0)
        wx->action = OA_UNFOLLOW;
    else if (text && m->msg_id[0] != '\0' && oa_text_is(m, "签到"))
        wx->action = OA_SIGN_IN;
    else if (text && oa_text_is(m, "积分"))
        wx->action = OA_BALANCE;
    else { /* nothing for the ledger: WeChat wants "success" to not retry */
        free(wx);
        oa_success(resp);
        return false;
    }
    pgw_job *job = job_new(api, req, R_OA_CALLBACK, PGW_COMMAND_EVENT);
    if (job == NULL) {
        free(wx);
        oa_fail(api, resp, PGW_EFULL, "too many requests in flight");
        return false;
    }
    job->wx = wx;
    rc = oa_command(api, job, &err);
    if (rc == PGW_OK && wx->action == OA_FOLLOW)
        rc = oa_record_follow(api, wx, &err); /* before the event, in order */
    if (rc != PGW_OK) {
        job_free(job);
        oa_fail(api, resp, rc == PGW_EFULL ? PGW_EUNAVAILABLE : rc, err.msg);
        return false;
    }
    bool follow = wx->action == OA_FOLLOW;
    char openid[sizeof(m->from_user)];
    memcpy(openid, m->from_user, sizeof(openid));
    int64_t at = m->create_time;
    /* WeChat waits 5 s for the answer, then drops it and delivers the push
     * again, and after the last try tells the member the account cannot
     * serve: a ledger slower than that (a lock held, a checkpoint) is
     * answered "success" by the HTTP layer, and the reply follows. From
     * before the job can finish, so that a deadline the HTTP layer met is
     * one oa_answer finds passed. */
    int64_t within_us = api->cfg->wechat_oa.reply_within_ms * 1000;
    wx->answer_by_us = pgw_monotonic_us() + within_us;
    if (submit(api, job, resp)) { /* a first follow's link: oa_answer */
        oa_success(resp);
        resp->answer_within_us = within_us;
        return true;
    }
    /* The follow went in ahead of the refused event (the writer's queue
     * full): perhaps this push's first, which its redelivery would find and
     * not link. Linked now; under such overload user/info may be asked
     * once per delivery (WeChat makes four at most). */
    if (follow)
        oa_queue_link(api, openid, at, at, false);
    return false;
}

/* GET (URL check) or POST (a push) /wechat/oa/callback. */
static bool handle_oa_callback(pgw_api *api, const pgw_request *req, pgw_response *resp)
{
    snprintf(resp->key_name, sizeof(resp->key_name), "wechat_oa");
    if (strcmp(req->method, "POST") == 0)
        return handle_oa_push(api, req, resp);
    char echo[PGW_QUERY_MAX + 1];
    pgw_err err;
    int rc = pgw_wechat_oa_echo(api->wechat, req->query, wall_now_s(), echo, sizeof(echo), &err);
    char *body = rc == PGW_OK ? strdup(echo) : NULL;
    if (rc == PGW_OK && body == NULL) /* an empty 200 would fail the check as a wrong token */
        rc = pgw_err_set(&err, PGW_ENOMEM, "out of memory answering the URL check");
    if (rc != PGW_OK) {
        oa_fail_as(api, resp, rc, err.msg, true);
        return false;
    }
    resp->status = 200;
    resp->content_type = "text/plain";
    resp->body = body;
    resp->body_len = strlen(echo);
    return false;
}

/* What an event's answer says: points earned, the balance after, and
 * whether a zero was for a repeat (a replay's figures are only in its
 * stored answer). A behaviour that pays nothing here is no repeat. */
static void event_figures(const pgw_command *cmd, int64_t *points, int64_t *balance, bool *again)
{
    json_t *answer = json_loads(cmd->answer, 0, NULL);
    *points = json_integer_value(json_object_get(answer, "points"));
    *balance = json_integer_value(json_object_get(answer, "balance"));
    const char *reason = json_string_value(json_object_get(answer, "reason"));
    *again = reason != NULL && (strcmp(reason, PGW_REASON_FOLLOWED_BEFORE) == 0 ||
                                strcmp(reason, PGW_REASON_SIGNED_IN_TODAY) == 0 ||
                                strcmp(reason, PGW_REASON_SIGNED_IN_LATER) == 0);
    json_decref(answer);
}

/* The reply to a subscribe's follow_oa or a 签到's sign_in. One dated
 * before finance's close (the push delayed, or redelivered around the
 * close) is refused for good, nothing recorded (a subscribe's follow is,
 * a command of its own); a 签到 sent again now is in the open period. */
static void oa_event_text(const pgw_command *cmd, bool follow, char *text, size_t size)
{
    int64_t points = 0, balance = 0;
    bool again = false;
    event_figures(cmd, &points, &balance, &again);
    if (cmd->rc == PGW_ECLOSED)
        snprintf(text, size, "%s",
                 follow ? "感谢关注，本次关注未能记入积分。" : "签到未能记录，请重新发送“签到”。");
    else if (cmd->rc != PGW_OK)
        snprintf(text, size, "暂时无法办理，请稍后再试。");
    else if (points > 0)
        snprintf(text, size, "%s，获得 %lld 积分，当前积分 %lld。",
                 follow ? "感谢关注" : "签到成功", (long long)points, (long long)balance);
    else if (again)
        snprintf(text, size, "%s，当前积分 %lld。", follow ? "欢迎回来" : "今天已经签到过了",
                 (long long)balance);
    else /* the mall pays nothing for it (or a cap): done, no repeat */
        snprintf(text, size, "%s，当前积分 %lld。", follow ? "感谢关注" : "签到成功",
                 (long long)balance);
}

/*
 * A push its command took (committed, or refused for good) whose reply
 * cannot be built from it (a character no reply may carry in its
 * ToUserName, the reply's sender): "success", which WeChat takes without
 * a word to the member and delivers no more, the cause on stderr. A 4xx
 * told WeChat the push was bad though the member's points had moved; a
 * 503 would have it delivered again, each a replay of the same answer
 * failing the same way, and then the member told the account cannot
 * serve.
 */
static void oa_unreplied(pgw_api *api, pgw_response *resp, const pgw_err *why)
{
    pgw_expire_tell(&api->oa_unreplied_said,
                    "official-account push taken, answered success without a reply (the reply "
                    "could not be built)",
                    why->code, why);
    oa_success(resp);
}

/* The reply's text to the push `job` carried, false when none is owed (an
 * unfollow: nobody to read it). A failure's tells the member to try
 * again. */
static bool oa_reply_text(const pgw_job *job, char *text, size_t size)
{
    const pgw_command *cmd = &job->cmd;
    switch (job->wx->action) {
    case OA_UNFOLLOW:
        return false;
    case OA_BALANCE:
        if (cmd->rc == PGW_OK)
            snprintf(text, size, "您的积分：%lld，可用 %lld。", (long long)cmd->figures.balance,
                     (long long)cmd->figures.available);
        else if (cmd->rc == PGW_ENOTFOUND)
            snprintf(text, size, "您还不是会员。回复“签到”即可加入并领取积分。");
        else
            snprintf(text, size, "暂时无法查询，请稍后再试。");
        return true;
    case OA_FOLLOW:
    case OA_SIGN_IN:
        oa_event_text(cmd, job->wx->action == OA_FOLLOW, text, size);
        return true;
    }
    return false;
}

/* A reply the deadline cut off, on its way as a customer-service message. */
typedef struct oa_late_reply {
    pgw_api *api;
    char openid[PGW_WX_OPENID_MAX + 1];
    char text[512];
} oa_late_reply;

/* Worker: sends it. Best effort, once: an account without the permission
 * (48001), a member gone quiet 48 hours (45015), WeChat down, each is a
 * line and the member sees no reply, as they would have without it. */
static void oa_late_reply_task(void *arg, pgw_outbound_turn turn)
{
    oa_late_reply *l = arg;
    pgw_wx_reply reply;
    pgw_err err;
    int rc = turn == PGW_OUTBOUND_STOPPING
                 ? pgw_err_set(&err, PGW_EUNAVAILABLE, "the server is stopping")
             : turn == PGW_OUTBOUND_STALE
                 ? pgw_err_set(&err, PGW_EUNAVAILABLE, "WeChat calls are backed up")
                 : pgw_oa_send_text(pgw_wechat_client(l->api->wechat),
                                    pgw_wechat_oa_appid(l->api->wechat), l->openid, l->text, &reply,
                                    &err);
    if (rc != PGW_OK)
        fprintf(stderr,
                "pointsgw: warning: official account reply not sent after the push's deadline: "
                "%s\n",
                err.msg);
    atomic_fetch_add(rc == PGW_OK ? &l->api->oa_late_sent : &l->api->oa_late_unsent, 1);
    free(l);
}

/*
 * A push whose command came back past its deadline (wx_job.answer_by_us):
 * the HTTP layer answered it "success", or does with this, so WeChat
 * delivers it no more and a failure's 503 would reach nobody. The member
 * reads the reply all the same, as a customer-service message (a
 * failure's says to try again); the operator reads, once a minute, that
 * the ledger was that slow.
 */
static void oa_late(pgw_api *api, const pgw_job *job, pgw_response *resp)
{
    const pgw_command *cmd = &job->cmd;
    pgw_err why;
    if (cmd->rc == PGW_OK)
        pgw_err_set(&why, PGW_EUNAVAILABLE,
                    "the ledger took over %lld ms (channels.wechat_oa.reply_within_ms); its "
                    "reply goes as a customer-service message",
                    (long long)api->cfg->wechat_oa.reply_within_ms);
    else
        pgw_err_set(&why, cmd->rc, "%s", cmd->err.msg);
    pgw_expire_tell(&api->oa_late_said, "official-account push answered success at its deadline",
                    why.code, &why);
    oa_success(resp);
    char text[sizeof(((oa_late_reply *)NULL)->text)];
    if (!oa_reply_text(job, text, sizeof(text)))
        return; /* an unfollow: nobody to read it */
    pgw_err err;
    oa_late_reply *l = calloc(1, sizeof(*l));
    int rc = l ? PGW_OK : pgw_err_set(&err, PGW_ENOMEM, "out of memory");
    if (rc == PGW_OK) {
        l->api = api;
        memcpy(l->text, text, sizeof(text));
        snprintf(l->openid, sizeof(l->openid), "%.64s", job->wx->oa.msg.from_user);
        rc = outbound_submit(api, api->outbound, oa_late_reply_task, l, &err);
    }
    if (rc == PGW_OK)
        return; /* the task's now */
    fprintf(stderr, "pointsgw: warning: official account reply not sent: %s\n", err.msg);
    atomic_fetch_add(&api->oa_late_unsent, 1);
    free(l);
}

/* The passive reply to a push that reached the ledger. */
static void oa_answer(pgw_api *api, const pgw_job *job, pgw_response *resp)
{
    const pgw_command *cmd = &job->cmd;
    char text[512];
    /* A refusal the member should read gets a reply; anything else (the
     * store down, no memory) is 503, so that WeChat delivers it again. A
     * push dated before finance's close is refused for good: 503 would
     * only have WeChat deliver it three times more, refused the same. */
    bool answerable = cmd->rc == PGW_OK || cmd->rc == PGW_ERISK || cmd->rc == PGW_ENOTFOUND ||
                      cmd->rc == PGW_EINVAL || cmd->rc == PGW_ECLOSED;
    /* A first delivery's follow links the follower's unionid, its points
     * taken, refused, or failed 503: a redelivery (WeChat retrying: we were
     * slow, or said 503) finds its follow recorded, and a refused or failed
     * event records no key of its own, so only the follow's tells it. One
     * dated before the close is linked too, the link dated now: of the
     * push's date it would be refused as the event was, and with its
     * follow recorded no later push notes the follower to link it
     * (oa_note_follower). Regression: not linked, the follower stayed
     * apart from its unionid's member for good. */
    const pgw_oa_message *m = &job->wx->oa.msg;
    if (job->wx->action == OA_FOLLOW && !cmd->replayed && !oa_follow_seen(job->wx->follow))
        oa_queue_link(api, m->from_user, m->create_time,
                      cmd->rc == PGW_ECLOSED ? wall_now_s() : m->create_time, false);
    if (cmd->rc == PGW_ECLOSED) /* once: answered, WeChat does not deliver it again */
        fprintf(stderr,
                "pointsgw: warning: official account %s not recorded (answered, not to be "
                "delivered again): %s\n",
                job->wx->action == OA_FOLLOW ? "follow_oa" : "sign_in", cmd->err.msg);
    if (pgw_monotonic_us() >= job->wx->answer_by_us) {
        oa_late(api, job, resp);
        return;
    }
    if (!answerable) {
        oa_fail(api, resp, PGW_EUNAVAILABLE, cmd->err.msg);
        return;
    }
    if (!oa_reply_text(job, text, sizeof(text))) { /* nobody to read a reply */
        oa_success(resp);
        return;
    }
    pgw_err err;
    int rc = pgw_wechat_oa_reply(api->wechat, &job->wx->oa, text, wall_now_s(), &resp->body,
                                 &resp->body_len, &err);
    if (rc != PGW_OK && error_entry(rc) >= 0) {
        oa_unreplied(api, resp, &err);
        return;
    }
    if (rc != PGW_OK) { /* memory, randomness: a redelivery may be answered */
        oa_fail(api, resp, rc, err.msg);
        return;
    }
    resp->status = 200;
    resp->content_type = "application/xml";
}

/* ---- SMS verification codes ---------------------------------------------------------------- */

/* Whether verification codes can go out: an SMS client and a template. */
static bool otp_ready(const pgw_api *api)
{
    return api->sms != NULL && api->cfg->sms.otp_template[0] != '\0';
}

/* The phone of a code request or check, normalised and keyed for the store. */
static int otp_phone(const pgw_api *api, const json_t *obj, char e164[16], pgw_identity_key *key,
                     pgw_err *err)
{
    char phone[PGW_IDENTITY_VALUE_MAX + 1] = "";
    int rc =
        pgw_json_string(obj, "phone", "$", true, PGW_IDENTITY_VALUE_MAX, phone, sizeof(phone), err);
    if (rc == PGW_OK && pgw_phone_normalize(phone, e164, 16, err) != PGW_OK)
        rc = pgw_err_prefix(err, "$.phone: ");
    return rc == PGW_OK ? wx_identity(api, PGW_ID_PHONE, "", e164, key, err) : rc;
}

/* Where a code request comes from, as the bucket it counts in
 * (pgw_otp_address): the connection's address, or for a channel's backend
 * asking on a member's behalf, the address it names. */
static int otp_client(const pgw_request *req, const json_t *obj, bool keyed,
                      char out[PGW_OTP_ADDRESS_MAX + 1], pgw_err *err)
{
    char given[64] = "";
    int rc = keyed ? pgw_json_string(obj, "client_ip", "$", false, sizeof(given) - 1, given,
                                     sizeof(given), err)
                   : PGW_OK;
    if (rc == PGW_OK && given[0] != '\0' && !pgw_otp_address(given, out))
        rc = pgw_err_set(err, PGW_EINVAL, "$.client_ip: an IPv4 or IPv6 address");
    if (rc == PGW_OK && given[0] == '\0' && !pgw_otp_address(req->client_address, out))
        snprintf(out, PGW_OTP_ADDRESS_MAX + 1, "unknown"); /* still one bucket, still limited */
    return rc;
}

/* What both code routes start with: the job (the session's, or a key's),
 * the body with only `keys`, and the phone, normalised into e164 and keyed
 * into the command. On failure *job may be set: the caller refuses it. */
static int otp_begin(pgw_api *api, const pgw_request *req, const pgw_session *s, route r,
                     const char *const *keys, char e164[16], json_t **obj, pgw_job **job,
                     pgw_err *err)
{
    pgw_command_kind kind = r == R_SMS_OTP ? PGW_COMMAND_OTP_ISSUE : PGW_COMMAND_OTP_VERIFY;
    *job = s ? session_job(api, req, r, kind, s, err) : job_new(api, req, r, kind);
    int rc = *job ? json_body(req, false, obj, err)
                  : pgw_err_set(err, PGW_EFULL, "too many requests in flight");
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(*obj, "$", keys, err);
    return rc == PGW_OK ? otp_phone(api, *obj, e164, &(*job)->cmd.who, err) : rc;
}

/* What a code the stop finished unsent is told, as any request then is. */
#define OTP_STOPPING "the server is stopping"

/* What a code is told that the gateway's own queue kept from the
 * provider, full or waited on too long: it was never sent, and the
 * provider is not to blame. */
#define OTP_BACKED_UP "SMS sending is backed up: try again"

/* What a code is told whose SMS the provider may have sent (no answer, a
 * 5xx, an answer not understood, its own fault): it stays counted and
 * verifiable, so asking again at once would be the one-a-minute 429. */
#define OTP_MAYBE_SENT                                                                             \
    "the SMS provider did not say whether it sent the code: it may still arrive; ask again "       \
    "after a minute if it does not"

/* The answer a code request gets, kept until the job is back. */
static void otp_outcome(pgw_job *job, int rc, const char *message)
{
    job->otp_rc = rc;
    job->otp_retry_at = rc == PGW_ELIMITED ? job->cmd.retry_at : 0;
    job->otp_stopping = false;
    job->otp_maybe_sent = false;
    snprintf(job->otp_message, sizeof(job->otp_message), "%s", message);
}

/* A code the gateway's own queue kept from the provider, full or waited on
 * too long: its answer, and the operator's line (otp_tell) as README shows
 * it. Regression: a stale code's line ended "(HTTP 0)", the status of a
 * provider never asked, and a full queue's said nothing. */
static void otp_backed_up(pgw_job *job)
{
    otp_outcome(job, PGW_EUNAVAILABLE, OTP_BACKED_UP);
    snprintf(job->otp_unsent, sizeof(job->otp_unsent), "queue backed up");
}

/* The answer of a code the stop finished unsent, marked as the stop's
 * where that is decided: finish_otp_issue's Retry-After follows the
 * mark, not the message's words. */
static void otp_stopped(pgw_job *job)
{
    otp_outcome(job, PGW_EUNAVAILABLE, OTP_STOPPING);
    job->otp_stopping = true;
}

/* A code that never left is forgotten (it must neither count nor replace
 * the number's previous code): a VOID through the writer, after which the
 * job comes back with its answer. */
static void otp_void(pgw_writer *writer, pgw_job *job)
{
    pgw_err err;
    PGW_ASSERT(writer != NULL); /* the stop waits for the workers and codes */
    job->cmd.kind = PGW_COMMAND_OTP_VOID;
    if (pgw_writer_submit(writer, &job->cmd, &err) != PGW_OK)
        job_done(&job->cmd, job); /* its queue full: the code stays counted */
}

/* Worker: sends the recorded code, then hands the job back for its answer. */
static void otp_send_task(void *arg, pgw_outbound_turn turn)
{
    pgw_job *job = arg;
    /* The provider not asked (the stop; a code stale in the queue): the
     * code voided while the writer takes it; the stop's with no line for
     * otp_tell. Regression (otp_at_the_stop): the stop's was told the
     * provider did not take it, and the log said the queue was backed up. */
    if (turn != PGW_OUTBOUND_CALL) {
        OPENSSL_cleanse(job->otp_code, sizeof(job->otp_code));
        if (turn == PGW_OUTBOUND_STOPPING)
            otp_stopped(job);
        else
            otp_backed_up(job);
        otp_void(job->api->writer, job);
        return;
    }
    const pgw_sms_channel *ch = &job->api->cfg->sms;
    char minutes[24];
    snprintf(minutes, sizeof(minutes), "%lld", (long long)(ch->otp_ttl_s / 60));
    pgw_sms_param params[] = {{"code", job->otp_code}, {"minutes", minutes}};
    pgw_sms_message msg = {
        .phone = job->otp_phone, .template_id = ch->otp_template, .params = params, .n_params = 2};
    pgw_sms_result res = {0};
    pgw_err err;
    int rc = pgw_sms_send(job->api->sms, &msg, &res, &err);
    OPENSSL_cleanse(job->otp_code, sizeof(job->otp_code));
    if (rc == PGW_OK) {
        otp_outcome(job, PGW_OK, "");
        job_done(&job->cmd, job);
        return;
    }
    /* The provider's text is not passed on: it may quote the request (the
     * code), and whoever asked may not own the number. Its code is logged,
     * on the service thread (otp_tell), where the log's limit lives. */
    snprintf(job->otp_unsent, sizeof(job->otp_unsent), "provider %s (HTTP %ld)", res.code,
             res.http_status);
    /* Regression (otp_maybe_sent): only a code with no answer at all was
     * kept; one after a 5xx or an answer not understood, which may have
     * gone as well, was forgotten and told to try again, and a second
     * code went at once. As the notifier's SMS (sms_may_have_gone). */
    bool maybe_sent = res.attempted && !res.refused;
    if (rc == PGW_ERISK) {
        job->cmd.retry_at = job->cmd.at + 60;
        otp_outcome(job, PGW_ELIMITED, "the SMS provider's limit for this number: try later");
    } else {
        otp_outcome(job, PGW_EUNAVAILABLE,
                    maybe_sent ? OTP_MAYBE_SENT
                               : "the SMS provider did not take the code: try again");
    }
    job->otp_maybe_sent = maybe_sent;
    if (maybe_sent)
        job_done(&job->cmd, job);
    else
        otp_void(job->api->writer, job);
}

/* The code recorded (writer's completion thread): its SMS queued at once,
 * under links_lock, or once the workers are closed, the code voided while
 * the writer still takes it (the stop waits: late_writes_settle). It was
 * handed to the service thread, which found the workers stopped in the
 * stop's drain, the writer too: the code unsent stayed counted, and the
 * number was refused 429 after the restart (otp_at_the_stop). */
static void otp_recorded(pgw_command *cmd, void *payload)
{
    pgw_job *job = payload;
    pgw_api *api = job->api;
    cmd->done = job_done;                    /* the void's, or the worker's */
    otp_outcome(job, cmd->rc, cmd->err.msg); /* a refusal (a limit) recorded nothing */
    int rc = cmd->rc;
    if (rc == PGW_OK) {
        pthread_mutex_lock(&api->links_lock);
        rc = api->links_closed
                 ? pgw_err_set(&cmd->err, PGW_ESTATE, OTP_STOPPING)
                 : outbound_submit(api, api->sms_outbound, otp_send_task, job, &cmd->err);
        pthread_mutex_unlock(&api->links_lock);
        if (rc == PGW_ESTATE) /* the stop (links_closed: the pool stops after) */
            otp_stopped(job);
        else if (rc != PGW_OK) /* full: the gateway's own words */
            otp_backed_up(job);
        if (rc != PGW_OK)
            otp_void(api->writer, job);
    } else {
        job_done(cmd, job); /* refused: the answer */
    }
    late_write_count(api, true);
}

/* POST /v1/sms/otp {"phone", "client_ip"?}: record a new code (limits
 * checked in the writer), then send it (finish_otp). */
static bool handle_otp(pgw_api *api, const pgw_request *req, const pgw_session *s,
                       const char *requester, pgw_response *resp)
{
    static const char *const keys[] = {"phone", "client_ip", NULL};
    static const char *const session_keys[] = {"phone", NULL};
    pgw_err err;
    json_t *obj = NULL;
    pgw_job *job = NULL;
    char e164[16] = "";
    int rc = otp_begin(api, req, s, R_SMS_OTP, s ? session_keys : keys, e164, &obj, &job, &err);
    pgw_command *cmd = job ? &job->cmd : NULL;
    if (rc == PGW_OK)
        memcpy(job->otp_phone, e164, sizeof(job->otp_phone));
    if (rc == PGW_OK)
        rc = otp_client(req, obj, s == NULL, cmd->client_address, &err);
    json_decref(obj);
    uint8_t random[PGW_OTP_RANDOM_LEN];
    if (rc == PGW_OK && RAND_bytes(random, sizeof(random)) != 1)
        rc = pgw_err_set(&err, PGW_EIO, "no randomness for a code");
    if (rc == PGW_OK) {
        pgw_otp_code(random, job->otp_code);
        OPENSSL_cleanse(random, sizeof(random));
        rc = pgw_otp_hash(api->otp_key, sizeof(api->otp_key), cmd->who.lookup, job->otp_code,
                          cmd->otp_hash, &err);
    }
    if (rc != PGW_OK)
        return refuse(resp, job, R_SMS_OTP, rc, err.msg);
    cmd->by_identity = true;
    snprintf(cmd->otp_requester, sizeof(cmd->otp_requester), "%s", requester);
    cmd->done = otp_recorded;
    late_write_count(api, false);
    if (submit(api, job, resp))
        return true;
    late_write_count(api, true); /* refused: no completion */
    return false;
}

static void render_otp(pgw_command *cmd, void *payload)
{
    if (cmd->otp_verdict == PGW_OTP_VERIFIED) /* else nothing is kept: the key stays free */
        render_bind(cmd, payload);
}

/* POST /v1/sms/otp/verify {"phone", "code", "member_id"}: bind the phone
 * to the member (the session's, or member_id for a key) once the code is right. */
static bool handle_otp_verify(pgw_api *api, const pgw_request *req, const pgw_session *s,
                              const char *requester, pgw_response *resp)
{
    static const char *const keys[] = {"phone", "code", "member_id", NULL};
    static const char *const session_keys[] = {"phone", "code", NULL};
    pgw_err err;
    json_t *obj = NULL;
    pgw_job *job = NULL;
    char code[PGW_OTP_DIGITS + 2] = "", e164[16];
    int rc =
        otp_begin(api, req, s, R_SMS_OTP_VERIFY, s ? session_keys : keys, e164, &obj, &job, &err);
    pgw_command *cmd = job ? &job->cmd : NULL;
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "code", "$", true, PGW_OTP_DIGITS + 1, code, sizeof(code), &err);
    if (rc == PGW_OK && !pgw_otp_code_ok(code))
        rc = pgw_err_set(&err, PGW_EINVAL, "$.code: %d digits", PGW_OTP_DIGITS);
    if (rc == PGW_OK && s == NULL)
        rc = pgw_json_string(obj, "member_id", "$", true, PGW_ID_MAX, cmd->member,
                             sizeof(cmd->member), &err);
    json_decref(obj);
    if (rc == PGW_OK)
        rc = pgw_otp_hash(api->otp_key, sizeof(api->otp_key), cmd->who.lookup, code, cmd->otp_hash,
                          &err);
    OPENSSL_cleanse(code, sizeof(code));
    if (rc != PGW_OK)
        return refuse(resp, job, R_SMS_OTP_VERIFY, rc, err.msg);
    cmd->by_identity = true;
    snprintf(cmd->otp_requester, sizeof(cmd->otp_requester), "%s", requester);
    snprintf(cmd->channel, sizeof(cmd->channel), "sms");
    /* One key per (member, phone, code): a retry after a timeout is a replay. */
    char hash_hex[2 * PGW_HASH_LEN + 1];
    pgw_hash_hex(cmd->otp_hash, hash_hex, sizeof(hash_hex));
    bind_key(cmd, "otp");
    size_t n = strlen(cmd->key);
    snprintf(cmd->key + n, sizeof(cmd->key) - n, ":%.16s", hash_hex);
    pgw_sha256(cmd->key, strlen(cmd->key), cmd->fingerprint);
    cmd->render = render_otp;
    return submit(api, job, resp);
}

/* The two OTP routes: a mini-program session, or an admin or channel key. */
static bool handle_otp_route(pgw_api *api, const pgw_request *req, route r,
                             const pgw_principal *who, pgw_response *resp)
{
    pgw_session s;
    pgw_err err;
    if (!otp_ready(api))
        return refuse(resp, NULL, r, PGW_EUNAVAILABLE,
                      "verification codes are off: set channels.sms.otp and the SMS keys");
    if (who == NULL && session_of(api, req, &s, &err) != PGW_OK)
        return refuse(resp, NULL, r, PGW_EUNAUTHORIZED, err.msg);
    if (who != NULL && who->kind != PGW_SCOPE_ADMIN && who->kind != PGW_SCOPE_CHANNEL)
        return refuse(resp, NULL, r, PGW_EFORBIDDEN,
                      "a session, an admin or a channel key asks for codes");
    if (who == NULL)
        snprintf(resp->key_name, sizeof(resp->key_name), "session:%.8s", s.id);
    const pgw_session *session = who == NULL ? &s : NULL;
    /* Whose code it is: only its requester may use it (core/otp.h). */
    char requester[PGW_OTP_REQUESTER_MAX + 1];
    snprintf(requester, sizeof(requester), "%s:%.64s", who ? "key" : "member",
             who ? who->name : s.member);
    return r == R_SMS_OTP ? handle_otp(api, req, session, requester, resp)
                          : handle_otp_verify(api, req, session, requester, resp);
}

static void answer_from(pgw_response *resp, const pgw_command *cmd, int first_status);

/* The operator's line of a code whose SMS did not go (otp_send_task),
 * limited as the writer's lines are (core/log_limit.h): during an SMS
 * provider's outage every code request fails, and a line each flooded
 * stderr. The lines held back are counted in the next; a code sent a
 * minute after the last line says the sending works again, with that
 * count, else (the provider back, no failure after) it was never told.
 * Only after the minute, as mp_wechat_tell: a provider failing every
 * other code would clear the limit each time, two lines a failure. On
 * the service thread. */
#define OTP_WHAT "sending a verification code"
static void otp_tell(pgw_api *api, const pgw_job *job)
{
    const char *unsent = job->otp_unsent[0] != '\0' ? job->otp_unsent : NULL;
    if (unsent != NULL || job->otp_rc == PGW_OK)
        pgw_expire_tell_late(&api->otp_said, OTP_WHAT, unsent);
}

/* POST /v1/sms/otp back from its SMS worker (or the void after it), or
 * refused by the writer (otp_recorded): the answer. */
static void finish_otp_issue(pgw_api *api, pgw_job *job, pgw_response *resp)
{
    otp_tell(api, job);
    if (job->otp_rc == PGW_ELIMITED) { /* (job_free wipes the code) */
        fail(resp, job->route, job->otp_rc, job->otp_message);
        /* From when it was asked, as every other limit's (pgw_api_finish): from
         * the answer, a provider answering across a second's edge made the
         * provider's 60 s 59. */
        int64_t wait = job->otp_retry_at - pgw_command_asked_at(&job->cmd);
        resp->retry_after_s = wait < 1 ? 1 : wait > 86400 ? 86400 : (int)wait;
    } else if (job->otp_rc != PGW_OK) {
        fail_told(api, resp, job, job->route, job->otp_rc, job->otp_message, NULL);
        if (job->otp_stopping) /* voided: as every 503 at the stop */
            resp->retry_after_s = 1;
        else if (job->otp_maybe_sent) /* kept: the number's next code in a minute */
            resp->retry_after_s = 60;
    } else {
        char shown[32];
        /* otp_phone is pgw_phone_normalize's: a mainland mobile, which
         * always masks. */
        int masked = pgw_phone_mask(job->otp_phone, shown, sizeof(shown));
        PGW_ASSERT(masked == PGW_OK);
        set_body(resp, 202,
                 json_pack("{s:s,s:I,s:I}", "phone", shown, "expires_in",
                           (json_int_t)api->cfg->sms.otp_ttl_s, "resend_after", (json_int_t)60));
    }
}

/* POST /v1/sms/otp/verify back from the writer. */
static void finish_otp_verify(pgw_api *api, pgw_job *job, pgw_response *resp)
{
    const pgw_command *cmd = &job->cmd;
    if (cmd->rc != PGW_OK) {
        fail_told(api, resp, job, job->route, cmd->rc, cmd->err.msg, &cmd->err);
    } else if (cmd->otp_verdict != PGW_OTP_VERIFIED) {
        char message[128];
        snprintf(message, sizeof(message), "the code is not accepted: %s",
                 pgw_otp_verdict_name(cmd->otp_verdict));
        error_body(resp, 422, "otp_invalid", message,
                   json_pack("{s:s,s:I}", "reason", pgw_otp_verdict_name(cmd->otp_verdict),
                             "attempts_left", (json_int_t)cmd->otp_tries_left));
    } else {
        answer_from(resp, cmd, 200);
    }
}

/* ---- notifications ------------------------------------------------------------------------ */

#define NOTICES_SHOWN 100

/* One notice as GET /v1/notifications shows it. */
static json_t *notice_json(const finance_job *f, const pgw_notice *x)
{
    char created[PGW_RFC3339_MAX], updated[PGW_RFC3339_MAX];
    answer_time(x->created_at, &f->cfg->rules.tz, created);
    answer_time(x->updated_at, &f->cfg->rules.tz, updated);
    return json_pack("{s:I,s:s,s:s,s:I,s:I,s:s,s:s,s:I,s:s,s:s,s:s,s:s}", "id", (json_int_t)x->id,
                     "member_id", x->member, "kind", x->kind, "points", (json_int_t)x->points,
                     "balance", (json_int_t)x->balance, "state", x->state, "channel", x->channel,
                     "attempts", (json_int_t)x->attempts, "last_error", x->last_error,
                     "provider_id", x->provider_id, "created_at", created, "updated_at", updated);
}

/* On the reader: a page of a member's notices, or of every member's dead
 * ones, {"notifications": [...], "next": <cursor or null>} (one more read
 * than shown: is there a next page?). */
static int run_notices(pgw_store *store, pgw_command *cmd)
{
    finance_job *f = job_of(cmd)->finance;
    size_t shown = (size_t)f->limit, cap = shown + 1;
    PGW_ASSERT(shown >= 1 && shown <= NOTICES_SHOWN);
    pgw_notice *list = calloc(cap, sizeof(*list));
    size_t n = 0;
    int rc = list == NULL ? pgw_err_set(&cmd->err, PGW_ENOMEM, "out of memory")
             : f->dead
                 ? pgw_store_dead_notices(store, f->after, list, cap, &n, &cmd->err)
                 : pgw_store_member_notices(store, f->member, f->after, list, cap, &n, &cmd->err);
    json_t *items = rc == PGW_OK ? json_array() : NULL;
    for (size_t i = 0; items && i < n && i < shown; i++)
        json_array_append_new(items, notice_json(f, &list[i]));
    char next[24] = "";
    if (n > shown)
        snprintf(next, sizeof(next), "%lld", (long long)list[shown - 1].id);
    free(list);
    if (rc == PGW_OK) {
        json_t *body = items == NULL ? NULL
                                     : json_pack("{s:o,s:s?}", "notifications", items, "next",
                                                 next[0] ? next : NULL);
        f->out = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        f->out_len = f->out ? strlen(f->out) : 0;
        if (f->out == NULL)
            rc = pgw_err_set(&cmd->err, PGW_ENOMEM, "out of memory");
    }
    return rc;
}

/* [&limit=1..100][&after=<cursor>] of either form, as history_page pages
 * transfers: `fallback` without limit (a member's: 100, all it ever
 * showed, for a client that never pages). */
static int notices_page(const pgw_request *req, finance_job *f, int64_t fallback, pgw_err *err)
{
    char what[32];
    snprintf(what, sizeof(what), "limit must be 1..%d", NOTICES_SHOWN);
    f->limit = fallback;
    int rc = query_int(req->query, "limit", 1, NOTICES_SHOWN, &f->limit, what, err);
    if (rc == PGW_OK)
        rc = query_int(req->query, "after", 1, INT64_MAX, &f->after,
                       "after must be a cursor: a page's next", err);
    return rc;
}

/* ?state=dead instead of member_id: a page of every member's dead notices. */
static int dead_page(const pgw_request *req, finance_job *f, pgw_err *err)
{
    char state[8] = "";
    int rc = query_param(req->query, "state", state, sizeof(state), err);
    if (rc == PGW_OK && strcmp(state, "dead") != 0)
        rc = pgw_err_set(err, PGW_EINVAL, "state must be dead");
    if (rc == PGW_OK && query_has(req->query, "member_id"))
        rc = pgw_err_set(err, PGW_EINVAL, "give member_id or state=dead, not both");
    if (rc == PGW_OK)
        rc = notices_page(req, f, HISTORY_DEFAULT, err);
    f->dead = rc == PGW_OK;
    return rc;
}

/* ?member_id=: a page of the member's notices. */
static int member_page(const pgw_request *req, finance_job *f, pgw_err *err)
{
    int rc = query_param(req->query, "member_id", f->member, sizeof(f->member), err);
    if (rc == PGW_OK && !plain_id(f->member, PGW_ID_MAX))
        rc = pgw_err_set(err, PGW_EINVAL, "member_id (or state=dead) is required");
    return rc == PGW_OK ? notices_page(req, f, NOTICES_SHOWN, err) : rc;
}

/* GET /v1/notifications?member_id= or ?state=dead (admin, finance). */
static bool handle_notices(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                           pgw_response *resp)
{
    pgw_err err;
    int rc = PGW_OK;
    pgw_job *job = finance_job_new(api, req, who, R_NOTIFICATIONS, &err, &rc);
    if (rc == PGW_OK)
        rc = query_has(req->query, "state") ? dead_page(req, job->finance, &err)
                                            : member_page(req, job->finance, &err);
    if (rc != PGW_OK)
        return refuse(resp, job, R_NOTIFICATIONS, rc, err.msg);
    job->finance->cfg = api->cfg;
    job->cmd.call = run_notices;
    return submit(api, job, resp);
}

/* "MM-DD" of a day some year has (29 Feb included): what the writer reads
 * back for the rules (command.c activity_to_ctx), by one definition. */
static bool birthday_ok(const char *text)
{
    int32_t month = 0, day = 0;
    return pgw_parse_month_day(text, &month, &day, NULL) == PGW_OK;
}

/* POST /v1/members/{id}/preferences and /v1/me/preferences {"sms": false,
 * "birthday": "MM-DD"} (either or both): whether the member gets notices
 * by SMS, and its birthday (set once but by an admin key). */
static bool handle_preferences(pgw_api *api, const pgw_request *req, route r, const char *member,
                               const pgw_session *s, bool admin, pgw_response *resp)
{
    pgw_err err;
    json_t *obj = NULL;
    bool sms = true;
    char birthday[PGW_ID_MAX + 1] = ""; /* read longer than MM-DD: a whole date is told the form */
    static const char *const keys[] = {"sms", "birthday", NULL};
    int rc = json_body(req, false, &obj, &err);
    if (rc == PGW_OK)
        rc = pgw_json_only_keys(obj, "$", keys, &err);
    bool set_sms = rc == PGW_OK && pgw_json_has(obj, "sms");
    if (rc == PGW_OK)
        rc = pgw_json_bool(obj, "sms", "$", false, &sms, &err);
    if (rc == PGW_OK)
        rc = pgw_json_string(obj, "birthday", "$", false, PGW_ID_MAX, birthday, sizeof(birthday),
                             &err);
    if (rc == PGW_OK && pgw_json_has(obj, "birthday") && !birthday_ok(birthday))
        rc = pgw_err_set(&err, PGW_EINVAL, "$.birthday: expected MM-DD, a day of the year");
    if (rc == PGW_OK && !set_sms && birthday[0] == '\0')
        rc = pgw_err_set(&err, PGW_EINVAL, "$: give sms, birthday or both");
    json_decref(obj);
    if (rc == PGW_OK && !plain_id(member, PGW_ID_MAX))
        rc = pgw_err_set(&err, PGW_ENOTFOUND, "no such member");
    pgw_job *job = rc == PGW_OK ? job_new(api, req, r, PGW_COMMAND_SMS_PREFERENCE) : NULL;
    if (rc == PGW_OK && job == NULL)
        rc = pgw_err_set(&err, PGW_EFULL, "too many requests in flight");
    if (rc != PGW_OK)
        return refuse(resp, job, r, rc, err.msg);
    snprintf(job->cmd.member, sizeof(job->cmd.member), "%s", member);
    if (s != NULL)
        memcpy(job->cmd.session_id, s->id, sizeof(job->cmd.session_id));
    job->cmd.set_sms = set_sms;
    job->cmd.sms_opt_out = !sms;
    memcpy(job->cmd.birthday, birthday, sizeof(job->cmd.birthday));
    job->cmd.birthday_admin = admin;
    return submit(api, job, resp);
}

/* POST /v1/notifications/{id}/retry (admin): a dead notice is tried again. */
static bool handle_notice_retry(pgw_api *api, const pgw_request *req, const pgw_principal *who,
                                const char *id, pgw_response *resp)
{
    int64_t n = 0;
    if (who->kind != PGW_SCOPE_ADMIN)
        return refuse(resp, NULL, R_NOTICE_RETRY, PGW_EFORBIDDEN, "an admin key retries notices");
    if (!pgw_decimal_in(id, 1, INT64_MAX, &n))
        return refuse(resp, NULL, R_NOTICE_RETRY, PGW_ENOTFOUND, "no such notice");
    pgw_err err;
    if (no_body(req, &err) != PGW_OK)
        return refuse(resp, NULL, R_NOTICE_RETRY, err.code, err.msg);
    pgw_job *job = job_new(api, req, R_NOTICE_RETRY, PGW_COMMAND_NOTICE_RETRY);
    if (job == NULL)
        return refuse(resp, NULL, R_NOTICE_RETRY, PGW_EFULL, "too many requests in flight");
    job->cmd.notice_id = n;
    return submit(api, job, resp);
}

static route route_of(const char *path, char *id, size_t cap)
{
    for (size_t r = R_OTHER + 1; r < R_COUNT; r++) { /* the routes without an {id} */
        if (strchr(ROUTE_NAMES[r], '{') == NULL && strcmp(path, ROUTE_NAMES[r]) == 0)
            return (route)r;
    }
    static const char notices[] = "/v1/notifications/";
    if (strncmp(path, notices, sizeof(notices) - 1) == 0) {
        const char *rest = path + sizeof(notices) - 1, *slash = strchr(rest, '/');
        size_t n = slash ? (size_t)(slash - rest) : 0;
        if (n == 0 || n >= cap || strcmp(slash, "/retry") != 0)
            return R_OTHER;
        memcpy(id, rest, n);
        id[n] = '\0';
        return R_NOTICE_RETRY;
    }
    if (match_hold_path(path, "capture", id, cap))
        return R_CAPTURE;
    if (match_hold_path(path, "void", id, cap))
        return R_VOID;
    if (match_hold_path(path, "returns", id, cap))
        return R_HOLD_RETURNS;
    if (match_id_path(path, "/v1/redemptions/", "returns", id, cap))
        return R_REDEMPTION_RETURNS;
    static const char shops[] = "/v1/shops/";
    if (strncmp(path, shops, sizeof(shops) - 1) == 0) {
        const char *rest = path + sizeof(shops) - 1, *slash = strchr(rest, '/');
        size_t n = slash ? (size_t)(slash - rest) : 0;
        bool batches = slash && strcmp(slash, "/batches") == 0;
        bool imports = slash && strcmp(slash, "/imports") == 0;
        if (n == 0 || n >= cap || !(batches || imports))
            return R_OTHER;
        memcpy(id, rest, n);
        id[n] = '\0';
        return batches ? R_SHOP_BATCH : R_IMPORT;
    }
    static const char members[] = "/v1/members/";
    if (strncmp(path, members, sizeof(members) - 1) != 0)
        return R_OTHER;
    const char *rest = path + sizeof(members) - 1, *slash = strchr(rest, '/');
    size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
    bool history = slash != NULL && strcmp(slash, "/transfers") == 0;
    bool bind = slash != NULL && strcmp(slash, "/identities") == 0;
    bool prefs = slash != NULL && strcmp(slash, "/preferences") == 0;
    if (len == 0 || len >= cap || (slash != NULL && !history && !bind && !prefs))
        return R_OTHER;
    memcpy(id, rest, len);
    id[len] = '\0';
    return history ? R_HISTORY : bind ? R_BIND : prefs ? R_PREFERENCES : R_MEMBER;
}

/* The methods route r takes: "GET", "POST" or "GET, POST". */
/* A route's methods, as a 405's Allow lists them (RFC 9110 10.2.1): HEAD
 * wherever GET is, for HEAD is GET without the body (http.c leaves it out). */
static const char *methods_of(route r)
{
    bool wants_get = r == R_HEALTH || r == R_METRICS || r == R_MEMBER || r == R_HISTORY ||
                     r == R_DASHBOARD || r == R_SETTLEMENT || r == R_POOL || r == R_ME ||
                     r == R_ME_HISTORY || r == R_NOTIFICATIONS || r == R_STREAM;
    return r == R_OA_CALLBACK ? "GET, HEAD, POST" : wants_get ? "GET, HEAD" : "POST";
}

static bool method_allowed(route r, const char *method)
{
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    const char *allowed = methods_of(r);
    return (get && strncmp(allowed, "GET", 3) == 0) || (post && strstr(allowed, "POST") != NULL);
}

/* 405 when the method is not the route's (the official account's callback
 * takes both); true when refused. */
static bool refuse_method(route r, const pgw_request *req, pgw_response *resp)
{
    if (method_allowed(r, req->method))
        return false;
    resp->allow = methods_of(r);
    char message[32];
    snprintf(message, sizeof(message), "use %s", resp->allow);
    pgw_api_error(resp, 405, "invalid_request", message); /* RFC 9110: with Allow */
    return true;
}

/* GET / is public like /healthz: the page asks for a key itself. */
static void handle_dashboard(pgw_response *resp)
{
    resp->body = malloc(pgw_dashboard_html_len);
    if (resp->body == NULL) {
        fail(resp, R_DASHBOARD, PGW_ENOMEM, "out of memory");
        return;
    }
    memcpy(resp->body, pgw_dashboard_html, pgw_dashboard_html_len);
    resp->body_len = pgw_dashboard_html_len;
    resp->status = 200;
    resp->content_type = "text/html; charset=utf-8";
}

/* The routes an API key opens, once the key is checked. */
static bool handle_keyed(pgw_api *api, const pgw_request *req, const pgw_principal *who, route r,
                         const char *id, pgw_response *resp)
{
    switch (r) {
    case R_EVENTS:
        return handle_event(api, req, who, resp);
    case R_BATCH:
        return handle_batch(api, req, who, resp);
    case R_RESOLVE:
        return handle_resolve(api, req, resp);
    case R_BIND:
        return handle_bind(api, req, who, id, resp);
    case R_SHOP_BATCH:
        return handle_shop_batch(api, req, who, id, resp);
    case R_IMPORT:
        return handle_import(api, req, who, id, resp);
    case R_HOLDS:
    case R_REDEMPTIONS:
        return handle_spend(api, req, who, r, resp);
    case R_CAPTURE:
    case R_VOID:
        return handle_settle(api, req, who, id, r, resp);
    case R_REDEMPTION_RETURNS:
    case R_HOLD_RETURNS:
        return handle_return(api, req, who, id, r, resp);
    case R_MEMBER:
    case R_HISTORY:
        return handle_member(api, req, id, r, resp);
    case R_RECONCILE:
        return handle_reconciliation(api, req, who, resp);
    case R_SETTLEMENT:
    case R_POOL:
        return handle_report(api, req, who, r, resp);
    case R_NOTIFICATIONS:
        return handle_notices(api, req, who, resp);
    case R_NOTICE_RETRY:
        return handle_notice_retry(api, req, who, id, resp);
    case R_SMS_OTP:
    case R_SMS_OTP_VERIFY:
        return handle_otp_route(api, req, r, who, resp);
    case R_PREFERENCES:
        if (who->kind != PGW_SCOPE_ADMIN && who->kind != PGW_SCOPE_CHANNEL)
            return refuse(resp, NULL, r, PGW_EFORBIDDEN,
                          "an admin or channel key sets preferences");
        return handle_preferences(api, req, r, id, NULL, who->kind == PGW_SCOPE_ADMIN, resp);
    default:
        break;
    }
    pgw_api_error(resp, 404, "not_found", "no such route");
    return false;
}

/* The API key (and any signature) of a request; false, answered 401, when
 * it is not one. */
static bool authenticate(pgw_api *api, const pgw_request *req, pgw_principal *who,
                         pgw_response *resp)
{
    pgw_err err;
    /* Joined by copies, not snprintf: this runs at every request. */
    char path_and_query[PGW_PATH_MAX + PGW_QUERY_MAX + 2];
    size_t path_len = strnlen(req->path, PGW_PATH_MAX),
           query_len = strnlen(req->query, PGW_QUERY_MAX);
    memcpy(path_and_query, req->path, path_len);
    path_and_query[path_len] = '?';
    memcpy(path_and_query + path_len + (query_len > 0), req->query, query_len);
    path_and_query[path_len + (query_len > 0) + query_len] = '\0';
    pgw_signed_request sr = {req->method,
                             path_and_query,
                             req->timestamp[0] ? req->timestamp : NULL,
                             req->nonce[0] ? req->nonce : NULL,
                             req->signature[0] ? req->signature : NULL,
                             req->body,
                             req->body_len};
    memset(who, 0, sizeof(*who));
    int rc = pgw_auth_check(api->auth, &req->bearer, &sr, req->received_us / 1000000, who, &err);
    PGW_STATIC_ASSERT(sizeof(resp->key_name) == sizeof(who->name), "a key's name fits");
    if (who->name[0] != '\0')
        memcpy(resp->key_name, who->name, sizeof(resp->key_name));
    if (rc != PGW_OK)
        pgw_api_error(resp, 401, "unauthorized", err.msg);
    return rc == PGW_OK;
}

/*
 * Why WeChat channel `name` (`c`) does not run, as serve left it at start:
 * left out of the configuration or switched off there, it said nothing;
 * configured with a variable it needs unset, it warned (wechat.c), and
 * only then is the warning pointed to.
 */
static void wechat_off(const pgw_wechat_channel *c, const char *name, char out[PGW_ERR_MSG_MAX])
{
    snprintf(out, PGW_ERR_MSG_MAX, "channels.%s %s", name,
             c->appid[0] == '\0' ? "is not in the configuration"
             : !c->enabled       ? "is switched off in the configuration (enabled: false)"
                                 : "is off: a variable it needs is not set in the environment "
                                   "(see the warning at start)");
}

bool pgw_api_handle(pgw_api *api, const pgw_request *req, pgw_response *resp)
{
    memset(resp, 0, sizeof(*resp));
    resp->key_name[0] = '-'; /* the rest is zero */
    char id[ROUTE_ID_CAP] = "";
    route r = route_of(req->path, id, sizeof(id));
    resp->route = ROUTE_NAMES[r];
    if (r == R_OTHER) {
        pgw_api_error(resp, 404, "not_found", "no such route");
        return false;
    }
    if (refuse_method(r, req, resp))
        return false;
    /* Read while the stop drains (pgw_http_run): the stores are stopped,
     * and /healthz and /metrics read the writer's figures through them
     * (test_requests_during_the_stop). Every route answers as a write
     * then does. */
    if (api->writer == NULL) {
        fail(resp, r, PGW_EFULL, "the server is stopping");
        return false;
    }
    if (r == R_STREAM) {
        pgw_api_error(resp, 400, "invalid_request",
                      "/v1/stream is a WebSocket: ask for Upgrade: websocket");
        return false;
    }
    if (r == R_HEALTH || r == R_METRICS || r == R_DASHBOARD) {
        if (r == R_HEALTH)
            handle_health(api, resp);
        else if (r == R_METRICS)
            handle_metrics(api, resp);
        else
            handle_dashboard(resp);
        return false;
    }
    bool mp = mp_route(r);
    if ((mp && !pgw_wechat_mp_ready(api->wechat)) ||
        (r == R_OA_CALLBACK && !pgw_wechat_oa_ready(api->wechat))) {
        char why[PGW_ERR_MSG_MAX];
        wechat_off(mp ? &api->cfg->wechat_mp : &api->cfg->wechat_oa, mp ? "wechat_mp" : "wechat_oa",
                   why);
        pgw_api_error(resp, 503, "unavailable", why);
        return false;
    }
    if (!by_key(r, req) && (r == R_SMS_OTP || r == R_SMS_OTP_VERIFY))
        return handle_otp_route(api, req, r, NULL, resp);
    if (r == R_MP_LOGIN)
        return handle_mp_login(api, req, resp);
    if (mp)
        return handle_mp_session(api, req, r, resp);
    if (r == R_OA_CALLBACK)
        return handle_oa_callback(api, req, resp);
    pgw_principal who;
    return authenticate(api, req, &who, resp) && handle_keyed(api, req, &who, r, id, resp);
}

/* ---- finishing jobs ------------------------------------------------------------------------- */

/* A stored answer with "replayed" set; 201 the first time, 200 on a replay. */
static void answer_from(pgw_response *resp, const pgw_command *cmd, int first_status)
{
    /* The stored answer is a compact JSON object: close it with "replayed"
     * instead of parsing and printing it again. */
    size_t len = strnlen(cmd->answer, sizeof(cmd->answer));
    if (len < 2 || cmd->answer[0] != '{' || cmd->answer[len - 1] != '}') {
        fail(resp, R_OTHER, PGW_EUNAVAILABLE,
             "the answer was lost; the write is durable, ask again");
        return;
    }
    static const char first[] = ",\"replayed\":false}", again[] = ",\"replayed\":true}";
    const char *tail = cmd->replayed ? again : first;
    size_t tail_len = cmd->replayed ? sizeof(again) - 1 : sizeof(first) - 1;
    resp->body = malloc(len + sizeof(first));
    if (resp->body == NULL) {
        fail(resp, R_OTHER, PGW_ENOMEM, "out of memory");
        return;
    }
    memcpy(resp->body, cmd->answer, len - 1);
    /* Copied with its NUL, not through sprintf "%s" (~640 instructions
     * a write's answer; bench/RESULTS.md). */
    memcpy(resp->body + len - 1, tail, tail_len + 1);
    resp->body_len = len - 1 + tail_len;
    resp->status = cmd->replayed ? 200 : first_status;
    resp->content_type = "application/json";
}

/* A committed transfer as its live-stream message (malloc'd; NULL when
 * out of memory). "event_key" and "command" come last: a member's view
 * leaves them out by cutting at the first (pgw_api_stream_member_view),
 * not by a second rendering of every transfer. */
static char *transfer_message(const pgw_api *api, const pgw_transfer *t)
{
    char when[PGW_RFC3339_MAX];
    answer_time(t->occurred_at, &api->cfg->rules.tz, when);
    json_t *msg =
        json_pack("{s:s,s:I,s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:s?,s:o}", "type", "transfer", "id",
                  (json_int_t)t->id, "kind", pgw_transfer_kind_name(t->kind), "debit", t->debit,
                  "credit", t->credit, "points", (json_int_t)t->points, "shop_id", t->shop_id,
                  "channel", t->channel, "reference", t->reference, "occurred_at", when,
                  "event_key", event_key_of(t), "command", pgw_api_transfer_command(t));
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    return text;
}

/* One stream message per committed transfer of the job. */
static void emit_transfers(const pgw_api *api, const pgw_command *cmd, pgw_api_emit emit, void *ctx)
{
    if (emit == NULL || cmd->rc != PGW_OK || cmd->replayed)
        return;
    for (size_t i = 0; i < cmd->n_transfers; i++) {
        char *text = transfer_message(api, &cmd->transfers[i]);
        const pgw_transfer *t = &cmd->transfers[i];
        pgw_stream_about about = {t->shop_id, {t->debit, t->credit}};
        if (text != NULL)
            emit(ctx, &about, text, strlen(text));
        free(text);
    }
}

/* A logout committed (a replay too: the session is ended all the same):
 * its streams here close now, not at their next check. Its session is
 * read from its key: the command clears session_id as it revokes it. A
 * merge (merged_from: one the command made, or one it followed): the
 * merged member's streams follow the survivor now; one with a balance
 * of 0 writes no transfer, and its streams saw no sign of it. */
static void follow_change(const pgw_command *cmd, pgw_api_follow follow, void *ctx)
{
    if (follow == NULL || cmd->rc != PGW_OK)
        return;
    size_t n = strlen(LOGOUT_KEY);
    if (cmd->kind == PGW_COMMAND_END_SESSION && strncmp(cmd->key, LOGOUT_KEY, n) == 0)
        follow(ctx, &(pgw_stream_change){.ended_session = cmd->key + n});
    if (cmd->merged_from[0] != '\0' && strcmp(cmd->merged_from, cmd->member) != 0)
        follow(ctx, &(pgw_stream_change){.merged = cmd->merged_from, .survivor = cmd->member});
}

/* A command no request carries, committed (the sweep's expiries, a
 * follower's link): its transfers go to the live stream as the requests'
 * do (writer's completion thread, in commit order). */
static void stream_committed(void *ctx, const pgw_command *cmd)
{
    const pgw_api *api = ctx;
    for (size_t i = 0; api->stream_news != NULL && i < cmd->n_transfers; i++) {
        const pgw_transfer *t = &cmd->transfers[i];
        pgw_stream_about about = {t->shop_id, {t->debit, t->credit}};
        char *text = transfer_message(api, t);
        if (text != NULL) /* the stream is best effort; the transfer is committed */
            api->stream_news(text, &about, true, api->notify_ctx);
    }
    /* A link's merge: the merged member's streams follow the survivor now,
     * as a request's merge makes them, not at their next check. */
    follow_change(cmd, api->stream_follow, api->notify_ctx);
}

int pgw_api_stream_auth(pgw_api *api, const char *authorization, const char *key_param,
                        const char *shop_param, char shop_out[PGW_ID_MAX + 1],
                        char key_name[PGW_ID_MAX + 1], pgw_principal *out, pgw_err *err)
{
    char bearer[PGW_HEADER_VALUE_MAX + 8] = "";
    if (authorization != NULL && authorization[0] != '\0')
        snprintf(bearer, sizeof(bearer), "%s", authorization);
    else if (key_param != NULL)
        snprintf(bearer, sizeof(bearer), "Bearer %s", key_param);
    pgw_signed_request none = {"GET", "/v1/stream", NULL, NULL, NULL, (const uint8_t *)"", 0};
    pgw_bearer b;
    pgw_bearer_of(bearer, &b);
    pgw_principal who;
    memset(&who, 0, sizeof(who));
    int rc = pgw_auth_check(api->auth, &b, &none, wall_now_s(), &who, err);
    snprintf(key_name, PGW_ID_MAX + 1, "%s", who.name[0] ? who.name : "-");
    /* Known, but no handshake carries a signature: "must sign" would send
     * its operator after headers that cannot help. */
    if (who.name[0] != '\0' && who.require_signature)
        return pgw_err_set(err, PGW_EFORBIDDEN,
                           "key %s signs its requests and cannot watch the stream (a "
                           "WebSocket handshake is not signed): watch with a key without "
                           "require_signature",
                           who.name);
    if (rc != PGW_OK)
        return rc;
    if (who.kind == PGW_SCOPE_CHANNEL)
        return pgw_err_set(err, PGW_EFORBIDDEN, "key %s may not watch the stream", who.name);
    /* A shop's key watches its own shop: asked for another, it got its
     * own transfers under that name, in silence (the HTTP review). */
    if (who.kind == PGW_SCOPE_SHOP && shop_param != NULL && shop_param[0] != '\0' &&
        strcmp(shop_param, who.scope_id) != 0)
        return pgw_err_set(err, PGW_EFORBIDDEN, "key %s watches only shop %s", who.name,
                           who.scope_id);
    const char *shop = who.kind == PGW_SCOPE_SHOP ? who.scope_id : (shop_param ? shop_param : "");
    if (strlen(shop) > PGW_ID_MAX)
        return pgw_err_set(err, PGW_EINVAL, "shop filter too long");
    /* A typo would otherwise watch nothing, in silence. */
    if (shop[0] != '\0' && pgw_rules_find_shop(&api->cfg->rules, shop) < 0)
        return pgw_err_set(err, PGW_ENOTFOUND, "no shop %s", shop);
    snprintf(shop_out, PGW_ID_MAX + 1, "%.*s", PGW_ID_MAX, shop);
    *out = who;
    return PGW_OK;
}

pgw_auth *pgw_api_auth(pgw_api *api)
{
    return api->auth;
}

bool pgw_api_by_session(const char *authorization)
{
    /* The scheme alone too: "Session " with an empty token (a mini program
     * that lost it) reaches us as "Session", a header's trailing space not
     * being its value, and was taken for an API key's header ("Bearer
     * <key> is required"). */
    size_t n = sizeof(SESSION_SCHEME) - 2; /* "Session" */
    return strncasecmp(authorization, SESSION_SCHEME, n) == 0 &&
           (authorization[n] == ' ' || authorization[n] == '\0');
}

/* The token after the scheme of a header pgw_api_by_session took: "" for
 * the scheme alone. */
static const char *session_token(const char *authorization)
{
    size_t n = sizeof(SESSION_SCHEME) - 2;
    return authorization[n] == ' ' ? authorization + n + 1 : authorization + n;
}

int pgw_api_stream_session(pgw_api *api, const char *authorization, const char *shop_param,
                           pgw_session *out, char key_name[PGW_ID_MAX + 1], pgw_err *err)
{
    snprintf(key_name, PGW_ID_MAX + 1, "-");
    if (!pgw_wechat_mp_ready(api->wechat)) {
        char why[PGW_ERR_MSG_MAX];
        wechat_off(&api->cfg->wechat_mp, "wechat_mp", why);
        return pgw_err_set(err, PGW_EUNAVAILABLE, "%s", why);
    }
    if (!pgw_api_by_session(authorization) || session_token(authorization)[0] == '\0')
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "Authorization: Session <token> is required");
    int rc =
        pgw_session_verify(api->session_key, session_token(authorization), wall_now_s(), out, err);
    if (rc != PGW_OK)
        return rc;
    snprintf(key_name, PGW_ID_MAX + 1, "session:%.8s", out->id);
    /* Refused, not ignored: a mini program asking for one shop would get
     * every shop's transfers of its member and take them for that shop's. */
    if (shop_param != NULL)
        return pgw_err_set(err, PGW_EINVAL,
                           "a member's stream is its own member's: ?shop= is for API keys");
    return PGW_OK;
}

/* On the reader, once pgw_command_read found the session live: the member
 * it streams, the survivor of any merge (as GET /v1/me reads one). */
static int stream_member(pgw_store *store, pgw_command *cmd)
{
    return pgw_store_survivor(store, cmd->member, NULL, &cmd->err);
}

int pgw_api_stream_check(pgw_api *api, const pgw_session *s, uint64_t request_id, pgw_err *err)
{
    pgw_request req;
    memset(&req, 0, sizeof(req));
    req.id = request_id;
    pgw_job *job = session_job(api, &req, R_STREAM, PGW_COMMAND_READ_CALL, s, err);
    if (job == NULL)
        return err->code;
    job->cmd.call = stream_member;
    job->cmd.request_id = request_id;
    pgw_writer *to = queue_of(api, job);
    int rc = to ? pgw_writer_submit(to, &job->cmd, err)
                : pgw_err_set(err, PGW_ESTATE, "the server is stopping");
    if (rc != PGW_OK)
        job_free(job);
    return rc;
}

/* A member's stream checked live: the member to stream. */
static void stream_checked(pgw_response *resp, const pgw_command *cmd)
{
    resp->body = strdup(cmd->member);
    if (resp->body == NULL) {
        fail(resp, R_STREAM, PGW_ENOMEM, "out of memory");
        return;
    }
    resp->body_len = strlen(resp->body);
    resp->status = 200;
    resp->content_type = "text/plain; charset=utf-8";
}

size_t pgw_api_stream_member_view(const char *json, size_t len, char *out)
{
    static const char key[] = ",\"event_key\":";
    size_t n = sizeof(key) - 1, cut = len;
    /* The last one: transfer_message puts it last but for "command", whose
     * object has no such field, and inside a string a quote is escaped, so
     * no value can hold this text. */
    for (size_t i = len >= n ? len - n + 1 : 0; i-- > 0;) {
        if (memcmp(json + i, key, n) == 0) {
            cut = i;
            break;
        }
    }
    memcpy(out, json, cut);
    if (cut == len)
        return len;
    PGW_ASSERT(cut + 1 <= len);
    out[cut] = '}';
    return cut + 1;
}

/* The operator's line of a login or a phone number WeChat failed, with
 * WeChat's address (limited as the sweep's lines: during an outage every
 * one fails), and one when WeChat answers again. "Again" only a minute
 * after the minute's first line (R3): these come at request rate, and a
 * WeChat failing every other one (-1, busy) cleared the limit each time,
 * two lines a failure. A phone answered with nothing usable
 * (mp_phone_unusable) is no failure of WeChat's: its line is limited the
 * same way but on a limit of its own, or the next good answer said
 * "works again" of a WeChat that was never down. On the service thread. */
#define MP_LOGIN_WHAT "mini-program login"
#define MP_PHONE_WHAT "mini-program phone number"
static void mp_wechat_tell(pgw_api *api, const pgw_job *job)
{
    if (job->wx == NULL)
        return;
    bool login = job->route == R_MP_LOGIN;
    pgw_log_limit *said = login ? &api->login_said : &api->phone_said;
    const char *what = login ? MP_LOGIN_WHAT : MP_PHONE_WHAT;
    if (job->wx->wechat_failed[0] != '\0')
        pgw_expire_tell_late(said, what, job->wx->wechat_failed);
    else if (job->wx->wechat_unusable[0] != '\0') /* at request rate too */
        pgw_expire_tell_late(&api->unusable_said, what, job->wx->wechat_unusable);
    else if (job->wx->wechat_answered)
        pgw_expire_tell_late(said, what, NULL);
}

void pgw_api_tell_quiet(pgw_api *api, int64_t now_s, bool stopping)
{
    /* The limits whose thing can work again: the others' lines are of
     * failures only (a 503's cause, an unusable answer, a callback's). */
    struct {
        pgw_log_limit *said;
        const char *what;
    } kinds[] = {{&api->login_said, MP_LOGIN_WHAT},
                 {&api->phone_said, MP_PHONE_WHAT},
                 {&api->otp_said, OTP_WHAT}};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (stopping)
            pgw_expire_tell_stopping(kinds[i].said, kinds[i].what, stderr);
        else
            pgw_expire_tell_later(kinds[i].said, kinds[i].what, now_s, stderr);
    }
}

bool pgw_api_finish(pgw_api *api, pgw_job *job, uint64_t *request_id, pgw_response *resp,
                    pgw_api_emit emit, pgw_api_follow follow, void *ctx)
{
    memset(resp, 0, sizeof(*resp));
    emit_transfers(api, &job->cmd, emit, ctx);
    follow_change(&job->cmd, follow, ctx);
    resp->route = ROUTE_NAMES[job->route];
    memcpy(resp->key_name, job->key_name, sizeof(resp->key_name));
    *request_id = job->request_id;
    const pgw_command *cmd = &job->cmd;
    /* WeChat's risk control refuses as PGW_ERISK too, by no rule of ours. */
    if (cmd->rc == PGW_ERISK && pgw_risk_rule_name(cmd->risk_rule) != NULL)
        api->risk_rejected[cmd->risk_rule]++;
    /* A phone number's job comes back first from the session's check. */
    if (job->route == R_MP_LOGIN || (job->route == R_MP_PHONE && cmd->kind == PGW_COMMAND_BIND))
        mp_wechat_tell(api, job);
    if (job->route == R_SMS_OTP) {
        finish_otp_issue(api, job, resp);
    } else if (job->route == R_SMS_OTP_VERIFY) {
        finish_otp_verify(api, job, resp);
    } else if (job->route == R_OA_CALLBACK) {
        oa_answer(api, job, resp); /* a reply even to a refusal: the member reads it */
    } else if (job->route == R_MP_PHONE && cmd->kind == PGW_COMMAND_READ_CALL) {
        if (!phone_session_checked(api, job, resp))
            return false;
    } else if (cmd->rc != PGW_OK) {
        route r = job->route;
        if (r == R_EVENTS && job->doc.event.type != PGW_EVENT_REFUND)
            r = R_OTHER; /* not found: the member, not an original */
        fail_told(api, resp, job, r, cmd->rc, cmd->err.msg, &cmd->err);
        /* API.md: a limit with Retry-After; so is the hourly sign-up limit
         * (422, a risk rule) and WeChat failing a login or a phone number.
         * From when it was asked: an event's `at` is its occurred_at. */
        bool waits = cmd->rc == PGW_ELIMITED || cmd->rc == PGW_ERISK || cmd->rc == PGW_EUNAVAILABLE;
        int64_t asked = pgw_command_asked_at(cmd);
        if (waits && cmd->retry_at > asked)
            resp->retry_after_s = (int)pgw_min64(cmd->retry_at - asked, 86400);
    } else if (job->route == R_MP_LOGIN) {
        mp_login_answer(api, job, resp);
    } else if (job->route == R_STREAM) {
        stream_checked(resp, cmd);
    } else if (job->route == R_ME) {
        set_body(resp, 200, me_json(api, cmd));
    } else if (job->route == R_PREFERENCES || job->route == R_ME_PREFERENCES) {
        json_t *prefs = json_pack("{s:s,s:b}", "member_id", cmd->member, "sms", !cmd->sms_opt_out);
        if (prefs != NULL && cmd->birthday[0] != '\0') /* only once known */
            json_object_set_new(prefs, "birthday", json_string(cmd->birthday));
        set_body(resp, 200, prefs);
    } else if (job->route == R_NOTICE_RETRY) {
        set_body(resp, 200,
                 json_pack("{s:I,s:s}", "id", (json_int_t)cmd->notice_id, "state", "pending"));
    } else if (job->route == R_MEMBER) {
        set_body(resp, 200, pgw_api_member_json(api->cfg, api->vault, cmd));
    } else if (job->route == R_HISTORY || job->route == R_ME_HISTORY) {
        /* The member's own view names no event keys, as GET /v1/me. */
        set_body(resp, 200,
                 pgw_api_history_json(api->cfg, cmd, cmd->page_cap - 1, job->route == R_HISTORY));
    } else if (job->route == R_RESOLVE) {
        set_body(resp, 200, json_pack("{s:s}", "member_id", cmd->member));
    } else if (job->finance != NULL) { /* a report: the body the reader wrote */
        resp->status = 200;
        resp->content_type = job->finance->csv ? "text/csv; charset=utf-8" : "application/json";
        resp->body = job->finance->out;
        resp->body_len = job->finance->out_len;
        job->finance->out = NULL;
    } else if (job->route == R_IMPORT && cmd->replayed && cmd->answer[0] == '\0') {
        /* A row an older command line imported kept no answer (5895ce5):
         * replayed all the same, not "the answer was lost". */
        set_body(resp, 200, json_pack("{s:b}", "replayed", 1));
    } else {
        bool created = job->route == R_EVENTS || job->route == R_HOLDS ||
                       job->route == R_REDEMPTIONS || job->route == R_IMPORT ||
                       job->route == R_REDEMPTION_RETURNS || job->route == R_HOLD_RETURNS;
        answer_from(resp, cmd, created ? 201 : 200);
    }
    /* A reader's 2xx (a report, a lookup, even by POST) changed nothing. */
    resp->committed = !pgw_command_reads(cmd->kind) && resp->status / 100 == 2;
    pgw_batch *b = job->batch;
    size_t index = job->batch_index;
    job_free(job);
    if (b == NULL)
        return true;
    b->running--;
    batch_record(b, index, resp);
    memset(resp, 0, sizeof(*resp));
    batch_feed(api, b);
    return batch_answer(api, b, resp);
}

/* Copies `in` into out as the inside of a JSON string (quotes, backslashes
 * and control characters escaped); cut short rather than overflow. */
/* The path as valid UTF-8, for the log to stay JSON whatever a client
 * sent: a byte that starts no character becomes U+FFFD. */
static void loggable_path(const char *path, char *out, size_t cap)
{
    size_t n = 0;
    while (*path != '\0') {
        uint32_t cp = 0;
        size_t len = pgw_utf8_next(path, &cp);
        const char *bytes = len > 0 ? path : "\xEF\xBF\xBD";
        size_t take = len > 0 ? len : 3;
        PGW_ASSERT(n + take < cap);
        memcpy(out + n, bytes, take);
        n += take;
        path += len > 0 ? len : 1;
    }
    out[n] = '\0';
}

/* ---- the log and the counters --------------------------------------------------------------- */

/* Writes `len` bytes of request log lines; the lines not written whole, 0
 * when all were. A failed write (a full disk, a closed pipe) loses them:
 * the log is no ledger, serving goes on, and /metrics counts them. A
 * signal (SIGHUP's reload, SIGTERM) that comes while a full pipe holds the
 * write up is no failure: the write goes on where it stopped, else a
 * pass's lines were lost (stdio tries no write again on EINTR). */
static uint64_t write_log(FILE *log, const char *bytes, size_t len)
{
    size_t done = 0;
    for (;;) {
        done += fwrite(bytes + done, 1, len - done, log);
        if (done == len || !ferror(log) || errno != EINTR)
            break;
        clearerr(log);
    }
    fflush(log);
    uint64_t lost = 0; /* each line ends in '\n': those after `done` are cut or unwritten */
    for (const char *p = bytes + done; (p = memchr(p, '\n', len - (size_t)(p - bytes))) != NULL;
         p++)
        lost++;
    return lost;
}

/*
 * A request log line's most bytes (the '\n' apart), from its fields'
 * maxima: a string's byte is 6 escaped at most ("\u001f"; the path's,
 * U+FFFD's 3 for a byte that is no UTF-8, or a control's 6), an integer
 * 20 ("-9223372036854775808"), and the keys' text. ~3.2 KB: a line always
 * fits the buffer, which a pipe takes whole (PIPE_BUF).
 */
#define LOG_ESCAPED(bytes) (6 * (bytes))
#define LOG_LINE_MAX                                                                               \
    (sizeof("{\"ts_us\":,\"id\":,\"method\":\"\",\"path\":\"\",\"status\":,\"us\":,"               \
            "\"key\":\"\",\"client\":\"\",\"error\":\"\",\"reason\":\"\",\"delivered\":false}") -  \
     1 + 4 * 20 +                                                                                  \
     LOG_ESCAPED(sizeof(((pgw_request *)NULL)->method) - 1 + PGW_PATH_MAX + PGW_ID_MAX +           \
                 sizeof(((pgw_request *)NULL)->client_address) - 1 + LOG_CODE_MAX +                \
                 PGW_API_REASON_MAX))
_Static_assert(LOG_LINE_MAX + 1 <= LOG_BUF, "a request log line and its newline fit the buffer");

void pgw_api_log(pgw_api *api, const pgw_request *req, const pgw_response *resp, int64_t done_us)
{
    route r = R_OTHER;
    for (size_t i = 0; i < R_COUNT; i++)
        r = resp->route == ROUTE_NAMES[i] ? (route)i : r;
    size_t s = N_STATUSES;
    for (size_t i = 0; i < N_STATUSES; i++)
        s = STATUSES[i] == resp->status ? i : s;
    api->requests[r][s]++;
    double seconds = (double)(done_us - req->received_us) / 1e6;
    for (size_t b = 0; b < N_BUCKETS; b++)
        api->duration_le[b] += seconds <= BUCKETS[b];
    api->duration_count++;
    api->duration_sum += seconds;
    if (api->log == NULL)
        return;
    /* Written by hand: this runs once per request on the service thread,
     * where a jansson object cost a tenth of it and fprintf's formatting
     * 3%. Sized for the longest fields (LOG_LINE_MAX), and its NUL. */
    char path[3 * sizeof(req->path)];
    loggable_path(req->path, path, sizeof(path));
    char line[LOG_LINE_MAX + 1];
    pgw_json_out o;
    pgw_json_out_init(&o, line, sizeof(line));
    pgw_json_out_begin_object(&o);
    pgw_json_out_key_int(&o, "ts_us", done_us);
    /* The request's number, which stderr's line on its failure names too
     * (fail_told, writer.c); none for one refused before it was read whole. */
    if (req->id != 0)
        pgw_json_out_key_int(&o, "id", (int64_t)req->id);
    pgw_json_out_key_string(&o, "method", req->method);
    pgw_json_out_key_string(&o, "path", path);
    pgw_json_out_key_int(&o, "status", resp->status);
    pgw_json_out_key_int(&o, "us", done_us - req->received_us);
    pgw_json_out_key_string(&o, "key", resp->key_name);
    /* Who sent it, as the per-address limits see them (trusted_proxies): a
     * flood of 401s is traced to its source (the operations review). */
    pgw_json_out_key_string(&o, "client", req->client_address);
    /* An error's code and why (the message, bounded and redacted): a
     * shop's "we get 401" is a stale clock, a bad signature or an unknown
     * key. Only for an error: a success's line stays as it was. */
    if (resp->error_code != NULL) {
        pgw_json_out_key_string(&o, "error", resp->error_code);
        pgw_json_out_key_string(&o, "reason", resp->reason);
    }
    if (resp->undelivered) { /* only then: the usual line stays as it was */
        pgw_json_out_key(&o, "delivered");
        pgw_json_out_bool(&o, false);
    }
    pgw_json_out_end_object(&o);
    PGW_ASSERT(!o.overflow); /* LOG_LINE_MAX: its newline fits the buffer too */
    line[o.len] = '\n';
    if (api->log_len + o.len + 1 > sizeof(api->log_buf))
        pgw_api_flush_log(api);
    memcpy(api->log_buf + api->log_len, line, o.len + 1);
    api->log_len += o.len + 1;
}

void pgw_api_flush_log(pgw_api *api)
{
    if (api->log_len > 0)
        api->log_dropped += write_log(api->log, api->log_buf, api->log_len);
    api->log_len = 0;
}

/* Whether the sweep was told to stop. */
static bool sweep_stopping(sweeper *sw)
{
    pthread_mutex_lock(&sw->lock);
    bool stop = sw->stop;
    pthread_mutex_unlock(&sw->lock);
    return stop;
}

/* sweep_stopping for pgw_expire_due_until: a stop ends the run between
 * pages, not after every lot due (a year end's, minutes of them). */
static bool sweep_asked_to_stop(void *ctx)
{
    return sweep_stopping(ctx);
}

/* Deletes what expired (command.h PRUNE), a pass at a time until a pass
 * finds less than its limit: a backlog (a gateway upgraded after months
 * of logins) goes in many short transactions, with the requests' own
 * commands between them, not in one that holds the writer for seconds. */
static int sweep_prune(sweeper *sw, pgw_err *err)
{
    pgw_command *cmd = calloc(1, sizeof(*cmd));
    if (cmd == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the sessions' prune");
    int rc = PGW_OK;
    bool more = true;
    while (rc == PGW_OK && more && !sweep_stopping(sw)) {
        memset(cmd, 0, sizeof(*cmd));
        cmd->kind = PGW_COMMAND_PRUNE;
        cmd->at = wall_now_s();
        rc = pgw_writer_run(sw->writer, cmd, err);
        if (rc != PGW_OK)
            break;
        more = cmd->pruned_sessions == PGW_PRUNE_ROWS || cmd->pruned_enrolments == PGW_PRUNE_ROWS ||
               cmd->pruned_reminders == PGW_PRUNE_ROWS;
        pthread_mutex_lock(&sw->lock);
        sw->pruned_sessions += (uint64_t)cmd->pruned_sessions;
        sw->pruned_enrolments += (uint64_t)cmd->pruned_enrolments;
        sw->pruned_reminders += (uint64_t)cmd->pruned_reminders;
        pthread_mutex_unlock(&sw->lock);
    }
    free(cmd);
    return rc;
}

static void *sweep_main(void *arg)
{
    sweeper *sw = arg;
    pgw_thread_name("pgw-sweep");
    pthread_mutex_lock(&sw->lock);
    while (!sw->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += sw->every_s;
        while (!sw->stop && pthread_cond_timedwait(&sw->wake, &sw->lock, &until) == 0)
            ;
        if (sw->stop)
            break;
        pthread_mutex_unlock(&sw->lock);
        pgw_expire_report report;
        pgw_err err;
        int rc =
            pgw_expire_due_until(sw->writer, sw->db_url, wall_now_s(), &sw->api->cfg->rules.tz,
                                 stream_committed, sw->api, sweep_asked_to_stop, sw, &report, &err);
        pgw_expire_tell(&sw->expiry_said, "expiry sweep", rc, &err);
        pgw_err prune_err;
        int prune_rc = sweep_prune(sw, &prune_err); /* failed: the next sweep tries again */
        pgw_expire_tell(&sw->prune_said, "pruning sessions", prune_rc, &prune_err);
        pthread_mutex_lock(&sw->lock);
        sw->runs++;
        sw->failures += rc != PGW_OK;
        /* What a failed run did is committed: a lot failing alone fails
         * every run (expire.h), and the others' expiries count all the same. */
        sw->holds += (uint64_t)report.holds;
        sw->lots += (uint64_t)report.lots;
        sw->points += (uint64_t)report.points;
    }
    pthread_mutex_unlock(&sw->lock);
    pgw_expire_tell_stopping(&sw->expiry_said, "expiry sweep", stderr);
    pgw_expire_tell_stopping(&sw->prune_said, "pruning sessions", stderr);
    return NULL;
}

static int sweep_start(pgw_api *api, const char *db_url, pgw_err *err)
{
    sweeper *sw = &api->sweep;
    pthread_mutex_init(&sw->lock, NULL);
    pthread_cond_init(&sw->wake, NULL);
    sw->every_s = api->cfg->expiry_sweep_s > 0 ? api->cfg->expiry_sweep_s : 60;
    sw->writer = api->writer;
    sw->api = api;
    snprintf(sw->db_url, sizeof(sw->db_url), "%s", db_url);
    if (pthread_create(&sw->thread, NULL, sweep_main, sw) != 0)
        return pgw_err_set(err, PGW_ENOMEM, "cannot start the expiry sweep");
    sw->started = true;
    return PGW_OK;
}

static void sweep_stop(sweeper *sw)
{
    if (!sw->started)
        return;
    pthread_mutex_lock(&sw->lock);
    sw->stop = true;
    pthread_cond_signal(&sw->wake);
    pthread_mutex_unlock(&sw->lock);
    pthread_join(sw->thread, NULL); /* a sweep under way finishes its page first */
    sw->started = false;
}

void pgw_api_policy(const pgw_config *cfg, pgw_ledger_policy *out)
{
    *out = (pgw_ledger_policy){
        .expiry = cfg->rules.expiry,
        .tz = cfg->rules.tz,
        .allow_negative = cfg->allow_negative,
        .rules = &cfg->rules,
        .auto_enroll = cfg->auto_enroll,
        .risk =
            {
                .max_points_per_event = cfg->risk.max_points_per_event,
                .max_events_per_member_per_day = cfg->risk.max_events_per_member_per_day,
                .max_redeem_points_per_day = cfg->risk.max_redeem_points_per_day,
                .max_behaviour_points_per_day = cfg->risk.max_behaviour_points_per_day,
                .new_member_redeem_hours = cfg->risk.new_member_redeem_hours,
                .unique_receipts = cfg->risk.unique_receipts,
                .max_new_members_per_ip_per_hour = cfg->risk.max_new_members_per_ip_per_hour,
            },
        .notify = pgw_notify_possible(cfg),
        .notify_coalesce_s = cfg->notify.coalesce_window_s,
        .otp = pgw_otp_limits_default(cfg->sms.otp_ttl_s, (uint32_t)cfg->sms.otp_per_ip_per_hour)};
}

/* The SMS client, when the channel is on and its keys are set. */
static int start_sms(pgw_api *api, pgw_err *err)
{
    const pgw_sms_channel *sms = &api->cfg->sms;
    char unset[PGW_ENV_UNSET_MAX];
    if (!sms->enabled)
        return PGW_OK;
    if (!pgw_sms_env_set(sms, unset, sizeof(unset))) { /* every one, as check-config */
        fprintf(stderr,
                "pointsgw: warning: channels.sms is off: set %s in the environment to turn it on\n",
                unset);
        return PGW_OK;
    }
    return pgw_sms_client_new(sms, getenv(sms->key_id_env), getenv(sms->key_secret_env), NULL,
                              &api->sms, err);
}

/* A courier recorded an attempt: the stream hears of it (courier thread). */
static void notice_changed(void *ctx, const pgw_notice *nt)
{
    pgw_api *api = ctx;
    json_t *msg = json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:I,s:I}", "type", "notification", "id",
                            (json_int_t)nt->id, "member_id", nt->member, "kind", nt->kind, "state",
                            nt->state, "channel", nt->channel, "attempts", (json_int_t)nt->attempts,
                            "points", (json_int_t)nt->points);
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (text == NULL) /* the stream is best effort; the notice itself is recorded */
        return;
    char account[PGW_ACCOUNT_MAX + 1];
    snprintf(account, sizeof(account), "member:%s", nt->member); /* a member's stream: its own */
    pgw_stream_about about = {nt->shop, {account, ""}};
    if (api->stream_news != NULL)
        api->stream_news(text, &about, false, api->notify_ctx);
    else
        free(text);
}

/* The outbox's deliverer, when any channel can deliver. */
static int start_notifier(pgw_api *api, const char *db_url, pgw_err *err)
{
    int rc = start_sms(api, err);
    if (rc != PGW_OK || !pgw_notify_possible(api->cfg))
        return rc;
    pgw_notifier_options o = {.cfg = api->cfg,
                              .db_url = db_url,
                              .vault = api->vault,
                              .wechat = pgw_wechat_client(api->wechat),
                              .mp_ready = pgw_wechat_mp_ready(api->wechat),
                              .oa_ready = pgw_wechat_oa_ready(api->wechat),
                              .sms = api->sms,
                              .changed = notice_changed,
                              .changed_ctx = api};
    return pgw_notifier_start(&o, &api->notifier, err);
}

int pgw_api_new(const pgw_api_options *opts, pgw_api **out, pgw_err *err)
{
    *out = NULL;
    size_t largest =
        opts->body_max > PGW_CSV_BATCH_BODY_MAX ? opts->body_max : PGW_CSV_BATCH_BODY_MAX;
    if (opts->inflight_max < 1 || opts->inflight_max > PGW_INFLIGHT_MAX || opts->body_max < 1 ||
        opts->bodies_max < largest || opts->notify == NULL)
        return pgw_err_set(err, PGW_EINVAL,
                           "in-flight limit 1..%d, a body limit, room for the largest body "
                           "(%zu bytes) and a notifier",
                           PGW_INFLIGHT_MAX, largest);
    for (size_t r = 0; r < R_COUNT; r++)
        PGW_ASSERT(ROUTE_NAMES[r] != NULL); /* every route has its name */
    pgw_api *api = calloc(1, sizeof(*api));
    if (api == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory starting the API");
    pthread_mutex_init(&api->links_lock, NULL);
    pthread_cond_init(&api->late_writes_done, NULL);
    atomic_init(&api->oa_late_sent, 0);
    atomic_init(&api->oa_late_unsent, 0);
    api->cfg = opts->cfg;
    api->body_max = opts->body_max;
    api->bodies_max = opts->bodies_max;
    api->inflight_max = opts->inflight_max;
    api->notify = opts->notify;
    api->stream_news = opts->stream_news;
    api->stream_follow = opts->stream_follow;
    api->notify_ctx = opts->notify_ctx;
    api->log = opts->log;
    pgw_ledger_policy policy;
    pgw_api_policy(opts->cfg, &policy);
    size_t queue =
        opts->inflight_max < PGW_WRITER_QUEUE_MAX ? opts->inflight_max : PGW_WRITER_QUEUE_MAX;
    pgw_writer_options wo = {
        .db_url = opts->db_url, .policy = policy, .queue_cap = queue, .batch_max = opts->batch_max};
    pgw_writer_options ro = wo;
    ro.read_only = true;
    ro.batch_max = 64;
    /* One report at a time: a reader's batch shares one read transaction
     * and is answered when all of it is done, so a report queued behind
     * another waited for it to answer too, and the snapshot outlived both
     * (SQLite's checkpoints cannot pass it, PostgreSQL's vacuum neither).
     * A queue of its own, short (R4): each report waiting holds one of
     * http.max_inflight's slots, which members' reads need, for seconds,
     * even after its client gave up; past it a report is refused at once. */
    pgw_writer_options fo = ro;
    fo.batch_max = 1;
    fo.queue_cap = queue < FINANCE_QUEUE_CAP ? queue : FINANCE_QUEUE_CAP;
    /* Its reports scan: 2-8 MiB ran them as fast as 64 on a log of a
     * million transfers (1.1-1.4 s), and a full 64 MiB cache stayed
     * filled after each report (resident memory 18 -> 113 MiB). */
    fo.cache_kib = FINANCE_CACHE_KIB;
    bool warned = false;
    const pgw_security_config *sec = &opts->cfg->security;
    int rc = pgw_vault_open(sec->phone_hmac_key_env, sec->phone_aes_key_env, sec->development_mode,
                            &api->vault, &warned, err);
    pgw_vault_warn_public(api->vault);
    if (rc == PGW_OK)
        rc = pgw_auth_new(opts->cfg, &api->auth, err);
    if (rc == PGW_OK)
        rc = pgw_writer_start(&wo, &api->writer, err);
    if (rc == PGW_OK) /* the writer made the database if it was not there */
        rc = pgw_api_check_phone_keys(api->vault, opts->db_url, err);
    if (rc == PGW_OK)
        rc = pgw_writer_start(&ro, &api->reader, err);
    if (rc == PGW_OK)
        rc = pgw_writer_start(&fo, &api->finance, err);
    if (rc == PGW_OK)
        rc = sweep_start(api, opts->db_url, err);
    if (rc == PGW_OK)
        rc = pgw_wechat_new(opts->cfg, opts->db_url, &api->wechat, err);
    if (rc == PGW_OK) {
        pgw_vault_derive(api->vault, "session", api->session_key);
        pgw_vault_derive(api->vault, "otp", api->otp_key);
    }
    if (rc == PGW_OK)
        rc = start_notifier(api, opts->db_url, err);
    if (rc == PGW_OK && (pgw_wechat_mp_ready(api->wechat) || pgw_wechat_oa_ready(api->wechat)))
        rc = pgw_outbound_start("WeChat calls", OUTBOUND_THREADS, OUTBOUND_QUEUE, &api->outbound,
                                err);
    if (rc == PGW_OK && otp_ready(api))
        rc = pgw_outbound_start("SMS sends", SMS_THREADS, SMS_QUEUE, &api->sms_outbound, err);
    if (rc != PGW_OK) {
        pgw_api_free(api);
        return rc;
    }
    *out = api;
    return PGW_OK;
}

int pgw_api_check_phone_keys(const pgw_vault *vault, const char *db_url, pgw_err *err)
{
    pgw_store *store = NULL;
    pgw_identity_key phones[2];
    size_t n = 0;
    int rc = pgw_store_open(db_url, false, &store, err);
    if (rc == PGW_OK)
        rc = pgw_store_some_phones(store, phones, &n, err);
    pgw_store_close(store);
    for (size_t i = 0; rc == PGW_OK && i < n; i++)
        rc = pgw_vault_check_stored(vault, &phones[i], err);
    return rc;
}

void pgw_api_stop(pgw_api *api)
{
    pgw_notifier_stop(api->notifier);
    api->notifier = NULL;
    pthread_mutex_lock(&api->links_lock); /* the writer queues links to the workers: */
    api->links_closed = true;             /* no more */
    pthread_mutex_unlock(&api->links_lock);
    pgw_outbound_stop(api->outbound);     /* the workers and the sweep submit to the writer: */
    pgw_outbound_stop(api->sms_outbound); /* they stop first */
    api->outbound = api->sms_outbound = NULL;
    sweep_stop(&api->sweep);
    late_writes_settle(api);
    pgw_writer_stop(api->finance); /* the readers before the writer, as ever; */
    pgw_writer_stop(api->reader);  /* each answers what it has queued first */
    pgw_writer_stop(api->writer);
    api->finance = api->reader = api->writer = NULL;
}

void pgw_api_free(pgw_api *api)
{
    if (api == NULL)
        return;
    PGW_ASSERT(api->inflight == 0);                       /* every job was finished */
    PGW_ASSERT(api->bodies_held == 0 && bodies_sum(api)); /* every connection closed */
    pgw_api_stop(api);
    pgw_api_flush_log(api); /* the last lines, those of answers cut off too */
    while (api->free_jobs != NULL) {
        pgw_job *next = api->free_jobs->next_free;
        free(api->free_jobs);
        api->free_jobs = next;
    }
    pgw_wechat_free(api->wechat);
    pgw_sms_client_free(api->sms);
    pgw_auth_free(api->auth);
    pgw_vault_free(api->vault);
    OPENSSL_cleanse(api->session_key, sizeof(api->session_key));
    OPENSSL_cleanse(api->otp_key, sizeof(api->otp_key));
    PGW_ASSERT(api->late_writes == 0); /* the stop waited for them */
    pthread_cond_destroy(&api->late_writes_done);
    pthread_mutex_destroy(&api->links_lock);
    free(api);
}
