/*
 * json_read.c - see json_read.h.
 */
#include "json_read.h"

#include "core/assertions.h"

#include <stdio.h>
#include <string.h>

void pgw_json_path_key(char out[PGW_JSON_PATH_MAX], const char *parent, const char *key)
{
    PGW_ASSERT(parent != NULL && key != NULL);
    snprintf(out, PGW_JSON_PATH_MAX, "%s.%s", parent, key);
}

void pgw_json_path_index(char out[PGW_JSON_PATH_MAX], const char *parent, size_t index)
{
    PGW_ASSERT(parent != NULL);
    snprintf(out, PGW_JSON_PATH_MAX, "%s[%zu]", parent, index);
}

static const char *type_name(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction or exponent";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

int pgw_json_expect_object(const json_t *value, const char *path, pgw_err *err)
{
    if (value == NULL || !json_is_object(value))
        return pgw_err_set(err, PGW_EINVAL, "%s: expected an object, got %s", path,
                           value ? type_name(value) : "nothing");
    return PGW_OK;
}

int pgw_json_fields(const json_t *obj, const char *path, const char *const *allowed,
                    const json_t **values, pgw_err *err)
{
    PGW_ASSERT(json_is_object(obj));
    for (size_t i = 0; values != NULL && allowed[i] != NULL; i++)
        values[i] = NULL;
    /* json_object_foreach's order, by its iterator without its look-up of
     * each key's iterator again; jansson's iterators take a non-const
     * object, which is not changed. */
    for (void *it = json_object_iter((json_t *)obj); it != NULL;
         it = json_object_iter_next((json_t *)obj, it)) {
        const char *key = json_object_iter_key(it);
        size_t i = 0;
        /* The first bytes compared first: most keys differ there, and a
         * call of strcmp for each allowed key was ~600 instructions an
         * event's (bench/RESULTS.md). */
        while (allowed[i] != NULL && (allowed[i][0] != key[0] || strcmp(allowed[i], key) != 0))
            i++;
        if (allowed[i] == NULL)
            return pgw_err_set(err, PGW_EINVAL, "%s.%.64s: unknown key", path, key);
        if (values != NULL)
            values[i] = json_object_iter_value(it);
    }
    return PGW_OK;
}

int pgw_json_only_keys(const json_t *obj, const char *path, const char *const *allowed,
                       pgw_err *err)
{
    return pgw_json_fields(obj, path, allowed, NULL, err);
}

bool pgw_json_has(const json_t *obj, const char *key)
{
    return pgw_json_given(json_object_get(obj, key)); /* NULL for an obj that is none */
}

bool pgw_json_given(const json_t *value)
{
    return value != NULL && !json_is_null(value);
}

/*
 * Whether obj[key], `value` (NULL: absent), is there; PGW_ENOTFOUND (no
 * message) when absent and optional. An optional key set to null is
 * absent: Jackson, Json.NET and most generated clients write every unset
 * field as null, and a POS in Java got 400 for a receipt number it did not
 * have (the HTTP review).
 */
static int judge(const json_t *value, const char *key, const char *path, bool required,
                 pgw_err *err)
{
    if (value != NULL && !(json_is_null(value) && !required))
        return PGW_OK;
    if (required)
        return pgw_err_set(err, PGW_EINVAL, "%s.%s: required", path, key);
    return PGW_ENOTFOUND;
}

int pgw_json_int(const json_t *obj, const char *key, const char *path, bool required, int64_t min,
                 int64_t max, int64_t *out, pgw_err *err)
{
    PGW_ASSERT(json_is_object(obj));
    return pgw_json_int_of(json_object_get(obj, key), key, path, required, min, max, out, err);
}

int pgw_json_int_of(const json_t *value, const char *key, const char *path, bool required,
                    int64_t min, int64_t max, int64_t *out, pgw_err *err)
{
    PGW_ASSERT(min <= max);
    int rc = judge(value, key, path, required, err);
    if (rc != PGW_OK)
        return rc == PGW_ENOTFOUND ? PGW_OK : rc;
    if (!json_is_integer(value))
        return pgw_err_set(err, PGW_EINVAL, "%s.%s: expected an integer %lld..%lld, got %s", path,
                           key, (long long)min, (long long)max, type_name(value));
    json_int_t n = json_integer_value(value);
    if (n < min || n > max)
        return pgw_err_set(err, PGW_EINVAL, "%s.%s: expected an integer %lld..%lld, got %lld", path,
                           key, (long long)min, (long long)max, (long long)n);
    *out = (int64_t)n;
    return PGW_OK;
}

int pgw_json_bool(const json_t *obj, const char *key, const char *path, bool required, bool *out,
                  pgw_err *err)
{
    PGW_ASSERT(json_is_object(obj));
    const json_t *value = json_object_get(obj, key);
    int rc = judge(value, key, path, required, err);
    if (rc != PGW_OK)
        return rc == PGW_ENOTFOUND ? PGW_OK : rc;
    if (!json_is_boolean(value))
        return pgw_err_set(err, PGW_EINVAL, "%s.%s: expected true or false, got %s", path, key,
                           type_name(value));
    *out = json_is_true(value);
    return PGW_OK;
}

int pgw_json_string_ref(const json_t *obj, const char *key, const char *path, bool required,
                        size_t max_len, const char **out, pgw_err *err)
{
    PGW_ASSERT(json_is_object(obj));
    return pgw_json_string_ref_of(json_object_get(obj, key), key, path, required, max_len, out,
                                  err);
}

int pgw_json_string_ref_of(const json_t *value, const char *key, const char *path, bool required,
                           size_t max_len, const char **out, pgw_err *err)
{
    *out = NULL;
    int rc = judge(value, key, path, required, err);
    if (rc != PGW_OK)
        return rc == PGW_ENOTFOUND ? PGW_OK : rc;
    if (!json_is_string(value))
        return pgw_err_set(err, PGW_EINVAL, "%s.%s: expected a string, got %s", path, key,
                           type_name(value));
    size_t len = json_string_length(value);
    const char *s = json_string_value(value);
    if (len == 0)
        return pgw_err_set(err, PGW_EINVAL, "%s.%s: must not be empty", path, key);
    if (len > max_len)
        return pgw_err_set(err, PGW_EINVAL, "%s.%s: longer than %zu bytes", path, key, max_len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        /* Most bytes are none of the three below: one test for them. */
        if (c >= 0x20 && c != 0x7F && c != 0xC2)
            continue;
        /* C0 and DEL; and C1 (U+0080..U+009F, UTF-8 C2 80..C2 9F): U+009B
         * is a terminal's CSI as ESC [ is */
        bool c1 = c == 0xC2 && i + 1 < len && (unsigned char)s[i + 1] <= 0x9F;
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F || c1)
            return pgw_err_set(err, PGW_EINVAL, "%s.%s: contains a control character (0x%02X%s)",
                               path, key, c1 ? (unsigned char)s[i + 1] : c,
                               c1 ? ", U+0080..U+009F" : "");
    }
    *out = s;
    return PGW_OK;
}

int pgw_json_string(const json_t *obj, const char *key, const char *path, bool required,
                    size_t max_len, char *out, size_t cap, pgw_err *err)
{
    PGW_ASSERT(json_is_object(obj));
    return pgw_json_string_of(json_object_get(obj, key), key, path, required, max_len, out, cap,
                              err);
}

int pgw_json_string_of(const json_t *value, const char *key, const char *path, bool required,
                       size_t max_len, char *out, size_t cap, pgw_err *err)
{
    PGW_ASSERT(cap > max_len);
    const char *s;
    int rc = pgw_json_string_ref_of(value, key, path, required, max_len, &s, err);
    if (rc != PGW_OK || s == NULL)
        return rc;
    memcpy(out, s, strlen(s) + 1);
    return PGW_OK;
}
