/*
 * vault.c - see vault.h.
 */
#include "vault.h"

#include "core/assertions.h"
#include "core/text.h"
#include "core/transfer.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_LEN   32
#define NONCE_LEN 12
#define TAG_LEN   16

#define VAR_NAME_MAX 64 /* as the configuration's (config.h PGW_ENV_NAME_MAX) */

struct pgw_vault {
    uint8_t index_key[KEY_LEN];
    uint8_t seal_key[KEY_LEN];
    bool development; /* the public keys allowed: the messages offer them */
    bool public_keys; /* those in use: the messages say so */
    /* The variables the keys came from: the messages name them. */
    char index_var[VAR_NAME_MAX + 1];
    char seal_var[VAR_NAME_MAX + 1];
};

typedef enum key_state { KEY_UNSET, KEY_MALFORMED, KEY_OK } key_state;

static int hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Variable `var`: unset or empty, or exactly 64 hex digits (-> out), or
 * malformed. Digit by digit: sscanf's %2x took a sign or a space. */
static key_state read_key(const char *var, uint8_t out[KEY_LEN])
{
    const char *hex = getenv(var);
    if (hex == NULL || hex[0] == '\0')
        return KEY_UNSET;
    if (strlen(hex) != 2 * KEY_LEN)
        return KEY_MALFORMED;
    for (size_t i = 0; i < KEY_LEN; i++) {
        int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return KEY_MALFORMED;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return KEY_OK;
}

/* Whether variable `var` ends in a carriage return: an environment file
 * saved with Windows line ends (systemd's EnvironmentFile, `set -a; .
 * secrets.env`) gives every value one, and "malformed" alone did not say
 * what to change. */
static bool ends_in_cr(const char *var)
{
    const char *value = getenv(var);
    size_t n = value ? strlen(value) : 0;
    return n > 0 && value[n - 1] == '\r';
}

/* Why the keys read cannot be used (never their values); PGW_OK when both
 * are whole, or both unset in development mode. Set keys are held to the
 * same rule in either mode: a typo must not fall back to public keys. */
static int keys_problem(const char *hmac_env, key_state h, const char *aes_env, key_state a,
                        bool development, pgw_err *err)
{
    if (h == KEY_MALFORMED && a == KEY_MALFORMED)
        return pgw_err_set(err, PGW_EINVAL,
                           "%s and %s are malformed: each must be 64 hex digits (a 32-byte key)",
                           hmac_env, aes_env);
    if (h == KEY_MALFORMED || a == KEY_MALFORMED)
        return pgw_err_set(err, PGW_EINVAL,
                           "%s is malformed: it must be 64 hex digits (a 32-byte key)",
                           h == KEY_MALFORMED ? hmac_env : aes_env);
    if (h != a) /* one whole, the other unset */
        return pgw_err_set(err, PGW_EINVAL,
                           "%s is not set, but %s is: the phone keys go together, 64 hex digits "
                           "each%s",
                           h == KEY_UNSET ? hmac_env : aes_env, h == KEY_UNSET ? aes_env : hmac_env,
                           development ? " (development mode's public keys need both unset)" : "");
    if (h == KEY_UNSET && !development)
        return pgw_err_set(err, PGW_EINVAL,
                           "%s and %s must each hold 64 hex digits (32-byte keys) to store "
                           "phones; security.development_mode allows running without them",
                           hmac_env, aes_env);
    return PGW_OK;
}

int pgw_vault_open(const char *hmac_env, const char *aes_env, bool development, pgw_vault **out,
                   bool *warned, pgw_err *err)
{
    *out = NULL;
    *warned = false;
    if (strlen(hmac_env) > VAR_NAME_MAX || strlen(aes_env) > VAR_NAME_MAX)
        return pgw_err_set(err, PGW_EINVAL, "a phone key's variable name is over %d bytes",
                           VAR_NAME_MAX);
    pgw_vault *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the vault");
    v->development = development;
    snprintf(v->index_var, sizeof(v->index_var), "%s", hmac_env);
    snprintf(v->seal_var, sizeof(v->seal_var), "%s", aes_env);
    key_state h = read_key(hmac_env, v->index_key), a = read_key(aes_env, v->seal_key);
    int rc = keys_problem(hmac_env, h, aes_env, a, development, err);
    if (rc != PGW_OK && (ends_in_cr(hmac_env) || ends_in_cr(aes_env))) {
        char said[PGW_ERR_MSG_MAX];
        snprintf(said, sizeof(said), "%s", err->msg);
        pgw_err_set(err, rc,
                    "%s; a value ends in a carriage return (\\r): the environment file has "
                    "Windows line ends, save it with Unix ones",
                    said);
    }
    if (rc != PGW_OK) {
        pgw_vault_free(v); /* wipes what was read */
        return rc;
    }
    if (h == KEY_UNSET) { /* public, fixed: a demo's phones are protected by nothing */
        memset(v->index_key, 0x11, KEY_LEN);
        memset(v->seal_key, 0x22, KEY_LEN);
        v->public_keys = true;
        *warned = true;
    }
    *out = v;
    return PGW_OK;
}

void pgw_vault_free(pgw_vault *v)
{
    if (v != NULL)
        OPENSSL_cleanse(v, sizeof(*v));
    free(v);
}

void pgw_vault_warn_public(const pgw_vault *v)
{
    if (v != NULL && v->public_keys)
        fprintf(stderr,
                "pointsgw: DEVELOPMENT MODE: %s/%s are not set, phones are protected by "
                "public keys; never use this with real members\n",
                v->index_var, v->seal_var);
}

/* AES-256-GCM: out = nonce || ciphertext || tag, the lookup as associated data. */
static int seal(const pgw_vault *v, const char *plain, const char *aad, uint8_t *out,
                size_t *out_len, pgw_err *err)
{
    size_t len = strlen(plain);
    PGW_ASSERT(NONCE_LEN + len + TAG_LEN <= PGW_SEALED_MAX);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;
    bool ok =
        ctx != NULL && RAND_bytes(out, NONCE_LEN) == 1 &&
        EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, v->seal_key, out) == 1 &&
        EVP_EncryptUpdate(ctx, NULL, &n, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
        EVP_EncryptUpdate(ctx, out + NONCE_LEN, &n, (const uint8_t *)plain, (int)len) == 1 &&
        EVP_EncryptFinal_ex(ctx, out + NONCE_LEN + n, &fin) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out + NONCE_LEN + n + fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok)
        return pgw_err_set(err, PGW_EUNAVAILABLE, "cannot seal an identity");
    *out_len = NONCE_LEN + (size_t)(n + fin) + TAG_LEN;
    return PGW_OK;
}

static int unseal(const pgw_vault *v, const uint8_t *in, size_t in_len, const char *aad, char *out,
                  size_t cap, pgw_err *err)
{
    if (in_len < NONCE_LEN + TAG_LEN || in_len - NONCE_LEN - TAG_LEN >= cap)
        return pgw_err_set(err, PGW_EIO, "a sealed identity has the wrong length");
    int len = (int)(in_len - NONCE_LEN - TAG_LEN), n = 0, fin = 0;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    bool ok =
        ctx != NULL && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, v->seal_key, in) == 1 &&
        EVP_DecryptUpdate(ctx, NULL, &n, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
        EVP_DecryptUpdate(ctx, (uint8_t *)out, &n, in + NONCE_LEN, len) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)(in + NONCE_LEN + len)) ==
            1 &&
        EVP_DecryptFinal_ex(ctx, (uint8_t *)out + n, &fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok)
        return pgw_err_set(err, PGW_EIO, "a sealed identity does not open (wrong key, or moved)");
    out[n + fin] = '\0';
    return PGW_OK;
}

/* hex HMAC-SHA256(index key, value): a phone's lookup. */
static int blind_index(const pgw_vault *v, const char *value, char out[PGW_LOOKUP_MAX + 1],
                       pgw_err *err)
{
    uint8_t mac[32];
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), v->index_key, KEY_LEN, (const uint8_t *)value, strlen(value), mac,
             &mac_len) == NULL ||
        mac_len != sizeof(mac))
        return pgw_err_set(err, PGW_EUNAVAILABLE, "cannot compute a blind index");
    pgw_hash_hex(mac, out, PGW_LOOKUP_MAX + 1);
    return PGW_OK;
}

int pgw_vault_key(const pgw_vault *v, const pgw_identity *id, pgw_identity_key *out, pgw_err *err)
{
    memset(out, 0, sizeof(*out));
    out->kind = id->kind;
    PGW_TEXT(out->scope, sizeof(out->scope), id->scope);
    if (id->kind != PGW_ID_PHONE) {
        PGW_TEXT(out->lookup, sizeof(out->lookup), id->value);
        return PGW_OK;
    }
    int rc = blind_index(v, id->value, out->lookup, err);
    return rc == PGW_OK ? seal(v, id->value, out->lookup, out->sealed, &out->sealed_len, err) : rc;
}

/* The keys are not those a stored phone was made with: which one failed
 * (`sealing`: the sealing key; else the index key), and what to do. */
static int other_keys(const pgw_vault *v, bool sealing, pgw_err *err)
{
    if (v->public_keys)
        return pgw_err_set(err, PGW_ESTATE,
                           "the database's phones were sealed with other keys than the "
                           "development mode's public ones: set %s and %s to the keys they were "
                           "stored with",
                           v->index_var, v->seal_var);
    return pgw_err_set(err, PGW_ESTATE,
                       "the database's phones were %s: %s %s; %s and %s must be the keys they "
                       "were stored with%s",
                       sealing ? "sealed with other keys" : "indexed with another key",
                       sealing ? v->seal_var : v->index_var,
                       sealing ? "does not open them" : "gives them other blind indexes",
                       v->index_var, v->seal_var,
                       v->development ? " (or both unset, if they were stored in development mode)"
                                      : "");
}

int pgw_vault_check_stored(const pgw_vault *v, const pgw_identity_key *stored, pgw_err *err)
{
    if (stored->kind != PGW_ID_PHONE)
        return pgw_err_set(err, PGW_EINVAL, "not a phone");
    if (stored->sealed_len < NONCE_LEN + TAG_LEN)
        return pgw_err_set(err, PGW_EIO, "a stored phone has no sealed number (damaged?)");
    char phone[32], lookup[PGW_LOOKUP_MAX + 1];
    int rc = unseal(v, stored->sealed, stored->sealed_len, stored->lookup, phone, sizeof(phone),
                    NULL); /* GCM's tag: the sealing key, or the row was moved */
    if (rc != PGW_OK)
        rc = other_keys(v, true, err);
    if (rc == PGW_OK)
        rc = blind_index(v, phone, lookup, err);
    if (rc == PGW_OK && strcmp(lookup, stored->lookup) != 0)
        rc = other_keys(v, false, err);
    OPENSSL_cleanse(phone, sizeof(phone));
    return rc;
}

int pgw_vault_display(const pgw_vault *v, const pgw_identity_key *key, char *out, size_t cap,
                      pgw_err *err)
{
    if (key->kind != PGW_ID_PHONE) {
        int n = key->scope[0] ? snprintf(out, cap, "%s:%s", key->scope, key->lookup)
                              : snprintf(out, cap, "%s", key->lookup);
        return n >= 0 && (size_t)n < cap ? PGW_OK : pgw_err_set(err, PGW_ERANGE, "too long");
    }
    char phone[32];
    int rc = unseal(v, key->sealed, key->sealed_len, key->lookup, phone, sizeof(phone), err);
    if (rc == PGW_OK && pgw_phone_mask(phone, out, cap) != PGW_OK)
        rc = pgw_err_set(err, PGW_EIO, "a sealed phone is not a phone");
    OPENSSL_cleanse(phone, sizeof(phone));
    return rc;
}

int pgw_vault_phone(const pgw_vault *v, const pgw_identity_key *key, char *out, size_t cap,
                    pgw_err *err)
{
    if (key->kind != PGW_ID_PHONE)
        return pgw_err_set(err, PGW_EINVAL, "not a phone");
    return unseal(v, key->sealed, key->sealed_len, key->lookup, out, cap, err);
}

void pgw_vault_derive(const pgw_vault *vault, const char *label, uint8_t out[32])
{
    unsigned int len = 32;
    uint8_t *done = HMAC(EVP_sha256(), vault->index_key, KEY_LEN, (const unsigned char *)label,
                         strlen(label), out, &len);
    PGW_ASSERT(done != NULL && len == 32);
}
