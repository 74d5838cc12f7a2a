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

/* A zone's offset before a change: `offset_s` until the instant `until`. */
typedef struct pgw_tz_change {
    int64_t until;    /* unix seconds: the change */
    int32_t offset_s; /* seconds east of UTC before it */
} pgw_tz_change;

/*
 * The offsets before today's of each zone of FIXED_ZONES that changed its
 * own since 2000-01-01 (summer time, or another standard offset), each
 * until the instant of its change, from the one in force on that day:
 * written from tzdata 2025b (`zdump -v -c 2000,2100 ZONE`: each change's
 * instant and the offset before it, but for a change of name alone:
 * Istanbul's summer time made standard in 2016), not from memory. Events
 * reach back to 2000 (PGW_EVENT_EARLIEST_S), and a local date read in
 * today's offset would be an hour off around midnight: a year-end expiry
 * a year early.
 * The other zones kept one offset since before 2000 (FIXED_SINCE).
 */
static const pgw_tz_change PAST_ULAANBAATAR[] = {
    {988394400, 28800},  {1001696400, 32400}, {1017424800, 28800}, {1033146000, 32400},
    {1048874400, 28800}, {1064595600, 32400}, {1080324000, 28800}, {1096045200, 32400},
    {1111773600, 28800}, {1127494800, 32400}, {1143223200, 28800}, {1159549200, 32400},
    {1427479200, 28800}, {1443193200, 32400}, {1458928800, 28800}, {1474642800, 32400}};
static const pgw_tz_change PAST_DHAKA[] = {{1245430800, 21600}, {1262278800, 25200}};
static const pgw_tz_change PAST_COLOMBO[] = {{1145039400, 21600}};
static const pgw_tz_change PAST_KARACHI[] = {{1018119600, 18000}, {1033840800, 21600},
                                             {1212260400, 18000}, {1225476000, 21600},
                                             {1239735600, 18000}, {1257012000, 21600}};
static const pgw_tz_change PAST_ALMATY[] = {
    {954014400, 21600},  {972763200, 25200},  {985464000, 21600},  {1004212800, 25200},
    {1017518400, 21600}, {1035662400, 25200}, {1048968000, 21600}, {1067112000, 25200},
    {1080417600, 21600}, {1099166400, 25200}, {1709229600, 21600}};
static const pgw_tz_change PAST_BAKU[] = {
    {954028800, 14400},  {972777600, 18000},  {985478400, 14400},  {1004227200, 18000},
    {1017532800, 14400}, {1035676800, 18000}, {1048982400, 14400}, {1067126400, 18000},
    {1080432000, 14400}, {1099180800, 18000}, {1111881600, 14400}, {1130630400, 18000},
    {1143331200, 14400}, {1162080000, 18000}, {1174780800, 14400}, {1193529600, 18000},
    {1206835200, 14400}, {1224979200, 18000}, {1238284800, 14400}, {1256428800, 18000},
    {1269734400, 14400}, {1288483200, 18000}, {1301184000, 14400}, {1319932800, 18000},
    {1332633600, 14400}, {1351382400, 18000}, {1364688000, 14400}, {1382832000, 18000},
    {1396137600, 14400}, {1414281600, 18000}, {1427587200, 14400}, {1445731200, 18000}};
static const pgw_tz_change PAST_TBILISI[] = {
    {954014400, 14400},  {972759600, 18000},  {985464000, 14400},  {1004209200, 18000},
    {1017518400, 14400}, {1035658800, 18000}, {1048968000, 14400}, {1067108400, 18000},
    {1080417600, 14400}, {1088276400, 18000}, {1099177200, 14400}, {1111878000, 10800}};
static const pgw_tz_change PAST_YEREVAN[] = {
    {954021600, 14400},  {972770400, 18000},  {985471200, 14400},  {1004220000, 18000},
    {1017525600, 14400}, {1035669600, 18000}, {1048975200, 14400}, {1067119200, 18000},
    {1080424800, 14400}, {1099173600, 18000}, {1111874400, 14400}, {1130623200, 18000},
    {1143324000, 14400}, {1162072800, 18000}, {1174773600, 14400}, {1193522400, 18000},
    {1206828000, 14400}, {1224972000, 18000}, {1238277600, 14400}, {1256421600, 18000},
    {1269727200, 14400}, {1288476000, 18000}, {1301176800, 14400}, {1319925600, 18000}};
static const pgw_tz_change PAST_BAGHDAD[] = {
    {954547200, 10800},  {970358400, 14400},  {986083200, 10800},  {1001894400, 14400},
    {1017619200, 10800}, {1033430400, 14400}, {1049155200, 10800}, {1064966400, 14400},
    {1080777600, 10800}, {1096588800, 14400}, {1112313600, 10800}, {1128124800, 14400},
    {1143849600, 10800}, {1159660800, 14400}, {1175385600, 10800}, {1191196800, 14400}};
static const pgw_tz_change PAST_MOSCOW[] = {
    {954025200, 10800},  {972774000, 14400},  {985474800, 10800},  {1004223600, 14400},
    {1017529200, 10800}, {1035673200, 14400}, {1048978800, 10800}, {1067122800, 14400},
    {1080428400, 10800}, {1099177200, 14400}, {1111878000, 10800}, {1130626800, 14400},
    {1143327600, 10800}, {1162076400, 14400}, {1174777200, 10800}, {1193526000, 14400},
    {1206831600, 10800}, {1224975600, 14400}, {1238281200, 10800}, {1256425200, 14400},
    {1269730800, 10800}, {1288479600, 14400}, {1301180400, 10800}, {1414274400, 14400}};
static const pgw_tz_change PAST_ISTANBUL[] = {
    {954025200, 7200},  {972774000, 10800},  {985474800, 7200},  {1004223600, 10800},
    {1017529200, 7200}, {1035673200, 10800}, {1048978800, 7200}, {1067122800, 10800},
    {1080428400, 7200}, {1099177200, 10800}, {1111878000, 7200}, {1130626800, 10800},
    {1143327600, 7200}, {1162076400, 10800}, {1174784400, 7200}, {1193533200, 10800},
    {1206838800, 7200}, {1224982800, 10800}, {1238288400, 7200}, {1256432400, 10800},
    {1269738000, 7200}, {1288486800, 10800}, {1301274000, 7200}, {1319936400, 10800},
    {1332637200, 7200}, {1351386000, 10800}, {1364691600, 7200}, {1382835600, 10800},
    {1396227600, 7200}, {1414285200, 10800}, {1427590800, 7200}, {1446944400, 10800},
    {1459040400, 7200}};
static const pgw_tz_change PAST_MINSK[] = {
    {954028800, 7200},  {972777600, 10800},  {985478400, 7200},  {1004227200, 10800},
    {1017532800, 7200}, {1035676800, 10800}, {1048982400, 7200}, {1067126400, 10800},
    {1080432000, 7200}, {1099180800, 10800}, {1111881600, 7200}, {1130630400, 10800},
    {1143331200, 7200}, {1162080000, 10800}, {1174780800, 7200}, {1193529600, 10800},
    {1206835200, 7200}, {1224979200, 10800}, {1238284800, 7200}, {1256428800, 10800},
    {1269734400, 7200}, {1288483200, 10800}, {1301184000, 7200}};
static const pgw_tz_change PAST_SAO_PAULO[] = {
    {951616800, -7200},  {970974000, -10800},  {982461600, -7200},  {1003028400, -10800},
    {1013911200, -7200}, {1036292400, -10800}, {1045360800, -7200}, {1066532400, -10800},
    {1076810400, -7200}, {1099364400, -10800}, {1108864800, -7200}, {1129431600, -10800},
    {1140314400, -7200}, {1162695600, -10800}, {1172368800, -7200}, {1192330800, -10800},
    {1203213600, -7200}, {1224385200, -10800}, {1234663200, -7200}, {1255834800, -10800},
    {1266717600, -7200}, {1287284400, -10800}, {1298167200, -7200}, {1318734000, -10800},
    {1330221600, -7200}, {1350788400, -10800}, {1361066400, -7200}, {1382238000, -10800},
    {1392516000, -7200}, {1413687600, -10800}, {1424570400, -7200}, {1445137200, -10800},
    {1456020000, -7200}, {1476586800, -10800}, {1487469600, -7200}, {1508036400, -10800},
    {1518919200, -7200}, {1541300400, -10800}, {1550368800, -7200}};
static const pgw_tz_change PAST_BUENOS_AIRES[] = {
    {1198983600, -10800}, {1205632800, -7200}, {1224385200, -10800}, {1237082400, -7200}};
static const pgw_tz_change PAST_PERTH[] = {{1165082400, 28800}, {1174759200, 32400},
                                           {1193508000, 28800}, {1206813600, 32400},
                                           {1224957600, 28800}, {1238263200, 32400}};
#define PAST(name, changes)                                                                        \
    {                                                                                              \
        name, changes, sizeof(changes) / sizeof(changes[0])                                        \
    }
struct pgw_tz_past {
    const char *name;
    const pgw_tz_change *changes;
    size_t n;
};
static const struct pgw_tz_past PAST_OFFSETS[] = {
    PAST("Asia/Ulaanbaatar", PAST_ULAANBAATAR),
    PAST("Asia/Dhaka", PAST_DHAKA),
    PAST("Asia/Colombo", PAST_COLOMBO),
    PAST("Asia/Karachi", PAST_KARACHI),
    PAST("Asia/Almaty", PAST_ALMATY),
    PAST("Asia/Baku", PAST_BAKU),
    PAST("Asia/Tbilisi", PAST_TBILISI),
    PAST("Asia/Yerevan", PAST_YEREVAN),
    PAST("Asia/Baghdad", PAST_BAGHDAD),
    PAST("Europe/Moscow", PAST_MOSCOW),
    PAST("Europe/Istanbul", PAST_ISTANBUL),
    PAST("Europe/Minsk", PAST_MINSK),
    PAST("America/Sao_Paulo", PAST_SAO_PAULO),
    PAST("America/Argentina/Buenos_Aires", PAST_BUENOS_AIRES),
    PAST("Australia/Perth", PAST_PERTH),
};
#undef PAST

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
    out->past = NULL;
    for (size_t i = 0; i < sizeof(PAST_OFFSETS) / sizeof(PAST_OFFSETS[0]); i++) {
        if (strcmp(PAST_OFFSETS[i].name, name) == 0)
            out->past = &PAST_OFFSETS[i];
    }
    return PGW_OK;
}

/* The offsets `tz` had before today's (oldest first) and their number;
 * none (0) for a zone that kept one since 2000. */
static size_t past_offsets(const pgw_tz *tz, const pgw_tz_change **past)
{
    PGW_ASSERT(tz->past == NULL || strcmp(tz->past->name, tz->name) == 0);
    *past = tz->past != NULL ? tz->past->changes : NULL;
    return tz->past != NULL ? tz->past->n : 0;
}

int32_t pgw_tz_offset_at(const pgw_tz *tz, int64_t t)
{
    const pgw_tz_change *past = NULL;
    size_t n = past_offsets(tz, &past);
    if (n == 0 || t >= past[n - 1].until) /* most instants: today's */
        return tz->offset_s;
    size_t i = 0;
    while (t >= past[i].until) /* oldest first; at most a few dozen */
        i++;
    return past[i].offset_s;
}

int64_t pgw_tz_next_change(const pgw_tz *tz, int64_t t)
{
    const pgw_tz_change *past = NULL;
    size_t n = past_offsets(tz, &past);
    for (size_t i = 0; i < n; i++) /* oldest first */
        if (past[i].until > t)
            return past[i].until;
    return INT64_MAX;
}

/* The day number of a local time in seconds (floored: before 1970 too). */
static int64_t day_of(int64_t local)
{
    return local / SECONDS_PER_DAY - (local % SECONDS_PER_DAY < 0);
}

pgw_date pgw_local_date(int64_t t, const pgw_tz *tz)
{
    return pgw_date_from_days(day_of(t + pgw_tz_offset_at(tz, t)));
}

int32_t pgw_local_seconds_of_day(int64_t t, const pgw_tz *tz)
{
    int64_t local = t + pgw_tz_offset_at(tz, t);
    return (int32_t)(local - day_of(local) * SECONDS_PER_DAY);
}

/*
 * The first instant whose local time is 00:00 of d or later. Each span of
 * one offset (before the first change, between two, after the last) has
 * its earliest such instant: 00:00 in that offset, or the span's start
 * when that is before it (a change skipped 00:00); the earliest span that
 * holds its own is the answer, for a later span's are later still. The
 * last span (today's offset) has no end, so there is always one.
 */
int64_t pgw_local_midnight(pgw_date d, const pgw_tz *tz)
{
    int64_t local = pgw_days_from_date(d) * SECONDS_PER_DAY;
    const pgw_tz_change *past = NULL;
    size_t n = past_offsets(tz, &past);
    int64_t start = INT64_MIN; /* of the span */
    for (size_t i = 0; i < n; start = past[i++].until) {
        int64_t at = local - past[i].offset_s;
        if (at < start)
            at = start;
        if (at < past[i].until)
            return at;
    }
    int64_t at = local - tz->offset_s;
    return at < start ? start : at;
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

/*
 * The formatters below write their digits themselves: snprintf parsed its
 * format at every call, ~4,800 instructions of each event the service
 * thread reads (its time's normal form; bench/RESULTS.md). Every field is
 * in range when written (a valid date, a time of day, an offset within
 * 14 hours), so each has its fixed width, as "%0Nd" gave it.
 */

/* v (0 <= v < 10^width) in `width` digits, zero-padded, at p; returns
 * the end. */
static char *put_digits(char *p, int32_t v, int width)
{
    PGW_ASSERT(v >= 0);
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    PGW_ASSERT(v == 0); /* it fit */
    return p + width;
}

/* "YYYY-MM-DD" of a valid date at p (10 bytes, no NUL); returns the end. */
static char *put_date(char *p, pgw_date d)
{
    p = put_digits(p, d.year, 4);
    *p++ = '-';
    p = put_digits(p, d.month, 2);
    *p++ = '-';
    return put_digits(p, d.day, 2);
}

/* "HH:MM" of `seconds` (0 <= seconds < 100 hours) at p; returns the end. */
static char *put_hours_minutes(char *p, int32_t seconds)
{
    p = put_digits(p, seconds / 3600, 2);
    *p++ = ':';
    return put_digits(p, seconds % 3600 / 60, 2);
}

int pgw_format_date(pgw_date d, char *buf, size_t cap)
{
    if (!pgw_date_valid(d) || cap < 11)
        return PGW_ERANGE;
    *put_date(buf, d) = '\0';
    return PGW_OK;
}

int pgw_format_rfc3339(int64_t t, const pgw_tz *tz, char *buf, size_t cap)
{
    int64_t first = -(int64_t)TZ_OFFSET_MAX;
    int64_t last = INT64_C(253402300799) + TZ_OFFSET_MAX; /* 9999-12-31T23:59:59Z */
    if (cap < PGW_RFC3339_MAX || t < first || t > last)
        return PGW_ERANGE;
    /* In today's offset at every instant, not the one in force then
     * (pgw_tz_offset_at): this is the normal form of an event's time in
     * its idempotency fingerprint (event_json.c), which must not change
     * for an instant once recorded; either names the same instant. */
    int32_t offset = tz->offset_s;
    int64_t local = t + offset;
    int64_t days = day_of(local);
    pgw_date d = pgw_date_from_days(days);
    if (!pgw_date_valid(d))
        return PGW_ERANGE;
    int32_t sod = (int32_t)(local - days * SECONDS_PER_DAY);
    int32_t off = offset < 0 ? -offset : offset;
    PGW_ASSERT(off <= TZ_OFFSET_MAX); /* pgw_tz_lookup's bound */
    /* 25 bytes at most with the NUL: "9999-12-31T23:59:59+14:00". */
    char *p = put_date(buf, d);
    *p++ = 'T';
    p = put_hours_minutes(p, sod);
    *p++ = ':';
    p = put_digits(p, sod % 60, 2);
    if (offset == 0) {
        *p++ = 'Z';
    } else {
        *p++ = offset < 0 ? '-' : '+';
        p = put_hours_minutes(p, off); /* its seconds, if any, are not written */
    }
    *p = '\0';
    return PGW_OK;
}

/* `text` (a formatted time or unix seconds) into `out`: both fit
 * (PGW_RFC3339_MAX says so). They are formatted through room for any int
 * a field could hold: inlined with a cap of PGW_RFC3339_MAX, -O3 cannot
 * tell the fields are in range (-Werror=format-truncation). */
static void copy_moment(const char *text, char out[PGW_RFC3339_MAX])
{
    size_t n = strnlen(text, PGW_RFC3339_MAX - 1);
    memcpy(out, text, n);
    out[n] = '\0';
}

void pgw_format_moment(int64_t t, const pgw_tz *tz, char out[PGW_RFC3339_MAX])
{
    char text[96];
    if (tz == NULL || pgw_format_rfc3339(t, tz, text, sizeof(text)) != PGW_OK)
        snprintf(text, sizeof(text), "%lld", (long long)t);
    copy_moment(text, out);
}

static const pgw_tz UTC_ZONE = {"UTC", 0, NULL};

void pgw_format_utc(int64_t t, char out[PGW_RFC3339_MAX])
{
    pgw_format_moment(t, &UTC_ZONE, out);
}

int pgw_format_http_date(int64_t t, char out[PGW_HTTP_DATE_MAX])
{
    static const char days[7][4] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    out[0] = '\0';
    if (t < 0 || t > INT64_C(253402300799)) /* 9999-12-31T23:59:59Z */
        return PGW_ERANGE;
    pgw_date d = pgw_date_from_days(t / SECONDS_PER_DAY);
    int32_t sod = (int32_t)(t % SECONDS_PER_DAY);
    char *p = out;
    memcpy(p, days[pgw_weekday(d) - 1], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    p = put_digits(p, d.day, 2);
    *p++ = ' ';
    memcpy(p, months[d.month - 1], 3);
    p += 3;
    *p++ = ' ';
    p = put_digits(p, d.year, 4);
    *p++ = ' ';
    p = put_hours_minutes(p, sod);
    *p++ = ':';
    p = put_digits(p, sod % 60, 2);
    memcpy(p, " GMT", 5);
    PGW_ASSERT(p + 5 - out == PGW_HTTP_DATE_MAX);
    return PGW_OK;
}

int pgw_format_rfc3339_or_utc(int64_t t, const pgw_tz *tz, char out[PGW_RFC3339_MAX])
{
    char text[96];
    int rc = pgw_format_rfc3339(t, tz, text, sizeof(text));
    if (rc != PGW_OK)
        rc = pgw_format_rfc3339(t, &UTC_ZONE, text, sizeof(text));
    copy_moment(rc == PGW_OK ? text : "", out);
    return rc;
}
