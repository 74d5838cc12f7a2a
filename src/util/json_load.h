/*
 * json_load.h - a request body's JSON, read as jansson's
 * json_loadb(buf, len, JSON_REJECT_DUPLICATES, ...) reads it, in a third
 * of its instructions for the bodies clients send.
 *
 * jansson's reader costs ~32,000 instructions for a 200-byte event, a
 * third of the service thread's work a request: it takes the text one
 * byte at a time through a stream and a token buffer. Bodies are almost
 * always plain: an object of objects, arrays, strings, integers, true,
 * false and null. pgw_json_load_plain reads those straight into the same
 * jansson values; whatever else it meets (a real number, an integer of 19
 * digits or more, nesting deeper than PGW_JSON_PLAIN_DEPTH, \u0000, a lone
 * surrogate, a duplicate key, any syntax error or invalid UTF-8) it leaves
 * whole to json_loadb. So what is accepted, the values it makes, and each
 * refusal's text, line and column are jansson's own (test_json_load
 * compares the two over generated and mutated bodies).
 */
#ifndef PGW_UTIL_JSON_LOAD_H
#define PGW_UTIL_JSON_LOAD_H

#include <jansson.h>
#include <stddef.h>

/* Objects and arrays nested deeper than this go to jansson (its limit is
 * 2,048 values deep: every body read here is within it). */
#define PGW_JSON_PLAIN_DEPTH 32

/*
 * The JSON text buf[0..len) (not NUL-terminated) into *out (a new
 * reference, the caller's to json_decref): PGW_OK, or PGW_EINVAL when
 * jansson refuses it, with jansson's error in *jerr (filled only then).
 * As json_loadb with JSON_REJECT_DUPLICATES: the top level is an object
 * or an array.
 */
int pgw_json_load(const char *buf, size_t len, json_t **out, json_error_t *jerr);

/*
 * The plain reader alone: the value, or NULL when the text is not a plain
 * object (see above) or memory ran out. A value it returns is the one
 * json_loadb would, key order included. Exposed for the tests.
 */
json_t *pgw_json_load_plain(const char *buf, size_t len);

#endif
