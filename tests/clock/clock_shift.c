/*
 * clock_shift.c - an LD_PRELOAD shim that moves the wall clock by
 * PGW_CLOCK_SHIFT_S seconds (signed) for a test run, so that the suites
 * can be run on a Wednesday, an 18th, a month's last minute or a leap
 * day (tests/clock/at.sh). libfaketime did not serve here: it moves every
 * clock, and Python's sleeps failed with EINVAL and a Condition.wait
 * hung. This moves only what says the date: CLOCK_REALTIME (and its
 * coarse variant), gettimeofday and time. The monotonic clock, which
 * waits, timeouts and backoffs use, is left alone.
 *
 * A deadline given to pthread_cond_timedwait on the realtime clock was
 * computed from the moved clock, so it is moved back before the kernel
 * sees it. Which clock a condition waits on cannot be asked, so the
 * deadline's size tells: a realtime one is past 2001 (10^9 s), a
 * monotonic one is the machine's uptime. Other waits on absolute realtime
 * deadlines (sem_timedwait, pthread_mutex_timedlock) are not moved: the
 * gateway and Python's threading use neither.
 *
 * Built and preloaded by at.sh, not by the project's build: a test tool,
 * never linked into pointsgw.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#define REALTIME_DEADLINE_MIN 1000000000 /* seconds: 2001-09-09 */

static long long shift; /* set once, before main and any thread */

/* The libc function a wrapper calls (version NULL: the default one); none
 * found is a broken shim, stopped at once rather than called as NULL. */
static void *next_symbol(const char *name, const char *version)
{
    void *f = version ? dlvsym(RTLD_NEXT, name, version) : dlsym(RTLD_NEXT, name);
    if (f == NULL) {
        fprintf(stderr, "clock_shift: no %s after the shim\n", name);
        abort();
    }
    return f;
}

__attribute__((constructor)) static void read_shift(void)
{
    const char *v = getenv("PGW_CLOCK_SHIFT_S");
    shift = v != NULL ? atoll(v) : 0;
}

int clock_gettime(clockid_t clock, struct timespec *ts)
{
    static int (*real)(clockid_t, struct timespec *);
    if (real == NULL)
        real = (int (*)(clockid_t, struct timespec *))next_symbol("clock_gettime", NULL);
    int rc = real(clock, ts);
    if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE))
        ts->tv_sec += shift;
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz)
{
    static int (*real)(struct timeval *, void *);
    if (real == NULL)
        real = (int (*)(struct timeval *, void *))next_symbol("gettimeofday", NULL);
    int rc = real(tv, tz);
    if (rc == 0) /* tv is nonnull (glibc's declaration) */
        tv->tv_sec += shift;
    return rc;
}

time_t time(time_t *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out != NULL)
        *out = ts.tv_sec;
    return ts.tv_sec;
}

int pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *lock,
                           const struct timespec *deadline)
{
    static int (*real)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
    if (real == NULL) /* the versioned symbol: the unversioned one is glibc 2.2's */
        real = (int (*)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *))next_symbol(
            "pthread_cond_timedwait", "GLIBC_2.3.2");
    struct timespec kernel = *deadline;
    if (kernel.tv_sec > REALTIME_DEADLINE_MIN)
        kernel.tv_sec -= shift;
    return real(cond, lock, &kernel);
}
