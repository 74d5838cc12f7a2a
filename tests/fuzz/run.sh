#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default
# 60) from a seed corpus of the example config, the bad-config fixtures,
# the demo events, a few CSV and statement rows, times and a refusal. Not
# part of `make test`: fuzzing is open-ended. Usage:
#   make fuzz [SECONDS=300]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
command -v clang >/dev/null || { echo "fuzz: needs clang (apt-get install clang)" >&2; exit 2; }
out=build/fuzz
mkdir -p "$out"
flags=(-std=c11 -D_DEFAULT_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Isrc)
core=(src/core/*.c src/util/*.c src/config/*.c src/server/event_json.c src/store/*.c
      src/server/statement.c src/server/rowsort.c)
for target in config event statement time redact; do
    clang "${flags[@]}" "${core[@]}" "tests/fuzz/fuzz_$target.c" \
        $(pkg-config --cflags --libs jansson libcurl sqlite3 libpq) -lcrypto -lpthread -o "$out/fuzz_$target"
done
# The CSV reader alone, with a 64-byte chunk so that small inputs cross chunk ends.
clang "${flags[@]}" -DPGW_CSV_CHUNK=64 src/util/csv.c src/core/utf8.c src/core/error.c \
    src/core/assertions.c tests/fuzz/fuzz_csv.c -o "$out/fuzz_csv"
mkdir -p "$out/corpus_config" "$out/corpus_event" "$out/corpus_csv" "$out/corpus_statement" \
    "$out/corpus_time" "$out/corpus_redact"
cp config/pointsgw.example.json tests/data/config/*.json "$out/corpus_config/"
cp config/demo/purchase.json config/demo/sign_in.json "$out/corpus_event/"
printf '\xef\xbb\xbfevent_id,shop_id,points\r\nS001-1,S001,128\r\n\r\n,,\r\n"S001-2","S0""01","1\n2"\r\n' \
    > "$out/corpus_csv/statement.csv"
printf 'a,b\n\n\n,,x\n"unterminated\n' > "$out/corpus_csv/edges.csv"
printf 'event_id,occurred_at,type,member,amount_fen,points,shop_id\nS001-9,2026-11-20 10:00:00,purchase,M1,"12,800",128,S001\nS001-1,1796355754,refund,M1,100,-1,-\nbad,x\n' \
    > "$out/corpus_statement/by_shop.csv"
printf 'event_id,occurred_at,type,member,amount_fen,points,note\nb,2026-11-20T10:00:00+08:00,purchase,M1,1,1,x\na,2026/11/20,sign_in,M1,,5,\n' \
    > "$out/corpus_statement/unsorted.csv"
printf '\001%s' '2026-11-20 14:03' > "$out/corpus_time/space"
printf '\002%s' '2026/2/3 9:05:07' > "$out/corpus_time/slash"
printf '\000%s' '2024-02-29T23:59:59.123-05:30' > "$out/corpus_time/rfc3339"
printf '\377%s' 'member 13800138000 or 138 0013 8000 at 12:30:45.123 on 2026-11-24: shop "S0X1"' \
    > "$out/corpus_redact/phone"
for target in config event csv statement time redact; do
    echo "fuzz: $target for ${seconds}s"
    "$out/fuzz_$target" -max_total_time="$seconds" -max_len=65536 "$out/corpus_$target"
done
