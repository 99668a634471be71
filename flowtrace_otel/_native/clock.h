/* The one clock the native core reads: CLOCK_MONOTONIC in nanoseconds (POSIX).  It is the
 * clock time.monotonic_ns() uses on Linux, so Python and C timestamps compare. */
#ifndef FLOWTRACE_NATIVE_CLOCK_H
#define FLOWTRACE_NATIVE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t
flowtrace_monotonic_ns(void)
{
    struct timespec ts;
    /* CLOCK_MONOTONIC cannot fail on Linux/macOS for a valid pointer; on the impossible
       failure ts stays zeroed and the duration reads 0, never garbage. */
    ts.tv_sec = 0;
    ts.tv_nsec = 0;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + (int64_t)ts.tv_nsec;
}

#endif
