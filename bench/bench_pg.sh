#!/usr/bin/env bash
# The storage and HTTP benchmarks on PostgreSQL (make bench-pg): a private
# cluster with fsync on (scripts/pg-cluster.sh), then
#   bench_store at batch 128 and 1024, one writer and three (three gateway
#     instances' writers on one database);
#   bench_http with one gateway and with three on one database, 16 and 128
#     connections, purchases at four shops and all at one.
# Usage: bench_pg.sh BUILD_DIR CONFIG SECONDS
set -euo pipefail
build=$1
config=$2
seconds=${3:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
cluster=$here/bench/data/pg
trap 'bash "$here/scripts/pg-cluster.sh" stop "$cluster"' EXIT
admin=$(bash "$here/scripts/pg-cluster.sh" start "$cluster")
psql -qX "$admin" -c "SHOW fsync" -c "SHOW synchronous_commit"

for writers in 1 3; do
    PGW_BENCH_WRITERS=$writers "$build/bench_store" "$admin" "$seconds" 128 1024
done

n=0
for instances in 1 3; do
    for shops in 4 1; do
        n=$((n + 1))
        psql -qX "$admin" -c "CREATE DATABASE bench_http_$n"
        echo "== $instances gateway(s), purchases at $shops shop(s)"
        PGW_BENCH_DB="${admin%/*}/bench_http_$n" PGW_BENCH_INSTANCES=$instances PGW_BENCH_SHOPS=$shops \
            "$build/bench_http" "$build/pointsgw" "$config" "$here/bench/data" "$seconds" 16 128
    done
done
