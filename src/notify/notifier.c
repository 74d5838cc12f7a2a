/*
 * notifier.c - see notifier.h.
 */
#include "notifier.h"

#include "adapters/wechat/client.h"
#include "adapters/wechat_mp/api.h"
#include "adapters/wechat_oa/template.h"
#include "core/arith.h"
#include "core/civil.h"
#include "core/assertions.h"
#include "core/log_limit.h"
#include "core/notice.h"
#include "core/utf8.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/env.h"
#include "util/http_client.h"
#include "util/thread_name.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The configuration's pages fit what the adapters send. */
_Static_assert(PGW_MP_PAGE_MAX <= PGW_WX_PAGE_MAX, "a configured page the adapters refuse");

static const char *const KIND_NAMES[PGW_NOTICE_KINDS] = {
    [PGW_NOTICE_POINTS_ARRIVED] = "points_arrived",
    [PGW_NOTICE_POINTS_REVERSED] = "points_reversed",
    [PGW_NOTICE_REDEMPTION] = "redemption",
    [PGW_NOTICE_POINTS_EXPIRING] = "points_expiring",
    [PGW_NOTICE_TIER_CHANGED] = "tier_changed",
};

/* The first line of a template message, per kind. */
static const char *const KIND_TITLES[PGW_NOTICE_KINDS] = {
    [PGW_NOTICE_POINTS_ARRIVED] = "积分已到账", [PGW_NOTICE_POINTS_REVERSED] = "积分已退回",
    [PGW_NOTICE_REDEMPTION] = "积分已使用",     [PGW_NOTICE_POINTS_EXPIRING] = "积分即将到期",
    [PGW_NOTICE_TIER_CHANGED] = "会员等级变更",
};

/*
 * A kind of line of the store failing, which the couriers share: its
 * limit (core/log_limit.h), and which couriers failed since they last got
 * through. A courier's outcome is its own (its connection, its batch):
 * the kind works again only once every courier that failed has got
 * through since. Regression: with one limit and each courier's outcome
 * told to it, one courier failing while another got through said the
 * failure and "works again" by turns, a pair a minute, the log saying it
 * worked when a courier of it did not.
 */
typedef struct said_kind {
    pgw_log_limit limit;
    uint64_t failing; /* bit i: courier i */
    bool held;        /* one got through while another failed: told once none does */
} said_kind;
PGW_STATIC_ASSERT(PGW_NOTIFY_THREADS_MAX <= 64, "a courier a bit of said_kind.failing");

/* One delivering thread: its own connection, so threads never share one. */
typedef struct courier {
    struct pgw_notifier *n;
    /* Whose claims are this courier's: the instance's name and its index.
     * Shared by the couriers, a name let one whose lease lapsed (the
     * notice since freed and claimed by another courier) still renew,
     * send and record the other's claim: sent twice. */
    char owner[PGW_OWNER_MAX + 1];
    size_t index; /* in the notifier's couriers */
    pgw_store *store;
    pthread_t thread;
    bool started;
} courier;

/* Room for why a channel is off (channel_off), its NUL included: short,
 * so that three channels' reasons and a refusal fit the 200 bytes of
 * last_error (the sum is asserted at KEPT_MIN). Regression: at 40, a
 * 39-byte reason ("<25 bytes> unset, 2 more") cut the last one to
 * "sms: WeChat may have told…". */
#define OFF_MAX 39

struct pgw_notifier {
    pgw_notifier_options o;
    /* This run's name: host, process and a random part, unique to it; each
     * courier claims as it with its index (courier.owner). What a run held
     * when it died comes back when its lease (renewed while a batch is
     * sent, once under 30 s remain) runs out. */
    char owner[PGW_OWNER_MAX + 1];
    courier couriers[PGW_NOTIFY_THREADS_MAX];
    size_t n_couriers; /* cfg notify.workers */
    /* Per-number frequency: an SMS the provider would refuse (30 s, per
     * hour, per day) waits here instead of costing an attempt. */
    pgw_sms_limiter *limiter;
    /* Why each channel that is off is (channel_off), by channel as
     * stats.sent: "" when it runs. */
    char off[PGW_NOTIFY_CHANNELS][OFF_MAX];
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;                /* under lock */
    pgw_notifier_stats stats; /* under lock */
    /* Under said_lock, held while a line is written too (tell): how often
     * each kind of line of the store failing goes to stderr, an attempt
     * counted (log_failure), the outbox's claims, its sweep of lapsed
     * claims, a renewal, a record. A lock of their own: a write to stderr
     * (a pipe a reader let fill) must not hold up the stats and the stop. */
    pthread_mutex_t said_lock;
    said_kind counted_said, claims_said, sweep_said, renew_said, record_said;
    /* A provider's failures, by channel as stats.sent (tell_provider; the
     * limit only: a provider's failure is the channel's, not a courier's),
     * and its failures since a send by it last got through. */
    said_kind channel_said[PGW_NOTIFY_CHANNELS];
    uint64_t fails_in_a_row[PGW_NOTIFY_CHANNELS];
    /* Under lock: when WeChat's daily quota of the mini program's (0) and
     * the official account's (1) sends comes back after a 45009, 0 when it
     * is not gone; until then their notices do not ask WeChat again. */
    int64_t wx_quota_back[2];
    /* Under lock: bit i, courier i holds records it could not write
     * (hold_batch); the lapsed sweep waits while any does. */
    uint64_t holding;
};

/* Who can be reached, and how, for one notice. */
typedef struct reach_info {
    pgw_notice_reach reach;
    char mp_openid[PGW_WX_OPENID_MAX + 1];
    char quota_openid[PGW_WX_OPENID_MAX + 1]; /* whose quota a subscribe message uses */
    char oa_openid[PGW_WX_OPENID_MAX + 1];
    pgw_identity_key phone;
    const char *mp_template, *oa_template, *sms_template;
    /* What a subscribe message did to the quota, recorded with the outcome. */
    enum { QUOTA_KEPT, QUOTA_USED, QUOTA_NONE_LEFT } quota;
    bool opted_out; /* why SMS does not reach: not_reached() */
    /* The attempt's last failure of a provider (provider_failed): its
     * channel (NONE: none), whether it gave up, and its words without the
     * member's number, for stderr (tell_provider). */
    pgw_notice_channel failed_on;
    bool gave_up;
    char failure[PGW_ERR_MSG_MAX];
} reach_info;

/* The channels in the order of stats.sent and the per-channel lines. */
static const pgw_notice_channel CHANNELS[] = {PGW_CHANNEL_MP, PGW_CHANNEL_OA, PGW_CHANNEL_SMS};
#define N_CHANNELS (sizeof(CHANNELS) / sizeof(CHANNELS[0]))
PGW_STATIC_ASSERT(N_CHANNELS == PGW_NOTIFY_CHANNELS, "a channel a slot of stats.sent");
PGW_STATIC_ASSERT(PGW_NOTIFY_BATCH <= PGW_STORE_RENEW_MAX, "a batch renewed in one statement");

/* A channel's index in CHANNELS. */
static size_t channel_index(pgw_notice_channel ch)
{
    size_t i = 0;
    while (i < N_CHANNELS && CHANNELS[i] != ch)
        i++;
    PGW_ASSERT(i < N_CHANNELS); /* never PGW_CHANNEL_NONE */
    return i;
}

/* What one attempt on one channel came to. */
typedef enum attempt {
    SENT,      /* accepted: provider_id set */
    RETRY,     /* transient: the same channel later */
    NEXT,      /* this channel refuses this member (no quota, not following): the next one now */
    GIVE_UP,   /* this channel failed for good (a bad template, our configuration): the next one */
    DEFER,     /* an SMS in quiet hours, or over a number's limit: later, not an attempt */
    QUOTA_DAY, /* WeChat's daily quota (45009): the next one now, else this one tomorrow */
    UNSENT,    /* its mark not made, the database busy (not_marked): later, not an attempt */
} attempt;

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static void count(pgw_notifier *n, uint64_t *field)
{
    pthread_mutex_lock(&n->lock);
    (*field)++;
    pthread_mutex_unlock(&n->lock);
}

/* A notice deferred (its attempt uncounted) for the channel(s) it waits
 * on, by stats.deferred's slots: a wait for both WeChat channels' quota
 * counts under the mini program's, a read failed before any channel under
 * none. Regression: one count, shown as SMS's, held WeChat's 45009 waits
 * and marks not made too. */
static void count_deferred(pgw_notifier *n, unsigned channels)
{
    size_t i = (channels & PGW_CHANNEL_MP) != 0    ? 0
               : (channels & PGW_CHANNEL_OA) != 0  ? 1
               : (channels & PGW_CHANNEL_SMS) != 0 ? 2
                                                   : 3;
    count(n, &n->stats.deferred[i]);
}

/* Records why an attempt failed, cut on a character boundary (a provider's
 * Chinese message cut inside a character would not be valid JSON later). */
#define ELLIPSIS "\xe2\x80\xa6"

/*
 * How much of `text` (valid UTF-8, longer than max) goes before an
 * ELLIPSIS so that both fit `max` bytes: up to the last space that fits,
 * else (a Chinese message, one long word in the second half) to a
 * character's end. Regression: a cause cut mid-word ("...blockl") read
 * as the provider's own words.
 */
static size_t cut_words(const char *text, size_t max)
{
    PGW_ASSERT(max > sizeof(ELLIPSIS) - 1);
    size_t keep = pgw_utf8_prefix(text, max - (sizeof(ELLIPSIS) - 1));
    size_t at = keep;
    while (at > keep / 2 && text[at] != ' ')
        at--;
    at = text[at] == ' ' ? at : keep;
    while (at > 0 && text[at - 1] == ' ')
        at--;
    return at;
}

static void set_error(pgw_notice *nt, const char *channel, const char *msg)
{
    char text[PGW_NOTICE_ERROR_MAX + 8]; /* past the cut: whether a word ends there */
    int full = snprintf(text, sizeof(text), "%s%s%s", channel, channel[0] ? ": " : "", msg);
    PGW_ASSERT(full >= 0); /* longer than text is cut here, as meant */
    size_t keep = pgw_utf8_prefix(text, PGW_NOTICE_ERROR_MAX);
    bool cut = text[keep] != '\0';
    keep = cut ? cut_words(text, PGW_NOTICE_ERROR_MAX) : keep;
    snprintf(nt->last_error, PGW_NOTICE_ERROR_MAX + 1, "%.*s%s", (int)keep, text,
             cut ? ELLIPSIS : "");
}

/*
 * Whether the store's failure `rc`, before any request of an attempt left
 * (its read, a request's mark), passes by itself, so that the attempt
 * need not count (not_sent): the database busy or out of reach
 * (PGW_EUNAVAILABLE: SQLite busy or locked; PostgreSQL's lock timeout,
 * deadlock, serialization failure, a connection lost or a server going
 * down; a mark that took over MARK_WAIT_S), or our own disk full
 * (full(): the gateway's failure, not the notice's; logged). Anything else
 * (PGW_EIO: a statement the database refused, a trigger; the store's own
 * errors, a merge chain that loops; a kind this build does not know) comes
 * again at every retry: counted, it ends dead after
 * notify.retry.max_attempts instead of waiting for ever. Regressions:
 * every such failure was uncounted, and the notice stayed pending for
 * good; a full disk counted, and notices died of the gateway's disk.
 */
static bool full(const courier *c, int rc)
{
    return rc == PGW_EIO && pgw_store_failed_on_space(c->store);
}

static bool passes(const courier *c, int rc)
{
    return rc == PGW_EUNAVAILABLE || full(c, rc);
}

/* The line pgw_log_tell and the like said is to be written: "pointsgw:
 * LINE: why", or "pointsgw: LINE works again", with the count of the
 * lines held back, *unsaid. `why` is "" where no failure can be said.
 * The count by its address: read here, after the limit's call set it,
 * even in say(pgw_log_tell(..., &unsaid), ..., &unsaid). Regression: by
 * value, it was read (0) before that call (the order of a call's
 * arguments is unspecified; GCC went right to left), and every "works
 * again" of tell_idle, tell_later and tell_stopped lost its count. */
static void say(pgw_log_say said, const char *line, const char *why, const uint64_t *unsaid)
{
    char text[PGW_LOG_LINE_MAX];
    pgw_log_line(said, line, why, *unsaid, text);
    if (text[0] != '\0')
        fputs(text, stderr);
}

/*
 * A kind of line of the store failing, `said` (core/log_limit.h
 * pgw_log_tell), at courier `who`: `err` a failure (NULL: what failed got
 * through), `line` what failed, or worked again. A database down, locked
 * or out of disk fails every poll of every courier, every record of a
 * batch, every attempt, and a line each would bury the log (regressions:
 * a line at each poll, some 40 in 2 s; one per notice). "Works again"
 * only once every courier that failed got through since (said_kind), and
 * the minute of the last line is over: a store failing every other poll
 * would say two lines a failure. The line is written under the lock, in
 * the order the limit said them. Regression: written after it, a
 * courier's "works again" went after another's newer failure, the log's
 * last word that the outbox worked while it failed.
 */
static void tell(pgw_notifier *n, said_kind *said, size_t who, const char *line, const pgw_err *err)
{
    PGW_ASSERT(who < PGW_NOTIFY_THREADS_MAX);
    int64_t now = pgw_monotonic_s(); /* before the lock: no call under it but the line's */
    uint64_t unsaid = 0, bit = (uint64_t)1 << who;
    pthread_mutex_lock(&n->said_lock);
    said->failing = err != NULL ? said->failing | bit : said->failing & ~bit;
    said->held = err == NULL && said->failing != 0; /* another courier still fails */
    pgw_log_say told =
        said->held ? PGW_LOG_QUIET
                   : pgw_log_tell(&said->limit, now, err != NULL ? err->msg : NULL, &unsaid);
    say(told, line, err != NULL ? err->msg : "", &unsaid);
    pthread_mutex_unlock(&n->said_lock);
}

/*
 * Courier `who` has nothing of `said`'s kind in hand (its claim got no
 * notice: records and renewals come with notices only): its failure is
 * no longer one of now, and, the last one gone, another's success held
 * meanwhile is told (tell). Regression: a courier whose record or
 * renewal (rare) failed stayed failing until it made one again, which
 * one the notices pass by never does: "works again" never came, nor at
 * the stop, while the others recorded and renewed.
 */
static void tell_idle(pgw_notifier *n, said_kind *said, size_t who, const char *what)
{
    PGW_ASSERT(who < PGW_NOTIFY_THREADS_MAX);
    int64_t now = pgw_monotonic_s();
    uint64_t unsaid = 0, bit = (uint64_t)1 << who;
    pthread_mutex_lock(&n->said_lock);
    if ((said->failing & bit) != 0) {
        said->failing &= ~bit;
        if (said->failing == 0 && said->held) {
            said->held = false;
            say(pgw_log_tell(&said->limit, now, NULL, &unsaid), what, "", &unsaid);
        }
    }
    pthread_mutex_unlock(&n->said_lock);
}

/* Nothing of `said`'s kind now: its "works again" if it got through in
 * the minute of its failure and that minute is over (pgw_log_later: a
 * record, a renewal come with notices only, and a quiet mall left the
 * failure the last word; regression). */
static void tell_later(pgw_notifier *n, said_kind *said, const char *what)
{
    int64_t now = pgw_monotonic_s();
    uint64_t unsaid = 0;
    pthread_mutex_lock(&n->said_lock);
    say(pgw_log_later(&said->limit, now, &unsaid), what, "", &unsaid);
    pthread_mutex_unlock(&n->said_lock);
}

/* Transient failures in a row of a channel's provider (a timeout, a 5xx)
 * before they are told: one is a hiccup the retry takes care of. */
#define FAILS_TOLD 5

/*
 * Tells stderr of the attempt's provider failure (r->failed_on; none:
 * nothing), by its channel's limit (core/log_limit.h: a line a minute for
 * a cause, the provider's words, with the count held back): always when
 * the notice died of it or the channel gave up on it (a wrong secret, a
 * template refused: every notice fails so), a transient one from the
 * FAILS_TOLD-th in a row. "sms: notice 42 dead: SMS tencent:
 * AuthFailure.SignatureFailure: ...": the channel, the notice, the
 * provider's code and message, never the member's number, openid or the
 * message's text (provider_failed). Regression: a provider failing every
 * send was silent on stderr; only pgw_notifications_total{outcome="dead"}
 * told that every member's notice was lost.
 */
static void tell_provider(pgw_notifier *n, const pgw_notice *nt, const reach_info *r)
{
    if (r->failed_on == PGW_CHANNEL_NONE)
        return;
    size_t i = channel_index(r->failed_on);
    bool dead = strcmp(nt->state, "dead") == 0;
    int64_t now = pgw_monotonic_s();
    uint64_t unsaid = 0;
    pthread_mutex_lock(&n->said_lock);
    uint64_t row = ++n->fails_in_a_row[i];
    if (dead || r->gave_up || row >= FAILS_TOLD) {
        char what[128];
        const char *name = pgw_notice_channel_name(CHANNELS[i]);
        if (dead || r->gave_up)
            snprintf(what, sizeof(what), "%s: notice %lld %s", name, (long long)nt->id,
                     dead ? "dead" : "given up there");
        else
            snprintf(what, sizeof(what), "%s: notice %lld to be retried, %llu failures in a row",
                     name, (long long)nt->id, (unsigned long long)row);
        pgw_log_say told = pgw_log_tell(&n->channel_said[i].limit, now, r->failure, &unsaid);
        say(told, what, r->failure, &unsaid);
    }
    pthread_mutex_unlock(&n->said_lock);
}

/* A send by channel ch got through: its failures in a row end, and a
 * failure told says it works again (pgw_log_tell: once the minute of its
 * last line is over; else tell_later or tell_stopped say it). */
static void tell_provider_works(pgw_notifier *n, pgw_notice_channel ch)
{
    size_t i = channel_index(ch);
    int64_t now = pgw_monotonic_s();
    uint64_t unsaid = 0;
    pthread_mutex_lock(&n->said_lock);
    n->fails_in_a_row[i] = 0;
    if (!pgw_log_idle(&n->channel_said[i].limit)) {
        pgw_log_say told = pgw_log_tell(&n->channel_said[i].limit, now, NULL, &unsaid);
        say(told, pgw_notice_channel_name(ch), "", &unsaid);
    }
    pthread_mutex_unlock(&n->said_lock);
}

/* The couriers stopped (joined: no lock): what got through since its
 * failure's line says so now, the minute over or not (pgw_log_stopping),
 * or the failure stays the log's last word. An attempt counted is no
 * kind that works again: a notice's next attempt is its own. */
static void tell_stopped(pgw_notifier *n)
{
    struct {
        said_kind *said;
        const char *what;
    } kinds[] = {{&n->claims_said, "outbox"},
                 {&n->sweep_said, "outbox, lapsed claims"},
                 {&n->record_said, "recording notices"},
                 {&n->renew_said, "renewing notice claims"}};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        uint64_t unsaid = 0;
        say(pgw_log_stopping(&kinds[i].said->limit, &unsaid), kinds[i].what, "", &unsaid);
    }
    for (size_t i = 0; i < N_CHANNELS; i++) {
        uint64_t unsaid = 0;
        pgw_log_say told = pgw_log_stopping(&n->channel_said[i].limit, &unsaid);
        say(told, pgw_notice_channel_name(CHANNELS[i]), "", &unsaid);
    }
}

/* The store's failure `rc` before a request left, the attempt `later`
 * (not counted) or not. One that counts is logged in full: it will come
 * again, and an operator must hear of it before the notices die (within
 * bounds: regression, 24 lines for 12 notices). So is a full disk, which
 * the operator must free: the notices wait for it. A busy database is
 * not: it would fill the log. */
static void log_failure(const courier *c, const pgw_notice *nt, int rc, bool later,
                        const pgw_err *err)
{
    bool no_room = full(c, rc);
    if (later && !no_room)
        return;
    char line[96];
    snprintf(line, sizeof(line), "notice %lld, its attempt %s", (long long)nt->id,
             no_room ? "not counted, waits for room on the disk" : "counted");
    tell(c->n, &c->n->counted_said, c->index, line, err);
}

/* The first place from `at` on where `name` stands alone in `msg`, not as
 * part of a word or a longer path (a relative sqlite:data in "database is
 * locked"); NULL when there is none. */
static const char *name_in(const char *msg, const char *at, const char *name, size_t name_len)
{
    for (const char *hit = strstr(at, name); hit != NULL; hit = strstr(hit + 1, name)) {
        char before = hit == msg ? ' ' : hit[-1], after = hit[name_len];
        if (strchr(" \"'(", before) != NULL &&
            (after == '\0' || strchr(": \"'),;.-", after) != NULL))
            return hit;
    }
    return NULL;
}

/*
 * Records the store's failure in last_error without the database's name:
 * GET /v1/notifications shows last_error to API keys, and a file's path or
 * a PostgreSQL URL (a user name in it) is the operator's, not theirs; the
 * log has the message whole (log_failure). "NAME: " goes, and a NAME left
 * is "the database". Regression: "/var/lib/pointsgw/log.db: marking a
 * notice's SMS: ...", "postgresql://pointsgw@db.internal/...: ...".
 */
PGW_STATIC_ASSERT(PGW_ERR_MSG_MAX > PGW_NOTICE_ERROR_MAX + 1,
                  "a cut text is cut again by set_error");
static void set_store_error(const pgw_store *store, pgw_notice *nt, const char *channel,
                            const char *msg)
{
    const char *name = pgw_store_name(store);
    char text[PGW_ERR_MSG_MAX];
    size_t used = 0, name_len = strlen(name);
    const char *at = msg, *hit;
    bool cut = false; /* text full: past PGW_NOTICE_ERROR_MAX, which set_error keeps */
    while (!cut && name_len > 0 && (hit = name_in(msg, at, name, name_len)) != NULL) {
        bool prefix = strncmp(hit + name_len, ": ", 2) == 0;
        int len = snprintf(text + used, sizeof(text) - used, "%.*s%s", (int)(hit - at), at,
                           prefix ? "" : "the database");
        cut = len < 0 || (size_t)len >= sizeof(text) - used;
        used += cut ? 0 : (size_t)len;
        at = hit + name_len + (prefix ? 2 : 0);
    }
    if (!cut)
        snprintf(text + used, sizeof(text) - used, "%s", at);
    set_error(nt, channel, text);
}

static int kind_of(const char *name)
{
    for (int k = 0; k < PGW_NOTICE_KINDS; k++) {
        if (strcmp(KIND_NAMES[k], name) == 0)
            return k;
    }
    return -1;
}

bool pgw_notify_possible(const pgw_config *cfg)
{
    const char *mp = cfg->wechat_mp.secret_env[0] ? getenv(cfg->wechat_mp.secret_env) : NULL;
    const char *oa = cfg->wechat_oa.secret_env[0] ? getenv(cfg->wechat_oa.secret_env) : NULL;
    const char *sms = cfg->sms.key_secret_env[0] ? getenv(cfg->sms.key_secret_env) : NULL;
    const char *sms_id = cfg->sms.key_id_env[0] ? getenv(cfg->sms.key_id_env) : NULL;
    return (cfg->wechat_mp.enabled && mp && mp[0]) || (cfg->wechat_oa.enabled && oa && oa[0]) ||
           (cfg->sms.enabled && sms && sms[0] && sms_id && sms_id[0]);
}

/* ---- whom the notice can reach ------------------------------------------------------ */

static int read_identities(courier *c, const char *member, reach_info *r, pgw_err *err)
{
    pgw_notifier *n = c->n;
    const pgw_config *cfg = n->o.cfg;
    pgw_identity_key ids[3];
    size_t count_ids = 0;
    int rc = pgw_store_member_reach(c->store, member, cfg->wechat_mp.appid, cfg->wechat_oa.appid,
                                    ids, &count_ids, err);
    for (size_t i = 0; rc == PGW_OK && i < count_ids; i++) { /* the store matched the appids */
        const pgw_identity_key *k = &ids[i];
        if (k->kind == PGW_ID_MP_OPENID)
            snprintf(r->mp_openid, sizeof(r->mp_openid), "%.64s", k->lookup);
        else if (k->kind == PGW_ID_OA_OPENID)
            snprintf(r->oa_openid, sizeof(r->oa_openid), "%.64s", k->lookup);
        else if (k->kind == PGW_ID_PHONE)
            r->phone = *k;
    }
    OPENSSL_cleanse(ids, sizeof(ids));
    return rc;
}

/* WeChat keeps quota per openid, and a merged member holds several: the
 * message goes to one that has quota (store.h pgw_store_mp_target), not
 * to whichever the member's identities name first. */
static int has_quota(courier *c, const char *member, reach_info *r, bool *yes, pgw_err *err)
{
    char to[PGW_OPENID_MAX + 1], from[PGW_OPENID_MAX + 1];
    int rc = pgw_store_mp_target(c->store, member, c->n->o.cfg->wechat_mp.appid, r->mp_template, to,
                                 from, err);
    *yes = rc == PGW_OK && to[0] != '\0';
    if (*yes) {
        snprintf(r->mp_openid, sizeof(r->mp_openid), "%s", to);
        snprintf(r->quota_openid, sizeof(r->quota_openid), "%s", from);
    }
    return rc;
}

static int member_reach(courier *c, const pgw_notice *notice, int kind, reach_info *r, pgw_err *err)
{
    pgw_notifier *n = c->n;
    memset(r, 0, sizeof(*r));
    const pgw_config *cfg = n->o.cfg;
    r->mp_template = cfg->wechat_mp.templates[kind];
    r->oa_template = cfg->wechat_oa.templates[kind];
    r->sms_template = cfg->sms.templates[kind];
    bool quota = false, follows = false;
    int rc = read_identities(c, notice->member, r, err);
    if (rc == PGW_OK && r->phone.kind == PGW_ID_PHONE)
        rc = pgw_store_sms_opt_out(c->store, notice->member, &r->opted_out, err);
    if (rc == PGW_OK && r->mp_openid[0] && r->mp_template[0])
        rc = has_quota(c, notice->member, r, &quota, err);
    if (rc == PGW_OK && r->oa_openid[0])
        rc = pgw_store_member_follows(c->store, notice->member, &follows, err);
    r->reach.mp = n->o.mp_ready && r->mp_openid[0] && r->mp_template[0] && quota;
    r->reach.oa = n->o.oa_ready && r->oa_openid[0] && r->oa_template[0] && follows;
    r->reach.sms = n->o.sms != NULL && r->phone.kind == PGW_ID_PHONE && r->phone.sealed_len > 0 &&
                   r->sms_template[0] && !r->opted_out;
    return rc;
}

/* ---- sending --------------------------------------------------------------------------- */

/* "2026-11-28 21:40" in the mall's zone: the form WeChat's time keyword takes. */
static void local_time(const pgw_notifier *n, int64_t t, char out[32])
{
    char rfc[PGW_RFC3339_MAX] = "";
    if (pgw_format_rfc3339(t, &n->o.cfg->rules.tz, rfc, sizeof(rfc)) != PGW_OK || strlen(rfc) < 16)
        snprintf(rfc, sizeof(rfc), "1970-01-01T00:00");
    snprintf(out, 32, "%.10s %.5s", rfc, rfc + 11);
}

static attempt outcome_of(pgw_wx_outcome o)
{
    return o == PGW_WX_DONE           ? SENT
           : o == PGW_WX_RETRY        ? RETRY
           : o == PGW_WX_FALL_THROUGH ? NEXT
           : o == PGW_WX_QUOTA_DAY    ? QUOTA_DAY
                                      : GIVE_UP;
}

/*
 * Marks nt as one a message of WeChat channel ch may have reached (its
 * answer lost: WeChat may have handled it), for good (core/notice.h
 * PGW_NOTICE_WX_MAY_HAVE_GONE): its retry goes by ch only
 * (route_excluded), stored with the attempt. Regression: the retry chose
 * its channel anew, and a member whose unit the lost send used, or whom
 * WeChat refused then, was told a second time by SMS.
 */
static void wx_may_have_gone(pgw_notice *nt, pgw_notice_channel ch)
{
    nt->excluded |= (int64_t)((unsigned)ch << PGW_NOTICE_WX_GONE_SHIFT);
}

/*
 * Marked leaving (core/notice.h PGW_NOTICE_SMS_MAY_HAVE_GONE,
 * PGW_NOTICE_WX_MAY_HAVE_GONE), a request must be answered while its
 * claim's lease still runs: the store refuses the mark otherwise
 * (pgw_store_sms_leaving, pgw_store_wx_leaving), and it does not leave.
 * The bound counts from before the mark, so it holds the mark's own wait
 * too (a lock behind the writer): MARK_WAIT_S at most, or the request
 * stays. The store gives up the wait then (PGW_STORE_MARK_WAIT_S: on
 * PostgreSQL a lock_timeout, on SQLite the busy handler's bound); the
 * check in mark_leaving holds whatever else took the time. keep_leases
 * leaves room for both (LEASE_MARGIN_S).
 */
#define MARK_WAIT_S        PGW_STORE_MARK_WAIT_S /* the store's bound on PostgreSQL */
#define SMS_LEASE_NEEDED_S ((PGW_HTTP_TIMEOUT_MS + 999) / 1000 + MARK_WAIT_S)
#define WX_LEASE_NEEDED_S                                                                          \
    ((PGW_WX_REQUEST_CALLS * PGW_WX_CALL_TIMEOUT_MS + 999) / 1000 + MARK_WAIT_S)

/*
 * Marks nt's request by channel ch leaving, in the store, within
 * MARK_WAIT_S: a courier that dies while it is on its way leaves a claim
 * whose message may have gone, and the lapsed sweep cannot tell it from
 * one never tried but by this mark. Regression: a WeChat message's mark
 * was recorded with the attempt only, and a claim lapsed while its
 * subscribe message left came back with its channel chosen anew: told a
 * second time by SMS.
 */
static int mark_leaving(courier *c, const pgw_notice *nt, pgw_notice_channel ch, pgw_err *err)
{
    int64_t asked_us = pgw_monotonic_us();
    int rc =
        ch == PGW_CHANNEL_SMS
            ? pgw_store_sms_leaving(c->store, c->owner, nt, now_s(), SMS_LEASE_NEEDED_S, err)
            : pgw_store_wx_leaving(c->store, c->owner, nt, ch, now_s(), WX_LEASE_NEEDED_S, err);
    if (rc == PGW_OK && pgw_monotonic_us() - asked_us > (int64_t)MARK_WAIT_S * 1000000)
        rc = pgw_err_set(err, PGW_EUNAVAILABLE,
                         "marking the request took over %d s: its lease may not outlast it",
                         MARK_WAIT_S);
    return rc;
}

/*
 * A request whose mark failed (rc) does not leave: later, uncounted, when
 * the failure passes (UNSENT: passes(), or the claim no longer ours to
 * send, PGW_ESTATE: its lease ran out and it may be another's, whose
 * attempt it is; a record of it is refused then anyway, finish_batch); an
 * attempt failed, counted (RETRY), when it comes again.
 */
static attempt not_marked(courier *c, pgw_notice *nt, const char *channel, int rc,
                          const pgw_err *err)
{
    bool later = passes(c, rc) || rc == PGW_ESTATE;
    set_store_error(c->store, nt, channel, err->msg);
    log_failure(c, nt, rc, later, err);
    return later ? UNSENT : RETRY;
}

/* Whether `p` starts a number as the SMS adapter masks it, "138****8000". */
static bool masked_at(const char *p)
{
    for (size_t i = 0; i < 11; i++) { /* a NUL fails either test: nothing read past it */
        bool star = i >= 3 && i < 7;
        if (star ? p[i] != '*' : (p[i] < '0' || p[i] > '9'))
            return false;
    }
    return true;
}

/*
 * Records a provider's failure `msg` of channel ch, an attempt `a`
 * (RETRY, GIVE_UP; others are no failure of the provider's), for
 * tell_provider: without the member's number (the SMS adapter's "to
 * 138****8000" goes, a masked number elsewhere in the provider's words is
 * "***") and without WeChat's request ids (pgw_wx_without_request_ids):
 * stderr is the operator's, and a line's cause must be the same for every
 * member and request, or each failure is news and the limit lets 10 a
 * minute by.
 * The adapters' messages carry no openid and no keyword of the message.
 */
static void provider_failed(reach_info *r, pgw_notice_channel ch, attempt a, const char *msg)
{
    if (a != RETRY && a != GIVE_UP)
        return;
    r->failed_on = ch;
    r->gave_up = a == GIVE_UP;
    char cause[PGW_ERR_MSG_MAX];
    pgw_wx_without_request_ids(msg, cause, sizeof(cause));
    size_t used = 0, cap = sizeof(r->failure);
    for (const char *p = cause; *p != '\0' && used + 4 < cap;) {
        if (strncmp(p, " to ", 4) == 0 && masked_at(p + 4)) {
            p += 4 + 11;
        } else if (masked_at(p)) {
            memcpy(r->failure + used, "***", 3);
            used += 3;
            p += 11;
        } else {
            r->failure[used++] = *p++;
        }
    }
    r->failure[used] = '\0';
    r->failure[pgw_utf8_prefix(r->failure, strlen(r->failure))] = '\0'; /* a cut character */
}

/* A WeChat message's id as the notice's provider_id: "" when WeChat named
 * none (pgw_wx_msgid's 0: no msgid, or not an integer), not "0", which
 * read as an id of WeChat's (test_a_send_without_a_msgid_keeps_no_provider_id). */
static void wx_provider_id(pgw_notice *nt, int64_t msgid)
{
    if (msgid > 0)
        snprintf(nt->provider_id, sizeof(nt->provider_id), "%lld", (long long)msgid);
    else
        nt->provider_id[0] = '\0';
}

/* What last_error adds to an answer a provider gave after handling a send
 * that we could not read (send_failed). */
#define UNREAD_TOLD "; it may have been sent: not sent again"

/*
 * The one rule for a send of any channel ch whose request left and whose
 * answer came but could not be read (`unread`: pgw_wx_reply.unread,
 * pgw_sms_result.unread: HTTP 200 not understood or over the bound;
 * an oversized answer of another status is that status's failure): the
 * provider handled the request, the message most likely
 * went, and a repeat would tell the member twice (an SMS paid twice, a
 * subscribe message's one-time unit spent twice; no provider here
 * de-duplicates but the official account's client_msg_id). So it is given
 * up, not retried (GIVE_UP, whatever the adapter said), and the caller's
 * may-have-gone mark keeps every other channel out: the notice ends dead,
 * its last_error and the provider's line saying that the member may have
 * it. Any other failure `a` (RETRY, GIVE_UP) is recorded as it is.
 * Regression: WeChat gave such a send up and SMS retried it, the member
 * sent the same SMS twice.
 */
static attempt send_failed(pgw_notice *nt, reach_info *r, pgw_notice_channel ch, attempt a,
                           bool unread, const char *msg)
{
    char why[PGW_ERR_MSG_MAX + sizeof(UNREAD_TOLD)];
    snprintf(why, sizeof(why), "%s%s", msg, unread ? UNREAD_TOLD : "");
    set_error(nt, pgw_notice_channel_name(ch), why);
    if (unread)
        a = GIVE_UP;
    provider_failed(r, ch, a, why);
    return a;
}

/* A WeChat channel's failure: send_failed, unread when WeChat answered
 * after the send with what we could not read. */
static attempt wx_failed(pgw_notice *nt, reach_info *r, pgw_notice_channel ch, attempt a,
                         const pgw_wx_reply *reply, const char *msg)
{
    return send_failed(nt, r, ch, a, reply->maybe_done && reply->unread, msg);
}

/*
 * Whether WeChat may have handled the send of channel ch whose reply is
 * `reply` (pgw_wx_reply.maybe_done): no answer came, or one not read.
 * Marks nt so (wx_may_have_gone), for good, and as one the attempt may
 * have reached the member, whether it is retried (RETRY: by ch only) or
 * given up (GIVE_UP after an answer not read: ch is not asked again, and
 * the notice ends dead with no channel left).
 */
static bool wx_unknown(pgw_notice *nt, pgw_notice_channel ch, const pgw_wx_reply *reply)
{
    if (!reply->maybe_done)
        return false;
    nt->may_have_reached = true; /* kept over the next channels */
    wx_may_have_gone(nt, ch);
    return true;
}

/*
 * The mini program's subscribe message. The unit of quota it uses is
 * counted when the outcome is recorded (finish_batch()), not reserved before
 * the call: that would be one more transaction per notice, and WeChat
 * keeps the real count anyway. Two notices racing for a member's last
 * unit both go; WeChat refuses one (43101) and it falls through.
 */
static attempt send_mp(courier *c, pgw_notice *nt, reach_info *r, int kind)
{
    pgw_notifier *n = c->n;
    pgw_err err;
    char points[24], balance[24], when[32];
    snprintf(points, sizeof(points), "%lld", (long long)nt->points);
    /* A member owing points has a balance below 0, and a number keyword
     * takes no sign (WeChat answers 47003): such a member has 0 points. */
    snprintf(balance, sizeof(balance), "%lld", (long long)pgw_max64(nt->balance, 0));
    local_time(n, nt->about_at, when);
    bool tier = nt->detail[0] != '\0'; /* tier_changed: the tier's name instead */
    pgw_wx_keyword kw[] = {{"thing1", tier ? nt->detail : n->o.cfg->mall_name},
                           {"number2", points},
                           {"number3", balance},
                           {"time4", when}};
    int64_t msgid = 0;
    pgw_wx_reply reply;
    int marked = mark_leaving(c, nt, PGW_CHANNEL_MP, &err);
    if (marked != PGW_OK) /* a claim lost is not recorded (finish_batch) */
        return not_marked(c, nt, "wechat_mp", marked, &err);
    const pgw_wechat_channel *mp = &n->o.cfg->wechat_mp;
    int rc = pgw_mp_send_subscribe(n->o.wechat, mp->appid, r->mp_openid, r->mp_template, mp->page,
                                   mp->mp_state, kw, 4, &msgid, &reply, &err);
    attempt a = outcome_of(pgw_wx_classify(rc, &reply));
    /* Sent, or no answer (a timeout may have been a send), or one not read
     * (WeChat handled it): a unit used. 43101: WeChat has none left,
     * whatever we counted. Refused otherwise, or never sent (no token to
     * send with): the unit is still the member's; so after 43019 (the
     * member blocked the mini program), a PGW_ESTATE too, but no word on
     * the quota: unblocked, their units are WeChat's to spend again. */
    bool unknown = wx_unknown(nt, PGW_CHANNEL_MP, &reply);
    bool none_left = rc == PGW_ESTATE && reply.errcode == 43101;
    r->quota = a == SENT || unknown ? QUOTA_USED : none_left ? QUOTA_NONE_LEFT : QUOTA_KEPT;
    if (rc == PGW_OK)
        wx_provider_id(nt, msgid);
    else
        a = wx_failed(nt, r, PGW_CHANNEL_MP, a, &reply, err.msg);
    (void)kind; /* one keyword layout for every kind (README) */
    return a;
}

/* The official account's template message; the notice id de-duplicates a resend. */
static attempt send_oa(courier *c, pgw_notice *nt, reach_info *r, int kind)
{
    pgw_notifier *n = c->n;
    char points[24], balance[24], when[32], msg_id[32];
    snprintf(points, sizeof(points), "%lld", (long long)nt->points);
    snprintf(balance, sizeof(balance), "%lld", (long long)nt->balance);
    snprintf(msg_id, sizeof(msg_id), "pgw-notice-%lld", (long long)nt->id);
    local_time(n, nt->about_at, when);
    pgw_wx_keyword kw[] = {{"first", KIND_TITLES[kind]},
                           {"keyword1", nt->detail[0] ? nt->detail : points},
                           {"keyword2", balance},
                           {"keyword3", when},
                           {"remark", n->o.cfg->mall_name}};
    const pgw_wechat_channel *oa = &n->o.cfg->wechat_oa;
    pgw_oa_template t = {.openid = r->oa_openid,
                         .template_id = r->oa_template,
                         .jump_appid = oa->mp_jump_appid,
                         .jump_page = oa->page,
                         .client_msg_id = msg_id,
                         .kw = kw,
                         .n_kw = 5};
    int64_t msgid = 0;
    pgw_wx_reply reply;
    pgw_err err;
    int marked = mark_leaving(c, nt, PGW_CHANNEL_OA, &err);
    if (marked != PGW_OK) /* as for the mini program */
        return not_marked(c, nt, "wechat_oa", marked, &err);
    int rc = pgw_oa_send_template(n->o.wechat, oa->appid, &t, &msgid, &reply, &err);
    attempt a = outcome_of(pgw_wx_classify(rc, &reply));
    if (rc == PGW_OK)
        wx_provider_id(nt, msgid);
    else
        a = wx_failed(nt, r, PGW_CHANNEL_OA, a, &reply, err.msg);
    (void)wx_unknown(nt, PGW_CHANNEL_OA, &reply);
    return a;
}

/* At most `chars` characters of `text` (valid UTF-8) into `out` (as large
 * as text), without the spaces a cut leaves at its end: a tier's display
 * name may be longer than an SMS variable takes (Tencent: 12), and a
 * notice cut short still beats a notice dead. */
static void cut_to_chars(const char *text, size_t chars, char *out)
{
    size_t at = 0, n;
    uint32_t cp;
    for (size_t i = 0; i < chars && (n = pgw_utf8_next(text + at, &cp)) > 0; i++)
        at += n;
    while (at > 0 && text[at - 1] == ' ')
        at--;
    memcpy(out, text, at);
    out[at] = '\0';
}

/* Whether an SMS may have reached the member: the request left and the
 * provider did not answer that it took nothing (pgw_sms_result.refused: a
 * throttle such as RequestLimitExceeded is a refusal, where the outcome
 * says only "retry"). */
static bool sms_may_have_gone(const pgw_sms_result *res)
{
    return res->attempted && !res->refused;
}

/* An SMS, outside quiet hours; the notice id is the provider's out id. */
static attempt send_sms(courier *c, pgw_notice *nt, reach_info *r, int64_t now)
{
    pgw_notifier *n = c->n;
    const pgw_notify_config *q = &n->o.cfg->notify;
    int64_t at =
        pgw_notice_sms_time(now, n->o.cfg->rules.tz.offset_s, q->quiet_start_min, q->quiet_end_min);
    if (at > now) {
        nt->due_at = at;
        return DEFER;
    }
    char phone[32], points[24], balance[24], out_id[32];
    pgw_err err;
    if (pgw_vault_phone(n->o.vault, &r->phone, phone, sizeof(phone), &err) != PGW_OK) {
        set_error(nt, "sms", err.msg);
        return NEXT;
    }
    /* The slot is taken before the send (two couriers must not both pass
     * for one number) and given back if the request never left. */
    int64_t retry_at = 0;
    int limited = pgw_sms_limiter_take(n->limiter, phone, now, &retry_at, &err);
    if (limited != PGW_OK) {
        OPENSSL_cleanse(phone, sizeof(phone));
        set_error(nt, "sms", err.msg);
        if (limited != PGW_ERISK)
            return GIVE_UP; /* not a number the limiter (or a provider) takes */
        nt->due_at = retry_at > now ? retry_at : now + 1;
        return DEFER; /* the number's frequency limit: later, not an attempt */
    }
    snprintf(points, sizeof(points), "%lld", (long long)nt->points);
    snprintf(balance, sizeof(balance), "%lld", (long long)nt->balance);
    snprintf(out_id, sizeof(out_id), "pgw-notice-%lld", (long long)nt->id);
    /* "2026-12-31": the last day the points can be used. about_at is the
     * moment they expire, the next day's 00:00: a reminder naming that day
     * told members they had a day they did not have. */
    char day[32];
    local_time(n, nt->about_at - 1, day);
    day[10] = '\0';
    pgw_sms_param params[] = {{"points", points}, {"balance", balance}, {"date", day}};
    char tier[sizeof(nt->detail)];
    cut_to_chars(nt->detail, pgw_sms_param_chars_max(n->o.sms), tier);
    if (tier[0] != '\0') /* tier_changed: the tier's name, then the balance */
        params[0] = (pgw_sms_param){"tier", tier};
    pgw_sms_message msg = {.phone = phone,
                           .template_id = r->sms_template,
                           .params = params,
                           .n_params = strcmp(nt->kind, "points_expiring") == 0 ? 3 : 2,
                           .out_id = out_id};
    /* Marked in the row before the request leaves: a courier that dies
     * now leaves a claim whose SMS may have gone, and the lapsed sweep
     * cannot tell it from one never tried but by this mark. */
    int marked = mark_leaving(c, nt, PGW_CHANNEL_SMS, &err);
    if (marked != PGW_OK) {
        pgw_sms_limiter_give_back(n->limiter, phone, now);
        OPENSSL_cleanse(phone, sizeof(phone));
        return not_marked(c, nt, "sms", marked, &err); /* as for the mini program */
    }
    pgw_sms_result res;
    int rc = pgw_sms_send(n->o.sms, &msg, &res, &err);
    if (!res.attempted) /* only a request that left uses a slot */
        pgw_sms_limiter_give_back(n->limiter, phone, now);
    OPENSSL_cleanse(phone, sizeof(phone));
    if (sms_may_have_gone(&res)) /* for good: no wake hurries it to WeChat (notice.h) */
        nt->excluded |= PGW_NOTICE_SMS_MAY_HAVE_GONE;
    /* Given up too (a code not known here): it may have gone, whatever the
     * channels after it do in this attempt. */
    nt->may_have_reached |= rc != PGW_OK && sms_may_have_gone(&res);
    if (rc == PGW_OK) {
        snprintf(nt->provider_id, sizeof(nt->provider_id), "%.64s", res.message_id);
        return SENT;
    }
    set_error(nt, "sms", err.msg);
    if (res.outcome == PGW_SMS_NUMBER_REFUSED)
        return NEXT; /* this member's number: a refusal, not a failure (notice.h) */
    if (res.outcome == PGW_SMS_RATE_LIMITED) {
        /* The provider's own limit for the number (codes sent meanwhile
         * count there, not in this limiter; marketing hours): retried in
         * seconds, a notice was dead long before a daily limit lifted.
         * Later, and not an attempt, as for the limiter's. */
        nt->due_at = now + (strstr(res.code, "ThirtySecond") != NULL ? 30 : 3600);
        return DEFER;
    }
    attempt a = res.outcome == PGW_SMS_RETRY ? RETRY : GIVE_UP;
    return send_failed(nt, r, PGW_CHANNEL_SMS, a, res.attempted && res.unread, err.msg);
}

/* ---- one notice ---------------------------------------------------------------------- */

/* Pending again, due after the backoff of nt's attempts so far. */
static void back_off(pgw_notifier *n, pgw_notice *nt, int64_t now)
{
    const pgw_notify_config *q = &n->o.cfg->notify;
    uint16_t jitter = 0;
    if (RAND_bytes((unsigned char *)&jitter, sizeof(jitter)) != 1)
        jitter = 500;
    int64_t ms = pgw_notice_backoff_ms(nt->attempts, q->retry_base_delay_ms, q->retry_max_delay_ms,
                                       (int32_t)(jitter % 1001));
    snprintf(nt->state, sizeof(nt->state), "pending");
    nt->due_at = now + (ms + 999) / 1000;
}

/* Pending again after a transient failure, with backoff; dead after the last attempt. */
static void schedule_retry(pgw_notifier *n, pgw_notice *nt, int64_t now)
{
    if (nt->attempts >= n->o.cfg->notify.retry_max_attempts) {
        snprintf(nt->state, sizeof(nt->state), "dead");
        count(n, &n->stats.dead);
        return;
    }
    back_off(n, nt, now);
    count(n, &n->stats.retried);
}

/*
 * A request whose mark was not made (mark_leaving), or an attempt whose
 * read failed before any request (prepare), for a failure that passes
 * (passes(): the database busy, past MARK_WAIT_S too, or our disk full),
 * sent nothing:
 * pending again with the same backoff, its attempt not counted, as for
 * claims not renewed (keep_leases). Regression: counted as a retry, a
 * database busy for a few seconds at each attempt brought notices to
 * dead, nothing sent. The backoff keeps a courier from asking a busy
 * database again at once.
 */
static void not_sent(pgw_notifier *n, pgw_notice *nt, pgw_notice_channel ch, int64_t now)
{
    back_off(n, nt, now);
    nt->attempts--;
    count_deferred(n, (unsigned)ch);
}

/* The WeChat channels a message of nt may have gone by (core/notice.h
 * PGW_NOTICE_WX_MAY_HAVE_GONE), as channel bits. */
static unsigned wx_gone(const pgw_notice *nt)
{
    return ((unsigned)nt->excluded & PGW_NOTICE_WX_MAY_HAVE_GONE) >> PGW_NOTICE_WX_GONE_SHIFT;
}

/*
 * The channels routing passes over for nt: those excluded; both WeChat
 * channels once an SMS of it may have reached the member (core/notice.h
 * PGW_NOTICE_SMS_MAY_HAVE_GONE: it stays on SMS, or ends with none left);
 * every channel but the WeChat one a message of it may have gone by
 * (PGW_NOTICE_WX_MAY_HAVE_GONE: it stays there, or ends with none left).
 * Regressions: a retry chose its channel anew, and a member who subscribed
 * or followed during the backoff got the subscribe message after the SMS,
 * told twice; a subscribe message whose answer was lost was followed by
 * the SMS of its retry. Derived, not stored: a wake reopens WeChat
 * channels only of a notice without the marks, and the marks are kept
 * for good.
 */
static unsigned route_excluded(const pgw_notice *nt)
{
    unsigned ex = (unsigned)nt->excluded, wx = wx_gone(nt);
    if ((ex & PGW_NOTICE_SMS_MAY_HAVE_GONE) != 0)
        ex |= PGW_CHANNEL_MP | PGW_CHANNEL_OA;
    if (wx != 0)
        ex |= (PGW_CHANNEL_MP | PGW_CHANNEL_OA | PGW_CHANNEL_SMS) & ~wx;
    return ex;
}

/*
 * WeChat's daily quota (45009) is the app's, not the notice's, and comes
 * back at WeChat's midnight. What deliver does then: in the first minute
 * of WeChat's day the quota is back already (pgw_wx_quota_back) and the
 * attempt is a retry's (RETRY). With a channel after it in the route (SMS,
 * most often) the notice goes that way at once (NEXT): "points arrived"
 * hours late helps nobody, and the route is the mall's choice. With none,
 * it waits for that midnight, pending, its attempt uncounted, for the same
 * channel (QUOTA_DAY: wait_for_quota): given up, it died; retried with
 * backoff, it would spend its attempts on a quota gone all day. So too
 * when the channels after it refuse the member in the same attempt
 * (deliver), or in a later one of a notice held or retried meanwhile
 * (quota_out_pending): WeChat still reaches them tomorrow.
 */
static attempt after_quota_day(pgw_notifier *n, pgw_notice *nt, const reach_info *r, int kind,
                               pgw_notice_channel ch, int64_t back, int64_t now)
{
    if (back <= now)
        return RETRY;
    if (pgw_notice_route(&r->reach, &n->o.cfg->notify.routes[kind],
                         route_excluded(nt) | (unsigned)ch) != PGW_CHANNEL_NONE)
        return NEXT;
    return QUOTA_DAY;
}

/* Pending until WeChat's quota is `back`, the attempt uncounted (above). */
static void wait_for_quota(pgw_notifier *n, pgw_notice *nt, int64_t channels, int64_t back)
{
    snprintf(nt->state, sizeof(nt->state), "pending");
    nt->due_at = back;
    nt->attempts--;
    count_deferred(n, (unsigned)channels);
}

/*
 * The time WeChat's daily quota of channel ch (MP or OA) comes back, when
 * a 45009 said it is gone (0: not gone); with `back` set, records it.
 * Every notice due until then would spend a call, and its time, on the
 * same 45009 (a mall past its quota at noon: each sale's notice).
 */
static int64_t wx_quota_gone(pgw_notifier *n, pgw_notice_channel ch, int64_t now, int64_t back)
{
    size_t i = ch == PGW_CHANNEL_MP ? 0 : 1;
    pthread_mutex_lock(&n->lock);
    if (back > now && back > n->wx_quota_back[i]) /* a slow call's older midnight stays out */
        n->wx_quota_back[i] = back;
    int64_t until = n->wx_quota_back[i] > now ? n->wx_quota_back[i] : 0;
    pthread_mutex_unlock(&n->lock);
    return until;
}

static attempt try_channel(courier *c, pgw_notice *nt, reach_info *r, int kind,
                           pgw_notice_channel ch, int64_t now)
{
    snprintf(nt->channel, sizeof(nt->channel), "%s", pgw_notice_channel_name(ch));
    if (ch == PGW_CHANNEL_SMS)
        return send_sms(c, nt, r, now);
    int64_t gone_until = wx_quota_gone(c->n, ch, now, 0);
    if (gone_until > 0) { /* not asked: 45009 again until then */
        char msg[96], when[32];
        local_time(c->n, gone_until, when);
        snprintf(msg, sizeof(msg), "45009: the daily quota is used up until %s (not asked again)",
                 when);
        set_error(nt, pgw_notice_channel_name(ch), msg);
        return QUOTA_DAY;
    }
    attempt a = ch == PGW_CHANNEL_MP ? send_mp(c, nt, r, kind) : send_oa(c, nt, r, kind);
    if (a == QUOTA_DAY)
        wx_quota_gone(c->n, ch, now, pgw_wx_quota_back(now));
    return a;
}

/* The balance a notice tells is the member's now, not when it was queued,
 * when the notice was made to wait (a coalescing window, a retry, quiet
 * hours, a backlog), or its member was merged since (`merged` found now,
 * nt->merged a merge that moved it to the survivor: the balance it was
 * queued with is the merged member's). One sent right away keeps the
 * balance its cause computed, and so does an arrival a later notice
 * hurried (pgw_store_enqueue_notice), on a retry too: it goes before that
 * notice, and read now, "+600, balance 450" would precede "-150, balance
 * 450". Either reads the balance when sent once the member has read
 * another balance newer than its own: one a notice read as it was sent
 * (a retry, say), or, for the hurried arrival, one a notice queued after
 * it told (the store marks it so: pgw_store_finish_notice; the courier,
 * in the rest of its batch: unmark_rest_of_batch). Not read for a notice
 * sent right away because the read is a member's lots, re-read from the
 * file by a courier whose cache the writer keeps invalidating, and at
 * 1,000 notices/s it made the couriers fall behind (bench_notify, p99
 * 2-3.5 s). */
static int current_balance(courier *c, pgw_notice *nt, bool merged, pgw_err *err)
{
    bool at_once = nt->due_at <= nt->created_at && now_s() - nt->created_at < PGW_NOTICE_AT_ONCE_S;
    /* A hurried arrival keeps its balance on a retry too, while marked: it
     * still goes before the notice that hurried it (H7: "+600, balance 0"
     * retried before a held "-150, balance 450"). */
    if (!merged && !nt->merged && !nt->read_past && (nt->hurried || (at_once && nt->attempts <= 1)))
        return PGW_OK;
    bool found = false;
    pgw_member_figures f;
    int rc = pgw_store_member_figures(c->store, nt->member, now_s(), &found, &f, err);
    if (rc == PGW_OK && found) /* not points past their expiry: the member has them no more */
        nt->balance = f.unexpired;
    /* Sent, it may tell a later balance than a notice of the member still
     * to go that was queued with its own: that one then reads too (the
     * rest of the batch: unmark_rest_of_batch; after it, the store:
     * pgw_store_finish_notice). */
    nt->read_when_sent = rc == PGW_OK && found;
    return rc;
}

/*
 * Before an attempt, in one read: the member followed through merges and
 * whom the notice can reach. (The claim's lease is the batch's business:
 * keep_leases.)
 */
static int prepare(courier *c, pgw_notice *nt, int kind, reach_info *r, pgw_err *err)
{
    int rc = pgw_store_begin_read(c->store, err);
    if (rc != PGW_OK)
        return rc;
    char queued_for[PGW_ID_MAX + 1];
    memcpy(queued_for, nt->member, sizeof(queued_for));
    rc = kind < 0 ? pgw_err_set(err, PGW_EINVAL, "unknown notice kind %s", nt->kind)
                  : pgw_store_survivor(c->store, nt->member, NULL, err); /* merged since? */
    if (rc == PGW_OK)
        rc = current_balance(c, nt, strcmp(queued_for, nt->member) != 0, err);
    if (rc == PGW_OK)
        rc = member_reach(c, nt, kind, r, err);
    if (rc == PGW_OK)
        rc = pgw_store_commit(c->store, err);
    if (rc != PGW_OK)
        pgw_store_rollback(c->store, NULL);
    return rc;
}

/*
 * A batch's claims stay ours while it is worked through: recorded only
 * after its last send, each attempt must still be leased then, or another
 * instance (or this one's sweep) could take it back and send it again.
 * Checked before each notice and before each try at the batch's record
 * (keep_leases_to_record): when less than LEASE_MARGIN_S is left, every
 * claim still held, sent or not, is renewed, each by a write of its own
 * that never waits for the write lock (pgw_store_renew_claims: the batch
 * at once, one wait for locks of at most MARK_WAIT_S in all). The margin
 * outlasts one notice at its slowest (NOTICE_SLOWEST_S): at 20 s, a notice
 * whose two WeChat channels each made four slow calls before its SMS took
 * 25 s, its lease lapsed, and the sweep gave it to a courier that sent it
 * again. A WeChat request keeps within its bound (client.h
 * PGW_WX_REQUEST_CALLS) whatever it waits on: counted as four calls, a
 * 10 s wait for another instance's token refresh was not, and took such a
 * notice past 60 s. A claim found lost is marked so: an unsent one is not
 * tried. A failure to renew loses the batch's rest the same way; what is
 * still ours of it is given back when the batch is recorded (record()).
 * `failed` is the line that says what follows a failure here (a record
 * is tried all the same: keep_leases_to_record). Regression: "the batch
 * stops" was said before a record too, though nothing stopped.
 */
#define NOTICE_SLOWEST_S /* two WeChat requests, one SMS */                                        \
    ((2 * PGW_WX_REQUEST_CALLS * PGW_WX_CALL_TIMEOUT_MS + PGW_HTTP_TIMEOUT_MS + 999) / 1000)
/* and the waits of the three requests' marks (MARK_WAIT_S), and a few
 * seconds over, which hold the renewal's own wait (at most MARK_WAIT_S in
 * all on either database, however many claims it waits for) */
#define LEASE_MARGIN_S (NOTICE_SLOWEST_S + 3 * MARK_WAIT_S + 3)
PGW_STATIC_ASSERT(PGW_NOTICE_LEASE_S >= 2 * LEASE_MARGIN_S,
                  "a renewed lease outlasts the margin twice: renewals stay rare");
PGW_STATIC_ASSERT(LEASE_MARGIN_S >= WX_LEASE_NEEDED_S &&
                      LEASE_MARGIN_S - 2 * WX_LEASE_NEEDED_S > SMS_LEASE_NEEDED_S,
                  "after a notice's WeChat requests its lease still covers its SMS's mark");
static void keep_leases(courier *c, const pgw_notice *batch, size_t n, bool *lost,
                        int64_t *lease_until, const char *failed)
{
    if (*lease_until - now_s() >= LEASE_MARGIN_S)
        return;
    pgw_err err;
    int64_t now = now_s(), ids[PGW_NOTIFY_BATCH];
    size_t held = 0, at[PGW_NOTIFY_BATCH];
    bool renewed[PGW_NOTIFY_BATCH];
    PGW_ASSERT(n <= PGW_NOTIFY_BATCH);
    for (size_t i = 0; i < n; i++) {
        if (!lost[i])
            at[held] = i, ids[held++] = batch[i].id;
    }
    int rc = held == 0 ? PGW_OK
                       : pgw_store_renew_claims(c->store, c->owner, ids, held, now, renewed, &err);
    for (size_t k = 0; rc == PGW_OK && k < held; k++)
        lost[at[k]] = !renewed[k];
    if (rc == PGW_OK) {
        *lease_until = now + PGW_NOTICE_LEASE_S;
        tell(c->n, &c->n->renew_said, c->index, "renewing notice claims", NULL);
        return;
    }
    tell(c->n, &c->n->renew_said, c->index, failed, &err);
    for (size_t i = 0; i < n; i++)
        lost[i] = true;
}

/*
 * Before each try at a record of the batch (finish_batch): the claims
 * still to write are renewed when under LEASE_MARGIN_S is left, which
 * outlasts the record's wait for the write lock (PGW_STORE_LOCK_WAIT_S),
 * so no sweep (this instance's, another's) takes back a notice delivered
 * while its record waits, or while it is kept to retry (hold_batch).
 * Regression (R-N's review): renewals were made under that lock; one
 * waiting 30 s, then the record 30 s more, outlived the lease, the sweep
 * took the delivered notice back, counted, and it was sent again. A claim
 * found lost is the record's to find (not ours); a renewal that fails
 * leaves the record to try all the same: the claim is ours until swept.
 */
PGW_STATIC_ASSERT(LEASE_MARGIN_S > PGW_STORE_LOCK_WAIT_S + MARK_WAIT_S,
                  "a record begun with the margin left ends before its lease");
static void keep_leases_to_record(courier *c, const pgw_notice *nts, const bool *unwritten,
                                  size_t n, int64_t *lease_until)
{
    bool skip[PGW_NOTIFY_BATCH];
    PGW_ASSERT(n <= PGW_NOTIFY_BATCH);
    for (size_t i = 0; i < n; i++)
        skip[i] = !unwritten[i];
    keep_leases(c, nts, n, skip, lease_until,
                "notice claims not renewed, recording the batch all the same");
}

/*
 * Counts a subscribe message against the quota of the openid it used
 * (WeChat's 43101 speaks for that openid only), within record()'s
 * transaction; a failure is ignored (WeChat keeps the real count). On
 * PostgreSQL a failed statement fails the rest of a transaction, so there
 * it gets a savepoint of its own.
 */
static void take_quota(courier *c, const pgw_notice *n, const reach_info *r)
{
    bool own = pgw_store_is_remote(c->store), taken = false;
    if (own && pgw_store_savepoint(c->store, NULL) != PGW_OK)
        return;
    int rc = pgw_store_take_quota(c->store, n->member, r->quota_openid, r->mp_template,
                                  r->quota == QUOTA_NONE_LEFT, &taken, NULL);
    if (own && rc == PGW_OK)
        pgw_store_release(c->store, NULL);
    else if (own)
        pgw_store_rollback_to(c->store, NULL);
}

/* Records notices [from, to) still to write (unwritten[]) that were
 * tried, in one transaction; recorded[] says which are (a lost claim is
 * not). Those not tried (a stop, a claim lost or not renewed) are given
 * back in it, their attempt uncounted: left claimed, they would come back
 * when their lease ran out as a dead run's do, the attempt counted. A
 * quota count that fails to update does not keep an attempt from its
 * record: WeChat keeps the real count. On a failure, *passing says
 * whether it passes by itself (passes(): read before the rollback). */
static int record(courier *c, pgw_notice *nts, const reach_info *rs, const bool *tried,
                  const bool *unwritten, size_t from, size_t to, bool *recorded, bool *passing,
                  pgw_err *err)
{
    /* On PostgreSQL the chain lock (pgw_store_begin) is also what keeps
     * this batch's row locks (quotas, notices, member by member) from
     * crossing the writer's and other couriers': without it, a subscribe
     * batch and this one taking two members' quota rows in opposite
     * orders deadlocked (a review reproduced it). */
    int rc = pgw_store_begin(c->store, err);
    for (size_t i = from; rc == PGW_OK && i < to; i++) {
        pgw_err ignored;
        if (!unwritten[i])
            continue;
        if (!tried[i]) { /* PGW_ESTATE: another holder's now, not ours to give */
            int back = pgw_store_give_back_notice(c->store, c->owner, &nts[i], now_s(), &ignored);
            if (back != PGW_OK && back != PGW_ESTATE)
                rc = back, *err = ignored;
            continue;
        }
        if (rs[i].quota != QUOTA_KEPT)
            take_quota(c, &nts[i], &rs[i]);
        int done = pgw_store_finish_notice(c->store, c->owner, &nts[i], now_s(), &ignored);
        recorded[i] = done == PGW_OK;
        if (done != PGW_OK && done != PGW_ESTATE)
            rc = done, *err = ignored;
    }
    if (rc == PGW_OK)
        rc = pgw_store_commit(c->store, err);
    *passing = rc != PGW_OK && passes(c, rc);
    if (rc != PGW_OK) {
        pgw_store_rollback(c->store, NULL);
        for (size_t i = from; i < to; i++)
            recorded[i] = false;
    }
    return rc;
}

/*
 * Records a batch's attempts still to write (unwritten[]) and what they
 * did to the quota, in one transaction: one lock and one WAL write for up
 * to PGW_NOTIFY_BATCH notices instead of one each. Each was sent before
 * this (the provider's acceptance is recorded after it, as always); a
 * notice whose claim was lost meanwhile (its lease ran out) is left to
 * its new holder, and one not tried goes back to pending (record()). One
 * whose record fails for a while (passes(): the disk full, the database
 * busy) stays unwritten, for the courier to write again (hold_batch); one
 * that fails for good is left to lapse. The stream hears of what was
 * recorded.
 */
static void finish_batch(courier *c, pgw_notice *nts, const reach_info *rs, const bool *tried,
                         size_t n_notices, bool *unwritten, int64_t *lease_until)
{
    pgw_notifier *n = c->n;
    bool recorded[PGW_NOTIFY_BATCH] = {false}, passing = false;
    pgw_err err;
    /* One transaction; when it fails (the lock not had in time, a failing
     * statement), each notice on its own, so one cannot lose the others;
     * the lease kept before each (keep_leases_to_record). */
    keep_leases_to_record(c, nts, unwritten, n_notices, lease_until);
    if (record(c, nts, rs, tried, unwritten, 0, n_notices, recorded, &passing, &err) == PGW_OK) {
        tell(n, &n->record_said, c->index, "recording notices", NULL);
        memset(unwritten, 0, n_notices * sizeof(*unwritten));
    } else {
        for (size_t i = 0; i < n_notices; i++) {
            if (unwritten[i])
                keep_leases_to_record(c, nts, unwritten, n_notices, lease_until);
            if (!unwritten[i] || record(c, nts, rs, tried, unwritten, i, i + 1, recorded, &passing,
                                        &err) == PGW_OK) {
                unwritten[i] = false;
                continue;
            }
            unwritten[i] = passing;
            char line[64];
            snprintf(line, sizeof(line), "notice %lld not %s%s", (long long)nts[i].id,
                     tried[i] ? "recorded" : "given back", passing ? ", kept to retry" : "");
            tell(n, &n->record_said, c->index, line, &err);
        }
    }
    for (size_t i = 0; n->o.changed != NULL && i < n_notices; i++) {
        if (recorded[i])
            n->o.changed(n->o.changed_ctx, &nts[i]);
    }
}

/*
 * Writes again what the courier's last batch could not (unwritten[]: its
 * record failed for a while, finish_batch), before the courier claims
 * anything new and before the lapsed sweep: a full disk fails the record
 * of a notice delivered (or of an attempt not counted: a mark not made)
 * as it fails the sweep, and once there is room the sweep took the claim
 * back first, its attempt counted, and the notice was sent again. Memory:
 * the batch, which the courier keeps and does not claim over meanwhile;
 * retries: one a turn of the courier, as its claims were. held(): whether
 * the batch is still held, told to n->holding: the sweep waits while a
 * courier holds one; its claims are renewed before each try
 * (keep_leases_to_record), so another instance's sweep waits too while
 * the renewals get through. A claim lapsed (they failed too) and taken by
 * another instance's sweep meanwhile is that instance's (record(): not
 * ours, left).
 */
static bool held(courier *c, const bool *unwritten, size_t n_notices)
{
    bool any = false;
    for (size_t i = 0; i < n_notices; i++)
        any |= unwritten[i];
    uint64_t bit = (uint64_t)1 << c->index;
    pthread_mutex_lock(&c->n->lock);
    c->n->holding = any ? c->n->holding | bit : c->n->holding & ~bit;
    pthread_mutex_unlock(&c->n->lock);
    return any;
}

static bool hold_batch(courier *c, pgw_notice *nts, const reach_info *rs, const bool *tried,
                       size_t n_notices, bool *unwritten, int64_t *lease_until)
{
    if (held(c, unwritten, n_notices))
        finish_batch(c, nts, rs, tried, n_notices, unwritten, lease_until);
    return held(c, unwritten, n_notices);
}

/* Whether a courier holds records it could not write (hold_batch). */
static bool holding(pgw_notifier *n)
{
    pthread_mutex_lock(&n->lock);
    bool held = n->holding != 0;
    pthread_mutex_unlock(&n->lock);
    return held;
}

/* An expiry reminder that waited (quiet hours, a number's limit, retries)
 * until its points had expired would tell the member of points they no
 * longer have: it is skipped instead. */
static bool reminder_too_late(pgw_notifier *n, pgw_notice *nt, int kind)
{
    if (kind != PGW_NOTICE_POINTS_EXPIRING || nt->about_at > now_s())
        return false;
    snprintf(nt->state, sizeof(nt->state), "skipped");
    set_error(nt, "", "the points expired before the reminder could go");
    count(n, &n->stats.skipped);
    return true;
}

/* Why channel ch of the kind's route does not reach the member
 * (member_reach); NULL: the kind has no template there. */
static const char *not_reached(const pgw_notifier *n, const reach_info *r, pgw_notice_channel ch)
{
    if (ch == PGW_CHANNEL_MP)
        return n->off[0][0]         ? n->off[0]
               : !r->mp_template[0] ? NULL
               : !r->mp_openid[0]   ? "the member has no openid there"
                                    : "the member has no subscription quota";
    if (ch == PGW_CHANNEL_OA)
        return n->off[1][0]         ? n->off[1]
               : !r->oa_template[0] ? NULL
               : !r->oa_openid[0]   ? "the member has no openid there"
                                    : "the member does not follow";
    return n->off[2][0]                    ? n->off[2]
           : !r->sms_template[0]           ? NULL
           : r->phone.kind != PGW_ID_PHONE ? "the member has no phone"
           : r->opted_out                  ? "the member opted out"
                                           : "the member's phone cannot be read";
}

/*
 * Why a channel the notifier was given no client for is off, into
 * out[OFF_MAX]: not configured, switched off there, or the first of its
 * variables unset (serve warned of them all at start). `configured`: the
 * channel's section is there; `vars_set`: all its variables are, else
 * `unset` names them ("A, B"). Regression: all three said "switched off
 * or a variable unset", and an operator had to guess which to mend.
 */
static void channel_off(bool configured, bool enabled, bool vars_set, const char *unset,
                        char out[OFF_MAX])
{
    size_t first = strcspn(unset, ","), more = 0;
    for (const char *p = strchr(unset, ','); p != NULL; p = strchr(p + 1, ','))
        more++;
    if (!configured)
        snprintf(out, OFF_MAX, "not in the configuration");
    else if (!enabled)
        snprintf(out, OFF_MAX, "switched off in the configuration");
    else if (!vars_set && more == 0 && first + sizeof(" unset") <= OFF_MAX)
        snprintf(out, OFF_MAX, "%.*s unset", (int)first, unset);
    else if (!vars_set && first + sizeof(" unset, 9 more") <= OFF_MAX) /* three at most */
        snprintf(out, OFF_MAX, "%.*s unset, %zu more", (int)first, unset, more);
    else /* a name too long to tell here, or off for a reason told at start */
        snprintf(out, OFF_MAX, "off (see the warning at start)");
}

/* n->off, of the channels the notifier cannot send by. */
static void channels_off(pgw_notifier *n)
{
    const pgw_config *cfg = n->o.cfg;
    char unset[PGW_ENV_UNSET_MAX];
    if (!n->o.mp_ready)
        channel_off(cfg->wechat_mp.appid[0] != '\0', cfg->wechat_mp.enabled,
                    pgw_wechat_mp_env_set(&cfg->wechat_mp, unset, sizeof(unset)), unset, n->off[0]);
    if (!n->o.oa_ready)
        channel_off(cfg->wechat_oa.appid[0] != '\0', cfg->wechat_oa.enabled,
                    pgw_wechat_oa_env_set(&cfg->wechat_oa, unset, sizeof(unset)), unset, n->off[1]);
    if (n->o.sms == NULL)
        channel_off(cfg->sms.provider[0] != '\0', cfg->sms.enabled,
                    pgw_sms_env_set(&cfg->sms, unset, sizeof(unset)), unset, n->off[2]);
}

/* A channel passed over after a WeChat message that may have reached the
 * member (AFTER_WX). Short: with a WeChat refusal kept before it (at
 * least KEPT_MIN bytes) and the other channels' reasons, the longest
 * message (the mini program marked and refused, the official account
 * switched off, then SMS) is 200 bytes, PGW_NOTICE_ERROR_MAX. Regression:
 * "left out after a WeChat message that may have reached the member" was
 * cut mid-way there by set_error. */
#define WX_MAY_HAVE_TOLD "WeChat may have told them"

/* Why routing passed over channel ch when no channel was left (deliver). */
typedef enum passed_over {
    UNREACHED, /* it does not reach the member now: not_reached() */
    AFTER_SMS, /* WeChat, after an SMS that may have reached the member: route_excluded() */
    AFTER_WX,  /* another, after a WeChat message that may have reached the member: the same */
    REFUSED,   /* it refused the member, in this attempt or an earlier one */
} passed_over;

static passed_over why_passed_over(const pgw_notice *nt, const reach_info *r, pgw_notice_channel ch)
{
    bool reaches = ch == PGW_CHANNEL_MP   ? r->reach.mp
                   : ch == PGW_CHANNEL_OA ? r->reach.oa
                                          : r->reach.sms;
    if (!reaches)
        return UNREACHED;
    if (ch != PGW_CHANNEL_SMS && (nt->excluded & PGW_NOTICE_SMS_MAY_HAVE_GONE) != 0)
        return AFTER_SMS;
    if (wx_gone(nt) != 0 && (wx_gone(nt) & (unsigned)ch) == 0)
        return AFTER_WX;
    return REFUSED; /* excluded: route_excluded() passes over nothing else */
}

/* The channel whose refusal last_error holds, when it is still the reason
 * ch was passed over: its text (the provider's code) then leads the
 * message, where the cut at PGW_NOTICE_ERROR_MAX cannot take it. */
static pgw_notice_channel refusal_kept(const pgw_notice *nt, const reach_info *r,
                                       const pgw_notice_order *o)
{
    for (size_t i = 0; i < o->n; i++) {
        pgw_notice_channel ch = o->channel[i];
        const char *name = pgw_notice_channel_name(ch);
        size_t len = strlen(name);
        if (strncmp(nt->last_error, name, len) == 0 && strncmp(nt->last_error + len, ": ", 2) == 0)
            return why_passed_over(nt, r, ch) == REFUSED ? ch : PGW_CHANNEL_NONE;
    }
    return PGW_CHANNEL_NONE;
}

/* Bytes of a kept refusal at least, when it is cut inside a field. */
#define KEPT_MIN 80

/* The longest message of a notice passed over after a WeChat message
 * (WX_MAY_HAVE_TOLD), a refusal kept, the official account off, fits. */
_Static_assert(KEPT_MIN + sizeof("; no other channel reaches the member: wechat_oa: ") - 1 +
                       OFF_MAX - 1 + sizeof("; sms: " WX_MAY_HAVE_TOLD) - 1 <=
                   PGW_NOTICE_ERROR_MAX,
               "a channel's off reason leaves the others whole");

/*
 * How much of a kept refusal (valid UTF-8) goes before the other
 * channels' reasons, given `room` bytes: all of it when it fits; else up
 * to the last ": " that fits when three fields or more are whole before
 * it (the channel, "SMS tencent to 138****8000", the provider's code: its
 * words go); else, cut inside a field (WeChat's "errcode 43101 ..."), at
 * least KEPT_MIN bytes, back to a word's end (cut_words), *cut set for a "...".
 */
static size_t refusal_part(const char *text, size_t room, bool *cut)
{
    size_t len = strlen(text), fields = 0, at = 0;
    *cut = false;
    if (len <= room || len <= KEPT_MIN)
        return len;
    for (const char *p = strstr(text, ": "); p != NULL && (size_t)(p - text) <= room;
         p = strstr(p + 2, ": ")) {
        fields++;
        at = (size_t)(p - text);
    }
    if (fields >= 3)
        return at;
    *cut = true;
    return cut_words(text, room > KEPT_MIN ? room : KEPT_MIN);
}

/*
 * A notice skipped says why, channel by channel of its route: "" left an
 * operator guessing, and so did the last refusal kept alone (a review saw
 * a 45009 of an earlier attempt as the reason of a notice skipped because
 * the member opted out of SMS). A refusal still in force is told first,
 * with its provider's words: "sms: ... PhoneNumberInBlacklist ...; no
 * other channel reaches the member: wechat_mp: ...".
 */
static void why_unreached(const pgw_notifier *n, pgw_notice *nt, const reach_info *r, int kind)
{
    const pgw_notice_order *o = &n->o.cfg->notify.routes[kind];
    pgw_notice_channel kept = refusal_kept(nt, r, o);
    if (kept != PGW_CHANNEL_NONE && o->n == 1)
        return; /* that refusal is all there is to say */
    /* The channels' reasons whole first (three at most, this buffer holds
     * them), the refusal before them cut to the room they leave
     * (refusal_part). Kept whole, a provider's Chinese message (Tencent's
     * run to 150 bytes) filled the 200 and set_error cut every reason away. */
    char reasons[PGW_NOTICE_ERROR_MAX + 256];
    int len = snprintf(reasons, sizeof(reasons), "no %schannel reaches the member",
                       kept != PGW_CHANNEL_NONE ? "other " : "");
    PGW_ASSERT(len > 0 && (size_t)len < sizeof(reasons));
    size_t used = (size_t)len;
    const char *sep = ": ";
    for (size_t i = 0; i < o->n; i++) {
        pgw_notice_channel ch = o->channel[i];
        if (ch == kept)
            continue;
        passed_over p = why_passed_over(nt, r, ch);
        const char *reason = p == AFTER_SMS
                                 ? "left out after an SMS that may have reached the member"
                             : p == AFTER_WX ? WX_MAY_HAVE_TOLD
                             : p == REFUSED  ? "refused the member before"
                                             : not_reached(n, r, ch);
        len = snprintf(reasons + used, sizeof(reasons) - used, "%s%s: %s%s", sep,
                       pgw_notice_channel_name(ch), reason != NULL ? reason : "no template for ",
                       reason != NULL ? "" : KIND_NAMES[kind]);
        PGW_ASSERT(len > 0 && (size_t)len < sizeof(reasons) - used);
        used += (size_t)len;
        sep = "; ";
    }
    if (kept == PGW_CHANNEL_NONE) {
        set_error(nt, "", reasons);
        return;
    }
    size_t room = PGW_NOTICE_ERROR_MAX > used + 2 ? PGW_NOTICE_ERROR_MAX - used - 2 : 0;
    bool cut = false;
    size_t keep = refusal_part(nt->last_error, room, &cut);
    char why[PGW_NOTICE_ERROR_MAX + sizeof(reasons) + 8];
    len = snprintf(why, sizeof(why), "%.*s%s; %s", (int)keep, nt->last_error, cut ? ELLIPSIS : "",
                   reasons);
    PGW_ASSERT(len > 0 && (size_t)len < sizeof(why));
    set_error(nt, "", why);
}

/* WeChat channels an attempt left out for a 45009 because another came
 * after them, and the earliest their quota is back: when those others
 * refuse too, the notice waits for WeChat (after_quota_day), neither
 * skipped (WeChat does reach the member) nor dead. */
typedef struct quota_out {
    int64_t channels, back;
} quota_out;

static void quota_out_add(quota_out *q, pgw_notice_channel ch, int64_t back)
{
    q->channels |= ch;
    q->back = q->back != 0 ? pgw_min64(q->back, back) : back;
}

/* Pending for the earliest quota back, every channel left out for one let
 * in again: left out, a refusal tomorrow would skip the notice. */
static void quota_out_wait(pgw_notifier *n, pgw_notice *nt, const quota_out *q)
{
    nt->excluded &= ~q->channels;
    wait_for_quota(n, nt, q->channels, q->back);
}

/* Pending otherwise (an SMS held for the quiet hours or a number's limit,
 * a retry): the channels left out for a 45009 are let in again, their
 * exclusion this attempt's only (the quota is the app's for the day, not
 * the member's refusal). Kept out, the next attempt had only the channels
 * after them, and one that refused the member then (opted out meanwhile,
 * a number refused) skipped the notice though WeChat reaches the member.
 * Tried first again, WeChat is not asked until its day turns
 * (wx_quota_gone) and the notice goes on, or waits for it, as in this
 * attempt; after it, WeChat takes it. Not when this attempt or an SMS of
 * the notice may have reached the member: WeChat would tell them twice. */
static void quota_out_pending(pgw_notice *nt, const quota_out *q)
{
    if (q->channels != 0 && strcmp(nt->state, "pending") == 0 && !nt->may_have_reached &&
        (nt->excluded & PGW_NOTICE_SMS_MAY_HAVE_GONE) == 0)
        nt->excluded &= ~q->channels;
}

/* No channel left to try: waiting for WeChat's quota (unless an SMS of it
 * may have gone, or a message of the other WeChat channel, given up after
 * an answer not read: WeChat would tell twice), dead when a channel gave
 * up (`failed`), skipped when every one refused the member. */
static void no_channel_left(pgw_notifier *n, pgw_notice *nt, const reach_info *r, int kind,
                            bool failed, const quota_out *q)
{
    if (q->channels != 0 && (nt->excluded & PGW_NOTICE_SMS_MAY_HAVE_GONE) == 0 &&
        wx_gone(nt) == 0) {
        quota_out_wait(n, nt, q);
        return;
    }
    snprintf(nt->state, sizeof(nt->state), "%s", failed ? "dead" : "skipped");
    if (!failed)
        why_unreached(n, nt, r, kind);
    count(n, failed ? &n->stats.dead : &n->stats.skipped);
}

/* Quiet hours, a number's limit: pending, the attempt not counted. Held:
 * with nothing left to try now, a subscription, a follow or a WeChat
 * identity meanwhile may make it due again (store.h pgw_store_add_quota). */
static void hold_for_later(pgw_notifier *n, pgw_notice *nt)
{
    snprintf(nt->state, sizeof(nt->state), "pending");
    nt->attempts--;
    nt->excluded |= PGW_NOTICE_HELD;
    count_deferred(n, PGW_CHANNEL_SMS); /* only an SMS is held (send_sms: DEFER) */
}

/* One attempt at a notice: the outcome is in *nt and *r for finish_batch. */
static void deliver(courier *c, pgw_notice *nt, reach_info *r)
{
    pgw_notifier *n = c->n;
    int kind = kind_of(nt->kind);
    pgw_err err;
    nt->provider_id[0] = '\0';
    /* Set by any channel of this attempt whose request may have reached the
     * member, and kept over the channels after it: an SMS given up on a
     * code not known here may have gone though WeChat then was busy. */
    nt->may_have_reached = false;
    /* A channel gave up (dead), not only refused this member (skipped), in
     * this attempt or an earlier one. */
    bool failed = (nt->excluded & PGW_NOTICE_GAVE_UP) != 0;
    nt->excluded &= ~(int64_t)PGW_NOTICE_HELD; /* held again below, if it is */
    quota_out q = {0, 0};
    memset(r, 0, sizeof(*r));
    if (reminder_too_late(n, nt, kind))
        return;
    /* The attempt's only read, before any request of it leaves: one that
     * fails because the database is busy sent nothing and costs no
     * attempt, as a mark not made (not_sent). Regression: retried as a
     * failed send, a database busy at a notice's few attempts made it
     * dead, nothing sent. One that fails for good (a read error, a kind
     * this build does not know) is retried, counted, then dead. */
    int rc = prepare(c, nt, kind, r, &err);
    if (rc != PGW_OK) {
        set_store_error(c->store, nt, "", err.msg);
        log_failure(c, nt, rc, passes(c, rc), &err);
        if (passes(c, rc))
            not_sent(n, nt, PGW_CHANNEL_NONE, now_s());
        else
            schedule_retry(n, nt, now_s());
    }
    for (int hop = 0; rc == PGW_OK && hop < 4; hop++) {
        pgw_notice_channel ch =
            pgw_notice_route(&r->reach, &n->o.cfg->notify.routes[kind], route_excluded(nt));
        if (ch == PGW_CHANNEL_NONE) { /* nobody to reach, or everyone refused */
            no_channel_left(n, nt, r, kind, failed, &q);
            break;
        }
        /* The clock again for each channel: those before it may have taken
         * seconds, and quiet hours may have begun meanwhile. */
        attempt a = try_channel(c, nt, r, kind, ch, now_s());
        if (a == SENT) {
            snprintf(nt->state, sizeof(nt->state), "sent");
            count(n, &n->stats.sent[channel_index(ch)]);
            tell_provider_works(n, ch);
            break;
        }
        if (a == DEFER) {
            hold_for_later(n, nt);
            break;
        }
        if (a == QUOTA_DAY) {
            int64_t at = now_s(), back = pgw_wx_quota_back(at);
            a = after_quota_day(n, nt, r, kind, ch, back, at);
            if (a != RETRY) /* NEXT, or QUOTA_DAY: this channel waits too */
                quota_out_add(&q, ch, back);
            if (a == QUOTA_DAY) { /* waiting for WeChat's next day */
                quota_out_wait(n, nt, &q);
                break;
            }
        }
        if (a == RETRY) {
            schedule_retry(n, nt, now_s()); /* from now: the attempt took time */
            break;
        }
        if (a == UNSENT) {
            not_sent(n, nt, ch, now_s());
            break;
        }
        failed |= a == GIVE_UP;
        nt->excluded |= ch | (a == GIVE_UP ? PGW_NOTICE_GAVE_UP : 0u);
        count(n, &n->stats.fell_through);
    }
    quota_out_pending(nt, &q);
    tell_provider(n, nt, r);
}

/* ---- the thread ------------------------------------------------------------------------ */

static bool stopping(pgw_notifier *n)
{
    pthread_mutex_lock(&n->lock);
    bool stop = n->stop;
    pthread_mutex_unlock(&n->lock);
    return stop;
}

static bool wait_or_stop(pgw_notifier *n, int64_t ms)
{
    pthread_mutex_lock(&n->lock);
    if (!n->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until); /* the condition waits on this clock */
        until.tv_nsec += (long)(ms % 1000) * 1000000L;
        until.tv_sec += ms / 1000 + until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&n->wake, &n->lock, &until);
    }
    bool stop = n->stop;
    pthread_mutex_unlock(&n->lock);
    return stop;
}

/* Queues the expiry reminders due (notify.expiry_reminder_days ahead),
 * at most once an hour: each member and day is reminded once anyway. A
 * failure's line comes as seldom: it needs no limit (tell). */
static void remind(courier *c, int64_t *next_at)
{
    pgw_notifier *n = c->n;
    const pgw_config *cfg = n->o.cfg;
    int64_t now = now_s(), queued = 0;
    if (cfg->notify.expiry_reminder_days <= 0 || now < *next_at)
        return;
    *next_at = now + 3600;
    pgw_err err;
    if (pgw_store_queue_reminders(c->store, now, cfg->notify.expiry_reminder_days * 86400,
                                  cfg->rules.tz.offset_s, &queued, &err) != PGW_OK)
        fprintf(stderr, "pointsgw: expiry reminders: %s\n", err.msg);
}

/* Forgets finished notices older than notify.keep_days, at most every 10
 * minutes, a chunk at a time (each chunk a short transaction, so the
 * writer never waits long) and at most PRUNE_PER_RUN per run, so delivery
 * by this courier pauses briefly. Its lines come as seldom: no limit. */
#define PRUNE_PER_RUN 200000
static void prune(courier *c, int64_t *next_at)
{
    const pgw_config *cfg = c->n->o.cfg;
    int64_t now = now_s(), deleted = 0, total = 0;
    if (now < *next_at)
        return;
    *next_at = now + 600;
    pgw_err err;
    do {
        if (pgw_store_prune_notices(c->store, now - cfg->notify.keep_days * 86400, &deleted,
                                    &err) != PGW_OK) {
            fprintf(stderr, "pointsgw: pruning notices: %s\n", err.msg);
            return;
        }
        total += deleted;
    } while (deleted > 0 && total < PRUNE_PER_RUN && !stopping(c->n));
    if (total > 0 && pgw_store_checkpoint(c->store, false, NULL, &err) != PGW_OK)
        fprintf(stderr, "pointsgw: checkpoint after pruning: %s\n", err.msg);
}

/*
 * The store's rule (pgw_store_finish_notice), applied to the rest of the
 * batch as soon as batch[i] is sent: the batch is recorded after its last
 * send, and the claim's copies do not have the store's marks. A notice of
 * the member later in the batch, queued with another balance than the one
 * just told, reads the balance when sent (read_past): whatever it is when
 * batch[i] read its balance as it was sent (a read sees every event
 * before it, so it is never older than one queued; a notice sent after it
 * telling the balance it was queued with could be), and when it is a
 * hurried arrival queued before batch[i] (the member has read a balance
 * after its own). A balance read later is never older than one read
 * before, so the member never reads an older balance after a newer one.
 * Regressions: R3, R's retry told 0, then A2, after it in the batch,
 * "+400, balance 850"; a reversal told 0, then a hurried arrival's retry
 * "+600, balance 600"; R4, an arrival R's retry read past, hurried by a
 * reversal R2 and sent before it, read 1250 (counting a sale queued after
 * R2), then R2, sent at once, told its queued 850. A read_past notice,
 * not a cleared mark: an arrival hurried the second it was queued is
 * also "sent at once" (current_balance), and would still have told its
 * queued balance. An attempt whose answer was lost counts as sent: WeChat
 * delivered it all the same (a retry's read "balance 850", then a
 * reversal after it in the batch its queued "balance 450";
 * pgw_store_notice_told).
 */
static void unmark_rest_of_batch(pgw_notice *batch, size_t i, size_t n)
{
    const pgw_notice *sent = &batch[i];
    if (!pgw_store_notice_told(sent))
        return;
    for (size_t j = i + 1; j < n; j++) {
        pgw_notice *later = &batch[j];
        if (strcmp(later->member, sent->member) == 0 && later->balance != sent->balance &&
            (sent->read_when_sent || (later->hurried && later->id < sent->id)))
            later->read_past = true;
    }
}

/*
 * The stop: what the courier holds (hold_batch) is written before the
 * store closes, tried again for up to STOP_RECORD_S (its claims renewed
 * meanwhile), since the stop gives back whatever is still claimed
 * (pgw_notifier_stop), and a delivered notice given back is sent again at
 * the next start. The writer still runs meanwhile (it stops after the
 * notifier), so a long transaction of its can end and let the record
 * through. Regression: the stop tried once, gave the claim back, and the
 * member got the SMS a second time after the deploy. What still fails
 * (the database gone) is said, each notice, as it is given back. Short:
 * a try begun may itself wait for the lock (30 s on PostgreSQL), and a
 * supervisor's stop timeout (compose's 30 s) must not cut the writer's
 * drain after it.
 */
#define STOP_RECORD_S 10
static void write_held_at_stop(courier *c, pgw_notice *nts, const reach_info *rs, const bool *tried,
                               size_t n_notices, bool *unwritten, int64_t *lease_until)
{
    int64_t until = pgw_monotonic_s() + STOP_RECORD_S;
    while (hold_batch(c, nts, rs, tried, n_notices, unwritten, lease_until) &&
           pgw_monotonic_s() < until) {
        struct timespec pause = {0, PGW_NOTIFY_POLL_MS * 1000000L};
        nanosleep(&pause, NULL);
    }
    for (size_t i = 0; i < n_notices; i++) {
        if (unwritten[i] && tried[i] && pgw_store_notice_told(&nts[i]))
            fprintf(stderr,
                    "pointsgw: notice %lld delivered (or it may have been) but not recorded by "
                    "the stop in %d s: given back, it is sent again at the next start\n",
                    (long long)nts[i].id, STOP_RECORD_S);
        else if (unwritten[i])
            fprintf(stderr,
                    "pointsgw: notice %lld not recorded by the stop in %d s: given back, its "
                    "attempt not counted\n",
                    (long long)nts[i].id, STOP_RECORD_S);
    }
}

/* Each courier claims its own batches (a claim is one UPDATE, so two never
 * take the same notice); the first also queues the expiry reminders and
 * reads the outbox's depth. */
static void *courier_main(void *arg)
{
    courier *c = arg;
    pgw_thread_name("pgw-courier");
    pgw_notifier *n = c->n;
    bool first = c == &n->couriers[0];
    pgw_notice batch[PGW_NOTIFY_BATCH];
    reach_info reach[PGW_NOTIFY_BATCH];
    bool tried[PGW_NOTIFY_BATCH], unwritten[PGW_NOTIFY_BATCH] = {false};
    size_t kept = 0; /* the last batch, while some of it is unwritten */
    int64_t next_reminders = 0, next_prune = 0;
    int64_t lease_until = 0; /* the last batch's, while some of it is unwritten */
    for (;;) {
        size_t got = 0;
        pgw_err err;
        if (first) {
            remind(c, &next_reminders);
            prune(c, &next_prune);
        }
        /* The lease is taken as the claim is: dated after hold_batch,
         * whose record may have waited for the lock (a49ee97's review: a
         * claim dated before that wait got a lease that much shorter). */
        int64_t claimed_at = 0;
        if (hold_batch(c, batch, reach, tried, kept, unwritten, &lease_until)) {
            /* nothing new claimed over it */
        } else if (pgw_store_claim_notices(c->store, c->owner, claimed_at = now_s(), batch,
                                           PGW_NOTIFY_BATCH, &got, &err) == PGW_OK) {
            lease_until = claimed_at + PGW_NOTICE_LEASE_S;
            tell(n, &n->claims_said, c->index, "outbox", NULL);
            if (got == 0) {
                tell_idle(n, &n->record_said, c->index, "recording notices");
                tell_idle(n, &n->renew_said, c->index, "renewing notice claims");
            }
        } else {
            tell(n, &n->claims_said, c->index, "outbox", &err);
        }
        bool lost[PGW_NOTIFY_BATCH] = {false};
        for (size_t i = 0; i < got; i++) { /* what is not tried is given back with the batch */
            keep_leases(c, batch, got, lost, &lease_until,
                        "notice claims not renewed, the batch's untried notices given back");
            tried[i] = !stopping(n) && !lost[i];
            if (tried[i]) {
                deliver(c, &batch[i], &reach[i]);
                unmark_rest_of_batch(batch, i, got);
            }
        }
        if (got > 0) { /* the last notice took its time: finish_batch keeps the leases */
            for (size_t i = 0; i < got; i++)
                unwritten[i] = true;
            finish_batch(c, batch, reach, tried, got, unwritten, &lease_until);
            kept = got;
            (void)held(c, unwritten, kept);
        }
        int64_t lapsed = 0;
        /* an instance that died: its claims come back after their lease;
         * not while a courier holds records (hold_batch) */
        if (first && !holding(n)) {
            if (pgw_store_unclaim_notices(c->store, NULL, now_s(), &lapsed, &err) == PGW_OK)
                tell(n, &n->sweep_said, c->index, "outbox, lapsed claims", NULL);
            else
                tell(n, &n->sweep_said, c->index, "outbox, lapsed claims", &err);
        }
        if (first) {
            /* Records and renewals come with notices only: one that got
             * through in its failure's minute says so when it is over. */
            tell_later(n, &n->record_said, "recording notices");
            tell_later(n, &n->renew_said, "renewing notice claims");
            for (size_t i = 0; i < N_CHANNELS; i++) /* sends come with notices only: as records */
                tell_later(n, &n->channel_said[i], pgw_notice_channel_name(CHANNELS[i]));
        }
        int64_t depth = 0;
        if (first && pgw_store_outbox_depth(c->store, &depth, &err) == PGW_OK) {
            pthread_mutex_lock(&n->lock);
            n->stats.depth = depth;
            pthread_mutex_unlock(&n->lock);
        }
        if (got == PGW_NOTIFY_BATCH) { /* there may be more: everyone to work */
            pthread_mutex_lock(&n->lock);
            pthread_cond_broadcast(&n->wake);
            pthread_mutex_unlock(&n->lock);
        }
        if (stopping(n) || (got < PGW_NOTIFY_BATCH &&
                            wait_or_stop(n, first ? PGW_NOTIFY_POLL_MS : PGW_NOTIFY_IDLE_MS)))
            break;
    }
    write_held_at_stop(c, batch, reach, tried, kept, unwritten, &lease_until);
    return NULL;
}

static int open_couriers(pgw_notifier *n, pgw_err *err)
{
    int rc = PGW_OK;
    for (size_t i = 0; rc == PGW_OK && i < n->n_couriers; i++) {
        courier *c = &n->couriers[i];
        c->n = n;
        c->index = i;
        int len = snprintf(c->owner, sizeof(c->owner), "%s/%zu", n->owner, i);
        PGW_ASSERT(len > 0 && (size_t)len < sizeof(c->owner));
        rc = pgw_store_open(n->o.db_url, false, &c->store, err);
        if (rc == PGW_OK)
            rc = pgw_store_relax_sync(c->store, err);
    }
    int64_t unclaimed = 0;
    if (rc == PGW_OK) /* a crash left these in hand: send them again */
        rc = pgw_store_unclaim_notices(n->couriers[0].store, NULL, now_s(), &unclaimed, err);
    for (size_t i = 0; rc == PGW_OK && i < n->n_couriers; i++) {
        courier *c = &n->couriers[i];
        if (pthread_create(&c->thread, NULL, courier_main, c) != 0)
            rc = pgw_err_set(err, PGW_EUNAVAILABLE, "cannot start the notifier");
        c->started = rc == PGW_OK;
    }
    return rc;
}

int pgw_notifier_start(const pgw_notifier_options *opts, pgw_notifier **out, pgw_err *err)
{
    *out = NULL;
    pgw_notifier *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the notifier");
    n->o = *opts;
    channels_off(n);
    n->n_couriers = (size_t)opts->cfg->notify.workers;
    PGW_ASSERT(n->n_couriers >= 1 && n->n_couriers <= PGW_NOTIFY_THREADS_MAX);
    pthread_mutex_init(&n->lock, NULL);
    pthread_mutex_init(&n->said_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* a clock step must not stall delivery */
    pthread_cond_init(&n->wake, &attr);
    pthread_condattr_destroy(&attr);
    char host[32] = "";
    uint32_t nonce = 0;
    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "localhost");
    if (RAND_bytes((unsigned char *)&nonce, sizeof(nonce)) != 1)
        nonce = (uint32_t)time(NULL);
    snprintf(n->owner, sizeof(n->owner), "%.24s:%ld:%08x", host, (long)getpid(), nonce);
    pgw_sms_limits limits;
    int rc = opts->sms == NULL ? PGW_OK
                               : pgw_sms_limits_default(opts->cfg->sms.provider,
                                                        PGW_SMS_KIND_NOTICE, &limits, err);
    if (rc == PGW_OK && opts->sms != NULL)
        rc = pgw_sms_limiter_new(&limits, &n->limiter, err);
    if (rc == PGW_OK)
        rc = open_couriers(n, err);
    if (rc != PGW_OK) {
        pgw_notifier_stop(n);
        return rc;
    }
    *out = n;
    return PGW_OK;
}

void pgw_notifier_stop(pgw_notifier *n)
{
    if (n == NULL)
        return;
    pthread_mutex_lock(&n->lock);
    n->stop = true;
    pthread_cond_broadcast(&n->wake);
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < n->n_couriers; i++) {
        if (n->couriers[i].started)
            pthread_join(n->couriers[i].thread, NULL);
    }
    tell_stopped(n);
    /* What a batch could not give back (the store failed then) is pending
     * again now, not after the lease. */
    for (size_t i = 0; i < n->n_couriers && n->couriers[0].store != NULL; i++) {
        int64_t released = 0;
        pgw_err err;
        if (pgw_store_unclaim_notices(n->couriers[0].store, n->couriers[i].owner, now_s(),
                                      &released, &err) != PGW_OK)
            fprintf(stderr, "pointsgw: notices left claimed until their lease ends: %s\n", err.msg);
    }
    for (size_t i = 0; i < n->n_couriers; i++)
        pgw_store_close(n->couriers[i].store);
    pgw_sms_limiter_free(n->limiter);
    pthread_mutex_destroy(&n->lock);
    pthread_mutex_destroy(&n->said_lock);
    pthread_cond_destroy(&n->wake);
    free(n);
}

void pgw_notifier_get_stats(pgw_notifier *n, pgw_notifier_stats *out)
{
    pthread_mutex_lock(&n->lock);
    *out = n->stats;
    pthread_mutex_unlock(&n->lock);
}
