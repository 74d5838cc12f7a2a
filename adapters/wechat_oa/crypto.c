/*
 * crypto.c - see crypto.h.
 */
#include "crypto.h"

#include "core/assertions.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 32 /* WeChat pads to 32 bytes, not AES's 16 */

static int by_bytes(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int pgw_wx_signature(const char *const *parts, size_t n, char out[PGW_WX_SIGNATURE_HEX + 1])
{
    PGW_ASSERT(n >= 1 && n <= PGW_WX_SIGNED_PARTS);
    const char *sorted[PGW_WX_SIGNED_PARTS];
    memcpy(sorted, parts, n * sizeof(*parts));
    qsort(sorted, n, sizeof(*sorted), by_bytes);
    uint8_t digest[SHA_DIGEST_LENGTH] = {0};
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = EVP_DigestUpdate(ctx, sorted[i], strlen(sorted[i])) == 1;
    ok = ok && EVP_DigestFinal_ex(ctx, digest, NULL) == 1;
    EVP_MD_CTX_free(ctx);
    out[0] = '\0';
    if (!ok)
        return PGW_ENOMEM; /* SHA-1 over memory fails for nothing else */
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < SHA_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[PGW_WX_SIGNATURE_HEX] = '\0';
    return PGW_OK;
}

bool pgw_wx_signature_ok(const char *const *parts, size_t n, const char *given)
{
    char want[PGW_WX_SIGNATURE_HEX + 1];
    return pgw_wx_signature(parts, n, want) == PGW_OK && given != NULL &&
           strlen(given) == PGW_WX_SIGNATURE_HEX &&
           CRYPTO_memcmp(want, given, PGW_WX_SIGNATURE_HEX) == 0;
}

/* Standard base64 of len characters into out; the decoded length, or -1. */
static long base64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    if (len == 0 || len % 4 != 0 || len / 4 * 3 > cap || len > INT32_MAX)
        return -1;
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0)
        return -1;
    size_t pad = (in[len - 1] == '=') + (in[len - 2] == '=');
    return (long)n - (long)pad; /* EVP_DecodeBlock counts the padding as bytes */
}

int pgw_wx_aes_key(const char *encoding_aes_key, uint8_t key[PGW_WX_AES_KEY_LEN], pgw_err *err)
{
    char padded[48];
    uint8_t raw[36];
    size_t len = strlen(encoding_aes_key);
    bool alnum = len == 43;
    for (size_t i = 0; alnum && i < len; i++) {
        char c = encoding_aes_key[i];
        alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    }
    if (alnum) {
        memcpy(padded, encoding_aes_key, 43);
        padded[43] = '=';
    }
    if (!alnum || base64_decode(padded, 44, raw, sizeof(raw)) != PGW_WX_AES_KEY_LEN)
        return pgw_err_set(err, PGW_EINVAL, "an EncodingAESKey is 43 letters and digits");
    memcpy(key, raw, PGW_WX_AES_KEY_LEN);
    return PGW_OK;
}

/* AES-256-CBC over whole blocks, no padding of its own; false on failure. */
static bool aes_cbc(const uint8_t key[PGW_WX_AES_KEY_LEN], bool encrypt, const uint8_t *in,
                    size_t len, uint8_t *out)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, tail = 0;
    bool ok = ctx != NULL && len <= INT32_MAX &&
              EVP_CipherInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, key, encrypt ? 1 : 0) == 1 &&
              EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
              EVP_CipherUpdate(ctx, out, &n, in, (int)len) == 1 &&
              EVP_CipherFinal_ex(ctx, out + n, &tail) == 1 && (size_t)(n + tail) == len;
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

int pgw_wx_decrypt(const uint8_t key[PGW_WX_AES_KEY_LEN], const char *appid, const char *b64,
                   char *out, size_t cap, size_t *len, pgw_err *err)
{
    size_t b64_len = strlen(b64);
    size_t room = b64_len / 4 * 3;
    if (b64_len > (PGW_WX_MESSAGE_MAX + 1024) / 3 * 4 + 4)
        return pgw_err_set(err, PGW_EINVAL, "the ciphertext is longer than any message we take");
    uint8_t *raw = malloc(room + 1), *plain = malloc(room + 1);
    long n = raw && plain ? base64_decode(b64, b64_len, raw, room) : -1;
    int rc = PGW_OK;
    if (n <= 0 || n % BLOCK != 0 || !aes_cbc(key, false, raw, (size_t)n, plain))
        rc = pgw_err_set(err, PGW_EINVAL, "the ciphertext is not base64 of whole AES blocks");
    size_t pad = rc == PGW_OK ? plain[n - 1] : 0;
    if (rc == PGW_OK && (pad < 1 || pad > BLOCK || (size_t)n < 20 + pad))
        rc = pgw_err_set(err, PGW_EINVAL, "the message's padding is wrong (wrong key?)");
    size_t body = rc == PGW_OK ? (size_t)n - pad : 0, msg_len = 0;
    if (rc == PGW_OK) {
        msg_len = (size_t)plain[16] << 24 | (size_t)plain[17] << 16 | (size_t)plain[18] << 8 |
                  (size_t)plain[19];
        if (msg_len > body - 20 || msg_len + 1 > cap)
            rc = pgw_err_set(err, PGW_EINVAL, "the message's length field is wrong");
    }
    size_t id_len = rc == PGW_OK ? body - 20 - msg_len : 0;
    if (rc == PGW_OK &&
        (id_len != strlen(appid) || memcmp(plain + 20 + msg_len, appid, id_len) != 0))
        rc = pgw_err_set(err, PGW_EINVAL, "the message is for another appid");
    if (rc == PGW_OK) {
        memcpy(out, plain + 20, msg_len);
        out[msg_len] = '\0';
        *len = msg_len;
    }
    free(raw);
    free(plain);
    return rc;
}

int pgw_wx_encrypt(const uint8_t key[PGW_WX_AES_KEY_LEN], const char *appid,
                   const uint8_t random[16], const char *msg, size_t len, char *out, size_t cap,
                   pgw_err *err)
{
    size_t id_len = strlen(appid);
    if (len > PGW_WX_MESSAGE_MAX || id_len > PGW_WX_APPID_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "a message of %zu bytes is too long", len);
    size_t body = 20 + len + id_len, pad = BLOCK - body % BLOCK, total = body + pad;
    if ((total + 2) / 3 * 4 + 1 > cap)
        return pgw_err_set(err, PGW_ETOOLARGE, "no room for the encrypted message");
    uint8_t *plain = malloc(total), *cipher = malloc(total);
    int rc = plain && cipher ? PGW_OK : pgw_err_set(err, PGW_ENOMEM, "out of memory encrypting");
    if (rc == PGW_OK) {
        memcpy(plain, random, 16);
        plain[16] = (uint8_t)(len >> 24);
        plain[17] = (uint8_t)(len >> 16);
        plain[18] = (uint8_t)(len >> 8);
        plain[19] = (uint8_t)len;
        memcpy(plain + 20, msg, len);
        memcpy(plain + 20 + len, appid, id_len);
        memset(plain + body, (int)pad, pad);
        if (!aes_cbc(key, true, plain, total, cipher))
            rc = pgw_err_set(err, PGW_EIO, "AES failed");
    }
    if (rc == PGW_OK)
        EVP_EncodeBlock((unsigned char *)out, cipher, (int)total);
    free(plain);
    free(cipher);
    return rc;
}
