/*
 * notifier.h - delivers the outbox (store.h "notifications").
 *
 * notify.workers couriers (default 16), each with a database connection
 * of its own, claim the notices that are due and route each (core/notice.h: the mini
 * program's subscribe message if the member has quota, the official
 * account's template message if they follow, SMS if a phone is known and
 * not opted out, outside quiet hours and the number's frequency limit),
 * send it, and record how it went (a claimed batch's attempts in one
 * transaction, after its sends): sent with the provider's id; pending
 * again with exponential backoff after a transient failure
 * (retry_max_attempts, then dead); after WeChat's daily quota (45009) the
 * next channel at once, or with none (or none that takes the member)
 * pending until WeChat's next day, the attempt uncounted, WeChat tried
 * first again by a notice left pending otherwise (held, retried) unless
 * a message of it may have reached the member (WeChat is not asked
 * again before that midnight by this process: a memo in memory); the
 * next channel
 * at once when one refuses this member (43101, 43004); dead when a channel gave up for
 * good and none is left; skipped when no channel reaches them, last_error
 * saying why each channel of the route did not take it then. Once an
 * SMS of the notice may have reached the member (core/notice.h
 * PGW_NOTICE_SMS_MAY_HAVE_GONE) WeChat is not asked for it again, in that
 * attempt or a retry (an operator's too), whoever subscribed or followed
 * meanwhile: it would tell the member twice. No delivery report is read,
 * so this holds when the SMS never arrived: such a notice may end dead
 * (retries run out on SMS, an SMS given up with only WeChat after it) or
 * skipped (its retry's number refused, the member opted out of SMS)
 * though WeChat reaches the member. The other way too: once a WeChat
 * message of it may have reached the member (its answer lost, or its
 * courier died while it was on its way; core/notice.h
 * PGW_NOTICE_WX_MAY_HAVE_GONE) its retries go by that channel only, never
 * SMS or the other WeChat channel; it may end skipped (the unit the lost
 * send used was the last, WeChat refuses the retry) or dead though SMS
 * reaches the member. Each request is marked in the store before it
 * leaves (pgw_store_wx_leaving, pgw_store_sms_leaving: one small write
 * each), and the attempt's record replaces the marks with what the
 * courier knows: a clear refusal (43101, 43004, 45009, a busy -1, a
 * refused number) clears its request's mark. A request whose mark is not
 * made does not leave, nor does any when the attempt's read before its
 * requests fails: the notice is pending again after the retry backoff,
 * that attempt not counted when the database was busy or out of reach
 * (PGW_EUNAVAILABLE; or a mark found the claim no longer ours) or its
 * disk full (store.h pgw_store_failed_on_space: the gateway's failure,
 * logged), counted (logged; dead after retry_max_attempts) when the
 * failure comes again (PGW_EIO: a statement refused; the store's own
 * errors). A
 * courier that dies after
 * such a refusal and before the record leaves the mark: the notice then
 * keeps to that channel as if the message may have gone. After a merge
 * (store.h pgw_store_merge_rows) a notice moved to the survivor keeps
 * its marks: the person is the same, and the merged member's openids
 * and phone are the survivor's now, so the channel the message may have
 * gone by still reaches whoever may have read it; the retry goes by that
 * channel to whichever of the survivor's openids it reaches (perhaps not
 * the one the lost message went to: delivery is at least once), never
 * the survivor's SMS.
 *
 * Claims: a claim belongs to one courier of this run (host, pid, a random
 * part, the courier's index) with a
 * lease of PGW_NOTICE_LEASE_S; every claim of a batch still held is
 * renewed before a notice when less than LEASE_MARGIN_S (notifier.c, 34 s)
 * of the lease is left, so
 * none lapses before its attempt is recorded; only the claimer records
 * the attempt. What a batch did not try (a stop, claims not renewed) is
 * given back with it, its attempt uncounted. A batch's record (or give-back)
 * that fails busy or on a full disk is kept by its courier and written
 * again each turn before it claims more, the lapsed sweep waiting
 * meanwhile and its claims renewed before each try (by a write that never
 * waits for the record's lock, which the margin outlasts): a notice delivered is recorded sent, not
 * sent again, and an attempt not counted stays so, though its lease ran out. The claims of a run
 * that died come back when their lease runs out, counted, held from WeChat only if an SMS of theirs
 * was leaving, and from SMS and the other WeChat channel only if a WeChat message of theirs was
 * (the marks above, made only while the lease covers the request's answer). A notice sent again (a
 * crash, or a timeout that may have been a send) carries its id: WeChat's template message
 * de-duplicates on client_msg_id; SMS providers only keep it (SessionContext / OutId); a subscribe
 * message has no key. Delivery is at least once.
 *
 * Subscribe-message quota: a unit is counted as used with the attempt's
 * outcome when the message went or may have gone (no answer); 43101 (none
 * left at WeChat) drops the member's count to zero.
 */
#ifndef PGW_NOTIFY_NOTIFIER_H
#define PGW_NOTIFY_NOTIFIER_H

#include "adapters/sms/sms.h"
#include "adapters/wechat/client.h"
#include "config/config.h"
#include "core/error.h"
#include "store/store.h"
#include "util/vault.h"

#include <stdbool.h>
#include <stdint.h>

/* Notices a courier claims at once: few, so that a burst spreads over
 * the couriers instead of queueing behind one (bench/RESULTS.md: p99 0.9 s
 * at 8, 0.4 s at 4). A courier that claimed a full batch wakes the others. */
#define PGW_NOTIFY_BATCH   4
#define PGW_NOTIFY_POLL_MS 100  /* how often the first courier looks at the outbox */
#define PGW_NOTIFY_IDLE_MS 1000 /* the others, unless woken */
#define PGW_OWNER_MAX      64   /* a courier's name on its claims */
/* Couriers at most (config notify.workers). A courier waits on one
 * provider call at a time, so messages per second are at most couriers /
 * the provider's answer time: 16 over WeChat's tens of ms make ~300/s
 * across the internet, 1,000/s against a fake on this machine. */
#define PGW_NOTIFY_THREADS_MAX 64
#define PGW_NOTIFY_CHANNELS    3 /* mini program, official account, SMS */

typedef struct pgw_notifier_options {
    const pgw_config *cfg; /* borrowed */
    const char *db_url;
    const pgw_vault *vault;    /* borrowed: phones for SMS */
    pgw_wx_client *wechat;     /* borrowed; NULL without WeChat */
    bool mp_ready, oa_ready;   /* which WeChat apps the client speaks for */
    const pgw_sms_client *sms; /* borrowed; NULL without SMS */
    /* Told of every recorded attempt (a courier thread; must not block). */
    void (*changed)(void *ctx, const pgw_notice *notice);
    void *changed_ctx;
} pgw_notifier_options;

typedef struct pgw_notifier_stats {
    uint64_t sent[PGW_NOTIFY_CHANNELS]; /* by channel: mini program, official account, SMS */
    /* Attempts not counted (an SMS held, WeChat's 45009, a mark not made):
     * by the channel waited on as sent[], then none (a read failed before
     * any channel). */
    uint64_t deferred[4];
    uint64_t retried, fell_through, dead, skipped;
    int64_t depth; /* notices not delivered yet, as of the last look */
} pgw_notifier_stats;

typedef struct pgw_notifier pgw_notifier;

/* Whether the configuration can deliver anything: a channel enabled whose
 * secret is in the environment (the writer queues notices only then). */
bool pgw_notify_possible(const pgw_config *cfg);

int pgw_notifier_start(const pgw_notifier_options *opts, pgw_notifier **out, pgw_err *err);
/* Finishes the notice in hand, writes the records a courier holds (for
 * up to 10 s, notifier.c STOP_RECORD_S: a delivered notice given back
 * would be sent again at the next start), gives back what is still
 * claimed, joins the threads and frees the notifier. */
void pgw_notifier_stop(pgw_notifier *n);
void pgw_notifier_get_stats(pgw_notifier *n, pgw_notifier_stats *out);

#endif
