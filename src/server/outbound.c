/*
 * outbound.c - see outbound.h.
 */
#include "outbound.h"

#include "core/assertions.h"
#include "util/clock.h"
#include "util/thread_name.h"

#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct task {
    pgw_outbound_task fn;
    void *arg;
    int64_t queued_ms; /* monotonic */
} task;

struct pgw_outbound {
    char name[PGW_OUTBOUND_NAME_MAX + 1];
    char thread_name[16]; /* "pgw-" and the name's first word, lower case */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    task *queue; /* a ring of cap tasks */
    size_t cap, head, len;
    bool stopping;
    size_t n_threads;
    pthread_t threads[PGW_OUTBOUND_THREADS_MAX];
};

/* So that `top -H` and perf tell one pool's workers from another's:
 * "WeChat calls" runs on pgw-wechat, "SMS sends" on pgw-sms. */
static void name_threads(pgw_outbound *p)
{
    memcpy(p->thread_name, "pgw-", 4);
    size_t n = 4;
    for (const char *c = p->name; *c != '\0' && *c != ' ' && n < sizeof(p->thread_name) - 1; c++)
        p->thread_name[n++] = (char)tolower((unsigned char)*c);
    p->thread_name[n] = '\0';
}

static void *worker(void *arg)
{
    pgw_outbound *p = arg;
    pgw_thread_name(p->thread_name);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->len == 0 && !p->stopping)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->len == 0)
            break; /* stopping, and nothing left to run */
        task t = p->queue[p->head];
        p->head = (p->head + 1) % p->cap;
        p->len--;
        pgw_outbound_turn turn = p->stopping ? PGW_OUTBOUND_STOPPING
                                 : pgw_monotonic_us() / 1000 - t.queued_ms > PGW_OUTBOUND_STALE_MS
                                     ? PGW_OUTBOUND_STALE
                                     : PGW_OUTBOUND_CALL;
        pthread_mutex_unlock(&p->lock);
        t.fn(t.arg, turn);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int pgw_outbound_start(const char *name, size_t threads, size_t queue_cap, pgw_outbound **out,
                       pgw_err *err)
{
    *out = NULL;
    size_t name_len = strnlen(name, PGW_OUTBOUND_NAME_MAX + 1);
    if (name_len < 1 || name_len > PGW_OUTBOUND_NAME_MAX)
        return pgw_err_set(err, PGW_EINVAL, "outbound: a name of 1..%d bytes",
                           PGW_OUTBOUND_NAME_MAX);
    if (threads < 1 || threads > PGW_OUTBOUND_THREADS_MAX || queue_cap < 1)
        return pgw_err_set(err, PGW_EINVAL, "outbound: 1..%d threads and a queue",
                           PGW_OUTBOUND_THREADS_MAX);
    pgw_outbound *p = calloc(1, sizeof(*p));
    task *queue = calloc(queue_cap, sizeof(*queue));
    if (p == NULL || queue == NULL) {
        free(p);
        free(queue);
        return pgw_err_set(err, PGW_ENOMEM, "out of memory for the outbound workers");
    }
    memcpy(p->name, name, name_len); /* calloc's NUL ends it */
    name_threads(p);
    p->queue = queue;
    p->cap = queue_cap;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    for (; p->n_threads < threads; p->n_threads++) {
        if (pthread_create(&p->threads[p->n_threads], NULL, worker, p) != 0) {
            pgw_outbound_stop(p);
            return pgw_err_set(err, PGW_EUNAVAILABLE, "outbound: cannot start a thread");
        }
    }
    *out = p;
    return PGW_OK;
}

int pgw_outbound_submit(pgw_outbound *p, pgw_outbound_task fn, void *arg, pgw_err *err)
{
    pthread_mutex_lock(&p->lock);
    int rc = p->stopping        ? pgw_err_set(err, PGW_ESTATE, "the server is stopping")
             : p->len == p->cap ? pgw_err_set(err, PGW_EFULL, "too many %s waiting", p->name)
                                : PGW_OK;
    if (rc == PGW_OK) {
        p->queue[(p->head + p->len) % p->cap] =
            (task){.fn = fn, .arg = arg, .queued_ms = pgw_monotonic_us() / 1000};
        p->len++;
        pthread_cond_signal(&p->wake);
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

void pgw_outbound_stop(pgw_outbound *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    PGW_ASSERT(p->len == 0);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    free(p->queue);
    free(p);
}
