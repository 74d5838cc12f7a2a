/*
 * vault.h - how identities are kept: phones never in clear.
 *
 * An identity is looked up by (kind, scope, lookup). For a phone the
 * lookup is a blind index, hex HMAC-SHA256(index key, "+8613800138000"),
 * so the database can find a member by phone without holding the number;
 * the number itself is kept sealed with AES-256-GCM (random 96-bit nonce,
 * the lookup as associated data so a sealed value cannot be moved to
 * another row), to show it masked ("138****8000"). Other identities
 * (cards, openids, unionids, emails, member ids) are their normalised
 * value.
 *
 * Keys: 32 bytes each, as 64 hex digits in the environment variables the
 * configuration names (security.phone_hmac_key_env, phone_aes_key_env).
 * Without them the vault refuses to open, unless the configuration says
 * development_mode: then fixed, publicly known keys are used and a warning
 * says so (fine for a demo, never for real members). Only both unset (or
 * empty) mean that: a key set but malformed, or one without the other, is
 * refused in either mode, the message naming the variable.
 *
 * Keys other than those a database's phones were stored with would find
 * none of them (another blind index: a known phone would enrol a second
 * member) and open none: pgw_vault_check_stored tells, and whoever opens
 * a vault on a database refuses to start then (server/api.h
 * pgw_api_check_phone_keys). There is no re-keying: a database keeps the
 * keys it was made with.
 *
 * A pgw_vault is immutable once opened: any thread may use it.
 */
#ifndef PGW_UTIL_VAULT_H
#define PGW_UTIL_VAULT_H

#include "core/error.h"
#include "core/identity.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pgw_vault pgw_vault;

/*
 * Reads the keys from the variables named (names of at most 64 bytes);
 * `development` allows the fixed keys when both are unset. *warned is set
 * when those were used. PGW_EINVAL naming the variable for a key missing
 * or malformed. The caller frees the vault with pgw_vault_free.
 */
int pgw_vault_open(const char *hmac_env, const char *aes_env, bool development, pgw_vault **out,
                   bool *warned, pgw_err *err);
void pgw_vault_free(pgw_vault *vault);

/* Says on stderr that `vault` runs on development mode's public keys,
 * naming the variables to set, when it does; nothing otherwise (NULL
 * too). serve and every command that opens a vault call it: the phones
 * they store are protected by nothing. */
void pgw_vault_warn_public(const pgw_vault *vault);

/*
 * Whether `stored`, a phone read back from a database, was made with this
 * vault's keys: its sealed number opens (GCM's tag fails under another
 * sealing key) and its blind index is that number's under the index key.
 * PGW_ESTATE when not, the message naming both variables (never a key or
 * the number); PGW_EIO for a phone with no sealed number; PGW_EINVAL for
 * an identity that is no phone.
 */
int pgw_vault_check_stored(const pgw_vault *vault, const pgw_identity_key *stored, pgw_err *err);

/* The store's key for an identity; phones are blinded and sealed. */
int pgw_vault_key(const pgw_vault *vault, const pgw_identity *id, pgw_identity_key *out,
                  pgw_err *err);

/* What an answer may show of a stored identity: phones masked
 * ("138****8000", unsealed first), others as they are. */
int pgw_vault_display(const pgw_vault *vault, const pgw_identity_key *key, char *out, size_t cap,
                      pgw_err *err);

/* A stored phone in full ("+8613800138000"), for sending it an SMS: the
 * caller wipes it after use. PGW_EINVAL for an identity that is no phone. */
int pgw_vault_phone(const pgw_vault *vault, const pgw_identity_key *key, char *out, size_t cap,
                    pgw_err *err);

/* A 32-byte key for `label` ("session"), derived from the index key by
 * HMAC-SHA256: other secrets of the gateway need no variable of their own. */
void pgw_vault_derive(const pgw_vault *vault, const char *label, uint8_t out[32]);

#endif
