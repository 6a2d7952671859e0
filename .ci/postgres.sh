# Sourced by .ci/run: a throwaway PostgreSQL cluster for the Postgres store and fleet tests.
# `start_postgres` installs Debian's `postgresql` package when its binaries are missing, creates a
# cluster in a temporary directory (owned by the `postgres` user when run as root: initdb refuses
# root), starts it listening on a Unix socket in that directory only (no TCP port to collide
# with), and exports AMARULA_TEST_POSTGRES for the tests. `stop_postgres` stops it and removes the
# directory; .ci/run calls it on exit.

start_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "installing postgresql (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pg_dir=$(mktemp -d /tmp/amarula-pg.XXXXXX)
  pg_as=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$pg_dir"
    pg_as=(runuser -u postgres --)
  fi
  "${pg_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 \
    --no-sync >"$pg_dir/initdb.log" 2>&1 || { cat "$pg_dir/initdb.log" >&2; return 1; }
  # fsync off: a throwaway cluster; max_connections: the fleet tests run many pools at once.
  "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
    -o "-c listen_addresses='' -k $pg_dir -p 5432 -c fsync=off -c max_connections=200" \
    start >/dev/null || { cat "$pg_dir/server.log" >&2; return 1; }
  export AMARULA_TEST_POSTGRES="host=$pg_dir port=5432 user=postgres dbname=postgres"
  echo "postgres running: $AMARULA_TEST_POSTGRES"
}

stop_postgres() {
  if [ -n "${pg_dir:-}" ] && [ -d "$pg_dir/data" ]; then
    "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
  fi
}
