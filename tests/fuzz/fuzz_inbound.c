/*
 * fuzz_inbound.c - libFuzzer target: what strangers send us before anything
 * vouches for it, one reader a run (the first byte picks it, the rest is
 * the input): an official account's push (plain and safe-mode envelope),
 * a safe-mode ciphertext's plaintext, an identity's text form, a phone
 * number, an X-Forwarded-For address and a query string. Each must end in
 * a clean error or in output that keeps its header's promises (bounds,
 * UTF-8, normal forms that read back the same), never a crash.
 */
#include "adapters/wechat_oa/crypto.h"
#include "adapters/wechat_oa/message.h"
#include "core/identity.h"
#include "core/utf8.h"
#include "util/netaddr.h"
#include "util/query.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* A field of a parsed push: NUL-terminated inside its buffer, UTF-8. */
static void field_ok(const char *s, size_t cap)
{
    CHECK(memchr(s, '\0', cap) != NULL && pgw_utf8_valid(s));
}

static void oa_message(const char *xml, size_t len)
{
    static pgw_oa_message m;
    pgw_err err;
    if (pgw_oa_message_parse(xml, len, &m, &err) != PGW_OK) {
        CHECK(m.to_user[0] == '\0' && m.from_user[0] == '\0' && m.msg_type[0] == '\0');
        return;
    }
    field_ok(m.to_user, sizeof(m.to_user));
    field_ok(m.from_user, sizeof(m.from_user));
    field_ok(m.msg_type, sizeof(m.msg_type));
    field_ok(m.event, sizeof(m.event));
    field_ok(m.event_key, sizeof(m.event_key));
    field_ok(m.content, sizeof(m.content));
    field_ok(m.msg_id, sizeof(m.msg_id));
    CHECK(m.to_user[0] && m.from_user[0] && m.msg_type[0] && m.create_time >= 0);
    CHECK(strspn(m.msg_id, "0123456789") == strlen(m.msg_id) && strlen(m.msg_id) <= 20);
}

static void oa_envelope(const char *xml, size_t len)
{
    static char encrypt[PGW_OA_XML_MAX + 1];
    char to_user[PGW_OA_FIELD_MAX + 1];
    pgw_err err;
    if (pgw_oa_envelope_parse(xml, len, encrypt, sizeof(encrypt), to_user, &err) == PGW_OK) {
        CHECK(encrypt[0] != '\0' && memchr(encrypt, '\0', sizeof(encrypt)) != NULL);
        field_ok(to_user, sizeof(to_user));
    }
}

/* The input as a safe-mode plaintext (random, length, message, appid and
 * the padding, none of it checked here): AES-256-CBC without padding of its
 * whole blocks, as WeChat would send them, then decrypted by ours. */
static void oa_decrypt(const uint8_t *plain, size_t len)
{
    static const char aes_key[] = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    static uint8_t cipher[PGW_WX_MESSAGE_MAX + 64];
    static char b64[sizeof(cipher) / 3 * 4 + 8], out[PGW_WX_MESSAGE_MAX + 1];
    uint8_t key[PGW_WX_AES_KEY_LEN];
    CHECK(pgw_wx_aes_key(aes_key, key, NULL) == PGW_OK);
    len -= len % 16;
    if (len == 0 || len > sizeof(cipher))
        return;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0;
    CHECK(ctx != NULL && EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, key) == 1 &&
          EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
          EVP_EncryptUpdate(ctx, cipher, &n, plain, (int)len) == 1 && (size_t)n == len);
    EVP_CIPHER_CTX_free(ctx);
    EVP_EncodeBlock((unsigned char *)b64, cipher, (int)len);
    size_t got = 0;
    pgw_err err;
    if (pgw_wx_decrypt(key, "wxb11529c136998cb6", b64, out, sizeof(out), &got, &err) == PGW_OK)
        CHECK(got < sizeof(out) && out[got] == '\0' && got + 20 + 18 <= len);
}

/* A text form that parses formats to one that parses to the same identity. */
static void identity(const char *text)
{
    pgw_identity id, again;
    char formatted[PGW_IDENTITY_TEXT_MAX + 1];
    pgw_err err;
    if (pgw_identity_parse(text, &id, &err) != PGW_OK)
        return;
    CHECK(pgw_identity_format(&id, formatted, sizeof(formatted)) == PGW_OK);
    CHECK(pgw_identity_parse(formatted, &again, &err) == PGW_OK);
    CHECK(again.kind == id.kind && strcmp(again.scope, id.scope) == 0 &&
          strcmp(again.value, id.value) == 0);
}

/* A normalised number normalises to itself, and masks. */
static void phone(const char *text)
{
    char e164[16], again[16], masked[12];
    pgw_err err;
    if (pgw_phone_normalize(text, e164, sizeof(e164), &err) != PGW_OK)
        return;
    CHECK(strlen(e164) == 14 && strncmp(e164, "+861", 4) == 0);
    CHECK(pgw_phone_normalize(e164, again, sizeof(again), &err) == PGW_OK);
    CHECK(strcmp(e164, again) == 0);
    CHECK(pgw_phone_mask(e164, masked, sizeof(masked)) == PGW_OK && strlen(masked) == 11);
}

/* A prefix holds its own first address; an address is a whole prefix. */
static void netaddr(const char *text)
{
    pgw_prefix p, a;
    pgw_err err;
    if (pgw_prefix_parse(text, &p, &err) == PGW_OK) {
        CHECK((p.len == 4 || p.len == 16) && p.bits <= 8 * p.len);
        a = p;
        a.bits = (uint8_t)(8 * p.len);
        CHECK(pgw_prefix_contains(&p, 1, &a));
    }
    if (pgw_address_parse(text, &a))
        CHECK((a.len == 4 || a.len == 16) && a.bits == 8 * a.len && pgw_prefix_contains(&a, 1, &a));
}

/* "name\0query": a value found fits and was in the query. */
static void query(const char *input, size_t len)
{
    size_t name_len = strnlen(input, len);
    if (name_len == len)
        return;
    const char *q = input + name_len + 1;
    char value[64];
    pgw_err err;
    if (pgw_query_get(q, input, value, sizeof(value), &err) == PGW_OK)
        CHECK(strlen(value) < sizeof(value) && strstr(q, value) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > PGW_OA_XML_MAX + 2)
        return 0;
    /* A NUL-terminated copy: the string readers take C strings. */
    char *text = malloc(size);
    CHECK(text != NULL);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    switch (data[0] % 7) {
    case 0:
        oa_message(text, size - 1);
        break;
    case 1:
        oa_envelope(text, size - 1);
        break;
    case 2:
        oa_decrypt(data + 1, size - 1);
        break;
    case 3:
        identity(text);
        break;
    case 4:
        phone(text);
        break;
    case 5:
        netaddr(text);
        break;
    default:
        query(text, size - 1);
        break;
    }
    free(text);
    return 0;
}
