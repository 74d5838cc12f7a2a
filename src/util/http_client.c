/*
 * http_client.c - see http_client.h.
 */
#include "http_client.h"

#include <curl/curl.h>
#include <openssl/crypto.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/*
 * Each thread keeps one curl handle, and with it curl's connection cache:
 * a worker's next call to the same host reuses the open connection (and
 * its TLS session) instead of a TCP and TLS handshake per message. The
 * handle is the thread's own, freed when the thread exits; this key is
 * the only process-wide state here, made once.
 */
static pthread_key_t handle_key;
static pthread_once_t handle_once = PTHREAD_ONCE_INIT;
static bool handle_key_ok;

static void handle_free(void *handle)
{
    curl_easy_cleanup(handle);
}

static void handle_key_make(void)
{
    handle_key_ok = pthread_key_create(&handle_key, handle_free) == 0;
}

/* The thread's handle, reset to no options (its connections stay open);
 * *own when the caller must free it (no key: a handle per call). */
static CURL *thread_handle(bool *own)
{
    pthread_once(&handle_once, handle_key_make);
    CURL *curl = handle_key_ok ? pthread_getspecific(handle_key) : NULL;
    *own = false;
    if (curl != NULL) {
        curl_easy_reset(curl);
        return curl;
    }
    curl = curl_easy_init();
    if (curl != NULL && (!handle_key_ok || pthread_setspecific(handle_key, curl) != 0))
        *own = true;
    return curl;
}

int pgw_http_client_init(pgw_err *err)
{
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK)
        return pgw_err_set(err, PGW_EUNAVAILABLE, "libcurl: %s", curl_easy_strerror(rc));
    return PGW_OK;
}

void pgw_http_client_cleanup(void)
{
    pthread_once(&handle_once, handle_key_make);
    CURL *curl = handle_key_ok ? pthread_getspecific(handle_key) : NULL;
    if (curl != NULL) { /* the calling thread's (main): others freed theirs at exit */
        pthread_setspecific(handle_key, NULL);
        curl_easy_cleanup(curl);
    }
    curl_global_cleanup();
}

typedef struct sink {
    char *data;
    size_t len, cap;
    bool overflow;
    bool no_memory;
} sink;

static size_t sink_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    sink *s = userdata;
    size_t n = size * nmemb;
    if (n > PGW_HTTP_ANSWER_MAX - s->len) {
        s->overflow = true;
        return 0; /* curl stops the transfer */
    }
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *grown = realloc(s->data, cap);
        if (grown == NULL) {
            s->no_memory = true;
            return 0; /* curl stops the transfer */
        }
        s->data = grown;
        s->cap = cap;
    }
    memcpy(s->data + s->len, ptr, n);
    s->len += n;
    s->data[s->len] = '\0';
    return n;
}

/* The URL without its query, for messages: tokens and secrets live there. */
static void url_shown(const char *url, char *out, size_t cap)
{
    size_t n = strcspn(url, "?");
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), url);
}

/* The sendings of one call: curl's own second one (http_client.h) is
 * refused to a call not repeatable. */
typedef struct sendings {
    bool repeatable;
    int n;        /* times curl was about to send the request */
    bool refused; /* a second sending was stopped before it left */
} sendings;

/* CURLOPT_PREREQFUNCTION: curl is about to send the request, on a
 * connection made or reused; once per sending, a retry included. */
static int before_sending(void *data, char *ip, char *local_ip, int port, int local_port)
{
    (void)ip;
    (void)local_ip;
    (void)port;
    (void)local_port;
    sendings *s = data;
    s->n++;
    s->refused = s->n > 1 && !s->repeatable;
    return s->refused ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}

static bool header_add(struct curl_slist **list, const char *line)
{
    struct curl_slist *more = curl_slist_append(*list, line);
    if (more != NULL)
        *list = more;
    return more != NULL;
}

/*
 * The call's headers, and an empty "Expect:", which stops curl adding
 * `Expect: 100-continue` to a POST (libcurl 7.69 on: a body over 1 MiB;
 * before: over 1 KiB): it would send the head alone and wait for the
 * go-ahead, and a provider or proxy answering 417 has curl send the
 * request again, which the resend guard stops, so a request whose body
 * never left would fail as one that may have arrived. Each goes whole.
 */
static int request_headers(const pgw_http_call *call, struct curl_slist **out, pgw_err *err)
{
    struct curl_slist *headers = NULL;
    bool ok = true;
    for (size_t i = 0; ok && i < PGW_HTTP_HEADERS_MAX && call->headers[i] != NULL; i++)
        ok = header_add(&headers, call->headers[i]);
    if (!ok || !header_add(&headers, "Expect:")) {
        curl_slist_free_all(headers);
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for headers");
    }
    *out = headers;
    return PGW_OK;
}

static int perform(CURL *curl, const pgw_http_call *call, sink *s, sendings *sent, pgw_err *err)
{
    struct curl_slist *headers = NULL;
    int hrc = request_headers(call, &headers, err);
    if (hrc != PGW_OK)
        return hrc;
    bool post = strcmp(call->method, "POST") == 0;
    curl_easy_setopt(curl, CURLOPT_URL, call->url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L); /* worker threads: no SIGALRM */
    long timeout = call->timeout_ms ? call->timeout_ms : (long)PGW_HTTP_TIMEOUT_MS;
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout < 3000L ? timeout : 3000L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    /* HTTP/1.1 only, never HTTP/2 (which curl offers over TLS): a stream
     * the provider refuses (REFUSED_STREAM, GOAWAY) was not processed, but
     * curl's retry of it is a second sending, which the guard stops, so a
     * call the provider never took would fail as one that may have. Calls
     * go one at a time per connection: HTTP/2 would gain us nothing. */
    curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, s);
    /* A libcurl before 7.80 has no such callback: a send that must go
     * once is refused rather than sent unguarded (R4). */
    if ((curl_easy_setopt(curl, CURLOPT_PREREQFUNCTION, before_sending) != CURLE_OK ||
         curl_easy_setopt(curl, CURLOPT_PREREQDATA, sent) != CURLE_OK) &&
        !call->repeatable) {
        curl_slist_free_all(headers);
        return pgw_err_set(err, PGW_EUNAVAILABLE,
                           "this libcurl (%s) cannot guard a send against its own resending "
                           "(7.80 or later needed): not sent",
                           curl_version_info(CURLVERSION_NOW)->version);
    }
    if (post) {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, call->body ? call->body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
    }
    CURLcode rc = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    if (rc == CURLE_OK)
        return PGW_OK;
    char shown[256];
    url_shown(call->url, shown, sizeof(shown));
    if (s->overflow)
        return pgw_err_set(err, PGW_ETOOLARGE, "%s: answer over %d bytes", shown,
                           PGW_HTTP_ANSWER_MAX);
    if (s->no_memory)
        return pgw_err_set(err, PGW_ENOMEM, "%s: out of memory for the answer", shown);
    if (sent->refused)
        return pgw_err_set(err, PGW_EUNAVAILABLE,
                           "%s: the connection closed before an answer; the request may have "
                           "arrived (libcurl's resending of it was stopped)",
                           shown);
    return pgw_err_set(err, PGW_EUNAVAILABLE, "%s: %s", shown, curl_easy_strerror(rc));
}

int pgw_http_do(const pgw_http_call *call, pgw_http_answer *out, pgw_err *err)
{
    memset(out, 0, sizeof(*out));
    if (call->url == NULL || call->method == NULL ||
        (strcmp(call->method, "GET") != 0 && strcmp(call->method, "POST") != 0))
        return pgw_err_set(err, PGW_EINVAL, "an outbound call needs GET or POST and a URL");
    /* What we send is ours (a template message, an SMS): far below this. */
    if (call->body_len > PGW_HTTP_BODY_MAX)
        return pgw_err_set(err, PGW_ETOOLARGE, "an outbound body of %zu bytes is over %d",
                           call->body_len, PGW_HTTP_BODY_MAX);
    bool own = false;
    CURL *curl = thread_handle(&own);
    if (curl == NULL)
        return pgw_err_set(err, PGW_ENOMEM, "libcurl: no handle");
    sink s = {0};
    sendings sent = {.repeatable = call->repeatable};
    int rc = perform(curl, call, &s, &sent, err);
    long sent_bytes = 0; /* the request's header bytes written: 0 when it never left */
    out->request_sent = rc == PGW_OK || sent.n > 1 ||
                        curl_easy_getinfo(curl, CURLINFO_REQUEST_SIZE, &sent_bytes) != CURLE_OK ||
                        sent_bytes > 0;
    /* An answer refused part way (too large, no memory) had its head read:
     * its status tells the caller whether the provider handled the
     * request (a 200) or something before it turned it away (a proxy's
     * 429 or 503), though the body is not kept. */
    if (rc == PGW_OK || s.overflow || s.no_memory)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out->status);
    if (rc == PGW_OK) {
        if (s.data == NULL)
            s.data = calloc(1, 1);
        if (s.data == NULL)
            rc = pgw_err_set(err, PGW_ENOMEM, "out of memory for an answer");
    }
    if (own)
        curl_easy_cleanup(curl);
    if (rc != PGW_OK) {
        free(s.data);
        return rc;
    }
    out->body = s.data;
    out->body_len = s.len;
    return PGW_OK;
}

void pgw_http_answer_free(pgw_http_answer *answer)
{
    if (answer->body != NULL) /* WeChat's answers carry tokens and session keys */
        OPENSSL_cleanse(answer->body, answer->body_len);
    free(answer->body);
    answer->body = NULL;
    answer->body_len = 0;
}
