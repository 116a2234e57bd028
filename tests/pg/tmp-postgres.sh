#!/bin/sh
# A throwaway PostgreSQL server for the end-to-end tests and the queue benchmark.
#
#   tmp-postgres.sh start DIR PORT [OWNER_PID]   initdb DIR/data, start the server on the unix
#                                               socket DIR/.s.PGSQL.PORT and 127.0.0.1:PORT;
#                                               prints postgres://postgres@127.0.0.1:PORT.
#                                               With OWNER_PID, a watchdog stops the server
#                                               and removes DIR once that process is gone.
#   tmp-postgres.sh createdb DIR PORT NAME      creates database NAME.
#   tmp-postgres.sh psql DIR PORT NAME SQL      runs SQL in NAME; prints rows unaligned, `|`
#                                               between columns.
#   tmp-postgres.sh halt DIR                    stops the server at once (immediate mode, as a
#                                               crash would), keeping DIR: `start DIR PORT`
#                                               starts it again on its data.
#   tmp-postgres.sh stop DIR                    stops the server, removes DIR.
#
# Uses $PG_BIN when set, else the newest /usr/lib/postgresql/*/bin (Debian's postgresql
# package), else the directory of initdb on PATH. Exits 3 when PostgreSQL is not installed
# (PG_BIN=/nowhere simulates that). As root, the server
# runs as the `postgres` OS user (initdb refuses root). Authentication: trust, superuser
# `postgres`. Durability settings are PostgreSQL's defaults (fsync on, synchronous_commit on).
set -eu

cmd=${1:?usage: tmp-postgres.sh start DIR PORT [OWNER_PID] | createdb DIR PORT NAME | stop DIR}
dir=${2:?DIR missing}

missing() {
    echo "tmp-postgres.sh: PostgreSQL is not installed ($1)" >&2
    exit 3
}
if [ -n "${PG_BIN:-}" ]; then
    bin=$PG_BIN
    [ -x "$bin/postgres" ] || missing "no $bin/postgres"
else
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
        command -v initdb >/dev/null 2>&1 || missing "no /usr/lib/postgresql/*/bin, no initdb on PATH"
        bin=$(dirname "$(readlink -f "$(command -v initdb)")")
    fi
fi
for tool in initdb pg_ctl postgres; do
    [ -x "$bin/$tool" ] || missing "no $bin/$tool"
done
psql=$bin/psql
[ -x "$psql" ] || psql=$(command -v psql) || missing "no psql"

runuser=$(command -v runuser || true)
for r in /usr/sbin/runuser /sbin/runuser; do
    [ -n "$runuser" ] || [ ! -x "$r" ] || runuser=$r
done
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        [ -n "$runuser" ] || { echo "tmp-postgres.sh: running as root needs runuser (util-linux)" >&2; exit 1; }
        "$runuser" -u postgres -- "$@"
    else
        "$@"
    fi
}

case $cmd in
start)
    port=${3:?PORT missing}
    owner=${4:-}
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$dir"
    fi
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
            >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            exit 1
        }
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300" \
        >/dev/null || {
        cat "$dir/server.log" >&2
        exit 1
    }
    if [ -n "$owner" ]; then
        # Detached from the caller's pipes, so it does not hold them open.
        nohup sh -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; \"$0\" stop \"$dir\"" \
            </dev/null >/dev/null 2>&1 &
    fi
    echo "postgres://postgres@127.0.0.1:$port"
    ;;
createdb)
    port=${3:?PORT missing}
    name=${4:?NAME missing}
    "$psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres \
        -c "CREATE DATABASE \"$name\""
    ;;
psql)
    port=${3:?PORT missing}
    name=${4:?NAME missing}
    sql=${5:?SQL missing}
    "$psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d "$name" -c "$sql"
    ;;
halt)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "tmp-postgres.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac
