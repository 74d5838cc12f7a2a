/*
 * error.h - the one error convention of pointsgw.
 *
 * Every fallible function returns int: 0 (PGW_OK) on success or a negative
 * PGW_E... code. When it fails it also fills a caller-provided struct pgw_err
 * with a human message that names what was wrong ("member M1 has 120
 * available, 500 asked"). The struct lives on the caller's stack: no
 * allocation, no thread-local state, nothing to free.
 *
 * Callers never ignore a result: every PGW_E... is handled or passed up.
 * `err` may be NULL when the caller only wants the code.
 */
#ifndef PGW_CORE_ERROR_H
#define PGW_CORE_ERROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pgw_code {
    PGW_OK = 0,
    PGW_EINVAL = -1,         /* bad input: malformed, missing, out of its domain */
    PGW_ERANGE = -2,         /* arithmetic overflow or value beyond its bound */
    PGW_ENOTFOUND = -3,      /* the thing named does not exist */
    PGW_ECONFLICT = -4,      /* same key, different request */
    PGW_EINSUFFICIENT = -5,  /* not enough points available */
    PGW_ESTATE = -6,         /* operation not allowed in the object's state */
    PGW_EFULL = -7,          /* a fixed capacity or queue is full */
    PGW_EIO = -8,            /* reading or writing outside the process failed */
    PGW_ENOMEM = -9,         /* allocation failed */
    PGW_EEXCEEDS = -10,      /* a refund beyond its original purchase */
    PGW_EUNAVAILABLE = -11,  /* a dependency (storage, provider) is down */
    PGW_EUNAUTHORIZED = -12, /* no key, a wrong key, a bad or replayed signature */
    PGW_EFORBIDDEN = -13,    /* the key's scope does not cover what was asked */
    PGW_ETOOLARGE = -14,     /* input over its size bound */
    PGW_EMEDIA = -15,        /* input in a format not accepted (content type) */
    PGW_ERISK = -16,         /* refused by a risk rule (self-referral, limits) */
    PGW_ELIMITED = -17,      /* over a rate limit: the same request may work later */
    PGW_ECLOSED = -18,       /* dated in a period finance closed (store.h pgw_store_close_period) */
};

/* Longest message kept; longer ones are cut on a UTF-8 character boundary. */
#define PGW_ERR_MSG_MAX 512

/* Figures a refusal carries, and the longest member id it names (an id of
 * bounds.h's PGW_ID_MAX fits). */
#define PGW_ERR_FIGURES_MAX 3
#define PGW_ERR_MEMBER_MAX  32

/* Words a refusal carries beside its figures, and the longest kept: a
 * member id, an event type, an RFC 3339 moment (civil.h PGW_RFC3339_MAX),
 * an event id or a receipt number (bounds.h PGW_EVENT_ID_MAX,
 * PGW_REFERENCE_MAX) fit. */
#define PGW_ERR_TEXTS_MAX 3
#define PGW_ERR_TEXT_MAX  128

/* One figure of a refusal: "available" 120. `name` is a string literal, so
 * that it outlives every copy of the error (a command's, back from the
 * writer thread). */
typedef struct pgw_named_figure {
    const char *name;
    int64_t value;
} pgw_named_figure;

/* One word of a refusal: "differs" "amount_fen". `name` as a figure's. */
typedef struct pgw_named_text {
    const char *name;
    char value[PGW_ERR_TEXT_MAX + 1];
} pgw_named_text;

/*
 * Besides its words, an error may carry what the refusal knows as figures
 * (the member, what is available, what was asked) and as texts (which
 * field of a request differs, its two values): API.md's error
 * `details`, so that a client reads numbers instead of parsing `msg`,
 * whose words stay as they are. pgw_err_set starts every error with none.
 */
typedef struct pgw_err {
    int code;
    char msg[PGW_ERR_MSG_MAX];
    char member_id[PGW_ERR_MEMBER_MAX + 1]; /* "" when it names none */
    size_t n_figures;
    pgw_named_figure figures[PGW_ERR_FIGURES_MAX];
    size_t n_texts;
    pgw_named_text texts[PGW_ERR_TEXTS_MAX];
    bool database; /* the database's failure (pgw_err_set_database) */
} pgw_err;

/*
 * Records `code` and a printf-style message in `err` (when not NULL) and
 * returns `code`, so that a failure path reads
 *     return pgw_err_set(err, PGW_EINVAL, "points must be > 0, got %lld", p);
 * `code` must be negative. The error is not the database's (see
 * pgw_err_set_database).
 */
int pgw_err_set(pgw_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * As pgw_err_set, and marks the failure as the database's own (its file,
 * its folder, its disk, its server: what the store.h backends say naming
 * the database first), a mark the error keeps as it travels outwards
 * (pgw_err_prefix, pgw_err_recode, a copy). A caller that must tell the
 * database's failures from the rest asks the mark, not the message,
 * whose words may change: the same codes come from elsewhere (serve's
 * listen that failed is PGW_EUNAVAILABLE too; main.c serve_failure_exit).
 */
int pgw_err_set_database(pgw_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears `err` to PGW_OK, an empty message, no figures nor texts, and
 * no database's mark. */
void pgw_err_clear(pgw_err *err);

/*
 * Adds figure `name` (a string literal) = `value` to the error pgw_err_set
 * just made in `err` (nothing when `err` is NULL). At most
 * PGW_ERR_FIGURES_MAX, each name once: asserted, a refusal's figures are
 * fixed by its code.
 */
void pgw_err_figure(pgw_err *err, const char *name, int64_t value);

/* Names the member (an id of at most PGW_ERR_MEMBER_MAX bytes: asserted)
 * the error pgw_err_set just made in `err` is about. */
void pgw_err_member(pgw_err *err, const char *member_id);

/* Adds text `name` (a string literal, not a figure's name) = `value` to
 * the error pgw_err_set just made in `err`, as pgw_err_figure adds a
 * figure: at most PGW_ERR_TEXTS_MAX, each name once, both asserted. The
 * value kept is valid UTF-8 whatever it quotes, as a body needs: cut on a
 * character at PGW_ERR_TEXT_MAX bytes, each byte of no valid character a
 * '?' (core/utf8.h pgw_utf8_scrub). */
void pgw_err_text(pgw_err *err, const char *name, const char *value);

/*
 * Prefixes the message already in `err` with a printf-style context
 * ("shops[3]: ") and returns err->code. Used as errors travel outwards;
 * its figures stay.
 */
int pgw_err_prefix(pgw_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Gives the error already in `err` the code `code` (its message kept, its
 * figures only when the code is the same: they belong to the refusal the
 * old code named) and returns `code`: for a layer that reports a failure
 * below it as its own. A database's failure stays the database's. */
int pgw_err_recode(pgw_err *err, int code);

/* A short stable name for a code: "EINVAL", "ERANGE", ... ("E?" if unknown). */
const char *pgw_code_name(int code);

#endif
