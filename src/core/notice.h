/*
 * notice.h - the rules of notifications, without I/O: which channel a
 * notice goes through, when an SMS may leave, how long a failed attempt
 * waits. src/notify/ applies them to the outbox; test_notice checks them.
 *
 * Routing (DESIGN.md "Notifications"), in the kind's configured order
 * (by default this one): the mini program's subscribe message when the
 * member has an openid there and quota for the kind's template; the
 * official account's template message when the member follows and the
 * kind has a template; SMS when a phone is known, the member did not opt
 * out and the kind has an SMS template. A channel that
 * refuses for this member (43101 no quota, 43004 not following, an SMS
 * number refused) is excluded and routing runs again. A WeChat channel's
 * exclusion lapses, on a notice held for SMS (PGW_NOTICE_HELD), when what
 * refused is over: a subscription, a follow, an openid bound, a merge
 * (store.h pgw_store_add_quota ...).
 */
#ifndef PGW_CORE_NOTICE_H
#define PGW_CORE_NOTICE_H

#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum pgw_notice_channel {
    PGW_CHANNEL_NONE = 0, /* nowhere to send: the notice is skipped */
    PGW_CHANNEL_MP = 1,   /* mini-program subscribe message */
    PGW_CHANNEL_OA = 2,   /* official-account template message */
    PGW_CHANNEL_SMS = 4,
} pgw_notice_channel;

/* Not a channel: kept with the excluded channels (a notice's `excluded`)
 * to remember, across attempts, that some channel gave up on the notice
 * for good, so running out of channels makes it dead, not skipped. */
#define PGW_NOTICE_GAVE_UP 8u
/* Not a channel either: the notice waits for an SMS (quiet hours, a
 * number's limit) with no attempt counted for the wait. A new way to reach
 * the member (a subscription, a follow, a WeChat identity bound or merged
 * in) makes such a notice due again at once, so its channel is chosen
 * anew (store.h pgw_store_add_quota ...). A notice waiting for a retry is
 * not marked: its last attempt may have reached the member. */
#define PGW_NOTICE_HELD 16u
/* Nor this: an SMS of the notice may have reached the member: one was
 * sent, or a request left and no clear refusal came back (a timeout, a
 * 5xx, an answer not understood), or a courier died while its SMS was
 * leaving (the store marks the claim before the request leaves, and a
 * lapsed claim keeps that mark; one never tried gets none). Kept for good. A wake (above) never
 * takes such a notice: chosen anew at once, WeChat would tell the member twice. */
#define PGW_NOTICE_SMS_MAY_HAVE_GONE 32u
/* Nor this: an attempt of the notice may have reached the member though
 * its attempts say none: an operator's retry of a dead notice starts its
 * count anew (store.h pgw_store_retry_notice), and its failed attempts
 * (a timeout, a 5xx) may each have been a send. The store sets it and
 * keeps it for good (a courier's record cannot drop it). An arrival never
 * joins such a notice, as one with an attempt counted: its text must not
 * change once it may have been read. A wake still takes it, as it takes
 * one held after failed attempts. */
#define PGW_NOTICE_MAY_HAVE_REACHED 256u
/* Nor these: a WeChat message of the notice may have reached the member:
 * WeChat may have handled a send whose answer was lost (a timeout, a
 * connection closed before the answer), or a courier died while its
 * request was on its way (the store marks the claim before the request
 * leaves, as for an SMS, and a lapsed claim keeps the mark; a clear
 * refusal recorded clears it). The channel's bit shifted left by
 * PGW_NOTICE_WX_GONE_SHIFT (the mini program 512, the official account
 * 1024). Kept for good, as PGW_NOTICE_SMS_MAY_HAVE_GONE: the notice goes
 * by that channel only from then on (an SMS or the other WeChat channel
 * would tell the member a second time), a wake never takes it, no arrival
 * joins it. */
#define PGW_NOTICE_WX_GONE_SHIFT 9
#define PGW_NOTICE_WX_MAY_HAVE_GONE                                                                \
    ((unsigned)(PGW_CHANNEL_MP | PGW_CHANNEL_OA) << PGW_NOTICE_WX_GONE_SHIFT)
/* Nor these: a wake (above) that came while a courier held the notice
 * (claimed), kept with the claim and applied when it ends with the notice
 * held: the channels the wake reopened, each channel's bit shifted left by
 * PGW_NOTICE_WOKEN_SHIFT (the mini program 64, the official account 128).
 * The store sets and clears them; a courier never sees them. */
#define PGW_NOTICE_WOKEN_SHIFT 6
#define PGW_NOTICE_WOKEN       ((unsigned)(PGW_CHANNEL_MP | PGW_CHANNEL_OA) << PGW_NOTICE_WOKEN_SHIFT)

/* What routing needs to know of a member, for one notice kind. */
typedef struct pgw_notice_reach {
    bool mp;  /* an mp openid, quota for the template, the template configured */
    bool oa;  /* follows the account, the template configured */
    bool sms; /* a phone, not opted out, an SMS template configured */
} pgw_notice_reach;

#define PGW_NOTICE_CHANNELS 3

/* The channels a notice kind may go through, in the order to try them
 * (config notify.routes); a channel left out is never used for the kind. */
typedef struct pgw_notice_order {
    size_t n; /* 1..PGW_NOTICE_CHANNELS */
    pgw_notice_channel channel[PGW_NOTICE_CHANNELS];
} pgw_notice_order;

/* The default order: mini program, official account, SMS. */
pgw_notice_order pgw_notice_order_default(void);

/* The channel to try: the first of `order` (NULL: the default) that
 * reaches the member and is not in `excluded` (a mask of channels that
 * refused before); PGW_CHANNEL_NONE when none is left. */
pgw_notice_channel pgw_notice_route(const pgw_notice_reach *reach, const pgw_notice_order *order,
                                    unsigned excluded);

/* "wechat_mp" -> PGW_CHANNEL_MP ...; PGW_CHANNEL_NONE for another name. */
pgw_notice_channel pgw_notice_channel_parse(const char *name);

const char *pgw_notice_channel_name(pgw_notice_channel channel);

/*
 * When an SMS may leave at the earliest, at or after `now`: `now` outside
 * the quiet hours [start_min, end_min) (minutes after local midnight; the
 * span may cross midnight, start == end means none), else the local time
 * they end. `local_offset_s` is the zone's offset at `now`.
 */
int64_t pgw_notice_sms_time(int64_t now, int32_t local_offset_s, int32_t start_min,
                            int32_t end_min);

/*
 * How long attempt `attempt` (1 = the first retry) waits: base * 2^(attempt-1)
 * capped at max, then "full jitter" scaled by `jitter` (0..1000 per mille,
 * the caller's randomness), never below base/2 so retries do not bunch at
 * zero. Milliseconds.
 */
int64_t pgw_notice_backoff_ms(int64_t attempt, int64_t base_ms, int64_t max_ms,
                              int32_t jitter_permille);

#endif
