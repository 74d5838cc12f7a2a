/*
 * civil.h - calendar dates, the mall's time zone, and RFC 3339 timestamps.
 *
 * Instants are int64_t unix seconds (UTC). Business rules (member day,
 * birthday, sign-in day, month-end challenges, year-end expiry, quiet hours)
 * work on the *local* calendar of the mall, so every such rule goes through
 * pgw_local_date()/pgw_local_midnight() with the configured zone.
 *
 * No I/O: zones come from a built-in table of zones that have no daylight
 * saving time today (every zone a Chinese or East/South-East Asian mall
 * uses: Asia/Shanghai has had none since 1991), with the offsets each had
 * since 2000 where it had others (pgw_tz_offset_at), plus "UTC" and fixed
 * offsets written "+08:00". A zone with DST today is refused with a clear
 * message instead of silently computing wrong day boundaries.
 *
 * Dates use the proleptic Gregorian calendar; the valid range is years
 * 1970..9999 (PGW_YEAR_MIN..PGW_YEAR_MAX), ample for a points ledger and small
 * enough that no computation can overflow.
 */
#ifndef PGW_CORE_CIVIL_H
#define PGW_CORE_CIVIL_H

#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_YEAR_MIN    1970
#define PGW_YEAR_MAX    9999
#define PGW_TZ_NAME_MAX 48
/* "2026-11-24T10:15:00+08:00" plus room: buffers for pgw_format_rfc3339. */
#define PGW_RFC3339_MAX 32

typedef struct pgw_date {
    int32_t year;  /* PGW_YEAR_MIN..PGW_YEAR_MAX */
    int32_t month; /* 1..12 */
    int32_t day;   /* 1..days in month */
} pgw_date;

struct pgw_tz_past; /* civil.c's table of a zone's offsets since 2000 */

typedef struct pgw_tz {
    char name[PGW_TZ_NAME_MAX]; /* as configured: "Asia/Shanghai", "+08:00" */
    int32_t offset_s;           /* today's: seconds east of UTC, -14h..+14h */
    /* The offsets it had before today's, found once by pgw_tz_lookup (a
     * zone's name looked up at every date cost an event's writer ~2,000
     * instructions); NULL for a zone that kept one offset since 2000, a
     * fixed offset, and a pgw_tz made by hand. */
    const struct pgw_tz_past *past;
} pgw_tz;

bool pgw_is_leap_year(int32_t year);
/* Days in `month` of `year` (28..31); month must be 1..12. */
int32_t pgw_days_in_month(int32_t year, int32_t month);
/* true when d is a real calendar date within the supported range. */
bool pgw_date_valid(pgw_date d);

/* Days since 1970-01-01 for a valid date, and back (Hinnant's algorithms). */
int64_t pgw_days_from_date(pgw_date d);
pgw_date pgw_date_from_days(int64_t days);
/* ISO weekday: 1 = Monday .. 7 = Sunday. */
int32_t pgw_weekday(pgw_date d);
/* Compare two dates: negative, 0, positive. */
int pgw_date_cmp(pgw_date a, pgw_date b);

/*
 * d plus `months` calendar months; the day is clamped to the end of the
 * target month (2026-01-31 + 1 month = 2026-02-28). PGW_ERANGE when the
 * result leaves the supported years.
 */
int pgw_date_add_months(pgw_date d, int32_t months, pgw_date *out);
/* d plus `days` days; PGW_ERANGE when the result leaves the supported years. */
int pgw_date_add_days(pgw_date d, int32_t days, pgw_date *out);

/*
 * Resolves a zone name: a table entry ("Asia/Shanghai", "Asia/Hong_Kong",
 * "Asia/Tokyo", ...), "UTC", or a fixed offset "+08:00" / "-05:30".
 * PGW_EINVAL with a message for unknown names and for zones with DST.
 */
int pgw_tz_lookup(const char *name, pgw_tz *out, pgw_err *err);

/*
 * The offset of `tz` in force at instant `t`: today's, or for a zone that
 * changed its own since 2000 (Asia/Almaty was +06:00 until 2024-03-01,
 * Europe/Moscow +04:00 2011..2014, America/Sao_Paulo kept summer time
 * until 2019) the one it had then, as tzdata 2025b has it (found once by
 * pgw_tz_lookup: a pgw_tz written by hand has none, today's offset at
 * every instant, whatever its name; pgw_tz_fixed_since still goes by the
 * name). Instants before 2000-01-01 are read in the offset of that day:
 * the gateway holds none (no event is older: PGW_EVENT_EARLIEST_S).
 */
int32_t pgw_tz_offset_at(const pgw_tz *tz, int64_t t);

/* The first instant after `t` at which `tz`'s offset changes (of those
 * pgw_tz_offset_at knows), INT64_MAX when none does: from `t` to it, one
 * offset holds. For whoever cuts days of a span of instants in SQL, one
 * offset at a time (report.c's pool). */
int64_t pgw_tz_next_change(const pgw_tz *tz, int64_t t);

/* The local calendar date at instant `t` (unix seconds) in `tz`, in the
 * offset in force at `t`. */
pgw_date pgw_local_date(int64_t t, const pgw_tz *tz);
/* Seconds since local midnight at instant `t` in `tz` (0..86399), so too. */
int32_t pgw_local_seconds_of_day(int64_t t, const pgw_tz *tz);
/* The instant (unix seconds) date d began in `tz`: its 00:00 local time
 * in the offset then, or when a change skipped 00:00 (summer time began
 * at midnight in Sao Paulo) the change; where a change repeated it, the
 * first. pgw_local_date of it is d, and of the second before it, the day
 * before. A day is 86400 seconds, or an hour more or less on a change. */
int64_t pgw_local_midnight(pgw_date d, const pgw_tz *tz);

/*
 * Parses an RFC 3339 timestamp with an explicit offset:
 * "2026-11-24T10:15:00+08:00", "2026-11-24T02:15:00Z", optional fraction
 * ".123" (truncated to the second). A timestamp without an offset is
 * refused: a naive time is a time-zone bug waiting to happen.
 */
int pgw_parse_rfc3339(const char *s, int64_t *out, pgw_err *err);
/*
 * The first year from which `tz` has had its one offset, without summer
 * time: PGW_YEAR_MIN for UTC and a fixed offset ("+08:00"), 1992 for
 * Asia/Shanghai (summer time until 1991), 2025 for Asia/Almaty (+06:00
 * until 2024-03-01): the year after the zone's last change, so that a
 * change's exact day cannot be misremembered. PGW_YEAR_MAX + 1 for a zone
 * this table does not know. Before that year a local time may be two
 * instants or none (summer time ended or began), and it is not read
 * (pgw_parse_local_time); an instant is always one local time
 * (pgw_tz_offset_at).
 */
int32_t pgw_tz_fixed_since(const pgw_tz *tz);

/*
 * Parses a time as a till or a spreadsheet writes one: what
 * pgw_parse_rfc3339 takes, the same with a space for the "T" (RFC 3339
 * section 5.6 allows it), its seconds left out ("2026-11-20 14:03"), a
 * slash date as Excel and Chinese tills write it ("2026/11/20 14:03:05",
 * "2026/2/3 9:05": month, day and hour padded or not; a space, not a T),
 * any of these without its offset: a local time in `tz`. PGW_EINVAL when
 * it is none of these shapes. PGW_ERANGE for one that names no date
 * ("2026/2/30", years past PGW_YEAR_MIN..PGW_YEAR_MAX) or no time of day
 * ("24:00"), and for a local time `tz` cannot place: no zone given
 * (NULL), or a year before pgw_tz_fixed_since, where summer time or
 * another offset could make it two instants or none; it is refused, not
 * guessed. An ERANGE message starts with the time quoted, to follow the
 * name of its field.
 */
int pgw_parse_local_time(const char *s, const pgw_tz *tz, int64_t *out, pgw_err *err);

/* Parses "YYYY-MM-DD" (a valid date in range). */
int pgw_parse_date(const char *s, pgw_date *out, pgw_err *err);
/* Parses "MM-DD" (a birthday without a year; "02-29" is valid). */
int pgw_parse_month_day(const char *s, int32_t *month, int32_t *day, pgw_err *err);

/*
 * Writes `t` as "YYYY-MM-DDTHH:MM:SS+HH:MM" in `tz`'s offset of today at
 * every instant, not the one in force at `t` (it is the normal form an
 * event's fingerprint keeps, which must not change once recorded; both
 * name the instant) ("Z" for UTC offset 0)
 * into buf (cap >= PGW_RFC3339_MAX). PGW_ERANGE if `t` is outside the
 * supported years or cap is too small.
 */
int pgw_format_rfc3339(int64_t t, const pgw_tz *tz, char *buf, size_t cap);
/*
 * `t` for a message a person reads: pgw_format_rfc3339 in `tz`, as
 * finance writes a time, else (no zone, NULL; a year it cannot write) its
 * unix seconds, so that a refusal always names the moment.
 */
void pgw_format_moment(int64_t t, const pgw_tz *tz, char out[PGW_RFC3339_MAX]);
/* pgw_format_moment in UTC ("2026-12-01T10:00:00Z"): the gateway's clock
 * in a refusal, which a till's clock is set by, whatever the mall's zone.
 * The request log's redaction hides unix seconds (10 digits, as a
 * phone's) but keeps a date. */
void pgw_format_utc(int64_t t, char out[PGW_RFC3339_MAX]);

/* "Sun, 06 Nov 1994 08:49:37 GMT" and its NUL: an HTTP Date. */
#define PGW_HTTP_DATE_MAX 30
/* `t` as RFC 9110's IMF-fixdate (5.6.7), an answer's Date, without
 * printf or the locale. PGW_ERANGE, out "", outside the supported years. */
int pgw_format_http_date(int64_t t, char out[PGW_HTTP_DATE_MAX]);
/*
 * `t` for an answer a program reads: pgw_format_rfc3339 in `tz`, else (an
 * instant the zone's years do not reach: before 1970 there, for a zone
 * west of UTC) in UTC, the same instant and still RFC 3339. PGW_ERANGE
 * for one outside UTC's years too (out is then "").
 */
int pgw_format_rfc3339_or_utc(int64_t t, const pgw_tz *tz, char out[PGW_RFC3339_MAX]);
/* Writes "YYYY-MM-DD" into buf (cap >= 11). */
int pgw_format_date(pgw_date d, char *buf, size_t cap);

#endif
