/*
 * main.c - the `pointsgw` command line.
 *
 * Each command is a small function that parses its own flags, calls the
 * modules, prints, and returns the process exit code (API.md): 0 ok, 1 the
 * check found a problem, 2 bad usage or input. Commands whose machinery has
 * not been built yet say so plainly and exit 2 instead of pretending.
 */
#include "adapters/sms/sms.h"
#include "adapters/wechat/client.h"
#include "adapters/wechat_oa/crypto.h"
#include "config/config.h"
#include "core/assertions.h"
#include "core/error.h"
#include "core/digest.h"
#include "core/rules.h"
#include "server/api.h"
#include "server/auth.h"
#include "server/event_command.h"
#include "server/event_json.h"
#include "server/expire.h"
#include "server/http.h"
#include "server/import.h"
#include "server/reconcile.h"
#include "server/report.h"
#include "server/wechat.h"
#include "util/redact.h"
#include "util/csv.h"
#include "util/env.h"
#include "util/http_client.h"
#include "util/path.h"
#include "util/vault.h"
#include "store/sql.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef PGW_VERSION
#error "PGW_VERSION comes from CMakeLists.txt's project(VERSION)"
#endif

#define EXIT_OK      0
#define EXIT_PROBLEM 1
#define EXIT_USAGE   2

/*
 * --out FILE: written as FILE.partial-XXXXXX beside it and renamed over
 * FILE only once the command has written all of it, so that a refused or
 * failed run leaves an existing FILE as it was (opened "w" at the start, a
 * report refused for its period emptied last month's). A link is followed
 * to its file, whose mode the new one keeps. Where no file can be made
 * beside it (a pipe, /dev/stdout, a directory not ours), FILE is written
 * as it is. No path: stdout.
 */
typedef struct out_file {
    FILE *f;
    char target[PATH_MAX];  /* the file renamed over */
    char partial[PATH_MAX]; /* "" when writing FILE itself */
} out_file;

/*
 * The partial --out file being written, removed when a signal ends the
 * command (Ctrl-C, SIGTERM, a hang-up): the rename never came, and each
 * run so stopped left one more FILE.partial-XXXXXX beside FILE. Set
 * before the flag, so the handler never reads a path half copied.
 */
static char out_partial_now[PATH_MAX];
/* The files SQLite makes beside a backup's partial copy (its journal while
 * VACUUM INTO writes it, its WAL and index while verify reads it): a
 * stopped backup left them too. Named in advance: the handler may not
 * format. Never there beside a report's partial file. */
static const char *const out_partial_companions[] = {"-journal", "-wal", "-shm"};
#define OUT_COMPANIONS (sizeof(out_partial_companions) / sizeof(out_partial_companions[0]))
static char out_companion_now[OUT_COMPANIONS][PATH_MAX + 16];
static volatile sig_atomic_t out_partial_set;

/* Removes the partial file and its companions, then ends as the signal
 * would have (its exit status, 128 + the signal, is the caller's to see).
 * unlink, signal and raise are async-signal-safe. */
static void out_on_signal(int sig)
{
    if (out_partial_set) {
        unlink(out_partial_now);
        for (size_t i = 0; i < OUT_COMPANIONS; i++)
            unlink(out_companion_now[i]);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/* From now until out_unguard, a stop by signal removes `partial`. A
 * signal ignored (nohup's SIGHUP, SIGINT of a background job) stays so. */
static void out_guard(const char *partial)
{
    snprintf(out_partial_now, sizeof(out_partial_now), "%s", partial);
    for (size_t i = 0; i < OUT_COMPANIONS; i++)
        snprintf(out_companion_now[i], sizeof(out_companion_now[i]), "%s%s", partial,
                 out_partial_companions[i]);
    out_partial_set = 1;
    static const int stops[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++) {
        struct sigaction was;
        if (sigaction(stops[i], NULL, &was) != 0 || was.sa_handler == SIG_IGN)
            continue;
        struct sigaction sa = {.sa_handler = out_on_signal};
        sigemptyset(&sa.sa_mask);
        sigaction(stops[i], &sa, NULL);
    }
}

/* The partial file is renamed or removed: a signal now ends the command
 * as it would have, removing nothing. */
static void out_unguard(void)
{
    out_partial_set = 0;
}

/* Where a new --out file goes: `path`, or what a link there (pointing to
 * no file yet) names, relative to the link's folder. */
static bool new_target(const char *path, char target[PATH_MAX])
{
    bool was_link;
    return pgw_path_link_step(path, target, PATH_MAX, &was_link);
}

static int out_open(const char *path, out_file *o)
{
    *o = (out_file){.f = stdout};
    if (path == NULL)
        return 0;
    struct stat st;
    bool exists = stat(path, &st) == 0;
    mode_t mask = umask(0); /* the mode fopen would give a new file */
    umask(mask);
    mode_t mode = exists ? st.st_mode & 07777 : 0666 & ~mask;
    int fd = -1;
    if (!exists || S_ISREG(st.st_mode)) {
        if (exists ? realpath(path, o->target) == NULL : !new_target(path, o->target))
            o->target[0] = '\0';
        int n = snprintf(o->partial, sizeof(o->partial), "%s.partial-XXXXXX", o->target);
        fd = o->target[0] && n > 0 && (size_t)n < sizeof(o->partial) ? mkstemp(o->partial) : -1;
        if (fd >= 0)
            out_guard(o->partial);
        if (fd >= 0 && fchmod(fd, mode) != 0) {
            close(fd);
            unlink(o->partial);
            out_unguard();
            fd = -1;
        }
    }
    if (fd < 0) {
        o->partial[0] = '\0';
        o->f = fopen(path, "w");
        return o->f != NULL ? 0 : -1;
    }
    o->f = fdopen(fd, "w");
    if (o->f == NULL) {
        close(fd);
        unlink(o->partial);
        out_unguard();
    }
    return o->f != NULL ? 0 : -1;
}

/* Puts the output in place when `keep`, else drops it; -1 when writing or
 * renaming failed (the partial file is removed). */
static int out_close(out_file *o, bool keep)
{
    if (o->f == NULL || o->f == stdout)
        return o->f == NULL ? -1 : 0;
    bool ok = fclose(o->f) == 0;
    o->f = NULL;
    if (o->partial[0] == '\0')
        return ok ? 0 : -1;
    bool renamed = keep && ok && rename(o->partial, o->target) == 0;
    if (!renamed)
        unlink(o->partial);
    out_unguard();
    return renamed || !keep ? 0 : -1;
}

/* A command's exit for a failure code: 1 for what went wrong around it
 * (the database, the disk, memory), 2 for what it was given. */
static int exit_for(int rc)
{
    return rc == PGW_OK                                                  ? EXIT_OK
           : rc == PGW_EIO || rc == PGW_ENOMEM || rc == PGW_EUNAVAILABLE ? EXIT_PROBLEM
                                                                         : EXIT_USAGE;
}

#define DEFAULT_CONFIG "config/pointsgw.example.json"
#define FLAGS_MAX      12

/* A command's flags: names it accepts and the values it was given. */
typedef struct flag_set {
    size_t n;
    const char *names[FLAGS_MAX]; /* "--config", ... */
    const char *values[FLAGS_MAX];
    bool takes_value[FLAGS_MAX];
} flag_set;

typedef struct command {
    const char *name;
    const char *usage;
    const char *summary;
    int (*run)(int argc, char **argv);
} command;

static void flag_add(flag_set *flags, const char *name, bool takes_value)
{
    PGW_ASSERT(flags->n < FLAGS_MAX);
    flags->names[flags->n] = name;
    flags->takes_value[flags->n] = takes_value;
    flags->values[flags->n] = NULL;
    flags->n++;
}

/* Where `arg` is among the flags' names; flags->n when it is none. */
static size_t flag_index(const flag_set *flags, const char *arg)
{
    size_t k = 0;
    while (k < flags->n && strcmp(flags->names[k], arg) != 0)
        k++;
    return k;
}

static const char *flag_get(const flag_set *flags, const char *name)
{
    size_t k = flag_index(flags, name);
    PGW_ASSERT(k < flags->n && "flag not declared");
    return flags->values[k];
}

/*
 * Parses argv (after the command name) against `flags`. A boolean flag's
 * value is set to "1". Returns 0, 1 for --help, or -1 after printing why
 * the arguments are wrong.
 */
static int flags_parse(flag_set *flags, const char *command_name, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
        size_t k = flag_index(flags, argv[i]);
        if (k == flags->n) {
            fprintf(stderr, "pointsgw %s: unknown argument '%s' (see --help)\n", command_name,
                    argv[i]);
            return -1;
        }
        /* `--scope finance --scope admin` made an admin key, silently: the
         * last one won (the operator review). One of each. */
        if (flags->values[k] != NULL) {
            fprintf(stderr, "pointsgw %s: %s given twice\n", command_name, argv[i]);
            return -1;
        }
        if (!flags->takes_value[k]) {
            flags->values[k] = "1";
            continue;
        }
        /* `keys add --name --require-signature` made a key so named that
         * need not sign, exit 0 (a review): a value is never a flag. */
        if (i + 1 >= argc || flag_index(flags, argv[i + 1]) < flags->n) {
            fprintf(stderr, "pointsgw %s: %s needs a value\n", command_name, argv[i]);
            return -1;
        }
        flags->values[k] = argv[++i];
    }
    return 0;
}

/* Loads the configuration named by --config (or the default), printing any
 * error as "pointsgw: <file>: <json path>: <problem>". Its text, when
 * `text` is not NULL, goes there (malloc'd): serve's reload compares. */
static pgw_config *load_config(const char *path, char **text, size_t *len)
{
    pgw_config *cfg = NULL;
    char *read = NULL;
    size_t n = 0;
    pgw_err err;
    pgw_err_clear(&err);
    /* The default is the source tree's demo: one missing says so, as a
     * command pasted on a server without --config meets it. */
    bool defaulted = path == NULL;
    path = path ? path : DEFAULT_CONFIG;
    int rc = pgw_config_read(path, &read, &n, &err);
    if (rc == PGW_OK)
        rc = pgw_config_parse(read, n, path, &cfg, &err);
    if (rc != PGW_OK)
        fprintf(stderr, "pointsgw: %s%s\n", err.msg,
                defaulted && access(path, F_OK) != 0
                    ? " (no --config given: this default is the source tree's demo; give yours "
                      "with --config FILE)"
                    : "");
    if (rc == PGW_OK && text != NULL)
        *text = read, *len = n;
    else
        free(read);
    return cfg;
}

/* The configuration's summary with its channels line as serve will run
 * them (`channels`): the summary's own says what is configured, "on" for
 * a channel serve then runs without (the operations review). */
static void print_summary(const pgw_config *cfg, const char *channels)
{
    char summary[4096];
    if (pgw_config_summary(cfg, summary, sizeof(summary)) != PGW_OK)
        return;
    char *line = strstr(summary, "\nchannels:");
    char *rest = line != NULL ? strchr(line + 1, '\n') : NULL;
    if (rest == NULL) /* no such line: said after it */
        printf("%schannels:   %s\n", summary, channels);
    else
        printf("%.*s\nchannels:   %s%s", (int)(line - summary), summary, channels, rest);
}

/*
 * The start every command shares: parse its flags (which must include
 * --config) and load the configuration. Returns -1 when the command should
 * go on with *cfg, else the exit code to return at once (--help, bad usage,
 * bad configuration).
 */
static int start_command(const char *name, flag_set *flags, int argc, char **argv, pgw_config **cfg)
{
    *cfg = NULL;
    int rc = flags_parse(flags, name, argc, argv);
    if (rc != 0)
        return rc > 0 ? EXIT_OK : EXIT_USAGE;
    *cfg = load_config(flag_get(flags, "--config"), NULL, NULL);
    return *cfg == NULL ? EXIT_USAGE : -1;
}

/* Whether the TLS files the configuration names can serve; says why not
 * after `who`. Only serve and check-config read them (config.h). */
static bool tls_files_ok(const pgw_config *cfg, flag_set *flags, const char *who)
{
    pgw_err err;
    const char *file = flag_get(flags, "--config") ? flag_get(flags, "--config") : DEFAULT_CONFIG;
    if (pgw_config_check_tls(&cfg->http, file, &err) == PGW_OK)
        return true;
    fprintf(stderr, "%s: %s\n", who, err.msg);
    return false;
}

#define CHANNELS_LINE_MAX 512

/* Adds "NAME STATE" to the channels line, "NAME off (VARS unset)" when
 * variables it needs are not set. */
static void say_channel(char *line, size_t cap, const char *name, const char *state,
                        const char *unset)
{
    size_t used = strlen(line);
    PGW_ASSERT(used < cap);
    if (unset[0] != '\0')
        snprintf(line + used, cap - used, "%s%s off (%s unset)", used ? ", " : "", name, unset);
    else
        snprintf(line + used, cap - used, "%s%s %s", used ? ", " : "", name, state);
}

/* channels.wechat_mp as serve runs it (server/wechat.c): off without its
 * secret; its app taken by a WeChat client as serve's takes it. */
static int check_mp(const pgw_config *cfg, pgw_wx_client *wx, char *line, size_t cap, pgw_err *err)
{
    const pgw_wechat_channel *mp = &cfg->wechat_mp;
    char unset[PGW_ENV_UNSET_MAX] = "";
    bool on = mp->enabled && pgw_wechat_mp_env_set(mp, unset, sizeof(unset));
    say_channel(line, cap, "wechat_mp", on ? "on" : "off", unset);
    return on ? pgw_wx_client_add_app(wx, mp->appid, getenv(mp->secret_env), mp->api_base, err)
              : PGW_OK;
}

/* channels.wechat_oa: off without its secret, callback token and, when
 * the configuration names one, EncodingAESKey; the
 * token must be one serve takes, an EncodingAESKey set must be one (serve
 * refuses them otherwise, in server/wechat.c's order). */
static int check_oa(const pgw_config *cfg, pgw_wx_client *wx, char *line, size_t cap, pgw_err *err)
{
    const pgw_wechat_channel *oa = &cfg->wechat_oa;
    char unset[PGW_ENV_UNSET_MAX] = "";
    bool on = oa->enabled && pgw_wechat_oa_env_set(oa, unset, sizeof(unset));
    say_channel(line, cap, "wechat_oa", on ? "on" : "off", unset);
    int rc = on ? pgw_wechat_oa_check_token(oa->token_env, getenv(oa->token_env), err) : PGW_OK;
    if (rc != PGW_OK)
        return rc;
    const char *aes = on && oa->aes_key_env[0] ? getenv(oa->aes_key_env) : NULL;
    uint8_t key[PGW_WX_AES_KEY_LEN];
    rc = aes != NULL && aes[0] != '\0' ? pgw_wx_aes_key(aes, key, err) : PGW_OK;
    OPENSSL_cleanse(key, sizeof(key));
    if (rc != PGW_OK)
        return pgw_err_prefix(err, "%s: ", oa->aes_key_env);
    return on ? pgw_wx_client_add_app(wx, oa->appid, getenv(oa->secret_env), oa->api_base, err)
              : PGW_OK;
}

/* channels.sms: off without both keys; with them, a client as serve's. */
static int check_sms(const pgw_config *cfg, char *line, size_t cap, pgw_err *err)
{
    const pgw_sms_channel *sms = &cfg->sms;
    char unset[PGW_ENV_UNSET_MAX] = "";
    bool on = sms->enabled && pgw_sms_env_set(sms, unset, sizeof(unset));
    say_channel(line, cap, "sms", on ? sms->provider : "off", unset);
    pgw_sms_client *client = NULL;
    int rc = on ? pgw_sms_client_new(sms, getenv(sms->key_id_env), getenv(sms->key_secret_env),
                                     NULL, &client, err)
                : PGW_OK;
    pgw_sms_client_free(client);
    return rc;
}

/* Prints err's message when rc is a failure; whether it is not. */
static bool told(int rc, const pgw_err *err)
{
    if (rc != PGW_OK)
        fprintf(stderr, "pointsgw: %s\n", err->msg);
    return rc == PGW_OK;
}

/*
 * What serve reads from the environment, read by the functions serve
 * reads it with: the phone keys (pgw_vault_open), the API keys
 * (pgw_auth_new) and the channels' secrets, into `channels` as serve will
 * run them. No database is opened. Warnings are said as serve says them
 * (development mode, a disabled key); false after printing each thing
 * serve would refuse.
 */
static bool environment_ok(const pgw_config *cfg, char *channels, size_t cap)
{
    const pgw_security_config *sec = &cfg->security;
    pgw_vault *vault = NULL;
    pgw_auth *auth = NULL;
    pgw_wx_client *wx = NULL;
    bool warned = false;
    pgw_err err;
    bool ok = told(pgw_vault_open(sec->phone_hmac_key_env, sec->phone_aes_key_env,
                                  sec->development_mode, &vault, &warned, &err),
                   &err);
    pgw_vault_warn_public(vault);
    pgw_vault_free(vault);
    ok = told(pgw_auth_new(cfg, &auth, &err), &err) && ok;
    pgw_auth_free(auth);
    channels[0] = '\0';
    if (!told(pgw_wx_client_new(NULL, 0, &wx, &err), &err))
        return false;
    ok = told(check_mp(cfg, wx, channels, cap, &err), &err) && ok;
    ok = told(check_oa(cfg, wx, channels, cap, &err), &err) && ok;
    ok = told(check_sms(cfg, channels, cap, &err), &err) && ok;
    pgw_wx_client_free(wx);
    return ok;
}

static int cmd_check_config(int argc, char **argv)
{
    flag_set flags = {0};
    pgw_config *cfg;
    flag_add(&flags, "--config", true);
    flag_add(&flags, "--db", true);
    int rc = start_command("check-config", &flags, argc, argv, &cfg);
    if (rc >= 0)
        return rc;
    /* serve's --db, checked and shown (redacted) but never opened: opening
     * would create a SQLite file or migrate a PostgreSQL schema. */
    pgw_err err;
    const char *db = flag_get(&flags, "--db");
    if (db != NULL && pgw_config_set_db(cfg, db, &err) != PGW_OK) {
        fprintf(stderr, "pointsgw check-config: --db: %s\n", err.msg);
        pgw_config_free(cfg);
        return EXIT_USAGE;
    }
    char channels[CHANNELS_LINE_MAX];
    bool tls_ok = tls_files_ok(cfg, &flags, "pointsgw");
    if (!environment_ok(cfg, channels, sizeof(channels)) || !tls_ok) {
        pgw_config_free(cfg);
        return EXIT_USAGE;
    }
    print_summary(cfg, channels);
    if (cfg->n_keys == 0 && !cfg->security.development_mode)
        fprintf(stderr, "pointsgw: warning: no API key is configured: no till, app or operator "
                        "can call the gateway\n");
    printf("configuration OK\n");
    pgw_config_free(cfg);
    return EXIT_OK;
}

/* The running server, for the signal handler (main.c may hold process state). */
static pgw_http *serving;

static void on_stop_signal(int sig)
{
    (void)sig;
    if (serving != NULL)
        pgw_http_shutdown(serving); /* async-signal-safe: a flag and a wake-up */
}

/*
 * serve's reload of the keys (SIGHUP). The handler writes a byte to a
 * pipe (async-signal-safe); a thread of serve's own reads it, reads the
 * configuration again as the start did, builds the key table (a few
 * milliseconds, the file parsed whole) and hands it to the service thread
 * (pgw_http_reload_keys). The keys are all a reload changes: the other
 * settings are compared with the file serve started with and said to
 * wait for a restart.
 */
static int reload_pipe[2] = {-1, -1};

static void on_reload_signal(int sig)
{
    (void)sig;
    int saved = errno;
    /* The pipe full (hang-ups piling up): the reload to come serves them all. */
    ssize_t wrote = write(reload_pipe[1], "r", 1);
    (void)wrote;
    errno = saved;
}

typedef struct reloader {
    pgw_http *http;
    const char *path;
    const pgw_config *running; /* what serve started with */
    const char *running_text;
    size_t running_len;
    pgw_config *keys_from; /* the file of the keys now served; NULL: `running` */
} reloader;

static const pgw_key_config *key_named(const pgw_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_keys; i++)
        if (strcmp(cfg->keys[i].name, name) == 0)
            return &cfg->keys[i];
    return NULL;
}

static bool same_key(const pgw_key_config *a, const pgw_key_config *b)
{
    return strcmp(a->scope, b->scope) == 0 && a->has_sha256 == b->has_sha256 &&
           (a->has_sha256 ? memcmp(a->key_sha256, b->key_sha256, 32) == 0
                          : strcmp(a->key_env, b->key_env) == 0) &&
           a->require_signature == b->require_signature;
}

/* "added a, b; removed c; changed d" by name (never the key), "no key
 * changed" for none: `was`'s keys against `now`'s. */
static void key_changes(const pgw_config *was, const pgw_config *now, char *out, size_t cap)
{
    static const char *const WHAT[] = {"added", "removed", "changed"};
    out[0] = '\0';
    for (int what = 0; what < 3; what++) {
        const pgw_config *in = what == 1 ? was : now, *other = what == 1 ? now : was;
        bool first = true;
        for (size_t i = 0; i < in->n_keys; i++) {
            const pgw_key_config *k = &in->keys[i], *there = key_named(other, k->name);
            if (what < 2 ? there != NULL : there == NULL || same_key(k, there))
                continue;
            size_t used = strlen(out);
            if (first)
                snprintf(out + used, cap - used, "%s%s %s", used ? "; " : "", WHAT[what], k->name);
            else
                snprintf(out + used, cap - used, ", %s", k->name);
            first = false;
        }
    }
    if (out[0] == '\0')
        snprintf(out, cap, "no key changed");
}

/* A key whose variable is unset was left out (pgw_auth_new says so), but
 * "added" on the reload's line reads as working, and setting the variable
 * then reloading again does not help: the environment is serve's start's. */
static void disabled_until_restart(const pgw_config *cfg)
{
    for (size_t i = 0; i < cfg->n_keys; i++) {
        const pgw_key_config *k = &cfg->keys[i];
        const char *value = k->has_sha256 ? "" : getenv(k->key_env);
        if (!k->has_sha256 && (value == NULL || value[0] == '\0'))
            fprintf(stderr,
                    "pointsgw serve: warning: key %s stays disabled: a reload does not read "
                    "the environment again; set %s where serve's environment comes from "
                    "(secrets.env) and restart it, or give the key as key_sha256 "
                    "(`pointsgw keys add`)\n",
                    k->name, k->key_env);
    }
}

static void reload_keys(reloader *r)
{
    pgw_err err;
    char *text = NULL, changed[512], keys[PGW_KEYS_MAX * (PGW_ID_MAX + 2) + 64]; /* every name */
    size_t len = 0, n = 0;
    pgw_config *cfg = NULL;
    pgw_auth *fresh = NULL;
    char name[PGW_CONFIG_NAME_MAX + 1]; /* the file, as every message names it */
    pgw_config_name(r->path, name);
    int rc = pgw_config_read(r->path, &text, &len, &err);
    if (rc == PGW_OK)
        rc = pgw_config_parse(text, len, r->path, &cfg, &err);
    if (rc == PGW_OK) {
        /* Development mode (the demo key) is serve's, from its start. */
        cfg->security.development_mode = r->running->security.development_mode;
        rc = pgw_auth_new(cfg, &fresh, &err);
    }
    if (rc != PGW_OK && cfg != NULL) /* the file's keys refused: named as its parse does */
        rc = pgw_err_prefix(&err, "%s: ", name);
    if (rc == PGW_OK)
        rc = pgw_config_changed(r->running_text, r->running_len, text, len, changed,
                                sizeof(changed), &err);
    if (rc == PGW_OK) {
        n = pgw_auth_count(fresh);
        rc = pgw_http_reload_keys(r->http, fresh, &err);
    }
    free(text);
    pgw_auth_free(fresh); /* taken: the old keys */
    if (rc != PGW_OK) {
        fprintf(stderr, "pointsgw serve: cannot reload the keys: %s; keys unchanged\n", err.msg);
        pgw_config_free(cfg);
        return;
    }
    key_changes(r->keys_from != NULL ? r->keys_from : r->running, cfg, keys, sizeof(keys));
    fprintf(stderr, "pointsgw serve: keys reloaded from %s: %zu key%s (%s)\n", name, n,
            n == 1 ? "" : "s", keys);
    if (changed[0] != '\0')
        fprintf(stderr,
                "pointsgw serve: warning: %s also changes %s: a reload takes the keys alone; "
                "those wait for a restart\n",
                name, changed);
    disabled_until_restart(cfg);
    pgw_config_free(r->keys_from);
    r->keys_from = cfg;
}

/* The reload thread: a reload per byte, till the pipe is closed. */
static void *reload_loop(void *arg)
{
    for (;;) {
        char byte;
        ssize_t got = read(reload_pipe[0], &byte, 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return NULL;
        reload_keys(arg);
    }
}

/* Killed by a hang-up, requests in flight were dropped and the WAL left
 * uncheckpointed (the operations review): ignored rather. */
static void warn_hangups_ignored(int why)
{
    fprintf(stderr,
            "pointsgw serve: warning: SIGHUP is ignored: cannot start the reload of the keys: "
            "%s\n",
            strerror(why));
    signal(SIGHUP, SIG_IGN);
}

/* Ends the hang-ups: the reload `thread` (NULL: none) joined, the pipe closed. */
static void stop_reloads(const pthread_t *thread)
{
    if (reload_pipe[0] < 0)
        return;
    signal(SIGHUP, SIG_IGN); /* no handler writes to the pipe closed */
    close(reload_pipe[1]);
    if (thread != NULL)
        pthread_join(*thread, NULL);
    close(reload_pipe[0]);
    reload_pipe[0] = reload_pipe[1] = -1;
}

/*
 * SIGHUP, first thing in serve: the handler and its pipe, so that a
 * hang-up while serve starts (its database opening: `systemctl reload`
 * right after a start) waits in the pipe for the reload thread
 * (catch_signals) rather than killing it, as the default action did.
 * Under nohup (ignored when serve started) it stays ignored, as asked.
 * Whether the pipe is open.
 */
static bool catch_hangups(void)
{
    struct sigaction hangup;
    if (sigaction(SIGHUP, NULL, &hangup) != 0 || hangup.sa_handler == SIG_IGN)
        return false;
    if (pipe(reload_pipe) != 0 || fcntl(reload_pipe[1], F_SETFL, O_NONBLOCK) != 0) {
        warn_hangups_ignored(errno);
        return false;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_reload_signal;
    sigaction(SIGHUP, &sa, NULL);
    return true;
}

/*
 * serve's other signals, once it has a server: INT and TERM stop it; the
 * reload thread starts reading the hang-ups' pipe (catch_hangups).
 * Whether it runs (stop_reloads ends it).
 */
static bool catch_signals(reloader *r, pthread_t *thread, bool hangups)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (!hangups)
        return false;
    int rc = pthread_create(thread, NULL, reload_loop, r);
    if (rc != 0) {
        warn_hangups_ignored(rc);
        stop_reloads(NULL);
    }
    return rc == 0;
}

/* The file of a sqlite: database, or NULL for another URL. */
static const char *sqlite_file(const char *url)
{
    return strncmp(url, "sqlite:", 7) == 0 ? url + 7 : NULL;
}

/* Creates the directory of a sqlite:DIR/FILE database when missing; `made`
 * (PGW_STORE_URL_MAX + 1 bytes) says which it made ("" when none). */
static void make_db_dir(const char *url, char *made)
{
    made[0] = '\0';
    if (sqlite_file(url) == NULL)
        return;
    char dir[PGW_STORE_URL_MAX + 1];
    if (!pgw_path_folder(sqlite_file(url), dir, sizeof(dir)) || strcmp(dir, ".") == 0 ||
        strcmp(dir, "/") == 0)
        return; /* none to make */
    if (mkdir(dir, 0750) == 0)
        memcpy(made, dir, strlen(dir) + 1);
    else if (errno != EEXIST)
        fprintf(stderr, "pointsgw serve: cannot create %s: %s\n", dir, strerror(errno));
}

/* Says where a database `who` (serve, import-balances) created is, whole:
 * a relative path is the working directory's, and serve started from
 * another folder (systemd without WorkingDirectory starts in /) made a
 * new, empty ledger there without a word (the operations review). And
 * warns of a database others may read: it holds members' sealed phones,
 * as backups do (0600). */
static void tell_database_file(const char *who, const char *url, bool existed)
{
    const char *path = sqlite_file(url);
    char whole[PATH_MAX];
    struct stat st;
    if (path == NULL || realpath(path, whole) == NULL || stat(whole, &st) != 0)
        return;
    if (!existed)
        fprintf(stderr, "pointsgw %s: created a new database at %s\n", who, whole);
    if ((st.st_mode & 077) != 0)
        fprintf(stderr,
                "pointsgw %s: warning: %s is open to other users (mode %03o): it holds "
                "members' sealed identities; chmod 600 it and its -wal and -shm files\n",
                who, whole, (unsigned)(st.st_mode & 0777));
}

/*
 * One serve per SQLite file: a second one ran its own writer, checkpointer
 * and expiry sweep on the same file, each sure it was the only writer (the
 * last session's notes). serve holds a POSIX record lock on DB-serve.lock,
 * a file of its own beside the database, while it runs; never on the
 * database's file, whose locks are SQLite's (closing any descriptor of a
 * file drops all of the process's record locks on it). The kernel drops
 * the lock with the process, so the file a crash leaves refuses nothing;
 * it is never removed (two processes could then lock two files). The other
 * commands do not take it: they work beside a serve, as before. PostgreSQL
 * takes several instances: no lock.
 */
typedef struct serve_lock {
    int fd; /* -1: none held */
    char path[PATH_MAX];
} serve_lock;

/* Takes the lock of the sqlite: database `url` into *lock; false after
 * saying why serve must not start (another serve holds it, or it cannot be
 * taken). No lock file can be made where the database's folder is not
 * writable: then none is held, and the store's open says why it refuses. */
static bool take_serve_lock(const char *url, serve_lock *lock)
{
    lock->fd = -1;
    lock->path[0] = '\0';
    const char *file = sqlite_file(url);
    if (file == NULL)
        return true;
    char whole[PATH_MAX]; /* one file by every path to it */
    if (!pgw_path_whole(file, whole))
        snprintf(whole, sizeof(whole), "%s", file);
    int n = snprintf(lock->path, sizeof(lock->path), "%s" PGW_STORE_SERVE_LOCK_SUFFIX, whole);
    if (n < 0 || (size_t)n >= sizeof(lock->path)) {
        fprintf(stderr, "pointsgw serve: %s: the path is too long for its lock file\n", whole);
        return false;
    }
    struct stat st;
    lock->fd = open(lock->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lock->fd < 0 && lstat(lock->path, &st) != 0)
        return true; /* not made: the folder is not writable, which the store refuses */
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (lock->fd >= 0 && fcntl(lock->fd, F_SETLK, &fl) == 0)
        return true;
    int why = errno;
    fl = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (lock->fd >= 0 && (why == EACCES || why == EAGAIN)) {
        /* l_pid is 0 for a holder in another pid namespace: not shown. */
        bool named = fcntl(lock->fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK && fl.l_pid > 0;
        char pid[32] = "";
        if (named)
            snprintf(pid, sizeof(pid), " (pid %ld)", (long)fl.l_pid);
        fprintf(stderr,
                "pointsgw serve: %s is being served by another pointsgw serve%s: one serve "
                "per SQLite file (several gateways share a PostgreSQL database)\n",
                whole, pid);
    } else {
        fprintf(stderr, "pointsgw serve: cannot lock %s, which keeps a second serve off %s: %s\n",
                lock->path, whole, strerror(why));
    }
    if (lock->fd >= 0)
        close(lock->fd);
    lock->fd = -1;
    return false;
}

/* Lets the lock go; `made_dir`: the database's folder was made by this
 * start, refused, whose lock file goes too so that the folder can. */
static void drop_serve_lock(serve_lock *lock, bool made_dir)
{
    if (lock->fd < 0)
        return;
    if (made_dir)
        (void)unlink(lock->path); /* still held: no other serve has it open */
    close(lock->fd);
    lock->fd = -1;
}

/* libwebsockets 4.1 sizes its tables by the open-files limit (8 bytes and
 * a pollfd per possible descriptor: 4 MiB here) and, past 10,000,000,
 * takes 2,560 instead: an unlimited hard limit is not taken whole. */
#define OPEN_FILES_MAX (256 * 1024)
/* Descriptors that are no client's: the database and its journal, the
 * log, the threads' wake-up pipes, PostgreSQL's and WeChat's sockets. */
#define OPEN_FILES_OWN 64

/*
 * Raises the open-files soft limit to the hard one (at most
 * OPEN_FILES_MAX), before libwebsockets reads it: a distribution's soft
 * 1024 was a thousand connections, past which libwebsockets fails every
 * accept. Says the limit in one line, and warns when it is below what the
 * requests allowed to wait (max_inflight), as many idle kept-alive
 * connections beside them (a client pool's spares) and our own need.
 */
static void raise_open_files(const pgw_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "pointsgw serve: cannot read the open files limit: %s\n", strerror(errno));
        return;
    }
    rlim_t was = rl.rlim_cur;
    rlim_t hard =
        rl.rlim_max == RLIM_INFINITY || rl.rlim_max > OPEN_FILES_MAX ? OPEN_FILES_MAX : rl.rlim_max;
    const char *how = "the hard limit";
    if (rl.rlim_cur < hard) {
        rl.rlim_cur = hard;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            how = "raised to the hard limit";
        else
            rl.rlim_cur = was, how = strerror(errno);
    } else if (rl.rlim_cur > hard) {
        how = "the soft limit";
    }
    unsigned long long need = 2ULL * (unsigned long long)cfg->http.max_inflight + OPEN_FILES_OWN;
    fprintf(stderr, "pointsgw serve: open files: %llu (%s)\n", (unsigned long long)rl.rlim_cur,
            how);
    if (rl.rlim_cur < need)
        fprintf(stderr,
                "pointsgw serve: warning: %llu open files are fewer than the %llu that "
                "http.max_inflight (%lld) requests waiting, as many idle kept-alive "
                "connections and the gateway's own need; past them connections wait unaccepted "
                "(raise the hard limit: LimitNOFILE= in systemd, ulimit -Hn)\n",
                (unsigned long long)rl.rlim_cur, need, (long long)cfg->http.max_inflight);
}

/*
 * serve's last line: "stopped cleanly" only when it was. Answers cut off
 * at the deadline (clients not reading them) are said, and how many
 * report a committed change whose client may not know of it. The exit
 * stays 0 (README: Status): the ledger is whole, and every such answer is
 * in the request log; a stop marked failed for a client's fault would
 * turn a routine deployment red.
 */
static void say_stopped(const pgw_http_stopped *stopped)
{
    size_t cut = stopped->answers_cut;
    if (cut == 0) {
        fprintf(stderr, "pointsgw serve: stopped cleanly\n");
        return;
    }
    fprintf(stderr,
            "pointsgw serve: stopped, but cut off %zu answer%s not taken whole by the %d s "
            "deadline (%zu of them to a write that succeeded: its change is committed, its client "
            "may not know); each is logged \"delivered\": false\n",
            cut, cut == 1 ? " its client had" : "s their clients had", PGW_HTTP_STOP_ANSWERS_S,
            stopped->changes_cut);
}

/* Where a clean stop keeps the nonces of signed requests (auth.h): beside
 * a SQLite database, as its lock file is ("pointsgw.db-nonces"); none on
 * PostgreSQL, whose instances are several, with no file of their own:
 * there they are each instance's, in memory only (README). */
static void nonce_file(const serve_lock *lock, char out[PATH_MAX + 8])
{
    size_t n = strlen(lock->path), suffix = strlen(PGW_STORE_SERVE_LOCK_SUFFIX);
    out[0] = '\0';
    if (n > suffix) /* a SQLite database's */
        snprintf(out, PATH_MAX + 8, "%.*s" PGW_STORE_NONCES_SUFFIX, (int)(n - suffix), lock->path);
}

/* Whether `file` is still there after the start took its nonces or a
 * stop could not write its own; if so, says on stderr (after the warning,
 * which ends without its newline) to remove it: a start after this run (a
 * crash, or a stop that could not write) may take that file for the last
 * run's nonces, all of them, and let in a replay of a request signed in
 * this run. Only its removal keeps that from being. */
static bool left_there(const char *file)
{
    struct stat st;
    if (lstat(file, &st) != 0)
        return false;
    fprintf(stderr,
            "; it is left there: remove %s before the next start, which may take it for the "
            "last run's nonces, all of them, and let a request signed in this run be replayed\n",
            file);
    return true;
}

/* The nonces the last clean stop kept; else says that signed requests
 * stamped before now are refused a while. A new database had no run
 * before: a file beside it is another ledger's, gone (a crash of this run
 * would take it for this run's). */
static void restore_nonces(pgw_http *http, const char *file, bool existed)
{
    if (file[0] == '\0')
        return;
    if (!existed) { /* one left there is as dangerous as a read one left */
        if (unlink(file) != 0 && errno != ENOENT) {
            fprintf(stderr,
                    "pointsgw serve: warning: a nonces file beside a new database, another "
                    "ledger's, cannot be removed (%s: %s)",
                    file, strerror(errno));
            if (!left_there(file))
                fputc('\n', stderr);
        }
        return;
    }
    pgw_err err;
    bool kept = false;
    /* A file there but not relied on is said as such, not as none (an
     * operator's walkthrough read "no FILE" of a file cut short). Read
     * whole but not removed, its nonces are this run's all the same, and
     * the stamps before now refused as well: not "not taken" (a review). */
    if (pgw_auth_restore_nonces(pgw_http_auth(http), file, (int64_t)time(NULL), &kept, &err) !=
        PGW_OK) {
        fprintf(stderr,
                "pointsgw serve: warning: the last run's nonces of signed requests are not relied "
                "on (%s): those stamped before now are refused for %d s",
                err.msg, PGW_SIGNATURE_SKEW_S);
        if (!left_there(file))
            fputc('\n', stderr);
    } else if (!kept) /* not only a crash: a restore or a move leaves the file behind */
        fprintf(stderr,
                "pointsgw serve: warning: the last run kept no nonces of signed requests (no "
                "%s: it did not stop cleanly, or the database was restored or moved, or an "
                "older pointsgw served it): those stamped before now are refused for %d s\n",
                file, PGW_SIGNATURE_SKEW_S);
}

static void keep_nonces(pgw_http *http, const char *file)
{
    pgw_err err;
    if (file[0] == '\0' ||
        pgw_auth_save_nonces(pgw_http_auth(http), file, (int64_t)time(NULL), &err) == PGW_OK)
        return;
    fprintf(stderr, "pointsgw serve: warning: cannot keep the nonces of signed requests: %s",
            err.msg);
    if (!left_there(file)) /* else the older file there, which the next start may take */
        fprintf(stderr, ": the next start refuses those stamped before it for %d s\n",
                PGW_SIGNATURE_SKEW_S);
}

/*
 * serve's exit when starting failed with `rc`, said in `failed`: the
 * database's failure (the store marks it: error.h pgw_err_set_database)
 * is told by its code, as every command tells it (exit_for: a damaged
 * file, a full disk, a server not answering is 1; a login the server
 * refuses, a file this user may not write, 2); any other refusal (a key,
 * a secret, the address) is 2, whatever its code: a listen that failed is
 * PGW_EUNAVAILABLE too. By the mark, not by the message's first words,
 * which may be reworded; nor by opening the database again to ask: a
 * start refused for a key would then have migrated it.
 */
static int serve_failure_exit(int rc, const pgw_err *failed)
{
    return failed->database ? exit_for(rc) : EXIT_USAGE;
}

static int cmd_serve(int argc, char **argv)
{
    flag_set flags = {0};
    flag_add(&flags, "--config", true);
    flag_add(&flags, "--db", true);
    flag_add(&flags, "--listen", true);
    int rc = flags_parse(&flags, "serve", argc, argv);
    if (rc != 0)
        return rc > 0 ? EXIT_OK : EXIT_USAGE;
    bool hangups = catch_hangups();
    const char *path = flag_get(&flags, "--config") ? flag_get(&flags, "--config") : DEFAULT_CONFIG;
    reloader reload = {.path = path};
    char *text = NULL; /* what a reload compares the file with */
    pgw_config *cfg = load_config(flag_get(&flags, "--config"), &text, &reload.running_len);
    if (cfg == NULL) {
        stop_reloads(NULL);
        return EXIT_USAGE;
    }
    reload.running = cfg;
    reload.running_text = text;
    const char *db = flag_get(&flags, "--db") ? flag_get(&flags, "--db") : cfg->db;
    const char *listen = flag_get(&flags, "--listen") ? flag_get(&flags, "--listen") : cfg->listen;
    pgw_err err;
    /* Before the database's folder is made: a start refused leaves nothing. */
    bool listenable = tls_files_ok(cfg, &flags, "pointsgw serve");
    if (listenable && pgw_http_check_listen(listen, &err) != PGW_OK) {
        fprintf(stderr, "pointsgw serve: %s\n", err.msg);
        listenable = false;
    }
    if (!listenable) {
        pgw_config_free(cfg);
        free(text);
        stop_reloads(NULL);
        return EXIT_USAGE;
    }
    /* A database serve creates is its owner's alone, as a backup is: SQLite
     * gives its -wal and -shm files the database's mode. Serve creates no
     * other file but its lock file (take_serve_lock), 0600 too. */
    umask(077);
    char made[PGW_STORE_URL_MAX + 1];
    make_db_dir(db, made);
    serve_lock lock;
    if (!take_serve_lock(db, &lock)) {
        if (made[0] != '\0')
            (void)rmdir(made);
        pgw_config_free(cfg);
        free(text);
        stop_reloads(NULL);
        return EXIT_USAGE;
    }
    bool existed = sqlite_file(db) == NULL || access(sqlite_file(db), F_OK) == 0;
    setvbuf(stdout, NULL, _IONBF, 0); /* the API buffers its lines: a write per pass */
    raise_open_files(cfg);
    pgw_http_options opts = {.cfg = cfg,
                             .db_url = db,
                             .listen = listen,
                             .log = stdout,
                             .body_max = (size_t)cfg->http.body_max_bytes,
                             .body_timeout_s = cfg->http.body_timeout_s,
                             .keepalive_timeout_s = cfg->http.keepalive_timeout_s,
                             .inflight_max = (size_t)cfg->http.max_inflight,
                             .batch_max = (size_t)cfg->http.commit_batch,
                             .tls_cert_file = cfg->http.tls ? cfg->http.cert_file : NULL,
                             .tls_key_file = cfg->http.tls ? cfg->http.key_file : NULL};
    pgw_http *http = NULL;
    /* libcurl's global state, once, before any outbound worker starts. */
    int started = pgw_http_client_init(&err);
    if (started == PGW_OK)
        started = pgw_http_new(&opts, &http, &err);
    if (started != PGW_OK) {
        fprintf(stderr, "pointsgw serve: %s\n", err.msg);
        int code = serve_failure_exit(started, &err);
        drop_serve_lock(&lock, made[0] != '\0');
        if (made[0] != '\0') /* a start refused leaves no folder it made (empty: else kept) */
            (void)rmdir(made);
        pgw_config_free(cfg);
        free(text);
        stop_reloads(NULL);
        return code;
    }
    char nonces[PATH_MAX + 8];
    nonce_file(&lock, nonces);
    restore_nonces(http, nonces, existed);
    serving = http;
    reload.http = http;
    pthread_t reload_thread;
    bool reloads = catch_signals(&reload, &reload_thread, hangups);
    tell_database_file("serve", db, existed);
    char shown[PGW_STORE_URL_MAX + 1]; /* a password in the URL stays out of the log */
    pgw_redact_db_url(db, shown, sizeof(shown));
    fprintf(stderr, "pointsgw serve: %s, listening on %s (port %d, %s), database %s\n",
            cfg->mall_name, listen, pgw_http_port(http), cfg->http.tls ? "https" : "http", shown);
    pgw_http_stopped stopped;
    rc = pgw_http_run(http, &stopped, &err);
    serving = NULL;
    stop_reloads(reloads ? &reload_thread : NULL); /* before the server it hands keys to goes */
    pgw_config_free(reload.keys_from);
    keep_nonces(http, nonces);
    pgw_http_free(http); /* the writer has committed everything it acknowledged */
    drop_serve_lock(&lock, false);
    pgw_http_client_cleanup();
    if (rc != PGW_OK) /* not "stopped cleanly": nothing asked it to stop */
        fprintf(stderr, "pointsgw serve: %s\n", err.msg);
    if (rc == PGW_OK || stopped.answers_cut > 0)
        say_stopped(&stopped);
    pgw_config_free(cfg);
    free(text);
    return rc == PGW_OK ? EXIT_OK : EXIT_PROBLEM;
}

#define JSON_FILE_MAX (1 << 20) /* an event or a context is a few hundred bytes */

/* Reads a JSON file of at most JSON_FILE_MAX bytes, or prints why not. */
/* Reads a whole file of at most `max` bytes (malloc'd, NUL-terminated). */
static char *read_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "pointsgw: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max + 1);
    *len = buf ? fread(buf, 1, max + 1, f) : 0;
    int read_error = ferror(f) ? errno : 0; /* a folder opens, then fails to read: EISDIR */
    fclose(f);
    const char *problem = buf == NULL ? "out of memory" : *len > max ? "too large" : NULL;
    if (read_error != 0)
        fprintf(stderr, "pointsgw: %s: %s\n", path, strerror(read_error));
    else if (problem != NULL)
        fprintf(stderr, "pointsgw: %s: %s (at most %zu bytes)\n", path, problem, max);
    if (read_error != 0 || problem != NULL) {
        free(buf);
        return NULL;
    }
    buf[*len] = '\0';
    return buf;
}

static json_t *read_json_file(const char *path)
{
    size_t len = 0;
    char *buf = read_file(path, JSON_FILE_MAX, &len);
    json_t *doc = NULL;
    json_error_t jerr;
    if (buf != NULL && (doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL)
        fprintf(stderr, "pointsgw: %s:%d:%d: invalid JSON: %s\n", path, jerr.line, jerr.column,
                jerr.text);
    free(buf);
    return doc;
}

static int quote_print(const pgw_config *cfg, const pgw_event_doc *doc, const pgw_member_ctx *ctx)
{
    pgw_earning *earning = calloc(1, sizeof(*earning));
    PGW_ASSERT(earning != NULL);
    pgw_err err;
    pgw_err_clear(&err);
    int rc = pgw_rules_earn(&cfg->rules, &doc->event, ctx, earning, &err);
    if (rc != PGW_OK) {
        fprintf(stderr, "pointsgw quote: %s\n", err.msg);
        free(earning);
        return EXIT_USAGE;
    }
    /* The API's own rendering, indented for a person. */
    static char compact[PGW_ANSWER_MAX];
    pgw_json_out o;
    pgw_json_out_init(&o, compact, sizeof(compact));
    pgw_json_out_begin_object(&o);
    pgw_earning_write(&o, &cfg->rules, doc, earning, earning->points);
    pgw_json_out_end_object(&o);
    if (o.overflow) { /* the API could not store it either */
        fprintf(stderr, "pointsgw quote: the answer is longer than %d bytes\n", PGW_ANSWER_MAX);
        free(earning);
        return EXIT_USAGE;
    }
    json_t *out = json_loads(compact, 0, NULL);
    char *text = out ? json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    PGW_ASSERT(text != NULL);
    printf("%s\n", text);
    free(text);
    json_decref(out);
    free(earning);
    return EXIT_OK;
}

static int cmd_quote(int argc, char **argv)
{
    flag_set flags = {0};
    flag_add(&flags, "--config", true);
    flag_add(&flags, "--event", true);
    flag_add(&flags, "--context", true);
    pgw_config *cfg;
    int rc = start_command("quote", &flags, argc, argv, &cfg);
    if (rc >= 0)
        return rc;
    if (flag_get(&flags, "--event") == NULL) {
        fprintf(stderr, "pointsgw quote: --event FILE is required\n");
        pgw_config_free(cfg);
        return EXIT_USAGE;
    }
    int exit_code = EXIT_USAGE;
    pgw_event_doc *doc = calloc(1, sizeof(*doc));
    pgw_member_ctx_doc *ctx = calloc(1, sizeof(*ctx));
    PGW_ASSERT(doc != NULL && ctx != NULL);
    json_t *event_json = read_json_file(flag_get(&flags, "--event"));
    json_t *ctx_json = NULL;
    const char *ctx_path = flag_get(&flags, "--context");
    if (ctx_path != NULL)
        ctx_json = read_json_file(ctx_path);
    pgw_err err;
    pgw_err_clear(&err);
    if (event_json == NULL || (ctx_path != NULL && ctx_json == NULL))
        goto done;
    /* Each refusal names its file: a JSON path alone ("$: expected an
     * object") read as the event's when it was the context's. */
    const char *refused = NULL;
    if (pgw_event_from_json(event_json, &cfg->rules, doc, &err) != PGW_OK)
        refused = flag_get(&flags, "--event");
    else if (pgw_member_ctx_from_json(ctx_json, ctx, &err) != PGW_OK)
        refused = ctx_path;
    if (refused != NULL) {
        fprintf(stderr, "pointsgw quote: %s: %s\n", refused, err.msg);
        goto done;
    }
    exit_code = quote_print(cfg, doc, &ctx->ctx);
done:
    json_decref(event_json);
    json_decref(ctx_json);
    free(ctx);
    free(doc);
    pgw_config_free(cfg);
    return exit_code;
}

static void print_verify_report(const pgw_verify_report *r)
{
    /* A broken chain has no head to show: the walk stopped at the break. */
    bool broken = !r->ok && r->bad_id > 0;
    char head[2 * PGW_HASH_LEN + 1] = "- (the chain breaks before it)";
    if (!broken)
        pgw_hash_hex(r->head, head, sizeof(head));
    printf("transfers:  %lld checked%s\n"
           "accounts:   %lld\n"
           "members:    %lld checked against their lots\n"
           "points:     %lld moved in total\n"
           "chain head: %s\n"
           "refunds:    %lld checked against what their purchases wrote off\n",
           (long long)r->transfers, broken ? " before the break" : "", (long long)r->accounts,
           (long long)r->members, (long long)r->points_moved, head, (long long)r->refunds);
    if (r->ok)
        printf("OK: the hash chain is intact and every balance matches its lots\n");
    else if (r->bad_id > 0)
        printf("BROKEN at transfer %lld: %s\n", (long long)r->bad_id, r->problem);
    else
        printf("BROKEN: %s\n", r->problem);
}

/* The database URL: --db, else the configuration's `db`. */
static int resolve_db(const flag_set *flags, char *url, size_t cap)
{
    const char *db = flag_get(flags, "--db");
    if (db != NULL) {
        snprintf(url, cap, "%s", db);
        return EXIT_OK;
    }
    pgw_config *cfg = load_config(flag_get(flags, "--config"), NULL, NULL);
    if (cfg == NULL)
        return EXIT_USAGE;
    snprintf(url, cap, "%s", cfg->db);
    pgw_config_free(cfg);
    return EXIT_OK;
}

/* Whether this user may write the SQLite file `path` and its folder (the
 * -wal and -shm files), as a migration must. */
static bool may_write(const char *path)
{
    char dir[PGW_STORE_URL_MAX + 1];
    return access(path, W_OK) == 0 && pgw_path_folder(path, dir, sizeof(dir)) &&
           access(dir, W_OK | X_OK) == 0;
}

/*
 * The database for a command that only reads it. A SQLite file at this
 * build's schema is opened read-only, as it is: verify on a copy on
 * read-only media (or a file without write permission) failed, since
 * opening migrates. An older one is migrated where it can be written
 * (README: a check run with the newer binary is the upgrade), and said
 * plainly where it cannot. PostgreSQL: as every command opens it.
 */
static int open_to_read(const char *url, pgw_store **store, pgw_err *err)
{
    const char *file = sqlite_file(url);
    if (file == NULL)
        return pgw_store_open(url, false, store, err);
    int64_t version = 0;
    int rc = pgw_store_open_read_only(url, &version, store, err);
    if (rc != PGW_ESTATE || version == 0 || version > PGW_STORE_SCHEMA_VERSION)
        return rc;
    if (may_write(file))
        return pgw_store_open(url, false, store, err);
    return pgw_err_set(err, PGW_ESTATE,
                       "%s is at schema version %lld, older than this pointsgw's (%d), and "
                       "not writable here, so it cannot be migrated: check it with the "
                       "pointsgw that wrote it, or with this one on a writable copy (which "
                       "opening migrates)",
                       file, (long long)version, PGW_STORE_SCHEMA_VERSION);
}

static int cmd_verify(int argc, char **argv)
{
    flag_set flags = {0};
    flag_add(&flags, "--config", true);
    flag_add(&flags, "--db", true);
    int rc = flags_parse(&flags, "verify", argc, argv);
    if (rc != 0)
        return rc > 0 ? EXIT_OK : EXIT_USAGE;
    char url[PGW_STORE_URL_MAX + 1];
    if (resolve_db(&flags, url, sizeof(url)) != EXIT_OK)
        return EXIT_USAGE;
    pgw_store *store = NULL;
    pgw_verify_report report;
    pgw_err err;
    pgw_err_clear(&err);
    rc = open_to_read(url, &store, &err);
    if (rc == PGW_OK)
        rc = pgw_store_verify(store, &report, &err);
    if (rc != PGW_OK) {
        fprintf(stderr, "pointsgw verify: %s\n", err.msg);
        pgw_store_close(store);
        /* A log that cannot be read (a damaged file) is what verify is
         * for: a problem found, not a usage error a monitor would ignore;
         * so is a database that does not answer (exit_for). */
        return exit_for(rc);
    }
    pgw_store_close(store);
    print_verify_report(&report);
    return report.ok ? EXIT_OK : EXIT_PROBLEM;
}

/* Where a backup went and what its verify found (the store verified it
 * before it replaced anything). */
static void print_backup(const char *out, int64_t version, const pgw_verify_report *report)
{
    struct stat st;
    char target[PATH_MAX]; /* through a link: where the copy went */
    bool linked = lstat(out, &st) == 0 && S_ISLNK(st.st_mode) && realpath(out, target) != NULL;
    printf("backup: %s%s%s (schema version %lld)\n", out, linked ? " -> " : "",
           linked ? target : "", (long long)version);
    if (version != PGW_STORE_SCHEMA_VERSION) /* opening it would migrate it */
        printf("not verified: schema version %lld, this pointsgw's is %d (verify it with the "
               "pointsgw that wrote it)\n",
               (long long)version, PGW_STORE_SCHEMA_VERSION);
    else
        print_verify_report(report);
}

/* The signal mask backup started with, and the signals that stop a
 * command held on top of it from before a backup makes its copy's file
 * until out_guard knows its name (backup_guard). */
static sigset_t backup_mask;

static void hold_stops(void)
{
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGHUP);
    sigprocmask(SIG_BLOCK, &stops, &backup_mask);
}

/* pgw_store_backup's guard: a stop by signal while the copy is made or
 * verified removes the copy and SQLite's files beside it, as a stopped
 * report's partial file is (a stopped backup left one more set each run).
 * A stop held until the name was known comes now. */
static void backup_guard(const char *partial)
{
    if (partial == NULL) {
        out_unguard();
        return;
    }
    out_guard(partial);
    sigprocmask(SIG_SETMASK, &backup_mask, NULL);
}

static int cmd_backup(int argc, char **argv)
{
    flag_set flags = {0};
    flag_add(&flags, "--config", true);
    flag_add(&flags, "--db", true);
    flag_add(&flags, "--out", true);
    int rc = flags_parse(&flags, "backup", argc, argv);
    if (rc != 0)
        return rc > 0 ? EXIT_OK : EXIT_USAGE;
    const char *out = flag_get(&flags, "--out");
    char url[PGW_STORE_URL_MAX + 1];
    if (out == NULL || out[0] == '\0') {
        fprintf(stderr, "pointsgw backup: --out FILE is required\n");
        return EXIT_USAGE;
    }
    if (resolve_db(&flags, url, sizeof(url)) != EXIT_OK)
        return EXIT_USAGE;
    int64_t version = 0;
    pgw_verify_report report = {0}; /* filled when the copy was verified */
    pgw_err err;
    pgw_err_clear(&err);
    hold_stops();
    rc = pgw_store_backup(url, out, &version, &report, backup_guard, &err);
    sigprocmask(SIG_SETMASK, &backup_mask, NULL); /* when it failed before its copy */
    if (rc != PGW_OK) {
        if (report.problem[0] != '\0') /* a copy that does not verify: what was found */
            print_verify_report(&report);
        fprintf(stderr, "pointsgw backup: %s\n", err.msg);
        return exit_for(rc);
    }
    print_backup(out, version, &report);
    return EXIT_OK;
}

/* Runs the expiry through a writer on `url`, printing what it did. */
static int run_expiry(const pgw_config *cfg, const char *url, int64_t as_of)
{
    pgw_writer_options opts = {.db_url = url, .queue_cap = 1024, .batch_max = 256};
    /* The server's policy, as its sweep has: a hold released with none of
     * the risk rules kept its points in the day's redeem cap. */
    pgw_api_policy(cfg, &opts.policy);
    pgw_writer *writer = NULL;
    pgw_expire_report report = {0};
    pgw_err err;
    pgw_err_clear(&err);
    pgw_store *probe = NULL;
    /* Expiry never creates a database: a wrong path is an error. */
    int rc = pgw_store_open(url, false, &probe, &err);
    pgw_store_close(probe);
    if (rc == PGW_OK)
        rc = pgw_writer_start(&opts, &writer, &err);
    if (rc == PGW_OK)
        rc = pgw_expire_due(writer, url, as_of, &cfg->rules.tz, NULL, NULL, &report, &err);
    pgw_writer_stop(writer);
    /* What a run that failed part way did is said too: it is committed.
     * The storage failing (damaged, full, not answering) is exit 1, as
     * from every command (exit_for). */
    if (rc != PGW_OK && report.holds + report.lots + report.failed == 0) {
        fprintf(stderr, "pointsgw expire: %s\n", err.msg);
        return exit_for(rc);
    }
    char when[PGW_RFC3339_MAX];
    pgw_format_moment(as_of, &cfg->rules.tz, when);
    printf("released %lld holds past their deadline; expired %lld lots, %lld points, due by %s\n",
           (long long)report.holds, (long long)report.lots, (long long)report.points, when);
    if (rc == PGW_OK)
        return EXIT_OK;
    fprintf(stderr, "pointsgw expire: %s\n", err.msg);
    return report.failed > 0 ? EXIT_PROBLEM : exit_for(rc);
}

static int cmd_expire(int argc, char **argv)
{
    flag_set flags = {0};
    flag_add(&flags, "--config", true);
    flag_add(&flags, "--db", true);
    flag_add(&flags, "--as-of", true);
    pgw_config *cfg;
    int rc = start_command("expire", &flags, argc, argv, &cfg);
    if (rc >= 0)
        return rc;
    int64_t as_of = (int64_t)time(NULL);
    const char *given = flag_get(&flags, "--as-of");
    /* Read as report's and reconcile's --from/--to are (pgw_report_time_in):
     * an instant finance copies from one command is the same in the next. */
    if (given != NULL && !pgw_report_time_in(given, &as_of)) {
        fprintf(stderr,
                "pointsgw expire: --as-of is neither an RFC 3339 time "
                "(2026-11-24T10:00:00+08:00, say) nor unix seconds, " PGW_REPORT_TIME_RANGE "\n");
        pgw_config_free(cfg);
        return EXIT_USAGE;
    }
    /* Ahead of the clock, lots would lapse and holds be released before
     * their date, for good: not even the 300 s a fast till's event gets
     * (events meet holds as they are now, whatever their date). */
    if (as_of > (int64_t)time(NULL)) {
        fprintf(stderr,
                "pointsgw expire: --as-of is ahead of the clock: points would expire before "
                "their date\n");
        pgw_config_free(cfg);
        return EXIT_USAGE;
    }
    const char *db = flag_get(&flags, "--db");
    char url[PGW_STORE_URL_MAX + 1];
    snprintf(url, sizeof(url), "%s", db != NULL ? db : cfg->db);
    rc = run_expiry(cfg, url, as_of);
    pgw_config_free(cfg);
    return rc;
}
/* An existing database in one read transaction (finance's commands read a
 * snapshot), opened as verify opens it (open_to_read); snapshot_close ends
 * it and closes the store (NULL is fine). */
static int snapshot_open(const char *url, pgw_store **store, pgw_err *err)
{
    int rc = open_to_read(url, store, err);
    return rc == PGW_OK ? pgw_store_begin_read(*store, err) : rc;
}

static void snapshot_close(pgw_store *store)
{
    if (store != NULL)
        /* Nothing was written; a failed rollback is ended by the close
         * below all the same (closing a connection ends its transaction). */
        (void)pgw_store_rollback(store, NULL);
    pgw_store_close(store);
}

/* Rows in flight at once through the writer (import-balances, reconcile
 * --repair): they share commits (one at a time, each row waited for a sync
 * of its own). Their writer queues this many. */
#define ROWS_IN_FLIGHT 64

/*
 * The vault and a writer for rows streamed ROWS_IN_FLIGHT at a time,
 * applied with the API's policy; `notify` false sends no notices. On
 * failure neither is left open.
 */
static int rows_writer_start(const pgw_config *cfg, const char *url, bool notify, pgw_vault **vault,
                             pgw_writer **w, pgw_err *err)
{
    const pgw_security_config *sec = &cfg->security;
    pgw_writer_options wo = {
        .db_url = url, .queue_cap = ROWS_IN_FLIGHT, .batch_max = ROWS_IN_FLIGHT};
    pgw_api_policy(cfg, &wo.policy);
    wo.policy.notify = wo.policy.notify && notify;
    bool warned = false;
    int rc = pgw_vault_open(sec->phone_hmac_key_env, sec->phone_aes_key_env, sec->development_mode,
                            vault, &warned, err);
    pgw_vault_warn_public(*vault); /* as serve says it: these rows' phones are stored */
    if (rc == PGW_OK)
        rc = pgw_writer_start(&wo, w, err);
    if (rc == PGW_OK) /* the writer made the database if it was not there */
        rc = pgw_api_check_phone_keys(*vault, url, err);
    if (rc != PGW_OK) {
        pgw_writer_stop(*w);
        *w = NULL;
        pgw_vault_free(*vault);
        *vault = NULL;
    }
    return rc;
}

/* Runs the rows `fill` gives through `w` (pgw_writer_run_stream), each
 * reported in order; PGW_ENOMEM before any. */
static int stream_rows(pgw_writer *w, pgw_writer_fill fill, pgw_writer_report report, void *ctx)
{
    pgw_command *slots = calloc(ROWS_IN_FLIGHT, sizeof(*slots));
    int rc =
        slots ? pgw_writer_run_stream(w, slots, ROWS_IN_FLIGHT, fill, report, ctx) : PGW_ENOMEM;
    free(slots);
    return rc;
}

/* What a repair did. */
typedef struct repair_tally {
    long missing, created, replayed, failed;
} repair_tally;

/* A statement row as the event object POST /v1/events would take. */
static json_t *row_event(const pgw_recon_row *r, const char *channel, const char *shop,
                         const pgw_tz *tz, pgw_err *err)
{
    if (r->member[0] == '\0') {
        pgw_err_set(err, PGW_EINVAL, "the row names no member (its member column is empty)");
        return NULL;
    }
    /* The statement reader refuses a time the zone cannot write (a
     * malformed_row, never repaired); checked all the same, not posted
     * as "", should another reader ever hand one on. */
    char when[PGW_RFC3339_MAX];
    if (pgw_format_rfc3339(r->occurred_at, tz, when, sizeof(when)) != PGW_OK) {
        pgw_err_set(err, PGW_ERANGE,
                    "occurred_at %lld is outside the years %d..%d in the mall's zone (%s)",
                    (long long)r->occurred_at, PGW_YEAR_MIN, PGW_YEAR_MAX, tz->name);
        return NULL;
    }
    json_t *member = pgw_member_json_from_text(r->member, err);
    json_t *ev = member ? json_pack("{s:s,s:s,s:s,s:s,s:o}", "event_id", r->event_id, "channel",
                                    channel, "type", r->type, "occurred_at", when, "member", member)
                        : NULL;
    if (ev != NULL && shop != NULL && strcmp(shop, "-") != 0) /* "-": the events without one */
        json_object_set_new(ev, "shop_id", json_string(shop));
    if (ev != NULL && r->amount_fen > 0)
        json_object_set_new(ev, "amount_fen", json_integer(r->amount_fen));
    if (ev != NULL && strcmp(r->type, "custom") == 0)
        json_object_set_new(ev, "points", json_integer(r->points));
    if (ev != NULL && strcmp(r->type, "refund") == 0 && r->original[0] != '\0')
        json_object_set_new(ev, "original_event_id", json_string(r->original));
    if (ev == NULL && member != NULL)
        pgw_err_set(err, PGW_EINVAL, "a field is not valid UTF-8");
    return ev;
}

/* One row in flight: the event its command borrows, and what a failure names. */
typedef struct repair_slot {
    pgw_event_doc doc;
    pgw_earning earning;
    const pgw_rules *rules;
    size_t line;
    char event_id[PGW_EVENT_ID_MAX + 1];
} repair_slot;

typedef struct repair_run {
    const pgw_config *cfg;
    const pgw_vault *vault;
    FILE *missing;
    const char *channel, *shop;
    bool refunds; /* the second pass */
    repair_slot slots[ROWS_IN_FLIGHT];
    repair_tally tally;
} repair_run;

/* The answer kept with the row's key, as POST /v1/events renders it. */
static void render_repair(pgw_command *cmd, void *render_ctx)
{
    const repair_slot *rs = render_ctx;
    pgw_event_render(cmd, rs->rules, &rs->doc);
}

/* One missing row as the event command the API would make of it, in `rs`. */
static int repair_command(const repair_run *run, const pgw_recon_row *r, repair_slot *rs,
                          pgw_command *cmd, pgw_err *err)
{
    const pgw_config *cfg = run->cfg;
    memset(cmd, 0, sizeof(*cmd));
    /* Without --shop, a statement with a shop_id column names each row's
     * shop (in source; "-": none): the row goes in as that shop's, the
     * key the till's own event has. A name no shop of the configuration
     * has (an appid) is refused as --shop's is. */
    const char *shop = run->shop != NULL ? run->shop : r->source[0] ? r->source : NULL;
    if (run->shop == NULL && shop != NULL && strcmp(shop, "-") != 0 &&
        pgw_rules_find_shop(&cfg->rules, shop) < 0) {
        return pgw_err_set(err, PGW_EINVAL,
                           "shop_id %s is not a shop of the configuration (an appid's events are "
                           "sent again by its mini program)",
                           shop);
    }
    json_t *obj = row_event(r, run->channel, shop, &cfg->rules.tz, err);
    rs->rules = &cfg->rules;
    cmd->kind = PGW_COMMAND_EVENT;
    cmd->asked_at = (int64_t)time(NULL);
    int rc = obj ? pgw_event_from_json(obj, &cfg->rules, &rs->doc, err) : PGW_EINVAL;
    if (rc == PGW_OK)
        rc = pgw_event_command(run->vault, obj, &rs->doc, (int64_t)time(NULL), &rs->earning, cmd,
                               err);
    if (rc == PGW_OK) { /* the row's own: the till's event, if it comes, replays it */
        pgw_command_row_fingerprint(cmd, cmd->fingerprint);
        cmd->has_fingerprint_as_sent = false; /* a repair is keyed by its row alone */
        cmd->has_fingerprint_time_as_sent = false;
        cmd->has_fingerprint_time_qty_as_sent = false;
    }
    json_decref(obj);
    cmd->render = render_repair;
    cmd->render_ctx = rs;
    return rc;
}

/*
 * The next row to post: every other row first, then the refunds, whose
 * purchase may be missing too and sort after them (RF-9 before SA-9). The
 * writer applies the stream in order, so a refund meets its purchase
 * committed, or applied before it in the same transaction.
 */
static bool next_missing(repair_run *run, pgw_recon_row *r)
{
    for (;;) {
        while (pgw_recon_read_missing(run->missing, r)) {
            if ((strcmp(r->type, "refund") == 0) == run->refunds)
                return true;
        }
        if (run->refunds)
            return false;
        run->refunds = true;
        rewind(run->missing);
    }
}

/* The next row as a command (pgw_writer_fill). */
static int repair_fill(void *ctx, size_t slot, pgw_command *cmd, bool *end, pgw_err *err)
{
    repair_run *run = ctx;
    pgw_recon_row r;
    *end = !next_missing(run, &r);
    if (*end)
        return PGW_OK;
    run->tally.missing++;
    repair_slot *rs = &run->slots[slot];
    rs->line = r.line;
    snprintf(rs->event_id, sizeof(rs->event_id), "%s", r.event_id);
    return repair_command(run, &r, rs, cmd, err);
}

/* Counts a row's outcome, printing a failure (pgw_writer_report). */
static void repair_report(void *ctx, size_t slot, const pgw_command *cmd, int rc,
                          const pgw_err *err)
{
    repair_run *run = ctx;
    const repair_slot *rs = &run->slots[slot];
    if (rc != PGW_OK) {
        run->tally.failed++;
        fprintf(stderr, "pointsgw reconcile: repair: line %zu, event %s: %s\n", rs->line,
                rs->event_id, err->msg);
    } else if (cmd->replayed) {
        run->tally.replayed++;
    } else {
        run->tally.created++;
    }
}

/* Posts every row the run kept in `missing`, printing each failure. */
static int repair_missing(const pgw_config *cfg, const char *url, FILE *missing,
                          const char *channel, const char *shop, repair_tally *t)
{
    pgw_vault *vault = NULL;
    pgw_writer *w = NULL;
    pgw_err err;
    repair_run *run = calloc(1, sizeof(*run));
    /* A repaired event may be weeks old, and its member may have heard of it
     * at the till: "points arrived" now would mislead. */
    if (run == NULL || rows_writer_start(cfg, url, false, &vault, &w, &err) != PGW_OK) {
        fprintf(stderr, "pointsgw reconcile: repair: %s\n", run ? err.msg : "out of memory");
        free(run);
        return EXIT_USAGE;
    }
    run->cfg = cfg;
    run->vault = vault;
    run->missing = missing;
    run->channel = channel;
    run->shop = shop;
    rewind(missing);
    int rc = stream_rows(w, repair_fill, repair_report, run);
    *t = run->tally;
    pgw_writer_stop(w);
    pgw_vault_free(vault);
    free(run);
    if (rc != PGW_OK)
        fprintf(stderr, "pointsgw reconcile: repair: out of memory\n");
    return rc == PGW_OK ? EXIT_OK : EXIT_PROBLEM;
}

/* A --from or --to of reconcile and report is read as the HTTP API reads
 * its from and to (pgw_report_time_in): one period may not mean two
 * things by where it is typed. */
#define FROM_UNREADABLE                                                                            \
    "--from is neither an RFC 3339 time (2026-11-01T00:00:00+08:00, say) nor unix "                \
    "seconds, " PGW_REPORT_TIME_RANGE
#define TO_UNREADABLE                                                                              \
    "--to is neither an RFC 3339 time (2026-12-01T00:00:00+08:00, say) nor unix "                  \
    "seconds, " PGW_REPORT_TIME_RANGE

/* --from / --to / --format / --summary-rows / --channel / --shop checked into *o. */
static int reconcile_args(const flag_set *flags, const pgw_config *cfg, pgw_recon_options *o)
{
    const char *channel = flag_get(flags, "--channel"), *shop = flag_get(flags, "--shop");
    const char *from = flag_get(flags, "--from"), *to = flag_get(flags, "--to");
    const char *format = flag_get(flags, "--format");
    pgw_err err;
    *o = (pgw_recon_options){.filter = {channel, shop, 0, INT64_MAX}, .tz = &cfg->rules.tz};
    const char *bad = NULL;
    if (flag_get(flags, "--statement") == NULL || channel == NULL)
        bad = "--statement FILE and --channel NAME are required";
    else if (pgw_store_check_event_filter(&o->filter, &err) != PGW_OK)
        bad = err.msg;
    else if (from != NULL && !pgw_report_time_in(from, &o->filter.from))
        bad = FROM_UNREADABLE;
    else if (to != NULL && !pgw_report_time_in(to, &o->filter.to))
        bad = TO_UNREADABLE;
    else if (o->filter.from >= o->filter.to)
        bad = "--from must come before --to";
    else if (format != NULL && strcmp(format, "json") != 0 && strcmp(format, "csv") != 0)
        bad = "--format is json or csv";
    o->format = format != NULL && strcmp(format, "csv") == 0 ? PGW_RECON_CSV : PGW_RECON_JSON;
    o->csv_summary = flag_get(flags, "--summary-rows") != NULL;
    if (bad == NULL && o->csv_summary && o->format != PGW_RECON_CSV)
        bad = "--summary-rows is for --format csv (the JSON report has its summary)";
    if (bad != NULL)
        fprintf(stderr, "pointsgw reconcile: %s\n", bad);
    return bad ? EXIT_USAGE : EXIT_OK;
}

/* Says which of the statement's columns are read past: a misspelt
 * original_event_id would otherwise go unseen until a repair. */
static void tell_ignored_columns(const pgw_statement *st)
{
    const char *name = pgw_statement_ignored(st, 0);
    if (name == NULL)
        return;
    fprintf(stderr, "pointsgw reconcile: columns ignored: \"%s\"", name);
    for (size_t i = 1; (name = pgw_statement_ignored(st, i)) != NULL; i++)
        fprintf(stderr, ", \"%s\"", name);
    fputc('\n', stderr);
}

/*
 * A channel the log has no event on is most likely misspelt: every row is
 * then missing_in_ledger, and a repair would credit each again under the
 * misspelt channel (a new key). Refused for --repair unless --new-channel
 * says the channel's events were all lost; said for a report. And --shop -
 * reads a channel's events keyed "-" only: a mini program's events, keyed
 * by their appid since schema 23, would be missing_in_ledger and a repair
 * would credit them again under "-". Refused when the channel holds any;
 * the whole channel (no --shop) reads every source.
 */
static int check_channel(pgw_store *store, const pgw_recon_options *o, bool new_channel,
                         pgw_err *err)
{
    const char *channel = o->filter.channel, *shop = o->filter.shop;
    bool repair = o->missing != NULL, has = false;
    pgw_recon_scope scope;
    /* Every row a repair posts is an event on the channel: one the API
     * would refuse (`system`, the gateway's own) is refused here, before
     * the first, rather than once a row. */
    int rc = repair ? pgw_event_check_channel(channel, "--repair: --channel", err) : PGW_OK;
    if (rc == PGW_OK)
        rc = pgw_recon_read_scope(store, &o->filter, &scope, err);
    if (rc == PGW_OK && !scope.has_channel_events && repair && !new_channel)
        return pgw_err_set(
            err, PGW_EINVAL,
            "--repair: the log has no event on channel %s (misspelt?): its rows "
            "would all be credited again under it; nothing was posted (--new-channel "
            "if its events were all lost)",
            channel);
    if (rc == PGW_OK && !scope.has_channel_events)
        fprintf(stderr,
                "pointsgw reconcile: warning: the log has no event on channel %s (misspelt?): "
                "no row can match; check --channel\n",
                channel);
    else if (rc == PGW_OK && !scope.has_shop_events) /* said, not refused: see README */
        fprintf(stderr,
                "pointsgw reconcile: warning: the log has no event of shop %s on channel %s "
                "(misspelt?): no row can match; check --shop\n",
                shop, channel);
    if (rc != PGW_OK || !repair || shop == NULL || strcmp(shop, "-") != 0)
        return rc;
    rc = pgw_store_channel_has_keys(store, channel, "wx", &has, err);
    if (rc == PGW_OK && has)
        rc = pgw_err_set(err, PGW_EINVAL,
                         "--repair: channel %s has events keyed by an appid, which --shop - does "
                         "not read: repair the whole channel (without --shop)",
                         channel);
    return rc;
}

/* Opens the statement and the store, runs the match into `out`. */
static int reconcile_into(const flag_set *flags, const char *url, pgw_recon_options *o, FILE *out,
                          pgw_recon_summary *sum)
{
    pgw_statement *st = NULL;
    pgw_store *store = NULL;
    pgw_err err;
    int rc = pgw_statement_open_file(flag_get(flags, "--statement"), &st, &err);
    if (rc == PGW_OK) {
        tell_ignored_columns(st);
        rc = snapshot_open(url, &store, &err);
    }
    if (rc == PGW_OK)
        rc = check_channel(store, o, flag_get(flags, "--new-channel") != NULL, &err);
    if (rc == PGW_OK)
        rc = pgw_recon_run(store, st, o, out, sum, &err);
    snapshot_close(store);
    pgw_statement_free(st);
    if (rc != PGW_OK)
        fprintf(stderr, "pointsgw reconcile: %s\n", err.msg);
    return exit_for(rc);
}

/*
 * Whether --out names a file the command reads (the same file through a
 * link or another name: its device and inode), said as `cmd`'s refusal:
 * renamed over it, the report replaced finance's statement (`reconcile
 * --statement s.csv --out s.csv`), the configuration or the database.
 * `db` is a store URL: only SQLite's is a file.
 */
static bool out_is_input(const char *cmd, const char *out, const char *statement,
                         const char *config, const char *db)
{
    struct stat o, in;
    if (out == NULL || stat(out, &o) != 0)
        return false;
    const struct {
        const char *what, *path;
    } inputs[] = {{"the statement", statement},
                  {"the configuration", config ? config : DEFAULT_CONFIG},
                  {"the database", sqlite_file(db)}};
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        const char *path = inputs[i].path;
        if (path != NULL && stat(path, &in) == 0 && in.st_dev == o.st_dev &&
            in.st_ino == o.st_ino) {
            fprintf(stderr,
                    "pointsgw %s: --out %s is %s (%s): the output would replace it; name "
                    "another file\n",
                    cmd, out, inputs[i].what, path);
            return true;
        }
    }
    return false;
}

static int cmd_reconcile(int argc, char **argv)
{
    flag_set flags = {0};
    static const char *const names[] = {"--statement", "--channel", "--shop",   "--from", "--to",
                                        "--format",    "--out",     "--config", "--db"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        flag_add(&flags, names[i], true);
    flag_add(&flags, "--repair", false);
    flag_add(&flags, "--new-channel", false);
    flag_add(&flags, "--summary-rows", false);
    pgw_config *cfg;
    int rc = start_command("reconcile", &flags, argc, argv, &cfg);
    if (rc >= 0)
        return rc;
    pgw_recon_options o;
    rc = reconcile_args(&flags, cfg, &o);
    char url[PGW_STORE_URL_MAX + 1];
    snprintf(url, sizeof(url), "%s", flag_get(&flags, "--db") ? flag_get(&flags, "--db") : cfg->db);
    bool repair = flag_get(&flags, "--repair") != NULL;
    /* A repaired row is posted with --shop as its shop: an appid there (a
     * mini program's events, keyed by it) is no shop, and a statement's
     * member (phone, card, member_id) cannot name the openid that would
     * key the event by it. Said before any work rather than once a row. */
    const char *shop = o.filter.shop;
    if (rc == EXIT_OK && repair && shop != NULL && strcmp(shop, "-") != 0 &&
        pgw_rules_find_shop(&cfg->rules, shop) < 0) {
        fprintf(stderr,
                "pointsgw reconcile: --repair: %s is not a shop of the configuration (an "
                "appid's events are sent again by its mini program)\n",
                shop);
        rc = EXIT_USAGE;
    }
    const char *out_path = flag_get(&flags, "--out");
    out_file out = {.f = stdout};
    if (rc == EXIT_OK && out_is_input("reconcile", out_path, flag_get(&flags, "--statement"),
                                      flag_get(&flags, "--config"), url))
        rc = EXIT_USAGE;
    if (rc == EXIT_OK && out_open(out_path, &out) != 0) {
        fprintf(stderr, "pointsgw reconcile: %s: %s\n", out_path, strerror(errno));
        rc = EXIT_USAGE;
    }
    o.warn = stderr; /* a row the log has at several shops, paired with none */
    o.missing = rc == EXIT_OK && repair ? tmpfile() : NULL;
    if (rc == EXIT_OK && repair && o.missing == NULL) {
        fprintf(stderr, "pointsgw reconcile: no temporary file for the rows to repair: %s\n",
                strerror(errno));
        rc = EXIT_PROBLEM;
    }
    pgw_recon_summary sum = {0};
    if (rc == EXIT_OK)
        rc = reconcile_into(&flags, url, &o, out.f, &sum);
    /* An exit 1 is exceptions found or a failure (the database, the disk)
     * that left no report in the file: say which. */
    bool unwritten = rc == EXIT_PROBLEM && out_path != NULL && out.f != NULL;
    if (out_close(&out, rc == EXIT_OK) != 0 && rc == EXIT_OK) {
        unwritten = true;
        rc = EXIT_PROBLEM;
    }
    if (unwritten)
        fprintf(stderr, "pointsgw reconcile: no report was written to %s\n", out_path);
    if (rc == EXIT_OK && repair) {
        repair_tally t = {0};
        rc = repair_missing(cfg, url, o.missing, o.filter.channel, o.filter.shop, &t);
        fprintf(stderr,
                "{\"repair\":{\"missing_in_ledger\":%ld,\"created\":%ld,\"replayed\":%ld,"
                "\"failed\":%ld}}\n",
                t.missing, t.created, t.replayed, t.failed);
    }
    if (o.missing != NULL)
        fclose(o.missing);
    int64_t exceptions = pgw_recon_exceptions(&sum);
    /* With --out, stdout is empty: without this the exit 1 said nothing. */
    if (rc == EXIT_OK && exceptions > 0 && out_path != NULL)
        fprintf(stderr, "pointsgw reconcile: %lld exception%s found: the report is in %s\n",
                (long long)exceptions, exceptions == 1 ? "" : "s", out_path);
    if (rc == EXIT_OK && sum.count[PGW_RECON_MATCHED] !=
                             sum.statement_rows + sum.ledger_rows - sum.count[PGW_RECON_MATCHED])
        rc = EXIT_PROBLEM; /* anything but a clean match */
    pgw_config_free(cfg);
    return rc;
}
#define IMPORT_FILE_MAX (64 << 20) /* a shop's whole card base fits many times over */

typedef struct import_tally {
    long created, by_card, by_phone, replayed, rejected;
    int64_t points;
} import_tally;

typedef struct import_run {
    const pgw_vault *vault;
    pgw_csv *csv;
    const int *col;
    pgw_import_file *file;
    pgw_csv_row row;
    size_t lines[ROWS_IN_FLIGHT]; /* each slot's row's line */
    import_tally tally;
} import_run;

/* The next row as a command (pgw_writer_fill). */
static int import_fill(void *ctx, size_t slot, pgw_command *cmd, bool *end, pgw_err *err)
{
    import_run *r = ctx;
    int rc = pgw_csv_next(r->csv, &r->row, end, err);
    r->lines[slot] = r->row.line;
    if (rc == PGW_OK && !*end)
        rc = pgw_import_row(r->vault, r->file, &r->row, r->col, (int64_t)time(NULL), cmd, err);
    return rc;
}

/* Counts a row's outcome, printing a rejection (pgw_writer_report). */
static void import_report(void *ctx, size_t slot, const pgw_command *cmd, int rc,
                          const pgw_err *err)
{
    import_run *r = ctx;
    import_tally *t = &r->tally;
    if (rc != PGW_OK) {
        t->rejected++;
        fprintf(stderr, "line %zu: %s: %s\n", r->lines[slot], pgw_code_name(rc), err->msg);
    } else if (cmd->replayed) {
        t->replayed++;
    } else {
        t->created += cmd->import_match == PGW_IMPORT_CREATED;
        t->by_card += cmd->import_match == PGW_IMPORT_BY_CARD;
        t->by_phone += cmd->import_match == PGW_IMPORT_BY_PHONE;
        t->points += cmd->points;
    }
}

/* Imports every row through `w`, printing each rejection; fills *t. */
static int import_rows(pgw_writer *w, const pgw_vault *vault, pgw_csv *csv, const int *col,
                       pgw_import_file *file, import_tally *t)
{
    import_run *r = calloc(1, sizeof(*r));
    int rc = r ? PGW_OK : PGW_ENOMEM;
    if (rc == PGW_OK) {
        *r = (import_run){.vault = vault, .csv = csv, .col = col, .file = file};
        rc = stream_rows(w, import_fill, import_report, r);
        *t = r->tally;
    }
    free(r);
    return rc;
}

/* Checks the flags and the shop; the file's shop, rate and batch id. */
static int import_args(const flag_set *flags, const pgw_config *cfg, const char *text, size_t len,
                       pgw_import_file *file)
{
    static pgw_csv_row scratch; /* a command's, once a process: 16 KB off the stack */
    const char *shop = flag_get(flags, "--shop"), *rate = flag_get(flags, "--rate-bp");
    int32_t index = shop ? pgw_rules_find_shop(&cfg->rules, shop) : -1;
    if (index < 0) {
        fprintf(stderr, "pointsgw import-balances: --shop must name a shop of the configuration\n");
        return EXIT_USAGE;
    }
    snprintf(file->shop, sizeof(file->shop), "%s", cfg->rules.shops[index].id);
    file->rate_bp = cfg->rules.shops[index].rate_bp;
    pgw_err err;
    /* Digits only: strtoll took "+100" and " 100" as 100 and refused "100 ". */
    if (rate != NULL &&
        pgw_csv_digits(rate, 1, PGW_MULTIPLIER_BP_MAX, &file->rate_bp, &err) != PGW_OK) {
        fprintf(stderr, "pointsgw import-balances: --rate-bp %s\n", err.msg);
        return EXIT_USAGE;
    }
    const char *given = flag_get(flags, "--batch");
    if (given != NULL && !pgw_import_batch_ok(given)) {
        fprintf(stderr, "pointsgw import-balances: --batch must be 1..%d of [A-Za-z0-9._-]\n",
                PGW_IMPORT_BATCH_MAX);
        return EXIT_USAGE;
    }
    file->batch_named = given != NULL;
    if (given != NULL)
        snprintf(file->batch, sizeof(file->batch), "%s", given);
    else /* the file's own hash: the same file twice is one import */
        pgw_import_default_batch(file->shop, text, len, &scratch, file->batch);
    return EXIT_OK;
}

static int cmd_import_balances(int argc, char **argv)
{
    flag_set flags = {0};
    static const char *const names[] = {"--shop",  "--file",   "--rate-bp",
                                        "--batch", "--config", "--db"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        flag_add(&flags, names[i], true);
    pgw_config *cfg;
    int rc = start_command("import-balances", &flags, argc, argv, &cfg);
    if (rc >= 0)
        return rc;
    size_t len = 0;
    char *text = flag_get(&flags, "--file")
                     ? read_file(flag_get(&flags, "--file"), IMPORT_FILE_MAX, &len)
                     : NULL;
    pgw_import_file file = {0};
    char url[PGW_STORE_URL_MAX + 1];
    rc = text ? import_args(&flags, cfg, text, len, &file) : EXIT_USAGE;
    if (text == NULL && flag_get(&flags, "--file") == NULL)
        fprintf(stderr, "pointsgw import-balances: --file FILE.csv is required\n");
    pgw_err err;
    if (rc == EXIT_OK && pgw_import_text_check(text, len, &err) != PGW_OK) {
        fprintf(stderr, "pointsgw import-balances: %s: %s\n", flag_get(&flags, "--file"), err.msg);
        rc = EXIT_USAGE;
    }
    if (rc == EXIT_OK)
        snprintf(url, sizeof(url), "%s",
                 flag_get(&flags, "--db") ? flag_get(&flags, "--db") : cfg->db);
    pgw_csv csv;
    static pgw_csv_row header;
    int col[PGW_IMPORT_COLUMNS];
    bool done = false;
    pgw_vault *vault = NULL;
    pgw_writer *w = NULL;
    if (rc == EXIT_OK) {
        pgw_csv_init(&csv, text, len);
        if (pgw_csv_next(&csv, &header, &done, &err) != PGW_OK || done ||
            pgw_import_header(&header, col, &err) != PGW_OK) {
            fprintf(stderr, "pointsgw import-balances: %s\n", done ? "the file is empty" : err.msg);
            rc = EXIT_USAGE;
        }
    }
    /* A database it makes is its owner's alone, as serve's (SQLite gives
     * the -wal and -shm files its mode), and said where: a relative "db"
     * run from another folder would fill a new ledger there unseen. */
    umask(077);
    bool existed = rc != EXIT_OK || sqlite_file(url) == NULL || access(sqlite_file(url), F_OK) == 0;
    /* as POST /v1/shops/{id}/imports applies them */
    int started = rc == EXIT_OK ? rows_writer_start(cfg, url, true, &vault, &w, &err) : PGW_OK;
    if (started != PGW_OK) {
        fprintf(stderr, "pointsgw import-balances: %s\n", err.msg);
        rc = exit_for(started); /* a damaged or unreachable database: 1 */
    }
    if (rc == EXIT_OK)
        tell_database_file("import-balances", url, existed);
    if (rc == EXIT_OK) {
        import_tally t = {0};
        bool run = import_rows(w, vault, &csv, col, &file, &t) == PGW_OK;
        if (!run)
            fprintf(stderr, "pointsgw import-balances: out of memory\n");
        printf("{\"batch\":\"%s\",\"rate_bp\":%lld,\"created\":%ld,\"matched_by_card\":%ld,"
               "\"matched_by_phone\":%ld,\"replayed\":%ld,\"rejected\":%ld,\"points\":%lld}\n",
               file.batch, (long long)file.rate_bp, t.created, t.by_card, t.by_phone, t.replayed,
               t.rejected, (long long)t.points);
        rc = t.rejected > 0 || !run ? EXIT_PROBLEM : EXIT_OK;
    }
    pgw_writer_stop(w);
    pgw_import_file_clear(&file);
    pgw_vault_free(vault);
    free(text);
    pgw_config_free(cfg);
    return rc;
}
/*
 * Makes a new API key: 32 random bytes, printed once (the gateway keeps
 * only its SHA-256), with the line to add to the configuration's "keys":
 * with "require_signature": true for --require-signature, as serve then
 * holds any configured key to it.
 */
static int cmd_keys(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "add") != 0) {
        bool help = argc > 0 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0);
        if (!help)
            fprintf(stderr, "pointsgw keys: the subcommand is 'add' (see --help)\n");
        return help ? EXIT_OK : EXIT_USAGE;
    }
    flag_set flags = {0};
    flag_add(&flags, "--scope", true);
    flag_add(&flags, "--name", true);
    flag_add(&flags, "--require-signature", false);
    flag_add(&flags, "--config", true);
    pgw_config *cfg;
    int rc = start_command("keys add", &flags, argc - 1, argv + 1, &cfg);
    if (rc >= 0)
        return rc;
    const char *scope = flag_get(&flags, "--scope");
    const char *name = flag_get(&flags, "--name");
    pgw_err err;
    rc = EXIT_USAGE;
    uint8_t secret[32], digest[32];
    if (scope == NULL)
        fprintf(stderr, "pointsgw keys add: --scope is required\n");
    else if (pgw_config_check_scope(cfg, scope, &err) != PGW_OK)
        fprintf(stderr, "pointsgw keys add: %s\n", err.msg);
    else if (name != NULL && pgw_config_check_key_name(cfg, name, &err) != PGW_OK)
        fprintf(stderr, "pointsgw keys add: %s\n", err.msg);
    else if (RAND_bytes(secret, sizeof(secret)) != 1)
        fprintf(stderr, "pointsgw keys add: no randomness available\n");
    else
        rc = EXIT_OK;
    if (rc == EXIT_OK) {
        char key[4 + 2 * sizeof(secret) + 1], hash[2 * sizeof(digest) + 1], fallback[16];
        snprintf(key, sizeof(key), "pgw_");
        pgw_hash_hex(secret, key + 4, sizeof(key) - 4);
        pgw_sha256(key, strlen(key), digest);
        pgw_hash_hex(digest, hash, sizeof(hash));
        snprintf(fallback, sizeof(fallback), "key-%.8s", hash);
        /* "o*": left out, not false, unless asked for */
        bool signs = flag_get(&flags, "--require-signature") != NULL;
        json_t *entry =
            json_pack("{s:s,s:s,s:s,s:o*}", "name", name ? name : fallback, "scope", scope,
                      "key_sha256", hash, "require_signature", signs ? json_true() : NULL);
        char *line = entry != NULL ? json_dumps(entry, JSON_COMPACT) : NULL;
        if (line == NULL) { /* a key without its line is none: not shown */
            fprintf(stderr, "pointsgw keys add: out of memory making the configuration line; "
                            "no key was made\n");
            rc = EXIT_PROBLEM;
        } else {
            printf("key: %s\n(shown once: the gateway keeps only its SHA-256; store it now)\n"
                   "add to \"keys\" in the configuration:\n%s\n",
                   key, line);
        }
        OPENSSL_cleanse(key, sizeof(key));
        free(line);
        json_decref(entry);
        OPENSSL_cleanse(secret, sizeof(secret));
    }
    pgw_config_free(cfg);
    return rc;
}
/* report settlement|pool: --from/--to required; --bucket for the pool. */
static int report_args(const char *kind, const flag_set *flags, int64_t *from, int64_t *to,
                       pgw_bucket *bucket, pgw_report_format *format)
{
    const char *a = flag_get(flags, "--from"), *b = flag_get(flags, "--to");
    const char *fmt = flag_get(flags, "--format"), *bk = flag_get(flags, "--bucket");
    const char *bad = NULL;
    *bucket = PGW_BUCKET_DAY;
    if (strcmp(kind, "settlement") != 0 && strcmp(kind, "pool") != 0)
        bad = "the report is settlement or pool";
    else if (a == NULL || b == NULL)
        bad = "--from and --to are required, as RFC 3339 times or unix seconds";
    /* Said apart from a missing one: "required" for a time given but not
     * read, read as if it had not been (the finance walkthrough). */
    else if (!pgw_report_time_in(a, from))
        bad = FROM_UNREADABLE;
    else if (!pgw_report_time_in(b, to))
        bad = TO_UNREADABLE;
    else if (*from >= *to)
        bad = "--from must come before --to";
    else if (fmt != NULL && strcmp(fmt, "json") != 0 && strcmp(fmt, "csv") != 0)
        bad = "--format is json or csv";
    else if (bk != NULL && (strcmp(kind, "pool") != 0 || pgw_bucket_parse(bk, bucket) != PGW_OK))
        bad = "--bucket is day, week or month, for the pool";
    *format = fmt != NULL && strcmp(fmt, "csv") == 0 ? PGW_REPORT_CSV : PGW_REPORT_JSON;
    if (bad != NULL)
        fprintf(stderr, "pointsgw report: %s\n", bad);
    return bad ? EXIT_USAGE : EXIT_OK;
}

static int cmd_report(int argc, char **argv)
{
    if (argc < 1 || argv[0][0] == '-') {
        fprintf(stderr, "pointsgw report: say which: settlement or pool (see --help)\n");
        return EXIT_USAGE;
    }
    flag_set flags = {0};
    static const char *const names[] = {"--from", "--to",     "--bucket", "--format",
                                        "--out",  "--config", "--db"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        flag_add(&flags, names[i], true);
    pgw_config *cfg;
    int rc = start_command("report", &flags, argc - 1, argv + 1, &cfg);
    if (rc >= 0)
        return rc;
    int64_t from = 0, to = 0;
    pgw_bucket bucket;
    pgw_report_format format;
    rc = report_args(argv[0], &flags, &from, &to, &bucket, &format);
    char url[PGW_STORE_URL_MAX + 1];
    snprintf(url, sizeof(url), "%s", flag_get(&flags, "--db") ? flag_get(&flags, "--db") : cfg->db);
    const char *out_path = flag_get(&flags, "--out");
    out_file out = {.f = stdout};
    pgw_store *store = NULL;
    pgw_err err;
    if (rc == EXIT_OK && out_is_input("report", out_path, NULL, flag_get(&flags, "--config"), url))
        rc = EXIT_USAGE;
    int r = rc != EXIT_OK || out_open(out_path, &out) == 0
                ? PGW_OK
                : pgw_err_set(&err, PGW_EIO, "%s: %s", out_path, strerror(errno));
    if (rc == EXIT_OK && r == PGW_OK)
        r = snapshot_open(url, &store, &err);
    if (rc == EXIT_OK && r == PGW_OK)
        r = strcmp(argv[0], "pool") == 0
                ? pgw_report_pool(store, cfg, from, to, bucket, format, out.f, &err)
                : pgw_report_settlement(store, cfg, from, to, format, out.f, &err);
    snapshot_close(store);
    if (out_close(&out, rc == EXIT_OK && r == PGW_OK) != 0 && rc == EXIT_OK && r == PGW_OK)
        r = pgw_err_set(&err, PGW_EIO, "writing %s failed", out_path);
    if (rc == EXIT_OK && r != PGW_OK) {
        fprintf(stderr, "pointsgw report: %s\n", err.msg);
        rc = exit_for(r);
    }
    pgw_config_free(cfg);
    return rc;
}

/* `period show`: the close in force, and when it was made. */
static int period_show(const pgw_config *cfg, const char *url)
{
    pgw_store *store = NULL;
    pgw_period_close c;
    pgw_err err;
    pgw_err_clear(&err);
    int rc = open_to_read(url, &store, &err);
    if (rc == PGW_OK)
        rc = pgw_store_period_close(store, &c, &err);
    pgw_store_close(store);
    if (rc != PGW_OK) {
        fprintf(stderr, "pointsgw period: %s\n", err.msg);
        return exit_for(rc);
    }
    if (c.before == 0) {
        printf("open: no period was ever closed\n");
        return EXIT_OK;
    }
    char before[PGW_RFC3339_MAX], when[PGW_RFC3339_MAX];
    pgw_format_moment(c.before, &cfg->rules.tz, before);
    pgw_format_moment(c.closed_at_us / 1000000, &cfg->rules.tz, when);
    printf("closed before: %s (%lld)\nclosed at:     %s, after transfer %lld\n", before,
           (long long)c.before, when, (long long)c.last_transfer);
    return EXIT_OK;
}

/* `period close --before T`: exit 2 for a moment refused as given (not
 * past, earlier than the close in force), 1 for a T refused for what the
 * database holds (work dated before it the gateway has not written yet:
 * expire first; the most closes verify reads, PGW_EFULL) or a database
 * that failed. */
static int period_close(const pgw_config *cfg, const char *url, const char *given)
{
    int64_t before = 0;
    if (given == NULL || !pgw_report_time_in(given, &before)) {
        fprintf(stderr,
                "pointsgw period close: --before is %s, as an RFC 3339 time "
                "(2026-12-01T00:00:00+08:00, say) or unix seconds, " PGW_REPORT_TIME_RANGE "\n",
                given == NULL ? "required" : "unreadable");
        return EXIT_USAGE;
    }
    pgw_store *store = NULL;
    pgw_err err;
    pgw_err_clear(&err);
    bool moved = false;
    /* Never creates a database: a wrong path is an error. */
    int rc = pgw_store_open(url, false, &store, &err);
    if (rc == PGW_OK)
        rc = pgw_store_begin(store, &err);
    if (rc == PGW_OK) {
        rc = pgw_store_close_period(store, before, (int64_t)time(NULL) * 1000000, &cfg->rules.tz,
                                    &moved, &err);
        rc = rc == PGW_OK ? pgw_store_commit(store, &err) : (pgw_store_rollback(store, NULL), rc);
    }
    pgw_store_close(store);
    if (rc != PGW_OK) {
        fprintf(stderr, "pointsgw period close: %s\n", err.msg);
        return rc == PGW_ESTATE || rc == PGW_EFULL ? EXIT_PROBLEM : exit_for(rc);
    }
    char when[PGW_RFC3339_MAX];
    pgw_format_moment(before, &cfg->rules.tz, when);
    printf(moved ? "closed: what is dated before %s is final\n"
                 : "closed before %s already: nothing changed\n",
           when);
    return EXIT_OK;
}

static int cmd_period(int argc, char **argv)
{
    bool show = argc >= 1 && strcmp(argv[0], "show") == 0;
    if (argc < 1 || (!show && strcmp(argv[0], "close") != 0)) {
        fprintf(stderr, "pointsgw period: say which: close --before T, or show (see --help)\n");
        return EXIT_USAGE;
    }
    flag_set flags = {0};
    flag_add(&flags, "--config", true);
    flag_add(&flags, "--db", true);
    if (!show)
        flag_add(&flags, "--before", true);
    pgw_config *cfg;
    int rc = start_command("period", &flags, argc - 1, argv + 1, &cfg);
    if (rc >= 0)
        return rc;
    char url[PGW_STORE_URL_MAX + 1];
    snprintf(url, sizeof(url), "%s", flag_get(&flags, "--db") ? flag_get(&flags, "--db") : cfg->db);
    rc = show ? period_show(cfg, url) : period_close(cfg, url, flag_get(&flags, "--before"));
    pgw_config_free(cfg);
    return rc;
}

#define MEMBER_SHOW_TRANSFERS 10 /* recent transfers `member show` lists */

/* Each listed transfer's recorded_at beside its occurred_at, in the mall's
 * zone to the second: a back-dated one reads out of date order, and this
 * says why. `list` is the history of `page`, one item per transfer. */
static void show_recorded_at(const pgw_config *cfg, const pgw_transfer *page, json_t *list)
{
    for (size_t i = 0; i < json_array_size(list); i++) {
        char when[PGW_RFC3339_MAX];
        int64_t at = page[i].recorded_at_us / 1000000;
        json_t *item = json_array_get(list, i);
        json_object_set_new(item, "recorded_at",
                            pgw_format_rfc3339_or_utc(at, &cfg->rules.tz, when) == PGW_OK
                                ? json_string(when)
                                : json_null());
    }
}

/* Resolves `who` and reads the member's view and recent transfers through a reader. */
static int member_view(pgw_writer *reader, const pgw_config *cfg, const pgw_vault *vault,
                       const pgw_identity *who, json_t **out, pgw_err *err)
{
    static pgw_command cmd;
    static pgw_transfer page[MEMBER_SHOW_TRANSFERS];
    memset(&cmd, 0, sizeof(cmd));
    cmd.kind = PGW_COMMAND_READ_RESOLVE;
    cmd.at = (int64_t)time(NULL);
    int rc = pgw_command_name_member(vault, who, &cmd, err);
    if (rc == PGW_OK)
        rc = pgw_writer_run(reader, &cmd, err);
    /* A member id is read as given: a merged one shows merged_into, as GET
     * /v1/members/{id} does (resolving it gave its survivor). */
    char member[PGW_ID_MAX + 1];
    snprintf(member, sizeof(member), "%.*s", PGW_ID_MAX,
             who->kind == PGW_ID_MEMBER ? who->value : cmd.member);
    memset(&cmd, 0, sizeof(cmd));
    cmd.kind = PGW_COMMAND_READ_MEMBER;
    cmd.at = (int64_t)time(NULL);
    snprintf(cmd.member, sizeof(cmd.member), "%s", member);
    if (rc == PGW_OK)
        rc = pgw_writer_run(reader, &cmd, err);
    json_t *view = rc == PGW_OK ? pgw_api_member_json(cfg, vault, &cmd) : NULL;
    memset(&cmd, 0, sizeof(cmd));
    cmd.kind = PGW_COMMAND_READ_HISTORY;
    cmd.at = (int64_t)time(NULL);
    snprintf(cmd.member, sizeof(cmd.member), "%s", member);
    cmd.page = page;
    cmd.page_cap = MEMBER_SHOW_TRANSFERS;
    if (rc == PGW_OK)
        rc = pgw_writer_run(reader, &cmd, err);
    json_t *history = rc == PGW_OK ? pgw_api_history_json(cfg, &cmd, cmd.page_cap, true) : NULL;
    json_t *list = json_object_get(history, "transfers");
    if (view != NULL && list != NULL) {
        show_recorded_at(cfg, page, list);
        json_object_set(view, "transfers", list);
        /* The log's order, the hash chain's: a back-dated event (a till's
         * late one, an import) is where it was recorded, not by its date. */
        json_object_set_new(view, "transfers_order", json_string("newest recorded first"));
    }
    json_decref(history);
    if (rc != PGW_OK || view == NULL) {
        json_decref(view);
        return rc != PGW_OK ? rc : pgw_err_set(err, PGW_ENOMEM, "out of memory");
    }
    *out = view;
    return PGW_OK;
}

/* member show IDENTITY: the member view of GET /v1/members/{id}, plus recent transfers. */
static int cmd_member(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[0], "show") != 0 || argv[1][0] == '-') {
        fprintf(stderr, "pointsgw member: usage: member show IDENTITY (e.g. phone:13800138000, "
                        "card:S001:88001, member_id:M1)\n");
        return EXIT_USAGE;
    }
    flag_set flags = {0};
    flag_add(&flags, "--config", true);
    flag_add(&flags, "--db", true);
    pgw_config *cfg;
    int rc = start_command("member", &flags, argc - 2, argv + 2, &cfg);
    if (rc >= 0)
        return rc;
    pgw_identity who;
    pgw_err err;
    if (pgw_identity_parse(argv[1], &who, &err) != PGW_OK) {
        fprintf(stderr, "pointsgw member: %s\n", err.msg);
        pgw_config_free(cfg);
        return EXIT_USAGE;
    }
    char url[PGW_STORE_URL_MAX + 1];
    snprintf(url, sizeof(url), "%s", flag_get(&flags, "--db") ? flag_get(&flags, "--db") : cfg->db);
    pgw_writer_options ro = {.db_url = url, .read_only = true, .queue_cap = 4, .batch_max = 4};
    pgw_api_policy(cfg, &ro.policy);
    const pgw_security_config *sec = &cfg->security;
    pgw_vault *vault = NULL;
    pgw_writer *reader = NULL;
    json_t *view = NULL;
    bool warned = false;
    int r = pgw_vault_open(sec->phone_hmac_key_env, sec->phone_aes_key_env, sec->development_mode,
                           &vault, &warned, &err);
    pgw_vault_warn_public(vault);
    if (r == PGW_OK)
        r = pgw_writer_start(&ro, &reader, &err);
    if (r == PGW_OK)
        r = pgw_api_check_phone_keys(vault, url, &err);
    bool looked = r == PGW_OK; /* from here PGW_ENOTFOUND is about the member */
    if (r == PGW_OK)
        r = member_view(reader, cfg, vault, &who, &view, &err);
    pgw_writer_stop(reader);
    pgw_vault_free(vault);
    if (r == PGW_OK) {
        json_dumpf(view, stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        fprintf(stderr, "pointsgw member: %s\n", err.msg);
    }
    json_decref(view);
    pgw_config_free(cfg);
    return r == PGW_OK ? EXIT_OK : looked && r == PGW_ENOTFOUND ? EXIT_PROBLEM : exit_for(r);
}

static const command COMMANDS[] = {
    {"serve", "serve [--config FILE] [--db URL] [--listen HOST:PORT]",
     "run the gateway: the HTTP API on the configured database", cmd_serve},
    {"check-config", "check-config [--config FILE] [--db URL]",
     "validate a configuration and print what it defines", cmd_check_config},
    {"quote", "quote --event FILE.json [--context FILE.json] [--config FILE]",
     "compute the points an event would earn, with the breakdown", cmd_quote},
    {"reconcile",
     "reconcile --statement FILE --channel NAME [--shop ID] [--from T] [--to T] "
     "[--format json|csv [--summary-rows]] [--out FILE] [--repair [--new-channel]] "
     "[--config FILE] [--db URL]",
     "match a channel statement against the log; exit 1 unless every row matched; "
     "--repair posts the rows missing from the log as events",
     cmd_reconcile},
    {"report",
     "report settlement|pool --from T --to T [--bucket day|week|month] [--format json|csv] "
     "[--out FILE] [--config FILE] [--db URL]",
     "finance's reports: the settlement with every shop, or the points pool by day, week or "
     "month",
     cmd_report},
    {"verify", "verify [--config FILE] [--db URL]",
     "check the hash chain and balances against lots; exit 1 naming the first break", cmd_verify},
    {"backup", "backup --out FILE [--config FILE] [--db URL]",
     "copy the SQLite database to FILE while it may be serving, then verify the copy; exit 1 "
     "if the copy could not be made or does not verify",
     cmd_backup},
    {"expire", "expire [--as-of T] [--config FILE] [--db URL]",
     "release every hold pending past its deadline, then expire what is left of every lot due "
     "by T (default: now); idempotent",
     cmd_expire},
    {"period",
     "period close --before T [--config FILE] [--db URL] | period show [--config FILE] "
     "[--db URL]",
     "close the period before T for good: no write dated before it is taken any more (exit 2 "
     "for T ahead of the clock or before the close in force, 1 while work dated before T is "
     "to be written: run expire --as-of T-1 first, or once 36,500 closes are made); show tells "
     "the close in force",
     cmd_period},
    {"import-balances",
     "import-balances --shop ID --file FILE.csv [--rate-bp N] [--batch ID] [--config FILE] "
     "[--db URL]",
     "move legacy shop balances (card,phone,points) in at the shop's rate; exit 1 if rows "
     "were rejected",
     cmd_import_balances},
    {"keys", "keys add --scope SCOPE [--name NAME] [--require-signature] [--config FILE]",
     "make a new API key: prints it once, and the line for the configuration; "
     "--require-signature: the key must sign its requests",
     cmd_keys},
    {"member", "member show IDENTITY [--config FILE] [--db URL]",
     "a member's balance, tier, expiring points, identities (masked) and last transfers; "
     "IDENTITY is phone:..., card:SHOP:NO, member_id:..., ...; exit 1 when nobody holds it",
     cmd_member},
};
#define N_COMMANDS (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

static void print_usage(FILE *out)
{
    fprintf(out, "usage: pointsgw COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-16s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(out, "\n'pointsgw COMMAND --help' shows a command's arguments, 'pointsgw --version'\n"
                 "the version and those of the libraries it runs with.\n"
                 "Exit codes: 0 ok, 1 the check found a problem, 2 bad usage or input.\n");
}

/* The version (PGW_VERSION: CMakeLists.txt's project()) and those of the
 * libraries as loaded, which a packaged binary may find other than it was
 * built with: what a bug report or an upgrade check needs. */
static int print_version(void)
{
    /* libwebsockets says "<version>-<build hash>"; Debian's, built with no
     * hash, "4.1.6-": the dangling separator is cut (63 bytes at most are
     * shown, ample for both parts). */
    char lws[64];
    snprintf(lws, sizeof(lws), "%s", lws_get_library_version());
    size_t n = strlen(lws);
    while (n > 0 && strchr("- \t\r\n", lws[n - 1]) != NULL) /* never '\0' at n - 1 < n */
        lws[--n] = '\0';
    printf("pointsgw %s\nSQLite %s\nlibwebsockets %s\n%s\n", PGW_VERSION, sqlite3_libversion(), lws,
           OpenSSL_version(OPENSSL_VERSION));
    return EXIT_OK;
}

/*
 * A command's exit once what it printed has reached stdout. A full disk
 * (`keys add > key.txt`, a report redirected to a full volume) failed the
 * writes and the command said nothing and exited 0, its output lost: a
 * key shown to nobody, a verify report cut. `name` is the command ("" for
 * the top level). `rc` stands when it is a failure already (verify's
 * break, bad usage); a success becomes 1, as a disk's failure is.
 */
static int output_written(const char *name, int rc)
{
    errno = 0;
    bool flushed = fflush(stdout) == 0;
    if (flushed && !ferror(stdout))
        return rc;
    /* Failed earlier, when the buffer filled, and nothing was left to
     * flush: errno is no longer the write's. */
    const char *why = !flushed && errno != 0 ? strerror(errno) : "a write failed";
    fprintf(stderr,
            "pointsgw%s%s: cannot write its output to stdout: %s; what it printed is lost "
            "or cut short\n",
            name[0] != '\0' ? " " : "", name, why);
    return rc == EXIT_OK ? EXIT_PROBLEM : rc;
}

/* `--version`, `version`: nothing may follow; what did was taken and the
 * version said, the argument silently dropped. */
static int cmd_version(int argc, char **argv)
{
    if (argc > 0) {
        fprintf(stderr, "pointsgw: unknown argument '%s' (see --help)\n", argv[0]);
        return EXIT_USAGE;
    }
    return print_version();
}

/* The command argv[1] names, its exit before its output is checked. */
static int run_command(int argc, char **argv)
{
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)
        return cmd_version(argc - 2, argv + 2);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[1], COMMANDS[i].name) != 0)
            continue;
        for (int a = 2; a < argc; a++) {
            if (strcmp(argv[a], "--help") == 0) {
                printf("usage: pointsgw %s\n\n%s\n", COMMANDS[i].usage, COMMANDS[i].summary);
                return EXIT_OK;
            }
        }
        return COMMANDS[i].run(argc - 2, argv + 2);
    }
    fprintf(stderr, "pointsgw: unknown command '%s'\n\n", argv[1]);
    print_usage(stderr);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    /* A file-size limit (ulimit -f, systemd's LimitFSIZE) makes a write
     * past it fail (EFBIG), said and handled as a full disk's is, rather
     * than kill the process with SIGXFSZ: a backup so killed left its
     * partial copy and journal beside FILE, and serve would die mid-batch
     * rather than answer 503 and count the request log's lost lines. */
    signal(SIGXFSZ, SIG_IGN);
    int rc = run_command(argc, argv);
    /* serve's stdout is the request log: its failures are counted
     * (pgw_request_log_dropped_lines_total), and serving went on. */
    if (strcmp(argv[1], "serve") == 0)
        return rc;
    bool listed = false;
    for (size_t i = 0; i < N_COMMANDS; i++)
        listed = listed || strcmp(argv[1], COMMANDS[i].name) == 0;
    return output_written(listed ? argv[1] : "", rc);
}
