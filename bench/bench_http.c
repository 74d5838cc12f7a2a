/*
 * bench_http.c - durable purchase events per second over HTTP, with latency.
 *
 * Usage: bench_http POINTSGW_BINARY CONFIG DIR [SECONDS_PER_CASE] [CONNECTIONS...]
 *
 * Starts `pointsgw serve` (a separate process, as in production) on a fresh
 * SQLite file in DIR and a free loopback port, then for each connection
 * count (default 1, 16, 128; at most 256) opens that many keep-alive
 * connections, each posting unique purchase events (POST /v1/events, demo
 * admin key) as fast as the answers come back: a closed loop, at most one
 * request outstanding per connection. An answer is a 201 only after the
 * event's commit is durable, so answers per second are durable events per
 * second. Prints events/s and p50/p99 latency per case. A request's latency
 * runs from just before its send to the last byte of its answer (headers and
 * Content-Length body); only a 201 counts as ok; a connection that fails
 * (connect, send, receive, a malformed answer) counts one failure and stops.
 * When the case's time is up no new request is sent, and the requests in
 * flight are completed and counted (their time is in the case's elapsed
 * time, as it always was); one still unanswered DRAIN_S later is abandoned
 * and counted as failed.
 *
 * The client runs on the same machine and takes CPU from the server, so the
 * figures are a floor. To keep that share small the connections are driven
 * by a few threads (default 1; PGW_BENCH_CLIENT_THREADS=1..8), each
 * multiplexing its share of them with epoll over non-blocking sockets. One
 * blocking thread per connection, as before, meant up to 256 threads and a
 * wake-up and context switch per answer, on a 2-core machine whose cores
 * the server being measured needs. Here an answer costs one recv, the next
 * request's send and a share of an epoll_wait that usually reports several
 * sockets; at 128 connections that about halved the client's own CPU per
 * request (one 3 s run each: 0.032 to 0.018 CPU-seconds per 1000).
 * Level-triggered: one recv per readiness suffices (epoll reports again what
 * is left), where edge-triggered would need a further recv to see EAGAIN.
 * EPOLLOUT is armed only while a request is partly sent.
 *
 * PGW_BENCH_DB=postgresql://... runs the server(s) on that (empty)
 * PostgreSQL database instead, and PGW_BENCH_INSTANCES=N (1..8) starts N
 * servers on it, the connections taking them in turn, as behind a load
 * balancer. PGW_BENCH_SHOPS=1 sends every purchase to S001 (default: 4).
 * A purchase's member is M((serial * 7 + connection) % PGW_BENCH_MEMBERS)
 * (default 100,000; `connection` is the case's connections * 1000 plus the
 * connection's number): the serials of all connections overlap, so a run
 * reaches only about serial * 7 + connections members, and most purchases
 * are returning members', as a mall's are (5 s at 128 connections, 102,085
 * purchases: 6,276 members, 6% of the purchases enrolled one; 20 s:
 * 22,193 members of 367,054). PGW_BENCH_MEMBERS=N bounds the members
 * further. PGW_BENCH_NEW_MEMBERS=1 gives every purchase a member of its
 * own instead (M0, M1, ... in the order the requests are made, across all
 * cases of the run), each a first purchase's work (the member's row, its
 * bonus transfer). Each case prints how many of its purchases enrolled
 * their member (at 1 connection all, at 16 about 40%, at 128 about 5%).
 *
 * PGW_BENCH_HEALTH=1 sends `GET /healthz` instead, answered by the service
 * thread without the database (only a 200 counts): the HTTP layer's own
 * ceiling, what is left of the machine for events once the kernel's TCP,
 * libwebsockets and the client have taken theirs.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY                "demo-admin-key-change-me"
#define CONNECTIONS_MAX    256
#define CLIENT_THREADS_MAX 8
#define SAMPLES_MAX        (1 << 20) /* latencies kept per client thread at most */
#define REQUEST_MAX        1024
#define HEAD_MAX           8192      /* an answer's status line and headers, bytes */
#define BODY_MAX           (1 << 20) /* an answer's body (counted, not kept), bytes */
#define DRAIN_S            10.0      /* wait for answers in flight after a case, s */
#define EVENTS_MAX         64        /* epoll events taken per wait */
#define INSTANCES_MAX      8

static int n_shops = 4;
static long n_members = 100000; /* PGW_BENCH_MEMBERS */
static int n_client_threads = 1;
static bool new_members;            /* PGW_BENCH_NEW_MEMBERS=1: a member of its own a purchase */
static atomic_long next_new_member; /* the next one's number, across threads and cases */
/* One bit a member of M0..M(n_members-1): set at its first purchase answered
 * 201 in this run (the database is new at its start), so each case can say
 * how many of its purchases enrolled their member. */
static atomic_uchar *members_seen;
static bool health_only; /* PGW_BENCH_HEALTH=1: GET /healthz, not events */

/* One keep-alive connection and its one request in flight. */
typedef struct conn {
    int fd; /* -1 once it has stopped */
    int port;
    int index;     /* names its events: B<index>-<serial> */
    long serial;   /* requests answered so far: the one in flight's number */
    long member;   /* the request in flight's: M<member> */
    double start;  /* when the request in flight began to be sent */
    bool want_out; /* EPOLLOUT armed: the request is partly sent */
    char request[REQUEST_MAX];
    size_t request_len, sent;
    char head[HEAD_MAX]; /* the answer's headers; then scratch for its body */
    size_t have;         /* bytes of head[] filled while the headers come */
    size_t head_len;     /* 0 until "\r\n\r\n" has come */
    size_t body_left;    /* body bytes still to come, once head_len > 0 */
    int status;
} conn;

/* One client thread, its epoll set and its share of the connections. */
typedef struct worker {
    pthread_t thread;
    conn *conns;
    int n_conns;
    int n_open;
    int epfd;
    double until; /* no request is sent after this */
    long ok, failed;
    long firsts; /* of ok: purchases that enrolled their member */
    size_t n_samples;
    double *samples; /* seconds */
} worker;

static double now_s(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        abort(); /* CLOCK_MONOTONIC always exists on Linux: nothing to measure without it */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void close_fd(int fd)
{
    if (close(fd) != 0)
        perror("bench_http: close");
}

/* A connected, non-blocking, TCP_NODELAY socket to 127.0.0.1:port, or -1. The
   connect itself blocks: on loopback it completes at once, and it spares the
   event loop a connecting state. */
static int connect_to(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("bench_http: socket");
        return -1;
    }
    int one = 1, flags = -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        (flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        perror("bench_http: connect");
        close_fd(fd);
        return -1;
    }
    return fd;
}

/* Writes c's next request: a unique event id, members and shops spread. */
static void build_request(conn *c)
{
    static const char *const shops[] = {"S001", "S002", "S003", "S004"};
    char body[512];
    c->member = new_members ? atomic_fetch_add(&next_new_member, 1)
                            : (c->serial * 7 + c->index) % n_members;
    int blen = snprintf(body, sizeof(body),
                        "{\"event_id\":\"B%d-%ld\",\"channel\":\"store\",\"shop_id\":\"%s\","
                        "\"type\":\"purchase\",\"occurred_at\":\"2026-11-24T10:15:00+08:00\","
                        "\"member\":{\"member_id\":\"M%ld\"},\"amount_fen\":12800}",
                        c->index, c->serial, shops[c->serial % n_shops], c->member);
    int rlen = snprintf(c->request, sizeof(c->request),
                        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                        "%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                        KEY, blen, body);
    if (health_only)
        rlen = snprintf(c->request, sizeof(c->request),
                        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    /* Both fit by far (bounded numbers), so neither length is ever truncated. */
    c->request_len = (size_t)rlen;
}

/* Arms or disarms EPOLLOUT on c; 0 or -1. */
static int watch_out(worker *w, conn *c, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        perror("bench_http: epoll_ctl");
        return -1;
    }
    c->want_out = out;
    return 0;
}

/* Sends what is left of c's request. Returns 0 when it is all sent or the
   socket is full (EPOLLOUT then says when to go on), -1 when c failed. */
static int send_rest(worker *w, conn *c)
{
    while (c->sent < c->request_len) {
        ssize_t n = send(c->fd, c->request + c->sent, c->request_len - c->sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return c->want_out ? 0 : watch_out(w, c, true);
        if (n <= 0)
            return -1;
        c->sent += (size_t)n;
    }
    return c->want_out ? watch_out(w, c, false) : 0;
}

/* Starts c's next request; 0 or -1 (c failed). */
static int start_request(worker *w, conn *c)
{
    build_request(c);
    c->sent = c->have = c->head_len = c->body_left = 0;
    c->status = 0;
    c->start = now_s();
    return send_rest(w, c);
}

/* The value of a Content-Length header line (name included, no CRLF), or
   -1 when it is not a plain decimal number up to BODY_MAX. */
static long content_length(const char *line, size_t len)
{
    size_t i = 15; /* strlen("content-length:") */
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i == len || line[i] < '0' || line[i] > '9')
        return -1;
    long value = 0;
    for (; i < len && line[i] >= '0' && line[i] <= '9'; i++) {
        value = value * 10 + (line[i] - '0');
        if (value > BODY_MAX)
            return -1;
    }
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    return i == len ? value : -1;
}

/* Reads the status and the body length from c's headers (head[0..head_len),
   ending in "\r\n\r\n"); 0 or -1 when they are malformed. No Content-Length
   means no body: the server always sends one. */
static int parse_head(conn *c)
{
    const char *h = c->head;
    if (c->head_len < 16 || memcmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ')
        return -1;
    c->status = 0;
    for (int i = 9; i < 12; i++) {
        if (h[i] < '0' || h[i] > '9')
            return -1;
        c->status = c->status * 10 + (h[i] - '0');
    }
    c->body_left = 0;
    const char *end = h + c->head_len - 2; /* the final empty line's CRLF */
    const char *line = (const char *)memmem(h, c->head_len, "\r\n", 2) + 2;
    while (line < end) {
        const char *eol = memmem(line, (size_t)(end - line) + 2, "\r\n", 2);
        size_t len = (size_t)(eol - line);
        if (len >= 15 && strncasecmp(line, "content-length:", 15) == 0) {
            long n = content_length(line, len);
            if (n < 0)
                return -1;
            c->body_left = (size_t)n;
        }
        line = eol + 2;
    }
    return 0;
}

/* Counts n body bytes come; 1 when the answer is complete, 0 when more is to
   come, -1 when more came than one answer (only one request is in flight). */
static int take_body(conn *c, size_t n)
{
    if (n > c->body_left)
        return -1;
    c->body_left -= n;
    return c->body_left == 0;
}

/* One recv of c's answer (level-triggered epoll reports again whatever is
   left); 1 when the answer is complete, 0 when more is to come, -1 when c
   failed. The headers may come in pieces, the body in any number of reads. */
static int receive(conn *c)
{
    bool in_head = c->head_len == 0;
    char *at = in_head ? c->head + c->have : c->head; /* the body is counted, not kept */
    size_t cap = in_head ? sizeof(c->head) - c->have : sizeof(c->head);
    ssize_t n = recv(c->fd, at, cap, 0);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    if (n == 0)
        return -1; /* the server closed the connection */
    if (!in_head)
        return take_body(c, (size_t)n);
    size_t from = c->have >= 3 ? c->have - 3 : 0; /* "\r\n\r\n" may straddle two reads */
    c->have += (size_t)n;
    const char *end = memmem(c->head + from, c->have - from, "\r\n\r\n", 4);
    if (end == NULL)
        return c->have < sizeof(c->head) ? 0 : -1; /* headers beyond HEAD_MAX: fail */
    c->head_len = (size_t)(end + 4 - c->head);
    if (parse_head(c) != 0)
        return -1;
    return take_body(c, c->have - c->head_len);
}

/* Stops c; a failure counts once. Closing also takes it out of the epoll set. */
static void end_conn(worker *w, conn *c, bool failed)
{
    if (failed)
        w->failed++;
    close_fd(c->fd);
    c->fd = -1;
    w->n_open--;
}

/* Whether `member`'s purchase just answered is its first of the run. */
static bool first_purchase(long member)
{
    if (new_members)
        return true;
    unsigned char bit = (unsigned char)(1u << (member & 7));
    return (atomic_fetch_or(&members_seen[member >> 3], bit) & bit) == 0;
}

/* c's answer is complete: counts it and sends the next request while the
   case lasts. */
static void finish(worker *w, conn *c)
{
    double now = now_s();
    if (c->sent < c->request_len) {
        end_conn(w, c, true); /* answered before sent: the stream is out of step */
        return;
    }
    if (w->n_samples < SAMPLES_MAX)
        w->samples[w->n_samples++] = now - c->start;
    if (c->status == (health_only ? 200 : 201)) {
        w->ok++;
        w->firsts += !health_only && first_purchase(c->member);
    } else
        w->failed++;
    c->serial++;
    if (now >= w->until)
        end_conn(w, c, false);
    else if (start_request(w, c) != 0)
        end_conn(w, c, true);
}

static void on_event(worker *w, conn *c, uint32_t events)
{
    if ((events & EPOLLOUT) && c->sent < c->request_len && send_rest(w, c) != 0) {
        end_conn(w, c, true);
        return;
    }
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) == 0)
        return;
    int done = receive(c); /* an error or hang-up shows as a failed recv */
    if (done < 0)
        end_conn(w, c, true);
    else if (done > 0)
        finish(w, c);
}

/* Connects w's connections and sends each its first request. A connection
   that cannot be opened counts one failure. */
static void open_all(worker *w)
{
    for (int i = 0; i < w->n_conns; i++) {
        conn *c = &w->conns[i];
        c->fd = connect_to(c->port);
        if (c->fd < 0) {
            w->failed++;
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
            perror("bench_http: epoll_ctl");
            close_fd(c->fd);
            c->fd = -1;
            w->failed++;
            continue;
        }
        w->n_open++;
    }
    for (int i = 0; i < w->n_conns; i++) {
        conn *c = &w->conns[i];
        if (c->fd >= 0 && start_request(w, c) != 0)
            end_conn(w, c, true);
    }
}

/* Runs w's connections until the case is over and its answers are in. */
static void drive(worker *w)
{
    struct epoll_event events[EVENTS_MAX];
    double deadline = w->until + DRAIN_S;
    while (w->n_open > 0) {
        double left = deadline - now_s();
        if (left <= 0)
            break;
        int n = epoll_wait(w->epfd, events, EVENTS_MAX, (int)(left * 1e3) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("bench_http: epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++)
            on_event(w, events[i].data.ptr, events[i].events);
    }
    for (int i = 0; i < w->n_conns; i++)
        if (w->conns[i].fd >= 0)
            end_conn(w, &w->conns[i], true); /* unanswered after DRAIN_S, or epoll broke */
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0) {
        perror("bench_http: epoll_create1");
        w->failed += w->n_conns;
        return NULL;
    }
    open_all(w);
    drive(w);
    close_fd(w->epfd);
    return NULL;
}

/* CPU time by thread name, from /proc: what each event cost each thread of
 * the servers and the client. Its sum against the machine's two cores is
 * the ceiling the case's events/s could reach at this cost per event. */
#define THREAD_NAMES_MAX 32
typedef struct cpu_use {
    char names[THREAD_NAMES_MAX][16];
    long ticks[THREAD_NAMES_MAX]; /* clock ticks, utime + stime */
    int n;
    long client_ticks; /* this process, all its threads */
    long busy, all;    /* the machine's, /proc/stat */
} cpu_use;

static void add_ticks(cpu_use *u, const char *name, long ticks)
{
    int i = 0;
    while (i < u->n && strcmp(u->names[i], name) != 0)
        i++;
    if (i == u->n) {
        if (u->n == THREAD_NAMES_MAX)
            return;
        snprintf(u->names[u->n++], sizeof(u->names[0]), "%.15s", name);
    }
    u->ticks[i] += ticks;
}

/* One thread's name and utime + stime from its stat line; false if unreadable. */
static bool thread_ticks(const char *path, char *name, size_t cap, long *ticks)
{
    char line[1024];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(line, 1, sizeof(line) - 1, f) : 0;
    if (f)
        fclose(f);
    line[n] = '\0';
    char *open = strchr(line, '('), *close = strrchr(line, ')');
    if (open == NULL || close == NULL || close < open)
        return false;
    snprintf(name, cap, "%.*s", (int)(close - open - 1), open + 1);
    unsigned long utime = 0, stime = 0; /* fields 14 and 15; the state is field 3 */
    if (sscanf(close + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) !=
        2)
        return false;
    *ticks = (long)(utime + stime);
    return true;
}

static void take_cpu_use(cpu_use *u, const pid_t *pids, int n_pids)
{
    memset(u, 0, sizeof(*u));
    for (int k = 0; k < n_pids; k++) {
        char dir[64];
        snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pids[k]);
        DIR *d = opendir(dir);
        for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;) {
            char path[64 + sizeof(e->d_name) + 8], name[64];
            long ticks = 0;
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s/stat", dir, e->d_name);
            if (thread_ticks(path, name, sizeof(name), &ticks))
                add_ticks(u, name, ticks);
        }
        if (d != NULL)
            closedir(d);
    }
    struct rusage self;
    if (getrusage(RUSAGE_SELF, &self) == 0) {
        long us = (long)(self.ru_utime.tv_sec + self.ru_stime.tv_sec) * 1000000 +
                  self.ru_utime.tv_usec + self.ru_stime.tv_usec;
        u->client_ticks = us / (1000000 / sysconf(_SC_CLK_TCK));
    }
    long v[10] = {0}; /* user nice system idle iowait irq softirq steal ... */
    FILE *f = fopen("/proc/stat", "r");
    if (f != NULL && fscanf(f, "cpu %ld %ld %ld %ld %ld %ld %ld %ld", &v[0], &v[1], &v[2], &v[3],
                            &v[4], &v[5], &v[6], &v[7]) == 8) {
        u->busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        u->all = u->busy + v[3] + v[4];
    }
    if (f != NULL)
        fclose(f);
}

/* Prints microseconds of CPU per answered event, by thread, between two takes. */
static void report_cpu_use(const cpu_use *before, const cpu_use *after, long events)
{
    if (events <= 0)
        return;
    double us_per_tick = 1e6 / (double)sysconf(_SC_CLK_TCK), total = 0;
    printf("  CPU us per event:");
    for (int i = 0; i < after->n; i++) {
        long was = 0;
        for (int j = 0; j < before->n; j++)
            if (strcmp(before->names[j], after->names[i]) == 0)
                was = before->ticks[j];
        double us = (double)(after->ticks[i] - was) * us_per_tick / (double)events;
        total += us;
        if (us >= 0.5)
            printf(" %s %.0f,", after->names[i], us);
    }
    double client =
        (double)(after->client_ticks - before->client_ticks) * us_per_tick / (double)events;
    long all = after->all - before->all;
    printf(" client %.0f; all %.0f (2 cores: %.0f events/s at most); machine busy %.0f%%\n", client,
           total + client, total + client > 0 ? 2e6 / (total + client) : 0,
           all > 0 ? 100.0 * (double)(after->busy - before->busy) / (double)all : 0);
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Prints one case's line from its workers' counts and latencies; sets
 *answered and *failed. */
static int report(const worker *workers, int n_workers, int connections, double elapsed,
                  long *answered, long *failed_out)
{
    long ok = 0, failed = 0, firsts = 0;
    size_t n = 0;
    for (int k = 0; k < n_workers; k++) {
        ok += workers[k].ok;
        firsts += workers[k].firsts;
        failed += workers[k].failed;
        n += workers[k].n_samples;
    }
    double *all = malloc((n > 0 ? n : 1) * sizeof(double));
    if (all == NULL) {
        perror("bench_http: malloc");
        return -1;
    }
    size_t at = 0;
    for (int k = 0; k < n_workers; k++) {
        memcpy(all + at, workers[k].samples, workers[k].n_samples * sizeof(double));
        at += workers[k].n_samples;
    }
    qsort(all, n, sizeof(double), compare_double);
    double p50 = n ? all[n / 2] : 0, p99 = n ? all[(n * 99) / 100] : 0;
    printf("connections %3d: %8.0f %s  p50 %6.2f ms  p99 %6.2f ms  (%ld ok, %ld failed)\n",
           connections, (double)ok / elapsed, health_only ? "health answers/s" : "durable events/s",
           p50 * 1e3, p99 * 1e3, ok, failed);
    if (n > 0) /* the tail's shape: what p99 is made of */
        printf("  latency ms: p10 %.2f  p90 %.2f  p95 %.2f  p99.9 %.2f  max %.2f\n",
               all[n / 10] * 1e3, all[(n * 90) / 100] * 1e3, all[(n * 95) / 100] * 1e3,
               all[(n * 999) / 1000] * 1e3, all[n - 1] * 1e3);
    if (!health_only && ok > 0) /* what the case's purchases were: see the file's head */
        printf("  members: %ld of the %ld purchases enrolled theirs (%.1f%%)\n", firsts, ok,
               100.0 * (double)firsts / (double)ok);
    fflush(stdout);
    free(all);
    *answered = ok;
    *failed_out = failed;
    return 0;
}

/* Starts the workers, connection i on port i mod n_ports and in worker
   i*n_workers/connections (a contiguous share each); waits for them. */
static int start_and_join(worker *workers, int n_workers, conn *conns, int connections,
                          double until)
{
    int started = 0;
    for (; started < n_workers; started++) {
        worker *w = &workers[started];
        int lo = connections * started / n_workers, hi = connections * (started + 1) / n_workers;
        *w = (worker){.conns = conns + lo, .n_conns = hi - lo, .epfd = -1, .until = until};
        w->samples = malloc(SAMPLES_MAX * sizeof(double));
        if (w->samples == NULL || pthread_create(&w->thread, NULL, run_worker, w) != 0) {
            fprintf(stderr, "bench_http: cannot start client thread %d\n", started);
            free(w->samples);
            w->samples = NULL;
            break;
        }
    }
    for (int k = 0; k < started; k++)
        if (pthread_join(workers[k].thread, NULL) != 0)
            abort(); /* only a bug makes it fail, and the thread still uses *w */
    return started == n_workers ? 0 : -1;
}

/* Runs one case; 0, 1 when a request failed or none was answered, or -1
   when it could not be run. */
static int run_case(const pid_t *pids, const int *ports, int n_ports, int connections,
                    double seconds)
{
    int n_workers = n_client_threads < connections ? n_client_threads : connections;
    worker workers[CLIENT_THREADS_MAX];
    memset(workers, 0, sizeof(workers)); /* those never started have no samples to free */
    conn *conns = calloc((size_t)connections, sizeof(conn));
    if (conns == NULL) {
        perror("bench_http: calloc");
        return -1;
    }
    for (int i = 0; i < connections; i++)
        conns[i] = (conn){.fd = -1, .port = ports[i % n_ports], .index = connections * 1000 + i};
    cpu_use before, after;
    take_cpu_use(&before, pids, n_ports);
    double start = now_s();
    int rc = start_and_join(workers, n_workers, conns, connections, start + seconds);
    double elapsed = now_s() - start;
    take_cpu_use(&after, pids, n_ports);
    long answered = 0, failed = 0;
    if (rc == 0)
        rc = report(workers, n_workers, connections, elapsed, &answered, &failed);
    if (rc == 0)
        report_cpu_use(&before, &after, answered);
    if (rc == 0 && (failed > 0 || answered == 0))
        rc = 1;
    for (int k = 0; k < n_workers; k++)
        free(workers[k].samples);
    free(conns);
    return rc;
}

/* Starts a server on `db`; returns its pid and sets *port from its first line. */
/* Passes on what a server says on stderr after its port line, so that a
 * server with much to say never blocks on a full pipe. */
static void *relay_stderr(void *arg)
{
    FILE *err = arg;
    char line[1024];
    while (fgets(line, sizeof(line), err) != NULL)
        fputs(line, stderr);
    fclose(err);
    return NULL;
}

static pid_t start_server(const char *bin, const char *config, const char *db, int *port)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        perror("bench_http: fork");
        return -1;
    }
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
    while (err != NULL && *port < 0 && fgets(line, sizeof(line), err) != NULL) {
        char *p = strstr(line, "(port ");
        if (p != NULL)
            *port = atoi(p + 6);
    }
    pthread_t relay;
    if (err != NULL && pthread_create(&relay, NULL, relay_stderr, err) == 0)
        pthread_detach(relay);
    else if (err != NULL)
        fclose(err);
    return pid;
}

/* SIGTERM to each server, and how each ended. */
/* Stops the n servers; returns how many did not exit cleanly. */
static int stop_servers(const pid_t *pids, int n)
{
    int unclean = 0;
    for (int k = 0; k < n; k++) {
        kill(pids[k], SIGTERM);
        int status = 0;
        waitpid(pids[k], &status, 0);
        bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        printf("server %d stopped: %s\n", k, clean ? "cleanly" : "with an error");
        unclean += !clean;
    }
    return unclean;
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
    n_members = getenv("PGW_BENCH_MEMBERS") ? atol(getenv("PGW_BENCH_MEMBERS")) : 100000;
    health_only =
        getenv("PGW_BENCH_HEALTH") != NULL && strcmp(getenv("PGW_BENCH_HEALTH"), "1") == 0;
    new_members = getenv("PGW_BENCH_NEW_MEMBERS") != NULL &&
                  strcmp(getenv("PGW_BENCH_NEW_MEMBERS"), "1") == 0;
    const char *threads = getenv("PGW_BENCH_CLIENT_THREADS");
    n_client_threads = threads ? atoi(threads) : 1;
    if (n < 1 || n > INSTANCES_MAX || (n > 1 && pg == NULL) || n_shops < 1 || n_shops > 4 ||
        n_members < 1 || n_members > 100000000 || n_client_threads < 1 ||
        n_client_threads > CLIENT_THREADS_MAX) {
        fprintf(stderr,
                "PGW_BENCH_INSTANCES is 1..%d (more than 1 with PGW_BENCH_DB), "
                "PGW_BENCH_SHOPS 1..4, PGW_BENCH_MEMBERS 1..100000000, "
                "PGW_BENCH_CLIENT_THREADS 1..%d\n",
                INSTANCES_MAX, CLIENT_THREADS_MAX);
        return 2;
    }
    members_seen = calloc((size_t)n_members / 8 + 1, 1);
    if (members_seen == NULL) {
        perror("bench_http: calloc");
        return 1;
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
            (void)stop_servers(pids, k + (pids[k] > 0)); /* those started, and a half-started one */
            free(members_seen);
            return 1;
        }
        printf("server pid %d on port %d\n", (int)pids[k], ports[k]);
    }
    printf("%d server(s) on %s, %d shop(s), %d client thread(s), %.1f s per case\n", n,
           pg ? "PostgreSQL" : "SQLite", n_shops, n_client_threads, seconds);
    int cases[8] = {1, 16, 128}, n_cases = 3;
    if (argc > 5) {
        n_cases = 0;
        for (int i = 5; i < argc && n_cases < 8; i++)
            cases[n_cases++] = atoi(argv[i]);
    }
    /* Exit 1 when anything went wrong (a case not run, a request failed, a
       server not stopped cleanly): make test's bench.smoke relies on it. */
    bool wrong = false;
    for (int i = 0; i < n_cases && !wrong; i++) {
        if (cases[i] < 1 || cases[i] > CONNECTIONS_MAX) {
            fprintf(stderr, "connections are 1..%d\n", CONNECTIONS_MAX);
            wrong = true;
            break;
        }
        int rc = run_case(pids, ports, n, cases[i], seconds);
        wrong = rc != 0;
        if (rc > 0)
            fprintf(stderr, "bench_http: %d connections: requests failed\n", cases[i]);
    }
    wrong |= stop_servers(pids, n) > 0;
    free(members_seen);
    return wrong ? 1 : 0;
}
