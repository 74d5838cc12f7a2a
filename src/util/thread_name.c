/*
 * thread_name.c - see thread_name.h.
 */
#include "thread_name.h"

#include <sys/prctl.h>

void pgw_thread_name(const char *name)
{
    (void)prctl(PR_SET_NAME, name, 0, 0, 0); /* a name is a convenience: ignore failure */
}
