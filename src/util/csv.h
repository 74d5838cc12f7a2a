/*
 * csv.h - reading CSV as tills and spreadsheets write it (RFC 4180 and
 * what Excel adds): a UTF-8 byte order mark at the start, CRLF or LF line
 * ends, fields in double quotes that may hold commas, quotes ("" for one)
 * and line breaks, and blank lines (skipped, wherever they are), rows of
 * empty fields only (",,,": a blank row of a sheet) among them.
 *
 * The reader walks a buffer it does not own, row by row, copying each
 * field into caller-sized storage: memory stays bounded whatever the
 * input. A row that breaks the rules (a quote inside an unquoted field,
 * an unterminated quote, too many fields, a field too long or not UTF-8) is reported
 * with its line number, and reading goes on at the next line.
 */
#ifndef PGW_UTIL_CSV_H
#define PGW_UTIL_CSV_H

#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_CSV_FIELDS_MAX 32
#define PGW_CSV_FIELD_MAX  512 /* bytes of one field, after unquoting */

typedef struct pgw_csv {
    const char *text;
    size_t len, pos;
    size_t line; /* line number where the next row starts (1-based) */
} pgw_csv;

typedef struct pgw_csv_row {
    size_t line;   /* where the row started */
    size_t n;      /* fields */
    bool too_wide; /* pgw_csv_next refused it for more than PGW_CSV_FIELDS_MAX fields */
    char fields[PGW_CSV_FIELDS_MAX][PGW_CSV_FIELD_MAX + 1];
} pgw_csv_row;

/* Starts reading `len` bytes of `text` (skipping a UTF-8 BOM). */
void pgw_csv_init(pgw_csv *csv, const char *text, size_t len);

/*
 * Reads the next non-blank row into *row. Returns PGW_OK with *done false
 * for a row, PGW_OK with *done true at the end, or PGW_EINVAL for a
 * malformed row (row->line says where; err says what); after an error the
 * next call reads on from the line after it.
 */
int pgw_csv_next(pgw_csv *csv, pgw_csv_row *row, bool *done, pgw_err *err);

/*
 * Maps a header row onto n known column names: col[i] is the field index
 * of names[i], or -1 when the header does not have it. PGW_EINVAL for a
 * known name that comes twice, and for a name that is not known unless
 * `others_ok` (then that field maps to nothing): told by its position
 * (`column 2 is unknown`) with the known names, never quoted, as a file
 * without its header row has a phone or a card there. Which columns are
 * required is the caller's to say.
 */
int pgw_csv_columns(const pgw_csv_row *header, const char *const *names, size_t n, int *col,
                    bool others_ok, pgw_err *err);

/* Field `c` of `row` under that mapping ("" when absent). */
const char *pgw_csv_cell(const pgw_csv_row *row, const int *col, size_t c);

#define PGW_CSV_DIGITS_MAX 18 /* digits of a number field: every such value fits int64 */

/*
 * A field that is a whole number in decimal digits only, lo..hi
 * (0 <= lo <= hi), into *out: no sign, space, point or exponent, 1 to
 * PGW_CSV_DIGITS_MAX digits (leading zeros count: "0100" is 100). strtoll
 * alone takes " 5" and "+5" and refuses "5 ". PGW_EINVAL otherwise, err
 * saying `is not lo..hi: ` and what is wrong (`character 1 is not a digit
 * 0-9`, `empty`, `over 18 digits`, `11 digits, out of range`), never the
 * field: in a file whose columns are shifted it is a phone or a card
 * number (the caller prefixes the column's name and the line); *out is
 * then untouched.
 */
int pgw_csv_digits(const char *field, int64_t lo, int64_t hi, int64_t *out, pgw_err *err);

/*
 * The same check without the length bound or the message: decimal digits
 * only, lo..hi (0 <= lo <= hi), any int64 (19 digits: the API's cursors
 * and ids); false for anything else, *out then untouched. strtoll alone
 * takes a sign or leading spaces (+5, %205) and saturates past int64.
 */
bool pgw_decimal_in(const char *text, int64_t lo, int64_t hi, int64_t *out);

/*
 * A CSV file read in chunks of PGW_CSV_CHUNK bytes, so memory stays
 * bounded whatever the file's size. Each chunk ends at a line end outside
 * quotes, and rows keep their line numbers across chunks. A row longer
 * than a chunk is reported as malformed (PGW_EINVAL) and skipped.
 */
#ifndef PGW_CSV_CHUNK /* tests/fuzz/fuzz_csv.c reads with a small one */
#define PGW_CSV_CHUNK (1 << 20)
#endif

typedef struct pgw_csv_file pgw_csv_file;

/* Opens `path` (PGW_ENOTFOUND / PGW_EIO with the reason). */
int pgw_csv_file_open(const char *path, pgw_csv_file **out, pgw_err *err);
/* As pgw_csv_next; PGW_EIO when reading the file fails. */
int pgw_csv_file_next(pgw_csv_file *file, pgw_csv_row *row, bool *done, pgw_err *err);
/* Back to the first row. */
int pgw_csv_file_rewind(pgw_csv_file *file, pgw_err *err);
void pgw_csv_file_close(pgw_csv_file *file);

#endif
