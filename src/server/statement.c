/*
 * statement.c - see statement.h.
 */
#include "statement.h"

#include "server/rowsort.h"

#include "core/arith.h"
#include "core/assertions.h"
#include "core/civil.h"
#include "core/identity.h"
#include "core/rules.h"
#include "core/utf8.h"
#include "store/store.h"
#include "util/csv.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    COL_EVENT_ID,
    COL_OCCURRED_AT,
    COL_TYPE,
    COL_MEMBER,
    COL_AMOUNT,
    COL_POINTS,
    COL_ORIGINAL, /* optional, as is... */
    COL_SHOP,     /* ...the event's shop: a channel's statement keys rows by it */
    N_COLS
};
static const char *const COLUMNS[N_COLS] = {
    [COL_EVENT_ID] = "event_id",
    [COL_OCCURRED_AT] = "occurred_at",
    [COL_TYPE] = "type",
    [COL_MEMBER] = "member",
    [COL_AMOUNT] = "amount_fen",
    [COL_POINTS] = "points",
    [COL_ORIGINAL] = "original_event_id",
    [COL_SHOP] = "shop_id",
};

/* The columns a statement may leave out. */
static bool optional(size_t c)
{
    return c == COL_ORIGINAL || c == COL_SHOP;
}

struct pgw_statement {
    pgw_csv_file *file; /* a file, or... */
    const char *text;   /* ...a borrowed text */
    size_t len;
    pgw_csv csv;
    int col[N_COLS];
    size_t n_fields; /* the header's: a row with another number may have its columns shifted */
    size_t n_ignored;
    char ignored[PGW_CSV_FIELDS_MAX][PGW_STATEMENT_COLUMN_NAME_MAX + 1];
    pgw_csv_row row;
    pgw_rowsort *sorted; /* once sorted: rows come from here */
    size_t arena_bytes;  /* PGW_ROWSORT_ARENA; smaller in tests, to make many runs */
    pgw_tz tz;           /* local times' zone, when has_tz */
    bool has_tz;
};

static int read_csv(pgw_statement *st, bool *done, pgw_err *err)
{
    return st->file ? pgw_csv_file_next(st->file, &st->row, done, err)
                    : pgw_csv_next(&st->csv, &st->row, done, err);
}

/* Edits (letters added, dropped or changed) from a to b, ASCII case
 * ignored; past 2 (or for names past 32 bytes) it says 3. */
static int edits_apart(const char *a, const char *b)
{
    enum { LONG = 32, FAR = 3 };
    size_t n = strlen(a), m = strlen(b);
    if (n > LONG || m > LONG || (n > m ? n - m : m - n) >= FAR)
        return FAR;
    int row[LONG + 1];
    for (size_t j = 0; j <= m; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        int diagonal = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int change =
                diagonal + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            diagonal = row[j];
            int best = row[j] + 1 < row[j - 1] + 1 ? row[j] + 1 : row[j - 1] + 1;
            row[j] = change < best ? change : best;
        }
    }
    return row[m] < FAR ? row[m] : FAR;
}

/* `name` lower-cased without spaces, '_' and '-' ("Event ID" -> "eventid"). */
static void squeezed(const char *name, char out[64])
{
    size_t n = 0;
    for (; *name != '\0' && n < 63; name++)
        if (*name != ' ' && *name != '_' && *name != '-')
            out[n++] = (char)tolower((unsigned char)*name);
    out[n] = '\0';
}

/* Whether `name` is `ours` but for case and separators ("Event ID"), or
 * `edits` letters off ("occured_at"). */
static bool looks_like(const char *name, const char *ours, int edits)
{
    char a[64], b[64];
    squeezed(name, a);
    squeezed(ours, b);
    return strcmp(a, b) == 0 || edits_apart(name, ours) <= edits;
}

/* The header's field that looks like column c, which it lacks; NULL when none. */
static const char *misspelt(const pgw_statement *st, size_t c)
{
    for (size_t f = 0; f < st->row.n; f++)
        if (looks_like(st->row.fields[f], COLUMNS[c], strlen(COLUMNS[c]) >= 12 ? 2 : 1))
            return st->row.fields[f];
    return NULL;
}

/* Keeps the names of the header's columns that map to none of ours;
 * PGW_EINVAL for one that looks like ours. */
static int note_ignored(pgw_statement *st, pgw_err *err)
{
    st->n_ignored = 0;
    for (size_t f = 0; f < st->row.n; f++) {
        size_t c = 0;
        while (c < N_COLS && st->col[c] != (int)f)
            c++;
        if (c < N_COLS)
            continue;
        /* original_event_id misspelt would be missing unseen (a CSV report
         * names nothing), and --repair would fail every refund, where a
         * required one is said missing. A letter off only: a till's own
         * "original_event_at" is not it. Not so shop_id: a till's own
         * "Shop ID" (its shop's name) was read past before shop_id was
         * ours, and without it rows are keyed as they always were. */
        const char *ours = COLUMNS[COL_ORIGINAL];
        if (st->col[COL_ORIGINAL] < 0 && looks_like(st->row.fields[f], ours, 1))
            return pgw_err_set(err, PGW_EINVAL,
                               "line %zu: column \"%s\" looks like %s misspelt: name it %s, "
                               "or another name if it is not that",
                               st->row.line, st->row.fields[f], ours, ours);
        /* The reader let only UTF-8 through: cut on a character boundary. */
        char *name = st->ignored[st->n_ignored++];
        const char *text = st->row.fields[f];
        snprintf(name, PGW_STATEMENT_COLUMN_NAME_MAX + 1, "%.*s",
                 (int)pgw_utf8_prefix(text, PGW_STATEMENT_COLUMN_NAME_MAX), text);
        for (char *p = name; *p != '\0'; p++) /* shown on a terminal too */
            *p = (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
    }
    return PGW_OK;
}

bool pgw_statement_has_shop(const pgw_statement *st)
{
    return st->col[COL_SHOP] >= 0;
}

const char *pgw_statement_ignored(const pgw_statement *st, size_t i)
{
    return i < st->n_ignored ? st->ignored[i] : NULL;
}

/* Whether a header's field holds a CR that ends no CRLF: lines ending in a
 * bare CR (Excel for Mac's "CSV (Macintosh)") make the file one line,
 * whose last column would be said missing, its CR unseen. */
static bool bare_cr(const pgw_csv_row *row)
{
    for (size_t f = 0; f < row->n; f++) {
        for (const char *p = strchr(row->fields[f], '\r'); p != NULL; p = strchr(p + 1, '\r'))
            if (p[1] != '\n')
                return true;
    }
    return false;
}

/* The header could not be read: the reader's reason says neither that it
 * was the header nor, for one too wide (a till's export of many columns),
 * how many a statement may have. */
static int header_unread(const pgw_statement *st, int rc, pgw_err *err)
{
    char why[sizeof(err->msg)];
    snprintf(why, sizeof(why), "%s", err->msg);
    if (st->row.too_wide)
        return pgw_err_set(err, rc,
                           "line %zu, the header: %.200s (a statement has at most %d columns, "
                           "ours and the till's own: remove some)",
                           st->row.line, why, PGW_CSV_FIELDS_MAX);
    return pgw_err_set(err, rc, "line %zu, the header: %.200s", st->row.line, why);
}

/* The header: every column of ours named, each once; others read past. */
static int read_header(pgw_statement *st, pgw_err *err)
{
    bool done = false;
    int rc = read_csv(st, &done, err);
    if (rc == PGW_OK && done)
        return pgw_err_set(err, PGW_EINVAL, "the statement is empty: no header row");
    if (rc == PGW_EINVAL) /* the disk failing is not the header's fault */
        return header_unread(st, rc, err);
    if (rc != PGW_OK)
        return rc;
    if (bare_cr(&st->row))
        return pgw_err_set(err, PGW_EINVAL,
                           "line %zu: the header has a line break that is a bare CR (a "
                           "classic Mac CSV): save the statement with CRLF or LF line breaks "
                           "(\"CSV UTF-8\")",
                           st->row.line);
    if (rc == PGW_OK)
        rc = pgw_csv_columns(&st->row, COLUMNS, N_COLS, st->col, true, err);
    st->n_fields = st->row.n;
    for (size_t c = 0; rc == PGW_OK && c < N_COLS; c++) {
        const char *near = st->col[c] < 0 && !optional(c) ? misspelt(st, c) : NULL;
        if (st->col[c] < 0 && !optional(c))
            rc = pgw_err_set(err, PGW_EINVAL, "line %zu: column %s is missing%s%.64s%s",
                             st->row.line, COLUMNS[c], near ? " (is \"" : "", near ? near : "",
                             near ? "\" it, misspelt?)" : "");
    }
    if (rc == PGW_OK)
        rc = note_ignored(st, err);
    return rc;
}

static int opened(pgw_statement *st, pgw_statement **out, pgw_err *err)
{
    st->arena_bytes = PGW_ROWSORT_ARENA;
    int rc = read_header(st, err);
    if (rc != PGW_OK) {
        pgw_statement_free(st);
        return rc;
    }
    *out = st;
    return PGW_OK;
}

int pgw_statement_open_file(const char *path, pgw_statement **out, pgw_err *err)
{
    *out = NULL;
    pgw_statement *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory reading %s", path);
    int rc = pgw_csv_file_open(path, &st->file, err);
    if (rc != PGW_OK) {
        free(st);
        return rc;
    }
    return opened(st, out, err);
}

int pgw_statement_open_text(const char *text, size_t len, pgw_statement **out, pgw_err *err)
{
    *out = NULL;
    pgw_statement *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory reading a statement");
    st->text = text;
    st->len = len;
    pgw_csv_init(&st->csv, text, len);
    return opened(st, out, err);
}

void pgw_statement_set_time_zone(pgw_statement *st, const pgw_tz *tz)
{
    PGW_ASSERT(tz != NULL);
    st->tz = *tz;
    st->has_tz = true;
}

/* A whole number in [lo, hi], digits alone (a "-" ahead when lo < 0):
 * strtoll's leniency, a space or a "+" ahead, is not taken, for a grouped
 * number is not taken so either (padded says why); "" is 0 when allowed
 * (empty_ok). */
static bool whole_number(const char *text, int64_t lo, int64_t hi, bool empty_ok, int64_t *out)
{
    if (text[0] == '\0') {
        *out = 0;
        return empty_ok;
    }
    const char *digits = text + (text[0] == '-' && lo < 0);
    if (digits[0] == '\0' || digits[strspn(digits, "0123456789")] != '\0')
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* What is around a field's value when a space is (a hand's edit: "1234 ",
 * a space after the comma) or a "+" ahead (no spreadsheet writes one):
 * NULL when neither. Such a value is refused whatever it is, plain or
 * grouped, saying so, rather than read one way and not the other. */
static const char *padded(const char *text)
{
    size_t len = strlen(text);
    if (len > 0 && (strchr(" \t", text[0]) != NULL || strchr(" \t", text[len - 1]) != NULL))
        return "has a space around it";
    return text[0] == '+' ? "has a \"+\"" : NULL;
}

/* Marks the row malformed with why; the text is cut on a character
 * boundary (reports are JSON: a split character would make them invalid). */
__attribute__((format(printf, 2, 3))) static bool malformed(pgw_recon_row *r, const char *fmt, ...)
{
    r->malformed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->problem, sizeof(r->problem), fmt, ap);
    va_end(ap);
    r->problem[pgw_utf8_prefix(r->problem, sizeof(r->problem) - 1)] = '\0';
    return false;
}

/* At most 40 bytes of a value quoted in a problem, whole characters. */
#define QUOTED(text) (int)pgw_utf8_prefix(text, 40), text

/* Copies a non-empty field that fits (the hot path: no printf). */
static bool copy_field(const char *text, char *out, size_t cap)
{
    size_t len = strnlen(text, cap);
    if (len == 0 || len == cap)
        return false;
    memcpy(out, text, len + 1);
    return true;
}

/* A member id as a row names it, spaces around it dropped, kept in
 * r->member as "member_id:<id>" (how the matcher finds it), checked as
 * POST /v1/events checks one. */
static bool member_id_readable(const char *value, pgw_recon_row *r)
{
    while (*value == ' ')
        value++;
    size_t len = strlen(value);
    while (len > 0 && value[len - 1] == ' ')
        len--;
    char text[PGW_RECON_MEMBER_MAX + 1];
    pgw_identity who;
    pgw_err why;
    if (snprintf(text, sizeof(text), "member_id:%.*s", (int)len, value) >= (int)sizeof(text) ||
        pgw_identity_parse(text, &who, &why) != PGW_OK)
        return malformed(r, "member \"%.*s\" is not a member id", QUOTED(text));
    memcpy(r->member, text, strlen(text) + 1);
    return true;
}

/*
 * Whether the row's member can be read. Only a member id is compared (the
 * log keeps each event's member by id), so only one is checked whole, its
 * kind written in any case ("Member_ID:", then kept as "member_id:"); a
 * phone or card is read as written (a till may export phones masked,
 * 138****8000; --repair checks them). A kind a letter off one of ours
 * ("member_i:") is refused: read as it was, it was not compared, and its
 * row matched whoever it named. Anything else (a bare id, "tel:...", a
 * card's "S001:1234") is read as before, and not compared.
 */
static bool member_readable(const char *member, pgw_recon_row *r)
{
    static const char *const ours[] = {"phone", "card", "member_id"};
    const char *colon = strchr(member, ':');
    char kind[64];
    size_t n = colon ? (size_t)(colon - member) : 0;
    if (colon == NULL || n >= sizeof(kind))
        return true;
    memcpy(kind, member, n);
    kind[n] = '\0';
    char name[64], want[64];
    squeezed(kind, name);
    for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++) {
        squeezed(ours[i], want);
        if (strcmp(name, want) == 0)
            return i < 2 || member_id_readable(colon + 1, r);
        if (edits_apart(name, want) <= 1)
            return malformed(r, "member \"%.*s\": \"%s\" looks like %s misspelt", QUOTED(member),
                             kind, ours[i]);
    }
    return true;
}

/* The row's shop_id into r->source: a shop id as the log's keys have it
 * ("-" for an event without one). Empty is refused: the row would match
 * no shop's event, and a statement keyed by shop has no shopless rows. */
static bool parse_shop(const char *shop, pgw_recon_row *r)
{
    if (shop[0] == '\0')
        return malformed(r, "shop_id is empty (\"-\" for an event without a shop)");
    if (!pgw_store_shop_id_ok(shop) || !copy_field(shop, r->source, sizeof(r->source)))
        return malformed(r, "shop_id \"%.*s\" is not a shop id", QUOTED(shop));
    return true;
}

/* A time the reader cannot take: PGW_EINVAL when it is no time's shape;
 * PGW_ERANGE, `why` saying it, for one that names no date or time of day,
 * or a local time the zone cannot place, and for an instant the zone
 * cannot write (outside its years 1970..9999: 253402300799 is 10000-01-01
 * in Shanghai), for the report writes the row's time in it. */
static int parse_time(const pgw_tz *tz, const char *at, int64_t *out, pgw_err *why)
{
    int rc = whole_number(at, 0, INT64_C(253402300799), false, out)
                 ? PGW_OK
                 : pgw_parse_local_time(at, tz, out, why);
    char text[PGW_RFC3339_MAX];
    if (rc == PGW_OK && tz != NULL && pgw_format_rfc3339(*out, tz, text, sizeof(text)) != PGW_OK)
        return pgw_err_set(why, PGW_ERANGE,
                           "\"%.*s\" is outside the years %d..%d in the mall's zone (%s)",
                           QUOTED(at), PGW_YEAR_MIN, PGW_YEAR_MAX, tz->name);
    return rc;
}

int pgw_statement_time(const char *at, const pgw_tz *tz, int64_t *out, pgw_err *err)
{
    pgw_err why;
    const char *around = padded(at);
    if (around != NULL)
        return pgw_err_set(err, PGW_EINVAL, "occurred_at \"%.*s\" %s: write the time alone",
                           QUOTED(at), around);
    int rc = parse_time(tz, at, out, &why);
    if (rc == PGW_ERANGE) /* no such date, or a local time unplaced: why says it, quoting it */
        return pgw_err_set(err, rc, "occurred_at %s", why.msg);
    if (rc != PGW_OK)
        return pgw_err_set(err, PGW_EINVAL,
                           "occurred_at \"%.*s\" is neither unix seconds nor a time as RFC 3339 "
                           "or a spreadsheet writes it (2026/11/20 14:03:05)",
                           QUOTED(at));
    return PGW_OK;
}

/* "1,234,567": a first group of 1..3 digits (not 0: "0,123" may be a
 * decimal comma's), then groups of exactly three after commas; its value,
 * overflow-checked: INT64_MAX past it, for the shape is right and the
 * caller's range check is what refuses it. */
static bool grouped_thousands(const char *text, int64_t *out)
{
    static const char digits[] = "0123456789";
    size_t lead = strspn(text, digits);
    if (lead < 1 || lead > 3 || text[0] == '0' || text[lead] != ',')
        return false;
    int64_t v = 0;
    bool over = false;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == ',' && strspn(p + 1, digits) == 3)
            continue;
        if (*p < '0' || *p > '9')
            return false;
        if (!over && (pgw_mul(v, 10, &v) != PGW_OK || pgw_add(v, *p - '0', &v) != PGW_OK))
            over = true;
    }
    *out = over ? INT64_MAX : v;
    return true;
}

/* Whether `text` is digits grouped by a separator other than a comma: a
 * space, a no-break or thin space (a French or Swiss locale's), an
 * apostrophe. Only for the problem to say so. */
static bool grouped_otherwise(const char *text)
{
    static const char *const separators[] = {
        " ", "'", "\xC2\xA0", "\xE2\x80\xAF", "\xE2\x80\x89", "\xE2\x80\x99"};
    bool grouped = false;
    const char *p = text;
    while (*p >= '0' && *p <= '9') {
        p++;
        size_t sep = 0;
        for (size_t i = 0; sep == 0 && i < sizeof(separators) / sizeof(separators[0]); i++)
            if (strncmp(p, separators[i], strlen(separators[i])) == 0)
                sep = strlen(separators[i]);
        if (sep > 0 && p[sep] >= '0' && p[sep] <= '9') {
            grouped = true;
            p += sep;
        }
    }
    return grouped && *p == '\0';
}

/*
 * A row's amount_fen: whole fen (1 yuan = 100 fen), as before, or with
 * commas grouping it in threes as a spreadsheet writes it ("1,234,567",
 * a quoted cell). Nothing else is guessed at: a decimal point (yuan
 * written in the fen column? a fen has no part), a group not of three
 * ("1,23": a decimal comma?), another separator each say why.
 */
static bool parse_amount(const char *text, pgw_recon_row *r)
{
    const char *around = padded(text);
    if (around != NULL)
        return malformed(r, "amount_fen \"%.*s\" %s: write the number alone", QUOTED(text), around);
    if (whole_number(text, 0, PGW_AMOUNT_FEN_MAX, true, &r->amount_fen))
        return true;
    int64_t v = 0;
    bool grouped = grouped_thousands(text, &v);
    if (grouped && v <= PGW_AMOUNT_FEN_MAX) {
        r->amount_fen = v;
        return true;
    }
    if (!grouped && strchr(text, '.') != NULL)
        return malformed(r,
                         "amount_fen \"%.*s\" has a decimal point: amount_fen is whole fen "
                         "(1 yuan = 100 fen), not yuan",
                         QUOTED(text));
    if (!grouped && strchr(text, ',') != NULL && strspn(text, "0123456789,") == strlen(text))
        return malformed(r,
                         "amount_fen \"%.*s\" is not grouped in threes: write 1,234,567 or "
                         "1234567",
                         QUOTED(text));
    if (grouped_otherwise(text))
        return malformed(r, "amount_fen \"%.*s\": only commas group thousands (1,234), or none",
                         QUOTED(text));
    return malformed(r, "amount_fen \"%.*s\" is not a whole number of fen in range", QUOTED(text));
}

/* A row's points: a whole number, signed, plainly or grouped in threes
 * by commas as amount_fen may be (a till that groups one groups both). */
static bool parse_points(const char *text, pgw_recon_row *r)
{
    const char *around = padded(text);
    if (around != NULL)
        return malformed(r, "points \"%.*s\" %s: write the number alone", QUOTED(text), around);
    if (whole_number(text, -PGW_POINTS_MAX, PGW_POINTS_MAX, false, &r->points))
        return true;
    bool negative = text[0] == '-';
    int64_t v = 0;
    if (grouped_thousands(text + negative, &v) && v <= PGW_POINTS_MAX) {
        r->points = negative ? -v : v;
        return true;
    }
    return malformed(r, "points \"%.*s\" is not a whole number in range", QUOTED(text));
}

/* Whether the row has the header's fields, no more, no fewer. A comma
 * left unquoted ("1,234" written bare is two fields) shifts the columns
 * after it (1 fen, 234 points); only the count shows it, and not even
 * that when the row also leaves out an empty last field or ends in a
 * comma the header lacks (the review of 2775730), so neither is read.
 * Each message fits pgw_recon_row.problem (159 bytes) with two-digit
 * counts (PGW_CSV_FIELDS_MAX): cut, the advice at its end was lost. */
static bool fields_line_up(const pgw_statement *st, pgw_recon_row *r)
{
    if (st->row.n == st->n_fields)
        return true;
    const pgw_csv_row *row = &st->row;
    if (row->n == st->n_fields + 1 && row->fields[row->n - 1][0] == '\0')
        return malformed(r,
                         "%zu fields where the header has %zu: the row ends in a comma the "
                         "header lacks (if every row does, end the header with one too; quote a "
                         "thousands comma, \"1,234\")",
                         row->n, st->n_fields);
    return malformed(r,
                     "%zu fields where the header has %zu: each row has the header's (quote a "
                     "thousands comma, \"1,234\", or it shifts the columns; an empty field is "
                     "not left out)",
                     st->row.n, st->n_fields);
}

/* Whether the row names the header's columns again, a BOM ahead or not:
 * two exports joined into one file (cat), whose reasons otherwise said
 * its occurred_at "occurred_at" is no time. */
static bool header_again(const pgw_statement *st)
{
    for (size_t c = 0; c < N_COLS; c++) {
        const char *cell = pgw_csv_cell(&st->row, st->col, c);
        cell += pgw_utf8_bom(cell, strlen(cell));
        if (st->col[c] >= 0 && strcmp(cell, COLUMNS[c]) != 0)
            return false;
    }
    return true;
}

/* One CSV row's fields checked into *r. False (and r->problem) when it is not a row. */
static bool parse_row(const pgw_statement *st, pgw_recon_row *r)
{
    const pgw_csv_row *row = &st->row;
    if (header_again(st))
        return malformed(r, "the header again (statements joined into one file?): not an event");
    const char *id = pgw_csv_cell(row, st->col, COL_EVENT_ID);
    const char *at = pgw_csv_cell(row, st->col, COL_OCCURRED_AT);
    const char *type = pgw_csv_cell(row, st->col, COL_TYPE);
    const char *member = pgw_csv_cell(row, st->col, COL_MEMBER);
    if (!copy_field(id, r->event_id, sizeof(r->event_id)))
        return malformed(r, "event_id must be 1..%d bytes", PGW_EVENT_ID_MAX);
    pgw_event_type t;
    pgw_err why;
    if (pgw_statement_time(at, st->has_tz ? &st->tz : NULL, &r->occurred_at, &why) != PGW_OK)
        return malformed(r, "%s", why.msg);
    if (pgw_event_type_parse(type, &t) != PGW_OK)
        return malformed(r, "type \"%.*s\" is not an event type", QUOTED(type));
    copy_field(pgw_event_type_name(t), r->type, sizeof(r->type));
    /* A mini program's statement cannot name its members by openid: the
     * member may be left empty. */
    if (member[0] != '\0' && !copy_field(member, r->member, sizeof(r->member)))
        return malformed(r, "member must be at most %d bytes", PGW_RECON_MEMBER_MAX);
    if (member[0] != '\0' && !member_readable(member, r))
        return false;
    if (!parse_amount(pgw_csv_cell(row, st->col, COL_AMOUNT), r))
        return false;
    if (!parse_points(pgw_csv_cell(row, st->col, COL_POINTS), r))
        return false;
    /* What a refund refunds, as POST /v1/events takes it: only --repair
     * reads it, and only a refund's (as the events API ignores another's). */
    const char *original = pgw_csv_cell(row, st->col, COL_ORIGINAL);
    if (original[0] != '\0' && !copy_field(original, r->original, sizeof(r->original)))
        return malformed(r, "original_event_id must be at most %d bytes", PGW_EVENT_ID_MAX);
    /* On any other row one is what a shifted row puts there: "1,234"
     * unquoted before it moves the points into it. */
    if (original[0] != '\0' && t != PGW_EVENT_REFUND)
        return malformed(r,
                         "original_event_id \"%.*s\" on a %s: only a refund names one (a "
                         "comma left unquoted in amount_fen shifts the columns)",
                         QUOTED(original), r->type);
    if (st->col[COL_SHOP] >= 0 && !parse_shop(pgw_csv_cell(row, st->col, COL_SHOP), r))
        return false;
    return fields_line_up(st, r);
}

/* A time as the hand meant it, what padded names (a space or tab around
 * it, a "+" ahead) left out, into buf; false when it does not fit. Only
 * for a malformed row's key (read_key): the row's problem says the
 * padding, and its date is clear all the same, as a padded amount's row's
 * is (the review of 7b8ed44: such a row lost its key, and its event was
 * called missing from the statement besides). */
static bool unpadded(const char *text, char *buf, size_t cap)
{
    text += strspn(text, " \t");
    text += text[0] == '+';
    size_t len = strlen(text);
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t'))
        len--;
    if (len >= cap)
        return false;
    memcpy(buf, text, len);
    buf[len] = '\0';
    return true;
}

/*
 * A row that could not be read: whether its key could all the same (its
 * event_id, read first, and its shop_id when the statement has that
 * column, read here when the row stopped before it), for it then takes its
 * event when no readable row does. Only with its date, which says whether
 * the row is in the period read (pgw_reconcile). Not when its fields do not line up with
 * the header's: a field too many or too few may have shifted the columns,
 * its "event_id" another column's value. Its problem stays the one found.
 */
static void read_key(const pgw_statement *st, pgw_recon_row *r)
{
    char at[72]; /* a longer time is none (pgw_parse_local_time) */
    if (r->event_id[0] == '\0' || st->row.n != st->n_fields ||
        !unpadded(pgw_csv_cell(&st->row, st->col, COL_OCCURRED_AT), at, sizeof(at)) ||
        pgw_statement_time(at, st->has_tz ? &st->tz : NULL, &r->occurred_at, NULL) != PGW_OK)
        return;
    if (st->col[COL_SHOP] >= 0 && r->source[0] == '\0') {
        const char *shop = pgw_csv_cell(&st->row, st->col, COL_SHOP);
        if (!pgw_store_shop_id_ok(shop) || !copy_field(shop, r->source, sizeof(r->source)))
            return;
    }
    r->key_read = true;
}

static int next_from_csv(pgw_statement *st, pgw_recon_row *r, bool *end, pgw_err *err)
{
    pgw_err row_err;
    int rc = read_csv(st, end, &row_err);
    memset(r, 0, sizeof(*r));
    r->line = st->row.line;
    r->written_off = PGW_RECON_UNKNOWN; /* a statement does not say it */
    if (rc == PGW_EINVAL) {             /* a malformed CSV line: a row of its own kind */
        r->malformed = true;
        snprintf(r->problem, sizeof(r->problem), "%.*s",
                 (int)pgw_utf8_prefix(row_err.msg, sizeof(r->problem) - 1), row_err.msg);
        return PGW_OK;
    }
    if (rc != PGW_OK) {
        *err = row_err;
        return rc;
    }
    if (!*end && !parse_row(st, r))
        read_key(st, r);
    return PGW_OK;
}

int pgw_statement_next(void *p, pgw_recon_row *row, bool *end, pgw_err *err)
{
    pgw_statement *st = p;
    return st->sorted ? pgw_rowsort_next(st->sorted, row, end, err)
                      : next_from_csv(st, row, end, err);
}

int pgw_statement_rewind(pgw_statement *st, pgw_err *err)
{
    if (st->sorted) { /* sorted again from the file: the runs were read */
        pgw_rowsort_free(st->sorted);
        st->sorted = NULL;
    }
    if (st->file == NULL) {
        pgw_csv_init(&st->csv, st->text, st->len);
    } else {
        int rc = pgw_csv_file_rewind(st->file, err);
        if (rc != PGW_OK)
            return rc;
    }
    return read_header(st, err);
}

int pgw_statement_sort(pgw_statement *st, pgw_err *err)
{
    int rc = pgw_statement_rewind(st, err); /* drops an earlier sort */
    pgw_rowsort *sorted = NULL;
    if (rc == PGW_OK)
        rc = pgw_rowsort_new(st->arena_bytes, &sorted, err);
    pgw_recon_row r;
    bool end = false;
    while (rc == PGW_OK && (rc = next_from_csv(st, &r, &end, err)) == PGW_OK && !end)
        rc = pgw_rowsort_add(sorted, &r, err);
    if (rc == PGW_OK)
        rc = pgw_rowsort_finish(sorted, err);
    if (rc != PGW_OK) {
        pgw_rowsort_free(sorted);
        return rc;
    }
    st->sorted = sorted;
    return PGW_OK;
}

void pgw_statement_free(pgw_statement *st)
{
    if (st == NULL)
        return;
    pgw_rowsort_free(st->sorted);
    pgw_csv_file_close(st->file);
    free(st);
}

void pgw_statement__set_sort_arena_for_test(pgw_statement *st, size_t bytes)
{
    PGW_ASSERT(bytes >= PGW_ROWSORT_ARENA_MIN && bytes <= PGW_ROWSORT_ARENA);
    st->arena_bytes = bytes;
}
