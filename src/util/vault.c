/*
 * vault.c - see vault.h.
 */
#include "vault.h"

#include "core/assertions.h"
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

struct pgw_vault {
    uint8_t index_key[KEY_LEN];
    uint8_t seal_key[KEY_LEN];
};

/* 64 hex digits -> 32 bytes; false for anything else. */
static bool key_from_hex(const char *hex, uint8_t out[KEY_LEN])
{
    if (hex == NULL || strlen(hex) != 2 * KEY_LEN)
        return false;
    for (size_t i = 0; i < KEY_LEN; i++) {
        unsigned int byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1)
            return false;
        out[i] = (uint8_t)byte;
    }
    return true;
}

int pgw_vault_open(const char *hmac_env, const char *aes_env, bool development, pgw_vault **out,
                   bool *warned, pgw_err *err)
{
    *out = NULL;
    *warned = false;
    pgw_vault *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the vault");
    bool have =
        key_from_hex(getenv(hmac_env), v->index_key) && key_from_hex(getenv(aes_env), v->seal_key);
    if (!have && !development) {
        pgw_vault_free(v);
        return pgw_err_set(err, PGW_EINVAL,
                           "%s and %s must each hold 64 hex digits (32-byte keys) to store "
                           "phones; security.development_mode allows running without them",
                           hmac_env, aes_env);
    }
    if (!have) { /* public, fixed: a demo's phones are protected by nothing */
        memset(v->index_key, 0x11, KEY_LEN);
        memset(v->seal_key, 0x22, KEY_LEN);
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

int pgw_vault_key(const pgw_vault *v, const pgw_identity *id, pgw_identity_key *out, pgw_err *err)
{
    memset(out, 0, sizeof(*out));
    out->kind = id->kind;
    snprintf(out->scope, sizeof(out->scope), "%s", id->scope);
    if (id->kind != PGW_ID_PHONE) {
        snprintf(out->lookup, sizeof(out->lookup), "%s", id->value);
        return PGW_OK;
    }
    uint8_t mac[32];
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), v->index_key, KEY_LEN, (const uint8_t *)id->value, strlen(id->value),
             mac, &mac_len) == NULL ||
        mac_len != sizeof(mac))
        return pgw_err_set(err, PGW_EUNAVAILABLE, "cannot compute a blind index");
    pgw_hash_hex(mac, out->lookup, sizeof(out->lookup));
    return seal(v, id->value, out->lookup, out->sealed, &out->sealed_len, err);
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
