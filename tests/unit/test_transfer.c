/*
 * test_transfer.c - canonical bytes, the SHA-256 chain, and tampering.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/digest.h"
#include "core/transfer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pgw_transfer small_transfer(void)
{
    pgw_transfer t;
    memset(&t, 0, sizeof(t));
    t.id = 1;
    t.kind = PGW_TRANSFER_EARN;
    strcpy(t.idem_key, "k");
    t.fingerprint[0] = 0xAB;
    strcpy(t.debit, "a");
    strcpy(t.credit, "b");
    t.points = 5;
    strcpy(t.shop_id, "S");
    strcpy(t.channel, "c");
    t.occurred_at = 10;
    t.recorded_at_us = 20;
    strcpy(t.reference, "r");
    strcpy(t.breakdown, "x=5");
    return t;
}

/* The layout spelled out byte by byte, independently of the encoder. */
static void test_known_bytes_and_hash(void **state)
{
    (void)state;
    static const uint8_t expected[] = {
        'P',  'G', 'W', 'T', 1,                                         /* magic, version */
        0,    0,   0,   0,   0,   0,   0,   1,                          /* id */
        1,                                                              /* kind: earn */
        0,    0,   0,   1,   'k',                                       /* idem_key */
        0xAB, 0,   0,   0,   0,   0,   0,   0,  0, 0, 0, 0, 0, 0, 0, 0, /* fingerprint ... */
        0,    0,   0,   0,   0,   0,   0,   0,  0, 0, 0, 0, 0, 0, 0, 0, /* ... 32 bytes */
        0,    0,   0,   1,   'a',                                       /* debit */
        0,    0,   0,   1,   'b',                                       /* credit */
        0,    0,   0,   0,   0,   0,   0,   5,                          /* points */
        0,    0,   0,   1,   'S',                                       /* shop_id */
        0,    0,   0,   1,   'c',                                       /* channel */
        0,    0,   0,   0,   0,   0,   0,   10,                         /* occurred_at */
        0,    0,   0,   0,   0,   0,   0,   20,                         /* recorded_at_us */
        0,    0,   0,   1,   'r',                                       /* reference */
        0,    0,   0,   3,   'x', '=', '5',                             /* breakdown */
    };
    pgw_transfer t = small_transfer();
    uint8_t buf[PGW_TRANSFER_ENCODED_MAX];
    size_t len = 0;
    assert_int_equal(pgw_transfer_encode(&t, buf, sizeof(buf), &len, NULL), PGW_OK);
    assert_int_equal(len, sizeof(expected));
    assert_memory_equal(buf, expected, sizeof(expected));
    assert_int_equal(pgw_transfer_link(&t, PGW_GENESIS_HASH, NULL), PGW_OK);
    char hex[2 * PGW_HASH_LEN + 1];
    pgw_hash_hex(t.hash, hex, sizeof(hex));
    /* python3: hashlib.sha256(bytes(32) + expected).hexdigest() */
    assert_string_equal(hex, "6fc699d7b830a69a390c219f6e0c0f6b3ad7f209cee07f181aed38b7ff7a9de0");
    assert_int_equal(pgw_transfer_encode(&t, buf, 100, &len, NULL), PGW_EINVAL);
}

/* FIPS 180-2's vectors, the empty input, and the same hash from many
 * threads at once (the algorithm is fetched once, by whichever is first). */
static void *hash_abc(void *out)
{
    pgw_sha256("abc", 3, out);
    return out;
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    static const char *const abc =
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    pthread_t threads[8];
    uint8_t digests[8][PGW_SHA256_LEN];
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, hash_abc, digests[i]), 0);
    char hex[2 * PGW_SHA256_LEN + 1];
    for (int i = 0; i < 8; i++) {
        void *ok = NULL;
        assert_int_equal(pthread_join(threads[i], &ok), 0);
        assert_ptr_equal(ok, digests[i]);
        pgw_hash_hex(digests[i], hex, sizeof(hex));
        assert_string_equal(hex, abc);
    }
    uint8_t d[PGW_SHA256_LEN];
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    pgw_sha256(two_blocks, strlen(two_blocks), d);
    pgw_hash_hex(d, hex, sizeof(hex));
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    pgw_sha256("", 0, d);
    pgw_hash_hex(d, hex, sizeof(hex));
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_length_prefixes_make_encoding_injective(void **state)
{
    (void)state;
    pgw_transfer a = small_transfer(), b = small_transfer();
    strcpy(a.debit, "ab");
    strcpy(a.credit, "c");
    strcpy(b.debit, "a");
    strcpy(b.credit, "bc");
    assert_int_equal(pgw_transfer_link(&a, PGW_GENESIS_HASH, NULL), PGW_OK);
    assert_int_equal(pgw_transfer_link(&b, PGW_GENESIS_HASH, NULL), PGW_OK);
    assert_memory_not_equal(a.hash, b.hash, PGW_HASH_LEN);
}

static void test_validate(void **state)
{
    (void)state;
    pgw_transfer t = small_transfer();
    pgw_err err;
    assert_int_equal(pgw_transfer_validate(&t, &err), PGW_OK);
    t.points = PGW_POINTS_MAX;
    assert_int_equal(pgw_transfer_validate(&t, &err), PGW_OK);
    pgw_transfer bad[8];
    for (size_t i = 0; i < 8; i++)
        bad[i] = small_transfer();
    bad[0].points = 0;
    bad[1].points = -5;
    bad[2].points = PGW_POINTS_MAX + 1;
    strcpy(bad[3].credit, "a");
    bad[4].debit[0] = '\0';
    memset(bad[5].reference, 'x', sizeof(bad[5].reference));
    bad[6].kind = (pgw_transfer_kind)99;
    bad[7].id = 0;
    for (size_t i = 0; i < 8; i++) {
        pgw_err_clear(&err);
        if (pgw_transfer_validate(&bad[i], &err) != PGW_EINVAL || err.msg[0] == '\0')
            fail_msg("case %zu accepted", i);
    }
    pgw_transfer_kind k;
    assert_int_equal(pgw_transfer_kind_parse("reversal", &k), PGW_OK);
    assert_int_equal(k, PGW_TRANSFER_REVERSAL);
    assert_string_equal(pgw_transfer_kind_name(PGW_TRANSFER_EXPIRE), "expire");
    assert_int_equal(pgw_transfer_kind_parse("gift", &k), PGW_EINVAL);
}

#define CHAIN 1000

static pgw_transfer *make_chain(void)
{
    pgw_transfer *chain = calloc(CHAIN, sizeof(*chain));
    assert_non_null(chain);
    const uint8_t *prev = PGW_GENESIS_HASH;
    for (size_t i = 0; i < CHAIN; i++) {
        pgw_transfer *t = &chain[i];
        t->id = (int64_t)i + 1;
        t->kind = (pgw_transfer_kind)(1 + i % 7);
        snprintf(t->idem_key, sizeof(t->idem_key), "store:S001:E%zu", i);
        t->fingerprint[i % 32] = (uint8_t)i;
        snprintf(t->debit, sizeof(t->debit), "shop:S%03zu:issued", i % 8);
        snprintf(t->credit, sizeof(t->credit), "member:M%zu", i % 50);
        t->points = 1 + (int64_t)(i * 37 % 1000);
        strcpy(t->shop_id, "S001");
        strcpy(t->channel, "store");
        t->occurred_at = 1795486500 + (int64_t)i;
        t->recorded_at_us = t->occurred_at * 1000000;
        snprintf(t->reference, sizeof(t->reference), "R%zu", i);
        snprintf(t->breakdown, sizeof(t->breakdown), "format:retail=%lld", (long long)t->points);
        assert_int_equal(pgw_transfer_link(t, prev, NULL), PGW_OK);
        prev = t->hash;
    }
    return chain;
}

static void test_chain_verifies_whole_and_in_pages(void **state)
{
    (void)state;
    pgw_transfer *chain = make_chain();
    uint8_t last_whole[PGW_HASH_LEN], last_paged[PGW_HASH_LEN];
    size_t bad = 0;
    assert_int_equal(pgw_chain_verify(chain, CHAIN, PGW_GENESIS_HASH, 0, last_whole, &bad, NULL),
                     PGW_OK);
    assert_memory_equal(last_whole, chain[CHAIN - 1].hash, PGW_HASH_LEN);
    memcpy(last_paged, PGW_GENESIS_HASH, PGW_HASH_LEN);
    for (size_t start = 0; start < CHAIN; start += 137) {
        size_t n = CHAIN - start < 137 ? CHAIN - start : 137;
        assert_int_equal(
            pgw_chain_verify(chain + start, n, last_paged, (int64_t)start, last_paged, &bad, NULL),
            PGW_OK);
    }
    assert_memory_equal(last_whole, last_paged, PGW_HASH_LEN);
    free(chain);
}

typedef void (*tamper_fn)(pgw_transfer *t);
static void t_points(pgw_transfer *t)
{
    t->points++;
}
static void t_debit(pgw_transfer *t)
{
    t->debit[0] = 'x';
}
static void t_credit(pgw_transfer *t)
{
    strcat(t->credit, "0");
}
static void t_kind(pgw_transfer *t)
{
    t->kind = t->kind == 1 ? 2 : 1;
}
static void t_key(pgw_transfer *t)
{
    t->idem_key[0] = 'X';
}
static void t_fingerprint(pgw_transfer *t)
{
    t->fingerprint[31] ^= 1;
}
static void t_shop(pgw_transfer *t)
{
    t->shop_id[3] = '2';
}
static void t_channel(pgw_transfer *t)
{
    strcpy(t->channel, "sms");
}
static void t_occurred(pgw_transfer *t)
{
    t->occurred_at--;
}
static void t_recorded(pgw_transfer *t)
{
    t->recorded_at_us++;
}
static void t_reference(pgw_transfer *t)
{
    t->reference[0] = 'Q';
}
static void t_breakdown(pgw_transfer *t)
{
    t->breakdown[0] = 'F';
}
static void t_prev(pgw_transfer *t)
{
    t->prev_hash[0] ^= 0x80;
}
static void t_hash(pgw_transfer *t)
{
    t->hash[5] ^= 1;
}
static void t_id(pgw_transfer *t)
{
    t->id += 1;
}

static void test_tampering_any_field_is_caught(void **state)
{
    (void)state;
    static const tamper_fn tampers[] = {
        t_points,   t_debit,    t_credit,    t_kind,      t_key,  t_fingerprint, t_shop, t_channel,
        t_occurred, t_recorded, t_reference, t_breakdown, t_prev, t_hash,        t_id};
    pgw_transfer *chain = make_chain();
    for (size_t i = 0; i < sizeof(tampers) / sizeof(tampers[0]); i++) {
        pgw_transfer saved = chain[500];
        tampers[i](&chain[500]);
        size_t bad = 0;
        pgw_err err;
        assert_int_equal(pgw_chain_verify(chain, CHAIN, PGW_GENESIS_HASH, 0, NULL, &bad, &err),
                         PGW_ECONFLICT);
        if (bad != 500 || strstr(err.msg, "transfer 50") == NULL)
            fail_msg("tamper %zu: bad %zu, \"%s\"", i, bad, err.msg);
        chain[500] = saved;
    }
    /* Deleting, swapping or duplicating entries breaks the chain too. */
    size_t bad = 0;
    pgw_transfer saved = chain[500];
    memmove(&chain[500], &chain[501], (CHAIN - 501) * sizeof(*chain));
    assert_int_equal(pgw_chain_verify(chain, CHAIN - 1, PGW_GENESIS_HASH, 0, NULL, &bad, NULL),
                     PGW_ECONFLICT);
    assert_int_equal(bad, 500);
    memmove(&chain[501], &chain[500], (CHAIN - 501) * sizeof(*chain));
    chain[500] = saved;
    pgw_transfer a = chain[10];
    chain[10] = chain[11];
    chain[11] = a;
    assert_int_equal(pgw_chain_verify(chain, CHAIN, PGW_GENESIS_HASH, 0, NULL, &bad, NULL),
                     PGW_ECONFLICT);
    assert_int_equal(bad, 10);
    chain[11] = chain[10];
    assert_int_equal(pgw_chain_verify(chain, CHAIN, PGW_GENESIS_HASH, 0, NULL, &bad, NULL),
                     PGW_ECONFLICT);
    free(chain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_bytes_and_hash),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_length_prefixes_make_encoding_injective),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_chain_verifies_whole_and_in_pages),
        cmocka_unit_test(test_tampering_any_field_is_caught),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
