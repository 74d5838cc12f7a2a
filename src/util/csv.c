/*
 * csv.c - see csv.h.
 */
#include "csv.h"

#include "core/assertions.h"
#include "core/utf8.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void pgw_csv_init(pgw_csv *c, const char *text, size_t len)
{
    memset(c, 0, sizeof(*c));
    c->text = text;
    c->len = len;
    c->line = 1;
    c->pos = pgw_utf8_bom(text, len); /* Excel's UTF-8 byte order mark */
}

/* Skips blank lines; false at the end of the text. */
static bool skip_blank_lines(pgw_csv *c)
{
    while (c->pos < c->len) {
        if (c->text[c->pos] == '\n') {
            c->pos++;
        } else if (c->text[c->pos] == '\r' && c->pos + 1 < c->len && c->text[c->pos + 1] == '\n') {
            c->pos += 2;
        } else {
            return true;
        }
        c->line++;
    }
    return false;
}

/*
 * Where the end of a malformed row is looked for, kept across calls so a
 * file can be skipped through chunk by chunk. A line break inside a quoted
 * field is not the row's end: taken for it, the rest of the field was read
 * as rows of its own (a note in a shop's batch, or a statement's overlong
 * row, could hold an event). A quote opens a field only at its start, as
 * when reading; elsewhere it is the row's own mistake.
 */
typedef enum row_skip {
    SKIP_FIELD_START,
    SKIP_UNQUOTED,
    SKIP_QUOTED,
    SKIP_QUOTE_IN_QUOTES
} row_skip;

/* Moves c->pos past the row's end (true), or to the text's end (false). */
static bool skip_to_row_end(pgw_csv *c, row_skip *s)
{
    while (c->pos < c->len) {
        char ch = c->text[c->pos++];
        c->line += ch == '\n';
        if (*s == SKIP_QUOTED) {
            *s = ch == '"' ? SKIP_QUOTE_IN_QUOTES : SKIP_QUOTED;
            continue;
        }
        if (*s == SKIP_QUOTE_IN_QUOTES && ch == '"') {
            *s = SKIP_QUOTED; /* "" is one quote */
            continue;
        }
        if (ch == '\n') {
            *s = SKIP_FIELD_START;
            return true;
        }
        if (ch == '"' && *s == SKIP_FIELD_START)
            *s = SKIP_QUOTED;
        else
            *s = ch == ',' ? SKIP_FIELD_START : SKIP_UNQUOTED;
    }
    return false;
}

/* After a malformed row: on past the rest of it, `quoted` when the error
 * came inside quotes. */
static void skip_row(pgw_csv *c, bool quoted)
{
    row_skip s = quoted                                     ? SKIP_QUOTED
                 : c->pos > 0 && c->text[c->pos - 1] == ',' ? SKIP_FIELD_START
                                                            : SKIP_UNQUOTED;
    skip_to_row_end(c, &s);
}

/* One row's state while it is read. */
typedef struct cursor {
    pgw_csv_row *row;
    size_t len;       /* bytes in the current field */
    bool quoted;      /* inside quotes */
    bool after_quote; /* the field's closing quote was seen */
} cursor;

/* A NUL byte would end the field where C strings end, "A1<NUL>x" read as
 * "A1": a statement's row would match an event it does not name. */
static int nul_byte(const cursor *k, pgw_err *err)
{
    return pgw_err_set(
        err, PGW_EINVAL,
        "field %zu has a NUL byte (a file saved as UTF-16, or binary: save it as CSV UTF-8)",
        k->row->n + 1);
}

static int append(cursor *k, char ch, pgw_err *err)
{
    if (ch == '\0')
        return nul_byte(k, err);
    if (k->len == PGW_CSV_FIELD_MAX)
        return pgw_err_set(err, PGW_EINVAL, "field %zu is longer than %d bytes", k->row->n + 1,
                           PGW_CSV_FIELD_MAX);
    k->row->fields[k->row->n][k->len++] = ch;
    return PGW_OK;
}

static int start_field(cursor *k, pgw_err *err)
{
    if (k->row->n == PGW_CSV_FIELDS_MAX) {
        k->row->too_wide = true;
        return pgw_err_set(err, PGW_EINVAL, "more than %d fields", PGW_CSV_FIELDS_MAX);
    }
    k->len = 0;
    k->quoted = k->after_quote = false;
    return PGW_OK;
}

static void end_field(cursor *k)
{
    k->row->fields[k->row->n][k->len] = '\0';
    k->row->n++;
}

static bool special(char ch)
{
    return ch == ',' || ch == '\n' || ch == '\r' || ch == '"';
}

/* Copies a run of ordinary characters at once: most fields are nothing else. */
static int plain_run(pgw_csv *c, cursor *k, pgw_err *err)
{
    size_t end = c->pos;
    while (end < c->len && !special(c->text[end]))
        end++;
    size_t n = end - c->pos;
    if (memchr(c->text + c->pos, '\0', n) != NULL)
        return nul_byte(k, err);
    if (k->len + n > PGW_CSV_FIELD_MAX)
        return pgw_err_set(err, PGW_EINVAL, "field %zu is longer than %d bytes", k->row->n + 1,
                           PGW_CSV_FIELD_MAX);
    memcpy(&k->row->fields[k->row->n][k->len], c->text + c->pos, n);
    k->len += n;
    c->pos = end;
    return PGW_OK;
}

/* Reads outside quotes; *row_done at the end of the line. */
static int unquoted(pgw_csv *c, cursor *k, bool *row_done, pgw_err *err)
{
    char ch = c->text[c->pos];
    if (ch == ',') {
        c->pos++;
        end_field(k);
        return start_field(k, err);
    }
    if (ch == '\n' || (ch == '\r' && c->pos + 1 < c->len && c->text[c->pos + 1] == '\n')) {
        c->pos += ch == '\n' ? 1 : 2;
        c->line++;
        *row_done = true;
        return PGW_OK;
    }
    if (ch == '"' && k->len == 0 && !k->after_quote) {
        c->pos++;
        k->quoted = true;
        return PGW_OK;
    }
    if (ch == '"' || k->after_quote)
        return pgw_err_set(err, PGW_EINVAL, "field %zu: %s", k->row->n + 1,
                           ch == '"' ? "a quote inside an unquoted field"
                                     : "text after the closing quote");
    if (!special(ch))
        return plain_run(c, k, err);
    c->pos++; /* a lone \r */
    return append(k, ch, err);
}

/* Reads one character inside quotes. */
static int inside_quotes(pgw_csv *c, cursor *k, pgw_err *err)
{
    char ch = c->text[c->pos];
    if (ch == '"' && c->pos + 1 < c->len && c->text[c->pos + 1] == '"') {
        c->pos += 2;
        return append(k, '"', err);
    }
    c->pos++;
    if (ch == '"') {
        k->quoted = false;
        k->after_quote = true;
        return PGW_OK;
    }
    c->line += ch == '\n';
    return append(k, ch, err);
}

static int read_row(pgw_csv *c, pgw_csv_row *row, bool *done, pgw_err *err)
{
    *done = !skip_blank_lines(c);
    row->n = 0;
    row->too_wide = false;
    row->line = c->line;
    if (*done)
        return PGW_OK;
    cursor k = {.row = row};
    bool row_done = false;
    int rc = start_field(&k, err);
    while (rc == PGW_OK && !row_done && c->pos < c->len)
        rc = k.quoted ? inside_quotes(c, &k, err) : unquoted(c, &k, &row_done, err);
    if (rc == PGW_OK && k.quoted)
        rc = pgw_err_set(err, PGW_EINVAL, "field %zu: a quote is never closed", row->n + 1);
    if (rc != PGW_OK) {
        if (!row_done)
            skip_row(c, k.quoted);
        return rc;
    }
    end_field(&k);
    /* Every reader hands fields on as text (JSON, reports, logs): one that
     * is not UTF-8 makes its row malformed here, once for all of them. */
    for (size_t f = 0; f < row->n; f++) {
        if (!pgw_utf8_valid(row->fields[f]))
            return pgw_err_set(err, PGW_EINVAL, "field %zu is not UTF-8 (save the file as UTF-8)",
                               f + 1);
    }
    return PGW_OK;
}

static bool all_empty(const pgw_csv_row *row)
{
    for (size_t f = 0; f < row->n; f++) {
        if (row->fields[f][0] != '\0')
            return false;
    }
    return true;
}

int pgw_csv_next(pgw_csv *c, pgw_csv_row *row, bool *done, pgw_err *err)
{
    int rc;
    do /* a row of empty fields (",,," where Excel's sheet had a blank row) is blank too */
        rc = read_row(c, row, done, err);
    while (rc == PGW_OK && !*done && all_empty(row));
    return rc;
}

/*
 * An unknown header name, told by its position and never quoted: a file
 * without its header row has its first row taken for one, and that row's
 * phone or card would reach the terminal, errors and logs. The names the
 * header may have follow (cut short rather than overflow: they are ours).
 */
static int unknown_column(const pgw_csv_row *header, size_t f, const char *const *names, size_t n,
                          pgw_err *err)
{
    char known[256] = "";
    size_t used = 0;
    for (size_t c = 0; c < n && used < sizeof(known); c++) {
        int more = snprintf(known + used, sizeof(known) - used, "%s%s", c ? ", " : "", names[c]);
        used += more > 0 ? (size_t)more : 0;
    }
    return pgw_err_set(err, PGW_EINVAL,
                       "line %zu: column %zu is unknown: a header names its columns, each one "
                       "of %s",
                       header->line, f + 1, known);
}

int pgw_csv_columns(const pgw_csv_row *header, const char *const *names, size_t n, int *col,
                    bool others_ok, pgw_err *err)
{
    for (size_t c = 0; c < n; c++)
        col[c] = -1;
    for (size_t f = 0; f < header->n; f++) {
        size_t c = 0;
        while (c < n && strcmp(header->fields[f], names[c]) != 0)
            c++;
        if (c == n && others_ok)
            continue;
        if (c == n)
            return unknown_column(header, f, names, n, err);
        if (col[c] >= 0) /* a name of ours: safe to say */
            return pgw_err_set(err, PGW_EINVAL, "line %zu: column \"%s\" is there twice",
                               header->line, names[c]);
        col[c] = (int)f;
    }
    return PGW_OK;
}

const char *pgw_csv_cell(const pgw_csv_row *row, const int *col, size_t c)
{
    return col[c] >= 0 && (size_t)col[c] < row->n ? row->fields[col[c]] : "";
}

bool pgw_decimal_in(const char *text, int64_t lo, int64_t hi, int64_t *out)
{
    PGW_ASSERT(lo >= 0 && lo <= hi);
    if (text[0] < '0' || text[0] > '9')
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (*end != '\0' || errno == ERANGE || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/*
 * What is wrong with a refused number field, without the field: in a file
 * whose columns are shifted it is a phone or a card number, and the
 * message reaches logs and HTTP answers (core/identity.c says a refused
 * value's shape only, for the same reason). Its first character that is
 * not a digit (counted in characters: continuation bytes of UTF-8 are
 * not), else its length or that it is out of range.
 */
static int digits_refused(const char *field, size_t len, int64_t lo, int64_t hi, pgw_err *err)
{
    size_t chars = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)field[i];
        chars += (c & 0xC0) != 0x80;
        if (c < '0' || c > '9')
            return pgw_err_set(err, PGW_EINVAL,
                               "is not %lld..%lld: character %zu is not a digit 0-9", (long long)lo,
                               (long long)hi, chars);
    }
    if (len == 0)
        return pgw_err_set(err, PGW_EINVAL, "is not %lld..%lld: empty", (long long)lo,
                           (long long)hi);
    if (len > PGW_CSV_DIGITS_MAX)
        return pgw_err_set(err, PGW_EINVAL, "is not %lld..%lld: over %d digits", (long long)lo,
                           (long long)hi, PGW_CSV_DIGITS_MAX);
    return pgw_err_set(err, PGW_EINVAL, "is not %lld..%lld: %zu digit%s, out of range",
                       (long long)lo, (long long)hi, len, len == 1 ? "" : "s");
}

int pgw_csv_digits(const char *field, int64_t lo, int64_t hi, int64_t *out, pgw_err *err)
{
    size_t len = strnlen(field, PGW_CSV_DIGITS_MAX + 1);
    if (len > PGW_CSV_DIGITS_MAX || !pgw_decimal_in(field, lo, hi, out))
        return digits_refused(field, len, lo, hi, err);
    return PGW_OK;
}

struct pgw_csv_file {
    FILE *f;
    char *buf;  /* PGW_CSV_CHUNK bytes; `csv` walks buf[0..len) */
    size_t len; /* bytes in buf */
    bool eof, first;
    bool discarding; /* dropping the rest of a row longer than a chunk */
    row_skip skip;   /* where that row's end is looked for */
    pgw_csv csv;
};

/* A file is read from its start again (a statement when unsorted): a pipe
 * cannot be, and a directory has no text. Either is what the command was
 * given, not the disk failing, and is refused saying what to do. */
static int readable_twice(pgw_csv_file *file, const char *path, pgw_err *err)
{
    struct stat st;
    if (fstat(fileno(file->f), &st) != 0)
        return pgw_err_set(err, PGW_EIO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return pgw_err_set(err, PGW_EINVAL, "%s is a directory: name the CSV file", path);
    if (fseek(file->f, 0, SEEK_SET) != 0 && errno == ESPIPE)
        return pgw_err_set(err, PGW_EINVAL,
                           "%s is not a file that can be read twice (a pipe?): save it to a "
                           "file and name that",
                           path);
    return PGW_OK;
}

int pgw_csv_file_open(const char *path, pgw_csv_file **out, pgw_err *err)
{
    *out = NULL;
    pgw_csv_file *file = calloc(1, sizeof(*file));
    char *buf = malloc(PGW_CSV_CHUNK);
    FILE *f = fopen(path, "rb");
    if (file == NULL || buf == NULL || f == NULL) {
        int e = errno;
        free(file);
        free(buf);
        if (f != NULL)
            fclose(f);
        return pgw_err_set(err, e == ENOENT ? PGW_ENOTFOUND : PGW_EIO, "%s: %s", path,
                           strerror(e ? e : ENOMEM));
    }
    file->f = f;
    file->buf = buf;
    int rc = readable_twice(file, path, err);
    if (rc == PGW_OK)
        rc = pgw_csv_file_rewind(file, err);
    if (rc != PGW_OK) {
        pgw_csv_file_close(file);
        return rc;
    }
    *out = file;
    return PGW_OK;
}

int pgw_csv_file_rewind(pgw_csv_file *file, pgw_err *err)
{
    if (fseek(file->f, 0, SEEK_SET) != 0)
        return pgw_err_set(err, PGW_EIO, "rewinding a CSV file: %s", strerror(errno));
    file->len = 0;
    file->eof = false;
    file->first = true;
    file->discarding = false;
    pgw_csv_init(&file->csv, file->buf, 0);
    return PGW_OK;
}

/* Keeps buf[csv.pos..len) (the row being read), then reads on to fill buf. */
static int refill(pgw_csv_file *file, pgw_err *err)
{
    size_t keep = file->len - file->csv.pos, line = file->csv.line;
    memmove(file->buf, file->buf + file->csv.pos, keep);
    file->len = keep;
    while (file->len < PGW_CSV_CHUNK && !file->eof) {
        size_t n = fread(file->buf + file->len, 1, PGW_CSV_CHUNK - file->len, file->f);
        file->len += n;
        if (n == 0) {
            if (ferror(file->f))
                return pgw_err_set(err, PGW_EIO, "reading a CSV file: %s", strerror(errno));
            file->eof = true;
        }
    }
    if (file->first) {
        pgw_csv_init(&file->csv, file->buf, file->len); /* skips a BOM */
        file->first = false;
    } else {
        file->csv = (pgw_csv){.text = file->buf, .len = file->len, .pos = 0, .line = line};
    }
    return PGW_OK;
}

/* Drops the rest of the row being discarded, across refills, following
 * its quotes as skip_row does; false until its end is found. */
static bool discard_to_row_end(pgw_csv_file *file)
{
    file->discarding = !skip_to_row_end(&file->csv, &file->skip);
    return !file->discarding;
}

/*
 * The parser reads whatever the buffer holds. A row it ended at the very
 * end of the buffer may go on in the file (a field, a quoted line break, a
 * CRLF cut in two): unless the file is at its end, the row is read again
 * from its own first byte with more of the file behind it. Blank lines
 * and blank rows before it are passed over first and never kept: read
 * again with them, a row after a megabyte of blank lines was taken for
 * one too long, and a row cut after its empty first fields lost them
 * (",," went as a blank row). A row that fills the whole buffer is longer
 * than any we take: reported once, then dropped to its end.
 */
int pgw_csv_file_next(pgw_csv_file *file, pgw_csv_row *row, bool *done, pgw_err *err)
{
    pgw_csv *c = &file->csv;
    for (;;) {
        if (file->discarding && !discard_to_row_end(file) && file->eof) {
            *done = true;
            return PGW_OK;
        }
        if (!file->discarding && skip_blank_lines(c)) {
            size_t start = c->pos, line = c->line;
            pgw_err why;
            int rc = read_row(c, row, done, &why);
            bool whole = c->pos < file->len || file->eof;
            if (whole && rc == PGW_OK && all_empty(row))
                continue; /* a blank row of a sheet, as pgw_csv_next */
            if (whole) {
                if (rc != PGW_OK)
                    *err = why;
                return rc;
            }
            c->pos = start; /* perhaps cut short: again, with more */
            c->line = line;
            if (start == 0 && file->len == PGW_CSV_CHUNK) {
                file->discarding = true; /* from the row's start */
                file->skip = SKIP_FIELD_START;
                row->n = 0;
                row->line = line;
                return pgw_err_set(err, PGW_EINVAL, "the row is longer than %d bytes",
                                   PGW_CSV_CHUNK);
            }
        } else if (!file->discarding && file->eof) {
            return read_row(c, row, done, err); /* at the end: done, as pgw_csv_next */
        }
        int rc = refill(file, err);
        if (rc != PGW_OK)
            return rc;
    }
}

void pgw_csv_file_close(pgw_csv_file *file)
{
    if (file == NULL)
        return;
    fclose(file->f);
    free(file->buf);
    free(file);
}
