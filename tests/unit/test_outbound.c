/*
 * test_outbound.c - the outbound worker pool: a full queue is refused at
 * once, in words naming the pool's own tasks; a stopping one as the
 * server's stop is.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "server/outbound.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

/* A task that holds its worker until the test opens the gate. */
typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int started;
    bool open;
    char thread[16]; /* the name of the thread that ran the first task */
} gate;

static void held_task(void *arg, pgw_outbound_turn turn)
{
    (void)turn;
    gate *g = arg;
    pthread_mutex_lock(&g->lock);
    if (g->started == 0)
        (void)prctl(PR_GET_NAME, g->thread, 0, 0, 0);
    g->started++;
    pthread_cond_broadcast(&g->changed);
    while (!g->open)
        pthread_cond_wait(&g->changed, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

/* An SMS pool of one worker and a queue of `cap`, its worker held by a
 * task of `g` (taken off the queue: the queue is empty again). */
static pgw_outbound *held_pool_of(gate *g, size_t cap)
{
    *g = (gate){.started = 0, .open = false, .thread = ""};
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->changed, NULL);
    pgw_outbound *pool = NULL;
    pgw_err err;
    assert_int_equal(pgw_outbound_start("SMS sends", 1, cap, &pool, &err), PGW_OK);
    assert_int_equal(pgw_outbound_submit(pool, held_task, g, &err), PGW_OK);
    pthread_mutex_lock(&g->lock);
    while (g->started == 0)
        pthread_cond_wait(&g->changed, &g->lock);
    pthread_mutex_unlock(&g->lock);
    return pool;
}

static pgw_outbound *held_pool(gate *g)
{
    return held_pool_of(g, 1);
}

/* Lets every task of `g` end. */
static void open_gate(gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->changed);
    pthread_mutex_unlock(&g->lock);
}

static void gate_destroy(gate *g)
{
    pthread_cond_destroy(&g->changed);
    pthread_mutex_destroy(&g->lock);
}

/* Regression: the pool refused a full queue with "too many WeChat calls
 * waiting" whatever it served, and the same pool type sends the SMS of
 * verification codes: an SMS backlog was told as WeChat's. A pool says
 * what its own tasks are. */
static void test_a_full_queue_names_its_pool(void **state)
{
    (void)state;
    gate g;
    pgw_outbound *pool = held_pool(&g);
    pgw_err err;
    assert_int_equal(pgw_outbound_submit(pool, held_task, &g, &err), PGW_OK); /* the one place */
    assert_int_equal(pgw_outbound_submit(pool, held_task, &g, &err), PGW_EFULL);
    assert_string_equal(err.msg, "too many SMS sends waiting");
    open_gate(&g);
    pgw_outbound_stop(pool); /* runs the queued one (as a call, or stopping) */
    assert_int_equal(g.started, 2);
    gate_destroy(&g);
}

/* Regression: every pool's workers were "pgw-outbound", so that `top -H`
 * or perf could not tell a backlog of SMS sends from WeChat's. A worker is
 * named after its pool's tasks. */
static void test_a_worker_is_named_after_its_pool(void **state)
{
    (void)state;
    gate g;
    pgw_outbound *pool = held_pool(&g);
    assert_string_equal(g.thread, "pgw-sms");
    open_gate(&g);
    pgw_outbound_stop(pool);
    gate_destroy(&g);
}

static void *stop_pool(void *pool)
{
    pgw_outbound_stop(pool);
    return NULL;
}

/* Submits task every millisecond until the pool refuses it as stopping
 * (PGW_ESTATE), 10 s at most: what the last submit answered. */
static int submit_until_stopping(pgw_outbound *pool, pgw_outbound_task task, void *arg,
                                 pgw_err *err)
{
    int rc = PGW_OK;
    for (int i = 0; i < 10000 && rc != PGW_ESTATE; i++) {
        rc = pgw_outbound_submit(pool, task, arg, err);
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    }
    return rc;
}

/* A task queued as the pool stops is refused in the words every request
 * in the server's stop is answered with. Regression: "the gateway is
 * stopping", the one place that said so. */
static void test_a_stopping_pool_says_the_server_is_stopping(void **state)
{
    (void)state;
    gate g;
    pgw_outbound *pool = held_pool(&g); /* the stop waits for its worker: the pool alive */
    pgw_err err;
    pthread_t stopper;
    assert_int_equal(pthread_create(&stopper, NULL, stop_pool, pool), 0);
    int rc = submit_until_stopping(pool, held_task, &g, &err);
    open_gate(&g);
    pthread_join(stopper, NULL);
    assert_int_equal(rc, PGW_ESTATE);
    assert_string_equal(err.msg, "the server is stopping");
    gate_destroy(&g);
}

/* A task that counts the turns it was given (read by the test's thread
 * while the worker may write). */
typedef struct turns {
    _Atomic int calls, stale, stopping;
} turns;

/* Waits up to 10 s for t to have been given a turn. */
static void wait_run(const turns *t)
{
    for (int i = 0; i < 10000 && t->calls + t->stale + t->stopping == 0; i++)
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
}

static void counted_task(void *arg, pgw_outbound_turn turn)
{
    turns *t = arg; /* one worker: no two tasks at once */
    t->calls += turn == PGW_OUTBOUND_CALL;
    t->stale += turn == PGW_OUTBOUND_STALE;
    t->stopping += turn == PGW_OUTBOUND_STOPPING;
}

/* What the stop finds queued is each run once, told the pool is stopping
 * (it must finish without calling out), before the stop returns. */
static void test_the_stop_tells_every_queued_task(void **state)
{
    (void)state;
    gate g;
    pgw_outbound *pool = held_pool(&g);
    pgw_err err;
    turns queued = {0}, late = {0};
    assert_int_equal(pgw_outbound_submit(pool, counted_task, &queued, &err), PGW_OK);
    pthread_t stopper;
    assert_int_equal(pthread_create(&stopper, NULL, stop_pool, pool), 0);
    int rc = submit_until_stopping(pool, counted_task, &late, &err); /* full until then */
    assert_int_equal(rc, PGW_ESTATE);
    open_gate(&g);
    pthread_join(stopper, NULL);
    assert_int_equal(queued.stopping, 1);
    assert_int_equal(queued.calls + queued.stale, 0);
    assert_int_equal(late.calls + late.stale + late.stopping, 0); /* refused: never queued */
    gate_destroy(&g);
}

/* A task that waited over PGW_OUTBOUND_STALE_MS is told so instead of
 * calling out; one queued just before its turn calls. (Waits 10 s.) */
static void test_a_task_waiting_too_long_is_stale(void **state)
{
    (void)state;
    gate g;
    pgw_outbound *pool = held_pool_of(&g, 2);
    pgw_err err;
    turns old = {0}, fresh = {0};
    assert_int_equal(pgw_outbound_submit(pool, counted_task, &old, &err), PGW_OK);
    nanosleep(
        &(struct timespec){.tv_sec = PGW_OUTBOUND_STALE_MS / 1000, .tv_nsec = 200 * 1000 * 1000},
        NULL);
    assert_int_equal(pgw_outbound_submit(pool, counted_task, &fresh, &err), PGW_OK);
    open_gate(&g);
    wait_run(&fresh); /* both taken before the stop, which would say stopping */
    pgw_outbound_stop(pool);
    assert_int_equal(old.stale, 1);
    assert_int_equal(old.calls + old.stopping, 0);
    assert_int_equal(fresh.calls, 1);
    assert_int_equal(fresh.stale + fresh.stopping, 0);
    gate_destroy(&g);
}

/* A name is bounded, and there is one: a refusal must name something. */
static void test_a_pool_name_is_bounded(void **state)
{
    (void)state;
    pgw_outbound *pool = (pgw_outbound *)&pool; /* overwritten with NULL on refusal */
    pgw_err err;
    char longest[PGW_OUTBOUND_NAME_MAX + 2];
    memset(longest, 'x', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    assert_int_equal(pgw_outbound_start(longest, 1, 1, &pool, &err), PGW_EINVAL);
    assert_null(pool);
    assert_int_equal(pgw_outbound_start("", 1, 1, &pool, &err), PGW_EINVAL);
    longest[PGW_OUTBOUND_NAME_MAX] = '\0'; /* the longest taken */
    assert_int_equal(pgw_outbound_start(longest, 1, 1, &pool, &err), PGW_OK);
    pgw_outbound_stop(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_full_queue_names_its_pool),
        cmocka_unit_test(test_a_worker_is_named_after_its_pool),
        cmocka_unit_test(test_a_pool_name_is_bounded),
        cmocka_unit_test(test_a_stopping_pool_says_the_server_is_stopping),
        cmocka_unit_test(test_the_stop_tells_every_queued_task),
        cmocka_unit_test(test_a_task_waiting_too_long_is_stale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
