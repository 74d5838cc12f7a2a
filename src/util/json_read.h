/*
 * json_read.h - reading untrusted JSON objects field by field, with bounds,
 * and errors that carry the JSON path of the offending value.
 *
 * Every reader takes the path of the object it reads from ("$.items[2]")
 * and reports problems as "<path>.<key>: <problem>", so an operator or an
 * API client sees exactly which value is wrong. Integers must be JSON
 * integers (1.5 and 1e3 are refused: no floating point near points);
 * strings must be valid UTF-8 (jansson guarantees it) without NUL bytes and
 * within their byte bound.
 */
#ifndef PGW_UTIL_JSON_READ_H
#define PGW_UTIL_JSON_READ_H

#include "core/error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest JSON path kept in messages and built by pgw_json_path_*(). */
#define PGW_JSON_PATH_MAX 160

/* Writes "<parent>.<key>" into out; cut at PGW_JSON_PATH_MAX. */
void pgw_json_path_key(char out[PGW_JSON_PATH_MAX], const char *parent, const char *key);
/* Writes "<parent>[<index>]" into out; cut at PGW_JSON_PATH_MAX. */
void pgw_json_path_index(char out[PGW_JSON_PATH_MAX], const char *parent, size_t index);

/* PGW_EINVAL unless `value` is an object; names the path and the actual type. */
int pgw_json_expect_object(const json_t *value, const char *path, pgw_err *err);

/*
 * PGW_EINVAL when obj has a key not in `allowed` (a NULL-terminated list):
 * "<path>.<key>: unknown key". A typo in a config or a request is refused,
 * never silently ignored.
 */
int pgw_json_only_keys(const json_t *obj, const char *path, const char *const *allowed,
                       pgw_err *err);
/*
 * pgw_json_only_keys, keeping each allowed key's value as it goes:
 * values[i] is obj[allowed[i]], NULL when absent (values has an entry for
 * each of `allowed`). For the readers *_of below: an object read field by
 * field otherwise hashes each key again to look it up (an event's dozen
 * lookups were ~2,500 instructions of the service thread; bench/RESULTS.md).
 */
int pgw_json_fields(const json_t *obj, const char *path, const char *const *allowed,
                    const json_t **values, pgw_err *err);

/*
 * Whether obj (an object, or NULL: false) has `key` with a value other
 * than null. The readers below
 * take an optional key set to null as absent (clients in Java and .NET
 * write unset fields so); a required one is refused.
 */
bool pgw_json_has(const json_t *obj, const char *key);
/* pgw_json_has of obj[key] given as `value` (NULL: absent). */
bool pgw_json_given(const json_t *value);

/*
 * Reads obj[key] as an integer in min..max into *out. When the key is
 * absent (or null): PGW_EINVAL if `required`, else *out is left as it was
 * (so the caller sets a default first) and the result is PGW_OK.
 */
int pgw_json_int(const json_t *obj, const char *key, const char *path, bool required, int64_t min,
                 int64_t max, int64_t *out, pgw_err *err);

/* Reads obj[key] as true/false; absent: as for pgw_json_int. */
int pgw_json_bool(const json_t *obj, const char *key, const char *path, bool required, bool *out,
                  pgw_err *err);

/*
 * Copies obj[key], a non-empty string of at most max_len bytes, into out
 * (cap > max_len). Absent: as for pgw_json_int. No field takes a control
 * character (C0, DEL, C1) but tab and line breaks (a till's receipt note
 * may have lines; CSV quotes them): an escape or a backspace would reach
 * reports, statements and terminals as commands to them (PGW_EINVAL).
 */
int pgw_json_string(const json_t *obj, const char *key, const char *path, bool required,
                    size_t max_len, char *out, size_t cap, pgw_err *err);

/* Like pgw_json_string but returns a pointer into the JSON value (borrowed,
 * valid while obj lives), or NULL when absent and not required. */
int pgw_json_string_ref(const json_t *obj, const char *key, const char *path, bool required,
                        size_t max_len, const char **out, pgw_err *err);

/* The readers above, of obj[key] given as `value` (NULL: absent; from
 * pgw_json_fields): each the same answer, and the same message, naming
 * `key` and `path` as they do. */
int pgw_json_int_of(const json_t *value, const char *key, const char *path, bool required,
                    int64_t min, int64_t max, int64_t *out, pgw_err *err);
int pgw_json_string_of(const json_t *value, const char *key, const char *path, bool required,
                       size_t max_len, char *out, size_t cap, pgw_err *err);
int pgw_json_string_ref_of(const json_t *value, const char *key, const char *path, bool required,
                           size_t max_len, const char **out, pgw_err *err);

#endif
