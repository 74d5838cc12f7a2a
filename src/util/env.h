/*
 * env.h - which of the variables a channel needs are set in the
 * environment. One check, for serve (which warns and runs the channel
 * off) and check-config (whose channels: line names them), so that both
 * name every variable missing at once: an operator told of one at a time
 * restarts once per variable.
 */
#ifndef PGW_UTIL_ENV_H
#define PGW_UTIL_ENV_H

#include <stdbool.h>
#include <stddef.h>

/* Room for the names of a channel's variables (each at most
 * PGW_ENV_NAME_MAX, config.h), with their separators. */
#define PGW_ENV_UNSET_MAX 512

/*
 * Whether every one of the `n` variables named in `vars` is set and not
 * empty. The names of those that are not go into `unset` as "A, B" (""
 * when all are set; an empty name, a variable the configuration does not
 * name, as "(no variable named)"), cut short to fit `cap` (> 0).
 */
bool pgw_env_all_set(const char *const *vars, size_t n, char *unset, size_t cap);

#endif
