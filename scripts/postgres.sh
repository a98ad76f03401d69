#!/usr/bin/env bash
# Start or stop a private, throwaway PostgreSQL cluster on 127.0.0.1 for the multi-worker tests.
#   eval "$(bash scripts/postgres.sh start)"   # installs Debian's postgresql if needed, prints the URL export
#   bash scripts/postgres.sh stop
set -euo pipefail
port=${PLAB_PG_PORT:-54329}
dir=${PLAB_PG_DIR:-/tmp/principlelab-pg}
run_as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

case "${1:-}" in
start)
    if [ -z "$(bin_dir)" ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2
    fi
    bin=$(bin_dir)
    if [ "$(id -u)" = 0 ]; then mkdir -p "$dir" && chown postgres "$dir"; fi
    if [ ! -f "$dir/PG_VERSION" ]; then
        run_as_postgres "$bin/initdb" -D "$dir" -A trust -U postgres >/dev/null
    fi
    if ! run_as_postgres "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        run_as_postgres "$bin/pg_ctl" -D "$dir" -w -l "$dir/server.log" \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >&2
    fi
    "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='plab_test'" \
        | grep -q 1 || "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE plab_test" >&2
    echo "export PRINCIPLELAB_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$port/plab_test"
    ;;
stop)
    bin=$(bin_dir)
    if [ -n "$bin" ] && [ -f "$dir/PG_VERSION" ]; then
        run_as_postgres "$bin/pg_ctl" -D "$dir" -m fast stop >&2 || true
        rm -rf "$dir"
    fi
    ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
