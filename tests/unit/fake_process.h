/*
 * fake_process.h - a fake provider (a script in tests/fakes) as a child process
 * of a unit test: started on a free loopback port, driven through its
 * control endpoints, stopped at the end. Shared by test_wechat_client and
 * test_sms. Include after cmocka.h (fail_msg).
 */
#ifndef PGW_TESTS_FAKE_PROCESS_H
#define PGW_TESTS_FAKE_PROCESS_H

#include "util/http_client.h"

#include <jansson.h>

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAKE_ARGS_MAX 8

typedef struct fake_process {
    char dir[64];
    char port_file[96];
    pid_t pid;
    int port;
    char base[64]; /* http://127.0.0.1:PORT */
} fake_process;

static inline void fake_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* PGW_SOURCE_DIR (ctest sets it), else the tree this file was compiled in. */
static inline void fake_source_dir(char *out, size_t cap)
{
    const char *env = getenv("PGW_SOURCE_DIR");
    static const char tail[] = "/tests/unit/fake_process.h";
    size_t n = strlen(__FILE__), t = strlen(tail);
    if (env != NULL && env[0] != '\0')
        snprintf(out, cap, "%s", env);
    else if (n > t && strcmp(__FILE__ + n - t, tail) == 0)
        snprintf(out, cap, "%.*s", (int)(n - t), __FILE__);
    else
        snprintf(out, cap, ".");
}

static inline void fake_stop(fake_process *f)
{
    if (f->pid <= 0)
        return;
    kill(f->pid, SIGTERM);
    int status = 0;
    pid_t got = 0;
    for (int i = 0; i < 500 && (got = waitpid(f->pid, &status, WNOHANG)) == 0; i++)
        fake_sleep_ms(10); /* the fakes poll for their stop every 0.5 s */
    if (got == 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, &status, 0);
    }
    f->pid = -1;
}

/* Starts `python3 <source>/<script> --port-file F <args...>` (args
 * NULL-terminated) and waits (10 s at most) for its port. 0 or -1. */
static inline int fake_start(fake_process *f, const char *script, const char *const *args)
{
    char src[512], path[640];
    const char *argv[FAKE_ARGS_MAX + 5];
    fake_source_dir(src, sizeof(src));
    snprintf(path, sizeof(path), "%s/%s", src, script);
    snprintf(f->dir, sizeof(f->dir), "/tmp/pgw-fake-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->port_file, sizeof(f->port_file), "%s/port", f->dir);
    size_t n = 0;
    argv[n++] = "python3";
    argv[n++] = path;
    argv[n++] = "--port-file";
    argv[n++] = f->port_file;
    for (size_t i = 0; args[i] != NULL && i < FAKE_ARGS_MAX; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive a test that crashes */
        if (getppid() != parent)
            _exit(1);
        execvp("python3", (char *const *)argv);
        _exit(127);
    }
    f->pid = pid;
    for (int i = 0; i < 1000; i++) { /* the port file appears atomically */
        FILE *pf = fopen(f->port_file, "r");
        if (pf != NULL) {
            int port = 0;
            int got = fscanf(pf, "%d", &port);
            fclose(pf);
            if (got == 1 && port > 0 && port < 65536) {
                f->port = port;
                snprintf(f->base, sizeof(f->base), "http://127.0.0.1:%d", port);
                return 0;
            }
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            f->pid = -1;
            fprintf(stderr, "the fake (%s) exited before listening\n", path);
            return -1;
        }
        fake_sleep_ms(10);
    }
    fake_stop(f);
    return -1;
}

/* Stops it and removes its directory. */
static inline int fake_end(fake_process *f)
{
    fake_stop(f);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A control call; body is stolen (NULL for none). The answer must be a 200
 * JSON document; the caller decrefs it. */
static inline json_t *fake_request(const fake_process *f, const char *method, const char *path,
                                   json_t *body)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", f->base, path);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    pgw_http_call hc = {.method = method, .url = url, .timeout_ms = 5000};
    if (text != NULL) {
        hc.headers[0] = "Content-Type: application/json";
        hc.body = text;
        hc.body_len = strlen(text);
    }
    pgw_http_answer answer;
    pgw_err err = {0};
    int rc = pgw_http_do(&hc, &answer, &err);
    free(text);
    if (rc != PGW_OK)
        fail_msg("fake %s %s: %s", method, path, err.msg);
    json_t *doc = json_loadb(answer.body, answer.body_len, 0, NULL);
    long status = answer.status;
    pgw_http_answer_free(&answer);
    if (status != 200 || doc == NULL) {
        json_decref(doc);
        fail_msg("fake %s %s: HTTP %ld", method, path, status);
    }
    return doc;
}

/* POSTs json_pack(fmt, ...) to a control path and checks it was taken. */
static inline void fake_control(const fake_process *f, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *body = json_vpack_ex(NULL, 0, fmt, ap);
    va_end(ap);
    if (body == NULL)
        fail_msg("fake %s: the test's body does not pack", path);
    json_decref(fake_request(f, "POST", path, body));
}

#endif
