/*
 * redact.h - a database URL as messages, logs and check-config may show it.
 *
 * An operator's database setting may hold a password: in the URL
 * (postgresql://user:secret@host/db), in its query (?password=secret), or
 * in a libpq keyword/value string given where a URL was expected
 * ("host=db password=secret"). None of it may reach stdout or stderr.
 */
#ifndef PGW_UTIL_REDACT_H
#define PGW_UTIL_REDACT_H

#include <stddef.h>

/* `url` into out (cap > 0; cut to fit): scheme://user@host:port/db without
 * its password or query, and any "password=VALUE" (any case, spaces before
 * '=' allowed) with VALUE replaced by "***". */
void pgw_redact_db_url(const char *url, char *out, size_t cap);

/*
 * A refusal's message as the request log shows it, into out (cap > 0; cut
 * to fit, at most cap - 1 bytes). A message may quote what a client sent,
 * and a name or a phone typed in the wrong field is then in it:
 * - what it quotes becomes "***": from its first '"' to its last (or to
 *   its end: unknown shop "***"), and jansson's near '***';
 * - a PostgreSQL error's DETAIL and HINT (a row's values: "Key (x)=(...)",
 *   on a line of their own or after "; ") and anything after a newline go;
 * - a run of 7 or more digits (a phone number, its groups apart by up to 4
 *   of " -./()" or UTF-8 bytes, or by ':' unless a time's: 138:0013:8000
 *   and 138:00:13:80:00 are numbers, a time 9:05, 12:30:45 or
 *   09:05:07.123456 (hours 0..23, up to 9 digits of fraction) is shown
 *   and joins none by a gap) and a run of 20 or more
 *   letters, digits and "_-+/=" (a key's text, a signature, a session
 *   token, an openid; not a period 2026-11-01/2026-11-30) each become
 *   "***"; a date "2026-11-24" or "2026/11/24" (a year 1900..2199) is no
 *   such digits, unless a gap joins a shorter number to it (not a time
 *   "10:15:00" after it): 1381-12-30 0000 is a phone;
 * - a byte that is not printable ASCII becomes '?', so the line stays JSON.
 */
void pgw_redact_reason(const char *message, char *out, size_t cap);

#endif
