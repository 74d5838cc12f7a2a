"""How a `pointsgw serve` that a test started stopped (standard library only).

Each integration script's server helper asks unclean() of every stop, by
default, and counts its answer with the script's own check(): a crash, a
sanitizer's report (the test build is ASan+UBSan), a leak or a last line
other than README's (Status) would otherwise pass unseen, as a NULL read
at the stop's drain did (d32ed10).
"""
CLEAN = "pointsgw serve: stopped cleanly"
# README, Status: the other last lines a stop may end with.
CUT_OFF = "pointsgw serve: stopped, but cut off "
LOOP_FAILED = "pointsgw serve: libwebsockets' service loop failed: "
# What ASan, LSan and UBSan write; never a line of pointsgw's own. Not a
# bare "ERROR:": PostgreSQL's messages, which a storage failure's line
# quotes, begin so.
SANITIZERS = ("runtime error", "AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer")


def unclean(code, err, last=CLEAN, status=0):
    """Why a server's stop, its exit status `code` and its whole stderr
    `err`, is not the one expected (exit `status`, stderr's last line
    starting with `last`, or any line when `last` is None, no sanitizer
    output); None when it is. The text ends with stderr's tail."""
    lines = err.rstrip("\n").split("\n")
    said = [word for word in SANITIZERS if word in err]
    wrong = []
    if code != status:
        wrong.append(f"exit {code}, not {status}")
    if last is not None and not lines[-1].startswith(last):
        wrong.append(f"last line {lines[-1]!r}, not {last!r}")
    if said:
        wrong.append("sanitizer output (%s)" % ", ".join(said))
    if not wrong:
        return None
    return "; ".join(wrong) + ": stderr ends:\n" + "\n".join(lines[-25:])[-3000:]
