/*
 * config.h - the gateway's one JSON configuration file, loaded and checked.
 *
 * pgw_config_load() reads the file (at most PGW_CONFIG_FILE_MAX bytes),
 * refuses anything it does not understand and fills a pgw_config whose
 * rules part (struct pgw_rules, core/rules.h) the earning rules read.
 * Every error names the file, the JSON path and the problem:
 *     config/mall.json: $.campaigns[3].shops[0]: unknown shop "S099"
 *     config/mall.json:12:5: invalid JSON: ...
 * and the caller exits 2. Unknown keys, wrong types (1.5 where an integer is
 * expected), out-of-range values, duplicates, dangling references and
 * overlapping brackets are all refused: a typo never silently changes how
 * many points members earn.
 *
 * Secrets are never in the file: only the names of the environment
 * variables that hold them (`*_env`). This module does not read the
 * environment; the server does at start-up.
 *
 * The keys, section by section, are documented in README "Configuration".
 */
#ifndef PGW_CONFIG_CONFIG_H
#define PGW_CONFIG_CONFIG_H

#include "core/error.h"
#include "core/notice.h"
#include "core/rules.h"
#include "util/netaddr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_CONFIG_FILE_MAX     (4 << 20) /* 4 MiB: a mall with 1024 shops fits easily */
#define PGW_KEYS_MAX            256
#define PGW_TRUSTED_PROXIES_MAX 32
#define PGW_ENV_NAME_MAX        64
#define PGW_URL_MAX             256
#define PGW_TEMPLATE_ID_MAX     64
#define PGW_LISTEN_MAX          64
#define PGW_DB_URL_MAX          512
#define PGW_SCOPE_MAX           48
/* A mini-program page a notice opens, query included ("pages/points/
 * index?tab=1"). WeChat documents no bound; the adapters send at most 256. */
#define PGW_MP_PAGE_MAX     256
#define PGW_MP_PAGE_DEFAULT "pages/points/index"

/* The notices a channel can carry, each with its own template. */
typedef enum pgw_notice_kind {
    PGW_NOTICE_POINTS_ARRIVED = 0,
    PGW_NOTICE_POINTS_REVERSED,
    PGW_NOTICE_REDEMPTION,
    PGW_NOTICE_POINTS_EXPIRING,
    PGW_NOTICE_TIER_CHANGED,
    PGW_NOTICE_KINDS
} pgw_notice_kind;

/* channels.wechat_oa.reply_within_ms: WeChat waits 5 s for a push's
 * answer, then gives up on it and delivers it again; what the route to us
 * takes (a proxy, the distance) comes out of that. */
#define PGW_OA_REPLY_WITHIN_MS_DEFAULT 4500
#define PGW_OA_REPLY_WITHIN_MS_MIN     200
#define PGW_OA_REPLY_WITHIN_MS_MAX     4900

typedef struct pgw_wechat_channel {
    bool enabled;
    char api_base[PGW_URL_MAX + 1];
    char appid[PGW_ID_MAX + 1];
    char secret_env[PGW_ENV_NAME_MAX + 1];
    char token_env[PGW_ENV_NAME_MAX + 1];   /* official account: callback token */
    char aes_key_env[PGW_ENV_NAME_MAX + 1]; /* official account: EncodingAESKey */
    char mp_jump_appid[PGW_ID_MAX + 1];     /* official account: template jump target */
    /* Official account: a push still waiting on the ledger this long after
     * it came is answered "success", its reply sent later (api.c). */
    int64_t reply_within_ms;
    /* The mini-program page a notice opens: wechat_mp's "notice_page";
     * wechat_oa's "mp_jump_page" (default: wechat_mp's, required when
     * mp_jump_appid names another mini program), in mp_jump_appid.
     * Both PGW_MP_PAGE_DEFAULT unless configured, "channels" absent too. */
    char page[PGW_MP_PAGE_MAX + 1];
    char mp_state[16]; /* wechat_mp: "formal" (default), "trial" or "developer" */
    char templates[PGW_NOTICE_KINDS][PGW_TEMPLATE_ID_MAX + 1]; /* "" = not configured */
} pgw_wechat_channel;

typedef struct pgw_sms_channel {
    bool enabled;
    char provider[16]; /* "tencent" or "aliyun" */
    char api_base[PGW_URL_MAX + 1];
    char sign_name[PGW_NAME_MAX + 1];
    char sdk_app_id[PGW_ID_MAX + 1]; /* tencent */
    char region[PGW_ID_MAX + 1];     /* tencent, e.g. "ap-guangzhou" */
    char key_id_env[PGW_ENV_NAME_MAX + 1];
    char key_secret_env[PGW_ENV_NAME_MAX + 1];
    char templates[PGW_NOTICE_KINDS][PGW_TEMPLATE_ID_MAX + 1];
    /* Verification codes ("otp"): a verification template ("" = off) with
     * the code as its first variable and the minutes as its second. */
    char otp_template[PGW_TEMPLATE_ID_MAX + 1];
    int64_t otp_ttl_s;           /* 60..1800, default 300 */
    int64_t otp_per_ip_per_hour; /* 0..64 (0: no limit), default 20 */
} pgw_sms_channel;

typedef struct pgw_notify_config {
    int64_t coalesce_window_s; /* arrivals within it become one notice */
    int32_t quiet_start_min;   /* SMS quiet hours, minutes after local midnight */
    int32_t quiet_end_min;
    int64_t retry_max_attempts;
    int64_t retry_base_delay_ms;
    int64_t retry_max_delay_ms;
    int64_t expiry_reminder_days; /* "N points expire on D" this long ahead; 0: none */
    int64_t workers;              /* couriers: 1..PGW_NOTIFY_THREADS_MAX (64), default 16 */
    int64_t keep_days;            /* finished notices kept: 1..3650, default 30 */
    pgw_notice_order routes[PGW_NOTICE_KINDS]; /* channels per kind, in order ("routes") */
} pgw_notify_config;

typedef struct pgw_risk_config {
    int64_t max_points_per_event;            /* above: risk_rejected */
    int64_t max_events_per_member_per_day;   /* earning events */
    int64_t max_redeem_points_per_day;       /* per member */
    int64_t max_behaviour_points_per_day;    /* per member, all behaviour rules together */
    int64_t new_member_redeem_hours;         /* a new member may not spend for this long */
    bool unique_receipts;                    /* a receipt number once per shop */
    int64_t max_new_members_per_ip_per_hour; /* mini-program enrolments from one address */
} pgw_risk_config;

/* The HTTP server's limits and TLS (section "http"; every key optional). */
#define PGW_PATH_FILE_MAX 255
/* body_total_max_bytes' bounds: a shop's CSV batch's body (server/api.h
 * PGW_CSV_BATCH_BODY_MAX, asserted there) must fit; 64 GiB is more memory
 * than a gateway's host gives it. */
#define PGW_HTTP_BODIES_MIN     (INT64_C(4) * 1024 * 1024)
#define PGW_HTTP_BODIES_MAX     (INT64_C(64) * 1024 * 1024 * 1024)
#define PGW_HTTP_BODIES_DEFAULT (INT64_C(64) * 1024 * 1024)
typedef struct pgw_http_config {
    int64_t body_max_bytes; /* 1 KiB..64 MiB; default 1 MiB */
    int64_t body_timeout_s; /* a request's body whole within: 1..3600 s; default 60 */
    /* Bytes the bodies of all requests being read or handled may hold at
     * once (each body by its Content-Length, from its headers on): at least
     * the largest one body (body_max_bytes, PGW_HTTP_BODIES_MIN for a
     * shop's CSV batch), at most PGW_HTTP_BODIES_MAX; default 64 MiB. */
    int64_t body_total_max_bytes;
    /* An idle connection kept between requests: 1..3600 s; default 120,
     * longer than the idle time of .NET's (60 s) and Go's (90 s) client
     * pools, so that those close first and never send on a connection we
     * are closing (libwebsockets' own 5 s raced every pooled client). */
    int64_t keepalive_timeout_s;
    int64_t max_inflight; /* requests waiting on the database: 32..65536; default 4096 */
    int64_t commit_batch; /* commands per transaction: 1..4096; 0 (default): the database's */
    /* Members' live streams (GET /v1/stream under a mini-program session)
     * open at once: 0..4096; default 256. Each looks at every transfer the
     * stream carries, on the service thread: the bound is its cost. */
    int64_t stream_sessions_max;
    /* An open member's stream asks the store again this often whether its
     * session is live (a logout, on any instance, closes it by then) and
     * whose it is (a merge): 1..3600 s; default 60. */
    int64_t stream_session_check_s;
    /* Connections one client address (an IPv6 /64) may hold at once:
     * 0 (none) or 1..65536; default 4096 (peer_limit.h). Trusted proxies
     * are not counted: they carry many clients. */
    int64_t max_connections_per_address;
    /* Peers whose X-Forwarded-For names the client (a reverse proxy in
     * front): else every mini-program user shares the proxy's address,
     * and its per-address limits (enrolments, codes) with it. */
    size_t n_trusted_proxies;
    pgw_prefix trusted_proxies[PGW_TRUSTED_PROXIES_MAX];
    bool tls;                              /* both files given */
    char cert_file[PGW_PATH_FILE_MAX + 1]; /* PEM certificate chain */
    char key_file[PGW_PATH_FILE_MAX + 1];  /* PEM private key */
} pgw_http_config;

typedef struct pgw_security_config {
    char phone_hmac_key_env[PGW_ENV_NAME_MAX + 1];
    char phone_aes_key_env[PGW_ENV_NAME_MAX + 1];
    bool development_mode; /* allows running without those keys, loudly */
} pgw_security_config;

typedef struct pgw_key_config {
    char name[PGW_ID_MAX + 1];
    char scope[PGW_SCOPE_MAX + 1]; /* "shop:S001", "channel:wechat_mp", "finance", "admin" */
    bool has_sha256;
    uint8_t key_sha256[32];             /* SHA-256 of the key, or ... */
    char key_env[PGW_ENV_NAME_MAX + 1]; /* ... the variable holding the key */
    bool require_signature;
} pgw_key_config;

typedef struct pgw_config {
    char origin[256]; /* the file it came from, for messages */
    char mall_name[PGW_NAME_MAX + 1];
    int64_t point_value_fen; /* what one point is worth to finance */
    bool auto_enroll;
    bool allow_negative; /* false: refunds clamp at zero */
    char listen[PGW_LISTEN_MAX + 1];
    char db[PGW_DB_URL_MAX + 1];
    pgw_rules rules;
    pgw_wechat_channel wechat_mp;
    pgw_wechat_channel wechat_oa;
    pgw_sms_channel sms;
    pgw_notify_config notify;
    pgw_risk_config risk;
    pgw_http_config http;
    int64_t expiry_sweep_s; /* serve: how often lots and holds due are expired (1..86400) */
    pgw_security_config security;
    size_t n_keys;
    pgw_key_config keys[PGW_KEYS_MAX];
} pgw_config;

/*
 * Reads and checks the file at `path`. On success *out is a new config the
 * caller frees with pgw_config_free(); on failure *out is NULL and err says
 * "<path>: <json path>: <problem>".
 */
int pgw_config_load(const char *path, pgw_config **out, pgw_err *err);

/* The longest configuration path messages show whole (pgw_config_name). */
#define PGW_CONFIG_NAME_MAX 200

/*
 * `path` as messages name it, into out: whole when at most
 * PGW_CONFIG_NAME_MAX bytes, else its start, "..." and its end (the
 * file's name and its nearest folders), at most PGW_CONFIG_NAME_MAX bytes,
 * cut between UTF-8 characters. A message is PGW_ERR_MSG_MAX bytes: a
 * long path in it whole would push out the reason after it.
 */
void pgw_config_name(const char *path, char out[PGW_CONFIG_NAME_MAX + 1]);

/* The file's text, at most PGW_CONFIG_FILE_MAX bytes, NUL-terminated
 * (malloc'd: the caller frees it); PGW_EIO or PGW_EINVAL naming the path. */
int pgw_config_read(const char *path, char **text, size_t *len, pgw_err *err);

/*
 * The top-level settings other than "keys" ("listen", "rules"...) that
 * differ between two texts of a configuration (each one that loaded), as a
 * comma-separated list in `out` ("" for none): what a reload of the keys
 * (serve's SIGHUP) leaves for a restart. Values are compared as JSON
 * (json_equal): a setting rewritten alike, spaces or order of members, is
 * no change; one written out at its default where it was left out is.
 */
int pgw_config_changed(const char *was, size_t was_len, const char *now, size_t now_len, char *out,
                       size_t cap, pgw_err *err);

/* The same from text in memory; `origin` names it in messages. */
int pgw_config_parse(const char *text, size_t len, const char *origin, pgw_config **out,
                     pgw_err *err);

void pgw_config_free(pgw_config *cfg);

/*
 * Whether the TLS files `http` names can serve, when it names them: each
 * readable, the certificate PEM, the key an unencrypted PEM private key
 * and the certificate's own. PGW_EINVAL naming `file` (the
 * configuration), the JSON path and the problem, as loading does. Not part
 * of loading: a command other than serve and check-config may run as a
 * user who cannot read the key, and need not.
 */
int pgw_config_check_tls(const pgw_http_config *http, const char *file, pgw_err *err);

/* Whether `scope` is one a key may have under `cfg` ("shop:<existing id>",
 * "channel:<name>", "finance", "admin"); PGW_EINVAL saying why not, the
 * check a file's key has, its message naming the value `--scope` (keys
 * add's flag), as pgw_config_check_key_name's names `--name`. */
int pgw_config_check_scope(const pgw_config *cfg, const char *scope, pgw_err *err);

/* Whether `name` may name a new key under `cfg`: an identifier (as the
 * configuration's) that none of its keys has; PGW_EINVAL saying why not. */
int pgw_config_check_key_name(const pgw_config *cfg, const char *name, pgw_err *err);

/*
 * Splits a listen address "HOST:PORT" (127.0.0.1:8080, 0.0.0.0:80,
 * [::1]:8080) into its host, an IP address literal (brackets dropped; *ipv6
 * for one in brackets), and its port, min_port..65535. PGW_EINVAL saying
 * why not.
 */
int pgw_listen_parse(const char *listen, int min_port, char *host, size_t cap, int *port,
                     bool *ipv6, pgw_err *err);

/* Sets cfg->db to `url` (a --db), checked as the configuration's "db" is:
 * PGW_EINVAL, cfg untouched, for one neither sqlite:PATH nor
 * postgresql://... (or too long); the message shows it redacted. */
int pgw_config_set_db(pgw_config *cfg, const char *url, pgw_err *err);

/* A short human summary (several lines) of what the config defines. */
int pgw_config_summary(const pgw_config *cfg, char *buf, size_t cap);

#endif
