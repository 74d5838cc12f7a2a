/*
 * notice.c - see notice.h.
 */
#include "notice.h"

#include "core/assertions.h"

#include <string.h>

pgw_notice_order pgw_notice_order_default(void)
{
    return (pgw_notice_order){3, {PGW_CHANNEL_MP, PGW_CHANNEL_OA, PGW_CHANNEL_SMS}};
}

static bool reaches(const pgw_notice_reach *reach, pgw_notice_channel ch)
{
    return ch == PGW_CHANNEL_MP ? reach->mp : ch == PGW_CHANNEL_OA ? reach->oa : reach->sms;
}

pgw_notice_channel pgw_notice_route(const pgw_notice_reach *reach, const pgw_notice_order *order,
                                    unsigned excluded)
{
    pgw_notice_order fallback = pgw_notice_order_default();
    const pgw_notice_order *o = order != NULL ? order : &fallback;
    PGW_ASSERT(o->n >= 1 && o->n <= PGW_NOTICE_CHANNELS);
    for (size_t i = 0; i < o->n; i++) {
        pgw_notice_channel ch = o->channel[i];
        PGW_ASSERT(ch == PGW_CHANNEL_MP || ch == PGW_CHANNEL_OA || ch == PGW_CHANNEL_SMS);
        if (reaches(reach, ch) && !(excluded & (unsigned)ch))
            return ch;
    }
    return PGW_CHANNEL_NONE;
}

pgw_notice_channel pgw_notice_channel_parse(const char *name)
{
    static const pgw_notice_channel all[] = {PGW_CHANNEL_MP, PGW_CHANNEL_OA, PGW_CHANNEL_SMS};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(pgw_notice_channel_name(all[i]), name) == 0)
            return all[i];
    }
    return PGW_CHANNEL_NONE;
}

const char *pgw_notice_channel_name(pgw_notice_channel channel)
{
    switch (channel) {
    case PGW_CHANNEL_MP:
        return "wechat_mp";
    case PGW_CHANNEL_OA:
        return "wechat_oa";
    case PGW_CHANNEL_SMS:
        return "sms";
    case PGW_CHANNEL_NONE:
        break;
    }
    return "none";
}

int64_t pgw_notice_sms_time(int64_t now, int32_t local_offset_s, int32_t start_min, int32_t end_min)
{
    PGW_ASSERT(start_min >= 0 && start_min < 1440 && end_min >= 0 && end_min < 1440);
    if (start_min == end_min)
        return now;
    int64_t local = now + local_offset_s;
    int64_t day = local >= 0 ? local / 86400 : (local - 86399) / 86400;
    int64_t minute = (local - day * 86400) / 60;
    bool crosses = start_min > end_min; /* 21:00-08:00 */
    bool quiet = crosses ? (minute >= start_min || minute < end_min)
                         : (minute >= start_min && minute < end_min);
    if (!quiet)
        return now;
    /* The end is today, or tomorrow when we are in the evening part. */
    int64_t end_day = crosses && minute >= start_min ? day + 1 : day;
    return end_day * 86400 + (int64_t)end_min * 60 - local_offset_s;
}

int64_t pgw_notice_backoff_ms(int64_t attempt, int64_t base_ms, int64_t max_ms,
                              int32_t jitter_permille)
{
    PGW_ASSERT(attempt >= 1 && base_ms >= 1 && max_ms >= base_ms);
    PGW_ASSERT(jitter_permille >= 0 && jitter_permille <= 1000);
    int64_t delay = base_ms;
    for (int64_t i = 1; i < attempt && delay < max_ms; i++)
        delay = delay > max_ms / 2 ? max_ms : delay * 2;
    if (delay > max_ms)
        delay = max_ms;
    int64_t floor = base_ms / 2;
    int64_t span = delay - floor; /* split so a huge cap cannot overflow */
    return floor + span / 1000 * jitter_permille + span % 1000 * jitter_permille / 1000;
}
