/*
 * civil.c - see civil.h.
 *
 * Date arithmetic follows Howard Hinnant's public-domain algorithms
 * ("chrono-Compatible Low-Level Date Algorithms"): exact for the proleptic
 * Gregorian calendar, branch-light, and free of the libc time zone state
 * (no TZ variable, no tzset) that would make results depend on the host.
 */
#include "civil.h"

#include "assertions.h"

#include <stdio.h>
#include <string.h>

#define SECONDS_PER_DAY   86400
#define TZ_OFFSET_MAX     (14 * 3600)
#define RFC3339_INPUT_MAX 64

bool pgw_is_leap_year(int32_t year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

int32_t pgw_days_in_month(int32_t year, int32_t month)
{
    static const int32_t days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    PGW_ASSERT(month >= 1 && month <= 12);
    if (month == 2 && pgw_is_leap_year(year))
        return 29;
    return days[month - 1];
}

bool pgw_date_valid(pgw_date d)
{
    if (d.year < PGW_YEAR_MIN || d.year > PGW_YEAR_MAX)
        return false;
    if (d.month < 1 || d.month > 12)
        return false;
    return d.day >= 1 && d.day <= pgw_days_in_month(d.year, d.month);
}

int64_t pgw_days_from_date(pgw_date d)
{
    PGW_ASSERT(pgw_date_valid(d));
    int64_t y = d.year - (d.month <= 2);
    int64_t era = y / 400; /* y >= 1969: no negative division */
    int64_t yoe = y - era * 400;
    int64_t mp = (d.month + 9) % 12; /* March = 0 */
    int64_t doy = (153 * mp + 2) / 5 + d.day - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

pgw_date pgw_date_from_days(int64_t days)
{
    int64_t z = days + 719468;
    PGW_ASSERT(z >= 0);
    int64_t era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    pgw_date d;
    d.day = (int32_t)(doy - (153 * mp + 2) / 5 + 1);
    d.month = (int32_t)(mp < 10 ? mp + 3 : mp - 9);
    d.year = (int32_t)(yoe + era * 400 + (d.month <= 2));
    return d;
}

int32_t pgw_weekday(pgw_date d)
{
    int64_t days = pgw_days_from_date(d);
    /* 1970-01-01 was a Thursday (ISO 4). */
    return (int32_t)((days + 3) % 7) + 1;
}

int pgw_date_cmp(pgw_date a, pgw_date b)
{
    if (a.year != b.year)
        return a.year < b.year ? -1 : 1;
    if (a.month != b.month)
        return a.month < b.month ? -1 : 1;
    if (a.day != b.day)
        return a.day < b.day ? -1 : 1;
    return 0;
}

int pgw_date_add_months(pgw_date d, int32_t months, pgw_date *out)
{
    PGW_ASSERT(pgw_date_valid(d));
    int64_t index = (int64_t)d.year * 12 + (d.month - 1) + months;
    int64_t year = index / 12;
    if (index < 0 || year < PGW_YEAR_MIN || year > PGW_YEAR_MAX)
        return PGW_ERANGE;
    pgw_date r = {(int32_t)year, (int32_t)(index % 12) + 1, 1};
    int32_t last = pgw_days_in_month(r.year, r.month);
    r.day = d.day < last ? d.day : last;
    *out = r;
    return PGW_OK;
}

int pgw_date_add_days(pgw_date d, int32_t days, pgw_date *out)
{
    int64_t n = pgw_days_from_date(d) + days;
    pgw_date first = {PGW_YEAR_MIN, 1, 1};
    pgw_date last = {PGW_YEAR_MAX, 12, 31};
    if (n < pgw_days_from_date(first) || n > pgw_days_from_date(last))
        return PGW_ERANGE;
    *out = pgw_date_from_days(n);
    return PGW_OK;
}

/* Zones without daylight saving time, with their fixed offset. */
static const struct {
    const char *name;
    int32_t offset_s;
} FIXED_ZONES[] = {
    {"UTC", 0},
    {"Etc/UTC", 0},
    {"Asia/Shanghai", 8 * 3600},
    {"Asia/Chongqing", 8 * 3600},
    {"Asia/Hong_Kong", 8 * 3600},
    {"Asia/Macau", 8 * 3600},
    {"Asia/Taipei", 8 * 3600},
    {"Asia/Singapore", 8 * 3600},
    {"Asia/Kuala_Lumpur", 8 * 3600},
    {"Asia/Manila", 8 * 3600},
    {"Asia/Tokyo", 9 * 3600},
    {"Asia/Seoul", 9 * 3600},
    {"Asia/Bangkok", 7 * 3600},
    {"Asia/Ho_Chi_Minh", 7 * 3600},
    {"Asia/Jakarta", 7 * 3600},
    {"Asia/Dubai", 4 * 3600},
    {"Asia/Kolkata", 5 * 3600 + 1800},
    /* More without daylight saving time today (tzdata 2024). */
    {"GMT", 0},
    {"Etc/GMT", 0},
    {"PRC", 8 * 3600},
    {"Asia/Harbin", 8 * 3600},
    {"Asia/Urumqi", 6 * 3600},
    {"Asia/Brunei", 8 * 3600},
    {"Asia/Ulaanbaatar", 8 * 3600},
    {"Asia/Phnom_Penh", 7 * 3600},
    {"Asia/Vientiane", 7 * 3600},
    {"Asia/Yangon", 6 * 3600 + 1800},
    {"Asia/Dhaka", 6 * 3600},
    {"Asia/Thimphu", 6 * 3600},
    {"Asia/Kathmandu", 5 * 3600 + 2700},
    {"Asia/Colombo", 5 * 3600 + 1800},
    {"Asia/Karachi", 5 * 3600},
    {"Asia/Tashkent", 5 * 3600},
    {"Asia/Almaty", 5 * 3600},
    {"Asia/Kabul", 4 * 3600 + 1800},
    {"Asia/Muscat", 4 * 3600},
    {"Asia/Baku", 4 * 3600},
    {"Asia/Tbilisi", 4 * 3600},
    {"Asia/Yerevan", 4 * 3600},
    {"Asia/Riyadh", 3 * 3600},
    {"Asia/Qatar", 3 * 3600},
    {"Asia/Kuwait", 3 * 3600},
    {"Asia/Bahrain", 3 * 3600},
    {"Asia/Baghdad", 3 * 3600},
    {"Europe/Moscow", 3 * 3600},
    {"Europe/Istanbul", 3 * 3600},
    {"Europe/Minsk", 3 * 3600},
    {"Africa/Nairobi", 3 * 3600},
    {"Africa/Johannesburg", 2 * 3600},
    {"Africa/Lagos", 1 * 3600},
    {"America/Sao_Paulo", -3 * 3600},
    {"America/Argentina/Buenos_Aires", -3 * 3600},
    {"America/Bogota", -5 * 3600},
    {"America/Lima", -5 * 3600},
    {"America/Panama", -5 * 3600},
    {"America/Phoenix", -7 * 3600},
    {"Pacific/Honolulu", -10 * 3600},
    {"Australia/Brisbane", 10 * 3600},
    {"Australia/Perth", 8 * 3600},
    {"Australia/Darwin", 9 * 3600 + 1800},
};

/* Parses "+HH:MM" / "-HH:MM" (|offset| <= 14:00). */
static int parse_offset(const char *s, int32_t *out)
{
    if (strlen(s) != 6 || (s[0] != '+' && s[0] != '-') || s[3] != ':')
        return PGW_EINVAL;
    const char digits[] = {s[1], s[2], s[4], s[5]};
    for (size_t i = 0; i < sizeof(digits); i++) {
        if (digits[i] < '0' || digits[i] > '9')
            return PGW_EINVAL;
    }
    int32_t hours = (s[1] - '0') * 10 + (s[2] - '0');
    int32_t minutes = (s[4] - '0') * 10 + (s[5] - '0');
    int32_t offset = hours * 3600 + minutes * 60;
    if (minutes > 59 || offset > TZ_OFFSET_MAX)
        return PGW_EINVAL;
    *out = s[0] == '-' ? -offset : offset;
    return PGW_OK;
}

int pgw_tz_lookup(const char *name, pgw_tz *out, pgw_err *err)
{
    PGW_ASSERT(name != NULL && out != NULL);
    size_t len = strnlen(name, PGW_TZ_NAME_MAX);
    if (len == 0 || len >= PGW_TZ_NAME_MAX)
        return pgw_err_set(err, PGW_EINVAL, "time zone name must be 1..%d bytes",
                           PGW_TZ_NAME_MAX - 1);
    int32_t offset = 0;
    bool found = parse_offset(name, &offset) == PGW_OK;
    for (size_t i = 0; !found && i < sizeof(FIXED_ZONES) / sizeof(FIXED_ZONES[0]); i++) {
        if (strcmp(FIXED_ZONES[i].name, name) == 0) {
            offset = FIXED_ZONES[i].offset_s;
            found = true;
        }
    }
    if (!found) {
        bool dst_region = strncmp(name, "Europe/", 7) == 0 || strncmp(name, "America/", 8) == 0 ||
                          strncmp(name, "Australia/", 10) == 0;
        return pgw_err_set(err, PGW_EINVAL,
                           dst_region ? "time zone \"%s\" has daylight saving time, which is not "
                                        "supported; give a fixed offset such as \"+01:00\""
                                      : "unknown time zone \"%s\" (use e.g. \"Asia/Shanghai\" or "
                                        "a fixed offset \"+08:00\")",
                           name);
    }
    memcpy(out->name, name, len + 1);
    out->offset_s = offset;
    return PGW_OK;
}

pgw_date pgw_local_date(int64_t t, const pgw_tz *tz)
{
    int64_t local = t + tz->offset_s;
    int64_t days = local / SECONDS_PER_DAY - (local % SECONDS_PER_DAY < 0);
    return pgw_date_from_days(days);
}

int32_t pgw_local_seconds_of_day(int64_t t, const pgw_tz *tz)
{
    int64_t r = (t + tz->offset_s) % SECONDS_PER_DAY;
    return (int32_t)(r < 0 ? r + SECONDS_PER_DAY : r);
}

int64_t pgw_local_midnight(pgw_date d, const pgw_tz *tz)
{
    return pgw_days_from_date(d) * SECONDS_PER_DAY - tz->offset_s;
}

/* Reads exactly `width` digits at s into *out. */
static bool read_digits(const char *s, int width, int32_t *out)
{
    int32_t v = 0;
    for (int i = 0; i < width; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

int pgw_parse_date(const char *s, pgw_date *out, pgw_err *err)
{
    pgw_date d;
    if (strnlen(s, 11) != 10 || s[4] != '-' || s[7] != '-' || !read_digits(s, 4, &d.year) ||
        !read_digits(s + 5, 2, &d.month) || !read_digits(s + 8, 2, &d.day))
        return pgw_err_set(err, PGW_EINVAL, "expected a date YYYY-MM-DD, got \"%.32s\"", s);
    if (!pgw_date_valid(d))
        return pgw_err_set(err, PGW_EINVAL, "no such date %s (years %d..%d)", s, PGW_YEAR_MIN,
                           PGW_YEAR_MAX);
    *out = d;
    return PGW_OK;
}

int pgw_parse_month_day(const char *s, int32_t *month, int32_t *day, pgw_err *err)
{
    int32_t m, d;
    if (strnlen(s, 6) != 5 || s[2] != '-' || !read_digits(s, 2, &m) || !read_digits(s + 3, 2, &d))
        return pgw_err_set(err, PGW_EINVAL, "expected a month and day MM-DD, got \"%.32s\"", s);
    /* 2000 is a leap year, so 02-29 counts as a real birthday. */
    if (m < 1 || m > 12 || d < 1 || d > pgw_days_in_month(2000, m))
        return pgw_err_set(err, PGW_EINVAL, "no such month and day %s", s);
    *month = m;
    *day = d;
    return PGW_OK;
}

/* Parses the "Z" / "+HH:MM" suffix of a timestamp into seconds east of UTC. */
static bool parse_ts_offset(const char *s, int32_t *offset)
{
    if (strcmp(s, "Z") == 0 || strcmp(s, "z") == 0) {
        *offset = 0;
        return true;
    }
    return parse_offset(s, offset) == PGW_OK;
}

int pgw_parse_rfc3339(const char *s, int64_t *out, pgw_err *err)
{
    size_t len = strnlen(s, RFC3339_INPUT_MAX + 1);
    char date[11];
    int32_t hh, mm, ss, offset;
    pgw_date d;
    if (len > RFC3339_INPUT_MAX || len < 20 || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        goto bad;
    memcpy(date, s, 10);
    date[10] = '\0';
    if (pgw_parse_date(date, &d, NULL) != PGW_OK || !read_digits(s + 11, 2, &hh) ||
        !read_digits(s + 14, 2, &mm) || !read_digits(s + 17, 2, &ss))
        goto bad;
    /* Leap seconds (":60") are refused: no till or phone produces them and
     * accepting one would need a rule for what day it belongs to. */
    if (hh > 23 || mm > 59 || ss > 59)
        goto bad;
    const char *rest = s + 19;
    if (*rest == '.') {
        size_t n = 0;
        while (rest[1 + n] >= '0' && rest[1 + n] <= '9')
            n++;
        if (n < 1 || n > 9)
            goto bad;
        rest += 1 + n; /* the fraction is dropped: the ledger counts seconds */
    }
    if (!parse_ts_offset(rest, &offset))
        goto bad;
    *out = pgw_days_from_date(d) * SECONDS_PER_DAY + hh * 3600 + mm * 60 + ss - offset;
    return PGW_OK;
bad:
    return pgw_err_set(err, PGW_EINVAL,
                       "expected an RFC 3339 time with an offset such as "
                       "\"2026-11-24T10:15:00+08:00\", got \"%.64s\"",
                       s);
}

/*
 * The year from which each zone of FIXED_ZONES has had its offset of
 * today without summer time: the year after its last change, rounded up
 * so that a change's exact day does not matter. Checked against tzdata
 * 2025b (`zdump -v`: the last change of UTC offset of each zone).
 * Links (PRC, Asia/Chongqing, Asia/Muscat...) as their zone.
 */
static const struct {
    const char *name;
    int32_t since;
} FIXED_SINCE[] = {
    {"UTC", PGW_YEAR_MIN},
    {"Etc/UTC", PGW_YEAR_MIN},
    {"GMT", PGW_YEAR_MIN},
    {"Etc/GMT", PGW_YEAR_MIN},
    {"Asia/Shanghai", 1992}, /* summer time 1986..1991 */
    {"Asia/Chongqing", 1992},
    {"Asia/Harbin", 1992},
    {"PRC", 1992},
    {"Asia/Hong_Kong", 1980}, /* summer time until 1979 */
    {"Asia/Macau", 1980},
    {"Asia/Taipei", 1980},
    {"Asia/Singapore", 1982}, /* +07:30 until 1981 */
    {"Asia/Kuala_Lumpur", 1982},
    {"Asia/Manila", 1991}, /* summer time 1990-05-21..07-28 (tzdata 2024b) */
    {"Asia/Tokyo", PGW_YEAR_MIN},
    {"Asia/Seoul", 1989}, /* summer time 1987..1988 */
    {"Asia/Bangkok", PGW_YEAR_MIN},
    {"Asia/Phnom_Penh", PGW_YEAR_MIN},
    {"Asia/Vientiane", PGW_YEAR_MIN},
    {"Asia/Ho_Chi_Minh", 1976},
    {"Asia/Jakarta", PGW_YEAR_MIN},
    {"Asia/Dubai", PGW_YEAR_MIN},
    {"Asia/Muscat", PGW_YEAR_MIN},
    {"Asia/Kolkata", PGW_YEAR_MIN},
    {"Asia/Urumqi", PGW_YEAR_MIN}, /* +06:00 since 1928 */
    {"Asia/Brunei", PGW_YEAR_MIN}, /* +08:00 since 1945 (Kuching) */
    {"Asia/Ulaanbaatar", 2017},    /* summer time until 2016 */
    {"Asia/Yangon", PGW_YEAR_MIN},
    {"Asia/Dhaka", 2010},     /* summer time in 2009 */
    {"Asia/Thimphu", 1988},   /* +05:30 until 1987 */
    {"Asia/Kathmandu", 1987}, /* +05:30 until 1986 */
    {"Asia/Colombo", 2007},   /* +06:00 until 2006 */
    {"Asia/Karachi", 2010},   /* summer time until 2009 */
    {"Asia/Tashkent", 1992},  /* +06:00 summer time until 1991-09-29 */
    {"Asia/Almaty", 2025},    /* +06:00 until 2024-03-01 */
    {"Asia/Kabul", PGW_YEAR_MIN},
    {"Asia/Baku", 2016},    /* summer time until 2015 */
    {"Asia/Tbilisi", 2006}, /* until 2005 */
    {"Asia/Yerevan", 2012}, /* summer time until 2011 */
    {"Asia/Riyadh", PGW_YEAR_MIN},
    {"Asia/Kuwait", PGW_YEAR_MIN},
    {"Asia/Qatar", 1973}, /* +04:00 until 1972 */
    {"Asia/Bahrain", 1973},
    {"Asia/Baghdad", 2008},    /* summer time until 2007 */
    {"Europe/Moscow", 2015},   /* +04:00 until 2014-10-26 */
    {"Europe/Istanbul", 2017}, /* summer time until 2016 */
    {"Europe/Minsk", 2012},    /* summer time until 2011 */
    {"Africa/Nairobi", PGW_YEAR_MIN},
    {"Africa/Johannesburg", PGW_YEAR_MIN},
    {"Africa/Lagos", PGW_YEAR_MIN},
    {"America/Sao_Paulo", 2020}, /* summer time until 2019-02 */
    {"America/Argentina/Buenos_Aires", 2010},
    {"America/Bogota", 1994}, /* summer time 1992..1993 */
    {"America/Lima", 1995},   /* summer time until 1994 */
    {"America/Panama", PGW_YEAR_MIN},
    {"America/Phoenix", PGW_YEAR_MIN},
    {"Pacific/Honolulu", PGW_YEAR_MIN},
    {"Australia/Brisbane", 1993}, /* summer time 1989..1992 */
    {"Australia/Perth", 2010},    /* summer time until 2009 */
    {"Australia/Darwin", PGW_YEAR_MIN},
};

int32_t pgw_tz_fixed_since(const pgw_tz *tz)
{
    int32_t offset = 0;
    if (parse_offset(tz->name, &offset) == PGW_OK) /* a fixed offset: no history */
        return PGW_YEAR_MIN;
    for (size_t i = 0; i < sizeof(FIXED_SINCE) / sizeof(FIXED_SINCE[0]); i++)
        if (strcmp(FIXED_SINCE[i].name, tz->name) == 0)
            return FIXED_SINCE[i].since;
    return PGW_YEAR_MAX + 1;
}

/* 1..`max` digits at *p, at least `min` of them and no digit after them,
 * into *out, *p moved past them. */
static bool read_number(const char **p, int min, int max, int32_t *out)
{
    const char *s = *p;
    int n = 0;
    int32_t v = 0;
    for (; n < max && s[n] >= '0' && s[n] <= '9'; n++)
        v = v * 10 + (s[n] - '0');
    if (n < min || (s[n] >= '0' && s[n] <= '9'))
        return false;
    *p = s + n;
    *out = v;
    return true;
}

/* A time as written, before it is checked to exist. */
typedef struct written_time {
    pgw_date date; /* as written: may be no date (2026/2/30) */
    int32_t hh, mm, ss;
    bool has_offset;
    int32_t offset_s;
} written_time;

/*
 * Whether s has the shape of a time we read: a date "2026-11-20" (RFC
 * 3339's, every part padded) then "T" or a space, or "2026/11/20" (as
 * Excel's "yyyy/m/d h:mm" and Chinese tills write it: month, day and hour
 * padded or not) then a space; "HH:MM", ":SS" (and a fraction, dropped)
 * optional; an offset "Z" / "+08:00" optional. Nothing else: no space
 * around it, none doubled, no separators mixed.
 */
static bool time_shape(const char *s, written_time *w)
{
    const char *p = s;
    if (!read_number(&p, 4, 4, &w->date.year) || (*p != '-' && *p != '/'))
        return false;
    char sep = *p++;
    int least = sep == '/' ? 1 : 2;
    if (!read_number(&p, least, 2, &w->date.month) || *p++ != sep ||
        !read_number(&p, least, 2, &w->date.day))
        return false;
    if (*p != ' ' && (sep == '/' || (*p != 'T' && *p != 't')))
        return false;
    p++;
    if (!read_number(&p, least, 2, &w->hh) || *p++ != ':' || !read_number(&p, 2, 2, &w->mm))
        return false;
    w->ss = 0;
    if (*p == ':') {
        p++;
        if (!read_number(&p, 2, 2, &w->ss))
            return false;
        int32_t fraction; /* dropped: the ledger counts seconds */
        if (*p == '.' && (p++, !read_number(&p, 1, 9, &fraction)))
            return false;
    }
    w->has_offset = *p != '\0';
    w->offset_s = 0;
    return !w->has_offset || parse_ts_offset(p, &w->offset_s);
}

/* PGW_ERANGE, saying why, when w names no date or no time of day. */
static int exists(const char *s, const written_time *w, pgw_err *err)
{
    pgw_date d = w->date;
    if (d.year < PGW_YEAR_MIN || d.year > PGW_YEAR_MAX)
        return pgw_err_set(err, PGW_ERANGE, "\"%s\" is no date: years %d..%d", s, PGW_YEAR_MIN,
                           PGW_YEAR_MAX);
    if (d.month < 1 || d.month > 12)
        return pgw_err_set(err, PGW_ERANGE, "\"%s\" is no date: a month is 1..12", s);
    if (!pgw_date_valid(d))
        return pgw_err_set(err, PGW_ERANGE, "\"%s\" is no date: %04d-%02d has %d days", s,
                           (int)d.year, (int)d.month, (int)pgw_days_in_month(d.year, d.month));
    /* Leap seconds (":60") are refused, as pgw_parse_rfc3339 does. */
    if (w->hh > 23 || w->mm > 59 || w->ss > 59)
        return pgw_err_set(err, PGW_ERANGE, "\"%s\" is no time of day: 00:00:00..23:59:59", s);
    return PGW_OK;
}

int pgw_parse_local_time(const char *s, const pgw_tz *tz, int64_t *out, pgw_err *err)
{
    written_time w;
    if (strnlen(s, RFC3339_INPUT_MAX + 1) > RFC3339_INPUT_MAX || !time_shape(s, &w))
        return pgw_err_set(err, PGW_EINVAL,
                           "expected a time such as \"2026-11-24T10:15:00+08:00\" or "
                           "\"2026/11/24 10:15\" (a space for the T, the seconds or the offset "
                           "left out), got \"%.64s\"",
                           s);
    int rc = exists(s, &w, err);
    if (rc != PGW_OK)
        return rc;
    /* The time of day it writes, as if at UTC: the local time, in seconds. */
    int64_t local = pgw_days_from_date(w.date) * SECONDS_PER_DAY + w.hh * 3600 + w.mm * 60 + w.ss;
    if (w.has_offset) {
        *out = local - w.offset_s;
        return PGW_OK;
    }
    if (tz == NULL)
        return pgw_err_set(err, PGW_ERANGE,
                           "\"%s\" has no offset, and no time zone is given to read it in", s);
    int32_t since = pgw_tz_fixed_since(tz);
    if (since > PGW_YEAR_MAX)
        return pgw_err_set(err, PGW_ERANGE,
                           "\"%s\" has no offset, and the offsets %s has had are not known "
                           "here: give its offset",
                           s, tz->name);
    if (w.date.year < since)
        return pgw_err_set(err, PGW_ERANGE,
                           "\"%s\" has no offset, and %s has had its offset only since %d: "
                           "give its offset",
                           s, tz->name, (int)since);
    /* One offset from `since` on: each local time is exactly one instant. */
    *out = local - tz->offset_s;
    return PGW_OK;
}

int pgw_format_date(pgw_date d, char *buf, size_t cap)
{
    if (!pgw_date_valid(d) || cap < 11)
        return PGW_ERANGE;
    snprintf(buf, cap, "%04d-%02d-%02d", (int)d.year, (int)d.month, (int)d.day);
    return PGW_OK;
}

int pgw_format_rfc3339(int64_t t, const pgw_tz *tz, char *buf, size_t cap)
{
    int64_t first = -(int64_t)TZ_OFFSET_MAX;
    int64_t last = INT64_C(253402300799) + TZ_OFFSET_MAX; /* 9999-12-31T23:59:59Z */
    if (cap < PGW_RFC3339_MAX || t < first || t > last)
        return PGW_ERANGE;
    pgw_date d = pgw_local_date(t, tz);
    if (!pgw_date_valid(d))
        return PGW_ERANGE;
    int32_t sod = pgw_local_seconds_of_day(t, tz);
    int32_t off = tz->offset_s < 0 ? -tz->offset_s : tz->offset_s;
    char zone[16] = "Z";
    if (tz->offset_s != 0)
        snprintf(zone, sizeof(zone), "%c%02d:%02d", tz->offset_s < 0 ? '-' : '+', (int)(off / 3600),
                 (int)(off % 3600 / 60));
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d%s", (int)d.year, (int)d.month, (int)d.day,
             (int)(sod / 3600), (int)(sod % 3600 / 60), (int)(sod % 60), zone);
    return PGW_OK;
}
