/*
 * api.h - the HTTP API of API.md, independent of the HTTP library.
 *
 * http.c turns bytes into a pgw_request and a pgw_response back into bytes;
 * everything in between is here: authentication and scopes, routing,
 * validation, the commands sent to the writer (writes) or the reader
 * (reads), the JSON answers, errors, the request log and the metrics.
 *
 * Threads: every function here runs on the service thread, except the
 * completion callbacks, which run on the writer or reader thread and only
 * hand the finished job back through `notify` (which must wake the service
 * thread: lws_cancel_service). The service thread never waits on the
 * database.
 *
 * Ownership: a request that needs the database becomes a job the API
 * allocates (bounded by inflight_max) and frees in pgw_api_finish, whether
 * or not its client is still there.
 */
#ifndef PGW_SERVER_API_H
#define PGW_SERVER_API_H

#include "config/config.h"
#include "core/error.h"
#include "server/auth.h"
#include "server/session.h"
#include "server/writer.h"
#include "util/vault.h"

#include <jansson.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PGW_PATH_MAX         256
#define PGW_QUERY_MAX        512
#define PGW_HEADER_VALUE_MAX 512
#define PGW_BODY_MAX_DEFAULT (1024 * 1024)
/* A shop's CSV batch's body, whatever smaller http.body_max_bytes says:
 * its 10,000 rows (README) of a wide row a till writes, 400 bytes each
 * (ids, a receipt number and a refund's purchase of 60 and more), where
 * ~150 is usual: a day-end file is over a MiB. */
#define PGW_CSV_BATCH_BODY_MAX (4 * 1024 * 1024)
#define PGW_INFLIGHT_DEFAULT   4096
#define PGW_INFLIGHT_MAX       65536

typedef struct pgw_api pgw_api;
typedef struct pgw_job pgw_job;

typedef struct pgw_request {
    uint64_t id;    /* the service thread's id for this transaction */
    char method[8]; /* "GET", "POST", ... */
    char path[PGW_PATH_MAX + 1];
    char query[PGW_QUERY_MAX + 1]; /* without '?', "" when none */
    char content_type[PGW_HEADER_VALUE_MAX + 1];
    char accept[PGW_HEADER_VALUE_MAX + 1]; /* "" when absent or longer than that */
    char authorization[PGW_HEADER_VALUE_MAX + 1];
    pgw_bearer bearer; /* of authorization: its key hashed once, where it was read */
    char timestamp[PGW_HEADER_VALUE_MAX + 1]; /* X-PGW-Timestamp; "" when absent */
    char nonce[PGW_HEADER_VALUE_MAX + 1];
    char signature[PGW_HEADER_VALUE_MAX + 1];
    const uint8_t *body; /* borrowed; body_len bytes (not NUL-terminated) */
    size_t body_len;
    int64_t received_us;     /* wall clock, for the log */
    char client_address[64]; /* the peer's IP address, "" when unknown */
} pgw_request;

#define PGW_API_REASON_MAX 120 /* an error's reason in the request log, in bytes */

typedef struct pgw_response {
    int status;
    const char *content_type;
    char *body; /* malloc'd; the HTTP layer frees it once sent */
    size_t body_len;
    int retry_after_s;             /* > 0: send Retry-After */
    const char *allow;             /* a 405's Allow header ("GET"); NULL none */
    const char *route;             /* route template for metrics ("/v1/holds/{id}/capture") */
    char key_name[PGW_ID_MAX + 1]; /* who asked, for the log ("-" when nobody) */
    bool undelivered;              /* the connection closed before it was sent whole */
    /* An error answer's error.code (a literal) and its message as the log
     * may show it (util/redact.h pgw_redact_reason); NULL and "" else. */
    const char *error_code;
    char reason[PGW_API_REASON_MAX + 1];
    bool committed; /* 2xx from the writer: what it reports is in the ledger (or was: a replay) */
    /* > 0 for a job started (pgw_api_handle true) whose client waits no
     * longer than this (a WeChat push: 5 s): if the job has not finished
     * this many microseconds after, this response (the fallback, its body
     * the HTTP layer's to free) is sent, and the job's own answer, when it
     * comes, is dropped; the API has then seen to its substance. */
    int64_t answer_within_us;
} pgw_response;

/* Wakes the service thread for a finished job (any thread). */
typedef void (*pgw_api_notify)(pgw_job *job, void *ctx);
/* Whom a live-stream message concerns: the shop (a key's ?shop= filter)
 * and the ledger accounts (a member's stream, under a mini-program
 * session, shows the messages naming its member's account only). */
typedef struct pgw_stream_about {
    const char *shop;        /* "" for none */
    const char *accounts[2]; /* a transfer's debit and credit; a notice's member's and "" */
} pgw_stream_about;
/* Hands over a live-stream message (malloc'd JSON; the receiver frees it)
 * that no request carries, about `about`: a transfer the expiry sweep
 * committed, called on the writer's completion thread in commit order as
 * notify is for the jobs committed around it (a receiver keeping both in
 * one queue keeps the stream in log order); or a notice's state change
 * ({"type": "notification", ...}), from a courier's thread. `transfer`
 * says which: the stream owes watchers every transfer, notices only as it
 * can. Until pgw_api_stop returns. */
typedef void (*pgw_api_stream_news)(char *json, const pgw_stream_about *about, bool transfer,
                                    void *ctx);

/* What a committed job changed for members' streams on this instance,
 * which their next session check would otherwise find: a session a
 * logout ended (its id, PGW_SESSION_ID_LEN hex digits), or a member
 * merged into a survivor (a merge it made, or one it followed to the
 * member it names). Valid during the call only. */
typedef struct pgw_stream_change {
    const char *ended_session;     /* NULL: none */
    const char *merged, *survivor; /* NULL: none */
} pgw_stream_change;
typedef void (*pgw_api_follow)(void *ctx, const pgw_stream_change *change);

typedef struct pgw_api_options {
    const pgw_config *cfg; /* borrowed, must outlive the API */
    const char *db_url;
    size_t body_max;     /* bytes a request body may have */
    size_t bodies_max;   /* bytes all bodies may hold at once: at least the largest body */
    size_t inflight_max; /* jobs waiting on the database at once */
    size_t batch_max;    /* the writer's group commit; 0: the database's (writer.h) */
    pgw_api_notify notify;
    pgw_api_stream_news stream_news; /* with notify_ctx */
    /* What a command no request carries changed for members' streams (a
     * follower's link's merge, as pgw_api_finish's follow says a
     * request's), with notify_ctx, on the writer's completion thread
     * right after its transfers' stream_news. NULL: none. */
    pgw_api_follow stream_follow;
    void *notify_ctx;
    FILE *log; /* one JSON line per request; NULL for none */
} pgw_api_options;

/* The ledger policy the configuration asks for (rules, expiry, risk, enrolment):
 * what every writer applying events must use. `out` borrows cfg's rules. */
void pgw_api_policy(const pgw_config *cfg, pgw_ledger_policy *out);

/* The member view of API.md (GET /v1/members/{id}) from a READ_MEMBER
 * command, identities shown masked through the vault; and a READ_HISTORY
 * page as {"transfers": [...], "next"}: the first `shown` transfers read,
 * "next" the cursor after them when more were read (a page read with one
 * more than it shows has a "next" only when a later page is not empty).
 * With `event_keys` each transfer also has "event_key", the idempotency key
 * of the event that wrote it (null for a command of the gateway's own),
 * and "command" (pgw_api_transfer_command): the staff's views; the
 * member's own (GET /v1/me) has neither. The caller owns the reference. */
json_t *pgw_api_member_json(const pgw_config *cfg, const pgw_vault *vault, const pgw_command *cmd);
json_t *pgw_api_history_json(const pgw_config *cfg, const pgw_command *cmd, size_t shown,
                             bool event_keys);

/*
 * The command of the gateway's own that wrote t, read from its idempotency
 * key, as the staff's views show it beside "event_key" (a new reference;
 * NULL when out of memory): JSON null when an event wrote it (event_key
 * names it); {"kind":"capture","hold_id"}, {"kind":"redemption",
 * "redemption_id"}, {"kind":"expiry","lot_id","expired_before"} (the
 * points of the lot expired before this expiry), {"kind":"import",
 * "shop_id","batch"}, {"kind":"merge","by","from","into"} (`by` the key's
 * first word: "bind", "mp_phone", "otp", "mp_login" or "oa_link";
 * "mp_phone" too for that request's keys of before e974178,
 * "mp_phonehone..."); and
 * {"kind":"other"} for a key of another form or a transfer of another
 * kind than its key's. Only what no view hides: never a key's card
 * number, a phone's blind index, a digest of an identity or a session's
 * id (the parts after those named).
 */
json_t *pgw_api_transfer_command(const pgw_transfer *t);

/*
 * Refuses phone keys other than those the phones in db_url (an existing
 * database) were stored with: found by another blind index, a known phone
 * would enrol a second member. Reads two phones (pgw_store_some_phones)
 * and checks them (pgw_vault_check_stored: PGW_ESTATE naming both
 * variables); a database without phones takes any keys. Whoever opens the
 * vault on a database calls it before using them.
 */
int pgw_api_check_phone_keys(const pgw_vault *vault, const char *db_url, pgw_err *err);

/* Starts the writer and the reader on db_url and loads the keys (refused
 * when they are not the database's: pgw_api_check_phone_keys). */
int pgw_api_new(const pgw_api_options *opts, pgw_api **out, pgw_err *err);
/* Stops the reader and the writer, which first apply and commit what is
 * queued: afterwards every job has been handed to notify. */
void pgw_api_stop(pgw_api *api);
/*
 * The service thread's "works again" of a WeChat login or phone number,
 * or of sending codes, that worked since its failure's line: told as
 * requests finish, once that line's minute is over (pgw_log_tell), so a
 * gateway gone quiet after a failure left the failure the log's last
 * word. Called every second or so (http.c) at `now_s` (a monotonic
 * clock's seconds, > 0: pgw_log_later); `stopping`, once the last job is
 * finished, says it the minute over or not (pgw_log_stopping).
 */
void pgw_api_tell_quiet(pgw_api *api, int64_t now_s, bool stopping);
/* Frees the API (stopping it if needed); every job must have been finished. */
void pgw_api_free(pgw_api *api);

/*
 * Handles a complete request. Either answers at once (returns false, *resp
 * filled) or starts a job (returns true): its answer comes later through
 * notify and pgw_api_finish, under the same request id.
 */
bool pgw_api_handle(pgw_api *api, const pgw_request *req, pgw_response *resp);

/* An early answer for a request the HTTP layer refuses itself (body too
 * large, Transfer-Encoding, ...): the standard error body. */
void pgw_api_error(pgw_response *resp, int status, const char *code, const char *message);
/* The answer to a request refused with `rc` (a PGW_E... code), as API.md
 * maps it: PGW_EUNAUTHORIZED 401 unauthorized, PGW_EFORBIDDEN 403, ... */
void pgw_api_refusal(pgw_response *resp, int rc, const char *message);

/* The bytes the body of `req` (its method and path read) may have: the
 * body_max given, or for a shop's CSV batch at least
 * PGW_CSV_BATCH_BODY_MAX. *advice: what a 413 tells its client to do. */
size_t pgw_api_body_max(const pgw_api *api, const pgw_request *req, const char **advice);

/* The share of http.body_total_max_bytes a body is counted in, chosen at
 * its headers: a Bearer key of ours may hold all of it; a mini-program
 * Session token that verifies (its MAC and expiry: no database), and
 * bodies with neither (a stranger's, a forged or expired session's), a
 * quarter each, so that slow strangers leave the members some and the
 * public leaves the tills at least half. */
typedef enum pgw_body_share {
    PGW_BODY_KEYED = 0, /* lws zeroes a transaction: one that reserved nothing */
    PGW_BODY_SESSION,
    PGW_BODY_KEYLESS,
    PGW_BODY_SHARES
} pgw_body_share;

/* Reserves n bytes for the body of `req` (its headers read), from its
 * headers until the transaction ends, in its *share. Nothing is reserved
 * on an error: PGW_ETOOLARGE when n is more than its share could ever
 * hold, PGW_EFULL when it would hold more than is left now of bodies_max
 * or of its share. Each reservation is released once, by its n and
 * *share. Service thread only; /metrics shows the bytes held. */
int pgw_api_body_reserve(pgw_api *api, const pgw_request *req, size_t n, pgw_body_share *share,
                         pgw_err *err);
void pgw_api_body_release(pgw_api *api, size_t n, pgw_body_share share);

/* A connection the server refused at its accept, its address holding
 * http.max_connections_per_address: counted for /metrics. Service thread only. */
void pgw_api_connection_refused(pgw_api *api);

/* The route label (as /metrics and the request log name it) of `path`,
 * and the name of the key `req` names by its bearer ("-" for none of
 * ours): for a request refused before it reaches pgw_api_handle. */
const char *pgw_api_route_label(const char *path);
void pgw_api_key_label(const pgw_api *api, const pgw_request *req, char out[PGW_ID_MAX + 1]);

/* Whether a request (its path and headers read, not its body) is for a
 * route answered by an API key, in a method it takes, and names a Bearer
 * key that is none of ours: the server answers 401 before reading its
 * body. WeChat's routes, the open ones and a code's under a session are
 * not judged here, whatever Authorization says; no key, or another scheme,
 * is answered as pgw_api_handle answers it. */
bool pgw_api_stranger(const pgw_api *api, const pgw_request *req);

/* Receives one live-stream message (a committed transfer) and whom it
 * concerns. `about` and `json` are valid during the call only. */
typedef void (*pgw_api_emit)(void *ctx, const pgw_stream_about *about, const char *json,
                             size_t len);

/*
 * Builds the answer of a finished job and frees it; *request_id says whose.
 * Every transfer the job committed is first passed to `emit`, then what it
 * changed for members' streams to `follow` (either may be NULL; both get
 * ctx). False when there is nothing to send yet (one event of a batch whose
 * other events are still on their way; a verification code recorded, its
 * SMS now on an outbound worker: the job comes back through notify).
 */
bool pgw_api_finish(pgw_api *api, pgw_job *job, uint64_t *request_id, pgw_response *resp,
                    pgw_api_emit emit, pgw_api_follow follow, void *ctx);

/*
 * Who may open the live stream: a key given as `authorization` ("Bearer
 * ...") or as the ?key= value `key_param` (either may be NULL). A shop key
 * sees its own shop only, whatever `shop_param` asks; others see `shop_param`
 * ("" or NULL: every shop; a shop not configured: PGW_ENOTFOUND). Fills
 * shop_out; PGW_EUNAUTHORIZED or PGW_EFORBIDDEN otherwise (a channel's key,
 * and a signing key, whose handshake cannot be signed). key_name gets
 * the key's name for the log once the key is known, refused or not ("-"
 * before); `who` the key let in, for a reload to ask whether it still is
 * (pgw_auth_still).
 */
int pgw_api_stream_auth(pgw_api *api, const char *authorization, const char *key_param,
                        const char *shop_param, char shop_out[PGW_ID_MAX + 1],
                        char key_name[PGW_ID_MAX + 1], pgw_principal *who, pgw_err *err);

/* The API's key table, for the service thread alone (auth.h): a reload
 * swaps its keys (pgw_auth_take_keys). */
pgw_auth *pgw_api_auth(pgw_api *api);

/* Whether `authorization` names a mini-program session ("Session ...",
 * or the scheme alone, its token missing; the scheme in any case): the
 * stream is then a member's own. */
bool pgw_api_by_session(const char *authorization);

/*
 * Who may open a member's stream: the session of `authorization`
 * ("Session <token>"), checked as every mini-program route checks it
 * (its MAC and expiry: PGW_EUNAUTHORIZED; the mini program configured:
 * else PGW_EUNAVAILABLE). A shop filter is refused (PGW_EINVAL: a
 * member's stream is its member's, whatever the shop). Fills *out, and
 * key_name for the log ("session:" and the id's first 8 digits; "-"
 * before the token is good). Whether the session is still live is the
 * store's to say: pgw_api_stream_check.
 */
int pgw_api_stream_session(pgw_api *api, const char *authorization, const char *shop_param,
                           pgw_session *out, char key_name[PGW_ID_MAX + 1], pgw_err *err);

/*
 * Starts the store's check of a member's stream, on the reader as GET
 * /v1/me's: the session still live (not ended, not expired), its member
 * followed through merges. It comes back as a job does (notify, then
 * pgw_api_finish under request_id): 200 with the member's id as the body
 * (text/plain, the survivor's for a merged member), or the refusal (401
 * for a session ended or expired). An error when it cannot start now
 * (too many jobs in flight, the server stopping).
 */
int pgw_api_stream_check(pgw_api *api, const pgw_session *s, uint64_t request_id, pgw_err *err);

/* A live-stream message as a member's stream shows it (into out, which
 * holds len bytes; its length): a transfer's without its "event_key" and
 * "command", as GET /v1/me shows neither; anything else as it is. */
size_t pgw_api_stream_member_view(const char *json, size_t len, char *out);

/* Counts and logs a response: sent, or, `undelivered`, not (logged so).
 * The line waits in the API's buffer for pgw_api_flush_log (or for the
 * buffer's PIPE_BUF bytes to fill): a write per service pass, or per ~16
 * lines under load, not per request. */
void pgw_api_log(pgw_api *api, const pgw_request *req, const pgw_response *resp, int64_t done_us);

/* Writes the request log's waiting lines, whole, and flushes the log
 * (lines a write failed for are counted: /metrics). The service loop
 * calls it after each pass, so that a reader of the log sees a line as
 * soon as a write per line showed it; pgw_api_free calls it last. */
void pgw_api_flush_log(pgw_api *api);

#endif
