/*
 * text.h - names made of parts ("shop:" S001 ":issued") in fixed buffers,
 * without printf. The writer makes a dozen such names per event (funders'
 * accounts, rule names, breakdowns); snprintf parsed its format for each,
 * 4% of the writer's instructions per purchase (bench/RESULTS.md).
 */
#ifndef PGW_CORE_TEXT_H
#define PGW_CORE_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* The longest text pgw_text_int writes ("-9223372036854775808"), with its NUL. */
#define PGW_TEXT_INT_SIZE 21

/*
 * Writes parts[0..n) one after the other into out (cap bytes, cap >= 1),
 * cut at cap - 1 bytes and always NUL-terminated, as snprintf would.
 * Returns the length the whole would have had, as snprintf does: a result
 * >= cap says it was cut.
 */
size_t pgw_text_join(char *out, size_t cap, size_t n, const char *const parts[]);

/* pgw_text_join over its arguments: PGW_TEXT(buf, sizeof(buf), "shop:", id). */
#define PGW_TEXT(out, cap, ...)                                                                    \
    pgw_text_join((out), (cap), sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *), \
                  (const char *const[]){__VA_ARGS__})

/* Writes v in decimal into out; returns out. */
const char *pgw_text_int(int64_t v, char out[PGW_TEXT_INT_SIZE]);

#endif
