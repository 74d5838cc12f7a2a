/*
 * event_command.c - see event_command.h.
 */
#include "event_command.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pgw_event_key(char out[PGW_IDEM_KEY_MAX + 1], const char *channel, const char *shop,
                   const char *event_id)
{
    snprintf(out, PGW_IDEM_KEY_MAX + 1, "%s:%s:%s", channel, shop[0] ? shop : "-", event_id);
}

int pgw_json_fingerprint(const json_t *obj, uint8_t out[PGW_HASH_LEN])
{
    char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL)
        return PGW_ENOMEM;
    SHA256((const unsigned char *)text, strlen(text), out);
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
    pgw_event_key(cmd->key, doc->channel, doc->shop_id, doc->event_id);
    if (doc->event.type == PGW_EVENT_REFUND)
        pgw_event_key(cmd->original, doc->channel, doc->shop_id, doc->original_event_id);
    snprintf(cmd->shop, sizeof(cmd->shop), "%s", doc->shop_id);
    snprintf(cmd->channel, sizeof(cmd->channel), "%s", doc->channel);
    snprintf(cmd->reference, sizeof(cmd->reference), "%s",
             doc->receipt_no[0] ? doc->receipt_no : doc->event_id);
    snprintf(cmd->receipt, sizeof(cmd->receipt), "%s", doc->receipt_no);
    snprintf(cmd->event_id, sizeof(cmd->event_id), "%s", doc->event_id);
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

json_t *pgw_transfers_json(const pgw_command *cmd)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < cmd->n_transfers; i++) {
        const pgw_transfer *t = &cmd->transfers[i];
        json_array_append_new(list, json_pack("{s:I,s:s,s:s,s:I}", "id", (json_int_t)t->id, "debit",
                                              t->debit, "credit", t->credit, "points",
                                              (json_int_t)t->points));
    }
    return list;
}

void pgw_command_keep_answer(pgw_command *cmd, json_t *body)
{
    size_t n = body ? json_dumpb(body, cmd->answer, sizeof(cmd->answer) - 1, JSON_COMPACT) : 0;
    cmd->answer[n < sizeof(cmd->answer) - 1 ? n : 0] = '\0';
    json_decref(body);
}

void pgw_event_render(pgw_command *cmd, const pgw_rules *rules, const pgw_event_doc *doc)
{
    json_t *body = pgw_earning_to_json(rules, doc, cmd->earning);
    if (body == NULL)
        return;
    json_object_set_new(body, "member_id", json_string(cmd->member));
    if (doc->event.type == PGW_EVENT_REFUND) {
        json_object_set_new(body, "points", json_integer(-(json_int_t)cmd->points_moved));
        json_object_set_new(body, "written_off", json_integer(cmd->written_off));
        json_object_set_new(body, "debt_added", json_integer(cmd->debt_added));
    }
    json_object_set_new(body, "balance", json_integer(cmd->figures.balance));
    json_object_set_new(body, "available", json_integer(cmd->figures.available));
    json_object_set_new(body, "transfers", pgw_transfers_json(cmd));
    pgw_command_keep_answer(cmd, body);
}
