/*
 * thread_name.h - names the calling thread, so that `top -H`, `perf` and
 * gdb tell the writer from a courier (every thread is "pointsgw" otherwise).
 */
#ifndef PGW_UTIL_THREAD_NAME_H
#define PGW_UTIL_THREAD_NAME_H

/* At most 15 bytes are kept (the kernel's limit); best effort, no error. */
void pgw_thread_name(const char *name);

#endif
