/*
 * http.h - the HTTP server: libwebsockets on one service thread.
 *
 * The service thread reads requests (bounded: headers, body), hands each
 * complete one to the API (api.h), and writes answers. It never waits on
 * the database: the API queues work to the writer and reader threads, whose
 * completions come back through a bounded queue and lws_cancel_service(),
 * and are matched to their waiting request by id (never by a connection
 * pointer another thread could hold). A client that left before its answer
 * was ready simply gets none; the write it asked for is durable anyway.
 *
 * Shutdown (pgw_http_shutdown, safe in a signal handler): stop accepting,
 * let the writer apply and commit what is queued, answer the clients still
 * connected, close.
 */
#ifndef PGW_SERVER_HTTP_H
#define PGW_SERVER_HTTP_H

#include "config/config.h"
#include "core/error.h"
#include "server/auth.h"

#include <stddef.h>
#include <stdio.h>

typedef struct pgw_http pgw_http;

typedef struct pgw_http_options {
    const pgw_config *cfg; /* borrowed; must outlive the server */
    const char *db_url;
    const char *listen;          /* "HOST:PORT"; port 0 picks a free one (tests) */
    size_t body_max;             /* request body bytes; 0: PGW_BODY_MAX_DEFAULT */
    int64_t body_timeout_s;      /* a body's whole, from its request's start; 0: 60 */
    int64_t keepalive_timeout_s; /* an idle connection between requests; 0: 120 */
    size_t inflight_max;         /* requests waiting on the database; 0: default */
    size_t batch_max;            /* writer batch; 0: the database's (writer.h) */
    const char *tls_cert_file;   /* PEM; with tls_key_file: HTTPS (HTTP/1.1) */
    const char *tls_key_file;
    FILE *log; /* request log lines; NULL for none */
} pgw_http_options;

/* Opens the database, starts the threads and listens. */
int pgw_http_new(const pgw_http_options *opts, pgw_http **out, pgw_err *err);

/*
 * Whether `listen` ("HOST:PORT") can be listened on here: PGW_EINVAL for a
 * malformed one, PGW_EUNAVAILABLE for an address the host does not have, a
 * port in use or one the user may not take. pgw_http_new does not ask:
 * lws 4.1 reports a vhost whose bind failed as listening, so a caller asks
 * first (serve, before it makes the database's folder).
 */
int pgw_http_check_listen(const char *listen, pgw_err *err);

/* The port actually listened on. */
int pgw_http_port(const pgw_http *http);

/* What a stop left undone: answers whose clients had not taken them
 * whole by the deadline (a client that does not read), cut off by
 * pgw_http_free, each logged "delivered": false. */
typedef struct pgw_http_stopped {
    size_t answers_cut;
    size_t changes_cut; /* of those, a write's 2xx: the change it reports is committed */
} pgw_http_stopped;

/* The seconds a stop gives the last answers (pgw_http_stopped). */
#define PGW_HTTP_STOP_ANSWERS_S 2

/* Serves until pgw_http_shutdown; then drains, says in `stopped` what it
 * could not finish, and returns PGW_OK. libwebsockets' loop failing
 * (lws_service < 0) is drained alike but PGW_EIO: no stop was asked. */
int pgw_http_run(pgw_http *http, pgw_http_stopped *stopped, pgw_err *err);

/* Asks pgw_http_run to finish. Async-signal-safe. */
void pgw_http_shutdown(pgw_http *http);

/*
 * A reload of the keys (serve's SIGHUP): hands `fresh` (pgw_auth_new's,
 * from the configuration read again) to the service thread, which swaps
 * it in between requests (pgw_auth_take_keys: the nonces stay) and closes
 * the live streams of keys it no longer has (1008). Waits till then;
 * `fresh` holds the old keys after, for the caller to free. Not on the
 * service thread. PGW_EUNAVAILABLE, nothing swapped, once
 * pgw_http_run has stopped serving.
 */
int pgw_http_reload_keys(pgw_http *http, pgw_auth *fresh, pgw_err *err);

/* The key table (pgw_api_auth): the service thread's, so serve's only
 * before pgw_http_run and once it returned (the nonces, auth.h). */
pgw_auth *pgw_http_auth(pgw_http *http);

void pgw_http_free(pgw_http *http);

#endif
