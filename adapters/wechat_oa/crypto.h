/*
 * crypto.h - WeChat's message signatures and "safe mode" AES, as the
 * official account's callback (and the mini program's message push) use
 * them. Facts and vectors: ../shared/research/wechat-api.md sections 5.2-5.4
 * and 7; tests/unit/test_wechat_crypto.c replays the published vectors.
 *
 * Signatures: hex SHA-1 of the given strings sorted (byte order) and
 * concatenated: (token, timestamp, nonce) for the plain signature, plus the
 * ciphertext for msg_signature. Checked in constant time.
 *
 * Safe mode: AESKey = base64(EncodingAESKey + "="), 32 bytes; AES-256-CBC
 * with IV = the key's first 16 bytes; plaintext = 16 random bytes, the
 * message length (4 bytes, big-endian), the message, the appid; padded
 * PKCS#7-style to 32-byte blocks (1..32 bytes of value n).
 */
#ifndef PGW_ADAPTERS_WECHAT_OA_CRYPTO_H
#define PGW_ADAPTERS_WECHAT_OA_CRYPTO_H

#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_WX_AES_KEY_LEN   32
#define PGW_WX_SIGNATURE_HEX 40
#define PGW_WX_MESSAGE_MAX   65536 /* bytes of a decrypted message we accept */
#define PGW_WX_SIGNED_PARTS  4
#define PGW_WX_APPID_MAX     32

/* The signature over n (1..4) strings into out (40 hex digits and a NUL);
 * PGW_ENOMEM when OpenSSL has no memory for it. */
int pgw_wx_signature(const char *const *parts, size_t n, char out[PGW_WX_SIGNATURE_HEX + 1]);

/* Whether `given` is the signature over parts (constant time in its value). */
bool pgw_wx_signature_ok(const char *const *parts, size_t n, const char *given);

/* The AES key from a 43-character EncodingAESKey; PGW_EINVAL otherwise. */
int pgw_wx_aes_key(const char *encoding_aes_key, uint8_t key[PGW_WX_AES_KEY_LEN], pgw_err *err);

/*
 * Decrypts a base64 ciphertext into out (cap bytes, NUL-terminated; *len
 * without the NUL) and checks that it was meant for `appid`. PGW_EINVAL for
 * bad base64, padding, length or appid, with err saying which.
 */
int pgw_wx_decrypt(const uint8_t key[PGW_WX_AES_KEY_LEN], const char *appid, const char *b64,
                   char *out, size_t cap, size_t *len, pgw_err *err);

/*
 * Encrypts `msg` (len bytes) for `appid` with the given 16 random bytes
 * into base64 in out (cap bytes, NUL-terminated). PGW_ETOOLARGE when it
 * does not fit.
 */
int pgw_wx_encrypt(const uint8_t key[PGW_WX_AES_KEY_LEN], const char *appid,
                   const uint8_t random[16], const char *msg, size_t len, char *out, size_t cap,
                   pgw_err *err);

#endif
