/*
 * bench_http.c - durable purchase events per second over HTTP, with latency.
 *
 * Usage: bench_http POINTSGW_BINARY CONFIG DIR [SECONDS_PER_CASE] [CONNECTIONS...]
 *
 * Starts `pointsgw serve` (a separate process, as in production) on a fresh
 * SQLite file in DIR and a free loopback port, then for each connection
 * count (default 1, 16, 128) runs that many client threads, each with one
 * keep-alive connection, each posting unique purchase events (POST
 * /v1/events, demo admin key) as fast as the answers come back. An answer is
 * a 201 only after the event's commit is durable, so answers per second are
 * durable events per second. Prints events/s and p50/p99 latency per case.
 * The client runs on the same machine and takes CPU from the server: the
 * figures are a floor.
 *
 * PGW_BENCH_DB=postgresql://... runs the server(s) on that (empty)
 * PostgreSQL database instead, and PGW_BENCH_INSTANCES=N (1..8) starts N
 * servers on it, the clients taking them in turn, as behind a load
 * balancer. PGW_BENCH_SHOPS=1 sends every purchase to S001 (default: 4).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY           "demo-admin-key-change-me"
#define THREADS_MAX   256
#define SAMPLES_MAX   (1 << 20) /* latencies kept per thread at most */
#define RESPONSE_MAX  65536
#define INSTANCES_MAX 8

static int n_shops = 4;

typedef struct client {
    pthread_t thread;
    int port;
    int index;
    double until;
    long ok, failed;
    size_t n_samples;
    double *samples; /* seconds */
} client;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads one response; returns its status, or -1. */
static int read_response(int fd, char *buf, size_t cap)
{
    size_t have = 0;
    char *end = NULL;
    while ((end = memmem(buf, have, "\r\n\r\n", 4)) == NULL) {
        ssize_t n = recv(fd, buf + have, cap - have - 1, 0);
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
    buf[have] = '\0';
    int status = atoi(buf + 9);
    char *cl = strcasestr(buf, "content-length:");
    size_t body = cl ? (size_t)atol(cl + 15) : 0;
    size_t want = (size_t)(end + 4 - buf) + body;
    while (have < want) {
        ssize_t n = recv(fd, buf + have, cap - have - 1, 0);
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
    return status;
}

static void *run_client(void *arg)
{
    client *c = arg;
    int fd = connect_to(c->port);
    static const char *shops[] = {"S001", "S002", "S003", "S004"};
    char body[512], request[1024], response[RESPONSE_MAX];
    for (long serial = 0; fd >= 0 && now_s() < c->until; serial++) {
        int blen =
            snprintf(body, sizeof(body),
                     "{\"event_id\":\"B%d-%ld\",\"channel\":\"store\",\"shop_id\":\"%s\","
                     "\"type\":\"purchase\",\"occurred_at\":\"2026-11-24T10:15:00+08:00\","
                     "\"member\":{\"member_id\":\"M%ld\"},\"amount_fen\":12800}",
                     c->index, serial, shops[serial % n_shops], (serial * 7 + c->index) % 100000);
        int rlen = snprintf(request, sizeof(request),
                            "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                            "%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                            KEY, blen, body);
        double start = now_s();
        if (send_all(fd, request, (size_t)rlen) != 0) {
            c->failed++;
            break;
        }
        int status = read_response(fd, response, sizeof(response));
        if (status == 201)
            c->ok++;
        else
            c->failed++;
        if (status < 0)
            break;
        if (c->n_samples < SAMPLES_MAX)
            c->samples[c->n_samples++] = now_s() - start;
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_case(const int *ports, int n_ports, int connections, double seconds)
{
    static client clients[THREADS_MAX];
    double start = now_s();
    for (int i = 0; i < connections; i++) {
        clients[i] = (client){
            .port = ports[i % n_ports], .index = connections * 1000 + i, .until = start + seconds};
        clients[i].samples = malloc(SAMPLES_MAX * sizeof(double));
        pthread_create(&clients[i].thread, NULL, run_client, &clients[i]);
    }
    long ok = 0, failed = 0;
    size_t n = 0;
    for (int i = 0; i < connections; i++) {
        pthread_join(clients[i].thread, NULL);
        ok += clients[i].ok;
        failed += clients[i].failed;
        n += clients[i].n_samples;
    }
    double elapsed = now_s() - start;
    double *all = malloc((n > 0 ? n : 1) * sizeof(double));
    size_t k = 0;
    for (int i = 0; i < connections; i++) {
        memcpy(all + k, clients[i].samples, clients[i].n_samples * sizeof(double));
        k += clients[i].n_samples;
        free(clients[i].samples);
    }
    qsort(all, n, sizeof(double), compare_double);
    double p50 = n ? all[n / 2] : 0, p99 = n ? all[(n * 99) / 100] : 0;
    printf("connections %3d: %8.0f durable events/s  p50 %6.2f ms  p99 %6.2f ms  (%ld ok, %ld "
           "failed)\n",
           connections, (double)ok / elapsed, p50 * 1e3, p99 * 1e3, ok, failed);
    fflush(stdout);
    free(all);
}

/* Starts a server on `db`; returns its pid and sets *port from its first line. */
static pid_t start_server(const char *bin, const char *config, const char *db, int *port)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 2);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1); /* the request log */
        execl(bin, bin, "serve", "--config", config, "--db", db, "--listen", "127.0.0.1:0",
              (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    FILE *err = fdopen(pipefd[0], "r");
    char line[1024];
    *port = -1;
    while (*port < 0 && fgets(line, sizeof(line), err) != NULL) {
        char *p = strstr(line, "(port ");
        if (p != NULL)
            *port = atoi(p + 6);
    }
    return pid;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_http POINTSGW CONFIG DIR [SECONDS] [CONNECTIONS...]\n");
        return 2;
    }
    double seconds = argc > 4 ? atof(argv[4]) : 5.0;
    const char *pg = getenv("PGW_BENCH_DB"), *env = getenv("PGW_BENCH_INSTANCES");
    int n = env ? atoi(env) : 1;
    n_shops = getenv("PGW_BENCH_SHOPS") ? atoi(getenv("PGW_BENCH_SHOPS")) : 4;
    if (n < 1 || n > INSTANCES_MAX || (n > 1 && pg == NULL) || n_shops < 1 || n_shops > 4) {
        fprintf(stderr,
                "PGW_BENCH_INSTANCES is 1..%d (more than 1 with PGW_BENCH_DB), "
                "PGW_BENCH_SHOPS 1..4\n",
                INSTANCES_MAX);
        return 2;
    }
    char db[600];
    snprintf(db, sizeof(db), "sqlite:%s/bench-http.db", argv[3]);
    if (pg != NULL)
        snprintf(db, sizeof(db), "%s", pg);
    else
        unlink(db + 7);
    pid_t pids[INSTANCES_MAX];
    int ports[INSTANCES_MAX];
    for (int k = 0; k < n; k++) {
        ports[k] = -1;
        pids[k] = start_server(argv[1], argv[2], db, &ports[k]);
        if (pids[k] < 0 || ports[k] <= 0) {
            fprintf(stderr, "bench_http: server %d did not start\n", k);
            return 1;
        }
        printf("server pid %d on port %d\n", (int)pids[k], ports[k]);
    }
    printf("%d server(s) on %s, %d shop(s), %.1f s per case\n", n, pg ? "PostgreSQL" : "SQLite",
           n_shops, seconds);
    int cases[8] = {1, 16, 128}, n_cases = 3;
    if (argc > 5) {
        n_cases = 0;
        for (int i = 5; i < argc && n_cases < 8; i++)
            cases[n_cases++] = atoi(argv[i]);
    }
    for (int i = 0; i < n_cases; i++) {
        if (cases[i] < 1 || cases[i] > THREADS_MAX) {
            fprintf(stderr, "connections are 1..%d\n", THREADS_MAX);
            break;
        }
        run_case(ports, n, cases[i], seconds);
    }
    for (int k = 0; k < n; k++) {
        kill(pids[k], SIGTERM);
        int status = 0;
        waitpid(pids[k], &status, 0);
        printf("server %d stopped: %s\n", k,
               WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "cleanly" : "with an error");
    }
    return 0;
}
