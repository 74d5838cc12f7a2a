/*
 * digest.h - SHA-256 without OpenSSL's algorithm lookup at every call.
 *
 * OpenSSL 3 looks the algorithm up in its provider store (a lock and a hash
 * table) at each SHA256() and at each EVP_DigestInit_ex(ctx, EVP_sha256()):
 * about 1 us of a 1.6 us hash of a transfer on this machine, and the writer
 * hashes every transfer it appends, the API every request's key. This
 * fetches SHA-256 once per process and reuses it.
 */
#ifndef PGW_CORE_DIGEST_H
#define PGW_CORE_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define PGW_SHA256_LEN 32

/*
 * SHA-256 of `len` bytes at `data` into `out`. Thread-safe. OpenSSL fails
 * only when it cannot allocate a context, and a caller going on with a
 * digest it did not get (a key check, a fingerprint) would be worse than
 * stopping: that is an assertion failure, not a result to check.
 */
void pgw_sha256(const void *data, size_t len, uint8_t out[PGW_SHA256_LEN]);

#endif
