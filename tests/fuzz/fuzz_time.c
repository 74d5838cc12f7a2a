/*
 * fuzz_time.c - libFuzzer target: the times a till, a spreadsheet or a
 * statement writes. The first byte picks a zone, the rest is the text.
 * Whatever pgw_parse_local_time reads must write back
 * (pgw_format_rfc3339) as a time both readers read to the same instant,
 * and what pgw_parse_rfc3339 reads pgw_parse_local_time must read alike
 * (it takes a superset). A refusal says why. Never a crash or undefined
 * behaviour (the day counts are int64 arithmetic on untrusted years).
 */
#include "core/civil.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const zones[] = {"UTC",         "Asia/Shanghai", "+08:00",      "-05:30",
                                    "Asia/Almaty", "Asia/Kolkata",  "+14:00",      "-12:00",
                                    "Asia/Urumqi", "Asia/Tokyo",    "Asia/Manila", "Etc/GMT"};
#define ZONES (sizeof(zones) / sizeof(zones[0]))

/* `tz` NULL: no zone (only a time with its offset is read), written in `utc`. */
static void round_trip(const char *text, const pgw_tz *tz, const pgw_tz *utc)
{
    pgw_err err;
    int64_t local = 0, strict = 0;
    int rc_local = pgw_parse_local_time(text, tz, &local, &err);
    if (rc_local != PGW_OK && err.msg[0] == '\0')
        abort(); /* a refusal says why */
    if (pgw_parse_rfc3339(text, &strict, &err) == PGW_OK && (rc_local != PGW_OK || strict != local))
        abort(); /* the wider reader refused or read otherwise what the strict one took */
    if (rc_local != PGW_OK)
        return;
    char written[PGW_RFC3339_MAX];
    int64_t again = 0;
    if (pgw_format_rfc3339(local, tz != NULL ? tz : utc, written, sizeof(written)) != PGW_OK)
        return; /* an instant the zone's years do not reach (a far offset) */
    if (pgw_parse_rfc3339(written, &again, &err) != PGW_OK || again != local)
        abort();
    if (pgw_parse_local_time(written, tz, &again, &err) != PGW_OK || again != local)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pgw_tz tz[ZONES];
    static int looked_up;
    pgw_err err;
    for (; looked_up < (int)ZONES; looked_up++)
        if (pgw_tz_lookup(zones[looked_up], &tz[looked_up], &err) != PGW_OK)
            abort();
    if (size == 0 || size > 64)
        return 0; /* longer than any time a reader takes */
    char text[65];
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    round_trip(text, &tz[data[0] % ZONES], &tz[0]);
    round_trip(text, NULL, &tz[0]);
    return 0;
}
