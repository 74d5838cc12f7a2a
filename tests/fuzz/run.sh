#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default
# 60) from a seed corpus of the example config, the bad-config fixtures and
# the demo events. Not part of `make test`: fuzzing is open-ended. Usage:
#   make fuzz [SECONDS=300]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
command -v clang >/dev/null || { echo "fuzz: needs clang (apt-get install clang)" >&2; exit 2; }
out=build/fuzz
mkdir -p "$out"
flags=(-std=c11 -D_DEFAULT_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Isrc)
core=(src/core/*.c src/util/*.c src/config/*.c src/server/event_json.c src/store/*.c)
for target in config event; do
    clang "${flags[@]}" "${core[@]}" "tests/fuzz/fuzz_$target.c" \
        $(pkg-config --cflags --libs jansson libcurl sqlite3 libpq) -lcrypto -lpthread -o "$out/fuzz_$target"
done
mkdir -p "$out/corpus_config" "$out/corpus_event"
cp config/pointsgw.example.json tests/data/config/*.json "$out/corpus_config/"
cp config/demo/purchase.json config/demo/sign_in.json "$out/corpus_event/"
for target in config event; do
    echo "fuzz: $target for ${seconds}s"
    "$out/fuzz_$target" -max_total_time="$seconds" -max_len=65536 "$out/corpus_$target"
done
