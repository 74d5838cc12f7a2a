/*
 * http_client.h - outbound HTTP calls (WeChat, SMS providers) over libcurl.
 *
 * One blocking call at a time per calling thread: the gateway makes them
 * on its outbound worker threads, never on the service thread. Every call
 * has a deadline and a bound on the answer's size, so a provider that
 * stalls or floods cannot hold a worker or its memory.
 *
 * Secrets travel in URLs (WeChat's access_token and secret are query
 * parameters): messages here never include the URL's query.
 *
 * Connections are kept open per thread and reused by its next call to the
 * same host (one curl handle per thread, freed when the thread exits).
 * When a reused connection closes before any byte of the answer (the
 * server timed it out as we sent, or took the request and lost its
 * answer), curl sends the request again on a new one, unasked. A call is
 * therefore sent at most once unless it says it is `repeatable`: the
 * second sending is stopped before it leaves, and the call fails as a
 * timeout does, the request gone and its outcome unknown (request_sent):
 * a message sent twice is a member's notice twice, an SMS billed twice,
 * and its caller, told "sent", would never know.
 *
 * So that only that case counts as a second sending, every request goes
 * as HTTP/1.1 (never HTTP/2, whose refused streams curl retries) and whole
 * (no `Expect: 100-continue`, whose 417 answer curl also retries).
 *
 * pgw_http_client_init() must run once before any thread calls (curl's
 * global init is not thread-safe); main.c and tests do it.
 */
#ifndef PGW_UTIL_HTTP_CLIENT_H
#define PGW_UTIL_HTTP_CLIENT_H

#include "core/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_HTTP_ANSWER_MAX  (1024 * 1024)     /* bytes of an answer body we read */
#define PGW_HTTP_BODY_MAX    (2 * 1024 * 1024) /* bytes of a request body we send */
#define PGW_HTTP_TIMEOUT_MS  5000              /* default deadline of a whole call */
#define PGW_HTTP_HEADERS_MAX 8

typedef struct pgw_http_call {
    const char *method; /* "GET" or "POST" */
    const char *url;
    const char *headers[PGW_HTTP_HEADERS_MAX]; /* "Name: value", NULL-terminated early */
    const char *body;                          /* POST only; body_len bytes, at most BODY_MAX */
    size_t body_len;
    long timeout_ms; /* 0: PGW_HTTP_TIMEOUT_MS */
    /* Whether curl may send it a second time (above): only when a second
     * copy does nothing the first did not (a read, a code spent once). */
    bool repeatable;
} pgw_http_call;

typedef struct pgw_http_answer {
    /* Whether the request went out, set on failure too: false only when it
     * certainly did not (no connection: refused, unresolved, TLS failed),
     * so that nothing it would have done can have happened. */
    bool request_sent;
    /* HTTP status; 0 when none arrived. Set on PGW_ETOOLARGE and
     * PGW_ENOMEM too: the answer came, only its body was not kept. */
    long status;
    char *body; /* malloc'd, NUL-terminated; the caller frees it (pgw_http_answer_free) */
    size_t body_len;
} pgw_http_answer;

int pgw_http_client_init(pgw_err *err);
void pgw_http_client_cleanup(void);

/*
 * Makes the call. PGW_OK when an answer arrived, whatever its status;
 * PGW_EUNAVAILABLE when none did (refused, timed out, TLS failed, a
 * connection closed before the answer of a call not repeatable);
 * PGW_ETOOLARGE for an answer over PGW_HTTP_ANSWER_MAX, or a body over
 * PGW_HTTP_BODY_MAX (not sent); PGW_ENOMEM when the answer found no
 * memory. On failure *out holds nothing to free, but says whether the
 * request went out and, for an answer over the bound or without memory
 * for it, its status (a 200 came after the provider handled the request;
 * a 429 or 5xx may be a proxy's, the provider never reached).
 */
int pgw_http_do(const pgw_http_call *call, pgw_http_answer *out, pgw_err *err);

void pgw_http_answer_free(pgw_http_answer *answer);

#endif
