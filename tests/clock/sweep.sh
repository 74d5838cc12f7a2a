#!/usr/bin/env bash
# Runs the suites that read the wall clock at dates that have broken them
# or may (tests/clock/at.sh moves the clock), one after another, and
# prints a line a date and suite. Not part of `make test`: it takes about
# 10 minutes a date. Usage, from the repository root:
#   tests/clock/sweep.sh BINARY ['DATE' ...]
# Without dates, the list below (+08:00, the example mall's zone): a
# member day (Wednesday), a super-brand day (the 18th), the minutes
# before a month's, a year's and a leap day's midnight (crossed while the
# suite runs), the example's quiet hours, and a year after the suites'
# events' points would have expired under the example's policy.
# PGW_TEST_PG_DIR set (a running cluster): on PostgreSQL.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY ['DATE' ...]" >&2; exit 2; }
bin=$(realpath "$1")
shift
dates=("$@")
if [ ${#dates[@]} -eq 0 ]; then
    month=$(date +%Y-%m-01)
    [ "$(date +%-d)" -lt 18 ] || month=$(date -d "$month +1 month" +%F)
    dates=("next Wednesday 10:00 +0800" "${month%-01}-18 10:00 +0800"
        "$(date -d "$(date +%Y-%m-01) +2 month -1 day" +%F) 23:58 +0800"
        "$(date +%Y)-12-31 23:58 +0800" "2028-02-28 23:58 +0800" "22:30 +0800"
        "$(($(date +%Y) + 2))-03-01 12:00 +0800")
fi
here=$(cd "$(dirname "$0")" && pwd)
failed=0
for when in "${dates[@]}"; do
    for suite in http_api.py wechat_api.py sms_notify.py cli.sh; do
        log=$(mktemp)
        run=(python3)
        [ "$suite" = cli.sh ] && run=(bash)
        "$here/at.sh" "$when" "${run[@]}" "tests/integration/$suite" "$bin" . >"$log" 2>&1
        rc=$?
        echo "$(TZ=Asia/Shanghai date -d "$when" '+%F %T %z %a') $suite: exit $rc: $(tail -n 1 "$log")"
        if [ $rc -ne 0 ]; then
            failed=1
            grep -m 5 FAIL "$log" | cut -c 1-300
        fi
        rm -f "$log"
    done
done
exit $failed
