/*
 * event_command.c - see event_command.h.
 */
#include "event_command.h"

#include "core/digest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pgw_json_fingerprint(const json_t *obj, uint8_t out[PGW_HASH_LEN])
{
    char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL)
        return PGW_ENOMEM;
    pgw_sha256(text, strlen(text), out);
    free(text);
    return PGW_OK;
}

int pgw_command_name_member(const pgw_vault *vault, const pgw_identity *who, pgw_command *cmd,
                            pgw_err *err)
{
    if (who->kind == PGW_ID_MEMBER) {
        snprintf(cmd->member, sizeof(cmd->member), "%.*s", PGW_ID_MAX, who->value);
        return PGW_OK;
    }
    cmd->by_identity = true;
    return pgw_vault_key(vault, who, &cmd->who, err);
}

/* The referrer of a referral: a member id as it is, an identity through the vault. */
static int name_referrer(const pgw_vault *vault, const pgw_identity *who, pgw_command *cmd,
                         pgw_err *err)
{
    cmd->has_referrer = true;
    if (who->kind == PGW_ID_MEMBER) {
        snprintf(cmd->referrer, sizeof(cmd->referrer), "%.*s", PGW_ID_MAX, who->value);
        return PGW_OK;
    }
    cmd->referrer_by_identity = true;
    return pgw_vault_key(vault, who, &cmd->referrer_key, err);
}

int pgw_event_command(const pgw_vault *vault, const json_t *obj, const pgw_event_doc *doc,
                      pgw_earning *earning, pgw_command *cmd, pgw_err *err)
{
    int rc = pgw_command_name_member(vault, &doc->member, cmd, err);
    if (rc == PGW_OK && doc->has_referrer)
        rc = name_referrer(vault, &doc->referrer, cmd, err);
    if (rc == PGW_OK && pgw_json_fingerprint(obj, cmd->fingerprint) != PGW_OK)
        rc = pgw_err_set(err, PGW_ENOMEM, "out of memory fingerprinting an event");
    if (rc != PGW_OK)
        return rc;
    pgw_store_event_key(cmd->key, doc->channel, doc->shop_id, doc->event_id);
    if (doc->event.type == PGW_EVENT_REFUND)
        pgw_store_event_key(cmd->original, doc->channel, doc->shop_id, doc->original_event_id);
    snprintf(cmd->shop, sizeof(cmd->shop), "%s", doc->shop_id);
    snprintf(cmd->channel, sizeof(cmd->channel), "%s", doc->channel);
    snprintf(cmd->reference, sizeof(cmd->reference), "%s",
             doc->receipt_no[0] ? doc->receipt_no : doc->event_id);
    snprintf(cmd->receipt, sizeof(cmd->receipt), "%s", doc->receipt_no);
    cmd->at = doc->event.occurred_at;
    cmd->event = &doc->event;
    cmd->earning = earning;
    return PGW_OK;
}

json_t *pgw_member_json_from_text(const char *text, pgw_err *err)
{
    static const char *const kinds[] = {"phone", "card", "member_id"};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t n = strlen(kinds[i]);
        if (strncmp(text, kinds[i], n) == 0 && text[n] == ':' && text[n + 1] != '\0')
            return json_pack("{s:s}", kinds[i], text + n + 1);
    }
    pgw_err_set(err, PGW_EINVAL, "member \"%.64s\" is not phone:..., card:... or member_id:...",
                text);
    return NULL;
}

/* "transfers": the command's committed transfers, as API.md shows them. */
static void write_transfers(pgw_json_out *o, const pgw_command *cmd)
{
    pgw_json_out_key(o, "transfers");
    pgw_json_out_begin_array(o);
    for (size_t i = 0; i < cmd->n_transfers; i++) {
        const pgw_transfer *t = &cmd->transfers[i];
        pgw_json_out_begin_object(o);
        pgw_json_out_key_int(o, "id", t->id);
        pgw_json_out_key_string(o, "debit", t->debit);
        pgw_json_out_key_string(o, "credit", t->credit);
        pgw_json_out_key_int(o, "points", t->points);
        pgw_json_out_end_object(o);
    }
    pgw_json_out_end_array(o);
}

/* The answer is kept whole or not at all ("": it did not fit). */
static void keep_if_whole(pgw_command *cmd, const pgw_json_out *o)
{
    if (o->overflow)
        cmd->answer[0] = '\0';
}

void pgw_command_keep_answer(pgw_command *cmd, json_t *body)
{
    size_t n = body ? json_dumpb(body, cmd->answer, sizeof(cmd->answer) - 1, JSON_COMPACT) : 0;
    cmd->answer[n < sizeof(cmd->answer) - 1 ? n : 0] = '\0';
    json_decref(body);
}

void pgw_command_keep_answer_with_transfers(pgw_command *cmd, json_t *body)
{
    pgw_command_keep_answer(cmd, body);
    size_t len = strlen(cmd->answer);
    if (len < 2 || cmd->answer[len - 1] != '}')
        return; /* nothing kept: it stays "" */
    pgw_json_out o;
    pgw_json_out_reopen(&o, cmd->answer, sizeof(cmd->answer), len);
    write_transfers(&o, cmd);
    pgw_json_out_end_object(&o);
    keep_if_whole(cmd, &o);
}

void pgw_event_render(pgw_command *cmd, const pgw_rules *rules, const pgw_event_doc *doc)
{
    bool refund = doc->event.type == PGW_EVENT_REFUND;
    pgw_json_out o;
    pgw_json_out_init(&o, cmd->answer, sizeof(cmd->answer));
    pgw_json_out_begin_object(&o);
    pgw_earning_write(&o, rules, doc, cmd->earning,
                      refund ? -cmd->points_moved : cmd->earning->points);
    pgw_json_out_key_string(&o, "member_id", cmd->member);
    if (refund) {
        pgw_json_out_key_int(&o, "written_off", cmd->written_off);
        pgw_json_out_key_int(&o, "debt_added", cmd->debt_added);
    }
    pgw_json_out_key_int(&o, "balance", cmd->figures.balance);
    pgw_json_out_key_int(&o, "available", cmd->figures.available);
    write_transfers(&o, cmd);
    pgw_json_out_end_object(&o);
    keep_if_whole(cmd, &o);
}
