"""PGW_TEST_TIMES=1: each test's wall time, printed at the end of a suite,
the longest first, to see what makes the suite (and make test) slow. Shared
by http_api.py, wechat_api.py and sms_notify.py. Without the variable,
nothing is printed."""
import os
import sys
import time


def timed(times, test, *args):
    """test(*args), its wall time added to times[its name]; its result."""
    start = time.monotonic()
    try:
        return test(*args)
    finally:
        times[test.__name__] = times.get(test.__name__, 0.0) + time.monotonic() - start


def print_times(suite, times):
    if not os.environ.get("PGW_TEST_TIMES"):
        return
    for name, took in sorted(times.items(), key=lambda t: -t[1]):
        print("%s: %6.1f s %s" % (suite, took, name), file=sys.stderr)
    print("%s: %6.1f s in the tests timed" % (suite, sum(times.values())), file=sys.stderr)
