/*
 * fuzz_event.c - libFuzzer target: any bytes as a `POST /v1/events` body,
 * parsed against the example mall's rules and, when valid, priced. Either a
 * clean error or an earning whose lines add up, never a crash. The body is
 * read as the API reads it (pgw_json_load), and its plain reader must give
 * what jansson gives whenever it gives anything.
 */
#include "config/config.h"
#include "server/event_json.h"
#include "util/json_load.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pgw_config *example_config(void)
{
    static pgw_config *cfg;
    if (cfg == NULL && pgw_config_load("config/pointsgw.example.json", &cfg, NULL) != PGW_OK)
        abort(); /* run from the repository root */
    return cfg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pgw_event_doc doc;
    static pgw_earning earning;
    const pgw_config *cfg = example_config();
    json_t *obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    json_t *plain = pgw_json_load_plain((const char *)data, size);
    if (plain != NULL && (obj == NULL || !json_equal(plain, obj)))
        abort(); /* the plain reader took what jansson refuses, or read it otherwise */
    json_decref(plain);
    if (obj == NULL)
        return 0;
    pgw_err err;
    pgw_member_ctx_doc ctx;
    if (pgw_event_from_json(obj, &cfg->rules, &doc, &err) == PGW_OK &&
        pgw_member_ctx_from_json(NULL, &ctx, &err) == PGW_OK &&
        pgw_rules_earn(&cfg->rules, &doc.event, &ctx.ctx, &earning, &err) == PGW_OK) {
        int64_t sum = 0;
        for (size_t i = 0; i < earning.n_lines; i++)
            sum += earning.lines[i].beneficiary == PGW_BENEFICIARY_MEMBER ? earning.lines[i].points
                                                                          : 0;
        if (sum != earning.points)
            abort();
    }
    json_decref(obj);
    return 0;
}
