#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks, in a directory of
# its own, listening on 127.0.0.1 only (and a socket in that directory).
#
#   pg-cluster.sh start DIR [fast]   initdb + start; DIR/url is the admin URL
#   pg-cluster.sh stop DIR           stop it and delete it
#   pg-cluster.sh restart DIR        stop (immediate: like a crash) and start again
#
# PostgreSQL refuses to run as root, so as root the cluster runs as `nobody`
# (CI runs as root). Its files are then in a directory of /tmp that nobody
# owns (DIR/cluster names it): DIR may be below a directory only root can
# enter, such as /root. "fast" turns fsync off: a test cluster does not need
# to survive a power cut, only a crash of its server, which the page cache
# survives. Benchmarks start it without "fast".
set -euo pipefail

cmd=${1:?usage: pg-cluster.sh start|stop|restart DIR [fast]}
dir=${2:?usage: pg-cluster.sh start|stop|restart DIR [fast]}
# the newest installed server (a newer version may be there as a client only)
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | while read -r b; do
    [ -x "$b/initdb" ] && echo "$b"; done | tail -1)
[ -n "$bin" ] || { echo "pg-cluster: no PostgreSQL server (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local cluster
    cluster=$(cat "$dir/cluster")
    as_owner "$bin/pg_ctl" -D "$cluster/data" -l "$cluster/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$(cat "$dir/port") -c unix_socket_directories=$cluster" \
        start >/dev/null
}

stop() {
    [ -f "$dir/cluster" ] || return 0
    local cluster
    cluster=$(cat "$dir/cluster")
    # a server already gone (crashed, killed) is stopped too
    [ -d "$cluster/data" ] && as_owner "$bin/pg_ctl" -D "$cluster/data" -m immediate -w stop >/dev/null 2>&1 || true
    return 0
}

case "$cmd" in
start)
    stop
    [ -f "$dir/cluster" ] && rm -rf "$(cat "$dir/cluster")"
    rm -rf "$dir"
    mkdir -p "$dir"
    cluster=$(mktemp -d /tmp/pgw-pg.XXXXXX)
    [ "$(id -u)" -eq 0 ] && chown nobody "$cluster"
    echo "$cluster" >"$dir/cluster"
    as_owner "$bin/initdb" -D "$cluster/data" -U pgw --auth=trust -E UTF8 --no-locale >"$dir/initdb.log"
    {
        echo "max_connections = 200"
        echo "shared_buffers = 128MB"
        if [ "${3:-}" = fast ]; then echo "fsync = off"; echo "full_page_writes = off"; fi
    } | as_owner tee -a "$cluster/data/postgresql.conf" >/dev/null
    # The port is free when chosen, not when the server binds it: another
    # process may take it in between, so a failed start tries another.
    for try in 1 2 3; do
        free_port >"$dir/port"
        if start; then break; fi
        [ "$try" -lt 3 ] || { echo "pg-cluster: the server did not start:" >&2; tail -5 "$cluster/log" >&2; exit 1; }
    done
    echo "postgresql://pgw@127.0.0.1:$(cat "$dir/port")/postgres" >"$dir/url"
    cat "$dir/url"
    ;;
stop)
    stop
    [ -f "$dir/cluster" ] && rm -rf "$(cat "$dir/cluster")"
    rm -rf "$dir"
    ;;
restart)
    stop
    start
    ;;
*)
    echo "pg-cluster: unknown command $cmd" >&2
    exit 2
    ;;
esac
