/*
 * keywords.h - subscribe-message keyword values within WeChat's limits.
 *
 * A subscribe message's data is {"thing1": {"value": ...}, ...}: each key
 * is a kind plus digits, and each kind has limits WeChat enforces (47003
 * "argument invalid" otherwise; research/wechat-api.md section 4). Counting
 * is in characters (UTF-8 code points), never bytes, and a value is never
 * cut inside a character.
 *
 * What is fitted, and how:
 *   thing             <= 20 characters; longer: the first 17 and "..."
 *   character_string  <= 32 ASCII; longer: the first 29 and "..."
 *   name              <= 10 characters (<= 20 when all ASCII); longer: cut
 *   letter            <= 32 ASCII letters; longer: cut
 * Control characters (a line break from a receipt) become spaces. What no
 * cut can save is refused with PGW_EINVAL saying why: a phrase that is not
 * 1..5 CJK characters, a number or amount that is not one, symbols that are
 * not, a car_number that is not 1..8 letters and digits (a Chinese
 * character allowed first and last: a cut plate names another car), a
 * phone_number that is not 1..17 digits and symbols (a cut phone rings
 * someone else, and "..." is no digit), an
 * empty value, invalid UTF-8, an unknown kind, and any value of more than
 * 256 characters, whatever its kind (a bound on what is read; no caller's
 * value comes near it). time, date and enum values pass as they are
 * (under 64 bytes): their form is the caller's.
 */
#ifndef PGW_ADAPTERS_WECHAT_MP_KEYWORDS_H
#define PGW_ADAPTERS_WECHAT_MP_KEYWORDS_H

#include "core/error.h"

#include <stddef.h>

#define PGW_WX_KEYWORD_VALUE_MAX 160 /* bytes of a fitted value, NUL included */

/* Fits `value` for `keyword` ("thing1", "amount02", ...) into out (cap bytes). */
int pgw_wx_keyword_fit(const char *keyword, const char *value, char *out, size_t cap, pgw_err *err);

#endif
