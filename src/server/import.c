/*
 * import.c - see import.h.
 */
#include "import.h"

#include "core/arith.h"
#include "core/assertions.h"
#include "core/digest.h"
#include "core/transfer.h"
#include "server/event_command.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const COLUMNS[PGW_IMPORT_COLUMNS] = {
    [PGW_IMPORT_CARD] = "card", [PGW_IMPORT_PHONE] = "phone", [PGW_IMPORT_POINTS] = "points"};

int pgw_import_header(const pgw_csv_row *row, int col[PGW_IMPORT_COLUMNS], pgw_err *err)
{
    int rc = pgw_csv_columns(row, COLUMNS, PGW_IMPORT_COLUMNS, col, false, err);
    if (rc == PGW_OK &&
        (col[PGW_IMPORT_POINTS] < 0 || (col[PGW_IMPORT_CARD] < 0 && col[PGW_IMPORT_PHONE] < 0)))
        rc = pgw_err_set(err, PGW_EINVAL,
                         "line 1: the columns are card,phone,points "
                         "(points and at least one of card and phone)");
    return rc;
}

/* A field as an identity keeps it (a phone in E.164, "+86 138-0000-0001"
 * and "13800000001" alike), or as read when it is none. */
static const char *normalised(pgw_identity_kind kind, const char *shop, const char *text,
                              pgw_identity *id)
{
    const char *scope = kind == PGW_ID_CARD ? shop : NULL;
    return text[0] != '\0' && pgw_identity_make(kind, scope, text, id, NULL) == PGW_OK ? id->value
                                                                                       : text;
}

/* Adds a row's digest into `sum`, 256 bits modulo 2^256: the sum of the
 * rows' digests does not depend on their order. A malformed row counts as
 * one, whatever it held. */
static void add_row(uint8_t sum[PGW_HASH_LEN], const char *shop, const pgw_csv_row *row,
                    const int *col, bool malformed)
{
    char text[3 * (PGW_CSV_FIELD_MAX + 1) + 32] = "\x15";
    if (!malformed) {
        pgw_identity card, phone;
        const char *points = pgw_csv_cell(row, col, PGW_IMPORT_POINTS);
        char number[24];
        int64_t value = 0;
        /* "0100" is 100; anything else the row refuses is kept as read. */
        bool numeric = pgw_csv_digits(points, 0, INT64_MAX, &value, NULL) == PGW_OK;
        snprintf(number, sizeof(number), "%lld", (long long)value);
        snprintf(text, sizeof(text), "%s\x1f%s\x1f%s",
                 normalised(PGW_ID_CARD, shop, pgw_csv_cell(row, col, PGW_IMPORT_CARD), &card),
                 normalised(PGW_ID_PHONE, shop, pgw_csv_cell(row, col, PGW_IMPORT_PHONE), &phone),
                 numeric ? number : points);
    }
    uint8_t digest[PGW_HASH_LEN];
    pgw_sha256(text, strlen(text), digest);
    unsigned carry = 0;
    for (size_t i = PGW_HASH_LEN; i-- > 0;) {
        carry += (unsigned)sum[i] + digest[i];
        sum[i] = (uint8_t)carry;
        carry >>= 8;
    }
}

void pgw_import_default_batch(const char *shop, const char *text, size_t len, pgw_csv_row *row,
                              char out[PGW_IMPORT_BATCH_MAX + 1])
{
    pgw_csv csv;
    pgw_err err;
    bool done = false;
    int col[PGW_IMPORT_COLUMNS];
    uint8_t digest[PGW_HASH_LEN] = {0};
    pgw_csv_init(&csv, text, len);
    if (pgw_csv_next(&csv, row, &done, &err) != PGW_OK || done ||
        pgw_import_header(row, col, &err) != PGW_OK) {
        pgw_sha256(text, len, digest); /* refused whole anyway: any name will do */
    } else {
        for (;;) {
            int rc = pgw_csv_next(&csv, row, &done, &err);
            if (rc == PGW_OK && done)
                break;
            add_row(digest, shop, row, col, rc != PGW_OK);
        }
        pgw_sha256(digest, sizeof(digest), digest);
    }
    char hex[2 * PGW_HASH_LEN + 1];
    pgw_hash_hex(digest, hex, sizeof(hex));
    snprintf(out, PGW_IMPORT_BATCH_MAX + 1, "%.16s", hex);
}

int pgw_import_text_check(const char *text, size_t len, pgw_err *err)
{
    const char *nul = len > 0 ? memchr(text, '\0', len) : NULL;
    if (nul == NULL)
        return PGW_OK;
    size_t line = 1;
    for (const char *p = text; (p = memchr(p, '\n', (size_t)(nul - p))) != NULL; p++)
        line++;
    return pgw_err_set(err, PGW_EINVAL,
                       "line %zu holds a NUL byte: not a UTF-8 text file (UTF-16, as Excel's "
                       "\"Unicode Text\" saves, has one in every other byte); save it as CSV "
                       "UTF-8",
                       line);
}

bool pgw_import_batch_ok(const char *batch)
{
    size_t n = strlen(batch);
    for (const char *c = batch; *c != '\0'; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-'))
            return false;
    }
    return n >= 1 && n <= PGW_IMPORT_BATCH_MAX;
}

struct pgw_import_slot {
    char *key; /* NULL: free */
    size_t line;
};

void pgw_import_file_clear(pgw_import_file *file)
{
    for (size_t i = 0; i < file->cap; i++)
        free(file->slots[i].key);
    free(file->slots);
    file->slots = NULL;
    file->n = file->cap = 0;
}

/* FNV-1a: the keys are a card or a phone's blind index, already spread. */
static size_t key_hash(const char *key)
{
    uint64_t h = 14695981039346656037u;
    for (const unsigned char *c = (const unsigned char *)key; *c != '\0'; c++)
        h = (h ^ *c) * 1099511628211u;
    return (size_t)h;
}

/* The slot of `key` in `slots` (cap a power of two): its own, or the free
 * one it would take. */
static struct pgw_import_slot *slot_of(struct pgw_import_slot *slots, size_t cap, const char *key)
{
    size_t i = key_hash(key) & (cap - 1);
    while (slots[i].key != NULL && strcmp(slots[i].key, key) != 0)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

/* Room for one key more, at most half full. */
static int seen_room(pgw_import_file *file, pgw_err *err)
{
    if (2 * (file->n + 1) <= file->cap)
        return PGW_OK;
    size_t cap = file->cap ? 2 * file->cap : 256;
    struct pgw_import_slot *slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the file's cards");
    for (size_t i = 0; i < file->cap; i++) {
        if (file->slots[i].key != NULL)
            *slot_of(slots, cap, file->slots[i].key) = file->slots[i];
    }
    free(file->slots);
    file->slots = slots;
    file->cap = cap;
    return PGW_OK;
}

/* Adds the row's key (its card, else its phone) on `line`, or names the
 * earlier line of the file that has it. The message names lines only,
 * never the card or phone: it reaches logs and HTTP answers, and the
 * operator finds the rows by their lines. */
static int seen_add(pgw_import_file *file, const char *key, size_t line, bool by_card, pgw_err *err)
{
    PGW_ASSERT(file != NULL);
    int rc = seen_room(file, err);
    struct pgw_import_slot *slot = rc == PGW_OK ? slot_of(file->slots, file->cap, key) : NULL;
    if (rc != PGW_OK)
        return rc;
    if (slot->key != NULL && by_card)
        return pgw_err_set(err, PGW_EINVAL,
                           "this row's card is on line %zu already: a file lists each card once, "
                           "so this row is not imported",
                           slot->line);
    if (slot->key != NULL)
        return pgw_err_set(err, PGW_EINVAL,
                           "this row's phone (it has no card) is on line %zu already: a file "
                           "lists each card, or phone without a card, once, so this row is not "
                           "imported",
                           slot->line);
    if ((slot->key = strdup(key)) == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the file's cards");
    slot->line = line;
    file->n++;
    return PGW_OK;
}

/* Old points -> unified points at rate_bp, rounded down. Digits only: an
 * old balance is never negative (nothing to import) nor signed or spaced
 * (strtoll took " 5" and "+5" and refused "5 "). */
static int convert(const char *text, int64_t rate_bp, int64_t *points, pgw_err *err)
{
    int64_t old = 0;
    if (pgw_csv_digits(text, 1, PGW_POINTS_MAX, &old, err) != PGW_OK)
        return err != NULL ? pgw_err_prefix(err, "points ") : PGW_EINVAL;
    /* The rate and the bound, never the row's points: a phone number
     * under points (the columns slipped) would be quoted into logs. */
    if (pgw_mul_div_floor(old, rate_bp, 10000, points) != PGW_OK || *points > PGW_POINTS_MAX)
        return pgw_err_set(err, PGW_EINVAL, "points at %lld bp pass %lld points",
                           (long long)rate_bp, (long long)PGW_POINTS_MAX);
    if (*points < 1)
        return pgw_err_set(err, PGW_EINVAL, "points at %lld bp convert to nothing",
                           (long long)rate_bp);
    return PGW_OK;
}

int pgw_import_row(const pgw_vault *vault, pgw_import_file *file, const pgw_csv_row *row,
                   const int col[PGW_IMPORT_COLUMNS], int64_t now, pgw_command *cmd, pgw_err *err)
{
    return pgw_import_fields(vault, file, pgw_csv_cell(row, col, PGW_IMPORT_CARD),
                             pgw_csv_cell(row, col, PGW_IMPORT_PHONE),
                             pgw_csv_cell(row, col, PGW_IMPORT_POINTS), row->line, now, cmd, err);
}

/* The answer kept with the row's key, so that the same row imported again
 * (by the command line or over HTTP) replays it. */
static void render_import(pgw_command *cmd, void *payload)
{
    (void)payload;
    pgw_command_keep_answer(cmd, json_pack("{s:s,s:I,s:i,s:I}", "member_id", cmd->member, "points",
                                           (json_int_t)cmd->points, "match", (int)cmd->import_match,
                                           "balance", (json_int_t)cmd->figures.balance));
}

/* One of the row's identities, as the store keys it. */
static int identity_key(const pgw_vault *vault, pgw_identity_kind kind, const char *scope,
                        const char *text, pgw_identity_key *out, pgw_err *err)
{
    pgw_identity id;
    int rc = pgw_identity_make(kind, scope, text, &id, err);
    return rc == PGW_OK ? pgw_vault_key(vault, &id, out, err) : rc;
}

int pgw_import_fields(const pgw_vault *vault, pgw_import_file *file, const char *card,
                      const char *phone, const char *points, size_t line, int64_t now,
                      pgw_command *cmd, pgw_err *err)
{
    const char *shop = file->shop, *batch = file->batch;
    memset(cmd, 0, sizeof(*cmd));
    cmd->kind = PGW_COMMAND_IMPORT;
    cmd->at = now;
    cmd->render = render_import;
    if (card[0] == '\0' && phone[0] == '\0')
        return pgw_err_set(err, PGW_EINVAL, "a row needs a card or a phone");
    /* Keyed by what names the old account: the card, else the phone (its
     * blind index: the key is stored in clear). */
    bool by_card = card[0] != '\0';
    /* A card as a member is named elsewhere (card:S001:88001) was told only
     * the card's shape: say what to write. Its number is not quoted. */
    if (by_card && strchr(card, ':') != NULL)
        return pgw_err_set(err, PGW_EINVAL,
                           "the card column holds the card's number alone (1..32 letters, "
                           "digits or -), without a shop: the import's shop, %s, is given by "
                           "--shop or the URL's shop",
                           shop);
    cmd->by_identity = by_card;
    cmd->has_who2 = phone[0] != '\0';
    int rc = by_card ? identity_key(vault, PGW_ID_CARD, shop, card, &cmd->who, err)
                     : identity_key(vault, PGW_ID_PHONE, NULL, phone, &cmd->who2, err);
    if (rc != PGW_OK)
        return rc;
    snprintf(cmd->key, sizeof(cmd->key), "import:%s:%s:%s:%.64s", shop, batch,
             by_card ? "card" : "phone", by_card ? cmd->who.lookup : cmd->who2.lookup);
    /* Before the points and a card's phone: a second row of the card is
     * refused whatever the first held (a bad phone too, else the second
     * went in, in its place), a file's one balance of it being unclear. */
    rc = seen_add(file, cmd->key, line, by_card, err);
    if (rc == PGW_OK && by_card && cmd->has_who2)
        rc = identity_key(vault, PGW_ID_PHONE, NULL, phone, &cmd->who2, err);
    if (rc == PGW_OK)
        rc = convert(points, file->rate_bp, &cmd->points, err);
    if (rc != PGW_OK)
        return rc;
    char material[64];
    snprintf(material, sizeof(material), "%lld", (long long)cmd->points);
    pgw_sha256(material, strlen(material), cmd->fingerprint);
    snprintf(cmd->shop, sizeof(cmd->shop), "%s", shop);
    snprintf(cmd->channel, sizeof(cmd->channel), "import");
    snprintf(cmd->reference, sizeof(cmd->reference), "%s", batch);
    cmd->import_batch_named = file->batch_named;
    return PGW_OK;
}
