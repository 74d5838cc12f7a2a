/*
 * fuzz_redact.c - libFuzzer target: any message as the request log shows
 * a refusal (pgw_redact_reason), the first byte picking the room for it
 * (1..512 bytes, so that cutting is tried too). What comes out fits,
 * is printable ASCII (the log line stays JSON) and holds no run of 7 or
 * more digits in a row (a phone's at its shortest), but for a time's
 * fraction of up to 9 digits ("12:30:45.123456789"), which redact.h
 * shows. Never a crash or undefined behaviour.
 */
#include "util/redact.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MESSAGE_MAX 1024 /* the longest refusal a request log line takes is shorter */

/* Whether out[start..start+digits) is a time's fraction. */
static int fraction_of_time(const char *out, size_t start, size_t digits)
{
    return digits <= 9 && start >= 4 && out[start - 1] == '.' && out[start - 4] == ':';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > MESSAGE_MAX + 1)
        return 0;
    char in[MESSAGE_MAX + 1], out[512];
    memcpy(in, data + 1, size - 1);
    in[size - 1] = '\0';
    size_t cap = 1 + data[0] % sizeof(out);
    memset(out, 'X', sizeof(out));
    pgw_redact_reason(in, out, cap);
    size_t len = strnlen(out, cap);
    if (len >= cap)
        abort(); /* not cut to fit */
    size_t digits = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c < 0x20 || c > 0x7e)
            abort();
        digits = (c >= '0' && c <= '9') ? digits + 1 : 0;
        if (digits >= 7 && !fraction_of_time(out, i + 1 - digits, digits))
            abort(); /* a phone's digits shown */
    }
    return 0;
}
