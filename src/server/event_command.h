/*
 * event_command.h - an event as a command for the writer, and its answer.
 *
 * One path for every event, whoever sends it: POST /v1/events (and its
 * batches and CSV uploads) and reconciliation's repair build their EVENT
 * commands here, so a repaired event has the same key, fingerprint,
 * member naming and stored answer as if the till had posted it.
 */
#ifndef PGW_SERVER_EVENT_COMMAND_H
#define PGW_SERVER_EVENT_COMMAND_H

#include "server/command.h"
#include "server/event_json.h"
#include "util/vault.h"

#include <jansson.h>

/* Names the command's member: a member_id as it is, any other identity
 * through the vault (a phone blinded and sealed), resolved by the writer. */
int pgw_command_name_member(const pgw_vault *vault, const pgw_identity *who, pgw_command *cmd,
                            pgw_err *err);

/* SHA-256 of the request object's canonical JSON (sorted keys, compact):
 * json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS)'s text, byte for byte, as
 * the stored fingerprints were made; members set to null left out. */
int pgw_json_fingerprint(const json_t *obj, uint8_t out[PGW_HASH_LEN]);

/*
 * cmd->fingerprint: `obj`'s pgw_json_fingerprint with its "member" (and
 * "referrer", when `referrer` is not NULL) phone or email as normalised in
 * `member` (`referrer`), so that the same request naming them written
 * otherwise is the same request. When that differs from the body as sent,
 * cmd->fingerprint_as_sent holds the body's own (has_fingerprint_as_sent):
 * the key a gateway recorded before fingerprints were normalised is met
 * by it. For holds and redemptions (has_fingerprint_time_as_sent false);
 * events, whose time counts too, go through pgw_event_fingerprint.
 */
int pgw_command_fingerprint(const json_t *obj, const pgw_identity *member,
                            const pgw_identity *referrer, pgw_command *cmd, pgw_err *err);

/*
 * An event's fingerprints, as pgw_command_fingerprint's with its member
 * and referrer, and its occurred_at too in normal form: the instant as
 * doc->occurred_at_normal writes it (in the mall's zone, to the second),
 * so that the same event with its time in another offset, or with a
 * fraction, is the same request. A time written otherwise also fills
 * cmd->fingerprint_time_as_sent (has_fingerprint_time_as_sent): the body
 * with its phone or email normalised and its time as sent, the fingerprint
 * of the keys gateways recorded before times were normalised (a shop's CSV
 * rows among them, whose fingerprint_as_sent api.c replaces), and
 * cmd->fingerprint_as_sent, the body's own. A body whose phone, email and
 * time are all written in normal form has its own fingerprint, as before,
 * and neither beside. An item's "qty": 1, its default, is left out of the
 * normal form (a till writing defaults out is the same request as one
 * leaving them out); such a body keeps its own beside, the normal form
 * before that in fingerprint_time_as_sent and, its phone or email and its
 * time both written otherwise, the form between (phone normal, time and
 * qty as sent) in fingerprint_time_qty_as_sent.
 */
int pgw_event_fingerprint(const json_t *obj, const pgw_event_doc *doc, pgw_command *cmd,
                          pgw_err *err);

/* That canonical text of `v` into buf (NUL-terminated) and its length in
 * *len, without allocating; false, and nothing usable in buf, when it does
 * not fit or holds what only json_dumps writes (a real, a string with a
 * NUL, more than 64 keys in an object or 16 levels). */
bool pgw_json_canonical(const json_t *v, char *buf, size_t cap, size_t *len);

/*
 * Fills the EVENT command's fields from a parsed event `obj` / `doc`: the
 * member and any referrer (a member_id as it is, other identities through
 * the vault), key, fingerprints (pgw_event_fingerprint), shop, channel, reference, receipt,
 * event_id, time, and the event and earning it borrows (doc and earning
 * must outlive the command). The caller sets done/payload and render.
 * An event that occurred more than PGW_EVENT_AHEAD_MAX_S after `now_s`
 * (unix seconds, the gateway's clock) is PGW_EINVAL.
 */
int pgw_event_command(const pgw_vault *vault, const json_t *obj, const pgw_event_doc *doc,
                      int64_t now_s, pgw_earning *earning, pgw_command *cmd, pgw_err *err);

/* How far an event's occurred_at may be ahead of the gateway's clock: a
 * till's clock running fast. An event is applied at its occurred_at (its
 * lot's expiry, the holds due by then, its day), so one dated later would
 * release the member's holds before their deadline and choose how long its
 * points live. */
#define PGW_EVENT_AHEAD_MAX_S 300
/* The earliest occurred_at taken: 2000-01-01T00:00:00Z. No loyalty ledger
 * goes back further, and it keeps every local day an event reaches (a
 * year back for the tier, in any zone) inside the calendar's years: a
 * time whose local day was 1969 killed the server on an assertion. */
#define PGW_EVENT_EARLIEST_S 946684800

/* A CSV cell naming a member ("phone:...", "card:S001:88001", "member_id:M1")
 * as the member object of API.md; NULL and PGW_EINVAL in err otherwise. */
json_t *pgw_member_json_from_text(const char *text, pgw_err *err);

/* Dumps `body` (taken) into cmd->answer; empty when it does not fit. */
void pgw_command_keep_answer(pgw_command *cmd, json_t *body);
/* The same with "transfers", the command's committed transfers as API.md
 * shows them, added last. */
void pgw_command_keep_answer_with_transfers(pgw_command *cmd, json_t *body);

/* An event's answer (API.md "Events") into cmd->answer, for a render callback. */
void pgw_event_render(pgw_command *cmd, const pgw_rules *rules, const pgw_event_doc *doc);

#endif
