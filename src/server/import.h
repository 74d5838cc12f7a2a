/*
 * import.h - legacy shop balances: CSV rows `card,phone,points` of a shop's
 * old programme become IMPORT commands (command.h) at the shop's rate.
 *
 * Shared by `pointsgw import-balances` and POST /v1/shops/{id}/imports, so
 * both read the same file the same way. A row's key is
 * import:<shop>:<batch>:<card or phone>, so a file imported twice (same
 * batch id) credits once.
 */
#ifndef PGW_SERVER_IMPORT_H
#define PGW_SERVER_IMPORT_H

#include "server/command.h"
#include "util/csv.h"
#include "util/vault.h"

#define PGW_IMPORT_BATCH_MAX 64 /* bytes of a batch id */

enum { PGW_IMPORT_CARD, PGW_IMPORT_PHONE, PGW_IMPORT_POINTS, PGW_IMPORT_COLUMNS };

/*
 * One file's import: its shop, batch and rate, and the old accounts its
 * rows named so far, each with its line: a row's card, else its phone
 * (what keys it). A file that lists one twice is ambiguous: its second row
 * is refused naming the first (it was once counted as replayed, or refused
 * idempotency_conflict, as if imported before). The caller fills
 * the first four fields, the rest zeroed; pgw_import_file_clear frees it.
 */
typedef struct pgw_import_file {
    char shop[PGW_ID_MAX + 1];
    char batch[PGW_IMPORT_BATCH_MAX + 1];
    /* The operator named the batch; else it is the rows' hash
     * (pgw_import_default_batch), and a row whose card another batch
     * imported is refused: a mended file hashes to another batch. */
    bool batch_named;
    int64_t rate_bp;
    size_t n, cap;
    struct pgw_import_slot *slots;
} pgw_import_file;

void pgw_import_file_clear(pgw_import_file *file);

/* Maps the header row (card, phone, points; any order; points required,
 * and card or phone). */
int pgw_import_header(const pgw_csv_row *row, int col[PGW_IMPORT_COLUMNS], pgw_err *err);

/*
 * Fills `cmd` (zeroed here) for one row: identities through the vault,
 * points = floor(old points * rate_bp / 10000), checked, and the answer
 * kept with its key (cmd->render: the same row imported again, by either
 * path, replays it). PGW_EINVAL with the reason for a row that cannot be
 * imported; so for a row of line `line` whose card (or phone, without a
 * card) an earlier row of the file named, naming that line (never the
 * card or phone: the message reaches logs and answers). The row's
 * card (or phone) is added to `file` once it is a valid identity, the
 * row's points and a card's phone good or not. The command
 * refuses a card (or phone) another batch imported unless the batch was
 * named (command.h).
 */
int pgw_import_row(const pgw_vault *vault, pgw_import_file *file, const pgw_csv_row *row,
                   const int col[PGW_IMPORT_COLUMNS], int64_t now, pgw_command *cmd, pgw_err *err);

/* The same from the row's three fields ("" for an absent card or phone),
 * found on line `line` of the file. */
int pgw_import_fields(const pgw_vault *vault, pgw_import_file *file, const char *card,
                      const char *phone, const char *points, size_t line, int64_t now,
                      pgw_command *cmd, pgw_err *err);

/* The batch id of `shop`'s file given none: the start of a SHA-256 of its rows as
 * read (each row's card, phone and points as they are kept, in any
 * order), so the same rows imported twice are one import however the file
 * was saved (a BOM, CRLF, quotes, blank rows, the rows or columns in
 * another order, a phone spelt another way). `scratch` holds each row
 * in turn (the caller's, ~16 KB: not kept on the stack). */
void pgw_import_default_batch(const char *shop, const char *text, size_t len, pgw_csv_row *scratch,
                              char out[PGW_IMPORT_BATCH_MAX + 1]);

/*
 * Whether a file's `len` bytes may be read as its rows at all: PGW_EINVAL,
 * naming the line, for a NUL byte anywhere in them. The CSV reader keeps
 * each field as a C string, so a NUL cut the field short: "880<NUL>01"
 * imported card 880's balance. A UTF-16 file (Excel's "Unicode Text")
 * has one in every other byte. Nothing of such a file is imported.
 */
int pgw_import_text_check(const char *text, size_t len, pgw_err *err);

/* Whether a batch id is usable: 1..64 of [A-Za-z0-9._-]. */
bool pgw_import_batch_ok(const char *batch);

#endif
