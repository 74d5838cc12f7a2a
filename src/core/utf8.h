/*
 * utf8.h - UTF-8 as strict decoders read it: shortest forms only, no
 * surrogates, nothing past U+10FFFF. Used wherever text from outside is
 * counted in characters or cut (WeChat keywords, statements' messages).
 */
#ifndef PGW_CORE_UTF8_H
#define PGW_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The character at s (a NUL-terminated string): its byte length and code
 * point; 0 when the bytes there are not a valid character (or at the NUL). */
size_t pgw_utf8_next(const char *s, uint32_t *cp);

/* As pgw_utf8_next, for the character at s within n bytes that need not
 * be NUL-terminated (a request body as it came): 0 also when the
 * character is cut at n. */
size_t pgw_utf8_next_n(const char *s, size_t n, uint32_t *cp);

/* The length of the UTF-8 byte order mark s[0..len) starts with: 3, or 0
 * for none. Windows' and .NET's writers put one first (Notepad, Excel's
 * "CSV UTF-8"); RFC 8259 8.1 lets a reader ignore it, and every reader of
 * ours skips it. */
size_t pgw_utf8_bom(const char *s, size_t len);

/* Whether all of s is valid UTF-8. */
bool pgw_utf8_valid(const char *s);

/* The longest prefix of s, at most max bytes, that ends on a character
 * boundary (s valid UTF-8). */
size_t pgw_utf8_prefix(const char *s, size_t max);

/* Replaces in place each byte of s that is no part of a valid character
 * by '?': text that quotes outside bytes, cut, made valid for JSON, the
 * rest of it kept. Returns how many it replaced. */
size_t pgw_utf8_scrub(char *s);

#endif
