/*
 * test_peer_limit.c - connections per client address: the limit, what
 * counts as one address (IPv6 by its /64, IPv4-mapped as IPv4), releases,
 * a full table, and the table against a plain model through tens of
 * thousands of takes and releases in random order.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "rng.h"
#include "server/peer_limit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pgw_prefix addr(const char *text)
{
    pgw_prefix p;
    if (!pgw_address_parse(text, &p))
        fail_msg("%s is no address", text);
    return p;
}

static pgw_peer_limit *limit(uint32_t per_address, uint64_t seed)
{
    pgw_peer_limit *l = NULL;
    pgw_err err;
    if (pgw_peer_limit_new(per_address, seed, &l, &err) != PGW_OK)
        fail_msg("%s", err.msg);
    return l;
}

static void test_an_address_holds_its_limit(void **state)
{
    (void)state;
    pgw_peer_limit *l = limit(3, 1);
    pgw_prefix a = addr("192.0.2.7"), b = addr("192.0.2.8");
    for (int i = 0; i < 3; i++)
        assert_int_equal(pgw_peer_limit_take(l, &a), PGW_PEER_TAKEN);
    assert_int_equal(pgw_peer_limit_take(l, &a), PGW_PEER_OVER);
    assert_int_equal(pgw_peer_limit_held(l, &a), 3); /* the refused one is not counted */
    assert_int_equal(pgw_peer_limit_take(l, &b), PGW_PEER_TAKEN); /* another address: its own */
    pgw_peer_limit_release(l, &a);
    assert_int_equal(pgw_peer_limit_take(l, &a), PGW_PEER_TAKEN); /* one closed: room again */
    assert_int_equal(pgw_peer_limit_take(l, &a), PGW_PEER_OVER);
    for (int i = 0; i < 3; i++)
        pgw_peer_limit_release(l, &a);
    pgw_peer_limit_release(l, &b);
    assert_int_equal(pgw_peer_limit_held(l, &a), 0);
    assert_int_equal(pgw_peer_limit_addresses(l), 0);
    pgw_peer_limit_free(l);
}

static void test_what_one_address_is(void **state)
{
    (void)state;
    pgw_peer_limit *l = limit(2, 7);
    /* IPv6: the /64, whatever the rest */
    pgw_prefix v6a = addr("2001:db8:1:2::1"), v6b = addr("2001:db8:1:2:ffff:ffff:ffff:fffe");
    pgw_prefix v6other = addr("2001:db8:1:3::1");
    assert_int_equal(pgw_peer_limit_take(l, &v6a), PGW_PEER_TAKEN);
    assert_int_equal(pgw_peer_limit_take(l, &v6b), PGW_PEER_TAKEN);
    assert_int_equal(pgw_peer_limit_take(l, &v6a), PGW_PEER_OVER);
    assert_int_equal(pgw_peer_limit_take(l, &v6other), PGW_PEER_TAKEN);
    /* IPv4 alone, and as IPv4-mapped IPv6 the same address */
    pgw_prefix v4 = addr("10.0.0.1"), mapped = addr("::ffff:10.0.0.1");
    pgw_prefix v4next = addr("10.0.0.2");
    assert_int_equal(pgw_peer_limit_take(l, &v4), PGW_PEER_TAKEN);
    assert_int_equal(pgw_peer_limit_take(l, &mapped), PGW_PEER_TAKEN);
    assert_int_equal(pgw_peer_limit_take(l, &v4), PGW_PEER_OVER);
    assert_int_equal(pgw_peer_limit_take(l, &v4next), PGW_PEER_TAKEN);
    /* an IPv6 /64 whose first bytes spell an IPv4 address is not it */
    pgw_prefix lookalike = addr("::a00:1:0:0");
    assert_int_equal(pgw_peer_limit_held(l, &lookalike), 0);
    assert_int_equal(pgw_peer_limit_addresses(l), 4);
    pgw_peer_limit_free(l);
}

static void test_refuses_a_limit_out_of_range(void **state)
{
    (void)state;
    const uint32_t bad[] = {0, PGW_PEER_PER_ADDRESS_MAX + 1};
    for (size_t i = 0; i < 2; i++) {
        pgw_peer_limit *l = (pgw_peer_limit *)&l;
        pgw_err err;
        assert_int_equal(pgw_peer_limit_new(bad[i], 0, &l, &err), PGW_EINVAL);
        assert_null(l);
        assert_non_null(strstr(err.msg, "1..65536"));
    }
}

static pgw_prefix nth_v4(uint32_t n)
{
    pgw_prefix p = {.len = 4, .bits = 32};
    for (int i = 0; i < 4; i++)
        p.bytes[i] = (uint8_t)(n >> (24 - 8 * i));
    return p;
}

/* Past PGW_PEER_ADDRESSES_MAX addresses a new one is let in uncounted;
 * those counted keep their limit, and a freed address makes room. */
static void test_a_full_table_lets_new_addresses_in_uncounted(void **state)
{
    (void)state;
    pgw_peer_limit *l = limit(1, 99);
    for (uint32_t n = 0; n < PGW_PEER_ADDRESSES_MAX; n++) {
        pgw_prefix a = nth_v4(n);
        assert_int_equal(pgw_peer_limit_take(l, &a), PGW_PEER_TAKEN);
    }
    pgw_prefix one_more = nth_v4(PGW_PEER_ADDRESSES_MAX), first = nth_v4(0);
    assert_int_equal(pgw_peer_limit_take(l, &one_more), PGW_PEER_UNCOUNTED);
    assert_int_equal(pgw_peer_limit_take(l, &first), PGW_PEER_OVER);
    pgw_peer_limit_release(l, &first);
    assert_int_equal(pgw_peer_limit_take(l, &one_more), PGW_PEER_TAKEN);
    assert_int_equal(pgw_peer_limit_addresses(l), PGW_PEER_ADDRESSES_MAX);
    pgw_peer_limit_free(l);
}

/* The table against a count per address kept in a plain array: takes and
 * releases in random order, with addresses from a few /24s and /64s so
 * that runs in the table form and are emptied from their middles. */
static void test_agrees_with_a_model(void **state)
{
    (void)state;
    enum { ADDRESSES = 40000, STEPS = 400000, PER = 3 };
    uint32_t *model = calloc(ADDRESSES, sizeof(*model));
    pgw_prefix *addrs = calloc(ADDRESSES, sizeof(*addrs));
    assert_non_null(model);
    assert_non_null(addrs);
    for (uint32_t i = 0; i < ADDRESSES; i++) {
        char text[64];
        if (i % 2 == 0)
            snprintf(text, sizeof(text), "10.%u.%u.%u", i % 7, (i / 7) % 256, i / 1792);
        else
            snprintf(text, sizeof(text), "2001:db8:%x:%x::%x", i % 5, i / 5, i);
        addrs[i] = addr(text);
    }
    uint64_t rng = 12345;
    pgw_peer_limit *l = limit(PER, 42);
    size_t live = 0;
    for (uint32_t step = 0; step < STEPS; step++) {
        uint32_t i = (uint32_t)(rng_next(&rng) % ADDRESSES);
        bool take = model[i] == 0 || (model[i] < PER + 1 && rng_next(&rng) % 2 == 0);
        if (take) {
            pgw_peer_verdict v = pgw_peer_limit_take(l, &addrs[i]);
            assert_int_equal(v, model[i] < PER ? PGW_PEER_TAKEN : PGW_PEER_OVER);
            live += model[i] == 0;
            model[i] += v == PGW_PEER_TAKEN;
        } else {
            pgw_peer_limit_release(l, &addrs[i]);
            live -= --model[i] == 0;
        }
        if (step % 9973 == 0)
            for (uint32_t j = 0; j < ADDRESSES; j++)
                assert_int_equal(pgw_peer_limit_held(l, &addrs[j]), model[j]);
        assert_int_equal(pgw_peer_limit_addresses(l), live);
    }
    for (uint32_t i = 0; i < ADDRESSES; i++)
        while (model[i] > 0) {
            pgw_peer_limit_release(l, &addrs[i]);
            model[i]--;
        }
    assert_int_equal(pgw_peer_limit_addresses(l), 0);
    free(model);
    free(addrs);
    pgw_peer_limit_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_an_address_holds_its_limit),
        cmocka_unit_test(test_what_one_address_is),
        cmocka_unit_test(test_refuses_a_limit_out_of_range),
        cmocka_unit_test(test_a_full_table_lets_new_addresses_in_uncounted),
        cmocka_unit_test(test_agrees_with_a_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
