/*
 * notifier.h - delivers the outbox (store.h "notifications").
 *
 * PGW_NOTIFY_THREADS threads, each with a database connection of its own, claim the notices
 * that are due, routes each (core/notice.h: the mini program's subscribe
 * message if the member has quota, the official account's template message
 * if they follow, SMS if a phone is known, outside quiet hours), sends it,
 * and records how it went: sent with the provider's id; pending again
 * with exponential backoff after a transient failure (retry_max_attempts,
 * then dead); the next channel at once when one refuses this member
 * (43101, 43004, a number the SMS provider will not take); skipped when
 * no channel reaches them.
 *
 * Crash safety: a notice is claimed (state sending) before the call and
 * marked sent after the provider accepted it; at start, notices left
 * sending go back to pending. A resend after a crash carries the notice id
 * where the provider de-duplicates (the template message's client_msg_id,
 * SMS SessionContext / OutId); a subscribe message has no such key, so a
 * crash in that narrow window can repeat one (at least once).
 *
 * Subscribe-message quota is taken before the call and given back when
 * the call did not go through.
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

#define PGW_NOTIFY_BATCH   32  /* notices claimed at once */
#define PGW_NOTIFY_POLL_MS 100 /* how often the outbox is looked at */
#define PGW_OWNER_MAX      64  /* a notifier's name on its claims */
#define PGW_NOTIFY_THREADS 4   /* couriers: WeChat answers in tens of ms, so several wait at once */

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
    uint64_t sent[3]; /* by channel: mini program, official account, SMS */
    uint64_t retried, fell_through, dead, skipped, deferred;
    int64_t depth; /* notices not delivered yet, as of the last look */
} pgw_notifier_stats;

typedef struct pgw_notifier pgw_notifier;

/* Whether the configuration can deliver anything: a channel enabled whose
 * secret is in the environment (the writer queues notices only then). */
bool pgw_notify_possible(const pgw_config *cfg);

int pgw_notifier_start(const pgw_notifier_options *opts, pgw_notifier **out, pgw_err *err);
/* Finishes the notice in hand, joins the thread and frees the notifier. */
void pgw_notifier_stop(pgw_notifier *n);
void pgw_notifier_get_stats(pgw_notifier *n, pgw_notifier_stats *out);

#endif
