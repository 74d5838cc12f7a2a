/*
 * wechat.c - see wechat.h.
 */
#include "wechat.h"

#include "core/digest.h"

#include "adapters/wechat/client.h"
#include "adapters/wechat_oa/crypto.h"
#include "store/store.h"
#include "util/env.h"
#include "util/query.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIGNATURE_ARG (PGW_WX_SIGNATURE_HEX + 1)
#define REPLY_MAX     (PGW_OA_CONTENT_MAX + 1024)

/* A push seen within the clock window: its nonce, timestamp and body. */
typedef struct seen_push {
    char nonce[PGW_OA_NONCE_MAX + 1];
    int64_t timestamp;
    uint8_t body_sha256[32];
} seen_push;

struct pgw_wechat {
    pgw_wx_client *client;
    pgw_store *tokens; /* the shared token cache's own connection */
    pthread_mutex_t tokens_lock;
    bool mp_ready, oa_ready, oa_aes;
    char oa_appid[PGW_ID_MAX + 1];
    char oa_token[PGW_OA_TOKEN_MAX + 1];
    uint8_t oa_key[PGW_WX_AES_KEY_LEN];
    /* The plain signature does not cover the body, so a captured query
     * could carry another body: a (nonce, timestamp) seen with one body is
     * refused with another. A ring: the oldest is forgotten first. */
    seen_push seen[PGW_OA_NONCES_KEPT];
    size_t seen_next;
};

/* ---- the shared token cache (store.h), one call at a time on its connection ---- */

static int cache_load(void *ctx, const char *appid, char token[PGW_WX_TOKEN_MAX + 1],
                      int64_t *expires_at, pgw_err *err)
{
    pgw_wechat *w = ctx;
    pthread_mutex_lock(&w->tokens_lock);
    int rc = pgw_store_token_load(w->tokens, appid, token, PGW_WX_TOKEN_MAX + 1, expires_at, err);
    pthread_mutex_unlock(&w->tokens_lock);
    return rc;
}

static int cache_lease(void *ctx, const char *appid, int64_t now, int64_t until, bool *taken,
                       pgw_err *err)
{
    pgw_wechat *w = ctx;
    pthread_mutex_lock(&w->tokens_lock);
    int rc = pgw_store_token_lease(w->tokens, appid, now, until, taken, err);
    pthread_mutex_unlock(&w->tokens_lock);
    return rc;
}

static int cache_save(void *ctx, const char *appid, const char *token, int64_t expires_at,
                      pgw_err *err)
{
    pgw_wechat *w = ctx;
    pthread_mutex_lock(&w->tokens_lock);
    int rc = pgw_store_token_save(w->tokens, appid, token, expires_at, err);
    pthread_mutex_unlock(&w->tokens_lock);
    return rc;
}

static int cache_forget(void *ctx, const char *appid, const char *token, pgw_err *err)
{
    pgw_wechat *w = ctx;
    pthread_mutex_lock(&w->tokens_lock);
    int rc = pgw_store_token_forget(w->tokens, appid, token, err);
    pthread_mutex_unlock(&w->tokens_lock);
    return rc;
}

static int cache_release(void *ctx, const char *appid, pgw_err *err)
{
    pgw_wechat *w = ctx;
    pthread_mutex_lock(&w->tokens_lock);
    int rc = pgw_store_token_release(w->tokens, appid, err);
    pthread_mutex_unlock(&w->tokens_lock);
    return rc;
}

/* ---- setup ----------------------------------------------------------------------- */

/* Whether `channel`, configured, has its variables (`set`); says every
 * one unset in one warning when not. */
static bool env_ready(const char *channel, bool set, const char *unset)
{
    if (!set)
        fprintf(stderr, "pointsgw: warning: %s is off: set %s in the environment to turn it on\n",
                channel, unset);
    return set;
}

static int add_mp(pgw_wechat *w, const pgw_wechat_channel *mp, pgw_err *err)
{
    char unset[PGW_ENV_UNSET_MAX];
    if (!mp->enabled ||
        !env_ready("channels.wechat_mp", pgw_wechat_mp_env_set(mp, unset, sizeof(unset)), unset))
        return PGW_OK;
    int rc = pgw_wx_client_add_app(w->client, mp->appid, getenv(mp->secret_env), mp->api_base, err);
    w->mp_ready = rc == PGW_OK;
    return rc;
}

int pgw_wechat_oa_check_token(const char *env, const char *token, pgw_err *err)
{
    if (strlen(token) > PGW_OA_TOKEN_MAX)
        return pgw_err_set(err, PGW_EINVAL, "%s: the callback token is longer than %d", env,
                           PGW_OA_TOKEN_MAX);
    return PGW_OK;
}

static int add_oa(pgw_wechat *w, const pgw_wechat_channel *oa, pgw_err *err)
{
    char unset[PGW_ENV_UNSET_MAX];
    if (!oa->enabled ||
        !env_ready("channels.wechat_oa", pgw_wechat_oa_env_set(oa, unset, sizeof(unset)), unset))
        return PGW_OK;
    const char *app_secret = getenv(oa->secret_env), *token = getenv(oa->token_env);
    int rc = pgw_wechat_oa_check_token(oa->token_env, token, err);
    if (rc != PGW_OK)
        return rc;
    /* Safe mode is on when an EncodingAESKey is configured (then it is set:
     * pgw_wechat_oa_env_set). */
    w->oa_aes = oa->aes_key_env[0] != '\0';
    rc = w->oa_aes ? pgw_wx_aes_key(getenv(oa->aes_key_env), w->oa_key, err) : PGW_OK;
    if (rc != PGW_OK)
        return pgw_err_prefix(err, "%s: ", oa->aes_key_env);
    rc = pgw_wx_client_add_app(w->client, oa->appid, app_secret, oa->api_base, err);
    if (rc != PGW_OK)
        return rc;
    snprintf(w->oa_appid, sizeof(w->oa_appid), "%s", oa->appid);
    snprintf(w->oa_token, sizeof(w->oa_token), "%s", token);
    w->oa_ready = true;
    return PGW_OK;
}

int pgw_wechat_new(const pgw_config *cfg, const char *db_url, pgw_wechat **out, pgw_err *err)
{
    *out = NULL;
    pgw_wechat *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for WeChat");
    pthread_mutex_init(&w->tokens_lock, NULL);
    pgw_wx_token_cache cache = {.load = cache_load,
                                .lease = cache_lease,
                                .save = cache_save,
                                .forget = cache_forget,
                                .release = cache_release,
                                .ctx = w};
    int rc = pgw_store_open(db_url, false, &w->tokens, err);
    if (rc == PGW_OK)
        rc = pgw_wx_client_new(&cache, PGW_WX_CALL_TIMEOUT_MS, &w->client, err);
    if (rc == PGW_OK)
        rc = add_mp(w, &cfg->wechat_mp, err);
    if (rc == PGW_OK)
        rc = add_oa(w, &cfg->wechat_oa, err);
    if (rc != PGW_OK) {
        pgw_wechat_free(w);
        return rc;
    }
    *out = w;
    return PGW_OK;
}

void pgw_wechat_free(pgw_wechat *w)
{
    if (w == NULL)
        return;
    pgw_wx_client_free(w->client);
    pgw_store_close(w->tokens);
    pthread_mutex_destroy(&w->tokens_lock);
    OPENSSL_cleanse(w, sizeof(*w));
    free(w);
}

bool pgw_wechat_mp_ready(const pgw_wechat *w)
{
    return w != NULL && w->mp_ready;
}

bool pgw_wechat_oa_ready(const pgw_wechat *w)
{
    return w != NULL && w->oa_ready;
}

pgw_wx_client *pgw_wechat_client(pgw_wechat *w)
{
    return w->client;
}

const char *pgw_wechat_oa_appid(const pgw_wechat *w)
{
    return w != NULL ? w->oa_appid : "";
}

/* ---- the official account's callback ---------------------------------------------- */

typedef struct signed_query {
    char signature[SIGNATURE_ARG];
    char timestamp[24];
    char nonce[PGW_OA_NONCE_MAX + 1];
} signed_query;

/* The plain signature over (token, timestamp, nonce), and a timestamp near ours. */
static int check_query(const pgw_wechat *w, const char *query, int64_t now, signed_query *q,
                       pgw_err *err)
{
    int rc = pgw_query_get(query, "signature", q->signature, sizeof(q->signature), err);
    if (rc == PGW_OK)
        rc = pgw_query_get(query, "timestamp", q->timestamp, sizeof(q->timestamp), err);
    if (rc == PGW_OK)
        rc = pgw_query_get(query, "nonce", q->nonce, sizeof(q->nonce), err);
    if (rc == PGW_ENOTFOUND)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "signature, timestamp and nonce are required");
    if (rc != PGW_OK) /* too long, twice, no value: err says which */
        return pgw_err_recode(err, PGW_EUNAUTHORIZED);
    size_t n = strlen(q->timestamp);
    if (n == 0 || n > 18 || strspn(q->timestamp, "0123456789") != n)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "timestamp must be unix seconds");
    /* WeChat's nonce is never empty; without one the signature is over the
     * token and the second alone, and a plain push's nonce check would key
     * every push of that second the same. */
    if (q->nonce[0] == '\0')
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "nonce is empty");
    int64_t t = strtoll(q->timestamp, NULL, 10);
    if (t < now - PGW_OA_CLOCK_SKEW_S || t > now + PGW_OA_CLOCK_SKEW_S)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "stale timestamp (more than %d s from ours)",
                           PGW_OA_CLOCK_SKEW_S);
    const char *parts[] = {w->oa_token, q->timestamp, q->nonce};
    if (!pgw_wx_signature_ok(parts, 3, q->signature))
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "bad signature");
    return PGW_OK;
}

int pgw_wechat_oa_echo(const pgw_wechat *w, const char *query, int64_t now, char *echostr,
                       size_t cap, pgw_err *err)
{
    signed_query q;
    if (!pgw_wechat_oa_ready(w)) /* no token: anyone could sign */
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "the official account is not configured");
    int rc = check_query(w, query, now, &q, err);
    if (rc == PGW_OK)
        rc = pgw_query_get(query, "echostr", echostr, cap, err);
    if (rc == PGW_ENOTFOUND)
        return pgw_err_set(err, PGW_EINVAL, "echostr is required");
    return rc == PGW_ETOOLARGE ? pgw_err_recode(err, PGW_EINVAL) : rc;
}

/* Safe mode: msg_signature over the ciphertext too, then decrypt for our appid. */
static int open_encrypted(const pgw_wechat *w, const char *query, const signed_query *q,
                          const char *body, size_t len, char *plain, size_t cap, size_t *plain_len,
                          pgw_err *err)
{
    char msg_signature[SIGNATURE_ARG], *encrypt = malloc(PGW_OA_XML_MAX + 1);
    if (encrypt == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory");
    int rc = pgw_query_get(query, "msg_signature", msg_signature, sizeof(msg_signature), err);
    if (rc == PGW_ENOTFOUND)
        rc = pgw_err_set(err, PGW_EUNAUTHORIZED, "msg_signature is required in safe mode");
    else if (rc != PGW_OK) /* too long, twice, no value: err says which */
        rc = pgw_err_recode(err, PGW_EUNAUTHORIZED);
    if (rc == PGW_OK)
        rc = pgw_oa_envelope_parse(body, len, encrypt, PGW_OA_XML_MAX + 1, NULL, err);
    const char *parts[] = {w->oa_token, q->timestamp, q->nonce, encrypt};
    if (rc == PGW_OK && !pgw_wx_signature_ok(parts, 4, msg_signature))
        rc = pgw_err_set(err, PGW_EUNAUTHORIZED, "bad msg_signature");
    if (rc == PGW_OK)
        rc = pgw_wx_decrypt(w->oa_key, w->oa_appid, encrypt, plain, cap, plain_len, err);
    free(encrypt);
    return rc;
}

/* A message from the future would pin its follow state (later changes
 * win) for good: CreateTime may not be ahead of our clock's window. */
static int check_message(int rc, const pgw_oa_message *m, int64_t now, pgw_err *err)
{
    if (rc == PGW_OK && m->create_time > now + PGW_OA_CLOCK_SKEW_S)
        return pgw_err_set(err, PGW_EINVAL, "CreateTime %lld is in the future",
                           (long long)m->create_time);
    return rc;
}

/* Plain mode: whether this (nonce, timestamp) came before with another
 * body. Only accepted pushes are remembered, so a forged body sent first
 * cannot spoil the genuine one's nonce. */
static bool replayed_nonce(const pgw_wechat *w, const signed_query *q, const uint8_t digest[32])
{
    int64_t t = strtoll(q->timestamp, NULL, 10);
    for (size_t i = 0; i < PGW_OA_NONCES_KEPT; i++) {
        const seen_push *p = &w->seen[i];
        if (p->timestamp == t && strcmp(p->nonce, q->nonce) == 0)
            return memcmp(p->body_sha256, digest, 32) != 0; /* the same: a redelivery */
    }
    return false;
}

static void remember_nonce(pgw_wechat *w, const signed_query *q, const uint8_t digest[32])
{
    seen_push *slot = &w->seen[w->seen_next];
    w->seen_next = (w->seen_next + 1) % PGW_OA_NONCES_KEPT;
    snprintf(slot->nonce, sizeof(slot->nonce), "%s", q->nonce);
    slot->timestamp = strtoll(q->timestamp, NULL, 10);
    memcpy(slot->body_sha256, digest, 32);
}

int pgw_wechat_oa_open(pgw_wechat *w, const char *query, const char *body, size_t len, int64_t now,
                       pgw_oa_inbound *out, pgw_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!pgw_wechat_oa_ready(w)) /* no token: anyone could sign */
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "the official account is not configured");
    signed_query q;
    int rc = check_query(w, query, now, &q, err);
    if (rc != PGW_OK)
        return rc;
    char mode[16] = "";
    rc = pgw_query_get(query, "encrypt_type", mode, sizeof(mode), err);
    if (rc != PGW_OK && rc != PGW_ENOTFOUND) /* twice, too long: never taken for absent */
        return pgw_err_recode(err, PGW_EINVAL);
    out->encrypted = rc == PGW_OK && strcmp(mode, "aes") == 0;
    if (rc == PGW_OK && !out->encrypted && strcmp(mode, "raw") != 0)
        return pgw_err_set(err, PGW_EINVAL, "encrypt_type must be aes or raw");
    /* A plain push to an account configured for safe mode is refused:
     * anyone who learnt the token could otherwise skip the encryption. */
    if (!out->encrypted && w->oa_aes)
        return pgw_err_set(err, PGW_EUNAUTHORIZED, "this account expects safe mode (aes)");
    /* Compatible mode (an account on its way to safe mode) sends the plain
     * fields beside their cipher: with no key yet, they are read as a
     * plain push is, on the query's signature. A safe-mode push has none,
     * and is refused for the fields it lacks, saying where the cause is:
     * WeChat is in safe mode, this account is not. */
    bool sealed_for_plain = out->encrypted && !w->oa_aes;
    if (sealed_for_plain)
        out->encrypted = false;
    if (!out->encrypted) { /* safe mode needs no nonces: msg_signature covers the body */
        uint8_t digest[32];
        pgw_sha256(body, len, digest);
        if (replayed_nonce(w, &q, digest))
            return pgw_err_set(err, PGW_EUNAUTHORIZED, "nonce used before with another message");
        rc = pgw_oa_message_parse(body, len, &out->msg, err);
        /* Only a body that does not read as a plain push is blamed on the
         * mode: a compatible-mode one read is refused for its own fields. */
        if (rc == PGW_EINVAL && sealed_for_plain)
            return pgw_err_prefix(err, "a safe-mode push, but this account is in plain mode (its "
                                       "configuration names no aes_key_env): ");
        rc = check_message(rc, &out->msg, now, err);
        if (rc == PGW_OK)
            remember_nonce(w, &q, digest);
        return rc;
    }
    char *plain = malloc(PGW_WX_MESSAGE_MAX + 1);
    size_t plain_len = 0;
    rc = plain ? open_encrypted(w, query, &q, body, len, plain, PGW_WX_MESSAGE_MAX + 1, &plain_len,
                                err)
               : pgw_err_set(err, PGW_ENOMEM, "out of memory");
    if (rc == PGW_OK)
        rc = check_message(pgw_oa_message_parse(plain, plain_len, &out->msg, err), &out->msg, now,
                           err);
    free(plain);
    return rc == PGW_EUNAUTHORIZED || rc == PGW_ENOMEM ? rc
           : rc != PGW_OK                              ? pgw_err_recode(err, PGW_EINVAL)
                                                       : PGW_OK;
}

/* Wraps a reply for safe mode: encrypted, signed, with a fresh nonce. */
static int seal_reply(const pgw_wechat *w, const char *xml, size_t xml_len, int64_t now, char *out,
                      size_t cap, size_t *out_len, pgw_err *err)
{
    uint8_t random[16], nonce_bytes[8];
    if (RAND_bytes(random, sizeof(random)) != 1 ||
        RAND_bytes(nonce_bytes, sizeof(nonce_bytes)) != 1)
        return pgw_err_set(err, PGW_EUNAVAILABLE, "no randomness for a reply");
    char nonce[24], timestamp[24], sig[PGW_WX_SIGNATURE_HEX + 1];
    uint64_t n = 0;
    memcpy(&n, nonce_bytes, sizeof(n));
    snprintf(nonce, sizeof(nonce), "%llu", (unsigned long long)(n % 10000000000ULL));
    snprintf(timestamp, sizeof(timestamp), "%lld", (long long)now);
    char *encrypt = malloc(PGW_OA_XML_MAX + 1);
    if (encrypt == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "out of memory");
    int rc = pgw_wx_encrypt(w->oa_key, w->oa_appid, random, xml, xml_len, encrypt,
                            PGW_OA_XML_MAX + 1, err);
    const char *parts[] = {w->oa_token, timestamp, nonce, encrypt};
    if (rc == PGW_OK && pgw_wx_signature(parts, 4, sig) != PGW_OK)
        rc = pgw_err_set(err, PGW_ENOMEM, "out of memory signing a reply");
    if (rc == PGW_OK)
        rc = pgw_oa_encrypted_reply(encrypt, sig, now, nonce, out, cap, out_len, err);
    free(encrypt);
    return rc;
}

int pgw_wechat_oa_reply(const pgw_wechat *w, const pgw_oa_inbound *in, const char *text,
                        int64_t now, char **body, size_t *len, pgw_err *err)
{
    *body = NULL;
    char *xml = malloc(REPLY_MAX), *sealed = NULL;
    size_t xml_len = 0;
    int rc = xml ? pgw_oa_text_reply(in->msg.from_user, in->msg.to_user, now, text, xml, REPLY_MAX,
                                     &xml_len, err)
                 : pgw_err_set(err, PGW_ENOMEM, "out of memory");
    if (rc == PGW_OK && in->encrypted) {
        size_t cap = 2 * REPLY_MAX + 512; /* base64 grows by a third, plus the envelope */
        sealed = malloc(cap);
        rc = sealed ? seal_reply(w, xml, xml_len, now, sealed, cap, len, err)
                    : pgw_err_set(err, PGW_ENOMEM, "out of memory");
        free(xml);
        xml = sealed;
    } else {
        *len = xml_len;
    }
    if (rc != PGW_OK) {
        free(xml);
        return rc;
    }
    *body = xml;
    return PGW_OK;
}
