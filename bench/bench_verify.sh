#!/usr/bin/env bash
# How `pointsgw verify` grows with the log: for each size N, a database of
# N members made by `import-balances` (one legacy balance each: a member,
# a lot, an import transfer), then verify timed on it. Linear work takes
# twice as long at twice the size. The import that makes a database is
# timed too (legacy balances, as a mall's first migration runs them).
#   bench_verify.sh POINTSGW CONFIG DIR [N ...]      (default N: 20000 40000)
# The SQLite files stay in DIR (verify_N.db) and are reused by a later run.
# PGW_BENCH_PG=<admin URL> (scripts/pg-cluster.sh start prints one) also
# imports into a new database verify_N there and times verify on it.
set -euo pipefail
pointsgw=$1
config=$2
dir=$3
shift 3
if [ $# -gt 0 ]; then sizes=("$@"); else sizes=(20000 40000); fi
mkdir -p "$dir"

now() { date +%s.%N; }

# verify on URL, timed; prints its counts and the seconds.
timed_verify() {
    local start end
    start=$(now)
    "$pointsgw" verify --config "$config" --db "$1" >"$dir/verify.out" 2>&1 || {
        cat "$dir/verify.out" >&2
        exit 1
    }
    end=$(now)
    awk -v s="$start" -v e="$end" -v what="$2" -v n="$3" \
        'BEGIN { printf "%-10s %7d members  verify %8.2f s\n", what, n, e - s }'
}

# import-balances of the CSV into URL, timed.
timed_import() {
    local start end
    start=$(now)
    "$pointsgw" import-balances --shop S001 --file "$csv" --config "$config" --db "$1" >/dev/null
    end=$(now)
    awk -v s="$start" -v e="$end" -v what="$2" -v n="$3" \
        'BEGIN { printf "%-10s %7d members  import %8.2f s\n", what, n, e - s }'
}

for n in "${sizes[@]}"; do
    csv=$dir/verify_$n.csv
    awk -v n="$n" 'BEGIN { print "card,phone,points";
        for (i = 0; i < n; i++) printf "C%08d,139%08d,%d\n", i, i, 100 + i % 900 }' >"$csv"
    db=$dir/verify_$n.db
    if [ ! -e "$db" ]; then
        timed_import "sqlite:$db" sqlite "$n"
    fi
    timed_verify "sqlite:$db" sqlite "$n"
    if [ -n "${PGW_BENCH_PG:-}" ]; then
        url=${PGW_BENCH_PG%/*}/verify_$n
        if psql -qX "$PGW_BENCH_PG" -c "CREATE DATABASE verify_$n" 2>/dev/null; then
            timed_import "$url" postgresql "$n"
        fi
        timed_verify "$url" postgresql "$n"
    fi
done
