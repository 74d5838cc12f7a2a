/*
 * json_write.h - JSON text written straight into a caller's buffer.
 *
 * For answers rendered on the writer thread, once per event: building them
 * as jansson trees cost an allocation per value and a tenth of the
 * writer's time, which is the gateway's bottleneck. Here nothing is
 * allocated; a text that does not fit sets `overflow` and is not used.
 *
 * Commas are the writer's business: a value or key after another value in
 * the same container gets one. Strings are escaped as JSON requires ('"',
 * '\\' and control characters); other bytes, UTF-8 included, go as they are
 * (callers pass validated UTF-8, as jansson's own output would be).
 */
#ifndef PGW_UTIL_JSON_WRITE_H
#define PGW_UTIL_JSON_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pgw_json_out {
    char *buf;       /* borrowed; NUL-terminated after every call */
    size_t cap, len; /* cap includes the NUL */
    bool overflow;   /* something did not fit: the text is incomplete */
    bool need_comma; /* the last thing written was a value */
} pgw_json_out;

/* Starts an empty text in buf (cap >= 1). */
void pgw_json_out_init(pgw_json_out *o, char *buf, size_t cap);
/* Goes on inside the object that buf already holds (a compact JSON object
 * of len bytes ending in '}'): the next key is added before its '}', which
 * pgw_json_end_object puts back. */
void pgw_json_out_reopen(pgw_json_out *o, char *buf, size_t cap, size_t len);

void pgw_json_out_begin_object(pgw_json_out *o);
void pgw_json_out_end_object(pgw_json_out *o);
void pgw_json_out_begin_array(pgw_json_out *o);
void pgw_json_out_end_array(pgw_json_out *o);
/* A key of the open object; its value comes next. */
void pgw_json_out_key(pgw_json_out *o, const char *key);
void pgw_json_out_string(pgw_json_out *o, const char *text);
void pgw_json_out_int(pgw_json_out *o, int64_t value);
void pgw_json_out_bool(pgw_json_out *o, bool value);
void pgw_json_out_null(pgw_json_out *o);

/* value's decimal digits, '-' first when negative, NUL-terminated in out;
 * their count. By hand: snprintf's format parsing cost more than the rest
 * of an integer's output (an answer writes about ten, an HTTP head three). */
#define PGW_INT_TEXT_MAX 21 /* "-9223372036854775808" and its NUL */
size_t pgw_int_text(int64_t value, char out[PGW_INT_TEXT_MAX]);

/* Shorthands for a key and its value. */
void pgw_json_out_key_string(pgw_json_out *o, const char *key, const char *text);
void pgw_json_out_key_int(pgw_json_out *o, const char *key, int64_t value);

#endif
