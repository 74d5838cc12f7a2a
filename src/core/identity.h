/*
 * identity.h - the identities a member is known by, normalised.
 *
 * A member has many identities (DESIGN.md "Members and merges"): a phone
 * number, shop cards (per shop), mini-program and official-account openids
 * (per appid), a WeChat unionid, an email, and the unified member id itself.
 * Each channel names a member by one of them; this module validates and
 * normalises them so that the same person always yields the same bytes:
 * `13800138000`, `+86 138 0013 8000` and `0086-13800138000` are all
 * "+8613800138000".
 *
 * Text form (CLI, CSV, logs): "<kind>:<value>" or "<kind>:<scope>:<value>"
 *     phone:+8613800138000        card:S001:88001
 *     mp_openid:wx1234567890abcdef:oAbC...   oa_openid:<appid>:<openid>
 *     unionid:oXyZ...   email:li.lei@example.com   member_id:M7Q2K9
 */
#ifndef PGW_CORE_IDENTITY_H
#define PGW_CORE_IDENTITY_H

#include "bounds.h"
#include "error.h"

#include <stddef.h>
#include <stdint.h>

typedef enum pgw_identity_kind {
    PGW_ID_MEMBER = 0, /* member_id: "M" + 1..20 of [0-9A-Z] */
    PGW_ID_PHONE,      /* phone: mainland China mobile, stored E.164 "+86..." */
    PGW_ID_CARD,       /* card: scope = shop id, value = card number */
    PGW_ID_MP_OPENID,  /* mp_openid: scope = mini-program appid */
    PGW_ID_OA_OPENID,  /* oa_openid: scope = official-account appid */
    PGW_ID_UNIONID,    /* unionid */
    PGW_ID_EMAIL,      /* email, domain lower-cased */
} pgw_identity_kind;

#define PGW_OPENID_MAX    64
#define PGW_CARD_NO_MAX   32
#define PGW_MEMBER_ID_MAX 21
#define PGW_APPID_LEN     18 /* "wx" + 16 hex digits */

typedef struct pgw_identity {
    pgw_identity_kind kind;
    char scope[PGW_ID_MAX + 1];             /* shop id or appid; "" otherwise */
    char value[PGW_IDENTITY_VALUE_MAX + 1]; /* normalised */
} pgw_identity;

#define PGW_LOOKUP_MAX PGW_IDENTITY_VALUE_MAX /* hex HMAC (64) or the normalised value */
#define PGW_SEALED_MAX 64                     /* nonce 12 + a phone (at most 16) + tag 16 */

/*
 * An identity as the store keeps it (util/vault.h makes one): looked up by
 * (kind, scope, lookup); a phone's lookup is its blind index and its value
 * is sealed, every other kind's lookup is its normalised value.
 */
typedef struct pgw_identity_key {
    pgw_identity_kind kind;
    char scope[PGW_ID_MAX + 1];
    char lookup[PGW_LOOKUP_MAX + 1];
    uint8_t sealed[PGW_SEALED_MAX]; /* phones only */
    size_t sealed_len;
} pgw_identity_key;

/* "phone" -> PGW_ID_PHONE ...; PGW_EINVAL for an unknown name. */
int pgw_identity_kind_parse(const char *name, pgw_identity_kind *out);
const char *pgw_identity_kind_name(pgw_identity_kind kind);

/*
 * Normalises a mainland China mobile number to E.164 ("+8613800138000"):
 * takes full-width digits, '+', '-', parentheses and the ideographic space
 * as their ASCII (an input method's full-width mode), drops spaces, '-',
 * '(' and ')', then a leading "+86", "0086", "86" (when
 * 13 digits remain) or single '0', and requires ^1[3-9][0-9]{9}$
 * (research/sms-api.md section 5). Input longer than 64 bytes is refused.
 * out needs 15 bytes.
 */
int pgw_phone_normalize(const char *in, char *out, size_t cap, pgw_err *err);

/* "+8613800138000" -> "138****8000" (out needs 12 bytes). For answers and logs. */
int pgw_phone_mask(const char *e164, char *out, size_t cap);

/*
 * Builds an identity from its parts (the JSON member object form), checking
 * and normalising them. `scope` is the shop id for cards, the appid for
 * openids, and must be NULL or "" for the other kinds.
 */
int pgw_identity_make(pgw_identity_kind kind, const char *scope, const char *value,
                      pgw_identity *out, pgw_err *err);

/* Parses the text form ("phone:13800138000", "card:S001:88001", ...). */
int pgw_identity_parse(const char *text, pgw_identity *out, pgw_err *err);

/* Writes the text form; PGW_ERANGE when cap is too small (PGW_IDENTITY_TEXT_MAX + 1 always fits).
 */
int pgw_identity_format(const pgw_identity *id, char *out, size_t cap);

#endif
