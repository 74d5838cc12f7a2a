/*
 * http.c - see http.h. Facts about libwebsockets 4.1 relied on here are in
 * ../shared/research/libwebsockets.md: one lws_write per WRITEABLE
 * callback, headers and body as separate writes, per-transaction pss for
 * HTTP, lws_cancel_service() as the only call allowed from other threads,
 * EVENT_WAIT_CANCELLED delivered on a wsi that is not a client.
 */
#include "http.h"

#include <stdatomic.h>

#include "core/assertions.h"
#include "core/civil.h"
#include "core/identity.h"
#include "core/log_limit.h"
#include "server/api.h"
#include "server/peer_limit.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/json_write.h"
#include "util/netaddr.h"
#include "util/probe.h"
#include "util/query.h"

#include <libwebsockets.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK            16384                            /* response bytes per write */
#define HEADER_DATA_MAX  8192                             /* all request header bytes */
#define DRAIN_SERVICE_MS (PGW_HTTP_STOP_ANSWERS_S * 1000) /* at shutdown, for the last answers */
#define STREAMS_CLOSE_MS 1000 /* and to streams to take their last messages and close */
#define POLL_FAILS_MAX   1000 /* passes in a row whose poll() failed at once: lws failing */
#define STOP_TICK_MS     100  /* the drain's loop looks at the clock this often */
#define QUIET_TICK_S     1    /* the API's "works again" when quiet: pgw_api_tell_quiet */
#define ACCEPT_REST_MS   10   /* a failing accept's first rest, doubled each failure, */
#define ACCEPT_REST_MAX  1000 /* up to this */
#define STREAM_RING      4096 /* live-stream messages kept for slow watchers */
#define STREAM_MSG_MAX   1024 /* one transfer's JSON */
#define NEWS_PENDING_MAX 4096 /* stream messages of no job not yet taken by the service thread */
#define STREAM_TURN_MAX  1024 /* stream messages one drain adds, give or take a job's */
#define LWS_TIMEOUT_S    5    /* lws's timeout_secs: what Debian's 4.1.6 takes unset (measured) */
#define BODY_TICK_S      2    /* a body awaited is looked at this often */
#define KEEPALIVE_S      120  /* an idle connection's default (config.h says why) */
#define KEEPALIVE_MAX_S  3600 /* as http.keepalive_timeout_s's bound */
#define MEMBER_TABS      4    /* one member's streams open at once (its tabs, its phones) */
#define TCP_IDLE_S       60   /* an idle socket's peer is probed after this long */
#define TCP_PROBES       3    /* unanswered probes that close it, */
#define TCP_PROBE_S      10   /* this far apart: a gone peer found in 90 s */
/* A stream's client silent for http.keepalive_timeout_s is pinged (lws's
 * idle policy), and closed if nothing comes as long again: lws counts in
 * uint16_t seconds. */
_Static_assert(2 * KEEPALIVE_MAX_S <= UINT16_MAX, "the silence limit fits lws's policy");
/* A fifth's Retry-After (429 comes with one, API.md): a tab closed just
 * now leaves the count within moments, the next handshake finds room. */
#define MEMBER_TABS_RETRY_S 5
/* Close codes of a member's stream (RFC 6455 7.4.2: 4000-4999 are the
 * application's): its session is over (ended, expired: log in again, as
 * a 401 says), or it could not be checked now (1013, try again later). */
#define WS_CLOSE_SESSION 4401
#define WS_CLOSE_AGAIN   1013
/* A session's check found it over, or this instance's logout ended it. */
#define WS_SESSION_ENDED_REASON "the session was ended or has expired: log in again"
/* A merged member's fifth stream, found at its check: as a 429 says. */
#define WS_CLOSE_TABS 4429
/* Every stream at a stop (SIGTERM: a restart, a deployment): going away,
 * as RFC 6455 says a server going down closes, so that its client
 * reconnects (elsewhere, or after a pause) rather than take it for a
 * network fault, as a bare TCP close read. */
#define WS_CLOSE_GOING_AWAY  LWS_CLOSE_STATUS_GOINGAWAY
#define WS_GOING_AWAY_REASON "server shutting down"
/* A key's stream whose key a reload (SIGHUP) removed or changed: policy
 * violation, the key no longer lets it in (reconnecting with it is 401). */
#define WS_CLOSE_KEY_GONE  LWS_CLOSE_STATUS_POLICY_VIOLATION
#define WS_KEY_GONE_REASON "the API key was removed or changed by a reload of the keys"
/* A stream closed for the messages it missed: no close frame is sent (a
 * 1001 would say it has what was committed); RFC 6455's code for a close
 * without one marks it the gateway's, for its line (closed_status). */
#define WS_CLOSE_MISSED LWS_CLOSE_STATUS_ABNORMAL_CLOSE
/* Merged members whose survivor a stream's check named, remembered so
 * that a handshake under their sessions counts the survivor's streams:
 * the last so many (the oldest forgotten first: its next stream's check
 * finds the survivor again). */
#define MERGES_KEPT 256
/* Accounts a member's stream streamed before merges moved it, kept for
 * what it was not yet sent of theirs (repoint): one per merge it is
 * behind. A stream behind more merges than this is closed (1013): it
 * reconnects, as one that fell behind the ring does. */
#define PRIORS_MAX 4

/*
 * Request ids (the request log's "id", stderr's "request N"): a run's
 * counter, seeded so that other runs' ids do not meet it (below: when they
 * could), with nothing stored, every id below 2^53 so that a double holds
 * it exactly (jq 1.6, Debian 12's, and JavaScript read JSON numbers so:
 * above 2^53, two ids print alike). Bits 0..45 count on from the
 * milliseconds since 2026-01-01 at the start times 64 (ID_RATE_BITS);
 * bits 46..52 are a random tag of the run (ID_TAG_BITS).
 * - A restart's ids are new: the last run's ids stayed below its end's
 *   milliseconds times 64 unless it averaged over 64,000 ids (requests and
 *   member streams' checks) a second from its start, and the new run
 *   starts above that (its clock not set back). Milliseconds, not
 *   seconds: a run restarted within the second it started in would reuse
 *   its ids.
 * - Instances on one database count apart by their tags: two runs' ids
 *   meet only if their tags do (1 in 128) and then only once the earlier
 *   has given 64 ids for each millisecond between their starts. A counter
 *   alone seeded from the clock would not do: one instance serving more
 *   than the other catches up with its later start.
 * - The count's 46 bits last 2^40 ms from 2026, to 2060-11-03; past it the
 *   seed wraps to 0 (the ids of 2026 again) and a run's counter wraps
 *   within its 46 bits, its tag kept: below 2^53 always, never 0.
 * Not from the store: it keeps no request's id (a command's is in memory
 * only), and a count of runs kept there would be a write at every start.
 */
#define ID_RATE_BITS  6
#define ID_COUNT_BITS 46
#define ID_TAG_BITS   7
#define ID_COUNT_MASK ((UINT64_C(1) << ID_COUNT_BITS) - 1)
#define ID_EPOCH_MS   INT64_C(1767225600000) /* 2026-01-01T00:00:00Z */
_Static_assert(ID_COUNT_BITS + ID_TAG_BITS == 53, "an id is exact in a double (2^53)");

/* http.body_total_max_bytes is counted in size_t (pgw_api_body_reserve). */
_Static_assert(PGW_HTTP_BODIES_MAX <= SIZE_MAX, "the bodies' total fits a size_t");

/* Each piece of body restarts lws's timeout; a tick must come before it. */
_Static_assert(BODY_TICK_S < LWS_TIMEOUT_S, "lws would drop a paused body first");

/* A drain stops past STREAM_TURN_MAX (a job's transfers go in whole), so
 * that watchers are fed before the ring comes round to them: lws serves
 * its wake-up pipe before the sockets, so a watcher that reads sees two
 * drains between its turns. */
_Static_assert(2 * (STREAM_TURN_MAX + PGW_COMMAND_TRANSFERS_MAX) < STREAM_RING,
               "two drains lap the ring");

/* A live-stream message: a committed transfer. */
typedef struct stream_msg {
    char shop[PGW_ID_MAX + 1];
    /* The accounts it is about (pgw_stream_about), kept only while a
     * member's stream is open (h->n_members): the others never read them,
     * and every transfer would pay for their copy. */
    char accounts[2][PGW_ACCOUNT_MAX + 1];
    size_t len;
    char json[STREAM_MSG_MAX];
} stream_msg;

/* A live-stream message no job carries, as handed over (stream_news), or
 * a merge no job carries (stream_follow: json NULL). */
typedef struct news_item {
    char shop[PGW_ID_MAX + 1];
    char accounts[2][PGW_ACCOUNT_MAX + 1];
    char *json; /* malloc'd, the producer's, now the item's */
    char merged[PGW_ID_MAX + 1], survivor[PGW_ID_MAX + 1];
} news_item;

/* A finished job, or a live-stream message that no job carries (the expiry
 * sweep's transfers): one queue, so that the stream keeps the order in
 * which the writer completed them, the log's. */
typedef struct done_item {
    pgw_job *job;    /* NULL: `news` */
    news_item *news; /* malloc'd */
} done_item;

/* A member merged into another, as a stream's check found it. */
typedef struct merge_seen {
    char member[PGW_ID_MAX + 1];
    char survivor[PGW_ID_MAX + 1];
} merge_seen;

/* One WebSocket watcher of /v1/stream (lives as long as the connection). */
typedef struct watcher {
    bool allowed;
    bool counted;              /* in h->watchers */
    uint64_t next;             /* sequence number of the next message to consider */
    uint64_t gaps;             /* h->stream_gaps when it connected */
    char shop[PGW_ID_MAX + 1]; /* "" for every shop */
    char key_name[PGW_ID_MAX + 1];
    /* A key's stream: the key that let it in, asked about again once the
     * keys were reloaded since (h->keys_loaded). */
    pgw_principal key;
    uint64_t keys_seen;
    int64_t asked_us; /* when its handshake came: logged once lws upgraded it */
    /* A member's stream (a mini-program session): its messages only. */
    bool member;
    bool listed;       /* in h->members */
    bool checked;      /* the store found its session live: `account` is whose */
    bool logged;       /* its handshake's line: once the store answered */
    uint64_t check_id; /* its session's check, out on the reader (a slot); 0: none */
    /* Its first check's request id: its line's "id", which the store's
     * stderr line on that check names too (writer.c keep_reason). */
    uint64_t first_check;
    int close_code; /* > 0: closed so at its next turn (close_reason), or WS_CLOSE_MISSED */
    const char *close_reason;
    pgw_session session;
    char account[PGW_ACCOUNT_MAX + 1]; /* "member:<id>", a merged member's survivor */
    /* The accounts it streamed before merges moved it (repoint), each
     * for the messages before its `until` it was not yet sent. */
    struct {
        char account[PGW_ACCOUNT_MAX + 1];
        uint64_t until;
    } priors[PRIORS_MAX];
    size_t n_priors;
    /* Until checked, whose streams it counts in: its token's member, or
     * that one's survivor when a check found the merge (h->merges). */
    char counts_for[PGW_ID_MAX + 1];
    struct lws *wsi;
    struct watcher *prev_member, *next_member; /* h->members */
    /* Its client's address (through trusted proxies), read at the
     * handshake: its line is written later (a member's at the store's
     * answer or at its close, when the socket may be reset and lws gives
     * its getpeername error in place of the address; a key's once
     * upgraded, when the handshake's headers are gone). */
    char client[sizeof(((pgw_request *)NULL)->client_address)];
} watcher;

/* One HTTP transaction (lws allocates it zeroed, per transaction). */
typedef struct req req;
struct req {
    pgw_request r;
    uint8_t *body;
    size_t body_expected;
    size_t reserved;          /* of http.body_total_max_bytes, for body: drop_body gives it back */
    pgw_body_share share;     /* ... in its share (pgw_api_body_reserve) */
    int64_t body_deadline_us; /* from r.received_us: the body is whole by then */
    bool dispatched;          /* handed to the API: once per transaction */
    bool body_completed;      /* lws said so once: a second time, bytes followed it */
    bool body_ticked;         /* watch_body's timer has ticked for this body */
    /* watch_body's timer, scheduled while a body is awaited and cancelled
     * once it is not (unhook_body): lws's sorted list of timers is walked
     * at each insertion, and 128 lingering ones cost the service thread a
     * tenth of its time. Once the request is dispatched, the deadline of
     * its answer, if it has one (answer_late). */
    lws_sorted_usec_list_t body_sul;
    struct lws *body_wsi; /* the connection body_sul ticks for */
    bool close_after;     /* the connection cannot carry another request */
    bool keep_alive_10;   /* HTTP/1.0 asking to keep the connection: say it is kept */
    bool kept;            /* lws keeps the connection after the answer, unless close_after */
    bool asked_close;     /* the request's Connection lists "close" (asks_close) */
    bool waiting;         /* a job is out; r.id is in the slot table */
    bool responding;      /* resp is ready to send */
    bool change;          /* and reports a committed change (pgw_response.committed) */
    bool headers_sent;
    bool logged; /* its one log line is written */
    pgw_response resp;
    size_t sent;
};

typedef struct slot {
    uint64_t id;       /* 0: empty */
    struct lws *wsi;   /* NULL: the client left; `left` says what it asked */
    pgw_request *left; /* malloc'd, for the log line its answer still gets */
    bool watcher;      /* a member's stream's check (wsi's user is a watcher), not a request */
    struct req *gone;  /* malloc'd: a member's stream closed before its check, its log line */
} slot;

struct pgw_http {
    struct lws_context *ctx;
    /* Set once ctx exists: the notifier starts with the API, before the
     * context, and its news must not wake a context that is not there. */
    atomic_bool live;
    struct lws_vhost *vhost;
    struct lws_protocols protocols[3]; /* http, the stream, the terminator */
    struct lws_protocol_vhost_options stream_default, stream_pvo;
    lws_retry_bo_t stream_idle; /* the vhost's: pings a silent stream, closes one still silent */
    pgw_api *api;
    size_t body_max;
    int64_t body_timeout_s;
    int64_t keepalive_timeout_s; /* lws's keepalive_timeout, said in Keep-Alive */
    int port;
    char iface[PGW_LISTEN_MAX + 1];
    bool ipv6;                      /* iface is an IPv6 address */
    const char *tls_cert, *tls_key; /* borrowed from the options; NULL: plain HTTP */
    const pgw_prefix *proxies;      /* the configuration's trusted_proxies (borrowed) */
    size_t n_proxies;
    /* The listening socket's wsi, as lws hands it to each connection's
     * filter (none before the first), and its rest while accept fails
     * (pause_accepts; 0 ms: accepting). Service thread only. */
    struct lws *listener;
    lws_sorted_usec_list_t accept_sul;
    int64_t accept_rest_ms;
    volatile sig_atomic_t stop;
    /* Stopping, the work drained: each stream is fed what was committed,
     * then closed 1001 (leave_stream). Service thread only. */
    bool going_away;
    lws_sorted_usec_list_t stop_sul;  /* wakes the drain's loop: its deadlines bound it */
    lws_sorted_usec_list_t quiet_sul; /* the API's idle check (quiet_tick) */
    size_t responding;                /* transactions with an answer not yet fully sent */
    size_t responding_changes;        /* of those, answers that report a change (req.change) */
    /* Finished jobs and news, handed over by the writer, reader and courier
     * threads: at most one entry per job in flight plus NEWS_PENDING_MAX of
     * news. */
    pthread_mutex_t lock;
    done_item *done, *draining;
    size_t done_cap, done_count, news_pending;
    size_t drain_at, drain_count; /* draining[drain_at..drain_count): left for the next turn */
    size_t news_dropped;          /* since the last drain: the stream has a gap */
    /* The live stream: a ring every watcher reads at its own pace. */
    stream_msg *ring;
    uint64_t ring_seq; /* messages ever put in */
    bool ring_news;
    /* Gaps in the stream: news dropped. A watcher connected before one
     * missed a message and is closed (service thread only). */
    uint64_t stream_gaps;
    /* Watchers connected. With none, no message is made: a watcher reads
     * from the moment it connects, and rendering every transfer as JSON for
     * nobody was a tenth of the service thread at full load. */
    size_t watchers;
    /* Members' streams (watchers under a session), listed: a member's
     * tabs are counted, and each looks at every message. */
    watcher *members;
    size_t n_members, members_max;
    merge_seen merges[MERGES_KEPT]; /* a ring: merges_next is the oldest */
    size_t merges_next;
    int64_t member_check_s; /* each one's session checked again this often */
    /* A reload's keys (pgw_http_reload_keys), under lock: offered, taken
     * by the service thread (take_keys), none once it stops serving. */
    pgw_auth *keys_offered;
    atomic_bool keys_waiting; /* keys_offered is set: looked at without the lock */
    bool keys_closed;
    pthread_cond_t keys_taken;
    uint64_t keys_loaded; /* reloads taken (service thread only) */
    /* Waiting requests by id: service thread only. Linear probing. */
    slot *slots;
    size_t slot_mask;
    uint64_t next_id;       /* the last request id given (first_ids at the start) */
    pgw_log_limit oom_said; /* out-of-memory lines (service thread only) */
    /* Connections per client address (http.max_connections_per_address;
     * NULL: no limit), the one accepted last until its connection claims
     * it (claim_peer), and the lines of refusals. Service thread only. */
    pgw_peer_limit *peers;
    struct {
        int fd;
        pgw_prefix addr;
        bool counted;
    } accepted;
    pgw_log_limit peers_said;
    /* Every answer's Date (RFC 9110 6.6.1), written once a second
     * (http_date). Service thread only. */
    int64_t date_s;
    char date[PGW_HTTP_DATE_MAX];
};

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The wall clock as an answer's Date: written again only when the second
 * changed, so that an answer pays for a clock read and a compare (the
 * head's cost is counted: write_head). A clock set before 1970 or past
 * 9999 writes none (""), as RFC 9110 6.6.1 lets a server without a
 * usable clock. */
static const char *http_date(pgw_http *h)
{
    int64_t now_s = wall_us() / 1000000;
    if (now_s != h->date_s || h->date[0] == '\0') {
        (void)pgw_format_http_date(now_s, h->date); /* "" when out of range */
        h->date_s = now_s;
    }
    return h->date;
}

/* ---- the request log ------------------------------------------------------------------------ */

/* h->next_id at the start (the ids' comment above): the first id is one more. */
static uint64_t first_ids(void)
{
    uint8_t tag = 0;
    if (RAND_bytes(&tag, sizeof(tag)) != 1) /* the pid: still a tag */
        tag = (uint8_t)getpid();
    int64_t ms = wall_us() / 1000 - ID_EPOCH_MS;
    uint64_t since = ms < 0 ? 0 : (uint64_t)ms; /* a clock before 2026: the tag still tells */
    uint64_t counted = (since << ID_RATE_BITS) & ID_COUNT_MASK;
    return (uint64_t)(tag & ((1u << ID_TAG_BITS) - 1)) << ID_COUNT_BITS | counted;
}

/* The next request id (a request's or a member stream's check): its count
 * on by one within ID_COUNT_BITS, its tag kept; never 0, which says none. */
static uint64_t new_id(pgw_http *h)
{
    uint64_t tag = h->next_id & ~ID_COUNT_MASK;
    PGW_ASSERT(tag >> ID_COUNT_BITS < (1u << ID_TAG_BITS));
    h->next_id = tag | ((h->next_id + 1) & ID_COUNT_MASK);
    if (h->next_id == 0) /* tag 0 wrapped: 0 is no id */
        h->next_id = 1;
    return h->next_id;
}

/* Whether `seg` (len bytes) is a mainland mobile number, maybe after +86,
 * as a member's id typed into a path: its 11 digits at *digits. */
static bool phone_segment(const char *seg, size_t len, const char **digits)
{
    if (len == 14 && strncmp(seg, "+86", 3) == 0)
        seg += 3, len -= 3;
    if (len != 11 || seg[0] != '1' || seg[1] < '3' || seg[1] > '9' ||
        strspn(seg, "0123456789") < len)
        return false;
    *digits = seg;
    return true;
}

/* path with each segment that is a phone masked as the member view shows
 * one ("138****8000"): the log is read by more people than the ledger.
 * False when none is (out untouched). */
static bool mask_phones(const char *path, char *out, size_t cap)
{
    size_t n = 0;
    bool masked = false;
    for (const char *seg = path; *seg != '\0';) {
        size_t len = strcspn(seg, "/");
        const char *digits = NULL;
        char e164[16], shown[12];
        bool hit = phone_segment(seg, len, &digits) &&
                   snprintf(e164, sizeof(e164), "+86%.11s", digits) > 0 &&
                   pgw_phone_mask(e164, shown, sizeof(shown)) == PGW_OK;
        masked = masked || hit;
        /* Copied, not printed: this runs for every segment of every path. */
        size_t wrote = hit ? strlen(shown) : len;
        PGW_ASSERT(wrote < cap - n); /* a mask is shorter than its phone */
        memcpy(out + n, hit ? shown : seg, wrote);
        out[n + wrote] = '\0';
        n += wrote;
        seg += len;
        if (*seg == '/') {
            PGW_ASSERT(n + 1 < cap);
            out[n++] = '/', out[n] = '\0', seg++;
        }
    }
    return masked;
}

/* The request's log line (api.h), a phone in its path masked. */
static void log_request(pgw_http *h, const pgw_request *r, const pgw_response *resp, int64_t at)
{
    char path[sizeof(r->path)];
    if (!mask_phones(r->path, path, sizeof(path))) {
        pgw_api_log(h->api, r, resp, at);
        return;
    }
    pgw_request shown = *r; /* rare: the copy is paid for a phone only */
    memcpy(shown.path, path, sizeof(path));
    pgw_api_log(h->api, &shown, resp, at);
}

/* ---- the waiting table ----------------------------------------------------------- */

static size_t home_of(const pgw_http *h, uint64_t id)
{
    return (size_t)(id * 0x9E3779B97F4A7C15ULL >> 17) & h->slot_mask;
}

static void slot_put(pgw_http *h, uint64_t id, struct lws *wsi, bool for_watcher)
{
    size_t i = home_of(h, id);
    while (h->slots[i].id != 0)
        i = (i + 1) & h->slot_mask;
    h->slots[i] = (slot){.id = id, .wsi = wsi, .watcher = for_watcher};
}

static size_t slot_find(const pgw_http *h, uint64_t id)
{
    for (size_t i = home_of(h, id);; i = (i + 1) & h->slot_mask) {
        if (h->slots[i].id == id)
            return i;
        if (h->slots[i].id == 0)
            return SIZE_MAX;
    }
}

/* Removes slot i, shifting back later entries of its probe run (util/probe.h). */
static void slot_remove(pgw_http *h, size_t i)
{
    h->slots[i] = (slot){0}; /* `left`, `gone` too: pgw_http_free frees what is left there */
    for (size_t j = (i + 1) & h->slot_mask; h->slots[j].id != 0; j = (j + 1) & h->slot_mask) {
        if (!pgw_probe_stays(home_of(h, h->slots[j].id), i, j)) {
            h->slots[i] = h->slots[j];
            h->slots[j] = (slot){0};
            i = j;
        }
    }
}

/* ---- completions from other threads --------------------------------------------------- */

static void notify(pgw_job *job, void *ctx)
{
    pgw_http *h = ctx;
    PGW_ASSERT(job != NULL);
    pthread_mutex_lock(&h->lock);
    PGW_ASSERT(h->done_count < h->done_cap); /* at most one entry per job in flight */
    h->done[h->done_count++] = (done_item){.job = job};
    bool first = h->done_count == 1;
    pthread_mutex_unlock(&h->lock);
    /* One wake-up per batch, not per job: the service thread takes the
     * whole queue, and each wake-up costs it a poll() over every socket. */
    if (first)
        lws_cancel_service(h->ctx);
}

/* A stream message no job carries: a transfer the expiry sweep committed,
 * a notice's state change (api.h pgw_api_stream_news). Past
 * NEWS_PENDING_MAX waiting (a service thread far behind) a transfer is
 * dropped, and the next drain closes every watcher: each missed it. A
 * notice, best effort, is dropped past half that, silently: a flood of
 * them (thousands of sales a second, each one's notice) must neither
 * crowd the sweep's transfers out nor close watchers that keep up. */
static void queue_news(pgw_http *h, news_item *news, bool transfer)
{
    pthread_mutex_lock(&h->lock);
    bool room =
        news != NULL && h->news_pending < (transfer ? NEWS_PENDING_MAX : NEWS_PENDING_MAX / 2);
    if (room) {
        PGW_ASSERT(h->done_count < h->done_cap);
        h->done[h->done_count++] = (done_item){.news = news};
        h->news_pending++;
    }
    h->news_dropped += !room && transfer;
    bool first = room && h->done_count == 1;
    pthread_mutex_unlock(&h->lock);
    if (!room && news != NULL) {
        free(news->json);
        free(news);
    }
    if (first && atomic_load(&h->live)) /* else the first drain will find it */
        lws_cancel_service(h->ctx);
}

static void stream_news(char *json, const pgw_stream_about *about, bool transfer, void *ctx)
{
    pgw_http *h = ctx;
    news_item *news = calloc(1, sizeof(*news)); /* out of memory: dropped, as past room */
    if (news != NULL) {
        snprintf(news->shop, sizeof(news->shop), "%s", about->shop);
        for (size_t i = 0; i < 2; i++)
            snprintf(news->accounts[i], sizeof(news->accounts[i]), "%s", about->accounts[i]);
        news->json = json;
    } else {
        free(json);
    }
    queue_news(h, news, transfer);
}

/* A merge no job carries (a follower's link, api.h stream_follow): queued
 * after its transfers, so that members' streams follow it where it falls
 * in the stream (follow_merge), as a request's merge. Dropped past room,
 * it is a transfer's gap: every watcher is closed. */
static void stream_follow(void *ctx, const pgw_stream_change *change)
{
    pgw_http *h = ctx;
    if (change->merged == NULL)
        return; /* a logout is a request's: never one no job carries */
    news_item *news = calloc(1, sizeof(*news));
    if (news != NULL) {
        snprintf(news->merged, sizeof(news->merged), "%.*s", PGW_ID_MAX, change->merged);
        snprintf(news->survivor, sizeof(news->survivor), "%.*s", PGW_ID_MAX, change->survivor);
    }
    queue_news(h, news, true);
}

static void respond(pgw_http *h, struct lws *wsi, req *q)
{
    q->responding = true;
    q->change = q->resp.committed;
    h->responding++;
    h->responding_changes += q->change;
    lws_callback_on_writable(wsi);
}

/* Its answer is sent whole, or never will be (the connection closed). */
static void stop_responding(pgw_http *h, req *q)
{
    PGW_ASSERT(q->responding && h->responding > 0 && h->responding_changes >= q->change);
    q->responding = false;
    h->responding--;
    h->responding_changes -= q->change;
}

/* Puts a committed transfer on the live stream. */
static void emit(void *ctx, const pgw_stream_about *about, const char *json, size_t len)
{
    pgw_http *h = ctx;
    if (len > STREAM_MSG_MAX) { /* bounded fields make this unreachable; never crash for it */
        fprintf(stderr, "pointsgw: a stream message of %zu bytes was dropped\n", len);
        return;
    }
    stream_msg *m = &h->ring[h->ring_seq % STREAM_RING];
    snprintf(m->shop, sizeof(m->shop), "%s", about->shop);
    /* A member's stream reads from its connection on (w->next), when
     * n_members already counted it: it never reads a message kept without. */
    for (size_t i = 0; h->n_members > 0 && i < 2; i++)
        snprintf(m->accounts[i], sizeof(m->accounts[i]), "%s", about->accounts[i]);
    memcpy(m->json, json, len);
    m->len = len;
    h->ring_seq++;
    h->ring_news = true;
}

/* Takes the finished jobs and news the other threads handed over. */
static void take_done(pgw_http *h)
{
    PGW_ASSERT(h->drain_at == h->drain_count);
    pthread_mutex_lock(&h->lock);
    size_t n = h->done_count;
    memcpy(h->draining, h->done, n * sizeof(*h->done));
    h->done_count = 0;
    h->news_pending = 0;
    size_t dropped = h->news_dropped;
    h->news_dropped = 0;
    pthread_mutex_unlock(&h->lock);
    h->drain_at = 0;
    h->drain_count = n;
    if (dropped > 0 && h->watchers > 0) { /* else nobody missed them */
        fprintf(stderr,
                "pointsgw: the live stream dropped %zu transfer messages (the service thread "
                "fell behind); its watchers are closed\n",
                dropped);
        h->stream_gaps++;
        h->ring_news = true; /* each watcher's turn closes it */
    }
}

static void member_checked(pgw_http *h, struct lws *wsi, req *gone, pgw_response *resp);
static void follow(void *ctx, const pgw_stream_change *change);

/* Answers a finished job if its client is still there, or streams news. */
static void finish_done(pgw_http *h, done_item *d)
{
    if (d->job == NULL) {
        news_item *n = d->news;
        pgw_stream_about about = {n->shop, {n->accounts[0], n->accounts[1]}};
        if (n->json == NULL && h->n_members > 0)
            follow(h, &(pgw_stream_change){.merged = n->merged, .survivor = n->survivor});
        else if (n->json != NULL && h->watchers > 0)
            emit(h, &about, n->json, strlen(n->json));
        free(n->json);
        free(n);
        return;
    }
    uint64_t id = 0;
    pgw_response resp;
    if (!pgw_api_finish(h->api, d->job, &id, &resp, h->watchers ? emit : NULL,
                        h->n_members ? follow : NULL, h))
        return;
    size_t at = slot_find(h, id);
    if (at == SIZE_MAX) { /* answered at its deadline, or its log line could not be kept */
        free(resp.body);
        return;
    }
    struct lws *wsi = h->slots[at].wsi;
    pgw_request *left = h->slots[at].left;
    req *gone = h->slots[at].gone;
    bool for_watcher = h->slots[at].watcher;
    slot_remove(h, at);
    if (for_watcher) {
        member_checked(h, wsi, gone, &resp);
        return;
    }
    if (wsi == NULL) { /* the client left; the write stands, and the log says so */
        resp.undelivered = true;
        log_request(h, left, &resp, wall_us());
        free(left);
        free(resp.body);
        return;
    }
    req *q = lws_wsi_user(wsi);
    PGW_ASSERT(q != NULL && q->waiting && q->r.id == id);
    q->waiting = false;
    lws_sul_cancel(&q->body_sul); /* a deadline's (answer_late) */
    free(q->resp.body);           /* its fallback */
    q->resp = resp;
    respond(h, wsi, q);
}

/*
 * Finishes what the other threads handed over; true when some is left
 * for the next turn. With watchers, a turn adds a quarter of the ring
 * at most: all at once, more than the ring (over 2,000 jobs finishing
 * between two turns) passed every watcher before it could be fed, and
 * each was closed as too slow however fast it read. The rest waits a
 * turn, in which lws feeds the watchers; the service thread wakes itself
 * for it. Other threads wake it only when their queue was empty, and lws
 * folds wake-ups into one turn: so whatever they queued meanwhile is
 * looked for here too (missed, the service thread answered nothing more).
 */
static bool drain_done(pgw_http *h)
{
    if (h->drain_at == h->drain_count)
        take_done(h);
    uint64_t first = h->ring_seq;
    while (h->drain_at < h->drain_count &&
           !(h->watchers > 0 && h->ring_seq - first >= STREAM_TURN_MAX))
        finish_done(h, &h->draining[h->drain_at++]);
    PGW_ASSERT(h->ring_seq - first < STREAM_RING);
    bool more = h->drain_at < h->drain_count;
    if (!more) { /* what came while the rest waited: its wake-up was this turn's */
        pthread_mutex_lock(&h->lock);
        more = h->done_count > 0;
        pthread_mutex_unlock(&h->lock);
    }
    if (more && h->ctx != NULL)
        lws_cancel_service(h->ctx);
    if (h->ring_news && h->ctx != NULL)
        lws_callback_on_writable_all_protocol(h->ctx, &h->protocols[1]);
    h->ring_news = false;
    return more;
}

/*
 * A reload's keys (pgw_http_reload_keys), taken between two requests' turns:
 * a request in flight keeps the principal it was let in with (a copy);
 * each key's stream is asked at its next turn whether its key still
 * stands (key_gone).
 */
static void take_keys(pgw_http *h)
{
    if (!atomic_load(&h->keys_waiting))
        return;
    pthread_mutex_lock(&h->lock);
    bool taken = h->keys_offered != NULL;
    if (taken)
        pgw_auth_take_keys(pgw_api_auth(h->api), h->keys_offered);
    h->keys_offered = NULL;
    atomic_store(&h->keys_waiting, false);
    pthread_cond_broadcast(&h->keys_taken);
    pthread_mutex_unlock(&h->lock);
    if (taken) {
        h->keys_loaded++;
        lws_callback_on_writable_all_protocol(h->ctx, &h->protocols[1]);
    }
}

/* ---- reading a request ------------------------------------------------------------------ */

/* lws keeps a value's trailing whitespace, which RFC 9110 5.5 strips: a
 * key copied with a space after it was 401 (the HTTP review). */
static bool trimmed(char *value)
{
    for (size_t end = strlen(value); end > 0 && strchr(" \t", value[end - 1]);)
        value[--end] = '\0';
    return true;
}

/* Copies a header into out, trimmed; false when it is longer than out. ""
 * when absent. */
static bool copy_header(struct lws *wsi, enum lws_token_indexes token, char *out, size_t cap)
{
    out[0] = '\0';
    int len = lws_hdr_total_length(wsi, token);
    if (len <= 0)
        return true;
    if ((size_t)len >= cap)
        return false;
    return lws_hdr_copy(wsi, out, (int)cap, token) >= 0 && trimmed(out);
}

/* Whether lws 4.1 ended the request line early: at a CR or LF it has
 * decoded (%0D, %0A), reading the rest as a header or skipping it:
 * "?x=%0A&channel=pos" came as "x=" and "/v1/members/M1%0Ax" as M1 (the
 * lws review). The version after the target is then never read: its
 * absence is the only trace (as of a line sent with none, HTTP/0.9). */
static bool line_cut(struct lws *wsi)
{
    return lws_hdr_total_length(wsi, WSI_TOKEN_HTTP) <= 0;
}

/*
 * Whether argument `i` of the query (`part`, `len` bytes) is the "/" lws
 * 4.1 writes into an empty last argument: its parser "enforces a start
 * with /" at the space ending the target in whatever fragment is open, the
 * query's too, so "/v1/events?" came as query "/" and "?a=1&" as "a=1&/",
 * and a client signing what it sent was refused (bad X-PGW-Signature).
 * Taken as the empty argument it stands for; a "/" really sent there is
 * lost with it, an argument no route reads.
 */
static bool lws_invented_slash(struct lws *wsi, int i, const char *part, int len)
{
    return len == 1 && part[0] == '/' &&
           lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i + 1) <= 0;
}

/* The query string, its arguments joined with '&' (lws keeps them apart,
 * percent-escapes decoded): NULL, or why it cannot be. An argument holding
 * '&' (sent as %26) would split in two when read again: "to=X%26from%3DY"
 * set `from`. No argument of the API has one. A line cut short (line_cut)
 * has lost what followed: every route and the stream's handshake read the
 * query here, so they all refuse it. */
static const char *copy_query(struct lws *wsi, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    if (line_cut(wsi))
        return "the request line holds a line break (%0D or %0A) or no HTTP version";
    for (int i = 0;; i++) {
        char part[PGW_QUERY_MAX + 1];
        int len = lws_hdr_copy_fragment(wsi, part, sizeof(part), WSI_TOKEN_HTTP_URI_ARGS, i);
        if (len < 0)
            return lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i) <= 0
                       ? NULL
                       : "the query is too long";
        if (memchr(part, '&', (size_t)len) != NULL)
            return "a query argument holds '&' (%26): none of the API's does";
        if (lws_invented_slash(wsi, i, part, len))
            part[len = 0] = '\0';
        size_t sep = n > 0; /* the '&' before every argument but the first */
        if (n + sep + (size_t)len + 1 > cap)
            return "the query is too long";
        n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? "&" : "", part);
    }
}

/*
 * What is wrong with the request's target (NULL: nothing), its query
 * copied into out (copy_query). lws 4.1 ends the path at a %00 decoded
 * right after a slash and reads on, counting what follows, uri_len bytes
 * in all: "/v1/members/%00M1" came as "/v1/members/", a 404, where a NUL
 * can never be a path's. At the path's very end nothing tells it from
 * "/v1/members/"; anywhere else, the query's included, lws closes the
 * connection, unanswered, before the gateway hears of it.
 */
static const char *bad_target(struct lws *wsi, size_t path_len, int uri_len, char *out, size_t cap)
{
    const char *bad = copy_query(wsi, out, cap);
    if (bad == NULL && path_len < (size_t)uri_len)
        return "the path holds %00, a NUL byte: no path of the API has one";
    return bad;
}

static bool copy_custom(struct lws *wsi, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    int len = lws_hdr_custom_length(wsi, name, (int)strlen(name));
    if (len <= 0)
        return true;
    if ((size_t)len >= cap)
        return false;
    return lws_hdr_custom_copy(wsi, out, (int)cap, name, (int)strlen(name)) >= 0 && trimmed(out);
}

/*
 * Whether Transfer-Encoding came spelt so that lws took it for another
 * header ("Transfer-Encoding : chunked", whitespace before the colon, or
 * before the name): lws then read the body by Content-Length, where a
 * proxy in front may have read it chunked. RFC 9112 5.1 wants such a
 * request refused; lws 4.1 lists no unknown names, so the likely
 * spellings are asked for by name.
 */
static bool spelt_oddly_te(struct lws *wsi)
{
    static const char *const names[] = {"transfer-encoding :", "transfer-encoding\t:",
                                        " transfer-encoding:", "\ttransfer-encoding:"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (lws_hdr_custom_length(wsi, names[i], (int)strlen(names[i])) >= 0)
            return true;
    }
    return false;
}

/* Sends q->resp, an answer of this layer's own, under whatever was read
 * of the request: a 413 of /v1/events counts there, under its key, not
 * under "other" and "-". */
static void answer_early(pgw_http *h, struct lws *wsi, req *q)
{
    pgw_api_key_label(h->api, &q->r, q->resp.key_name);
    q->resp.route = pgw_api_route_label(q->r.path);
    respond(h, wsi, q);
}

static void refuse(pgw_http *h, struct lws *wsi, req *q, int status, const char *code,
                   const char *message)
{
    memset(&q->resp, 0, sizeof(q->resp));
    pgw_api_error(&q->resp, status, code, message);
    answer_early(h, wsi, q);
}

static void unhook_body(req *q);

/* A job whose client waits only so long (pgw_response.answer_within_us)
 * is not back: the fallback the API gave is sent, and its answer, when
 * it comes, finds no slot (finish_done drops it). */
static void answer_late(lws_sorted_usec_list_t *sul)
{
    req *q = lws_container_of(sul, req, body_sul);
    if (!q->waiting)
        return;
    pgw_http *h = lws_context_user(lws_get_context(q->body_wsi));
    size_t at = slot_find(h, q->r.id);
    PGW_ASSERT(at != SIZE_MAX && h->slots[at].wsi == q->body_wsi);
    slot_remove(h, at);
    q->waiting = false;
    respond(h, q->body_wsi, q);
}

static void dispatch(pgw_http *h, struct lws *wsi, req *q)
{
    PGW_ASSERT(!q->dispatched);
    q->dispatched = true;
    unhook_body(q);
    q->r.body = q->body;
    q->r.body_len = q->body_expected;
    q->r.id = new_id(h);
    if (pgw_api_handle(h->api, &q->r, &q->resp)) {
        q->waiting = true;
        slot_put(h, q->r.id, wsi, false);
        if (q->resp.answer_within_us > 0) {
            q->body_wsi = wsi;
            lws_sul_schedule(lws_get_context(wsi), 0, &q->body_sul, answer_late,
                             q->resp.answer_within_us);
        }
        /*
         * libwebsockets timed the request from its headers on (LWS_TIMEOUT_S)
         * and only a body's end stopped that: a GET waiting more than 5 s on
         * the database was dropped unanswered, its answer logged undelivered.
         * A request waiting for its answer has no deadline of ours: it waits
         * its turn in the writer's or reader's queue as long as the database
         * takes. What bounds that is the database's own (SQLite's busy
         * timeout, PostgreSQL's lock_timeout and TCP keepalives), and
         * max_inflight: past it, requests are answered 503 at once. A client
         * that gives up closes; its answer is logged undelivered.
         */
        lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
        return;
    }
    respond(h, wsi, q);
}

/* Whether the client waits for "100 Continue" before its body (RFC 9110
 * 10.1.1): curl 7.88 does for bodies over 1 MiB, .NET Framework for every POST. lws 4.1
 * never answers it, so each such request waited the client's timeout
 * (curl: a second) before sending its body. */
static bool expects_continue(struct lws *wsi)
{
    char expect[32];
    return copy_header(wsi, WSI_TOKEN_HTTP_EXPECT, expect, sizeof(expect)) &&
           strcasecmp(expect, "100-continue") == 0;
}

/* Whether the request line says HTTP/1.1, as lws reads it (server.c,
 * lws_http_action): anything else it serves as HTTP/1.0. */
static bool http11(struct lws *wsi)
{
    char version[16];
    return copy_header(wsi, WSI_TOKEN_HTTP, version, sizeof(version)) &&
           strcmp(version, "HTTP/1.1") == 0;
}

/*
 * Whether Host came on more than one line. lws 4.1 joins a known
 * header's repeated lines into one value ("x, y"), the first line its
 * first fragment: a proxy routing by one line and the gateway reading
 * both would not agree on the request's target (RFC 9112 3.2: 400).
 */
static bool host_repeated(struct lws *wsi)
{
    return lws_hdr_total_length(wsi, WSI_TOKEN_HOST) !=
           lws_hdr_fragment_length(wsi, WSI_TOKEN_HOST, 0);
}

/* Whether Host is absent, not merely empty (RFC 9110 7.2: what a target
 * with no authority sends). lws 4.1 counts both as length 0; only an
 * absent one has no fragment to copy. */
static bool host_absent(struct lws *wsi)
{
    char empty[1];
    return lws_hdr_total_length(wsi, WSI_TOKEN_HOST) <= 0 &&
           lws_hdr_copy_fragment(wsi, empty, sizeof(empty), WSI_TOKEN_HOST, 0) < 0;
}

/* Why the request's Host is refused (RFC 9112 3.2), or NULL. HTTP/1.0
 * predates Host and may leave it out. */
static const char *bad_host(struct lws *wsi)
{
    if (host_repeated(wsi))
        return "Host came on more than one line: send it once (RFC 9112 3.2)";
    if (host_absent(wsi) && http11(wsi))
        return "an HTTP/1.1 request needs a Host header (RFC 9112 3.2)";
    return NULL;
}

/* Whether the Connection header is `value`, as lws compares it (server.c,
 * lws_http_action: the whole value, untrimmed: "keep-alive " is no
 * keep-alive to lws, which then closes; copy_header would trim it). */
static bool connection_is(struct lws *wsi, const char *value)
{
    char connection[32];
    int len = lws_hdr_total_length(wsi, WSI_TOKEN_CONNECTION);
    return len > 0 && (size_t)len < sizeof(connection) &&
           lws_hdr_copy(wsi, connection, (int)sizeof(connection), WSI_TOKEN_CONNECTION) >= 0 &&
           strcasecmp(connection, value) == 0;
}

/* Whether an HTTP/1.0 request asks for keep-alive, as lws decides it: lws
 * then keeps the connection, and RFC 9112 C.2.2 has the answer say so, or
 * the client takes it for closed after the answer. */
static bool keep_alive_10(struct lws *wsi)
{
    return !http11(wsi) && connection_is(wsi, "keep-alive");
}

/*
 * Whether the Connection header lists the option "close" (RFC 9110 7.6.1:
 * a comma-separated list, any case, spaces around each): lws 4.1 closes
 * only on the whole value "close", so "TE, close" (Perl's LWP) or "close "
 * kept the connection open after the answer, the client waiting for its end.
 * A value too long to copy is no list of ours: lws's rule stands.
 */
static bool asks_close(struct lws *wsi)
{
    char list[128];
    int len = lws_hdr_total_length(wsi, WSI_TOKEN_CONNECTION);
    if (len <= 0 || (size_t)len >= sizeof(list) ||
        lws_hdr_copy(wsi, list, (int)sizeof(list), WSI_TOKEN_CONNECTION) < 0)
        return false;
    char *rest = NULL;
    for (char *option = strtok_r(list, ",", &rest); option != NULL;
         option = strtok_r(NULL, ",", &rest)) {
        option += strspn(option, " \t");
        size_t n = strlen(option);
        while (n > 0 && (option[n - 1] == ' ' || option[n - 1] == '\t'))
            option[--n] = '\0';
        if (strcasecmp(option, "close") == 0)
            return true;
    }
    return false;
}

/* Whether lws keeps the connection after this request's answer (server.c,
 * lws_http_action): HTTP/1.1 unless it says close, HTTP/1.0 when it asks. */
static bool lws_keeps(struct lws *wsi)
{
    return http11(wsi) ? !connection_is(wsi, "close") : connection_is(wsi, "keep-alive");
}

/* The interim answer, written at once: nothing else is being written on
 * this connection (its previous answer is sent whole before lws reads the
 * next request), and lws keeps whatever the socket does not take. */
static int send_continue(struct lws *wsi)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uint8_t buf[LWS_PRE + sizeof(line)];
    memcpy(buf + LWS_PRE, line, sizeof(line) - 1);
    int n = (int)sizeof(line) - 1;
    return lws_write(wsi, buf + LWS_PRE, (size_t)n, LWS_WRITE_HTTP_HEADERS) < n ? -1 : 0;
}

/*
 * What a connection keeps between its requests, in lws's opaque pointer
 * (the per-session data is a transaction's, cleared between requests),
 * made at its first request (at its accept, when its address is counted:
 * claim_peer) and freed at LWS_CALLBACK_WSI_DESTROY. NULL
 * when memory ran out: each request then reads and hashes its own.
 */
typedef struct {
    /* The peer's address: a getpeername system call at every request was
     * a sixth of the service thread's calls on kept connections. "" until
     * read; what is no address (lws's "getpeername: ..." on a reset
     * socket) is not kept: asked again at the next request. */
    char address[sizeof(((pgw_request *)0)->client_address)];
    /* The last Bearer key sent and its hash (auth.h), when one was: a
     * till sends its one key on every request, and its SHA-256 was 4% of
     * the service thread's instructions a request. */
    char authorization[sizeof(((pgw_request *)0)->authorization)];
    size_t authorization_len;
    pgw_bearer bearer;
    /* Counted against its address (peer_limit.h) at its accept: released
     * when it goes (WSI_DESTROY). */
    bool peer_counted;
    pgw_prefix peer;
} kept_conn;

static kept_conn *kept_of(struct lws *wsi)
{
    kept_conn *k = lws_get_opaque_user_data(wsi);
    if (k == NULL && (k = calloc(1, sizeof(*k))) != NULL)
        lws_set_opaque_user_data(wsi, k);
    return k;
}

static void kept_free(struct lws *wsi)
{
    kept_conn *k = lws_get_opaque_user_data(wsi);
    if (k != NULL)
        OPENSSL_cleanse(k, sizeof(*k)); /* a key */
    free(k);
    lws_set_opaque_user_data(wsi, NULL);
}

/* ---- connections per client address (peer_limit.h) ------------------------------------------ */

/* The address a limit counts, as the operator reads it: an IPv6 one by its /64. */
static void peer_text(const pgw_prefix *addr, char *out, size_t cap)
{
    uint8_t net[16] = {0};
    memcpy(net, addr->bytes, addr->len == 4 ? 4 : 8);
    if (inet_ntop(addr->len == 4 ? AF_INET : AF_INET6, net, out, (socklen_t)cap) == NULL)
        snprintf(out, cap, "?");
    else if (addr->len == 16 && strlen(out) + 4 < cap)
        strcat(out, "/64");
}

/*
 * Past the limit: the socket closed at once, before anything is read.
 * On plain HTTP a 429 goes first, best effort, for a client to read why
 * (one that has sent its request by then may see the connection reset
 * instead); over TLS nothing, as no handshake was made to say it in.
 */
static void refuse_peer(pgw_http *h, int fd, const pgw_prefix *addr)
{
    static const char body[] =
        "{\"error\": {\"code\": \"rate_limited\", \"message\": \"too many connections from "
        "this address (http.max_connections_per_address): close idle ones, or retry\", "
        "\"details\": {}}}";
    char answer[512];
    int n = snprintf(answer, sizeof(answer),
                     "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                     "Retry-After: 1\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof(body) - 1, body);
    PGW_ASSERT(n > 0 && (size_t)n < sizeof(answer));
    if (h->tls_cert == NULL)
        (void)!send(fd, answer, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    pgw_api_connection_refused(h->api);
    char who[INET6_ADDRSTRLEN + 4], cause[PGW_LOG_CAUSE_MAX], line[PGW_LOG_LINE_MAX];
    peer_text(addr, who, sizeof(who));
    snprintf(cause, sizeof(cause), "%s holds %u (http.max_connections_per_address)", who,
             pgw_peer_limit_held(h->peers, addr));
    uint64_t unsaid = 0;
    if (pgw_log_due(&h->peers_said, pgw_monotonic_s(), cause, &unsaid)) {
        pgw_log_line(PGW_LOG_FAILED, "a connection refused", cause, unsaid, line);
        fputs(line, stderr);
    }
}

/*
 * A connection just accepted (lws's filter: its socket, no wsi yet),
 * counted against its address, or refused (nonzero: lws closes it) past
 * http.max_connections_per_address. Trusted proxies are not counted: they
 * carry many clients. Its connection claims the count when lws makes it
 * (claim_peer); one lws failed to make is let go at the next accept.
 */
static int admit_peer(pgw_http *h, int fd)
{
    if (h->peers == NULL)
        return 0;
    if (h->accepted.counted)
        pgw_peer_limit_release(h->peers, &h->accepted.addr);
    h->accepted.counted = false;
    pgw_prefix addr;
    if (!pgw_address_of_peer(fd, &addr) || pgw_prefix_contains(h->proxies, h->n_proxies, &addr))
        return 0;
    pgw_peer_verdict v = pgw_peer_limit_take(h->peers, &addr);
    if (v == PGW_PEER_OVER) {
        refuse_peer(h, fd, &addr);
        return 1;
    }
    if (v == PGW_PEER_TAKEN) {
        h->accepted.fd = fd;
        h->accepted.addr = addr;
        h->accepted.counted = true;
    }
    return 0; /* PGW_PEER_UNCOUNTED: more addresses than counted, let in */
}

/* The secret that scatters addresses in the table: random, or (no
 * randomness to be had) the clock, which a client cannot read either. */
static uint64_t peer_seed(void)
{
    uint64_t seed;
    if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1)
        seed = (uint64_t)pgw_monotonic_us() ^ (uint64_t)wall_us();
    return seed;
}

/* The connection lws made of the socket admit_peer counted takes its count. */
static void claim_peer(pgw_http *h, struct lws *wsi)
{
    if (!h->accepted.counted || lws_get_socket_fd(wsi) != h->accepted.fd)
        return;
    h->accepted.counted = false;
    kept_conn *k = kept_of(wsi);
    if (k == NULL) { /* out of memory: uncounted, as past the table's room */
        pgw_peer_limit_release(h->peers, &h->accepted.addr);
        return;
    }
    k->peer = h->accepted.addr;
    k->peer_counted = true;
}

/* A connection going: its address's count, if it had one, and what it kept. */
static void connection_gone(pgw_http *h, struct lws *wsi)
{
    kept_conn *k = lws_get_opaque_user_data(wsi);
    if (k != NULL && k->peer_counted) {
        PGW_ASSERT(h->peers != NULL);
        pgw_peer_limit_release(h->peers, &k->peer);
        k->peer_counted = false;
    }
    kept_free(wsi);
}

static void peer_address(struct lws *wsi, char *out, size_t cap)
{
    kept_conn *k = kept_of(wsi);
    if (k != NULL && k->address[0] != '\0' && strlen(k->address) < cap) {
        memcpy(out, k->address, strlen(k->address) + 1);
        return;
    }
    pgw_prefix any;
    if (lws_get_peer_simple(wsi, out, (int)cap) == NULL)
        out[0] = '\0';
    else if (k != NULL && strlen(out) < sizeof(k->address) && pgw_address_parse(out, &any))
        memcpy(k->address, out, strlen(out) + 1);
}

/*
 * The request's Bearer (auth.h), hashed only when it is not the key the
 * connection's last request sent. The two are compared in constant time:
 * a proxy may carry several clients' requests on one connection. Looked
 * up among the keys once, kept with its hash, until a reload changes them.
 */
static void bearer_of(const pgw_http *h, struct lws *wsi, const char *authorization,
                      pgw_bearer *out)
{
    kept_conn *k = kept_of(wsi);
    size_t len = strlen(authorization);
    bool same = k != NULL && k->bearer.given && len == k->authorization_len &&
                CRYPTO_memcmp(authorization, k->authorization, len) == 0;
    if (same)
        *out = k->bearer;
    else
        pgw_bearer_of(authorization, out);
    pgw_auth_resolve(pgw_api_auth(h->api), out);
    if (same) {
        k->bearer = *out; /* looked up again after a reload */
    } else if (k != NULL && out->given && len < sizeof(k->authorization)) {
        memcpy(k->authorization, authorization, len + 1);
        k->authorization_len = len;
        k->bearer = *out;
    }
}

/*
 * The client's address: the peer's, or, when the peer is a proxy the
 * configuration trusts, the nearest address of X-Forwarded-For that is not
 * one. Each proxy appends the address it heard from; what stands left of
 * the first untrusted one is that client's own say, proof of nothing. An
 * entry that is no address ends the walk at the proxy that appended it.
 */
static void client_address(const pgw_http *h, struct lws *wsi, char *out, size_t cap)
{
    pgw_prefix hop;
    peer_address(wsi, out, cap);
    if (h->n_proxies == 0 || !pgw_address_parse(out, &hop) ||
        !pgw_prefix_contains(h->proxies, h->n_proxies, &hop))
        return;
    char chain[HEADER_DATA_MAX + 1];
    if (!copy_header(wsi, WSI_TOKEN_X_FORWARDED_FOR, chain, sizeof(chain)))
        return;
    char *end = chain + strlen(chain);
    while (end > chain) {
        char *start = end;
        while (start > chain && start[-1] != ',')
            start--;
        char *next = start > chain ? start - 1 : chain;
        *end = '\0';
        while (*start == ' ' || *start == '\t')
            start++;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (!pgw_address_parse(start, &hop))
            return;
        snprintf(out, cap, "%s", start);
        if (!pgw_prefix_contains(h->proxies, h->n_proxies, &hop))
            return;
        end = next;
    }
}

/* The body goes, and the bytes it reserved with it (none: a no-op). */
static void drop_body(pgw_http *h, req *q)
{
    free(q->body);
    q->body = NULL;
    pgw_api_body_release(h->api, q->reserved, q->share);
    q->reserved = 0;
}

/* A body not whole by its deadline: the client is told (408, logged) and
 * the connection closes after it. */
static void late_body(pgw_http *h, struct lws *wsi, req *q)
{
    drop_body(h, q);
    q->close_after = true;
    refuse(h, wsi, q, 408, "request_timeout", "the body did not arrive in time");
}

/*
 * Keeps http.body_timeout_s the rule for a body awaited. libwebsockets
 * restarts its own timeout (LWS_TIMEOUT_S) at each piece of body, and drops
 * the connection unanswered when the next comes later: a body paused 6 s
 * was lost whatever the configuration allowed, and one that stopped coming
 * never got its 408 (add_body sees only bytes). So each tick, until the
 * body is whole, moves lws's timeout past the deadline, and the tick at
 * the deadline answers 408. Idle connections keep lws's timeouts: until
 * their headers are whole (10 s from connecting), between requests (keepalive_timeout_s).
 */
static void body_tick(lws_sorted_usec_list_t *sul);

static void watch_body(pgw_http *h, struct lws *wsi, req *q)
{
    int64_t left = q->r.received_us + q->body_deadline_us - wall_us();
    if (left <= 0) {
        late_body(h, wsi, q);
        return;
    }
    /* Past the deadline, and the tick there, by a second or two: a backstop.
     * Not at the first look (from the request's start): libwebsockets' own
     * timeout runs LWS_TIMEOUT_S, past the first tick, and most bodies are
     * whole before it (a walk of lws's sorted timeouts saved per request). */
    if (q->body_ticked)
        lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, (int)(left / 1000000) + 2);
    q->body_ticked = true;
    int64_t tick = (int64_t)BODY_TICK_S * 1000000;
    q->body_wsi = wsi;
    lws_sul_schedule(lws_get_context(wsi), 0, &q->body_sul, body_tick, left < tick ? left : tick);
}

/* Whether the transaction still waits for its body (not refused nor whole). */
static bool awaits_body(const req *q)
{
    return q != NULL && q->body != NULL && !q->dispatched && !q->responding;
}

static void body_tick(lws_sorted_usec_list_t *sul)
{
    req *q = lws_container_of(sul, req, body_sul);
    struct lws *wsi = q->body_wsi;
    if (awaits_body(q))
        watch_body(lws_context_user(lws_get_context(wsi)), wsi, q);
}

/* A refused body lws still reads to throw away has had its time: the
 * connection goes. lws carries the kill out on its next turn, and a piece
 * it reads before that restarts its own timeout at 5 s, which the next
 * piece restarts again: a body sent on without pause across the deadline
 * kept the connection for ever (test_slow_bodies). So nothing more is
 * read from it. */
static void discard_over(lws_sorted_usec_list_t *sul)
{
    req *q = lws_container_of(sul, req, body_sul);
    lws_rx_flow_control(q->body_wsi, 0);
    lws_set_timeout(q->body_wsi, PENDING_TIMEOUT_HTTP_CONTENT, LWS_TO_KILL_ASYNC);
}

/*
 * A key's body refused at its headers (too large, no room for it, no
 * memory: `rc` says which, as API.md answers it) is read and thrown away,
 * so that its client, still sending, reads the answer instead of a reset;
 * within body_timeout_s, as a body read is: lws restarts its own 5 s at
 * each piece, and a trickle held the connection for ever. Unless `close`:
 * then the answer says so, and the connection closes after it.
 */
static void refuse_body(pgw_http *h, struct lws *wsi, req *q, bool close, int rc,
                        const char *message)
{
    q->close_after = close;
    if (!close) { /* before the answer: its end may end the transaction */
        q->body_wsi = wsi;
        lws_sul_schedule(lws_get_context(wsi), 0, &q->body_sul, discard_over,
                         h->body_timeout_s * 1000000);
    }
    memset(&q->resp, 0, sizeof(q->resp));
    pgw_api_refusal(&q->resp, rc, message);
    answer_early(h, wsi, q);
}

/* The body is no longer awaited: its timer goes (a no-op when none is set). */
static void unhook_body(req *q)
{
    if (q != NULL)
        lws_sul_cancel(&q->body_sul);
}

/*
 * Whether the request names no key at all where the API answers API keys
 * (a route that takes them, with a method it takes): its answer is 401
 * whatever the body, which is then not read. pgw_api_stranger judges a
 * Bearer that is none of ours; asked about an empty one (auth.c refuses
 * it), it says whether the route and method want a key. Another scheme is
 * left to the API: a session is one on some routes.
 */
static bool keyless(pgw_http *h, pgw_request *r)
{
    if (r->authorization[0] != '\0')
        return false;
    snprintf(r->authorization, sizeof(r->authorization), "Bearer ");
    bool wants_key = pgw_api_stranger(h->api, r);
    r->authorization[0] = '\0';
    return wants_key;
}

/* Whether the request announces a body we do not read (a Content-Length
 * other than 0): after its answer lws reads that body to throw it away,
 * restarting its 5 s at each piece and under no deadline of ours, so a
 * byte every few seconds kept the connection for ever (the review of
 * 49ef2e5): such a connection closes after its answer. */
static bool announces_body(struct lws *wsi)
{
    char length[32];
    return lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
           (!copy_header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, length, sizeof(length)) ||
            strspn(length, "0") != strlen(length));
}

static int start_request(pgw_http *h, struct lws *wsi, req *q, const char *path)
{
    char *uri = NULL;
    int uri_len = 0;
    int method = lws_http_get_uri_and_method(wsi, &uri, &uri_len);
    static const char *const NAMES[] = {"GET",   "POST",   "OPTIONS", "PUT",
                                        "PATCH", "DELETE", "CONNECT", "HEAD"};
    q->r.received_us = wall_us();
    q->keep_alive_10 = keep_alive_10(wsi);
    q->kept = lws_keeps(wsi);
    q->asked_close = asks_close(wsi);
    client_address(h, wsi, q->r.client_address, sizeof(q->r.client_address));
    const char *name =
        method >= 0 && method < (int)(sizeof(NAMES) / sizeof(NAMES[0])) ? NAMES[method] : "OTHER";
    PGW_STATIC_ASSERT(sizeof(q->r.method) > sizeof("OPTIONS") - 1, "every name fits");
    memcpy(q->r.method, name, strlen(name) + 1);
    size_t path_len = strlen(path);
    bool ok = path_len <= PGW_PATH_MAX;
    PGW_STATIC_ASSERT(sizeof(q->r.path) == PGW_PATH_MAX + 1, "a path that is ok fits");
    if (ok)
        memcpy(q->r.path, path, path_len + 1);
    else
        q->r.path[0] = '\0';
    const char *bad_query =
        ok ? bad_target(wsi, path_len, uri_len, q->r.query, sizeof(q->r.query)) : NULL;
    if (bad_query != NULL) {
        /* A line cut short (at %0A) may have eaten the next header's name,
         * Content-Length's too: kept alive, the body announced was served
         * as the next request, smuggled past a proxy that framed it. */
        q->close_after = announces_body(wsi) || line_cut(wsi);
        refuse(h, wsi, q, 400, "invalid_request", bad_query);
        return 0;
    }
    ok = ok &&
         copy_header(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, q->r.content_type,
                     sizeof(q->r.content_type)) &&
         copy_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, q->r.authorization,
                     sizeof(q->r.authorization)) &&
         copy_custom(wsi, "x-pgw-timestamp:", q->r.timestamp, sizeof(q->r.timestamp)) &&
         copy_custom(wsi, "x-pgw-nonce:", q->r.nonce, sizeof(q->r.nonce)) &&
         copy_custom(wsi, "x-pgw-signature:", q->r.signature, sizeof(q->r.signature));
    /* Hashed once, here, for every question asked of the key after: the
     * stranger's test, authentication, the log's key name. */
    bearer_of(h, wsi, q->r.authorization, &q->r.bearer);
    /* Accept only chooses a format: a browser's long one is not an error. */
    if (ok && !copy_header(wsi, WSI_TOKEN_HTTP_ACCEPT, q->r.accept, sizeof(q->r.accept)))
        q->r.accept[0] = '\0';
    if (!ok) {
        q->close_after = announces_body(wsi);
        refuse(h, wsi, q, 400, "invalid_request", "a header or the path is too long");
        return 0;
    }
    /* lws 4.1 does not decode chunked bodies, and takes Content-Length
     * when both are sent, or reads a GET's chunks as the next request
     * (smuggling, behind a proxy that reads them otherwise): refused,
     * whatever the method, then closed (RFC 9112 6.1). */
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0 || spelt_oddly_te(wsi)) {
        q->close_after = true;
        refuse(h, wsi, q, 400, "invalid_request",
               "Transfer-Encoding is not read: send the body with Content-Length");
        return 0;
    }
    const char *host = bad_host(wsi);
    if (host != NULL) {
        /* Closed whatever the framing: a POST without Content-Length
         * would leave lws waiting for a body it reads as its next request,
         * and two Host lines are a proxy's confusion, or someone's test of one. */
        q->close_after = true;
        refuse(h, wsi, q, 400, "invalid_request", host);
        return 0;
    }
    bool has_body =
        method == LWSHUMETH_POST || method == LWSHUMETH_PUT || method == LWSHUMETH_PATCH;
    if (!has_body) { /* a GET's body is not read */
        q->close_after = announces_body(wsi);
        dispatch(h, wsi, q);
        return 0;
    }
    char length[32];
    bool readable = copy_header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, length, sizeof(length));
    /* Digits only (RFC 9110 8.6): "abc" or "-1" is no length at all, and
     * with no length the body's end is unknown: refused, then closed. */
    if (!readable || strspn(length, "0123456789") != strlen(length)) {
        q->close_after = true;
        refuse(h, wsi, q, 400, "invalid_request", "Content-Length must be a number of bytes");
        return 0;
    }
    if (length[0] == '\0') {
        /* Neither: the body is empty (RFC 9112 6.3), as `curl -X POST`
         * sends a void. lws expects 100 MiB of body: whatever else comes
         * on the connection is not a next request: answer, then close. */
        q->close_after = true;
        snprintf(length, sizeof(length), "0");
    }
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(length, &end, 10);
    /* A client waiting for "100 Continue" sends no body after a refusal,
     * and lws would take its next request for that body (the review of
     * 6e0662b): the answer says close, and the connection closes. A length
     * past a signed 64-bit number frames the body otherwise for lws (atoll
     * stops there), which would wait for it for ever: closed too. */
    bool unframed = errno == ERANGE || n > INT64_MAX;
    bool held_back = expects_continue(wsi);
    /* A stranger's body is not held: up to a MiB each, a thousand slow
     * connections with no key held a gigabyte (the HTTP review). Its size
     * is none of its business either: 401 comes first, as README says.
     * These answers close the connection after them: lws would read the
     * body announced to throw it away, under no deadline of ours, a byte
     * now and then keeping the connection for ever, for anyone (the review
     * of a1bee83). */
    if (n > 0 && pgw_api_stranger(h->api, &q->r)) {
        q->close_after = true;
        refuse(h, wsi, q, 401, "unauthorized", "unknown API key");
        return 0;
    }
    if (n > 0 && keyless(h, &q->r)) {
        q->close_after = true;
        dispatch(h, wsi, q); /* its 401, the API's, needs no body */
        return 0;
    }
    const char *advice = NULL;
    size_t body_max = pgw_api_body_max(h->api, &q->r, &advice);
    if (unframed || n > body_max) {
        char message[192];
        snprintf(message, sizeof(message), "the body may have at most %zu bytes: %s", body_max,
                 advice);
        refuse_body(h, wsi, q, held_back || unframed, PGW_ETOOLARGE, message);
        return 0;
    }
    /* Each connection may hold a body of body_max, and connections are
     * many (the open files' limit): all bodies together have theirs, as a
     * full queue is answered. */
    pgw_err err;
    int rc = pgw_api_body_reserve(h->api, &q->r, (size_t)n, &q->share, &err);
    if (rc != PGW_OK) {
        refuse_body(h, wsi, q, held_back, rc, err.msg);
        return 0;
    }
    q->reserved = (size_t)n;
    q->body_expected = (size_t)n;
    q->body_deadline_us = h->body_timeout_s * 1000000;
    q->body = malloc(n > 0 ? (size_t)n : 1);
    q->r.body_len = 0;
    if (q->body == NULL) {
        drop_body(h, q);
        refuse_body(h, wsi, q, held_back, PGW_ENOMEM, "out of memory");
    } else if (n == 0) { /* nothing to wait for: lws reports no body of a PUT or PATCH */
        dispatch(h, wsi, q);
    } else {
        watch_body(h, wsi, q);
        if (held_back && http11(wsi)) /* never to HTTP/1.0 (RFC 9110 10.1.1): it waits */
            return send_continue(wsi);
    }
    return 0;
}

/*
 * Whether the first piece of a body is the request's own head: lws 4.1,
 * serving a request pipelined after one without a body (GET, then POST
 * before the GET's answer), hands the bytes buffered for it from their
 * start, its request line and headers, as its body (then the body itself,
 * more than Content-Length: the connection dropped). It was refused as
 * "invalid JSON", the client's fault in the log. No body the API reads
 * (JSON, CSV, XML) starts with its request's method and " /", nor with a
 * piece of that.
 */
static bool head_for_body(const req *q, const void *in, size_t len)
{
    /* A body shorter than that (a void's "{}") gets as much of it: "PO". */
    char line[sizeof(q->r.method) + 2];
    int n = snprintf(line, sizeof(line), "%s /", q->r.method);
    return n > 2 && (size_t)n < sizeof(line) &&
           memcmp(in, line, len < (size_t)n ? len : (size_t)n) == 0;
}

static int add_body(pgw_http *h, struct lws *wsi, req *q, const void *in, size_t len)
{
    if (q->responding || q->body == NULL || len == 0)
        return 0; /* refused already (lws discards the rest), or nothing (Content-Length: 0) */
    /* After a POST without Content-Length (an empty body, dispatched) lws
     * takes what follows for body: dropped, so that the answer still goes
     * out; then the connection closes (close_after). */
    if (q->close_after && q->body_expected == 0)
        return 0;
    if (len > q->body_expected - q->r.body_len)
        return -1; /* more than Content-Length said: drop the connection */
    if (q->r.body_len == 0 && head_for_body(q, in, len)) {
        /* Answered, the client would take the refusal as final; closed
         * unanswered, it sends the request again (RFC 9112 9.3.2). The
         * refusal is what the log line says, delivered: false. */
        drop_body(h, q);
        q->close_after = true;
        refuse(h, wsi, q, 400, "invalid_request",
               "pipelined after a bodiless request: libwebsockets 4.1 reads its head as its "
               "body; closed unanswered, send it again");
        return -1;
    }
    /* A body trickled in a byte at a time kept its buffer for ever: lws's
     * idle timeout restarts at each byte. Its whole has a deadline, which
     * a byte may reach before the tick does. */
    if (wall_us() - q->r.received_us > q->body_deadline_us) {
        late_body(h, wsi, q);
        return 0;
    }
    memcpy(q->body + q->r.body_len, in, len);
    q->r.body_len += len;
    return 0;
}

/* ---- writing the answer -------------------------------------------------------------------- */

static void finish_response(pgw_http *h, req *q)
{
    q->logged = true;
    log_request(h, &q->r, &q->resp, wall_us());
    free(q->resp.body);
    q->resp.body = NULL;
    stop_responding(h, q);
}

/*
 * Writes the status line and headers and, when it fits, the whole body in
 * the same write: on loopback and LANs each send costs about as much as
 * the request's own work, and one small answer in two sends halved the
 * throughput. The headers are added by name, so lws does no content
 * accounting of its own (it would count the header bytes as body).
 */
/* The reason phrases libwebsockets 4.1 lacks (header.c has 100, 200, 3xx,
 * 400-417 and 500-505): it wrote "HTTP/1.1 201 " with none. NULL: lws's. */
static const char *reason_lws_lacks(int status)
{
    switch (status) {
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    default:
        return NULL;
    }
}

/* The status line: lws's, or ours where lws has no reason phrase, in the
 * request's version (HTTP/1.1 or 1.0; no h2 here). */
static int add_status(struct lws *wsi, int status, uint8_t **p, uint8_t *end)
{
    const char *reason = reason_lws_lacks(status);
    if (reason == NULL) {
        uint8_t *line = *p;
        if (lws_add_http_header_status(wsi, (unsigned int)status, p, end))
            return -1;
        /* lws writes the version lws_http_action read, which a refused
         * WebSocket handshake never reaches: HTTP/1.0 to HTTP/1.1. */
        if (memcmp(line, "HTTP/1.0 ", 9) == 0 && http11(wsi))
            line[7] = '1';
        return 0;
    }
    /* Put together, not printed: once a request (201), snprintf's parsing
     * cost more than the copies. */
    char line[64];
    size_t reason_len = strlen(reason);
    PGW_ASSERT(status >= 100 && status <= 999 && 13 + reason_len < sizeof(line));
    memcpy(line, http11(wsi) ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
    (void)pgw_int_text(status, line + 9);
    line[12] = ' ';
    memcpy(line + 13, reason, reason_len);
    return lws_add_http_header_by_name(wsi, NULL, (const unsigned char *)line,
                                       (int)(13 + reason_len), p, end);
}

static int write_head(struct lws *wsi, req *q, int64_t keepalive_s, const char *date,
                      bool *all_sent)
{
    static uint8_t buf[LWS_PRE + 1024 + CHUNK]; /* service thread only */
    uint8_t *start = buf + LWS_PRE, *p = start, *end = buf + LWS_PRE + 1024 - 1;
    /* The numbers by hand (pgw_int_text): with snprintf, and the status
     * line's, the head cost 4,700 instructions a request, now 1,700. */
    char length[PGW_INT_TEXT_MAX], retry[PGW_INT_TEXT_MAX], idle[8 + PGW_INT_TEXT_MAX];
    int n_length = (int)pgw_int_text((int64_t)q->resp.body_len, length);
    int n_retry = (int)pgw_int_text(q->resp.retry_after_s, retry);
    /* How long the connection waits for the next request: a pooled client
     * that reads it (RFC 9112 has no field for it; Keep-Alive is what is
     * read) drops the connection before we do, not while we do. */
    memcpy(idle, "timeout=", 8);
    int n_idle = 8 + (int)pgw_int_text(keepalive_s, idle + 8);
    const char *ctype = q->resp.content_type ? q->resp.content_type : "text/plain";
    const char *allow = q->resp.allow;
    if (add_status(wsi, q->resp.status, &p, end) ||
        (date[0] != '\0' && lws_add_http_header_by_name(
                                wsi, (const unsigned char *)"date:", (const unsigned char *)date,
                                PGW_HTTP_DATE_MAX - 1, &p, end)) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"content-type:",
                                    (const unsigned char *)ctype, (int)strlen(ctype), &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"content-length:",
                                    (const unsigned char *)length, n_length, &p, end) ||
        (q->resp.retry_after_s > 0 &&
         lws_add_http_header_by_name(wsi, (const unsigned char *)"retry-after:",
                                     (const unsigned char *)retry, n_retry, &p, end)) ||
        (allow != NULL && lws_add_http_header_by_name(
                              wsi, (const unsigned char *)"allow:", (const unsigned char *)allow,
                              (int)strlen(allow), &p, end)) ||
        (q->close_after && /* so the client does not send its next request here */
         lws_add_http_header_by_name(wsi, (const unsigned char *)"connection:",
                                     (const unsigned char *)"close", 5, &p, end)) ||
        (!q->close_after && q->keep_alive_10 &&
         lws_add_http_header_by_name(wsi, (const unsigned char *)"connection:",
                                     (const unsigned char *)"keep-alive", 10, &p, end)) ||
        (!q->close_after && q->kept &&
         lws_add_http_header_by_name(wsi, (const unsigned char *)"keep-alive:",
                                     (const unsigned char *)idle, n_idle, &p, end)) ||
        lws_finalize_http_header(wsi, &p, end))
        return -1;
    /* HEAD: GET's headers, Content-Length included, and no body (RFC 9110
     * 9.3.2): a client reusing the connection would read one as the start
     * of its next answer. */
    if (strcmp(q->r.method, "HEAD") == 0) {
        *all_sent = true;
        q->sent = q->resp.body_len;
    } else if ((*all_sent = q->resp.body_len <= CHUNK)) {
        if (q->resp.body_len > 0) /* an answer whose body could not be made has none: NULL */
            memcpy(p, q->resp.body, q->resp.body_len);
        p += q->resp.body_len;
        q->sent = q->resp.body_len;
    }
    q->headers_sent = true;
    size_t n = (size_t)(p - start);
    return lws_write(wsi, start, n, LWS_WRITE_HTTP_HEADERS) < (int)n ? -1 : 0;
}

static int write_some(pgw_http *h, struct lws *wsi, req *q)
{
    if (q == NULL || !q->responding)
        return 0; /* lws may call without our asking */
    /* All handed to lws, which holds some of it: done once it has sent
     * that (it asks our turn only then). Finished at the hand-over, the
     * answer left h->responding, and a stop's drain, ending when that
     * was 0, destroyed the context with the answers' ends unsent
     * (test_stream_big_drain_at_stop). */
    bool done = q->headers_sent && q->sent == q->resp.body_len;
    if (!q->headers_sent) {
        /* Here, not at the request's start: the refusals set close_after
         * anew, and a client asking to close is answered so on each. */
        q->close_after = q->close_after || q->asked_close;
        if (write_head(wsi, q, h->keepalive_timeout_s, http_date(h), &done) != 0)
            return -1;
    } else if (!done) {
        static uint8_t buf[LWS_PRE + CHUNK]; /* service thread only */
        size_t left = q->resp.body_len - q->sent, n = left < CHUNK ? left : CHUNK;
        memcpy(buf + LWS_PRE, q->resp.body + q->sent, n);
        done = n == left;
        if (lws_write(wsi, buf + LWS_PRE, n, done ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < (int)n)
            return -1;
        q->sent += n;
    }
    /* A client that does not read its answer is dropped: the same time to
     * take each piece as a body has to come whole (restarted at each, as
     * libwebsockets does for the files it serves). Only while pieces are
     * left, ours or what lws buffered of the last (the transaction ends
     * once that is sent): each timeout set walks lws's sorted list of them. */
    if (!done || lws_partial_buffered(wsi)) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, (int)h->body_timeout_s);
        lws_callback_on_writable(wsi);
        return 0;
    }
    finish_response(h, q);
    return q->close_after || lws_http_transaction_completed(wsi) ? -1 : 0;
}

/*
 * The connection closed with its job still out: the job's answer, when it
 * comes, is logged as not delivered (a durable write whose client never
 * heard of it is what an operator looks for). Without memory for that, the
 * answer is dropped unlogged, as before.
 */
static void leave_job(pgw_http *h, req *q)
{
    size_t at = slot_find(h, q->r.id);
    if (at == SIZE_MAX)
        return;
    pgw_request *left = malloc(sizeof(*left));
    if (left == NULL) {
        slot_remove(h, at);
        return;
    }
    *left = q->r;
    left->body = NULL; /* freed with the transaction */
    h->slots[at].wsi = NULL;
    h->slots[at].left = left;
}

/*
 * A request the connection closed under before its answer was sent whole
 * gets its log line now, saying so: with the answer it had, or, its body
 * never whole (the client left), 408.
 */
static void log_unanswered(pgw_http *h, req *q)
{
    if (q->logged || q->r.received_us == 0)
        return; /* logged, or never a request (a refused handshake logs its own) */
    q->logged = true;
    if (!q->responding) {
        memset(&q->resp, 0, sizeof(q->resp));
        pgw_api_key_label(h->api, &q->r, q->resp.key_name);
        q->resp.route = pgw_api_route_label(q->r.path);
        q->resp.status = 408;
    }
    q->resp.undelivered = true;
    log_request(h, &q->r, &q->resp, wall_us());
}

/* The transaction is over (answered, or the client left). */
static void forget(pgw_http *h, req *q)
{
    if (q == NULL)
        return;
    if (q->waiting) {
        leave_job(h, q);
        q->waiting = false;
        q->logged = true; /* by finish_done, with its job's answer */
    }
    log_unanswered(h, q);
    if (q->responding)
        stop_responding(h, q);
    drop_body(h, q);
    free(q->resp.body);
    q->resp.body = NULL;
}

static int refuse_watcher(pgw_http *h, struct lws *wsi, const char *uri, const char *key_name,
                          int rc, const char *message);
static int refuse_connect(pgw_http *h, struct lws *wsi);

/*
 * An upgrade to cleartext HTTP/2 (curl --http2 on http://, Java's
 * HttpClient by default) is ignored, as RFC 9110 7.8 lets a server: lws
 * 4.1 answered 101 itself and then the request never reached us (an
 * event so posted went unanswered), and our answers are framed for
 * HTTP/1.1 only. lws hands the Upgrade value it is about to compare;
 * emptied, it matches neither "h2c" nor "websocket", and lws goes on to
 * serve the request as HTTP/1.1 (server.c, lws_handshake_server). A
 * WebSocket's upgrade is left to lws.
 */
static int ignore_h2c(void *upgrade)
{
    if (upgrade != NULL && strcasecmp(upgrade, "h2c") == 0)
        ((char *)upgrade)[0] = '\0';
    return 0;
}

static int on_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    pgw_http *h = lws_context_user(lws_get_context(wsi));
    req *q = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return start_request(h, wsi, q, in);
    case LWS_CALLBACK_HTTP_BODY:
        return add_body(h, wsi, q, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        /*
         * Again: bytes came after this body before its answer (a pipelined
         * request, or a stray CRLF). libwebsockets stays in its body state
         * and calls this at every turn of its loop, its service thread at
         * full CPU, until the answer; holding its input stops the answer
         * too (4.1: a flow-controlled connection is not written). So the
         * connection is closed: the client retries what was not answered
         * (RFC 9112 9.3.2), and a request sent again with its key is a
         * replay. A pipelined request after a bodiless one waits in
         * libwebsockets' buffer for its turn and is served.
         */
        if (q->body_completed)
            return -1;
        q->body_completed = true;
        if (!q->responding && !q->dispatched && q->body != NULL)
            dispatch(h, wsi, q);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return write_some(h, wsi, q);
    case LWS_CALLBACK_RAW_ADOPT:
        return refuse_connect(h, wsi);
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return ignore_h2c(in);
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        /* A handshake naming this protocol ("http" did, before it was
         * renamed) lands here, not on the stream: it was upgraded with no
         * key, on any path, and never timed out. The stream is the only
         * WebSocket there is. */
        char uri[PGW_PATH_MAX + 1];
        if (!copy_header(wsi, WSI_TOKEN_GET_URI, uri, sizeof(uri)))
            uri[0] = '\0';
        return refuse_watcher(h, wsi, uri, "-", PGW_ENOTFOUND,
                              "no such WebSocket protocol: the stream names none, or pgw-stream");
    }
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION: /* wsi: the listener; an accept worked */
        h->listener = wsi;
        h->accept_rest_ms = 0;
        return admit_peer(h, (int)(intptr_t)in);
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED: /* not a client wsi: no pss here */
        take_keys(h);
        (void)drain_done(h); /* what is left wakes the next turn */
        return 0;
    case LWS_CALLBACK_WSI_DESTROY: /* every connection's last word, to protocols[0] */
        connection_gone(h, wsi);
        if (wsi == h->listener) /* a listening socket's hang-up frees it: paused no more */
            h->listener = NULL;
        break;
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        /* The body's timer is ours (body_sul), in the request's memory,
         * which lws frees: it goes first. lws 4.1's own per-connection
         * timer could not be cancelled (LWS_SET_TIMER_USEC_CANCEL schedules
         * a tick now instead: the review of 59e48e4). */
        unhook_body(q);
        forget(h, q);
        break;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* ---- the live stream (WebSocket /v1/stream) ------------------------------------------------ */

/* A handshake as a request, for its answer and its log line. Its client
 * as any request's (client_address: through trusted proxies), read while
 * the handshake's headers are there; a watcher keeps it (w->client). */
static void handshake_request(const pgw_http *h, struct lws *wsi, const char *uri,
                              const char *key_name, req *q)
{
    memset(q, 0, sizeof(*q));
    q->r.received_us = wall_us();
    snprintf(q->r.method, sizeof(q->r.method), "GET");
    snprintf(q->r.path, sizeof(q->r.path), "%s", uri);
    client_address(h, wsi, q->r.client_address, sizeof(q->r.client_address));
    snprintf(q->resp.key_name, sizeof(q->resp.key_name), "%s", key_name);
    q->resp.route = pgw_api_route_label(uri);
}

/*
 * A request refused where lws gives no transaction to answer it in (a
 * WebSocket handshake, a CONNECT) gets its answer as any request does, in
 * one write before libwebsockets closes the connection, as its own
 * refusals do; and its log line. -1, for lws.
 */
static int refuse_unread(pgw_http *h, struct lws *wsi, const char *method, const char *uri,
                         const char *key_name, int rc, const char *message, int retry_after_s)
{
    req q;
    handshake_request(h, wsi, uri, key_name, &q);
    snprintf(q.r.method, sizeof(q.r.method), "%s", method);
    pgw_api_refusal(&q.resp, rc, message);
    if (retry_after_s > 0)
        q.resp.retry_after_s = retry_after_s;
    q.close_after = true;
    bool all_sent = false;
    (void)write_head(wsi, &q, 0, http_date(h), &all_sent); /* the connection closes either way */
    log_request(h, &q.r, &q.resp, wall_us());
    free(q.resp.body);
    return -1;
}

/* A refused WebSocket handshake: API.md's status (401 for no or a bad key). */
static int refuse_watcher(pgw_http *h, struct lws *wsi, const char *uri, const char *key_name,
                          int rc, const char *message)
{
    return refuse_unread(h, wsi, "GET", uri, key_name, rc, message, 0);
}

/*
 * CONNECT, a proxy's method, never reaches LWS_CALLBACK_HTTP: lws 4.1
 * makes its connection a raw socket on protocols[0] and takes every
 * timeout off it, and it stayed open, unanswered, as long as the client
 * liked. lws tells protocols[0] first (LWS_CALLBACK_RAW_ADOPT), its
 * headers already dropped (so the log line has no path): 400, logged,
 * closed. Nothing else turns raw here (no vhost serves raw sockets, none
 * is adopted), and whatever did would be closed too.
 */
static int refuse_connect(pgw_http *h, struct lws *wsi)
{
    return refuse_unread(h, wsi, "CONNECT", "", "-", PGW_EINVAL,
                         "CONNECT is not served: the gateway is no proxy", 0);
}

/* The value of `name` in the query as copy_query joined it: NULL when
 * absent or refused (too long, twice, no value: *rc and err then say why;
 * nothing is read once *rc is an error). */
static const char *query_arg(const char *query, const char *name, char *out, size_t cap, int *rc,
                             pgw_err *err)
{
    int got = *rc == PGW_OK ? pgw_query_get(query, name, out, cap, err) : *rc;
    *rc = got == PGW_ENOTFOUND ? PGW_OK : got;
    return got == PGW_OK ? out : NULL;
}

/* The survivor noted for `member` (note_merge), or NULL: none. */
static const char *merged_into(const pgw_http *h, const char *member)
{
    for (size_t i = 0; i < MERGES_KEPT; i++) {
        if (strcmp(h->merges[i].member, member) == 0)
            return h->merges[i].survivor;
    }
    return NULL;
}

/* The survivor of `member` as streams' checks found it (note_merge), or
 * `member` itself: not merged, or not that this instance has seen. A
 * chain is followed as far as noted: A's entry names B, noted before B
 * was merged into C, whose merge a check of B's stream noted since.
 * Merges never loop; the hops are bounded as the store's are. */
static const char *survivor_of(const pgw_http *h, const char *member)
{
    const char *next = NULL;
    for (int hop = 0; hop < PGW_MERGE_HOPS_MAX && (next = merged_into(h, member)) != NULL; hop++)
        member = next;
    return member;
}

/* Remembers that a check found `member`'s session streaming `survivor`
 * (itself: no merge, nothing to remember). A chain of merges updates it:
 * the check names the last survivor. */
static void note_merge(pgw_http *h, const char *member, const char *survivor)
{
    if (strcmp(member, survivor) == 0)
        return;
    merge_seen *m = NULL;
    for (size_t i = 0; i < MERGES_KEPT && m == NULL; i++) {
        if (strcmp(h->merges[i].member, member) == 0)
            m = &h->merges[i];
    }
    if (m == NULL) {
        m = &h->merges[h->merges_next];
        h->merges_next = (h->merges_next + 1) % MERGES_KEPT;
        snprintf(m->member, sizeof(m->member), "%s", member);
    }
    PGW_ASSERT(strlen(survivor) <= PGW_ID_MAX); /* member_verdict took no longer */
    snprintf(m->survivor, sizeof(m->survivor), "%.*s", PGW_ID_MAX, survivor);
}

/* Whether a member's stream is `member`'s: the member it streams once
 * its check said so (the survivor of a merge), else the one it counted
 * for at its handshake. A merged member's streams are its survivor's:
 * one member. */
static bool streams_for(const watcher *w, const char *member)
{
    static const char prefix[] = "member:";
    if (!w->checked)
        return strcmp(w->counts_for, member) == 0;
    return strncmp(w->account, prefix, sizeof(prefix) - 1) == 0 &&
           strcmp(w->account + sizeof(prefix) - 1, member) == 0;
}

/* This member's streams open, but `except`. */
static size_t member_streams(const pgw_http *h, const char *member, const watcher *except)
{
    size_t n = 0;
    for (const watcher *w = h->members; w != NULL; w = w->next_member)
        n += w != except && streams_for(w, member);
    return n;
}

/*
 * A member's stream (Authorization: Session): the token checked here (a
 * forged or expired one is 401 at the handshake), the rest by the store
 * once upgraded (member_check): lws 4.1 cannot hold a handshake's answer
 * while the reader looks, and the service thread must not wait on it.
 * The token never goes in the query: the log would keep it. Its streams
 * are counted as its survivor's when a check found its member merged
 * (note_merge): a fifth of theirs is 429 here, as the survivor's own is,
 * not let in to be closed at its check.
 */
static int admit_member(pgw_http *h, struct lws *wsi, watcher *w, const char *uri, const char *auth,
                        const char *shop_param)
{
    pgw_err err;
    char key_name[PGW_ID_MAX + 1];
    int rc = pgw_api_stream_session(h->api, auth, shop_param, &w->session, key_name, &err);
    if (rc == PGW_OK && h->n_members >= h->members_max)
        rc = pgw_err_set(&err, PGW_EUNAVAILABLE,
                         "%zu members' streams are open, the most http.stream_sessions_max lets",
                         h->n_members);
    if (rc == PGW_OK)
        snprintf(w->counts_for, sizeof(w->counts_for), "%s", survivor_of(h, w->session.member));
    if (rc == PGW_OK && member_streams(h, w->counts_for, NULL) >= MEMBER_TABS)
        rc = pgw_err_set(&err, PGW_ELIMITED, "member %s has %d streams open: close one first",
                         w->counts_for, MEMBER_TABS);
    if (rc != PGW_OK)
        return refuse_unread(h, wsi, "GET", uri, key_name, rc, err.msg,
                             rc == PGW_ELIMITED ? MEMBER_TABS_RETRY_S : 0);
    client_address(h, wsi, w->client, sizeof(w->client));
    w->allowed = true;
    w->member = true;
    memcpy(w->key_name, key_name, sizeof(w->key_name));
    w->asked_us = wall_us();
    return 0;
}

/* Checks the path and the key while the handshake's headers are readable. */
static int admit_watcher(pgw_http *h, struct lws *wsi, watcher *w)
{
    char uri[PGW_PATH_MAX + 1], auth[PGW_HEADER_VALUE_MAX + 1], key[PGW_HEADER_VALUE_MAX + 1];
    char query[PGW_QUERY_MAX + 1], shop[PGW_QUERY_MAX + 1];
    if (!copy_header(wsi, WSI_TOKEN_GET_URI, uri, sizeof(uri)))
        return refuse_watcher(h, wsi, "", "-", PGW_EINVAL, "the path is too long");
    if (strcmp(uri, "/v1/stream") != 0)
        return refuse_watcher(h, wsi, uri, "-", PGW_ENOTFOUND, "no such route");
    /* What lws 4.1 checks only after this filter, then dropping the
     * connection unanswered and unlogged (handshake_0405): Host and a key
     * under its 128 bytes (MAX_WEBSOCKET_04_KEY_LEN). */
    int key_len = lws_hdr_total_length(wsi, WSI_TOKEN_KEY);
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HOST) <= 0 || key_len <= 0 || key_len >= 128)
        return refuse_watcher(h, wsi, uri, "-", PGW_EINVAL,
                              "a WebSocket handshake needs Host and a Sec-WebSocket-Key");
    if (host_repeated(wsi))
        return refuse_watcher(h, wsi, uri, "-", PGW_EINVAL, bad_host(wsi));
    if (!copy_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, auth, sizeof(auth)))
        return refuse_watcher(h, wsi, uri, "-", PGW_EUNAUTHORIZED,
                              "the Authorization header is too long");
    /* The query read whole, as every route's is: lws's look-up stopped at
     * the first argument too long for its buffer, and a filter after one
     * was no filter at all (every shop streamed). */
    const char *bad_query = copy_query(wsi, query, sizeof(query));
    if (bad_query != NULL)
        return refuse_watcher(h, wsi, uri, "-", PGW_EINVAL, bad_query);
    int rc = PGW_OK;
    pgw_err err;
    const char *key_param = query_arg(query, "key", key, sizeof(key), &rc, &err);
    const char *shop_param = query_arg(query, "shop", shop, sizeof(shop), &rc, &err);
    if (rc != PGW_OK)
        return refuse_watcher(h, wsi, uri, "-", PGW_EINVAL, err.msg);
    if (pgw_api_by_session(auth))
        return admit_member(h, wsi, w, uri, auth, shop_param);
    char key_name[PGW_ID_MAX + 1];
    rc = pgw_api_stream_auth(h->api, auth, key_param, shop_param, w->shop, key_name, &w->key, &err);
    if (rc != PGW_OK)
        return refuse_watcher(h, wsi, uri, key_name, rc, err.msg);
    w->keys_seen = h->keys_loaded;
    w->allowed = true;
    memcpy(w->key_name, key_name, sizeof(w->key_name));
    client_address(h, wsi, w->client, sizeof(w->client)); /* the headers go with the upgrade */
    w->asked_us = wall_us();
    return 0;
}

/* Whether a stream missed messages: the ring passed it, or news was
 * dropped since it connected (take_done). It is closed with no close
 * frame, so that its client reconnects and reads again from the API. */
static bool missed(const pgw_http *h, const watcher *w)
{
    return h->ring_seq - w->next > STREAM_RING || w->gaps != h->stream_gaps;
}

/*
 * Sends what this watcher wants while its socket takes it: all of it, up
 * to the ring, unless the socket is full. One message per WRITEABLE fell
 * behind a drain that adds hundreds; then 256 did, on a busy machine,
 * where the service thread's turns come seldom and each drain adds more
 * than that: every watcher fell 4,096 behind together, its socket never
 * full, and was closed as too slow (test_stream_keeps_up, 5,414 of
 * 16,400 each). drain_done adds at most a quarter of the ring a turn.
 */
static int feed_watcher(pgw_http *h, struct lws *wsi, watcher *w)
{
    if (missed(h, w))
        return -1; /* it missed messages, and says so by being closed */
    while (w->next < h->ring_seq) {
        const stream_msg *m = &h->ring[w->next % STREAM_RING];
        w->next++;
        if (w->shop[0] != '\0' && strcmp(w->shop, m->shop) != 0)
            continue;
        static uint8_t buf[LWS_PRE + STREAM_MSG_MAX]; /* service thread only */
        memcpy(buf + LWS_PRE, m->json, m->len);
        if (lws_write(wsi, buf + LWS_PRE, m->len, LWS_WRITE_TEXT) < (int)m->len)
            return -1;
        if (lws_send_pipe_choked(wsi)) /* lws keeps what the socket did not take */
            break;
    }
    if (w->next < h->ring_seq)
        lws_callback_on_writable(wsi);
    return 0;
}

/* A member's stream's handshake as a request, for its log line. */
static void member_line(const pgw_http *h, struct lws *wsi, const watcher *w, req *q)
{
    handshake_request(h, wsi, "/v1/stream", w->key_name, q);
    memcpy(q->r.client_address, w->client, sizeof(q->r.client_address));
    q->r.received_us = w->asked_us;
    q->r.id = w->first_check;
}

/* A member's stream's handshake line (api.h's), written once the store
 * answered: 101 for a live session, else the refusal's status (401 for
 * one ended), though the WebSocket was upgraded (admit_member). */
static void log_member(pgw_http *h, struct lws *wsi, watcher *w, int status)
{
    if (w->logged)
        return;
    w->logged = true;
    req q;
    member_line(h, wsi, w, &q);
    q.resp.status = status;
    log_request(h, &q.r, &q.resp, wall_us());
}

/* Closes a member's stream at its next turn, saying why (close_member). */
static void end_member(watcher *w, int code, const char *reason)
{
    if (w->close_code == 0) {
        w->close_code = code;
        w->close_reason = reason;
    }
    lws_callback_on_writable(w->wsi);
}

/* -1, for lws, with the close frame's code and reason. */
static int close_member(struct lws *wsi, watcher *w)
{
    lws_close_reason(wsi, (enum lws_close_status)w->close_code, (unsigned char *)w->close_reason,
                     strlen(w->close_reason));
    return -1;
}

/* Asks the store about this stream's session (pgw_api_stream_check): its
 * answer comes back as a job's, to member_checked. */
static int member_check(pgw_http *h, watcher *w)
{
    pgw_err err;
    uint64_t id = new_id(h);
    if (w->first_check == 0)
        w->first_check = id;
    int rc = pgw_api_stream_check(h->api, &w->session, id, &err);
    if (rc != PGW_OK)
        return rc;
    slot_put(h, id, w->wsi, true);
    w->check_id = id;
    return PGW_OK;
}

/* Whether a stream at its first check, whose store said it streams
 * `member`, would be one past that member's MEMBER_TABS: a fifth of the
 * survivor's, found only now, as its token named a member merged into
 * it, which the handshake could not know. A stream open before the
 * merge stays open (checked already). */
static bool fifth_stream(const pgw_http *h, const char *member, const watcher *except)
{
    return member_streams(h, member, except) >= MEMBER_TABS;
}

/*
 * A stream now streams `account` (a merge, follow_merge's or its check's):
 * what it was not yet sent of the messages before is still matched
 * against each account it had, as well. Re-pointed at once, a slow
 * phone's, or one whose turn came after the drain that answered the
 * merge, lost the member's own transfers committed before it; one prior
 * account kept, a second merge lost the first's. The new account is
 * matched in what was not yet sent too: a merge its check found, made
 * elsewhere, came somewhere before, and the survivor's transfers since
 * were lost (the survivor's from before are the member's own now, as
 * GET /v1/me/transfers shows them). Past PRIORS_MAX merges behind, the
 * stream is closed.
 */
static void repoint(const pgw_http *h, watcher *w, const char *account)
{
    if (strcmp(w->account, account) == 0)
        return;
    size_t kept = 0;
    for (size_t i = 0; i < w->n_priors; i++) /* those sent: forgotten */
        if (w->priors[i].until > w->next)
            w->priors[kept++] = w->priors[i];
    w->n_priors = kept;
    if (w->next < h->ring_seq && w->n_priors == PRIORS_MAX)
        end_member(w, WS_CLOSE_AGAIN,
                   "the stream fell behind more merges than it can follow: open it again");
    else if (w->next < h->ring_seq) {
        memcpy(w->priors[w->n_priors].account, w->account, sizeof(w->account));
        w->priors[w->n_priors++].until = h->ring_seq;
    }
    snprintf(w->account, sizeof(w->account), "%s", account);
}

/* Whether a member's stream sends message `seq` (m): it names the
 * account streamed, or one streamed before a merge that seq preceded. */
static bool member_sees(const watcher *w, const stream_msg *m, uint64_t seq)
{
    if (strcmp(m->accounts[0], w->account) == 0 || strcmp(m->accounts[1], w->account) == 0)
        return true;
    for (size_t i = 0; i < w->n_priors; i++)
        if (seq < w->priors[i].until && (strcmp(m->accounts[0], w->priors[i].account) == 0 ||
                                         strcmp(m->accounts[1], w->priors[i].account) == 0))
            return true;
    return false;
}

/* What the store's answer on a member's stream's session makes of it:
 * the member it streams (the survivor of a merge, looked for again at
 * each check), or the stream closed. A later check that could not be
 * made (the reader full) leaves it open: the next one tries again. Its
 * handshake's status, for the log. */
static int member_verdict(pgw_http *h, watcher *w, const pgw_response *resp)
{
    if (resp->status == 200 && resp->body_len > 0 && resp->body_len <= PGW_ID_MAX) {
        char found[PGW_ID_MAX + 1], account[sizeof(w->account)];
        snprintf(found, sizeof(found), "%.*s", (int)resp->body_len, resp->body);
        /* A merge answered here after the check read (follow_merge) is
         * not undone by it: the survivor of what it found. */
        snprintf(account, sizeof(account), "member:%s", survivor_of(h, found));
        note_merge(h, w->session.member, account + strlen("member:"));
        if (!w->checked && fifth_stream(h, account + strlen("member:"), w)) {
            end_member(w, WS_CLOSE_TABS,
                       "the member has all the streams it may open (a merged member's are its "
                       "survivor's): close one first");
            return 429;
        }
        repoint(h, w, account); /* its messages held till now, too */
        w->checked = true;
        lws_callback_on_writable(w->wsi); /* what waited for the answer in the ring */
        return 101;
    }
    if (resp->status == 401)
        end_member(w, WS_CLOSE_SESSION, WS_SESSION_ENDED_REASON);
    else if (!w->checked)
        end_member(w, WS_CLOSE_AGAIN, "the session could not be checked: try again later");
    return resp->status == 200 ? 500 : resp->status; /* 200: no member named (never seen) */
}

/* The status member_verdict gives a stream at its first check, for one
 * closed before it (member_gone, which is unlisted now): 101 made it a
 * live session's whatever the check said, a merged member's fifth too. */
static int gone_status(const pgw_http *h, const pgw_response *resp)
{
    if (resp->status != 200)
        return resp->status;
    if (resp->body_len == 0 || resp->body_len > PGW_ID_MAX)
        return 500; /* no member named (never seen) */
    char member[PGW_ID_MAX + 1];
    snprintf(member, sizeof(member), "%.*s", (int)resp->body_len, resp->body);
    return fifth_stream(h, member, NULL) ? 429 : 101;
}

/* The status of a stream closed with no verdict to wait for, for its
 * line: the gateway's close code's (4401 is 401, 4429 is 429, 1013,
 * 1001 and WS_CLOSE_MISSED are 503), or, closed by its client (or lws)
 * before the store said whose it is, 503 as a stream whose session could
 * not be checked (member_opened): 101 would count it a live session's. */
static int closed_status(const watcher *w)
{
    switch (w->close_code) {
    case WS_CLOSE_SESSION:
        return 401;
    case WS_CLOSE_TABS:
        return 429;
    default:
        return 503;
    }
}

/* The store's answer on a member's stream's session (member_verdict);
 * or, the stream closed meanwhile, its log line's status (`gone`, from
 * member_closed), not delivered, as any answer whose client left. One
 * the gateway is closing before its first check answered (a logout here,
 * merges past PRIORS_MAX, a stop) is logged with its close's status: the
 * check's 101 said the stream let in that the gateway had just closed. */
static void member_checked(pgw_http *h, struct lws *wsi, req *gone, pgw_response *resp)
{
    watcher *w = wsi != NULL ? lws_wsi_user(wsi) : NULL;
    if (w != NULL) {
        PGW_ASSERT(w->member && w->check_id != 0 && gone == NULL);
        w->check_id = 0;
        bool closing = !w->checked && w->close_code != 0;
        log_member(h, wsi, w, closing ? closed_status(w) : member_verdict(h, w, resp));
    } else if (gone != NULL) {
        gone->resp.status = gone_status(h, resp);
        gone->resp.undelivered = true;
        log_request(h, &gone->r, &gone->resp, wall_us());
        free(gone);
    }
    free(resp->body);
}

/* Whether `w` streams under the session `id` (PGW_SESSION_ID_LEN hex
 * digits): its id compared in constant time, a secret of the token's. */
static bool under_session(const watcher *w, const char *id)
{
    size_t len = strlen(w->session.id);
    return len == strlen(id) && CRYPTO_memcmp(w->session.id, id, len) == 0;
}

/* A merge committed here: `merged`'s streams stream `survivor` from the
 * next message on, as their check would make them (member_verdict), and
 * a handshake under its sessions counts as the survivor's (note_merge).
 * A stream not yet checked counts for the survivor; its check says the
 * rest. Streams open before the merge stay open, over 4 or not. */
static void follow_merge(pgw_http *h, const char *merged, const char *survivor)
{
    if (strlen(survivor) > PGW_ID_MAX)
        return; /* no member id is (never seen) */
    note_merge(h, merged, survivor);
    char from[sizeof(((watcher *)NULL)->account)], to[sizeof(from)];
    snprintf(from, sizeof(from), "member:%s", merged);
    snprintf(to, sizeof(to), "member:%s", survivor);
    for (watcher *w = h->members; w != NULL; w = w->next_member) {
        if (strcmp(w->account, from) == 0) /* a stream not yet checked too: its held messages */
            repoint(h, w, to);
        if (!w->checked && strcmp(w->counts_for, merged) == 0)
            snprintf(w->counts_for, sizeof(w->counts_for), "%s", survivor);
    }
}

/*
 * What a job committed here changed for members' streams (api.h
 * pgw_api_follow), as the service thread renders its answer: a logout's
 * session's streams closed at once, 4401 as their check would, before
 * any message committed after it (feed_member closes first); a merged
 * member's streams following the survivor. A phone logged out kept
 * streaming the member's transfers till that check, a minute by
 * default, and a merged member's showed none of the survivor's. Other
 * instances' streams learn either at their check.
 */
static void follow(void *ctx, const pgw_stream_change *change)
{
    pgw_http *h = ctx;
    if (change->merged != NULL)
        follow_merge(h, change->merged, change->survivor);
    for (watcher *w = h->members; w != NULL && change->ended_session != NULL; w = w->next_member)
        if (under_session(w, change->ended_session))
            end_member(w, WS_CLOSE_SESSION, WS_SESSION_ENDED_REASON);
}

/* A member's stream upgraded: listed, its session asked about, its
 * timer set (member_tick). Its messages wait in the ring till then. */
static void member_opened(pgw_http *h, struct lws *wsi, watcher *w)
{
    w->wsi = wsi;
    w->next_member = h->members;
    if (h->members != NULL)
        h->members->prev_member = w;
    h->members = w;
    w->listed = true;
    h->n_members++;
    /* Whose its token says (the survivor of a merge noted), till its
     * check says: a merge answered meanwhile re-points it (follow_merge). */
    snprintf(w->account, sizeof(w->account), "member:%s", w->counts_for);
    /* Let in as the drain began, its store stopped: closed as the others
     * (1001), not as a check refused (1013, its session named the cause). */
    if (h->going_away || h->stop) {
        log_member(h, wsi, w, 503);
        end_member(w, WS_CLOSE_GOING_AWAY, WS_GOING_AWAY_REASON);
        return;
    }
    if (member_check(h, w) != PGW_OK) {
        log_member(h, wsi, w, 503);
        end_member(w, WS_CLOSE_AGAIN, "the session could not be checked: try again later");
        return;
    }
    int64_t left = w->session.expires_at - time(NULL);
    int64_t wait = left < h->member_check_s ? (left > 0 ? left : 0) : h->member_check_s;
    lws_set_timer_usecs(wsi, (lws_usec_t)wait * LWS_USEC_PER_SEC);
}

/* One line on stderr for memory run out (limited, log_limit.h: at request
 * rate it would flood the log), saying what it cost. */
static void tell_out_of_memory(pgw_http *h, const char *cost)
{
    uint64_t unsaid = 0;
    char line[PGW_LOG_LINE_MAX];
    if (pgw_log_due(&h->oom_said, pgw_monotonic_s(), cost, &unsaid)) {
        pgw_log_line(PGW_LOG_FAILED, "out of memory", cost, unsaid, line);
        fputs(line, stderr);
    }
}

/*
 * A member's stream closed before the store answered its check: its line
 * waits for the answer (member_checked), which says what it was, 101 or
 * 401. Written at the close, it said 101 for every one, and an ended
 * session's streams dropped at once (a logged-out phone reconnecting)
 * read as streams let in. One the gateway closed is written now, with
 * its close's status (closed_status): the check has nothing to add.
 * Out of memory, it is written now, not delivered, with the status of
 * its close; it was 101. Its 503 would read as a check that failed:
 * stderr says memory ran out.
 */
static void member_gone(pgw_http *h, struct lws *wsi, watcher *w, slot *check)
{
    check->wsi = NULL;
    if (w->logged)
        return;
    if (w->close_code != 0) { /* closed by the gateway: its close says what (member_checked) */
        log_member(h, wsi, w, closed_status(w));
        return;
    }
    req *q = malloc(sizeof(*q));
    if (q != NULL) {
        member_line(h, wsi, w, q);
        check->gone = q;
        w->logged = true;
        return;
    }
    req now;
    member_line(h, wsi, w, &now);
    now.resp.status = closed_status(w);
    now.resp.undelivered = true;
    w->logged = true;
    log_request(h, &now.r, &now.resp, wall_us());
    tell_out_of_memory(h, "a member's stream closed before its check answered is logged with its "
                          "close's status (503: not checked), not with what the check found");
}

/* A member's stream closed: unlisted; its check, if out, finds it gone. */
static void member_closed(pgw_http *h, struct lws *wsi, watcher *w)
{
    if (!w->listed)
        return;
    size_t at = w->check_id != 0 ? slot_find(h, w->check_id) : SIZE_MAX;
    PGW_ASSERT(w->logged || at != SIZE_MAX); /* unlogged: its first check is out */
    if (at != SIZE_MAX)
        member_gone(h, wsi, w, &h->slots[at]);
    if (w->prev_member != NULL)
        w->prev_member->next_member = w->next_member;
    else
        h->members = w->next_member;
    if (w->next_member != NULL)
        w->next_member->prev_member = w->prev_member;
    w->listed = false;
    PGW_ASSERT(h->n_members > 0);
    h->n_members--;
}

/* A member's stream's timer: its session expired (closed, as a 401), or
 * time to ask the store again (a logout on any instance, a merge). */
static int member_tick(pgw_http *h, struct lws *wsi, watcher *w)
{
    int64_t left = w->session.expires_at - time(NULL);
    if (left <= 0) {
        end_member(w, WS_CLOSE_SESSION, "the session has expired: log in again");
        return close_member(wsi, w);
    }
    if (w->check_id == 0)
        (void)member_check(h, w); /* refused now (the reader full): the next tick asks */
    int64_t wait = left < h->member_check_s ? left : h->member_check_s;
    lws_set_timer_usecs(wsi, (lws_usec_t)wait * LWS_USEC_PER_SEC);
    return 0;
}

/* -1, for lws, for a stream that missed messages, which says so by being
 * closed with no close frame; marked the gateway's close: one not yet
 * checked was logged at its check's answer as a stream whose client
 * left, 101 (member_gone, closed_status). */
static int drop_missed(watcher *w)
{
    w->close_code = WS_CLOSE_MISSED;
    return -1;
}

/*
 * feed_watcher for a member's stream: nothing before the store said
 * whose it is (held in the ring, as a slow watcher's), then only the
 * messages naming its member's account, each in the member's view. Apart
 * from feed_watcher so that a key's watcher pays nothing for it.
 */
static int feed_member(pgw_http *h, struct lws *wsi, watcher *w)
{
    if (w->close_code != 0)
        return close_member(wsi, w);
    if (missed(h, w))
        return drop_missed(w);
    if (!w->checked)
        return 0; /* member_checked asks for a turn */
    while (w->next < h->ring_seq) {
        const stream_msg *m = &h->ring[w->next % STREAM_RING];
        if (!member_sees(w, m, w->next++))
            continue;
        static uint8_t buf[LWS_PRE + STREAM_MSG_MAX]; /* service thread only */
        size_t len = pgw_api_stream_member_view(m->json, m->len, (char *)buf + LWS_PRE);
        if (lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_TEXT) < (int)len)
            return -1;
        if (lws_send_pipe_choked(wsi))
            break;
    }
    if (w->next < h->ring_seq)
        lws_callback_on_writable(wsi);
    return 0;
}

/*
 * A stream's turn at a stop (h->going_away): fed what it has not seen,
 * then, at its next turn, closed 1001 with the reason. A member's whose
 * session was not yet found live has nothing to be fed; one closed for
 * its own reason (4401, 1013, 4429) keeps it. lws sends the close frame
 * at a turn of its own, after what was written. One that missed
 * messages is closed as at any other time (missed), never 1001, which
 * says it has what was committed.
 */
static int leave_stream(pgw_http *h, struct lws *wsi, watcher *w)
{
    if (w->close_code == 0 && missed(h, w))
        return drop_missed(w);
    bool fed = w->next >= h->ring_seq || (w->member && !w->checked) || w->close_code != 0;
    if (!fed) {
        int rc = w->member ? feed_member(h, wsi, w) : feed_watcher(h, wsi, w);
        lws_callback_on_writable(wsi); /* its close, when all is sent */
        return rc;
    }
    if (w->close_code == 0) {
        w->close_code = WS_CLOSE_GOING_AWAY;
        w->close_reason = WS_GOING_AWAY_REASON;
    }
    return close_member(wsi, w);
}

/* Whether a key's stream lost its key to a reload since its last turn
 * (removed, or its scope changed): then it is closed, saying so. */
static bool key_gone(pgw_http *h, watcher *w)
{
    if (w->keys_seen == h->keys_loaded)
        return false;
    w->keys_seen = h->keys_loaded;
    if (pgw_auth_still(pgw_api_auth(h->api), &w->key))
        return false;
    w->close_code = WS_CLOSE_KEY_GONE;
    w->close_reason = WS_KEY_GONE_REASON;
    return true;
}

static int on_stream(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    pgw_http *h = lws_context_user(lws_get_context(wsi));
    watcher *w = user;
    switch (reason) {
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        /* Every accepted connection, HTTP or not: lws tells the vhost's
         * default protocol, which the "default" option makes this one
         * (start_lws), not protocols[0] as its filter and WSI_DESTROY. */
        claim_peer(h, wsi);
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return w != NULL ? admit_watcher(h, wsi, w) : -1;
    case LWS_CALLBACK_ADD_HEADERS: { /* lws's 101: its Date too, as every answer's */
        struct lws_process_html_args *args = in;
        const char *date = http_date(h);
        return date[0] != '\0' &&
               lws_add_http_header_by_name(
                   wsi, (const unsigned char *)"date:", (const unsigned char *)date,
                   PGW_HTTP_DATE_MAX - 1, (unsigned char **)&args->p,
                   (unsigned char *)args->p + args->max_len);
    }
    case LWS_CALLBACK_ESTABLISHED: {
        if (w == NULL || !w->allowed)
            return -1;
        w->next = h->ring_seq; /* from now on */
        w->gaps = h->stream_gaps;
        w->counted = true;
        h->watchers++;
        /* let in as the drain began, or its key reloaded since it was
         * checked: closed as the others */
        if (h->going_away || w->keys_seen != h->keys_loaded)
            lws_callback_on_writable(wsi);
        if (w->member) { /* logged once the store answered */
            member_opened(h, wsi, w);
            return 0;
        }
        /* Counted and logged as any request is, once lws upgraded it (a
         * handshake it then refused, no Sec-WebSocket-Key, was counted as
         * 101 when we let it in): a watcher was in no metric nor log line. */
        req q;
        handshake_request(h, wsi, "/v1/stream", w->key_name, &q);
        memcpy(q.r.client_address, w->client, sizeof(q.r.client_address));
        q.r.received_us = w->asked_us;
        q.resp.status = 101;
        log_request(h, &q.r, &q.resp, wall_us());
        return 0;
    }
    case LWS_CALLBACK_CLOSED:
        if (w != NULL && w->counted) {
            PGW_ASSERT(h->watchers > 0);
            h->watchers--;
            w->counted = false;
        }
        if (w != NULL && w->member)
            member_closed(h, wsi, w);
        return 0;
    case LWS_CALLBACK_TIMER:
        return w != NULL && w->listed ? member_tick(h, wsi, w) : 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (w == NULL || !w->allowed)
            return 0;
        if (h->going_away)
            return leave_stream(h, wsi, w);
        if (w->member)
            return feed_member(h, wsi, w);
        return key_gone(h, w) ? close_member(wsi, w) : feed_watcher(h, wsi, w);
    case LWS_CALLBACK_RECEIVE:
        /* Watchers have nothing to say (lws bounds what it reads), but a
         * frame is a sign of life, as a pong is (lws_validity_confirmed). */
        lws_validity_confirmed(wsi);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        /* Asked here, not of protocols[0]: a connection is bound to the
         * vhost's default protocol, the stream's, until lws serves HTTP. */
        return ignore_h2c(in);
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        return 0; /* handled once, by the http protocol */
    default:
        return 0;
    }
}

/* ---- life cycle --------------------------------------------------------------------------------
 */

/*
 * Whether this host can bind the address at all. lws 4.1 keeps a vhost
 * whose address is not the host's, retries the bind now and then, and
 * reports the port as listened on: the gateway said "listening on
 * 10.255.255.1:8080" with no socket open (the operator review). serve
 * asks before it makes the database's folder (pgw_http_check_listen).
 */
static int check_bindable(const char *iface, int port, bool ipv6, pgw_err *err)
{
    struct sockaddr_storage at;
    memset(&at, 0, sizeof(at));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&at;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&at;
    int family = ipv6 ? AF_INET6 : AF_INET;
    if (inet_pton(family, iface, ipv6 ? (void *)&v6->sin6_addr : (void *)&v4->sin_addr) != 1)
        return PGW_OK; /* pgw_listen_parse took it: lws will say */
    at.ss_family = (sa_family_t)family;
    if (ipv6)
        v6->sin6_port = htons((uint16_t)port);
    else
        v4->sin_port = htons((uint16_t)port);
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return PGW_OK;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int bound = bind(fd, (struct sockaddr *)&at, ipv6 ? sizeof(*v6) : sizeof(*v4));
    int e = errno;
    close(fd);
    if (bound == 0 || (e != EADDRNOTAVAIL && e != EACCES && e != EADDRINUSE))
        return PGW_OK;
    return pgw_err_set(err, PGW_EUNAVAILABLE, "cannot listen on %s:%d: %s", iface, port,
                       e == EACCES       ? "permission denied (a port below 1024 needs root or "
                                           "CAP_NET_BIND_SERVICE)"
                       : e == EADDRINUSE ? "the port is in use"
                                         : "this host has no such address");
}

int pgw_http_check_listen(const char *listen, pgw_err *err)
{
    char iface[PGW_LISTEN_MAX + 1];
    int port = 0;
    bool ipv6 = false;
    int rc = pgw_listen_parse(listen, 0, iface, sizeof(iface), &port, &ipv6, err);
    return rc == PGW_OK ? check_bindable(iface, port, ipv6, err) : rc;
}

/* libwebsockets' own lines (errors only): one limit for the process, as
 * lws logs through one global function; lws_cancel_service, the one call
 * other threads make, might log too. */
static pthread_mutex_t lws_said_lock = PTHREAD_MUTEX_INITIALIZER;
static pgw_log_limit lws_said;
/* lws 4.1 said "accept: errno N" (ops-listen.c) since the service thread
 * last looked: the one sign it gives of an accept failing. */
static atomic_bool lws_accept_failed;

/*
 * Writes a libwebsockets line through a rate limit (log_limit.h). Out of
 * open files, lws fails its accept at every turn of its loop and said so
 * each time, 29 MB of stderr in 4 s (ulimit -n 64, 100 connections).
 */
static void lws_log(int level, const char *line)
{
    (void)level;
    char cause[PGW_LOG_CAUSE_MAX];
    snprintf(cause, sizeof(cause), "%s", line);
    cause[strcspn(cause, "\r\n")] = '\0';
    if (strncmp(cause, "accept: errno ", 14) == 0)
        atomic_store(&lws_accept_failed, true);
    int64_t now_s = pgw_monotonic_s(); /* before the lock: no call under it */
    uint64_t unsaid = 0;
    pthread_mutex_lock(&lws_said_lock);
    bool due = pgw_log_due(&lws_said, now_s, cause, &unsaid);
    pthread_mutex_unlock(&lws_said_lock);
    char said[PGW_LOG_LINE_MAX];
    if (due) {
        pgw_log_line(PGW_LOG_FAILED, "libwebsockets", cause, unsaid, said);
        fputs(said, stderr);
    }
}

static int start_lws(pgw_http *h, pgw_err *err)
{
    /* Not named "http": a handshake offering "http, pgw-stream" got the
     * first, the HTTP protocol, not the stream (lws binds the first name
     * it knows). Serving HTTP, lws takes protocols[0] whatever its name. */
    h->protocols[0] = (struct lws_protocols){
        .name = "pgw-http", .callback = on_http, .per_session_data_size = sizeof(req)};
    h->protocols[1] = (struct lws_protocols){.name = "pgw-stream",
                                             .callback = on_stream,
                                             .per_session_data_size = sizeof(watcher),
                                             .rx_buffer_size = 512};
    /* A browser's `new WebSocket(url)` names no subprotocol: without this
     * option lws would bind it to protocols[0] and its messages would vanish. */
    h->stream_default = (struct lws_protocol_vhost_options){NULL, NULL, "default", "1"};
    h->stream_pvo = (struct lws_protocol_vhost_options){NULL, &h->stream_default, "pgw-stream", ""};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = h->port;
    info.iface = h->iface;
    /* lws 4.1 with IPv6 on bound an IPv4 address to every address (the
     * loopback-only admin API was on the network): IPv4 alone for one. */
    if (!h->ipv6)
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    info.protocols = h->protocols;
    info.pvo = &h->stream_pvo;
    info.user = h;
    info.max_http_header_data = HEADER_DATA_MAX;
    info.timeout_secs = LWS_TIMEOUT_S; /* watch_body ticks inside it */
    info.keepalive_timeout = (int)h->keepalive_timeout_s;
    /* TCP keepalive on every accepted socket: a peer gone without a FIN (a
     * phone that changed networks) is found within TCP_IDLE_S + probes and
     * its connection closed: a connection waiting on the database (lws
     * pings no HTTP connection), and a stream that carries nothing, never
     * written to, sooner than the idle policy below by default. */
    info.ka_time = TCP_IDLE_S;
    info.ka_probes = TCP_PROBES;
    info.ka_interval = TCP_PROBE_S;
    /* A WebSocket's client that sent nothing, not even a pong, for
     * http.keepalive_timeout_s is pinged, and closed if nothing comes as
     * long again: a client alive at the TCP level (its keepalive answered)
     * that reads and answers nothing holds its stream, one of its member's
     * MEMBER_TABS and of http.stream_sessions_max, or a key's watcher's
     * service-thread work. Without a policy lws pinged at 300 s and closed
     * at 310 s (its context's default, measured: nowhere said, nor set);
     * the review took it for the session's 7 days. lws pings WebSockets
     * only: its h1 role has no issue_keepalive, an HTTP connection no timer. */
    PGW_ASSERT(h->keepalive_timeout_s >= 1 && h->keepalive_timeout_s <= KEEPALIVE_MAX_S);
    h->stream_idle =
        (lws_retry_bo_t){.secs_since_valid_ping = (uint16_t)h->keepalive_timeout_s,
                         .secs_since_valid_hangup = (uint16_t)(2 * h->keepalive_timeout_s)};
    info.retry_and_idle_policy = &h->stream_idle;
    if (h->tls_cert != NULL) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = h->tls_cert;
        info.ssl_private_key_filepath = h->tls_key;
        info.alpn = "http/1.1"; /* one framing for every client: no h2 */
    }
    lws_set_log_level(LLL_ERR, lws_log);
    h->ctx = lws_create_context(&info);
    if (h->ctx == NULL)
        return pgw_err_set(err, PGW_EUNAVAILABLE, "cannot listen on %s:%d%s", h->iface, h->port,
                           h->tls_cert ? " (or the certificate and key cannot be used)" : "");
    h->vhost = lws_get_vhost_by_name(h->ctx, "default");
    int port = h->vhost ? lws_get_vhost_listen_port(h->vhost) : -1;
    if (port <= 0)
        return pgw_err_set(err, PGW_EUNAVAILABLE, "cannot listen on %s:%d", h->iface, h->port);
    h->port = port;
    atomic_store(&h->live, true);
    /* What was queued before (the sweep's news) had no wake-up, and the
     * next completions see a queue not empty and send none: drain it. */
    lws_cancel_service(h->ctx);
    return PGW_OK;
}

int pgw_http_new(const pgw_http_options *opts, pgw_http **out, pgw_err *err)
{
    *out = NULL;
    pgw_http *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory starting the server");
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->keys_taken, NULL);
    h->body_max = opts->body_max ? opts->body_max : PGW_BODY_MAX_DEFAULT;
    h->body_timeout_s = opts->body_timeout_s > 0 ? opts->body_timeout_s : 60;
    h->keepalive_timeout_s =
        opts->keepalive_timeout_s > 0 ? opts->keepalive_timeout_s : KEEPALIVE_S;
    h->tls_cert = opts->tls_cert_file;
    h->tls_key = opts->tls_key_file;
    h->proxies = opts->cfg ? opts->cfg->http.trusted_proxies : NULL;
    h->n_proxies = opts->cfg ? opts->cfg->http.n_trusted_proxies : 0;
    h->members_max = opts->cfg ? (size_t)opts->cfg->http.stream_sessions_max : 256;
    h->next_id = first_ids();
    h->member_check_s = opts->cfg ? opts->cfg->http.stream_session_check_s : 60;
    int64_t per_address = opts->cfg ? opts->cfg->http.max_connections_per_address : 0;
    size_t inflight = opts->inflight_max ? opts->inflight_max : PGW_INFLIGHT_DEFAULT;
    h->done_cap = inflight + NEWS_PENDING_MAX;
    size_t slots = 1;
    while (slots < 2 * inflight)
        slots <<= 1;
    h->slot_mask = slots - 1;
    h->done = calloc(h->done_cap, sizeof(*h->done));
    h->draining = calloc(h->done_cap, sizeof(*h->draining));
    h->slots = calloc(slots, sizeof(*h->slots));
    h->ring = calloc(STREAM_RING, sizeof(*h->ring));
    int rc =
        h->done && h->draining && h->slots && h->ring
            ? pgw_listen_parse(opts->listen, 0, h->iface, sizeof(h->iface), &h->port, &h->ipv6, err)
            : pgw_err_set(err, PGW_ENOMEM, "out of memory starting the server");
    if (rc == PGW_OK && h->keepalive_timeout_s > KEEPALIVE_MAX_S)
        rc = pgw_err_set(err, PGW_EINVAL, "keepalive_timeout_s: %lld is over %d s",
                         (long long)h->keepalive_timeout_s, KEEPALIVE_MAX_S);
    pgw_api_options ao = {.cfg = opts->cfg,
                          .db_url = opts->db_url,
                          .body_max = h->body_max,
                          .bodies_max = opts->cfg ? (size_t)opts->cfg->http.body_total_max_bytes
                                                  : (size_t)PGW_HTTP_BODIES_DEFAULT,
                          .inflight_max = inflight,
                          .batch_max = opts->batch_max,
                          .notify = notify,
                          .stream_news = stream_news,
                          .stream_follow = stream_follow,
                          .notify_ctx = h,
                          .log = opts->log};
    if (rc == PGW_OK)
        rc = pgw_api_new(&ao, &h->api, err);
    if (rc == PGW_OK && per_address > 0)
        rc = pgw_peer_limit_new((uint32_t)per_address, peer_seed(), &h->peers, err);
    if (rc == PGW_OK)
        rc = start_lws(h, err);
    if (rc != PGW_OK) {
        pgw_http_free(h);
        return rc;
    }
    *out = h;
    return PGW_OK;
}

int pgw_http_port(const pgw_http *h)
{
    return h->port;
}

void pgw_http_shutdown(pgw_http *h)
{
    h->stop = 1;
    lws_cancel_service(h->ctx);
}

/* Wakes the drain's loop (pgw_http_run) to look at its deadlines: lws
 * waits on its sockets as long as its own timers allow, and a stream
 * whose client reads nothing waits on a full socket for its close. */
static void stop_tick(lws_sorted_usec_list_t *sul)
{
    pgw_http *h = lws_container_of(sul, pgw_http, stop_sul);
    pgw_api_flush_log(h->api); /* the drain's lines, for a tail -f */
    lws_sul_schedule(h->ctx, 0, &h->stop_sul, stop_tick, STOP_TICK_MS * LWS_US_PER_MS);
}

/* The API's lines of WeChat and of codes say "works again" as requests
 * finish: a gateway gone quiet after a failure says it here, once the
 * failure's minute is over (pgw_api_tell_quiet). */
static void quiet_tick(lws_sorted_usec_list_t *sul)
{
    pgw_http *h = lws_container_of(sul, pgw_http, quiet_sul);
    pgw_api_tell_quiet(h->api, pgw_monotonic_s(), false);
    lws_sul_schedule(h->ctx, 0, &h->quiet_sul, quiet_tick, QUIET_TICK_S * LWS_US_PER_SEC);
}

static void resume_accepts(lws_sorted_usec_list_t *sul)
{
    pgw_http *h = lws_container_of(sul, pgw_http, accept_sul);
    if (h->listener != NULL)
        (void)lws_rx_flow_control(h->listener, 1);
}

/*
 * Out of open files (EMFILE), lws 4.1 fails its accept, leaves the
 * connection in the backlog and the listening socket readable: poll()
 * returned at once, every turn, the service thread at full CPU (1.99 CPU
 * s in 2 s, test_few_open_files_no_spin). Its own pause (POLLIN off the
 * listener) counts only its own sockets, never the process's files. So
 * the listener rests from POLLIN, 10 ms doubled each failure up to 1 s,
 * the backlog kept; lws takes it back at once itself when one of its
 * connections closes (pollfd.c, lws_accept_modulation), the likeliest
 * freeing of a file. Before the first accept there is no listener to
 * rest: lws names it to that connection's filter only.
 */
static void pause_accepts(pgw_http *h)
{
    if (!atomic_exchange(&lws_accept_failed, false) || h->listener == NULL)
        return;
    h->accept_rest_ms = h->accept_rest_ms == 0                     ? ACCEPT_REST_MS
                        : h->accept_rest_ms >= ACCEPT_REST_MAX / 2 ? ACCEPT_REST_MAX
                                                                   : 2 * h->accept_rest_ms;
    (void)lws_rx_flow_control(h->listener, 0);
    lws_sul_schedule(h->ctx, 0, &h->accept_sul, resume_accepts, h->accept_rest_ms * LWS_US_PER_MS);
}

int pgw_http_run(pgw_http *h, pgw_http_stopped *stopped, pgw_err *err)
{
    *stopped = (pgw_http_stopped){0};
    quiet_tick(&h->quiet_sul);
    /* lws failing (its loop cannot go on) is no stop asked: the drain is
     * the same, but the run fails, so that a supervisor restarts it.
     * lws 4.1 takes a failed poll() for a pass with nothing to do
     * (unix-service.c), and returns 0: one failing at once every pass
     * (EINVAL, more sockets than RLIMIT_NOFILE lowered since the start)
     * spun this thread at full CPU, serving nothing, silently. No call
     * follows a failed poll() in that pass, so its errno is the pass's:
     * POLL_FAILS_MAX such passes in a row are lws failing (one interrupted
     * by a signal, EINTR, is none). Not ENOMEM: a healthy pass whose
     * malloc failed leaves it too (R3: errno after healthy passes was
     * EINTR, ERANGE, EAGAIN, ENOTCONN), and the gateway is to live through
     * running out of memory, not stop; poll()'s own ENOMEM passes. */
    bool failed = false;
    int poll_errno = 0;
    for (size_t poll_fails = 0; !h->stop && !failed;) {
        errno = 0;
        failed = lws_service(h->ctx, 0) < 0;
        poll_fails = errno == EINVAL ? poll_fails + 1 : 0;
        if (!failed && poll_fails >= POLL_FAILS_MAX)
            poll_errno = errno, failed = true;
        pause_accepts(h);
        pgw_api_flush_log(h->api); /* the pass's request log lines, at once */
    }
    lws_sul_cancel(&h->quiet_sul);
    lws_sul_cancel(&h->accept_sul);
    /* A reload now would close streams the drain closes 1001: none. */
    pthread_mutex_lock(&h->lock);
    h->keys_closed = true;
    pthread_cond_broadcast(&h->keys_taken);
    pthread_mutex_unlock(&h->lock);
    /* Drain: the writer commits what is queued, its callers are answered,
     * the streams are fed that and closed (leave_stream), each within
     * its bound: a client that does not read holds up no stop. */
    pgw_api_stop(h->api);
    /* A turn of lws between drains, as while serving: all at once, more
     * than the ring passed every stream, closed then with no close code
     * and missing what was committed (test_stream_big_drain_at_stop). */
    while (drain_done(h))
        lws_service(h->ctx, 0);
    pgw_api_tell_quiet(h->api, pgw_monotonic_s(), true); /* every job finished */
    h->going_away = true;
    lws_callback_on_writable_all_protocol(h->ctx, &h->protocols[1]);
    stop_tick(&h->stop_sul);
    int64_t now = wall_us();
    int64_t answers_until = now + (int64_t)DRAIN_SERVICE_MS * 1000;
    int64_t streams_until = now + (int64_t)STREAMS_CLOSE_MS * 1000;
    while ((h->responding > 0 && now < answers_until) || (h->watchers > 0 && now < streams_until)) {
        lws_service(h->ctx, 0);
        now = wall_us();
    }
    lws_sul_cancel(&h->stop_sul);
    /* Past the deadline: cut off by pgw_http_free, each logged undelivered. */
    stopped->answers_cut = h->responding;
    stopped->changes_cut = h->responding_changes;
    if (failed && poll_errno != 0)
        return pgw_err_set(err, PGW_EIO,
                           "libwebsockets' service loop failed: poll() failed %d times in a row: "
                           "%s%s: stopped serving though no stop was asked",
                           POLL_FAILS_MAX, strerror(poll_errno),
                           poll_errno == EINVAL ? " (more sockets than the open-file limit, "
                                                  "RLIMIT_NOFILE, lowered since the start?)"
                                                : "");
    return failed ? pgw_err_set(err, PGW_EIO,
                                "libwebsockets' service loop failed: stopped serving though no "
                                "stop was asked")
                  : PGW_OK;
}

int pgw_http_reload_keys(pgw_http *h, pgw_auth *fresh, pgw_err *err)
{
    pthread_mutex_lock(&h->lock);
    PGW_ASSERT(h->keys_offered == NULL); /* one reloader at a time */
    bool offered = !h->keys_closed;
    if (offered) {
        h->keys_offered = fresh;
        atomic_store(&h->keys_waiting, true);
        lws_cancel_service(h->ctx);
    }
    while (offered && h->keys_offered == fresh && !h->keys_closed)
        pthread_cond_wait(&h->keys_taken, &h->lock);
    bool taken = offered && h->keys_offered != fresh;
    h->keys_offered = NULL;
    pthread_mutex_unlock(&h->lock);
    return taken ? PGW_OK : pgw_err_set(err, PGW_EUNAVAILABLE, "the server is stopping");
}

pgw_auth *pgw_http_auth(pgw_http *h)
{
    return pgw_api_auth(h->api);
}

void pgw_http_free(pgw_http *h)
{
    if (h == NULL)
        return;
    if (h->api != NULL)
        pgw_api_stop(h->api);
    while (drain_done(h)) /* frees the jobs of clients still waiting */
        ;
    if (h->ctx != NULL)
        lws_context_destroy(h->ctx); /* each connection's WSI_DESTROY releases its count */
    if (h->peers != NULL)
        PGW_ASSERT(pgw_peer_limit_addresses(h->peers) == (h->accepted.counted ? 1 : 0));
    pgw_peer_limit_free(h->peers);
    for (size_t i = 0; h->slots != NULL && i <= h->slot_mask; i++) {
        free(h->slots[i].left); /* a job that never finished */
        free(h->slots[i].gone);
    }
    pgw_api_free(h->api);
    pthread_cond_destroy(&h->keys_taken);
    pthread_mutex_destroy(&h->lock);
    free(h->done);
    free(h->draining);
    free(h->slots);
    free(h->ring);
    free(h);
}
