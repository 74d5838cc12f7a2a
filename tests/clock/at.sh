#!/usr/bin/env bash
# Runs a command with the wall clock starting at a given date, for itself
# and every process it starts (the suites and the gateways they run):
#   tests/clock/at.sh '2026-12-09 10:00:00 +0800' \
#       python3 tests/integration/http_api.py build/release/pointsgw .
# The clock moves on from there at its real pace; the monotonic clock is
# not moved (clock_shift.c says why and what is not covered). A test
# tool: CI runs on whatever day it is, and a test that passes only on some
# days fails there on the others. Builds the shim into build/ when needed.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 'DATE' COMMAND [ARG...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
shim=$here/../../build/clock_shift.so
if [ ! -e "$shim" ] || [ "$here/clock_shift.c" -nt "$shim" ]; then
    mkdir -p "$(dirname "$shim")"
    cc -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC -o "$shim" "$here/clock_shift.c" -ldl
fi
target=$(date -d "$1" +%s) || { echo "$0: not a date: $1" >&2; exit 2; }
shift
export PGW_CLOCK_SHIFT_S=$((target - $(date +%s)))
# The sanitizers' runtime wants to be first; a preloaded shim goes before it.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0
export LD_PRELOAD=$(cd "$(dirname "$shim")" && pwd)/clock_shift.so${LD_PRELOAD:+:$LD_PRELOAD}
exec "$@"
