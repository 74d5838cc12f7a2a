#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default
# 60) from a seed corpus of the example config, the bad-config fixtures,
# the demo events, a few CSV and statement rows, times, a refusal and what
# strangers send (fuzz_inbound.c). Not part of `make test`: fuzzing is
# open-ended. Usage:
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
# What strangers send (official-account pushes, identities, addresses, queries).
clang "${flags[@]}" -I. src/core/*.c src/util/*.c adapters/wechat_oa/crypto.c \
    adapters/wechat_oa/message.c tests/fuzz/fuzz_inbound.c \
    $(pkg-config --cflags --libs jansson libcurl) -lexpat -lcrypto -lpthread -o "$out/fuzz_inbound"
# The CSV reader alone, with a 64-byte chunk so that small inputs cross chunk ends.
clang "${flags[@]}" -DPGW_CSV_CHUNK=64 src/util/csv.c src/core/utf8.c src/core/error.c \
    src/core/assertions.c tests/fuzz/fuzz_csv.c -o "$out/fuzz_csv"
mkdir -p "$out/corpus_config" "$out/corpus_event" "$out/corpus_csv" "$out/corpus_statement" \
    "$out/corpus_time" "$out/corpus_redact" "$out/corpus_inbound"
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
# The first byte picks fuzz_inbound's reader (0 push, 1 envelope, 2 plaintext,
# 3 identity, 4 phone, 5 address, 6 "name\0query").
printf '\000<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>1409659813</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[积分]]></Content><MsgId>4561255354251345929</MsgId></xml>' \
    > "$out/corpus_inbound/push"
printf '\000<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>subscribe</Event><EventKey>qrscene_1</EventKey><SendPicsInfo><PicList><item><PicMd5Sum>a</PicMd5Sum></item></PicList></SendPicsInfo></xml>' \
    > "$out/corpus_inbound/event"
printf '\001<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[abcd]]></Encrypt></xml>' \
    > "$out/corpus_inbound/envelope"
printf '\002aaaaaaaaaaaaaaaa\000\000\000\005hellowxb11529c136998cb6\013\013\013\013\013\013\013\013\013\013\013' \
    > "$out/corpus_inbound/plaintext"
printf '\003card:S001:88001' > "$out/corpus_inbound/card"
printf '\003mp_openid:wx1234567890abcdef:oAbC-1_x' > "$out/corpus_inbound/openid"
printf '\004０086-138(0013)8000' > "$out/corpus_inbound/phone"
printf '\005::ffff:10.0.0.0/104' > "$out/corpus_inbound/prefix"
printf '\006shop\000shop=S001&from=2026-11-20T00:00:00+08:00' > "$out/corpus_inbound/query"
for target in config event csv statement time redact inbound; do
    echo "fuzz: $target for ${seconds}s"
    "$out/fuzz_$target" -max_total_time="$seconds" -max_len=65536 "$out/corpus_$target"
done
