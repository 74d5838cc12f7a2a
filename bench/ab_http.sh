#!/usr/bin/env bash
# Two builds of pointsgw against each other over HTTP, as this VM allows:
# its speed drifts by a third within minutes, so only cases run minutes
# apart compare, and the order within a round matters too (a case run
# right after one that left much to write back is slower). So the two
# alternate, each round's pair in the order opposite to the last one's
# (A B, B A, A B, ...), and the means are printed with every case.
#   ab_http.sh POINTSGW_A POINTSGW_B [ROUNDS] [SECONDS] [CONNECTIONS]
#   (defaults: 6 rounds, 5 s a case, 128 connections; run from the
#   repository, after make build and cmake --build build/release
#   --target bench_http, which make bench-http does too)
set -euo pipefail
a=$1
b=$2
rounds=${3:-6}
seconds=${4:-5}
conns=${5:-128}
bench=build/release/bench_http
config=config/pointsgw.example.json
dir=bench/data
[ -x "$bench" ] || { echo "ab_http.sh: $bench is missing: make build, then cmake --build build/release --target bench_http" >&2; exit 2; }
mkdir -p "$dir"

# One case: "<label> <events/s> <p99 ms> <CPU us an event>", or exit 1.
run_case() {
  local label=$1 bin=$2 out events p99 cpu
  out=$("$bench" "$bin" "$config" "$dir" "$seconds" "$conns" 2>&1) || {
    echo "ab_http.sh: $label failed:" >&2
    echo "$out" >&2
    exit 1
  }
  events=$(echo "$out" | grep -o '[0-9]* durable events/s' | cut -d' ' -f1)
  p99=$(echo "$out" | grep -o 'p99 *[0-9.]*' | head -1 | awk '{print $2}')
  cpu=$(echo "$out" | grep -o 'all [0-9]*' | cut -d' ' -f2)
  echo "$label $events $p99 $cpu"
}

cases=$(mktemp)
trap 'rm -f "$cases"' EXIT
for ((r = 0; r < rounds; r++)); do
  if ((r % 2 == 0)); then order=(A B); else order=(B A); fi
  for side in "${order[@]}"; do
    if [ "$side" = A ]; then bin=$a; else bin=$b; fi
    line=$(run_case "$side" "$bin")
    echo "$line" >>"$cases"
    read -r label events p99 cpu <<<"$line"
    printf '%s  round %d  %s: %s events/s  p99 %s ms  CPU %s us an event  load %s\n' \
      "$(date +%T)" $((r + 1)) "$label" "$events" "$p99" "$cpu" "$(cut -d' ' -f1 /proc/loadavg)"
  done
done
awk -v a="$a" -v b="$b" '
  { n[$1]++; ev[$1] += $2; p99[$1] += $3; cpu[$1] += $4 }
  END {
    for (s in n)
      printf "%s (%s): %d cases, mean %.0f events/s, p99 %.1f ms, CPU %.0f us an event\n",
             s, s == "A" ? a : b, n[s], ev[s] / n[s], p99[s] / n[s], cpu[s] / n[s]
  }' "$cases" | sort
