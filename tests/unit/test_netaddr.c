/*
 * test_netaddr.c - addresses and prefixes for http.trusted_proxies: both
 * families, IPv4-mapped IPv6 as IPv4, prefix lengths and their bounds,
 * host bits refused, matching at every boundary.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "util/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static pgw_prefix prefix(const char *text)
{
    pgw_prefix p;
    pgw_err err;
    if (pgw_prefix_parse(text, &p, &err) != PGW_OK)
        fail_msg("%s: %s", text, err.msg);
    return p;
}

static bool inside(const char *net, const char *address)
{
    pgw_prefix n = prefix(net), a;
    assert_true(pgw_address_parse(address, &a));
    return pgw_prefix_contains(&n, 1, &a);
}

static void test_matches_at_the_boundaries(void **state)
{
    (void)state;
    assert_true(inside("10.0.0.0/8", "10.255.255.255"));
    assert_false(inside("10.0.0.0/8", "11.0.0.0"));
    assert_true(inside("192.168.4.0/23", "192.168.5.9"));
    assert_false(inside("192.168.4.0/23", "192.168.6.0"));
    assert_true(inside("127.0.0.1", "127.0.0.1"));
    assert_false(inside("127.0.0.1", "127.0.0.2"));
    assert_true(inside("0.0.0.0/0", "203.0.113.5"));
    assert_false(inside("0.0.0.0/0", "::1")); /* families apart */
    assert_true(inside("fd00::/8", "fdab::1"));
    assert_false(inside("fd00::/8", "fe00::1"));
    assert_true(inside("2001:db8::/127", "2001:db8::1"));
    assert_false(inside("2001:db8::/127", "2001:db8::2"));
    assert_true(inside("::1", "::1"));
}

/* A dual-stack socket names an IPv4 peer ::ffff:a.b.c.d. */
static void test_mapped_ipv4_is_ipv4(void **state)
{
    (void)state;
    assert_true(inside("127.0.0.1", "::ffff:127.0.0.1"));
    assert_true(inside("::ffff:10.0.0.0/104", "10.1.2.3"));
    assert_false(inside("::ffff:10.0.0.0/104", "11.1.2.3"));
    pgw_prefix p = prefix("::ffff:10.0.0.0/104");
    assert_int_equal(p.len, 4);
    assert_int_equal(p.bits, 8);
}

static void test_refuses_what_is_not_a_prefix(void **state)
{
    (void)state;
    static const char *const BAD[] = {"",
                                      "localhost",
                                      "10.0.0",
                                      "10.0.0.0/",
                                      "10.0.0.0/33",
                                      "10.0.0.0/8x",
                                      "10.0.0.1/8",
                                      "::1/129",
                                      "fd00::1/8",
                                      "10.0.0.0/-1",
                                      "10.0.0.0/08000",
                                      "1.2.3.4 ",
                                      " 1.2.3.4",
                                      "::ffff:10.0.0.0/95",
                                      "[::1]",
                                      "10.0.0.0/8/8"};
    for (size_t i = 0; i < sizeof(BAD) / sizeof(BAD[0]); i++) {
        pgw_prefix p;
        pgw_err err;
        if (pgw_prefix_parse(BAD[i], &p, &err) != PGW_EINVAL)
            fail_msg("\"%s\" was taken", BAD[i]);
        assert_true(strlen(err.msg) > 0);
    }
    char longer[200];
    memset(longer, '1', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    pgw_prefix p;
    assert_false(pgw_address_parse(longer, &p));
    assert_false(pgw_address_parse("1.2.3.4, 5.6.7.8", &p));
}

/* The peer of an accepted TCP connection, as a parsed address would be;
 * a socket with no IP peer has none. */
static void test_the_peer_of_a_socket(void **state)
{
    (void)state;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(listener >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof(sa);
    assert_int_equal(bind(listener, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(listener, 1), 0);
    assert_int_equal(getsockname(listener, (struct sockaddr *)&sa, &n), 0);
    int client = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(client, (struct sockaddr *)&sa, sizeof(sa)), 0);
    int conn = accept(listener, NULL, NULL);
    assert_true(conn >= 0);
    pgw_prefix peer, want;
    assert_true(pgw_address_of_peer(conn, &peer));
    assert_true(pgw_address_parse("127.0.0.1", &want));
    assert_memory_equal(&peer, &want, sizeof(peer));
    int pair[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
    assert_false(pgw_address_of_peer(pair[0], &peer));
    assert_false(pgw_address_of_peer(listener, &peer)); /* listening: no peer */
    close(pair[0]);
    close(pair[1]);
    close(conn);
    close(client);
    close(listener);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_at_the_boundaries),
        cmocka_unit_test(test_mapped_ipv4_is_ipv4),
        cmocka_unit_test(test_refuses_what_is_not_a_prefix),
        cmocka_unit_test(test_the_peer_of_a_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
