#!/usr/bin/env bash
# The real binary, as an operator uses it: usage and exit codes, a config
# error naming file + JSON path + problem (exit 2), and quotes of the demo
# events computed from the example config.
set -uo pipefail
bin=$1
src=$2
cd "$src" || exit 1
failures=0
passes=0

# Every file and folder the script makes lives under $scratch, removed on
# exit, pass or fail (the exit status is kept). The FAIL lines name paths in
# it: PGW_KEEP_TMP=1 keeps it, and says where, for a look after a failing run.
# 711: the read-only check below runs the binary as `nobody` from in here.
scratch=$(mktemp -d)
chmod 711 "$scratch"
# On PostgreSQL (integration.pg.cli) the databases it makes, in pg_dbs, go
# the same way: dropped on exit, pass or fail, kept with PGW_KEEP_TMP=1.
# FORCE: a run that failed may leave a client connected.
pg_admin=
pg_dbs=()
# At once, a session each: every DROP DATABASE waits for a checkpoint, and
# those waiting together share one (one after another, the six took about
# 30 s at the end of a run, the cluster busy with the other suites).
drop_pg_dbs() {
    local db pid pids=() failed=0
    for db in "${pg_dbs[@]}"; do
        psql -qX "$pg_admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" -eq 0 ] || echo "cli.sh: could not drop the PostgreSQL databases ${pg_dbs[*]}" >&2
}
cleanup() {
    if [ -n "${PGW_KEEP_TMP:-}" ]; then
        echo "cli.sh: scratch files kept in $scratch" >&2
        [ ${#pg_dbs[@]} -eq 0 ] || echo "cli.sh: PostgreSQL databases kept: ${pg_dbs[*]}" >&2
    else
        rm -rf "$scratch"
        drop_pg_dbs
    fi
}
trap cleanup EXIT

# PGW_TEST_TIMES=1: at the end, the 15 lines of this script (its top level:
# a function's time is its caller's) that took longest, in seconds, to see
# what makes it slow. The time to the next top-level command is the line's.
if [ -n "${PGW_TEST_TIMES:-}" ]; then
    declare -A times_us=()
    times_line=$LINENO times_at=${EPOCHREALTIME/./}
    times_tick() {
        local now=${EPOCHREALTIME/./}
        times_us[$times_line]=$((${times_us[$times_line]:-0} + now - times_at))
        times_line=$1 times_at=$now
    }
    times_print() {
        local line
        for line in "${!times_us[@]}"; do echo "${times_us[$line]} $line"; done | sort -rn |
            head -15 | while read -r us line; do
            printf 'cli: %6.1f s line %d: %s\n' "$((us / 1000))e-3" "$line" \
                "$(sed -n "${line}{s/^ *//;p}" "$src/tests/integration/cli.sh" | cut -c1-70)"
        done
    }
    trap 'times_tick $LINENO' DEBUG
fi

pass() { passes=$((passes + 1)); }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# expect_exit CODE CMD... : runs CMD, captures stdout+stderr in $out.
expect_exit() {
    local want=$1
    shift
    out=$("$@" 2>&1)
    local got=$?
    if [ "$got" -eq "$want" ]; then pass; else fail "'$*' exited $got, wanted $want: $out"; fi
}

# expect_stopped STATUS STDERR: a serve that SIGTERM stopped, its exit status
# and its stderr (text), stopped as README (Status) says a clean stop does:
# exit 0, the last line "pointsgw serve: stopped cleanly", and no word from
# the sanitizers of the test build (ASan+UBSan), which a bare exit status
# could hide (d32ed10: a NULL read at the stop's drain went unseen).
expect_stopped() {
    local last=${2%$'\n'}
    last=${last##*$'\n'}
    if [ "$1" -eq 0 ] && [ "$last" = "pointsgw serve: stopped cleanly" ] &&
        [[ "$2" != *"runtime error"* && "$2" != *AddressSanitizer* &&
            "$2" != *LeakSanitizer* && "$2" != *UndefinedBehaviorSanitizer* ]]; then
        pass
    else
        fail "serve's stop: exit $1, last line '$last': $(tail -c 3000 <<<"$2")"
    fi
}

# A match in the shell itself: `printf | grep -q` under pipefail failed now
# and then (grep -q leaves at the first match, printf dies of SIGPIPE).
expect_text() {
    if [[ "$out" == *"$1"* ]]; then pass; else fail "output lacks '$1': $out"; fi
}

# Usage.
expect_exit 2 "$bin"
expect_text "usage: pointsgw COMMAND"
expect_exit 0 "$bin" --help
expect_exit 2 "$bin" frobnicate
expect_text "unknown command 'frobnicate'"
for cmd in serve check-config quote reconcile report verify expire period import-balances keys member; do
    expect_exit 0 "$bin" "$cmd" --help
    expect_text "usage: pointsgw $cmd"
done
# Regression (an operator's walkthrough): expire's help said only that it
# expires lots; it releases the holds past their deadline first (README).
expect_exit 0 "$bin" expire --help
expect_text "release every hold pending past its deadline"
expect_exit 0 "$bin" --help
expect_text "release every hold pending past its deadline"
# Regression (the operations review): there was no --version. It names
# the version CMakeLists.txt's project() gives and the libraries it runs with.
version=$(sed -n 's/^project(pointsgw VERSION \([0-9.]*\) .*/\1/p' CMakeLists.txt)
[ -n "$version" ] && pass || fail "no version in CMakeLists.txt's project()"
for arg in --version version; do
    expect_exit 0 "$bin" "$arg"
    expect_text "pointsgw $version"$'\n'
    expect_text $'\nSQLite 3.'
    expect_text $'\nlibwebsockets 4.'
    expect_text $'\nOpenSSL 3.'
    # Regression (an operator's walkthrough): Debian's libwebsockets says
    # "4.1.6-" (its build hash empty), printed with the dangling '-'.
    lws=$(printf '%s\n' "$out" | sed -n 's/^libwebsockets //p')
    [[ -n "$lws" && "$lws" != *[-[:space:]] ]] && pass ||
        fail "$arg: libwebsockets version ends in a separator: '$lws'"
done
expect_exit 0 "$bin" --help
expect_text "--version"
expect_exit 2 "$bin" check-config --bogus
expect_text "unknown argument '--bogus'"
expect_exit 2 "$bin" check-config --config
expect_text "--config needs a value"

# The example configuration is valid.
expect_exit 0 "$bin" check-config --config config/pointsgw.example.json
expect_text "configuration OK"
expect_text "8 in 5 formats; 4 tiers"
# Regression (an operator's walkthrough): "year_end (months 0, years 1)":
# months mean nothing to year_end; the line has what its policy uses.
expect_text $'\nexpiry:     year_end (years 1)\n'

# Each broken configuration names the file, the JSON path and the problem.
check_bad() {
    expect_exit 2 "$bin" check-config --config "tests/data/config/$1"
    expect_text "tests/data/config/$1"
    expect_text "$2"
}
check_bad bad_missing_shop.json '$.campaigns[3].shops[0]: unknown shop "S099"'
check_bad bad_overlap.json '$.campaigns[5].brackets[1]: overlaps brackets[0]'
check_bad bad_unknown_key.json '$.mall.colour: unknown key'
check_bad bad_negative_rate.json '$.formats.fnb.fen_per_point: expected an integer 1..100000000, got -5'
check_bad bad_syntax.json 'bad_syntax.json:1:23: invalid JSON'
# Regression (the operations review): a folder named as the configuration
# said only "read error".
expect_exit 2 "$bin" check-config --config "$scratch"
expect_text "$scratch: cannot read: Is a directory"
expect_exit 2 "$bin" check-config --config /nonexistent.json
expect_text "/nonexistent.json: cannot open"
# serve refuses a bad config the same way, and a listen address it cannot use.
expect_exit 2 "$bin" serve --config tests/data/config/bad_unknown_key.json
expect_text '$.mall.colour: unknown key'
# Regression (review notes): notify.routes naming a channel that channels
# does not configure was "configuration OK", and those notices silently
# never went that way. Refused by check-config and serve alike.
routes_dir=$(mktemp -d -p "$scratch")
python3 -c 'import json, sys
c = json.load(open("config/pointsgw.example.json"))
del c["channels"]["sms"]
c["notify"]["routes"] = {"points_expiring": ["wechat_oa", "sms"]}
json.dump(c, open(sys.argv[1], "w"), ensure_ascii=False)' "$routes_dir/routes.json"
expect_exit 2 "$bin" check-config --config "$routes_dir/routes.json"
expect_text "$routes_dir/routes.json: \$.notify.routes.points_expiring[1]: channel \"sms\" is not configured"
expect_exit 2 timeout 20 "$bin" serve --config "$routes_dir/routes.json" --listen 127.0.0.1:0 --db "sqlite:$routes_dir/x.db"
expect_text "$routes_dir/routes.json: \$.notify.routes.points_expiring[1]: channel \"sms\" is not configured"
[ ! -e "$routes_dir/x.db" ] || fail "serve made a database for a configuration it refused"
rm -rf "$routes_dir"
# Regression (the operations review): a database password reached the
# output: check-config printed the URL whole, and a libpq keyword string
# given as the database was echoed in its error.
secret_dir=$(mktemp -d -p "$scratch")
python3 -c 'import json, sys
c = json.load(open("config/pointsgw.example.json"))
c["db"] = "postgresql://pgw:s3cretpw@127.0.0.1:1/pointsgw?password=s3cretpw"
json.dump(c, open(sys.argv[1], "w"), ensure_ascii=False)' "$secret_dir/pg.json"
expect_exit 0 "$bin" check-config --config "$secret_dir/pg.json"
expect_text "database:   postgresql://pgw@127.0.0.1:1/pointsgw;"
[[ "$out" != *s3cretpw* ]] && pass || fail "check-config shows the password: $out"
# Regression (an operator's walkthrough): check-config had no --db, so a
# gateway served with --db postgresql://... could not be checked as run,
# and its "database:" line named the configuration's. --db is serve's:
# shown as serve shows it (no password), checked as the configuration's
# is, and never opened.
expect_exit 0 "$bin" check-config --config "$secret_dir/pg.json" \
    --db "postgresql://ops:0therpw@127.0.0.1:1/served?password=0therpw"
expect_text "database:   postgresql://ops@127.0.0.1:1/served;"
[[ "$out" != *0therpw* ]] && pass || fail "check-config --db shows the password: $out"
expect_exit 0 "$bin" check-config --config config/pointsgw.example.json \
    --db "sqlite:$secret_dir/none/x.db"
expect_text "database:   sqlite:$secret_dir/none/x.db;"
[ ! -e "$secret_dir/none" ] && pass || fail "check-config --db made the database's folder"
expect_exit 2 "$bin" check-config --config config/pointsgw.example.json --db "host=db password=s3cretpw"
expect_text 'expected "sqlite:PATH" or a "postgresql://" URL, got "host=db password=***"'
[[ "$out" != *s3cretpw* && "$out" != *"configuration OK"* ]] && pass ||
    fail "check-config --db refused: $out"
expect_exit 2 "$bin" verify --db "host=127.0.0.1 port=1 password=s3cretpw dbname=x"
expect_text 'database URL "host=127.0.0.1 port=1 password=*** dbname=x" is neither'
[[ "$out" != *s3cretpw* ]] && pass || fail "an error shows the password: $out"
rm -rf "$secret_dir"
expect_exit 2 "$bin" serve --config config/pointsgw.example.json --listen nowhere --db "sqlite:$(mktemp -d -p "$scratch")/x.db"
expect_text 'expected HOST:PORT with port 0..65535, got "nowhere"'
# Regression: a host that is a name (or no address) was taken, and the
# server said it listened while it listened on nothing.
expect_exit 2 "$bin" serve --config config/pointsgw.example.json --listen localhost:0 --db "sqlite:$(mktemp -d -p "$scratch")/x.db"
expect_text 'the host of "localhost:0" is not an IP address'
# Regression (the operator review): TLS files that cannot serve passed
# check-config, and serve said only "cannot listen" after making the
# database. Both now name the key and the problem, and make nothing.
tls_dir=$(mktemp -d -p "$scratch")
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" 2>/dev/null
openssl genrsa -out "$tls_dir/other.pem" 2048 2>/dev/null
tls_config() { # CERT KEY: a configuration serving HTTPS with them
    python3 -c 'import json, sys
c = json.load(open("config/pointsgw.example.json"))
c["http"] = {"tls": {"cert_file": sys.argv[1], "key_file": sys.argv[2]}}
json.dump(c, open(sys.argv[3], "w"), ensure_ascii=False)' "$1" "$2" "$tls_dir/config.json"
}
tls_config "$tls_dir/missing.pem" "$tls_dir/key.pem"
expect_exit 2 "$bin" check-config --config "$tls_dir/config.json"
expect_text '$.http.tls.cert_file: '"$tls_dir"'/missing.pem: No such file or directory'
echo "not a key" >"$tls_dir/notes.txt"
tls_config "$tls_dir/cert.pem" "$tls_dir/notes.txt"
expect_exit 2 "$bin" check-config --config "$tls_dir/config.json"
expect_text '$.http.tls.key_file: '"$tls_dir"'/notes.txt: no unencrypted PEM private key in it'
tls_config "$tls_dir/cert.pem" "$tls_dir/other.pem"
expect_exit 2 "$bin" check-config --config "$tls_dir/config.json"
expect_text "$tls_dir/other.pem is not the key of the certificate in $tls_dir/cert.pem"
expect_exit 2 "$bin" serve --config "$tls_dir/config.json" --listen 127.0.0.1:0 --db "sqlite:$tls_dir/new/x.db"
expect_text "is not the key of the certificate"
[ ! -e "$tls_dir/new" ] || fail "serve made a database folder before refusing its TLS files"
tls_config "$tls_dir/cert.pem" "$tls_dir/key.pem"
expect_exit 0 "$bin" check-config --config "$tls_dir/config.json"
rm -rf "$tls_dir"

# Regression (the operator review): an address this host does not have
# was "listened on" by lws, which retries the bind later: the server said
# so and served nothing. Refused before the database is made.
nowhere_db=$(mktemp -d -p "$scratch")
expect_exit 2 "$bin" serve --config config/pointsgw.example.json --listen 192.0.2.1:0 --db "sqlite:$nowhere_db/new/x.db"
expect_text 'cannot listen on 192.0.2.1:0: this host has no such address'
[ ! -e "$nowhere_db/new" ] || fail "a database folder was made for an address the host does not have"
rm -rf "$nowhere_db"
# Regression (the operator review): a database file the user may not
# write was opened read-only; serve started, /healthz said ok, and every
# write was 503. Refused at the start. (Root writes any file: as root the
# binary and config are copied where `nobody` can read them, and run so.)
ro_dir=$(mktemp -d -p "$scratch")
chmod 755 "$ro_dir"
printf 'card,phone,points\nRO1,,10\n' >"$ro_dir/one.csv"
expect_exit 0 "$bin" import-balances --shop S001 --file "$ro_dir/one.csv" --db "sqlite:$ro_dir/ro.db"
chmod 444 "$ro_dir/ro.db"
cp "$bin" "$ro_dir/pointsgw"
cp config/pointsgw.example.json "$ro_dir/config.json"
chmod 755 "$ro_dir/pointsgw"
chmod 644 "$ro_dir/config.json"
as_user=()
if [ "$(id -u)" -eq 0 ]; then # the folder theirs, as the review had it: -wal and -shm can be made
    chown nobody "$ro_dir"
    as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
fi
expect_exit 2 timeout 20 "${as_user[@]}" "$ro_dir/pointsgw" serve --config "$ro_dir/config.json" --listen 127.0.0.1:0 --db "sqlite:$ro_dir/ro.db"
expect_text 'the database file is read-only for this user'
if [ "$(id -u)" -eq 0 ]; then
    # Regression (the operations review): the file theirs but not its folder
    # failed as "attempt to write a readonly database", naming neither.
    chown root "$ro_dir"
    chown nobody "$ro_dir/ro.db"
    chmod 644 "$ro_dir/ro.db"
    expect_exit 2 timeout 20 "${as_user[@]}" "$ro_dir/pointsgw" serve --config "$ro_dir/config.json" --listen 127.0.0.1:0 --db "sqlite:$ro_dir/ro.db"
    expect_text "$ro_dir/ro.db: its folder $ro_dir is not writable for this user (Permission denied)"
fi
rm -rf "$ro_dir"
# Regression (the last session's notes): verify of a copy on read-only
# media (or a file without write permission) failed, since opening the
# store migrates. A database at this build's schema is read read-only:
# verify passes and the file is not changed (as root, who writes any
# file, its checksum says so; as `nobody`, the folder and file theirs to
# read only, with no -wal or -shm beside it, as on a read-only disk). An
# older schema there cannot be migrated: said, exit 2, nothing changed.
rv_dir=$(mktemp -d -p "$scratch")
mkdir "$rv_dir/bin" "$rv_dir/ro"
cp "$bin" "$rv_dir/bin/pointsgw"
chmod 755 "$rv_dir" "$rv_dir/bin" "$rv_dir/bin/pointsgw"
printf 'card,points\nRV1,10\n' >"$rv_dir/one.csv"
expect_exit 0 "$bin" import-balances --shop S001 --file "$rv_dir/one.csv" --db "sqlite:$rv_dir/ro/cur.db"
python3 -c "import sqlite3, sys
sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))
db = sqlite3.connect(sys.argv[2]); db.execute('PRAGMA user_version = 30'); db.commit()" \
    "$rv_dir/ro/cur.db" "$rv_dir/ro/old.db"
# And one a writer in rollback mode died writing: its changes are in the
# file, the originals in its hot -journal. Read as immutable (the open's
# fallback for a -shm it cannot make took any failure then), verify saw
# the uncommitted pages and said BROKEN; it must refuse to read it.
python3 -c "import os, sqlite3, sys
sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))
db = sqlite3.connect(sys.argv[2], isolation_level=None)
db.execute('PRAGMA journal_mode = DELETE'); db.execute('PRAGMA cache_size = 1')
db.execute('BEGIN'); db.execute('UPDATE transfers SET points = points + 1')
db.execute('CREATE TABLE spill (b BLOB)')  # past the cache: the pages go to the file
db.executemany('INSERT INTO spill VALUES (randomblob(1000))', [()] * 3000)
os._exit(9)" "$rv_dir/ro/cur.db" "$rv_dir/ro/hot.db"
[ -s "$rv_dir/ro/hot.db-journal" ] && pass || fail "no hot journal beside hot.db"
rm -f "$rv_dir"/ro/*-wal "$rv_dir"/ro/*-shm
chmod 444 "$rv_dir"/ro/*.db
chmod 555 "$rv_dir/ro"
cur_sum=$(sha256sum <"$rv_dir/ro/cur.db")
old_sum=$(sha256sum <"$rv_dir/ro/old.db")
hot_sum=$(sha256sum <"$rv_dir/ro/hot.db")
rv_user=()
[ "$(id -u)" -ne 0 ] || rv_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
expect_exit 0 "${rv_user[@]}" "$rv_dir/bin/pointsgw" verify --db "sqlite:$rv_dir/ro/cur.db"
expect_text "OK: the hash chain is intact"
expect_exit 2 "${rv_user[@]}" "$rv_dir/bin/pointsgw" verify --db "sqlite:$rv_dir/ro/old.db"
expect_text "$rv_dir/ro/old.db is at schema version 30, older than this pointsgw's"
expect_text "and not writable here, so it cannot be migrated"
expect_exit 1 "${rv_user[@]}" "$rv_dir/bin/pointsgw" verify --db "sqlite:$rv_dir/ro/hot.db"
expect_text "$rv_dir/ro/hot.db: reading the schema version: attempt to write a readonly database"
case "$out" in *BROKEN*) fail "verify read a hot journal's uncommitted pages: $out" ;; *) pass ;; esac
# So do the finance commands, which only read.
expect_exit 0 "${rv_user[@]}" "$rv_dir/bin/pointsgw" report settlement --from 2026-01-01T00:00:00Z \
    --to 2099-01-01T00:00:00Z --db "sqlite:$rv_dir/ro/cur.db"
expect_text '"shops"'
printf 'event_id,occurred_at,type,member,amount_fen,points\n' >"$rv_dir/statement.csv"
chmod 644 "$rv_dir/statement.csv"
expect_exit 0 "${rv_user[@]}" "$rv_dir/bin/pointsgw" reconcile --statement "$rv_dir/statement.csv" \
    --channel store --db "sqlite:$rv_dir/ro/cur.db"
if [ "$(id -u)" -eq 0 ]; then # root: read-only by the open, not by the file's mode
    expect_exit 0 "$bin" verify --db "sqlite:$rv_dir/ro/cur.db"
    expect_text "OK: the hash chain is intact"
fi
[ "$(sha256sum <"$rv_dir/ro/cur.db")" = "$cur_sum" ] && [ "$(sha256sum <"$rv_dir/ro/old.db")" = "$old_sum" ] &&
    [ "$(sha256sum <"$rv_dir/ro/hot.db")" = "$hot_sum" ] &&
    pass || fail "verify changed a read-only database: $(ls -l "$rv_dir/ro")"
chmod 755 "$rv_dir/ro"
rm -rf "$rv_dir"
named=$(mktemp -p "$scratch")
sed 's/"listen": "127.0.0.1:8080"/"listen": "localhost:8080"/' config/pointsgw.example.json >"$named"
expect_exit 2 "$bin" check-config --config "$named"
expect_text '$.listen: the host of "localhost:8080" is not an IP address'
rm -f "$named"

# Quotes. A Wednesday (member day x2) purchase of 128.00 yuan at S001 (retail,
# 100 fen/point) by a gold member (x1.2) making the fifth purchase of the month
# (challenge: 500): 128 + floor(128*0.2)=25 + 128 + 500 = 781.
expect_exit 0 "$bin" quote --event config/demo/purchase.json --context config/demo/member.json
expect_text '"points": 781'
expect_text '"rule": "campaign:member-day"'
expect_text '"funded_by": "shop:S001"'
expect_text '"tier": "gold"'
# The same sale for a brand-new member: base 128 + member day 128 + first purchase 200.
expect_exit 0 "$bin" quote --event config/demo/purchase.json
expect_text '"points": 456'
expect_text '"rule": "behaviour:first_purchase"'
# Sign-in on the seventh day in a row: 5 + 50 streak bonus.
expect_exit 0 "$bin" quote --event config/demo/sign_in.json --context config/demo/member.json
expect_text '"points": 55'
expect_text '"sign_in_streak": 7'

# Bad events are refused with a path, exit 2.
tmp=$(mktemp -d -p "$scratch")
sed 's/"amount_fen": 12800,/"amount_fen": -5,/' config/demo/purchase.json > "$tmp/neg.json"
expect_exit 2 "$bin" quote --event "$tmp/neg.json"
expect_text '$.amount_fen: expected an integer 1..100000000000, got -5'
sed 's/"S001",/"S999",/' config/demo/purchase.json > "$tmp/shop.json"
expect_exit 2 "$bin" quote --event "$tmp/shop.json"
expect_text '$.shop_id: unknown shop "S999"'
printf '{"event_id": ' > "$tmp/broken.json"
expect_exit 2 "$bin" quote --event "$tmp/broken.json"
expect_text "invalid JSON"
expect_exit 2 "$bin" quote
expect_text "--event FILE is required"

# verify refuses to invent a database it was not given.
expect_exit 2 "$bin" verify --db "sqlite:$tmp/missing.db"
expect_text "$tmp/missing.db: no database there"
[ ! -e "$tmp/missing.db" ] && pass || fail "verify created $tmp/missing.db"
# Regression: an existing SQLite file that is not ours (empty, another
# program's) was migrated and called a valid log, and left with our tables.
: >"$tmp/empty.db"
sqlite3 "$tmp/theirs.db" 'CREATE TABLE foo (x)' 2>/dev/null ||
    python3 -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('CREATE TABLE foo (x)')" "$tmp/theirs.db"
theirs=$(sha256sum <"$tmp/theirs.db")
for f in empty theirs; do
    expect_exit 2 "$bin" verify --db "sqlite:$tmp/$f.db"
    expect_text "$tmp/$f.db: no pointsgw database there"
done
# Commands that create a database (import-balances, serve) do not make
# one of another program's: its writer migrated it.
printf 'card,points\nK1,100\n' >"$tmp/one.csv"
expect_exit 2 "$bin" import-balances --shop S001 --file "$tmp/one.csv" --db "sqlite:$tmp/theirs.db"
expect_text "$tmp/theirs.db holds another program's tables"
# serve too, exit 2 (README: Exit codes), a start the database refused
# told by the store's mark, not by the message's first words.
expect_exit 2 timeout 20 "$bin" serve --listen 127.0.0.1:0 --db "sqlite:$tmp/theirs.db"
expect_text "pointsgw serve: $tmp/theirs.db holds another program's tables"
[ ! -s "$tmp/empty.db" ] && [ "$(sha256sum <"$tmp/theirs.db")" = "$theirs" ] && pass ||
    fail "verify changed a database that is not ours"
expect_exit 2 "$bin" verify --db "mysql://db/points"
expect_text "is neither sqlite:PATH nor postgresql"

# expire neither invents a database nor accepts a naive time.
expect_exit 2 "$bin" expire --db "sqlite:$tmp/missing.db"
expect_text "$tmp/missing.db: no database there"
expect_exit 2 "$bin" expire --db "sqlite:$tmp/missing.db" --as-of "2026-11-24 10:00"
expect_text "--as-of is neither an RFC 3339 time (2026-11-24T10:00:00+08:00, say) nor unix seconds"
[ ! -e "$tmp/missing.db" ] && pass || fail "expire with a refused --as-of made a database"
# Regression: a time ahead expired lots and released holds before their
# date (a year's typo took a year of members' points).
expect_exit 2 "$bin" expire --db "sqlite:$tmp/missing.db" --as-of "2031-01-01T00:00:00Z"
expect_text "--as-of is ahead of the clock"
# Nor by a few minutes: a hold due in four would be released now.
expect_exit 2 "$bin" expire --db "sqlite:$tmp/missing.db" --as-of "$(date -u -d '+240 seconds' +%Y-%m-%dT%H:%M:%SZ)"
expect_text "--as-of is ahead of the clock"

# Outside development mode, serve needs the phone keys: without them it refuses to start.
sed 's/"development_mode": true/"development_mode": false/' config/pointsgw.example.json >"$tmp/prod.json"
grep -q '"development_mode": false' "$tmp/prod.json" && pass || fail "could not make a production config"
expect_exit 2 env -u PGW_PHONE_HMAC_KEY -u PGW_PHONE_AES_KEY "$bin" serve --config "$tmp/prod.json" --listen 127.0.0.1:0 --db "sqlite:$tmp/prod.db"
expect_text "PGW_PHONE_HMAC_KEY and PGW_PHONE_AES_KEY must each hold 64 hex digits"
# Regression (the operations review): the example's admin key, whose
# secret README prints, was taken as any other key, also from another host.
expect_exit 2 env PGW_PHONE_HMAC_KEY="$(printf '1%.0s' {1..64})" PGW_PHONE_AES_KEY="$(printf '2%.0s' {1..64})" \
    "$bin" serve --config "$tmp/prod.json" --listen 127.0.0.1:0 --db "sqlite:$tmp/refused/prod.db"
expect_text "key demo-admin is README's published demo key: anyone may use it"
# Regression (the operations review): a start refused after the database's
# folder was made left that folder behind, empty.
[ ! -e "$tmp/refused" ] && pass || fail "a refused start left the folder it made"
# Regression (the thirty-fifth session's walkthrough): so was README's
# sample signing key, whose secret its worked example prints.
sed 's/c14d7bdecf2188289bf9d4365a650f7fdd6f26d9f1656d412eb47b8176e320ed/a99db303aae573503fa98195a18d4085991e37167486de3981dce4b303b538c0/' \
    "$tmp/prod.json" >"$tmp/prod-sample.json"
expect_exit 2 env PGW_PHONE_HMAC_KEY="$(printf '1%.0s' {1..64})" PGW_PHONE_AES_KEY="$(printf '2%.0s' {1..64})" \
    "$bin" serve --config "$tmp/prod-sample.json" --listen 127.0.0.1:0 --db "sqlite:$tmp/refused/prod.db"
expect_text "key demo-admin is README's published sample signing key: anyone may use it"
# The demo configuration serves, its warnings said, and stops cleanly on
# SIGTERM, sent once it listens: it was sent 3 s after the start, whatever
# the start had done (under a load of 20 it had not yet listened: exit 143
# and no "stopped cleanly"; on an idle machine it waited 2.5 s for nothing).
"$bin" serve --config config/pointsgw.example.json --listen 127.0.0.1:0 --db "sqlite:$tmp/demo.db" \
    >"$tmp/demo.out" 2>&1 &
demo_pid=$!
for _ in $(seq 1200); do # 60 s: only a hang's bound
    grep -q "listening on" "$tmp/demo.out" && break
    kill -0 "$demo_pid" 2>/dev/null || break
    sleep 0.05
done
kill -TERM "$demo_pid"
wait "$demo_pid"
demo_status=$?
out=$(cat "$tmp/demo.out")
[ "$demo_status" -eq 0 ] && pass || fail "the demo serve exited $demo_status: $out"
expect_text "listening on 127.0.0.1:0"
expect_text "pointsgw: warning: key demo-admin is README's published demo key"
expect_stopped "$demo_status" "$out"

# Regression (the last session's notes): a second serve on the same SQLite
# file started beside the first; two writers, checkpointers and expiry
# sweeps on one file, each sure it was the only one. Refused, naming the
# file and the serving pid; the first serves on, and the commands (verify,
# import-balances, backup) still work beside it. The lock is a kernel
# lock, not the lock file's existence: once the first is killed (SIGKILL,
# no cleanup), a new serve starts.
one_dir=$(mktemp -d -p "$scratch")
# serve_bg LOG: a serve on $one_dir/one.db in the background, $! its pid;
# waits (up to 20 s) for its "listening on" line and sets $one_port.
serve_bg() {
    : >"$1" # there before the first look: sed complained of a missing file
    "$bin" serve --config config/pointsgw.example.json --listen 127.0.0.1:0 \
        --db "sqlite:$one_dir/one.db" >/dev/null 2>"$1" &
    one_pid=$!
    one_port=
    for _ in $(seq 200); do
        one_port=$(sed -n 's/.*listening on .* (port \([0-9]*\),.*/\1/p' "$1")
        [ -n "$one_port" ] && break
        kill -0 "$one_pid" 2>/dev/null || break
        sleep 0.1
    done
}
serve_bg "$one_dir/first.err"
[ -n "$one_port" ] && pass || fail "serve did not start: $(cat "$one_dir/first.err")"
expect_exit 2 timeout 20 "$bin" serve --config config/pointsgw.example.json --listen 127.0.0.1:0 \
    --db "sqlite:$one_dir/one.db"
expect_text "pointsgw serve: $one_dir/one.db is being served by another pointsgw serve (pid $one_pid)"
[[ "$out" != *"listening on"* ]] && pass || fail "the second serve listened: $out"
kill -0 "$one_pid" 2>/dev/null && curl -sf "http://127.0.0.1:$one_port/healthz" >/dev/null && pass ||
    fail "the first serve stopped serving beside the refused second"
printf 'card,points\nONE1,10\n' >"$one_dir/one.csv"
expect_exit 0 "$bin" import-balances --shop S001 --file "$one_dir/one.csv" --db "sqlite:$one_dir/one.db"
expect_exit 0 "$bin" verify --db "sqlite:$one_dir/one.db"
expect_exit 0 "$bin" backup --db "sqlite:$one_dir/one.db" --out "$one_dir/copy.db"
expect_exit 0 "$bin" member show card:S001:ONE1 --db "sqlite:$one_dir/one.db"
# bash says "line N: PID Killed ..." of a job a signal ended, on its own
# stderr when it reaps it, which may be after `wait 2>/dev/null` is done
# (some runs): an operator took it for a failure. Kill and wait as one,
# their stderr dropped; the status says our SIGKILL ended it (137), not
# an exit of its own before it, nor a kill that found no process.
{
    kill -KILL "$one_pid"
    wait "$one_pid"
} 2>/dev/null
one_status=$?
[ "$one_status" -eq 137 ] && pass || fail "the first serve was not ended by SIGKILL: $one_status"
serve_bg "$one_dir/again.err"
[ -n "$one_port" ] && curl -sf "http://127.0.0.1:$one_port/healthz" >/dev/null && pass ||
    fail "serve did not start after the last one was killed: $(cat "$one_dir/again.err")"
kill -TERM "$one_pid"
wait "$one_pid"
expect_stopped $? "$(cat "$one_dir/again.err")"
[ "$(stat -c %a "$one_dir/one.db-serve.lock")" = 600 ] && pass ||
    fail "the lock file is not 0600: $(ls -l "$one_dir")"
rm -rf "$one_dir"
# Regression (the last session's notes): the expiry sweep said each
# failure, every sweep: expiry.sweep_every_s 1 on a database moved away
# from under serve gave two stderr lines a second. Each kind of line goes
# out once a minute at most now (core/log_limit.h), as the writer's do.
sweep_dir=$(mktemp -d -p "$scratch")
python3 -c 'import json, sys
c = json.load(open("config/pointsgw.example.json"))
c["expiry"]["sweep_every_s"] = 1
json.dump(c, open(sys.argv[1], "w"), ensure_ascii=False)' "$sweep_dir/sweep.json"
"$bin" serve --config "$sweep_dir/sweep.json" --listen 127.0.0.1:0 --db "sqlite:$sweep_dir/s.db" \
    >/dev/null 2>"$sweep_dir/serve.err" &
sweep_pid=$!
sweep_port=
for _ in $(seq 200); do
    sweep_port=$(sed -n 's/.*listening on .* (port \([0-9]*\),.*/\1/p' "$sweep_dir/serve.err")
    [ -n "$sweep_port" ] && break
    sleep 0.1
done
mv "$sweep_dir/s.db" "$sweep_dir/moved.db"
# Sweeps failed so far: each sweep writes its lines (or holds them back)
# before it counts itself here.
sweep_failures() {
    curl -sf "http://127.0.0.1:$sweep_port/metrics" |
        sed -n 's/^pgw_expiry_sweep_failures_total \([0-9]*\)$/\1/p'
}
# The first failure of each kind, however late a loaded machine makes it
# (a fixed 4.5 s left "wanted 1" to the machine's speed); then three more
# failing sweeps, whose lines are to be held back: counted, not assumed of
# a fixed 3 s. Four on: the sweep of the last first line may not have
# counted itself yet.
for _ in $(seq 1200); do # 60 s: only a hang's bound
    grep -q "pointsgw: expiry sweep: " "$sweep_dir/serve.err" &&
        grep -q "pointsgw: pruning sessions: " "$sweep_dir/serve.err" && break
    sleep 0.05
done
swept_first=$(sweep_failures)
swept=$swept_first
for _ in $(seq 1200); do # 60 s: only a hang's bound
    [ -n "$swept_first" ] && [ "${swept:-0}" -ge $((swept_first + 4)) ] && break
    sleep 0.05
    swept=$(sweep_failures)
done
[ -n "$swept_first" ] && [ "${swept:-0}" -ge $((swept_first + 4)) ] && pass ||
    fail "failing sweeps after the first lines: ${swept_first:-unread} then ${swept:-unread} in pgw_expiry_sweep_failures_total, wanted 4 more"
kill -TERM "$sweep_pid"
wait "$sweep_pid"
expect_stopped $? "$(cat "$sweep_dir/serve.err")"
n_expiry=$(grep -c "pointsgw: expiry sweep: " "$sweep_dir/serve.err")
n_prune=$(grep -c "pointsgw: pruning sessions: " "$sweep_dir/serve.err")
[ "$n_expiry" -eq 1 ] && [ "$n_prune" -eq 1 ] && pass ||
    fail "$((swept - swept_first)) more failing sweeps: $n_expiry expiry lines, $n_prune prune lines, wanted 1 each: $(cat "$sweep_dir/serve.err")"
rm -rf "$sweep_dir"

# Regression (the operations review): check-config said "configuration OK"
# (exit 0) for what serve then refused (the phone keys, a key holding
# another's secret, the demo key outside development mode) or ran without
# (channels whose secrets are unset). It reads the environment as serve
# does, through the same functions, and opens no database.
unset_all=(env -u PGW_PHONE_HMAC_KEY -u PGW_PHONE_AES_KEY -u PGW_MP_CHANNEL_KEY
    -u PGW_WECHAT_MP_SECRET -u PGW_WECHAT_OA_SECRET -u PGW_WECHAT_OA_TOKEN
    -u PGW_WECHAT_OA_AES_KEY -u PGW_SMS_SECRET_ID -u PGW_SMS_SECRET_KEY)
expect_exit 2 "${unset_all[@]}" "$bin" check-config --config "$tmp/prod.json"
expect_text "PGW_PHONE_HMAC_KEY and PGW_PHONE_AES_KEY must each hold 64 hex digits"
[[ "$out" != *"configuration OK"* ]] && pass || fail "check-config refused and said OK: $out"
expect_exit 2 "${unset_all[@]}" PGW_PHONE_HMAC_KEY=abc PGW_PHONE_AES_KEY="$(printf '2%.0s' {1..64})" \
    "$bin" check-config --config "$tmp/prod.json"
expect_text "PGW_PHONE_HMAC_KEY is malformed"
expect_exit 2 "${unset_all[@]}" PGW_PHONE_HMAC_KEY="$(printf '1%.0s' {1..64})" \
    PGW_PHONE_AES_KEY="$(printf '2%.0s' {1..64})" "$bin" check-config --config "$tmp/prod.json"
expect_text "key demo-admin is README's published demo key: anyone may use it"
[[ "$out" != *DEVELOPMENT* ]] && pass || fail "real phone keys were called development mode: $out"
expect_exit 2 "${unset_all[@]}" PGW_MP_CHANNEL_KEY=demo-admin-key-change-me \
    "$bin" check-config --config config/pointsgw.example.json
expect_text "keys demo-admin and mini-program are the same key"
# Regression (an operator's walkthrough): no key at all outside development
# mode was "configuration OK" without a word, though no client could call.
python3 -c 'import json, sys
c = json.load(open(sys.argv[1]))
c["keys"] = []
json.dump(c, open(sys.argv[2], "w"), ensure_ascii=False)' "$tmp/prod.json" "$tmp/nokeys.json"
expect_exit 0 "${unset_all[@]}" PGW_PHONE_HMAC_KEY="$(printf '1%.0s' {1..64})" \
    PGW_PHONE_AES_KEY="$(printf '2%.0s' {1..64})" "$bin" check-config --config "$tmp/nokeys.json"
expect_text "keys:       0"
expect_text "pointsgw: warning: no API key is configured: no till, app or operator can call the gateway"
expect_text "configuration OK"
# Development mode with nothing set: OK, with serve's warnings, and the
# channels as serve will run them. Its database is never opened.
cc_dir=$(mktemp -d -p "$scratch")
python3 -c 'import json, sys
c = json.load(open("config/pointsgw.example.json"))
c["db"] = "sqlite:" + sys.argv[1] + "/none/x.db"
json.dump(c, open(sys.argv[1] + "/cc.json", "w"), ensure_ascii=False)' "$cc_dir"
expect_exit 0 "${unset_all[@]}" "$bin" check-config --config "$cc_dir/cc.json"
expect_text "pointsgw: DEVELOPMENT MODE: PGW_PHONE_HMAC_KEY/PGW_PHONE_AES_KEY are not set"
# Regression (an operator's walkthrough): this line lacked the "warning:"
# the other warnings have.
expect_text "pointsgw: warning: key mini-program is disabled: PGW_MP_CHANNEL_KEY is not set"
expect_text "pointsgw: warning: key demo-admin is README's published demo key"
expect_text "channels:   wechat_mp off (PGW_WECHAT_MP_SECRET unset), wechat_oa off (PGW_WECHAT_OA_SECRET, PGW_WECHAT_OA_TOKEN, PGW_WECHAT_OA_AES_KEY unset), sms off (PGW_SMS_SECRET_ID, PGW_SMS_SECRET_KEY unset)"$'\n'
expect_text "configuration OK"
[ ! -e "$cc_dir/none" ] && pass || fail "check-config made the database's folder"
channel_env=(PGW_WECHAT_MP_SECRET=s1 PGW_WECHAT_OA_SECRET=s2 PGW_WECHAT_OA_TOKEN=token3
    PGW_WECHAT_OA_AES_KEY=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG PGW_SMS_SECRET_ID=id4 PGW_SMS_SECRET_KEY=key5 PGW_MP_CHANNEL_KEY=mp-key-6)
expect_exit 0 "${unset_all[@]}" "${channel_env[@]}" "$bin" check-config --config "$cc_dir/cc.json"
expect_text "channels:   wechat_mp on, wechat_oa on, sms tencent"$'\n'
[[ "$out" != *disabled* && "$out" != *"is off"* ]] && pass || fail "check-config with every secret: $out"
expect_exit 0 "${unset_all[@]}" PGW_WECHAT_OA_SECRET=s2 PGW_SMS_SECRET_KEY=key5 \
    "$bin" check-config --config "$cc_dir/cc.json"
expect_text "wechat_oa off (PGW_WECHAT_OA_TOKEN, PGW_WECHAT_OA_AES_KEY unset), sms off (PGW_SMS_SECRET_ID unset)"
# Regression (the mini-program team's walkthrough): a configuration naming
# aes_key_env (safe mode) with that variable unset ran the official account
# in plain mode, silently: WeChat's encrypted pushes were refused 400 ("the
# message has no <FromUserName>") and plain ones taken. The variable is one
# the channel needs, named like its secret and token.
expect_exit 0 "${unset_all[@]}" PGW_WECHAT_OA_SECRET=s2 PGW_WECHAT_OA_TOKEN=token3 \
    "$bin" check-config --config "$cc_dir/cc.json"
expect_text "wechat_oa off (PGW_WECHAT_OA_AES_KEY unset)"
# An EncodingAESKey set but malformed: serve refuses it, so does check-config.
expect_exit 2 "${unset_all[@]}" "${channel_env[@]}" PGW_WECHAT_OA_AES_KEY=short \
    "$bin" check-config --config "$cc_dir/cc.json"
expect_text "PGW_WECHAT_OA_AES_KEY: "
expect_exit 2 "${unset_all[@]}" "${channel_env[@]}" PGW_WECHAT_OA_AES_KEY=short timeout 20 \
    "$bin" serve --config "$cc_dir/cc.json" --listen 127.0.0.1:0 --db "sqlite:$cc_dir/serve.db"
expect_text "PGW_WECHAT_OA_AES_KEY: "
# Regression (the last session's notes): a callback token longer than
# serve takes was "configuration OK". Refused by both, in the same words;
# one at the bound is taken.
long_token=$(printf 't%.0s' {1..65})
expect_exit 2 "${unset_all[@]}" "${channel_env[@]}" PGW_WECHAT_OA_TOKEN="$long_token" \
    "$bin" check-config --config "$cc_dir/cc.json"
expect_text "pointsgw: PGW_WECHAT_OA_TOKEN: the callback token is longer than 64"
[[ "$out" != *"configuration OK"* ]] && pass || fail "check-config took a token serve refuses: $out"
expect_exit 2 "${unset_all[@]}" "${channel_env[@]}" PGW_WECHAT_OA_TOKEN="$long_token" timeout 20 \
    "$bin" serve --config "$cc_dir/cc.json" --listen 127.0.0.1:0 --db "sqlite:$cc_dir/serve.db"
expect_text "PGW_WECHAT_OA_TOKEN: the callback token is longer than 64"
expect_exit 0 "${unset_all[@]}" "${channel_env[@]}" PGW_WECHAT_OA_TOKEN="${long_token%t}" \
    "$bin" check-config --config "$cc_dir/cc.json"
expect_text "configuration OK"
# Regression (the operations review): serve named one unset variable of
# a channel at a time (the official account's secret; once that was set,
# its token), so the operator restarted twice where check-config named
# both at once. serve names every one now, by check-config's own check.
serve_warned() { # VAR=VALUE... : serve's stderr until it listens, in $out
    local err="$cc_dir/warned.err" pid
    : >"$err"
    "${unset_all[@]}" "$@" "$bin" serve --config "$cc_dir/cc.json" --listen 127.0.0.1:0 \
        --db "sqlite:$cc_dir/warned.db" >/dev/null 2>"$err" &
    pid=$!
    for _ in $(seq 200); do
        grep -q "listening on" "$err" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    local status=$?
    out=$(cat "$err")
    expect_stopped "$status" "$out"
}
serve_warned
expect_text "listening on"
expect_text "channels.wechat_mp is off: set PGW_WECHAT_MP_SECRET in the environment"
expect_text "channels.wechat_oa is off: set PGW_WECHAT_OA_SECRET, PGW_WECHAT_OA_TOKEN, PGW_WECHAT_OA_AES_KEY in the environment"
expect_text "channels.sms is off: set PGW_SMS_SECRET_ID, PGW_SMS_SECRET_KEY in the environment"
serve_warned PGW_WECHAT_OA_SECRET=s2 PGW_SMS_SECRET_KEY=key5
expect_text "channels.wechat_oa is off: set PGW_WECHAT_OA_TOKEN, PGW_WECHAT_OA_AES_KEY in the environment"
expect_text "channels.sms is off: set PGW_SMS_SECRET_ID in the environment"
serve_warned PGW_WECHAT_OA_TOKEN=token3 PGW_SMS_SECRET_ID=id4
expect_text "channels.wechat_oa is off: set PGW_WECHAT_OA_SECRET, PGW_WECHAT_OA_AES_KEY in the environment"
expect_text "channels.sms is off: set PGW_SMS_SECRET_KEY in the environment"
serve_warned "${channel_env[@]}"
[[ "$out" == *"listening on"* && "$out" != *" is off: "* ]] && pass ||
    fail "serve with every channel's variables set warned of one: $out"
rm -rf "$cc_dir"

# Input files are bounded: an event file over 1 MiB is refused before it is parsed.
head -c 1100000 /dev/zero | tr '\0' ' ' >"$tmp/huge.json"
expect_exit 2 "$bin" quote --event "$tmp/huge.json"
expect_text "huge.json: too large (at most 1048576 bytes)"
# Regression (the operator review): a folder named as the file was "the
# file is empty".
expect_exit 2 "$bin" import-balances --shop S001 --file "$tmp" --db "sqlite:$tmp/folder.db"
expect_text "$tmp: Is a directory"

# keys add: a new key, shown once, with the configuration line holding its SHA-256.
expect_exit 0 "$bin" keys add --scope shop:S002 --name pos-s002
expect_text '"name":"pos-s002","scope":"shop:S002","key_sha256":"'
key=$(printf '%s' "$out" | sed -n 's/^key: //p')
hash=$(printf '%s' "$out" | sed -n 's/.*"key_sha256":"\([0-9a-f]*\)".*/\1/p')
if [ "${#key}" -eq 68 ] && [ "$(printf '%s' "$key" | sha256sum | cut -c1-64)" = "$hash" ]; then
    pass
else
    fail "keys add: key '$key' does not hash to '$hash'"
fi
expect_exit 0 "$bin" keys add --scope admin
other=$(printf '%s' "$out" | sed -n 's/^key: //p')
[ "$other" != "$key" ] && pass || fail "keys add printed the same key twice"
[[ "$out" != *require_signature* ]] && pass || fail "keys add: a key made to sign unasked: $out"
# Regression (an operator's walkthrough): a key that must sign was made by
# editing the printed line by hand; --require-signature writes it so
# (http_api.py test_keys_add_signing: serve holds the key to it).
expect_exit 0 "$bin" keys add --scope shop:S002 --name pos-s002 --require-signature
expect_text '"name":"pos-s002","scope":"shop:S002","key_sha256":"'
expect_text '","require_signature":true}'
expect_exit 0 "$bin" keys --help
expect_text "--require-signature"
# Regression (last session's review): jansson out of memory making the
# configuration line printed the key and "?" for the line, exit 0: a key
# whose line is lost is no key. A shim fails keys add's json_pack (the
# parse's own go through); ASan's runtime, when the binary has it, first.
cat >"$tmp/pack_shim.c" <<'SHIM'
#include <jansson.h>
#include <stdarg.h>
#include <string.h>
json_t *json_pack(const char *fmt, ...)
{
    if (strcmp(fmt, "{s:s,s:s,s:s,s:o*}") == 0)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    json_t *made = json_vpack_ex(NULL, 0, fmt, ap);
    va_end(ap);
    return made;
}
SHIM
if cc -shared -fPIC -o "$tmp/pack_shim.so" "$tmp/pack_shim.c" -ljansson; then
    preload="$tmp/pack_shim.so"
    asan=$(ldd "$bin" | sed -n 's/^[[:space:]]*\(\S*libasan\.so\S*\) =>.*/\1/p')
    [ -z "$asan" ] || preload="$asan $preload"
    expect_exit 1 env LD_PRELOAD="$preload" "$bin" keys add --scope admin --name lost-line
    expect_text "pointsgw keys add: out of memory"
    [[ "$out" != *"key: "* && "$out" != *"?"* ]] && pass || fail "keys add: a key without its line: $out"
else
    fail "keys add: the json_pack shim did not build"
fi
# Regression (review of the flag): `--name` given no value took the next
# flag for it: `--name --require-signature` made a key named so that need
# not sign, exit 0. A flag's value is never one of the command's flags.
expect_exit 2 "$bin" keys add --scope shop:S002 --name --require-signature
expect_text "pointsgw keys add: --name needs a value"
[[ "$out" != *key_sha256* ]] && pass || fail "keys add: a flag taken for --name: $out"
expect_exit 2 "$bin" keys add --scope shop:S002 --require-signature --require-signature
expect_text "pointsgw keys add: --require-signature given twice"
expect_exit 2 "$bin" keys add --scope shop:S002 --require-signature=true
expect_text "unknown argument '--require-signature=true'"
expect_exit 2 "$bin" keys add --scope shop:S999
expect_text 'unknown shop "S999"'
# Regression (an operator's walkthrough): it said `key.scope: unknown
# shop`, a configuration path for what was a command-line flag.
expect_text 'pointsgw keys add: --scope: unknown shop "S999"'
expect_exit 2 "$bin" keys add --scope root
expect_text 'pointsgw keys add: --scope: "root" is not shop:<id>'
expect_exit 2 "$bin" keys add
expect_text "--scope is required"
# Regression (the operator review): the last of two scopes won, silently
# (finance, then admin: an admin key).
expect_exit 2 "$bin" keys add --scope finance --scope admin
expect_text "pointsgw keys add: --scope given twice"
expect_exit 2 "$bin" verify --db "sqlite:/nonexistent/a.db" --db "sqlite:/nonexistent/b.db"
expect_text "--db given twice"
# Regression: names the configuration then refused were printed, exit 0.
# Regression (the operator's walk of 2026-12-01): README's `keys add`
# example run on a server (outside the source tree, no --config) said only
# "config/pointsgw.example.json: cannot open", not that --config was missing.
expect_exit 2 env -C "$tmp" "$bin" keys add --scope admin --name ok
expect_text 'config/pointsgw.example.json: cannot open: No such file or directory (no --config given'
expect_text 'give yours with --config FILE'
expect_exit 2 env -C "$tmp" "$bin" keys add --scope admin --config missing.json
[[ "$out" != *"no --config given"* ]] && pass || fail "a --config given was said missing: $out"
expect_exit 2 "$bin" keys add --scope shop:S002 --name "pos s002"
expect_text "may only contain letters, digits, '_' and '-'"
expect_exit 2 "$bin" keys add --scope shop:S002 --name demo-admin
expect_text 'a key named "demo-admin" is in the configuration already'
expect_exit 2 "$bin" keys remove
expect_text "the subcommand is 'add'"

# The database of the import checks: SQLite, or a new PostgreSQL database
# when ctest runs this on PostgreSQL (integration.pg.cli).
import_db="sqlite:$tmp/import.db"
edited_db="sqlite:$tmp/edited.db"
repair_db="sqlite:$tmp/repair.db"
keys_db="sqlite:$tmp/keys.db"
if [ -n "${PGW_TEST_PG_DIR:-}" ]; then
    admin=$(cat "$PGW_TEST_PG_DIR/url")
    suffix=$RANDOM
    pg_admin=$admin
    pg_dbs=("pgwc_${$}_$suffix" "pgwc_empty_${$}_$suffix" "pgwc_edited_${$}_$suffix"
        "pgwc_repair_${$}_$suffix" "pgwc_keys_${$}_$suffix")
    # FILE_COPY: see pg.py's create_db
    for db in "${pg_dbs[@]}"; do psql -qX "$admin" -c "CREATE DATABASE $db STRATEGY FILE_COPY"; done
    import_db="${admin%/*}/pgwc_${$}_$suffix"
    edited_db="${admin%/*}/pgwc_edited_${$}_$suffix"
    repair_db="${admin%/*}/pgwc_repair_${$}_$suffix"
    keys_db="${admin%/*}/pgwc_keys_${$}_$suffix"
    # An empty database is not taken for an empty log, nor is a missing one.
    expect_exit 2 "$bin" verify --db "${admin%/*}/pgwc_empty_${$}_$suffix"
    expect_text "no pointsgw database there"
    expect_exit 2 "$bin" verify --db "${admin%/*}/pgwc_none_${$}_$suffix"
    expect_text "does not exist"
fi

# import-balances: legacy card balances at the shop's rate, once per (shop, batch, card).
# Regression: a card listed twice in one file (lines 6 and 7 repeat line
# 2's) was counted as replayed (the same points) or refused ECONFLICT (other
# points), as if imported before; each repeat is refused naming the first.
# Regression (privacy): the repeat's message quoted the card ("card C1 is on
# line 2 already"), and it reaches logs and HTTP answers as a refused phone
# or openid no longer does; the operator finds the row by its line.
printf '\xef\xbb\xbfcard,phone,points\r\nC1,13500135000,1000\r\nC2,,50\r\n,13500135000,10\r\nC3,abc,5\r\nC1,13900139000,7\r\nC1,13500135000,1000\r\n' >"$tmp/legacy.csv"
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/legacy.csv" --rate-bp 5000 --db "$import_db"
expect_text '"rate_bp":5000,"created":2,"matched_by_card":0,"matched_by_phone":1,"replayed":0,"rejected":3,"points":530'
expect_text 'line 5: EINVAL: the phone number has a character that is not a digit (its character 1)'
expect_text "line 6: EINVAL: this row's card is on line 2 already: a file lists each card once"
expect_text "line 7: EINVAL: this row's card is on line 2 already"
# no_card_shown CARD: no rejection line ("line N: ...") of $out names the card.
no_card_shown() {
    local l shown=
    while IFS= read -r l; do
        [[ "$l" == line\ * && "$l" == *"$1"* ]] && shown+="$l; "
    done <<<"$out"
    if [ -z "$shown" ]; then pass; else fail "a rejection names card $1: $shown"; fi
}
no_card_shown C1
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/legacy.csv" --rate-bp 5000 --db "$import_db"
expect_text '"created":0,"matched_by_card":0,"matched_by_phone":0,"replayed":3,"rejected":3,"points":0'
expect_text "line 7: EINVAL: this row's card is on line 2 already"
no_card_shown C1
# A row without a card is told by its phone: the same phone twice is refused too.
printf 'card,phone,points\n,13800138000,4\n,+86 138-0013-8000,4\n' >"$tmp/phones.csv"
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/phones.csv" --db "sqlite:$tmp/phones.db"
expect_text '"created":1,"matched_by_card":0,"matched_by_phone":0,"replayed":0,"rejected":1,"points":4'
expect_text "line 3: EINVAL: this row's phone (it has no card) is on line 2 already"
# The finance walkthrough: a card written as a member is named (S003:9001)
# was told only its shape; the row says to write the number alone.
printf 'card,points\nS003:9001,5\n9002,5\n' >"$tmp/shopcard.csv"
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/shopcard.csv" --db "sqlite:$tmp/shopcard.db"
expect_text '"created":1,"matched_by_card":0,"matched_by_phone":0,"replayed":0,"rejected":1,"points":5'
expect_text "line 2: EINVAL: the card column holds the card's number alone (1..32 letters, digits or -), without a shop: the import's shop, S001, is given by --shop or the URL's shop"
# Regression: points were read by strtoll, so " 5" and "+5" were 5 while
# "5 " was refused. Points are digits only; other rows are refused by line.
printf 'card,points\nP1,+5\nP2, 5\nP3,5 \nP4,5\n' >"$tmp/signs.csv"
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/signs.csv" --db "sqlite:$tmp/signs.db"
expect_text '"created":1,"matched_by_card":0,"matched_by_phone":0,"replayed":0,"rejected":3,"points":5'
expect_text 'line 2: EINVAL: points is not 1..1000000000000: character 1 is not a digit 0-9'
expect_text 'line 3: EINVAL: points is not 1..1000000000000: character 1 is not a digit 0-9'
expect_text 'line 4: EINVAL: points is not 1..1000000000000: character 2 is not a digit 0-9'
# Regression: a refused points value was quoted; with the columns shifted
# it is the row's phone (or card), copied into the output and the logs.
printf 'card,points\nC1,+86 138-0013-8000\nC2,6222021234567890\n' >"$tmp/shifted.csv"
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/shifted.csv" --db "sqlite:$tmp/shifted.db"
expect_text 'line 2: EINVAL: points is not 1..1000000000000: character 1 is not a digit 0-9'
expect_text 'line 3: EINVAL: points is not 1..1000000000000: 16 digits, out of range'
if [[ "$out" != *0013* && "$out" != *1234* ]]; then pass; else fail "an identity in the points column shown: $out"; fi
# Regression: a phone number under points, digits only, was imported as a
# balance (13,800,138,000 points); the example's risk.max_points_per_event
# (200000) holds a row as it holds an event.
printf 'card,points\nC1,13800138000\nC2,200000\n' >"$tmp/slipped.csv"
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/slipped.csv" --db "sqlite:$tmp/slipped.db"
expect_text '"created":1,"matched_by_card":0,"matched_by_phone":0,"replayed":0,"rejected":1,"points":200000'
expect_text 'line 2: ERISK: max_points_per_event: the row would credit more than the limit, 200000 points'
if [[ "$out" != *13800138000* ]]; then pass; else fail "the phone under points shown: $out"; fi
# Regression: --rate-bp was read by strtoll, so "+100" and " 100" were 100
# while "100 " was refused. Digits only; a bad rate imports nothing.
n=0
for rate in '+100' ' 100' '100x' '100 ' '-100' ''; do
    n=$((n + 1))
    expect_exit 2 "$bin" import-balances --shop S001 --file "$tmp/signs.csv" --rate-bp "$rate" --db "sqlite:$tmp/rate$n.db"
    expect_text "pointsgw import-balances: --rate-bp is not 1..1000000: "
    if [ ! -e "$tmp/rate$n.db" ]; then pass; else fail "--rate-bp '$rate' made a database"; fi
done
# Regression: a row refused for its phone was not the file's row of its
# card, so a later row of that card was imported in its place: the file's
# two balances of C1, one of them credited without a word.
printf 'card,phone,points\nC1,abc,5\nC1,13500135000,10\n' >"$tmp/badphone.csv"
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/badphone.csv" --db "sqlite:$tmp/badphone.db"
expect_text '"created":0,"matched_by_card":0,"matched_by_phone":0,"replayed":0,"rejected":2,"points":0'
expect_text 'line 2: EINVAL: the phone number has a character that is not a digit (its character 1)'
expect_text "line 3: EINVAL: this row's card is on line 2 already"
no_card_shown C1
# Regression: an operator who mended a rejected row and ran the file again
# without --batch had every row imported the first time credited twice (the
# mended file hashed to another batch). Those rows are refused, naming the
# batch that imported them; the mended row goes in.
printf 'card,phone,points\nE1,13600136001,100\nE2,,40\n,13600136003,8\nE4,bad,5\n' >"$tmp/edit1.csv"
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/edit1.csv" --db "$edited_db"
expect_text '"created":3,"matched_by_card":0,"matched_by_phone":0,"replayed":0,"rejected":1,"points":148'
batch1=$(printf '%s\n' "$out" | python3 -c 'import json, sys
print([json.loads(l) for l in sys.stdin if l.startswith("{")][0]["batch"])')
printf 'card,phone,points\nE1,13600136001,100\nE2,,40\n,13600136003,8\nE4,13600136004,5\n' >"$tmp/edit2.csv"
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/edit2.csv" --db "$edited_db"
expect_text '"created":1,"matched_by_card":0,"matched_by_phone":0,"replayed":0,"rejected":3,"points":5'
expect_text "line 2: EINVAL: this row's card was imported at S001 before, in batch $batch1"
expect_text "line 3: EINVAL: this row's card was imported at S001 before, in batch $batch1"
expect_text "line 4: EINVAL: this row's phone (it has no card) was imported at S001 before, in batch $batch1"
no_card_shown E1
no_card_shown E2
# Naming a batch says what is meant: that batch's rows replay, a new one credits again.
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/edit1.csv" --batch "$batch1" --db "$edited_db"
expect_text '"created":0,"matched_by_card":0,"matched_by_phone":0,"replayed":3,"rejected":1,"points":0'
printf 'card,points\nE2,40\n' >"$tmp/edit3.csv"
expect_exit 0 "$bin" import-balances --shop S001 --file "$tmp/edit3.csv" --batch again --db "$edited_db"
expect_text '"matched_by_card":1,"matched_by_phone":0,"replayed":0,"rejected":0,"points":40'
expect_exit 0 "$bin" member show card:S001:E1 --db "$edited_db"
expect_text '"balance": 100,'
expect_exit 0 "$bin" member show card:S001:E2 --db "$edited_db"
expect_text '"balance": 80,'
# Finance's audit: an import's transfers named nothing of the command
# that wrote them (event_key null). Each names its shop and batch now,
# never the card or the phone's blind index (64 hex digits) its key holds
# (the batch hashed from the rows is 16).
expect_text '"batch": "again"'
expect_text "\"batch\": \"$batch1\""
expect_exit 0 "$bin" member show phone:13600136003 --db "$edited_db"
expect_text '"event_key": null,
      "command": {
        "kind": "import",
        "shop_id": "S001",
        "batch": "'"$batch1"'"
      }'
if [[ "$out" =~ [0-9a-f]{32} ]]; then fail "member show shows an import key's lookup: $out"; else pass; fi
# Regression: the same file again at another rate (the same batch: its
# rows' hash) refused each row "idempotency key import:S001:<batch>:phone:
# <64 hex> was used before for a different request", showing the phone's
# blind index and not saying what happened. Each row says it now.
printf 'card,phone,points\nR1,13600136011,100\n,13600136012,40\n' >"$tmp/rate.csv"
expect_exit 0 "$bin" import-balances --shop S001 --file "$tmp/rate.csv" --db "sqlite:$tmp/rate.db"
rate_batch=$(printf '%s\n' "$out" | python3 -c 'import json, sys
print([json.loads(l) for l in sys.stdin if l.startswith("{")][0]["batch"])')
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/rate.csv" --rate-bp 5000 --db "sqlite:$tmp/rate.db"
expect_text '"created":0,"matched_by_card":0,"matched_by_phone":0,"replayed":0,"rejected":2,"points":0'
expect_text "line 2: ECONFLICT: this row's card was imported at S001 before, in batch $rate_batch, with 100 points, not 50: a batch's rows do not change"
expect_text "line 3: ECONFLICT: this row's phone (it has no card) was imported at S001 before, in batch $rate_batch, with 40 points, not 20"
expect_text "(another rate or balance is another batch: name a new one to credit the row again)"
no_card_shown R1
if [[ "$out" =~ [0-9a-f]{32} || "$out" == *"idempotency key"* ]]; then
    fail "a conflicting import row shows its key: $out"
else pass; fi
printf 'card,points\nC9,300\n' >"$tmp/more.csv"
expect_exit 0 "$bin" import-balances --shop S001 --file "$tmp/more.csv" --batch b2 --db "$import_db"
expect_text '"batch":"b2","rate_bp":10000,"created":1'
# Regression: a card of one member with the phone of another was refused
# ECONFLICT (idempotency_conflict over HTTP), as if a key had been reused.
member_of() {
    "$bin" member show "$1" --db "$import_db" 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["member_id"])'
}
by_card=$(member_of card:S001:C9)
by_phone=$(member_of phone:13500135000)
printf 'card,phone,points\nC9,13500135000,40\n' >"$tmp/two.csv"
expect_exit 1 "$bin" import-balances --shop S001 --file "$tmp/two.csv" --db "$import_db"
expect_text '"created":0,"matched_by_card":0,"matched_by_phone":0,"replayed":0,"rejected":1,"points":0'
expect_text "line 2: EINVAL: the card and the phone belong to different members: the card to member $by_card, the phone to member $by_phone"
if [ -n "$by_card" ] && [ -n "$by_phone" ] && [ "$by_card" != "$by_phone" ]; then pass; else
    fail "two members: '$by_card' '$by_phone'"
fi
expect_exit 0 "$bin" verify --db "$import_db"
expect_text "transfers:  4 checked"

# Regression (the operations review): phone keys other than those the
# database's phones were stored with were taken silently: the same phone got
# another blind index, was not found, and its next event enrolled a second
# member. Each command that opens the vault on a database with phones
# (serve, member, import-balances, reconcile --repair) refuses to start.
# $import_db's phones were stored in development mode (its public keys:
# 32 bytes of 0x11 to index, of 0x22 to seal, util/vault.c).
hex64() { printf "$1%.0s" {1..64}; }
with_keys() { env PGW_PHONE_HMAC_KEY="$(hex64 "$1")" PGW_PHONE_AES_KEY="$(hex64 "$2")" "${@:3}"; }
no_keys_shown() {
    if [[ "$out" == *13500135000* || "$out" == *"$(hex64 "$1")"* || "$out" == *"$(hex64 "$2")"* ]]; then
        fail "a refusal shows a phone or a key: $out"
    else pass; fi
}
expect_exit 2 with_keys 3 4 "$bin" member show phone:13500135000 --db "$import_db"
expect_text "pointsgw member: the database's phones were sealed with other keys: PGW_PHONE_AES_KEY does not open them"
expect_text "PGW_PHONE_HMAC_KEY and PGW_PHONE_AES_KEY must be the keys they were stored with"
no_keys_shown 3 4
printf 'card,phone,points\n,13500135000,7\n' >"$tmp/again.csv"
expect_exit 2 with_keys 3 4 "$bin" import-balances --shop S001 --file "$tmp/again.csv" --db "$import_db"
expect_text "pointsgw import-balances: the database's phones were sealed with other keys"
expect_exit 2 with_keys 3 4 timeout 60 "$bin" serve --config config/pointsgw.example.json \
    --listen 127.0.0.1:0 --db "$import_db"
expect_text "pointsgw serve: the database's phones were sealed with other keys"
no_keys_shown 3 4
# The sealing key right, the index key not: the number opens, its index differs.
expect_exit 2 with_keys 3 2 "$bin" member show phone:13500135000 --db "$import_db"
expect_text "the database's phones were indexed with another key: PGW_PHONE_HMAC_KEY gives them other blind indexes"
no_keys_shown 3 2
# The public keys given in full are the same keys: taken.
expect_exit 0 with_keys 1 2 "$bin" member show phone:13500135000 --db "$import_db"
expect_exit 0 "$bin" verify --db "$import_db"
expect_text "transfers:  4 checked"
# The other way: phones stored with real keys, the development mode's
# public keys refused. A database without phones takes any keys.
printf 'card,points\nK1,5\n' >"$tmp/card.csv"
# Regression (the operations review): the commands that open the vault
# ran on development mode's public keys without the warning serve gives.
dev_warning="pointsgw: DEVELOPMENT MODE: PGW_PHONE_HMAC_KEY/PGW_PHONE_AES_KEY are not set, phones are protected by public keys"
expect_exit 0 "$bin" import-balances --shop S001 --file "$tmp/card.csv" --db "$keys_db"
expect_text "$dev_warning"
expect_exit 0 "$bin" member show card:S001:K1 --db "$keys_db"
expect_text "$dev_warning"
printf 'card,phone,points\nK2,13700137000,5\n' >"$tmp/keyed.csv"
expect_exit 0 with_keys 5 6 "$bin" import-balances --shop S001 --file "$tmp/keyed.csv" --db "$keys_db"
[[ "$out" != *"DEVELOPMENT MODE"* ]] && pass || fail "real keys were warned of: $out"
expect_exit 0 with_keys 5 6 "$bin" member show phone:13700137000 --db "$keys_db"
expect_text "137****7000"
[[ "$out" != *"DEVELOPMENT MODE"* ]] && pass || fail "real keys were warned of: $out"
expect_exit 2 env -u PGW_PHONE_HMAC_KEY -u PGW_PHONE_AES_KEY "$bin" member show card:S001:K1 --db "$keys_db"
expect_text "the database's phones were sealed with other keys than the development mode's public ones"
expect_text "set PGW_PHONE_HMAC_KEY and PGW_PHONE_AES_KEY to the keys they were stored with"
# Regression (the operations review): in development mode a key set but
# malformed, or one key without the other, was replaced by the public keys
# ("not set", said the warning). Refused, naming the variable.
expect_exit 2 env -u PGW_PHONE_AES_KEY PGW_PHONE_HMAC_KEY=abc "$bin" member show card:S001:K1 --db "$keys_db"
expect_text "PGW_PHONE_HMAC_KEY is malformed"
[[ "$out" != *abc* ]] && pass || fail "a refusal shows the malformed key: $out"
expect_exit 2 env -u PGW_PHONE_AES_KEY PGW_PHONE_HMAC_KEY="$(hex64 5)" "$bin" member show card:S001:K1 --db "$keys_db"
expect_text "PGW_PHONE_AES_KEY is not set"
no_keys_shown 5 6
# Regression: a damaged log exited 2, "bad usage", which a monitoring job
# reads as its own mistake; verify found a problem there: 1.
expect_exit 0 "$bin" import-balances --shop S001 --file "$tmp/more.csv" --db "sqlite:$tmp/whole.db"
head -c 8192 "$tmp/whole.db" >"$tmp/damaged.db"
expect_exit 1 "$bin" verify --db "sqlite:$tmp/damaged.db"
expect_text "malformed"
expect_exit 2 "$bin" import-balances --shop S999 --file "$tmp/more.csv" --db "$import_db"
expect_text "--shop must name a shop"
printf 'card,colour\nC1,red\n' >"$tmp/bad.csv"
expect_exit 2 "$bin" import-balances --shop S001 --file "$tmp/bad.csv" --db "$import_db"
expect_text 'line 1: column 2 is unknown: a header names its columns, each one of card, phone, points'

# Reconcile: bad usage is exit 2 and says what; the matching itself is
# exercised over a live log by the HTTP integration test.
expect_exit 2 "$bin" reconcile
expect_text "--statement FILE and --channel NAME are required"
printf 'event_id,occurred_at,type,member,amount_fen,points\n' >"$tmp/statement.csv"
expect_exit 2 "$bin" reconcile --statement "$tmp/statement.csv" --channel store --format xml
expect_text "--format is json or csv"
expect_exit 2 "$bin" reconcile --statement "$tmp/statement.csv" --channel store \
    --from 2026-11-21T00:00:00+08:00 --to 2026-11-20T00:00:00+08:00
expect_text "--from must come before --to"
# Regressions: a ':' in the channel or shop is part of no event's key (the store asserted).
expect_exit 2 "$bin" reconcile --statement "$tmp/statement.csv" --channel store --shop 'S001:x'
expect_text 'shop "S001:x" is not a shop id'
expect_exit 2 "$bin" reconcile --statement "$tmp/statement.csv" --channel store:S001
expect_text 'channel "store:S001" is not a channel name'
expect_exit 2 "$bin" reconcile --statement "$tmp/statement.csv" --channel store --shop ''
expect_text 'shop "" is not a shop id'
expect_exit 2 "$bin" reconcile --statement "$tmp/none.csv" --channel store --db "sqlite:$tmp/missing.db"
expect_text "none.csv"
expect_exit 2 "$bin" reconcile --statement "$tmp/statement.csv" --channel store --db "sqlite:$tmp/missing.db"
expect_text "no database there"

# reconcile --repair, twice at once on one statement (a nightly job and an
# operator): each finds the three rows missing, and the one that writes
# second finds each already posted, with the same content, by the other.
# Its "replayed" counts those; together: each row created once, replayed
# once, and the log holds each event once. The two wait on the database's
# write lock, held until both reports are out, so both read it unrepaired.
expect_exit 0 "$bin" import-balances --shop S002 --file "$tmp/one.csv" --db "$repair_db"
printf 'event_id,occurred_at,type,member,amount_fen,points\n%s\n%s\n%s\n' \
    'CR-1,2026-11-20T10:00:00+08:00,purchase,member_id:MCR1,10000,100' \
    'CR-2,2026-11-20T11:00:00+08:00,purchase,member_id:MCR2,5000,50' \
    'CR-3,2026-11-20T12:00:00+08:00,purchase,member_id:MCR1,2000,20' >"$tmp/repair.csv"
# hold_writes DB FLAG: takes DB's write lock (SQLite's, or the chain lock
# every PostgreSQL write takes), says so in FLAG.held, lets go once FLAG exists.
hold_writes() {
    local until="while [ ! -e '$2' ]; do sleep 0.05; done"
    if [ "${1#sqlite:}" != "$1" ]; then
        python3 -c 'import os, sqlite3, subprocess, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
open(sys.argv[2] + ".held", "w").close()
subprocess.run(sys.argv[3], shell=True)
db.execute("ROLLBACK")' "${1#sqlite:}" "$2" "$until"
    else
        psql -qX "$1" -c "SELECT pg_advisory_lock(7064670002)" -c "\\! touch '$2.held'; $until" >/dev/null
    fi
}
wait_file() { # FILE: within 20 s
    local i
    for i in $(seq 400); do [ -e "$1" ] && return 0; sleep 0.05; done
    return 1
}
repair_tally() { # ERR_FILE FIELD: the number the repair's tally line gives FIELD
    sed -n 's/.*"repair":{.*"'"$2"'":\([0-9]*\).*/\1/p' "$1"
}
# (--new-channel: the database has no event on channel store before them.)
hold_writes "$repair_db" "$tmp/release" &
holder=$!
wait_file "$tmp/release.held" || fail "the write lock was not taken"
for run in a b; do
    "$bin" reconcile --statement "$tmp/repair.csv" --channel store --shop S001 --db "$repair_db" \
        --out "$tmp/repair-$run.json" --repair --new-channel 2>"$tmp/repair-$run.err" &
    eval "repair_$run=\$!"
done
wait_file "$tmp/repair-a.json" && wait_file "$tmp/repair-b.json" ||
    fail "the repairs' reports did not come: $(cat "$tmp/repair-a.err" "$tmp/repair-b.err")"
touch "$tmp/release"
wait "$holder"
wait "$repair_a"
code_a=$?
wait "$repair_b"
code_b=$?
created=0
replayed=0
for run in a b; do
    err_file="$tmp/repair-$run.err"
    [ "$(repair_tally "$err_file" missing_in_ledger)" = 3 ] &&
        [ "$(repair_tally "$err_file" failed)" = 0 ] &&
        [ $(($(repair_tally "$err_file" created) + $(repair_tally "$err_file" replayed))) = 3 ] &&
        grep -q '"missing_in_ledger":3' "$tmp/repair-$run.json" && pass ||
        fail "repair $run: three rows missing, each created or replayed: $(cat "$err_file")"
    created=$((created + $(repair_tally "$err_file" created)))
    replayed=$((replayed + $(repair_tally "$err_file" replayed)))
done
[ "$code_a" = 1 ] && [ "$code_b" = 1 ] && pass || fail "the repairs exited $code_a and $code_b, wanted 1"
[ "$created" = 3 ] && [ "$replayed" = 3 ] && pass ||
    fail "two repairs at once: $created created and $replayed replayed, wanted 3 and 3"
expect_exit 1 "$bin" reconcile --statement "$tmp/repair.csv" --channel store --shop S001 --db "$repair_db"
expect_text '"ledger_rows":3,'
expect_text '"missing_in_ledger":0,'
# One effect each: the import's transfer, CR-1 and CR-2 their base and
# first-purchase points, CR-3 its base (a second effect would add more).
expect_text '"ledger_points":570,'
# With --out, stdout is empty: the exit 1 says on stderr what it found
# and where the report went (it said nothing: the finance walkthrough).
expect_exit 1 "$bin" reconcile --statement "$tmp/repair.csv" --channel store --shop S001 \
    --db "$repair_db" --out "$tmp/found.json"
listed=$(sed -n 's/.*"exceptions_listed":\([0-9]*\).*/\1/p' "$tmp/found.json")
[ "$out" = "pointsgw reconcile: $listed exceptions found: the report is in $tmp/found.json" ] &&
    [ "${listed:-0}" -gt 1 ] && pass || fail "reconcile --out with exceptions said: '$out' ($listed listed)"
# Review of af8130d: an exit 1 is also a report that could not be written
# (the disk full); it said only "writing the report failed", not where,
# and a script cannot tell it from exceptions by the exit: it says which.
if [ -w /dev/full ]; then
    expect_exit 1 "$bin" reconcile --statement "$tmp/repair.csv" --channel store --shop S001 \
        --db "$repair_db" --out /dev/full
    expect_text "pointsgw reconcile: no report was written to /dev/full"
    [[ "$out" != *"exceptions found"* ]] && pass || fail "an unwritten report was said found: $out"
fi
expect_exit 0 "$bin" verify --db "$repair_db"
expect_text "transfers:  6 checked"
# Regression (the user review): a misspelt --channel read no events, every
# row was missing_in_ledger, and --repair credited them all again under
# the misspelt channel. A repair names a channel the log has events on.
expect_exit 2 "$bin" reconcile --statement "$tmp/repair.csv" --channel stores --shop S001 \
    --db "$repair_db" --repair --out "$tmp/stores.json"
expect_text 'the log has no event on channel stores'
[ ! -e "$tmp/stores.json" ] && pass || fail "a refused repair wrote its report"
expect_exit 0 "$bin" verify --db "$repair_db"
expect_text "transfers:  6 checked"
# Channel system is the gateway's own: no event may be posted under it
# (416b875), so a repair of it is refused before any row, not row by row
# with a 400 each and the tally's failures (the last session's review).
expect_exit 2 "$bin" reconcile --statement "$tmp/repair.csv" --channel system --shop S001 \
    --db "$repair_db" --repair --new-channel --out "$tmp/system.json"
expect_text '--repair: --channel: "system" is the gateway'\''s own channel'
[ ! -e "$tmp/system.json" ] && pass || fail "a refused repair of system wrote its report"
expect_exit 0 "$bin" verify --db "$repair_db"
expect_text "transfers:  6 checked"
# Without --repair it reports, and says so.
expect_exit 1 "$bin" reconcile --statement "$tmp/repair.csv" --channel stores --shop S001 \
    --db "$repair_db"
expect_text 'warning: the log has no event on channel stores'
# (the operator's walk of 2026-12-01: the JSON's notice asked "misspelt?",
# stderr did not, nor said what to check)
expect_text 'on channel stores (misspelt?): no row can match; check --channel'
# Regression (an operator's walkthrough): a misspelt --shop read no events
# either, every row missing_in_ledger, and said nothing. Warned as a
# channel is, from the log (a shop gone from the configuration, or an
# appid, still has its events there).
expect_exit 1 "$bin" reconcile --statement "$tmp/repair.csv" --channel store --shop B250 \
    --db "$repair_db"
expect_text 'warning: the log has no event of shop B250 on channel store'
expect_text 'of shop B250 on channel store (misspelt?): no row can match; check --shop'
expect_text '"missing_in_ledger":3,'
expect_exit 1 "$bin" reconcile --statement "$tmp/repair.csv" --channel store --shop S001 \
    --db "$repair_db"
[[ "$out" != *"reconcile: warning"* ]] && pass || fail "a shop with events was warned about: $out"
# Regression (the code review): a whole channel's statement with a shop_id
# column was repaired with no shop at all: purchases failed ("$.shop_id:
# required") and other rows went in shopless, under another key than the
# till's own event. Each row now goes in as its shop's; a name that is no
# shop of the configuration (an appid) fails that row alone.
printf '%s\n' 'event_id,occurred_at,type,member,amount_fen,points,shop_id' \
    'SH-1,2026-11-20T13:00:00+08:00,purchase,member_id:MSH1,1000,10,S001' \
    'SH-1,2026-11-20T13:00:00+08:00,purchase,member_id:MSH2,3000,30,S002' \
    'SH-2,2026-11-20T13:30:00+08:00,purchase,member_id:MSH1,1000,10,wx00000000000000ab' \
    >"$tmp/by-shop.csv"
expect_exit 1 "$bin" reconcile --statement "$tmp/by-shop.csv" --channel store --db "$repair_db" \
    --repair --out "$tmp/by-shop.json"
expect_text '"missing_in_ledger":3,"created":2,"replayed":0,"failed":1'
expect_text 'event SH-2: shop_id wx00000000000000ab is not a shop of the configuration'
expect_text "$dev_warning"
expect_exit 1 "$bin" reconcile --statement "$tmp/by-shop.csv" --channel store --db "$repair_db"
expect_text '"missing_in_ledger":1,'
# Each under its own shop's key: a shop's own statement finds its row.
for shop in S001 S002; do
    grep -E "^(event_id,.*|SH-1,.*,$shop)\$" "$tmp/by-shop.csv" >"$tmp/by-shop-$shop.csv"
    expect_exit 1 "$bin" reconcile --statement "$tmp/by-shop-$shop.csv" --channel store \
        --shop "$shop" --db "$repair_db"
    expect_text '"missing_in_ledger":0,'
done
expect_exit 0 "$bin" verify --db "$repair_db"
# Regression (the finance review): without shop_id, a whole channel's row
# of SH-1, which the log has at S001 and S002, was paired with S001's event,
# silently. It is paired with neither: a malformed_row naming both shops, a
# warning in the report and on stderr, and nothing to repair.
printf '%s\n' 'event_id,occurred_at,type,member,amount_fen,points' \
    'SH-1,2026-11-20T13:00:00+08:00,purchase,member_id:MSH1,1000,10' >"$tmp/no-shop.csv"
expect_exit 1 "$bin" reconcile --statement "$tmp/no-shop.csv" --channel store --db "$repair_db" \
    --from 2026-11-20T13:00:00+08:00 --to 2026-11-20T13:01:00+08:00 --repair
expect_text 'pointsgw reconcile: warning: line 2: event_id SH-1 is at 2 shops in the log (S001, S002): paired with none'
expect_text '"warnings":[{"event_id":"SH-1","line":2,"shops":["S001","S002"],"shops_total":2,'
expect_text '"matched":0,'
expect_text '"malformed_row":1,'
expect_text '"missing_in_statement":2,'
expect_text '"missing_in_ledger":0,"created":0,"replayed":0,"failed":0'
# Regression (the finance walkthrough): a row dated in the period whose
# event the log has dated just outside it was missing_in_ledger, with no
# ledger side, and --repair failed on the key the log holds. It is the
# pair's first difference (the points here: the rules gave a new member's
# bonus too), and nothing is posted.
printf '%s\n' 'event_id,occurred_at,type,member,amount_fen,points' \
    'MID-1,2026-11-21T00:00:00+08:00,purchase,member_id:MMID1,1000,10' >"$tmp/midnight.csv"
expect_exit 1 "$bin" reconcile --statement "$tmp/midnight.csv" --channel store --shop S001 \
    --from 2026-11-21T00:00:00+08:00 --to 2026-11-22T00:00:00+08:00 --db "$repair_db" --repair
expect_text '"created":1,"replayed":0,"failed":0'
sed -i 's/2026-11-21T00:00:00/2026-11-20T23:59:00/' "$tmp/midnight.csv"
expect_exit 1 "$bin" reconcile --statement "$tmp/midnight.csv" --channel store --shop S001 \
    --from 2026-11-20T00:00:00+08:00 --to 2026-11-21T00:00:00+08:00 --db "$repair_db" --repair
expect_text '{"event_id":"MID-1","kind":"points_mismatch"'
expect_text '"missing_in_ledger":0,"created":0,"replayed":0,"failed":0'
expect_text '"ledger":{"occurred_at":"2026-11-21T00:00:00+08:00"'
# Regression (the finance analyst): a till's statement, its times with a
# space for the "T" or local (the mall's zone, the config's), its amounts
# grouped by thousands in quoted cells, was all malformed rows. It reads
# as the same statement written plainly does: the same report.
expect_exit 1 "$bin" reconcile --statement "$tmp/repair.csv" --channel store --shop S001 \
    --db "$repair_db"
plain=$out
printf '%s\n' 'event_id,occurred_at,type,member,amount_fen,points' \
    'CR-1,2026-11-20 10:00:00,purchase,member_id:MCR1,"10,000",100' \
    'CR-2,2026-11-20T11:00:00,purchase,member_id:MCR2,"5,000",50' \
    'CR-3,2026-11-20 12:00:00+08:00,purchase,member_id:MCR1,"2,000",20' >"$tmp/till.csv"
expect_exit 1 "$bin" reconcile --statement "$tmp/till.csv" --channel store --shop S001 \
    --db "$repair_db"
expect_text '"malformed_row":0,'
[ "$out" = "$plain" ] && pass || fail "a till's statement reads otherwise: $out (plain: $plain)"
# What is not one amount or one instant is refused, saying why: a decimal
# point (amount_fen is fen, not yuan), groups not of three, an unquoted
# comma (a field too many), a local time of a year the zone's offset was
# not yet today's.
printf '%s\n' 'event_id,occurred_at,type,member,amount_fen,points' \
    'CR-1,2026-11-20T10:00:00+08:00,purchase,member_id:MCR1,"10,000.00",100' \
    'CR-2,2026-11-20T11:00:00+08:00,purchase,member_id:MCR2,"5,00",50' \
    'CR-3,2026-11-20T12:00:00+08:00,purchase,member_id:MCR1,2,000,20' \
    'CR-4,1991-07-01 12:00:00,purchase,member_id:MCR1,2000,20' >"$tmp/till-bad.csv"
expect_exit 1 "$bin" reconcile --statement "$tmp/till-bad.csv" --channel store --shop S001 \
    --db "$repair_db"
expect_text '"malformed_row":4,'
expect_text 'amount_fen \"10,000.00\" has a decimal point: amount_fen is whole fen'
expect_text 'amount_fen \"5,00\" is not grouped in threes'
expect_text '7 fields where the header has 6'
expect_text 'occurred_at \"1991-07-01 12:00:00\" has no offset'
# Regression (known defect 2): an Excel or Chinese till's export, its
# times with a slash date, unpadded, or without seconds, was all
# malformed rows. It reads as the statement written plainly does.
printf '%s\n' 'event_id,occurred_at,type,member,amount_fen,points' \
    'CR-1,2026/11/20 10:00,purchase,member_id:MCR1,"10,000",100' \
    'CR-2,2026-11-20T11:00,purchase,member_id:MCR2,"5,000",50' \
    'CR-3,2026/11/20 4:00+00:00,purchase,member_id:MCR1,"2,000",20' >"$tmp/excel.csv"
expect_exit 1 "$bin" reconcile --statement "$tmp/excel.csv" --channel store --shop S001 \
    --db "$repair_db"
expect_text '"malformed_row":0,'
[ "$out" = "$plain" ] && pass || fail "an Excel statement reads otherwise: $out (plain: $plain)"
# No such date, and a number with a "+" or a space (known defect 1): said so.
printf '%s\n' 'event_id,occurred_at,type,member,amount_fen,points' \
    'CR-1,2026/2/30 10:00,purchase,member_id:MCR1,10000,100' \
    'CR-2,2026-11-20T11:00:00+08:00,purchase,member_id:MCR2,5000,+50' \
    'CR-3,2026-11-20T12:00:00+08:00,purchase,member_id:MCR1," 2000",20' >"$tmp/excel-bad.csv"
expect_exit 1 "$bin" reconcile --statement "$tmp/excel-bad.csv" --channel store --shop S001 \
    --db "$repair_db"
expect_text '"malformed_row":3,'
expect_text 'occurred_at \"2026/2/30 10:00\" is no date: 2026-02 has 28 days'
expect_text 'points \"+50\" has a \"+\": write the number alone'
expect_text 'amount_fen \" 2000\" has a space around it: write the number alone'

# Reports: which one, a period, a bucket only for the pool.
expect_exit 2 "$bin" report
expect_text "settlement or pool"
expect_exit 2 "$bin" report balance --from 2026-11-01T00:00:00+08:00 --to 2026-12-01T00:00:00+08:00
expect_text "the report is settlement or pool"
expect_exit 2 "$bin" report settlement --from 2026-11-01T00:00:00+08:00
expect_text "--from and --to are required"
expect_exit 2 "$bin" report pool --from yesterday --to 2026-12-01T00:00:00+08:00
expect_text "--from is neither an RFC 3339 time (2026-11-01T00:00:00+08:00, say) nor unix seconds"
expect_exit 2 "$bin" report pool --from 2026-11-01T00:00:00+08:00 --to tomorrow
expect_text "--to is neither an RFC 3339 time (2026-12-01T00:00:00+08:00, say) nor unix seconds"
# Unix seconds as GET /v1/reports takes them: before 9999-01-01, digits only.
# And in RFC 3339 within the same bound (regression: 9999-06-01 was read,
# and refused as coming after --to; 1970-01-01T00:00:00+01:00, -3600, too).
for bad in 253370764801 +1793462400 ' 1793462400' -1 1793462400.5 9999-06-01T00:00:00Z \
    1970-01-01T00:00:00+01:00; do
    expect_exit 2 "$bin" report pool --from "$bad" --to 2026-12-01T00:00:00+08:00
    expect_text "--from is neither an RFC 3339 time"
    # Review of 279f64e: 9999-06-01T00:00:00Z is an RFC 3339 time; the
    # refusal says the range it is outside, as period close's and HTTP's do.
    expect_text "from 1970-01-01T00:00:00Z to 9999-01-01T00:00:00Z"
done
expect_exit 2 "$bin" report settlement --from 2026-11-01T00:00:00+08:00 \
    --to 2026-12-01T00:00:00+08:00 --bucket day
expect_text "--bucket is day, week or month, for the pool"
expect_exit 2 "$bin" report pool --from 2026-11-01T00:00:00+08:00 --to 2026-12-01T00:00:00+08:00 \
    --db "sqlite:$tmp/missing.db"
expect_text "no database there"
# Regression: --out emptied the file it named before the report was
# refused (a period too long, a missing database).
echo precious >"$tmp/kept.json"
expect_exit 2 "$bin" report pool --from 2026-01-01T00:00:00+08:00 --to 2040-01-01T00:00:00+08:00 \
    --out "$tmp/kept.json" --db "$import_db"
expect_exit 2 "$bin" report pool --from 2026-11-01T00:00:00+08:00 --to 2026-12-01T00:00:00+08:00 \
    --out "$tmp/kept.json" --db "sqlite:$tmp/missing.db"
expect_exit 2 "$bin" reconcile --statement "$tmp/statement.csv" --channel store \
    --out "$tmp/kept.json" --db "sqlite:$tmp/missing.db"
[ "$(cat "$tmp/kept.json")" = precious ] && pass || fail "a refused report emptied its --out file"
[ -z "$(ls "$tmp" | grep -F 'kept.json.')" ] && pass || fail "a refused report left a partial file"
# A report written through a link lands in the linked file, with its mode.
echo old >"$tmp/real.json"
chmod 640 "$tmp/real.json"
ln -s real.json "$tmp/link.json"
expect_exit 0 "$bin" report pool --from 2026-11-01T00:00:00+08:00 --to 2026-11-02T00:00:00+08:00 \
    --out "$tmp/link.json" --db "$import_db"
[ -L "$tmp/link.json" ] && [ "$(stat -c %a "$tmp/real.json")" = 640 ] &&
    grep -q '"buckets"' "$tmp/real.json" && pass ||
    fail "--out through a link: $(ls -l "$tmp/link.json" "$tmp/real.json")"
mkdir "$tmp/sub"
ln -s sub/later.json "$tmp/dangling.json" # a link to a file not made yet
expect_exit 0 "$bin" report pool --from 2026-11-01T00:00:00+08:00 --to 2026-11-02T00:00:00+08:00 \
    --out "$tmp/dangling.json" --db "$import_db"
[ -L "$tmp/dangling.json" ] && grep -q '"buckets"' "$tmp/sub/later.json" && pass ||
    fail "--out through a dangling link: $(ls -l "$tmp/dangling.json" "$tmp/sub")"
# The CSVs end with the proof and the period after their rows (the
# finance review's finding: a CSV export had neither).
expect_exit 0 "$bin" report settlement --from 2026-01-01T00:00:00+08:00 \
    --to 2030-01-01T00:00:00+08:00 --format csv --db "$import_db"
expect_text $'\ntrial_balance,balanced,,,,,,'
expect_text $'\nfrom,2026-01-01T00:00:00+08:00,,,,,,,\nto,2030-01-01T00:00:00+08:00,,,,,,,'
expect_exit 0 "$bin" report pool --from 2026-11-01T00:00:00+08:00 --to 2026-11-02T00:00:00+08:00 \
    --format csv --db "$import_db"
expect_text $'start,issued,reversed,redeemed,expired,outstanding,end,held_by_members,owed_by_members\n2026-11-01,'
expect_text $',2026-11-01,0,0\nopening_outstanding,,,,,'
expect_text $'\nbucket,day,,,,,,,\nfrom,2026-11-01T00:00:00+08:00,,,,,,,\nto,2026-11-02T00:00:00+08:00,,,,,,,'
# Regression (the finance walkthrough): report and reconcile refused
# --from/--to in unix seconds, which GET /v1/reports/... and POST
# /v1/reconciliations take. The same instants give the same report.
expect_exit 0 "$bin" report pool --from 2026-11-01T00:00:00+08:00 --to 2026-11-02T00:00:00+08:00 \
    --db "$import_db"
by_rfc3339=$out
expect_exit 0 "$bin" report pool --from 1793462400 --to 1793548800 --db "$import_db"
[ "$out" = "$by_rfc3339" ] && pass || fail "pool by unix seconds differs: $out"
expect_exit 0 "$bin" report settlement --from 2026-01-01T00:00:00+08:00 \
    --to 2030-01-01T00:00:00+08:00 --format csv --db "$import_db"
by_rfc3339=$out
expect_exit 0 "$bin" report settlement --from 1767196800 --to 1893427200 --format csv --db "$import_db"
[ "$out" = "$by_rfc3339" ] && pass || fail "settlement by unix seconds differs: $out"
expect_exit 1 "$bin" reconcile --statement "$tmp/no-shop.csv" --channel store --db "$repair_db" \
    --from 2026-11-20T00:00:00+08:00 --to 2026-11-21T00:00:00+08:00
by_rfc3339=$out
expect_exit 1 "$bin" reconcile --statement "$tmp/no-shop.csv" --channel store --db "$repair_db" \
    --from 1795104000 --to 1795190400
[ "$out" = "$by_rfc3339" ] && pass || fail "reconcile by unix seconds differs: $out"
expect_exit 2 "$bin" reconcile --statement "$tmp/no-shop.csv" --channel store --db "$repair_db" \
    --from 1795104000 --to 20261121
expect_text "--from must come before --to"
expect_exit 2 "$bin" reconcile --statement "$tmp/no-shop.csv" --channel store --db "$repair_db" \
    --to 2026-11-21
expect_text "--to is neither an RFC 3339 time (2026-12-01T00:00:00+08:00, say) nor unix seconds"
expect_exit 2 "$bin" reconcile --statement "$tmp/no-shop.csv" --channel store --db "$repair_db" \
    --from 1795104000 --to 9999-06-01T00:00:00Z
expect_text "--to is neither an RFC 3339 time (2026-12-01T00:00:00+08:00, say) nor unix seconds, from 1970-01-01T00:00:00Z to 9999-01-01T00:00:00Z"
# Regression: expire's --as-of took RFC 3339 only, while report and
# reconcile take unix seconds too; one instant is read alike by all three
# (pgw_report_time_in). An --as-of before every lot's date expires nothing.
before=$("$bin" verify --db "$import_db" 2>&1)
expect_exit 0 "$bin" expire --db "$import_db" --as-of 2026-01-01T00:00:00+08:00
by_rfc3339=$out
expect_text "expired 0 lots, 0 points, due by 2026-01-01T00:00:00+08:00"
expect_exit 0 "$bin" expire --db "$import_db" --as-of 1767196800
[ "$out" = "$by_rfc3339" ] && pass || fail "expire by unix seconds differs: $out"
# Refused as report refuses them, the database untouched; and ahead of the
# clock in unix seconds too.
for bad in 253370764801 +1767196800 ' 1767196800' -1 1767196800.5 "2026-11-24 10:00" '' \
    1970-01-01T00:00:00+01:00; do
    expect_exit 2 "$bin" expire --db "$import_db" --as-of "$bad"
    expect_text "pointsgw expire: --as-of is neither an RFC 3339 time (2026-11-24T10:00:00+08:00, say) nor unix seconds, from 1970-01-01T00:00:00Z to 9999-01-01T00:00:00Z"
done
expect_exit 2 "$bin" expire --db "$import_db" --as-of $(($(date +%s) + 240))
expect_text "--as-of is ahead of the clock"
[ "$("$bin" verify --db "$import_db" 2>&1)" = "$before" ] && pass ||
    fail "expire with a refused --as-of changed the database: $("$bin" verify --db "$import_db" 2>&1)"

# Regression (the sweep's review): one lot whose expiry failed stopped the
# run after its page, and every later run there, so the lots after it
# never expired. Its earn's count broken by hand (SQLite's file), the run
# expires the others, says what it did, names the lot, and exits 1.
if [ -z "${PGW_TEST_PG_DIR:-}" ]; then
    printf 'card,points\nEB0,10\n' >"$tmp/broken-import.csv"
    expect_exit 0 "$bin" import-balances --shop S001 --file "$tmp/broken-import.csv" \
        --db "sqlite:$tmp/broken.db"
    printf 'event_id,occurred_at,type,member,amount_fen,points\n%s\n%s\n' \
        'EB-1,2024-06-01T10:00:00+08:00,purchase,member_id:MB1,10000,100' \
        'EB-2,2024-06-02T10:00:00+08:00,purchase,member_id:MB2,5000,50' >"$tmp/broken.csv"
    expect_exit 1 "$bin" reconcile --statement "$tmp/broken.csv" --channel store --shop S001 \
        --db "sqlite:$tmp/broken.db" --repair --new-channel --out "$tmp/broken.json"
    expect_text '"created":2,'
    sqlite3 "$tmp/broken.db" "UPDATE earns SET expired = 9223372036854775807 WHERE member = 'MB1'"
    expect_exit 1 "$bin" expire --db "sqlite:$tmp/broken.db" --as-of $(($(date +%s) - 60))
    expect_text "expired 1 lots, "
    expect_text "pointsgw expire: 1 of the due holds and lots failed and are left due (the rest \
expired); the first, lot "
    # The store's words: a CLI run's command answered no request (it said "answered 503"),
    # and its cause is on this stderr, no gateway's log (it said "the gateway's log says why").
    expect_text "pointsgw: a command failed in storage, nothing written: "
    expect_text "storage failed, nothing was written (stderr says why)"
    [[ "$out" != *"gateway's log"* ]] && pass || fail "expire names a gateway's log: $out"
    expect_exit 1 "$bin" expire --db "sqlite:$tmp/broken.db" --as-of $(($(date +%s) - 60))
    expect_text "expired 0 lots, 0 points, due by "
    expect_text "1 of the due holds and lots failed"
fi

# A database that does not answer is a problem (1), not bad usage (2).
expect_exit 1 "$bin" report pool --from 2026-11-01T00:00:00+08:00 --to 2026-12-01T00:00:00+08:00 \
    --db "postgresql://pgw@127.0.0.1:1/none"
expect_text "cannot connect"
expect_exit 1 "$bin" reconcile --statement "$tmp/statement.csv" --channel store \
    --db "postgresql://pgw@127.0.0.1:1/none"

# backup (SQLite): a copy that verifies, or nothing. Over HTTP while
# serving: http_api.py's test_backup.
expect_exit 0 "$bin" backup --help
expect_text "usage: pointsgw backup --out FILE"
expect_exit 2 "$bin" backup --db "sqlite:$tmp/import.db"
expect_text "--out FILE is required"
if [ -z "${PGW_TEST_PG_DIR:-}" ]; then
    expect_exit 0 "$bin" backup --db "$import_db" --out "$tmp/copy.db"
    expect_text "OK: the hash chain is intact"
    expect_exit 0 "$bin" verify --db "sqlite:$tmp/copy.db"
    expect_text "transfers:  4 checked"
    kept=$(sha256sum <"$tmp/copy.db")
    for bad in missing theirs; do
        expect_exit 2 "$bin" backup --db "sqlite:$tmp/$bad.db" --out "$tmp/copy.db"
        expect_text "$tmp/$bad.db: no"
    done
    [ "$(sha256sum <"$tmp/copy.db")" = "$kept" ] && [ -z "$(ls "$tmp" | grep partial)" ] && pass ||
        fail "a refused backup changed the last copy or left a partial file: $(ls "$tmp")"
    # Regression: a database restored from sqlite3's .dump lost its schema
    # version and was called another program's.
    python3 -c "
import sqlite3, sys
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
dst.executescript(';'.join(src.iterdump()))" "$tmp/copy.db" "$tmp/dumped.db"
    for args in verify "backup --out $tmp/copy2.db"; do
        expect_exit 2 "$bin" $args --db "sqlite:$tmp/dumped.db"
        expect_text "no schema version: a copy restored from sqlite3's .dump loses it"
    done
    # Regression (review notes): a damaged source was "database or disk is
    # full" or "unable to open database: <the copy>", which sent the
    # operator to the disk, or was copied, damage and all, over the last
    # good copy and called fine. Each names the source, exit 1, and leaves
    # the last copy as it was and nothing beside it.
    python3 - "$tmp/copy.db" "$tmp" <<'PY'
import hashlib, os, sqlite3, struct, sys
good, tmp = sys.argv[1], sys.argv[2]
def damaged(name, first_id, cell, offset, byte):
    """A copy of the good database with a table `pad` of five rows, one
    byte of whose page (cell number `cell`, `offset` bytes in) is `byte`."""
    path = os.path.join(tmp, "dmg-%s.db" % name)
    db = sqlite3.connect(path)
    sqlite3.connect(good).backup(db)
    db.execute("CREATE TABLE pad (id INTEGER PRIMARY KEY, b BLOB)")
    db.executemany("INSERT INTO pad VALUES (?, ?)",
                   [(first_id + i, hashlib.sha256(b"%d" % i).digest() * 3) for i in range(5)])
    db.commit()
    page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'pad'").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.execute("PRAGMA journal_mode = DELETE")
    db.close()
    with open(path, "r+b") as f:
        f.seek((page - 1) * size)
        head = f.read(size)
        at = struct.unpack(">H", head[8 + 2 * cell:10 + 2 * cell])[0]
        f.seek((page - 1) * size + at + offset)
        f.write(bytes([byte]))
damaged("full", 3000000, 4, 0, 0x85)  # a row's length misread: "disk is full"
damaged("order", 1, 2, 1, 9)          # rowids out of order: VACUUM INTO copied it
with open(good, "rb") as f:           # the schema page garbage: "unable to open <the copy>"
    head = bytearray(f.read())
size = int.from_bytes(head[16:18], "big")
head[100:size] = (b"garbage!" * size)[:size - 100]
with open(os.path.join(tmp, "dmg-schema.db"), "wb") as f:
    f.write(head)
with open(os.path.join(tmp, "dmg-text.db"), "w") as f:
    f.write("not a database at all\n" * 50)
PY
    for dmg in full order schema text; do
        expect_exit 1 "$bin" backup --db "sqlite:$tmp/dmg-$dmg.db" --out "$tmp/copy.db"
        expect_text "$tmp/dmg-$dmg.db is damaged or not a SQLite database"
        [[ "$out" != *"disk is full"* && "$out" != *"unable to open"* ]] && pass ||
            fail "backup of a damaged database blamed the disk or the copy: $out"
        [ "$(sha256sum <"$tmp/copy.db")" = "$kept" ] && [ -z "$(ls "$tmp" | grep partial)" ] && pass ||
            fail "backup of a damaged database ($dmg) changed the last copy or left a partial file: $(ls "$tmp")"
    done
    # Regression (review notes): --out naming a link (into a backup volume)
    # replaced the link with a file beside it, and the volume kept last
    # night's copy. The copy goes where the link points, made beside the
    # file it names and renamed over it (atomic there), the link kept.
    mkdir "$tmp/vol"
    echo "last night's copy" >"$tmp/vol/pointsgw.db"
    ln -s vol/pointsgw.db "$tmp/to-vol.db"
    ln -s "$tmp/vol/later.db" "$tmp/dangling.db" # a copy not made yet
    ln -s to-vol.db "$tmp/chain.db"               # a link to the link
    for link in to-vol dangling chain; do
        expect_exit 0 "$bin" backup --db "$import_db" --out "$tmp/$link.db"
        expect_text "backup: $tmp/$link.db -> $(cd "$tmp/vol" && pwd -P)/"
        expect_text "OK: the hash chain is intact"
    done
    [ -L "$tmp/to-vol.db" ] && [ -L "$tmp/dangling.db" ] && [ -L "$tmp/chain.db" ] && pass ||
        fail "backup replaced a link: $(ls -l "$tmp/to-vol.db" "$tmp/dangling.db" "$tmp/chain.db")"
    for f in pointsgw later; do
        expect_exit 0 "$bin" verify --db "sqlite:$tmp/vol/$f.db"
        [ "$(stat -c %a "$tmp/vol/$f.db")" = 600 ] && pass || fail "the copy in vol/$f.db is not 0600"
    done
    [ -z "$(ls "$tmp" "$tmp/vol" | grep partial)" ] && pass || fail "a partial file was left: $(ls "$tmp" "$tmp/vol")"
    # A failed copy through the link leaves the file it names as it was.
    kept=$(sha256sum <"$tmp/vol/pointsgw.db")
    expect_exit 1 "$bin" backup --db "sqlite:$tmp/dmg-order.db" --out "$tmp/to-vol.db"
    [ -L "$tmp/to-vol.db" ] && [ "$(sha256sum <"$tmp/vol/pointsgw.db")" = "$kept" ] &&
        [ -z "$(ls "$tmp" "$tmp/vol" | grep partial)" ] && pass ||
        fail "a failed backup through a link changed it or its file: $(ls -l "$tmp" "$tmp/vol")"
    # A link naming the database's own -wal is the database's: refused.
    ln -s import.db-wal "$tmp/to-wal.db"
    expect_exit 2 "$bin" backup --db "$import_db" --out "$tmp/to-wal.db"
    expect_text "is the database itself or one of its files"
    # So is serve's lock file beside it: renamed over, a second serve of
    # the database could start (the review of 44b4ca3).
    expect_exit 2 "$bin" backup --db "$import_db" --out "$tmp/import.db-serve.lock"
    expect_text "is the database itself or one of its files"
    # And its nonces' file: the next serve would read the copy as nonces,
    # find it no such file and remove it.
    expect_exit 2 "$bin" backup --db "$import_db" --out "$tmp/import.db-nonces"
    expect_text "is the database itself or one of its files"
    # Nor the name serve writes them under first (R5): a clean stop
    # removed a copy there, silently, on its way to -nonces.
    expect_exit 2 "$bin" backup --db "$import_db" --out "$tmp/import.db-nonces.new"
    expect_text "is the database itself or one of its files"
    # Regression (review notes): --out naming a folder (or a link to one)
    # copied the whole database before failing at the rename.
    mkdir "$tmp/folder-out"
    ln -s folder-out "$tmp/to-folder"
    for out in "$tmp/folder-out" "$tmp/to-folder"; do
        expect_exit 2 "$bin" backup --db "$import_db" --out "$out"
        expect_text "is a folder: --out names the copy's file"
    done
    [ -z "$(ls "$tmp" "$tmp/folder-out" | grep partial)" ] && pass ||
        fail "a backup onto a folder left a partial file: $(ls "$tmp" "$tmp/folder-out")"
    # Regression: a copy whose pages were fine but whose ledger failed
    # `verify` (the live log tampered with: a broken chain, or a balance its
    # lots do not add up to) was renamed over the last good copy before
    # verify ran; exit 1, and the good copy was gone. Now it replaces
    # nothing: exit 1, the reason, the last copy (through a link too) as it
    # was and nothing beside it.
    clone() {
        python3 -c "import sqlite3, sys
sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" "$tmp/import.db" "$tmp/$1.db"
    }
    alter() {
        python3 -c "import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); db.execute(sys.argv[2]); db.commit()" "$tmp/$1.db" "$2"
    }
    clone tampered-chain
    clone tampered-lots
    expect_exit 0 "$bin" backup --db "sqlite:$tmp/tampered-chain.db" --out "$tmp/good.db"
    expect_exit 0 "$bin" backup --db "sqlite:$tmp/tampered-chain.db" --out "$tmp/to-vol.db"
    good=$(sha256sum <"$tmp/good.db")
    vol=$(sha256sum <"$tmp/vol/pointsgw.db")
    alter tampered-chain 'UPDATE transfers SET points = points + 1 WHERE id = 2'
    alter tampered-lots 'UPDATE lots SET left_points = left_points - 1 WHERE id = (SELECT min(id) FROM lots)'
    # Each case: the database, --out, the file kept (a link's: where it
    # points), what verify finds.
    for case in "tampered-chain good.db good.db BROKEN at transfer 2" \
        "tampered-lots good.db good.db BROKEN: member" \
        "tampered-chain to-vol.db vol/pointsgw.db BROKEN at transfer 2"; do
        read -r db copy kept_file broken <<<"$case"
        expect_exit 1 "$bin" backup --db "sqlite:$tmp/$db.db" --out "$tmp/$copy"
        expect_text "$broken"
        expect_text "the copy does not verify"
        expect_text "$tmp/$kept_file was left as it was"
    done
    [ "$(sha256sum <"$tmp/good.db")" = "$good" ] && [ -L "$tmp/to-vol.db" ] &&
        [ "$(sha256sum <"$tmp/vol/pointsgw.db")" = "$vol" ] && pass ||
        fail "a backup that failed verify replaced the last good copy: $(ls -l "$tmp" "$tmp/vol")"
    [ -z "$(ls "$tmp" "$tmp/vol" | grep -E 'partial|failed')" ] && pass ||
        fail "a backup that failed verify left a file beside the copy: $(ls "$tmp" "$tmp/vol")"
    # Regression (the finance review): verify of a broken chain printed
    # "transfers: 0 checked" and a chain head of zeros above the break.
    expect_exit 1 "$bin" verify --db "sqlite:$tmp/tampered-chain.db"
    expect_text "transfers:  1 checked before the break"
    expect_text "chain head: - (the chain breaks before it)"
    for f in good.db vol/pointsgw.db; do
        expect_exit 0 "$bin" verify --db "sqlite:$tmp/$f"
        expect_text "OK: the hash chain is intact"
    done
    # A path whose copy SQLite could not name (FILE.partial-XXXXXX-journal
    # over 512 bytes) is refused before copying, not "unable to open".
    long="$tmp/$(printf 'l%.0s' {1..200})/$(printf 'l%.0s' {1..200})"
    mkdir -p "$long"
    long="$long/$(printf 'l%.0s' $(seq $((490 - ${#long} - 1))))"
    expect_exit 2 "$bin" backup --db "$import_db" --out "$long"
    expect_text "the path is too long"
    expect_exit 0 "$bin" backup --db "$import_db" --out "${long%l}"
    [ "$(ls "${long%/*}")" = "$(basename "${long%l}")" ] && pass ||
        fail "backups at the path bound left: $(ls "${long%/*}")"
    # An older schema's copy is not verified here (opening it would migrate
    # it): copied, said so, exit 0, as before.
    clone old
    alter old 'PRAGMA user_version = 25'
    expect_exit 0 "$bin" backup --db "sqlite:$tmp/old.db" --out "$tmp/good.db"
    expect_text "not verified: schema version 25, this pointsgw's is"
fi

# member show: bad usage and a missing database are exit 2 (a member over
# a live log is in the HTTP integration test).
expect_exit 2 "$bin" member
expect_text "usage: member show IDENTITY"
expect_exit 2 "$bin" member show fax:123
expect_exit 2 "$bin" member show phone:13800138000 --db "sqlite:$tmp/missing.db"
expect_text "no database there"

# period close / show: finance closes a period, and no write dated before
# the close is taken any more (README, Command line: `period close`).
expect_exit 0 "$bin" period --help
expect_text "usage: pointsgw period close --before T"
expect_exit 2 "$bin" period
expect_text "say which: close --before T, or show"
expect_exit 2 "$bin" period show --db "sqlite:$tmp/missing.db"
expect_exit 2 "$bin" period close --before 1767196800 --db "sqlite:$tmp/missing.db"
[ ! -e "$tmp/missing.db" ] && pass || fail "period close made a database"
period_db="sqlite:$tmp/period.db"
if [ -n "${PGW_TEST_PG_DIR:-}" ]; then
    pg_dbs+=("pgwc_period_${$}_$suffix")
    psql -qX "$admin" -c "CREATE DATABASE pgwc_period_${$}_$suffix STRATEGY FILE_COPY"
    period_db="${admin%/*}/pgwc_period_${$}_$suffix"
fi
expect_exit 0 "$bin" import-balances --shop S002 --file "$tmp/one.csv" --db "$period_db"
expect_exit 0 "$bin" period show --db "$period_db"
expect_text "open: no period was ever closed"
# A purchase of 2024 posted late (a repair): its points lapsed at the end
# of 2025 (year_end, 1 year) and no sweep has expired them yet.
printf 'event_id,occurred_at,type,member,amount_fen,points\n%s\n' \
    'OLD-1,2024-06-01T10:00:00+08:00,purchase,member_id:MP1,10000,100' >"$tmp/old.csv"
expect_exit 1 "$bin" reconcile --statement "$tmp/old.csv" --channel store --shop S001 \
    --db "$period_db" --repair --new-channel --out "$tmp/old.json"
close=$(($(date +%s) - 86400))
# The finance walkthrough: the refusals named the times in unix seconds;
# they are said in the mall's zone, as finance writes a close (and as
# expire's refusal says them), the --as-of to copy included.
shanghai() { TZ=Asia/Shanghai date -d "@$1" +%Y-%m-%dT%H:%M:%S%:z; }
expect_exit 1 "$bin" period close --before "$close" --db "$period_db"
expect_text "work dated before $(shanghai "$close") is not written yet (lot "
expect_text " is due since 2026-01-01T00:00:00+08:00 with "
expect_text "run pointsgw expire --as-of $(shanghai $((close - 1))) first"
expect_exit 0 "$bin" period show --db "$period_db"
expect_text "open: no period was ever closed"
expect_exit 0 "$bin" expire --as-of $((close - 1)) --db "$period_db"
expect_text "expired 1 lots, "
expect_exit 0 "$bin" period close --before "$close" --db "$period_db"
expect_text "closed: what is dated before "
expect_exit 0 "$bin" period show --db "$period_db"
expect_text "closed before: "
expect_text "($close)"
expect_exit 0 "$bin" period close --before "$close" --db "$period_db"
expect_text "already: nothing changed"
# A close only moves later, never past the clock; --before is required.
expect_exit 2 "$bin" period close --before $((close - 1)) --db "$period_db"
expect_text "the period is closed before $(shanghai "$close") already; a close only moves \
later, $(shanghai $((close - 1))) is earlier: nothing changed"
ahead=$(($(date +%s) + 240))
expect_exit 2 "$bin" period close --before $ahead --db "$period_db"
expect_text "a period closes before a moment already past ($(shanghai $ahead) is ahead of the clock)"
expect_exit 2 "$bin" period close --db "$period_db"
expect_text "--before is required"
expect_exit 2 "$bin" period close --before "2026-11-24 10:00" --db "$period_db"
# Regression: an RFC 3339 --before outside the bound of unix seconds was
# read (-3600 then refused as "-3600 is not one", in unix seconds).
for bad in 1970-01-01T00:00:00+01:00 9999-06-01T00:00:00Z; do
    expect_exit 2 "$bin" period close --before "$bad" --db "$period_db"
    expect_text "pointsgw period close: --before is unreadable, as an RFC 3339 time \
(2026-12-01T00:00:00+08:00, say) or unix seconds, from 1970-01-01T00:00:00Z to 9999-01-01T00:00:00Z"
done
expect_exit 0 "$bin" period show --db "$period_db"
expect_text "($close)"
# An expiry dated before the close is refused, and so is an event (here a
# repair's row); the one dated after is taken.
expect_exit 2 "$bin" expire --as-of $((close - 60)) --db "$period_db"
# In the mall's zone, as finance wrote the close, not in unix seconds.
expect_text "the period before $(shanghai "$close") is closed: an expiry as of \
$(shanghai $((close - 60))) would be dated in it; expire as of $(shanghai "$close") or later"
late=$(date -d "@$((close - 3600))" +%Y-%m-%dT%H:%M:%S%:z)
open_at=$(date -d "@$((close + 60))" +%Y-%m-%dT%H:%M:%S%:z)
printf 'event_id,occurred_at,type,member,amount_fen,points\n%s\n%s\n%s\n' \
    'OLD-1,2024-06-01T10:00:00+08:00,purchase,member_id:MP1,10000,100' \
    "LATE-1,$late,purchase,member_id:MP1,5000,50" \
    "OPEN-1,$open_at,purchase,member_id:MP1,5000,50" >"$tmp/late.csv"
expect_exit 1 "$bin" reconcile --statement "$tmp/late.csv" --channel store --shop S001 \
    --db "$period_db" --repair --out "$tmp/late.json"
expect_text "event LATE-1: the event (its occurred_at) is dated "
expect_text "in the period finance closed before "
expect_text "date it in the open period"
expect_text '"created":1,'
expect_text '"failed":1'
expect_exit 0 "$bin" verify --db "$period_db"
# The most closes verify reads (36,500: a century of daily ones) made, the
# next is exit 1, nothing changed: T is fine, the database holds no more.
# The 36,499 staged before the one made (dated 1970) change no close in force.
if [ -n "${PGW_TEST_PG_DIR:-}" ]; then
    psql -qX -v ON_ERROR_STOP=1 "$period_db" \
        -c "INSERT INTO period_closes SELECT t, 0, 0 FROM generate_series(1, 36499) t"
else
    python3 -c "import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executemany('INSERT INTO period_closes VALUES (?, 0, 0)', ((t,) for t in range(1, 36500)))
db.commit()" "$tmp/period.db"
fi
expect_exit 1 "$bin" period close --before $((close + 60)) --db "$period_db"
expect_text "holds 36500 closes of periods, the most verify reads"
expect_exit 0 "$bin" period show --db "$period_db"
expect_text "($close)"

# Finance review of odd statements (s59F), on the period test's log: its
# OPEN-1, dated an hour past the close, is the one event in [close, +1 h).
odd_from=$close
odd_to=$((close + 3600))
# Regression: a NUL byte ended the field, "OPEN-1<NUL>x" read as OPEN-1 and
# matched it: the row is malformed, and OPEN-1 is missing from the statement.
printf 'event_id,occurred_at,type,member,amount_fen,points\nOPEN-1\0x,%s,purchase,member_id:MP1,5000,50\n' \
    "$open_at" >"$tmp/nul.csv"
expect_exit 1 "$bin" reconcile --statement "$tmp/nul.csv" --channel store --shop S001 \
    --from "$odd_from" --to "$odd_to" --db "$period_db"
expect_text '"matched":0,'
expect_text '"malformed_row":1,'
expect_text '"missing_in_statement":1,'
expect_text 'field 1 has a NUL byte'
printf 'event_id,occurred_at,type,member,amount_fen,points\nOPEN-1,%s,purchase,member_id:MP1,5000,50\n' \
    "$open_at" >"$tmp/clean.csv"
expect_exit 0 "$bin" reconcile --statement "$tmp/clean.csv" --channel store --shop S001 \
    --from "$odd_from" --to "$odd_to" --db "$period_db"
expect_text '"matched":1,'
# Regression: a statement whose lines end in a bare CR (a classic Mac CSV)
# was refused as "column points is missing (is "points" it, misspelt?)".
tr '\n' '\r' <"$tmp/clean.csv" >"$tmp/mac.csv"
expect_exit 2 "$bin" reconcile --statement "$tmp/mac.csv" --channel store --shop S001 \
    --from "$odd_from" --to "$odd_to" --db "$period_db"
expect_text 'line 1: the header has a line break that is a bare CR'
# Regression: a header of more columns than a row may have said "more than
# 32 fields" alone.
{
    printf 'event_id,occurred_at,type,member,amount_fen,points'
    printf ',till_%d' $(seq 30)
    printf '\n'
} >"$tmp/wide.csv"
expect_exit 2 "$bin" reconcile --statement "$tmp/wide.csv" --channel store --shop S001 \
    --from "$odd_from" --to "$odd_to" --db "$period_db"
expect_text 'line 1, the header: more than 32 fields (a statement has at most 32 columns'
# Regression (finance's review): --out naming what the command reads (the
# statement, through a link too; the configuration; the database) replaced
# it with the report. Refused, exit 2, each left as it was.
cp "$tmp/clean.csv" "$tmp/keep.csv"
ln -sf "$tmp/keep.csv" "$tmp/keep-link.csv"
expect_exit 2 "$bin" reconcile --statement "$tmp/keep.csv" --channel store --shop S001 \
    --from "$odd_from" --to "$odd_to" --out "$tmp/keep-link.csv" --db "$period_db"
expect_text "--out $tmp/keep-link.csv is the statement ($tmp/keep.csv): the output would replace it"
cmp -s "$tmp/clean.csv" "$tmp/keep.csv" && pass || fail "--out over the statement changed it"
cp "$src/config/pointsgw.example.json" "$tmp/keep.json"
expect_exit 2 "$bin" report settlement --from "$odd_from" --to "$odd_to" \
    --config "$tmp/keep.json" --out "$tmp/keep.json" --db "$period_db"
expect_text "is the configuration"
cmp -s "$src/config/pointsgw.example.json" "$tmp/keep.json" && pass ||
    fail "--out over the configuration changed it"
if [ -z "${PGW_TEST_PG_DIR:-}" ]; then
    cp "$tmp/period.db" "$tmp/keep.db"
    expect_exit 2 "$bin" report pool --from "$odd_from" --to "$odd_to" --out "$tmp/keep.db" \
        --db "sqlite:$tmp/keep.db"
    expect_text "is the database"
    cmp -s "$tmp/period.db" "$tmp/keep.db" && pass || fail "--out over the database changed it"
fi
# Regression: a statement piped in was refused as the disk failing (exit 1,
# "rewinding a CSV file: Illegal seek"); it is what was given: exit 2.
expect_exit 2 "$bin" reconcile --statement <(cat "$tmp/clean.csv") --channel store --shop S001 \
    --from "$odd_from" --to "$odd_to" --db "$period_db"
expect_text 'is not a file that can be read twice (a pipe?): save it to a file'
expect_exit 2 "$bin" reconcile --statement "$tmp" --channel store --shop S001 --db "$period_db"
expect_text 'is a directory: name the CSV file'

# --- An operator's walkthrough on a fresh machine (output, limits, signals) ---
# Regression: stdout failing (a full disk under `keys add > key.txt`, a
# report redirected into a full volume) was not noticed: every command said
# nothing and exited 0, its output lost, a key shown to nobody. Each now
# names the failure, exit 1 (or the exit it had: a verify finding a break
# stays 1, bad usage 2).
op_dir=$(mktemp -d -p "$scratch")
printf 'card,phone,points\n88001,,100\n' >"$op_dir/one.csv"
expect_exit 0 "$bin" import-balances --shop S001 --file "$op_dir/one.csv" --db "sqlite:$op_dir/op.db"
# Regression: import-balances made a new database without a word, and
# readable by every user (0644 under the usual umask): a relative "db"
# run from another folder filled a new ledger there, and the file held
# members' sealed identities, which serve's databases and backups keep
# 0600. It says where, as serve does, and makes it 0600.
expect_text "pointsgw import-balances: created a new database at $(realpath "$op_dir")/op.db"
[ "$(stat -c %a "$op_dir/op.db")" = 600 ] && pass ||
    fail "import-balances made its database mode $(stat -c %a "$op_dir/op.db"), wanted 600"
printf 'card,phone,points\n88002,,100\n' >"$op_dir/two.csv"
expect_exit 0 "$bin" import-balances --shop S001 --file "$op_dir/two.csv" --db "sqlite:$op_dir/op.db"
[[ "$out" != *"created a new database"* ]] && pass || fail "a second import said it created: $out"
if [ -w /dev/full ]; then
    for args in "keys add --scope admin --config config/pointsgw.example.json" \
        "verify --db sqlite:$op_dir/op.db" "--version" "--help" "verify --help" \
        "check-config --config config/pointsgw.example.json" \
        "member show card:S001:88001 --db sqlite:$op_dir/op.db"; do
        # shellcheck disable=SC2086 # the words of $args are the arguments
        out=$("$bin" $args 2>&1 >/dev/full)
        got=$?
        [ "$got" -eq 1 ] && pass || fail "'$args >/dev/full' exited $got, wanted 1: $out"
        expect_text "cannot write its output to stdout: No space left on device"
    done
    out=$("$bin" keys add --scope nobody-knows --config config/pointsgw.example.json 2>&1 >/dev/full)
    got=$?
    [ "$got" -eq 2 ] && pass || fail "bad usage into /dev/full exited $got, wanted 2: $out"
fi
# Regression: `--version` took any argument after it, and said its version.
expect_exit 2 "$bin" --version --bogus
expect_text "unknown argument '--bogus'"
expect_exit 2 "$bin" version now
expect_text "unknown argument 'now'"
# Regression: a file-size limit (ulimit -f, systemd's LimitFSIZE) killed
# the command with SIGXFSZ at the first write past it: a backup died
# leaving its .partial file and journal beside FILE, which README says a
# failed run never does. The write now fails as a full disk's does: exit 1,
# stderr says so, nothing left beside FILE, the database as it was.
if [ -z "${PGW_TEST_PG_DIR:-}" ]; then
    mkdir "$op_dir/bk"
    before=$(cksum <"$op_dir/op.db")
    out=$(ulimit -f 40 && "$bin" backup --db "sqlite:$op_dir/op.db" --out "$op_dir/bk/copy.db" 2>&1)
    got=$?
    [ "$got" -eq 1 ] && pass || fail "backup past a file-size limit exited $got, wanted 1: $out"
    expect_text "pointsgw backup: "
    left=$(ls -A "$op_dir/bk")
    [ -z "$left" ] && pass || fail "backup past a file-size limit left: $left"
    [ "$(cksum <"$op_dir/op.db")" = "$before" ] && pass || fail "backup changed the database"
    expect_exit 0 "$bin" verify --db "sqlite:$op_dir/op.db"
    # serve's request log (stdout) appended to a file at such a limit: the
    # next request's line killed serve (exit 153). It serves on, the lines
    # counted lost, as README says of a failing stdout, and stops cleanly.
    head -c $((4000 * 1024 - 300)) /dev/zero >"$op_dir/requests.log"
    (ulimit -f 4000 && exec "$bin" serve --config config/pointsgw.example.json         --listen 127.0.0.1:0 --db "sqlite:$op_dir/op.db"         >>"$op_dir/requests.log" 2>"$op_dir/serve.err") &
    lim_pid=$!
    lim_port=
    for _ in $(seq 200); do # 20 s: only a hang's bound
        lim_port=$(sed -n 's/.*listening on .* (port \([0-9]*\),.*/\1/p' "$op_dir/serve.err")
        [ -n "$lim_port" ] && break
        kill -0 "$lim_pid" 2>/dev/null || break
        sleep 0.1
    done
    for _ in $(seq 10); do curl -s -o /dev/null "http://127.0.0.1:$lim_port/healthz"; done
    dropped=$(curl -sf "http://127.0.0.1:$lim_port/metrics" |
        sed -n 's/^pgw_request_log_dropped_lines_total \([0-9]*\)$/\1/p')
    [ "${dropped:-0}" -gt 0 ] && pass ||
        fail "serve past a file-size limit: ${dropped:-no} lines counted lost: $(cat "$op_dir/serve.err")"
    kill -TERM "$lim_pid"
    wait "$lim_pid"
    expect_stopped $? "$(cat "$op_dir/serve.err")"
fi
# Regression: quote's refusal of a file's content named no file, so a
# mistake in the context read as one in the event: "pointsgw quote: $:
# expected an object, got an array". Each names the file it is about.
echo '[]' >"$op_dir/list.json"
expect_exit 2 "$bin" quote --event "$op_dir/list.json" --config config/pointsgw.example.json
expect_text "pointsgw quote: $op_dir/list.json: \$: expected an object, got an array"
expect_exit 2 "$bin" quote --event config/demo/purchase.json --context "$op_dir/list.json" \
    --config config/pointsgw.example.json
expect_text "pointsgw quote: $op_dir/list.json: \$: expected an object, got an array"
expect_exit 2 "$bin" quote --event config/demo/purchase.json --context config/demo/purchase.json \
    --config config/pointsgw.example.json
expect_text "pointsgw quote: config/demo/purchase.json: \$."
# Regression: a NUL byte in a field cut it short: "880<NUL>01,,5" credited
# card 880 with 5 points, exit 0. A UTF-16 file (Excel's "Unicode Text", a
# NUL in every other byte) was refused for an unknown column. The file is
# refused whole, naming the line, exit 2, nothing imported (no database made).
printf 'card,phone,points\n88001,,1\n880\00001,,5\n' >"$op_dir/nul.csv"
expect_exit 2 "$bin" import-balances --shop S001 --file "$op_dir/nul.csv" --db "sqlite:$op_dir/nul.db"
expect_text "pointsgw import-balances: $op_dir/nul.csv: line 3 holds a NUL byte: not a UTF-8 text file"
[ ! -e "$op_dir/nul.db" ] && pass || fail "a file refused whole made a database"
printf 'card,phone,points\n88001,,1\n' | iconv -f utf-8 -t utf-16le >"$op_dir/utf16.csv"
expect_exit 2 "$bin" import-balances --shop S001 --file "$op_dir/utf16.csv" --db "sqlite:$op_dir/op.db"
expect_text "line 1 holds a NUL byte: not a UTF-8 text file (UTF-16, "
# Regression: a reconcile or report stopped by a signal (Ctrl-C, SIGTERM,
# a hang-up) while writing --out FILE left FILE.partial-XXXXXX beside it,
# one more each stopped run. A statement that is a FIFO no one writes holds
# reconcile after it made the partial file, the moment to stop it at.
# stop_at_partial SIG FILE KEPT CMD...: CMD (the binary, then its command)
# in the background, stopped by SIG once it has made FILE.partial-XXXXXX,
# in the middle of writing FILE. It must have made that file, end as SIG
# ends it (128 + SIG) and leave nothing in FILE's folder but KEPT (a name
# there, "" for none).
stop_at_partial() {
    local sig=$1 file=$2 kept=$3 pid got left
    shift 3
    local name=$2
    "$@" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1000); do # 10 s: only a hang's bound
        compgen -G "$file.partial-*" >/dev/null && break
        sleep 0.01
    done
    compgen -G "$file.partial-*" >/dev/null && pass || fail "$name made no partial file to stop it at"
    kill "-$sig" "$pid"
    wait "$pid" 2>/dev/null # not bash's "Hangup" line for its job
    got=$?
    [ "$got" -eq $((128 + $(kill -l "$sig"))) ] && pass ||
        fail "$name stopped by SIG$sig exited $got, wanted $((128 + $(kill -l "$sig")))"
    left=$(cd "${file%/*}" && ls -A | grep -vxF -e "$kept")
    [ -z "$left" ] && pass || fail "$name stopped by SIG$sig left: $left"
}
for sig in TERM HUP; do
    mkdir "$op_dir/sig" && mkfifo "$op_dir/sig/statement.fifo"
    stop_at_partial "$sig" "$op_dir/sig/report.json" statement.fifo \
        "$bin" reconcile --statement "$op_dir/sig/statement.fifo" --channel store \
        --db "sqlite:$op_dir/op.db" --config config/pointsgw.example.json \
        --out "$op_dir/sig/report.json"
    rm -rf "$op_dir/sig"
done
rm -rf "$op_dir"
# --- end of the operator's walkthrough ---

# --- Data safety, SQLite (s60B): a backup stopped, a full disk, a damaged file ---
safe_dir=$(mktemp -d -p "$scratch")
printf 'card,phone,points\n77001,,100\n77002,,200\n' >"$safe_dir/two.csv"
if [ -z "${PGW_TEST_PG_DIR:-}" ]; then
    expect_exit 0 "$bin" import-balances --shop S001 --file "$safe_dir/two.csv" \
        --db "sqlite:$safe_dir/safe.db" --config config/pointsgw.example.json
    cp "$safe_dir/safe.db" "$safe_dir/small.db" # before the padding below
    # Regression: a backup stopped by a signal (a job's timeout, Ctrl-C, a
    # hang-up) while it copied left FILE.partial-XXXXXX and its journal
    # beside FILE, one more each stopped run. 16 MB of padding makes the
    # copy last long enough to be stopped in the middle: the stop comes
    # once the partial file is there.
    python3 -c "import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute('PRAGMA synchronous = OFF')
db.execute('CREATE TABLE pad(b BLOB)')
db.executemany('INSERT INTO pad VALUES (zeroblob(1048576))', [()] * 16)
db.commit()" "$safe_dir/safe.db"
    mkdir "$safe_dir/bk"
    echo 'the last good copy' >"$safe_dir/bk/copy.db"
    for sig in TERM HUP; do
        stop_at_partial "$sig" "$safe_dir/bk/copy.db" copy.db \
            "$bin" backup --db "sqlite:$safe_dir/safe.db" --out "$safe_dir/bk/copy.db"
        [ "$(cat "$safe_dir/bk/copy.db")" = 'the last good copy' ] && pass ||
            fail "backup stopped by SIG$sig changed the last copy"
        rm -f "$safe_dir/bk/copy.db.partial-"* # the next run's check starts clean
    done
    # Regression: a database opened where no byte more may be written (a
    # full disk; a file-size limit, ulimit -f, here: SQLite's -shm index
    # cannot grow to its 32 KiB) was "disk I/O error" alone, which sends an
    # operator looking for a hardware fault. Each says what is wrong and
    # what to do, the database as it was.
    rm -f "$safe_dir/small.db-wal" "$safe_dir/small.db-shm"
    before=$(cksum <"$safe_dir/small.db")
    for args in "verify" "expire" "member show card:S001:77001" "period show"; do
        # shellcheck disable=SC2086 # the words of $args are the arguments
        out=$(ulimit -f 16 && "$bin" $args --db "sqlite:$safe_dir/small.db" \
            --config config/pointsgw.example.json 2>&1)
        expect_text "(a file would grow past this process's file-size limit); raise the limit (ulimit -f"
        rm -f "$safe_dir/small.db-wal" "$safe_dir/small.db-shm"
    done
    [ "$(cksum <"$safe_dir/small.db")" = "$before" ] && pass ||
        fail "a command at a file-size limit changed the database"
    # A real full disk where a private mount may be made (root, unshare):
    # a 1 MiB tmpfs, filled.
    if [ "$(id -u)" -eq 0 ] && unshare -m true 2>/dev/null; then
        out=$(unshare -m bash -c 'mount -t tmpfs -o size=1m tmpfs "$1" || exit 99
            cp "$2" "$1/full.db" && { head -c 2M /dev/zero >"$1/fill"; true; } 2>/dev/null
            before=$(cksum <"$1/full.db")
            "$3" verify --db "sqlite:$1/full.db" 2>&1
            [ "$(cksum <"$1/full.db")" = "$before" ] || echo "the database changed"
            "$3" backup --db "sqlite:$2" --out "$1/copy.db" 2>&1
            echo "backup exit $?; left: $(cd "$1" && ls -A | grep -v "^full.db\|^fill")"' \
            _ "$safe_dir/bk" "$safe_dir/small.db" "$bin")
        expect_text "verify: $safe_dir/bk/full.db: reading the schema version: disk I/O error (the disk is full); free space on the file system holding the database"
        [[ "$out" != *"the database changed"* ]] && pass || fail "verify on a full disk: $out"
        # A backup into a full disk: the copy's disk, not the database's,
        # is the one to free (the first wording sent the operator to the
        # database's), nothing left beside FILE.
        expect_text "copying the database: database or disk is full (the disk is full); free space on the file system it was writing to"
        [[ "$out" == *"backup exit 1; left: " ]] && pass || fail "backup into a full disk: $out"
    fi
    # Regression: a damaged database file (or one that is no SQLite
    # database) was exit 1 from verify, report, reconcile, period and
    # backup but 2 from expire, member show, import-balances and serve,
    # each with SQLite's words alone. Every command now says it is damaged
    # and what to do, exit 1 (README: Exit codes), and changes nothing.
    printf 'event_id,occurred_at,type,member,amount_fen,points\n' >"$safe_dir/st.csv"
    cp "$safe_dir/small.db" "$safe_dir/cut.db"
    truncate -s 8192 "$safe_dir/cut.db"
    head -c 65536 /dev/urandom >"$safe_dir/junk.db"
    # Every command on a file SQLite says is no database (SQLITE_NOTADB),
    # three on one it finds damaged (SQLITE_CORRUPT): few, each run costs.
    every=("verify" "expire" "member show card:S001:77001" "period show"
        "report settlement --from 0 --to 1700000000"
        "reconcile --statement $safe_dir/st.csv --channel store"
        "import-balances --shop S001 --file $safe_dir/two.csv"
        "backup --out $safe_dir/bk/bad-copy.db" "serve --listen 127.0.0.1:0")
    for bad in junk cut; do
        [ "$bad" = junk ] || every=("verify" "expire" "serve --listen 127.0.0.1:0")
        for args in "${every[@]}"; do
            before=$(cksum <"$safe_dir/$bad.db")
            # shellcheck disable=SC2086 # the words of $args are the arguments
            expect_exit 1 timeout 20 "$bin" $args --db "sqlite:$safe_dir/$bad.db" \
                --config config/pointsgw.example.json
            expect_text "$safe_dir/$bad.db is damaged or not a SQLite database"
            [ "$(cksum <"$safe_dir/$bad.db")" = "$before" ] && pass ||
                fail "$args on a damaged database changed it"
            rm -f "$safe_dir/$bad.db-wal" "$safe_dir/$bad.db-shm"
        done
    done
    # A start refused for its keys leaves a database of an older schema
    # as it was: not migrated (an earlier form of the exit code for a
    # failing start opened the database again to ask, which migrated it).
    # Schema 37 made from 38 by undoing its one change.
    python3 -c "import shutil, sqlite3, sys
shutil.copy(sys.argv[1], sys.argv[2])
db = sqlite3.connect(sys.argv[2])
db.execute('ALTER TABLE lots DROP COLUMN back_at'); db.execute('PRAGMA user_version = 37')
db.commit()" "$safe_dir/small.db" "$safe_dir/older.db"
    sed 's/"development_mode": true/"development_mode": false/' config/pointsgw.example.json \
        >"$safe_dir/prod.json"
    before=$(cksum <"$safe_dir/older.db")
    expect_exit 2 env PGW_PHONE_HMAC_KEY="$(printf '1%.0s' {1..64})" \
        PGW_PHONE_AES_KEY="$(printf '2%.0s' {1..64})" "$bin" serve --config "$safe_dir/prod.json" \
        --listen 127.0.0.1:0 --db "sqlite:$safe_dir/older.db"
    expect_text "key demo-admin is README's published demo key"
    [ "$(cksum <"$safe_dir/older.db")" = "$before" ] && pass ||
        fail "a start refused for its keys changed the database"
    # A newer schema is exit 2 from serve as from every command (README:
    # Exit codes), and the database stays as it was.
    python3 -c "import shutil, sqlite3, sys
shutil.copy(sys.argv[1], sys.argv[2])
db = sqlite3.connect(sys.argv[2]); db.execute('PRAGMA user_version = 99'); db.commit()" \
        "$safe_dir/small.db" "$safe_dir/newer.db"
    before=$(cksum <"$safe_dir/newer.db")
    expect_exit 2 timeout 20 "$bin" serve --config config/pointsgw.example.json \
        --listen 127.0.0.1:0 --db "sqlite:$safe_dir/newer.db"
    expect_text "$safe_dir/newer.db: the database is at schema version 99, newer than this pointsgw"
    [ "$(cksum <"$safe_dir/newer.db")" = "$before" ] && pass ||
        fail "a start refused for a newer schema changed the database"
    # A log edited by hand: verify names the transfer, exit 1, and writes
    # nothing. Regression: the last transfer deleted (which breaks no link
    # of the chain) was "table lots row 2 refers to a missing row of
    # transfers", naming no transfer.
    python3 -c "import shutil, sqlite3, sys
for n, edit in enumerate(sys.argv[2:]):
    shutil.copy(sys.argv[1], f'{sys.argv[1]}.{n}')
    db = sqlite3.connect(f'{sys.argv[1]}.{n}'); db.execute(edit); db.commit(); db.close()" \
        "$safe_dir/small.db" "UPDATE transfers SET points = points + 1000 WHERE id = 1" \
        "DELETE FROM transfers WHERE id = 1" "DELETE FROM transfers WHERE id = 2"
    for n in 0 1 2; do
        before=$(cksum <"$safe_dir/small.db.$n")
        expect_exit 1 "$bin" verify --db "sqlite:$safe_dir/small.db.$n"
        case $n in
        0) expect_text "BROKEN at transfer 1: transfer 1: hash mismatch" ;;
        1) expect_text "BROKEN at transfer 2: transfer 2: expected id 1 (gap or reorder)" ;;
        2) expect_text "BROKEN: table lots row 2 refers to a missing row of transfers (transfers.id = 2, deleted?)" ;;
        esac
        [ "$(cksum <"$safe_dir/small.db.$n")" = "$before" ] && pass || fail "verify changed an edited log"
    done
else
    # Regression: PostgreSQL not answering was exit 1 from report and
    # period but 2 from verify, expire, member show, import-balances and
    # serve; a database or login the server refuses was 2 from some, 1
    # from others. Now an outage is 1 everywhere, and a refusal (what the
    # URL says is wrong) 2 everywhere, saying to check the URL.
    closed_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    for args in "verify" "expire" "member show card:S001:77001" "period show" \
        "report settlement --from 0 --to 1700000000" \
        "import-balances --shop S001 --file $safe_dir/two.csv" "serve --listen 127.0.0.1:0"; do
        # shellcheck disable=SC2086 # the words of $args are the arguments
        expect_exit 1 timeout 20 "$bin" $args --config config/pointsgw.example.json \
            --db "postgresql://pgw@127.0.0.1:$closed_port/pgw_none?connect_timeout=2"
        expect_text "cannot connect: "
        # shellcheck disable=SC2086
        expect_exit 2 timeout 20 "$bin" $args --config config/pointsgw.example.json \
            --db "${pg_admin%/*}/pgwc_none_${$}"
        expect_text "(the server answers, but not to this login: check the user, the database name and the password"
    done
fi
rm -rf "$safe_dir"
# --- end of data safety (s60B) ---

# --- s61D: what a start refused for want of space leaves -------------------
# SQLite makes an empty -wal and its -shm index at the first open, before
# the index fails to grow; they are left (README: Exit codes says why
# removing them is not safe). They must hold nothing: a -wal of 0 bytes,
# the database as it was, and the next command that writes, with room
# again, removes them. Under 0.5 s.
if [ -z "${PGW_TEST_PG_DIR:-}" ]; then
    room_dir=$(mktemp -d -p "$scratch")
    printf 'card,phone,points\n77001,,100\n' >"$room_dir/one.csv"
    expect_exit 0 "$bin" import-balances --shop S001 --file "$room_dir/one.csv" \
        --db "sqlite:$room_dir/r.db" --config config/pointsgw.example.json
    before=$(cksum <"$room_dir/r.db")
    out=$(ulimit -f 16 && "$bin" serve --listen 127.0.0.1:0 --db "sqlite:$room_dir/r.db" \
        --config config/pointsgw.example.json 2>&1)
    got=$?
    [ "$got" -eq 1 ] && pass || fail "serve at a file-size limit exited $got, wanted 1: $out"
    expect_text "(a file would grow past this process's file-size limit)"
    [ "$(cksum <"$room_dir/r.db")" = "$before" ] && pass ||
        fail "a start refused for want of space changed the database"
    [ ! -s "$room_dir/r.db-wal" ] && pass || fail "a refused start left a -wal with content"
    expect_exit 0 "$bin" expire --db "sqlite:$room_dir/r.db" --config config/pointsgw.example.json
    [ ! -e "$room_dir/r.db-wal" ] && [ ! -e "$room_dir/r.db-shm" ] && pass ||
        fail "a command with room again left: $(cd "$room_dir" && ls -A)"
    rm -rf "$room_dir"
fi
# --- end of s61D's block ---

echo "$passes passed, $failures failed"
[ -z "${PGW_TEST_TIMES:-}" ] || times_print
[ "$failures" -eq 0 ]
