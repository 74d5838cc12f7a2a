"""What keeps the suites' events, dated in late November 2026 (2026-11-25,
a Wednesday, for member day), valid whatever year they run in. Shared by
http_api.py (and pg_instances.py through it), wechat_api.py (and
sms_notify.py through it)."""
import datetime


def expiry_years():
    """The example's year_end policy with as many years as keep 2026's
    points to the end of next year. With the example's 1 year, the test
    servers' sweep (every second) expired every such lot from 2028-01-01,
    and the suites failed from then on. Points that must expire (a 2024
    backlog's, 2020's) still do: 2024's at the end of last year. The
    configuration takes at most 10 years: enough until 2035."""
    return min(10, max(1, datetime.date.today().year - 2025))
