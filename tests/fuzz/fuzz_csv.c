/*
 * fuzz_csv.c - libFuzzer target: any bytes as a CSV statement, read twice,
 * once whole (pgw_csv_next) and once from a file in chunks
 * (pgw_csv_file_next), built with a chunk of PGW_CSV_CHUNK = 64 bytes so
 * that small inputs cross chunk ends. The two must agree row by row:
 * fields, line numbers, errors and their messages. The only difference
 * allowed is the file's refusal of a row longer than a chunk, where the
 * comparison stops. Never a crash, a hang or undefined behaviour.
 */
#define _GNU_SOURCE
#include "util/csv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as a file the reader opens by name, in memory. */
static int input_file(const uint8_t *data, size_t size, char *path, size_t cap)
{
    int fd = memfd_create("fuzz_csv", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

static void same_or_abort(int rc_whole, const pgw_csv_row *whole, const pgw_err *why_whole,
                          bool done_whole, int rc_file, const pgw_csv_row *file,
                          const pgw_err *why_file, bool done_file)
{
    if (rc_whole != rc_file || (rc_whole == PGW_OK && done_whole != done_file))
        abort();
    if (rc_whole != PGW_OK) {
        if (whole->line != file->line || strcmp(why_whole->msg, why_file->msg) != 0)
            abort();
        return;
    }
    if (done_whole)
        return;
    if (whole->line != file->line || whole->n != file->n)
        abort();
    for (size_t i = 0; i < whole->n; i++)
        if (strcmp(whole->fields[i], file->fields[i]) != 0)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pgw_csv_row whole_row, file_row; /* 16 KB each: off the stack */
    char path[64];
    int fd = input_file(data, size, path, sizeof(path));
    pgw_csv_file *file;
    pgw_err err;
    if (pgw_csv_file_open(path, &file, &err) != PGW_OK)
        abort();
    pgw_csv whole;
    pgw_csv_init(&whole, (const char *)data, size);
    /* Every row or error takes a byte at least, and the end one call. */
    bool ended = false;
    for (size_t calls = 0; calls <= size + 1 && !ended; calls++) {
        pgw_err why_whole, why_file;
        bool done_whole = false, done_file = false;
        int rc_whole = pgw_csv_next(&whole, &whole_row, &done_whole, &why_whole);
        int rc_file = pgw_csv_file_next(file, &file_row, &done_file, &why_file);
        if (rc_file == PGW_EINVAL && strstr(why_file.msg, "the row is longer than") != NULL)
            ended = true; /* the chunk's own bound: the readers part here */
        else
            same_or_abort(rc_whole, &whole_row, &why_whole, done_whole, rc_file, &file_row,
                          &why_file, done_file);
        ended = ended || (rc_whole == PGW_OK && done_whole);
    }
    if (!ended)
        abort(); /* more calls than bytes and still not at the end */
    pgw_csv_file_close(file);
    close(fd);
    return 0;
}
