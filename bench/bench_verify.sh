#!/usr/bin/env bash
# How `pointsgw verify` grows with the log: for each size N, a database of
# N members made by `import-balances` (one legacy balance each: a member,
# a lot, an import transfer), then verify timed on it. Linear work takes
# twice as long at twice the size. The import that makes a database is
# timed too (legacy balances, as a mall's first migration runs them).
# Then a second database of each size, refunds_N: N purchases by new
# members and a refund of half of each, posted by `reconcile --repair`
# (earns, their reversals, refund keys: what verify's refund checks read),
# and verify timed on it.
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

# verify on URL, timed; prints its counts and the seconds. NOUN: what N
# counts (members).
timed_verify() {
    local start end
    start=$(now)
    "$pointsgw" verify --config "$config" --db "$1" >"$dir/verify.out" 2>&1 || {
        cat "$dir/verify.out" >&2
        exit 1
    }
    end=$(now)
    awk -v s="$start" -v e="$end" -v what="$2" -v n="$3" -v noun="${4:-members}" \
        'BEGIN { printf "%-10s %7d %s  verify %8.2f s\n", what, n, noun, e - s }'
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

# A statement of the refunds_N database's events: N purchases (P...) or
# a refund of half of each (R..., after them; its original's id last).
statement() {
    awk -v n="$1" -v type="$2" 'BEGIN {
        print "event_id,occurred_at,type,member,amount_fen,points,original_event_id"
        for (i = 0; i < n; i++) {
            s = i % 43200
            t = sprintf("2026-11-19T%02d:%02d:%02d+08:00", s / 3600 + (type == "refund" ? 12 : 0),
                        s % 3600 / 60, s % 60)
            if (type == "purchase")
                printf "P%08d,%s,purchase,member_id:MR%d,10000,0,\n", i, t, i
            else
                printf "R%08d,%s,refund,member_id:MR%d,5000,0,P%08d\n", i, t, i, i
        } }'
}

# The refunds_N database at URL: one legacy balance (it creates the
# database), then the purchases and their refunds repaired in.
make_refunds() {
    local first=(--new-channel)
    printf 'card,phone,points\nC0,13900000000,100\n' >"$dir/one.csv"
    "$pointsgw" import-balances --shop S001 --file "$dir/one.csv" --config "$config" \
        --db "$1" >/dev/null
    for type in purchase refund; do
        statement "$2" "$type" >"$dir/refunds_$type.csv"
        # exit 1: the rows were missing from the ledger, as they were meant to be
        "$pointsgw" reconcile --statement "$dir/refunds_$type.csv" --channel store --shop S001 \
            --from 2026-11-19T00:00:00+08:00 --to 2026-11-20T00:00:00+08:00 --repair \
            "${first[@]}" --config "$config" --db "$1" >/dev/null 2>"$dir/repair.err" || true
        grep -q "\"failed\":0" "$dir/repair.err" || { cat "$dir/repair.err" >&2; exit 1; }
        first=()
    done
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
    db=$dir/refunds_$n.db
    [ -e "$db" ] || make_refunds "sqlite:$db" "$n"
    timed_verify "sqlite:$db" sqlite "$n" "refunded purchases"
    if [ -n "${PGW_BENCH_PG:-}" ]; then
        url=${PGW_BENCH_PG%/*}/refunds_$n
        if psql -qX "$PGW_BENCH_PG" -c "CREATE DATABASE refunds_$n" 2>/dev/null; then
            make_refunds "$url" "$n"
        fi
        timed_verify "$url" postgresql "$n" "refunded purchases"
    fi
done
