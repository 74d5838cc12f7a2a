/*
 * event_command.c - see event_command.h.
 */
#include "event_command.h"

#include "core/assertions.h"
#include "core/civil.h"
#include "core/digest.h"
#include "core/text.h"
#include "core/utf8.h"
#include "util/json_write.h"

#include <stdlib.h>
#include <string.h>

/* The canonical text written here, past which json_dumps writes it. An
 * event's is a few hundred bytes, a batch item's the same. */
#define CANONICAL_DEPTH_MAX 16
#define CANONICAL_KEYS_MAX  64
#define CANONICAL_TEXT_MAX  8192

/* An object's member as the canonical text writes it: by its key. */
typedef struct canonical_member {
    const char *key;
    const json_t *value;
} canonical_member;

/* members[0..n) by key, in strcmp order: an insertion sort, for an
 * object's few keys (qsort's calls cost an event ~1,400 instructions for
 * its seven and its member's one; bench/RESULTS.md). Keys are distinct. */
static void sort_members(canonical_member *members, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        canonical_member next = members[i];
        size_t j = i;
        for (; j > 0 && strcmp(members[j - 1].key, next.key) > 0; j--)
            members[j] = members[j - 1];
        members[j] = next;
    }
}

static bool write_canonical(pgw_json_out *o, const json_t *v, int depth, bool refuse_nulls);

/* Keys in strcmp order, as jansson sorts them (by bytes; parsed keys hold
 * no NUL, which jansson refuses without JSON_ALLOW_NUL). Each value is
 * kept with its key: looked up again by it, it cost an event ~1,100
 * instructions of hashing (bench/RESULTS.md). `refuse_nulls`: false for a
 * member set to null. */
static bool write_canonical_object(pgw_json_out *o, const json_t *obj, int depth, bool refuse_nulls)
{
    canonical_member members[CANONICAL_KEYS_MAX];
    size_t n = 0;
    if (json_object_size(obj) > CANONICAL_KEYS_MAX)
        return false;
    /* jansson's iterators take a non-const object; nothing is changed. */
    for (void *it = json_object_iter((json_t *)obj); it != NULL;
         it = json_object_iter_next((json_t *)obj, it)) {
        PGW_ASSERT(n < CANONICAL_KEYS_MAX);
        members[n].key = json_object_iter_key(it);
        members[n].value = json_object_iter_value(it);
        if (json_object_iter_key_len(it) != strlen(members[n].key) ||
            (refuse_nulls && json_is_null(members[n].value)))
            return false;
        n++;
    }
    sort_members(members, n);
    pgw_json_out_begin_object(o);
    for (size_t i = 0; i < n; i++) {
        pgw_json_out_key(o, members[i].key);
        if (!write_canonical(o, members[i].value, depth + 1, refuse_nulls))
            return false;
    }
    pgw_json_out_end_object(o);
    return true;
}

/* v as json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS) writes it; false for
 * what is left to json_dumps: reals (its own formatting of doubles),
 * strings holding NUL, deeper or wider values than the limits above (and
 * with `refuse_nulls`, an object's member set to null). */
static bool write_canonical(pgw_json_out *o, const json_t *v, int depth, bool refuse_nulls)
{
    if (depth > CANONICAL_DEPTH_MAX)
        return false;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return write_canonical_object(o, v, depth, refuse_nulls);
    case JSON_ARRAY:
        pgw_json_out_begin_array(o);
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!write_canonical(o, json_array_get(v, i), depth + 1, refuse_nulls))
                return false;
        pgw_json_out_end_array(o);
        return true;
    case JSON_STRING:
        if (json_string_length(v) != strlen(json_string_value(v)))
            return false;
        pgw_json_out_string(o, json_string_value(v));
        return true;
    case JSON_INTEGER:
        pgw_json_out_int(o, json_integer_value(v));
        return true;
    case JSON_TRUE:
    case JSON_FALSE:
        pgw_json_out_bool(o, json_is_true(v));
        return true;
    case JSON_NULL:
        pgw_json_out_null(o);
        return true;
    case JSON_REAL:
        return false;
    }
    return false;
}

bool pgw_json_canonical(const json_t *v, char *buf, size_t cap, size_t *len)
{
    pgw_json_out o;
    pgw_json_out_init(&o, buf, cap);
    bool written = write_canonical(&o, v, 0, false) && !o.overflow;
    *len = written ? o.len : 0;
    return written;
}

/* Whether an object in v has a member set to null (depth-bounded by the
 * parser's own limit). */
static bool has_null_member(const json_t *v)
{
    const char *key;
    json_t *value;
    size_t i;
    if (json_is_array(v)) {
        json_array_foreach(v, i, value)
        {
            if (has_null_member(value))
                return true;
        }
    }
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key, value)
        {
            if (json_is_null(value) || has_null_member(value))
                return true;
        }
    }
    return false;
}

static void drop_null_members(json_t *v)
{
    const char *key;
    json_t *value;
    void *tmp;
    size_t i;
    if (json_is_array(v)) {
        json_array_foreach(v, i, value)
        {
            drop_null_members(value);
        }
    }
    if (json_is_object(v)) {
        json_object_foreach_safe(v, tmp, key, value)
        {
            if (json_is_null(value))
                json_object_del(v, key);
            else
                drop_null_members(value);
        }
    }
}

static int fingerprint_as_is(const json_t *obj, uint8_t out[PGW_HASH_LEN]);

/* A member set to null is absent (json_read.h): the same request sent
 * with its unset fields null, or without them, is the same request. Such
 * bodies were refused before nulls were taken, so no stored fingerprint
 * holds one. */
int pgw_json_fingerprint(const json_t *obj, uint8_t out[PGW_HASH_LEN])
{
    /* Written whole without meeting a member set to null: the walk below
     * would have found none, and this is the text it would hash. It cost
     * ~700 instructions an event, walking it first (bench/RESULTS.md). */
    char canonical[CANONICAL_TEXT_MAX];
    pgw_json_out o;
    pgw_json_out_init(&o, canonical, sizeof(canonical));
    if (write_canonical(&o, obj, 0, true) && !o.overflow) {
        pgw_sha256(canonical, o.len, out);
        return PGW_OK;
    }
    if (!has_null_member(obj))
        return fingerprint_as_is(obj, out);
    json_t *copy = json_deep_copy(obj);
    if (copy == NULL)
        return PGW_ENOMEM;
    drop_null_members(copy);
    int rc = fingerprint_as_is(copy, out);
    json_decref(copy);
    return rc;
}

/* json_dumps allocated the text and formatted each value through vsnprintf:
 * a tenth of the service thread's time per event (bench/RESULTS.md). */
static int fingerprint_as_is(const json_t *obj, uint8_t out[PGW_HASH_LEN])
{
    char canonical[CANONICAL_TEXT_MAX];
    size_t len = 0;
    if (pgw_json_canonical(obj, canonical, sizeof(canonical), &len)) {
        pgw_sha256(canonical, len, out);
        return PGW_OK;
    }
    char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL)
        return PGW_ENOMEM;
    pgw_sha256(text, strlen(text), out);
    free(text);
    return PGW_OK;
}

/* Whether a member object names its phone or email otherwise than
 * normalised (only those two normalise to other text). */
static bool written_otherwise(const json_t *member, const pgw_identity *id)
{
    const char *field = id->kind == PGW_ID_PHONE   ? "phone"
                        : id->kind == PGW_ID_EMAIL ? "email"
                                                   : NULL;
    const char *written = field ? json_string_value(json_object_get(member, field)) : NULL;
    return written != NULL && strcmp(written, id->value) != 0;
}

/* `obj`'s member object `name` as normalised, in `copy` (obj's shallow copy). */
static int set_normalised(json_t *copy, const char *name, const pgw_identity *id)
{
    json_t *member = json_deep_copy(json_object_get(copy, name));
    const char *field = id->kind == PGW_ID_PHONE ? "phone" : "email";
    if (member == NULL || json_object_set_new(member, field, json_string(id->value)) != 0 ||
        json_object_set_new(copy, name, member) != 0) {
        json_decref(member);
        return PGW_ENOMEM;
    }
    return PGW_OK;
}

/* What a request's normal form changes, each NULL when written so already:
 * its member's and its referrer's phone or email, and its event's time;
 * and whether its items' "qty": 1, the default, is left out. */
typedef struct normal_form {
    const pgw_identity *member, *referrer;
    const char *occurred_at;
    bool qty_left_out;
} normal_form;

/* Whether an item writes its qty's default (event_json.c: 1) out. */
static bool writes_qty_default(const json_t *obj)
{
    const json_t *items = json_object_get(obj, "items");
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *qty = json_object_get(json_array_get(items, i), "qty");
        if (json_is_integer(qty) && json_integer_value(qty) == 1)
            return true;
    }
    return false;
}

/* `copy`'s items (obj's, shared) replaced by copies without "qty": 1. */
static int leave_qty_out(json_t *copy)
{
    json_t *items = json_deep_copy(json_object_get(copy, "items"));
    if (items == NULL || json_object_set_new(copy, "items", items) != 0)
        return PGW_ENOMEM;
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *item = json_array_get(items, i);
        const json_t *qty = json_object_get(item, "qty");
        if (json_is_integer(qty) && json_integer_value(qty) == 1)
            json_object_del(item, "qty");
    }
    return PGW_OK;
}

/* `obj`'s fingerprint with what `n` names as normalised. */
static int fingerprint_normalised(const json_t *obj, const normal_form *n,
                                  uint8_t out[PGW_HASH_LEN])
{
    json_t *copy = json_copy((json_t *)obj); /* shallow: the members are replaced, not changed */
    int rc = copy != NULL ? PGW_OK : PGW_ENOMEM;
    if (rc == PGW_OK && n->member != NULL)
        rc = set_normalised(copy, "member", n->member);
    if (rc == PGW_OK && n->referrer != NULL)
        rc = set_normalised(copy, "referrer", n->referrer);
    if (rc == PGW_OK && n->occurred_at != NULL &&
        json_object_set_new(copy, "occurred_at", json_string(n->occurred_at)) != 0)
        rc = PGW_ENOMEM;
    if (rc == PGW_OK && n->qty_left_out)
        rc = leave_qty_out(copy);
    if (rc == PGW_OK)
        rc = pgw_json_fingerprint(copy, out);
    json_decref(copy);
    return rc;
}

/*
 * A body written in normal form is fingerprinted as it came, as it always
 * was. One written otherwise is fingerprinted in normal form, with its own
 * fingerprint beside (what gateways before phones were normal recorded)
 * and, when its time is not normal, the one gateways before times were
 * normal gave it: phone normalised, time as sent (its own again when its
 * phone was normal: kept twice, for a CSV row's as-sent is replaced).
 */
static int fingerprint_request(const json_t *obj, const normal_form *n, pgw_command *cmd,
                               pgw_err *err)
{
    bool names_otherwise = n->member != NULL || n->referrer != NULL;
    cmd->has_fingerprint_as_sent = names_otherwise || n->occurred_at != NULL;
    cmd->has_fingerprint_time_as_sent = n->occurred_at != NULL;
    cmd->has_fingerprint_time_qty_as_sent = false;
    int rc = pgw_json_fingerprint(obj, cmd->has_fingerprint_as_sent ? cmd->fingerprint_as_sent
                                                                    : cmd->fingerprint);
    if (rc == PGW_OK && cmd->has_fingerprint_as_sent)
        rc = fingerprint_normalised(obj, n, cmd->fingerprint);
    normal_form names = {n->member, n->referrer, NULL, false};
    if (rc == PGW_OK && cmd->has_fingerprint_time_as_sent && names_otherwise)
        rc = fingerprint_normalised(obj, &names, cmd->fingerprint_time_as_sent);
    else if (rc == PGW_OK && cmd->has_fingerprint_time_as_sent)
        memcpy(cmd->fingerprint_time_as_sent, cmd->fingerprint_as_sent, PGW_HASH_LEN);
    if (rc != PGW_OK)
        return pgw_err_set(err, rc, "out of memory fingerprinting a request");
    return PGW_OK;
}

/*
 * An event writing qty's default out: fingerprinted with it left out, the
 * form a till that leaves it out always had. Beside it, the forms keys
 * were recorded under before, qty as sent: the body's own (before phones
 * were normal), the normal form before qty's default was (phone and time
 * normal) and, its phone or email and its time both written otherwise,
 * the one between (phone normal, time as sent; with only one of them
 * written otherwise it is one of the other two).
 */
static int fingerprint_qty_left_out(const json_t *obj, const normal_form *n, pgw_command *cmd,
                                    pgw_err *err)
{
    PGW_ASSERT(n->qty_left_out);
    normal_form before = *n, between = *n;
    before.qty_left_out = between.qty_left_out = false;
    between.occurred_at = NULL;
    bool names_otherwise = n->member != NULL || n->referrer != NULL;
    cmd->has_fingerprint_as_sent = true;
    cmd->has_fingerprint_time_as_sent = names_otherwise || n->occurred_at != NULL;
    cmd->has_fingerprint_time_qty_as_sent = names_otherwise && n->occurred_at != NULL;
    int rc = pgw_json_fingerprint(obj, cmd->fingerprint_as_sent);
    if (rc == PGW_OK)
        rc = fingerprint_normalised(obj, n, cmd->fingerprint);
    if (rc == PGW_OK && cmd->has_fingerprint_time_as_sent)
        rc = fingerprint_normalised(obj, &before, cmd->fingerprint_time_as_sent);
    if (rc == PGW_OK && cmd->has_fingerprint_time_qty_as_sent)
        rc = fingerprint_normalised(obj, &between, cmd->fingerprint_time_qty_as_sent);
    if (rc != PGW_OK)
        return pgw_err_set(err, rc, "out of memory fingerprinting a request");
    return PGW_OK;
}

/* The identities of a request, NULL when `obj` writes them normalised. */
static normal_form names_of(const json_t *obj, const pgw_identity *member,
                            const pgw_identity *referrer)
{
    normal_form n = {member, referrer, NULL, false};
    if (!written_otherwise(json_object_get(obj, "member"), member))
        n.member = NULL;
    if (referrer != NULL && !written_otherwise(json_object_get(obj, "referrer"), referrer))
        n.referrer = NULL;
    return n;
}

/*
 * A till's retry that writes the phone afresh ("+86 139-...") names the
 * same member and is the same request (holds and redemptions were 409 for
 * it, as events were). A body written in normal form is fingerprinted as
 * it came, as it always was; one written otherwise (a till's "139...")
 * keeps its own fingerprint beside, which the keys it recorded before this
 * took (command.h).
 */
int pgw_command_fingerprint(const json_t *obj, const pgw_identity *member,
                            const pgw_identity *referrer, pgw_command *cmd, pgw_err *err)
{
    normal_form n = names_of(obj, member, referrer);
    return fingerprint_request(obj, &n, cmd, err);
}

/*
 * A till's retry that writes its time in another offset ("...T02:15:00Z"
 * for "...T10:15:00+08:00") names the same instant and is the same event
 * (it was 409). The normal form is the gateway's own spelling, in the
 * mall's zone: what tills there write, and what the events the gateway
 * makes itself (WeChat's pushes, repaired rows) carry, so that those keep
 * the one fingerprint they always had.
 */
int pgw_event_fingerprint(const json_t *obj, const pgw_event_doc *doc, pgw_command *cmd,
                          pgw_err *err)
{
    normal_form n = names_of(obj, &doc->member, doc->has_referrer ? &doc->referrer : NULL);
    const char *written = json_string_value(json_object_get(obj, "occurred_at"));
    PGW_ASSERT(written != NULL); /* pgw_event_from_json read it */
    if (doc->occurred_at_normal[0] != '\0' && strcmp(written, doc->occurred_at_normal) != 0)
        n.occurred_at = doc->occurred_at_normal;
    /* An item's "qty": 1 is its default left out (fingerprint_qty_left_out). */
    n.qty_left_out = writes_qty_default(obj);
    if (n.qty_left_out)
        return fingerprint_qty_left_out(obj, &n, cmd, err);
    return fingerprint_request(obj, &n, cmd, err);
}

int pgw_command_name_member(const pgw_vault *vault, const pgw_identity *who, pgw_command *cmd,
                            pgw_err *err)
{
    if (who->kind == PGW_ID_MEMBER) {
        PGW_TEXT(cmd->member, sizeof(cmd->member), who->value); /* cut at PGW_ID_MAX */
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
        PGW_TEXT(cmd->referrer, sizeof(cmd->referrer), who->value); /* cut at PGW_ID_MAX */
        return PGW_OK;
    }
    cmd->referrer_by_identity = true;
    return pgw_vault_key(vault, who, &cmd->referrer_key, err);
}

int pgw_event_command(const pgw_vault *vault, const json_t *obj, const pgw_event_doc *doc,
                      int64_t now_s, pgw_earning *earning, pgw_command *cmd, pgw_err *err)
{
    if (doc->event.occurred_at - PGW_EVENT_AHEAD_MAX_S > now_s) {
        char clock[PGW_RFC3339_MAX]; /* as a signature's refusal gives it (auth.c) */
        pgw_format_utc(now_s, clock);
        return pgw_err_set(err, PGW_EINVAL,
                           "$.occurred_at is %lld s ahead of the gateway's clock (%s), more than "
                           "the %d s taken: check the sender's clock",
                           (long long)(doc->event.occurred_at - now_s), clock,
                           PGW_EVENT_AHEAD_MAX_S);
    }
    if (doc->event.occurred_at < PGW_EVENT_EARLIEST_S)
        return pgw_err_set(err, PGW_EINVAL, "$.occurred_at is before 2000-01-01T00:00:00Z");
    int rc = pgw_command_name_member(vault, &doc->member, cmd, err);
    if (rc == PGW_OK && doc->has_referrer)
        rc = name_referrer(vault, &doc->referrer, cmd, err);
    if (rc == PGW_OK)
        rc = pgw_event_fingerprint(obj, doc, cmd, err);
    if (rc != PGW_OK)
        return rc;
    /* API.md: channel + shop_id (or appid) + event_id. Two mini programs
     * may number their events alike; the appid (an openid's scope, checked
     * as wx + 16 hex) keeps them apart. */
    const char *source = doc->shop_id;
    bool by_appid = source[0] == '\0' &&
                    (doc->member.kind == PGW_ID_MP_OPENID || doc->member.kind == PGW_ID_OA_OPENID);
    if (by_appid)
        source = doc->member.scope;
    cmd->keyed_by_appid = by_appid;
    pgw_store_event_key(cmd->key, doc->channel, source, doc->event_id);
    if (doc->event.type == PGW_EVENT_REFUND) /* it names a shop (event_json.c) */
        pgw_store_event_key(cmd->original, doc->channel, doc->shop_id, doc->original_event_id);
    /* Copied, not through snprintf "%s" (~600 instructions each: bench/RESULTS.md). */
    PGW_TEXT(cmd->shop, sizeof(cmd->shop), doc->shop_id);
    PGW_TEXT(cmd->channel, sizeof(cmd->channel), doc->channel);
    PGW_TEXT(cmd->reference, sizeof(cmd->reference),
             doc->receipt_no[0] ? doc->receipt_no : doc->event_id);
    PGW_TEXT(cmd->receipt, sizeof(cmd->receipt), doc->receipt_no);
    cmd->at = doc->event.occurred_at;
    cmd->asked_at = now_s; /* the state it meets is now's (command.c state_at) */
    cmd->event = &doc->event;
    cmd->earning = earning;
    return PGW_OK;
}

json_t *pgw_member_json_from_text(const char *text, pgw_err *err)
{
    static const char *const kinds[] = {"phone", "card", "member_id"};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t n = strlen(kinds[i]);
        if (strncmp(text, kinds[i], n) != 0 || text[n] != ':' || text[n + 1] == '\0')
            continue;
        json_t *member = json_pack("{s:s}", kinds[i], text + n + 1);
        if (member == NULL) /* jansson takes UTF-8 only */
            pgw_err_set(err, PGW_EINVAL, "member: not UTF-8");
        return member;
    }
    /* Cut on a character: cut inside one, the message was no UTF-8 (its
     * row lost from the batch's errors, 20978da; error_body now makes any
     * message UTF-8, but would show the half character as '?'). */
    pgw_err_set(err, PGW_EINVAL, "member \"%.*s\" is not phone:..., card:... or member_id:...",
                (int)pgw_utf8_prefix(text, 64), text);
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
