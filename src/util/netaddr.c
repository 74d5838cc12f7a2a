/*
 * netaddr.c - see netaddr.h.
 */
#include "util/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* ::ffff:a.b.c.d is how a dual-stack socket names an IPv4 peer: the same
 * address as a.b.c.d, which is what a configuration names. */
static void unmap_ipv4(pgw_prefix *p)
{
    static const uint8_t MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (p->len == 16 && memcmp(p->bytes, MAPPED, sizeof(MAPPED)) == 0 && p->bits >= 96) {
        memmove(p->bytes, p->bytes + 12, 4);
        memset(p->bytes + 4, 0, 12);
        p->len = 4;
        p->bits = (uint8_t)(p->bits - 96);
    }
}

/* out->bytes holding an address of `len` bytes: the whole of it, as IPv4 when mapped. */
static bool whole_address(pgw_prefix *out, uint8_t len)
{
    out->len = len;
    out->bits = (uint8_t)(8 * len);
    unmap_ipv4(out);
    return true;
}

bool pgw_address_parse(const char *text, pgw_prefix *out)
{
    memset(out, 0, sizeof(*out));
    if (strlen(text) > PGW_NETADDR_TEXT_MAX)
        return false;
    if (inet_pton(AF_INET, text, out->bytes) == 1)
        return whole_address(out, 4);
    return inet_pton(AF_INET6, text, out->bytes) == 1 && whole_address(out, 16);
}

bool pgw_address_of_peer(int fd, pgw_prefix *out)
{
    struct sockaddr_storage ss;
    socklen_t n = sizeof(ss);
    memset(out, 0, sizeof(*out));
    if (getpeername(fd, (struct sockaddr *)&ss, &n) != 0)
        return false;
    if (ss.ss_family == AF_INET) {
        memcpy(out->bytes, &((const struct sockaddr_in *)&ss)->sin_addr, 4);
        return whole_address(out, 4);
    }
    if (ss.ss_family != AF_INET6)
        return false;
    memcpy(out->bytes, &((const struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    return whole_address(out, 16);
}

/* Whether a's first `bits` bits are b's. */
static bool same_bits(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return false;
    return rest == 0 || ((a[whole] ^ b[whole]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static bool host_bits_zero(const pgw_prefix *p)
{
    for (unsigned i = p->bits; i < 8u * p->len; i++) {
        if (p->bytes[i / 8] & (0x80 >> (i % 8)))
            return false;
    }
    return true;
}

int pgw_prefix_parse(const char *text, pgw_prefix *out, pgw_err *err)
{
    char addr[PGW_NETADDR_TEXT_MAX + 1];
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    if (n > PGW_NETADDR_TEXT_MAX || (slash && strlen(slash) > 4))
        return pgw_err_set(err, PGW_EINVAL, "\"%.80s\" is too long for an address", text);
    memcpy(addr, text, n);
    addr[n] = '\0';
    if (!pgw_address_parse(addr, out))
        return pgw_err_set(err, PGW_EINVAL, "\"%s\" is not an IPv4 or IPv6 address", addr);
    if (slash == NULL)
        return PGW_OK;
    bool mapped = strchr(addr, ':') != NULL && out->len == 4; /* its length counts IPv6 bits */
    unsigned max = mapped ? 128 : 8u * out->len, bits = 0;
    const char *d = slash + 1;
    for (; *d >= '0' && *d <= '9' && bits <= max; d++)
        bits = bits * 10 + (unsigned)(*d - '0');
    if (d == slash + 1 || *d != '\0' || bits > max || (mapped && bits < 96))
        return pgw_err_set(err, PGW_EINVAL, "\"%s\": the prefix length must be %u..%u", text,
                           mapped ? 96 : 0, max);
    out->bits = (uint8_t)(mapped ? bits - 96 : bits);
    if (!host_bits_zero(out))
        return pgw_err_set(err, PGW_EINVAL,
                           "\"%s\" has bits set past its prefix length (a typo for another "
                           "network?)",
                           text);
    return PGW_OK;
}

bool pgw_prefix_contains(const pgw_prefix *prefixes, size_t n, const pgw_prefix *a)
{
    for (size_t i = 0; i < n; i++) {
        if (prefixes[i].len == a->len && same_bits(prefixes[i].bytes, a->bytes, prefixes[i].bits))
            return true;
    }
    return false;
}
