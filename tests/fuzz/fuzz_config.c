/*
 * fuzz_config.c - libFuzzer target: any bytes given to the configuration
 * loader must give either a valid configuration or a clean error with a
 * message, never a crash, a leak or undefined behaviour.
 */
#include "config/config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pgw_config *cfg = NULL;
    pgw_err err;
    pgw_err_clear(&err);
    int rc = pgw_config_parse((const char *)data, size, "fuzz.json", &cfg, &err);
    if (rc == PGW_OK) {
        char summary[4096];
        if (cfg == NULL || pgw_config_summary(cfg, summary, sizeof(summary)) != PGW_OK)
            abort();
        pgw_config_free(cfg);
    } else if (cfg != NULL || err.msg[0] == '\0' || strlen(err.msg) >= PGW_ERR_MSG_MAX) {
        abort();
    }
    return 0;
}
