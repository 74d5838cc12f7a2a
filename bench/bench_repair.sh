#!/usr/bin/env bash
# How long `pointsgw reconcile --repair` takes to post a day's outage: a
# statement of N rows the log does not have (4 in 5 purchases by members
# new to it, 1 in 5 refunds of half of one of those purchases, whose ids
# sort first: the repair must post them after their purchases), repaired
# into a fresh database, then repaired again (nothing is left to post).
#   bench_repair.sh POINTSGW CONFIG DIR [N ...]      (default N: 5000)
# PGW_BENCH_PG=<admin URL> (scripts/pg-cluster.sh start prints one) also
# repairs into a new database repair_N there (dropped first).
set -euo pipefail
pointsgw=$1
config=$2
dir=$3
shift 3
if [ $# -gt 0 ]; then sizes=("$@"); else sizes=(5000); fi
mkdir -p "$dir"

now() { date +%s.%N; }

# reconcile --repair of the statement against URL, timed (run $4); prints
# the repair's tally. Exit 1 (not a clean match) is expected.
timed_reconcile() {
    local start end rc=0
    start=$(now)
    "$pointsgw" reconcile --statement "$statement" --channel store --shop S001 \
        --config "$config" --db "$1" --repair >/dev/null 2>"$dir/repair.err" || rc=$?
    end=$(now)
    if [ "$rc" -gt 1 ]; then
        cat "$dir/repair.err" >&2
        exit 1
    fi
    awk -v s="$start" -v e="$end" -v what="$2" -v n="$3" -v how="$4" \
        'BEGIN { printf "%-10s %7d rows  %-8s %8.2f s  ", what, n, how, e - s }'
    grep '"repair"' "$dir/repair.err"
}

# A database with the schema and nothing of S001's: one legacy balance at S008.
fresh() {
    printf 'card,phone,points\nB1,,1\n' >"$dir/one.csv"
    "$pointsgw" import-balances --shop S008 --file "$dir/one.csv" --config "$config" \
        --db "$1" >/dev/null
}

for n in "${sizes[@]}"; do
    statement=$dir/repair_$n.csv
    awk -v n="$n" 'BEGIN { print "event_id,occurred_at,type,member,amount_fen,points,original_event_id";
        p = n - int(n / 5)
        for (i = 0; i < p; i++)
            printf "P%07d,2026-11-20T%02d:%02d:%02d+08:00,purchase,member_id:MBR%d,%d,0,\n",
                i, 9 + i % 12, i % 60, i % 59, i, 2000 + 100 * (i % 50)
        for (i = 0; i < n - p; i++)
            printf "A%07d,2026-11-20T22:%02d:00+08:00,refund,member_id:MBR%d,%d,0,P%07d\n",
                i, i % 60, i * 4, (2000 + 100 * ((i * 4) % 50)) / 2, i * 4 }' >"$statement"
    db=$dir/repair_$n.db
    rm -f "$db" "$db-wal" "$db-shm"
    fresh "sqlite:$db"
    timed_reconcile "sqlite:$db" sqlite "$n" first
    timed_reconcile "sqlite:$db" sqlite "$n" second
    if [ -n "${PGW_BENCH_PG:-}" ]; then
        url=${PGW_BENCH_PG%/*}/repair_$n
        PGOPTIONS="-c client_min_messages=warning" psql -qX "$PGW_BENCH_PG" \
            -c "DROP DATABASE IF EXISTS repair_$n" \
            -c "CREATE DATABASE repair_$n" >/dev/null
        fresh "$url"
        timed_reconcile "$url" postgresql "$n" first
        timed_reconcile "$url" postgresql "$n" second
    fi
done
