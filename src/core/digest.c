/*
 * digest.c - see digest.h.
 */
#include "digest.h"

#include "assertions.h"

#include <openssl/evp.h>
#include <pthread.h>

/* Fetched once and never freed: an algorithm handle, immutable once
 * fetched, like the EVP_sha256() table it replaces. NULL if the fetch
 * failed: then each call looks it up as before. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void pgw_sha256(const void *data, size_t len, uint8_t out[PGW_SHA256_LEN])
{
    (void)pthread_once(&sha256_once, fetch_sha256);
    const EVP_MD *md = sha256_md != NULL ? sha256_md : EVP_sha256();
    unsigned int n = 0;
    int hashed = EVP_Digest(data, len, out, &n, md, NULL);
    PGW_ASSERT(hashed == 1 && n == PGW_SHA256_LEN);
}
